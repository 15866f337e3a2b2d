/* Configuration table of `altmoe serve` and its three sources: a JSON file, ALTMOE_*
 * environment variables and command-line flags.
 *
 * The table below is the only place an option is declared. Parsing, bounds checks, --help and
 * --dump-config all walk it, so a new option needs one line here and one field in
 * amcfg_config. */
#include "config/config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

typedef enum opt_type { OPT_INT, OPT_STRING, OPT_LEVEL } opt_type;

typedef struct opt_def {
    const char *name;
    opt_type type;
    size_t offset;          /* of the field in amcfg_config */
    const char *def;        /* default, in text form */
    int64_t min, max;       /* bounds of OPT_INT; strings are limited to AMCFG_STR_MAX - 1 */
    const char *unit;
    int secret;             /* never printed or logged */
    const char *help;
} opt_def;

#define FIELD(f) offsetof(amcfg_config, f)
#define GIB ((int64_t)1 << 30)

static const opt_def options[] = {
    {"listen", OPT_STRING, FIELD(listen), "127.0.0.1", 0, 0, "address", 0,
     "IPv4 or IPv6 address to listen on"},
    {"port", OPT_INT, FIELD(port), "7700", 1, 65535, "port", 0, "TCP port to listen on"},
    {"data_dir", OPT_STRING, FIELD(data_dir), "./altmoe-data", 0, 0, "path", 0,
     "directory of the LMDB environment and index snapshots (created if missing)"},
    {"model", OPT_STRING, FIELD(model), "", 0, 0, "path", 0,
     "connector model file (.safetensors) to serve; required"},
    {"threads", OPT_INT, FIELD(threads), "4", 1, 256, "threads", 0,
     "HTTP worker threads (libmicrohttpd thread pool size)"},
    {"max_connections", OPT_INT, FIELD(max_connections), "1024", 1, 65536, "connections", 0,
     "maximum number of concurrent client connections"},
    {"connection_timeout", OPT_INT, FIELD(connection_timeout_s), "30", 1, 3600, "seconds", 0,
     "close a connection idle for this long"},
    {"request_timeout", OPT_INT, FIELD(request_timeout_ms), "30000", 1, 3600000, "milliseconds",
     0, "return 503 for a request whose body has not arrived this long after it started "
     "(admin ingest excepted); also bounds the drain of in-flight requests at shutdown"},
    {"max_body", OPT_INT, FIELD(max_body_bytes), "67108864", 1024, 16 * GIB, "bytes", 0,
     "largest request body accepted; larger bodies get 413"},
    {"ingest_batch", OPT_INT, FIELD(ingest_batch), "1000", 1, 1000000, "points", 0,
     "points per LMDB commit during admin ingest"},
    {"batch_window", OPT_INT, FIELD(batch_window_us), "200", 0, 100000, "microseconds", 0,
     "how long a search waits to share one projection and index call with others; 0 disables"},
    {"max_k", OPT_INT, FIELD(max_k), "1000", 1, 1000, "results", 0,
     "largest k a search may request (1000 is also the store's limit)"},
    {"admin_token", OPT_STRING, FIELD(admin_token), "", 0, 0, "secret", 1,
     "bearer token for /admin routes; admin routes return 401 while no token is set"},
    {"admin_token_file", OPT_STRING, FIELD(admin_token_file), "", 0, 0, "path", 0,
     "file whose first line is the admin token (used when admin_token is empty)"},
    {"log_level", OPT_LEVEL, FIELD(log_level), "info", AMCFG_LOG_DEBUG, AMCFG_LOG_ERROR, "level",
     0, "lowest level logged: debug, info, warn or error"},
    {"snapshot_interval", OPT_INT, FIELD(snapshot_interval_s), "300", 0, 86400, "seconds", 0,
     "write index snapshots this often; 0 disables periodic snapshots"},
    {"cors_origins", OPT_STRING, FIELD(cors_origins), "", 0, 0, "origins", 0,
     "comma-separated origins (scheme://host[:port]) whose browser pages may call the API, or * "
     "for any; empty turns CORS off"},
    {"map_size_max", OPT_INT, FIELD(map_size_max_mib), "1048576", 1, 1 << 30, "MiB", 0,
     "ceiling of the LMDB map, which starts at 64 MiB (or this, if smaller) and doubles when "
     "full; writes beyond it get 507 storage_full"},
};

#define N_OPTIONS ((int)(sizeof options / sizeof options[0]))

static const char *const level_names[] = {"debug", "info", "warn", "error"};

const char *amcfg_log_level_name(int64_t level)
{
    if (level < AMCFG_LOG_DEBUG || level > AMCFG_LOG_ERROR)
        return "unknown";
    return level_names[level];
}

/* Finds an option by name; dashes match underscores so that flags can use either. */
static const opt_def *find_option(const char *name, size_t len)
{
    for (int i = 0; i < N_OPTIONS; i++) {
        const char *o = options[i].name;
        if (strlen(o) != len)
            continue;
        size_t j = 0;
        while (j < len && (name[j] == o[j] || (name[j] == '-' && o[j] == '_')))
            j++;
        if (j == len)
            return &options[i];
    }
    return NULL;
}

static amc_status parse_int(const opt_def *o, const char *text, int64_t *out, const char *source,
                            amc_error *err)
{
    errno = 0;
    char *end = NULL;
    long long v = strtoll(text, &end, 10);
    if (text[0] == '\0' || *end != '\0' || errno == ERANGE || isspace((unsigned char)text[0]))
        return amc_error_set(err, AMC_EINVAL, "%s: option '%s': '%.64s' is not an integer (%s)",
                             source, o->name, text, o->unit);
    if (v < o->min || v > o->max)
        return amc_error_set(err, AMC_EINVAL,
                             "%s: option '%s': %lld is out of range; use %lld to %lld (%s)",
                             source, o->name, v, (long long)o->min, (long long)o->max, o->unit);
    *out = v;
    return AMC_OK;
}

static amc_status set_value(amcfg_config *cfg, const opt_def *o, const char *text,
                            const char *source, amc_error *err)
{
    void *field = (char *)cfg + o->offset;
    if (o->type == OPT_INT)
        return parse_int(o, text, field, source, err);
    if (o->type == OPT_LEVEL) {
        for (int64_t l = AMCFG_LOG_DEBUG; l <= AMCFG_LOG_ERROR; l++) {
            if (strcmp(text, level_names[l]) == 0) {
                *(int64_t *)field = l;
                return AMC_OK;
            }
        }
        return amc_error_set(err, AMC_EINVAL,
                             "%s: option '%s': '%.32s' is not a level; use debug, info, warn or "
                             "error", source, o->name, o->secret ? "<redacted>" : text);
    }
    size_t len = strlen(text);
    if (len >= AMCFG_STR_MAX)
        return amc_error_set(err, AMC_EINVAL, "%s: option '%s': value is %zu bytes long; the "
                             "maximum is %d", source, o->name, len, AMCFG_STR_MAX - 1);
    memcpy(field, text, len + 1);
    return AMC_OK;
}

void amcfg_defaults(amcfg_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    for (int i = 0; i < N_OPTIONS; i++) {
        amc_status st = set_value(cfg, &options[i], options[i].def, "default", NULL);
        (void)st; /* the defaults are inside their own bounds; test_config checks that */
    }
}

amc_status amcfg_set(amcfg_config *cfg, const char *name, const char *value, const char *source,
                     amc_error *err)
{
    const opt_def *o = find_option(name, strlen(name));
    if (o == NULL)
        return amc_error_set(err, AMC_EINVAL, "%s: unknown option '%.64s'; run with --help for "
                             "the list", source, name);
    return set_value(cfg, o, value, source, err);
}

/* Converts byte offset pos of text into a 1-based line and column. */
static void locate(const char *text, size_t pos, int *line, int *col)
{
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < pos; i++) {
        if (text[i] == '\n') {
            (*line)++;
            *col = 1;
        } else {
            (*col)++;
        }
    }
}

/* Applies one key of the config file, checking that its JSON type fits the option. */
static amc_status apply_json_item(amcfg_config *cfg, const cJSON *item, const char *source,
                                  amc_error *err)
{
    const opt_def *o = find_option(item->string, strlen(item->string));
    if (o == NULL || strchr(item->string, '-') != NULL)
        return amc_error_set(err, AMC_EINVAL, "%s: unknown key '%.64s'; run `altmoe serve "
                             "--help` for the list of options", source, item->string);
    if (o->type == OPT_INT) {
        if (!cJSON_IsNumber(item))
            return amc_error_set(err, AMC_EINVAL, "%s: key '%s' must be an integer (%s)",
                                 source, o->name, o->unit);
        /* Check the range before the cast, which is undefined for huge or infinite values. */
        double v = item->valuedouble;
        if (!isfinite(v) || v < -9.2e18 || v > 9.2e18 || v != floor(v))
            return amc_error_set(err, AMC_EINVAL, "%s: key '%s': %g is not an integer (%s)",
                                 source, o->name, v, o->unit);
        char text[32];
        snprintf(text, sizeof text, "%lld", (long long)v);
        return set_value(cfg, o, text, source, err);
    }
    if (!cJSON_IsString(item))
        return amc_error_set(err, AMC_EINVAL, "%s: key '%s' must be a string", source, o->name);
    return set_value(cfg, o, item->valuestring, source, err);
}

amc_status amcfg_apply_json(amcfg_config *cfg, const char *text, size_t len, const char *source,
                            amc_error *err)
{
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (root == NULL) {
        size_t pos = (end != NULL && end >= text) ? (size_t)(end - text) : 0;
        int line, col;
        locate(text, pos > len ? len : pos, &line, &col);
        return amc_error_set(err, AMC_EFORMAT, "%s:%d:%d: invalid JSON", source, line, col);
    }
    amc_status st = AMC_OK;
    if (!cJSON_IsObject(root)) {
        st = amc_error_set(err, AMC_EINVAL, "%s: the config file must be a JSON object", source);
        goto done;
    }
    for (const cJSON *item = root->child; item != NULL; item = item->next) {
        for (const cJSON *prev = root->child; prev != item; prev = prev->next) {
            if (strcmp(prev->string, item->string) == 0) {
                st = amc_error_set(err, AMC_EINVAL, "%s: key '%.64s' appears twice", source,
                                   item->string);
                goto done;
            }
        }
        st = apply_json_item(cfg, item, source, err);
        if (st != AMC_OK)
            goto done;
    }
done:
    cJSON_Delete(root);
    return st;
}

/* Reads a whole small file into a malloc'd NUL-terminated buffer. */
static amc_status read_small_file(const char *path, size_t limit, char **out, size_t *out_len,
                                  amc_error *err)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return amc_error_set(err, AMC_EIO, "%s: cannot open: %s", path, strerror(errno));
    char *buf = malloc(limit + 1);
    if (buf == NULL) {
        fclose(f);
        return amc_error_set(err, AMC_ENOMEM, "%s: out of memory", path);
    }
    size_t n = fread(buf, 1, limit + 1, f);
    int failed = ferror(f);
    fclose(f);
    if (failed || n > limit) {
        free(buf);
        return amc_error_set(err, failed ? AMC_EIO : AMC_EINVAL, failed ? "%s: read failed"
                             : "%s: file is larger than the 1 MiB limit", path);
    }
    buf[n] = '\0';
    *out = buf;
    *out_len = n;
    return AMC_OK;
}

amc_status amcfg_apply_file(amcfg_config *cfg, const char *path, amc_error *err)
{
    char *text;
    size_t len;
    amc_status st = read_small_file(path, 1 << 20, &text, &len, err);
    if (st != AMC_OK)
        return amc_error_prefix(err, "config file");
    st = amcfg_apply_json(cfg, text, len, path, err);
    free(text);
    return st;
}

/* Returns 1 for ALTMOE_ variables that are not options: the config file path, and the ones the
 * test harness sets (the binary under test, crash cycles, fault injection in core/fault.h). */
static int is_reserved_env(const char *name, size_t len)
{
    static const char *const reserved[] = {"CONFIG", "BIN", "CRASH_CYCLES", "FAULT_AT",
                                           "FAULT_KIND"};
    for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++)
        if (strlen(reserved[i]) == len && strncmp(name, reserved[i], len) == 0)
            return 1;
    return 0;
}

amc_status amcfg_apply_env(amcfg_config *cfg, char *const *envp, amc_error *err)
{
    static const char prefix[] = "ALTMOE_";
    for (char *const *e = envp; e != NULL && *e != NULL; e++) {
        if (strncmp(*e, prefix, sizeof prefix - 1) != 0)
            continue;
        const char *name = *e + sizeof prefix - 1;
        const char *eq = strchr(name, '=');
        if (eq == NULL)
            continue;
        size_t len = (size_t)(eq - name);
        if (is_reserved_env(name, len))
            continue;
        char lower[64];
        if (len >= sizeof lower)
            return amc_error_set(err, AMC_EINVAL, "environment: unknown variable %.*s",
                                 (int)(len + sizeof prefix - 1), *e);
        for (size_t i = 0; i < len; i++)
            lower[i] = (char)tolower((unsigned char)name[i]);
        lower[len] = '\0';
        const opt_def *o = find_option(lower, len);
        if (o == NULL)
            return amc_error_set(err, AMC_EINVAL, "environment: ALTMOE_%.*s names no option; "
                                 "run with --help for the list", (int)len, name);
        char source[96];
        snprintf(source, sizeof source, "environment variable ALTMOE_%.*s", (int)len, name);
        amc_status st = set_value(cfg, o, eq + 1, source, err);
        if (st != AMC_OK)
            return st;
    }
    return AMC_OK;
}

amc_status amcfg_finish(amcfg_config *cfg, amc_error *err)
{
    if (cfg->listen[0] == '\0')
        return amc_error_set(err, AMC_EINVAL, "option 'listen' is empty; give an address such "
                             "as 127.0.0.1");
    if (cfg->data_dir[0] == '\0')
        return amc_error_set(err, AMC_EINVAL, "option 'data_dir' is empty; give a directory");
    if (cfg->admin_token[0] != '\0' || cfg->admin_token_file[0] == '\0')
        return AMC_OK;

    /* The token file's first line is the token; trailing whitespace is dropped. */
    char *text;
    size_t len;
    amc_status st = read_small_file(cfg->admin_token_file, AMCFG_STR_MAX - 1, &text, &len, err);
    if (st != AMC_OK)
        return amc_error_prefix(err, "option 'admin_token_file'");
    size_t n = strcspn(text, "\r\n");
    while (n > 0 && isspace((unsigned char)text[n - 1]))
        n--;
    memcpy(cfg->admin_token, text, n);
    cfg->admin_token[n] = '\0';
    free(text);
    if (n == 0)
        return amc_error_set(err, AMC_EINVAL, "option 'admin_token_file': %s contains no token",
                             cfg->admin_token_file);
    return AMC_OK;
}

/* Splits "--name=value" or "--name value" at argv[*i]; advances *i past the value. */
static amc_status take_flag(int argc, char **argv, int *i, char *name, size_t name_cap,
                            const char **value, amc_error *err)
{
    const char *arg = argv[*i] + 2;
    const char *eq = strchr(arg, '=');
    size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
    if (len == 0 || len >= name_cap)
        return amc_error_set(err, AMC_EINVAL, "flag '%.64s' is not a valid option", argv[*i]);
    memcpy(name, arg, len);
    name[len] = '\0';
    if (eq != NULL) {
        *value = eq + 1;
        return AMC_OK;
    }
    if (*i + 1 >= argc)
        return amc_error_set(err, AMC_EINVAL, "flag --%s needs a value", name);
    *value = argv[++*i];
    return AMC_OK;
}

amc_status amcfg_load(amcfg_config *cfg, int argc, char **argv, char *const *envp,
                      amcfg_action *action, amc_error *err)
{
    amcfg_defaults(cfg);
    *action = AMCFG_RUN;

    /* First pass: actions and the config file, which sits below env and flags. */
    const char *file = NULL;
    for (char *const *e = envp; e != NULL && *e != NULL; e++)
        if (strncmp(*e, "ALTMOE_CONFIG=", 14) == 0)
            file = *e + 14;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            *action = AMCFG_HELP;
        else if (strcmp(argv[i], "--dump-config") == 0)
            *action = AMCFG_DUMP;
        else if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
            file = argv[++i];
        else if (strncmp(argv[i], "--config=", 9) == 0)
            file = argv[i] + 9;
    }
    if (*action == AMCFG_HELP)
        return AMC_OK;
    amc_status st = AMC_OK;
    if (file != NULL && (st = amcfg_apply_file(cfg, file, err)) != AMC_OK)
        return st;
    if ((st = amcfg_apply_env(cfg, envp, err)) != AMC_OK)
        return st;

    /* Second pass: flags, which win over everything. */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--dump-config") == 0)
            continue;
        if (strncmp(argv[i], "--", 2) != 0)
            return amc_error_set(err, AMC_EINVAL, "unexpected argument '%.64s'; options are "
                                 "--name VALUE", argv[i]);
        char name[64];
        const char *value = NULL;
        if ((st = take_flag(argc, argv, &i, name, sizeof name, &value, err)) != AMC_OK)
            return st;
        if (strcmp(name, "config") == 0)
            continue;
        char source[80];
        snprintf(source, sizeof source, "flag --%s", name);
        if ((st = amcfg_set(cfg, name, value, source, err)) != AMC_OK)
            return st;
    }
    return amcfg_finish(cfg, err);
}

static void flag_name(const char *name, char *out, size_t cap)
{
    size_t i = 0;
    for (; name[i] != '\0' && i + 1 < cap; i++)
        out[i] = name[i] == '_' ? '-' : name[i];
    out[i] = '\0';
}

/* Prints text from column indent on, breaking lines at spaces before column width. */
static void print_wrapped(FILE *out, const char *text, int indent, int width)
{
    int col = indent;
    while (*text != '\0') {
        size_t word = strcspn(text, " ");
        if (col > indent && col + 1 + (int)word > width) {
            fprintf(out, "\n%*s", indent, "");
            col = indent;
        } else if (col > indent) {
            fputc(' ', out);
            col++;
        }
        fprintf(out, "%.*s", (int)word, text);
        col += (int)word;
        text += word;
        while (*text == ' ')
            text++;
    }
    fputc('\n', out);
}

void amcfg_print_help(FILE *out, const char *command)
{
    fprintf(out, "usage: altmoe %s [--config FILE] [--OPTION VALUE ...] [--dump-config]\n\n"
            "Options (JSON key / ALTMOE_<KEY> environment variable / flag; flags win over\n"
            "the environment, which wins over the config file):\n\n", command);
    for (int i = 0; i < N_OPTIONS; i++) {
        const opt_def *o = &options[i];
        char flag[64];
        flag_name(o->name, flag, sizeof flag);
        fprintf(out, "  --%-20s ", flag);
        print_wrapped(out, o->help, 25, 78);
        fprintf(out, "  %-22s unit: %s; default: %s", "", o->unit,
                o->def[0] != '\0' ? o->def : "(none)");
        if (o->type == OPT_INT)
            fprintf(out, "; range: %lld to %lld", (long long)o->min, (long long)o->max);
        fputc('\n', out);
    }
    fprintf(out, "\n  --%-20s read options from this JSON file (or ALTMOE_CONFIG)\n", "config");
    fprintf(out, "  --%-20s print the effective configuration, secrets redacted, and exit\n",
            "dump-config");
}

void amcfg_dump(FILE *out, const amcfg_config *cfg)
{
    cJSON *obj = cJSON_CreateObject();
    for (int i = 0; obj != NULL && i < N_OPTIONS; i++) {
        const opt_def *o = &options[i];
        const void *field = (const char *)cfg + o->offset;
        if (o->type == OPT_INT)
            cJSON_AddNumberToObject(obj, o->name, (double)*(const int64_t *)field);
        else if (o->type == OPT_LEVEL)
            cJSON_AddStringToObject(obj, o->name, amcfg_log_level_name(*(const int64_t *)field));
        else if (o->secret)
            cJSON_AddStringToObject(obj, o->name, ((const char *)field)[0] ? "<redacted>" : "");
        else
            cJSON_AddStringToObject(obj, o->name, field);
    }
    char *text = obj ? cJSON_Print(obj) : NULL;
    if (text != NULL)
        fprintf(out, "%s\n", text);
    free(text);
    cJSON_Delete(obj);
}

int amcfg_option_count(void)
{
    return N_OPTIONS;
}

int amcfg_option_info(int i, const char **name, int *is_integer, int64_t *min, int64_t *max)
{
    if (i < 0 || i >= N_OPTIONS)
        return 0;
    *name = options[i].name;
    *is_integer = options[i].type == OPT_INT;
    *min = *is_integer ? options[i].min : 0;
    *max = *is_integer ? options[i].max : 0;
    return 1;
}
