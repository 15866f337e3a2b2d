/* Helpers shared by the cmocka unit tests. */
#ifndef ALTMOE_TESTS_TESTUTIL_H
#define ALTMOE_TESTS_TESTUTIL_H

#include <math.h>

/* Fails the current test, printing both values, unless |got - want| <= tol. */
#define assert_near(got, want, tol) \
    assert_near_impl((double)(got), (double)(want), (double)(tol), #got, __FILE__, __LINE__)

static inline void assert_near_impl(double got, double want, double tol, const char *expr,
                                    const char *file, int line)
{
    if (!(fabs(got - want) <= tol)) {
        print_error("%s = %.9g, expected %.9g (tolerance %.3g)\n", expr, got, want, tol);
        _fail(file, line);
    }
}

#endif
