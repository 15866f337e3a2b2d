/* The optimiser, the schedules, the data handling and the training loop: exact resume, learning
 * on synthetic aligned data, the alternating order, and damaged state files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/connector.h"
#include "core/dataset.h"
#include "core/model_io.h"
#include "core/optim.h"
#include "core/rng.h"
#include "core/trainer.h"
#include "tests/unit/testutil.h"

/* ---------------------------------------------------------------- fixtures */

static amc_connector *make_connector(int experts, int top_k, uint64_t seed)
{
    char json[400];
    snprintf(json, sizeof json,
             "{\"modalities\": [{\"name\": \"text\", \"dim\": 12}, {\"name\": \"image\", "
             "\"dim\": 20}], \"hidden\": 24, \"latent\": 16, \"experts\": %d, \"top_k\": %d, "
             "\"dropout\": 0.1}", experts, top_k);
    amc_config cfg;
    amc_error err;
    if (amc_config_from_json(&cfg, json, &err) != AMC_OK)
        fail_msg("config: %s", err.msg);
    amc_connector *conn;
    assert_int_equal(amc_connector_create(&conn, &cfg, &err), AMC_OK);
    amc_connector_init(conn, seed);
    return conn;
}

/* n aligned pairs: text = A z + noise, image = tanh(B z) + noise for a shared latent z [6]. */
static void make_pairs(amc_pairs *p, int n, uint64_t seed)
{
    amc_rng rng;
    amc_rng_seed(&rng, seed);
    float A[6 * 12], B[6 * 20];
    for (int i = 0; i < 6 * 12; i++)
        A[i] = 2 * amc_rng_uniform(&rng) - 1;
    for (int i = 0; i < 6 * 20; i++)
        B[i] = 2 * amc_rng_uniform(&rng) - 1;
    memset(p, 0, sizeof *p);
    p->n_modalities = 2;
    p->rows = n;
    p->seq[0] = p->seq[1] = 1;
    p->dim[0] = 12;
    p->dim[1] = 20;
    p->data[0] = malloc(sizeof(float) * (size_t)n * 12);
    p->data[1] = malloc(sizeof(float) * (size_t)n * 20);
    assert_non_null(p->data[0]);
    assert_non_null(p->data[1]);
    for (int r = 0; r < n; r++) {
        float z[6];
        for (int k = 0; k < 6; k++)
            z[k] = 2 * amc_rng_uniform(&rng) - 1;
        for (int j = 0; j < 12; j++) {
            float s = 0.1f * (amc_rng_uniform(&rng) - 0.5f);
            for (int k = 0; k < 6; k++)
                s += z[k] * A[k * 12 + j];
            p->data[0][r * 12 + j] = s;
        }
        for (int j = 0; j < 20; j++) {
            float s = 0;
            for (int k = 0; k < 6; k++)
                s += z[k] * B[k * 20 + j];
            p->data[1][r * 20 + j] = tanhf(s) + 0.1f * (amc_rng_uniform(&rng) - 0.5f);
        }
    }
}

typedef struct tmp_paths {
    char dir[64];
    char best[96], last[96], state[96], log[96];
    amc_train_paths paths;
} tmp_paths;

static void tmp_paths_make(tmp_paths *t, const char *tag)
{
    snprintf(t->dir, sizeof t->dir, "/tmp/altmoe_train_XXXXXX");
    assert_non_null(mkdtemp(t->dir));
    snprintf(t->best, sizeof t->best, "%s/%s.safetensors", t->dir, tag);
    snprintf(t->last, sizeof t->last, "%s/%s.last.safetensors", t->dir, tag);
    snprintf(t->state, sizeof t->state, "%s/%s.state", t->dir, tag);
    snprintf(t->log, sizeof t->log, "%s/%s.loss", t->dir, tag);
    t->paths = (amc_train_paths){.best = t->best, .last = t->last, .state = t->state};
}

static void tmp_paths_remove(tmp_paths *t)
{
    unlink(t->best);
    unlink(t->last);
    unlink(t->state);
    unlink(t->log);
    rmdir(t->dir);
}

static amc_train_opts small_opts(void)
{
    amc_train_opts o = amc_train_opts_default();
    o.epochs = 4;
    o.batch = 32;
    o.log_every = 0;
    o.patience = 0;
    o.obj.tau = 0.1f;
    o.seed = 7;
    return o;
}

/* ---------------------------------------------------------------- optimiser */

static void adamw_matches_hand_update(void **state)
{
    (void)state;
    amc_connector *conn = make_connector(2, 1, 1);
    amc_adamw opt;
    amc_error err;
    assert_int_equal(amc_adamw_init(&opt, conn, &err), AMC_OK);
    float *grad = calloc(conn->n_params, sizeof(float));
    unsigned char *used = calloc((size_t)conn->n_tensors, 1);
    float *before = malloc(sizeof(float) * conn->n_params);
    memcpy(before, conn->block, sizeof(float) * conn->n_params);

    /* tensor 0 is a Linear weight (decayed), tensor 1 its bias (not decayed) */
    const amc_tensor_info *w = &conn->tensors[0], *b = &conn->tensors[1];
    assert_true(w->decay && !b->decay);
    for (size_t i = 0; i < conn->n_params; i++)
        grad[i] = 0.5f;
    used[0] = used[1] = 1;
    const double lr = 0.01, wd = 0.1;
    amc_adamw_step(&opt, conn, grad, used, (float)lr, (float)wd);

    /* first step: m = 0.05, v = 0.00025, mhat = 0.5, vhat = 0.25: p = p (1 - lr wd) - lr */
    double p0 = (double)before[w->offset];
    assert_near(conn->block[w->offset], p0 * (1 - lr * wd) - lr * 0.5 / (0.5 + 1e-8), 1e-6);
    assert_near(conn->block[b->offset], (double)before[b->offset] - lr * 0.5 / (0.5 + 1e-8), 1e-6);
    /* untouched tensors keep their weights and step counts */
    const amc_tensor_info *other = &conn->tensors[2];
    assert_memory_equal(conn->block + other->offset, before + other->offset,
                        sizeof(float) * other->numel);
    assert_int_equal(opt.steps[0], 1);
    assert_int_equal(opt.steps[2], 0);

    /* second step with the opposite gradient: m = 0.045 - 0.05 = -0.005 ... hand formula */
    for (size_t i = 0; i < conn->n_params; i++)
        grad[i] = -0.5f;
    double p1 = (double)conn->block[b->offset];
    amc_adamw_step(&opt, conn, grad, used, (float)lr, (float)wd);
    double m = 0.9 * 0.05 + 0.1 * -0.5, v = 0.999 * 0.00025 + 0.001 * 0.25;
    double mhat = m / (1 - 0.81), vhat = v / (1 - 0.999 * 0.999);
    assert_near(conn->block[b->offset], p1 - lr * mhat / (sqrt(vhat) + 1e-8), 1e-6);

    free(grad), free(used), free(before);
    amc_adamw_free(&opt);
    amc_connector_free(conn);
}

static void clip_and_schedules(void **state)
{
    (void)state;
    float g[4] = {3, 4, 0, 0};
    assert_near(amc_clip_grad_norm(g, 4, 1.0f), 5.0, 1e-9);
    assert_near(g[0], 0.6, 1e-6);
    assert_near(g[1], 0.8, 1e-6);
    float h[2] = {0.3f, 0.4f};
    amc_clip_grad_norm(h, 2, 1.0f);     /* below the limit: unchanged */
    assert_near(h[0], 0.3f, 0);

    amc_schedule_cfg s = {.lr_start = 1e-4f, .lr_peak = 1e-3f, .lr_final = 1e-5f,
                          .warmup_steps = 10, .total_steps = 110, .wd_start = 0.005f,
                          .wd_end = 0.2f};
    assert_near(amc_schedule_lr(&s, 0), 1e-4, 1e-9);
    assert_near(amc_schedule_lr(&s, 5), 5.5e-4, 1e-9);
    assert_near(amc_schedule_lr(&s, 10), 1e-3, 1e-9);
    assert_near(amc_schedule_lr(&s, 60), (1e-3 + 1e-5) / 2, 1e-9);
    assert_near(amc_schedule_lr(&s, 110), 1e-5, 1e-9);
    assert_near(amc_schedule_wd(&s, 0), 0.005, 1e-7);
    assert_near(amc_schedule_wd(&s, 55), (0.005 + 0.2) / 2, 1e-7);
    assert_near(amc_schedule_wd(&s, 110), 0.2, 1e-7);
}

/* ---------------------------------------------------------------- data */

static void pairs_reject_nan_rows_and_split(void **state)
{
    (void)state;
    amc_connector *conn = make_connector(2, 1, 1);
    float t[5 * 12] = {0}, im[5 * 20] = {0};
    im[3 * 20 + 7] = NAN;
    amc_npy arrays[2] = {{.ndim = 2, .shape = {5, 12, 1}, .data = t},
                         {.ndim = 2, .shape = {5, 20, 1}, .data = im}};
    const char *names[2] = {"text", "image"};
    amc_pairs p;
    amc_error err;
    assert_int_equal(amc_pairs_from_npy(&p, &conn->cfg, names, arrays, 2, &err), AMC_EINVAL);
    assert_non_null(strstr(err.msg, "row 3"));
    im[3 * 20 + 7] = 1;
    assert_int_equal(amc_pairs_from_npy(&p, &conn->cfg, names, arrays, 2, &err), AMC_OK);
    arrays[1].shape[0] = 4;    /* misaligned rows */
    amc_pairs q;
    assert_int_equal(amc_pairs_from_npy(&q, &conn->cfg, names, arrays, 2, &err), AMC_EINVAL);

    amc_pairs all, train, val;
    make_pairs(&all, 100, 3);
    assert_int_equal(amc_pairs_split(&all, 0.2, 9, &train, &val, &err), AMC_OK);
    assert_int_equal(train.rows, 80);
    assert_int_equal(val.rows, 20);
    /* every row lands in exactly one side: compare sums of the first feature */
    double s_all = 0, s_parts = 0;
    for (int r = 0; r < 100; r++)
        s_all += (double)all.data[0][r * 12];
    for (int r = 0; r < 80; r++)
        s_parts += (double)train.data[0][r * 12];
    for (int r = 0; r < 20; r++)
        s_parts += (double)val.data[0][r * 12];
    assert_near(s_parts, s_all, 1e-4);

    /* preprocessing: zero mean, unit rows, and a JSON round trip */
    amc_preprocess pre, back;
    assert_int_equal(amc_preprocess_fit(&pre, &train, &err), AMC_OK);
    char *json = amc_preprocess_to_json(&pre, &conn->cfg);
    assert_non_null(json);
    assert_int_equal(amc_preprocess_from_json(&back, &conn->cfg, json, &err), AMC_OK);
    for (int j = 0; j < 20; j++)
        assert_near(back.mean[1][j], pre.mean[1][j], 1e-6 * (1 + fabs((double)pre.mean[1][j])));
    amc_preprocess_apply(&back, &train);
    double norm = 0;
    for (int j = 0; j < 20; j++)
        norm += (double)(train.data[1][5 * 20 + j] * train.data[1][5 * 20 + j]);
    assert_near(norm, 1.0, 1e-5);

    free(json);
    amc_preprocess_free(&pre);
    amc_preprocess_free(&back);
    amc_pairs_free(&p);
    amc_pairs_free(&all);
    amc_pairs_free(&train);
    amc_pairs_free(&val);
    amc_connector_free(conn);
}

/* ---------------------------------------------------------------- training */

static void read_block(const char *path, float **block, size_t *n)
{
    amc_connector *c = NULL;
    amc_error err;
    if (amc_model_load(path, &c, NULL, &err) != AMC_OK)
        fail_msg("%s", err.msg);
    *n = c->n_params;
    *block = malloc(sizeof(float) * c->n_params);
    memcpy(*block, c->block, sizeof(float) * c->n_params);
    amc_connector_free(c);
}

/* Trains straight for all epochs, or in two parts split at stop_at steps, and returns the
 * final weights. */
static float *train_run(const amc_pairs *train, const amc_pairs *val, amc_schedule_kind kind,
                        int64_t stop_at, size_t *n)
{
    tmp_paths t;
    tmp_paths_make(&t, "m");
    amc_train_opts o = small_opts();
    o.schedule = kind;
    amc_train_result res;
    amc_error err;
    amc_connector *conn = make_connector(4, 2, 5);

    o.max_steps = stop_at;
    if (amc_train(conn, train, val, &o, &t.paths, NULL, 0, NULL, &res, &err) != AMC_OK)
        fail_msg("train: %s", err.msg);
    amc_connector_free(conn);
    if (stop_at > 0) {
        assert_true(res.reached_max_steps);
        assert_int_equal(res.steps, stop_at);
        /* a new process: the model comes back from the last checkpoint */
        assert_int_equal(amc_model_load(t.last, &conn, NULL, &err), AMC_OK);
        o.max_steps = 0;
        if (amc_train(conn, train, val, &o, &t.paths, NULL, 1, NULL, &res, &err) != AMC_OK)
            fail_msg("resume: %s", err.msg);
        amc_connector_free(conn);
    }
    assert_false(res.reached_max_steps);
    float *block;
    read_block(t.last, &block, n);
    tmp_paths_remove(&t);
    return block;
}

static void resume_is_bit_identical(void **state)
{
    (void)state;
    amc_pairs all, train, val;
    amc_error err;
    make_pairs(&all, 300, 11);
    assert_int_equal(amc_pairs_split(&all, 0.2, 1, &train, &val, &err), AMC_OK);
    /* 240 rows / 32 = 7 steps per epoch, 28 in all: split mid-epoch and at an epoch end */
    const amc_schedule_kind kinds[2] = {AMC_TRAIN_ALTERNATING, AMC_TRAIN_JOINT};
    for (int k = 0; k < 2; k++) {
        size_t n1, n2, n3;
        float *straight = train_run(&train, &val, kinds[k], 0, &n1);
        float *mid = train_run(&train, &val, kinds[k], 10, &n2);
        float *edge = train_run(&train, &val, kinds[k], 14, &n3);
        assert_int_equal(n1, n2);
        assert_memory_equal(straight, mid, sizeof(float) * n1);
        assert_memory_equal(straight, edge, sizeof(float) * n1);
        free(straight), free(mid), free(edge);
    }
    amc_pairs_free(&all), amc_pairs_free(&train), amc_pairs_free(&val);
}

static void training_learns_and_alternates(void **state)
{
    (void)state;
    amc_pairs all, train, val;
    amc_error err;
    make_pairs(&all, 600, 12);
    assert_int_equal(amc_pairs_split(&all, 0.2, 1, &train, &val, &err), AMC_OK);
    amc_connector *conn = make_connector(4, 2, 6);

    amc_recall_table before;
    assert_int_equal(amc_recall_table_eval(conn, &val, 1, &before, &err), AMC_OK);

    tmp_paths t;
    tmp_paths_make(&t, "learn");
    t.paths.loss_log = t.log;
    amc_train_opts o = small_opts();
    o.epochs = 30;
    amc_train_result res;
    assert_int_equal(amc_train(conn, &train, &val, &o, &t.paths, NULL, 0, NULL, &res, &err),
                     AMC_OK);
    assert_int_equal(res.epochs_run, 30);
    assert_true(res.best_epoch >= 1);
    /* 120 validation pairs: chance R@10 is 8 %; the trained connector must be far above */
    print_message("mean recall before %.3f after %.3f, R@10 %.3f %.3f\n", before.mean,
                  res.best.mean, res.best.cl[0].r10, res.best.cl[1].r10);
    assert_true(before.mean < 0.3);
    assert_true(res.best.mean > 0.6);
    for (int d = 0; d < 2; d++)
        assert_true(res.best.cl[d].r10 > 0.8);

    /* the loss log: directions alternate 0, 1, 0, 1 ...; the loss falls */
    FILE *f = fopen(t.log, "r");
    assert_non_null(f);
    long long step;
    int dir, lines = 0;
    double total, reg, cl, first = 0, last = 0;
    while (fscanf(f, "%lld %d %lf %lf %lf", &step, &dir, &total, &reg, &cl) == 5) {
        assert_int_equal(step, lines);
        assert_int_equal(dir, lines % 2);
        if (lines < 10)
            first += total;
        last = total;
        lines++;
    }
    fclose(f);
    assert_int_equal(lines, 30 * (480 / 32));
    assert_true(last < 0.5 * first / 10);

    /* the best model file carries the training summary */
    amc_connector *best;
    char *summary = NULL;
    assert_int_equal(amc_model_load(t.best, &best, &summary, &err), AMC_OK);
    assert_non_null(summary);
    assert_non_null(strstr(summary, "\"schedule\":\"alternating\""));
    assert_non_null(strstr(summary, "val_recall"));
    free(summary);
    amc_connector_free(best);
    amc_connector_free(conn);
    tmp_paths_remove(&t);
    amc_pairs_free(&all), amc_pairs_free(&train), amc_pairs_free(&val);
}

static void damaged_state_is_rejected(void **state)
{
    (void)state;
    amc_pairs all, train, val;
    amc_error err;
    make_pairs(&all, 200, 13);
    assert_int_equal(amc_pairs_split(&all, 0.2, 1, &train, &val, &err), AMC_OK);
    tmp_paths t;
    tmp_paths_make(&t, "dmg");
    amc_train_opts o = small_opts();
    o.max_steps = 3;
    amc_train_result res;
    amc_connector *conn = make_connector(4, 2, 5);
    assert_int_equal(amc_train(conn, &train, &val, &o, &t.paths, NULL, 0, NULL, &res, &err),
                     AMC_OK);

    /* flip one byte in the moments */
    FILE *f = fopen(t.state, "r+b");
    assert_non_null(f);
    fseek(f, -100, SEEK_END);
    int c = fgetc(f);
    fseek(f, -100, SEEK_END);
    fputc(c ^ 0x10, f);
    fclose(f);
    o.max_steps = 0;
    assert_int_equal(amc_train(conn, &train, &val, &o, &t.paths, NULL, 1, NULL, &res, &err),
                     AMC_EFORMAT);
    assert_non_null(strstr(err.msg, "checksum"));

    /* a state saved with other options is rejected, naming the option */
    o.max_steps = 3;
    amc_connector_free(conn);
    conn = make_connector(4, 2, 5);
    assert_int_equal(amc_train(conn, &train, &val, &o, &t.paths, NULL, 0, NULL, &res, &err),
                     AMC_OK);
    o.batch = 16;
    assert_int_equal(amc_train(conn, &train, &val, &o, &t.paths, NULL, 1, NULL, &res, &err),
                     AMC_EINVAL);
    assert_non_null(strstr(err.msg, "--batch"));
    amc_connector_free(conn);
    tmp_paths_remove(&t);
    amc_pairs_free(&all), amc_pairs_free(&train), amc_pairs_free(&val);
}

int main(void)
{
    /* bit-identical resume needs a fixed summation order in the BLAS */
    openblas_set_num_threads(1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(adamw_matches_hand_update),
        cmocka_unit_test(clip_and_schedules),
        cmocka_unit_test(pairs_reject_nan_rows_and_split),
        cmocka_unit_test(resume_is_bit_identical),
        cmocka_unit_test(training_learns_and_alternates),
        cmocka_unit_test(damaged_state_is_rejected),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
