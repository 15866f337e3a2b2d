/* Retrieval recall of a connector (see core/recall.h). */
#include "core/recall.h"

#include <cblas.h>
#include <stdlib.h>

#include "core/forward.h"
#include "core/mat.h"

#define RECALL_CHUNK 256   /* items projected per forward call, and queries scored per block */

/* Projects n items in chunks into out [n, width]. */
static amc_status project_all(const amc_connector *conn, amc_workspace *ws, amc_space space,
                              int src, int tgt, const float *x, int seq, int d, int n, int width,
                              float *out, amc_error *err)
{
    for (int at = 0; at < n; at += RECALL_CHUNK) {
        int count = n - at < RECALL_CHUNK ? n - at : RECALL_CHUNK;
        amc_status rc = amc_connector_project(conn, ws, space, src, tgt,
                                              x + (size_t)at * seq * d, count, seq,
                                              out + (size_t)at * width, err);
        if (rc != AMC_OK)
            return rc;
    }
    return AMC_OK;
}

/* Counts ranks of queries q [n, w] against items g [n, w] into the three recall counters. */
static void rank_queries(const float *q, const float *g, int n, int w, float *scores,
                         long hits[3])
{
    for (int at = 0; at < n; at += RECALL_CHUNK) {
        int count = n - at < RECALL_CHUNK ? n - at : RECALL_CHUNK;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, count, n, w, 1.0f,
                    q + (size_t)at * w, w, g, w, 0.0f, scores, n);
        for (int i = 0; i < count; i++) {
            const float *row = scores + (size_t)i * n;
            float own = row[at + i];
            int rank = 0;
            for (int j = 0; j < n; j++)
                rank += row[j] > own;
            hits[0] += rank < 1;
            hits[1] += rank < 5;
            hits[2] += rank < 10;
        }
    }
}

amc_status amc_recall_eval(const amc_connector *conn, int dir, amc_space space,
                           const float *x_src, int seq_src, const float *x_tgt, int seq_tgt,
                           int n, amc_recall *out, amc_error *err)
{
    const amc_config *cfg = &conn->cfg;
    if (dir < 0 || dir >= cfg->n_directions || n < 1 ||
        (space != AMC_SPACE_CONTRASTIVE && space != AMC_SPACE_PREDICTIVE))
        return amc_error_set(err, AMC_EINVAL, "recall: bad direction %d, space %d or n = %d",
                             dir, (int)space, n);
    const int src = cfg->directions[dir].src, tgt = cfg->directions[dir].tgt;
    const int d_s = cfg->modalities[src].dim, d_t = cfg->modalities[tgt].dim;
    const int w = space == AMC_SPACE_CONTRASTIVE ? cfg->latent : d_t;

    float *q = malloc(sizeof(float) * (size_t)n * w);
    float *g = malloc(sizeof(float) * (size_t)n * w);
    float *scores = malloc(sizeof(float) * (size_t)RECALL_CHUNK * n);
    amc_workspace *ws = amc_workspace_new();
    amc_status rc = AMC_OK;
    if (q == NULL || g == NULL || scores == NULL || ws == NULL) {
        rc = amc_error_set(err, AMC_ENOMEM, "recall: out of memory for %d pairs", n);
        goto done;
    }

    /* queries through the connector; items through the target projection or raw */
    rc = project_all(conn, ws, space, src, tgt, x_src, seq_src, d_s, n, w, q, err);
    if (rc != AMC_OK)
        goto done;
    if (space == AMC_SPACE_CONTRASTIVE) {
        rc = project_all(conn, ws, AMC_SPACE_TARGET, tgt, tgt, x_tgt, seq_tgt, d_t, n, w, g,
                         err);
        if (rc != AMC_OK)
            goto done;
    } else {
        amc_mean_tokens(g, x_tgt, n, seq_tgt, d_t);
        amc_l2_normalise_rows(g, NULL, n, d_t);
        amc_l2_normalise_rows(q, NULL, n, d_t);
    }

    long hits[3] = {0, 0, 0};
    rank_queries(q, g, n, w, scores, hits);
    out->r1 = (double)hits[0] / n;
    out->r5 = (double)hits[1] / n;
    out->r10 = (double)hits[2] / n;

done:
    free(q);
    free(g);
    free(scores);
    amc_workspace_free(ws);
    return rc;
}
