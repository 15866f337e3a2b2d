/* .safetensors reader and float32 writer.
 *
 * Layout: an 8-byte little-endian header length n, n bytes of JSON header (a UTF-8 object,
 * possibly padded with trailing spaces), then the data section. Each header entry other than
 * "__metadata__" is {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]} with byte
 * offsets relative to the start of the data section. */
#include "core/safetensors.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fileio.h"

#define ST_MAX_HEADER_LEN 100000000u   /* 100 MB, far above any real header */
#define ST_MAX_JSON_INT 9007199254740992.0        /* 2^53: larger JSON numbers lose precision */
#define ST_ALIGN 8

/* Dtype names of the safetensors format that altmoe recognizes but cannot read. */
static const char *const unsupported_dtypes[] = {
    "BOOL", "U8", "I8", "I16", "U16", "I32", "U32", "I64", "U64", "F64", "C64",
    "F8_E5M2", "F8_E4M3", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4",
};

/* ---- header validation --------------------------------------------------------------------- */

static amc_status parse_dtype(const cJSON *value, const char *file, const char *tensor,
                              amc_dtype *out, amc_error *err)
{
    if (!cJSON_IsString(value))
        return amc_error_set(err, AMC_EFORMAT,
                             "%s: tensor '%s': missing or non-string \"dtype\"; expected "
                             "\"F32\", \"F16\" or \"BF16\"", file, tensor);
    const char *name = value->valuestring;
    if (strcmp(name, "F32") == 0) {
        *out = AMC_DTYPE_F32;
        return AMC_OK;
    }
    if (strcmp(name, "F16") == 0) {
        *out = AMC_DTYPE_F16;
        return AMC_OK;
    }
    if (strcmp(name, "BF16") == 0) {
        *out = AMC_DTYPE_BF16;
        return AMC_OK;
    }
    for (size_t i = 0; i < sizeof unsupported_dtypes / sizeof *unsupported_dtypes; i++)
        if (strcmp(name, unsupported_dtypes[i]) == 0)
            return amc_error_set(err, AMC_EFORMAT,
                                 "%s: tensor '%s': unsupported dtype \"%s\"; expected F32, "
                                 "F16 or BF16", file, tensor, name);
    return amc_error_set(err, AMC_EFORMAT,
                         "%s: tensor '%s': unknown dtype \"%.32s\"; expected F32, F16 or BF16",
                         file, tensor, name);
}

/* Reads a JSON number that must be an integer in [0, 2^53] into *out. */
static bool json_to_size(const cJSON *value, size_t *out)
{
    if (!cJSON_IsNumber(value))
        return false;
    double d = value->valuedouble;
    if (!(d >= 0.0 && d <= ST_MAX_JSON_INT) || floor(d) != d)
        return false;
    *out = (size_t)d;
    return true;
}

static amc_status parse_shape(const cJSON *value, const char *file, amc_st_tensor *t,
                              amc_error *err)
{
    if (!cJSON_IsArray(value))
        return amc_error_set(err, AMC_EFORMAT,
                             "%s: tensor '%s': missing or non-array \"shape\"; expected an "
                             "array of non-negative integers", file, t->name);
    int ndim = cJSON_GetArraySize(value);
    if (ndim > AMC_ST_MAX_DIMS)
        return amc_error_set(err, AMC_EFORMAT, "%s: tensor '%s': shape has %d dims; expected "
                             "at most %d", file, t->name, ndim, AMC_ST_MAX_DIMS);
    t->ndim = 0;
    const cJSON *dim;
    cJSON_ArrayForEach(dim, value) {
        size_t n;
        if (!json_to_size(dim, &n))
            return amc_error_set(err, AMC_EFORMAT,
                                 "%s: tensor '%s': shape dim %d is not an integer in "
                                 "[0, 2^53]", file, t->name, t->ndim);
        t->shape[t->ndim++] = (int64_t)n;
    }
    return AMC_OK;
}

/* Returns the byte size of t's elements in *bytes, or an error when the product overflows. */
static amc_status tensor_bytes(const amc_st_tensor *t, const char *file, size_t *bytes,
                               amc_error *err)
{
    size_t total = amc_dtype_size(t->dtype);
    for (int i = 0; i < t->ndim; i++) {
        size_t dim = (size_t)t->shape[i];
        if (dim != 0 && total > SIZE_MAX / dim)
            return amc_error_set(err, AMC_EFORMAT,
                                 "%s: tensor '%s': shape is too large, its byte size "
                                 "overflows", file, t->name);
        total *= dim;
    }
    *bytes = total;
    return AMC_OK;
}

static amc_status parse_offsets(const cJSON *value, const char *file, size_t data_len,
                                amc_st_tensor *t, amc_error *err)
{
    if (!cJSON_IsArray(value) || cJSON_GetArraySize(value) != 2 ||
        !json_to_size(cJSON_GetArrayItem(value, 0), &t->begin) ||
        !json_to_size(cJSON_GetArrayItem(value, 1), &t->end))
        return amc_error_set(err, AMC_EFORMAT,
                             "%s: tensor '%s': missing or invalid \"data_offsets\"; expected "
                             "[begin, end] with non-negative integers", file, t->name);
    if (t->begin > t->end || t->end > data_len)
        return amc_error_set(err, AMC_EFORMAT,
                             "%s: tensor '%s': data_offsets [%zu, %zu] out of range; expected "
                             "begin <= end <= %zu (the data section size)", file, t->name,
                             t->begin, t->end, data_len);

    size_t bytes = 0;
    amc_status rc = tensor_bytes(t, file, &bytes, err);
    if (rc != AMC_OK)
        return rc;
    if (t->end - t->begin != bytes)
        return amc_error_set(err, AMC_EFORMAT,
                             "%s: tensor '%s': data_offsets span %zu bytes; expected %zu for "
                             "its shape and dtype", file, t->name, t->end - t->begin, bytes);
    return AMC_OK;
}

static amc_status parse_tensor(const cJSON *entry, const char *file, size_t data_len,
                               amc_st_tensor *t, amc_error *err)
{
    t->name = strdup(entry->string);
    if (t->name == NULL)
        return amc_error_set(err, AMC_ENOMEM, "%s: out of memory for a tensor name", file);
    if (!cJSON_IsObject(entry))
        return amc_error_set(err, AMC_EFORMAT,
                             "%s: tensor '%s': entry is not a JSON object; expected {\"dtype\", "
                             "\"shape\", \"data_offsets\"}", file, t->name);

    amc_status rc = parse_dtype(cJSON_GetObjectItemCaseSensitive(entry, "dtype"), file,
                                t->name, &t->dtype, err);
    if (rc == AMC_OK)
        rc = parse_shape(cJSON_GetObjectItemCaseSensitive(entry, "shape"), file, t, err);
    if (rc == AMC_OK)
        rc = parse_offsets(cJSON_GetObjectItemCaseSensitive(entry, "data_offsets"), file,
                           data_len, t, err);
    return rc;
}

static amc_status parse_metadata(const cJSON *meta, const char *file, amc_st_file *out,
                                 amc_error *err)
{
    if (!cJSON_IsObject(meta))
        return amc_error_set(err, AMC_EFORMAT,
                             "%s: \"__metadata__\" is not a JSON object; expected an object of "
                             "string values", file);
    int n = cJSON_GetArraySize(meta);
    out->meta_keys = calloc((size_t)n + 1, sizeof *out->meta_keys);
    out->meta_values = calloc((size_t)n + 1, sizeof *out->meta_values);
    if (out->meta_keys == NULL || out->meta_values == NULL)
        return amc_error_set(err, AMC_ENOMEM, "%s: out of memory for metadata", file);

    const cJSON *item;
    cJSON_ArrayForEach(item, meta) {
        if (!cJSON_IsString(item))
            return amc_error_set(err, AMC_EFORMAT,
                                 "%s: \"__metadata__\" value of '%s' is not a string; expected "
                                 "string values only", file, item->string);
        if (amc_st_meta_get(out, item->string) != NULL)
            return amc_error_set(err, AMC_EFORMAT,
                                 "%s: \"__metadata__\" key '%s' appears twice", file,
                                 item->string);
        out->meta_keys[out->n_meta] = strdup(item->string);
        out->meta_values[out->n_meta] = strdup(item->valuestring);
        out->n_meta++;
        if (out->meta_keys[out->n_meta - 1] == NULL || out->meta_values[out->n_meta - 1] == NULL)
            return amc_error_set(err, AMC_ENOMEM, "%s: out of memory for metadata", file);
    }
    return AMC_OK;
}

static int compare_names(const void *a, const void *b)
{
    const amc_st_tensor *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

static int compare_ranges(const void *a, const void *b)
{
    const amc_st_tensor *const *x = a, *const *y = b;
    if ((*x)->begin != (*y)->begin)
        return (*x)->begin < (*y)->begin ? -1 : 1;
    if ((*x)->end != (*y)->end)
        return (*x)->end < (*y)->end ? -1 : 1;
    return 0;
}

/* Rejects duplicate names and overlapping byte ranges, by sorting pointers to the tensors. */
static amc_status check_tensor_set(const amc_st_file *out, const char *file, amc_error *err)
{
    if (out->n_tensors < 2)
        return AMC_OK;
    const amc_st_tensor **order = malloc((size_t)out->n_tensors * sizeof *order);
    if (order == NULL)
        return amc_error_set(err, AMC_ENOMEM, "%s: out of memory", file);
    for (int i = 0; i < out->n_tensors; i++)
        order[i] = &out->tensors[i];

    amc_status rc = AMC_OK;
    qsort(order, (size_t)out->n_tensors, sizeof *order, compare_names);
    for (int i = 1; i < out->n_tensors && rc == AMC_OK; i++)
        if (strcmp(order[i - 1]->name, order[i]->name) == 0)
            rc = amc_error_set(err, AMC_EFORMAT, "%s: tensor '%s' appears twice in the header",
                               file, order[i]->name);

    if (rc == AMC_OK)
        qsort(order, (size_t)out->n_tensors, sizeof *order, compare_ranges);
    for (int i = 1; i < out->n_tensors && rc == AMC_OK; i++)
        if (order[i]->begin < order[i - 1]->end)
            rc = amc_error_set(err, AMC_EFORMAT,
                               "%s: tensor '%s': bytes [%zu, %zu) overlap tensor '%s' at "
                               "[%zu, %zu); expected disjoint data_offsets", file,
                               order[i]->name, order[i]->begin, order[i]->end,
                               order[i - 1]->name, order[i - 1]->begin, order[i - 1]->end);
    free(order);
    return rc;
}

static amc_status parse_header_json(const cJSON *root, const char *file, amc_st_file *out,
                                    amc_error *err)
{
    if (!cJSON_IsObject(root))
        return amc_error_set(err, AMC_EFORMAT,
                             "%s: header is not a JSON object; expected {\"name\": {...}}", file);
    int n = cJSON_GetArraySize(root);
    out->tensors = calloc((size_t)n + 1, sizeof *out->tensors);
    if (out->tensors == NULL)
        return amc_error_set(err, AMC_ENOMEM, "%s: out of memory for %d tensors", file, n);

    const cJSON *entry;
    bool seen_meta = false;
    cJSON_ArrayForEach(entry, root) {
        amc_status rc;
        if (strcmp(entry->string, "__metadata__") == 0) {
            if (seen_meta)
                return amc_error_set(err, AMC_EFORMAT,
                                     "%s: \"__metadata__\" appears twice in the header", file);
            seen_meta = true;
            rc = parse_metadata(entry, file, out, err);
        } else {
            rc = parse_tensor(entry, file, out->data_len, &out->tensors[out->n_tensors++],
                              err);
        }
        if (rc != AMC_OK)
            return rc;
    }
    return check_tensor_set(out, file, err);
}

/* Validates the image buf[0, len) and fills out; out->data points into buf. */
static amc_status parse_image(amc_st_file *out, const uint8_t *buf, size_t len,
                              const char *file, amc_error *err)
{
    if (len < 8)
        return amc_error_set(err, AMC_EFORMAT,
                             "%s: truncated: %zu bytes, shorter than the 8-byte header length",
                             file, len);
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; i--)
        header_len = header_len << 8 | buf[i];
    if (header_len > ST_MAX_HEADER_LEN)
        return amc_error_set(err, AMC_EFORMAT,
                             "%s: header length %llu exceeds the %u-byte limit", file,
                             (unsigned long long)header_len, ST_MAX_HEADER_LEN);
    if (header_len > len - 8)
        return amc_error_set(err, AMC_EFORMAT,
                             "%s: header length %llu runs past the end of the %zu-byte file",
                             file, (unsigned long long)header_len, len);
    if (header_len < 2)
        return amc_error_set(err, AMC_EFORMAT,
                             "%s: header length %llu is too short for a JSON object", file,
                             (unsigned long long)header_len);

    out->data = buf + 8 + header_len;
    out->data_len = len - 8 - (size_t)header_len;

    /* The header may be padded with trailing spaces; any other byte after the object is junk. */
    const char *json = (const char *)buf + 8;
    const char *json_end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, (size_t)header_len, &json_end, false);
    /* cJSON reports the error position through a global, which is not safe across threads. */
    if (root == NULL)
        return amc_error_set(err, AMC_EFORMAT,
                             "%s: header is not valid JSON; expected a JSON object of tensors",
                             file);
    for (const char *p = json_end; p < json + header_len; p++) {
        if (*p != ' ') {
            cJSON_Delete(root);
            return amc_error_set(err, AMC_EFORMAT,
                                 "%s: header has bytes after its JSON object; expected only "
                                 "space padding", file);
        }
    }
    amc_status rc = parse_header_json(root, file, out, err);
    cJSON_Delete(root);
    return rc;
}

/* ---- reader API ---------------------------------------------------------------------------- */

amc_status amc_st_open(amc_st_file *out, const char *path, amc_error *err)
{
    memset(out, 0, sizeof *out);
    amc_status rc = amc_file_map(path, &out->map, &out->map_len, err);
    if (rc == AMC_OK)
        rc = parse_image(out, out->map, out->map_len, path, err);
    if (rc != AMC_OK)
        amc_st_close(out);
    return rc;
}

amc_status amc_st_parse(amc_st_file *out, const void *buf, size_t len, amc_error *err)
{
    memset(out, 0, sizeof *out);
    out->copy = malloc(len > 0 ? len : 1);
    if (out->copy == NULL)
        return amc_error_set(err, AMC_ENOMEM, "safetensors image: out of memory for %zu bytes",
                             len);
    if (len > 0)
        memcpy(out->copy, buf, len);
    amc_status rc = parse_image(out, out->copy, len, "safetensors image", err);
    if (rc != AMC_OK)
        amc_st_close(out);
    return rc;
}

void amc_st_close(amc_st_file *file)
{
    for (int i = 0; i < file->n_tensors; i++)
        free(file->tensors[i].name);
    free(file->tensors);
    for (int i = 0; i < file->n_meta; i++) {
        free(file->meta_keys[i]);
        free(file->meta_values[i]);
    }
    free(file->meta_keys);
    free(file->meta_values);
    amc_file_unmap(file->map, file->map_len);
    free(file->copy);
    memset(file, 0, sizeof *file);
}

const amc_st_tensor *amc_st_find(const amc_st_file *file, const char *name)
{
    for (int i = 0; i < file->n_tensors; i++)
        if (strcmp(file->tensors[i].name, name) == 0)
            return &file->tensors[i];
    return NULL;
}

const char *amc_st_meta_get(const amc_st_file *file, const char *key)
{
    for (int i = 0; i < file->n_meta; i++)
        if (file->meta_keys[i] != NULL && strcmp(file->meta_keys[i], key) == 0)
            return file->meta_values[i];
    return NULL;
}

int64_t amc_st_numel(const amc_st_tensor *tensor)
{
    int64_t numel = 1;
    for (int i = 0; i < tensor->ndim; i++)
        numel *= tensor->shape[i];
    return numel;
}

amc_status amc_st_read_f32(const amc_st_file *file, const amc_st_tensor *tensor, float *out,
                           size_t numel, amc_error *err)
{
    if ((int64_t)numel != amc_st_numel(tensor))
        return amc_error_set(err, AMC_EINVAL,
                             "tensor '%s': output holds %zu floats; expected %lld",
                             tensor->name, numel, (long long)amc_st_numel(tensor));
    const uint8_t *src = file->data + tensor->begin;
    switch (tensor->dtype) {
    case AMC_DTYPE_F32:
        if (numel > 0)
            memcpy(out, src, numel * sizeof(float));
        break;
    case AMC_DTYPE_F16:
        for (size_t i = 0; i < numel; i++)
            out[i] = amc_f16_to_f32((uint16_t)(src[2 * i] | src[2 * i + 1] << 8));
        break;
    case AMC_DTYPE_BF16:
        for (size_t i = 0; i < numel; i++)
            out[i] = amc_bf16_to_f32((uint16_t)(src[2 * i] | src[2 * i + 1] << 8));
        break;
    }
    return AMC_OK;
}

/* ---- writer -------------------------------------------------------------------------------- */

/* Checks the entries and returns each one's byte size in bytes[i]. */
static amc_status check_entries(const char *path, const amc_st_entry *entries, int n,
                                size_t *bytes, amc_error *err)
{
    for (int i = 0; i < n; i++) {
        const amc_st_entry *e = &entries[i];
        if (e->name == NULL || strcmp(e->name, "__metadata__") == 0)
            return amc_error_set(err, AMC_EINVAL, "%s: entry %d has no usable name", path, i);
        if (e->ndim < 0 || e->ndim > AMC_ST_MAX_DIMS)
            return amc_error_set(err, AMC_EINVAL, "%s: tensor '%s': ndim %d; expected 0..%d",
                                 path, e->name, e->ndim, AMC_ST_MAX_DIMS);
        size_t total = sizeof(float);
        for (int d = 0; d < e->ndim; d++) {
            if (e->shape[d] < 0 || (double)e->shape[d] > ST_MAX_JSON_INT)
                return amc_error_set(err, AMC_EINVAL,
                                     "%s: tensor '%s': shape dim %d is %lld; expected 0..2^53",
                                     path, e->name, d, (long long)e->shape[d]);
            if (e->shape[d] != 0 && total > SIZE_MAX / (size_t)e->shape[d])
                return amc_error_set(err, AMC_EINVAL, "%s: tensor '%s': shape too large",
                                     path, e->name);
            total *= (size_t)e->shape[d];
        }
        if (total > 0 && e->data == NULL)
            return amc_error_set(err, AMC_EINVAL, "%s: tensor '%s': data is NULL", path,
                                 e->name);
        bytes[i] = total;
    }
    return AMC_OK;
}

static cJSON *build_tensor_json(const amc_st_entry *e, size_t begin, size_t end)
{
    cJSON *obj = cJSON_CreateObject();
    cJSON *shape = cJSON_AddArrayToObject(obj, "shape");
    cJSON *offsets = cJSON_AddArrayToObject(obj, "data_offsets");
    if (cJSON_AddStringToObject(obj, "dtype", "F32") == NULL || shape == NULL ||
        offsets == NULL) {
        cJSON_Delete(obj);
        return NULL;
    }
    bool ok = true;
    for (int d = 0; d < e->ndim; d++)
        ok = ok && cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)e->shape[d]));
    ok = ok && cJSON_AddItemToArray(offsets, cJSON_CreateNumber((double)begin));
    ok = ok && cJSON_AddItemToArray(offsets, cJSON_CreateNumber((double)end));
    if (!ok) {
        cJSON_Delete(obj);
        return NULL;
    }
    return obj;
}

/* Builds the header JSON text, padded with spaces to a multiple of 8 bytes; caller frees. */
static amc_status build_header(const char *path, const amc_st_entry *entries, int n,
                               const size_t *bytes, const char *const *meta_keys,
                               const char *const *meta_values, int n_meta, char **text,
                               size_t *text_len, amc_error *err)
{
    cJSON *root = cJSON_CreateObject();
    amc_status rc = root != NULL ? AMC_OK : AMC_ENOMEM;

    if (rc == AMC_OK && n_meta > 0) {
        cJSON *meta = cJSON_AddObjectToObject(root, "__metadata__");
        for (int i = 0; meta != NULL && i < n_meta; i++) {
            if (meta_keys[i] == NULL || meta_values[i] == NULL ||
                cJSON_GetObjectItemCaseSensitive(meta, meta_keys[i]) != NULL) {
                cJSON_Delete(root);
                return amc_error_set(err, AMC_EINVAL,
                                     "%s: metadata pair %d is NULL or repeats a key", path, i);
            }
            if (cJSON_AddStringToObject(meta, meta_keys[i], meta_values[i]) == NULL)
                meta = NULL;
        }
        if (meta == NULL)
            rc = AMC_ENOMEM;
    }

    size_t offset = 0;
    for (int i = 0; rc == AMC_OK && i < n; i++) {
        if (cJSON_GetObjectItemCaseSensitive(root, entries[i].name) != NULL) {
            cJSON_Delete(root);
            return amc_error_set(err, AMC_EINVAL, "%s: tensor '%s' is given twice", path,
                                 entries[i].name);
        }
        cJSON *t = build_tensor_json(&entries[i], offset, offset + bytes[i]);
        if (t == NULL || !cJSON_AddItemToObject(root, entries[i].name, t))
            rc = AMC_ENOMEM;
        offset += bytes[i];
    }

    char *json = rc == AMC_OK ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (json == NULL)
        return amc_error_set(err, AMC_ENOMEM, "%s: out of memory building the header", path);

    size_t len = strlen(json);
    size_t padded = (len + ST_ALIGN - 1) / ST_ALIGN * ST_ALIGN;
    *text = realloc(json, padded);
    if (*text == NULL) {
        free(json);
        return amc_error_set(err, AMC_ENOMEM, "%s: out of memory building the header", path);
    }
    memset(*text + len, ' ', padded - len);
    *text_len = padded;
    return AMC_OK;
}

static amc_status write_file(const char *path, const char *header, size_t header_len,
                             const amc_st_entry *entries, int n, const size_t *bytes,
                             amc_error *err)
{
    uint8_t len_bytes[8];
    for (int i = 0; i < 8; i++)
        len_bytes[i] = (uint8_t)((uint64_t)header_len >> (8 * i));

    amc_atomic_file file;
    amc_status rc = amc_atomic_begin(&file, path, err);
    if (rc != AMC_OK)
        return rc;
    rc = amc_atomic_write(&file, len_bytes, sizeof len_bytes, err);
    if (rc == AMC_OK)
        rc = amc_atomic_write(&file, header, header_len, err);
    for (int i = 0; rc == AMC_OK && i < n; i++)
        if (bytes[i] > 0)
            rc = amc_atomic_write(&file, entries[i].data, bytes[i], err);
    if (rc != AMC_OK) {
        amc_atomic_abort(&file);
        return rc;
    }
    return amc_atomic_commit(&file, err);
}

amc_status amc_st_save(const char *path, const amc_st_entry *entries, int n,
                       const char *const *meta_keys, const char *const *meta_values, int n_meta,
                       amc_error *err)
{
    if (n < 0 || n_meta < 0 || (n > 0 && entries == NULL) ||
        (n_meta > 0 && (meta_keys == NULL || meta_values == NULL)))
        return amc_error_set(err, AMC_EINVAL, "%s: invalid tensor or metadata arguments", path);
    size_t *bytes = calloc((size_t)n + 1, sizeof *bytes);
    if (bytes == NULL)
        return amc_error_set(err, AMC_ENOMEM, "%s: out of memory", path);

    char *header = NULL;
    size_t header_len = 0;
    amc_status rc = check_entries(path, entries, n, bytes, err);
    if (rc == AMC_OK)
        rc = build_header(path, entries, n, bytes, meta_keys, meta_values, n_meta, &header,
                          &header_len, err);
    if (rc == AMC_OK)
        rc = write_file(path, header, header_len, entries, n, bytes, err);
    free(header);
    free(bytes);
    return rc;
}
