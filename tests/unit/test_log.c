/* Logging: lazy argument evaluation, key=value layout, escaping and rate limiting; and the
 * metrics registry's Prometheus rendering. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/log.h"
#include "server/metrics.h"

typedef struct captured {
    int lines;
    char last[4200];
} captured;

static void capture_sink(const char *line, size_t len, void *user)
{
    captured *c = user;
    c->lines++;
    memcpy(c->last, line, len);
    c->last[len] = '\0';
}

static int side_effects;

static int bump(void)
{
    return ++side_effects;
}

static void filtered_call_skips_arguments(void **state)
{
    (void)state;
    captured c = {0};
    ams_log_set_sink(capture_sink, &c);
    ams_log_set_level(AMS_LOG_WARN);
    side_effects = 0;
    AMS_LOG(AMS_LOG_INFO, "test", "n=%d", bump());
    assert_int_equal(side_effects, 0);
    assert_int_equal(c.lines, 0);
    AMS_LOG(AMS_LOG_ERROR, "test", "n=%d", bump());
    assert_int_equal(side_effects, 1);
    assert_int_equal(c.lines, 1);
    ams_log_set_sink(NULL, NULL);
    ams_log_set_level(AMS_LOG_INFO);
}

static void line_has_key_value_layout(void **state)
{
    (void)state;
    captured c = {0};
    ams_log_set_sink(capture_sink, &c);
    AMS_LOG(AMS_LOG_INFO, "request", "req_id=%s status=%d", "abc", 200);
    assert_int_equal(strncmp(c.last, "ts=", 3), 0);
    assert_non_null(strstr(c.last, " lvl=info event=request req_id=abc status=200"));
    assert_non_null(strstr(c.last, "Z lvl="));
    ams_log_set_sink(NULL, NULL);
}

static void untrusted_bytes_are_escaped(void **state)
{
    (void)state;
    captured c = {0};
    char q[64];
    ams_log_set_sink(capture_sink, &c);
    AMS_LOG(AMS_LOG_INFO, "request", "path=%s",
            ams_log_quote(q, sizeof q, "/a\"b\\c\nlvl=error\x01\xff"));
    assert_null(strchr(c.last, '\n'));
    assert_non_null(strstr(c.last, "path=\"/a\\\"b\\\\c\\x0alvl=error\\x01\\xff\""));

    /* A raw control byte that bypassed quoting is still scrubbed by the writer. */
    AMS_LOG(AMS_LOG_INFO, "raw", "v=%s", "x\ny");
    assert_non_null(strstr(c.last, "v=x\\x0ay"));

    /* Truncation keeps the quotes balanced. */
    char small[16];
    ams_log_quote(small, sizeof small, "0123456789abcdefghij");
    assert_int_equal(small[0], '"');
    assert_int_equal(small[strlen(small) - 1], '"');
    assert_non_null(strstr(small, "..."));
    ams_log_set_sink(NULL, NULL);
}

static void repeated_errors_are_rate_limited(void **state)
{
    (void)state;
    captured c = {0};
    ams_log_set_sink(capture_sink, &c);
    for (int i = 0; i < 1000; i++)
        AMS_LOG_LIMITED(AMS_LOG_ERROR, "flood", "i=%d", i);
    /* At most one burst per second; the loop may straddle one second boundary. */
    assert_true(c.lines >= AMS_LOG_BURST);
    assert_true(c.lines <= 2 * AMS_LOG_BURST);
    ams_log_set_sink(NULL, NULL);

    ams_log_limiter lim = {0};
    for (int i = 0; i < AMS_LOG_BURST; i++)
        assert_true(ams_log_limiter_take(&lim) >= 0);
    assert_int_equal(ams_log_limiter_take(&lim), -1);
    assert_int_equal(ams_log_limiter_take(&lim), -1);
    lim.window -= 1; /* pretend a second passed */
    assert_int_equal(ams_log_limiter_take(&lim), 2);
}

static void metrics_render_prometheus_text(void **state)
{
    (void)state;
    static const double bounds[] = {0.1, 1};
    ams_metric *c = ams_metrics_register("t_requests_total", "Requests.", AMS_COUNTER, NULL, 0);
    ams_metric *h = ams_metrics_register("t_seconds", "Latency.", AMS_HISTOGRAM, bounds, 2);
    char labels[64] = "";
    ams_metrics_label(labels, sizeof labels, "route", "se\"arch");
    ams_metric_add(c, labels, 1);
    ams_metric_add(c, labels, 2);
    ams_metric_observe(h, "", 0.05);
    ams_metric_observe(h, "", 0.5);
    ams_metric_observe(h, "", 5);

    ams_buf buf = {0};
    ams_metrics_render(&buf);
    assert_false(buf.failed);
    assert_non_null(strstr(buf.data, "# TYPE t_requests_total counter\n"));
    assert_non_null(strstr(buf.data, "t_requests_total{route=\"se\\\"arch\"} 3\n"));
    assert_non_null(strstr(buf.data, "t_seconds_bucket{le=\"0.1\"} 1\n"));
    assert_non_null(strstr(buf.data, "t_seconds_bucket{le=\"1\"} 2\n"));
    assert_non_null(strstr(buf.data, "t_seconds_bucket{le=\"+Inf\"} 3\n"));
    assert_non_null(strstr(buf.data, "t_seconds_count 3\n"));
    ams_buf_free(&buf);
    ams_metrics_reset();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(filtered_call_skips_arguments),
        cmocka_unit_test(line_has_key_value_layout),
        cmocka_unit_test(untrusted_bytes_are_escaped),
        cmocka_unit_test(repeated_errors_are_rate_limited),
        cmocka_unit_test(metrics_render_prometheus_text),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
