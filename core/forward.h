/* The connector's forward pass with every intermediate kept in a trace, shared by inference
 * (amc_connector_project) and training (the backward pass reads the trace).
 *
 * Shapes: n items of seq tokens, T = n * seq token rows, H hidden, E experts, k selected experts
 * per token, D latent. Trace buffers live in the workspace passed to the forward call and stay
 * valid until that workspace's next forward call: a caller that needs two traces at once (the
 * joint training schedule) uses two workspaces. */
#ifndef ALTMOE_CORE_FORWARD_H
#define ALTMOE_CORE_FORWARD_H

#include "core/connector.h"
#include "core/rng.h"

enum { AMC_BRANCH_REG = 0, AMC_BRANCH_CL = 1 };
#define AMC_BRANCH_BIT(b) (1 << (b))

typedef struct amc_branch_trace {
    float *u;          /* [T, H] h + task vector */
    float *probs;      /* [T, E] softmax of the gate */
    int *sel;          /* [T, k] selected experts, best first */
    int *perm;         /* [T * k] routed entries (token * k + slot), grouped by expert */
    int offsets[AMC_MAX_EXPERTS + 1]; /* expert e owns perm[offsets[e] .. offsets[e + 1]) */
    float *xg;         /* [T * k, H] expert inputs in perm order */
    float *z1;         /* [T * k, H] fc1 output (GELU input) */
    float *g1;         /* [T * k, H] GELU(z1) after dropout (fc2 input) */
    float *mask1;      /* [T * k, H] dropout multipliers after GELU, NULL when off */
    float *mask2;      /* [T * k, H] dropout multipliers after fc2, NULL when off */
    float *y;          /* [T * k, H] expert outputs after dropout, in perm order */
    float *moe;        /* [T, H] gate-weighted sum of the selected experts */
    float *ln_mean;    /* [T] */
    float *ln_rstd;    /* [T] */
    float *ln_out;     /* [T, H] LayerNorm output (GELU input) */
    float *o;          /* [T, H] GELU(ln_out) + u */
    float *pooled;     /* [n, H] mean of o over tokens */
    float *head;       /* [n, d_tgt] prediction or [n, D] contrastive head output */
} amc_branch_trace;

typedef struct amc_trace {
    int n, seq, tokens;
    int dir, src, tgt;
    int branches;      /* AMC_BRANCH_BIT() mask of the branches computed */
    float *xin;        /* [T, d_src] source tokens + direction vector */
    float *a;          /* [T, H] input projection output (GELU input) */
    float *h;          /* [T, H] GELU(a) */
    amc_branch_trace br[2];
    float *cl_norm;    /* [n] L2 norm of the contrastive head output */
    float *cl_out;     /* [n, D] normalised contrastive output */
} amc_trace;

/* Runs direction dir (index into cfg.directions) on x [n, seq, d_src] and fills tr. branches is
 * a mask of AMC_BRANCH_BIT(AMC_BRANCH_REG) and AMC_BRANCH_BIT(AMC_BRANCH_CL). With a non-NULL
 * dropout_rng, expert dropout at cfg.dropout is applied (training); with NULL it is off.
 * Returns AMC_EINVAL for a bad direction or size, AMC_ENOMEM when the workspace cannot grow. */
amc_status amc_forward(const amc_connector *conn, amc_workspace *ws, amc_trace *tr, int dir,
                       const float *x, int n, int seq, int branches, amc_rng *dropout_rng,
                       amc_error *err);

/* Target side of modality m: pooled [n, d_m] = mean over tokens of x [n, seq, d_m] (may be
 * NULL), out [n, D] = normalise(pooled tgt_proj[m]), norms [n] the norms before normalising
 * (may be NULL). Uses ws for scratch. */
amc_status amc_target_forward(const amc_connector *conn, amc_workspace *ws, int m,
                              const float *x, int n, int seq, float *pooled, float *out,
                              float *norms, amc_error *err);

#endif
