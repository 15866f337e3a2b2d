/* The error scheme of altmoe: status codes plus a one-line message. */
#include "core/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

amc_status amc_error_set(amc_error *err, amc_status code, const char *fmt, ...)
{
    if (err == NULL)
        return code;
    va_list ap;
    va_start(ap, fmt);
    err->code = code;
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return code;
}

/* Appends text to dst [size] at *used, clipping at size - 1 bytes and keeping the NUL. */
static void append_clipped(char *dst, size_t size, size_t *used, const char *text)
{
    size_t n = strlen(text);
    if (n > size - 1 - *used)
        n = size - 1 - *used;
    memcpy(dst + *used, text, n);
    *used += n;
    dst[*used] = '\0';
}

amc_status amc_error_prefix(amc_error *err, const char *fmt, ...)
{
    if (err == NULL)
        return AMC_EINTERNAL;
    char prefix[AMC_ERROR_MSG_MAX];
    char old[AMC_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    old[sizeof old - 1] = '\0';

    /* Concatenate by hand: snprintf("%s: %s") trips gcc 12's -Wformat-truncation at -O2. */
    size_t used = 0;
    append_clipped(err->msg, sizeof err->msg, &used, prefix);
    append_clipped(err->msg, sizeof err->msg, &used, ": ");
    append_clipped(err->msg, sizeof err->msg, &used, old);
    return err->code;
}

const char *amc_status_name(amc_status code)
{
    switch (code) {
    case AMC_OK: return "ok";
    case AMC_EINVAL: return "invalid";
    case AMC_ENOMEM: return "no_memory";
    case AMC_EIO: return "io_error";
    case AMC_EFORMAT: return "bad_format";
    case AMC_ENOTFOUND: return "not_found";
    case AMC_EEXIST: return "exists";
    case AMC_EFULL: return "full";
    case AMC_EBUSY: return "busy";
    case AMC_EINTERNAL: return "internal";
    }
    return "unknown";
}
