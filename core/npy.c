/* NumPy .npy reader and writer, and the float16/bfloat16 converters.
 *
 * Layout of a .npy file: the magic "\x93NUMPY", a major and a minor version byte, the header
 * length (uint16 little-endian in version 1.0, uint32 in 2.0 and 3.0), then the header: a Python
 * dict literal such as {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), } padded with
 * spaces and ending in '\n'. The raw array data follows the header. */
#include "core/npy.h"

#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fileio.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "altmoe maps little-endian float data directly and needs a little-endian host"
#endif

#define NPY_MAGIC "\x93NUMPY"
#define NPY_MAGIC_LEN 6
#define NPY_MAX_PARSED_DIMS 8   /* more dims than this are rejected before any use */
#define NPY_SAVE_ALIGN 64

/* ---- float16 and bfloat16 ------------------------------------------------------------------ */

size_t amc_dtype_size(amc_dtype dtype)
{
    return dtype == AMC_DTYPE_F32 ? 4 : 2;
}

float amc_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exponent = (h >> 10) & 0x1fu;
    uint32_t mantissa = h & 0x3ffu;
    uint32_t bits;

    if (exponent == 0) {
        /* Zero or subnormal: mantissa * 2^-24, exact in float32. */
        float magnitude = (float)mantissa * 0x1p-24f;
        return sign ? -magnitude : magnitude;
    }
    if (exponent == 31)
        bits = sign | 0x7f800000u | (mantissa << 13);    /* inf, or nan keeping its payload */
    else
        bits = sign | ((exponent + 112) << 23) | (mantissa << 13);

    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* Shifts value right by shift bits, rounding to nearest with ties to even. */
static uint32_t shift_round_even(uint32_t value, unsigned shift)
{
    uint32_t kept = value >> shift;
    uint32_t rest = value & ((1u << shift) - 1);
    uint32_t half = 1u << (shift - 1);
    if (rest > half || (rest == half && (kept & 1)))
        kept++;
    return kept;
}

uint16_t amc_f32_to_f16(float f)
{
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    uint16_t sign = (uint16_t)((bits >> 16) & 0x8000u);
    uint32_t magnitude = bits & 0x7fffffffu;

    if (magnitude > 0x7f800000u)                        /* nan: keep it quiet and non-zero */
        return (uint16_t)(sign | 0x7e00u | ((magnitude >> 13) & 0x3ffu));
    if (magnitude >= 0x477ff000u)                       /* >= 65520 rounds to inf, inf stays */
        return (uint16_t)(sign | 0x7c00u);
    if (magnitude >= 0x38800000u) {                     /* >= 2^-14: a normal half */
        uint32_t rebased = magnitude - ((uint32_t)(127 - 15) << 23);
        /* A carry out of the mantissa correctly bumps the exponent. */
        return (uint16_t)(sign | shift_round_even(rebased, 13));
    }
    if (magnitude <= 0x33000000u)                       /* <= 2^-25 rounds to zero */
        return sign;

    /* Subnormal half: the float's value in units of 2^-24. */
    uint32_t exponent = magnitude >> 23;                /* 102..112 here */
    uint32_t mantissa = (magnitude & 0x7fffffu) | 0x800000u;
    return (uint16_t)(sign | shift_round_even(mantissa, 126 - exponent));
}

float amc_bf16_to_f32(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* ---- header dict parser -------------------------------------------------------------------- */

/* A cursor over the header text; every read checks pos against len. */
typedef struct header_cursor {
    const char *text;
    size_t len;
    size_t pos;
    const char *name;   /* file name for messages */
    amc_error *err;
} header_cursor;

typedef struct npy_header {
    char descr[16];
    bool fortran_order;
    int ndim;
    int64_t shape[NPY_MAX_PARSED_DIMS];
    bool has_descr, has_fortran_order, has_shape;
} npy_header;

static void skip_space(header_cursor *c)
{
    while (c->pos < c->len && (c->text[c->pos] == ' ' || c->text[c->pos] == '\t' ||
                               c->text[c->pos] == '\n' || c->text[c->pos] == '\r'))
        c->pos++;
}

static amc_status header_error(header_cursor *c, const char *expected)
{
    if (c->pos >= c->len)
        return amc_error_set(c->err, AMC_EFORMAT,
                             "%s: .npy header dict ends early; expected %s", c->name, expected);
    unsigned char found = (unsigned char)c->text[c->pos];
    if (found < 0x20 || found > 0x7e)
        return amc_error_set(c->err, AMC_EFORMAT,
                             "%s: invalid .npy header at offset %zu (found byte 0x%02x); "
                             "expected %s", c->name, c->pos, found, expected);
    return amc_error_set(c->err, AMC_EFORMAT,
                         "%s: invalid .npy header at offset %zu (found '%c'); expected %s",
                         c->name, c->pos, found, expected);
}

/* Consumes ch after optional white space, or fails naming it. */
static amc_status expect_char(header_cursor *c, char ch, const char *expected)
{
    skip_space(c);
    if (c->pos >= c->len || c->text[c->pos] != ch)
        return header_error(c, expected);
    c->pos++;
    return AMC_OK;
}

/* Parses a quoted Python string without escapes into out (size out_size, NUL-terminated). */
static amc_status parse_string(header_cursor *c, char *out, size_t out_size, const char *what)
{
    skip_space(c);
    if (c->pos >= c->len || (c->text[c->pos] != '\'' && c->text[c->pos] != '"'))
        return header_error(c, what);
    char quote = c->text[c->pos++];
    size_t start = c->pos;
    while (c->pos < c->len && c->text[c->pos] != quote) {
        if (c->text[c->pos] == '\\')
            return header_error(c, "a quoted string without escapes");
        if (c->text[c->pos] == '\n')
            return header_error(c, "a closing quote");
        c->pos++;
    }
    if (c->pos >= c->len)
        return header_error(c, "a closing quote");
    size_t n = c->pos - start;
    c->pos++;
    if (n >= out_size)
        return amc_error_set(c->err, AMC_EFORMAT,
                             "%s: .npy header string of %zu bytes is too long for %s", c->name,
                             n, what);
    memcpy(out, c->text + start, n);
    out[n] = '\0';
    return AMC_OK;
}

static amc_status parse_bool(header_cursor *c, bool *out)
{
    skip_space(c);
    size_t left = c->len - c->pos;
    if (left >= 4 && memcmp(c->text + c->pos, "True", 4) == 0) {
        c->pos += 4;
        *out = true;
        return AMC_OK;
    }
    if (left >= 5 && memcmp(c->text + c->pos, "False", 5) == 0) {
        c->pos += 5;
        *out = false;
        return AMC_OK;
    }
    return header_error(c, "True or False for 'fortran_order'");
}

/* Parses a non-negative decimal integer (an old 'L' suffix is accepted) into out. */
static amc_status parse_dim(header_cursor *c, int64_t *out)
{
    skip_space(c);
    if (c->pos >= c->len || c->text[c->pos] < '0' || c->text[c->pos] > '9')
        return header_error(c, "a non-negative integer dimension in 'shape'");
    int64_t value = 0;
    while (c->pos < c->len && c->text[c->pos] >= '0' && c->text[c->pos] <= '9') {
        int digit = c->text[c->pos] - '0';
        if (value > (INT64_MAX - digit) / 10)
            return amc_error_set(c->err, AMC_EFORMAT,
                                 "%s: .npy shape dimension does not fit in 64 bits", c->name);
        value = value * 10 + digit;
        c->pos++;
    }
    if (c->pos < c->len && c->text[c->pos] == 'L')
        c->pos++;
    *out = value;
    return AMC_OK;
}

/* Parses a Python tuple of integers: (), (3,), (3, 4) or (3, 4, ). */
static amc_status parse_shape(header_cursor *c, npy_header *h)
{
    amc_status rc = expect_char(c, '(', "'(' starting the 'shape' tuple");
    if (rc != AMC_OK)
        return rc;
    h->ndim = 0;
    for (;;) {
        skip_space(c);
        if (c->pos < c->len && c->text[c->pos] == ')') {
            c->pos++;
            return AMC_OK;
        }
        if (h->ndim == NPY_MAX_PARSED_DIMS)
            return amc_error_set(c->err, AMC_EFORMAT,
                                 "%s: .npy shape has more than %d dims; expected 2 or 3",
                                 c->name, NPY_MAX_PARSED_DIMS);
        rc = parse_dim(c, &h->shape[h->ndim++]);
        if (rc != AMC_OK)
            return rc;
        skip_space(c);
        if (c->pos < c->len && c->text[c->pos] == ',')
            c->pos++;
        else if (c->pos >= c->len || c->text[c->pos] != ')')
            return header_error(c, "',' or ')' in the 'shape' tuple");
    }
}

static amc_status parse_entry(header_cursor *c, npy_header *h)
{
    char key[32];
    amc_status rc = parse_string(c, key, sizeof key, "a quoted key in the header dict");
    if (rc != AMC_OK)
        return rc;
    rc = expect_char(c, ':', "':' after a header key");
    if (rc != AMC_OK)
        return rc;

    bool *seen;
    if (strcmp(key, "descr") == 0) {
        seen = &h->has_descr;
        rc = parse_string(c, h->descr, sizeof h->descr, "a quoted dtype string for 'descr'");
    } else if (strcmp(key, "fortran_order") == 0) {
        seen = &h->has_fortran_order;
        rc = parse_bool(c, &h->fortran_order);
    } else if (strcmp(key, "shape") == 0) {
        seen = &h->has_shape;
        rc = parse_shape(c, h);
    } else {
        return amc_error_set(c->err, AMC_EFORMAT,
                             "%s: unknown .npy header key '%s'; expected only 'descr', "
                             "'fortran_order' and 'shape'", c->name, key);
    }
    if (rc != AMC_OK)
        return rc;
    if (*seen)
        return amc_error_set(c->err, AMC_EFORMAT, "%s: .npy header key '%s' appears twice",
                             c->name, key);
    *seen = true;
    return AMC_OK;
}

/* Parses the header dict text into h; only white space may follow the closing brace. */
static amc_status parse_header_dict(header_cursor *c, npy_header *h)
{
    memset(h, 0, sizeof *h);
    amc_status rc = expect_char(c, '{', "'{' starting the header dict");
    if (rc != AMC_OK)
        return rc;
    for (;;) {
        skip_space(c);
        if (c->pos < c->len && c->text[c->pos] == '}') {
            c->pos++;
            break;
        }
        rc = parse_entry(c, h);
        if (rc != AMC_OK)
            return rc;
        skip_space(c);
        if (c->pos < c->len && c->text[c->pos] == ',')
            c->pos++;
        else if (c->pos >= c->len || c->text[c->pos] != '}')
            return header_error(c, "',' or '}' after a header value");
    }
    skip_space(c);
    if (c->pos != c->len)
        return header_error(c, "only padding after the header dict");
    if (!h->has_descr || !h->has_fortran_order || !h->has_shape)
        return amc_error_set(c->err, AMC_EFORMAT,
                             "%s: .npy header lacks '%s'; expected 'descr', 'fortran_order' "
                             "and 'shape'", c->name,
                             !h->has_descr ? "descr" : !h->has_fortran_order ? "fortran_order"
                                                                             : "shape");
    return AMC_OK;
}

/* ---- reader -------------------------------------------------------------------------------- */

/* Where the data of a parsed image starts and what it contains. */
typedef struct npy_layout {
    amc_dtype dtype;
    size_t data_offset;
    size_t numel;
} npy_layout;

/* Reads the fixed preamble (magic, version, header length) and sets *header_start and
 * *header_len. */
static amc_status parse_preamble(const uint8_t *buf, size_t len, const char *name,
                                 size_t *header_start, size_t *header_len, amc_error *err)
{
    if (len < NPY_MAGIC_LEN + 2 || memcmp(buf, NPY_MAGIC, NPY_MAGIC_LEN) != 0) {
        if (len >= NPY_MAGIC_LEN && memcmp(buf, NPY_MAGIC, NPY_MAGIC_LEN) != 0)
            return amc_error_set(err, AMC_EFORMAT,
                                 "%s: bad magic; expected a .npy file starting with "
                                 "\"\\x93NUMPY\"", name);
        return amc_error_set(err, AMC_EFORMAT,
                             "%s: truncated: %zu bytes, shorter than the .npy preamble", name,
                             len);
    }
    uint8_t major = buf[6], minor = buf[7];
    if ((major != 1 && major != 2 && major != 3) || minor != 0)
        return amc_error_set(err, AMC_EFORMAT,
                             "%s: unsupported .npy version %u.%u; expected 1.0, 2.0 or 3.0",
                             name, major, minor);

    size_t len_bytes = major == 1 ? 2 : 4;
    if (len < 8 + len_bytes)
        return amc_error_set(err, AMC_EFORMAT,
                             "%s: truncated: %zu bytes, shorter than the .npy preamble", name,
                             len);
    size_t hlen = (size_t)buf[8] | (size_t)buf[9] << 8;
    if (len_bytes == 4)
        hlen |= (size_t)buf[10] << 16 | (size_t)buf[11] << 24;
    *header_start = 8 + len_bytes;
    if (hlen > len - *header_start)
        return amc_error_set(err, AMC_EFORMAT,
                             "%s: header length %zu runs past the end of the %zu-byte file",
                             name, hlen, len);
    *header_len = hlen;
    return AMC_OK;
}

/* Checks dtype, order and shape of a parsed header against the data size; fills out and layout. */
static amc_status check_header(const npy_header *h, size_t data_len, const char *name,
                               amc_npy *out, npy_layout *layout, amc_error *err)
{
    if (strcmp(h->descr, "<f4") == 0)
        layout->dtype = AMC_DTYPE_F32;
    else if (strcmp(h->descr, "<f2") == 0)
        layout->dtype = AMC_DTYPE_F16;
    else
        return amc_error_set(err, AMC_EFORMAT,
                             "%s: unsupported dtype '%s'; expected '<f4' (float32) or '<f2' "
                             "(float16)", name, h->descr);
    if (h->fortran_order)
        return amc_error_set(err, AMC_EFORMAT,
                             "%s: fortran_order is True; expected a C-order array "
                             "(save it with np.ascontiguousarray)", name);
    if (h->ndim != 2 && h->ndim != 3)
        return amc_error_set(err, AMC_EFORMAT,
                             "%s: shape has %d dims; expected 2 ([N, d]) or 3 ([N, S, d])",
                             name, h->ndim);

    /* The product of the dims, checked for overflow before it is compared to the data size. */
    size_t esize = amc_dtype_size(layout->dtype);
    size_t numel = 1;
    for (int i = 0; i < h->ndim; i++) {
        if (h->shape[i] == 0)
            return amc_error_set(err, AMC_EFORMAT,
                                 "%s: shape dim %d is 0; expected a non-empty array", name, i);
        if ((uint64_t)h->shape[i] > SIZE_MAX / esize / numel)
            return amc_error_set(err, AMC_EFORMAT,
                                 "%s: shape dim %d of %lld makes the element count overflow",
                                 name, i, (long long)h->shape[i]);
        numel *= (size_t)h->shape[i];
    }
    if (numel * esize != data_len)
        return amc_error_set(err, AMC_EFORMAT,
                             "%s: data is %s than the shape needs: %zu bytes, expected %zu",
                             name, numel * esize > data_len ? "shorter" : "longer", data_len,
                             numel * esize);

    out->ndim = h->ndim;
    for (int i = 0; i < 3; i++)
        out->shape[i] = i < h->ndim ? h->shape[i] : 1;
    layout->numel = numel;
    return AMC_OK;
}

/* Validates the whole image and describes its data; does not touch the data itself. */
static amc_status parse_image(const uint8_t *buf, size_t len, const char *name, amc_npy *out,
                              npy_layout *layout, amc_error *err)
{
    size_t header_start = 0, header_len = 0;
    amc_status rc = parse_preamble(buf, len, name, &header_start, &header_len, err);
    if (rc != AMC_OK)
        return rc;

    header_cursor cursor = {
        .text = (const char *)buf + header_start, .len = header_len, .name = name, .err = err,
    };
    npy_header header;
    rc = parse_header_dict(&cursor, &header);
    if (rc != AMC_OK)
        return rc;

    layout->data_offset = header_start + header_len;
    return check_header(&header, len - layout->data_offset, name, out, layout, err);
}

/* Copies or converts the data of a parsed image into a new float32 buffer in out->owned. */
static amc_status copy_data(const uint8_t *buf, const npy_layout *layout, const char *name,
                            amc_npy *out, amc_error *err)
{
    out->owned = malloc(layout->numel * sizeof(float));
    if (out->owned == NULL)
        return amc_error_set(err, AMC_ENOMEM, "%s: out of memory for %zu floats", name,
                             layout->numel);
    const uint8_t *src = buf + layout->data_offset;
    if (layout->dtype == AMC_DTYPE_F32) {
        memcpy(out->owned, src, layout->numel * sizeof(float));
    } else {
        for (size_t i = 0; i < layout->numel; i++)
            out->owned[i] = amc_f16_to_f32((uint16_t)(src[2 * i] | src[2 * i + 1] << 8));
    }
    out->data = out->owned;
    return AMC_OK;
}

amc_status amc_npy_parse(amc_npy *out, const void *buf, size_t len, amc_error *err)
{
    memset(out, 0, sizeof *out);
    static const char name[] = "npy image";
    npy_layout layout;
    amc_status rc = parse_image(buf, len, name, out, &layout, err);
    if (rc == AMC_OK)
        rc = copy_data(buf, &layout, name, out, err);
    if (rc != AMC_OK)
        amc_npy_free(out);
    return rc;
}

amc_status amc_npy_load(amc_npy *out, const char *path, amc_error *err)
{
    memset(out, 0, sizeof *out);
    void *map;
    size_t map_len;
    amc_status rc = amc_file_map(path, &map, &map_len, err);
    if (rc != AMC_OK)
        return rc;

    npy_layout layout;
    rc = parse_image(map, map_len, path, out, &layout, err);
    if (rc != AMC_OK) {
        amc_file_unmap(map, map_len);
        amc_npy_free(out);
        return rc;
    }

    /* The mapping is page aligned, so an aligned offset gives aligned floats. */
    if (layout.dtype == AMC_DTYPE_F32 && layout.data_offset % sizeof(float) == 0) {
        out->map = map;
        out->map_len = map_len;
        out->data = (const float *)((const uint8_t *)map + layout.data_offset);
        return AMC_OK;
    }
    rc = copy_data(map, &layout, path, out, err);
    amc_file_unmap(map, map_len);
    if (rc != AMC_OK)
        amc_npy_free(out);
    return rc;
}

void amc_npy_free(amc_npy *out)
{
    free(out->owned);
    amc_file_unmap(out->map, out->map_len);
    memset(out, 0, sizeof *out);
}

int64_t amc_npy_rows(const amc_npy *npy)
{
    return npy->shape[0];
}

int64_t amc_npy_row_len(const amc_npy *npy)
{
    return npy->shape[1] * npy->shape[2];
}

/* ---- writer -------------------------------------------------------------------------------- */

/* Builds the version 1.0 preamble and header into buf (256 bytes, enough for three 64-bit dims)
 * so that the data starts at a multiple of NPY_SAVE_ALIGN; returns the total length. */
static size_t build_header(char buf[256], int ndim, const int64_t *shape,
                           amc_dtype dtype)
{
    char dict[200];
    int n = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (",
                     dtype == AMC_DTYPE_F32 ? "<f4" : "<f2");
    for (int i = 0; i < ndim; i++)
        n += snprintf(dict + n, sizeof dict - (size_t)n, "%s%lld", i ? ", " : "",
                      (long long)shape[i]);
    n += snprintf(dict + n, sizeof dict - (size_t)n, "), }");

    /* 10 preamble bytes, the dict, spaces, and a final '\n'. */
    size_t total = (10 + (size_t)n + 1 + NPY_SAVE_ALIGN - 1) / NPY_SAVE_ALIGN * NPY_SAVE_ALIGN;
    size_t header_len = total - 10;
    memcpy(buf, NPY_MAGIC, NPY_MAGIC_LEN);
    buf[6] = 1;
    buf[7] = 0;
    buf[8] = (char)(header_len & 0xff);
    buf[9] = (char)(header_len >> 8);
    memcpy(buf + 10, dict, (size_t)n);
    memset(buf + 10 + n, ' ', total - 10 - (size_t)n - 1);
    buf[total - 1] = '\n';
    return total;
}

static amc_status check_save_args(const char *path, const float *data, int ndim,
                                  const int64_t *shape, amc_dtype dtype, size_t *numel,
                                  amc_error *err)
{
    if (dtype != AMC_DTYPE_F32 && dtype != AMC_DTYPE_F16)
        return amc_error_set(err, AMC_EINVAL,
                             "%s: cannot save dtype %d as .npy; expected F32 or F16", path,
                             (int)dtype);
    if (ndim != 2 && ndim != 3)
        return amc_error_set(err, AMC_EINVAL, "%s: ndim is %d; expected 2 or 3", path, ndim);
    *numel = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] <= 0)
            return amc_error_set(err, AMC_EINVAL, "%s: shape dim %d is %lld; expected > 0",
                                 path, i, (long long)shape[i]);
        if ((uint64_t)shape[i] > SIZE_MAX / sizeof(float) / *numel)
            return amc_error_set(err, AMC_EINVAL, "%s: shape is too large to address", path);
        *numel *= (size_t)shape[i];
    }
    if (data == NULL)
        return amc_error_set(err, AMC_EINVAL, "%s: data is NULL", path);
    return AMC_OK;
}

/* Writes numel floats as '<f2', converting in chunks. */
static amc_status write_f16(amc_atomic_file *file, const float *data, size_t numel,
                            amc_error *err)
{
    uint8_t chunk[8192];
    size_t per_chunk = sizeof chunk / 2;
    for (size_t start = 0; start < numel; start += per_chunk) {
        size_t n = numel - start < per_chunk ? numel - start : per_chunk;
        for (size_t i = 0; i < n; i++) {
            uint16_t h = amc_f32_to_f16(data[start + i]);
            chunk[2 * i] = (uint8_t)(h & 0xff);
            chunk[2 * i + 1] = (uint8_t)(h >> 8);
        }
        amc_status rc = amc_atomic_write(file, chunk, 2 * n, err);
        if (rc != AMC_OK)
            return rc;
    }
    return AMC_OK;
}

amc_status amc_npy_save(const char *path, const float *data, int ndim, const int64_t *shape,
                        amc_dtype dtype, amc_error *err)
{
    size_t numel = 0;
    amc_status rc = check_save_args(path, data, ndim, shape, dtype, &numel, err);
    if (rc != AMC_OK)
        return rc;

    char header[256];
    size_t header_len = build_header(header, ndim, shape, dtype);

    amc_atomic_file file;
    rc = amc_atomic_begin(&file, path, err);
    if (rc != AMC_OK)
        return rc;
    rc = amc_atomic_write(&file, header, header_len, err);
    if (rc == AMC_OK && dtype == AMC_DTYPE_F32)
        rc = amc_atomic_write(&file, data, numel * sizeof(float), err);
    else if (rc == AMC_OK)
        rc = write_f16(&file, data, numel, err);
    if (rc != AMC_OK) {
        amc_atomic_abort(&file);
        return rc;
    }
    return amc_atomic_commit(&file, err);
}
