/* Unit tests for core/safetensors: save/open round trips, float16 and bfloat16 tensors, a
 * fixture written by a plain-Python writer, and a table of malformed headers that must fail
 * with a specific status and message. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/safetensors.h"

/* ---- helpers ------------------------------------------------------------------------------- */

static char tmp_dir[64];

static int make_tmp_dir(void **state)
{
    (void)state;
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/amc_test_st.XXXXXX");
    return mkdtemp(tmp_dir) == NULL ? -1 : 0;
}

static int remove_tmp_dir(void **state)
{
    (void)state;
    return rmdir(tmp_dir);
}

static void write_bytes(const char *path, const void *buf, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

/* Builds a safetensors image from header text in which ' stands for ", followed by data_len
 * bytes of data (copied from data when non-NULL, else zeros). The caller frees the result. */
static uint8_t *make_st(const char *header, const void *data, size_t data_len, size_t *len)
{
    size_t header_len = strlen(header);
    *len = 8 + header_len + data_len;
    uint8_t *buf = calloc(*len + 1, 1);
    assert_non_null(buf);
    for (int i = 0; i < 8; i++)
        buf[i] = (uint8_t)((uint64_t)header_len >> (8 * i));
    for (size_t i = 0; i < header_len; i++)
        buf[8 + i] = header[i] == '\'' ? '"' : (uint8_t)header[i];
    if (data != NULL)
        memcpy(buf + 8 + header_len, data, data_len);
    return buf;
}

static float quarters(int i)
{
    return (float)i * 0.25f - 2.0f;
}

static float thirds(int i)
{
    return (float)i / 3.0f - 0.5f;
}

/* ---- round trips --------------------------------------------------------------------------- */

static void save_open_round_trip_f32(void **state)
{
    (void)state;
    char path[128];
    snprintf(path, sizeof path, "%s/model.safetensors", tmp_dir);
    float w2[3 * 5], w3[2 * 3 * 4], scalar = 7.5f;
    for (int i = 0; i < 15; i++)
        w2[i] = thirds(i);
    for (int i = 0; i < 24; i++)
        w3[i] = quarters(i);
    const amc_st_entry entries[] = {
        {.name = "proj.weight", .data = w2, .ndim = 2, .shape = {3, 5}},
        {.name = "experts.w", .data = w3, .ndim = 3, .shape = {2, 3, 4}},
        {.name = "temperature", .data = &scalar, .ndim = 0},
        {.name = "empty", .data = NULL, .ndim = 2, .shape = {0, 4}},
    };
    const char *keys[] = {"config", "quote\"key"};
    const char *values[] = {"{\"d\": 4}", "line\nbreak"};
    amc_error err = {0};
    assert_int_equal(amc_st_save(path, entries, 4, keys, values, 2, &err), AMC_OK);

    amc_st_file file;
    assert_int_equal(amc_st_open(&file, path, &err), AMC_OK);
    assert_int_equal(file.n_tensors, 4);
    assert_int_equal(file.data_len, sizeof w2 + sizeof w3 + sizeof scalar);
    assert_int_equal((size_t)(file.data - (const uint8_t *)file.map) % 8, 0);
    assert_string_equal(amc_st_meta_get(&file, "config"), "{\"d\": 4}");
    assert_string_equal(amc_st_meta_get(&file, "quote\"key"), "line\nbreak");
    assert_null(amc_st_meta_get(&file, "missing"));
    assert_null(amc_st_find(&file, "missing"));

    const amc_st_tensor *t = amc_st_find(&file, "proj.weight");
    assert_non_null(t);
    assert_int_equal(t->dtype, AMC_DTYPE_F32);
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->shape[0], 3);
    assert_int_equal(t->shape[1], 5);
    assert_int_equal(t->begin, 0);
    float out[24];
    assert_int_equal(amc_st_read_f32(&file, t, out, 15, &err), AMC_OK);
    assert_memory_equal(out, w2, sizeof w2);

    t = amc_st_find(&file, "experts.w");
    assert_non_null(t);
    assert_int_equal(t->ndim, 3);
    assert_int_equal(amc_st_numel(t), 24);
    assert_int_equal(t->begin, sizeof w2);
    assert_int_equal(amc_st_read_f32(&file, t, out, 24, &err), AMC_OK);
    assert_memory_equal(out, w3, sizeof w3);

    t = amc_st_find(&file, "temperature");
    assert_non_null(t);
    assert_int_equal(t->ndim, 0);
    assert_int_equal(amc_st_numel(t), 1);
    assert_int_equal(amc_st_read_f32(&file, t, out, 1, &err), AMC_OK);
    assert_true(out[0] == 7.5f);

    t = amc_st_find(&file, "empty");
    assert_non_null(t);
    assert_int_equal(amc_st_numel(t), 0);
    assert_int_equal(amc_st_read_f32(&file, t, out, 0, &err), AMC_OK);

    amc_st_close(&file);
    assert_null(file.tensors);
    unlink(path);
}

static void save_pads_header_to_8_bytes(void **state)
{
    (void)state;
    char path[128];
    snprintf(path, sizeof path, "%s/pad.safetensors", tmp_dir);
    const float one = 1.0f;
    amc_error err = {0};
    /* Names of different lengths give different raw header sizes. */
    static const char *const names[] = {"a", "ab", "abc", "abcd", "abcde", "abcdef", "abcdefg"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        amc_st_entry e = {.name = names[i], .data = &one, .ndim = 1, .shape = {1}};
        assert_int_equal(amc_st_save(path, &e, 1, NULL, NULL, 0, &err), AMC_OK);
        FILE *f = fopen(path, "rb");
        assert_non_null(f);
        uint8_t len_bytes[8];
        assert_int_equal(fread(len_bytes, 1, 8, f), 8);
        fclose(f);
        assert_int_equal(len_bytes[0] % 8, 0);

        amc_st_file file;
        assert_int_equal(amc_st_open(&file, path, &err), AMC_OK);
        assert_non_null(amc_st_find(&file, names[i]));
        amc_st_close(&file);
    }
    unlink(path);
}

static void f16_and_bf16_tensors_read_as_f32(void **state)
{
    (void)state;
    /* F16 2-D [2, 3] at [0, 12), BF16 3-D [2, 1, 2] at [12, 20). */
    uint8_t data[20];
    for (int i = 0; i < 6; i++) {
        uint16_t h = amc_f32_to_f16(thirds(i));
        data[2 * i] = (uint8_t)h;
        data[2 * i + 1] = (uint8_t)(h >> 8);
    }
    static const uint16_t bf16[] = {0x3f80, 0xc000, 0x3e80, 0x4120};   /* 1, -2, 0.25, 10 */
    for (int i = 0; i < 4; i++) {
        data[12 + 2 * i] = (uint8_t)bf16[i];
        data[12 + 2 * i + 1] = (uint8_t)(bf16[i] >> 8);
    }
    size_t len;
    uint8_t *buf = make_st("{'h': {'dtype': 'F16', 'shape': [2, 3], 'data_offsets': [0, 12]},"
                           " 'b': {'dtype': 'BF16', 'shape': [2, 1, 2], "
                           "'data_offsets': [12, 20]}}", data, sizeof data, &len);
    amc_st_file file;
    amc_error err = {0};
    assert_int_equal(amc_st_parse(&file, buf, len, &err), AMC_OK);
    free(buf);

    float out[6];
    const amc_st_tensor *t = amc_st_find(&file, "h");
    assert_int_equal(t->dtype, AMC_DTYPE_F16);
    assert_int_equal(amc_st_read_f32(&file, t, out, 6, &err), AMC_OK);
    for (int i = 0; i < 6; i++)
        assert_true(out[i] == amc_f16_to_f32(amc_f32_to_f16(thirds(i))));

    t = amc_st_find(&file, "b");
    assert_int_equal(t->dtype, AMC_DTYPE_BF16);
    assert_int_equal(amc_st_read_f32(&file, t, out, 4, &err), AMC_OK);
    assert_true(out[0] == 1.0f);
    assert_true(out[1] == -2.0f);
    assert_true(out[2] == 0.25f);
    assert_true(out[3] == 10.0f);

    assert_int_equal(amc_st_read_f32(&file, t, out, 5, &err), AMC_EINVAL);
    assert_non_null(strstr(err.msg, "tensor 'b'"));
    assert_non_null(strstr(err.msg, "expected 4"));
    amc_st_close(&file);
}

static void python_written_fixture(void **state)
{
    (void)state;
    amc_st_file file;
    amc_error err = {0};
    assert_int_equal(amc_st_open(&file, "tests/fixtures/mixed.safetensors", &err), AMC_OK);
    assert_int_equal(file.n_tensors, 3);
    assert_int_equal(file.n_meta, 2);
    assert_string_equal(amc_st_meta_get(&file, "format"), "pt");

    float out[6];
    const amc_st_tensor *t = amc_st_find(&file, "layer.weight");
    assert_non_null(t);
    assert_int_equal(t->shape[0], 2);
    assert_int_equal(t->shape[1], 3);
    assert_int_equal(amc_st_read_f32(&file, t, out, 6, &err), AMC_OK);
    for (int i = 0; i < 6; i++)
        assert_true(out[i] == quarters(i));

    t = amc_st_find(&file, "layer.bias");
    assert_non_null(t);
    assert_int_equal(t->dtype, AMC_DTYPE_F16);
    assert_int_equal(amc_st_read_f32(&file, t, out, 3, &err), AMC_OK);
    /* numpy rounded float32 to float16; our converter must agree bit for bit. */
    for (int i = 0; i < 3; i++)
        assert_true(out[i] == amc_f16_to_f32(amc_f32_to_f16(thirds(i))));

    t = amc_st_find(&file, "gate");
    assert_non_null(t);
    assert_int_equal(t->dtype, AMC_DTYPE_BF16);
    assert_int_equal(amc_st_read_f32(&file, t, out, 4, &err), AMC_OK);
    for (int i = 0; i < 4; i++)
        assert_true(out[i] == quarters(i));
    amc_st_close(&file);
}

static void save_rejects_bad_arguments(void **state)
{
    (void)state;
    char path[128];
    snprintf(path, sizeof path, "%s/bad.safetensors", tmp_dir);
    const float one = 1.0f;
    amc_error err = {0};
    const amc_st_entry twice[] = {
        {.name = "w", .data = &one, .ndim = 1, .shape = {1}},
        {.name = "w", .data = &one, .ndim = 1, .shape = {1}},
    };
    assert_int_equal(amc_st_save(path, twice, 2, NULL, NULL, 0, &err), AMC_EINVAL);
    assert_non_null(strstr(err.msg, "tensor 'w' is given twice"));

    const amc_st_entry too_many = {.name = "w", .data = &one, .ndim = 9};
    assert_int_equal(amc_st_save(path, &too_many, 1, NULL, NULL, 0, &err), AMC_EINVAL);
    assert_non_null(strstr(err.msg, "ndim 9"));

    const amc_st_entry negative = {.name = "w", .data = &one, .ndim = 1, .shape = {-1}};
    assert_int_equal(amc_st_save(path, &negative, 1, NULL, NULL, 0, &err), AMC_EINVAL);

    const amc_st_entry no_data = {.name = "w", .data = NULL, .ndim = 1, .shape = {2}};
    assert_int_equal(amc_st_save(path, &no_data, 1, NULL, NULL, 0, &err), AMC_EINVAL);
    assert_non_null(strstr(err.msg, "data is NULL"));

    const amc_st_entry reserved = {.name = "__metadata__", .data = &one, .ndim = 0};
    assert_int_equal(amc_st_save(path, &reserved, 1, NULL, NULL, 0, &err), AMC_EINVAL);

    const char *keys[] = {"k", "k"}, *values[] = {"1", "2"};
    assert_int_equal(amc_st_save(path, twice, 1, keys, values, 2, &err), AMC_EINVAL);
    assert_non_null(strstr(err.msg, "repeats a key"));
    assert_int_equal(access(path, F_OK), -1);
}

/* ---- malformed input ----------------------------------------------------------------------- */

typedef struct bad_case {
    const char *label;
    const char *header;      /* ' stands for " */
    size_t data_len;
    const char *expected_msg;
} bad_case;

static const bad_case bad_cases[] = {
    {"invalid JSON", "{'w': {'dtype': 'F32',", 0, "header is not valid JSON"},
    {"not an object", "[1, 2, 3]", 0, "header is not a JSON object"},
    {"junk after object", "{}  x", 0, "bytes after its JSON object"},
    {"entry not object", "{'w': 5}", 0, "tensor 'w': entry is not a JSON object"},
    {"missing dtype", "{'w': {'shape': [1], 'data_offsets': [0, 4]}}", 4,
     "tensor 'w': missing or non-string \"dtype\""},
    {"unknown dtype", "{'w': {'dtype': 'F99', 'shape': [1], 'data_offsets': [0, 4]}}", 4,
     "tensor 'w': unknown dtype \"F99\""},
    {"unsupported F64", "{'w': {'dtype': 'F64', 'shape': [1], 'data_offsets': [0, 8]}}", 8,
     "tensor 'w': unsupported dtype \"F64\""},
    {"unsupported I32", "{'ids': {'dtype': 'I32', 'shape': [1], 'data_offsets': [0, 4]}}", 4,
     "tensor 'ids': unsupported dtype \"I32\""},
    {"unsupported U8", "{'m': {'dtype': 'U8', 'shape': [4], 'data_offsets': [0, 4]}}", 4,
     "tensor 'm': unsupported dtype \"U8\""},
    {"missing shape", "{'w': {'dtype': 'F32', 'data_offsets': [0, 4]}}", 4,
     "tensor 'w': missing or non-array \"shape\""},
    {"negative dim", "{'w': {'dtype': 'F32', 'shape': [-1], 'data_offsets': [0, 4]}}", 4,
     "tensor 'w': shape dim 0 is not an integer"},
    {"fractional dim", "{'w': {'dtype': 'F32', 'shape': [1.5], 'data_offsets': [0, 4]}}", 4,
     "shape dim 0 is not an integer"},
    {"string dim", "{'w': {'dtype': 'F32', 'shape': ['1'], 'data_offsets': [0, 4]}}", 4,
     "shape dim 0 is not an integer"},
    {"huge dim", "{'w': {'dtype': 'F32', 'shape': [1e300], 'data_offsets': [0, 4]}}", 4,
     "shape dim 0 is not an integer in [0, 2^53]"},
    {"huge dims overflow", "{'w': {'dtype': 'F32', 'shape': [4294967296, 4294967296, "
     "4294967296], 'data_offsets': [0, 4]}}", 4, "tensor 'w': shape is too large"},
    {"too many dims", "{'w': {'dtype': 'F32', 'shape': [1,1,1,1,1,1,1,1,1], "
     "'data_offsets': [0, 4]}}", 4, "tensor 'w': shape has 9 dims; expected at most 8"},
    {"missing offsets", "{'w': {'dtype': 'F32', 'shape': [1]}}", 4,
     "tensor 'w': missing or invalid \"data_offsets\""},
    {"three offsets", "{'w': {'dtype': 'F32', 'shape': [1], 'data_offsets': [0, 4, 8]}}", 8,
     "invalid \"data_offsets\""},
    {"end past data", "{'w': {'dtype': 'F32', 'shape': [4], 'data_offsets': [0, 16]}}", 12,
     "tensor 'w': data_offsets [0, 16] out of range"},
    {"begin after end", "{'w': {'dtype': 'F32', 'shape': [0], 'data_offsets': [8, 4]}}", 12,
     "data_offsets [8, 4] out of range"},
    {"wrong size for shape", "{'w': {'dtype': 'F32', 'shape': [2, 2], "
     "'data_offsets': [0, 12]}}", 16, "tensor 'w': data_offsets span 12 bytes; expected 16"},
    {"f16 size as f32", "{'w': {'dtype': 'F16', 'shape': [4], 'data_offsets': [0, 16]}}", 16,
     "span 16 bytes; expected 8"},
    {"overlapping offsets", "{'a': {'dtype': 'F32', 'shape': [4], 'data_offsets': [0, 16]}, "
     "'b': {'dtype': 'F32', 'shape': [4], 'data_offsets': [8, 24]}}", 24,
     "tensor 'b': bytes [8, 24) overlap tensor 'a'"},
    {"same range twice", "{'a': {'dtype': 'F32', 'shape': [2], 'data_offsets': [0, 8]}, "
     "'b': {'dtype': 'F32', 'shape': [2], 'data_offsets': [0, 8]}}", 8, "overlap tensor"},
    {"duplicate names", "{'w': {'dtype': 'F32', 'shape': [1], 'data_offsets': [0, 4]}, "
     "'w': {'dtype': 'F32', 'shape': [1], 'data_offsets': [4, 8]}}", 8,
     "tensor 'w' appears twice"},
    {"non-string metadata", "{'__metadata__': {'lr': 0.1}}", 0,
     "\"__metadata__\" value of 'lr' is not a string"},
    {"metadata not object", "{'__metadata__': ['a']}", 0,
     "\"__metadata__\" is not a JSON object"},
    {"metadata twice", "{'__metadata__': {}, '__metadata__': {}}", 0,
     "\"__metadata__\" appears twice"},
    {"duplicate metadata key", "{'__metadata__': {'k': 'a', 'k': 'b'}}", 0,
     "\"__metadata__\" key 'k' appears twice"},
};

static void check_bad_image(const uint8_t *buf, size_t len, const char *label,
                            const char *expected_msg)
{
    amc_st_file file;
    amc_error err = {0};
    amc_status rc = amc_st_parse(&file, buf, len, &err);
    if (rc != AMC_EFORMAT)
        fail_msg("%s: status %s, expected bad_format", label, amc_status_name(rc));
    if (strstr(err.msg, expected_msg) == NULL)
        fail_msg("%s: message \"%s\" lacks \"%s\"", label, err.msg, expected_msg);
    if (strstr(err.msg, "safetensors image") == NULL)
        fail_msg("%s: message \"%s\" does not name the file", label, err.msg);
    assert_null(file.tensors);
    amc_st_close(&file);
}

static void malformed_headers_rejected(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof bad_cases / sizeof *bad_cases; i++) {
        const bad_case *c = &bad_cases[i];
        size_t len;
        uint8_t *buf = make_st(c->header, NULL, c->data_len, &len);
        check_bad_image(buf, len, c->label, c->expected_msg);
        free(buf);
    }
}

static void valid_headers_accepted(void **state)
{
    (void)state;
    /* Space padding after the object, a gap between tensors and an empty header are legal. */
    static const char *const headers[] = {
        "{}",
        "{'__metadata__': {'a': 'b'}}      ",
        "{'a': {'dtype': 'F32', 'shape': [1], 'data_offsets': [8, 12]}, "
        "'b': {'dtype': 'BF16', 'shape': [2], 'data_offsets': [0, 4]}}",
        "{'z': {'dtype': 'F16', 'shape': [0, 3], 'data_offsets': [4, 4]}, "
        "'y': {'dtype': 'F16', 'shape': [0], 'data_offsets': [4, 4]}}",
    };
    for (size_t i = 0; i < sizeof headers / sizeof *headers; i++) {
        size_t len;
        uint8_t *buf = make_st(headers[i], NULL, 12, &len);
        amc_st_file file;
        amc_error err = {0};
        amc_status rc = amc_st_parse(&file, buf, len, &err);
        if (rc != AMC_OK)
            fail_msg("header %zu: %s", i, err.msg);
        amc_st_close(&file);
        free(buf);
    }
}

static void truncated_file_rejected(void **state)
{
    (void)state;
    size_t len;
    uint8_t *buf = make_st("{'w': {'dtype': 'F32', 'shape': [1], 'data_offsets': [0, 4]}}",
                           NULL, 4, &len);
    check_bad_image(buf, 0, "empty", "truncated: 0 bytes");
    check_bad_image(buf, 7, "7 bytes", "truncated: 7 bytes");
    check_bad_image(buf, 20, "cut in the header", "runs past the end of the 20-byte file");
    check_bad_image(buf, len - 1, "cut in the data",
                    "tensor 'w': data_offsets [0, 4] out of range");
    free(buf);
}

static void header_length_checked(void **state)
{
    (void)state;
    size_t len;
    uint8_t *buf = make_st("{}", NULL, 0, &len);
    buf[0] = 3;
    check_bad_image(buf, len, "length past end", "header length 3 runs past the end");
    buf[0] = 0;
    check_bad_image(buf, len, "length zero", "too short for a JSON object");
    buf[0] = 2;
    buf[3] = 0x10;    /* about 268 MB */
    check_bad_image(buf, len, "length over cap", "exceeds the 100000000-byte limit");
    memset(buf, 0xff, 8);
    check_bad_image(buf, len, "length all ones", "exceeds the 100000000-byte limit");
    free(buf);
}

static void open_errors_name_the_file(void **state)
{
    (void)state;
    char path[128];
    snprintf(path, sizeof path, "%s/broken.safetensors", tmp_dir);
    size_t len;
    uint8_t *buf = make_st("{'w': {'dtype': 'F64', 'shape': [1], 'data_offsets': [0, 8]}}",
                           NULL, 8, &len);
    write_bytes(path, buf, len);
    free(buf);

    amc_st_file file;
    amc_error err = {0};
    assert_int_equal(amc_st_open(&file, path, &err), AMC_EFORMAT);
    assert_non_null(strstr(err.msg, path));
    assert_non_null(strstr(err.msg, "tensor 'w': unsupported dtype \"F64\""));
    assert_null(file.map);
    amc_st_close(&file);

    write_bytes(path, "", 0);
    assert_int_equal(amc_st_open(&file, path, &err), AMC_EFORMAT);
    assert_non_null(strstr(err.msg, "truncated: 0 bytes"));
    unlink(path);

    assert_int_equal(amc_st_open(&file, path, &err), AMC_ENOTFOUND);
    assert_non_null(strstr(err.msg, path));
    amc_st_close(&file);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(save_open_round_trip_f32),
        cmocka_unit_test(save_pads_header_to_8_bytes),
        cmocka_unit_test(f16_and_bf16_tensors_read_as_f32),
        cmocka_unit_test(python_written_fixture),
        cmocka_unit_test(save_rejects_bad_arguments),
        cmocka_unit_test(malformed_headers_rejected),
        cmocka_unit_test(valid_headers_accepted),
        cmocka_unit_test(truncated_file_rejected),
        cmocka_unit_test(header_length_checked),
        cmocka_unit_test(open_errors_name_the_file),
    };
    return cmocka_run_group_tests(tests, make_tmp_dir, remove_tmp_dir);
}
