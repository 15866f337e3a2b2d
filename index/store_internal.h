/* Internals shared by the store's source files (index/store*.c). Not part of the API.
 *
 * LMDB layout. Integers in keys are big-endian so that cursors walk them in order; integers in
 * values are native-endian (a data directory is not portable between byte orders).
 *   meta      "format" -> u32 AMI_FORMAT_VERSION; "seq" -> u64 last operation sequence;
 *             "next_cid" -> u32; "next_iid" -> u64; "oplog_floor" -> u64 (log pruned up to it)
 *   colls     collection name -> definition as JSON text (see store_collections.c)
 *   stats     cid(4) -> ami_stats_record_
 *   ids       cid(4) + external id bytes -> iid (u64)
 *   points    cid(4) + iid(8) -> point record: u16 id length, id bytes,
 *             u64 vid[AMC_MAX_MODALITIES] (0 = no embedding), u32 payload length, payload
 *   raw       cid(4) + iid(8) + modality(1) -> i32 seq, i32 dim, float [seq, dim]
 *   vecs      cid(4) + modality(1) + vid(8) -> u64 iid, float [index dim]
 *   oplog     seq(8) -> cid(4) + modality(1) + kind(1) + vid(8)
 *
 * Vector ids (vid). Every stored embedding version gets the sequence number of the operation
 * that added it as its vid, which is also its FAISS label. Vids are never reused, so a FAISS
 * label whose vecs entry is gone is a deleted entry (a tombstone) and searches skip it. */
#ifndef ALTMOE_INDEX_STORE_INTERNAL_H
#define ALTMOE_INDEX_STORE_INTERNAL_H

#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "index/faiss_c.h"
#include "index/store.h"

#define AMI_FORMAT_VERSION 1u
#define AMI_OP_ADD 1
#define AMI_OP_DEL 2
#define AMI_WORKSPACE_POOL 32

typedef struct ami_stats_record_ {
    uint64_t points;
    uint64_t vectors[AMC_MAX_MODALITIES];
    uint64_t seq;
} ami_stats_record_;

/* One FAISS index of (collection, modality) and its bookkeeping. Fields other than the
 * param_lock are read under the store's lock (shared) and written under it (exclusive). */
typedef struct ami_index_ {
    FaissIndex *faiss;           /* NULL while untrained or after a FAISS failure: searches
                                    then scan the stored vectors exactly */
    int dim;
    char factory[AMI_SPEC_MAX + 8];  /* the index_factory string actually used */
    int can_remove;              /* 0: deletes become tombstones (HNSW, NSG) */
    int async;                   /* 1 (graph indices, slow to add to): the builder thread
                                    applies the log, and searches scan the vectors after
                                    applied_seq exactly */
    uint64_t applied_seq;        /* async: every operation up to here is in faiss */
    uint64_t indexed_upto;       /* async: every live vector with a vid up to here is in faiss;
                                    ahead of applied_seq while a catch-up adds chunks */
    int needs_training;
    uint64_t train_min;          /* stored vectors needed before training */
    int nlist;                   /* IVF lists, 0 when not IVF */
    uint64_t dead;               /* tombstones still inside faiss */
    uint64_t snapshot_seq;       /* sequence of the snapshot on disk */
    int from_snapshot;           /* loaded from a snapshot at open (until recovery ends) */
    int dirty;                   /* changed since the last snapshot */
    int broken;                  /* a FAISS call failed: rebuild at the next snapshot */
    int building;                /* a background build is queued or running: searches use the
                                    old faiss if any, else the exact scan */
    int build_running;           /* the builder thread is working on it */
    uint64_t generation;         /* bumped by every swap, so a stale build is discarded */
    pthread_rwlock_t param_lock; /* shared: search; exclusive: change nprobe / efSearch */
    int nprobe, ef_search;       /* values currently set on faiss */
} ami_index_;

typedef struct ami_coll_ {
    uint32_t cid;
    ami_collection_spec spec;
    int conn_mod[AMC_MAX_MODALITIES];  /* connector modality of each collection modality */
    int raw_dim[AMC_MAX_MODALITIES];   /* width of the stored raw embeddings */
    char fingerprint[17];
    ami_stats_record_ stats;
    ami_index_ idx[AMC_MAX_MODALITIES];
} ami_coll_;

struct ami_store {
    MDB_env *env;
    int lock_fd;                 /* <dir>/LOCK, held with flock() while open; -1 when none */
    MDB_dbi db_meta, db_colls, db_stats, db_ids, db_points, db_raw, db_vecs, db_oplog;
    char dir[4096];
    const amc_connector *conn;
    char fingerprint[17];
    ami_store_options opts;
    size_t map_size;

    pthread_mutex_t write_mutex; /* serialises write calls */
    pthread_rwlock_t lock;       /* shared: readers; exclusive: collection table, index
                                    changes and map resizes (which need no open read txn) */
    int n_colls;
    ami_coll_ *colls[256];
    uint64_t seq;                /* last committed sequence; read with atomics */

    pthread_t builder;           /* background index builds, see store_build.c */
    int builder_started;
    pthread_mutex_t build_mutex; /* guards build_pending with build_cond */
    pthread_cond_t build_cond;
    int build_pending;
    atomic_int stopping;         /* set by ami_store_close(): builds cancel */
    uint64_t build_floor;        /* sequence a running build catches up from, or UINT64_MAX;
                                    snapshots keep the log after it */
    uint64_t snapshot_seq;       /* sequence of the last complete ami_store_snapshot() */
    int snapshot_pending;        /* the builder should write snapshots (guarded by
                                    build_mutex) */

    pthread_mutex_t ws_mutex;
    int n_ws;
    amc_workspace *ws_pool[AMI_WORKSPACE_POOL];
};

/* A write transaction body. It may run more than once (after MDB_MAP_FULL the transaction is
 * retried with a larger map), so it must not change in-memory state. Returns an LMDB or errno
 * code, or -1 with err set for a store-level failure. */
typedef int (*ami_txn_body_)(MDB_txn *txn, void *ctx, amc_error *err);

/* store.c */
amc_status ami_write_txn_(ami_store *st, ami_txn_body_ body, void *ctx, amc_error *err);
amc_status ami_lmdb_status_(int rc, const char *what, amc_error *err);
amc_status ami_read_begin_(ami_store *st, MDB_txn **txn, amc_error *err);
amc_workspace *ami_workspace_take_(ami_store *st);
void ami_workspace_give_(ami_store *st, amc_workspace *ws);
ami_coll_ *ami_coll_find_(ami_store *st, const char *name);
int ami_coll_modality_(const ami_coll_ *coll, const char *modality);
int ami_meta_get_u64_(MDB_txn *txn, ami_store *st, const char *key, uint64_t *out);
int ami_meta_put_u64_(MDB_txn *txn, ami_store *st, const char *key, uint64_t value);
/* Projects n stored items of one modality, raw [n, seq, raw dim], into out [n, index dim]. */
amc_status ami_project_items_(const amc_connector *conn, amc_workspace *ws, ami_space space,
                              int conn_mod, const float *raw, int n, int seq, float *out,
                              amc_error *err);
int ami_index_dim_(const amc_connector *conn, ami_space space, int conn_mod);
int ami_all_finite_(const float *x, size_t n);
void ami_normalise_(float *x, int dim);

/* keys */
void ami_put_be32_(unsigned char *p, uint32_t v);
void ami_put_be64_(unsigned char *p, uint64_t v);
uint32_t ami_get_be32_(const unsigned char *p);
uint64_t ami_get_be64_(const unsigned char *p);

/* What a build needs, copied so that it survives a concurrent drop of the collection. */
typedef struct ami_build_spec_ {
    uint32_t cid;
    int m, dim;
    char factory[AMI_SPEC_MAX + 8];
    int needs_training, can_remove;
    uint64_t train_min;
} ami_build_spec_;

/* store_build.c */
amc_status ami_builder_start_(ami_store *st, amc_error *err);
void ami_builder_stop_(ami_store *st);
void ami_index_request_build_(ami_store *st, ami_coll_ *coll, int m);
void ami_builder_wake_(ami_store *st);
void ami_snapshot_due_(ami_store *st);

/* store_collections.c */
amc_status ami_colls_load_(ami_store *st, MDB_txn *txn, amc_error *err);
void ami_coll_free_(ami_coll_ *coll);
char *ami_coll_def_json_(const ami_coll_ *coll);
amc_status ami_coll_bind_(ami_store *st, const amc_connector *conn, ami_coll_ *coll,
                          int *conn_mod, amc_error *err);
int ami_stats_put_(MDB_txn *txn, ami_store *st, const ami_coll_ *coll,
                   const ami_stats_record_ *stats);
amc_status ami_reproject_(ami_store *st, ami_coll_ *coll, const amc_connector *conn,
                          const int *conn_mod, amc_error *err);

/* store_index.c */
amc_status ami_index_init_(ami_index_ *idx, const char *spec, int dim, amc_error *err);
void ami_index_destroy_(ami_index_ *idx);
amc_status ami_index_build_(ami_store *st, const ami_coll_ *coll, int m,
                            const amc_connector *conn, const int *conn_mod, FaissIndex **out,
                            amc_error *err);
void ami_index_swap_(ami_store *st, ami_coll_ *coll, int m, FaissIndex *faiss);
void ami_build_spec_fill_(ami_build_spec_ *spec, const ami_coll_ *coll, int m, int dim);
amc_status ami_vectors_read_(ami_store *st, MDB_txn *txn, uint32_t cid, int m, int dim,
                             int64_t **vids, float **x, size_t *n, amc_error *err);
amc_status ami_faiss_build_(const ami_build_spec_ *spec, size_t n, const float *x,
                            const int64_t *vids, const atomic_int *cancel, FaissIndex **out,
                            amc_error *err);
amc_status ami_tail_ops_(ami_store *st, MDB_txn *txn, const ami_build_spec_ *spec,
                         uint64_t after, int64_t **add, float **vecs, int *n_add,
                         int64_t **del, int *n_del, amc_error *err);
amc_status ami_replay_into_(ami_store *st, MDB_txn *txn, const ami_build_spec_ *spec,
                            uint64_t after, FaissIndex *faiss, uint64_t *dead, amc_error *err);
void ami_index_apply_(ami_store *st, ami_coll_ *coll, int m, int n_add, const int64_t *add_vids,
                      const float *add_vecs, int n_del, const int64_t *del_vids);
amc_status ami_indices_recover_(ami_store *st, amc_error *err);
amc_status ami_index_snapshot_(ami_store *st, ami_coll_ *coll, int m, amc_error *err);
void ami_snapshot_path_(const ami_store *st, uint32_t cid, int m, char *path, size_t size);
int ami_index_searchable_(ami_store *st, const ami_coll_ *coll, int m);

/* store_filter.c */
typedef struct ami_filter_ ami_filter_;
amc_status ami_filter_compile_(const cJSON *json, ami_filter_ **out, amc_error *err);
int ami_filter_match_(const ami_filter_ *filter, const cJSON *payload);
void ami_filter_free_(ami_filter_ *filter);

#endif
