/* The background index builder: one thread per store that (re)builds FAISS indices from LMDB
 * off the request path. Builds are requested at open (an index without a usable snapshot),
 * when an IVF index has enough vectors to train, when a graph index has too many tombstones
 * and after a FAISS failure.
 *
 * A build, in four steps:
 *   1. Under write_mutex: pick a requested index, copy what the build needs and open an LMDB
 *      read transaction, whose view is exactly the committed sequence S.
 *   2. Without locks: read the stored vectors from that view and build (and train) the index.
 *      Searches meanwhile use the old index, or the exact scan when there is none; writers
 *      keep updating the old index.
 *   3. Under write_mutex again: replay the operations logged after S into the new index, so it
 *      is current (no write can commit meanwhile).
 *   4. Swap it in under the exclusive lock. A build whose index was swapped by someone else
 *      (a connector reload) or whose collection was dropped is discarded.
 * Snapshots keep the operation log after S while a build runs (build_floor). */
#include "index/store_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ami_builder_wake_(ami_store *st)
{
    pthread_mutex_lock(&st->build_mutex);
    st->build_pending = 1;
    pthread_cond_signal(&st->build_cond);
    pthread_mutex_unlock(&st->build_mutex);
}

void ami_index_request_build_(ami_store *st, ami_coll_ *coll, int m)
{
    pthread_rwlock_wrlock(&st->lock);
    coll->idx[m].building = 1;
    pthread_rwlock_unlock(&st->lock);
    pthread_mutex_lock(&st->build_mutex);
    st->build_pending = 1;
    pthread_cond_signal(&st->build_cond);
    pthread_mutex_unlock(&st->build_mutex);
}

/* Asks the builder for snapshots once snapshot_every operations passed since the last one.
 * Caller holds write_mutex. */
void ami_snapshot_due_(ami_store *st)
{
    if (ami_store_seq(st) - st->snapshot_seq < st->opts.snapshot_every)
        return;
    pthread_mutex_lock(&st->build_mutex);
    st->snapshot_pending = 1;
    pthread_cond_signal(&st->build_cond);
    pthread_mutex_unlock(&st->build_mutex);
}

/* Finds the collection with id cid; caller holds write_mutex. */
static ami_coll_ *find_cid(ami_store *st, uint32_t cid)
{
    for (int i = 0; i < st->n_colls; i++)
        if (st->colls[i]->cid == cid)
            return st->colls[i];
    return NULL;
}

/* Step 1: picks a requested build and opens its read transaction; 0 when there is none. */
static int pick_job(ami_store *st, ami_build_spec_ *spec, uint64_t *generation, MDB_txn **txn,
                    uint64_t *seq)
{
    for (int i = 0; i < st->n_colls; i++) {
        ami_coll_ *coll = st->colls[i];
        for (int m = 0; m < coll->spec.n_modalities; m++) {
            ami_index_ *idx = &coll->idx[m];
            if (!idx->building || idx->build_running)
                continue;
            if (ami_read_begin_(st, txn, NULL) != AMC_OK)
                return 0;
            ami_build_spec_fill_(spec, coll, m, idx->dim);
            *generation = idx->generation;
            *seq = ami_store_seq(st);
            idx->build_running = 1;
            st->build_floor = *seq;
            return 1;
        }
    }
    return 0;
}

/* Steps 3 and 4: catches faiss up with the log after seq and swaps it in. Takes ownership of
 * faiss. Caller holds write_mutex. */
static void finish_job(ami_store *st, const ami_build_spec_ *spec, uint64_t generation,
                       uint64_t seq, FaissIndex *faiss, amc_status built, amc_error *err)
{
    ami_coll_ *coll = find_cid(st, spec->cid);
    ami_index_ *idx = coll != NULL ? &coll->idx[spec->m] : NULL;
    if (idx == NULL || idx->generation != generation || idx->dim != spec->dim) {
        faiss_Index_free(faiss);
        if (idx != NULL)
            idx->build_running = 0;
        return;
    }

    /* A graph index is swapped in as of seq and catches up like any other; the rest replay
     * the log now (fast for them). */
    uint64_t dead = 0;
    amc_status s = built;
    MDB_txn *txn = NULL;
    int replay = faiss != NULL && !idx->async;
    if (s == AMC_OK && replay)
        s = ami_read_begin_(st, &txn, err);
    if (s == AMC_OK && replay) {
        s = ami_replay_into_(st, txn, spec, seq, faiss, &dead, err);
        mdb_txn_abort(txn);
    }
    if (s == AMC_OK) {
        pthread_rwlock_wrlock(&st->lock);
        ami_index_swap_(st, coll, spec->m, faiss);
        idx->dead = dead;
        if (idx->async)
            idx->applied_seq = idx->indexed_upto = seq;
        pthread_rwlock_unlock(&st->lock);
        fprintf(stderr, "lvl=info event=index_built collection=%s modality=%s vectors=%lld\n",
                coll->spec.name, coll->spec.modalities[spec->m],
                faiss != NULL ? (long long)faiss_Index_ntotal(faiss) : 0LL);
    } else {
        faiss_Index_free(faiss);
        if (s != AMC_EBUSY)
            fprintf(stderr, "lvl=error event=index_build_failed collection=%s modality=%s "
                    "error=\"%s\"\n", coll->spec.name, coll->spec.modalities[spec->m],
                    err->msg);
    }
    /* A failed build leaves the index broken when there is no old one to serve, so the next
     * write or snapshot requests another attempt. */
    pthread_rwlock_wrlock(&st->lock);
    if (s != AMC_OK && idx->faiss == NULL && s != AMC_EBUSY)
        idx->broken = 1;
    idx->building = 0;
    idx->build_running = 0;
    pthread_rwlock_unlock(&st->lock);
}

/* Runs one requested build; returns 0 when none was requested. */
static int build_one(ami_store *st)
{
    ami_build_spec_ spec;
    uint64_t generation, seq;
    MDB_txn *txn;
    pthread_mutex_lock(&st->write_mutex);
    int found = pick_job(st, &spec, &generation, &txn, &seq);
    pthread_mutex_unlock(&st->write_mutex);
    if (!found)
        return 0;

    /* Step 2, with no lock held. */
    amc_error err = {0};
    int64_t *vids = NULL;
    float *x = NULL;
    size_t n = 0;
    FaissIndex *faiss = NULL;
    amc_status s = ami_vectors_read_(st, txn, spec.cid, spec.m, spec.dim, &vids, &x, &n, &err);
    mdb_txn_abort(txn);
    if (s == AMC_OK)
        s = ami_faiss_build_(&spec, n, x, vids, &st->stopping, &faiss, &err);
    free(vids);
    free(x);

    pthread_mutex_lock(&st->write_mutex);
    finish_job(st, &spec, generation, seq, faiss, s, &err);
    st->build_floor = UINT64_MAX;
    pthread_mutex_unlock(&st->write_mutex);
    return 1;
}

/* ---------------------------------------------------------------------------------------
 * Catching graph indices up with the log
 * --------------------------------------------------------------------------------------- */

#define CATCH_UP_CHUNK 32        /* vectors added per exclusive-lock hold */

/* The index (cid, m) if it still has the given generation; caller holds the lock. */
static ami_index_ *find_index(ami_store *st, uint32_t cid, int m, uint64_t generation)
{
    ami_coll_ *coll = find_cid(st, cid);
    if (coll == NULL || coll->idx[m].generation != generation || coll->idx[m].faiss == NULL)
        return NULL;
    return &coll->idx[m];
}

/* Reads the log entries of (cid, m) in (after, *upto] from txn, where *upto is the last
 * sequence committed in the transaction's view. Adds come with their vectors, and deleted
 * adds cancel out. */
static amc_status read_tail(ami_store *st, MDB_txn *txn, uint32_t cid, int m, int dim,
                            uint64_t after, uint64_t *upto, int64_t **add, float **vecs,
                            int *n_add, int64_t **del, int *n_del, amc_error *err)
{
    *add = NULL;
    *vecs = NULL;
    *del = NULL;
    *n_add = *n_del = 0;
    int rc = ami_meta_get_u64_(txn, st, "seq", upto);
    if (rc != 0)
        return ami_lmdb_status_(rc, "read sequence", err);
    if (*upto <= after)
        return AMC_OK;
    ami_build_spec_ spec = {.cid = cid, .m = m, .dim = dim, .can_remove = 0};
    return ami_tail_ops_(st, txn, &spec, after, add, vecs, n_add, del, n_del, err);
}

/* Applies the log after applied_seq to one graph index; returns 1 when it made progress. */
static int catch_up(ami_store *st, uint32_t cid, int m)
{
    pthread_rwlock_rdlock(&st->lock);
    ami_coll_ *coll = find_cid(st, cid);
    ami_index_ *idx = coll != NULL ? &coll->idx[m] : NULL;
    int eligible = idx != NULL && idx->async && idx->faiss != NULL && !idx->building &&
                   idx->applied_seq < ami_store_seq(st);
    uint64_t generation = eligible ? idx->generation : 0, after = eligible ? idx->applied_seq : 0;
    int dim = eligible ? idx->dim : 0;
    pthread_rwlock_unlock(&st->lock);
    if (!eligible)
        return 0;

    MDB_txn *txn;
    amc_error err = {0};
    if (ami_read_begin_(st, &txn, &err) != AMC_OK)
        return 0;
    uint64_t upto;
    int64_t *add, *del;
    float *vecs;
    int n_add, n_del;
    amc_status s = read_tail(st, txn, cid, m, dim, after, &upto, &add, &vecs, &n_add, &del,
                             &n_del, &err);
    mdb_txn_abort(txn);

    /* Small chunks under the exclusive lock, so that searches wait only briefly. */
    int failed = s != AMC_OK, gone = 0, cancelled = 0;
    for (int i = 0; !failed && !gone && !cancelled && i < n_add; i += CATCH_UP_CHUNK) {
        cancelled = atomic_load(&st->stopping);
        if (cancelled)
            break;
        int part = n_add - i < CATCH_UP_CHUNK ? n_add - i : CATCH_UP_CHUNK;
        pthread_rwlock_wrlock(&st->lock);
        idx = find_index(st, cid, m, generation);
        gone = idx == NULL;
        if (!gone)
            failed = faiss_Index_add_with_ids(idx->faiss, part, vecs + (size_t)i * (size_t)dim,
                                              add + i) != 0;

        /* Adds are in vid order, so searches may skip the tail up to the last one. */
        if (!gone && !failed)
            idx->indexed_upto = (uint64_t)add[i + part - 1];
        pthread_rwlock_unlock(&st->lock);
    }
    if (!gone) {
        pthread_rwlock_wrlock(&st->lock);
        idx = find_index(st, cid, m, generation);
        if (idx != NULL && cancelled) {
            /* Closing mid-way: drop the index rather than snapshot a partial catch-up; the
             * next open rebuilds it. */
            faiss_Index_free(idx->faiss);
            idx->faiss = NULL;
            idx->building = 1;
        } else if (idx != NULL && failed) {
            const char *msg = faiss_get_last_error();
            fprintf(stderr, "lvl=error event=index_catch_up_failed cid=%u modality=%d "
                    "error=\"%s\"\n", (unsigned)cid, m,
                    s != AMC_OK ? err.msg : (msg != NULL ? msg : "unknown"));
            faiss_Index_free(idx->faiss);
            idx->faiss = NULL;
            idx->broken = 1;
        } else if (idx != NULL) {
            idx->dead += (uint64_t)n_del;
            idx->applied_seq = idx->indexed_upto = upto;
            idx->dirty |= n_add > 0 || n_del > 0;
        }
        pthread_rwlock_unlock(&st->lock);
    }
    free(add);
    free(vecs);
    free(del);
    return !gone && !failed && !cancelled;
}

/* After a catch-up: rebuilds past the tombstone share, after a failure, or when the index
 * disagrees with LMDB's count once it is current. Caller holds write_mutex. */
static void check_caught_up(ami_store *st, ami_coll_ *coll, int m)
{
    ami_index_ *idx = &coll->idx[m];
    if (idx->building)
        return;
    if (idx->broken) {
        ami_index_request_build_(st, coll, m);
        return;
    }
    if (idx->faiss == NULL || idx->applied_seq != ami_store_seq(st))
        return;
    uint64_t ntotal = (uint64_t)faiss_Index_ntotal(idx->faiss);
    if ((double)idx->dead > st->opts.tombstone_ratio * (double)ntotal) {
        ami_index_request_build_(st, coll, m);
    } else if (ntotal != coll->stats.vectors[m] + idx->dead) {
        fprintf(stderr, "lvl=warn event=index_count_mismatch collection=%s modality=%s "
                "indexed=%llu stored=%llu action=rebuild\n", coll->spec.name,
                coll->spec.modalities[m], (unsigned long long)(ntotal - idx->dead),
                (unsigned long long)coll->stats.vectors[m]);
        ami_index_request_build_(st, coll, m);
    }
}

/* Catches every graph index up once; returns 1 when any made progress. */
static int catch_up_all(ami_store *st)
{
    static const int max = 256 * AMC_MAX_MODALITIES;
    uint32_t *cids = malloc(sizeof *cids * (size_t)max);
    int *mods = malloc(sizeof *mods * (size_t)max);
    int n = 0, progress = 0;
    pthread_rwlock_rdlock(&st->lock);
    for (int i = 0; cids != NULL && mods != NULL && i < st->n_colls; i++)
        for (int m = 0; m < st->colls[i]->spec.n_modalities; m++)
            if (st->colls[i]->idx[m].async) {
                cids[n] = st->colls[i]->cid;
                mods[n++] = m;
            }
    pthread_rwlock_unlock(&st->lock);

    for (int j = 0; j < n && !atomic_load(&st->stopping); j++) {
        progress |= catch_up(st, cids[j], mods[j]);
        pthread_mutex_lock(&st->write_mutex);
        ami_coll_ *coll = find_cid(st, cids[j]);
        if (coll != NULL)
            check_caught_up(st, coll, mods[j]);
        pthread_mutex_unlock(&st->write_mutex);
    }
    free(cids);
    free(mods);
    return progress;
}

static void *builder_main(void *arg)
{
    ami_store *st = arg;
    for (;;) {
        pthread_mutex_lock(&st->build_mutex);
        while (!st->build_pending && !st->snapshot_pending && !atomic_load(&st->stopping))
            pthread_cond_wait(&st->build_cond, &st->build_mutex);
        int snapshot = st->snapshot_pending;
        st->build_pending = 0;
        st->snapshot_pending = 0;
        pthread_mutex_unlock(&st->build_mutex);
        if (atomic_load(&st->stopping))
            return NULL;
        while (!atomic_load(&st->stopping) && (build_one(st) || catch_up_all(st)))
            ;

        /* Periodic snapshots bound the operation log and the replay at the next open. */
        amc_error err = {0};
        if (snapshot && !atomic_load(&st->stopping) && ami_store_snapshot(st, &err) != AMC_OK)
            fprintf(stderr, "lvl=error event=snapshot_failed dir=%s error=\"%s\"\n", st->dir,
                    err.msg);
    }
}

amc_status ami_builder_start_(ami_store *st, amc_error *err)
{
    pthread_mutex_lock(&st->build_mutex);
    st->build_pending = 1;
    pthread_mutex_unlock(&st->build_mutex);
    if (pthread_create(&st->builder, NULL, builder_main, st) != 0)
        return amc_error_set(err, AMC_ENOMEM, "cannot start the index builder thread");
    st->builder_started = 1;
    return AMC_OK;
}

void ami_builder_stop_(ami_store *st)
{
    if (!st->builder_started)
        return;
    pthread_mutex_lock(&st->build_mutex);
    atomic_store(&st->stopping, 1);
    pthread_cond_signal(&st->build_cond);
    pthread_mutex_unlock(&st->build_mutex);
    pthread_join(st->builder, NULL);
    st->builder_started = 0;
}
