/* The resident KV cache on disk (DESIGN.md §1, issue 6): checkpoints of a model's sequence state,
 * indexed in SQLite by a hash chain over the token ids, so that any prompt finds its longest
 * cached prefix.
 *
 * The store knows nothing of the model. A checkpoint is
 *   - a boundary blob: everything that is not append-only (window rings, compressor carries,
 *     positions), written atomically to its own file with a checksum; and
 *   - the lengths, at that position, of N append-only streams (the per-layer compressed caches).
 * Stream bytes live in one file per stream per lineage (a lineage = one prefill run), appended as
 * the run goes on and shared by all of its checkpoints. A lineage forked from a checkpoint of
 * another (a session, or the state after an edit) starts from its parent's streams at that point
 * without copying them.
 *
 * Durability: stream bytes and the boundary file are fsynced before the row that refers to them
 * is committed, so a crash at any point leaves only rows whose data is complete. Every read is
 * verified against checksums; a mismatch, a short or missing file drops the affected lineage and
 * reports CTX_EFORMAT with the reason, so the caller recomputes instead of using wrong state.
 *
 * One struct store_kv per thread. */
#ifndef STORE_KV_H
#define STORE_KV_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define STORE_KV_BLOCK 128   /* checkpoints sit at multiples of this many tokens */
#define STORE_KV_MAX_STREAMS 1024

struct store_kv;

struct store_kv_hash {
    uint8_t b[16];
};

/* Open (creating) the cache in directory `dir` (index: dir/kv.db, data: dir/L<lineage>/). */
int store_kv_open(const char *dir, struct store_kv **out, struct ctx_err *e);
void store_kv_close(struct store_kv *kv);

/* The hash chain of a token sequence: out[b] covers tokens[0 .. (b+1)*128), for every complete
 * block (n / 128 entries). The model key (config + weights identity + tool set) seeds the chain,
 * so different models never share entries. */
void store_kv_chain(const char *model_key, const int32_t *tokens, size_t n, struct store_kv_hash *out);

/* A new, empty lineage of `n_streams` streams. */
int store_kv_lineage_new(struct store_kv *kv, const char *model_key, int n_streams, int64_t *lineage,
                         struct ctx_err *e);

struct store_kv_stream {
    const void *data;  /* the whole stream so far: bytes [0, len) */
    uint64_t len;
    /* Or, when fill is set (data unused): the stream's bytes are produced on demand, fill writing
     * bytes [off, off + n) into dst, so that a caller whose memory holds another encoding (the
     * engine's fp32 caches, stored as bf16) need not build the whole stream. Called only for the
     * bytes a checkpoint adds, in order, n <= 4 MiB; a nonzero return (a CTX_E* code, e filled)
     * fails the put with nothing recorded. store_kv_put runs the streams on several threads: fill
     * is called for different streams at once (never twice at once for one stream). */
    int (*fill)(void *ud, uint64_t off, size_t n, void *dst, struct ctx_err *e);
    void *ud;
};

/* The hash of exactly the first n tokens: for n a multiple of 128 it is the chain's entry n/128-1;
 * otherwise the chain continued over the partial last block. */
void store_kv_prefix_hash(const char *model_key, const int32_t *tokens, size_t n, struct store_kv_hash *out);

/* Record a checkpoint at `pos` (above the lineage's last) whose hash is
 * store_kv_prefix_hash(tokens, pos). Checkpoints normally sit at multiples of 128 (where lookups
 * by block find them); one at another position (the end of a prompt) is found by a lookup of
 * exactly that prompt. The streams must extend what the lineage holds (append-only): only their
 * new bytes are written. */
int store_kv_put(struct store_kv *kv, int64_t lineage, uint64_t pos, const struct store_kv_hash *chain,
                 const void *boundary, size_t boundary_len, const struct store_kv_stream *streams,
                 int n_streams, struct ctx_err *e);

/* How many threads store_kv_put runs the streams on: n >= 1 that many (1: the calling thread alone),
 * 0 the default (the CPUs, at most 8). Process-wide; for benchmarks and tests. */
void store_kv_put_threads(int n);

struct store_kv_ckpt {
    int64_t id, lineage;
    uint64_t pos;
    size_t boundary_len;
    int n_streams;
    uint64_t *stream_len;  /* [n_streams], owned by the struct */
};
void store_kv_ckpt_clear(struct store_kv_ckpt *c);

/* The longest cached prefix of a prompt given its chain (store_kv_chain): *found 0 when none.
 * Counts a hit or a miss in the statistics and marks the lineage as used now. */
int store_kv_lookup(struct store_kv *kv, const char *model_key, const struct store_kv_hash *chain,
                    size_t n_blocks, struct store_kv_ckpt *out, int *found, struct ctx_err *e);
/* The longest cached prefix of tokens[0, n): a checkpoint of exactly n tokens, else the longest at a
 * multiple of 128. Same bookkeeping as store_kv_lookup. */
int store_kv_lookup_tokens(struct store_kv *kv, const char *model_key, const int32_t *tokens, size_t n,
                           struct store_kv_ckpt *out, int *found, struct ctx_err *e);
/* A checkpoint by lineage and position. */
int store_kv_get(struct store_kv *kv, int64_t lineage, uint64_t pos, struct store_kv_ckpt *out,
                 struct ctx_err *e);

/* Read and verify the boundary blob (buf has room for c->boundary_len bytes). */
int store_kv_read_boundary(struct store_kv *kv, const struct store_kv_ckpt *c, void *buf,
                           struct ctx_err *e);
/* Read and verify bytes [0, c->stream_len[stream]) of a stream into buf. */
int store_kv_read_stream(struct store_kv *kv, const struct store_kv_ckpt *c, int stream, void *buf,
                         struct ctx_err *e);
/* The same for every stream k with bufs[k] != NULL (bufs[c->n_streams]), read and verified on several
 * threads; the error names the first failing segment in stream order, as separate reads would. */
int store_kv_read_streams(struct store_kv *kv, const struct store_kv_ckpt *c, void *const *bufs, struct ctx_err *e);

/* A new lineage that continues from checkpoint c: its streams start as c's (shared, not copied). */
int store_kv_fork(struct store_kv *kv, const struct store_kv_ckpt *c, int64_t *lineage,
                  struct ctx_err *e);

/* Drop a lineage, its checkpoints, its files and every lineage forked from it. */
int store_kv_drop(struct store_kv *kv, int64_t lineage, struct ctx_err *e);

/* Evict least-recently-used lineages (with their descendants) until the data takes at most
 * `budget` bytes; `keep` (0: none) is never evicted, nor its ancestors. *freed gets the bytes
 * removed. */
int store_kv_evict(struct store_kv *kv, uint64_t budget, int64_t keep, uint64_t *freed,
                   struct ctx_err *e);

struct store_kv_stats {
    uint64_t lineages, checkpoints, bytes, hits, misses;
};
int store_kv_stats(struct store_kv *kv, struct store_kv_stats *st, struct ctx_err *e);
/* Remove everything. */
int store_kv_clear(struct store_kv *kv, struct ctx_err *e);

#endif
