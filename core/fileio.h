/* Whole-file helpers shared by the file formats: a read-only mapping of a file, and crash-safe
 * replacement of a file (write a temporary file in the same folder, fsync it, rename it over the
 * target, fsync the folder). */
#ifndef ALTMOE_CORE_FILEIO_H
#define ALTMOE_CORE_FILEIO_H

#include <stddef.h>

#include "core/error.h"

/* Maps the regular file at path read-only. On success *map and *len describe the mapping, to be
 * released with amc_file_unmap; an empty file gives *map == NULL and *len == 0. On failure
 * *map is NULL and err names the file and the failing call. */
amc_status amc_file_map(const char *path, void **map, size_t *len, amc_error *err);

/* Releases a mapping from amc_file_map; a NULL map is a no-op. */
void amc_file_unmap(void *map, size_t len);

typedef struct amc_atomic_file {
    int fd;             /* open descriptor of the temporary file, -1 when closed */
    char *tmp_path;     /* "<path>.tmp.XXXXXX", owned */
    char *path;         /* final name, owned */
} amc_atomic_file;

/* Creates a temporary file with mode 0644 next to path. Nothing is visible at path until
 * amc_atomic_commit; a failed begin leaves file released. */
amc_status amc_atomic_begin(amc_atomic_file *file, const char *path, amc_error *err);

/* Appends len bytes of buf to the temporary file, retrying short writes. */
amc_status amc_atomic_write(amc_atomic_file *file, const void *buf, size_t len, amc_error *err);

/* Fsyncs and closes the temporary file, renames it to the final path and fsyncs the folder.
 * On failure the temporary file is removed. Either way file is released. */
amc_status amc_atomic_commit(amc_atomic_file *file, amc_error *err);

/* Closes and removes the temporary file and releases file; safe after a failed begin. */
void amc_atomic_abort(amc_atomic_file *file);

#endif
