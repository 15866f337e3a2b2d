/* Aligned training pairs: one array per modality of a connector, row i of every array describing
 * the same item, and the optional per-modality feature preprocessing of training.
 *
 * Preprocessing (optional, decided at training time and stored in the model's training
 * metadata so that evaluation and serving apply it identically): subtract the training mean of
 * the modality from every token, then scale every token to unit L2 norm. */
#ifndef ALTMOE_CORE_DATASET_H
#define ALTMOE_CORE_DATASET_H

#include <stdint.h>

#include "core/connector.h"
#include "core/npy.h"

typedef struct amc_pairs {
    int n_modalities;                    /* = the connector's; arrays indexed by modality */
    int rows;
    int seq[AMC_MAX_MODALITIES];         /* tokens per row (1 for pooled vectors) */
    int dim[AMC_MAX_MODALITIES];
    float *data[AMC_MAX_MODALITIES];     /* [rows, seq, dim], owned */
} amc_pairs;

/* Builds pairs for cfg from count arrays named names[i] (modality names). Every modality of cfg
 * needs exactly one array with the modality's dim as last axis; all arrays need the same number
 * of rows. A row that contains NaN or Inf is rejected with its row number. The data is copied. */
amc_status amc_pairs_from_npy(amc_pairs *out, const amc_config *cfg, const char *const *names,
                              const amc_npy *arrays, int count, amc_error *err);

/* Splits all into train and val: a seeded random permutation puts round(rows * val_fraction)
 * rows into val (at least 1 when val_fraction > 0) and the rest into train, each in its original
 * order. val_fraction in [0, 1); with 0, val is left empty (rows 0). */
amc_status amc_pairs_split(const amc_pairs *all, double val_fraction, uint64_t seed,
                           amc_pairs *train, amc_pairs *val, amc_error *err);

/* Frees the arrays and empties p; safe on an empty amc_pairs. */
void amc_pairs_free(amc_pairs *p);

typedef struct amc_preprocess {
    int enabled;                         /* 0: features are used as they are */
    int n_modalities;
    int dim[AMC_MAX_MODALITIES];
    float *mean[AMC_MAX_MODALITIES];     /* [dim], owned */
} amc_preprocess;

/* Computes the per-modality token mean of p into pre (enabled). */
amc_status amc_preprocess_fit(amc_preprocess *pre, const amc_pairs *p, amc_error *err);

/* Applies pre to every token of p in place (nothing when pre is disabled). */
void amc_preprocess_apply(const amc_preprocess *pre, amc_pairs *p);

/* Applies pre's modality m to n tokens x [n, dim] in place. */
void amc_preprocess_rows(const amc_preprocess *pre, int m, float *x, int64_t n);

/* JSON object {"method": "center_l2", "modalities": {"text": [mean...], ...}} or
 * {"method": "none"}; malloc'd string, NULL when out of memory. */
char *amc_preprocess_to_json(const amc_preprocess *pre, const amc_config *cfg);

/* Parses the object written by amc_preprocess_to_json() for cfg. */
amc_status amc_preprocess_from_json(amc_preprocess *pre, const amc_config *cfg,
                                    const char *json, amc_error *err);

/* Reads the preprocessing stored in a model's training summary (the "preprocess" member of the
 * JSON that amc_model_load() returns). training_json NULL or without that member gives a
 * disabled pre. */
amc_status amc_preprocess_from_training(amc_preprocess *pre, const amc_config *cfg,
                                        const char *training_json, amc_error *err);

void amc_preprocess_free(amc_preprocess *pre);

#endif
