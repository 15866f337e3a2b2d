/* Connector forward throughput against plain OpenBLAS sgemm on the same machine, in one run.
 *
 * For H = 512, E = 12, k = 4 and source dims 100 and 1280, prints for batch 1, 32 and 256 the
 * forward GFLOP/s of the contrastive branch (counting only the selected experts), the sgemm
 * GFLOP/s of one expert-sized product [batch, H] x [H, H], and their ratio; then single-item
 * projection latency p50/p99. Usage: connector_bench [seconds per case, default 1.0] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cblas.h>

#include "core/connector.h"
#include "core/rng.h"

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void fill_random(float *x, size_t n, amc_rng *rng)
{
    for (size_t i = 0; i < n; i++)
        x[i] = 2.0f * amc_rng_uniform(rng) - 1.0f;
}

static amc_connector *make_connector(int text_dim, int image_dim)
{
    char json[512];
    amc_config cfg;
    amc_connector *conn = NULL;
    amc_error err = {0};

    snprintf(json, sizeof json,
             "{\"modalities\": [{\"name\": \"text\", \"dim\": %d}, {\"name\": \"image\", "
             "\"dim\": %d}], \"hidden\": 512, \"latent\": 512, \"experts\": 12, \"top_k\": 4}",
             text_dim, image_dim);
    if (amc_config_from_json(&cfg, json, &err) != AMC_OK ||
        amc_connector_create(&conn, &cfg, &err) != AMC_OK) {
        fprintf(stderr, "connector_bench: %s\n", err.msg);
        exit(1);
    }
    amc_connector_init(conn, 1);
    return conn;
}

/* Repeats the forward for about `seconds` and returns GFLOP/s. */
static double forward_gflops(const amc_connector *conn, amc_workspace *ws, int src, int tgt,
                             const float *x, int batch, float *out, double seconds)
{
    double flops = amc_connector_flops(conn, AMC_SPACE_CONTRASTIVE, src, tgt, batch, 1);
    int reps = 0;
    double start = now_seconds(), elapsed;

    do {
        amc_connector_project(conn, ws, AMC_SPACE_CONTRASTIVE, src, tgt, x, batch, 1, out, NULL);
        reps++;
        elapsed = now_seconds() - start;
    } while (elapsed < seconds);
    return flops * reps / elapsed * 1e-9;
}

static double sgemm_gflops(int batch, int H, double seconds)
{
    float *a = calloc((size_t)batch * H, sizeof(float));
    float *w = calloc((size_t)H * H, sizeof(float));
    float *c = calloc((size_t)batch * H, sizeof(float));
    int reps = 0;
    double start = now_seconds(), elapsed;

    do {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, batch, H, H, 1.0f, a, H, w, H, 0.0f,
                    c, H);
        reps++;
        elapsed = now_seconds() - start;
    } while (elapsed < seconds);
    free(a);
    free(w);
    free(c);
    return 2.0 * batch * H * H * reps / elapsed * 1e-9;
}

static int compare_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void latency(const amc_connector *conn, amc_workspace *ws, int src, int tgt,
                    const float *x, float *out, const char *label)
{
    enum { N = 2000 };
    static double ms[N];

    for (int i = 0; i < N; i++) {
        double start = now_seconds();
        amc_connector_project(conn, ws, AMC_SPACE_CONTRASTIVE, src, tgt, x, 1, 1, out, NULL);
        ms[i] = (now_seconds() - start) * 1e3;
    }
    qsort(ms, N, sizeof ms[0], compare_double);
    printf("single-item latency %-12s p50 %.3f ms  p99 %.3f ms\n", label, ms[N / 2],
           ms[N * 99 / 100]);
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 1.0;
    static const int batches[] = {1, 32, 256};
    amc_rng rng;

    amc_rng_seed(&rng, 7);
    amc_connector *conn = make_connector(100, 1280);
    amc_workspace *ws = amc_workspace_new();
    float *x = malloc(sizeof(float) * 256 * 1280);
    float *out = malloc(sizeof(float) * 256 * 512);
    fill_random(x, (size_t)256 * 1280, &rng);

    printf("H=512 E=12 k=4 D=512, OpenBLAS %s\n", openblas_get_config());
    printf("%-14s %6s %14s %14s %7s\n", "direction", "batch", "forward GF/s", "sgemm GF/s",
           "ratio");
    for (int src = 0; src < 2; src++) {
        const char *label = src == 0 ? "text(100)" : "image(1280)";
        for (size_t b = 0; b < sizeof batches / sizeof batches[0]; b++) {
            double f = forward_gflops(conn, ws, src, 1 - src, x, batches[b], out, seconds);
            double g = sgemm_gflops(batches[b], 512, seconds);
            printf("%-14s %6d %14.2f %14.2f %6.0f%%\n", label, batches[b], f, g, 100.0 * f / g);
        }
    }
    latency(conn, ws, 0, 1, x, out, "text->image");
    latency(conn, ws, 1, 0, x, out, "image->text");
    free(x);
    free(out);
    amc_workspace_free(ws);
    amc_connector_free(conn);
    return 0;
}
