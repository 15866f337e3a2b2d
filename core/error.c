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

amc_status amc_error_prefix(amc_error *err, const char *fmt, ...)
{
    if (err == NULL)
        return AMC_EINTERNAL;
    char prefix[AMC_ERROR_MSG_MAX];
    char joined[2 * AMC_ERROR_MSG_MAX + 2];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    snprintf(joined, sizeof joined, "%s: %s", prefix, err->msg);
    /* Keep the head of the joined message when it no longer fits. */
    memcpy(err->msg, joined, sizeof err->msg - 1);
    err->msg[sizeof err->msg - 1] = '\0';
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
