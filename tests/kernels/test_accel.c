/* The CUDA engine as an inference/ accelerator (kernels/cuda_accel.h): what `ctxd --backend cuda`
 * runs. Plain TAP; "1..0 # SKIP" without a device.
 *
 * On the bundled trained model models/ctx-small (the model ctxd runs by default; official checkpoint
 * format, FP4 experts) and the synthetic `mid` config (CSA indexer selecting from hundreds of
 * entries), through inf_model_forward with the accelerator attached:
 * - the GPU's logits against the plain CPU model's on the same tokens: per-row rms(diff)/sigma
 *   worst <= 0.8 and median <= 0.3 (the bounds of tests/kernels/test_engine.c, which says why two
 *   correct engines differ that much);
 * - the daemon's moves are invisible in the results, bit for bit (the engine is deterministic):
 *   snapshot, other tokens, truncate (a device rewind) and continue; two sequences alternating on
 *   the device (each switch downloads the outgoing state's missing tail and uploads the other);
 *   a stale mark (host truncate, re-upload); inf_state_sync's host copy continued on the device;
 *   a big state, a small one (freed while bound, as fim.c does), the big one again: a partial upload
 *   (only the small state's leading entries of each layer go up again, the rest is still on the GPU);
 * - a checkpoint restored straight to the device (inf_accel_restore_packed, streams packed with
 *   inference/kvpack.h into pinned inf_accel_host_alloc buffers) against today's host restore +
 *   upload: the decode steps after it equal the reference bit for bit, the synced host copies are
 *   byte-equal; a snapshot after it (the boundary from the device, no entry downloaded) / rewind with
 *   the host copy still lagging, then the sync; the same snapshot with the state away in between (host
 *   truncate); a stale mark refused while the host copy lags (the truncate syncs first); another
 *   state bound and back (partial upload), and counts that do not fit (refused, nothing bound);
 * - the counters show which path ran (rewinds, uploads, partial uploads and their entries, downloads);
 * - ctx-small again over 2 layer-split shards on the one device (cuda_multi: what --gpus 0,1 runs);
 * - speculative decoding through the accelerator's spec ops (run_spec: the v4-tiny-a fixture, also
 *   over 2 shards, and mid): every step's logits bit-equal to a plain decode of the same tokens.
 * CTX_ACCEL_MID_PREFILL (default 1100) sizes the mid run; CTX_ACCEL_ONLY_SPEC runs the fixture's spec part only. "1..0 # SKIP" without a device. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "accel.h"
#include "config.h"
#include "cuda_accel.h"
#include "kvpack.h"
#include "model.h"
#include "sample.h"
#include "spec.h"
#include "state.h"
#include "weights.h"
#define TEST_RNG_SEED 0x5eed5eedULL
#include "tap.h"

static int V;

/* rms(x - ref)/sigma(ref) of one row */
static double rms_sigma(const float *x, const float *ref)
{
    double m = 0, v = 0, d2 = 0;
    for (int i = 0; i < V; i++)
        m += ref[i];
    m /= V;
    for (int i = 0; i < V; i++) {
        v += (ref[i] - m) * (ref[i] - m);
        d2 += ((double)x[i] - ref[i]) * ((double)x[i] - ref[i]);
    }
    return sqrt(d2 / V) / sqrt(v / V);
}

/* Feeds tok[a..b) in one call (or one token a call when step), logits of each call into rows. */
static int feed(struct inf_model *m, struct inf_state *s, const int *tok, int a, int b, int step, float *rows,
                int *nrow)
{
    struct ctx_err e = {0};
    for (int i = a; i < b; i += step ? 1 : b - a) {
        int k = step ? 1 : b - a;
        struct inf_forward_opts o = {.logits = rows ? rows + (size_t)(*nrow)++ * V : NULL};
        if (inf_model_forward(m, s, tok + i, k, &o, &e)) {
            printf("# forward at %lld: %s\n", s->pos, e.msg);
            return -1;
        }
    }
    return 0;
}

static struct inf_accel_stats stats(struct inf_accel *a)
{
    struct inf_accel_stats s;
    inf_accel_stats(a, &s);
    return s;
}

/* A checkpoint of st (synced) as the KV cache keeps it: each layer's entries and indexer keys packed
 * (inference/kvpack.h) into pinned buffers from inf_accel_host_alloc, and its boundary. */
struct ckpt {
    int ns;
    void **streams;
    long long *counts;
    uint8_t *b;
    size_t blen;
};
static void ckpt_free(struct inf_accel *a, struct ckpt *k)
{
    for (int i = 0; k->streams && i < k->ns; i++)
        inf_accel_host_free(a, k->streams[i]);
    free(k->streams);
    free(k->counts);
    free(k->b);
    memset(k, 0, sizeof *k);
}
static int ckpt_of(struct inf_accel *a, const struct inf_state *st, struct ckpt *k, struct ctx_err *e)
{
    const struct inf_config *c = &st->cfg;
    size_t eb = inf_kvpack_entry_bytes(c), ib = inf_kvpack_ikey_bytes(c);
    memset(k, 0, sizeof *k);
    k->ns = 2 * st->n_layers;
    k->streams = calloc((size_t)k->ns, sizeof *k->streams);
    k->counts = calloc((size_t)st->n_layers, sizeof *k->counts);
    if (!k->streams || !k->counts)
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    for (int l = 0; l < st->n_layers; l++) {
        const struct inf_layer_state *L = &st->layers[l];
        long long n = L->n_cache;
        k->counts[l] = n;
        uint8_t *p = inf_accel_host_alloc(a, (size_t)n * eb), *q = inf_accel_host_alloc(a, L->ratio == 4 ? (size_t)n * ib : 0);
        k->streams[2 * l] = p;
        k->streams[2 * l + 1] = q;
        if (!p || !q)
            return ctx_err_set(e, CTX_ENOMEM, "no pinned memory for layer %d's streams", l);
        for (long long i = 0; i < n; i++) {
            int bad = inf_kvpack_entry(c, L->cache + (size_t)i * c->head_dim, p + (size_t)i * eb);
            if (bad < 0 && L->ratio == 4)
                bad = inf_kvpack_ikey(c, L->icache + (size_t)i * c->index_head_dim, q + (size_t)i * ib);
            if (bad >= 0)
                return ctx_err_set(e, CTX_EFORMAT, "layer %d entry %lld does not pack (dim %d)", l, i, bad);
        }
    }
    return inf_state_boundary(st, &k->b, &k->blen, e);
}
/* Today's ctxd restore: entries unpacked into the host arrays, then the boundary (the next forward
 * uploads the whole state). */
static int host_restore(const struct ckpt *k, struct inf_state *st, struct ctx_err *e)
{
    const struct inf_config *c = &st->cfg;
    size_t eb = inf_kvpack_entry_bytes(c), ib = inf_kvpack_ikey_bytes(c);
    inf_state_reset(st);
    for (int l = 0; l < st->n_layers; l++) {
        struct inf_layer_state *L = &st->layers[l];
        int rc = k->counts[l] ? inf_state_reserve(st, l, k->counts[l], e) : 0;
        if (rc)
            return rc;
        for (long long i = 0; i < k->counts[l]; i++) {
            inf_kvunpack_entry(c, (const uint8_t *)k->streams[2 * l] + (size_t)i * eb, L->cache + (size_t)i * c->head_dim);
            if (L->ratio == 4)
                inf_kvunpack_ikey(c, (const uint8_t *)k->streams[2 * l + 1] + (size_t)i * ib,
                                  L->icache + (size_t)i * c->index_head_dim);
        }
        L->n_cache = k->counts[l];
    }
    return inf_state_restore_boundary(st, k->b, k->blen, e);
}
/* What ctxd's start_from_cache does with store_kv_state_read_packed's result. */
static int packed_restore(struct inf_accel *a, const struct ckpt *k, struct inf_state *st, struct ctx_err *e)
{
    inf_state_reset(st);
    int rc = inf_state_restore_boundary_counts(st, k->b, k->blen, k->counts, e);
    return rc ? rc : inf_accel_restore_packed(a, st, k->counts, (const void *const *)k->streams, e);
}
static int same_state(struct inf_state *a, struct inf_state *b, struct ctx_err *e)
{
    uint8_t *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    int same = !inf_state_sync(a, e) && !inf_state_sync(b, e) && !inf_state_serialize(a, &x, &nx, e) &&
               !inf_state_serialize(b, &y, &ny, e) && nx == ny && !memcmp(x, y, nx);
    free(x);
    free(y);
    return same;
}

/* A checkpoint at P of the reference sequence restored straight to the device
 * (inf_accel_restore_packed) against today's host restore + upload: the decode steps after it give
 * the reference's logits bit for bit either way, the synced host copies are byte-equal, and a
 * snapshot / rewind or another state bound in between change nothing. */
static void run_packed(const char *what, struct inf_model *MA, struct inf_accel *A, const struct inf_config *c,
                       const int *tok, const int *tok2, int P, int D, const float *ref)
{
    struct ctx_err e = {0};
    int n = P + D;
    size_t rowb = sizeof(float) * (size_t)V;
    float *got = malloc(rowb * (size_t)(D + 4)), *goth = malloc(rowb * (size_t)(D + 4));
    struct inf_state *s = NULL, *h = NULL, *x = NULL, *o = NULL;
    struct ckpt k = {0};
    int nr = 0, nh = 0, no = 0;
    int ok = got && goth && !inf_state_new(c, &s, &e) && !inf_state_new(c, &h, &e) && !inf_state_new(c, &x, &e) &&
             !inf_state_new(c, &o, &e);
    ok = ok && !feed(MA, s, tok, 0, P, 0, NULL, &nr) && !inf_state_sync(s, &e) && !ckpt_of(A, s, &k, &e);
    if (!ok) {
        tap(0, "%s: packed restore: checkpoint: %s", what, e.msg);
        goto out;
    }
    /* host path, then the packed path; each continued with the reference's decode tokens */
    ok = !host_restore(&k, h, &e) && !feed(MA, h, tok, P, n, 1, goth, &nh);
    struct inf_accel_stats a0 = stats(A);
    ok = ok && !packed_restore(A, &k, x, &e);
    struct inf_accel_stats a1 = stats(A);
    int lag = ok && x->accel == A;
    for (int l = 0; ok && l < c->num_hidden_layers; l++)
        lag = lag && x->layers[l].n_cache == 0;
    nr = 0;
    ok = ok && !feed(MA, x, tok, P, n, 1, got, &nr);
    int same = ok && !memcmp(got, ref + V, rowb * (size_t)D) && !memcmp(goth, ref + V, rowb * (size_t)D);
    int bytes = ok && same_state(x, h, &e);
    tap(same && bytes && lag && a1.packed_uploads - a0.packed_uploads == 1,
        "%s: checkpoint at %d restored packed (host copy lagging: %s) vs host restore + upload: %d decode steps %s, "
        "synced states %s",
        what, P, lag ? "yes" : "NO", D, same ? "bit-identical (== reference)" : "DIFFERENT",
        bytes ? "byte-equal" : "DIFFERENT");
    if (!ok)
        printf("# %s\n", e.msg);
    /* snapshot right after the packed restore (ctxd's "ready" one: the boundary from the device, no
     * entry downloaded), other tokens, rewind (the host copy still lagging), continue; then the
     * checkpoint's sync downloads every entry and equals the host-restored state */
    struct inf_snapshot *sn = NULL;
    nr = 0;
    ok = !packed_restore(A, &k, x, &e);
    a0 = stats(A);
    ok = ok && !inf_state_snapshot(x, &sn, &e);
    a1 = stats(A);
    int nodl = ok && a1.downloads == a0.downloads && a1.boundary_downloads - a0.boundary_downloads == 1;
    ok = ok && !feed(MA, x, tok2, 0, 30, 0, NULL, &no) && !feed(MA, x, tok2, 30, 33, 1, NULL, &no);
    ok = ok && !inf_state_truncate(x, sn, &e);
    lag = ok && x->accel == A;
    for (int l = 0; ok && l < c->num_hidden_layers; l++)
        lag = lag && x->layers[l].n_cache == 0;
    ok = ok && !feed(MA, x, tok, P, n, 1, got, &nr);
    a1 = stats(A);
    same = ok && !memcmp(got, ref + V, rowb * (size_t)D);
    nodl = nodl && a1.downloads == a0.downloads;
    bytes = ok && same_state(x, h, &e);
    tap(same && bytes && nodl && lag && a1.rewinds - a0.rewinds == 1 && a1.uploads == a0.uploads,
        "%s: packed restore, snapshot (no entry downloaded: %s), 33 other tokens, truncate (device rewind, host copy "
        "lagging: %s), %d steps: %s, the sync after: %s",
        what, nodl ? "yes" : "NO", lag ? "yes" : "NO", D, same ? "bit-identical" : "DIFFERENT",
        bytes ? "byte-equal to the host restore" : "DIFFERENT");
    if (!ok)
        printf("# %s\n", e.msg);
    inf_snapshot_free(sn);
    /* the same snapshot, the state away in between (another state bound, then back): the mark is
     * stale, the truncate goes through the host copy synced when it left */
    sn = NULL;
    nr = 0;
    inf_state_reset(o);
    ok = !packed_restore(A, &k, x, &e) && !inf_state_snapshot(x, &sn, &e);
    ok = ok && !feed(MA, x, tok2, 0, 30, 0, NULL, &no) && !feed(MA, o, tok2, 0, 24, 0, NULL, &no);
    ok = ok && !feed(MA, x, tok2, 30, 33, 1, NULL, &no);
    a0 = stats(A);
    ok = ok && !inf_state_truncate(x, sn, &e) && !feed(MA, x, tok, P, n, 1, got, &nr);
    a1 = stats(A);
    same = ok && !memcmp(got, ref + V, rowb * (size_t)D);
    bytes = ok && same_state(x, h, &e);
    tap(same && bytes && a1.host_truncates - a0.host_truncates == 1 && a1.rewinds == a0.rewinds,
        "%s: packed restore, snapshot, 30 other tokens, another state (24 tokens), back, truncate (host), %d steps: "
        "%s, synced state %s",
        what, D, same ? "bit-identical" : "DIFFERENT", bytes ? "byte-equal" : "DIFFERENT");
    if (!ok)
        printf("# %s\n", e.msg);
    inf_snapshot_free(sn);
    /* a mark the engine refuses while the host copy lags: snapshots S1 at P and S2 at P + D/2 (the
     * reference's tokens), back to S1 (rewind, still lagging), the same tokens again, then S2: stale
     * (rewound behind it), so the truncate syncs the entries S2 counts before the host truncate */
    struct inf_snapshot *s2 = NULL;
    sn = NULL;
    nr = 0;
    int half = D / 2;
    ok = !packed_restore(A, &k, x, &e) && !inf_state_snapshot(x, &sn, &e);
    ok = ok && !feed(MA, x, tok, P, P + half, 1, NULL, &nr) && !inf_state_snapshot(x, &s2, &e);
    ok = ok && !inf_state_truncate(x, sn, &e) && !feed(MA, x, tok, P, P + half, 1, NULL, &nr);
    a0 = stats(A);
    ok = ok && !inf_state_truncate(x, s2, &e);
    a1 = stats(A);
    nr = 0;
    ok = ok && !feed(MA, x, tok, P + half, n, 1, got, &nr);
    same = ok && !memcmp(got, ref + (size_t)(1 + half) * V, rowb * (size_t)(D - half));
    bytes = ok && same_state(x, h, &e);
    tap(same && bytes && a1.host_truncates - a0.host_truncates == 1 && a1.downloads - a0.downloads == 1 &&
            a1.rewinds == a0.rewinds,
        "%s: packed restore, snapshots at %d and %d, rewind to the first, the same %d tokens, truncate to the second "
        "(refused: stale; sync of the lagging host copy + host truncate), %d steps: %s, synced state %s",
        what, P, P + half, half, D - half, same ? "bit-identical" : "DIFFERENT", bytes ? "byte-equal" : "DIFFERENT");
    if (!ok)
        printf("# %s\n", e.msg);
    inf_snapshot_free(sn);
    inf_snapshot_free(s2);
    /* another state bound in between: the restored one leaves synced and comes back partially */
    nr = 0;
    inf_state_reset(o);
    ok = !packed_restore(A, &k, x, &e) && !feed(MA, x, tok, P, P + D / 2, 1, got, &nr);
    ok = ok && !feed(MA, o, tok2, 0, 24, 0, NULL, &no);
    a0 = stats(A);
    ok = ok && !feed(MA, x, tok, P + D / 2, n, 1, got, &nr);
    a1 = stats(A);
    same = ok && !memcmp(got, ref + V, rowb * (size_t)D);
    bytes = ok && same_state(x, h, &e);
    tap(same && bytes && a1.partial_uploads - a0.partial_uploads == 1,
        "%s: packed restore, %d steps, another state (24 tokens), back (partial upload: %lld entries sent, %lld kept): "
        "%s, synced state %s",
        what, D / 2, a1.partial_entries - a0.partial_entries, a1.kept_entries - a0.kept_entries,
        same ? "bit-identical" : "DIFFERENT", bytes ? "byte-equal" : "DIFFERENT");
    if (!ok)
        printf("# %s\n", e.msg);
    /* counts that do not fit: refused, nothing bound, the bound state untouched */
    if (c->num_hidden_layers > 0) {
        long long *bad = malloc(sizeof(long long) * (size_t)x->n_layers);
        int l4 = -1;
        for (int l = 0; l < c->num_hidden_layers && l4 < 0; l++)
            if (c->compress_ratios[l] == 4)
                l4 = l;
        int refused = 0;
        if (bad && l4 >= 0) {
            memcpy(bad, k.counts, sizeof(long long) * (size_t)x->n_layers);
            bad[l4]++;
            struct inf_state *y = NULL;
            refused = !inf_state_new(c, &y, &e) &&
                      !inf_state_restore_boundary_counts(y, k.b, k.blen, k.counts, &e) &&
                      inf_accel_restore_packed(A, y, bad, (const void *const *)k.streams, &e) == CTX_EINVAL &&
                      !y->accel && x->accel == A;
            inf_state_free(y);
        }
        tap(refused, "%s: packed restore with a wrong count refused, nothing bound: %s", what, e.msg);
        free(bad);
    }
out:
    ckpt_free(A, &k);
    inf_state_free(s);
    inf_state_free(h);
    inf_state_free(x);
    inf_state_free(o);
    free(got);
    free(goth);
}

/* One model: reference run, CPU agreement, then the daemon's moves, each against the reference. */
static void run(const char *what, const struct inf_weights *w, int P, int D, int shards)
{
    struct ctx_err e = {0};
    const struct inf_config *c = inf_weights_config(w);
    V = c->vocab_size;
    int n = P + D;
    int *tok = malloc(sizeof(int) * (size_t)n), *tok2 = malloc(sizeof(int) * (size_t)n);
    for (int i = 0; i < n; i++) {
        tok[i] = (int)(next_u64() % (uint64_t)V);
        tok2[i] = (int)(next_u64() % (uint64_t)V);
    }
    struct inf_model *M = NULL, *MA = NULL;
    struct inf_accel *A = NULL;
    static const int dev0[2] = {0, 0}; /* shards may share a device: the layer-split path on one GPU */
    struct cuda_accel_opts co = {.devices = dev0, .n_devices = shards, .max_ctx = n + 64, .max_chunk = 128};
    if (inf_model_new(w, NULL, 0, &M, &e) || inf_model_new(w, NULL, 0, &MA, &e) || cuda_accel_new(w, &co, &A, &e)) {
        tap(0, "%s: model and accelerator: %s", what, e.msg);
        return;
    }
    inf_model_set_accel(MA, A);
    printf("# %s: %s, %d-token prefill + %d decode steps\n", what, cuda_accel_describe(A), P, D);
    size_t rowb = sizeof(float) * (size_t)V;
    float *ref = malloc(rowb * (size_t)(D + 1)), *cpu = malloc(rowb * (size_t)(D + 1)),
          *got = malloc(rowb * (size_t)(D + 4));
    struct inf_state *s1 = NULL, *s2 = NULL, *sc = NULL;
    inf_state_new(c, &s1, &e);
    inf_state_new(c, &s2, &e);
    inf_state_new(c, &sc, &e);
    int nr = 0, nc = 0;
    /* reference on the device, and the CPU on the same tokens */
    int ok = !feed(MA, s1, tok, 0, P, 0, ref, &nr) && !feed(MA, s1, tok, P, n, 1, ref, &nr);
    ok = ok && !feed(M, sc, tok, 0, P, 0, cpu, &nc) && !feed(M, sc, tok, P, n, 1, cpu, &nc);
    double worst = 0, *r = malloc(sizeof(double) * (size_t)(D + 1));
    for (int i = 0; ok && i <= D; i++) {
        r[i] = rms_sigma(ref + (size_t)i * V, cpu + (size_t)i * V);
        worst = fmax(worst, r[i]);
    }
    int below = 0; /* median <= 0.3: more than half of the rows at most 0.3 */
    for (int i = 0; ok && i <= D; i++)
        below += r[i] <= 0.3;
    tap(ok && worst <= 0.8 && 2 * below > D + 1, "%s: GPU through inf_model_forward vs the CPU model: rms/sigma worst %.4f, "
        "%d of %d rows <= 0.3", what, worst, below, D + 1);
    free(r);
    /* snapshot, other tokens, truncate (device rewind), continue */
    int P0 = P / 2;
    inf_state_reset(s1);
    struct inf_accel_stats a0 = stats(A);
    nr = 0;
    struct inf_snapshot *sn = NULL;
    ok = !feed(MA, s1, tok, 0, P0, 0, NULL, &nr) && !inf_state_snapshot(s1, &sn, &e);
    ok = ok && !feed(MA, s1, tok2, 0, 40, 0, NULL, &nr) && !feed(MA, s1, tok2, 40, 43, 1, NULL, &nr);
    ok = ok && !inf_state_truncate(s1, sn, &e);
    ok = ok && !feed(MA, s1, tok2, 0, 20, 0, NULL, &nr) && !inf_state_truncate(s1, sn, &e); /* twice */
    ok = ok && !feed(MA, s1, tok, P0, P, 0, got, &nr) && !feed(MA, s1, tok, P, n, 1, got, &nr);
    struct inf_accel_stats a1 = stats(A);
    int same = ok && !memcmp(got, ref, rowb * (size_t)(D + 1));
    /* the snapshot of the dirty state took its boundary from the device: nothing downloaded */
    tap(same && a1.rewinds - a0.rewinds == 2 && a1.host_truncates == a0.host_truncates &&
            a1.downloads == a0.downloads && a1.boundary_downloads - a0.boundary_downloads == 1,
        "%s: snapshot at %d (boundary only: %lld downloads), 43 other tokens, truncate twice (device rewinds: %lld), "
        "continue: %s",
        what, P0, a1.downloads - a0.downloads, a1.rewinds - a0.rewinds, same ? "bit-identical" : "DIFFERENT");
    /* two sequences alternating: downloads of tails, uploads */
    inf_state_reset(s1);
    inf_state_reset(s2);
    a0 = stats(A);
    nr = 0;
    int nr2 = 0;
    ok = !feed(MA, s1, tok, 0, P0, 0, NULL, &nr) && !feed(MA, s2, tok2, 0, 50, 0, NULL, &nr2);
    ok = ok && !feed(MA, s1, tok, P0, P, 0, got, &nr) && !feed(MA, s2, tok2, 50, 53, 1, NULL, &nr2);
    ok = ok && !feed(MA, s1, tok, P, P + D / 2, 1, got, &nr) && !feed(MA, s2, tok2, 53, 60, 0, NULL, &nr2);
    ok = ok && !feed(MA, s1, tok, P + D / 2, n, 1, got, &nr);
    a1 = stats(A);
    same = ok && !memcmp(got, ref, rowb * (size_t)(D + 1));
    tap(same && a1.uploads - a0.uploads == 7 && a1.downloads - a0.downloads == 6,
        "%s: two sequences alternating (%lld uploads, %lld tail downloads): %s", what, a1.uploads - a0.uploads,
        a1.downloads - a0.downloads, same ? "bit-identical" : "DIFFERENT");
    /* big / small / big (an editor's completion between two questions on a repository): the small
     * states overwrite only their leading entries of each layer, which is all that goes up again */
    inf_state_reset(s1);
    inf_state_reset(s2);
    nr = 0;
    struct inf_state *s4 = NULL;
    ok = !feed(MA, s1, tok, 0, P, 0, got, &nr) && !inf_state_new(c, &s4, &e);
    ok = ok && !feed(MA, s4, tok2, 0, 24, 0, NULL, &nr2) && !feed(MA, s4, tok2, 24, 27, 1, NULL, &nr2);
    inf_state_free(s4); /* while bound */
    a0 = stats(A);
    ok = ok && !feed(MA, s1, tok, P, P + D / 2, 1, got, &nr);
    a1 = stats(A);
    ok = ok && !feed(MA, s2, tok2, 0, 40, 0, NULL, &nr2) && !feed(MA, s1, tok, P + D / 2, n, 1, got, &nr);
    struct inf_accel_stats a2 = stats(A);
    same = ok && !memcmp(got, ref, rowb * (size_t)(D + 1));
    long long sent = a2.partial_entries - a0.partial_entries, kept = a2.kept_entries - a0.kept_entries;
    tap(same && a1.partial_uploads - a0.partial_uploads == 1 && a2.partial_uploads - a1.partial_uploads == 1 &&
            a2.uploads - a0.uploads == 3 && kept > 0 && sent < kept,
        "%s: big (%d tokens) / small / big / small / big: 2 partial uploads (%lld entries sent, %lld kept on the "
        "device): %s",
        what, P, sent, kept, same ? "bit-identical" : "DIFFERENT");
    /* a stale mark: snapshot, leave the device, come back, truncate -> host copy + upload */
    inf_state_reset(s1);
    inf_snapshot_free(sn);
    sn = NULL;
    nr = 0;
    ok = !feed(MA, s1, tok, 0, P0, 0, NULL, &nr) && !inf_state_snapshot(s1, &sn, &e);
    ok = ok && !feed(MA, s1, tok2, 0, 30, 0, NULL, &nr) && !feed(MA, s2, tok2, 0, 10, 0, NULL, &nr2);
    ok = ok && !feed(MA, s1, tok2, 30, 32, 1, NULL, &nr);
    a0 = stats(A);
    ok = ok && !inf_state_truncate(s1, sn, &e);
    a1 = stats(A);
    ok = ok && !feed(MA, s1, tok, P0, P, 0, got, &nr) && !feed(MA, s1, tok, P, n, 1, got, &nr);
    same = ok && !memcmp(got, ref, rowb * (size_t)(D + 1));
    tap(same && a1.host_truncates - a0.host_truncates == 1 && a1.rewinds == a0.rewinds,
        "%s: stale mark (host truncate, re-upload), continue: %s", what, same ? "bit-identical" : "DIFFERENT");
    /* the synced host copy, moved to a new state, continues on the device */
    inf_state_reset(s1);
    nr = 0;
    ok = !feed(MA, s1, tok, 0, P0, 0, NULL, &nr) && !inf_state_sync(s1, &e);
    uint8_t *buf = NULL;
    size_t len = 0;
    struct inf_state *s3 = NULL;
    ok = ok && !inf_state_serialize(s1, &buf, &len, &e) && !inf_state_deserialize(c, buf, len, &s3, &e);
    ok = ok && !feed(MA, s3, tok, P0, P, 0, got, &nr) && !feed(MA, s3, tok, P, n, 1, got, &nr);
    same = ok && !memcmp(got, ref, rowb * (size_t)(D + 1));
    tap(same, "%s: synced host copy (%zu bytes serialised) continued on the device: %s", what, len,
        same ? "bit-identical" : "DIFFERENT");
    if (!ok)
        printf("# %s\n", e.msg);
    run_packed(what, MA, A, c, tok, tok2, P, D, ref);
    free(buf);
    inf_snapshot_free(sn);
    inf_state_free(s1);
    inf_state_free(s2);
    inf_state_free(s3);
    inf_state_free(sc);
    inf_model_free(M);
    inf_model_free(MA);
    inf_accel_free(A);
    free(ref);
    free(cpu);
    free(got);
    free(tok);
    free(tok2);
}

/* Speculative decoding on the device (inference/spec.h over cuda_accel's spec ops, opts.mtp): a
 * caller that keeps the MTP's drafts or not (greedy; every draft kept; kept and refused in turn)
 * gets, at every step, the logits a plain decode on the same accelerator gives for the same tokens,
 * bit for bit (a two-token forward gives each row a one-token step's bits; a refused draft's
 * position is undone exactly), and the position follows the tokens given. */
static void run_spec(const char *what, const struct inf_weights *w, int P, int D, int shards)
{
    struct ctx_err e = {0};
    const struct inf_config *c = inf_weights_config(w);
    V = c->vocab_size;
    static const int dev0[2] = {0, 0};
    struct cuda_accel_opts co = {.devices = dev0, .n_devices = shards, .max_ctx = P + D + 64, .max_chunk = 256,
                                 .mtp = 1};
    struct inf_model *MA = NULL;
    struct inf_accel *A = NULL;
    if (inf_model_new(w, NULL, 0, &MA, &e) || cuda_accel_new(w, &co, &A, &e)) {
        tap(0, "%s: model and accelerator with the MTP block: %s", what, e.msg);
        inf_model_free(MA);
        return;
    }
    inf_model_set_accel(MA, A);
    tap(inf_accel_can_spec(A), "%s: the accelerator offers the spec ops (%s)", what, cuda_accel_describe(A));
    int *prompt = malloc(sizeof(int) * (size_t)P), *toks = malloc(sizeof(int) * (size_t)D);
    for (int i = 0; i < P; i++)
        prompt[i] = (int)(next_u64() % (uint64_t)V);
    size_t rowb = sizeof(float) * (size_t)V;
    float *lg = malloc(rowb), *lr = malloc(rowb), *rows = malloc(rowb * (size_t)(D + 1));
    static const char *const pname[] = {"greedy", "every draft kept", "kept and refused in turn"};
    for (int pol = 0; pol < 3; pol++) {
        struct inf_state *s = NULL, *r = NULL;
        struct inf_spec *sp = NULL;
        inf_state_new(c, &s, &e);
        inf_state_new(c, &r, &e);
        int rc = inf_spec_new(MA, s, &sp, &e);
        if (!rc)
            rc = inf_spec_prefill(sp, prompt, P, lg, &e);
        memcpy(rows, lg, rowb);
        int posok = 1;
        for (int i = 0; !rc && i < D; i++) {
            int pend = inf_spec_pending(sp), g = inf_argmax(lg, V);
            int t = pol == 0 ? g : pend < 0 ? g : pol == 1 ? pend : i % 3 == 1 ? (pend + 1 + i) % V : pend;
            toks[i] = t;
            rc = inf_spec_next(sp, t, lg, &e);
            memcpy(rows + (size_t)(i + 1) * V, lg, rowb);
            posok &= s->pos == P + i + 1 + (inf_spec_pending(sp) >= 0);
        }
        if (!rc)
            rc = inf_spec_settle(sp, &e);
        struct inf_spec_stats st = {0};
        if (sp)
            inf_spec_stats(sp, &st);
        tap(!rc && posok && s->pos == P + D, "%s, %s: %d tokens, %lld drafts verified, %lld kept, %lld plain (%s)",
            what, pname[pol], D, st.drafted, st.accepted, st.plain, rc ? e.msg : "ok");
        /* the plain decode of the same tokens on the same accelerator */
        struct inf_forward_opts fo = {.logits = lr};
        int same = !rc && inf_model_forward(MA, r, prompt, P, &fo, &e) == 0 && !memcmp(lr, rows, rowb);
        int first_bad = same ? -1 : 0;
        for (int i = 0; same && i < D; i++) {
            if (inf_model_forward(MA, r, &toks[i], 1, &fo, &e) || memcmp(lr, rows + (size_t)(i + 1) * V, rowb)) {
                same = 0;
                first_bad = i + 1;
            }
        }
        tap(same, "%s, %s: every step's logits bit-equal to a plain decode of the same tokens (first difference: %d)",
            what, pname[pol], first_bad);
        if (pol == 1)
            tap(st.accepted >= D / 2 - 2 && st.drafted > 0, "%s: the drafts kept when the caller takes them (%lld of %lld)",
                what, st.accepted, st.drafted);
        if (pol == 2)
            tap(st.accepted > 0 && st.accepted < st.drafted, "%s: kept and refused drafts both ran", what);
        inf_spec_free(sp);
        inf_state_free(s);
        inf_state_free(r);
    }
    free(prompt);
    free(toks);
    free(lg);
    free(lr);
    free(rows);
    inf_model_free(MA);
    inf_accel_free(A);
}

/* run_spec on the v4-tiny-a fixture: short (one engine, 12 tokens) or whole (also over 2 shards). */
static void fixture_spec(const char *root, int whole)
{
    char path[1024];
    struct ctx_err e = {0};
    struct inf_weights *w = NULL;
    snprintf(path, sizeof path, "%s/tests/fixtures/v4-tiny-a", root ? root : ".");
    if (inf_weights_open(path, &w, &e)) {
        tap(0, "v4-tiny-a: %s", e.msg);
        return;
    }
    run_spec("v4-tiny-a", w, whole ? 300 : 200, whole ? 40 : 12, 1);
    if (whole)
        run_spec("v4-tiny-a over 2 layer-split shards", w, 300, 40, 2);
    inf_weights_free(w);
}

int main(void)
{
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
        printf("1..0 # SKIP no CUDA device\n");
        return 0;
    }
    struct ctx_err e = {0};
    char path[1024];
    const char *root = getenv("CTX_SOURCE_ROOT");
    struct inf_weights *w = NULL;
    if (getenv("CTX_ACCEL_ONLY_SPEC")) { /* (compute-sanitizer runs: the spec part on the fixture only) */
        fixture_spec(root, 0);
        printf("1..%d\n", n_test);
        return n_fail ? 1 : 0;
    }
    snprintf(path, sizeof path, "%s/models/ctx-small", root ? root : ".");
    if (inf_weights_open(path, &w, &e)) {
        tap(0, "ctx-small: %s", e.msg);
    } else {
        run("ctx-small", w, 600, 16, 1);
        run("ctx-small over 2 layer-split shards", w, 600, 16, 2);
        inf_weights_free(w);
    }
    fixture_spec(root, 1);
    struct inf_config mc;
    const char *mp = getenv("CTX_ACCEL_MID_PREFILL");
    int P = mp ? atoi(mp) : 1100;
    if (inf_config_resolve("mid", &mc, &e) || inf_weights_synthetic(&mc, 7, &w, &e)) {
        tap(0, "mid: %s", e.msg);
    } else {
        run("synthetic mid", w, P, 8, 1);
        run_spec("synthetic mid", w, P, 24, 1);
        inf_weights_free(w);
    }
    printf("1..%d\n", n_test);
    return n_fail ? 1 : 0;
}
