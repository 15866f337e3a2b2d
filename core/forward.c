/* The connector's forward pass (see core/connector.h for the formulas). */
#include "core/forward.h"

#include <stdlib.h>
#include <string.h>

#include "core/mat.h"

/* ---------------------------------------------------------------- workspace */

#define WS_SLOTS 48

typedef struct ws_slot {
    void *ptr;
    size_t cap;
} ws_slot;

struct amc_workspace {
    ws_slot slots[WS_SLOTS];
    int next;      /* next slot handed out by ws_take() in the current forward call */
    int failed;    /* set when an allocation failed during the current call */
    float *input;  /* preprocessed copy of amc_connector_project()'s input, outside the slots */
    size_t input_cap;
};

amc_workspace *amc_workspace_new(void)
{
    return calloc(1, sizeof(amc_workspace));
}

void amc_workspace_free(amc_workspace *ws)
{
    if (ws == NULL)
        return;
    for (int i = 0; i < WS_SLOTS; i++)
        free(ws->slots[i].ptr);
    free(ws->input);
    free(ws);
}

static void ws_reset(amc_workspace *ws)
{
    ws->next = 0;
    ws->failed = 0;
}

/* Hands out the next slot with room for bytes, 64-byte aligned. Slots are taken in the same
 * order on every call, so buffers are reused once they have grown. Returns NULL and marks the
 * workspace failed when memory runs out. */
static void *ws_take(amc_workspace *ws, size_t bytes)
{
    if (ws->next >= WS_SLOTS) {
        ws->failed = 1;
        return NULL;
    }
    ws_slot *slot = &ws->slots[ws->next++];
    bytes = (bytes + 63) / 64 * 64;
    if (bytes == 0)
        bytes = 64;
    if (slot->cap < bytes) {
        free(slot->ptr);
        slot->ptr = aligned_alloc(64, bytes);
        slot->cap = slot->ptr ? bytes : 0;
        if (slot->ptr == NULL)
            ws->failed = 1;
    }
    return slot->ptr;
}

static float *ws_floats(amc_workspace *ws, size_t count)
{
    return ws_take(ws, count * sizeof(float));
}

/* ---------------------------------------------------------------- mixture of experts */

/* Dropout multipliers: 0 with probability p, else 1 / (1 - p). */
static void fill_dropout_mask(float *mask, size_t count, float p, amc_rng *rng)
{
    const float keep = 1.0f / (1.0f - p);

    for (size_t i = 0; i < count; i++)
        mask[i] = amc_rng_uniform(rng) < p ? 0.0f : keep;
}

static void apply_mask(float *x, const float *mask, size_t count)
{
    for (size_t i = 0; i < count; i++)
        x[i] *= mask[i];
}

/* Groups the T * k routed entries by expert: perm lists (token * k + slot) expert by expert. */
static void group_by_expert(amc_branch_trace *br, int T, int k, int E)
{
    int count[AMC_MAX_EXPERTS] = {0};

    for (int i = 0; i < T * k; i++)
        count[br->sel[i]]++;
    br->offsets[0] = 0;
    for (int e = 0; e < E; e++)
        br->offsets[e + 1] = br->offsets[e] + count[e];

    int fill[AMC_MAX_EXPERTS];
    memcpy(fill, br->offsets, sizeof(int) * (size_t)E);
    for (int i = 0; i < T * k; i++)
        br->perm[fill[br->sel[i]]++] = i;
}

/* Runs every expert on the rows routed to it: one GEMM per layer and expert. */
static void run_experts(const amc_connector *conn, amc_branch_trace *br, amc_rng *rng)
{
    const int H = conn->cfg.hidden;
    const float p = conn->cfg.dropout;

    for (int e = 0; e < conn->cfg.n_experts; e++) {
        int rows = br->offsets[e + 1] - br->offsets[e];
        if (rows == 0)
            continue;
        size_t at = (size_t)br->offsets[e] * H;
        size_t count = (size_t)rows * H;
        const amc_expert *ex = &conn->p.experts[e];

        amc_linear_forward(br->z1 + at, br->xg + at, ex->fc1.w, ex->fc1.b, rows, H, H, 0);
        amc_gelu_forward(br->g1 + at, br->z1 + at, count);
        if (br->mask1 != NULL) {
            fill_dropout_mask(br->mask1 + at, count, p, rng);
            apply_mask(br->g1 + at, br->mask1 + at, count);
        }
        amc_linear_forward(br->y + at, br->g1 + at, ex->fc2.w, ex->fc2.b, rows, H, H, 0);
        if (br->mask2 != NULL) {
            fill_dropout_mask(br->mask2 + at, count, p, rng);
            apply_mask(br->y + at, br->mask2 + at, count);
        }
    }
}

/* moe [T, H] = sum over the selected experts of gate probability * expert output. The top-k
 * probabilities are used as they are, not renormalised. */
static void combine_experts(const amc_branch_trace *br, int T, int H, int E, int k)
{
    memset(br->moe, 0, sizeof(float) * (size_t)T * H);
    for (int i = 0; i < T * k; i++) {
        int entry = br->perm[i];
        int token = entry / k;
        float weight = br->probs[(size_t)token * E + br->sel[entry]];
        const float *src = br->y + (size_t)i * H;
        float *dst = br->moe + (size_t)token * H;
        for (int j = 0; j < H; j++)
            dst[j] += weight * src[j];
    }
}

static amc_status branch_alloc(amc_workspace *ws, amc_branch_trace *br, int n, int T, int H,
                               int E, int k, int out_dim, int dropout)
{
    size_t routed = (size_t)T * k * H;

    br->u = ws_floats(ws, (size_t)T * H);
    br->probs = ws_floats(ws, (size_t)T * E);
    br->sel = ws_take(ws, sizeof(int) * (size_t)T * k);
    br->perm = ws_take(ws, sizeof(int) * (size_t)T * k);
    br->xg = ws_floats(ws, routed);
    br->z1 = ws_floats(ws, routed);
    br->g1 = ws_floats(ws, routed);
    br->mask1 = dropout ? ws_floats(ws, routed) : NULL;
    br->mask2 = dropout ? ws_floats(ws, routed) : NULL;
    br->y = ws_floats(ws, routed);
    br->moe = ws_floats(ws, (size_t)T * H);
    br->ln_mean = ws_floats(ws, (size_t)T);
    br->ln_rstd = ws_floats(ws, (size_t)T);
    br->ln_out = ws_floats(ws, (size_t)T * H);
    br->o = ws_floats(ws, (size_t)T * H);
    br->pooled = ws_floats(ws, (size_t)n * H);
    br->head = ws_floats(ws, (size_t)n * out_dim);
    return ws->failed ? AMC_ENOMEM : AMC_OK;
}

/* One branch: u = h + task; o = GELU(LN(MoE(u))) + u; head = mean_tokens(o) W^T + b. */
static void branch_forward(const amc_connector *conn, const amc_trace *tr, amc_branch_trace *br,
                           int branch, amc_rng *rng)
{
    const amc_config *cfg = &conn->cfg;
    const amc_params *p = &conn->p;
    const int T = tr->tokens, H = cfg->hidden, E = cfg->n_experts, k = cfg->top_k;
    const float *task = branch == AMC_BRANCH_REG ? p->task_reg : p->task_cl;
    const float *ln_w = branch == AMC_BRANCH_REG ? p->ln_reg_w : p->ln_cl_w;
    const float *ln_b = branch == AMC_BRANCH_REG ? p->ln_reg_b : p->ln_cl_b;
    const amc_linear *head = branch == AMC_BRANCH_REG ? &p->head_reg[tr->dir]
                                                      : &p->head_cl[tr->dir];
    int out_dim = branch == AMC_BRANCH_REG ? cfg->modalities[tr->tgt].dim : cfg->latent;

    /* add the branch's task vector */
    for (int t = 0; t < T; t++)
        for (int j = 0; j < H; j++)
            br->u[(size_t)t * H + j] = tr->h[(size_t)t * H + j] + task[j];

    /* route: gate softmax, top-k, group the routed rows by expert and gather them */
    amc_linear_forward(br->probs, br->u, p->gate.w, p->gate.b, T, H, E, 0);
    amc_softmax_rows(br->probs, br->probs, T, E);
    amc_topk_rows(br->sel, br->probs, T, E, k);
    group_by_expert(br, T, k, E);
    for (int i = 0; i < T * k; i++)
        memcpy(br->xg + (size_t)i * H, br->u + (size_t)(br->perm[i] / k) * H,
               sizeof(float) * (size_t)H);

    run_experts(conn, br, rng);
    combine_experts(br, T, H, E, k);

    /* LayerNorm -> GELU -> residual */
    amc_layernorm_forward(br->ln_out, br->ln_mean, br->ln_rstd, br->moe, ln_w, ln_b, T, H,
                          cfg->ln_eps);
    amc_gelu_forward(br->o, br->ln_out, (size_t)T * H);
    for (size_t i = 0; i < (size_t)T * H; i++)
        br->o[i] += br->u[i];

    /* mean over tokens, then the direction's head (a Linear commutes with the mean) */
    amc_mean_tokens(br->pooled, br->o, tr->n, tr->seq, H);
    amc_linear_forward(br->head, br->pooled, head->w, head->b, tr->n, H, out_dim, 0);
}

/* ---------------------------------------------------------------- public */

static amc_status check_sizes(int n, int seq, amc_error *err)
{
    if (n < 1 || seq < 1 || (long long)n * seq > (1LL << 30))
        return amc_error_set(err, AMC_EINVAL,
                             "batch: n = %d items of %d tokens; both must be >= 1 and their "
                             "product at most 2^30", n, seq);
    return AMC_OK;
}

amc_status amc_forward(const amc_connector *conn, amc_workspace *ws, amc_trace *tr, int dir,
                       const float *x, int n, int seq, int branches, amc_rng *dropout_rng,
                       amc_error *err)
{
    const amc_config *cfg = &conn->cfg;

    if (dir < 0 || dir >= cfg->n_directions)
        return amc_error_set(err, AMC_EINVAL, "direction index %d is out of range [0, %d)", dir,
                             cfg->n_directions);
    amc_status rc = check_sizes(n, seq, err);
    if (rc != AMC_OK)
        return rc;

    const int H = cfg->hidden, E = cfg->n_experts, k = cfg->top_k;
    const int src = cfg->directions[dir].src, tgt = cfg->directions[dir].tgt;
    const int d_src = cfg->modalities[src].dim;
    const int T = n * seq;
    const int dropout = dropout_rng != NULL && cfg->dropout > 0.0f;

    memset(tr, 0, sizeof *tr);
    tr->n = n;
    tr->seq = seq;
    tr->tokens = T;
    tr->dir = dir;
    tr->src = src;
    tr->tgt = tgt;
    tr->branches = branches;

    /* allocate every buffer first, so a failure leaves nothing half-computed */
    ws_reset(ws);
    tr->xin = ws_floats(ws, (size_t)T * d_src);
    tr->a = ws_floats(ws, (size_t)T * H);
    tr->h = ws_floats(ws, (size_t)T * H);
    tr->cl_norm = ws_floats(ws, (size_t)n);
    tr->cl_out = ws_floats(ws, (size_t)n * cfg->latent);
    for (int b = 0; b < 2; b++) {
        if (!(branches & AMC_BRANCH_BIT(b)))
            continue;
        int out_dim = b == AMC_BRANCH_REG ? cfg->modalities[tgt].dim : cfg->latent;
        if (branch_alloc(ws, &tr->br[b], n, T, H, E, k, out_dim, dropout) != AMC_OK)
            break;
    }
    if (ws->failed)
        return amc_error_set(err, AMC_ENOMEM, "forward: out of memory for %d tokens", T);

    /* source tokens + direction vector -> input projection -> GELU */
    const float *dir_emb = conn->p.dir_emb[dir];
    for (int t = 0; t < T; t++)
        for (int j = 0; j < d_src; j++)
            tr->xin[(size_t)t * d_src + j] = x[(size_t)t * d_src + j] + dir_emb[j];
    amc_linear_forward(tr->a, tr->xin, conn->p.in_proj[src].w, conn->p.in_proj[src].b, T, d_src,
                       H, 0);
    amc_gelu_forward(tr->h, tr->a, (size_t)T * H);

    for (int b = 0; b < 2; b++)
        if (branches & AMC_BRANCH_BIT(b))
            branch_forward(conn, tr, &tr->br[b], b, dropout ? dropout_rng : NULL);

    if (branches & AMC_BRANCH_BIT(AMC_BRANCH_CL)) {
        memcpy(tr->cl_out, tr->br[AMC_BRANCH_CL].head, sizeof(float) * (size_t)n * cfg->latent);
        amc_l2_normalise_rows(tr->cl_out, tr->cl_norm, n, cfg->latent);
    }
    return AMC_OK;
}

amc_status amc_target_forward(const amc_connector *conn, amc_workspace *ws, int m,
                              const float *x, int n, int seq, float *pooled, float *out,
                              float *norms, amc_error *err)
{
    const amc_config *cfg = &conn->cfg;

    if (m < 0 || m >= cfg->n_modalities)
        return amc_error_set(err, AMC_EINVAL, "modality index %d is out of range [0, %d)", m,
                             cfg->n_modalities);
    amc_status rc = check_sizes(n, seq, err);
    if (rc != AMC_OK)
        return rc;

    const int d = cfg->modalities[m].dim;
    ws_reset(ws);
    float *mean = pooled;
    if (mean == NULL)
        mean = ws_floats(ws, (size_t)n * d);
    if (ws->failed)
        return amc_error_set(err, AMC_ENOMEM, "target projection: out of memory for %d items",
                             n);

    amc_mean_tokens(mean, x, n, seq, d);
    amc_linear_forward(out, mean, conn->p.tgt_proj[m].w, conn->p.tgt_proj[m].b, n, d,
                       cfg->latent, 0);
    amc_l2_normalise_rows(out, norms, n, cfg->latent);
    return AMC_OK;
}

int amc_connector_out_dim(const amc_connector *conn, amc_space space, int src, int tgt)
{
    if (space == AMC_SPACE_PREDICTIVE)
        return conn->cfg.modalities[tgt].dim;
    (void)src;
    return conn->cfg.latent;
}

/* Returns a copy of the count tokens x [count, d] with each token centred on mean and scaled to
 * unit L2 norm, in the workspace's input buffer; NULL when that buffer cannot grow. */
static const float *center_l2_tokens(amc_workspace *ws, const float *x, size_t count, int d,
                                     const float *mean)
{
    size_t need = count * (size_t)d;
    if (ws->input_cap < need) {
        float *grown = realloc(ws->input, need * sizeof(float));
        if (grown == NULL)
            return NULL;
        ws->input = grown;
        ws->input_cap = need;
    }
    for (size_t t = 0; t < count; t++) {
        float *row = ws->input + t * (size_t)d;
        for (int j = 0; j < d; j++)
            row[j] = x[t * (size_t)d + j] - mean[j];
    }
    amc_l2_normalise_rows(ws->input, NULL, (int)count, d);
    return ws->input;
}

amc_status amc_connector_project(const amc_connector *conn, amc_workspace *ws, amc_space space,
                                 int src, int tgt, const float *x, int n, int seq, float *out,
                                 amc_error *err)
{
    const amc_config *cfg = &conn->cfg;

    if (src < 0 || src >= cfg->n_modalities)
        return amc_error_set(err, AMC_EINVAL, "source modality index %d is out of range", src);
    amc_status rc = check_sizes(n, seq, err);
    if (rc != AMC_OK)
        return rc;
    if (conn->input_mean[src] != NULL) {
        x = center_l2_tokens(ws, x, (size_t)n * (size_t)seq, cfg->modalities[src].dim,
                             conn->input_mean[src]);
        if (x == NULL)
            return amc_error_set(err, AMC_ENOMEM, "input preprocessing: out of memory for %d "
                                 "items", n);
    }
    if (space == AMC_SPACE_TARGET)
        return amc_target_forward(conn, ws, src, x, n, seq, NULL, out, NULL, err);

    int dir = tgt >= 0 && tgt < cfg->n_modalities ? amc_config_direction(cfg, src, tgt) : -1;
    if (dir < 0)
        return amc_error_set(err, AMC_EINVAL, "the model has no direction %s->%s",
                             cfg->modalities[src].name,
                             tgt >= 0 && tgt < cfg->n_modalities ? cfg->modalities[tgt].name
                                                                 : "?");
    int branch = space == AMC_SPACE_PREDICTIVE ? AMC_BRANCH_REG : AMC_BRANCH_CL;
    amc_trace tr;
    rc = amc_forward(conn, ws, &tr, dir, x, n, seq, AMC_BRANCH_BIT(branch), NULL, err);
    if (rc != AMC_OK)
        return rc;

    int out_dim = amc_connector_out_dim(conn, space, src, tgt);
    const float *result = branch == AMC_BRANCH_CL ? tr.cl_out : tr.br[AMC_BRANCH_REG].head;
    memcpy(out, result, sizeof(float) * (size_t)n * out_dim);
    return AMC_OK;
}

double amc_connector_flops(const amc_connector *conn, amc_space space, int src, int tgt, int n,
                           int seq)
{
    const amc_config *cfg = &conn->cfg;
    const double T = (double)n * seq, H = cfg->hidden, E = cfg->n_experts, k = cfg->top_k;
    const double D = cfg->latent, d_src = cfg->modalities[src].dim;

    if (space == AMC_SPACE_TARGET)
        return 2.0 * n * d_src * D;
    double out = space == AMC_SPACE_PREDICTIVE ? cfg->modalities[tgt].dim : D;
    double input = 2.0 * T * d_src * H;
    double branch = 2.0 * T * H * E + 2.0 * T * k * 2.0 * H * H + 2.0 * n * H * out;
    return input + branch;
}
