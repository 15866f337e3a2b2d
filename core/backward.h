/* The connector's backward pass: from the gradients of the outputs of one forward call (kept in
 * an amc_trace) to the gradients of every parameter it used.
 *
 * Gradients accumulate into a gradient block of amc_connector.n_params floats laid out like the
 * weights (aim an amc_params at it with amc_params_point()). The caller zeroes that block
 * explicitly before the first accumulation of a step, so several directions can add into one
 * block (the joint schedule). */
#ifndef ALTMOE_CORE_BACKWARD_H
#define ALTMOE_CORE_BACKWARD_H

#include "core/connector.h"
#include "core/forward.h"

/* Scratch memory of the backward pass; grows on demand and is reused across calls. */
typedef struct amc_grad_ws amc_grad_ws;

amc_grad_ws *amc_grad_ws_new(void);
void amc_grad_ws_free(amc_grad_ws *ws);

/* Accumulates into grads (the parameter views of a gradient block) the gradients of direction
 * tr->dir given:
 *   d_pred [n, d_tgt]: gradient of the prediction head output tr->br[REG].head, or NULL;
 *   d_cl   [n, D]:     gradient of the normalised contrastive output tr->cl_out, or NULL.
 * A non-NULL gradient needs its branch in tr->branches. tr must come from amc_forward() on conn
 * with its workspace untouched since. Returns AMC_ENOMEM when the scratch cannot grow, AMC_EINVAL
 * for a missing branch. */
amc_status amc_backward(const amc_connector *conn, amc_grad_ws *ws, const amc_trace *tr,
                        const float *d_pred, const float *d_cl, amc_params *grads,
                        amc_error *err);

/* Backward of amc_target_forward() for modality m: given the pooled inputs [n, d_m], the
 * normalised outputs out [n, D], their norms [n] and d_out [n, D], accumulates into grads the
 * gradient of tgt_proj[m]. Uses ws for scratch. */
amc_status amc_target_backward(const amc_connector *conn, amc_grad_ws *ws, int m,
                               const float *pooled, const float *out, const float *norms,
                               const float *d_out, int n, amc_params *grads, amc_error *err);

/* Marks in used[n_tensors] (set to 1, never cleared) the tensors that the backward of trace tr
 * touches: the parameters of its direction, source modality and the shared ones (experts only
 * when at least one token was routed to them). The optimiser skips tensors no step touched, as
 * PyTorch does for parameters whose gradient is None. */
void amc_trace_mark_used(const amc_connector *conn, const amc_trace *tr, unsigned char *used);

/* Marks the target projection of modality m as used. */
void amc_target_mark_used(const amc_connector *conn, int m, unsigned char *used);

#endif
