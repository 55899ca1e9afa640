/* The prefill products of kernels/engine.cu on tensor cores (k_bgemm: wo_a with its e4m3 weights
 * used as their exact bf16 values, and the bf16 matrices: the MoE gate, the compressors) and the
 * kernels they replace for S > 8 (one warp per row) and keep for decode (k_wo_a_mma), against a
 * host reference in double. Plain TAP (the GPU machine has no cmocka); "1..0 # SKIP" without a
 * device.
 *
 * What is asserted, and why:
 * - every product is exact (e4m3 x bf16 and bf16 x bf16 fit fp32; the power-of-two scales and the
 *   2^100 / 2^-120 factors of the wo_a GEMM are exact), so an output differs from the exact sum
 *   only by the fp32 additions and the final bf16 rounding: |gpu - ref| <= E + 2^-8 (|ref| + E)
 *   (bf16 out) or <= E (fp32 out), E = 2^-15 sum|w x| for the GEMM (8 mma steps of a 128-K block
 *   summed by the tensor core, then fp32 adds of the block partials: ~2^-18 expected) and 2^-13
 *   sum|w x| for the per-row kernels (up to 128 sequential fp32 adds per lane);
 * - "exact" cases use small values so that every partial sum in any order is a multiple of the
 *   smallest product grain below 2^23 grains: the sum is then exact in fp32 whatever the order, so
 *   the GEMM must give bit for bit bf16(exact) / fp32(exact). This checks the e4m3 -> bf16 shifts
 *   (the exact cases draw e4m3 subnormals too; the others hold every non-NaN byte), the K
 *   permutation of the fragments, the group offsets, the scales and the swizzles exactly, where a
 *   bound could hide an error;
 * - chunk invariance: the GEMM's rows for tokens [0, 9), [9, 59), [59, S) run as separate calls are
 *   bit-identical to one call of S tokens (the engine's "any chunks of > 8 tokens" property), and a
 *   second run gives the same bits (determinism).
 * Then, as "#" lines (figures, not assertions), the wall time of V4-Flash's wo_a and gate for a
 * 2048-token chunk, GEMM against the per-row kernel; CTX_WO_NO_TIMING set skips them (memcheck). */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cuda_engine.h" /* cuda_engine_wo_a, cuda_engine_lin_bf16: the engine's own launches on caller buffers */
#include "gemm.h"
#include "tap.h"


static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t urand32(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 32);
}
static double urand(void)
{
    return (double)urand32() * 0x1p-32;
}
static float nrand(void)
{
    double u = urand(), v = urand();
    return (float)(sqrt(-2.0 * log(u + 1e-300)) * cos(6.283185307179586 * v));
}

static float bf16r(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return f;
    u += 0x7fffu + ((u >> 16) & 1u);
    u &= 0xffff0000u;
    memcpy(&f, &u, 4);
    return f;
}
static uint16_t bf16bits(float f)
{
    f = bf16r(f);
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)(u >> 16);
}
static double e4m3_dec(uint8_t b)
{
    int s = b >> 7, ex = (b >> 3) & 15, m = b & 7;
    double v = ex == 0 ? ldexp(m, -9) : ldexp(8 + m, ex - 10);
    return s ? -v : v;
}
static int bits_eq(float a, float b)
{
    return !memcmp(&a, &b, 4);
}

/* A random e4m3 byte, never NaN (0x7f / 0xff); exponent field <= emax. */
static uint8_t rand_e4m3(int emax)
{
    for (;;) {
        uint8_t b = (uint8_t)urand32();
        if ((b & 0x7f) == 0x7f || ((b >> 3) & 15) > emax)
            continue;
        return b;
    }
}

/* exact (with exact_ok != NULL): mark outputs whose sum is exact in any order (abs <= 2^23 grain).
 */
static void check_out(const char *what, const float *got, const double *ref, const double *abs_,
                      size_t n, double erel, int out_bf16, const double *grain, int require_exact)
{
    size_t bad = 0, nex = 0, exbad = 0, worst_i = 0;
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double E = erel * abs_[i], tol = out_bf16 ? E + ldexp(fabs(ref[i]) + E, -8) : E;
        double d = fabs((double)got[i] - ref[i]);
        if (!(d <= tol + 1e-37))
            bad++;
        if (tol > 0 && d / tol > worst)
            worst = d / tol, worst_i = i;
        if (grain && abs_[i] <= ldexp(grain[i], 23)) {
            nex++;
            float want = out_bf16 ? bf16r((float)ref[i]) : (float)ref[i];
            if (!bits_eq(got[i], want))
                exbad++;
        }
    }
    tap(bad == 0,
        "%s: %zu outputs within |gpu - ref| <= %g sum|w x|%s (worst %.3g of the bound at %zu: got "
        "%.9g, "
        "ref %.9g); %zu bad",
        what, n, erel, out_bf16 ? " + bf16 rounding" : "", worst, worst_i, (double)got[worst_i],
        ref[worst_i], bad);
    if (grain)
        tap(exbad == 0 && (!require_exact || nex * 10 >= n * 9),
            "%s: %zu of %zu outputs have an exact sum; all bit-identical to the exact result (%zu "
            "differ)",
            what, nex, n, exbad);
}

struct wocase {
    const char *name;
    int S, G, R, gd;
    int exact; /* small values: exact sums */
};

static void wo_case(const struct wocase *c)
{
    int S = c->S, G = c->G, R = c->R, gd = c->gd, GR = G * R, HD = G * gd, kb = gd / 128;
    size_t nw = (size_t)GR * gd, ns = (size_t)(GR / 128) * kb, nO = (size_t)S * HD,
           nZ = (size_t)S * GR;
    uint8_t *w = malloc(nw), *sc = malloc(ns);
    float *O = malloc(sizeof(float) * nO), *wd = malloc(sizeof(float) * nw),
          *got = malloc(sizeof(float) * nZ);
    float *got2 = malloc(sizeof(float) * nZ), *got0 = malloc(sizeof(float) * nZ);
    double *ref = malloc(sizeof(double) * nZ), *ab = malloc(sizeof(double) * nZ),
           *gr = malloc(sizeof(double) * nZ);
    struct ctx_err e = {0};
    for (size_t i = 0; i < nw; i++)
        w[i] = c->exact ? rand_e4m3(4) : rand_e4m3(15);
    /* every non-NaN byte in the first row of each group: subnormals and the extremes occur */
    for (int g = 0; g < G; g++)
        for (int i = 0; i < gd && !c->exact; i++)
            w[(size_t)g * R * gd + i] =
                (uint8_t)(i % 256) == 0x7f || (uint8_t)(i % 256) == 0xff ? 0 : (uint8_t)(i % 256);
    for (size_t i = 0; i < ns; i++)
        sc[i] = c->exact ? (uint8_t)(126 + urand32() % 3) : (uint8_t)(127 - 12 + urand32() % 9);
    for (size_t i = 0; i < nO; i++)
        O[i] = c->exact ? ldexpf((float)((int)(urand32() % 15) - 7), -8) : bf16r(nrand() * 0.5f);
    for (int r = 0; r < GR; r++)
        for (int k = 0; k < gd; k++)
            wd[(size_t)r * gd + k] =
                (float)(e4m3_dec(w[(size_t)r * gd + k]) *
                        ldexp(1.0, sc[(size_t)(r / 128) * kb + k / 128] - 127));
    double minsc = ldexp(1.0, 200);
    for (size_t i = 0; i < ns; i++)
        if (ldexp(1.0, sc[i] - 127) < minsc)
            minsc = ldexp(1.0, sc[i] - 127);
    for (int s = 0; s < S; s++)
        for (int r = 0; r < GR; r++) {
            const float *x = O + (size_t)s * HD + (size_t)(r / R) * gd, *wr = wd + (size_t)r * gd;
            double a = 0, b = 0;
            for (int k = 0; k < gd; k++) {
                double p = (double)wr[k] * x[k];
                a += p;
                b += fabs(p);
            }
            ref[(size_t)s * GR + r] = a;
            ab[(size_t)s * GR + r] = b;
            gr[(size_t)s * GR + r] =
                ldexp(minsc, -17); /* e4m3 grain 2^-9 x O grain 2^-8 x the smallest scale */
        }
    uint8_t *dw = NULL, *ds = NULL;
    float *dO = NULL, *dZ = NULL;
    void *dxb = NULL;
    int ok = !cuda_malloc((void **)&dw, nw, &e) && !cuda_malloc((void **)&ds, ns, &e) &&
             !cuda_malloc((void **)&dO, sizeof(float) * nO, &e) &&
             !cuda_malloc((void **)&dZ, sizeof(float) * nZ, &e) && !cuda_malloc(&dxb, 2 * nO, &e) &&
             !cuda_h2d(dw, w, nw, &e) && !cuda_h2d(ds, sc, ns, &e) &&
             !cuda_h2d(dO, O, sizeof(float) * nO, &e);
    char what[160];
    static const char *const mname[4] = {"engine", "per-row", "gemm", "engine, k_wo_a_mma"};
    for (int mode = 0; mode < 4 && ok; mode++) {
        if (mode == 1 && c->exact)
            continue;
        ok = !cuda_memset(dZ, 0xff, sizeof(float) * nZ, &e) &&
             !cuda_engine_wo_a(dw, ds, dO, S, G, R, gd, dZ, dxb, mode, NULL, &e) &&
             !cuda_sync(&e) && !cuda_d2h(got, dZ, sizeof(float) * nZ, &e);
        if (!ok)
            break;
        int gemm = mode == 2 || (mode == 0 && S > 8);
        snprintf(what, sizeof what, "wo_a %s S=%d %dx%dx%d, %s", c->name, S, G, R, gd,
                 mode == 0 && S <= 8 ? "engine (decode: k_wo_a_ring)" : mname[mode]);
        if (mode == 3 && S > 8)
            continue; /* the GEMM, as mode 0 */
        check_out(what, got, ref, ab, nZ, gemm ? 0x1p-15 : 0x1p-13, 1, c->exact && gemm ? gr : NULL,
                  1);
        /* decode: k_wo_a_ring (the engine's) and k_wo_a_mma (the kernel before it) give the same bits */
        if (mode == 0)
            memcpy(got0, got, sizeof(float) * nZ);
        if (mode == 3)
            tap(!memcmp(got, got0, sizeof(float) * nZ),
                "wo_a %s S=%d: k_wo_a_ring and k_wo_a_mma give the same bytes", c->name, S);
        if (mode == 2) {
            /* determinism, then chunk invariance */
            ok = !cuda_engine_wo_a(dw, ds, dO, S, G, R, gd, dZ, dxb, 2, NULL, &e) &&
                 !cuda_sync(&e) && !cuda_d2h(got2, dZ, sizeof(float) * nZ, &e);
            if (!ok)
                break;
            tap(!memcmp(got, got2, sizeof(float) * nZ),
                "wo_a %s: a second GEMM run gives the same bits", c->name);
            if (S > 60) {
                int cut[4] = {0, 9, 59, S};
                ok = !cuda_memset(dZ, 0xff, sizeof(float) * nZ, &e);
                for (int p = 0; p < 3 && ok; p++)
                    ok = !cuda_engine_wo_a(dw, ds, dO + (size_t)cut[p] * HD, cut[p + 1] - cut[p], G,
                                           R, gd, dZ + (size_t)cut[p] * GR, dxb, 0, NULL, &e);
                ok = ok && !cuda_sync(&e) && !cuda_d2h(got2, dZ, sizeof(float) * nZ, &e);
                if (!ok)
                    break;
                tap(!memcmp(got, got2, sizeof(float) * nZ),
                    "wo_a %s: tokens in chunks of 9, 50 and %d give the bits of one chunk of %d",
                    c->name, S - 59, S);
            }
        }
    }
    if (!ok)
        tap(0, "wo_a %s runs: %s", c->name, e.msg);
    cuda_free(dw);
    cuda_free(ds);
    cuda_free(dO);
    cuda_free(dZ);
    cuda_free(dxb);
    free(w), free(sc), free(O), free(wd), free(got), free(got2), free(got0), free(ref), free(ab), free(gr);
}

struct lincase {
    const char *name;
    int S, n, k, out_bf16, exact;
};

static void lin_case(const struct lincase *c)
{
    int S = c->S, n = c->n, k = c->k;
    size_t nw = (size_t)n * k, nx = (size_t)S * k, ny = (size_t)S * n;
    uint16_t *w = malloc(2 * nw);
    float *wf = malloc(sizeof(float) * nw), *x = malloc(sizeof(float) * nx),
          *got = malloc(sizeof(float) * ny);
    float *got2 = malloc(sizeof(float) * ny);
    double *ref = malloc(sizeof(double) * ny), *ab = malloc(sizeof(double) * ny),
           *gr = malloc(sizeof(double) * ny);
    struct ctx_err e = {0};
    for (size_t i = 0; i < nw; i++) {
        /* exact: multiples of 2^-10 below 2^-3 (7 significant bits: bf16-exact) */
        float v =
            c->exact ? ldexpf((float)((int)(urand32() % 255) - 127), -10) : bf16r(nrand() * 0.02f);
        w[i] = bf16bits(v);
        wf[i] = v;
    }
    for (size_t i = 0; i < nx; i++)
        x[i] = c->exact ? ldexpf((float)((int)(urand32() % 63) - 31), -6) : bf16r(nrand());
    for (int s = 0; s < S; s++)
        for (int r = 0; r < n; r++) {
            double a = 0, b = 0;
            for (int i = 0; i < k; i++) {
                double p = (double)wf[(size_t)r * k + i] * x[(size_t)s * k + i];
                a += p;
                b += fabs(p);
            }
            ref[(size_t)s * n + r] = a;
            ab[(size_t)s * n + r] = b;
            gr[(size_t)s * n + r] = 0x1p-16;
        }
    uint16_t *dw = NULL;
    float *dx = NULL, *dy = NULL;
    void *dxb = NULL;
    int ok = !cuda_malloc((void **)&dw, 2 * nw, &e) &&
             !cuda_malloc((void **)&dx, sizeof(float) * nx, &e) &&
             !cuda_malloc((void **)&dy, sizeof(float) * ny, &e) && !cuda_malloc(&dxb, 2 * nx, &e) &&
             !cuda_h2d(dw, w, 2 * nw, &e) && !cuda_h2d(dx, x, sizeof(float) * nx, &e);
    char what[160];
    static const char *const mname[3] = {"engine", "per-row", "gemm"};
    for (int mode = 0; mode < 3 && ok; mode++) {
        if (mode == 1 && c->exact)
            continue;
        ok = !cuda_memset(dy, 0xff, sizeof(float) * ny, &e) &&
             !cuda_engine_lin_bf16(dw, n, k, dx, S, dy, c->out_bf16, dxb, mode, NULL, &e) &&
             !cuda_sync(&e) && !cuda_d2h(got, dy, sizeof(float) * ny, &e);
        if (!ok)
            break;
        int gemm = mode == 2 || (mode == 0 && S > 8 && k % 128 == 0);
        snprintf(what, sizeof what, "bf16 %s S=%d %dx%d%s, %s", c->name, S, n, k,
                 c->out_bf16 ? " bf16 out" : "",
                 mode == 0 && !gemm ? "engine (decode)" : mname[mode]);
        check_out(what, got, ref, ab, ny, gemm ? 0x1p-15 : 0x1p-13, c->out_bf16,
                  c->exact && gemm ? gr : NULL, 1);
        if (mode == 2 && S > 60) {
            int cut[4] = {0, 9, 59, S};
            ok = !cuda_memset(dy, 0xff, sizeof(float) * ny, &e);
            for (int p = 0; p < 3 && ok; p++)
                ok = !cuda_engine_lin_bf16(dw, n, k, dx + (size_t)cut[p] * k, cut[p + 1] - cut[p],
                                           dy + (size_t)cut[p] * n, c->out_bf16, dxb, 0, NULL, &e);
            ok = ok && !cuda_sync(&e) && !cuda_d2h(got2, dy, sizeof(float) * ny, &e);
            if (!ok)
                break;
            tap(!memcmp(got, got2, sizeof(float) * ny),
                "bf16 %s: tokens in chunks of 9, 50 and %d give the bits of one chunk of %d",
                c->name, S - 59, S);
        }
    }
    if (!ok)
        tap(0, "bf16 %s runs: %s", c->name, e.msg);
    cuda_free(dw);
    cuda_free(dx);
    cuda_free(dy);
    cuda_free(dxb);
    free(w), free(wf), free(x), free(got), free(got2), free(ref), free(ab), free(gr);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Diagnostic figures, not assertions (bench/gpu's stage table is the measurement): V4-Flash's wo_a
 * (8 x 1024 x 4096) and gate (256 x 4096) for a 2048-token chunk, GEMM against the per-row kernel,
 * median wall time of 5 synchronised calls. */
static double time_call(int which, int mode, const void *w, const void *s, const float *x, int S,
                        float *y, void *xb)
{
    double t[5];
    struct ctx_err e = {0};
    for (int r = -1; r < 5; r++) {
        double t0 = now_s();
        int rc = which ? cuda_engine_lin_bf16(w, 256, 4096, x, S, y, 0, xb, mode, NULL, &e)
                       : cuda_engine_wo_a(w, s, x, S, 8, 1024, 4096, y, xb, mode, NULL, &e);
        if (rc || cuda_sync(&e))
            return -1;
        if (r >= 0)
            t[r] = now_s() - t0;
    }
    for (int i = 0; i < 5; i++)
        for (int j = i + 1; j < 5; j++)
            if (t[j] < t[i]) {
                double u = t[i];
                t[i] = t[j], t[j] = u;
            }
    return t[2] * 1e3;
}
static void timing(void)
{
    const int S = 2048;
    size_t nw = (size_t)8192 * 4096, nO = (size_t)S * 32768;
    struct ctx_err e = {0};
    void *dw = NULL, *ds = NULL, *dx = NULL, *dy = NULL, *dxb = NULL;
    if (cuda_malloc(&dw, nw, &e) || cuda_malloc(&ds, nw / 16384, &e) ||
        cuda_malloc(&dx, sizeof(float) * nO, &e) ||
        cuda_malloc(&dy, sizeof(float) * (size_t)S * 8192, &e) || cuda_malloc(&dxb, 2 * nO, &e) ||
        cuda_memset(dw, 0x38, nw, &e) || cuda_memset(ds, 120, nw / 16384, &e) ||
        cuda_memset(dx, 0x3c, sizeof(float) * nO, &e)) {
        printf("# timing skipped: %s\n", e.msg);
    } else {
        double f = 2.0 * S * 8192 * 4096, fg = 2.0 * S * 256 * 4096;
        double a = time_call(0, 2, dw, ds, dx, S, dy, dxb),
               b = time_call(0, 1, dw, ds, dx, S, dy, dxb);
        double c = time_call(1, 2, dw, NULL, dx, S, dy, dxb),
               d = time_call(1, 1, dw, NULL, dx, S, dy, dxb);
        printf("# wo_a 8x1024x4096, %d tokens: GEMM %.3f ms (%.0f TFLOP/s, staging included), "
               "per-row %.3f ms\n",
               S, a, f / a * 1e-9, b);
        printf("# gate 256x4096, %d tokens: GEMM %.3f ms (%.0f TFLOP/s), per-row %.3f ms\n", S, c,
               fg / c * 1e-9, d);
    }
    cuda_free(dw);
    cuda_free(ds);
    cuda_free(dx);
    cuda_free(dy);
    cuda_free(dxb);
}

int main(void)
{
    if (cuda_device_count() < 1) {
        printf("1..0 # SKIP no CUDA device\n");
        return 0;
    }
    /* wo_a at the configs' shapes (fixture/tiny: 2 x 128 x 1024; mid: 4 x 512 x 2048; V4-Flash: 8 x
     * 1024 x 4096), prefill chunks (S > 8: tiles cut at 128 tokens, a partial last tile) and decode
     * (S <= 8) */
    static const struct wocase wc[] = {
        {"tiny", 130, 2, 128, 1024, 0},        {"tiny-exact", 77, 2, 128, 1024, 1},
        {"mid", 300, 4, 512, 2048, 0},         {"flash", 40, 8, 1024, 4096, 0},
        {"flash-exact", 24, 8, 1024, 4096, 1}, {"tiny-decode", 1, 2, 128, 1024, 0},
        {"mid-decode", 8, 4, 512, 2048, 0},    {"flash-decode", 3, 8, 1024, 4096, 0},
        {"flash-decode1", 1, 8, 1024, 4096, 0}, {"flash-decode4", 4, 8, 1024, 4096, 0},
        {"flash-decode1-exact", 1, 8, 1024, 4096, 1},
    };
    for (size_t i = 0; i < sizeof wc / sizeof wc[0]; i++)
        wo_case(&wc[i]);
    /* bf16 matrices: the gate (E x D), the compressors' concatenation (2624 x D in a V4-Flash CSA
     * layer), a row count that is not a multiple of 128 */
    static const struct lincase lc[] = {
        {"gate-flash", 70, 256, 4096, 0, 0},        {"gate-exact", 64, 256, 4096, 0, 1},
        {"cbf-flash", 33, 2624, 4096, 0, 0},        {"rows-1000", 200, 1000, 2048, 1, 0},
        {"rows-1000-exact", 130, 1000, 2048, 1, 1}, {"gate-decode", 4, 256, 4096, 0, 0},
    };
    for (size_t i = 0; i < sizeof lc / sizeof lc[0]; i++)
        lin_case(&lc[i]);
    if (!getenv("CTX_WO_NO_TIMING"))
        timing();
    printf("1..%d\n", n_test);
    return n_fail ? 1 : 0;
}
