/* Metrics registry of the daemon, rendered in the Prometheus text exposition format (0.0.4).
 *
 * Families are registered once at start (name, help, type, histogram buckets). A series is one
 * label set of a family, written as a preformatted label string such as
 * `route="search",class="2xx"`; callers build it with ams_metrics_label() so values are escaped.
 * Updates lock only the family they touch. Collectors registered with ams_metrics_collector()
 * append gauges computed at scrape time (vectors per collection, memory). Thread-safe. */
#ifndef ALTMOE_SERVER_METRICS_H
#define ALTMOE_SERVER_METRICS_H

#include <stddef.h>

typedef enum ams_metric_type {
    AMS_COUNTER,
    AMS_GAUGE,
    AMS_HISTOGRAM
} ams_metric_type;

typedef struct ams_metric ams_metric;

/* A growable text buffer for rendering. */
typedef struct ams_buf {
    char *data;
    size_t len, cap;
    int failed;           /* set when an allocation failed; the content is then truncated */
} ams_buf;

void ams_buf_printf(ams_buf *buf, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void ams_buf_free(ams_buf *buf);

/* Registers a family; buckets (upper bounds, ascending, n_buckets of them) only for
 * histograms. The strings must outlive the registry (string literals). Returns NULL when out of
 * memory. Families render in registration order. */
ams_metric *ams_metrics_register(const char *name, const char *help, ams_metric_type type,
                                 const double *buckets, int n_buckets);

/* Adds v to a counter or sets a gauge to v, in the series with the given labels ("" for
 * none). Out-of-memory drops the update. */
void ams_metric_add(ams_metric *m, const char *labels, double v);
void ams_metric_set(ams_metric *m, const char *labels, double v);

/* Records one observation of a histogram. */
void ams_metric_observe(ams_metric *m, const char *labels, double v);

/* Appends `key="value"` (value escaped as the format requires) to labels, with a comma when
 * labels is not empty; truncates to cap. */
void ams_metrics_label(char *labels, size_t cap, const char *key, const char *value);

/* A function called on every scrape to append families of its own to buf. */
typedef void (*ams_metrics_collect_fn)(ams_buf *buf, void *user);
void ams_metrics_collector(ams_metrics_collect_fn fn, void *user);

/* Renders every family and collector into buf. */
void ams_metrics_render(ams_buf *buf);

/* Frees every family and forgets the collectors (at shutdown and in tests). */
void ams_metrics_reset(void);

/* Default histogram buckets for request and stage latencies, in seconds. */
extern const double ams_latency_buckets[];
extern const int ams_latency_bucket_count;

#endif
