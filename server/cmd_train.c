/* Training subcommands: `altmoe train` and `altmoe eval`. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/connector.h"
#include "core/dataset.h"
#include "core/model_io.h"
#include "core/npy.h"
#include "core/trainer.h"
#include "server/commands.h"

#define MAX_DATA AMC_MAX_MODALITIES

/* name=FILE arguments of --data / --val-data. */
typedef struct data_args {
    int count;
    const char *names[MAX_DATA];
    const char *paths[MAX_DATA];
    char *owned[MAX_DATA];
} data_args;

static int data_add(data_args *d, const char *arg, const char *cmd)
{
    const char *eq = strchr(arg, '=');
    if (eq == NULL || eq == arg || eq[1] == '\0' || d->count == MAX_DATA) {
        fprintf(stderr, "altmoe %s: --data '%s' must read MODALITY=FILE.npy (at most %d)\n",
                cmd, arg, MAX_DATA);
        return 0;
    }
    char *name = strndup(arg, (size_t)(eq - arg));
    if (name == NULL)
        return 0;
    d->owned[d->count] = name;
    d->names[d->count] = name;
    d->paths[d->count] = eq + 1;
    d->count++;
    return 1;
}

static void data_free(data_args *d)
{
    for (int i = 0; i < d->count; i++)
        free(d->owned[i]);
}

/* Loads the files of d as aligned pairs for cfg. */
static amc_status load_pairs(const data_args *d, const amc_config *cfg, amc_pairs *out,
                             amc_error *err)
{
    amc_npy arrays[MAX_DATA];
    memset(arrays, 0, sizeof arrays);
    amc_status rc = AMC_OK;
    for (int i = 0; i < d->count && rc == AMC_OK; i++)
        rc = amc_npy_load(&arrays[i], d->paths[i], err);
    if (rc == AMC_OK)
        rc = amc_pairs_from_npy(out, cfg, d->names, arrays, d->count, err);
    for (int i = 0; i < d->count; i++)
        amc_npy_free(&arrays[i]);
    return rc;
}

static char *read_text_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    char *buf = NULL;
    size_t len = 0, cap = 0, got;
    do {
        if (len + 4097 > cap) {
            cap = cap ? cap * 2 : 8192;
            char *grown = realloc(buf, cap);
            if (grown == NULL) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = grown;
        }
        got = fread(buf + len, 1, 4096, f);
        len += got;
    } while (got == 4096);
    fclose(f);
    buf[len] = '\0';
    return buf;
}

/* ---------------------------------------------------------------- train */

static void train_usage(FILE *out)
{
    fprintf(out,
            "usage: altmoe train (--config CONNECTOR.json | --init MODEL.safetensors)\n"
            "                    --data MODALITY=FILE.npy ... --out MODEL.safetensors [options]\n\n"
            "Trains a connector on aligned pairs (row i of every file is the same item).\n"
            "Writes the best model (validation mean recall) to --out, and after each epoch\n"
            "OUT.last.safetensors and OUT.state (optimiser, step, data order, RNG) for\n"
            "--resume.\n\n"
            "model and data:\n"
            "  --config FILE         new connector from a config JSON, initialised with --seed\n"
            "  --init FILE           start from an existing model's weights\n"
            "  --data M=FILE.npy     training data of modality M (repeat per modality)\n"
            "  --val-data M=FILE     explicit validation files (default: a seeded split)\n"
            "  --val-fraction F      share of --data held out for validation (default 0.1)\n"
            "  --preprocess P        none (default) or center_l2: subtract the training mean,\n"
            "                        then L2-normalise each vector; the means are stored in the\n"
            "                        model and applied by serve, eval and project\n"
            "schedule:\n"
            "  --schedule S          alternating (default: one direction per step, round\n"
            "                        robin), joint (all directions every step) or single\n"
            "  --direction SRC->TGT  the direction of --schedule single\n"
            "  --epochs N            maximum epochs (default 40)\n"
            "  --batch N             pairs per step (default 128)\n"
            "  --max-steps N         stop after N steps in total, resumable (default none)\n"
            "  --patience N          stop after N epochs without a better mean recall\n"
            "                        (default 10; 0 never)\n"
            "  --resume              continue from OUT.last.safetensors and OUT.state\n"
            "optimiser:\n"
            "  --lr X                peak learning rate (default 1e-3)\n"
            "  --lr-start X          learning rate at step 0, warming linearly (default 1e-4)\n"
            "  --lr-final X          end of the cosine decay (default 1e-5)\n"
            "  --warmup-epochs X     warmup length (default 0.5)\n"
            "  --wd-start X, --wd-end X  cosine weight decay (default 0.005 -> 0.2)\n"
            "  --clip X              global gradient-norm clip (default 1; 0 off)\n"
            "  --no-dropout          train without expert dropout\n"
            "objective:\n"
            "  --alpha X             weight of the regression loss (default 0.5)\n"
            "  --reg-loss L          smooth_l1 (default) or l2\n"
            "  --beta X              SmoothL1 transition (default 1)\n"
            "  --tau X               InfoNCE temperature (default 0.03)\n"
            "other:\n"
            "  --seed N              initialisation, split, shuffling and dropout (default 0)\n"
            "  --log-every N         steps between progress lines (default 50; 0 none)\n"
            "  --loss-log FILE       write 'step direction total reg cl' for every step\n"
            "  --no-predictive       report recall in the contrastive space only\n");
}

typedef struct train_args {
    const char *config, *init, *out, *direction, *loss_log;
    data_args data, val_data;
    double val_fraction;
    int preprocess, resume;
    amc_train_opts opts;
} train_args;

enum {
    OPT_CONFIG = 256, OPT_INIT, OPT_DATA, OPT_VAL_DATA, OPT_VAL_FRACTION, OPT_PREPROCESS,
    OPT_SCHEDULE, OPT_DIRECTION, OPT_EPOCHS, OPT_BATCH, OPT_MAX_STEPS, OPT_PATIENCE,
    OPT_RESUME, OPT_LR, OPT_LR_START, OPT_LR_FINAL, OPT_WARMUP, OPT_WD_START, OPT_WD_END,
    OPT_CLIP, OPT_NO_DROPOUT, OPT_ALPHA, OPT_REG_LOSS, OPT_BETA, OPT_TAU, OPT_SEED,
    OPT_LOG_EVERY, OPT_LOSS_LOG, OPT_NO_PRED, OPT_OUT, OPT_HELP
};

static int parse_float(const char *s, float *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (*s == '\0' || *end != '\0' || errno != 0)
        return 0;
    *out = (float)v;
    return 1;
}

static int parse_long(const char *s, long long lo, long long hi, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (*s == '\0' || *end != '\0' || errno != 0 || v < lo || v > hi)
        return 0;
    *out = v;
    return 1;
}

/* Handles option --name; returns 0 on an invalid value, after printing which. */
static int train_option(train_args *a, int opt, const char *name, const char *arg)
{
    amc_train_opts *o = &a->opts;
    long long v = 0;
    float f = 0;
    int ok = 1;

    switch (opt) {
    case OPT_CONFIG: a->config = arg; break;
    case OPT_INIT: a->init = arg; break;
    case OPT_OUT: a->out = arg; break;
    case OPT_DATA: return data_add(&a->data, arg, "train");
    case OPT_VAL_DATA: return data_add(&a->val_data, arg, "train");
    case OPT_VAL_FRACTION:
        ok = parse_float(arg, &f) && f >= 0.0f && f < 1.0f;
        a->val_fraction = (double)f;
        break;
    case OPT_PREPROCESS:
        ok = strcmp(arg, "center_l2") == 0 || strcmp(arg, "none") == 0;
        a->preprocess = strcmp(arg, "center_l2") == 0;
        break;
    case OPT_SCHEDULE:
        if (strcmp(arg, "alternating") == 0)
            o->schedule = AMC_TRAIN_ALTERNATING;
        else if (strcmp(arg, "joint") == 0)
            o->schedule = AMC_TRAIN_JOINT;
        else if (strcmp(arg, "single") == 0)
            o->schedule = AMC_TRAIN_SINGLE;
        else
            ok = 0;
        break;
    case OPT_DIRECTION: a->direction = arg; break;
    case OPT_EPOCHS: ok = parse_long(arg, 1, 1000000, &v); o->epochs = (int)v; break;
    case OPT_BATCH: ok = parse_long(arg, 2, 1 << 20, &v); o->batch = (int)v; break;
    case OPT_MAX_STEPS: ok = parse_long(arg, 1, INT64_MAX, &v); o->max_steps = v; break;
    case OPT_PATIENCE: ok = parse_long(arg, 0, 1000000, &v); o->patience = (int)v; break;
    case OPT_RESUME: a->resume = 1; break;
    case OPT_LR: ok = parse_float(arg, &o->lr) && o->lr > 0.0f; break;
    case OPT_LR_START: ok = parse_float(arg, &o->lr_start) && o->lr_start >= 0.0f; break;
    case OPT_LR_FINAL: ok = parse_float(arg, &o->lr_final) && o->lr_final >= 0.0f; break;
    case OPT_WARMUP: ok = parse_float(arg, &o->warmup_epochs) && o->warmup_epochs >= 0; break;
    case OPT_WD_START: ok = parse_float(arg, &o->wd_start) && o->wd_start >= 0.0f; break;
    case OPT_WD_END: ok = parse_float(arg, &o->wd_end) && o->wd_end >= 0.0f; break;
    case OPT_CLIP: ok = parse_float(arg, &o->clip); break;
    case OPT_NO_DROPOUT: o->dropout = 0; break;
    case OPT_ALPHA: ok = parse_float(arg, &o->obj.alpha); break;
    case OPT_BETA: ok = parse_float(arg, &o->obj.beta); break;
    case OPT_TAU: ok = parse_float(arg, &o->obj.tau); break;
    case OPT_REG_LOSS:
        ok = strcmp(arg, "smooth_l1") == 0 || strcmp(arg, "l2") == 0;
        o->obj.reg = strcmp(arg, "l2") == 0 ? AMC_REG_L2 : AMC_REG_SMOOTH_L1;
        break;
    case OPT_SEED:
        ok = parse_long(arg, 0, INT64_MAX, &v);
        o->seed = (uint64_t)v;
        break;
    case OPT_LOG_EVERY: ok = parse_long(arg, 0, 1 << 30, &v); o->log_every = (int)v; break;
    case OPT_LOSS_LOG: a->loss_log = arg; break;
    case OPT_NO_PRED: o->eval_predictive = 0; break;
    default: ok = 0; break;
    }
    if (!ok)
        fprintf(stderr, "altmoe train: --%s '%s' is invalid; see altmoe train --help\n", name,
                arg ? arg : "");
    return ok;
}

static const struct option train_options[] = {
    {"config", required_argument, NULL, OPT_CONFIG},
    {"init", required_argument, NULL, OPT_INIT},
    {"out", required_argument, NULL, OPT_OUT},
    {"data", required_argument, NULL, OPT_DATA},
    {"val-data", required_argument, NULL, OPT_VAL_DATA},
    {"val-fraction", required_argument, NULL, OPT_VAL_FRACTION},
    {"preprocess", required_argument, NULL, OPT_PREPROCESS},
    {"schedule", required_argument, NULL, OPT_SCHEDULE},
    {"direction", required_argument, NULL, OPT_DIRECTION},
    {"epochs", required_argument, NULL, OPT_EPOCHS},
    {"batch", required_argument, NULL, OPT_BATCH},
    {"max-steps", required_argument, NULL, OPT_MAX_STEPS},
    {"patience", required_argument, NULL, OPT_PATIENCE},
    {"resume", no_argument, NULL, OPT_RESUME},
    {"lr", required_argument, NULL, OPT_LR},
    {"lr-start", required_argument, NULL, OPT_LR_START},
    {"lr-final", required_argument, NULL, OPT_LR_FINAL},
    {"warmup-epochs", required_argument, NULL, OPT_WARMUP},
    {"wd-start", required_argument, NULL, OPT_WD_START},
    {"wd-end", required_argument, NULL, OPT_WD_END},
    {"clip", required_argument, NULL, OPT_CLIP},
    {"no-dropout", no_argument, NULL, OPT_NO_DROPOUT},
    {"alpha", required_argument, NULL, OPT_ALPHA},
    {"reg-loss", required_argument, NULL, OPT_REG_LOSS},
    {"beta", required_argument, NULL, OPT_BETA},
    {"tau", required_argument, NULL, OPT_TAU},
    {"seed", required_argument, NULL, OPT_SEED},
    {"log-every", required_argument, NULL, OPT_LOG_EVERY},
    {"loss-log", required_argument, NULL, OPT_LOSS_LOG},
    {"no-predictive", no_argument, NULL, OPT_NO_PRED},
    {"help", no_argument, NULL, OPT_HELP},
    {NULL, 0, NULL, 0}};

/* OUT.last.safetensors and OUT.state next to OUT (a trailing .safetensors is replaced). */
static int derive_paths(const char *out, char **last, char **state)
{
    size_t len = strlen(out);
    const char *ext = ".safetensors";
    size_t base = len >= strlen(ext) && strcmp(out + len - strlen(ext), ext) == 0
                      ? len - strlen(ext) : len;
    *last = malloc(base + 32);
    *state = malloc(base + 32);
    if (*last == NULL || *state == NULL)
        return 0;
    snprintf(*last, base + 32, "%.*s.last.safetensors", (int)base, out);
    snprintf(*state, base + 32, "%.*s.state", (int)base, out);
    return 1;
}

/* The connector to train: new from --config, or loaded from --init or the last checkpoint. */
static amc_status make_connector(const train_args *a, const char *last, amc_connector **conn,
                                 amc_error *err)
{
    if (a->resume)
        return amc_model_load(last, conn, NULL, err);
    if (a->init != NULL)
        return amc_model_load(a->init, conn, NULL, err);
    char *json = read_text_file(a->config);
    if (json == NULL)
        return amc_error_set(err, AMC_EIO, "%s: %s", a->config, strerror(errno));
    amc_config cfg;
    amc_status rc = amc_config_from_json(&cfg, json, err);
    free(json);
    if (rc == AMC_OK)
        rc = amc_connector_create(conn, &cfg, err);
    if (rc == AMC_OK)
        amc_connector_init(*conn, a->opts.seed);
    return rc;
}

/* Resolves --direction SRC->TGT into opts.single_dir. */
static amc_status resolve_direction(train_args *a, const amc_connector *conn, amc_error *err)
{
    if (a->opts.schedule != AMC_TRAIN_SINGLE)
        return AMC_OK;
    const char *arrow = a->direction ? strstr(a->direction, "->") : NULL;
    if (arrow == NULL)
        return amc_error_set(err, AMC_EINVAL,
                             "--schedule single needs --direction SRC->TGT, e.g. image->text");
    char src[AMC_NAME_MAX] = {0};
    snprintf(src, sizeof src, "%.*s", (int)(arrow - a->direction), a->direction);
    int s = amc_config_modality(&conn->cfg, src), t = amc_config_modality(&conn->cfg, arrow + 2);
    int d = s >= 0 && t >= 0 ? amc_config_direction(&conn->cfg, s, t) : -1;
    if (d < 0)
        return amc_error_set(err, AMC_EINVAL, "--direction %s: the model has no such direction",
                             a->direction);
    a->opts.single_dir = d;
    return AMC_OK;
}

/* Loads the data, splits it and fits the preprocessing; writes its JSON to *pre_json. */
static amc_status prepare_data(const train_args *a, const amc_connector *conn, amc_pairs *train,
                               amc_pairs *val, char **pre_json, amc_error *err)
{
    amc_pairs all;
    amc_status rc = load_pairs(&a->data, &conn->cfg, &all, err);
    if (rc != AMC_OK)
        return rc;
    if (a->val_data.count > 0) {
        *train = all;
        rc = load_pairs(&a->val_data, &conn->cfg, val, err);
    } else {
        rc = amc_pairs_split(&all, a->val_fraction, a->opts.seed, train, val, err);
        amc_pairs_free(&all);
    }
    if (rc != AMC_OK)
        return rc;

    amc_preprocess pre = {0};
    if (a->preprocess)
        rc = amc_preprocess_fit(&pre, train, err);
    if (rc == AMC_OK) {
        amc_preprocess_apply(&pre, train);
        amc_preprocess_apply(&pre, val);
        *pre_json = amc_preprocess_to_json(&pre, &conn->cfg);
        if (*pre_json == NULL)
            rc = amc_error_set(err, AMC_ENOMEM, "out of memory");
    }
    amc_preprocess_free(&pre);
    return rc;
}

static int run_train(train_args *a)
{
    char *last = NULL, *state = NULL, *pre_json = NULL;
    amc_connector *conn = NULL;
    amc_pairs train = {0}, val = {0};
    amc_error err = {0};
    amc_train_result result;
    int status = 1;

    if (!derive_paths(a->out, &last, &state))
        goto done;
    amc_status rc = make_connector(a, last, &conn, &err);
    if (rc == AMC_OK)
        rc = resolve_direction(a, conn, &err);
    if (rc == AMC_OK)
        rc = prepare_data(a, conn, &train, &val, &pre_json, &err);
    if (rc != AMC_OK) {
        fprintf(stderr, "altmoe train: %s\n", err.msg);
        goto done;
    }
    printf("training %zu parameters on %d pairs (validation %d), schedule %s, %d epochs of "
           "%d steps\n", amc_connector_param_count(conn), train.rows, val.rows,
           amc_schedule_name(a->opts.schedule), a->opts.epochs,
           train.rows / (a->opts.batch < train.rows ? a->opts.batch : train.rows));
    fflush(stdout);

    amc_train_paths paths = {.best = a->out, .last = last, .state = state,
                             .loss_log = a->loss_log};
    rc = amc_train(conn, &train, &val, &a->opts, &paths, pre_json, a->resume, stdout, &result,
                   &err);
    if (rc != AMC_OK) {
        fprintf(stderr, "altmoe train: %s\n", err.msg);
        goto done;
    }
    if (result.reached_max_steps) {
        printf("stopped at step %lld (--max-steps); continue with --resume\n",
               (long long)result.steps);
    } else if (result.best_epoch > 0) {
        printf("%s after %d epochs; best epoch %d, validation recall (%%):\n",
               result.stopped_early ? "stopped early" : "finished", result.epochs_run,
               result.best_epoch);
        amc_recall_table_print(stdout, conn, &result.best, 0);
    } else {
        printf("finished after %d epochs (no validation set)\n", result.epochs_run);
    }
    printf("model: %s\n", a->out);
    status = 0;
done:
    free(last);
    free(state);
    free(pre_json);
    amc_connector_free(conn);
    amc_pairs_free(&train);
    amc_pairs_free(&val);
    return status;
}

int ams_cmd_train(int argc, char **argv)
{
    train_args a = {.val_fraction = 0.1, .preprocess = 0, .opts = amc_train_opts_default()};
    int opt, index = 0, status = 2;

    optind = 1;
    while ((opt = getopt_long(argc, argv, "", train_options, &index)) != -1) {
        if (opt == OPT_HELP) {
            train_usage(stdout);
            status = 0;
            goto done;
        }
        if (opt == '?' || !train_option(&a, opt, train_options[index].name, optarg))
            goto done;
    }
    if (optind != argc || a.out == NULL || a.data.count == 0 ||
        (!a.resume && (a.config == NULL) == (a.init == NULL))) {
        fprintf(stderr, "altmoe train: need --out, --data and exactly one of --config and "
                        "--init (or --resume)\n\n");
        train_usage(stderr);
        goto done;
    }
    status = run_train(&a);
done:
    data_free(&a.data);
    data_free(&a.val_data);
    return status;
}

/* ---------------------------------------------------------------- eval */

static void eval_usage(FILE *out)
{
    fprintf(out,
            "usage: altmoe eval --model MODEL.safetensors --data MODALITY=FILE.npy ...\n"
            "                   [--json] [--no-predictive]\n\n"
            "Prints recall@1/5/10 of every direction of the model on aligned pairs (row i of\n"
            "every file is the same item; all rows form the gallery), in the contrastive and\n"
            "the predictive space. The model's stored feature preprocessing is applied first.\n");
}

int ams_cmd_eval(int argc, char **argv)
{
    static const struct option options[] = {{"model", required_argument, NULL, 'm'},
                                            {"data", required_argument, NULL, 'd'},
                                            {"json", no_argument, NULL, 'j'},
                                            {"no-predictive", no_argument, NULL, 'p'},
                                            {"help", no_argument, NULL, 'h'},
                                            {NULL, 0, NULL, 0}};
    const char *model = NULL;
    data_args data = {0};
    int json = 0, predictive = 1, opt, status = 2;

    optind = 1;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case 'm': model = optarg; break;
        case 'd':
            if (!data_add(&data, optarg, "eval"))
                goto done;
            break;
        case 'j': json = 1; break;
        case 'p': predictive = 0; break;
        case 'h': eval_usage(stdout); status = 0; goto done;
        default: eval_usage(stderr); goto done;
        }
    }
    if (model == NULL || data.count == 0 || optind != argc) {
        eval_usage(stderr);
        goto done;
    }

    amc_connector *conn = NULL;
    char *training = NULL;
    amc_pairs pairs = {0};
    amc_recall_table table;
    amc_error err = {0};
    /* The connector applies the model's stored input preprocessing to the raw pairs. */
    amc_status rc = amc_model_load_for_inference(model, &conn, &training, &err);
    if (rc == AMC_OK)
        rc = load_pairs(&data, &conn->cfg, &pairs, &err);
    if (rc == AMC_OK)
        rc = amc_recall_table_eval(conn, &pairs, predictive, &table, &err);
    if (rc == AMC_OK) {
        if (!json)
            printf("%d pairs, model %s\n", pairs.rows, model);
        amc_recall_table_print(stdout, conn, &table, json);
        status = 0;
    } else {
        fprintf(stderr, "altmoe eval: %s\n", err.msg);
        status = 1;
    }
    amc_pairs_free(&pairs);
    free(training);
    amc_connector_free(conn);
done:
    data_free(&data);
    return status;
}
