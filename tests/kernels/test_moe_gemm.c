/* The prefill path of the routed experts (kernels/moe_gemm.h) against kernels/ref.c and against the
 * decode kernel cuda_fp4_gemv_grouped on the same pairs. Plain TAP like test_gemm.c: "1..0 # SKIP"
 * without a CUDA device (CI builds it, the GPU machine runs it).
 *
 * What must hold, and why:
 * - bucketing: counts, offsets, the permutation (by expert, then pair order) and the tile table equal
 *   a host counting sort exactly, from both bucketing forms (blocks of 1024 pairs, one block an expert);
 * - products: each output within ulp_bf16(ref) + EPS * mag of the reference (EPS = 2^-15, test_gemm's
 *   bound: exact 32-K partials rounded once, fp32 sums of at most 224 scaled partials), for every pair
 *   of every case; the decode kernel on the same pairs within the same bound, and the two within the
 *   sum of their bounds of each other (they add the same partials in different orders); the share of
 *   outputs bit-equal to the decode kernel is printed;
 * - determinism: a second run gives the same bytes; every pair's row is written (y starts as NaN);
 * - kernels: V2 (skipped empty pair blocks, acc / a accumulated by fma) gives exactly the bytes of the
 *   first one (V1), which is bit-equal to bf16(ref) on every output measured so far; the "extreme"
 *   cases put weight scales and activation scales outside V2's exact range on some rows, blocks and
 *   pairs, so that warps switch to V1's arithmetic mid-K;
 * - the default kernel V3 (a stage's 4 k32 mmas chained in the tensor core's fp32 accumulator on
 *   weights converted exactly to e4m3 at one exponent per row and stage, the stage partial scaled
 *   once) is not bit-equal to V1/V2 but must be within a bound of the exact result (double sums of the
 *   exact products): each output is bf16(s) with s the exact sum after at most K/32 accumulator steps
 *   of the tensor core (2^-23 of the running magnitude each: one rounding, or a truncation) and K/32
 *   fp32 roundings of 2^-24 on the CUDA cores (the fallback's per-block adds; the chained path has
 *   K/128), each bounded by the running sum of |terms| <= mag, so
 *       |y - exact| <= ulp_bf16(|exact| + D) / 2 + D,   D = (3 K / 32 + 2) 2^-24 mag
 *   (2^-15.4 mag at K = 4096; a wrong scale on one 32-K block moves a result by ~mag / (K/32));
 *   deterministic; the guard: rows whose sub-block scales spread exactly 14 below their 128-K
 *   block's max are exact on the chained path (the sub-block's 0.5s become e4m3's smallest
 *   subnormal; the other sub-blocks of half the rows are zeros, so that sub-block is the output),
 *   with no stage falling back (cuda_moe_v3_fallback_stages), and a spread of 15 makes every
 *   stage fall back and gives V2's bytes; the extreme cases mix fallback and chained stages;
 * - V4 (both operands converted once per stage to f16 in shared memory, native mma m16n8k16 f16):
 *   the same bound and checks as V3 on every case, its guard at 26 (spread 26: exact on the fast
 *   path, the 0.5s become f16's smallest normal 2^-14; 27: every stage falls back, V2's bytes), the
 *   share bit-equal to V3 printed; cuda_moe_gemm gives the bytes of the kernel it says it runs
 *   (CTX_CUDA_MOE_GEMM, else V6 at every size), and at 3072 and 12288 pairs (V4-Flash's w2 at S = 512
 *   and 2048) it runs V6 (scales that make every stage of V3 and none of V4-V6 fall back, so the
 *   fallback counters of its run name the kernel); on the host (CI):
 *   V4's conversion of every e2m1 byte at every shift and its shared-memory layout and ldmatrix
 *   fragments against the PTX ISA's m16n8k16 layout, the environment parse and the default.
 * - V5 (V4 on wgmma: the f16 tiles in the canonical no-swizzle K-major layout, 8 wgmma m64nNk16 a
 *   stage): the same bound, V4's guard (its fallback count equals V4's on every case; spread 27: every
 *   stage falls back, V2's bytes), the share bit-equal to V4 printed (100% on the H200), a second run
 *   byte-equal; on the host, its layout against the descriptors' canonical layout and its store
 *   phases for bank conflicts.
 * - V6 (V5 with each warp's weights converted straight into wgmma's A fragments, the stage's K
 *   permuted): the same bound, V4's guard (fallback counts equal; spread 27: every stage falls back,
 *   V2's bytes), the share equal to V5 printed, a second run byte-equal; on the host, the K order
 *   (a bijection, and the fragment and activation-store mappings the kernel uses) and one CTA's data
 *   flow modelled with the kernel's index expressions (A fragments, activation stores, the
 *   descriptors' layout, wgmma's fragments) against the exact sums.
 * - V7 (FP8 wgmma: weights into e4m3 A fragments in registers, activations read from the ring through
 *   the 128-byte swizzle): within EPS7 of the exact sums (the FP8 tensor core's narrower accumulator),
 *   deterministic, two CTAs an SM; its guard at 12 (spread 12: no warp falls back; 13 and more, every
 *   warp of every stage does and the result is V2's bytes; the extreme cases: some do); on the host,
 *   its A fragments (cuda_moe7_pick + cuda_moe7_convert at every LUT shift) and the ring's swizzle.
 * - V8 (V7 over CTAs of up to 128 pairs): V7's bytes on every case, falling back where V7 does (cases
 *   with 75 to 150 pairs an expert among them), one CTA an SM.
 * - V9 (V8 with a producer warpgroup converting into shared memory, both wgmma operands there): V7's
 *   bytes on every case, falling back where V7 does, one CTA of 384 threads an SM.
 * Routings: random distinct top-k over 256 and 384 experts, the engine's w1|w3 layout (2E table
 * entries, pairs [S*k, 2*S*k) naming id + E on a copy of the inputs), skewed ones (one hot expert and
 * most experts empty; every token on one expert), S = 1..4096. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gemm.h"
#include "moe_gemm.h"
#include "ref.h"
#define TEST_RNG_SEED 0x2545f4914f6cdd1dull
#include "tap.h"

#define EPS (1.0 / 32768.0)
/* V7 (FP8 wgmma): each 128-K stage summed by the FP8 tensor core's narrower accumulator (about 13
 * fraction bits a k32 step, 4 steps a stage) before its one fp32 scaling: test_gemm's EPS_LT, 2^-9 of
 * sum |w x| (2^-11 expected, 4x margin). */
#define EPS7 (1.0 / 512.0)




/* test_gemm's activations: per-block magnitudes 2^-12..2^6, zero blocks, tiny blocks, outliers. */
static void gen_act(uint16_t *x, int m, int k, int extreme)
{
    for (int i = 0; i < m; i++)
        for (int b = 0; b < k / 128; b++) {
            int kind = (int)(next_u64() % 16);
            double mag = ldexp(1.0, (int)(next_u64() % 19) - 12);
            if (extreme && next_u64() % 48 == 0) /* act scale ~2^24: a ~ 2^30, past the fast range (2^24) */
                kind = 3, mag = 0x1p30;
            for (int j = 0; j < 128; j++) {
                double v = kind == 0 ? 0.0 : kind == 1 ? gauss() * 1e-6 : gauss() * mag;
                if (kind == 2 && j == 17)
                    v = 300.0 * mag;
                x[(size_t)i * k + (size_t)b * 128 + j] = cuda_ref_f32_to_bf16((float)v);
            }
        }
}

static void must(int rc, struct ctx_err *e)
{
    if (rc) {
        fprintf(stderr, "# error: %s\n", e->msg);
        printf("Bail out! %s\n", e->msg);
        exit(1);
    }
}

static void *dev_copy(const void *h, size_t bytes)
{
    struct ctx_err e;
    void *d;
    must(cuda_malloc(&d, bytes, &e), &e);
    must(cuda_h2d(d, h, bytes, &e), &e);
    return d;
}

static double ulp_bf16(double v)
{
    v = fabs(v);
    if (v < 0x1p-126)
        return 0x1p-133;
    int e;
    frexp(v, &e);
    return ldexp(1.0, e - 1 - 7);
}

enum route { R_RANDOM, R_HOT, R_ONE };
static const char *route_name[] = {"random", "hot", "one"};

struct mcase {
    const char *what;
    int n, k, E, S, topk;
    enum route route;
    int style; /* 0: w1-like (x_group = topk), 1: w2-like (x_group 1), 2: the engine's w1|w3 (2E entries) */
    int extreme; /* scales outside moe_gemm2_kernel's fast range on some rows / blocks / pairs */
    int spread;  /* e.g. 14 or 15: in every row's 128-K block one sub-block's scale that far below the others */
    int want;    /* 3 or 6: cuda_moe_gemm must run V3 / V6 at this size (unless CTX_CUDA_MOE_GEMM forces one);
                  * needs 14 < spread <= 26 (V3 falls back on every stage, V4 on none) */
};

/* The token's top-k (distinct, as the router picks them). */
static void route_ids(int *ids, int S, int topk, int E, enum route r)
{
    for (int t = 0; t < S; t++)
        for (int j = 0; j < topk; j++) {
            int id, dup;
            do {
                if (r == R_ONE)
                    id = 7 % E;
                else if (r == R_HOT)
                    id = j == 0 ? 3 % E : (int)(next_u64() % (uint64_t)(E < 8 ? E : 8));
                else
                    id = (int)(next_u64() % (uint64_t)E);
                dup = 0;
                for (int i = 0; i < j; i++)
                    dup |= ids[t * topk + i] == id;
            } while (dup);
            ids[t * topk + j] = id;
        }
}

/* Host counting sort: what cuda_moe_bucket must produce. Returns the tile count. */
static int host_bucket(const int *ids, int npairs, int T, int *counts, int *offsets, int *perm, int *tiles)
{
    memset(counts, 0, sizeof *counts * T);
    for (int p = 0; p < npairs; p++)
        counts[ids[p]]++;
    offsets[0] = 0;
    for (int x = 0; x < T; x++)
        offsets[x + 1] = offsets[x] + counts[x];
    int *fill = calloc((size_t)T, sizeof *fill), nt = 0;
    for (int p = 0; p < npairs; p++)
        perm[offsets[ids[p]] + fill[ids[p]]++] = p;
    for (int x = 0; x < T; x++)
        for (int r = 0; r < counts[x]; r += CUDA_MOE_BM, nt++)
            tiles[2 * nt] = x, tiles[2 * nt + 1] = offsets[x] + r;
    free(fill);
    return nt;
}

/* kernels/ref.c's cuda_ref_fp4_gemv_grouped with the same arithmetic in the same order (so the same
 * bits: checked on the first case), organised by expert so that each weight row is decoded once for
 * all the pairs routed to it: the large cases would take minutes through ref.c. */
static void fast_ref(const uint8_t *q, const float *sa, int x_group, int npairs, const int *ids, int rows,
                     uint8_t *const *w, uint8_t *const *s, int T, int n, int k, float *y, double *mag, double *ex)
{
    const int k32 = k / 32, kb_n = k / 128;
    double *xd = malloc(sizeof *xd * (size_t)rows * k), *wd = malloc(sizeof *wd * k);
    float *wsc = malloc(sizeof *wsc * k32);
    for (size_t i = 0; i < (size_t)rows * k; i++)
        xd[i] = cuda_ref_e4m3(q[i]);
    int *counts = malloc(sizeof(int) * T), *offsets = malloc(sizeof(int) * (T + 1)), *perm = malloc(sizeof(int) * npairs);
    int *tiles = malloc(sizeof(int) * 2 * ((npairs + CUDA_MOE_BM - 1) / CUDA_MOE_BM + T));
    host_bucket(ids, npairs, T, counts, offsets, perm, tiles);
    for (int x = 0; x < T; x++) {
        if (!counts[x])
            continue;
        for (int j = 0; j < n; j++) {
            const uint8_t *wr = w[x] + (size_t)j * (k / 2);
            for (int t = 0; t < k; t++)
                wd[t] = cuda_ref_e2m1((t & 1) ? (uint8_t)(wr[t / 2] >> 4) : (uint8_t)(wr[t / 2] & 15));
            for (int b = 0; b < k32; b++)
                wsc[b] = cuda_ref_e8m0(s[x][(size_t)j * k32 + b]);
            for (int i = offsets[x]; i < offsets[x + 1]; i++) {
                const int p = perm[i];
                const double *xr = xd + (size_t)(p / x_group) * k;
                const float *xs = sa + (size_t)(p / x_group) * kb_n;
                float acc = 0.0f;
                double am = 0.0, ae = 0.0;
                for (int b = 0; b < k32; b++) {
                    double part = 0.0, pabs = 0.0;
                    for (int t = b * 32; t < b * 32 + 32; t++) {
                        double p2 = wd[t] * xr[t];
                        part += p2;
                        pabs += fabs(p2);
                    }
                    float as = xs[b / 4];
                    acc += ((float)part * as) * wsc[b];
                    am += pabs * as * wsc[b];
                    ae += part * as * wsc[b]; /* part: exact (at most 32 products of <= 7 bits, 2^-16 apart) */
                }
                y[(size_t)p * n + j] = acc;
                mag[(size_t)p * n + j] = am;
                ex[(size_t)p * n + j] = ae;
            }
        }
    }
    free(xd), free(wd), free(wsc), free(counts), free(offsets), free(perm), free(tiles);
}

static int checked_fast_ref;

static void run_case(const struct mcase *c)
{
    struct ctx_err e;
    const int E = c->E, S = c->S, topk = c->topk, n = c->n, k = c->k;
    const int T = c->style == 2 ? 2 * E : E;                          /* table entries */
    const int npairs = c->style == 2 ? 2 * S * topk : S * topk;
    const int rows = c->style == 1 ? npairs : c->style == 2 ? 2 * S : S; /* activation rows */
    const int x_group = c->style == 1 ? 1 : topk;
    /* expert weights: each entry its own random bytes and scales */
    uint8_t **w = malloc(sizeof *w * T), **s = malloc(sizeof *s * T);
    void **dw = malloc(sizeof *dw * T), **ds = malloc(sizeof *ds * T);
    for (int i = 0; i < T; i++) {
        size_t wb = (size_t)n * k / 2, sb = (size_t)n * k / 32;
        w[i] = malloc(wb), s[i] = malloc(sb);
        for (size_t j = 0; j < wb; j++)
            w[i][j] = (uint8_t)next_u64();
        for (size_t j = 0; j < sb; j++)
            s[i][j] = (uint8_t)(127 - 10 + (int)(next_u64() % 13));
        if (c->extreme) /* one row in 16: one block's scale 2^-57 or 2^53 (fast range 2^-32..2^32) */
            for (int r = 0; r < n; r++)
                if (next_u64() % 16 == 0)
                    s[i][(size_t)r * (k / 32) + next_u64() % (uint64_t)(k / 32)] = next_u64() & 1 ? 70 : 180;
        if (c->spread) /* per row and 128-K block: codes E, E, E, E - spread in a random order; on even
                        * rows the E sub-blocks hold only (+-)0 codes */
            for (int r = 0; r < n; r++)
                for (int b = 0; b < k / 128; b++) {
                    const int big = 120 + (int)(next_u64() % 10), low = (int)(next_u64() % 4);
                    for (int sb = 0; sb < 4; sb++) {
                        s[i][(size_t)r * (k / 32) + 4 * b + sb] = (uint8_t)(sb == low ? big - c->spread : big);
                        if (sb != low && !(r & 1))
                            for (int j = 0; j < 16; j++)
                                w[i][(size_t)r * (k / 2) + 64 * b + 16 * sb + j] = (uint8_t)(next_u64() & 0x88);
                    }
                }
        dw[i] = dev_copy(w[i], wb), ds[i] = dev_copy(s[i], sb);
    }
    int *ids = malloc(sizeof *ids * npairs);
    route_ids(ids, S, topk, E, c->route);
    if (c->style == 2)
        for (int p = 0; p < S * topk; p++)
            ids[S * topk + p] = ids[p] + E;
    uint16_t *x = malloc(sizeof *x * (size_t)rows * k);
    gen_act(x, c->style == 2 ? S : rows, k, c->extreme);
    if (c->style == 2) /* the engine quantises a copy of the input for w3 */
        memcpy(x + (size_t)S * k, x, sizeof *x * (size_t)S * k);
    uint8_t *q = malloc((size_t)rows * k);
    float *sa = malloc(sizeof *sa * (size_t)rows * (k / 128));
    cuda_ref_act_quant(x, rows, k, q, sa);

    float *ref = malloc(sizeof *ref * (size_t)npairs * n);
    double *mag = malloc(sizeof *mag * (size_t)npairs * n), *ex = malloc(sizeof *ex * (size_t)npairs * n);
    fast_ref(q, sa, x_group, npairs, ids, rows, w, s, T, n, k, ref, mag, ex);
    if (checked_fast_ref < 2) { /* the first two cases */
        checked_fast_ref++;
        float *r2 = malloc(sizeof *r2 * (size_t)npairs * n);
        double *m2 = malloc(sizeof *m2 * (size_t)npairs * n);
        cuda_ref_fp4_gemv_grouped(q, sa, x_group, npairs, ids, (const uint8_t *const *)w, (const uint8_t *const *)s,
                                  n, k, r2, m2);
        tap(!memcmp(r2, ref, sizeof *r2 * (size_t)npairs * n) && !memcmp(m2, mag, sizeof *m2 * (size_t)npairs * n),
            "the test's expert-ordered reference gives kernels/ref.c's bits (%d pairs, n=%d k=%d)", npairs, n, k);
        free(r2), free(m2);
    }

    void *dq = dev_copy(q, (size_t)rows * k), *dsa = dev_copy(sa, sizeof *sa * (size_t)rows * (k / 128));
    void *dids = dev_copy(ids, sizeof *ids * npairs), *dwt = dev_copy(dw, sizeof *dw * T),
         *dst = dev_copy(ds, sizeof *ds * T);
    size_t ybytes = sizeof(uint16_t) * (size_t)npairs * n;
    void *dy, *dyv, *dy1, *dy2, *dy4, *dy5, *dy6, *dy7, *dyd, *scratch;
    must(cuda_malloc(&dy, ybytes, &e), &e);
    must(cuda_malloc(&dy4, ybytes, &e), &e);
    must(cuda_malloc(&dy5, ybytes, &e), &e);
    must(cuda_memset(dy5, 0xff, ybytes, &e), &e);
    must(cuda_malloc(&dy6, ybytes, &e), &e);
    must(cuda_memset(dy6, 0xff, ybytes, &e), &e);
    must(cuda_malloc(&dy7, ybytes, &e), &e);
    must(cuda_memset(dy7, 0xff, ybytes, &e), &e);
    must(cuda_malloc(&dyd, ybytes, &e), &e);
    must(cuda_memset(dy4, 0xff, ybytes, &e), &e);
    must(cuda_memset(dyd, 0xff, ybytes, &e), &e);
    must(cuda_malloc(&dyv, ybytes, &e), &e);
    must(cuda_malloc(&dy1, ybytes, &e), &e);
    must(cuda_malloc(&dy2, ybytes, &e), &e);
    must(cuda_memset(dy1, 0xff, ybytes, &e), &e);
    must(cuda_memset(dy2, 0xff, ybytes, &e), &e);
    size_t sbytes = cuda_moe_scratch_bytes(T, npairs);
    must(cuda_malloc(&scratch, sbytes, &e), &e);
    struct cuda_moe_buckets bk;
    must(cuda_moe_buckets_init(&bk, scratch, sbytes, T, npairs, &e), &e);
    must(cuda_memset(dy, 0xff, ybytes, &e), &e);
    must(cuda_moe_bucket(&bk, dids, NULL, &e), &e);
    unsigned long long fb0 = 0, fb = 0, fb4 = 0, fb5 = 0, fb6 = 0, fb7 = 0;
    must(cuda_moe_v3_fallback_stages(&fb0, 1, &e), &e);
    must(cuda_moe_v4_fallback_stages(&fb0, 1, &e), &e);
    must(cuda_moe_v5_fallback_stages(&fb0, 1, &e), &e);
    must(cuda_moe_v6_fallback_stages(&fb0, 1, &e), &e);
    must(cuda_moe_v7_fallback_stages(&fb0, 1, &e), &e);
    must(cuda_moe_gemm_variant(&bk, dq, dsa, x_group, dwt, dst, n, k, dy, CUDA_MOE_GEMM_V3, NULL, &e), &e);
    must(cuda_moe_v3_fallback_stages(&fb, 1, &e), &e);
    must(cuda_moe_gemm_variant(&bk, dq, dsa, x_group, dwt, dst, n, k, dy4, CUDA_MOE_GEMM_V4, NULL, &e), &e);
    must(cuda_moe_v4_fallback_stages(&fb4, 1, &e), &e);
    must(cuda_moe_gemm_variant(&bk, dq, dsa, x_group, dwt, dst, n, k, dy5, CUDA_MOE_GEMM_V5, NULL, &e), &e);
    must(cuda_moe_v5_fallback_stages(&fb5, 1, &e), &e);
    must(cuda_moe_gemm_variant(&bk, dq, dsa, x_group, dwt, dst, n, k, dy6, CUDA_MOE_GEMM_V6, NULL, &e), &e);
    must(cuda_moe_v6_fallback_stages(&fb6, 1, &e), &e);
    must(cuda_moe_gemm_variant(&bk, dq, dsa, x_group, dwt, dst, n, k, dy7, CUDA_MOE_GEMM_V7, NULL, &e), &e);
    must(cuda_moe_v7_fallback_stages(&fb7, 1, &e), &e);
    must(cuda_moe_gemm(&bk, dq, dsa, x_group, dwt, dst, n, k, dyd, NULL, &e), &e); /* the default (or the env's) */
    unsigned long long fbd3 = 0, fbd4 = 0, fbd5 = 0, fbd6 = 0; /* that run's fallbacks (V1 / V2 count none) */
    must(cuda_moe_v3_fallback_stages(&fbd3, 1, &e), &e);
    must(cuda_moe_v4_fallback_stages(&fbd4, 1, &e), &e);
    must(cuda_moe_v5_fallback_stages(&fbd5, 1, &e), &e);
    must(cuda_moe_v6_fallback_stages(&fbd6, 1, &e), &e);
    must(cuda_moe_gemm_variant(&bk, dq, dsa, x_group, dwt, dst, n, k, dy1, CUDA_MOE_GEMM_V1, NULL, &e), &e);
    must(cuda_moe_gemm_variant(&bk, dq, dsa, x_group, dwt, dst, n, k, dy2, CUDA_MOE_GEMM_V2, NULL, &e), &e);
    must(cuda_fp4_gemv_grouped(dq, dsa, x_group, npairs, dids, dwt, dst, n, k, dyv, NULL, &e), &e);
    must(cuda_sync(&e), &e);
    uint16_t *y = malloc(ybytes), *yv = malloc(ybytes), *y2 = malloc(ybytes), *y1 = malloc(ybytes),
             *y3 = malloc(ybytes), *y4 = malloc(ybytes), *y5 = malloc(ybytes), *y6 = malloc(ybytes),
             *y7 = malloc(ybytes), *yd = malloc(ybytes);
    must(cuda_d2h(y3, dy, ybytes, &e), &e);
    must(cuda_d2h(y4, dy4, ybytes, &e), &e);
    must(cuda_d2h(y5, dy5, ybytes, &e), &e);
    must(cuda_d2h(y6, dy6, ybytes, &e), &e);
    must(cuda_d2h(y7, dy7, ybytes, &e), &e);
    must(cuda_d2h(yd, dyd, ybytes, &e), &e);
    must(cuda_d2h(y, dy2, ybytes, &e), &e); /* y: V2 (the checks below as they were for V2) */
    must(cuda_d2h(yv, dyv, ybytes, &e), &e);
    must(cuda_d2h(y1, dy1, ybytes, &e), &e);

    /* bucketing, exactly */
    int *hc = malloc(sizeof(int) * T), *ho = malloc(sizeof(int) * (T + 1)), *hp = malloc(sizeof(int) * npairs);
    int *ht = malloc(sizeof(int) * 2 * bk.max_tiles), *gc = malloc(sizeof(int) * T), *go = malloc(sizeof(int) * (T + 1));
    int *gp = malloc(sizeof(int) * npairs), *gt = malloc(sizeof(int) * 2 * bk.max_tiles), gnt = -1;
    int hnt = host_bucket(ids, npairs, T, hc, ho, hp, ht);
    must(cuda_d2h(gc, bk.d_counts, sizeof(int) * T, &e), &e);
    must(cuda_d2h(go, bk.d_offsets, sizeof(int) * (T + 1), &e), &e);
    must(cuda_d2h(gp, bk.d_perm, sizeof(int) * npairs, &e), &e);
    must(cuda_d2h(&gnt, bk.d_ntiles, sizeof(int), &e), &e);
    int used = 0, empty = 0, maxc = 0;
    for (int i = 0; i < T; i++)
        used += hc[i] > 0, empty += hc[i] == 0, maxc = hc[i] > maxc ? hc[i] : maxc;
    int bucket_ok = gnt == hnt && hnt <= bk.max_tiles && !memcmp(gc, hc, sizeof(int) * T) &&
                    !memcmp(go, ho, sizeof(int) * (T + 1)) && !memcmp(gp, hp, sizeof(int) * npairs);
    if (bucket_ok) {
        must(cuda_d2h(gt, bk.d_tiles, sizeof(int) * 2 * hnt, &e), &e);
        bucket_ok = !memcmp(gt, ht, sizeof(int) * 2 * hnt);
    }
    tap(bucket_ok, "%s: bucketing of %d pairs over %d entries (%s routing, S=%d top-%d): %d experts used, %d empty, "
        "largest %d, %d tiles (%d on the device)", c->what, npairs, T, route_name[c->route], S, topk, used, empty, maxc,
        hnt, gnt);
    { /* the other bucketing kernels (the per-expert ones where the block ones ran) into a second scratch */
        void *scr2 = NULL;
        struct cuda_moe_buckets b2;
        must(cuda_malloc(&scr2, sbytes, &e), &e);
        must(cuda_memset(scr2, 0x5a, sbytes, &e), &e);
        must(cuda_moe_buckets_init(&b2, scr2, sbytes, T, npairs, &e), &e);
        cuda_moe_bucket_mode(bk.nblk > 0 ? 0 : 1);
        must(cuda_moe_bucket(&b2, dids, NULL, &e), &e);
        cuda_moe_bucket_mode(-1);
        must(cuda_sync(&e), &e);
        int *c2 = malloc(sizeof(int) * T), *o2 = malloc(sizeof(int) * (T + 1)), *p2 = malloc(sizeof(int) * npairs);
        int *t2 = malloc(sizeof(int) * 2 * bk.max_tiles), nt2 = -1;
        must(cuda_d2h(c2, b2.d_counts, sizeof(int) * T, &e), &e);
        must(cuda_d2h(o2, b2.d_offsets, sizeof(int) * (T + 1), &e), &e);
        must(cuda_d2h(p2, b2.d_perm, sizeof(int) * npairs, &e), &e);
        must(cuda_d2h(&nt2, b2.d_ntiles, sizeof(int), &e), &e);
        int same = nt2 == hnt && !memcmp(c2, hc, sizeof(int) * T) && !memcmp(o2, ho, sizeof(int) * (T + 1)) &&
                   !memcmp(p2, hp, sizeof(int) * npairs);
        if (same) {
            must(cuda_d2h(t2, b2.d_tiles, sizeof(int) * 2 * hnt, &e), &e);
            same = !memcmp(t2, ht, sizeof(int) * 2 * hnt);
        }
        tap(same, "%s: the %s bucketing kernels give the host's counting sort too (%d blocks of 1024 pairs)", c->what,
            bk.nblk > 0 ? "per-expert" : "per-expert (again: no block form at this size)", bk.nblk);
        free(c2), free(o2), free(p2), free(t2);
        cuda_free(scr2);
    }

    /* products */
    long bad = 0, badv = 0, badx = 0, eq_v = 0, eq_ref = 0, ne_1 = 0, eq1_ref = 0, total = (long)npairs * n;
    double worst = -1e300;
    for (long i = 0; i < total; i++) {
        double g = cuda_ref_bf16_to_f32(y[i]), v = cuda_ref_bf16_to_f32(yv[i]), r = ref[i], u = ulp_bf16(r);
        double d = fabs(g - r);
        double rel = mag[i] > 0 ? (d - u) / mag[i] : (d > u ? 1e300 : -1e300);
        worst = rel > worst ? rel : worst;
        bad += !(d <= u + EPS * mag[i]);
        badv += !(fabs(v - r) <= u + EPS * mag[i]);
        badx += !(fabs(g - v) <= 2 * (u + EPS * mag[i]));
        eq_v += y[i] == yv[i];
        eq_ref += y[i] == cuda_ref_f32_to_bf16(ref[i]);
        eq1_ref += y1[i] == cuda_ref_f32_to_bf16(ref[i]);
        ne_1 += y[i] != y1[i];
    }
    tap(ne_1 == 0, "%s: V2 gives V1's bytes: %ld/%ld outputs differ (V1 bit-equal to bf16(ref) %.2f%%)", c->what, ne_1,
        total, 100.0 * (double)eq1_ref / (double)total);
    tap(bad == 0, "%s: moe_gemm n=%d k=%d x_group=%d vs ref: %ld/%ld outside the bound, max (|d|-ulp)/mag = %.3g, "
        "bit-equal to bf16(ref) %.2f%%", c->what, n, k, x_group, bad, total, worst, 100.0 * (double)eq_ref / (double)total);
    tap(badv == 0 && badx == 0, "%s: same pairs through cuda_fp4_gemv_grouped: %ld outside the ref bound, %ld pairs of "
        "outputs apart by more than both bounds; moe_gemm bit-equal to it on %.2f%%", c->what, badv, badx,
        100.0 * (double)eq_v / (double)total);

    /* V3 and V4 against the exact sums (the same bound: V4's stage is 8 chained f16 HMMAs, the same
     * hardware steps as V3's 4 emulated e4m3 mmas with fewer roundings between them, and the same one
     * fma per stage) */
    const double dk = (3.0 * (k / 32) + 2.0) * 0x1p-24;
    const uint16_t *yk[4] = {y3, y4, y5, y6};
    long badk[4] = {0, 0, 0, 0}, nek_2[4] = {0, 0, 0, 0}, eqk_ref[4] = {0, 0, 0, 0}, eq4_3 = 0, eq5_4 = 0, eq6_5 = 0;
    long firstk[4] = {-1, -1, -1, -1};
    double worstk[4] = {0.0, 0.0, 0.0, 0.0}, ulpsk[4] = {0.0, 0.0, 0.0, 0.0};
    for (long i = 0; i < total; i++) {
        const double x = ex[i], dd = dk * mag[i];
        const double bound = 0.5 * ulp_bf16(fabs(x) + dd) + dd + 0x1p-140;
        for (int v = 0; v < 4; v++) {
            const double g = cuda_ref_bf16_to_f32(yk[v][i]);
            const double err = fabs(g - x);
            if (!(err <= bound) && firstk[v] < 0)
                firstk[v] = i;
            badk[v] += !(err <= bound);
            worstk[v] = err / bound > worstk[v] ? err / bound : worstk[v];
            nek_2[v] += yk[v][i] != y[i];
            eqk_ref[v] += yk[v][i] == cuda_ref_f32_to_bf16(ref[i]);
            const double u2 = fabs(g - cuda_ref_bf16_to_f32(y[i])) / ulp_bf16(cuda_ref_bf16_to_f32(y[i]));
            ulpsk[v] = u2 > ulpsk[v] ? u2 : ulpsk[v];
        }
        eq4_3 += y4[i] == y3[i];
        eq5_4 += y5[i] == y4[i];
        eq6_5 += y6[i] == y5[i];
    }
    const long bad3 = badk[0], ne3_2 = nek_2[0];
    for (int v = 0; v < 4; v++)
        if (firstk[v] >= 0) { /* where: output (pair, row) = (i / n, i % n), for a post-mortem */
            const long i = firstk[v];
            printf("# %s: V%d first miss at pair %ld row %ld: %.9g, exact %.9g, bound %.3g, mag %.3g\n", c->what, v + 3,
                   i / n, i % n, cuda_ref_bf16_to_f32(yk[v][i]), ex[i], dk * mag[i], mag[i]);
        }
    tap(bad3 == 0, "%s: V3 vs the exact sums: %ld/%ld outside |d| <= ulp_bf16/2 + (3K/32+2) 2^-24 mag, "
        "largest |d| / bound %.3f; differs from V2 on %ld (at most %.0f bf16 ulp), bit-equal to bf16(ref) %.2f%%; "
        "%llu (CTA, stage) fallbacks", c->what, bad3, total, worstk[0], ne3_2, ulpsk[0],
        100.0 * (double)eqk_ref[0] / (double)total, fb);
    tap(badk[1] == 0, "%s: V4 vs the exact sums: %ld/%ld outside the same bound, largest |d| / bound %.3f; "
        "differs from V2 on %ld (at most %.0f bf16 ulp), bit-equal to V3 %.2f%%, to bf16(ref) %.2f%%; %llu (CTA, "
        "stage) fallbacks", c->what, badk[1], total, worstk[1], nek_2[1], ulpsk[1], 100.0 * (double)eq4_3 / (double)total,
        100.0 * (double)eqk_ref[1] / (double)total, fb4);
    tap(badk[2] == 0, "%s: V5 (wgmma) vs the exact sums: %ld/%ld outside the same bound, largest |d| / bound %.3f; "
        "differs from V2 on %ld (at most %.0f bf16 ulp), bit-equal to V4 %.2f%%; %llu (CTA, stage) fallbacks "
        "(V4 %llu)", c->what, badk[2], total, worstk[2], nek_2[2], ulpsk[2], 100.0 * (double)eq5_4 / (double)total,
        fb5, fb4);
    tap(fb5 == fb4, "%s: V5 takes V4's guard: %llu fallback stages, V4 %llu", c->what, fb5, fb4);
    tap(badk[3] == 0 && fb6 == fb4, "%s: V6 (weights in registers) vs the exact sums: %ld/%ld outside the same bound, "
        "largest |d| / bound %.3f; bit-equal to V5 %.2f%%, differs from V2 on %ld (at most %.0f bf16 ulp); %llu "
        "fallback stages (V4 %llu)", c->what, badk[3], total, worstk[3], 100.0 * (double)eq6_5 / (double)total,
        nek_2[3], ulpsk[3], fb6, fb4);
    /* V7 (FP8 wgmma) against the exact sums with EPS7 */
    {
        long bad7 = 0, ne7_2 = 0, first7 = -1;
        double worst7 = 0.0;
        for (long i = 0; i < total; i++) {
            const double x = ex[i], dd = EPS7 * mag[i];
            const double bound = 0.5 * ulp_bf16(fabs(x) + dd) + dd + 0x1p-140;
            const double err = fabs(cuda_ref_bf16_to_f32(y7[i]) - x);
            if (!(err <= bound) && first7 < 0)
                first7 = i;
            bad7 += !(err <= bound);
            worst7 = err / dd > worst7 && mag[i] > 0 ? err / dd : worst7;
            ne7_2 += y7[i] != y[i];
        }
        if (first7 >= 0)
            printf("# %s: V7 first miss at pair %ld row %ld: %.9g, exact %.9g, bound %.3g, mag %.3g\n", c->what,
                   first7 / n, first7 % n, cuda_ref_bf16_to_f32(y7[first7]), ex[first7], EPS7 * mag[first7],
                   mag[first7]);
        tap(bad7 == 0, "%s: V7 (FP8 wgmma) vs the exact sums: %ld/%ld outside ulp_bf16/2 + 2^-9 mag, largest |d| / "
            "(2^-9 mag) %.4f; differs from V2 on %ld; %llu (warp, stage) fallbacks", c->what, bad7, total, worst7,
            ne7_2, fb7);
        unsigned long long wpt = 0; /* warps a tile with a valid row (rows past n have codes 0: at E) */
        for (int r0 = 0; r0 < n; r0 += 128)
            wpt += (unsigned long long)(((n - r0 < 128 ? n - r0 : 128) + 15) / 16);
        const unsigned long long allw = wpt * (unsigned long long)gnt * (unsigned long long)(k / 128);
        if (c->spread <= CUDA_MOE7_SPREAD && !c->extreme)
            tap(fb7 == 0, "%s: no warp of V7 fell back (%llu)", c->what, fb7);
        if (c->extreme)
            tap(fb7 > 0, "%s: some warps of V7 fell back (%llu)", c->what, fb7);
        if (c->spread > CUDA_MOE7_SPREAD)
            tap(fb7 == allw && ne7_2 == 0, "%s: every (warp, stage) of V7 fell back (%llu of %llu) and gave V2's "
                "bytes (%ld differ)", c->what, fb7, allw, ne7_2);
    }
    const unsigned long long all = (unsigned long long)gnt * (unsigned long long)((n + 127) / 128) * (k / 128);
    if (c->spread <= 14 && !c->extreme)
        tap(fb == 0, "%s: no stage of V3 fell back (%llu)", c->what, fb);
    if (c->spread <= CUDA_MOE4_SPREAD && !c->extreme)
        tap(fb4 == 0, "%s: no stage of V4 fell back (%llu)", c->what, fb4);
    if (c->extreme)
        tap(fb > 0 && fb4 > 0, "%s: some stages of V3 (%llu) and of V4 (%llu) fell back", c->what, fb, fb4);
    if (c->spread > 14)
        tap(fb == all && ne3_2 == 0, "%s: every stage of V3 fell back (%llu of %llu) and gave V2's bytes (%ld differ)",
            c->what, fb, all, ne3_2);
    if (c->spread > CUDA_MOE4_SPREAD) {
        tap(fb4 == all && nek_2[1] == 0, "%s: every stage of V4 fell back (%llu of %llu) and gave V2's bytes (%ld "
            "differ)", c->what, fb4, all, nek_2[1]);
        tap(fb5 == all && nek_2[2] == 0, "%s: every stage of V5 fell back (%llu of %llu) and gave V2's bytes (%ld "
            "differ)", c->what, fb5, all, nek_2[2]);
        tap(fb6 == all && nek_2[3] == 0, "%s: every stage of V6 fell back (%llu of %llu) and gave V2's bytes (%ld "
            "differ)", c->what, fb6, all, nek_2[3]);
    }
    {
        const int dv = cuda_moe_gemm_default_variant();
        const uint16_t *want = dv == CUDA_MOE_GEMM_V1   ? y1
                               : dv == CUDA_MOE_GEMM_V2 ? y
                               : dv == CUDA_MOE_GEMM_V3 ? y3
                               : dv == CUDA_MOE_GEMM_V4 ? y4
                               : dv == CUDA_MOE_GEMM_V5 ? y5
                               : dv == CUDA_MOE_GEMM_V6 ? y6
                                                        : y7;
        tap(!memcmp(yd, want, ybytes), "%s: cuda_moe_gemm ran V%d (CTX_CUDA_MOE_GEMM or the default at %d pairs): its "
            "bytes", c->what, dv + 1, npairs);
        if (c->want) {
            /* the default itself; the counters say which kernel ran (V3: every stage fell back; V4: none) */
            const int forced = cuda_moe_gemm_variant_of_env(getenv("CTX_CUDA_MOE_GEMM"));
            const int expect = forced != CUDA_MOE_GEMM_UNSET ? forced : c->want - 1;
            const int counters = dv == CUDA_MOE_GEMM_V3 ? fbd3 == all && fbd4 == 0 && fbd5 == 0 && fbd6 == 0
                                                        : fbd3 == 0 && fbd4 == 0 && fbd5 == 0 && fbd6 == 0;
            tap(dv == expect && counters, "%s: at %d pairs cuda_moe_gemm runs V%d (%s: V%d), its run's fallbacks V3 %llu "
                "of %llu stages, V4 %llu, V5 %llu", c->what, npairs, dv + 1,
                forced != CUDA_MOE_GEMM_UNSET ? "forced by CTX_CUDA_MOE_GEMM" : "the default", expect + 1,
                fbd3, all, fbd4, fbd5);
        }
    }

    /* deterministic */
    {
        must(cuda_memset(dy, 0, ybytes, &e), &e);
        must(cuda_moe_bucket(&bk, dids, NULL, &e), &e);
        must(cuda_moe_gemm_variant(&bk, dq, dsa, x_group, dwt, dst, n, k, dy, CUDA_MOE_GEMM_V7, NULL, &e), &e);
        must(cuda_sync(&e), &e);
        must(cuda_d2h(y2, dy, ybytes, &e), &e);
        tap(!memcmp(y7, y2, ybytes), "%s: a second bucketing + product (V7) gives the same bytes", c->what);
    }
    /* V8 (V7 over CTAs of up to 128 pairs) and V9 (V8's arithmetic, the conversion in a producer
     * warpgroup): V7's bytes, and fallbacks exactly where V7 had some */
    {
        static const struct {
            int variant;
            int (*fallbacks)(unsigned long long *, int, struct ctx_err *);
            const char *what;
        } wide[] = {{CUDA_MOE_GEMM_V8, cuda_moe_v8_fallback_stages, "V8 (128-pair CTAs"},
                    {CUDA_MOE_GEMM_V9, cuda_moe_v9_fallback_stages, "V9 (producer warpgroup"}};
        for (size_t w = 0; w < sizeof wide / sizeof wide[0]; w++) {
            unsigned long long fbw = 0;
            must(wide[w].fallbacks(&fbw, 1, &e), &e);
            must(cuda_memset(dy, 0xff, ybytes, &e), &e);
            must(cuda_moe_gemm_variant(&bk, dq, dsa, x_group, dwt, dst, n, k, dy, wide[w].variant, NULL, &e), &e);
            must(wide[w].fallbacks(&fbw, 1, &e), &e);
            must(cuda_d2h(y2, dy, ybytes, &e), &e);
            long ne = 0;
            for (long i = 0; i < total; i++)
                ne += y2[i] != y7[i];
            tap(ne == 0 && (fbw == 0) == (fb7 == 0), "%s: %s, largest expert %d pairs) gives V7's bytes (%ld of %ld "
                "differ); %llu (warp, stage) fallbacks (V7 %llu)", c->what, wide[w].what, maxc, ne, total, fbw, fb7);
        }
    }
    for (int v = 0; v < 4; v++) {
        must(cuda_memset(dy, 0, ybytes, &e), &e);
        must(cuda_moe_bucket(&bk, dids, NULL, &e), &e);
        must(cuda_moe_gemm_variant(&bk, dq, dsa, x_group, dwt, dst, n, k, dy, CUDA_MOE_GEMM_V3 + v, NULL, &e), &e);
        must(cuda_sync(&e), &e);
        must(cuda_d2h(y2, dy, ybytes, &e), &e);
        tap(!memcmp(yk[v], y2, ybytes), "%s: a second bucketing + product (V%d) gives the same bytes", c->what, v + 3);
    }

    for (int i = 0; i < T; i++) {
        free(w[i]), free(s[i]);
        cuda_free(dw[i]), cuda_free(ds[i]);
    }
    free(w), free(s), free(dw), free(ds), free(ids), free(x), free(q), free(sa), free(ref), free(mag), free(ex);
    free(y), free(yv), free(y2), free(y1), free(y3), free(y4), free(y5), free(y6), free(y7), free(yd), free(hc), free(ho), free(hp), free(ht), free(gc), free(go), free(gp), free(gt);
    cuda_free(dq), cuda_free(dsa), cuda_free(dids), cuda_free(dwt), cuda_free(dst), cuda_free(dy), cuda_free(dyv), cuda_free(dy1);
    cuda_free(dy2), cuda_free(dy4), cuda_free(dy5), cuda_free(dy6), cuda_free(dy7), cuda_free(dyd);
    cuda_free(scratch);
}

/* Argument errors are reported, not launched. */
static void test_errors(void)
{
    struct ctx_err e;
    struct cuda_moe_buckets bk;
    void *d;
    must(cuda_malloc(&d, 4096, &e), &e);
    int a = cuda_moe_buckets_init(&bk, d, 4096, 0, 10, &e);                         /* no experts */
    int b = cuda_moe_buckets_init(&bk, d, 4096, CUDA_MOE_MAX_EXPERTS + 1, 10, &e);   /* too many */
    int c = cuda_moe_buckets_init(&bk, d, 64, 256, 1000, &e);                       /* short scratch */
    int f = cuda_moe_buckets_init(&bk, (uint8_t *)d + 4, 4000, 4, 4, &e);            /* misaligned */
    int ok = cuda_moe_buckets_init(&bk, d, 4096, 8, 48, &e);
    int g = cuda_moe_gemm(&bk, NULL, NULL, 6, NULL, NULL, 64, 100, NULL, NULL, &e); /* k not a multiple of 128 */
    int h = cuda_moe_gemm(&bk, NULL, NULL, 0, NULL, NULL, 64, 128, NULL, NULL, &e); /* x_group 0 */
    int i = cuda_moe_gemm(&bk, NULL, NULL, 6, NULL, NULL, 0, 128, NULL, NULL, &e);  /* n 0 */
    int v = cuda_moe_gemm_variant(&bk, NULL, NULL, 6, NULL, NULL, 64, 128, NULL, CUDA_MOE_GEMM_NVARIANTS, NULL,
                                  &e); /* no such kernel */
    tap(a == CTX_EINVAL && b == CTX_EINVAL && c == CTX_EINVAL && f == CTX_EINVAL && ok == 0 && g == CTX_EINVAL &&
            h == CTX_EINVAL && i == CTX_EINVAL && v == CTX_EINVAL && cuda_moe_scratch_bytes(8, 48) <= 4096,
        "bad sizes, short or misaligned scratch, bad shapes and an unknown kernel are rejected with CTX_EINVAL "
        "(%d %d %d %d %d %d %d %d %d)", a, b, c, f, ok, g, h, i, v);
    cuda_free(d);
}

/* The default kernel's arithmetic on the host (no device needed): per 32-K block, V1 adds
 * (d * a) * w to acc; V2 keeps acc / a with fmaf(d, w, .), rescaled by a_prev / a between 128-K stages
 * (the kernel's exponent-byte arithmetic) and multiplied by the last a at the end. Partials d are
 * what the mma sums: 1..32 products of e4m3 codes and e2m1 values * 2^-6, rounded to fp32 once.
 * Inside the guarded range (a in [2^-24, 2^24], w in [2^-32, 2^32], the ends included) the two must
 * agree bit for bit; far outside it they must not (so the guard is needed and the check can fail). */
static double e4m3_of(uint8_t c)
{
    int sg = c >> 7, ex = (c >> 3) & 15, m = c & 7;
    if (ex == 15 && m == 7)
        return 0.0; /* the NaN code: not produced by act_quant */
    double v = ex ? ldexp(1.0 + m / 8.0, ex - 7) : ldexp(m / 8.0, -6);
    return sg ? -v : v;
}
static float f_of(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static uint32_t u_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static long scaled_accumulation_mismatches(int a_span, int w_span, long trials)
{
    static const double e2m1[8] = {0, 0.5, 1, 1.5, 2, 3, 4, 6};
    long bad = 0;
    for (long tr = 0; tr < trials; tr++) {
        const int stages = 1 + (int)(next_u64() % 8), mode = (int)(next_u64() % 4);
        float acc = 0.0f, accp = 0.0f;
        uint32_t ep = 127;
        for (int st = 0; st < stages; st++) {
            int ae = mode == 1 ? ((next_u64() & 1) ? a_span : -a_span) : (int)(next_u64() % (2 * a_span + 1)) - a_span;
            float a = ldexpf(1.0f, ae);
            uint32_t ec = u_of(a) >> 23;
            accp *= f_of((ep + 127u - ec) << 23);
            ep = ec;
            for (int blk = 0; blk < 4; blk++) {
                int we = mode == 1 ? ((next_u64() & 1) ? w_span : -w_span) : (int)(next_u64() % (2 * w_span + 1)) - w_span;
                float w = ldexpf(1.0f, we);
                double ds = 0.0;
                int terms = mode == 2 ? 1 + (int)(next_u64() % 3) : 32; /* mode 2: tiny partials */
                for (int i = 0; i < terms; i++) {
                    uint8_t c = (uint8_t)next_u64();
                    if (mode == 2)
                        c = (uint8_t)((c & 0x80) | (c & 7));
                    ds += e4m3_of(c) * e2m1[next_u64() % 8] * ((next_u64() & 1) ? -1.0 : 1.0) / 64.0;
                }
                const float d = (float)ds;
                volatile float t1 = d * a; /* volatile: two roundings, as V1 writes them */
                volatile float t2 = t1 * w;
                acc = acc + t2;
                accp = fmaf(d, w, accp);
            }
        }
        const float out = ep < 255 ? accp * f_of(ep << 23) : accp;
        bad += u_of(out) != u_of(acc);
    }
    return bad;
}

static void test_scaled_accumulation(void)
{
    long in = scaled_accumulation_mismatches(24, 32, 200000);
    long out = scaled_accumulation_mismatches(120, 120, 20000);
    tap(in == 0 && out > 0, "host model of V2's scaled accumulation: %ld/200000 sums differ from V1's "
        "inside the guarded scale range, %ld/20000 far outside it", in, out);
}

/* V3's e2m1 -> e4m3 conversion on the host, with the kernel's constants (moe_gemm.cu m3_convert):
 * PTX prmt (sign-replicate selectors included), the 15 LUTs of the 8 magnitudes times 2^(idx - 8),
 * the magnitude selectors x & 0x77777777 and the sign selectors 0xD9C8 / 0xFBEA. Every byte value in
 * every position of a word, at every shift, must give exactly v * 2^(idx - 8) in K order (the
 * shift's range, -8..6, is the guard's: e_i - E + 6 with e_i >= E - 14). */
static uint32_t prmt(uint32_t a, uint32_t b, uint32_t c)
{
    uint32_t r = 0;
    for (int i = 0; i < 4; i++) {
        const uint32_t sel = (c >> (4 * i)) & 15, src = sel & 7;
        uint32_t byte = ((src < 4 ? a : b) >> (8 * (src & 3))) & 0xff;
        if (sel & 8)
            byte = (byte & 0x80) ? 0xff : 0;
        r |= byte << (8 * i);
    }
    return r;
}
static void test_v3_conversion(void)
{
    static const double mags[8] = {0, 0.5, 1, 1.5, 2, 3, 4, 6};
    long bad = 0, checked = 0;
    for (int idx = 0; idx < 15; idx++) {
        uint32_t l[2] = {0, 0};
        for (int c = 1; c < 8; c++) {
            int code = -1;
            for (int b = 0; b < 127 && code < 0; b++)
                if (e4m3_of((uint8_t)b) == ldexp(mags[c], idx - 8))
                    code = b;
            bad += code < 0; /* not representable: the LUT could not be exact */
            l[c >> 2] |= (uint32_t)(code < 0 ? 0 : code) << (8 * (c & 3));
        }
        for (int pos = 0; pos < 4; pos++)
            for (int v = 0; v < 256; v++) {
                const uint32_t x = ((uint32_t)v << (8 * pos)) | ((uint32_t)(255 - v) << (8 * ((pos + 1) & 3)));
                const uint32_t m = x & 0x77777777u, xs = x << 4;
                const uint32_t lo = prmt(l[0], l[1], m) | (prmt(xs, x, 0xD9C8u) & 0x80808080u);
                const uint32_t hi = prmt(l[0], l[1], m >> 16) | (prmt(xs, x, 0xFBEAu) & 0x80808080u);
                for (int j = 0; j < 8; j++) {
                    const uint8_t out = (uint8_t)((j < 4 ? lo : hi) >> (8 * (j & 3)));
                    const double want = ldexp(cuda_ref_e2m1((uint8_t)((x >> (4 * j)) & 15)), idx - 8);
                    bad += e4m3_of(out) != want;
                    checked++;
                }
            }
    }
    tap(bad == 0, "host model of V3's e2m1 -> e4m3 conversion (LUT + prmt): %ld/%ld values differ from "
        "v * 2^(e_i - E + 6) over the 15 shifts", bad, checked);
}

/* f16 bits -> value (every f16 the conversions produce: normal, zero, signed). */
static double f16_val(uint32_t h)
{
    const int sg = (h >> 15) & 1, ex = (h >> 10) & 31, m = h & 1023;
    double v = ex == 31 ? NAN : ex ? ldexp(1.0 + m / 1024.0, ex - 15) : ldexp(m / 1024.0, -14);
    return sg ? -v : v;
}

/* V4's e2m1 -> f16 conversion, the kernel's own code (moe_gemm.h cuda_moe4_convert and
 * cuda_moe4_lut_byte, with cuda_moe4_prmt's host model of PTX prmt): every byte value in every position
 * of a word, at each of the 27 shifts, must give exactly v * 2^(idx - 13) in K order, with f16 bits
 * that are a normal number or +-0 (the kernel's HMMA and its exactness argument rely on both). */
static void test_v4_conversion(void)
{
    long bad = 0, checked = 0, not_normal = 0;
    for (int idx = 0; idx <= CUDA_MOE4_SPREAD; idx++) {
        uint32_t l[2] = {0, 0};
        for (int c = 0; c < 8; c++)
            l[c >> 2] |= cuda_moe4_lut_byte(c, idx) << (8 * (c & 3));
        for (int pos = 0; pos < 4; pos++)
            for (int v = 0; v < 256; v++) {
                const uint32_t x = ((uint32_t)v << (8 * pos)) | ((uint32_t)(255 - v) << (8 * ((pos + 1) & 3)));
                uint32_t o[4];
                cuda_moe4_convert(x, l[0], l[1], o);
                for (int j = 0; j < 8; j++) {
                    const uint32_t h = (o[j >> 1] >> (16 * (j & 1))) & 0xffffu;
                    const double want = ldexp(cuda_ref_e2m1((uint8_t)((x >> (4 * j)) & 15)), idx - 13);
                    const double got = f16_val(h);
                    bad += !(got == want) || ((h & 0x8000u) != 0) != (((x >> (4 * j)) & 8) != 0);
                    not_normal += (h & 0x7fffu) != 0 && (((h >> 10) & 31) == 0 || (h & 0xffu) != 0);
                    checked++;
                }
            }
    }
    tap(bad == 0 && not_normal == 0, "host model of V4's e2m1 -> f16 conversion (LUT + prmt): %ld/%ld values differ "
        "from v * 2^(e_i - E + 13) over the %d shifts (signs included), %ld not a normal f16 with a zero low byte",
        bad, checked, CUDA_MOE4_SPREAD + 1, not_normal);
}

/* V4's shared-memory layout and fragments on the host, from moe_gemm.h's functions (the kernel's):
 * (1) cuda_moe4_woff / _xoff place every (row, k) of the 128 x 128 / 64 x 128 f16 tile once,
 *     (k, k+1) for even k in one 32-bit word (low half k);
 * (2) ldmatrix: for every warp row block, half, k16 step, lane and register, the (row, k) pair the lane
 *     receives (ldmatrix m8n8 .b16: lane l gets row l / 4, elements 2 (l % 4), +1 of matrix j, whose
 *     row addresses are those of lanes 8j .. 8j + 7) is the PTX ISA's m16n8k16 f16 fragment: A
 *     a_j = (row g + 8 (j & 1), k 2t + 8 (j >> 1) + {0, 1}), B b_j = (k 2t + 8 j + {0, 1}, pair g),
 *     with g = lane / 4, t = lane % 4; and the 8 addresses of each phase fall in 8 distinct 16-byte
 *     bank groups (no conflict);
 * (3) the conversion's work items: bijections onto (row, sub-block) / (pair, chunk), raw loads (V1's
 *     ring layout) and f16 stores conflict-free per 8-lane phase, f16 words where cuda_moe4_woff / _xoff put
 *     them, and the activation skip test (i >> 6 >= nbv) warp-uniform and equal to "pair group >= nbv". */
static void test_v4_layout(void)
{
    static int owner[32768 / 2][2], xowner[16384 / 2][2];
    long bad_map = 0, bad_a = 0, bad_b = 0, conflicts = 0, bad_conv = 0, frags = 0;
    for (int tl = 0; tl < 2; tl++) { /* the weight tile, the activation tile */
        const int nr = tl ? 64 : 128;
        const uint32_t bytes = (uint32_t)nr * 256;
        int(*own)[2] = tl ? xowner : owner;
        for (uint32_t i = 0; i < bytes / 2; i++)
            own[i][0] = -1;
        for (int r = 0; r < nr; r++)
            for (int kk = 0; kk < 128; kk++) {
                const uint32_t o = tl ? cuda_moe4_xoff(r, kk) : cuda_moe4_woff(r, kk);
                if (o >= bytes || (o & 1) || own[o / 2][0] >= 0) {
                    bad_map++;
                    continue;
                }
                own[o / 2][0] = r, own[o / 2][1] = kk;
                if (!(kk & 1) && (tl ? cuda_moe4_xoff(r, kk + 1) : cuda_moe4_woff(r, kk + 1)) != o + 2)
                    bad_map++;
                if (!(kk & 1) && (o & 3))
                    bad_map++;
            }
    }
    /* ldmatrix phases: 8 addresses (16-byte aligned) in 8 distinct bank groups */
    for (int wr = 0; wr < 4; wr++)
        for (int mi = 0; mi < 2; mi++)
            for (int st = 0; st < 8; st++) {
                uint32_t ad[32];
                for (int l = 0; l < 32; l++)
                    ad[l] = cuda_moe4_a_ldsm(l, wr, mi, st);
                for (int j = 0; j < 4; j++) {
                    int seen = 0;
                    for (int l = 0; l < 8; l++) {
                        bad_a += (ad[8 * j + l] & 15) != 0;
                        seen |= 1 << ((ad[8 * j + l] >> 4) & 7);
                    }
                    conflicts += seen != 0xff;
                }
                for (int l = 0; l < 32; l++)
                    for (int j = 0; j < 4; j++)
                        for (int e2 = 0; e2 < 2; e2++) {
                            const uint32_t o = ad[8 * j + l / 4] + 4 * (l % 4) + 2 * e2;
                            const int g = l / 4, t = l % 4;
                            const int wrow = wr * 32 + mi * 16 + g + 8 * (j & 1), wk = 16 * st + 2 * t + 8 * (j >> 1) + e2;
                            bad_a += o >= 32768 || owner[o / 2][0] != wrow || owner[o / 2][1] != wk;
                            frags++;
                        }
            }
    for (int nb0 = 0; nb0 < 8; nb0++)
        for (int nb1 = 0; nb1 < 8; nb1++)
            for (int st = 0; st < 8; st++) {
                uint32_t ad[32];
                for (int l = 0; l < 32; l++)
                    ad[l] = cuda_moe4_b_ldsm(l, nb0, nb1, st);
                const int nmat = nb1 == nb0 ? 2 : 4; /* x2 (lanes 0-15) when both name one block */
                for (int j = 0; j < nmat; j++) {
                    int seen = 0;
                    for (int l = 0; l < 8; l++) {
                        bad_b += (ad[8 * j + l] & 15) != 0 || ad[8 * j + l] >= 16384;
                        seen |= 1 << ((ad[8 * j + l] >> 4) & 7);
                    }
                    conflicts += seen != 0xff;
                }
                for (int l = 0; l < 32; l++)
                    for (int j = 0; j < nmat; j++)
                        for (int e2 = 0; e2 < 2; e2++) {
                            const uint32_t o = ad[8 * j + l / 4] + 4 * (l % 4) + 2 * e2;
                            const int g = l / 4, t = l % 4, nb = j >> 1 ? nb1 : nb0;
                            const int pr = nb * 8 + g, pk = 16 * st + 2 * t + 8 * (j & 1) + e2;
                            bad_b += o >= 16384 || xowner[o / 2][0] != pr || xowner[o / 2][1] != pk;
                            frags++;
                        }
            }
    /* conversion work items */
    static unsigned char wseen[128][4], xseen[64][8];
    memset(wseen, 0, sizeof wseen), memset(xseen, 0, sizeof xseen);
    for (int j = 0; j < 2; j++)
        for (int w = 0; w < 8; w++)
            for (int ph = 0; ph < 4; ph++) {
                int rseen = 0, sseen[4] = {0, 0, 0, 0}, xr = 0, xs[2] = {0, 0}, grp = -1;
                for (int l = 8 * ph; l < 8 * ph + 8; l++) {
                    const int i = 32 * w + l + 256 * j;
                    int ra, ca, rb, cb;
                    cuda_moe4_wpiece(i, &ra, &ca);
                    bad_conv += ra < 0 || ra >= 128 || ca < 0 || ca >= 4 || wseen[ra & 127][ca & 3]++;
                    rseen |= 1 << ((ra * 64 + ((ca ^ ((ra >> 1) & 3)) << 4)) >> 4 & 7); /* the raw FP4 ring */
                    for (int c = 0; c < 4; c++) {
                        const uint32_t o = cuda_moe4_woff(ra, 32 * ca + 8 * c);
                        sseen[c] |= 1 << ((o >> 4) & 7);
                        for (int q = 0; q < 4; q++) /* word q of the store: (k, k + 1), k = 32 ca + 8 c + 2 q */
                            bad_conv += cuda_moe4_woff(ra, 32 * ca + 8 * c + 2 * q) != o + 4 * (uint32_t)q;
                    }
                    cuda_moe4_xpiece(i, &rb, &cb);
                    bad_conv += rb < 0 || rb >= 64 || cb < 0 || cb >= 8 || xseen[rb & 63][cb & 7]++;
                    bad_conv += (i >> 6) != (rb >> 3);
                    if (grp < 0)
                        grp = i >> 6;
                    bad_conv += (i >> 6) != grp;
                    xr |= 1 << ((rb * 128 + ((cb ^ (rb & 7)) << 4)) >> 4 & 7); /* the raw e4m3 ring */
                    for (int c = 0; c < 2; c++) {
                        const uint32_t o = cuda_moe4_xoff(rb, 16 * cb + 8 * c);
                        xs[c] |= 1 << ((o >> 4) & 7);
                        for (int q = 0; q < 4; q++)
                            bad_conv += cuda_moe4_xoff(rb, 16 * cb + 8 * c + 2 * q) != o + 4 * (uint32_t)q;
                    }
                }
                conflicts += (rseen != 0xff) + (sseen[0] != 0xff) + (sseen[1] != 0xff) + (sseen[2] != 0xff) +
                             (sseen[3] != 0xff) + (xr != 0xff) + (xs[0] != 0xff) + (xs[1] != 0xff);
            }
    tap(bad_map == 0 && bad_a == 0 && bad_b == 0 && bad_conv == 0 && conflicts == 0,
        "host model of V4's f16 tiles and ldmatrix fragments: layout %ld errors, %ld fragment elements checked "
        "against the PTX m16n8k16 layout (A %ld, B %ld wrong), conversion items %ld wrong, %ld bank-conflicting "
        "phases", bad_map, frags, bad_a, bad_b, bad_conv, conflicts);
}

/* Exact f16 bits of a value that f16 holds (the e4m3 values: cvt.rn.f16x2.e4m3x2 is exact). */
static uint32_t f16_bits_exact(double v)
{
    if (v == 0.0)
        return signbit(v) ? 0x8000u : 0u;
    const uint32_t sg = v < 0 ? 0x8000u : 0u;
    int e;
    const double m = frexp(fabs(v), &e); /* |v| = m 2^e, m in [0.5, 1) */
    if (e - 1 >= -14)
        return sg | (uint32_t)(e - 1 + 15) << 10 | (uint32_t)ldexp(m * 2.0 - 1.0, 10);
    return sg | (uint32_t)ldexp(fabs(v), 24); /* subnormal */
}

/* The inputs of one CTA for the host models of V4 and V6 (one set at a time): 128 weight rows of
 * CTA_K FP4 values (CTA_KS stages) whose e8m0 codes lie up to 26 below their row's max in a stage,
 * `rows` pairs of e4m3 activations (the other pairs zero) and power-of-two activation scales. */
enum { CTA_KS = 2, CTA_K = 128 * CTA_KS };
static uint8_t wfp4[128][CTA_K / 2], codes[128][CTA_K / 32], xq[64][CTA_K];
static float xs[64][CTA_KS];
static void cta_data_fill(int rows)
{
    for (int r = 0; r < 128; r++) {
        for (int b = 0; b < CTA_K / 2; b++)
            wfp4[r][b] = (uint8_t)next_u64();
        for (int b = 0; b < CTA_KS; b++) {
            const int big = 124 + (int)(next_u64() % 4);
            for (int c = 0; c < 4; c++)
                codes[r][4 * b + c] = (uint8_t)(big - (int)(next_u64() % 27) * (int)(next_u64() % 2));
        }
    }
    for (int pr = 0; pr < 64; pr++)
        for (int kk = 0; kk < CTA_K; kk++) {
            const uint8_t c = (uint8_t)((next_u64() & 0x87) | (6 + next_u64() % 4) << 3);
            xq[pr][kk] = pr < rows ? c : 0;
        }
    for (int pr = 0; pr < 64; pr++)
        for (int b = 0; b < CTA_KS; b++)
            xs[pr][b] = pr < rows ? ldexpf(1.0f, (int)(next_u64() % 5) - 2) : 0.0f;
}
/* The kernels' conversion of weight row ra's 32-K sub-block sb of 128-K stage kb: the LUT of shift
 * CUDA_MOE4_SPREAD - (E - e_sb) from the stage's largest code E, then its four 32-bit FP4 words through
 * cuda_moe4_convert into o[0..3] (four f16 pairs each). Returns E. */
static int cta_convert(int ra, int kb, int sb, uint32_t o[4][4])
{
    int mx = 0;
    for (int c = 0; c < 4; c++)
        mx = codes[ra][4 * kb + c] > mx ? codes[ra][4 * kb + c] : mx;
    const int sh = mx - codes[ra][4 * kb + sb];
    uint32_t l[2] = {0, 0};
    for (int c = 0; c < 8; c++)
        l[c >> 2] |= cuda_moe4_lut_byte(c, CUDA_MOE4_SPREAD - sh) << (8 * (c & 3));
    for (int c = 0; c < 4; c++) {
        const uint8_t *raw = &wfp4[ra][64 * kb + 16 * sb + 4 * c];
        const uint32_t x = raw[0] | (uint32_t)raw[1] << 8 | (uint32_t)raw[2] << 16 | (uint32_t)raw[3] << 24;
        cuda_moe4_convert(x, l[0], l[1], o[c]);
    }
    return mx;
}
/* Output (weight row r, pair c) of those inputs, exactly (in double: powers of two times short
 * products). */
static double cta_exact(int r, int c)
{
    double want = 0.0;
    for (int kk = 0; kk < CTA_K; kk++)
        want += cuda_ref_e2m1((uint8_t)(kk & 1 ? wfp4[r][kk / 2] >> 4 : wfp4[r][kk / 2] & 15)) *
                cuda_ref_e8m0(codes[r][kk / 32]) * cuda_ref_e4m3(xq[c][kk]) * xs[c][kk / 128];
    return want;
}

/* One CTA of V4's fast path on the host, the kernel's orchestration over moe_gemm.h's functions:
 * each thread's conversion items (LUT of shift idx = 26 - (E - e_i), cuda_moe4_convert, stores at
 * cuda_moe4_woff / _xoff; activations as exact f16), each warp's ldmatrix (register j of lane l = the 32-bit
 * word at the row address of lane 8j + l/4, plus 4 (l % 4)) for its active pair blocks, the mma as
 * the PTX ISA defines m16n8k16 on those registers (in double), and the stage scale 2^(E - 140) with
 * the activation scale; every output of the tile against the double sum of w x, with rows' sub-block
 * spreads of 0..26 and the tile's pairs covering 1..8 pair blocks (each warp's 0..4 active blocks).
 * Both sums are exact in double, so they must be equal: codes E in 124..127 (weights multiples of
 * 2^-30), e4m3 exponent fields 6..9 (multiples of 2^-4), activation scales 2^-2..2^2, so every term
 * is a multiple of 2^-36 and every sum below 2^16. (The conversion of every code at every shift is
 * test_v4_conversion's.) */
static void test_v4_cta_model(void)
{
    enum { KS = CTA_KS };
    static uint8_t wh[32768], xh[16384];
    long bad = 0, checked = 0;
    for (int trial = 0; trial < 8; trial++) {
        const int rows = 1 + (int)(next_u64() % 64), nbv = (rows + 7) >> 3;
        cta_data_fill(rows);
        double acc[128][64];
        memset(acc, 0, sizeof acc);
        for (int kb = 0; kb < KS; kb++) {
            double rs[128];
            for (int i = 0; i < 512; i++) { /* thread i % 256, item i / 256 */
                int ra, ca;
                cuda_moe4_wpiece(i, &ra, &ca);
                uint32_t o[4][4];
                const int mx = cta_convert(ra, kb, ca, o);
                for (int c = 0; c < 4; c++)
                    memcpy(wh + cuda_moe4_woff(ra, 32 * ca + 8 * c), o[c], 16); /* little-endian, as the GPU */
                if (ca == 0)
                    rs[ra] = ldexp(1.0, mx - 140);
                int rb, cb;
                cuda_moe4_xpiece(i, &rb, &cb);
                if ((i >> 6) >= nbv)
                    continue;
                for (int c = 0; c < 2; c++) {
                    uint32_t o[4];
                    for (int q = 0; q < 4; q++)
                        o[q] = f16_bits_exact(cuda_ref_e4m3(xq[rb][128 * kb + 16 * cb + 8 * c + 2 * q])) |
                               f16_bits_exact(cuda_ref_e4m3(xq[rb][128 * kb + 16 * cb + 8 * c + 2 * q + 1])) << 16;
                    memcpy(xh + cuda_moe4_xoff(rb, 16 * cb + 8 * c), o, 16);
                }
            }
            for (int warp = 0; warp < 8; warp++) {
                const int wr = warp & 3, wc = warp >> 2, nact = (nbv + 1 - wc) >> 1;
                for (int mi = 0; mi < 2; mi++)
                    for (int q = 0; q < nact; q++) {
                        const int nb = 2 * q + wc;
                        double pacc[32][4];
                        memset(pacc, 0, sizeof pacc);
                        for (int st = 0; st < 8; st++) {
                            uint32_t ar[32][4], br[32][2];
                            for (int l = 0; l < 32; l++) {
                                for (int j = 0; j < 4; j++)
                                    memcpy(&ar[l][j], wh + cuda_moe4_a_ldsm(8 * j + l / 4, wr, mi, st) + 4 * (l % 4), 4);
                                /* the kernel's x4 pairs blocks (nb, nb + 2) or x2 for the last odd one: nb's
                                 * registers are matrices 0, 1 in both */
                                for (int j = 0; j < 2; j++)
                                    memcpy(&br[l][j], xh + cuda_moe4_b_ldsm(8 * j + l / 4, nb, nb + 2, st) + 4 * (l % 4), 4);
                            }
                            double A[16][16], B[16][8];
                            for (int l = 0; l < 32; l++) {
                                const int g = l / 4, t = l % 4;
                                for (int j = 0; j < 4; j++)
                                    for (int e2 = 0; e2 < 2; e2++)
                                        A[g + 8 * (j & 1)][2 * t + 8 * (j >> 1) + e2] = f16_val(ar[l][j] >> (16 * e2) & 0xffffu);
                                for (int j = 0; j < 2; j++)
                                    for (int e2 = 0; e2 < 2; e2++)
                                        B[2 * t + 8 * j + e2][g] = f16_val(br[l][j] >> (16 * e2) & 0xffffu);
                            }
                            for (int l = 0; l < 32; l++) {
                                const int g = l / 4, t = l % 4;
                                for (int v = 0; v < 4; v++) {
                                    double d = 0.0;
                                    for (int kk = 0; kk < 16; kk++)
                                        d += A[g + 8 * (v >> 1)][kk] * B[kk][2 * t + (v & 1)];
                                    pacc[l][v] += d;
                                }
                            }
                        }
                        for (int l = 0; l < 32; l++)
                            for (int v = 0; v < 4; v++) {
                                const int r = wr * 32 + mi * 16 + l / 4 + 8 * (v >> 1), c = nb * 8 + 2 * (l % 4) + (v & 1);
                                acc[r][c] += pacc[l][v] * xs[c][kb] * rs[r];
                            }
                    }
            }
        }
        for (int r = 0; r < 128; r++)
            for (int c = 0; c < rows; c++) {
                bad += acc[r][c] != cta_exact(r, c);
                checked++;
            }
    }
    tap(bad == 0, "host model of one V4 CTA (conversion, f16 tiles, ldmatrix registers, PTX m16n8k16, stage "
        "scale 2^(E - 140)): %ld/%ld outputs differ from the exact sum", bad, checked);
}

/* V5's tiles (moe_gemm.h cuda_moe5_off), on the host: a bijection onto the tile; the address wgmma
 * computes from the kernel's descriptors (start of step s's slab + the warpgroup's first row group,
 * then per the PTX ISA's canonical K-major no-swizzle layout: 8-row group i at i * SBO, K core matrix c
 * at c * LBO, row r % 8 at 16 r, K position at 2 k) for every element; and every 8-lane store phase of
 * the conversion (8 consecutive rows, one 8-K chunk: the weights' pieces, the activations' chunks) in
 * 8 distinct 16-byte slots of one 128-byte core matrix (no bank conflicts). */
static void test_v5_layout(void)
{
    static unsigned char seen[32768];
    long bad_map = 0, bad_desc = 0, conflicts = 0;
    for (int tl = 0; tl < 2; tl++) {
        const int nr = tl ? 64 : 128;
        const uint32_t bytes = (uint32_t)nr * 256;
        memset(seen, 0, sizeof seen);
        for (int r = 0; r < nr; r++)
            for (int kk = 0; kk < 128; kk++) {
                const uint32_t o = cuda_moe5_off(r, kk, nr);
                if (o >= bytes || (o & 1) || seen[o / 2]) {
                    bad_map++;
                    continue;
                }
                seen[o / 2] = 1;
                const int wgi = r / 64, rr = r % 64; /* warpgroup wgi's descriptor: start + wgi * 2048 */
                const uint32_t start = (uint32_t)(kk / 16) * (uint32_t)nr * 32 + (uint32_t)wgi * 2048;
                const uint32_t want = start + (uint32_t)(rr / 8) * CUDA_MOE5_SBO + (uint32_t)((kk % 16) / 8) * CUDA_MOE5_LBO +
                                      (uint32_t)(rr % 8) * 16 + (uint32_t)(kk % 8) * 2;
                bad_desc += o != want;
            }
        for (int r0 = 0; r0 < nr; r0 += 8)
            for (int kc = 0; kc < 128; kc += 8) {
                int slots = 0;
                uint32_t block = cuda_moe5_off(r0, kc, nr) / 128;
                for (int l = 0; l < 8; l++) {
                    const uint32_t o = cuda_moe5_off(r0 + l, kc, nr);
                    conflicts += (o & 15) != 0 || o / 128 != block;
                    slots |= 1 << ((o >> 4) & 7);
                }
                conflicts += slots != 0xff;
            }
    }
    tap(bad_map == 0 && bad_desc == 0 && conflicts == 0, "host model of V5's wgmma tiles: layout %ld errors, %ld "
        "elements off the descriptors' canonical layout, %ld conflicting store phases", bad_map, bad_desc, conflicts);
}

/* V6's K order (moe_gemm.h cuda_moe6_phys), on the host against the kernel's two uses of it: a bijection
 * of the stage's 128 K positions; thread t's A fragment of step s (a0/a1: logical 2t, 2t+1; a2/a3: 8+2t,
 * 9+2t) is word c = s / 2, f16 pair q = 2 (s & 1) (+1 for a2/a3) of cuda_moe4_convert's output for its
 * sub-block t, i.e. physical 32t + 8c + 2q + 0..1; and the activation chunk cb's 4-byte group qq goes to
 * logical (s = 4 (cb & 1) + qq, 2 (cb / 2)) and (s, 8 + 2 (cb / 2)), i.e. physical 16 cb + 4 qq + 0..3. */
static void test_v6_order(void)
{
    int seen[128] = {0}, bad = 0;
    for (int s = 0; s < 8; s++)
        for (int kk = 0; kk < 16; kk++) {
            const int p = cuda_moe6_phys(s, kk);
            bad += p < 0 || p >= 128 || seen[p]++;
        }
    for (int t = 0; t < 4; t++)
        for (int s = 0; s < 8; s++)
            for (int e = 0; e < 2; e++) {
                const int c = s >> 1, q = 2 * (s & 1);
                bad += cuda_moe6_phys(s, 2 * t + e) != 32 * t + 8 * c + 2 * q + e;
                bad += cuda_moe6_phys(s, 8 + 2 * t + e) != 32 * t + 8 * c + 2 * (q + 1) + e;
            }
    for (int cb = 0; cb < 8; cb++)
        for (int qq = 0; qq < 4; qq++) {
            const int s = 4 * (cb & 1) + qq, tp = cb >> 1;
            for (int e = 0; e < 2; e++) {
                bad += cuda_moe6_phys(s, 2 * tp + e) != 16 * cb + 4 * qq + e;
                bad += cuda_moe6_phys(s, 8 + 2 * tp + e) != 16 * cb + 4 * qq + 2 + e;
            }
        }
    tap(bad == 0, "host model of V6's K order: a bijection, the A fragments and the activation stores agree (%d errors)",
        bad);
}

/* One V6 CTA on the host, its data flow as moe_gemm6_kernel writes it (the index expressions are the
 * kernel's): each thread (warpgroup wg, warp w4, lane g/t) converts sub-block t of its rows rw and rw + 8
 * (rw = 64 wg + 16 w4 + g) at the row's exponent into the A fragment registers a[s][0..3] (word c, f16
 * pair q -> step 2c + q / 2); the activation chunks go to the f16 tile as two 4-byte stores per 4 e4m3
 * at logical (s, 2t') and (s, 8 + 2t') of cuda_moe5_off; then each warpgroup's 8 wgmma m64nNk16 steps
 * with A from those registers (PTX's m16n8k16 A fragment per warp) and B read through the descriptor's
 * canonical layout (start s * 2048, 8-row groups CUDA_MOE5_SBO apart, the two K core matrices
 * CUDA_MOE5_LBO apart), the accumulator fragment mapped back to (row, pair), and the stage scale
 * 2^(E - 140). Sums in double: every output must equal the exact sum (the products are exact and the
 * scales powers of two), which checks the K permutation end to end without a GPU (CI). */
static void test_v6_cta_model(void)
{
    enum { KS = CTA_KS };
    static uint8_t xh[16384];
    long bad = 0, checked = 0;
    for (int trial = 0; trial < 6; trial++) {
        const int rows = 1 + (int)(next_u64() % 64), nbv = (rows + 7) >> 3;
        const int nN = nbv <= 2 ? 16 : nbv <= 4 ? 32 : nbv <= 6 ? 48 : 64;
        cta_data_fill(rows);
        double acc[128][64];
        memset(acc, 0, sizeof acc);
        for (int kb = 0; kb < KS; kb++) {
            memset(xh, 0, sizeof xh);
            /* activations: thread tid's items i = tid, tid + 256 */
            for (int i = 0; i < 512; i++) {
                if ((i >> 6) >= nbv)
                    continue;
                int rb, cb;
                cuda_moe4_xpiece(i, &rb, &cb);
                for (int qq = 0; qq < 4; qq++) {
                    const int s = 4 * (cb & 1) + qq, tp = cb >> 1;
                    const uint8_t *b4 = &xq[rb][128 * kb + 16 * cb + 4 * qq];
                    const uint32_t lo = f16_bits_exact(cuda_ref_e4m3(b4[0])) | f16_bits_exact(cuda_ref_e4m3(b4[1])) << 16;
                    const uint32_t hi = f16_bits_exact(cuda_ref_e4m3(b4[2])) | f16_bits_exact(cuda_ref_e4m3(b4[3])) << 16;
                    memcpy(xh + cuda_moe5_off(rb, 16 * s + 2 * tp, 64), &lo, 4);
                    memcpy(xh + cuda_moe5_off(rb, 16 * s + 8 + 2 * tp, 64), &hi, 4);
                }
            }
            for (int wg = 0; wg < 2; wg++)
                for (int w4 = 0; w4 < 4; w4++) {
                    /* the warp's registers: a[lane][s][0..3], row scales */
                    static uint32_t a[32][8][4];
                    double rs[32][2];
                    for (int lane = 0; lane < 32; lane++) {
                        const int g = lane >> 2, t = lane & 3, rw = wg * 64 + w4 * 16 + g;
                        for (int h = 0; h < 2; h++) {
                            const int ra = rw + 8 * h;
                            uint32_t o[4][4];
                            const int mx = cta_convert(ra, kb, t, o);
                            for (int c = 0; c < 4; c++) {
                                a[lane][2 * c][h] = o[c][0], a[lane][2 * c][2 + h] = o[c][1];
                                a[lane][2 * c + 1][h] = o[c][2], a[lane][2 * c + 1][2 + h] = o[c][3];
                            }
                            rs[lane][h] = ldexp(1.0, mx - 140);
                        }
                    }
                    double p[32][32];
                    memset(p, 0, sizeof p);
                    for (int s = 0; s < 8; s++) {
                        double A[16][16], B[64][16];
                        for (int lane = 0; lane < 32; lane++) {
                            const int g = lane >> 2, t = lane & 3;
                            for (int j = 0; j < 4; j++)
                                for (int e2 = 0; e2 < 2; e2++)
                                    A[g + 8 * (j & 1)][2 * t + 8 * (j >> 1) + e2] = f16_val(a[lane][s][j] >> (16 * e2) & 0xffffu);
                        }
                        for (int nn = 0; nn < nN; nn++)
                            for (int kk = 0; kk < 16; kk++) {
                                const uint32_t off = (uint32_t)s * 2048 + (uint32_t)(nn >> 3) * CUDA_MOE5_SBO +
                                                     (uint32_t)(kk >> 3) * CUDA_MOE5_LBO + (uint32_t)(nn & 7) * 16 +
                                                     (uint32_t)(kk & 7) * 2;
                                uint16_t hb;
                                memcpy(&hb, xh + off, 2);
                                B[nn][kk] = f16_val(hb);
                            }
                        for (int lane = 0; lane < 32; lane++) {
                            const int g = lane >> 2, t = lane & 3;
                            for (int i = 0; i < nN / 2; i++) {
                                const int m = g + 8 * ((i >> 1) & 1), nn = 8 * (i >> 2) + 2 * t + (i & 1);
                                double d = 0.0;
                                for (int kk = 0; kk < 16; kk++)
                                    d += A[m][kk] * B[nn][kk];
                                p[lane][i] += d;
                            }
                        }
                    }
                    for (int lane = 0; lane < 32; lane++) {
                        const int g = lane >> 2, t = lane & 3;
                        for (int i = 0; i < nN / 2; i++) {
                            const int r = wg * 64 + w4 * 16 + g + 8 * ((i >> 1) & 1), c = 8 * (i >> 2) + 2 * t + (i & 1);
                            acc[r][c] += p[lane][i] * xs[c][kb] * rs[lane][(i >> 1) & 1];
                        }
                    }
                }
        }
        for (int r = 0; r < 128; r++)
            for (int c = 0; c < rows; c++) {
                bad += acc[r][c] != cta_exact(r, c);
                checked++;
            }
    }
    tap(bad == 0, "host model of one V6 CTA (weights into A fragments in the permuted K order, the activation "
        "tile's stores, wgmma's descriptor layout and fragments, stage scale 2^(E - 140)): %ld/%ld outputs differ "
        "from the exact sum", bad, checked);
}

/* e4m3 byte -> value (no NaN among the values used here). */
static double e4m3_value(uint32_t b)
{
    const int ex = (int)((b >> 3) & 15), m = (int)(b & 7);
    const double v = ex == 0 ? ldexp(m, -9) : ldexp(8 + m, ex - 10);
    return (b & 0x80u) ? -v : v;
}

/* V7's A fragments on the host, with the functions the kernel runs (moe_gemm.h cuda_moe7_pick,
 * cuda_moe7_convert): for every thread t of a quad, random sub-blocks and every shift 0..14 of V3's LUT
 * (magnitudes times 2^(idx - 8)), the fragment bytes of a0 (K 4t + j) and a2 (K 16 + 4t + j) decode to
 * the e2m1 values at those K positions of the sub-block times 2^(idx - 8), and the activation ring's
 * offsets are the 128-byte swizzle (a bijection onto each 1024-byte group of 8 rows, the chunk XOR
 * row & 7). */
static void test_v7_fragments(void)
{
    static const double mags[8] = {0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0};
    long bad = 0, checked = 0;
    for (int idx = 0; idx <= 14; idx++) {
        uint32_t l[2] = {0, 0};
        for (int c = 1; c < 8; c++) {
            const double want = ldexp(mags[c], idx - 8);
            uint32_t byte = 256;
            for (uint32_t b = 0; b < 128 && byte == 256; b++)
                if (e4m3_value(b) == want)
                    byte = b;
            bad += byte == 256;
            l[c >> 2] |= (byte & 0xffu) << (8 * (c & 3));
        }
        for (int rep = 0; rep < 64; rep++) {
            uint8_t sub[16];
            for (int i = 0; i < 16; i++)
                sub[i] = (uint8_t)next_u64();
            uint32_t wd[4];
            for (int i = 0; i < 4; i++)
                wd[i] = (uint32_t)sub[4 * i] | (uint32_t)sub[4 * i + 1] << 8 | (uint32_t)sub[4 * i + 2] << 16 |
                        (uint32_t)sub[4 * i + 3] << 24;
            for (int t = 0; t < 4; t++) {
                uint32_t lo, hi;
                cuda_moe7_convert(cuda_moe7_pick(wd[t >> 1], wd[2 + (t >> 1)], t), l[0], l[1], &lo, &hi);
                for (int j = 0; j < 8; j++) {
                    const int kpos = j < 4 ? 4 * t + j : 16 + 4 * t + (j - 4);
                    const uint32_t code = (sub[kpos >> 1] >> (4 * (kpos & 1))) & 15u;
                    const double want = ((code & 8u) ? -1.0 : 1.0) * ldexp(mags[code & 7], idx - 8);
                    const uint32_t byte = ((j < 4 ? lo : hi) >> (8 * (j & 3))) & 0xffu;
                    const double got = e4m3_value(byte);
                    bad += !(got == want || (want == 0.0 && got == 0.0));
                    checked++;
                }
            }
        }
    }
    int layout_bad = 0;
    for (int g8 = 0; g8 < 8; g8++) {
        int seen[64] = {0};
        for (int r = 8 * g8; r < 8 * g8 + 8; r++)
            for (int c = 0; c < 8; c++) {
                const uint32_t off = cuda_moe7_xoff(r, c);
                layout_bad += off / 1024 != (uint32_t)g8 || off % 16 != 0 ||
                              (off % 1024) / 128 != (uint32_t)(r & 7) || ((off % 128) / 16) != (uint32_t)(c ^ (r & 7));
                seen[(off % 1024) / 16]++;
            }
        for (int i = 0; i < 64; i++)
            layout_bad += seen[i] != 1;
    }
    tap(bad == 0 && layout_bad == 0, "host model of V7's A fragments (pick + e4m3 conversion at every LUT shift): "
        "%ld/%ld bytes wrong; activation ring's 128-byte swizzle: %d errors", bad, checked, layout_bad);
}

static void test_env_variant(void)
{
    static const char *const bad[] = {"", "0", ":", "44", "x", "3 ", "-1"};
    int ok = cuda_moe_gemm_variant_of_env(NULL) == CUDA_MOE_GEMM_UNSET &&
             cuda_moe_gemm_variant_of_env("1") == CUDA_MOE_GEMM_V1 &&
             cuda_moe_gemm_variant_of_env("2") == CUDA_MOE_GEMM_V2 &&
             cuda_moe_gemm_variant_of_env("3") == CUDA_MOE_GEMM_V3 && cuda_moe_gemm_variant_of_env("4") == CUDA_MOE_GEMM_V4 &&
             cuda_moe_gemm_variant_of_env("5") == CUDA_MOE_GEMM_V5 && cuda_moe_gemm_variant_of_env("6") == CUDA_MOE_GEMM_V6 &&
             cuda_moe_gemm_variant_of_env("7") == CUDA_MOE_GEMM_V7 && cuda_moe_gemm_variant_of_env("8") == CUDA_MOE_GEMM_V8 &&
             cuda_moe_gemm_variant_of_env("9") == CUDA_MOE_GEMM_V9;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ok &= cuda_moe_gemm_variant_of_env(bad[i]) == CUDA_MOE_GEMM_UNSET;
    tap(ok, "CTX_CUDA_MOE_GEMM: \"1\"..\"9\" force V1..V9, unset or anything else leaves the default; this "
        "run: V%d", cuda_moe_gemm_default_variant() + 1);
    /* one kernel at every size (V4-Flash's calls: w2 over S k pairs, w1|w3 over 2 S k), so that chunked
     * prefills stay bit-identical to one chunk */
    const int forced = cuda_moe_gemm_variant_of_env(getenv("CTX_CUDA_MOE_GEMM"));
    tap(CUDA_MOE_GEMM_DEFAULT == CUDA_MOE_GEMM_V6 &&
            cuda_moe_gemm_default_variant() == (forced != CUDA_MOE_GEMM_UNSET ? forced : CUDA_MOE_GEMM_V6),
        "the default kernel: V6 at every size (unless CTX_CUDA_MOE_GEMM forces one)");
}

int main(void)
{
    if (cuda_device_count() == 0) {
        test_scaled_accumulation();
        test_v3_conversion();
        test_v4_conversion();
        test_v4_layout();
        test_v4_cta_model();
        test_v5_layout();
        test_v6_order();
        test_v6_cta_model();
        test_v7_fragments();
        test_env_variant();
        printf("# no CUDA device: the device cases are skipped\n1..%d\n", n_test);
        return n_fail ? 1 : 0;
    }
    test_scaled_accumulation();
    test_v3_conversion();
    test_v4_conversion();
    test_v4_layout();
    test_v4_cta_model();
    test_v5_layout();
    test_v6_order();
    test_v6_cta_model();
    test_v7_fragments();
    test_env_variant();
    struct ctx_err e;
    char name[256];
    int sms = 0;
    must(cuda_device_name(name, sizeof name, &sms, &e), &e);
    printf("# device: %s, %d SMs\n", name, sms);
    int occ[CUDA_MOE_GEMM_NVARIANTS] = {0, 0, 0, 0, 0, 0, 0, 0, 0};
    for (int v = 0; v < CUDA_MOE_GEMM_NVARIANTS; v++)
        must(cuda_moe_gemm_ctas_per_sm(v, &occ[v], &e), &e);
    printf("# CTAs per SM (occupancy): V1 %d, V2 %d, V3 %d, V4 %d, V5 %d, V6 %d, V7 %d, V8 %d, V9 %d\n", occ[0],
           occ[1], occ[2], occ[3], occ[4], occ[5], occ[6], occ[7], occ[8]);
    tap(occ[6] == 2 && occ[7] == 1 && occ[8] == 1, "V7 runs two CTAs an SM (%d), V8 one (%d), V9 one (%d)", occ[6],
        occ[7], occ[8]);
    test_errors();
    static const struct mcase cases[] = {
        /* V4-Flash routing (256 experts, top-6) at small matrices, S from 1 to 4096 */
        {"flash S=1 w1|w3", 256, 512, 256, 1, 6, R_RANDOM, 2},
        {"flash S=37 w2", 256, 512, 256, 37, 6, R_RANDOM, 1},
        {"flash S=300 w1", 192, 640, 256, 300, 6, R_RANDOM, 0},
        {"flash S=4096 w1|w3", 64, 256, 256, 4096, 6, R_RANDOM, 2},
        {"flash S=4096 w2", 200, 128, 256, 4096, 6, R_RANDOM, 1},
        /* V4-Pro routing (384 experts) */
        {"pro S=1000 w1", 192, 896, 384, 1000, 6, R_RANDOM, 0},
        {"pro S=2048 w1|w3", 96, 256, 384, 2048, 6, R_RANDOM, 2},
        /* skewed: one expert in every token, the rest among 8 (248 of 256 empty); every token on one */
        {"hot S=2048 w1", 128, 384, 256, 2048, 6, R_HOT, 0},
        {"hot S=130 w2", 256, 512, 256, 130, 6, R_HOT, 1},
        {"one S=4096", 160, 256, 256, 4096, 1, R_ONE, 0},
        {"one S=3", 300, 384, 256, 3, 1, R_ONE, 0},
        /* the real matrices: Flash w1 (2048 x 4096), w2 (4096 x 2048), Pro w1 (3072 x 7168) */
        {"flash shapes w1|w3", 2048, 4096, 16, 8, 6, R_RANDOM, 2},
        {"flash shapes w2", 4096, 2048, 16, 8, 6, R_RANDOM, 1},
        {"pro shapes w1", 3072, 7168, 8, 3, 6, R_RANDOM, 0},
        /* scales outside the default kernel's fast range: warps switch to V1's arithmetic mid-K */
        {"extreme scales w1", 256, 1024, 64, 200, 6, R_RANDOM, 0, 1},
        {"extreme scales w1|w3", 320, 2048, 32, 40, 6, R_RANDOM, 2, 1},
        {"extreme scales w2", 192, 512, 256, 700, 6, R_RANDOM, 1, 1},
        /* V3's exactness guard: sub-block scales 14 (exact, chained) and 15 (every stage falls back)
         * below their row's 128-K block maximum */
        {"spread 14 w1", 256, 1024, 64, 200, 6, R_RANDOM, 0, 0, 14},
        {"spread 14 w2", 320, 512, 256, 300, 6, R_RANDOM, 1, 0, 14},
        {"spread 15 w1", 256, 1024, 64, 200, 6, R_RANDOM, 0, 0, 15},
        {"spread 15 w1|w3", 192, 512, 32, 50, 6, R_RANDOM, 2, 0, 15},
        /* V7's guard: 12 (the 0.5s are e4m3 subnormals, fast path) and 13 (every warp falls back) */
        {"spread 12 w1", 256, 1024, 64, 200, 6, R_RANDOM, 0, 0, 12},
        {"spread 12 w2", 320, 512, 256, 300, 6, R_RANDOM, 1, 0, 12},
        {"spread 13 w1|w3", 192, 512, 32, 50, 6, R_RANDOM, 2, 0, 13},
        /* V8's 128-pair CTAs where warps fall back: 112 and 150 pairs an expert */
        {"extreme scales wide w1", 256, 512, 16, 300, 6, R_RANDOM, 0, 1},
        {"spread 13 wide w2", 192, 512, 16, 400, 6, R_RANDOM, 1, 0, 13},
        /* small enough for CTX_MOE_QUICK (compute-sanitizer): 75 pairs an expert */
        {"wide quick w1|w3", 64, 256, 8, 100, 6, R_RANDOM, 2},
        {"wide quick spread 13 w2", 64, 256, 8, 100, 6, R_RANDOM, 1, 0, 13},
        /* V4's guard: 26 (exact in f16, fast path; V3 falls back) and 27 (every stage of both falls back) */
        {"spread 26 w1", 256, 1024, 64, 200, 6, R_RANDOM, 0, 0, 26},
        {"spread 26 w1|w3", 192, 512, 32, 50, 6, R_RANDOM, 2, 0, 26},
        {"spread 27 w1", 256, 1024, 64, 200, 6, R_RANDOM, 0, 0, 27},
        {"spread 27 w2", 320, 512, 256, 300, 6, R_RANDOM, 1, 0, 27},
        /* the default at V4-Flash's w2 of S = 512 (3072 pairs) and S = 2048 (12288): V4 at both */
        {"size 3072 pairs w2", 128, 256, 256, 512, 6, R_RANDOM, 1, 0, 20, 6},
        {"size 12288 pairs w2", 128, 256, 256, 2048, 6, R_RANDOM, 1, 0, 20, 6},
    };
    /* CTX_MOE_QUICK=1: the small cases only (for compute-sanitizer, which slows kernels ~100x) */
    const char *quick = getenv("CTX_MOE_QUICK");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (!quick || !*quick || (long)cases[i].S * cases[i].topk * cases[i].n * cases[i].k <= (1L << 25))
            run_case(&cases[i]);
    printf("1..%d\n", n_test);
    return n_fail ? 1 : 0;
}
