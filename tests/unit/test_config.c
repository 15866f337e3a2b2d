/* The config table of `altmoe serve`: defaults, bounds of every entry, the three sources and
 * their precedence, secrets in --dump-config, and errors that name the key and the file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"

static void defaults_within_bounds(void **state)
{
    (void)state;
    amcfg_config cfg;
    amcfg_defaults(&cfg);
    assert_string_equal(cfg.listen, "127.0.0.1");
    assert_int_equal(cfg.log_level, AMCFG_LOG_INFO);

    /* Re-applying every default through amcfg_set must succeed, so each is inside its bounds. */
    char text[32];
    for (int i = 0; i < amcfg_option_count(); i++) {
        const char *name;
        int is_int;
        int64_t lo, hi;
        assert_true(amcfg_option_info(i, &name, &is_int, &lo, &hi));
        if (!is_int)
            continue;
        amc_error err;
        snprintf(text, sizeof text, "%lld", (long long)lo);
        assert_int_equal(amcfg_set(&cfg, name, text, "test", &err), AMC_OK);
        snprintf(text, sizeof text, "%lld", (long long)hi);
        assert_int_equal(amcfg_set(&cfg, name, text, "test", &err), AMC_OK);
    }
}

static void every_entry_rejects_out_of_range(void **state)
{
    (void)state;
    amcfg_config cfg;
    amcfg_defaults(&cfg);
    int checked = 0;
    for (int i = 0; i < amcfg_option_count(); i++) {
        const char *name;
        int is_int;
        int64_t lo, hi;
        assert_true(amcfg_option_info(i, &name, &is_int, &lo, &hi));
        amc_error err;
        if (!is_int) {
            /* Strings: over-long values; the log level: a name that is not a level. */
            char *big = malloc(AMCFG_STR_MAX + 10);
            assert_non_null(big);
            memset(big, 'a', AMCFG_STR_MAX + 9);
            big[AMCFG_STR_MAX + 9] = '\0';
            assert_int_equal(amcfg_set(&cfg, name, big, "test", &err), AMC_EINVAL);
            assert_non_null(strstr(err.msg, name));
            free(big);
            checked++;
            continue;
        }
        const long long bad[] = {(long long)lo - 1, (long long)hi + 1};
        for (int j = 0; j < 2; j++) {
            char text[32];
            snprintf(text, sizeof text, "%lld", bad[j]);
            assert_int_equal(amcfg_set(&cfg, name, text, "test", &err), AMC_EINVAL);
            assert_non_null(strstr(err.msg, name));
            assert_non_null(strstr(err.msg, "out of range"));
        }
        assert_int_equal(amcfg_set(&cfg, name, "12abc", "test", &err), AMC_EINVAL);
        assert_int_equal(amcfg_set(&cfg, name, "", "test", &err), AMC_EINVAL);
        checked++;
    }
    assert_int_equal(checked, amcfg_option_count());
    amc_error err;
    assert_int_equal(amcfg_set(&cfg, "log_level", "verbose", "test", &err), AMC_EINVAL);
    assert_non_null(strstr(err.msg, "log_level"));
}

static void json_file_errors_name_key_and_file(void **state)
{
    (void)state;
    amcfg_config cfg;
    amc_error err;
    amcfg_defaults(&cfg);

    const char *range = "{\"port\": 70000}";
    assert_int_equal(amcfg_apply_json(&cfg, range, strlen(range), "a.json", &err), AMC_EINVAL);
    assert_non_null(strstr(err.msg, "a.json"));
    assert_non_null(strstr(err.msg, "port"));

    const char *unknown = "{\"prot\": 80}";
    assert_int_equal(amcfg_apply_json(&cfg, unknown, strlen(unknown), "b.json", &err),
                     AMC_EINVAL);
    assert_non_null(strstr(err.msg, "prot"));

    const char *type = "{\"threads\": \"4\"}";
    assert_int_equal(amcfg_apply_json(&cfg, type, strlen(type), "c.json", &err), AMC_EINVAL);
    assert_non_null(strstr(err.msg, "threads"));

    const char *fraction = "{\"threads\": 2.5}";
    assert_int_equal(amcfg_apply_json(&cfg, fraction, strlen(fraction), "d.json", &err),
                     AMC_EINVAL);

    const char *huge = "{\"max_connections\": 1e999}";
    assert_int_equal(amcfg_apply_json(&cfg, huge, strlen(huge), "h.json", &err), AMC_EINVAL);
    assert_non_null(strstr(err.msg, "max_connections"));

    const char *syntax = "{\n  \"port\": 80,\n  oops\n}";
    assert_int_equal(amcfg_apply_json(&cfg, syntax, strlen(syntax), "e.json", &err),
                     AMC_EFORMAT);
    assert_non_null(strstr(err.msg, "e.json:3:"));

    const char *twice = "{\"port\": 80, \"port\": 81}";
    assert_int_equal(amcfg_apply_json(&cfg, twice, strlen(twice), "f.json", &err), AMC_EINVAL);
    assert_non_null(strstr(err.msg, "twice"));

    const char *good = "{\"port\": 8080, \"log_level\": \"debug\", \"listen\": \"::1\"}";
    assert_int_equal(amcfg_apply_json(&cfg, good, strlen(good), "g.json", &err), AMC_OK);
    assert_int_equal(cfg.port, 8080);
    assert_int_equal(cfg.log_level, AMCFG_LOG_DEBUG);
    assert_string_equal(cfg.listen, "::1");
}

static void flags_beat_env_beat_file(void **state)
{
    (void)state;
    char path[] = "/tmp/altmoe_cfg_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *text = "{\"port\": 1111, \"threads\": 3, \"max_k\": 50}";
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);

    char cfg_flag[64];
    snprintf(cfg_flag, sizeof cfg_flag, "--config=%s", path);
    char *argv[] = {"serve", cfg_flag, "--port", "3333", NULL};
    char *envp[] = {"ALTMOE_PORT=2222", "ALTMOE_THREADS=7", "HOME=/", NULL};
    amcfg_config cfg;
    amcfg_action action;
    amc_error err;
    assert_int_equal(amcfg_load(&cfg, 4, argv, envp, &action, &err), AMC_OK);
    assert_int_equal(action, AMCFG_RUN);
    assert_int_equal(cfg.port, 3333);    /* flag */
    assert_int_equal(cfg.threads, 7);    /* environment over file */
    assert_int_equal(cfg.max_k, 50);     /* file over default */
    unlink(path);

    char *bad_env[] = {"ALTMOE_NOPE=1", NULL};
    char *argv1[] = {"serve", NULL};
    assert_int_equal(amcfg_load(&cfg, 1, argv1, bad_env, &action, &err), AMC_EINVAL);
    assert_non_null(strstr(err.msg, "ALTMOE_NOPE"));

    char *range_env[] = {"ALTMOE_MAX_K=0", NULL};
    assert_int_equal(amcfg_load(&cfg, 1, argv1, range_env, &action, &err), AMC_EINVAL);
    assert_non_null(strstr(err.msg, "ALTMOE_MAX_K"));

    char *argv2[] = {"serve", "--batch-window", "-1", NULL};
    assert_int_equal(amcfg_load(&cfg, 3, argv2, NULL, &action, &err), AMC_EINVAL);
    assert_non_null(strstr(err.msg, "batch_window"));

    char *argv3[] = {"serve", "--dump-config", "--port=9", NULL};
    assert_int_equal(amcfg_load(&cfg, 3, argv3, NULL, &action, &err), AMC_OK);
    assert_int_equal(action, AMCFG_DUMP);
    assert_int_equal(cfg.port, 9);
}

static void dump_redacts_secret(void **state)
{
    (void)state;
    amcfg_config cfg;
    amcfg_defaults(&cfg);
    strcpy(cfg.admin_token, "s3cret-token-value");
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    assert_non_null(out);
    amcfg_dump(out, &cfg);
    fclose(out);
    assert_null(strstr(text, "s3cret"));
    assert_non_null(strstr(text, "<redacted>"));
    assert_non_null(strstr(text, "\"port\""));
    free(text);
}

static void help_lists_every_option(void **state)
{
    (void)state;
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    assert_non_null(out);
    amcfg_print_help(out, "serve");
    fclose(out);
    for (int i = 0; i < amcfg_option_count(); i++) {
        const char *name;
        int is_int;
        int64_t lo, hi;
        amcfg_option_info(i, &name, &is_int, &lo, &hi);
        char flag[64];
        snprintf(flag, sizeof flag, "--%s", name);
        for (char *p = flag; *p; p++)
            if (*p == '_')
                *p = '-';
        assert_non_null(strstr(text, flag));
    }
    assert_non_null(strstr(text, "unit: microseconds"));
    assert_non_null(strstr(text, "default: 127.0.0.1"));
    free(text);
}

static void token_file_is_read(void **state)
{
    (void)state;
    char path[] = "/tmp/altmoe_tok_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "abc123  \n", 9), 9);
    close(fd);
    amcfg_config cfg;
    amc_error err;
    amcfg_defaults(&cfg);
    strcpy(cfg.admin_token_file, path);
    assert_int_equal(amcfg_finish(&cfg, &err), AMC_OK);
    assert_string_equal(cfg.admin_token, "abc123");
    unlink(path);

    amcfg_defaults(&cfg);
    strcpy(cfg.admin_token_file, "/nonexistent/altmoe-token");
    assert_int_not_equal(amcfg_finish(&cfg, &err), AMC_OK);
    assert_non_null(strstr(err.msg, "admin_token_file"));
}

static void example_config_loads(void **state)
{
    (void)state;
    amcfg_config cfg;
    amc_error err;
    amcfg_defaults(&cfg);
    /* make unit runs from the repository root. */
    assert_int_equal(amcfg_apply_file(&cfg, "config/example.json", &err), AMC_OK);
    assert_int_equal(cfg.port, 7700);
    assert_string_equal(cfg.admin_token_file, "/etc/altmoe/admin-token");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(defaults_within_bounds),
        cmocka_unit_test(every_entry_rejects_out_of_range),
        cmocka_unit_test(json_file_errors_name_key_and_file),
        cmocka_unit_test(flags_beat_env_beat_file),
        cmocka_unit_test(dump_redacts_secret),
        cmocka_unit_test(help_lists_every_option),
        cmocka_unit_test(token_file_is_read),
        cmocka_unit_test(example_config_loads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
