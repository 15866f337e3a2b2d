/* Fault injection for tests: in a build with -DAMC_FAULT_INJECTION (`make faults`), the Nth
 * call of one kind of fallible operation fails, so that tests can show every failure becomes
 * a reported error and leaves the store consistent. In every other build the macros are the
 * constant 0 or the plain libc call, and this module adds no code.
 *
 * The environment picks the fault, read at the first check:
 *   ALTMOE_FAULT_KIND   alloc | write | fsync | commit
 *   ALTMOE_FAULT_AT     N >= 1: the Nth check of that kind in the process fails, once
 * Each injected fault prints one line `fault_injected kind=K call=N where=FUNCTION` to
 * stderr, so that a test can tell whether its N was reached. */
#ifndef ALTMOE_CORE_FAULT_H
#define ALTMOE_CORE_FAULT_H

#include <stdlib.h>

typedef enum amc_fault_kind {
    AMC_FAULT_ALLOC = 0,   /* malloc, calloc, realloc on the store and API paths: NULL */
    AMC_FAULT_WRITE,       /* write/fwrite/pwrite of snapshot and model files: EIO */
    AMC_FAULT_FSYNC,       /* fsync of those files and their folders: EIO */
    AMC_FAULT_COMMIT,      /* LMDB commit of a write transaction: aborted, EIO */
    AMC_FAULT_KINDS
} amc_fault_kind;

#ifdef AMC_FAULT_INJECTION
/* Returns 1 (with errno set to ENOMEM or EIO) when this call is the one to fail, else 0.
 * Thread-safe. where names the caller for the stderr line. */
int amc_fault_check(amc_fault_kind kind, const char *where);
#define AMC_FAULT(kind) amc_fault_check((kind), __func__)
#else
#define AMC_FAULT(kind) 0
#endif

/* Allocation on the store and API paths: the libc call, or NULL when an alloc fault fires. */
#define AMC_MALLOC(size) (AMC_FAULT(AMC_FAULT_ALLOC) ? NULL : malloc(size))
#define AMC_CALLOC(n, size) (AMC_FAULT(AMC_FAULT_ALLOC) ? NULL : calloc((n), (size)))
#define AMC_REALLOC(ptr, size) (AMC_FAULT(AMC_FAULT_ALLOC) ? NULL : realloc((ptr), (size)))

#endif
