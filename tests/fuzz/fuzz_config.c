/* libFuzzer target for the config file parser: any bytes must be accepted or rejected with a
 * message, never crash, and a config that loads must stay inside the table's bounds. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "config/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    amcfg_config cfg;
    amc_error err;
    amcfg_defaults(&cfg);
    if (amcfg_apply_json(&cfg, (const char *)data, size, "fuzz.json", &err) != AMC_OK)
        return 0;

    /* A config that loaded must be inside the bounds of the table. */
    if (cfg.port < 1 || cfg.port > 65535 || cfg.threads < 1 || cfg.max_k < 1 ||
        cfg.batch_window_us < 0 || cfg.log_level < AMCFG_LOG_DEBUG ||
        cfg.log_level > AMCFG_LOG_ERROR || cfg.max_body_bytes < 1024 ||
        cfg.ingest_batch < 1 || cfg.snapshot_interval_s < 0)
        abort();
    return 0;
}
