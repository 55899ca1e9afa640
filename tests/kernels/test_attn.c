/* Sparse attention on tensor cores (cuda_engine_attn_tc, the kernel of prefill chunks; kernels/
 * engine.cu k_attn_tc) against the CPU engine's own arithmetic: the entry list of inference/model.c
 * (attn_list: window ring / this chunk's kv, empty slots, then CSA entries in selection order or
 * HCA entries ascending), inf_cpu_sparse_attn (64-entry online-softmax blocks, bf16 probabilities,
 * the sink) and the inverse RoPE of the tail (inf_cpu_rope_apply). Plain TAP (the GPU machine has
 * no cmocka); "1..0 # SKIP" without a device.
 *
 * The bound, and why. Queries and entries are bf16-exact, so both sides form the same exact
 * products; they differ in the fp32 summation order of the scores (each side within n u sum_i |q_i
 * k_i| scale of the exact score: n = 512, u = 2^-24), in expf (a few ulp) and in the order of the
 * P.V sums. A score perturbed by e changes its probability by a factor e^(+-2e) (the running max
 * moves by at most e too), so p_j differs by at most delta p_j, delta = 4 n u max_j sum_i |q_i
 * k_ji| scale + 2^-20; its bf16 rounding can then flip by one bf16 ulp (<= 2^-7 p_j). With A_i =
 * sum_j w_j |v_ji| (w_j the exact softmax weights with the sink, in double), and each side's fp32
 * sums of the n products p_j v_ji (and the per-block rescaling) within n u A_i, each output before
 * its own bf16 rounding differs by at most (2^-7 + 2 delta + 2 n u) A_i, and that rounding can flip
 * by 2^-7 |o_i|: |gpu_i - cpu_i| <= 1.01 ((2^-7 + 2 delta + 2 n u + 2^-20) A_i + (2^-7 + 2 delta)
 * |cpu_i|) For the inverse-RoPE'd pairs (a, b) -> (a c - b s, a s + b c): the sum of both inputs'
 * bounds plus a flip of the result. Asserted for every element; the share of bit-identical elements
 * is reported (most are), and the rows beyond the S x H outputs must stay unwritten.
 *
 * The decode attention (cuda_engine_attn_dtc: the list in runs of 64-entry blocks, each in the same
 * arithmetic from an empty running max, merged by rescaling to the largest max) is held to the same
 * bound on the first 8 queries of every case: the merge adds a few fp32 roundings of the numerators
 * (n u A_i covers them). Where a query's entries all lie in its first run, the merge is exact
 * (factor 1, the other runs' 0) and its output must be cuda_engine_attn_tc's bytes.
 *
 * The attention on wgmma (cuda_engine_attn_wg: k_attn_hwg, the engine's prefill kernel when the
 * heads come in 64s) is held to the same bound on every case of 64 or 128 heads, with the entries
 * gathered; with every block copied from bf16 copies of the cache and the window (its C16 form) it
 * must give the same bytes. With the window of 128 the C16 form is k_attn_hsw's by default (the
 * seesaw schedule; an HCA cache as bulk-copied 64-entry tiles, CSA's selected rows by cp.async):
 * held to the same bound and to its own bytes on a second run, and k_attn_hwg's C16 form
 * (cuda_engine_attn_hsw_mode(0)) to the gather's bytes. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "cpu/kernels.h"
#include "cuda_engine.h"
#include "gemm.h"
#define TEST_RNG_SEED 0x243f6a8885a308d3ull
#include "tap.h"



static void fill_bf16(float *x, size_t n, float sc)
{
    for (size_t i = 0; i < n; i++)
        x[i] = inf_cpu_bf16((float)gauss() * sc);
}

#define D 512
#define RD 64
#define WIN 128

struct acase {
    const char *name;
    int S, H, ratio, K;
    long long pos0;
    float qscale;  /* query magnitude: 1 gives scores of about N(0, 1), 4 a peaked softmax */
    double pempty; /* CSA: share of selected slots that are -1 */
};

/* cuda_engine_attn_wg's C16 scratch: the cache's rows rounded up to 64, the window's (ring, chunk),
 * then k_attn_hsw's bf16 queries and output (S H rows each) */
static size_t wg_scratch(size_t ncache, int S, int H)
{
    return sizeof(uint16_t) * ((ncache + 63) / 64 * 64 + WIN + (size_t)S + 2 * (size_t)S * H) * D +
           16;
}

static int upload(void **d, const void *h, size_t bytes, struct ctx_err *e)
{
    return cuda_malloc(d, bytes ? bytes : 4, e) || (bytes && cuda_h2d(*d, h, bytes, e));
}

/* kind 0: cuda_engine_attn_tc on the case's S queries; kind 1: the decode attention
 * (cuda_engine_attn_dtc, runs merged) on its first min(S, 8), checked against the same bound, and, for
 * each query whose entries all lie in its list's first run, byte-equal to cuda_engine_attn_tc's output;
 * kind 2: cuda_engine_attn_wg (cases of 64-head groups), gathered and by cp.async from bf16 copies. */
static void run_case(const struct acase *c, int kind)
{
    struct ctx_err e = {0};
    const int dec = kind == 1, wg = kind == 2;
    if (wg && c->H % 64)
        return;
    int S = dec && c->S > 8 ? 8 : c->S, H = c->H, K = c->ratio == 4 ? c->K : 0;
    const char *tag = dec ? "decode runs: " : wg ? "wgmma: " : "";
    long long pos0 = c->pos0, plast = pos0 + S - 1;
    size_t ncache = c->ratio == 4 ? (size_t)((plast + 1) / 4) : c->ratio ? (size_t)((plast + 1) / c->ratio) : 0;
    size_t nout = (size_t)S * H * D, guard = (size_t)4 * D;
    float *q = malloc(sizeof(float) * nout), *kvn = malloc(sizeof(float) * (size_t)S * D);
    float *ring = malloc(sizeof(float) * WIN * D), *cache = malloc(sizeof(float) * (ncache ? ncache : 1) * D);
    float *sink = malloc(sizeof(float) * (size_t)H), *rope = malloc(sizeof(float) * (size_t)S * RD);
    float *got = malloc(sizeof(float) * (nout + guard)), *ref = malloc(sizeof(float) * D);
    int *sel = malloc(sizeof(int) * (size_t)(S * (K ? K : 1)));
    const float **list = malloc(sizeof(float *) * (size_t)(WIN + K + ncache + 1));
    double *w = malloc(sizeof(double) * (size_t)(WIN + K + ncache + 1)), *A = malloc(sizeof(double) * D);
    double *tol = malloc(sizeof(double) * D);
    void *d_q = NULL, *d_kvn = NULL, *d_ring = NULL, *d_cache = NULL, *d_sink = NULL,
         *d_rope = NULL, *d_sel = NULL, *d_pos = NULL, *d_out = NULL, *d_out2 = NULL, *d_scr = NULL,
         *d_out3 = NULL, *d_scr3 = NULL;
    float *got2 = malloc(sizeof(float) * nout), *got3 = malloc(sizeof(float) * (nout + guard));
    const int hsw = wg && (ncache > 0 || c->ratio == 0); /* k_attn_hsw: the C16 form (WIN 128) */
    fill_bf16(q, nout, c->qscale);
    fill_bf16(kvn, (size_t)S * D, 1.f);
    fill_bf16(ring, (size_t)WIN * D, 1.f);
    fill_bf16(cache, ncache * D, 1.f);
    for (int h = 0; h < H; h++)
        sink[h] = (float)gauss() * 2.f;
    for (int s = 0; s < S; s++) /* (cos, sin) pairs of arbitrary angles */
        for (int i = 0; i < RD / 2; i++) {
            double th = uniform() * 6.283185307179586;
            rope[(size_t)s * RD + 2 * i] = (float)cos(th);
            rope[(size_t)s * RD + 2 * i + 1] = (float)sin(th);
        }
    for (int s = 0; s < S && K; s++) { /* the indexer's output: k = min(nv, K) distinct entries, then -1 */
        long long nv = (pos0 + s + 1) / 4;
        int k = nv < K ? (int)nv : K;
        for (int i = 0; i < K; i++)
            sel[(size_t)s * K + i] = i < k && uniform() >= c->pempty ? (int)(uniform() * (double)nv) : -1;
    }
    for (size_t i = 0; i < nout + guard; i++)
        got[i] = NAN;
    int ok = !upload(&d_q, q, sizeof(float) * nout, &e) && !upload(&d_kvn, kvn, sizeof(float) * (size_t)S * D, &e) &&
             !upload(&d_ring, ring, sizeof(float) * WIN * D, &e) &&
             !upload(&d_cache, cache, sizeof(float) * ncache * D, &e) &&
             !upload(&d_sink, sink, sizeof(float) * (size_t)H, &e) &&
             !upload(&d_rope, rope, sizeof(float) * (size_t)S * RD, &e) &&
             !upload(&d_sel, sel, sizeof(int) * (size_t)S * K, &e) && !upload(&d_pos, &pos0, sizeof pos0, &e) &&
             !upload(&d_out, got, sizeof(float) * (nout + guard), &e);
    /* the kernel reads row p of the table: hand it a base pos0 rows before the S rows uploaded */
    const float *rope_base = ok ? (const float *)((uintptr_t)d_rope - (uintptr_t)pos0 * RD * sizeof(float)) : NULL;
    if (wg)
        ok = ok && !cuda_engine_attn_wg(d_q, d_kvn, d_ring, d_cache, d_sel, S, H, D, WIN, c->ratio, K, d_pos, d_sink,
                                        rope_base, RD, 0, NULL, d_out, NULL, &e);
    else if (!dec)
        ok = ok &&
             !cuda_engine_attn_tc(d_q, d_kvn, d_ring, d_cache, d_sel, S, H, D, WIN, c->ratio, K, d_pos, d_sink, rope_base,
                                  RD, d_out, NULL, &e);
    else
        ok = ok && !cuda_malloc(&d_scr, cuda_engine_attn_dtc_scratch(S, H, D), &e) &&
             !upload(&d_out2, got, sizeof(float) * nout, &e) &&
             !cuda_engine_attn_dtc(d_q, d_kvn, d_ring, d_cache, d_sel, S, H, D, WIN, c->ratio, K, d_pos, d_sink,
                                   rope_base, RD, d_scr, d_out, NULL, &e) &&
             !cuda_engine_attn_tc(d_q, d_kvn, d_ring, d_cache, d_sel, S, H, D, WIN, c->ratio, K, d_pos, d_sink, rope_base,
                                  RD, d_out2, NULL, &e) &&
             !cuda_d2h(got2, d_out2, sizeof(float) * nout, &e);
    if (hsw) {
        cuda_engine_attn_hsw_mode(1);
        ok = ok && !cuda_malloc(&d_scr3, wg_scratch(ncache, S, H), &e) &&
             !upload(&d_out3, got, sizeof(float) * (nout + guard), &e) &&
             !cuda_engine_attn_wg(d_q, d_kvn, d_ring, d_cache, d_sel, S, H, D, WIN, c->ratio, K,
                                  d_pos, d_sink, rope_base, RD, (long long)ncache, d_scr3, d_out3,
                                  NULL, &e) &&
             !cuda_sync(&e) && !cuda_d2h(got3, d_out3, sizeof(float) * (nout + guard), &e);
        /* once more: the same bytes (the exchanges between the warpgroups and the bulk copies are
         * ordered) */
        ok = ok && !cuda_memset(d_out3, 0xff, sizeof(float) * nout, &e) &&
             !cuda_engine_attn_wg(d_q, d_kvn, d_ring, d_cache, d_sel, S, H, D, WIN, c->ratio, K,
                                  d_pos, d_sink, rope_base, RD, (long long)ncache, d_scr3, d_out3,
                                  NULL, &e) &&
             !cuda_sync(&e) && !cuda_d2h(got2, d_out3, sizeof(float) * nout, &e);
        if (ok)
            tap(!memcmp(got2, got3, sizeof(float) * nout), "%s%s: k_attn_hsw twice: the same bytes",
                tag, c->name);
        cuda_engine_attn_hsw_mode(-1);
    }
    ok = ok && !cuda_sync(&e) && !cuda_d2h(got, d_out, sizeof(float) * (nout + guard), &e);
    if (!ok) {
        tap(0, "%s%s: device run: %s", tag, c->name, e.msg);
        goto done;
    }
    size_t one_run = 0, one_same = 0; /* queries whose entries lie in the first 64: k_attn_tc's bytes */
    float scale = 1.0f / sqrtf((float)D);
    size_t bad = 0, same = 0, nonfinite = 0, bad3 = 0, same3 = 0, nonfinite3 = 0;
    double worst = 0.0, maxdiff = 0.0, worst3 = 0.0, maxdiff3 = 0.0;
    for (int s = 0; s < S; s++) {
        long long p = pos0 + s, first = p - WIN + 1 < 0 ? 0 : p - WIN + 1;
        int n = 0;
        for (long long t = first; t <= p; t++)
            list[n++] = t >= pos0 ? kvn + (size_t)(t - pos0) * D : ring + (size_t)(t % WIN) * D;
        while (n < WIN)
            list[n++] = NULL;
        if (c->ratio == 4)
            for (int i = 0; i < K; i++) {
                int en = sel[(size_t)s * K + i];
                list[n++] = en >= 0 ? cache + (size_t)en * D : NULL;
            }
        else if (c->ratio)
            for (long long en = 0; en < (p + 1) / c->ratio; en++)
                list[n++] = cache + (size_t)en * D;
        if (dec) {
            int last = -1;
            for (int j = 0; j < n; j++)
                if (list[j])
                    last = j;
            if (last < 64) {
                one_run++;
                one_same += !memcmp(got + (size_t)s * H * D, got2 + (size_t)s * H * D, sizeof(float) * (size_t)H * D);
            }
        }
        for (int h = 0; h < H; h++) {
            const float *qh = q + ((size_t)s * H + h) * D;
            inf_cpu_sparse_attn(qh, 1, D, list, n, sink + h, scale, ref);
            inf_cpu_rope_apply(rope + (size_t)s * RD, RD, ref + D - RD, 1);
            double m = -INFINITY, Z = 0.0, amax = 0.0;
            for (int j = 0; j < n; j++) {
                if (!list[j])
                    continue;
                double dot = 0.0, ab = 0.0;
                for (int i = 0; i < D; i++) {
                    dot += (double)qh[i] * list[j][i];
                    ab += fabs((double)qh[i] * list[j][i]);
                }
                w[j] = dot * scale;
                if (w[j] > m)
                    m = w[j];
                if (ab * scale > amax)
                    amax = ab * scale;
            }
            for (int i = 0; i < D; i++)
                A[i] = 0.0;
            for (int j = 0; j < n; j++) {
                if (!list[j])
                    continue;
                double wj = exp(w[j] - m);
                Z += wj;
                for (int i = 0; i < D; i++)
                    A[i] += wj * fabs((double)list[j][i]);
            }
            Z += exp((double)sink[h] - m);
            double delta = 4.0 * D * 0x1p-24 * amax + 0x1p-20;
            for (int i = 0; i < D; i++)
                tol[i] = 1.01 * ((0x1p-7 + 2 * delta + 2.0 * n * 0x1p-24 + 0x1p-20) * A[i] / Z + (0x1p-7 + 2 * delta) * fabs((double)ref[i]));
            for (int i = D - RD; i < D; i += 2) { /* the pairs' bounds add; then a flip of the result */
                double ta = tol[i] + tol[i + 1];
                tol[i] = ta + 0x1p-7 * 1.01 * fabs((double)ref[i]);
                tol[i + 1] = ta + 0x1p-7 * 1.01 * fabs((double)ref[i + 1]);
            }
            const float *o = got + ((size_t)s * H + h) * D, *o3 = got3 + ((size_t)s * H + h) * D;
            for (int i = 0; i < D; i++) {
                if (hsw) {
                    if (!isfinite(o3[i])) {
                        nonfinite3++;
                    } else {
                        double df = fabs((double)o3[i] - ref[i]);
                        same3 += o3[i] == ref[i];
                        maxdiff3 = df > maxdiff3 ? df : maxdiff3;
                        bad3 += df > tol[i];
                        if (tol[i] > 0 && df / tol[i] > worst3)
                            worst3 = df / tol[i];
                    }
                }
                if (!isfinite(o[i])) {
                    nonfinite++;
                    continue;
                }
                double df = fabs((double)o[i] - ref[i]);
                same += o[i] == ref[i];
                if (df > maxdiff)
                    maxdiff = df;
                if (df > tol[i])
                    bad++;
                if (tol[i] > 0 && df / tol[i] > worst)
                    worst = df / tol[i];
            }
        }
    }
    size_t untouched = 0;
    for (size_t i = nout; i < nout + guard; i++)
        untouched += isnan(got[i]);
    tap(bad == 0 && nonfinite == 0, "%s%s: %d queries x %d heads x %d dims within the bound (%zu over, %zu not finite; "
        "max |diff| %.3g, max diff/bound %.3f; %.1f%% bit-identical)", tag, c->name, S, H, D, bad, nonfinite, maxdiff,
        worst, 100.0 * (double)same / (double)nout);
    tap(untouched == guard, "%s%s: nothing written past the %zu outputs", tag, c->name, nout);
    if (hsw) {
        size_t untouched3 = 0;
        for (size_t i = nout; i < nout + guard; i++)
            untouched3 += isnan(got3[i]);
        tap(bad3 == 0 && nonfinite3 == 0 && untouched3 == guard,
            "%s%s: k_attn_hsw (C16, seesaw) within the bound (%zu over, %zu not finite, %zu of %zu "
            "guard values "
            "kept; max |diff| %.3g, max diff/bound %.3f; %.1f%% bit-identical)",
            tag, c->name, bad3, nonfinite3, untouched3, guard, maxdiff3, worst3,
            100.0 * (double)same3 / (double)nout);
    }
    if ((c->ratio > 4 || wg) && (ncache > 0 || c->ratio == 0) && !dec) { /* the entries in bf16 by cp.async (C16) */
        /* cuda_engine_attn_wg's scratch: the cache's rows, then the window's (ring, this chunk's kv) */
        if (wg)
            cuda_engine_attn_hsw_mode(0); /* k_attn_hwg's C16 form: the gather's bytes */
        int ok16 =
            !cuda_malloc(&d_scr, wg ? wg_scratch(ncache, S, H) : sizeof(uint16_t) * ncache * D + 16,
                         &e) &&
            !upload(&d_out2, got, sizeof(float) * nout, &e) &&
            !cuda_memset(d_out2, 0xff, sizeof(float) * nout, &e) &&
            (wg ? !cuda_engine_attn_wg(d_q, d_kvn, d_ring, d_cache, d_sel, S, H, D, WIN, c->ratio,
                                       K, d_pos, d_sink, rope_base, RD, (long long)ncache, d_scr,
                                       d_out2, NULL, &e)
                : !cuda_engine_attn_tc16(d_q, d_kvn, d_ring, d_cache, d_sel, S, H, D, WIN, c->ratio,
                                         K, d_pos, d_sink, rope_base, RD, (long long)ncache, d_scr,
                                         d_out2, NULL, &e)) &&
            !cuda_sync(&e) && !cuda_d2h(got2, d_out2, sizeof(float) * nout, &e);
        cuda_engine_attn_hsw_mode(-1);
        size_t diff = 0;
        for (size_t i = 0; ok16 && i < nout; i++)
            diff += memcmp(&got[i], &got2[i], sizeof(float)) != 0;
        tap(ok16 && diff == 0, "%s%s: the bf16 cache by cp.async (%s, %zu entries): %s", tag, c->name,
            wg ? "cuda_engine_attn_wg" : "cuda_engine_attn_tc16", ncache,
            !ok16 ? e.msg : diff ? "DIFFERENT bytes" : "the same bytes on every output");
        if (diff)
            printf("# %zu of %zu outputs differ\n", diff, nout);
    }
    if (dec)
        tap(one_same == one_run, "%s%s: %zu of %zu queries with one non-empty run give the prefill kernel's bytes",
            tag, c->name, one_same, one_run);
done:
    cuda_free(d_q);
    cuda_free(d_kvn);
    cuda_free(d_ring);
    cuda_free(d_cache);
    cuda_free(d_sink);
    cuda_free(d_rope);
    cuda_free(d_sel);
    cuda_free(d_pos);
    cuda_free(d_out);
    cuda_free(d_out2);
    cuda_free(d_scr);
    cuda_free(d_out3);
    cuda_free(d_scr3);
    free(got2);
    free(got3);
    free(q);
    free(kvn);
    free(ring);
    free(cache);
    free(sink);
    free(rope);
    free(got);
    free(ref);
    free(sel);
    free(list);
    free(w);
    free(A);
    free(tol);
}

static void test_errors(void)
{
    struct ctx_err e = {0};
    float *d = NULL;
    if (cuda_malloc((void **)&d, 4096, &e)) {
        tap(0, "errors: device setup: %s", e.msg);
        return;
    }
    const long long *dp = (const long long *)d;
    int r1 = cuda_engine_attn_tc(d, d, d, d, NULL, 4, 64, 256, WIN, 0, 0, dp, d, d, RD, d, NULL, &e);
    int r2 = cuda_engine_attn_tc(d, d, d, d, NULL, 0, 64, D, WIN, 0, 0, dp, d, d, RD, d, NULL, &e);
    int r3 = cuda_engine_attn_tc(d, d, d, d, NULL, 4, 64, D, WIN, 4, 0, dp, d, d, RD, d, NULL, &e);
    int r4 = cuda_engine_attn_tc(d, d, d, d, NULL, 4, 64, D, WIN, 0, 0, dp, d, d, 63, d, NULL, &e);
    tap(r1 == CTX_EUNSUPPORTED && r2 == CTX_EINVAL && r3 == CTX_EINVAL && r4 == CTX_EINVAL,
        "head_dim 256 unsupported (%d); 0 queries (%d), CSA with k 0 (%d), odd rope dims (%d) invalid", r1, r2, r3, r4);
    int c1 = cuda_engine_attn_tc16(d, d, d, d, NULL, 4, 64, D, WIN, 4, 0, dp, d, d, RD, 4, d, d, NULL, &e);
    int c2 = cuda_engine_attn_tc16(d, d, d, d, NULL, 4, 64, D, WIN, 128, 0, dp, d, d, RD, 0, d, d, NULL, &e);
    int c3 = cuda_engine_attn_tc16(d, d, d, d, NULL, 4, 64, D, WIN, 128, 0, dp, d, d, RD, 4, NULL, d, NULL, &e);
    tap(c1 == CTX_EINVAL && c2 == CTX_EINVAL && c3 == CTX_EINVAL,
        "bf16-cache path: ratio 4 (%d), no entries (%d), no scratch (%d) invalid", c1, c2, c3);
    int w1 = cuda_engine_attn_wg(d, d, d, d, NULL, 4, 16, D, WIN, 128, 0, dp, d, d, RD, 0, NULL, d, NULL, &e);
    int w2 = cuda_engine_attn_wg(d, d, d, d, NULL, 4, 64, D, WIN, 4, 0, dp, d, d, RD, 0, NULL, d, NULL, &e);
    int w3 = cuda_engine_attn_wg(d, d, d, d, NULL, 4, 64, D, 100, 128, 0, dp, d, d, RD, 0, NULL, d, NULL, &e);
    int w4 = cuda_engine_attn_wg(d, d, d, d, NULL, 4, 64, 256, WIN, 128, 0, dp, d, d, RD, 0, NULL, d, NULL, &e);
    int w5 = cuda_engine_attn_wg(d, d, d, d, NULL, 4, 64, D, WIN, 128, 0, dp, d, d, RD, 0, d, d, NULL, &e);
    int w6 = cuda_engine_attn_wg(d, d, d, d, NULL, 0, 64, D, WIN, 128, 0, dp, d, d, RD, 0, NULL, d, NULL, &e);
    int w7 = cuda_engine_attn_wg(d, d, d, d, NULL, 4, 64, D, WIN, 4, 512, dp, d, d, RD, 0, d, d, NULL, &e);
    tap(w1 == CTX_EUNSUPPORTED && w2 == CTX_EINVAL && w3 == CTX_EUNSUPPORTED && w4 == CTX_EUNSUPPORTED &&
            w5 == CTX_EINVAL && w6 == CTX_EINVAL && w7 == CTX_EINVAL,
        "wgmma: 16 heads (%d), window 100 (%d), head_dim 256 (%d) unsupported; CSA with k 0 (%d), a bf16 cache of 0 "
        "entries for HCA (%d), 0 queries (%d), for CSA (%d) invalid", w1, w3, w4, w2, w5, w6, w7);
    float *s = d;
    int d1 = cuda_engine_attn_dtc(d, d, d, d, NULL, 4, 64, 256, WIN, 0, 0, dp, d, d, RD, s, d, NULL, &e);
    int d2 = cuda_engine_attn_dtc(d, d, d, d, NULL, 9, 64, D, WIN, 0, 0, dp, d, d, RD, s, d, NULL, &e);
    int d3 = cuda_engine_attn_dtc(d, d, d, d, NULL, 4, 64, D, WIN, 4, 0, dp, d, d, RD, s, d, NULL, &e);
    tap(d1 == CTX_EUNSUPPORTED && d2 == CTX_EINVAL && d3 == CTX_EINVAL && cuda_engine_attn_dtc_scratch(8, 64, D) ==
                                                                             sizeof(float) * 8 * 64 * 32 * (D + 2),
        "decode runs: head_dim 256 unsupported (%d); 9 queries (%d), CSA with k 0 (%d) invalid; scratch of 8 x 64 "
        "heads %zu bytes", d1, d2, d3, cuda_engine_attn_dtc_scratch(8, 64, D));
    cuda_free(d);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (cuda_device_count() < 1) {
        printf("1..0 # SKIP no CUDA device\n");
        return 0;
    }
    inf_cpu_set_simd(2); /* the CPU engine's own SIMD dot products */
    static const struct acase cases[] = {
        {"window only, first tokens (empty slots)", 40, 64, 0, 0, 0, 1.f, 0.0},
        {"window from ring and chunk", 24, 64, 0, 0, 1000, 1.f, 0.0},
        {"CSA k 2048 at 40K, peaked", 6, 64, 4, 2048, 40000, 4.f, 0.1},
        {"CSA early: selections short of k (empty blocks)", 16, 64, 4, 512, 100, 1.f, 0.0},
        {"HCA at 500K (4034 entries)", 4, 64, 128, 0, 499990, 2.f, 0.0},
        {"16 heads, CSA k 256", 12, 16, 4, 256, 3000, 1.f, 0.3},
        {"4 heads, window only", 20, 4, 0, 0, 50, 3.f, 0.0},
        {"128 heads (two blocks), HCA", 3, 128, 128, 0, 20000, 1.f, 0.0},
        {"HCA chunk of 40 at 60K (window and cache blocks, the last partial)", 40, 64, 128, 0, 60000, 2.f, 0.0},
        {"HCA from position 0 (empty window slots, 0-2 cache entries)", 300, 64, 128, 0, 0, 1.f, 0.0},
    };
    /* CTX_ATTN_QUICK=1: the wgmma kernel on the window-from-ring, CSA-early and HCA-chunk cases only (for
     * compute-sanitizer's memcheck and racecheck, which run it slowly) */
    const char *quick = getenv("CTX_ATTN_QUICK");
    if (quick && quick[0] == '1') {
        run_case(&cases[1], 2);
        run_case(&cases[3], 2);
        run_case(&cases[8], 2);
        printf("1..%d\n", n_test);
        return n_fail ? 1 : 0;
    }
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        run_case(&cases[i], 0);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        run_case(&cases[i], 1);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        run_case(&cases[i], 2);
    test_errors();
    printf("1..%d\n", n_test);
    return n_fail ? 1 : 0;
}
