/* Leveled key=value logging for the daemon.
 *
 * A line reads `ts=2026-12-04T21:03:00.123Z lvl=info event=request req_id=... status=200 ms=1.2`.
 * AMS_LOG() checks the level before it touches its arguments, so a filtered-out call costs one
 * comparison and never evaluates them (use that to quote untrusted values inside the call).
 * Untrusted bytes go through ams_log_quote(); the writer also replaces any control or non-ASCII
 * byte left in the finished line with \xHH, so one line stays one line. Secrets (the admin token,
 * the Authorization header) are never passed to the logger. */
#ifndef ALTMOE_SERVER_LOG_H
#define ALTMOE_SERVER_LOG_H

#include <stddef.h>

#define AMS_LOG_DEBUG 0
#define AMS_LOG_INFO 1
#define AMS_LOG_WARN 2
#define AMS_LOG_ERROR 3

/* Lowest level written; set once at start with ams_log_set_level(). */
extern int ams_log_threshold;

void ams_log_set_level(int level);

/* Receives each finished line (without the trailing newline). The default sink writes the line
 * and a newline to stderr in one call. Passing NULL restores the default. */
typedef void (*ams_log_sink)(const char *line, size_t len, void *user);
void ams_log_set_sink(ams_log_sink sink, void *user);

/* Formats `ts= lvl= event=` followed by fmt (key=value pairs) and hands the line to the sink.
 * Lines over 4 KiB are truncated. Call through AMS_LOG(). */
void ams_log_write(int level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Writes s into buf as a double-quoted string with `"` and `\` escaped and bytes outside
 * printable ASCII as \xHH; truncates to fit cap (ending in `..."`). Returns buf. NULL s gives
 * `"-"`. */
const char *ams_log_quote(char *buf, size_t cap, const char *s);

#define AMS_LOG(level, event, ...)                                                     \
    do {                                                                               \
        if ((level) >= ams_log_threshold)                                              \
            ams_log_write((level), (event), __VA_ARGS__);                              \
    } while (0)

/* Per-call-site rate limit of repeated lines: at most AMS_LOG_BURST lines per second. The
 * first line after a suppressed period carries `suppressed=N`. */
#define AMS_LOG_BURST 10

typedef struct ams_log_limiter {
    long window;          /* second of the current window */
    int count;            /* lines written in it */
    long suppressed;      /* lines dropped since the last written one */
} ams_log_limiter;

/* Returns -1 to drop the line, or the number of lines dropped before it (0 or more). */
long ams_log_limiter_take(ams_log_limiter *limiter);

/* Writes with fields `suppressed=N` appended when lines were dropped before it. */
void ams_log_write_limited(int level, const char *event, long suppressed, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define AMS_LOG_LIMITED(level, event, ...)                                             \
    do {                                                                               \
        static ams_log_limiter ams_limiter_;                                           \
        if ((level) >= ams_log_threshold) {                                            \
            long ams_dropped_ = ams_log_limiter_take(&ams_limiter_);                   \
            if (ams_dropped_ >= 0)                                                     \
                ams_log_write_limited((level), (event), ams_dropped_, __VA_ARGS__);    \
        }                                                                              \
    } while (0)

#endif
