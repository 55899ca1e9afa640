/* Sequence state of the V4 forward pass (spec §6.1): per layer the sliding-window ring of kv
 * entries, the compressed caches (CSA main + indexer keys, HCA) and the compressor carry (the
 * current block's raw projections and, for CSA, the previous block's overlap rows).
 *
 * Invariants: the state after feeding tokens in any split into chunks is bit-identical to feeding
 * them in one chunk; compressed caches are append-only, so a snapshot (position, rings, carries,
 * cache lengths) is enough to truncate back to it. Values are stored as float (bf16-exact where
 * the reference stores bf16; carries are fp32 as in the reference). */
#ifndef INF_STATE_H
#define INF_STATE_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "err.h"

struct inf_layer_state {
    int ratio;        /* 0, 4 (CSA) or 128 (HCA) */
    float *ring;      /* [window][head_dim]: entry of position p at slot p % window */
    /* main compressor: rows [coff*ratio][coff*head_dim] of kv and of score (+ape); CSA rows
     * 0..ratio-1 hold the previous block, ratio..2*ratio-1 the current one */
    float *c_kv, *c_sc;
    float *cache;     /* [n_cache][head_dim] compressed entries */
    long long n_cache, cap_cache;
    /* CSA indexer compressor (width index_head_dim) and its keys */
    float *ic_kv, *ic_sc;
    float *icache;    /* [n_cache][index_head_dim] */
};

struct inf_state {
    struct inf_config cfg;
    long long pos;    /* next position of the main model */
    long long mtp_pos;/* next position of the MTP blocks */
    int n_layers;     /* backbone + MTP */
    struct inf_layer_state *layers;
    /* The accelerator holding this state on its device, or NULL (inference/accel.h); while it is
     * set the host arrays may lag behind (pos never does; the backbone's n_cache may be below what
     * pos says: 0 after inf_accel_restore_packed, and a rewind to a snapshot keeps them as they
     * were): inf_state_sync before reading them. */
    struct inf_accel *accel;
    /* Changes whenever state.c lets the host arrays be written other than by truncation (reserve,
     * reset, restore; a fresh value per state from a process-wide counter), so the accelerator can
     * tell that this state's entries are still those it left on the device (accel.h). */
    unsigned long long host_gen;
};

int inf_state_new(const struct inf_config *c, struct inf_state **out, struct ctx_err *e);
void inf_state_free(struct inf_state *s);
/* Back to position 0 (empty caches), keeping the allocations. */
void inf_state_reset(struct inf_state *s);
/* Make room for n more compressed entries in layer l (called by the forward pass). */
int inf_state_reserve(struct inf_state *s, int l, long long n, struct ctx_err *e);

/* A snapshot at the current position: enough to truncate the same state back to it later. */
struct inf_snapshot;
/* A state bound to an accelerator has the device marked too, and its host copy brought up to date
 * unless it lags and the accelerator gives the boundary (position, rings, carries) from the device:
 * then the host copy keeps lagging (accel.h), hence not const. */
int inf_state_snapshot(struct inf_state *s, struct inf_snapshot **out, struct ctx_err *e);
long long inf_snapshot_pos(const struct inf_snapshot *sn);
void inf_snapshot_free(struct inf_snapshot *sn);
/* Return s to the snapshot (taken from s or from a state that shares its prefix); the snapshot
 * must not be ahead of s. Afterwards s is bit-identical to the state at the snapshot (a bound s
 * rewound on its device may keep a host copy lagging: accel.h). */
int inf_state_truncate(struct inf_state *s, const struct inf_snapshot *sn, struct ctx_err *e);

/* The whole state as bytes (little-endian host layout with a versioned header and the config's
 * shape fields, checked on load), and back. */
int inf_state_serialize(const struct inf_state *s, uint8_t **buf, size_t *len, struct ctx_err *e);
int inf_state_deserialize(const struct inf_config *c, const uint8_t *buf, size_t len, struct inf_state **out,
                          struct ctx_err *e);

/* The boundary of a state: everything except the append-only compressed caches (window rings,
 * compressor carries, positions, per-layer entry counts) — what a KV-cache checkpoint stores beside
 * the caches' bytes, which it keeps as one append-only stream per layer (cache, and for CSA layers
 * icache). */
int inf_state_boundary(const struct inf_state *s, uint8_t **buf, size_t *len, struct ctx_err *e);
/* Restore from a boundary. The caller has first put each layer's cache entries back (through
 * inf_state_reserve, filling cache/icache and setting n_cache); they must match the boundary's
 * counts. On error s is unchanged apart from what the caller loaded. */
int inf_state_restore_boundary(struct inf_state *s, const uint8_t *buf, size_t len, struct ctx_err *e);
/* The same for a state whose entries live elsewhere (a GPU restore uploads them from the KV cache's
 * packed streams): the boundary's entry counts must equal counts[layer] instead of the loaded ones,
 * and s's caches are left as they are (normally empty) — s then holds position, rings and carries
 * only, for cuda_engine_state_upload_packed; it is not a state to run the CPU engine on. */
int inf_state_restore_boundary_counts(struct inf_state *s, const uint8_t *buf, size_t len, const long long *counts,
                                      struct ctx_err *e);

#endif
