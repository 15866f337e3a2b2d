/* Dense float32 kernels of the connector. */
#include "core/mat.h"

#include <cblas.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

void amc_linear_forward(float *out, const float *x, const float *w, const float *b, int N,
                        int n_in, int n_out, int accumulate)
{
    float beta = 0.0f;

    if (accumulate) {
        beta = 1.0f;
    } else if (b != NULL) {
        /* Seed every row with the bias so the GEMM adds onto it. */
        for (int i = 0; i < N; i++)
            memcpy(out + (size_t)i * n_out, b, sizeof(float) * (size_t)n_out);
        beta = 1.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, n_out, n_in, 1.0f, x, n_in, w, n_in,
                beta, out, n_out);
    if (accumulate && b != NULL) {
        for (int i = 0; i < N; i++) {
            float *row = out + (size_t)i * n_out;
            for (int j = 0; j < n_out; j++)
                row[j] += b[j];
        }
    }
}

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
#define AMC_SIMD_CLONES __attribute__((target_clones("avx512f", "avx2", "default"), optimize("tree-vectorize")))
#else
#define AMC_SIMD_CLONES
#endif

AMC_SIMD_CLONES
void amc_gelu_forward(float *out, const float *x, size_t n)
{
    const float inv_sqrt2 = 0.70710678118654752f;

    for (size_t i = 0; i < n; i++)
        out[i] = 0.5f * x[i] * (1.0f + erf_approx(x[i] * inv_sqrt2));
}

void amc_layernorm_forward(float *out, float *mean, float *rstd, const float *x, const float *w,
                           const float *b, int N, int C, float eps)
{
    for (int i = 0; i < N; i++) {
        const float *row = x + (size_t)i * C;
        float *dst = out + (size_t)i * C;

        /* Mean and biased variance, accumulated in double for stability at large C. */
        double sum = 0.0;
        for (int j = 0; j < C; j++)
            sum += (double)row[j];
        double m = sum / C;
        double var = 0.0;
        for (int j = 0; j < C; j++) {
            double d = (double)row[j] - m;
            var += d * d;
        }
        var /= C;
        float s = (float)(1.0 / sqrt(var + (double)eps));

        float mf = (float)m;
        for (int j = 0; j < C; j++)
            dst[j] = (row[j] - mf) * s * w[j] + b[j];
        if (mean != NULL)
            mean[i] = mf;
        if (rstd != NULL)
            rstd[i] = s;
    }
}

void amc_softmax_rows(float *out, const float *x, int N, int C)
{
    for (int i = 0; i < N; i++) {
        const float *row = x + (size_t)i * C;
        float *dst = out + (size_t)i * C;

        float max = -FLT_MAX;
        for (int j = 0; j < C; j++)
            max = row[j] > max ? row[j] : max;
        float sum = 0.0f;
        for (int j = 0; j < C; j++) {
            dst[j] = expf(row[j] - max);
            sum += dst[j];
        }
        float inv = 1.0f / sum;
        for (int j = 0; j < C; j++)
            dst[j] *= inv;
    }
}

void amc_topk_rows(int *idx, const float *p, int N, int C, int k)
{
    for (int i = 0; i < N; i++) {
        const float *row = p + (size_t)i * C;
        int *sel = idx + (size_t)i * k;

        /* Insertion into a sorted list of k; C is small (the number of experts). A strict
         * comparison keeps the lower index first among equal values. */
        int n = 0;
        for (int j = 0; j < C; j++) {
            if (n == k && !(row[j] > row[sel[k - 1]]))
                continue;
            int pos = n < k ? n++ : k - 1;
            while (pos > 0 && row[j] > row[sel[pos - 1]]) {
                sel[pos] = sel[pos - 1];
                pos--;
            }
            sel[pos] = j;
        }
    }
}

void amc_mean_tokens(float *out, const float *x, int n, int seq, int C)
{
    const float inv = 1.0f / (float)seq;

    for (int i = 0; i < n; i++) {
        float *dst = out + (size_t)i * C;
        const float *src = x + (size_t)i * seq * C;

        memcpy(dst, src, sizeof(float) * (size_t)C);
        for (int s = 1; s < seq; s++)
            for (int j = 0; j < C; j++)
                dst[j] += src[(size_t)s * C + j];
        if (seq > 1)
            for (int j = 0; j < C; j++)
                dst[j] *= inv;
    }
}

void amc_l2_normalise_rows(float *x, float *norms, int N, int C)
{
    for (int i = 0; i < N; i++) {
        float *row = x + (size_t)i * C;

        double ss = 0.0;
        for (int j = 0; j < C; j++)
            ss += (double)row[j] * (double)row[j];
        float norm = (float)sqrt(ss);
        float inv = 1.0f / (norm > 1e-12f ? norm : 1e-12f);
        for (int j = 0; j < C; j++)
            row[j] *= inv;
        if (norms != NULL)
            norms[i] = norm;
    }
}
