/* Unit tests of the store (index/store.h) on temporary directories, with the real connector
 * randomly initialised: collections, points, search with filters, persistence and recovery,
 * tombstones, IVF training, map growth, a full disk, connector changes and concurrency. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "store_testutil.h"

typedef struct fixture {
    char dir[64];
    amc_connector *conn;
    ami_store *st;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    test_tmpdir(f->dir);
    f->conn = test_connector(1);
    amc_error err = {0};
    if (ami_store_open(&f->st, f->dir, f->conn, NULL, &err) != AMC_OK) {
        fprintf(stderr, "open: %s\n", err.msg);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    ami_store_close(f->st);
    amc_connector_free(f->conn);
    test_rmdir(f->dir);
    free(f);
    return 0;
}

static void reopen(fixture *f, const ami_store_options *opts)
{
    ami_store_close(f->st);
    amc_error err = {0};
    f->st = NULL;
    assert_int_equal(ami_store_open(&f->st, f->dir, f->conn, opts, &err), AMC_OK);
}

static void create(fixture *f, const char *name, const char *text_index, const char *image_index)
{
    ami_collection_spec spec = test_spec(name, text_index, image_index);
    amc_error err = {0};
    amc_status s = ami_collection_create(f->st, &spec, &err);
    if (s != AMC_OK)
        fprintf(stderr, "create: %s\n", err.msg);
    assert_int_equal(s, AMC_OK);
}

/* Upserts points first .. first + n - 1 of modality mod (ids "p<i>"), payload {"n": i, "tag":
 * "t<i % 3>"}. */
static void upsert_range(fixture *f, const char *coll, const char *mod, int first, int n)
{
    int dim = strcmp(mod, "text") == 0 ? TEXT_DIM : IMAGE_DIM;
    ami_point *pts = calloc((size_t)n, sizeof *pts);
    float *x = malloc(sizeof(float) * (size_t)dim * (size_t)n);
    char (*ids)[16] = malloc(16 * (size_t)n);
    char (*payloads)[64] = malloc(64 * (size_t)n);
    for (int i = 0; i < n; i++) {
        int p = first + i;
        snprintf(ids[i], 16, "p%d", p);
        snprintf(payloads[i], 64, "{\"n\": %d, \"tag\": \"t%d\"}", p, p % 3);
        test_fill(x + (size_t)i * (size_t)dim, (size_t)dim, (uint64_t)p, (uint64_t)dim);
        pts[i] = (ami_point){ids[i], mod, x + (size_t)i * (size_t)dim, 1, payloads[i]};
    }
    amc_error err = {0};
    amc_status s = ami_points_upsert(f->st, coll, pts, n, NULL, &err);
    if (s != AMC_OK)
        fprintf(stderr, "upsert: %s\n", err.msg);
    assert_int_equal(s, AMC_OK);
    free(pts);
    free(x);
    free(ids);
    free(payloads);
}

static void query_vector(float *q, const char *mod, uint64_t a)
{
    test_fill(q, strcmp(mod, "text") == 0 ? TEXT_DIM : IMAGE_DIM, a, 999);
}

/* Expected scores of every stored point 0..n-1 of modality tgt for a query of modality src,
 * computed with the connector directly (contrastive space). */
static void brute_scores(const amc_connector *conn, const char *src, const float *q,
                         const char *tgt, int n, float *scores)
{
    int s = amc_config_modality(&conn->cfg, src), t = amc_config_modality(&conn->cfg, tgt);
    int D = conn->cfg.latent, dim = conn->cfg.modalities[t].dim;
    float qv[64], iv[64], x[64];
    amc_workspace *ws = amc_workspace_new();
    amc_space space = s == t ? AMC_SPACE_TARGET : AMC_SPACE_CONTRASTIVE;
    assert_int_equal(amc_connector_project(conn, ws, space, s, t, q, 1, 1, qv, NULL), AMC_OK);
    for (int p = 0; p < n; p++) {
        test_fill(x, (size_t)dim, (uint64_t)p, (uint64_t)dim);
        assert_int_equal(amc_connector_project(conn, ws, AMC_SPACE_TARGET, t, t, x, 1, 1, iv,
                                               NULL), AMC_OK);
        double sum = 0.0;
        for (int j = 0; j < D; j++)
            sum += (double)qv[j] * (double)iv[j];
        scores[p] = (float)sum;
    }
    amc_workspace_free(ws);
}

static ami_search_params params_k(const char *target, int k)
{
    ami_search_params p;
    memset(&p, 0, sizeof p);
    p.target = target;
    p.k = k;
    return p;
}

static amc_status search_one(fixture *f, const char *coll, const char *mod, const float *q,
                             const ami_search_params *p, ami_result *r)
{
    ami_query query = {mod, q, 1};
    amc_error err = {0};
    amc_status s = ami_search(f->st, coll, &query, 1, p, r, &err);
    if (s != AMC_OK)
        fprintf(stderr, "search: %s\n", err.msg);
    return s;
}

/* Checks that r contains the k best points by brute force among those with allowed[p] set. */
static void assert_exact_topk(const ami_result *r, const float *scores, const int *allowed,
                              int n, int k)
{
    int want = 0;
    for (int p = 0; p < n; p++)
        want += allowed == NULL || allowed[p];
    assert_int_equal(r->n, want < k ? want : k);
    for (int i = 0; i < r->n; i++) {
        int p = atoi(r->hits[i].id + 1);
        assert_true(allowed == NULL || allowed[p]);
        assert_true(fabsf(r->hits[i].score - scores[p]) < 1e-4f);
        int better = 0;
        for (int o = 0; o < n; o++)
            if ((allowed == NULL || allowed[o]) && scores[o] > scores[p] + 1e-5f)
                better++;
        assert_true(better <= i);
    }
}

/* ---------------------------------------------------------------------------------------
 * Open and collections
 * --------------------------------------------------------------------------------------- */

static void test_open_errors(void **state)
{
    (void)state;
    amc_connector *conn = test_connector(1);
    ami_store *st = (ami_store *)1;
    amc_error err = {0};
    assert_int_equal(ami_store_open(&st, "/nonexistent/altmoe", conn, NULL, &err), AMC_EIO);
    assert_null(st);
    assert_non_null(strstr(err.msg, "/nonexistent/altmoe"));
    assert_int_equal(ami_store_open(&st, NULL, conn, NULL, &err), AMC_EINVAL);

    /* A second open of the same directory is rejected while the first one lasts. */
    char dir[64];
    test_tmpdir(dir);
    ami_store *first;
    assert_int_equal(ami_store_open(&first, dir, conn, NULL, &err), AMC_OK);
    assert_int_equal(ami_store_open(&st, dir, conn, NULL, &err), AMC_EBUSY);
    assert_non_null(strstr(err.msg, "in use"));
    ami_store_close(first);
    assert_int_equal(ami_store_open(&st, dir, conn, NULL, &err), AMC_OK);
    ami_store_close(st);
    test_rmdir(dir);
    amc_connector_free(conn);
    ami_store_close(NULL);
}

static void test_collection_lifecycle(void **state)
{
    fixture *f = *state;
    create(f, "docs", "Flat", "HNSW16");
    create(f, "alpha", "Flat", NULL);

    ami_collection_info *infos;
    int n;
    assert_int_equal(ami_collection_list(f->st, &infos, &n, NULL), AMC_OK);
    assert_int_equal(n, 2);
    assert_string_equal(infos[0].spec.name, "alpha");
    assert_string_equal(infos[1].spec.name, "docs");
    assert_int_equal(infos[1].spec.n_modalities, 2);
    assert_string_equal(infos[1].spec.index_spec[1], "HNSW16");
    assert_int_equal(infos[1].dim[0], 8);
    char fp[17];
    amc_connector_fingerprint(f->conn, fp);
    assert_string_equal(infos[1].fingerprint, fp);
    free(infos);

    /* Survives a reopen, then a drop removes it for good. */
    reopen(f, NULL);
    ami_collection_info info;
    assert_int_equal(ami_collection_describe(f->st, "docs", &info, NULL), AMC_OK);
    assert_string_equal(info.spec.modalities[1], "image");
    assert_int_equal(ami_collection_drop(f->st, "docs", NULL), AMC_OK);
    amc_error err = {0};
    assert_int_equal(ami_collection_drop(f->st, "docs", &err), AMC_ENOTFOUND);
    assert_int_equal(ami_collection_describe(f->st, "docs", &info, NULL), AMC_ENOTFOUND);
    reopen(f, NULL);
    assert_int_equal(ami_collection_list(f->st, &infos, &n, NULL), AMC_OK);
    assert_int_equal(n, 1);
    free(infos);
}

static void test_collection_create_errors(void **state)
{
    fixture *f = *state;
    amc_error err = {0};
    create(f, "docs", "Flat", NULL);
    ami_collection_spec spec = test_spec("docs", "Flat", NULL);
    assert_int_equal(ami_collection_create(f->st, &spec, &err), AMC_EEXIST);

    spec = test_spec("bad name", "Flat", NULL);
    assert_int_equal(ami_collection_create(f->st, &spec, &err), AMC_EINVAL);
    assert_non_null(strstr(err.msg, "bad name"));
    spec = test_spec("", "Flat", NULL);
    assert_int_equal(ami_collection_create(f->st, &spec, &err), AMC_EINVAL);

    spec = test_spec("x", "NoSuchIndex", NULL);
    assert_int_equal(ami_collection_create(f->st, &spec, &err), AMC_EINVAL);
    assert_non_null(strstr(err.msg, "NoSuchIndex"));

    spec = test_spec("x", "Flat", "Flat");
    snprintf(spec.modalities[1], AMC_NAME_MAX, "audio");
    assert_int_equal(ami_collection_create(f->st, &spec, &err), AMC_EINVAL);
    assert_non_null(strstr(err.msg, "audio"));
    snprintf(spec.modalities[1], AMC_NAME_MAX, "text");
    assert_int_equal(ami_collection_create(f->st, &spec, &err), AMC_EINVAL);
    spec.n_modalities = 0;
    assert_int_equal(ami_collection_create(f->st, &spec, &err), AMC_EINVAL);

    ami_space space;
    assert_int_equal(ami_space_parse("predictive", &space, NULL), AMC_OK);
    assert_int_equal(space, AMI_SPACE_PREDICTIVE);
    assert_int_equal(ami_space_parse("other", &space, &err), AMC_EINVAL);
    assert_string_equal(ami_space_name(AMI_SPACE_CONTRASTIVE), "contrastive");
}

/* ---------------------------------------------------------------------------------------
 * Points
 * --------------------------------------------------------------------------------------- */

static void test_upsert_get(void **state)
{
    fixture *f = *state;
    create(f, "docs", "Flat", "Flat");
    upsert_range(f, "docs", "text", 0, 3);

    /* The raw embedding comes back bit for bit, with its payload. */
    ami_point_data d;
    float x[TEXT_DIM * 2];
    test_fill(x, TEXT_DIM, 1, TEXT_DIM);
    assert_int_equal(ami_point_get(f->st, "docs", "p1", &d, NULL), AMC_OK);
    assert_string_equal(d.id, "p1");
    assert_string_equal(d.payload, "{\"n\": 1, \"tag\": \"t1\"}");
    assert_int_equal(d.n_embeddings, 1);
    assert_string_equal(d.embeddings[0].modality, "text");
    assert_int_equal(d.embeddings[0].dim, TEXT_DIM);
    assert_memory_equal(d.embeddings[0].data, x, sizeof(float) * TEXT_DIM);
    ami_point_data_free(&d);

    /* A second modality without payload keeps the payload; a token matrix is stored as is. */
    float img[IMAGE_DIM * 3];
    test_fill(img, IMAGE_DIM * 3, 7, 7);
    ami_point p = {"p1", "image", img, 3, NULL};
    uint64_t seq = 0;
    assert_int_equal(ami_points_upsert(f->st, "docs", &p, 1, &seq, NULL), AMC_OK);
    assert_true(seq > 3);
    assert_int_equal(ami_store_seq(f->st), seq);
    assert_int_equal(ami_point_get(f->st, "docs", "p1", &d, NULL), AMC_OK);
    assert_string_equal(d.payload, "{\"n\": 1, \"tag\": \"t1\"}");
    assert_int_equal(d.n_embeddings, 2);
    assert_int_equal(d.embeddings[1].seq, 3);
    assert_memory_equal(d.embeddings[1].data, img, sizeof img);
    ami_point_data_free(&d);

    /* Replacing the text vector and the payload. */
    test_fill(x, TEXT_DIM, 42, 42);
    p = (ami_point){"p1", "text", x, 1, "{\"new\": true}"};
    assert_int_equal(ami_points_upsert(f->st, "docs", &p, 1, NULL, NULL), AMC_OK);
    assert_int_equal(ami_point_get(f->st, "docs", "p1", &d, NULL), AMC_OK);
    assert_string_equal(d.payload, "{\"new\": true}");
    assert_memory_equal(d.embeddings[0].data, x, sizeof(float) * TEXT_DIM);
    ami_point_data_free(&d);

    ami_collection_info info;
    assert_int_equal(ami_collection_describe(f->st, "docs", &info, NULL), AMC_OK);
    assert_int_equal(info.points, 3);
    assert_int_equal(info.vectors[0], 3);
    assert_int_equal(info.vectors[1], 1);
    assert_int_equal(info.indexed[0], 3);
    assert_int_equal(info.indexed[1], 1);

    amc_error err = {0};
    assert_int_equal(ami_point_get(f->st, "docs", "nope", &d, &err), AMC_ENOTFOUND);
    assert_int_equal(ami_point_get(f->st, "nope", "p1", &d, &err), AMC_ENOTFOUND);
}

static void test_upsert_errors(void **state)
{
    fixture *f = *state;
    create(f, "docs", "Flat", NULL);
    float x[TEXT_DIM];
    test_fill(x, TEXT_DIM, 1, 1);
    amc_error err = {0};
    char long_id[AMI_ID_MAX + 2];
    memset(long_id, 'a', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = '\0';

    struct {
        ami_point p;
        const char *needle;
    } cases[] = {
        {{"a", "image", x, 1, NULL}, "modality"},
        {{"a", "text", x, 0, NULL}, "seq"},
        {{"a", "text", NULL, 1, NULL}, "embedding"},
        {{"", "text", x, 1, NULL}, "id"},
        {{long_id, "text", x, 1, NULL}, "id"},
        {{"a", "text", x, 1, "[1, 2]"}, "payload"},
        {{"a", "text", x, 1, "{bad json"}, "payload"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        /* The bad item is second: the good first item must not be stored either. */
        ami_point batch[2] = {{"good", "text", x, 1, NULL}, cases[i].p};
        assert_int_equal(ami_points_upsert(f->st, "docs", batch, 2, NULL, &err), AMC_EINVAL);
        assert_non_null(strstr(err.msg, cases[i].needle));
        assert_non_null(strstr(err.msg, "points[1]"));
    }
    x[3] = NAN;
    ami_point nan_point = {"a", "text", x, 1, NULL};
    assert_int_equal(ami_points_upsert(f->st, "docs", &nan_point, 1, NULL, &err), AMC_EINVAL);
    assert_non_null(strstr(err.msg, "NaN"));
    assert_int_equal(ami_points_upsert(f->st, "nope", &nan_point, 1, NULL, &err), AMC_ENOTFOUND);
    assert_int_equal(ami_points_upsert(f->st, "docs", &nan_point, 0, NULL, &err), AMC_EINVAL);

    ami_collection_info info;
    assert_int_equal(ami_collection_describe(f->st, "docs", &info, NULL), AMC_OK);
    assert_int_equal(info.points, 0);
    assert_int_equal(ami_store_seq(f->st), 0);
}

static void test_delete(void **state)
{
    fixture *f = *state;
    create(f, "docs", "Flat", "Flat");
    upsert_range(f, "docs", "text", 0, 10);
    upsert_range(f, "docs", "image", 0, 5);
    const char *ids[] = {"p2", "p3", "missing", "p2"};
    int n_deleted = -1;
    assert_int_equal(ami_points_delete(f->st, "docs", ids, 4, &n_deleted, NULL), AMC_OK);
    assert_int_equal(n_deleted, 2);
    ami_point_data d;
    assert_int_equal(ami_point_get(f->st, "docs", "p2", &d, NULL), AMC_ENOTFOUND);
    assert_int_equal(ami_point_get(f->st, "docs", "p4", &d, NULL), AMC_OK);
    ami_point_data_free(&d);

    ami_collection_info info;
    assert_int_equal(ami_collection_describe(f->st, "docs", &info, NULL), AMC_OK);
    assert_int_equal(info.points, 8);
    assert_int_equal(info.vectors[0], 8);
    assert_int_equal(info.vectors[1], 3);
    assert_int_equal(info.indexed[0], 8);
    assert_int_equal(info.indexed[1], 3);

    /* Deleted points never come back from a search. */
    float q[TEXT_DIM];
    query_vector(q, "text", 1);
    ami_search_params p = params_k("text", 10);
    ami_result r;
    assert_int_equal(search_one(f, "docs", "text", q, &p, &r), AMC_OK);
    assert_int_equal(r.n, 8);
    for (int i = 0; i < r.n; i++) {
        assert_string_not_equal(r.hits[i].id, "p2");
        assert_string_not_equal(r.hits[i].id, "p3");
    }
    ami_results_free(&r, 1);

    amc_error err = {0};
    assert_int_equal(ami_points_delete(f->st, "nope", ids, 1, NULL, &err), AMC_ENOTFOUND);
    assert_int_equal(ami_points_delete(f->st, "docs", ids, 0, NULL, &err), AMC_EINVAL);
}

/* ---------------------------------------------------------------------------------------
 * Search
 * --------------------------------------------------------------------------------------- */

static void test_search_exact_flat(void **state)
{
    fixture *f = *state;
    create(f, "docs", "Flat", "Flat");
    upsert_range(f, "docs", "text", 0, 60);
    upsert_range(f, "docs", "image", 0, 60);

    float q[TEXT_DIM], scores[60];
    for (int trial = 0; trial < 3; trial++) {
        query_vector(q, "text", (uint64_t)trial);
        const char *targets[] = {"image", "text"};
        for (int t = 0; t < 2; t++) {
            brute_scores(f->conn, "text", q, targets[t], 60, scores);
            ami_search_params p = params_k(targets[t], 5);
            p.with_payload = 1;
            ami_result r;
            assert_int_equal(search_one(f, "docs", "text", q, &p, &r), AMC_OK);
            assert_exact_topk(&r, scores, NULL, 60, 5);
            assert_non_null(r.hits[0].payload);
            assert_non_null(strstr(r.hits[0].payload, "\"n\""));
            ami_results_free(&r, 1);
        }
    }

    /* A stored item finds itself first with score 1 in its own modality. */
    float x[TEXT_DIM];
    test_fill(x, TEXT_DIM, 17, TEXT_DIM);
    ami_search_params p = params_k("text", 1);
    ami_result r;
    assert_int_equal(search_one(f, "docs", "text", x, &p, &r), AMC_OK);
    assert_string_equal(r.hits[0].id, "p17");
    assert_true(fabsf(r.hits[0].score - 1.0f) < 1e-4f);
    assert_null(r.hits[0].payload);
    ami_results_free(&r, 1);
}

static void test_search_batch(void **state)
{
    fixture *f = *state;
    create(f, "docs", "Flat", "Flat");
    upsert_range(f, "docs", "image", 0, 40);
    float q[5 * TEXT_DIM];
    ami_query queries[5];
    for (int i = 0; i < 5; i++) {
        query_vector(q + i * TEXT_DIM, "text", (uint64_t)(100 + i));
        queries[i] = (ami_query){"text", q + i * TEXT_DIM, 1};
    }
    ami_search_params p = params_k("image", 4);
    ami_result batch[5];
    assert_int_equal(ami_search(f->st, "docs", queries, 5, &p, batch, NULL), AMC_OK);
    for (int i = 0; i < 5; i++) {
        ami_result one;
        assert_int_equal(search_one(f, "docs", "text", q + i * TEXT_DIM, &p, &one), AMC_OK);
        assert_int_equal(one.n, batch[i].n);
        for (int j = 0; j < one.n; j++) {
            assert_string_equal(one.hits[j].id, batch[i].hits[j].id);
            assert_true(fabsf(one.hits[j].score - batch[i].hits[j].score) < 1e-5f);
        }
        ami_results_free(&one, 1);
    }
    ami_results_free(batch, 5);
}

static void test_search_filter(void **state)
{
    fixture *f = *state;
    create(f, "docs", "Flat", "HNSW16");
    upsert_range(f, "docs", "image", 0, 200);
    float q[TEXT_DIM], scores[200];
    query_vector(q, "text", 5);
    brute_scores(f->conn, "text", q, "image", 200, scores);

    struct {
        const char *filter;
        int (*allowed)(int);
    } cases[] = {
        {"{\"tag\": \"t1\"}", NULL},
        {"{\"n\": {\"in\": [3, 77, 150, 999]}}", NULL},
        {"{\"n\": {\"gte\": 10, \"lt\": 13}}", NULL},
        {"{\"n\": {\"gt\": 190}, \"tag\": {\"eq\": \"t0\"}}", NULL},
        {"{\"missing\": 1}", NULL},
    };
    int allowed[5][200];
    for (int p = 0; p < 200; p++) {
        allowed[0][p] = p % 3 == 1;
        allowed[1][p] = p == 3 || p == 77 || p == 150;
        allowed[2][p] = p >= 10 && p < 13;
        allowed[3][p] = p > 190 && p % 3 == 0;
        allowed[4][p] = 0;
    }
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cJSON *filter = cJSON_Parse(cases[i].filter);
        ami_search_params p = params_k("image", 5);
        p.filter = filter;
        p.ef_search = 400;
        ami_result r;
        assert_int_equal(search_one(f, "docs", "text", q, &p, &r), AMC_OK);
        assert_exact_topk(&r, scores, allowed[i], 200, 5);
        ami_results_free(&r, 1);
        cJSON_Delete(filter);
    }
}

static void test_search_errors(void **state)
{
    fixture *f = *state;
    create(f, "docs", "Flat", NULL);
    upsert_range(f, "docs", "text", 0, 5);
    float q[TEXT_DIM];
    query_vector(q, "text", 1);
    ami_query query = {"text", q, 1};
    ami_result r;
    amc_error err = {0};

    ami_search_params p = params_k("text", 0);
    assert_int_equal(ami_search(f->st, "docs", &query, 1, &p, &r, &err), AMC_EINVAL);
    p.k = AMI_K_MAX + 1;
    assert_int_equal(ami_search(f->st, "docs", &query, 1, &p, &r, &err), AMC_EINVAL);
    p = params_k("image", 3);
    assert_int_equal(ami_search(f->st, "docs", &query, 1, &p, &r, &err), AMC_EINVAL);
    assert_non_null(strstr(err.msg, "image"));
    p = params_k("text", 3);
    assert_int_equal(ami_search(f->st, "nope", &query, 1, &p, &r, &err), AMC_ENOTFOUND);
    ami_query bad = {"audio", q, 1};
    assert_int_equal(ami_search(f->st, "docs", &bad, 1, &p, &r, &err), AMC_EINVAL);
    q[0] = INFINITY;
    assert_int_equal(ami_search(f->st, "docs", &query, 1, &p, &r, &err), AMC_EINVAL);
    q[0] = 0.0f;

    const char *filters[] = {"[1]", "{\"n\": [1, 2]}", "{\"n\": {\"near\": 1}}",
                             "{\"n\": {\"gt\": \"x\"}}", "{\"n\": {\"in\": 3}}",
                             "{\"n\": {\"eq\": 1, \"gt\": 0}}", "{\"n\": {}}"};
    for (size_t i = 0; i < sizeof filters / sizeof filters[0]; i++) {
        cJSON *filter = cJSON_Parse(filters[i]);
        p.filter = filter;
        assert_int_equal(ami_search(f->st, "docs", &query, 1, &p, &r, &err), AMC_EINVAL);
        cJSON_Delete(filter);
    }
}

/* ---------------------------------------------------------------------------------------
 * Persistence and index kinds
 * --------------------------------------------------------------------------------------- */

/* Checks every index of "docs" against LMDB and a brute-force search of the live points. */
static void assert_consistent(fixture *f, int n, const int *live)
{
    assert_true(test_wait_ready(f->st));
    ami_collection_info info;
    assert_int_equal(ami_collection_describe(f->st, "docs", &info, NULL), AMC_OK);
    for (int m = 0; m < info.spec.n_modalities; m++)
        assert_int_equal(info.indexed[m], info.vectors[m]);
    assert_int_equal(ami_store_ready(f->st), 1);

    float q[TEXT_DIM];
    float *scores = malloc(sizeof(float) * (size_t)n);
    query_vector(q, "text", 3);
    brute_scores(f->conn, "text", q, "image", n, scores);
    ami_search_params p = params_k("image", 5);
    p.ef_search = 256;
    ami_result r;
    assert_int_equal(search_one(f, "docs", "text", q, &p, &r), AMC_OK);
    assert_exact_topk(&r, scores, live, n, 5);
    ami_results_free(&r, 1);
    free(scores);
}

static void test_snapshot_replay(void **state)
{
    fixture *f = *state;
    create(f, "docs", "Flat", "HNSW16");
    upsert_range(f, "docs", "image", 0, 100);
    upsert_range(f, "docs", "text", 0, 20);
    assert_int_equal(ami_store_snapshot(f->st, NULL), AMC_OK);

    /* Changes after the snapshot are replayed from the log at open. */
    upsert_range(f, "docs", "image", 100, 50);
    const char *gone[] = {"p5", "p120"};
    assert_int_equal(ami_points_delete(f->st, "docs", gone, 2, NULL, NULL), AMC_OK);
    int live[150];
    for (int i = 0; i < 150; i++)
        live[i] = i != 5 && i != 120;
    ami_store_options opts = {.read_only_snapshots = 1};
    reopen(f, &opts);
    assert_consistent(f, 150, live);

    /* A snapshot from this state, and a plain reopen, agree too. */
    reopen(f, NULL);
    reopen(f, NULL);
    assert_consistent(f, 150, live);
}

static void test_auto_snapshot(void **state)
{
    fixture *f = *state;
    ami_store_options opts = {.snapshot_every = 50, .read_only_snapshots = 1};
    reopen(f, &opts);
    create(f, "docs", "Flat", "Flat");
    upsert_range(f, "docs", "image", 0, 60);

    /* The builder thread writes the snapshots without any explicit call. */
    char path[256];
    snprintf(path, sizeof path, "%s/snapshots/c00000001-m1.snap", f->dir);
    int found = 0;
    for (int i = 0; i < 1000 && !found; i++) {
        found = access(path, F_OK) == 0;
        usleep(5000);
    }
    assert_true(found);
    upsert_range(f, "docs", "image", 60, 10);
    reopen(f, &opts);
    assert_consistent(f, 70, NULL);
}

static void test_corrupt_snapshot(void **state)
{
    fixture *f = *state;
    create(f, "docs", "Flat", "Flat");
    upsert_range(f, "docs", "image", 0, 50);
    ami_store_close(f->st);
    f->st = NULL;

    /* Truncate or scramble every snapshot file: open rebuilds from LMDB. */
    char path[256];
    snprintf(path, sizeof path, "%s/snapshots", f->dir);
    DIR *d = opendir(path);
    assert_non_null(d);
    int files = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (e->d_name[0] == '.')
            continue;
        char file[512];
        snprintf(file, sizeof file, "%s/%s", path, e->d_name);
        FILE *fp = fopen(file, "r+b");
        assert_non_null(fp);
        fseek(fp, 70, SEEK_SET);
        fputs("garbage garbage garbage", fp);
        fclose(fp);
        if (files == 0)
            assert_int_equal(truncate(file, 100), 0);
        files++;
    }
    closedir(d);
    assert_int_equal(files, 2);
    amc_error err = {0};
    assert_int_equal(ami_store_open(&f->st, f->dir, f->conn, NULL, &err), AMC_OK);
    assert_consistent(f, 50, NULL);
}

static void test_hnsw_tombstones(void **state)
{
    fixture *f = *state;
    create(f, "docs", "Flat", "HNSW8");
    upsert_range(f, "docs", "image", 0, 100);

    /* 10% deleted: tombstones stay in the graph and searches skip them. */
    const char *ids[30];
    char buf[30][8];
    for (int i = 0; i < 30; i++) {
        snprintf(buf[i], 8, "p%d", i * 3);
        ids[i] = buf[i];
    }
    assert_int_equal(ami_points_delete(f->st, "docs", ids, 10, NULL, NULL), AMC_OK);
    int live[100];
    for (int i = 0; i < 100; i++)
        live[i] = !(i % 3 == 0 && i < 30);
    assert_consistent(f, 100, live);

    /* Past the 20% threshold the index is rebuilt without them. */
    assert_int_equal(ami_points_delete(f->st, "docs", ids + 10, 20, NULL, NULL), AMC_OK);
    for (int i = 0; i < 100; i++)
        live[i] = i % 3 != 0 || i >= 90;
    assert_consistent(f, 100, live);
    reopen(f, NULL);
    assert_consistent(f, 100, live);
}

static void test_hnsw_read_your_writes(void **state)
{
    fixture *f = *state;
    create(f, "docs", "Flat", "HNSW16");

    /* Right after each upsert, before or after the builder thread has added the vectors,
     * a search finds every point written so far. */
    for (int round = 0; round < 5; round++) {
        upsert_range(f, "docs", "image", round * 40, 40);
        float x[IMAGE_DIM];
        test_fill(x, IMAGE_DIM, (uint64_t)(round * 40 + 39), IMAGE_DIM);
        ami_search_params p = params_k("image", 1);
        ami_result r;
        assert_int_equal(search_one(f, "docs", "image", x, &p, &r), AMC_OK);
        char id[16];
        snprintf(id, sizeof id, "p%d", round * 40 + 39);
        assert_int_equal(r.n, 1);
        assert_string_equal(r.hits[0].id, id);
        ami_results_free(&r, 1);

        p = params_k("image", 1000);
        p.ef_search = 1000;
        assert_int_equal(search_one(f, "docs", "image", x, &p, &r), AMC_OK);
        assert_int_equal(r.n, (round + 1) * 40);
        ami_results_free(&r, 1);
    }
    assert_consistent(f, 200, NULL);
}

static void test_drop_and_close_during_builds(void **state)
{
    fixture *f = *state;

    /* Drop a collection while the builder thread is adding its vectors. */
    create(f, "docs", "Flat", "HNSW32");
    for (int b = 0; b < 4; b++)
        upsert_range(f, "docs", "image", b * 500, 500);
    assert_int_equal(ami_collection_drop(f->st, "docs", NULL), AMC_OK);

    /* Close while it catches up, and reload the connector while it builds. */
    create(f, "docs", "Flat", "HNSW32");
    for (int b = 0; b < 4; b++)
        upsert_range(f, "docs", "image", b * 500, 500);
    reopen(f, NULL);
    amc_connector *next = test_connector(9);
    amc_error err = {0};
    assert_int_equal(ami_store_reload(f->st, next, &err), AMC_OK);
    amc_connector_free(f->conn);
    f->conn = next;
    upsert_range(f, "docs", "image", 2000, 10);
    assert_consistent(f, 2010, NULL);
}

static void test_ivf_training(void **state)
{
    fixture *f = *state;
    create(f, "docs", "Flat", "IVF4,Flat");

    /* Below 256 vectors the index is untrained and searches scan exactly. */
    upsert_range(f, "docs", "image", 0, 200);
    ami_collection_info info;
    assert_int_equal(ami_collection_describe(f->st, "docs", &info, NULL), AMC_OK);
    assert_int_equal(info.trained[1], 0);
    assert_int_equal(info.indexed[1], 0);
    assert_int_equal(ami_store_ready(f->st), 1);
    float q[TEXT_DIM], scores[300];
    query_vector(q, "text", 9);
    brute_scores(f->conn, "text", q, "image", 200, scores);
    ami_search_params p = params_k("image", 5);
    ami_result r;
    assert_int_equal(search_one(f, "docs", "text", q, &p, &r), AMC_OK);
    assert_exact_topk(&r, scores, NULL, 200, 5);
    ami_results_free(&r, 1);

    /* Crossing the threshold trains on everything stored; nprobe = nlist is exact. */
    upsert_range(f, "docs", "image", 200, 100);
    assert_true(test_wait_ready(f->st));
    assert_int_equal(ami_collection_describe(f->st, "docs", &info, NULL), AMC_OK);
    assert_int_equal(info.trained[1], 1);
    assert_int_equal(info.indexed[1], 300);
    brute_scores(f->conn, "text", q, "image", 300, scores);
    p.nprobe = 4;
    assert_int_equal(search_one(f, "docs", "text", q, &p, &r), AMC_OK);
    assert_exact_topk(&r, scores, NULL, 300, 5);
    ami_results_free(&r, 1);

    const char *gone[] = {"p1", "p250"};
    assert_int_equal(ami_points_delete(f->st, "docs", gone, 2, NULL, NULL), AMC_OK);
    reopen(f, NULL);
    assert_true(test_wait_ready(f->st));
    assert_int_equal(ami_collection_describe(f->st, "docs", &info, NULL), AMC_OK);
    assert_int_equal(info.indexed[1], 298);
}

static void test_map_growth(void **state)
{
    fixture *f = *state;
    ami_store_options opts = {.map_size = 64 << 10};
    reopen(f, &opts);
    create(f, "docs", "Flat", NULL);
    for (int b = 0; b < 20; b++)
        upsert_range(f, "docs", "text", b * 100, 100);
    ami_collection_info info;
    assert_int_equal(ami_collection_describe(f->st, "docs", &info, NULL), AMC_OK);
    assert_int_equal(info.points, 2000);

    /* A ceiling below what the data needs is a clear "full" error that stores nothing. */
    opts.map_size_max = opts.map_size = 1 << 20;
    reopen(f, &opts);
    float x[TEXT_DIM * 64];
    test_fill(x, TEXT_DIM * 64, 1, 2);
    amc_status s = AMC_OK;
    amc_error err = {0};
    int stored = 0;
    for (int i = 0; i < 2000 && s == AMC_OK; i++) {
        char id[32];
        snprintf(id, sizeof id, "big%d", i);
        ami_point p = {id, "text", x, 64, NULL};
        s = ami_points_upsert(f->st, "docs", &p, 1, NULL, &err);
        stored += s == AMC_OK;
    }
    assert_int_equal(s, AMC_EFULL);
    assert_non_null(strstr(err.msg, "map_size_max"));
    reopen(f, NULL);
    assert_int_equal(ami_collection_describe(f->st, "docs", &info, NULL), AMC_OK);
    assert_int_equal(info.points, 2000 + (uint64_t)stored);
}

/* In a child: a file size limit simulates a full disk. Exits with the number of batches
 * stored. */
static int fill_disk_child(const char *dir)
{
    amc_connector *conn = test_connector(1);
    ami_store *st;
    ami_store_options opts = {.read_only_snapshots = 1};
    if (ami_store_open(&st, dir, conn, &opts, NULL) != AMC_OK)
        _exit(100);
    struct stat sb;
    char file[128];
    snprintf(file, sizeof file, "%s/data.mdb", dir);
    stat(file, &sb);
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit lim = {(rlim_t)sb.st_size + (256 << 10), (rlim_t)sb.st_size + (256 << 10)};
    setrlimit(RLIMIT_FSIZE, &lim);
    float x[TEXT_DIM * 32];
    test_fill(x, TEXT_DIM * 32, 3, 3);
    amc_error err = {0};
    for (int b = 0; b < 1000; b++) {
        char id[32];
        snprintf(id, sizeof id, "full%d", b);
        ami_point p = {id, "text", x, 32, "{\"k\": 1}"};
        amc_status s = ami_points_upsert(st, "docs", &p, 1, NULL, &err);
        if (s != AMC_OK)
            _exit(s == AMC_EFULL && b > 0 ? b : 101);
    }
    _exit(102);
}

static void test_disk_full(void **state)
{
    fixture *f = *state;
    create(f, "docs", "Flat", NULL);
    ami_store_close(f->st);
    f->st = NULL;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0)
        fill_disk_child(f->dir);
    int status;
    waitpid(pid, &status, 0);
    assert_true(WIFEXITED(status));
    int stored = WEXITSTATUS(status);
    assert_true(stored > 0 && stored < 100);

    /* Every acknowledged point is intact; the failed one is absent. */
    amc_error err = {0};
    assert_int_equal(ami_store_open(&f->st, f->dir, f->conn, NULL, &err), AMC_OK);
    ami_collection_info info;
    assert_int_equal(ami_collection_describe(f->st, "docs", &info, NULL), AMC_OK);
    assert_int_equal(info.points, (uint64_t)stored);
    ami_point_data d;
    char id[32];
    snprintf(id, sizeof id, "full%d", stored - 1);
    assert_int_equal(ami_point_get(f->st, "docs", id, &d, NULL), AMC_OK);
    ami_point_data_free(&d);
    snprintf(id, sizeof id, "full%d", stored);
    assert_int_equal(ami_point_get(f->st, "docs", id, &d, NULL), AMC_ENOTFOUND);
}

/* ---------------------------------------------------------------------------------------
 * Connector changes and the predictive space
 * --------------------------------------------------------------------------------------- */

static void test_connector_change(void **state)
{
    fixture *f = *state;
    create(f, "docs", "Flat", "HNSW16");
    upsert_range(f, "docs", "image", 0, 80);

    /* Open with another connector: vectors are re-projected from the raw embeddings. */
    ami_store_close(f->st);
    amc_connector_free(f->conn);
    f->conn = test_connector(2);
    amc_error err = {0};
    assert_int_equal(ami_store_open(&f->st, f->dir, f->conn, NULL, &err), AMC_OK);
    char fp[17];
    amc_connector_fingerprint(f->conn, fp);
    ami_collection_info info;
    assert_int_equal(ami_collection_describe(f->st, "docs", &info, NULL), AMC_OK);
    assert_string_equal(info.fingerprint, fp);
    assert_consistent(f, 80, NULL);

    /* A live reload switches every index; a connector lacking a modality is rejected. */
    amc_connector *next = test_connector(3);
    assert_int_equal(ami_store_reload(f->st, next, &err), AMC_OK);
    amc_connector_free(f->conn);
    f->conn = next;
    assert_true(ami_store_connector(f->st) == next);
    assert_consistent(f, 80, NULL);
    amc_connector *without_image = test_connector_without_image();
    assert_int_equal(ami_store_reload(f->st, without_image, &err), AMC_EINVAL);
    assert_non_null(strstr(err.msg, "image"));
    assert_true(ami_store_connector(f->st) == next);
    assert_consistent(f, 80, NULL);
    reopen(f, NULL);
    assert_consistent(f, 80, NULL);
    amc_connector_free(without_image);
}

static void test_reload_failure_reverts(void **state)
{
    fixture *f = *state;
    create(f, "a", "Flat", "Flat");
    create(f, "docs", "Flat", "Flat");
    upsert_range(f, "a", "image", 0, 5);
    upsert_range(f, "docs", "image", 0, 3000);
    ami_store_close(f->st);
    f->st = NULL;

    /* A map with room for re-projecting "a" but not "docs" makes the reload fail midway. */
    char file[128];
    struct stat sb;
    snprintf(file, sizeof file, "%s/data.mdb", f->dir);
    assert_int_equal(stat(file, &sb), 0);
    size_t cap = ((size_t)sb.st_size + (16 << 10) + 4095) / 4096 * 4096;
    ami_store_options opts = {.map_size = cap, .map_size_max = cap};
    amc_error err = {0};
    assert_int_equal(ami_store_open(&f->st, f->dir, f->conn, &opts, &err), AMC_OK);
    char fp[17];
    amc_connector_fingerprint(f->conn, fp);
    amc_connector *next = test_connector(11);
    amc_status s = ami_store_reload(f->st, next, &err);
    if (s == AMC_OK) {
        /* The map had more room than estimated; nothing to check here. */
        amc_connector_free(f->conn);
        f->conn = next;
        skip();
    }
    assert_int_equal(s, AMC_EFULL);

    /* Nothing changed: connector, fingerprints and search results are the old ones. */
    assert_true(ami_store_connector(f->st) == f->conn);
    ami_collection_info info;
    assert_int_equal(ami_collection_describe(f->st, "a", &info, NULL), AMC_OK);
    assert_string_equal(info.fingerprint, fp);
    assert_consistent(f, 3000, NULL);
    amc_connector_free(next);
}

static void test_predictive_space(void **state)
{
    fixture *f = *state;
    ami_collection_spec spec = test_spec("pred", "Flat", "Flat");
    spec.space = AMI_SPACE_PREDICTIVE;
    assert_int_equal(ami_collection_create(f->st, &spec, NULL), AMC_OK);
    upsert_range(f, "pred", "image", 0, 50);
    ami_collection_info info;
    assert_int_equal(ami_collection_describe(f->st, "pred", &info, NULL), AMC_OK);
    assert_int_equal(info.dim[0], TEXT_DIM);
    assert_int_equal(info.dim[1], IMAGE_DIM);

    /* Expected: normalise(prediction text->image) . normalise(raw image). */
    float q[TEXT_DIM], pred[IMAGE_DIM], x[IMAGE_DIM], scores[50];
    query_vector(q, "text", 4);
    amc_workspace *ws = amc_workspace_new();
    assert_int_equal(amc_connector_project(f->conn, ws, AMC_SPACE_PREDICTIVE, 0, 1, q, 1, 1, pred,
                                           NULL), AMC_OK);
    amc_workspace_free(ws);
    double norm = 0.0;
    for (int j = 0; j < IMAGE_DIM; j++)
        norm += (double)pred[j] * (double)pred[j];
    for (int p = 0; p < 50; p++) {
        test_fill(x, IMAGE_DIM, (uint64_t)p, IMAGE_DIM);
        double dotp = 0.0, xn = 0.0;
        for (int j = 0; j < IMAGE_DIM; j++) {
            dotp += (double)pred[j] * (double)x[j];
            xn += (double)x[j] * (double)x[j];
        }
        scores[p] = (float)(dotp / sqrt(norm * xn));
    }
    ami_search_params p = params_k("image", 5);
    ami_result r;
    assert_int_equal(search_one(f, "pred", "text", q, &p, &r), AMC_OK);
    assert_exact_topk(&r, scores, NULL, 50, 5);
    ami_results_free(&r, 1);
}

/* ---------------------------------------------------------------------------------------
 * Concurrency
 * --------------------------------------------------------------------------------------- */

typedef struct reader_arg {
    fixture *f;
    int errors;
    int searches;
} reader_arg;

static void *reader(void *arg)
{
    reader_arg *a = arg;
    float q[TEXT_DIM];
    for (int i = 0; i < 200; i++) {
        query_vector(q, "text", (uint64_t)i);
        ami_search_params p = params_k(i % 2 ? "image" : "text", 5);
        p.ef_search = 32 + i % 3 * 16;
        ami_result r;
        ami_query query = {"text", q, 1};
        if (ami_search(a->f->st, "docs", &query, 1, &p, &r, NULL) != AMC_OK)
            a->errors++;
        else
            ami_results_free(&r, 1);
        ami_collection_info info;
        if (ami_collection_describe(a->f->st, "docs", &info, NULL) != AMC_OK)
            a->errors++;
        a->searches++;
    }
    return NULL;
}

static void test_concurrent_readers(void **state)
{
    fixture *f = *state;
    ami_store_options opts = {.map_size = 64 << 10};
    reopen(f, &opts);
    create(f, "docs", "Flat", "HNSW16");
    upsert_range(f, "docs", "image", 0, 20);
    pthread_t threads[4];
    reader_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (reader_arg){f, 0, 0};
        pthread_create(&threads[i], NULL, reader, &args[i]);
    }
    for (int b = 0; b < 30; b++) {
        upsert_range(f, "docs", b % 2 ? "text" : "image", 20 + b * 10, 10);
        if (b % 10 == 9)
            assert_int_equal(ami_store_snapshot(f->st, NULL), AMC_OK);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(threads[i], NULL);
        assert_int_equal(args[i].errors, 0);
        assert_int_equal(args[i].searches, 200);
    }
    ami_collection_info info;
    assert_int_equal(ami_collection_describe(f->st, "docs", &info, NULL), AMC_OK);
    assert_int_equal(info.points, 320);
}

#define STORE_TEST(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_errors),
        STORE_TEST(test_collection_lifecycle),
        STORE_TEST(test_collection_create_errors),
        STORE_TEST(test_upsert_get),
        STORE_TEST(test_upsert_errors),
        STORE_TEST(test_delete),
        STORE_TEST(test_search_exact_flat),
        STORE_TEST(test_search_batch),
        STORE_TEST(test_search_filter),
        STORE_TEST(test_search_errors),
        STORE_TEST(test_snapshot_replay),
        STORE_TEST(test_auto_snapshot),
        STORE_TEST(test_corrupt_snapshot),
        STORE_TEST(test_hnsw_tombstones),
        STORE_TEST(test_hnsw_read_your_writes),
        STORE_TEST(test_drop_and_close_during_builds),
        STORE_TEST(test_ivf_training),
        STORE_TEST(test_map_growth),
        STORE_TEST(test_disk_full),
        STORE_TEST(test_connector_change),
        STORE_TEST(test_reload_failure_reverts),
        STORE_TEST(test_predictive_space),
        STORE_TEST(test_concurrent_readers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
