/* The one error scheme of altmoe.
 *
 * Every fallible function returns an amc_status: AMC_OK (0) on success, another code on failure.
 * When the caller passes an amc_error, the failing function also writes a one-line message into
 * it that names the value or file at fault and, where there is one, the fix. Passing NULL is
 * allowed and skips the message. */
#ifndef ALTMOE_CORE_ERROR_H
#define ALTMOE_CORE_ERROR_H

#include <stddef.h>

typedef enum amc_status {
    AMC_OK = 0,
    AMC_EINVAL,    /* invalid argument or input value */
    AMC_ENOMEM,    /* allocation failed */
    AMC_EIO,       /* read, write, fsync or rename failed */
    AMC_EFORMAT,   /* malformed or unsupported file content */
    AMC_ENOTFOUND, /* named object does not exist */
    AMC_EEXIST,    /* named object already exists */
    AMC_EFULL,     /* disk or LMDB map full */
    AMC_EBUSY,     /* resource locked or shutting down */
    AMC_EINTERNAL  /* a dependency failed in an unexpected way */
} amc_status;

#define AMC_ERROR_MSG_MAX 512

typedef struct amc_error {
    amc_status code;
    char msg[AMC_ERROR_MSG_MAX];
} amc_error;

/* Records code and a printf-style message in err (which may be NULL) and returns code, so a
 * failure path can read `return amc_error_set(err, AMC_EINVAL, "...", ...);`. */
amc_status amc_error_set(amc_error *err, amc_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prepends "prefix: " to the message already in err (no-op when err is NULL); returns err->code,
 * or AMC_EINTERNAL when err is NULL. Used to add context such as a file name on the way up. */
amc_status amc_error_prefix(amc_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Returns the stable lower-case name of a status ("ok", "invalid", "no_memory", ...). */
const char *amc_status_name(amc_status code);

#endif
