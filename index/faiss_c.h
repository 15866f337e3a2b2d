/* The FAISS C API headers that altmoe's C code uses, included in one place.
 *
 * error_c.h declares `const char *faiss_get_last_error();` without a prototype, which the
 * project's -Wstrict-prototypes -Werror rejects in C, so that warning is off for these
 * official headers only. The functions are defined in index/faiss_c_impl.cpp, or by
 * libfaiss_c where a system ships it. */
#ifndef ALTMOE_INDEX_FAISS_C_H
#define ALTMOE_INDEX_FAISS_C_H

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstrict-prototypes"
#include <faiss/c_api/AutoTune_c.h>
#include <faiss/c_api/Index_c.h>
#include <faiss/c_api/error_c.h>
#include <faiss/c_api/impl/AuxIndexStructures_c.h>
#include <faiss/c_api/index_factory_c.h>
#include <faiss/c_api/index_io_c.h>
#pragma GCC diagnostic pop

#endif
