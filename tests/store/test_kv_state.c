/* The engine's state through the KV cache (store/kv_state.h): the packed entry codec on V4-Flash's
 * shapes over values from the CPU engine's own QDQ functions (edge cases included), then the real
 * model — the golden fixture's weights (tests/fixtures/v4-tiny-a) prefilled on the CPU engine,
 * checkpointed, restored into a new state: the streams hold packed entries (584 + 68 bytes at Flash's
 * shapes), the restore is bit-identical and the model continues from it with the same logits, and a
 * value the packing cannot hold is refused by name with nothing recorded. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"
#include "cpu/kernels.h"
#include "ctx_config.h"
#include "kv.h"
#include "kv_state.h"
#include "model.h"
#include "quant.h"
#include "state.h"
#include "weights.h"

struct env {
    char dir[64];
    struct store_kv *kv;
    struct inf_weights *w;
    struct inf_model *m;
};

static int setup(void **state)
{
    struct env *e = calloc(1, sizeof *e);
    struct ctx_err err = {0};
    char path[4096];
    const char *root = getenv("CTX_SOURCE_ROOT");
    snprintf(path, sizeof path, "%s/tests/fixtures/v4-tiny-a", root && *root ? root : CTX_SOURCE_ROOT);
    snprintf(e->dir, sizeof e->dir, "/tmp/ctx-kvs-XXXXXX");
    if (!mkdtemp(e->dir) || store_kv_open(e->dir, &e->kv, &err) || inf_weights_open(path, &e->w, &err) ||
        inf_model_new(e->w, NULL, 2, &e->m, &err)) {
        fprintf(stderr, "setup: %s\n", err.msg);
        return -1;
    }
    *state = e;
    return 0;
}

static int teardown(void **state)
{
    struct env *e = *state;
    inf_model_free(e->m);
    inf_weights_free(e->w);
    store_kv_close(e->kv);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", e->dir);
    int rc = system(cmd);
    free(e);
    return rc;
}

static void tokens(const struct inf_config *c, int *t, int n, unsigned seed)
{
    for (int i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        t[i] = (int)((seed >> 8) % (unsigned)c->vocab_size);
    }
}

/* Prefill n tokens in chunks of 97 (so the compressors carry partial blocks). */
static struct inf_state *prefill(struct env *e, const int *t, int n)
{
    struct ctx_err err = {0};
    struct inf_state *st;
    assert_int_equal(inf_state_new(inf_model_config(e->m), &st, &err), 0);
    struct inf_forward_opts fo = {0};
    for (int p = 0; p < n; p += 97)
        assert_int_equal(inf_model_forward(e->m, st, t + p, n - p < 97 ? n - p : 97, &fo, &err), 0);
    return st;
}

static int put(struct env *e, struct inf_state *st, const int *t, int64_t *lin, struct ctx_err *err)
{
    int ns = store_kv_state_n_streams(st);
    struct store_kv_stream *sv = calloc((size_t)ns, sizeof *sv);
    struct store_kv_state_src *src = calloc((size_t)ns, sizeof *src);
    store_kv_state_streams(st, sv, src);
    uint8_t *b = NULL;
    size_t blen = 0;
    int rc = inf_state_boundary(st, &b, &blen, err);
    struct store_kv_hash h;
    store_kv_prefix_hash("m", (const int32_t *)t, (size_t)st->pos, &h);
    if (!rc && !*lin)
        rc = store_kv_lineage_new(e->kv, "m", ns, lin, err);
    if (!rc)
        rc = store_kv_put(e->kv, *lin, (uint64_t)st->pos, &h, b, blen, sv, ns, err);
    free(b);
    free(sv);
    free(src);
    return rc;
}

static void same_state(const struct inf_state *x, const struct inf_state *y)
{
    const struct inf_config *c = &x->cfg;
    assert_int_equal(x->pos, y->pos);
    for (int l = 0; l < x->n_layers; l++) {
        const struct inf_layer_state *a = &x->layers[l], *b = &y->layers[l];
        assert_int_equal(a->n_cache, b->n_cache);
        if (a->n_cache)
            assert_memory_equal(a->cache, b->cache, sizeof(float) * (size_t)a->n_cache * c->head_dim);
        if (a->ratio == 4 && a->n_cache)
            assert_memory_equal(a->icache, b->icache, sizeof(float) * (size_t)a->n_cache * c->index_head_dim);
    }
    uint8_t *bx = NULL, *by = NULL;
    size_t nx = 0, ny = 0;
    struct ctx_err err = {0};
    assert_int_equal(inf_state_boundary(x, &bx, &nx, &err), 0);
    assert_int_equal(inf_state_boundary(y, &by, &ny, &err), 0);
    assert_int_equal(nx, ny);
    assert_memory_equal(bx, by, nx);
    free(bx);
    free(by);
}

static unsigned rnd(unsigned *x)
{
    *x = *x * 1103515245u + 12345u;
    return *x >> 8;
}

static int bits_equal(const float *a, const float *b, int n)
{
    return !memcmp(a, b, sizeof(float) * (size_t)n);
}

/* Every block kind the QDQ can leave: random magnitudes over many binades, all zeros, -0 and +0
 * mixed, a block below the FP8 scale's floor (amax < 1e-4), a block whose largest code is exactly
 * half the range (224 / 3, where the recovered scale is half the one used), the range's top (448 /
 * 6), subnormal e4m3 codes. Each packs, and unpacks to the same bits. */
static void codec_round_trips_qdq_values(void **state)
{
    (void)state;
    struct inf_config c;
    struct ctx_err err = {0};
    assert_int_equal(inf_config_builtin("flash", &c, &err), 0);
    assert_int_equal(inf_kvpack_entry_bytes(&c), 584);
    assert_int_equal(inf_kvpack_ikey_bytes(&c), 68);
    int hd = c.head_dim, rd = c.qk_rope_head_dim, di = c.index_head_dim;
    float v[1024], w[1024];
    uint8_t pk[1024];
    unsigned x = 1;
    for (int t = 0; t < 400; t++) {
        int kind = t % 8;
        for (int i = 0; i < hd; i++) {
            float m = ldexpf((float)(rnd(&x) % 1000) / 997.0f, (int)(rnd(&x) % 30) - 20);
            v[i] = (rnd(&x) & 1) ? -m : m;
            if (kind == 1)
                v[i] = 0.f;
            if (kind == 2)
                v[i] = (i & 1) ? -0.f : 0.f;
            if (kind == 3)
                v[i] *= 1e-7f;
            if (kind == 4)
                v[i] = (i % 64 == 5) ? 224.f * 0.25f : (float)(int)(rnd(&x) % 200) * 0.25f;
            if (kind == 5)
                v[i] = (i % 64 == 7) ? -448.f : (float)(rnd(&x) % 448);
            if (kind == 6)
                v[i] = ldexpf((float)(rnd(&x) % 8), -30); /* tiny: subnormal codes after the scale */
        }
        inf_cpu_fp8_qdq(v, hd - rd, 64);
        for (int i = hd - rd; i < hd; i++)
            v[i] = inf_bf16_round(v[i]);
        assert_int_equal(inf_kvpack_entry(&c, v, pk), -1);
        inf_kvunpack_entry(&c, pk, w);
        if (!bits_equal(v, w, hd))
            fail_msg("entry case %d (kind %d) does not round-trip", t, kind);
        for (int i = 0; i < di; i++) {
            float m = ldexpf((float)(rnd(&x) % 1000) / 997.0f, (int)(rnd(&x) % 12) - 6);
            w[i] = (rnd(&x) & 1) ? -m : m;
            if (kind == 1)
                w[i] = 0.f;
            if (kind == 2)
                w[i] = (i & 1) ? -0.f : 0.f;
            if (kind == 3)
                w[i] *= 0x1p-130f;
            if (kind == 4)
                w[i] = (i % 32 == 3) ? 3.f : (float)(rnd(&x) % 4) * 0.5f;
        }
        memcpy(v, w, sizeof(float) * (size_t)di);
        inf_cpu_fp4_qdq(v, di, 32);
        assert_int_equal(inf_kvpack_ikey(&c, v, pk), -1);
        inf_kvunpack_ikey(&c, pk, w);
        if (!bits_equal(v, w, di))
            fail_msg("indexer key case %d (kind %d) does not round-trip", t, kind);
    }
    /* what no code x power of two holds is refused at its block */
    for (int i = 0; i < hd; i++)
        v[i] = 1.0f;
    v[70] = 1.0f + 0x1p-7f; /* 8 significant bits: not e4m3 at any scale in a block holding 1.0 */
    assert_int_equal(inf_kvpack_entry(&c, v, pk), 64);
    v[70] = 1.0f;
    v[hd - 1] = 1.0f + 0x1p-20f; /* a rope dim that is not bf16 */
    assert_int_equal(inf_kvpack_entry(&c, v, pk), hd - 1);
    for (int i = 0; i < di; i++)
        v[i] = 1.0f;
    v[40] = 1.25f; /* not e2m1 beside 1.0 */
    assert_int_equal(inf_kvpack_ikey(&c, v, pk), 32);
}

/* The packers' fast form (codes read off the bits) against their plain form (each value rounded by
 * quant.c and multiplied back): the same answer and, where they pack, the same bytes, on the QDQ's
 * values (every kind above), on values one bit away from them, on half-scale blocks, and on raw
 * bits (NaN, infinities, fp32 subnormals, anything). */
static void fast_packers_match_the_plain_ones(void **state)
{
    (void)state;
    struct inf_config c;
    struct ctx_err err = {0};
    assert_int_equal(inf_config_builtin("flash", &c, &err), 0);
    int hd = c.head_dim, rd = c.qk_rope_head_dim, di = c.index_head_dim;
    size_t eb = inf_kvpack_entry_bytes(&c), ib = inf_kvpack_ikey_bytes(&c);
    float v[1024];
    uint8_t a[1024], b[1024];
    unsigned x = 7;
    int packed = 0, refused = 0;
    for (int t = 0; t < 6000; t++) {
        int kind = t % 10;
        for (int i = 0; i < hd; i++) {
            float m = ldexpf((float)(rnd(&x) % 1000) / 997.0f, (int)(rnd(&x) % 40) - 30);
            v[i] = (rnd(&x) & 1) ? -m : m;
            if (kind == 1)
                v[i] = (i & 1) ? -0.f : 0.f;
            if (kind == 2)
                v[i] = (i % 64 == 5) ? 224.f * 0.25f : (float)(int)(rnd(&x) % 200) * 0.25f;
            if (kind == 3)
                v[i] = ldexpf((float)(rnd(&x) % 8), -30);
        }
        if (kind < 8) {
            inf_cpu_fp8_qdq(v, hd - rd, 64);
            for (int i = hd - rd; i < hd; i++)
                v[i] = inf_bf16_round(v[i]);
        }
        uint32_t u;
        if (kind == 6 || kind == 7) { /* one value a bit off */
            int i = (int)(rnd(&x) % (unsigned)hd);
            memcpy(&u, &v[i], 4);
            u ^= 1u << (rnd(&x) % 32);
            memcpy(&v[i], &u, 4);
        }
        if (kind >= 8) /* raw bits */
            for (int i = 0; i < hd; i++) {
                u = rnd(&x) * 2654435761u ^ rnd(&x);
                memcpy(&v[i], &u, 4);
            }
        memset(a, 0xa5, sizeof a);
        memset(b, 0x5a, sizeof b);
        int ra = inf_kvpack_entry(&c, v, a), rb = inf_kvpack_entry_ref(&c, v, b);
        if (ra != rb)
            fail_msg("entry case %d (kind %d): fast %d, plain %d", t, kind, ra, rb);
        if (ra == -1 && memcmp(a, b, eb))
            fail_msg("entry case %d (kind %d): the bytes differ", t, kind);
        packed += ra == -1;
        refused += ra != -1;
        for (int i = 0; i < di; i++) {
            float m = ldexpf((float)(rnd(&x) % 1000) / 997.0f, (int)(rnd(&x) % 30) - 20);
            v[i] = (rnd(&x) & 1) ? -m : m;
            if (kind == 1)
                v[i] = (i & 1) ? -0.f : 0.f;
            if (kind == 2)
                v[i] = (i % 32 == 3) ? 3.f : (float)(rnd(&x) % 4) * 0.5f;
            if (kind == 3)
                v[i] *= 0x1p-130f;
        }
        if (kind < 8)
            inf_cpu_fp4_qdq(v, di, 32);
        if (kind == 6 || kind == 7) {
            int i = (int)(rnd(&x) % (unsigned)di);
            memcpy(&u, &v[i], 4);
            u ^= 1u << (rnd(&x) % 32);
            memcpy(&v[i], &u, 4);
        }
        if (kind >= 8)
            for (int i = 0; i < di; i++) {
                u = rnd(&x) * 2654435761u ^ rnd(&x);
                memcpy(&v[i], &u, 4);
            }
        memset(a, 0xa5, sizeof a);
        memset(b, 0x5a, sizeof b);
        ra = inf_kvpack_ikey(&c, v, a);
        rb = inf_kvpack_ikey_ref(&c, v, b);
        if (ra != rb)
            fail_msg("indexer key case %d (kind %d): fast %d, plain %d", t, kind, ra, rb);
        if (ra == -1 && memcmp(a, b, ib))
            fail_msg("indexer key case %d (kind %d): the bytes differ", t, kind);
        packed += ra == -1;
        refused += ra != -1;
    }
    /* both outcomes were exercised, many times */
    assert_true(packed > 6000);
    assert_true(refused > 1500);
}

static void round_trip_is_exact_and_packed(void **state)
{
    struct env *e = *state;
    const struct inf_config *c = inf_model_config(e->m);
    struct ctx_err err = {0};
    enum { N = 700 };
    int t[N + 4];
    tokens(c, t, N + 4, 11);
    struct inf_state *st = prefill(e, t, N);
    int64_t lin = 0;
    assert_int_equal(put(e, st, t, &lin, &err), 0);

    struct store_kv_ckpt ck;
    int found = 0;
    assert_int_equal(store_kv_lookup_tokens(e->kv, "m", (const int32_t *)t, N, &ck, &found, &err), 0);
    assert_true(found);
    long long entries = 0;
    for (int l = 0; l < st->n_layers; l++) {
        const struct inf_layer_state *L = &st->layers[l];
        assert_int_equal(ck.stream_len[2 * l], (uint64_t)L->n_cache * inf_kvpack_entry_bytes(c));
        assert_int_equal(ck.stream_len[2 * l + 1], L->ratio == 4 ? (uint64_t)L->n_cache * inf_kvpack_ikey_bytes(c) : 0);
        entries += L->n_cache;
    }
    assert_true(entries > 0);

    struct inf_state *back;
    assert_int_equal(inf_state_new(c, &back, &err), 0);
    assert_int_equal(store_kv_state_restore(e->kv, &ck, back, &err), 0);
    same_state(st, back);
    /* the GPU's read: the packed streams as stored, the counts, the boundary without entries */
    {
        int ns = store_kv_state_n_streams(st);
        void **bufs = calloc((size_t)ns, sizeof *bufs);
        long long *counts = calloc((size_t)st->n_layers, sizeof *counts);
        for (int k = 0; k < ns; k++)
            bufs[k] = malloc(ck.stream_len[k] + 1);
        struct inf_state *bnd;
        assert_int_equal(inf_state_new(c, &bnd, &err), 0);
        assert_int_equal(store_kv_state_read_packed(e->kv, &ck, bnd, bufs, counts, &err), 0);
        assert_int_equal(bnd->pos, st->pos);
        float v[1024];
        for (int l = 0; l < st->n_layers; l++) {
            const struct inf_layer_state *L = &st->layers[l];
            assert_int_equal(counts[l], L->n_cache);
            assert_int_equal(bnd->layers[l].n_cache, 0);
            assert_memory_equal(bnd->layers[l].ring, L->ring, sizeof(float) * (size_t)c->sliding_window * c->head_dim);
            for (long long i = 0; i < L->n_cache; i++) {
                inf_kvunpack_entry(c, (const uint8_t *)bufs[2 * l] + i * inf_kvpack_entry_bytes(c), v);
                assert_memory_equal(v, L->cache + i * c->head_dim, sizeof(float) * (size_t)c->head_dim);
                if (L->ratio == 4) {
                    inf_kvunpack_ikey(c, (const uint8_t *)bufs[2 * l + 1] + i * inf_kvpack_ikey_bytes(c), v);
                    assert_memory_equal(v, L->icache + i * c->index_head_dim, sizeof(float) * (size_t)c->index_head_dim);
                }
            }
        }
        for (int k = 0; k < ns; k++)
            free(bufs[k]);
        free(bufs);
        free(counts);
        inf_state_free(bnd);
    }
    /* the model continues from the restored state exactly as from the original */
    float *la = malloc(sizeof(float) * (size_t)c->vocab_size), *lb = malloc(sizeof(float) * (size_t)c->vocab_size);
    struct inf_forward_opts fa = {.logits = la}, fb = {.logits = lb};
    assert_int_equal(inf_model_forward(e->m, st, t + N, 4, &fa, &err), 0);
    assert_int_equal(inf_model_forward(e->m, back, t + N, 4, &fb, &err), 0);
    assert_memory_equal(la, lb, sizeof(float) * (size_t)c->vocab_size);
    /* and a later checkpoint of the same lineage appends only the new entries */
    assert_int_equal(put(e, st, t, &lin, &err), 0);
    free(la);
    free(lb);
    store_kv_ckpt_clear(&ck);
    inf_state_free(back);
    inf_state_free(st);
}

/* A state of many entries (the restore unpacks in parallel waves above 1024 entries per stream): tiny's
 * shapes at 80,000 positions (20,000 CSA entries per layer) with QDQ'd values, checkpointed and restored
 * bit for bit. */
static void large_state_restores_exactly(void **state)
{
    struct env *e = *state;
    struct ctx_err err = {0};
    struct inf_config c;
    assert_int_equal(inf_config_builtin("tiny", &c, &err), 0);
    struct inf_state *st, *back;
    assert_int_equal(inf_state_new(&c, &st, &err), 0);
    long long pos = 80000;
    unsigned x = 3;
    for (int l = 0; l < st->n_layers; l++) {
        struct inf_layer_state *L = &st->layers[l];
        long long n = L->ratio ? pos / L->ratio : 0;
        if (!n)
            continue;
        assert_int_equal(inf_state_reserve(st, l, n, &err), 0);
        L->n_cache = n;
        for (long long i = 0; i < n; i++) {
            float *v = L->cache + i * c.head_dim;
            for (int d = 0; d < c.head_dim; d++)
                v[d] = ldexpf((float)(rnd(&x) % 1000) / 997.0f, (int)(rnd(&x) % 16) - 8) * ((rnd(&x) & 1) ? -1.f : 1.f);
            inf_cpu_fp8_qdq(v, c.head_dim - c.qk_rope_head_dim, 64);
            for (int d = c.head_dim - c.qk_rope_head_dim; d < c.head_dim; d++)
                v[d] = inf_bf16_round(v[d]);
            if (L->ratio == 4) {
                float *k = L->icache + i * c.index_head_dim;
                for (int d = 0; d < c.index_head_dim; d++)
                    k[d] = ldexpf((float)(rnd(&x) % 1000) / 997.0f, (int)(rnd(&x) % 6) - 3);
                inf_cpu_fp4_qdq(k, c.index_head_dim, 32);
            }
        }
    }
    st->pos = pos;
    int *t = calloc((size_t)pos, sizeof *t);
    int64_t lin = 0;
    assert_int_equal(put(e, st, t, &lin, &err), 0);
    struct store_kv_ckpt ck;
    int found = 0;
    assert_int_equal(store_kv_lookup_tokens(e->kv, "m", (const int32_t *)t, (size_t)pos, &ck, &found, &err), 0);
    assert_true(found);
    assert_int_equal(inf_state_new(&c, &back, &err), 0);
    assert_int_equal(store_kv_state_restore(e->kv, &ck, back, &err), 0);
    same_state(st, back);
    store_kv_ckpt_clear(&ck);
    free(t);
    inf_state_free(back);
    inf_state_free(st);
}

/* store_kv_put's streams on one thread and on four: the same checkpoint, byte for byte (each stream
 * read back through the store, its checksums checked), and a later put extending it on four threads
 * after one on one thread. */
static void threaded_put_writes_the_same_bytes(void **state)
{
    struct env *e = *state;
    struct ctx_err err = {0};
    int t[700];
    tokens(inf_model_config(e->m), t, 700, 9);
    struct inf_state *st = prefill(e, t, 300);
    char dir2[96];
    snprintf(dir2, sizeof dir2, "%s/two", e->dir);
    struct store_kv *kv1 = e->kv, *kv2 = NULL;
    assert_int_equal(store_kv_open(dir2, &kv2, &err), 0);
    int64_t lin1 = 0, lin2 = 0;
    store_kv_put_threads(1);
    assert_int_equal(put(e, st, t, &lin1, &err), 0);
    e->kv = kv2;
    store_kv_put_threads(4);
    assert_int_equal(put(e, st, t, &lin2, &err), 0);
    /* 400 more tokens: the second put of each lineage writes only the new bytes */
    struct inf_forward_opts fo = {0};
    assert_int_equal(inf_model_forward(e->m, st, t + 300, 400, &fo, &err), 0);
    e->kv = kv1;
    assert_int_equal(put(e, st, t, &lin1, &err), 0);
    e->kv = kv2;
    store_kv_put_threads(1);
    assert_int_equal(put(e, st, t, &lin2, &err), 0);
    store_kv_put_threads(0);
    e->kv = kv1;
    struct store_kv_ckpt c1, c2;
    int f1 = 0, f2 = 0;
    assert_int_equal(store_kv_lookup_tokens(kv1, "m", (const int32_t *)t, 700, &c1, &f1, &err), 0);
    assert_int_equal(store_kv_lookup_tokens(kv2, "m", (const int32_t *)t, 700, &c2, &f2, &err), 0);
    assert_true(f1 && f2);
    assert_int_equal(c1.n_streams, c2.n_streams);
    int nonempty = 0;
    for (int k = 0; k < c1.n_streams; k++) {
        assert_int_equal(c1.stream_len[k], c2.stream_len[k]);
        size_t n = (size_t)c1.stream_len[k];
        uint8_t *b1 = malloc(n + 1), *b2 = malloc(n + 1);
        assert_int_equal(store_kv_read_stream(kv1, &c1, k, b1, &err), 0);
        assert_int_equal(store_kv_read_stream(kv2, &c2, k, b2, &err), 0);
        assert_memory_equal(b1, b2, n);
        nonempty += n > 0;
        free(b1);
        free(b2);
    }
    assert_true(nonempty >= 2);
    store_kv_ckpt_clear(&c1);
    store_kv_ckpt_clear(&c2);
    store_kv_close(kv2);
    inf_state_free(st);
}

static void inexact_values_are_refused(void **state)
{
    struct env *e = *state;
    const struct inf_config *c = inf_model_config(e->m);
    struct ctx_err err = {0};
    int t[300];
    tokens(c, t, 300, 5);
    struct inf_state *st = prefill(e, t, 300);
    int l = 0;
    while (l < st->n_layers && !(st->layers[l].ratio == 4 && st->layers[l].n_cache > 3))
        l++;
    assert_true(l < st->n_layers);
    uint32_t bits;
    memcpy(&bits, &st->layers[l].icache[3], 4);
    bits |= 1; /* one bit below bf16 */
    memcpy(&st->layers[l].icache[3], &bits, 4);
    int64_t lin = 0;
    assert_int_equal(put(e, st, t, &lin, &err), CTX_EFORMAT);
    assert_non_null(strstr(err.msg, "indexer key 0, dims from 0"));
    assert_non_null(strstr(err.msg, "cannot be stored losslessly"));
    struct store_kv_ckpt ck;
    int found = 1;
    assert_int_equal(store_kv_lookup_tokens(e->kv, "m", (const int32_t *)t, 300, &ck, &found, &err), 0);
    assert_false(found);
    inf_state_free(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(codec_round_trips_qdq_values),
        cmocka_unit_test(fast_packers_match_the_plain_ones),
        cmocka_unit_test_setup_teardown(round_trip_is_exact_and_packed, setup, teardown),
        cmocka_unit_test_setup_teardown(large_state_restores_exactly, setup, teardown),
        cmocka_unit_test_setup_teardown(threaded_put_writes_the_same_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(inexact_values_are_refused, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
