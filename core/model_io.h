/* Connector model files: a .safetensors file whose "__metadata__" carries the connector config
 * and whose tensors are the parameters under the names of amc_connector.tensors. The layout is
 * documented in docs/model-format.md. */
#ifndef ALTMOE_CORE_MODEL_IO_H
#define ALTMOE_CORE_MODEL_IO_H

#include "core/connector.h"
#include "core/error.h"

/* Metadata keys of a model file. */
#define AMC_META_FORMAT "format"                 /* always "altmoe-connector" */
#define AMC_META_VERSION "format_version"        /* AMC_FORMAT_VERSION as decimal text */
#define AMC_META_CONFIG "config"                 /* amc_config_to_json() */
#define AMC_META_TRAINING "training"             /* JSON training summary; optional */

/* Writes conn to path as float32 (temporary file, fsync, rename). training_json is a JSON text
 * stored under "training", or NULL for none. */
amc_status amc_model_save(const char *path, const amc_connector *conn, const char *training_json,
                          amc_error *err);

/* Loads path into a new connector (*out, freed by the caller with amc_connector_free()). Every
 * tensor of the config must be present with dtype F32, F16 or BF16 and the expected shape. The
 * file may hold no other tensor. Errors name the tensor and the expected shape. When
 * training_json is not NULL it receives a malloc'd copy of the "training" metadata, or NULL. */
amc_status amc_model_load(const char *path, amc_connector **out, char **training_json,
                          amc_error *err);

/* Loads path like amc_model_load() and attaches the feature preprocessing stored in its
 * training summary (amc_connector_set_input_mean()), so that amc_connector_project() takes raw
 * encoder embeddings. For serving, `altmoe project` and `altmoe eval`. The trainer loads with
 * amc_model_load() instead, because it preprocesses its data itself. */
amc_status amc_model_load_for_inference(const char *path, amc_connector **out, char **training_json,
                                        amc_error *err);

#endif
