/* libFuzzer target for the connector config JSON (amc_config_from_json), which arrives inside
 * a model file's safetensors metadata and in `altmoe init --config`. Any bytes must be
 * accepted or rejected with a message; an accepted config must be inside its bounds and must
 * survive a round trip through amc_config_to_json. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/connector.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (text == NULL)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    amc_config cfg;
    amc_error err;
    amc_status st = amc_config_from_json(&cfg, text, &err);
    free(text);
    if (st != AMC_OK)
        return 0;

    if (cfg.n_modalities < 1 || cfg.n_modalities > AMC_MAX_MODALITIES || cfg.hidden < 1 ||
        cfg.top_k < 1 || cfg.top_k > cfg.n_experts)
        abort();
    char *json = amc_config_to_json(&cfg);
    if (json == NULL)
        return 0;
    amc_config again;
    if (amc_config_from_json(&again, json, &err) != AMC_OK)
        abort();
    free(json);
    if (again.n_modalities != cfg.n_modalities || again.hidden != cfg.hidden || again.latent != cfg.latent ||
        again.n_experts != cfg.n_experts || again.top_k != cfg.top_k ||
        again.n_directions != cfg.n_directions)
        abort();
    return 0;
}
