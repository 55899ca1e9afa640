/* The engine's state in the KV cache: which streams a state has (per layer, its compressed entries
 * and, on CSA layers, its indexer keys) and how a checkpoint brings a state back. One definition for
 * the daemon (daemon/repos.c) and the restore benchmark (bench/gpu/restore.c), kept apart from the
 * rest of store/ so that the store does not depend on the engine. */
#ifndef STORE_KV_STATE_H
#define STORE_KV_STATE_H

#include "err.h"
#include "kv.h"
#include "state.h"

/* 2 per layer. */
int store_kv_state_n_streams(const struct inf_state *st);
/* sv[store_kv_state_n_streams(st)] pointing into st's caches (no copy). */
void store_kv_state_streams(const struct inf_state *st, struct store_kv_stream *sv);
/* Bring st to checkpoint c: its caches from the streams (each checked against the model's layer
 * kinds and sizes), then its boundary; st keeps its buffers when they are large enough. 0, or
 * CTX_EFORMAT naming the stream or layer that does not fit, or the store's error. */
int store_kv_state_restore(struct store_kv *kv, const struct store_kv_ckpt *c, struct inf_state *st, struct ctx_err *e);

#endif
