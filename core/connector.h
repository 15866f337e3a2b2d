/* The multi-directional mixture-of-experts connector.
 *
 * M modalities, each with an embedding size d_m, are aligned in one shared latent space of D
 * dims. A direction s->t owns a learned vector added to every source token, a prediction head
 * H -> d_t and a contrastive head H -> D. A modality owns an input projection d_m -> H (then
 * GELU) and a target-side contrastive projection d_m -> D. Shared by every direction: two task
 * vectors in R^H (prediction and contrastive branch), one gate H -> E, E experts
 * (Linear(H,H) -> GELU -> Dropout -> Linear(H,H) -> Dropout) and one LayerNorm per branch.
 *
 * Forward of direction s->t on source tokens X [S, d_s]:
 *   h = GELU(W_in[s] (X + dir_emb[s->t]) + b_in[s])                        [S, H]
 *   per branch b: u = h + task[b]
 *                 MoE(u) = sum over the top-k j of softmax(W_g u + b_g)_j * Expert_j(u)
 *                 (the top-k weights are not renormalised)
 *                 o = GELU(LayerNorm_b(MoE(u))) + u                           [S, H]
 *   prediction  = mean over tokens of head_reg[s->t](o_reg)                  [d_t]
 *   contrastive = mean over tokens of head_cl[s->t](o_cl)                    [D]
 * A stored item of modality m maps to normalise(mean over tokens of tgt_proj[m](X)).
 *
 * Linear weights follow PyTorch: W is [out, in] and y = x W^T + b.
 *
 * Thread safety: a connector is read-only after creation, so any number of threads may call
 * amc_connector_project() at once, each with its own amc_workspace. */
#ifndef ALTMOE_CORE_CONNECTOR_H
#define ALTMOE_CORE_CONNECTOR_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

#define AMC_NAME_MAX 32
#define AMC_MAX_MODALITIES 8
#define AMC_MAX_DIRECTIONS (AMC_MAX_MODALITIES * (AMC_MAX_MODALITIES - 1))
#define AMC_MAX_EXPERTS 64
#define AMC_MAX_DIM 65536
#define AMC_FORMAT_VERSION 1

typedef struct amc_modality {
    char name[AMC_NAME_MAX];   /* [a-z][a-z0-9_]*, e.g. "text" */
    int dim;                   /* embedding size of the modality's encoder */
} amc_modality;

typedef struct amc_direction {
    int src, tgt;              /* indices into amc_config.modalities */
} amc_direction;

typedef struct amc_config {
    int n_modalities;
    amc_modality modalities[AMC_MAX_MODALITIES];
    int n_directions;
    amc_direction directions[AMC_MAX_DIRECTIONS];
    int hidden;                /* H */
    int latent;                /* D */
    int n_experts;             /* E */
    int top_k;                 /* k, 1 <= k <= E */
    float dropout;             /* expert dropout probability, used in training only */
    float ln_eps;              /* LayerNorm epsilon */
} amc_config;

/* Parses a connector config from JSON text:
 *   {"modalities": [{"name": "text", "dim": 100}, ...],
 *    "directions": [["text", "image"], ...],      (optional: default every ordered pair)
 *    "hidden": 512, "latent": 512, "experts": 12, "top_k": 4, "dropout": 0.1, "ln_eps": 1e-5}
 * Missing sizes take the defaults H = D = 512, E = 12, k = 4, dropout 0.1, eps 1e-5. Unknown keys
 * are rejected. The result is validated with amc_config_validate(). */
amc_status amc_config_from_json(amc_config *cfg, const char *json, amc_error *err);

/* Serialises cfg as the JSON accepted by amc_config_from_json(); returns a malloc'd string the
 * caller frees, or NULL when out of memory. */
char *amc_config_to_json(const amc_config *cfg);

/* Checks names, dims, sizes, directions and k <= E; the message names the first bad field. */
amc_status amc_config_validate(const amc_config *cfg, amc_error *err);

/* Index of the modality called name, or -1. */
int amc_config_modality(const amc_config *cfg, const char *name);

/* Index of direction src->tgt in cfg->directions, or -1 when the model has no such direction. */
int amc_config_direction(const amc_config *cfg, int src, int tgt);

/* One named parameter tensor: a view of numel floats at offset in the parameter block. */
typedef struct amc_tensor_info {
    char name[96];             /* safetensors name, e.g. "experts.3.fc1.weight" */
    int ndim;                  /* 1 or 2 */
    int64_t shape[2];          /* [out, in] for weights, [n] for vectors */
    size_t offset;             /* in floats from the start of the block */
    size_t numel;
    int fan_in;                /* for initialisation; 0 for LayerNorm parameters */
    int decay;                 /* 1 when AdamW weight decay applies (Linear weights only) */
} amc_tensor_info;

typedef struct amc_linear {
    float *w;                  /* [out, in] */
    float *b;                  /* [out] */
} amc_linear;

typedef struct amc_expert {
    amc_linear fc1, fc2;       /* both H -> H */
} amc_expert;

/* Pointers to every parameter inside one float block. The same layout serves the weights, their
 * gradients and the AdamW moments: amc_params_point() aims a struct at any block of
 * amc_connector.n_params floats. */
typedef struct amc_params {
    amc_linear in_proj[AMC_MAX_MODALITIES];   /* d_m -> H */
    amc_linear tgt_proj[AMC_MAX_MODALITIES];  /* d_m -> D */
    float *dir_emb[AMC_MAX_DIRECTIONS];       /* [d_src] */
    amc_linear head_reg[AMC_MAX_DIRECTIONS];  /* H -> d_tgt */
    amc_linear head_cl[AMC_MAX_DIRECTIONS];   /* H -> D */
    float *task_reg, *task_cl;                /* [H] each */
    amc_linear gate;                          /* H -> E */
    amc_expert experts[AMC_MAX_EXPERTS];
    float *ln_reg_w, *ln_reg_b;               /* [H] each */
    float *ln_cl_w, *ln_cl_b;
} amc_params;

typedef struct amc_connector {
    amc_config cfg;
    size_t n_params;           /* floats in block */
    float *block;              /* owned, 64-byte aligned */
    int n_tensors;
    amc_tensor_info *tensors;  /* owned, in file order */
    amc_params p;              /* views into block */
    float *input_mean[AMC_MAX_MODALITIES]; /* owned; when set for modality m,
                                  amc_connector_project() subtracts it from every input token of
                                  m and then scales the token to unit L2 norm ("center_l2") */
} amc_connector;

/* Allocates a connector for cfg (validated first) with every parameter zero. The caller frees it
 * with amc_connector_free(). */
amc_status amc_connector_create(amc_connector **out, const amc_config *cfg, amc_error *err);

/* Frees the connector and everything it owns; NULL is allowed. */
void amc_connector_free(amc_connector *conn);

/* Number of trainable parameters: the sum of every tensor's numel. It is below n_params, which
 * also counts the alignment padding between tensors. */
size_t amc_connector_param_count(const amc_connector *conn);

/* Makes amc_connector_project() centre every input token of modality m on mean [d_m] (copied)
 * and then L2-normalise it, the feature preprocessing a model may be trained with. NULL
 * removes it. Returns AMC_EINVAL for a bad m, AMC_ENOMEM when the copy fails. */
amc_status amc_connector_set_input_mean(amc_connector *conn, int m, const float *mean,
                                        amc_error *err);

/* Fills params with pointers into block, which must hold conn->n_params floats. */
void amc_params_point(const amc_connector *conn, float *block, amc_params *params);

/* Returns the tensor called name, or NULL. */
const amc_tensor_info *amc_connector_tensor(const amc_connector *conn, const char *name);

/* Initialises as the reference implementation does: every Linear weight and learned vector
 * uniform in +-sqrt(6 / fan_in) (Kaiming-uniform with ReLU gain), biases 0, LayerNorm gamma 1 and
 * beta 0. Deterministic for a given seed. */
void amc_connector_init(amc_connector *conn, uint64_t seed);

/* Hex fingerprint of the config and weights (FNV-1a 64 over both), written to out[17].
 * Stores record it so that a changed connector is detected. */
void amc_connector_fingerprint(const amc_connector *conn, char out[17]);

/* Output spaces of amc_connector_project(). */
typedef enum amc_space {
    AMC_SPACE_CONTRASTIVE = 0, /* query of modality src through the MoE for direction src->tgt:
                                  [D], L2-normalised */
    AMC_SPACE_PREDICTIVE,      /* predicted target embedding of direction src->tgt: [d_tgt] */
    AMC_SPACE_TARGET           /* stored item of modality src: normalise(tgt_proj[src]): [D];
                                  tgt is ignored */
} amc_space;

/* Returns the output width of amc_connector_project() for space and direction. */
int amc_connector_out_dim(const amc_connector *conn, amc_space space, int src, int tgt);

/* Scratch memory for one thread's forward passes; grows on demand and is reused. */
typedef struct amc_workspace amc_workspace;

amc_workspace *amc_workspace_new(void);
void amc_workspace_free(amc_workspace *ws);

/* Projects a batch of n items, each seq tokens of d_src floats (x is [n, seq, d_src], row-major;
 * seq = 1 for pooled vectors), into out [n, amc_connector_out_dim()]. Dropout is off. The input
 * preprocessing set with amc_connector_set_input_mean() is applied to a copy of x first. Rejects an
 * unknown direction, n < 1 or seq < 1 with AMC_EINVAL; returns AMC_ENOMEM when the workspace
 * cannot grow. */
amc_status amc_connector_project(const amc_connector *conn, amc_workspace *ws, amc_space space,
                                 int src, int tgt, const float *x, int n, int seq, float *out,
                                 amc_error *err);

/* Floating-point operations of one amc_connector_project() call, counting only the selected
 * experts (2 per multiply-add). For benchmarks. */
double amc_connector_flops(const amc_connector *conn, amc_space space, int src, int tgt, int n,
                           int seq);

#endif
