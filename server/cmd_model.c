/* Model subcommands: `altmoe init`, `altmoe model info` and `altmoe project`. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/connector.h"
#include "core/dataset.h"
#include "core/model_io.h"
#include "core/npy.h"
#include "server/commands.h"

/* Reads a whole text file into a malloc'd NUL-terminated string, or returns NULL. */
static char *read_text_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 8192;
            char *grown = realloc(buf, cap);
            if (grown == NULL) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = grown;
        }
        size_t got = fread(buf + len, 1, 4096, f);
        len += got;
        if (got < 4096)
            break;
    }
    int failed = ferror(f);
    fclose(f);
    if (failed) {
        free(buf);
        return NULL;
    }
    buf[len] = '\0';
    return buf;
}

/* ---------------------------------------------------------------- init */

static void init_usage(FILE *out)
{
    fprintf(out,
            "usage: altmoe init --config CONNECTOR.json --out MODEL.safetensors [--seed N]\n\n"
            "Creates a randomly initialised connector: Linear weights and learned vectors\n"
            "Kaiming-uniform, biases 0, LayerNorm weight 1 and bias 0.\n\n"
            "  --config FILE   connector config JSON (modalities, directions, hidden, latent,\n"
            "                  experts, top_k, dropout, ln_eps); see docs/model-format.md\n"
            "  --out FILE      model file to write\n"
            "  --seed N        random seed (default 0)\n");
}

int ams_cmd_init(int argc, char **argv)
{
    static const struct option options[] = {{"config", required_argument, NULL, 'c'},
                                            {"out", required_argument, NULL, 'o'},
                                            {"seed", required_argument, NULL, 's'},
                                            {"help", no_argument, NULL, 'h'},
                                            {NULL, 0, NULL, 0}};
    const char *config_path = NULL, *out_path = NULL;
    unsigned long long seed = 0;
    int opt;

    optind = 1;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case 'c': config_path = optarg; break;
        case 'o': out_path = optarg; break;
        case 's': {
            char *end;
            seed = strtoull(optarg, &end, 10);
            if (*optarg == '\0' || *end != '\0') {
                fprintf(stderr, "altmoe init: --seed '%s' is not a non-negative integer\n", optarg);
                return 2;
            }
            break;
        }
        case 'h': init_usage(stdout); return 0;
        default: init_usage(stderr); return 2;
        }
    }
    if (config_path == NULL || out_path == NULL || optind != argc) {
        init_usage(stderr);
        return 2;
    }

    char *json = read_text_file(config_path);
    if (json == NULL) {
        fprintf(stderr, "altmoe init: cannot read %s: %s\n", config_path, strerror(errno));
        return 1;
    }
    amc_config cfg;
    amc_connector *conn = NULL;
    amc_error err = {0};
    amc_status rc = amc_config_from_json(&cfg, json, &err);
    free(json);
    if (rc == AMC_OK)
        rc = amc_connector_create(&conn, &cfg, &err);
    if (rc == AMC_OK) {
        amc_connector_init(conn, seed);
        rc = amc_model_save(out_path, conn, NULL, &err);
    }
    if (rc != AMC_OK) {
        fprintf(stderr, "altmoe init: %s: %s\n", rc == AMC_EINVAL ? config_path : out_path,
                err.msg);
        amc_connector_free(conn);
        return 1;
    }
    printf("wrote %s: %zu parameters\n", out_path, amc_connector_param_count(conn));
    amc_connector_free(conn);
    return 0;
}

/* ---------------------------------------------------------------- model info */

static int model_info(const char *path)
{
    amc_connector *conn = NULL;
    char *training = NULL;
    amc_error err = {0};

    if (amc_model_load(path, &conn, &training, &err) != AMC_OK) {
        fprintf(stderr, "altmoe model info: %s\n", err.msg);
        return 1;
    }
    const amc_config *cfg = &conn->cfg;
    char fingerprint[17];
    amc_connector_fingerprint(conn, fingerprint);

    printf("file:           %s\n", path);
    printf("format version: %d\n", AMC_FORMAT_VERSION);
    printf("fingerprint:    %s\n", fingerprint);
    printf("modalities:    ");
    for (int m = 0; m < cfg->n_modalities; m++)
        printf(" %s(%d)", cfg->modalities[m].name, cfg->modalities[m].dim);
    printf("\ndirections:    ");
    for (int d = 0; d < cfg->n_directions; d++)
        printf(" %s->%s", cfg->modalities[cfg->directions[d].src].name,
               cfg->modalities[cfg->directions[d].tgt].name);
    printf("\nhidden (H):     %d\n", cfg->hidden);
    printf("latent (D):     %d\n", cfg->latent);
    printf("experts (E):    %d\n", cfg->n_experts);
    printf("top_k:          %d\n", cfg->top_k);
    printf("dropout:        %g\n", (double)cfg->dropout);
    printf("ln_eps:         %g\n", (double)cfg->ln_eps);
    printf("parameters:     %zu in %d tensors\n", amc_connector_param_count(conn), conn->n_tensors);
    printf("training:       %s\n", training ? training : "(none: untrained)");
    free(training);
    amc_connector_free(conn);
    return 0;
}

int ams_cmd_model(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "info") == 0)
        return model_info(argv[2]);
    FILE *out = argc == 2 && strcmp(argv[1], "--help") == 0 ? stdout : stderr;
    fprintf(out, "usage: altmoe model info MODEL.safetensors\n\n"
                 "Prints a model's config, parameter count, fingerprint and training summary.\n");
    return out == stdout ? 0 : 2;
}

/* ---------------------------------------------------------------- project */

static void project_usage(FILE *out)
{
    fprintf(out,
            "usage: altmoe project --model FILE --from MODALITY [--to MODALITY] --in X.npy\n"
            "                      --out Y.npy [--space contrastive|predictive|target]\n"
            "                      [--batch N]\n\n"
            "Projects every row of X.npy ([N, d] pooled vectors or [N, S, d] tokens of the\n"
            "--from modality) and writes Y.npy [N, out] as float32.\n\n"
            "  --space contrastive  shared-space query vector of direction from->to (default;\n"
            "                       L2-normalised, D dims)\n"
            "  --space predictive   predicted embedding of the --to modality (its dims)\n"
            "  --space target       shared-space vector of a stored item of --from (D dims);\n"
            "                       --to is not used\n"
            "  --batch N            items per forward pass (default 256)\n");
}

typedef struct project_args {
    const char *model, *from, *to, *in, *out;
    amc_space space;
    int batch;
} project_args;

static int parse_project_args(int argc, char **argv, project_args *a)
{
    static const struct option options[] = {
        {"model", required_argument, NULL, 'm'}, {"from", required_argument, NULL, 'f'},
        {"to", required_argument, NULL, 't'},    {"in", required_argument, NULL, 'i'},
        {"out", required_argument, NULL, 'o'},   {"space", required_argument, NULL, 's'},
        {"batch", required_argument, NULL, 'b'}, {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    int opt;

    memset(a, 0, sizeof *a);
    a->space = AMC_SPACE_CONTRASTIVE;
    a->batch = 256;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case 'm': a->model = optarg; break;
        case 'f': a->from = optarg; break;
        case 't': a->to = optarg; break;
        case 'i': a->in = optarg; break;
        case 'o': a->out = optarg; break;
        case 's':
            if (strcmp(optarg, "contrastive") == 0)
                a->space = AMC_SPACE_CONTRASTIVE;
            else if (strcmp(optarg, "predictive") == 0)
                a->space = AMC_SPACE_PREDICTIVE;
            else if (strcmp(optarg, "target") == 0)
                a->space = AMC_SPACE_TARGET;
            else {
                fprintf(stderr, "altmoe project: --space '%s' is invalid; use contrastive, "
                                "predictive or target\n", optarg);
                return 2;
            }
            break;
        case 'b':
            a->batch = atoi(optarg);
            if (a->batch < 1 || a->batch > 65536) {
                fprintf(stderr, "altmoe project: --batch '%s' is out of range [1, 65536]\n",
                        optarg);
                return 2;
            }
            break;
        case 'h': project_usage(stdout); return -1;
        default: project_usage(stderr); return 2;
        }
    }
    if (!a->model || !a->from || !a->in || !a->out || optind != argc ||
        (a->space != AMC_SPACE_TARGET && !a->to)) {
        project_usage(stderr);
        return 2;
    }
    return 0;
}

/* Projects every row of x; the connector applies the model's input preprocessing. */
static int run_projection(const project_args *a, const amc_connector *conn, const amc_npy *x,
                          int src, int tgt)
{
    const int64_t n = amc_npy_rows(x);
    const int seq = x->ndim == 3 ? (int)x->shape[1] : 1;
    const int d_src = conn->cfg.modalities[src].dim;
    const int out_dim = amc_connector_out_dim(conn, a->space, src, tgt);
    amc_error err = {0};

    float *y = malloc(sizeof(float) * (size_t)n * (size_t)out_dim);
    amc_workspace *ws = amc_workspace_new();
    if (y == NULL || ws == NULL) {
        fprintf(stderr, "altmoe project: out of memory for %lld x %d outputs\n", (long long)n,
                out_dim);
        free(y);
        amc_workspace_free(ws);
        return 1;
    }
    amc_status rc = AMC_OK;
    for (int64_t i = 0; i < n && rc == AMC_OK; i += a->batch) {
        int count = (int)(n - i < a->batch ? n - i : a->batch);
        rc = amc_connector_project(conn, ws, a->space, src, tgt,
                                   x->data + (size_t)i * seq * d_src, count, seq,
                                   y + (size_t)i * out_dim, &err);
    }
    if (rc == AMC_OK) {
        int64_t shape[2] = {n, out_dim};
        rc = amc_npy_save(a->out, y, 2, shape, AMC_DTYPE_F32, &err);
    }
    free(y);
    amc_workspace_free(ws);
    if (rc != AMC_OK) {
        fprintf(stderr, "altmoe project: %s\n", err.msg);
        return 1;
    }
    printf("wrote %s: [%lld, %d]\n", a->out, (long long)n, out_dim);
    return 0;
}

int ams_cmd_project(int argc, char **argv)
{
    project_args a;
    int usage = parse_project_args(argc, argv, &a);
    if (usage != 0)
        return usage < 0 ? 0 : usage;

    amc_connector *conn = NULL;
    amc_npy x = {0};
    amc_error err = {0};
    int status = 1;

    if (amc_model_load_for_inference(a.model, &conn, NULL, &err) != AMC_OK) {
        fprintf(stderr, "altmoe project: %s\n", err.msg);
        return 1;
    }
    int src = amc_config_modality(&conn->cfg, a.from);
    int tgt = a.to ? amc_config_modality(&conn->cfg, a.to) : -1;
    if (src < 0 || (a.space != AMC_SPACE_TARGET && tgt < 0)) {
        fprintf(stderr, "altmoe project: modality '%s' is not in the model; run 'altmoe model "
                        "info %s' to list them\n", src < 0 ? a.from : a.to, a.model);
        goto done;
    }
    if (a.space != AMC_SPACE_TARGET && amc_config_direction(&conn->cfg, src, tgt) < 0) {
        fprintf(stderr, "altmoe project: the model has no direction %s->%s\n", a.from, a.to);
        goto done;
    }
    if (amc_npy_load(&x, a.in, &err) != AMC_OK) {
        fprintf(stderr, "altmoe project: %s\n", err.msg);
        goto done;
    }
    int d_src = conn->cfg.modalities[src].dim;
    if (x.shape[x.ndim - 1] != d_src) {
        fprintf(stderr, "altmoe project: %s: last dimension is %lld but modality '%s' has %d\n",
                a.in, (long long)x.shape[x.ndim - 1], a.from, d_src);
        goto done;
    }

    status = run_projection(&a, conn, &x, src, tgt);
done:
    amc_npy_free(&x);
    amc_connector_free(conn);
    return status;
}
