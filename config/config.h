/* Configuration of `altmoe serve`: one declarative table of options.
 *
 * Every option is an entry of the table in config.c (name, type, default, bounds, unit, help,
 * secret flag). Values are applied in this order, each layer overriding the one before:
 * built-in defaults, a JSON config file, ALTMOE_* environment variables, command-line flags.
 * Flags therefore always win. An option called `max_body` is spelt "max_body" in the JSON file,
 * ALTMOE_MAX_BODY in the environment and --max-body on the command line. */
#ifndef ALTMOE_CONFIG_CONFIG_H
#define ALTMOE_CONFIG_CONFIG_H

#include <stdint.h>
#include <stdio.h>

#include "core/error.h"

#define AMCFG_STR_MAX 1024

typedef enum amcfg_log_level {
    AMCFG_LOG_DEBUG = 0,
    AMCFG_LOG_INFO,
    AMCFG_LOG_WARN,
    AMCFG_LOG_ERROR
} amcfg_log_level;

/* The effective configuration. Integer fields hold values already checked against the bounds
 * in the table; the unit of each is in its name or comment. */
typedef struct amcfg_config {
    char listen[AMCFG_STR_MAX];         /* IPv4 or IPv6 address to bind */
    int64_t port;                       /* TCP port */
    char data_dir[AMCFG_STR_MAX];       /* LMDB environment and index snapshots */
    char model[AMCFG_STR_MAX];          /* connector .safetensors file */
    int64_t threads;                    /* HTTP worker threads */
    int64_t max_connections;            /* concurrent TCP connections */
    int64_t connection_timeout_s;       /* idle keep-alive connection timeout */
    int64_t request_timeout_ms;         /* deadline for a request body, from its first byte */
    int64_t max_body_bytes;             /* request body size cap */
    int64_t ingest_batch;               /* NDJSON lines per LMDB commit during ingest */
    int64_t batch_window_us;            /* search micro-batching window; 0 disables */
    int64_t max_k;                      /* largest k a search may ask for */
    char admin_token[AMCFG_STR_MAX];    /* bearer token of /admin routes (secret) */
    char admin_token_file[AMCFG_STR_MAX]; /* file containing the admin token */
    int64_t log_level;                  /* an amcfg_log_level */
    int64_t snapshot_interval_s;        /* periodic index snapshots; 0 disables */
    char cors_origins[AMCFG_STR_MAX];   /* comma-separated CORS origins, "*" for any; "" = off */
    int64_t map_size_max_mib;           /* ceiling of the LMDB map, MiB */
} amcfg_config;

/* Fills cfg with the built-in defaults of every option. */
void amcfg_defaults(amcfg_config *cfg);

/* Applies the JSON object in text (len bytes, need not be NUL-terminated) to cfg. source names
 * the file in error messages. Unknown keys, wrong types and out-of-range values are rejected
 * with AMC_EINVAL; a JSON syntax error gives AMC_EFORMAT with line and column. On failure cfg
 * may be partly updated. */
amc_status amcfg_apply_json(amcfg_config *cfg, const char *text, size_t len, const char *source,
                            amc_error *err);

/* Reads path and applies it with amcfg_apply_json(). Files over 1 MiB are rejected. */
amc_status amcfg_apply_file(amcfg_config *cfg, const char *path, amc_error *err);

/* Applies every ALTMOE_<NAME> variable found in envp (a NULL-terminated "KEY=VALUE" array, such
 * as environ). ALTMOE_ variables that name no option are rejected, except ALTMOE_CONFIG (the
 * config file path, read by amcfg_load) and ALTMOE_BIN (used by the test harness). */
amc_status amcfg_apply_env(amcfg_config *cfg, char *const *envp, amc_error *err);

/* Sets the option called name (underscores or dashes) from its text form. source names where
 * the value came from ("flag", "environment variable ALTMOE_PORT", ...) for the message. */
amc_status amcfg_set(amcfg_config *cfg, const char *name, const char *value, const char *source,
                     amc_error *err);

/* Checks the options together after all layers are applied (for example that the admin token
 * file is readable) and reads admin_token_file into admin_token. */
amc_status amcfg_finish(amcfg_config *cfg, amc_error *err);

/* What amcfg_load() found on the command line besides option values. */
typedef enum amcfg_action {
    AMCFG_RUN = 0,
    AMCFG_HELP,          /* --help was given */
    AMCFG_DUMP           /* --dump-config was given */
} amcfg_action;

/* Builds the effective config: defaults, then the file named by --config (or ALTMOE_CONFIG),
 * then envp, then the flags in argv[1..argc-1] (argv[0] is the command name). Flags are
 * --name VALUE or --name=VALUE. Sets *action for --help and --dump-config. */
amc_status amcfg_load(amcfg_config *cfg, int argc, char **argv, char *const *envp,
                      amcfg_action *action, amc_error *err);

/* Prints every option with its flag, type, unit, default, bounds and help text. */
void amcfg_print_help(FILE *out, const char *command);

/* Prints cfg as a JSON object with secrets replaced by "<redacted>" (or "" when unset). */
void amcfg_dump(FILE *out, const amcfg_config *cfg);

/* Returns the lower-case name of a log level ("debug", "info", "warn", "error"). */
const char *amcfg_log_level_name(int64_t level);

/* For tests: the number of options, and the name, minimum and maximum of option i. Only integer
 * options have bounds; the others report 0 and 0 with *is_integer = 0. Returns 0 when i is out
 * of range, 1 otherwise. */
int amcfg_option_count(void);
int amcfg_option_info(int i, const char **name, int *is_integer, int64_t *min, int64_t *max);

#endif
