/* NumPy .npy files: the embedding exchange format of altmoe.
 *
 * Reads format versions 1.0, 2.0 and 3.0 with dtype '<f4' or '<f2', C order, and 2-D [N, d] or
 * 3-D [N, S, d] shapes; everything else is rejected with a message naming what was found.
 * Float16 data is converted to float32 on load. A '<f4' file whose data starts at a 4-byte
 * aligned offset is memory-mapped, not copied. */
#ifndef ALTMOE_CORE_NPY_H
#define ALTMOE_CORE_NPY_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

typedef enum amc_dtype {
    AMC_DTYPE_F32 = 0,
    AMC_DTYPE_F16,
    AMC_DTYPE_BF16
} amc_dtype;

/* Size in bytes of one element of dtype. */
size_t amc_dtype_size(amc_dtype dtype);

/* IEEE half and bfloat16 conversions (round to nearest even on the way down). */
float amc_f16_to_f32(uint16_t h);
uint16_t amc_f32_to_f16(float f);
float amc_bf16_to_f32(uint16_t h);

typedef struct amc_npy {
    int ndim;           /* 2 or 3 */
    int64_t shape[3];   /* [N, d] or [N, S, d]; shape[ndim..2] are 1 */
    const float *data;  /* float32, row-major, product(shape) elements */
    /* private */
    float *owned;       /* non-NULL when data was copied or converted */
    void *map;          /* non-NULL when the file is mapped */
    size_t map_len;
} amc_npy;

/* Loads path into out. On success out->data stays valid until amc_npy_free(out). On failure
 * out is left empty (safe to free) and err names the file and the problem. */
amc_status amc_npy_load(amc_npy *out, const char *path, amc_error *err);

/* Parses an in-memory .npy image of len bytes; the data is always copied, so buf may be freed
 * afterwards. Same checks and errors as amc_npy_load. */
amc_status amc_npy_parse(amc_npy *out, const void *buf, size_t len, amc_error *err);

/* Releases what out holds and empties it; safe on an empty or failed amc_npy. */
void amc_npy_free(amc_npy *out);

/* Number of rows (shape[0]) and floats per row (product of the remaining dims). */
int64_t amc_npy_rows(const amc_npy *npy);
int64_t amc_npy_row_len(const amc_npy *npy);

/* Writes data (float32, row-major) with the given 2-D or 3-D shape as a version 1.0 file with
 * dtype '<f4' (dtype AMC_DTYPE_F32) or '<f2' (AMC_DTYPE_F16). The file is written to a temporary
 * name in the same folder, fsynced and renamed, so a reader never sees a partial file. */
amc_status amc_npy_save(const char *path, const float *data, int ndim, const int64_t *shape,
                        amc_dtype dtype, amc_error *err);

#endif
