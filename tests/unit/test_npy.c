/* Unit tests for core/npy: float16 conversions, save/load round trips, numpy-written fixtures
 * and a table of malformed files that must fail with a specific status and message. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/npy.h"

/* ---- helpers ------------------------------------------------------------------------------- */

static char tmp_dir[64];

static int make_tmp_dir(void **state)
{
    (void)state;
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/amc_test_npy.XXXXXX");
    return mkdtemp(tmp_dir) == NULL ? -1 : 0;
}

static int remove_tmp_dir(void **state)
{
    (void)state;
    DIR *dir = opendir(tmp_dir);
    if (dir == NULL)
        return -1;
    struct dirent *ent;
    char path[512];
    while ((ent = readdir(dir)) != NULL) {
        if (ent->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "%s/%s", tmp_dir, ent->d_name);
        unlink(path);
    }
    closedir(dir);
    return rmdir(tmp_dir);
}

/* Counts the entries of tmp_dir other than . and .., to spot leftover temporary files. */
static int count_tmp_files(void)
{
    DIR *dir = opendir(tmp_dir);
    assert_non_null(dir);
    int n = 0;
    struct dirent *ent;
    while ((ent = readdir(dir)) != NULL)
        n += ent->d_name[0] != '.';
    closedir(dir);
    return n;
}

static void write_bytes(const char *path, const void *buf, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static uint8_t *read_bytes(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

/* Builds a .npy image: preamble of the given version, dict text plus '\n' as header, then
 * data_len bytes of zeros. The caller frees the result. */
static uint8_t *make_npy(int major, int minor, const char *dict, size_t data_len, size_t *len)
{
    size_t dict_len = strlen(dict);
    size_t len_bytes = major == 1 ? 2 : 4;
    size_t header_len = dict_len + 1;
    *len = 8 + len_bytes + header_len + data_len;
    uint8_t *buf = calloc(*len, 1);
    assert_non_null(buf);
    memcpy(buf, "\x93NUMPY", 6);
    buf[6] = (uint8_t)major;
    buf[7] = (uint8_t)minor;
    for (size_t i = 0; i < len_bytes; i++)
        buf[8 + i] = (uint8_t)(header_len >> (8 * i));
    memcpy(buf + 8 + len_bytes, dict, dict_len);
    buf[8 + len_bytes + dict_len] = '\n';
    return buf;
}

static float thirds(int i)
{
    return (float)i / 3.0f - 0.5f;
}

static float quarters(int i)
{
    return (float)i * 0.25f - 2.0f;
}

/* ---- float16 and bfloat16 ------------------------------------------------------------------ */

static void f32_to_f16_known_bits(void **state)
{
    (void)state;
    static const struct { float value; uint16_t bits; } cases[] = {
        {0.0f, 0x0000}, {-0.0f, 0x8000}, {1.0f, 0x3c00}, {-2.0f, 0xc000},
        {0.1f, 0x2e66}, {1.0f / 3.0f, 0x3555}, {65504.0f, 0x7bff},
        {65519.0f, 0x7bff}, {65520.0f, 0x7c00}, {1e10f, 0x7c00}, {-1e10f, 0xfc00},
        {INFINITY, 0x7c00}, {-INFINITY, 0xfc00},
        {0x1p-14f, 0x0400},                 /* smallest normal */
        {0x1p-24f, 0x0001},                 /* smallest subnormal */
        {1023 * 0x1p-24f, 0x03ff},          /* largest subnormal */
        {0x1p-25f, 0x0000},                 /* half of the smallest subnormal: tie to even 0 */
        {0x1.8p-25f, 0x0001},               /* above the tie rounds up */
        {0x1.8p-24f, 0x0002},               /* 1.5 units: tie to even 2 */
        {0x1.4p-23f, 0x0002},               /* 2.5 units: tie to even 2 */
        {1.0f + 0x1p-11f, 0x3c00},          /* tie between 1 and 1+2^-10: even is 1 */
        {1.0f + 0x1.8p-10f, 0x3c02},        /* tie between odd 0x3c01 and even 0x3c02 */
        {2047 * 0x1p-25f, 0x0400},          /* tie above the largest subnormal: even is 0x0400 */
        {1e-30f, 0x0000}, {-1e-30f, 0x8000},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        uint16_t got = amc_f32_to_f16(cases[i].value);
        if (got != cases[i].bits)
            fail_msg("amc_f32_to_f16(%a) = 0x%04x, expected 0x%04x", (double)cases[i].value,
                     got, cases[i].bits);
    }
}

static void f32_to_f16_nan_stays_nan(void **state)
{
    (void)state;
    uint16_t h = amc_f32_to_f16(NAN);
    assert_int_equal(h & 0x7c00, 0x7c00);
    assert_true((h & 0x03ff) != 0);
    assert_true(isnan(amc_f16_to_f32(h)));
}

static void f16_to_f32_known_values(void **state)
{
    (void)state;
    assert_true(amc_f16_to_f32(0x3c00) == 1.0f);
    assert_true(amc_f16_to_f32(0xc000) == -2.0f);
    assert_true(amc_f16_to_f32(0x7bff) == 65504.0f);
    assert_true(amc_f16_to_f32(0x0001) == 0x1p-24f);
    assert_true(amc_f16_to_f32(0x03ff) == 1023 * 0x1p-24f);
    assert_true(amc_f16_to_f32(0x0400) == 0x1p-14f);
    assert_true(amc_f16_to_f32(0x7c00) == INFINITY);
    assert_true(amc_f16_to_f32(0xfc00) == -INFINITY);
    assert_true(isnan(amc_f16_to_f32(0x7e00)));
    assert_true(amc_f16_to_f32(0x8000) == 0.0f);
    assert_true(signbit(amc_f16_to_f32(0x8000)));
}

static void f16_every_value_round_trips(void **state)
{
    (void)state;
    for (uint32_t h = 0; h <= 0xffff; h++) {
        float f = amc_f16_to_f32((uint16_t)h);
        if (isnan(f))
            continue;
        uint16_t back = amc_f32_to_f16(f);
        if (back != h)
            fail_msg("f16 0x%04x -> %a -> 0x%04x", h, (double)f, back);
    }
}

static void bf16_known_values(void **state)
{
    (void)state;
    assert_true(amc_bf16_to_f32(0x3f80) == 1.0f);
    assert_true(amc_bf16_to_f32(0xc000) == -2.0f);
    assert_true(amc_bf16_to_f32(0x7f80) == INFINITY);
    assert_true(isnan(amc_bf16_to_f32(0x7fc0)));
    assert_int_equal(amc_dtype_size(AMC_DTYPE_F32), 4);
    assert_int_equal(amc_dtype_size(AMC_DTYPE_F16), 2);
    assert_int_equal(amc_dtype_size(AMC_DTYPE_BF16), 2);
}

/* ---- round trips --------------------------------------------------------------------------- */

static void check_round_trip(int ndim, const int64_t *shape, amc_dtype dtype)
{
    char path[128];
    snprintf(path, sizeof path, "%s/rt.npy", tmp_dir);
    int64_t numel = 1;
    for (int i = 0; i < ndim; i++)
        numel *= shape[i];
    float *data = malloc((size_t)numel * sizeof(float));
    assert_non_null(data);
    for (int64_t i = 0; i < numel; i++)
        data[i] = thirds((int)i);

    amc_error err = {0};
    assert_int_equal(amc_npy_save(path, data, ndim, shape, dtype, &err), AMC_OK);
    assert_int_equal(count_tmp_files(), 1);

    /* The data starts at a multiple of 64 bytes in a version 1.0 file. */
    size_t file_len;
    uint8_t *bytes = read_bytes(path, &file_len);
    assert_int_equal(bytes[6], 1);
    assert_int_equal(bytes[7], 0);
    size_t data_offset = 10 + (size_t)(bytes[8] | bytes[9] << 8);
    assert_int_equal(data_offset % 64, 0);
    assert_int_equal(file_len - data_offset, (size_t)numel * amc_dtype_size(dtype));
    free(bytes);

    amc_npy npy;
    assert_int_equal(amc_npy_load(&npy, path, &err), AMC_OK);
    assert_int_equal(npy.ndim, ndim);
    for (int i = 0; i < 3; i++)
        assert_int_equal(npy.shape[i], i < ndim ? shape[i] : 1);
    assert_int_equal(amc_npy_rows(&npy), shape[0]);
    assert_int_equal(amc_npy_row_len(&npy), numel / shape[0]);
    if (dtype == AMC_DTYPE_F32) {
        assert_non_null(npy.map);          /* aligned float32 is mapped, not copied */
        assert_null(npy.owned);
    } else {
        assert_null(npy.map);
        assert_non_null(npy.owned);
    }
    for (int64_t i = 0; i < numel; i++) {
        float expected = dtype == AMC_DTYPE_F32 ? data[i]
                                                : amc_f16_to_f32(amc_f32_to_f16(data[i]));
        if (npy.data[i] != expected)
            fail_msg("element %lld: %a, expected %a", (long long)i, (double)npy.data[i],
                     (double)expected);
    }
    amc_npy_free(&npy);
    assert_null(npy.data);
    free(data);
    unlink(path);
}

static void round_trip_f32_2d(void **state)
{
    (void)state;
    check_round_trip(2, (const int64_t[]){7, 5}, AMC_DTYPE_F32);
}

static void round_trip_f32_3d(void **state)
{
    (void)state;
    check_round_trip(3, (const int64_t[]){3, 4, 6}, AMC_DTYPE_F32);
}

static void round_trip_f16_2d(void **state)
{
    (void)state;
    check_round_trip(2, (const int64_t[]){9, 3}, AMC_DTYPE_F16);
}

static void round_trip_f16_3d(void **state)
{
    (void)state;
    check_round_trip(3, (const int64_t[]){2, 5, 7}, AMC_DTYPE_F16);
}

static void round_trip_f16_large(void **state)
{
    (void)state;
    /* More elements than one conversion chunk of the writer. */
    check_round_trip(2, (const int64_t[]){1000, 13}, AMC_DTYPE_F16);
}

static void save_overwrites_existing_file(void **state)
{
    (void)state;
    char path[128];
    snprintf(path, sizeof path, "%s/over.npy", tmp_dir);
    write_bytes(path, "old", 3);
    const float data[] = {1, 2, 3, 4};
    amc_error err = {0};
    assert_int_equal(amc_npy_save(path, data, 2, (const int64_t[]){2, 2}, AMC_DTYPE_F32, &err),
                     AMC_OK);
    amc_npy npy;
    assert_int_equal(amc_npy_load(&npy, path, &err), AMC_OK);
    assert_true(npy.data[3] == 4.0f);
    amc_npy_free(&npy);
    unlink(path);
}

static void save_rejects_bad_arguments(void **state)
{
    (void)state;
    char path[128];
    snprintf(path, sizeof path, "%s/bad.npy", tmp_dir);
    const float data[] = {1, 2, 3, 4};
    amc_error err = {0};
    assert_int_equal(amc_npy_save(path, data, 1, (const int64_t[]){4}, AMC_DTYPE_F32, &err),
                     AMC_EINVAL);
    assert_non_null(strstr(err.msg, "expected 2 or 3"));
    assert_int_equal(amc_npy_save(path, data, 2, (const int64_t[]){2, 2}, AMC_DTYPE_BF16, &err),
                     AMC_EINVAL);
    assert_non_null(strstr(err.msg, "expected F32 or F16"));
    assert_int_equal(amc_npy_save(path, data, 2, (const int64_t[]){0, 2}, AMC_DTYPE_F32, &err),
                     AMC_EINVAL);
    assert_int_equal(amc_npy_save(path, NULL, 2, (const int64_t[]){2, 2}, AMC_DTYPE_F32, &err),
                     AMC_EINVAL);
    assert_int_equal(count_tmp_files(), 0);

    char missing[160];
    snprintf(missing, sizeof missing, "%s/no/such/dir/x.npy", tmp_dir);
    assert_int_equal(amc_npy_save(missing, data, 2, (const int64_t[]){2, 2}, AMC_DTYPE_F32,
                                  &err), AMC_EIO);
    assert_non_null(strstr(err.msg, missing));
}

static void load_unaligned_f32_is_copied(void **state)
{
    (void)state;
    /* Pad the dict so that the data starts at an offset of 2 modulo 4. */
    char dict[80] = "{'descr':'<f4','fortran_order':False,'shape':(2,2)}";
    while ((10 + strlen(dict) + 1) % 4 != 2)
        strcat(dict, " ");
    size_t len;
    uint8_t *buf = make_npy(1, 0, dict, 16, &len);
    assert_int_equal((len - 16) % 4, 2);
    const float values[] = {1.5f, -2.0f, 3.25f, 0x1p-20f};
    memcpy(buf + len - 16, values, 16);
    char path[128];
    snprintf(path, sizeof path, "%s/unaligned.npy", tmp_dir);
    write_bytes(path, buf, len);

    amc_npy npy;
    amc_error err = {0};
    assert_int_equal(amc_npy_load(&npy, path, &err), AMC_OK);
    assert_null(npy.map);
    assert_non_null(npy.owned);
    assert_memory_equal(npy.data, values, sizeof values);
    amc_npy_free(&npy);
    free(buf);
    unlink(path);
}

/* ---- fixtures written by numpy ------------------------------------------------------------- */

static void numpy_v1_f16_fixture(void **state)
{
    (void)state;
    amc_npy npy;
    amc_error err = {0};
    assert_int_equal(amc_npy_load(&npy, "tests/fixtures/v1_f2_3x4.npy", &err), AMC_OK);
    assert_int_equal(npy.ndim, 2);
    assert_int_equal(npy.shape[0], 3);
    assert_int_equal(npy.shape[1], 4);
    /* numpy rounded float32 values to float16; our converter must agree bit for bit. */
    for (int i = 0; i < 12; i++)
        assert_true(npy.data[i] == amc_f16_to_f32(amc_f32_to_f16(thirds(i))));
    amc_npy_free(&npy);
}

static void numpy_v2_f32_fixture(void **state)
{
    (void)state;
    amc_npy npy;
    amc_error err = {0};
    assert_int_equal(amc_npy_load(&npy, "tests/fixtures/v2_f4_2x3x4.npy", &err), AMC_OK);
    assert_int_equal(npy.ndim, 3);
    assert_int_equal(npy.shape[0], 2);
    assert_int_equal(npy.shape[1], 3);
    assert_int_equal(npy.shape[2], 4);
    assert_int_equal(amc_npy_row_len(&npy), 12);
    for (int i = 0; i < 24; i++)
        assert_true(npy.data[i] == quarters(i));
    amc_npy_free(&npy);
}

static void numpy_v3_f32_fixture_parsed(void **state)
{
    (void)state;
    size_t len;
    uint8_t *buf = read_bytes("tests/fixtures/v3_f4_5x2.npy", &len);
    assert_int_equal(buf[6], 3);
    amc_npy npy;
    amc_error err = {0};
    assert_int_equal(amc_npy_parse(&npy, buf, len, &err), AMC_OK);
    free(buf);    /* parse copies, so the data outlives the buffer */
    assert_int_equal(npy.shape[0], 5);
    assert_int_equal(npy.shape[1], 2);
    for (int i = 0; i < 10; i++)
        assert_true(npy.data[i] == thirds(i));
    amc_npy_free(&npy);
}

/* ---- malformed input ----------------------------------------------------------------------- */

typedef struct bad_case {
    const char *label;
    int major, minor;
    const char *dict;
    size_t data_len;
    const char *expected_msg;
} bad_case;

#define F4_3X4 "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }"

static const bad_case bad_cases[] = {
    {"unsupported major", 4, 0, F4_3X4, 48, "unsupported .npy version 4.0"},
    {"unsupported minor", 1, 1, F4_3X4, 48, "unsupported .npy version 1.1"},
    {"dtype f8", 1, 0, "{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4), }", 96,
     "unsupported dtype '<f8'"},
    {"big-endian f4", 1, 0, "{'descr': '>f4', 'fortran_order': False, 'shape': (3, 4), }", 48,
     "unsupported dtype '>f4'"},
    {"dtype u1", 2, 0, "{'descr': '|u1', 'fortran_order': False, 'shape': (3, 4), }", 12,
     "unsupported dtype '|u1'"},
    {"structured dtype", 1, 0, "{'descr': [('a', '<f4')], 'fortran_order': False, "
     "'shape': (3, 4), }", 48, "a quoted dtype string"},
    {"fortran order", 1, 0, "{'descr': '<f4', 'fortran_order': True, 'shape': (3, 4), }", 48,
     "fortran_order is True"},
    {"1-D shape", 1, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': (12,), }", 48,
     "shape has 1 dims"},
    {"4-D shape", 1, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 2, 3), }",
     48, "shape has 4 dims"},
    {"scalar shape", 1, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': (), }", 4,
     "shape has 0 dims"},
    {"zero dim", 1, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 0), }", 0,
     "dim 1 is 0"},
    {"negative dim", 1, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': (-3, 4), }", 48,
     "non-negative integer dimension"},
    {"data shorter", 1, 0, F4_3X4, 47, "data is shorter than the shape needs"},
    {"data longer", 1, 0, F4_3X4, 52, "data is longer than the shape needs"},
    {"f2 data shorter", 3, 0, "{'descr': '<f2', 'fortran_order': False, 'shape': (3, 4), }",
     23, "data is shorter"},
    {"product overflow", 1, 0, "{'descr': '<f4', 'fortran_order': False, "
     "'shape': (4294967296, 4294967296), }", 16, "overflow"},
    {"dims past file size", 1, 0, "{'descr': '<f4', 'fortran_order': False, "
     "'shape': (1000000, 1000000), }", 16, "data is shorter"},
    {"dim over 64 bits", 1, 0, "{'descr': '<f4', 'fortran_order': False, "
     "'shape': (99999999999999999999, 1), }", 16, "does not fit in 64 bits"},
    {"too many dims", 1, 0, "{'descr': '<f4', 'fortran_order': False, "
     "'shape': (1,1,1,1,1,1,1,1,1), }", 4, "more than 8 dims"},
    {"missing shape", 1, 0, "{'descr': '<f4', 'fortran_order': False, }", 48,
     "lacks 'shape'"},
    {"unknown key", 1, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), "
     "'x': 1}", 48, "unknown .npy header key 'x'"},
    {"duplicate key", 1, 0, "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, "
     "'shape': (3, 4)}", 48, "'descr' appears twice"},
    {"unterminated dict", 1, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4)",
     48, "ends early"},
    {"unterminated string", 1, 0, "{'descr': '<f4", 48, "closing quote"},
    {"junk after dict", 1, 0, F4_3X4 " x", 48, "only padding"},
    {"not a dict", 1, 0, "[1, 2]", 48, "'{' starting the header dict"},
    {"bool as int", 1, 0, "{'descr': '<f4', 'fortran_order': 0, 'shape': (3, 4), }", 48,
     "True or False"},
    {"empty header", 1, 0, "", 48, "ends early"},
    {"control byte", 1, 0, "{\x01}", 48, "byte 0x01"},
};

static void check_bad_image(const uint8_t *buf, size_t len, const char *label,
                            const char *expected_msg)
{
    amc_npy npy;
    amc_error err = {0};
    amc_status rc = amc_npy_parse(&npy, buf, len, &err);
    if (rc != AMC_EFORMAT)
        fail_msg("%s: status %s, expected bad_format", label, amc_status_name(rc));
    if (strstr(err.msg, expected_msg) == NULL)
        fail_msg("%s: message \"%s\" lacks \"%s\"", label, err.msg, expected_msg);
    assert_null(npy.data);
    amc_npy_free(&npy);
}

static void malformed_headers_rejected(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof bad_cases / sizeof *bad_cases; i++) {
        const bad_case *c = &bad_cases[i];
        size_t len;
        uint8_t *buf = make_npy(c->major, c->minor, c->dict, c->data_len, &len);
        check_bad_image(buf, len, c->label, c->expected_msg);
        free(buf);
    }
}

static void truncated_preamble_rejected(void **state)
{
    (void)state;
    size_t len;
    uint8_t *buf = make_npy(2, 0, F4_3X4, 48, &len);
    check_bad_image(buf, 0, "empty", "truncated: 0 bytes");
    check_bad_image(buf, 5, "5 bytes", "truncated: 5 bytes");
    check_bad_image(buf, 10, "v2 without header length", "truncated: 10 bytes");
    check_bad_image(buf, 40, "cut in the header", "runs past the end");
    free(buf);
}

static void bad_magic_rejected(void **state)
{
    (void)state;
    size_t len;
    uint8_t *buf = make_npy(1, 0, F4_3X4, 48, &len);
    buf[5] = 'X';
    check_bad_image(buf, len, "bad magic", "bad magic");
    static const char text[] = "hello world, not an array";
    check_bad_image((const uint8_t *)text, sizeof text, "text file", "bad magic");
    free(buf);
}

static void header_length_past_end_rejected(void **state)
{
    (void)state;
    size_t len;
    uint8_t *buf = make_npy(2, 0, F4_3X4, 48, &len);
    buf[11] = 0x7f;   /* header length about 2 GB */
    check_bad_image(buf, len, "v2 header length", "runs past the end of the 120-byte file");
    free(buf);
}

static void load_errors_name_the_file(void **state)
{
    (void)state;
    char path[128];
    snprintf(path, sizeof path, "%s/trunc.npy", tmp_dir);
    size_t len;
    uint8_t *buf = make_npy(1, 0, F4_3X4, 48, &len);
    write_bytes(path, buf, len - 1);
    free(buf);

    amc_npy npy;
    amc_error err = {0};
    assert_int_equal(amc_npy_load(&npy, path, &err), AMC_EFORMAT);
    assert_non_null(strstr(err.msg, path));
    assert_non_null(strstr(err.msg, "data is shorter"));
    assert_null(npy.data);
    amc_npy_free(&npy);

    write_bytes(path, "", 0);
    assert_int_equal(amc_npy_load(&npy, path, &err), AMC_EFORMAT);
    assert_non_null(strstr(err.msg, "truncated: 0 bytes"));
    unlink(path);

    assert_int_equal(amc_npy_load(&npy, path, &err), AMC_ENOTFOUND);
    assert_non_null(strstr(err.msg, path));
    assert_int_equal(amc_npy_load(&npy, tmp_dir, &err), AMC_EINVAL);
    assert_non_null(strstr(err.msg, "not a regular file"));
    amc_npy_free(&npy);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(f32_to_f16_known_bits),
        cmocka_unit_test(f32_to_f16_nan_stays_nan),
        cmocka_unit_test(f16_to_f32_known_values),
        cmocka_unit_test(f16_every_value_round_trips),
        cmocka_unit_test(bf16_known_values),
        cmocka_unit_test(round_trip_f32_2d),
        cmocka_unit_test(round_trip_f32_3d),
        cmocka_unit_test(round_trip_f16_2d),
        cmocka_unit_test(round_trip_f16_3d),
        cmocka_unit_test(round_trip_f16_large),
        cmocka_unit_test(save_overwrites_existing_file),
        cmocka_unit_test(save_rejects_bad_arguments),
        cmocka_unit_test(load_unaligned_f32_is_copied),
        cmocka_unit_test(numpy_v1_f16_fixture),
        cmocka_unit_test(numpy_v2_f32_fixture),
        cmocka_unit_test(numpy_v3_f32_fixture_parsed),
        cmocka_unit_test(malformed_headers_rejected),
        cmocka_unit_test(truncated_preamble_rejected),
        cmocka_unit_test(bad_magic_rejected),
        cmocka_unit_test(header_length_past_end_rejected),
        cmocka_unit_test(load_errors_name_the_file),
    };
    return cmocka_run_group_tests(tests, make_tmp_dir, remove_tmp_dir);
}
