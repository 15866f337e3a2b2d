/* The connector's config, parameter layout, initialisation and fingerprint. The forward pass is
 * in core/forward.c. */
#include "core/connector.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <stdarg.h>
#include <stddef.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"

/* ---------------------------------------------------------------- config */

static void config_defaults(amc_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->hidden = 512;
    cfg->latent = 512;
    cfg->n_experts = 12;
    cfg->top_k = 4;
    cfg->dropout = 0.1f;
    cfg->ln_eps = 1e-5f;
}

static int valid_name(const char *name)
{
    size_t len = strlen(name);

    if (len == 0 || len >= AMC_NAME_MAX || !islower((unsigned char)name[0]))
        return 0;
    for (size_t i = 1; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        if (!islower(c) && !isdigit(c) && c != '_')
            return 0;
    }
    return 1;
}

amc_status amc_config_validate(const amc_config *cfg, amc_error *err)
{
    if (cfg->n_modalities < 1 || cfg->n_modalities > AMC_MAX_MODALITIES)
        return amc_error_set(err, AMC_EINVAL, "modalities: expected 1 to %d entries, got %d",
                             AMC_MAX_MODALITIES, cfg->n_modalities);
    for (int m = 0; m < cfg->n_modalities; m++) {
        const amc_modality *mod = &cfg->modalities[m];
        if (!valid_name(mod->name))
            return amc_error_set(err, AMC_EINVAL,
                                 "modalities[%d].name: '%s' is invalid; use 1 to %d characters "
                                 "of [a-z0-9_] starting with a letter",
                                 m, mod->name, AMC_NAME_MAX - 1);
        if (mod->dim < 1 || mod->dim > AMC_MAX_DIM)
            return amc_error_set(err, AMC_EINVAL, "modalities[%d].dim: %d is out of range [1, %d]",
                                 m, mod->dim, AMC_MAX_DIM);
        for (int o = 0; o < m; o++)
            if (strcmp(cfg->modalities[o].name, mod->name) == 0)
                return amc_error_set(err, AMC_EINVAL, "modalities[%d].name: '%s' appears twice",
                                     m, mod->name);
    }
    if (cfg->n_directions < 1 || cfg->n_directions > AMC_MAX_DIRECTIONS)
        return amc_error_set(err, AMC_EINVAL, "directions: expected at least one, got %d",
                             cfg->n_directions);
    for (int d = 0; d < cfg->n_directions; d++) {
        const amc_direction *dir = &cfg->directions[d];
        if (dir->src < 0 || dir->src >= cfg->n_modalities || dir->tgt < 0 ||
            dir->tgt >= cfg->n_modalities || dir->src == dir->tgt)
            return amc_error_set(err, AMC_EINVAL,
                                 "directions[%d]: source and target must be two different "
                                 "modalities of the model", d);
        for (int o = 0; o < d; o++)
            if (cfg->directions[o].src == dir->src && cfg->directions[o].tgt == dir->tgt)
                return amc_error_set(err, AMC_EINVAL, "directions[%d]: %s->%s appears twice", d,
                                     cfg->modalities[dir->src].name,
                                     cfg->modalities[dir->tgt].name);
    }
    if (cfg->hidden < 1 || cfg->hidden > AMC_MAX_DIM)
        return amc_error_set(err, AMC_EINVAL, "hidden: %d is out of range [1, %d]", cfg->hidden,
                             AMC_MAX_DIM);
    if (cfg->latent < 1 || cfg->latent > AMC_MAX_DIM)
        return amc_error_set(err, AMC_EINVAL, "latent: %d is out of range [1, %d]", cfg->latent,
                             AMC_MAX_DIM);
    if (cfg->n_experts < 1 || cfg->n_experts > AMC_MAX_EXPERTS)
        return amc_error_set(err, AMC_EINVAL, "experts: %d is out of range [1, %d]",
                             cfg->n_experts, AMC_MAX_EXPERTS);
    if (cfg->top_k < 1 || cfg->top_k > cfg->n_experts)
        return amc_error_set(err, AMC_EINVAL, "top_k: %d is out of range [1, experts = %d]",
                             cfg->top_k, cfg->n_experts);
    if (!(cfg->dropout >= 0.0f && cfg->dropout < 1.0f))
        return amc_error_set(err, AMC_EINVAL, "dropout: %g is out of range [0, 1)",
                             (double)cfg->dropout);
    if (!(cfg->ln_eps > 0.0f && cfg->ln_eps < 1.0f))
        return amc_error_set(err, AMC_EINVAL, "ln_eps: %g is out of range (0, 1)",
                             (double)cfg->ln_eps);
    return AMC_OK;
}

static amc_status parse_int(const cJSON *item, const char *key, int *out, amc_error *err)
{
    if (!cJSON_IsNumber(item) || item->valuedouble != floor(item->valuedouble) ||
        fabs(item->valuedouble) > 1e9)
        return amc_error_set(err, AMC_EINVAL, "%s: expected an integer", key);
    *out = (int)item->valuedouble;
    return AMC_OK;
}

static amc_status parse_modalities(amc_config *cfg, const cJSON *arr, amc_error *err)
{
    if (!cJSON_IsArray(arr))
        return amc_error_set(err, AMC_EINVAL, "modalities: expected an array of {name, dim}");
    int n = cJSON_GetArraySize(arr);
    if (n < 1 || n > AMC_MAX_MODALITIES)
        return amc_error_set(err, AMC_EINVAL, "modalities: expected 1 to %d entries, got %d",
                             AMC_MAX_MODALITIES, n);
    cfg->n_modalities = n;
    for (int m = 0; m < n; m++) {
        const cJSON *item = cJSON_GetArrayItem(arr, m);
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(item, "name");
        const cJSON *dim = cJSON_GetObjectItemCaseSensitive(item, "dim");
        char key[64];

        if (!cJSON_IsObject(item) || cJSON_GetArraySize(item) != 2 || !cJSON_IsString(name) ||
            dim == NULL)
            return amc_error_set(err, AMC_EINVAL,
                                 "modalities[%d]: expected exactly {\"name\": string, \"dim\": "
                                 "integer}", m);
        if (strlen(name->valuestring) >= AMC_NAME_MAX)
            return amc_error_set(err, AMC_EINVAL, "modalities[%d].name: longer than %d characters",
                                 m, AMC_NAME_MAX - 1);
        snprintf(cfg->modalities[m].name, AMC_NAME_MAX, "%s", name->valuestring);
        snprintf(key, sizeof key, "modalities[%d].dim", m);
        if (parse_int(dim, key, &cfg->modalities[m].dim, err) != AMC_OK)
            return err ? err->code : AMC_EINVAL;
    }
    return AMC_OK;
}

static amc_status parse_directions(amc_config *cfg, const cJSON *arr, amc_error *err)
{
    if (arr == NULL) {
        /* Default: every ordered pair of distinct modalities. */
        for (int s = 0; s < cfg->n_modalities; s++)
            for (int t = 0; t < cfg->n_modalities; t++)
                if (s != t)
                    cfg->directions[cfg->n_directions++] = (amc_direction){s, t};
        return AMC_OK;
    }
    if (!cJSON_IsArray(arr) || cJSON_GetArraySize(arr) < 1 ||
        cJSON_GetArraySize(arr) > AMC_MAX_DIRECTIONS)
        return amc_error_set(err, AMC_EINVAL,
                             "directions: expected a non-empty array of [source, target] pairs");
    for (int d = 0; d < cJSON_GetArraySize(arr); d++) {
        const cJSON *pair = cJSON_GetArrayItem(arr, d);
        const cJSON *src = cJSON_GetArrayItem(pair, 0);
        const cJSON *tgt = cJSON_GetArrayItem(pair, 1);

        if (!cJSON_IsArray(pair) || cJSON_GetArraySize(pair) != 2 || !cJSON_IsString(src) ||
            !cJSON_IsString(tgt))
            return amc_error_set(err, AMC_EINVAL,
                                 "directions[%d]: expected [\"source\", \"target\"]", d);
        int s = amc_config_modality(cfg, src->valuestring);
        int t = amc_config_modality(cfg, tgt->valuestring);
        if (s < 0 || t < 0)
            return amc_error_set(err, AMC_EINVAL, "directions[%d]: unknown modality '%s'", d,
                                 s < 0 ? src->valuestring : tgt->valuestring);
        cfg->directions[cfg->n_directions++] = (amc_direction){s, t};
    }
    return AMC_OK;
}

static amc_status parse_config_object(amc_config *cfg, const cJSON *root, amc_error *err)
{
    static const char *const known[] = {"modalities", "directions", "hidden", "latent",
                                        "experts",    "top_k",      "dropout", "ln_eps"};
    const cJSON *item;

    if (!cJSON_IsObject(root))
        return amc_error_set(err, AMC_EINVAL, "connector config: expected a JSON object");
    cJSON_ArrayForEach(item, root) {
        size_t i = 0;
        while (i < sizeof known / sizeof known[0] && strcmp(item->string, known[i]) != 0)
            i++;
        if (i == sizeof known / sizeof known[0])
            return amc_error_set(err, AMC_EINVAL, "%s: unknown key in connector config",
                                 item->string);
    }
    amc_status rc = parse_modalities(cfg, cJSON_GetObjectItemCaseSensitive(root, "modalities"),
                                     err);
    if (rc == AMC_OK)
        rc = parse_directions(cfg, cJSON_GetObjectItemCaseSensitive(root, "directions"), err);
    static const struct {
        const char *key;
        size_t offset;
    } ints[] = {{"hidden", offsetof(amc_config, hidden)},
                {"latent", offsetof(amc_config, latent)},
                {"experts", offsetof(amc_config, n_experts)},
                {"top_k", offsetof(amc_config, top_k)}};
    for (size_t i = 0; rc == AMC_OK && i < sizeof ints / sizeof ints[0]; i++) {
        item = cJSON_GetObjectItemCaseSensitive(root, ints[i].key);
        if (item != NULL)
            rc = parse_int(item, ints[i].key, (int *)((char *)cfg + ints[i].offset), err);
    }
    static const struct {
        const char *key;
        size_t offset;
    } floats[] = {{"dropout", offsetof(amc_config, dropout)},
                  {"ln_eps", offsetof(amc_config, ln_eps)}};
    for (size_t i = 0; rc == AMC_OK && i < sizeof floats / sizeof floats[0]; i++) {
        item = cJSON_GetObjectItemCaseSensitive(root, floats[i].key);
        if (item == NULL)
            continue;
        if (!cJSON_IsNumber(item))
            return amc_error_set(err, AMC_EINVAL, "%s: expected a number", floats[i].key);
        *(float *)((char *)cfg + floats[i].offset) = (float)item->valuedouble;
    }
    return rc;
}

amc_status amc_config_from_json(amc_config *cfg, const char *json, amc_error *err)
{
    config_defaults(cfg);
    cJSON *root = cJSON_Parse(json);
    if (root == NULL)
        return amc_error_set(err, AMC_EINVAL, "connector config: invalid JSON near '%.20s'",
                             cJSON_GetErrorPtr() ? cJSON_GetErrorPtr() : "");
    amc_status rc = parse_config_object(cfg, root, err);
    cJSON_Delete(root);
    if (rc != AMC_OK)
        return rc;
    return amc_config_validate(cfg, err);
}

char *amc_config_to_json(const amc_config *cfg)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *mods = cJSON_AddArrayToObject(root, "modalities");
    cJSON *dirs = cJSON_AddArrayToObject(root, "directions");

    for (int m = 0; m < cfg->n_modalities; m++) {
        cJSON *item = cJSON_CreateObject();
        cJSON_AddStringToObject(item, "name", cfg->modalities[m].name);
        cJSON_AddNumberToObject(item, "dim", cfg->modalities[m].dim);
        cJSON_AddItemToArray(mods, item);
    }
    for (int d = 0; d < cfg->n_directions; d++) {
        const char *pair[2] = {cfg->modalities[cfg->directions[d].src].name,
                               cfg->modalities[cfg->directions[d].tgt].name};
        cJSON_AddItemToArray(dirs, cJSON_CreateStringArray(pair, 2));
    }
    cJSON_AddNumberToObject(root, "hidden", cfg->hidden);
    cJSON_AddNumberToObject(root, "latent", cfg->latent);
    cJSON_AddNumberToObject(root, "experts", cfg->n_experts);
    cJSON_AddNumberToObject(root, "top_k", cfg->top_k);
    cJSON_AddNumberToObject(root, "dropout", (double)cfg->dropout);
    cJSON_AddNumberToObject(root, "ln_eps", (double)cfg->ln_eps);
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return text;
}

int amc_config_modality(const amc_config *cfg, const char *name)
{
    for (int m = 0; m < cfg->n_modalities; m++)
        if (strcmp(cfg->modalities[m].name, name) == 0)
            return m;
    return -1;
}

int amc_config_direction(const amc_config *cfg, int src, int tgt)
{
    for (int d = 0; d < cfg->n_directions; d++)
        if (cfg->directions[d].src == src && cfg->directions[d].tgt == tgt)
            return d;
    return -1;
}

/* ---------------------------------------------------------------- parameter layout */

/* Every tensor starts on a 64-byte boundary of the block. */
#define TENSOR_ALIGN 16

typedef struct layout {
    amc_tensor_info *tensors;  /* NULL while counting */
    int n;
    size_t floats;
} layout;

static void add_tensor(layout *l, int ndim, int64_t d0, int64_t d1, int fan_in, int decay,
                       const char *fmt, ...) __attribute__((format(printf, 7, 8)));

static void add_tensor(layout *l, int ndim, int64_t d0, int64_t d1, int fan_in, int decay,
                       const char *fmt, ...)
{
    size_t numel = (size_t)d0 * (size_t)(ndim == 2 ? d1 : 1);

    if (l->tensors != NULL) {
        amc_tensor_info *t = &l->tensors[l->n];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(t->name, sizeof t->name, fmt, ap);
        va_end(ap);
        t->ndim = ndim;
        t->shape[0] = d0;
        t->shape[1] = ndim == 2 ? d1 : 0;
        t->offset = l->floats;
        t->numel = numel;
        t->fan_in = fan_in;
        t->decay = decay;
    }
    l->n++;
    l->floats += (numel + TENSOR_ALIGN - 1) / TENSOR_ALIGN * TENSOR_ALIGN;
}

/* A Linear layer: weight [out, in] then bias [out]. */
static void add_linear(layout *l, int n_in, int n_out, const char *prefix, const char *name)
{
    add_tensor(l, 2, n_out, n_in, n_in, 1, "%s%s.weight", prefix, name);
    add_tensor(l, 1, n_out, 0, 0, 0, "%s%s.bias", prefix, name);
}

/* Walks the tensors in file order; the same walk counts (l->tensors NULL) and fills. */
static void build_layout(layout *l, const amc_config *cfg)
{
    const int H = cfg->hidden, D = cfg->latent;
    char prefix[80];

    for (int m = 0; m < cfg->n_modalities; m++) {
        snprintf(prefix, sizeof prefix, "modalities.%s.", cfg->modalities[m].name);
        add_linear(l, cfg->modalities[m].dim, H, prefix, "in_proj");
        add_linear(l, cfg->modalities[m].dim, D, prefix, "tgt_proj");
    }
    for (int d = 0; d < cfg->n_directions; d++) {
        const amc_modality *src = &cfg->modalities[cfg->directions[d].src];
        const amc_modality *tgt = &cfg->modalities[cfg->directions[d].tgt];
        snprintf(prefix, sizeof prefix, "directions.%s.%s.", src->name, tgt->name);
        add_tensor(l, 1, src->dim, 0, src->dim, 0, "%sdir_emb", prefix);
        add_linear(l, H, tgt->dim, prefix, "head_reg");
        add_linear(l, H, D, prefix, "head_cl");
    }
    add_tensor(l, 1, H, 0, H, 0, "task_emb.reg");
    add_tensor(l, 1, H, 0, H, 0, "task_emb.cl");
    add_linear(l, H, cfg->n_experts, "", "gate");
    for (int e = 0; e < cfg->n_experts; e++) {
        snprintf(prefix, sizeof prefix, "experts.%d.", e);
        add_linear(l, H, H, prefix, "fc1");
        add_linear(l, H, H, prefix, "fc2");
    }
    add_tensor(l, 1, H, 0, 0, 0, "ln_reg.weight");
    add_tensor(l, 1, H, 0, 0, 0, "ln_reg.bias");
    add_tensor(l, 1, H, 0, 0, 0, "ln_cl.weight");
    add_tensor(l, 1, H, 0, 0, 0, "ln_cl.bias");
}

void amc_params_point(const amc_connector *conn, float *block, amc_params *p)
{
    const amc_config *cfg = &conn->cfg;
    const amc_tensor_info *t = conn->tensors;
    int i = 0;

    /* The same order as build_layout(). */
#define NEXT() (block + t[i++].offset)
    memset(p, 0, sizeof *p);
    for (int m = 0; m < cfg->n_modalities; m++) {
        p->in_proj[m].w = NEXT();
        p->in_proj[m].b = NEXT();
        p->tgt_proj[m].w = NEXT();
        p->tgt_proj[m].b = NEXT();
    }
    for (int d = 0; d < cfg->n_directions; d++) {
        p->dir_emb[d] = NEXT();
        p->head_reg[d].w = NEXT();
        p->head_reg[d].b = NEXT();
        p->head_cl[d].w = NEXT();
        p->head_cl[d].b = NEXT();
    }
    p->task_reg = NEXT();
    p->task_cl = NEXT();
    p->gate.w = NEXT();
    p->gate.b = NEXT();
    for (int e = 0; e < cfg->n_experts; e++) {
        p->experts[e].fc1.w = NEXT();
        p->experts[e].fc1.b = NEXT();
        p->experts[e].fc2.w = NEXT();
        p->experts[e].fc2.b = NEXT();
    }
    p->ln_reg_w = NEXT();
    p->ln_reg_b = NEXT();
    p->ln_cl_w = NEXT();
    p->ln_cl_b = NEXT();
#undef NEXT
}

amc_status amc_connector_create(amc_connector **out, const amc_config *cfg, amc_error *err)
{
    *out = NULL;
    amc_status rc = amc_config_validate(cfg, err);
    if (rc != AMC_OK)
        return rc;

    layout count = {0};
    build_layout(&count, cfg);

    amc_connector *conn = calloc(1, sizeof *conn);
    if (conn == NULL)
        return amc_error_set(err, AMC_ENOMEM, "connector: out of memory");
    conn->cfg = *cfg;
    conn->n_tensors = count.n;
    conn->n_params = count.floats;
    conn->tensors = calloc((size_t)count.n, sizeof *conn->tensors);
    conn->block = aligned_alloc(64, (count.floats * sizeof(float) + 63) / 64 * 64);
    if (conn->tensors == NULL || conn->block == NULL) {
        amc_connector_free(conn);
        return amc_error_set(err, AMC_ENOMEM, "connector: out of memory for %zu parameters",
                             count.floats);
    }
    memset(conn->block, 0, count.floats * sizeof(float));

    layout fill = {conn->tensors, 0, 0};
    build_layout(&fill, cfg);
    amc_params_point(conn, conn->block, &conn->p);
    *out = conn;
    return AMC_OK;
}

amc_status amc_connector_set_input_mean(amc_connector *conn, int m, const float *mean,
                                        amc_error *err)
{
    if (m < 0 || m >= conn->cfg.n_modalities)
        return amc_error_set(err, AMC_EINVAL, "modality index %d is out of range [0, %d)", m,
                             conn->cfg.n_modalities);
    float *copy = NULL;
    if (mean != NULL) {
        size_t bytes = sizeof(float) * (size_t)conn->cfg.modalities[m].dim;
        copy = malloc(bytes);
        if (copy == NULL)
            return amc_error_set(err, AMC_ENOMEM, "input mean of modality %s: out of memory",
                                 conn->cfg.modalities[m].name);
        memcpy(copy, mean, bytes);
    }
    free(conn->input_mean[m]);
    conn->input_mean[m] = copy;
    return AMC_OK;
}

void amc_connector_free(amc_connector *conn)
{
    if (conn == NULL)
        return;
    for (int m = 0; m < AMC_MAX_MODALITIES; m++)
        free(conn->input_mean[m]);
    free(conn->tensors);
    free(conn->block);
    free(conn);
}

size_t amc_connector_param_count(const amc_connector *conn)
{
    size_t total = 0;
    for (int i = 0; i < conn->n_tensors; i++)
        total += conn->tensors[i].numel;
    return total;
}

const amc_tensor_info *amc_connector_tensor(const amc_connector *conn, const char *name)
{
    for (int i = 0; i < conn->n_tensors; i++)
        if (strcmp(conn->tensors[i].name, name) == 0)
            return &conn->tensors[i];
    return NULL;
}

void amc_connector_init(amc_connector *conn, uint64_t seed)
{
    amc_rng rng;
    amc_rng_seed(&rng, seed);

    for (int i = 0; i < conn->n_tensors; i++) {
        const amc_tensor_info *t = &conn->tensors[i];
        float *dst = conn->block + t->offset;
        int is_bias = t->ndim == 1 && strstr(t->name, ".bias") != NULL;
        int is_norm = strncmp(t->name, "ln_", 3) == 0;

        if (is_norm) {
            float value = strstr(t->name, ".weight") != NULL ? 1.0f : 0.0f;
            for (size_t j = 0; j < t->numel; j++)
                dst[j] = value;
        } else if (is_bias) {
            memset(dst, 0, t->numel * sizeof(float));
        } else {
            /* Kaiming-uniform with ReLU gain: bound = sqrt(2) * sqrt(3 / fan_in). */
            float bound = sqrtf(6.0f / (float)t->fan_in);
            for (size_t j = 0; j < t->numel; j++)
                dst[j] = (2.0f * amc_rng_uniform(&rng) - 1.0f) * bound;
        }
    }
}

void amc_connector_fingerprint(const amc_connector *conn, char out[17])
{
    uint64_t h = 0xcbf29ce484222325ULL;
    char *json = amc_config_to_json(&conn->cfg);
    const unsigned char *bytes = (const unsigned char *)(json ? json : "");

    for (size_t i = 0; bytes[i] != 0; i++)
        h = (h ^ bytes[i]) * 0x100000001b3ULL;
    free(json);
    for (int t = 0; t < conn->n_tensors; t++) {
        const amc_tensor_info *info = &conn->tensors[t];
        const unsigned char *p = (const unsigned char *)(conn->block + info->offset);
        for (size_t i = 0; i < info->numel * sizeof(float); i++)
            h = (h ^ p[i]) * 0x100000001b3ULL;
    }
    snprintf(out, 17, "%016llx", (unsigned long long)h);
}
