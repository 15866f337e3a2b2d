/* libFuzzer target for the streaming admin ingest: the NDJSON form and the binary float32 form
 * of POST /admin/v1/collections/{name}/ingest, fed in chunks into a real store (LMDB in a
 * temporary directory) with a small connector (text 4-d, image 3-d).
 *
 * Input: byte 0 picks the form (bit 0: 0 NDJSON, 1 binary) and the ?modality= of the binary
 * form (bits 1-2: text, image, an unknown name, none); byte 1 is the chunk size minus one, so
 * lines and records straddle chunk boundaries; the rest is the body. Every input must end in
 * a 200 or a 4xx envelope, never a 5xx (the store has room), a crash or a leak. */
#include <ftw.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/api.h"
#include "config/config.h"
#include "core/connector.h"
#include "index/store.h"
#include "server/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define RESET_EVERY 2000 /* inputs between drops of the collection, to bound the store's size */

static char data_dir[] = "/tmp/altmoe-fuzz-ingest-XXXXXX";
static ami_store *store;
static ama_ctx *api;

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void teardown(void)
{
    ama_ctx_free(api);
    ami_store_close(store);
    nftw(data_dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
}

static void create_collection(void)
{
    static const char *const mods[] = {"text", "image"};
    ami_collection_spec spec;
    memset(&spec, 0, sizeof spec);
    snprintf(spec.name, sizeof spec.name, "fz");
    spec.n_modalities = 2;
    for (int i = 0; i < 2; i++)
        snprintf(spec.modalities[i], sizeof spec.modalities[i], "%s", mods[i]);
    if (ami_collection_create(store, &spec, NULL) != AMC_OK)
        abort();
}

static void setup(void)
{
    static const char cfg_json[] =
        "{\"modalities\": [{\"name\": \"text\", \"dim\": 4}, {\"name\": \"image\", \"dim\": 3}],"
        " \"hidden\": 8, \"latent\": 8, \"experts\": 2, \"top_k\": 1}";
    amc_config mcfg;
    amc_connector *conn;
    amcfg_config cfg;
    ami_store_options opts = {.read_only_snapshots = 1};
    ams_log_set_level(AMS_LOG_ERROR + 1);
    amcfg_defaults(&cfg);
    cfg.ingest_batch = 7;
    if (mkdtemp(data_dir) == NULL || amc_config_from_json(&mcfg, cfg_json, NULL) != AMC_OK ||
        amc_connector_create(&conn, &mcfg, NULL) != AMC_OK ||
        ami_store_open(&store, data_dir, conn, &opts, NULL) != AMC_OK ||
        ama_ctx_create(&api, &cfg, store, conn, NULL) != AMC_OK)
        abort();
    create_collection();
    atexit(teardown);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const modality[] = {"text", "image", "audio", NULL};
    static long runs;
    if (size < 2)
        return 0;
    if (store == NULL)
        setup();
    if (++runs % RESET_EVERY == 0) {
        if (ami_collection_drop(store, "fz", NULL) != AMC_OK)
            abort();
        create_collection();
    }

    ama_route route = {.id = AMA_ROUTE_ADMIN_INGEST, .name = "admin_ingest", .admin = 1,
                       .has_body = 1};
    snprintf(route.collection, sizeof route.collection, "fz");
    int binary = data[0] & 1;
    ama_request req = {.route = &route,
                       .content_type = binary ? "application/octet-stream"
                                              : "application/x-ndjson",
                       .query_modality = binary ? modality[(data[0] >> 1) & 3] : NULL};
    size_t chunk = (size_t)data[1] + 1;
    const char *body = (const char *)data + 2;
    size_t len = size - 2;

    ama_response resp = {0};
    ama_ingest *ing = ama_ingest_begin(api, &req, &resp);
    if (ing != NULL) {
        for (size_t off = 0; off < len; off += chunk)
            if (ama_ingest_feed(ing, body + off, len - off < chunk ? len - off : chunk) != 0)
                break;
        ama_ingest_finish(ing, &resp);
        ama_ingest_free(ing);
    }
    if (resp.status != 200 && (resp.status < 400 || resp.status > 499))
        abort();
    free(resp.body);
    return 0;
}
