/* Branch-free float helpers shared by the forward and backward kernels (core/mat.c,
 * core/mat_backward.c), written so that the element-wise loops that call them vectorise.
 * Internal to core/: not part of the public kernel API of core/mat.h. */
#ifndef ALTMOE_CORE_MAT_SIMD_H
#define ALTMOE_CORE_MAT_SIMD_H

#include <stdint.h>
#include <string.h>

/* exp(x) for x <= 0 in branch-free float arithmetic, so the GELU loop vectorises: Cody-Waite
 * reduction x = n ln2 + r with |r| <= ln2 / 2, a degree-6 Taylor polynomial for e^r (relative
 * error below 2e-7 on that interval), then scaling by 2^n through the exponent bits. */
static inline float exp_nonpositive(float x)
{
    x = x < -87.0f ? -87.0f : x;
    float n = __builtin_rintf(x * 1.44269504088896341f);
    float r = x - n * 0.693145751953125f - n * 1.428606765330187045e-06f;
    float p = 1.0f + r * (1.0f + r * (0.5f + r * (1.66666667e-1f + r * (4.16666667e-2f +
              r * (8.33333333e-3f + r * 1.38888889e-3f)))));
    int32_t bits = (int32_t)(n + 127.0f) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* erf(x) by Abramowitz and Stegun, Handbook of Mathematical Functions, formula 7.1.26: absolute
 * error below 1.5e-7 for every x. */
static inline float erf_approx(float x)
{
    float ax = x < 0.0f ? -x : x;
    float t = 1.0f / (1.0f + 0.3275911f * ax);
    float poly = t * (0.254829592f + t * (-0.284496736f + t * (1.421413741f +
                 t * (-1.453152027f + t * 1.061405429f))));
    float y = 1.0f - poly * exp_nonpositive(-ax * ax);
    return x < 0.0f ? -y : y;
}

/* Built for AVX-512, AVX2 and baseline x86-64; the loader picks the best the CPU has. Not under
 * a sanitizer: the loader runs the clone resolver during relocation, before the sanitizer
 * runtime is set up, and a ThreadSanitizer-instrumented resolver then crashes the process. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
#define AMC_SIMD_CLONES \
    __attribute__((target_clones("avx512f", "avx2", "default"), optimize("tree-vectorize")))
#else
#define AMC_SIMD_CLONES
#endif

#endif
