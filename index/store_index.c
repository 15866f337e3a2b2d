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
 * fingerprint, u64 FNV-1a checksum of the rest), then the FAISS index as faiss_write_index()
 * writes it. The snapshot contains every operation up to seq. The checksum is verified before
 * FAISS reads the index, because faiss::read_index leaks memory on malformed input (seen with
 * Debian's FAISS 1.7.3). */
#include "index/store_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/fault.h"

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
    uint64_t checksum;           /* FNV-1a 64 of every byte after the header */
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
    idx->async = !idx->can_remove;
    if (starts_with(spec, "IVF"))
        idx->nlist = atoi(spec + 3);

    /* Building the empty index checks the spec and shows whether it needs training. */
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

int ami_index_searchable_(ami_store *st, const ami_coll_ *coll, int m)
{
    const ami_index_ *idx = &coll->idx[m];
    if (idx->broken || idx->building)
        return 0;
    if (idx->async && idx->faiss != NULL && idx->applied_seq < ami_store_seq(st))
        return 0;
    return idx->faiss != NULL ||
           (idx->needs_training && coll->stats.vectors[m] < idx->train_min);
}

/* ---------------------------------------------------------------------------------------
 * Building from LMDB
 * --------------------------------------------------------------------------------------- */

amc_status ami_vectors_read_(ami_store *st, MDB_txn *txn, uint32_t cid, int m, int dim,
                             int64_t **vids, float **x, size_t *n, amc_error *err)
{
    *vids = NULL;
    *x = NULL;
    *n = 0;
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, st->db_vecs, &cur);
    if (rc != 0)
        return ami_lmdb_status_(rc, "open vector cursor", err);

    unsigned char prefix[5];
    ami_put_be32_(prefix, cid);
    prefix[4] = (unsigned char)m;
    MDB_val k = {sizeof prefix, prefix}, v;
    size_t cap = 0, row = sizeof(float) * (size_t)dim;
    amc_status s = AMC_OK;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != 13 || memcmp(k.mv_data, prefix, sizeof prefix) != 0)
            break;
        if (v.mv_size != 8 + row) {
            s = amc_error_set(err, AMC_EFORMAT, "stored vector has %zu bytes, expected %zu",
                              v.mv_size, 8 + row);
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

static amc_status faiss_status(const char *what, amc_error *err)
{
    const char *msg = faiss_get_last_error();
    return amc_error_set(err, AMC_EINTERNAL, "FAISS %s failed: %s", what,
                         msg != NULL ? msg : "unknown error");
}

amc_status ami_faiss_build_(const ami_build_spec_ *spec, size_t n, const float *x,
                            const int64_t *vids, const atomic_int *cancel, FaissIndex **out,
                            amc_error *err)
{
    *out = NULL;

    /* An index that needs training stays absent until enough vectors exist. */
    if (spec->needs_training && n < spec->train_min)
        return AMC_OK;
    FaissIndex *faiss = NULL;
    amc_status s = AMC_OK;
    if (faiss_index_factory(&faiss, spec->dim, spec->factory, METRIC_INNER_PRODUCT) != 0)
        s = faiss_status("index_factory", err);
    if (s == AMC_OK && spec->needs_training && faiss_Index_train(faiss, (idx_t)n, x) != 0)
        s = faiss_status("train", err);

    /* Chunks keep a cancelled build (store closing) short. */
    for (size_t i = 0; s == AMC_OK && i < n; i += ADD_CHUNK) {
        size_t part = n - i < ADD_CHUNK ? n - i : ADD_CHUNK;
        if (cancel != NULL && atomic_load(cancel))
            s = amc_error_set(err, AMC_EBUSY, "index build cancelled: the store is closing");
        else if (faiss_Index_add_with_ids(faiss, (idx_t)part, x + i * (size_t)spec->dim,
                                          vids + i) != 0)
            s = faiss_status("add_with_ids", err);
    }
    if (s != AMC_OK) {
        faiss_Index_free(faiss);
        return s;
    }
    *out = faiss;
    return AMC_OK;
}

void ami_build_spec_fill_(ami_build_spec_ *spec, const ami_coll_ *coll, int m, int dim)
{
    const ami_index_ *idx = &coll->idx[m];
    spec->cid = coll->cid;
    spec->m = m;
    spec->dim = dim;
    snprintf(spec->factory, sizeof spec->factory, "%s", idx->factory);
    spec->needs_training = idx->needs_training;
    spec->train_min = idx->train_min;
    spec->can_remove = idx->can_remove;
}

amc_status ami_index_build_(ami_store *st, const ami_coll_ *coll, int m,
                            const amc_connector *conn, const int *conn_mod, FaissIndex **out,
                            amc_error *err)
{
    *out = NULL;
    ami_build_spec_ spec;
    ami_build_spec_fill_(&spec, coll, m, ami_index_dim_(conn, coll->spec.space, conn_mod[m]));
    MDB_txn *txn;
    amc_status s = ami_read_begin_(st, &txn, err);
    if (s != AMC_OK)
        return s;
    int64_t *vids;
    float *x;
    size_t n;
    s = ami_vectors_read_(st, txn, coll->cid, m, spec.dim, &vids, &x, &n, err);
    mdb_txn_abort(txn);
    if (s == AMC_OK)
        s = ami_faiss_build_(&spec, n, x, vids, NULL, out, err);
    free(vids);
    free(x);
    if (s != AMC_OK)
        amc_error_prefix(err, "collection %s modality %s", coll->spec.name,
                         coll->spec.modalities[m]);
    return s;
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
    idx->generation++;
    idx->applied_seq = ami_store_seq(st);
    idx->indexed_upto = idx->applied_seq;
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
    if (n_add == 0 && n_del == 0)
        return;

    /* Graph indices catch up from the log in the builder thread, off the request path. The
     * builder is woken for every write, not only for writes to a graph index: a graph index
     * counts as caught up once its applied sequence reaches the store's, and writes to other
     * collections move the store's sequence too. */
    ami_builder_wake_(st);
    if (idx->async && idx->faiss != NULL)
        return;

    /* No index (untrained, failed or being built): a build reads LMDB and replays the log,
     * so these operations reach the index later. An IVF index is trained once enough
     * vectors are stored. */
    if (idx->faiss == NULL) {
        if (!idx->building && (idx->broken || (idx->needs_training &&
                                               coll->stats.vectors[m] >= idx->train_min)))
            ami_index_request_build_(st, coll, m);
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
    if (n_add > 0)
        memcpy(sorted_add, add_vids, sizeof(int64_t) * (size_t)n_add);
    if (n_del > 0)
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

    /* Graph indices are rebuilt in the background once tombstones pass the configured
     * share; a failed update is rebuilt the same way. */
    if (idx->broken ||
        (idx->faiss != NULL && !idx->can_remove &&
         (double)idx->dead > st->opts.tombstone_ratio * (double)faiss_Index_ntotal(idx->faiss)))
        if (!idx->building)
            ami_index_request_build_(st, coll, m);
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

/* FNV-1a 64 over the rest of f from its current position; -1 on a read error. */
static int checksum_rest(FILE *f, uint64_t *out)
{
    uint64_t h = 0xcbf29ce484222325ull;
    unsigned char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        for (size_t i = 0; i < n; i++)
            h = (h ^ buf[i]) * 0x100000001b3ull;
    *out = h;
    return ferror(f) ? -1 : 0;
}

static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0)
        return -1;
    int rc = AMC_FAULT(AMC_FAULT_FSYNC) ? -1 : fsync(fd);
    close(fd);
    return rc;
}

static amc_status write_snapshot_file(ami_store *st, ami_coll_ *coll, int m, const char *path,
                                      amc_error *err)
{
    ami_index_ *idx = &coll->idx[m];
    char tmp[4300];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w+b");
    if (f == NULL)
        return amc_error_set(err, AMC_EIO, "cannot create %s: %s", tmp, strerror(errno));

    /* The shared lock keeps the builder thread's catch-up out, so the header and the index
     * bytes describe the same state. */
    pthread_rwlock_rdlock(&st->lock);
    snap_header h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, SNAP_MAGIC, 8);
    h.version = SNAP_VERSION;
    h.dim = (uint32_t)idx->dim;
    h.seq = idx->async ? idx->applied_seq : ami_store_seq(st);
    h.dead = idx->dead;
    h.ntotal = (uint64_t)faiss_Index_ntotal(idx->faiss);
    memcpy(h.fingerprint, coll->fingerprint, 16);

    /* Temporary file with the checksum filled in last, fsync, rename, fsync of the
     * directory. */
    int ok = !AMC_FAULT(AMC_FAULT_WRITE) && fwrite(&h, sizeof h, 1, f) == 1;
    pthread_rwlock_rdlock(&idx->param_lock);
    ok = ok && faiss_write_index(idx->faiss, f) == 0;
    pthread_rwlock_unlock(&idx->param_lock);
    idx->dirty = 0;
    pthread_rwlock_unlock(&st->lock);
    ok = ok && fflush(f) == 0 && fseek(f, (long)sizeof h, SEEK_SET) == 0 &&
         checksum_rest(f, &h.checksum) == 0 && fseek(f, 0, SEEK_SET) == 0 &&
         fwrite(&h, sizeof h, 1, f) == 1;
    ok = ok && fflush(f) == 0 && !AMC_FAULT(AMC_FAULT_FSYNC) && fsync(fileno(f)) == 0;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        const char *msg = faiss_get_last_error();
        amc_error_set(err, errno == ENOSPC ? AMC_EFULL : AMC_EIO, "cannot write snapshot %s: %s",
                      path, errno != 0 ? strerror(errno) : (msg ? msg : "write failed"));
        unlink(tmp);
        idx->dirty = 1;
        return err != NULL ? err->code : AMC_EIO;
    }
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/snapshots", st->dir);
    fsync_dir(dir);
    idx->snapshot_seq = h.seq;
    return AMC_OK;
}

/* Rewrites the sequence in the header of an existing snapshot file; -1 when that fails. */
static int restamp_snapshot(const char *path, uint64_t seq)
{
    int fd = open(path, O_RDWR);
    if (fd < 0)
        return -1;
    int rc = !AMC_FAULT(AMC_FAULT_WRITE) &&
                     pwrite(fd, &seq, sizeof seq, offsetof(snap_header, seq)) == sizeof seq &&
                     !AMC_FAULT(AMC_FAULT_FSYNC) && fsync(fd) == 0
                 ? 0
                 : -1;
    close(fd);
    return rc;
}

amc_status ami_index_snapshot_(ami_store *st, ami_coll_ *coll, int m, amc_error *err)
{
    ami_index_ *idx = &coll->idx[m];
    char path[4200];
    ami_snapshot_path_(st, coll->cid, m, path, sizeof path);
    if (idx->broken && !idx->building)
        ami_index_request_build_(st, coll, m);
    if (idx->faiss == NULL) {
        unlink(path);
        idx->snapshot_seq = 0;
        return AMC_OK;
    }
    /* Unchanged since its snapshot: the file stays, and its header moves to the current
     * sequence so that pruning the log past its old sequence does not make it stale. */
    pthread_rwlock_rdlock(&st->lock);
    uint64_t current = idx->async ? idx->applied_seq : ami_store_seq(st);
    int clean = !idx->dirty && restamp_snapshot(path, current) == 0;
    pthread_rwlock_unlock(&st->lock);
    if (clean) {
        idx->snapshot_seq = current;
        return AMC_OK;
    }
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
    uint64_t sum = 0;
    FaissIndex *faiss = NULL;
    int ok = fread(&h, sizeof h, 1, f) == 1 && memcmp(h.magic, SNAP_MAGIC, 8) == 0 &&
             h.version == SNAP_VERSION && h.dim == (uint32_t)idx->dim &&
             memcmp(h.fingerprint, coll->fingerprint, 16) == 0 && h.seq <= ami_store_seq(st) &&
             h.seq >= floor && checksum_rest(f, &sum) == 0 && sum == h.checksum &&
             fseek(f, (long)sizeof h, SEEK_SET) == 0 && faiss_read_index(f, 0, &faiss) == 0 &&
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
    idx->applied_seq = h.seq;
    idx->indexed_upto = h.seq;
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
                !coll->idx[m].from_snapshot || coll->idx[m].async ||
                seq <= coll->idx[m].snapshot_seq)
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
        if (l->n_add > 0)
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
            if (idx->from_snapshot && !idx->async && idx->snapshot_seq < from)
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
            if (st->colls[i]->idx[m].from_snapshot && !st->colls[i]->idx[m].async)
                s = replay(st, txn, st->colls[i], m, &lists[i * AMC_MAX_MODALITIES + m], err);
    for (int i = 0; i < st->n_colls * AMC_MAX_MODALITIES; i++) {
        free(lists[i].add);
        free(lists[i].del);
    }
    free(lists);
    return s;
}

amc_status ami_tail_ops_(ami_store *st, MDB_txn *txn, const ami_build_spec_ *spec,
                         uint64_t after, int64_t **add, float **vecs, int *n_add,
                         int64_t **del, int *n_del, amc_error *err)
{
    /* The log after `after` for this index, as adds and deletes. */
    op_list l = {0};
    *add = *del = NULL;
    *vecs = NULL;
    *n_add = *n_del = 0;
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, st->db_oplog, &cur);
    if (rc != 0)
        return ami_lmdb_status_(rc, "open operation log", err);
    unsigned char start[8];
    ami_put_be64_(start, after + 1);
    MDB_val k = {8, start}, v;
    int bad = 0;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0 && !bad;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        const unsigned char *op = v.mv_data;
        if (k.mv_size != 8 || v.mv_size != 14 || ami_get_be32_(op) != spec->cid ||
            op[4] != spec->m)
            continue;
        int64_t vid = (int64_t)ami_get_be64_(op + 6);
        bad = op[5] == AMI_OP_ADD ? push(&l.add, &l.n_add, &l.cap_add, vid)
                                  : push(&l.del, &l.n_del, &l.cap_del, vid);
    }
    mdb_cursor_close(cur);
    amc_status s = AMC_OK;
    if (bad)
        s = amc_error_set(err, AMC_ENOMEM, "out of memory reading the log");
    else if (rc != 0 && rc != MDB_NOTFOUND)
        s = ami_lmdb_status_(rc, "read operation log", err);

    /* Adds that were deleted later cancel out; the others come with their vectors. */
    if (l.n_add > 0)
        qsort(l.add, (size_t)l.n_add, sizeof(int64_t), cmp_i64);
    if (l.n_del > 0)
        qsort(l.del, (size_t)l.n_del, sizeof(int64_t), cmp_i64);
    int64_t *dels = malloc(sizeof(int64_t) * (size_t)(l.n_del + 1));
    int kept_del = 0;
    for (int i = 0; dels != NULL && i < l.n_del; i++)
        if (!contains(l.add, l.n_add, l.del[i]))
            dels[kept_del++] = l.del[i];
    if (s == AMC_OK && dels == NULL)
        s = amc_error_set(err, AMC_ENOMEM, "out of memory reading the log");
    size_t row = sizeof(float) * (size_t)spec->dim;
    float *x = s == AMC_OK ? malloc(row * (size_t)(l.n_add + 1)) : NULL;
    if (s == AMC_OK && x == NULL)
        s = amc_error_set(err, AMC_ENOMEM, "out of memory reading the log");
    int kept = 0;
    for (int i = 0; s == AMC_OK && i < l.n_add; i++) {
        if (contains(l.del, l.n_del, l.add[i]))
            continue;
        unsigned char key[13];
        ami_put_be32_(key, spec->cid);
        key[4] = (unsigned char)spec->m;
        ami_put_be64_(key + 5, (uint64_t)l.add[i]);
        MDB_val vk = {sizeof key, key}, vv;
        if (mdb_get(txn, st->db_vecs, &vk, &vv) != 0 || vv.mv_size != 8 + row)
            continue;
        memcpy(x + (size_t)kept * (size_t)spec->dim, (const char *)vv.mv_data + 8, row);
        l.add[kept++] = l.add[i];
    }
    free(l.del);
    if (s != AMC_OK) {
        free(l.add);
        free(dels);
        free(x);
        return s;
    }
    *add = l.add;
    *n_add = kept;
    *vecs = x;
    *del = dels;
    *n_del = kept_del;
    return AMC_OK;
}

amc_status ami_replay_into_(ami_store *st, MDB_txn *txn, const ami_build_spec_ *spec,
                            uint64_t after, FaissIndex *faiss, uint64_t *dead, amc_error *err)
{
    int64_t *add, *del;
    float *vecs;
    int n_add, n_del;
    amc_status s = ami_tail_ops_(st, txn, spec, after, &add, &vecs, &n_add, &del, &n_del, err);
    if (s == AMC_OK && n_add > 0 && faiss_Index_add_with_ids(faiss, n_add, vecs, add) != 0)
        s = faiss_status("add_with_ids", err);
    if (s == AMC_OK && n_del > 0 && spec->can_remove) {
        FaissIDSelectorBatch *sel = NULL;
        if (faiss_IDSelectorBatch_new(&sel, (size_t)n_del, del) != 0 ||
            faiss_Index_remove_ids(faiss, (FaissIDSelector *)sel, NULL) != 0)
            s = faiss_status("remove_ids", err);
        faiss_IDSelector_free((FaissIDSelector *)sel);
    }
    *dead = spec->can_remove ? 0 : (uint64_t)n_del;
    free(add);
    free(del);
    free(vecs);
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

            /* A graph index catches up in the builder thread, which checks its count then. */
            if (loaded && idx->async)
                continue;
            if (loaded && (uint64_t)faiss_Index_ntotal(idx->faiss) ==
                              coll->stats.vectors[m] + idx->dead)
                continue;
            if (loaded)
                fprintf(stderr, "lvl=warn event=snapshot_stale collection=%s modality=%s "
                        "action=rebuild\n", coll->spec.name, coll->spec.modalities[m]);

            /* An empty collection keeps its empty index; otherwise searches scan LMDB
             * exactly until the builder thread has the index. */
            if (!loaded && coll->stats.vectors[m] == 0)
                continue;
            faiss_Index_free(idx->faiss);
            idx->faiss = NULL;
            ami_index_request_build_(st, coll, m);
        }
    }
    return s;
}
