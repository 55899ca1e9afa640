/* The DeepSeek V4 forward pass on one CUDA device (Hopper, sm_90a): the same computation as
 * inference/model.c (spec §4), with weights, activations and the sequence state resident on the
 * device. Weights are uploaded once at creation in their stored formats (FP8 e4m3 + e8m0 tiles,
 * FP4 e2m1 + e8m0/32, bf16, f32); the state mirrors inference/state.h (window ring, compressor
 * carries in the reference fp32 layout, compressed entries, CSA indexer keys), as floats holding
 * the same values, so it can be downloaded into a `struct inf_state` and uploaded back.
 *
 * Numerics: the bf16 rounding points, FP8 1x128 activation quantisation, FP8 QDQ of KV nope dims,
 * Hadamard + FP4 QDQ of indexer queries and keys, the entry order of the sparse attention (window
 * padded to its width, then CSA entries in indexer order / HCA entries ascending) and its 64-entry
 * online-softmax blocks with bf16 probabilities are those of the CPU engine. What differs is the
 * order of fp32 sums (tree reductions, tensor-core partials of kernels/gemm.h), so results agree
 * with the CPU within rounding, not bitwise; tests/kernels/test_engine.c states the bounds. RoPE
 * tables are computed on the host by inference/cpu's own function, so rotations are the CPU's.
 *
 * FP8 (Base) routed experts are not implemented (CTX_EUNSUPPORTED at creation). The first MTP block
 * runs when asked for (opts.mtp: cuda_engine_mtp, speculative cuda_engine_generate); otherwise its
 * tensors are not uploaded. All work runs on the engine's own stream;
 * every call returns when its results are on the host, except cuda_engine_forward_async (pipeline
 * stages: kernels/multi.h), whose work cuda_engine_finish waits for. */
#ifndef CUDA_ENGINE_H
#define CUDA_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "err.h"
#include "state.h"
#include "weights.h"

struct cuda_engine;

struct cuda_engine_opts {
    int max_chunk;       /* most tokens per forward call (prefill chunk); <= 0: 256 */
    long long max_ctx;   /* most positions of a sequence (sizes the compressed caches); <= 0: 8192 */
    int device;          /* CUDA ordinal; < 0: the current device (zero-initialised opts: device 0) */
    /* The blocks [layer_begin, layer_end) only (both 0: all), for a pipeline stage (kernels/multi.h):
     * only their weights and state are held; the embedding only when layer_begin is 0, hc_head, the
     * final norm and the head only when layer_end is num_hidden_layers. */
    int layer_begin, layer_end;
    /* 1: also upload and run the checkpoint's first MTP block (spec 4.9; cuda_engine_mtp and speculative
     * decoding in cuda_engine_generate): ~3.5 GB more for V4-Flash, its own 128-entry window. Needs an
     * engine that ends at the last layer, a checkpoint with mtp.0 tensors and max_chunk >= hc_mult
     * (CTX_EINVAL otherwise, naming which). */
    int mtp;
};

/* Upload the backbone weights of `w` (which need not outlive the engine) and allocate the state
 * and scratch on opts.device. CTX_EUNSUPPORTED without a device or for FP8 experts; CTX_EINVAL for
 * a device that does not exist or a layer range outside the model. Every call below makes the
 * engine's device current for its duration (and restores the caller's), so engines on several
 * devices can be driven from one thread. */
int cuda_engine_new(const struct inf_weights *w, const struct cuda_engine_opts *o, struct cuda_engine **out,
                    struct ctx_err *e);
void cuda_engine_free(struct cuda_engine *g);

/* Back to position 0 with empty caches. */
void cuda_engine_reset(struct cuda_engine *g);
long long cuda_engine_pos(const struct cuda_engine *g);
/* Device bytes held for weights and for state + scratch. */
void cuda_engine_memory(const struct cuda_engine *g, size_t *weight_bytes, size_t *state_bytes);

/* Prefill chunks (more than 8 tokens) run their FP8 products (wq_a|wkv, wq_b, the indexer's wq_b,
 * wo_b, the shared expert's w1|w3 and w2) on cuBLASLt's block-scaled FP8 GEMM (kernels/gemm.h
 * cuda_lt_ctx: each 128-K block summed by Hopper's FP8 tensor cores, as DeepSeek's own FP8 GEMM does)
 * unless the environment has CTX_CUDA_PREFILL_GEMM=exact when the engine is created, in which case
 * cuda_fp8_gemm (fp32 block partials: the CPU engine's numerics) runs them. Either way every chunk
 * size gives the same bits per row (one algorithm per shape), so chunked prefill stays bit-identical
 * to one chunk. This switches between the two for later calls (on < 0 changes nothing) and returns
 * whether cuBLASLt is in use; *lt_calls and *exact_fallbacks (either may be NULL) count the products
 * run on it and the calls cuBLASLt rejected, which ran the exact kernel instead. */
int cuda_engine_prefill_lt(struct cuda_engine *g, int on, unsigned long long *lt_calls,
                           unsigned long long *exact_fallbacks);
/* Since 2026-12-01 the products whose shape cuBLASLt takes with the weights as its A operand run that way
 * (kernels/gemm.h cuda_lt_ctx_run_rows: the product comes out in rows, no transpose pass); engines made
 * after cuda_engine_lt_rows_mode(0) (or with CTX_CUDA_LT_ROWS=0) keep the transposed form (1 on, < 0 the
 * environment's; process-wide, read at engine creation). cuda_engine_lt_rows_calls: how many of the
 * engine's cuBLASLt products ran in the rows form. Test and benchmark entries. */
void cuda_engine_lt_rows_mode(int on);
/* Prefill chunks (more than 8 tokens, hc = 4) keep the residual streams as bf16 bits between the mHC kernels
 * since 2026-12-01 (they are bf16 values: spec 4.2), half the bytes those kernels read and write; 0 keeps
 * them as floats (CTX_CUDA_X16=0), 1 on, < 0 the environment's. The same bits either way. Test and
 * benchmark entry; process-wide, read at each forward. */
void cuda_engine_x16_mode(int on);
/* hc = 4's mHC mixes on tensor cores (HCX, kernels/engine.cu: mode 1 one mma chain a tile, 2 its products' mmas
 * added in fp32; the default 2) or as fp32 products added by xor trees (mode 0): for engines created after the
 * call (-1: the environment's CTX_CUDA_HC_MMA again, else the default). */
void cuda_engine_hcx_mode(int mode);
/* Prefill's mHC pre (hc = 4, D <= 4096) in 256-thread blocks (k_hc_pre4q; the default) or k_hc_pre<4, 1>'s
 * 1024-thread ones (on 0): the same bits. Process-wide, read at each forward; -1: the environment's
 * CTX_CUDA_HC_PRE4Q again. */
void cuda_engine_pre4q_mode(int on);
/* SwiGLU's quantisation 8 values a lane (k_swiglu_quant16; 1, the default; CTX_CUDA_SWIGLU16) or 4 (0, k_swiglu_quant):
 * the same bytes either way. Process-wide, read at each launch; -1: the environment's again. */
void cuda_engine_swiglu16_mode(int on);
unsigned long long cuda_engine_lt_rows_calls(const struct cuda_engine *g);

/* Feed tokens[0..S) at the current position (S <= max_chunk; a longer prompt is several calls)
 * and advance it; logits[vocab] of the last position when logits != NULL. Bad arguments change
 * nothing; after a device error the state is undefined (reset or upload one). */
int cuda_engine_forward(struct cuda_engine *g, const int *tokens, int S, float *logits, struct ctx_err *e);
/* The same, calling hook after each backbone block with a host copy of the streams X [S][hc][D]
 * (positions pos0..; as inference/model.h's inf_block_hook). For tests: it synchronises per block. */
typedef void (*cuda_engine_hook)(void *ud, int layer, const float *X, int S, long long pos0);
int cuda_engine_forward_hook(struct cuda_engine *g, const int *tokens, int S, float *logits, cuda_engine_hook hook,
                             void *ud, struct ctx_err *e);
/* Prefill of any length in chunks of max_chunk. */
int cuda_engine_prefill(struct cuda_engine *g, const int *tokens, int n, float *logits, struct ctx_err *e);
/* One decode step. */
static inline int cuda_engine_decode(struct cuda_engine *g, int token, float *logits, struct ctx_err *e)
{
    return cuda_engine_forward(g, &token, 1, logits, e);
}

/* The same as cuda_engine_forward with the logits of the last `rows` positions (1 <= rows <= min(S, 8)):
 * logits [rows][vocab] when not NULL, and each row's argmax (the lowest index among equal maxima) in
 * amax[rows] when not NULL (computed on the device: only the indices come back then). */
int cuda_engine_forward_rows(struct cuda_engine *g, const int *tokens, int S, int rows, float *logits, int *amax,
                             struct ctx_err *e);

/* The MTP block (opts.mtp; spec 4.9, inference/model.h's inf_model_mtp) on rows [row0, row0 + S) of the
 * last forward call's output streams, i.e. its positions p0 + row0 .., with next_tokens[s] the token that
 * follows position p0 + row0 + s. Each position's entry joins the MTP's own window; the MTP's logits
 * of the last row (a prediction of the token two after it) go to logits [vocab] when not NULL and
 * their argmax to *draft when not NULL. The rows must be those of the last forward call (CTX_EINVAL
 * after a reset, an upload, a rewind or an MTP call, which overwrites them). The MTP window is not part
 * of the state transfers or marks: after an upload its entries are of another sequence until the
 * window has been fed again, which can only cost acceptance, never change a generated token. */
int cuda_engine_mtp(struct cuda_engine *g, int row0, const int *next_tokens, int S, float *logits, int *draft,
                    struct ctx_err *e);

/* Greedy generation at the current position: feed prompt[0..n) (chunks of max_chunk, the last one the
 * final min(n, sliding_window, max_chunk) tokens), then append the argmax token after each position
 * until max_tokens are out or one of stop[0..nstop) is (it is kept). spec = 1 (needs opts.mtp):
 * speculative decoding with the MTP block's drafts, one draft a step verified by a two-token forward
 * (the draft's position is saved first and restored when the draft goes: engine.cu's k_undo); spec = 0:
 * one token a step (the decode graph).
 * Both give the same tokens and leave the same state: every generated token but the last fed. */
struct cuda_engine_gen_opts {
    int max_tokens;
    int spec;
    const int *stop;
    int nstop;
};
struct cuda_engine_gen_stats {
    long long forwards;  /* decode forwards after the prompt (one or two tokens each) */
    long long drafted;   /* two-token steps (a draft verified) */
    long long accepted;  /* drafts accepted */
    long long mtp_calls; /* MTP block calls */
    long long undos;     /* drafts whose position was dropped (rejected, or an accepted stop token) */
    double prefill_s;    /* host seconds to the first token (the prompt) */
    double decode_s;     /* and for the rest (each step waits for its tokens) */
};
int cuda_engine_generate(struct cuda_engine *g, const int *prompt, int n, const struct cuda_engine_gen_opts *o,
                         int *out, int *n_out, struct cuda_engine_gen_stats *stats, struct ctx_err *e);
/* Tests: in cuda_engine_generate, drafts[i] (i < n; < 0: the MTP's own) is the draft for output token i
 * instead of the MTP's, to force acceptances and rejections; NULL ends it. The array must outlive its use. */
void cuda_engine_spec_force(struct cuda_engine *g, const int *drafts, int n);

/* Pipeline stages (kernels/multi.h). An engine over layers [b, e) with b > 0 takes its input
 * streams X [S][hc][D] (fp32) from a device buffer instead of embedding the tokens (it still takes
 * the tokens: hash-routed layers route by token id), and one with e < num_hidden_layers hands its
 * output streams on instead of computing logits. Copies between devices are cudaMemcpyPeerAsync on
 * the engine's stream (a plain device-to-device copy on one device). Events are cudaEvent_t: one the
 * engine records must belong to the engine's device; one it waits for may be on any device. */
struct cuda_engine_io {
    const float *x_in;  /* input streams [S][hc][D] on device x_in_dev; NULL: embed the tokens (b == 0 only) */
    int x_in_dev;
    void *in_ready;     /* waited for before x_in is read (NULL: none) */
    void *in_free;      /* recorded once x_in has been read (NULL: none) */
    float *x_out;       /* receives the output streams [S][hc][D] (device x_out_dev); NULL: none */
    int x_out_dev;
    void *out_free;     /* waited for before x_out is written (NULL: none) */
    void *out_ready;    /* recorded once x_out is written (NULL: none) */
};
/* Queue one forward call of S tokens at the current position and advance it, without waiting for
 * the device: the arguments are checked as cuda_engine_forward's (plus: want_logits only when the
 * engine ends at the last layer; no input streams only when it starts at layer 0). A decode step
 * (S == 1, logits wanted or not the last stage) replays the engine's CUDA graph; the copies of io
 * and the events stay outside the graph. cuda_engine_finish waits for the queued work and hands
 * out the logits of the last call that wanted them. */
int cuda_engine_forward_async(struct cuda_engine *g, const int *tokens, int S, const struct cuda_engine_io *io,
                              int want_logits, struct ctx_err *e);
int cuda_engine_finish(struct cuda_engine *g, float *logits, struct ctx_err *e);
/* The engine's device, its layer range, its stream (cudaStream_t) and the device pointer of its
 * streams X [max_chunk][hc][D]: after a forward call, X holds that call's output streams once the
 * stream has reached the call's end (record an event on the stream, or cuda_engine_finish); the
 * next call overwrites them. */
int cuda_engine_device(const struct cuda_engine *g);
void cuda_engine_layers(const struct cuda_engine *g, int *layer_begin, int *layer_end);
void *cuda_engine_stream(const struct cuda_engine *g);
const float *cuda_engine_streams(const struct cuda_engine *g);
/* Device bytes of layer l's state at max_ctx positions, as cuda_engine_new allocates them (window
 * ring, compressor carries, compressed entries, CSA indexer keys; fp32). */
size_t cuda_engine_layer_state_bytes(const struct inf_config *c, int l, long long max_ctx);

/* The backbone state to / from a host state of the same config (inf_state_new): position, window
 * rings, carries and compressed entries. MTP layers of `st` are left as they are; an engine over a
 * layer range reads and writes only its layers (and the position). */
int cuda_engine_state_download(struct cuda_engine *g, struct inf_state *st, struct ctx_err *e);
int cuda_engine_state_upload(struct cuda_engine *g, const struct inf_state *st, struct ctx_err *e);
/* The upload of a state whose entries the engine still holds in part (inference/accel.c: a big state
 * bound again after a small one overwrote each layer's first entries): position, rings and carries as
 * cuda_engine_state_upload, but of each layer's compressed entries and indexer keys only [0, upto[l])
 * (upto[l] >= 0, clamped to the count); those from upto[l] up to st's count are taken as already on
 * the device, as a previous upload or forward of the same sequence left them (the caller's guarantee;
 * nothing here can check it). A new generation, as any upload: earlier marks die. */
int cuda_engine_state_upload_prefix(struct cuda_engine *g, const struct inf_state *st, const long long *upto,
                                    struct ctx_err *e);
/* The same download into an st that already holds this sequence's state up to an earlier point (the
 * caller guarantees the same prefix: st was downloaded from this engine, or from one fed the same
 * tokens, since its last reset or upload): only the compressed entries and indexer keys st lacks
 * (from st->layers[l].n_cache up to the engine's count, st growing through inf_state_reserve) cross
 * PCIe, with the rings, carries and position. Where st holds more entries than the engine (it was
 * rewound behind st) its counts are set down to the engine's: the entries are append-only, so st's
 * first ones are still the engine's. A checkpoint during a long prefill then costs the new entries. */
int cuda_engine_state_download_tail(struct cuda_engine *g, struct inf_state *st, struct ctx_err *e);
/* How download_tail moves copies of 4 MiB and more into the host arrays: through the engine's pinned
 * ring of 32 MiB pieces, each copied out on up to 8 host threads while the next is in flight (1, the
 * default; CTX_CUDA_D2H_STAGED=0 makes it 0), or by cudaMemcpy (0). The same bytes; < 0: back to the
 * default. Process-wide; for tests and benchmarks. */
void cuda_engine_d2h_staged(int on);
/* Only the part of the state that is not append-only: the position and each of the engine's layers'
 * ring and carries into st's arrays (st's caches and counts are not touched; st need not hold this
 * sequence: a snapshot's arrays behind a state of the same config). What inf_state_snapshot needs of a
 * state whose host copy lags (inference/accel.h), without the entries' download. */
int cuda_engine_state_download_boundary(struct cuda_engine *g, struct inf_state *st, struct ctx_err *e);

/* Marks: the engine's state at a position, kept on the device, to return to later bit for bit (ctxd
 * keeps a repository resident, answers a question, and rewinds to the resident prefix). A mark copies
 * (device to device, on the engine's stream) what is not append-only: each layer's window ring, the
 * compressor carries (main and indexer), and the position (host and device copies); the compressed
 * entries and indexer keys are append-only and their counts follow from the position, so a rewind
 * restores them by the position alone (inference/state.h's inf_state_snapshot / inf_state_truncate on
 * the CPU). Cost: cuda_engine_mark_bytes of device memory (V4-Flash, 43 layers: ~22.4 MiB, mostly the
 * 128 x 512 rings and the HCA layers' 128 x 512 carries) and one copy per layer; a mark and a rewind
 * are queued on the engine's stream (ordered with forward calls, not waited for). After a rewind, a
 * forward call or a replayed decode graph gives the bits a fresh engine fed the same tokens gives.
 *
 * cuda_engine_rewind fails with CTX_EINVAL, changing nothing, for a mark of another engine, one taken
 * before a reset, a state upload (plain or packed) or cuda_engine_state_fill_random (each starts a new
 * generation), one ahead of the engine's position, and one the engine has since been rewound behind
 * (stale: its later entries may have been overwritten by another continuation, even when the same
 * tokens were fed again). Rewinding keeps the marks at or before its target valid, so one mark can be
 * rewound to any number of times, and an older one after a newer. After a device error during a
 * rewind the state is mixed: rewind again (or reset / upload). The engine must outlive its marks
 * (free them first); like the engine's other calls, marks are for one thread at a time. */
struct cuda_engine_mark;
int cuda_engine_mark(struct cuda_engine *g, struct cuda_engine_mark **out, struct ctx_err *e);
int cuda_engine_rewind(struct cuda_engine *g, const struct cuda_engine_mark *m, struct ctx_err *e);
/* What cuda_engine_rewind would refuse, checked alone (0: a rewind to m would be accepted). */
int cuda_engine_mark_check(const struct cuda_engine *g, const struct cuda_engine_mark *m, struct ctx_err *e);
void cuda_engine_mark_free(struct cuda_engine_mark *m);
long long cuda_engine_mark_pos(const struct cuda_engine_mark *m);
/* Device bytes of a mark of an engine over layers [layer_begin, layer_end) (both 0: all). No device
 * needed. */
size_t cuda_engine_mark_bytes(const struct inf_config *c, int layer_begin, int layer_end);
/* The same from a checkpoint as the KV cache stores it (store_kv_state_read_packed): st gives the
 * position, rings and carries (its caches are not read), counts[layer] and streams[2 layer] /
 * streams[2 layer + 1] the packed entries and indexer keys (inference/kvpack.h; host memory, pinned for
 * PCIe speed), unpacked on the device to the same bits as the host's unpacking. Returns when done. */
int cuda_engine_state_upload_packed(struct cuda_engine *g, const struct inf_state *st, const long long *counts,
                                    const void *const *streams, struct ctx_err *e);

/* Profiling by stage (bench/gpu): when on, each forward call queues its launches behind a 20 ms
 * busy kernel (so they run back to back) and times its stages with events: GPU time per stage
 * without launch gaps, accumulated over calls (on = 0 stops). Not for production use: it adds 20 ms
 * per call. */
enum {
    CUDA_PROF_HC, CUDA_PROF_ATTN_PROJ, CUDA_PROF_ATTN_PREP, CUDA_PROF_COMPRESS, CUDA_PROF_INDEXER, CUDA_PROF_ATTN_CORE,
    CUDA_PROF_ATTN_OUT, CUDA_PROF_MOE_ROUTE, CUDA_PROF_MOE_EXPERTS, CUDA_PROF_MOE_COMBINE, CUDA_PROF_HEAD, CUDA_PROF_N
};
extern const char *const cuda_engine_prof_names[CUDA_PROF_N];
int cuda_engine_profile(struct cuda_engine *g, int on, struct ctx_err *e);
void cuda_engine_profile_get(struct cuda_engine *g, double ms[CUDA_PROF_N], int reset);
/* The same GPU time by block: ms[l] for layer l < num_hidden_layers, ms[num_hidden_layers] for the
 * rest (embedding, hc_head, head). */
void cuda_engine_profile_layers(struct cuda_engine *g, double *ms, int reset);

/* A decode step (one token, logits wanted, no hook, not profiling) runs as a CUDA graph: captured at
 * the first such step and replayed after (kernels read the position from device memory, so the
 * graph never changes). on = 0 runs every step as direct launches (the same kernels, the same bits).
 * cuda_engine_graph_state: 1 captured and in use, 0 not (yet), -1 the capture failed and steps run
 * as direct launches. */
void cuda_engine_use_graph(struct cuda_engine *g, int on);
int cuda_engine_graph_state(const struct cuda_engine *g);

/* Benchmarks only: reset, then the state of position `pos` with random bf16 values in [-1, 1) in
 * every window ring, compressed entry and indexer key (what a prefill to pos would leave, in size,
 * not in value), so that long contexts can be timed without prefilling them. */
int cuda_engine_state_fill_random(struct cuda_engine *g, long long pos, unsigned long long seed, struct ctx_err *e);

/* The indexer's top-k (a building block, exported for tests): for each query s < S at position
 * *d_pos + s, over the n = (*d_pos + s + 1) / 4 <= max_n scores of row s of d_score (row stride ld
 * floats), d_sel[s][rank] = entry for rank < min(K, n) in descending score with ties to the lowest
 * entry (inf_cpu_topk's order), -1 after. O(n) per query, by one of three routes with the same
 * bytes: decode (S <= 8 and max_n <= 2^20), one clustered launch (k_topk_fast; CTX_CUDA_TOPK_FAST=0
 * off); else, for S >= 32 and max_n <= 262144 (a 1M-token context), a block a query (k_topk_row: a
 * 16-bit histogram, then the selection; CTX_CUDA_TOPK_ROW=0 off); else a radix select per
 * 16384-entry segment, then over the segments' lists. K <= 2048. d_scratch:
 * cuda_engine_topk_scratch(S, max_n, K) bytes of device memory. Device pointers; asynchronous on
 * `stream`. */
size_t cuda_engine_topk_scratch(int S, long long max_n, int K);
int cuda_engine_topk(const float *d_score, size_t ld, const long long *d_pos, int S, long long max_n, int K, int *d_sel,
                     void *d_scratch, void *stream, struct ctx_err *e);
/* Whether cuda_engine_topk takes k_topk_row where it can: 1 on (S >= 32), 2 for every S, 0 off (the
 * segments), < 0 as the environment says (CTX_CUDA_TOPK_ROW, default on). Test and benchmark entry;
 * process-wide. */
void cuda_engine_topk_row_mode(int on);
/* k_topk_row's rank order: 1 (default) by a 32-bit sort over the next power of two of k threads where
 * every selected score is a bf16 value (the indexer's), 0 by the 64-bit bitonic of the block for every
 * row, < 0 as the environment says (CTX_CUDA_TOPK_R16). The same bytes either way. Process-wide. */
void cuda_engine_topk_r16_mode(int on);

/* The indexer's scores (a building block, exported for tests and benchmarks): for each query s < S at
 * position *d_pos + s, d_score[s * ld + e] = bf16(sum_h bf16(relu(bf16(q_sh . key_e)) * w_sh)) (heads
 * added in head order) for e < (*d_pos + s + 1) / 4 <= max_n; d_q [S][Hi][di] and d_keys [n][di] hold
 * FP4-QDQ'd values (exact in bf16), d_w [S][Hi]. mode 0: as the engine (tensor cores for any S when
 * Hi <= 64 and di is 32, 64 or 128, else one thread per entry), 1: one thread per entry, 2: tensor
 * cores as the engine runs them (CTX_EUNSUPPORTED outside those shapes), 3: k_idx_score_tc, the tensor-core
 * kernel of before for any S (the reference the newer ones are tested against). Device pointers;
 * asynchronous on `stream`. */
int cuda_engine_idx_scores(const float *d_q, const float *d_w, const float *d_keys, int S, int Hi, int di,
                           const long long *d_pos, long long max_n, float *d_score, size_t ld, int mode, void *stream,
                           struct ctx_err *e);

/* The 8-bit form of n rows of di FP4-QDQ'd values (indexer queries or keys; di = 32, 64 or 128): per row
 * d_q8 [di] int8 and one 32-bit word d_qx whose byte b is block b's power-of-two exponent (value =
 * int8 * 2^exponent; all four bytes equal when one exponent holds the whole row). Exact for any row on
 * the FP4 grid; values off it are rounded to 8 bits in their 32-value block. qdq != 0 first FP4-QDQs
 * the rows of d_x in place (as the engine's indexer does). Asynchronous on `stream`. */
int cuda_engine_idx_pack(float *d_x, long long n, int di, int qdq, int8_t *d_q8, uint32_t *d_qx, void *stream,
                         struct ctx_err *e);

/* The indexer scores of prefill chunks from queries and keys in that form (cuda_engine_idx_pack):
 * cuda_engine_idx_scores' arguments and results (scores of query s over entries < (*d_pos + s + 1) / 4,
 * up to max_n), on integer tensor cores (k_idx_score_i8); the exact dot products, so the bits of
 * mode 2 wherever those are exact (kernels/README.md). Needs Hi <= 64 and di 32, 64 or 128
 * (CTX_EUNSUPPORTED otherwise). Asynchronous on `stream`. */
int cuda_engine_idx_scores_i8(const int8_t *d_q8, const uint32_t *d_qx, const float *d_w, const int8_t *d_k8,
                              const uint32_t *d_kx, int S, int Hi, int di, const long long *d_pos, long long max_n,
                              float *d_score, size_t ld, void *stream, struct ctx_err *e);
/* Which kernel cuda_engine_idx_scores_i8 and the engine use for S >= 4: k_idx_score_i8e (1: for S >= 16,
 * entries on the mma's rows, the heads added in registers; 2: for every S >= 4), k_idx_score_i8 (0; the
 * same bits), or as the environment says (< 0: CTX_CUDA_IDX_I8E, default 1). Test and benchmark entry;
 * process-wide. */
void cuda_engine_idx_i8e_mode(int on);
/* Whether the engine's k_idx_score_i8e launches run k_idx_score_iwg instead (the same bits on warpgroup MMA;
 * di 128 and Hi 16, 32 or 64): 1 for S >= 16, 2 for every S >= 4 (with i8e's mode on), 0 off,
 * < 0 as the environment says (CTX_CUDA_IDX_WG, default 1). Test and benchmark entry; process-wide. */
void cuda_engine_idx_wg_mode(int on);

/* Sparse attention on tensor cores, the kernel of prefill chunks (exported for tests): for each query
 * s < S at position p = *d_pos + s, its entries (the window: positions p-W+1..p, from d_kvnew [S][d]
 * for positions >= *d_pos, else d_ring [W][d] slot position % W, padded to W with empty slots; then
 * CSA (ratio 4): d_cache rows d_sel[s][0..K) (-1 empty), or HCA (ratio > 0): rows 0..(p+1)/ratio)
 * attended by the H heads of d_q [S][H][d] with sinks d_sink [H] in the reference's arithmetic
 * (inf_cpu_sparse_attn: 64-entry online-softmax blocks, bf16 probabilities), scale 1/sqrt(d), bf16
 * out, the last rd dims inverse-RoPE'd with d_rope [pos][rd]; into d_out [S][H][d]. Queries and
 * entries must be bf16-exact. d == 512 (CTX_EUNSUPPORTED otherwise). Asynchronous on `stream`. */
int cuda_engine_attn_tc(const float *d_q, const float *d_kvnew, const float *d_ring, const float *d_cache,
                        const int *d_sel, int S, int H, int d, int W, int ratio, int K, const long long *d_pos,
                        const float *d_sink, const float *d_rope, int rd, float *d_out, void *stream,
                        struct ctx_err *e);

/* The same for an HCA layer (ratio > 4) as the engine runs it: the nc compressed entries d_cache [nc][d]
 * first converted to bf16 into d_c16 (nc * d * 2 + 16 bytes of scratch), whence the blocks past the
 * window come by cp.async (k_attn_tc's C16 path, CTX_CUDA_ATTN_C16); the bytes of cuda_engine_attn_tc.
 * nc >= the entries of the last query ((*d_pos + S) / ratio). */
int cuda_engine_attn_tc16(const float *d_q, const float *d_kvnew, const float *d_ring, const float *d_cache,
                          const int *d_sel, int S, int H, int d, int W, int ratio, int K, const long long *d_pos,
                          const float *d_sink, const float *d_rope, int rd, long long nc, void *d_c16, float *d_out,
                          void *stream, struct ctx_err *e);

/* The attention of prefill chunks as the engine runs it by default when the heads come in 64s
 * (k_attn_hwg: wgmma, two warpgroups a query; exported for tests): cuda_engine_attn_tc's entries
 * and arithmetic with other fp32 summation orders (its bound, not its bytes), for every layer type.
 * d_c16 NULL: every entry gathered from d_kvnew / d_ring / d_cache; else d_cache's nc rows (CSA,
 * HCA; nc >= 1) and then the window's (d_ring's W, d_kvnew's S) first converted to bf16 into d_c16
 * ((ceil(nc / 64) * 64 + W + S + 2 S H) * d * 2 + 16 bytes of scratch), every block copied from
 * there: the same bytes either way. With W == 128 that path is k_attn_hsw's (the seesaw schedule of
 * two 64-entry blocks a step, an HCA cache staged as 64-entry tiles: the same bound, other
 * roundings) unless cuda_engine_attn_hsw_mode(0) or CTX_CUDA_ATTN_HSW=0. nc >= the largest cache
 * row a query sees plus 1 ((*d_pos + S) / ratio). Needs d == 512, H a multiple of 64 and W of 64
 * (CTX_EUNSUPPORTED otherwise). cuda_engine_attn_wg_mode: the layer types the engine runs on it
 * (bit 1 sliding, 2 CSA, 4 HCA; 0: k_attn_tc everywhere; < 0: as CTX_CUDA_ATTN_WG says, default
 * 7); process-wide. cuda_engine_attn_hsw_mode: 1 k_attn_hsw where it applies (the default), 0
 * k_attn_hwg, < 0 as CTX_CUDA_ATTN_HSW says; process-wide. */
int cuda_engine_attn_wg(const float *d_q, const float *d_kvnew, const float *d_ring, const float *d_cache,
                        const int *d_sel, int S, int H, int d, int W, int ratio, int K, const long long *d_pos,
                        const float *d_sink, const float *d_rope, int rd, long long nc, void *d_c16, float *d_out,
                        void *stream, struct ctx_err *e);
void cuda_engine_attn_wg_mode(int mask);
void cuda_engine_attn_hsw_mode(int on);

/* The same attention as a decode step runs it (k_attn_dtc, exported for tests): the list of each of
 * S <= 8 queries cut into at most 32 runs of 64-entry blocks (a rule on the list's length alone), each
 * run in cuda_engine_attn_tc's arithmetic from an empty running max, the runs' partials merged by the
 * decode combine (rescaled to the largest max, the sink, bf16, inverse RoPE). A list of one run gives
 * cuda_engine_attn_tc's bytes. d_scratch: cuda_engine_attn_dtc_scratch(S, H, d) bytes of device memory.
 * Arguments otherwise as cuda_engine_attn_tc. */
size_t cuda_engine_attn_dtc_scratch(int S, int H, int d);
int cuda_engine_attn_dtc(const float *d_q, const float *d_kvnew, const float *d_ring, const float *d_cache,
                         const int *d_sel, int S, int H, int d, int W, int ratio, int K, const long long *d_pos,
                         const float *d_sink, const float *d_rope, int rd, float *d_scratch, float *d_out,
                         void *stream, struct ctx_err *e);

/* The prefill products on their own (building blocks exported for tests/kernels/test_wo.c): wo_a of S
 * tokens (d_w e4m3 [G*R][gd] grouped, d_s e8m0 scales, d_O [S][G*gd] bf16-valued, d_Z [S][G*R]) and a bf16
 * matrix [n][k] on d_x [S][k] (bf16-valued; d_y [S][n], rounded to bf16 when out_bf16); d_xb scratch for the
 * bf16 copy of the input. mode 0: as the engine (tensor-core GEMM for S > 8), 1: the per-row kernels, 2: the
 * GEMM; wo_a also 3: as 0 with the decode kernel before k_wo_a_ring (k_wo_a_mma, the same bits). Device
 * pointers; asynchronous on `stream`. */
int cuda_engine_wo_a(const uint8_t *d_w, const uint8_t *d_s, const float *d_O, int S, int G, int R,
                     int gd, float *d_Z, void *d_xb, int mode, void *stream, struct ctx_err *e);
int cuda_engine_lin_bf16(const uint16_t *d_w, int n, int k, const float *d_x, int S, float *d_y,
                         int out_bf16, void *d_xb, int mode, void *stream, struct ctx_err *e);

#ifdef __cplusplus
}
#endif

#endif
