/* Metrics registry: families with labelled series, rendered as Prometheus text.
 *
 * A family keeps its series in a singly linked list in creation order; the number of series is
 * small (routes x status classes, collections x modalities), so a linear lookup under the
 * family's mutex is cheaper than anything cleverer. */
#include "server/metrics.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_COLLECTORS 8

const double ams_latency_buckets[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                      0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
const int ams_latency_bucket_count = sizeof ams_latency_buckets / sizeof ams_latency_buckets[0];

typedef struct series {
    struct series *next;
    char *labels;
    double value;          /* counter or gauge value; histogram sum */
    unsigned long count;   /* histogram observations */
    unsigned long *buckets; /* histogram: observations <= bucket bound i (not cumulative) */
} series;

struct ams_metric {
    ams_metric *next;
    const char *name, *help;
    ams_metric_type type;
    const double *bounds;
    int n_bounds;
    pthread_mutex_t lock;
    series *head, *tail;
};

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static ams_metric *families, *families_tail;
static struct {
    ams_metrics_collect_fn fn;
    void *user;
} collectors[MAX_COLLECTORS];
static int n_collectors;

void ams_buf_printf(ams_buf *buf, const char *fmt, ...)
{
    if (buf->failed)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = buf->cap - buf->len;
        int n = vsnprintf(buf->data ? buf->data + buf->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0) {
            buf->failed = 1;
            return;
        }
        if ((size_t)n < room) {
            buf->len += (size_t)n;
            return;
        }
        size_t cap = buf->cap ? buf->cap * 2 : 4096;
        while (cap - buf->len <= (size_t)n)
            cap *= 2;
        char *data = realloc(buf->data, cap);
        if (data == NULL) {
            buf->failed = 1;
            return;
        }
        buf->data = data;
        buf->cap = cap;
    }
}

void ams_buf_free(ams_buf *buf)
{
    free(buf->data);
    memset(buf, 0, sizeof *buf);
}

ams_metric *ams_metrics_register(const char *name, const char *help, ams_metric_type type,
                                 const double *buckets, int n_buckets)
{
    ams_metric *m = calloc(1, sizeof *m);
    if (m == NULL)
        return NULL;
    m->name = name;
    m->help = help;
    m->type = type;
    m->bounds = type == AMS_HISTOGRAM ? buckets : NULL;
    m->n_bounds = type == AMS_HISTOGRAM ? n_buckets : 0;
    pthread_mutex_init(&m->lock, NULL);
    pthread_mutex_lock(&registry_lock);
    if (families_tail != NULL)
        families_tail->next = m;
    else
        families = m;
    families_tail = m;
    pthread_mutex_unlock(&registry_lock);
    return m;
}

/* Finds or creates the series of labels; call with m->lock held. */
static series *series_get(ams_metric *m, const char *labels)
{
    for (series *s = m->head; s != NULL; s = s->next)
        if (strcmp(s->labels, labels) == 0)
            return s;
    series *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    s->labels = strdup(labels);
    if (m->n_bounds > 0)
        s->buckets = calloc((size_t)m->n_bounds, sizeof *s->buckets);
    if (s->labels == NULL || (m->n_bounds > 0 && s->buckets == NULL)) {
        free(s->labels);
        free(s->buckets);
        free(s);
        return NULL;
    }
    if (m->tail != NULL)
        m->tail->next = s;
    else
        m->head = s;
    m->tail = s;
    return s;
}

void ams_metric_add(ams_metric *m, const char *labels, double v)
{
    if (m == NULL)
        return;
    pthread_mutex_lock(&m->lock);
    series *s = series_get(m, labels);
    if (s != NULL)
        s->value += v;
    pthread_mutex_unlock(&m->lock);
}

void ams_metric_set(ams_metric *m, const char *labels, double v)
{
    if (m == NULL)
        return;
    pthread_mutex_lock(&m->lock);
    series *s = series_get(m, labels);
    if (s != NULL)
        s->value = v;
    pthread_mutex_unlock(&m->lock);
}

void ams_metric_observe(ams_metric *m, const char *labels, double v)
{
    if (m == NULL)
        return;
    pthread_mutex_lock(&m->lock);
    series *s = series_get(m, labels);
    if (s != NULL) {
        s->value += v;
        s->count++;
        for (int i = 0; i < m->n_bounds; i++) {
            if (v <= m->bounds[i]) {
                s->buckets[i]++;
                break;
            }
        }
    }
    pthread_mutex_unlock(&m->lock);
}

void ams_metrics_label(char *labels, size_t cap, const char *key, const char *value)
{
    size_t o = strlen(labels);
    int n = snprintf(labels + o, cap - o, "%s%s=\"", o ? "," : "", key);
    if (n < 0 || (size_t)n >= cap - o) {
        labels[o] = '\0';
        return;
    }
    o += (size_t)n;
    for (const char *p = value; *p != '\0' && o + 3 < cap; p++) {
        if (*p == '\\' || *p == '"') {
            labels[o++] = '\\';
            labels[o++] = *p;
        } else if (*p == '\n') {
            labels[o++] = '\\';
            labels[o++] = 'n';
        } else {
            labels[o++] = *p;
        }
    }
    labels[o++] = '"';
    labels[o] = '\0';
}

void ams_metrics_collector(ams_metrics_collect_fn fn, void *user)
{
    pthread_mutex_lock(&registry_lock);
    if (n_collectors < MAX_COLLECTORS) {
        collectors[n_collectors].fn = fn;
        collectors[n_collectors].user = user;
        n_collectors++;
    }
    pthread_mutex_unlock(&registry_lock);
}

static void render_histogram(ams_buf *buf, const ams_metric *m, const series *s)
{
    const char *sep = s->labels[0] ? "," : "";
    unsigned long cumulative = 0;
    for (int i = 0; i < m->n_bounds; i++) {
        cumulative += s->buckets[i];
        ams_buf_printf(buf, "%s_bucket{%s%sle=\"%g\"} %lu\n", m->name, s->labels, sep,
                       m->bounds[i], cumulative);
    }
    ams_buf_printf(buf, "%s_bucket{%s%sle=\"+Inf\"} %lu\n", m->name, s->labels, sep, s->count);
    ams_buf_printf(buf, "%s_sum%s%s%s %.9g\n", m->name, s->labels[0] ? "{" : "", s->labels,
                   s->labels[0] ? "}" : "", s->value);
    ams_buf_printf(buf, "%s_count%s%s%s %lu\n", m->name, s->labels[0] ? "{" : "", s->labels,
                   s->labels[0] ? "}" : "", s->count);
}

static void render_family(ams_buf *buf, ams_metric *m)
{
    static const char *const type_names[] = {"counter", "gauge", "histogram"};
    ams_buf_printf(buf, "# HELP %s %s\n# TYPE %s %s\n", m->name, m->help, m->name,
                   type_names[m->type]);
    pthread_mutex_lock(&m->lock);
    for (const series *s = m->head; s != NULL; s = s->next) {
        if (m->type == AMS_HISTOGRAM)
            render_histogram(buf, m, s);
        else if (s->labels[0] != '\0')
            ams_buf_printf(buf, "%s{%s} %.17g\n", m->name, s->labels, s->value);
        else
            ams_buf_printf(buf, "%s %.17g\n", m->name, s->value);
    }
    pthread_mutex_unlock(&m->lock);
}

void ams_metrics_render(ams_buf *buf)
{
    pthread_mutex_lock(&registry_lock);
    for (ams_metric *m = families; m != NULL; m = m->next)
        render_family(buf, m);
    for (int i = 0; i < n_collectors; i++)
        collectors[i].fn(buf, collectors[i].user);
    pthread_mutex_unlock(&registry_lock);
}

void ams_metrics_reset(void)
{
    pthread_mutex_lock(&registry_lock);
    ams_metric *m = families;
    while (m != NULL) {
        ams_metric *next = m->next;
        series *s = m->head;
        while (s != NULL) {
            series *sn = s->next;
            free(s->labels);
            free(s->buckets);
            free(s);
            s = sn;
        }
        pthread_mutex_destroy(&m->lock);
        free(m);
        m = next;
    }
    families = families_tail = NULL;
    n_collectors = 0;
    pthread_mutex_unlock(&registry_lock);
}
