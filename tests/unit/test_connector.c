/* The connector's config, parameter layout, initialisation and forward pass, checked against a
 * naive double-precision reference that runs every expert and masks the unselected ones. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/connector.h"
#include "core/forward.h"
#include "core/rng.h"
#include "tests/unit/testutil.h"

static const char *small_config =
    "{\"modalities\": [{\"name\": \"text\", \"dim\": 5}, {\"name\": \"image\", \"dim\": 7}],"
    " \"hidden\": 6, \"latent\": 4, \"experts\": 4, \"top_k\": 2}";

static amc_connector *make_connector(const char *json, uint64_t seed)
{
    amc_config cfg;
    amc_connector *conn = NULL;
    amc_error err = {0};

    if (amc_config_from_json(&cfg, json, &err) != AMC_OK)
        fail_msg("config: %s", err.msg);
    if (amc_connector_create(&conn, &cfg, &err) != AMC_OK)
        fail_msg("create: %s", err.msg);
    amc_connector_init(conn, seed);
    return conn;
}

/* ---------------------------------------------------------------- config */

static void config_defaults_every_pair(void **state)
{
    (void)state;
    amc_config cfg;
    amc_error err = {0};
    const char *json = "{\"modalities\": [{\"name\": \"text\", \"dim\": 100},"
                       " {\"name\": \"image\", \"dim\": 480}, {\"name\": \"audio\", \"dim\": 64}]}";

    assert_int_equal(amc_config_from_json(&cfg, json, &err), AMC_OK);
    assert_int_equal(cfg.n_modalities, 3);
    assert_int_equal(cfg.n_directions, 6);
    assert_int_equal(cfg.hidden, 512);
    assert_int_equal(cfg.n_experts, 12);
    assert_int_equal(cfg.top_k, 4);
    assert_int_equal(amc_config_direction(&cfg, 1, 0), 2);
    assert_int_equal(amc_config_modality(&cfg, "audio"), 2);
    assert_int_equal(amc_config_modality(&cfg, "video"), -1);
}

static void config_round_trips_json(void **state)
{
    (void)state;
    amc_config a, b;
    amc_error err = {0};
    const char *json = "{\"modalities\": [{\"name\": \"text\", \"dim\": 10},"
                       " {\"name\": \"image\", \"dim\": 20}], \"directions\": [[\"image\", \"text\"]],"
                       " \"hidden\": 8, \"latent\": 6, \"experts\": 3, \"top_k\": 3,"
                       " \"dropout\": 0.25, \"ln_eps\": 1e-6}";

    assert_int_equal(amc_config_from_json(&a, json, &err), AMC_OK);
    char *text = amc_config_to_json(&a);
    assert_non_null(text);
    assert_int_equal(amc_config_from_json(&b, text, &err), AMC_OK);
    free(text);
    assert_int_equal(b.n_directions, 1);
    assert_int_equal(b.directions[0].src, 1);
    assert_int_equal(b.top_k, 3);
    assert_near(b.dropout, 0.25, 1e-7);
    assert_near(b.ln_eps, 1e-6, 1e-12);
}

static void config_rejects_bad_input(void **state)
{
    (void)state;
    static const struct {
        const char *json;
        const char *message;
    } cases[] = {
        {"{", "invalid JSON"},
        {"[]", "expected a JSON object"},
        {"{\"modalities\": []}", "modalities"},
        {"{\"modalities\": [{\"name\": \"Text\", \"dim\": 3}]}", "modalities[0].name"},
        {"{\"modalities\": [{\"name\": \"t\", \"dim\": 0}]}", "modalities[0].dim"},
        {"{\"modalities\": [{\"name\": \"t\", \"dim\": 2.5}]}", "modalities[0].dim"},
        {"{\"modalities\": [{\"name\": \"t\", \"dim\": 3}, {\"name\": \"t\", \"dim\": 4}]}",
         "appears twice"},
        {"{\"modalities\": [{\"name\": \"t\", \"dim\": 3}]}", "directions"},
        {"{\"modalities\": [{\"name\": \"a\", \"dim\": 3}, {\"name\": \"b\", \"dim\": 4}],"
         " \"directions\": [[\"a\", \"c\"]]}", "unknown modality 'c'"},
        {"{\"modalities\": [{\"name\": \"a\", \"dim\": 3}, {\"name\": \"b\", \"dim\": 4}],"
         " \"directions\": [[\"a\", \"a\"]]}", "directions[0]"},
        {"{\"modalities\": [{\"name\": \"a\", \"dim\": 3}, {\"name\": \"b\", \"dim\": 4}],"
         " \"experts\": 2, \"top_k\": 3}", "top_k"},
        {"{\"modalities\": [{\"name\": \"a\", \"dim\": 3}, {\"name\": \"b\", \"dim\": 4}],"
         " \"experts\": 65}", "experts"},
        {"{\"modalities\": [{\"name\": \"a\", \"dim\": 3}, {\"name\": \"b\", \"dim\": 4}],"
         " \"dropout\": 1}", "dropout"},
        {"{\"modalities\": [{\"name\": \"a\", \"dim\": 3}, {\"name\": \"b\", \"dim\": 4}],"
         " \"hiden\": 8}", "hiden: unknown key"},
    };

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        amc_config cfg;
        amc_error err = {0};
        amc_status rc = amc_config_from_json(&cfg, cases[i].json, &err);
        if (rc == AMC_OK || strstr(err.msg, cases[i].message) == NULL)
            fail_msg("case %zu (%s): status %d, message '%s', expected '%s'", i, cases[i].json,
                     rc, err.msg, cases[i].message);
    }
}

/* ---------------------------------------------------------------- layout and init */

static void layout_names_and_shapes(void **state)
{
    (void)state;
    amc_connector *conn = make_connector(small_config, 1);

    const amc_tensor_info *t = amc_connector_tensor(conn, "modalities.image.in_proj.weight");
    assert_non_null(t);
    assert_int_equal(t->shape[0], 6);
    assert_int_equal(t->shape[1], 7);
    t = amc_connector_tensor(conn, "directions.text.image.head_reg.weight");
    assert_non_null(t);
    assert_int_equal(t->shape[0], 7);
    assert_int_equal(t->shape[1], 6);
    t = amc_connector_tensor(conn, "directions.image.text.dir_emb");
    assert_non_null(t);
    assert_int_equal(t->shape[0], 7);
    assert_non_null(amc_connector_tensor(conn, "experts.3.fc2.bias"));
    assert_null(amc_connector_tensor(conn, "experts.4.fc2.bias"));

    /* 2 x (in 5*6+6, tgt 5*4+4) + image (7*6+6 + 7*4+4), 2 directions, task, gate, experts, LN */
    size_t want = (30 + 6 + 20 + 4) + (42 + 6 + 28 + 4) + (5 + 42 + 7 + 24 + 4) +
                  (7 + 30 + 5 + 24 + 4) + 12 + (24 + 4) + 4 * 2 * (36 + 6) + 24;
    size_t total = 0;
    for (int i = 0; i < conn->n_tensors; i++) {
        total += conn->tensors[i].numel;
        assert_int_equal(conn->tensors[i].offset % 16, 0);
    }
    assert_int_equal(total, want);
    assert_ptr_equal(conn->p.experts[3].fc2.b,
                     conn->block + amc_connector_tensor(conn, "experts.3.fc2.bias")->offset);
    amc_connector_free(conn);
}

static void init_is_seeded_and_bounded(void **state)
{
    (void)state;
    amc_connector *a = make_connector(small_config, 7);
    amc_connector *b = make_connector(small_config, 7);
    amc_connector *c = make_connector(small_config, 8);

    assert_memory_equal(a->block, b->block, a->n_params * sizeof(float));
    assert_memory_not_equal(a->block, c->block, a->n_params * sizeof(float));
    for (int i = 0; i < a->n_tensors; i++) {
        const amc_tensor_info *t = &a->tensors[i];
        const float *v = a->block + t->offset;
        for (size_t j = 0; j < t->numel; j++) {
            if (strncmp(t->name, "ln_", 3) == 0)
                assert_near(v[j], strstr(t->name, "weight") ? 1 : 0, 0);
            else if (strstr(t->name, ".bias"))
                assert_near(v[j], 0, 0);
            else
                assert_true(fabsf(v[j]) <= sqrtf(6.0f / (float)t->fan_in));
        }
    }
    char fa[17], fb[17], fc[17];
    amc_connector_fingerprint(a, fa);
    amc_connector_fingerprint(b, fb);
    amc_connector_fingerprint(c, fc);
    assert_string_equal(fa, fb);
    assert_string_not_equal(fa, fc);
    amc_connector_free(a);
    amc_connector_free(b);
    amc_connector_free(c);
}

/* ---------------------------------------------------------------- naive reference forward */

static double gelu(double x)
{
    return 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
}

/* y [n_out] = W x + b in double. */
static void ref_linear(double *y, const double *x, const amc_linear *l, int n_in, int n_out)
{
    for (int o = 0; o < n_out; o++) {
        double s = (double)l->b[o];
        for (int i = 0; i < n_in; i++)
            s += (double)l->w[(size_t)o * n_in + i] * x[i];
        y[o] = s;
    }
}

/* One token of one branch: o = GELU(LN(sum_topk p_j Expert_j(u))) + u, every expert computed. */
static void ref_branch_token(double *o, const double *h, const amc_connector *conn, int branch)
{
    const amc_config *cfg = &conn->cfg;
    const amc_params *p = &conn->p;
    const int H = cfg->hidden, E = cfg->n_experts;
    double u[64], logits[AMC_MAX_EXPERTS], z[64], g[64], y[64], moe[64] = {0};
    const float *task = branch == AMC_BRANCH_REG ? p->task_reg : p->task_cl;

    for (int j = 0; j < H; j++)
        u[j] = h[j] + (double)task[j];
    ref_linear(logits, u, &p->gate, H, E);
    double max = logits[0], sum = 0;
    for (int e = 1; e < E; e++)
        max = fmax(max, logits[e]);
    for (int e = 0; e < E; e++)
        sum += exp(logits[e] - max);
    int chosen[AMC_MAX_EXPERTS] = {0};
    for (int r = 0; r < cfg->top_k; r++) {
        int best = -1;
        for (int e = 0; e < E; e++)
            if (!chosen[e] && (best < 0 || logits[e] > logits[best]))
                best = e;
        chosen[best] = 1;
    }
    for (int e = 0; e < E; e++) {
        if (!chosen[e])
            continue;
        double weight = exp(logits[e] - max) / sum;
        ref_linear(z, u, &p->experts[e].fc1, H, H);
        for (int j = 0; j < H; j++)
            g[j] = gelu(z[j]);
        ref_linear(y, g, &p->experts[e].fc2, H, H);
        for (int j = 0; j < H; j++)
            moe[j] += weight * y[j];
    }
    double mean = 0, var = 0;
    for (int j = 0; j < H; j++)
        mean += moe[j] / H;
    for (int j = 0; j < H; j++)
        var += (moe[j] - mean) * (moe[j] - mean) / H;
    const float *w = branch == AMC_BRANCH_REG ? p->ln_reg_w : p->ln_cl_w;
    const float *b = branch == AMC_BRANCH_REG ? p->ln_reg_b : p->ln_cl_b;
    for (int j = 0; j < H; j++)
        o[j] = gelu((moe[j] - mean) / sqrt(var + (double)cfg->ln_eps) * (double)w[j] + (double)b[j]) + u[j];
}

/* Reference of amc_connector_project for one item of seq tokens. */
static void ref_project(double *out, const amc_connector *conn, amc_space space, int src,
                        int tgt, const float *x, int seq)
{
    const amc_config *cfg = &conn->cfg;
    const int H = cfg->hidden, d = cfg->modalities[src].dim;
    double xin[64], h[64], o[64], pooled[64] = {0};

    if (space == AMC_SPACE_TARGET) {
        double mean[64] = {0};
        for (int s = 0; s < seq; s++)
            for (int j = 0; j < d; j++)
                mean[j] += (double)x[s * d + j] / seq;
        ref_linear(out, mean, &conn->p.tgt_proj[src], d, cfg->latent);
    } else {
        int dir = amc_config_direction(cfg, src, tgt);
        int branch = space == AMC_SPACE_PREDICTIVE ? AMC_BRANCH_REG : AMC_BRANCH_CL;
        for (int s = 0; s < seq; s++) {
            for (int j = 0; j < d; j++)
                xin[j] = (double)x[s * d + j] + (double)conn->p.dir_emb[dir][j];
            ref_linear(h, xin, &conn->p.in_proj[src], d, H);
            for (int j = 0; j < H; j++)
                h[j] = gelu(h[j]);
            ref_branch_token(o, h, conn, branch);
            for (int j = 0; j < H; j++)
                pooled[j] += o[j] / seq;
        }
        const amc_linear *head = branch == AMC_BRANCH_REG ? &conn->p.head_reg[dir]
                                                          : &conn->p.head_cl[dir];
        ref_linear(out, pooled, head, H, amc_connector_out_dim(conn, space, src, tgt));
        if (space == AMC_SPACE_PREDICTIVE)
            return;
    }
    double ss = 0;
    for (int j = 0; j < cfg->latent; j++)
        ss += out[j] * out[j];
    for (int j = 0; j < cfg->latent; j++)
        out[j] /= sqrt(ss);
}

static void fill_random(float *x, size_t n, uint64_t seed)
{
    amc_rng rng;
    amc_rng_seed(&rng, seed);
    for (size_t i = 0; i < n; i++)
        x[i] = 2.0f * amc_rng_uniform(&rng) - 1.0f;
}

/* Projects a batch and compares every row with the reference. */
static void check_against_reference(const char *json, amc_space space, int n, int seq)
{
    amc_connector *conn = make_connector(json, 3);
    amc_workspace *ws = amc_workspace_new();
    amc_error err = {0};
    const int src = 0, tgt = 1;
    const int d = conn->cfg.modalities[src].dim;
    const int out_dim = amc_connector_out_dim(conn, space, src, tgt);
    float *x = malloc(sizeof(float) * (size_t)n * seq * d);
    float *out = malloc(sizeof(float) * (size_t)n * out_dim);
    double want[64];

    fill_random(x, (size_t)n * seq * d, 11);
    assert_int_equal(amc_connector_project(conn, ws, space, src, tgt, x, n, seq, out, &err),
                     AMC_OK);
    for (int i = 0; i < n; i++) {
        ref_project(want, conn, space, src, tgt, x + (size_t)i * seq * d, seq);
        for (int j = 0; j < out_dim; j++)
            assert_near(out[(size_t)i * out_dim + j], want[j], 1e-4);
    }
    free(x);
    free(out);
    amc_workspace_free(ws);
    amc_connector_free(conn);
}

static void forward_matches_reference(void **state)
{
    (void)state;
    check_against_reference(small_config, AMC_SPACE_CONTRASTIVE, 9, 1);
    check_against_reference(small_config, AMC_SPACE_PREDICTIVE, 9, 1);
    check_against_reference(small_config, AMC_SPACE_TARGET, 9, 1);
}

static void forward_tokens_match_reference(void **state)
{
    (void)state;
    check_against_reference(small_config, AMC_SPACE_CONTRASTIVE, 4, 3);
    check_against_reference(small_config, AMC_SPACE_PREDICTIVE, 4, 3);
    check_against_reference(small_config, AMC_SPACE_TARGET, 4, 3);
}

static void routing_edge_cases(void **state)
{
    (void)state;
    /* E = 1 (an MLP connector), k = 1 of many, and k = E (dense mixture) */
    const char *configs[] = {
        "{\"modalities\": [{\"name\": \"a\", \"dim\": 5}, {\"name\": \"b\", \"dim\": 3}],"
        " \"hidden\": 6, \"latent\": 4, \"experts\": 1, \"top_k\": 1}",
        "{\"modalities\": [{\"name\": \"a\", \"dim\": 5}, {\"name\": \"b\", \"dim\": 3}],"
        " \"hidden\": 6, \"latent\": 4, \"experts\": 5, \"top_k\": 1}",
        "{\"modalities\": [{\"name\": \"a\", \"dim\": 5}, {\"name\": \"b\", \"dim\": 3}],"
        " \"hidden\": 6, \"latent\": 4, \"experts\": 5, \"top_k\": 5}",
    };
    for (size_t i = 0; i < sizeof configs / sizeof configs[0]; i++) {
        check_against_reference(configs[i], AMC_SPACE_CONTRASTIVE, 7, 2);
        check_against_reference(configs[i], AMC_SPACE_PREDICTIVE, 7, 1);
    }
}

static void routing_ties_pick_lower_experts(void **state)
{
    (void)state;
    amc_connector *conn = make_connector(small_config, 5);
    amc_workspace *ws = amc_workspace_new();
    amc_trace tr;
    float x[5 * 3];

    /* A zero gate makes every probability 1/E: experts 0 and 1 must be chosen, weight 1/4 each. */
    memset(conn->p.gate.w, 0, sizeof(float) * 4 * 6);
    fill_random(x, 15, 2);
    assert_int_equal(amc_forward(conn, ws, &tr, 0, x, 3, 1, AMC_BRANCH_BIT(AMC_BRANCH_CL), NULL,
                                 NULL),
                     AMC_OK);
    const amc_branch_trace *br = &tr.br[AMC_BRANCH_CL];
    for (int t = 0; t < 3; t++) {
        assert_int_equal(br->sel[t * 2], 0);
        assert_int_equal(br->sel[t * 2 + 1], 1);
        assert_near(br->probs[t * 4], 0.25, 1e-7);
    }
    assert_int_equal(br->offsets[1] - br->offsets[0], 3);
    assert_int_equal(br->offsets[2] - br->offsets[1], 3);
    assert_int_equal(br->offsets[4] - br->offsets[2], 0);
    amc_workspace_free(ws);
    amc_connector_free(conn);
}

static void batch_equals_single_items(void **state)
{
    (void)state;
    amc_connector *conn = make_connector(small_config, 9);
    amc_workspace *ws = amc_workspace_new();
    float x[6 * 5], batch[6 * 4], one[4];

    fill_random(x, 30, 4);
    assert_int_equal(amc_connector_project(conn, ws, AMC_SPACE_CONTRASTIVE, 0, 1, x, 6, 1, batch,
                                           NULL),
                     AMC_OK);
    for (int i = 0; i < 6; i++) {
        assert_int_equal(amc_connector_project(conn, ws, AMC_SPACE_CONTRASTIVE, 0, 1, x + i * 5,
                                               1, 1, one, NULL),
                         AMC_OK);
        for (int j = 0; j < 4; j++)
            assert_near(one[j], batch[i * 4 + j], 1e-6);
    }
    amc_workspace_free(ws);
    amc_connector_free(conn);
}

static void dropout_only_with_rng(void **state)
{
    (void)state;
    amc_connector *conn = make_connector(small_config, 9);
    amc_workspace *ws = amc_workspace_new();
    amc_trace tr;
    amc_rng rng;
    float x[4 * 5];

    fill_random(x, 20, 6);
    amc_rng_seed(&rng, 1);
    assert_int_equal(amc_forward(conn, ws, &tr, 0, x, 4, 1, AMC_BRANCH_BIT(AMC_BRANCH_REG), &rng,
                                 NULL),
                     AMC_OK);
    const amc_branch_trace *br = &tr.br[AMC_BRANCH_REG];
    assert_non_null(br->mask1);
    size_t zeros = 0, count = (size_t)4 * 2 * 6;
    for (size_t i = 0; i < count; i++) {
        assert_true(br->mask1[i] == 0.0f || fabsf(br->mask1[i] - 1.0f / 0.9f) < 1e-6f);
        zeros += br->mask1[i] == 0.0f;
    }
    assert_true(zeros < count / 2);
    assert_int_equal(amc_forward(conn, ws, &tr, 0, x, 4, 1, AMC_BRANCH_BIT(AMC_BRANCH_REG), NULL,
                                 NULL),
                     AMC_OK);
    assert_null(tr.br[AMC_BRANCH_REG].mask1);
    amc_workspace_free(ws);
    amc_connector_free(conn);
}

static void project_rejects_bad_arguments(void **state)
{
    (void)state;
    const char *json = "{\"modalities\": [{\"name\": \"a\", \"dim\": 5}, {\"name\": \"b\", \"dim\": 3},"
                       " {\"name\": \"c\", \"dim\": 2}], \"directions\": [[\"a\", \"b\"]],"
                       " \"hidden\": 6, \"latent\": 4, \"experts\": 2, \"top_k\": 1}";
    amc_connector *conn = make_connector(json, 1);
    amc_workspace *ws = amc_workspace_new();
    amc_error err = {0};
    float x[10] = {0}, out[8];

    assert_int_equal(amc_connector_project(conn, ws, AMC_SPACE_CONTRASTIVE, 1, 0, x, 1, 1, out,
                                           &err),
                     AMC_EINVAL);
    assert_non_null(strstr(err.msg, "no direction b->a"));
    assert_int_equal(amc_connector_project(conn, ws, AMC_SPACE_CONTRASTIVE, 0, 1, x, 0, 1, out,
                                           &err),
                     AMC_EINVAL);
    assert_int_equal(amc_connector_project(conn, ws, AMC_SPACE_TARGET, 7, 0, x, 1, 1, out, &err),
                     AMC_EINVAL);
    /* the target space needs no direction */
    assert_int_equal(amc_connector_project(conn, ws, AMC_SPACE_TARGET, 2, -1, x, 1, 1, out, &err),
                     AMC_OK);
    amc_workspace_free(ws);
    amc_connector_free(conn);
}

static void input_mean_centres_and_normalises(void **state)
{
    (void)state;
    amc_connector *conn = make_connector(small_config, 4);
    amc_workspace *ws = amc_workspace_new();
    amc_error err = {0};
    float x[3 * 2 * 5], prepared[3 * 2 * 5], mean[5], want[3 * 7], got[3 * 7];

    fill_random(x, 30, 8);
    fill_random(mean, 5, 9);
    /* the preprocessing by hand: centre each token, then scale it to unit length */
    for (int t = 0; t < 6; t++) {
        double ss = 0;
        for (int j = 0; j < 5; j++) {
            prepared[t * 5 + j] = x[t * 5 + j] - mean[j];
            ss += (double)prepared[t * 5 + j] * (double)prepared[t * 5 + j];
        }
        for (int j = 0; j < 5; j++)
            prepared[t * 5 + j] = (float)((double)prepared[t * 5 + j] / sqrt(ss));
    }
    for (int space = AMC_SPACE_CONTRASTIVE; space <= AMC_SPACE_TARGET; space++) {
        int dim = amc_connector_out_dim(conn, (amc_space)space, 0, 1);
        assert_int_equal(amc_connector_project(conn, ws, (amc_space)space, 0, 1, prepared, 3, 2,
                                               want, &err),
                         AMC_OK);
        assert_int_equal(amc_connector_set_input_mean(conn, 0, mean, &err), AMC_OK);
        assert_int_equal(amc_connector_project(conn, ws, (amc_space)space, 0, 1, x, 3, 2, got,
                                               &err),
                         AMC_OK);
        for (int i = 0; i < 3 * dim; i++)
            assert_near(got[i], want[i], 1e-5);
        assert_int_equal(amc_connector_set_input_mean(conn, 0, NULL, &err), AMC_OK);
        assert_null(conn->input_mean[0]);
    }
    assert_int_equal(amc_connector_set_input_mean(conn, 5, mean, &err), AMC_EINVAL);
    amc_workspace_free(ws);
    amc_connector_free(conn);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(config_defaults_every_pair),
        cmocka_unit_test(config_round_trips_json),
        cmocka_unit_test(config_rejects_bad_input),
        cmocka_unit_test(layout_names_and_shapes),
        cmocka_unit_test(init_is_seeded_and_bounded),
        cmocka_unit_test(forward_matches_reference),
        cmocka_unit_test(forward_tokens_match_reference),
        cmocka_unit_test(routing_edge_cases),
        cmocka_unit_test(routing_ties_pick_lower_experts),
        cmocka_unit_test(batch_equals_single_items),
        cmocka_unit_test(dropout_only_with_rng),
        cmocka_unit_test(project_rejects_bad_arguments),
        cmocka_unit_test(input_mean_centres_and_normalises),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
