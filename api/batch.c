/* Search micro-batching.
 *
 * The first search to arrive opens a group keyed by its collection and parameters and becomes
 * the group's leader. It sleeps for the window, closes the group, runs every query collected
 * meanwhile through ONE ami_search() call (one connector pass per modality and one FAISS call),
 * and wakes the followers, each of which takes its own result.
 *
 * Invariants: a group is in the open list only while it accepts queries; queries join only
 * open groups; the last of the leader and its followers to leave frees the group (refs).
 * Searches with a filter bypass batching because filters cannot be shared. */
#include "api/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define GROUP_MAX 256

typedef struct group {
    struct group *next;              /* in the open list */
    char collection[AMI_NAME_MAX];
    ami_search_params params;        /* filter always NULL */
    char target[AMC_NAME_MAX];
    int n;
    ami_query queries[GROUP_MAX];    /* borrowed from the waiting requests */
    ami_result results[GROUP_MAX];
    amc_status status;
    amc_error err;
    int done;
    int refs;
} group;

struct ama_batcher_ {
    ama_ctx *ctx;
    long window_us;
    pthread_mutex_t lock;
    pthread_cond_t done;
    group *open;
};

ama_batcher_ *ama_batcher_new_(ama_ctx *ctx, long window_us)
{
    ama_batcher_ *b = calloc(1, sizeof *b);
    if (b == NULL)
        return NULL;
    b->ctx = ctx;
    b->window_us = window_us;
    pthread_mutex_init(&b->lock, NULL);
    pthread_cond_init(&b->done, NULL);
    return b;
}

void ama_batcher_free_(ama_batcher_ *b)
{
    if (b == NULL)
        return;
    pthread_cond_destroy(&b->done);
    pthread_mutex_destroy(&b->lock);
    free(b);
}

static int same_params(const group *g, const char *collection, const ami_search_params *p)
{
    return strcmp(g->collection, collection) == 0 && strcmp(g->target, p->target) == 0 &&
           g->params.k == p->k && g->params.with_payload == p->with_payload &&
           g->params.nprobe == p->nprobe && g->params.ef_search == p->ef_search;
}

/* Runs a closed group's queries and records the per-query outcome; no lock held. */
static void run_group(ama_batcher_ *b, group *g)
{
    double t0 = ama_now_s_();
    g->status = ami_search(b->ctx->store, g->collection, g->queries, g->n, &g->params,
                           g->results, &g->err);
    ams_metric_observe(b->ctx->m_search_seconds, "", ama_now_s_() - t0);
    ams_metric_observe(b->ctx->m_batch_size, "", (double)g->n);
}

/* Finds an open group to join or opens one; returns it with a reference taken and the query
 * added at *slot. *leader is 1 when the caller opened it. Called with the lock held. */
static group *join_group(ama_batcher_ *b, const char *collection, const ami_query *query,
                         const ami_search_params *params, int *slot, int *leader)
{
    for (group *g = b->open; g != NULL; g = g->next) {
        if (g->n < GROUP_MAX && same_params(g, collection, params)) {
            *slot = g->n;
            g->queries[g->n++] = *query;
            g->refs++;
            *leader = 0;
            return g;
        }
    }
    group *g = calloc(1, sizeof *g);
    if (g == NULL)
        return NULL;
    snprintf(g->collection, sizeof g->collection, "%s", collection);
    snprintf(g->target, sizeof g->target, "%s", params->target);
    g->params = *params;
    g->params.target = g->target;
    g->params.filter = NULL;
    g->queries[0] = *query;
    g->n = 1;
    g->refs = 1;
    g->next = b->open;
    b->open = g;
    *slot = 0;
    *leader = 1;
    return g;
}

static void close_group(ama_batcher_ *b, group *g)
{
    for (group **p = &b->open; *p != NULL; p = &(*p)->next) {
        if (*p == g) {
            *p = g->next;
            break;
        }
    }
    g->next = NULL;
}

/* Moves the caller's result out of the group and drops its reference. Lock held. */
static amc_status leave_group(group *g, int slot, ami_result *result, amc_error *err)
{
    amc_status st = g->status;
    if (st == AMC_OK) {
        *result = g->results[slot];
        memset(&g->results[slot], 0, sizeof g->results[slot]);
    } else if (err != NULL) {
        *err = g->err;
    }
    if (--g->refs == 0)
        free(g);
    return st;
}

amc_status ama_batcher_search_(ama_batcher_ *b, const char *collection, const ami_query *query,
                               const ami_search_params *params, ami_result *result,
                               amc_error *err)
{
    memset(result, 0, sizeof *result);
    if (b->window_us <= 0 || params->filter != NULL) {
        double t0 = ama_now_s_();
        amc_status st = ami_search(b->ctx->store, collection, query, 1, params, result, err);
        ams_metric_observe(b->ctx->m_search_seconds, "", ama_now_s_() - t0);
        ams_metric_observe(b->ctx->m_batch_size, "", 1);
        return st;
    }

    int slot, leader;
    pthread_mutex_lock(&b->lock);
    group *g = join_group(b, collection, query, params, &slot, &leader);
    if (g == NULL) {
        pthread_mutex_unlock(&b->lock);
        return amc_error_set(err, AMC_ENOMEM, "out of memory batching the search");
    }
    if (leader) {
        /* Collect followers for one window, then run the whole group. */
        pthread_mutex_unlock(&b->lock);
        struct timespec ts = {0, b->window_us * 1000L};
        nanosleep(&ts, NULL);
        pthread_mutex_lock(&b->lock);
        close_group(b, g);
        pthread_mutex_unlock(&b->lock);
        run_group(b, g);
        pthread_mutex_lock(&b->lock);
        g->done = 1;
        pthread_cond_broadcast(&b->done);
    } else {
        while (!g->done)
            pthread_cond_wait(&b->done, &b->lock);
    }
    amc_status st = leave_group(g, slot, result, err);
    pthread_mutex_unlock(&b->lock);
    return st;
}
