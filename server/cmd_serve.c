/* `altmoe serve`: load the config and the model, open the store, serve HTTP until SIGTERM or
 * SIGINT, then shut down gracefully.
 *
 * Shutdown order matters: stop accepting connections, let in-flight requests finish (bounded
 * by request_timeout), stop the HTTP threads, then close the store (which snapshots every
 * changed index and closes LMDB), and only then free the connector the store borrowed. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <time.h>

#include <cblas.h>
#include <omp.h>

#include "api/api.h"
#include "config/config.h"
#include "core/model_io.h"
#include "index/store.h"
#include "server/commands.h"
#include "server/http.h"
#include "server/log.h"
#include "server/metrics.h"

extern char **environ;

static volatile sig_atomic_t stop_signal;

static void on_stop_signal(int sig)
{
    stop_signal = sig;
}

/* Records SIGTERM and SIGINT in stop_signal for the main loop. A handler rather than
 * sigwait(), because OpenBLAS starts its worker threads before main() and any of them may
 * receive the signal. SA_RESTART keeps the other threads' system calls going. */
static void install_signal_handlers(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

/* Runs BLAS and OpenMP single-threaded unless the environment asks otherwise. The server gets
 * its parallelism from concurrent requests; BLAS and FAISS thread pools on top of that
 * oversubscribe the cores, and their busy-waiting workers then starve the request threads.
 * Measured with bench/http.sh on 2 cores: batched searches took 42 ms per call with the
 * default pools and 5 ms with one thread each. */
static void limit_library_threads(void)
{
    if (getenv("OPENBLAS_NUM_THREADS") == NULL)
        openblas_set_num_threads(1);
    if (getenv("OMP_NUM_THREADS") == NULL)
        omp_set_num_threads(1);
}

static int make_data_dir(const char *dir, amc_error *err)
{
    if (mkdir(dir, 0750) == 0 || errno == EEXIST)
        return AMC_OK;
    return amc_error_set(err, AMC_EIO, "option 'data_dir': cannot create %s: %s", dir,
                         strerror(errno));
}

static void snapshot(ami_store *st, const char *reason)
{
    amc_error err;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (ami_store_snapshot(st, &err) != AMC_OK) {
        char qerr[AMC_ERROR_MSG_MAX * 2];
        AMS_LOG(AMS_LOG_ERROR, "snapshot_failed", "reason=%s error=%s", reason,
                ams_log_quote(qerr, sizeof qerr, err.msg));
        return;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    AMS_LOG(AMS_LOG_INFO, "snapshot", "reason=%s seq=%llu ms=%.1f", reason,
            (unsigned long long)ami_store_seq(st),
            (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-6);
}

/* Waits for a stop signal, writing periodic snapshots meanwhile; returns the signal. */
static int run_until_signal(ami_store *st, long snapshot_interval_s)
{
    const struct timespec tick = {0, 100 * 1000 * 1000};
    long ticks = 0;
    while (stop_signal == 0) {
        nanosleep(&tick, NULL);
        if (snapshot_interval_s > 0 && ++ticks >= snapshot_interval_s * 10) {
            ticks = 0;
            snapshot(st, "interval");
        }
    }
    return stop_signal;
}

static void shut_down(ams_http *http, ama_ctx *api, ami_store *st, long grace_ms)
{
    ams_http_quiesce(http);
    int left = ams_http_wait_idle(http, grace_ms);
    ama_ctx_drain(api);
    if (left > 0) {
        /* Give the searches answered by the drain a moment to be sent. */
        left = ams_http_wait_idle(http, 1000);
        AMS_LOG(AMS_LOG_WARN, "shutdown_timeout", "in_flight=%d grace_ms=%ld", left, grace_ms);
    }
    ams_http_stop(http);
    ams_metrics_reset();
    ami_store_close(st);
    AMS_LOG(AMS_LOG_INFO, "store_closed", "snapshot=written");
    ama_ctx_free(api);
}

/* Logs a failed start step with the error message quoted. */
static int start_failed(const char *step, const amc_error *err)
{
    char qerr[AMC_ERROR_MSG_MAX * 2];
    AMS_LOG(AMS_LOG_ERROR, "start_failed", "step=%s error=%s", step,
            ams_log_quote(qerr, sizeof qerr, err->msg));
    return 1;
}

/* Loads the model and opens everything; on success the caller owns *conn via *api. */
static int start(const amcfg_config *cfg, ami_store **st, ama_ctx **api, ams_http **http)
{
    amc_error err;
    amc_connector *conn = NULL;
    char qpath[AMCFG_STR_MAX + 16];
    if (make_data_dir(cfg->data_dir, &err) != AMC_OK)
        return start_failed("data_dir", &err);
    if (amc_model_load_for_inference(cfg->model, &conn, NULL, &err) != AMC_OK)
        return start_failed("model", &err);
    char fp[17];
    amc_connector_fingerprint(conn, fp);
    AMS_LOG(AMS_LOG_INFO, "model_loaded", "model=%s modalities=%d latent=%d fingerprint=%s",
            ams_log_quote(qpath, sizeof qpath, cfg->model), conn->cfg.n_modalities,
            conn->cfg.latent, fp);

    ami_store_options opts = {.map_size_max = (size_t)cfg->map_size_max_mib << 20};
    if (ami_store_open(st, cfg->data_dir, conn, &opts, &err) != AMC_OK) {
        amc_connector_free(conn);
        return start_failed("store", &err);
    }
    AMS_LOG(AMS_LOG_INFO, "store_opened", "data_dir=%s seq=%llu ready=%d",
            ams_log_quote(qpath, sizeof qpath, cfg->data_dir),
            (unsigned long long)ami_store_seq(*st), ami_store_ready(*st));

    if (ama_ctx_create(api, cfg, *st, conn, &err) != AMC_OK) {
        ami_store_close(*st);
        amc_connector_free(conn);
        return start_failed("api", &err);
    }
    if (ams_http_start(http, cfg, *api, &err) != AMC_OK) {
        ams_metrics_reset();
        ami_store_close(*st);
        ama_ctx_free(*api);
        return start_failed("http", &err);
    }
    return 0;
}

int ams_cmd_serve(int argc, char **argv)
{
    amcfg_config cfg;
    amcfg_action action;
    amc_error err;
    if (amcfg_load(&cfg, argc, argv, environ, &action, &err) != AMC_OK) {
        fprintf(stderr, "altmoe serve: %s\n", err.msg);
        return 2;
    }
    if (action == AMCFG_HELP) {
        amcfg_print_help(stdout, "serve");
        return 0;
    }
    if (action == AMCFG_DUMP) {
        amcfg_dump(stdout, &cfg);
        return 0;
    }
    if (cfg.model[0] == '\0') {
        fprintf(stderr, "altmoe serve: option 'model' is required; pass --model FILE.safetensors "
                "(create one with `altmoe init`)\n");
        return 2;
    }
    ams_log_set_level((int)cfg.log_level);

    install_signal_handlers();
    limit_library_threads();
    ami_store *st = NULL;
    ama_ctx *api = NULL;
    ams_http *http = NULL;
    if (start(&cfg, &st, &api, &http) != 0)
        return 1;
    AMS_LOG(AMS_LOG_INFO, "listening", "listen=%s port=%lld threads=%lld batch_window_us=%lld "
            "admin=%s", cfg.listen, (long long)cfg.port, (long long)cfg.threads,
            (long long)cfg.batch_window_us, cfg.admin_token[0] ? "enabled" : "disabled");

    int sig = run_until_signal(st, (long)cfg.snapshot_interval_s);
    AMS_LOG(AMS_LOG_INFO, "stopping", "signal=%s", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    shut_down(http, api, st, (long)cfg.request_timeout_ms + 1000);
    AMS_LOG(AMS_LOG_INFO, "stopped", "signal=%s", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    return 0;
}
