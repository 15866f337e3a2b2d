/* Reading and writing connector model files. */
#include "core/model_io.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dataset.h"
#include "core/safetensors.h"

#define MODEL_FORMAT_NAME "altmoe-connector"

amc_status amc_model_save(const char *path, const amc_connector *conn, const char *training_json,
                          amc_error *err)
{
    amc_st_entry *entries = calloc((size_t)conn->n_tensors, sizeof *entries);
    char *config = amc_config_to_json(&conn->cfg);
    if (entries == NULL || config == NULL) {
        free(entries);
        free(config);
        return amc_error_set(err, AMC_ENOMEM, "%s: out of memory", path);
    }

    for (int i = 0; i < conn->n_tensors; i++) {
        const amc_tensor_info *t = &conn->tensors[i];
        entries[i].name = t->name;
        entries[i].data = conn->block + t->offset;
        entries[i].ndim = t->ndim;
        entries[i].shape[0] = t->shape[0];
        entries[i].shape[1] = t->shape[1];
    }
    char version[16];
    snprintf(version, sizeof version, "%d", AMC_FORMAT_VERSION);
    const char *keys[] = {AMC_META_FORMAT, AMC_META_VERSION, AMC_META_CONFIG, AMC_META_TRAINING};
    const char *values[] = {MODEL_FORMAT_NAME, version, config, training_json};
    int n_meta = training_json != NULL ? 4 : 3;

    amc_status rc = amc_st_save(path, entries, conn->n_tensors, keys, values, n_meta, err);
    free(entries);
    free(config);
    return rc;
}

static amc_status check_header(const amc_st_file *file, const char *path, amc_config *cfg,
                               amc_error *err)
{
    const char *format = amc_st_meta_get(file, AMC_META_FORMAT);
    const char *version = amc_st_meta_get(file, AMC_META_VERSION);
    const char *config = amc_st_meta_get(file, AMC_META_CONFIG);

    if (format == NULL || strcmp(format, MODEL_FORMAT_NAME) != 0)
        return amc_error_set(err, AMC_EFORMAT,
                             "%s: not an altmoe connector (__metadata__.format is %s%s%s, "
                             "expected \"%s\")", path, format ? "\"" : "",
                             format ? format : "missing", format ? "\"" : "", MODEL_FORMAT_NAME);
    if (version == NULL || atoi(version) != AMC_FORMAT_VERSION)
        return amc_error_set(err, AMC_EFORMAT,
                             "%s: format_version %s is not supported; this build reads "
                             "version %d", path, version ? version : "(missing)",
                             AMC_FORMAT_VERSION);
    if (config == NULL)
        return amc_error_set(err, AMC_EFORMAT, "%s: __metadata__.config is missing", path);
    if (amc_config_from_json(cfg, config, err) != AMC_OK)
        return amc_error_prefix(err, "%s: __metadata__.config", path);
    return AMC_OK;
}

static void format_shape(char *buf, size_t len, int ndim, const int64_t *shape)
{
    if (ndim == 1)
        snprintf(buf, len, "[%lld]", (long long)shape[0]);
    else
        snprintf(buf, len, "[%lld, %lld]", (long long)shape[0], (long long)shape[1]);
}

static amc_status load_tensors(const amc_st_file *file, const char *path, amc_connector *conn,
                               amc_error *err)
{
    for (int i = 0; i < conn->n_tensors; i++) {
        const amc_tensor_info *want = &conn->tensors[i];
        const amc_st_tensor *got = amc_st_find(file, want->name);
        char shape[64];

        format_shape(shape, sizeof shape, want->ndim, want->shape);
        if (got == NULL)
            return amc_error_set(err, AMC_EFORMAT, "%s: tensor %s %s is missing", path,
                                 want->name, shape);
        int same = got->ndim == want->ndim;
        for (int d = 0; same && d < want->ndim; d++)
            same = got->shape[d] == want->shape[d];
        if (!same)
            return amc_error_set(err, AMC_EFORMAT,
                                 "%s: tensor %s has the wrong shape; expected %s for this config",
                                 path, want->name, shape);
        if (amc_st_read_f32(file, got, conn->block + want->offset, want->numel, err) != AMC_OK)
            return amc_error_prefix(err, "%s", path);
        const float *values = conn->block + want->offset;
        for (size_t j = 0; j < want->numel; j++)
            if (!isfinite(values[j]))
                return amc_error_set(err, AMC_EFORMAT,
                                     "%s: tensor %s has a non-finite value (%g) at element %zu; "
                                     "the model is corrupt or its training diverged", path,
                                     want->name, (double)values[j], j);
    }
    for (int i = 0; i < file->n_tensors; i++)
        if (amc_connector_tensor(conn, file->tensors[i].name) == NULL)
            return amc_error_set(err, AMC_EFORMAT,
                                 "%s: tensor %s is not part of the connector its config describes",
                                 path, file->tensors[i].name);
    return AMC_OK;
}

amc_status amc_model_load(const char *path, amc_connector **out, char **training_json,
                          amc_error *err)
{
    amc_st_file file;
    amc_config cfg;
    amc_connector *conn = NULL;

    *out = NULL;
    if (training_json != NULL)
        *training_json = NULL;
    amc_status rc = amc_st_open(&file, path, err);
    if (rc != AMC_OK)
        return rc;

    rc = check_header(&file, path, &cfg, err);
    if (rc == AMC_OK)
        rc = amc_connector_create(&conn, &cfg, err);
    if (rc == AMC_OK)
        rc = load_tensors(&file, path, conn, err);
    if (rc == AMC_OK && training_json != NULL) {
        const char *training = amc_st_meta_get(&file, AMC_META_TRAINING);
        if (training != NULL && (*training_json = strdup(training)) == NULL)
            rc = amc_error_set(err, AMC_ENOMEM, "%s: out of memory", path);
    }
    amc_st_close(&file);
    if (rc != AMC_OK) {
        amc_connector_free(conn);
        return rc;
    }
    *out = conn;
    return AMC_OK;
}

amc_status amc_model_load_for_inference(const char *path, amc_connector **out, char **training_json,
                                        amc_error *err)
{
    char *training = NULL;
    amc_connector *conn = NULL;
    amc_preprocess pre = {0};

    amc_status rc = amc_model_load(path, &conn, &training, err);
    if (rc == AMC_OK) {
        rc = amc_preprocess_from_training(&pre, &conn->cfg, training, err);
        if (rc != AMC_OK)
            amc_error_prefix(err, "%s: __metadata__.training.preprocess", path);
    }
    for (int m = 0; rc == AMC_OK && pre.enabled && m < conn->cfg.n_modalities; m++)
        rc = amc_connector_set_input_mean(conn, m, pre.mean[m], err);
    amc_preprocess_free(&pre);
    if (rc != AMC_OK) {
        free(training);
        amc_connector_free(conn);
        *out = NULL;
        return rc;
    }
    if (training_json != NULL)
        *training_json = training;
    else
        free(training);
    *out = conn;
    return AMC_OK;
}
