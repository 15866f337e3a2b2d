/* The libmicrohttpd daemon and the life cycle of one request.
 *
 * libmicrohttpd calls the access handler several times per request:
 *   1. headers received (*req_cls == NULL): allocate the request state, assign the request id,
 *      match the route, and reject early (404, 405, 401, 413 from Content-Length, 415) by
 *      queueing a response at once, before any body byte is read;
 *   2. body chunks (*upload_data_size > 0): append to the body buffer, growing it only while
 *      the total stays under max_body (413 otherwise), or stream into an ingest; every byte is
 *      consumed by setting *upload_data_size = 0;
 *   3. body complete (*upload_data_size == 0 after step 1): run the handler, queue the response;
 *      a batchable search instead suspends the connection until the micro-batcher has stored
 *      its response and resumed it, and the call after the resume queues that response.
 * The completion callback writes the access log line, records metrics and frees the state, for
 * every request including the ones the client abandoned.
 *
 * Invariants: a request state is owned by its connection from step 1 to the completion
 * callback; in_flight counts the states alive; once a request has an error decided in steps 2-3
 * the remaining body is discarded, not stored. */
#include "server/http.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <microhttpd.h>

#include "server/log.h"
#include "server/metrics.h"

#define REQ_ID_MAX 64

struct ams_http {
    struct MHD_Daemon *daemon;
    ama_ctx *api;
    amcfg_config cfg;
    pthread_mutex_t lock;
    pthread_cond_t idle;
    int in_flight;
    atomic_ulong next_id;
    atomic_int closing;              /* set by ams_http_quiesce(): new requests get 503 */
    unsigned long id_salt;
    ams_metric *m_requests, *m_duration, *m_errors, *m_in_flight, *m_body_bytes;
};

/* States of a search handed to the micro-batcher: the connection is suspended from QUEUED
 * until the batcher has stored the response (ANSWERED) and resumed it. */
enum { SEARCH_NONE = 0, SEARCH_QUEUED, SEARCH_ANSWERED, SEARCH_SENT };

typedef struct req_state {
    ams_http *http;
    char req_id[REQ_ID_MAX + 1];
    char method[16];
    char path[1024];                 /* the request path; longer paths get 414 */
    ama_route route;
    int route_ok;
    double started;                  /* CLOCK_MONOTONIC seconds */
    int status;                      /* status of the queued response, 0 before */
    const char *error_code;          /* of the queued response */
    char *body;
    size_t body_len, body_cap;
    size_t bytes_in;
    ama_ingest *ingest;
    struct MHD_Connection *conn;
    atomic_int search_state;         /* SEARCH_* of a micro-batched search */
    ama_response search_resp;        /* its response, set by the batcher thread */
    char cors_origin[256];           /* Origin to echo in CORS headers, "" when none */
    int late_status;                 /* error decided while the body was arriving, 0 if none */
    const char *late_code;
    char late_msg[256];
} req_state;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---------------------------------------------------------------------------------------
 * Responses
 * ------------------------------------------------------------------------------------- */

static const char *status_class(int status)
{
    static const char *const classes[] = {"1xx", "2xx", "3xx", "4xx", "5xx"};
    int c = status / 100;
    return (c >= 1 && c <= 5) ? classes[c - 1] : "other";
}

/* ---------------------------------------------------------------------------------------
 * CORS: browser pages on the origins listed in cors_origins may call the API
 * ------------------------------------------------------------------------------------- */

static enum MHD_Result send_response(struct MHD_Connection *conn, req_state *rs,
                                     ama_response *resp, const char *allow);

#define CORS_METHODS "GET, POST, PUT, DELETE, OPTIONS"
#define CORS_HEADERS "Authorization, Content-Type, X-Request-Id"
#define CORS_MAX_AGE "600"

/* Returns 1 when origin appears in the comma-separated list (spaces around entries ignored),
 * or the list contains "*". */
static int origin_listed(const char *list, const char *origin)
{
    size_t want = strlen(origin);
    const char *p = list;

    while (*p != '\0') {
        while (*p == ' ' || *p == ',')
            p++;
        const char *end = p;
        while (*end != '\0' && *end != ',')
            end++;
        const char *last = end;
        while (last > p && last[-1] == ' ')
            last--;
        size_t len = (size_t)(last - p);
        if ((len == 1 && *p == '*') || (len == want && len > 0 && memcmp(p, origin, len) == 0))
            return 1;
        p = end;
    }
    return 0;
}

/* Records the request's Origin in rs when CORS is on and the origin is allowed. Returns 1 when
 * the request carries an Origin that CORS does not allow, 0 otherwise. */
static int note_cors_origin(const ams_http *http, struct MHD_Connection *conn, req_state *rs)
{
    const char *origin = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Origin");

    if (http->cfg.cors_origins[0] == '\0' || origin == NULL)
        return 0;
    if (strlen(origin) >= sizeof rs->cors_origin || !origin_listed(http->cfg.cors_origins, origin))
        return 1;
    snprintf(rs->cors_origin, sizeof rs->cors_origin, "%s", origin);
    return 0;
}

static void add_cors_headers(struct MHD_Response *r, const req_state *rs)
{
    if (rs->cors_origin[0] == '\0')
        return;
    MHD_add_response_header(r, "Access-Control-Allow-Origin", rs->cors_origin);
    MHD_add_response_header(r, "Access-Control-Expose-Headers", "X-Request-Id");
    MHD_add_response_header(r, "Vary", "Origin");
}

/* Responds to a CORS preflight (OPTIONS with Access-Control-Request-Method): 204 with the allowed
 * methods and headers for a listed origin, 403 for any other. */
static enum MHD_Result send_preflight(struct MHD_Connection *conn, req_state *rs, int denied)
{
    if (denied || rs->cors_origin[0] == '\0') {
        ama_response resp;
        ama_error_response(&resp, 403, "origin_not_allowed",
                           "origin is not in cors_origins; add it to the server's cors_origins "
                           "option to call the API from that page");
        return send_response(conn, rs, &resp, NULL);
    }
    struct MHD_Response *r = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    if (r == NULL)
        return MHD_NO;
    MHD_add_response_header(r, "X-Request-Id", rs->req_id);
    MHD_add_response_header(r, "Access-Control-Allow-Methods", CORS_METHODS);
    MHD_add_response_header(r, "Access-Control-Allow-Headers", CORS_HEADERS);
    MHD_add_response_header(r, "Access-Control-Max-Age", CORS_MAX_AGE);
    add_cors_headers(r, rs);
    rs->status = 204;
    enum MHD_Result ret = MHD_queue_response(conn, 204, r);
    MHD_destroy_response(r);
    return ret;
}

/* Queues resp (taking its body) with the request id echoed; returns the MHD result. */
static enum MHD_Result send_response(struct MHD_Connection *conn, req_state *rs,
                                     ama_response *resp, const char *allow)
{
    /* A 503 from /readyz is the answer to the question asked, not a failure. */
    int not_ready = rs->route_ok && rs->route.id == AMA_ROUTE_READYZ;
    if (resp->status >= 500 && !not_ready) {
        char quoted[700];
        AMS_LOG_LIMITED(AMS_LOG_ERROR, "request_failed", "req_id=%s route=%s status=%d body=%s",
                        rs->req_id, rs->route_ok ? rs->route.name : "-", resp->status,
                        ams_log_quote(quoted, sizeof quoted, resp->body));
    }
    struct MHD_Response *r = MHD_create_response_from_buffer(resp->body_len, resp->body,
                                                             MHD_RESPMEM_MUST_FREE);
    if (r == NULL) {
        free(resp->body);
        resp->body = NULL;
        return MHD_NO;
    }
    resp->body = NULL;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                            resp->content_type ? resp->content_type : "application/json");
    MHD_add_response_header(r, "X-Request-Id", rs->req_id);
    if (allow != NULL)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
    if (resp->status == 401)
        MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"altmoe\"");
    add_cors_headers(r, rs);
    if (atomic_load(&rs->http->closing))
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    rs->status = resp->status;
    rs->error_code = resp->error_code;
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned int)resp->status, r);
    MHD_destroy_response(r);
    return ret;
}

/* ---------------------------------------------------------------------------------------
 * Step 1: headers
 * ------------------------------------------------------------------------------------- */

/* Uses the client's X-Request-Id when it is 1..64 bytes of [A-Za-z0-9._-], else makes one. */
static void assign_request_id(ams_http *http, struct MHD_Connection *conn, req_state *rs)
{
    const char *given = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Request-Id");
    size_t n = given ? strlen(given) : 0;
    int ok = n >= 1 && n <= REQ_ID_MAX;
    for (size_t i = 0; ok && i < n; i++) {
        char c = given[i];
        ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
             c == '.' || c == '_' || c == '-';
    }
    if (ok) {
        memcpy(rs->req_id, given, n + 1);
        return;
    }
    unsigned long seq = atomic_fetch_add(&http->next_id, 1);
    snprintf(rs->req_id, sizeof rs->req_id, "%08lx%08lx", http->id_salt & 0xffffffffUL,
             seq & 0xffffffffUL);
}

/* Returns 1 when the media type of header (parameters ignored) equals want. */
static int media_type_is(const char *header, const char *want)
{
    if (header == NULL)
        return 0;
    size_t n = strcspn(header, ";");
    while (n > 0 && (header[n - 1] == ' ' || header[n - 1] == '\t'))
        n--;
    return n == strlen(want) && strncasecmp(header, want, n) == 0;
}

/* Decides what can be decided from the head alone; returns 0 to go on reading the body, or
 * fills *resp (and *allow for 405) and returns its status. */
static int check_head(ams_http *http, struct MHD_Connection *conn, req_state *rs,
                      ama_response *resp, const char **allow)
{
    int st = ama_route_match(rs->method, rs->path, &rs->route, resp, allow);
    if (st != 0)
        return st;
    rs->route_ok = 1;
    if (rs->route.admin) {
        const char *auth = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                       MHD_HTTP_HEADER_AUTHORIZATION);
        if ((st = ama_check_admin(http->api, auth, resp)) != 0)
            return st;
    }
    if (!rs->route.has_body)
        return 0;

    /* Body routes: the size cap from Content-Length, then the media type. */
    const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl != NULL && strtoull(cl, NULL, 10) > (unsigned long long)http->cfg.max_body_bytes) {
        ama_error_response(resp, 413, "body_too_large",
                           "request body of %s bytes is over the limit of %lld bytes (max_body)",
                           cl, (long long)http->cfg.max_body_bytes);
        return 413;
    }
    const char *ct = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_CONTENT_TYPE);
    if (rs->route.id == AMA_ROUTE_ADMIN_INGEST) {
        if (media_type_is(ct, "application/x-ndjson") || media_type_is(ct, "application/jsonl") ||
            media_type_is(ct, "application/octet-stream"))
            return 0;
        ama_error_response(resp, 415, "unsupported_media_type",
                           "Content-Type must be application/x-ndjson or "
                           "application/octet-stream for ingest");
        return 415;
    }
    if (!media_type_is(ct, "application/json")) {
        ama_error_response(resp, 415, "unsupported_media_type",
                           "Content-Type must be application/json");
        return 415;
    }
    return 0;
}

static ama_request make_request(struct MHD_Connection *conn, req_state *rs)
{
    ama_request req;
    memset(&req, 0, sizeof req);
    req.route = &rs->route;
    req.content_type = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                   MHD_HTTP_HEADER_CONTENT_TYPE);
    req.query_modality = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "modality");
    req.body = rs->body;
    req.body_len = rs->body_len;
    req.started_s = rs->started;
    return req;
}

static enum MHD_Result on_headers(ams_http *http, struct MHD_Connection *conn, req_state *rs)
{
    ama_response resp;
    memset(&resp, 0, sizeof resp);
    const char *allow = NULL;
    if (check_head(http, conn, rs, &resp, &allow) != 0)
        return send_response(conn, rs, &resp, allow);

    if (rs->route.id == AMA_ROUTE_ADMIN_INGEST) {
        ama_request req = make_request(conn, rs);
        rs->ingest = ama_ingest_begin(http->api, &req, &resp);
        if (rs->ingest == NULL)
            return send_response(conn, rs, &resp, NULL);
    }
    return MHD_YES;
}

/* ---------------------------------------------------------------------------------------
 * Step 2: body chunks
 * ------------------------------------------------------------------------------------- */

static void set_late_error(req_state *rs, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void set_late_error(req_state *rs, int status, const char *code, const char *fmt, ...)
{
    if (rs->late_status != 0)
        return;
    rs->late_status = status;
    rs->late_code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rs->late_msg, sizeof rs->late_msg, fmt, ap);
    va_end(ap);
}

static enum MHD_Result on_body(ams_http *http, req_state *rs, const char *data, size_t len)
{
    rs->bytes_in += len;
    if (rs->late_status != 0) {
        /* Discard, but do not wait forever on a client that keeps sending. */
        double limit = (double)http->cfg.request_timeout_ms * 1e-3;
        return now_s() - rs->started > limit ? MHD_NO : MHD_YES;
    }
    if (rs->bytes_in > (size_t)http->cfg.max_body_bytes) {
        set_late_error(rs, 413, "body_too_large", "request body is over the limit of %lld "
                       "bytes (max_body)", (long long)http->cfg.max_body_bytes);
        return MHD_YES;
    }
    /* An ingest streams for as long as its body is, so only the idle timeout applies to it. */
    if (rs->ingest == NULL &&
        now_s() - rs->started > (double)http->cfg.request_timeout_ms * 1e-3) {
        set_late_error(rs, 503, "timeout", "request body took longer than %lld ms "
                       "(request_timeout)", (long long)http->cfg.request_timeout_ms);
        return MHD_YES;
    }
    if (rs->ingest != NULL) {
        ama_ingest_feed(rs->ingest, data, len);
        return MHD_YES;
    }
    if (!rs->route.has_body)
        return MHD_YES; /* a body on a GET or DELETE is ignored */

    /* Grow geometrically, never past the cap (checked above) plus the NUL. */
    if (rs->body_len + len + 1 > rs->body_cap) {
        size_t cap = rs->body_cap ? rs->body_cap : 4096;
        while (cap < rs->body_len + len + 1)
            cap *= 2;
        if (cap > (size_t)http->cfg.max_body_bytes + 1)
            cap = (size_t)http->cfg.max_body_bytes + 1;
        char *grown = realloc(rs->body, cap);
        if (grown == NULL) {
            set_late_error(rs, 503, "out_of_memory", "cannot buffer the request body of %zu "
                           "bytes now; retry later", rs->body_len + len);
            return MHD_YES;
        }
        rs->body = grown;
        rs->body_cap = cap;
    }
    memcpy(rs->body + rs->body_len, data, len);
    rs->body_len += len;
    rs->body[rs->body_len] = '\0';
    return MHD_YES;
}

/* ---------------------------------------------------------------------------------------
 * Step 3: body complete
 * ------------------------------------------------------------------------------------- */

/* Batcher thread: stores the response and resumes the connection, which then calls the access
 * handler again to queue it. rs must not be touched after the resume. */
static void search_answered(void *cls, ama_response *resp)
{
    req_state *rs = cls;
    rs->search_resp = *resp;
    resp->body = NULL;
    atomic_store(&rs->search_state, SEARCH_ANSWERED);
    MHD_resume_connection(rs->conn);
}

static enum MHD_Result on_complete(ams_http *http, struct MHD_Connection *conn, req_state *rs)
{
    ama_response resp;
    memset(&resp, 0, sizeof resp);
    if (rs->late_status != 0 && rs->ingest != NULL) {
        /* Batches committed before the error stay; the pending partial batch is dropped. */
        ama_error_response(&resp, rs->late_status, rs->late_code, "%s; %ld points were "
                           "committed before it", rs->late_msg, ama_ingest_accepted(rs->ingest));
        return send_response(conn, rs, &resp, NULL);
    }
    if (rs->late_status != 0) {
        ama_error_response(&resp, rs->late_status, rs->late_code, "%s", rs->late_msg);
        return send_response(conn, rs, &resp, NULL);
    }
    if (rs->ingest != NULL) {
        ama_ingest_finish(rs->ingest, &resp);
        return send_response(conn, rs, &resp, NULL);
    }
    ama_request req = make_request(conn, rs);
    if (req.body == NULL)
        req.body = "";
    if (rs->route.id == AMA_ROUTE_SEARCH) {
        ama_search_job *job = ama_search_prepare(http->api, &req, &resp);
        if (job != NULL) {
            /* Suspend first, so that the batcher's resume can never come before it. */
            rs->conn = conn;
            atomic_store(&rs->search_state, SEARCH_QUEUED);
            MHD_suspend_connection(conn);
            ama_search_enqueue(http->api, job, search_answered, rs);
            return MHD_YES;
        }
        return send_response(conn, rs, &resp, NULL);
    }
    ama_handle(http->api, &req, &resp);
    return send_response(conn, rs, &resp, NULL);
}

static enum MHD_Result access_handler(void *cls, struct MHD_Connection *conn, const char *url,
                                      const char *method, const char *version,
                                      const char *upload_data, size_t *upload_data_size,
                                      void **req_cls)
{
    (void)version;
    ams_http *http = cls;
    req_state *rs = *req_cls;
    if (rs == NULL) {
        rs = calloc(1, sizeof *rs);
        if (rs == NULL)
            return MHD_NO;
        rs->http = http;
        rs->started = now_s();
        snprintf(rs->method, sizeof rs->method, "%s", method);
        snprintf(rs->path, sizeof rs->path, "%s", url);
        assign_request_id(http, conn, rs);
        *req_cls = rs;
        pthread_mutex_lock(&http->lock);
        http->in_flight++;
        pthread_mutex_unlock(&http->lock);
        int cors_denied = note_cors_origin(http, conn, rs);
        if (atomic_load(&http->closing)) {
            ama_response resp;
            ama_error_response(&resp, 503, "busy", "the server is shutting down; retry on "
                               "another instance");
            return send_response(conn, rs, &resp, NULL);
        }
        if (strlen(url) >= sizeof rs->path) {
            ama_response resp;
            ama_error_response(&resp, 414, "uri_too_long", "request path is longer than %zu "
                               "bytes", sizeof rs->path - 1);
            return send_response(conn, rs, &resp, NULL);
        }
        if (http->cfg.cors_origins[0] != '\0' && strcmp(method, "OPTIONS") == 0 &&
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                        "Access-Control-Request-Method") != NULL)
            return send_preflight(conn, rs, cors_denied);
        return on_headers(http, conn, rs);
    }
    int search_state = atomic_load(&rs->search_state);
    if (search_state == SEARCH_ANSWERED) {
        ama_response resp = rs->search_resp;
        memset(&rs->search_resp, 0, sizeof rs->search_resp);
        atomic_store(&rs->search_state, SEARCH_SENT);
        return send_response(conn, rs, &resp, NULL);
    }
    if (rs->status != 0 || search_state == SEARCH_QUEUED) {
        *upload_data_size = 0; /* response already queued or on its way: discard */
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        enum MHD_Result ret = on_body(http, rs, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return ret;
    }
    return on_complete(http, conn, rs);
}

/* ---------------------------------------------------------------------------------------
 * Completion: access log, metrics, free
 * ------------------------------------------------------------------------------------- */

static const char *termination_name(enum MHD_RequestTerminationCode toe)
{
    switch (toe) {
    case MHD_REQUEST_TERMINATED_COMPLETED_OK: return "ok";
    case MHD_REQUEST_TERMINATED_WITH_ERROR: return "error";
    case MHD_REQUEST_TERMINATED_TIMEOUT_REACHED: return "timeout";
    case MHD_REQUEST_TERMINATED_DAEMON_SHUTDOWN: return "shutdown";
    case MHD_REQUEST_TERMINATED_READ_ERROR: return "read_error";
    case MHD_REQUEST_TERMINATED_CLIENT_ABORT: return "client_abort";
    }
    return "unknown";
}

static void record_metrics(ams_http *http, const req_state *rs, double seconds)
{
    const char *route = rs->route_ok ? rs->route.name : "unmatched";
    char labels[160] = "";
    ams_metrics_label(labels, sizeof labels, "route", route);
    ams_metrics_label(labels, sizeof labels, "class", status_class(rs->status));
    ams_metric_add(http->m_requests, labels, 1);
    ams_metric_observe(http->m_duration, labels, seconds);
    if (rs->error_code != NULL) {
        char elabels[160] = "";
        ams_metrics_label(elabels, sizeof elabels, "route", route);
        ams_metrics_label(elabels, sizeof elabels, "code", rs->error_code);
        ams_metric_add(http->m_errors, elabels, 1);
    }
    ams_metric_add(http->m_body_bytes, "", (double)rs->bytes_in);
}

static void request_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
                              enum MHD_RequestTerminationCode toe)
{
    (void)conn;
    ams_http *http = cls;
    req_state *rs = *req_cls;
    if (rs == NULL)
        return;
    double seconds = now_s() - rs->started;
    char qpath[300];
    AMS_LOG(rs->status >= 500 ? AMS_LOG_WARN : AMS_LOG_INFO, "access",
            "req_id=%s method=%s path=%s route=%s status=%d code=%s bytes_in=%zu ms=%.3f end=%s",
            rs->req_id, rs->method, ams_log_quote(qpath, sizeof qpath, rs->path),
            rs->route_ok ? rs->route.name : "-", rs->status,
            rs->error_code ? rs->error_code : "-", rs->bytes_in, seconds * 1e3,
            termination_name(toe));
    record_metrics(http, rs, seconds);

    ama_ingest_free(rs->ingest);
    free(rs->search_resp.body);
    free(rs->body);
    free(rs);
    *req_cls = NULL;

    pthread_mutex_lock(&http->lock);
    http->in_flight--;
    if (http->in_flight == 0)
        pthread_cond_broadcast(&http->idle);
    pthread_mutex_unlock(&http->lock);
}

/* ---------------------------------------------------------------------------------------
 * Daemon
 * ------------------------------------------------------------------------------------- */

static void mhd_logger(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    msg[strcspn(msg, "\n")] = '\0';
    char quoted[600];
    AMS_LOG_LIMITED(AMS_LOG_WARN, "http_library", "message=%s",
                    ams_log_quote(quoted, sizeof quoted, msg));
}

static void register_metrics(ams_http *http)
{
    http->m_requests = ams_metrics_register("altmoe_http_requests_total",
        "HTTP requests by route and status class.", AMS_COUNTER, NULL, 0);
    http->m_duration = ams_metrics_register("altmoe_http_request_duration_seconds",
        "HTTP request duration from the first header byte to the response, by route and "
        "status class.", AMS_HISTOGRAM, ams_latency_buckets, ams_latency_bucket_count);
    http->m_errors = ams_metrics_register("altmoe_http_errors_total",
        "HTTP error responses by route and error code.", AMS_COUNTER, NULL, 0);
    http->m_body_bytes = ams_metrics_register("altmoe_http_request_body_bytes_total",
        "Request body bytes received.", AMS_COUNTER, NULL, 0);
}

/* Parses cfg->listen into addr; returns 4 or 6, or 0 when it is not a numeric address. */
static int parse_listen(const amcfg_config *cfg, struct sockaddr_storage *addr)
{
    memset(addr, 0, sizeof *addr);
    struct sockaddr_in *v4 = (struct sockaddr_in *)addr;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)addr;
    if (inet_pton(AF_INET, cfg->listen, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)cfg->port);
        return 4;
    }
    if (inet_pton(AF_INET6, cfg->listen, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)cfg->port);
        return 6;
    }
    return 0;
}

amc_status ams_http_start(ams_http **out, const amcfg_config *cfg, ama_ctx *api, amc_error *err)
{
    *out = NULL;
    struct sockaddr_storage addr;
    int family = parse_listen(cfg, &addr);
    if (family == 0)
        return amc_error_set(err, AMC_EINVAL, "option 'listen': '%.64s' is not a numeric IPv4 "
                             "or IPv6 address", cfg->listen);
    ams_http *http = calloc(1, sizeof *http);
    if (http == NULL)
        return amc_error_set(err, AMC_ENOMEM, "out of memory starting the HTTP server");
    http->api = api;
    http->cfg = *cfg;
    pthread_mutex_init(&http->lock, NULL);
    pthread_cond_init(&http->idle, NULL);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    http->id_salt = (unsigned long)ts.tv_nsec ^ ((unsigned long)ts.tv_sec << 16);
    register_metrics(http);

    unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ITC |
                         MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG |
                         (family == 6 ? MHD_USE_IPv6 : 0);
    http->daemon = MHD_start_daemon(
        flags, (uint16_t)cfg->port, NULL, NULL, access_handler, http,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, http,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
        /* One thread means the polling thread alone; libmicrohttpd warns about a pool of 1. */
        MHD_OPTION_THREAD_POOL_SIZE, cfg->threads > 1 ? (unsigned int)cfg->threads : 0u,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned int)cfg->max_connections,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)cfg->connection_timeout_s,
        MHD_OPTION_NOTIFY_COMPLETED, request_completed, http,
        MHD_OPTION_END);
    if (http->daemon == NULL) {
        ams_http_stop(http);
        return amc_error_set(err, AMC_EIO, "cannot listen on %s port %lld: address in use, not "
                             "local, or not permitted; pick another 'listen' or 'port'",
                             cfg->listen, (long long)cfg->port);
    }
    *out = http;
    return AMC_OK;
}

void ams_http_quiesce(ams_http *http)
{
    /* MHD_quiesce_daemon() is not used: with a thread pool and epoll it races the worker
     * threads over the listening socket, and libmicrohttpd 0.9.75 then aborts the process
     * ("Failed to remove listen FD from epoll set"), seen during a SIGTERM in the fault
     * tests. New connections are still accepted until ams_http_stop(), but every new request
     * gets 503 busy and every response closes its connection. */
    if (http != NULL)
        atomic_store(&http->closing, 1);
}

int ams_http_wait_idle(ams_http *http, long timeout_ms)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&http->lock);
    while (http->in_flight > 0) {
        if (pthread_cond_timedwait(&http->idle, &http->lock, &deadline) != 0)
            break;
    }
    int left = http->in_flight;
    pthread_mutex_unlock(&http->lock);
    return left;
}

void ams_http_stop(ams_http *http)
{
    if (http == NULL)
        return;
    if (http->daemon != NULL)
        MHD_stop_daemon(http->daemon);
    pthread_cond_destroy(&http->idle);
    pthread_mutex_destroy(&http->lock);
    free(http);
}
