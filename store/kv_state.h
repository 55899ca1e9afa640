/* The engine's state in the KV cache: which streams a state has (per layer, its compressed entries
 * and, on CSA layers, its indexer keys) and how a checkpoint brings a state back. One definition for
 * the daemon (daemon/repos.c) and the restore benchmark (bench/gpu/restore.c), kept apart from the
 * rest of store/ so that the store does not depend on the engine. */
#ifndef STORE_KV_STATE_H
#define STORE_KV_STATE_H

#include "err.h"
#include "kv.h"
#include "kvpack.h"
#include "state.h"

/* The streams' encoding, part of every key that names checkpoints of it (a change of encoding must
 * not find checkpoints written in the old one): each compressed entry and indexer key packed as
 * inference/kvpack.h describes (spec §5.3; 584 + 68 bytes at V4's shapes instead of 2048 + 512). */
#define STORE_KV_STATE_FORMAT "streams=packed1"

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
/* For a GPU restore (cuda_engine_state_upload_packed): checkpoint c's streams as stored (packed)
 * into bufs[k] (c->stream_len[k] bytes each; pinned memory makes the upload run at PCIe speed),
 * counts[layer] the entries they hold, and the boundary into st (position, rings, carries; its
 * caches are left empty: inf_state_restore_boundary_counts). Same checks and errors as the restore. */
int store_kv_state_read_packed(struct store_kv *kv, const struct store_kv_ckpt *c, struct inf_state *st, void *const *bufs,
                               long long *counts, struct ctx_err *e);

#endif
