/* libFuzzer target for the request-body parsers of the API: collection definitions, point
 * upserts, single and batch searches, projections and ingest lines, validated against a small connector
 * (text 4-d, image 3-d). The first input byte picks the route; the rest is the body. Every
 * input must get a status of 200 or 4xx/503 and leave no leak (ASan checks that). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "core/connector.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static amc_connector *fuzz_connector(void)
{
    static amc_connector *conn;
    if (conn != NULL)
        return conn;
    static const char cfg_json[] =
        "{\"modalities\": [{\"name\": \"text\", \"dim\": 4}, {\"name\": \"image\", \"dim\": 3}],"
        " \"hidden\": 8, \"latent\": 8, \"experts\": 2, \"top_k\": 1}";
    amc_config cfg;
    if (amc_config_from_json(&cfg, cfg_json, NULL) != AMC_OK ||
        amc_connector_create(&conn, &cfg, NULL) != AMC_OK)
        abort();
    return conn;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const ama_route_id routes[] = {AMA_ROUTE_COLLECTION_CREATE, AMA_ROUTE_POINTS_UPSERT,
                                          AMA_ROUTE_SEARCH, AMA_ROUTE_SEARCH_BATCH,
                                          AMA_ROUTE_PROJECT, AMA_ROUTE_ADMIN_INGEST};
    if (size < 1)
        return 0;
    ama_route_id route = routes[data[0] % (sizeof routes / sizeof routes[0])];
    int status = ama_validate_body(fuzz_connector(), route, (const char *)data + 1, size - 1,
                                   100);
    if (status != 200 && (status < 400 || status > 499) && status != 503)
        abort();
    return 0;
}
