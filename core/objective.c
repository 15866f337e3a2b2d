/* The per-direction training objective (see core/objective.h). */
#include "core/objective.h"

#include <stdlib.h>

#include "core/forward.h"

struct amc_objective_ws {
    amc_workspace *fwd;      /* source forward trace */
    amc_workspace *tgt;      /* target projection scratch */
    amc_grad_ws *bwd;
    float *buf;              /* the buffers below, carved from one allocation */
    size_t cap;              /* floats */
};

amc_objective amc_objective_default(void)
{
    amc_objective obj = {.alpha = 0.5f, .reg = AMC_REG_SMOOTH_L1, .beta = 1.0f, .tau = 0.03f};
    return obj;
}

amc_objective_ws *amc_objective_ws_new(void)
{
    amc_objective_ws *ws = calloc(1, sizeof *ws);
    if (ws == NULL)
        return NULL;
    ws->fwd = amc_workspace_new();
    ws->tgt = amc_workspace_new();
    ws->bwd = amc_grad_ws_new();
    if (ws->fwd == NULL || ws->tgt == NULL || ws->bwd == NULL) {
        amc_objective_ws_free(ws);
        return NULL;
    }
    return ws;
}

void amc_objective_ws_free(amc_objective_ws *ws)
{
    if (ws == NULL)
        return;
    amc_workspace_free(ws->fwd);
    amc_workspace_free(ws->tgt);
    amc_grad_ws_free(ws->bwd);
    free(ws->buf);
    free(ws);
}

typedef struct objective_bufs {
    float *tgt_pooled;   /* [n, d_t] the true target embedding */
    float *tgt_out;      /* [n, D] normalised target projection */
    float *tgt_norms;    /* [n] */
    float *d_pred;       /* [n, d_t] */
    float *d_cl;         /* [n, D] */
    float *d_tgt;        /* [n, D] */
    float *nce;          /* [2 n n] */
} objective_bufs;

static int carve(amc_objective_ws *ws, objective_bufs *b, int n, int d_t, int D)
{
    size_t sizes[7] = {(size_t)n * d_t, (size_t)n * D, (size_t)n, (size_t)n * d_t,
                       (size_t)n * D, (size_t)n * D, 2 * (size_t)n * n};
    size_t total = 0;
    for (int i = 0; i < 7; i++)
        total += (sizes[i] + 15) / 16 * 16;
    if (ws->cap < total) {
        free(ws->buf);
        ws->buf = aligned_alloc(64, (total + 15) / 16 * 64);
        ws->cap = ws->buf != NULL ? total : 0;
        if (ws->buf == NULL)
            return 0;
    }
    float **slots[7] = {&b->tgt_pooled, &b->tgt_out, &b->tgt_norms, &b->d_pred, &b->d_cl,
                        &b->d_tgt, &b->nce};
    float *at = ws->buf;
    for (int i = 0; i < 7; i++) {
        *slots[i] = at;
        at += (sizes[i] + 15) / 16 * 16;
    }
    return 1;
}

amc_status amc_objective_step(const amc_connector *conn, amc_objective_ws *ws,
                              const amc_objective *obj, int dir, const float *x_src, int seq_src,
                              const float *x_tgt, int seq_tgt, int n, amc_rng *dropout_rng,
                              float scale, amc_params *grads, unsigned char *used,
                              amc_loss_terms *terms, amc_error *err)
{
    const amc_config *cfg = &conn->cfg;
    if (dir < 0 || dir >= cfg->n_directions)
        return amc_error_set(err, AMC_EINVAL, "direction index %d is out of range [0, %d)", dir,
                             cfg->n_directions);
    const int tgt = cfg->directions[dir].tgt;
    const int d_t = cfg->modalities[tgt].dim, D = cfg->latent;

    objective_bufs b;
    if (!carve(ws, &b, n, d_t, D))
        return amc_error_set(err, AMC_ENOMEM, "objective: out of memory for a batch of %d", n);

    /* forward: the source through both branches, the target through its projection */
    amc_trace tr;
    amc_status rc = amc_forward(conn, ws->fwd, &tr, dir, x_src, n, seq_src,
                                AMC_BRANCH_BIT(AMC_BRANCH_REG) | AMC_BRANCH_BIT(AMC_BRANCH_CL),
                                dropout_rng, err);
    if (rc == AMC_OK)
        rc = amc_target_forward(conn, ws->tgt, tgt, x_tgt, n, seq_tgt, b.tgt_pooled, b.tgt_out,
                                b.tgt_norms, err);
    if (rc != AMC_OK)
        return rc;

    /* the two loss terms and their gradients, weighted */
    float w_reg = scale * obj->alpha, w_cl = scale * (1.0f - obj->alpha);
    terms->reg = amc_loss_regression(b.d_pred, tr.br[AMC_BRANCH_REG].head, b.tgt_pooled, n, d_t,
                                     obj->reg, obj->beta, w_reg);
    terms->cl = amc_loss_info_nce(b.d_cl, b.d_tgt, tr.cl_out, b.tgt_out, n, D, obj->tau, w_cl,
                                  b.nce);
    terms->total = (double)obj->alpha * terms->reg + (1.0 - (double)obj->alpha) * terms->cl;
    if (grads == NULL)
        return AMC_OK;

    /* backward into the gradient block */
    rc = amc_backward(conn, ws->bwd, &tr, b.d_pred, b.d_cl, grads, err);
    if (rc == AMC_OK)
        rc = amc_target_backward(conn, ws->bwd, tgt, b.tgt_pooled, b.tgt_out, b.tgt_norms,
                                 b.d_tgt, n, grads, err);
    if (rc == AMC_OK && used != NULL) {
        amc_trace_mark_used(conn, &tr, used);
        amc_target_mark_used(conn, tgt, used);
    }
    return rc;
}
