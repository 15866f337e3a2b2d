/* AdamW, gradient clipping and schedules (see core/optim.h). */
#include "core/optim.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

amc_status amc_adamw_init(amc_adamw *opt, const amc_connector *conn, amc_error *err)
{
    memset(opt, 0, sizeof *opt);
    opt->n_params = conn->n_params;
    opt->n_tensors = conn->n_tensors;
    opt->m = calloc(conn->n_params, sizeof(float));
    opt->v = calloc(conn->n_params, sizeof(float));
    opt->steps = calloc((size_t)conn->n_tensors, sizeof(int64_t));
    opt->beta1 = 0.9f;
    opt->beta2 = 0.999f;
    opt->eps = 1e-8f;
    if (opt->m == NULL || opt->v == NULL || opt->steps == NULL) {
        amc_adamw_free(opt);
        return amc_error_set(err, AMC_ENOMEM, "optimiser: out of memory for %zu parameters",
                             conn->n_params);
    }
    return AMC_OK;
}

void amc_adamw_free(amc_adamw *opt)
{
    free(opt->m);
    free(opt->v);
    free(opt->steps);
    opt->m = opt->v = NULL;
    opt->steps = NULL;
}

/* p, m, v [n]: one AdamW update with gradient g [n]. The loop touches every parameter each step;
 * the Makefile builds this file with -O3 -fno-math-errno so that it vectorises (sqrtf becomes one
 * instruction; no reassociation, so the results do not change). */
static void adamw_update(float *restrict p, float *restrict m, float *restrict v,
                         const float *restrict g, size_t n, float b1, float b2, float decay,
                         float step_size, float bc2_sqrt, float eps)
{
    for (size_t i = 0; i < n; i++) {
        p[i] *= decay;
        m[i] = b1 * m[i] + (1.0f - b1) * g[i];
        v[i] = b2 * v[i] + (1.0f - b2) * g[i] * g[i];
        float denom = sqrtf(v[i]) / bc2_sqrt + eps;
        p[i] -= step_size * m[i] / denom;
    }
}

void amc_adamw_step(amc_adamw *opt, amc_connector *conn, const float *grad,
                    const unsigned char *used, float lr, float wd)
{
    const float b1 = opt->beta1, b2 = opt->beta2;

    for (int t = 0; t < conn->n_tensors; t++) {
        if (!used[t])
            continue;
        const amc_tensor_info *ti = &conn->tensors[t];
        int64_t step = ++opt->steps[t];
        /* bias corrections as torch computes them: lr / (1 - b1^t) and sqrt(1 - b2^t) */
        float bc1 = 1.0f - powf(b1, (float)step);
        float bc2_sqrt = sqrtf(1.0f - powf(b2, (float)step));
        float step_size = lr / bc1;
        float decay = ti->decay ? 1.0f - lr * wd : 1.0f;
        adamw_update(conn->block + ti->offset, opt->m + ti->offset, opt->v + ti->offset,
                     grad + ti->offset, ti->numel, b1, b2, decay, step_size, bc2_sqrt,
                     opt->eps);
    }
}

double amc_clip_grad_norm(float *grad, size_t n, float max_norm)
{
    /* BLAS dot products in blocks, each accumulated into a double */
    double ss = 0.0;
    for (size_t at = 0; at < n; at += 1 << 20) {
        int count = (int)(n - at < (1 << 20) ? n - at : 1 << 20);
        ss += (double)cblas_sdot(count, grad + at, 1, grad + at, 1);
    }
    double norm = sqrt(ss);
    if (max_norm > 0.0f) {
        double coef = (double)max_norm / (norm + 1e-6);
        if (coef < 1.0) {
            float c = (float)coef;
            for (size_t i = 0; i < n; i++)
                grad[i] *= c;
        }
    }
    return norm;
}

float amc_schedule_lr(const amc_schedule_cfg *s, int64_t step)
{
    if (step < s->warmup_steps)
        return s->lr_start +
               (s->lr_peak - s->lr_start) * (float)((double)step / (double)s->warmup_steps);
    int64_t span = s->total_steps - s->warmup_steps;
    if (span <= 0 || step >= s->total_steps)
        return span <= 0 ? s->lr_peak : s->lr_final;
    double progress = (double)(step - s->warmup_steps) / (double)span;
    return s->lr_final +
           (s->lr_peak - s->lr_final) * (float)(0.5 * (1.0 + cos(M_PI * progress)));
}

float amc_schedule_wd(const amc_schedule_cfg *s, int64_t step)
{
    double progress = s->total_steps > 0 ? (double)step / (double)s->total_steps : 1.0;
    if (progress > 1.0)
        progress = 1.0;
    return s->wd_end + (s->wd_start - s->wd_end) * (float)(0.5 * (1.0 + cos(M_PI * progress)));
}
