/* The layer-split pipeline (kernels/multi.h) against one engine (kernels/cuda_engine.h): plain TAP (the
 * GPU machine has no cmocka), "1..0 # SKIP" without a device, as test_engine.
 *
 * Devices: CTX_GPUS (a comma list of CUDA ordinals), default every visible device; shard i runs on
 * device i % count, so with one device every shard shares it and the same assertions hold as on two.
 *
 * Every shard runs the same kernels on the same inputs as one engine (the boundary copy moves the
 * fp32 streams unchanged), so everything is asserted BIT-IDENTICAL, not within a bound:
 * - on the golden fixture tests/fixtures/v4-tiny-a and the synthetic tiny and mid configs, with 2
 *   shards (the default split, cuda_multi_plan) and 3 shards (an uneven split): the logits of a
 *   pipelined prefill (cuda_multi_prefill, every chunk queued at once, one host thread a shard; the first
 *   chunk size also from one thread, cuda_multi_prefill_threads(0)) at several chunk sizes equal
 *   one engine's prefill in the same chunks; 8 decode steps (4 replaying the shards' CUDA graphs, 4
 *   as direct launches, in both orders) equal one engine's; the state downloaded after them equals
 *   one engine's byte for byte (inf_state_serialize of both); a state uploaded into the pipeline (one
 *   engine's after the prefill) continues with the same 8 decode logits;
 * - (tiny) the streams shard 0 hands on (cuda_engine_streams) equal one engine's after the same
 *   block (its hook); the shards' weight bytes add up to one engine's exactly;
 * - bad arguments: CTX_EINVAL for 0 shards, no device list, a device that does not exist, a split that
 *   does not cover the layers or leaves a shard empty, more shards than layers, an engine layer range
 *   outside the model, a range engine fed without input streams or asked for logits; a bad token in a
 *   prefill and a state with wrong cache counts change nothing (position and logits after).
 * - greedy generation over 2 and 3 shards (cuda_multi_generate, part "spec"; tiny and mid with their MTP
 *   block on the last shard): plain, and speculative with the MTP's drafts, every draft right and every
 *   draft wrong, gives one engine's plain tokens and its state byte for byte.
 * CTX_MULTI_PARTS (default "fixture,tiny,mid,spec") picks the models ("tiny" alone: a short run for
 * compute-sanitizer). */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime.h>

#include "cuda_engine.h"
#include "gemm.h"
#include "multi.h"
#include "state.h"
#include "weights.h"
#include "tap.h"

#define DECODE 8



static int devs[64], ndevs;

static void pick_devices(void)
{
    int count = cuda_device_count();
    const char *env = getenv("CTX_GPUS");
    ndevs = 0;
    if (env && *env) {
        for (const char *p = env; *p && ndevs < 64;) {
            char *end = NULL;
            long d = strtol(p, &end, 10);
            if (end == p)
                break;
            if (d >= 0 && d < count)
                devs[ndevs++] = (int)d;
            else
                printf("# CTX_GPUS names device %ld, which does not exist (%d devices): left out\n", d, count);
            p = *end == ',' ? end + 1 : end;
        }
    }
    if (!ndevs)
        for (int d = 0; d < count && d < 64; d++)
            devs[ndevs++] = d;
    printf("# devices:");
    for (int i = 0; i < ndevs; i++)
        printf(" %d", devs[i]);
    printf(" (shard i on device i %% %d)\n", ndevs);
}

/* The state as bytes (inf_state_serialize), for byte-for-byte comparison. */
static int state_bytes(const struct inf_state *st, uint8_t **buf, size_t *len)
{
    struct ctx_err e = {0};
    if (inf_state_serialize(st, buf, len, &e)) {
        printf("# serialize: %s\n", e.msg);
        return -1;
    }
    return 0;
}

/* What one engine does, per chunk size: the prefill's logits, the decode logits, the state after the
 * prefill (for the upload case) and after the decode (bytes). */
struct ref {
    float *pre, *dec; /* [V], [DECODE][V] */
    struct inf_state *mid;
    uint8_t *fin;
    size_t fin_len;
};

static int ref_run(struct cuda_engine *g, const struct inf_config *c, const int *tok, int P, int chunk, struct ref *r)
{
    struct ctx_err e = {0};
    int V = c->vocab_size;
    struct inf_state *fin = NULL;
    r->pre = malloc(sizeof(float) * (size_t)V);
    r->dec = malloc(sizeof(float) * (size_t)V * DECODE);
    if (!r->pre || !r->dec || inf_state_new(c, &r->mid, &e) || inf_state_new(c, &fin, &e))
        goto fail;
    cuda_engine_reset(g);
    for (int p = 0; p < P; p += chunk) {
        int S = P - p < chunk ? P - p : chunk;
        if (cuda_engine_forward(g, tok + p, S, p + S == P ? r->pre : NULL, &e))
            goto fail;
    }
    if (cuda_engine_state_download(g, r->mid, &e))
        goto fail;
    for (int j = 0; j < DECODE; j++)
        if (cuda_engine_decode(g, tok[P + j], r->dec + (size_t)j * V, &e))
            goto fail;
    if (cuda_engine_state_download(g, fin, &e) || state_bytes(fin, &r->fin, &r->fin_len))
        goto fail;
    inf_state_free(fin);
    return 0;
fail:
    printf("# reference run: %s\n", e.msg);
    inf_state_free(fin);
    return -1;
}

static void ref_free(struct ref *r)
{
    free(r->pre);
    free(r->dec);
    inf_state_free(r->mid);
    free(r->fin);
}

/* Keeps a host copy of the streams after block `layer` (cuda_engine_forward_hook). */
struct grab {
    int layer;
    float *dst;
    size_t n;
};
static void grab_hook(void *ud, int layer, const float *X, int S, long long pos0)
{
    struct grab *g = ud;
    (void)S; /* the caller sized dst for the chunk it feeds */
    (void)pos0;
    if (layer == g->layer)
        memcpy(g->dst, X, sizeof(float) * g->n);
}

/* Decode DECODE steps on the pipeline, the first half with graphs on when graph_first (else off),
 * the second half the other way; rows that differ from ref counted in *bad. */
static int multi_decode(struct cuda_multi *m, const int *tok, int V, const float *ref, int graph_first, int *bad,
                        int *gstate, struct ctx_err *e)
{
    float *lg = malloc(sizeof(float) * (size_t)V);
    int rc = lg ? 0 : -1;
    *bad = 0;
    *gstate = 0;
    for (int j = 0; j < DECODE && !rc; j++) {
        int graph = j < DECODE / 2 ? graph_first : !graph_first;
        cuda_multi_use_graph(m, graph);
        rc = cuda_multi_decode(m, tok[j], lg, e);
        if (!rc && graph)
            *gstate = cuda_multi_graph_state(m);
        if (!rc)
            *bad += memcmp(lg, ref + (size_t)j * V, sizeof(float) * (size_t)V) != 0;
    }
    cuda_multi_use_graph(m, 1);
    free(lg);
    return rc;
}

static void run_model(const char *name, const struct inf_weights *w, int P, const int *chunks, int nchunks,
                      int max_chunk, long long max_ctx, const int *split3)
{
    const struct inf_config *c = inf_weights_config(w);
    int V = c->vocab_size, L = c->num_hidden_layers;
    struct ctx_err e = {0};
    struct cuda_engine *g = NULL;
    struct cuda_engine_opts o = {.max_chunk = max_chunk, .max_ctx = max_ctx, .device = devs[0]};
    int *tok = malloc(sizeof(int) * (size_t)(P + DECODE));
    unsigned long long s = 0x1234567ull + (unsigned long long)P;
    tok[0] = c->bos_token_id;
    for (int i = 1; i < P + DECODE; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        tok[i] = 2 + (int)((s >> 33) % (unsigned long long)(V - 2));
    }
    struct ref *ref = calloc((size_t)nchunks, sizeof *ref);
    int rc = cuda_engine_new(w, &o, &g, &e);
    tap(rc == 0, "%s: one engine on device %d%s%s", name, devs[0], rc ? ": " : "", rc ? e.msg : "");
    for (int k = 0; !rc && k < nchunks; k++)
        rc = ref_run(g, c, tok, P, chunks[k], &ref[k]);
    if (rc) {
        tap(0, "%s: reference runs", name);
        goto done;
    }
    size_t wone = 0;
    cuda_engine_memory(g, &wone, NULL);
    for (int cfg = 0; cfg < 2; cfg++) {
        int n = cfg == 0 ? 2 : 3, sd[3], plan[3];
        const int *split = cfg == 0 ? NULL : split3;
        for (int i = 0; i < n; i++)
            sd[i] = devs[i % ndevs];
        struct cuda_multi *m = NULL;
        if (cfg == 0)
            cuda_multi_plan(c, max_ctx, n, plan, &e);
        else
            memcpy(plan, split3, sizeof(int) * 3);
        char what[160];
        int wl = snprintf(what, sizeof what, "%s, %d shards (layers", name, n);
        for (int i = 0; i < n; i++)
            wl += snprintf(what + wl, sizeof what - (size_t)wl, "%s%d on device %d", i ? ", " : " ", plan[i], sd[i]);
        snprintf(what + wl, sizeof what - (size_t)wl, "%s)", split ? "" : "; cuda_multi_plan");
        rc = cuda_multi_new(w, &o, sd, n, split, &m, &e);
        tap(rc == 0, "%s: cuda_multi_new%s%s", what, rc ? ": " : "", rc ? e.msg : "");
        if (rc)
            continue;
        { /* weights: every tensor on exactly one shard */
            size_t wsum = 0;
            int seen[64] = {0};
            for (int i = 0; i < n; i++) {
                if (seen[sd[i]]++)
                    continue;
                size_t wb = 0;
                cuda_multi_memory(m, sd[i], &wb, NULL);
                wsum += wb;
            }
            tap(wsum == wone, "%s: the shards' weights add up to one engine's (%zu and %zu bytes)", what, wsum, wone);
        }
        float *lg = malloc(sizeof(float) * (size_t)V);
        for (int k = 0; k < nchunks; k++) {
            int C = chunks[k];
            if (k == 0 && n > 1) { /* the same prefill queued from this thread alone (the threads' order is the same) */
                cuda_multi_prefill_threads(0);
                cuda_multi_reset(m);
                rc = cuda_multi_prefill(m, tok, P, C, lg, &e);
                cuda_multi_prefill_threads(-1);
                tap(rc == 0 && !memcmp(lg, ref[k].pre, sizeof(float) * (size_t)V) && cuda_multi_pos(m) == P,
                    "%s: the prefill of %d tokens in chunks of %d queued from one host thread: logits bit-identical to "
                    "one engine's%s%s",
                    what, P, C, rc ? ": " : "", rc ? e.msg : "");
                /* chunk 0: the pipeline's own pick (2 chunks a shard when max_chunk would make fewer);
                 * the engine's chunked prefill is bit-identical whatever the chunks */
                cuda_multi_reset(m);
                rc = cuda_multi_prefill(m, tok, P, 0, lg, &e);
                tap(rc == 0 && !memcmp(lg, ref[k].pre, sizeof(float) * (size_t)V) && cuda_multi_pos(m) == P,
                    "%s: the prefill of %d tokens in the chunks the pipeline picks (max_chunk %d): logits bit-identical "
                    "to one engine's in chunks of %d%s%s",
                    what, P, max_chunk, C, rc ? ": " : "", rc ? e.msg : "");
            }
            cuda_multi_reset(m);
            rc = cuda_multi_prefill(m, tok, P, C, lg, &e);
            tap(rc == 0 && !memcmp(lg, ref[k].pre, sizeof(float) * (size_t)V) && cuda_multi_pos(m) == P,
                "%s: pipelined prefill of %d tokens in chunks of %d: logits bit-identical to one engine's%s%s", what,
                P, C, rc ? ": " : "", rc ? e.msg : "");
            if (rc)
                continue;
            int bad = 0, gs = 0, gf = (k + cfg) % 2 == 0;
            rc = multi_decode(m, tok + P, V, ref[k].dec, gf, &bad, &gs, &e);
            tap(rc == 0 && bad == 0 && gs == 1,
                "%s: %d decode steps (%s first) bit-identical to one engine's (%d rows differ; graph state %d)%s%s",
                what, DECODE, gf ? "graphs" : "direct launches", bad, gs, rc ? ": " : "", rc ? e.msg : "");
            struct inf_state *st = NULL;
            uint8_t *buf = NULL;
            size_t len = 0;
            int ok = !inf_state_new(c, &st, &e) && !cuda_multi_state_download(m, st, &e) && !state_bytes(st, &buf, &len);
            tap(ok && len == ref[k].fin_len && !memcmp(buf, ref[k].fin, len),
                "%s: the state downloaded at position %d equals one engine's byte for byte (%zu bytes)%s%s", what,
                P + DECODE, len, ok ? "" : ": ", ok ? "" : e.msg);
            free(buf);
            inf_state_free(st);
        }
        /* a state uploaded (one engine's after the prefill in chunks[0]) continues identically */
        {
            int bad = 0, gs = 0;
            cuda_multi_reset(m);
            rc = cuda_multi_state_upload(m, ref[0].mid, &e);
            if (!rc)
                rc = multi_decode(m, tok + P, V, ref[0].dec, 1, &bad, &gs, &e);
            tap(rc == 0 && bad == 0 && cuda_multi_pos(m) == P + DECODE,
                "%s: one engine's state at %d uploaded, %d decode steps bit-identical (%d rows differ)%s%s", what, P,
                DECODE, bad, rc ? ": " : "", rc ? e.msg : "");
        }
        if (cfg == 0 && !strcmp(name, "tiny")) { /* bad arguments on a live pipeline change nothing */
            long long pos = cuda_multi_pos(m);
            int *bt = malloc(sizeof(int) * 40);
            memcpy(bt, tok, sizeof(int) * 40);
            bt[37] = V + 5;
            int r1 = cuda_multi_prefill(m, bt, 40, 16, lg, &e);
            int r2 = cuda_multi_forward(m, bt, 0, lg, &e);
            struct cuda_engine *s1 = cuda_multi_engine(m, 1), *s0 = cuda_multi_engine(m, 0);
            int r3 = cuda_engine_forward(s1, tok, 4, NULL, &e); /* no input streams */
            int r4 = cuda_engine_forward(s0, tok, 4, lg, &e);  /* logits from a first stage */
            struct inf_state *st = NULL;
            int r5 = 1;
            if (!inf_state_new(c, &st, &e) && !cuda_multi_state_download(m, st, &e)) {
                for (int l = 0; l < L; l++)
                    if (st->layers[l].ratio) {
                        st->layers[l].n_cache -= 1;
                        break;
                    }
                r5 = cuda_multi_state_upload(m, st, &e);
            }
            inf_state_free(st);
            tap(r1 == CTX_EINVAL && r2 == CTX_EINVAL && r3 == CTX_EINVAL && r4 == CTX_EINVAL && r5 == CTX_EINVAL &&
                    cuda_multi_pos(m) == pos && cuda_engine_pos(s0) == pos && cuda_engine_pos(s1) == pos,
                "%s: refused with CTX_EINVAL, position unchanged: a bad token in a prefill (%d), an empty chunk (%d), "
                "a range engine without input streams (%d) or asked for logits (%d), a state with wrong cache counts "
                "(%d)",
                what, r1, r2, r3, r4, r5);
            /* it still continues as one engine: decode from the state above once more */
            int bad = 0, gs = 0;
            rc = cuda_multi_state_upload(m, ref[0].mid, &e);
            if (!rc)
                rc = multi_decode(m, tok + P, V, ref[0].dec, 0, &bad, &gs, &e);
            tap(rc == 0 && bad == 0, "%s: after the refusals, the same decode logits again (%d rows differ)", what,
                bad);
            free(bt);
            /* the streams shard 0 hands on equal one engine's after the same block */
            int b0 = 0, e0 = 0;
            cuda_engine_layers(s0, &b0, &e0);
            struct grab gr = {e0 - 1, NULL, (size_t)20 * c->hc_mult * c->hidden_size};
            float *gx = malloc(sizeof(float) * gr.n);
            gr.dst = malloc(sizeof(float) * gr.n);
            cuda_multi_reset(m);
            cuda_engine_reset(g);
            rc = cuda_multi_forward(m, tok, 20, NULL, &e);
            int dev = cuda_engine_device(s0);
            if (!rc) /* unified addressing: the copy finds the pointer's device */
                rc = cudaMemcpy(gx, cuda_engine_streams(s0), sizeof(float) * gr.n, cudaMemcpyDefault) == cudaSuccess
                         ? 0
                         : ctx_err_set(&e, CTX_EIO, "cudaMemcpy of shard 0's streams failed");
            if (!rc)
                rc = cuda_engine_forward_hook(g, tok, 20, NULL, grab_hook, &gr, &e);
            tap(rc == 0 && b0 == 0 && !memcmp(gx, gr.dst, sizeof(float) * gr.n),
                "%s: the streams shard 0 (layers [%d, %d), device %d) hands on equal one engine's after block %d%s%s",
                what, b0, e0, dev, e0 - 1, rc ? ": " : "", rc ? e.msg : "");
            free(gx);
            free(gr.dst);
        }
        free(lg);
        cuda_multi_free(m);
    }
done:
    for (int k = 0; k < nchunks; k++)
        ref_free(&ref[k]);
    free(ref);
    free(tok);
    cuda_engine_free(g);
}

/* Argument errors of cuda_multi_new and of a range engine: CTX_EINVAL, nothing allocated (the sanitizer
 * build would see a leak; here: a new pipeline still fits afterwards). */
static void test_args(const struct inf_weights *w)
{
    const struct inf_config *c = inf_weights_config(w);
    int L = c->num_hidden_layers, count = cuda_device_count();
    struct cuda_engine_opts o = {.max_chunk = 64, .max_ctx = 512};
    struct ctx_err e = {0};
    struct cuda_multi *m = NULL;
    int d[64];
    for (int i = 0; i < 64; i++)
        d[i] = devs[i % ndevs];
    int bad_dev[2] = {devs[0], count + 7};
    int cover[2] = {2, L - 3}, empty[2] = {0, L}, neg[3] = {L, 1, -1};
    struct {
        const char *what;
        const int *devices;
        int n;
        const int *split;
    } cases[] = {
        {"0 shards", d, 0, NULL},
        {"no device list", NULL, 2, NULL},
        {"a device that does not exist", bad_dev, 2, NULL},
        {"a split that does not cover the layers", d, 2, cover},
        {"a split with an empty shard", d, 2, empty},
        {"a split with a negative count", d, 3, neg},
        {"more shards than layers", d, L + 1, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        memset(&e, 0, sizeof e);
        int rc = cuda_multi_new(w, &o, cases[i].devices, cases[i].n, cases[i].split, &m, &e);
        tap(rc == CTX_EINVAL && !m, "cuda_multi_new refuses %s: CTX_EINVAL (%s)", cases[i].what, e.msg);
        cuda_multi_free(m);
        m = NULL;
    }
    int plan[64];
    int rp = cuda_multi_plan(c, 512, 0, plan, &e);
    tap(rp == CTX_EINVAL, "cuda_multi_plan refuses 0 shards (%s)", e.msg);
    struct cuda_engine *g = NULL;
    struct {
        const char *what;
        int dev, b, en;
    } ecases[] = {
        {"a device that does not exist", count + 3, 0, 0},
        {"an empty layer range", devs[0], 3, 3},
        {"a layer range past the last layer", devs[0], 2, L + 1},
        {"a negative layer", devs[0], -1, 2},
    };
    for (size_t i = 0; i < sizeof ecases / sizeof ecases[0]; i++) {
        struct cuda_engine_opts eo = o;
        eo.device = ecases[i].dev;
        eo.layer_begin = ecases[i].b;
        eo.layer_end = ecases[i].en;
        memset(&e, 0, sizeof e);
        int rc = cuda_engine_new(w, &eo, &g, &e);
        tap(rc == CTX_EINVAL && !g, "cuda_engine_new refuses %s: CTX_EINVAL (%s)", ecases[i].what, e.msg);
        cuda_engine_free(g);
        g = NULL;
    }
    /* a range engine holds only its layers' weights: the middle one has no embedding or head */
    struct cuda_engine_opts eo = o;
    eo.device = devs[0];
    eo.layer_begin = 1;
    eo.layer_end = L - 1;
    int rc = cuda_engine_new(w, &eo, &g, &e);
    size_t wmid = 0, wall = 0;
    if (!rc)
        cuda_engine_memory(g, &wmid, NULL);
    cuda_engine_free(g);
    g = NULL;
    if (!rc && !(rc = cuda_engine_new(w, &o, &g, &e)))
        cuda_engine_memory(g, &wall, NULL);
    cuda_engine_free(g);
    size_t emb = (size_t)c->vocab_size * c->hidden_size * 2;
    tap(rc == 0 && wmid > 0 && wmid + 2 * emb < wall,
        "an engine over layers [1, %d) holds %zu weight bytes, one over all %zu (embedding and head %zu each)%s%s", L - 1,
        wmid, wall, emb, rc ? ": " : "", rc ? e.msg : "");
}

/* Greedy generation over the pipeline (cuda_multi_generate, part "spec"): plain and speculative (the MTP
 * block on the last shard; its own drafts, every draft right, every draft wrong) over 2 and 3 shards
 * give one engine's plain tokens and its state byte for byte. */
static int multi_state(struct cuda_multi *m, const struct inf_config *c, uint8_t **buf, size_t *len)
{
    struct ctx_err e = {0};
    struct inf_state *st = NULL;
    int rc = inf_state_new(c, &st, &e) || cuda_multi_state_download(m, st, &e) || inf_state_serialize(st, buf, len, &e);
    if (rc)
        printf("# multi state: %s\n", e.msg);
    inf_state_free(st);
    return rc;
}
static void test_spec(const char *name, const struct inf_weights *w, int P, int N)
{
    struct ctx_err e = {0};
    const struct inf_config *c = inf_weights_config(w);
    int V = c->vocab_size, L = c->num_hidden_layers;
    int *tok = malloc(sizeof(int) * (size_t)P), *ref = malloc(sizeof(int) * (size_t)N);
    int *out = malloc(sizeof(int) * (size_t)N), *force = malloc(sizeof(int) * (size_t)N);
    for (int i = 0; i < P; i++)
        tok[i] = (i * 7919 + 13) % V;
    struct cuda_engine_opts o = {.max_chunk = 128, .max_ctx = P + N + 16, .mtp = 1};
    struct cuda_engine *g = NULL;
    struct cuda_engine_gen_opts go = {.max_tokens = N};
    struct cuda_engine_gen_stats gs;
    uint8_t *s0 = NULL, *s1 = NULL;
    size_t l0 = 0, l1 = 0;
    int nr = 0, no = 0;
    int ok = !cuda_engine_new(w, &o, &g, &e) && !cuda_engine_generate(g, tok, P, &go, ref, &nr, &gs, &e) && nr == N;
    if (ok) {
        struct inf_state *st = NULL;
        ok = !inf_state_new(c, &st, &e) && !cuda_engine_state_download(g, st, &e) &&
             !inf_state_serialize(st, &s0, &l0, &e);
        inf_state_free(st);
    }
    cuda_engine_free(g);
    tap(ok, "spec %s: one engine's plain generation of %d tokens after %d%s%s", name, N, P, ok ? "" : ": ",
        ok ? "" : e.msg);
    for (int ns = 2; ok && ns <= 3; ns++) {
        int dv[3], split[3] = {L / 3, L / 3, L - 2 * (L / 3)};
        if (ns == 2)
            split[0] = L / 2, split[1] = L - L / 2;
        for (int i = 0; i < ns; i++)
            dv[i] = devs[i % ndevs];
        struct cuda_multi *m = NULL;
        if (cuda_multi_new(w, &o, dv, ns, split, &m, &e)) {
            tap(0, "spec %s: a pipeline of %d shards: %s", name, ns, e.msg);
            continue;
        }
        for (int mode = 0; mode < 4; mode++) {
            static const char *what[4] = {"plain", "the MTP's drafts", "every draft right", "every draft wrong"};
            for (int i = 0; i < N; i++)
                force[i] = mode == 2 ? ref[i] : (ref[i] + 1) % V;
            cuda_engine_spec_force(cuda_multi_engine(m, ns - 1), mode >= 2 ? force : NULL, N);
            go.spec = mode > 0;
            cuda_multi_reset(m);
            free(s1);
            s1 = NULL;
            int r = cuda_multi_generate(m, tok, P, &go, out, &no, &gs, &e);
            int st = r ? 1 : multi_state(m, c, &s1, &l1);
            tap(!r && !st && no == N && !memcmp(out, ref, sizeof(int) * (size_t)N) && l1 == l0 && !memcmp(s0, s1, l0),
                "spec %s: %d shards (devices %d..), generation (%s): one engine's tokens and state (%lld forwards, "
                "%lld drafts, %lld accepted, %lld undone)%s%s",
                name, ns, dv[0], what[mode], gs.forwards, gs.drafted, gs.accepted, gs.undos, r ? ": " : "",
                r ? e.msg : "");
        }
        cuda_engine_spec_force(cuda_multi_engine(m, ns - 1), NULL, 0);
        cuda_multi_free(m);
    }
    free(tok);
    free(ref);
    free(out);
    free(force);
    free(s0);
    free(s1);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (cuda_device_count() < 1) {
        printf("1..0 # SKIP no CUDA device\n");
        return 0;
    }
    pick_devices();
    const char *root = getenv("CTX_SOURCE_ROOT"), *parts = getenv("CTX_MULTI_PARTS");
    if (!parts)
        parts = "fixture,tiny,mid,spec";
    static const char *const models[3] = {"fixture", "tiny", "mid"};
    static const int chunks[3][3] = {{64, 100}, {128, 50, 9}, {256, 100}}, nchunks[3] = {2, 3, 2};
    static const int split3[3][3] = {{1, 3, 2}, {1, 3, 2}, {2, 7, 3}};
    static const int prefill[3] = {333, 200, 1100}, max_chunk[3] = {128, 128, 256}, max_ctx[3] = {1024, 1024, 2048};
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
        if (k == 1)
            test_args(w);
        run_model(models[k], w, prefill[k], chunks[k], nchunks[k], max_chunk[k], max_ctx[k], split3[k]);
        if (k > 0 && strstr(parts, "spec"))
            test_spec(models[k], w, k == 1 ? 300 : 700, k == 1 ? 80 : 60);
        inf_weights_free(w);
    }
    printf("1..%d\n", n_test);
    return n_fail ? 1 : 0;
}
