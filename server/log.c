/* Leveled key=value logging: formatting, escaping, the sink and the per-site rate limiter. */
#include "server/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define LINE_MAX_BYTES 4096

int ams_log_threshold = AMS_LOG_INFO;

static ams_log_sink current_sink;
static void *current_user;
static pthread_mutex_t limiter_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void ams_log_set_level(int level)
{
    ams_log_threshold = level;
}

void ams_log_set_sink(ams_log_sink sink, void *user)
{
    current_sink = sink;
    current_user = user;
}

static void stderr_sink(const char *line, size_t len, void *user)
{
    (void)user;
    char buf[LINE_MAX_BYTES + 2];
    memcpy(buf, line, len);
    buf[len] = '\n';
    fwrite(buf, 1, len + 1, stderr);
}

/* Replaces control and non-ASCII bytes in place-escaped form; returns the new length. */
static size_t scrub(const char *in, size_t len, char *out, size_t cap)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c >= 0x20 && c < 0x7f) {
            if (o + 1 >= cap)
                break;
            out[o++] = (char)c;
        } else {
            if (o + 4 >= cap)
                break;
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    out[o] = '\0';
    return o;
}

static void write_line(int level, const char *event, long suppressed, const char *fmt,
                       va_list ap)
{
    char raw[LINE_MAX_BYTES];
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct tm tm;
    gmtime_r(&now.tv_sec, &tm);
    if (level < AMS_LOG_DEBUG || level > AMS_LOG_ERROR)
        level = AMS_LOG_ERROR;

    /* Header, caller's fields, then the suppressed count of a rate-limited site. */
    int n = snprintf(raw, sizeof raw, "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ lvl=%s event=%s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, now.tv_nsec / 1000000, level_names[level], event);
    size_t used = n > 0 ? (size_t)n : 0;
    if (used < sizeof raw) {
        int m = vsnprintf(raw + used, sizeof raw - used, fmt, ap);
        used += m > 0 ? (size_t)m : 0;
    }
    if (used < sizeof raw && suppressed > 0) {
        int m = snprintf(raw + used, sizeof raw - used, " suppressed=%ld", suppressed);
        used += m > 0 ? (size_t)m : 0;
    }
    if (used >= sizeof raw)
        used = sizeof raw - 1;

    char line[LINE_MAX_BYTES];
    size_t len = scrub(raw, used, line, sizeof line);
    ams_log_sink sink = current_sink ? current_sink : stderr_sink;
    sink(line, len, current_user);
}

void ams_log_write(int level, const char *event, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    write_line(level, event, 0, fmt, ap);
    va_end(ap);
}

void ams_log_write_limited(int level, const char *event, long suppressed, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    write_line(level, event, suppressed, fmt, ap);
    va_end(ap);
}

long ams_log_limiter_take(ams_log_limiter *limiter)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    long result;
    pthread_mutex_lock(&limiter_lock);
    if (limiter->window != (long)now.tv_sec) {
        limiter->window = (long)now.tv_sec;
        limiter->count = 0;
    }
    if (limiter->count < AMS_LOG_BURST) {
        limiter->count++;
        result = limiter->suppressed;
        limiter->suppressed = 0;
    } else {
        limiter->suppressed++;
        result = -1;
    }
    pthread_mutex_unlock(&limiter_lock);
    return result;
}

const char *ams_log_quote(char *buf, size_t cap, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    if (cap < 8) {
        if (cap > 0)
            buf[0] = '\0';
        return buf;
    }
    if (s == NULL)
        s = "-";
    size_t o = 0;
    buf[o++] = '"';
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        /* Room for the widest escape plus the closing `..."` and NUL. */
        if (o + 4 + 5 > cap) {
            memcpy(buf + o, "...", 3);
            o += 3;
            break;
        }
        if (*p == '"' || *p == '\\') {
            buf[o++] = '\\';
            buf[o++] = (char)*p;
        } else if (*p >= 0x20 && *p < 0x7f) {
            buf[o++] = (char)*p;
        } else {
            buf[o++] = '\\';
            buf[o++] = 'x';
            buf[o++] = hex[*p >> 4];
            buf[o++] = hex[*p & 15];
        }
    }
    buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}
