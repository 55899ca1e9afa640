/* The engine's state in the KV cache: which streams a state has (per layer, its compressed entries
 * and, on CSA layers, its indexer keys) and how a checkpoint brings a state back. One definition for
 * the daemon (daemon/repos.c) and the restore benchmark (bench/gpu/restore.c), kept apart from the
 * rest of store/ so that the store does not depend on the engine. */
#ifndef STORE_KV_STATE_H
#define STORE_KV_STATE_H

#include "err.h"
#include "kv.h"
#include "state.h"

/* The streams' encoding, part of every key that names checkpoints of it (a change of encoding must
 * not find checkpoints written in the old one). Entries are stored packed (spec §5.3), which is
 * lossless for what the engine stores (state.h): a compressed entry as its nope dims' e4m3 codes
 * (head_dim - qk_rope_head_dim bytes), one e8m0 scale per 64 of them (padded to 8 bytes), then its
 * rope dims as bf16 (little-endian) — 584 bytes for V4's 448 + 64 dims instead of 2048 as floats;
 * an indexer key as its e2m1 codes (two per byte, the even dim in the low nibble) and one e8m0 scale
 * per 32 dims — 68 bytes for 128 dims instead of 512. kernels/ unpacks the same layout on the GPU. */
#define STORE_KV_STATE_FORMAT "streams=packed1"

size_t store_kv_entry_bytes(const struct inf_config *c);
size_t store_kv_ikey_bytes(const struct inf_config *c);
/* Pack one entry / key of floats; -1 when done, else the first dim of the block (or the rope dim) that
 * no code x power of two reproduces bit for bit (nothing the engine stores). Unpack is exact. */
int store_kv_pack_entry(const struct inf_config *c, const float *v, uint8_t *out);
void store_kv_unpack_entry(const struct inf_config *c, const uint8_t *in, float *v);
int store_kv_pack_ikey(const struct inf_config *c, const float *v, uint8_t *out);
void store_kv_unpack_ikey(const struct inf_config *c, const uint8_t *in, float *v);

/* 2 per layer. */
int store_kv_state_n_streams(const struct inf_state *st);
/* What a stream's producer reads: the state, the layer, and which of its two streams. */
struct store_kv_state_src {
    const struct inf_state *st;
    int layer, ikey;
};
/* sv[n] over st's caches, with src[n] (n = store_kv_state_n_streams) the storage they point to: no
 * copy, store_kv_put packs the bytes it writes, and fails with CTX_EFORMAT naming the layer, entry and
 * dims should one not pack exactly. sv, src and st must stay unchanged until the put returns. */
void store_kv_state_streams(const struct inf_state *st, struct store_kv_stream *sv, struct store_kv_state_src *src);
/* Bring st to checkpoint c: its caches from the streams (each checked against the model's layer
 * kinds and sizes, unpacked in place), then its boundary; st keeps its buffers when they are large enough. 0, or
 * CTX_EFORMAT naming the stream or layer that does not fit, or the store's error. */
int store_kv_state_restore(struct store_kv *kv, const struct store_kv_ckpt *c, struct inf_state *st, struct ctx_err *e);

#endif
