/* Streaming ingest: POST /admin/v1/collections/{name}/ingest.
 *
 * The body arrives in chunks of any size and is never held whole. NDJSON is cut into lines
 * (only the current partial line is buffered); the binary form is decoded record by record
 * with a small state machine. Parsed points collect in a pending batch that is committed with
 * one ami_points_upsert() every ingest_batch points and at the end of the body.
 *
 * A bad record (malformed JSON, wrong dimension, unknown modality, ...) is rejected with its
 * line or record number and the reason, and the ingest goes on. A store failure (disk full,
 * I/O) stops the ingest: points committed before it stay committed and the response gives how
 * many. A corrupt binary record header also stops it, because the stream cannot be resynced. */
#include "api/internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fault.h"
#include "server/log.h"

#define MAX_LISTED_ERRORS 1000

struct ama_ingest {
    ama_ctx *ctx;
    ami_collection_info info;
    int batch_max;

    /* NDJSON: the partial line carried between chunks. */
    char *line;
    size_t line_len, line_cap;

    /* Binary: record header, id and vector being assembled. */
    int binary, bin_mod, bin_dim;
    int part;                         /* 0 = id length, 1 = id, 2 = vector */
    size_t have;                      /* bytes of the current part received */
    unsigned char len_bytes[2];
    size_t id_len;
    char id[AMI_ID_MAX + 1];
    float *vec;

    long record;                      /* number of the current line or record, from 1 */
    ama_point_req_ *pending;          /* [batch_max] */
    long *pending_record;             /* [batch_max] */
    int n_pending;

    long accepted, rejected, batches;
    cJSON *errors;                    /* [{"line": n, "reason": "..."}], capped */
    int n_errors_listed;
    int failed;
    ama_fail_ fail;
    double started;                   /* CLOCK_MONOTONIC seconds */
};

static void reject(ama_ingest *ing, long record, const char *reason)
{
    ing->rejected++;
    char labels[100] = "";
    ams_metrics_label(labels, sizeof labels, "collection", ing->info.spec.name);
    ams_metric_add(ing->ctx->m_ingest_lines, labels, 1);
    if (ing->n_errors_listed >= MAX_LISTED_ERRORS)
        return;
    cJSON *e = cJSON_CreateObject();
    if (e == NULL)
        return;
    cJSON_AddNumberToObject(e, ing->binary ? "record" : "line", (double)record);
    cJSON_AddStringToObject(e, "reason", reason);
    cJSON_AddItemToArray(ing->errors, e);
    ing->n_errors_listed++;
}

static void clear_pending(ama_ingest *ing)
{
    for (int i = 0; i < ing->n_pending; i++)
        ama_point_req_free_(&ing->pending[i]);
    ing->n_pending = 0;
}

/* Upserts pending[from, from + n) in one transaction. */
static amc_status upsert_range(ama_ingest *ing, int from, int n, amc_error *err)
{
    ami_point *items = AMC_CALLOC((size_t)n, sizeof *items);
    if (items == NULL)
        return amc_error_set(err, AMC_ENOMEM, "out of memory for a batch of %d points", n);
    const amc_config *mc = &ing->ctx->conn->cfg;
    for (int i = 0; i < n; i++) {
        const ama_point_req_ *p = &ing->pending[from + i];
        items[i].id = p->id;
        items[i].modality = mc->modalities[p->vec.mod].name;
        items[i].embedding = p->vec.data;
        items[i].seq = p->vec.seq;
        items[i].payload = p->payload;
    }
    amc_status st = ami_points_upsert(ing->ctx->store, ing->info.spec.name, items, n, NULL, err);
    free(items);
    return st;
}

/* Commits the pending batch. When the store rejects the batch as invalid, each point is
 * retried alone so that only the bad ones are rejected. Returns -1 on a store failure. */
static int commit(ama_ingest *ing)
{
    if (ing->n_pending == 0 || ing->failed)
        return ing->failed ? -1 : 0;
    amc_error err;
    int n = ing->n_pending;
    long committed = 0;
    amc_status st = upsert_range(ing, 0, n, &err);
    if (st == AMC_OK) {
        committed = n;
    } else if (st == AMC_EINVAL) {
        for (int i = 0; i < n && !ing->failed; i++) {
            st = upsert_range(ing, i, 1, &err);
            if (st == AMC_OK)
                committed++;
            else if (st == AMC_EINVAL)
                reject(ing, ing->pending_record[i], err.msg);
            else
                break;
        }
    }
    if (st != AMC_OK && st != AMC_EINVAL) {
        ing->failed = 1;
        ama_fail_from_status_(&ing->fail, st, &err);
        char qerr[AMC_ERROR_MSG_MAX * 2];
        AMS_LOG_LIMITED(AMS_LOG_ERROR, "ingest_failed", "collection=%s record=%ld error=%s",
                        ing->info.spec.name, ing->record,
                        ams_log_quote(qerr, sizeof qerr, err.msg));
    }
    ing->accepted += committed;
    ing->batches++;
    char labels[100] = "";
    ams_metrics_label(labels, sizeof labels, "collection", ing->info.spec.name);
    ams_metric_add(ing->ctx->m_ingest_points, labels, (double)committed);
    clear_pending(ing);
    return ing->failed ? -1 : 0;
}

/* Adds a parsed point; a repeated (id, modality) flushes first so that the later one wins. */
static void add_point(ama_ingest *ing, ama_point_req_ *p, long record)
{
    for (int i = 0; i < ing->n_pending; i++) {
        if (ing->pending[i].vec.mod == p->vec.mod && strcmp(ing->pending[i].id, p->id) == 0) {
            commit(ing);
            break;
        }
    }
    ing->pending[ing->n_pending] = *p;
    ing->pending_record[ing->n_pending] = record;
    ing->n_pending++;
    memset(p, 0, sizeof *p);
    if (ing->n_pending >= ing->batch_max)
        commit(ing);
}

/* Checks that the point's modality belongs to the collection. */
static int collection_has(const ama_ingest *ing, int mod)
{
    const char *name = ing->ctx->conn->cfg.modalities[mod].name;
    for (int m = 0; m < ing->info.spec.n_modalities; m++)
        if (strcmp(ing->info.spec.modalities[m], name) == 0)
            return 1;
    return 0;
}

/* ---------------------------------------------------------------------------------------
 * NDJSON
 * ------------------------------------------------------------------------------------- */

static void ingest_line(ama_ingest *ing, char *text, size_t len)
{
    ing->record++;
    if (len > 0 && text[len - 1] == '\r')
        len--;
    size_t start = 0;
    while (start < len && (text[start] == ' ' || text[start] == '\t'))
        start++;
    if (start == len)
        return; /* blank lines are allowed and not counted */

    cJSON *root = NULL;
    ama_fail_ f;
    ama_point_req_ p;
    memset(&p, 0, sizeof p);
    int st = ama_parse_object_(text + start, len - start, &root, &f);
    if (st == 0)
        st = ama_parse_point_(&ing->ctx->conn->cfg, root, "", &p, &f);
    if (st == 0 && !collection_has(ing, p.vec.mod))
        st = ama_fail_set_(&f, 400, "unknown_modality", "field 'modality': collection '%s' has "
                           "no modality '%s'", ing->info.spec.name,
                           ing->ctx->conn->cfg.modalities[p.vec.mod].name);
    cJSON_Delete(root);
    if (st >= 500) {
        /* Out of memory is the server's failure, not a bad line: stop the ingest, so that
         * the client gets a 5xx and retries instead of dropping the line as invalid. */
        ing->failed = 1;
        ing->fail = f;
        ama_point_req_free_(&p);
        return;
    }
    if (st != 0) {
        reject(ing, ing->record, f.msg);
        ama_point_req_free_(&p);
        return;
    }
    add_point(ing, &p, ing->record);
}

static void feed_ndjson(ama_ingest *ing, const char *data, size_t len)
{
    while (len > 0 && !ing->failed) {
        const char *nl = memchr(data, '\n', len);
        size_t take = nl ? (size_t)(nl - data) : len;

        /* Append up to the newline to the partial line carried from earlier chunks. */
        if (ing->line_len + take + 1 > ing->line_cap) {
            size_t cap = ing->line_cap ? ing->line_cap : 4096;
            while (cap < ing->line_len + take + 1)
                cap *= 2;
            char *grown = AMC_REALLOC(ing->line, cap);
            if (grown == NULL) {
                ing->failed = 1;
                ama_fail_set_(&ing->fail, 503, "out_of_memory", "out of memory at line %ld",
                              ing->record + 1);
                return;
            }
            ing->line = grown;
            ing->line_cap = cap;
        }
        memcpy(ing->line + ing->line_len, data, take);
        ing->line_len += take;
        ing->line[ing->line_len] = '\0';
        if (nl == NULL)
            return;
        ingest_line(ing, ing->line, ing->line_len);
        ing->line_len = 0;
        data += take + 1;
        len -= take + 1;
    }
}

/* ---------------------------------------------------------------------------------------
 * Binary float32 records: uint16 LE id length, id bytes, dim float32 LE values.
 * ------------------------------------------------------------------------------------- */

static void finish_record(ama_ingest *ing)
{
    ing->record++;
    ama_point_req_ p;
    memset(&p, 0, sizeof p);
    memcpy(p.id, ing->id, ing->id_len);
    p.id[ing->id_len] = '\0';
    if (ing->id_len == 0) {
        reject(ing, ing->record, "id is empty; ids are 1 to 255 bytes");
        return;
    }
    if (strlen(p.id) != ing->id_len) {
        reject(ing, ing->record, "id contains a NUL byte");
        return;
    }
    if (ama_utf8_invalid_at_((const unsigned char *)p.id, ing->id_len) < ing->id_len) {
        reject(ing, ing->record, "id is not valid UTF-8");
        return;
    }
    for (int i = 0; i < ing->bin_dim; i++) {
        if (!isfinite(ing->vec[i])) {
            char reason[96];
            snprintf(reason, sizeof reason, "value %d of the vector is not finite", i);
            reject(ing, ing->record, reason);
            return;
        }
    }
    p.vec.mod = ing->bin_mod;
    p.vec.seq = 1;
    p.vec.dim = ing->bin_dim;
    p.vec.data = AMC_MALLOC((size_t)ing->bin_dim * sizeof(float));
    if (p.vec.data == NULL) {
        ing->failed = 1;
        ama_fail_set_(&ing->fail, 503, "out_of_memory", "out of memory at record %ld",
                      ing->record);
        return;
    }
    memcpy(p.vec.data, ing->vec, (size_t)ing->bin_dim * sizeof(float));
    add_point(ing, &p, ing->record);
}

/* Copies up to want - have bytes from *data into dst + have; returns 1 when complete. */
static int gather(void *dst, size_t want, size_t *have, const char **data, size_t *len)
{
    size_t n = want - *have;
    if (n > *len)
        n = *len;
    memcpy((char *)dst + *have, *data, n);
    *have += n;
    *data += n;
    *len -= n;
    return *have == want;
}

static void feed_binary(ama_ingest *ing, const char *data, size_t len)
{
    while (len > 0 && !ing->failed) {
        if (ing->part == 0) {
            if (!gather(ing->len_bytes, 2, &ing->have, &data, &len))
                return;
            ing->id_len = (size_t)ing->len_bytes[0] | ((size_t)ing->len_bytes[1] << 8);
            /* An empty id is rejected with its record, which still has a known length. */
            if (ing->id_len > AMI_ID_MAX) {
                ing->failed = 1;
                ama_fail_set_(&ing->fail, 400, "invalid_field", "record %ld: id length %zu is "
                              "out of range 1..%d; the stream cannot be read further",
                              ing->record + 1, ing->id_len, AMI_ID_MAX);
                return;
            }
            ing->part = 1;
            ing->have = 0;
        } else if (ing->part == 1) {
            if (!gather(ing->id, ing->id_len, &ing->have, &data, &len))
                return;
            ing->part = 2;
            ing->have = 0;
        } else {
            /* NOTE: assumes a little-endian host, as every supported platform is. */
            if (!gather(ing->vec, (size_t)ing->bin_dim * sizeof(float), &ing->have, &data, &len))
                return;
            finish_record(ing);
            ing->part = 0;
            ing->have = 0;
        }
    }
}

/* ---------------------------------------------------------------------------------------
 * Life cycle
 * ------------------------------------------------------------------------------------- */

/* Reads the binary form's modality from ?modality= and checks it against the collection. */
static int begin_binary(ama_ingest *ing, const ama_request *req, ama_fail_ *f)
{
    const amc_config *mc = &ing->ctx->conn->cfg;
    if (req->query_modality == NULL)
        return ama_fail_set_(f, 400, "missing_field", "query parameter 'modality' is required "
                             "for the binary ingest form");
    ing->bin_mod = amc_config_modality(mc, req->query_modality);
    if (ing->bin_mod < 0 || !collection_has(ing, ing->bin_mod))
        return ama_fail_set_(f, 400, "unknown_modality", "query parameter 'modality': "
                             "collection '%s' has no modality '%.32s'", ing->info.spec.name,
                             req->query_modality);
    ing->binary = 1;
    ing->bin_dim = mc->modalities[ing->bin_mod].dim;
    ing->vec = AMC_MALLOC((size_t)ing->bin_dim * sizeof(float));
    if (ing->vec == NULL)
        return ama_fail_set_(f, 503, "out_of_memory", "out of memory for the record buffer");
    return 0;
}

ama_ingest *ama_ingest_begin(ama_ctx *ctx, const ama_request *req, ama_response *resp)
{
    ama_fail_ f;
    amc_error err;
    ama_ingest *ing = AMC_CALLOC(1, sizeof *ing);
    if (ing == NULL) {
        ama_error_response(resp, 503, "out_of_memory", "out of memory starting the ingest");
        return NULL;
    }
    ing->ctx = ctx;
    ing->started = req->started_s;
    ing->batch_max = (int)ctx->cfg.ingest_batch;
    ing->errors = cJSON_CreateArray();
    ing->pending = AMC_CALLOC((size_t)ing->batch_max, sizeof *ing->pending);
    ing->pending_record = AMC_CALLOC((size_t)ing->batch_max, sizeof *ing->pending_record);
    int st = 0;
    if (ing->errors == NULL || ing->pending == NULL || ing->pending_record == NULL)
        st = ama_fail_set_(&f, 503, "out_of_memory", "out of memory starting the ingest");
    amc_status s = st ? AMC_OK : ami_collection_describe(ctx->store, req->route->collection,
                                                          &ing->info, &err);
    if (s != AMC_OK) {
        st = ama_fail_from_status_(&f, s, &err);
        if (st == 404)
            f.code = "collection_not_found";
    }
    const char *ct = req->content_type ? req->content_type : "";
    pthread_rwlock_rdlock(&ctx->conn_lock);
    if (st == 0 && strncasecmp(ct, "application/octet-stream", 24) == 0)
        st = begin_binary(ing, req, &f);
    pthread_rwlock_unlock(&ctx->conn_lock);
    if (st != 0) {
        ama_error_response(resp, f.status, f.code, "%s", f.msg);
        ama_ingest_free(ing);
        return NULL;
    }
    AMS_LOG(AMS_LOG_INFO, "ingest_started", "collection=%s form=%s batch=%d",
            ing->info.spec.name, ing->binary ? "binary" : "ndjson", ing->batch_max);
    return ing;
}

int ama_ingest_feed(ama_ingest *ing, const char *data, size_t len)
{
    if (ing->failed)
        return -1;
    pthread_rwlock_rdlock(&ing->ctx->conn_lock);
    if (ing->binary)
        feed_binary(ing, data, len);
    else
        feed_ndjson(ing, data, len);
    pthread_rwlock_unlock(&ing->ctx->conn_lock);
    return ing->failed ? -1 : 0;
}

void ama_ingest_finish(ama_ingest *ing, ama_response *resp)
{
    pthread_rwlock_rdlock(&ing->ctx->conn_lock);
    if (!ing->failed && !ing->binary && ing->line_len > 0) {
        ingest_line(ing, ing->line, ing->line_len); /* last line without a newline */
        ing->line_len = 0;
    }
    if (!ing->failed && ing->binary && (ing->part != 0 || ing->have != 0))
        reject(ing, ing->record + 1, "record is truncated at the end of the body");
    commit(ing);
    pthread_rwlock_unlock(&ing->ctx->conn_lock);
    AMS_LOG(AMS_LOG_INFO, "ingest_finished", "collection=%s accepted=%ld rejected=%ld "
            "batches=%ld failed=%d", ing->info.spec.name, ing->accepted, ing->rejected,
            ing->batches, ing->failed);

    if (ing->failed) {
        ama_error_response(resp, ing->fail.status, ing->fail.code, "%s (%ld points were "
                           "committed before the failure)", ing->fail.msg, ing->accepted);
        return;
    }
    cJSON *env = cJSON_CreateObject();
    cJSON *r = cJSON_CreateObject();
    cJSON_AddNumberToObject(r, "accepted", (double)ing->accepted);
    cJSON_AddNumberToObject(r, "rejected", (double)ing->rejected);
    cJSON_AddNumberToObject(r, "batches", (double)ing->batches);
    cJSON_AddNumberToObject(r, ing->binary ? "records" : "lines", (double)ing->record);
    cJSON_AddItemToObject(r, "errors", ing->errors);
    cJSON_AddBoolToObject(r, "errors_truncated", ing->rejected > ing->n_errors_listed);
    ing->errors = NULL;
    cJSON_AddStringToObject(env, "status", "ok");
    cJSON_AddItemToObject(env, "result", r);
    cJSON_AddNumberToObject(env, "time_ms", round((ama_now_s_() - ing->started) * 1e6) / 1e3);
    memset(resp, 0, sizeof *resp);
    resp->body = cJSON_PrintUnformatted(env);
    cJSON_Delete(env);
    if (resp->body == NULL) {
        ama_error_response(resp, 503, "out_of_memory", "out of memory rendering the response");
        return;
    }
    resp->status = 200;
    resp->body_len = strlen(resp->body);
    resp->content_type = "application/json";
}

long ama_ingest_accepted(const ama_ingest *ing)
{
    return ing->accepted;
}

void ama_ingest_free(ama_ingest *ing)
{
    if (ing == NULL)
        return;
    clear_pending(ing);
    free(ing->pending);
    free(ing->pending_record);
    free(ing->line);
    free(ing->vec);
    cJSON_Delete(ing->errors);
    free(ing);
}
