/* An accelerator: a device that runs the whole forward pass and holds ONE sequence's state there
 * (the CUDA engine, kernels/cuda_accel.h). A model with an accelerator attached runs
 * inf_model_forward on it, so the code that drives the model (the daemon) stays the same for the
 * CPU and the GPU.
 *
 * The host `struct inf_state` stays the state's identity: the device holds at most one of them at
 * a time (the "bound" state), possibly ahead of its host copy ("dirty"). The rules, kept by
 * accel.c, model.c and state.c:
 *  - forward on a state that is not bound: the bound one (if dirty) is first brought up to date on
 *    the host (a download of what its host copy lacks), then the new one is uploaded and bound;
 *  - inf_state_snapshot of a bound state takes a device mark and, where the state is dirty, the
 *    snapshot's boundary (position, rings, carries) from the device through download_boundary: the
 *    host copy keeps lagging, no entry crosses (without the op, the host copy is brought up to date
 *    first, as for a sync); inf_state_truncate to such a snapshot rewinds the device and the host
 *    copy together (no transfer: the host copy keeps the entries it had up to the snapshot's counts,
 *    the state staying dirty where it had fewer), as long as the device has held that state ever
 *    since; otherwise the host copy is truncated, after a sync where it lacks entries the snapshot
 *    counts, and the device re-uploads it at the next forward;
 *  - whoever reads a state's host arrays (a KV-cache checkpoint) calls inf_state_sync first;
 *    inf_state_reset, a KV-cache restore into the host arrays and inf_state_free unbind it;
 *  - a forward with a hook or with streams wanted (tests, MTP) runs on the CPU after a sync.
 * Switches between a big state and a small one are cheap (an editor's completion on a fresh state
 * between two questions on a resident repository): the device keeps a state's entries after it
 * leaves, and other states overwrite only their own leading entries of each layer. So accel.c
 * remembers the last state that left the device synced (the "resident": the one that saves the
 * most, or the one being bound next) and, per layer, how many leading entries the states bound
 * since have written ("clobbered"). Binding the resident again uploads, through the optional
 * upload_prefix, only the rings, carries and position and entries [0, min(clobbered, count)) of
 * each layer — valid because compressed caches are append-only: the host copy may only have been
 * truncated meanwhile, which inf_state's host generation (state.h) tells apart from any other
 * change (a CPU forward, reset, restore: the full upload then). A failed device call forgets the
 * resident (the device holds nothing known any more).
 * A KV-cache checkpoint can go straight to the device (inf_accel_restore_packed, where the
 * accelerator offers upload_packed): its packed streams are uploaded and unpacked there, and the
 * state is bound with a host copy that holds the boundary (position, rings, carries) but none of the
 * backbone's compressed entries — dirty like any state ahead on its device, so the first sync (a
 * checkpoint, a switch to another state, a host truncate needing them) downloads every entry it
 * lacks through download_tail; a snapshot (ctxd's "ready" one) and a rewind to it do not. Such a
 * bind is a full upload for the resident bookkeeping. inf_accel_fill_host then refills the host copy
 * from the same streams in the background, so that the first sync fetches only the device's newer
 * entries.
 * Results on the device agree with the CPU engine within rounding, not bit for bit; on one device
 * they are deterministic, and a truncate-and-continue gives the same bits as never having left. */
#ifndef INF_ACCEL_H
#define INF_ACCEL_H

#include "err.h"
#include "state.h"

struct inf_accel_ops {
    const char *name;                 /* "cuda" */
    /* Feed tokens[0..S) (S <= max_chunk) at the device state's position; logits of the last one
     * into logits[vocab] when logits is not NULL. */
    int (*forward)(void *ud, const int *tokens, int S, float *logits, struct ctx_err *e);
    int max_chunk;
    /* The whole state, host -> device (the device's position becomes st->pos). */
    int (*upload)(void *ud, const struct inf_state *st, struct ctx_err *e);
    /* Optional (NULL: every bind is a full upload). The same, except that each layer l sends only
     * its entries [0, upto[l]) (upto[l] <= its count); those from upto[l] up to the count are
     * still on the device from an earlier binding of this state and are kept as they are. (So the
     * device's entries must change only through these ops: nothing else may write them meanwhile.) */
    int (*upload_prefix)(void *ud, const struct inf_state *st, const long long *upto, struct ctx_err *e);
    /* Device -> host; st already holds this sequence's prefix, so only what it lacks is copied
     * (new compressed entries, and the rings, carries and position). The prefix may be shorter than
     * st's position implies (after inf_accel_restore_packed, no entries at all): each layer gets
     * the entries from its own n_cache on. */
    int (*download_tail)(void *ud, struct inf_state *st, struct ctx_err *e);
    /* A mark of the device state (device memory), a rewind to it, its release (which must not need
     * the device state: marks may be freed in any order). */
    int (*mark)(void *ud, void **out, struct ctx_err *e);
    int (*rewind)(void *ud, const void *mark, struct ctx_err *e);
    void (*mark_free)(void *ud, void *mark);
    void (*destroy)(void *ud);
    /* Optional (NULL: inf_accel_restore_packed is not offered). A checkpoint as the KV cache stores
     * it, host -> device: st gives the position, rings and carries (its caches are not read),
     * counts[l] the compressed entries of each backbone layer l (st->pos / ratio), streams[2 l] and
     * streams[2 l + 1] their packed entries and indexer keys (inference/kvpack.h), unpacked on the
     * device to the bits the host's unpacking gives. MTP layers are not the op's (accel.c keeps them
     * on the host). */
    int (*upload_packed)(void *ud, const struct inf_state *st, const long long *counts, const void *const *streams,
                         struct ctx_err *e);
    /* Optional (NULL: malloc / free): host memory that the device reads fastest (pinned), for the
     * streams of upload_packed. NULL when it cannot be had. */
    void *(*host_alloc)(void *ud, size_t bytes);
    void (*host_free)(void *ud, void *p);
    /* Optional (NULL: a snapshot of a dirty state syncs it first). Device -> host, the part of the
     * device state that is not append-only: its position into st->pos and each backbone layer's ring
     * and carries into st's arrays; st's caches, counts and MTP layers are not touched, and st need
     * not be the bound state (state.c passes a state of the same config whose arrays are the
     * snapshot's). No compressed entry crosses. */
    int (*download_boundary)(void *ud, struct inf_state *st, struct ctx_err *e);
    /* Optional, all three or none (speculative decoding with the MTP block, inference/spec.h; NULL:
     * not offered). spec_forward: tokens[0..2) at the device state's position as one forward, the
     * logits of both positions into logits[2][vocab], the second position's undo record kept;
     * spec_drop: right after it, that second position undone (the device state exactly as after the
     * first token alone); spec_draft: the MTP block on rows [row0, row0 + S) of the last forward's
     * output streams with next[s] the token after each, the argmax of the last row's MTP logits into
     * *draft (the rows are gone after any other device call but spec_drop: CTX_EINVAL). The MTP's
     * own window is the device's, outside the state's transfers: stale entries cost acceptance only. */
    int (*spec_forward)(void *ud, const int *tokens, float *logits0, float *logits1, struct ctx_err *e);
    int (*spec_drop)(void *ud, struct ctx_err *e);
    int (*spec_draft)(void *ud, int row0, const int *next, int S, int *draft, struct ctx_err *e);
};

struct inf_accel;

/* Takes ownership of ud (ops->destroy at inf_accel_free). NULL on allocation failure. */
struct inf_accel *inf_accel_new(const struct inf_accel_ops *ops, void *ud);
/* After every state and snapshot that used it is freed. */
void inf_accel_free(struct inf_accel *a);
const char *inf_accel_name(const struct inf_accel *a);
/* The implementation's own object (the ud given to inf_accel_new). */
void *inf_accel_ud(const struct inf_accel *a);

/* Run one forward on the device for st (binding it first): what inf_model_forward does with an
 * accelerator attached. Chunks longer than max_chunk are split. */
int inf_accel_forward(struct inf_accel *a, struct inf_state *st, const int *tokens, int S, float *logits,
                      struct ctx_err *e);

/* Speculative decoding on the device (the spec ops; inference/spec.h drives them). Whether they are
 * offered (a NULL a: no); the two-token forward for st (binding it first; st->pos += 2); the drop of
 * its second position (st must be bound; st->pos -= 1); the MTP draft from the last forward's rows
 * (st must be bound). The epoch counts device calls (any op that can change the device state or the
 * last forward's rows): a caller that saw it unchanged since its own forward knows the rows are its. */
int inf_accel_can_spec(const struct inf_accel *a);
unsigned long long inf_accel_epoch(const struct inf_accel *a);
int inf_accel_spec_forward(struct inf_accel *a, struct inf_state *st, const int *tokens, float *logits0,
                           float *logits1, struct ctx_err *e);
int inf_accel_spec_drop(struct inf_accel *a, struct inf_state *st, struct ctx_err *e);
int inf_accel_spec_draft(struct inf_accel *a, struct inf_state *st, int row0, const int *next, int S, int *draft,
                         struct ctx_err *e);

/* Whether the accelerator takes checkpoints packed (ops->upload_packed): a NULL a does not. */
int inf_accel_can_restore_packed(const struct inf_accel *a);
/* Buffers for the packed streams: pinned host memory where the accelerator offers it, else malloc;
 * NULL when out of memory. Free them with inf_accel_host_free once the restore returned. */
void *inf_accel_host_alloc(struct inf_accel *a, size_t bytes);
void inf_accel_host_free(struct inf_accel *a, void *p);
/* Restore st on the device from a checkpoint's packed streams, as store_kv_state_read_packed leaves
 * them: st holds the checkpoint's boundary (position, rings, carries), counts[l] (st->n_layers
 * entries) and streams[2 l], streams[2 l + 1] each layer's packed entries and indexer keys. The
 * state bound before (if any) is synced and leaves; upload_packed sends the backbone's streams; the
 * MTP layers' are unpacked into st's host copy. Then st is bound, dirty, its backbone layers
 * holding no entries on the host (n_cache 0; inf_state_sync fetches them). Errors: CTX_EUNSUPPORTED
 * without upload_packed, CTX_EINVAL when counts do not fit st's position and layer kinds (nothing
 * changed); the op's error, prefixed (st then is not bound and still as the read left it: reset it
 * or restore it on the host). On any error st is not bound. */
int inf_accel_restore_packed(struct inf_accel *a, struct inf_state *st, const long long *counts,
                             const void *const *streams, struct ctx_err *e);
/* Right after a successful inf_accel_restore_packed(a, st, counts, streams): fill st's host copy
 * from the same streams on a background thread while the device serves, so that the first sync
 * downloads only what the device added since (otherwise: every entry, ~7 GB for a 500K-token V4-Flash
 * state, measured at 5-6 s into fresh pageable memory, where the unpack takes ~1 s on 8 threads and
 * overlaps the device's work). Takes ownership of streams[0 .. n_streams) (inf_accel_host_alloc'd;
 * freed when the fill ends, and on every error). Whatever needs st's host entries first waits for
 * the fill: inf_state_sync, a truncate, a switch to another state, a reset, restore or free of st (the
 * last three stop it early). A snapshot and forwards do not wait. Errors (CTX_EINVAL when st is not
 * the state just restored packed, CTX_ENOMEM, a thread that cannot start) change nothing: st stays
 * lagging and its first sync downloads every entry, as without the fill. */
int inf_accel_fill_host(struct inf_accel *a, struct inf_state *st, const long long *counts, void **streams,
                        int n_streams, struct ctx_err *e);

/* Bring st's host copy up to date (nothing to do when it is not bound or not dirty). */
int inf_state_sync(struct inf_state *st, struct ctx_err *e);
/* Sync, then let the device forget st (its next forward uploads it again). */
int inf_state_unbind(struct inf_state *st, struct ctx_err *e);

/* Counters for tests and status: uploads (full or partial), downloads (tail), device rewinds,
 * host-only truncates; of the uploads, the partial ones (the resident state bound again), the
 * compressed entries they sent (summed over layers) and those they found still on the device. */
struct inf_accel_stats {
    long long uploads, downloads, rewinds, host_truncates, forwards;
    long long partial_uploads, partial_entries, kept_entries;
    long long packed_uploads; /* of the uploads, the restores through inf_accel_restore_packed */
    long long boundary_downloads; /* snapshots of a dirty state through download_boundary (no entries) */
    long long host_fills;     /* inf_accel_fill_host runs that completed (their entries count as synced) */
};
void inf_accel_stats(const struct inf_accel *a, struct inf_accel_stats *out);

#endif
