/* Aligned training pairs and feature preprocessing (see core/dataset.h). */
#include "core/dataset.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"

void amc_pairs_free(amc_pairs *p)
{
    for (int m = 0; m < AMC_MAX_MODALITIES; m++)
        free(p->data[m]);
    memset(p, 0, sizeof *p);
}

/* Returns the first row of x [rows, row_len] that contains a NaN or Inf, or -1. */
static int64_t first_bad_row(const float *x, int64_t rows, int64_t row_len)
{
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < row_len; j++)
            if (!isfinite(x[r * row_len + j]))
                return r;
    return -1;
}

amc_status amc_pairs_from_npy(amc_pairs *out, const amc_config *cfg, const char *const *names,
                              const amc_npy *arrays, int count, amc_error *err)
{
    memset(out, 0, sizeof *out);
    out->n_modalities = cfg->n_modalities;

    for (int m = 0; m < cfg->n_modalities; m++) {
        const amc_modality *mod = &cfg->modalities[m];
        int found = -1;
        for (int i = 0; i < count; i++)
            if (strcmp(names[i], mod->name) == 0)
                found = found < 0 ? i : -2;
        if (found < 0) {
            amc_pairs_free(out);
            return amc_error_set(err, AMC_EINVAL,
                                 found == -1 ? "no data for modality '%s'; pass --data %s=FILE.npy"
                                             : "modality '%s' has more than one data file (%s)",
                                 mod->name, mod->name);
        }
        const amc_npy *a = &arrays[found];
        int64_t d = a->shape[a->ndim - 1];
        int64_t seq = a->ndim == 3 ? a->shape[1] : 1;
        if (d != mod->dim) {
            amc_pairs_free(out);
            return amc_error_set(err, AMC_EINVAL,
                                 "data for '%s' has vectors of %lld floats; the model expects %d",
                                 mod->name, (long long)d, mod->dim);
        }
        if (m > 0 && a->shape[0] != out->rows) {
            int rows = out->rows; /* read before amc_pairs_free() empties out */
            amc_pairs_free(out);
            return amc_error_set(err, AMC_EINVAL,
                                 "data for '%s' has %lld rows but '%s' has %d; rows must be "
                                 "aligned pairs", mod->name, (long long)a->shape[0],
                                 cfg->modalities[0].name, rows);
        }
        if (a->shape[0] < 1 || a->shape[0] > INT32_MAX / 2) {
            amc_pairs_free(out);
            return amc_error_set(err, AMC_EINVAL, "data for '%s' has %lld rows", mod->name,
                                 (long long)a->shape[0]);
        }
        int64_t row_len = seq * d;
        int64_t bad = first_bad_row(a->data, a->shape[0], row_len);
        if (bad >= 0) {
            amc_pairs_free(out);
            return amc_error_set(err, AMC_EINVAL,
                                 "data for '%s': row %lld contains NaN or Inf; remove or fix "
                                 "that row",
                                 mod->name, (long long)bad);
        }
        out->rows = (int)a->shape[0];
        out->seq[m] = (int)seq;
        out->dim[m] = (int)d;
        out->data[m] = malloc(sizeof(float) * (size_t)(a->shape[0] * row_len));
        if (out->data[m] == NULL) {
            amc_pairs_free(out);
            return amc_error_set(err, AMC_ENOMEM, "out of memory for the '%s' data", mod->name);
        }
        memcpy(out->data[m], a->data, sizeof(float) * (size_t)(a->shape[0] * row_len));
    }
    return AMC_OK;
}

/* Copies the rows flagged (or not flagged) in is_val into dst. */
static amc_status copy_rows(const amc_pairs *all, const unsigned char *is_val, int want,
                            amc_pairs *dst)
{
    memset(dst, 0, sizeof *dst);
    dst->n_modalities = all->n_modalities;
    for (int r = 0; r < all->rows; r++)
        dst->rows += is_val[r] == want;
    for (int m = 0; m < all->n_modalities; m++) {
        size_t row_len = (size_t)all->seq[m] * all->dim[m];
        dst->seq[m] = all->seq[m];
        dst->dim[m] = all->dim[m];
        dst->data[m] = malloc(sizeof(float) * row_len * (size_t)(dst->rows > 0 ? dst->rows : 1));
        if (dst->data[m] == NULL)
            return AMC_ENOMEM;
        size_t at = 0;
        for (int r = 0; r < all->rows; r++)
            if (is_val[r] == want)
                memcpy(dst->data[m] + row_len * at++, all->data[m] + row_len * (size_t)r,
                       sizeof(float) * row_len);
    }
    return AMC_OK;
}

amc_status amc_pairs_split(const amc_pairs *all, double val_fraction, uint64_t seed,
                           amc_pairs *train, amc_pairs *val, amc_error *err)
{
    if (!(val_fraction >= 0.0 && val_fraction < 1.0))
        return amc_error_set(err, AMC_EINVAL, "--val-fraction %g must be in [0, 1)",
                             val_fraction);
    int n_val = (int)lround(all->rows * val_fraction);
    if (val_fraction > 0.0 && n_val < 1)
        n_val = 1;
    if (all->rows - n_val < 2)
        return amc_error_set(err, AMC_EINVAL,
                             "%d rows leave %d for training after the validation split; need 2",
                             all->rows, all->rows - n_val);

    int *perm = malloc(sizeof(int) * (size_t)all->rows);
    unsigned char *is_val = calloc((size_t)all->rows, 1);
    amc_status rc = AMC_ENOMEM;
    if (perm != NULL && is_val != NULL) {
        amc_rng rng;
        amc_rng_seed(&rng, seed ^ 0x5851f42d4c957f2dULL);
        for (int i = 0; i < all->rows; i++)
            perm[i] = i;
        for (int i = all->rows - 1; i > 0; i--) {
            int j = (int)amc_rng_below(&rng, (uint64_t)i + 1);
            int t = perm[i];
            perm[i] = perm[j];
            perm[j] = t;
        }
        for (int i = 0; i < n_val; i++)
            is_val[perm[i]] = 1;
        rc = copy_rows(all, is_val, 0, train);
        if (rc == AMC_OK)
            rc = copy_rows(all, is_val, 1, val);
    }
    free(perm);
    free(is_val);
    if (rc != AMC_OK) {
        amc_pairs_free(train);
        amc_pairs_free(val);
        return amc_error_set(err, rc, "out of memory splitting %d rows", all->rows);
    }
    return AMC_OK;
}

/* ---------------------------------------------------------------- preprocessing */

void amc_preprocess_free(amc_preprocess *pre)
{
    for (int m = 0; m < AMC_MAX_MODALITIES; m++)
        free(pre->mean[m]);
    memset(pre, 0, sizeof *pre);
}

amc_status amc_preprocess_fit(amc_preprocess *pre, const amc_pairs *p, amc_error *err)
{
    memset(pre, 0, sizeof *pre);
    pre->enabled = 1;
    pre->n_modalities = p->n_modalities;
    for (int m = 0; m < p->n_modalities; m++) {
        int d = p->dim[m];
        int64_t tokens = (int64_t)p->rows * p->seq[m];
        double *sum = calloc((size_t)d, sizeof(double));
        pre->dim[m] = d;
        pre->mean[m] = malloc(sizeof(float) * (size_t)d);
        if (sum == NULL || pre->mean[m] == NULL) {
            free(sum);
            amc_preprocess_free(pre);
            return amc_error_set(err, AMC_ENOMEM, "out of memory for feature statistics");
        }
        for (int64_t t = 0; t < tokens; t++)
            for (int j = 0; j < d; j++)
                sum[j] += (double)p->data[m][t * d + j];
        for (int j = 0; j < d; j++)
            pre->mean[m][j] = (float)(sum[j] / (double)(tokens > 0 ? tokens : 1));
        free(sum);
    }
    return AMC_OK;
}

void amc_preprocess_rows(const amc_preprocess *pre, int m, float *x, int64_t n)
{
    if (!pre->enabled)
        return;
    const int d = pre->dim[m];
    for (int64_t t = 0; t < n; t++) {
        float *row = x + t * d;
        double ss = 0.0;
        for (int j = 0; j < d; j++) {
            row[j] -= pre->mean[m][j];
            ss += (double)row[j] * (double)row[j];
        }
        float norm = (float)sqrt(ss);
        float inv = 1.0f / (norm > 1e-12f ? norm : 1e-12f);
        for (int j = 0; j < d; j++)
            row[j] *= inv;
    }
}

void amc_preprocess_apply(const amc_preprocess *pre, amc_pairs *p)
{
    for (int m = 0; m < p->n_modalities; m++)
        amc_preprocess_rows(pre, m, p->data[m], (int64_t)p->rows * p->seq[m]);
}

char *amc_preprocess_to_json(const amc_preprocess *pre, const amc_config *cfg)
{
    cJSON *root = cJSON_CreateObject();
    if (root == NULL)
        return NULL;
    cJSON_AddStringToObject(root, "method", pre->enabled ? "center_l2" : "none");
    if (pre->enabled) {
        cJSON *mods = cJSON_AddObjectToObject(root, "modalities");
        for (int m = 0; mods != NULL && m < cfg->n_modalities; m++) {
            cJSON *arr = cJSON_AddArrayToObject(mods, cfg->modalities[m].name);
            for (int j = 0; arr != NULL && j < pre->dim[m]; j++)
                cJSON_AddItemToArray(arr, cJSON_CreateNumber((double)pre->mean[m][j]));
        }
    }
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return text;
}

amc_status amc_preprocess_from_json(amc_preprocess *pre, const amc_config *cfg,
                                    const char *json, amc_error *err)
{
    memset(pre, 0, sizeof *pre);
    cJSON *root = cJSON_Parse(json);
    const cJSON *method = cJSON_GetObjectItemCaseSensitive(root, "method");
    amc_status rc = AMC_OK;
    if (!cJSON_IsString(method)) {
        rc = amc_error_set(err, AMC_EFORMAT, "preprocess: missing \"method\"");
    } else if (strcmp(method->valuestring, "center_l2") == 0) {
        const cJSON *mods = cJSON_GetObjectItemCaseSensitive(root, "modalities");
        pre->enabled = 1;
        pre->n_modalities = cfg->n_modalities;
        for (int m = 0; rc == AMC_OK && m < cfg->n_modalities; m++) {
            const cJSON *arr = cJSON_GetObjectItemCaseSensitive(mods, cfg->modalities[m].name);
            int d = cfg->modalities[m].dim;
            if (!cJSON_IsArray(arr) || cJSON_GetArraySize(arr) != d) {
                rc = amc_error_set(err, AMC_EFORMAT,
                                   "preprocess: modality '%s' needs a mean of %d numbers",
                                   cfg->modalities[m].name, d);
                break;
            }
            pre->dim[m] = d;
            pre->mean[m] = malloc(sizeof(float) * (size_t)d);
            if (pre->mean[m] == NULL) {
                rc = amc_error_set(err, AMC_ENOMEM, "preprocess: out of memory");
                break;
            }
            int j = 0;
            const cJSON *v;
            cJSON_ArrayForEach(v, arr) pre->mean[m][j++] = (float)v->valuedouble;
        }
    } else if (strcmp(method->valuestring, "none") != 0) {
        rc = amc_error_set(err, AMC_EFORMAT, "preprocess: unknown method \"%s\"",
                           method->valuestring);
    }
    cJSON_Delete(root);
    if (rc != AMC_OK)
        amc_preprocess_free(pre);
    return rc;
}

amc_status amc_preprocess_from_training(amc_preprocess *pre, const amc_config *cfg,
                                        const char *training_json, amc_error *err)
{
    memset(pre, 0, sizeof *pre);
    if (training_json == NULL)
        return AMC_OK;
    cJSON *root = cJSON_Parse(training_json);
    const cJSON *obj = cJSON_GetObjectItemCaseSensitive(root, "preprocess");
    amc_status rc = AMC_OK;
    if (obj != NULL) {
        char *text = cJSON_PrintUnformatted(obj);
        rc = text ? amc_preprocess_from_json(pre, cfg, text, err)
                  : amc_error_set(err, AMC_ENOMEM, "preprocess: out of memory");
        free(text);
    }
    cJSON_Delete(root);
    return rc;
}
