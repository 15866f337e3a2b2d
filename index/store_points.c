/* Points: upsert and delete in one LMDB transaction each, then the index update; get.
 *
 * An upsert of (id, modality) in one transaction: look up or allocate the internal id, log a
 * delete of the previous vector version of that modality (if any), log an add of the new one
 * under a fresh vid, write the raw embedding, the projected vector and the point record, and
 * bump the sequence and the collection's counters. Only after the commit are the FAISS
 * indices told, so an index never contains anything LMDB lost. */
#include "index/store_internal.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/fault.h"

/* A decoded point record; id and payload point into LMDB memory or the caller's buffers. */
typedef struct point_rec {
    uint16_t id_len;
    const char *id;
    uint64_t vid[AMC_MAX_MODALITIES];
    uint32_t payload_len;
    const char *payload;         /* NULL when the point has no payload */
} point_rec;

static int decode_rec(const MDB_val *v, point_rec *rec)
{
    const unsigned char *p = v->mv_data;
    size_t fixed = 2 + 8 * AMC_MAX_MODALITIES + 4;
    if (v->mv_size < fixed)
        return MDB_CORRUPTED;
    memcpy(&rec->id_len, p, 2);
    if (v->mv_size < fixed + rec->id_len)
        return MDB_CORRUPTED;
    rec->id = (const char *)p + 2;
    memcpy(rec->vid, p + 2 + rec->id_len, sizeof rec->vid);
    memcpy(&rec->payload_len, p + 2 + rec->id_len + sizeof rec->vid, 4);
    if (v->mv_size != fixed + rec->id_len + rec->payload_len)
        return MDB_CORRUPTED;
    rec->payload = rec->payload_len > 0 ? (const char *)p + fixed + rec->id_len : NULL;
    return 0;
}

/* Encodes rec into a malloc'd buffer described by *v. */
static int encode_rec(const point_rec *rec, MDB_val *v)
{
    size_t fixed = 2 + 8 * AMC_MAX_MODALITIES + 4;
    unsigned char *p = AMC_MALLOC(fixed + rec->id_len + rec->payload_len);
    if (p == NULL)
        return ENOMEM;
    memcpy(p, &rec->id_len, 2);
    memcpy(p + 2, rec->id, rec->id_len);
    memcpy(p + 2 + rec->id_len, rec->vid, sizeof rec->vid);
    memcpy(p + 2 + rec->id_len + sizeof rec->vid, &rec->payload_len, 4);
    if (rec->payload_len > 0)
        memcpy(p + fixed + rec->id_len, rec->payload, rec->payload_len);
    v->mv_data = p;
    v->mv_size = fixed + rec->id_len + rec->payload_len;
    return 0;
}

static void id_key(unsigned char *key, uint32_t cid, const char *id, size_t len)
{
    ami_put_be32_(key, cid);
    memcpy(key + 4, id, len);
}

static void point_key(unsigned char *key, uint32_t cid, uint64_t iid)
{
    ami_put_be32_(key, cid);
    ami_put_be64_(key + 4, iid);
}

static void vec_key(unsigned char *key, uint32_t cid, int m, uint64_t vid)
{
    ami_put_be32_(key, cid);
    key[4] = (unsigned char)m;
    ami_put_be64_(key + 5, vid);
}

static int log_op(MDB_txn *txn, ami_store *st, uint64_t seq, uint32_t cid, int m, int kind,
                  uint64_t vid)
{
    unsigned char key[8], op[14];
    ami_put_be64_(key, seq);
    ami_put_be32_(op, cid);
    op[4] = (unsigned char)m;
    op[5] = (unsigned char)kind;
    ami_put_be64_(op + 6, vid);
    MDB_val k = {sizeof key, key}, v = {sizeof op, op};
    return mdb_put(txn, st->db_oplog, &k, &v, MDB_APPEND);
}

/* ---------------------------------------------------------------------------------------
 * Shared write context
 * --------------------------------------------------------------------------------------- */

/* What a write transaction did, for the index update after its commit. */
typedef struct write_ctx {
    ami_store *st;
    ami_coll_ *coll;
    const ami_point *points;     /* upsert items, or NULL for a delete */
    const char *const *ids;      /* delete ids */
    int n;
    const int *mods;             /* collection modality of each upsert item */
    const float *proj;           /* [n, width] projected vectors of the upsert items */
    int width;

    /* Outputs, reset at the start of every attempt. */
    ami_stats_record_ stats;
    uint64_t seq;
    int n_ops;
    int64_t *op_vid;             /* operations of the transaction, in order */
    int *op_mod;
    int *op_kind;
    int *op_item;                /* upsert item of an add */
    int n_deleted;
} write_ctx;

static void record_op(write_ctx *c, int m, int kind, uint64_t vid, int item)
{
    c->op_vid[c->n_ops] = (int64_t)vid;
    c->op_mod[c->n_ops] = m;
    c->op_kind[c->n_ops] = kind;
    c->op_item[c->n_ops] = item;
    c->n_ops++;
}

/* Deletes the stored vector vid of modality m and logs it. */
static int drop_vector(MDB_txn *txn, write_ctx *c, int m, uint64_t vid)
{
    unsigned char key[13];
    vec_key(key, c->coll->cid, m, vid);
    MDB_val k = {sizeof key, key};
    int rc = mdb_del(txn, c->st->db_vecs, &k, NULL);
    if (rc == 0)
        rc = log_op(txn, c->st, ++c->seq, c->coll->cid, m, AMI_OP_DEL, vid);
    if (rc == 0) {
        record_op(c, m, AMI_OP_DEL, vid, -1);
        c->stats.vectors[m]--;
    }
    return rc;
}

static int begin_body(MDB_txn *txn, write_ctx *c)
{
    c->stats = c->coll->stats;
    c->n_ops = 0;
    c->n_deleted = 0;
    return ami_meta_get_u64_(txn, c->st, "seq", &c->seq);
}

static int end_body(MDB_txn *txn, write_ctx *c)
{
    c->stats.seq = c->seq;
    int rc = ami_meta_put_u64_(txn, c->st, "seq", c->seq);
    if (rc == 0)
        rc = ami_stats_put_(txn, c->st, c->coll, &c->stats);
    return rc;
}

/* ---------------------------------------------------------------------------------------
 * Upsert
 * --------------------------------------------------------------------------------------- */

/* Looks up the internal id of an external one, allocating it for a new point. */
static int resolve_iid(MDB_txn *txn, write_ctx *c, const char *id, uint64_t *iid, int *created)
{
    unsigned char key[4 + AMI_ID_MAX];
    size_t len = strlen(id);
    id_key(key, c->coll->cid, id, len);
    MDB_val k = {4 + len, key}, v;
    int rc = mdb_get(txn, c->st->db_ids, &k, &v);
    *created = rc == MDB_NOTFOUND;
    if (rc == 0 && v.mv_size == 8)
        memcpy(iid, v.mv_data, 8);
    if (rc != MDB_NOTFOUND)
        return rc == 0 && v.mv_size != 8 ? MDB_CORRUPTED : rc;

    uint64_t next;
    rc = ami_meta_get_u64_(txn, c->st, "next_iid", &next);
    if (rc != 0)
        return rc;
    *iid = next + 1;
    rc = ami_meta_put_u64_(txn, c->st, "next_iid", *iid);
    v.mv_size = 8;
    v.mv_data = iid;
    if (rc == 0)
        rc = mdb_put(txn, c->st->db_ids, &k, &v, 0);
    c->stats.points++;
    return rc;
}

static int put_raw(MDB_txn *txn, write_ctx *c, uint64_t iid, int m, const ami_point *p)
{
    int dim = c->coll->raw_dim[m];
    unsigned char key[13];
    point_key(key, c->coll->cid, iid);
    key[12] = (unsigned char)m;
    MDB_val k = {sizeof key, key}, v;
    v.mv_size = 8 + sizeof(float) * (size_t)p->seq * (size_t)dim;
    int rc = mdb_put(txn, c->st->db_raw, &k, &v, MDB_RESERVE);
    if (rc != 0)
        return rc;
    int32_t hdr[2] = {p->seq, dim};
    memcpy(v.mv_data, hdr, sizeof hdr);
    memcpy((char *)v.mv_data + 8, p->embedding, v.mv_size - 8);
    return 0;
}

static int put_vector(MDB_txn *txn, write_ctx *c, uint64_t iid, int m, uint64_t vid,
                      const float *vec)
{
    int dim = c->coll->idx[m].dim;
    unsigned char key[13];
    vec_key(key, c->coll->cid, m, vid);
    MDB_val k = {sizeof key, key}, v = {8 + sizeof(float) * (size_t)dim, NULL};
    int rc = mdb_put(txn, c->st->db_vecs, &k, &v, MDB_RESERVE);
    if (rc != 0)
        return rc;
    memcpy(v.mv_data, &iid, 8);
    memcpy((char *)v.mv_data + 8, vec, sizeof(float) * (size_t)dim);
    return 0;
}

static int upsert_one(MDB_txn *txn, write_ctx *c, int i)
{
    const ami_point *p = &c->points[i];
    int m = c->mods[i];
    uint64_t iid;
    int created;
    int rc = resolve_iid(txn, c, p->id, &iid, &created);
    if (rc != 0)
        return rc;

    /* The current record, copied out before LMDB pages change under it. */
    point_rec rec = {0};
    char *old_payload = NULL;
    unsigned char pkey[12];
    point_key(pkey, c->coll->cid, iid);
    MDB_val pk = {sizeof pkey, pkey}, pv;
    if (!created) {
        rc = mdb_get(txn, c->st->db_points, &pk, &pv);
        if (rc == 0)
            rc = decode_rec(&pv, &rec);
        if (rc != 0)
            return rc;
        if (rec.payload != NULL && p->payload == NULL) {
            old_payload = AMC_MALLOC(rec.payload_len);
            if (old_payload == NULL)
                return ENOMEM;
            memcpy(old_payload, rec.payload, rec.payload_len);
            rec.payload = old_payload;
        }
    }
    rec.id = p->id;
    rec.id_len = (uint16_t)strlen(p->id);
    if (p->payload != NULL) {
        rec.payload = p->payload;
        rec.payload_len = (uint32_t)strlen(p->payload);
    }

    /* Replace the modality's vector: log the delete of the old version, then the add. */
    if (rec.vid[m] != 0)
        rc = drop_vector(txn, c, m, rec.vid[m]);
    uint64_t vid = ++c->seq;
    if (rc == 0)
        rc = put_vector(txn, c, iid, m, vid, c->proj + (size_t)i * (size_t)c->width);
    if (rc == 0)
        rc = log_op(txn, c->st, vid, c->coll->cid, m, AMI_OP_ADD, vid);
    if (rc == 0) {
        record_op(c, m, AMI_OP_ADD, vid, i);
        c->stats.vectors[m]++;
        rec.vid[m] = vid;
        rc = put_raw(txn, c, iid, m, p);
    }
    if (rc == 0) {
        MDB_val nv = {0, NULL};
        rc = encode_rec(&rec, &nv);
        if (rc == 0)
            rc = mdb_put(txn, c->st->db_points, &pk, &nv, 0);
        free(nv.mv_data);
    }
    free(old_payload);
    return rc;
}

static int upsert_body(MDB_txn *txn, void *ctx, amc_error *err)
{
    (void)err;
    write_ctx *c = ctx;
    int rc = begin_body(txn, c);
    for (int i = 0; rc == 0 && i < c->n; i++)
        rc = upsert_one(txn, c, i);
    if (rc == 0)
        rc = end_body(txn, c);
    return rc;
}

/* Checks one upsert item; the message names its index and field. */
static amc_status check_point(const ami_coll_ *coll, const ami_point *p, int i, int *m,
                              amc_error *err)
{
    if (p->id == NULL || p->id[0] == '\0' || strlen(p->id) > AMI_ID_MAX)
        return amc_error_set(err, AMC_EINVAL, "points[%d].id must be 1 to %d bytes", i,
                             AMI_ID_MAX);
    *m = p->modality != NULL ? ami_coll_modality_(coll, p->modality) : -1;
    if (*m < 0)
        return amc_error_set(err, AMC_EINVAL, "points[%d].modality \"%s\" is not a modality of "
                             "collection %s", i, p->modality ? p->modality : "(null)",
                             coll->spec.name);
    if (p->seq < 1 || p->seq > AMI_SEQ_MAX)
        return amc_error_set(err, AMC_EINVAL, "points[%d]: seq %d is out of range 1..%d", i,
                             p->seq, AMI_SEQ_MAX);
    size_t n = (size_t)p->seq * (size_t)coll->raw_dim[*m];
    if (p->embedding == NULL || !ami_all_finite_(p->embedding, n))
        return amc_error_set(err, AMC_EINVAL, "points[%d].embedding must hold %d x %d finite "
                             "floats (no NaN or Inf)", i, p->seq, coll->raw_dim[*m]);
    if (p->payload == NULL)
        return AMC_OK;
    size_t len = strnlen(p->payload, AMI_PAYLOAD_MAX + 1);
    if (len > AMI_PAYLOAD_MAX)
        return amc_error_set(err, AMC_EINVAL, "points[%d].payload is over %d bytes", i,
                             AMI_PAYLOAD_MAX);
    cJSON *json = cJSON_ParseWithLength(p->payload, len);
    int is_object = cJSON_IsObject(json);
    cJSON_Delete(json);
    if (!is_object)
        return amc_error_set(err, AMC_EINVAL, "points[%d].payload must be a JSON object", i);
    return AMC_OK;
}

/* Projects every item into c->proj, one connector call per run of items that share modality
 * and token count. */
static amc_status project_batch(ami_store *st, write_ctx *c, amc_error *err)
{
    amc_workspace *ws = ami_workspace_take_(st);
    if (ws == NULL)
        return amc_error_set(err, AMC_ENOMEM, "out of memory for a projection workspace");
    amc_status s = AMC_OK;
    float *buf = NULL;
    for (int i = 0; s == AMC_OK && i < c->n;) {
        int m = c->mods[i], seq = c->points[i].seq, j = i + 1;
        while (j < c->n && c->mods[j] == m && c->points[j].seq == seq && j - i < 256)
            j++;
        size_t item = (size_t)seq * (size_t)c->coll->raw_dim[m];
        float *grown = AMC_REALLOC(buf, sizeof(float) * item * (size_t)(j - i));
        if (grown == NULL) {
            s = amc_error_set(err, AMC_ENOMEM, "out of memory projecting the batch");
            break;
        }
        buf = grown;
        for (int r = i; r < j; r++)
            memcpy(buf + (size_t)(r - i) * item, c->points[r].embedding, sizeof(float) * item);

        /* Outputs are written densely, then spread to rows of c->width floats. */
        int dim = c->coll->idx[m].dim;
        float *out = (float *)c->proj + (size_t)i * (size_t)c->width;
        s = ami_project_items_(st->conn, ws, c->coll->spec.space, c->coll->conn_mod[m], buf,
                               j - i, seq, out, err);
        for (int r = j - i - 1; s == AMC_OK && r > 0 && dim != c->width; r--)
            memmove(out + (size_t)r * (size_t)c->width, out + (size_t)r * (size_t)dim,
                    sizeof(float) * (size_t)dim);
        i = j;
    }
    free(buf);
    ami_workspace_give_(st, ws);
    return s;
}

/* Hands the committed operations of c to the indices, per modality. */
static void apply_ops(ami_store *st, write_ctx *c)
{
    pthread_rwlock_wrlock(&st->lock);
    c->coll->stats = c->stats;
    pthread_rwlock_unlock(&st->lock);
    atomic_store((_Atomic uint64_t *)&st->seq, c->seq);

    for (int m = 0; m < c->coll->spec.n_modalities; m++) {
        int dim = c->coll->idx[m].dim;
        int n_add = 0, n_del = 0;
        int64_t *add = AMC_MALLOC(sizeof(int64_t) * (size_t)(c->n_ops + 1));
        int64_t *del = AMC_MALLOC(sizeof(int64_t) * (size_t)(c->n_ops + 1));
        float *vecs = AMC_MALLOC(sizeof(float) * (size_t)dim * (size_t)(c->n + 1));
        for (int o = 0; add != NULL && del != NULL && vecs != NULL && o < c->n_ops; o++) {
            if (c->op_mod[o] != m)
                continue;
            if (c->op_kind[o] == AMI_OP_DEL) {
                del[n_del++] = c->op_vid[o];
                continue;
            }
            memcpy(vecs + (size_t)n_add * (size_t)dim,
                   c->proj + (size_t)c->op_item[o] * (size_t)c->width,
                   sizeof(float) * (size_t)dim);
            add[n_add++] = c->op_vid[o];
        }
        if (add != NULL && del != NULL && vecs != NULL)
            ami_index_apply_(st, c->coll, m, n_add, add, vecs, n_del, del);
        free(add);
        free(del);
        free(vecs);
    }
}

static amc_status alloc_ops(write_ctx *c, int per_item, amc_error *err)
{
    size_t n = (size_t)c->n * (size_t)per_item + 1;
    c->op_vid = AMC_MALLOC(sizeof(int64_t) * n);
    c->op_mod = AMC_MALLOC(sizeof(int) * n);
    c->op_kind = AMC_MALLOC(sizeof(int) * n);
    c->op_item = AMC_MALLOC(sizeof(int) * n);
    if (c->op_vid == NULL || c->op_mod == NULL || c->op_kind == NULL || c->op_item == NULL)
        return amc_error_set(err, AMC_ENOMEM, "out of memory for a batch of %d", c->n);
    return AMC_OK;
}

static void free_ops(write_ctx *c)
{
    free(c->op_vid);
    free(c->op_mod);
    free(c->op_kind);
    free(c->op_item);
}

amc_status ami_points_upsert(ami_store *st, const char *collection, const ami_point *points,
                             int n, uint64_t *seq_out, amc_error *err)
{
    if (n < 1 || points == NULL || collection == NULL)
        return amc_error_set(err, AMC_EINVAL, "upsert needs a collection and 1 or more points");
    pthread_mutex_lock(&st->write_mutex);
    write_ctx c = {.st = st, .points = points, .n = n};
    c.coll = ami_coll_find_(st, collection);
    amc_status s = c.coll != NULL ? AMC_OK
                                  : amc_error_set(err, AMC_ENOTFOUND, "collection %s not found",
                                                  collection);

    /* Validate everything, then project, then one transaction. */
    int *mods = s == AMC_OK ? AMC_MALLOC(sizeof(int) * (size_t)n) : NULL;
    if (s == AMC_OK && mods == NULL)
        s = amc_error_set(err, AMC_ENOMEM, "out of memory for a batch of %d", n);
    for (int i = 0; s == AMC_OK && i < n; i++)
        s = check_point(c.coll, &points[i], i, &mods[i], err);
    c.mods = mods;
    float *proj = NULL;
    if (s == AMC_OK) {
        for (int m = 0; m < c.coll->spec.n_modalities; m++)
            c.width = c.coll->idx[m].dim > c.width ? c.coll->idx[m].dim : c.width;
        proj = AMC_MALLOC(sizeof(float) * (size_t)c.width * (size_t)n);
        c.proj = proj;
        s = proj != NULL ? alloc_ops(&c, 2, err)
                         : amc_error_set(err, AMC_ENOMEM, "out of memory for a batch of %d", n);
    }
    if (s == AMC_OK)
        s = project_batch(st, &c, err);
    if (s == AMC_OK)
        s = ami_write_txn_(st, upsert_body, &c, err);

    /* Committed: the write is durable; now the indices catch up. */
    if (s == AMC_OK) {
        apply_ops(st, &c);
        ami_snapshot_due_(st);
        if (seq_out != NULL)
            *seq_out = c.seq;
    }
    free_ops(&c);
    free(proj);
    free(mods);
    pthread_mutex_unlock(&st->write_mutex);
    return s;
}

/* ---------------------------------------------------------------------------------------
 * Delete
 * --------------------------------------------------------------------------------------- */

static int delete_one(MDB_txn *txn, write_ctx *c, const char *id)
{
    unsigned char key[4 + AMI_ID_MAX];
    size_t len = strlen(id);
    id_key(key, c->coll->cid, id, len);
    MDB_val k = {4 + len, key}, v;
    int rc = mdb_get(txn, c->st->db_ids, &k, &v);
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc != 0 || v.mv_size != 8)
        return rc != 0 ? rc : MDB_CORRUPTED;
    uint64_t iid;
    memcpy(&iid, v.mv_data, 8);
    rc = mdb_del(txn, c->st->db_ids, &k, NULL);

    unsigned char pkey[13];
    point_key(pkey, c->coll->cid, iid);
    MDB_val pk = {12, pkey}, pv;
    point_rec rec;
    if (rc == 0)
        rc = mdb_get(txn, c->st->db_points, &pk, &pv);
    if (rc == 0)
        rc = decode_rec(&pv, &rec);
    uint64_t vids[AMC_MAX_MODALITIES];
    if (rc == 0)
        memcpy(vids, rec.vid, sizeof vids);
    if (rc == 0)
        rc = mdb_del(txn, c->st->db_points, &pk, NULL);

    /* Every modality: the vector (logged) and the raw embedding. */
    for (int m = 0; rc == 0 && m < c->coll->spec.n_modalities; m++) {
        if (vids[m] == 0)
            continue;
        rc = drop_vector(txn, c, m, vids[m]);
        pkey[12] = (unsigned char)m;
        MDB_val rk = {13, pkey};
        if (rc == 0)
            rc = mdb_del(txn, c->st->db_raw, &rk, NULL);
    }
    if (rc == 0) {
        c->stats.points--;
        c->n_deleted++;
    }
    return rc;
}

static int delete_body(MDB_txn *txn, void *ctx, amc_error *err)
{
    (void)err;
    write_ctx *c = ctx;
    int rc = begin_body(txn, c);
    for (int i = 0; rc == 0 && i < c->n; i++)
        rc = delete_one(txn, c, c->ids[i]);
    if (rc == 0)
        rc = end_body(txn, c);
    return rc;
}

amc_status ami_points_delete(ami_store *st, const char *collection, const char *const *ids,
                             int n, int *n_deleted, amc_error *err)
{
    if (n_deleted != NULL)
        *n_deleted = 0;
    if (n < 1 || ids == NULL || collection == NULL)
        return amc_error_set(err, AMC_EINVAL, "delete needs a collection and 1 or more ids");
    for (int i = 0; i < n; i++)
        if (ids[i] == NULL || ids[i][0] == '\0' || strlen(ids[i]) > AMI_ID_MAX)
            return amc_error_set(err, AMC_EINVAL, "ids[%d] must be 1 to %d bytes", i,
                                 AMI_ID_MAX);
    pthread_mutex_lock(&st->write_mutex);
    write_ctx c = {.st = st, .ids = ids, .n = n};
    c.coll = ami_coll_find_(st, collection);
    amc_status s = c.coll != NULL ? alloc_ops(&c, AMC_MAX_MODALITIES, err)
                                  : amc_error_set(err, AMC_ENOTFOUND, "collection %s not found",
                                                  collection);
    if (s == AMC_OK)
        s = ami_write_txn_(st, delete_body, &c, err);
    if (s == AMC_OK) {
        apply_ops(st, &c);
        ami_snapshot_due_(st);
        if (n_deleted != NULL)
            *n_deleted = c.n_deleted;
    }
    free_ops(&c);
    pthread_mutex_unlock(&st->write_mutex);
    return s;
}

/* ---------------------------------------------------------------------------------------
 * Get
 * --------------------------------------------------------------------------------------- */

void ami_point_data_free(ami_point_data *data)
{
    if (data == NULL)
        return;
    free(data->payload);
    for (int i = 0; i < data->n_embeddings; i++)
        free(data->embeddings[i].data);
    memset(data, 0, sizeof *data);
}

/* Copies the raw embedding of (iid, m) into out; MDB_NOTFOUND when there is none. */
static int read_raw(MDB_txn *txn, ami_store *st, const ami_coll_ *coll, uint64_t iid, int m,
                    ami_embedding *out)
{
    unsigned char key[13];
    point_key(key, coll->cid, iid);
    key[12] = (unsigned char)m;
    MDB_val k = {sizeof key, key}, v;
    int rc = mdb_get(txn, st->db_raw, &k, &v);
    if (rc != 0)
        return rc;
    int32_t hdr[2];
    if (v.mv_size < sizeof hdr)
        return MDB_CORRUPTED;
    memcpy(hdr, v.mv_data, sizeof hdr);
    size_t bytes = sizeof(float) * (size_t)hdr[0] * (size_t)hdr[1];
    if (v.mv_size != sizeof hdr + bytes)
        return MDB_CORRUPTED;
    out->data = AMC_MALLOC(bytes);
    if (out->data == NULL)
        return ENOMEM;
    memcpy(out->data, (const char *)v.mv_data + sizeof hdr, bytes);
    out->seq = hdr[0];
    out->dim = hdr[1];
    snprintf(out->modality, sizeof out->modality, "%s", coll->spec.modalities[m]);
    return 0;
}

static int read_point(MDB_txn *txn, ami_store *st, const ami_coll_ *coll, const char *id,
                      ami_point_data *out)
{
    unsigned char key[4 + AMI_ID_MAX];
    size_t len = strlen(id);
    id_key(key, coll->cid, id, len);
    MDB_val k = {4 + len, key}, v;
    int rc = mdb_get(txn, st->db_ids, &k, &v);
    if (rc != 0 || v.mv_size != 8)
        return rc != 0 ? rc : MDB_CORRUPTED;
    uint64_t iid;
    memcpy(&iid, v.mv_data, 8);

    unsigned char pkey[12];
    point_key(pkey, coll->cid, iid);
    MDB_val pk = {sizeof pkey, pkey}, pv;
    point_rec rec;
    rc = mdb_get(txn, st->db_points, &pk, &pv);
    if (rc == 0)
        rc = decode_rec(&pv, &rec);
    if (rc != 0)
        return rc == MDB_NOTFOUND ? MDB_CORRUPTED : rc;
    memcpy(out->id, id, len + 1);
    if (rec.payload != NULL) {
        out->payload = AMC_MALLOC(rec.payload_len + 1);
        if (out->payload == NULL)
            return ENOMEM;
        memcpy(out->payload, rec.payload, rec.payload_len);
        out->payload[rec.payload_len] = '\0';
    }
    for (int m = 0; m < coll->spec.n_modalities; m++) {
        if (rec.vid[m] == 0)
            continue;
        rc = read_raw(txn, st, coll, iid, m, &out->embeddings[out->n_embeddings]);
        if (rc != 0)
            return rc == MDB_NOTFOUND ? MDB_CORRUPTED : rc;
        out->n_embeddings++;
    }
    return 0;
}

amc_status ami_point_get(ami_store *st, const char *collection, const char *id,
                         ami_point_data *out, amc_error *err)
{
    memset(out, 0, sizeof *out);
    if (collection == NULL || id == NULL || id[0] == '\0' || strlen(id) > AMI_ID_MAX)
        return amc_error_set(err, AMC_EINVAL, "get needs a collection and an id of 1 to %d "
                             "bytes", AMI_ID_MAX);
    pthread_rwlock_rdlock(&st->lock);
    const ami_coll_ *coll = ami_coll_find_(st, collection);
    MDB_txn *txn = NULL;
    amc_status s = coll != NULL ? ami_read_begin_(st, &txn, err)
                                : amc_error_set(err, AMC_ENOTFOUND, "collection %s not found",
                                                collection);
    if (s == AMC_OK) {
        int rc = read_point(txn, st, coll, id, out);
        if (rc == MDB_NOTFOUND)
            s = amc_error_set(err, AMC_ENOTFOUND, "point \"%s\" not found in collection %s", id,
                              collection);
        else if (rc != 0)
            s = ami_lmdb_status_(rc, "read point", err);
        mdb_txn_abort(txn);
    }
    pthread_rwlock_unlock(&st->lock);
    if (s != AMC_OK)
        ami_point_data_free(out);
    return s;
}
