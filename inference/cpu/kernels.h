/* CPU kernels of the DeepSeek V4 forward pass (spec §4-§5), with the reference's numerics.
 *
 * Activations are float arrays whose values are bf16-representable wherever the reference stores
 * bf16 (inf_cpu_bf16 rounds); fp32 intermediates stay plain float. Weights are read in their stored
 * formats (FP8 e4m3 + 128x128 e8m0 tiles, FP4 e2m1 + 1x32 e8m0, bf16, f32) and decoded on the fly.
 *
 * Quantised products follow the reference exactly: the input is quantised per token in 1x128 K
 * blocks to e4m3 with power-of-two scales; each K block's partial sum (128 wide for FP8 weights, 32
 * for FP4) is computed exactly (in double: every product of two e4m3/e2m1 values and every partial
 * sum of a block is a multiple of 2^-18 below 2^53 units, so any order gives the same exact value),
 * rounded once to fp32, scaled by activation_scale * weight_scale and added in K order in fp32. */
#ifndef INF_CPU_KERNELS_H
#define INF_CPU_KERNELS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "backend.h"

struct ctx_pool;

/* Round to the nearest bf16 value (ties to even), as float. NaN stays NaN. */
static inline float inf_cpu_bf16(float f)
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
static inline float inf_cpu_bf16_load(uint16_t b)
{
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
void inf_cpu_bf16_round_n(float *x, size_t n);

/* y[s][n] = W x[s] for s < S; x is [S][k], y is [S][n]. FP8/FP4 quantise x per token (e4m3, 1x128,
 * power-of-two scales) as the reference does; BF16/F32 weights compute in fp32. */
void inf_cpu_linear(struct ctx_pool *pool, const struct inf_lin *w, const float *x, int S, float *y,
                    enum inf_lin_out out);

void inf_cpu_linear_batch(struct ctx_pool *pool, const struct inf_lin_call *calls, int n);

/* fp32 dot product (SIMD where available; the same function for every caller and batch size). */
float inf_cpu_dot(const float *a, const float *b, int n);

/* Per-token dynamic e4m3 quantisation of one row of k values in blocks of `block`: q receives the
 * e4m3 values (as float), sc the power-of-two scale of each block. */
void inf_cpu_act_quant(const float *x, int k, int block, float *q, float *sc);
/* Quantise-dequantise in place to e4m3 in blocks of `block` (the KV QAT simulation), bf16 result. */
void inf_cpu_fp8_qdq(float *x, int n, int block);
/* Quantise-dequantise in place to e2m1 in blocks of 32 (indexer QAT simulation), bf16 result. */
void inf_cpu_fp4_qdq(float *x, int n, int block);
/* Nearest e4m3 value (ties to even), x already within +-448. */
float inf_cpu_e4m3_round(float x);
/* Power of two 2^ceil(log2(amax * inv)) from the fp32 exponent bits, as the reference's ue8m0. */
float inf_cpu_pow2_scale(float amax, float inv);

/* RMSNorm: out = bf16(w * (x * rsqrt(mean(x^2) + eps))), computed in fp32; w bf16 (may be NULL:
 * no weight). out may alias x. */
void inf_cpu_rmsnorm(const float *x, const uint16_t *w, int n, float eps, float *out);

/* RoPE tables: inv_freq[i] for i < rd/2 (fp32 as the reference computes them, YaRN if yarn). */
struct inf_rope {
    int rd;
    float inv_freq[64];
};
void inf_cpu_rope_init(struct inf_rope *r, int rd, double base, int yarn, double factor, long long orig_len,
                       double beta_fast, double beta_slow);
/* Rotate the interleaved pairs of x[0..rd) (the tail of a head) by position pos (inverse: by -pos),
 * in fp32, result rounded to bf16. */
void inf_cpu_rope(const struct inf_rope *r, float *x, long long pos, int inverse);
/* The same in two steps, to rotate many heads at one position: cs[rd] = (cos, sin) pairs. */
void inf_cpu_rope_table(const struct inf_rope *r, long long pos, float *cs);
void inf_cpu_rope_apply(const float *cs, int rd, float *x, int inverse);

/* 128-point (any power of two) normalised Walsh-Hadamard transform in place, Sylvester order, bf16 out. */
void inf_cpu_hadamard(float *x, int n);

/* mHC split + Sinkhorn (spec §4.2): mixes [2N+N^2] -> pre[N], post[N], comb[N][N]. */
void inf_cpu_hc_split_sinkhorn(const float *mixes, const float *scale, const float *base, int hc, int iters,
                               float eps, float *pre, float *post, float *comb);

/* One query's sparse attention (spec §4.4): H heads of d dims, entries kv[j] (NULL = empty slot)
 * for j < n in the given order, blocks of 64 with online softmax in fp32, probabilities rounded to
 * bf16 before P.V, per-head sink in the denominator only. out [H][d] bf16. */
void inf_cpu_sparse_attn(const float *q, int H, int d, const float *const *kv, int n, const float *sink,
                         float scale, float *out);

/* Indices of the k largest of score[0..n) in descending order, ties to the lowest index. */
void inf_cpu_topk(const float *score, int n, int k, int *out);

/* SIMD level: 0 portable, 1 AVX2 (+FMA, F16C), 2 AVX-512 for the FP8 one-token product (its
 * float->double widening); the default is the best the CPU has (CTX_NO_AVX2 / CTX_NO_AVX512 in the
 * environment lower it). Every level gives the same bits for the quantised products. Returns the
 * level now in use. For tests and benchmarks. (An AVX-512 VNNI variant of the FP4 product measured
 * slower than AVX2 on a Sapphire Rapids class CPU, so there is none.) */
int inf_cpu_set_simd(int level);

/* Time spent in inf_cpu_linear by weight kind (enum inf_lin_kind), collected only when the
 * environment has CTX_ENGINE_PROFILE set (for bench/engine). Not thread-safe: one model at a time. */
struct inf_cpu_prof {
    double seconds[5], bytes[5];
    long long calls[5];
};
void inf_cpu_prof_get(struct inf_cpu_prof *out, int reset);

/* Decoders. */
float inf_cpu_e4m3(uint8_t b);
static inline float inf_cpu_e8m0(uint8_t b)
{
    uint32_t u = b == 0 ? 0x00400000u : (uint32_t)b << 23; /* 2^-127 is subnormal */
    float f;
    if (b == 0xff) return __builtin_nanf("");
    memcpy(&f, &u, 4);
    return f;
}

#endif
