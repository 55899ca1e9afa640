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
 * not find checkpoints written in the old one): each value of the engine's caches (floats holding
 * bf16-exact values, state.h) is stored as its 2-byte bf16 pattern, half of the fp32 bytes. */
#define STORE_KV_STATE_FORMAT "streams=bf16"

/* 2 per layer. */
int store_kv_state_n_streams(const struct inf_state *st);
/* sv[store_kv_state_n_streams(st)] over st's caches (no copy: store_kv_put converts the bytes it
 * writes, and fails with CTX_EFORMAT naming the value should one not be bf16-exact, which the engine
 * never produces). sv and st must stay unchanged until the put returns. */
void store_kv_state_streams(const struct inf_state *st, struct store_kv_stream *sv);
/* Bring st to checkpoint c: its caches from the streams (each checked against the model's layer
 * kinds and sizes, widened from bf16 in place), then its boundary; st keeps its buffers when they are large enough. 0, or
 * CTX_EFORMAT naming the stream or layer that does not fit, or the store's error. */
int store_kv_state_restore(struct store_kv *kv, const struct store_kv_ckpt *c, struct inf_state *st, struct ctx_err *e);

#endif
