/* libFuzzer target for the payload filter of ami_search(): the input is split at the first
 * newline into filter JSON and payload JSON. A filter must either compile, after which it is
 * matched against the payload, or fail with AMC_EINVAL and a message. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "index/store_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nl = memchr(data, '\n', size);
    size_t filter_len = nl != NULL ? (size_t)(nl - data) : size;
    cJSON *filter = cJSON_ParseWithLength((const char *)data, filter_len);
    cJSON *payload = nl != NULL ? cJSON_ParseWithLength((const char *)nl + 1,
                                                        size - filter_len - 1)
                                : NULL;

    ami_filter_ *compiled = NULL;
    amc_error err = {0};
    amc_status rc = ami_filter_compile_(filter, &compiled, &err);
    if (rc != AMC_OK && (rc != AMC_EINVAL || err.msg[0] == '\0' || compiled != NULL))
        abort();
    if (rc == AMC_OK) {
        int match = ami_filter_match_(compiled, payload);
        if (match != 0 && match != 1)
            abort();
        if (filter == NULL && match != 1)
            abort();
    }
    ami_filter_free_(compiled);
    cJSON_Delete(filter);
    cJSON_Delete(payload);
    return 0;
}
