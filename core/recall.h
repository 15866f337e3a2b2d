/* Cross-modal retrieval recall of a connector on aligned pairs: for direction s->t, query i of
 * modality s must find item i among all n items of modality t.
 *
 * Contrastive space: queries go through the MoE contrastive branch of s->t, items through the
 * target projection of t (both L2-normalised; cosine = inner product). Predictive space: the
 * prediction head's output of s->t against the raw target embeddings (the target tokens' mean),
 * both L2-normalised. Rank of a query = number of items scoring strictly higher than its own
 * pair; R@K = share of queries with rank < K. */
#ifndef ALTMOE_CORE_RECALL_H
#define ALTMOE_CORE_RECALL_H

#include "core/connector.h"

typedef struct amc_recall {
    double r1, r5, r10;
} amc_recall;

/* Recall of direction dir over n aligned pairs x_src [n, seq_src, d_s], x_tgt [n, seq_tgt, d_t]
 * in space AMC_SPACE_CONTRASTIVE or AMC_SPACE_PREDICTIVE. Memory: O(n * (D + d_t)) plus a block
 * of scores. Returns AMC_ENOMEM or AMC_EINVAL (bad direction, space or n < 1). */
amc_status amc_recall_eval(const amc_connector *conn, int dir, amc_space space,
                           const float *x_src, int seq_src, const float *x_tgt, int seq_tgt,
                           int n, amc_recall *out, amc_error *err);

#endif
