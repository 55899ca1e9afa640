/* The accelerator binding; see accel.h. One state at a time lives on the device; `gen` counts
 * uploads, so a device mark is usable only while the device has held the same state since the mark
 * was taken (same gen, same bound state).
 *
 * The resident: what the device still holds of a state after it left. While bound, a state writes
 * on the device the entries [0, up_n[l]) of its upload and every entry its forwards append, up to
 * the furthest position it reached (hw_pos) — rewinds do not take those back. When it leaves, that
 * extent is added to the resident's clobbered counts; and when it left synced (its host copy equal
 * to the device up to its counts), it may become the resident itself. */
#include "accel.h"
#include "accel_state.h"
#include "kvpack.h"
#include "pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

#define ACC_MAXL (INF_MAX_LAYERS + 8) /* backbone + MTP layers, as inf_config's compress_ratios */

struct inf_accel {
    struct inf_accel_ops ops;
    void *ud;
    struct inf_state *bound; /* the state on the device, or NULL */
    int dirty;               /* bound's host arrays lag behind the device */
    unsigned long long gen;  /* uploads so far */
    long long live_marks;
    struct inf_accel_stats st;
    /* the bound state's extent on the device: its counts when uploaded, its furthest position */
    long long up_n[ACC_MAXL];
    long long hw_pos;
    /* The resident, or NULL. Only compared with states being bound, never dereferenced: it may
     * have been freed since (a state allocated in its place has another host generation). */
    const struct inf_state *res;
    unsigned long long res_gen; /* its host generation when it left */
    int res_layers;
    long long res_n[ACC_MAXL];  /* its entry counts when it left */
    long long clob[ACC_MAXL];   /* leading entries of each layer written by other states since */
    struct host_fill *fill;     /* a background fill of the bound state's host copy, or NULL */
    unsigned long long epoch;   /* device calls so far (inf_accel_epoch) */
};

/* inf_accel_fill_host's job: backbone layer l's entries [0, n[l]) unpacked from the packed streams
 * into st's host arrays (reserved before the thread starts, so nothing moves them meanwhile), by a
 * thread that spreads the work over a pool; n_cache is set when it is joined (the host copy counts
 * only what is finished). `stop` ends it early when st is being dropped. */
struct host_fill {
    struct inf_state *st;
    void **streams;
    int n_streams;
    long long n[ACC_MAXL];
    pthread_t th;
    atomic_int stop; /* 1: stopped by the owner, 2: the thread gave up (out of memory) */
};

struct inf_accel *inf_accel_new(const struct inf_accel_ops *ops, void *ud)
{
    struct inf_accel *a = calloc(1, sizeof *a);
    if (!a)
        return NULL;
    a->ops = *ops;
    a->ud = ud;
    return a;
}

static void fill_settle(struct inf_accel *a, int keep);

void inf_accel_free(struct inf_accel *a)
{
    if (!a)
        return;
    fill_settle(a, 0);
    if (a->bound)
        a->bound->accel = NULL;
    if (a->ops.destroy)
        a->ops.destroy(a->ud);
    free(a);
}

const char *inf_accel_name(const struct inf_accel *a) { return a->ops.name; }
void *inf_accel_ud(const struct inf_accel *a) { return a->ud; }

void inf_accel_stats(const struct inf_accel *a, struct inf_accel_stats *out) { *out = a->st; }

int inf_state_sync(struct inf_state *st, struct ctx_err *e)
{
    struct inf_accel *a = st->accel;
    if (!a || a->bound != st || !a->dirty)
        return 0;
    fill_settle(a, 1); /* the host's prefix first: then only the device's newer entries cross */
    int rc = a->ops.download_tail(a->ud, st, e);
    if (rc)
        return ctx_err_prefix(e, "accelerator %s: bringing the state's host copy up to date: ", a->ops.name);
    a->dirty = 0;
    a->st.downloads++;
    return 0;
}

/* How a bound state leaves the device. */
enum leave_how {
    LEAVE_SYNCED,  /* its host copy was just brought up to date: equal to the device up to its counts */
    LEAVE_DROPPED, /* its host copy is about to change (reset, restore, free, a host truncate) */
    LEAVE_LOST,    /* a device call failed: nothing the device holds is known any more */
};

/* Compressed entries a state's layer l holds, weighted by their floats (what an upload costs). */
static long long entry_floats(const struct inf_state *st, int l)
{
    return st->cfg.head_dim + (st->layers[l].ratio == 4 ? st->cfg.index_head_dim : 0);
}

/* a->bound leaves the device; next (or NULL) is the state about to be bound. */
static void leave(struct inf_accel *a, const struct inf_state *next, enum leave_how how)
{
    struct inf_state *x = a->bound;
    a->bound = NULL;
    a->dirty = 0;
    if (how == LEAVE_LOST || x->n_layers > ACC_MAXL) {
        a->res = NULL;
        return;
    }
    /* what x wrote on the device: the entries of its upload and those of every position it reached */
    long long hw[ACC_MAXL];
    for (int l = 0; l < x->n_layers; l++) {
        int r = x->layers[l].ratio;
        long long grown = r && l < x->cfg.num_hidden_layers ? a->hw_pos / r : 0;
        hw[l] = a->up_n[l] > grown ? a->up_n[l] : grown;
    }
    if (a->res) {
        if (a->res_layers != x->n_layers) { /* another model's state: nothing to compare */
            a->res = NULL;
        } else {
            for (int l = 0; l < x->n_layers; l++)
                if (hw[l] > a->clob[l])
                    a->clob[l] = hw[l];
        }
    }
    if (how != LEAVE_SYNCED || (a->res && a->res == next))
        return;
    /* x becomes the resident when a later bind of it would keep more than the current one's */
    long long keep_x = 0, keep_r = -1;
    for (int l = 0; l < x->n_layers; l++)
        keep_x += x->layers[l].n_cache * entry_floats(x, l);
    if (a->res) {
        keep_r = 0;
        for (int l = 0; l < x->n_layers; l++)
            if (a->res_n[l] > a->clob[l])
                keep_r += (a->res_n[l] - a->clob[l]) * entry_floats(x, l);
    }
    if (keep_x > 0 && keep_x >= keep_r) {
        a->res = x;
        a->res_gen = x->host_gen;
        a->res_layers = x->n_layers;
        for (int l = 0; l < x->n_layers; l++) {
            a->res_n[l] = x->layers[l].n_cache;
            a->clob[l] = 0;
        }
    }
}

/* The device lets go of st (nothing copied back). */
static void drop(struct inf_state *st, const struct inf_state *next, enum leave_how how)
{
    struct inf_accel *a = st->accel;
    if (a && a->bound == st) {
        fill_settle(a, how == LEAVE_SYNCED); /* (after a sync there is none left) */
        leave(a, next, how);
    }
    st->accel = NULL;
}

/* After a failed device call on the bound st: keep what the host copy can still read back, and make
 * the next forward upload it again (inf_accel_forward's recovery). */
static void lost(struct inf_accel *a, struct inf_state *st)
{
    struct ctx_err de = {0};
    fill_settle(a, 1); /* the download writes the host arrays a background fill may be writing */
    if (a->ops.download_tail(a->ud, st, &de) == 0)
        a->st.downloads++;
    drop(st, NULL, LEAVE_LOST);
}

int inf_state_unbind(struct inf_state *st, struct ctx_err *e)
{
    int rc = inf_state_sync(st, e);
    if (!rc)
        drop(st, NULL, LEAVE_SYNCED);
    return rc;
}

/* Whether st is the resident with its entries still valid on the device; if so, upto[l] = the
 * leading entries of each layer that must be sent again, and the entries sent and kept in total.
 * Only a host copy unchanged since it left but for truncation qualifies (counts at most those it
 * left with, the same host generation); a bind that would keep nothing is a plain upload. */
static int partial_plan(const struct inf_accel *a, const struct inf_state *st, long long *upto, long long *sent,
                        long long *kept)
{
    *sent = *kept = 0;
    if (!a->ops.upload_prefix || !a->res || a->res != st || st->host_gen != a->res_gen ||
        st->n_layers != a->res_layers)
        return 0;
    for (int l = 0; l < st->n_layers; l++) {
        long long n = st->layers[l].n_cache;
        if (n > a->res_n[l])
            return 0;
        upto[l] = a->clob[l] < n ? a->clob[l] : n;
        *sent += upto[l];
        *kept += n - upto[l];
    }
    return *kept > 0;
}

static int bind(struct inf_accel *a, struct inf_state *st, struct ctx_err *e)
{
    if (a->bound == st)
        return 0;
    if (a->bound) {
        struct inf_state *x = a->bound;
        int rc = inf_state_sync(x, e);
        if (rc)
            return rc;
        drop(x, st, LEAVE_SYNCED);
    }
    if (st->accel) /* bound to another accelerator: its device copy is left behind */
        if (inf_state_unbind(st, e))
            return e->code;
    if (st->n_layers > ACC_MAXL)
        return ctx_err_set(e, CTX_EINVAL, "accelerator %s: a state of %d layers (at most %d)", a->ops.name,
                           st->n_layers, ACC_MAXL);
    a->gen++; /* every mark taken before is of another device state now */
    long long upto[ACC_MAXL], sent, kept;
    int partial = partial_plan(a, st, upto, &sent, &kept);
    int rc = partial ? a->ops.upload_prefix(a->ud, st, upto, e) : a->ops.upload(a->ud, st, e);
    if (rc) {
        a->res = NULL; /* the device holds part of an upload */
        return ctx_err_prefix(e, "accelerator %s: uploading the state at position %lld: ", a->ops.name, st->pos);
    }
    a->st.uploads++;
    a->epoch++;
    if (partial) {
        a->st.partial_uploads++;
        a->st.partial_entries += sent;
        a->st.kept_entries += kept;
    }
    if (a->res == st)
        a->res = NULL; /* bound now; a resident again when it leaves */
    for (int l = 0; l < st->n_layers; l++)
        a->up_n[l] = st->layers[l].n_cache;
    a->hw_pos = st->pos;
    a->bound = st;
    a->dirty = 0;
    st->accel = a;
    return 0;
}

/* A device forward of n positions of the bound st went through. */
static void advanced(struct inf_accel *a, struct inf_state *st, int n)
{
    st->pos += n;
    if (st->pos > a->hw_pos)
        a->hw_pos = st->pos;
    a->st.forwards++;
}

int inf_accel_forward(struct inf_accel *a, struct inf_state *st, const int *tokens, int S, float *logits,
                      struct ctx_err *e)
{
    int rc = bind(a, st, e);
    int step = a->ops.max_chunk > 0 ? a->ops.max_chunk : S;
    for (int off = 0; !rc && off < S; off += step) {
        int n = S - off < step ? S - off : step;
        a->dirty = 1;
        a->epoch++;
        rc = a->ops.forward(a->ud, tokens + off, n, off + n == S ? logits : NULL, e);
        if (rc)
            ctx_err_prefix(e, "accelerator %s: forward of %d tokens at position %lld: ", a->ops.name, n, st->pos);
        else
            advanced(a, st, n);
    }
    if (rc && a->bound == st)
        lost(a, st); /* the device state is whatever the failed call left */
    return rc;
}

int inf_accel_can_spec(const struct inf_accel *a)
{
    return a && a->ops.spec_forward && a->ops.spec_drop && a->ops.spec_draft;
}

unsigned long long inf_accel_epoch(const struct inf_accel *a) { return a->epoch; }

int inf_accel_spec_forward(struct inf_accel *a, struct inf_state *st, const int *tokens, float *logits0,
                           float *logits1, struct ctx_err *e)
{
    if (!inf_accel_can_spec(a))
        return ctx_err_set(e, CTX_EUNSUPPORTED, "accelerator %s: no speculative steps", a->ops.name);
    int rc = bind(a, st, e);
    if (rc)
        return rc;
    a->dirty = 1;
    a->epoch++;
    if ((rc = a->ops.spec_forward(a->ud, tokens, logits0, logits1, e))) {
        ctx_err_prefix(e, "accelerator %s: speculative forward at position %lld: ", a->ops.name, st->pos);
        if (a->bound == st)
            lost(a, st);
        return rc;
    }
    advanced(a, st, 2);
    return 0;
}

int inf_accel_spec_drop(struct inf_accel *a, struct inf_state *st, struct ctx_err *e)
{
    if (!inf_accel_can_spec(a) || a->bound != st)
        return ctx_err_set(e, CTX_EINVAL, "accelerator: dropping a draft of a state that is not on the device");
    a->epoch++;
    int rc = a->ops.spec_drop(a->ud, e);
    if (rc) {
        ctx_err_prefix(e, "accelerator %s: dropping the draft at position %lld: ", a->ops.name, st->pos - 1);
        lost(a, st);
        return rc;
    }
    st->pos--;
    return 0;
}

int inf_accel_spec_draft(struct inf_accel *a, struct inf_state *st, int row0, const int *next, int S, int *draft,
                         struct ctx_err *e)
{
    if (!inf_accel_can_spec(a) || a->bound != st)
        return ctx_err_set(e, CTX_EINVAL, "accelerator: a draft for a state that is not on the device");
    a->epoch++;
    int rc = a->ops.spec_draft(a->ud, row0, next, S, draft, e);
    return rc ? ctx_err_prefix(e, "accelerator %s: MTP draft: ", a->ops.name) : 0;
}

int inf_accel_can_restore_packed(const struct inf_accel *a) { return a && a->ops.upload_packed; }

void *inf_accel_host_alloc(struct inf_accel *a, size_t bytes)
{
    if (!bytes)
        bytes = 1;
    return a->ops.host_alloc ? a->ops.host_alloc(a->ud, bytes) : malloc(bytes);
}

void inf_accel_host_free(struct inf_accel *a, void *p)
{
    if (!p)
        return;
    if (a->ops.host_alloc && a->ops.host_free)
        a->ops.host_free(a->ud, p);
    else
        free(p);
}

/* The MTP layers' entries (not the device's: accel.h) unpacked into st's host copy. */
static int unpack_mtp(struct inf_state *st, const long long *counts, const void *const *streams, struct ctx_err *e)
{
    const struct inf_config *c = &st->cfg;
    size_t eb = inf_kvpack_entry_bytes(c), ib = inf_kvpack_ikey_bytes(c);
    size_t hd = (size_t)c->head_dim, di = (size_t)c->index_head_dim;
    for (int l = c->num_hidden_layers; l < st->n_layers; l++) {
        struct inf_layer_state *L = &st->layers[l];
        long long n = counts[l];
        L->n_cache = 0;
        int rc = n ? inf_state_reserve(st, l, n, e) : 0;
        if (rc)
            return rc;
        const uint8_t *p = streams[2 * l], *q = streams[2 * l + 1];
        for (long long i = 0; i < n; i++) {
            inf_kvunpack_entry(c, p + (size_t)i * eb, L->cache + (size_t)i * hd);
            if (L->ratio == 4)
                inf_kvunpack_ikey(c, q + (size_t)i * ib, L->icache + (size_t)i * di);
        }
        L->n_cache = n;
    }
    return 0;
}

int inf_accel_restore_packed(struct inf_accel *a, struct inf_state *st, const long long *counts,
                             const void *const *streams, struct ctx_err *e)
{
    if (!a->ops.upload_packed)
        return ctx_err_set(e, CTX_EUNSUPPORTED, "accelerator %s: no packed restore", a->ops.name);
    if (st->n_layers > ACC_MAXL)
        return ctx_err_set(e, CTX_EINVAL, "accelerator %s: a state of %d layers (at most %d)", a->ops.name,
                           st->n_layers, ACC_MAXL);
    /* The checks upload would make on the host copy's counts, on the streams' instead: a wrong count
     * must not become a bound state (download_tail would take the device's counts as the truth). */
    for (int l = 0; l < st->n_layers; l++) {
        int r = st->layers[l].ratio, mtp = l >= st->cfg.num_hidden_layers;
        long long want = r ? st->pos / r : 0;
        if (mtp ? counts[l] < 0 || (!r && counts[l]) : counts[l] != want)
            return ctx_err_set(e, CTX_EINVAL,
                               "accelerator %s: packed restore: layer %d has %lld entries, %s %lld", a->ops.name, l,
                               counts[l], mtp ? "an MTP layer of ratio" : "its position needs", mtp ? r : want);
    }
    if (!streams)
        return ctx_err_set(e, CTX_EINVAL, "accelerator %s: packed restore without streams", a->ops.name);
    if (a->bound) {
        struct inf_state *x = a->bound;
        if (x != st) {
            int rc = inf_state_sync(x, e);
            if (rc)
                return rc;
        }
        drop(x, NULL, x == st ? LEAVE_DROPPED : LEAVE_SYNCED); /* x may become the resident */
    }
    if (st->accel) /* bound to another accelerator, its host copy being replaced: nothing to keep */
        drop(st, NULL, LEAVE_DROPPED);
    int rc = unpack_mtp(st, counts, streams, e);
    if (rc)
        return rc;
    a->gen++; /* every mark taken before is of another device state now */
    a->epoch++;
    rc = a->ops.upload_packed(a->ud, st, counts, streams, e);
    if (rc) {
        a->res = NULL; /* the device holds part of an upload */
        return ctx_err_prefix(e, "accelerator %s: packed restore of the state at position %lld: ", a->ops.name,
                              st->pos);
    }
    a->st.uploads++;
    a->st.packed_uploads++;
    if (a->res == st)
        a->res = NULL;
    for (int l = 0; l < st->n_layers; l++) {
        a->up_n[l] = counts[l];
        if (l < st->cfg.num_hidden_layers)
            st->layers[l].n_cache = 0; /* the host's prefix: download_tail fetches the rest */
    }
    a->hw_pos = st->pos;
    a->bound = st;
    a->dirty = 1;
    st->accel = a;
    return 0;
}

/* ---- the background fill of a packed restore's host copy ---- */

#define FILL_PIECE 4096 /* entries per piece of work */

struct fill_piece {
    int layer, ikey;
    long long from, to;
};
struct fill_run {
    struct host_fill *f;
    struct fill_piece *pc;
};

static void fill_one(void *ud, size_t i, int tid)
{
    (void)tid;
    struct fill_run *r = ud;
    const struct fill_piece *p = &r->pc[i];
    struct host_fill *f = r->f;
    if (atomic_load_explicit(&f->stop, memory_order_relaxed))
        return;
    const struct inf_config *c = &f->st->cfg;
    struct inf_layer_state *L = &f->st->layers[p->layer];
    size_t bytes = p->ikey ? inf_kvpack_ikey_bytes(c) : inf_kvpack_entry_bytes(c);
    size_t w = (size_t)(p->ikey ? c->index_head_dim : c->head_dim);
    const uint8_t *src = f->streams[2 * p->layer + p->ikey];
    for (long long k = p->from; k < p->to; k++) {
        if (p->ikey)
            inf_kvunpack_ikey(c, src + (size_t)k * bytes, L->icache + (size_t)k * w);
        else
            inf_kvunpack_entry(c, src + (size_t)k * bytes, L->cache + (size_t)k * w);
    }
}

static void *fill_main(void *ud)
{
    struct host_fill *f = ud;
    const struct inf_state *st = f->st;
    size_t np = 0;
    for (int l = 0; l < st->cfg.num_hidden_layers; l++)
        np += (size_t)((f->n[l] + FILL_PIECE - 1) / FILL_PIECE) * (st->layers[l].ratio == 4 ? 2 : 1);
    struct fill_piece *pc = np ? malloc(np * sizeof *pc) : NULL;
    if (np && !pc) {
        atomic_store(&f->stop, 2); /* nothing written: the join leaves the host copy empty (a sync fetches it all) */
        return NULL;
    }
    np = 0;
    for (int l = 0; l < st->cfg.num_hidden_layers; l++)
        for (int k = 0; k < (st->layers[l].ratio == 4 ? 2 : 1); k++)
            for (long long i = 0; i < f->n[l]; i += FILL_PIECE)
                pc[np++] = (struct fill_piece){l, k, i, i + FILL_PIECE < f->n[l] ? i + FILL_PIECE : f->n[l]};
    int nt = ctx_cpu_count();
    struct ctx_err pe = {0};
    struct ctx_pool *pool = ctx_pool_new(nt > 8 ? 8 : nt, &pe);
    struct fill_run r = {f, pc};
    if (pool)
        ctx_pool_for(pool, np, 1, fill_one, &r);
    else
        for (size_t i = 0; i < np; i++)
            fill_one(&r, i, 0);
    ctx_pool_free(pool);
    free(pc);
    return NULL;
}

/* Join a's fill, if any: with keep, the finished entries become the host copy's (n_cache); without,
 * the state is being dropped and the fill is stopped early and discarded. The streams are freed. */
static void fill_settle(struct inf_accel *a, int keep)
{
    struct host_fill *f = a->fill;
    if (!f)
        return;
    if (!keep)
        atomic_store(&f->stop, 1);
    pthread_join(f->th, NULL);
    a->fill = NULL;
    if (keep && !atomic_load(&f->stop)) {
        for (int l = 0; l < f->st->cfg.num_hidden_layers; l++)
            f->st->layers[l].n_cache = f->n[l];
        a->st.host_fills++;
    }
    for (int k = 0; k < f->n_streams; k++)
        inf_accel_host_free(a, f->streams[k]);
    free(f->streams);
    free(f);
}

int inf_accel_fill_host(struct inf_accel *a, struct inf_state *st, const long long *counts, void **streams,
                        int n_streams, struct ctx_err *e)
{
    int rc = 0;
    struct host_fill *f = NULL;
    if (a->fill || a->bound != st || !a->dirty || st->n_layers > ACC_MAXL || n_streams < 2 * st->cfg.num_hidden_layers)
        rc = ctx_err_set(e, CTX_EINVAL, "accelerator %s: fill of a host copy that is not the one just restored packed",
                         a->ops.name);
    for (int l = 0; !rc && l < st->cfg.num_hidden_layers; l++)
        if (st->layers[l].n_cache != 0 || counts[l] != a->up_n[l])
            rc = ctx_err_set(e, CTX_EINVAL, "accelerator %s: fill of layer %d: %lld entries, the device holds %lld",
                             a->ops.name, l, counts[l], a->up_n[l]);
    if (!rc && !(f = calloc(1, sizeof *f)))
        rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
    /* room for every entry now, on this thread: the fill only writes into it */
    for (int l = 0; !rc && l < st->cfg.num_hidden_layers; l++)
        if (counts[l] && (rc = inf_state_reserve(st, l, counts[l], e)) == 0)
            f->n[l] = counts[l];
    if (!rc && !(f->streams = malloc((size_t)n_streams * sizeof *f->streams)))
        rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
    if (!rc) {
        for (int k = 0; k < n_streams; k++)
            f->streams[k] = streams[k];
        f->n_streams = n_streams;
        f->st = st;
        if (pthread_create(&f->th, NULL, fill_main, f) != 0)
            rc = ctx_err_set(e, CTX_EIO, "accelerator %s: the host fill's thread did not start", a->ops.name);
        else
            a->fill = f;
    }
    if (rc) {
        if (f)
            free(f->streams);
        free(f);
        for (int k = 0; k < n_streams; k++)
            inf_accel_host_free(a, streams[k]);
    }
    return rc;
}

void inf_accel_settle_hook(struct inf_state *st)
{
    struct inf_accel *a = st->accel;
    if (a && a->bound == st)
        fill_settle(a, 1);
}

/* ---- the hooks of state.c ---- */

int inf_accel_snapshot_hook(struct inf_state *st, struct inf_accel **acc, void **mark, unsigned long long *gen,
                            int *lagging, struct ctx_err *e)
{
    *acc = NULL;
    *mark = NULL;
    *gen = 0;
    *lagging = 0;
    struct inf_accel *a = st->accel;
    if (!a || a->bound != st)
        return 0;
    /* A snapshot needs the boundary, not the entries (state.h: the caches are append-only): a dirty
     * state (after a packed restore: every entry missing) keeps lagging, and the caller takes the
     * boundary from the device. Whoever later needs the host's entries syncs (a checkpoint, a switch,
     * a host truncate to this snapshot: inf_accel_truncate_hook). */
    if (a->dirty && a->ops.download_boundary) {
        *lagging = 1;
    } else {
        int rc = inf_state_sync(st, e);
        if (rc)
            return rc;
    }
    /* without a mark the snapshot still works, through the host copy */
    struct ctx_err me = {0};
    if (a->ops.mark(a->ud, mark, &me)) {
        *mark = NULL;
        return 0;
    }
    *acc = a;
    *gen = a->gen;
    a->live_marks++;
    return 0;
}

int inf_accel_boundary_hook(struct inf_state *st, struct inf_state *view, struct ctx_err *e)
{
    struct inf_accel *a = st->accel;
    if (!a || a->bound != st || !a->ops.download_boundary)
        return ctx_err_set(e, CTX_EINVAL, "state: boundary download of a state not on an accelerator");
    if (a->ops.download_boundary(a->ud, view, e))
        return ctx_err_prefix(e, "accelerator %s: the boundary of the state at position %lld for a snapshot: ",
                              a->ops.name, st->pos);
    if (view->pos != st->pos) /* the rules keep them equal: a device that says otherwise is not this state */
        return ctx_err_set(e, CTX_EIO, "accelerator %s: the device is at position %lld, its state at %lld",
                           a->ops.name, view->pos, st->pos);
    a->st.boundary_downloads++;
    return 0;
}

void inf_accel_mark_release(struct inf_accel *a, void *mark)
{
    if (!a || !mark)
        return;
    a->ops.mark_free(a->ud, mark);
    a->live_marks--;
}

int inf_accel_truncate_hook(struct inf_state *st, struct inf_accel *acc, const void *mark, unsigned long long gen,
                            int lacks, int *device_done, struct ctx_err *e)
{
    *device_done = 0;
    struct inf_accel *a = st->accel;
    if (!a || a->bound != st)
        return 0;
    if (acc == a && mark && gen == a->gen) {
        struct ctx_err re = {0};
        a->epoch++;
        if (a->ops.rewind(a->ud, mark, &re) == 0) {
            /* the caller truncates the host copy to the same snapshot: to its counts where it holds
             * them, else to what it has, the device keeping the rest (dirty) */
            a->dirty = lacks;
            a->st.rewinds++;
            *device_done = 1;
            return 0;
        }
        /* refused (the device went back behind the mark since, say) or failed: the host copy below
         * is the state either way (a rewind writes no entries: those a sync fetches are still right) */
    }
    /* The device no longer holds the state the snapshot was taken from: the host copy is truncated
     * (after fetching the entries it lacks) and uploaded at the next forward. */
    if (lacks) {
        int rc = inf_state_sync(st, e);
        if (rc)
            return rc;
    }
    drop(st, NULL, LEAVE_DROPPED);
    a->st.host_truncates++;
    return 0;
}

void inf_accel_forget_hook(struct inf_state *st) { drop(st, NULL, LEAVE_DROPPED); }

int inf_accel_state_lags(const struct inf_state *st)
{
    return st->accel && st->accel->bound == st && st->accel->dirty;
}
