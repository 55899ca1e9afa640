/* The CUDA engine (through the layer-split cuda_multi, one shard per listed device) behind the
 * inference/accel.h operations; see cuda_accel.h. */
#include "cuda_accel.h"

#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "multi.h"

struct cuda_accel {
    struct cuda_multi *m;
    char desc[256];
};

static int acc_forward(void *ud, const int *tokens, int S, float *logits, struct ctx_err *e)
{
    struct cuda_accel *c = ud;
    /* a chunk goes through the shards pipelined; one token replays each shard's decode graph */
    return S == 1 ? cuda_multi_forward(c->m, tokens, 1, logits, e) : cuda_multi_prefill(c->m, tokens, S, 0, logits, e);
}
static int acc_upload(void *ud, const struct inf_state *st, struct ctx_err *e)
{
    return cuda_multi_state_upload(((struct cuda_accel *)ud)->m, st, e);
}
static int acc_upload_prefix(void *ud, const struct inf_state *st, const long long *upto, struct ctx_err *e)
{
    return cuda_multi_state_upload_prefix(((struct cuda_accel *)ud)->m, st, upto, e);
}
static int acc_upload_packed(void *ud, const struct inf_state *st, const long long *counts, const void *const *streams,
                             struct ctx_err *e)
{
    return cuda_multi_state_upload_packed(((struct cuda_accel *)ud)->m, st, counts, streams, e);
}
/* Pinned for every device's context (portable): the shards' copies of the packed streams run at
 * PCIe speed instead of through the driver's pageable staging. */
/* No host_alloc op: the packed streams of a restore go in plain malloc'd memory. Measured on the
 * H200 (bench/gpu/results/2026-11-29r, 500K-token V4-Flash checkpoint, 1.76 GB packed):
 * cudaHostAlloc + cudaFreeHost of the streams took 0.86 s, while a pageable upload runs at ~7.5
 * GB/s (0.23 s for those bytes) and the upload from pinned memory saves only ~0.2 s of that. A
 * restore happens once per repository, so pinning the buffers costs more than it saves. */
static int acc_download(void *ud, struct inf_state *st, struct ctx_err *e)
{
    return cuda_multi_state_download_tail(((struct cuda_accel *)ud)->m, st, e);
}
static int acc_download_boundary(void *ud, struct inf_state *st, struct ctx_err *e)
{
    return cuda_multi_state_download_boundary(((struct cuda_accel *)ud)->m, st, e);
}
static int acc_mark(void *ud, void **out, struct ctx_err *e)
{
    return cuda_multi_mark(((struct cuda_accel *)ud)->m, (struct cuda_multi_mark **)out, e);
}
static int acc_rewind(void *ud, const void *mark, struct ctx_err *e)
{
    return cuda_multi_rewind(((struct cuda_accel *)ud)->m, mark, e);
}
static void acc_mark_free(void *ud, void *mark)
{
    (void)ud;
    cuda_multi_mark_free(mark);
}
/* Speculative decoding (accel.h's spec ops; only with the MTP block on the device: opts.mtp) */
static int acc_spec_forward(void *ud, const int *tokens, float *logits0, float *logits1, struct ctx_err *e)
{
    return cuda_multi_forward_spec(((struct cuda_accel *)ud)->m, tokens, logits0, logits1, e);
}
static int acc_spec_drop(void *ud, struct ctx_err *e) { return cuda_multi_drop_last(((struct cuda_accel *)ud)->m, e); }
static int acc_spec_draft(void *ud, int row0, const int *next, int S, int *draft, struct ctx_err *e)
{
    return cuda_multi_draft(((struct cuda_accel *)ud)->m, row0, next, S, draft, e);
}
static void acc_destroy(void *ud)
{
    struct cuda_accel *c = ud;
    cuda_multi_free(c->m);
    free(c);
}

int cuda_accel_new(const struct inf_weights *w, const struct cuda_accel_opts *o, struct inf_accel **out,
                   struct ctx_err *e)
{
    *out = NULL;
    int dev0 = 0, n = o && o->n_devices > 0 ? o->n_devices : 1;
    const int *devs = o && o->devices ? o->devices : &dev0;
    if (!(o && o->devices))
        n = 1;
    struct cuda_engine_opts eo = {
        .max_chunk = o && o->max_chunk > 0 ? o->max_chunk : 16384,
        .max_ctx = o && o->max_ctx > 0 ? o->max_ctx : 65536,
        .mtp = o && o->mtp,
    };
    /* tests: the GPUs refusing the MTP block (ctxd then falls back to the model without it) */
    if (eo.mtp && getenv("CTX_TEST_CUDA_NO_MTP"))
        return ctx_err_set(e, CTX_ENOMEM, "cuda: no room for the MTP block (CTX_TEST_CUDA_NO_MTP)");
    /* tests: the GPUs refusing chunks above N (ctxd then loads the engine with its fallback chunk) */
    const char *mc = getenv("CTX_TEST_CUDA_MAX_CHUNK");
    if (mc && atoi(mc) > 0 && eo.max_chunk > atoi(mc))
        return ctx_err_set(e, CTX_ENOMEM, "cuda: no room for chunks of %d (CTX_TEST_CUDA_MAX_CHUNK=%s)", eo.max_chunk,
                           mc);
    struct cuda_accel *c = calloc(1, sizeof *c);
    if (!c)
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    int rc = cuda_multi_new(w, &eo, devs, n, NULL, &c->m, e);
    if (rc) {
        free(c);
        return rc;
    }
    struct cudaDeviceProp p;
    const char *name = cudaGetDeviceProperties(&p, devs[0]) == cudaSuccess ? p.name : "?";
    int len = snprintf(c->desc, sizeof c->desc, "cuda: %d x %s (devices", n, name);
    for (int i = 0; i < n && len > 0 && (size_t)len < sizeof c->desc; i++)
        len += snprintf(c->desc + len, sizeof c->desc - (size_t)len, "%s%d", i ? "," : " ", devs[i]);
    if (len > 0 && (size_t)len < sizeof c->desc)
        snprintf(c->desc + len, sizeof c->desc - (size_t)len, "), max_ctx %lld, chunk %d%s", eo.max_ctx,
                 eo.max_chunk, eo.mtp ? ", MTP drafts" : "");
    struct inf_accel_ops ops = {
        .name = "cuda", .forward = acc_forward, .max_chunk = 0, .upload = acc_upload,
        .upload_prefix = acc_upload_prefix, .download_tail = acc_download, .mark = acc_mark, .rewind = acc_rewind,
        .mark_free = acc_mark_free, .destroy = acc_destroy, .upload_packed = acc_upload_packed,
        .download_boundary = acc_download_boundary,
    };
    if (eo.mtp) {
        ops.spec_forward = acc_spec_forward;
        ops.spec_drop = acc_spec_drop;
        ops.spec_draft = acc_spec_draft;
    }
    /* max_chunk 0: inf_accel_forward hands over whole chunks; cuda_multi_prefill splits them */
    struct inf_accel *a = inf_accel_new(&ops, c);
    if (!a) {
        acc_destroy(c);
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    }
    *out = a;
    return 0;
}

const char *cuda_accel_describe(const struct inf_accel *a) { return ((struct cuda_accel *)inf_accel_ud(a))->desc; }
