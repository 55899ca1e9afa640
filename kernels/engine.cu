// The V4 forward pass on one CUDA device; see cuda_engine.h. Follows inference/model.c operation by
// operation (the same rounding points, the same entry orders); the products of FP8/FP4 weights are
// kernels/gemm.h's. Built with -fmad=false (kernels/meson.build) so that a*b+c rounds twice, as the
// CPU's scalar code does; where the CPU fuses (the attention's P.V axpy) this file calls fmaf.
//
// Kernels here are the simple, correct first step (one block per row or per (token, head), one
// warp per output of the bf16 products); the decode step is a few hundred launches, not yet a
// CUDA graph.
#include <cuda_runtime.h>

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_engine.h"
#include "gemm.h"

extern "C" {
#include "cpu/kernels.h" // inf_cpu_rope_init / inf_cpu_rope_table: the host computes the RoPE tables
}

namespace {

// ---------------------------------------------------------------- device helpers

__device__ __forceinline__ float bf16r(float f)
{
    uint32_t u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return f;
    u += 0x7fffu + ((u >> 16) & 1u);
    return __uint_as_float(u & 0xffff0000u);
}
__device__ __forceinline__ float bf16ld(uint16_t b) { return __uint_as_float((uint32_t)b << 16); }
__device__ __forceinline__ uint16_t bf16bits(float f) { return (uint16_t)(__float_as_uint(bf16r(f)) >> 16); }

__device__ __forceinline__ float e4m3_dec(uint8_t b)
{
    int s = (b >> 7) & 1, ex = (b >> 3) & 15, m = b & 7;
    if (ex == 15 && m == 7)
        return __int_as_float(0x7fc00000);
    float v = ex == 0 ? ldexpf((float)m, -9) : ldexpf((float)(8 + m), ex - 10);
    return s ? -v : v;
}
__device__ __forceinline__ float e8m0_dec(uint8_t b)
{
    if (b == 0xff)
        return __int_as_float(0x7fc00000);
    return __uint_as_float(b == 0 ? 0x00400000u : (uint32_t)b << 23);
}

__device__ __forceinline__ float e4m3_round(float x)
{
    if (fabsf(x) < 0.015625f)
        return rintf(x * 512.f) / 512.f;
    uint32_t u = __float_as_uint(x);
    u += 0x7ffffu + ((u >> 20) & 1u);
    return __uint_as_float(u & 0xfff00000u);
}
__device__ __forceinline__ float pow2_scale(float amax, float inv)
{
    float r = amax * inv;
    uint32_t u = __float_as_uint(r);
    int code = (int)((u >> 23) & 255u) + ((u & 0x7fffffu) != 0);
    return ldexpf(1.0f, code - 127);
}
__device__ __forceinline__ float e2m1_round(float v)
{
    const float mid[7] = {.25f, .75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.f};
    const float val[8] = {0.f, .5f, 1.f, 1.5f, 2.f, 3.f, 4.f, 6.f};
    float a = fabsf(v);
    int i = 0;
    while (i < 7 && a > mid[i])
        i++;
    if (i < 7 && a == mid[i] && (i & 1))
        i++;
    float r = val[i];
    return signbit(v) ? -r : r;
}

__device__ __forceinline__ float warp_sum(float v)
{
    for (int o = 16; o; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v)
{
    for (int o = 16; o; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
// Sum over the block (blockDim a multiple of 32); every thread gets the result. sh: 32 floats.
__device__ float block_sum(float v, float *sh)
{
    v = warp_sum(v);
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    __syncthreads();
    if (lane == 0)
        sh[w] = v;
    __syncthreads();
    if (threadIdx.x < 32) {
        float t = lane < nw ? sh[lane] : 0.f;
        t = warp_sum(t);
        if (lane == 0)
            sh[0] = t;
    }
    __syncthreads();
    return sh[0];
}

// One warp quantises-dequantises x[0..64) to e4m3 with a power-of-two scale (the KV QAT), bf16 out.
__device__ void warp_fp8_qdq64(float *x)
{
    int lane = threadIdx.x & 31;
    float v0 = x[lane], v1 = x[lane + 32];
    float amax = warp_max(fmaxf(fabsf(v0), fabsf(v1)));
    if (amax < 1e-4f)
        amax = 1e-4f;
    float s = pow2_scale(amax, 1.0f / 448.0f);
    float q0 = fminf(fmaxf(v0 / s, -448.f), 448.f), q1 = fminf(fmaxf(v1 / s, -448.f), 448.f);
    x[lane] = bf16r(e4m3_round(q0) * s);
    x[lane + 32] = bf16r(e4m3_round(q1) * s);
}
// The same to e2m1 over 32 values (the indexer QAT).
__device__ void warp_fp4_qdq32(float *x)
{
    int lane = threadIdx.x & 31;
    float v = x[lane];
    float amax = warp_max(fabsf(v));
    const float floor_ = 6.0f * 0x1p-126f;
    if (amax < floor_)
        amax = floor_;
    float s = pow2_scale(amax, 1.0f / 6.0f);
    float q = fminf(fmaxf(v / s, -6.f), 6.f);
    x[lane] = bf16r(e2m1_round(q) * s);
}

// Interleaved RoPE on x[0..rd) by the table row cs (cos, sin pairs); inverse rotates back.
__device__ void rope_pairs(float *x, const float *cs, int rd, int inverse)
{
    for (int i = threadIdx.x; i < rd / 2; i += blockDim.x) {
        float c = cs[2 * i], s = inverse ? -cs[2 * i + 1] : cs[2 * i + 1];
        float a = x[2 * i], b = x[2 * i + 1];
        x[2 * i] = bf16r(a * c - b * s);
        x[2 * i + 1] = bf16r(a * s + b * c);
    }
}

// Normalised Walsh-Hadamard transform of x[0..n) (n a power of two) in shared memory, bf16 out.
__device__ void block_hadamard(float *x, int n, float sc)
{
    for (int h = 1; h < n; h *= 2) {
        for (int t = threadIdx.x; t < n / 2; t += blockDim.x) {
            int i = (t / h) * 2 * h + (t % h);
            float a = x[i], b = x[i + h];
            x[i] = a + b;
            x[i + h] = a - b;
        }
        __syncthreads();
    }
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        x[i] = bf16r(x[i] * sc);
    __syncthreads();
}

// ---------------------------------------------------------------- elementwise and norms

__global__ void k_f2bf(const float *x, size_t n, uint16_t *y)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] = bf16bits(x[i]);
}
__global__ void k_bf2f(const uint16_t *x, size_t n, float *y)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] = bf16ld(x[i]);
}
__global__ void k_fill(float *x, size_t n, float v)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] = v;
}
__global__ void k_scale_bf16(float *x, size_t n, float sc)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] = bf16r(x[i] * sc);
}

__global__ void k_embed(const int *tok, const uint16_t *embed, int hc, int D, float *X)
{
    int s = blockIdx.x;
    const uint16_t *row = embed + (size_t)tok[s] * D;
    for (int k = 0; k < hc; k++)
        for (int i = threadIdx.x; i < D; i += blockDim.x)
            X[((size_t)s * hc + k) * D + i] = bf16ld(row[i]);
}

// out = bf16(w * (x * rsqrt(mean(x^2) + eps))) per row of n; w may be NULL.
__global__ void k_rmsnorm(const float *x, const uint16_t *w, int n, float eps, float *out)
{
    __shared__ float sh[32];
    const float *xr = x + (size_t)blockIdx.x * n;
    float *o = out + (size_t)blockIdx.x * n;
    float ss = 0.f;
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        ss += xr[i] * xr[i];
    ss = block_sum(ss, sh);
    float r = 1.0f / sqrtf(ss / (float)n + eps);
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        float v = xr[i] * r;
        o[i] = bf16r(w ? bf16ld(w[i]) * v : v);
    }
}

// ---------------------------------------------------------------- mHC

// mixes[s][j] = (fn_j . X_s) * rsqrt(mean(X_s^2) + eps); grid (nm, S).
__global__ void k_hc_mix(const float *X, const float *fn, int n, int nm, float eps, float *mixes)
{
    __shared__ float sh[32];
    int j = blockIdx.x, s = blockIdx.y;
    const float *Xs = X + (size_t)s * n, *f = fn + (size_t)j * n;
    float ss = 0.f, dot = 0.f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        ss += Xs[i] * Xs[i];
        dot += f[i] * Xs[i];
    }
    ss = block_sum(ss, sh);
    dot = block_sum(dot, sh);
    if (threadIdx.x == 0)
        mixes[(size_t)s * nm + j] = dot * (1.0f / sqrtf(ss / (float)n + eps));
}

__device__ float sigmoidf_(float x) { return 1.0f / (1.0f + expf(-x)); }

// Split + Sinkhorn of one token's mixes, thread j < hc owning row j (and column j): the same
// arithmetic per element, in the same order, as inf_cpu_hc_split_sinkhorn. Then
// u = bf16(sum_k pre_k X_k). Grid S.
__global__ void k_hc_pre(const float *mixes, const float *scale, const float *base, int hc, int iters, float eps,
                         const float *X, int D, float *post_out, float *comb_out, float *u)
{
    __shared__ float pre[16], comb[256];
    int s = blockIdx.x, nm = (2 + hc) * hc, j = threadIdx.x;
    const float *m = mixes + (size_t)s * nm;
    if (j < hc) {
        pre[j] = sigmoidf_(m[j] * scale[0] + base[j]) + eps;
        post_out[(size_t)s * hc + j] = 2.0f * sigmoidf_(m[hc + j] * scale[1] + base[hc + j]);
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
    __syncthreads();
    for (int it = 0; it < iters; it++) {
        if (it > 0) {
            if (j < hc) {
                float t = 0.f;
                for (int k = 0; k < hc; k++)
                    t += comb[j * hc + k];
                t += eps;
                for (int k = 0; k < hc; k++)
                    comb[j * hc + k] /= t;
            }
            __syncthreads();
        }
        if (j < hc) { // column j
            float t = 0.f;
            for (int r = 0; r < hc; r++)
                t += comb[r * hc + j];
            t += eps;
            for (int r = 0; r < hc; r++)
                comb[r * hc + j] /= t;
        }
        __syncthreads();
    }
    if (j < hc * hc)
        comb_out[(size_t)s * hc * hc + j] = comb[j];
    const float *Xs = X + (size_t)s * hc * D;
    for (int i = threadIdx.x; i < D; i += blockDim.x) {
        float acc = 0.f;
        for (int k = 0; k < hc; k++)
            acc += pre[k] * Xs[(size_t)k * D + i];
        u[(size_t)s * D + i] = bf16r(acc);
    }
}

// X'_k = bf16(post_k f + sum_j comb[j][k] X_j), one thread per (token, hidden index).
__global__ void k_hc_post(float *X, const float *f, const float *post, const float *comb, int S, int hc, int D)
{
    size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (t >= (size_t)S * D)
        return;
    size_t s = t / D;
    int i = (int)(t % D);
    float *Xs = X + s * hc * D;
    const float *cb = comb + s * hc * hc, *ps = post + s * hc;
    float xv[16], nx[16];
    for (int j = 0; j < hc; j++)
        xv[j] = Xs[(size_t)j * D + i];
    float fv = f[s * D + i];
    for (int k = 0; k < hc; k++) {
        float acc = 0.f;
        for (int j = 0; j < hc; j++)
            acc += cb[j * hc + k] * xv[j];
        nx[k] = bf16r(ps[k] * fv + acc);
    }
    for (int k = 0; k < hc; k++)
        Xs[(size_t)k * D + i] = nx[k];
}

// hc_head + final norm of one position's streams X [hc][D] -> hidden [D]. One block.
__global__ void k_hc_head(const float *X, const float *fn, const float *base, const float *scale, int hc, int D,
                          float eps, float hc_eps, const uint16_t *normw, float *hidden)
{
    __shared__ float sh[32], pre[16];
    int n = hc * D;
    float ss = 0.f;
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        ss += X[i] * X[i];
    ss = block_sum(ss, sh);
    float r = 1.0f / sqrtf(ss / (float)n + eps);
    for (int k = 0; k < hc; k++) {
        float dot = 0.f;
        for (int i = threadIdx.x; i < n; i += blockDim.x)
            dot += fn[(size_t)k * n + i] * X[i];
        dot = block_sum(dot, sh);
        if (threadIdx.x == 0)
            pre[k] = 1.0f / (1.0f + expf(-(dot * r * scale[0] + base[k]))) + hc_eps;
    }
    __syncthreads();
    float ss2 = 0.f;
    for (int i = threadIdx.x; i < D; i += blockDim.x) {
        float acc = 0.f;
        for (int k = 0; k < hc; k++)
            acc += pre[k] * X[(size_t)k * D + i];
        hidden[i] = bf16r(acc);
        ss2 += hidden[i] * hidden[i];
    }
    ss2 = block_sum(ss2, sh);
    float r2 = 1.0f / sqrtf(ss2 / (float)D + eps);
    for (int i = threadIdx.x; i < D; i += blockDim.x)
        hidden[i] = bf16r(bf16ld(normw[i]) * (hidden[i] * r2));
}

// ---------------------------------------------------------------- products without FP8 activations

// y[s][r] = W[r] . x[s] with bf16 weights, fp32 sums; one warp per output.
__global__ void k_lin_bf16(const uint16_t *W, const float *x, int S, int n, int k, float *y, int out_bf16)
{
    size_t o = blockIdx.x * (size_t)(blockDim.x / 32) + (threadIdx.x >> 5);
    if (o >= (size_t)S * n)
        return;
    int lane = threadIdx.x & 31;
    size_t s = o / n, r = o % n;
    const uint16_t *w = W + r * k;
    const float *xs = x + s * k;
    float acc = 0.f;
    for (int i = lane; i < k; i += 32)
        acc += bf16ld(w[i]) * xs[i];
    acc = warp_sum(acc);
    if (lane == 0)
        y[o] = out_bf16 ? bf16r(acc) : acc;
}

// wo_a: each group g's rows [g*R, (g+1)*R) of the FP8 matrix, used as its exact dequantisation, times
// the group's slice of O; Z[s][g*R + r] bf16. One warp per output.
__global__ void k_wo_a(const uint8_t *W, const uint8_t *scale, const float *O, int S, int G, int R, int gd, int HD,
                       float *Z)
{
    size_t o = blockIdx.x * (size_t)(blockDim.x / 32) + (threadIdx.x >> 5);
    if (o >= (size_t)S * G * R)
        return;
    int lane = threadIdx.x & 31;
    int s = (int)(o / ((size_t)G * R)), gr = (int)(o % ((size_t)G * R)), g = gr / R, r = gr % R;
    int kb = (gd + 127) / 128;
    const uint8_t *w = W + (size_t)gr * gd;
    const uint8_t *srow = scale + (size_t)((g * R) / 128 + r / 128) * kb;
    const float *x = O + (size_t)s * HD + (size_t)g * gd;
    float acc = 0.f;
    for (int i = lane; i < gd; i += 32)
        acc += (e4m3_dec(w[i]) * e8m0_dec(srow[i / 128])) * x[i];
    acc = warp_sum(acc);
    if (lane == 0)
        Z[o] = bf16r(acc);
}

// ---------------------------------------------------------------- attention

// Query heads: q * rsqrt(mean(q^2) + eps) in bf16 arithmetic, then RoPE of the tail. Grid S*H.
__global__ void k_q_prep(float *Q, int H, int d, int rd, float eps, const float *rope, long long pos0)
{
    extern __shared__ float buf[];
    __shared__ float sh[32];
    int s = blockIdx.x / H;
    float *q = Q + (size_t)blockIdx.x * d;
    float sum = 0.f;
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
        buf[i] = q[i];
        sum += bf16r(q[i] * q[i]);
    }
    sum = block_sum(sum, sh);
    float ms = bf16r(sum / (float)d);
    float r = bf16r(1.0f / sqrtf(bf16r(ms + eps)));
    for (int i = threadIdx.x; i < d; i += blockDim.x)
        buf[i] = bf16r(buf[i] * r);
    __syncthreads();
    rope_pairs(buf + d - rd, rope + (size_t)(pos0 + s) * rd, rd, 0);
    __syncthreads();
    for (int i = threadIdx.x; i < d; i += blockDim.x)
        q[i] = buf[i];
}

// Window kv of each token: RMSNorm, RoPE of the tail, FP8 QDQ of the nope dims. Grid S.
__global__ void k_kv_prep(float *kv, int d, int rd, const uint16_t *normw, float eps, const float *rope, long long pos0)
{
    extern __shared__ float buf[];
    __shared__ float sh[32];
    int s = blockIdx.x;
    float *k = kv + (size_t)s * d;
    float ss = 0.f;
    for (int i = threadIdx.x; i < d; i += blockDim.x)
        ss += k[i] * k[i];
    ss = block_sum(ss, sh);
    float r = 1.0f / sqrtf(ss / (float)d + eps);
    for (int i = threadIdx.x; i < d; i += blockDim.x)
        buf[i] = bf16r(bf16ld(normw[i]) * (k[i] * r));
    __syncthreads();
    rope_pairs(buf + d - rd, rope + (size_t)(pos0 + s) * rd, rd, 0);
    __syncthreads();
    int warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    for (int b = warp; b < (d - rd) / 64; b += nw)
        warp_fp8_qdq64(buf + b * 64);
    __syncthreads();
    for (int i = threadIdx.x; i < d; i += blockDim.x)
        k[i] = buf[i];
}

// Indexer queries: RoPE of the tail, Hadamard, FP4 QDQ. Grid S*Hi.
__global__ void k_iq_prep(float *qI, int Hi, int di, int rd, const float *rope, long long pos0, float hsc)
{
    extern __shared__ float buf[];
    int s = blockIdx.x / Hi;
    float *q = qI + (size_t)blockIdx.x * di;
    for (int i = threadIdx.x; i < di; i += blockDim.x)
        buf[i] = q[i];
    __syncthreads();
    rope_pairs(buf + di - rd, rope + (size_t)(pos0 + s) * rd, rd, 0);
    __syncthreads();
    block_hadamard(buf, di, hsc);
    int warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    for (int b = warp; b < di / 32; b += nw)
        warp_fp4_qdq32(buf + b * 32);
    __syncthreads();
    for (int i = threadIdx.x; i < di; i += blockDim.x)
        q[i] = buf[i];
}

// A compressor over a chunk, token by token in one block (the carry is sequential): write each
// token's projections (score + ape) into its carry slot; when a block of `ratio` completes, pool
// (softmax over the slots per channel), RMSNorm, RoPE at the block's first position, then FP8 QDQ
// (main) or Hadamard + FP4 QDQ (indexer), into cache[(p+1)/ratio - 1].
__global__ void k_compress(const float *kvp, const float *scp, int S, long long pos0, int ratio, int width,
                           const float *ape, const uint16_t *normw, float eps, int indexer, float *ckv, float *csc,
                           float *cache, const float *rope, int rd, float hsc)
{
    extern __shared__ float ent[];
    __shared__ float sh[32];
    int overlap = ratio == 4, coff = overlap ? 2 : 1, rw = coff * width, ns = coff * ratio;
    for (int s = 0; s < S; s++) {
        long long p = pos0 + s;
        int slot = (overlap ? ratio : 0) + (int)(p % ratio);
        const float *ap = ape + (size_t)(p % ratio) * rw;
        for (int i = threadIdx.x; i < rw; i += blockDim.x) {
            ckv[(size_t)slot * rw + i] = kvp[(size_t)s * rw + i];
            csc[(size_t)slot * rw + i] = scp[(size_t)s * rw + i] + ap[i];
        }
        __syncthreads();
        if ((p + 1) % ratio)
            continue;
        for (int ch = threadIdx.x; ch < width; ch += blockDim.x) {
            float mx = -INFINITY, sum = 0.f, acc = 0.f;
            for (int sl = 0; sl < ns; sl++) {
                int off = overlap && sl >= ratio ? width : 0;
                mx = fmaxf(mx, csc[(size_t)sl * rw + off + ch]);
            }
            for (int sl = 0; sl < ns; sl++) {
                int off = overlap && sl >= ratio ? width : 0;
                sum += expf(csc[(size_t)sl * rw + off + ch] - mx);
            }
            for (int sl = 0; sl < ns; sl++) {
                int off = overlap && sl >= ratio ? width : 0;
                acc += ckv[(size_t)sl * rw + off + ch] * (expf(csc[(size_t)sl * rw + off + ch] - mx) / sum);
            }
            ent[ch] = bf16r(acc);
        }
        __syncthreads();
        if (overlap) // the current block becomes the overlap carry
            for (int i = threadIdx.x; i < ratio * rw; i += blockDim.x) {
                ckv[i] = ckv[(size_t)ratio * rw + i];
                csc[i] = csc[(size_t)ratio * rw + i];
            }
        float ss = 0.f;
        for (int ch = threadIdx.x; ch < width; ch += blockDim.x)
            ss += ent[ch] * ent[ch];
        ss = block_sum(ss, sh);
        float r = 1.0f / sqrtf(ss / (float)width + eps);
        for (int ch = threadIdx.x; ch < width; ch += blockDim.x)
            ent[ch] = bf16r(bf16ld(normw[ch]) * (ent[ch] * r));
        __syncthreads();
        rope_pairs(ent + width - rd, rope + (size_t)(p + 1 - ratio) * rd, rd, 0);
        __syncthreads();
        int warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
        if (indexer) {
            block_hadamard(ent, width, hsc);
            for (int b = warp; b < width / 32; b += nw)
                warp_fp4_qdq32(ent + b * 32);
        } else {
            for (int b = warp; b < (width - rd) / 64; b += nw)
                warp_fp8_qdq64(ent + b * 64);
        }
        __syncthreads();
        float *dst = cache + (size_t)((p + 1) / ratio - 1) * width;
        for (int ch = threadIdx.x; ch < width; ch += blockDim.x)
            dst[ch] = ent[ch];
        __syncthreads();
    }
}

// Indexer scores: score[s][e] = bf16(sum_h bf16(relu(bf16(q_h . key_e)) * w_h)) for e < (p+1)/4.
// One warp per (token, entry); grid (ceil(nmax/8), S).
__global__ void k_idx_score(const float *qI, const float *wts, const float *keys, int Hi, int di, long long pos0,
                            float *score, size_t ld)
{
    int s = blockIdx.y, lane = threadIdx.x & 31;
    long long e = blockIdx.x * 8LL + (threadIdx.x >> 5), nv = (pos0 + s + 1) / 4;
    if (e >= nv)
        return;
    const float *key = keys + (size_t)e * di, *q = qI + (size_t)s * Hi * di, *w = wts + (size_t)s * Hi;
    float sum = 0.f;
    for (int h = 0; h < Hi; h++) {
        float dot = 0.f;
        for (int i = lane; i < di; i += 32)
            dot += q[(size_t)h * di + i] * key[i];
        dot = bf16r(warp_sum(dot));
        if (dot < 0.f)
            dot = 0.f;
        sum += bf16r(dot * w[h]);
    }
    if (lane == 0)
        score[(size_t)s * ld + e] = bf16r(sum);
}

// Top-k by rank (descending score, ties to the lowest index): sel[s][rank] = e for rank < k, the
// rest -1. Grid S.
__global__ void k_topk(const float *score, size_t ld, long long pos0, int K, int *sel, int cap)
{
    extern __shared__ float ssc[];
    int s = blockIdx.x;
    long long nv = (pos0 + s + 1) / 4;
    int k = nv < K ? (int)nv : K;
    const float *sc = score + (size_t)s * ld;
    if (nv <= cap) { // the scores fit in shared memory (cap entries): read them from there
        for (long long e = threadIdx.x; e < nv; e += blockDim.x)
            ssc[e] = sc[e];
        __syncthreads();
        sc = ssc;
    }
    int *out = sel + (size_t)s * K;
    for (int i = k + threadIdx.x; i < K; i += blockDim.x)
        out[i] = -1;
    for (long long e = threadIdx.x; e < nv; e += blockDim.x) {
        float v = sc[e];
        long long rank = 0;
        for (long long f = 0; f < nv && rank < k; f++) {
            float u = sc[f];
            rank += u > v || (u == v && f < e);
        }
        if (rank < k)
            out[rank] = (int)e;
    }
}

// Entry j of query p in the reference decode layout (NULL = empty slot).
__device__ __forceinline__ const float *att_entry(int j, long long p, long long pos0, int W, int d,
                                                  const float *kvnew, const float *ring, const float *cache,
                                                  int ratio, const int *selrow)
{
    if (j < W) {
        long long first = p - W + 1 < 0 ? 0 : p - W + 1, q = first + j;
        if (q > p)
            return nullptr;
        return q >= pos0 ? kvnew + (size_t)(q - pos0) * d : ring + (size_t)(q % W) * d;
    }
    j -= W;
    if (ratio == 4) {
        int e = selrow[j];
        return e >= 0 ? cache + (size_t)e * d : nullptr;
    }
    return cache + (size_t)j * d;
}

#define ATT_THREADS 256
#define ATT_SLICE 128
#define ATT_MAXD 1024
// Sparse attention of one (token, head) and one slice of ATT_SLICE output dims (grid (S*H, slices):
// every slice recomputes the scores, so that more blocks share the P.V work): blocks of 64 entries,
// online softmax in fp32 (running max, denominator and the probabilities' sum in the CPU's order),
// bf16 probabilities in P.V (fused multiply-add, in entry order, as the CPU's axpy), the sink in the
// denominator, bf16 out, inverse RoPE of the tail.
__global__ void __launch_bounds__(ATT_THREADS) k_attn(const float *Q, const float *kvnew, const float *ring,
                                                      const float *cache, const int *sel, int H, int d, int W,
                                                      int ratio, int K, long long pos0, const float *sink,
                                                      float scale, const float *rope, int rd, float *O)
{
    __shared__ float q[ATT_MAXD], sc[64], praw[64], pj[64], outs[ATT_SLICE];
    __shared__ const float *ptr[64];
    __shared__ float corr_sh, mx_sh, dn_sh;
    __shared__ int any_sh;
    int s = blockIdx.x / H, h = blockIdx.x % H, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int i0 = blockIdx.y * ATT_SLICE, i = i0 + (int)threadIdx.x;
    int mine = threadIdx.x < ATT_SLICE && i < d; // this thread owns output dim i
    long long p = pos0 + s;
    const float *qh = Q + (size_t)blockIdx.x * d;
    for (int t = threadIdx.x; t < d; t += ATT_THREADS)
        q[t] = qh[t];
    if (threadIdx.x == 0)
        mx_sh = -INFINITY;
    const int *selrow = ratio == 4 ? sel + (size_t)s * K : nullptr;
    int n = W + (ratio == 4 ? K : ratio ? (int)((p + 1) / ratio) : 0);
    float num = 0.f, den = 0.f; // den: thread 0
    __syncthreads();
    for (int b0 = 0; b0 < n; b0 += 64) {
        int bn = n - b0 < 64 ? n - b0 : 64;
        for (int j = warp; j < bn; j += ATT_THREADS / 32) {
            const float *kv = att_entry(b0 + j, p, pos0, W, d, kvnew, ring, cache, ratio, selrow);
            float dot = 0.f;
            if (kv)
                for (int t = lane; t < d; t += 32)
                    dot += q[t] * kv[t];
            dot = warp_sum(dot);
            if (lane == 0) {
                ptr[j] = kv;
                sc[j] = kv ? dot * scale : -INFINITY;
            }
        }
        __syncthreads();
        if (warp == 0) {
            int v0 = lane < bn && ptr[lane], v1 = lane + 32 < bn && ptr[lane + 32];
            float bmax = warp_max(fmaxf(v0 ? sc[lane] : -INFINITY, v1 ? sc[lane + 32] : -INFINITY));
            int any = __any_sync(0xffffffffu, v0 || v1);
            if (any) {
                float nmax = fmaxf(mx_sh, bmax);
                float p0 = v0 ? expf(sc[lane] - nmax) : 0.f, p1 = v1 ? expf(sc[lane + 32] - nmax) : 0.f;
                praw[lane] = p0;
                praw[lane + 32] = p1;
                pj[lane] = bf16r(p0);
                pj[lane + 32] = bf16r(p1);
                __syncwarp();
                if (lane == 0) {
                    float corr = expf(mx_sh - nmax), psum = 0.f;
                    for (int j = 0; j < bn; j++)
                        psum += praw[j];
                    den = den * corr + psum;
                    corr_sh = corr;
                    mx_sh = nmax;
                }
            }
            if (lane == 0)
                any_sh = any;
        }
        __syncthreads();
        if (any_sh && mine) {
            float a = num * corr_sh;
            for (int j0 = 0; j0 < bn; j0 += 8) { // loads first, then the adds in entry order
                float v[8];
#pragma unroll
                for (int u = 0; u < 8; u++)
                    v[u] = j0 + u < bn && ptr[j0 + u] ? ptr[j0 + u][i] : 0.f;
#pragma unroll
                for (int u = 0; u < 8; u++)
                    if (j0 + u < bn && ptr[j0 + u])
                        a = fmaf(pj[j0 + u], v[u], a);
            }
            num = a;
        }
        __syncthreads();
    }
    if (threadIdx.x == 0)
        dn_sh = den + expf(sink[h] - mx_sh);
    __syncthreads();
    if (mine)
        outs[threadIdx.x] = bf16r(num / dn_sh);
    __syncthreads();
    // inverse RoPE of the tail pairs that fall in this slice (pairs never straddle: slices are even)
    const float *cs = rope + (size_t)p * rd;
    for (int pi = threadIdx.x; pi < rd / 2; pi += ATT_THREADS) {
        int g0 = d - rd + 2 * pi;
        if (g0 < i0 || g0 >= i0 + ATT_SLICE)
            continue;
        float c = cs[2 * pi], sn = -cs[2 * pi + 1];
        float a = outs[g0 - i0], b = outs[g0 - i0 + 1];
        outs[g0 - i0] = bf16r(a * c - b * sn);
        outs[g0 - i0 + 1] = bf16r(a * sn + b * c);
    }
    __syncthreads();
    if (mine)
        O[(size_t)blockIdx.x * d + i] = outs[threadIdx.x];
}

__global__ void k_ring_update(const float *kv, float *ring, int S, long long pos0, int W, int d)
{
    int s0 = S - W < 0 ? 0 : S - W, s = s0 + blockIdx.x;
    if (s >= S)
        return;
    float *dst = ring + (size_t)((pos0 + s) % W) * d;
    for (int i = threadIdx.x; i < d; i += blockDim.x)
        dst[i] = kv[(size_t)s * d + i];
}

// ---------------------------------------------------------------- MoE

__device__ float softplusf_(float x) { return x > 20.f ? x : log1pf(expf(x)); }

// Routing of one token (one thread): scores, hash or learned top-k, weights. ri/rw [S][k].
__global__ void k_route(const float *logit, int S, int E, int k, int func, const float *bias,
                        const long long *tid2eid, const int *tok, float rsf, int *ri, float *rw)
{
    int s = blockIdx.x * blockDim.x + threadIdx.x;
    if (s >= S)
        return;
    float sc[256];
    const float *lg = logit + (size_t)s * E;
    for (int x = 0; x < E; x++) {
        float v = lg[x];
        sc[x] = func == 0 ? v : func == 1 ? 1.0f / (1.0f + expf(-v)) : sqrtf(softplusf_(v));
    }
    if (func == 0) {
        float mx = -INFINITY, sum = 0.f;
        for (int x = 0; x < E; x++)
            mx = fmaxf(mx, sc[x]);
        for (int x = 0; x < E; x++)
            sum += (sc[x] = expf(sc[x] - mx));
        for (int x = 0; x < E; x++)
            sc[x] /= sum;
    }
    int *sel = ri + (size_t)s * k;
    if (tid2eid) {
        for (int i = 0; i < k; i++)
            sel[i] = (int)tid2eid[(size_t)tok[s] * k + i];
    } else {
        uint32_t taken[8] = {0};
        for (int i = 0; i < k; i++) {
            int best = -1;
            float bv = 0.f;
            for (int x = 0; x < E; x++) {
                if (taken[x >> 5] >> (x & 31) & 1)
                    continue;
                float v = sc[x] + (bias ? bias[x] : 0.f);
                if (best < 0 || v > bv) {
                    best = x;
                    bv = v;
                }
            }
            taken[best >> 5] |= 1u << (best & 31);
            sel[i] = best;
        }
    }
    float *w = rw + (size_t)s * k, sum = 0.f;
    for (int i = 0; i < k; i++)
        sum += (w[i] = sc[sel[i]]);
    for (int i = 0; i < k; i++) {
        if (func != 0)
            w[i] /= sum;
        w[i] *= rsf;
    }
}

// g = bf16(weight * silu(min(g, lim)) * clamp(u, +-lim)) on bf16 rows [rows][I].
__global__ void k_swiglu(uint16_t *g, const uint16_t *u, int rows, int I, const float *weights, float lim)
{
    size_t n = (size_t)rows * I;
    for (size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x; t < n; t += (size_t)gridDim.x * blockDim.x) {
        float gv = bf16ld(g[t]), uv = bf16ld(u[t]);
        if (lim > 0) {
            uv = uv < -lim ? -lim : uv > lim ? lim : uv;
            gv = gv > lim ? lim : gv;
        }
        float v = gv / (1.0f + expf(-gv)) * uv;
        if (weights)
            v = weights[t / I] * v;
        g[t] = bf16bits(v);
    }
}

// out[s][i] = bf16(sum over the token's experts in ascending id of y + shared y).
__global__ void k_moe_combine(const uint16_t *ys, const int *ri, const uint16_t *sy, int S, int k, int D, float *out)
{
    size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (t >= (size_t)S * D)
        return;
    size_t s = t / D;
    int i = (int)(t % D);
    const int *sel = ri + s * k;
    float acc = 0.f;
    int last = -1;
    for (;;) { // the next larger expert id each time; a repeated id (hash tables) adds its rows in order
        int v = -1;
        for (int j = 0; j < k; j++)
            if (sel[j] > last && (v < 0 || sel[j] < v))
                v = sel[j];
        if (v < 0)
            break;
        for (int j = 0; j < k; j++)
            if (sel[j] == v)
                acc += bf16ld(ys[(s * k + j) * D + i]);
        last = v;
    }
    out[t] = bf16r(acc + bf16ld(sy[t]));
}

// Busy-waits `ns` nanoseconds, so that the launches queued behind it run back to back (profiling).
__global__ void k_spin(long long ns)
{
    unsigned long long t0, t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
    do
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    while ((long long)(t - t0) < ns);
}

unsigned grid_for(size_t n, int threads)
{
    size_t b = (n + threads - 1) / threads;
    return (unsigned)(b < 1 ? 1 : b > 65535 * 16 ? 65535 * 16 : b);
}

} // namespace

// ---------------------------------------------------------------- host side

#define PROF_MAX_EV 4096

struct dlin {
    int n, k;
    const uint8_t *w, *s;
};

struct dlayer {
    int ratio, hash;
    const float *hc_fn[2], *hc_base[2], *hc_scale[2];
    const uint16_t *attn_norm, *ffn_norm, *q_norm, *kv_norm, *c_norm, *ic_norm;
    const float *sink, *c_ape, *ic_ape, *gate_bias;
    const long long *tid2eid;
    struct dlin wq_a, wq_b, wkv, wo_a, wo_b, c_wkv, c_wgate, i_wq_b, i_wproj, ic_wkv, ic_wgate, gate, sw1, sw2, sw3;
    const uint8_t **etab; // device: [6][E] pointers: w1 weight, w1 scale, w2 w, w2 s, w3 w, w3 s
    // state
    float *ring, *c_kv, *c_sc, *ic_kv, *ic_sc, *cache, *icache;
};

struct wentry {
    const char *name;
    const struct inf_tensor *t;
    void *d;
};

struct cuda_engine {
    struct inf_config c;
    int Smax;
    long long max_ctx, pos;
    cudaStream_t st;
    void *warena;
    size_t wbytes, sbytes;
    struct wentry *wmap;
    int nw;
    const uint16_t *embed, *norm, *head;
    const float *hch_fn, *hch_base, *hch_scale;
    struct dlayer *L;
    float *rope[2]; // [max_ctx][rd]: 0 plain, 1 compressed layers (YaRN)
    // scratch
    int *tok;
    float *X, *u, *f, *post, *comb, *mixes;
    float *cq, *Q, *kv, *O, *Z, *ctmp, *ctmp2, *itmp, *itmp2, *wts, *qI, *score, *hidden, *logits, *logit;
    size_t score_ld;
    int *sel, *ri;
    float *rw;
    uint16_t *stage, *o16, *g16, *u16, *ys16, *sg16, *su16, *sy16;
    uint8_t *q8;
    float *sa;
    void *state_block;
    // profiling (cuda_engine_profile)
    int prof_on, prof_active, nev; // events allocated / in use
    cudaEvent_t ev[PROF_MAX_EV];
    int evstage[PROF_MAX_EV];
    double prof_ms[CUDA_PROF_N];
};

extern "C" const char *const cuda_engine_prof_names[CUDA_PROF_N] = {
    "mhc pre/post",     "attn projections", "attn q/kv prep",  "compressors", "indexer",
    "attn core",        "attn out (wo_a/b)", "moe gate+route", "moe experts", "moe combine",
    "embed + head"};

static void prof_mark(struct cuda_engine *g, int stage)
{
    if (!g->prof_active || g->nev >= PROF_MAX_EV)
        return;
    cudaEventRecord(g->ev[g->nev], g->st);
    g->evstage[g->nev++] = stage;
}

static int cu(struct ctx_err *e, cudaError_t rc, const char *what)
{
    if (rc == cudaSuccess)
        return 0;
    return ctx_err_set(e, CTX_EIO, "cuda engine: %s: %s", what, cudaGetErrorString(rc));
}
#define LAUNCHED(what)                                                                                                 \
    do {                                                                                                               \
        cudaError_t rc_ = cudaGetLastError();                                                                          \
        if (rc_ != cudaSuccess)                                                                                        \
            return cu(e, rc_, what);                                                                                   \
    } while (0)

static int wcmp(const void *a, const void *b)
{
    return strcmp(((const struct wentry *)a)->name, ((const struct wentry *)b)->name);
}

// Device copy of a tensor, checked against the expected dtype and element count (-1: any).
static const void *dget(struct cuda_engine *g, int *rc, struct ctx_err *e, enum inf_dtype dt, long long numel,
                        const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static const void *dget(struct cuda_engine *g, int *rc, struct ctx_err *e, enum inf_dtype dt, long long numel,
                        const char *fmt, ...)
{
    if (*rc)
        return NULL;
    char name[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    struct wentry key = {name, NULL, NULL};
    struct wentry *w = (struct wentry *)bsearch(&key, g->wmap, (size_t)g->nw, sizeof key, wcmp);
    if (!w) {
        *rc = ctx_err_set(e, CTX_EFORMAT, "cuda engine: tensor %s is missing", name);
        return NULL;
    }
    if (w->t->dtype != dt || (numel >= 0 && inf_tensor_numel(w->t) != numel)) {
        *rc = ctx_err_set(e, CTX_EFORMAT, "cuda engine: tensor %s has dtype %s and %lld elements, expected %s and %lld",
                          name, inf_dtype_name(w->t->dtype), inf_tensor_numel(w->t), inf_dtype_name(dt), numel);
        return NULL;
    }
    return w->d;
}

static void bind_fp8(struct cuda_engine *g, int *rc, struct ctx_err *e, struct dlin *l, int n, int k, const char *p)
{
    l->n = n;
    l->k = k;
    l->w = (const uint8_t *)dget(g, rc, e, INF_DT_F8_E4M3, (long long)n * k, "%s.weight", p);
    l->s = (const uint8_t *)dget(g, rc, e, INF_DT_F8_E8M0, (long long)((n + 127) / 128) * ((k + 127) / 128), "%s.scale",
                                 p);
}
static void bind_bf16(struct cuda_engine *g, int *rc, struct ctx_err *e, struct dlin *l, int n, int k, const char *p)
{
    l->n = n;
    l->k = k;
    l->w = (const uint8_t *)dget(g, rc, e, INF_DT_BF16, (long long)n * k, "%s.weight", p);
    l->s = NULL;
}

static size_t al256(size_t x) { return (x + 255) & ~(size_t)255; }

static int upload_weights(struct cuda_engine *g, const struct inf_weights *w, struct ctx_err *e)
{
    int n = inf_weights_count(w), rc;
    g->wmap = (struct wentry *)calloc((size_t)(n > 0 ? n : 1), sizeof *g->wmap);
    if (!g->wmap)
        return ctx_err_set(e, CTX_ENOMEM, "cuda engine: out of memory");
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        const struct inf_tensor *t = inf_weights_tensor(w, i);
        if (!strncmp(t->name, "mtp.", 4)) // MTP is not part of this engine
            continue;
        g->wmap[g->nw++] = (struct wentry){t->name, t, (void *)total};
        total += al256(t->nbytes);
    }
    if ((rc = cu(e, cudaMalloc(&g->warena, total ? total : 256), "cudaMalloc(weights)")))
        return rc;
    g->wbytes = total;
    for (int i = 0; i < g->nw; i++) {
        struct wentry *we = &g->wmap[i];
        we->d = (char *)g->warena + (size_t)we->d;
        if ((rc = cu(e, cudaMemcpy(we->d, we->t->data, we->t->nbytes, cudaMemcpyHostToDevice), we->name)))
            return rc;
    }
    qsort(g->wmap, (size_t)g->nw, sizeof *g->wmap, wcmp);
    return 0;
}

static int bind_layer(struct cuda_engine *g, const struct inf_weights *w, int i, struct ctx_err *e)
{
    const struct inf_config *c = &g->c;
    struct dlayer *L = &g->L[i];
    int rc = 0, D = c->hidden_size, hc = c->hc_mult, mix = (2 + hc) * hc, d = c->head_dim;
    char p[64], q[128];
    snprintf(p, sizeof p, "layers.%d", i);
    L->ratio = c->compress_ratios[i];
    L->hash = inf_config_is_hash_layer(c, i);
    static const char *site[2] = {"attn", "ffn"};
    for (int s = 0; s < 2; s++) {
        L->hc_fn[s] = (const float *)dget(g, &rc, e, INF_DT_F32, (long long)mix * hc * D, "%s.hc_%s_fn", p, site[s]);
        L->hc_base[s] = (const float *)dget(g, &rc, e, INF_DT_F32, mix, "%s.hc_%s_base", p, site[s]);
        L->hc_scale[s] = (const float *)dget(g, &rc, e, INF_DT_F32, 3, "%s.hc_%s_scale", p, site[s]);
    }
    L->attn_norm = (const uint16_t *)dget(g, &rc, e, INF_DT_BF16, D, "%s.attn_norm.weight", p);
    L->ffn_norm = (const uint16_t *)dget(g, &rc, e, INF_DT_BF16, D, "%s.ffn_norm.weight", p);
    L->sink = (const float *)dget(g, &rc, e, INF_DT_F32, c->num_attention_heads, "%s.attn.attn_sink", p);
    snprintf(q, sizeof q, "%s.attn.wq_a", p);
    bind_fp8(g, &rc, e, &L->wq_a, c->q_lora_rank, D, q);
    snprintf(q, sizeof q, "%s.attn.wq_b", p);
    bind_fp8(g, &rc, e, &L->wq_b, c->num_attention_heads * d, c->q_lora_rank, q);
    snprintf(q, sizeof q, "%s.attn.wkv", p);
    bind_fp8(g, &rc, e, &L->wkv, d, D, q);
    snprintf(q, sizeof q, "%s.attn.wo_a", p);
    bind_fp8(g, &rc, e, &L->wo_a, c->o_groups * c->o_lora_rank, c->num_attention_heads * d / c->o_groups, q);
    snprintf(q, sizeof q, "%s.attn.wo_b", p);
    bind_fp8(g, &rc, e, &L->wo_b, D, c->o_groups * c->o_lora_rank, q);
    L->q_norm = (const uint16_t *)dget(g, &rc, e, INF_DT_BF16, c->q_lora_rank, "%s.attn.q_norm.weight", p);
    L->kv_norm = (const uint16_t *)dget(g, &rc, e, INF_DT_BF16, d, "%s.attn.kv_norm.weight", p);
    if (L->ratio) {
        int coff = L->ratio == 4 ? 2 : 1;
        snprintf(q, sizeof q, "%s.attn.compressor.wkv", p);
        bind_bf16(g, &rc, e, &L->c_wkv, coff * d, D, q);
        snprintf(q, sizeof q, "%s.attn.compressor.wgate", p);
        bind_bf16(g, &rc, e, &L->c_wgate, coff * d, D, q);
        L->c_ape = (const float *)dget(g, &rc, e, INF_DT_F32, (long long)L->ratio * coff * d, "%s.attn.compressor.ape", p);
        L->c_norm = (const uint16_t *)dget(g, &rc, e, INF_DT_BF16, d, "%s.attn.compressor.norm.weight", p);
        if (L->ratio == 4) {
            int di = c->index_head_dim, hi = c->index_n_heads;
            snprintf(q, sizeof q, "%s.attn.indexer.wq_b", p);
            bind_fp8(g, &rc, e, &L->i_wq_b, hi * di, c->q_lora_rank, q);
            snprintf(q, sizeof q, "%s.attn.indexer.weights_proj", p);
            bind_bf16(g, &rc, e, &L->i_wproj, hi, D, q);
            snprintf(q, sizeof q, "%s.attn.indexer.compressor.wkv", p);
            bind_bf16(g, &rc, e, &L->ic_wkv, 2 * di, D, q);
            snprintf(q, sizeof q, "%s.attn.indexer.compressor.wgate", p);
            bind_bf16(g, &rc, e, &L->ic_wgate, 2 * di, D, q);
            L->ic_ape = (const float *)dget(g, &rc, e, INF_DT_F32, 4LL * 2 * di, "%s.attn.indexer.compressor.ape", p);
            L->ic_norm =
                (const uint16_t *)dget(g, &rc, e, INF_DT_BF16, di, "%s.attn.indexer.compressor.norm.weight", p);
        }
    }
    int E = c->n_routed_experts, I = c->moe_intermediate_size, k = c->num_experts_per_tok;
    snprintf(q, sizeof q, "%s.ffn.gate", p);
    bind_bf16(g, &rc, e, &L->gate, E, D, q);
    if (L->hash) {
        L->tid2eid = (const long long *)dget(g, &rc, e, INF_DT_I64, (long long)c->vocab_size * k,
                                             "%s.ffn.gate.tid2eid", p);
        if (!rc) { // checked once here so that the device never meets a bad expert id
            const struct inf_tensor *t = inf_weights_getf(w, "%s.ffn.gate.tid2eid", p);
            const int64_t *v = (const int64_t *)t->data;
            for (long long j = 0; j < (long long)c->vocab_size * k; j++)
                if (v[j] < 0 || v[j] >= E)
                    return ctx_err_set(e, CTX_EFORMAT, "cuda engine: %s.ffn.gate.tid2eid[%lld] names expert %lld", p,
                                       j, (long long)v[j]);
        }
    } else {
        L->gate_bias = (const float *)dget(g, &rc, e, INF_DT_F32, E, "%s.ffn.gate.bias", p);
    }
    const uint8_t **tab = (const uint8_t **)calloc((size_t)6 * E, sizeof *tab);
    if (!tab)
        return ctx_err_set(e, CTX_ENOMEM, "cuda engine: out of memory");
    static const char *wn[3] = {"w1", "w2", "w3"};
    for (int x = 0; x < E && !rc; x++)
        for (int m = 0; m < 3; m++) {
            int n = m == 1 ? D : I, kk = m == 1 ? I : D;
            tab[(size_t)(2 * m) * E + x] = (const uint8_t *)dget(g, &rc, e, INF_DT_I8, (long long)n * kk / 2,
                                                                 "%s.ffn.experts.%d.%s.weight", p, x, wn[m]);
            tab[(size_t)(2 * m + 1) * E + x] = (const uint8_t *)dget(g, &rc, e, INF_DT_F8_E8M0, (long long)n * (kk / 32),
                                                                     "%s.ffn.experts.%d.%s.scale", p, x, wn[m]);
        }
    if (!rc) {
        rc = cu(e, cudaMalloc((void **)&L->etab, sizeof *tab * 6 * (size_t)E), "cudaMalloc(expert tables)");
        if (!rc)
            rc = cu(e, cudaMemcpy(L->etab, tab, sizeof *tab * 6 * (size_t)E, cudaMemcpyHostToDevice), "expert tables");
    }
    free(tab);
    int SI = I * c->n_shared_experts;
    snprintf(q, sizeof q, "%s.ffn.shared_experts.w1", p);
    bind_fp8(g, &rc, e, &L->sw1, SI, D, q);
    snprintf(q, sizeof q, "%s.ffn.shared_experts.w2", p);
    bind_fp8(g, &rc, e, &L->sw2, D, SI, q);
    snprintf(q, sizeof q, "%s.ffn.shared_experts.w3", p);
    bind_fp8(g, &rc, e, &L->sw3, SI, D, q);
    return rc;
}

static size_t carry_n(const struct inf_config *c, int ratio)
{
    int coff = ratio == 4 ? 2 : 1;
    return ratio ? (size_t)coff * ratio * coff * c->head_dim : 0;
}
static size_t icarry_n(const struct inf_config *c, int ratio) { return ratio == 4 ? (size_t)8 * 2 * c->index_head_dim : 0; }

static int smax_i(int a, int b) { return a > b ? a : b; }

// State and scratch in one allocation, carved in 256-byte aligned pieces.
static int alloc_state(struct cuda_engine *g, struct ctx_err *e)
{
    const struct inf_config *c = &g->c;
    int S = g->Smax, D = c->hidden_size, hc = c->hc_mult, nm = (2 + hc) * hc, d = c->head_dim, H = c->num_attention_heads;
    int Lq = c->q_lora_rank, G = c->o_groups, R = c->o_lora_rank, di = c->index_head_dim, Hi = c->index_n_heads;
    int E = c->n_routed_experts, k = c->num_experts_per_tok, I = c->moe_intermediate_size, V = c->vocab_size;
    int SI = I * c->n_shared_experts, K = c->index_topk, rd = c->qk_rope_head_dim, W = c->sliding_window;
    long long nc4 = g->max_ctx / 4 + 1;
    g->score_ld = (size_t)nc4;
    int kmax = smax_i(smax_i(D, Lq), smax_i(G * R, SI));
    size_t stage_n = (size_t)S * k * I > (size_t)S * kmax ? (size_t)S * k * I : (size_t)S * kmax;
    int omax = smax_i(smax_i(smax_i(Lq, H * d), smax_i(d, Hi * di)), smax_i(D, SI));
    size_t o16_n = (size_t)S * omax;
    struct piece {
        void **p;
        size_t bytes;
    };
    struct piece pc[64];
    int np = 0;
#define PIECE(ptr, n) pc[np++] = (struct piece){(void **)&(ptr), (size_t)(n)}
    PIECE(g->tok, sizeof(int) * S);
    PIECE(g->X, sizeof(float) * S * hc * D);
    PIECE(g->u, sizeof(float) * S * D);
    PIECE(g->f, sizeof(float) * S * D);
    PIECE(g->post, sizeof(float) * S * hc);
    PIECE(g->comb, sizeof(float) * S * hc * hc);
    PIECE(g->mixes, sizeof(float) * S * nm);
    PIECE(g->cq, sizeof(float) * S * Lq);
    PIECE(g->Q, sizeof(float) * S * H * d);
    PIECE(g->kv, sizeof(float) * S * d);
    PIECE(g->O, sizeof(float) * S * H * d);
    PIECE(g->Z, sizeof(float) * S * G * R);
    PIECE(g->ctmp, sizeof(float) * S * 2 * d);
    PIECE(g->ctmp2, sizeof(float) * S * 2 * d);
    PIECE(g->itmp, sizeof(float) * S * 2 * di);
    PIECE(g->itmp2, sizeof(float) * S * 2 * di);
    PIECE(g->wts, sizeof(float) * S * Hi);
    PIECE(g->qI, sizeof(float) * S * Hi * di);
    PIECE(g->score, sizeof(float) * S * (size_t)nc4);
    PIECE(g->hidden, sizeof(float) * D);
    PIECE(g->logits, sizeof(float) * V);
    PIECE(g->logit, sizeof(float) * S * E);
    PIECE(g->sel, sizeof(int) * S * K);
    PIECE(g->ri, sizeof(int) * S * k);
    PIECE(g->rw, sizeof(float) * S * k);
    PIECE(g->stage, 2 * stage_n);
    PIECE(g->q8, stage_n);
    PIECE(g->sa, sizeof(float) * (stage_n / 128 + 1));
    PIECE(g->o16, 2 * o16_n);
    PIECE(g->g16, 2 * (size_t)S * k * I);
    PIECE(g->u16, 2 * (size_t)S * k * I);
    PIECE(g->ys16, 2 * (size_t)S * k * D);
    PIECE(g->sg16, 2 * (size_t)S * SI);
    PIECE(g->su16, 2 * (size_t)S * SI);
    PIECE(g->sy16, 2 * (size_t)S * D);
    PIECE(g->rope[0], sizeof(float) * (size_t)g->max_ctx * rd);
    PIECE(g->rope[1], sizeof(float) * (size_t)g->max_ctx * rd);
#undef PIECE
    size_t total = 0;
    for (int i = 0; i < np; i++)
        total += al256(pc[i].bytes);
    for (int l = 0; l < c->num_hidden_layers; l++) {
        int r = c->compress_ratios[l];
        total += al256(sizeof(float) * (size_t)W * d) + 2 * al256(sizeof(float) * carry_n(c, r)) +
                 2 * al256(sizeof(float) * icarry_n(c, r));
        if (r)
            total += al256(sizeof(float) * (size_t)(g->max_ctx / r + 1) * d);
        if (r == 4)
            total += al256(sizeof(float) * (size_t)(g->max_ctx / 4 + 1) * di);
    }
    int rc;
    if ((rc = cu(e, cudaMalloc(&g->state_block, total), "cudaMalloc(state and scratch)")))
        return rc;
    g->sbytes = total;
    char *at = (char *)g->state_block;
    for (int i = 0; i < np; i++) {
        *pc[i].p = at;
        at += al256(pc[i].bytes);
    }
    for (int l = 0; l < c->num_hidden_layers; l++) {
        struct dlayer *L = &g->L[l];
        int r = L->ratio;
        L->ring = (float *)at;
        at += al256(sizeof(float) * (size_t)W * d);
        L->c_kv = (float *)at;
        at += al256(sizeof(float) * carry_n(c, r));
        L->c_sc = (float *)at;
        at += al256(sizeof(float) * carry_n(c, r));
        L->ic_kv = (float *)at;
        at += al256(sizeof(float) * icarry_n(c, r));
        L->ic_sc = (float *)at;
        at += al256(sizeof(float) * icarry_n(c, r));
        L->cache = L->icache = NULL;
        if (r) {
            L->cache = (float *)at;
            at += al256(sizeof(float) * (size_t)(g->max_ctx / r + 1) * d);
        }
        if (r == 4) {
            L->icache = (float *)at;
            at += al256(sizeof(float) * (size_t)(g->max_ctx / 4 + 1) * di);
        }
    }
    // RoPE tables by the CPU's own functions, so that rotations match it exactly
    float *tab = (float *)malloc(sizeof(float) * (size_t)g->max_ctx * rd);
    if (!tab)
        return ctx_err_set(e, CTX_ENOMEM, "cuda engine: out of memory");
    for (int kind = 0; kind < 2 && !rc; kind++) {
        struct inf_rope rp;
        if (kind)
            inf_cpu_rope_init(&rp, rd, c->compress_rope_theta, 1, c->rope_factor, c->original_max_position_embeddings,
                              c->beta_fast, c->beta_slow);
        else
            inf_cpu_rope_init(&rp, rd, c->rope_theta, 0, 1, 0, 0, 0);
        for (long long p = 0; p < g->max_ctx; p++)
            inf_cpu_rope_table(&rp, p, tab + (size_t)p * rd);
        rc = cu(e, cudaMemcpy(g->rope[kind], tab, sizeof(float) * (size_t)g->max_ctx * rd, cudaMemcpyHostToDevice),
                "rope tables");
    }
    free(tab);
    return rc;
}

extern "C" void cuda_engine_reset(struct cuda_engine *g)
{
    const struct inf_config *c = &g->c;
    g->pos = 0;
    for (int l = 0; l < c->num_hidden_layers; l++) {
        struct dlayer *L = &g->L[l];
        size_t rn = (size_t)c->sliding_window * c->head_dim, cn = carry_n(c, L->ratio), in = icarry_n(c, L->ratio);
        cudaMemsetAsync(L->ring, 0, sizeof(float) * rn, g->st);
        if (cn) {
            cudaMemsetAsync(L->c_kv, 0, sizeof(float) * cn, g->st);
            k_fill<<<grid_for(cn, 256), 256, 0, g->st>>>(L->c_sc, cn, -INFINITY);
        }
        if (in) {
            cudaMemsetAsync(L->ic_kv, 0, sizeof(float) * in, g->st);
            k_fill<<<grid_for(in, 256), 256, 0, g->st>>>(L->ic_sc, in, -INFINITY);
        }
    }
    cudaStreamSynchronize(g->st);
}

extern "C" long long cuda_engine_pos(const struct cuda_engine *g) { return g->pos; }

extern "C" void cuda_engine_memory(const struct cuda_engine *g, size_t *weight_bytes, size_t *state_bytes)
{
    if (weight_bytes)
        *weight_bytes = g->wbytes;
    if (state_bytes)
        *state_bytes = g->sbytes;
}

extern "C" void cuda_engine_free(struct cuda_engine *g)
{
    if (!g)
        return;
    if (g->L)
        for (int l = 0; l < g->c.num_hidden_layers; l++)
            cudaFree(g->L[l].etab);
    free(g->L);
    cudaFree(g->state_block);
    cudaFree(g->warena);
    free(g->wmap);
    if (g->st)
        cudaStreamDestroy(g->st);
    if (g->prof_on)
        for (int i = 0; i < PROF_MAX_EV; i++)
            cudaEventDestroy(g->ev[i]);
    free(g);
}

extern "C" int cuda_engine_profile(struct cuda_engine *g, int on, struct ctx_err *e)
{
    if (on && !g->prof_on) {
        for (int i = 0; i < PROF_MAX_EV; i++) {
            cudaError_t rc = cudaEventCreate(&g->ev[i]);
            if (rc != cudaSuccess) {
                while (i--)
                    cudaEventDestroy(g->ev[i]);
                return cu(e, rc, "cudaEventCreate");
            }
        }
        g->prof_on = 1;
    }
    g->prof_active = on && g->prof_on;
    return 0;
}

extern "C" void cuda_engine_profile_get(struct cuda_engine *g, double ms[CUDA_PROF_N], int reset)
{
    memcpy(ms, g->prof_ms, sizeof g->prof_ms);
    if (reset)
        memset(g->prof_ms, 0, sizeof g->prof_ms);
}

extern "C" int cuda_engine_new(const struct inf_weights *w, const struct cuda_engine_opts *o, struct cuda_engine **out,
                               struct ctx_err *e)
{
    *out = NULL;
    if (cuda_device_count() < 1)
        return ctx_err_set(e, CTX_EUNSUPPORTED, "cuda engine: no CUDA device");
    const struct inf_config *c = inf_weights_config(w);
    if (c->expert_dtype != INF_EXPERT_FP4)
        return ctx_err_set(e, CTX_EUNSUPPORTED, "cuda engine: FP8 routed experts (Base checkpoints) are not implemented");
    if (c->head_dim > ATT_MAXD || c->head_dim % 64 || c->hc_mult > 16 || c->n_routed_experts > 256 ||
        c->index_head_dim % 32 || (c->index_head_dim & (c->index_head_dim - 1)) || c->index_head_dim > 1024 ||
        c->qk_rope_head_dim > 128 || c->hidden_size % 128 || c->q_lora_rank % 128 || c->moe_intermediate_size % 128 ||
        (c->o_lora_rank * c->o_groups) % 128 || c->num_experts_per_tok > 16)
        return ctx_err_set(e, CTX_EUNSUPPORTED, "cuda engine: config shape outside what the CUDA forward pass supports");
    struct cuda_engine *g = (struct cuda_engine *)calloc(1, sizeof *g);
    if (!g)
        return ctx_err_set(e, CTX_ENOMEM, "cuda engine: out of memory");
    g->c = *c;
    g->Smax = o && o->max_chunk > 0 ? o->max_chunk : 256;
    g->max_ctx = o && o->max_ctx > 0 ? o->max_ctx : 8192;
    if (g->Smax * c->num_experts_per_tok > 65535) {
        int sm = g->Smax;
        free(g);
        return ctx_err_set(e, CTX_EINVAL, "cuda engine: max_chunk %d too large", sm);
    }
    int rc = cu(e, cudaStreamCreateWithFlags(&g->st, cudaStreamNonBlocking), "cudaStreamCreate");
    if (!rc)
        rc = upload_weights(g, w, e);
    g->L = (struct dlayer *)calloc((size_t)c->num_hidden_layers, sizeof *g->L);
    if (!rc && !g->L)
        rc = ctx_err_set(e, CTX_ENOMEM, "cuda engine: out of memory");
    int D = c->hidden_size, hc = c->hc_mult;
    g->embed = (const uint16_t *)dget(g, &rc, e, INF_DT_BF16, (long long)c->vocab_size * D, "embed.weight");
    g->norm = (const uint16_t *)dget(g, &rc, e, INF_DT_BF16, D, "norm.weight");
    g->head = (const uint16_t *)dget(g, &rc, e, INF_DT_BF16, (long long)c->vocab_size * D, "head.weight");
    g->hch_fn = (const float *)dget(g, &rc, e, INF_DT_F32, (long long)hc * hc * D, "hc_head_fn");
    g->hch_base = (const float *)dget(g, &rc, e, INF_DT_F32, hc, "hc_head_base");
    g->hch_scale = (const float *)dget(g, &rc, e, INF_DT_F32, 1, "hc_head_scale");
    for (int l = 0; l < c->num_hidden_layers && !rc; l++)
        rc = bind_layer(g, w, l, e);
    if (!rc)
        rc = alloc_state(g, e);
    if (rc) {
        cuda_engine_free(g);
        return rc;
    }
    cuda_engine_reset(g);
    *out = g;
    return 0;
}

// ---- the forward pass

// y [S][n] (float, bf16 values) = W x with FP8 weights: x to bf16, 1x128 e4m3 quantisation, GEMV
// (S <= 8) or GEMM, bf16 out.
static int lin_fp8(struct cuda_engine *g, const struct dlin *w, const float *x, int S, float *y, struct ctx_err *e)
{
    size_t nx = (size_t)S * w->k, ny = (size_t)S * w->n;
    k_f2bf<<<grid_for(nx, 256), 256, 0, g->st>>>(x, nx, g->stage);
    int rc = cuda_act_quant(g->stage, S, w->k, g->q8, g->sa, 0, g->st, e);
    if (!rc)
        rc = S <= 8 ? cuda_fp8_gemv(g->q8, g->sa, S, w->w, w->s, w->n, w->k, g->o16, g->st, e)
                    : cuda_fp8_gemm(g->q8, g->sa, S, w->w, w->s, w->n, w->k, g->o16, g->st, e);
    if (rc)
        return rc;
    k_bf2f<<<grid_for(ny, 256), 256, 0, g->st>>>(g->o16, ny, y);
    LAUNCHED("lin_fp8");
    return 0;
}
// The same product on already quantised activations (q8/sa), bf16 out.
static int lin_fp8_q(struct cuda_engine *g, const struct dlin *w, int S, uint16_t *y16, struct ctx_err *e)
{
    return S <= 8 ? cuda_fp8_gemv(g->q8, g->sa, S, w->w, w->s, w->n, w->k, y16, g->st, e)
                  : cuda_fp8_gemm(g->q8, g->sa, S, w->w, w->s, w->n, w->k, y16, g->st, e);
}
static int lin_bf16(struct cuda_engine *g, const struct dlin *w, const float *x, int S, float *y, int out_bf16,
                    struct ctx_err *e)
{
    size_t outs = (size_t)S * w->n;
    k_lin_bf16<<<(unsigned)((outs + 7) / 8), 256, 0, g->st>>>((const uint16_t *)w->w, x, S, w->n, w->k, y, out_bf16);
    LAUNCHED("k_lin_bf16");
    return 0;
}

static int attention(struct cuda_engine *g, int l, int S, struct ctx_err *e)
{
    const struct inf_config *c = &g->c;
    struct dlayer *L = &g->L[l];
    int H = c->num_attention_heads, d = c->head_dim, rd = c->qk_rope_head_dim, Lq = c->q_lora_rank;
    int W = c->sliding_window, G = c->o_groups, R = c->o_lora_rank, di = c->index_head_dim, Hi = c->index_n_heads;
    float eps = (float)c->rms_norm_eps;
    long long pos0 = g->pos;
    const float *rope = g->rope[L->ratio ? 1 : 0];
    const float *a = g->u;
    int rc;
    if ((rc = lin_fp8(g, &L->wq_a, a, S, g->cq, e)) || (rc = lin_fp8(g, &L->wkv, a, S, g->kv, e)))
        return rc;
    if (L->ratio) {
        if ((rc = lin_bf16(g, &L->c_wkv, a, S, g->ctmp, 0, e)) || (rc = lin_bf16(g, &L->c_wgate, a, S, g->ctmp2, 0, e)))
            return rc;
    }
    if (L->ratio == 4) {
        if ((rc = lin_bf16(g, &L->ic_wkv, a, S, g->itmp, 0, e)) || (rc = lin_bf16(g, &L->ic_wgate, a, S, g->itmp2, 0, e)) ||
            (rc = lin_bf16(g, &L->i_wproj, a, S, g->wts, 1, e)))
            return rc;
    }
    k_rmsnorm<<<S, 256, 0, g->st>>>(g->cq, L->q_norm, Lq, eps, g->cq);
    if ((rc = lin_fp8(g, &L->wq_b, g->cq, S, g->Q, e)))
        return rc;
    if (L->ratio == 4 && (rc = lin_fp8(g, &L->i_wq_b, g->cq, S, g->qI, e)))
        return rc;
    prof_mark(g, CUDA_PROF_ATTN_PROJ);
    k_q_prep<<<S * H, 128, sizeof(float) * d, g->st>>>(g->Q, H, d, rd, eps, rope, pos0);
    k_kv_prep<<<S, 256, sizeof(float) * d, g->st>>>(g->kv, d, rd, L->kv_norm, eps, rope, pos0);
    LAUNCHED("attention prep");
    prof_mark(g, CUDA_PROF_ATTN_PREP);
    int K = 0;
    if (L->ratio) {
        float hsc = (float)(1.0 / sqrt((double)di));
        k_compress<<<1, 512, sizeof(float) * d, g->st>>>(g->ctmp, g->ctmp2, S, pos0, L->ratio, d, L->c_ape, L->c_norm,
                                                         eps, 0, L->c_kv, L->c_sc, L->cache, rope, rd, 0.f);
        if (L->ratio == 4)
            k_compress<<<1, 128, sizeof(float) * di, g->st>>>(g->itmp, g->itmp2, S, pos0, 4, di, L->ic_ape, L->ic_norm,
                                                              eps, 1, L->ic_kv, L->ic_sc, L->icache, rope, rd, hsc);
        LAUNCHED("k_compress");
        prof_mark(g, CUDA_PROF_COMPRESS);
        if (L->ratio == 4) {
            k_iq_prep<<<S * Hi, 128, sizeof(float) * di, g->st>>>(g->qI, Hi, di, rd, rope, pos0, hsc);
            float wscale = (float)(pow((double)di, -0.5) * pow((double)Hi, -0.5));
            k_scale_bf16<<<grid_for((size_t)S * Hi, 256), 256, 0, g->st>>>(g->wts, (size_t)S * Hi, wscale);
            K = c->index_topk;
            long long nmax = (pos0 + S) / 4;
            if (nmax > 0) {
                dim3 grid((unsigned)((nmax + 7) / 8), (unsigned)S);
                k_idx_score<<<grid, 256, 0, g->st>>>(g->qI, g->wts, L->icache, Hi, di, pos0, g->score, g->score_ld);
            }
            int cap = nmax < 8192 ? (int)nmax : 8192;
            k_topk<<<S, 512, sizeof(float) * (size_t)cap, g->st>>>(g->score, g->score_ld, pos0, K, g->sel, cap);
            LAUNCHED("indexer");
            prof_mark(g, CUDA_PROF_INDEXER);
        }
    }
    dim3 agrid((unsigned)(S * H), (unsigned)((d + ATT_SLICE - 1) / ATT_SLICE));
    k_attn<<<agrid, ATT_THREADS, 0, g->st>>>(g->Q, g->kv, L->ring, L->cache, g->sel, H, d, W, L->ratio, K, pos0, L->sink,
                                            1.0f / sqrtf((float)d), rope, rd, g->O);
    int nring = S < W ? S : W;
    k_ring_update<<<nring, 256, 0, g->st>>>(g->kv, L->ring, S, pos0, W, d);
    prof_mark(g, CUDA_PROF_ATTN_CORE);
    int gd = H * d / G;
    size_t outs = (size_t)S * G * R;
    k_wo_a<<<(unsigned)((outs + 7) / 8), 256, 0, g->st>>>(L->wo_a.w, L->wo_a.s, g->O, S, G, R, gd, H * d, g->Z);
    LAUNCHED("attention core");
    rc = lin_fp8(g, &L->wo_b, g->Z, S, g->f, e);
    prof_mark(g, CUDA_PROF_ATTN_OUT);
    return rc;
}

static int moe(struct cuda_engine *g, int l, int S, struct ctx_err *e)
{
    const struct inf_config *c = &g->c;
    struct dlayer *L = &g->L[l];
    int E = c->n_routed_experts, k = c->num_experts_per_tok, D = c->hidden_size, I = c->moe_intermediate_size;
    int SI = I * c->n_shared_experts, rc;
    float lim = (float)c->swiglu_limit;
    if ((rc = lin_bf16(g, &L->gate, g->u, S, g->logit, 0, e)))
        return rc;
    int func = c->scoring_func == INF_SCORE_SOFTMAX ? 0 : c->scoring_func == INF_SCORE_SIGMOID ? 1 : 2;
    k_route<<<(S + 63) / 64, 64, 0, g->st>>>(g->logit, S, E, k, func, L->hash ? NULL : L->gate_bias,
                                             L->hash ? L->tid2eid : NULL, g->tok, (float)c->routed_scaling_factor,
                                             g->ri, g->rw);
    size_t nx = (size_t)S * D;
    k_f2bf<<<grid_for(nx, 256), 256, 0, g->st>>>(g->u, nx, g->stage);
    LAUNCHED("moe routing");
    if ((rc = cuda_act_quant(g->stage, S, D, g->q8, g->sa, 0, g->st, e)))
        return rc;
    prof_mark(g, CUDA_PROF_MOE_ROUTE);
    const uint8_t *const *t = L->etab;
    if ((rc = cuda_fp4_gemv_grouped(g->q8, g->sa, k, S * k, g->ri, t, t + E, I, D, g->g16, g->st, e)) ||
        (rc = cuda_fp4_gemv_grouped(g->q8, g->sa, k, S * k, g->ri, t + 4 * E, t + 5 * E, I, D, g->u16, g->st, e)) ||
        (rc = lin_fp8_q(g, &L->sw1, S, g->sg16, e)) || (rc = lin_fp8_q(g, &L->sw3, S, g->su16, e)))
        return rc;
    k_swiglu<<<grid_for((size_t)S * k * I, 256), 256, 0, g->st>>>(g->g16, g->u16, S * k, I, g->rw, lim);
    k_swiglu<<<grid_for((size_t)S * SI, 256), 256, 0, g->st>>>(g->sg16, g->su16, S, SI, NULL, lim);
    LAUNCHED("swiglu");
    if ((rc = cuda_act_quant(g->g16, S * k, I, g->q8, g->sa, 0, g->st, e)) ||
        (rc = cuda_fp4_gemv_grouped(g->q8, g->sa, 1, S * k, g->ri, t + 2 * E, t + 3 * E, D, I, g->ys16, g->st, e)) ||
        (rc = cuda_act_quant(g->sg16, S, SI, g->q8, g->sa, 0, g->st, e)) || (rc = lin_fp8_q(g, &L->sw2, S, g->sy16, e)))
        return rc;
    prof_mark(g, CUDA_PROF_MOE_EXPERTS);
    k_moe_combine<<<grid_for((size_t)S * D, 256), 256, 0, g->st>>>(g->ys16, g->ri, g->sy16, S, k, D, g->f);
    LAUNCHED("moe combine");
    prof_mark(g, CUDA_PROF_MOE_COMBINE);
    return 0;
}

static int block_site(struct cuda_engine *g, int l, int site, int S, struct ctx_err *e)
{
    const struct inf_config *c = &g->c;
    struct dlayer *L = &g->L[l];
    int hc = c->hc_mult, D = c->hidden_size, nm = (2 + hc) * hc, rc;
    float eps = (float)c->rms_norm_eps;
    k_hc_mix<<<dim3(nm, S), 256, 0, g->st>>>(g->X, L->hc_fn[site], hc * D, nm, eps, g->mixes);
    k_hc_pre<<<S, 256, 0, g->st>>>(g->mixes, L->hc_scale[site], L->hc_base[site], hc, c->hc_sinkhorn_iters,
                                   (float)c->hc_eps, g->X, D, g->post, g->comb, g->u);
    k_rmsnorm<<<S, 256, 0, g->st>>>(g->u, site ? L->ffn_norm : L->attn_norm, D, eps, g->u);
    LAUNCHED("mhc pre");
    prof_mark(g, CUDA_PROF_HC);
    if ((rc = site ? moe(g, l, S, e) : attention(g, l, S, e)))
        return rc;
    k_hc_post<<<grid_for((size_t)S * D, 256), 256, 0, g->st>>>(g->X, g->f, g->post, g->comb, S, hc, D);
    LAUNCHED("mhc post");
    prof_mark(g, CUDA_PROF_HC);
    return 0;
}

extern "C" int cuda_engine_forward(struct cuda_engine *g, const int *tokens, int S, float *logits, struct ctx_err *e)
{
    return cuda_engine_forward_hook(g, tokens, S, logits, NULL, NULL, e);
}

extern "C" int cuda_engine_forward_hook(struct cuda_engine *g, const int *tokens, int S, float *logits,
                                        cuda_engine_hook hook, void *ud, struct ctx_err *e)
{
    const struct inf_config *c = &g->c;
    if (S <= 0 || S > g->Smax)
        return ctx_err_set(e, CTX_EINVAL, "cuda engine: chunk of %d tokens (1..%d)", S, g->Smax);
    if (g->pos + S > g->max_ctx)
        return ctx_err_set(e, CTX_ERANGE, "cuda engine: position %lld + %d beyond the engine's context of %lld", g->pos,
                           S, g->max_ctx);
    for (int s = 0; s < S; s++)
        if (tokens[s] < 0 || tokens[s] >= c->vocab_size)
            return ctx_err_set(e, CTX_EINVAL, "cuda engine: token %d at chunk offset %d outside the vocabulary",
                               tokens[s], s);
    int rc, hc = c->hc_mult, D = c->hidden_size;
    if ((rc = cu(e, cudaMemcpyAsync(g->tok, tokens, sizeof(int) * S, cudaMemcpyHostToDevice, g->st), "tokens")))
        return rc;
    if (g->prof_active) { // queue everything behind a busy kernel: the events then time GPU work, not launch gaps
        g->nev = 0;
        k_spin<<<1, 1, 0, g->st>>>(20000000LL);
        prof_mark(g, -1);
    }
    k_embed<<<S, 256, 0, g->st>>>(g->tok, g->embed, hc, D, g->X);
    LAUNCHED("k_embed");
    prof_mark(g, CUDA_PROF_HEAD);
    float *hx = NULL;
    size_t xn = (size_t)S * hc * D;
    if (hook && !(hx = (float *)malloc(sizeof(float) * xn)))
        return ctx_err_set(e, CTX_ENOMEM, "cuda engine: out of memory");
    for (int l = 0; l < c->num_hidden_layers; l++) {
        if ((rc = block_site(g, l, 0, S, e)) || (rc = block_site(g, l, 1, S, e))) {
            free(hx);
            return rc;
        }
        if (hook) {
            if ((rc = cu(e, cudaMemcpyAsync(hx, g->X, sizeof(float) * xn, cudaMemcpyDeviceToHost, g->st), "hook")) ||
                (rc = cu(e, cudaStreamSynchronize(g->st), "hook"))) {
                free(hx);
                return rc;
            }
            hook(ud, l, hx, S, g->pos);
        }
    }
    free(hx);
    if (logits) {
        k_hc_head<<<1, 256, 0, g->st>>>(g->X + (size_t)(S - 1) * hc * D, g->hch_fn, g->hch_base, g->hch_scale, hc, D,
                                        (float)c->rms_norm_eps, (float)c->hc_eps, g->norm, g->hidden);
        struct dlin head = {c->vocab_size, D, (const uint8_t *)g->head, NULL};
        if ((rc = lin_bf16(g, &head, g->hidden, 1, g->logits, 0, e)))
            return rc;
        prof_mark(g, CUDA_PROF_HEAD);
        if ((rc = cu(e, cudaMemcpyAsync(logits, g->logits, sizeof(float) * c->vocab_size, cudaMemcpyDeviceToHost, g->st),
                     "logits")))
            return rc;
    }
    if ((rc = cu(e, cudaStreamSynchronize(g->st), "forward")))
        return rc;
    for (int i = 1; g->prof_active && i < g->nev; i++) {
        float ms = 0.f;
        cudaEventElapsedTime(&ms, g->ev[i - 1], g->ev[i]);
        g->prof_ms[g->evstage[i]] += ms;
    }
    g->pos += S;
    return 0;
}

extern "C" int cuda_engine_prefill(struct cuda_engine *g, const int *tokens, int n, float *logits, struct ctx_err *e)
{
    if (n <= 0)
        return ctx_err_set(e, CTX_EINVAL, "cuda engine: empty prefill");
    for (int p = 0; p < n; p += g->Smax) {
        int S = n - p < g->Smax ? n - p : g->Smax;
        int rc = cuda_engine_forward(g, tokens + p, S, p + S == n ? logits : NULL, e);
        if (rc)
            return rc;
    }
    return 0;
}

// ---- state transfer

static int state_shape_check(const struct cuda_engine *g, const struct inf_state *st, struct ctx_err *e)
{
    const struct inf_config *a = &g->c, *b = &st->cfg;
    if (a->num_hidden_layers != b->num_hidden_layers || a->head_dim != b->head_dim ||
        a->sliding_window != b->sliding_window || a->index_head_dim != b->index_head_dim ||
        memcmp(a->compress_ratios, b->compress_ratios, sizeof(int) * (size_t)a->num_hidden_layers))
        return ctx_err_set(e, CTX_EINVAL, "cuda engine: the host state's config has another shape");
    return 0;
}

extern "C" int cuda_engine_state_download(struct cuda_engine *g, struct inf_state *st, struct ctx_err *e)
{
    const struct inf_config *c = &g->c;
    int rc;
    if ((rc = state_shape_check(g, st, e)))
        return rc;
    size_t rn = (size_t)c->sliding_window * c->head_dim;
    for (int l = 0; l < c->num_hidden_layers; l++) {
        struct dlayer *L = &g->L[l];
        struct inf_layer_state *ls = &st->layers[l];
        long long n = L->ratio ? g->pos / L->ratio : 0;
        if (n > ls->n_cache && (rc = inf_state_reserve(st, l, n - ls->n_cache, e)))
            return rc;
        ls->n_cache = n;
        size_t cn = carry_n(c, L->ratio), in = icarry_n(c, L->ratio);
        if ((rc = cu(e, cudaMemcpy(ls->ring, L->ring, sizeof(float) * rn, cudaMemcpyDeviceToHost), "state ring")))
            return rc;
        if (cn && ((rc = cu(e, cudaMemcpy(ls->c_kv, L->c_kv, sizeof(float) * cn, cudaMemcpyDeviceToHost), "state carry")) ||
                   (rc = cu(e, cudaMemcpy(ls->c_sc, L->c_sc, sizeof(float) * cn, cudaMemcpyDeviceToHost), "state carry"))))
            return rc;
        if (in && ((rc = cu(e, cudaMemcpy(ls->ic_kv, L->ic_kv, sizeof(float) * in, cudaMemcpyDeviceToHost), "state carry")) ||
                   (rc = cu(e, cudaMemcpy(ls->ic_sc, L->ic_sc, sizeof(float) * in, cudaMemcpyDeviceToHost), "state carry"))))
            return rc;
        if (n && (rc = cu(e, cudaMemcpy(ls->cache, L->cache, sizeof(float) * (size_t)n * c->head_dim, cudaMemcpyDeviceToHost),
                          "state cache")))
            return rc;
        if (n && L->ratio == 4 &&
            (rc = cu(e, cudaMemcpy(ls->icache, L->icache, sizeof(float) * (size_t)n * c->index_head_dim,
                                   cudaMemcpyDeviceToHost),
                     "state indexer keys")))
            return rc;
    }
    st->pos = g->pos;
    return 0;
}

extern "C" int cuda_engine_state_upload(struct cuda_engine *g, const struct inf_state *st, struct ctx_err *e)
{
    const struct inf_config *c = &g->c;
    int rc;
    if ((rc = state_shape_check(g, st, e)))
        return rc;
    if (st->pos < 0 || st->pos > g->max_ctx)
        return ctx_err_set(e, CTX_ERANGE, "cuda engine: state at position %lld beyond the engine's context of %lld",
                           st->pos, g->max_ctx);
    for (int l = 0; l < c->num_hidden_layers; l++)
        if (st->layers[l].ratio && st->layers[l].n_cache != st->pos / st->layers[l].ratio)
            return ctx_err_set(e, CTX_EINVAL, "cuda engine: layer %d holds %lld compressed entries at position %lld", l,
                               st->layers[l].n_cache, st->pos);
    size_t rn = (size_t)c->sliding_window * c->head_dim;
    for (int l = 0; l < c->num_hidden_layers; l++) {
        struct dlayer *L = &g->L[l];
        const struct inf_layer_state *ls = &st->layers[l];
        long long n = ls->n_cache;
        size_t cn = carry_n(c, L->ratio), in = icarry_n(c, L->ratio);
        if ((rc = cu(e, cudaMemcpy(L->ring, ls->ring, sizeof(float) * rn, cudaMemcpyHostToDevice), "state ring")))
            return rc;
        if (cn && ((rc = cu(e, cudaMemcpy(L->c_kv, ls->c_kv, sizeof(float) * cn, cudaMemcpyHostToDevice), "state carry")) ||
                   (rc = cu(e, cudaMemcpy(L->c_sc, ls->c_sc, sizeof(float) * cn, cudaMemcpyHostToDevice), "state carry"))))
            return rc;
        if (in && ((rc = cu(e, cudaMemcpy(L->ic_kv, ls->ic_kv, sizeof(float) * in, cudaMemcpyHostToDevice), "state carry")) ||
                   (rc = cu(e, cudaMemcpy(L->ic_sc, ls->ic_sc, sizeof(float) * in, cudaMemcpyHostToDevice), "state carry"))))
            return rc;
        if (n && (rc = cu(e, cudaMemcpy(L->cache, ls->cache, sizeof(float) * (size_t)n * c->head_dim, cudaMemcpyHostToDevice),
                          "state cache")))
            return rc;
        if (n && L->ratio == 4 &&
            (rc = cu(e, cudaMemcpy(L->icache, ls->icache, sizeof(float) * (size_t)n * c->index_head_dim,
                                   cudaMemcpyHostToDevice),
                     "state indexer keys")))
            return rc;
    }
    g->pos = st->pos;
    return 0;
}
