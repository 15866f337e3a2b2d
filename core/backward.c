/* The connector's backward pass (see core/backward.h), the forward of core/forward.c run in
 * reverse: heads, mean over tokens, residual, GELU, LayerNorm, the gate-weighted combination,
 * the experts (one GEMM per layer and expert on the rows routed to it), the gate softmax, the
 * task vectors, the input projection and the direction vector. */
#include "core/backward.h"

#include <stdlib.h>
#include <string.h>

#include "core/mat.h"

struct amc_grad_ws {
    float *buf;
    size_t cap;     /* floats */
};

amc_grad_ws *amc_grad_ws_new(void)
{
    return calloc(1, sizeof(amc_grad_ws));
}

void amc_grad_ws_free(amc_grad_ws *ws)
{
    if (ws == NULL)
        return;
    free(ws->buf);
    free(ws);
}

/* Makes room for floats floats; the buffer's old contents are not kept. */
static int ws_reserve(amc_grad_ws *ws, size_t floats)
{
    if (ws->cap >= floats)
        return 1;
    free(ws->buf);
    ws->buf = aligned_alloc(64, (floats + 15) / 16 * 64);
    ws->cap = ws->buf != NULL ? floats : 0;
    return ws->buf != NULL;
}

/* Scratch of one backward call, carved from the workspace buffer. */
typedef struct grad_scratch {
    float *d_head;    /* [n, max(d_tgt, D)] */
    float *d_pooled;  /* [n, H] */
    float *d_o;       /* [T, H] */
    float *d_ln;      /* [T, H] */
    float *d_moe;     /* [T, H] */
    float *d_u;       /* [T, H] */
    float *d_h;       /* [T, H] */
    float *d_logits;  /* [T, E] */
    float *d_y;       /* [T * k, H] */
    float *d_g;       /* [T * k, H] */
    float *d_xg;      /* [T * k, H] */
    float *d_xin;     /* [T, d_src] */
} grad_scratch;

static size_t round16(size_t n)
{
    return (n + 15) / 16 * 16;
}

static amc_status scratch_carve(amc_grad_ws *ws, grad_scratch *s, const amc_connector *conn,
                                const amc_trace *tr, amc_error *err)
{
    const amc_config *cfg = &conn->cfg;
    const size_t n = (size_t)tr->n, T = (size_t)tr->tokens, H = (size_t)cfg->hidden;
    const size_t E = (size_t)cfg->n_experts, k = (size_t)cfg->top_k;
    const size_t d_src = (size_t)cfg->modalities[tr->src].dim;
    size_t out = (size_t)cfg->modalities[tr->tgt].dim;
    if ((size_t)cfg->latent > out)
        out = (size_t)cfg->latent;

    size_t sizes[12] = {n * out, n * H, T * H, T * H, T * H, T * H, T * H, T * E,
                        T * k * H, T * k * H, T * k * H, T * d_src};
    size_t total = 0;
    for (int i = 0; i < 12; i++)
        total += round16(sizes[i]);
    if (!ws_reserve(ws, total))
        return amc_error_set(err, AMC_ENOMEM, "backward: out of memory for %zu tokens", T);

    float **slots[12] = {&s->d_head, &s->d_pooled, &s->d_o, &s->d_ln, &s->d_moe, &s->d_u,
                         &s->d_h, &s->d_logits, &s->d_y, &s->d_g, &s->d_xg, &s->d_xin};
    float *at = ws->buf;
    for (int i = 0; i < 12; i++) {
        *slots[i] = at;
        at += round16(sizes[i]);
    }
    return AMC_OK;
}

/* Backward through the experts of one branch: from d_moe [T, H] to d_u (accumulated), the
 * gate logits' gradient s->d_logits [T, E] and the expert parameters. */
static void experts_backward(const amc_connector *conn, const amc_branch_trace *br,
                             const grad_scratch *s, int T, amc_params *g)
{
    const int H = conn->cfg.hidden, E = conn->cfg.n_experts, k = conn->cfg.top_k;

    /* combine: moe[t] = sum_slot p[t, e] y[entry]. The gradient reaches the selected
     * probabilities as they are (no renormalisation), and each expert output through its
     * weight. */
    memset(s->d_logits, 0, sizeof(float) * (size_t)T * E);
    for (int i = 0; i < T * k; i++) {
        int entry = br->perm[i], token = entry / k, e = br->sel[entry];
        float weight = br->probs[(size_t)token * E + e];
        const float *dm = s->d_moe + (size_t)token * H;
        const float *y = br->y + (size_t)i * H;
        float *dy = s->d_y + (size_t)i * H;
        float dot = 0.0f;
        for (int j = 0; j < H; j++) {
            dot += dm[j] * y[j];
            dy[j] = weight * dm[j];
        }
        s->d_logits[(size_t)token * E + e] += dot;
    }

    /* each expert: dropout2 -> fc2 -> dropout1 -> GELU -> fc1, on its own rows */
    for (int e = 0; e < E; e++) {
        int rows = br->offsets[e + 1] - br->offsets[e];
        if (rows == 0)
            continue;
        size_t at = (size_t)br->offsets[e] * H, count = (size_t)rows * H;
        const amc_expert *ex = &conn->p.experts[e];
        amc_expert *gx = &g->experts[e];

        if (br->mask2 != NULL)
            amc_dropout_backward(s->d_y + at, s->d_y + at, br->mask2 + at, count);
        amc_linear_backward(s->d_g + at, gx->fc2.w, gx->fc2.b, s->d_y + at, br->g1 + at,
                            ex->fc2.w, rows, H, H, 0);
        if (br->mask1 != NULL)
            amc_dropout_backward(s->d_g + at, s->d_g + at, br->mask1 + at, count);
        amc_gelu_backward(s->d_g + at, s->d_g + at, br->z1 + at, count);
        amc_linear_backward(s->d_xg + at, gx->fc1.w, gx->fc1.b, s->d_g + at, br->xg + at,
                            ex->fc1.w, rows, H, H, 0);
    }

    /* scatter the expert inputs' gradients back to their tokens */
    for (int i = 0; i < T * k; i++) {
        float *du = s->d_u + (size_t)(br->perm[i] / k) * H;
        const float *dx = s->d_xg + (size_t)i * H;
        for (int j = 0; j < H; j++)
            du[j] += dx[j];
    }

    /* the gate: softmax over all E logits, then its Linear */
    amc_softmax_backward(s->d_logits, s->d_logits, br->probs, T, E);
}

/* One branch from the gradient of its head output d_head [n, out_dim]; adds the gradient of h
 * into s->d_h. */
static void branch_backward(const amc_connector *conn, const amc_trace *tr, int branch,
                            const float *d_head, const grad_scratch *s, amc_params *g)
{
    const amc_config *cfg = &conn->cfg;
    const amc_params *p = &conn->p;
    const amc_branch_trace *br = &tr->br[branch];
    const int T = tr->tokens, H = cfg->hidden, E = cfg->n_experts;
    const int reg = branch == AMC_BRANCH_REG;
    const int out_dim = reg ? cfg->modalities[tr->tgt].dim : cfg->latent;
    const amc_linear *head = reg ? &p->head_reg[tr->dir] : &p->head_cl[tr->dir];
    amc_linear *ghead = reg ? &g->head_reg[tr->dir] : &g->head_cl[tr->dir];

    /* head, then the mean over tokens */
    amc_linear_backward(s->d_pooled, ghead->w, ghead->b, d_head, br->pooled, head->w, tr->n, H,
                        out_dim, 0);
    amc_mean_tokens_backward(s->d_o, s->d_pooled, tr->n, tr->seq, H);

    /* o = GELU(LN(moe)) + u: the residual passes d_o to u unchanged */
    memcpy(s->d_u, s->d_o, sizeof(float) * (size_t)T * H);
    amc_gelu_backward(s->d_ln, s->d_o, br->ln_out, (size_t)T * H);
    amc_layernorm_backward(s->d_moe, reg ? g->ln_reg_w : g->ln_cl_w,
                           reg ? g->ln_reg_b : g->ln_cl_b, s->d_ln, br->moe, br->ln_mean,
                           br->ln_rstd, reg ? p->ln_reg_w : p->ln_cl_w, T, H);

    experts_backward(conn, br, s, T, g);
    amc_linear_backward(s->d_u, g->gate.w, g->gate.b, s->d_logits, br->u, p->gate.w, T, H, E,
                        1);

    /* u = h + task */
    float *gtask = reg ? g->task_reg : g->task_cl;
    for (int t = 0; t < T; t++) {
        const float *du = s->d_u + (size_t)t * H;
        float *dh = s->d_h + (size_t)t * H;
        for (int j = 0; j < H; j++) {
            gtask[j] += du[j];
            dh[j] += du[j];
        }
    }
}

amc_status amc_backward(const amc_connector *conn, amc_grad_ws *ws, const amc_trace *tr,
                        const float *d_pred, const float *d_cl, amc_params *grads,
                        amc_error *err)
{
    const amc_config *cfg = &conn->cfg;

    if ((d_pred != NULL && !(tr->branches & AMC_BRANCH_BIT(AMC_BRANCH_REG))) ||
        (d_cl != NULL && !(tr->branches & AMC_BRANCH_BIT(AMC_BRANCH_CL))))
        return amc_error_set(err, AMC_EINVAL,
                             "backward: a gradient was given for a branch the forward call did "
                             "not compute; pass both branches to amc_forward()");
    grad_scratch s;
    amc_status rc = scratch_carve(ws, &s, conn, tr, err);
    if (rc != AMC_OK)
        return rc;

    const int T = tr->tokens, H = cfg->hidden, src = tr->src;
    const int d_src = cfg->modalities[src].dim;
    memset(s.d_h, 0, sizeof(float) * (size_t)T * H);

    if (d_pred != NULL)
        branch_backward(conn, tr, AMC_BRANCH_REG, d_pred, &s, grads);
    if (d_cl != NULL) {
        amc_l2_normalise_backward(s.d_head, d_cl, tr->cl_out, tr->cl_norm, tr->n, cfg->latent);
        branch_backward(conn, tr, AMC_BRANCH_CL, s.d_head, &s, grads);
    }

    /* h = GELU(in_proj(x + dir_emb)) */
    amc_gelu_backward(s.d_h, s.d_h, tr->a, (size_t)T * H);
    amc_linear_backward(s.d_xin, grads->in_proj[src].w, grads->in_proj[src].b, s.d_h, tr->xin,
                        conn->p.in_proj[src].w, T, d_src, H, 0);
    float *gdir = grads->dir_emb[tr->dir];
    for (int t = 0; t < T; t++)
        for (int j = 0; j < d_src; j++)
            gdir[j] += s.d_xin[(size_t)t * d_src + j];
    return AMC_OK;
}

amc_status amc_target_backward(const amc_connector *conn, amc_grad_ws *ws, int m,
                               const float *pooled, const float *out, const float *norms,
                               const float *d_out, int n, amc_params *grads, amc_error *err)
{
    const int D = conn->cfg.latent, d = conn->cfg.modalities[m].dim;

    if (!ws_reserve(ws, (size_t)n * D))
        return amc_error_set(err, AMC_ENOMEM, "target backward: out of memory for %d items", n);
    amc_l2_normalise_backward(ws->buf, d_out, out, norms, n, D);
    amc_linear_backward(NULL, grads->tgt_proj[m].w, grads->tgt_proj[m].b, ws->buf, pooled,
                        conn->p.tgt_proj[m].w, n, d, D, 0);
    return AMC_OK;
}

/* ---------------------------------------------------------------- used tensors */

/* Marks the tensor that starts at ptr (a view into conn->block). */
static void mark(const amc_connector *conn, const float *ptr, unsigned char *used)
{
    size_t offset = (size_t)(ptr - conn->block);
    int lo = 0, hi = conn->n_tensors - 1;

    while (lo <= hi) {    /* tensors are in increasing offset order */
        int mid = (lo + hi) / 2;
        if (conn->tensors[mid].offset == offset) {
            used[mid] = 1;
            return;
        }
        if (conn->tensors[mid].offset < offset)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
}

static void mark_linear(const amc_connector *conn, const amc_linear *l, unsigned char *used)
{
    mark(conn, l->w, used);
    mark(conn, l->b, used);
}

void amc_trace_mark_used(const amc_connector *conn, const amc_trace *tr, unsigned char *used)
{
    const amc_params *p = &conn->p;

    mark(conn, p->dir_emb[tr->dir], used);
    mark_linear(conn, &p->in_proj[tr->src], used);
    for (int b = 0; b < 2; b++) {
        if (!(tr->branches & AMC_BRANCH_BIT(b)))
            continue;
        const amc_branch_trace *br = &tr->br[b];
        mark_linear(conn, b == AMC_BRANCH_REG ? &p->head_reg[tr->dir] : &p->head_cl[tr->dir],
                    used);
        mark(conn, b == AMC_BRANCH_REG ? p->task_reg : p->task_cl, used);
        mark(conn, b == AMC_BRANCH_REG ? p->ln_reg_w : p->ln_cl_w, used);
        mark(conn, b == AMC_BRANCH_REG ? p->ln_reg_b : p->ln_cl_b, used);
        mark_linear(conn, &p->gate, used);
        for (int e = 0; e < conn->cfg.n_experts; e++) {
            if (br->offsets[e + 1] == br->offsets[e])
                continue;
            mark_linear(conn, &p->experts[e].fc1, used);
            mark_linear(conn, &p->experts[e].fc2, used);
        }
    }
}

void amc_target_mark_used(const amc_connector *conn, int m, unsigned char *used)
{
    mark_linear(conn, &conn->p.tgt_proj[m], used);
}
