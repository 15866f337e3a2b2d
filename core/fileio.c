/* Read-only file mapping and crash-safe file replacement. */
#include "core/fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/fault.h"

amc_status amc_file_map(const char *path, void **map, size_t *len, amc_error *err)
{
    *map = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return amc_error_set(err, errno == ENOENT ? AMC_ENOTFOUND : AMC_EIO,
                             "%s: cannot open: %s", path, strerror(errno));

    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return amc_error_set(err, AMC_EIO, "%s: fstat failed: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return amc_error_set(err, AMC_EINVAL, "%s: not a regular file", path);
    }
    if (st.st_size == 0) {
        close(fd);
        return AMC_OK;
    }

    void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (m == MAP_FAILED)
        return amc_error_set(err, AMC_EIO, "%s: mmap of %lld bytes failed: %s", path,
                             (long long)st.st_size, strerror(e));
    *map = m;
    *len = (size_t)st.st_size;
    return AMC_OK;
}

void amc_file_unmap(void *map, size_t len)
{
    if (map != NULL)
        munmap(map, len);
}

static void atomic_release(amc_atomic_file *file)
{
    if (file->fd >= 0)
        close(file->fd);
    file->fd = -1;
    free(file->tmp_path);
    free(file->path);
    file->tmp_path = NULL;
    file->path = NULL;
}

amc_status amc_atomic_begin(amc_atomic_file *file, const char *path, amc_error *err)
{
    file->fd = -1;
    file->path = strdup(path);
    size_t n = strlen(path) + sizeof ".tmp.XXXXXX";
    file->tmp_path = malloc(n);
    if (file->path == NULL || file->tmp_path == NULL) {
        atomic_release(file);
        return amc_error_set(err, AMC_ENOMEM, "%s: out of memory for the temporary name", path);
    }
    snprintf(file->tmp_path, n, "%s.tmp.XXXXXX", path);

    file->fd = mkostemp(file->tmp_path, O_CLOEXEC);
    if (file->fd < 0) {
        int e = errno;
        atomic_release(file);
        return amc_error_set(err, AMC_EIO, "%s: cannot create a temporary file next to it: %s",
                             path, strerror(e));
    }
    if (fchmod(file->fd, 0644) != 0) {
        int e = errno;
        amc_atomic_abort(file);
        return amc_error_set(err, AMC_EIO, "%s: fchmod of the temporary file failed: %s", path,
                             strerror(e));
    }
    return AMC_OK;
}

amc_status amc_atomic_write(amc_atomic_file *file, const void *buf, size_t len, amc_error *err)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t w = AMC_FAULT(AMC_FAULT_WRITE) ? -1 : write(file->fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return amc_error_set(err, errno == ENOSPC ? AMC_EFULL : AMC_EIO,
                                 "%s: write failed: %s", file->tmp_path, strerror(errno));
        p += w;
        len -= (size_t)w;
    }
    return AMC_OK;
}

/* Fsyncs the folder that contains path, so that a rename into it survives a crash. */
static amc_status fsync_parent(const char *path, amc_error *err)
{
    char *copy = strdup(path);
    if (copy == NULL)
        return amc_error_set(err, AMC_ENOMEM, "%s: out of memory", path);
    const char *dir = dirname(copy);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        free(copy);
        return amc_error_set(err, AMC_EIO, "%s: cannot open its folder to fsync it: %s", path,
                             strerror(e));
    }
    int rc = AMC_FAULT(AMC_FAULT_FSYNC) ? -1 : fsync(fd);
    int e = errno;
    close(fd);
    free(copy);
    if (rc != 0)
        return amc_error_set(err, AMC_EIO, "%s: fsync of its folder failed: %s", path,
                             strerror(e));
    return AMC_OK;
}

amc_status amc_atomic_commit(amc_atomic_file *file, amc_error *err)
{
    /* Flush the data before the rename, so the new name never points at partial content. */
    if (AMC_FAULT(AMC_FAULT_FSYNC) || fsync(file->fd) != 0) {
        int e = errno;
        amc_status rc = amc_error_set(err, e == ENOSPC ? AMC_EFULL : AMC_EIO,
                                      "%s: fsync failed: %s", file->tmp_path, strerror(e));
        amc_atomic_abort(file);
        return rc;
    }
    int fd = file->fd;
    file->fd = -1;
    if (close(fd) != 0) {
        int e = errno;
        amc_status rc = amc_error_set(err, AMC_EIO, "%s: close failed: %s", file->tmp_path,
                                      strerror(e));
        amc_atomic_abort(file);
        return rc;
    }

    if (rename(file->tmp_path, file->path) != 0) {
        int e = errno;
        amc_status rc = amc_error_set(err, AMC_EIO, "%s: rename from %s failed: %s", file->path,
                                      file->tmp_path, strerror(e));
        amc_atomic_abort(file);
        return rc;
    }

    amc_status rc = fsync_parent(file->path, err);
    atomic_release(file);
    return rc;
}

void amc_atomic_abort(amc_atomic_file *file)
{
    if (file->tmp_path != NULL) {
        if (file->fd >= 0)
            close(file->fd);
        file->fd = -1;
        unlink(file->tmp_path);
    }
    atomic_release(file);
}
