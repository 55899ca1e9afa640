/* The CUDA engine as an inference/ accelerator (inference/accel.h): a model with it attached runs
 * inf_model_forward on one GPU or a layer split over several (kernels/multi.h), and snapshots /
 * truncates of the bound state become device marks / rewinds, and a state bound again after smaller
 * ones (accel.h's resident) goes up through cuda_multi_state_upload_prefix: rings, carries and only
 * the entries the others overwrote; a KV-cache checkpoint goes up packed (inf_accel_restore_packed:
 * cuda_multi_state_upload_packed, the streams in pinned memory from inf_accel_host_alloc, which is
 * cudaHostAlloc here), with opts.mtp the speculative steps (spec ops: a two-token forward with its
 * undo record, the drop of its second position, the MTP block's draft), and a snapshot of a state ahead of its host copy takes only its rings, carries
 * and position (cuda_multi_state_download_boundary), not the entries. This is what `ctxd --backend
 * cuda` attaches to its model. */
#ifndef CUDA_ACCEL_H
#define CUDA_ACCEL_H

#ifdef __cplusplus
extern "C" {
#endif

#include "accel.h"
#include "err.h"
#include "weights.h"

struct cuda_accel_opts {
    const int *devices; /* CUDA ordinals, one shard each (repeats allowed); NULL: device 0 */
    int n_devices;      /* <= 0: 1 */
    long long max_ctx;  /* most positions of a sequence (sizes the device caches); <= 0: 65536 */
    int max_chunk;      /* most tokens per device call (prefill chunk); <= 0: 16384 */
    int mtp;            /* 1: the checkpoint's MTP block on the last device too, and accel.h's spec ops
                         * (speculative decoding, inference/spec.h); CTX_EINVAL without mtp.0 tensors */
};

/* Upload the weights (which need not outlive the accelerator) and allocate the device state.
 * CTX_EUNSUPPORTED without a device or for what the CUDA engine does not run (FP8 experts). */
int cuda_accel_new(const struct inf_weights *w, const struct cuda_accel_opts *o, struct inf_accel **out,
                   struct ctx_err *e);

/* "cuda: 2 x NVIDIA H200 (layers 22+21), max_ctx 524288" for status lines. */
const char *cuda_accel_describe(const struct inf_accel *a);

#ifdef __cplusplus
}
#endif

#endif
