/* libFuzzer target for the .npy parser: any input must either parse into a consistent array,
 * every element of which is then read, or fail with AMC_EFORMAT and a message. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/npy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    amc_npy npy;
    amc_error err = {0};
    amc_status rc = amc_npy_parse(&npy, data, size, &err);
    if (rc != AMC_OK) {
        if (rc != AMC_EFORMAT && rc != AMC_ENOMEM)
            abort();
        if (err.msg[0] == '\0')
            abort();
        amc_npy_free(&npy);
        return 0;
    }

    /* Touch every element, so ASan reports any read past the copied data. */
    int64_t n = amc_npy_rows(&npy) * amc_npy_row_len(&npy);
    if (npy.ndim != 2 && npy.ndim != 3)
        abort();
    volatile float sink = 0.0f;
    for (int64_t i = 0; i < n; i++)
        sink += npy.data[i];
    (void)sink;
    amc_npy_free(&npy);
    return 0;
}
