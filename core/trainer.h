/* The training loop of `altmoe train`: alternating (or joint, or single-direction) optimisation
 * of a connector on aligned pairs, with AdamW, warmup + cosine learning rate, cosine weight
 * decay, gradient clipping, per-epoch validation recall, early stopping and exact resume.
 *
 * Files: the best model (by validation mean recall) at paths.best; after every epoch and when
 * stopping at max_steps, the current model at paths.last and the training state (AdamW moments,
 * per-tensor step counts, step, epoch, data permutation and cursor, both RNG states, early
 * stopping counters) at paths.state. Every file is written to a temporary name, fsynced and
 * renamed. Resuming from paths.last + paths.state continues bit-identically (single-threaded
 * BLAS) to a run that never stopped. */
#ifndef ALTMOE_CORE_TRAINER_H
#define ALTMOE_CORE_TRAINER_H

#include <stdint.h>
#include <stdio.h>

#include "core/connector.h"
#include "core/dataset.h"
#include "core/objective.h"
#include "core/recall.h"

typedef enum amc_schedule_kind {
    AMC_TRAIN_ALTERNATING = 0,   /* round robin: one direction per step, a fresh batch each */
    AMC_TRAIN_JOINT,             /* every direction's loss summed on the same batch each step */
    AMC_TRAIN_SINGLE             /* one direction only */
} amc_schedule_kind;

typedef struct amc_train_opts {
    amc_schedule_kind schedule;
    int single_dir;              /* direction index for AMC_TRAIN_SINGLE */
    int epochs;                  /* maximum epochs; the schedules span this many */
    int batch;                   /* pairs per step (>= 2) */
    int64_t max_steps;           /* stop (saving state) after this many steps in total; 0 none */
    float lr_start, lr, lr_final;/* warmup start, peak, cosine end */
    float warmup_epochs;         /* warmup length in epochs (fractions allowed) */
    float wd_start, wd_end;      /* cosine weight-decay schedule */
    float clip;                  /* global gradient-norm clip; <= 0 off */
    int dropout;                 /* 1: expert dropout at the config's rate during training */
    amc_objective obj;
    uint64_t seed;               /* shuffling and dropout */
    int patience;                /* epochs without improvement before stopping; 0 never */
    int log_every;               /* steps between progress lines; 0 none */
    int eval_predictive;         /* also report recall in the predictive space */
} amc_train_opts;

/* Returns the defaults: alternating, 40 epochs, batch 128, lr 1e-4 -> 1e-3 over 0.5 epoch, then
 * cosine to 1e-5, weight decay 0.005 -> 0.2, clip 1, dropout on, alpha 0.5, SmoothL1, tau 0.03,
 * patience 10, a progress line every 50 steps, recall in both spaces. */
amc_train_opts amc_train_opts_default(void);

/* "alternating", "joint", "single" */
const char *amc_schedule_name(amc_schedule_kind kind);

typedef struct amc_train_paths {
    const char *best;            /* best model (.safetensors) */
    const char *last;            /* latest model */
    const char *state;           /* training state */
    const char *loss_log;        /* optional: one line per step "step dir total reg cl"; NULL */
} amc_train_paths;

/* Recall of every direction of a model, in the contrastive and predictive spaces. */
typedef struct amc_recall_table {
    int n_directions;
    amc_recall cl[AMC_MAX_DIRECTIONS];
    amc_recall pred[AMC_MAX_DIRECTIONS];
    int has_pred;
    double mean;                 /* mean over directions of (R@1 + R@5 + R@10) / 3, contrastive */
} amc_recall_table;

/* Evaluates every direction of conn on the aligned pairs p (already preprocessed). */
amc_status amc_recall_table_eval(const amc_connector *conn, const amc_pairs *p, int predictive,
                                 amc_recall_table *out, amc_error *err);

/* Prints the table (percentages) or, with json non-zero, one JSON object. */
void amc_recall_table_print(FILE *out, const amc_connector *conn, const amc_recall_table *t,
                            int json);

typedef struct amc_train_result {
    int epochs_run;
    int64_t steps;
    int best_epoch;              /* 1-based; 0 when no validation set */
    int stopped_early;
    int reached_max_steps;       /* stopped at opts.max_steps (resumable) */
    amc_recall_table best;       /* validation recall of the best model */
} amc_train_result;

/* Trains conn in place on train (validated on val, which may have 0 rows) and writes the files
 * of paths. preprocess_json is stored in the models' training metadata (NULL for none). With
 * resume non-zero, conn must hold the weights of paths.last and the state is read from
 * paths.state (it must match conn and the data). Progress goes to log (may be NULL). */
amc_status amc_train(amc_connector *conn, const amc_pairs *train, const amc_pairs *val,
                     const amc_train_opts *opts, const amc_train_paths *paths,
                     const char *preprocess_json, int resume, FILE *log,
                     amc_train_result *result, amc_error *err);

#endif
