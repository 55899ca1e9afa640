/* Marks, rewinds and incremental state downloads (kernels/cuda_engine.h: cuda_engine_mark / _rewind /
 * _state_download_tail; kernels/multi.h: the same on the layer-split pipeline): plain TAP, "1..0 #
 * SKIP" without a device, as test_engine.
 *
 * Everything is asserted BIT-IDENTICAL against a reference engine that only resets and feeds tokens
 * (every kernel is deterministic, and a rewind must give back exactly the marked state). For each model
 * (the fixture tests/fixtures/v4-tiny-a, synthetic tiny and mid: compression ratios 4 and 128, window
 * 128) and each prefix length P in {37, 128, 131, 300} (mid-block and on block boundaries of both
 * ratios; 300 has wrapped the window ring), with A = A1 A2 the prefix split at P1 = P / 2, B = a chunk
 * of 23 tokens + 5 decode steps, C = a chunk of 19 tokens + 6 decode steps (the decode steps capture
 * the CUDA graph in B and replay it in C), on one engine and on a pipeline of 2 shards:
 * - marks m1 at P1 and m2 at P do not change A2's logits; mark positions are P1 and P;
 * - (a, c) A, mark, B, rewind, C: position P after the rewind, the downloaded state equals the
 *   reference's at P byte for byte (inf_state_serialize: rings, carries, counts, the first n_cache
 *   entries and indexer keys); C's 7 logits vectors and the state after C equal the reference's;
 * - (b) rewound to m2 a second time, C again; rewound to the older m1, A2 and C again;
 * - (d) a download at P1, then A2 + B fed, then cuda_engine_state_download_tail equals a full download;
 *   rewound behind that state (to m1), download_tail equals the reference's state at P1;
 * - (e) CTX_EINVAL with the position unchanged for a mark ahead of the engine, a stale mark (the engine
 *   was rewound behind it and fed again), a mark taken before a reset, a mark taken before a state
 *   upload (the engine then continues C from the uploaded state bit for bit), and (one engine) a mark
 *   of another engine.
 * CTX_MARK_PARTS (default "fixture,tiny,mid") picks the models. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_engine.h"
#include "gemm.h"
#include "multi.h"
#include "state.h"
#include "weights.h"
#include "tap.h"

#define CHUNK 128  /* the engines' max_chunk: prefixes go in chunks of at most this */
#define MAX_CTX 1024
#define NB 23 /* B: a prefill chunk, then DB decode steps */
#define DB 5
#define NC 19 /* C: a prefill chunk, then DC decode steps */
#define DC 6
#define PMAX 300

/* ---- one engine or a pipeline, behind the same calls ---- */

struct eng {
    struct cuda_engine *g; /* one of the two */
    struct cuda_multi *m;
};
struct emark {
    struct cuda_engine_mark *g;
    struct cuda_multi_mark *m;
};

static int e_forward(struct eng *x, const int *t, int S, float *lg, struct ctx_err *e)
{
    return x->m ? cuda_multi_forward(x->m, t, S, lg, e) : cuda_engine_forward(x->g, t, S, lg, e);
}
static void e_reset(struct eng *x)
{
    if (x->m)
        cuda_multi_reset(x->m);
    else
        cuda_engine_reset(x->g);
}
static long long e_pos(struct eng *x) { return x->m ? cuda_multi_pos(x->m) : cuda_engine_pos(x->g); }
static int e_mark(struct eng *x, struct emark *k, struct ctx_err *e)
{
    memset(k, 0, sizeof *k);
    return x->m ? cuda_multi_mark(x->m, &k->m, e) : cuda_engine_mark(x->g, &k->g, e);
}
static int e_rewind(struct eng *x, const struct emark *k, struct ctx_err *e)
{
    return x->m ? cuda_multi_rewind(x->m, k->m, e) : cuda_engine_rewind(x->g, k->g, e);
}
static long long e_mark_pos(const struct emark *k)
{
    return k->m ? cuda_multi_mark_pos(k->m) : k->g ? cuda_engine_mark_pos(k->g) : -1;
}
static void e_mark_free(struct emark *k)
{
    cuda_multi_mark_free(k->m);
    cuda_engine_mark_free(k->g);
    memset(k, 0, sizeof *k);
}
static int e_download(struct eng *x, struct inf_state *st, struct ctx_err *e)
{
    return x->m ? cuda_multi_state_download(x->m, st, e) : cuda_engine_state_download(x->g, st, e);
}
static int e_download_tail(struct eng *x, struct inf_state *st, struct ctx_err *e)
{
    return x->m ? cuda_multi_state_download_tail(x->m, st, e) : cuda_engine_state_download_tail(x->g, st, e);
}
static int e_upload(struct eng *x, const struct inf_state *st, struct ctx_err *e)
{
    return x->m ? cuda_multi_state_upload(x->m, st, e) : cuda_engine_state_upload(x->g, st, e);
}
static int e_graph_state(struct eng *x)
{
    return x->m ? cuda_multi_graph_state(x->m) : cuda_engine_graph_state(x->g);
}

/* Feeds t[0..n) as forward calls of at most CHUNK tokens (the last one's logits into rows[0]), then
 * ndec decode steps t[n..n+ndec) (logits into rows[1..]: decode steps that want logits are the ones
 * the engine replays as a CUDA graph). rows: NULL keeps no logits (decode steps still want them). */
static int feed(struct eng *x, const int *t, int n, int ndec, float *rows, float *scratch, int V,
                struct ctx_err *e)
{
    for (int p = 0; p < n; p += CHUNK) {
        int S = n - p < CHUNK ? n - p : CHUNK;
        if (e_forward(x, t + p, S, p + S == n && rows ? rows : NULL, e))
            return -1;
    }
    for (int j = 0; j < ndec; j++)
        if (e_forward(x, t + n + j, 1, rows ? rows + (size_t)(1 + j) * V : scratch, e))
            return -1;
    return 0;
}

/* Both states as bytes (inf_state_serialize: position, per layer the count, ring, carries and the
 * first n_cache entries and indexer keys) equal; prints where they first differ. */
static int same_state(const struct inf_state *a, const struct inf_state *b, const char *what)
{
    struct ctx_err e = {0};
    uint8_t *pa = NULL, *pb = NULL;
    size_t la = 0, lb = 0;
    int ok = !inf_state_serialize(a, &pa, &la, &e) && !inf_state_serialize(b, &pb, &lb, &e);
    int same = ok && la == lb && !memcmp(pa, pb, la);
    if (!ok) {
        printf("# %s: serialize: %s\n", what, e.msg);
    } else if (!same) {
        size_t i = 0;
        while (i < la && i < lb && pa[i] == pb[i])
            i++;
        printf("# %s: states of %zu and %zu bytes (positions %lld, %lld) first differ at byte %zu\n", what, la, lb,
               a->pos, b->pos, i);
    }
    free(pa);
    free(pb);
    return same;
}

/* ---- one prefix length ---- */

struct toks {
    int A[PMAX], B[NB + DB], C[NC + DC];
};

static void make_tokens(struct toks *t, int V, unsigned long long seed, int bos)
{
    unsigned long long s = seed;
    int *all[3] = {t->A, t->B, t->C}, n[3] = {PMAX, NB + DB, NC + DC};
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < n[k]; i++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            all[k][i] = 2 + (int)((s >> 33) % (unsigned long long)(V - 2));
        }
    t->A[0] = bos;
}

/* What the reference engine gives for A1 | A2 | C: states at P1, P and after C, A2's logits, C's rows. */
struct refrun {
    struct inf_state *s1, *sP, *sC;
    float *la2, *lc; /* [V], [1 + DC][V] */
};

static int ref_run(struct eng *r, const struct inf_config *c, const struct toks *t, int P, struct refrun *o,
                   float *scratch)
{
    struct ctx_err e = {0};
    int V = c->vocab_size, P1 = P / 2;
    o->la2 = malloc(sizeof(float) * (size_t)V);
    o->lc = malloc(sizeof(float) * (size_t)V * (1 + DC));
    int ok = o->la2 && o->lc && !inf_state_new(c, &o->s1, &e) && !inf_state_new(c, &o->sP, &e) &&
             !inf_state_new(c, &o->sC, &e);
    e_reset(r);
    ok = ok && !feed(r, t->A, P1, 0, NULL, scratch, V, &e) && !e_download(r, o->s1, &e) &&
         !feed(r, t->A + P1, P - P1, 0, o->la2, scratch, V, &e) && !e_download(r, o->sP, &e) &&
         !feed(r, t->C, NC, DC, o->lc, scratch, V, &e) && !e_download(r, o->sC, &e);
    if (!ok)
        printf("# reference run at P %d: %s\n", P, e.msg);
    return ok ? 0 : -1;
}

static void ref_free(struct refrun *o)
{
    inf_state_free(o->s1);
    inf_state_free(o->sP);
    inf_state_free(o->sC);
    free(o->la2);
    free(o->lc);
}

/* The scenario of the file's header on x (one engine or a pipeline) against the reference o; other:
 * an engine x's marks do not belong to (NULL for a pipeline). */
static void scenario(const char *what, struct eng *x, struct eng *other, const struct inf_config *c,
                     const struct toks *t, int P, const struct refrun *o, float *scratch)
{
    struct ctx_err e = {0};
    int V = c->vocab_size, P1 = P / 2;
    size_t rowc = sizeof(float) * (size_t)V * (1 + DC);
    float *la2 = malloc(sizeof(float) * (size_t)V), *lc = malloc(rowc);
    struct inf_state *st = NULL, *st2 = NULL;
    struct emark m1, m2, m3, om;
    memset(&m1, 0, sizeof m1);
    memset(&m2, 0, sizeof m2);
    memset(&m3, 0, sizeof m3);
    memset(&om, 0, sizeof om);
    int ok = la2 && lc && !inf_state_new(c, &st, &e) && !inf_state_new(c, &st2, &e);

    /* marks are transparent */
    e_reset(x);
    ok = ok && !feed(x, t->A, P1, 0, NULL, scratch, V, &e) && !e_mark(x, &m1, &e) &&
         !feed(x, t->A + P1, P - P1, 0, la2, scratch, V, &e) && !e_mark(x, &m2, &e);
    tap(ok && e_mark_pos(&m1) == P1 && e_mark_pos(&m2) == P && !memcmp(la2, o->la2, sizeof(float) * (size_t)V),
        "%s P %d: marks at %lld and %lld (want %d, %d), A2's logits bit-identical to the reference's%s%s", what, P,
        e_mark_pos(&m1), e_mark_pos(&m2), P1, P, ok ? "" : ": ", ok ? "" : e.msg);
    if (!ok)
        goto done;

    /* (a, c) B, rewind, C */
    ok = !feed(x, t->B, NB, DB, NULL, scratch, V, &e) && !e_rewind(x, &m2, &e);
    int pos = ok ? (int)e_pos(x) : -1;
    ok = ok && !e_download(x, st, &e);
    tap(ok && pos == P && same_state(st, o->sP, "after the rewind"),
        "%s P %d: B (%d + %d decode steps) then a rewind: position %d, downloaded state bit-identical to the "
        "reference's at %d%s%s",
        what, P, NB, DB, pos, P, ok ? "" : ": ", ok ? "" : e.msg);
    ok = ok && !feed(x, t->C, NC, DC, lc, scratch, V, &e);
    int gs = e_graph_state(x);
    tap(ok && !memcmp(lc, o->lc, rowc) && gs == 1,
        "%s P %d: C after the rewind (%d + %d decode steps, graph state %d): %d logits vectors bit-identical to "
        "the reference's (A then C)%s%s",
        what, P, NC, DC, gs, 1 + DC, ok ? "" : ": ", ok ? "" : e.msg);
    ok = ok && !e_download(x, st, &e);
    tap(ok && same_state(st, o->sC, "after C"), "%s P %d: the state after C bit-identical to the reference's%s%s",
        what, P, ok ? "" : ": ", ok ? "" : e.msg);

    /* (b) the same mark again */
    ok = ok && !e_rewind(x, &m2, &e) && !feed(x, t->C, NC, DC, lc, scratch, V, &e);
    tap(ok && !memcmp(lc, o->lc, rowc), "%s P %d: rewound to the same mark again, C bit-identical%s%s", what, P,
        ok ? "" : ": ", ok ? "" : e.msg);

    /* (b, e) the older mark; the newer one is then ahead, and stale once the engine passes it again */
    ok = ok && !e_rewind(x, &m1, &e);
    pos = ok ? (int)e_pos(x) : -1;
    int r_ahead = ok ? e_rewind(x, &m2, &e) : 0;
    tap(ok && pos == P1 && r_ahead == CTX_EINVAL && e_pos(x) == P1,
        "%s P %d: rewound to the older mark (position %d); the newer one, ahead, refused with CTX_EINVAL (%s), "
        "position unchanged",
        what, P, pos, ok ? e.msg : "");
    ok = ok && !feed(x, t->A + P1, P - P1, 0, la2, scratch, V, &e);
    int r_stale = ok ? e_rewind(x, &m2, &e) : 0;
    tap(ok && !memcmp(la2, o->la2, sizeof(float) * (size_t)V) && r_stale == CTX_EINVAL && e_pos(x) == P,
        "%s P %d: A2 again from the older mark bit-identical; the newer mark, stale, refused with CTX_EINVAL (%s), "
        "position unchanged",
        what, P, ok ? e.msg : "");
    ok = ok && !feed(x, t->C, NC, DC, lc, scratch, V, &e);
    tap(ok && !memcmp(lc, o->lc, rowc), "%s P %d: then C bit-identical%s%s", what, P, ok ? "" : ": ",
        ok ? "" : e.msg);

    /* (d) incremental download: at P1, then A2 + B fed; then rewound behind it */
    inf_state_reset(st);
    ok = ok && !e_rewind(x, &m1, &e) && !e_download(x, st, &e) && same_state(st, o->s1, "download at P1") &&
         !feed(x, t->A + P1, P - P1, 0, NULL, scratch, V, &e) && !feed(x, t->B, NB, DB, NULL, scratch, V, &e) &&
         !e_download_tail(x, st, &e);
    inf_state_reset(st2);
    ok = ok && !e_download(x, st2, &e);
    tap(ok && st->pos == P + NB + DB && same_state(st, st2, "download_tail"),
        "%s P %d: a download at %d, then A2 + B, then download_tail: bit-identical to a full download at %d%s%s",
        what, P, P1, P + NB + DB, ok ? "" : ": ", ok ? "" : e.msg);
    ok = ok && !e_rewind(x, &m1, &e) && !e_download_tail(x, st, &e);
    tap(ok && same_state(st, o->s1, "download_tail behind"),
        "%s P %d: rewound to %d behind that state, download_tail: bit-identical to the reference's at %d (counts "
        "set down)%s%s",
        what, P, P1, P1, ok ? "" : ": ", ok ? "" : e.msg);

    /* (e) a reset and an upload start a new generation */
    int r_reset = 0, r_upload = 0;
    if (ok) {
        e_reset(x);
        r_reset = e_rewind(x, &m1, &e);
    }
    tap(ok && r_reset == CTX_EINVAL && e_pos(x) == 0,
        "%s P %d: a mark taken before a reset refused with CTX_EINVAL (%s), position 0", what, P, ok ? e.msg : "");
    ok = ok && !feed(x, t->A, P1, 0, NULL, scratch, V, &e) && !e_mark(x, &m3, &e) && !e_upload(x, o->sP, &e);
    if (ok)
        r_upload = e_rewind(x, &m3, &e);
    pos = ok ? (int)e_pos(x) : -1;
    ok = ok && !feed(x, t->C, NC, DC, lc, scratch, V, &e);
    tap(ok && r_upload == CTX_EINVAL && pos == P && !memcmp(lc, o->lc, rowc),
        "%s P %d: a mark taken before a state upload refused with CTX_EINVAL (%s), position %d; C then "
        "bit-identical from the uploaded state%s%s",
        what, P, r_upload ? e.msg : "(accepted)", pos, ok ? "" : ": ", ok ? "" : e.msg);

    if (other) { /* (e) a mark of another engine */
        int r_other = 0;
        long long before = e_pos(x);
        ok = ok && !e_mark(other, &om, &e);
        if (ok)
            r_other = e_rewind(x, &om, &e);
        tap(ok && r_other == CTX_EINVAL && e_pos(x) == before,
            "%s P %d: a mark of another engine refused with CTX_EINVAL (%s), position unchanged", what, P,
            ok ? e.msg : "");
    }
done:
    e_mark_free(&m1);
    e_mark_free(&m2);
    e_mark_free(&m3);
    e_mark_free(&om);
    inf_state_free(st);
    inf_state_free(st2);
    free(la2);
    free(lc);
}

/* ---- per model ---- */

static void run_model(const char *name, const struct inf_weights *w, const int *devs, int ndevs)
{
    static const int Ps[] = {37, 128, 131, 300};
    const struct inf_config *c = inf_weights_config(w);
    int V = c->vocab_size;
    struct ctx_err e = {0};
    struct cuda_engine_opts o = {.max_chunk = CHUNK, .max_ctx = MAX_CTX, .device = devs[0]};
    struct eng r = {0}, g = {0}, m = {0};
    int sd[2] = {devs[0], devs[1 % ndevs]};
    int rc = cuda_engine_new(w, &o, &r.g, &e) || cuda_engine_new(w, &o, &g.g, &e) ||
             cuda_multi_new(w, &o, sd, 2, NULL, &m.m, &e);
    tap(!rc, "%s: a reference engine, the engine under test and a 2-shard pipeline (devices %d, %d); a mark is "
             "%zu device bytes%s%s",
        name, sd[0], sd[1], cuda_engine_mark_bytes(c, 0, 0), rc ? ": " : "", rc ? e.msg : "");
    struct toks *t = malloc(sizeof *t);
    float *scratch = malloc(sizeof(float) * (size_t)V);
    if (rc || !t || !scratch)
        goto done;
    for (size_t k = 0; k < sizeof Ps / sizeof Ps[0]; k++) {
        int P = Ps[k];
        struct refrun ro;
        memset(&ro, 0, sizeof ro);
        make_tokens(t, V, 0x51a9ull * (unsigned long long)(P + 1), c->bos_token_id);
        if (ref_run(&r, c, t, P, &ro, scratch)) {
            tap(0, "%s P %d: reference run", name, P);
        } else {
            char what[64];
            snprintf(what, sizeof what, "%s, one engine", name);
            scenario(what, &g, &r, c, t, P, &ro, scratch);
            snprintf(what, sizeof what, "%s, 2 shards", name);
            scenario(what, &m, NULL, c, t, P, &ro, scratch);
        }
        ref_free(&ro);
    }
done:
    free(t);
    free(scratch);
    cuda_multi_free(m.m);
    cuda_engine_free(g.g);
    cuda_engine_free(r.g);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    {
        struct inf_config f;
        struct ctx_err e = {0};
        if (!inf_config_builtin("flash", &f, &e))
            printf("# a mark of V4-Flash (43 layers): %zu device bytes\n", cuda_engine_mark_bytes(&f, 0, 0));
    }
    if (cuda_device_count() < 1) {
        printf("1..0 # SKIP no CUDA device\n");
        return 0;
    }
    int devs[2] = {0, cuda_device_count() > 1 ? 1 : 0}, ndevs = cuda_device_count() > 1 ? 2 : 1;
    const char *root = getenv("CTX_SOURCE_ROOT"), *parts = getenv("CTX_MARK_PARTS");
    if (!parts)
        parts = "fixture,tiny,mid";
    static const char *const models[3] = {"fixture", "tiny", "mid"};
    for (int k = 0; k < 3; k++) {
        if (!strstr(parts, models[k]))
            continue;
        struct ctx_err e = {0};
        struct inf_weights *w = NULL;
        struct inf_config c;
        char path[1024];
        snprintf(path, sizeof path, "%s/tests/fixtures/v4-tiny-a", root ? root : ".");
        int rc = k == 0 ? inf_weights_open(path, &w, &e)
                        : inf_config_builtin(models[k], &c, &e) || inf_weights_synthetic(&c, 1, &w, &e);
        if (rc) {
            tap(0, "%s weights: %s", models[k], e.msg);
            continue;
        }
        run_model(models[k], w, devs, ndevs);
        inf_weights_free(w);
    }
    printf("1..%d\n", n_test);
    return n_fail ? 1 : 0;
}
