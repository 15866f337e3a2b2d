/* Payload filters of ami_search(): equality, `in` and numeric ranges on top-level payload keys,
 * combined with AND. The syntax is documented at ami_search_params in index/store.h. */
#include "index/store_internal.h"

#include <stdlib.h>
#include <string.h>

typedef enum cond_kind { COND_EQ, COND_IN, COND_RANGE } cond_kind;

typedef struct cond {
    const char *key;             /* borrowed from the filter JSON */
    cond_kind kind;
    const cJSON *value;          /* COND_EQ: a scalar; COND_IN: an array of scalars */
    int has_lo, lo_strict, has_hi, hi_strict;
    double lo, hi;
} cond;

struct ami_filter_ {
    int n;
    cond conds[];
};

static int is_scalar(const cJSON *v)
{
    return cJSON_IsString(v) || cJSON_IsNumber(v) || cJSON_IsBool(v) || cJSON_IsNull(v);
}

/* Fills c from an operator object such as {"gte": 1, "lt": 5} or {"in": [..]}. */
static amc_status compile_ops(const cJSON *ops, cond *c, amc_error *err)
{
    if (cJSON_GetArraySize(ops) == 0)
        return amc_error_set(err, AMC_EINVAL, "filter.%s: empty operator object; use eq, in, "
                             "gt, gte, lt or lte", c->key);
    const cJSON *op;
    int is_range = 0, is_other = 0;
    cJSON_ArrayForEach(op, ops) {
        const char *name = op->string;
        if (strcmp(name, "eq") == 0 || strcmp(name, "in") == 0) {
            is_other++;
            c->kind = name[0] == 'e' ? COND_EQ : COND_IN;
            c->value = op;
            if (c->kind == COND_EQ && !is_scalar(op))
                return amc_error_set(err, AMC_EINVAL, "filter.%s.eq must be a string, number, "
                                     "boolean or null", c->key);
            if (c->kind == COND_IN && !cJSON_IsArray(op))
                return amc_error_set(err, AMC_EINVAL, "filter.%s.in must be an array", c->key);
            for (const cJSON *v = c->kind == COND_IN ? op->child : NULL; v != NULL; v = v->next)
                if (!is_scalar(v))
                    return amc_error_set(err, AMC_EINVAL, "filter.%s.in must list strings, "
                                         "numbers, booleans or null", c->key);
            continue;
        }
        int lower = strcmp(name, "gt") == 0 || strcmp(name, "gte") == 0;
        int upper = strcmp(name, "lt") == 0 || strcmp(name, "lte") == 0;
        if (!lower && !upper)
            return amc_error_set(err, AMC_EINVAL, "filter.%s: unknown operator \"%s\"; use eq, "
                                 "in, gt, gte, lt or lte", c->key, name);
        if (!cJSON_IsNumber(op))
            return amc_error_set(err, AMC_EINVAL, "filter.%s.%s must be a number", c->key, name);
        is_range = 1;
        c->kind = COND_RANGE;
        if (lower) {
            c->has_lo = 1;
            c->lo = op->valuedouble;
            c->lo_strict = name[2] == '\0';
        } else {
            c->has_hi = 1;
            c->hi = op->valuedouble;
            c->hi_strict = name[2] == '\0';
        }
    }
    if (is_other > 1 || (is_other == 1 && is_range))
        return amc_error_set(err, AMC_EINVAL, "filter.%s: combine range bounds only with each "
                             "other, not with eq or in", c->key);
    return AMC_OK;
}

amc_status ami_filter_compile_(const cJSON *json, ami_filter_ **out, amc_error *err)
{
    *out = NULL;
    if (json == NULL)
        return AMC_OK;
    if (!cJSON_IsObject(json))
        return amc_error_set(err, AMC_EINVAL, "filter must be a JSON object of payload keys");
    int n = cJSON_GetArraySize(json);
    ami_filter_ *f = calloc(1, sizeof *f + sizeof(cond) * (size_t)(n + 1));
    if (f == NULL)
        return amc_error_set(err, AMC_ENOMEM, "out of memory compiling the filter");

    const cJSON *item;
    amc_status s = AMC_OK;
    cJSON_ArrayForEach(item, json) {
        cond *c = &f->conds[f->n++];
        c->key = item->string;
        if (is_scalar(item)) {
            c->kind = COND_EQ;
            c->value = item;
        } else if (cJSON_IsObject(item)) {
            s = compile_ops(item, c, err);
        } else {
            s = amc_error_set(err, AMC_EINVAL, "filter.%s: arrays are not values; use "
                              "{\"in\": [...]}", c->key);
        }
        if (s != AMC_OK)
            break;
    }
    if (s != AMC_OK) {
        free(f);
        return s;
    }
    *out = f;
    return AMC_OK;
}

static int scalar_equal(const cJSON *a, const cJSON *b)
{
    if (cJSON_IsNumber(a) && cJSON_IsNumber(b))
        return a->valuedouble == b->valuedouble;
    if (cJSON_IsString(a) && cJSON_IsString(b))
        return strcmp(a->valuestring, b->valuestring) == 0;
    if (cJSON_IsBool(a) && cJSON_IsBool(b))
        return cJSON_IsTrue(a) == cJSON_IsTrue(b);
    return cJSON_IsNull(a) && cJSON_IsNull(b);
}

static int cond_match(const cond *c, const cJSON *v)
{
    switch (c->kind) {
    case COND_EQ:
        return scalar_equal(v, c->value);
    case COND_IN:
        for (const cJSON *e = c->value->child; e != NULL; e = e->next)
            if (scalar_equal(v, e))
                return 1;
        return 0;
    case COND_RANGE:
        if (!cJSON_IsNumber(v))
            return 0;
        if (c->has_lo && (c->lo_strict ? !(v->valuedouble > c->lo) : !(v->valuedouble >= c->lo)))
            return 0;
        if (c->has_hi && (c->hi_strict ? !(v->valuedouble < c->hi) : !(v->valuedouble <= c->hi)))
            return 0;
        return 1;
    }
    return 0;
}

int ami_filter_match_(const ami_filter_ *filter, const cJSON *payload)
{
    if (filter == NULL)
        return 1;
    if (!cJSON_IsObject(payload))
        return 0;
    for (int i = 0; i < filter->n; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(payload, filter->conds[i].key);
        if (v == NULL || !cond_match(&filter->conds[i], v))
            return 0;
    }
    return 1;
}

void ami_filter_free_(ami_filter_ *filter)
{
    free(filter);
}
