/* FAISS indices of the store: creation from an index_factory string, incremental updates
 * after each commit, rebuilds from LMDB, snapshot files and recovery at open.
 *
 * Index life cycle per (collection, modality):
 *   1. Every vector goes into FAISS with its vid as label. Specs that do not start with "IVF"
 *      (or "IDMap") are wrapped as "IDMap,<spec>" so that labels can be chosen.
 *   2. An index that needs training (IVF, PQ) stays absent until train_min vectors are
 *      stored: max(39 * nlist, 256) for IVF<nlist>, 9984 otherwise (39 points per centroid is
 *      the minimum FAISS's k-means accepts without a warning, 256 centroids for PQ). Until then
 *      searches scan the stored vectors exactly. Once enough are stored, the index is trained
 *      on all of them and filled.
 *   3. Deletes call remove_ids, except for graph indices (HNSW, NSG), which cannot remove:
 *      their deleted entries stay as tombstones that searches skip (their vecs entry is gone),
 *      and the index is rebuilt once tombstones exceed tombstone_ratio of it.
 *   4. A FAISS failure while applying an update marks the index broken: searches fall back to
 *      the exact scan and the next snapshot rebuilds it.
 *
 * Snapshot file <dir>/snapshots/c<cid>-m<modality>.snap: a 64-byte header (magic
 * "AMISNAP1", u32 version, u32 dim, u64 seq, u64 tombstones, u64 ntotal, 16-byte connector
 * fingerprint, 8 bytes reserved), then the FAISS index as faiss_write_index() writes it. The
 * snapshot contains every operation up to seq. */
#include "index/store_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SNAP_MAGIC "AMISNAP1"
#define SNAP_VERSION 1u
#define ADD_CHUNK 4096

typedef struct snap_header {
    char magic[8];
    uint32_t version;
    uint32_t dim;
    uint64_t seq;
    uint64_t dead;
    uint64_t ntotal;
    char fingerprint[16];
    char reserved[8];
} snap_header;

/* ---------------------------------------------------------------------------------------
 * Creation
 * --------------------------------------------------------------------------------------- */

static int starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

amc_status ami_index_init_(ami_index_ *idx, const char *spec, int dim, amc_error *err)
{
    memset(idx, 0, sizeof *idx);
    pthread_rwlock_init(&idx->param_lock, NULL);
    idx->dim = dim;
    if (spec[0] == '\0')
        spec = "Flat";
    if (starts_with(spec, "IVF") || starts_with(spec, "IDMap"))
        snprintf(idx->factory, sizeof idx->factory, "%s", spec);
    else
        snprintf(idx->factory, sizeof idx->factory, "IDMap,%s", spec);
    idx->can_remove = strstr(spec, "HNSW") == NULL && strstr(spec, "NSG") == NULL;
    if (starts_with(spec, "IVF"))
        idx->nlist = atoi(spec + 3);

    /* Building the empty index checks the spec and tells whether it needs training. */
    FaissIndex *probe = NULL;
    if (faiss_index_factory(&probe, dim, idx->factory, METRIC_INNER_PRODUCT) != 0) {
        const char *msg = faiss_get_last_error();
        return amc_error_set(err, AMC_EINVAL, "index spec \"%s\" rejected by FAISS: %s; use an "
                             "index_factory string such as \"Flat\", \"HNSW32\" or "
                             "\"IVF1024,SQ8\"", spec, msg != NULL ? msg : "unknown error");
    }
    idx->needs_training = !faiss_Index_is_trained(probe);
    if (idx->needs_training) {
        idx->train_min = idx->nlist > 0 ? (uint64_t)idx->nlist * 39 : 9984;
        if (idx->train_min < 256)
            idx->train_min = 256;
        faiss_Index_free(probe);
    } else {
        idx->faiss = probe;
    }
    return AMC_OK;
}

void ami_index_destroy_(ami_index_ *idx)
{
    faiss_Index_free(idx->faiss);
    idx->faiss = NULL;
    pthread_rwlock_destroy(&idx->param_lock);
}

int ami_index_searchable_(const ami_coll_ *coll, int m)
{
    const ami_index_ *idx = &coll->idx[m];
    if (idx->broken)
        return 0;
    return idx->faiss != NULL ||
           (idx->needs_training && coll->stats.vectors[m] < idx->train_min);
}

/* ---------------------------------------------------------------------------------------
 * Building from LMDB
 * --------------------------------------------------------------------------------------- */

/* Reads every stored vector of (coll, m): *vids [n] and *x [n, dim], malloc'd. */
static amc_status read_vectors(ami_store *st, const ami_coll_ *coll, int m, int dim,
                               int64_t **vids, float **x, size_t *n, amc_error *err)
{
    *vids = NULL;
    *x = NULL;
    *n = 0;
    MDB_txn *txn;
    amc_status s = ami_read_begin_(st, &txn, err);
    if (s != AMC_OK)
        return s;
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, st->db_vecs, &cur);
    if (rc != 0) {
        mdb_txn_abort(txn);
        return ami_lmdb_status_(rc, "open vector cursor", err);
    }

    unsigned char prefix[5];
    ami_put_be32_(prefix, coll->cid);
    prefix[4] = (unsigned char)m;
    MDB_val k = {sizeof prefix, prefix}, v;
    size_t cap = 0, row = sizeof(float) * (size_t)dim;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != 13 || memcmp(k.mv_data, prefix, sizeof prefix) != 0)
            break;
        if (v.mv_size != 8 + row) {
            s = amc_error_set(err, AMC_EFORMAT, "collection %s: stored vector has %zu bytes, "
                              "expected %zu", coll->spec.name, v.mv_size, 8 + row);
            break;
        }
        if (*n == cap) {
            cap = cap ? cap * 2 : 1024;
            int64_t *nv = realloc(*vids, cap * sizeof **vids);
            float *nx = nv != NULL ? realloc(*x, cap * row) : NULL;
            if (nv != NULL)
                *vids = nv;
            if (nx == NULL) {
                s = amc_error_set(err, AMC_ENOMEM, "out of memory reading %zu vectors", cap);
                break;
            }
            *x = nx;
        }
        (*vids)[*n] = (int64_t)ami_get_be64_((const unsigned char *)k.mv_data + 5);
        memcpy(*x + *n * (size_t)dim, (const char *)v.mv_data + 8, row);
        (*n)++;
    }
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    if (s == AMC_OK && rc != 0 && rc != MDB_NOTFOUND)
        s = ami_lmdb_status_(rc, "read vectors", err);
    if (s != AMC_OK) {
        free(*vids);
        free(*x);
        *vids = NULL;
        *x = NULL;
    }
    return s;
}

static amc_status faiss_status(const char *what, const ami_coll_ *coll, int m, amc_error *err)
{
    const char *msg = faiss_get_last_error();
    return amc_error_set(err, AMC_EINTERNAL, "FAISS %s failed for collection %s modality %s: %s",
                         what, coll->spec.name, coll->spec.modalities[m],
                         msg != NULL ? msg : "unknown error");
}

static int add_chunked(FaissIndex *faiss, size_t n, const float *x, const int64_t *vids, int dim)
{
    for (size_t i = 0; i < n; i += ADD_CHUNK) {
        size_t part = n - i < ADD_CHUNK ? n - i : ADD_CHUNK;
        int rc = faiss_Index_add_with_ids(faiss, (idx_t)part, x + i * (size_t)dim, vids + i);
        if (rc != 0)
            return rc;
    }
    return 0;
}

amc_status ami_index_build_(ami_store *st, const ami_coll_ *coll, int m,
                            const amc_connector *conn, const int *conn_mod, FaissIndex **out,
                            amc_error *err)
{
    *out = NULL;
    const ami_index_ *idx = &coll->idx[m];
    int dim = ami_index_dim_(conn, coll->spec.space, conn_mod[m]);
    int64_t *vids;
    float *x;
    size_t n;
    amc_status s = read_vectors(st, coll, m, dim, &vids, &x, &n, err);
    if (s != AMC_OK)
        return s;

    /* An index that needs training stays absent until enough vectors exist. */
    if (idx->needs_training && n < idx->train_min) {
        free(vids);
        free(x);
        return AMC_OK;
    }
    FaissIndex *faiss = NULL;
    if (faiss_index_factory(&faiss, dim, idx->factory, METRIC_INNER_PRODUCT) != 0)
        s = faiss_status("index_factory", coll, m, err);
    if (s == AMC_OK && idx->needs_training && faiss_Index_train(faiss, (idx_t)n, x) != 0)
        s = faiss_status("train", coll, m, err);
    if (s == AMC_OK && add_chunked(faiss, n, x, vids, dim) != 0)
        s = faiss_status("add_with_ids", coll, m, err);
    free(vids);
    free(x);
    if (s != AMC_OK) {
        faiss_Index_free(faiss);
        return s;
    }
    *out = faiss;
    return AMC_OK;
}

void ami_index_swap_(ami_store *st, ami_coll_ *coll, int m, FaissIndex *faiss)
{
    ami_index_ *idx = &coll->idx[m];
    faiss_Index_free(idx->faiss);
    idx->faiss = faiss;
    idx->dim = ami_index_dim_(st->conn, coll->spec.space, coll->conn_mod[m]);
    idx->dead = 0;
    idx->broken = 0;
    idx->dirty = 1;
    idx->nprobe = 0;
    idx->ef_search = 0;
}

amc_status ami_index_rebuild_(ami_store *st, ami_coll_ *coll, int m, amc_error *err)
{
    FaissIndex *faiss = NULL;
    amc_status s = ami_index_build_(st, coll, m, st->conn, coll->conn_mod, &faiss, err);
    if (s != AMC_OK)
        return s;
    pthread_rwlock_wrlock(&st->lock);
    ami_index_swap_(st, coll, m, faiss);
    pthread_rwlock_unlock(&st->lock);
    return AMC_OK;
}

/* ---------------------------------------------------------------------------------------
 * Incremental updates
 * --------------------------------------------------------------------------------------- */

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int contains(const int64_t *sorted, int n, int64_t v)
{
    return n > 0 && bsearch(&v, sorted, (size_t)n, sizeof v, cmp_i64) != NULL;
}

/* Marks the index broken after a failed FAISS call; caller holds the exclusive lock. */
static void mark_broken(ami_coll_ *coll, int m)
{
    const char *msg = faiss_get_last_error();
    fprintf(stderr, "lvl=error event=index_update_failed collection=%s modality=%s error=\"%s\"\n",
            coll->spec.name, coll->spec.modalities[m], msg != NULL ? msg : "unknown");
    faiss_Index_free(coll->idx[m].faiss);
    coll->idx[m].faiss = NULL;
    coll->idx[m].broken = 1;
}

/* Applies adds and deletes to faiss; both lists are already free of vids in the other. */
static void apply_locked(ami_store *st, ami_coll_ *coll, int m, int n_add, const int64_t *vids,
                         const float *vecs, int n_del, const int64_t *del_vids)
{
    ami_index_ *idx = &coll->idx[m];
    pthread_rwlock_wrlock(&st->lock);
    if (n_add > 0 && faiss_Index_add_with_ids(idx->faiss, n_add, vecs, vids) != 0)
        mark_broken(coll, m);
    if (idx->faiss != NULL && n_del > 0) {
        if (idx->can_remove) {
            FaissIDSelectorBatch *sel = NULL;
            if (faiss_IDSelectorBatch_new(&sel, (size_t)n_del, del_vids) != 0 ||
                faiss_Index_remove_ids(idx->faiss, (FaissIDSelector *)sel, NULL) != 0)
                mark_broken(coll, m);
            faiss_IDSelector_free((FaissIDSelector *)sel);
        } else {
            idx->dead += (uint64_t)n_del;
        }
    }
    idx->dirty = 1;
    pthread_rwlock_unlock(&st->lock);
}

void ami_index_apply_(ami_store *st, ami_coll_ *coll, int m, int n_add, const int64_t *add_vids,
                      const float *add_vecs, int n_del, const int64_t *del_vids)
{
    ami_index_ *idx = &coll->idx[m];
    if (idx->broken || (n_add == 0 && n_del == 0))
        return;

    /* Not built yet: train and fill from LMDB once enough vectors are stored. */
    if (idx->faiss == NULL) {
        if (idx->needs_training && coll->stats.vectors[m] >= idx->train_min) {
            amc_error err;
            if (ami_index_rebuild_(st, coll, m, &err) != AMC_OK)
                fprintf(stderr, "lvl=error event=index_train_failed collection=%s modality=%s "
                        "error=\"%s\"\n", coll->spec.name, coll->spec.modalities[m], err.msg);
        }
        return;
    }

    /* A vid added and deleted within the same batch never reaches FAISS. */
    int64_t *sorted_add = malloc(sizeof(int64_t) * (size_t)(n_add + 1));
    int64_t *sorted_del = malloc(sizeof(int64_t) * (size_t)(n_del + 1));
    int64_t *keep_ids = malloc(sizeof(int64_t) * (size_t)(n_add + 1));
    int64_t *keep_del = malloc(sizeof(int64_t) * (size_t)(n_del + 1));
    float *keep_vecs = malloc(sizeof(float) * (size_t)idx->dim * (size_t)(n_add + 1));
    if (sorted_add == NULL || sorted_del == NULL || keep_ids == NULL || keep_del == NULL ||
        keep_vecs == NULL) {
        pthread_rwlock_wrlock(&st->lock);
        mark_broken(coll, m);
        pthread_rwlock_unlock(&st->lock);
        goto done;
    }
    memcpy(sorted_add, add_vids, sizeof(int64_t) * (size_t)n_add);
    memcpy(sorted_del, del_vids, sizeof(int64_t) * (size_t)n_del);
    qsort(sorted_add, (size_t)n_add, sizeof(int64_t), cmp_i64);
    qsort(sorted_del, (size_t)n_del, sizeof(int64_t), cmp_i64);
    int kept = 0, kept_del = 0;
    for (int i = 0; i < n_add; i++) {
        if (contains(sorted_del, n_del, add_vids[i]))
            continue;
        keep_ids[kept] = add_vids[i];
        memcpy(keep_vecs + (size_t)kept * (size_t)idx->dim, add_vecs + (size_t)i * (size_t)idx->dim,
               sizeof(float) * (size_t)idx->dim);
        kept++;
    }
    for (int i = 0; i < n_del; i++)
        if (!contains(sorted_add, n_add, del_vids[i]))
            keep_del[kept_del++] = del_vids[i];
    apply_locked(st, coll, m, kept, keep_ids, keep_vecs, kept_del, keep_del);

    /* Graph indices: rebuild once tombstones pass the configured share. */
    if (idx->faiss != NULL && !idx->can_remove &&
        (double)idx->dead > st->opts.tombstone_ratio * (double)faiss_Index_ntotal(idx->faiss)) {
        amc_error err;
        /* TODO: rebuild HNSW in a background thread; this blocks the writer meanwhile. */
        if (ami_index_rebuild_(st, coll, m, &err) != AMC_OK)
            fprintf(stderr, "lvl=error event=index_rebuild_failed collection=%s modality=%s "
                    "error=\"%s\"\n", coll->spec.name, coll->spec.modalities[m], err.msg);
    }
done:
    free(sorted_add);
    free(sorted_del);
    free(keep_ids);
    free(keep_del);
    free(keep_vecs);
}

/* ---------------------------------------------------------------------------------------
 * Snapshots
 * --------------------------------------------------------------------------------------- */

void ami_snapshot_path_(const ami_store *st, uint32_t cid, int m, char *path, size_t size)
{
    snprintf(path, size, "%s/snapshots/c%08x-m%d.snap", st->dir, (unsigned)cid, m);
}

static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

static amc_status write_snapshot_file(ami_store *st, ami_coll_ *coll, int m, const char *path,
                                      amc_error *err)
{
    ami_index_ *idx = &coll->idx[m];
    char tmp[4300];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (f == NULL)
        return amc_error_set(err, AMC_EIO, "cannot create %s: %s", tmp, strerror(errno));

    snap_header h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, SNAP_MAGIC, 8);
    h.version = SNAP_VERSION;
    h.dim = (uint32_t)idx->dim;
    h.seq = ami_store_seq(st);
    h.dead = idx->dead;
    h.ntotal = (uint64_t)faiss_Index_ntotal(idx->faiss);
    memcpy(h.fingerprint, coll->fingerprint, 16);

    /* Temporary file, fsync, rename, fsync of the directory. */
    int ok = fwrite(&h, sizeof h, 1, f) == 1;
    pthread_rwlock_rdlock(&idx->param_lock);
    ok = ok && faiss_write_index(idx->faiss, f) == 0;
    pthread_rwlock_unlock(&idx->param_lock);
    ok = ok && fflush(f) == 0 && fsync(fileno(f)) == 0;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        const char *msg = faiss_get_last_error();
        amc_error_set(err, errno == ENOSPC ? AMC_EFULL : AMC_EIO, "cannot write snapshot %s: %s",
                      path, errno != 0 ? strerror(errno) : (msg ? msg : "write failed"));
        unlink(tmp);
        return err != NULL ? err->code : AMC_EIO;
    }
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/snapshots", st->dir);
    fsync_dir(dir);
    idx->snapshot_seq = h.seq;
    idx->dirty = 0;
    return AMC_OK;
}

amc_status ami_index_snapshot_(ami_store *st, ami_coll_ *coll, int m, amc_error *err)
{
    ami_index_ *idx = &coll->idx[m];
    char path[4200];
    ami_snapshot_path_(st, coll->cid, m, path, sizeof path);
    if (idx->broken) {
        amc_status s = ami_index_rebuild_(st, coll, m, err);
        if (s != AMC_OK)
            return s;
    }
    if (idx->faiss == NULL) {
        unlink(path);
        idx->snapshot_seq = 0;
        return AMC_OK;
    }
    if (!idx->dirty && access(path, F_OK) == 0)
        return AMC_OK;
    errno = 0;
    return write_snapshot_file(st, coll, m, path, err);
}

/* ---------------------------------------------------------------------------------------
 * Recovery at open
 * --------------------------------------------------------------------------------------- */

/* Loads the snapshot of (coll, m) when it is usable: right magic, version, dim and
 * fingerprint, and a sequence the operation log can still be replayed from. */
static void load_snapshot(ami_store *st, ami_coll_ *coll, int m, uint64_t floor)
{
    ami_index_ *idx = &coll->idx[m];
    char path[4200];
    ami_snapshot_path_(st, coll->cid, m, path, sizeof path);
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return;
    snap_header h;
    FaissIndex *faiss = NULL;
    int ok = fread(&h, sizeof h, 1, f) == 1 && memcmp(h.magic, SNAP_MAGIC, 8) == 0 &&
             h.version == SNAP_VERSION && h.dim == (uint32_t)idx->dim &&
             memcmp(h.fingerprint, coll->fingerprint, 16) == 0 && h.seq <= ami_store_seq(st) &&
             h.seq >= floor && faiss_read_index(f, 0, &faiss) == 0 &&
             faiss_Index_d(faiss) == idx->dim &&
             (uint64_t)faiss_Index_ntotal(faiss) == h.ntotal;
    fclose(f);
    if (!ok) {
        faiss_Index_free(faiss);
        fprintf(stderr, "lvl=warn event=snapshot_unusable path=%s action=rebuild\n", path);
        return;
    }
    faiss_Index_free(idx->faiss);
    idx->faiss = faiss;
    idx->dead = h.dead;
    idx->snapshot_seq = h.seq;
    idx->from_snapshot = 1;
}

typedef struct op_list {
    int64_t *add, *del;
    int n_add, n_del, cap_add, cap_del;
} op_list;

static int push(int64_t **arr, int *n, int *cap, int64_t v)
{
    if (*n == *cap) {
        int next = *cap ? *cap * 2 : 64;
        int64_t *grown = realloc(*arr, sizeof(int64_t) * (size_t)next);
        if (grown == NULL)
            return -1;
        *arr = grown;
        *cap = next;
    }
    (*arr)[(*n)++] = v;
    return 0;
}

/* Reads the operation log after from into lists[coll index * AMC_MAX_MODALITIES + m], only for
 * indices loaded from a snapshot older than the operation. */
static amc_status collect_ops(ami_store *st, MDB_txn *txn, uint64_t from, op_list *lists,
                              amc_error *err)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, st->db_oplog, &cur);
    if (rc != 0)
        return ami_lmdb_status_(rc, "open operation log", err);
    unsigned char start[8];
    ami_put_be64_(start, from + 1);
    MDB_val k = {8, start}, v;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != 8 || v.mv_size != 14)
            continue;
        uint64_t seq = ami_get_be64_(k.mv_data);
        const unsigned char *op = v.mv_data;
        uint32_t cid = ami_get_be32_(op);
        int m = op[4], kind = op[5];
        int64_t vid = (int64_t)ami_get_be64_(op + 6);
        for (int i = 0; i < st->n_colls; i++) {
            ami_coll_ *coll = st->colls[i];
            if (coll->cid != cid || m >= coll->spec.n_modalities ||
                !coll->idx[m].from_snapshot || seq <= coll->idx[m].snapshot_seq)
                continue;
            op_list *l = &lists[i * AMC_MAX_MODALITIES + m];
            int bad = kind == AMI_OP_ADD ? push(&l->add, &l->n_add, &l->cap_add, vid)
                                         : push(&l->del, &l->n_del, &l->cap_del, vid);
            if (bad) {
                mdb_cursor_close(cur);
                return amc_error_set(err, AMC_ENOMEM, "out of memory replaying the log");
            }
        }
    }
    mdb_cursor_close(cur);
    if (rc != MDB_NOTFOUND)
        return ami_lmdb_status_(rc, "read operation log", err);
    return AMC_OK;
}

/* Replays l onto a loaded index: adds whose vector is gone were deleted later, and the
 * delete that removed them is in l too, so both are dropped by ami_index_apply_(). */
static amc_status replay(ami_store *st, MDB_txn *txn, ami_coll_ *coll, int m, op_list *l,
                         amc_error *err)
{
    int dim = coll->idx[m].dim;
    float *vecs = malloc(sizeof(float) * (size_t)dim * (size_t)(l->n_add + 1));
    int64_t *vids = malloc(sizeof(int64_t) * (size_t)(l->n_add + 1));
    if (vecs == NULL || vids == NULL) {
        free(vecs);
        free(vids);
        return amc_error_set(err, AMC_ENOMEM, "out of memory replaying the log");
    }
    int n = 0;
    for (int i = 0; i < l->n_add; i++) {
        unsigned char key[13];
        ami_put_be32_(key, coll->cid);
        key[4] = (unsigned char)m;
        ami_put_be64_(key + 5, (uint64_t)l->add[i]);
        MDB_val k = {sizeof key, key}, v;
        if (mdb_get(txn, st->db_vecs, &k, &v) != 0 || v.mv_size != 8 + sizeof(float) * (size_t)dim)
            continue;
        vids[n] = l->add[i];
        memcpy(vecs + (size_t)n * (size_t)dim, (const char *)v.mv_data + 8,
               sizeof(float) * (size_t)dim);
        n++;
    }

    /* Adds without a vector were deleted later; their deletes cancel against l->add. */
    ami_index_apply_(st, coll, m, n, vids, vecs, 0, NULL);
    if (l->n_del > 0) {
        int64_t *dels = malloc(sizeof(int64_t) * (size_t)l->n_del);
        int n_del = 0;
        qsort(l->add, (size_t)l->n_add, sizeof(int64_t), cmp_i64);
        for (int i = 0; dels != NULL && i < l->n_del; i++)
            if (!contains(l->add, l->n_add, l->del[i]))
                dels[n_del++] = l->del[i];
        if (dels != NULL)
            ami_index_apply_(st, coll, m, 0, NULL, NULL, n_del, dels);
        free(dels);
    }
    free(vecs);
    free(vids);
    coll->idx[m].dirty = l->n_add > 0 || l->n_del > 0;
    return AMC_OK;
}

/* Loads snapshots and replays the log; returns the earliest snapshot sequence in *from. */
static amc_status load_and_replay(ami_store *st, MDB_txn *txn, uint64_t floor, amc_error *err)
{
    uint64_t from = UINT64_MAX;
    for (int i = 0; i < st->n_colls; i++)
        for (int m = 0; m < st->colls[i]->spec.n_modalities; m++) {
            load_snapshot(st, st->colls[i], m, floor);
            ami_index_ *idx = &st->colls[i]->idx[m];
            if (idx->from_snapshot && idx->snapshot_seq < from)
                from = idx->snapshot_seq;
        }
    if (from == UINT64_MAX)
        return AMC_OK;

    op_list *lists = calloc((size_t)st->n_colls * AMC_MAX_MODALITIES + 1, sizeof *lists);
    if (lists == NULL)
        return amc_error_set(err, AMC_ENOMEM, "out of memory replaying the log");
    amc_status s = collect_ops(st, txn, from, lists, err);
    for (int i = 0; s == AMC_OK && i < st->n_colls; i++)
        for (int m = 0; s == AMC_OK && m < st->colls[i]->spec.n_modalities; m++)
            if (st->colls[i]->idx[m].from_snapshot)
                s = replay(st, txn, st->colls[i], m, &lists[i * AMC_MAX_MODALITIES + m], err);
    for (int i = 0; i < st->n_colls * AMC_MAX_MODALITIES; i++) {
        free(lists[i].add);
        free(lists[i].del);
    }
    free(lists);
    return s;
}

amc_status ami_indices_recover_(ami_store *st, amc_error *err)
{
    MDB_txn *txn;
    amc_status s = ami_read_begin_(st, &txn, err);
    if (s != AMC_OK)
        return s;
    uint64_t floor = 0;
    int rc = ami_meta_get_u64_(txn, st, "oplog_floor", &floor);
    if (rc != 0) {
        mdb_txn_abort(txn);
        return ami_lmdb_status_(rc, "read oplog floor", err);
    }
    s = load_and_replay(st, txn, floor, err);
    mdb_txn_abort(txn);
    if (s != AMC_OK)
        return s;

    /* Any index without a usable snapshot, or whose count disagrees with LMDB after the
     * replay, is rebuilt from the stored vectors. */
    for (int i = 0; s == AMC_OK && i < st->n_colls; i++) {
        ami_coll_ *coll = st->colls[i];
        for (int m = 0; s == AMC_OK && m < coll->spec.n_modalities; m++) {
            ami_index_ *idx = &coll->idx[m];
            int loaded = idx->from_snapshot && idx->faiss != NULL;
            idx->from_snapshot = 0;
            if (loaded && (uint64_t)faiss_Index_ntotal(idx->faiss) ==
                              coll->stats.vectors[m] + idx->dead)
                continue;
            if (loaded)
                fprintf(stderr, "lvl=warn event=snapshot_stale collection=%s modality=%s "
                        "action=rebuild\n", coll->spec.name, coll->spec.modalities[m]);
            s = ami_index_rebuild_(st, coll, m, err);
        }
    }
    return s;
}
