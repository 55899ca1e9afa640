/* Packed cache entries (inference/kvpack.h, spec §5.3) unpacked on the GPU: the restore of a
 * checkpoint moves the packed bytes over PCIe (584 + 68 bytes per V4 entry instead of 2048 + 512 as
 * floats) and widens them on the device, with the same bits as inf_kvunpack_entry / _ikey (tested
 * by tests/kernels/test_kvpack.c). Device pointers; asynchronous on `stream` (a cudaStream_t). */
#ifndef CUDA_KVPACK_H
#define CUDA_KVPACK_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "config.h"
#include "err.h"

/* d_out[n][head_dim] from d_packed[n][inf_kvpack_entry_bytes(c)]. */
int cuda_kvunpack_entries(const struct inf_config *c, const void *d_packed, long long n, float *d_out, void *stream,
                          struct ctx_err *e);
/* d_out[n][index_head_dim] from d_packed[n][inf_kvpack_ikey_bytes(c)]. */
int cuda_kvunpack_ikeys(const struct inf_config *c, const void *d_packed, long long n, float *d_out, void *stream,
                        struct ctx_err *e);

#ifdef __cplusplus
}
#endif

#endif
