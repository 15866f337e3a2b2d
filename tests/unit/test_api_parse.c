/* Route matching and strict request-body validation of the API, without a server or a store:
 * each bad body gets the expected HTTP status, and each good one passes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "api/api.h"

static amc_connector *conn;

static int setup(void **state)
{
    (void)state;
    static const char cfg_json[] =
        "{\"modalities\": [{\"name\": \"text\", \"dim\": 4}, {\"name\": \"image\", \"dim\": 3}],"
        " \"hidden\": 8, \"latent\": 8, \"experts\": 2, \"top_k\": 1}";
    amc_config cfg;
    amc_error err;
    if (amc_config_from_json(&cfg, cfg_json, &err) != AMC_OK)
        return -1;
    return amc_connector_create(&conn, &cfg, &err) == AMC_OK ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    amc_connector_free(conn);
    return 0;
}

static void routes_capture_name_and_id(void **state)
{
    (void)state;
    ama_route r;
    ama_response resp;
    const char *allow;
    assert_int_equal(ama_route_match("GET", "/v1/collections/docs/points/a/b", &r, &resp,
                                     &allow), 0);
    assert_int_equal(r.id, AMA_ROUTE_POINT_GET);
    assert_string_equal(r.collection, "docs");
    assert_string_equal(r.point_id, "a/b");

    assert_int_equal(ama_route_match("POST", "/admin/v1/collections/x/ingest", &r, &resp,
                                     &allow), 0);
    assert_true(r.admin);
    assert_true(r.has_body);

    assert_int_equal(ama_route_match("POST", "/v1/collections/docs/search/batch", &r, &resp,
                                     &allow), 0);
    assert_int_equal(r.id, AMA_ROUTE_SEARCH_BATCH);
}

static void routes_reject_unknown_and_wrong_method(void **state)
{
    (void)state;
    ama_route r;
    ama_response resp;
    const char *allow;
    assert_int_equal(ama_route_match("GET", "/v1/nothing", &r, &resp, &allow), 404);
    assert_string_equal(resp.error_code, "not_found");
    free(resp.body);

    assert_int_equal(ama_route_match("PATCH", "/v1/collections/docs", &r, &resp, &allow), 405);
    assert_string_equal(allow, "GET, DELETE");
    free(resp.body);

    assert_int_equal(ama_route_match("GET", "/v1/collections/", &r, &resp, &allow), 404);
    free(resp.body);

    char longname[200];
    memset(longname, 'n', sizeof longname);
    strcpy(longname, "/v1/collections/");
    memset(longname + 16, 'n', 100);
    longname[116] = '\0';
    assert_int_equal(ama_route_match("GET", longname, &r, &resp, &allow), 404);
    assert_non_null(strstr(resp.body, "too long"));
    free(resp.body);
}

typedef struct body_case {
    ama_route_id route;
    const char *body;
    int status;
} body_case;

static void bodies_get_expected_status(void **state)
{
    (void)state;
    static const body_case cases[] = {
        {AMA_ROUTE_SEARCH, "{\"modality\":\"text\",\"embedding\":[1,2,3,4],\"target\":\"image\"}",
         200},
        {AMA_ROUTE_SEARCH, "{\"modality\":\"text\",\"tokens\":[[1,2,3,4],[0,0,0,1]],"
                           "\"target\":\"image\",\"k\":5,\"with_payload\":true}", 200},
        {AMA_ROUTE_SEARCH, "{\"modality\":\"text\",\"embedding\":[1,2,3],\"target\":\"image\"}",
         400},
        {AMA_ROUTE_SEARCH, "{\"modality\":\"text\",\"embedding\":[1,2,3,4],\"target\":\"image\","
                           "\"k\":101}", 400},
        {AMA_ROUTE_SEARCH, "{\"modality\":\"text\",\"embedding\":[1,2,3,4],\"target\":\"image\","
                           "\"k\":1.5}", 400},
        {AMA_ROUTE_SEARCH, "{\"modality\":\"text\",\"embedding\":[1,2,3,1e39],"
                           "\"target\":\"image\"}", 400},
        {AMA_ROUTE_SEARCH, "{\"modality\":\"text\",\"embedding\":[1,2,3,4],\"target\":\"image\","
                           "\"target\":\"text\"}", 400},
        {AMA_ROUTE_SEARCH, "{\"modality\":\"text\",\"embedding\":[1,2,3,4],\"target\":\"image\","
                           "\"filter\":[1]}", 400},
        {AMA_ROUTE_SEARCH, "", 400},
        {AMA_ROUTE_SEARCH, "null", 400},
        {AMA_ROUTE_SEARCH_BATCH, "{\"queries\":[{\"modality\":\"image\",\"embedding\":[1,2,3]}],"
                                 "\"target\":\"text\"}", 200},
        {AMA_ROUTE_SEARCH_BATCH, "{\"queries\":[{\"modality\":\"image\",\"embedding\":[1,2,3],"
                                 "\"k\":3}],\"target\":\"text\"}", 400},
        {AMA_ROUTE_POINTS_UPSERT, "{\"points\":[{\"id\":\"a\",\"modality\":\"image\","
                                  "\"embedding\":[1,2,3],\"payload\":{\"x\":1}}]}", 200},
        {AMA_ROUTE_POINTS_UPSERT, "{\"points\":[{\"id\":\"a\",\"modality\":\"image\","
                                  "\"embedding\":[1,2,3]},{\"id\":\"a\",\"modality\":\"text\","
                                  "\"embedding\":[1,2,3,4]}]}", 200},
        {AMA_ROUTE_POINTS_UPSERT, "{\"points\":[{\"id\":\"a\",\"modality\":\"image\","
                                  "\"embedding\":[1,2,3]},{\"id\":\"a\",\"modality\":\"image\","
                                  "\"embedding\":[1,2,3]}]}", 400},
        {AMA_ROUTE_POINTS_UPSERT, "{\"points\":[{\"id\":\"\",\"modality\":\"image\","
                                  "\"embedding\":[1,2,3]}]}", 400},
        {AMA_ROUTE_POINTS_UPSERT, "{\"points\":[{\"id\":\"a\",\"modality\":\"image\","
                                  "\"tokens\":[]}]}", 400},
        {AMA_ROUTE_COLLECTION_CREATE, "{\"name\":\"docs\",\"index\":{\"image\":\"HNSW32\"}}",
         200},
        {AMA_ROUTE_COLLECTION_CREATE, "{\"name\":\"docs\",\"index\":{\"audio\":\"Flat\"}}", 400},
        {AMA_ROUTE_COLLECTION_CREATE, "{\"name\":\"docs\",\"modalities\":[\"text\",\"text\"]}",
         400},
        {AMA_ROUTE_COLLECTION_CREATE, "{\"name\":\"docs\",\"space\":\"cosine\"}", 400},
        {AMA_ROUTE_PROJECT, "{\"modality\":\"image\",\"embeddings\":[[1,2,3],[4,5,6]]}", 200},
        {AMA_ROUTE_PROJECT, "{\"modality\":\"image\",\"embedding\":[1,2,3],\"target\":\"text\","
                            "\"space\":\"predictive\"}", 200},
        {AMA_ROUTE_PROJECT, "{\"modality\":\"image\",\"embedding\":[1,2,3],"
                            "\"embeddings\":[[1,2,3]]}", 400},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int got = ama_validate_body(conn, cases[i].route, cases[i].body, strlen(cases[i].body),
                                    100);
        if (got != cases[i].status)
            print_error("case %zu: %s\n", i, cases[i].body);
        assert_int_equal(got, cases[i].status);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(routes_capture_name_and_id),
        cmocka_unit_test(routes_reject_unknown_and_wrong_method),
        cmocka_unit_test(bodies_get_expected_status),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
