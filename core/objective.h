/* The training objective of one direction s->t on one batch of aligned pairs:
 *   loss = alpha * L_reg + (1 - alpha) * L_cl
 * with L_reg the regression loss (SmoothL1 or L2) between the prediction head's output and the
 * true target embedding (the target tokens' mean), and L_cl the symmetric InfoNCE between the
 * normalised contrastive output and normalise(tgt_proj[t](target)), temperature tau. */
#ifndef ALTMOE_CORE_OBJECTIVE_H
#define ALTMOE_CORE_OBJECTIVE_H

#include "core/backward.h"
#include "core/connector.h"
#include "core/loss.h"
#include "core/rng.h"

typedef struct amc_objective {
    float alpha;            /* weight of L_reg in [0, 1]; 0.5 */
    amc_reg_loss reg;       /* AMC_REG_SMOOTH_L1 */
    float beta;             /* SmoothL1 transition; 1 */
    float tau;              /* InfoNCE temperature; 0.03 */
} amc_objective;

/* The defaults above. */
amc_objective amc_objective_default(void);

typedef struct amc_loss_terms {
    double total, reg, cl;
} amc_loss_terms;

/* Scratch of amc_objective_step(); grows on demand. */
typedef struct amc_objective_ws amc_objective_ws;

amc_objective_ws *amc_objective_ws_new(void);
void amc_objective_ws_free(amc_objective_ws *ws);

/* One direction on one batch: x_src [n, seq_src, d_s] and x_tgt [n, seq_tgt, d_t] are n aligned
 * pairs. Computes the loss terms into *terms; when grads is not NULL, adds the gradient of
 * scale * total into grads (a gradient block's views) and marks the touched tensors in
 * used[n_tensors] (may be NULL). dropout_rng NULL turns dropout off. n >= 2 for a meaningful
 * contrastive term (n = 1 gives L_cl = 0). */
amc_status amc_objective_step(const amc_connector *conn, amc_objective_ws *ws,
                              const amc_objective *obj, int dir, const float *x_src, int seq_src,
                              const float *x_tgt, int seq_tgt, int n, amc_rng *dropout_rng,
                              float scale, amc_params *grads, unsigned char *used,
                              amc_loss_terms *terms, amc_error *err);

#endif
