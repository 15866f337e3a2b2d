/* The subset of the FAISS C API that altmoe calls, implemented over the C++ library.
 *
 * Debian ships libfaiss.a and the official C API headers (/usr/include/faiss/c_api) but not
 * libfaiss_c, so this file defines the functions altmoe needs with exactly the names and
 * signatures of those headers. A system that ships libfaiss_c can link it instead and drop this
 * file. Error semantics follow upstream's c_api: each call returns 0 on success or a negative
 * FaissErrorCode (-2 FAISS exception, -4 standard exception, -1 anything else), and
 * faiss_get_last_error() returns the message of the calling thread's last failure, valid until
 * that thread's next failing call. */
#include <faiss/AutoTune.h>
#include <faiss/Index.h>
#include <faiss/impl/AuxIndexStructures.h>
#include <faiss/impl/FaissException.h>
#include <faiss/impl/IDSelector.h>
#include <faiss/index_factory.h>
#include <faiss/index_io.h>
#include <faiss/utils/distances.h>

#include <exception>
#include <stdexcept>

#include <faiss/c_api/AutoTune_c.h>
#include <faiss/c_api/Index_c.h>
#include <faiss/c_api/error_c.h>
#include <faiss/c_api/impl/AuxIndexStructures_c.h>
#include <faiss/c_api/index_factory_c.h>
#include <faiss/c_api/index_io_c.h>

/* Exact (Flat) searches of fewer than distance_compute_blas_threshold queries (20 by default)
 * use FAISS's own per-vector loop, which Debian's generic x86-64 build of libfaiss.a does not
 * vectorise well. Sending every query count through BLAS halved single-query latency on 100,000
 * vectors of 256 dims (25 ms -> 13 ms on a 2-core VM), where the scan is bound by memory
 * bandwidth either way. The results are the same exact inner products. */
static const int blas_for_every_query = (faiss::distance_compute_blas_threshold = 1);

/* The exception of the calling thread's last failing call (upstream's error_impl.h name). */
thread_local std::exception_ptr faiss_last_exception;

namespace {

/* Runs body and maps what it throws to the C API's error codes. */
template <typename F>
int guarded(F body)
{
    try {
        body();
        return 0;
    } catch (faiss::FaissException &e) {
        faiss_last_exception = std::current_exception();
        return -2;
    } catch (std::exception &e) {
        faiss_last_exception = std::current_exception();
        return -4;
    } catch (...) {
        faiss_last_exception = std::make_exception_ptr(std::runtime_error("Unknown error"));
        return -1;
    }
}

/* Throws std::invalid_argument naming a NULL argument, so the caller gets -4 and a message. */
void require(const void *p, const char *what)
{
    if (p == nullptr)
        throw std::invalid_argument(std::string(what) + " is NULL");
}

faiss::Index *cxx(FaissIndex *index)
{
    return reinterpret_cast<faiss::Index *>(index);
}

const faiss::Index *cxx(const FaissIndex *index)
{
    return reinterpret_cast<const faiss::Index *>(index);
}

} // namespace

extern "C" {

const char *faiss_get_last_error()
{
    if (!faiss_last_exception)
        return nullptr;
    try {
        std::rethrow_exception(faiss_last_exception);
    } catch (std::exception &e) {
        return e.what();
    } catch (...) {
        return "Unknown error";
    }
}

int faiss_index_factory(FaissIndex **p_index, int d, const char *description,
                        FaissMetricType metric)
{
    return guarded([&] {
        require(p_index, "p_index");
        require(description, "description");
        faiss::Index *index = faiss::index_factory(d, description,
                                                   static_cast<faiss::MetricType>(metric));
        *p_index = reinterpret_cast<FaissIndex *>(index);
    });
}

void faiss_Index_free(FaissIndex *obj)
{
    delete cxx(obj);
}

int faiss_Index_d(const FaissIndex *obj)
{
    return cxx(obj)->d;
}

int faiss_Index_is_trained(const FaissIndex *obj)
{
    return cxx(obj)->is_trained ? 1 : 0;
}

idx_t faiss_Index_ntotal(const FaissIndex *obj)
{
    return cxx(obj)->ntotal;
}

FaissMetricType faiss_Index_metric_type(const FaissIndex *obj)
{
    return static_cast<FaissMetricType>(cxx(obj)->metric_type);
}

int faiss_Index_train(FaissIndex *index, idx_t n, const float *x)
{
    return guarded([&] {
        require(index, "index");
        require(x, "x");
        cxx(index)->train(n, x);
    });
}

int faiss_Index_add(FaissIndex *index, idx_t n, const float *x)
{
    return guarded([&] {
        require(index, "index");
        require(x, "x");
        cxx(index)->add(n, x);
    });
}

int faiss_Index_add_with_ids(FaissIndex *index, idx_t n, const float *x, const idx_t *xids)
{
    return guarded([&] {
        require(index, "index");
        require(x, "x");
        cxx(index)->add_with_ids(n, x, xids);
    });
}

int faiss_Index_search(const FaissIndex *index, idx_t n, const float *x, idx_t k,
                       float *distances, idx_t *labels)
{
    return guarded([&] {
        require(index, "index");
        require(x, "x");
        require(distances, "distances");
        require(labels, "labels");
        cxx(index)->search(n, x, k, distances, labels);
    });
}

int faiss_Index_reset(FaissIndex *index)
{
    return guarded([&] {
        require(index, "index");
        cxx(index)->reset();
    });
}

int faiss_Index_remove_ids(FaissIndex *index, const FaissIDSelector *sel, size_t *n_removed)
{
    return guarded([&] {
        require(index, "index");
        require(sel, "sel");
        size_t removed = cxx(index)->remove_ids(*reinterpret_cast<const faiss::IDSelector *>(sel));
        if (n_removed != nullptr)
            *n_removed = removed;
    });
}

void faiss_IDSelector_free(FaissIDSelector *obj)
{
    delete reinterpret_cast<faiss::IDSelector *>(obj);
}

int faiss_IDSelector_is_member(const FaissIDSelector *sel, idx_t id)
{
    return reinterpret_cast<const faiss::IDSelector *>(sel)->is_member(id) ? 1 : 0;
}

int faiss_IDSelectorBatch_new(FaissIDSelectorBatch **p_sel, size_t n, const idx_t *indices)
{
    return guarded([&] {
        require(p_sel, "p_sel");
        if (n > 0)
            require(indices, "indices");
        *p_sel = reinterpret_cast<FaissIDSelectorBatch *>(new faiss::IDSelectorBatch(n, indices));
    });
}

int faiss_IDSelectorRange_new(FaissIDSelectorRange **p_sel, idx_t imin, idx_t imax)
{
    return guarded([&] {
        require(p_sel, "p_sel");
        *p_sel = reinterpret_cast<FaissIDSelectorRange *>(new faiss::IDSelectorRange(imin, imax));
    });
}

void faiss_IDSelectorRange_free(FaissIDSelectorRange *obj)
{
    delete reinterpret_cast<faiss::IDSelectorRange *>(obj);
}

int faiss_ParameterSpace_new(FaissParameterSpace **space)
{
    return guarded([&] {
        require(space, "space");
        *space = reinterpret_cast<FaissParameterSpace *>(new faiss::ParameterSpace());
    });
}

void faiss_ParameterSpace_free(FaissParameterSpace *obj)
{
    delete reinterpret_cast<faiss::ParameterSpace *>(obj);
}

int faiss_ParameterSpace_set_index_parameter(const FaissParameterSpace *space, FaissIndex *index,
                                             const char *name, double value)
{
    return guarded([&] {
        require(space, "space");
        require(index, "index");
        require(name, "name");
        reinterpret_cast<const faiss::ParameterSpace *>(space)->set_index_parameter(
            cxx(index), name, value);
    });
}

int faiss_write_index(const FaissIndex *idx, FILE *f)
{
    return guarded([&] {
        require(idx, "idx");
        require(f, "f");
        faiss::write_index(cxx(idx), f);
    });
}

int faiss_write_index_fname(const FaissIndex *idx, const char *fname)
{
    return guarded([&] {
        require(idx, "idx");
        require(fname, "fname");
        faiss::write_index(cxx(idx), fname);
    });
}

int faiss_read_index(FILE *f, int io_flags, FaissIndex **p_out)
{
    return guarded([&] {
        require(f, "f");
        require(p_out, "p_out");
        *p_out = reinterpret_cast<FaissIndex *>(faiss::read_index(f, io_flags));
    });
}

int faiss_read_index_fname(const char *fname, int io_flags, FaissIndex **p_out)
{
    return guarded([&] {
        require(fname, "fname");
        require(p_out, "p_out");
        *p_out = reinterpret_cast<FaissIndex *>(faiss::read_index(fname, io_flags));
    });
}

} // extern "C"
