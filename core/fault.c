/* Fault injection counters (core/fault.h); compiled to nothing without AMC_FAULT_INJECTION. */
#include "core/fault.h"

#ifdef AMC_FAULT_INJECTION
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

static const char *const kind_names[AMC_FAULT_KINDS] = {"alloc", "write", "fsync", "commit"};

static pthread_once_t once = PTHREAD_ONCE_INIT;
static int chosen_kind = -1;      /* -1: no fault configured */
static long fail_at;
static atomic_long calls;

static void read_env(void)
{
    const char *kind = getenv("ALTMOE_FAULT_KIND");
    const char *at = getenv("ALTMOE_FAULT_AT");
    if (kind == NULL || at == NULL)
        return;
    fail_at = strtol(at, NULL, 10);
    for (int k = 0; k < AMC_FAULT_KINDS; k++)
        if (strcmp(kind, kind_names[k]) == 0)
            chosen_kind = k;
    if (chosen_kind < 0 || fail_at < 1) {
        fprintf(stderr, "fault injection: invalid ALTMOE_FAULT_KIND=%s or ALTMOE_FAULT_AT=%s; "
                        "use alloc, write, fsync or commit and N >= 1\n", kind, at);
        abort();
    }
}

int amc_fault_check(amc_fault_kind kind, const char *where)
{
    pthread_once(&once, read_env);
    if ((int)kind != chosen_kind)
        return 0;
    long n = atomic_fetch_add(&calls, 1) + 1;
    if (n != fail_at)
        return 0;
    fprintf(stderr, "fault_injected kind=%s call=%ld where=%s\n", kind_names[kind], n, where);
    errno = kind == AMC_FAULT_ALLOC ? ENOMEM : EIO;
    return 1;
}
#else
/* ISO C forbids an empty translation unit. */
typedef int amc_fault_unused_;
#endif
