/* Unit tests of the FAISS C API subset in index/faiss_c_impl.cpp: every function, its error
 * codes and the per-thread last-error message. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "index/faiss_c.h"

#define DIM 8

/* Fills x [n, DIM] with deterministic pseudo-random unit vectors. */
static void random_unit(float *x, int n, uint32_t seed)
{
    for (int i = 0; i < n; i++) {
        double norm = 0.0;
        for (int j = 0; j < DIM; j++) {
            seed = seed * 1664525u + 1013904223u;
            x[i * DIM + j] = (float)((double)(seed >> 8) / 16777216.0 - 0.5);
            norm += (double)x[i * DIM + j] * (double)x[i * DIM + j];
        }
        for (int j = 0; j < DIM; j++)
            x[i * DIM + j] = (float)((double)x[i * DIM + j] / sqrt(norm));
    }
}

static FaissIndex *make_index(const char *spec)
{
    FaissIndex *index = NULL;
    assert_int_equal(faiss_index_factory(&index, DIM, spec, METRIC_INNER_PRODUCT), 0);
    assert_non_null(index);
    return index;
}

/* Adds n vectors with ids 100, 101, ... and returns them in x. */
static void add_vectors(FaissIndex *index, float *x, int n)
{
    idx_t ids[256];
    random_unit(x, n, 7);
    for (int i = 0; i < n; i++)
        ids[i] = 100 + i;
    assert_int_equal(faiss_Index_add_with_ids(index, n, x, ids), 0);
}

static void test_factory_getters(void **state)
{
    (void)state;
    FaissIndex *flat = make_index("Flat");
    assert_int_equal(faiss_Index_d(flat), DIM);
    assert_int_equal(faiss_Index_ntotal(flat), 0);
    assert_int_equal(faiss_Index_is_trained(flat), 1);
    assert_int_equal(faiss_Index_metric_type(flat), METRIC_INNER_PRODUCT);
    faiss_Index_free(flat);

    FaissIndex *ivf = make_index("IVF4,Flat");
    assert_int_equal(faiss_Index_is_trained(ivf), 0);
    faiss_Index_free(ivf);
    faiss_Index_free(NULL);
}

static void test_factory_errors(void **state)
{
    (void)state;
    FaissIndex *index = NULL;
    assert_int_equal(faiss_index_factory(&index, DIM, "NoSuchIndex", METRIC_INNER_PRODUCT), -2);
    assert_null(index);
    const char *msg = faiss_get_last_error();
    assert_non_null(msg);
    assert_non_null(strstr(msg, "NoSuchIndex"));

    assert_int_equal(faiss_index_factory(NULL, DIM, "Flat", METRIC_INNER_PRODUCT), -4);
    assert_non_null(strstr(faiss_get_last_error(), "p_index"));
    assert_int_equal(faiss_index_factory(&index, DIM, NULL, METRIC_INNER_PRODUCT), -4);
}

static void test_add_search(void **state)
{
    (void)state;
    FaissIndex *index = make_index("IDMap,Flat");
    float x[16 * DIM];
    add_vectors(index, x, 16);
    assert_int_equal(faiss_Index_ntotal(index), 16);

    /* Each vector is its own nearest neighbour with score 1; k > ntotal pads with -1. */
    float dist[20];
    idx_t labels[20];
    assert_int_equal(faiss_Index_search(index, 1, x + 5 * DIM, 20, dist, labels), 0);
    assert_int_equal(labels[0], 105);
    assert_float_equal(dist[0], 1.0f, 1e-5f);
    assert_int_equal(labels[19], -1);

    /* A plain Flat index assigns its own ids and rejects explicit ones. */
    FaissIndex *flat = make_index("Flat");
    idx_t ids[1] = {9};
    assert_int_equal(faiss_Index_add_with_ids(flat, 1, x, ids), -2);
    assert_non_null(faiss_get_last_error());
    assert_int_equal(faiss_Index_add(flat, 2, x), 0);
    assert_int_equal(faiss_Index_ntotal(flat), 2);
    assert_int_equal(faiss_Index_reset(flat), 0);
    assert_int_equal(faiss_Index_ntotal(flat), 0);

    assert_int_equal(faiss_Index_search(index, 1, NULL, 1, dist, labels), -4);
    assert_int_equal(faiss_Index_add_with_ids(NULL, 1, x, ids), -4);
    faiss_Index_free(flat);
    faiss_Index_free(index);
}

static void test_train(void **state)
{
    (void)state;
    FaissIndex *ivf = make_index("IVF4,Flat");
    float x[200 * DIM];
    idx_t ids[1] = {1};
    random_unit(x, 200, 3);
    assert_int_equal(faiss_Index_add_with_ids(ivf, 1, x, ids), -2);
    assert_int_equal(faiss_Index_train(ivf, 200, x), 0);
    assert_int_equal(faiss_Index_is_trained(ivf), 1);
    assert_int_equal(faiss_Index_add_with_ids(ivf, 1, x, ids), 0);
    assert_int_equal(faiss_Index_ntotal(ivf), 1);
    assert_int_equal(faiss_Index_train(ivf, 1, NULL), -4);
    faiss_Index_free(ivf);
}

static void test_remove_ids(void **state)
{
    (void)state;
    FaissIndex *index = make_index("IDMap,Flat");
    float x[16 * DIM];
    add_vectors(index, x, 16);

    idx_t gone[3] = {101, 103, 999};
    FaissIDSelectorBatch *batch = NULL;
    assert_int_equal(faiss_IDSelectorBatch_new(&batch, 3, gone), 0);
    assert_int_equal(faiss_IDSelector_is_member((FaissIDSelector *)batch, 103), 1);
    assert_int_equal(faiss_IDSelector_is_member((FaissIDSelector *)batch, 104), 0);
    size_t removed = 0;
    assert_int_equal(faiss_Index_remove_ids(index, (FaissIDSelector *)batch, &removed), 0);
    assert_int_equal(removed, 2);
    assert_int_equal(faiss_Index_ntotal(index), 14);
    faiss_IDSelector_free((FaissIDSelector *)batch);

    FaissIDSelectorRange *range = NULL;
    assert_int_equal(faiss_IDSelectorRange_new(&range, 110, 116), 0);
    assert_int_equal(faiss_Index_remove_ids(index, (FaissIDSelector *)range, &removed), 0);
    assert_int_equal(removed, 6);
    faiss_IDSelectorRange_free(range);

    /* HNSW cannot remove: the caller gets a FAISS error, and NULL arguments a std error. */
    FaissIndex *hnsw = make_index("IDMap,HNSW8");
    add_vectors(hnsw, x, 16);
    assert_int_equal(faiss_IDSelectorBatch_new(&batch, 1, gone), 0);
    assert_int_equal(faiss_Index_remove_ids(hnsw, (FaissIDSelector *)batch, &removed), -2);
    assert_int_equal(faiss_Index_remove_ids(hnsw, NULL, &removed), -4);
    assert_int_equal(faiss_IDSelectorBatch_new(NULL, 1, gone), -4);
    assert_int_equal(faiss_IDSelectorBatch_new(&batch, 1, NULL), -4);
    faiss_IDSelector_free((FaissIDSelector *)batch);
    faiss_Index_free(hnsw);
    faiss_Index_free(index);
}

static void test_parameter_space(void **state)
{
    (void)state;
    FaissParameterSpace *ps = NULL;
    assert_int_equal(faiss_ParameterSpace_new(&ps), 0);
    FaissIndex *ivf = make_index("IVF4,Flat");
    FaissIndex *hnsw = make_index("IDMap,HNSW8");
    assert_int_equal(faiss_ParameterSpace_set_index_parameter(ps, ivf, "nprobe", 3), 0);
    assert_int_equal(faiss_ParameterSpace_set_index_parameter(ps, hnsw, "efSearch", 40), 0);
    assert_int_equal(faiss_ParameterSpace_set_index_parameter(ps, hnsw, "bogus", 1), -2);
    assert_non_null(strstr(faiss_get_last_error(), "bogus"));
    assert_int_equal(faiss_ParameterSpace_set_index_parameter(ps, NULL, "nprobe", 1), -4);
    assert_int_equal(faiss_ParameterSpace_new(NULL), -4);
    faiss_Index_free(hnsw);
    faiss_Index_free(ivf);
    faiss_ParameterSpace_free(ps);
}

static void test_write_read(void **state)
{
    (void)state;
    char dir[] = "/tmp/altmoe-faiss-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/index.faiss", dir);

    FaissIndex *index = make_index("IDMap,Flat");
    float x[16 * DIM];
    add_vectors(index, x, 16);
    assert_int_equal(faiss_write_index_fname(index, path), 0);

    FaissIndex *back = NULL;
    assert_int_equal(faiss_read_index_fname(path, 0, &back), 0);
    assert_int_equal(faiss_Index_ntotal(back), 16);
    float dist[1];
    idx_t label[1];
    assert_int_equal(faiss_Index_search(back, 1, x + 3 * DIM, 1, dist, label), 0);
    assert_int_equal(label[0], 103);
    faiss_Index_free(back);

    /* The FILE * variants read what follows a caller's own header. */
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs("HDR", f);
    assert_int_equal(faiss_write_index(index, f), 0);
    fclose(f);
    f = fopen(path, "rb");
    char hdr[3];
    assert_int_equal(fread(hdr, 1, 3, f), 3);
    assert_int_equal(faiss_read_index(f, 0, &back), 0);
    fclose(f);
    assert_int_equal(faiss_Index_ntotal(back), 16);
    faiss_Index_free(back);

    /* Missing and garbage files fail with a message instead of crashing. */
    back = NULL;
    assert_int_equal(faiss_read_index_fname("/nonexistent/x.faiss", 0, &back), -2);
    assert_null(back);
    f = fopen(path, "wb");
    fputs("garbage, not an index", f);
    fclose(f);
    assert_true(faiss_read_index_fname(path, 0, &back) < 0);
    assert_non_null(faiss_get_last_error());
    assert_int_equal(faiss_write_index_fname(index, "/nonexistent/dir/x"), -2);
    assert_int_equal(faiss_write_index_fname(NULL, path), -4);
    assert_int_equal(faiss_read_index(NULL, 0, &back), -4);

    faiss_Index_free(index);
    unlink(path);
    rmdir(dir);
}

static void *fail_in_thread(void *arg)
{
    const char **seen = arg;
    seen[0] = faiss_get_last_error();
    FaissIndex *index = NULL;
    faiss_index_factory(&index, DIM, "OtherThreadBadSpec", METRIC_INNER_PRODUCT);
    seen[1] = faiss_get_last_error() != NULL ? "set" : NULL;
    return NULL;
}

static void test_last_error_per_thread(void **state)
{
    (void)state;
    FaissIndex *index = NULL;
    assert_int_equal(faiss_index_factory(&index, DIM, "MainThreadBadSpec", METRIC_L2), -2);

    const char *seen[2] = {"unset", NULL};
    pthread_t thread;
    assert_int_equal(pthread_create(&thread, NULL, fail_in_thread, seen), 0);
    pthread_join(thread, NULL);
    assert_null(seen[0]);
    assert_non_null(seen[1]);
    assert_non_null(strstr(faiss_get_last_error(), "MainThreadBadSpec"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_factory_getters),
        cmocka_unit_test(test_factory_errors),
        cmocka_unit_test(test_add_search),
        cmocka_unit_test(test_train),
        cmocka_unit_test(test_remove_ids),
        cmocka_unit_test(test_parameter_space),
        cmocka_unit_test(test_write_read),
        cmocka_unit_test(test_last_error_per_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
