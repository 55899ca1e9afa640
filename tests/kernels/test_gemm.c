/* The CUDA products of kernels/gemm.h against the plain C reference kernels/ref.c, on random data at
 * V4 shapes and ragged ones. Prints TAP; without a CUDA device it prints "1..0 # SKIP" (meson's TAP
 * reader counts that as skipped), so CI, which builds with CUDA but has no GPU, skips it.
 *
 * Tolerances, and why:
 * - activation quantisation is deterministic: q bytes and scales must be identical;
 * - products: the reference computes each K block's partial exactly and rounds it once to fp32; the
 *   GPU sums the products of a block in the tensor core's fp32 accumulator and adds the scaled
 *   partials in another order (split over warps). For round-to-nearest fp32 sums of at most 128
 *   products per block and at most 224 blocks per row (k = 7168 in 32-blocks), the standard bound
 *   (n-1) u sum|terms| (u = 2^-24) stays below 2^-16 mag, mag = sum |w x| * act_scale * weight_scale;
 *   the bf16 rounding of the output adds at most one bf16 ulp of the result. So each output must
 *   satisfy
 *       |y_gpu - y_ref| <= ulp_bf16(|y_ref|) + EPS * mag,   EPS = 2^-15 (that bound, 2x margin),
 *   and the test prints the largest (|y_gpu - y_ref| - ulp) / mag seen and the share of outputs
 *   equal to bf16(y_ref). (Hopper's FP8 wgmma with fast accumulation keeps only ~14 bits, DeepSeek-V3
 *   §3.3.2; the bound checks that mma.sync does not: on the H200 it matched bf16(ref) on every
 *   output.) A wrong scale on one block of a 128-block row (FP4, k = 4096) moves a result by about
 *   mag/128 = 256 EPS mag, so indexing and scale bugs fail.
 * - the FP4 grouped GEMV's second kernel (CUDA_FP4_GEMV_V2, every configuration) computes each block
 *   partial exactly in integers and sums in the reference's order, so it must give bf16(ref) on
 *   every output, not just stay within the bound;
 * - the prefill GEMM's second kernel (CUDA_FP8_GEMM_V2, every tile) must give V1's bytes exactly
 *   (test_fp8_variants); CTX_TEST_GEMM_QUICK=1 runs only a few of those cases (for compute-sanitizer).
 * - cuBLASLt's block-scaled FP8 kernel does accumulate each 128-K block with that narrower
 *   accumulator (about 13 fraction bits): on the H200 about 0.5% of its outputs exceeded the fp32
 *   bound, the largest by 4.9e-4 mag (2^-11). Its bound is EPS_LT = 2^-9: 2^-13 per step of the
 *   accumulator over the 4 k32 steps of a block is 2^-11 per block, with 4x margin. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gemm.h"
#include "ref.h"
#define TEST_RNG_SEED 0x9e3779b97f4a7c15ull
#include "tap.h"

#define EPS (1.0 / 32768.0)
#define EPS_LT (1.0 / 512.0)




/* Activations with per-block magnitudes from 2^-12 to 2^6, some all-zero and some tiny blocks (the
 * 1e-4 amax floor), and an occasional outlier. */
static void gen_act(uint16_t *x, int m, int k)
{
    for (int i = 0; i < m; i++)
        for (int b = 0; b < k / 128; b++) {
            int kind = (int)(next_u64() % 16);
            double mag = ldexp(1.0, (int)(next_u64() % 19) - 12);
            for (int j = 0; j < 128; j++) {
                double v = kind == 0 ? 0.0 : kind == 1 ? gauss() * 1e-6 : gauss() * mag;
                if (kind == 2 && j == 17)
                    v = 300.0 * mag;
                x[(size_t)i * k + (size_t)b * 128 + j] = cuda_ref_f32_to_bf16((float)v);
            }
        }
}
static void gen_e4m3(uint8_t *w, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        uint8_t b;
        do
            b = (uint8_t)next_u64();
        while ((b & 0x7f) == 0x7f);
        w[i] = b;
    }
}
static void gen_bytes(uint8_t *w, size_t count)
{
    for (size_t i = 0; i < count; i++)
        w[i] = (uint8_t)next_u64();
}
static void gen_scales(uint8_t *s, size_t count, int lo, int hi)
{
    for (size_t i = 0; i < count; i++)
        s[i] = (uint8_t)(127 + lo + (int)(next_u64() % (uint64_t)(hi - lo + 1)));
}

static void *dev_copy(const void *h, size_t bytes)
{
    struct ctx_err e;
    void *d;
    if (cuda_malloc(&d, bytes, &e) || cuda_h2d(d, h, bytes, &e)) {
        fprintf(stderr, "# %s\n", e.msg);
        exit(1);
    }
    return d;
}

static double ulp_bf16(double v)
{
    v = fabs(v);
    if (v < 0x1p-126)
        return 0x1p-133;
    int e;
    frexp(v, &e); /* v in [2^(e-1), 2^e) */
    return ldexp(1.0, e - 1 - 7);
}

struct cmp {
    double worst;  /* max (|d| - ulp) / mag over outputs */
    long exact, total, bad;
};

static void compare(const uint16_t *gpu, const float *ref, const double *mag, size_t count, double eps,
                    struct cmp *c)
{
    memset(c, 0, sizeof *c);
    c->worst = -1e300;
    for (size_t i = 0; i < count; i++) {
        double g = cuda_ref_bf16_to_f32(gpu[i]), r = ref[i];
        double d = fabs(g - r), u = ulp_bf16(r);
        double rel = mag[i] > 0 ? (d - u) / mag[i] : (d > u ? 1e300 : -1e300);
        if (rel > c->worst)
            c->worst = rel;
        if (!(d <= u + eps * mag[i]))
            c->bad++;
        if (gpu[i] == cuda_ref_f32_to_bf16(ref[i]))
            c->exact++;
        c->total++;
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

/* ---- activation quantisation ---- */

static void test_act_quant(int m, int k)
{
    struct ctx_err e;
    uint16_t *x = malloc(sizeof *x * (size_t)m * k);
    uint8_t *q = malloc((size_t)m * k), *qg = malloc((size_t)m * k);
    float *sa = malloc(sizeof *sa * (size_t)m * (k / 128)), *sg = malloc(sizeof *sg * (size_t)(m + 3) * (k / 128));
    gen_act(x, m, k);
    cuda_ref_act_quant(x, m, k, q, sa);
    void *dx = dev_copy(x, sizeof *x * (size_t)m * k), *dq, *ds, *dst;
    must(cuda_malloc(&dq, (size_t)m * k, &e), &e);
    must(cuda_malloc(&ds, sizeof(float) * (size_t)m * (k / 128), &e), &e);
    must(cuda_malloc(&dst, sizeof(float) * (size_t)(m + 3) * (k / 128), &e), &e);
    must(cuda_act_quant(dx, m, k, dq, ds, 0, NULL, &e), &e);
    must(cuda_act_quant(dx, m, k, dq, dst, 1, NULL, &e), &e);
    must(cuda_d2h(qg, dq, (size_t)m * k, &e), &e);
    long qdiff = 0, sdiff = 0, tdiff = 0;
    for (size_t i = 0; i < (size_t)m * k; i++)
        qdiff += q[i] != qg[i];
    must(cuda_d2h(sg, ds, sizeof(float) * (size_t)m * (k / 128), &e), &e);
    for (int i = 0; i < m * (k / 128); i++)
        sdiff += memcmp(&sa[i], &sg[i], 4) != 0;
    must(cuda_d2h(sg, dst, sizeof(float) * (size_t)((m + 3) / 4 * 4) * (k / 128), &e), &e);
    for (int i = 0; i < m; i++)
        for (int b = 0; b < k / 128; b++)
            tdiff += memcmp(&sa[(size_t)i * (k / 128) + b], &sg[(size_t)b * ((m + 3) / 4 * 4) + i], 4) != 0;
    tap(qdiff == 0 && sdiff == 0 && tdiff == 0,
        "act_quant m=%d k=%d: e4m3 bytes differing %ld/%ld, scales differing %ld (+%ld transposed)", m, k, qdiff,
        (long)m * k, sdiff, tdiff);
    cuda_free(dx), cuda_free(dq), cuda_free(ds), cuda_free(dst);
    free(x), free(q), free(qg), free(sa), free(sg);
}

/* ---- FP8 products ---- */

struct fp8_case {
    int m, n, k;
    uint16_t *x;
    uint8_t *q, *w, *ws;
    float *sa, *ref;
    double *mag;
    void *dq, *dsa, *dw, *dws, *dy;
};

static void fp8_case_new(struct fp8_case *c, int m, int n, int k)
{
    struct ctx_err e;
    c->m = m, c->n = n, c->k = k;
    int nb = (n + 127) / 128, kb = k / 128;
    c->x = malloc(sizeof *c->x * (size_t)m * k);
    c->q = malloc((size_t)m * k);
    c->sa = malloc(sizeof(float) * (size_t)m * kb);
    c->w = malloc((size_t)n * k);
    c->ws = malloc((size_t)nb * kb);
    c->ref = malloc(sizeof(float) * (size_t)m * n);
    c->mag = malloc(sizeof(double) * (size_t)m * n);
    gen_act(c->x, m, k);
    gen_e4m3(c->w, (size_t)n * k);
    gen_scales(c->ws, (size_t)nb * kb, -12, 0);
    cuda_ref_act_quant(c->x, m, k, c->q, c->sa);
    cuda_ref_fp8_gemm(c->q, c->sa, m, c->w, c->ws, n, k, c->ref, c->mag);
    c->dq = dev_copy(c->q, (size_t)m * k);
    c->dsa = dev_copy(c->sa, sizeof(float) * (size_t)m * kb);
    c->dw = dev_copy(c->w, (size_t)n * k);
    c->dws = dev_copy(c->ws, (size_t)nb * kb);
    must(cuda_malloc(&c->dy, sizeof(uint16_t) * (size_t)m * n, &e), &e);
}

static void fp8_case_free(struct fp8_case *c)
{
    cuda_free(c->dq), cuda_free(c->dsa), cuda_free(c->dw), cuda_free(c->dws), cuda_free(c->dy);
    free(c->x), free(c->q), free(c->sa), free(c->w), free(c->ws), free(c->ref), free(c->mag);
}

static void check_fp8(struct fp8_case *c, const char *what)
{
    struct ctx_err e;
    struct cmp r;
    size_t cnt = (size_t)c->m * c->n;
    uint16_t *y = malloc(sizeof *y * cnt);
    must(cuda_d2h(y, c->dy, sizeof *y * cnt, &e), &e);
    compare(y, c->ref, c->mag, cnt, EPS, &r);
    tap(r.bad == 0, "%s m=%d n=%d k=%d: %ld/%ld outside the bound, max (|d|-ulp)/mag = %.3g (EPS = %.3g), "
        "bit-equal to bf16(ref) %.1f%%", what, c->m, c->n, c->k, r.bad, r.total, r.worst, EPS,
        100.0 * (double)r.exact / (double)r.total);
    free(y);
}

static void test_fp8(int m, int n, int k)
{
    struct ctx_err e;
    struct fp8_case c;
    fp8_case_new(&c, m, n, k);
    if (m <= 8) {
        must(cuda_memset(c.dy, 0xff, sizeof(uint16_t) * (size_t)m * n, &e), &e);
        must(cuda_fp8_gemv(c.dq, c.dsa, m, c.dw, c.dws, n, k, c.dy, NULL, &e), &e);
        must(cuda_sync(&e), &e);
        check_fp8(&c, "fp8_gemv");
        /* the warps' partials are added in a fixed order: repeated runs give the same bits */
        size_t cnt = (size_t)m * n;
        uint16_t *y1 = malloc(sizeof *y1 * cnt), *y2 = malloc(sizeof *y2 * cnt);
        must(cuda_d2h(y1, c.dy, sizeof *y1 * cnt, &e), &e);
        for (int rep = 0; rep < 3; rep++)
            must(cuda_fp8_gemv(c.dq, c.dsa, m, c.dw, c.dws, n, k, c.dy, NULL, &e), &e);
        must(cuda_d2h(y2, c.dy, sizeof *y2 * cnt, &e), &e);
        tap(memcmp(y1, y2, sizeof *y1 * cnt) == 0, "fp8_gemv m=%d n=%d k=%d: repeated runs are bit-identical", m, n, k);
        free(y1), free(y2);
    }
    must(cuda_memset(c.dy, 0xff, sizeof(uint16_t) * (size_t)m * n, &e), &e);
    must(cuda_fp8_gemm(c.dq, c.dsa, m, c.dw, c.dws, n, k, c.dy, NULL, &e), &e);
    must(cuda_sync(&e), &e);
    check_fp8(&c, "fp8_gemm");
    fp8_case_free(&c);
}

/* Every kernel of cuda_fp8_gemm_variant gives the bytes of the first (CUDA_FP8_GEMM_V1): random e4m3
 * bytes on both sides (every value but NaN, so partials span the whole exponent range and round),
 * power-of-two activation scales from 2^-24 to 2^8 with some all-zero blocks, weight scales 2^-20 to
 * 2^4; outputs poisoned (NaN) before each run, so an unwritten output differs too. One assertion per
 * shape covering every variant. */
static void test_fp8_variants(int m, int n, int k)
{
    struct ctx_err e;
    int nb = (n + 127) / 128, kb = k / 128;
    size_t cnt = (size_t)m * n;
    uint8_t *q = malloc((size_t)m * k), *w = malloc((size_t)n * k), *ws = malloc((size_t)nb * kb);
    float *sa = malloc(sizeof(float) * (size_t)m * kb);
    gen_e4m3(q, (size_t)m * k);
    gen_e4m3(w, (size_t)n * k);
    gen_scales(ws, (size_t)nb * kb, -20, 4);
    for (size_t i = 0; i < (size_t)m * kb; i++) {
        sa[i] = (float)ldexp(1.0, (int)(next_u64() % 33) - 24);
        if (next_u64() % 16 == 0) /* a zero block (amax floor case's bytes are small, not zero) */
            memset(q + (i / kb) * (size_t)k + (i % kb) * 128, 0, 128);
    }
    void *dq = dev_copy(q, (size_t)m * k), *dw = dev_copy(w, (size_t)n * k), *dws = dev_copy(ws, (size_t)nb * kb);
    void *dsa = dev_copy(sa, sizeof(float) * (size_t)m * kb), *dy;
    must(cuda_malloc(&dy, sizeof(uint16_t) * (cnt + 8), &e), &e);
    uint16_t *y1 = malloc(sizeof *y1 * cnt), *yv = malloc(sizeof *yv * cnt);
    must(cuda_memset(dy, 0xff, sizeof(uint16_t) * cnt, &e), &e);
    must(cuda_fp8_gemm_variant(dq, dsa, m, dw, dws, n, k, dy, CUDA_FP8_GEMM_V1, NULL, &e), &e);
    must(cuda_d2h(y1, dy, sizeof *y1 * cnt, &e), &e);
    long nan1 = 0;
    for (size_t i = 0; i < cnt; i++)
        nan1 += (y1[i] & 0x7fff) > 0x7f80;
    char bad[512] = "";
    int nbad = 0;
    for (int v = CUDA_FP8_GEMM_V1 + 1; v < CUDA_FP8_GEMM_NVARIANTS; v++) {
        must(cuda_memset(dy, 0xff, sizeof(uint16_t) * cnt, &e), &e);
        must(cuda_fp8_gemm_variant(dq, dsa, m, dw, dws, n, k, dy, v, NULL, &e), &e);
        must(cuda_d2h(yv, dy, sizeof *yv * cnt, &e), &e);
        long diff = 0;
        for (size_t i = 0; i < cnt; i++)
            diff += yv[i] != y1[i];
        if (diff) {
            size_t l = strlen(bad);
            snprintf(bad + l, sizeof bad - l, " [%s: %ld differ]", cuda_fp8_gemm_variant_name(v), diff);
            nbad++;
        }
    }
    /* an output pointer that is 2-byte but not 16-byte aligned (V2 then stores element by element) */
    uint16_t *dy_odd = (uint16_t *)dy + 1;
    must(cuda_memset(dy, 0xff, sizeof(uint16_t) * (cnt + 8), &e), &e);
    must(cuda_fp8_gemm_variant(dq, dsa, m, dw, dws, n, k, dy_odd, CUDA_FP8_GEMM_V2, NULL, &e), &e);
    must(cuda_d2h(yv, dy_odd, sizeof *yv * cnt, &e), &e);
    int odd_eq = memcmp(yv, y1, sizeof *yv * cnt) == 0;
    tap(nbad == 0 && nan1 == 0 && odd_eq,
        "fp8_gemm variants m=%d n=%d k=%d: all %d kernels byte-equal to V1 (%ld NaN in V1)%s, V2 into an unaligned "
        "output %s",
        m, n, k, CUDA_FP8_GEMM_NVARIANTS - 1, nan1, bad, odd_eq ? "too" : "DIFFERS");
    cuda_free(dq), cuda_free(dw), cuda_free(dws), cuda_free(dsa), cuda_free(dy);
    free(q), free(w), free(ws), free(sa), free(y1), free(yv);
}

/* The fused decode GEMV (fp32 input quantised inside, fp32 out, rows split over two outputs), for m = 1
 * or 2 tokens: the same bits as cuda_act_quant on bf16(x) + cuda_fp8_gemv (m tokens) + bf16 -> fp32, and
 * within the bound of the reference. Some inputs are not bf16 values (the kernel rounds them first). */
static void test_fp8_f32(int m, int n, int n1, int k)
{
    struct ctx_err e;
    int nb = (n + 127) / 128, kb = k / 128;
    size_t mk = (size_t)m * k, mn = (size_t)m * n;
    uint16_t *xb = malloc(sizeof *xb * mk);
    float *xf = malloc(sizeof *xf * mk), *sa = malloc(sizeof *sa * (size_t)m * kb);
    uint8_t *q = malloc(mk), *w = malloc((size_t)n * k), *ws = malloc((size_t)nb * kb);
    float *ref = malloc(sizeof *ref * mn), *yf = malloc(sizeof *yf * mn);
    double *mag = malloc(sizeof *mag * mn);
    uint16_t *yb = malloc(sizeof *yb * mn), *yr = malloc(sizeof *yr * mn);
    gen_act(xb, m, k);
    for (size_t i = 0; i < mk; i++) {
        xf[i] = cuda_ref_bf16_to_f32(xb[i]);
        if (next_u64() % 3 == 0) { /* low mantissa bits set: rounds to a neighbouring bf16 (or stays) */
            uint32_t u;
            memcpy(&u, &xf[i], 4);
            if ((u & 0x7f800000u) != 0x7f800000u && (u & 0x7fffffffu) != 0) {
                u |= (uint32_t)(next_u64() & 0xffffu);
                memcpy(&xf[i], &u, 4);
            }
        }
        xb[i] = cuda_ref_f32_to_bf16(xf[i]);
    }
    gen_e4m3(w, (size_t)n * k);
    gen_scales(ws, (size_t)nb * kb, -12, 0);
    cuda_ref_act_quant(xb, m, k, q, sa);
    cuda_ref_fp8_gemm(q, sa, m, w, ws, n, k, ref, mag);
    void *dxf = dev_copy(xf, sizeof *xf * mk), *dxb = dev_copy(xb, sizeof *xb * mk);
    void *dw = dev_copy(w, (size_t)n * k), *dws = dev_copy(ws, (size_t)nb * kb), *dy, *dq, *dsa, *dyb;
    must(cuda_malloc(&dy, sizeof(float) * mn, &e), &e);
    must(cuda_malloc(&dyb, sizeof(uint16_t) * mn, &e), &e);
    must(cuda_malloc(&dq, mk, &e), &e);
    must(cuda_malloc(&dsa, sizeof(float) * (size_t)m * kb, &e), &e);
    must(cuda_memset(dy, 0xff, sizeof(float) * mn, &e), &e);
    float *dy1 = dy, *dy2 = (float *)dy + (size_t)m * n1; /* [m][n1] then [m][n - n1] */
    if (m == 1)
        must(cuda_fp8_gemv_f32(dxf, dw, dws, n, k, dy1, n1, n1 < n ? dy2 : NULL, NULL, &e), &e);
    else
        must(cuda_fp8_gemv_f32m(dxf, m, dw, dws, n, k, dy1, n1, n1 < n ? dy2 : NULL, NULL, &e), &e);
    must(cuda_act_quant(dxb, m, k, dq, dsa, 0, NULL, &e), &e);
    must(cuda_fp8_gemv(dq, dsa, m, dw, dws, n, k, dyb, NULL, &e), &e);
    must(cuda_sync(&e), &e);
    float *y2 = malloc(sizeof *y2 * mn);
    must(cuda_d2h(y2, dy, sizeof(float) * mn, &e), &e);
    must(cuda_d2h(yr, dyb, sizeof(uint16_t) * mn, &e), &e);
    for (int r = 0; r < m; r++) /* [m][n1] + [m][n - n1] back to [m][n] */
        for (int i = 0; i < n; i++)
            yf[(size_t)r * n + i] = i < n1 ? y2[(size_t)r * n1 + i] : y2[(size_t)m * n1 + (size_t)r * (n - n1) + i - n1];
    long same = 0, notbf = 0;
    for (size_t i = 0; i < mn; i++) {
        yb[i] = cuda_ref_f32_to_bf16(yf[i]);
        notbf += cuda_ref_bf16_to_f32(yb[i]) != yf[i] && yf[i] == yf[i];
        same += yb[i] == yr[i];
    }
    struct cmp r;
    compare(yb, ref, mag, mn, EPS, &r);
    tap(r.bad == 0 && same == (long)mn && notbf == 0,
        "fp8_gemv_f32 m=%d n=%d (split %d + %d) k=%d: %ld/%ld outside the bound, max (|d|-ulp)/mag = %.3g; bit-equal to "
        "act_quant + fp8_gemv %ld/%zu; outputs not bf16 values %ld", m, n, n1, n - n1, k, r.bad, r.total, r.worst, same,
        mn, notbf);
    cuda_free(dxf), cuda_free(dxb), cuda_free(dw), cuda_free(dws), cuda_free(dy), cuda_free(dq), cuda_free(dsa);
    cuda_free(dyb);
    free(xb), free(xf), free(sa), free(q), free(w), free(ws), free(ref), free(yf), free(mag), free(yb), free(yr);
    free(y2);
}

/* cuBLASLt: every scale layout is tried; the one cuda_lt_layout() names must pass. */
static void test_lt(int m, int n, int k)
{
    struct ctx_err e;
    struct fp8_case c;
    fp8_case_new(&c, m, n, k);
    int nb = (n + 127) / 128, kb = k / 128, ld = (kb + 3) / 4 * 4;
    void *dws32, *dsat, *dx;
    must(cuda_malloc(&dws32, sizeof(float) * (size_t)(nb + 4) * (ld + 4), &e), &e);
    must(cuda_malloc(&dsat, sizeof(float) * (size_t)(m + 3) * kb, &e), &e);
    dx = dev_copy(c.x, sizeof(uint16_t) * (size_t)m * k);
    int want = cuda_lt_layout(), want_ok = 0, any = 0;
    for (int layout = 0; layout < 4; layout++) {
        struct cuda_lt_plan *p;
        int rc = cuda_lt_plan_new(&p, m, n, k, layout, &e);
        if (rc == CTX_EUNSUPPORTED) {
            printf("# lt layout %d m=%d n=%d k=%d: %s\n", layout, m, n, k, e.msg);
            continue;
        }
        must(rc, &e);
        any = 1;
        must(cuda_e8m0_to_f32(c.dws, nb, kb, ld, (layout & CUDA_LT_W_T) != 0, dws32, NULL, &e), &e);
        must(cuda_act_quant(dx, m, k, c.dq, dsat, layout & CUDA_LT_ACT_T, NULL, &e), &e);
        must(cuda_memset(c.dy, 0xff, sizeof(uint16_t) * (size_t)m * n, &e), &e);
        must(cuda_lt_run(p, c.dq, dsat, c.dw, dws32, c.dy, NULL, &e), &e);
        must(cuda_sync(&e), &e);
        uint16_t *y = malloc(sizeof *y * (size_t)m * n);
        must(cuda_d2h(y, c.dy, sizeof *y * (size_t)m * n, &e), &e);
        struct cmp r;
        compare(y, c.ref, c.mag, (size_t)m * n, EPS_LT, &r);
        printf("# lt layout %d m=%d n=%d k=%d: %ld/%ld outside the bound, max (|d|-ulp)/mag = %.3g (EPS_LT = %.3g), "
               "bit-equal %.1f%%\n", layout, m, n, k, r.bad, r.total, r.worst, EPS_LT,
               100.0 * (double)r.exact / (double)r.total);
        if (layout == want)
            want_ok = r.bad == 0;
        free(y);
        cuda_lt_plan_free(p);
    }
    if (!any)
        printf("ok %d - # SKIP cuBLASLt offers no block-scaled FP8 algorithm here\n", ++n_test);
    else
        tap(want_ok, "cublaslt fp8 block-scaled (layout %d) m=%d n=%d k=%d within EPS_LT", want, m, n, k);
    cuda_free(dws32), cuda_free(dsat), cuda_free(dx);
    fp8_case_free(&c);
}

/* cuBLASLt for any m (cuda_lt_ctx, the engine's prefill products): within EPS_LT of the reference
 * at m = max_m, and every row of calls with fewer rows (the same shape's algorithm) byte-equal to the
 * max_m call's, for chunks of `chunk` rows (a chunked prefill's property). */
static void test_lt_ctx(int max_m, int n, int k, int chunk)
{
    struct ctx_err e;
    struct fp8_case c;
    struct cuda_lt_ctx *lt = NULL;
    must(cuda_lt_ctx_new(&lt, max_m, &e), &e);
    int ok = cuda_lt_ctx_supports(lt, n, k, &e);
    if (ok != 1) {
        printf("ok %d - # SKIP cuda_lt_ctx n=%d k=%d: %s\n", ++n_test, n, k, e.msg);
        cuda_lt_ctx_free(lt);
        return;
    }
    char desc[256];
    cuda_lt_ctx_describe(lt, n, k, desc, sizeof desc);
    printf("# cuda_lt_ctx max_m %d: %s\n", max_m, desc);
    fp8_case_new(&c, max_m, n, k);
    int nb = (n + 127) / 128, kb = k / 128, ld = (kb + 3) / 4 * 4, top = max_m + CUDA_LT_PAD_MAX;
    int mp = cuda_lt_ctx_rows(lt, max_m, n, k);
    void *dws32, *dsat, *dx, *dq, *dyt;
    must(cuda_malloc(&dws32, sizeof(float) * (size_t)nb * ld, &e), &e);
    must(cuda_malloc(&dsat, sizeof(float) * (size_t)top * kb, &e), &e);
    must(cuda_malloc(&dq, (size_t)top * k, &e), &e); /* a chunk at p reads up to p + 127 rows */
    must(cuda_malloc(&dyt, sizeof(uint16_t) * (size_t)n * top, &e), &e);
    dx = dev_copy(c.x, sizeof(uint16_t) * (size_t)max_m * k);
    must(cuda_e8m0_to_f32(c.dws, nb, kb, ld, 0, dws32, NULL, &e), &e);
    must(cuda_memset(dq, 0x7f, (size_t)top * k, &e), &e); /* padding rows: NaN bytes, must not leak */
    must(cuda_memset(dsat, 0, sizeof(float) * (size_t)top * kb, &e), &e);
    /* the scales row-major from cuda_act_quant, transposed here with the context's ld mp (its own
     * transposed layout has ld round_up(m, 4)); the padding tokens' scales stay 0 */
    must(cuda_act_quant(dx, max_m, k, dq, dsat, 0, NULL, &e), &e);
    float *sa = malloc(sizeof(float) * (size_t)max_m * kb), *sat = calloc((size_t)top * kb, sizeof(float));
    must(cuda_d2h(sa, dsat, sizeof(float) * (size_t)max_m * kb, &e), &e);
    for (int i = 0; i < max_m; i++)
        for (int b = 0; b < kb; b++)
            sat[(size_t)b * mp + i] = sa[(size_t)i * kb + b];
    void *dsat2 = dev_copy(sat, sizeof(float) * (size_t)top * kb);
    must(cuda_lt_ctx_run(lt, max_m, n, k, dq, dsat2, c.dw, dws32, dyt, NULL, &e), &e);
    must(cuda_sync(&e), &e);
    uint16_t *yt = malloc(sizeof *yt * (size_t)n * top), *y = malloc(sizeof *y * (size_t)max_m * n);
    uint16_t *yc = malloc(sizeof *yc * (size_t)n * top);
    must(cuda_d2h(yt, dyt, sizeof *yt * (size_t)n * mp, &e), &e);
    for (int i = 0; i < max_m; i++)
        for (int j = 0; j < n; j++)
            y[(size_t)i * n + j] = yt[(size_t)j * mp + i];
    struct cmp r;
    compare(y, c.ref, c.mag, (size_t)max_m * n, EPS_LT, &r);
    tap(r.bad == 0, "cuda_lt_ctx m=%d (%d rows) n=%d k=%d: %ld/%ld outside EPS_LT, max (|d|-ulp)/mag = %.3g, bit-equal "
        "to bf16(ref) %.1f%%", max_m, mp, n, k, r.bad, r.total, r.worst, 100.0 * (double)r.exact / (double)r.total);
    /* the same rows in chunks (the quantised rows and their scales of the whole call, rows p..p+S) */
    long diff = 0;
    int calls = 0;
    for (int p = 0; p < max_m; p += chunk) {
        int S = max_m - p < chunk ? max_m - p : chunk, sp = cuda_lt_ctx_rows(lt, S, n, k);
        float *st = calloc((size_t)sp * kb, sizeof(float));
        for (int i = 0; i < S; i++)
            for (int b = 0; b < kb; b++)
                st[(size_t)b * sp + i] = sa[(size_t)(p + i) * kb + b];
        void *dst = dev_copy(st, sizeof(float) * (size_t)sp * kb);
        int rc = cuda_lt_ctx_run(lt, S, n, k, (const uint8_t *)dq + (size_t)p * k, dst, c.dw, dws32, dyt, NULL, &e);
        if (rc) {
            printf("# chunk at %d of %d rows: %s\n", p, S, e.msg);
            diff += (long)S * n;
        } else {
            must(cuda_sync(&e), &e);
            must(cuda_d2h(yc, dyt, sizeof *yc * (size_t)n * sp, &e), &e);
            for (int i = 0; i < S; i++)
                for (int j = 0; j < n; j++)
                    diff += yc[(size_t)j * sp + i] != y[(size_t)(p + i) * n + j];
            calls++;
        }
        cuda_free(dst);
        free(st);
    }
    tap(diff == 0, "cuda_lt_ctx n=%d k=%d: %d rows in calls of %d rows (%d ran) give the %d-row call's bytes (%ld "
        "differ)", n, k, max_m, chunk, calls, max_m, diff);
    /* the rows form (weights as A, y in rows): the bound, how many outputs equal the transposed form's, and
     * the chunks (the scales transposed with its own padding) */
    if (cuda_lt_ctx_supports_form(lt, n, k, 1, &e) == 1) {
        cuda_lt_ctx_describe_form(lt, n, k, 1, desc, sizeof desc);
        printf("# cuda_lt_ctx rows form, max_m %d: %s\n", max_m, desc);
        const int rp = cuda_lt_ctx_rows_form(lt, max_m, n, k, 1);
        float *satr = calloc((size_t)top * kb, sizeof(float));
        for (int i = 0; i < max_m; i++)
            for (int b = 0; b < kb; b++)
                satr[(size_t)b * rp + i] = sa[(size_t)i * kb + b];
        void *dsatr = dev_copy(satr, sizeof(float) * (size_t)top * kb);
        uint16_t *yr = malloc(sizeof *yr * (size_t)n * top);
        must(cuda_memset(dyt, 0xff, sizeof(uint16_t) * (size_t)n * top, &e), &e);
        must(cuda_lt_ctx_run_rows(lt, max_m, n, k, dq, dsatr, c.dw, dws32, dyt, NULL, &e), &e);
        must(cuda_sync(&e), &e);
        must(cuda_d2h(yr, dyt, sizeof *yr * (size_t)n * rp, &e), &e);
        struct cmp rr;
        compare(yr, c.ref, c.mag, (size_t)max_m * n, EPS_LT, &rr);
        long same = 0;
        for (size_t i = 0; i < (size_t)max_m * n; i++)
            same += yr[i] == y[i];
        tap(rr.bad == 0, "cuda_lt_ctx rows form m=%d (%d rows) n=%d k=%d: %ld/%ld outside EPS_LT, max (|d|-ulp)/mag = "
            "%.3g; %.2f%% of the outputs equal to the transposed form's", max_m, rp, n, k, rr.bad, rr.total, rr.worst,
            100.0 * (double)same / ((double)max_m * n));
        long rdiff = 0;
        int rcalls = 0;
        for (int p = 0; p < max_m; p += chunk) {
            int S = max_m - p < chunk ? max_m - p : chunk, sp = cuda_lt_ctx_rows_form(lt, S, n, k, 1);
            float *st = calloc((size_t)sp * kb, sizeof(float));
            for (int i = 0; i < S; i++)
                for (int b = 0; b < kb; b++)
                    st[(size_t)b * sp + i] = sa[(size_t)(p + i) * kb + b];
            void *dst = dev_copy(st, sizeof(float) * (size_t)sp * kb);
            int rc = cuda_lt_ctx_run_rows(lt, S, n, k, (const uint8_t *)dq + (size_t)p * k, dst, c.dw, dws32, dyt, NULL,
                                          &e);
            if (rc) {
                printf("# rows form, chunk at %d of %d rows: %s\n", p, S, e.msg);
                rdiff += (long)S * n;
            } else {
                must(cuda_sync(&e), &e);
                must(cuda_d2h(yc, dyt, sizeof *yc * (size_t)n * sp, &e), &e);
                for (size_t i = 0; i < (size_t)S * n; i++)
                    rdiff += yc[i] != yr[(size_t)p * n + i];
                rcalls++;
            }
            cuda_free(dst);
            free(st);
        }
        tap(rdiff == 0, "cuda_lt_ctx rows form n=%d k=%d: %d rows in calls of %d rows (%d ran) give the %d-row call's "
            "bytes (%ld differ)", n, k, max_m, chunk, rcalls, max_m, rdiff);
        int er = cuda_lt_ctx_run_rows(lt, 4, n + 8, k, dq, dsatr, c.dw, dws32, dyt, NULL, &e);
        int rr0 = cuda_lt_ctx_rows_form(lt, 0, n, k, 1), rr1 = cuda_lt_ctx_supports_form(lt, n, k + 64, 1, &e);
        tap(er == CTX_EUNSUPPORTED && rr0 == 0 && rr1 == 0,
            "cuda_lt_ctx rows form: a refused shape's run CTX_EUNSUPPORTED (%d), rows of m 0 = %d, k %% 128 refused (%d)",
            er, rr0, rr1);
        cuda_free(dsatr);
        free(satr), free(yr);
    } else {
        printf("ok %d - # SKIP cuda_lt_ctx rows form n=%d k=%d: %s\n", ++n_test, n, k, e.msg);
    }
    int e0 = cuda_lt_ctx_run(lt, 0, n, k, dq, dsat, c.dw, dws32, dyt, NULL, &e);
    int e1 = cuda_lt_ctx_run(lt, max_m + 1, n, k, dq, dsat, c.dw, dws32, dyt, NULL, &e);
    int s1 = cuda_lt_ctx_supports(lt, n + 8, k, &e), s2 = cuda_lt_ctx_supports(lt, n, k + 64, &e);
    int e2 = cuda_lt_ctx_run(lt, 4, n + 8, k, dq, dsat, c.dw, dws32, dyt, NULL, &e);
    int r0 = cuda_lt_ctx_rows(lt, 0, n, k), r1 = cuda_lt_ctx_rows(lt, 1, n + 8, k), r2 = cuda_lt_ctx_rows(lt, 1, n, k);
    tap(e0 == CTX_EINVAL && e1 == CTX_EINVAL && s1 == 0 && s2 == 0 && e2 == CTX_EUNSUPPORTED && r0 == 0 && r1 == 0 &&
            r2 >= 1 && r2 <= CUDA_LT_PAD_MAX,
        "cuda_lt_ctx: m 0 and max_m + 1 rejected (%d %d), n %% 16 and k %% 128 refused (%d %d), a refused shape's run "
        "CTX_EUNSUPPORTED (%d: %s), rows 0 / refused / %d for one row", e0, e1, s1, s2, e2, e.msg, r2);
    cuda_free(dws32), cuda_free(dsat), cuda_free(dsat2), cuda_free(dx), cuda_free(dq), cuda_free(dyt);
    free(yt), free(y), free(yc), free(sa), free(sat);
    fp8_case_free(&c);
    cuda_lt_ctx_free(lt);
}

/* The bf16 products of the same context (the engine's prefill wo_a: `batch` groups side by side):
 * within the fp32 accumulation bound k * 2^-24 * sum|w x| of the exact sums, and rows of calls of
 * `chunk` rows byte-equal to one call of max_m rows. */
static void test_lt_bf16(int max_m, int n, int k, int batch, int chunk)
{
    struct ctx_err e;
    struct cuda_lt_ctx *lt = NULL;
    must(cuda_lt_ctx_new(&lt, max_m, &e), &e);
    const int ldx = batch * k, ldy = batch * n;
    int mp = cuda_lt_ctx_rows_bf16(lt, max_m, n, k, batch, ldx, ldy);
    if (mp < max_m) {
        printf("ok %d - # SKIP cuda_lt_ctx_bf16 n=%d k=%d x %d: refused\n", ++n_test, n, k, batch);
        cuda_lt_ctx_free(lt);
        return;
    }
    const int top = max_m + CUDA_LT_PAD_MAX;
    uint16_t *x = calloc((size_t)top * ldx, sizeof *x), *w = malloc(sizeof *w * (size_t)batch * n * k);
    gen_act(x, max_m, ldx);
    gen_act(w, batch * n, k);
    void *dx = dev_copy(x, sizeof *x * (size_t)top * ldx), *dw = dev_copy(w, sizeof *w * (size_t)batch * n * k), *dy;
    must(cuda_malloc(&dy, sizeof(float) * (size_t)top * ldy, &e), &e);
    must(cuda_lt_ctx_bf16(lt, max_m, n, k, batch, dx, ldx, dw, dy, ldy, NULL, &e), &e);
    must(cuda_sync(&e), &e);
    float *y = malloc(sizeof *y * (size_t)top * ldy), *yc = malloc(sizeof *yc * (size_t)top * ldy);
    must(cuda_d2h(y, dy, sizeof *y * (size_t)max_m * ldy, &e), &e);
    long bad = 0;
    double worst = 0;
    for (int i = 0; i < max_m; i += 7) /* every 7th token: the host sums are the slow part */
        for (int b = 0; b < batch; b++)
            for (int j = 0; j < n; j++) {
                double sum = 0, mag = 0;
                for (int l = 0; l < k; l++) {
                    double p = (double)cuda_ref_bf16_to_f32(w[((size_t)b * n + j) * k + l]) *
                               cuda_ref_bf16_to_f32(x[(size_t)i * ldx + (size_t)b * k + l]);
                    sum += p;
                    mag += fabs(p);
                }
                double d = fabs(y[(size_t)i * ldy + (size_t)b * n + j] - sum), bound = k * 0x1p-24 * mag;
                bad += d > bound;
                if (mag > 0 && d / mag > worst)
                    worst = d / mag;
            }
    tap(bad == 0, "cuda_lt_ctx_bf16 m=%d (%d rows) n=%d k=%d x %d groups: %ld outside k 2^-24 sum|w x|, worst |d|/mag "
        "%.3g", max_m, mp, n, k, batch, bad, worst);
    long diff = 0;
    for (int p = 0; p < max_m; p += chunk) {
        int S = max_m - p < chunk ? max_m - p : chunk;
        must(cuda_lt_ctx_bf16(lt, S, n, k, batch, (const uint16_t *)dx + (size_t)p * ldx, ldx, dw, dy, ldy, NULL, &e),
             &e);
        must(cuda_sync(&e), &e);
        must(cuda_d2h(yc, dy, sizeof *yc * (size_t)S * ldy, &e), &e);
        diff += memcmp(yc, y + (size_t)p * ldy, sizeof *yc * (size_t)S * ldy) != 0;
    }
    int e0 = cuda_lt_ctx_bf16(lt, 0, n, k, batch, dx, ldx, dw, dy, ldy, NULL, &e);
    int e1 = cuda_lt_ctx_bf16(lt, 4, n, k, batch, dx, ldx - 8, dw, dy, ldy, NULL, &e); /* ldx < batch k */
    tap(diff == 0 && e0 == CTX_EINVAL && e1 == CTX_EUNSUPPORTED,
        "cuda_lt_ctx_bf16 n=%d k=%d x %d: calls of %d rows give the %d-row call's bytes (%ld calls differ); m 0 and a "
        "short ldx refused (%d %d)", n, k, batch, chunk, max_m, diff, e0, e1);
    cuda_free(dx), cuda_free(dw), cuda_free(dy);
    free(x), free(w), free(y), free(yc);
    cuda_lt_ctx_free(lt);
}

/* ---- FP4 grouped GEMV ---- */

/* npairs pairs over activation rows ceil(npairs / x_group) (pair p reads row p / x_group; the pairs of
 * one row pick distinct experts, as the router does), against kernels/ref.c: cuda_fp4_gemv_grouped
 * (the default, or what CTX_CUDA_FP4_GEMV forces) and every variant within the bound; V2 and each
 * of its fixed configurations must also give bf16(ref) exactly on every output (their partials are
 * exact integers and each row is summed in the reference's order, gemm.h), and the default must
 * give the bytes of the variant it names. */
static void test_fp4_pairs(int n, int k, int n_experts, int x_group, int npairs)
{
    struct ctx_err e;
    int rows = (npairs + x_group - 1) / x_group;
    uint8_t **w = malloc(sizeof *w * n_experts), **s = malloc(sizeof *s * n_experts);
    void **dw = malloc(sizeof *dw * n_experts), **ds = malloc(sizeof *ds * n_experts);
    for (int i = 0; i < n_experts; i++) {
        w[i] = malloc((size_t)n * k / 2);
        s[i] = malloc((size_t)n * k / 32);
        gen_bytes(w[i], (size_t)n * k / 2);
        gen_scales(s[i], (size_t)n * k / 32, -10, 2);
        dw[i] = dev_copy(w[i], (size_t)n * k / 2);
        ds[i] = dev_copy(s[i], (size_t)n * k / 32);
    }
    int *ids = malloc(sizeof *ids * npairs);
    for (int p = 0; p < npairs; p++) {
        int id, dup;
        do { /* distinct experts within a row's group while there are enough */
            id = (int)(next_u64() % (uint64_t)n_experts);
            dup = 0;
            for (int i = p - p % x_group; i < p && x_group <= n_experts; i++)
                dup |= ids[i] == id;
        } while (dup);
        ids[p] = id;
    }
    uint16_t *x = malloc(sizeof *x * (size_t)rows * k);
    uint8_t *q = malloc((size_t)rows * k);
    float *sa = malloc(sizeof *sa * (size_t)rows * (k / 128));
    gen_act(x, rows, k);
    cuda_ref_act_quant(x, rows, k, q, sa);
    float *ref = malloc(sizeof *ref * (size_t)npairs * n);
    double *mag = malloc(sizeof *mag * (size_t)npairs * n);
    cuda_ref_fp4_gemv_grouped(q, sa, x_group, npairs, ids, (const uint8_t *const *)w, (const uint8_t *const *)s, n, k,
                              ref, mag);
    void *dq = dev_copy(q, (size_t)rows * k), *dsa = dev_copy(sa, sizeof *sa * (size_t)rows * (k / 128));
    void *dids = dev_copy(ids, sizeof *ids * npairs);
    void *dwt = dev_copy(dw, sizeof *dw * n_experts), *dst = dev_copy(ds, sizeof *ds * n_experts), *dy;
    size_t count = (size_t)npairs * n;
    must(cuda_malloc(&dy, sizeof(uint16_t) * count, &e), &e);
    uint16_t *y[CUDA_FP4_GEMV_NVARIANTS + 1];
    const char *env = getenv("CTX_CUDA_FP4_GEMV");
    int def = env && (!strcmp(env, "1") || !strcmp(env, "2")) ? env[0] - '1' : CUDA_FP4_GEMV_DEFAULT;
    for (int v = 0; v <= CUDA_FP4_GEMV_NVARIANTS; v++) { /* the variants, then the default */
        must(cuda_memset(dy, 0xff, sizeof(uint16_t) * count, &e), &e);
        if (v < CUDA_FP4_GEMV_NVARIANTS)
            must(cuda_fp4_gemv_grouped_variant(dq, dsa, x_group, npairs, dids, dwt, dst, n, k, dy, v, NULL, &e), &e);
        else
            must(cuda_fp4_gemv_grouped(dq, dsa, x_group, npairs, dids, dwt, dst, n, k, dy, NULL, &e), &e);
        must(cuda_sync(&e), &e);
        y[v] = malloc(sizeof(uint16_t) * count);
        must(cuda_d2h(y[v], dy, sizeof(uint16_t) * count, &e), &e);
        struct cmp r;
        compare(y[v], ref, mag, count, EPS, &r);
        const char *name = v < CUDA_FP4_GEMV_NVARIANTS ? cuda_fp4_gemv_variant_name(v) : "default";
        tap(r.bad == 0, "fp4_gemv_grouped %s n=%d k=%d experts=%d x_group=%d pairs=%d: %ld/%ld outside the bound, "
            "max (|d|-ulp)/mag = %.3g, bit-equal %.1f%%", name, n, k, n_experts, x_group, npairs, r.bad, r.total,
            r.worst, 100.0 * (double)r.exact / (double)r.total);
        if (v >= CUDA_FP4_GEMV_V2 && v < CUDA_FP4_GEMV_NVARIANTS)
            tap(r.exact == r.total, "fp4_gemv_grouped %s n=%d k=%d pairs=%d: bf16(ref) exactly on %ld/%ld outputs",
                name, n, k, npairs, r.exact, r.total);
    }
    tap(!memcmp(y[CUDA_FP4_GEMV_NVARIANTS], y[def], sizeof(uint16_t) * count),
        "fp4_gemv_grouped default n=%d k=%d pairs=%d: the bytes of %s", n, k, npairs, cuda_fp4_gemv_variant_name(def));
    for (int v = 0; v <= CUDA_FP4_GEMV_NVARIANTS; v++)
        free(y[v]);
    for (int i = 0; i < n_experts; i++) {
        free(w[i]), free(s[i]);
        cuda_free(dw[i]), cuda_free(ds[i]);
    }
    free(w), free(s), free(dw), free(ds), free(ids), free(x), free(q), free(sa), free(ref), free(mag);
    cuda_free(dq), cuda_free(dsa), cuda_free(dids), cuda_free(dwt), cuda_free(dst), cuda_free(dy);
}

/* tokens tokens of top-k pairs each: w1/w3 style (one activation row per token) or w2 style (one per
 * pair). */
static void test_fp4(int n, int k, int n_experts, int topk, int tokens, int w2_style)
{
    test_fp4_pairs(n, k, n_experts, w2_style ? 1 : topk, tokens * topk);
}

/* Argument errors are reported, not launched. */
static void test_errors(void)
{
    struct ctx_err e;
    int a = cuda_fp8_gemv(NULL, NULL, 9, NULL, NULL, 16, 128, NULL, NULL, &e);
    int g = cuda_fp8_gemv_f32(NULL, NULL, NULL, 16, 128, NULL, 8, NULL, NULL, &e); /* split without y2 */
    int h = cuda_fp8_gemv_f32(NULL, NULL, NULL, 16, 32768, NULL, 16, NULL, NULL, &e); /* k above 16384 */
    int d = cuda_fp4_gemv_grouped(NULL, NULL, 0, 1, NULL, NULL, NULL, 16, 128, NULL, NULL, &e); /* x_group 0 */
    int d2 = cuda_fp4_gemv_grouped_variant(NULL, NULL, 1, 1, NULL, NULL, NULL, 16, 128, NULL, CUDA_FP4_GEMV_NVARIANTS,
                                           NULL, &e);
    int d3 = cuda_fp4_gemv_grouped_variant(NULL, NULL, 1, 1, NULL, NULL, NULL, 16, 200, NULL, CUDA_FP4_GEMV_V2, NULL,
                                           &e); /* k not a multiple of 128 */
    struct cuda_lt_plan *p = NULL;
    int f = cuda_lt_plan_new(&p, 6, 64, 128, cuda_lt_layout(), &e); /* m not a multiple of 4 */
    int b = cuda_fp8_gemm(NULL, NULL, 4, NULL, NULL, 16, 100, NULL, NULL, &e);
    int c = cuda_act_quant(NULL, 1, 0, NULL, NULL, 0, NULL, &e);
    int v = cuda_fp8_gemm_variant(NULL, NULL, 4, NULL, NULL, 16, 128, NULL, CUDA_FP8_GEMM_NVARIANTS, NULL, &e);
    int v2 = cuda_fp8_gemm_variant(NULL, NULL, 4, NULL, NULL, 16, 100, NULL, CUDA_FP8_GEMM_V2, NULL, &e);
    tap(a == CTX_EINVAL && b == CTX_EINVAL && c == CTX_EINVAL && d == CTX_EINVAL && f == CTX_EINVAL && !p &&
            g == CTX_EINVAL && h == CTX_EINVAL && v == CTX_EINVAL && v2 == CTX_EINVAL && d2 == CTX_EINVAL &&
            d3 == CTX_EINVAL,
        "bad shapes, groupings and variants are rejected with CTX_EINVAL (%d %d %d %d %d %d %d %d %d %d %d)", a, b, c,
        d, f, g, h, v, v2, d2, d3);
}

int main(void)
{
    if (cuda_device_count() == 0) {
        printf("1..0 # SKIP no CUDA device\n");
        return 0;
    }
    struct ctx_err e;
    char name[256];
    int sms = 0;
    must(cuda_device_name(name, sizeof name, &sms, &e), &e);
    printf("# device: %s, %d SMs\n", name, sms);

    test_errors();
    if (getenv("CTX_TEST_GEMM_QUICK")) {
        /* a short run for compute-sanitizer: every fp8_gemm kernel on ragged shapes */
        test_fp8_variants(9, 1000, 1024);
        test_fp8_variants(129, 1030, 128);
        test_fp8_variants(500, 576, 384);
        test_fp8(37, 200, 1024);
        /* and both FP4 GEMV kernels: odd n, one pair, k = 128, the opt-in shared memory of V2 */
        test_fp4_pairs(1001, 640, 5, 2, 5);
        test_fp4_pairs(17, 128, 3, 3, 3);
        test_fp4_pairs(40, 16384, 3, 1, 3);
        printf("1..%d\n", n_test);
        return n_fail ? 1 : 0;
    }
    test_act_quant(1, 128);
    test_act_quant(3, 4096);
    test_act_quant(37, 7168);
    test_act_quant(300, 1024);

    /* decode shapes (m <= 8 runs the GEMV and the GEMM), V4-Flash and ragged */
    test_fp8(1, 1024, 4096);
    test_fp8(2, 512, 4096);
    test_fp8(5, 4096, 4096);
    test_fp8(8, 4100, 1024);
    test_fp8(3, 200, 7168);
    test_fp8(8, 33, 128);
    test_fp8(1, 4096, 8192);
    /* the GEMV's work splits: one warp per tile with 8 blocks (wq_b), 4 warps with 32 blocks each
     * through the 4-stage ring, a ragged last tile and warps with no rows */
    test_fp8(1, 32768, 1024);
    test_fp8(4, 2064, 16384);
    test_fp8(7, 1040, 2048);
    /* the fused fp32-input GEMV at V4-Flash's decode shapes (wq_a|wkv split, wq_b, wo_b), ragged */
    test_fp8_f32(1, 1536, 1024, 4096);
    test_fp8_f32(1, 32768, 32768, 1024);
    test_fp8_f32(1, 4096, 4096, 8192);
    test_fp8_f32(1, 200, 33, 384);
    test_fp8_f32(1, 4096, 4000, 16384);
    /* two tokens (a speculative step): V4-Flash's wq_a|wkv, wq_b, wo_b, the indexer's wq_b, a ragged one */
    test_fp8_f32(2, 1536, 1024, 4096);
    test_fp8_f32(2, 32768, 32768, 1024);
    test_fp8_f32(2, 4096, 4096, 8192);
    test_fp8_f32(2, 8192, 8192, 1024);
    test_fp8_f32(2, 200, 33, 384);
    {
        struct ctx_err e;
        tap(cuda_fp8_gemv_f32_fits(2, 4096, 8192) && !cuda_fp8_gemv_f32_fits(2, 4096, 16384) &&
                cuda_fp8_gemv_f32_fits(1, 4096, 16384) && !cuda_fp8_gemv_f32_fits(3, 4096, 4096) &&
                cuda_fp8_gemv_f32m(NULL, 2, NULL, NULL, 4096, 16384, NULL, 4096, NULL, NULL, &e) == CTX_EINVAL,
            "fp8_gemv_f32 for 2 tokens: k 8192 fits, 16384 refused (%s)", e.msg);
    }
    /* prefill shapes */
    test_fp8(37, 200, 1024);
    test_fp8(130, 256, 4096);
    test_fp8(300, 1000, 2048);
    test_fp8(512, 4096, 512);
    test_fp8(2048, 1000, 1024);

    /* the second kernel (every tile) against the first, byte for byte: ragged m around the tiles,
     * n not a multiple of the tile (1000, 576) nor of 8 (1030, 33), k = 128 .. 8192 */
    static const int ms[] = {1, 7, 9, 33, 127, 128, 129, 500, 2048, 4100};
    for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++) {
        test_fp8_variants(ms[i], 1000, 1024);
        test_fp8_variants(ms[i], 576, 384);
        test_fp8_variants(ms[i], 1030, 128);
    }
    test_fp8_variants(9, 1000, 8192);
    test_fp8_variants(500, 576, 8192);
    test_fp8_variants(2048, 33, 2048);
    test_fp8_variants(4100, 1000, 8192);
    test_fp8_variants(300, 4096, 4096);

    test_lt(256, 1024, 4096);
    test_lt(200, 512, 1024);
    test_lt(128, 1024, 7168);
    /* the engine's prefill products at V4-Flash's shapes (wq_a|wkv, wo_b), ragged chunks */
    test_lt_ctx(2048, 1536, 4096, 50);
    test_lt_ctx(1030, 4096, 8192, 137);
    test_lt_ctx(300, 32768, 1024, 9);
    /* wo_a of V4-Flash (8 groups of 1024 x 4096) and of the mid config's shape class, ragged chunks */
    test_lt_bf16(600, 1024, 4096, 8, 37);
    test_lt_bf16(300, 256, 1024, 4, 50);
    /* the compressors' products of a prefill chunk (cbf_lt: one product of the concatenated rows) of
     * V4-Flash's CSA and HCA layers and of the mid config's CSA layers, ragged chunks */
    test_lt_bf16(600, 2624, 4096, 1, 37);
    test_lt_bf16(600, 1024, 4096, 1, 37);
    test_lt_bf16(500, 2576, 2048, 1, 50);

    /* routed experts: w1/w3 (n 2048, k 4096) and w2 (n 4096, k 2048) of V4-Flash, ragged shapes,
     * k not a multiple of 256 */
    test_fp4(2048, 4096, 16, 6, 1, 0);
    test_fp4(2048, 4096, 16, 6, 2, 0);
    test_fp4(4096, 2048, 16, 6, 1, 1);
    test_fp4(200, 384, 8, 3, 3, 0);
    test_fp4(33, 128, 4, 2, 1, 1);
    test_fp4(3072, 7168, 8, 6, 1, 0);
    /* k >= 4096 ending inside a 256-K span (the K-split kernel's half span) */
    test_fp4(72, 4224, 4, 2, 2, 0);
    /* the engine's exact calls at decode: w1|w3 as 12 pairs of 2048 x 4096 on two rows (x_group =
     * top-k = 6; 2E table entries), w2 as 6 pairs of 4096 x 2048 (x_group 1); S = 2; V4-Pro's w1|w3
     * (3072 x 7168) and w2 (7168 x 3072); odd n; k = 128 and k not a multiple of 256; one pair; more
     * pairs than the GEMV's decode range (V1 then runs its rows kernel); k above the V2 kernel's
     * default shared-memory limit (the opt-in path) */
    test_fp4_pairs(2048, 4096, 32, 6, 12);
    test_fp4_pairs(4096, 2048, 16, 1, 6);
    test_fp4_pairs(2048, 4096, 32, 6, 24);
    test_fp4_pairs(3072, 7168, 12, 6, 12);
    test_fp4_pairs(7168, 3072, 8, 1, 6);
    test_fp4_pairs(1001, 640, 5, 2, 5);
    test_fp4_pairs(17, 128, 3, 3, 3);
    test_fp4_pairs(4095, 2176, 4, 1, 1);
    test_fp4_pairs(48, 1024, 8, 1, 200);
    test_fp4_pairs(40, 16384, 3, 1, 3);

    printf("1..%d\n", n_test);
    return n_fail ? 1 : 0;
}
