/* The indexer's scores on the GPU (cuda_engine_idx_scores: the tensor-core kernels, k_idx_score_tc2 for
 * prefill chunks and k_idx_score_tc1 for fewer than 4 queries (decode), the one-thread-per-entry
 * kernel, and k_idx_score_tc, the bf16 kernel tc2 replaced: mode 3) against a host reference that is
 * the CPU engine's own arithmetic (inference/model.c idx_task: inf_cpu_dot, bf16 roundings, heads added in order).
 * Plain TAP (the GPU machine has no cmocka); "1..0 # SKIP" without a device (the suite's convention).
 *
 * What is asserted, and why (kernels/engine.cu, k_idx_score_tc): queries and keys are FP4-QDQ'd
 * (e2m1 codes times a power-of-two scale per 32 dims), so every product is exact, a 32-dim block's
 * products are multiples of its grain G_b = (grain of its q values) * (grain of its k values) and the
 * tensor core sums a block exactly. The GPU then adds the block partials in fp32, the CPU sums the
 * same products in its own (SIMD-strided) order: both are the exact dot product, hence bit-identical
 * scores, whenever every partial sum is representable in fp32, which holds when
 *     B = sum_b 32 * max|q_b| * max|k_b|  <=  2^24 * min_b G_b            (the "exact" condition)
 * for every head of the entry. Entries meeting it for all heads must be bit-identical (both kernels);
 * the others (only in the "block scales" cases, whose 32-dim blocks get scales up to 2^20 apart,
 * which a Hadamard never produces) must be within sum_h 2^-6 |w_h| B_h * 1.1 + 2^-7 |score| (a bf16 flip
 * of each head's dot and of the result). Entries beyond a query's (pos + 1) / 4 must not be
 * written, also when the grid is sized for more entries than the position has (a decode step's grid
 * comes from max_ctx: cases with max_n > n). The engine's tensor-core kernels (mode 2) must moreover give
 * k_idx_score_tc's bits on every entry, the exact ones and the others (they share its fragments, block
 * partials and roundings). Cases with a `sample` compute the host reference on every sample-th entry
 * only (a 2048-query chunk over 130K entries: too many dot products for the host), the GPU kernels are
 * compared with each other everywhere. Environment: CTX_IDX_QUICK set runs the small cases only
 * (n <= 3000; for memcheck). */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/kernels.h"
#include "cuda_engine.h"
#include "gemm.h"
#define TEST_RNG_SEED 0x9e3779b97f4a7c15ull
#include "tap.h"




/* A row of di values as the engine makes them: Hadamard (bf16) then FP4 QDQ per 32; `wide` > 0 scales
 * each 32-dim block by 2^-wide..2^wide before the QDQ (outside what a Hadamard gives: the bound). */
static void make_row(float *x, int di, int wide)
{
    for (int i = 0; i < di; i++)
        x[i] = (float)gauss();
    inf_cpu_hadamard(x, di);
    if (wide)
        for (int b = 0; b < di / 32; b++) {
            float sc = ldexpf(1.0f, (int)(uniform() * (2 * wide + 1)) - wide);
            for (int i = 0; i < 32; i++)
                x[b * 32 + i] *= sc;
        }
    inf_cpu_fp4_qdq(x, di, 32);
}

/* The largest power of two dividing every nonzero value of x[0..32) (0 when all are zero), and the
 * largest magnitude. */
static void block_grain(const float *x, double *grain, double *amax)
{
    double g = 0, m = 0;
    for (int i = 0; i < 32; i++) {
        double v = fabs((double)x[i]);
        if (v > m)
            m = v;
        if (v == 0)
            continue;
        int ex;
        double f = frexp(v, &ex); /* v = f * 2^ex, f in [0.5, 1): strip the significand's trailing zeros */
        long long mant = (long long)ldexp(f, 53);
        int tz = 0;
        while (!(mant & 1)) {
            mant >>= 1;
            tz++;
        }
        double lb = ldexp(1.0, ex - 53 + tz);
        if (g == 0 || lb < g)
            g = lb;
    }
    *grain = g;
    *amax = m;
}

struct icase {
    const char *name;
    int S, Hi, di;
    long long n; /* entries of the last query */
    int wide;
    long long max_n; /* the grid's entries (0: n); a decode step passes max_ctx / 4 */
    int sample;      /* > 0: the host reference on entries with (i + s) % sample == 0 only */
};

static void run_case(const struct icase *c)
{
    int S = c->S, Hi = c->Hi, di = c->di, nb = di / 32;
    long long n = c->n, pos0 = 4 * n - S, max_n = c->max_n > n ? c->max_n : n; /* the last query (pos0 + S - 1) sees (pos0 + S) / 4 = n entries */
    size_t ld = (size_t)n + 37;
    float *q = malloc(sizeof(float) * (size_t)S * Hi * di), *w = malloc(sizeof(float) * (size_t)S * Hi);
    float *k = malloc(sizeof(float) * (size_t)n * di);
    float *ref = malloc(sizeof(float) * (size_t)S * ld), *tol = malloc(sizeof(float) * (size_t)S * ld);
    float *got = malloc(sizeof(float) * (size_t)S * ld), *old = malloc(sizeof(float) * (size_t)S * ld);
    double *qg = malloc(sizeof(double) * (size_t)S * Hi * nb), *qm = malloc(sizeof(double) * (size_t)S * Hi * nb);
    double *kg = malloc(sizeof(double) * (size_t)n * nb), *km = malloc(sizeof(double) * (size_t)n * nb);
    unsigned char *exact = malloc((size_t)S * ld);
    float *d_q = NULL, *d_w = NULL, *d_k = NULL, *d_sc = NULL;
    int8_t *d_q8 = NULL, *d_k8 = NULL;
    uint32_t *d_qx = NULL, *d_kx = NULL;
    long long *d_pos = NULL;
    struct ctx_err e = {0};
    if (!q || !w || !k || !ref || !tol || !got || !old || !qg || !qm || !kg || !km || !exact) {
        tap(0, "%s: out of host memory", c->name);
        goto done;
    }
    float wscale = (float)(pow((double)di, -0.5) * pow((double)Hi, -0.5));
    for (int s = 0; s < S; s++)
        for (int h = 0; h < Hi; h++) {
            float *qr = q + ((size_t)s * Hi + h) * di;
            make_row(qr, di, c->wide);
            for (int b = 0; b < nb; b++)
                block_grain(qr + b * 32, &qg[((size_t)s * Hi + h) * nb + b], &qm[((size_t)s * Hi + h) * nb + b]);
            w[(size_t)s * Hi + h] = inf_cpu_bf16((float)gauss() * wscale);
        }
    for (long long i = 0; i < n; i++) {
        make_row(k + (size_t)i * di, di, c->wide);
        for (int b = 0; b < nb; b++)
            block_grain(k + (size_t)i * di + b * 32, &kg[(size_t)i * nb + b], &km[(size_t)i * nb + b]);
    }
    /* the reference: idx_task's loop, plus each entry's condition and bound */
    long long n_exact = 0, n_all = 0;
    for (int s = 0; s < S; s++) {
        long long nv = (pos0 + s + 1) / 4;
        for (long long i = 0; i < nv; i++) {
            if (c->sample > 0 && (i + s) % c->sample) {
                exact[(size_t)s * ld + i] = 2; /* no host reference */
                continue;
            }
            const float *key = k + (size_t)i * di;
            float sum = 0.f;
            double slack = 0;
            int ex = 1;
            for (int h = 0; h < Hi; h++) {
                const float *qh = q + ((size_t)s * Hi + h) * di;
                float dot = inf_cpu_bf16(inf_cpu_dot(qh, key, di));
                if (dot < 0.f)
                    dot = 0.f;
                sum += inf_cpu_bf16(dot * w[(size_t)s * Hi + h]);
                double B = 0, G = 0;
                for (int b = 0; b < nb; b++) {
                    size_t qb = ((size_t)s * Hi + h) * nb + b, kb = (size_t)i * nb + b;
                    B += 32.0 * qm[qb] * km[kb];
                    if (qg[qb] > 0 && kg[kb] > 0 && (G == 0 || qg[qb] * kg[kb] < G))
                        G = qg[qb] * kg[kb];
                }
                if (B > 0x1p24 * G)
                    ex = 0;
                slack += 0x1p-6 * fabs((double)w[(size_t)s * Hi + h]) * B;
            }
            float r = inf_cpu_bf16(sum);
            ref[(size_t)s * ld + i] = r;
            exact[(size_t)s * ld + i] = (unsigned char)ex;
            tol[(size_t)s * ld + i] = (float)(1.1 * slack + 0x1p-7 * (fabs((double)r) + 1.1 * slack));
            n_exact += ex;
            n_all++;
        }
    }
    int ok = !cuda_malloc((void **)&d_q, sizeof(float) * (size_t)S * Hi * di, &e) &&
             !cuda_malloc((void **)&d_w, sizeof(float) * (size_t)S * Hi, &e) &&
             !cuda_malloc((void **)&d_k, sizeof(float) * (size_t)n * di, &e) &&
             !cuda_malloc((void **)&d_sc, sizeof(float) * (size_t)S * ld, &e) &&
             !cuda_malloc((void **)&d_pos, sizeof(long long), &e) &&
             !cuda_h2d(d_q, q, sizeof(float) * (size_t)S * Hi * di, &e) &&
             !cuda_h2d(d_w, w, sizeof(float) * (size_t)S * Hi, &e) &&
             !cuda_h2d(d_k, k, sizeof(float) * (size_t)n * di, &e) && !cuda_h2d(d_pos, &pos0, sizeof pos0, &e) &&
             !cuda_malloc((void **)&d_q8, (size_t)S * Hi * di, &e) &&
             !cuda_malloc((void **)&d_qx, sizeof(uint32_t) * (size_t)S * Hi, &e) &&
             !cuda_malloc((void **)&d_k8, (size_t)n * di, &e) &&
             !cuda_malloc((void **)&d_kx, sizeof(uint32_t) * (size_t)n, &e) &&
             !cuda_engine_idx_pack(d_q, (long long)S * Hi, di, 0, d_q8, d_qx, NULL, &e) &&
             !cuda_engine_idx_pack(d_k, n, di, 0, d_k8, d_kx, NULL, &e);
    if (!ok) {
        tap(0, "%s: device setup: %s", c->name, e.msg);
        goto done;
    }
    /* mode 3 (k_idx_score_tc) before 2, which is compared with it; "mode" 4: k_idx_score_i8 on the packed
     * queries and keys, compared with mode 2; "mode" 5: k_idx_score_i8e, and 6: k_idx_score_iwg (the engine's
     * kernel for chunks of 16+ queries where it takes the shape: di 128, 16 / 32 / 64 heads; i8e elsewhere),
     * which must give mode 4's bits on every entry (for fewer than 4 queries all three are k_idx_score_i8d) */
    static const int modes[6] = {1, 3, 2, 4, 5, 6};
    static const char *const mname[7] = {"", "scalar", "tensor cores", "bf16 reference kernel (k_idx_score_tc)",
                                         "integer tensor cores (k_idx_score_i8)",
                                         "integer tensor cores, entries on the rows (k_idx_score_i8e)",
                                         "integer warpgroup MMA (k_idx_score_iwg; i8e where it does not take the shape)"};
    for (int mi = 0; mi < 6; mi++) {
        int mode = modes[mi];
        cuda_engine_idx_i8e_mode(mode >= 5 ? 2 : 0); /* 2: for any S >= 4 */
        cuda_engine_idx_wg_mode(mode == 6 ? 2 : 0);
        ok = !cuda_memset(d_sc, 0xff, sizeof(float) * (size_t)S * ld, &e) &&
             !(mode >= 4 ? cuda_engine_idx_scores_i8(d_q8, d_qx, d_w, d_k8, d_kx, S, Hi, di, d_pos, max_n, d_sc, ld,
                                                     NULL, &e)
                         : cuda_engine_idx_scores(d_q, d_w, d_k, S, Hi, di, d_pos, max_n, d_sc, ld, mode, NULL, &e)) &&
             !cuda_sync(&e) &&
             !cuda_d2h(got, d_sc, sizeof(float) * (size_t)S * ld, &e);
        cuda_engine_idx_i8e_mode(-1);
        cuda_engine_idx_wg_mode(-1);
        if (!ok) {
            tap(0, "%s %s: %s", c->name, mname[mode], e.msg);
            continue;
        }
        long long bit_ex = 0, bad_ex = 0, bad_tol = 0, touched = 0, bit_all = 0, diff_old = 0, diff_ex = 0;
        double worst = 0;
        for (int s = 0; s < S; s++) {
            long long nv = (pos0 + s + 1) / 4;
            for (long long i = 0; i < (long long)ld; i++) {
                size_t j = (size_t)s * ld + (size_t)i;
                uint32_t gb, rb;
                memcpy(&gb, &got[j], 4);
                if (i >= nv) {
                    touched += gb != 0xffffffffu;
                    continue;
                }
                if (mode == 2 || mode >= 4) {
                    uint32_t ob;
                    memcpy(&ob, &old[j], 4);
                    int d = gb != ob && !(got[j] == 0.f && old[j] == 0.f);
                    diff_old += d;
                    diff_ex += d && exact[j] == 1;
                }
                if (exact[j] == 2)
                    continue;
                memcpy(&rb, &ref[j], 4);
                int same = gb == rb || (got[j] == 0.f && ref[j] == 0.f);
                bit_all += same;
                if (exact[j]) {
                    bit_ex += same;
                    bad_ex += !same;
                } else {
                    double d = fabs((double)got[j] - (double)ref[j]);
                    if (!(d <= tol[j]))
                        bad_tol++;
                    if (tol[j] > 0 && d / tol[j] > worst)
                        worst = d / tol[j];
                }
            }
        }
        tap(bad_ex == 0 && bad_tol == 0 && touched == 0 && (mode == 4 ? diff_ex == 0 : diff_old == 0),
            "%s %s: S %d, %d heads x %d dims, %lld entries (grid for %lld): %lld of %lld %s meet the exact condition, "
            "%lld of those bit-identical (%lld differ); the rest: %lld bit-identical of %lld, %lld beyond the bound "
            "(worst %.3g of it); %lld entries beyond a query's range written; %s",
            c->name, mname[mode], S, Hi, di, n, max_n, n_exact, n_all, c->sample > 0 ? "sampled entries" : "entries",
            bit_ex, bad_ex, bit_all - bit_ex, n_all - n_exact, bad_tol, worst, touched,
            mode == 2   ? (diff_old ? "DIFFERENT from k_idx_score_tc" : "every entry k_idx_score_tc's bits")
            : mode >= 5 ? (diff_old ? "DIFFERENT from k_idx_score_i8" : "every entry k_idx_score_i8's bits")
            : mode == 4 ? (diff_ex ? "DIFFERENT from tensor cores on exact entries"
                          : diff_old ? "tensor cores' bits on every exact entry (others differ)"
                                     : "every entry the tensor cores' bits")
                        : "");
        if (mode == 2 && diff_old)
            printf("# %lld entries differ from k_idx_score_tc\n", diff_old);
        if (mode == 4 && diff_old)
            printf("# %lld entries differ from the tensor cores (mode 2), %lld of them exact ones\n", diff_old, diff_ex);
        if (mode >= 5 && diff_old)
            printf("# %lld entries differ from k_idx_score_i8, %lld of them exact ones\n", diff_old, diff_ex);
        if (mode == 3 || mode == 2 || mode == 4)
            memcpy(old, got, sizeof(float) * (size_t)S * ld);
    }
done:
    cuda_free(d_q8);
    cuda_free(d_qx);
    cuda_free(d_k8);
    cuda_free(d_kx);
    cuda_free(d_q);
    cuda_free(d_w);
    cuda_free(d_k);
    cuda_free(d_sc);
    cuda_free(d_pos);
    free(q);
    free(w);
    free(k);
    free(ref);
    free(tol);
    free(got);
    free(old);
    free(qg);
    free(qm);
    free(kg);
    free(km);
    free(exact);
}

/* The 8-bit form (cuda_engine_idx_pack) read back on the host: value = q * 2^(byte b of x) for block b.
 * Rows on the FP4 grid must come back exactly, in the common form (four equal exponent bytes) when their
 * blocks' exponents allow it (kind 0: one scale for the whole row; kind 1: the engine's rows); kind 2:
 * blocks 2^-10..2^10 apart (per-block form, exact); kind 3: zero rows; kind 4: values off the grid
 * (random fp32): within half a unit of their block's exponent, |q| <= 127; kind 5: on the grid after
 * the device's own FP4 QDQ (qdq = 1): the host's QDQ of the same values exactly. */
static void test_pack(int di, int kind)
{
    enum { N = 300 };
    struct ctx_err e = {0};
    float *x = malloc(sizeof(float) * N * di), *xq = malloc(sizeof(float) * N * di);
    int8_t *q = malloc((size_t)N * di);
    uint32_t *qx = malloc(sizeof(uint32_t) * N);
    float *d_x = NULL;
    int8_t *d_q = NULL;
    uint32_t *d_qx = NULL;
    static const float e2m1[8] = {0.f, .5f, 1.f, 1.5f, 2.f, 3.f, 4.f, 6.f};
    for (int r = 0; r < N; r++) {
        float *row = x + (size_t)r * di;
        if (kind == 0) {
            float sc = ldexpf(1.0f, (int)(uniform() * 20) - 10);
            for (int i = 0; i < di; i++)
                row[i] = e2m1[(int)(uniform() * 8) & 7] * (uniform() < 0.5 ? -sc : sc);
        } else if (kind == 1 || kind == 2) {
            make_row(row, di, kind == 2 ? 10 : 0);
        } else if (kind == 3) {
            memset(row, 0, sizeof(float) * di);
        } else {
            for (int i = 0; i < di; i++)
                row[i] = (float)gauss() * (kind == 4 ? ldexpf(1.0f, (int)(uniform() * 8) - 4) : 1.0f);
        }
        memcpy(xq + (size_t)r * di, row, sizeof(float) * di);
        if (kind == 5)
            inf_cpu_fp4_qdq(xq + (size_t)r * di, di, 32);
    }
    int ok = x && xq && q && qx && !cuda_malloc((void **)&d_x, sizeof(float) * N * di, &e) &&
             !cuda_malloc((void **)&d_q, (size_t)N * di, &e) && !cuda_malloc((void **)&d_qx, sizeof(uint32_t) * N, &e) &&
             !cuda_h2d(d_x, x, sizeof(float) * N * di, &e) &&
             !cuda_engine_idx_pack(d_x, N, di, kind == 5, d_q, d_qx, NULL, &e) && !cuda_sync(&e) &&
             !cuda_d2h(q, d_q, (size_t)N * di, &e) && !cuda_d2h(qx, d_qx, sizeof(uint32_t) * N, &e) &&
             (kind != 5 || !cuda_d2h(x, d_x, sizeof(float) * N * di, &e));
    long long bad = 0, common = 0, qdq_bad = 0;
    for (int r = 0; ok && r < N; r++) {
        uint32_t w = qx[r];
        int com = 1;
        for (int b = 1; b < 4; b++)
            com &= ((w >> (8 * b)) & 255u) == (w & 255u);
        common += com;
        for (int i = 0; i < di; i++) {
            int E = (int)(int8_t)((w >> (8 * (i / 32))) & 255u);
            double v = (double)x[(size_t)r * di + i], rec = ldexp((double)q[(size_t)r * di + i], E);
            if (kind == 4 ? !(fabs(v - rec) <= ldexp(0.5, E) && q[(size_t)r * di + i] >= -127) : rec != v)
                bad++;
            if (kind == 5 && x[(size_t)r * di + i] != xq[(size_t)r * di + i])
                qdq_bad++;
        }
    }
    static const char *const kinds[6] = {"one scale a row", "Hadamard + FP4 QDQ", "blocks 2^-10..2^10 apart",
                                         "zero rows", "off the FP4 grid", "QDQ'd on the device"};
    int want_common = kind == 0 || kind == 3 ? N : kind == 2 ? -1 : 0;
    tap(ok && !bad && !qdq_bad && (want_common < 0 || kind == 1 || kind >= 4 || common == want_common),
        "8-bit form, %d dims, %s: %d rows, %lld values off their reconstruction%s, %lld rows in the common form, "
        "%lld values unlike the host's QDQ%s%s", di, kinds[kind], N, bad, kind == 4 ? " by more than half a unit" : "",
        common, qdq_bad, ok ? "" : ": ", ok ? "" : e.msg);
    cuda_free(d_x);
    cuda_free(d_q);
    cuda_free(d_qx);
    free(x);
    free(xq);
    free(q);
    free(qx);
}

/* ---- host checks (no device needed; scripts/test runs them in CI) ----
 *
 * A host model of the integer kernels' numerics (kernels/engine.cu, warp_i8_pack and k_idx_score_i8): the
 * same packing rules in C, applied to rows made as the engine makes them, and the scaling trick. */

/* The exponent of the lowest set bit of |v| (v = odd * 2^result); INT32_MAX for 0. */
static int h_lowexp(float v)
{
    if (v == 0.f)
        return INT32_MAX;
    int ex;
    double f = frexp(fabs((double)v), &ex); /* |v| = f 2^ex, f in [0.5, 1) */
    long long m = (long long)ldexp(f, 53);
    int tz = 0;
    while (!(m & 1)) {
        m >>= 1;
        tz++;
    }
    return ex - 53 + tz;
}

/* warp_i8_pack's rules on a row of di FP4-QDQ'd values: common form (one exponent, the smallest
 * lowest-bit exponent of the row) when every value is then an integer of magnitude <= 127, else one
 * exponent a block. Returns 1 for the common form; q and E[4] out; -1 if some value is not exact. */
static int h_pack(const float *x, int di, int8_t *q, int *E)
{
    int nb = di / 32, lo[4], Lc = INT32_MAX;
    for (int b = 0; b < nb; b++) {
        lo[b] = INT32_MAX;
        for (int i = 0; i < 32; i++) {
            int l = h_lowexp(x[32 * b + i]);
            lo[b] = l < lo[b] ? l : lo[b];
        }
        Lc = lo[b] < Lc ? lo[b] : Lc;
    }
    if (Lc == INT32_MAX)
        Lc = 0;
    int common = 1;
    for (int i = 0; i < di && common; i++)
        common = fabs(ldexp((double)x[i], -Lc)) <= 127.0;
    for (int b = 0; b < nb; b++)
        E[b] = common || lo[b] == INT32_MAX ? Lc : lo[b];
    for (int i = 0; i < di; i++) {
        double v = ldexp((double)x[i], -E[i / 32]);
        if (v != floor(v) || fabs(v) > 127.0)
            return -1;
        q[i] = (int8_t)v;
    }
    return common;
}

/* The accumulator's bits read as a float are 1.5 * 2^23 + c for |c| < 2^22, and
 * fma(that, 2^E, -1.5 * 2^23 * 2^E) = c * 2^E exactly: every c a common-form dot can reach
 * (|c| <= 128 * 127^2 < 2^21) at exponents from tiny to large. */
static void test_host_scaling(void)
{
    static const int Es[] = {-126, -60, -13, -1, 0, 1, 7, 40, 100};
    long long bad = 0, n = 0;
    const int cmax = 128 * 127 * 127;
    for (size_t k = 0; k < sizeof Es / sizeof Es[0]; k++) {
        float sq = ldexpf(1.0f, Es[k]), nq = -12582912.0f * sq;
        for (int c = -cmax; c <= cmax; c += (k & 1) ? 1 : 7) {
            uint32_t bits = 0x4B400000u + (uint32_t)c;
            float f;
            memcpy(&f, &bits, 4);
            float got = fmaf(f, sq, nq), want = ldexpf((float)c, Es[k]);
            bad += got != want;
            n++;
        }
    }
    tap(bad == 0 && cmax < (1 << 22),
        "host: the accumulator trick, fma(bits(0x4B400000 + c), 2^E, -1.5 2^23 2^E) = c 2^E on %lld (c, E) pairs, "
        "|c| <= 128 * 127^2 = %d < 2^22: %lld wrong", n, cmax, bad);
}

/* Rows as the engine makes them (Hadamard + FP4 QDQ, make_row): every one packs exactly; the share in
 * common form (the fast path needs every head of a warp and all 64 entries of a tile in it) is printed and
 * must be nearly all; rows with blocks 2^-10..2^10 apart pack exactly per block. And a common-form dot
 * from the integers (one accumulator, one scale) equals the exact dot product. */
static void test_host_pack(void)
{
    enum { N = 4000, DI = 128 };
    static float x[N][DI];
    static int8_t q[N][DI];
    int E[N][4], form[N];
    long long bad = 0, common = 0, tiles = 0, tiles_common = 0, wide_exact = 0, wide_common = 0;
    for (int r = 0; r < N; r++) {
        make_row(x[r], DI, 0);
        form[r] = h_pack(x[r], DI, q[r], E[r]);
        bad += form[r] < 0;
        common += form[r] == 1;
    }
    for (int t = 0; t + 64 <= N; t += 64) {
        int all = 1;
        for (int r = t; r < t + 64; r++)
            all &= form[r] == 1;
        tiles++;
        tiles_common += all;
    }
    long long dot_bad = 0, dots = 0;
    for (int r = 0; r + 1 < N; r += 2) {
        if (form[r] != 1 || form[r + 1] != 1)
            continue;
        long long c = 0;
        double exact = 0;
        for (int i = 0; i < DI; i++) {
            c += (long long)q[r][i] * q[r + 1][i];
            exact += (double)x[r][i] * (double)x[r + 1][i]; /* exact: products of FP4 values, 128 of them */
        }
        dot_bad += ldexp((double)c, E[r][0] + E[r + 1][0]) != exact || llabs(c) >= (1 << 22);
        dots++;
    }
    for (int r = 0; r < 500; r++) {
        float w[DI];
        int8_t qw[DI];
        int Ew[4];
        make_row(w, DI, 10);
        int f = h_pack(w, DI, qw, Ew);
        wide_exact += f >= 0;
        wide_common += f == 1;
    }
    printf("# host: Hadamard + FP4 QDQ rows: %lld of %d in common form (%.3f%%), %lld of %lld 64-row tiles all "
           "common; rows with blocks 2^-10..2^10 apart: %lld of 500 exact, %lld common\n",
           common, N, 100.0 * (double)common / N, tiles_common, tiles, wide_exact, wide_common);
    tap(bad == 0 && common * 1000 >= 999LL * N && dot_bad == 0 && wide_exact == 500,
        "host: 8-bit form of %d Hadamard + QDQ rows exact (%lld not), %.2f%% common; %lld common-form dots from "
        "one integer accumulator equal the exact dot (%lld not); 500 rows of spread blocks exact per block", N, bad,
        100.0 * (double)common / N, dots, dot_bad);
}

static void test_errors(void)
{
    struct ctx_err e = {0};
    long long *d_pos = NULL;
    float *d = NULL;
    if (cuda_malloc((void **)&d_pos, sizeof(long long), &e) || cuda_malloc((void **)&d, 4096, &e)) {
        tap(0, "errors: device setup: %s", e.msg);
        return;
    }
    int r1 = cuda_engine_idx_scores(d, d, d, 4, 65, 128, d_pos, 16, d, 16, 2, NULL, &e);
    int r2 = cuda_engine_idx_scores(d, d, d, 4, 64, 256, d_pos, 16, d, 16, 2, NULL, &e);
    int r3 = cuda_engine_idx_scores(d, d, d, 0, 64, 128, d_pos, 16, d, 16, 0, NULL, &e);
    int r4 = cuda_engine_idx_scores(d, d, d, 4, 64, 128, d_pos, 16, d, 16, 4, NULL, &e);
    tap(r1 == CTX_EUNSUPPORTED && r2 == CTX_EUNSUPPORTED && r3 == CTX_EINVAL && r4 == CTX_EINVAL,
        "tensor cores refuse 65 heads (%d) and 256 dims (%d); 0 queries (%d) and mode 4 (%d) are invalid", r1, r2, r3,
        r4);
    int8_t *d8 = (int8_t *)d;
    uint32_t *dx = (uint32_t *)d;
    int i1 = cuda_engine_idx_scores_i8(d8, dx, d, d8, dx, 4, 65, 128, d_pos, 16, d, 16, NULL, &e);
    int i2 = cuda_engine_idx_scores_i8(d8, dx, d, d8, dx, 4, 64, 256, d_pos, 16, d, 16, NULL, &e);
    int i3 = cuda_engine_idx_scores_i8(d8, dx, d, d8, dx, 0, 64, 128, d_pos, 16, d, 16, NULL, &e);
    int i4 = cuda_engine_idx_pack(d, 4, 48, 0, d8, dx, NULL, &e);
    int i5 = cuda_engine_idx_pack(d, -1, 128, 0, d8, dx, NULL, &e);
    tap(i1 == CTX_EUNSUPPORTED && i2 == CTX_EUNSUPPORTED && i3 == CTX_EINVAL && i4 == CTX_EINVAL && i5 == CTX_EINVAL,
        "integer kernel refuses 65 heads (%d) and 256 dims (%d), 0 queries (%d); the 8-bit form refuses 48 dims (%d) "
        "and -1 rows (%d)", i1, i2, i3, i4, i5);
    cuda_free(d_pos);
    cuda_free(d);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    test_host_scaling();
    test_host_pack();
    if (cuda_device_count() < 1) {
        printf("# no CUDA device: the device cases are skipped\n1..%d\n", n_test);
        return n_fail ? 1 : 0;
    }
    inf_cpu_set_simd(2); /* the CPU engine's own SIMD path for inf_cpu_dot (its strided fp32 sums) */
    static const struct icase cases[] = {
        {"fixture shape", 5, 4, 128, 1000, 0, 0, 0},
        {"V4 shape, partial query block", 37, 64, 128, 3000, 0, 0, 0},
        {"20 heads x 64", 16, 20, 64, 2061, 0, 0, 0},
        {"48 heads x 32", 9, 48, 32, 777, 0, 0, 0},
        {"33 heads", 11, 33, 128, 1500, 0, 0, 0},
        {"V4 shape, 64 queries", 64, 64, 128, 20000, 0, 0, 0},
        {"V4 shape, 500K context", 8, 64, 128, 130000, 0, 0, 0},
        {"block scales 2^-10..2^10", 12, 64, 128, 5000, 10, 0, 0},
        {"block scales 2^-10..2^10, 16 heads", 7, 16, 128, 4000, 10, 0, 0},
        {"block scales 2^-6..2^6, 4 heads", 9, 4, 128, 3000, 6, 0, 0},
        /* fewer than 4 queries: k_idx_score_tc1 (decode), grids sized for more entries than there are */
        {"decode, V4 shape, 500K context", 1, 64, 128, 125000, 0, 125000, 0},
        {"decode, V4 shape, early position of a 500K grid", 1, 64, 128, 2989, 0, 125000, 0},
        {"decode, 3 queries", 3, 64, 128, 2500, 0, 40000, 0},
        {"decode, fixture shape", 1, 4, 128, 1000, 0, 2048, 0},
        {"decode, 2 queries of 48 heads x 64", 2, 48, 64, 2061, 0, 0, 0},
        {"decode, 20 heads x 32", 1, 20, 32, 777, 0, 3000, 0},
        {"decode, one entry", 1, 64, 128, 1, 0, 125000, 0},
        {"decode, block scales 2^-10..2^10", 1, 64, 128, 3000, 10, 30000, 0},
        /* prefill chunks of the engine's sizes (k_idx_score_tc2's grid: query groups x runs of tiles); the
         * host reference on a sample, the kernels compared with each other on every entry */
        {"V4 shape, 2046 queries (partial group)", 2046, 64, 128, 20000, 0, 0, 97},
        {"32 heads, 1000 queries of 8 a block", 1000, 32, 128, 9000, 0, 0, 13},
        {"V4 shape, a 2048-token chunk at 130K (sampled reference)", 2048, 64, 128, 130000, 0, 0, 4099},
        {"V4 shape, 512 queries, block scales 2^-10..2^10", 512, 64, 128, 6000, 10, 0, 7},
        {"V4 shape, 4 queries, grid for more entries", 4, 64, 128, 2500, 0, 70000, 0},
    };
    const char *quick = getenv("CTX_IDX_QUICK"); /* set: the small cases only (for compute-sanitizer) */
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (!quick || cases[i].n <= 3000)
            run_case(&cases[i]);
    for (int di = 32; di <= 128; di *= 2)
        for (int kind = 0; kind < 6; kind++)
            test_pack(di, kind);
    test_errors();
    printf("1..%d\n", n_test);
    return n_fail ? 1 : 0;
}
