/* The .safetensors format: an 8-byte little-endian header length, a JSON header mapping tensor
 * names to {dtype, shape, data_offsets}, an optional "__metadata__" object of string values,
 * then the raw tensor bytes. altmoe stores connector models in it.
 *
 * The reader maps the file and validates the whole header before any tensor is used: the header
 * length against the file size, every dtype, shape and byte range, and that ranges neither
 * overlap nor leave the data section. Dtypes F32, F16 and BF16 are readable as float32. */
#ifndef ALTMOE_CORE_SAFETENSORS_H
#define ALTMOE_CORE_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "core/npy.h"

#define AMC_ST_MAX_DIMS 8

typedef struct amc_st_tensor {
    char *name;                      /* owned by the amc_st_file */
    amc_dtype dtype;
    int ndim;
    int64_t shape[AMC_ST_MAX_DIMS];
    size_t begin, end;               /* byte range within the data section */
} amc_st_tensor;

typedef struct amc_st_file {
    int n_tensors;
    amc_st_tensor *tensors;
    int n_meta;
    char **meta_keys;                /* "__metadata__" entries, owned */
    char **meta_values;
    const uint8_t *data;             /* the data section */
    size_t data_len;
    /* private */
    void *map;
    size_t map_len;
    uint8_t *copy;
} amc_st_file;

/* Maps and validates path. On failure out is left empty (safe to close) and err names the file,
 * the tensor if one is at fault, and the problem. */
amc_status amc_st_open(amc_st_file *out, const char *path, amc_error *err);

/* Validates an in-memory file image of len bytes; the image is copied. */
amc_status amc_st_parse(amc_st_file *out, const void *buf, size_t len, amc_error *err);

/* Releases everything; safe on an empty or failed amc_st_file. */
void amc_st_close(amc_st_file *file);

/* Returns the tensor called name, or NULL. */
const amc_st_tensor *amc_st_find(const amc_st_file *file, const char *name);

/* Returns the "__metadata__" value of key (owned by file), or NULL. */
const char *amc_st_meta_get(const amc_st_file *file, const char *key);

/* Product of the tensor's shape. */
int64_t amc_st_numel(const amc_st_tensor *tensor);

/* Copies the tensor into out as float32, converting F16 and BF16; numel must equal the tensor's
 * element count or AMC_EINVAL is returned. */
amc_status amc_st_read_f32(const amc_st_file *file, const amc_st_tensor *tensor, float *out,
                           size_t numel, amc_error *err);

typedef struct amc_st_entry {
    const char *name;
    const float *data;               /* float32, row-major */
    int ndim;
    int64_t shape[AMC_ST_MAX_DIMS];
} amc_st_entry;

/* Writes n float32 tensors and n_meta metadata pairs to path: temporary file, fsync, rename,
 * fsync of the folder. Tensors are laid out in the order given. */
amc_status amc_st_save(const char *path, const amc_st_entry *entries, int n,
                       const char *const *meta_keys, const char *const *meta_values, int n_meta,
                       amc_error *err);

#endif
