/* Unit checks of the CPU kernels (inference/cpu/kernels.h) against their definitions: e4m3 and e2m1
 * rounding, power-of-two scales, exact FP8/FP4 block products (SIMD and portable paths agree bit for
 * bit with a long-double evaluation of the reference formula), FP4 nibble order, RMSNorm, RoPE
 * inverse, Hadamard, Sinkhorn, sparse attention with a sink, top-k ties. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cpu/kernels.h"
#include "pool.h"
#include "quant.h"

static uint64_t rng = 0x243f6a8885a308d3ull;
static uint32_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}
static float frand(void) { return (float)rnd() / 2147483648.0f - 1.0f; }

static void test_e4m3_round(void **st)
{
    (void)st;
    /* every finite code is a fixed point; the midpoint of two neighbours goes to the even code */
    for (int b = 0; b < 0x7e; b++) {
        float v = inf_e4m3_to_f32((uint8_t)b), w = inf_e4m3_to_f32((uint8_t)(b + 1));
        assert_true(inf_cpu_e4m3_round(v) == v);
        assert_true(inf_cpu_e4m3_round(-v) == -v);
        float mid = 0.5f * (v + w);
        assert_true(inf_cpu_e4m3_round(mid) == ((b & 1) ? w : v));
        assert_true(inf_cpu_e4m3_round(nextafterf(mid, 0)) == v);
        assert_true(inf_cpu_e4m3_round(nextafterf(mid, 1000)) == w);
    }
    assert_true(inf_cpu_e4m3_round(448.f) == 448.f);
    assert_true(inf_cpu_e4m3(0x7e) == 448.f && inf_cpu_e4m3(0x01) == 0x1p-9f);
}

static void test_scales(void **st)
{
    (void)st;
    float x[128], q[128], sc;
    for (int i = 0; i < 128; i++)
        x[i] = 0.f;
    x[5] = 448.f;
    inf_cpu_act_quant(x, 128, 128, q, &sc);
    assert_true(sc == 1.0f && q[5] == 448.f);
    x[5] = 449.f;
    inf_cpu_act_quant(x, 128, 128, q, &sc);
    assert_true(sc == 2.0f && q[5] == 224.f);
    x[5] = 0.f; /* amax floored at 1e-4 */
    inf_cpu_act_quant(x, 128, 128, q, &sc);
    assert_true(sc == ldexpf(1.f, (int)ceil(log2(1e-4 / 448.0))));
    assert_true(inf_cpu_pow2_scale(6.f, 1.0f / 6.0f) == 1.0f);
    /* FP4 QDQ: scale 1 for amax 6; ties go to the even code */
    float y[32] = {6.f, 0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.f, -0.75f, 5.5f, 0.3f};
    static const float want[11] = {6.f, 0.f, 1.f, 1.f, 2.f, 2.f, 4.f, 4.f, -1.f, 6.f, 0.5f};
    inf_cpu_fp4_qdq(y, 32, 32);
    for (int i = 0; i < 11; i++)
        assert_true(y[i] == want[i]);
    /* FP8 QDQ in blocks of 64 is idempotent and bf16-exact */
    float z[128];
    for (int i = 0; i < 128; i++)
        z[i] = frand() * (i < 64 ? 3.f : 0.01f);
    inf_cpu_fp8_qdq(z, 128, 64);
    float z2[128];
    memcpy(z2, z, sizeof z);
    inf_cpu_fp8_qdq(z2, 128, 64);
    assert_memory_equal(z, z2, sizeof z);
    for (int i = 0; i < 128; i++)
        assert_true(inf_cpu_bf16(z[i]) == z[i]);
}

/* Reference: per block, the exact partial (long double) rounded to float, scaled, summed in fp32. */
static float ref_product(const float *x, int k, const float *wv, const float *wscale, int blk)
{
    float q[4096], sa[32], acc = 0.f;
    inf_cpu_act_quant(x, k, 128, q, sa);
    for (int b = 0; b < k / blk; b++) {
        long double p = 0;
        for (int i = 0; i < blk; i++)
            p += (long double)wv[b * blk + i] * q[b * blk + i];
        acc += ((float)p * sa[b * blk / 128]) * wscale[b];
    }
    return inf_cpu_bf16(acc);
}

static void test_products(void **st)
{
    (void)st;
    struct ctx_err e;
    struct ctx_pool *pool = ctx_pool_new(2, &e);
    enum { N = 130, K = 512, S = 3 };
    uint8_t *w8 = malloc(N * K), *w4 = malloc(N * K / 2), s8[2 * (K / 128)], *s4 = malloc(N * (K / 32));
    float *x = malloc(sizeof(float) * S * K), y[3][S * N];
    for (int i = 0; i < N * K; i++) {
        w8[i] = (uint8_t)(rnd() & 0xff);
        if ((w8[i] & 0x7f) == 0x7f) /* no NaN codes */
            w8[i] ^= 1;
    }
    for (int i = 0; i < N * K / 2; i++)
        w4[i] = (uint8_t)(rnd() & 0xff);
    for (int i = 0; i < 2 * (K / 128); i++)
        s8[i] = (uint8_t)(127 - 7 - (int)(rnd() % 8));
    for (int i = 0; i < N * (K / 32); i++)
        s4[i] = (uint8_t)(127 - 2 - (int)(rnd() % 8));
    for (int i = 0; i < S * K; i++)
        x[i] = inf_cpu_bf16(frand() * (i % 128 == 7 ? 40.f : 1.f));
    struct inf_lin l8 = {INF_LIN_FP8, N, K, w8, s8}, l4 = {INF_LIN_FP4, N, K, w4, s4};
    for (int pass = 0; pass < 2; pass++) {
        const struct inf_lin *l = pass ? &l4 : &l8;
        for (int simd = 0; simd < 3; simd++) {
            int got = inf_cpu_set_simd(simd);
            inf_cpu_linear(pool, l, x, S, y[simd], INF_OUT_BF16);
            if (pass == 0)
                print_message("# products at SIMD level %d (asked %d)\n", got, simd);
        }
        inf_cpu_set_simd(2);
        assert_memory_equal(y[0], y[1], sizeof y[0]);
        assert_memory_equal(y[0], y[2], sizeof y[0]);
        for (int lvl = 1; lvl <= 2; lvl++) { /* one token at a time takes the fused paths: same bits */
            inf_cpu_set_simd(lvl);
            for (int s = 0; s < S; s++) {
                float y1[N];
                inf_cpu_linear(pool, l, x + s * K, 1, y1, INF_OUT_BF16);
                assert_memory_equal(y1, y[0] + s * N, sizeof y1);
            }
        }
        inf_cpu_set_simd(2);
        for (int n = 0; n < N; n++) {
            float wv[K], ws[K / 32];
            int blk = pass ? 32 : 128;
            for (int i = 0; i < K; i++)
                wv[i] = pass ? inf_e2m1_to_f32((uint8_t)(i & 1 ? w4[n * K / 2 + i / 2] >> 4 : w4[n * K / 2 + i / 2] & 15))
                             : inf_e4m3_to_f32(w8[n * K + i]);
            for (int b = 0; b < K / blk; b++)
                ws[b] = inf_e8m0_to_f32(pass ? s4[n * (K / 32) + b] : s8[(n / 128) * (K / 128) + b]);
            for (int s = 0; s < S; s++)
                assert_true(y[0][s * N + n] == ref_product(x + s * K, K, wv, ws, blk));
        }
    }
    /* nibble order: byte 0x21 holds element 0 = code 1 (0.5) and element 1 = code 2 (1.0) */
    uint8_t one[16] = {0x21}, sc1[1] = {127};
    float xin[32] = {0}, out;
    xin[0] = 1.f;
    struct inf_lin l1 = {INF_LIN_FP4, 1, 32, one, sc1};
    float xx[128] = {0};
    memcpy(xx, xin, sizeof xin);
    uint8_t row[64] = {0x21}, scs[4] = {127, 127, 127, 127};
    l1 = (struct inf_lin){INF_LIN_FP4, 1, 128, row, scs};
    inf_cpu_linear(pool, &l1, xx, 1, &out, INF_OUT_F32);
    assert_true(out == 0.5f);
    xx[0] = 0.f;
    xx[1] = 1.f;
    inf_cpu_linear(pool, &l1, xx, 1, &out, INF_OUT_F32);
    assert_true(out == 1.0f);
    ctx_pool_free(pool);
    free(w8);
    free(w4);
    free(s4);
    free(x);
}

static void test_norm_rope_hadamard(void **st)
{
    (void)st;
    float x[64], y[64];
    for (int i = 0; i < 64; i++)
        x[i] = inf_cpu_bf16(frand());
    inf_cpu_rmsnorm(x, NULL, 64, 1e-6f, y);
    double ss = 0;
    for (int i = 0; i < 64; i++)
        ss += (double)y[i] * y[i];
    assert_true(fabs(ss / 64 - 1.0) < 0.01);
    struct inf_rope r;
    inf_cpu_rope_init(&r, 64, 160000, 1, 16, 65536, 32, 1);
    /* YaRN: the fast frequencies (i <= 15) stay, the slow ones (i >= 25) are divided by the factor */
    assert_true(r.inv_freq[0] == 1.0f && r.inv_freq[15] == 1.0f / powf(160000.f, 30.f / 64.f));
    assert_true(r.inv_freq[31] == 1.0f / powf(160000.f, 62.f / 64.f) / 16.0f);
    memcpy(y, x, sizeof x);
    inf_cpu_rope(&r, y, 1234, 0);
    inf_cpu_rope(&r, y, 1234, 1);
    for (int i = 0; i < 64; i++)
        assert_true(fabsf(y[i] - x[i]) <= 0.02f * fabsf(x[i]) + 1e-3f);
    float h[128] = {1.f};
    inf_cpu_hadamard(h, 128);
    for (int i = 0; i < 128; i++)
        assert_true(h[i] == inf_cpu_bf16((float)(1.0 / sqrt(128.0))));
    float h2[128] = {0};
    h2[1] = 1.f;
    inf_cpu_hadamard(h2, 128); /* Sylvester order: row 1 alternates signs */
    assert_true(h2[0] > 0 && h2[1] < 0 && h2[2] > 0 && h2[3] < 0);
}

static void test_sinkhorn(void **st)
{
    (void)st;
    float mixes[24], scale[3] = {0.5f, 0.7f, 1.3f}, base[24], pre[4], post[4], comb[16];
    for (int i = 0; i < 24; i++) {
        mixes[i] = frand() * 3;
        base[i] = frand();
    }
    inf_cpu_hc_split_sinkhorn(mixes, scale, base, 4, 20, 1e-6f, pre, post, comb);
    for (int k = 0; k < 4; k++) {
        float cs = 0, rs = 0;
        for (int j = 0; j < 4; j++) {
            cs += comb[j * 4 + k];
            rs += comb[k * 4 + j];
        }
        assert_true(fabsf(cs - 1.f) < 1e-4f);
        assert_true(fabsf(rs - 1.f) < 1e-2f);
        assert_true(pre[k] > 0 && pre[k] < 1.0001f && post[k] > 0 && post[k] < 2.f);
    }
}

static void test_attention_topk(void **st)
{
    (void)st;
    /* two equal entries and a sink: out = v * 2e^s / (2e^s + e^sink) */
    float q[64] = {0}, k0[64] = {0}, sink = 0.5f, out[64];
    q[0] = 1.f;
    k0[0] = 2.f;
    k0[1] = 1.f;
    const float *kv[3] = {k0, NULL, k0};
    inf_cpu_sparse_attn(q, 1, 64, kv, 3, &sink, 1.0f, out);
    double p = exp(2.0), want = 2.0 * inf_cpu_bf16((float)(p / p)) / (2.0 + exp(0.5 - 2.0));
    assert_true(fabs(out[1] - want) < 4e-3);
    float sc[6] = {1.f, 3.f, 3.f, 2.f, 3.f, 0.f};
    int idx[4];
    inf_cpu_topk(sc, 6, 4, idx);
    assert_true(idx[0] == 1 && idx[1] == 2 && idx[2] == 4 && idx[3] == 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_e4m3_round),      cmocka_unit_test(test_scales),
        cmocka_unit_test(test_products),        cmocka_unit_test(test_norm_rope_hadamard),
        cmocka_unit_test(test_sinkhorn),        cmocka_unit_test(test_attention_topk),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
