/* Declarations shared by the files of api/ and by nothing else; names end in `_`. */
#ifndef ALTMOE_API_INTERNAL_H
#define ALTMOE_API_INTERNAL_H

#include <pthread.h>

#include <cjson/cJSON.h>

#include "api/api.h"
#include "server/metrics.h"

#define AMA_BATCH_MAX_POINTS 10000     /* items of one upsert, queries of one batch search */
#define AMA_BATCH_MAX_HITS 100000      /* queries x k of one batch search, which bounds the
                                          memory of its response */

/* A request failure on its way to an error envelope. */
typedef struct ama_fail_ {
    int status;                       /* HTTP status */
    const char *code;                 /* stable error code, see docs/api.md */
    char msg[AMC_ERROR_MSG_MAX];
} ama_fail_;

int ama_fail_set_(ama_fail_ *f, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Maps a store or connector status and message to an HTTP failure; returns the status. */
int ama_fail_from_status_(ama_fail_ *f, amc_status st, const amc_error *err);

/* One embedding from a request: [seq, dim] floats of modality mod (an index into the model
 * config). data is malloc'd and owned. */
typedef struct ama_vec_ {
    int mod;
    int seq, dim;
    float *data;
} ama_vec_;

void ama_vec_free_(ama_vec_ *v);

/* Parses `json` (len bytes) into *root; a syntax error becomes 400 malformed_json with the
 * byte offset. Requires a JSON object. */
int ama_parse_object_(const char *json, size_t len, cJSON **root, ama_fail_ *f);

/* Rejects members of obj not in allowed (NULL-terminated) and repeated members; `where` is the
 * path of obj in the request ("" for the root, "points[2]" ...). */
int ama_check_fields_(const cJSON *obj, const char *where, const char *const *allowed,
                      ama_fail_ *f);

/* Reads the modality named by member `key` of obj into *mod (required). */
int ama_parse_modality_(const amc_config *mc, const cJSON *obj, const char *where,
                        const char *key, int *mod, ama_fail_ *f);

/* Reads "embedding" ([dim] numbers) or "tokens" ([seq][dim] numbers) of obj for modality mod:
 * exactly one of the two must be present; every value finite and in float range. */
int ama_parse_embedding_(const amc_config *mc, const cJSON *obj, const char *where, int mod,
                         ama_vec_ *out, ama_fail_ *f);

/* Reads an optional integer member into *out (default kept when absent), bounded [lo, hi]. */
int ama_parse_int_(const cJSON *obj, const char *where, const char *key, long lo, long hi,
                   const char *code, long *out, ama_fail_ *f);

/* Reads an optional boolean member. */
int ama_parse_bool_(const cJSON *obj, const char *where, const char *key, int *out,
                    ama_fail_ *f);

/* Reads a required string member of 1..cap-1 bytes into out. */
int ama_parse_string_(const cJSON *obj, const char *where, const char *key, char *out,
                      size_t cap, ama_fail_ *f);

/* A parsed upsert batch (PUT points) or ingest line. */
typedef struct ama_point_req_ {
    char id[AMI_ID_MAX + 1];
    ama_vec_ vec;
    char *payload;                    /* JSON object text or NULL; owned */
} ama_point_req_;

/* Parses one point object; `where` names it in messages. */
int ama_parse_point_(const amc_config *mc, const cJSON *obj, const char *where,
                     ama_point_req_ *out, ama_fail_ *f);
void ama_point_req_free_(ama_point_req_ *p);

/* Parses {"points": [...]} into a malloc'd array; rejects a repeated (id, modality). */
int ama_parse_upsert_(const amc_config *mc, const cJSON *root, ama_point_req_ **points, int *n,
                      ama_fail_ *f);

/* A parsed search request (single: n = 1) or batch. filter is borrowed from the request's
 * cJSON tree. */
typedef struct ama_search_req_ {
    int n;
    ama_vec_ *queries;                /* owned array of n */
    int target;
    long k;
    int with_payload;
    long nprobe, ef_search;
    const cJSON *filter;
} ama_search_req_;

int ama_parse_search_(const amc_config *mc, const cJSON *root, int batch, long max_k,
                      ama_search_req_ *out, ama_fail_ *f);
void ama_search_req_free_(ama_search_req_ *s);

/* A parsed projection request. */
typedef struct ama_project_req_ {
    int n;
    ama_vec_ *items;                  /* owned array of n, all of one modality and seq */
    int target;                       /* -1 when absent */
    amc_space space;
} ama_project_req_;

int ama_parse_project_(const amc_config *mc, const cJSON *root, ama_project_req_ *out,
                       ama_fail_ *f);
void ama_project_req_free_(ama_project_req_ *p);

/* Parses a collection definition. */
int ama_parse_collection_(const amc_config *mc, const cJSON *root, ami_collection_spec *spec,
                          ama_fail_ *f);

/* The API state. */
struct ama_ctx {
    amcfg_config cfg;
    ami_store *store;
    amc_connector *conn;              /* guarded by conn_lock: readers rdlock, reload wrlocks */
    pthread_rwlock_t conn_lock;
    pthread_mutex_t reload_lock;      /* one reload at a time */
    pthread_key_t workspace_key;      /* per-thread amc_workspace for /v1/project */
    struct ama_batcher_ *batcher;
    ams_metric *m_search_seconds, *m_project_seconds, *m_batch_size, *m_ingest_points,
        *m_ingest_lines, *m_reloads;
};

/* Search micro-batcher (api/batch.c): queued searches with the same collection and parameters
 * share one ami_search() call, run by one of n_workers threads. With a window of 0 it starts
 * no thread and is disabled. */
typedef struct ama_batcher_ ama_batcher_;

ama_batcher_ *ama_batcher_new_(ama_ctx *ctx, long window_us, int n_workers);
void ama_batcher_free_(ama_batcher_ *b);
void ama_batcher_drain_(ama_batcher_ *b);
int ama_batcher_enabled_(ama_batcher_ *b);
void ama_batcher_enqueue_(ama_batcher_ *b, ama_search_job *job, ama_done_fn done, void *cls);

/* Creates a job that takes the queries of *req (left empty) and copies params (filter must
 * be NULL). modality is the query's modality name. NULL when out of memory. */
ama_search_job *ama_search_job_new_(const char *collection, ama_search_req_ *req,
                                    const ami_search_params *params, const char *modality,
                                    double started);
void ama_search_job_free_(ama_search_job *job);

/* Fills *resp with the ok envelope of one search result. */
void ama_search_response_(ama_response *resp, const ami_result *result, int with_payload,
                          double started);

double ama_now_s_(void);

/* Returns the offset of the first byte of s [len] that breaks UTF-8 (overlong forms,
 * surrogates and code points past U+10FFFF included), or len when s is valid UTF-8. */
size_t ama_utf8_invalid_at_(const unsigned char *s, size_t len);

#endif
