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

    uint64_t dead = 0;
    amc_status s = built;
    MDB_txn *txn = NULL;
    if (s == AMC_OK && faiss != NULL)
        s = ami_read_begin_(st, &txn, err);
    if (s == AMC_OK && faiss != NULL) {
        s = ami_replay_into_(st, txn, spec, seq, faiss, &dead, err);
        mdb_txn_abort(txn);
    }
    if (s == AMC_OK) {
        pthread_rwlock_wrlock(&st->lock);
        ami_index_swap_(st, coll, spec->m, faiss);
        idx->dead = dead;
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
    pthread_rwlock_wrlock(&st->lock);
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
        while (!atomic_load(&st->stopping) && build_one(st))
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
