/* Strict parsing of request bodies: every field is type-checked and bounded, unknown and
 * repeated fields are rejected, and each failure names the field by its path in the request
 * (for example `points[3].embedding[17]`). Nothing here touches the store. */
#include "api/internal.h"

#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fault.h"

int ama_fail_set_(ama_fail_ *f, int status, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    f->status = status;
    f->code = code;
    vsnprintf(f->msg, sizeof f->msg, fmt, ap);
    va_end(ap);
    return status;
}

int ama_fail_from_status_(ama_fail_ *f, amc_status st, const amc_error *err)
{
    const char *msg = err != NULL ? err->msg : amc_status_name(st);
    switch (st) {
    case AMC_OK: return 0;
    case AMC_EINVAL: return ama_fail_set_(f, 400, "invalid_field", "%s", msg);
    case AMC_ENOTFOUND: return ama_fail_set_(f, 404, "not_found", "%s", msg);
    case AMC_EEXIST: return ama_fail_set_(f, 409, "already_exists", "%s", msg);
    case AMC_EFULL: return ama_fail_set_(f, 507, "storage_full", "%s", msg);
    case AMC_EBUSY: return ama_fail_set_(f, 503, "busy", "%s", msg);
    case AMC_ENOMEM: return ama_fail_set_(f, 503, "out_of_memory", "%s", msg);
    case AMC_EFORMAT:
    case AMC_EIO:
    case AMC_EINTERNAL: break;
    }
    return ama_fail_set_(f, 500, "internal", "%s", msg);
}

void ama_vec_free_(ama_vec_ *v)
{
    free(v->data);
    v->data = NULL;
}

/* Joins a parent path and a member name: "points[2]" + "id" -> "points[2].id". */
static void field_path(char *out, size_t cap, const char *where, const char *key)
{
    snprintf(out, cap, "%s%s%s", where, where[0] ? "." : "", key);
}

size_t ama_utf8_invalid_at_(const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        unsigned char c = s[i];
        size_t n;
        unsigned min;
        unsigned cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            n = 1, min = 0x80, cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            n = 2, min = 0x800, cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            n = 3, min = 0x10000, cp = c & 0x07;
        } else {
            return i;
        }
        if (len - i <= n)
            return i;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return i;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return i;
        i += n + 1;
    }
    return len;
}

/* Returns 1 when a JSON string in s [len] contains the escape \u0000, which cJSON would turn
 * into a NUL byte that cuts the C string short. */
static int has_nul_escape(const char *s, size_t len)
{
    int in_string = 0;
    for (size_t i = 0; i < len; i++) {
        if (!in_string) {
            in_string = s[i] == '"';
        } else if (s[i] == '"') {
            in_string = 0;
        } else if (s[i] == '\\' && i + 1 < len) {
            if (s[i + 1] == 'u' && i + 5 < len && memcmp(s + i + 2, "0000", 4) == 0)
                return 1;
            i++;
        }
    }
    return 0;
}

int ama_parse_object_(const char *json, size_t len, cJSON **root, ama_fail_ *f)
{
    const char *end = NULL;
    *root = NULL;
    if (len == 0)
        return ama_fail_set_(f, 400, "malformed_json", "request body is empty; send a JSON "
                             "object");
    size_t bad = ama_utf8_invalid_at_((const unsigned char *)json, len);
    if (bad < len)
        return ama_fail_set_(f, 400, "malformed_json", "request body is not valid UTF-8 (byte "
                             "%zu); JSON text must be UTF-8", bad);
    if (has_nul_escape(json, len))
        return ama_fail_set_(f, 400, "invalid_field", "a string contains \\u0000; ids, names "
                             "and payload strings may not contain NUL characters");
    cJSON *doc = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    if (doc == NULL) {
        size_t at = (end != NULL && end >= json) ? (size_t)(end - json) : 0;
        return ama_fail_set_(f, 400, "malformed_json", "request body is not valid JSON (near "
                             "byte %zu)", at);
    }
    if (!cJSON_IsObject(doc)) {
        cJSON_Delete(doc);
        return ama_fail_set_(f, 400, "malformed_json", "request body must be a JSON object");
    }
    *root = doc;
    return 0;
}

int ama_check_fields_(const cJSON *obj, const char *where, const char *const *allowed,
                      ama_fail_ *f)
{
    char path[160];
    for (const cJSON *it = obj->child; it != NULL; it = it->next) {
        int known = 0;
        for (const char *const *a = allowed; *a != NULL && !known; a++)
            known = strcmp(*a, it->string) == 0;
        field_path(path, sizeof path, where, it->string);
        if (!known)
            return ama_fail_set_(f, 400, "unknown_field", "field '%.100s' is not recognised; "
                                 "remove it", path);
        for (const cJSON *prev = obj->child; prev != it; prev = prev->next)
            if (strcmp(prev->string, it->string) == 0)
                return ama_fail_set_(f, 400, "invalid_field", "field '%.100s' appears twice",
                                     path);
    }
    return 0;
}

int ama_parse_string_(const cJSON *obj, const char *where, const char *key, char *out,
                      size_t cap, ama_fail_ *f)
{
    char path[160];
    field_path(path, sizeof path, where, key);
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (item == NULL)
        return ama_fail_set_(f, 400, "missing_field", "field '%s' is required", path);
    if (!cJSON_IsString(item))
        return ama_fail_set_(f, 400, "invalid_field", "field '%s' must be a string", path);
    size_t n = strlen(item->valuestring);
    if (n == 0 || n >= cap)
        return ama_fail_set_(f, 400, "invalid_field", "field '%s' must be 1 to %zu bytes long",
                             path, cap - 1);
    memcpy(out, item->valuestring, n + 1);
    return 0;
}

int ama_parse_int_(const cJSON *obj, const char *where, const char *key, long lo, long hi,
                   const char *code, long *out, ama_fail_ *f)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (item == NULL)
        return 0;
    char path[160];
    field_path(path, sizeof path, where, key);
    if (!cJSON_IsNumber(item) || item->valuedouble != floor(item->valuedouble))
        return ama_fail_set_(f, 400, "invalid_field", "field '%s' must be an integer", path);
    if (item->valuedouble < (double)lo || item->valuedouble > (double)hi)
        return ama_fail_set_(f, 400, code, "field '%s' is %g; use %ld to %ld", path,
                             item->valuedouble, lo, hi);
    *out = (long)item->valuedouble;
    return 0;
}

int ama_parse_bool_(const cJSON *obj, const char *where, const char *key, int *out,
                    ama_fail_ *f)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (item == NULL)
        return 0;
    if (!cJSON_IsBool(item)) {
        char path[160];
        field_path(path, sizeof path, where, key);
        return ama_fail_set_(f, 400, "invalid_field", "field '%s' must be true or false", path);
    }
    *out = cJSON_IsTrue(item);
    return 0;
}

int ama_parse_modality_(const amc_config *mc, const cJSON *obj, const char *where,
                        const char *key, int *mod, ama_fail_ *f)
{
    char path[160];
    field_path(path, sizeof path, where, key);
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (item == NULL)
        return ama_fail_set_(f, 400, "missing_field", "field '%s' is required", path);
    if (!cJSON_IsString(item))
        return ama_fail_set_(f, 400, "invalid_field", "field '%s' must be a modality name",
                             path);
    *mod = amc_config_modality(mc, item->valuestring);
    if (*mod < 0)
        return ama_fail_set_(f, 400, "unknown_modality", "field '%s': modality '%.32s' is not "
                             "in the model; GET /v1/model lists them", path, item->valuestring);
    return 0;
}

/* Copies one JSON array of numbers into out[dim]; path names the array. */
static int parse_row(const cJSON *row, int dim, float *out, const char *path, ama_fail_ *f)
{
    if (!cJSON_IsArray(row))
        return ama_fail_set_(f, 400, "invalid_field", "field '%s' must be an array of numbers",
                             path);
    int n = cJSON_GetArraySize(row);
    if (n == 0)
        return ama_fail_set_(f, 400, "wrong_dimension", "field '%s' is empty; it needs %d "
                             "numbers", path, dim);
    if (n != dim)
        return ama_fail_set_(f, 400, "wrong_dimension", "field '%s' has %d numbers; the "
                             "modality needs %d", path, n, dim);
    int i = 0;
    for (const cJSON *v = row->child; v != NULL; v = v->next, i++) {
        if (!cJSON_IsNumber(v))
            return ama_fail_set_(f, 400, "invalid_field", "field '%s[%d]' must be a number",
                                 path, i);
        double x = v->valuedouble;
        if (!isfinite(x) || fabs(x) > (double)FLT_MAX)
            return ama_fail_set_(f, 400, "non_finite", "field '%s[%d]' is not a finite float32 "
                                 "value", path, i);
        out[i] = (float)x;
    }
    return 0;
}

int ama_parse_embedding_(const amc_config *mc, const cJSON *obj, const char *where, int mod,
                         ama_vec_ *out, ama_fail_ *f)
{
    const cJSON *emb = cJSON_GetObjectItemCaseSensitive(obj, "embedding");
    const cJSON *tok = cJSON_GetObjectItemCaseSensitive(obj, "tokens");
    char path[160];
    memset(out, 0, sizeof *out);
    out->mod = mod;
    out->dim = mc->modalities[mod].dim;
    if ((emb == NULL) == (tok == NULL)) {
        field_path(path, sizeof path, where, "embedding");
        return ama_fail_set_(f, 400, emb ? "invalid_field" : "missing_field",
                             "field '%s': give exactly one of 'embedding' (one vector) or "
                             "'tokens' (an array of vectors)", path);
    }

    /* A pooled vector is one token. */
    if (emb != NULL) {
        field_path(path, sizeof path, where, "embedding");
        out->seq = 1;
        out->data = AMC_MALLOC((size_t)out->dim * sizeof(float));
        if (out->data == NULL)
            return ama_fail_set_(f, 503, "out_of_memory", "out of memory for '%s'", path);
        return parse_row(emb, out->dim, out->data, path, f);
    }
    field_path(path, sizeof path, where, "tokens");
    if (!cJSON_IsArray(tok) || cJSON_GetArraySize(tok) == 0)
        return ama_fail_set_(f, 400, "invalid_field", "field '%s' must be a non-empty array of "
                             "vectors", path);
    int seq = cJSON_GetArraySize(tok);
    if (seq > AMI_SEQ_MAX)
        return ama_fail_set_(f, 400, "invalid_field", "field '%s' has %d tokens; the maximum "
                             "is %d", path, seq, AMI_SEQ_MAX);
    out->seq = seq;
    out->data = AMC_MALLOC((size_t)seq * (size_t)out->dim * sizeof(float));
    if (out->data == NULL)
        return ama_fail_set_(f, 503, "out_of_memory", "out of memory for '%s'", path);
    int t = 0;
    for (const cJSON *row = tok->child; row != NULL; row = row->next, t++) {
        char rpath[180];
        snprintf(rpath, sizeof rpath, "%s[%d]", path, t);
        int st = parse_row(row, out->dim, out->data + (size_t)t * (size_t)out->dim, rpath, f);
        if (st != 0)
            return st;
    }
    return 0;
}

void ama_point_req_free_(ama_point_req_ *p)
{
    ama_vec_free_(&p->vec);
    free(p->payload);
    p->payload = NULL;
}

int ama_parse_point_(const amc_config *mc, const cJSON *obj, const char *where,
                     ama_point_req_ *out, ama_fail_ *f)
{
    static const char *const fields[] = {"id", "modality", "embedding", "tokens", "payload",
                                         NULL};
    memset(out, 0, sizeof *out);
    if (!cJSON_IsObject(obj))
        return ama_fail_set_(f, 400, "invalid_field", "'%s' must be an object", where);
    int st = ama_check_fields_(obj, where, fields, f);
    if (st == 0)
        st = ama_parse_string_(obj, where, "id", out->id, sizeof out->id, f);
    int mod = 0;
    if (st == 0)
        st = ama_parse_modality_(mc, obj, where, "modality", &mod, f);
    if (st == 0)
        st = ama_parse_embedding_(mc, obj, where, mod, &out->vec, f);
    if (st != 0)
        return st;

    /* The payload is stored as JSON text; only objects are accepted. */
    const cJSON *payload = cJSON_GetObjectItemCaseSensitive(obj, "payload");
    if (payload != NULL && !cJSON_IsNull(payload)) {
        char path[160];
        field_path(path, sizeof path, where, "payload");
        if (!cJSON_IsObject(payload))
            return ama_fail_set_(f, 400, "invalid_field", "field '%s' must be a JSON object",
                                 path);
        out->payload = cJSON_PrintUnformatted(payload);
        if (out->payload == NULL)
            return ama_fail_set_(f, 503, "out_of_memory", "out of memory for '%s'", path);
        if (strlen(out->payload) > AMI_PAYLOAD_MAX)
            return ama_fail_set_(f, 400, "invalid_field", "field '%s' is over %d bytes", path,
                                 AMI_PAYLOAD_MAX);
    }
    return 0;
}

int ama_parse_upsert_(const amc_config *mc, const cJSON *root, ama_point_req_ **points, int *n,
                      ama_fail_ *f)
{
    static const char *const fields[] = {"points", NULL};
    *points = NULL;
    *n = 0;
    int st = ama_check_fields_(root, "", fields, f);
    if (st != 0)
        return st;
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(root, "points");
    if (arr == NULL)
        return ama_fail_set_(f, 400, "missing_field", "field 'points' is required");
    int count = cJSON_IsArray(arr) ? cJSON_GetArraySize(arr) : -1;
    if (count < 1 || count > AMA_BATCH_MAX_POINTS)
        return ama_fail_set_(f, 400, "invalid_field", "field 'points' must be an array of 1 to "
                             "%d points; use the admin ingest route for more",
                             AMA_BATCH_MAX_POINTS);
    ama_point_req_ *out = AMC_CALLOC((size_t)count, sizeof *out);
    if (out == NULL)
        return ama_fail_set_(f, 503, "out_of_memory", "out of memory for 'points'");
    *points = out;
    int i = 0;
    for (const cJSON *it = arr->child; it != NULL; it = it->next, i++) {
        char where[32];
        snprintf(where, sizeof where, "points[%d]", i);
        *n = i + 1;
        if ((st = ama_parse_point_(mc, it, where, &out[i], f)) != 0)
            return st;
        /* NOTE: quadratic, bounded by AMA_BATCH_MAX_POINTS; hash it if batches grow. */
        for (int j = 0; j < i; j++)
            if (out[j].vec.mod == out[i].vec.mod && strcmp(out[j].id, out[i].id) == 0)
                return ama_fail_set_(f, 400, "duplicate_id", "field 'points[%d].id': id "
                                     "'%.64s' with modality '%s' already appears at "
                                     "points[%d]", i, out[i].id,
                                     mc->modalities[out[i].vec.mod].name, j);
    }
    return 0;
}

void ama_search_req_free_(ama_search_req_ *s)
{
    for (int i = 0; s->queries != NULL && i < s->n; i++)
        ama_vec_free_(&s->queries[i]);
    free(s->queries);
    s->queries = NULL;
}

/* Parses one query object {modality, embedding | tokens} at `where`. */
static int parse_query(const amc_config *mc, const cJSON *q, const char *where, ama_vec_ *out,
                       ama_fail_ *f)
{
    int mod = 0;
    int st = ama_parse_modality_(mc, q, where, "modality", &mod, f);
    if (st == 0)
        st = ama_parse_embedding_(mc, q, where, mod, out, f);
    return st;
}

/* Parses target, k, filter, with_payload, nprobe and ef_search shared by both search forms. */
static int parse_search_params(const amc_config *mc, const cJSON *root, long max_k,
                               ama_search_req_ *out, ama_fail_ *f)
{
    int st = ama_parse_modality_(mc, root, "", "target", &out->target, f);
    if (st != 0) {
        if (strcmp(f->code, "unknown_modality") == 0)
            f->code = "unknown_target";
        return st;
    }
    out->k = 10;
    long limit = max_k < AMI_K_MAX ? max_k : AMI_K_MAX;
    if ((st = ama_parse_int_(root, "", "k", 1, limit, "k_out_of_range", &out->k, f)) != 0)
        return st;
    if ((st = ama_parse_bool_(root, "", "with_payload", &out->with_payload, f)) != 0)
        return st;
    if ((st = ama_parse_int_(root, "", "nprobe", 0, 65536, "invalid_field", &out->nprobe, f)))
        return st;
    if ((st = ama_parse_int_(root, "", "ef_search", 0, 65536, "invalid_field", &out->ef_search,
                             f)))
        return st;
    const cJSON *filter = cJSON_GetObjectItemCaseSensitive(root, "filter");
    if (filter != NULL && !cJSON_IsNull(filter) && !cJSON_IsObject(filter))
        return ama_fail_set_(f, 400, "invalid_field", "field 'filter' must be a JSON object");
    out->filter = cJSON_IsObject(filter) ? filter : NULL;
    return 0;
}

int ama_parse_search_(const amc_config *mc, const cJSON *root, int batch, long max_k,
                      ama_search_req_ *out, ama_fail_ *f)
{
    static const char *const single_fields[] = {"modality", "embedding", "tokens", "target", "k",
                                                "filter", "with_payload", "nprobe", "ef_search",
                                                NULL};
    static const char *const batch_fields[] = {"queries", "target", "k", "filter",
                                               "with_payload", "nprobe", "ef_search", NULL};
    static const char *const query_fields[] = {"modality", "embedding", "tokens", NULL};
    memset(out, 0, sizeof *out);
    int st = ama_check_fields_(root, "", batch ? batch_fields : single_fields, f);
    if (st == 0)
        st = parse_search_params(mc, root, max_k, out, f);
    if (st != 0)
        return st;
    if (!batch) {
        out->queries = AMC_CALLOC(1, sizeof *out->queries);
        if (out->queries == NULL)
            return ama_fail_set_(f, 503, "out_of_memory", "out of memory for the query");
        out->n = 1;
        return parse_query(mc, root, "", &out->queries[0], f);
    }

    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(root, "queries");
    if (arr == NULL)
        return ama_fail_set_(f, 400, "missing_field", "field 'queries' is required");
    int count = cJSON_IsArray(arr) ? cJSON_GetArraySize(arr) : -1;
    if (count < 1 || count > AMA_BATCH_MAX_POINTS)
        return ama_fail_set_(f, 400, "invalid_field", "field 'queries' must be an array of 1 "
                             "to %d queries", AMA_BATCH_MAX_POINTS);
    if ((long)count * out->k > AMA_BATCH_MAX_HITS)
        return ama_fail_set_(f, 400, "k_out_of_range", "%d queries x k = %ld asks for more than "
                             "%d results in one batch; lower k or split the batch", count,
                             out->k, AMA_BATCH_MAX_HITS);
    out->queries = AMC_CALLOC((size_t)count, sizeof *out->queries);
    if (out->queries == NULL)
        return ama_fail_set_(f, 503, "out_of_memory", "out of memory for 'queries'");
    int i = 0;
    for (const cJSON *q = arr->child; q != NULL; q = q->next, i++) {
        char where[32];
        snprintf(where, sizeof where, "queries[%d]", i);
        out->n = i + 1;
        if (!cJSON_IsObject(q))
            return ama_fail_set_(f, 400, "invalid_field", "'%s' must be an object", where);
        if ((st = ama_check_fields_(q, where, query_fields, f)) != 0 ||
            (st = parse_query(mc, q, where, &out->queries[i], f)) != 0)
            return st;
    }
    return 0;
}

void ama_project_req_free_(ama_project_req_ *p)
{
    for (int i = 0; p->items != NULL && i < p->n; i++)
        ama_vec_free_(&p->items[i]);
    free(p->items);
    p->items = NULL;
}

/* Parses "space" of a projection; the default depends on whether a target was given. */
static int parse_space(const cJSON *root, int has_target, amc_space *out, ama_fail_ *f)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, "space");
    *out = has_target ? AMC_SPACE_CONTRASTIVE : AMC_SPACE_TARGET;
    if (item == NULL)
        return 0;
    const char *s = cJSON_IsString(item) ? item->valuestring : "";
    if (strcmp(s, "contrastive") == 0)
        *out = AMC_SPACE_CONTRASTIVE;
    else if (strcmp(s, "predictive") == 0)
        *out = AMC_SPACE_PREDICTIVE;
    else if (strcmp(s, "target") == 0)
        *out = AMC_SPACE_TARGET;
    else
        return ama_fail_set_(f, 400, "invalid_field", "field 'space' must be \"contrastive\", "
                             "\"predictive\" or \"target\"");
    if (*out != AMC_SPACE_TARGET && !has_target)
        return ama_fail_set_(f, 400, "missing_field", "field 'target' is required for space "
                             "'%s'", s);
    return 0;
}

int ama_parse_project_(const amc_config *mc, const cJSON *root, ama_project_req_ *out,
                       ama_fail_ *f)
{
    static const char *const fields[] = {"modality", "embedding", "tokens", "embeddings",
                                         "target", "space", NULL};
    memset(out, 0, sizeof *out);
    out->target = -1;
    int mod = 0;
    int st = ama_check_fields_(root, "", fields, f);
    if (st == 0)
        st = ama_parse_modality_(mc, root, "", "modality", &mod, f);
    if (st == 0 && cJSON_GetObjectItemCaseSensitive(root, "target") != NULL) {
        st = ama_parse_modality_(mc, root, "", "target", &out->target, f);
        if (st != 0 && strcmp(f->code, "unknown_modality") == 0)
            f->code = "unknown_target";
    }
    if (st == 0)
        st = parse_space(root, out->target >= 0, &out->space, f);
    if (st != 0)
        return st;
    if (out->space != AMC_SPACE_TARGET && out->target >= 0 &&
        amc_config_direction(mc, mod, out->target) < 0 && mod != out->target)
        return ama_fail_set_(f, 400, "unknown_target", "field 'target': the model has no "
                             "direction %s -> %s", mc->modalities[mod].name,
                             mc->modalities[out->target].name);

    /* Either one item (embedding / tokens) or a list of pooled vectors (embeddings). */
    const cJSON *many = cJSON_GetObjectItemCaseSensitive(root, "embeddings");
    if (many == NULL) {
        out->items = AMC_CALLOC(1, sizeof *out->items);
        if (out->items == NULL)
            return ama_fail_set_(f, 503, "out_of_memory", "out of memory for the item");
        out->n = 1;
        return ama_parse_embedding_(mc, root, "", mod, &out->items[0], f);
    }
    if (cJSON_GetObjectItemCaseSensitive(root, "embedding") != NULL ||
        cJSON_GetObjectItemCaseSensitive(root, "tokens") != NULL)
        return ama_fail_set_(f, 400, "invalid_field", "field 'embeddings': give one of "
                             "'embedding', 'tokens' or 'embeddings'");
    int count = cJSON_IsArray(many) ? cJSON_GetArraySize(many) : -1;
    if (count < 1 || count > AMA_BATCH_MAX_POINTS)
        return ama_fail_set_(f, 400, "invalid_field", "field 'embeddings' must be an array of 1 "
                             "to %d vectors", AMA_BATCH_MAX_POINTS);
    out->items = AMC_CALLOC((size_t)count, sizeof *out->items);
    if (out->items == NULL)
        return ama_fail_set_(f, 503, "out_of_memory", "out of memory for 'embeddings'");
    int i = 0;
    for (const cJSON *row = many->child; row != NULL; row = row->next, i++) {
        char path[32];
        snprintf(path, sizeof path, "embeddings[%d]", i);
        ama_vec_ *v = &out->items[i];
        out->n = i + 1;
        v->mod = mod;
        v->seq = 1;
        v->dim = mc->modalities[mod].dim;
        v->data = AMC_MALLOC((size_t)v->dim * sizeof(float));
        if (v->data == NULL)
            return ama_fail_set_(f, 503, "out_of_memory", "out of memory for '%s'", path);
        if ((st = parse_row(row, v->dim, v->data, path, f)) != 0)
            return st;
    }
    return 0;
}

/* Reads "index": a string for every modality, or an object of modality -> string. */
static int parse_index_specs(const cJSON *root, ami_collection_spec *spec, ama_fail_ *f)
{
    const cJSON *index = cJSON_GetObjectItemCaseSensitive(root, "index");
    if (index == NULL)
        return 0;
    if (cJSON_IsString(index)) {
        if (strlen(index->valuestring) == 0 || strlen(index->valuestring) >= AMI_SPEC_MAX)
            return ama_fail_set_(f, 400, "invalid_field", "field 'index' must be 1 to %d bytes",
                                 AMI_SPEC_MAX - 1);
        for (int m = 0; m < spec->n_modalities; m++)
            strcpy(spec->index_spec[m], index->valuestring);
        return 0;
    }
    if (!cJSON_IsObject(index))
        return ama_fail_set_(f, 400, "invalid_field", "field 'index' must be a FAISS factory "
                             "string such as \"Flat\" or an object of modality -> string");
    for (const cJSON *it = index->child; it != NULL; it = it->next) {
        int m = 0;
        while (m < spec->n_modalities && strcmp(spec->modalities[m], it->string) != 0)
            m++;
        if (m == spec->n_modalities)
            return ama_fail_set_(f, 400, "unknown_modality", "field 'index.%.32s': not one of "
                                 "the collection's modalities", it->string);
        if (!cJSON_IsString(it) || strlen(it->valuestring) == 0 ||
            strlen(it->valuestring) >= AMI_SPEC_MAX)
            return ama_fail_set_(f, 400, "invalid_field", "field 'index.%s' must be a string of "
                                 "1 to %d bytes", spec->modalities[m], AMI_SPEC_MAX - 1);
        strcpy(spec->index_spec[m], it->valuestring);
    }
    return 0;
}

int ama_parse_collection_(const amc_config *mc, const cJSON *root, ami_collection_spec *spec,
                          ama_fail_ *f)
{
    static const char *const fields[] = {"name", "modalities", "index", "space", NULL};
    memset(spec, 0, sizeof *spec);
    int st = ama_check_fields_(root, "", fields, f);
    if (st == 0)
        st = ama_parse_string_(root, "", "name", spec->name, sizeof spec->name, f);
    if (st != 0)
        return st;
    for (const char *p = spec->name; *p != '\0'; p++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return ama_fail_set_(f, 400, "invalid_field", "field 'name' may contain only "
                                 "letters, digits, '_' and '-'");
    }

    /* Modalities: default every modality of the model. */
    const cJSON *mods = cJSON_GetObjectItemCaseSensitive(root, "modalities");
    if (mods == NULL) {
        spec->n_modalities = mc->n_modalities;
        for (int m = 0; m < mc->n_modalities; m++)
            strcpy(spec->modalities[m], mc->modalities[m].name);
    } else {
        int count = cJSON_IsArray(mods) ? cJSON_GetArraySize(mods) : -1;
        if (count < 1 || count > AMC_MAX_MODALITIES)
            return ama_fail_set_(f, 400, "invalid_field", "field 'modalities' must be an array "
                                 "of 1 to %d modality names", AMC_MAX_MODALITIES);
        int i = 0;
        for (const cJSON *it = mods->child; it != NULL; it = it->next, i++) {
            const char *name = cJSON_IsString(it) ? it->valuestring : NULL;
            if (name == NULL || amc_config_modality(mc, name) < 0)
                return ama_fail_set_(f, 400, "unknown_modality", "field 'modalities[%d]' is not "
                                     "a modality of the model; GET /v1/model lists them", i);
            for (int j = 0; j < i; j++)
                if (strcmp(spec->modalities[j], name) == 0)
                    return ama_fail_set_(f, 400, "invalid_field", "field 'modalities[%d]': "
                                         "'%s' is listed twice", i, name);
            strcpy(spec->modalities[i], name);
        }
        spec->n_modalities = count;
    }
    if ((st = parse_index_specs(root, spec, f)) != 0)
        return st;

    const cJSON *space = cJSON_GetObjectItemCaseSensitive(root, "space");
    if (space != NULL) {
        amc_error err;
        if (!cJSON_IsString(space) || ami_space_parse(space->valuestring, &spec->space, &err))
            return ama_fail_set_(f, 400, "invalid_field", "field 'space' must be "
                                 "\"contrastive\" or \"predictive\"");
    }
    return 0;
}
