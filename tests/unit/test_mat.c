/* Hand-checked cases for the dense kernels of core/mat.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>

#include "core/mat.h"
#include "tests/unit/testutil.h"

static void linear_matches_hand_product(void **state)
{
    (void)state;
    /* x [2, 3], w [2, 3] (out = 2), b [2] */
    const float x[] = {1, 2, 3, -1, 0, 1};
    const float w[] = {1, 0, -1, 2, 1, 0};
    const float b[] = {0.5f, -1};
    float out[4];

    amc_linear_forward(out, x, w, b, 2, 3, 2, 0);
    assert_near(out[0], 1 - 3 + 0.5f, 1e-6);
    assert_near(out[1], 2 + 2 - 1, 1e-6);
    assert_near(out[2], -1 - 1 + 0.5f, 1e-6);
    assert_near(out[3], -2 + 0 - 1, 1e-6);

    /* accumulate adds the product and the bias onto what is there */
    amc_linear_forward(out, x, w, b, 2, 3, 2, 1);
    assert_near(out[0], 2 * (1 - 3 + 0.5f), 1e-6);
    assert_near(out[3], 2 * (-2 + 0 - 1), 1e-6);
}

static void gelu_matches_erf_form(void **state)
{
    (void)state;
    const float x[] = {-3, -1, 0, 0.5f, 2};
    /* 0.5 x (1 + erf(x / sqrt 2)), computed in double by hand */
    const double want[] = {-0.0040496, -0.1586553, 0.0, 0.3457312, 1.9544997};
    float out[5];

    amc_gelu_forward(out, x, 5);
    for (int i = 0; i < 5; i++)
        assert_near(out[i], want[i], 1e-6);
}

static void gelu_accurate_over_range(void **state)
{
    (void)state;
    enum { N = 2401 };
    static float x[N], out[N];

    for (int i = 0; i < N; i++)
        x[i] = -12.0f + 0.01f * (float)i;
    amc_gelu_forward(out, x, N);
    for (int i = 0; i < N; i++) {
        double xd = (double)x[i];
        double want = 0.5 * xd * (1.0 + erf(xd / sqrt(2.0)));
        assert_near(out[i], want, 1e-6 * fmax(1.0, fabs(xd)));
    }
}

static void layernorm_normalises_rows(void **state)
{
    (void)state;
    const float x[] = {1, 2, 3, 4, 10, 10, 10, 10};
    const float w[] = {1, 1, 2, 2};
    const float b[] = {0, 0, 0, 1};
    float out[8], mean[2], rstd[2];

    amc_layernorm_forward(out, mean, rstd, x, w, b, 2, 4, 1e-5f);
    /* row 0: mean 2.5, biased variance 1.25 */
    double s = 1.0 / sqrt(1.25 + 1e-5);
    assert_near(mean[0], 2.5, 1e-6);
    assert_near(rstd[0], s, 1e-5);
    assert_near(out[0], -1.5 * s, 1e-5);
    assert_near(out[2], 2 * 0.5 * s, 1e-5);
    assert_near(out[3], 2 * 1.5 * s + 1, 1e-5);
    /* row 1 is constant: everything maps to the bias */
    assert_near(out[4], 0, 1e-6);
    assert_near(out[7], 1, 1e-6);
}

static void softmax_sums_to_one(void **state)
{
    (void)state;
    const float x[] = {1, 2, 3, 1000, 1000, -1000};
    float out[6];

    amc_softmax_rows(out, x, 2, 3);
    double e1 = exp(-2.0), e2 = exp(-1.0), z = e1 + e2 + 1;
    assert_near(out[0], e1 / z, 1e-6);
    assert_near(out[1], e2 / z, 1e-6);
    assert_near(out[2], 1 / z, 1e-6);
    /* large logits do not overflow */
    assert_near(out[3], 0.5, 1e-6);
    assert_near(out[4], 0.5, 1e-6);
    assert_near(out[5], 0, 1e-6);
}

static void topk_orders_and_breaks_ties(void **state)
{
    (void)state;
    const float p[] = {0.1f, 0.4f, 0.2f, 0.3f, /* row 1: ties */ 0.25f, 0.25f, 0.25f, 0.25f};
    int idx[4];

    amc_topk_rows(idx, p, 1, 4, 2);
    assert_int_equal(idx[0], 1);
    assert_int_equal(idx[1], 3);

    amc_topk_rows(idx, p + 4, 1, 4, 3);
    assert_int_equal(idx[0], 0);
    assert_int_equal(idx[1], 1);
    assert_int_equal(idx[2], 2);

    /* k = C returns every index, sorted by value */
    amc_topk_rows(idx, p, 1, 4, 4);
    assert_int_equal(idx[0], 1);
    assert_int_equal(idx[1], 3);
    assert_int_equal(idx[2], 2);
    assert_int_equal(idx[3], 0);

    /* k = 1 is the arg max */
    amc_topk_rows(idx, p, 1, 4, 1);
    assert_int_equal(idx[0], 1);
}

static void mean_tokens_averages_groups(void **state)
{
    (void)state;
    /* 2 items of 2 tokens, C = 2 */
    const float x[] = {1, 2, 3, 4, 10, 20, 30, 40};
    float out[4];

    amc_mean_tokens(out, x, 2, 2, 2);
    assert_near(out[0], 2, 1e-6);
    assert_near(out[1], 3, 1e-6);
    assert_near(out[2], 20, 1e-6);
    assert_near(out[3], 30, 1e-6);
}

static void l2_normalise_unit_rows(void **state)
{
    (void)state;
    float x[] = {3, 4, 0, 0};
    float norms[2];

    amc_l2_normalise_rows(x, norms, 2, 2);
    assert_near(x[0], 0.6, 1e-6);
    assert_near(x[1], 0.8, 1e-6);
    assert_near(norms[0], 5, 1e-6);
    /* a zero row stays zero instead of becoming NaN */
    assert_near(x[2], 0, 0);
    assert_near(norms[1], 0, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(linear_matches_hand_product),
        cmocka_unit_test(gelu_matches_erf_form),
        cmocka_unit_test(gelu_accurate_over_range),
        cmocka_unit_test(layernorm_normalises_rows),
        cmocka_unit_test(softmax_sums_to_one),
        cmocka_unit_test(topk_orders_and_breaks_ties),
        cmocka_unit_test(mean_tokens_averages_groups),
        cmocka_unit_test(l2_normalise_unit_rows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
