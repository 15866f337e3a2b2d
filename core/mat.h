/* Dense float32 kernels of the connector: Linear layers over OpenBLAS cblas_sgemm, GELU (erf
 * form), LayerNorm, softmax, top-k, mean over tokens and L2 normalisation.
 *
 * Matrices are row-major. Argument order: outputs first, then inputs, then sizes. Shapes are
 * given in brackets; N is a number of rows (tokens or items). */
#ifndef ALTMOE_CORE_MAT_H
#define ALTMOE_CORE_MAT_H

#include <stddef.h>

/* out [N, n_out] = x [N, n_in] . w^T + b, with w [n_out, n_in] (PyTorch Linear layout) and b
 * [n_out] or NULL. When accumulate is non-zero the product is added to out instead. */
void amc_linear_forward(float *out, const float *x, const float *w, const float *b, int N,
                        int n_in, int n_out, int accumulate);

/* out[i] = x[i] * Phi(x[i]) = 0.5 x (1 + erf(x / sqrt 2)); out may equal x. */
void amc_gelu_forward(float *out, const float *x, size_t n);

/* LayerNorm over the last dim C of x [N, C]: out = (x - mean) * rstd * w + b. Writes the
 * per-row mean [N] and reciprocal standard deviation rstd [N] for the backward pass; either may
 * be NULL. The variance is the biased one, as in PyTorch. */
void amc_layernorm_forward(float *out, float *mean, float *rstd, const float *x, const float *w,
                           const float *b, int N, int C, float eps);

/* Row-wise softmax of x [N, C] into out (may equal x), computed in a numerically stable way. */
void amc_softmax_rows(float *out, const float *x, int N, int C);

/* For each row of p [N, C], writes the indices of its k largest values to idx [N, k] in
 * descending order of value. Among equal values the lower index comes first. 1 <= k <= C. */
void amc_topk_rows(int *idx, const float *p, int N, int C, int k);

/* out [n, C] = mean over seq consecutive rows of x [n * seq, C]. */
void amc_mean_tokens(float *out, const float *x, int n, int seq, int C);

/* Scales each row of x [N, C] to unit L2 norm in place and writes the original norms to norms
 * [N] (may be NULL). A row of norm below 1e-12 is divided by 1e-12, as torch's F.normalize does. */
void amc_l2_normalise_rows(float *x, float *norms, int N, int C);

#endif
