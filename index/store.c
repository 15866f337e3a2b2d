/* The store's lifecycle: opening the LMDB environment and recovering the indices, the write
 * transaction runner that grows the map, snapshots, connector reloads and shared helpers.
 *
 * Locking. write_mutex serialises every write call, so at most one LMDB write transaction and
 * one index change run at a time. Every reader holds the rwlock `lock` shared for the whole
 * of its call, including its LMDB read transaction. The writer holds it exclusively while it
 * changes the collection table or an index, or resizes the LMDB map, because
 * mdb_env_set_mapsize() needs no transaction open in the process. The lock prefers writers,
 * so a stream of searches cannot starve ingest. The background builder (store_build.c) takes
 * write_mutex only to start and to finish a build. */
#include "index/store_internal.h"

#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "core/fault.h"

#define DEFAULT_MAP_SIZE ((size_t)64 << 20)
#define DEFAULT_MAP_SIZE_MAX ((size_t)1 << 40)
#define DISK_LOW_BYTES ((uint64_t)1 << 20)
#define DEFAULT_TOMBSTONE_RATIO 0.2
#define DEFAULT_SNAPSHOT_EVERY 100000
#define MAX_READERS 1024

/* ---------------------------------------------------------------------------------------
 * Byte order and small helpers
 * --------------------------------------------------------------------------------------- */

void ami_put_be32_(unsigned char *p, uint32_t v)
{
    for (int i = 3; i >= 0; i--, v >>= 8)
        p[i] = (unsigned char)(v & 0xff);
}

void ami_put_be64_(unsigned char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (unsigned char)(v & 0xff);
}

uint32_t ami_get_be32_(const unsigned char *p)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v = (v << 8) | p[i];
    return v;
}

uint64_t ami_get_be64_(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

int ami_all_finite_(const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return 0;
    return 1;
}

void ami_normalise_(float *x, int dim)
{
    double sum = 0.0;
    for (int i = 0; i < dim; i++)
        sum += (double)x[i] * (double)x[i];
    if (sum <= 0.0)
        return;
    float inv = (float)(1.0 / sqrt(sum));
    for (int i = 0; i < dim; i++)
        x[i] *= inv;
}

amc_status ami_lmdb_status_(int rc, const char *what, amc_error *err)
{
    switch (rc) {
    case ENOSPC:
    case EFBIG:
    case EDQUOT:
        return amc_error_set(err, AMC_EFULL, "%s: disk full (%s); free space or raise the file "
                             "size limit, nothing of this write was stored", what, strerror(rc));
    case MDB_MAP_FULL:
        return amc_error_set(err, AMC_EFULL, "%s: LMDB map is full", what);
    case MDB_TXN_FULL:
        return amc_error_set(err, AMC_EFULL, "%s: transaction too large for LMDB; send smaller "
                             "batches", what);
    case ENOMEM:
        return amc_error_set(err, AMC_ENOMEM, "%s: out of memory", what);
    case EIO:
        return amc_error_set(err, AMC_EIO, "%s: I/O error", what);
    case MDB_READERS_FULL:
    case EAGAIN:
        return amc_error_set(err, AMC_EBUSY, "%s: %s", what, mdb_strerror(rc));
    default:
        return amc_error_set(err, AMC_EINTERNAL, "%s: %s", what, mdb_strerror(rc));
    }
}

amc_status ami_read_begin_(ami_store *st, MDB_txn **txn, amc_error *err)
{
    int rc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, txn);
    return rc == 0 ? AMC_OK : ami_lmdb_status_(rc, "begin read transaction", err);
}

int ami_meta_get_u64_(MDB_txn *txn, ami_store *st, const char *key, uint64_t *out)
{
    MDB_val k = {strlen(key), (void *)key}, v;
    int rc = mdb_get(txn, st->db_meta, &k, &v);
    if (rc == MDB_NOTFOUND) {
        *out = 0;
        return 0;
    }
    if (rc == 0 && v.mv_size != sizeof *out)
        return MDB_CORRUPTED;
    if (rc == 0)
        memcpy(out, v.mv_data, sizeof *out);
    return rc;
}

int ami_meta_put_u64_(MDB_txn *txn, ami_store *st, const char *key, uint64_t value)
{
    MDB_val k = {strlen(key), (void *)key}, v = {sizeof value, &value};
    return mdb_put(txn, st->db_meta, &k, &v, 0);
}

ami_coll_ *ami_coll_find_(ami_store *st, const char *name)
{
    for (int i = 0; i < st->n_colls; i++)
        if (strcmp(st->colls[i]->spec.name, name) == 0)
            return st->colls[i];
    return NULL;
}

int ami_coll_modality_(const ami_coll_ *coll, const char *modality)
{
    for (int m = 0; m < coll->spec.n_modalities; m++)
        if (strcmp(coll->spec.modalities[m], modality) == 0)
            return m;
    return -1;
}

int ami_index_dim_(const amc_connector *conn, ami_space space, int conn_mod)
{
    if (space == AMI_SPACE_PREDICTIVE)
        return conn->cfg.modalities[conn_mod].dim;
    return amc_connector_out_dim(conn, AMC_SPACE_TARGET, conn_mod, conn_mod);
}

amc_status ami_project_items_(const amc_connector *conn, amc_workspace *ws, ami_space space,
                              int conn_mod, const float *raw, int n, int seq, float *out,
                              amc_error *err)
{
    if (space == AMI_SPACE_CONTRASTIVE)
        return amc_connector_project(conn, ws, AMC_SPACE_TARGET, conn_mod, conn_mod, raw, n, seq,
                                     out, err);

    /* Predictive space: the raw embedding itself, mean over tokens, L2-normalised. */
    size_t dim = (size_t)conn->cfg.modalities[conn_mod].dim;
    for (int i = 0; i < n; i++) {
        const float *x = raw + (size_t)i * (size_t)seq * dim;
        float *y = out + (size_t)i * dim;
        for (size_t j = 0; j < dim; j++) {
            double sum = 0.0;
            for (int t = 0; t < seq; t++)
                sum += (double)x[(size_t)t * dim + j];
            y[j] = (float)(sum / seq);
        }
        ami_normalise_(y, (int)dim);
    }
    return AMC_OK;
}

/* ---------------------------------------------------------------------------------------
 * Workspaces: one per concurrent projecting thread, pooled
 * --------------------------------------------------------------------------------------- */

amc_workspace *ami_workspace_take_(ami_store *st)
{
    amc_workspace *ws = NULL;
    pthread_mutex_lock(&st->ws_mutex);
    if (st->n_ws > 0)
        ws = st->ws_pool[--st->n_ws];
    pthread_mutex_unlock(&st->ws_mutex);
    return ws != NULL ? ws : amc_workspace_new();
}

void ami_workspace_give_(ami_store *st, amc_workspace *ws)
{
    if (ws == NULL)
        return;
    pthread_mutex_lock(&st->ws_mutex);
    if (st->n_ws < AMI_WORKSPACE_POOL) {
        st->ws_pool[st->n_ws++] = ws;
        ws = NULL;
    }
    pthread_mutex_unlock(&st->ws_mutex);
    amc_workspace_free(ws);
}

/* ---------------------------------------------------------------------------------------
 * Write transactions
 * --------------------------------------------------------------------------------------- */

/* Doubles the LMDB map, up to opts.map_size_max. Caller holds write_mutex and no txn. */
static amc_status grow_map(ami_store *st, amc_error *err)
{
    if (st->map_size >= st->opts.map_size_max)
        return amc_error_set(err, AMC_EFULL, "LMDB map of %s reached map_size_max (%zu bytes); "
                             "raise it, nothing of this write was stored", st->dir,
                             st->opts.map_size_max);
    size_t next = st->map_size * 2;
    if (next > st->opts.map_size_max)
        next = st->opts.map_size_max;

    pthread_rwlock_wrlock(&st->lock);
    int rc = mdb_env_set_mapsize(st->env, next);
    pthread_rwlock_unlock(&st->lock);
    if (rc != 0)
        return ami_lmdb_status_(rc, "grow LMDB map", err);
    st->map_size = next;
    return AMC_OK;
}

/* Maps a failed commit to a status. LMDB reports a short write, which is how a full disk
 * shows up, as EIO, so an EIO while the data directory has less than DISK_LOW_BYTES available
 * is reported as a full disk. */
static amc_status commit_status(const ami_store *st, int rc, amc_error *err)
{
    struct statvfs fs;
    if (rc == EIO && statvfs(st->dir, &fs) == 0 &&
        (uint64_t)fs.f_bavail * (uint64_t)fs.f_frsize < DISK_LOW_BYTES)
        rc = ENOSPC;
    return ami_lmdb_status_(rc, "commit", err);
}

amc_status ami_write_txn_(ami_store *st, ami_txn_body_ body, void *ctx, amc_error *err)
{
    amc_error local;
    amc_error *e = err != NULL ? err : &local;
    for (;;) {
        MDB_txn *txn = NULL;
        int rc = mdb_txn_begin(st->env, NULL, 0, &txn);
        if (rc != 0)
            return ami_lmdb_status_(rc, "begin write transaction", e);

        e->code = AMC_OK;
        rc = body(txn, ctx, e);
        if (rc == -1) {
            mdb_txn_abort(txn);
            return e->code != AMC_OK ? e->code : AMC_EINTERNAL;
        }
        if (rc == 0 && AMC_FAULT(AMC_FAULT_COMMIT)) {
            mdb_txn_abort(txn);
            rc = EIO;
        } else if (rc == 0) {
            rc = mdb_txn_commit(txn);
        } else {
            mdb_txn_abort(txn);
        }
        if (rc == 0)
            return AMC_OK;
        if (rc != MDB_MAP_FULL)
            return commit_status(st, rc, e);

        /* The map is full: grow it and run the whole transaction again. */
        amc_status s = grow_map(st, e);
        if (s != AMC_OK)
            return s;
    }
}

/* ---------------------------------------------------------------------------------------
 * Open and close
 * --------------------------------------------------------------------------------------- */

/* Takes <dir>/LOCK exclusively: the indices live in this process's memory, so a second
 * process on the same directory would miss the first one's writes. The kernel drops the lock
 * when the process dies. */
static amc_status lock_dir(ami_store *st, amc_error *err)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/LOCK", st->dir);
    st->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (st->lock_fd < 0)
        return amc_error_set(err, AMC_EIO, "cannot open %s: %s", path, strerror(errno));
    if (flock(st->lock_fd, LOCK_EX | LOCK_NB) != 0)
        return amc_error_set(err, AMC_EBUSY, "data directory %s is in use by another process "
                             "(%s is locked); stop it or use another directory", st->dir, path);
    return AMC_OK;
}

static amc_status open_env(ami_store *st, amc_error *err)
{
    int rc = mdb_env_create(&st->env);
    if (rc == 0)
        rc = mdb_env_set_maxdbs(st->env, 16);
    if (rc == 0)
        rc = mdb_env_set_maxreaders(st->env, MAX_READERS);
    if (rc == 0)
        rc = mdb_env_set_mapsize(st->env, st->opts.map_size);
    if (rc != 0)
        return ami_lmdb_status_(rc, "create LMDB environment", err);

    /* MDB_NOTLS: a thread may hold several read transactions (recovery reads while replaying),
     * and the default sync flags stay on. */
    rc = mdb_env_open(st->env, st->dir, MDB_NOTLS, 0644);
    if (rc == ENOENT)
        return amc_error_set(err, AMC_EIO, "data directory %s does not exist; create it first",
                             st->dir);
    if (rc == EACCES)
        return amc_error_set(err, AMC_EIO, "data directory %s: permission denied", st->dir);
    if (rc != 0)
        return ami_lmdb_status_(rc, "open LMDB environment", err);

    MDB_envinfo info;
    mdb_env_info(st->env, &info);
    st->map_size = info.me_mapsize;
    return AMC_OK;
}

/* Opens every named database and checks the format version. Runs once at open. */
static int open_dbs(MDB_txn *txn, void *ctx, amc_error *err)
{
    ami_store *st = ctx;
    struct { const char *name; MDB_dbi *dbi; } dbs[] = {
        {"meta", &st->db_meta},   {"colls", &st->db_colls}, {"stats", &st->db_stats},
        {"ids", &st->db_ids},     {"points", &st->db_points}, {"raw", &st->db_raw},
        {"vecs", &st->db_vecs},   {"oplog", &st->db_oplog},
    };
    for (size_t i = 0; i < sizeof dbs / sizeof dbs[0]; i++) {
        int rc = mdb_dbi_open(txn, dbs[i].name, MDB_CREATE, dbs[i].dbi);
        if (rc != 0)
            return rc;
    }

    MDB_val k = {6, "format"}, v;
    int rc = mdb_get(txn, st->db_meta, &k, &v);
    if (rc == MDB_NOTFOUND) {
        uint32_t version = AMI_FORMAT_VERSION;
        v.mv_size = sizeof version;
        v.mv_data = &version;
        return mdb_put(txn, st->db_meta, &k, &v, 0);
    }
    if (rc != 0)
        return rc;
    uint32_t version = 0;
    if (v.mv_size == sizeof version)
        memcpy(&version, v.mv_data, sizeof version);
    if (version != AMI_FORMAT_VERSION) {
        amc_error_set(err, AMC_EFORMAT, "data directory %s has store format %u, this build "
                      "reads %u", st->dir, version, AMI_FORMAT_VERSION);
        return -1;
    }
    return 0;
}

static amc_status load_state(ami_store *st, amc_error *err)
{
    amc_status s = ami_write_txn_(st, open_dbs, st, err);
    if (s != AMC_OK)
        return s;

    MDB_txn *txn;
    s = ami_read_begin_(st, &txn, err);
    if (s != AMC_OK)
        return s;
    uint64_t seq = 0;
    int rc = ami_meta_get_u64_(txn, st, "seq", &seq);
    if (rc != 0) {
        mdb_txn_abort(txn);
        return ami_lmdb_status_(rc, "read sequence", err);
    }
    atomic_store((_Atomic uint64_t *)&st->seq, seq);
    st->snapshot_seq = seq;
    s = ami_colls_load_(st, txn, err);
    mdb_txn_abort(txn);
    return s;
}

static void free_store(ami_store *st)
{
    ami_builder_stop_(st);
    for (int i = 0; i < st->n_colls; i++)
        ami_coll_free_(st->colls[i]);
    for (int i = 0; i < st->n_ws; i++)
        amc_workspace_free(st->ws_pool[i]);
    if (st->env != NULL)
        mdb_env_close(st->env);
    if (st->lock_fd >= 0)
        close(st->lock_fd);
    pthread_mutex_destroy(&st->write_mutex);
    pthread_rwlock_destroy(&st->lock);
    pthread_mutex_destroy(&st->ws_mutex);
    pthread_mutex_destroy(&st->build_mutex);
    pthread_cond_destroy(&st->build_cond);
    free(st);
}

static void apply_defaults(ami_store_options *opts)
{
    if (opts->map_size == 0)
        opts->map_size = DEFAULT_MAP_SIZE;
    if (opts->map_size_max == 0)
        opts->map_size_max = DEFAULT_MAP_SIZE_MAX;
    if (opts->map_size > opts->map_size_max)
        opts->map_size = opts->map_size_max;
    if (!(opts->tombstone_ratio > 0.0))
        opts->tombstone_ratio = DEFAULT_TOMBSTONE_RATIO;
    if (opts->snapshot_every == 0)
        opts->snapshot_every = DEFAULT_SNAPSHOT_EVERY;
}

static ami_store *new_store(const char *dir, const amc_connector *conn,
                            const ami_store_options *opts)
{
    ami_store *st = calloc(1, sizeof *st);
    if (st == NULL)
        return NULL;
    snprintf(st->dir, sizeof st->dir, "%s", dir);
    st->conn = conn;
    amc_connector_fingerprint(conn, st->fingerprint);
    if (opts != NULL)
        st->opts = *opts;
    apply_defaults(&st->opts);

    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&st->lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    pthread_mutex_init(&st->write_mutex, NULL);
    pthread_mutex_init(&st->ws_mutex, NULL);
    pthread_mutex_init(&st->build_mutex, NULL);
    pthread_cond_init(&st->build_cond, NULL);
    st->build_floor = UINT64_MAX;
    st->lock_fd = -1;
    return st;
}

amc_status ami_store_open(ami_store **out, const char *dir, const amc_connector *conn,
                          const ami_store_options *opts, amc_error *err)
{
    *out = NULL;
    if (dir == NULL || conn == NULL)
        return amc_error_set(err, AMC_EINVAL, "ami_store_open: dir and conn are required");
    if (strlen(dir) > 3900)
        return amc_error_set(err, AMC_EINVAL, "data directory path is longer than 3900 bytes");
    ami_store *st = new_store(dir, conn, opts);
    if (st == NULL)
        return amc_error_set(err, AMC_ENOMEM, "out of memory opening the store");

    /* Snapshots live next to the LMDB files; the directory itself must exist. */
    char snapdir[4200];
    snprintf(snapdir, sizeof snapdir, "%s/snapshots", dir);
    struct stat sb;
    amc_status s = AMC_OK;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        s = amc_error_set(err, AMC_EIO, "data directory %s does not exist; create it first", dir);
    else if (mkdir(snapdir, 0755) != 0 && errno != EEXIST)
        s = amc_error_set(err, AMC_EIO, "cannot create %s: %s", snapdir, strerror(errno));

    /* The lock, LMDB, the collection table, then every index from its snapshot or LMDB. */
    if (s == AMC_OK)
        s = lock_dir(st, err);
    if (s == AMC_OK)
        s = open_env(st, err);
    if (s == AMC_OK)
        s = load_state(st, err);
    for (int i = 0; s == AMC_OK && i < st->n_colls; i++)
        if (strcmp(st->colls[i]->fingerprint, st->fingerprint) != 0)
            s = ami_reproject_(st, st->colls[i], conn, st->colls[i]->conn_mod, err);
    if (s == AMC_OK)
        s = ami_indices_recover_(st, err);
    if (s == AMC_OK)
        s = ami_builder_start_(st, err);
    if (s != AMC_OK) {
        free_store(st);
        return s;
    }
    *out = st;
    return AMC_OK;
}

void ami_store_close(ami_store *st)
{
    if (st == NULL)
        return;
    ami_builder_stop_(st);
    if (!st->opts.read_only_snapshots) {
        amc_error err = {0};
        if (ami_store_snapshot(st, &err) != AMC_OK)
            fprintf(stderr, "lvl=error event=snapshot_on_close_failed dir=%s error=\"%s\"\n",
                    st->dir, err.msg);
    }
    free_store(st);
}

const amc_connector *ami_store_connector(const ami_store *st)
{
    return st->conn;
}

uint64_t ami_store_seq(ami_store *st)
{
    return atomic_load((_Atomic uint64_t *)&st->seq);
}

int ami_store_ready(ami_store *st)
{
    int ready = 1;
    pthread_rwlock_rdlock(&st->lock);
    for (int i = 0; i < st->n_colls; i++)
        for (int m = 0; m < st->colls[i]->spec.n_modalities; m++)
            if (!ami_index_searchable_(st, st->colls[i], m))
                ready = 0;
    pthread_rwlock_unlock(&st->lock);
    return ready;
}

/* ---------------------------------------------------------------------------------------
 * Snapshots
 * --------------------------------------------------------------------------------------- */

typedef struct prune_ctx {
    ami_store *st;
    uint64_t floor;
} prune_ctx;

/* Deletes operation log entries up to and including floor. */
static int prune_oplog(MDB_txn *txn, void *ctx, amc_error *err)
{
    (void)err;
    prune_ctx *pc = ctx;
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, pc->st->db_oplog, &cur);
    if (rc != 0)
        return rc;
    MDB_val k, v;
    rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    while (rc == 0 && k.mv_size == 8 && ami_get_be64_(k.mv_data) <= pc->floor) {
        rc = mdb_cursor_del(cur, 0);
        if (rc == 0)
            rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    if (rc != 0 && rc != MDB_NOTFOUND)
        return rc;
    return ami_meta_put_u64_(txn, pc->st, "oplog_floor", pc->floor);
}

amc_status ami_store_snapshot(ami_store *st, amc_error *err)
{
    pthread_mutex_lock(&st->write_mutex);
    amc_status s = AMC_OK;
    uint64_t floor = ami_store_seq(st);

    /* Every index with FAISS data gets a current snapshot; the oldest bounds the log. */
    for (int i = 0; s == AMC_OK && i < st->n_colls; i++) {
        ami_coll_ *coll = st->colls[i];
        for (int m = 0; s == AMC_OK && m < coll->spec.n_modalities; m++) {
            s = ami_index_snapshot_(st, coll, m, err);
            if (s == AMC_OK && coll->idx[m].faiss != NULL && coll->idx[m].snapshot_seq < floor)
                floor = coll->idx[m].snapshot_seq;
        }
    }
    if (st->build_floor < floor)
        floor = st->build_floor;
    if (s == AMC_OK) {
        prune_ctx pc = {st, floor};
        s = ami_write_txn_(st, prune_oplog, &pc, err);
    }
    if (s == AMC_OK)
        st->snapshot_seq = ami_store_seq(st);
    pthread_mutex_unlock(&st->write_mutex);
    return s;
}

/* ---------------------------------------------------------------------------------------
 * Connector reload
 * --------------------------------------------------------------------------------------- */

/* Re-projects every collection for conn and builds its new indices into fresh[];
 * *reprojected counts the collections whose LMDB vectors now come from conn. */
static amc_status prepare_reload(ami_store *st, const amc_connector *conn,
                                 int conn_mod[][AMC_MAX_MODALITIES], FaissIndex **fresh,
                                 int *reprojected, amc_error *err)
{
    for (int i = 0; i < st->n_colls; i++) {
        amc_status s = ami_coll_bind_(st, conn, st->colls[i], conn_mod[i], err);
        if (s != AMC_OK)
            return s;
    }
    for (int i = 0; i < st->n_colls; i++) {
        ami_coll_ *coll = st->colls[i];
        amc_status s = ami_reproject_(st, coll, conn, conn_mod[i], err);
        *reprojected += s == AMC_OK;
        for (int m = 0; s == AMC_OK && m < coll->spec.n_modalities; m++)
            s = ami_index_build_(st, coll, m, conn, conn_mod[i],
                                 &fresh[i * AMC_MAX_MODALITIES + m], err);
        if (s != AMC_OK)
            return s;
    }
    return AMC_OK;
}

amc_status ami_store_reload(ami_store *st, const amc_connector *conn, amc_error *err)
{
    if (conn == NULL)
        return amc_error_set(err, AMC_EINVAL, "ami_store_reload: conn is required");
    pthread_mutex_lock(&st->write_mutex);

    /* Re-project into LMDB and build the new index versions while searches go on with the
     * old ones. */
    int (*conn_mod)[AMC_MAX_MODALITIES] = calloc(256, sizeof *conn_mod);
    FaissIndex **fresh = calloc((size_t)256 * AMC_MAX_MODALITIES, sizeof *fresh);
    int reprojected = 0;
    amc_status s = fresh != NULL && conn_mod != NULL
                       ? prepare_reload(st, conn, conn_mod, fresh, &reprojected, err)
                       : amc_error_set(err, AMC_ENOMEM, "out of memory in reload");

    /* Switch the connector and every index at once. */
    if (s == AMC_OK) {
        pthread_rwlock_wrlock(&st->lock);
        st->conn = conn;
        amc_connector_fingerprint(conn, st->fingerprint);
        for (int i = 0; i < st->n_colls; i++) {
            ami_coll_ *coll = st->colls[i];
            memcpy(coll->conn_mod, conn_mod[i], sizeof conn_mod[i]);
            for (int m = 0; m < coll->spec.n_modalities; m++) {
                ami_index_swap_(st, coll, m, fresh[i * AMC_MAX_MODALITIES + m]);
                fresh[i * AMC_MAX_MODALITIES + m] = NULL;
            }
        }
        pthread_rwlock_unlock(&st->lock);
    }
    /* On failure, collections already re-projected go back to the old connector's vectors
     * (their indices were never swapped). Should that fail too, the next open re-projects
     * them, because their recorded fingerprint differs from the connector's. */
    for (int i = 0; s != AMC_OK && i < reprojected; i++)
        ami_reproject_(st, st->colls[i], st->conn, st->colls[i]->conn_mod, NULL);
    for (int i = 0; fresh != NULL && i < 256 * AMC_MAX_MODALITIES; i++)
        faiss_Index_free(fresh[i]);
    free(fresh);
    free(conn_mod);
    pthread_mutex_unlock(&st->write_mutex);
    return s;
}
