/* Collections: definitions in LMDB, the in-memory table, create, drop, list, describe and
 * re-projection for a new connector.
 *
 * A definition is stored as JSON text under the collection's name:
 *   {"cid": 3, "space": "contrastive", "fingerprint": "<16 hex>",
 *    "modalities": [{"name": "text", "dim": 100, "index": "HNSW32"}, ...]}
 * where dim is the width of the raw embeddings the collection stores. */
#include "index/store_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_COLLECTIONS 256

/* ---------------------------------------------------------------------------------------
 * Spaces and names
 * --------------------------------------------------------------------------------------- */

amc_status ami_space_parse(const char *text, ami_space *out, amc_error *err)
{
    if (text != NULL && strcmp(text, "contrastive") == 0)
        *out = AMI_SPACE_CONTRASTIVE;
    else if (text != NULL && strcmp(text, "predictive") == 0)
        *out = AMI_SPACE_PREDICTIVE;
    else
        return amc_error_set(err, AMC_EINVAL, "space \"%s\" is invalid; use \"contrastive\" or "
                             "\"predictive\"", text != NULL ? text : "(null)");
    return AMC_OK;
}

const char *ami_space_name(ami_space space)
{
    return space == AMI_SPACE_PREDICTIVE ? "predictive" : "contrastive";
}

static amc_status check_name(const char *name, amc_error *err)
{
    size_t n = strnlen(name, AMI_NAME_MAX);
    if (n == 0 || n >= AMI_NAME_MAX)
        return amc_error_set(err, AMC_EINVAL, "collection name must be 1 to %d bytes",
                             AMI_NAME_MAX - 1);
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return amc_error_set(err, AMC_EINVAL, "collection name \"%s\" has invalid character "
                                 "'%c'; use letters, digits, '_' and '-'", name, c);
    }
    return AMC_OK;
}

/* ---------------------------------------------------------------------------------------
 * Binding a collection to a connector
 * --------------------------------------------------------------------------------------- */

amc_status ami_coll_bind_(ami_store *st, const amc_connector *conn, ami_coll_ *coll,
                          int *conn_mod, amc_error *err)
{
    (void)st;
    const ami_collection_spec *spec = &coll->spec;
    for (int m = 0; m < spec->n_modalities; m++) {
        int c = amc_config_modality(&conn->cfg, spec->modalities[m]);
        if (c < 0)
            return amc_error_set(err, AMC_EINVAL, "collection %s: modality \"%s\" is not in the "
                                 "connector", spec->name, spec->modalities[m]);
        if (coll->raw_dim[m] != 0 && coll->raw_dim[m] != conn->cfg.modalities[c].dim)
            return amc_error_set(err, AMC_EINVAL, "collection %s stores %s embeddings of %d "
                                 "dims but the connector expects %d", spec->name,
                                 spec->modalities[m], coll->raw_dim[m],
                                 conn->cfg.modalities[c].dim);
        conn_mod[m] = c;
    }
    if (spec->space != AMI_SPACE_PREDICTIVE)
        return AMC_OK;

    /* The predictive space needs a prediction head for every ordered pair. */
    for (int a = 0; a < spec->n_modalities; a++)
        for (int b = 0; b < spec->n_modalities; b++)
            if (a != b && amc_config_direction(&conn->cfg, conn_mod[a], conn_mod[b]) < 0)
                return amc_error_set(err, AMC_EINVAL, "collection %s: predictive space needs "
                                     "direction %s->%s, which the connector lacks", spec->name,
                                     spec->modalities[a], spec->modalities[b]);
    return AMC_OK;
}

void ami_coll_free_(ami_coll_ *coll)
{
    if (coll == NULL)
        return;
    for (int m = 0; m < coll->spec.n_modalities; m++)
        ami_index_destroy_(&coll->idx[m]);
    free(coll);
}

/* Binds coll to st's connector and creates its (empty) indices. */
static amc_status coll_prepare(ami_store *st, ami_coll_ *coll, amc_error *err)
{
    amc_status s = ami_coll_bind_(st, st->conn, coll, coll->conn_mod, err);
    for (int m = 0; s == AMC_OK && m < coll->spec.n_modalities; m++) {
        coll->raw_dim[m] = st->conn->cfg.modalities[coll->conn_mod[m]].dim;
        int dim = ami_index_dim_(st->conn, coll->spec.space, coll->conn_mod[m]);
        s = ami_index_init_(&coll->idx[m], coll->spec.index_spec[m], dim, err);
        if (s != AMC_OK) {
            for (int j = 0; j < m; j++)
                ami_index_destroy_(&coll->idx[j]);
            pthread_rwlock_destroy(&coll->idx[m].param_lock);
        }
    }
    return s;
}

/* ---------------------------------------------------------------------------------------
 * Definitions as JSON
 * --------------------------------------------------------------------------------------- */

char *ami_coll_def_json_(const ami_coll_ *coll)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *mods = cJSON_AddArrayToObject(root, "modalities");
    cJSON_AddNumberToObject(root, "cid", coll->cid);
    cJSON_AddStringToObject(root, "space", ami_space_name(coll->spec.space));
    cJSON_AddStringToObject(root, "fingerprint", coll->fingerprint);
    for (int m = 0; mods != NULL && m < coll->spec.n_modalities; m++) {
        cJSON *item = cJSON_CreateObject();
        cJSON_AddStringToObject(item, "name", coll->spec.modalities[m]);
        cJSON_AddNumberToObject(item, "dim", coll->raw_dim[m]);
        cJSON_AddStringToObject(item, "index", coll->spec.index_spec[m]);
        cJSON_AddItemToArray(mods, item);
    }
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return text;
}

static int copy_string(char *dst, size_t size, const cJSON *item)
{
    if (!cJSON_IsString(item) || strlen(item->valuestring) >= size)
        return -1;
    memcpy(dst, item->valuestring, strlen(item->valuestring) + 1);
    return 0;
}

static amc_status parse_def(const char *name, const MDB_val *v, ami_coll_ *coll, amc_error *err)
{
    cJSON *root = cJSON_ParseWithLength(v->mv_data, v->mv_size);
    const cJSON *mods = cJSON_GetObjectItemCaseSensitive(root, "modalities");
    const cJSON *cid = cJSON_GetObjectItemCaseSensitive(root, "cid");
    const cJSON *space = cJSON_GetObjectItemCaseSensitive(root, "space");
    int ok = cJSON_IsArray(mods) && cJSON_IsNumber(cid) && cJSON_IsString(space) &&
             cJSON_GetArraySize(mods) >= 1 && cJSON_GetArraySize(mods) <= AMC_MAX_MODALITIES &&
             ami_space_parse(space->valuestring, &coll->spec.space, NULL) == AMC_OK &&
             copy_string(coll->fingerprint, sizeof coll->fingerprint,
                         cJSON_GetObjectItemCaseSensitive(root, "fingerprint")) == 0 &&
             strlen(name) < AMI_NAME_MAX;
    if (ok) {
        memcpy(coll->spec.name, name, strlen(name) + 1);
        coll->cid = (uint32_t)cid->valuedouble;
        coll->spec.n_modalities = cJSON_GetArraySize(mods);
    }
    for (int m = 0; ok && m < coll->spec.n_modalities; m++) {
        const cJSON *item = cJSON_GetArrayItem(mods, m);
        const cJSON *dim = cJSON_GetObjectItemCaseSensitive(item, "dim");
        ok = cJSON_IsNumber(dim) &&
             copy_string(coll->spec.modalities[m], AMC_NAME_MAX,
                         cJSON_GetObjectItemCaseSensitive(item, "name")) == 0 &&
             copy_string(coll->spec.index_spec[m], AMI_SPEC_MAX,
                         cJSON_GetObjectItemCaseSensitive(item, "index")) == 0;
        if (ok)
            coll->raw_dim[m] = dim->valueint;
    }
    cJSON_Delete(root);
    if (!ok)
        return amc_error_set(err, AMC_EFORMAT, "collection %s: stored definition is malformed",
                             name);
    return AMC_OK;
}

static amc_status load_one(ami_store *st, MDB_txn *txn, const MDB_val *k, const MDB_val *v,
                           amc_error *err)
{
    char name[AMI_NAME_MAX + 1];
    size_t len = k->mv_size < AMI_NAME_MAX ? k->mv_size : AMI_NAME_MAX;
    memcpy(name, k->mv_data, len);
    name[len] = '\0';
    ami_coll_ *coll = calloc(1, sizeof *coll);
    if (coll == NULL)
        return amc_error_set(err, AMC_ENOMEM, "out of memory loading collections");
    amc_status s = parse_def(name, v, coll, err);

    /* Counts come from the stats record written with every change. */
    unsigned char key[4];
    ami_put_be32_(key, coll->cid);
    MDB_val sk = {sizeof key, key}, sv;
    if (s == AMC_OK && mdb_get(txn, st->db_stats, &sk, &sv) == 0 &&
        sv.mv_size == sizeof coll->stats)
        memcpy(&coll->stats, sv.mv_data, sizeof coll->stats);
    if (s == AMC_OK)
        s = coll_prepare(st, coll, err);
    if (s != AMC_OK) {
        free(coll);
        return s;
    }
    st->colls[st->n_colls++] = coll;
    return AMC_OK;
}

amc_status ami_colls_load_(ami_store *st, MDB_txn *txn, amc_error *err)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, st->db_colls, &cur);
    if (rc != 0)
        return ami_lmdb_status_(rc, "open collection cursor", err);
    MDB_val k, v;
    amc_status s = AMC_OK;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && s == AMC_OK;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (st->n_colls == MAX_COLLECTIONS)
            s = amc_error_set(err, AMC_EFORMAT, "more than %d collections stored",
                              MAX_COLLECTIONS);
        else
            s = load_one(st, txn, &k, &v, err);
    }
    mdb_cursor_close(cur);
    if (s == AMC_OK && rc != MDB_NOTFOUND)
        s = ami_lmdb_status_(rc, "read collections", err);
    return s;
}

int ami_stats_put_(MDB_txn *txn, ami_store *st, const ami_coll_ *coll,
                   const ami_stats_record_ *stats)
{
    unsigned char key[4];
    ami_put_be32_(key, coll->cid);
    MDB_val k = {sizeof key, key}, v = {sizeof *stats, (void *)stats};
    return mdb_put(txn, st->db_stats, &k, &v, 0);
}

static int put_def(MDB_txn *txn, ami_store *st, const ami_coll_ *coll)
{
    char *text = ami_coll_def_json_(coll);
    if (text == NULL)
        return ENOMEM;
    MDB_val k = {strlen(coll->spec.name), (void *)coll->spec.name}, v = {strlen(text), text};
    int rc = mdb_put(txn, st->db_colls, &k, &v, 0);
    free(text);
    return rc;
}

/* ---------------------------------------------------------------------------------------
 * Create
 * --------------------------------------------------------------------------------------- */

typedef struct create_ctx {
    ami_store *st;
    ami_coll_ *coll;
    uint32_t cid;
} create_ctx;

static int create_body(MDB_txn *txn, void *ctx, amc_error *err)
{
    create_ctx *c = ctx;
    ami_store *st = c->st;
    MDB_val k = {strlen(c->coll->spec.name), c->coll->spec.name}, v;
    int rc = mdb_get(txn, st->db_colls, &k, &v);
    if (rc == 0) {
        amc_error_set(err, AMC_EEXIST, "collection %s already exists", c->coll->spec.name);
        return -1;
    }
    if (rc != MDB_NOTFOUND)
        return rc;

    /* Collection ids are never reused, so stale snapshot files cannot match a new one. */
    uint64_t next = 0;
    rc = ami_meta_get_u64_(txn, st, "next_cid", &next);
    if (rc != 0)
        return rc;
    c->cid = (uint32_t)next + 1;
    c->coll->cid = c->cid;
    rc = ami_meta_put_u64_(txn, st, "next_cid", c->cid);
    if (rc == 0)
        rc = put_def(txn, st, c->coll);
    ami_stats_record_ zero = {0};
    if (rc == 0)
        rc = ami_stats_put_(txn, st, c->coll, &zero);
    return rc;
}

static amc_status check_spec(const ami_collection_spec *spec, amc_error *err)
{
    amc_status s = check_name(spec->name, err);
    if (s != AMC_OK)
        return s;
    if (spec->n_modalities < 1 || spec->n_modalities > AMC_MAX_MODALITIES)
        return amc_error_set(err, AMC_EINVAL, "collection %s: modalities must list 1 to %d "
                             "modalities", spec->name, AMC_MAX_MODALITIES);
    if (spec->space != AMI_SPACE_CONTRASTIVE && spec->space != AMI_SPACE_PREDICTIVE)
        return amc_error_set(err, AMC_EINVAL, "collection %s: space is invalid", spec->name);
    for (int m = 0; m < spec->n_modalities; m++) {
        if (strnlen(spec->index_spec[m], AMI_SPEC_MAX) >= AMI_SPEC_MAX ||
            strnlen(spec->modalities[m], AMC_NAME_MAX) >= AMC_NAME_MAX)
            return amc_error_set(err, AMC_EINVAL, "collection %s: modality %d name or index "
                                 "spec is not NUL-terminated", spec->name, m);
        for (int j = 0; j < m; j++)
            if (strcmp(spec->modalities[j], spec->modalities[m]) == 0)
                return amc_error_set(err, AMC_EINVAL, "collection %s: modality \"%s\" is listed "
                                     "twice", spec->name, spec->modalities[m]);
    }
    return AMC_OK;
}

amc_status ami_collection_create(ami_store *st, const ami_collection_spec *spec, amc_error *err)
{
    amc_status s = check_spec(spec, err);
    if (s != AMC_OK)
        return s;
    ami_coll_ *coll = calloc(1, sizeof *coll);
    if (coll == NULL)
        return amc_error_set(err, AMC_ENOMEM, "out of memory creating a collection");
    coll->spec = *spec;
    for (int m = 0; m < spec->n_modalities; m++)
        if (coll->spec.index_spec[m][0] == '\0')
            snprintf(coll->spec.index_spec[m], AMI_SPEC_MAX, "Flat");

    pthread_mutex_lock(&st->write_mutex);
    memcpy(coll->fingerprint, st->fingerprint, sizeof coll->fingerprint);
    s = coll_prepare(st, coll, err);
    if (s != AMC_OK) {
        free(coll);
        pthread_mutex_unlock(&st->write_mutex);
        return s;
    }
    if (st->n_colls == MAX_COLLECTIONS)
        s = amc_error_set(err, AMC_EINVAL, "the store already has %d collections, the maximum",
                          MAX_COLLECTIONS);
    create_ctx ctx = {st, coll, 0};
    if (s == AMC_OK)
        s = ami_write_txn_(st, create_body, &ctx, err);
    if (s != AMC_OK) {
        ami_coll_free_(coll);
        pthread_mutex_unlock(&st->write_mutex);
        return s;
    }
    coll->cid = ctx.cid;

    /* Insert in name order, the order LMDB lists them at the next open. */
    pthread_rwlock_wrlock(&st->lock);
    int at = st->n_colls;
    while (at > 0 && strcmp(st->colls[at - 1]->spec.name, coll->spec.name) > 0) {
        st->colls[at] = st->colls[at - 1];
        at--;
    }
    st->colls[at] = coll;
    st->n_colls++;
    pthread_rwlock_unlock(&st->lock);
    pthread_mutex_unlock(&st->write_mutex);
    return AMC_OK;
}

/* ---------------------------------------------------------------------------------------
 * Drop
 * --------------------------------------------------------------------------------------- */

/* Deletes every key of dbi that starts with prefix. */
static int delete_prefix(MDB_txn *txn, MDB_dbi dbi, const unsigned char *prefix, size_t len)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, dbi, &cur);
    if (rc != 0)
        return rc;
    for (;;) {
        MDB_val k = {len, (void *)prefix}, v;
        rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
        if (rc != 0 || k.mv_size < len || memcmp(k.mv_data, prefix, len) != 0)
            break;
        rc = mdb_cursor_del(cur, 0);
        if (rc != 0)
            break;
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

static int drop_body(MDB_txn *txn, void *ctx, amc_error *err)
{
    (void)err;
    create_ctx *c = ctx;
    ami_store *st = c->st;
    MDB_val k = {strlen(c->coll->spec.name), c->coll->spec.name};
    int rc = mdb_del(txn, st->db_colls, &k, NULL);
    unsigned char prefix[4];
    ami_put_be32_(prefix, c->coll->cid);
    MDB_dbi dbis[] = {st->db_stats, st->db_ids, st->db_points, st->db_raw, st->db_vecs};
    for (size_t i = 0; rc == 0 && i < sizeof dbis / sizeof dbis[0]; i++)
        rc = delete_prefix(txn, dbis[i], prefix, sizeof prefix);
    return rc;
}

amc_status ami_collection_drop(ami_store *st, const char *name, amc_error *err)
{
    pthread_mutex_lock(&st->write_mutex);
    ami_coll_ *coll = ami_coll_find_(st, name);
    if (coll == NULL) {
        pthread_mutex_unlock(&st->write_mutex);
        return amc_error_set(err, AMC_ENOTFOUND, "collection %s not found", name);
    }
    create_ctx ctx = {st, coll, coll->cid};
    amc_status s = ami_write_txn_(st, drop_body, &ctx, err);
    if (s == AMC_OK) {
        pthread_rwlock_wrlock(&st->lock);
        int i = 0;
        while (st->colls[i] != coll)
            i++;
        memmove(&st->colls[i], &st->colls[i + 1], sizeof(st->colls[0]) * (size_t)(st->n_colls - i - 1));
        st->n_colls--;
        pthread_rwlock_unlock(&st->lock);

        /* The operation log keeps this cid's entries until pruning; replay skips them. */
        for (int m = 0; m < coll->spec.n_modalities; m++) {
            char path[4200];
            ami_snapshot_path_(st, coll->cid, m, path, sizeof path);
            unlink(path);
        }
        ami_coll_free_(coll);
    }
    pthread_mutex_unlock(&st->write_mutex);
    return s;
}

/* ---------------------------------------------------------------------------------------
 * List and describe
 * --------------------------------------------------------------------------------------- */

/* Fills *info from coll; caller holds the lock shared. */
static void describe(const ami_coll_ *coll, ami_collection_info *info)
{
    memset(info, 0, sizeof *info);
    info->spec = coll->spec;
    info->points = coll->stats.points;
    info->seq = coll->stats.seq;
    memcpy(info->fingerprint, coll->fingerprint, sizeof info->fingerprint);
    for (int m = 0; m < coll->spec.n_modalities; m++) {
        const ami_index_ *idx = &coll->idx[m];
        info->vectors[m] = coll->stats.vectors[m];
        info->dim[m] = idx->dim;
        info->trained[m] = idx->faiss != NULL;
        if (idx->faiss != NULL)
            info->indexed[m] = (uint64_t)faiss_Index_ntotal(idx->faiss) - idx->dead;
    }
}

amc_status ami_collection_describe(ami_store *st, const char *name, ami_collection_info *out,
                                   amc_error *err)
{
    pthread_rwlock_rdlock(&st->lock);
    const ami_coll_ *coll = ami_coll_find_(st, name);
    if (coll != NULL)
        describe(coll, out);
    pthread_rwlock_unlock(&st->lock);
    if (coll == NULL)
        return amc_error_set(err, AMC_ENOTFOUND, "collection %s not found", name);
    return AMC_OK;
}

amc_status ami_collection_list(ami_store *st, ami_collection_info **out, int *n, amc_error *err)
{
    *out = NULL;
    *n = 0;
    pthread_rwlock_rdlock(&st->lock);
    ami_collection_info *infos = NULL;
    if (st->n_colls > 0)
        infos = calloc((size_t)st->n_colls, sizeof *infos);
    if (st->n_colls > 0 && infos == NULL) {
        pthread_rwlock_unlock(&st->lock);
        return amc_error_set(err, AMC_ENOMEM, "out of memory listing collections");
    }
    for (int i = 0; i < st->n_colls; i++)
        describe(st->colls[i], &infos[i]);
    *n = st->n_colls;
    *out = infos;
    pthread_rwlock_unlock(&st->lock);
    return AMC_OK;
}

/* ---------------------------------------------------------------------------------------
 * Re-projection for a new connector
 * --------------------------------------------------------------------------------------- */

typedef struct reproject_ctx {
    ami_store *st;
    ami_coll_ *coll;
    const amc_connector *conn;
    const int *conn_mod;
    char fingerprint[17];
    amc_workspace *ws;
    float *out;
} reproject_ctx;

/* Rewrites the projected vector of one raw record (key cid + iid + modality). */
static int reproject_one(MDB_txn *txn, reproject_ctx *c, const MDB_val *k, const MDB_val *v,
                         amc_error *err)
{
    ami_store *st = c->st;
    const unsigned char *key = k->mv_data;
    int m = key[12];
    int32_t hdr[2];
    if (v->mv_size < sizeof hdr || m >= c->coll->spec.n_modalities)
        return MDB_CORRUPTED;
    memcpy(hdr, v->mv_data, sizeof hdr);

    /* The point record gives the vid under which the vector is stored. */
    MDB_val pk = {12, (void *)key}, pv;
    int rc = mdb_get(txn, st->db_points, &pk, &pv);
    if (rc != 0)
        return rc;
    const unsigned char *rec = pv.mv_data;
    uint16_t id_len;
    memcpy(&id_len, rec, 2);
    uint64_t vid;
    memcpy(&vid, rec + 2 + id_len + 8 * m, 8);

    size_t n = (size_t)hdr[0] * (size_t)hdr[1];
    float *raw = malloc(sizeof(float) * n);
    if (raw == NULL)
        return ENOMEM;
    memcpy(raw, (const char *)v->mv_data + sizeof hdr, sizeof(float) * n);
    amc_status s = ami_project_items_(c->conn, c->ws, c->coll->spec.space, c->conn_mod[m], raw,
                                      1, hdr[0], c->out + 2, err);
    free(raw);
    if (s != AMC_OK)
        return -1;

    int dim = ami_index_dim_(c->conn, c->coll->spec.space, c->conn_mod[m]);
    unsigned char vkey[13];
    memcpy(vkey, key, 4);
    vkey[4] = (unsigned char)m;
    ami_put_be64_(vkey + 5, vid);
    uint64_t iid = ami_get_be64_(key + 4);
    memcpy(c->out, &iid, 8);
    MDB_val vk = {sizeof vkey, vkey}, vv = {8 + sizeof(float) * (size_t)dim, c->out};
    return mdb_put(txn, st->db_vecs, &vk, &vv, 0);
}

static int reproject_body(MDB_txn *txn, void *ctx, amc_error *err)
{
    reproject_ctx *c = ctx;
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, c->st->db_raw, &cur);
    if (rc != 0)
        return rc;
    unsigned char prefix[4];
    ami_put_be32_(prefix, c->coll->cid);
    MDB_val k = {sizeof prefix, prefix}, v;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != 13 || memcmp(k.mv_data, prefix, 4) != 0)
            break;
        rc = reproject_one(txn, c, &k, &v, err);
        if (rc != 0)
            break;
    }
    mdb_cursor_close(cur);
    if (rc != 0 && rc != MDB_NOTFOUND)
        return rc;

    /* The definition records the connector the vectors now come from. */
    ami_coll_ copy = *c->coll;
    memcpy(copy.fingerprint, c->fingerprint, sizeof copy.fingerprint);
    return put_def(txn, c->st, &copy);
}

amc_status ami_reproject_(ami_store *st, ami_coll_ *coll, const amc_connector *conn,
                          const int *conn_mod, amc_error *err)
{
    reproject_ctx c = {st, coll, conn, conn_mod, {0}, NULL, NULL};
    amc_connector_fingerprint(conn, c.fingerprint);
    if (strcmp(c.fingerprint, coll->fingerprint) == 0)
        return AMC_OK;

    /* One transaction: the collection switches completely or not at all.
     * TODO: a very large collection can exceed one LMDB transaction (MDB_TXN_FULL). */
    int width = 8;
    for (int m = 0; m < coll->spec.n_modalities; m++) {
        int dim = ami_index_dim_(conn, coll->spec.space, conn_mod[m]);
        width = dim > width ? dim : width;
    }
    c.ws = ami_workspace_take_(st);
    c.out = malloc(sizeof(float) * (size_t)(width + 2));
    amc_status s = c.ws != NULL && c.out != NULL
                       ? ami_write_txn_(st, reproject_body, &c, err)
                       : amc_error_set(err, AMC_ENOMEM, "out of memory re-projecting");
    ami_workspace_give_(st, c.ws);
    free(c.out);
    if (s != AMC_OK)
        return amc_error_prefix(err, "re-project collection %s", coll->spec.name);
    pthread_rwlock_wrlock(&st->lock);
    memcpy(coll->fingerprint, c.fingerprint, sizeof coll->fingerprint);
    pthread_rwlock_unlock(&st->lock);
    fprintf(stderr, "lvl=info event=collection_reprojected collection=%s fingerprint=%s\n",
            coll->spec.name, coll->fingerprint);
    return AMC_OK;
}
