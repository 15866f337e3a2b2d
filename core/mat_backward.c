/* Backward kernels of the connector, one per forward kernel of core/mat.c. */
#include "core/mat.h"
#include "core/mat_simd.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

void amc_linear_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                         const float *w, int N, int n_in, int n_out, int accumulate_dx)
{
    /* dw [n_out, n_in] += dy^T [n_out, N] . x [N, n_in] */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n_out, n_in, N, 1.0f, dy, n_out, x,
                n_in, 1.0f, dw, n_in);

    /* db [n_out] += column sums of dy */
    if (db != NULL) {
        for (int i = 0; i < N; i++) {
            const float *row = dy + (size_t)i * n_out;
            for (int j = 0; j < n_out; j++)
                db[j] += row[j];
        }
    }

    /* dx [N, n_in] (+)= dy [N, n_out] . w [n_out, n_in] */
    if (dx != NULL)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, n_in, n_out, 1.0f, dy, n_out,
                    w, n_in, accumulate_dx ? 1.0f : 0.0f, dx, n_in);
}

/* Uses the same erf approximation as amc_gelu_forward, so forward and backward agree. */
AMC_SIMD_CLONES
void amc_gelu_backward(float *dx, const float *dy, const float *x, size_t n)
{
    const float inv_sqrt2 = 0.70710678118654752f;
    const float inv_sqrt_2pi = 0.39894228040143268f;

    for (size_t i = 0; i < n; i++) {
        float cdf = 0.5f * (1.0f + erf_approx(x[i] * inv_sqrt2));
        float pdf = inv_sqrt_2pi * exp_nonpositive(-0.5f * x[i] * x[i]);
        dx[i] = dy[i] * (cdf + x[i] * pdf);
    }
}

void amc_layernorm_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                            const float *mean, const float *rstd, const float *w, int N, int C)
{
    for (int i = 0; i < N; i++) {
        const float *g = dy + (size_t)i * C;
        const float *row = x + (size_t)i * C;
        float *out = dx + (size_t)i * C;
        const float m = mean[i], s = rstd[i];

        /* the two row means the input gradient needs: of dxhat and of dxhat * xhat */
        double sum_g = 0.0, sum_gx = 0.0;
        for (int j = 0; j < C; j++) {
            float xhat = (row[j] - m) * s;
            float gh = g[j] * w[j];
            sum_g += (double)gh;
            sum_gx += (double)(gh * xhat);
            dw[j] += g[j] * xhat;
            db[j] += g[j];
        }
        float mean_g = (float)(sum_g / C), mean_gx = (float)(sum_gx / C);

        /* dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)) */
        for (int j = 0; j < C; j++) {
            float xhat = (row[j] - m) * s;
            out[j] = s * (g[j] * w[j] - mean_g - xhat * mean_gx);
        }
    }
}

void amc_softmax_backward(float *dx, const float *dy, const float *p, int N, int C)
{
    for (int i = 0; i < N; i++) {
        const float *g = dy + (size_t)i * C;
        const float *pr = p + (size_t)i * C;
        float *out = dx + (size_t)i * C;

        float dot = 0.0f;
        for (int j = 0; j < C; j++)
            dot += g[j] * pr[j];
        for (int j = 0; j < C; j++)
            out[j] = pr[j] * (g[j] - dot);
    }
}

void amc_mean_tokens_backward(float *dx, const float *dy, int n, int seq, int C)
{
    const float inv = 1.0f / (float)seq;

    for (int i = 0; i < n; i++) {
        const float *g = dy + (size_t)i * C;
        for (int s = 0; s < seq; s++) {
            float *out = dx + ((size_t)i * seq + s) * C;
            if (seq == 1) {
                memcpy(out, g, sizeof(float) * (size_t)C);
                continue;
            }
            for (int j = 0; j < C; j++)
                out[j] = g[j] * inv;
        }
    }
}

void amc_l2_normalise_backward(float *dx, const float *dy, const float *y, const float *norms,
                               int N, int C)
{
    for (int i = 0; i < N; i++) {
        const float *g = dy + (size_t)i * C;
        const float *yr = y + (size_t)i * C;
        float *out = dx + (size_t)i * C;

        if (!(norms[i] > 1e-12f)) {
            for (int j = 0; j < C; j++)
                out[j] = g[j] / 1e-12f;
            continue;
        }
        double dot = 0.0;
        for (int j = 0; j < C; j++)
            dot += (double)g[j] * (double)yr[j];
        float inv = 1.0f / norms[i], d = (float)dot;
        for (int j = 0; j < C; j++)
            out[j] = (g[j] - yr[j] * d) * inv;
    }
}

void amc_dropout_backward(float *dx, const float *dy, const float *mask, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dx[i] = dy[i] * mask[i];
}
