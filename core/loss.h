/* Training losses of the connector and their gradients.
 *
 * Every loss is averaged as PyTorch's default reduction does, returns its value in double and
 * writes the gradient of that value with respect to each input (scaled by the caller's weight,
 * so a weighted sum of losses adds up gradients directly). */
#ifndef ALTMOE_CORE_LOSS_H
#define ALTMOE_CORE_LOSS_H

typedef enum amc_reg_loss {
    AMC_REG_SMOOTH_L1 = 0,   /* Huber with transition beta, mean over all elements */
    AMC_REG_L2               /* squared error, mean over all elements (MSE) */
} amc_reg_loss;

/* Regression loss between pred [N, C] and target [N, C]. Writes d_pred [N, C] = weight *
 * dL/dpred (d_pred may be NULL). beta > 0 is the SmoothL1 transition point; ignored for L2. */
double amc_loss_regression(float *d_pred, const float *pred, const float *target, int N, int C,
                           amc_reg_loss kind, float beta, float weight);

/* Symmetric InfoNCE with in-batch negatives between rows of q [N, D] and k [N, D] (both
 * L2-normalised by the caller): logits = q k^T / tau, loss = (CE over rows + CE over columns) / 2
 * with the diagonal as the positives, each cross-entropy a mean over N. Writes dq and dk [N, D]
 * = weight * gradient (either may be NULL). scratch must have room for 2 * N * N floats. */
double amc_loss_info_nce(float *dq, float *dk, const float *q, const float *k, int N, int D,
                         float tau, float weight, float *scratch);

#endif
