/* The training loop (see core/trainer.h). */
#include "core/trainer.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/fileio.h"
#include "core/model_io.h"
#include "core/optim.h"

amc_train_opts amc_train_opts_default(void)
{
    amc_train_opts o = {
        .schedule = AMC_TRAIN_ALTERNATING,
        .single_dir = 0,
        .epochs = 40,
        .batch = 128,
        .max_steps = 0,
        .lr_start = 1e-4f,
        .lr = 1e-3f,
        .lr_final = 1e-5f,
        .warmup_epochs = 0.5f,
        .wd_start = 0.005f,
        .wd_end = 0.2f,
        .clip = 1.0f,
        .dropout = 1,
        .obj = amc_objective_default(),
        .seed = 0,
        .patience = 10,
        .log_every = 50,
        .eval_predictive = 1,
    };
    return o;
}

const char *amc_schedule_name(amc_schedule_kind kind)
{
    switch (kind) {
    case AMC_TRAIN_ALTERNATING: return "alternating";
    case AMC_TRAIN_JOINT: return "joint";
    case AMC_TRAIN_SINGLE: return "single";
    }
    return "?";
}

/* ---------------------------------------------------------------- recall table */

amc_status amc_recall_table_eval(const amc_connector *conn, const amc_pairs *p, int predictive,
                                 amc_recall_table *out, amc_error *err)
{
    const amc_config *cfg = &conn->cfg;
    memset(out, 0, sizeof *out);
    out->n_directions = cfg->n_directions;
    out->has_pred = predictive;
    for (int d = 0; d < cfg->n_directions; d++) {
        int s = cfg->directions[d].src, t = cfg->directions[d].tgt;
        amc_status rc = amc_recall_eval(conn, d, AMC_SPACE_CONTRASTIVE, p->data[s], p->seq[s],
                                        p->data[t], p->seq[t], p->rows, &out->cl[d], err);
        if (rc == AMC_OK && predictive)
            rc = amc_recall_eval(conn, d, AMC_SPACE_PREDICTIVE, p->data[s], p->seq[s],
                                 p->data[t], p->seq[t], p->rows, &out->pred[d], err);
        if (rc != AMC_OK)
            return rc;
        out->mean += (out->cl[d].r1 + out->cl[d].r5 + out->cl[d].r10) / 3.0;
    }
    out->mean /= cfg->n_directions;
    return AMC_OK;
}

static void direction_name(const amc_config *cfg, int d, char *buf, size_t len)
{
    snprintf(buf, len, "%s->%s", cfg->modalities[cfg->directions[d].src].name,
             cfg->modalities[cfg->directions[d].tgt].name);
}

static cJSON *recall_json(const amc_recall *r)
{
    double v[3] = {r->r1, r->r5, r->r10};
    return cJSON_CreateDoubleArray(v, 3);
}

static cJSON *recall_table_json(const amc_connector *conn, const amc_recall_table *t)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *dirs = cJSON_AddObjectToObject(root, "directions");
    for (int d = 0; d < t->n_directions; d++) {
        char name[2 * AMC_NAME_MAX + 4];
        direction_name(&conn->cfg, d, name, sizeof name);
        cJSON *entry = cJSON_AddObjectToObject(dirs, name);
        cJSON_AddItemToObject(entry, "contrastive", recall_json(&t->cl[d]));
        if (t->has_pred)
            cJSON_AddItemToObject(entry, "predictive", recall_json(&t->pred[d]));
    }
    cJSON_AddNumberToObject(root, "mean_recall", t->mean);
    return root;
}

void amc_recall_table_print(FILE *out, const amc_connector *conn, const amc_recall_table *t,
                            int json)
{
    if (json) {
        cJSON *root = recall_table_json(conn, t);
        char *text = cJSON_PrintUnformatted(root);
        fprintf(out, "%s\n", text ? text : "{}");
        free(text);
        cJSON_Delete(root);
        return;
    }
    fprintf(out, "%-22s %-12s %7s %7s %7s\n", "direction", "space", "R@1", "R@5", "R@10");
    for (int d = 0; d < t->n_directions; d++) {
        char name[2 * AMC_NAME_MAX + 4];
        direction_name(&conn->cfg, d, name, sizeof name);
        const amc_recall *r = &t->cl[d];
        fprintf(out, "%-22s %-12s %7.2f %7.2f %7.2f\n", name, "contrastive", 100 * r->r1,
                100 * r->r5, 100 * r->r10);
        if (t->has_pred) {
            r = &t->pred[d];
            fprintf(out, "%-22s %-12s %7.2f %7.2f %7.2f\n", name, "predictive", 100 * r->r1,
                    100 * r->r5, 100 * r->r10);
        }
    }
    fprintf(out, "mean recall (contrastive, R@1/5/10 averaged): %.2f\n", 100 * t->mean);
}

/* ---------------------------------------------------------------- training state */

typedef struct train_state {
    int64_t step;                /* optimisation steps done */
    int epoch;                   /* current epoch, 0-based */
    int epoch_step;              /* steps done in the current epoch */
    int best_epoch;              /* 1-based, 0 none */
    int bad_epochs;
    double best_mean;
    amc_rng shuffle_rng, dropout_rng;
    int *perm;                   /* [train rows], this epoch's order */
} train_state;

#define STATE_MAGIC "AMCTRAIN"
#define STATE_VERSION 1u

typedef struct state_header {
    char magic[8];
    uint32_t version, n_tensors;
    uint64_t n_params;
    uint32_t n_train, batch, schedule, epochs;
    char fingerprint[24];        /* of the weights saved with this state */
    int64_t step;
    int32_t epoch, epoch_step, best_epoch, bad_epochs;
    double best_mean;
    uint64_t shuffle_rng[4], dropout_rng[4];
} state_header;

static uint64_t fnv1a(const unsigned char *p, size_t n, uint64_t h)
{
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

/* Writes parts[i] of lens[i] bytes and a checksum through a temporary file. */
static amc_status write_parts(const char *path, const void *const *parts, const size_t *lens,
                              int n, amc_error *err)
{
    amc_atomic_file file;
    amc_status rc = amc_atomic_begin(&file, path, err);
    if (rc != AMC_OK)
        return rc;
    uint64_t sum = 14695981039346656037ULL;
    for (int i = 0; i < n && rc == AMC_OK; i++) {
        sum = fnv1a(parts[i], lens[i], sum);
        rc = amc_atomic_write(&file, parts[i], lens[i], err);
    }
    if (rc == AMC_OK)
        rc = amc_atomic_write(&file, &sum, sizeof sum, err);
    if (rc != AMC_OK) {
        amc_atomic_abort(&file);
        return rc;
    }
    return amc_atomic_commit(&file, err);
}

static amc_status state_save(const char *path, const amc_connector *conn, const amc_adamw *opt,
                             const train_state *st, int n_train, const amc_train_opts *opts,
                             amc_error *err)
{
    state_header h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, STATE_MAGIC, 8);
    h.version = STATE_VERSION;
    h.n_tensors = (uint32_t)conn->n_tensors;
    h.n_params = conn->n_params;
    h.n_train = (uint32_t)n_train;
    h.batch = (uint32_t)opts->batch;
    h.schedule = (uint32_t)opts->schedule;
    h.epochs = (uint32_t)opts->epochs;
    amc_connector_fingerprint(conn, h.fingerprint);
    h.step = st->step;
    h.epoch = st->epoch;
    h.epoch_step = st->epoch_step;
    h.best_epoch = st->best_epoch;
    h.bad_epochs = st->bad_epochs;
    h.best_mean = st->best_mean;
    memcpy(h.shuffle_rng, st->shuffle_rng.s, sizeof h.shuffle_rng);
    memcpy(h.dropout_rng, st->dropout_rng.s, sizeof h.dropout_rng);

    const void *parts[] = {&h, st->perm, opt->steps, opt->m, opt->v};
    size_t lens[] = {sizeof h, sizeof(int) * (size_t)n_train,
                     sizeof(int64_t) * (size_t)conn->n_tensors, sizeof(float) * conn->n_params,
                     sizeof(float) * conn->n_params};
    return write_parts(path, parts, lens, 5, err);
}

static amc_status state_load(const char *path, const amc_connector *conn, amc_adamw *opt,
                             train_state *st, int n_train, const amc_train_opts *opts,
                             amc_error *err)
{
    void *map;
    size_t len;
    amc_status rc = amc_file_map(path, &map, &len, err);
    if (rc != AMC_OK)
        return rc;
    const unsigned char *p = map;
    state_header h;
    size_t want = sizeof h + sizeof(int) * (size_t)n_train +
                  sizeof(int64_t) * (size_t)conn->n_tensors +
                  2 * sizeof(float) * conn->n_params + sizeof(uint64_t);
    char fp[24] = {0};
    amc_connector_fingerprint(conn, fp);

    if (len < sizeof h) {
        rc = amc_error_set(err, AMC_EFORMAT, "%s: too short for a training state", path);
        goto done;
    }
    memcpy(&h, p, sizeof h);
    uint64_t sum;
    if (memcmp(h.magic, STATE_MAGIC, 8) != 0 || h.version != STATE_VERSION) {
        rc = amc_error_set(err, AMC_EFORMAT, "%s: not an altmoe training state (version %u)",
                           path, STATE_VERSION);
    } else if (h.n_params != conn->n_params || h.n_tensors != (uint32_t)conn->n_tensors ||
               len != want) {
        rc = amc_error_set(err, AMC_EFORMAT,
                           "%s: state of %llu parameters and %zu bytes does not fit this model "
                           "(%zu parameters, %zu bytes expected)", path,
                           (unsigned long long)h.n_params, len, conn->n_params, want);
    } else if (memcpy(&sum, p + len - sizeof sum, sizeof sum),
               sum != fnv1a(p, len - sizeof sum, 14695981039346656037ULL)) {
        rc = amc_error_set(err, AMC_EFORMAT, "%s: checksum mismatch; the file is damaged", path);
    } else if (h.n_train != (uint32_t)n_train || h.batch != (uint32_t)opts->batch ||
               h.schedule != (uint32_t)opts->schedule || h.epochs != (uint32_t)opts->epochs) {
        rc = amc_error_set(err, AMC_EINVAL,
                           "%s: saved with %u training rows, batch %u, schedule %s, %u epochs; "
                           "resume with the same data, --batch, --schedule and --epochs", path,
                           h.n_train, h.batch, amc_schedule_name((amc_schedule_kind)h.schedule),
                           h.epochs);
    } else if (strcmp(h.fingerprint, fp) != 0) {
        rc = amc_error_set(err, AMC_EINVAL,
                           "%s: belongs to weights %s, but the model to resume has %s; resume "
                           "from the matching last checkpoint", path, h.fingerprint, fp);
    }
    if (rc != AMC_OK)
        goto done;

    st->step = h.step;
    st->epoch = h.epoch;
    st->epoch_step = h.epoch_step;
    st->best_epoch = h.best_epoch;
    st->bad_epochs = h.bad_epochs;
    st->best_mean = h.best_mean;
    memcpy(st->shuffle_rng.s, h.shuffle_rng, sizeof h.shuffle_rng);
    memcpy(st->dropout_rng.s, h.dropout_rng, sizeof h.dropout_rng);
    p += sizeof h;
    memcpy(st->perm, p, sizeof(int) * (size_t)n_train);
    p += sizeof(int) * (size_t)n_train;
    memcpy(opt->steps, p, sizeof(int64_t) * (size_t)conn->n_tensors);
    p += sizeof(int64_t) * (size_t)conn->n_tensors;
    memcpy(opt->m, p, sizeof(float) * conn->n_params);
    p += sizeof(float) * conn->n_params;
    memcpy(opt->v, p, sizeof(float) * conn->n_params);
    for (int i = 0; i < n_train; i++)
        if (st->perm[i] < 0 || st->perm[i] >= n_train) {
            rc = amc_error_set(err, AMC_EFORMAT, "%s: bad data permutation", path);
            break;
        }
done:
    amc_file_unmap(map, len);
    return rc;
}

/* ---------------------------------------------------------------- the loop */

typedef struct trainer {
    amc_connector *conn;
    const amc_pairs *train, *val;
    const amc_train_opts *opts;
    const amc_train_paths *paths;
    const char *preprocess_json;
    FILE *log, *loss_log;
    amc_objective_ws *ows;
    amc_adamw opt;
    float *grad;                 /* [n_params] */
    amc_params grads;
    unsigned char *used;         /* [n_tensors] */
    float *batch[AMC_MAX_MODALITIES];
    amc_schedule_cfg sched;
    int steps_per_epoch, batch_size;
    train_state st;
    /* progress of the current logging interval */
    double sum_total, sum_reg, sum_cl;
    int interval_steps;
    int64_t interval_samples, run_samples;
    double t_start, t_interval;
    double step_seconds;         /* time inside train_step() this run */
    int64_t run_start_step;
    amc_recall_table last_table;
    int has_table;
} trainer;

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void shuffle(int *perm, int n, amc_rng *rng)
{
    for (int i = n - 1; i > 0; i--) {
        int j = (int)amc_rng_below(rng, (uint64_t)i + 1);
        int t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

/* Copies this step's rows (perm[epoch_step * batch ...]) of every modality into t->batch. */
static void gather_batch(trainer *t)
{
    const amc_pairs *p = t->train;
    const int *rows = t->st.perm + (size_t)t->st.epoch_step * t->batch_size;
    for (int m = 0; m < p->n_modalities; m++) {
        size_t row_len = (size_t)p->seq[m] * p->dim[m];
        for (int i = 0; i < t->batch_size; i++)
            memcpy(t->batch[m] + row_len * i, p->data[m] + row_len * (size_t)rows[i],
                   sizeof(float) * row_len);
    }
}

/* Directions trained at this step: writes them to dirs and returns their count. */
static int step_directions(const trainer *t, int *dirs)
{
    const amc_config *cfg = &t->conn->cfg;
    switch (t->opts->schedule) {
    case AMC_TRAIN_JOINT:
        for (int d = 0; d < cfg->n_directions; d++)
            dirs[d] = d;
        return cfg->n_directions;
    case AMC_TRAIN_SINGLE:
        dirs[0] = t->opts->single_dir;
        return 1;
    case AMC_TRAIN_ALTERNATING:
        break;
    }
    dirs[0] = (int)(t->st.step % cfg->n_directions);
    return 1;
}

static void format_duration(char *buf, size_t len, double seconds)
{
    long s = (long)(seconds + 0.5);
    if (s >= 3600)
        snprintf(buf, len, "%ldh%02ldm", s / 3600, s / 60 % 60);
    else
        snprintf(buf, len, "%ldm%02lds", s / 60, s % 60);
}

static void log_progress(trainer *t, const int *dirs, int n_dirs, float lr)
{
    const amc_config *cfg = &t->conn->cfg;
    double now = now_seconds();
    double rate = (double)t->interval_samples / (now - t->t_interval + 1e-9);
    double per_step = (now - t->t_start) / (double)(t->st.step - t->run_start_step);
    int64_t end = t->sched.total_steps;
    if (t->opts->max_steps > 0 && t->opts->max_steps < end)
        end = t->opts->max_steps;
    char eta[32], dir[2 * AMC_NAME_MAX + 4];
    format_duration(eta, sizeof eta, per_step * (double)(end - t->st.step));
    if (n_dirs == 1)
        direction_name(cfg, dirs[0], dir, sizeof dir);
    else
        snprintf(dir, sizeof dir, "all(%d)", n_dirs);
    int k = t->interval_steps;
    fprintf(t->log,
            "epoch %d/%d step %lld/%lld %s loss %.4f (reg %.4f cl %.4f) lr %.3e %.0f samples/s "
            "ETA %s\n",
            t->st.epoch + 1, t->opts->epochs, (long long)t->st.step,
            (long long)t->sched.total_steps, dir, t->sum_total / k, t->sum_reg / k,
            t->sum_cl / k, (double)lr, rate, eta);
    fflush(t->log);
    t->sum_total = t->sum_reg = t->sum_cl = 0.0;
    t->interval_steps = 0;
    t->interval_samples = 0;
    t->t_interval = now;
}

/* One optimisation step on the next batch. */
static amc_status train_step(trainer *t, amc_error *err)
{
    const amc_config *cfg = &t->conn->cfg;
    int dirs[AMC_MAX_DIRECTIONS];
    int n_dirs = step_directions(t, dirs);
    amc_rng *drop = t->opts->dropout ? &t->st.dropout_rng : NULL;

    gather_batch(t);
    memset(t->grad, 0, sizeof(float) * t->conn->n_params);
    memset(t->used, 0, (size_t)t->conn->n_tensors);

    /* forward + backward of every direction of this step into one gradient block */
    amc_loss_terms sum = {0, 0, 0};
    for (int i = 0; i < n_dirs; i++) {
        int s = cfg->directions[dirs[i]].src, g = cfg->directions[dirs[i]].tgt;
        amc_loss_terms terms;
        amc_status rc = amc_objective_step(t->conn, t->ows, &t->opts->obj, dirs[i],
                                           t->batch[s], t->train->seq[s], t->batch[g],
                                           t->train->seq[g], t->batch_size, drop, 1.0f,
                                           &t->grads, t->used, &terms, err);
        if (rc != AMC_OK)
            return rc;
        if (t->loss_log != NULL)
            fprintf(t->loss_log, "%lld %d %.9g %.9g %.9g\n", (long long)t->st.step, dirs[i],
                    terms.total, terms.reg, terms.cl);
        sum.total += terms.total;
        sum.reg += terms.reg;
        sum.cl += terms.cl;
    }
    if (!isfinite(sum.total))
        return amc_error_set(err, AMC_EINVAL,
                             "step %lld: the loss is %g; lower --lr or check the data",
                             (long long)t->st.step, sum.total);

    /* clip, schedule, update */
    amc_clip_grad_norm(t->grad, t->conn->n_params, t->opts->clip);
    float lr = amc_schedule_lr(&t->sched, t->st.step);
    float wd = amc_schedule_wd(&t->sched, t->st.step);
    amc_adamw_step(&t->opt, t->conn, t->grad, t->used, lr, wd);

    t->st.step++;
    t->st.epoch_step++;
    t->sum_total += sum.total / n_dirs;
    t->sum_reg += sum.reg / n_dirs;
    t->sum_cl += sum.cl / n_dirs;
    t->interval_steps++;
    t->interval_samples += (int64_t)t->batch_size * n_dirs;
    t->run_samples += (int64_t)t->batch_size * n_dirs;
    if (t->log != NULL && t->opts->log_every > 0 && t->st.step % t->opts->log_every == 0)
        log_progress(t, dirs, n_dirs, lr);
    return AMC_OK;
}

/* The JSON training summary stored in the models' metadata. */
static char *summary_json(const trainer *t, const amc_recall_table *table)
{
    const amc_train_opts *o = t->opts;
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "schedule", amc_schedule_name(o->schedule));
    if (o->schedule == AMC_TRAIN_SINGLE) {
        char name[2 * AMC_NAME_MAX + 4];
        direction_name(&t->conn->cfg, o->single_dir, name, sizeof name);
        cJSON_AddStringToObject(root, "direction", name);
    }
    cJSON_AddNumberToObject(root, "epoch", t->st.epoch);
    cJSON_AddNumberToObject(root, "steps", (double)t->st.step);
    cJSON_AddNumberToObject(root, "epochs", o->epochs);
    cJSON_AddNumberToObject(root, "batch", o->batch);
    cJSON_AddNumberToObject(root, "train_rows", t->train->rows);
    cJSON_AddNumberToObject(root, "val_rows", t->val->rows);
    cJSON_AddNumberToObject(root, "lr", (double)o->lr);
    cJSON_AddNumberToObject(root, "seed", (double)o->seed);
    cJSON_AddNumberToObject(root, "alpha", (double)o->obj.alpha);
    cJSON_AddNumberToObject(root, "tau", (double)o->obj.tau);
    cJSON_AddStringToObject(root, "reg_loss", o->obj.reg == AMC_REG_L2 ? "l2" : "smooth_l1");
    if (table != NULL)
        cJSON_AddItemToObject(root, "val_recall", recall_table_json(t->conn, table));
    cJSON *pre = t->preprocess_json ? cJSON_Parse(t->preprocess_json) : NULL;
    if (pre != NULL)
        cJSON_AddItemToObject(root, "preprocess", pre);
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return text;
}

static amc_status save_model(const trainer *t, const char *path, const amc_recall_table *table,
                             amc_error *err)
{
    char *json = summary_json(t, table);
    if (json == NULL)
        return amc_error_set(err, AMC_ENOMEM, "out of memory for the training summary");
    amc_status rc = amc_model_save(path, t->conn, json, err);
    free(json);
    return rc;
}

static amc_status save_checkpoint(const trainer *t, amc_error *err)
{
    amc_status rc = save_model(t, t->paths->last, t->has_table ? &t->last_table : NULL, err);
    if (rc == AMC_OK)
        rc = state_save(t->paths->state, t->conn, &t->opt, &t->st, t->train->rows, t->opts, err);
    return rc;
}

/* End of an epoch: validation recall, best model, early-stopping counters. Sets *stop. */
static amc_status end_epoch(trainer *t, int *stop, amc_error *err)
{
    t->st.epoch++;
    t->st.epoch_step = 0;
    *stop = 0;
    if (t->val->rows < 1)
        return save_model(t, t->paths->best, NULL, err);

    amc_status rc = amc_recall_table_eval(t->conn, t->val, t->opts->eval_predictive,
                                          &t->last_table, err);
    if (rc != AMC_OK)
        return rc;
    t->has_table = 1;
    int better = t->st.best_epoch == 0 || t->last_table.mean > t->st.best_mean;
    if (better) {
        t->st.best_mean = t->last_table.mean;
        t->st.best_epoch = t->st.epoch;
        t->st.bad_epochs = 0;
        rc = save_model(t, t->paths->best, &t->last_table, err);
    } else {
        t->st.bad_epochs++;
    }
    if (t->log != NULL) {
        fprintf(t->log, "epoch %d/%d val", t->st.epoch, t->opts->epochs);
        for (int d = 0; d < t->last_table.n_directions; d++) {
            char name[2 * AMC_NAME_MAX + 4];
            direction_name(&t->conn->cfg, d, name, sizeof name);
            const amc_recall *r = &t->last_table.cl[d];
            fprintf(t->log, " %s R@1/5/10 %.1f/%.1f/%.1f", name, 100 * r->r1, 100 * r->r5,
                    100 * r->r10);
        }
        fprintf(t->log, " mean %.2f%s\n", 100 * t->last_table.mean, better ? " (best)" : "");
        fflush(t->log);
    }
    if (t->opts->patience > 0 && t->st.bad_epochs >= t->opts->patience)
        *stop = 1;
    return rc;
}

static amc_status check_opts(const amc_connector *conn, const amc_pairs *train,
                             const amc_train_opts *o, amc_error *err)
{
    if (o->batch < 2)
        return amc_error_set(err, AMC_EINVAL, "--batch %d: need at least 2 pairs per step",
                             o->batch);
    if (o->epochs < 1)
        return amc_error_set(err, AMC_EINVAL, "--epochs %d: need at least 1", o->epochs);
    if (o->schedule == AMC_TRAIN_SINGLE &&
        (o->single_dir < 0 || o->single_dir >= conn->cfg.n_directions))
        return amc_error_set(err, AMC_EINVAL, "single schedule: no direction %d",
                             o->single_dir);
    if (!(o->obj.alpha >= 0.0f && o->obj.alpha <= 1.0f) || !(o->obj.tau > 0.0f) ||
        !(o->obj.beta > 0.0f))
        return amc_error_set(err, AMC_EINVAL,
                             "--alpha must be in [0, 1], --tau and --beta above 0");
    if (!(o->lr > 0.0f) || o->lr_start < 0.0f || o->lr_final < 0.0f || o->warmup_epochs < 0.0f)
        return amc_error_set(err, AMC_EINVAL, "learning rates must be positive (--lr > 0)");
    if (train->rows < 2)
        return amc_error_set(err, AMC_EINVAL, "need at least 2 training rows, have %d",
                             train->rows);
    return AMC_OK;
}

static void trainer_free(trainer *t)
{
    amc_objective_ws_free(t->ows);
    amc_adamw_free(&t->opt);
    free(t->grad);
    free(t->used);
    free(t->st.perm);
    for (int m = 0; m < AMC_MAX_MODALITIES; m++)
        free(t->batch[m]);
    if (t->loss_log != NULL)
        fclose(t->loss_log);
}

static amc_status trainer_setup(trainer *t, amc_error *err)
{
    amc_connector *conn = t->conn;
    const amc_train_opts *o = t->opts;
    const int rows = t->train->rows;

    t->batch_size = o->batch < rows ? o->batch : rows;
    t->steps_per_epoch = rows / t->batch_size;
    t->sched.lr_start = o->lr_start;
    t->sched.lr_peak = o->lr;
    t->sched.lr_final = o->lr_final;
    t->sched.total_steps = (int64_t)o->epochs * t->steps_per_epoch;
    t->sched.warmup_steps = (int64_t)llround((double)o->warmup_epochs * t->steps_per_epoch);
    t->sched.wd_start = o->wd_start;
    t->sched.wd_end = o->wd_end;

    t->ows = amc_objective_ws_new();
    t->grad = calloc(conn->n_params, sizeof(float));
    t->used = calloc((size_t)conn->n_tensors, 1);
    t->st.perm = malloc(sizeof(int) * (size_t)rows);
    int ok = t->ows && t->grad && t->used && t->st.perm;
    for (int m = 0; ok && m < t->train->n_modalities; m++) {
        t->batch[m] = malloc(sizeof(float) * (size_t)t->batch_size * t->train->seq[m] *
                             t->train->dim[m]);
        ok = t->batch[m] != NULL;
    }
    if (!ok)
        return amc_error_set(err, AMC_ENOMEM, "out of memory for training buffers");
    amc_params_point(conn, t->grad, &t->grads);
    if (t->paths->loss_log != NULL) {
        t->loss_log = fopen(t->paths->loss_log, "w");
        if (t->loss_log == NULL)
            return amc_error_set(err, AMC_EIO, "%s: cannot open the loss log",
                                 t->paths->loss_log);
    }
    return amc_adamw_init(&t->opt, conn, err);
}

amc_status amc_train(amc_connector *conn, const amc_pairs *train, const amc_pairs *val,
                     const amc_train_opts *opts, const amc_train_paths *paths,
                     const char *preprocess_json, int resume, FILE *log,
                     amc_train_result *result, amc_error *err)
{
    memset(result, 0, sizeof *result);
    amc_status rc = check_opts(conn, train, opts, err);
    if (rc != AMC_OK)
        return rc;

    trainer t = {.conn = conn, .train = train, .val = val, .opts = opts, .paths = paths,
                 .preprocess_json = preprocess_json, .log = log};
    rc = trainer_setup(&t, err);
    if (rc == AMC_OK && resume) {
        rc = state_load(paths->state, conn, &t.opt, &t.st, train->rows, opts, err);
    } else if (rc == AMC_OK) {
        amc_rng_seed(&t.st.shuffle_rng, opts->seed);
        amc_rng_seed(&t.st.dropout_rng, opts->seed + 1);
        for (int i = 0; i < train->rows; i++)
            t.st.perm[i] = i;
    }
    if (rc != AMC_OK) {
        trainer_free(&t);
        return rc;
    }

    /* epochs of steps; a new permutation at the start of each epoch */
    t.t_start = t.t_interval = now_seconds();
    t.run_start_step = t.st.step;
    int stop = opts->patience > 0 && t.st.bad_epochs >= opts->patience;  /* resumed a stopped run */
    while (rc == AMC_OK && !stop && t.st.epoch < opts->epochs) {
        if (opts->max_steps > 0 && t.st.step >= opts->max_steps) {
            result->reached_max_steps = 1;
            break;
        }
        if (t.st.epoch_step == 0)
            shuffle(t.st.perm, train->rows, &t.st.shuffle_rng);
        while (rc == AMC_OK && t.st.epoch_step < t.steps_per_epoch) {
            if (opts->max_steps > 0 && t.st.step >= opts->max_steps)
                break;
            double t0 = now_seconds();
            rc = train_step(&t, err);
            t.step_seconds += now_seconds() - t0;
        }
        if (rc != AMC_OK)
            break;
        if (t.st.epoch_step < t.steps_per_epoch) {   /* stopped at max_steps */
            result->reached_max_steps = 1;
            break;
        }
        rc = end_epoch(&t, &stop, err);
        if (rc == AMC_OK)
            rc = save_checkpoint(&t, err);
    }
    if (rc == AMC_OK && result->reached_max_steps)
        rc = save_checkpoint(&t, err);

    result->epochs_run = t.st.epoch;
    result->steps = t.st.step;
    result->best_epoch = t.st.best_epoch;
    result->stopped_early = stop;
    if (rc == AMC_OK && val->rows > 0 && t.st.best_epoch > 0) {
        /* the best model's table: re-evaluate it from its file for the final report */
        amc_connector *best = NULL;
        rc = amc_model_load(paths->best, &best, NULL, err);
        if (rc == AMC_OK)
            rc = amc_recall_table_eval(best, val, opts->eval_predictive, &result->best, err);
        amc_connector_free(best);
    }
    if (log != NULL && rc == AMC_OK) {
        double secs = now_seconds() - t.t_start;
        fprintf(log, "trained %lld steps in %.1f s (%.0f samples/s in the steps, %.1f s with "
                "evaluation and checkpoints)\n", (long long)(t.st.step - t.run_start_step),
                t.step_seconds, (double)t.run_samples / (t.step_seconds + 1e-9), secs);
    }
    trainer_free(&t);
    return rc;
}
