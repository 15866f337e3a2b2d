/* The API state, route table, response envelopes, admin authentication and the handlers of
 * every route except the streaming ingest (api/ingest.c). */
#include "api/internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/fault.h"
#include "core/model_io.h"
#include "server/log.h"

#ifndef ALTMOE_VERSION
#define ALTMOE_VERSION "0.1.0"
#endif

double ama_now_s_(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---------------------------------------------------------------------------------------
 * Envelopes
 * ------------------------------------------------------------------------------------- */

/* Takes ownership of body (a cJSON object) and renders the envelope into resp. */
static void ok_response(ama_response *resp, int status, cJSON *result, double started)
{
    cJSON *env = cJSON_CreateObject();
    memset(resp, 0, sizeof *resp);
    if (env != NULL) {
        cJSON_AddStringToObject(env, "status", "ok");
        cJSON_AddItemToObject(env, "result", result ? result : cJSON_CreateNull());
        cJSON_AddNumberToObject(env, "time_ms", round((ama_now_s_() - started) * 1e6) / 1e3);
        resp->body = cJSON_PrintUnformatted(env);
        cJSON_Delete(env);
    } else {
        cJSON_Delete(result);
    }
    if (resp->body == NULL) {
        ama_error_response(resp, 503, "out_of_memory", "out of memory rendering the response");
        return;
    }
    resp->status = status;
    resp->body_len = strlen(resp->body);
    resp->content_type = "application/json";
}

void ama_error_response(ama_response *resp, int status, const char *code, const char *fmt, ...)
{
    char msg[AMC_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    memset(resp, 0, sizeof *resp);
    resp->status = status;
    resp->error_code = code;
    resp->content_type = "application/json";

    cJSON *env = cJSON_CreateObject();
    cJSON *error = cJSON_CreateObject();
    if (env != NULL && error != NULL) {
        cJSON_AddStringToObject(env, "status", "error");
        cJSON_AddStringToObject(error, "code", code);
        cJSON_AddStringToObject(error, "message", msg);
        cJSON_AddItemToObject(env, "error", error);
        error = NULL;
        resp->body = cJSON_PrintUnformatted(env);
    }
    cJSON_Delete(error);
    cJSON_Delete(env);
    if (resp->body == NULL) {
        /* Last resort without allocation through cJSON. */
        resp->body = strdup("{\"status\":\"error\",\"error\":{\"code\":\"out_of_memory\","
                            "\"message\":\"out of memory\"}}");
        resp->status = 503;
        resp->error_code = "out_of_memory";
    }
    resp->body_len = resp->body ? strlen(resp->body) : 0;
}

static void fail_response(ama_response *resp, const ama_fail_ *f)
{
    ama_error_response(resp, f->status, f->code, "%s", f->msg);
}

/* ---------------------------------------------------------------------------------------
 * Routes
 * ------------------------------------------------------------------------------------- */

typedef struct route_def {
    ama_route_id id;
    const char *method;
    const char *pattern;           /* '*' is one path segment ({name}); '+' is the rest ({id}) */
    const char *name;
    int admin, has_body;
} route_def;

static const route_def routes[] = {
    {AMA_ROUTE_HEALTHZ, "GET", "/healthz", "healthz", 0, 0},
    {AMA_ROUTE_READYZ, "GET", "/readyz", "readyz", 0, 0},
    {AMA_ROUTE_METRICS, "GET", "/metrics", "metrics", 0, 0},
    {AMA_ROUTE_MODEL, "GET", "/v1/model", "model", 0, 0},
    {AMA_ROUTE_COLLECTION_CREATE, "POST", "/v1/collections", "collection_create", 0, 1},
    {AMA_ROUTE_COLLECTION_LIST, "GET", "/v1/collections", "collection_list", 0, 0},
    {AMA_ROUTE_COLLECTION_GET, "GET", "/v1/collections/*", "collection_get", 0, 0},
    {AMA_ROUTE_COLLECTION_DROP, "DELETE", "/v1/collections/*", "collection_drop", 0, 0},
    {AMA_ROUTE_POINTS_UPSERT, "PUT", "/v1/collections/*/points", "points_upsert", 0, 1},
    {AMA_ROUTE_POINT_GET, "GET", "/v1/collections/*/points/+", "point_get", 0, 0},
    {AMA_ROUTE_POINT_DELETE, "DELETE", "/v1/collections/*/points/+", "point_delete", 0, 0},
    {AMA_ROUTE_SEARCH, "POST", "/v1/collections/*/search", "search", 0, 1},
    {AMA_ROUTE_SEARCH_BATCH, "POST", "/v1/collections/*/search/batch", "search_batch", 0, 1},
    {AMA_ROUTE_PROJECT, "POST", "/v1/project", "project", 0, 1},
    {AMA_ROUTE_ADMIN_INGEST, "POST", "/admin/v1/collections/*/ingest", "admin_ingest", 1, 1},
    {AMA_ROUTE_ADMIN_SNAPSHOT, "POST", "/admin/v1/snapshot", "admin_snapshot", 1, 0},
    {AMA_ROUTE_ADMIN_RELOAD, "POST", "/admin/v1/model/reload", "admin_reload", 1, 0},
};

#define N_ROUTES ((int)(sizeof routes / sizeof routes[0]))

/* Matches path against pattern; captures '*' into name and '+' into id. Returns 1 on a match,
 * 0 otherwise, -1 when a capture is too long for its buffer. */
static int match_pattern(const char *pattern, const char *path, char *name, size_t name_cap,
                         char *id, size_t id_cap)
{
    const char *p = pattern, *s = path;
    while (*p != '\0') {
        if (*p == '*' || *p == '+') {
            size_t n = *p == '*' ? strcspn(s, "/") : strlen(s);
            char *out = *p == '*' ? name : id;
            size_t cap = *p == '*' ? name_cap : id_cap;
            if (n == 0)
                return 0;
            if (n >= cap)
                return -1;
            memcpy(out, s, n);
            out[n] = '\0';
            s += n;
            p++;
            continue;
        }
        if (*p != *s)
            return 0;
        p++;
        s++;
    }
    return *s == '\0';
}

int ama_route_match(const char *method, const char *path, ama_route *route, ama_response *resp,
                    const char **allow)
{
    memset(route, 0, sizeof *route);
    *allow = NULL;
    const route_def *path_hit = NULL;
    static const char *const allow_by_route[AMA_ROUTE_COUNT] = {
        [AMA_ROUTE_COLLECTION_CREATE] = "GET, POST", [AMA_ROUTE_COLLECTION_LIST] = "GET, POST",
        [AMA_ROUTE_COLLECTION_GET] = "GET, DELETE", [AMA_ROUTE_COLLECTION_DROP] = "GET, DELETE",
        [AMA_ROUTE_POINT_GET] = "GET, DELETE", [AMA_ROUTE_POINT_DELETE] = "GET, DELETE",
        [AMA_ROUTE_POINTS_UPSERT] = "PUT"};

    for (int i = 0; i < N_ROUTES; i++) {
        int m = match_pattern(routes[i].pattern, path, route->collection,
                              sizeof route->collection, route->point_id,
                              sizeof route->point_id);
        if (m < 0) {
            ama_error_response(resp, 404, "not_found", "collection name or point id in the path "
                               "is too long (max %d and %d bytes)", AMI_NAME_MAX - 1,
                               AMI_ID_MAX);
            return 404;
        }
        if (m == 0)
            continue;
        if (strcmp(method, routes[i].method) == 0) {
            route->id = routes[i].id;
            route->name = routes[i].name;
            route->admin = routes[i].admin;
            route->has_body = routes[i].has_body;
            return 0;
        }
        path_hit = &routes[i];
    }
    if (path_hit != NULL) {
        *allow = allow_by_route[path_hit->id] ? allow_by_route[path_hit->id]
                                              : path_hit->method;
        ama_error_response(resp, 405, "method_not_allowed", "method %s is not allowed on this "
                           "path; use %s", method, *allow);
        return 405;
    }
    ama_error_response(resp, 404, "not_found", "no route for this path; see docs/api.md");
    return 404;
}

/* ---------------------------------------------------------------------------------------
 * Authentication
 * ------------------------------------------------------------------------------------- */

/* Compares in time that depends only on the length of the expected token. */
static int token_equal(const char *expected, const char *given)
{
    size_t n = strlen(expected), m = strlen(given);
    unsigned char diff = (unsigned char)(n != m);
    for (size_t i = 0; i < n; i++)
        diff |= (unsigned char)(expected[i] ^ (i < m ? given[i] : 0));
    return diff == 0;
}

int ama_check_admin(const ama_ctx *ctx, const char *authorization, ama_response *resp)
{
    if (ctx->cfg.admin_token[0] == '\0') {
        ama_error_response(resp, 401, "unauthorized", "admin routes are disabled; start the "
                           "server with admin_token or admin_token_file set");
        return 401;
    }
    if (authorization == NULL || strncasecmp(authorization, "Bearer ", 7) != 0) {
        ama_error_response(resp, 401, "unauthorized", "header 'Authorization' must be "
                           "'Bearer <admin token>'");
        return 401;
    }
    if (!token_equal(ctx->cfg.admin_token, authorization + 7)) {
        ama_error_response(resp, 401, "unauthorized", "header 'Authorization': the bearer "
                           "token is wrong");
        return 401;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------
 * JSON builders
 * ------------------------------------------------------------------------------------- */

static cJSON *float_array(const float *v, int n)
{
    cJSON *arr = cJSON_CreateArray();
    for (int i = 0; arr != NULL && i < n; i++)
        cJSON_AddItemToArray(arr, cJSON_CreateNumber((double)v[i]));
    return arr;
}

static cJSON *collection_json(const ami_collection_info *info)
{
    cJSON *c = cJSON_CreateObject();
    if (c == NULL)
        return NULL;
    cJSON_AddStringToObject(c, "name", info->spec.name);
    cJSON_AddStringToObject(c, "space", ami_space_name(info->spec.space));
    cJSON_AddNumberToObject(c, "points", (double)info->points);
    cJSON_AddStringToObject(c, "fingerprint", info->fingerprint);
    cJSON_AddNumberToObject(c, "seq", (double)info->seq);
    cJSON *mods = cJSON_AddArrayToObject(c, "modalities");
    for (int m = 0; mods != NULL && m < info->spec.n_modalities; m++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", info->spec.modalities[m]);
        cJSON_AddStringToObject(o, "index", info->spec.index_spec[m][0]
                                                ? info->spec.index_spec[m] : "Flat");
        cJSON_AddNumberToObject(o, "dim", info->dim[m]);
        cJSON_AddNumberToObject(o, "vectors", (double)info->vectors[m]);
        cJSON_AddNumberToObject(o, "indexed", (double)info->indexed[m]);
        cJSON_AddBoolToObject(o, "trained", info->trained[m]);
        cJSON_AddItemToArray(mods, o);
    }
    return c;
}

/* Adds the payload text as parsed JSON (or null) under "payload". */
static void add_payload(cJSON *obj, const char *payload)
{
    cJSON *p = payload ? cJSON_Parse(payload) : NULL;
    cJSON_AddItemToObject(obj, "payload", p ? p : cJSON_CreateNull());
}

static cJSON *hits_json(const ami_result *r, int with_payload)
{
    cJSON *hits = cJSON_CreateArray();
    for (int i = 0; hits != NULL && i < r->n; i++) {
        cJSON *h = cJSON_CreateObject();
        cJSON_AddStringToObject(h, "id", r->hits[i].id);
        cJSON_AddNumberToObject(h, "score", (double)r->hits[i].score);
        if (with_payload)
            add_payload(h, r->hits[i].payload);
        cJSON_AddItemToArray(hits, h);
    }
    return hits;
}

/* ---------------------------------------------------------------------------------------
 * Handlers. Each returns 0 with *result set, or an HTTP status with *f filled.
 * ------------------------------------------------------------------------------------- */

typedef struct handler_args {
    ama_ctx *ctx;
    const ama_request *req;
    cJSON *body;                      /* parsed body of body routes */
    const amc_config *mc;             /* model config, under the connector read lock */
    int status;                       /* success status, 200 unless set */
    cJSON *result;
    ama_fail_ f;
    ama_search_job **job_out;         /* non-NULL: a batchable search may become a job */
} handler_args;

static int handle_model(handler_args *a)
{
    const amc_connector *conn = a->ctx->conn;
    char fp[17];
    amc_connector_fingerprint(conn, fp);
    cJSON *r = cJSON_CreateObject();
    cJSON *mods = cJSON_AddArrayToObject(r, "modalities");
    for (int m = 0; m < a->mc->n_modalities; m++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", a->mc->modalities[m].name);
        cJSON_AddNumberToObject(o, "dim", a->mc->modalities[m].dim);
        cJSON_AddItemToArray(mods, o);
    }
    cJSON *dirs = cJSON_AddArrayToObject(r, "directions");
    for (int d = 0; d < a->mc->n_directions; d++) {
        cJSON *pair = cJSON_CreateArray();
        cJSON_AddItemToArray(pair, cJSON_CreateString(
            a->mc->modalities[a->mc->directions[d].src].name));
        cJSON_AddItemToArray(pair, cJSON_CreateString(
            a->mc->modalities[a->mc->directions[d].tgt].name));
        cJSON_AddItemToArray(dirs, pair);
    }
    cJSON_AddNumberToObject(r, "hidden", a->mc->hidden);
    cJSON_AddNumberToObject(r, "latent", a->mc->latent);
    cJSON_AddNumberToObject(r, "experts", a->mc->n_experts);
    cJSON_AddNumberToObject(r, "top_k", a->mc->top_k);
    cJSON_AddNumberToObject(r, "parameters", (double)amc_connector_param_count(conn));
    cJSON_AddStringToObject(r, "fingerprint", fp);
    cJSON_AddNumberToObject(r, "format_version", AMC_FORMAT_VERSION);
    cJSON_AddStringToObject(r, "version", ALTMOE_VERSION);
    a->result = r;
    return 0;
}

static int handle_collection_create(handler_args *a)
{
    ami_collection_spec spec;
    int st = ama_parse_collection_(a->mc, a->body, &spec, &a->f);
    if (st != 0)
        return st;
    amc_error err;
    amc_status s = ami_collection_create(a->ctx->store, &spec, &err);
    if (s == AMC_EEXIST)
        return ama_fail_set_(&a->f, 409, "collection_exists", "collection '%s' already exists; "
                             "delete it first or pick another name", spec.name);
    if (s != AMC_OK)
        return ama_fail_from_status_(&a->f, s, &err);
    ami_collection_info info;
    if ((s = ami_collection_describe(a->ctx->store, spec.name, &info, &err)) != AMC_OK)
        return ama_fail_from_status_(&a->f, s, &err);
    AMS_LOG(AMS_LOG_INFO, "collection_created", "collection=%s modalities=%d space=%s",
            spec.name, spec.n_modalities, ami_space_name(spec.space));
    a->status = 201;
    a->result = collection_json(&info);
    return 0;
}

static int handle_collection_list(handler_args *a)
{
    ami_collection_info *infos = NULL;
    int n = 0;
    amc_error err;
    amc_status s = ami_collection_list(a->ctx->store, &infos, &n, &err);
    if (s != AMC_OK)
        return ama_fail_from_status_(&a->f, s, &err);
    cJSON *r = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(r, "collections");
    for (int i = 0; arr != NULL && i < n; i++)
        cJSON_AddItemToArray(arr, collection_json(&infos[i]));
    free(infos);
    a->result = r;
    return 0;
}

/* Maps a store error on a named collection, turning "not found" into collection_not_found. */
static int store_fail(handler_args *a, amc_status s, const amc_error *err, const char *code404)
{
    int st = ama_fail_from_status_(&a->f, s, err);
    if (st == 404)
        a->f.code = code404;
    return st;
}

static int handle_collection_get(handler_args *a)
{
    ami_collection_info info;
    amc_error err;
    amc_status s = ami_collection_describe(a->ctx->store, a->req->route->collection, &info,
                                           &err);
    if (s != AMC_OK)
        return store_fail(a, s, &err, "collection_not_found");
    a->result = collection_json(&info);
    return 0;
}

static int handle_collection_drop(handler_args *a)
{
    amc_error err;
    amc_status s = ami_collection_drop(a->ctx->store, a->req->route->collection, &err);
    if (s != AMC_OK)
        return store_fail(a, s, &err, "collection_not_found");
    AMS_LOG(AMS_LOG_INFO, "collection_dropped", "collection=%s", a->req->route->collection);
    a->result = cJSON_CreateObject();
    cJSON_AddStringToObject(a->result, "deleted", a->req->route->collection);
    return 0;
}

/* Checks that the collection exists so that a bad body on a missing collection gets 404. */
static int require_collection(handler_args *a, ami_collection_info *info)
{
    amc_error err;
    amc_status s = ami_collection_describe(a->ctx->store, a->req->route->collection, info,
                                           &err);
    return s == AMC_OK ? 0 : store_fail(a, s, &err, "collection_not_found");
}

/* Rejects a modality the collection does not hold; field names the request field. */
static int require_modality(handler_args *a, const ami_collection_info *info, int mod,
                            const char *field, const char *code)
{
    const char *name = a->mc->modalities[mod].name;
    for (int m = 0; m < info->spec.n_modalities; m++)
        if (strcmp(info->spec.modalities[m], name) == 0)
            return 0;
    return ama_fail_set_(&a->f, 400, code, "field '%s': collection '%s' has no modality '%s'",
                         field, info->spec.name, name);
}

static int handle_points_upsert(handler_args *a)
{
    ami_collection_info info;
    ama_point_req_ *pts = NULL;
    ami_point *items = NULL;
    int n = 0;
    int st = require_collection(a, &info);
    if (st == 0)
        st = ama_parse_upsert_(a->mc, a->body, &pts, &n, &a->f);
    for (int i = 0; st == 0 && i < n; i++) {
        char field[48];
        snprintf(field, sizeof field, "points[%d].modality", i);
        st = require_modality(a, &info, pts[i].vec.mod, field, "unknown_modality");
    }
    if (st == 0 && (items = AMC_CALLOC((size_t)n, sizeof *items)) == NULL)
        st = ama_fail_set_(&a->f, 503, "out_of_memory", "out of memory for the batch");
    if (st == 0) {
        for (int i = 0; i < n; i++) {
            items[i].id = pts[i].id;
            items[i].modality = a->mc->modalities[pts[i].vec.mod].name;
            items[i].embedding = pts[i].vec.data;
            items[i].seq = pts[i].vec.seq;
            items[i].payload = pts[i].payload;
        }
        uint64_t seq = 0;
        amc_error err;
        amc_status s = ami_points_upsert(a->ctx->store, info.spec.name, items, n, &seq, &err);
        if (s != AMC_OK) {
            st = store_fail(a, s, &err, "collection_not_found");
        } else {
            a->result = cJSON_CreateObject();
            cJSON_AddNumberToObject(a->result, "upserted", n);
            cJSON_AddNumberToObject(a->result, "seq", (double)seq);
        }
    }
    for (int i = 0; pts != NULL && i < n; i++)
        ama_point_req_free_(&pts[i]);
    free(pts);
    free(items);
    return st;
}

static int handle_point_get(handler_args *a)
{
    ami_point_data pd;
    amc_error err;
    amc_status s = ami_point_get(a->ctx->store, a->req->route->collection,
                                 a->req->route->point_id, &pd, &err);
    if (s != AMC_OK) {
        int st = store_fail(a, s, &err, "not_found");
        if (st == 404) {
            ami_collection_info info;
            a->f.code = ami_collection_describe(a->ctx->store, a->req->route->collection, &info,
                                                NULL) == AMC_OK ? "point_not_found"
                                                                : "collection_not_found";
        }
        return st;
    }
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "id", pd.id);
    add_payload(r, pd.payload);
    cJSON *embs = cJSON_AddObjectToObject(r, "embeddings");
    for (int i = 0; embs != NULL && i < pd.n_embeddings; i++) {
        const ami_embedding *e = &pd.embeddings[i];
        if (e->seq == 1) {
            cJSON_AddItemToObject(embs, e->modality, float_array(e->data, e->dim));
            continue;
        }
        cJSON *tok = cJSON_CreateArray();
        for (int t = 0; t < e->seq; t++)
            cJSON_AddItemToArray(tok, float_array(e->data + (size_t)t * (size_t)e->dim, e->dim));
        cJSON_AddItemToObject(embs, e->modality, tok);
    }
    ami_point_data_free(&pd);
    a->result = r;
    return 0;
}

static int handle_point_delete(handler_args *a)
{
    const char *ids[1] = {a->req->route->point_id};
    int deleted = 0;
    amc_error err;
    amc_status s = ami_points_delete(a->ctx->store, a->req->route->collection, ids, 1, &deleted,
                                     &err);
    if (s != AMC_OK)
        return store_fail(a, s, &err, "collection_not_found");
    if (deleted == 0)
        return ama_fail_set_(&a->f, 404, "point_not_found", "point '%.64s' is not in collection "
                             "'%s'", a->req->route->point_id, a->req->route->collection);
    a->result = cJSON_CreateObject();
    cJSON_AddNumberToObject(a->result, "deleted", deleted);
    return 0;
}

/* Checks the parsed search against the collection and fills the store's parameters. */
static int prepare_search(handler_args *a, const ama_search_req_ *sr, ami_search_params *p)
{
    ami_collection_info info;
    int st = require_collection(a, &info);
    if (st == 0)
        st = require_modality(a, &info, sr->target, "target", "unknown_target");
    for (int i = 0; st == 0 && i < sr->n; i++) {
        int src = sr->queries[i].mod;
        if (src != sr->target && amc_config_direction(a->mc, src, sr->target) < 0)
            st = ama_fail_set_(&a->f, 400, "unknown_target", "field 'target': the model has no "
                               "direction %s -> %s", a->mc->modalities[src].name,
                               a->mc->modalities[sr->target].name);
    }
    memset(p, 0, sizeof *p);
    p->target = a->mc->modalities[sr->target].name;
    p->k = (int)sr->k;
    p->filter = sr->filter;
    p->with_payload = sr->with_payload;
    p->nprobe = (int)sr->nprobe;
    p->ef_search = (int)sr->ef_search;
    return st;
}

static void fill_query(const handler_args *a, const ama_vec_ *v, ami_query *q)
{
    q->modality = a->mc->modalities[v->mod].name;
    q->embedding = v->data;
    q->seq = v->seq;
}

/* Runs one search now, on the calling thread. */
static int search_now(handler_args *a, const ama_search_req_ *sr, const ami_search_params *p)
{
    ami_query q;
    ami_result res;
    amc_error err;
    fill_query(a, &sr->queries[0], &q);
    double t0 = ama_now_s_();
    amc_status s = ami_search(a->ctx->store, a->req->route->collection, &q, 1, p, &res, &err);
    ams_metric_observe(a->ctx->m_search_seconds, "", ama_now_s_() - t0);
    ams_metric_observe(a->ctx->m_batch_size, "", 1);
    if (s != AMC_OK)
        return store_fail(a, s, &err, "collection_not_found");
    a->result = cJSON_CreateObject();
    cJSON_AddItemToObject(a->result, "hits", hits_json(&res, sr->with_payload));
    ami_results_free(&res, 1);
    return 0;
}

/* Validates a search; then hands it to the micro-batcher as a job when the caller accepts one
 * (a->job_out) and it can be batched, or runs it now. */
static int handle_search(handler_args *a)
{
    ama_search_req_ sr;
    ami_search_params p;
    int st = ama_parse_search_(a->mc, a->body, 0, a->ctx->cfg.max_k, &sr, &a->f);
    if (st == 0)
        st = prepare_search(a, &sr, &p);
    if (st == 0 && a->job_out != NULL && p.filter == NULL &&
        ama_batcher_enabled_(a->ctx->batcher)) {
        const char *modality = a->mc->modalities[sr.queries[0].mod].name;
        *a->job_out = ama_search_job_new_(a->req->route->collection, &sr, &p, modality,
                                          a->req->started_s);
        if (*a->job_out == NULL)
            st = ama_fail_set_(&a->f, 503, "out_of_memory", "out of memory queueing the search");
    } else if (st == 0) {
        st = search_now(a, &sr, &p);
    }
    ama_search_req_free_(&sr);
    return st;
}

void ama_search_response_(ama_response *resp, const ami_result *result, int with_payload,
                          double started)
{
    cJSON *r = cJSON_CreateObject();
    if (r != NULL)
        cJSON_AddItemToObject(r, "hits", hits_json(result, with_payload));
    ok_response(resp, 200, r, started);
}

static int handle_search_batch(handler_args *a)
{
    ama_search_req_ sr;
    ami_search_params p;
    ami_query *qs = NULL;
    ami_result *rs = NULL;
    int st = ama_parse_search_(a->mc, a->body, 1, a->ctx->cfg.max_k, &sr, &a->f);
    if (st == 0)
        st = prepare_search(a, &sr, &p);
    if (st == 0 && ((qs = AMC_CALLOC((size_t)sr.n, sizeof *qs)) == NULL ||
                    (rs = AMC_CALLOC((size_t)sr.n, sizeof *rs)) == NULL))
        st = ama_fail_set_(&a->f, 503, "out_of_memory", "out of memory for the batch");
    if (st == 0) {
        for (int i = 0; i < sr.n; i++)
            fill_query(a, &sr.queries[i], &qs[i]);
        amc_error err;
        double t0 = ama_now_s_();
        amc_status s = ami_search(a->ctx->store, a->req->route->collection, qs, sr.n, &p, rs,
                                  &err);
        ams_metric_observe(a->ctx->m_search_seconds, "", ama_now_s_() - t0);
        ams_metric_observe(a->ctx->m_batch_size, "", sr.n);
        if (s != AMC_OK) {
            st = store_fail(a, s, &err, "collection_not_found");
        } else {
            a->result = cJSON_CreateObject();
            cJSON *arr = cJSON_AddArrayToObject(a->result, "results");
            for (int i = 0; i < sr.n; i++) {
                cJSON *o = cJSON_CreateObject();
                cJSON_AddItemToObject(o, "hits", hits_json(&rs[i], sr.with_payload));
                cJSON_AddItemToArray(arr, o);
            }
            ami_results_free(rs, sr.n);
        }
    }
    free(qs);
    free(rs);
    ama_search_req_free_(&sr);
    return st;
}

/* The calling thread's workspace for connector passes, created on first use. */
static amc_workspace *thread_workspace(ama_ctx *ctx)
{
    amc_workspace *ws = pthread_getspecific(ctx->workspace_key);
    if (ws == NULL) {
        ws = amc_workspace_new();
        if (ws != NULL && pthread_setspecific(ctx->workspace_key, ws) != 0) {
            amc_workspace_free(ws);
            ws = NULL;
        }
    }
    return ws;
}

static int handle_project(handler_args *a)
{
    ama_project_req_ pr;
    int st = ama_parse_project_(a->mc, a->body, &pr, &a->f);
    amc_workspace *ws = st == 0 ? thread_workspace(a->ctx) : NULL;
    if (st == 0 && ws == NULL)
        st = ama_fail_set_(&a->f, 503, "out_of_memory", "out of memory for the workspace");
    if (st == 0) {
        int src = pr.items[0].mod, seq = pr.items[0].seq, n = pr.n;
        int tgt = pr.target >= 0 ? pr.target : src;
        int dim = amc_connector_out_dim(a->ctx->conn, pr.space, src, tgt);
        size_t row = (size_t)seq * (size_t)pr.items[0].dim;
        float *x = AMC_MALLOC((size_t)n * row * sizeof(float));
        float *out = AMC_MALLOC((size_t)n * (size_t)dim * sizeof(float));
        amc_error err;
        amc_status s = AMC_ENOMEM;
        if (x != NULL && out != NULL) {
            for (int i = 0; i < n; i++)
                memcpy(x + (size_t)i * row, pr.items[i].data, row * sizeof(float));
            double t0 = ama_now_s_();
            s = amc_connector_project(a->ctx->conn, ws, pr.space, src, tgt, x, n, seq, out,
                                      &err);
            ams_metric_observe(a->ctx->m_project_seconds, "", ama_now_s_() - t0);
        } else {
            amc_error_set(&err, AMC_ENOMEM, "out of memory for %d vectors", n);
        }
        if (s != AMC_OK) {
            st = ama_fail_from_status_(&a->f, s, &err);
        } else {
            a->result = cJSON_CreateObject();
            cJSON_AddNumberToObject(a->result, "dim", dim);
            cJSON *vecs = cJSON_AddArrayToObject(a->result, "vectors");
            for (int i = 0; i < n; i++)
                cJSON_AddItemToArray(vecs, float_array(out + (size_t)i * (size_t)dim, dim));
        }
        free(x);
        free(out);
    }
    ama_project_req_free_(&pr);
    return st;
}

static int handle_snapshot(handler_args *a)
{
    amc_error err;
    double t0 = ama_now_s_();
    amc_status s = ami_store_snapshot(a->ctx->store, &err);
    if (s != AMC_OK) {
        char qerr[AMC_ERROR_MSG_MAX * 2];
        AMS_LOG(AMS_LOG_ERROR, "snapshot_failed", "error=%s",
                ams_log_quote(qerr, sizeof qerr, err.msg));
        return ama_fail_from_status_(&a->f, s, &err);
    }
    AMS_LOG(AMS_LOG_INFO, "snapshot", "seq=%llu ms=%.1f",
            (unsigned long long)ami_store_seq(a->ctx->store), (ama_now_s_() - t0) * 1e3);
    a->result = cJSON_CreateObject();
    cJSON_AddNumberToObject(a->result, "seq", (double)ami_store_seq(a->ctx->store));
    return 0;
}

/* ---------------------------------------------------------------------------------------
 * Model reload: load, re-project in the store, then swap the API's connector.
 * ------------------------------------------------------------------------------------- */

static int handle_reload(ama_ctx *ctx, ama_fail_ *f, cJSON **result)
{
    pthread_mutex_lock(&ctx->reload_lock);
    amc_connector *fresh = NULL;
    amc_error err;
    double t0 = ama_now_s_();
    amc_status s = amc_model_load_for_inference(ctx->cfg.model, &fresh, NULL, &err);
    int load_failed = s != AMC_OK;
    if (s == AMC_OK)
        s = ami_store_reload(ctx->store, fresh, &err);
    if (s != AMC_OK) {
        amc_connector_free(fresh);
        pthread_mutex_unlock(&ctx->reload_lock);
        char qerr[AMC_ERROR_MSG_MAX * 2];
        char qpath[AMCFG_STR_MAX + 16];
        AMS_LOG(AMS_LOG_ERROR, "model_reload_failed", "model=%s error=%s",
                ams_log_quote(qpath, sizeof qpath, ctx->cfg.model),
                ams_log_quote(qerr, sizeof qerr, err.msg));
        /* The configured file is at fault, not the request: a server-side error. */
        if (load_failed)
            return ama_fail_set_(f, 500, "model_load_failed", "%s; the previous model stays in "
                                 "service", err.msg);
        return ama_fail_from_status_(f, s, &err);
    }

    pthread_rwlock_wrlock(&ctx->conn_lock);
    amc_connector *old = ctx->conn;
    ctx->conn = fresh;
    pthread_rwlock_unlock(&ctx->conn_lock);
    amc_connector_free(old);
    pthread_mutex_unlock(&ctx->reload_lock);

    char fp[17];
    amc_connector_fingerprint(fresh, fp);
    ams_metric_add(ctx->m_reloads, "", 1);
    char qpath[AMCFG_STR_MAX + 16];
    AMS_LOG(AMS_LOG_INFO, "model_reloaded", "model=%s fingerprint=%s ms=%.1f",
            ams_log_quote(qpath, sizeof qpath, ctx->cfg.model), fp, (ama_now_s_() - t0) * 1e3);
    *result = cJSON_CreateObject();
    cJSON_AddStringToObject(*result, "fingerprint", fp);
    return 0;
}

/* ---------------------------------------------------------------------------------------
 * Dispatch
 * ------------------------------------------------------------------------------------- */

static void handle_metrics(ama_response *resp)
{
    ams_buf buf = {0};
    ams_metrics_render(&buf);
    memset(resp, 0, sizeof *resp);
    if (buf.failed || buf.data == NULL) {
        ams_buf_free(&buf);
        ama_error_response(resp, 503, "out_of_memory", "out of memory rendering metrics");
        return;
    }
    resp->status = 200;
    resp->body = buf.data;
    resp->body_len = buf.len;
    resp->content_type = "text/plain; version=0.0.4; charset=utf-8";
}

/* Runs the handler of a route that needs the model config (under the connector read lock). */
static int dispatch_model_route(handler_args *a)
{
    switch (a->req->route->id) {
    case AMA_ROUTE_MODEL: return handle_model(a);
    case AMA_ROUTE_COLLECTION_CREATE: return handle_collection_create(a);
    case AMA_ROUTE_COLLECTION_LIST: return handle_collection_list(a);
    case AMA_ROUTE_COLLECTION_GET: return handle_collection_get(a);
    case AMA_ROUTE_COLLECTION_DROP: return handle_collection_drop(a);
    case AMA_ROUTE_POINTS_UPSERT: return handle_points_upsert(a);
    case AMA_ROUTE_POINT_GET: return handle_point_get(a);
    case AMA_ROUTE_POINT_DELETE: return handle_point_delete(a);
    case AMA_ROUTE_SEARCH: return handle_search(a);
    case AMA_ROUTE_SEARCH_BATCH: return handle_search_batch(a);
    case AMA_ROUTE_PROJECT: return handle_project(a);
    case AMA_ROUTE_ADMIN_SNAPSHOT: return handle_snapshot(a);
    default: break;
    }
    return ama_fail_set_(&a->f, 500, "internal", "route %s has no handler", a->req->route->name);
}

/* Runs a request; when job_out is not NULL a batchable search is returned in it instead of
 * being run, and *resp is left untouched. */
static void handle(ama_ctx *ctx, const ama_request *req, ama_response *resp,
                   ama_search_job **job_out)
{
    handler_args a;
    memset(&a, 0, sizeof a);
    a.ctx = ctx;
    a.req = req;
    a.status = 200;
    a.job_out = job_out;
    ama_route_id id = req->route->id;

    /* Routes that need neither the body nor the model. */
    if (id == AMA_ROUTE_HEALTHZ) {
        ok_response(resp, 200, cJSON_CreateString("alive"), req->started_s);
        return;
    }
    if (id == AMA_ROUTE_METRICS) {
        handle_metrics(resp);
        return;
    }
    if (id == AMA_ROUTE_READYZ) {
        if (!ami_store_ready(ctx->store)) {
            ama_error_response(resp, 503, "not_ready", "an index is being rebuilt; retry later");
            return;
        }
        ok_response(resp, 200, cJSON_CreateString("ready"), req->started_s);
        return;
    }
    if (id == AMA_ROUTE_ADMIN_RELOAD) {
        int st = handle_reload(ctx, &a.f, &a.result);
        if (st != 0)
            fail_response(resp, &a.f);
        else
            ok_response(resp, 200, a.result, req->started_s);
        return;
    }

    /* Body routes parse first: a malformed body never reaches the store. */
    if (req->route->has_body && ama_parse_object_(req->body, req->body_len, &a.body, &a.f)) {
        fail_response(resp, &a.f);
        return;
    }
    pthread_rwlock_rdlock(&ctx->conn_lock);
    a.mc = &ctx->conn->cfg;
    int st = dispatch_model_route(&a);
    pthread_rwlock_unlock(&ctx->conn_lock);
    cJSON_Delete(a.body);
    if (st != 0) {
        cJSON_Delete(a.result);
        fail_response(resp, &a.f);
        return;
    }
    if (job_out != NULL && *job_out != NULL)
        return;
    ok_response(resp, a.status, a.result, req->started_s);
}

void ama_handle(ama_ctx *ctx, const ama_request *req, ama_response *resp)
{
    handle(ctx, req, resp, NULL);
}

ama_search_job *ama_search_prepare(ama_ctx *ctx, const ama_request *req, ama_response *resp)
{
    ama_search_job *job = NULL;
    handle(ctx, req, resp, &job);
    return job;
}

void ama_search_enqueue(ama_ctx *ctx, ama_search_job *job, ama_done_fn done, void *cls)
{
    ama_batcher_enqueue_(ctx->batcher, job, done, cls);
}



int ama_validate_body(const amc_connector *conn, ama_route_id route, const char *body,
                      size_t len, int max_k)
{
    ama_fail_ f;
    cJSON *root = NULL;
    int st = ama_parse_object_(body, len, &root, &f);
    if (st != 0)
        return st;
    const amc_config *mc = &conn->cfg;
    switch (route) {
    case AMA_ROUTE_COLLECTION_CREATE: {
        ami_collection_spec spec;
        st = ama_parse_collection_(mc, root, &spec, &f);
        break;
    }
    case AMA_ROUTE_POINTS_UPSERT: {
        ama_point_req_ *pts = NULL;
        int n = 0;
        st = ama_parse_upsert_(mc, root, &pts, &n, &f);
        for (int i = 0; i < n; i++)
            ama_point_req_free_(&pts[i]);
        free(pts);
        break;
    }
    case AMA_ROUTE_SEARCH:
    case AMA_ROUTE_SEARCH_BATCH: {
        ama_search_req_ sr;
        st = ama_parse_search_(mc, root, route == AMA_ROUTE_SEARCH_BATCH, max_k, &sr, &f);
        ama_search_req_free_(&sr);
        break;
    }
    case AMA_ROUTE_PROJECT: {
        ama_project_req_ pr;
        st = ama_parse_project_(mc, root, &pr, &f);
        ama_project_req_free_(&pr);
        break;
    }
    case AMA_ROUTE_ADMIN_INGEST: {
        /* One NDJSON line of an ingest. */
        ama_point_req_ p;
        st = ama_parse_point_(mc, root, "", &p, &f);
        ama_point_req_free_(&p);
        break;
    }
    default:
        break;
    }
    cJSON_Delete(root);
    return st == 0 ? 200 : st;
}

/* ---------------------------------------------------------------------------------------
 * State
 * ------------------------------------------------------------------------------------- */

static void free_workspace(void *ws)
{
    amc_workspace_free(ws);
}

/* Scrape-time gauges: vectors per collection and modality, readiness, memory. */
static void collect_store(ams_buf *buf, void *user)
{
    ama_ctx *ctx = user;
    ami_collection_info *infos = NULL;
    int n = 0;
    if (ami_collection_list(ctx->store, &infos, &n, NULL) != AMC_OK)
        n = 0;
    ams_buf_printf(buf, "# HELP altmoe_vectors Stored embeddings per collection and modality.\n"
                   "# TYPE altmoe_vectors gauge\n");
    for (int i = 0; i < n; i++) {
        for (int m = 0; m < infos[i].spec.n_modalities; m++) {
            char labels[200] = "";
            ams_metrics_label(labels, sizeof labels, "collection", infos[i].spec.name);
            ams_metrics_label(labels, sizeof labels, "modality", infos[i].spec.modalities[m]);
            ams_buf_printf(buf, "altmoe_vectors{%s} %llu\n", labels,
                           (unsigned long long)infos[i].vectors[m]);
        }
    }

    /* Indexed vectors times their width: the vector data of the indices, without the graph
     * links of HNSW or the lists of IVF, so a lower bound of their memory. */
    ams_buf_printf(buf, "# HELP altmoe_index_vector_bytes Float32 vector data held by the FAISS "
                   "indices (indexed vectors x dim x 4), a lower bound of their memory.\n"
                   "# TYPE altmoe_index_vector_bytes gauge\n");
    for (int i = 0; i < n; i++) {
        for (int m = 0; m < infos[i].spec.n_modalities; m++) {
            char labels[200] = "";
            ams_metrics_label(labels, sizeof labels, "collection", infos[i].spec.name);
            ams_metrics_label(labels, sizeof labels, "modality", infos[i].spec.modalities[m]);
            ams_buf_printf(buf, "altmoe_index_vector_bytes{%s} %llu\n", labels,
                           (unsigned long long)infos[i].indexed[m] *
                               (unsigned long long)infos[i].dim[m] * 4ULL);
        }
    }
    free(infos);
    ams_buf_printf(buf, "# HELP altmoe_ready 1 when every index is caught up with LMDB.\n"
                   "# TYPE altmoe_ready gauge\naltmoe_ready %d\n", ami_store_ready(ctx->store));
    ams_buf_printf(buf, "# HELP altmoe_store_seq Last operation sequence number committed.\n"
                   "# TYPE altmoe_store_seq gauge\naltmoe_store_seq %llu\n",
                   (unsigned long long)ami_store_seq(ctx->store));

    /* Resident and virtual memory from /proc/self/statm, in pages. */
    long pages_virt = 0, pages_res = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f != NULL) {
        if (fscanf(f, "%ld %ld", &pages_virt, &pages_res) != 2)
            pages_virt = pages_res = 0;
        fclose(f);
    }
    ams_buf_printf(buf, "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
                   "# TYPE process_resident_memory_bytes gauge\n"
                   "process_resident_memory_bytes %ld\n", pages_res * 4096L);
    ams_buf_printf(buf, "# HELP process_virtual_memory_bytes Virtual memory size in bytes.\n"
                   "# TYPE process_virtual_memory_bytes gauge\n"
                   "process_virtual_memory_bytes %ld\n", pages_virt * 4096L);
}

static void register_metrics(ama_ctx *ctx)
{
    ctx->m_search_seconds = ams_metrics_register("altmoe_search_seconds",
        "Duration of one store search call (connector projection plus FAISS search) in "
        "seconds.", AMS_HISTOGRAM, ams_latency_buckets, ams_latency_bucket_count);
    ctx->m_project_seconds = ams_metrics_register("altmoe_projection_seconds",
        "Duration of one connector projection of /v1/project in seconds.", AMS_HISTOGRAM,
        ams_latency_buckets, ams_latency_bucket_count);
    static const double batch_buckets[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 10000};
    ctx->m_batch_size = ams_metrics_register("altmoe_search_batch_queries",
        "Queries served by one store search call (micro-batching and batch search).",
        AMS_HISTOGRAM, batch_buckets, (int)(sizeof batch_buckets / sizeof batch_buckets[0]));
    ctx->m_ingest_points = ams_metrics_register("altmoe_ingest_points_total",
        "Points committed by admin ingest, by collection.", AMS_COUNTER, NULL, 0);
    ctx->m_ingest_lines = ams_metrics_register("altmoe_ingest_rejected_total",
        "Ingest records rejected, by collection.", AMS_COUNTER, NULL, 0);
    ctx->m_reloads = ams_metrics_register("altmoe_model_reloads_total",
        "Successful model reloads.", AMS_COUNTER, NULL, 0);
    ams_metric *build = ams_metrics_register("altmoe_build_info",
        "Build information; the value is always 1.", AMS_GAUGE, NULL, 0);
    char labels[128] = "";
    ams_metrics_label(labels, sizeof labels, "version", ALTMOE_VERSION);
    ams_metrics_label(labels, sizeof labels, "compiler", __VERSION__);
    ams_metric_set(build, labels, 1);
    ams_metrics_collector(collect_store, ctx);
}

amc_status ama_ctx_create(ama_ctx **out, const amcfg_config *cfg, ami_store *st,
                          amc_connector *conn, amc_error *err)
{
    *out = NULL;
    ama_ctx *ctx = AMC_CALLOC(1, sizeof *ctx);
    if (ctx == NULL)
        return amc_error_set(err, AMC_ENOMEM, "out of memory creating the API state");
    ctx->cfg = *cfg;
    ctx->store = st;
    ctx->conn = conn;
    pthread_rwlock_init(&ctx->conn_lock, NULL);
    pthread_mutex_init(&ctx->reload_lock, NULL);
    if (pthread_key_create(&ctx->workspace_key, free_workspace) != 0) {
        free(ctx);
        return amc_error_set(err, AMC_ENOMEM, "cannot create the thread workspace key");
    }
    ctx->batcher = ama_batcher_new_(ctx, (long)cfg->batch_window_us, (int)cfg->threads);
    if (ctx->batcher == NULL) {
        pthread_key_delete(ctx->workspace_key);
        free(ctx);
        return amc_error_set(err, AMC_ENOMEM, "out of memory creating the search batcher");
    }
    register_metrics(ctx);
    *out = ctx;
    return AMC_OK;
}

void ama_ctx_drain(ama_ctx *ctx)
{
    ama_batcher_drain_(ctx->batcher);
}

void ama_ctx_free(ama_ctx *ctx)
{
    if (ctx == NULL)
        return;
    ama_batcher_free_(ctx->batcher);
    amc_workspace *ws = pthread_getspecific(ctx->workspace_key);
    amc_workspace_free(ws);
    pthread_key_delete(ctx->workspace_key);
    amc_connector_free(ctx->conn);
    pthread_rwlock_destroy(&ctx->conn_lock);
    pthread_mutex_destroy(&ctx->reload_lock);
    free(ctx);
}
