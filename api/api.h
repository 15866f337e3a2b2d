/* HTTP route handlers of altmoe: request parsing and validation, response envelopes, the
 * mapping of errors to status codes, admin authentication and search micro-batching.
 *
 * This module does not use sockets. The server (server/http.c) matches a route with
 * ama_route_match(), collects the body (or streams it into an ingest), and hands a finished
 * ama_request to ama_handle(). Every response body is one JSON envelope:
 *   {"status":"ok","result":...,"time_ms":1.25}
 *   {"status":"error","error":{"code":"invalid_field","message":"..."}}
 * except GET /metrics (Prometheus text). The error codes and their HTTP statuses are listed in
 * docs/api.md. */
#ifndef ALTMOE_API_API_H
#define ALTMOE_API_API_H

#include <stddef.h>

#include "config/config.h"
#include "core/connector.h"
#include "core/error.h"
#include "index/store.h"

typedef enum ama_route_id {
    AMA_ROUTE_HEALTHZ,
    AMA_ROUTE_READYZ,
    AMA_ROUTE_METRICS,
    AMA_ROUTE_MODEL,
    AMA_ROUTE_COLLECTION_CREATE,
    AMA_ROUTE_COLLECTION_LIST,
    AMA_ROUTE_COLLECTION_GET,
    AMA_ROUTE_COLLECTION_DROP,
    AMA_ROUTE_POINTS_UPSERT,
    AMA_ROUTE_POINT_GET,
    AMA_ROUTE_POINT_DELETE,
    AMA_ROUTE_SEARCH,
    AMA_ROUTE_SEARCH_BATCH,
    AMA_ROUTE_PROJECT,
    AMA_ROUTE_ADMIN_INGEST,
    AMA_ROUTE_ADMIN_SNAPSHOT,
    AMA_ROUTE_ADMIN_RELOAD,
    AMA_ROUTE_COUNT
} ama_route_id;

typedef struct ama_route {
    ama_route_id id;
    const char *name;                 /* stable label for logs and metrics, e.g. "search" */
    int admin;                        /* 1: needs the bearer token */
    int has_body;                     /* 1: the route reads a request body */
    char collection[AMI_NAME_MAX];    /* {name} of the path, when the route has one */
    char point_id[AMI_ID_MAX + 1];    /* {id} of the path, when the route has one */
} ama_route;

/* A response: HTTP status, a malloc'd body the caller frees, its content type and, for an
 * error, its code (both static strings). */
typedef struct ama_response {
    int status;
    char *body;
    size_t body_len;
    const char *content_type;
    const char *error_code;           /* NULL on success */
} ama_response;

/* Matches method and path (already percent-decoded, without the query string). Returns 0 and
 * fills *route, or fills *resp with a 404 (no such path, or a collection name / point id too
 * long) or 405 (path exists, method does not; *allow then names the allowed methods) error and
 * returns the status. */
int ama_route_match(const char *method, const char *path, ama_route *route, ama_response *resp,
                    const char **allow);

typedef struct ama_ctx ama_ctx;

/* Creates the API state over store st and connector conn. Both are borrowed, but the API takes
 * ownership of conn: a model reload replaces it and ama_ctx_free() frees the one in use. cfg is
 * copied. Registers the API's metric families. */
amc_status ama_ctx_create(ama_ctx **out, const amcfg_config *cfg, ami_store *st,
                          amc_connector *conn, amc_error *err);

/* Answers every search queued for the micro-batcher and stops its threads; searches started
 * later run without batching. Call while the HTTP daemon still runs, so that the suspended
 * connections can be resumed. */
void ama_ctx_drain(ama_ctx *ctx);

/* Stops the micro-batcher (answering what it still has queued) and frees the state and the
 * connector in use; the store is left to the caller. No request may be in flight. */
void ama_ctx_free(ama_ctx *ctx);

/* A request with its complete body, as the server hands it over. Strings are borrowed. */
typedef struct ama_request {
    const ama_route *route;
    const char *content_type;         /* Content-Type header or NULL */
    const char *query_modality;       /* ?modality= of the binary ingest form, or NULL */
    const char *body;
    size_t body_len;
    double started_s;                 /* CLOCK_MONOTONIC seconds at the first byte */
} ama_request;

/* Runs the route's handler and fills *resp (never fails: errors become error envelopes). */
void ama_handle(ama_ctx *ctx, const ama_request *req, ama_response *resp);

/* A search waiting for the micro-batcher; see ama_search_prepare(). */
typedef struct ama_search_job ama_search_job;

/* Receives the response of a queued search, from the batcher thread. Takes ownership of
 * resp->body. Called exactly once per job. */
typedef void (*ama_done_fn)(void *cls, ama_response *resp);

/* Starts POST /v1/collections/{name}/search. Returns NULL with *resp filled when the request
 * gets its response at once: a validation error, a search with a filter, or batching disabled
 * (batch_window 0). Otherwise returns a validated job, which the caller passes to
 * ama_search_enqueue() once it is ready to be called back (after suspending the
 * connection). */
ama_search_job *ama_search_prepare(ama_ctx *ctx, const ama_request *req, ama_response *resp);

/* Queues job (taking ownership) for the next micro-batch; done(cls, resp) follows from the
 * batcher thread, within about batch_window microseconds plus the search time. */
void ama_search_enqueue(ama_ctx *ctx, ama_search_job *job, ama_done_fn done, void *cls);

/* Fills *resp with an error envelope; for the server's own errors (413, 415, 503). code is a
 * stable error code from docs/api.md. */
void ama_error_response(ama_response *resp, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Checks the admin bearer token in constant time. Returns 0, or fills *resp with 401 and
 * returns 401. */
int ama_check_admin(const ama_ctx *ctx, const char *authorization, ama_response *resp);

/* Streaming ingest of POST /admin/v1/collections/{name}/ingest. The body is either NDJSON
 * (Content-Type application/x-ndjson: one point per line, the fields of an upsert item) or the
 * binary float32 form (Content-Type application/octet-stream with ?modality=M: records of a
 * little-endian uint16 id length, the id bytes, then dim float32 values). Points are committed
 * every ingest_batch points; a rejected line is reported by its number and reason and does not
 * stop the ingest. */
typedef struct ama_ingest ama_ingest;

/* Validates the request head (collection, content type, modality) and starts an ingest.
 * Returns NULL and fills *resp on an error. */
ama_ingest *ama_ingest_begin(ama_ctx *ctx, const ama_request *req, ama_response *resp);

/* Consumes len bytes of body. Returns 0, or -1 when the ingest hit a store error (disk full,
 * I/O) after which further data is discarded and ama_ingest_finish() reports the error. */
int ama_ingest_feed(ama_ingest *ing, const char *data, size_t len);

/* Commits what is pending and fills *resp with the counts; frees nothing. */
void ama_ingest_finish(ama_ingest *ing, ama_response *resp);

/* Returns the number of points committed so far. */
long ama_ingest_accepted(const ama_ingest *ing);

/* Frees the ingest; NULL is allowed. */
void ama_ingest_free(ama_ingest *ing);

/* Parses and validates the body of route (a body route; for the ingest route, one NDJSON line)
 * without touching the store, for tests and the fuzz target: returns the HTTP status the body
 * would get from validation alone (200 when it is valid). conn supplies the modalities and
 * dims. */
int ama_validate_body(const amc_connector *conn, ama_route_id route, const char *body,
                      size_t len, int max_k);

#endif
