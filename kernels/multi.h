/* The V4 forward pass split by layers over several CUDA engines (a pipeline): shard i holds the
 * blocks [b_i, b_{i+1}) of kernels/cuda_engine.h on its device, the first also the embedding, the
 * last also hc_head, the final norm and the head. A forward call passes each chunk's streams
 * X [S][hc][D] from shard to shard (cudaMemcpyPeerAsync into a double-buffered boundary buffer on the
 * receiving device; peer access enabled where cudaDeviceCanAccessPeer allows); every shard runs the
 * same kernels on the same inputs as one engine would, so logits and state are bit-identical to one
 * engine's (tests/kernels/test_multi.c). Several shards may share a device (one GPU runs the same
 * code and the same tests as several).
 *
 * Why not NCCL: a layer split within one process needs only point-to-point copies between devices,
 * which the CUDA runtime does directly (NVLink where the devices are peers); collectives would only
 * be needed for expert or tensor parallelism, which this file does not do.
 *
 * Ordering: no host synchronisation inside a call except waiting for the last shard's logits. Each
 * shard has its own stream; shard i+1 waits for an event shard i records after writing the boundary
 * buffer, and shard i waits, before overwriting a boundary buffer, for the event shard i+1 records
 * after reading it. A prefill queues all its chunks at once, so shard i runs chunk c while shard i-1
 * runs chunk c+1. A decode step replays each shard's CUDA graph (the copies and events stay outside
 * the graphs). */
#ifndef CUDA_MULTI_H
#define CUDA_MULTI_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "cuda_engine.h"
#include "err.h"
#include "state.h"
#include "weights.h"

struct cuda_multi;

/* The default split of the backbone's layers over n shards: contiguous runs that make the largest
 * shard's device memory smallest, counting per layer its weights as stored (all routed experts) and
 * its state at max_ctx positions (cuda_engine_layer_state_bytes), the embedding with layer 0 and the
 * head, final norm and hc_head with the last layer. split[0..n) receives the layer counts.
 * CTX_EINVAL when n < 1 or n > num_hidden_layers. Needs no device. */
int cuda_multi_plan(const struct inf_config *c, long long max_ctx, int n, int *split, struct ctx_err *e);

/* n shards on devices[0..n) (repeats allowed: shards may share a device), shard i over split[i]
 * layers (NULL: cuda_multi_plan). o gives max_chunk, max_ctx and mtp (the last shard's) as for
 * cuda_engine_new (its device and layer range are ignored: set per shard). CTX_EINVAL for n < 1, a device that does not exist, or a
 * split that does not cover the layers with at least one layer per shard; nothing is left allocated
 * on any error. */
int cuda_multi_new(const struct inf_weights *w, const struct cuda_engine_opts *o, const int *devices, int n,
                   const int *split, struct cuda_multi **out, struct ctx_err *e);
void cuda_multi_free(struct cuda_multi *m);

/* Back to position 0 with empty caches; the position (the same on every shard). */
void cuda_multi_reset(struct cuda_multi *m);
long long cuda_multi_pos(const struct cuda_multi *m);

int cuda_multi_shards(const struct cuda_multi *m);
/* Shard i's engine (device, layer range, streams: cuda_engine.h); owned by m. */
struct cuda_engine *cuda_multi_engine(const struct cuda_multi *m, int i);
/* Device bytes held on `device` by the shards there, as cuda_engine_memory. */
void cuda_multi_memory(const struct cuda_multi *m, int device, size_t *weight_bytes, size_t *state_bytes);

/* One chunk of S <= max_chunk tokens through every shard; logits[vocab] of its last position when
 * logits != NULL. Bad arguments change nothing; after a device error the state is undefined (reset
 * or upload one). */
int cuda_multi_forward(struct cuda_multi *m, const int *tokens, int S, float *logits, struct ctx_err *e);
/* Prefill of n tokens in chunks of `chunk`, pipelined over the shards: all chunks are queued at once and
 * the host waits only for the last logits. The same results as cuda_multi_forward over the same chunks
 * (and, the engine's chunked prefill being bit-identical to one chunk, as over any chunks). chunk > max_chunk:
 * max_chunk; chunk <= 0: max_chunk, or over several shards, when n would make fewer than 2 chunks a
 * shard, the chunk that makes 2 a shard (n / (2 shards) rounded up to a multiple of 128): a call of few
 * chunks leaves the first shard alone on the first and the last alone on the last, and smaller chunks
 * overlap more (V4-Flash's 8K suffix at 500K over two H200s: chunks of 2048, see bench/gpu/README.md). */
int cuda_multi_prefill(struct cuda_multi *m, const int *tokens, int n, int chunk, float *logits, struct ctx_err *e);
/* How a pipelined prefill (more than one shard and one chunk) is queued: from one host thread per shard
 * (1, the default; CTX_CUDA_MULTI_THREADS=0 makes it 0), each thread ordered after its neighbours' calls
 * so that the events order the devices as one thread would (the same results), or from the calling
 * thread alone (0), which leaves GPUs idle while the host waits on another shard's full launch queue.
 * < 0: back to the default. For tests and benchmarks; process-wide. */
void cuda_multi_prefill_threads(int on);
/* One decode step (each shard's CUDA graph replayed unless cuda_multi_use_graph(m, 0)). */
static inline int cuda_multi_decode(struct cuda_multi *m, int token, float *logits, struct ctx_err *e)
{
    return cuda_multi_forward(m, &token, 1, logits, e);
}
void cuda_multi_use_graph(struct cuda_multi *m, int on);
/* 1: every shard replays a captured graph; -1: some shard's capture failed (direct launches there);
 * 0: not captured yet (or graphs off). */
int cuda_multi_graph_state(const struct cuda_multi *m);

/* The state to / from a host state of the same config: each shard its layers, the position once.
 * An upload is checked whole before any shard is written (bad states change nothing). */
int cuda_multi_state_download(struct cuda_multi *m, struct inf_state *st, struct ctx_err *e);
int cuda_multi_state_upload(struct cuda_multi *m, const struct inf_state *st, struct ctx_err *e);
/* cuda_engine_state_upload_prefix on every shard (upto[layer] for all layers), checked whole first. */
int cuda_multi_state_upload_prefix(struct cuda_multi *m, const struct inf_state *st, const long long *upto,
                                   struct ctx_err *e);
/* A checkpoint as the KV cache stores it: cuda_engine_state_upload_packed on every shard (each its
 * layers' packed streams, unpacked on its device), counts checked whole first. */
int cuda_multi_state_upload_packed(struct cuda_multi *m, const struct inf_state *st, const long long *counts,
                                   const void *const *streams, struct ctx_err *e);
/* Benchmarks: cuda_engine_state_fill_random on every shard (the same state as one engine's). */
int cuda_multi_state_fill_random(struct cuda_multi *m, long long pos, unsigned long long seed, struct ctx_err *e);
/* cuda_engine_state_download_tail on every shard (each its layers' new entries, rings, carries). */
int cuda_multi_state_download_tail(struct cuda_multi *m, struct inf_state *st, struct ctx_err *e);
/* cuda_engine_state_download_boundary on every shard (each its layers' rings and carries, the
 * position): no compressed entry crosses. */
int cuda_multi_state_download_boundary(struct cuda_multi *m, struct inf_state *st, struct ctx_err *e);

/* Marks of the pipeline (cuda_engine.h's marks, one per shard, each on its shard's device and stream):
 * cuda_multi_rewind checks every shard's mark first (cuda_engine_mark_check) and fails with CTX_EINVAL,
 * changing nothing, for a mark of another pipeline or one any shard refuses; then rewinds every shard.
 * The pipeline must outlive its marks. */
/* Greedy generation over the pipeline: cuda_engine_generate's loop and contract (the same tokens
 * and state as one engine's; speculative with opts.mtp given to cuda_multi_new, which puts the MTP
 * block on the last shard: every shard runs each two-token forward and undoes a rejected draft's
 * position, the last one verifies and drafts). Tests force drafts through the last shard's engine
 * (cuda_multi_engine, cuda_engine_spec_force). */
int cuda_multi_generate(struct cuda_multi *m, const int *prompt, int n, const struct cuda_engine_gen_opts *o,
                        int *out, int *n_out, struct cuda_engine_gen_stats *stats, struct ctx_err *e);

/* The speculative steps one at a time, for a caller that chooses each token itself (sampling, grammar
 * masks: ctxd's agent through cuda_accel's spec ops, inference/spec.h). They need opts.mtp given to
 * cuda_multi_new (cuda_multi_has_mtp):
 * - cuda_multi_forward_spec: tokens[0..2) as one two-token forward on every shard (each saves its
 *   layers' undo record of the second position), the logits of the first position into
 *   logits0[vocab] and of the second into logits1[vocab];
 * - cuda_multi_drop_last: right after it, the second position undone on every shard (k_undo), the
 *   pipeline then exactly as after the first token alone; the first row stays readable for the MTP;
 * - cuda_multi_draft: the MTP block (last shard) on rows [row0, row0 + S) of the last forward call
 *   with next[s] the token after each, the argmax of the last row's MTP logits into *draft
 *   (cuda_engine_mtp: CTX_EINVAL when those rows are not there any more). */
int cuda_multi_has_mtp(const struct cuda_multi *m);
int cuda_multi_forward_spec(struct cuda_multi *m, const int *tokens, float *logits0, float *logits1,
                            struct ctx_err *e);
int cuda_multi_drop_last(struct cuda_multi *m, struct ctx_err *e);
int cuda_multi_draft(struct cuda_multi *m, int row0, const int *next, int S, int *draft, struct ctx_err *e);

struct cuda_multi_mark;
int cuda_multi_mark(struct cuda_multi *m, struct cuda_multi_mark **out, struct ctx_err *e);
int cuda_multi_rewind(struct cuda_multi *m, const struct cuda_multi_mark *mk, struct ctx_err *e);
void cuda_multi_mark_free(struct cuda_multi_mark *mk);
long long cuda_multi_mark_pos(const struct cuda_multi_mark *mk);

#ifdef __cplusplus
}
#endif

#endif
