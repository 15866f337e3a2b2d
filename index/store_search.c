/* Search: query projection, one FAISS call per batch, resolution of labels to points through
 * LMDB (which also skips tombstones and applies the payload filter), and the exact scan used
 * when the index is untrained or cannot deliver k matching hits.
 *
 * The whole call holds the store's lock shared and one LMDB read transaction, so collections,
 * indices and the connector stay fixed while it runs. */
#include "index/store_internal.h"

#include <stdlib.h>
#include <string.h>

#define OVERFETCH_FILTER 4       /* candidates per wanted hit when a filter is set */

/* From libgomp, which FAISS uses (declared here because clang builds may lack omp.h). Both act
 * on the calling thread's OpenMP settings only. */
int omp_get_max_threads(void);
void omp_set_num_threads(int n);
#define MAX_FETCH 8192           /* most FAISS candidates per query before the exact scan */

typedef struct cand {
    float score;
    uint64_t iid;
} cand;

/* A top-k min-heap of candidates. */
typedef struct topk {
    int k, n;
    cand *items;
} topk;

static void heap_push(topk *h, float score, uint64_t iid)
{
    if (h->n == h->k && score <= h->items[0].score)
        return;
    int i;
    if (h->n < h->k) {
        i = h->n++;
        while (i > 0 && h->items[(i - 1) / 2].score > score) {
            h->items[i] = h->items[(i - 1) / 2];
            i = (i - 1) / 2;
        }
    } else {
        /* Replace the minimum and sift down. */
        i = 0;
        for (;;) {
            int l = 2 * i + 1, r = l + 1, s = i;
            float best = score;
            if (l < h->n && h->items[l].score < best) {
                s = l;
                best = h->items[l].score;
            }
            if (r < h->n && h->items[r].score < best)
                s = r;
            if (s == i)
                break;
            h->items[i] = h->items[s];
            i = s;
        }
    }
    h->items[i].score = score;
    h->items[i].iid = iid;
}

static int cmp_cand_desc(const void *a, const void *b)
{
    float x = ((const cand *)a)->score, y = ((const cand *)b)->score;
    return (x < y) - (x > y);
}

static float dot(const float *a, const float *b, int n);

/* Everything one search call works on. */
typedef struct search_ctx {
    ami_store *st;
    const ami_coll_ *coll;
    int t;                       /* target modality in the collection */
    const ami_search_params *params;
    const ami_filter_ *filter;
    MDB_txn *txn;
    int nq, dim;
    float *qv;                   /* [nq, dim] projected queries */
    topk *heaps;                 /* [nq] */
    int *exact;                  /* [nq] 1: needs the exact scan */
    float *scratch;              /* [dim] aligned copy of a stored vector (LMDB values are
                                    only 2-byte aligned) */
} search_ctx;

/* ---------------------------------------------------------------------------------------
 * Query projection
 * --------------------------------------------------------------------------------------- */

static amc_status check_query(const ami_store *st, const ami_coll_ *coll, int t,
                              const ami_query *q, int i, int *src, amc_error *err)
{
    const amc_config *cfg = &st->conn->cfg;
    *src = q->modality != NULL ? amc_config_modality(cfg, q->modality) : -1;
    if (*src < 0)
        return amc_error_set(err, AMC_EINVAL, "queries[%d].modality \"%s\" is not in the "
                             "connector", i, q->modality ? q->modality : "(null)");
    if (q->seq < 1 || q->seq > AMI_SEQ_MAX)
        return amc_error_set(err, AMC_EINVAL, "queries[%d]: seq %d is out of range 1..%d", i,
                             q->seq, AMI_SEQ_MAX);
    size_t n = (size_t)q->seq * (size_t)cfg->modalities[*src].dim;
    if (q->embedding == NULL || !ami_all_finite_(q->embedding, n))
        return amc_error_set(err, AMC_EINVAL, "queries[%d].embedding must hold %d x %d finite "
                             "floats (no NaN or Inf)", i, q->seq, cfg->modalities[*src].dim);
    int tgt = coll->conn_mod[t];
    if (*src != tgt && amc_config_direction(cfg, *src, tgt) < 0)
        return amc_error_set(err, AMC_EINVAL, "queries[%d]: the connector has no direction "
                             "%s->%s", i, q->modality, coll->spec.modalities[t]);
    return AMC_OK;
}

/* Projects n queries of modality src (x [n, seq, d_src]) for target modality t into out. */
static amc_status project_run(search_ctx *c, amc_workspace *ws, int src, const float *x, int n,
                              int seq, float *out, amc_error *err)
{
    const amc_connector *conn = c->st->conn;
    int tgt = c->coll->conn_mod[c->t];
    if (src == tgt)
        return ami_project_items_(conn, ws, c->coll->spec.space, src, x, n, seq, out, err);
    if (c->coll->spec.space == AMI_SPACE_CONTRASTIVE)
        return amc_connector_project(conn, ws, AMC_SPACE_CONTRASTIVE, src, tgt, x, n, seq, out,
                                     err);
    amc_status s = amc_connector_project(conn, ws, AMC_SPACE_PREDICTIVE, src, tgt, x, n, seq, out,
                                         err);
    for (int i = 0; s == AMC_OK && i < n; i++)
        ami_normalise_(out + (size_t)i * (size_t)c->dim, c->dim);
    return s;
}

/* One connector call per run of queries that share modality and token count. */
static amc_status project_queries(search_ctx *c, const ami_query *queries, const int *src,
                                  amc_error *err)
{
    amc_workspace *ws = ami_workspace_take_(c->st);
    if (ws == NULL)
        return amc_error_set(err, AMC_ENOMEM, "out of memory for a projection workspace");
    amc_status s = AMC_OK;
    float *buf = NULL;
    for (int i = 0; s == AMC_OK && i < c->nq;) {
        int j = i + 1;
        while (j < c->nq && src[j] == src[i] && queries[j].seq == queries[i].seq)
            j++;
        size_t item = (size_t)queries[i].seq * (size_t)c->st->conn->cfg.modalities[src[i]].dim;
        float *grown = realloc(buf, sizeof(float) * item * (size_t)(j - i));
        if (grown == NULL) {
            s = amc_error_set(err, AMC_ENOMEM, "out of memory projecting queries");
            break;
        }
        buf = grown;
        for (int r = i; r < j; r++)
            memcpy(buf + (size_t)(r - i) * item, queries[r].embedding, sizeof(float) * item);
        s = project_run(c, ws, src[i], buf, j - i, queries[i].seq,
                        c->qv + (size_t)i * (size_t)c->dim, err);
        i = j;
    }
    free(buf);
    ami_workspace_give_(c->st, ws);
    return s;
}

/* ---------------------------------------------------------------------------------------
 * Resolving candidates through LMDB
 * --------------------------------------------------------------------------------------- */

/* Reads the point record of iid: its external id and payload (borrowed, valid in the txn). */
static int read_rec(const search_ctx *c, uint64_t iid, MDB_val *rec)
{
    unsigned char key[12];
    ami_put_be32_(key, c->coll->cid);
    ami_put_be64_(key + 4, iid);
    MDB_val k = {sizeof key, key};
    int rc = mdb_get(c->txn, c->st->db_points, &k, rec);
    size_t fixed = 2 + 8 * AMC_MAX_MODALITIES + 4;
    if (rc == 0 && rec->mv_size < fixed)
        return MDB_CORRUPTED;
    return rc;
}

static void rec_fields(const MDB_val *rec, const char **id, uint16_t *id_len,
                       uint64_t *vid, const char **payload, uint32_t *payload_len)
{
    const unsigned char *p = rec->mv_data;
    memcpy(id_len, p, 2);
    *id = (const char *)p + 2;
    memcpy(vid, p + 2 + *id_len, 8 * AMC_MAX_MODALITIES);
    memcpy(payload_len, p + 2 + *id_len + 8 * AMC_MAX_MODALITIES, 4);
    *payload = (const char *)p + 2 + *id_len + 8 * AMC_MAX_MODALITIES + 4;
}

/* 1 when the point record passes the filter. */
static int rec_matches(const search_ctx *c, const MDB_val *rec)
{
    if (c->filter == NULL)
        return 1;
    const char *id, *payload;
    uint16_t id_len;
    uint32_t payload_len;
    uint64_t vid[AMC_MAX_MODALITIES];
    rec_fields(rec, &id, &id_len, vid, &payload, &payload_len);
    if (payload_len == 0)
        return 0;
    cJSON *json = cJSON_ParseWithLength(payload, payload_len);
    int ok = ami_filter_match_(c->filter, json);
    cJSON_Delete(json);
    return ok;
}

/* Looks up the vector vid of the target modality: *iid, and *vec copied into c->scratch. */
static int read_vec(const search_ctx *c, uint64_t vid, uint64_t *iid, const float **vec)
{
    unsigned char key[13];
    ami_put_be32_(key, c->coll->cid);
    key[4] = (unsigned char)c->t;
    ami_put_be64_(key + 5, vid);
    MDB_val k = {sizeof key, key}, v;
    int rc = mdb_get(c->txn, c->st->db_vecs, &k, &v);
    if (rc == 0 && v.mv_size != 8 + sizeof(float) * (size_t)c->dim)
        return MDB_CORRUPTED;
    if (rc == 0) {
        memcpy(iid, v.mv_data, 8);
        if (vec != NULL) {
            memcpy(c->scratch, (const char *)v.mv_data + 8, sizeof(float) * (size_t)c->dim);
            *vec = c->scratch;
        }
    }
    return rc;
}

/* ---------------------------------------------------------------------------------------
 * FAISS path
 * --------------------------------------------------------------------------------------- */

/* Sets nprobe / efSearch when they differ and runs the search; see ami_index_.param_lock. */
static int faiss_search_with_params(ami_index_ *idx, int nq, const float *qv, int kq,
                                    float *dist, idx_t *labels, int nprobe, int ef)
{
    if (idx->nlist == 0)
        nprobe = 0;
    if (strstr(idx->factory, "HNSW") == NULL)
        ef = 0;
    pthread_rwlock_rdlock(&idx->param_lock);
    if (idx->nprobe != nprobe || idx->ef_search != ef) {
        pthread_rwlock_unlock(&idx->param_lock);
        pthread_rwlock_wrlock(&idx->param_lock);
        FaissParameterSpace *ps = NULL;
        int rc = faiss_ParameterSpace_new(&ps);
        if (rc == 0 && nprobe > 0)
            rc = faiss_ParameterSpace_set_index_parameter(ps, idx->faiss, "nprobe", nprobe);
        if (rc == 0 && ef > 0)
            rc = faiss_ParameterSpace_set_index_parameter(ps, idx->faiss, "efSearch", ef);
        faiss_ParameterSpace_free(ps);
        if (rc != 0) {
            pthread_rwlock_unlock(&idx->param_lock);
            return rc;
        }
        idx->nprobe = nprobe;
        idx->ef_search = ef;
    }
    /* FAISS parallelises over queries, so one query gains nothing from an OpenMP team. Waking
     * the team costs more than the search on a busy machine: in one run of
     * bench/store_bench.c on a loaded 2-core VM, single-query Flat and HNSW searches on 5,000
     * vectors ran about 3 and 30 times faster with one thread. */
    int threads = omp_get_max_threads();
    if (nq == 1)
        omp_set_num_threads(1);
    int rc = faiss_Index_search(idx->faiss, nq, qv, kq, dist, labels);
    if (nq == 1)
        omp_set_num_threads(threads);
    pthread_rwlock_unlock(&idx->param_lock);
    return rc;
}

static amc_status search_faiss(search_ctx *c, amc_error *err)
{
    ami_index_ *idx = (ami_index_ *)&c->coll->idx[c->t];
    int k = c->params->k;
    int64_t ntotal = faiss_Index_ntotal(idx->faiss);
    if (ntotal == 0)
        return AMC_OK;

    /* Over-fetch for the filter and for tombstones; the exact scan covers what is left. */
    int64_t want = (int64_t)k * (c->filter != NULL ? OVERFETCH_FILTER : 1) + (int64_t)idx->dead;
    int kq = (int)(want < ntotal ? want : ntotal);
    if (kq > MAX_FETCH)
        kq = k > MAX_FETCH ? k : MAX_FETCH;
    float *dist = malloc(sizeof(float) * (size_t)kq * (size_t)c->nq);
    idx_t *labels = malloc(sizeof(idx_t) * (size_t)kq * (size_t)c->nq);
    if (dist == NULL || labels == NULL) {
        free(dist);
        free(labels);
        return amc_error_set(err, AMC_ENOMEM, "out of memory for %d x %d candidates", c->nq, kq);
    }
    int nprobe = c->params->nprobe > 0 ? c->params->nprobe
                                        : (idx->nlist / 16 > 1 ? idx->nlist / 16 : 1);
    int ef = c->params->ef_search > 0 ? c->params->ef_search : (2 * k > 64 ? 2 * k : 64);
    if (ef < kq)
        ef = kq;
    amc_status s = AMC_OK;
    if (faiss_search_with_params(idx, c->nq, c->qv, kq, dist, labels, nprobe, ef) != 0) {
        const char *msg = faiss_get_last_error();
        s = amc_error_set(err, AMC_EINTERNAL, "FAISS search failed: %s", msg ? msg : "unknown");
    }

    /* Labels are vids: a missing vector is a tombstone; the filter reads the point. */
    for (int q = 0; s == AMC_OK && q < c->nq; q++) {
        const idx_t *row = labels + (size_t)q * (size_t)kq;
        int i = 0;
        for (; i < kq && row[i] >= 0 && c->heaps[q].n < k; i++) {
            uint64_t iid;
            MDB_val rec;
            if (read_vec(c, (uint64_t)row[i], &iid, NULL) != 0 || read_rec(c, iid, &rec) != 0)
                continue;
            if (rec_matches(c, &rec))
                heap_push(&c->heaps[q], dist[(size_t)q * (size_t)kq + (size_t)i], iid);
        }
        /* Short of k while more live vectors exist (a filter, tombstones, or an approximate
         * index returning fewer): scan exactly. */
        if (c->heaps[q].n < k && (int64_t)c->heaps[q].n < ntotal - (int64_t)idx->dead)
            c->exact[q] = 1;
    }
    free(dist);
    free(labels);
    return s;
}

/* ---------------------------------------------------------------------------------------
 * Exact scans
 * --------------------------------------------------------------------------------------- */

/* Scores the vectors a graph index does not contain yet (vid > after) for every query that
 * the index served, so searches find every committed write. */
static amc_status search_tail(search_ctx *c, uint64_t after, amc_error *err)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(c->txn, c->st->db_vecs, &cur);
    if (rc != 0)
        return ami_lmdb_status_(rc, "open tail cursor", err);
    unsigned char start[13];
    ami_put_be32_(start, c->coll->cid);
    start[4] = (unsigned char)c->t;
    ami_put_be64_(start + 5, after + 1);
    MDB_val k = {sizeof start, start}, v;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != 13 || memcmp(k.mv_data, start, 5) != 0)
            break;
        uint64_t iid;
        memcpy(&iid, v.mv_data, 8);
        MDB_val rec;
        if (c->filter != NULL && (read_rec(c, iid, &rec) != 0 || !rec_matches(c, &rec)))
            continue;
        memcpy(c->scratch, (const char *)v.mv_data + 8, sizeof(float) * (size_t)c->dim);
        for (int q = 0; q < c->nq; q++)
            if (!c->exact[q])
                heap_push(&c->heaps[q],
                          dot(c->qv + (size_t)q * (size_t)c->dim, c->scratch, c->dim), iid);
    }
    mdb_cursor_close(cur);
    if (rc != 0 && rc != MDB_NOTFOUND)
        return ami_lmdb_status_(rc, "scan the index tail", err);
    return AMC_OK;
}

static float dot(const float *a, const float *b, int n)
{
    float sum = 0.0f;
    for (int i = 0; i < n; i++)
        sum += a[i] * b[i];
    return sum;
}

static void score_all(search_ctx *c, const float *vec, uint64_t iid)
{
    for (int q = 0; q < c->nq; q++)
        if (c->exact[q])
            heap_push(&c->heaps[q], dot(c->qv + (size_t)q * (size_t)c->dim, vec, c->dim), iid);
}

/* Scans every point of the collection (filter set) or every target vector (no filter). */
static amc_status search_exact(search_ctx *c, amc_error *err)
{
    for (int q = 0; q < c->nq; q++)
        if (c->exact[q])
            c->heaps[q].n = 0;
    MDB_cursor *cur;
    MDB_dbi dbi = c->filter != NULL ? c->st->db_points : c->st->db_vecs;
    int rc = mdb_cursor_open(c->txn, dbi, &cur);
    if (rc != 0)
        return ami_lmdb_status_(rc, "open scan cursor", err);
    unsigned char prefix[5];
    ami_put_be32_(prefix, c->coll->cid);
    prefix[4] = (unsigned char)c->t;
    size_t plen = c->filter != NULL ? 4 : 5;
    MDB_val k = {plen, prefix}, v;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size < plen || memcmp(k.mv_data, prefix, plen) != 0)
            break;
        if (c->filter == NULL) {
            uint64_t iid;
            memcpy(&iid, v.mv_data, 8);
            memcpy(c->scratch, (const char *)v.mv_data + 8, sizeof(float) * (size_t)c->dim);
            score_all(c, c->scratch, iid);
            continue;
        }
        const char *id, *payload;
        uint16_t id_len;
        uint32_t payload_len;
        uint64_t vid[AMC_MAX_MODALITIES], iid;
        const float *vec;
        rec_fields(&v, &id, &id_len, vid, &payload, &payload_len);
        if (vid[c->t] == 0 || !rec_matches(c, &v) || read_vec(c, vid[c->t], &iid, &vec) != 0)
            continue;
        score_all(c, vec, iid);
    }
    mdb_cursor_close(cur);
    if (rc != 0 && rc != MDB_NOTFOUND)
        return ami_lmdb_status_(rc, "scan vectors", err);
    return AMC_OK;
}

/* ---------------------------------------------------------------------------------------
 * Results
 * --------------------------------------------------------------------------------------- */

void ami_results_free(ami_result *results, int nq)
{
    for (int q = 0; results != NULL && q < nq; q++) {
        for (int i = 0; i < results[q].n; i++)
            free(results[q].hits[i].payload);
        free(results[q].hits);
        results[q].hits = NULL;
        results[q].n = 0;
    }
}

static amc_status fill_result(search_ctx *c, topk *h, ami_result *r, amc_error *err)
{
    qsort(h->items, (size_t)h->n, sizeof(cand), cmp_cand_desc);
    r->hits = calloc((size_t)h->n + 1, sizeof *r->hits);
    if (r->hits == NULL)
        return amc_error_set(err, AMC_ENOMEM, "out of memory for results");
    for (int i = 0; i < h->n; i++) {
        MDB_val rec;
        int rc = read_rec(c, h->items[i].iid, &rec);
        if (rc != 0)
            return ami_lmdb_status_(rc, "read hit", err);
        const char *id, *payload;
        uint16_t id_len;
        uint32_t payload_len;
        uint64_t vid[AMC_MAX_MODALITIES];
        rec_fields(&rec, &id, &id_len, vid, &payload, &payload_len);
        ami_hit *hit = &r->hits[r->n++];
        memcpy(hit->id, id, id_len);
        hit->id[id_len] = '\0';
        hit->score = h->items[i].score;
        if (c->params->with_payload && payload_len > 0) {
            hit->payload = malloc(payload_len + 1);
            if (hit->payload == NULL)
                return amc_error_set(err, AMC_ENOMEM, "out of memory for payloads");
            memcpy(hit->payload, payload, payload_len);
            hit->payload[payload_len] = '\0';
        }
    }
    return AMC_OK;
}

/* ---------------------------------------------------------------------------------------
 * ami_search
 * --------------------------------------------------------------------------------------- */

static amc_status check_params(const ami_search_params *p, int nq, amc_error *err)
{
    if (nq < 1)
        return amc_error_set(err, AMC_EINVAL, "search needs 1 or more queries");
    if (p == NULL || p->target == NULL)
        return amc_error_set(err, AMC_EINVAL, "search needs a target modality");
    if (p->k < 1 || p->k > AMI_K_MAX)
        return amc_error_set(err, AMC_EINVAL, "k = %d is out of range 1..%d", p->k, AMI_K_MAX);
    if (p->nprobe < 0 || p->ef_search < 0)
        return amc_error_set(err, AMC_EINVAL, "nprobe and ef_search must be 0 or positive");
    return AMC_OK;
}

/* Allocates the per-call buffers of c. */
static amc_status alloc_ctx(search_ctx *c, int k, amc_error *err)
{
    c->qv = malloc(sizeof(float) * (size_t)c->nq * (size_t)c->dim);
    c->heaps = calloc((size_t)c->nq, sizeof *c->heaps);
    c->exact = calloc((size_t)c->nq, sizeof *c->exact);
    c->scratch = malloc(sizeof(float) * (size_t)c->dim);
    if (c->qv == NULL || c->heaps == NULL || c->exact == NULL || c->scratch == NULL)
        return amc_error_set(err, AMC_ENOMEM, "out of memory for %d queries", c->nq);
    for (int q = 0; q < c->nq; q++) {
        c->heaps[q].k = k;
        c->heaps[q].items = malloc(sizeof(cand) * (size_t)k);
        if (c->heaps[q].items == NULL)
            return amc_error_set(err, AMC_ENOMEM, "out of memory for %d queries", c->nq);
    }
    return AMC_OK;
}

static void free_ctx(search_ctx *c)
{
    for (int q = 0; c->heaps != NULL && q < c->nq; q++)
        free(c->heaps[q].items);
    free(c->heaps);
    free(c->exact);
    free(c->qv);
    free(c->scratch);
}

/* Steps of ami_search once the collection is found; caller holds the lock shared. */
static amc_status run_search(search_ctx *c, const ami_query *queries, ami_result *results,
                             amc_error *err)
{
    int *src = malloc(sizeof(int) * (size_t)c->nq);
    if (src == NULL)
        return amc_error_set(err, AMC_ENOMEM, "out of memory for %d queries", c->nq);
    amc_status s = AMC_OK;
    for (int q = 0; s == AMC_OK && q < c->nq; q++)
        s = check_query(c->st, c->coll, c->t, &queries[q], q, &src[q], err);
    if (s == AMC_OK)
        s = alloc_ctx(c, c->params->k, err);
    if (s == AMC_OK)
        s = project_queries(c, queries, src, err);
    free(src);
    if (s == AMC_OK)
        s = ami_read_begin_(c->st, &c->txn, err);
    if (s != AMC_OK)
        return s;

    /* FAISS when the index is usable, the exact scan otherwise or as fallback. */
    const ami_index_ *idx = &c->coll->idx[c->t];
    int usable = idx->faiss != NULL && !idx->broken;
    for (int q = 0; q < c->nq; q++)
        c->exact[q] = !usable;
    if (usable)
        s = search_faiss(c, err);
    uint64_t indexed = idx->indexed_upto > idx->applied_seq ? idx->indexed_upto
                                                             : idx->applied_seq;
    if (s == AMC_OK && usable && idx->async && indexed < ami_store_seq(c->st))
        s = search_tail(c, indexed, err);
    int any_exact = 0;
    for (int q = 0; q < c->nq; q++)
        any_exact |= c->exact[q];
    if (s == AMC_OK && any_exact)
        s = search_exact(c, err);
    for (int q = 0; s == AMC_OK && q < c->nq; q++)
        s = fill_result(c, &c->heaps[q], &results[q], err);
    mdb_txn_abort(c->txn);
    return s;
}

amc_status ami_search(ami_store *st, const char *collection, const ami_query *queries, int nq,
                      const ami_search_params *params, ami_result *results, amc_error *err)
{
    amc_status s = check_params(params, nq, err);
    if (s != AMC_OK)
        return s;
    memset(results, 0, sizeof *results * (size_t)nq);
    ami_filter_ *filter = NULL;
    s = ami_filter_compile_(params->filter, &filter, err);
    if (s != AMC_OK)
        return s;

    pthread_rwlock_rdlock(&st->lock);
    search_ctx c = {.st = st, .params = params, .filter = filter, .nq = nq};
    c.coll = collection != NULL ? ami_coll_find_(st, collection) : NULL;
    if (c.coll == NULL)
        s = amc_error_set(err, AMC_ENOTFOUND, "collection %s not found",
                          collection ? collection : "(null)");
    if (s == AMC_OK) {
        c.t = ami_coll_modality_(c.coll, params->target);
        if (c.t < 0)
            s = amc_error_set(err, AMC_EINVAL, "target modality \"%s\" is not a modality of "
                              "collection %s", params->target, collection);
    }
    if (s == AMC_OK) {
        c.dim = c.coll->idx[c.t].dim;
        s = run_search(&c, queries, results, err);
    }
    pthread_rwlock_unlock(&st->lock);
    free_ctx(&c);
    ami_filter_free_(filter);
    if (s != AMC_OK)
        ami_results_free(results, nq);
    return s;
}
