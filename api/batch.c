/* Search micro-batching.
 *
 * A search that can be batched (no filter, batch_window > 0) is parsed and validated on the
 * HTTP thread, which then suspends its connection and queues a job here. A free batcher thread
 * waits until the oldest queued job is batch_window microseconds old, takes the whole queue,
 * groups the jobs by collection and search parameters, runs each group as ONE ami_search()
 * (one connector pass per modality and one FAISS call), and hands every job its response
 * through the job's completion callback, which resumes the connection.
 *
 * Because waiting jobs hold no HTTP thread, a batch can hold many more queries than there are
 * HTTP threads. There are as many batcher threads as HTTP threads, so that while one runs a
 * batch the next batch is collected and run by another.
 *
 * Invariants: a job is owned by the queue from ama_batcher_enqueue_() until the batcher takes
 * it, then by the batcher until its callback has returned; the callback is called exactly
 * once per job, also at shutdown. */
#include "api/internal.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TAKE_MAX 1024                 /* jobs taken from the queue in one round */
#define WORKERS_MAX 64

struct ama_search_job {
    struct ama_search_job *next;
    char collection[AMI_NAME_MAX];
    ama_search_req_ req;              /* owned: the parsed queries */
    ami_search_params params;         /* target points into target_name */
    char target_name[AMC_NAME_MAX];
    char modality[AMC_NAME_MAX];      /* of the query */
    double started;                   /* request start, CLOCK_MONOTONIC seconds */
    double queued;
    ama_done_fn done;
    void *cls;
};

struct ama_batcher_ {
    ama_ctx *ctx;
    long window_us;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    ama_search_job *head, *tail;
    int stopping;
    int n_workers;                    /* threads started; 0 when batching is disabled */
    pthread_t workers[WORKERS_MAX];
};

static int same_group(const ama_search_job *a, const ama_search_job *b)
{
    return strcmp(a->collection, b->collection) == 0 &&
           strcmp(a->target_name, b->target_name) == 0 && a->params.k == b->params.k &&
           a->params.with_payload == b->params.with_payload &&
           a->params.nprobe == b->params.nprobe && a->params.ef_search == b->params.ef_search;
}

void ama_search_job_free_(ama_search_job *job)
{
    if (job == NULL)
        return;
    ama_search_req_free_(&job->req);
    free(job);
}

ama_search_job *ama_search_job_new_(const char *collection, ama_search_req_ *req,
                                    const ami_search_params *params, const char *modality,
                                    double started)
{
    ama_search_job *job = calloc(1, sizeof *job);
    if (job == NULL)
        return NULL;
    snprintf(job->collection, sizeof job->collection, "%s", collection);
    job->req = *req;
    memset(req, 0, sizeof *req);
    job->params = *params;
    snprintf(job->target_name, sizeof job->target_name, "%s", params->target);
    job->params.target = job->target_name;
    job->params.filter = NULL;
    snprintf(job->modality, sizeof job->modality, "%s", modality);
    job->started = started;
    return job;
}

/* Sends every job of a failed group its error. */
static void fail_group(ama_search_job **jobs, int n, amc_status st, const amc_error *err)
{
    ama_fail_ f;
    ama_fail_from_status_(&f, st, err);
    if (f.status == 404)
        f.code = "collection_not_found";
    for (int i = 0; i < n; i++) {
        ama_response resp;
        ama_error_response(&resp, f.status, f.code, "%s", f.msg);
        jobs[i]->done(jobs[i]->cls, &resp);
    }
}

/* Runs one group of compatible jobs through one ami_search() and sends each job its response. */
static void run_group(ama_batcher_ *b, ama_search_job **jobs, int n)
{
    ami_query *queries = calloc((size_t)n, sizeof *queries);
    ami_result *results = calloc((size_t)n, sizeof *results);
    amc_error err;
    if (queries == NULL || results == NULL) {
        amc_error_set(&err, AMC_ENOMEM, "out of memory batching %d searches", n);
        fail_group(jobs, n, AMC_ENOMEM, &err);
        free(queries);
        free(results);
        return;
    }
    for (int i = 0; i < n; i++) {
        queries[i].modality = jobs[i]->modality;
        queries[i].embedding = jobs[i]->req.queries[0].data;
        queries[i].seq = jobs[i]->req.queries[0].seq;
    }

    double t0 = ama_now_s_();
    amc_status st = ami_search(b->ctx->store, jobs[0]->collection, queries, n, &jobs[0]->params,
                               results, &err);
    ams_metric_observe(b->ctx->m_search_seconds, "", ama_now_s_() - t0);
    ams_metric_observe(b->ctx->m_batch_size, "", (double)n);
    if (st != AMC_OK) {
        fail_group(jobs, n, st, &err);
    } else {
        for (int i = 0; i < n; i++) {
            ama_response resp;
            ama_search_response_(&resp, &results[i], jobs[i]->params.with_payload,
                                 jobs[i]->started);
            jobs[i]->done(jobs[i]->cls, &resp);
        }
        ami_results_free(results, n);
    }
    free(queries);
    free(results);
}

/* Groups the taken jobs by parameters and runs each group; frees every job. */
static void run_round(ama_batcher_ *b, ama_search_job **jobs, int n)
{
    ama_search_job *group[TAKE_MAX];
    int used[TAKE_MAX] = {0};
    for (int i = 0; i < n; i++) {
        if (used[i])
            continue;
        int g = 0;
        for (int j = i; j < n; j++) {
            if (!used[j] && same_group(jobs[i], jobs[j])) {
                group[g++] = jobs[j];
                used[j] = 1;
            }
        }
        run_group(b, group, g);
    }
    for (int i = 0; i < n; i++)
        ama_search_job_free_(jobs[i]);
}

/* Waits, with the lock held, until the oldest job is window_us old or shutdown begins.
 * Returns 0 when another worker took the queue meanwhile. */
static int wait_for_window(ama_batcher_ *b)
{
    for (;;) {
        if (b->head == NULL)
            return 0;
        double due = b->head->queued + (double)b->window_us * 1e-6;
        double now = ama_now_s_();
        if (now >= due || b->stopping)
            return 1;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        double wait = due - now;
        ts.tv_sec += (time_t)wait;
        ts.tv_nsec += (long)((wait - floor(wait)) * 1e9);
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&b->wake, &b->lock, &ts);
    }
}

static void *batcher_main(void *arg)
{
    ama_batcher_ *b = arg;
    ama_search_job *taken[TAKE_MAX];
    pthread_mutex_lock(&b->lock);
    for (;;) {
        while (b->head == NULL && !b->stopping)
            pthread_cond_wait(&b->wake, &b->lock);
        if (b->head == NULL)
            break; /* stopping with nothing queued */
        if (!wait_for_window(b))
            continue;

        int n = 0;
        while (b->head != NULL && n < TAKE_MAX) {
            taken[n++] = b->head;
            b->head = b->head->next;
        }
        if (b->head == NULL)
            b->tail = NULL;
        pthread_mutex_unlock(&b->lock);
        run_round(b, taken, n);
        pthread_mutex_lock(&b->lock);
    }
    pthread_mutex_unlock(&b->lock);
    return NULL;
}

ama_batcher_ *ama_batcher_new_(ama_ctx *ctx, long window_us, int n_workers)
{
    ama_batcher_ *b = calloc(1, sizeof *b);
    if (b == NULL)
        return NULL;
    b->ctx = ctx;
    b->window_us = window_us;
    pthread_mutex_init(&b->lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&b->wake, &attr);
    pthread_condattr_destroy(&attr);
    if (n_workers > WORKERS_MAX)
        n_workers = WORKERS_MAX;
    for (int i = 0; window_us > 0 && i < n_workers; i++) {
        if (pthread_create(&b->workers[i], NULL, batcher_main, b) != 0) {
            ama_batcher_free_(b);
            return NULL;
        }
        b->n_workers++;
    }
    return b;
}

/* Stops the workers after they have answered every queued job. Later jobs run at once on the
 * thread that queues them (see ama_batcher_enqueue_). Safe to call twice. */
void ama_batcher_drain_(ama_batcher_ *b)
{
    pthread_mutex_lock(&b->lock);
    b->stopping = 1;
    pthread_cond_broadcast(&b->wake);
    pthread_mutex_unlock(&b->lock);
    for (int i = 0; i < b->n_workers; i++)
        pthread_join(b->workers[i], NULL);
    b->n_workers = 0;
}

void ama_batcher_free_(ama_batcher_ *b)
{
    if (b == NULL)
        return;
    ama_batcher_drain_(b);
    pthread_cond_destroy(&b->wake);
    pthread_mutex_destroy(&b->lock);
    free(b);
}

int ama_batcher_enabled_(ama_batcher_ *b)
{
    pthread_mutex_lock(&b->lock);
    int enabled = b->n_workers > 0 && !b->stopping;
    pthread_mutex_unlock(&b->lock);
    return enabled;
}

void ama_batcher_enqueue_(ama_batcher_ *b, ama_search_job *job, ama_done_fn done, void *cls)
{
    job->done = done;
    job->cls = cls;
    job->queued = ama_now_s_();
    pthread_mutex_lock(&b->lock);
    if (b->stopping) {
        /* The workers are gone or going: run the job here so that it is still answered. */
        pthread_mutex_unlock(&b->lock);
        run_round(b, &job, 1);
        return;
    }
    if (b->tail != NULL)
        b->tail->next = job;
    else
        b->head = job;
    b->tail = job;
    pthread_cond_signal(&b->wake);
    pthread_mutex_unlock(&b->lock);
}
