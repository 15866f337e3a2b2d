/* AdamW over a connector's parameter block, global gradient-norm clipping, and the learning-rate
 * and weight-decay schedules of training.
 *
 * AdamW follows PyTorch's torch.optim.AdamW: decoupled weight decay p *= 1 - lr * wd, then the
 * bias-corrected Adam update, with a step count per tensor. A tensor that no step touched (its
 * gradient would be None in PyTorch) is skipped entirely: no decay, no moment update, no step
 * count. Weight decay applies only to tensors with amc_tensor_info.decay (Linear weights). */
#ifndef ALTMOE_CORE_OPTIM_H
#define ALTMOE_CORE_OPTIM_H

#include <stdint.h>

#include "core/connector.h"

typedef struct amc_adamw {
    size_t n_params;
    float *m, *v;           /* [n_params] first and second moments, owned */
    int64_t *steps;         /* [n_tensors] updates applied to each tensor, owned */
    int n_tensors;
    float beta1, beta2, eps;
} amc_adamw;

/* Allocates zeroed moments for conn with betas (0.9, 0.999) and eps 1e-8. */
amc_status amc_adamw_init(amc_adamw *opt, const amc_connector *conn, amc_error *err);
void amc_adamw_free(amc_adamw *opt);

/* One update of conn's weights from the gradient block grad [n_params], for the tensors with
 * used[t] != 0, at learning rate lr and weight decay wd. */
void amc_adamw_step(amc_adamw *opt, amc_connector *conn, const float *grad,
                    const unsigned char *used, float lr, float wd);

/* Scales grad [n] so that its global L2 norm is at most max_norm (PyTorch's clip_grad_norm_:
 * factor max_norm / (norm + 1e-6) when below 1). Returns the norm before clipping. max_norm <= 0
 * only measures. */
double amc_clip_grad_norm(float *grad, size_t n, float max_norm);

typedef struct amc_schedule_cfg {
    float lr_start;         /* learning rate at step 0 */
    float lr_peak;          /* reached linearly after warmup_steps */
    float lr_final;         /* reached by the cosine at total_steps */
    int64_t warmup_steps;
    int64_t total_steps;
    float wd_start, wd_end; /* weight decay follows a cosine from wd_start to wd_end */
} amc_schedule_cfg;

/* Learning rate at step (0-based): linear warmup from lr_start to lr_peak over warmup_steps,
 * then a half cosine from lr_peak down to lr_final at total_steps (constant after). */
float amc_schedule_lr(const amc_schedule_cfg *s, int64_t step);

/* Weight decay at step: wd_end + (wd_start - wd_end) (1 + cos(pi step / total_steps)) / 2. */
float amc_schedule_wd(const amc_schedule_cfg *s, int64_t step);

#endif
