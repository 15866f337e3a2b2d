/* Store benchmark: durable ingest, search throughput and recall@10, and restart time for the
 * index kinds Flat, HNSW32 and IVF1024,SQ8, on random unit vectors of 256 dims.
 *
 * The vectors go into a "predictive" collection with one 256-d modality, where the index
 * contains the raw embeddings L2-normalised and a same-modality query is only normalised, so
 * the figures measure LMDB and FAISS without connector compute. Ingest commits batches of
 * 1,000 points (fsync per commit) and includes the FAISS adds of Flat and IVF. HNSW adds and
 * IVF training run in the store's builder thread, and "ready after" is the wait for them once
 * ingest ends. Recall@10 is against an exact scan of the same vectors. Search runs with the
 * store's defaults (nprobe = nlist / 16, efSearch 64), then for HNSW and IVF once more with
 * nprobe 256 and efSearch 512.
 * Usage: store_bench [points, default 100000] [queries, default 1000] [one index spec] */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/connector.h"
#include "core/rng.h"
#include "index/store.h"

#define DIM 256
#define K 10
#define BATCH 1000

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void die(const char *what, const amc_error *err)
{
    fprintf(stderr, "store_bench: %s: %s\n", what, err->msg);
    exit(1);
}

static void random_unit(float *x, size_t n, amc_rng *rng)
{
    for (size_t i = 0; i < n; i++) {
        double norm = 0.0;
        for (int j = 0; j < DIM; j++) {
            x[i * DIM + j] = 2.0f * amc_rng_uniform(rng) - 1.0f;
            norm += (double)x[i * DIM + j] * (double)x[i * DIM + j];
        }
        for (int j = 0; j < DIM; j++)
            x[i * DIM + j] = (float)((double)x[i * DIM + j] / sqrt(norm));
    }
}

/* Exact top-K ids of each query by brute force: truth [nq, K]. */
static void exact_topk(const float *base, int n, const float *queries, int nq, int *truth)
{
    for (int q = 0; q < nq; q++) {
        float best[K];
        int ids[K];
        for (int i = 0; i < K; i++) {
            best[i] = -INFINITY;
            ids[i] = -1;
        }
        for (int p = 0; p < n; p++) {
            float s = 0.0f;
            for (int j = 0; j < DIM; j++)
                s += queries[(size_t)q * DIM + j] * base[(size_t)p * DIM + j];
            if (s <= best[K - 1])
                continue;
            int at = K - 1;
            while (at > 0 && best[at - 1] < s) {
                best[at] = best[at - 1];
                ids[at] = ids[at - 1];
                at--;
            }
            best[at] = s;
            ids[at] = p;
        }
        memcpy(truth + (size_t)q * K, ids, sizeof ids);
    }
}

static amc_connector *make_connector(void)
{
    amc_config cfg;
    amc_connector *conn = NULL;
    amc_error err = {0};
    const char *json = "{\"modalities\": [{\"name\": \"vec\", \"dim\": 256},"
                       " {\"name\": \"other\", \"dim\": 8}],"
                       " \"hidden\": 16, \"latent\": 16, \"experts\": 2, \"top_k\": 1}";
    if (amc_config_from_json(&cfg, json, &err) != AMC_OK ||
        amc_connector_create(&conn, &cfg, &err) != AMC_OK)
        die("connector", &err);
    amc_connector_init(conn, 1);
    return conn;
}

static double ingest(ami_store *st, const float *base, int n)
{
    ami_point *pts = malloc(sizeof *pts * BATCH);
    char (*ids)[16] = malloc(16 * BATCH);
    amc_error err = {0};
    double start = now_seconds();
    for (int first = 0; first < n; first += BATCH) {
        int count = n - first < BATCH ? n - first : BATCH;
        for (int i = 0; i < count; i++) {
            snprintf(ids[i], 16, "%d", first + i);
            pts[i] = (ami_point){ids[i], "vec", base + (size_t)(first + i) * DIM, 1, NULL};
        }
        if (ami_points_upsert(st, "bench", pts, count, NULL, &err) != AMC_OK)
            die("upsert", &err);
    }
    double elapsed = now_seconds() - start;
    free(pts);
    free(ids);
    return elapsed;
}

static double wait_ready(ami_store *st)
{
    double start = now_seconds();
    while (!ami_store_ready(st))
        usleep(10000);
    return now_seconds() - start;
}

/* Runs the queries one call each (batch 1) or in one call; returns QPS and fills recall. */
static double search_qps(ami_store *st, const float *queries, int nq, int batch, int nprobe,
                         int ef_search, const int *truth, double *recall)
{
    ami_query *qs = malloc(sizeof *qs * (size_t)nq);
    ami_result *res = malloc(sizeof *res * (size_t)nq);
    for (int q = 0; q < nq; q++)
        qs[q] = (ami_query){"vec", queries + (size_t)q * DIM, 1};
    ami_search_params p = {.target = "vec", .k = K, .nprobe = nprobe, .ef_search = ef_search};
    amc_error err = {0};
    double start = now_seconds();
    for (int q = 0; q < nq; q += batch) {
        int count = nq - q < batch ? nq - q : batch;
        if (ami_search(st, "bench", qs + q, count, &p, res + q, &err) != AMC_OK)
            die("search", &err);
    }
    double elapsed = now_seconds() - start;

    long hits = 0;
    for (int q = 0; q < nq; q++) {
        for (int i = 0; i < res[q].n; i++)
            for (int j = 0; j < K; j++)
                hits += atoi(res[q].hits[i].id) == truth[(size_t)q * K + j];
    }
    *recall = (double)hits / ((double)nq * K);
    ami_results_free(res, nq);
    free(res);
    free(qs);
    return nq / elapsed;
}

static void bench_index(const char *spec_text, const amc_connector *conn, const float *base,
                        int n, const float *queries, int nq, const int *truth)
{
    char dir[64] = "/tmp/altmoe-bench-XXXXXX";
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        exit(1);
    }
    ami_store *st;
    amc_error err = {0};
    if (ami_store_open(&st, dir, conn, NULL, &err) != AMC_OK)
        die("open", &err);
    ami_collection_spec spec = {.name = "bench", .n_modalities = 1,
                                .space = AMI_SPACE_PREDICTIVE};
    snprintf(spec.modalities[0], AMC_NAME_MAX, "vec");
    snprintf(spec.index_spec[0], AMI_SPEC_MAX, "%s", spec_text);
    if (ami_collection_create(st, &spec, &err) != AMC_OK)
        die("create", &err);

    double t_ingest = ingest(st, base, n);
    double t_ready = wait_ready(st);
    double recall1, recall_batch;
    double qps1 = search_qps(st, queries, nq, 1, 0, 0, truth, &recall1);
    double qps_batch = search_qps(st, queries, nq, nq, 0, 0, truth, &recall_batch);

    /* The default search parameters, then a wider search for graph and IVF indices. */
    double tuned_recall1 = 0.0, tuned_recall_batch = 0.0, tuned_qps1 = 0.0, tuned_qps_batch = 0.0;
    int tuned = strncmp(spec_text, "HNSW", 4) == 0 || strncmp(spec_text, "IVF", 3) == 0;
    if (tuned) {
        tuned_qps1 = search_qps(st, queries, nq, 1, 256, 512, truth, &tuned_recall1);
        tuned_qps_batch = search_qps(st, queries, nq, nq, 256, 512, truth, &tuned_recall_batch);
    }

    /* Restart: close writes the snapshots, open loads them. */
    double t0 = now_seconds();
    ami_store_close(st);
    double t_close = now_seconds() - t0;
    t0 = now_seconds();
    if (ami_store_open(&st, dir, conn, NULL, &err) != AMC_OK)
        die("reopen", &err);
    wait_ready(st);
    double t_open = now_seconds() - t0;
    ami_store_close(st);

    printf("| %s | %d | %.0f | %.1f | %.0f | %.3f | %.0f | %.3f | %.2f | %.2f |\n", spec_text, n,
           n / t_ingest, t_ready, qps1, recall1, qps_batch, recall_batch, t_close, t_open);
    if (tuned)
        printf("| %s, nprobe 256 / efSearch 512 | %d | | | %.0f | %.3f | %.0f | %.3f | | |\n",
               spec_text, n, tuned_qps1, tuned_recall1, tuned_qps_batch, tuned_recall_batch);
    fflush(stdout);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "store_bench: could not remove %s\n", dir);
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 100000;
    int nq = argc > 2 ? atoi(argv[2]) : 1000;
    if (n < K || nq < 1) {
        fprintf(stderr, "usage: store_bench [points >= %d] [queries >= 1]\n", K);
        return 2;
    }
    amc_rng rng;
    amc_rng_seed(&rng, 7);
    float *base = malloc(sizeof(float) * (size_t)n * DIM);
    float *queries = malloc(sizeof(float) * (size_t)nq * DIM);
    int *truth = malloc(sizeof(int) * (size_t)nq * K);
    random_unit(base, (size_t)n, &rng);
    random_unit(queries, (size_t)nq, &rng);
    exact_topk(base, n, queries, nq, truth);
    amc_connector *conn = make_connector();

    printf("| index | points | ingest vectors/s | ready after (s) | QPS batch 1 | recall@10 "
           "| QPS batch %d | recall@10 | close (s) | restart (s) |\n", nq);
    printf("|---|---|---|---|---|---|---|---|---|---|\n");
    const char *specs[] = {"Flat", "HNSW32", "IVF1024,SQ8"};
    for (int i = 0; i < 3; i++)
        if (argc <= 3 || strcmp(argv[3], specs[i]) == 0)
            bench_index(specs[i], conn, base, n, queries, nq, truth);

    amc_connector_free(conn);
    free(base);
    free(queries);
    free(truth);
    return 0;
}
