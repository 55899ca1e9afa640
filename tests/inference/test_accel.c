/* The accelerator binding (inference/accel.h) on the v4-tiny-a fixture. The "device" here is a
 * second CPU model with its own state (a test double for the device, so CI checks the binding's
 * bookkeeping; tests/kernels/test_accel.c runs the same rules on the CUDA engine): every forward,
 * snapshot, truncate, swap between states, reset and sync through the accelerator must give logits
 * and state bytes identical to the plain CPU model doing the same.
 *
 * Like a GPU, the double keeps its compressed entries across uploads (its state's entry arrays play
 * the device memory: an upload writes entries [0, count) and leaves those past the count as they
 * were), so a partial upload (upload_prefix: only [0, upto) sent) that keeps entries which are not
 * the bound state's gives other logits than the plain model; and it refuses to take as present an
 * entry it never received or computed. Its upload_packed unpacks a checkpoint's packed streams
 * (inference/kvpack.h) into that memory, as the CUDA engine does on its device; its download_tail
 * counts the entries it copies and its download_boundary copies only position, rings and carries, so
 * a snapshot of a state ahead of its host copy (after a packed restore, say) is seen to download no
 * entry; marks and rewinds can be made to fail (a device out of memory, a refused stale mark). */
#include "test_forward_common.h"

#include "accel.h"
#include "kvpack.h"

struct dbl {
    struct inf_model *m;     /* no accelerator: the device's engine */
    struct inf_state *dev;   /* the device state; its entry arrays are the device memory */
    long long written[INF_MAX_LAYERS + 8]; /* per layer, how far the device memory has ever been written */
    int fail_upload, fail_forward;
    long long tail_entries;  /* entries download_tail copied (what the host lacked) */
    long long sent_entries;  /* entries uploads copied to the device */
    long long host_live;     /* host_alloc'd buffers not yet freed */
    long long boundaries;    /* download_boundary calls */
    int fail_boundary, fail_rewind, fail_mark;
};

static void note_written(struct dbl *d)
{
    for (int l = 0; l < d->dev->n_layers; l++)
        if (d->dev->layers[l].n_cache > d->written[l])
            d->written[l] = d->dev->layers[l].n_cache;
}

static int dbl_forward(void *ud, const int *t, int S, float *logits, struct ctx_err *e)
{
    struct dbl *d = ud;
    if (d->fail_forward)
        return ctx_err_set(e, CTX_EIO, "device forward failed (test)");
    struct inf_forward_opts o = {.logits = logits};
    assert_true(S <= 64); /* max_chunk */
    int rc = inf_model_forward(d->m, d->dev, t, S, &o, e);
    note_written(d);
    return rc;
}

/* Host -> device: entries [0, upto[l]) of each layer (all of them when upto is NULL) into the
 * device memory, the rest of the count taken as present; rings, carries and positions all. */
static int dbl_put(struct dbl *d, const struct inf_state *st, const long long *upto, struct ctx_err *e)
{
    if (d->fail_upload)
        return ctx_err_set(e, CTX_EIO, "device upload failed (test)");
    struct inf_state *v = d->dev;
    long long counts[INF_MAX_LAYERS + 8];
    for (int l = 0; l < st->n_layers; l++) {
        long long n = st->layers[l].n_cache, k = upto ? upto[l] : n;
        if (k < 0 || k > n || (k < n && n > d->written[l]))
            return ctx_err_set(e, CTX_EINVAL, "layer %d: %lld entries sent of %lld, the device has %lld (test)", l,
                               k, n, d->written[l]);
        counts[l] = n;
    }
    uint8_t *b;
    size_t len;
    int rc = inf_state_boundary(st, &b, &len, e);
    if (rc)
        return rc;
    size_t hd = (size_t)st->cfg.head_dim, ih = (size_t)st->cfg.index_head_dim;
    for (int l = 0; l < st->n_layers && !rc; l++) {
        struct inf_layer_state *dl = &v->layers[l];
        const struct inf_layer_state *hl = &st->layers[l];
        long long k = upto ? upto[l] : counts[l];
        dl->n_cache = 0; /* room for the count, keeping what the memory holds (realloc) */
        rc = inf_state_reserve(v, l, counts[l], e);
        if (!rc && k) {
            memcpy(dl->cache, hl->cache, sizeof(float) * hd * (size_t)k);
            if (hl->ratio == 4)
                memcpy(dl->icache, hl->icache, sizeof(float) * ih * (size_t)k);
        }
        dl->n_cache = counts[l];
        d->sent_entries += k;
    }
    if (!rc)
        rc = inf_state_restore_boundary_counts(v, b, len, counts, e);
    free(b);
    note_written(d);
    return rc;
}
static int dbl_upload(void *ud, const struct inf_state *st, struct ctx_err *e) { return dbl_put(ud, st, NULL, e); }
static int dbl_upload_prefix(void *ud, const struct inf_state *st, const long long *upto, struct ctx_err *e)
{
    return dbl_put(ud, st, upto, e);
}

/* A checkpoint's packed streams into the device memory, unpacked with inference/kvpack.h (as the
 * CUDA engine does on its device), and st's position, rings and carries; st's own caches are not
 * read, except for the MTP layers (not the op's: accel.c unpacked them into st). */
static int dbl_upload_packed(void *ud, const struct inf_state *st, const long long *counts, const void *const *streams,
                             struct ctx_err *e)
{
    struct dbl *d = ud;
    if (d->fail_upload)
        return ctx_err_set(e, CTX_EIO, "device upload failed (test)");
    struct inf_state *v = d->dev;
    const struct inf_config *c = &st->cfg;
    size_t hd = (size_t)c->head_dim, ih = (size_t)c->index_head_dim;
    size_t eb = inf_kvpack_entry_bytes(c), ib = inf_kvpack_ikey_bytes(c), ring = (size_t)c->sliding_window * hd;
    for (int l = 0; l < st->n_layers; l++) {
        struct inf_layer_state *dl = &v->layers[l];
        const struct inf_layer_state *hl = &st->layers[l];
        int mtp = l >= c->num_hidden_layers, r = hl->ratio, coff = r == 4 ? 2 : 1;
        long long n = mtp ? hl->n_cache : counts[l];
        dl->n_cache = 0;
        int rc = inf_state_reserve(v, l, n, e);
        if (rc)
            return rc;
        for (long long i = 0; i < n; i++) {
            if (mtp) {
                memcpy(dl->cache + (size_t)i * hd, hl->cache + (size_t)i * hd, sizeof(float) * hd);
            } else {
                inf_kvunpack_entry(c, (const uint8_t *)streams[2 * l] + (size_t)i * eb, dl->cache + (size_t)i * hd);
                if (r == 4)
                    inf_kvunpack_ikey(c, (const uint8_t *)streams[2 * l + 1] + (size_t)i * ib,
                                      dl->icache + (size_t)i * ih);
            }
            if (mtp && r == 4)
                memcpy(dl->icache + (size_t)i * ih, hl->icache + (size_t)i * ih, sizeof(float) * ih);
        }
        dl->n_cache = n;
        d->sent_entries += n;
        /* the rings and carries (state.c's sizes: [coff*ratio][coff*head_dim], indexer [8][2*dim]) */
        size_t cn = r ? (size_t)coff * r * coff * hd : 0, icn = r == 4 ? 16 * ih : 0;
        memcpy(dl->ring, hl->ring, sizeof(float) * ring);
        if (cn) {
            memcpy(dl->c_kv, hl->c_kv, sizeof(float) * cn);
            memcpy(dl->c_sc, hl->c_sc, sizeof(float) * cn);
        }
        if (icn) {
            memcpy(dl->ic_kv, hl->ic_kv, sizeof(float) * icn);
            memcpy(dl->ic_sc, hl->ic_sc, sizeof(float) * icn);
        }
    }
    v->pos = st->pos;
    v->mtp_pos = st->mtp_pos;
    note_written(d);
    return 0;
}
static void *dbl_host_alloc(void *ud, size_t n)
{
    ((struct dbl *)ud)->host_live++;
    return malloc(n);
}
static void dbl_host_free(void *ud, void *p)
{
    ((struct dbl *)ud)->host_live--;
    free(p);
}

/* The host copy holds a prefix of the device's sequence: check that (what download_tail relies
 * on), then take the device's whole state into it, keeping the host state's identity. */
static int dbl_download(void *ud, struct inf_state *st, struct ctx_err *e)
{
    struct dbl *d = ud;
    size_t hd = (size_t)st->cfg.head_dim, ih = (size_t)st->cfg.index_head_dim;
    for (int l = 0; l < st->n_layers; l++) {
        const struct inf_layer_state *h = &st->layers[l], *v = &d->dev->layers[l];
        long long n = h->n_cache < v->n_cache ? h->n_cache : v->n_cache;
        if (n > 0)
            assert_memory_equal(h->cache, v->cache, sizeof(float) * hd * (size_t)n);
        if (n > 0 && h->icache)
            assert_memory_equal(h->icache, v->icache, sizeof(float) * ih * (size_t)n);
        if (v->n_cache > h->n_cache)
            d->tail_entries += v->n_cache - h->n_cache;
    }
    return state_assign(st, d->dev, e);
}

/* The device's position and each backbone layer's ring and carries into st (not the bound state:
 * state.c's view of a snapshot), nothing else: st's caches and MTP layers are not the op's. */
static int dbl_download_boundary(void *ud, struct inf_state *st, struct ctx_err *e)
{
    struct dbl *d = ud;
    if (d->fail_boundary)
        return ctx_err_set(e, CTX_EIO, "device boundary download failed (test)");
    const struct inf_config *c = &st->cfg;
    size_t hd = (size_t)c->head_dim, ih = (size_t)c->index_head_dim, ring = (size_t)c->sliding_window * hd;
    for (int l = 0; l < c->num_hidden_layers; l++) {
        const struct inf_layer_state *v = &d->dev->layers[l];
        struct inf_layer_state *h = &st->layers[l];
        int r = v->ratio, coff = r == 4 ? 2 : 1;
        size_t cn = r ? (size_t)coff * r * coff * hd : 0, icn = r == 4 ? 16 * ih : 0;
        memcpy(h->ring, v->ring, sizeof(float) * ring);
        if (cn) {
            memcpy(h->c_kv, v->c_kv, sizeof(float) * cn);
            memcpy(h->c_sc, v->c_sc, sizeof(float) * cn);
        }
        if (icn) {
            memcpy(h->ic_kv, v->ic_kv, sizeof(float) * icn);
            memcpy(h->ic_sc, v->ic_sc, sizeof(float) * icn);
        }
    }
    st->pos = d->dev->pos;
    d->boundaries++;
    return 0;
}

static int dbl_mark(void *ud, void **out, struct ctx_err *e)
{
    struct dbl *d = ud;
    if (d->fail_mark)
        return ctx_err_set(e, CTX_ENOMEM, "no device memory for a mark (test)");
    return inf_state_snapshot(d->dev, (struct inf_snapshot **)out, e);
}
static int dbl_rewind(void *ud, const void *mark, struct ctx_err *e)
{
    struct dbl *d = ud;
    if (d->fail_rewind) /* as the CUDA engine refuses a stale mark: nothing changed */
        return ctx_err_set(e, CTX_EINVAL, "mark refused (test)");
    return inf_state_truncate(d->dev, mark, e);
}
static void dbl_mark_free(void *ud, void *mark)
{
    (void)ud;
    inf_snapshot_free(mark);
}
static void dbl_destroy(void *ud)
{
    struct dbl *d = ud;
    inf_state_free(d->dev);
    inf_model_free(d->m);
    free(d);
}

static const struct inf_accel_ops dbl_ops = {
    .name = "double", .forward = dbl_forward, .max_chunk = 64, .upload = dbl_upload,
    .upload_prefix = dbl_upload_prefix, .download_tail = dbl_download, .mark = dbl_mark, .rewind = dbl_rewind,
    .mark_free = dbl_mark_free, .destroy = dbl_destroy, .upload_packed = dbl_upload_packed,
    .host_alloc = dbl_host_alloc, .host_free = dbl_host_free, .download_boundary = dbl_download_boundary,
};

static struct inf_model *MA;  /* the same weights with the accelerator */
static struct inf_accel *ACC;
static struct dbl *D;

static int setup_accel(void **st)
{
    if (setup(st))
        return -1;
    struct ctx_err e = {0};
    D = calloc(1, sizeof *D);
    if (!D || inf_model_new(W, NULL, 0, &D->m, &e) || inf_model_new(W, NULL, 0, &MA, &e) ||
        inf_state_new(C, &D->dev, &e))
        return -1;
    ACC = inf_accel_new(&dbl_ops, D);
    if (!ACC)
        return -1;
    inf_model_set_accel(MA, ACC);
    return 0;
}
static int teardown_accel(void **st)
{
    inf_model_free(MA);
    inf_accel_free(ACC);
    return teardown(st);
}

/* A pair of states fed the same way: p on the plain model, a through the accelerator. */
struct pair {
    struct inf_state *p, *a;
    float *lp, *la;
    struct inf_snapshot *sp, *sa; /* pair_snapshot's, of p and of a */
};
static void pair_new(struct pair *q)
{
    struct ctx_err e = {0};
    assert_int_equal(inf_state_new(C, &q->p, &e), 0);
    assert_int_equal(inf_state_new(C, &q->a, &e), 0);
    q->lp = malloc(sizeof(float) * (size_t)C->vocab_size);
    q->la = malloc(sizeof(float) * (size_t)C->vocab_size);
    q->sp = q->sa = NULL;
}
static void pair_free(struct pair *q)
{
    inf_snapshot_free(q->sp);
    inf_snapshot_free(q->sa);
    inf_state_free(q->p);
    inf_state_free(q->a);
    free(q->lp);
    free(q->la);
}
/* Feed n tokens as one call (logits compared), or as n single steps when step. */
static void feed(struct pair *q, const int *tok, int n, int step)
{
    struct ctx_err e = {0};
    struct inf_forward_opts op = {.logits = q->lp}, oa = {.logits = q->la};
    for (int i = 0; i < n; i += step ? 1 : n) {
        int k = step ? 1 : n;
        assert_int_equal(inf_model_forward(M, q->p, tok + i, k, &op, &e), 0);
        int rc = inf_model_forward(MA, q->a, tok + i, k, &oa, &e);
        if (rc)
            fail_msg("accelerated forward: %s", e.msg);
        assert_memory_equal(q->lp, q->la, sizeof(float) * (size_t)C->vocab_size);
        assert_int_equal(q->p->pos, q->a->pos);
    }
}
/* Snapshot both states (replacing earlier snapshots), and truncate both back to them. */
static void pair_snapshot(struct pair *q)
{
    struct ctx_err e = {0};
    inf_snapshot_free(q->sp);
    inf_snapshot_free(q->sa);
    assert_int_equal(inf_state_snapshot(q->p, &q->sp, &e), 0);
    assert_int_equal(inf_state_snapshot(q->a, &q->sa, &e), 0);
}
static void pair_truncate(struct pair *q)
{
    struct ctx_err e = {0};
    assert_int_equal(inf_state_truncate(q->p, q->sp, &e), 0);
    assert_int_equal(inf_state_truncate(q->a, q->sa, &e), 0);
}

/* The host copies are byte-identical once synced. */
static void same_bytes(struct pair *q)
{
    struct ctx_err e = {0};
    uint8_t *b0 = NULL;
    size_t n0 = 0;
    if (q->a->accel) { /* ahead on the device: reading the host copy is refused until the sync */
        int rc = inf_state_serialize(q->a, &b0, &n0, &e);
        if (rc) {
            assert_int_equal(rc, CTX_EINVAL);
            assert_non_null(strstr(e.msg, "inf_state_sync first"));
        }
        free(b0);
    }
    assert_int_equal(inf_state_sync(q->a, &e), 0);
    uint8_t *b1, *b2;
    size_t n1, n2;
    assert_int_equal(inf_state_serialize(q->p, &b1, &n1, &e), 0);
    assert_int_equal(inf_state_serialize(q->a, &b2, &n2, &e), 0);
    assert_int_equal(n1, n2);
    assert_memory_equal(b1, b2, n1);
    free(b1);
    free(b2);
}

static struct inf_accel_stats stats(void)
{
    struct inf_accel_stats s;
    inf_accel_stats(ACC, &s);
    return s;
}

/* Prefill in chunks longer than max_chunk, snapshot, other tokens, truncate, continue: the device
 * rewinds (no transfer) and every logit matches the plain model. */
static void test_snapshot_rewind(void **st)
{
    (void)st;
    struct ctx_err e = {0};
    int n, P;
    int *tok = case_tokens(6, &n, &P);
    struct pair q;
    pair_new(&q);
    struct inf_accel_stats s0 = stats();
    feed(&q, tok, 150, 0); /* 3 device calls of <= 64 */
    long long tail0 = D->tail_entries, b0 = D->boundaries;
    pair_snapshot(&q); /* the boundary from the device; the host copy keeps lagging */
    assert_int_equal(D->tail_entries, tail0);
    assert_int_equal(D->boundaries - b0, 1);
    for (int l = 0; l < C->num_hidden_layers; l++)
        assert_int_equal(q.a->layers[l].n_cache, 0);
    feed(&q, tok + 10, 40, 0);
    feed(&q, tok + 60, 5, 1);
    pair_truncate(&q);
    feed(&q, tok + 150, P - 150, 0);
    feed(&q, tok + P, n - P, 1);
    pair_truncate(&q); /* twice to the same mark */
    feed(&q, tok + 150, 7, 1);
    struct inf_accel_stats s1 = stats();
    assert_int_equal(s1.uploads - s0.uploads, 1);
    assert_int_equal(s1.rewinds - s0.rewinds, 2);
    assert_int_equal(s1.host_truncates - s0.host_truncates, 0);
    assert_int_equal(s1.downloads - s0.downloads, 0); /* the snapshot took the boundary only */
    assert_int_equal(s1.boundary_downloads - s0.boundary_downloads, 1);
    assert_int_equal(D->tail_entries, tail0);
    printf("# 150-token prefill (3 device chunks), snapshot, 2 rewinds: logits bit-identical, %lld uploads, %lld "
           "downloads, %lld boundary downloads\n",
           s1.uploads - s0.uploads, s1.downloads - s0.downloads, s1.boundary_downloads - s0.boundary_downloads);
    uint8_t *bb = NULL;
    size_t bn = 0;
    assert_int_equal(inf_state_serialize(q.a, &bb, &bn, &e), CTX_EINVAL); /* 7 decode steps ahead */
    printf("# serialize of the state ahead on the device: %s\n", e.msg);
    same_bytes(&q);
    pair_free(&q);
    free(tok);
}

/* Two sequences alternating on one device: each switch brings the outgoing one's host copy up to
 * date (only the entries it lacks) and uploads the other; results stay those of the plain model. */
static void test_swap(void **st)
{
    (void)st;
    int n, P, n2, P2;
    int *tok = case_tokens(6, &n, &P), *tok2 = case_tokens(5, &n2, &P2);
    struct pair q1, q2;
    pair_new(&q1);
    pair_new(&q2);
    struct inf_accel_stats s0 = stats();
    long long tail0 = D->tail_entries;
    feed(&q1, tok, 100, 0);
    feed(&q2, tok2, 60, 0);
    feed(&q1, tok + 100, 5, 1);
    feed(&q2, tok2 + 60, 3, 1);
    feed(&q1, tok + 105, 45, 0);
    struct inf_accel_stats s1 = stats();
    assert_int_equal(s1.uploads - s0.uploads, 5);
    assert_int_equal(s1.downloads - s0.downloads, 4);
    assert_true(D->tail_entries > tail0);
    same_bytes(&q1);
    same_bytes(&q2);
    printf("# two sequences alternating 5 times: bit-identical, %lld entries downloaded as tails\n",
           D->tail_entries - tail0);
    pair_free(&q1);
    pair_free(&q2);
    free(tok);
    free(tok2);
}

/* A snapshot whose device mark is stale (the device held another state since) truncates the host
 * copy instead, and the next forward uploads it. */
static void test_stale_mark(void **st)
{
    (void)st;
    int n, P, n2, P2;
    int *tok = case_tokens(6, &n, &P), *tok2 = case_tokens(5, &n2, &P2);
    struct pair q1, q2;
    pair_new(&q1);
    pair_new(&q2);
    feed(&q1, tok, 131, 0);
    pair_snapshot(&q1);
    feed(&q1, tok + 131, 9, 1);
    feed(&q2, tok2, 20, 0); /* q1 leaves the device */
    feed(&q1, tok + 140, 3, 1); /* and comes back: a new upload, the mark is stale */
    struct inf_accel_stats s0 = stats();
    pair_truncate(&q1);
    struct inf_accel_stats s1 = stats();
    assert_int_equal(s1.host_truncates - s0.host_truncates, 1);
    assert_int_equal(s1.rewinds - s0.rewinds, 0);
    feed(&q1, tok + 131, 19, 0);
    feed(&q1, tok + 150, 4, 1);
    same_bytes(&q1);
    printf("# stale mark: host truncate + re-upload, bit-identical\n");
    pair_free(&q1);
    pair_free(&q2);
    free(tok);
    free(tok2);
}

/* A forward with a hook runs on the CPU from the synced host copy; reset and free of a bound state
 * make the device forget it; snapshots may outlive their state. */
static void hook(void *ud, int layer, const float *X, int S, long long pos0)
{
    (void)X;
    (void)S;
    (void)pos0;
    (void)layer;
    (*(int *)ud)++;
}
static void test_cpu_fallback_and_lifetimes(void **st)
{
    (void)st;
    struct ctx_err e = {0};
    int n, P;
    int *tok = case_tokens(6, &n, &P);
    struct pair q;
    pair_new(&q);
    feed(&q, tok, 70, 0);
    int calls = 0;
    struct inf_forward_opts op = {.logits = q.lp}, oa = {.logits = q.la, .hook = hook, .hook_ud = &calls};
    assert_int_equal(inf_model_forward(M, q.p, tok + 70, 5, &op, &e), 0);
    assert_int_equal(inf_model_forward(MA, q.a, tok + 70, 5, &oa, &e), 0);
    assert_true(calls > 0);
    assert_null(q.a->accel); /* unbound: the CPU ran it */
    assert_memory_equal(q.lp, q.la, sizeof(float) * (size_t)C->vocab_size);
    feed(&q, tok + 75, 3, 1); /* back on the device */
    assert_non_null(q.a->accel);
    struct inf_snapshot *sa;
    assert_int_equal(inf_state_snapshot(q.a, &sa, &e), 0);
    inf_state_reset(q.a);
    inf_state_reset(q.p);
    assert_null(q.a->accel);
    feed(&q, tok, 20, 0);
    inf_state_free(q.a); /* bound */
    q.a = NULL;
    inf_snapshot_free(sa); /* after its state */
    inf_state_free(q.p);
    q.p = NULL;
    pair_free(&q);
    printf("# hook forward on the CPU from the synced copy, reset/free while bound: ok\n");
    free(tok);
}

/* A failed upload or device forward is an error naming the accelerator; the state stays usable. */
static void test_errors(void **st)
{
    (void)st;
    struct ctx_err e = {0};
    int n, P;
    int *tok = case_tokens(6, &n, &P);
    struct pair q, q2;
    pair_new(&q);
    pair_new(&q2);
    feed(&q, tok, 40, 0);
    feed(&q2, tok, 10, 0);
    D->fail_upload = 1;
    struct inf_forward_opts oa = {.logits = q.la};
    assert_int_equal(inf_model_forward(MA, q.a, tok + 40, 4, &oa, &e), CTX_EIO);
    printf("# failed upload: %s\n", e.msg);
    assert_non_null(strstr(e.msg, "accelerator double"));
    assert_int_equal(q.a->pos, 40);
    D->fail_upload = 0;
    feed(&q, tok + 40, 4, 0);
    D->fail_forward = 1;
    assert_int_equal(inf_model_forward(MA, q.a, tok + 44, 4, &oa, &e), CTX_EIO);
    printf("# failed device forward: %s\n", e.msg);
    assert_non_null(strstr(e.msg, "accelerator double: forward of 4 tokens at position 44: device forward failed"));
    D->fail_forward = 0;
    assert_int_equal(q.a->pos, 44);
    assert_null(q.a->accel);
    feed(&q, tok + 44, 6, 0);
    same_bytes(&q);
    pair_free(&q);
    pair_free(&q2);
    free(tok);
}

/* ---- the resident: a big state bound again after small ones keeps its entries on the device ---- */

static long long entries(const struct inf_state *s)
{
    long long t = 0;
    for (int l = 0; l < s->n_layers; l++)
        t += s->layers[l].n_cache;
    return t;
}
/* Entries of `big` that states of `small`'s counts overwrite: sum over layers of the smaller count. */
static long long overlap(const struct inf_state *big, const struct inf_state *small)
{
    long long t = 0;
    for (int l = 0; l < big->n_layers; l++)
        t += small->layers[l].n_cache < big->layers[l].n_cache ? small->layers[l].n_cache : big->layers[l].n_cache;
    return t;
}

/* Big A, a fresh small B, A again: only B's leading entries of each layer go up again, and A
 * continues bit for bit; then a small state freed while bound (what fim.c does), A again. */
static void test_resident_partial(void **st)
{
    (void)st;
    int n, P, n2, P2;
    int *tok = case_tokens(6, &n, &P), *tok2 = case_tokens(5, &n2, &P2);
    struct pair A, B, B2;
    pair_new(&A);
    pair_new(&B);
    pair_new(&B2);
    feed(&A, tok, 200, 0);
    feed(&A, tok + 200, 3, 1); /* ahead of its host copy when it leaves */
    struct inf_accel_stats s0 = stats();
    long long sent0 = D->sent_entries;
    feed(&B, tok2, 10, 0);
    feed(&B, tok2 + 10, 2, 1);
    long long want = overlap(A.p, B.p), total = entries(A.p);
    feed(&A, tok + 203, 5, 1);
    struct inf_accel_stats s1 = stats();
    assert_int_equal(s1.uploads - s0.uploads, 2);
    assert_int_equal(s1.partial_uploads - s0.partial_uploads, 1);
    assert_int_equal(s1.partial_entries - s0.partial_entries, want);
    assert_int_equal(s1.kept_entries - s0.kept_entries, total - want);
    assert_int_equal(D->sent_entries - sent0, want); /* B was empty when uploaded */
    assert_true(want > 0 && want * 5 < total);
    printf("# big A (%lld entries), small B (12 tokens), A again: a partial upload sent %lld entries, kept %lld; "
           "bit-identical\n",
           total, want, total - want);
    same_bytes(&A);
    same_bytes(&B);
    /* fim.c: a fresh state, a few tokens, freed while bound */
    feed(&B2, tok2 + 20, 9, 0);
    want = overlap(A.p, B2.p);
    total = entries(A.p);
    inf_state_free(B2.a);
    B2.a = NULL;
    s0 = stats();
    feed(&A, tok + 208, 4, 1);
    s1 = stats();
    assert_int_equal(s1.partial_uploads - s0.partial_uploads, 1);
    assert_int_equal(s1.partial_entries - s0.partial_entries, want);
    assert_int_equal(s1.kept_entries - s0.kept_entries, total - want);
    same_bytes(&A);
    printf("# a small state freed while bound, A again: partial, %lld entries sent of %lld\n", want, total);
    pair_free(&A);
    pair_free(&B);
    pair_free(&B2);
    free(tok);
    free(tok2);
}

/* A truncated on the host while away is still partial (the caches are append-only); a CPU forward
 * on it while away (entries rewritten with other tokens) must give the full upload. */
static void test_resident_changed(void **st)
{
    (void)st;
    struct ctx_err e = {0};
    int n, P, n2, P2;
    int *tok = case_tokens(6, &n, &P), *tok2 = case_tokens(5, &n2, &P2);
    struct pair A, B;
    pair_new(&A);
    pair_new(&B);
    feed(&A, tok, 120, 0);
    pair_snapshot(&A);
    feed(&A, tok + 120, 100, 0);
    feed(&B, tok2, 20, 0); /* A leaves */
    assert_null(A.a->accel);
    pair_truncate(&A); /* host only: A is not on the device */
    struct inf_accel_stats s0 = stats();
    long long want = overlap(A.p, B.p), total = entries(A.p);
    feed(&A, tok + 120, 30, 0);
    struct inf_accel_stats s1 = stats();
    assert_int_equal(s1.partial_uploads - s0.partial_uploads, 1);
    assert_int_equal(s1.partial_entries - s0.partial_entries, want);
    assert_int_equal(s1.kept_entries - s0.kept_entries, total - want);
    same_bytes(&A);
    printf("# A truncated on the host while away (220 -> 120), A again: partial, %lld sent, %lld kept, "
           "bit-identical\n",
           want, total - want);
    /* away again, truncated, then continued with other tokens on the CPU (a hook forward), staying
     * within the counts it left with: only the host generation tells */
    feed(&B, tok2 + 20, 3, 1);
    pair_truncate(&A);
    int calls = 0;
    struct inf_forward_opts op = {.logits = A.lp}, oa = {.logits = A.la, .hook = hook, .hook_ud = &calls};
    assert_int_equal(inf_model_forward(M, A.p, tok2 + 100, 20, &op, &e), 0);
    assert_int_equal(inf_model_forward(MA, A.a, tok2 + 100, 20, &oa, &e), 0);
    assert_true(calls > 0);
    assert_memory_equal(A.lp, A.la, sizeof(float) * (size_t)C->vocab_size);
    s0 = stats();
    feed(&A, tok2 + 120, 4, 1);
    feed(&A, tok2 + 124, 30, 0);
    s1 = stats();
    assert_int_equal(s1.uploads - s0.uploads, 1);
    assert_int_equal(s1.partial_uploads - s0.partial_uploads, 0);
    same_bytes(&A);
    /* and reset while away: full again */
    feed(&B, tok2 + 23, 2, 1);
    inf_state_reset(A.a);
    inf_state_reset(A.p);
    s0 = stats();
    feed(&A, tok, 70, 0);
    s1 = stats();
    assert_int_equal(s1.partial_uploads - s0.partial_uploads, 0);
    same_bytes(&A);
    printf("# A continued on the CPU (or reset) while away: full upload, bit-identical\n");
    pair_free(&A);
    pair_free(&B);
    free(tok);
    free(tok2);
}

/* Two big states alternating: each bind is a full upload or a correct partial one. */
static void test_two_big(void **st)
{
    (void)st;
    int n, P, n2, P2;
    int *tok = case_tokens(6, &n, &P), *tok2 = case_tokens(5, &n2, &P2);
    struct pair A, Cq;
    pair_new(&A);
    pair_new(&Cq);
    struct inf_accel_stats s0 = stats();
    feed(&A, tok, 200, 0);
    feed(&Cq, tok2, 180, 0);
    feed(&A, tok + 200, 3, 1);
    feed(&Cq, tok2 + 180, 3, 1);
    feed(&A, tok + 203, 20, 0);
    feed(&Cq, tok2 + 183, 20, 0);
    feed(&A, tok + 223, 2, 1);
    struct inf_accel_stats s1 = stats();
    assert_int_equal(s1.uploads - s0.uploads, 7);
    /* A comes back 3 times, each time over C, which is smaller: partial; C never is the resident */
    assert_int_equal(s1.partial_uploads - s0.partial_uploads, 3);
    same_bytes(&A);
    same_bytes(&Cq);
    printf("# two big states alternating: %lld uploads, %lld partial (%lld entries sent, %lld kept), "
           "bit-identical\n",
           s1.uploads - s0.uploads, s1.partial_uploads - s0.partial_uploads, s1.partial_entries - s0.partial_entries,
           s1.kept_entries - s0.kept_entries);
    pair_free(&A);
    pair_free(&Cq);
    free(tok);
    free(tok2);
}

/* The other state as big as A in some layer (HCA: the same count) re-sends that layer whole; one
 * past A everywhere leaves nothing to keep: a full upload. */
static void test_other_bigger(void **st)
{
    (void)st;
    int n, P, n2, P2;
    int *tok = case_tokens(6, &n, &P), *tok2 = case_tokens(5, &n2, &P2);
    struct pair A, B;
    pair_new(&A);
    pair_new(&B);
    feed(&A, tok, 300, 0);
    feed(&B, tok2, 260, 0);
    int equal = 0, smaller = 0;
    for (int l = 0; l < A.p->n_layers; l++) {
        equal += A.p->layers[l].n_cache && B.p->layers[l].n_cache == A.p->layers[l].n_cache;
        smaller += B.p->layers[l].n_cache < A.p->layers[l].n_cache;
    }
    assert_true(equal > 0 && smaller > 0);
    struct inf_accel_stats s0 = stats();
    long long want = overlap(A.p, B.p), total = entries(A.p);
    feed(&A, tok + 300, 2, 1);
    struct inf_accel_stats s1 = stats();
    assert_int_equal(s1.partial_uploads - s0.partial_uploads, 1);
    assert_int_equal(s1.partial_entries - s0.partial_entries, want);
    assert_int_equal(s1.kept_entries - s0.kept_entries, total - want);
    same_bytes(&A);
    feed(&B, tok2, 2, 1); /* B now past A's position */
    feed(&B, tok2 + 2, 60, 0);
    s0 = stats();
    feed(&A, tok + 302, 2, 1);
    s1 = stats();
    assert_int_equal(s1.uploads - s0.uploads, 1);
    assert_int_equal(s1.partial_uploads - s0.partial_uploads, 0);
    same_bytes(&A);
    same_bytes(&B);
    printf("# B as big as A in %d layers: partial (%lld of %lld sent); B past A: full; bit-identical\n", equal, want,
           total);
    pair_free(&A);
    pair_free(&B);
    free(tok);
    free(tok2);
}

/* An accelerator without upload_prefix: every bind is a full upload, results the same. */
static void test_no_prefix_op(void **st)
{
    (void)st;
    struct ctx_err e = {0};
    int n, P, n2, P2;
    int *tok = case_tokens(6, &n, &P), *tok2 = case_tokens(5, &n2, &P2);
    struct dbl *d2 = calloc(1, sizeof *d2);
    assert_non_null(d2);
    assert_int_equal(inf_model_new(W, NULL, 0, &d2->m, &e), 0);
    assert_int_equal(inf_state_new(C, &d2->dev, &e), 0);
    struct inf_accel_ops ops = dbl_ops;
    ops.upload_prefix = NULL;
    struct inf_accel *a2 = inf_accel_new(&ops, d2);
    assert_non_null(a2);
    struct inf_model *ma2;
    assert_int_equal(inf_model_new(W, NULL, 0, &ma2, &e), 0);
    inf_model_set_accel(ma2, a2);
    struct inf_state *p = NULL, *x = NULL, *y = NULL;
    assert_int_equal(inf_state_new(C, &p, &e), 0);
    assert_int_equal(inf_state_new(C, &x, &e), 0);
    assert_int_equal(inf_state_new(C, &y, &e), 0);
    float *lp = malloc(sizeof(float) * (size_t)C->vocab_size), *la = malloc(sizeof(float) * (size_t)C->vocab_size);
    struct inf_forward_opts op = {.logits = lp}, oa = {.logits = la};
    assert_int_equal(inf_model_forward(M, p, tok, 100, &op, &e), 0);
    assert_int_equal(inf_model_forward(ma2, x, tok, 100, &oa, &e), 0);
    assert_int_equal(inf_model_forward(ma2, y, tok2, 10, &oa, &e), 0);
    assert_int_equal(inf_model_forward(M, p, tok + 100, 3, &op, &e), 0);
    assert_int_equal(inf_model_forward(ma2, x, tok + 100, 3, &oa, &e), 0);
    assert_memory_equal(lp, la, sizeof(float) * (size_t)C->vocab_size);
    struct inf_accel_stats s;
    inf_accel_stats(a2, &s);
    assert_int_equal(s.uploads, 3);
    assert_int_equal(s.partial_uploads, 0);
    assert_int_equal(d2->sent_entries, entries(p)); /* x empty, y empty, x again: all of its entries */
    printf("# without upload_prefix: full uploads (%lld entries sent), bit-identical\n", d2->sent_entries);
    inf_state_free(p);
    inf_state_free(x);
    inf_state_free(y);
    inf_model_free(ma2);
    inf_accel_free(a2);
    free(lp);
    free(la);
    free(tok);
    free(tok2);
}

/* ---- packed restores: a checkpoint straight to the device (inf_accel_restore_packed) ---- */

/* A checkpoint of s as the KV cache keeps it (store/kv_state.h): per layer its entries and indexer
 * keys packed (inference/kvpack.h), in buffers from inf_accel_host_alloc, and its boundary. */
struct ckpt {
    int ns;
    void **streams;
    long long counts[INF_MAX_LAYERS + 8];
    uint8_t *b;
    size_t blen;
};
static void ckpt_of(struct inf_accel *a, const struct inf_state *s, struct ckpt *k)
{
    struct ctx_err e = {0};
    const struct inf_config *c = &s->cfg;
    size_t eb = inf_kvpack_entry_bytes(c), ib = inf_kvpack_ikey_bytes(c);
    k->ns = 2 * s->n_layers;
    k->streams = calloc((size_t)k->ns, sizeof *k->streams);
    assert_non_null(k->streams);
    for (int l = 0; l < s->n_layers; l++) {
        const struct inf_layer_state *L = &s->layers[l];
        long long n = L->n_cache;
        k->counts[l] = n;
        uint8_t *p = inf_accel_host_alloc(a, (size_t)n * eb), *q = inf_accel_host_alloc(a, L->ratio == 4 ? (size_t)n * ib : 0);
        assert_non_null(p);
        assert_non_null(q);
        for (long long i = 0; i < n; i++) {
            assert_int_equal(inf_kvpack_entry(c, L->cache + (size_t)i * c->head_dim, p + (size_t)i * eb), -1);
            if (L->ratio == 4)
                assert_int_equal(inf_kvpack_ikey(c, L->icache + (size_t)i * c->index_head_dim, q + (size_t)i * ib), -1);
        }
        k->streams[2 * l] = p;
        k->streams[2 * l + 1] = q;
    }
    assert_int_equal(inf_state_boundary(s, &k->b, &k->blen, &e), 0);
}
static void ckpt_free(struct inf_accel *a, struct ckpt *k)
{
    for (int i = 0; i < k->ns; i++)
        inf_accel_host_free(a, k->streams[i]);
    free(k->streams);
    free(k->b);
}
/* Today's restore, into the host arrays (store_kv_state_restore's steps): entries unpacked, then the
 * boundary. */
static void host_restore(const struct ckpt *k, struct inf_state *st)
{
    struct ctx_err e = {0};
    const struct inf_config *c = &st->cfg;
    size_t eb = inf_kvpack_entry_bytes(c), ib = inf_kvpack_ikey_bytes(c);
    inf_state_reset(st);
    for (int l = 0; l < st->n_layers; l++) {
        struct inf_layer_state *L = &st->layers[l];
        assert_int_equal(inf_state_reserve(st, l, k->counts[l], &e), 0);
        for (long long i = 0; i < k->counts[l]; i++) {
            inf_kvunpack_entry(c, (const uint8_t *)k->streams[2 * l] + (size_t)i * eb, L->cache + (size_t)i * c->head_dim);
            if (L->ratio == 4)
                inf_kvunpack_ikey(c, (const uint8_t *)k->streams[2 * l + 1] + (size_t)i * ib,
                                  L->icache + (size_t)i * c->index_head_dim);
        }
        L->n_cache = k->counts[l];
    }
    assert_int_equal(inf_state_restore_boundary(st, k->b, k->blen, &e), 0);
}
/* The packed path (store_kv_state_read_packed's boundary step, then the accelerator's restore). */
static int packed_restore(struct inf_accel *a, const struct ckpt *k, struct inf_state *st, const long long *counts,
                          struct ctx_err *e)
{
    int rc = inf_state_restore_boundary_counts(st, k->b, k->blen, k->counts, e);
    return rc ? rc : inf_accel_restore_packed(a, st, counts ? counts : k->counts, (const void *const *)k->streams, e);
}

/* A checkpoint at position P of a sequence; the pair q: q.p restored on the host, q.a packed to the
 * device; both bit-identical to the sequence itself. */
static void restored_pair(struct pair *q, const int *tok, int P, struct ckpt *k)
{
    struct ctx_err e = {0};
    struct inf_state *src;
    assert_int_equal(inf_state_new(C, &src, &e), 0);
    struct inf_forward_opts o = {0};
    assert_int_equal(inf_model_forward(M, src, tok, P, &o, &e), 0);
    ckpt_of(ACC, src, k);
    pair_new(q);
    host_restore(k, q->p);
    uint8_t *b1, *b2;
    size_t n1, n2;
    assert_int_equal(inf_state_serialize(src, &b1, &n1, &e), 0);
    assert_int_equal(inf_state_serialize(q->p, &b2, &n2, &e), 0);
    assert_int_equal(n1, n2);
    assert_memory_equal(b1, b2, n1); /* packing is lossless */
    free(b1);
    free(b2);
    inf_state_free(src);
    int rc = packed_restore(ACC, k, q->a, NULL, &e);
    if (rc)
        fail_msg("packed restore: %s", e.msg);
    assert_ptr_equal(q->a->accel, ACC);
    assert_int_equal(q->a->pos, P);
}
static long long ckpt_entries(const struct ckpt *k, int n_layers)
{
    long long t = 0;
    for (int l = 0; l < n_layers; l++)
        t += k->counts[l];
    return t;
}

/* Packed restore, then forwards: the bits of the host restore; the host copy holds no entries until
 * the sync, which downloads them all and equals the host-restored state byte for byte. */
static void test_packed_restore(void **st)
{
    (void)st;
    struct ctx_err e = {0};
    int n, P;
    int *tok = case_tokens(6, &n, &P);
    assert_true(inf_accel_can_restore_packed(ACC));
    struct ckpt k;
    struct pair q;
    struct inf_accel_stats s0 = stats();
    long long tail0 = D->tail_entries, live0 = D->host_live;
    restored_pair(&q, tok, 200, &k);
    struct inf_accel_stats s1 = stats();
    assert_int_equal(s1.packed_uploads - s0.packed_uploads, 1);
    assert_int_equal(s1.uploads - s0.uploads, 1);
    long long total = ckpt_entries(&k, q.p->n_layers);
    assert_true(total > 0);
    for (int l = 0; l < C->num_hidden_layers; l++)
        assert_int_equal(q.a->layers[l].n_cache, 0); /* the host's prefix: nothing */
    uint8_t *bb = NULL;
    size_t bn = 0;
    assert_int_equal(inf_state_serialize(q.a, &bb, &bn, &e), CTX_EINVAL); /* lags: sync first */
    assert_int_equal(inf_state_boundary(q.a, &bb, &bn, &e), CTX_EINVAL);
    same_bytes(&q); /* the sync: every entry downloaded */
    assert_int_equal(D->tail_entries - tail0, total);
    assert_int_equal(stats().downloads - s1.downloads, 1);
    feed(&q, tok + 200, 30, 0);
    feed(&q, tok + 230, 5, 1);
    same_bytes(&q);
    printf("# packed restore at 200 tokens (%lld entries): sync == host restore; 30 + 5 tokens after it "
           "bit-identical\n",
           total);
    ckpt_free(ACC, &k);
    assert_int_equal(D->host_live, live0);
    pair_free(&q);
    /* forward first, sync after: the device's new entries and the restored ones arrive together */
    restored_pair(&q, tok, 150, &k);
    feed(&q, tok + 150, 64, 0);
    feed(&q, tok + 214, 3, 1);
    same_bytes(&q);
    ckpt_free(ACC, &k);
    pair_free(&q);
    printf("# packed restore at 150, 67 tokens, then the sync: bit-identical\n");
    free(tok);
}

/* Whether the backbone layers of st's host copy hold no entries (a packed restore's, not synced). */
static int host_empty(const struct inf_state *s)
{
    for (int l = 0; l < s->cfg.num_hidden_layers; l++)
        if (s->layers[l].n_cache)
            return 0;
    return 1;
}

/* Snapshot and truncate after a packed restore (ctxd's "ready" snapshot): the snapshot takes the
 * boundary from the device and marks it, downloading no entry; the truncate rewinds the device, the
 * host copy still lagging; the checkpoint's sync afterwards downloads them all, and the state is
 * the plain model's byte for byte. A snapshot of another state with the same prefix (more entries
 * than the lagging host copy holds) syncs first and truncates on the host. */
static void test_packed_snapshot(void **st)
{
    (void)st;
    struct ctx_err e = {0};
    int n, P;
    int *tok = case_tokens(6, &n, &P);
    struct ckpt k;
    struct pair q;
    restored_pair(&q, tok, 180, &k);
    struct inf_accel_stats s0 = stats();
    long long tail0 = D->tail_entries;
    pair_snapshot(&q);
    assert_int_equal(D->tail_entries, tail0); /* no entry crossed */
    assert_int_equal(stats().downloads, s0.downloads);
    assert_int_equal(stats().boundary_downloads - s0.boundary_downloads, 1);
    assert_true(host_empty(q.a));
    assert_int_equal(inf_snapshot_pos(q.sa), 180);
    feed(&q, tok + 180, 40, 0);
    feed(&q, tok + 220, 4, 1);
    pair_truncate(&q);
    assert_true(host_empty(q.a)); /* still lagging after the rewind */
    assert_ptr_equal(q.a->accel, ACC);
    feed(&q, tok + 180, 9, 1);
    pair_truncate(&q); /* again, then a prefill chunk over the device's limit */
    feed(&q, tok + 180, 70, 0);
    struct inf_accel_stats s1 = stats();
    assert_int_equal(s1.rewinds - s0.rewinds, 2);
    assert_int_equal(s1.uploads - s0.uploads, 0);
    assert_int_equal(s1.downloads - s0.downloads, 0);
    assert_int_equal(D->tail_entries, tail0);
    long long want = entries(q.p);
    same_bytes(&q); /* the checkpoint's sync: every entry, once */
    assert_int_equal(stats().downloads - s1.downloads, 1);
    assert_int_equal(D->tail_entries - tail0, want);
    printf("# packed restore at 180, snapshot (boundary only, 0 entries downloaded), 44 tokens, rewind, 9, rewind, "
           "70: bit-identical; the sync after: %lld entries, byte-equal\n",
           want);
    /* the sync left the host copy complete: a truncate to the same snapshot now rewinds and keeps it */
    pair_truncate(&q);
    assert_int_equal(stats().rewinds - s1.rewinds, 1);
    assert_false(host_empty(q.a));
    feed(&q, tok + 180, 3, 1);
    same_bytes(&q);
    ckpt_free(ACC, &k);
    pair_free(&q);
    /* a foreign snapshot: the sequence's own state at 160, taken on the plain model */
    struct inf_state *o;
    assert_int_equal(inf_state_new(C, &o, &e), 0);
    struct inf_forward_opts fo = {0};
    assert_int_equal(inf_model_forward(M, o, tok, 160, &fo, &e), 0);
    struct inf_snapshot *so;
    assert_int_equal(inf_state_snapshot(o, &so, &e), 0);
    restored_pair(&q, tok, 200, &k);
    s0 = stats();
    assert_int_equal(inf_state_truncate(q.p, so, &e), 0);
    int rc = inf_state_truncate(q.a, so, &e);
    if (rc)
        fail_msg("truncate of the lagging state to a foreign snapshot: %s", e.msg);
    s1 = stats();
    assert_int_equal(s1.downloads - s0.downloads, 1);
    assert_int_equal(s1.host_truncates - s0.host_truncates, 1);
    assert_null(q.a->accel);
    feed(&q, tok + 160, 20, 0);
    feed(&q, tok + 180, 2, 1);
    same_bytes(&q);
    printf("# packed restore, snapshot/rewind: bit-identical; truncate to another state's snapshot: sync, host "
           "truncate, re-upload, bit-identical\n");
    inf_snapshot_free(so);
    inf_state_free(o);
    ckpt_free(ACC, &k);
    pair_free(&q);
    free(tok);
}

/* Hand a checkpoint's buffers to inf_accel_fill_host (ctxd's path after a packed restore): they are
 * the fill's now, so the ckpt forgets them. */
static int fill_from(struct ckpt *k, struct inf_state *st, struct ctx_err *e)
{
    int rc = inf_accel_fill_host(ACC, st, k->counts, k->streams, k->ns, e);
    for (int i = 0; i < k->ns; i++)
        k->streams[i] = NULL;
    return rc;
}
static long long backbone_entries(const struct inf_state *s)
{
    long long t = 0;
    for (int l = 0; l < s->cfg.num_hidden_layers; l++)
        t += s->layers[l].n_cache;
    return t;
}

/* The host copy refilled in the background from the checkpoint's buffers (inf_accel_fill_host):
 * forwards do not wait; the sync then downloads only the device's newer entries (the double checks
 * that the filled prefix equals the device's) and the state equals the plain model's byte for byte;
 * a snapshot does not wait, a truncate does; freeing, resetting or restoring the state while the
 * fill runs stops it; the buffers are freed in every case; a fill of anything but the state just
 * restored packed is refused and frees them too. */
static void test_packed_fill(void **st)
{
    (void)st;
    struct ctx_err e = {0};
    int n, P;
    int *tok = case_tokens(6, &n, &P);
    struct ckpt k;
    struct pair q;
    long long live0 = D->host_live;
    /* 1. fill, forwards, sync: only the new entries cross */
    restored_pair(&q, tok, 200, &k);
    struct inf_accel_stats s0 = stats();
    long long tail0 = D->tail_entries, restored = 0;
    for (int l = 0; l < C->num_hidden_layers; l++)
        restored += k.counts[l];
    assert_int_equal(fill_from(&k, q.a, &e), 0);
    feed(&q, tok + 200, 30, 0);
    feed(&q, tok + 230, 5, 1);
    same_bytes(&q);
    struct inf_accel_stats s1 = stats();
    assert_int_equal(s1.host_fills - s0.host_fills, 1);
    assert_int_equal(s1.downloads - s0.downloads, 1);
    assert_int_equal(D->tail_entries - tail0, backbone_entries(q.p) - restored);
    assert_true(backbone_entries(q.p) - restored < restored);
    ckpt_free(ACC, &k);
    assert_int_equal(D->host_live, live0); /* the fill freed the buffers */
    printf("# packed restore at 200 + background fill, 35 tokens, sync: %lld entries downloaded of %lld, "
           "byte-equal\n",
           backbone_entries(q.p) - restored, backbone_entries(q.p));
    pair_free(&q);
    /* 2. snapshot (no wait, no entry), forwards, truncate (waits: the rewind keeps the filled prefix) */
    restored_pair(&q, tok, 180, &k);
    long long restored180 = 0;
    for (int l = 0; l < C->num_hidden_layers; l++)
        restored180 += k.counts[l];
    assert_int_equal(fill_from(&k, q.a, &e), 0);
    s0 = stats();
    tail0 = D->tail_entries;
    pair_snapshot(&q);
    assert_int_equal(stats().downloads, s0.downloads);
    feed(&q, tok + 180, 40, 0);
    pair_truncate(&q);
    assert_int_equal(stats().rewinds - s0.rewinds, 1);
    assert_int_equal(stats().host_fills - s0.host_fills, 1);
    assert_false(host_empty(q.a)); /* the fill's entries are the host copy's now */
    feed(&q, tok + 180, 9, 1);
    same_bytes(&q);
    assert_int_equal(D->tail_entries - tail0, backbone_entries(q.p) - restored180);
    ckpt_free(ACC, &k);
    pair_free(&q);
    /* 3. another state bound meanwhile: the switch syncs (waits for the fill, then only the tail) */
    restored_pair(&q, tok, 160, &k);
    assert_int_equal(fill_from(&k, q.a, &e), 0);
    struct pair o;
    pair_new(&o);
    s0 = stats();
    feed(&o, tok, 12, 0);
    assert_int_equal(stats().host_fills - s0.host_fills, 1);
    feed(&q, tok + 160, 10, 0);
    same_bytes(&q);
    same_bytes(&o);
    ckpt_free(ACC, &k);
    pair_free(&o);
    pair_free(&q);
    /* 4. dropped while filling: free, reset, restore again on the host: stopped, buffers freed */
    for (int how = 0; how < 3; how++) {
        restored_pair(&q, tok, 220, &k);
        assert_int_equal(fill_from(&k, q.a, &e), 0);
        s0 = stats();
        if (how == 0) {
            inf_state_free(q.a);
            q.a = NULL;
            assert_int_equal(inf_state_new(C, &q.a, &e), 0);
            struct inf_forward_opts fo = {0};
            assert_int_equal(inf_model_forward(MA, q.a, tok, 220, &fo, &e), 0);
        } else if (how == 1) {
            inf_state_reset(q.a);
            struct inf_forward_opts fo = {0};
            assert_int_equal(inf_model_forward(MA, q.a, tok, 220, &fo, &e), 0);
        } else {
            struct ckpt k2;
            struct inf_state *src;
            assert_int_equal(inf_state_new(C, &src, &e), 0);
            struct inf_forward_opts fo = {0};
            assert_int_equal(inf_model_forward(M, src, tok, 220, &fo, &e), 0);
            ckpt_of(ACC, src, &k2);
            inf_state_free(src);
            host_restore(&k2, q.a);
            ckpt_free(ACC, &k2);
        }
        assert_int_equal(stats().host_fills, s0.host_fills); /* stopped, not counted */
        assert_int_equal(D->host_live, live0); /* the stopped fill freed the buffers */
        feed(&q, tok + 220, 6, 0);
        same_bytes(&q);
        ckpt_free(ACC, &k);
        pair_free(&q);
    }
    assert_int_equal(D->host_live, live0);
    /* 5. a device forward failing while the fill runs: the host copy keeps the fill's entries and what
     * the download could read back, the state is unbound, and the next forward re-uploads it */
    restored_pair(&q, tok, 140, &k);
    assert_int_equal(fill_from(&k, q.a, &e), 0);
    D->fail_forward = 1;
    struct inf_forward_opts fa = {.logits = q.la};
    assert_int_equal(inf_model_forward(MA, q.a, tok + 140, 4, &fa, &e), CTX_EIO);
    D->fail_forward = 0;
    assert_null(q.a->accel);
    assert_false(host_empty(q.a));
    feed(&q, tok + 140, 12, 0);
    same_bytes(&q);
    ckpt_free(ACC, &k);
    pair_free(&q);
    assert_int_equal(D->host_live, live0);
    /* 6. refused: a state not just restored packed (synced already; or a second fill) */
    restored_pair(&q, tok, 100, &k);
    assert_int_equal(fill_from(&k, q.a, &e), 0);
    struct ckpt k3;
    ckpt_of(ACC, q.p, &k3);
    assert_int_equal(fill_from(&k3, q.a, &e), CTX_EINVAL); /* a fill is running */
    same_bytes(&q);
    ckpt_free(ACC, &k3);
    ckpt_of(ACC, q.p, &k3);
    assert_int_equal(fill_from(&k3, q.a, &e), CTX_EINVAL); /* synced: nothing to fill */
    assert_non_null(strstr(e.msg, "not the one just restored packed"));
    ckpt_free(ACC, &k3);
    ckpt_free(ACC, &k);
    pair_free(&q);
    assert_int_equal(D->host_live, live0);
    printf("# fill: snapshot + rewind after it, a switch, free / reset / host restore while it runs, a failed "
           "forward, refusals: bit-identical, buffers freed\n");
    free(tok);
}

/* The lagging snapshot when the state leaves the device in between (another state bound, then back):
 * the mark is stale, the host copy (synced when it left) is truncated and uploaded again; truncated
 * while away too; and a truncate whose rewind is refused, or to a snapshot the device could not mark,
 * syncs the missing entries before the device lets go. Each continues bit for bit. */
static void test_lagging_snapshot_host_truncate(void **st)
{
    (void)st;
    int n, P, n2, P2;
    int *tok = case_tokens(6, &n, &P), *tok2 = case_tokens(5, &n2, &P2);
    struct ckpt k;
    struct pair q, B;
    restored_pair(&q, tok, 200, &k);
    pair_new(&B);
    long long tail0 = D->tail_entries;
    pair_snapshot(&q);
    assert_int_equal(D->tail_entries, tail0);
    feed(&q, tok + 200, 30, 0);
    feed(&B, tok2, 12, 0); /* q leaves: synced, every entry downloaded */
    assert_null(q.a->accel);
    assert_false(host_empty(q.a));
    feed(&q, tok + 230, 3, 1); /* back: the mark is of another upload */
    struct inf_accel_stats s0 = stats();
    pair_truncate(&q);
    struct inf_accel_stats s1 = stats();
    assert_int_equal(s1.host_truncates - s0.host_truncates, 1);
    assert_int_equal(s1.rewinds - s0.rewinds, 0);
    assert_int_equal(s1.downloads - s0.downloads, 0); /* the host copy had them */
    feed(&q, tok + 200, 10, 0);
    feed(&q, tok + 210, 2, 1);
    same_bytes(&q);
    /* truncated while away */
    feed(&B, tok2 + 12, 2, 1);
    assert_null(q.a->accel);
    pair_truncate(&q);
    feed(&q, tok + 200, 5, 1);
    same_bytes(&q);
    printf("# lagging snapshot after a packed restore, the state away and back: host truncates, bit-identical\n");
    ckpt_free(ACC, &k);
    pair_free(&q);

    /* the rewind refused: the lagging host copy fetches what the snapshot counts, then truncates */
    restored_pair(&q, tok, 160, &k);
    pair_snapshot(&q);
    feed(&q, tok + 160, 40, 0);
    long long bb = 0; /* the backbone's entries at 200: all that the host copy lacks */
    for (int l = 0; l < C->num_hidden_layers; l++)
        bb += q.p->layers[l].n_cache;
    s0 = stats();
    tail0 = D->tail_entries;
    D->fail_rewind = 1;
    pair_truncate(&q);
    D->fail_rewind = 0;
    s1 = stats();
    assert_int_equal(s1.downloads - s0.downloads, 1);
    assert_int_equal(s1.host_truncates - s0.host_truncates, 1);
    assert_int_equal(D->tail_entries - tail0, bb);
    assert_null(q.a->accel);
    feed(&q, tok + 160, 20, 0);
    feed(&q, tok + 180, 3, 1);
    same_bytes(&q);
    ckpt_free(ACC, &k);
    pair_free(&q);
    /* no mark: the same, through the host copy */
    restored_pair(&q, tok, 160, &k);
    D->fail_mark = 1;
    pair_snapshot(&q);
    D->fail_mark = 0;
    assert_true(host_empty(q.a));
    feed(&q, tok + 160, 10, 0);
    s0 = stats();
    pair_truncate(&q);
    s1 = stats();
    assert_int_equal(s1.downloads - s0.downloads, 1);
    assert_int_equal(s1.host_truncates - s0.host_truncates, 1);
    feed(&q, tok + 160, 20, 0);
    same_bytes(&q);
    printf("# lagging snapshot, rewind refused / no device mark: sync, host truncate, re-upload, bit-identical\n");
    ckpt_free(ACC, &k);
    pair_free(&q);
    pair_free(&B);
    free(tok);
    free(tok2);
}

/* A snapshot of an ordinary dirty state (forwards since its last sync, host copy holding part of
 * the entries): the boundary from the device, the rewind keeps the host copy's entries; a failed
 * boundary download is an error naming the accelerator, nothing changed; without the op, the
 * snapshot syncs as before. */
static void test_dirty_snapshot(void **st)
{
    (void)st;
    struct ctx_err e = {0};
    int n, P;
    int *tok = case_tokens(6, &n, &P);
    struct pair q;
    pair_new(&q);
    feed(&q, tok, 100, 0);
    assert_int_equal(inf_state_sync(q.a, &e), 0);
    long long have = entries(q.a);
    feed(&q, tok + 100, 60, 0);
    long long tail0 = D->tail_entries;
    struct inf_accel_stats s0 = stats();
    pair_snapshot(&q);
    assert_int_equal(D->tail_entries, tail0);
    assert_int_equal(entries(q.a), have); /* the host copy as it was */
    feed(&q, tok + 160, 20, 0);
    pair_truncate(&q);
    assert_int_equal(entries(q.a), have);
    feed(&q, tok + 160, 5, 1);
    struct inf_accel_stats s1 = stats();
    assert_int_equal(s1.downloads - s0.downloads, 0);
    assert_int_equal(s1.rewinds - s0.rewinds, 1);
    assert_int_equal(s1.boundary_downloads - s0.boundary_downloads, 1);
    same_bytes(&q);
    assert_int_equal(D->tail_entries - tail0, entries(q.a) - have); /* only what the host lacked */
    /* a failed boundary download: an error, the state still bound and continuing bit for bit */
    feed(&q, tok + 165, 4, 1);
    struct inf_snapshot *sn = NULL;
    D->fail_boundary = 1;
    int rc = inf_state_snapshot(q.a, &sn, &e);
    D->fail_boundary = 0;
    assert_int_equal(rc, CTX_EIO);
    assert_null(sn);
    printf("# failed boundary download: %s\n", e.msg);
    assert_non_null(strstr(e.msg, "accelerator double: the boundary of the state at position 169"));
    assert_ptr_equal(q.a->accel, ACC);
    feed(&q, tok + 169, 3, 1);
    same_bytes(&q);
    printf("# dirty state (%lld of its entries on the host), snapshot, 20 tokens, rewind: no download, "
           "bit-identical\n",
           have);
    pair_free(&q);
    /* an accelerator without download_boundary: the snapshot syncs */
    struct dbl *d2 = calloc(1, sizeof *d2);
    assert_non_null(d2);
    assert_int_equal(inf_model_new(W, NULL, 0, &d2->m, &e), 0);
    assert_int_equal(inf_state_new(C, &d2->dev, &e), 0);
    struct inf_accel_ops ops = dbl_ops;
    ops.download_boundary = NULL;
    struct inf_accel *a2 = inf_accel_new(&ops, d2);
    assert_non_null(a2);
    struct inf_model *ma2;
    assert_int_equal(inf_model_new(W, NULL, 0, &ma2, &e), 0);
    inf_model_set_accel(ma2, a2);
    struct inf_state *x;
    assert_int_equal(inf_state_new(C, &x, &e), 0);
    struct inf_forward_opts o = {0};
    assert_int_equal(inf_model_forward(ma2, x, tok, 90, &o, &e), 0);
    assert_int_equal(inf_state_snapshot(x, &sn, &e), 0);
    struct inf_accel_stats s;
    inf_accel_stats(a2, &s);
    assert_int_equal(s.downloads, 1);
    assert_int_equal(s.boundary_downloads, 0);
    assert_int_equal(d2->boundaries, 0);
    assert_false(host_empty(x));
    inf_snapshot_free(sn);
    inf_state_free(x);
    inf_model_free(ma2);
    inf_accel_free(a2);
    free(tok);
}

/* Another state bound and back after a packed restore: the restored one left synced is the resident,
 * and comes back with a partial upload; a packed restore over a resident counts as clobbering its
 * entries up to the restored counts. */
static void test_packed_resident(void **st)
{
    (void)st;
    int n, P, n2, P2;
    int *tok = case_tokens(6, &n, &P), *tok2 = case_tokens(5, &n2, &P2);
    struct ckpt k;
    struct pair A, B;
    restored_pair(&A, tok, 250, &k);
    pair_new(&B);
    feed(&A, tok + 250, 3, 1);
    feed(&B, tok2, 20, 0); /* A leaves: synced (all its entries downloaded) */
    long long want = overlap(A.p, B.p), total = entries(A.p);
    struct inf_accel_stats s0 = stats();
    feed(&A, tok + 253, 4, 1);
    struct inf_accel_stats s1 = stats();
    assert_int_equal(s1.partial_uploads - s0.partial_uploads, 1);
    assert_int_equal(s1.partial_entries - s0.partial_entries, want);
    assert_int_equal(s1.kept_entries - s0.kept_entries, total - want);
    same_bytes(&A);
    same_bytes(&B);
    printf("# packed restore A, B, A again: partial (%lld of %lld entries sent), bit-identical\n", want, total);
    /* A resident, a packed restore of a smaller checkpoint over it, A again: partial, sending the
     * restored state's counts */
    struct ckpt k2;
    struct pair R;
    feed(&B, tok2 + 20, 2, 1); /* A leaves synced: the resident */
    restored_pair(&R, tok2, 140, &k2);
    feed(&R, tok2 + 140, 2, 1);
    want = overlap(A.p, R.p);
    total = entries(A.p);
    s0 = stats();
    feed(&A, tok + 257, 3, 1);
    s1 = stats();
    assert_int_equal(s1.partial_uploads - s0.partial_uploads, 1);
    assert_int_equal(s1.partial_entries - s0.partial_entries, want);
    same_bytes(&A);
    same_bytes(&R);
    /* and R, restored packed and left without a sync: freed while bound, A again */
    feed(&R, tok2 + 142, 2, 1);
    inf_state_free(R.a);
    R.a = NULL;
    want = overlap(A.p, R.p);
    s0 = stats();
    feed(&A, tok + 260, 2, 1);
    s1 = stats();
    assert_int_equal(s1.partial_uploads - s0.partial_uploads, 1);
    assert_int_equal(s1.partial_entries - s0.partial_entries, want);
    same_bytes(&A);
    printf("# A resident, a smaller checkpoint restored packed over it, A again: partial (%lld of %lld), "
           "bit-identical\n",
           want, total);
    ckpt_free(ACC, &k);
    ckpt_free(ACC, &k2);
    pair_free(&A);
    pair_free(&B);
    pair_free(&R);
    free(tok);
    free(tok2);
}

/* Counts that do not fit the position leave nothing bound (the state bound before stays so); a
 * failed device op too; an accelerator without the op says so. */
static void test_packed_errors(void **st)
{
    (void)st;
    struct ctx_err e = {0};
    int n, P;
    int *tok = case_tokens(6, &n, &P);
    struct ckpt k;
    struct pair q;
    restored_pair(&q, tok, 200, &k);
    struct pair B;
    pair_new(&B);
    feed(&B, tok, 10, 0); /* B bound and ahead of its host copy */
    struct inf_state *x;
    assert_int_equal(inf_state_new(C, &x, &e), 0);
    long long bad[INF_MAX_LAYERS + 8];
    memcpy(bad, k.counts, sizeof bad);
    int csa = -1;
    for (int l = 0; l < C->num_hidden_layers && csa < 0; l++)
        if (C->compress_ratios[l] == 4)
            csa = l;
    assert_true(csa >= 0);
    bad[csa]--;
    assert_int_equal(inf_state_restore_boundary_counts(x, k.b, k.blen, k.counts, &e), 0);
    struct inf_accel_stats s0 = stats();
    assert_int_equal(inf_accel_restore_packed(ACC, x, bad, (const void *const *)k.streams, &e), CTX_EINVAL);
    printf("# wrong counts: %s\n", e.msg);
    assert_non_null(strstr(e.msg, "layer"));
    assert_null(x->accel);
    assert_ptr_equal(B.a->accel, ACC); /* untouched */
    assert_int_equal(stats().uploads, s0.uploads);
    assert_int_equal(stats().downloads, s0.downloads);
    /* the device op fails: not bound, the state bound before left synced */
    D->fail_upload = 1;
    assert_int_equal(inf_accel_restore_packed(ACC, x, k.counts, (const void *const *)k.streams, &e), CTX_EIO);
    printf("# failed packed upload: %s\n", e.msg);
    assert_non_null(strstr(e.msg, "accelerator double: packed restore of the state at position 200"));
    D->fail_upload = 0;
    assert_null(x->accel);
    assert_null(B.a->accel);
    same_bytes(&B);
    feed(&B, tok + 10, 5, 0);
    same_bytes(&B);
    /* reset and recomputed, as the daemon does */
    inf_state_reset(x);
    struct inf_forward_opts o = {.logits = q.la}, op = {.logits = q.lp};
    assert_int_equal(inf_model_forward(MA, x, tok, 200, &o, &e), 0);
    assert_int_equal(inf_model_forward(M, q.p, tok + 200, 1, &op, &e), 0);
    assert_int_equal(inf_model_forward(MA, x, tok + 200, 1, &o, &e), 0);
    assert_memory_equal(q.lp, q.la, sizeof(float) * (size_t)C->vocab_size);
    /* no op */
    struct dbl *d2 = calloc(1, sizeof *d2);
    assert_non_null(d2);
    assert_int_equal(inf_model_new(W, NULL, 0, &d2->m, &e), 0);
    assert_int_equal(inf_state_new(C, &d2->dev, &e), 0);
    struct inf_accel_ops ops = dbl_ops;
    ops.upload_packed = NULL;
    ops.host_alloc = NULL;
    ops.host_free = NULL;
    struct inf_accel *a2 = inf_accel_new(&ops, d2);
    assert_non_null(a2);
    assert_false(inf_accel_can_restore_packed(a2));
    assert_false(inf_accel_can_restore_packed(NULL));
    void *h = inf_accel_host_alloc(a2, 100); /* malloc */
    assert_non_null(h);
    inf_accel_host_free(a2, h);
    assert_int_equal(inf_accel_restore_packed(a2, x, k.counts, (const void *const *)k.streams, &e), CTX_EUNSUPPORTED);
    printf("# without the op: %s\n", e.msg);
    inf_accel_free(a2);
    inf_state_free(x);
    ckpt_free(ACC, &k);
    pair_free(&q);
    pair_free(&B);
    free(tok);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_snapshot_rewind),
        cmocka_unit_test(test_swap),
        cmocka_unit_test(test_stale_mark),
        cmocka_unit_test(test_cpu_fallback_and_lifetimes),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_resident_partial),
        cmocka_unit_test(test_resident_changed),
        cmocka_unit_test(test_two_big),
        cmocka_unit_test(test_other_bigger),
        cmocka_unit_test(test_no_prefix_op),
        cmocka_unit_test(test_packed_restore),
        cmocka_unit_test(test_packed_snapshot),
        cmocka_unit_test(test_lagging_snapshot_host_truncate),
        cmocka_unit_test(test_dirty_snapshot),
        cmocka_unit_test(test_packed_resident),
        cmocka_unit_test(test_packed_errors),
        cmocka_unit_test(test_packed_fill),
    };
    return cmocka_run_group_tests(tests, setup_accel, teardown_accel);
}
