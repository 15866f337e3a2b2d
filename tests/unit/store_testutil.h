/* Helpers shared by the store tests: a small randomly initialised connector (the real one),
 * temporary data directories and deterministic embeddings. Include after cmocka.h. */
#ifndef ALTMOE_TESTS_STORE_TESTUTIL_H
#define ALTMOE_TESTS_STORE_TESTUTIL_H

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/connector.h"
#include "index/store.h"

#define TEXT_DIM 16
#define IMAGE_DIM 12

/* text (16-d) and image (12-d), both directions, H = 16, D = 8, 4 experts, top 2. */
static inline amc_connector *test_connector(uint64_t seed)
{
    amc_config cfg;
    amc_error err = {0};
    const char *json = "{\"modalities\": [{\"name\": \"text\", \"dim\": 16},"
                       " {\"name\": \"image\", \"dim\": 12}],"
                       " \"hidden\": 16, \"latent\": 8, \"experts\": 4, \"top_k\": 2}";
    if (amc_config_from_json(&cfg, json, &err) != AMC_OK) {
        fprintf(stderr, "test connector config: %s\n", err.msg);
        abort();
    }
    amc_connector *conn = NULL;
    if (amc_connector_create(&conn, &cfg, &err) != AMC_OK) {
        fprintf(stderr, "test connector: %s\n", err.msg);
        abort();
    }
    amc_connector_init(conn, seed);
    return conn;
}

/* Connector with text and audio but no image, for reload errors. */
static inline amc_connector *test_connector_without_image(void)
{
    amc_config cfg;
    const char *json = "{\"modalities\": [{\"name\": \"text\", \"dim\": 16},"
                       " {\"name\": \"audio\", \"dim\": 12}],"
                       " \"hidden\": 16, \"latent\": 8, \"experts\": 4, \"top_k\": 2}";
    amc_connector *conn = NULL;
    if (amc_config_from_json(&cfg, json, NULL) != AMC_OK ||
        amc_connector_create(&conn, &cfg, NULL) != AMC_OK)
        abort();
    amc_connector_init(conn, 5);
    return conn;
}

/* Creates a fresh directory under /tmp into buf [64]. */
static inline void test_tmpdir(char *buf)
{
    snprintf(buf, 64, "/tmp/altmoe-store-XXXXXX");
    if (mkdtemp(buf) == NULL)
        abort();
}

/* Removes dir and everything in it (two levels: the LMDB files and snapshots/). */
static inline void test_rmdir(const char *dir)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

/* Fills x [n] with deterministic values in [-1, 1) from (a, b). */
static inline void test_fill(float *x, size_t n, uint64_t a, uint64_t b)
{
    uint64_t s = a * 0x9E3779B97F4A7C15ull ^ (b + 0x632BE59BD9B4E019ull);
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        x[i] = (float)((double)(s >> 11) / 4503599627370496.0 - 1.0);
    }
}

/* Waits up to 60 s for the background builds; returns 1 when the store is ready. */
static inline int test_wait_ready(ami_store *st)
{
    for (int i = 0; i < 12000; i++) {
        if (ami_store_ready(st))
            return 1;
        usleep(5000);
    }
    return 0;
}

static inline ami_collection_spec test_spec(const char *name, const char *text_index,
                                            const char *image_index)
{
    ami_collection_spec spec;
    memset(&spec, 0, sizeof spec);
    snprintf(spec.name, sizeof spec.name, "%s", name);
    spec.n_modalities = image_index != NULL ? 2 : 1;
    snprintf(spec.modalities[0], AMC_NAME_MAX, "text");
    snprintf(spec.index_spec[0], AMI_SPEC_MAX, "%s", text_index);
    if (image_index != NULL) {
        snprintf(spec.modalities[1], AMC_NAME_MAX, "image");
        snprintf(spec.index_spec[1], AMI_SPEC_MAX, "%s", image_index);
    }
    return spec;
}

#endif
