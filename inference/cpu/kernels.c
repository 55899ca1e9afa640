/* CPU kernels of the V4 forward pass; see kernels.h for the numerical contract. */
#include "kernels.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "pool.h"

/* ---- decode tables ---- */

static float e4m3_decode(unsigned b)
{
    int s = (b >> 7) & 1, e = (b >> 3) & 15, m = b & 7;
    float v;
    if (e == 15 && m == 7)
        return __builtin_nanf("");
    if (e == 0)
        v = ldexpf((float)m, -9);
    else
        v = ldexpf((float)(8 + m), e - 10);
    return s ? -v : v;
}

static const float e2m1_f[16] = {0.f, .5f, 1.f, 1.5f, 2.f, 3.f, 4.f, 6.f,
                                  -0.f, -.5f, -1.f, -1.5f, -2.f, -3.f, -4.f, -6.f};
/* Filled at first use by table_init (a constant initialiser of 256 entries would hide the formula). */
static double e4m3_d[256];
static pthread_once_t table_once = PTHREAD_ONCE_INIT;
static int use_avx2, use_avx512;

static int have_avx2(void)
{
#if defined(__x86_64__) || defined(__i386__)
    /* every AVX2 CPU also has F16C (Intel since Ivy Bridge, AMD since Piledriver), which not every
     * compiler's __builtin_cpu_supports can name */
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}
static int have_avx512(void)
{
#if defined(__x86_64__) || defined(__i386__)
    return have_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl");
#else
    return 0;
#endif
}

static void table_init_once(void)
{
    for (unsigned b = 0; b < 256; b++)
        e4m3_d[b] = (double)e4m3_decode(b);
    use_avx2 = have_avx2() && !getenv("CTX_NO_AVX2");
    use_avx512 = use_avx2 && have_avx512() && !getenv("CTX_NO_AVX512");
}
static void table_init(void) { pthread_once(&table_once, table_init_once); }

float inf_cpu_e4m3(uint8_t b) { return e4m3_decode(b); }

int inf_cpu_set_simd(int level)
{
    table_init();
    use_avx2 = level >= 1 && have_avx2();
    use_avx512 = level >= 2 && use_avx2 && have_avx512();
    return use_avx512 ? 2 : use_avx2;
}

void inf_cpu_bf16_round_n(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = inf_cpu_bf16(x[i]);
}

/* ---- quantisation ---- */

float inf_cpu_e4m3_round(float x)
{
    if (fabsf(x) < 0.015625f) /* subnormal e4m3 range: a fixed step of 2^-9 */
        return rintf(x * 512.f) / 512.f;
    uint32_t u;
    memcpy(&u, &x, 4);
    u += 0x7ffffu + ((u >> 20) & 1u); /* keep 3 mantissa bits, ties to even */
    u &= 0xfff00000u;
    memcpy(&x, &u, 4);
    return x;
}

float inf_cpu_pow2_scale(float amax, float inv)
{
    float r = amax * inv;
    uint32_t u;
    memcpy(&u, &r, 4);
    int code = (int)((u >> 23) & 255u) + ((u & 0x7fffffu) != 0);
    return ldexpf(1.0f, code - 127);
}

void inf_cpu_act_quant(const float *x, int k, int block, float *q, float *sc)
{
    for (int b = 0; b < k / block; b++) {
        const float *xb = x + (size_t)b * block;
        float amax = 0.f;
        for (int i = 0; i < block; i++)
            amax = fmaxf(amax, fabsf(xb[i]));
        if (amax < 1e-4f)
            amax = 1e-4f;
        float s = inf_cpu_pow2_scale(amax, 1.0f / 448.0f);
        sc[b] = s;
        for (int i = 0; i < block; i++) {
            float v = xb[i] / s;
            v = v > 448.f ? 448.f : v < -448.f ? -448.f : v;
            q[(size_t)b * block + i] = inf_cpu_e4m3_round(v);
        }
    }
}

void inf_cpu_fp8_qdq(float *x, int n, int block)
{
    float q[128], s;
    for (int b = 0; b < n / block; b++) {
        inf_cpu_act_quant(x + (size_t)b * block, block, block, q, &s);
        for (int i = 0; i < block; i++)
            x[(size_t)b * block + i] = inf_cpu_bf16(q[i] * s);
    }
}

static float e2m1_round(float v) /* v within +-6; nearest code value, ties to the even code */
{
    static const float mid[7] = {.25f, .75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.f};
    float a = fabsf(v);
    int i = 0;
    while (i < 7 && a > mid[i])
        i++;
    if (i < 7 && a == mid[i] && (i & 1))
        i++;
    float r = e2m1_f[i];
    return signbit(v) ? -r : r;
}

void inf_cpu_fp4_qdq(float *x, int n, int block)
{
    for (int b = 0; b < n / block; b++) {
        float *xb = x + (size_t)b * block;
        float amax = 0.f;
        for (int i = 0; i < block; i++)
            amax = fmaxf(amax, fabsf(xb[i]));
        const float floor_ = 6.0f * 0x1p-126f;
        if (amax < floor_)
            amax = floor_;
        float s = inf_cpu_pow2_scale(amax, 1.0f / 6.0f);
        for (int i = 0; i < block; i++) {
            float v = xb[i] / s;
            v = v > 6.f ? 6.f : v < -6.f ? -6.f : v;
            xb[i] = inf_cpu_bf16(e2m1_round(v) * s);
        }
    }
}

/* ---- products ---- */

/* Exact dot product of decoded e4m3/e2m1 values: each product of two such values is exact in
 * float (at most 8 significant bits, never below 2^-18), and accumulating those products in double
 * is exact for blocks of up to 128 (the sum stays a multiple of 2^-18 well below 2^53 units), so
 * the result does not depend on the order: the AVX2 and scalar paths agree bit for bit. */
static double dot_fd_scalar(const float *a, const float *b, int n)
{
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (int i = 0; i < n; i += 4) {
        s0 += (double)(a[i] * b[i]);
        s1 += (double)(a[i + 1] * b[i + 1]);
        s2 += (double)(a[i + 2] * b[i + 2]);
        s3 += (double)(a[i + 3] * b[i + 3]);
    }
    return (s0 + s1) + (s2 + s3);
}

static void decode_fp8_scalar(const uint8_t *w, int k, float *out)
{
    for (int i = 0; i < k; i++)
        out[i] = (float)e4m3_d[w[i]];
}

static void decode_fp4_scalar(const uint8_t *w, int k, float *out)
{
    for (int i = 0; i < k / 2; i++) { /* low nibble = even K index */
        out[2 * i] = e2m1_f[w[i] & 15];
        out[2 * i + 1] = e2m1_f[w[i] >> 4];
    }
}

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define HAVE_X86 1

/* 16 e4m3 bytes -> 16 floats without float subnormals (whose arithmetic would trap into microcode):
 * the 7 magnitude bits land under an fp16's exponent and mantissa fields, so the hardware fp16
 * conversion yields e4m3 * 2^-8 exactly (fp16 subnormals included), rescaled by 2^8. */
__attribute__((target("avx2,fma,f16c"), always_inline))
static inline void e4m3x16(__m128i raw, __m256 *lo, __m256 *hi)
{
    __m256i x = _mm256_cvtepu8_epi16(raw);
    __m256i h = _mm256_or_si256(_mm256_slli_epi16(_mm256_and_si256(x, _mm256_set1_epi16(0x7f)), 7),
                                _mm256_slli_epi16(_mm256_and_si256(x, _mm256_set1_epi16(0x80)), 8));
    const __m256 k256 = _mm256_set1_ps(256.0f);
    *lo = _mm256_mul_ps(_mm256_cvtph_ps(_mm256_castsi256_si128(h)), k256);
    *hi = _mm256_mul_ps(_mm256_cvtph_ps(_mm256_extracti128_si256(h, 1)), k256);
}

__attribute__((target("avx2,fma,f16c")))
static void decode_fp8_avx2(const uint8_t *w, int k, float *out) /* k % 16 == 0 */
{
    for (int i = 0; i < k; i += 16) {
        __m256 lo, hi;
        e4m3x16(_mm_loadu_si128((const __m128i *)(w + i)), &lo, &hi);
        _mm256_storeu_ps(out + i, lo);
        _mm256_storeu_ps(out + i + 8, hi);
    }
}

__attribute__((target("avx2,fma,f16c")))
static void decode_fp4_avx2(const uint8_t *w, int k, float *out) /* k % 32 == 0 */
{
    const __m256 tab = _mm256_setr_ps(0.f, .5f, 1.f, 1.5f, 2.f, 3.f, 4.f, 6.f);
    const __m128i m0f = _mm_set1_epi8(0x0f);
    const __m256i m8 = _mm256_set1_epi32(8);
    for (int i = 0; i < k / 2; i += 16) {
        __m128i b = _mm_loadu_si128((const __m128i *)(w + i));
        __m128i lo = _mm_and_si128(b, m0f), hi = _mm_and_si128(_mm_srli_epi16(b, 4), m0f);
        __m128i e[2] = {_mm_unpacklo_epi8(lo, hi), _mm_unpackhi_epi8(lo, hi)};
        for (int h = 0; h < 2; h++)
            for (int q = 0; q < 2; q++) {
                __m128i g = q ? _mm_srli_si128(e[h], 8) : e[h];
                __m256i idx = _mm256_cvtepu8_epi32(g);
                __m256 mag = _mm256_permutevar8x32_ps(tab, idx);
                __m256i sg = _mm256_slli_epi32(_mm256_and_si256(idx, m8), 28);
                _mm256_storeu_ps(out + 2 * i + 16 * h + 8 * q, _mm256_or_ps(mag, _mm256_castsi256_ps(sg)));
            }
    }
}
#endif

/* One output of a quantised product: the K blocks of `blk` (32 or 128) of the decoded weight row
 * wf and the e4m3 activations q, each exact partial rounded to fp32, scaled by the activation scale
 * (per 128) and the weight scale (per block), summed in fp32 in K order. */
static float row_blocks_scalar(const float *wf, const float *q, const float *sa, const uint8_t *srow, int k,
                               int blk)
{
    float acc = 0.f;
    for (int b = 0; b < k / blk; b++) {
        float part = (float)dot_fd_scalar(wf + b * blk, q + b * blk, blk);
        acc += (part * sa[b * blk / 128]) * inf_cpu_e8m0(srow[b]);
    }
    return acc;
}

#ifdef HAVE_X86
__attribute__((target("avx2,fma,f16c")))
static float row_blocks_avx2(const float *wf, const float *q, const float *sa, const uint8_t *srow, int k,
                             int blk)
{
    float acc = 0.f;
    for (int b = 0; b < k / blk; b++) {
        const float *a = wf + b * blk, *x = q + b * blk;
        __m256d s0 = _mm256_setzero_pd(), s1 = s0, s2 = s0, s3 = s0;
        for (int i = 0; i < blk; i += 16) {
            __m256 p0 = _mm256_mul_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(x + i));
            __m256 p1 = _mm256_mul_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(x + i + 8));
            s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(p0)));
            s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(p0, 1)));
            s2 = _mm256_add_pd(s2, _mm256_cvtps_pd(_mm256_castps256_ps128(p1)));
            s3 = _mm256_add_pd(s3, _mm256_cvtps_pd(_mm256_extractf128_ps(p1, 1)));
        }
        __m256d t = _mm256_add_pd(_mm256_add_pd(s0, s1), _mm256_add_pd(s2, s3));
        __m128d h = _mm_add_pd(_mm256_castpd256_pd128(t), _mm256_extractf128_pd(t, 1));
        double d = _mm_cvtsd_f64(h) + _mm_cvtsd_f64(_mm_unpackhi_pd(h, h));
        acc += ((float)d * sa[b * blk / 128]) * inf_cpu_e8m0(srow[b]);
    }
    return acc;
}
#endif

static float row_blocks(const float *wf, const float *q, const float *sa, const uint8_t *srow, int k, int blk)
{
#ifdef HAVE_X86
    if (use_avx2)
        return row_blocks_avx2(wf, q, sa, srow, k, blk);
#endif
    return row_blocks_scalar(wf, q, sa, srow, k, blk);
}

static void decode_fp8(const uint8_t *w, int k, float *out)
{
#ifdef HAVE_X86
    if (use_avx2) {
        decode_fp8_avx2(w, k, out);
        return;
    }
#endif
    decode_fp8_scalar(w, k, out);
}
static void decode_fp4(const uint8_t *w, int k, float *out)
{
#ifdef HAVE_X86
    if (use_avx2) {
        decode_fp4_avx2(w, k, out);
        return;
    }
#endif
    decode_fp4_scalar(w, k, out);
}

static float dot_f_scalar(const float *a, const float *b, int n)
{
    float s[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++)
            s[j] += a[i + j] * b[i + j];
    float t = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
    for (; i < n; i++)
        t += a[i] * b[i];
    return t;
}

#ifdef HAVE_X86
__attribute__((target("avx2,fma,f16c")))
static float dot_f_avx2(const float *a, const float *b, int n)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8)
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    __m256 t8 = _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3));
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(t8), _mm256_extractf128_ps(t8, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
    float t = _mm_cvtss_f32(h);
    for (; i < n; i++)
        t += a[i] * b[i];
    return t;
}

__attribute__((target("avx2,fma,f16c")))
static void axpy_avx2(float *y, float a, const float *x, int n)
{
    __m256 va = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++)
        y[i] += a * x[i];
}
#endif

static float dot_f(const float *a, const float *b, int n)
{
#ifdef HAVE_X86
    if (use_avx2)
        return dot_f_avx2(a, b, n);
#endif
    return dot_f_scalar(a, b, n);
}

static void axpy(float *y, float a, const float *x, int n)
{
#ifdef HAVE_X86
    if (use_avx2) {
        axpy_avx2(y, a, x, n);
        return;
    }
#endif
    for (int i = 0; i < n; i++)
        y[i] += a * x[i];
}

float inf_cpu_dot(const float *a, const float *b, int n) { return dot_f(a, b, n); }

/* fp32 dot product of a bf16 weight row with x (the same function for every batch size, so a
 * token's result does not depend on how many tokens share the call). */
static float dot_bf16_scalar(const uint16_t *w, const float *x, int n)
{
    float s[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++)
            s[j] += inf_cpu_bf16_load(w[i + j]) * x[i + j];
    float t = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
    for (; i < n; i++)
        t += inf_cpu_bf16_load(w[i]) * x[i];
    return t;
}

#ifdef HAVE_X86
__attribute__((target("avx2,fma,f16c")))
static float dot_bf16_avx2(const uint16_t *w, const float *x, int n)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int i = 0;
#define BF16_8(off) _mm256_castsi256_ps(_mm256_slli_epi32( \
        _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(w + i + (off)))), 16))
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(BF16_8(0), _mm256_loadu_ps(x + i), s0);
        s1 = _mm256_fmadd_ps(BF16_8(8), _mm256_loadu_ps(x + i + 8), s1);
        s2 = _mm256_fmadd_ps(BF16_8(16), _mm256_loadu_ps(x + i + 16), s2);
        s3 = _mm256_fmadd_ps(BF16_8(24), _mm256_loadu_ps(x + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8)
        s0 = _mm256_fmadd_ps(BF16_8(0), _mm256_loadu_ps(x + i), s0);
#undef BF16_8
    __m256 t8 = _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3));
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(t8), _mm256_extractf128_ps(t8, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
    float t = _mm_cvtss_f32(h);
    for (; i < n; i++)
        t += inf_cpu_bf16_load(w[i]) * x[i];
    return t;
}
#endif

static float dot_bf16(const uint16_t *w, const float *x, int n)
{
#ifdef HAVE_X86
    if (use_avx2)
        return dot_bf16_avx2(w, x, n);
#endif
    return dot_bf16_scalar(w, x, n);
}

#ifdef HAVE_X86
/* FP4 rows in exact integer arithmetic: with q = e4m3 * 2^9 split as qh * 512 + ql (qh in
 * [-448, 448], ql in [0, 511], both int16) and w = e2m1 * 2 (int in [-12, 12]), a 32-block's
 * partial is (sum w*qh) * 512 + sum w*ql, exact in int32; rounded to float and scaled by 2^-10 it
 * equals the rounded exact partial of the portable path bit for bit. */
__attribute__((target("avx2,fma,f16c")))
static float row_fp4_int_avx2(const uint8_t *w, const uint8_t *srow, const int16_t *qh, const int16_t *ql,
                              const float *sa, int k)
{
    const __m128i lut = _mm_setr_epi8(0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12);
    const __m128i m0f = _mm_set1_epi8(0x0f);
    float acc = 0.f;
    for (int b0 = 0; b0 < k / 32; b0 += 4) { /* four 32-blocks = one 128 activation block */
        __m256i v[4];
        for (int u = 0; u < 4; u++) {
            int b = b0 + u;
            __m128i raw = _mm_loadu_si128((const __m128i *)(w + b * 16));
            __m128i lo = _mm_and_si128(raw, m0f), hi = _mm_and_si128(_mm_srli_epi16(raw, 4), m0f);
            __m128i c0 = _mm_shuffle_epi8(lut, _mm_unpacklo_epi8(lo, hi)); /* elements 0..15 */
            __m128i c1 = _mm_shuffle_epi8(lut, _mm_unpackhi_epi8(lo, hi)); /* elements 16..31 */
            __m256i w0 = _mm256_cvtepi8_epi16(c0), w1 = _mm256_cvtepi8_epi16(c1);
            const int16_t *h = qh + b * 32, *l = ql + b * 32;
            __m256i sh = _mm256_add_epi32(_mm256_madd_epi16(w0, _mm256_loadu_si256((const __m256i *)h)),
                                          _mm256_madd_epi16(w1, _mm256_loadu_si256((const __m256i *)(h + 16))));
            __m256i sl = _mm256_add_epi32(_mm256_madd_epi16(w0, _mm256_loadu_si256((const __m256i *)l)),
                                          _mm256_madd_epi16(w1, _mm256_loadu_si256((const __m256i *)(l + 16))));
            v[u] = _mm256_add_epi32(_mm256_slli_epi32(sh, 9), sl);
        }
        if (k / 32 - b0 < 4) /* k is a multiple of 128, so never */
            break;
        __m256i h01 = _mm256_hadd_epi32(v[0], v[1]), h23 = _mm256_hadd_epi32(v[2], v[3]);
        __m256i h = _mm256_hadd_epi32(h01, h23); /* per 128-bit half: sums of v0, v1, v2, v3 */
        __m128i t = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
        __m128 pf = _mm_mul_ps(_mm_cvtepi32_ps(t), _mm_set1_ps(0x1p-10f));
        float p[4];
        _mm_storeu_ps(p, pf);
        float s = sa[b0 / 4];
        for (int u = 0; u < 4; u++)
            acc += (p[u] * s) * inf_cpu_e8m0(srow[b0 + u]);
    }
    return acc;
}
#endif

#ifdef HAVE_X86
/* FP8 row with the e4m3 decode fused into the exact block products (for few tokens, where a
 * decoded copy of the row would not be reused). Same bits as row_blocks. */
__attribute__((target("avx2,fma,f16c")))
static float row_fp8_fused_avx2(const uint8_t *w, const uint8_t *srow, const float *q, const float *sa, int k)
{
    float acc = 0.f;
    for (int b = 0; b < k / 128; b++) {
        __m256d s0 = _mm256_setzero_pd(), s1 = s0, s2 = s0, s3 = s0;
        for (int i = b * 128; i < b * 128 + 128; i += 16) {
            __m256 f0, f1;
            e4m3x16(_mm_loadu_si128((const __m128i *)(w + i)), &f0, &f1);
            __m256 p0 = _mm256_mul_ps(f0, _mm256_loadu_ps(q + i)), p1 = _mm256_mul_ps(f1, _mm256_loadu_ps(q + i + 8));
            s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(p0)));
            s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(p0, 1)));
            s2 = _mm256_add_pd(s2, _mm256_cvtps_pd(_mm256_castps256_ps128(p1)));
            s3 = _mm256_add_pd(s3, _mm256_cvtps_pd(_mm256_extractf128_ps(p1, 1)));
        }
        __m256d t = _mm256_add_pd(_mm256_add_pd(s0, s1), _mm256_add_pd(s2, s3));
        __m128d h = _mm_add_pd(_mm256_castpd256_pd128(t), _mm256_extractf128_pd(t, 1));
        double d = _mm_cvtsd_f64(h) + _mm_cvtsd_f64(_mm_unpackhi_pd(h, h));
        acc += ((float)d * sa[b]) * inf_cpu_e8m0(srow[b]);
    }
    return acc;
}
#endif

#ifdef HAVE_X86
/* Two FP4 rows at once (sharing the activation loads); same bits as row_fp4_int_avx2 per row. */
__attribute__((target("avx2,fma,f16c"), always_inline))
static inline __m256i fp4_block_sum(const uint8_t *w, const int16_t *h, const int16_t *l)
{
    const __m128i lut = _mm_setr_epi8(0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12);
    const __m128i m0f = _mm_set1_epi8(0x0f);
    __m128i raw = _mm_loadu_si128((const __m128i *)w);
    __m128i lo = _mm_and_si128(raw, m0f), hi = _mm_and_si128(_mm_srli_epi16(raw, 4), m0f);
    __m256i w0 = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(lut, _mm_unpacklo_epi8(lo, hi)));
    __m256i w1 = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(lut, _mm_unpackhi_epi8(lo, hi)));
    __m256i sh = _mm256_add_epi32(_mm256_madd_epi16(w0, _mm256_loadu_si256((const __m256i *)h)),
                                  _mm256_madd_epi16(w1, _mm256_loadu_si256((const __m256i *)(h + 16))));
    __m256i sl = _mm256_add_epi32(_mm256_madd_epi16(w0, _mm256_loadu_si256((const __m256i *)l)),
                                  _mm256_madd_epi16(w1, _mm256_loadu_si256((const __m256i *)(l + 16))));
    return _mm256_add_epi32(_mm256_slli_epi32(sh, 9), sl);
}

__attribute__((target("avx2,fma,f16c")))
static void row2_fp4_int_avx2(const uint8_t *wa, const uint8_t *wb, const uint8_t *sra, const uint8_t *srb,
                              const int16_t *qh, const int16_t *ql, const float *sa, int k, float *out)
{
    float acc_a = 0.f, acc_b = 0.f;
    const __m128 k10 = _mm_set1_ps(0x1p-10f);
    for (int b0 = 0; b0 < k / 32; b0 += 4) {
        const int16_t *h = qh + b0 * 32, *l = ql + b0 * 32;
        /* the weights stream from memory once: ask for them a few cache lines ahead */
        _mm_prefetch((const char *)(wa + b0 * 16 + 512), _MM_HINT_T0);
        _mm_prefetch((const char *)(wb + b0 * 16 + 512), _MM_HINT_T0);
        __m256i a0 = fp4_block_sum(wa + b0 * 16, h, l), a1 = fp4_block_sum(wa + b0 * 16 + 16, h + 32, l + 32);
        __m256i a2 = fp4_block_sum(wa + b0 * 16 + 32, h + 64, l + 64), a3 = fp4_block_sum(wa + b0 * 16 + 48, h + 96, l + 96);
        __m256i c0 = fp4_block_sum(wb + b0 * 16, h, l), c1 = fp4_block_sum(wb + b0 * 16 + 16, h + 32, l + 32);
        __m256i c2 = fp4_block_sum(wb + b0 * 16 + 32, h + 64, l + 64), c3 = fp4_block_sum(wb + b0 * 16 + 48, h + 96, l + 96);
        __m256i ha = _mm256_hadd_epi32(_mm256_hadd_epi32(a0, a1), _mm256_hadd_epi32(a2, a3));
        __m256i hb = _mm256_hadd_epi32(_mm256_hadd_epi32(c0, c1), _mm256_hadd_epi32(c2, c3));
        __m128 pa = _mm_mul_ps(_mm_cvtepi32_ps(_mm_add_epi32(_mm256_castsi256_si128(ha), _mm256_extracti128_si256(ha, 1))), k10);
        __m128 pb = _mm_mul_ps(_mm_cvtepi32_ps(_mm_add_epi32(_mm256_castsi256_si128(hb), _mm256_extracti128_si256(hb, 1))), k10);
        float fa[4], fb[4], s = sa[b0 / 4];
        _mm_storeu_ps(fa, pa);
        _mm_storeu_ps(fb, pb);
        for (int u = 0; u < 4; u++) {
            acc_a += (fa[u] * s) * inf_cpu_e8m0(sra[b0 + u]);
            acc_b += (fb[u] * s) * inf_cpu_e8m0(srb[b0 + u]);
        }
    }
    out[0] = acc_a;
    out[1] = acc_b;
}
#endif

#ifdef HAVE_X86
/* e4m3 * 2^-8 from the fp16 converter (the 2^8 is restored on the exact block sum). */
__attribute__((target("avx2,fma,f16c"), always_inline))
static inline void e4m3x16_lo(__m128i raw, __m256 *lo, __m256 *hi)
{
    __m256i x = _mm256_cvtepu8_epi16(raw);
    __m256i h = _mm256_or_si256(_mm256_slli_epi16(_mm256_and_si256(x, _mm256_set1_epi16(0x7f)), 7),
                                _mm256_slli_epi16(_mm256_and_si256(x, _mm256_set1_epi16(0x80)), 8));
    *lo = _mm256_cvtph_ps(_mm256_castsi256_si128(h));
    *hi = _mm256_cvtph_ps(_mm256_extracti128_si256(h, 1));
}

__attribute__((target("avx2,fma,f16c"), always_inline))
static inline __m256d sum4d(__m256d a, __m256d b, __m256d c, __m256d d)
{
    return _mm256_add_pd(_mm256_add_pd(a, b), _mm256_add_pd(c, d));
}
__attribute__((target("avx2,fma,f16c"), always_inline))
static inline double hsumd(__m256d t)
{
    __m128d h = _mm_add_pd(_mm256_castpd256_pd128(t), _mm256_extractf128_pd(t, 1));
    return _mm_cvtsd_f64(h) + _mm_cvtsd_f64(_mm_unpackhi_pd(h, h));
}

/* Two FP8 rows at once for one token (sharing the activation loads); same bits as row_blocks. */
__attribute__((target("avx2,fma,f16c")))
static void row2_fp8_fused_avx2(const uint8_t *wa, const uint8_t *wb, const uint8_t *srow, const float *q,
                                const float *sa, int k, float *out)
{
    float acc_a = 0.f, acc_b = 0.f;
    for (int b = 0; b < k / 128; b++) {
        __m256d a0 = _mm256_setzero_pd(), a1 = a0, a2 = a0, a3 = a0, c0 = a0, c1 = a0, c2 = a0, c3 = a0;
        _mm_prefetch((const char *)(wa + b * 128 + 512), _MM_HINT_T0);
        _mm_prefetch((const char *)(wa + b * 128 + 576), _MM_HINT_T0);
        _mm_prefetch((const char *)(wb + b * 128 + 512), _MM_HINT_T0);
        _mm_prefetch((const char *)(wb + b * 128 + 576), _MM_HINT_T0);
        for (int i = b * 128; i < b * 128 + 128; i += 16) {
            __m256 x0 = _mm256_loadu_ps(q + i), x1 = _mm256_loadu_ps(q + i + 8), f0, f1, g0, g1;
            e4m3x16_lo(_mm_loadu_si128((const __m128i *)(wa + i)), &f0, &f1);
            e4m3x16_lo(_mm_loadu_si128((const __m128i *)(wb + i)), &g0, &g1);
            __m256 p0 = _mm256_mul_ps(f0, x0), p1 = _mm256_mul_ps(f1, x1);
            __m256 r0 = _mm256_mul_ps(g0, x0), r1 = _mm256_mul_ps(g1, x1);
            a0 = _mm256_add_pd(a0, _mm256_cvtps_pd(_mm256_castps256_ps128(p0)));
            a1 = _mm256_add_pd(a1, _mm256_cvtps_pd(_mm256_extractf128_ps(p0, 1)));
            a2 = _mm256_add_pd(a2, _mm256_cvtps_pd(_mm256_castps256_ps128(p1)));
            a3 = _mm256_add_pd(a3, _mm256_cvtps_pd(_mm256_extractf128_ps(p1, 1)));
            c0 = _mm256_add_pd(c0, _mm256_cvtps_pd(_mm256_castps256_ps128(r0)));
            c1 = _mm256_add_pd(c1, _mm256_cvtps_pd(_mm256_extractf128_ps(r0, 1)));
            c2 = _mm256_add_pd(c2, _mm256_cvtps_pd(_mm256_castps256_ps128(r1)));
            c3 = _mm256_add_pd(c3, _mm256_cvtps_pd(_mm256_extractf128_ps(r1, 1)));
        }
        float sc = sa[b] * 1.0f, wsc = inf_cpu_e8m0(srow[b]);
        acc_a += ((float)(hsumd(sum4d(a0, a1, a2, a3)) * 256.0) * sc) * wsc;
        acc_b += ((float)(hsumd(sum4d(c0, c1, c2, c3)) * 256.0) * sc) * wsc;
    }
    out[0] = acc_a;
    out[1] = acc_b;
}
#endif

#ifdef HAVE_X86
/* row2_fp8_fused_avx2 with 512-bit registers for the float->double widening and the double sums
 * (the costly part of the exact FP8 product). Same bits. */
__attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl")))
static void row2_fp8_fused_avx512(const uint8_t *wa, const uint8_t *wb, const uint8_t *srow, const float *q,
                                  const float *sa, int k, float *out)
{
    float acc_a = 0.f, acc_b = 0.f;
    const __m512i m7f = _mm512_set1_epi16(0x7f), m80 = _mm512_set1_epi16(0x80);
    for (int b = 0; b < k / 128; b++) {
        __m512d a0 = _mm512_setzero_pd(), a1 = a0, c0 = a0, c1 = a0;
        for (int i = b * 128; i < b * 128 + 128; i += 32) {
            __m512i xa = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(wa + i)));
            __m512i xb = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(wb + i)));
            __m512i ha = _mm512_or_si512(_mm512_slli_epi16(_mm512_and_si512(xa, m7f), 7),
                                         _mm512_slli_epi16(_mm512_and_si512(xa, m80), 8));
            __m512i hb = _mm512_or_si512(_mm512_slli_epi16(_mm512_and_si512(xb, m7f), 7),
                                         _mm512_slli_epi16(_mm512_and_si512(xb, m80), 8));
            __m512 x0 = _mm512_loadu_ps(q + i), x1 = _mm512_loadu_ps(q + i + 16);
            __m512 pa0 = _mm512_mul_ps(_mm512_cvtph_ps(_mm512_castsi512_si256(ha)), x0);
            __m512 pa1 = _mm512_mul_ps(_mm512_cvtph_ps(_mm512_extracti64x4_epi64(ha, 1)), x1);
            __m512 pb0 = _mm512_mul_ps(_mm512_cvtph_ps(_mm512_castsi512_si256(hb)), x0);
            __m512 pb1 = _mm512_mul_ps(_mm512_cvtph_ps(_mm512_extracti64x4_epi64(hb, 1)), x1);
            a0 = _mm512_add_pd(a0, _mm512_cvtps_pd(_mm512_castps512_ps256(pa0)));
            a1 = _mm512_add_pd(a1, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(pa0), 1))));
            a0 = _mm512_add_pd(a0, _mm512_cvtps_pd(_mm512_castps512_ps256(pa1)));
            a1 = _mm512_add_pd(a1, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(pa1), 1))));
            c0 = _mm512_add_pd(c0, _mm512_cvtps_pd(_mm512_castps512_ps256(pb0)));
            c1 = _mm512_add_pd(c1, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(pb0), 1))));
            c0 = _mm512_add_pd(c0, _mm512_cvtps_pd(_mm512_castps512_ps256(pb1)));
            c1 = _mm512_add_pd(c1, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(pb1), 1))));
        }
        float sc = sa[b], wsc = inf_cpu_e8m0(srow[b]);
        acc_a += ((float)(_mm512_reduce_add_pd(_mm512_add_pd(a0, a1)) * 256.0) * sc) * wsc;
        acc_b += ((float)(_mm512_reduce_add_pd(_mm512_add_pd(c0, c1)) * 256.0) * sc) * wsc;
    }
    out[0] = acc_a;
    out[1] = acc_b;
}
#endif

#ifdef HAVE_X86
/* wo_a: an FP8 matrix used as its exact bf16 dequantisation in an fp32 product. */
__attribute__((target("avx2,fma,f16c")))
static float row_fp8dq_avx2(const uint8_t *w, const uint8_t *srow, const float *x, int k)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = s0;
    for (int b = 0; b < k / 128; b++) {
        const __m256 sc = _mm256_set1_ps(inf_cpu_e8m0(srow[b]));
        for (int i = b * 128; i < b * 128 + 128; i += 16) {
            __m256 f0, f1;
            e4m3x16(_mm_loadu_si128((const __m128i *)(w + i)), &f0, &f1);
            s0 = _mm256_fmadd_ps(_mm256_mul_ps(f0, sc), _mm256_loadu_ps(x + i), s0);
            s1 = _mm256_fmadd_ps(_mm256_mul_ps(f1, sc), _mm256_loadu_ps(x + i + 8), s1);
        }
    }
    __m256 t8 = _mm256_add_ps(s0, s1);
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(t8), _mm256_extractf128_ps(t8, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
    return _mm_cvtss_f32(h);
}
#endif

/* Per-thread scratch rows (pool threads live as long as the pool; freed at thread exit). */
static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
struct scratch {
    size_t cap;
    float *p;
};
static void scratch_free(void *v)
{
    struct scratch *sc = v;
    if (sc)
        free(sc->p);
    free(sc);
}
static void scratch_init(void) { pthread_key_create(&scratch_key, scratch_free); }
static float *scratch_get(size_t n)
{
    pthread_once(&scratch_once, scratch_init);
    struct scratch *sc = pthread_getspecific(scratch_key);
    if (!sc) {
        sc = calloc(1, sizeof *sc);
        if (!sc || pthread_setspecific(scratch_key, sc)) {
            free(sc);
            return NULL;
        }
    }
    if (sc->cap < n) {
        float *p = realloc(sc->p, sizeof(float) * n);
        if (!p)
            return NULL;
        sc->p = p;
        sc->cap = n;
    }
    return sc->p;
}

/* One product of a batch, prepared: quantised activations and its range of row tasks. */
struct lin_prep {
    const struct inf_lin *w;
    const float *x;        /* activations [S][k] */
    float *q, *sa;         /* FP8/FP4: e4m3 activation values [S][k] and scales [S][k/128] */
    int16_t *qh, *ql;      /* FP4 with AVX2: the activations split for the integer path */
    int owns;              /* q/sa/qh/ql allocated here (else shared with an earlier call) */
    int S;
    float *y;
    enum inf_lin_out out;
    size_t task0, tasks;
};
struct batch_job {
    struct lin_prep *p;
    int n;
};

/* Output rows per task: about 16K weights, so that a task outweighs its scheduling cost. */
static int rows_per_task(const struct inf_lin *w)
{
    int r = 16384 / (w->k > 0 ? w->k : 1);
    return r < 1 ? 1 : r > 64 ? 64 : r;
}

static void put_out(const struct lin_prep *j, int s, int n, float acc)
{
    j->y[(size_t)s * j->w->n + n] = j->out == INF_OUT_BF16 ? inf_cpu_bf16(acc) : acc;
}

static void lin_rows(const struct lin_prep *j, int n0, int n1)
{
    const struct inf_lin *w = j->w;
    int k = w->k, kb128 = k / 128;
    for (int n = n0; n < n1; n++) {
#ifdef HAVE_X86
        if (w->kind == INF_LIN_FP4 && j->qh && n + 1 < n1) {
            const uint8_t *row = (const uint8_t *)w->w + (size_t)n * (k / 2), *srow = w->scale + (size_t)n * (k / 32);
            for (int s = 0; s < j->S; s++) {
                float two[2];
                row2_fp4_int_avx2(row, row + k / 2, srow, srow + k / 32, j->qh + (size_t)s * k, j->ql + (size_t)s * k,
                                  j->sa + (size_t)s * kb128, k, two);
                put_out(j, s, n, two[0]);
                put_out(j, s, n + 1, two[1]);
            }
            n++;
            continue;
        }
        if (w->kind == INF_LIN_FP4 && j->qh) {
            const uint8_t *row = (const uint8_t *)w->w + (size_t)n * (k / 2), *srow = w->scale + (size_t)n * (k / 32);
            for (int s = 0; s < j->S; s++)
                put_out(j, s, n, row_fp4_int_avx2(row, srow, j->qh + (size_t)s * k, j->ql + (size_t)s * k,
                                                  j->sa + (size_t)s * kb128, k));
            continue;
        }
        if (w->kind == INF_LIN_FP8 && use_avx2 && j->S <= 2 && n + 1 < n1 && (n + 1) / 128 == n / 128) {
            /* two rows of the same 128-row scale tile */
            const uint8_t *row = (const uint8_t *)w->w + (size_t)n * k, *srow = w->scale + (size_t)(n / 128) * kb128;
            for (int s = 0; s < j->S; s++) {
                float two[2];
                (use_avx512 ? row2_fp8_fused_avx512 : row2_fp8_fused_avx2)(row, row + k, srow, j->q + (size_t)s * k,
                                                                           j->sa + (size_t)s * kb128, k, two);
                put_out(j, s, n, two[0]);
                put_out(j, s, n + 1, two[1]);
            }
            n++;
            continue;
        }
        if (w->kind == INF_LIN_FP8 && use_avx2 && j->S <= 2) {
            const uint8_t *row = (const uint8_t *)w->w + (size_t)n * k, *srow = w->scale + (size_t)(n / 128) * kb128;
            for (int s = 0; s < j->S; s++)
                put_out(j, s, n, row_fp8_fused_avx2(row, srow, j->q + (size_t)s * k, j->sa + (size_t)s * kb128, k));
            continue;
        }
        if (w->kind == INF_LIN_FP8_DQ && use_avx2) {
            const uint8_t *row = (const uint8_t *)w->w + (size_t)n * k, *srow = w->scale + (size_t)(n / 128) * kb128;
            for (int s = 0; s < j->S; s++)
                put_out(j, s, n, row_fp8dq_avx2(row, srow, j->x + (size_t)s * k, k));
            continue;
        }
#endif
        if (w->kind == INF_LIN_BF16) {
            const uint16_t *row = (const uint16_t *)w->w + (size_t)n * k;
            for (int s = 0; s < j->S; s++)
                put_out(j, s, n, dot_bf16(row, j->x + (size_t)s * k, k));
            continue;
        }
        if (w->kind == INF_LIN_F32) {
            const float *row = (const float *)w->w + (size_t)n * k;
            for (int s = 0; s < j->S; s++)
                put_out(j, s, n, dot_f(row, j->x + (size_t)s * k, k));
            continue;
        }
        float *wf = scratch_get((size_t)k);
        if (!wf) {
            for (int s = 0; s < j->S; s++)
                put_out(j, s, n, __builtin_nanf("")); /* out of memory shows as NaN, never stale data */
            continue;
        }
        const uint8_t *srow;
        if (w->kind == INF_LIN_FP4) {
            decode_fp4((const uint8_t *)w->w + (size_t)n * (k / 2), k, wf);
            srow = w->scale + (size_t)n * (k / 32);
        } else {
            decode_fp8((const uint8_t *)w->w + (size_t)n * k, k, wf);
            srow = w->scale + (size_t)(n / 128) * kb128;
        }
        if (w->kind == INF_LIN_FP8_DQ) {
            for (int b = 0; b < kb128; b++) {
                float sc = inf_cpu_e8m0(srow[b]);
                for (int i = b * 128; i < b * 128 + 128; i++)
                    wf[i] *= sc;
            }
            for (int s = 0; s < j->S; s++)
                put_out(j, s, n, dot_f(wf, j->x + (size_t)s * k, k));
            continue;
        }
        int blk = w->kind == INF_LIN_FP8 ? 128 : 32;
        for (int s = 0; s < j->S; s++)
            put_out(j, s, n, row_blocks(wf, j->q + (size_t)s * k, j->sa + (size_t)s * kb128, srow, k, blk));
    }
}

static void batch_task(void *ud, size_t t, int tid)
{
    (void)tid;
    struct batch_job *b = ud;
    int lo = 0, hi = b->n - 1;
    while (lo < hi) { /* the call whose task range holds t */
        int mid = (lo + hi + 1) / 2;
        if (b->p[mid].task0 <= t)
            lo = mid;
        else
            hi = mid - 1;
    }
    const struct lin_prep *j = &b->p[lo];
    int rows = rows_per_task(j->w);
    int n0 = (int)(t - j->task0) * rows, n1 = n0 + rows < j->w->n ? n0 + rows : j->w->n;
    lin_rows(j, n0, n1);
}

static int prep_call(struct lin_prep *p, const struct lin_prep *prev, int nprev)
{
    const struct inf_lin *w = p->w;
    int k = w->k, S = p->S;
    if (w->kind != INF_LIN_FP8 && w->kind != INF_LIN_FP4)
        return 0;
    for (int i = 0; i < nprev; i++) /* same input as an earlier product of the batch: share it */
        if (prev[i].x == p->x && prev[i].S == S && prev[i].w->k == k && prev[i].q &&
            (w->kind != INF_LIN_FP4 || !use_avx2 || prev[i].qh)) {
            p->q = prev[i].q;
            p->sa = prev[i].sa;
            p->qh = prev[i].qh;
            p->ql = prev[i].ql;
            return 0;
        }
    p->owns = 1;
    p->q = malloc(sizeof(float) * (size_t)S * k);
    p->sa = malloc(sizeof(float) * (size_t)S * (k / 128));
    if (!p->q || !p->sa)
        return -1;
    for (int s = 0; s < S; s++)
        inf_cpu_act_quant(p->x + (size_t)s * k, k, 128, p->q + (size_t)s * k, p->sa + (size_t)s * (k / 128));
    if (w->kind == INF_LIN_FP4 && use_avx2) {
        p->qh = malloc(sizeof(int16_t) * (size_t)S * k);
        p->ql = malloc(sizeof(int16_t) * (size_t)S * k);
        if (!p->qh || !p->ql)
            return -1;
        for (size_t i = 0; i < (size_t)S * k; i++) {
            int qi = (int)(p->q[i] * 512.0f); /* exact: e4m3 values are multiples of 2^-9 */
            p->qh[i] = (int16_t)(qi >> 9);    /* floor division; qi == qh * 512 + ql */
            p->ql[i] = (int16_t)(qi & 511);
        }
    }
    return 0;
}

static void linear_batch_impl(struct ctx_pool *pool, const struct inf_lin_call *calls, int n)
{
    table_init();
    struct lin_prep stackp[32], *p = n <= 32 ? stackp : calloc((size_t)n, sizeof *p);
    if (!p)
        goto oom_all;
    memset(p, 0, sizeof *p * (size_t)n);
    size_t tasks = 0;
    int fail = 0;
    for (int i = 0; i < n; i++) {
        p[i] = (struct lin_prep){.w = calls[i].w, .x = calls[i].x, .S = calls[i].S, .y = calls[i].y,
                                 .out = calls[i].out, .task0 = tasks};
        size_t rows = (size_t)rows_per_task(calls[i].w);
        p[i].tasks = calls[i].S > 0 ? ((size_t)calls[i].w->n + rows - 1) / rows : 0;
        tasks += p[i].tasks;
        if (prep_call(&p[i], p, i))
            fail = 1;
    }
    if (!fail) {
        struct batch_job b = {p, n};
        ctx_pool_for(pool, tasks, 1, batch_task, &b);
    }
    for (int i = 0; i < n; i++) {
        if (fail) /* out of memory: NaN rows make the failure visible downstream */
            for (size_t r = 0; r < (size_t)p[i].S * p[i].w->n; r++)
                p[i].y[r] = __builtin_nanf("");
        if (p[i].owns) {
            free(p[i].q);
            free(p[i].sa);
            free(p[i].qh);
            free(p[i].ql);
        }
    }
    if (p != stackp)
        free(p);
    return;
oom_all:
    for (int i = 0; i < n; i++)
        for (size_t r = 0; r < (size_t)calls[i].S * calls[i].w->n; r++)
            calls[i].y[r] = __builtin_nanf("");
}

static struct inf_cpu_prof prof;
static int prof_on = -1;

static double prof_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

void inf_cpu_prof_get(struct inf_cpu_prof *out, int reset)
{
    *out = prof;
    if (reset)
        memset(&prof, 0, sizeof prof);
}

void inf_cpu_linear_batch(struct ctx_pool *pool, const struct inf_lin_call *calls, int n)
{
    if (prof_on < 0)
        prof_on = getenv("CTX_ENGINE_PROFILE") != NULL;
    if (!prof_on) {
        linear_batch_impl(pool, calls, n);
        return;
    }
    double t0 = prof_now();
    linear_batch_impl(pool, calls, n);
    double dt = prof_now() - t0, tb = 0;
    for (int i = 0; i < n; i++)
        tb += (double)calls[i].w->n * calls[i].w->k;
    for (int i = 0; i < n; i++) { /* attribute the batch's time by weight elements */
        const struct inf_lin *w = calls[i].w;
        double el = (double)w->n * w->k;
        prof.seconds[w->kind] += dt * el / (tb > 0 ? tb : 1);
        prof.calls[w->kind]++;
        prof.bytes[w->kind] += el * (w->kind == INF_LIN_FP4 ? 0.5 : w->kind == INF_LIN_BF16 ? 2
                                     : w->kind == INF_LIN_F32 ? 4 : 1);
    }
}

void inf_cpu_linear(struct ctx_pool *pool, const struct inf_lin *w, const float *x, int S, float *y,
                    enum inf_lin_out out)
{
    struct inf_lin_call c = {w, x, S, y, out};
    inf_cpu_linear_batch(pool, &c, 1);
}

/* ---- norms, RoPE, Hadamard ---- */

void inf_cpu_rmsnorm(const float *x, const uint16_t *w, int n, float eps, float *out)
{
    float ss = 0.f;
    for (int i = 0; i < n; i++)
        ss += x[i] * x[i];
    float r = 1.0f / sqrtf(ss / (float)n + eps);
    for (int i = 0; i < n; i++) {
        float v = x[i] * r;
        out[i] = inf_cpu_bf16(w ? inf_cpu_bf16_load(w[i]) * v : v);
    }
}

void inf_cpu_rope_init(struct inf_rope *r, int rd, double base, int yarn, double factor, long long orig_len,
                       double beta_fast, double beta_slow)
{
    r->rd = rd;
    float fb = (float)base;
    for (int i = 0; i < rd / 2; i++)
        r->inv_freq[i] = 1.0f / powf(fb, (float)(2 * i) / (float)rd);
    if (!yarn)
        return;
    /* YaRN frequency interpolation only (no magnitude scale), as the reference's precompute_freqs_cis. */
    double lo = floor(rd * log((double)orig_len / (beta_fast * 2 * M_PI)) / (2 * log(base)));
    double hi = ceil(rd * log((double)orig_len / (beta_slow * 2 * M_PI)) / (2 * log(base)));
    if (lo < 0) lo = 0;
    if (hi > rd - 1) hi = rd - 1;
    if (lo == hi) hi += 0.001;
    float ff = (float)factor;
    for (int i = 0; i < rd / 2; i++) {
        float ramp = ((float)i - (float)lo) / ((float)hi - (float)lo);
        ramp = ramp < 0.f ? 0.f : ramp > 1.f ? 1.f : ramp;
        float smooth = 1.0f - ramp;
        float f = r->inv_freq[i];
        r->inv_freq[i] = f / ff * (1.0f - smooth) + f * smooth;
    }
}

void inf_cpu_rope_table(const struct inf_rope *r, long long pos, float *cs)
{
    float p = (float)pos;
    for (int i = 0; i < r->rd / 2; i++) {
        float ang = p * r->inv_freq[i];
        cs[2 * i] = cosf(ang);
        cs[2 * i + 1] = sinf(ang);
    }
}

void inf_cpu_rope_apply(const float *cs, int rd, float *x, int inverse)
{
    for (int i = 0; i < rd / 2; i++) {
        float c = cs[2 * i], s = inverse ? -cs[2 * i + 1] : cs[2 * i + 1];
        float a = x[2 * i], b = x[2 * i + 1];
        x[2 * i] = inf_cpu_bf16(a * c - b * s);
        x[2 * i + 1] = inf_cpu_bf16(a * s + b * c);
    }
}

void inf_cpu_rope(const struct inf_rope *r, float *x, long long pos, int inverse)
{
    float cs[128];
    inf_cpu_rope_table(r, pos, cs);
    inf_cpu_rope_apply(cs, r->rd, x, inverse);
}

void inf_cpu_hadamard(float *x, int n)
{
    for (int h = 1; h < n; h *= 2)
        for (int i = 0; i < n; i += 2 * h)
            for (int j = i; j < i + h; j++) {
                float a = x[j], b = x[j + h];
                x[j] = a + b;
                x[j + h] = a - b;
            }
    float sc = (float)(1.0 / sqrt((double)n));
    for (int i = 0; i < n; i++)
        x[i] = inf_cpu_bf16(x[i] * sc);
}

/* ---- mHC ---- */

static float sigmoidf_(float x) { return 1.0f / (1.0f + expf(-x)); }

void inf_cpu_hc_split_sinkhorn(const float *m, const float *scale, const float *base, int hc, int iters,
                               float eps, float *pre, float *post, float *comb)
{
    for (int j = 0; j < hc; j++) {
        pre[j] = sigmoidf_(m[j] * scale[0] + base[j]) + eps;
        post[j] = 2.0f * sigmoidf_(m[hc + j] * scale[1] + base[hc + j]);
    }
    for (int j = 0; j < hc; j++) {
        float *row = comb + j * hc, mx = -INFINITY, sum = 0.f;
        for (int k = 0; k < hc; k++) {
            row[k] = m[2 * hc + j * hc + k] * scale[2] + base[2 * hc + j * hc + k];
            mx = fmaxf(mx, row[k]);
        }
        for (int k = 0; k < hc; k++) {
            row[k] = expf(row[k] - mx);
            sum += row[k];
        }
        for (int k = 0; k < hc; k++)
            row[k] = row[k] / sum + eps;
    }
    for (int it = 0; it < iters; it++) {
        if (it > 0)
            for (int j = 0; j < hc; j++) {
                float s = 0.f;
                for (int k = 0; k < hc; k++)
                    s += comb[j * hc + k];
                s += eps;
                for (int k = 0; k < hc; k++)
                    comb[j * hc + k] /= s;
            }
        for (int k = 0; k < hc; k++) {
            float s = 0.f;
            for (int j = 0; j < hc; j++)
                s += comb[j * hc + k];
            s += eps;
            for (int j = 0; j < hc; j++)
                comb[j * hc + k] /= s;
        }
    }
}

/* ---- attention ---- */

void inf_cpu_sparse_attn(const float *q, int H, int d, const float *const *kv, int n, const float *sink,
                         float scale, float *out)
{
    float sc[64], p[64], num[1024];
    for (int h = 0; h < H; h++) {
        const float *qh = q + (size_t)h * d;
        float mx = -INFINITY, den = 0.f;
        for (int i = 0; i < d; i++)
            num[i] = 0.f;
        for (int b0 = 0; b0 < n; b0 += 64) {
            int bn = n - b0 < 64 ? n - b0 : 64, any = 0;
            float bmax = -INFINITY;
            for (int j = 0; j < bn; j++) {
                if (!kv[b0 + j]) {
                    sc[j] = -INFINITY;
                    continue;
                }
                sc[j] = dot_f(qh, kv[b0 + j], d) * scale;
                bmax = fmaxf(bmax, sc[j]);
                any = 1;
            }
            if (!any) /* an all-empty block changes nothing (correction 1, probabilities 0) */
                continue;
            float nmax = fmaxf(mx, bmax);
            float corr = expf(mx - nmax), psum = 0.f;
            for (int j = 0; j < bn; j++) {
                p[j] = kv[b0 + j] ? expf(sc[j] - nmax) : 0.f;
                psum += p[j];
            }
            den = den * corr + psum;
            for (int i = 0; i < d; i++)
                num[i] *= corr;
            for (int j = 0; j < bn; j++) {
                if (!kv[b0 + j])
                    continue;
                axpy(num, inf_cpu_bf16(p[j]), kv[b0 + j], d);
            }
            mx = nmax;
        }
        den += expf(sink[h] - mx);
        float *o = out + (size_t)h * d;
        for (int i = 0; i < d; i++)
            o[i] = inf_cpu_bf16(num[i] / den);
    }
}

/* ---- top-k ---- */

struct topk_item {
    float s;
    int i;
};
static int topk_cmp(const void *a, const void *b)
{
    const struct topk_item *x = a, *y = b;
    if (x->s != y->s)
        return x->s > y->s ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

void inf_cpu_topk(const float *score, int n, int k, int *out)
{
    struct topk_item *it = malloc(sizeof(*it) * (size_t)(n > 0 ? n : 1));
    for (int i = 0; i < n; i++) {
        it[i].s = score[i];
        it[i].i = i;
    }
    qsort(it, (size_t)n, sizeof(*it), topk_cmp);
    for (int i = 0; i < k && i < n; i++)
        out[i] = it[i].i;
    free(it);
}

/* ---- the CPU backend ---- */

static void cpu_linear(struct inf_backend *b, const struct inf_lin *w, const float *x, int S, float *y,
                       enum inf_lin_out out)
{
    inf_cpu_linear(b->ctx, w, x, S, y, out);
}
static void cpu_linear_batch(struct inf_backend *b, const struct inf_lin_call *calls, int n)
{
    inf_cpu_linear_batch(b->ctx, calls, n);
}
static void cpu_parallel_for(struct inf_backend *b, size_t n, void (*fn)(void *ud, size_t i, int tid), void *ud)
{
    ctx_pool_for(b->ctx, n, 1, fn, ud);
}
static void cpu_sparse_attn(struct inf_backend *b, const float *q, int H, int d, const float *const *kv, int n,
                            const float *sink, float scale, float *out)
{
    (void)b;
    inf_cpu_sparse_attn(q, H, d, kv, n, sink, scale, out);
}
static void cpu_destroy(struct inf_backend *b)
{
    ctx_pool_free(b->ctx);
    free(b);
}

struct inf_backend *inf_cpu_backend_new(int nthreads)
{
    struct ctx_err e;
    struct inf_backend *b = calloc(1, sizeof(*b));
    if (!b)
        return NULL;
    b->ctx = ctx_pool_new(nthreads, &e);
    if (!b->ctx) {
        free(b);
        return NULL;
    }
    table_init();
    b->name = "cpu";
    b->nthreads = ctx_pool_size(b->ctx);
    b->linear = cpu_linear;
    b->linear_batch = cpu_linear_batch;
    b->parallel_for = cpu_parallel_for;
    b->sparse_attn = cpu_sparse_attn;
    b->destroy = cpu_destroy;
    return b;
}
