/* The durable store of altmoe: collections, points and their FAISS indices.
 *
 * One LMDB environment per data directory is the source of truth. It keeps, per collection, the
 * external id -> internal id map, the payload of each point (JSON text), the raw embedding of
 * each point per modality (so that a new connector can re-project everything), the projected
 * vectors, and a log of index operations numbered by one monotonically increasing sequence.
 * A write is acknowledged (the call returns AMC_OK) only after its LMDB transaction committed,
 * with LMDB's default sync flags.
 *
 * FAISS indices, one per (collection, modality), are derived data. Snapshot files in
 * <dir>/snapshots/ record the sequence number they contain; ami_store_open() loads them and
 * replays later operations from LMDB. An index whose snapshot is missing, stale, corrupt or
 * made with another connector is rebuilt from LMDB by a background thread. Until it is done,
 * searches of that index scan the stored vectors exactly and ami_store_ready() returns 0.
 * The same thread adds new vectors to graph (HNSW) indices after their commit, while searches
 * score the vectors it has not added yet exactly, so a write is searchable as soon as its
 * upsert returns. It also rebuilds HNSW indices with too many deleted entries and trains IVF
 * indices once enough vectors are stored: max(39 * nlist, 256) for "IVF<nlist>,...", 9984
 * for other specs that need training. Until then searches scan the stored vectors exactly.
 *
 * Points. A point is an external id (1..AMI_ID_MAX bytes, any bytes but NUL) with an optional
 * JSON payload and one embedding per modality of its collection (any subset of them). Upserting
 * (id, modality) replaces that modality's embedding and keeps the others.
 *
 * Spaces. In a "contrastive" collection (the default) a stored item of modality m is indexed as
 * amc_connector_project(AMC_SPACE_TARGET, m): D dims, L2-normalised. A query of modality s for
 * items of modality t is projected with AMC_SPACE_CONTRASTIVE for direction s->t (or with
 * AMC_SPACE_TARGET when s == t). In a "predictive" collection the index contains the raw target
 * embeddings (mean over tokens) L2-normalised, and a query is projected with
 * AMC_SPACE_PREDICTIVE for s->t and then normalised (or only normalised when s == t). Scores are
 * inner products, so 1 is the best possible score.
 *
 * Thread rules. Any number of threads may call the read functions (ami_collection_list,
 * ami_collection_describe, ami_point_get, ami_search, ami_store_ready, ami_store_connector) at
 * the same time as each other and as one write. Write functions (ami_collection_create,
 * ami_collection_drop, ami_points_upsert, ami_points_delete, ami_store_snapshot,
 * ami_store_reload) may be called from any thread; the store runs them one at a time. Only
 * ami_store_close() needs every other call to have returned.
 *
 * Errors follow core/error.h. Codes used here: AMC_EINVAL (bad argument, message names it,
 * including a modality the collection or connector lacks), AMC_ENOTFOUND (unknown collection
 * or point), AMC_EEXIST (collection exists),
 * AMC_EFULL (disk full or map size limit reached; nothing was written), AMC_EIO and
 * AMC_EINTERNAL (LMDB or FAISS failure), AMC_ENOMEM, AMC_EFORMAT (data directory from another
 * format version). */
#ifndef ALTMOE_INDEX_STORE_H
#define ALTMOE_INDEX_STORE_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "core/connector.h"
#include "core/error.h"

#define AMI_NAME_MAX 64          /* collection name buffer, including the NUL */
#define AMI_ID_MAX 255           /* external id length in bytes, without the NUL */
#define AMI_SPEC_MAX 64          /* FAISS index_factory string buffer, including the NUL */
#define AMI_K_MAX 1000           /* largest k of one search */
#define AMI_SEQ_MAX 4096         /* most tokens of one embedding */
#define AMI_PAYLOAD_MAX (1 << 20) /* largest payload text in bytes */

typedef struct ami_store ami_store;

/* Tuning knobs of ami_store_open(); zero-initialise and set what you need (0 = default). */
typedef struct ami_store_options {
    size_t map_size;             /* initial LMDB map size in bytes; default 64 MiB. The map
                                    doubles on MDB_MAP_FULL. */
    size_t map_size_max;         /* ceiling for growth in bytes; default 1 TiB */
    double tombstone_ratio;      /* rebuild an index that cannot remove ids (HNSW) once deleted
                                    entries exceed this fraction of it; default 0.2 */
    int read_only_snapshots;     /* 1: ami_store_close() writes no snapshots (tests) */
    uint64_t snapshot_every;     /* operations between automatic snapshots, which also prune
                                    the operation log; default 100000 */
} ami_store_options;

/* Opens (creating when absent) the store in directory dir, which must exist, with connector
 * conn. conn is borrowed: it must stay valid until ami_store_close(), or until a later
 * ami_store_reload() with another connector has returned. opts may be NULL for the defaults.
 * Recovery runs here: every index is loaded from its snapshot and caught up with LMDB, or
 * queued for a rebuild by the background builder. A collection whose vectors were projected
 * by a connector with another fingerprint is re-projected from its raw embeddings before this
 * returns.
 * TODO: re-project in a background thread and serve the old index version meanwhile.
 * On success *out is the store, which the caller frees with ami_store_close(). One process at
 * a time may open a directory (an flock() on <dir>/LOCK). Fails with AMC_EINVAL when a stored
 * collection names a modality conn lacks, AMC_EIO when dir cannot be opened, AMC_EBUSY when
 * another process (or another open store in this one) has the directory locked. */
amc_status ami_store_open(ami_store **out, const char *dir, const amc_connector *conn,
                          const ami_store_options *opts, amc_error *err);

/* Writes a snapshot of every index (unless opts->read_only_snapshots), then closes LMDB and
 * frees the store. NULL is allowed. No other call on st may be in flight. */
void ami_store_close(ami_store *st);

/* Writes a snapshot file of every index that changed since its last snapshot (temporary file,
 * fsync, rename, fsync of the directory) and prunes the operation log up to the oldest
 * snapshot. On error the previous snapshot files stay in place. */
amc_status ami_store_snapshot(ami_store *st, amc_error *err);

/* Switches the store to connector conn (borrowed, as in ami_store_open()). Every collection
 * is re-projected from its raw embeddings and new indices are built while searches go on
 * with the old ones. Then the connector and all indices switch at once, and the collections
 * record conn's fingerprint. Writes wait meanwhile. On error the store keeps serving with
 * the previous connector and the caller still owns conn.
 * TODO: run this in a background thread so that the caller need not wait. */
amc_status ami_store_reload(ami_store *st, const amc_connector *conn, amc_error *err);

/* Returns the connector in use (borrowed; valid until the next ami_store_reload() returns). */
const amc_connector *ami_store_connector(const ami_store *st);

/* Returns 1 when every index is built and caught up with LMDB, 0 while a background build
 * is queued or running. Searches still run meanwhile, on the old index or an exact scan. */
int ami_store_ready(ami_store *st);

/* Last operation sequence number committed to LMDB (0 for an empty store). */
uint64_t ami_store_seq(ami_store *st);

/* ----------------------------------------------------------------------------------------
 * Collections
 * ---------------------------------------------------------------------------------------- */

typedef enum ami_space {
    AMI_SPACE_CONTRASTIVE = 0,   /* shared latent space of the connector, D dims */
    AMI_SPACE_PREDICTIVE         /* raw target embeddings; queries through the prediction head */
} ami_space;

typedef struct ami_collection_spec {
    char name[AMI_NAME_MAX];     /* [A-Za-z0-9_-], 1..AMI_NAME_MAX-1 bytes */
    int n_modalities;            /* 1..AMC_MAX_MODALITIES, distinct connector modalities */
    char modalities[AMC_MAX_MODALITIES][AMC_NAME_MAX];
    char index_spec[AMC_MAX_MODALITIES][AMI_SPEC_MAX]; /* FAISS index_factory string per
                                    modality, e.g. "Flat", "HNSW32", "IVF1024,SQ8"; "" = "Flat" */
    ami_space space;
} ami_collection_spec;

typedef struct ami_collection_info {
    ami_collection_spec spec;
    uint64_t points;             /* distinct external ids */
    uint64_t vectors[AMC_MAX_MODALITIES];  /* stored embeddings per modality (spec order) */
    uint64_t indexed[AMC_MAX_MODALITIES];  /* live vectors in the FAISS index; less than
                                    vectors while an IVF index waits for training, and then
                                    searches scan the stored vectors exactly */
    int trained[AMC_MAX_MODALITIES];       /* 1 when the FAISS index is trained */
    int dim[AMC_MAX_MODALITIES];           /* width of the indexed vectors */
    char fingerprint[17];        /* connector fingerprint the vectors were projected with */
    uint64_t seq;                /* last operation sequence number of this collection */
} ami_collection_info;

/* Creates a collection. Each modality must exist in the store's connector, and in a
 * "predictive" collection every ordered pair of its modalities needs a direction. The index
 * spec is checked by building an empty index. Fails with AMC_EEXIST when the name is taken. */
amc_status ami_collection_create(ami_store *st, const ami_collection_spec *spec, amc_error *err);

/* Deletes the collection, its points and its indices in one transaction. AMC_ENOTFOUND when
 * it does not exist. */
amc_status ami_collection_drop(ami_store *st, const char *name, amc_error *err);

/* Lists every collection in name order: *out is a malloc'd array of *n entries (NULL when
 * n = 0) that the caller frees with free(). */
amc_status ami_collection_list(ami_store *st, ami_collection_info **out, int *n, amc_error *err);

/* Fills *out with the collection's definition and counts. */
amc_status ami_collection_describe(ami_store *st, const char *name, ami_collection_info *out,
                                   amc_error *err);

/* Parses "contrastive" or "predictive" into *out; AMC_EINVAL otherwise. */
amc_status ami_space_parse(const char *text, ami_space *out, amc_error *err);

/* Returns "contrastive" or "predictive". */
const char *ami_space_name(ami_space space);

/* ----------------------------------------------------------------------------------------
 * Points
 * ---------------------------------------------------------------------------------------- */

/* One item of an upsert batch. Every pointer is borrowed for the duration of the call. */
typedef struct ami_point {
    const char *id;              /* external id */
    const char *modality;        /* one of the collection's modalities */
    const float *embedding;      /* [seq, dim of the modality], row-major, finite values */
    int seq;                     /* tokens, 1..AMI_SEQ_MAX; 1 for a pooled vector */
    const char *payload;         /* JSON object text, or NULL to keep the current payload
                                    (none for a new point) */
} ami_point;

/* Upserts n points (1..) in ONE LMDB transaction: all of them are stored or none. The batch
 * is validated first (dims, NaN/Inf, ids, payload JSON, modality); the message names the
 * item index and field. Within a batch later items win. After the commit the indices are
 * updated; *seq_out (may be NULL) receives the sequence number of the batch's last operation.
 * AMC_EFULL when the disk or the map ceiling is full: nothing of the batch is stored. */
amc_status ami_points_upsert(ami_store *st, const char *collection, const ami_point *points,
                             int n, uint64_t *seq_out, amc_error *err);

/* Deletes n points by external id in one transaction, every modality of each. Ids that do
 * not exist are skipped; *n_deleted (may be NULL) receives how many existed. */
amc_status ami_points_delete(ami_store *st, const char *collection, const char *const *ids,
                             int n, int *n_deleted, amc_error *err);

/* One stored embedding of a point. */
typedef struct ami_embedding {
    char modality[AMC_NAME_MAX];
    int seq, dim;
    float *data;                 /* [seq, dim], owned by the ami_point_data */
} ami_embedding;

typedef struct ami_point_data {
    char id[AMI_ID_MAX + 1];
    char *payload;               /* JSON text or NULL; owned */
    int n_embeddings;
    ami_embedding embeddings[AMC_MAX_MODALITIES]; /* in the collection's modality order */
} ami_point_data;

/* Reads the point with external id into *out, which the caller releases with
 * ami_point_data_free(). AMC_ENOTFOUND when the collection or the point does not exist. */
amc_status ami_point_get(ami_store *st, const char *collection, const char *id,
                         ami_point_data *out, amc_error *err);

/* Frees what *data owns and zeroes it; NULL is allowed. */
void ami_point_data_free(ami_point_data *data);

/* ----------------------------------------------------------------------------------------
 * Search
 * ---------------------------------------------------------------------------------------- */

/* One query: a raw embedding of modality `modality` (the source). Borrowed during the call. */
typedef struct ami_query {
    const char *modality;
    const float *embedding;      /* [seq, dim of the modality], finite values */
    int seq;                     /* 1..AMI_SEQ_MAX */
} ami_query;

/* Search parameters shared by every query of one call.
 *
 * filter (may be NULL) is a JSON object; every key must match (AND) on the top-level payload
 * key of the same name:
 *   "key": scalar                           equality (string, number, true/false, null)
 *   "key": {"eq": v}                        equality
 *   "key": {"in": [v1, v2, ...]}            equal to one of the values
 *   "key": {"gt"|"gte"|"lt"|"lte": number}  numeric range; several bounds combine
 * A point without a payload, or without the key, matches nothing. When the index cannot
 * deliver k matching hits (a selective filter), the search falls back to an exact scan of the
 * stored vectors, so k hits come back whenever k points match. */
typedef struct ami_search_params {
    const char *target;          /* modality of the items to find */
    int k;                       /* 1..AMI_K_MAX */
    const cJSON *filter;         /* borrowed; NULL = no filter */
    int with_payload;            /* 1: fill ami_hit.payload */
    int nprobe;                  /* IVF lists to visit; 0 = max(1, nlist / 16) */
    int ef_search;               /* HNSW efSearch; 0 = max(64, 2 * k) */
} ami_search_params;

typedef struct ami_hit {
    char id[AMI_ID_MAX + 1];
    float score;                 /* inner product; higher is closer */
    char *payload;               /* JSON text when requested and present, else NULL; owned */
} ami_hit;

typedef struct ami_result {
    int n;                       /* hits found, 0..k, best first */
    ami_hit *hits;               /* owned */
} ami_result;

/* Runs nq (1..) queries against one collection: all queries of the same modality and seq go
 * through one connector call and one FAISS call. results must point at nq entries; on
 * success each is filled and the caller frees them with ami_results_free(). On failure
 * nothing is left allocated. Errors: AMC_ENOTFOUND (collection), AMC_EINVAL (modality,
 * dims, NaN/Inf, k, a direction the connector lacks, a malformed filter: the message names
 * the key). */
amc_status ami_search(ami_store *st, const char *collection, const ami_query *queries, int nq,
                      const ami_search_params *params, ami_result *results, amc_error *err);

/* Frees what results[0..nq) own and zeroes them. */
void ami_results_free(ami_result *results, int nq);

#endif
