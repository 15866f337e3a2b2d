/* Training losses of the connector (see core/loss.h). */
#include "core/loss.h"

#include <cblas.h>
#include <math.h>
#include <stddef.h>

double amc_loss_regression(float *d_pred, const float *pred, const float *target, int N, int C,
                           amc_reg_loss kind, float beta, float weight)
{
    const size_t count = (size_t)N * C;
    const float scale = weight / (float)count;
    double sum = 0.0;

    for (size_t i = 0; i < count; i++) {
        float diff = pred[i] - target[i];
        float grad;
        if (kind == AMC_REG_L2) {
            sum += (double)diff * (double)diff;
            grad = 2.0f * diff;
        } else if (fabsf(diff) < beta) {
            sum += 0.5 * (double)diff * (double)diff / (double)beta;
            grad = diff / beta;
        } else {
            sum += (double)fabsf(diff) - 0.5 * (double)beta;
            grad = diff > 0.0f ? 1.0f : -1.0f;
        }
        if (d_pred != NULL)
            d_pred[i] = scale * grad;
    }
    return sum / (double)count;
}

/* Replaces each row of s [N, N] by its softmax and returns the sum over rows of
 * -log softmax(row)[diagonal]. */
static double softmax_rows_nll(float *s, int N)
{
    double nll = 0.0;

    for (int i = 0; i < N; i++) {
        float *row = s + (size_t)i * N;
        float max = row[0];
        for (int j = 1; j < N; j++)
            max = row[j] > max ? row[j] : max;
        double sum = 0.0;
        for (int j = 0; j < N; j++)
            sum += exp((double)(row[j] - max));
        nll += log(sum) - (double)(row[i] - max);
        for (int j = 0; j < N; j++)
            row[j] = (float)(exp((double)(row[j] - max)) / sum);
    }
    return nll;
}

double amc_loss_info_nce(float *dq, float *dk, const float *q, const float *k, int N, int D,
                         float tau, float weight, float *scratch)
{
    float *rows = scratch, *cols = scratch + (size_t)N * N;
    const float inv_tau = 1.0f / tau;

    /* logits [N, N] = q k^T / tau, and their transpose (the column problem as rows) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, N, D, inv_tau, q, D, k, D, 0.0f,
                rows, N);
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++)
            cols[(size_t)j * N + i] = rows[(size_t)i * N + j];
    double nll = softmax_rows_nll(rows, N) + softmax_rows_nll(cols, N);

    /* dL/dlogits[i, j] = (P_rows[i, j] + P_cols[j, i] - 2 [i == j]) / (2 N), times weight */
    const float scale = 0.5f * weight / (float)N;
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++) {
            float g = rows[(size_t)i * N + j] + cols[(size_t)j * N + i] - (i == j ? 2.0f : 0.0f);
            rows[(size_t)i * N + j] = scale * g;
        }

    /* dq = G k / tau; dk = G^T q / tau */
    if (dq != NULL)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, D, N, inv_tau, rows, N, k, D,
                    0.0f, dq, D);
    if (dk != NULL)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, N, D, N, inv_tau, rows, N, q, D,
                    0.0f, dk, D);
    return nll / (2.0 * N);
}
