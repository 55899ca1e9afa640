/* Sequence state; see state.h. */
#include "state.h"
#include "accel_state.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* Host generations (state.h): process-wide, so a state allocated where a freed one was never
 * inherits its value. */
static atomic_ullong host_gens;
static void host_changed(struct inf_state *s) { s->host_gen = atomic_fetch_add(&host_gens, 1) + 1; }

static int coff_of(int ratio) { return ratio == 4 ? 2 : 1; }
static size_t ring_n(const struct inf_config *c) { return (size_t)c->sliding_window * c->head_dim; }
static size_t carry_n(const struct inf_config *c, int ratio)
{
    return ratio ? (size_t)coff_of(ratio) * ratio * coff_of(ratio) * c->head_dim : 0;
}
static size_t icarry_n(const struct inf_config *c, int ratio)
{
    return ratio == 4 ? (size_t)8 * 2 * c->index_head_dim : 0;
}

static void fill_carry(struct inf_layer_state *l, const struct inf_config *c)
{
    size_t n = carry_n(c, l->ratio), ni = icarry_n(c, l->ratio);
    for (size_t i = 0; i < n; i++) {
        l->c_kv[i] = 0.f;
        l->c_sc[i] = -INFINITY; /* empty slots weigh nothing in the softmax pooling */
    }
    for (size_t i = 0; i < ni; i++) {
        l->ic_kv[i] = 0.f;
        l->ic_sc[i] = -INFINITY;
    }
}

void inf_state_free(struct inf_state *s)
{
    if (!s)
        return;
    inf_accel_forget_hook(s);
    for (int i = 0; s->layers && i < s->n_layers; i++) {
        struct inf_layer_state *l = &s->layers[i];
        free(l->ring);
        free(l->c_kv);
        free(l->c_sc);
        free(l->ic_kv);
        free(l->ic_sc);
        free(l->cache);
        free(l->icache);
    }
    free(s->layers);
    free(s);
}

int inf_state_new(const struct inf_config *c, struct inf_state **out, struct ctx_err *e)
{
    *out = NULL;
    struct inf_state *s = calloc(1, sizeof *s);
    if (!s)
        return ctx_err_set(e, CTX_ENOMEM, "state: out of memory");
    s->cfg = *c;
    host_changed(s);
    s->n_layers = c->num_hidden_layers + c->num_nextn_predict_layers;
    s->layers = calloc((size_t)s->n_layers, sizeof *s->layers);
    if (!s->layers)
        goto oom;
    for (int i = 0; i < s->n_layers; i++) {
        struct inf_layer_state *l = &s->layers[i];
        l->ratio = c->compress_ratios[i];
        l->ring = calloc(ring_n(c), sizeof(float));
        if (!l->ring)
            goto oom;
        if (l->ratio) {
            l->c_kv = malloc(sizeof(float) * carry_n(c, l->ratio));
            l->c_sc = malloc(sizeof(float) * carry_n(c, l->ratio));
            if (!l->c_kv || !l->c_sc)
                goto oom;
        }
        if (l->ratio == 4) {
            l->ic_kv = malloc(sizeof(float) * icarry_n(c, 4));
            l->ic_sc = malloc(sizeof(float) * icarry_n(c, 4));
            if (!l->ic_kv || !l->ic_sc)
                goto oom;
        }
        fill_carry(l, c);
    }
    *out = s;
    return 0;
oom:
    inf_state_free(s);
    return ctx_err_set(e, CTX_ENOMEM, "state: out of memory");
}

void inf_state_reset(struct inf_state *s)
{
    inf_accel_forget_hook(s);
    host_changed(s);
    s->pos = s->mtp_pos = 0;
    for (int i = 0; i < s->n_layers; i++) {
        struct inf_layer_state *l = &s->layers[i];
        memset(l->ring, 0, sizeof(float) * ring_n(&s->cfg));
        fill_carry(l, &s->cfg);
        l->n_cache = 0;
    }
}

int inf_state_reserve(struct inf_state *s, int li, long long n, struct ctx_err *e)
{
    struct inf_layer_state *l = &s->layers[li];
    host_changed(s); /* whoever reserves writes entries (the CPU forward, a load): even with room */
    if (l->n_cache + n <= l->cap_cache)
        return 0;
    long long cap = l->cap_cache ? l->cap_cache : 64;
    while (cap < l->n_cache + n)
        cap *= 2;
    float *c = realloc(l->cache, sizeof(float) * (size_t)cap * s->cfg.head_dim);
    if (!c)
        return ctx_err_set(e, CTX_ENOMEM, "state: out of memory for %lld compressed entries", cap);
    l->cache = c;
    if (l->ratio == 4) {
        float *ic = realloc(l->icache, sizeof(float) * (size_t)cap * s->cfg.index_head_dim);
        if (!ic)
            return ctx_err_set(e, CTX_ENOMEM, "state: out of memory for %lld indexer keys", cap);
        l->icache = ic;
    }
    l->cap_cache = cap;
    return 0;
}

/* ---- snapshots ---- */

struct snap_layer {
    float *ring, *c_kv, *c_sc, *ic_kv, *ic_sc;
    long long n_cache;
};
struct inf_snapshot {
    long long pos, mtp_pos;
    int n_layers;
    struct snap_layer *L;
    /* taken from a state bound to an accelerator: the device's mark of the same point */
    struct inf_accel *acc;
    void *dmark;
    unsigned long long dgen;
};

/* A copy of p[n] (p NULL: room only). */
static float *dup_f(const float *p, size_t n, int *fail)
{
    if (!n)
        return NULL;
    float *q = malloc(sizeof(float) * n);
    if (!q) {
        *fail = 1;
        return NULL;
    }
    if (p)
        memcpy(q, p, sizeof(float) * n);
    return q;
}

void inf_snapshot_free(struct inf_snapshot *sn)
{
    if (!sn)
        return;
    inf_accel_mark_release(sn->acc, sn->dmark);
    for (int i = 0; sn->L && i < sn->n_layers; i++) {
        free(sn->L[i].ring);
        free(sn->L[i].c_kv);
        free(sn->L[i].c_sc);
        free(sn->L[i].ic_kv);
        free(sn->L[i].ic_sc);
    }
    free(sn->L);
    free(sn);
}

long long inf_snapshot_pos(const struct inf_snapshot *sn) { return sn->pos; }

/* The backbone layers' boundary of a state ahead on its accelerator, from the device, into the
 * snapshot's arrays (allocated, not filled): through a view, a state whose arrays are the snapshot's. */
static int snapshot_from_device(struct inf_state *s, struct inf_snapshot *sn, struct ctx_err *e)
{
    int nb = s->cfg.num_hidden_layers < s->n_layers ? s->cfg.num_hidden_layers : s->n_layers;
    struct inf_state v = {.cfg = s->cfg, .pos = s->pos, .mtp_pos = s->mtp_pos, .n_layers = s->n_layers};
    v.layers = calloc((size_t)s->n_layers, sizeof *v.layers);
    if (!v.layers)
        return ctx_err_set(e, CTX_ENOMEM, "state: out of memory for a snapshot");
    for (int i = 0; i < s->n_layers; i++) {
        struct inf_layer_state *l = &v.layers[i];
        const struct snap_layer *d = &sn->L[i];
        l->ratio = s->layers[i].ratio;
        l->ring = d->ring;
        l->c_kv = d->c_kv;
        l->c_sc = d->c_sc;
        l->ic_kv = d->ic_kv;
        l->ic_sc = d->ic_sc;
    }
    int rc = inf_accel_boundary_hook(s, &v, e);
    free(v.layers);
    if (rc)
        return rc;
    /* the device's counts: those of the position (append-only caches), whatever the host copy holds */
    for (int i = 0; i < nb; i++) {
        int r = s->layers[i].ratio;
        sn->L[i].n_cache = r ? s->pos / r : 0;
    }
    return 0;
}

int inf_state_snapshot(struct inf_state *s, struct inf_snapshot **out, struct ctx_err *e)
{
    *out = NULL;
    struct inf_accel *acc;
    void *dmark;
    unsigned long long dgen;
    int lagging;
    /* host copy synced first, unless it lags and the boundary comes from the device */
    int rc = inf_accel_snapshot_hook(s, &acc, &dmark, &dgen, &lagging, e);
    if (rc)
        return rc;
    struct inf_snapshot *sn = calloc(1, sizeof *sn);
    if (sn) {
        sn->acc = acc;
        sn->dmark = dmark;
        sn->dgen = dgen;
    } else {
        inf_accel_mark_release(acc, dmark);
    }
    int fail = !sn;
    if (sn) {
        sn->pos = s->pos;
        sn->mtp_pos = s->mtp_pos;
        sn->n_layers = s->n_layers;
        sn->L = calloc((size_t)s->n_layers, sizeof *sn->L);
        fail = !sn->L;
    }
    for (int i = 0; !fail && i < s->n_layers; i++) {
        const struct inf_layer_state *l = &s->layers[i];
        struct snap_layer *d = &sn->L[i];
        /* a lagging host copy's backbone arrays are stale: only room for the device's */
        const struct inf_config *c = &s->cfg;
        int dev = lagging && i < c->num_hidden_layers;
        d->ring = dup_f(dev ? NULL : l->ring, ring_n(c), &fail);
        d->c_kv = dup_f(dev ? NULL : l->c_kv, carry_n(c, l->ratio), &fail);
        d->c_sc = dup_f(dev ? NULL : l->c_sc, carry_n(c, l->ratio), &fail);
        d->ic_kv = dup_f(dev ? NULL : l->ic_kv, icarry_n(c, l->ratio), &fail);
        d->ic_sc = dup_f(dev ? NULL : l->ic_sc, icarry_n(c, l->ratio), &fail);
        d->n_cache = l->n_cache;
    }
    if (fail) {
        inf_snapshot_free(sn);
        return ctx_err_set(e, CTX_ENOMEM, "state: out of memory for a snapshot");
    }
    if (lagging && (rc = snapshot_from_device(s, sn, e))) {
        inf_snapshot_free(sn);
        return rc;
    }
    *out = sn;
    return 0;
}

int inf_state_truncate(struct inf_state *s, const struct inf_snapshot *sn, struct ctx_err *e)
{
    if (sn->n_layers != s->n_layers)
        return ctx_err_set(e, CTX_EINVAL, "state: snapshot of %d layers for a state of %d", sn->n_layers, s->n_layers);
    if (sn->pos > s->pos || sn->mtp_pos > s->mtp_pos)
        return ctx_err_set(e, CTX_EINVAL, "state: snapshot at position %lld is ahead of the state (%lld)", sn->pos,
                           s->pos);
    inf_accel_settle_hook(s); /* a background fill of the host copy (inf_accel_fill_host) finishes first */
    /* A host copy behind its device may lack entries the snapshot counts (after
     * inf_accel_restore_packed it holds none; a snapshot of it takes the device's counts): the device
     * has them, up to the state's position. A rewind keeps them there; otherwise the hook fetches
     * them before the device lets go. MTP layers never lag (the device does not hold them). */
    int lacks = 0;
    for (int i = 0; i < s->n_layers; i++)
        if (sn->L[i].n_cache > s->layers[i].n_cache) {
            if (i >= s->cfg.num_hidden_layers || !inf_accel_state_lags(s))
                return ctx_err_set(e, CTX_EINVAL, "state: snapshot layer %d has more entries than the state", i);
            lacks = 1;
        }
    int device_done;
    int rc = inf_accel_truncate_hook(s, sn->acc, sn->dmark, sn->dgen, lacks, &device_done, e);
    if (rc)
        return rc;
    for (int i = 0; lacks && !device_done && i < s->n_layers; i++)
        if (sn->L[i].n_cache > s->layers[i].n_cache) /* synced, and still short: not this sequence's */
            return ctx_err_set(e, CTX_EINVAL, "state: snapshot layer %d has more entries than the state", i);
    /* either way the host copy goes back to the snapshot: */
    for (int i = 0; i < s->n_layers; i++) {
        struct inf_layer_state *l = &s->layers[i];
        const struct snap_layer *d = &sn->L[i];
        memcpy(l->ring, d->ring, sizeof(float) * ring_n(&s->cfg));
        if (d->c_kv) {
            memcpy(l->c_kv, d->c_kv, sizeof(float) * carry_n(&s->cfg, l->ratio));
            memcpy(l->c_sc, d->c_sc, sizeof(float) * carry_n(&s->cfg, l->ratio));
        }
        if (d->ic_kv) {
            memcpy(l->ic_kv, d->ic_kv, sizeof(float) * icarry_n(&s->cfg, l->ratio));
            memcpy(l->ic_sc, d->ic_sc, sizeof(float) * icarry_n(&s->cfg, l->ratio));
        }
        /* the caches are append-only: the prefix is the snapshot's (after a rewind, a lagging host
         * copy keeps the fewer entries it has; the device the rest) */
        if (d->n_cache < l->n_cache)
            l->n_cache = d->n_cache;
    }
    s->pos = sn->pos;
    s->mtp_pos = sn->mtp_pos;
    return 0;
}

/* ---- serialisation ---- */

#define STATE_MAGIC 0x31535843u /* "CXS1" */

struct wbuf {
    uint8_t *p;
    size_t n, cap;
    int fail;
};
static void put(struct wbuf *b, const void *d, size_t n)
{
    if (b->fail || !n)
        return;
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n)
            cap *= 2;
        uint8_t *q = realloc(b->p, cap);
        if (!q) {
            b->fail = 1;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void put_i64(struct wbuf *b, long long v)
{
    int64_t x = v;
    put(b, &x, 8);
}

/* The shape fields a serialized state depends on. */
static void shape_of(const struct inf_config *c, int64_t *f, int *n)
{
    int k = 0;
    f[k++] = c->num_hidden_layers;
    f[k++] = c->num_nextn_predict_layers;
    f[k++] = c->head_dim;
    f[k++] = c->index_head_dim;
    f[k++] = c->sliding_window;
    for (int i = 0; i < c->num_hidden_layers + c->num_nextn_predict_layers; i++)
        f[k++] = c->compress_ratios[i];
    *n = k;
}

/* The header (magic, shape, positions) and each layer's count, ring and carries, then with `entries`
 * its compressed entries (and CSA indexer keys): inf_state_serialize writes them all, a boundary
 * (inf_state_boundary) everything but the append-only entries. `what` names the output in errors. */
static int write_state(const struct inf_state *s, uint32_t magic, int entries, const char *what, uint8_t **buf,
                       size_t *len, struct ctx_err *e)
{
    if (inf_accel_state_lags(s))
        return ctx_err_set(e, CTX_EINVAL, "state: its host copy lags behind the accelerator at position %lld "
                           "(inf_state_sync first)", s->pos);
    struct wbuf b = {0};
    int64_t shape[INF_MAX_LAYERS + 16];
    int ns;
    shape_of(&s->cfg, shape, &ns);
    put(&b, &magic, 4);
    put_i64(&b, ns);
    put(&b, shape, sizeof(int64_t) * (size_t)ns);
    put_i64(&b, s->pos);
    put_i64(&b, s->mtp_pos);
    for (int i = 0; i < s->n_layers; i++) {
        const struct inf_layer_state *l = &s->layers[i];
        put_i64(&b, l->n_cache);
        put(&b, l->ring, sizeof(float) * ring_n(&s->cfg));
        put(&b, l->c_kv, sizeof(float) * carry_n(&s->cfg, l->ratio));
        put(&b, l->c_sc, sizeof(float) * carry_n(&s->cfg, l->ratio));
        put(&b, l->ic_kv, sizeof(float) * icarry_n(&s->cfg, l->ratio));
        put(&b, l->ic_sc, sizeof(float) * icarry_n(&s->cfg, l->ratio));
        if (!entries)
            continue;
        put(&b, l->cache, sizeof(float) * (size_t)l->n_cache * s->cfg.head_dim);
        if (l->ratio == 4)
            put(&b, l->icache, sizeof(float) * (size_t)l->n_cache * s->cfg.index_head_dim);
    }
    if (b.fail) {
        free(b.p);
        return ctx_err_set(e, CTX_ENOMEM, "state: out of memory %s", what);
    }
    *buf = b.p;
    *len = b.n;
    return 0;
}

int inf_state_serialize(const struct inf_state *s, uint8_t **buf, size_t *len, struct ctx_err *e)
{
    return write_state(s, STATE_MAGIC, 1, "serializing", buf, len, e);
}

struct rbuf {
    const uint8_t *p;
    size_t n, off;
};
static int get(struct rbuf *b, void *d, size_t n)
{
    if (n > b->n - b->off)
        return -1;
    if (n)
        memcpy(d, b->p + b->off, n);
    b->off += n;
    return 0;
}

int inf_state_deserialize(const struct inf_config *c, const uint8_t *buf, size_t len, struct inf_state **out,
                          struct ctx_err *e)
{
    *out = NULL;
    struct rbuf b = {buf, len, 0};
    uint32_t magic;
    int64_t ns, shape[INF_MAX_LAYERS + 16], want[INF_MAX_LAYERS + 16];
    int nw;
    shape_of(c, want, &nw);
    if (get(&b, &magic, 4) || magic != STATE_MAGIC)
        return ctx_err_set(e, CTX_EFORMAT, "state: not a serialized state (bad magic)");
    if (get(&b, &ns, 8) || ns != nw || get(&b, shape, sizeof(int64_t) * (size_t)nw) ||
        memcmp(shape, want, sizeof(int64_t) * (size_t)nw))
        return ctx_err_set(e, CTX_EFORMAT, "state: serialized for a different model shape");
    struct inf_state *s;
    int rc = inf_state_new(c, &s, e);
    if (rc)
        return rc;
    int64_t pos, mpos;
    if (get(&b, &pos, 8) || get(&b, &mpos, 8) || pos < 0 || mpos < 0)
        goto bad;
    s->pos = pos;
    s->mtp_pos = mpos;
    for (int i = 0; i < s->n_layers; i++) {
        struct inf_layer_state *l = &s->layers[i];
        int64_t nc;
        if (get(&b, &nc, 8) || nc < 0 || (l->ratio ? nc > (pos > mpos ? pos : mpos) / l->ratio : nc != 0))
            goto bad;
        if (get(&b, l->ring, sizeof(float) * ring_n(c)) ||
            get(&b, l->c_kv, sizeof(float) * carry_n(c, l->ratio)) ||
            get(&b, l->c_sc, sizeof(float) * carry_n(c, l->ratio)) ||
            get(&b, l->ic_kv, sizeof(float) * icarry_n(c, l->ratio)) ||
            get(&b, l->ic_sc, sizeof(float) * icarry_n(c, l->ratio)))
            goto bad;
        if (nc) {
            /* the entries must be in the buffer before anything is allocated for them */
            size_t per = sizeof(float) * ((size_t)c->head_dim + (l->ratio == 4 ? (size_t)c->index_head_dim : 0));
            if ((size_t)nc > (len - b.off) / per)
                goto bad;
            if ((rc = inf_state_reserve(s, i, nc, e))) {
                inf_state_free(s);
                return rc;
            }
            if (get(&b, l->cache, sizeof(float) * (size_t)nc * c->head_dim) ||
                (l->ratio == 4 && get(&b, l->icache, sizeof(float) * (size_t)nc * c->index_head_dim)))
                goto bad;
        }
        l->n_cache = nc;
    }
    if (b.off != len)
        goto bad;
    *out = s;
    return 0;
bad:
    inf_state_free(s);
    return ctx_err_set(e, CTX_EFORMAT, "state: serialized state truncated or inconsistent at byte %zu", b.off);
}

/* ---- boundary (the resident KV cache's checkpoints) ---- */

#define BOUNDARY_MAGIC 0x31425843u /* "CXB1" */

int inf_state_boundary(const struct inf_state *s, uint8_t **buf, size_t *len, struct ctx_err *e)
{
    return write_state(s, BOUNDARY_MAGIC, 0, "writing a boundary", buf, len, e);
}

int inf_state_restore_boundary(struct inf_state *s, const uint8_t *buf, size_t len, struct ctx_err *e)
{
    return inf_state_restore_boundary_counts(s, buf, len, NULL, e);
}

int inf_state_restore_boundary_counts(struct inf_state *s, const uint8_t *buf, size_t len, const long long *counts,
                                      struct ctx_err *e)
{
    inf_accel_forget_hook(s); /* the host copy is being replaced */
    host_changed(s);
    struct rbuf b = {buf, len, 0};
    uint32_t magic;
    int64_t ns, shape[INF_MAX_LAYERS + 16], want[INF_MAX_LAYERS + 16], pos, mtp_pos;
    int nw;
    shape_of(&s->cfg, want, &nw);
    if (get(&b, &magic, 4) || magic != BOUNDARY_MAGIC)
        return ctx_err_set(e, CTX_EFORMAT, "state: not a state boundary (bad magic)");
    if (get(&b, &ns, 8) || ns != nw || get(&b, shape, sizeof(int64_t) * (size_t)nw) ||
        memcmp(shape, want, sizeof(int64_t) * (size_t)nw))
        return ctx_err_set(e, CTX_EFORMAT, "state: boundary of a different model shape");
    if (get(&b, &pos, 8) || get(&b, &mtp_pos, 8) || pos < 0 || mtp_pos < 0)
        return ctx_err_set(e, CTX_EFORMAT, "state: boundary truncated in its header");
    /* Check everything before changing anything. */
    size_t at = b.off;
    for (int i = 0; i < s->n_layers; i++) {
        const struct inf_layer_state *l = &s->layers[i];
        int64_t n;
        size_t body = sizeof(float) * (ring_n(&s->cfg) + 2 * carry_n(&s->cfg, l->ratio) +
                                        2 * icarry_n(&s->cfg, l->ratio));
        if (get(&b, &n, 8) || body > b.n - b.off)
            return ctx_err_set(e, CTX_EFORMAT, "state: boundary truncated at layer %d", i);
        long long have = counts ? counts[i] : l->n_cache;
        if (n != have)
            return ctx_err_set(e, CTX_EFORMAT,
                               "state: layer %d has %lld compressed entries loaded, the boundary says %lld", i, have,
                               (long long)n);
        b.off += body;
    }
    if (b.off != b.n)
        return ctx_err_set(e, CTX_EFORMAT, "state: %zu bytes after the boundary", b.n - b.off);
    b.off = at;
    for (int i = 0; i < s->n_layers; i++) {
        struct inf_layer_state *l = &s->layers[i];
        int64_t n;
        get(&b, &n, 8);
        get(&b, l->ring, sizeof(float) * ring_n(&s->cfg));
        get(&b, l->c_kv, sizeof(float) * carry_n(&s->cfg, l->ratio));
        get(&b, l->c_sc, sizeof(float) * carry_n(&s->cfg, l->ratio));
        get(&b, l->ic_kv, sizeof(float) * icarry_n(&s->cfg, l->ratio));
        get(&b, l->ic_sc, sizeof(float) * icarry_n(&s->cfg, l->ratio));
    }
    s->pos = pos;
    s->mtp_pos = mtp_pos;
    return 0;
}
