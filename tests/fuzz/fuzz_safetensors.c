/* libFuzzer target for the safetensors parser: any input must either validate, after which
 * every tensor is read as float32 and every name and metadata key looked up, or fail with
 * AMC_EFORMAT and a message. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    amc_st_file file;
    amc_error err = {0};
    amc_status rc = amc_st_parse(&file, data, size, &err);
    if (rc != AMC_OK) {
        if (rc != AMC_EFORMAT && rc != AMC_ENOMEM)
            abort();
        if (err.msg[0] == '\0')
            abort();
        amc_st_close(&file);
        return 0;
    }

    for (int i = 0; i < file.n_tensors; i++) {
        const amc_st_tensor *t = &file.tensors[i];
        if (amc_st_find(&file, t->name) != t)
            abort();
        /* Validation bounds the element count by the data size, so this allocation is small. */
        size_t numel = (size_t)amc_st_numel(t);
        float *out = malloc(numel > 0 ? numel * sizeof(float) : 1);
        if (out == NULL)
            abort();
        if (amc_st_read_f32(&file, t, out, numel, &err) != AMC_OK)
            abort();
        free(out);
    }
    for (int i = 0; i < file.n_meta; i++)
        if (amc_st_meta_get(&file, file.meta_keys[i]) == NULL)
            abort();
    amc_st_close(&file);
    return 0;
}
