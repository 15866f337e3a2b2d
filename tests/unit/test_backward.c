/* Finite-difference checks of every backward kernel, of the losses and of the whole connector
 * (loss -> every parameter).
 *
 * The forward pass runs in float32, so each check uses central differences with a step large
 * enough for float rounding to stay small against it, accumulates the scalar probe in double,
 * and compares whole gradient tensors by relative error ||num - ana|| / (||num|| + ||ana||). A
 * wrong gradient gives errors of order 1; the bounds sit well below that. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/backward.h"
#include "core/connector.h"
#include "core/loss.h"
#include "core/mat.h"
#include "core/objective.h"
#include "core/rng.h"
#include "tests/unit/testutil.h"

#define FD_EPS 2e-3f
#define REL_TOL 1e-2

static void fill_uniform(float *x, size_t n, float lo, float hi, amc_rng *rng)
{
    for (size_t i = 0; i < n; i++)
        x[i] = lo + (hi - lo) * amc_rng_uniform(rng);
}

static double dot_d(const float *a, const float *b, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += (double)a[i] * (double)b[i];
    return s;
}

/* ||num - ana|| / (||num|| + ||ana|| + tiny) */
static double rel_error(const double *num, const float *ana, size_t n)
{
    double diff = 0.0, a = 0.0, b = 0.0;
    for (size_t i = 0; i < n; i++) {
        diff += (num[i] - (double)ana[i]) * (num[i] - (double)ana[i]);
        a += num[i] * num[i];
        b += (double)ana[i] * (double)ana[i];
    }
    return sqrt(diff) / (sqrt(a) + sqrt(b) + 1e-12);
}

static void assert_rel(const char *what, const double *num, const float *ana, size_t n,
                       double tol)
{
    double err = rel_error(num, ana, n);
    if (!(err <= tol)) {
        print_error("%s: relative gradient error %.3g > %.3g\n", what, err, tol);
        fail();
    }
}

/* A scalar probe of an op: probe(ctx) = sum(r * op(inputs)), in double. */
typedef double (*probe_fn)(void *ctx);

/* Central differences of probe with respect to every element of x [n]. */
static double *numeric_grad(probe_fn probe, void *ctx, float *x, size_t n, float eps)
{
    double *g = malloc(sizeof(double) * n);
    assert_non_null(g);
    for (size_t i = 0; i < n; i++) {
        float keep = x[i];
        x[i] = keep + eps;
        double up = probe(ctx);
        x[i] = keep - eps;
        double down = probe(ctx);
        x[i] = keep;
        g[i] = (up - down) / (2.0 * (double)eps);
    }
    return g;
}

/* ---------------------------------------------------------------- kernels */

typedef struct op_ctx {
    int N, C, n_out, seq;
    float *x, *w, *b, *r, *y;
    float *mean, *rstd, *norms, *mask;
} op_ctx;

static double probe_linear(void *p)
{
    op_ctx *c = p;
    amc_linear_forward(c->y, c->x, c->w, c->b, c->N, c->C, c->n_out, 0);
    return dot_d(c->y, c->r, (size_t)c->N * c->n_out);
}

static void linear_backward_matches_fd(void **state)
{
    (void)state;
    amc_rng rng;
    amc_rng_seed(&rng, 1);
    op_ctx c = {.N = 5, .C = 4, .n_out = 3};
    float x[20], w[12], b[3], r[15], y[15], dx[20], dw[12] = {0}, db[3] = {0};
    c.x = x, c.w = w, c.b = b, c.r = r, c.y = y;
    fill_uniform(x, 20, -1, 1, &rng);
    fill_uniform(w, 12, -1, 1, &rng);
    fill_uniform(b, 3, -1, 1, &rng);
    fill_uniform(r, 15, -1, 1, &rng);

    amc_linear_backward(dx, dw, db, r, x, w, 5, 4, 3, 0);
    double *gx = numeric_grad(probe_linear, &c, x, 20, FD_EPS);
    double *gw = numeric_grad(probe_linear, &c, w, 12, FD_EPS);
    double *gb = numeric_grad(probe_linear, &c, b, 3, FD_EPS);
    assert_rel("linear dx", gx, dx, 20, REL_TOL);
    assert_rel("linear dw", gw, dw, 12, REL_TOL);
    assert_rel("linear db", gb, db, 3, REL_TOL);

    /* parameter gradients accumulate; dx accumulates on request */
    float dx2[20];
    memcpy(dx2, dx, sizeof dx);
    amc_linear_backward(dx2, dw, db, r, x, w, 5, 4, 3, 1);
    for (int i = 0; i < 20; i++)
        assert_near(dx2[i], 2 * dx[i], 1e-5);
    for (int i = 0; i < 3; i++)
        assert_near(db[i], 2 * gb[i], 1e-2);
    free(gx), free(gw), free(gb);
}

static double probe_gelu(void *p)
{
    op_ctx *c = p;
    amc_gelu_forward(c->y, c->x, (size_t)c->N);
    return dot_d(c->y, c->r, (size_t)c->N);
}

static void gelu_backward_matches_fd(void **state)
{
    (void)state;
    amc_rng rng;
    amc_rng_seed(&rng, 2);
    float x[40], r[40], y[40], dx[40];
    op_ctx c = {.N = 40, .x = x, .r = r, .y = y};
    fill_uniform(x, 40, -4, 4, &rng);
    fill_uniform(r, 40, -1, 1, &rng);
    amc_gelu_backward(dx, r, x, 40);
    double *g = numeric_grad(probe_gelu, &c, x, 40, FD_EPS);
    assert_rel("gelu", g, dx, 40, REL_TOL);
    /* spot value: GELU'(0) = 0.5 */
    float zero = 0, one = 1, d;
    amc_gelu_backward(&d, &one, &zero, 1);
    assert_near(d, 0.5, 1e-7);
    free(g);
}

static double probe_layernorm(void *p)
{
    op_ctx *c = p;
    amc_layernorm_forward(c->y, c->mean, c->rstd, c->x, c->w, c->b, c->N, c->C, 1e-5f);
    return dot_d(c->y, c->r, (size_t)c->N * c->C);
}

static void layernorm_backward_matches_fd(void **state)
{
    (void)state;
    amc_rng rng;
    amc_rng_seed(&rng, 3);
    enum { N = 3, C = 6 };
    float x[N * C], w[C], b[C], r[N * C], y[N * C], mean[N], rstd[N];
    float dx[N * C], dw[C] = {0}, db[C] = {0};
    op_ctx c = {.N = N, .C = C, .x = x, .w = w, .b = b, .r = r, .y = y, .mean = mean,
                .rstd = rstd};
    fill_uniform(x, N * C, -2, 2, &rng);
    fill_uniform(w, C, 0.5f, 1.5f, &rng);
    fill_uniform(b, C, -1, 1, &rng);
    fill_uniform(r, N * C, -1, 1, &rng);

    probe_layernorm(&c);
    amc_layernorm_backward(dx, dw, db, r, x, mean, rstd, w, N, C);
    double *gx = numeric_grad(probe_layernorm, &c, x, N * C, FD_EPS);
    double *gw = numeric_grad(probe_layernorm, &c, w, C, FD_EPS);
    double *gb = numeric_grad(probe_layernorm, &c, b, C, FD_EPS);
    assert_rel("layernorm dx", gx, dx, N * C, REL_TOL);
    assert_rel("layernorm dw", gw, dw, C, REL_TOL);
    assert_rel("layernorm db", gb, db, C, REL_TOL);
    free(gx), free(gw), free(gb);
}

static double probe_softmax(void *p)
{
    op_ctx *c = p;
    amc_softmax_rows(c->y, c->x, c->N, c->C);
    return dot_d(c->y, c->r, (size_t)c->N * c->C);
}

static void softmax_backward_matches_fd(void **state)
{
    (void)state;
    amc_rng rng;
    amc_rng_seed(&rng, 4);
    enum { N = 3, C = 5 };
    float x[N * C], r[N * C], y[N * C], dx[N * C];
    op_ctx c = {.N = N, .C = C, .x = x, .r = r, .y = y};
    fill_uniform(x, N * C, -3, 3, &rng);
    fill_uniform(r, N * C, -1, 1, &rng);
    probe_softmax(&c);
    amc_softmax_backward(dx, r, y, N, C);
    double *g = numeric_grad(probe_softmax, &c, x, N * C, FD_EPS);
    assert_rel("softmax", g, dx, N * C, REL_TOL);
    free(g);
}

static double probe_mean(void *p)
{
    op_ctx *c = p;
    amc_mean_tokens(c->y, c->x, c->N, c->seq, c->C);
    return dot_d(c->y, c->r, (size_t)c->N * c->C);
}

static void mean_tokens_backward_matches_fd(void **state)
{
    (void)state;
    amc_rng rng;
    amc_rng_seed(&rng, 5);
    enum { N = 2, S = 3, C = 4 };
    float x[N * S * C], r[N * C], y[N * C], dx[N * S * C];
    op_ctx c = {.N = N, .seq = S, .C = C, .x = x, .r = r, .y = y};
    fill_uniform(x, N * S * C, -1, 1, &rng);
    fill_uniform(r, N * C, -1, 1, &rng);
    amc_mean_tokens_backward(dx, r, N, S, C);
    double *g = numeric_grad(probe_mean, &c, x, N * S * C, FD_EPS);
    assert_rel("mean tokens", g, dx, N * S * C, REL_TOL);
    free(g);
}

static double probe_l2(void *p)
{
    op_ctx *c = p;
    memcpy(c->y, c->x, sizeof(float) * (size_t)c->N * c->C);
    amc_l2_normalise_rows(c->y, c->norms, c->N, c->C);
    return dot_d(c->y, c->r, (size_t)c->N * c->C);
}

static void l2_normalise_backward_matches_fd(void **state)
{
    (void)state;
    amc_rng rng;
    amc_rng_seed(&rng, 6);
    enum { N = 3, C = 5 };
    float x[N * C], r[N * C], y[N * C], norms[N], dx[N * C];
    op_ctx c = {.N = N, .C = C, .x = x, .r = r, .y = y, .norms = norms};
    fill_uniform(x, N * C, -2, 2, &rng);
    fill_uniform(r, N * C, -1, 1, &rng);
    probe_l2(&c);
    amc_l2_normalise_backward(dx, r, y, norms, N, C);
    double *g = numeric_grad(probe_l2, &c, x, N * C, FD_EPS);
    assert_rel("l2 normalise", g, dx, N * C, REL_TOL);
    free(g);
}

static void dropout_backward_scales_by_mask(void **state)
{
    (void)state;
    const float dy[4] = {1, -2, 3, 4}, mask[4] = {0, 1.25f, 1.25f, 0};
    float dx[4];
    amc_dropout_backward(dx, dy, mask, 4);
    assert_near(dx[0], 0, 0);
    assert_near(dx[1], -2.5, 1e-7);
    assert_near(dx[2], 3.75, 1e-7);
    assert_near(dx[3], 0, 0);
}

/* ---------------------------------------------------------------- losses */

typedef struct loss_ctx {
    int N, C;
    float *a, *b, *scratch;
    amc_reg_loss kind;
    float tau;
} loss_ctx;

static double probe_reg(void *p)
{
    loss_ctx *c = p;
    return amc_loss_regression(NULL, c->a, c->b, c->N, c->C, c->kind, 1.0f, 1.0f);
}

static void regression_losses_match_fd(void **state)
{
    (void)state;
    amc_rng rng;
    amc_rng_seed(&rng, 7);
    enum { N = 4, C = 5 };
    float a[N * C], b[N * C], d[N * C];
    fill_uniform(a, N * C, -3, 3, &rng);
    fill_uniform(b, N * C, -3, 3, &rng);
    for (int kind = 0; kind < 2; kind++) {
        loss_ctx c = {.N = N, .C = C, .a = a, .b = b, .kind = (amc_reg_loss)kind};
        amc_loss_regression(d, a, b, N, C, c.kind, 1.0f, 1.0f);
        double *g = numeric_grad(probe_reg, &c, a, N * C, FD_EPS);
        assert_rel(kind ? "l2 loss" : "smooth l1 loss", g, d, N * C, REL_TOL);
        free(g);
    }
    /* hand values: |d| = 0.5 -> 0.125; |d| = 3 -> 2.5 */
    const float p[2] = {0.5f, 3}, t[2] = {0, 0};
    assert_near(amc_loss_regression(NULL, p, t, 1, 2, AMC_REG_SMOOTH_L1, 1, 1),
                (0.125 + 2.5) / 2, 1e-7);
    assert_near(amc_loss_regression(NULL, p, t, 1, 2, AMC_REG_L2, 1, 1), (0.25 + 9) / 2, 1e-6);
}

static double probe_nce(void *p)
{
    loss_ctx *c = p;
    return amc_loss_info_nce(NULL, NULL, c->a, c->b, c->N, c->C, c->tau, 1.0f, c->scratch);
}

static void info_nce_matches_fd(void **state)
{
    (void)state;
    amc_rng rng;
    amc_rng_seed(&rng, 8);
    enum { N = 5, C = 4 };
    float q[N * C], k[N * C], dq[N * C], dk[N * C], scratch[2 * N * N];
    fill_uniform(q, N * C, -1, 1, &rng);
    fill_uniform(k, N * C, -1, 1, &rng);
    loss_ctx c = {.N = N, .C = C, .a = q, .b = k, .scratch = scratch, .tau = 0.5f};
    double loss = amc_loss_info_nce(dq, dk, q, k, N, C, c.tau, 1.0f, scratch);
    double *gq = numeric_grad(probe_nce, &c, q, N * C, FD_EPS);
    double *gk = numeric_grad(probe_nce, &c, k, N * C, FD_EPS);
    assert_rel("info_nce dq", gq, dq, N * C, REL_TOL);
    assert_rel("info_nce dk", gk, dk, N * C, REL_TOL);
    free(gq), free(gk);

    /* identical orthogonal pairs at a low temperature: the loss goes to 0; with every logit
     * equal it is log N */
    float e[2 * 2] = {1, 0, 0, 1}, z[2 * 2] = {0, 0, 0, 0};
    assert_true(loss > 0);
    assert_near(amc_loss_info_nce(NULL, NULL, e, e, 2, 2, 0.01f, 1, scratch), 0, 1e-6);
    assert_near(amc_loss_info_nce(NULL, NULL, z, z, 2, 2, 0.5f, 1, scratch), log(2.0), 1e-6);
}

/* ---------------------------------------------------------------- whole connector */

static amc_connector *small_connector(int seq_tokens_experts, float dropout, uint64_t seed)
{
    char json[512];
    snprintf(json, sizeof json,
             "{\"modalities\": [{\"name\": \"text\", \"dim\": 5}, {\"name\": \"image\", "
             "\"dim\": 6}], \"hidden\": 8, \"latent\": 7, \"experts\": %d, \"top_k\": 2, "
             "\"dropout\": %g}",
             seq_tokens_experts, (double)dropout);
    amc_config cfg;
    amc_error err;
    if (amc_config_from_json(&cfg, json, &err) != AMC_OK)
        fail_msg("config: %s", err.msg);
    amc_connector *conn;
    assert_int_equal(amc_connector_create(&conn, &cfg, &err), AMC_OK);
    amc_connector_init(conn, seed);
    /* non-trivial biases and LayerNorm parameters, so their gradients are exercised fully */
    amc_rng rng;
    amc_rng_seed(&rng, seed + 100);
    for (int t = 0; t < conn->n_tensors; t++) {
        const amc_tensor_info *ti = &conn->tensors[t];
        if (ti->fan_in == 0 || strstr(ti->name, ".bias") != NULL)
            for (size_t i = 0; i < ti->numel; i++)
                conn->block[ti->offset + i] += 0.2f * (amc_rng_uniform(&rng) - 0.5f);
    }
    return conn;
}

typedef struct conn_ctx {
    amc_connector *conn;
    amc_objective_ws *ws;
    amc_objective obj;
    int dir, n, seq_src, seq_tgt;
    const float *x_src, *x_tgt;
    uint64_t dropout_seed;    /* 0: dropout off */
} conn_ctx;

static double probe_connector(void *p)
{
    conn_ctx *c = p;
    amc_rng rng;
    amc_rng_seed(&rng, c->dropout_seed);   /* the same masks on every evaluation */
    amc_loss_terms terms;
    amc_error err;
    amc_status rc = amc_objective_step(c->conn, c->ws, &c->obj, c->dir, c->x_src, c->seq_src,
                                       c->x_tgt, c->seq_tgt, c->n, c->dropout_seed ? &rng : NULL,
                                       1.0f, NULL, NULL, &terms, &err);
    if (rc != AMC_OK)
        fail_msg("objective: %s", err.msg);
    return terms.total;
}

/* Checks d(loss)/d(every parameter) of direction dir against central differences, tensor by
 * tensor. Returns the number of tensors with a non-zero gradient. */
static int check_connector(amc_connector *conn, const amc_objective *obj, int dir, int n,
                           int seq_src, int seq_tgt, uint64_t dropout_seed, uint64_t data_seed)
{
    const amc_config *cfg = &conn->cfg;
    const int d_s = cfg->modalities[cfg->directions[dir].src].dim;
    const int d_t = cfg->modalities[cfg->directions[dir].tgt].dim;
    float *xs = malloc(sizeof(float) * (size_t)n * seq_src * d_s);
    float *xt = malloc(sizeof(float) * (size_t)n * seq_tgt * d_t);
    float *grad_block = calloc(conn->n_params, sizeof(float));
    unsigned char *used = calloc((size_t)conn->n_tensors, 1);
    assert_non_null(xs), assert_non_null(xt), assert_non_null(grad_block), assert_non_null(used);
    amc_rng rng;
    amc_rng_seed(&rng, data_seed);
    fill_uniform(xs, (size_t)n * seq_src * d_s, -1, 1, &rng);
    fill_uniform(xt, (size_t)n * seq_tgt * d_t, -1, 1, &rng);

    conn_ctx c = {.conn = conn, .ws = amc_objective_ws_new(), .obj = *obj, .dir = dir, .n = n,
                  .seq_src = seq_src, .seq_tgt = seq_tgt, .x_src = xs, .x_tgt = xt,
                  .dropout_seed = dropout_seed};
    assert_non_null(c.ws);

    /* analytic gradient */
    amc_params grads;
    amc_params_point(conn, grad_block, &grads);
    amc_rng drop;
    amc_rng_seed(&drop, dropout_seed);
    amc_loss_terms terms;
    amc_error err;
    assert_int_equal(amc_objective_step(conn, c.ws, obj, dir, xs, seq_src, xt, seq_tgt, n,
                                        dropout_seed ? &drop : NULL, 1.0f, &grads, used, &terms,
                                        &err),
                     AMC_OK);
    assert_true(terms.reg > 0 && terms.cl > 0);

    /* numeric gradient, tensor by tensor */
    int nonzero = 0;
    for (int t = 0; t < conn->n_tensors; t++) {
        const amc_tensor_info *ti = &conn->tensors[t];
        float *w = conn->block + ti->offset;
        const float *ana = grad_block + ti->offset;
        double *num = numeric_grad(probe_connector, &c, w, ti->numel, FD_EPS);
        double num_norm = 0.0, ana_norm = 0.0;
        for (size_t i = 0; i < ti->numel; i++) {
            num_norm += num[i] * num[i];
            ana_norm += (double)ana[i] * (double)ana[i];
        }
        if (num_norm < 1e-14) {
            /* a tensor this direction does not use: both gradients are exactly zero */
            if (ana_norm != 0.0)
                fail_msg("%s: analytic gradient %.3g where the loss does not depend on it",
                         ti->name, sqrt(ana_norm));
            assert_int_equal(used[t], strncmp(ti->name, "experts.", 8) == 0 ? used[t] : 0);
        } else {
            nonzero++;
            assert_true(used[t]);
            assert_rel(ti->name, num, ana, ti->numel, 2e-2);
        }
        free(num);
    }
    amc_objective_ws_free(c.ws);
    free(xs), free(xt), free(grad_block), free(used);
    return nonzero;
}

static void connector_gradient_pooled(void **state)
{
    (void)state;
    amc_connector *conn = small_connector(4, 0.0f, 11);
    amc_objective obj = amc_objective_default();
    obj.tau = 0.2f;
    int touched = check_connector(conn, &obj, 0, 6, 1, 1, 0, 21);
    /* text->image: every tensor but the other direction's dir_emb and heads and the text
     * target projection */
    assert_int_equal(touched, conn->n_tensors - 9);
    touched = check_connector(conn, &obj, 1, 6, 1, 1, 0, 22);
    assert_int_equal(touched, conn->n_tensors - 9);
    amc_connector_free(conn);
}

static void connector_gradient_tokens_dropout(void **state)
{
    (void)state;
    amc_connector *conn = small_connector(4, 0.3f, 12);
    amc_objective obj = amc_objective_default();
    obj.tau = 0.3f;
    obj.alpha = 0.3f;
    check_connector(conn, &obj, 0, 4, 3, 2, 99, 23);
    obj.reg = AMC_REG_L2;
    check_connector(conn, &obj, 1, 4, 2, 1, 98, 24);
    amc_connector_free(conn);
}

static void connector_gradient_single_expert(void **state)
{
    (void)state;
    /* E = 2, k = 2: every expert on every token (the gate still matters via the weights) */
    char json[] = "{\"modalities\": [{\"name\": \"a\", \"dim\": 3}, {\"name\": \"b\", "
                  "\"dim\": 4}], \"hidden\": 6, \"latent\": 5, \"experts\": 2, \"top_k\": 2, "
                  "\"dropout\": 0}";
    amc_config cfg;
    amc_error err;
    assert_int_equal(amc_config_from_json(&cfg, json, &err), AMC_OK);
    amc_connector *conn;
    assert_int_equal(amc_connector_create(&conn, &cfg, &err), AMC_OK);
    amc_connector_init(conn, 5);
    amc_objective obj = amc_objective_default();
    obj.tau = 0.25f;
    check_connector(conn, &obj, 1, 5, 1, 1, 0, 31);
    amc_connector_free(conn);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(linear_backward_matches_fd),
        cmocka_unit_test(gelu_backward_matches_fd),
        cmocka_unit_test(layernorm_backward_matches_fd),
        cmocka_unit_test(softmax_backward_matches_fd),
        cmocka_unit_test(mean_tokens_backward_matches_fd),
        cmocka_unit_test(l2_normalise_backward_matches_fd),
        cmocka_unit_test(dropout_backward_scales_by_mask),
        cmocka_unit_test(regression_losses_match_fd),
        cmocka_unit_test(info_nce_matches_fd),
        cmocka_unit_test(connector_gradient_pooled),
        cmocka_unit_test(connector_gradient_tokens_dropout),
        cmocka_unit_test(connector_gradient_single_expert),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
