/* The CUDA forward pass (kernels/cuda_engine.h) against the golden fixture and against the CPU engine
 * (inference/model.h). Plain TAP (the GPU machine has no cmocka); "1..0 # SKIP" without a device.
 *
 * What is asserted, and why those bounds:
 * - golden fixture tests/fixtures/v4-tiny-a, all 7 cases teacher-forced (prefill row + decode rows):
 *   the bounds of the CPU engine's own fixture test (tests/inference/test_forward.c): per-row
 *   rms(logits - golden) / sigma(golden) worst <= 0.8, median <= 0.3, top-1 equal on >= half of the
 *   rows. The fixture's README explains why no engine matches it bit for bit end to end (bf16
 *   rounding flips from a different fp32 summation order cascade through the layers);
 * - CUDA against CPU on the same inputs (fixture, synthetic tiny and mid configs): the same bounds
 *   (two correct engines differ by the same mechanism); the figures printed are the evidence. With
 *   prefill's FP8 products on cuBLASLt (the default: kernels/cuda_engine.h cuda_engine_prefill_lt) the
 *   CUDA engine's numerics differ from the CPU's by design (each 128-K block summed by the FP8 tensor
 *   cores), so its top-1 against the CPU is asserted on the decisive rows; each run is repeated with
 *   the exact products, which must meet the every-row bounds against the CPU (and the golden logits),
 *   the cuBLASLt run must report its products ran there, and cuBLASLt vs exact must be within the
 *   rms bounds;
 * - state transfer: a GPU state downloaded, uploaded again and decoded gives bit-identical logits
 *   (every kernel is deterministic); a state downloaded to the CPU engine, and a CPU state uploaded
 *   to the GPU, continue within the bounds above;
 * - chunked prefill (chunks of 50) against one chunk: within the bounds, and bit-identical (every
 *   chunk of more than 8 tokens runs the same per-row products, cuBLASLt's included).
 * - Programmatic Dependent Launch off and on (part "pdl", test_pdl): bit-identical logits and state.
 * - the MoE switches of the decode step (part "moe", test_moe): every mode bit-identical to the serial one;
 *   and the prefill's grouped GEMM over 128-pair CTAs (V9, a chunk of 800 on mid) against V7's 64-pair
 *   ones (chunks of 50): bit-identical logits and state.
 * - SwiGLU's quantisation 8 values a lane (k_swiglu_quant16) against 4 (part "prep", test_idx_switch on mid):
 *   bit-identical logits and state.
 * - the decode attention's launch changes (part "afuse", test_attn_fuse): every mode bit-identical to bits 0;
 *   the decode attention on tensor cores (part "dtc"): its modes bit-identical to the default.
 * - the compressors' prefill products on cuBLASLt (part "mid", test_cmp_lt): the path runs, chunked prefill
 *   bit-identical to one chunk, logits within the rounding bounds of k_bgemm's.
 * - the FP8 prefill products in cuBLASLt's rows form (part "mid", test_lt_rows): the form runs, chunked
 *   prefill bit-identical to one chunk, logits within the rounding bounds of the transposed form's.
 * - the decode mHC's paths (part "mhc", test_hc): k_hc_mixpre and the side-stream Sinkhorn against
 *   k_hc_mix + k_hc_pre, each on its own and both: bit-identical logits and state; prefill's streams as
 *   bf16 bits against floats (cuda_engine_x16_mode) and k_hc_pre4q against k_hc_pre<4, 1>: bit-identical
 *   logits and state; HCX (the mixes on tensor cores) against sums in double beside the fp32 form
 *   (test_hcx_precision: within 2^-20 of the products' magnitudes, prefill and decode kernels bit-identical)
 *   and against the fp32 form end to end (test_hcx: the rounding bounds of two CUDA runs).
 * - the indexer scores of prefill chunks (part "idx", test_idx_switch): k_idx_score_i8, k_idx_score_i8e and
 *   k_idx_score_iwg against k_idx_score_tc2, on mid (16 indexer heads) and mid64i (64, Flash's): bit-identical
 *   logits and state.
 * - the HCA layers' prefill attention from the bf16 cache (part "c16"): bit-identical to the fp32 gather.
 * - the prefill attention on wgmma (part "wg", test_wg): mid64 (64 heads) against the CPU, chunked prefill
 *   bit-identical to one chunk, its bf16-cache path bit-identical to its gather; the twenty-fourth
 *   session's prefill forms (wq_b into bf16 queries, k_moe_combine16, q_prep_rows) bit-identical to the
 *   forms before.
 * - the MTP block and speculative decoding (part "spec", test_spec): the MTP's logits on the fixture
 *   against the CPU's inf_model_mtp on the same streams over 8 rows (rms/sigma median <= 0.04, worst <= 0.06:
 *   spec_mtp_rows says why) and the golden mtp_logits (the fixture's bounds), in pieces against one call
 *   (median <= 0.05, worst <= 0.3, the draft equal); a forward of two tokens
 *   bit-identical to two one-token steps (both rows, and the device argmax); greedy generation with
 *   the MTP's drafts, with every draft right, wrong, and mixed: the plain run's tokens and state byte
 *   for byte, and the same stop.
 * Environment: CTX_ENGINE_PARTS (default "topk,fixture,tiny,mid,long,d2h,pdl,idx,c16,wg,moe,mhc,prep,afuse,dtc,spec"; "memcheck" is a short run
 * of every kernel for compute-sanitizer) picks the parts;
 * CTX_ENGINE_MID_PREFILL / CTX_ENGINE_MID_DECODE (default 1100 / 150) size the mid run (1100
 * positions: the CSA indexer of mid, top-256, then selects from up to 312 entries). */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cpu/kernels.h" /* inf_cpu_topk */
#include "cuda_engine.h"
#include "gemm.h"
#include "model.h"
#include "safetensors.h"
#include "state.h"
#include "weights.h"
#include "tap.h"



static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* ---- row statistics ---- */

struct agg {
    int n, top1;
    int decisive, decisive_agree; /* rows whose reference top-2 gap exceeds 3x the row's rms difference */
    double *gap;                  /* per row (top1 - top2) / sigma of the reference */
    double *rms; /* per row rms/sigma */
    double maxabs; /* largest |diff| / sigma */
    int bitwise;   /* rows identical */
};
static void agg_init(struct agg *a, int cap)
{
    memset(a, 0, sizeof *a);
    a->rms = malloc(sizeof(double) * (size_t)cap);
    a->gap = malloc(sizeof(double) * (size_t)cap);
}
static int argmax(const float *x, int n)
{
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b])
            b = i;
    return b;
}
/* Compare a row with a reference row; sigma from the reference. */
static void agg_row(struct agg *a, const float *x, const float *ref, int V)
{
    double m = 0, v = 0, d2 = 0, mx = 0;
    for (int i = 0; i < V; i++)
        m += ref[i];
    m /= V;
    for (int i = 0; i < V; i++) {
        v += (ref[i] - m) * (ref[i] - m);
        double d = (double)x[i] - ref[i];
        d2 += d * d;
        mx = fmax(mx, fabs(d));
    }
    double sig = sqrt(v / V);
    int t1 = argmax(ref, V), t2 = t1 ? 0 : 1;
    for (int i = 0; i < V; i++)
        if (i != t1 && ref[i] > ref[t2])
            t2 = i;
    double r = sqrt(d2 / V) / sig, gap = (ref[t1] - ref[t2]) / sig;
    int same = argmax(x, V) == t1;
    a->gap[a->n] = gap;
    a->rms[a->n++] = r;
    a->maxabs = fmax(a->maxabs, mx / sig);
    a->top1 += same;
    if (gap > 3 * r) {
        a->decisive++;
        a->decisive_agree += same;
    }
    a->bitwise += !memcmp(x, ref, sizeof(float) * (size_t)V);
}
static int cmp_double(const void *p, const void *q)
{
    double a = *(const double *)p, b = *(const double *)q;
    return (a > b) - (a < b);
}
/* Prints the summary and asserts the fixture test's rms bounds, and either nothing more (top1_all 2),
 * its top-1 bound (>= 50% of the rows, top1_all 1) or, for models with a large vocabulary of random logits where the two largest
 * logits are often closer than two correct engines' rounding divergence, that top-1 agrees on >= 90%
 * of the decisive rows (reference top-2 gap > 3x the row's rms difference). */
static void agg_check(struct agg *a, const char *what, int top1_all)
{
    qsort(a->rms, (size_t)a->n, sizeof(double), cmp_double);
    qsort(a->gap, (size_t)a->n, sizeof(double), cmp_double);
    double med = a->n % 2 ? a->rms[a->n / 2] : 0.5 * (a->rms[a->n / 2 - 1] + a->rms[a->n / 2]);
    double worst = a->rms[a->n - 1], p90 = a->rms[(int)(0.9 * (a->n - 1))];
    printf("# %s: %d rows, rms/sigma median %.4f p90 %.4f max %.4f, max |diff|/sigma %.4f, top-1 %d/%d (%.1f%%), "
           "reference top-2 gap/sigma median %.3f, decisive rows %d with top-1 equal %d, bit-identical rows %d\n",
           what, a->n, med, p90, worst, a->maxabs, a->top1, a->n, 100.0 * a->top1 / a->n, a->gap[a->n / 2],
           a->decisive, a->decisive_agree, a->bitwise);
    if (top1_all == 2) /* two CUDA runs that differ only in rounding: the rms bounds */
        tap(worst <= 0.8 && med <= 0.3, "%s within the fixture's rms bounds (worst <= 0.8, median <= 0.3)", what);
    else if (top1_all)
        tap(worst <= 0.8 && med <= 0.3 && 2 * a->top1 >= a->n,
            "%s within the fixture bounds (worst <= 0.8, median <= 0.3, top-1 >= 50%%)", what);
    else { /* 90% of the decisive rows: floor(decisive / 10) flips, but at least one (with fewer than 10
            * decisive rows "90%" would otherwise mean all of them) */
        const int flips = a->decisive - a->decisive_agree, allowed = a->decisive / 10 > 1 ? a->decisive / 10 : 1;
        tap(worst <= 0.8 && med <= 0.3 && flips <= allowed,
            "%s within the fixture's rms bounds (worst <= 0.8, median <= 0.3), top-1 on >= 90%% of decisive rows "
            "(%d flips, %d allowed)", what, flips, allowed);
    }
    free(a->rms);
    free(a->gap);
}

/* ---- runs ---- */

static int gpu_run(struct cuda_engine *g, const int *tok, int P, int n, int chunk, float *rows, int V)
{
    struct ctx_err e = {0};
    cuda_engine_reset(g);
    int step = chunk > 0 ? chunk : P;
    for (int p = 0; p < P; p += step) {
        int S = P - p < step ? P - p : step;
        if (cuda_engine_forward(g, tok + p, S, p + S == P ? rows : NULL, &e)) {
            printf("# gpu forward: %s\n", e.msg);
            return -1;
        }
    }
    for (int j = 0; P + j < n; j++)
        if (cuda_engine_decode(g, tok[P + j], rows + (size_t)(1 + j) * V, &e)) {
            printf("# gpu decode: %s\n", e.msg);
            return -1;
        }
    return 0;
}

/* CPU: prefill in chunks of at most `chunk`, then decode, on the caller's state st. */
static int cpu_run(struct inf_model *m, struct inf_state *st, const int *tok, int P, int n, int chunk, float *rows,
                   int V)
{
    struct ctx_err e = {0};
    int step = chunk > 0 ? chunk : P;
    for (int p = 0; p < P; p += step) {
        int S = P - p < step ? P - p : step;
        struct inf_forward_opts o = {.logits = p + S == P ? rows : NULL};
        if (inf_model_forward(m, st, tok + p, S, &o, &e)) {
            printf("# cpu forward: %s\n", e.msg);
            return -1;
        }
    }
    for (int j = 0; P + j < n; j++) {
        struct inf_forward_opts o = {.logits = rows + (size_t)(1 + j) * V};
        if (inf_model_forward(m, st, tok + P + j, 1, &o, &e)) {
            printf("# cpu decode: %s\n", e.msg);
            return -1;
        }
    }
    return 0;
}

/* ---- block by block ---- */

struct xstore {
    size_t xn;
    float *X; /* [layers][xn] */
};
static void store_hook(void *ud, int layer, const float *X, int S, long long pos0)
{
    (void)S;
    (void)pos0;
    struct xstore *h = ud;
    memcpy(h->X + (size_t)layer * h->xn, X, sizeof(float) * h->xn);
}
static double rel_rms(const float *a, const float *ref, size_t n, double *maxabs)
{
    double d2 = 0, r2 = 0, mx = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - ref[i];
        d2 += d * d;
        r2 += (double)ref[i] * ref[i];
        mx = fmax(mx, fabs(d));
    }
    if (maxabs)
        *maxabs = mx;
    return sqrt(d2 / (r2 > 0 ? r2 : 1));
}

/* A prefill of S tokens on both engines, compared after every block: "isolated" runs the CPU's block
 * l (inf_model_block) on the GPU's own input to it (its block l-1 output), so it measures block l's
 * error alone; "cumulative" compares the two engines' streams after running end to end. Every block
 * must agree in isolation within ISO_MAX relative rms. Two correct engines differ there by rounding
 * flips amplified by the FP8 activation quantisation (one bf16 flip can move an e4m3 code by 12%)
 * and by near-tie routing or indexer choices: the CPU engine itself differs from DeepSeek's
 * reference by up to 2.8e-2 in this measure (fixture case 2, block 0; printed by the fixture part),
 * and the GPU from the CPU by up to 4e-2 on the H200 (mid, block 0). A wrong scale, index,
 * rotation or rounding point moves a block's output by a large fraction of its size. */
#define ISO_MAX 0.1
static void block_check(const char *name, const struct inf_weights *w, struct inf_model *m, struct cuda_engine *g,
                        const int *tok, int S)
{
    struct ctx_err e = {0};
    const struct inf_config *c = inf_weights_config(w);
    int L = c->num_hidden_layers, hc = c->hc_mult, D = c->hidden_size;
    size_t xn = (size_t)S * hc * D;
    struct xstore gs = {xn, malloc(sizeof(float) * xn * L)}, cs = {xn, malloc(sizeof(float) * xn * L)};
    float *Xin = malloc(sizeof(float) * xn), *Xc = malloc(sizeof(float) * xn);
    struct inf_state *st = NULL, *st2 = NULL;
    int ok = gs.X && cs.X && Xin && Xc && !inf_state_new(c, &st, &e) && !inf_state_new(c, &st2, &e);
    cuda_engine_reset(g);
    ok = ok && !cuda_engine_forward_hook(g, tok, S, NULL, store_hook, &gs, &e);
    struct inf_forward_opts fo = {.hook = store_hook, .hook_ud = &cs};
    ok = ok && !inf_model_forward(m, st, tok, S, &fo, &e);
    const struct inf_tensor *emb = inf_weights_get(w, "embed.weight");
    ok = ok && emb;
    if (!ok) {
        tap(0, "%s: block check runs: %s", name, e.msg);
        goto done;
    }
    for (int s = 0; s < S; s++)
        for (int k = 0; k < hc; k++)
            for (int i = 0; i < D; i++) {
                uint32_t u = (uint32_t)((const uint16_t *)emb->data)[(size_t)tok[s] * D + i] << 16;
                memcpy(&Xin[((size_t)s * hc + k) * D + i], &u, 4);
            }
    double worst = 0;
    for (int l = 0; l < L && ok; l++) {
        memcpy(Xc, Xin, sizeof(float) * xn);
        if (inf_model_block(m, st2, l, Xc, tok, S, 0, &e)) {
            tap(0, "%s: cpu block %d: %s", name, l, e.msg);
            goto done;
        }
        const float *Xg = gs.X + (size_t)l * xn;
        double mi, mc, iso = rel_rms(Xg, Xc, xn, &mi), cum = rel_rms(Xg, cs.X + (size_t)l * xn, xn, &mc);
        printf("# %s block %2d (ratio %3d): isolated rel rms %.2e (max abs %.3g), cumulative rel rms %.2e (max abs %.3g)\n",
               name, l, c->compress_ratios[l], iso, mi, cum, mc);
        worst = fmax(worst, iso);
        memcpy(Xin, Xg, sizeof(float) * xn);
    }
    tap(worst <= ISO_MAX, "%s: every block of a %d-token prefill agrees with the cpu in isolation (worst rel rms %.2e <= %.2g)",
        name, S, worst, ISO_MAX);
done:
    inf_state_free(st);
    inf_state_free(st2);
    free(gs.X);
    free(cs.X);
    free(Xin);
    free(Xc);
}

/* The fixture's recorded streams of case 2 (64 prefill tokens) after every block: this engine and the
 * CPU end to end, and the CPU's block alone on the reference's own input (the measure block_check
 * applies between the engines). Printed, the evidence beside the logit bounds. */
static void fixture_blocks(const struct inf_weights *w, struct inf_model *m, struct cuda_engine *g,
                           struct inf_st_file *x)
{
    struct ctx_err e = {0};
    const struct inf_config *c = inf_weights_config(w);
    int L = c->num_hidden_layers, hc = c->hc_mult, D = c->hidden_size, S = 64;
    size_t xn = (size_t)S * hc * D;
    const struct inf_tensor *tt = inf_st_find(x, "case2.tokens"), *emb = inf_weights_get(w, "embed.weight");
    struct xstore gs = {xn, malloc(sizeof(float) * xn * L)}, cs = {xn, malloc(sizeof(float) * xn * L)};
    float *Xc = malloc(sizeof(float) * xn), *Xin = malloc(sizeof(float) * xn);
    int tok[64];
    struct inf_state *st = NULL, *st2 = NULL;
    int ok = tt && emb && tt->shape[0] >= S && gs.X && cs.X && Xc && Xin && !inf_state_new(c, &st, &e) &&
             !inf_state_new(c, &st2, &e);
    for (int i = 0; ok && i < S; i++)
        tok[i] = ((const int32_t *)tt->data)[i];
    cuda_engine_reset(g);
    ok = ok && !cuda_engine_forward_hook(g, tok, S, NULL, store_hook, &gs, &e);
    struct inf_forward_opts fo = {.hook = store_hook, .hook_ud = &cs};
    ok = ok && !inf_model_forward(m, st, tok, S, &fo, &e);
    tap(ok, "fixture case 2 block by block runs%s%s", ok ? "" : ": ", ok ? "" : e.msg);
    for (int s = 0; ok && s < S; s++)
        for (int k = 0; k < hc; k++)
            for (int i = 0; i < D; i++) {
                uint32_t u = (uint32_t)((const uint16_t *)emb->data)[(size_t)tok[s] * D + i] << 16;
                memcpy(&Xin[((size_t)s * hc + k) * D + i], &u, 4);
            }
    for (int l = 0; ok && l < L; l++) {
        char name[64];
        snprintf(name, sizeof name, "case2.block%d.out", l);
        const struct inf_tensor *rt = inf_st_find(x, name);
        if (!rt || (size_t)inf_tensor_numel(rt) != xn)
            break;
        const float *ref = rt->data;
        memcpy(Xc, Xin, sizeof(float) * xn);
        if (inf_model_block(m, st2, l, Xc, tok, S, 0, &e))
            break;
        printf("# fixture case 2 block %d (ratio %3d) vs the recorded reference, rel rms: cuda end to end %.2e, cpu end "
               "to end %.2e, cpu block alone on the reference's input %.2e\n",
               l, c->compress_ratios[l], rel_rms(gs.X + (size_t)l * xn, ref, xn, NULL),
               rel_rms(cs.X + (size_t)l * xn, ref, xn, NULL), rel_rms(Xc, ref, xn, NULL));
        memcpy(Xin, ref, sizeof(float) * xn);
    }
    inf_state_free(st);
    inf_state_free(st2);
    free(gs.X);
    free(cs.X);
    free(Xc);
    free(Xin);
}

/* ---- the golden fixture ---- */

static void test_fixture(const char *root)
{
    char path[1024];
    struct ctx_err e = {0};
    struct inf_weights *w = NULL;
    struct inf_model *m = NULL;
    struct cuda_engine *g = NULL;
    struct inf_st_file *x = NULL;
    snprintf(path, sizeof path, "%s/tests/fixtures/v4-tiny-a", root);
    if (inf_weights_open(path, &w, &e) || inf_model_new(w, NULL, 0, &m, &e)) {
        tap(0, "fixture loads: %s", e.msg);
        goto done;
    }
    struct cuda_engine_opts o = {.max_chunk = 512, .max_ctx = 1024};
    double t0 = now_s();
    int rc = cuda_engine_new(w, &o, &g, &e);
    tap(rc == 0, "cuda_engine_new on the fixture (%.2f s)%s%s", now_s() - t0, rc ? ": " : "", rc ? e.msg : "");
    if (rc)
        goto done;
    snprintf(path, sizeof path, "%s/tests/fixtures/v4-tiny-a/expected.safetensors", root);
    if (inf_st_open(path, &x, &e)) {
        tap(0, "expected.safetensors: %s", e.msg);
        goto done;
    }
    const struct inf_config *c = inf_weights_config(w);
    int V = c->vocab_size;
    struct agg vs_gold, vs_cpu, cpu_gold, x_gold, x_cpu; /* x_: the exact prefill products (when lt is on) */
    agg_init(&vs_gold, 256);
    agg_init(&vs_cpu, 256);
    agg_init(&cpu_gold, 256);
    agg_init(&x_gold, 256);
    agg_init(&x_cpu, 256);
    const int lt_on = cuda_engine_prefill_lt(g, -1, NULL, NULL);
    for (int k = 0; k < 7; k++) {
        char name[64];
        snprintf(name, sizeof name, "case%d.tokens", k);
        const struct inf_tensor *tt = inf_st_find(x, name);
        snprintf(name, sizeof name, "case%d.prefill_len", k);
        const struct inf_tensor *pt = inf_st_find(x, name);
        snprintf(name, sizeof name, "case%d.logits", k);
        const struct inf_tensor *lt = inf_st_find(x, name);
        if (!tt || !pt || !lt) {
            tap(0, "fixture case %d tensors", k);
            continue;
        }
        int n = (int)tt->shape[0], P = ((const int32_t *)pt->data)[0], R = n - P + 1;
        int *tok = malloc(sizeof(int) * (size_t)n);
        for (int i = 0; i < n; i++)
            tok[i] = ((const int32_t *)tt->data)[i];
        float *gr = malloc(sizeof(float) * (size_t)R * V), *cr = malloc(sizeof(float) * (size_t)R * V);
        float *xr = malloc(sizeof(float) * (size_t)R * V);
        struct inf_state *st = NULL;
        inf_state_new(c, &st, &e);
        int xfail = 0;
        if (lt_on) { /* the same case with the exact prefill products */
            cuda_engine_prefill_lt(g, 0, NULL, NULL);
            xfail = gpu_run(g, tok, P, n, 0, xr, V);
            cuda_engine_prefill_lt(g, 1, NULL, NULL);
        }
        if (xfail || gpu_run(g, tok, P, n, 0, gr, V) || cpu_run(m, st, tok, P, n, 0, cr, V)) {
            tap(0, "case %d runs", k);
        } else {
            struct agg one;
            agg_init(&one, R);
            for (int r = 0; r < R; r++) {
                const float *gold = (const float *)lt->data + (size_t)r * V;
                agg_row(&vs_gold, gr + (size_t)r * V, gold, V);
                agg_row(&one, gr + (size_t)r * V, gold, V);
                agg_row(&vs_cpu, gr + (size_t)r * V, cr + (size_t)r * V, V);
                agg_row(&cpu_gold, cr + (size_t)r * V, gold, V);
                if (lt_on) {
                    agg_row(&x_gold, xr + (size_t)r * V, gold, V);
                    agg_row(&x_cpu, xr + (size_t)r * V, cr + (size_t)r * V, V);
                }
            }
            double w1 = 0;
            for (int r = 0; r < one.n; r++)
                w1 = fmax(w1, one.rms[r]);
            printf("# fixture case %d (P %d, %d rows): cuda vs golden worst rms/sigma %.3f, top-1 %d/%d\n", k, P, R, w1,
                   one.top1, R);
            free(one.rms);
            free(one.gap);
        }
        inf_state_free(st);
        free(tok);
        free(gr);
        free(cr);
        free(xr);
    }
    fixture_blocks(w, m, g, x);
    /* With cuBLASLt's prefill products (lt_on) the CUDA engine's prefill numerics are not the CPU
     * engine's (each 128-K block summed by the FP8 tensor cores, not in exact fp32 partials), so the two
     * agree as two independent correct engines do (tests/fixtures/v4-tiny-a/README.md: top-1 on the
     * decisive rows; many rows' top two logits are closer than either engine's rounding divergence);
     * the exact products are checked against the CPU with the top-1 bound on every row. */
    agg_check(&vs_gold, lt_on ? "fixture: cuda (cuBLASLt prefill products) vs golden logits" :
                                "fixture: cuda vs golden logits", 1);
    agg_check(&cpu_gold, "fixture: cpu vs golden logits (reference figures, same run)", 1);
    agg_check(&vs_cpu, lt_on ? "fixture: cuda (cuBLASLt prefill products) vs cpu logits" :
                               "fixture: cuda vs cpu logits", !lt_on);
    if (lt_on) {
        agg_check(&x_gold, "fixture: cuda (exact prefill products) vs golden logits", 1);
        agg_check(&x_cpu, "fixture: cuda (exact prefill products) vs cpu logits", 1);
    } else {
        free(x_gold.rms), free(x_gold.gap), free(x_cpu.rms), free(x_cpu.gap);
    }

    /* chunked prefill and state transfer, on case 6 (333 prefill tokens, 20 decode steps) and case 4 */
    {
        const struct inf_tensor *tt = inf_st_find(x, "case6.tokens"), *pt = inf_st_find(x, "case6.prefill_len");
        int n = (int)tt->shape[0], P = ((const int32_t *)pt->data)[0], R = n - P + 1;
        int *tok = malloc(sizeof(int) * (size_t)n);
        for (int i = 0; i < n; i++)
            tok[i] = ((const int32_t *)tt->data)[i];
        float *a = malloc(sizeof(float) * (size_t)R * V), *b = malloc(sizeof(float) * (size_t)R * V);
        if (!gpu_run(g, tok, P, n, 0, a, V) && !gpu_run(g, tok, P, n, 50, b, V)) {
            struct agg ch;
            agg_init(&ch, R);
            for (int r = 0; r < R; r++)
                agg_row(&ch, b + (size_t)r * V, a + (size_t)r * V, V);
            int same = ch.bitwise;
            agg_check(&ch, "chunked prefill (chunks of 50) vs one chunk, case 6", 1);
            /* every chunk above 8 tokens runs the same per-row kernels (FP8 GEMM, not the GEMV) */
            tap(same == R, "chunked prefill: all %d rows bit-identical to one chunk (%d are)", R, same);
            /* the decode steps as a CUDA graph and as direct launches */
            int gs = cuda_engine_graph_state(g);
            cuda_engine_use_graph(g, 0);
            int okd = !gpu_run(g, tok, P, n, 0, b, V);
            cuda_engine_use_graph(g, 1);
            tap(gs == 1 && okd && !memcmp(a, b, sizeof(float) * (size_t)R * V),
                "decode steps as a CUDA graph (state %d) and as direct launches: logits bit-identical", gs);
        } else {
            tap(0, "chunked prefill runs");
        }
        free(tok);
        free(a);
        free(b);
    }
    {
        const struct inf_tensor *tt = inf_st_find(x, "case4.tokens"), *pt = inf_st_find(x, "case4.prefill_len");
        int n = (int)tt->shape[0], P = ((const int32_t *)pt->data)[0], T = n - P;
        int *tok = malloc(sizeof(int) * (size_t)n);
        for (int i = 0; i < n; i++)
            tok[i] = ((const int32_t *)tt->data)[i];
        float *pl = malloc(sizeof(float) * (size_t)V);
        float *ga = malloc(sizeof(float) * (size_t)T * V), *gb = malloc(sizeof(float) * (size_t)T * V);
        float *ca = malloc(sizeof(float) * (size_t)T * V), *cb = malloc(sizeof(float) * (size_t)T * V);
        struct inf_state *st = NULL, *cst = NULL;
        int ok = !inf_state_new(c, &st, &e) && !inf_state_new(c, &cst, &e);
        cuda_engine_reset(g);
        ok = ok && !cuda_engine_prefill(g, tok, P, pl, &e) && !cuda_engine_state_download(g, st, &e);
        tap(ok && st->pos == P, "state download after a %d-token prefill (pos %lld)%s%s", P, st ? st->pos : -1LL,
            ok ? "" : ": ", ok ? "" : e.msg);
        for (int j = 0; ok && j < T; j++)
            ok = !cuda_engine_decode(g, tok[P + j], ga + (size_t)j * V, &e);
        /* the CPU continues from the downloaded state */
        for (int j = 0; ok && j < T; j++) {
            struct inf_forward_opts fo = {.logits = ca + (size_t)j * V};
            ok = !inf_model_forward(m, st, tok + P + j, 1, &fo, &e);
        }
        /* the GPU state uploaded back is bit-identical: download again at P from a fresh prefill */
        struct inf_state *st2 = NULL;
        ok = ok && !inf_state_new(c, &st2, &e);
        cuda_engine_reset(g);
        ok = ok && !cuda_engine_prefill(g, tok, P, pl, &e) && !cuda_engine_state_download(g, st2, &e);
        cuda_engine_reset(g);
        ok = ok && !cuda_engine_state_upload(g, st2, &e);
        for (int j = 0; ok && j < T; j++)
            ok = !cuda_engine_decode(g, tok[P + j], gb + (size_t)j * V, &e);
        tap(ok && !memcmp(ga, gb, sizeof(float) * (size_t)T * V),
            "state download -> reset -> upload -> %d decode steps: logits bit-identical%s%s", T, ok ? "" : ": ",
            ok ? "" : e.msg);
        if (ok) {
            struct agg sa;
            agg_init(&sa, T);
            for (int j = 0; j < T; j++)
                agg_row(&sa, ca + (size_t)j * V, ga + (size_t)j * V, V);
            agg_check(&sa, "cpu decoding from the downloaded gpu state vs gpu decoding", 1);
        }
        /* a CPU state uploaded to the GPU */
        float *cl = malloc(sizeof(float) * (size_t)V);
        struct inf_forward_opts fo = {.logits = cl};
        ok = ok && !inf_model_forward(m, cst, tok, P, &fo, &e);
        cuda_engine_reset(g);
        ok = ok && !cuda_engine_state_upload(g, cst, &e);
        tap(ok && cuda_engine_pos(g) == P, "cpu state uploaded (pos %lld)%s%s", cuda_engine_pos(g), ok ? "" : ": ",
            ok ? "" : e.msg);
        for (int j = 0; ok && j < T; j++) {
            struct inf_forward_opts f2 = {.logits = cb + (size_t)j * V};
            ok = !inf_model_forward(m, cst, tok + P + j, 1, &f2, &e) &&
                 !cuda_engine_decode(g, tok[P + j], gb + (size_t)j * V, &e);
        }
        if (ok) {
            struct agg sb;
            agg_init(&sb, T);
            for (int j = 0; j < T; j++)
                agg_row(&sb, gb + (size_t)j * V, cb + (size_t)j * V, V);
            agg_check(&sb, "gpu decoding from an uploaded cpu state vs cpu decoding", 1);
        } else {
            tap(0, "upload/decode: %s", e.msg);
        }
        /* a state the engine cannot hold is refused */
        struct inf_state *bad = NULL;
        if (!inf_state_new(c, &bad, &e)) {
            bad->pos = 4096;
            tap(cuda_engine_state_upload(g, bad, &e) == CTX_ERANGE, "upload of a state beyond max_ctx: CTX_ERANGE (%s)",
                e.msg);
            inf_state_free(bad);
        }
        /* a chunk whose routed pairs the grouped GEMM's tile grid cannot hold is refused at creation */
        {
            struct cuda_engine_opts big = {.max_chunk = 1 << 24, .max_ctx = 1024};
            struct cuda_engine *g2 = NULL;
            int rc2 = cuda_engine_new(w, &big, &g2, &e);
            tap(rc2 == CTX_EINVAL && !g2 && strstr(e.msg, "max_chunk"), "max_chunk 16M: CTX_EINVAL naming max_chunk (%s)",
                e.msg);
            cuda_engine_free(g2);
        }
        inf_state_free(st);
        inf_state_free(st2);
        inf_state_free(cst);
        free(cl);
        free(tok);
        free(pl);
        free(ga);
        free(gb);
        free(ca);
        free(cb);
    }
    {
        int big = 600, bad_tok = V;
        tap(cuda_engine_forward(g, &bad_tok, 1, NULL, &e) == CTX_EINVAL, "token outside the vocabulary: CTX_EINVAL (%s)",
            e.msg);
        int *t = calloc((size_t)big, sizeof(int));
        tap(cuda_engine_forward(g, t, big, NULL, &e) == CTX_EINVAL, "chunk over max_chunk: CTX_EINVAL (%s)", e.msg);
        free(t);
    }
done:
    cuda_engine_free(g);
    inf_st_close(x);
    inf_model_free(m);
    inf_weights_free(w);
}

/* ---- prefill compressors and mHC mixes: the parallel kernels against the decode kernels ---- */

/* Test entry of kernels/engine.cu: on != 0 runs prefill chunks' compressors and mHC mixes through the
 * decode kernels (k_compress, k_hc_mix, k_hc_pre) instead of their prefill forms, which compute the same
 * operations in the same order and must give the same bits. */
void cuda_engine_cp_legacy(struct cuda_engine *g, int on);

/* A prefill of P tokens in chunks of `chunk` then T decode steps, once with the prefill kernels and
 * once with the decode kernels forced: logits and the downloaded state (rings, compressor carries,
 * compressed entries, indexer keys) must be bit-identical. Chunks that do not divide 4 or 128 put
 * compressed blocks across chunk ends (the carry read and written by the parallel form). */
static void cp_check(const char *name, const struct inf_config *c, struct cuda_engine *g, const int *tok, int P,
                     int T, int chunk)
{
    struct ctx_err e = {0};
    int V = c->vocab_size, R = T + 1;
    float *rows[2] = {malloc(sizeof(float) * (size_t)R * V), malloc(sizeof(float) * (size_t)R * V)};
    uint8_t *buf[2] = {NULL, NULL};
    size_t len[2] = {0, 0};
    struct inf_state *st[2] = {NULL, NULL};
    int ok = rows[0] && rows[1];
    for (int v = 0; v < 2 && ok; v++) {
        cuda_engine_cp_legacy(g, v);
        ok = !inf_state_new(c, &st[v], &e) && !gpu_run(g, tok, P, P + T, chunk, rows[v], V) &&
             !cuda_engine_state_download(g, st[v], &e) && !inf_state_serialize(st[v], &buf[v], &len[v], &e);
    }
    cuda_engine_cp_legacy(g, 0);
    int same_logits = ok && !memcmp(rows[0], rows[1], sizeof(float) * (size_t)R * V);
    int same_state = ok && len[0] == len[1] && !memcmp(buf[0], buf[1], len[0]);
    if (ok && !same_state) {
        size_t i = 0;
        while (i < len[0] && i < len[1] && buf[0][i] == buf[1][i])
            i++;
        printf("# %s: states (%zu, %zu bytes) first differ at byte %zu\n", name, len[0], len[1], i);
    }
    tap(ok && same_logits && same_state,
        "%s: prefill %d in chunks of %d + %d decode steps, prefill compressors and mHC mixes vs the decode kernels: "
        "logits %s, state %s%s%s", name, P, chunk, T, same_logits ? "bit-identical" : "DIFFER",
        same_state ? "bit-identical" : "DIFFERS", ok ? "" : ": ", ok ? "" : e.msg);
    for (int v = 0; v < 2; v++) {
        free(rows[v]);
        free(buf[v]);
        inf_state_free(st[v]);
    }
}

/* ---- synthetic configs: CUDA vs CPU ---- */

/* A built-in config, or "mid64": mid with 64 attention heads (the head groups of k_attn_hwg, the engine's
 * HCA attention of prefill chunks when the heads come in 64s, as in Flash and Pro; mid's 16 keep k_attn_tc). */
static int test_config(const char *name, struct inf_config *c, struct ctx_err *e)
{
    if (!strcmp(name, "mid64")) {
        if (inf_config_builtin("mid", c, e))
            return -1;
        c->num_attention_heads = 64;
        return 0;
    }
    if (!strcmp(name, "mid64i")) { /* mid with Flash's indexer: 64 heads of 128 (k_idx_score_iwg's 8 head groups) */
        if (inf_config_builtin("mid", c, e))
            return -1;
        c->index_n_heads = 64;
        return 0;
    }
    return inf_config_builtin(name, c, e);
}

static void test_synthetic(const char *name, int P, int T, int chunk)
{
    struct ctx_err e = {0};
    struct inf_config c;
    struct inf_weights *w = NULL;
    struct inf_model *m = NULL;
    struct cuda_engine *g = NULL;
    struct inf_state *st = NULL;
    if (test_config(name, &c, &e)) {
        tap(0, "config %s: %s", name, e.msg);
        return;
    }
    double t0 = now_s();
    if (inf_weights_synthetic(&c, 1, &w, &e) || inf_model_new(w, NULL, 0, &m, &e) || inf_state_new(&c, &st, &e)) {
        tap(0, "synthetic %s: %s", name, e.msg);
        goto done;
    }
    double t1 = now_s();
    struct cuda_engine_opts o = {.max_chunk = chunk, .max_ctx = P + T + 8};
    int rc = cuda_engine_new(w, &o, &g, &e);
    size_t wb = 0, sb = 0;
    if (!rc)
        cuda_engine_memory(g, &wb, &sb);
    tap(rc == 0, "cuda_engine_new synthetic %s (weights %.1f s, upload %.1f s, %.2f GB weights, %.3f GB state+scratch)%s%s",
        name, t1 - t0, now_s() - t1, wb / 1e9, sb / 1e9, rc ? ": " : "", rc ? e.msg : "");
    if (rc)
        goto done;
    int V = c.vocab_size, n = P + T, R = T + 1;
    int *tok = malloc(sizeof(int) * (size_t)n);
    unsigned long long s = 0x9e3779b97f4a7c15ull;
    tok[0] = c.bos_token_id;
    for (int i = 1; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        tok[i] = 2 + (int)((s >> 33) % (unsigned long long)(V - 2));
    }
    block_check(name, w, m, g, tok, P < chunk ? P : chunk);
    float *gr = malloc(sizeof(float) * (size_t)R * V), *cr = malloc(sizeof(float) * (size_t)R * V);
    double a = now_s();
    int okg = !gpu_run(g, tok, P, n, chunk, gr, V);
    double b = now_s();
    int okc = okg && !cpu_run(m, st, tok, P, n, 256, cr, V);
    double cdt = now_s() - b;
    tap(okg && okc, "synthetic %s: prefill %d + decode %d on both engines (gpu %.2f s, cpu %.2f s)", name, P, T, b - a, cdt);
    if (okg && okc) {
        struct agg ag;
        agg_init(&ag, R);
        for (int r = 0; r < R; r++)
            agg_row(&ag, gr + (size_t)r * V, cr + (size_t)r * V, V);
        char what[96];
        unsigned long long lt_calls = 0, lt_exact = 0;
        int lt = cuda_engine_prefill_lt(g, -1, &lt_calls, &lt_exact);
        snprintf(what, sizeof what, "synthetic %s: cuda vs cpu logits (prefill FP8 products: %s)", name,
                 lt ? "cuBLASLt" : "exact");
        agg_check(&ag, what, 0);
        if (lt) { /* the same run with the exact prefill products, against the CPU and against cuBLASLt's */
            tap(lt_calls > 0 && lt_exact == 0, "synthetic %s: %llu prefill products ran on cuBLASLt, %llu rejected",
                name, lt_calls, lt_exact);
            float *xr = malloc(sizeof(float) * (size_t)R * V);
            cuda_engine_prefill_lt(g, 0, NULL, NULL);
            int okx = !gpu_run(g, tok, P, n, chunk, xr, V);
            cuda_engine_prefill_lt(g, 1, NULL, NULL);
            tap(okx, "synthetic %s: the run again with the exact prefill products", name);
            if (okx) {
                struct agg ax, al;
                agg_init(&ax, R);
                agg_init(&al, R);
                for (int r = 0; r < R; r++) {
                    agg_row(&ax, xr + (size_t)r * V, cr + (size_t)r * V, V);
                    agg_row(&al, gr + (size_t)r * V, xr + (size_t)r * V, V);
                }
                snprintf(what, sizeof what, "synthetic %s: cuda vs cpu logits (prefill FP8 products: exact)", name);
                agg_check(&ax, what, 0);
                snprintf(what, sizeof what, "synthetic %s: cuBLASLt vs exact prefill products, cuda logits", name);
                agg_check(&al, what, 2);
            }
            free(xr);
        }
    }
    cp_check(name, &c, g, tok, P, 4, chunk);
    cp_check(name, &c, g, tok, P, 4, 37);
    cp_check(name, &c, g, tok, P < 300 ? P : 300, 4, 9);
    free(tok);
    free(gr);
    free(cr);
done:
    cuda_engine_free(g);
    inf_state_free(st);
    inf_model_free(m);
    inf_weights_free(w);
}

/* ---- the indexer's top-k (radix select) against inf_cpu_topk ---- */

static float bf16_round(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7fffu + ((u >> 16) & 1u);
    u &= 0xffff0000u;
    memcpy(&f, &u, 4);
    return f;
}

/* Test entries (kernels/engine.cu): the decode top-k k_topk_fast (S <= 8) on (1), off (0: the
 * segmented k_topk_seg + k_topk_merge, or k_topk_row: cuda_engine_topk_row_mode), or as the
 * environment says (< 0). */
void cuda_engine_topk_mode(int fast);

/* Queries s < S at position pos0 + s over (pos0 + s + 1) / 4 scores each; kind 0: bf16 values in
 * [-3, 3) (many exact ties, +-0), 1: eight distinct values (ties everywhere), 2: full fp32 values,
 * 3: all equal, 4: bf16 values with a third -inf and some +inf, 5: bf16 values with NaNs of both
 * signs and +-inf, 6: 1 and the next bf16 value up. Every route runs (the segmented one, the row
 * one where the rows fit it, the decode one where S <= 8): their bytes must be identical, and every
 * rank inf_cpu_topk's with the rest -1 (NaN rows: no CPU order, the routes only; score_key orders
 * them). */
static void topk_case(long long pos0, int S, int K, int kind, unsigned long long seed)
{
    struct ctx_err e = {0};
    long long nmax = (pos0 + S) / 4;
    size_t ld = (size_t)nmax + 1;
    float *sc = malloc(sizeof(float) * ld * (size_t)S);
    int *sel = malloc(sizeof(int) * (size_t)S * K), *sel0 = malloc(sizeof(int) * (size_t)S * K);
    int *selr = malloc(sizeof(int) * (size_t)S * K), *selw = malloc(sizeof(int) * (size_t)S * K);
    int *ref = malloc(sizeof(int) * (size_t)K);
    unsigned long long z = seed;
    for (size_t i = 0; i < ld * (size_t)S; i++) {
        z = z * 6364136223846793005ull + 1442695040888963407ull;
        float u = (float)(z >> 40) * 0x1p-24f; /* [0, 1) */
        float v = kind == 0 || kind >= 4 ? bf16_round(6.0f * u - 3.0f) : kind == 1 ? (float)((int)(u * 8) - 3) * 0.25f
                : kind == 2 ? (float)((double)u * 2 - 1) * 1e3f : 0.5f;
        if (kind == 0 && (z >> 20) % 97 == 0)
            v = (z >> 30) & 1 ? -0.0f : 0.0f;
        if (kind == 4 && (z >> 20) % 3 == 0)
            v = -INFINITY;
        if (kind == 4 && (z >> 20) % 1009 == 1)
            v = INFINITY;
        if (kind == 5 && (z >> 20) % 7 == 0)
            v = (z >> 30) & 1 ? -NAN : NAN;
        if (kind == 5 && (z >> 20) % 13 == 1)
            v = (z >> 30) & 1 ? -INFINITY : INFINITY;
        if (kind == 6) /* two neighbouring bf16 values: the two 16-bit counters of one word of
                          k_topk_row's */
            v = (z >> 41) & 1 ? 1.0078125f : 1.0f;
        sc[i] = v;
    }
    float *d_sc = NULL;
    int *d_sel = NULL;
    long long *d_pos = NULL;
    void *d_scr = NULL;
    int ok = !cuda_malloc((void **)&d_sc, sizeof(float) * ld * (size_t)S, &e) &&
             !cuda_malloc((void **)&d_sel, sizeof(int) * (size_t)S * K, &e) &&
             !cuda_malloc((void **)&d_pos, sizeof(long long), &e) &&
             !cuda_malloc(&d_scr, cuda_engine_topk_scratch(S, nmax, K), &e) &&
             !cuda_h2d(d_sc, sc, sizeof(float) * ld * (size_t)S, &e) && !cuda_h2d(d_pos, &pos0, sizeof pos0, &e);
    /* the segmented route, the row one (at every S), then the engine's own (the decode one where S
     * <= 8), each after a poisoned output: every byte must be written */
    cuda_engine_topk_mode(0);
    cuda_engine_topk_row_mode(0);
    ok = ok && !cuda_engine_topk(d_sc, ld, d_pos, S, nmax, K, d_sel, d_scr, NULL, &e) && !cuda_sync(&e) &&
         !cuda_d2h(sel0, d_sel, sizeof(int) * (size_t)S * K, &e);
    for (int route = 1; route <= 3; route++) { /* the row one, the engine's, the row one with the 64-bit sort */
        int *dst = route == 1 ? selr : route == 2 ? sel : selw;
        cuda_engine_topk_row_mode(route == 2 ? -1 : 2);
        cuda_engine_topk_mode(route == 2 && S <= 8);
        cuda_engine_topk_r16_mode(route == 3 ? 0 : -1);
        for (size_t i = 0; ok && i < (size_t)S * K; i++)
            dst[i] = 0x5a5a5a5a;
        ok = ok && !cuda_h2d(d_sel, dst, sizeof(int) * (size_t)S * K, &e) &&
             !cuda_engine_topk(d_sc, ld, d_pos, S, nmax, K, d_sel, d_scr, NULL, &e) &&
             !cuda_sync(&e) && !cuda_d2h(dst, d_sel, sizeof(int) * (size_t)S * K, &e);
    }
    cuda_engine_topk_mode(-1);
    cuda_engine_topk_row_mode(-1);
    cuda_engine_topk_r16_mode(-1);
    int bad = -1, same = ok && !memcmp(sel, sel0, sizeof(int) * (size_t)S * K) &&
                         !memcmp(selr, sel0, sizeof(int) * (size_t)S * K) &&
                         !memcmp(selw, sel0, sizeof(int) * (size_t)S * K);
    for (int s = 0; ok && kind != 5 && s < S && bad < 0; s++) {
        int n = (int)((pos0 + s + 1) / 4), k = n < K ? n : K;
        inf_cpu_topk(sc + (size_t)s * ld, n, k, ref);
        for (int r = 0; r < K && bad < 0; r++)
            if (sel[(size_t)s * K + r] != (r < k ? ref[r] : -1))
                bad = s;
    }
    static const char *kinds[7] = {
        "bf16 (ties, +-0)",       "8-valued", "fp32", "all-equal", "-inf/+inf", "NaN/+-inf",
        "two-valued (neighbours)"};
    tap(ok && bad < 0 && same,
        "top-k %s = row (both sorts) = segmented%s: %d queries at %lld, k %d, %s scores%s%s",
        S <= 8 ? "decode (one cluster launch)" : "(the engine's route)",
        kind != 5 ? " = inf_cpu_topk" : "", S, pos0, K, kinds[kind],
        !ok        ? ": "
        : bad >= 0 ? ": first mismatch with inf_cpu_topk in query "
        : !same    ? ": the paths differ"
                   : "",
        !ok ? e.msg : "");
    if (ok && bad >= 0)
        printf("# mismatching query %d\n", bad);
    cuda_free(d_sc);
    cuda_free(d_sel);
    cuda_free(d_pos);
    cuda_free(d_scr);
    free(sc);
    free(sel);
    free(sel0);
    free(selr);
    free(selw);
    free(ref);
}

static void test_topk(void)
{
    topk_case(0, 70, 16, 0, 1);       /* counts 0..17 around k: short rows, -1 padding */
    topk_case(2040, 12, 512, 0, 2);   /* counts 510..513 */
    topk_case(4000, 8, 512, 1, 3);    /* ties everywhere */
    topk_case(800000, 2, 512, 0, 4);  /* 200K entries (decode: read again in each pass) */
    topk_case(400000, 3, 2048, 2, 5); /* the largest k */
    topk_case(400000, 2, 512, 3, 6);  /* all equal: the lowest indices */
    topk_case(131072, 16, 1024, 0, 7);
    /* k_topk_row's 16-bit counters past 65535: one value 262000 times (three wraps of one counter),
     * two neighbours ~131000 times each (both counters of a word, the low one's carries into the
     * high one); the longest row it takes (262144 entries, the end of a 1M context) */
    topk_case(1048000, 2, 512, 3, 28);
    topk_case(1048000, 2, 512, 6, 29);
    topk_case(524000, 9, 300, 6, 30);
    topk_case(1048572, 4, 512, 0, 31);
    topk_case(1048572, 12, 512, 2, 32); /* past 262144 entries: the segments */
    /* the decode path (S <= 8): every shape of its cluster split */
    topk_case(0, 8, 16, 0, 11);        /* 0..2 entries: all -1, then a row of 1..2 */
    topk_case(56, 8, 16, 0, 12);       /* 14..16 entries: k = n, every entry tied */
    topk_case(60, 8, 16, 1, 13);       /* 15..17 */
    topk_case(2041, 8, 512, 0, 14);    /* counts 510..512 */
    topk_case(131071, 1, 512, 0, 15);  /* 32768: 128K context */
    topk_case(131064, 8, 512, 0, 16);  /* 32766..32768 */
    topk_case(499999, 1, 512, 0, 17);  /* 125000: 500K context */
    topk_case(499996, 4, 512, 1, 18);  /* 8-valued at 125000 */
    topk_case(524284, 8, 512, 0, 19);  /* 131071..131073: registers, then read in each pass */
    topk_case(200000, 5, 2048, 2, 20); /* fp32, the largest k */
    topk_case(100000, 3, 64, 3, 21);   /* all equal */
    topk_case(131071, 2, 512, 4, 22);  /* -inf crowds, +inf */
    topk_case(40000, 4, 512, 4, 23);   /* 10000 entries, a third -inf: the k all finite */
    topk_case(10000, 8, 2048, 4, 24);  /* 2500 entries, k above the finite ones: -inf ties by index */
    topk_case(131071, 3, 512, 5, 25);  /* NaNs of both signs */
    topk_case(9000, 6, 1024, 5, 26);
    topk_case(31, 8, 1, 0, 27);        /* k = 1 */
}

/* ---- long context: a random state of 200K positions, CUDA against CPU ---- */

static void test_long(void)
{
    struct ctx_err e = {0};
    struct inf_config c;
    struct inf_weights *w = NULL;
    struct inf_model *m = NULL;
    struct cuda_engine *g = NULL;
    struct inf_state *st = NULL;
    const long long P = 200003;
    const int T = 8;
    int ok = !inf_config_builtin("tiny", &c, &e) && !inf_weights_synthetic(&c, 5, &w, &e) &&
             !inf_model_new(w, NULL, 0, &m, &e) && !inf_state_new(&c, &st, &e);
    struct cuda_engine_opts o = {.max_chunk = 64, .max_ctx = P + 2 * T + 8};
    ok = ok && !cuda_engine_new(w, &o, &g, &e);
    int V = c.vocab_size;
    float *ga = malloc(sizeof(float) * (size_t)T * V), *gb = malloc(sizeof(float) * (size_t)T * V);
    float *ca = malloc(sizeof(float) * (size_t)T * V);
    int tok[T];
    for (int i = 0; i < T; i++)
        tok[i] = (i * 7919 + 13) % V;
    ok = ok && !cuda_engine_state_fill_random(g, P, 11, &e) && !cuda_engine_state_download(g, st, &e);
    for (int j = 0; ok && j < T; j++)
        ok = !cuda_engine_decode(g, tok[j], ga + (size_t)j * V, &e);
    for (int j = 0; ok && j < T; j++) {
        struct inf_forward_opts fo = {.logits = ca + (size_t)j * V};
        ok = !inf_model_forward(m, st, tok + j, 1, &fo, &e);
    }
    tap(ok, "long context: random state at %lld (CSA top-16 of 50K entries, 1562 HCA entries: attention in 14 "
            "runs), %d decode steps on both engines%s%s", P, T, ok ? "" : ": ", ok ? "" : e.msg);
    if (ok) {
        struct agg a;
        agg_init(&a, T);
        for (int j = 0; j < T; j++)
            agg_row(&a, ga + (size_t)j * V, ca + (size_t)j * V, V);
        agg_check(&a, "long context: cuda vs cpu logits", 1);
        /* the same steps as direct launches: the same bits as the graph's */
        cuda_engine_use_graph(g, 0);
        ok = !cuda_engine_state_fill_random(g, P, 11, &e);
        for (int j = 0; ok && j < T; j++)
            ok = !cuda_engine_decode(g, tok[j], gb + (size_t)j * V, &e);
        tap(ok && !memcmp(ga, gb, sizeof(float) * (size_t)T * V),
            "long context: direct launches give the graph's logits bit for bit (graph state %d)%s%s",
            cuda_engine_graph_state(g), ok ? "" : ": ", ok ? "" : e.msg);
    }
    free(ga);
    free(gb);
    free(ca);
    cuda_engine_free(g);
    inf_state_free(st);
    inf_model_free(m);
    inf_weights_free(w);
}

/* Two host states have the same bytes: position, counts, entries, indexer keys, rings. */
static int host_states_equal(const struct inf_config *c, const struct inf_state *a, const struct inf_state *b)
{
    if (a->pos != b->pos || a->n_layers != b->n_layers)
        return 0;
    for (int l = 0; l < a->n_layers; l++) {
        const struct inf_layer_state *x = &a->layers[l], *y = &b->layers[l];
        size_t n = (size_t)x->n_cache;
        if (x->n_cache != y->n_cache ||
            (n && memcmp(x->cache, y->cache, sizeof(float) * n * (size_t)c->head_dim)) ||
            (n && x->ratio == 4 && memcmp(x->icache, y->icache, sizeof(float) * n * (size_t)c->index_head_dim)) ||
            memcmp(x->ring, y->ring, sizeof(float) * (size_t)c->sliding_window * (size_t)c->head_dim))
            return 0;
    }
    return 1;
}

/* Part "d2h": cuda_engine_state_download_tail through the pinned ring (copies of >= 4 MiB: tiny's CSA
 * entries at 200K, 102 MB a layer in 32 MiB pieces, and its indexer keys, 25.6 MB) gives the bytes of
 * cudaMemcpy, whole and as a tail after a download at half the position. */
static void test_d2h(void)
{
    struct ctx_err e = {0};
    struct inf_config c;
    struct inf_weights *w = NULL;
    struct cuda_engine *g = NULL;
    struct inf_state *st[4] = {NULL, NULL, NULL, NULL};
    const long long P = 200003;
    int ok = !inf_config_builtin("tiny", &c, &e) && !inf_weights_synthetic(&c, 5, &w, &e);
    for (int i = 0; i < 4; i++)
        ok = ok && !inf_state_new(&c, &st[i], &e);
    struct cuda_engine_opts o = {.max_chunk = 64, .max_ctx = P + 8};
    ok = ok && !cuda_engine_new(w, &o, &g, &e);
    for (int staged = 0; ok && staged < 2; staged++) {
        cuda_engine_d2h_staged(staged);
        ok = !cuda_engine_state_fill_random(g, P, 21, &e) && !cuda_engine_state_download_tail(g, st[staged], &e) &&
             !cuda_engine_state_fill_random(g, P / 2, 22, &e) &&
             !cuda_engine_state_download_tail(g, st[2 + staged], &e) &&
             !cuda_engine_state_fill_random(g, P, 23, &e) && !cuda_engine_state_download_tail(g, st[2 + staged], &e);
    }
    cuda_engine_d2h_staged(-1);
    long long csa = 0;
    for (int l = 0; ok && l < c.num_hidden_layers; l++)
        if (st[1]->layers[l].ratio == 4)
            csa = st[1]->layers[l].n_cache;
    tap(ok && csa == P / 4 && host_states_equal(&c, st[0], st[1]) && host_states_equal(&c, st[2], st[3]),
        "d2h: download_tail through the pinned ring gives cudaMemcpy's bytes (whole at %lld: %lld CSA entries a "
        "layer; and as a tail after a download at %lld)%s%s",
        P, csa, P / 2, ok ? "" : ": ", ok ? "" : e.msg);
    cuda_engine_free(g);
    for (int i = 0; i < 4; i++)
        inf_state_free(st[i]);
    inf_weights_free(w);
}

/* A short run of every kernel for compute-sanitizer (part "memcheck"): synthetic tiny, chunks of 64
 * (GEMM path, compressors across chunk ends, indexer selecting 16 of up to 40), decode steps (GEMV
 * path, a ring wrap at 128, HCA entry at 128), a state download and upload. */
static void test_memcheck(void)
{
    struct ctx_err e = {0};
    struct inf_config c;
    struct inf_weights *w = NULL;
    struct cuda_engine *g = NULL;
    struct inf_state *st = NULL;
    int ok = !inf_config_builtin("tiny", &c, &e) && !inf_weights_synthetic(&c, 3, &w, &e) &&
             !inf_state_new(&c, &st, &e);
    struct cuda_engine_opts o = {.max_chunk = 64, .max_ctx = 140000};
    ok = ok && !cuda_engine_new(w, &o, &g, &e);
    int tok[170];
    for (int i = 0; i < 170; i++)
        tok[i] = (i * 7919 + 13) % c.vocab_size;
    float *lg = malloc(sizeof(float) * (size_t)c.vocab_size);
    ok = ok && !cuda_engine_prefill(g, tok, 150, lg, &e);
    for (int i = 150; ok && i < 160; i++)
        ok = !cuda_engine_decode(g, tok[i], lg, &e);
    ok = ok && !cuda_engine_state_download(g, st, &e);
    cuda_engine_reset(g);
    ok = ok && !cuda_engine_state_upload(g, st, &e);
    for (int i = 160; ok && i < 170; i++)
        ok = !cuda_engine_decode(g, tok[i], lg, &e);
    tap(ok && cuda_engine_pos(g) == 170, "memcheck run: prefill 150 in chunks of 64, 20 decode steps, state round trip%s%s",
        ok ? "" : ": ", ok ? "" : e.msg);
    /* long context: attention in 16 runs over 1K+ HCA entries, top-k over 33K indexer entries */
    ok = ok && !cuda_engine_state_fill_random(g, 135001, 3, &e);
    for (int i = 0; ok && i < 3; i++)
        ok = !cuda_engine_decode(g, tok[i], lg, &e);
    cuda_engine_use_graph(g, 0);
    for (int i = 3; ok && i < 5; i++)
        ok = !cuda_engine_decode(g, tok[i], lg, &e);
    ok = ok && !cuda_engine_prefill(g, tok, 70, lg, &e);
    tap(ok, "memcheck run: random state at 135001, 5 decode steps (graph and direct), a 70-token chunk%s%s",
        ok ? "" : ": ", ok ? "" : e.msg);
    { /* the MTP block and speculative generation: the MTP in pieces, two-token steps, undo records */
        struct cuda_engine *gm = NULL;
        struct cuda_engine_opts om = {.max_chunk = 64, .max_ctx = 600, .mtp = 1};
        int out[24], ref[24], no = 0, okm = ok && !cuda_engine_new(w, &om, &gm, &e);
        struct cuda_engine_gen_opts go = {.max_tokens = 24};
        okm = okm && !cuda_engine_generate(gm, tok, 150, &go, ref, &no, NULL, &e);
        go.spec = 1;
        cuda_engine_reset(gm);
        okm = okm && !cuda_engine_generate(gm, tok, 150, &go, out, &no, NULL, &e) && !memcmp(out, ref, sizeof ref);
        cuda_engine_spec_force(gm, ref, 24);
        cuda_engine_reset(gm);
        okm = okm && !cuda_engine_generate(gm, tok, 150, &go, out, &no, NULL, &e) && !memcmp(out, ref, sizeof ref);
        tap(okm, "memcheck run: generation of 24 after 150, plain and speculative (the MTP's drafts, then right ones)%s%s",
            okm ? "" : ": ", okm ? "" : e.msg);
        cuda_engine_free(gm);
    }
    topk_case(2040, 12, 512, 0, 2);
    topk_case(2041, 8, 512, 0, 14);   /* the decode top-k's cluster exchanges, rows in registers */
    topk_case(524291, 1, 512, 1, 19); /* and read again in each pass */
    free(lg);
    cuda_engine_free(g);
    inf_state_free(st);
    inf_weights_free(w);
}

/* ---- a decode switch's settings against its reference setting, byte for byte ----
 *
 * Each of the tests below (PDL, MoE, mHC, attention) runs the same tokens under several settings of a
 * switch that changes where work runs, never its arithmetic: every setting v >= 1 must give the logits
 * and the downloaded state of setting 0 byte for byte, and a run that uses the decode graph must have
 * captured it in both. */
struct switch_run {
    int P, T, chunk, graph, legacy; /* legacy: cuda_engine_cp_legacy during the run */
    long long fill;                 /* > 0: T decode steps from a random state at this position */
    const char *what;
};
struct switch_ops {
    const char *tag;
    int n;                                                 /* settings; 0 is the reference */
    void (*set)(struct cuda_engine *g, int v);             /* v < 0: the default again */
    void (*label)(int v, char *out, size_t cap);
    int (*held)(int v);                                    /* after a run: the setting took effect (or NULL) */
};

/* One run under every setting; taps each comparison. 0, or -1 when a run could not complete (tapped). */
static int switch_compare(const struct switch_ops *ops, struct cuda_engine *g, const struct inf_config *c,
                          const int *tok, const struct switch_run *run)
{
    enum { MAXS = 16 };
    struct ctx_err e = {0};
    int V = c->vocab_size, R = run->T + 1, ok = ops->n <= MAXS, gs[MAXS] = {0}, held[MAXS] = {0};
    float *rows[MAXS] = {0};
    uint8_t *buf[MAXS] = {0};
    size_t len[MAXS] = {0};
    struct inf_state *st[MAXS] = {0};
    for (int v = 0; v < ops->n && ok; v++) {
        ops->set(g, v);
        cuda_engine_use_graph(g, run->graph);
        cuda_engine_cp_legacy(g, run->legacy);
        ok = (rows[v] = calloc((size_t)R * V, sizeof(float))) != NULL;
        if (ok && run->fill > 0) { /* P tokens in chunks after the random state, then T decode steps */
            ok = !cuda_engine_state_fill_random(g, run->fill, 13, &e);
            int step = run->chunk > 0 ? run->chunk : run->P;
            for (int p = 0; ok && p < run->P; p += step) {
                int S = run->P - p < step ? run->P - p : step;
                ok = !cuda_engine_forward(g, tok + p, S, p + S == run->P ? rows[v] : NULL, &e);
            }
            for (int j = 0; ok && j < run->T; j++)
                ok = !cuda_engine_decode(g, tok[run->P + j], rows[v] + (size_t)(1 + j) * V, &e);
        } else if (ok) {
            ok = !gpu_run(g, tok, run->P, run->P + run->T, run->chunk, rows[v], V);
        }
        gs[v] = cuda_engine_graph_state(g);
        held[v] = !ops->held || ops->held(v);
        ok = ok && !inf_state_new(c, &st[v], &e) && !cuda_engine_state_download(g, st[v], &e) &&
             !inf_state_serialize(st[v], &buf[v], &len[v], &e);
    }
    ops->set(g, -1);
    cuda_engine_cp_legacy(g, 0);
    cuda_engine_use_graph(g, 1);
    char l0[64], lv[64];
    ops->label(0, l0, sizeof l0);
    for (int v = 1; v < ops->n && ok; v++) {
        int same_logits = !memcmp(rows[0], rows[v], sizeof(float) * (size_t)R * V);
        int same_state = len[0] == len[v] && !memcmp(buf[0], buf[v], len[0]);
        int graphs = !run->graph || (gs[0] == 1 && gs[v] == 1);
        ops->label(v, lv, sizeof lv);
        tap(same_logits && same_state && graphs && held[0] && held[v],
            "%s: %s: %s vs %s: logits %s, state %s (graph state %d / %d)%s", ops->tag, run->what, lv, l0,
            same_logits ? "bit-identical" : "DIFFER", same_state ? "bit-identical" : "DIFFERS", gs[0], gs[v],
            held[0] && held[v] ? "" : "; the setting was refused by the runtime");
    }
    if (!ok)
        tap(0, "%s: %s: %s", ops->tag, run->what, e.msg[0] ? e.msg : "the run failed");
    for (int v = 0; v < ops->n; v++) {
        free(rows[v]);
        free(buf[v]);
        inf_state_free(st[v]);
    }
    return ok ? 0 : -1;
}

/* ---- the indexer scores of prefill chunks: k_idx_score_i8 and k_idx_score_i8e against k_idx_score_tc2 ----
 *
 * Test entry of kernels/engine.cu: k_idx_score_i8 for prefill chunks on (1), off (0: k_idx_score_tc2), or
 * as the environment says (< 0). The integer kernel computes the exact dot products, which tc2 gives
 * whenever its fp32 sums of block partials are exact (always for the engine's FP4-QDQ'd rows after a
 * Hadamard, and for the random fill's QDQ'd keys): so logits and state must be bit-identical. Runs of the
 * mid config (16 indexer heads of 128): a 1100-token prefill in chunks of 256 + 8 graph decode steps
 * (decode steps score with k_idx_score_tc1 either way, from keys the chunks wrote in both forms); 700
 * tokens in chunks of 37 + 4 direct decode steps; a random state at 135001 (33K entries, their 8-bit form
 * packed by the fill) + 512 tokens in chunks of 256 + 4 graph decode steps. */
void cuda_engine_idx_i8_mode(int on);
/* Variant 2: k_idx_score_i8e, the entries-on-the-rows form of k_idx_score_i8; 3: k_idx_score_iwg, the same
 * on warpgroup MMA (the same bits by construction; tests/kernels/test_idx.c compares them on every entry). */
static void idx_set(struct cuda_engine *g, int v)
{
    (void)g;
    cuda_engine_idx_i8_mode(v < 0 ? -1 : v != 0);
    cuda_engine_idx_i8e_mode(v < 0 ? -1 : v >= 2);
    cuda_engine_idx_wg_mode(v < 0 ? -1 : v == 3);
}
static void idx_label(int v, char *out, size_t cap)
{
    snprintf(out, cap, "%s",
             v == 3 ? "k_idx_score_iwg" : v == 2 ? "k_idx_score_i8e" : v ? "k_idx_score_i8" : "k_idx_score_tc2");
}

/* The HCA layers' prefill attention from the compressed cache in bf16 by cp.async (k_attn_tc's C16 path,
 * CTX_CUDA_ATTN_C16) against the fp32 gather (0): the same entry values in the same tiles, so the same bits.
 * The runs of the idx part (mid has HCA layers: the random state at 135001 gives them ~1050 entries). */
void cuda_engine_attn_c16_mode(int on);
static void c16_set(struct cuda_engine *g, int v)
{
    (void)g;
    cuda_engine_attn_c16_mode(v);
}
static void c16_label(int v, char *out, size_t cap) { snprintf(out, cap, "%s", v ? "HCA cache bf16 by cp.async" : "fp32 gather"); }

/* Prefill's residual streams as bf16 bits between the mHC kernels (cuda_engine_x16_mode) against floats: the
 * same values (bf16), so the same bits. The runs of the idx part. Part "mhc". */
static void x16_set(struct cuda_engine *g, int v)
{
    (void)g;
    cuda_engine_x16_mode(v);
}
static void x16_label(int v, char *out, size_t cap) { snprintf(out, cap, "%s", v ? "bf16 streams" : "float streams"); }

/* Prefill's mHC pre in 256-thread blocks (k_hc_pre4q, cuda_engine_pre4q_mode) against k_hc_pre<4, 1>'s 1024:
 * the same operations in the same order, so the same bits. The runs of the idx part. Part "mhc". */
static void pre4q_set(struct cuda_engine *g, int v)
{
    (void)g;
    cuda_engine_pre4q_mode(v);
}
static void pre4q_label(int v, char *out, size_t cap) { snprintf(out, cap, "%s", v ? "k_hc_pre4q" : "k_hc_pre<4, 1>"); }

/* SwiGLU's quantisation 8 values a lane (k_swiglu_quant16, cuda_engine_swiglu16_mode; prefill and decode) against
 * 4 (k_swiglu_quant): the same operations on the same values, so the same bits. The runs of the idx part. Part
 * "prep". */
static void sw16_set(struct cuda_engine *g, int v)
{
    (void)g;
    cuda_engine_swiglu16_mode(v);
}
static void sw16_label(int v, char *out, size_t cap) { snprintf(out, cap, "%s", v ? "k_swiglu_quant16" : "k_swiglu_quant"); }

static void test_idx_switch(const struct switch_ops *ops, const char *cfg)
{
    struct ctx_err e = {0};
    struct inf_config c;
    struct inf_weights *w = NULL;
    struct cuda_engine *g = NULL;
    int ok = !test_config(cfg, &c, &e) && !inf_weights_synthetic(&c, 5, &w, &e);
    struct cuda_engine_opts o = {.max_chunk = 256, .max_ctx = 140000};
    ok = ok && !cuda_engine_new(w, &o, &g, &e);
    tap(ok, "%s: %s engine%s%s", ops->tag, cfg, ok ? "" : ": ", ok ? "" : e.msg);
    if (ok) {
        enum { NT = 1110 };
        static int tok[NT];
        for (int i = 0; i < NT; i++)
            tok[i] = (i * 7919 + 13) % c.vocab_size;
        static const struct switch_run runs[] = {
            {1100, 8, 256, 1, 0, 0, "prefill 1100 in chunks of 256 + 8 graph decode steps"},
            {700, 4, 37, 0, 0, 0, "700 tokens in chunks of 37 + 4 decode steps, direct launches"},
            {512, 4, 256, 1, 0, 135001, "random state at 135001 + 512 tokens in chunks of 256 + 4 graph decode steps"},
        };
        for (size_t r = 0; r < sizeof runs / sizeof runs[0]; r++)
            if (switch_compare(ops, g, &c, tok, &runs[r]))
                break;
    }
    cuda_engine_free(g);
    inf_weights_free(w);
}

/* ---- Programmatic Dependent Launch: the same bits with the switch off and on ----
 *
 * PDL (kernels/README.md) lets a decode kernel start before its predecessor has finished; every such
 * kernel waits for it before touching its outputs, so results must not change. The mid config runs
 * the tensor-core indexer (16 heads of 128), k_wo_a_mma and the FP8 GEMVs. Each run below is done with
 * the switch off, then on (cuda_pdl_set; the engine recaptures its graph when it changed), and the
 * logits (and the downloaded state) compared byte for byte:
 * - a 300-token prefill in chunks of 64 (prefill kernels, plain, between PDL ones) + 16 decode steps
 *   replayed as a CUDA graph;
 * - 40 tokens in chunks of 6 (the decode kernels with S = 6: GEMV of 6 tokens, quantisation and
 *   conversion launches) + 4 decode steps, all direct launches;
 * - a random state at 135001 (indexer over 33K entries in 5 top-k segments, attention in many runs)
 *   + 6 decode steps as a graph. */
static int pdl_was;
static void pdl_set(struct cuda_engine *g, int v)
{
    (void)g;
    cuda_pdl_set(v < 0 ? pdl_was : v);
}
static void pdl_label(int v, char *out, size_t cap) { snprintf(out, cap, "PDL %s", v ? "on" : "off"); }
/* launch_pdl turns the switch off for the process if the runtime refuses PDL launches */
static int pdl_held(int v) { return cuda_pdl_enabled() == v; }

static void test_pdl(void)
{
    struct ctx_err e = {0};
    struct inf_config c;
    struct inf_weights *w = NULL;
    struct cuda_engine *g = NULL;
    pdl_was = cuda_pdl_enabled();
    int ok = !inf_config_builtin("mid", &c, &e) && !inf_weights_synthetic(&c, 7, &w, &e);
    struct cuda_engine_opts o = {.max_chunk = 64, .max_ctx = 140000};
    ok = ok && !cuda_engine_new(w, &o, &g, &e);
    tap(ok, "pdl: mid engine (PDL %s by default)%s%s", pdl_was ? "on" : "off", ok ? "" : ": ", ok ? "" : e.msg);
    if (ok) {
        enum { NT = 316 };
        int tok[NT];
        for (int i = 0; i < NT; i++)
            tok[i] = (i * 7919 + 13) % c.vocab_size;
        static const struct switch_run runs[] = {
            {300, 16, 64, 1, 0, 0, "prefill 300 in chunks of 64 + 16 graph decode steps"},
            {40, 4, 6, 0, 0, 0, "40 tokens in chunks of 6 + 4 decode steps, direct launches"},
            {0, 6, 0, 1, 0, 135001, "random state at 135001 + 6 graph decode steps"},
        };
        static const struct switch_ops ops = {"pdl", 2, pdl_set, pdl_label, pdl_held};
        for (size_t r = 0; r < sizeof runs / sizeof runs[0]; r++)
            if (switch_compare(&ops, g, &c, tok, &runs[r]))
                break;
    }
    cuda_pdl_set(pdl_was);
    cuda_engine_free(g);
    inf_weights_free(w);
}

/* ---- MoE decode switches (kernels/engine.cu moe(): MOE_SIDE, MOE_COMBINE4, MOE_ROUTE_AQ, MOE_ROUTE_REG) ----
 *
 * Test entry of kernels/engine.cu: the engine's MoE switches (bit 1: the shared expert of a decode step
 * on a second stream forked from and joined back into the engine's, with its own activation buffers;
 * bit 2: k_moe_combine4, the combine with every row loaded at once; bit 4: the routed input's
 * quantisation in the router's launch; bit 8: the router's weights from shared memory and registers;
 * with bit 1, bit 16: the side stream forked after the gate's launch, bit 32: after the router's).
 * Each changes where work runs, not its arithmetic, so every mode must give the bits of mode 0 (the
 * serial path); a change drops the captured decode graph. Runs (tiny: 8 experts, 2 a token, 256 wide;
 * mid: 64 experts, 6 a token, hash-routed first layers), each in modes 0, 1, 2, 4, 8, 15, 17, 33, 31, 47, 63
 * with logits
 * and the downloaded state compared byte for byte with mode 0:
 * - a prefill in chunks of 64 (S > 8: bit 2 and 4 only) + 12 decode steps replayed as a CUDA graph
 *   (which must capture: graph state 1 in every mode, so the side stream's fork and join are capturable);
 * - tokens in chunks of 6 (S = 6 <= 8: the side stream with 6 rows) + 4 decode steps, direct launches. */
void cuda_engine_moe_mode(struct cuda_engine *g, int mode);

static const int moe_modes[] = {0, 1, 2, 4, 8, 15, 17, 33, 31, 47, 63};
static void moe_set(struct cuda_engine *g, int v) { cuda_engine_moe_mode(g, v < 0 ? -1 : moe_modes[v]); }
static void moe_label(int v, char *out, size_t cap) { snprintf(out, cap, "mode %d", moe_modes[v]); }

static void test_moe(const char *name)
{
    struct ctx_err e = {0};
    struct inf_config c;
    struct inf_weights *w = NULL;
    struct cuda_engine *g = NULL;
    int ok = !inf_config_builtin(name, &c, &e) && !inf_weights_synthetic(&c, 5, &w, &e);
    struct cuda_engine_opts o = {.max_chunk = 64, .max_ctx = 2048};
    ok = ok && !cuda_engine_new(w, &o, &g, &e);
    tap(ok, "moe: %s engine%s%s", name, ok ? "" : ": ", ok ? "" : e.msg);
    if (ok) {
        enum { NT = 220 };
        int tok[NT];
        for (int i = 0; i < NT; i++)
            tok[i] = (i * 7919 + 29) % c.vocab_size;
        static const struct switch_run runs[] = {
            {200, 12, 64, 1, 0, 0, "prefill 200 in chunks of 64 + 12 graph decode steps"},
            {42, 4, 6, 0, 0, 0, "42 tokens in chunks of 6 + 4 decode steps, direct launches"},
        };
        char tag[32];
        snprintf(tag, sizeof tag, "moe: %s", name);
        const struct switch_ops ops = {tag, (int)(sizeof moe_modes / sizeof moe_modes[0]), moe_set, moe_label, NULL};
        for (size_t r = 0; r < sizeof runs / sizeof runs[0]; r++)
            if (switch_compare(&ops, g, &c, tok, &runs[r]))
                break;
    }
    cuda_engine_free(g);
    inf_weights_free(w);
}

/* ---- the compressors' prefill products on cuBLASLt (cbf_lt) ---- */

/* Test entry of kernels/engine.cu: a prefill chunk's compressor products (the compressor's, the indexer
 * compressor's and the indexer weights') on cuBLASLt's bf16 GEMM when on != 0 and the engine uses
 * cuBLASLt (its default), on k_bgemm when 0, as the environment says (CTX_CUDA_CMP_LT) when < 0. */
void cuda_engine_cmp_lt_mode(int on);

/* On the mid config (CSA and HCA layers): the path runs (one more cuBLASLt product a compressed layer
 * and chunk than with it off), a prefill in chunks of 50 gives one chunk's logits and state byte for
 * byte, and its logits are within the rounding bounds of k_bgemm's (cuBLASLt's fp32 sums in another
 * order). */
static void test_cmp_lt(void)
{
    struct ctx_err e = {0};
    struct inf_config c;
    struct inf_weights *w = NULL;
    struct cuda_engine *g = NULL;
    int ok = !inf_config_builtin("mid", &c, &e) && !inf_weights_synthetic(&c, 17, &w, &e);
    struct cuda_engine_opts o = {.max_chunk = 300, .max_ctx = 1024};
    ok = ok && !cuda_engine_new(w, &o, &g, &e);
    tap(ok, "cmp lt: mid engine%s%s", ok ? "" : ": ", ok ? "" : e.msg);
    if (!ok || !cuda_engine_prefill_lt(g, -1, NULL, NULL)) {
        if (ok)
            printf("ok %d - # SKIP cmp lt: the engine does not use cuBLASLt\n", ++n_test);
        cuda_engine_free(g);
        inf_weights_free(w);
        return;
    }
    enum { P = 300, T = 4, R = T + 1 };
    int tok[P + T], V = c.vocab_size, ncmp = 0;
    for (int i = 0; i < P + T; i++)
        tok[i] = (i * 7919 + 41) % V;
    for (int l = 0; l < c.num_hidden_layers; l++)
        ncmp += c.compress_ratios[l] != 0;
    float *rows[3];
    uint8_t *buf[2] = {NULL, NULL};
    size_t len[2] = {0, 0};
    unsigned long long calls[3] = {0, 0, 0};
    static const int chunk[3] = {100, 50, 100}, mode[3] = {1, 1, 0};
    for (int v = 0; v < 3; v++)
        rows[v] = malloc(sizeof(float) * (size_t)R * V);
    for (int v = 0; v < 3 && ok; v++) {
        unsigned long long c0 = 0, c1 = 0;
        cuda_engine_cmp_lt_mode(mode[v]);
        cuda_engine_prefill_lt(g, -1, &c0, NULL);
        ok = !gpu_run(g, tok, P, P + T, chunk[v], rows[v], V);
        cuda_engine_prefill_lt(g, -1, &c1, NULL);
        calls[v] = c1 - c0;
        if (ok && v < 2) {
            struct inf_state *st = NULL;
            ok = !inf_state_new(&c, &st, &e) && !cuda_engine_state_download(g, st, &e) &&
                 !inf_state_serialize(st, &buf[v], &len[v], &e);
            inf_state_free(st);
        }
    }
    cuda_engine_cmp_lt_mode(-1);
    tap(ok && calls[0] == calls[2] + (unsigned long long)ncmp * (P / chunk[0]),
        "cmp lt: prefill %d in chunks of %d: %llu cuBLASLt products, %llu with the compressors' on k_bgemm (%d "
        "compressed layers)%s%s", P, chunk[0], calls[0], calls[2], ncmp, ok ? "" : ": ", ok ? "" : e.msg);
    if (ok) {
        int same_logits = !memcmp(rows[0], rows[1], sizeof(float) * (size_t)R * V);
        int same_state = len[0] == len[1] && !memcmp(buf[0], buf[1], len[0]);
        tap(same_logits && same_state,
            "cmp lt: prefill %d in chunks of 50 vs chunks of 100 + %d decode steps: logits %s, state %s", P, T,
            same_logits ? "bit-identical" : "DIFFER", same_state ? "bit-identical" : "DIFFERS");
        struct agg ag;
        agg_init(&ag, R);
        for (int r = 0; r < R; r++)
            agg_row(&ag, rows[0] + (size_t)r * V, rows[2] + (size_t)r * V, V);
        agg_check(&ag, "cmp lt: the compressors' products on cuBLASLt vs k_bgemm, cuda logits", 2);
    }
    for (int v = 0; v < 3; v++)
        free(rows[v]);
    free(buf[0]);
    free(buf[1]);
    cuda_engine_free(g);
    inf_weights_free(w);
}

/* The prefill FP8 products in cuBLASLt's rows form (the weights as its A operand, no k_lt_out) against
 * the transposed form (an engine made with cuda_engine_lt_rows_mode(0)): the rows form runs (its call
 * count), chunks of 50 give chunks of 100's logits and state bit for bit, and the two forms' logits are
 * within the fixture's rms bounds (reported: how many rows are bit-identical; cuBLASLt 13.1 gave equal
 * products in bench-gpu-ltrows). Part "mid". */
static void test_lt_rows(void)
{
    struct ctx_err e = {0};
    struct inf_config c;
    struct inf_weights *w = NULL;
    struct cuda_engine *g[2] = {NULL, NULL};
    int ok = !inf_config_builtin("mid", &c, &e) && !inf_weights_synthetic(&c, 19, &w, &e);
    struct cuda_engine_opts o = {.max_chunk = 300, .max_ctx = 1024};
    for (int f = 0; f < 2 && ok; f++) { /* g[0] the rows form, g[1] the transposed one */
        cuda_engine_lt_rows_mode(f == 0);
        ok = !cuda_engine_new(w, &o, &g[f], &e);
    }
    cuda_engine_lt_rows_mode(-1);
    tap(ok, "lt rows: two mid engines%s%s", ok ? "" : ": ", ok ? "" : e.msg);
    if (!ok || !cuda_engine_prefill_lt(g[0], -1, NULL, NULL)) {
        if (ok)
            printf("ok %d - # SKIP lt rows: the engine does not use cuBLASLt\n", ++n_test);
        cuda_engine_free(g[0]);
        cuda_engine_free(g[1]);
        inf_weights_free(w);
        return;
    }
    enum { P = 300, T = 4, R = T + 1 };
    int tok[P + T], V = c.vocab_size;
    for (int i = 0; i < P + T; i++)
        tok[i] = (i * 7919 + 41) % V;
    float *rows[3];
    uint8_t *buf[2] = {NULL, NULL};
    size_t len[2] = {0, 0};
    unsigned long long rc0[3], rc1[3], lc0[3], lc1[3];
    static const int chunk[3] = {100, 50, 100}, eng[3] = {0, 0, 1};
    for (int v = 0; v < 3; v++)
        rows[v] = malloc(sizeof(float) * (size_t)R * V);
    for (int v = 0; v < 3 && ok; v++) {
        struct cuda_engine *ge = g[eng[v]];
        rc0[v] = cuda_engine_lt_rows_calls(ge);
        cuda_engine_prefill_lt(ge, -1, &lc0[v], NULL);
        ok = !gpu_run(ge, tok, P, P + T, chunk[v], rows[v], V);
        rc1[v] = cuda_engine_lt_rows_calls(ge);
        cuda_engine_prefill_lt(ge, -1, &lc1[v], NULL);
        if (ok && v < 2) {
            struct inf_state *st = NULL;
            ok = !inf_state_new(&c, &st, &e) && !cuda_engine_state_download(ge, st, &e) &&
                 !inf_state_serialize(st, &buf[v], &len[v], &e);
            inf_state_free(st);
        }
    }
    tap(ok && rc1[0] > rc0[0] && rc1[2] == rc0[2] && lc1[0] - lc0[0] == lc1[2] - lc0[2],
        "lt rows: prefill %d in chunks of %d: %llu cuBLASLt products, %llu of them in the rows form; the transposed "
        "engine %llu and %llu%s%s", P, chunk[0], ok ? lc1[0] - lc0[0] : 0ull, ok ? rc1[0] - rc0[0] : 0ull,
        ok ? lc1[2] - lc0[2] : 0ull, ok ? rc1[2] - rc0[2] : 0ull, ok ? "" : ": ", ok ? "" : e.msg);
    if (ok) {
        int same_logits = !memcmp(rows[0], rows[1], sizeof(float) * (size_t)R * V);
        int same_state = len[0] == len[1] && !memcmp(buf[0], buf[1], len[0]);
        tap(same_logits && same_state,
            "lt rows: prefill %d in chunks of 50 vs chunks of 100 + %d decode steps: logits %s, state %s", P, T,
            same_logits ? "bit-identical" : "DIFFER", same_state ? "bit-identical" : "DIFFERS");
        struct agg ag;
        agg_init(&ag, R);
        for (int r = 0; r < R; r++)
            agg_row(&ag, rows[0] + (size_t)r * V, rows[2] + (size_t)r * V, V);
        agg_check(&ag, "lt rows: the rows form vs the transposed form, cuda logits", 2);
    }
    for (int v = 0; v < 3; v++)
        free(rows[v]);
    free(buf[0]);
    free(buf[1]);
    cuda_engine_free(g[0]);
    cuda_engine_free(g[1]);
    inf_weights_free(w);
}

/* ---- the decode mHC's paths: fused mixes + pre, Sinkhorn on a side stream, post in the next launch ---- */

/* Test entry of kernels/engine.cu: fuse != 0 runs a decode site's mixes and pre as one launch
 * (k_hc_mixpre), side != 0 its Sinkhorn on the engine's side stream, post != 0 (with fuse) leaves each
 * site's post, and after the MoE its combine, to the next site's k_hc_mixpre (the streams alternating
 * between two buffers); all default on (env CTX_CUDA_HC_FUSE=0 / CTX_CUDA_HC_SIDE=0 / CTX_CUDA_HC_POST=0
 * turn them off). */
void cuda_engine_hc_paths(struct cuda_engine *g, int fuse, int side, int post);

/* Each path against the earlier launches (fuse 0, side 0, post 0): graph decode steps, decode kernels
 * of chunks of 6 as direct launches, and chunks of 37 through the decode kernels (cp_legacy: S > 8
 * tokens in one k_hc_mixpre grid, where post stays a launch); logits and downloaded state must be
 * bit-identical, and the graph runs must have been captured (the side stream's fork and join inside
 * the capture). */
static const int hc_paths[][3] = {{0, 0, 0}, {1, 0, 0}, {0, 1, 0}, {1, 1, 0}, {1, 0, 1}, {1, 1, 1}};
static void hc_set(struct cuda_engine *g, int v)
{
    cuda_engine_hc_paths(g, v < 0 ? 1 : hc_paths[v][0], v < 0 ? 1 : hc_paths[v][1], v < 0 ? 1 : hc_paths[v][2]);
}
static void hc_label(int v, char *out, size_t cap)
{
    if (v)
        snprintf(out, cap, "fuse %d side %d post %d", hc_paths[v][0], hc_paths[v][1], hc_paths[v][2]);
    else
        snprintf(out, cap, "the earlier launches");
}

/* HCX (the default: hc = 4's mixes as bf16 mma chains, fn split in three bf16 terms) against the fp32 form
 * (cuda_engine_hcx_mode(0): fp32 products added by xor trees): two engines on mid, the same prefill of 300
 * tokens in chunks of 64 and 8 decode steps; both compute the mixes to fp32's accuracy in different orders,
 * so the logits must agree within the rounding bounds of two CUDA runs (agg_check's rms bounds). Part "mhc". */
static void test_hcx(void)
{
    struct ctx_err e = {0};
    struct inf_config c;
    struct inf_weights *w = NULL;
    enum { P = 300, T = 8, R = T + 1 };
    int ok = !inf_config_builtin("mid", &c, &e) && !inf_weights_synthetic(&c, 11, &w, &e);
    int V = c.vocab_size, *tok = malloc(sizeof(int) * (P + T));
    float *rows[2] = {malloc(sizeof(float) * (size_t)R * V), malloc(sizeof(float) * (size_t)R * V)};
    ok = ok && tok && rows[0] && rows[1];
    for (int i = 0; ok && i < P + T; i++)
        tok[i] = (i * 7919 + 13) % V;
    for (int v = 0; v < 2 && ok; v++) {
        struct cuda_engine *g = NULL;
        struct cuda_engine_opts o = {.max_chunk = 64, .max_ctx = 1024};
        cuda_engine_hcx_mode(v ? -1 : 0); /* the fp32 form, then the default */
        ok = !cuda_engine_new(w, &o, &g, &e) && !gpu_run(g, tok, P, P + T, 64, rows[v], V);
        cuda_engine_free(g);
    }
    cuda_engine_hcx_mode(-1);
    tap(ok, "hcx: mid, fp32 mixes and HCX runs%s%s", ok ? "" : ": ", ok ? "" : e.msg);
    if (ok) {
        struct agg a;
        agg_init(&a, R);
        for (int r = 0; r < R; r++)
            agg_row(&a, rows[1] + (size_t)r * V, rows[0] + (size_t)r * V, V);
        agg_check(&a, "hcx: mid, HCX vs fp32 mixes, cuda logits", 2);
    }
    free(rows[0]);
    free(rows[1]);
    free(tok);
    inf_weights_free(w);
}

/* HCX's precision against the fp32 form's (part "mhc"): hc = 4's chunk partials of 64 rows of V4-Flash's width
 * (n = 16384) of bf16 stream values against 24 fp32 fn rows, by the prefill kernel of each mode (0: the fp32
 * products and xor trees, k_hc_mix4; 1: HCX's one mma chain a tile; 2: its six mmas from 0 added in fp32)
 * and by the decode kernel of the same mode, against sums in double: each mix's error over the sum of its
 * products' magnitudes, each sum of squares' over itself. The prefill and decode kernels must agree bit
 * for bit, and every form within 2^-20 of the products' magnitudes (16 units of fp32's last place; the fp32 form
 * and HCX both come within one, results/2026-12-01-s31 call5). */
int cuda_hc_mix_check(int mode, const float *X, const float *fn, int S, int n, float *part, float *dpart,
                      struct ctx_err *e);
static float bf16_host(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    memcpy(&f, &u, 4);
    return f;
}
static void test_hcx_precision(void)
{
    enum { S = 64, N = 16384, NM = 24, NCH = N / 256 };
    float *X = malloc(sizeof(float) * S * N), *fn = malloc(sizeof(float) * NM * N);
    float *part = malloc(sizeof(float) * S * NCH * (NM + 1)), *dpart = malloc(sizeof(float) * S * NCH * (NM + 1));
    if (!X || !fn || !part || !dpart) {
        tap(0, "hcx precision: out of memory");
        return;
    }
    uint64_t r = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < S * N; i++) { /* stream values over a few octaves, bf16 */
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        double u = (double)(r >> 11) / 9007199254740992.0 - 0.5;
        X[i] = bf16_host((float)(u * (1 << (i % 5))));
    }
    for (int i = 0; i < NM * N; i++) { /* fn: full fp32 mantissas */
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        fn[i] = (float)(((double)(r >> 11) / 9007199254740992.0 - 0.5) * 0.02);
    }
    for (int mode = 0; mode <= 2; mode++) {
        struct ctx_err e = {0};
        int ok = !cuda_hc_mix_check(mode, X, fn, S, N, part, dpart, &e);
        tap(ok, "hcx precision: mode %d runs%s%s", mode, ok ? "" : ": ", ok ? "" : e.msg);
        if (!ok)
            continue;
        double emax = 0, esum = 0, qmax = 0;
        long cnt = 0;
        for (int s = 0; s < S; s++)
            for (int c = 0; c < NCH; c++) {
                const float *x = X + (size_t)s * N + c * 256, *pv = part + ((size_t)s * NCH + c) * (NM + 1);
                for (int j = 0; j < NM; j++) {
                    double ref = 0, mag = 0;
                    for (int k = 0; k < 256; k++) {
                        double p = (double)fn[(size_t)j * N + c * 256 + k] * x[k];
                        ref += p;
                        mag += fabs(p);
                    }
                    double err = mag > 0 ? fabs(pv[j] - ref) / mag : 0;
                    emax = err > emax ? err : emax;
                    esum += err;
                    cnt++;
                }
                double sq = 0;
                for (int k = 0; k < 256; k++)
                    sq += (double)x[k] * x[k];
                double qe = sq > 0 ? fabs(pv[NM] - sq) / sq : 0;
                qmax = qe > qmax ? qe : qmax;
            }
        int same = !memcmp(part, dpart, sizeof(float) * S * NCH * (NM + 1));
        printf("# hcx precision, mode %d: mixes' error / sum of |products| max %.3e mean %.3e (2^-24 = 5.96e-08), "
               "squares' max %.3e; prefill and decode kernels %s\n",
               mode, emax, esum / cnt, qmax, same ? "bit-identical" : "differ");
        tap(same && emax <= 0x1p-20 && qmax <= 0x1p-20,
            "hcx precision: mode %d, prefill and decode kernels bit-identical, mixes and squares within 2^-20", mode);
    }
    free(X);
    free(fn);
    free(part);
    free(dpart);
}

static void test_hc(void)
{
    struct ctx_err e = {0};
    struct inf_config c;
    struct inf_weights *w = NULL;
    struct cuda_engine *g = NULL;
    int ok = !inf_config_builtin("mid", &c, &e) && !inf_weights_synthetic(&c, 11, &w, &e);
    struct cuda_engine_opts o = {.max_chunk = 64, .max_ctx = 1024};
    ok = ok && !cuda_engine_new(w, &o, &g, &e);
    tap(ok, "hc: mid engine%s%s", ok ? "" : ": ", ok ? "" : e.msg);
    if (ok) {
        enum { NT = 316 };
        int tok[NT];
        for (int i = 0; i < NT; i++)
            tok[i] = (i * 7919 + 29) % c.vocab_size;
        static const struct switch_run runs[] = {
            {300, 16, 64, 1, 0, 0, "prefill 300 in chunks of 64 + 16 graph decode steps"},
            {40, 4, 6, 0, 0, 0, "40 tokens in chunks of 6 + 4 decode steps, direct launches"},
            {111, 4, 37, 1, 1, 0, "111 tokens in chunks of 37 through the decode kernels + 4 graph decode steps"},
        };
        static const struct switch_ops ops = {"hc", (int)(sizeof hc_paths / sizeof hc_paths[0]), hc_set, hc_label,
                                              NULL};
        for (size_t r = 0; r < sizeof runs / sizeof runs[0]; r++)
            if (switch_compare(&ops, g, &c, tok, &runs[r]))
                break;
    }
    cuda_engine_free(g);
    inf_weights_free(w);
}

/* ---- the decode attention's launches (issue 10): the same bits in every mode ----
 *
 * Test entry of kernels/engine.cu: `bits` selects the changes to a decode step's attention (1: score and
 * P.V grids sized for the device, 2: compressors on a second stream forked from and joined back to the
 * engine's, 4: ring update inside k_attn_combine and the indexer weights scaled in k_iq_prep; 0: the
 * launches before, CTX_CUDA_FUSE_ATTN=0), `force` 1..3 forces grid shapes (every k_attn_pv variant; score
 * items of 16, 32 and 64 entries by 1, 4 and 8 heads, 5 and 64 blocks taking many items each, one item a
 * block). Each run is done with bits 0 and then in every mode below; logits and the downloaded state must
 * be byte for byte those of bits 0:
 * - tiny (4 heads: head groups narrower than the blocks) and mid (16 heads; sliding, CSA and HCA layers):
 *   a prefill in chunks of 64 + graph decode steps across compressed-block ends;
 * - mid: 40 tokens in chunks of 6 and of 8 (decode kernels with S = 6 / 8: several tokens a launch, the
 *   compressor completing inside the chunk) + direct decode steps;
 * - mid: a random state at 135001 (HCA ~1180 entries in 16 runs, CSA top-k 256) + graph decode steps. */
void cuda_engine_attn_fuse(struct cuda_engine *g, int bits, int force);

static const int attn_modes[][2] = {{0, 0}, {7, 0}, {7, 1}, {7, 2}, {7, 3}, {1, 0}, {2, 0}, {4, 0}};
static void attn_set(struct cuda_engine *g, int v)
{
    cuda_engine_attn_fuse(g, v < 0 ? -1 : attn_modes[v][0], v < 0 ? 0 : attn_modes[v][1]);
}
static void attn_label(int v, char *out, size_t cap)
{
    snprintf(out, cap, "bits %d force %d", attn_modes[v][0], attn_modes[v][1]);
}

/* The decode attention on tensor cores (bit 8: k_attn_dtc, runs merged by k_attn_combine, in place of
 * k_attn_score + k_attn_pv; other arithmetic, so the modes above leave it off): its own modes must agree
 * byte for byte with it plus every other bit (1023, the default): 511 (without 512: k_attn_dtc's queries
 * loaded a row at a time, k_attn_combine unrolled to 32 runs, k_rmsnorm reading its weights after the
 * wait, k_q_prep its kv norm weight and RoPE pair after the sums), 8 (bit 8 alone: none of the others),
 * and each of the following with 512: 255 (without 256:
 * prefill chunks' indexer
 * queries by k_iq_prep, a block a head, instead of k_iq_prep_w), 127 (nor 128: prefill chunks' query
 * heads by k_q_prep, a block a head, instead of k_q_prep_w), 63 (nor 64: wo_a's decode kernel
 * k_wo_a_mma instead of k_wo_a_ring), 15 (without 16 and 32: the
 * compressors' products and the indexer on the engine's stream), 31 (16: a CSA layer's products and
 * indexer on the side streams), 47 (32: an HCA layer's products there), 8 (no fork, no fold: the ring
 * update its own launch), 10 (the compressors forked), 58 (forked, 16 and 32, no fold: the indexer
 * weights' own scaling launch on the side stream), 12 (fold), 9 (the score / P.V shapes, which it does
 * not use), on the same runs (their graph and direct one-token steps take the side streams with 16 /
 * 32). Its numerics against the CPU engine: parts tiny, mid and long run with the default (1023), and
 * tests/kernels/test_attn.c holds the kernel to test_attn's bound. */
static const int dtc_modes[] = {1023, 511, 767, 639, 575, 527, 543, 559, 520, 522, 570, 524, 521, 8};
static void dtc_set(struct cuda_engine *g, int v) { cuda_engine_attn_fuse(g, v < 0 ? -1 : dtc_modes[v], 0); }
static void dtc_label(int v, char *out, size_t cap) { snprintf(out, cap, "bits %d", dtc_modes[v]); }

static void test_attn_fuse(const struct switch_ops *ops)
{
    struct ctx_err e = {0};
    static const struct {
        const char *cfg;
        struct switch_run run;
    } runs[] = {
        {"tiny", {200, 12, 64, 1, 0, 0, "tiny: prefill 200 in chunks of 64 + 12 graph decode steps"}},
        {"mid", {300, 16, 64, 1, 0, 0, "mid: prefill 300 in chunks of 64 + 16 graph decode steps"}},
        {"mid", {40, 4, 6, 0, 0, 0, "mid: 40 tokens in chunks of 6 + 4 decode steps, direct launches"}},
        {"mid", {40, 4, 8, 0, 0, 0, "mid: 40 tokens in chunks of 8 + 4 decode steps, direct launches"}},
        {"mid", {0, 6, 0, 1, 0, 135001, "mid: random state at 135001 + 6 graph decode steps"}},
    };
    struct inf_config c;
    struct inf_weights *w = NULL;
    struct cuda_engine *g = NULL;
    const char *loaded = NULL;
    enum { NT = 316 };
    int tok[NT];
    for (size_t r = 0; r < sizeof runs / sizeof runs[0]; r++) {
        if (!loaded || strcmp(loaded, runs[r].cfg)) {
            cuda_engine_free(g);
            inf_weights_free(w);
            g = NULL;
            w = NULL;
            struct cuda_engine_opts o = {.max_chunk = 64, .max_ctx = 140000};
            int ok = !inf_config_builtin(runs[r].cfg, &c, &e) && !inf_weights_synthetic(&c, 11, &w, &e) &&
                     !cuda_engine_new(w, &o, &g, &e);
            tap(ok, "%s: %s engine%s%s", ops->tag, runs[r].cfg, ok ? "" : ": ", ok ? "" : e.msg);
            if (!ok)
                break;
            loaded = runs[r].cfg;
            for (int i = 0; i < NT; i++)
                tok[i] = (i * 7919 + 13) % c.vocab_size;
        }
        if (switch_compare(ops, g, &c, tok, &runs[r].run))
            break;
    }
    cuda_engine_free(g);
    inf_weights_free(w);
}

/* ---- the attention of prefill chunks on wgmma (k_attn_hwg, part "wg") ----
 *
 * mid64 (mid with 64 heads: every layer runs k_attn_hwg for prefill chunks): the CUDA engine
 * against the CPU one (test_synthetic's bounds); a prefill in chunks of 50 against one chunk (every
 * chunk of more than 8 tokens runs the same per-query arithmetic: bit-identical logits and state);
 * the bf16 cache by cp.async (CSA and HCA layers) against the fp32 gather inside k_attn_hwg
 * (test_idx_switch's runs with the c16 switch: bit-identical). The first two with the HCA layers on
 * k_attn_hsw (the default: the seesaw schedule on the C16 path), the last with k_attn_hwg's C16
 * path (cuda_engine_attn_hsw_mode(0)). */
void cuda_engine_attn_wg_mode(int on);

/* A prefill of P tokens as one chunk and in chunks of 50, then T decode steps: logits and state
 * bit-identical (the engine at max_chunk P). */
static void chunks_vs_one(const char *cfg, int P, const char *what)
{
    struct ctx_err e = {0};
    struct inf_config c;
    struct inf_weights *w = NULL;
    struct cuda_engine *g = NULL;
    int ok = !test_config(cfg, &c, &e) && !inf_weights_synthetic(&c, 3, &w, &e);
    enum { T = 4 };
    struct cuda_engine_opts o = {.max_chunk = P, .max_ctx = P + T + 16};
    ok = ok && !cuda_engine_new(w, &o, &g, &e);
    if (ok) {
        int V = c.vocab_size, *tok = malloc(sizeof(int) * (size_t)(P + T));
        for (int i = 0; i < P + T; i++)
            tok[i] = (i * 7919 + 13) % V;
        float *a = malloc(sizeof(float) * (size_t)(T + 1) * V), *b = malloc(sizeof(float) * (size_t)(T + 1) * V);
        uint8_t *sa = NULL, *sb = NULL;
        size_t la = 0, lb = 0;
        struct inf_state *st = NULL, *st2 = NULL;
        ok = tok && a && b && !gpu_run(g, tok, P, P + T, P, a, V) && !inf_state_new(&c, &st, &e) &&
             !cuda_engine_state_download(g, st, &e) && !inf_state_serialize(st, &sa, &la, &e) &&
             !gpu_run(g, tok, P, P + T, 50, b, V) && !inf_state_new(&c, &st2, &e) &&
             !cuda_engine_state_download(g, st2, &e) && !inf_state_serialize(st2, &sb, &lb, &e);
        tap(ok && !memcmp(a, b, sizeof(float) * (size_t)(T + 1) * V) && la == lb && !memcmp(sa, sb, la),
            "%s: %s, prefill %d in chunks of 50 vs one chunk + %d decode steps: logits and state bit-identical%s%s",
            what, cfg, P, T, ok ? "" : ": ", ok ? "" : e.msg);
        free(tok);
        free(a);
        free(b);
        free(sa);
        free(sb);
        inf_state_free(st);
        inf_state_free(st2);
    } else {
        tap(0, "%s: %s engine: %s", what, cfg, e.msg);
    }
    cuda_engine_free(g);
    inf_weights_free(w);
}

/* The twenty-fourth session's prefill forms (kernels/engine.cu), each against the form before it: bit 0
 * wq_b's product written as bf16 straight into k_attn_hsw's queries, which k_q_prep_w rewrites in place
 * (CTX_CUDA_Q16_IN; before: through fp32 Q), bit 1 the MoE combine over 16 outputs a thread
 * (k_moe_combine16, CTX_CUDA_COMBINE16; before: k_moe_combine4), bit 2 the query heads' norm and RoPE a lane
 * a 32-value group (q_prep_rows, CTX_CUDA_QPREP_ROWS; before: a warp a head). The same values in the same operations,
 * so the same bits (mid64: 64 heads of 512, so k_attn_hsw takes the queries as bf16). */
void cuda_engine_q16in_mode(int v);
void cuda_engine_combine16_mode(int v);
void cuda_engine_qprep_rows_mode(int v);
static void forms_set(struct cuda_engine *g, int v)
{
    (void)g;
    cuda_engine_q16in_mode(v < 0 ? -1 : v & 1);
    cuda_engine_combine16_mode(v < 0 ? -1 : (v >> 1) & 1);
    cuda_engine_qprep_rows_mode(v < 0 ? -1 : (v >> 2) & 1);
}
static void forms_label(int v, char *out, size_t cap)
{
    snprintf(out, cap, "wq_b into %s, combine %s, query prep %s", v & 1 ? "bf16 q16" : "fp32 Q",
             v & 2 ? "k_moe_combine16" : "k_moe_combine4", v & 4 ? "a lane a group" : "a warp a head");
}

static void test_wg(void)
{
    cuda_engine_attn_wg_mode(7);
    test_synthetic("mid64", 600, 24, 256);
    chunks_vs_one("mid64", 500, "wg");
    static const struct switch_ops forms_ops = {"prefill forms", 8, forms_set, forms_label, NULL};
    test_idx_switch(&forms_ops, "mid64");
    forms_set(NULL, -1);
    static const struct switch_ops c16_ops = {"wg c16", 2, c16_set, c16_label, NULL};
    cuda_engine_attn_hsw_mode(0);
    test_idx_switch(&c16_ops, "mid64");
    cuda_engine_attn_hsw_mode(-1);
    cuda_engine_attn_wg_mode(-1);
}

/* ---- the MTP block and speculative decoding (part "spec") ---- */

struct last_streams {
    float *X; /* the last block's output streams [S][hc][D] */
    int last, S;
    size_t n;
};
static void last_hook(void *ud, int layer, const float *X, int S, long long pos0)
{
    (void)pos0;
    struct last_streams *ls = ud;
    if (layer == ls->last) {
        memcpy(ls->X, X, ls->n);
        ls->S = S;
    }
}

/* The MTP block's numerics over several rows: its logits after P = 36, 40, .., 64 positions of case 2's tokens
 * (the GPU's own streams), against the CPU's inf_model_mtp on the same streams, and after P > 40 against an
 * engine of max_chunk 40 (the MTP after each forward call, in pieces of 10 rows). Until 2026-12-01 these were
 * asserted on P = 64's row alone (<= 0.03: 0.024 and 0.023); over these rows the mHC mixes' fp32 form gives
 * median 0.031 / worst 0.039 against the CPU and 0.027 / 0.247 in pieces, HCX (as exact as it by
 * hcx_precision) 0.033 / 0.047 and 0.036 / 0.124 (results/2026-12-01-s31 call6): one row's figure moves with
 * any reordering of equal precision, and the pieces' worst row was never near the single row's bound. So the
 * bounds: against the CPU median <= 0.04, worst <= 0.06; in pieces median <= 0.05, worst <= 0.3 (the fixture's
 * whole-model median bound); the draft at 64 equal (spec_fixture). */
static void spec_mtp_rows(struct cuda_engine *g, struct cuda_engine *g40, struct inf_model *m, const struct inf_config *c,
                          const int *tok)
{
    enum { NR = 8 };
    struct ctx_err e = {0};
    int V = c->vocab_size, hc = c->hc_mult, D = c->hidden_size, ok = 1, n40 = 0;
    struct agg a_cpu, a_40;
    agg_init(&a_cpu, NR);
    agg_init(&a_40, NR);
    float *lg = malloc(sizeof(float) * (size_t)V), *lc = malloc(sizeof(float) * (size_t)V),
          *l40 = malloc(sizeof(float) * (size_t)V);
    struct last_streams ls = {malloc(sizeof(float) * 64 * (size_t)hc * D), c->num_hidden_layers - 1, 0, 0};
    for (int r = 0; r < NR && ok; r++) {
        const int P = 36 + 4 * r;
        struct inf_state *st = NULL;
        ls.n = sizeof(float) * (size_t)P * hc * D;
        cuda_engine_reset(g);
        ok = !cuda_engine_forward_hook(g, tok, P, NULL, last_hook, &ls, &e) &&
             !cuda_engine_mtp(g, 0, tok + 1, P, lg, NULL, &e) && !inf_state_new(c, &st, &e) &&
             !inf_model_mtp(m, st, 0, ls.X, tok + 1, P, lc, &e);
        inf_state_free(st);
        if (ok)
            agg_row(&a_cpu, lg, lc, V);
        if (ok && P > 40) {
            cuda_engine_reset(g40);
            ok = !cuda_engine_forward(g40, tok, 40, NULL, &e) && !cuda_engine_mtp(g40, 0, tok + 1, 40, NULL, NULL, &e) &&
                 !cuda_engine_forward(g40, tok + 40, P - 40, NULL, &e) &&
                 !cuda_engine_mtp(g40, 0, tok + 41, P - 40, l40, NULL, &e);
            if (ok)
                agg_row(&a_40, l40, lg, V), n40++;
        }
    }
    tap(ok, "spec: the MTP after P = 36 .. 64 positions, GPU, CPU and in pieces%s%s", ok ? "" : ": ", ok ? "" : e.msg);
    if (ok) {
        qsort(a_cpu.rms, (size_t)a_cpu.n, sizeof(double), cmp_double);
        qsort(a_40.rms, (size_t)a_40.n, sizeof(double), cmp_double);
        double mc = 0.5 * (a_cpu.rms[NR / 2 - 1] + a_cpu.rms[NR / 2]), wc = a_cpu.rms[NR - 1];
        double m4 = n40 % 2 ? a_40.rms[n40 / 2] : 0.5 * (a_40.rms[n40 / 2 - 1] + a_40.rms[n40 / 2]),
               w4 = a_40.rms[n40 - 1];
        tap(mc <= 0.04 && wc <= 0.06,
            "spec: MTP logits, GPU vs the CPU's inf_model_mtp on the same streams, %d rows: rms/sigma median %.4f "
            "(<= 0.04), worst %.4f (<= 0.06), top-1 equal %d", NR, mc, wc, a_cpu.top1);
        tap(m4 <= 0.05 && w4 <= 0.3,
            "spec: MTP in two calls of pieces of 10 vs one call, %d rows: rms/sigma median %.4f (<= 0.05), worst %.4f "
            "(<= 0.3), top-1 equal %d", n40, m4, w4, a_40.top1);
    }
    free(a_cpu.rms);
    free(a_cpu.gap);
    free(a_40.rms);
    free(a_40.gap);
    free(ls.X);
    free(lg);
    free(lc);
    free(l40);
}

/* The MTP block on the fixture: the streams of case 2's 64 positions from the GPU's own forward, the next
 * tokens tokens[1..64], against the CPU's inf_model_mtp on those same streams (the MTP block's numerics
 * alone: the CPU engine's bounds) and the golden mtp_logits (which come from the reference's streams:
 * the fixture's whole-model bounds); in pieces of 10 rows (an engine of max_chunk 40) against one. */
static void spec_fixture(const char *root)
{
    char path[1024];
    struct ctx_err e = {0};
    struct inf_weights *w = NULL;
    struct inf_model *m = NULL;
    struct cuda_engine *g = NULL, *g40 = NULL;
    struct inf_st_file *x = NULL;
    struct inf_state *st = NULL;
    snprintf(path, sizeof path, "%s/tests/fixtures/v4-tiny-a", root);
    if (inf_weights_open(path, &w, &e) || inf_model_new(w, NULL, 0, &m, &e)) {
        tap(0, "spec: fixture loads: %s", e.msg);
        goto done;
    }
    const struct inf_config *c = inf_weights_config(w);
    struct cuda_engine_opts o = {.max_chunk = 512, .max_ctx = 1024, .mtp = 1};
    int rc = cuda_engine_new(w, &o, &g, &e);
    tap(rc == 0, "spec: cuda_engine_new with the MTP block on the fixture%s%s", rc ? ": " : "", rc ? e.msg : "");
    if (rc)
        goto done;
    struct cuda_engine_opts o40 = {.max_chunk = 40, .max_ctx = 1024, .mtp = 1};
    rc = cuda_engine_new(w, &o40, &g40, &e);
    tap(rc == 0, "spec: the same with max_chunk 40%s%s", rc ? ": " : "", rc ? e.msg : "");
    if (rc)
        goto done;
    { /* refusals: an engine without the block, rows beyond the last call */
        struct cuda_engine *g0 = NULL;
        struct cuda_engine_opts o0 = {.max_chunk = 64, .max_ctx = 256};
        int tk = 5, d = 0;
        int r0 = cuda_engine_new(w, &o0, &g0, &e);
        int r1 = r0 ? -1 : cuda_engine_mtp(g0, 0, &tk, 1, NULL, &d, &e);
        tap(r0 == 0 && r1 == CTX_EINVAL && strstr(e.msg, "opts.mtp"), "spec: cuda_engine_mtp without opts.mtp: %s",
            e.msg);
        cuda_engine_free(g0);
        cuda_engine_reset(g);
        r1 = cuda_engine_mtp(g, 0, &tk, 1, NULL, &d, &e);
        tap(r1 == CTX_EINVAL && strstr(e.msg, "output rows"), "spec: cuda_engine_mtp after a reset: %s", e.msg);
        struct cuda_engine_opts ob = {.max_chunk = 64, .max_ctx = 256, .mtp = 1, .layer_end = 3};
        r0 = cuda_engine_new(w, &ob, &g0, &e);
        tap(r0 == CTX_EINVAL && strstr(e.msg, "ends before the last layer"), "spec: MTP on a first stage refused: %s",
            e.msg);
        cuda_engine_free(g0);
    }
    snprintf(path, sizeof path, "%s/tests/fixtures/v4-tiny-a/expected.safetensors", root);
    if (inf_st_open(path, &x, &e)) {
        tap(0, "spec: expected.safetensors: %s", e.msg);
        goto done;
    }
    const struct inf_tensor *tt = inf_st_find(x, "case2.tokens"), *ml = inf_st_find(x, "case2.mtp_logits");
    int V = c->vocab_size, hc = c->hc_mult, D = c->hidden_size, P = 64;
    if (!tt || !ml || tt->shape[0] < P + 1) {
        tap(0, "spec: fixture case 2 tensors");
        goto done;
    }
    int tok[65];
    for (int i = 0; i <= P; i++)
        tok[i] = ((const int32_t *)tt->data)[i];
    struct last_streams ls = {malloc(sizeof(float) * (size_t)P * hc * D), c->num_hidden_layers - 1, 0,
                              sizeof(float) * (size_t)P * hc * D};
    float *lg = malloc(sizeof(float) * (size_t)V), *lc = malloc(sizeof(float) * (size_t)V);
    float *l40 = malloc(sizeof(float) * (size_t)V);
    int draft = -1, d40 = -1;
    cuda_engine_reset(g);
    rc = cuda_engine_forward_hook(g, tok, P, NULL, last_hook, &ls, &e) || cuda_engine_mtp(g, 0, tok + 1, P, lg, &draft, &e);
    tap(!rc && ls.S == P, "spec: fixture case 2, the MTP on the GPU's streams of 64 positions%s%s", rc ? ": " : "",
        rc ? e.msg : "");
    /* max_chunk 40: the MTP after each forward call (positions 0..39, then 40..63), in pieces of 10 rows */
    cuda_engine_reset(g40);
    int rc40 = cuda_engine_forward(g40, tok, 40, NULL, &e) || cuda_engine_mtp(g40, 0, tok + 1, 40, NULL, NULL, &e) ||
               cuda_engine_forward(g40, tok + 40, 24, NULL, &e) || cuda_engine_mtp(g40, 0, tok + 41, 24, l40, &d40, &e);
    tap(!rc40, "spec: the same in MTP pieces of 10 rows (max_chunk 40)%s%s", rc40 ? ": " : "", rc40 ? e.msg : "");
    if (!rc && !inf_state_new(c, &st, &e) && !inf_model_mtp(m, st, 0, ls.X, tok + 1, P, lc, &e)) {
        struct agg a_cpu, a_gold, a_40, c_gold;
        agg_init(&a_cpu, 1);
        agg_init(&a_gold, 1);
        agg_init(&a_40, 1);
        agg_init(&c_gold, 1);
        agg_row(&a_cpu, lg, lc, V);
        agg_row(&a_gold, lg, (const float *)ml->data, V);
        agg_row(&c_gold, lc, (const float *)ml->data, V);
        double r_cpu = a_cpu.rms[0];
        printf("# spec: MTP logits at 64, GPU vs the CPU's inf_model_mtp on the same streams: rms/sigma %.4f, top-1 %s, "
               "draft %d\n", r_cpu, a_cpu.top1 ? "equal" : "differs", draft);
        tap(draft == argmax(lg, V), "spec: the MTP's draft is its logits' argmax (%d)", draft);
        agg_check(&a_gold, "spec: MTP logits, GPU vs golden (the GPU's own streams)", 2);
        agg_check(&c_gold, "spec: MTP logits, CPU on the GPU's streams vs golden", 2);
        if (!rc40) {
            agg_row(&a_40, l40, lg, V);
            printf("# spec: MTP in two calls of pieces of 10 vs one call of 64: rms/sigma %.4f, drafts %d / %d\n",
                   a_40.rms[0], d40, draft);
            tap(d40 == draft, "spec: MTP in two calls of pieces of 10 vs one call of 64: drafts %d / %d", d40, draft);
            free(a_40.rms);
            free(a_40.gap);
        }
        free(a_cpu.rms);
        free(a_cpu.gap);
    } else {
        tap(0, "spec: the CPU MTP: %s", e.msg);
    }
    free(ls.X);
    free(lg);
    free(lc);
    free(l40);
    spec_mtp_rows(g, g40, m, c, tok);
done:
    inf_state_free(st);
    inf_st_close(x);
    cuda_engine_free(g);
    cuda_engine_free(g40);
    inf_model_free(m);
    inf_weights_free(w);
}

/* Two tokens in one forward against two one-token steps: both rows' logits bit-identical, the device
 * argmax the host's (what makes speculative decoding give the plain decode's tokens). */
static void spec_rows(struct cuda_engine *g, const struct inf_config *c, const int *tok, int P, const char *name)
{
    struct ctx_err e = {0};
    int V = c->vocab_size, a2[2] = {-1, -1}, a1 = -1, b1 = -1, ok;
    float *r2 = malloc(sizeof(float) * 2 * (size_t)V), *s1 = malloc(sizeof(float) * 2 * (size_t)V);
    cuda_engine_reset(g);
    ok = !cuda_engine_prefill(g, tok, P, NULL, &e) && !cuda_engine_forward_rows(g, tok + P, 2, 2, r2, a2, &e);
    cuda_engine_reset(g);
    ok = ok && !cuda_engine_prefill(g, tok, P, NULL, &e) && !cuda_engine_forward_rows(g, tok + P, 1, 1, s1, &a1, &e) &&
         !cuda_engine_forward_rows(g, tok + P + 1, 1, 1, s1 + V, &b1, &e);
    tap(ok && !memcmp(r2, s1, sizeof(float) * 2 * (size_t)V) && a2[0] == a1 && a2[1] == b1 && a1 == argmax(s1, V) &&
            b1 == argmax(s1 + V, V),
        "spec: %s, a forward of 2 tokens vs 2 steps of 1 after %d: both rows' logits bit-identical, argmax %d %d / %d %d%s%s",
        name, P, a2[0], a2[1], a1, b1, ok ? "" : ": ", ok ? "" : e.msg);
    free(r2);
    free(s1);
}

static int spec_state(struct cuda_engine *g, const struct inf_config *c, uint8_t **buf, size_t *len)
{
    struct ctx_err e = {0};
    struct inf_state *st = NULL;
    int rc = inf_state_new(c, &st, &e) || cuda_engine_state_download(g, st, &e) || inf_state_serialize(st, buf, len, &e);
    if (rc)
        printf("# spec state: %s\n", e.msg);
    inf_state_free(st);
    return rc;
}

/* Greedy generation, plain and speculative (the MTP's drafts; drafts forced right or wrong), the same
 * tokens and the same state after; a stop token ends both at the same point. */
static void spec_generate(struct cuda_engine *g, const struct inf_config *c, const int *prompt, int n, int N,
                          const char *name)
{
    struct ctx_err e = {0};
    int V = c->vocab_size;
    int *ref = malloc(sizeof(int) * (size_t)N), *out = malloc(sizeof(int) * (size_t)N);
    int *force = malloc(sizeof(int) * (size_t)N);
    uint8_t *s0 = NULL, *s1 = NULL;
    size_t l0 = 0, l1 = 0;
    int nr = 0, no = 0;
    struct cuda_engine_gen_opts go = {.max_tokens = N};
    struct cuda_engine_gen_stats gs;
    cuda_engine_reset(g);
    int ok = !cuda_engine_generate(g, prompt, n, &go, ref, &nr, &gs, &e) && nr == N && !spec_state(g, c, &s0, &l0);
    tap(ok, "spec: %s, plain greedy generation of %d tokens after %d (%lld forwards)%s%s", name, N, n, gs.forwards,
        ok ? "" : ": ", ok ? "" : e.msg);
    if (!ok)
        goto done;
    for (int mode = 0; mode < 4; mode++) {
        static const char *what[4] = {"the MTP's drafts", "every draft right", "every draft wrong",
                                      "drafts right and wrong in turn"};
        for (int i = 0; i < N; i++)
            force[i] = mode == 0 ? -1 : mode == 1 ? ref[i] : mode == 2 ? (ref[i] + 1) % V : i % 3 ? ref[i] : (ref[i] + 7) % V;
        cuda_engine_spec_force(g, mode ? force : NULL, N);
        go.spec = 1;
        cuda_engine_reset(g);
        free(s1);
        s1 = NULL;
        int r = cuda_engine_generate(g, prompt, n, &go, out, &no, &gs, &e);
        int st = r ? 1 : spec_state(g, c, &s1, &l1);
        tap(!r && !st && no == N && !memcmp(out, ref, sizeof(int) * (size_t)N) && l1 == l0 && !memcmp(s0, s1, l0),
            "spec: %s, speculative generation (%s): the same %d tokens and the same state (%lld forwards, %lld drafts, "
            "%lld accepted, %lld MTP calls, %lld undone)%s%s",
            name, what[mode], N, gs.forwards, gs.drafted, gs.accepted, gs.mtp_calls, gs.undos, r ? ": " : "",
            r ? e.msg : "");
        if (mode == 1)
            tap(gs.accepted == gs.drafted && gs.drafted > 0, "spec: %s, right drafts all accepted (%lld of %lld)", name,
                gs.accepted, gs.drafted);
        if (mode == 2)
            tap(gs.accepted == 0 && gs.drafted > 0 && gs.undos == gs.drafted,
                "spec: %s, wrong drafts all rejected and undone (%lld drafts, %lld undone)", name, gs.drafted, gs.undos);
    }
    cuda_engine_spec_force(g, NULL, 0);
    { /* a stop token: output k of the plain run ends both runs there */
        const int k = N / 2 + 1;
        go.stop = &ref[k];
        go.nstop = 1;
        int first = 0;
        while (ref[first] != ref[k]) /* the first output equal to it ends the run */
            first++;
        for (int i = 0; i < N; i++)
            force[i] = (ref[i] + 1) % V;
        for (int mode = 0; mode < 3; mode++) { /* plain; speculative with every draft right, every one wrong */
            go.spec = mode > 0;
            cuda_engine_spec_force(g, mode == 1 ? ref : mode == 2 ? force : NULL, N);
            cuda_engine_reset(g);
            free(s1);
            s1 = NULL;
            int r = cuda_engine_generate(g, prompt, n, &go, out, &no, &gs, &e);
            int st = r ? 1 : spec_state(g, c, &s1, &l1);
            if (mode == 0) {
                free(s0);
                s0 = s1;
                l0 = l1;
                s1 = NULL;
            }
            tap(!r && !st && no == first + 1 && !memcmp(out, ref, sizeof(int) * (size_t)no) &&
                    (mode == 0 || (l1 == l0 && !memcmp(s0, s1, l0))),
                "spec: %s, %s generation stops at the stop token (output %d of %d)%s", name,
                mode == 2 ? "speculative (drafts wrong)" : mode ? "speculative (drafts right)" : "plain", no, N,
                mode ? ", the plain run's state" : "");
        }
        cuda_engine_spec_force(g, NULL, 0);
        go.stop = NULL;
        go.nstop = 0;
    }
done:
    free(ref);
    free(out);
    free(force);
    free(s0);
    free(s1);
}

static void test_spec(const char *root)
{
    spec_fixture(root);
    static const char *cfgs[2] = {"tiny", "mid"};
    for (int i = 0; i < 2; i++) {
        struct ctx_err e = {0};
        struct inf_config c;
        struct inf_weights *w = NULL;
        struct cuda_engine *g = NULL;
        int ok = !test_config(cfgs[i], &c, &e) && !inf_weights_synthetic(&c, 5, &w, &e);
        const int P = i ? 700 : 300, N = i ? 120 : 200;
        struct cuda_engine_opts o = {.max_chunk = 256, .max_ctx = P + N + 16, .mtp = 1};
        ok = ok && !cuda_engine_new(w, &o, &g, &e);
        tap(ok, "spec: %s engine with the MTP block%s%s", cfgs[i], ok ? "" : ": ", ok ? "" : e.msg);
        if (ok) {
            int *tok = malloc(sizeof(int) * (size_t)(P + 2));
            for (int j = 0; j < P + 2; j++)
                tok[j] = (j * 7919 + 13) % c.vocab_size;
            spec_rows(g, &c, tok, P, cfgs[i]);
            spec_rows(g, &c, tok, P - 1, cfgs[i]);
            spec_generate(g, &c, tok, P, N, cfgs[i]);
            free(tok);
        }
        cuda_engine_free(g);
        inf_weights_free(w);
    }
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (cuda_device_count() < 1) {
        printf("1..0 # SKIP no CUDA device\n");
        return 0;
    }
    const char *root = getenv("CTX_SOURCE_ROOT"), *parts = getenv("CTX_ENGINE_PARTS");
    if (!parts)
        parts = "topk,fixture,tiny,mid,long,d2h,pdl,idx,c16,wg,moe,mhc,prep,afuse,dtc,spec";
    if (strstr(parts, "memcheck"))
        test_memcheck();
    if (strstr(parts, "topk"))
        test_topk();
    if (strstr(parts, "fixture"))
        test_fixture(root ? root : ".");
    if (strstr(parts, "tiny"))
        test_synthetic("tiny", 200, 300, 128);
    if (strstr(parts, "mid")) {
        const char *pe = getenv("CTX_ENGINE_MID_PREFILL"), *de = getenv("CTX_ENGINE_MID_DECODE");
        test_synthetic("mid", pe ? atoi(pe) : 1100, de ? atoi(de) : 150, 256);
        test_cmp_lt();
        test_lt_rows();
    }
    if (strstr(parts, "long"))
        test_long();
    if (strstr(parts, "d2h"))
        test_d2h();
    if (strstr(parts, "pdl"))
        test_pdl();
    if (strstr(parts, "idx")) {
        static const struct switch_ops idx_ops = {"idx", 4, idx_set, idx_label, NULL};
        test_idx_switch(&idx_ops, "mid");
        test_idx_switch(&idx_ops, "mid64i");
    }
    if (strstr(parts, "c16")) {
        static const struct switch_ops c16_ops = {"c16", 2, c16_set, c16_label, NULL};
        test_idx_switch(&c16_ops, "mid");
    }
    if (strstr(parts, "wg"))
        test_wg();
    if (strstr(parts, "moe")) {
        test_moe("tiny");
        test_moe("mid");
        /* a chunk of 800 on mid (64 experts, top-6: 75 pairs an expert on average) runs V9 (128-pair CTAs,
         * a producer warpgroup), chunks of 50 run V7: the same bytes */
        chunks_vs_one("mid", 800, "moe V9 vs V7");
    }
    if (strstr(parts, "mhc")) {
        test_hc();
        test_hcx_precision();
        test_hcx();
        static const struct switch_ops x16_ops = {"x16", 2, x16_set, x16_label, NULL};
        test_idx_switch(&x16_ops, "mid");
        cuda_engine_x16_mode(-1);
        static const struct switch_ops pre4q_ops = {"pre4q", 2, pre4q_set, pre4q_label, NULL};
        test_idx_switch(&pre4q_ops, "mid");
        cuda_engine_pre4q_mode(-1);
    }
    if (strstr(parts, "prep")) {
        static const struct switch_ops sw16_ops = {"swiglu16", 2, sw16_set, sw16_label, NULL};
        test_idx_switch(&sw16_ops, "mid");
        cuda_engine_swiglu16_mode(-1);
    }
    if (strstr(parts, "afuse")) {
        static const struct switch_ops fuse_ops = {"attn fuse", (int)(sizeof attn_modes / sizeof attn_modes[0]),
                                                   attn_set, attn_label, NULL};
        test_attn_fuse(&fuse_ops);
    }
    if (strstr(parts, "dtc")) {
        static const struct switch_ops dtc_ops = {"attn dtc", (int)(sizeof dtc_modes / sizeof dtc_modes[0]), dtc_set,
                                                  dtc_label, NULL};
        test_attn_fuse(&dtc_ops);
    }
    if (strstr(parts, "spec"))
        test_spec(root ? root : ".");
    printf("1..%d\n", n_test);
    return n_fail ? 1 : 0;
}
