// The V4 forward pass on one CUDA device; see cuda_engine.h. Follows inference/model.c operation by
// operation (the same rounding points, the same entry orders); the products of FP8/FP4 weights are
// kernels/gemm.h's. Built with -fmad=false (kernels/meson.build) so that a*b+c rounds twice, as the
// CPU's scalar code does; where the CPU fuses (the attention's P.V axpy) this file calls fmaf.
//
// Kernels read the position from device memory (written with the tokens by one copy), so a decode
// step is captured once as a CUDA graph and replayed. Long contexts: the indexer's scores run on
// bf16 tensor cores (exact per 32-dim block) and its top-k is a two-stage radix select (O(n) per
// query); attention splits a
// query's entries into runs that start from the reference's running max, so every bf16 probability
// is the reference's. Matrices that share an input are concatenated at upload (wq_a|wkv, the
// shared expert's w1|w3, the compressors' bf16 products) and the routed w1 and w3 run as one grouped
// product, to cut launches.
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>
#include <cooperative_groups.h>
#include <atomic>
#include <thread>
#include <vector>

#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cuda_common.cuh"
#include "cuda_engine.h"
#include "cuda_gen.h"
#include "cuda_kvpack.h"
#include "gemm.h"
#include "moe_gemm.h"
#include "wgmma.cuh"

extern "C" {
#include "cpu/kernels.h" // inf_cpu_rope_init / inf_cpu_rope_table: the host computes the RoPE tables
#include "kvpack.h"
}

namespace {

// ---------------------------------------------------------------- device helpers

// f rounded to bf16 (nearest even), as a float; NaN as it came. cvt.rn.bf16.f32 is one instruction where
// the integer form (u += 0x7fff + lsb, masked) took five and a branch: the same bits for every non-NaN f
// (subnormals, overflow to infinity included), and the select keeps a NaN's payload as that form did.
// Since 2026-11-30's twenty-fourth session; the small prefill kernels were bound by their issue slots.
__device__ __forceinline__ float bf16r(float f)
{
    const float r = __uint_as_float((uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(f)) << 16);
    return f != f ? f : r;
}
__device__ __forceinline__ float bf16ld(uint16_t b) { return __uint_as_float((uint32_t)b << 16); }
__device__ __forceinline__ uint16_t bf16bits(float f) { return (uint16_t)(__float_as_uint(bf16r(f)) >> 16); }
// The residual streams X are bf16 values (spec 4.2: stored in BF16). Prefill chunks keep them as their bf16
// bits between the mHC kernels (XT = uint16_t, since 2026-12-01: half the bytes read and written), decode
// and the rest as floats (XT = float); these read and write either form.
__device__ __forceinline__ float xld(const float *X, size_t i) { return X[i]; }
__device__ __forceinline__ float xld(const uint16_t *X, size_t i) { return bf16ld(X[i]); }
__device__ __forceinline__ float xldcg(const float *X, size_t i) { return __ldcg(X + i); }
__device__ __forceinline__ float xldcg(const uint16_t *X, size_t i) { return bf16ld(__ldcg(X + i)); }
// four consecutive values from element 4 g (16 or 8 bytes aligned)
template <int CG> __device__ __forceinline__ float4 xld4(const float *X, size_t g)
{
    return CG ? __ldcg(reinterpret_cast<const float4 *>(X) + g) : __ldg(reinterpret_cast<const float4 *>(X) + g);
}
template <int CG> __device__ __forceinline__ float4 xld4(const uint16_t *X, size_t g)
{
    const uint2 v = CG ? __ldcg(reinterpret_cast<const uint2 *>(X) + g) : __ldg(reinterpret_cast<const uint2 *>(X) + g);
    return make_float4(__uint_as_float(v.x << 16), __uint_as_float(v.x & 0xffff0000u), __uint_as_float(v.y << 16),
                       __uint_as_float(v.y & 0xffff0000u));
}
// A prefill forward's streams to bf16 bits and back (both exact: the values are bf16), n4 groups of 4.
__global__ void k_x_narrow(const float *X, size_t n4, uint16_t *X16)
{
    pdl_begin();
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n4; i += (size_t)gridDim.x * blockDim.x) {
        const float4 v = reinterpret_cast<const float4 *>(X)[i];
        reinterpret_cast<uint2 *>(X16)[i] = make_uint2((__float_as_uint(v.x) >> 16) | (__float_as_uint(v.y) & 0xffff0000u),
                                                       (__float_as_uint(v.z) >> 16) | (__float_as_uint(v.w) & 0xffff0000u));
    }
}
__global__ void k_x_widen(const uint16_t *X16, size_t n4, float *X)
{
    pdl_begin();
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n4; i += (size_t)gridDim.x * blockDim.x) {
        const uint2 v = reinterpret_cast<const uint2 *>(X16)[i];
        reinterpret_cast<float4 *>(X)[i] = make_float4(__uint_as_float(v.x << 16), __uint_as_float(v.x & 0xffff0000u),
                                                       __uint_as_float(v.y << 16), __uint_as_float(v.y & 0xffff0000u));
    }
}

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
// The QDQs' power-of-two scale s = 2^(code - 127), code = the biased exponent of amax * inv rounded up,
// and *rs = 1 / s, exact: code is in [1, 254] for the finite amax >= the callers' floors (both powers
// normal), so x * *rs is x / s rounded the same way (both the correctly rounded x * 2^-(code - 127));
// code 255 / 256 (an infinite or NaN amax): s = inf, *rs = 0, as x / inf.
__device__ __forceinline__ float pow2_scale_rcp(float amax, float inv, float *rs)
{
    const uint32_t u = __float_as_uint(amax * inv);
    const int code = (int)((u >> 23) & 255u) + ((u & 0x7fffffu) != 0);
    if (code >= 255) {
        *rs = 0.f;
        return __int_as_float(0x7f800000);
    }
    *rs = __int_as_float((254 - code) << 23);
    return __int_as_float(code << 23);
}
// v (|v| <= 6) to the nearest e2m1 value 0, .5, 1, 1.5, 2, 3, 4, 6, ties to the even code: i counts the
// midpoints .25 .75 1.25 1.75 2.5 3.5 5 below |v|, a tie at an odd one goes up. Branch-free (the loop
// over the midpoints and the table it read were most of k_iq_prep_w's issue); NaN gives +-0 as before.
__device__ __forceinline__ float e2m1_round(float v)
{
    const float a = fabsf(v);
    int i = (a > .25f) + (a > .75f) + (a > 1.25f) + (a > 1.75f) + (a > 2.5f) + (a > 3.5f) + (a > 5.f);
    i += (a == .75f) | (a == 1.75f) | (a == 3.5f);
    const float r = i < 4 ? 0.5f * (float)i : i < 6 ? (float)(i - 2) : (float)(2 * i - 8);
    return signbit(v) ? -r : r;
}

__device__ __forceinline__ float warp_sum(float v)
{
    for (int o = 16; o; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
// a / b, with *r = a % b unless r is NULL, for a >= 0, b > 0: a shift for a power-of-two b, 32-bit arithmetic where a fits
// (every index of the engine's launches), 64-bit otherwise. A 64-bit division by a run-time value is a call
// of ~70 instructions: in the small prefill kernels that derive (row, block) from a thread index it took
// more issue slots than their work (twenty-fourth session). Uniform branches.
__device__ __forceinline__ long long divmod_idx(long long a, int b, int *r)
{
    if (!(b & (b - 1))) {
        if (r)
            *r = (int)(a & (b - 1));
        return a >> (__ffs(b) - 1);
    }
    if (!(a >> 32)) {
        const unsigned q = (unsigned)a / (unsigned)b;
        if (r)
            *r = (int)((unsigned)a - q * (unsigned)b);
        return q;
    }
    if (r)
        *r = (int)(a % b);
    return a / b;
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
    float rs, s = pow2_scale_rcp(amax, 1.0f / 448.0f, &rs);
    float q0 = fminf(fmaxf(v0 * rs, -448.f), 448.f), q1 = fminf(fmaxf(v1 * rs, -448.f), 448.f);
    x[lane] = bf16r(e4m3_round(q0) * s);
    x[lane + 32] = bf16r(e4m3_round(q1) * s);
}
// The same to e2m1 over 32 values (the indexer QAT).
__device__ __forceinline__ float warp_fp4_qdq32v(float v) // lane l's value l of the block, in registers
{
    float amax = warp_max(fabsf(v));
    const float floor_ = 6.0f * 0x1p-126f;
    if (amax < floor_)
        amax = floor_;
    float rs, s = pow2_scale_rcp(amax, 1.0f / 6.0f, &rs);
    float q = fminf(fmaxf(v * rs, -6.f), 6.f);
    return bf16r(e2m1_round(q) * s);
}
__device__ void warp_fp4_qdq32(float *x)
{
    int lane = threadIdx.x & 31;
    x[lane] = warp_fp4_qdq32v(x[lane]);
}

// The 8-bit form of FP4-QDQ'd indexer rows (k_idx_score_i8 below says why and how it is used).
#define IDX_I8_EXPMAX 100 // exponents are kept in [-128, IDX_I8_EXPMAX]: 2^E * 1.5 * 2^23 stays finite

__device__ __forceinline__ float pow2i(int E) // 2^E for E in [-149, 127]
{
    return E >= -126 ? __int_as_float((E + 127) << 23) : __int_as_float(1 << (E + 149));
}
// The exponent of the lowest set bit of |v| (v = odd * 2^result); INT_MAX for 0, inf and NaN.
__device__ __forceinline__ int f32_lowexp(float v)
{
    uint32_t u = __float_as_uint(v) & 0x7fffffffu, ef = u >> 23, m = u & 0x7fffffu;
    if (!u || ef == 255)
        return 0x7fffffff;
    uint32_t sig = ef ? (m | 0x800000u) : m;
    return (ef ? (int)ef - 150 : -149) + __ffs((int)sig) - 1;
}
// |v| / 2^E when that is an integer <= 127, else -1.
__device__ __forceinline__ int f32_int_at(float v, int E)
{
    uint32_t u = __float_as_uint(v) & 0x7fffffffu, ef = u >> 23;
    if (!u)
        return 0;
    if (ef == 255)
        return -1;
    uint32_t sig = ef ? ((u & 0x7fffffu) | 0x800000u) : u;
    int sh = E - (ef ? (int)ef - 150 : -149); // |v| / 2^E = sig * 2^-sh
    if (sh > 0) {
        if (sh >= 32 || (sig & ((1u << sh) - 1u)))
            return -1;
        sig >>= sh;
    } else {
        if (-sh >= 8)
            return -1;
        sig <<= -sh;
    }
    return sig <= 127u ? (int)sig : -1;
}
// One warp writes the 8-bit form of x[0..di) (di = 32, 64 or 128; any memory) to q[0..di) and *qx:
// lane l takes values l + 32 j, so block j is value j of every lane. Byte j of *qx is block j's
// exponent (the bytes past di / 32 repeat byte 0, so "all four bytes equal" means common form).
__device__ void warp_i8_pack(const float *x, int di, int8_t *q, uint32_t *qx)
{
    const int lane = threadIdx.x & 31, nb = di >> 5;
    float v[4];
    int lo[4], Lc = 0x7fffffff;
#pragma unroll
    for (int j = 0; j < 4; j++) {
        v[j] = j < nb ? x[32 * j + lane] : 0.f;
        lo[j] = __reduce_min_sync(0xffffffffu, f32_lowexp(v[j]));
        Lc = min(Lc, lo[j]);
    }
    if (Lc == 0x7fffffff)
        Lc = 0; // all zero
    bool fits = Lc >= -128 && Lc <= IDX_I8_EXPMAX;
#pragma unroll
    for (int j = 0; j < 4; j++)
        fits = fits && f32_int_at(v[j], Lc) >= 0;
    fits = __all_sync(0xffffffffu, fits);
    int E[4];
#pragma unroll
    for (int j = 0; j < 4; j++) {
        int Ej = fits ? Lc : (lo[j] == 0x7fffffff ? Lc : lo[j]);
        bool ok = fits || __all_sync(0xffffffffu, Ej >= -128 && Ej <= IDX_I8_EXPMAX && f32_int_at(v[j], Ej) >= 0);
        if (!ok) { // off the FP4 grid: the smallest exponent that holds the block's largest value, rounded
            float hi = warp_max(fabsf(v[j]));
            int ex;
            frexpf(hi, &ex); // hi < 2^ex
            Ej = ex - 7;
            if (hi > ldexpf(127.f, Ej))
                Ej++;
            Ej = max(-128, min(IDX_I8_EXPMAX, Ej));
        }
        E[j] = Ej;
        if (j < nb) {
            int iv = f32_int_at(v[j], Ej);
            if (iv < 0) // rounded (off-grid values only)
                iv = (int)fminf(rintf(ldexpf(fabsf(v[j]), -Ej)), 127.f);
            q[32 * j + lane] = (int8_t)(v[j] < 0.f ? -iv : iv);
        }
    }
    if (lane == 0) {
        uint32_t w = 0;
#pragma unroll
        for (int j = 0; j < 4; j++)
            w |= (uint32_t)(uint8_t)(int8_t)(j < nb ? E[j] : E[0]) << (8 * j);
        *qx = w;
    }
}
// Interleaved RoPE on x[0..rd) by the table row cs (cos, sin pairs); inverse rotates back.
// pre (optional): this thread's first pair's table entries (pair threadIdx.x: cs[2 t], cs[2 t + 1]), loaded
// earlier by the caller so that their latency hides under other work; the same values, so the same bits.
__device__ void rope_pairs(float *x, const float *cs, int rd, int inverse, const float2 *pre = nullptr)
{
    for (int i = threadIdx.x; i < rd / 2; i += blockDim.x) {
        const bool first = pre && i == (int)threadIdx.x;
        float c = first ? pre->x : cs[2 * i], s = first ? pre->y : cs[2 * i + 1];
        if (inverse)
            s = -s;
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

__global__ void k_bf2f(const uint16_t *x, size_t n, float *y)
{
    pdl_begin();
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] = bf16ld(x[i]);
}
// cuBLASLt's prefill products (struct cuda_engine's lt): the activation scales sa [S][kb] transposed
// into sat [kb][mp] (padding tokens S..mp-1 get 0), and the transposed product yt [n][ldy] (bf16)
// written as rows: with y16 bf16 [S][n], otherwise floats, outputs [0, n1) to y1 [S][n1] and the rest
// to y2 [S][n - n1] (k_bf2f's and k_bf2f_split's values: bf16 widened).
__global__ void k_lt_sat(const float *sa, int S, int kb, int mp, float *sat)
{
    pdl_begin();
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)kb * mp)
        return;
    const int b = (int)(i / mp), t = (int)(i % mp);
    sat[i] = t < S ? sa[(size_t)t * kb + b] : 0.f;
}
// Tiles of 128 tokens x 32 outputs. Each thread reads four tokens of an output at once where the
// padded rows allow it (ldy % 4 == 0, every V4 shape: a warp's loads are 256 bytes of a row, where the
// one-token reads until 2026-11-30's twentieth session were 64), then writes one output of a token
// (coalesced along the outputs). Rows of the tile are 65 words apart: the transposed reads hit
// distinct banks.
#define LTO_TOK 128
#define LTO_LD 130
__global__ void k_lt_out(const uint16_t *__restrict__ yt, int ldy, int S, int n, int n1, float *y1,
                         float *y2, uint16_t *y16)
{
    __shared__ __align__(16) uint16_t tile[32][LTO_LD];
    const int i0 = blockIdx.x * LTO_TOK, j0 = blockIdx.y * 32, x = threadIdx.x;
    for (int r = threadIdx.y; r < 32; r += 8) { // output j0 + r, tokens i0 + 4 x ..
        const int i = i0 + 4 * x, j = j0 + r;
        uint2 v = make_uint2(0, 0);
        if (i < S && j < n) {
            const uint16_t *src = yt + (size_t)j * ldy + i;
            if (!(ldy & 3)) { // i + 3 < ldy: within the padded row
                v = *reinterpret_cast<const uint2 *>(src);
            } else {
                uint16_t u[4];
                for (int k = 0; k < 4; k++)
                    u[k] = i + k < S ? src[k] : 0;
                v = make_uint2(u[0] | (uint32_t)u[1] << 16, u[2] | (uint32_t)u[3] << 16);
            }
        }
        uint32_t *t = reinterpret_cast<uint32_t *>(&tile[r][4 * x]);
        t[0] = v.x;
        t[1] = v.y;
    }
    __syncthreads();
    for (int r = threadIdx.y; r < LTO_TOK; r += 8) { // token i0 + r, outputs j0 + x
        const int i = i0 + r, j = j0 + x;
        if (i >= S || j >= n)
            continue;
        const uint16_t v = tile[x][r];
        if (y16)
            y16[(size_t)i * n + j] = v;
        else if (j < n1)
            y1[(size_t)i * n1 + j] = bf16ld(v);
        else
            y2[(size_t)i * (n - n1) + (j - n1)] = bf16ld(v);
    }
}
// The rows form's product (cuda_lt_ctx_run_rows: o bf16 [S][n], ld n) widened to floats as k_lt_out writes
// them: outputs [0, n1) to y1 [S][n1], the rest to y2 [S][n - n1]. 8 outputs a thread by one 16-byte load
// and two 16-byte stores (n and n1 multiples of 8, the buffers 16-byte aligned); grid (ceil(n / 2048),
// rows), the rows looped past gridDim.y.
__global__ void k_lt_rows_f32(const uint16_t *__restrict__ o, int S, int n, int n1, float *y1, float *y2)
{
    pdl_begin();
    const int j = 8 * (blockIdx.x * blockDim.x + threadIdx.x);
    if (j >= n)
        return;
    for (int s = blockIdx.y; s < S; s += gridDim.y) {
        const uint4 v = *reinterpret_cast<const uint4 *>(o + (size_t)s * n + j);
        float *dst = j < n1 ? y1 + (size_t)s * n1 + j : y2 + (size_t)s * (n - n1) + (j - n1);
        reinterpret_cast<float4 *>(dst)[0] = make_float4(__uint_as_float(v.x << 16), __uint_as_float(v.x & 0xffff0000u),
                                                         __uint_as_float(v.y << 16), __uint_as_float(v.y & 0xffff0000u));
        reinterpret_cast<float4 *>(dst)[1] = make_float4(__uint_as_float(v.z << 16), __uint_as_float(v.z & 0xffff0000u),
                                                         __uint_as_float(v.w << 16), __uint_as_float(v.w & 0xffff0000u));
    }
}
// FP8 weights W [rows][cols] with e8m0 128x128 tile scales -> bf16 [rows][cols] of their values (exact:
// e4m3 times a power of two is a bf16 value), 8 a thread.
__global__ void k_deq_fp8_bf16(const uint8_t *W, const uint8_t *scale, int rows, int cols, uint16_t *out)
{
    pdl_begin();
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)rows * cols / 8)
        return;
    const int r = (int)(i * 8 / cols), c = (int)(i * 8 % cols);
    const float sc = e8m0_to_float(scale[(size_t)(r >> 7) * (cols >> 7) + (c >> 7)]);
    const uint2 w = reinterpret_cast<const uint2 *>(W)[i];
    const uint32_t b[2] = {w.x, w.y};
    uint32_t o[4];
#pragma unroll
    for (int j = 0; j < 4; j++) {
        const uint32_t lo = (b[j >> 1] >> (16 * (j & 1))) & 0xffu, hi = (b[j >> 1] >> (16 * (j & 1) + 8)) & 0xffu;
        const float flo = __half2float(__half(__nv_cvt_fp8_to_halfraw((__nv_fp8_storage_t)lo, __NV_E4M3))) * sc;
        const float fhi = __half2float(__half(__nv_cvt_fp8_to_halfraw((__nv_fp8_storage_t)hi, __NV_E4M3))) * sc;
        o[j] = bf16bits(flo) | (uint32_t)bf16bits(fhi) << 16;
    }
    reinterpret_cast<uint4 *>(out)[i] = make_uint4(o[0], o[1], o[2], o[3]);
}
__global__ void k_fill(float *x, size_t n, float v)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] = v;
}
__global__ void k_scale_bf16(float *x, size_t n, float sc)
{
    pdl_begin();
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] = bf16r(x[i] * sc);
}

__global__ void k_embed(const int *tok, const uint16_t *embed, int hc, int D, float *X)
{
    pdl_begin();
    int s = blockIdx.x;
    const uint16_t *row = embed + (size_t)tok[s] * D;
    for (int k = 0; k < hc; k++)
        for (int i = threadIdx.x; i < D; i += blockDim.x)
            X[((size_t)s * hc + k) * D + i] = bf16ld(row[i]);
}

// One piece of the undo record (struct cuda_engine's undo_tab) for position p: `rw` floats at base +
// (add + p % mod) * rw (a ring or carry slot: what p writes), or, with shift set, the first rw floats of
// base when p completes a block of `mod` (an overlapping compressor's previous-block rows, which the
// completion overwrites with the current block's; the record's slot is unused otherwise).
struct undo_ent {
    float *base;
    long long off; // floats into the record
    int rw, mod, add, shift;
};
// Block i copies entry i for position *ppos + dp into the record (restore 0) or back (restore 1).
__global__ void k_undo(const undo_ent *t, const long long *ppos, int dp, float *buf, int restore)
{
    pdl_begin();
    const undo_ent u = t[blockIdx.x];
    const long long p = *ppos + dp;
    if (u.shift && (p + 1) % u.mod)
        return;
    float *src = u.base + (u.shift ? 0 : (size_t)(u.add + p % u.mod) * u.rw), *rec = buf + u.off;
    for (int i = threadIdx.x; i < u.rw; i += blockDim.x) {
        if (restore)
            src[i] = rec[i];
        else
            rec[i] = src[i];
    }
}

// The MTP block's input streams (spec 4.9): X0[s][j] = bf16(ep[s] + hp[s][j]) for each of hc streams j,
// ep [S][D] the projected embedding, hp [S][hc][D] the projected main streams (both bf16 values).
__global__ void k_mtp_x0(const float *ep, const float *hp, int S, int hc, int D, float *X)
{
    pdl_begin();
    size_t n = (size_t)S * hc * D;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        size_t s = i / ((size_t)hc * D), d = i % D;
        X[i] = bf16r(ep[s * D + d] + hp[i]);
    }
}

// The index of each row's largest logit (block r: row r of x [rows][n]); ties go to the lowest index,
// NaN is never chosen (a row of NaN gives 0): the first-strictly-greater scan of a host argmax.
__global__ void __launch_bounds__(1024) k_argmax_rows(const float *x, int n, int *out)
{
    pdl_begin();
    __shared__ float bv[32];
    __shared__ int bi[32];
    const float *xr = x + (size_t)blockIdx.x * n;
    float best = -INFINITY;
    int at = INT_MAX;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        float v = xr[i];
        if (v > best || (v == best && i < at)) // i ascends per thread: == keeps the first
            best = v, at = i;
    }
    for (int o = 16; o; o >>= 1) {
        float v = __shfl_xor_sync(0xffffffffu, best, o);
        int j = __shfl_xor_sync(0xffffffffu, at, o);
        if (v > best || (v == best && j < at))
            best = v, at = j;
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0)
        bv[warp] = best, bi[warp] = at;
    __syncthreads();
    if (warp == 0) {
        best = lane < (int)(blockDim.x >> 5) ? bv[lane] : -INFINITY;
        at = lane < (int)(blockDim.x >> 5) ? bi[lane] : INT_MAX;
        for (int o = 16; o; o >>= 1) {
            float v = __shfl_xor_sync(0xffffffffu, best, o);
            int j = __shfl_xor_sync(0xffffffffu, at, o);
            if (v > best || (v == best && j < at))
                best = v, at = j;
        }
        if (lane == 0)
            out[blockIdx.x] = at == INT_MAX ? 0 : at;
    }
}

// out = bf16(w * (x * rsqrt(mean(x^2) + eps))) per row of n; w may be NULL.
__global__ void k_rmsnorm(const float *x, const uint16_t *w, int n, float eps, float *out)
{
    pdl_begin();
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

// k_rmsnorm for rows of n <= R * blockDim values: the weights (immutable) loaded before the wait and each
// value read once into a register; every sum, product and rounding as k_rmsnorm's, in the same order, so the
// same bits (ATTN_LAT: a one-token step's cq norm, two dependent reads shorter).
template <int R>
__global__ void k_rmsnorm_r(const float *x, const uint16_t *w, int n, float eps, float *out)
{
    __shared__ float sh[32];
    float wv[R], xv[R];
#pragma unroll
    for (int r = 0; r < R; r++) {
        const int i = (int)threadIdx.x + r * (int)blockDim.x;
        wv[r] = w && i < n ? bf16ld(w[i]) : 0.f;
    }
    pdl_begin();
    const float *xr = x + (size_t)blockIdx.x * n;
    float *o = out + (size_t)blockIdx.x * n;
#pragma unroll
    for (int r = 0; r < R; r++) {
        const int i = (int)threadIdx.x + r * (int)blockDim.x;
        xv[r] = i < n ? xr[i] : 0.f;
    }
    float ss = 0.f;
#pragma unroll
    for (int r = 0; r < R; r++)
        if ((int)threadIdx.x + r * (int)blockDim.x < n)
            ss += xv[r] * xv[r];
    ss = block_sum(ss, sh);
    const float rr = 1.0f / sqrtf(ss / (float)n + eps);
#pragma unroll
    for (int r = 0; r < R; r++) {
        const int i = (int)threadIdx.x + r * (int)blockDim.x;
        if (i < n) {
            const float v = xv[r] * rr;
            o[i] = bf16r(w ? wv[r] * v : v);
        }
    }
}

// ---------------------------------------------------------------- mHC

// mixes of one token = (fn_j . X_s) * rsqrt(mean(X_s^2) + eps), in two steps so that a decode step
// spreads the 1.5 MB of fn over many blocks: k_hc_mix gives each block one HC_CH-element chunk of
// X_s and writes the chunk's partial dot products (and sum of squares, last) to part[s][chunk][nm+1]
// (a warp sums its lanes by a xor tree, the block its warps in warp order); k_hc_pre adds the chunks
// in chunk order (each lane a strided share of the chunks, then a warp tree). Deterministic. Every
// thread issues the loads of up to HC_MIXR rows of fn (all 24 for hc = 4) before the first sum, so
// that a block waits on memory once, not once per row. Grid (ceil(n / HC_CH), S).
#define HC_CH 256
#define HC_MAXNM 288 // (2 + hc) * hc for hc <= 16
#define HC_MIXR 24   // rows of fn whose values a thread holds in registers at once
#define HCM_NM 24    // hc = 4's mixes

// ---- HCX: hc = 4's 24 mixes on tensor cores (issue 10; 2026-12-01, twenty-ninth session) ----
// The chunk partials keep their shape (part[s][chunk][25]: a chunk's value is its 8 pieces' values added in
// piece order from 0, as above), but a piece's value (32 elements) is no longer fp32 products added by a xor
// tree: it comes from mma.sync m16n8k16 bf16 -> f32. The stream values are bf16 (exact as A); each fp32 fn
// value f is split into three bf16 terms h = bf16(f), m = bf16(f - h), l = bf16(f - h - m) (each difference
// exact in fp32; h + m + l is f within 2^-26 of it), so every product is exact. A tile of 8 mixes takes
// steps 0 and 1 (16 k slots each) x terms h, m, l: six mmas, each from 0 and added in fp32 (mode 2, the
// default; hcx_chain says why) or chained into one accumulator (mode 1). Against sums in double the
// partials then err as little as the fp32 form's (test_engine's hcx_precision: 5.9e-8 of the products'
// magnitudes at most, the fp32 form 6.0e-8, mode 1 1.2e-7). The squares: the tile's stream rows as B too
// (prefill: the diagonal of X X^T; decode: row and column 0). The k slots of
// step s in lane (g, t): slots 2t, 2t + 1 take the piece's elements 8t + 4s, + 1; slots 2t + 8, 2t + 9
// elements 8t + 4s + 2, + 3; so a lane's 16 bytes of a row (elements 8t .. 8t + 7) are its words of both
// steps, and A and B take the same elements in the same slots. Every output element of an mma depends only
// on its own row of A and column of B, so the prefill kernel (k_hc_mixt: 16 tokens a warp, token r in
// row r) and the decode ones (k_hc_mix, k_hc_mixpre: the token in row 0, the other rows zero) give the same
// bits; chunked prefill stays bit-identical (test_engine's mhc part compares them). Why: the fp32 form
// (k_hc_mix4) needs a multiply and an add per element and mix, 48 fp32 instructions an element, and ran
// at 57% of its issue slots waiting on shared memory: ~0.25 ms a launch at 4096 tokens for 0.13 GB read.
// The mode an engine takes at its creation (g->hcx): cuda_engine_hcx_mode's, else CTX_CUDA_HC_MMA's (0 the fp32 form,
// 1 or 2 HCX), else HCX_DEFAULT.
#define HCX_DEFAULT 2
static std::atomic<int> hcx_override{-1};
extern "C" void cuda_engine_hcx_mode(int mode) { hcx_override.store(mode >= 0 && mode <= 2 ? mode : -1); }
static int hcx_mode_now(void)
{
    const int o = hcx_override.load();
    if (o >= 0)
        return o;
    const char *e = getenv("CTX_CUDA_HC_MMA");
    return e && (e[0] == '0' || e[0] == '1' || e[0] == '2') && !e[1] ? e[0] - '0' : HCX_DEFAULT;
}
// Three bf16 words (h, m, l) of the pair (f0, f1), f0 in the low halves.
__device__ __forceinline__ void hcx_split2(float f0, float f1, uint32_t &h, uint32_t &m, uint32_t &l)
{
    h = pack_bf16x2(f0, f1);
    const float r0 = f0 - __uint_as_float(h << 16), r1 = f1 - __uint_as_float(h & 0xffff0000u);
    m = pack_bf16x2(r0, r1);
    l = pack_bf16x2(r0 - __uint_as_float(m << 16), r1 - __uint_as_float(m & 0xffff0000u));
}
// fn's 8 values of row j at elements e .. e + 7 (zeros past n; a 32-byte aligned pair of loads when whole)
__device__ __forceinline__ void hcx_fn8(const float *fn, int n, int j, int e, float (&f)[8])
{
    const float *src = fn + (size_t)j * n + e;
    if (e + 8 <= n && n % 4 == 0) {
        const float4 a = __ldg(reinterpret_cast<const float4 *>(src)), b = __ldg(reinterpret_cast<const float4 *>(src) + 1);
        f[0] = a.x, f[1] = a.y, f[2] = a.z, f[3] = a.w, f[4] = b.x, f[5] = b.y, f[6] = b.z, f[7] = b.w;
    } else {
#pragma unroll
        for (int k = 0; k < 8; k++)
            f[k] = e + k < n ? __ldg(src + k) : 0.f;
    }
}
// A tile's piece value: B words bw[s][term][0..1] (b0, b1 of step s and split term h, m, l), A words
// a[s][0..3]. Mode 1: one chain into one accumulator from 0 (steps 0, 1; within a step h, m, l). Mode 2:
// each of the six products its own mma from 0 (an mma's adder truncates its addends to the largest one's
// alignment, the running sum included, so a chain rounds toward zero six times at the piece's magnitude),
// then added in fp32, the small terms first: ((l0 + l1) + (m0 + m1) + h0) + h1.
__device__ __forceinline__ void hcx_chain(float (&d)[4], const uint32_t (&a)[2][4], const uint32_t (&bw)[2][3][2],
                                          int mode)
{
    if (mode == 2) {
        float e[2][3][4];
#pragma unroll
        for (int s = 0; s < 2; s++)
#pragma unroll
            for (int k = 0; k < 3; k++) {
                e[s][k][0] = e[s][k][1] = e[s][k][2] = e[s][k][3] = 0.f;
                mma_bf16_16816(e[s][k], a[s][0], a[s][1], a[s][2], a[s][3], bw[s][k][0], bw[s][k][1]);
            }
#pragma unroll
        for (int r = 0; r < 4; r++)
            d[r] = (((e[0][2][r] + e[1][2][r]) + (e[0][1][r] + e[1][1][r])) + e[0][0][r]) + e[1][0][r];
        return;
    }
    d[0] = d[1] = d[2] = d[3] = 0.f;
#pragma unroll
    for (int s = 0; s < 2; s++)
#pragma unroll
        for (int k = 0; k < 3; k++)
            mma_bf16_16816(d, a[s][0], a[s][1], a[s][2], a[s][3], bw[s][k][0], bw[s][k][1]);
}
// The squares' value: B = the A words of rows (b0: slots 2t.., b1: slots 2t + 8..) given by r[s][0..1];
// mode 1 one chain, mode 2 each step from 0, then step 0 + step 1.
__device__ __forceinline__ void hcx_chain_sq(float (&d)[4], const uint32_t (&a)[2][4], const uint32_t (&r)[2][2],
                                             int mode)
{
    if (mode == 2) {
        float e[2][4];
#pragma unroll
        for (int s = 0; s < 2; s++) {
            e[s][0] = e[s][1] = e[s][2] = e[s][3] = 0.f;
            mma_bf16_16816(e[s], a[s][0], a[s][1], a[s][2], a[s][3], r[s][0], r[s][1]);
        }
#pragma unroll
        for (int k = 0; k < 4; k++)
            d[k] = e[0][k] + e[1][k];
        return;
    }
    d[0] = d[1] = d[2] = d[3] = 0.f;
#pragma unroll
    for (int s = 0; s < 2; s++)
        mma_bf16_16816(d, a[s][0], a[s][1], a[s][2], a[s][3], r[s][0], r[s][1]);
}
// Decode: one warp, one token (x: the lane's 8 elements 8t .. 8t + 7 of the piece at p0, used by lanes 0..3,
// row 0), tile nt (0..2: mixes 8 nt + g's B; 3: the squares). The piece's values of row 0 come out in lanes
// 0..3: d[0], d[1] = mixes 8 nt + 2t, + 1 (tile nt < 3), lane 0's d[0] = the sum of squares (nt = 3).
// f: the tile's fn values of this lane (hcx_fn8 of row 8 nt + g at p0 + 8t), loaded by the caller.
__device__ __forceinline__ void hcx_piece_dec(const float (&x)[8], const float (&f)[8], int nt, int lane, float (&d)[4],
                                              int mode)
{
    const bool row0 = lane < 4;
    uint32_t a[2][4], w[4];
#pragma unroll
    for (int k = 0; k < 4; k++)
        w[k] = row0 ? pack_bf16x2(x[2 * k], x[2 * k + 1]) : 0u;
#pragma unroll
    for (int s = 0; s < 2; s++) {
        a[s][0] = w[2 * s];
        a[s][1] = 0u;
        a[s][2] = w[2 * s + 1];
        a[s][3] = 0u;
    }
    if (nt == 3) {
        const uint32_t r[2][2] = {{w[0], w[1]}, {w[2], w[3]}}; // column 0 = row 0's (lanes 0..3: g = 0)
        hcx_chain_sq(d, a, r, mode);
        return;
    }
    uint32_t bw[2][3][2];
#pragma unroll
    for (int s = 0; s < 2; s++) {
        hcx_split2(f[4 * s], f[4 * s + 1], bw[s][0][0], bw[s][1][0], bw[s][2][0]);
        hcx_split2(f[4 * s + 2], f[4 * s + 3], bw[s][0][1], bw[s][1][1], bw[s][2][1]);
    }
    hcx_chain(d, a, bw, mode);
}
// A decode warp's piece values (hcx_piece_dec's tile nt, or the squares for nt = 3) into its row of the block's
// partials: mixes 8 nt + 2 lane, + 1 from lanes 0..3, the squares at [HCM_NM] from lane 0.
__device__ __forceinline__ void hcx_piece_red(float *redw, int nt, int lane, const float (&d)[4])
{
    if (nt < 3 && lane < 4) {
        redw[8 * nt + 2 * lane] = d[0];
        redw[8 * nt + 2 * lane + 1] = d[1];
    } else if (nt == 3 && lane == 0) {
        redw[HCM_NM] = d[0];
    }
}
__global__ void __launch_bounds__(HC_CH) k_hc_mix(const float *X, const float *fn, int n, int nm, float *part, int tc)
{
    __shared__ float red[HC_CH / 32][HC_MAXNM + 1];
    int c = blockIdx.x, s = blockIdx.y, nch = gridDim.x, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int i = c * HC_CH + (int)threadIdx.x;
    float xv = 0.f;
    if (tc && nm == HCM_NM) { // HCX: warp w = piece w, its three tiles and the squares
        const int p0 = c * HC_CH + warp * 32, e = p0 + 8 * (lane & 3), g = lane >> 2;
        float f[3][8], x[8];
#pragma unroll
        for (int nt = 0; nt < 3; nt++)
            hcx_fn8(fn, n, 8 * nt + g, e, f[nt]);
        pdl_begin();
#pragma unroll
        for (int k = 0; k < 8; k++)
            x[k] = lane < 4 && e + k < n ? X[(size_t)s * n + e + k] : 0.f;
#pragma unroll
        for (int nt = 0; nt < 4; nt++) {
            float d[4];
            hcx_piece_dec(x, f[nt < 3 ? nt : 0], nt, lane, d, tc);
            hcx_piece_red(red[warp], nt, lane, d);
        }
    } else {
        for (int j0 = 0; j0 < nm; j0 += HC_MIXR) {
            float fv[HC_MIXR];
#pragma unroll
            for (int u = 0; u < HC_MIXR; u++)
                fv[u] = i < n && j0 + u < nm ? __ldg(fn + (size_t)(j0 + u) * n + i) : 0.f;
            if (j0 == 0) { // PDL: the first rows of fn (weights) are in flight before the wait, X (the stream) after
                pdl_begin();
                xv = i < n ? X[(size_t)s * n + i] : 0.f;
            }
#pragma unroll
            for (int u = 0; u < HC_MIXR; u++)
                if (j0 + u < nm) { // uniform over the block
                    float dot = warp_sum(fv[u] * xv);
                    if (lane == 0)
                        red[warp][j0 + u] = dot;
                }
        }
        float ss = warp_sum(xv * xv);
        if (lane == 0)
            red[warp][nm] = ss;
    }
    __syncthreads();
    for (int t = threadIdx.x; t <= nm; t += blockDim.x) {
        float v = 0.f;
        for (int w = 0; w < HC_CH / 32; w++)
            v += red[w][t];
        part[((size_t)s * nch + c) * (nm + 1) + t] = v;
    }
}

// k_hc_mix for prefill chunks (S > HCM_MIN_S, hc = 4: 24 mixes), the same part[] bits: k_hc_mix reads
// all 1.5 MB of fn once per token and spends its time in shuffles. Here a block holds one chunk's fn
// rows (24 x HC_CH floats) in shared memory and each thread is one token of HCM_TOK: for each 32-wide
// piece (k_hc_mix's warp) it forms the 32 products in registers and adds them by k_hc_mix's xor
// tree written out (level o adds element l + o to l, for o = 16, 8, 4, 2, 1: lane 0's sum, the one
// k_hc_mix stores), then adds the pieces' sums into the chunk's value from 0 in piece order (k_hc_mix's
// warp order), products and sum of squares alike. Grid (chunks, ceil(S / HCM_TOK)).
#define HCM_MIN_S 8
#define HCM_TOK 128
__device__ __forceinline__ float hcm_tree32(float *p)
{
#pragma unroll
    for (int l = 0; l < 16; l++)
        p[l] = p[l] + p[l + 16];
#pragma unroll
    for (int l = 0; l < 8; l++)
        p[l] = p[l] + p[l + 8];
#pragma unroll
    for (int l = 0; l < 4; l++)
        p[l] = p[l] + p[l + 4];
    p[0] = p[0] + p[2];
    p[1] = p[1] + p[3];
    return p[0] + p[1];
}
// The block's 128 tokens' X for one 32-wide piece go through shared memory (xs, HCM_XST floats a
// token: 16-byte aligned rows, conflict-free 16-byte reads) by 16-byte cp.async, a warp instruction
// covering 4 tokens' 128 contiguous bytes: a thread reading its own token's row directly (the first
// form) made each warp load touch 32 rows (~0.04 ms more a launch at 4096 tokens). The next
// piece's copies run under this piece's sums; the values and the arithmetic are the first form's (a
// chunk that is not whole, or n % 4 != 0, still reads them directly: a guard only, as engines take
// hidden sizes in multiples of 128; dropping it changed the kernel's registers 96 -> 122, unmeasured).
// Tried in the twenty-fourth session and not kept: two tokens a thread (64 threads, each 16-byte fn read
// serving both tokens' products; 168 registers, 10 warps an SM) took 0.33 ms a launch at 4096 tokens
// against this form's 0.29 (results/2026-11-30-s26, call2): its FP32 chains, not its fn reads, set the pace.
// XT = uint16_t (prefill's bf16 streams, since 2026-12-01): a piece is 64 bytes a token, 4 chunks of 16
// (8 values), rows HCM_XST16 values apart (80 bytes: the 16-byte reads of 8 rows hit 8 distinct bank groups),
// widened as read; the same values.
#define HCM_XST 36
#define HCM_XST16 40
template <typename XT>
__global__ void __launch_bounds__(HCM_TOK) k_hc_mix4(const XT *X, const float *fn, int S, int n, float *part)
{
    constexpr bool B16 = sizeof(XT) == 2;
    __shared__ __align__(16) float sf[HCM_NM][HC_CH];
    __shared__ __align__(16) float xs[HCM_TOK][HCM_XST]; // as uint16_t [HCM_TOK][HCM_XST16] when B16
    const int c = blockIdx.x, nch = gridDim.x, s0 = blockIdx.y * HCM_TOK, s = s0 + (int)threadIdx.x;
    const bool staged = c * HC_CH + HC_CH <= n && n % (B16 ? 8 : 4) == 0, live = s < S;
    const uint32_t xsb = (uint32_t)__cvta_generic_to_shared(&xs[0][0]);
    auto stage = [&](int w) { // piece w: chunk q = thread + 128 m is token q / 8's 16 bytes q % 8 (B16: q / 4, q % 4)
        if constexpr (B16) {
#pragma unroll
            for (int m = 0; m < 4; m++) {
                const int q = (int)threadIdx.x + HCM_TOK * m, tk = q >> 2, pc = q & 3;
                const bool ok = s0 + tk < S;
                cp_async16(xsb + (uint32_t)(tk * HCM_XST16 + 8 * pc) * 2u,
                           X + (size_t)(ok ? s0 + tk : 0) * n + c * HC_CH + w * 32 + 8 * pc, ok);
            }
        } else {
#pragma unroll
            for (int m = 0; m < 8; m++) {
                const int q = (int)threadIdx.x + HCM_TOK * m, tk = q >> 3, pc = q & 7;
                const bool ok = s0 + tk < S;
                cp_async16(xsb + (uint32_t)(tk * HCM_XST + 4 * pc) * 4u,
                           X + (size_t)(ok ? s0 + tk : 0) * n + c * HC_CH + w * 32 + 4 * pc, ok);
            }
        }
        cp_async_commit();
    };
    if (staged)
        stage(0);
    for (int t = threadIdx.x; t < HCM_NM * HC_CH; t += HCM_TOK) {
        int j = t / HC_CH, i = c * HC_CH + t % HC_CH;
        sf[j][t % HC_CH] = i < n ? __ldg(fn + (size_t)j * n + i) : 0.f;
    }
    float v[HCM_NM + 1];
#pragma unroll
    for (int j = 0; j <= HCM_NM; j++)
        v[j] = 0.f;
    const XT *xs_g = X + (size_t)s * n;
    for (int w = 0; w < HC_CH / 32; w++) {
        int i0 = c * HC_CH + w * 32;
        float x[32], p[32];
        if (staged) { // uniform over the block
            cp_async_wait<0>();
            __syncthreads(); // piece w (and, at w = 0, sf) visible
            if constexpr (B16) {
                const uint16_t *row = reinterpret_cast<const uint16_t *>(&xs[0][0]) + threadIdx.x * HCM_XST16;
#pragma unroll
                for (int l = 0; l < 32; l += 8) {
                    const uint4 a = *reinterpret_cast<const uint4 *>(row + l);
                    const uint32_t wv[4] = {a.x, a.y, a.z, a.w};
#pragma unroll
                    for (int h = 0; h < 4; h++) {
                        x[l + 2 * h] = __uint_as_float(wv[h] << 16);
                        x[l + 2 * h + 1] = __uint_as_float(wv[h] & 0xffff0000u);
                    }
                }
            } else {
#pragma unroll
                for (int l = 0; l < 32; l += 4) {
                    const float4 a = *reinterpret_cast<const float4 *>(&xs[threadIdx.x][l]);
                    x[l] = a.x;
                    x[l + 1] = a.y;
                    x[l + 2] = a.z;
                    x[l + 3] = a.w;
                }
            }
            __syncthreads(); // every thread has its row: the buffer takes the next piece
            if (w + 1 < HC_CH / 32)
                stage(w + 1);
        } else {
            if (w == 0)
                __syncthreads(); // sf
#pragma unroll
            for (int l = 0; l < 32; l++)
                x[l] = live && i0 + l < n ? xld(xs_g, (size_t)(i0 + l)) : 0.f;
        }
#pragma unroll
        for (int j = 0; j < HCM_NM; j++) {
#pragma unroll
            for (int l = 0; l < 32; l++)
                p[l] = sf[j][w * 32 + l] * x[l];
            v[j] += hcm_tree32(p);
        }
#pragma unroll
        for (int l = 0; l < 32; l++)
            p[l] = x[l] * x[l];
        v[HCM_NM] += hcm_tree32(p);
    }
    if (!live)
        return;
    float *pt = part + ((size_t)s * nch + c) * (HCM_NM + 1);
#pragma unroll
    for (int j = 0; j <= HCM_NM; j++)
        pt[j] = v[j];
}

// HCX for prefill chunks (S > HCM_MIN_S, 24 mixes): the decode kernels' piece chains with 16 tokens a warp
// (token r of a tile in row r of A; B: fn's split words, from shared memory; the squares' B: the tile's own
// rows, so their diagonals), each lane adding its values over the pieces in piece order from 0, as the decode
// kernels' blocks add their warps. Block: chunk c, its fn rows split once into shared memory; HCX_WARPS warps
// x one tile of 16 tokens (two a warp measured the same, results/2026-12-01-s31 call3). Grid (chunks,
// ceil(S / HCX_TOK)).
#define HCX_WARPS 8
#define HCX_TOK (16 * HCX_WARPS)
// Row r's 8 elements e .. e + 7 as 4 bf16x2 words (zeros past S or n); the streams' values are bf16 (exact).
__device__ __forceinline__ void hcx_row8(const uint16_t *X, int S, int n, int r, int e, uint32_t (&w)[4])
{
    if (r < S && e + 8 <= n && n % 8 == 0) {
        const uint4 v = *reinterpret_cast<const uint4 *>(X + (size_t)r * n + e);
        w[0] = v.x, w[1] = v.y, w[2] = v.z, w[3] = v.w;
        return;
    }
#pragma unroll
    for (int k = 0; k < 4; k++) {
        const uint32_t lo = r < S && e + 2 * k < n ? X[(size_t)r * n + e + 2 * k] : 0u;
        const uint32_t hi = r < S && e + 2 * k + 1 < n ? X[(size_t)r * n + e + 2 * k + 1] : 0u;
        w[k] = lo | hi << 16;
    }
}
__device__ __forceinline__ void hcx_row8(const float *X, int S, int n, int r, int e, uint32_t (&w)[4])
{
    float x[8];
    if (r < S && e + 8 <= n && n % 4 == 0) {
        const float4 a = reinterpret_cast<const float4 *>(X + (size_t)r * n + e)[0];
        const float4 b = reinterpret_cast<const float4 *>(X + (size_t)r * n + e)[1];
        x[0] = a.x, x[1] = a.y, x[2] = a.z, x[3] = a.w, x[4] = b.x, x[5] = b.y, x[6] = b.z, x[7] = b.w;
    } else {
#pragma unroll
        for (int k = 0; k < 8; k++)
            x[k] = r < S && e + k < n ? X[(size_t)r * n + e + k] : 0.f;
    }
#pragma unroll
    for (int k = 0; k < 4; k++)
        w[k] = pack_bf16x2(x[2 * k], x[2 * k + 1]);
}
template <typename XT>
__global__ void __launch_bounds__(32 * HCX_WARPS) k_hc_mixt(const XT *X, const float *fn, int S, int n, float *part,
                                                             int mode)
{
    __shared__ uint2 sb[HC_CH / 32][2][3][3][32]; // piece, step, tile, split term, lane: (b0, b1)
    const int c = blockIdx.x, nch = gridDim.x, lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2,
              t = lane & 3;
    for (int it = threadIdx.x; it < (HC_CH / 32) * 3 * 32; it += blockDim.x) {
        const int w = it / 96, nt = (it / 32) % 3, l = it % 32;
        float f[8];
        hcx_fn8(fn, n, 8 * nt + (l >> 2), c * HC_CH + 32 * w + 8 * (l & 3), f);
#pragma unroll
        for (int st = 0; st < 2; st++) {
            uint32_t h0, m0, l0, h1, m1, l1;
            hcx_split2(f[4 * st], f[4 * st + 1], h0, m0, l0);
            hcx_split2(f[4 * st + 2], f[4 * st + 3], h1, m1, l1);
            sb[w][st][nt][0][l] = make_uint2(h0, h1);
            sb[w][st][nt][1][l] = make_uint2(m0, m1);
            sb[w][st][nt][2][l] = make_uint2(l0, l1);
        }
    }
    __syncthreads();
    const int s0 = (blockIdx.y * HCX_WARPS + warp) * 16;
    if (s0 >= S) // warp-uniform
        return;
    const int sg = s0 + g, sh = sg + 8;
    float v[3][4] = {}, q0 = 0.f, q1 = 0.f;
    uint32_t na[4], nb[4]; // the next piece's rows, loaded under this piece's products
    hcx_row8(X, S, n, sg, c * HC_CH + 8 * t, na);
    hcx_row8(X, S, n, sh, c * HC_CH + 8 * t, nb);
#pragma unroll 1
    for (int w = 0; w < HC_CH / 32; w++) {
        uint32_t ra[4], rb[4];
#pragma unroll
        for (int k = 0; k < 4; k++)
            ra[k] = na[k], rb[k] = nb[k];
        if (w + 1 < HC_CH / 32) {
            hcx_row8(X, S, n, sg, c * HC_CH + 32 * (w + 1) + 8 * t, na);
            hcx_row8(X, S, n, sh, c * HC_CH + 32 * (w + 1) + 8 * t, nb);
        }
        const uint32_t a[2][4] = {{ra[0], rb[0], ra[1], rb[1]}, {ra[2], rb[2], ra[3], rb[3]}};
#pragma unroll
        for (int nt = 0; nt < 3; nt++) {
            uint32_t bw[2][3][2];
#pragma unroll
            for (int st = 0; st < 2; st++)
#pragma unroll
                for (int k = 0; k < 3; k++) {
                    const uint2 b = sb[w][st][nt][k][lane];
                    bw[st][k][0] = b.x;
                    bw[st][k][1] = b.y;
                }
            float d[4];
            hcx_chain(d, a, bw, mode);
#pragma unroll
            for (int r = 0; r < 4; r++)
                v[nt][r] += d[r];
        }
        const uint32_t r1[2][2] = {{ra[0], ra[1]}, {ra[2], ra[3]}}, r2[2][2] = {{rb[0], rb[1]}, {rb[2], rb[3]}};
        float d1[4], d2[4];
        hcx_chain_sq(d1, a, r1, mode); // column g: token sg (its diagonal in lane (g, g / 2))
        hcx_chain_sq(d2, a, r2, mode); // column g: token sh
        q0 += (g & 1) ? d1[1] : d1[0];
        q1 += (g & 1) ? d2[3] : d2[2];
    }
    float *pg = part + ((size_t)sg * nch + c) * (HCM_NM + 1), *ph = part + ((size_t)sh * nch + c) * (HCM_NM + 1);
#pragma unroll
    for (int nt = 0; nt < 3; nt++) {
        if (sg < S) {
            pg[8 * nt + 2 * t] = v[nt][0];
            pg[8 * nt + 2 * t + 1] = v[nt][1];
        }
        if (sh < S) {
            ph[8 * nt + 2 * t] = v[nt][2];
            ph[8 * nt + 2 * t + 1] = v[nt][3];
        }
    }
    if (t == (g >> 1)) {
        if (sg < S)
            pg[HCM_NM] = q0;
        if (sh < S)
            ph[HCM_NM] = q1;
    }
}


__device__ float sigmoidf_(float x) { return 1.0f / (1.0f + expf(-x)); }

// The mixes from k_hc_mix's chunks, then split + Sinkhorn of one token's mixes, then
// u = bf16(sum_k pre_k X_k) and, fused, the RMSNorm of u with normw. One block of HCP_THREADS per
// token (grid S). Latency-bound at decode (one block), so:
// - every thread loads its X values (and norm weights) at the start, before the chunk sums and
//   Sinkhorn, into registers (HC > 0: hc is HC; float4 groups g = t, t + HCP_THREADS of the hidden
//   dimension; groups beyond go through global memory), and u stays in registers until written once;
// - the split and Sinkhorn run in warp 0 with lane r * hc + c holding comb[r][c] (hc * hc <= 32):
//   each row or column sum gathers its hc values by shuffles and adds them in index order from 0,
//   so every element gets exactly inf_cpu_hc_split_sinkhorn's arithmetic (the same bits); larger
//   hc: the same per thread j < hc owning row and column j through shared memory.
// Sums of u^2 for the norm: each thread adds its elements in index order (its groups in order, x y z
// w within a group), then block_sum (a xor tree in each warp, then over the 32 warps' values).
// head != 0: hc_head instead (nm = hc mixes, pre only: no post, comb or Sinkhorn; `eps` is hc_eps).
// post_out == NULL: no post; comb_out == NULL: no Sinkhorn (head mode passes neither; decode sites
// with the Sinkhorn on the side stream, k_hc_sink4 there, pass neither either: pre, u and its norm only).
// PRE_IN (prefill, hc = 4, after k_hc_sink4): the mixes, post, comb and Sinkhorn were done by
// k_hc_sink4, which left the token's pre weights in part[s][0][0..hc); only u and its norm are left.
// The body is hc_pre_body (token s), which k_hc_mixpre's last block of a token runs too; part is
// read with ld.global.cg there, since other blocks of that grid wrote it.
#define HCP_THREADS 1024
#define HCP_NG 2 // float4 groups per thread held in registers: D <= 4 * 1024 * 2 without a second read
template <int HC, int PRE_IN, int XCG = 0, typename XT = float>
__device__ __forceinline__ void hc_pre_body(int s, const float *part, int nch, const float *scale, const float *base,
                                            int hc, int iters, float eps, const XT *X, int D, float *post_out,
                                            float *comb_out, const uint16_t *normw, float norm_eps, float *u, int head)
{
    constexpr int NR = HC > 0 ? HCP_NG : 0, HM = HC > 0 ? HC : 1;
    __shared__ float pre[16], comb[256], m[HC_MAXNM + 1], sh[32];
    if (HC > 0)
        hc = HC;
    int nm = head ? hc : (2 + hc) * hc, n = hc * D, G = D / 4, tid = threadIdx.x;
    int lane = tid & 31, warp = tid >> 5;
    const XT *Xs = X + (size_t)s * hc * D;
    float pre_sc = 0.f, pre_b = 0.f; // pre's weights, loaded now so that their latency overlaps the X loads
    if (!PRE_IN && warp == 0 && lane < hc) {
        pre_sc = scale[0];
        pre_b = base[lane];
    }
    float4 xr[NR > 0 ? NR : 1][HM];
    uint2 wr[NR > 0 ? NR : 1];
#pragma unroll
    for (int q = 0; q < NR; q++) {
        int g = tid + q * HCP_THREADS;
        if (g < G) {
#pragma unroll
            for (int k = 0; k < HM; k++)
                xr[q][k] = xld4<XCG>(Xs + (size_t)k * D, (size_t)g);
            if (normw)
                wr[q] = __ldg(reinterpret_cast<const uint2 *>(normw) + g);
        }
    }
    const float *pt = part + (size_t)s * nch * (nm + 1);
    if (PRE_IN && tid < hc)
        pre[tid] = pt[tid];
    for (int t = warp; !PRE_IN && t <= nm; t += HCP_THREADS / 32) { // value t: lane l adds chunks l, l+32, ... in order
        float v = 0.f;
        for (int c = lane; c < nch; c += 32)
            v += __ldcg(pt + (size_t)c * (nm + 1) + t);
        v = warp_sum(v);
        if (lane == 0)
            m[t] = v;
    }
    __syncthreads();
    if (!PRE_IN && warp == 0) {
        float rs = 1.0f / sqrtf(m[nm] / (float)n + norm_eps);
        for (int t = lane; t < nm; t += 32)
            m[t] = m[t] * rs;
        __syncwarp();
        if (lane < hc) {
            pre[lane] = sigmoidf_(m[lane] * pre_sc + pre_b) + eps;
            if (post_out)
                post_out[(size_t)s * hc + lane] = 2.0f * sigmoidf_(m[hc + lane] * scale[1] + base[hc + lane]);
        }
        if (comb_out && hc * hc <= 32) {
            int r = lane / hc, c = lane % hc, o = 2 * hc + (lane < hc * hc ? lane : 0);
            float v = m[o] * scale[2] + base[o], mx = -INFINITY, sum = 0.f;
            for (int k = 0; k < hc; k++)
                mx = fmaxf(mx, __shfl_sync(0xffffffffu, v, r * hc + k));
            v = expf(v - mx);
            for (int k = 0; k < hc; k++)
                sum += __shfl_sync(0xffffffffu, v, r * hc + k);
            v = v / sum + eps;
            for (int it = 0; it < iters; it++) {
                if (it > 0) { // rows
                    float t = 0.f;
                    for (int k = 0; k < hc; k++)
                        t += __shfl_sync(0xffffffffu, v, r * hc + k);
                    t += eps;
                    v = v / t;
                }
                float t = 0.f; // columns
                for (int k = 0; k < hc; k++)
                    t += __shfl_sync(0xffffffffu, v, k * hc + c);
                t += eps;
                v = v / t;
            }
            if (lane < hc * hc)
                comb_out[(size_t)s * hc * hc + lane] = v;
        } else if (comb_out) {
            int j = lane;
            if (j < hc) {
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
            __syncwarp();
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
                    __syncwarp();
                }
                if (j < hc) { // column j
                    float t = 0.f;
                    for (int r = 0; r < hc; r++)
                        t += comb[r * hc + j];
                    t += eps;
                    for (int r = 0; r < hc; r++)
                        comb[r * hc + j] /= t;
                }
                __syncwarp();
            }
            for (int t = lane; t < hc * hc; t += 32)
                comb_out[(size_t)s * hc * hc + t] = comb[t];
        }
    }
    __syncthreads();
    float *us = u + (size_t)s * D, ss = 0.f;
#pragma unroll
    for (int q = 0; q < NR; q++) {
        int g = tid + q * HCP_THREADS;
        if (g < G) {
            float4 a = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
            for (int k = 0; k < HM; k++) {
                float pk = pre[k];
                a.x += pk * xr[q][k].x;
                a.y += pk * xr[q][k].y;
                a.z += pk * xr[q][k].z;
                a.w += pk * xr[q][k].w;
            }
            a = make_float4(bf16r(a.x), bf16r(a.y), bf16r(a.z), bf16r(a.w));
            ss += a.x * a.x;
            ss += a.y * a.y;
            ss += a.z * a.z;
            ss += a.w * a.w;
            xr[q][0] = a;
        }
    }
    for (int g = tid + NR * HCP_THREADS; g < G; g += HCP_THREADS) { // beyond the registers: through u
        float a[4];
        for (int e = 0; e < 4; e++) {
            float acc = 0.f;
            for (int k = 0; k < hc; k++)
                acc += pre[k] * (XCG ? xldcg(Xs, (size_t)k * D + 4 * g + e) : xld(Xs, (size_t)k * D + 4 * g + e));
            a[e] = bf16r(acc);
            us[4 * g + e] = a[e];
        }
        for (int e = 0; e < 4; e++)
            ss += a[e] * a[e];
    }
    ss = block_sum(ss, sh);
    float r = 1.0f / sqrtf(ss / (float)D + norm_eps);
#pragma unroll
    for (int q = 0; q < NR; q++) {
        int g = tid + q * HCP_THREADS;
        if (g < G) {
            float4 a = xr[q][0];
            if (normw) {
                uint2 w = wr[q];
                a = make_float4(bf16r(bf16ld((uint16_t)w.x) * (a.x * r)), bf16r(bf16ld((uint16_t)(w.x >> 16)) * (a.y * r)),
                                bf16r(bf16ld((uint16_t)w.y) * (a.z * r)), bf16r(bf16ld((uint16_t)(w.y >> 16)) * (a.w * r)));
            } else {
                a = make_float4(bf16r(a.x * r), bf16r(a.y * r), bf16r(a.z * r), bf16r(a.w * r));
            }
            reinterpret_cast<float4 *>(us)[g] = a;
        }
    }
    for (int g = tid + NR * HCP_THREADS; g < G; g += HCP_THREADS)
        for (int e = 0; e < 4; e++) {
            int i = 4 * g + e;
            float v = us[i] * r;
            us[i] = bf16r(normw ? bf16ld(normw[i]) * v : v);
        }
}
template <int HC, int PRE_IN = 0, typename XT = float>
__global__ void __launch_bounds__(HCP_THREADS) k_hc_pre(const float *part, int nch, const float *scale,
                                                        const float *base, int hc, int iters, float eps,
                                                        const XT *X, int D, float *post_out, float *comb_out,
                                                        const uint16_t *normw, float norm_eps, float *u, int head)
{
    pdl_begin();
    hc_pre_body<HC, PRE_IN, 0, XT>(blockIdx.x, part, nch, scale, base, hc, iters, eps, X, D, post_out, comb_out, normw,
                                   norm_eps, u, head);
}

// k_hc_pre<4, 1> for prefill chunks whose hidden size has at most HCP_THREADS groups of 4 (D <= 4096: V4-Flash)
// in blocks of HCQ_THREADS, the same bits: thread t plays k_hc_pre's threads v = t + HCQ_THREADS j (j < HCQ_V),
// each its one group's u = bf16(sum_k pre_k X_k) and sum of squares in k_hc_pre's order, then block_sum's
// trees as k_hc_pre's 32 warps run them (virtual warp w' + 8j is this block's warp w' on slot j: its xor
// tree, then warp 0's tree over the 32 warp sums), and the norm's elementwise operations. Why: k_hc_pre's
// 1024-thread blocks (one a token, two an SM) spend a block's life on one load round trip and three
// barriers for 48 KB; 256-thread blocks put four times the tokens in flight (~0.10 ms a launch at 4096
// tokens, 779 us for flash4's 8 in Nsight Compute, for ~0.2 GB: ~0.05 ms at the copy rate).
#define HCQ_THREADS 256
#define HCQ_V (HCP_THREADS / HCQ_THREADS)
template <typename XT>
__global__ void __launch_bounds__(HCQ_THREADS) k_hc_pre4q(const float *part, int nch, const XT *X, int D,
                                                           const uint16_t *normw, float norm_eps, float *u)
{
    __shared__ float pre[4], sh[HCP_THREADS / 32];
    const int s = blockIdx.x, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, G = D / 4;
    pdl_begin();
    const XT *Xs = X + (size_t)s * 4 * D;
    float4 xr[HCQ_V][4];
    uint2 wr[HCQ_V];
#pragma unroll
    for (int j = 0; j < HCQ_V; j++) {
        const int g = tid + j * HCQ_THREADS;
        if (g < G) {
#pragma unroll
            for (int k = 0; k < 4; k++)
                xr[j][k] = xld4<0>(Xs + (size_t)k * D, (size_t)g);
            wr[j] = __ldg(reinterpret_cast<const uint2 *>(normw) + g);
        }
    }
    if (tid < 4)
        pre[tid] = part[(size_t)s * nch * (HCM_NM + 1) + tid];
    __syncthreads();
    float ss[HCQ_V];
#pragma unroll
    for (int j = 0; j < HCQ_V; j++) {
        const int g = tid + j * HCQ_THREADS;
        ss[j] = 0.f;
        if (g < G) {
            float4 a = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
            for (int k = 0; k < 4; k++) {
                const float pk = pre[k];
                a.x += pk * xr[j][k].x;
                a.y += pk * xr[j][k].y;
                a.z += pk * xr[j][k].z;
                a.w += pk * xr[j][k].w;
            }
            a = make_float4(bf16r(a.x), bf16r(a.y), bf16r(a.z), bf16r(a.w));
            ss[j] += a.x * a.x;
            ss[j] += a.y * a.y;
            ss[j] += a.z * a.z;
            ss[j] += a.w * a.w;
            xr[j][0] = a;
        }
    }
#pragma unroll
    for (int j = 0; j < HCQ_V; j++) {
        const float v = warp_sum(ss[j]);
        if (lane == 0)
            sh[warp + j * (HCQ_THREADS / 32)] = v;
    }
    __syncthreads();
    if (warp == 0) {
        const float t = warp_sum(sh[lane]);
        if (lane == 0)
            sh[0] = t;
    }
    __syncthreads();
    const float r = 1.0f / sqrtf(sh[0] / (float)D + norm_eps);
    float *us = u + (size_t)s * D;
#pragma unroll
    for (int j = 0; j < HCQ_V; j++) {
        const int g = tid + j * HCQ_THREADS;
        if (g < G) {
            const float4 a = xr[j][0];
            const uint2 w = wr[j];
            reinterpret_cast<float4 *>(us)[g] =
                make_float4(bf16r(bf16ld((uint16_t)w.x) * (a.x * r)), bf16r(bf16ld((uint16_t)(w.x >> 16)) * (a.y * r)),
                            bf16r(bf16ld((uint16_t)w.y) * (a.z * r)), bf16r(bf16ld((uint16_t)(w.y >> 16)) * (a.w * r)));
        }
    }
}

// The combine's order: add(j) for the token's k <= KMAX expert slots j in ascending expert id (a
// repeated id, hash tables: its slots in order), the ids in registers (the j loops unrolled, so add
// sees a constant j and the rows it indexes stay in registers).
template <int KMAX, typename F>
__device__ __forceinline__ void moe_combine_scan(const int (&id)[KMAX], int k, F add)
{
    int last = -1;
    for (int it = 0; it < k; it++) { // at most k distinct ids; the next larger one each time
        int v = -1;
#pragma unroll
        for (int j = 0; j < KMAX; j++)
            if (j < k && id[j] > last && (v < 0 || id[j] < v))
                v = id[j];
        if (v < 0)
            break;
#pragma unroll
        for (int j = 0; j < KMAX; j++)
            if (j < k && id[j] == v)
                add(j);
        last = v;
    }
}

// One output of k_moe_combine (token s, hidden index i): the token's expert rows added in
// moe_combine_scan's order, then the shared expert's row, bf16 out. The ids and rows are loaded up
// front, all in flight together. k_moe_combine and k_hc_mixpre's fused post (hc_prev) call it;
// k_moe_combine4 is the same over 4 outputs a thread.
template <int KMAX>
__device__ __forceinline__ float moe_combine_at(const uint16_t *ys, const int *ri, const uint16_t *sy, size_t s, int k,
                                                int D, int i)
{
    const int *sel = ri + s * k;
    int id[KMAX];
    float y[KMAX];
#pragma unroll
    for (int j = 0; j < KMAX; j++)
        if (j < k) {
            id[j] = sel[j];
            y[j] = bf16ld(ys[(s * k + j) * D + i]);
        }
    const float sv = bf16ld(sy[s * D + i]);
    float acc = 0.f;
    moe_combine_scan<KMAX>(id, k, [&](int j) { acc += y[j]; });
    return bf16r(acc + sv);
}

// The previous site's post, fused into the next decode site's k_hc_mixpre (block_site, hc_pfuse):
// X0 the streams before that post (NULL: none; the kernel reads X as it is), f the sub-layer's output,
// or, with ys != NULL, k_moe_combine's inputs (ys, ri, sy, k <= 8), from which f is formed here.
struct hc_prev {
    const float *X0, *f, *post, *comb;
    const uint16_t *ys, *sy;
    const int *ri;
    int k;
};

// Decode (and any S with cuda_engine_cp_legacy): k_hc_mix and k_hc_pre<HC> in one launch, so the pre
// part starts as soon as the last partial is written instead of after a grid boundary. Grid (nch, S)
// of HCP_THREADS (k_hc_pre's block, so its body runs unchanged): block (c, s) is k_hc_mix's block (c, s)
// split by values: thread (q, i) = (tid / HC_CH, tid % HC_CH) is k_hc_mix's thread i for the values
// t = q, q + HCF_GRP, ... (t < nm: mix t, t = nm: the sum of squares), each the same warp_sum of the
// same products (fv * xv, xv * xv) into red[warp][t], and the chunk's value the same sum of red[0..8)[t]
// in warp order; so part has k_hc_mix's bits. Each block writes its partials, fences (device scope)
// and adds 1 to the token's counter cnt[s]; the block that sees nch - 1 there is the last, every
// partial of token s is then visible to it (fence, atomic; fence), it sets cnt[s] back to 0 for the
// next launch (nothing else touches it in this one) and runs hc_pre_body for token s: k_hc_pre<HC>'s
// u, norm, pre (and post and comb when given) bit for bit. No block waits on another, so any grid
// size is safe. PDL: the first fn rows (weights) are loaded before the wait, as in k_hc_mix.
// With pv.X0 (hc_prev) the previous site's post runs here first: thread (0, i) forms element i of the
// new streams from pv.X0 exactly as k_hc_post does (f from the combine's inputs when pv.ys: as
// k_moe_combine), writes it to X (a buffer other than pv.X0: the post of element i reads the other
// streams' elements at the same index, which other blocks own) and hands it to the block's other value
// groups; the writes precede the fence and counter, so the last block's hc_pre_body (reading X with
// ld.global.cg) sees every block's. The mixes and pre then see the bits k_hc_post would have left.
#define HCF_GRP (HCP_THREADS / HC_CH) // value groups of a block, each one k_hc_mix block's threads
#define HCF_R 8                       // values a thread holds at once: all of hc = 4's 25 in one round
template <int HC>
__global__ void __launch_bounds__(HCP_THREADS) k_hc_mixpre(float *X, const float *fn, int nm, float *part,
                                                           unsigned *cnt, const float *scale, const float *base, int hc,
                                                           int iters, float eps, int D, float *post_out,
                                                           float *comb_out, const uint16_t *normw, float norm_eps,
                                                           float *u, int head, hc_prev pv, int tc)
{
    __shared__ float red[HC_CH / 32][HC_MAXNM + 1], xsh[HC_CH];
    __shared__ int last;
    int c = blockIdx.x, s = blockIdx.y, nch = gridDim.x, n = (HC > 0 ? HC : hc) * D;
    int q = threadIdx.x / HC_CH, it = threadIdx.x % HC_CH, lane = it & 31, warp = it >> 5;
    int i = c * HC_CH + it;
    // HCX (tc, 24 mixes): value group q < 3 runs tile q of each piece (warp w: piece w), group 3 the squares
    const bool hx = tc && nm == HCM_NM;
    const int xe = c * HC_CH + warp * 32 + 8 * (lane & 3);
    static_assert(HCF_R == 8, "k_hc_mixpre: HCX takes a tile's 8 fn values in fv");
    float fv[HCF_R];
    if (hx) {
        if (q < 3)
            hcx_fn8(fn, n, 8 * q + (lane >> 2), xe, fv);
    } else {
#pragma unroll
        for (int r = 0; r < HCF_R; r++) {
            int t = q + r * HCF_GRP;
            fv[r] = i < n && t < nm ? __ldg(fn + (size_t)t * n + i) : 0.f;
        }
    }
    pdl_begin();
    float xv;
    if (pv.X0) { // the previous site's post (k_hc_post's arithmetic), one thread an element
        if (q == 0 && i < n) {
            constexpr int H4 = HC > 0 ? HC : 16;
            const int hcn = HC > 0 ? HC : hc, kk = i / D, d = i % D;
            const float *Xs = pv.X0 + (size_t)s * hcn * D, *cb = pv.comb + (size_t)s * hcn * hcn;
            float xo[H4];
#pragma unroll
            for (int j = 0; j < H4; j++)
                if (j < hcn)
                    xo[j] = Xs[(size_t)j * D + d];
            float fv = pv.ys ? moe_combine_at<8>(pv.ys, pv.ri, pv.sy, (size_t)s, pv.k, D, d) : pv.f[(size_t)s * D + d];
            float acc = 0.f;
#pragma unroll
            for (int j = 0; j < H4; j++)
                if (j < hcn)
                    acc += cb[j * hcn + kk] * xo[j];
            xv = bf16r(pv.post[(size_t)s * hcn + kk] * fv + acc);
            X[(size_t)s * n + i] = xv;
            xsh[it] = xv;
        }
        __syncthreads();
        xv = i < n ? xsh[it] : 0.f;
    } else if (!hx) {
        xv = i < n ? X[(size_t)s * n + i] : 0.f;
    }
    if (hx) {
        float x[8], d[4];
#pragma unroll
        for (int k = 0; k < 8; k++)
            x[k] = lane < 4 && xe + k < n ? (pv.X0 ? xsh[warp * 32 + 8 * lane + k] : X[(size_t)s * n + xe + k]) : 0.f;
        hcx_piece_dec(x, fv, q, lane, d, tc);
        hcx_piece_red(red[warp], q, lane, d);
    } else {
        for (int t0 = q; t0 <= nm; t0 += HCF_GRP * HCF_R) {
            if (t0 != q) {
#pragma unroll
                for (int r = 0; r < HCF_R; r++) {
                    int t = t0 + r * HCF_GRP;
                    fv[r] = i < n && t < nm ? __ldg(fn + (size_t)t * n + i) : 0.f;
                }
            }
#pragma unroll
            for (int r = 0; r < HCF_R; r++) { // t is uniform over the warp
                int t = t0 + r * HCF_GRP;
                if (t < nm) {
                    float dot = warp_sum(fv[r] * xv);
                    if (lane == 0)
                        red[warp][t] = dot;
                } else if (t == nm) {
                    float ss = warp_sum(xv * xv);
                    if (lane == 0)
                        red[warp][nm] = ss;
                }
            }
        }
    }
    __syncthreads();
    for (int t = threadIdx.x; t <= nm; t += blockDim.x) {
        float v = 0.f;
        for (int w = 0; w < HC_CH / 32; w++)
            v += red[w][t];
        part[((size_t)s * nch + c) * (nm + 1) + t] = v;
    }
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
        last = atomicAdd(cnt + s, 1u) == (unsigned)nch - 1;
        if (last)
            cnt[s] = 0;
    }
    __syncthreads();
    if (!last)
        return;
    __threadfence();
    hc_pre_body<HC, 0, 1>(s, part, nch, scale, base, hc, iters, eps, X, D, post_out, comb_out, normw, norm_eps, u,
                          head);
}

// Prefill (S > HCM_MIN_S, hc = 4): k_hc_pre's first part, one warp per token instead of one 1024-thread
// block whose other 31 warps wait on warp 0's Sinkhorn: the token's mixes from the chunk partials
// (value t: lane l adds chunks l, l+32, ... in order, then the xor tree: k_hc_pre's sums), the split
// and Sinkhorn in the same lanes with the same shuffles and operations (k_hc_pre's hc * hc <= 32
// branch), post and comb out; pre goes to part[s][0][0..4) (the token's partials are read by then),
// where k_hc_pre<4, 1> takes it for u and its norm. The same bits as k_hc_pre<4>. Decode steps run it
// on the engine's side stream (block_site, hc_side) for post and comb only; the pre it leaves in part
// is unused there (part is next written by the next site's mixes, after the join).
#define HCS_WARPS 8
__global__ void __launch_bounds__(HCS_WARPS * 32) k_hc_sink4(float *part, int S, int nch, const float *scale,
                                                              const float *base, int iters, float eps, int D,
                                                              float *post_out, float *comb_out, float norm_eps)
{
    constexpr int hc = 4, nm = (2 + hc) * hc;
    __shared__ float msh[HCS_WARPS][nm + 1];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, s = blockIdx.x * HCS_WARPS + warp, n = hc * D;
    if (s >= S) // uniform over the warp; no block barrier below
        return;
    float *m = msh[warp], *pt = part + (size_t)s * nch * (nm + 1);
#pragma unroll
    for (int t = 0; t <= nm; t++) {
        float v = 0.f;
        for (int c = lane; c < nch; c += 32)
            v += pt[(size_t)c * (nm + 1) + t];
        v = warp_sum(v);
        if (lane == 0)
            m[t] = v;
    }
    __syncwarp();
    float rs = 1.0f / sqrtf(m[nm] / (float)n + norm_eps);
    for (int t = lane; t < nm; t += 32)
        m[t] = m[t] * rs;
    __syncwarp();
    float prev = 0.f;
    if (lane < hc) {
        prev = sigmoidf_(m[lane] * scale[0] + base[lane]) + eps;
        post_out[(size_t)s * hc + lane] = 2.0f * sigmoidf_(m[hc + lane] * scale[1] + base[hc + lane]);
    }
    int r = lane / hc, c = lane % hc, o = 2 * hc + (lane < hc * hc ? lane : 0);
    float v = m[o] * scale[2] + base[o], mx = -INFINITY, sum = 0.f;
    for (int k = 0; k < hc; k++)
        mx = fmaxf(mx, __shfl_sync(0xffffffffu, v, r * hc + k));
    v = expf(v - mx);
    for (int k = 0; k < hc; k++)
        sum += __shfl_sync(0xffffffffu, v, r * hc + k);
    v = v / sum + eps;
    for (int it = 0; it < iters; it++) {
        if (it > 0) { // rows
            float t = 0.f;
            for (int k = 0; k < hc; k++)
                t += __shfl_sync(0xffffffffu, v, r * hc + k);
            t += eps;
            v = v / t;
        }
        float t = 0.f; // columns
        for (int k = 0; k < hc; k++)
            t += __shfl_sync(0xffffffffu, v, k * hc + c);
        t += eps;
        v = v / t;
    }
    if (lane < hc * hc)
        comb_out[(size_t)s * hc * hc + lane] = v;
    __syncwarp();
    if (lane < hc)
        pt[lane] = prev;
}

// X'_k = bf16(post_k f + sum_j comb[j][k] X_j), one thread per (token, hidden index), from Xin into X
// (the same buffer or another: a thread reads its index's hc elements before writing them). HC > 0: hc
// is HC (registers); 0: any hc <= 16.
template <int HC>
__global__ void k_hc_post(const float *Xin, float *X, const float *f, const float *post, const float *comb, int S,
                          int hc, int D)
{
    pdl_begin();
    size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (t >= (size_t)S * D)
        return;
    if (HC > 0)
        hc = HC;
    int i;
    const size_t s = (size_t)divmod_idx((long long)t, D, &i);
    float *Xs = X + s * hc * D;
    const float *Xi = Xin + s * hc * D, *cb = comb + s * hc * hc, *ps = post + s * hc;
    float xv[HC > 0 ? HC : 16], nx[HC > 0 ? HC : 16];
#pragma unroll
    for (int j = 0; j < (HC > 0 ? HC : 16); j++)
        if (j < hc)
            xv[j] = Xi[(size_t)j * D + i];
    float fv = f[s * D + i];
#pragma unroll
    for (int k = 0; k < (HC > 0 ? HC : 16); k++) {
        if (k >= hc)
            break;
        float acc = 0.f;
#pragma unroll
        for (int j = 0; j < (HC > 0 ? HC : 16); j++)
            if (j < hc)
                acc += cb[j * hc + k] * xv[j];
        nx[k] = bf16r(ps[k] * fv + acc);
    }
#pragma unroll
    for (int k = 0; k < (HC > 0 ? HC : 16); k++)
        if (k < hc)
            Xs[(size_t)k * D + i] = nx[k];
}

// k_hc_post<4>'s arithmetic on bf16 streams, 8 consecutive values of a token a thread (16-byte loads and stores
// of each stream, two float4 of f): the same expressions in the same order, so the same bits (S * D / 8
// threads, D % 8 == 0: x16_use). A scalar form on bf16 moved half the bytes as 2-byte accesses and was no
// faster (results/2026-12-01-s30 call5).
__global__ void k_hc_post4v(uint16_t *X, const float *f, const float *post, const float *comb, int S, int D)
{
    pdl_begin();
    const size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x, D8 = (size_t)D / 8;
    if (t >= (size_t)S * D8)
        return;
    const size_t s = t / D8, i0 = (t % D8) * 8;
    uint16_t *Xs = X + s * 4 * D + i0;
    const float *cb = comb + s * 16, *ps = post + s * 4;
    float xv[4][8];
#pragma unroll
    for (int j = 0; j < 4; j++) {
        const uint4 v = *reinterpret_cast<const uint4 *>(Xs + (size_t)j * D);
        const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int h = 0; h < 4; h++) {
            xv[j][2 * h] = __uint_as_float(w[h] << 16);
            xv[j][2 * h + 1] = __uint_as_float(w[h] & 0xffff0000u);
        }
    }
    const float4 f0 = *reinterpret_cast<const float4 *>(f + s * D + i0),
                 f1 = *reinterpret_cast<const float4 *>(f + s * D + i0 + 4);
    const float fv[8] = {f0.x, f0.y, f0.z, f0.w, f1.x, f1.y, f1.z, f1.w};
    float c[16], pk[4];
#pragma unroll
    for (int q = 0; q < 16; q++)
        c[q] = cb[q];
#pragma unroll
    for (int k = 0; k < 4; k++)
        pk[k] = ps[k];
#pragma unroll
    for (int k = 0; k < 4; k++) {
        uint32_t o[4];
#pragma unroll
        for (int h = 0; h < 4; h++) {
            float r[2];
#pragma unroll
            for (int u = 0; u < 2; u++) {
                const int e = 2 * h + u;
                float acc = 0.f;
#pragma unroll
                for (int j = 0; j < 4; j++)
                    acc += c[j * 4 + k] * xv[j][e];
                r[u] = bf16r(pk[k] * fv[e] + acc);
            }
            o[h] = (__float_as_uint(r[0]) >> 16) | (__float_as_uint(r[1]) & 0xffff0000u);
        }
        *reinterpret_cast<uint4 *>(Xs + (size_t)k * D) = make_uint4(o[0], o[1], o[2], o[3]);
    }
}

// ---------------------------------------------------------------- products without FP8 activations

// y[s][r] = W[r] . x[s] with bf16 weights, fp32 sums. One warp per weight row r (warps persist over
// rows r, r + 8 * grid, ...: no block turnover while the weights stream), for every token:
// lane l takes the 8-element groups l, l+32, ... (16-byte loads), adds them in that order and the
// warp sums the lanes; with KC > 0 the row (k <= 256*KC) is loaded into registers once, all loads in
// flight together, and reused for every token. k is a multiple of 8.
__device__ __forceinline__ float bflo(uint32_t v) { return __uint_as_float(v << 16); }
__device__ __forceinline__ float bfhi(uint32_t v) { return __uint_as_float(v & 0xffff0000u); }
__device__ __forceinline__ float dot8_bf16(uint4 w, float4 a, float4 b, float acc)
{
    acc += bflo(w.x) * a.x;
    acc += bfhi(w.x) * a.y;
    acc += bflo(w.y) * a.z;
    acc += bfhi(w.y) * a.w;
    acc += bflo(w.z) * b.x;
    acc += bfhi(w.z) * b.y;
    acc += bflo(w.w) * b.z;
    acc += bfhi(w.w) * b.w;
    return acc;
}
// Outputs of a product whose weight is several matrices' rows one after the other: rows [off[j],
// off[j] + n[j]) go to y[j] [S][n[j]], rounded to bf16 where bf[j].
struct lin_out {
    int nseg, off[5], n[5], bf[5];
    float *y[5];
};
// With wpr_log2 > 0 (S <= 8 only) the 2^wpr_log2 warps of a row split its groups into contiguous
// ranges and add their sums in warp order through shared memory: a matrix of few rows (the MoE gate,
// 256 x 4096) then spreads over ~2 CTAs per SM instead of n/8 CTAs of 8 rows. wpr_log2 = 0 is the
// one-warp-per-row kernel (same bits as before).
template <int KC>
__global__ void __launch_bounds__(256) k_lin_bf16(const uint16_t *W, const float *x, int S, int n, int k, lin_out o,
                                                  int wpr_log2)
{
    __shared__ float part[8][8];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, ng = k / 8;
    const int wpr = 1 << wpr_log2, sub = warp & (wpr - 1), rpc = 8 >> wpr_log2; // rows per CTA pass
    const int gper = (ng + wpr - 1) / wpr, g_lo = min(sub * gper, ng), g_hi = min(g_lo + gper, ng);
    for (int rb = (int)blockIdx.x * rpc; rb < n; rb += (int)gridDim.x * rpc) {
    const int r = rb + (warp >> wpr_log2);
    const bool ok = r < n;
    const uint4 *w = reinterpret_cast<const uint4 *>(W + (size_t)(ok ? r : n - 1) * k);
    uint4 wr[KC > 0 ? KC : 1];
#pragma unroll
    for (int c = 0; c < KC; c++)
        if (ok && g_lo + lane + 32 * c < g_hi)
            wr[c] = __ldg(w + g_lo + lane + 32 * c);
    // PDL: with KC > 0 the first row's weights are in flight before the wait (later passes: a no-op);
    // x and the outputs are the previous kernels'
    pdl_begin();
    auto emit = [&](int s, float acc) {
        acc = warp_sum(acc);
        if (wpr_log2 > 0) {
            if (lane == 0)
                part[warp][s] = acc;
        } else if (lane == 0 && ok) {
            int j = 0;
            while (j + 1 < o.nseg && r >= o.off[j + 1])
                j++;
            o.y[j][(size_t)s * o.n[j] + r - o.off[j]] = o.bf[j] ? bf16r(acc) : acc;
        }
    };
    if (KC > 0 && S == 2) { // a speculative step's two tokens: their chains side by side, each the same operations
        const float4 *x0 = reinterpret_cast<const float4 *>(x), *x1 = reinterpret_cast<const float4 *>(x + k);
        float a0 = 0.f, a1 = 0.f;
        if (ok) {
#pragma unroll
            for (int c = 0; c < (KC > 0 ? KC : 1); c++) {
                int gi = g_lo + lane + 32 * c;
                if (gi < g_hi) {
                    a0 = dot8_bf16(wr[c], x0[2 * gi], x0[2 * gi + 1], a0);
                    a1 = dot8_bf16(wr[c], x1[2 * gi], x1[2 * gi + 1], a1);
                }
            }
        }
        emit(0, a0);
        emit(1, a1);
    } else {
        for (int s = 0; s < S; s++) {
            const float4 *xs = reinterpret_cast<const float4 *>(x + (size_t)s * k);
            float acc = 0.f;
            if (!ok) {
            } else if (KC > 0) {
#pragma unroll
                for (int c = 0; c < (KC > 0 ? KC : 1); c++) {
                    int gi = g_lo + lane + 32 * c;
                    if (gi < g_hi)
                        acc = dot8_bf16(wr[c], xs[2 * gi], xs[2 * gi + 1], acc);
                }
            } else {
                for (int gi = g_lo + lane; gi < g_hi; gi += 32)
                    acc = dot8_bf16(__ldg(w + gi), xs[2 * gi], xs[2 * gi + 1], acc);
            }
            emit(s, acc);
        }
    }
    if (wpr_log2 > 0) {
        __syncthreads();
        for (int i = threadIdx.x; i < rpc * S; i += blockDim.x) {
            const int ri = i / S, s = i % S, rr = rb + ri;
            if (rr >= n)
                continue;
            float acc = 0.f;
            for (int v = 0; v < wpr; v++)
                acc += part[ri * wpr + v][s];
            int j = 0;
            while (j + 1 < o.nseg && rr >= o.off[j + 1])
                j++;
            o.y[j][(size_t)s * o.n[j] + rr - o.off[j]] = o.bf[j] ? bf16r(acc) : acc;
        }
        __syncthreads();
    }
    }
}

// wo_a: each group g's rows [g*R, (g+1)*R) of the FP8 matrix, used as its exact dequantisation, times
// the group's slice of O; Z[s][g*R + r] bf16. One warp per weight row (persistent, as k_lin_bf16),
// for every token: lane l takes
// the 16-byte groups l, l+32, ... (in registers when gd <= 512*KC), e4m3 decoded by a table.
__device__ __forceinline__ float wo_a_acc16(uint4 wv, float sc, const float4 *xv, const float *lut, float acc)
{
    uint32_t wd[4] = {wv.x, wv.y, wv.z, wv.w};
#pragma unroll
    for (int q = 0; q < 4; q++) {
        float4 xq = xv[q];
        acc += (lut[wd[q] & 255] * sc) * xq.x;
        acc += (lut[(wd[q] >> 8) & 255] * sc) * xq.y;
        acc += (lut[(wd[q] >> 16) & 255] * sc) * xq.z;
        acc += (lut[wd[q] >> 24] * sc) * xq.w;
    }
    return acc;
}
template <int KC>
__global__ void __launch_bounds__(256) k_wo_a(const uint8_t *W, const uint8_t *scale, const float *O, int S, int G,
                                              int R, int gd, int HD, float *Z)
{
    pdl_begin();
    __shared__ float lut[256];
    for (int i = threadIdx.x; i < 256; i += blockDim.x)
        lut[i] = e4m3_dec((uint8_t)i);
    __syncthreads();
    int lane = threadIdx.x & 31;
    for (int gr = (int)blockIdx.x * 8 + (int)(threadIdx.x >> 5); gr < G * R; gr += (int)gridDim.x * 8) {
    int g = gr / R, r = gr % R, kb = (gd + 127) / 128, ng = gd / 16;
    const uint4 *w = reinterpret_cast<const uint4 *>(W + (size_t)gr * gd);
    const uint8_t *srow = scale + (size_t)((g * R) / 128 + r / 128) * kb;
    uint4 wr[KC > 0 ? KC : 1];
#pragma unroll
    for (int c = 0; c < KC; c++)
        if (lane + 32 * c < ng)
            wr[c] = __ldg(w + lane + 32 * c);
    for (int s = 0; s < S; s++) {
        const float *x = O + (size_t)s * HD + (size_t)g * gd;
        float acc = 0.f;
        if (KC > 0) {
#pragma unroll
            for (int c = 0; c < (KC > 0 ? KC : 1); c++) {
                int gi = lane + 32 * c;
                if (gi < ng)
                    acc = wo_a_acc16(wr[c], e8m0_dec(srow[gi / 8]), reinterpret_cast<const float4 *>(x + gi * 16), lut,
                                     acc);
            }
        } else {
            for (int gi = lane; gi < ng; gi += 32)
                acc = wo_a_acc16(__ldg(w + gi), e8m0_dec(srow[gi / 8]), reinterpret_cast<const float4 *>(x + gi * 16),
                                 lut, acc);
        }
        acc = warp_sum(acc);
        if (lane == 0)
            Z[(size_t)s * G * R + gr] = bf16r(acc);
    }
    }
}

// wo_a at decode (S <= 8 tokens, R a multiple of 128) on tensor cores: bf16 mma.m16n8k16 with fp32
// accumulation, each product e4m3 x bf16 exact, so the result differs from k_wo_a's fp32 sums by
// the order of the additions only. A CTA owns a 16-row tile of the G*R rows (one group: R is a
// multiple of 16) and its 8 warps split the group's gd/128 blocks of K (sums added in warp order:
// deterministic). The weights stay e4m3 in memory; each lane converts its bytes with shifts and
// masks: an e4m3 byte s|eeee|mmm placed as the bf16 s|0000eeee|mmm0000 is its value times 2^-120
// exactly (e4m3 subnormals land on bf16 subnormals). The activations are staged once per CTA in
// shared memory as bf16 of x * 2^100 (x is bf16-valued: exact), so the products are
// e4m3 * x * 2^-20, in fp32's normal range; each 128-K block's partial is multiplied by
// scale * 2^20. The K positions of a lane are permuted consistently in A and B: the lane's 32-bit
// weight word w (bytes at K p..p+3) gives the registers {p, p+2} and {p+1, p+3}, and the staged
// activations of each 4 positions are stored in the order (p, p+2, p+1, p+3).
constexpr int WOA_KC = 4;
__device__ __forceinline__ uint32_t e4m3x2_even_bf16(uint32_t w) // bytes 0, 2 -> bf16x2 (times 2^-120)
{
    return ((w << 8) & 0x80008000u) | ((w << 4) & 0x07f007f0u);
}
__device__ __forceinline__ uint32_t e4m3x2_odd_bf16(uint32_t w) // bytes 1, 3
{
    return (w & 0x80008000u) | ((w >> 4) & 0x07f007f0u);
}
__device__ __forceinline__ uint4 ldg_nc_stream(const void *p)
{
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
}
// O's group grp (S tokens, row stride HD) as bf16 of x * 2^100 into woa_x [S][gd], each 4 positions
// in the order (p, p + 2, p + 1, p + 3) (above); the whole block, then a barrier is the caller's.
__device__ __forceinline__ void woa_stage(const float *O, int S, int gd, int HD, int grp, uint16_t *woa_x)
{
    for (int i = threadIdx.x; i < S * (gd >> 2); i += blockDim.x) {
        const int s = i / (gd >> 2), qd = i % (gd >> 2);
        const float4 v = *reinterpret_cast<const float4 *>(O + (size_t)s * HD + (size_t)grp * gd + 4 * qd);
        const uint32_t x0 = __float_as_uint(v.x * 0x1p100f) >> 16, x1 = __float_as_uint(v.y * 0x1p100f) >> 16;
        const uint32_t x2 = __float_as_uint(v.z * 0x1p100f) >> 16, x3 = __float_as_uint(v.w * 0x1p100f) >> 16;
        *reinterpret_cast<uint2 *>(woa_x + (size_t)s * gd + 4 * qd) = make_uint2(x0 | x2 << 16, x1 | x3 << 16);
    }
}
// One 128-K block kb of rows g, g + 8 into d (from zero): a[0], a[1] the lane's bytes [16t, 16t + 16) and
// [64 + 16t, ..) of row g's block, a[2], a[3] those of row g + 8; xr the staged row of token g (t's part).
__device__ __forceinline__ void woa_block(float (&d)[4], const uint4 (&a)[4], const uint16_t *xr, int kb, int S,
                                          int g)
{
    d[0] = d[1] = d[2] = d[3] = 0.f;
#pragma unroll
    for (int c = 0; c < 2; c++) {
        const uint4 ra = a[c], rb = a[2 + c];
        const uint32_t wa[4] = {ra.x, ra.y, ra.z, ra.w}, wb[4] = {rb.x, rb.y, rb.z, rb.w};
#pragma unroll
        for (int j = 0; j < 4; j++) {
            uint2 xv = make_uint2(0, 0);
            if (g < S)
                xv = *reinterpret_cast<const uint2 *>(xr + (size_t)kb * 128 + c * 64 + 4 * j);
            mma_bf16_16816(d, e4m3x2_even_bf16(wa[j]), e4m3x2_even_bf16(wb[j]), e4m3x2_odd_bf16(wa[j]),
                           e4m3x2_odd_bf16(wb[j]), xv.x, xv.y);
        }
    }
}
__global__ void __launch_bounds__(256, 2) k_wo_a_mma(const uint8_t *W, const uint8_t *scale, const float *O, int S,
                                                     int R, int gd, int HD, int GR, float *Z)
{
    extern __shared__ __align__(16) uint16_t woa_x[]; // [S][gd]
    __shared__ float red[8][16][8];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int row0 = (int)blockIdx.x * 16, grp = row0 / R, kb_n = gd >> 7;
    const int per = (kb_n + 7) / 8, kb_lo = min(warp * per, kb_n), kb_hi = min(kb_lo + per, kb_n);
    const uint8_t *w0 = W + (size_t)(row0 + g) * gd + t * 16, *w1 = W + (size_t)(row0 + g + 8) * gd + t * 16;
    const uint8_t *srow = scale + (size_t)(row0 >> 7) * kb_n;
    uint4 a[WOA_KC][4];
    auto load = [&](int kb0) {
#pragma unroll
        for (int u = 0; u < WOA_KC; u++)
            if (kb0 + u < kb_hi) {
                const size_t off = (size_t)(kb0 + u) * 128;
                a[u][0] = ldg_nc_stream(w0 + off), a[u][1] = ldg_nc_stream(w0 + off + 64);
                a[u][2] = ldg_nc_stream(w1 + off), a[u][3] = ldg_nc_stream(w1 + off + 64);
            }
    };
    load(kb_lo); // in flight while the activations are staged
    pdl_begin(); // PDL: after the first weight batch (immutable), before O (the attention's output)
    woa_stage(O, S, gd, HD, grp, woa_x);
    __syncthreads();
    float acc[4] = {0.f, 0.f, 0.f, 0.f};
    const uint16_t *xr = woa_x + (size_t)(g < S ? g : 0) * gd + t * 16;
    for (int kb0 = kb_lo; kb0 < kb_hi; kb0 += WOA_KC) {
        if (kb0 != kb_lo)
            load(kb0);
#pragma unroll
        for (int u = 0; u < WOA_KC; u++) {
            if (kb0 + u >= kb_hi)
                break;
            float d[4];
            woa_block(d, a[u], xr, kb0 + u, S, g);
            const float sc = e8m0_dec(srow[kb0 + u]) * 0x1p20f;
#pragma unroll
            for (int i = 0; i < 4; i++)
                acc[i] += d[i] * sc;
        }
    }
    red[warp][g][2 * t] = acc[0];
    red[warp][g][2 * t + 1] = acc[1];
    red[warp][g + 8][2 * t] = acc[2];
    red[warp][g + 8][2 * t + 1] = acc[3];
    __syncthreads();
    if (threadIdx.x < 128) {
        const int r = threadIdx.x >> 3, c = threadIdx.x & 7;
        if (c < S) {
            float sum = 0.f;
            for (int v = 0; v < 8; v++)
                sum += red[v][r][c];
            Z[(size_t)c * GR + row0 + r] = bf16r(sum);
        }
    }
}

// k_wo_a_ring: k_wo_a_mma's arithmetic with its weights streamed through shared memory (issue 10,
// decode). k_wo_a_mma holds a warp's whole K share (4 blocks of 128 at V4-Flash's shape: 8 KB) in
// registers, so an SM holds 16 warps' worth and V4-Flash's 512 CTAs run in two waves, the second
// loading only when the first has finished (17 us for 33.5 MB in a decode step, Nsight Compute, where
// fp8_gemv_kernel's ring takes 13 us for the same bytes). Here a CTA of 8 warps covers TR tiles of 16
// rows (TR = 2 for V4-Flash: 256 CTAs, one wave at 2 an SM) and each warp streams its (tile, block)
// stages through its own WR_NS-deep cp.async ring, fp8_gemv_kernel's stage layout (16 rows x 128
// bytes, chunk c of row r at chunk c ^ 4 (r & 1)), so WR_NS - 1 stages stay in flight while one is
// used. Warp w keeps k_wo_a_mma's K share of each tile (blocks [w per, w per + per)), its lane (g, t)
// gets the same 16 bytes of rows g and g + 8 that k_wo_a_mma's loads gave it, and each tile's partial
// is the same mma and fp32 sequence, added over the 8 warps in warp order: the same bits (test_wo
// compares the two byte for byte; test_engine's part dtc with and without ATTN_WOA_RING).
constexpr int WR_NS = 5, WR_STAGE = 16 * 128;
static size_t wo_a_ring_smem(int S, int gd) { return (size_t)8 * WR_NS * WR_STAGE + (size_t)S * gd * 2; }
template <int TR>
__global__ void __launch_bounds__(256, 2) k_wo_a_ring(const uint8_t *W, const uint8_t *scale, const float *O, int S,
                                                      int R, int gd, int HD, int GR, float *Z)
{
    extern __shared__ __align__(128) unsigned char wr_sm[]; // [8 warps][WR_NS][WR_STAGE], then x [S][gd]
    uint16_t *woa_x = reinterpret_cast<uint16_t *>(wr_sm + 8 * WR_NS * WR_STAGE);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int row0 = (int)blockIdx.x * 16 * TR, grp = row0 / R, kb_n = gd >> 7;
    const int per = (kb_n + 7) / 8, kb_lo = min(warp * per, kb_n), kb_hi = min(kb_lo + per, kb_n);
    const int nb = kb_hi - kb_lo, nst = TR * nb; // stage j: tile j / nb, block kb_lo + j % nb
    const uint32_t sbase = (uint32_t)__cvta_generic_to_shared(wr_sm) + warp * (WR_NS * WR_STAGE);
    auto issue = [&](int j) {
        const uint32_t slot = sbase + (j % WR_NS) * WR_STAGE;
        const int tile = j / nb, kb = kb_lo + j % nb;
        const uint8_t *src = W + (size_t)(row0 + 16 * tile) * gd + (size_t)kb * 128;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int c = lane + 32 * i, r = c >> 3, ch = c & 7;
            cp_async16(slot + r * 128 + ((ch ^ ((r & 1) << 2)) << 4), src + (size_t)r * gd + ch * 16, true);
        }
    };
#pragma unroll
    for (int j = 0; j < WR_NS - 1; j++) { // weights (immutable) in flight before the PDL wait
        if (j < nst)
            issue(j);
        cp_async_commit();
    }
    pdl_begin(); // O is the attention's output
    woa_stage(O, S, gd, HD, grp, woa_x);
    __syncthreads();
    const uint8_t *srow = scale + (size_t)(row0 >> 7) * kb_n; // TR * 16 <= 128 rows: one scale row
    const uint16_t *xr = woa_x + (size_t)(g < S ? g : 0) * gd + t * 16;
    const uint32_t sw = (uint32_t)((g & 1) << 2);
    float acc[TR][4];
#pragma unroll
    for (int tl = 0; tl < TR; tl++)
        acc[tl][0] = acc[tl][1] = acc[tl][2] = acc[tl][3] = 0.f;
    for (int j = 0; j < nst; j++) {
        __syncwarp(); // every lane is done with slot (j - 1) % WR_NS
        if (j + WR_NS - 1 < nst)
            issue(j + WR_NS - 1);
        cp_async_commit();
        const int tile = j / nb, kb = kb_lo + j % nb;
        const float sc = e8m0_dec(srow[kb]) * 0x1p20f;
        cp_async_wait<WR_NS - 1>();
        __syncwarp();
        const uint32_t slot = sbase + (j % WR_NS) * WR_STAGE;
        const uint4 a[4] = {lds128(slot + g * 128 + ((t ^ sw) << 4)),
                            lds128(slot + g * 128 + (((4 + t) ^ sw) << 4)),
                            lds128(slot + (g + 8) * 128 + ((t ^ sw) << 4)),
                            lds128(slot + (g + 8) * 128 + (((4 + t) ^ sw) << 4))};
        float d[4];
        woa_block(d, a, xr, kb, S, g);
#pragma unroll
        for (int tl = 0; tl < TR; tl++)
            if (tl == tile)
#pragma unroll
                for (int i = 0; i < 4; i++)
                    acc[tl][i] += d[i] * sc;
    }
    cp_async_wait<0>();
    __syncthreads(); // every warp is done with its ring: the partials go to its start
    float(*red)[8][16][8] = reinterpret_cast<float(*)[8][16][8]>(wr_sm);
#pragma unroll
    for (int tl = 0; tl < TR; tl++) {
        red[tl][warp][g][2 * t] = acc[tl][0];
        red[tl][warp][g][2 * t + 1] = acc[tl][1];
        red[tl][warp][g + 8][2 * t] = acc[tl][2];
        red[tl][warp][g + 8][2 * t + 1] = acc[tl][3];
    }
    __syncthreads();
    for (int i = threadIdx.x; i < TR * 128; i += blockDim.x) {
        const int tl = i >> 7, r = (i >> 3) & 15, c = i & 7;
        if (c < S) {
            float sum = 0.f;
            for (int v = 0; v < 8; v++)
                sum += red[tl][v][r][c];
            Z[(size_t)c * GR + row0 + 16 * tl + r] = bf16r(sum);
        }
    }
}
// Both forms' shared memory above the 48 KB default, on the current device, before any launch or graph
// capture there (the engine's creation, cuda_engine_wo_a): the largest is wo_a_launch's bound on the
// staged activations (S * gd * 2 <= 32 KB), two of which fit an SM.
static cudaError_t wo_a_ring_attrs(void)
{
    const int smem = (int)wo_a_ring_smem(1, 32768 / 2);
    cudaError_t ce = cudaFuncSetAttribute(k_wo_a_ring<1>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    if (ce == cudaSuccess)
        ce = cudaFuncSetAttribute(k_wo_a_ring<2>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    return ce;
}


// ---- prefill products on tensor cores (S > 8 tokens): wo_a and the bf16 matrices
//
// k_bgemm<FP8>: y[s][r] = sum_k W[r][k] x[s][k] for a CTA tile of 128 weight rows x 128 tokens with
// mma.sync m16n8k16 bf16 -> fp32, K in 128-wide stages through a 3-deep cp.async ring, 8 warps as
// 2 (rows, 64 each) x 4 (tokens, 32 each). The weight tile is read once per 128 tokens (the
// per-row kernels above read every token once per row: ~30 us per token and layer for wo_a at
// prefill). Each stage's partial starts from zero and is added to the fp32 accumulators (FP8: times
// the tile's e8m0 scale * 2^20), so every output is the same fixed sequence of operations whatever
// S is and wherever the token sits in its tile: one chunk or many give the same bits.
// - FP8 (wo_a): e4m3 weights used as their exact bf16 value: an e4m3 byte s|eeee|mmm becomes the bf16
//   s|0000eeee|mmm0000 = its value * 2^-120 (subnormals land on bf16 subnormals), 3 logic ops per 2;
//   x is staged as bf16 of x * 2^100 (k_stage_bf16), exact because the attention output O is
//   bf16-valued (k_attn_combine rounds it) and |O| < 2^28; so each product e4m3 * x * 2^-20 is exact
//   and in fp32's normal range, as in k_wo_a_mma. Rows of a CTA lie in one group (R % 128 == 0):
//   group row0 / grp_rows reads x columns [grp * k, grp * k + k).
// - bf16 (the MoE gate, the compressors): bf16 weights, x staged as its bf16 bits: exact only for
//   bf16-valued x, which the callers' input u is (k_hc_pre rounds it); products exact in fp32.
// Within a 32-wide K slice a lane holds 4 consecutive K positions per mma step (its own 32 K of each
// stage), in A and B alike: a K permutation inside one mma, which does not change its sum.
// Shared-memory rows: 128 bytes (e4m3) with 16-byte segments XOR-swizzled by (row & 7); 256 bytes
// (bf16) by bg_sw16, so that the 8 lanes of a quarter warp (rows r, r+1; segments 4t + c) hit 8
// distinct bank groups.
constexpr int BG_STAGES = 3;
template <bool FP8> __host__ __device__ constexpr int bg_stage_bytes() { return 128 * (FP8 ? 128 : 256) + 128 * 256; }
template <bool FP8> __host__ __device__ constexpr int bg_smem_bytes() { return BG_STAGES * bg_stage_bytes<FP8>(); }
__device__ __forceinline__ int bg_sw16(int r, int c) { return c ^ ((c >> 2) & 2) ^ (r & 1); }
// e4m3 bytes 0, 1 (2, 3) of w -> bf16x2, low half from the lower byte, each value * 2^-120
__device__ __forceinline__ uint32_t e4m3_b01_bf16(uint32_t w)
{
    const uint32_t y = __byte_perm(w, 0, 0x1404); // b1 << 24 | b0 << 8
    return (y & 0x80008000u) | ((y >> 4) & 0x07f007f0u);
}
__device__ __forceinline__ uint32_t e4m3_b23_bf16(uint32_t w)
{
    const uint32_t y = __byte_perm(w, 0, 0x3424); // b3 << 24 | b2 << 8
    return (y & 0x80008000u) | ((y >> 4) & 0x07f007f0u);
}
// x [rows][k] fp32 -> xb [rows][k] bf16 bits of x * mul (mul a power of two; x bf16-valued: exact).
__global__ void k_stage_bf16(const float *x, size_t n4, float mul, uint16_t *xb)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n4; i += (size_t)gridDim.x * blockDim.x) {
        const float4 v = reinterpret_cast<const float4 *>(x)[i];
        const uint32_t lo = bf16bits(v.x * mul) | (uint32_t)bf16bits(v.y * mul) << 16;
        const uint32_t hi = bf16bits(v.z * mul) | (uint32_t)bf16bits(v.w * mul) << 16;
        reinterpret_cast<uint2 *>(xb)[i] = make_uint2(lo, hi);
    }
}
template <bool FP8>
__global__ void __launch_bounds__(256, 1) k_bgemm(const uint8_t *__restrict__ W, const uint8_t *__restrict__ scale,
                                                  const uint16_t *__restrict__ xb, int S, int n, int k, int ldx,
                                                  int grp_rows, lin_out o)
{
    extern __shared__ __align__(128) uint8_t bg_smem[];
    constexpr int AROW = FP8 ? 128 : 256, STAGE = bg_stage_bytes<FP8>();
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    const int wn = warp & 1, wm = warp >> 1;
    const int row0 = (int)blockIdx.x * 128, tok0 = (int)blockIdx.y * 128, kb_n = k >> 7;
    const uint16_t *xg = xb + (size_t)(row0 / grp_rows) * k;
    const uint32_t sbase = (uint32_t)__cvta_generic_to_shared(bg_smem);

    auto load_stage = [&](int stage, int kb) {
        const uint32_t sA = sbase + stage * STAGE, sB = sA + 128 * AROW;
        if (FP8) {
#pragma unroll
            for (int j = 0; j < 4; j++) {
                const int i = tid + j * 256, r = i >> 3, c = i & 7, wr = row0 + r;
                cp_async16(sA + r * 128 + ((c ^ (r & 7)) << 4), W + (size_t)min(wr, n - 1) * k + (size_t)kb * 128 + c * 16,
                        wr < n);
            }
        } else {
#pragma unroll
            for (int j = 0; j < 8; j++) {
                const int i = tid + j * 256, r = i >> 4, c = i & 15, wr = row0 + r;
                cp_async16(sA + r * 256 + (bg_sw16(r, c) << 4),
                        W + ((size_t)min(wr, n - 1) * k + (size_t)kb * 128) * 2 + c * 16, wr < n);
            }
        }
#pragma unroll
        for (int j = 0; j < 8; j++) {
            const int i = tid + j * 256, r = i >> 4, c = i & 15, tr = tok0 + r;
            cp_async16(sB + r * 256 + (bg_sw16(r, c) << 4), xg + (size_t)min(tr, S - 1) * ldx + (size_t)kb * 128 + c * 8,
                    tr < S);
        }
    };

    float acc[4][4][4];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int c = 0; c < 4; c++)
                acc[i][j][c] = 0.f;
    for (int s = 0; s < BG_STAGES - 1; s++) {
        if (s < kb_n)
            load_stage(s, s);
        cp_async_commit();
    }
    const uint8_t *srow = FP8 ? scale + (size_t)(row0 >> 7) * kb_n : NULL;
    for (int kb = 0; kb < kb_n; kb++) {
        cp_async_wait<BG_STAGES - 2>();
        __syncthreads();
        if (kb + BG_STAGES - 1 < kb_n)
            load_stage((kb + BG_STAGES - 1) % BG_STAGES, kb + BG_STAGES - 1);
        cp_async_commit();
        const uint32_t sA = sbase + (kb % BG_STAGES) * STAGE, sB = sA + 128 * AROW;
        float part[4][4][4];
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int j = 0; j < 4; j++)
#pragma unroll
                for (int c = 0; c < 4; c++)
                    part[i][j][c] = 0.f;
#pragma unroll
        for (int hs = 0; hs < 2; hs++) {
            uint4 af[4][2]; // FP8: this lane's 16 bytes (K 32t + 16hs ..) of rows g and g + 8 of each 16-row tile
            if (FP8) {
#pragma unroll
                for (int mi = 0; mi < 4; mi++)
#pragma unroll
                    for (int h = 0; h < 2; h++) {
                        const int r = wn * 64 + mi * 16 + h * 8 + g;
                        af[mi][h] = lds128(sA + r * 128 + (((2 * t + hs) ^ (r & 7)) << 4));
                    }
            }
#pragma unroll
            for (int hf = 0; hf < 2; hf++) {
                const int seg = 4 * t + 2 * hs + hf; // bf16 K 32t + 16hs + 8hf .. + 8: two mma steps
                uint4 bf[4];
#pragma unroll
                for (int ni = 0; ni < 4; ni++) {
                    const int r = wm * 32 + ni * 8 + g;
                    bf[ni] = lds128(sB + r * 256 + (bg_sw16(r, seg) << 4));
                }
#pragma unroll
                for (int mi = 0; mi < 4; mi++) {
                    uint32_t a[2][4]; // [step][a0..a3]: a0/a2 row g K {q, q+1} / {q+2, q+3}, a1/a3 row g + 8
                    if (FP8) {
                        const uint32_t w0s0 = hf ? af[mi][0].z : af[mi][0].x, w0s1 = hf ? af[mi][0].w : af[mi][0].y;
                        const uint32_t w1s0 = hf ? af[mi][1].z : af[mi][1].x, w1s1 = hf ? af[mi][1].w : af[mi][1].y;
                        a[0][0] = e4m3_b01_bf16(w0s0), a[0][1] = e4m3_b01_bf16(w1s0);
                        a[0][2] = e4m3_b23_bf16(w0s0), a[0][3] = e4m3_b23_bf16(w1s0);
                        a[1][0] = e4m3_b01_bf16(w0s1), a[1][1] = e4m3_b01_bf16(w1s1);
                        a[1][2] = e4m3_b23_bf16(w0s1), a[1][3] = e4m3_b23_bf16(w1s1);
                    } else {
                        const int r = wn * 64 + mi * 16 + g;
                        const uint4 ra = lds128(sA + r * 256 + (bg_sw16(r, seg) << 4));
                        const uint4 rb = lds128(sA + (r + 8) * 256 + (bg_sw16(r + 8, seg) << 4));
                        a[0][0] = ra.x, a[0][1] = rb.x, a[0][2] = ra.y, a[0][3] = rb.y;
                        a[1][0] = ra.z, a[1][1] = rb.z, a[1][2] = ra.w, a[1][3] = rb.w;
                    }
#pragma unroll
                    for (int ni = 0; ni < 4; ni++) {
                        mma_bf16_16816(part[mi][ni], a[0][0], a[0][1], a[0][2], a[0][3], bf[ni].x, bf[ni].y);
                        mma_bf16_16816(part[mi][ni], a[1][0], a[1][1], a[1][2], a[1][3], bf[ni].z, bf[ni].w);
                    }
                }
            }
        }
        const float sc = FP8 ? e8m0_dec(__ldg(srow + kb)) * 0x1p20f : 1.f;
#pragma unroll
        for (int mi = 0; mi < 4; mi++)
#pragma unroll
            for (int ni = 0; ni < 4; ni++)
#pragma unroll
                for (int c = 0; c < 4; c++)
                    acc[mi][ni][c] += FP8 ? part[mi][ni][c] * sc : part[mi][ni][c];
    }
    cp_async_wait<0>();
#pragma unroll
    for (int mi = 0; mi < 4; mi++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int r = row0 + wn * 64 + mi * 16 + h * 8 + g;
            if (r >= n)
                continue;
            int j = 0;
            while (j + 1 < o.nseg && r >= o.off[j + 1])
                j++;
            float *y = o.y[j];
            const int nj = o.n[j], rr = r - o.off[j], bfo = o.bf[j];
#pragma unroll
            for (int ni = 0; ni < 4; ni++) {
                const int c = tok0 + wm * 32 + ni * 8 + 2 * t;
                const float v0 = acc[mi][ni][2 * h], v1 = acc[mi][ni][2 * h + 1];
                if (c < S)
                    y[(size_t)c * nj + rr] = bfo ? bf16r(v0) : v0;
                if (c + 1 < S)
                    y[(size_t)(c + 1) * nj + rr] = bfo ? bf16r(v1) : v1;
            }
        }
}
// ---------------------------------------------------------------- attention

// Window kv of token s: RMSNorm, RoPE of the tail, FP8 QDQ of the nope dims (buf: d floats of shared
// memory, sh: 32).
// pre (k_q_prep<true>): the thread's first norm weight (element threadIdx.x, loaded before the kernel's
// wait) and its first RoPE pair's table entries (pair threadIdx.x), used in place of their loads.
struct qprep_pre {
    float w0;
    float2 cs0;
};
__device__ void kv_prep_block(float *kv, int d, int rd, const uint16_t *normw, float eps, const float *rope,
                              long long pos0, int s, float *buf, float *sh, const qprep_pre *pre = nullptr)
{
    float *k = kv + (size_t)s * d;
    float ss = 0.f;
    for (int i = threadIdx.x; i < d; i += blockDim.x)
        ss += k[i] * k[i];
    ss = block_sum(ss, sh);
    float r = 1.0f / sqrtf(ss / (float)d + eps);
    for (int i = threadIdx.x; i < d; i += blockDim.x)
        buf[i] = bf16r((pre && i == (int)threadIdx.x ? pre->w0 : bf16ld(normw[i])) * (k[i] * r));
    __syncthreads();
    rope_pairs(buf + d - rd, rope + (size_t)(pos0 + s) * rd, rd, 0, pre ? &pre->cs0 : nullptr);
    __syncthreads();
    int warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    for (int b = warp; b < (d - rd) / 64; b += nw)
        warp_fp8_qdq64(buf + b * 64);
    __syncthreads();
    for (int i = threadIdx.x; i < d; i += blockDim.x)
        k[i] = buf[i];
}

// The attention's inputs in one launch, grid S + S*H (512 threads: one element a thread for head_dim
// 512): blocks b < S prepare the window kv of token b (kv_prep_block), the others query head
// (b - S) % H of token (b - S) / H: q * rsqrt(mean(q^2) + eps) in bf16 arithmetic, then RoPE of the
// tail. Sums: thread t adds elements t, t + 512, ... in order, then block_sum's xor trees.
// PRE (ATTN_LAT): the kv blocks' first norm weight loaded before the wait, every block's first RoPE pair's
// table entries right after it (the position is known then), so neither load waits behind the norm's sums;
// the same values in the same operations, so the same bits.
template <bool PRE = false>
__global__ void k_q_prep(float *Q, int S, int H, int d, int rd, float eps, const float *rope, const long long *ppos,
                         float *kv, const uint16_t *kv_norm)
{
    qprep_pre pre = {0.f, make_float2(0.f, 0.f)};
    const int tid = (int)threadIdx.x;
    if (PRE && (int)blockIdx.x < S && tid < d)
        pre.w0 = bf16ld(kv_norm[tid]);
    pdl_begin();
    long long pos0 = *ppos;
    extern __shared__ float buf[];
    __shared__ float sh[32];
    const int sq = (int)blockIdx.x < S ? (int)blockIdx.x : ((int)blockIdx.x - S) / H;
    if (PRE && tid < rd / 2) {
        const float *cs = rope + (size_t)(pos0 + sq) * rd;
        pre.cs0 = make_float2(cs[2 * tid], cs[2 * tid + 1]);
    }
    if ((int)blockIdx.x < S) {
        kv_prep_block(kv, d, rd, kv_norm, eps, rope, pos0, (int)blockIdx.x, buf, sh, PRE ? &pre : nullptr);
        return;
    }
    int b = (int)blockIdx.x - S, s = b / H;
    float *q = Q + (size_t)b * d;
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
    rope_pairs(buf + d - rd, rope + (size_t)(pos0 + s) * rd, rd, 0, PRE ? &pre.cs0 : nullptr);
    __syncthreads();
    for (int i = threadIdx.x; i < d; i += blockDim.x)
        q[i] = buf[i];
}

// rope_pairs on the last rd of a row of 32 NW values held by one warp, lane l holding values 32 w + l
// (rd % 32 == 0, so whether a group is in the tail is uniform over the warp): pair i is the values
// 32 NW - rd + 2i, + 1, in lanes l (even) and l + 1, which trade theirs by one shuffle; cs the position's
// table row. rope_pairs' operations on the same values.
template <int NW> __device__ __forceinline__ void warp_rope_tail(float (&x)[NW], int rd, const float *cs)
{
    const int lane = threadIdx.x & 31, odd = lane & 1;
#pragma unroll
    for (int w = 0; w < NW; w++) {
        const int i0 = 32 * w + lane - (32 * NW - rd); // this lane's position in the tail
        const float other = __shfl_xor_sync(0xffffffffu, x[w], 1);
        if (i0 >= 0) {
            const int pi = i0 >> 1;
            const float c = cs[2 * pi], sn = cs[2 * pi + 1];
            const float a = odd ? other : x[w], bb = odd ? x[w] : other;
            x[w] = odd ? bf16r(a * sn + bb * c) : bf16r(a * c - bb * sn);
        }
    }
}

constexpr int QPW_D = 512, QPW_HPB = 16, QPR_HPB = 32;
// k_q_prep_w's query heads with the values transposed (ROWS): lanes 16 h .. 16 h + 15 of a warp take head
// 2 w + h of the block's warp w, lane 16 h + g the head's values 32 g .. 32 g + 31 (64 or 128 contiguous
// bytes: 16-byte loads and stores). The warp-a-head form holds value 32 g + l in lane l of register g,
// so its sum of squares is 16 xor trees over the lanes, then one over the 16 group sums (lanes >= 16
// zero). Here a lane adds its group's 32 squares in the xor tree's order in registers (hcm_tree32: level
// 16 adds value l + 16 to l, ...), and the half-warp's lanes add the group sums by the second tree's
// levels 8, 4, 2, 1 (its level 16 added zeros: exact, the sums being >= +0). The scaling is elementwise
// and RoPE's pairs (2i, 2i + 1) are now neighbours in a lane. So every value gets k_q_prep's operations:
// the same bits, with half the instructions a head and no shuffle but the four (Nsight Compute had the
// warp-a-head form's issue slots 74% busy on its 85 shuffles a head; twenty-fourth session).
__device__ __forceinline__ void q_prep_rows(float *Q, int S, int H, int rd, float eps, const float *rope,
                                            long long pos0, uint16_t *q16, int in16)
{
    const int lane = threadIdx.x & 31, g = lane & 15;
    const long long b = ((long long)blockIdx.x - S) * QPR_HPB + (threadIdx.x >> 5) * 2 + (lane >> 4);
    const long long nh = (long long)S * H;
    if (((long long)blockIdx.x - S) * QPR_HPB + (threadIdx.x >> 5) * 2 >= nh) // both heads past the end: the whole warp
        return;
    const bool live = b < nh; // the other half runs on zeros (its shuffles stay in its half)
    const int s = live ? (int)divmod_idx(b, H, nullptr) : 0;
    float x[32];
    if (live && in16) {
        const uint4 *src = reinterpret_cast<const uint4 *>(q16 + (size_t)b * QPW_D + 32 * g);
#pragma unroll
        for (int c = 0; c < 4; c++) {
            const uint4 v = src[c];
            const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
            for (int k = 0; k < 4; k++) {
                x[8 * c + 2 * k] = __uint_as_float(w[k] << 16);
                x[8 * c + 2 * k + 1] = __uint_as_float(w[k] & 0xffff0000u);
            }
        }
    } else if (live) {
        const float4 *src = reinterpret_cast<const float4 *>(Q + (size_t)b * QPW_D + 32 * g);
#pragma unroll
        for (int c = 0; c < 8; c++) {
            const float4 v = src[c];
            x[4 * c] = v.x;
            x[4 * c + 1] = v.y;
            x[4 * c + 2] = v.z;
            x[4 * c + 3] = v.w;
        }
    } else {
#pragma unroll
        for (int l = 0; l < 32; l++)
            x[l] = 0.f;
    }
    float sq[16]; // the group's tree, its first level formed as the squares are
#pragma unroll
    for (int l = 0; l < 16; l++)
        sq[l] = bf16r(x[l] * x[l]) + bf16r(x[l + 16] * x[l + 16]);
#pragma unroll
    for (int l = 0; l < 8; l++)
        sq[l] = sq[l] + sq[l + 8];
#pragma unroll
    for (int l = 0; l < 4; l++)
        sq[l] = sq[l] + sq[l + 4];
    sq[0] = sq[0] + sq[2];
    sq[1] = sq[1] + sq[3];
    float t = sq[0] + sq[1];
#pragma unroll
    for (int o = 8; o; o >>= 1)
        t += __shfl_xor_sync(0xffffffffu, t, o);
    const float ms = bf16r(t / (float)QPW_D);
    const float r = bf16r(1.0f / sqrtf(bf16r(ms + eps)));
#pragma unroll
    for (int l = 0; l < 32; l++)
        x[l] = bf16r(x[l] * r);
    const int tail0 = QPW_D - rd; // rd % 32 == 0: a group is in the tail or not
    if (live && 32 * g >= tail0) {
        const float *cs = rope + (size_t)(pos0 + s) * rd + (32 * g - tail0); // pair i of the group: cs[2i], cs[2i + 1]
#pragma unroll
        for (int i = 0; i < 16; i++) {
            const float c = cs[2 * i], sn = cs[2 * i + 1], a = x[2 * i], bb = x[2 * i + 1];
            x[2 * i] = bf16r(a * c - bb * sn);
            x[2 * i + 1] = bf16r(a * sn + bb * c);
        }
    }
    if (!live)
        return;
    if (q16) { // the bf16 values' bits (exact)
        uint4 *dst = reinterpret_cast<uint4 *>(q16 + (size_t)b * QPW_D + 32 * g);
#pragma unroll
        for (int c = 0; c < 4; c++) {
            uint32_t w[4];
#pragma unroll
            for (int k = 0; k < 4; k++)
                w[k] = (__float_as_uint(x[8 * c + 2 * k]) >> 16) | (__float_as_uint(x[8 * c + 2 * k + 1]) & 0xffff0000u);
            dst[c] = make_uint4(w[0], w[1], w[2], w[3]);
        }
        return;
    }
    float4 *dst = reinterpret_cast<float4 *>(Q + (size_t)b * QPW_D + 32 * g);
#pragma unroll
    for (int c = 0; c < 8; c++)
        dst[c] = make_float4(x[4 * c], x[4 * c + 1], x[4 * c + 2], x[4 * c + 3]);
}

// k_q_prep for prefill chunks (S > CMP_MIN_S, head_dim 512), the same bits with a warp a query head
// instead of a block: k_q_prep's 133K blocks of a 2048-token chunk (64 heads) each wait on one
// element a thread, two block barriers and a shared-memory round trip, ~0.6 ms a V4-Flash layer for
// 0.5 GB of reads and writes (~0.13 ms at the copy rate). Lane l holds elements 32 w + l (w < 16),
// so each group of 32 is summed by the xor tree block_sum's warp w applies to the same values in
// the same lanes, and the 16 sums are then added by its second tree (lanes >= 16 zero); the scaling
// is elementwise and RoPE's pairs (2i, 2i + 1) of the tail are neighbouring lanes, so every value
// gets k_q_prep's operations. Blocks b < S: kv_prep_block as in k_q_prep (512 threads); the others:
// 16 heads a block. q16 != NULL: the queries' bf16 bits go there instead of Q (k_attn_hsw's input:
// half the bytes written and read); in16: they are read from there too (wq_b's bf16 products), each
// warp's head whole into registers before its writes, so in place.
// ROWS (since the twenty-fourth session; CTX_CUDA_QPREP_ROWS=0 keeps the warp-a-head form): q_prep_rows,
// two heads a warp, each lane one 32-value group of a head, QPR_HPB heads a block.
template <bool ROWS>
__global__ void __launch_bounds__(512, ROWS ? 2 : 1)
    k_q_prep_w(float *Q, int S, int H, int rd, float eps, const float *rope, const long long *ppos,
               float *kv, const uint16_t *kv_norm, uint16_t *q16, int in16)
{
    pdl_begin();
    long long pos0 = *ppos;
    __shared__ float buf[QPW_D], sh[32];
    if ((int)blockIdx.x < S) {
        kv_prep_block(kv, QPW_D, rd, kv_norm, eps, rope, pos0, (int)blockIdx.x, buf, sh);
        return;
    }
    if (ROWS) {
        q_prep_rows(Q, S, H, rd, eps, rope, pos0, q16, in16);
        return;
    }
    const int lane = threadIdx.x & 31;
    const long long b = ((long long)blockIdx.x - S) * QPW_HPB + (threadIdx.x >> 5); // query head of the chunk
    if (b >= (long long)S * H) // a whole warp; no block barrier below
        return;
    const int s = (int)divmod_idx(b, H, nullptr);
    float *q = Q + (size_t)b * QPW_D;
    constexpr int NW = QPW_D / 32;
    float x[NW];
    if (in16) { // the bf16 values in q16 (wq_b wrote them there); rewritten below, in place
#pragma unroll
        for (int w = 0; w < NW; w++)
            x[w] = __uint_as_float((uint32_t)q16[(size_t)b * QPW_D + 32 * w + lane] << 16);
    } else {
#pragma unroll
        for (int w = 0; w < NW; w++)
            x[w] = q[32 * w + lane];
    }
    float t = 0.f;
#pragma unroll
    for (int w = 0; w < NW; w++) {
        const float v = warp_sum(bf16r(x[w] * x[w])); // block_sum's warp w
        if (lane == w)
            t = v;
    }
    const float sum = warp_sum(t); // its second tree: lanes < 16 the warps' sums, the others zero
    const float ms = bf16r(sum / (float)QPW_D);
    const float r = bf16r(1.0f / sqrtf(bf16r(ms + eps)));
#pragma unroll
    for (int w = 0; w < NW; w++)
        x[w] = bf16r(x[w] * r);
    warp_rope_tail(x, rd, rope + (size_t)(pos0 + s) * rd);
    if (q16) { // the bf16 values' bits instead (k_attn_hsw's queries; exact)
#pragma unroll
        for (int w = 0; w < NW; w++)
            q16[(size_t)b * QPW_D + 32 * w + lane] = (uint16_t)(__float_as_uint(x[w]) >> 16);
        return;
    }
#pragma unroll
    for (int w = 0; w < NW; w++)
        q[32 * w + lane] = x[w];
}

// Indexer queries: RoPE of the tail, Hadamard, FP4 QDQ. Grid S*Hi. With q8 != NULL also their 8-bit
// form (warp_i8_pack) into q8 [S*Hi][di] / qx [S*Hi].
// With wts != NULL also k_scale_bf16's wts[b] = bf16(wts[b] * wsc) of its own element b (the grid is
// one block per weight).
__global__ void k_iq_prep(float *qI, int Hi, int di, int rd, const float *rope, const long long *ppos, float hsc,
                          float *wts, float wsc, int8_t *q8, uint32_t *qx)
{
    pdl_begin();
    long long pos0 = *ppos;
    extern __shared__ float buf[];
    if (wts && threadIdx.x == 0)
        wts[blockIdx.x] = bf16r(wts[blockIdx.x] * wsc);
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
    if (q8 && warp == 0) // a prefill chunk's queries in 8-bit form too (k_idx_score_i8)
        warp_i8_pack(buf, di, q8 + (size_t)blockIdx.x * di, qx + blockIdx.x);
}

// k_iq_prep with a warp a head for prefill chunks (index_head_dim 128; ATTN_IQ_W, the default): the same
// bits. k_iq_prep's block of 128 threads per head passes 10 barriers (RoPE, 7 Hadamard stages, the QDQ,
// the stores) for 128 values, 131K blocks a 2048-token chunk (flash4's indexer stage 3.3 -> 3.2 ms at
// 128K, the 8K suffix's 13.7 -> 13.0 ms, H200). A one-token step keeps k_iq_prep: its 64 blocks took
// the same time as this kernel's 16 (--attn-ab 255,511 within +-5 us). Lane l holds values 32 j + l
// (j < 4): RoPE's pairs are neighbouring lanes (warp_rope_tail), the Hadamard's stages h < 32 pair lane
// l with l ^ h
// (the lower index takes a + b, the upper a - b: block_hadamard's two operations on the same two
// values) and h = 32, 64 pair registers, the scaling and each 32-block's FP4 QDQ (warp_fp4_qdq32's
// operations, the block being value j of every lane: warp_fp4_qdq32v) are the lane's own; the 8-bit form is
// warp_i8_pack's on the stored row. 4 heads a block.
constexpr int IQW_D = 128, IQW_HPB = 4;
__global__ void __launch_bounds__(32 * IQW_HPB) k_iq_prep_w(float *qI, int nh, int Hi, int rd, const float *rope,
                                                            const long long *ppos, float hsc, float *wts, float wsc,
                                                            int8_t *q8, uint32_t *qx)
{
    pdl_begin();
    const int lane = threadIdx.x & 31, b = (int)blockIdx.x * IQW_HPB + (int)(threadIdx.x >> 5);
    if (b >= nh) // a whole warp; no block barrier below
        return;
    const long long pos0 = *ppos;
    if (wts && lane == 0)
        wts[b] = bf16r(wts[b] * wsc);
    const int s = (int)divmod_idx(b, Hi, nullptr);
    float *q = qI + (size_t)b * IQW_D;
    float x[4];
#pragma unroll
    for (int j = 0; j < 4; j++)
        x[j] = q[32 * j + lane];
    warp_rope_tail(x, rd, rope + (size_t)(pos0 + s) * rd);
#pragma unroll
    for (int h = 1; h < 32; h *= 2) { // block_hadamard's stages within 32 values
        const bool up = lane & h;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const float o = __shfl_xor_sync(0xffffffffu, x[j], h);
            x[j] = up ? o - x[j] : x[j] + o;
        }
    }
#pragma unroll
    for (int h = 1; h < 4; h *= 2) // stages 32 and 64: registers j and j + h / 32
#pragma unroll
        for (int j = 0; j < 4; j++)
            if (!(j & h)) {
                const float a = x[j], bb = x[j + h];
                x[j] = a + bb;
                x[j + h] = a - bb;
            }
#pragma unroll
    for (int j = 0; j < 4; j++) { // block_hadamard's scaling, then warp_fp4_qdq32 of block j
        x[j] = warp_fp4_qdq32v(bf16r(x[j] * hsc));
        q[32 * j + lane] = x[j];
    }
    if (q8) { // the 8-bit form from the row as stored (each lane reads back its own values)
        __syncwarp();
        warp_i8_pack(q, IQW_D, q8 + (size_t)b * IQW_D, qx + b);
    }
}

// The end of a compressed entry whose pooled values (bf16-valued) are in ent[0..width): RMSNorm,
// RoPE by the table row `cs` (the block's first position), then FP8 QDQ (main) or Hadamard + FP4 QDQ
// (indexer), into dst, and with k8 != NULL (indexer keys) the entry's 8-bit form into *k8 / *kx. Each
// thread takes channels tid, tid + blockDim, ... for the norm's sum, so the bits depend on blockDim:
// k_compress and k_compress_fin run it with the same block sizes.
__device__ __forceinline__ void compress_finish(float *ent, float *sh, int width, const uint16_t *normw, float eps,
                                                const float *cs, int rd, int indexer, float hsc, float *dst,
                                                int8_t *k8, uint32_t *kx)
{
    float ss = 0.f;
    for (int ch = threadIdx.x; ch < width; ch += blockDim.x)
        ss += ent[ch] * ent[ch];
    ss = block_sum(ss, sh);
    float r = 1.0f / sqrtf(ss / (float)width + eps);
    for (int ch = threadIdx.x; ch < width; ch += blockDim.x)
        ent[ch] = bf16r(bf16ld(normw[ch]) * (ent[ch] * r));
    __syncthreads();
    rope_pairs(ent + width - rd, cs, rd, 0);
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
    for (int ch = threadIdx.x; ch < width; ch += blockDim.x)
        dst[ch] = ent[ch];
    if (k8 && warp == 0) // the indexer key's 8-bit form beside it (k_idx_score_i8)
        warp_i8_pack(ent, width, k8, kx);
    __syncthreads();
}

// A compressor over a chunk, token by token in one block (the carry is sequential): write each
// token's projections (score + ape) into its carry slot; when a block of `ratio` completes, pool
// (softmax over the slots per channel), RMSNorm, RoPE at the block's first position, then FP8 QDQ
// (main) or Hadamard + FP4 QDQ (indexer), into cache[(p+1)/ratio - 1]. Decode steps (S <= 8); a
// prefill chunk runs the same arithmetic in parallel (k_compress_pool, _fin, _carry below).
__global__ void k_compress(const float *kvp, const float *scp, int S, const long long *ppos, int ratio, int width,
                           const float *ape, const uint16_t *normw, float eps, int indexer, float *ckv, float *csc,
                           float *cache, const float *rope, int rd, float hsc, int8_t *k8, uint32_t *kx)
{
    pdl_begin();
    long long pos0 = *ppos;
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
        long long ce = (p + 1) / ratio - 1;
        compress_finish(ent, sh, width, normw, eps, rope + (size_t)(p + 1 - ratio) * rd, rd, indexer, hsc,
                        cache + (size_t)ce * width, k8 ? k8 + (size_t)ce * width : k8, kx ? kx + ce : kx);
    }
}

// A prefill chunk's compressor (S > CMP_MIN_S) in parallel, the same arithmetic as k_compress:
// entry k covers positions [k ratio, (k+1) ratio) and completes at pe = (k+1) ratio - 1; the chunk
// [pos0, pos0 + S) completes entries pos0 / ratio .. (pos0 + S) / ratio - 1. Slot sl of entry k
// (ns = ratio slots, CSA: 2 ratio, the first ratio the previous block's first `width` channels, the
// rest the current block's last `width`) is position q = pe + 1 - ns + sl, read from the chunk's
// projections when q >= pos0 (score + ape[q % ratio], added as k_compress adds them), else from the
// carry as it stood at the chunk's start: CSA slot sl >= ratio (the current block) or, for the
// previous block, slot sl + ratio while that block was still open at pos0 (it completes in this
// chunk: pe - ratio >= pos0), slot sl once it had completed (moved by k_compress to 0..ratio-1).
// Three launches: k_compress_pool (one block per (entry, 32 channels): the slots staged in shared
// memory, then per channel k_compress's max, sum of exps and weighted sum in slot order, the exps
// and the products computed in parallel but each exactly as k_compress computes it), the bf16
// values into the entry's cache row; k_compress_fin (one block per entry, k_compress's block size):
// compress_finish on that row, in place; k_compress_carry: the carry k_compress leaves behind (each
// slot the latest position of its residue; CSA's previous-block rows the last completed block).
// Bit-identical to k_compress in cache and carry, so chunking stays invisible.
#define CMP_MIN_S 8
#define CMP_CH 32     // channels of a pool block
#define CMP_WARPS 8   // its warps
#define CMP_MAXNS 128 // slots staged (2 x 128 x 32 floats: 32 KB)
__device__ __forceinline__ void cmp_slot(const float *kvp, const float *scp, const float *ape, const float *ckv,
                                         const float *csc, long long pos0, long long pe, int ratio, int overlap, int rw,
                                         int sl, int i, float *kv, float *sc)
{
    int ns = overlap ? 2 * ratio : ratio;
    long long q = pe + 1 - ns + sl;
    if (q >= pos0) {
        size_t o = (size_t)(q - pos0) * rw + i;
        *kv = kvp[o];
        *sc = scp[o] + ape[(size_t)(sl % ratio) * rw + i];
    } else {
        int cs = overlap && sl < ratio && pe - ratio >= pos0 ? sl + ratio : sl;
        *kv = ckv[(size_t)cs * rw + i];
        *sc = csc[(size_t)cs * rw + i];
    }
}

__global__ void __launch_bounds__(CMP_CH *CMP_WARPS) k_compress_pool(const float *kvp, const float *scp, int S,
                                                                     const long long *ppos, int ratio, int width,
                                                                     const float *ape, const float *ckv,
                                                                     const float *csc, float *cache)
{
    __shared__ float ssc[CMP_MAXNS][CMP_CH], skv[CMP_MAXNS][CMP_CH], sred[CMP_CH];
    long long pos0 = *ppos, k = pos0 / ratio + blockIdx.x, pe = (k + 1) * ratio - 1;
    if (pe >= pos0 + S) // uniform over the block
        return;
    int overlap = ratio == 4, rw = (overlap ? 2 : 1) * width, ns = (overlap ? 2 : 1) * ratio;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, ch = blockIdx.y * CMP_CH + lane;
    for (int sl = warp; sl < ns; sl += CMP_WARPS)
        cmp_slot(kvp, scp, ape, ckv, csc, pos0, pe, ratio, overlap, rw, sl,
                 (overlap && sl >= ratio ? width : 0) + ch, &skv[sl][lane], &ssc[sl][lane]);
    __syncthreads();
    if (warp == 0) { // the max in slot order (as k_compress)
        float mx = -INFINITY;
        for (int sl = 0; sl < ns; sl++)
            mx = fmaxf(mx, ssc[sl][lane]);
        sred[lane] = mx;
    }
    __syncthreads();
    for (int sl = warp; sl < ns; sl += CMP_WARPS) // expf(score - max): k_compress's value, computed once
        ssc[sl][lane] = expf(ssc[sl][lane] - sred[lane]);
    __syncthreads();
    if (warp == 0) {
        float sum = 0.f;
        for (int sl = 0; sl < ns; sl++)
            sum += ssc[sl][lane];
        sred[lane] = sum;
    }
    __syncthreads();
    for (int sl = warp; sl < ns; sl += CMP_WARPS) // kv * (e / sum), rounded as k_compress rounds it
        skv[sl][lane] = skv[sl][lane] * (ssc[sl][lane] / sred[lane]);
    __syncthreads();
    if (warp == 0) {
        float acc = 0.f;
        for (int sl = 0; sl < ns; sl++)
            acc += skv[sl][lane];
        cache[(size_t)k * width + ch] = bf16r(acc);
    }
}

__global__ void k_compress_fin(int S, const long long *ppos, int ratio, int width, const uint16_t *normw, float eps,
                               int indexer, float *cache, const float *rope, int rd, float hsc, int8_t *k8, uint32_t *kx)
{
    extern __shared__ float ent[];
    __shared__ float sh[32];
    long long pos0 = *ppos, k = pos0 / ratio + blockIdx.x;
    if ((k + 1) * ratio - 1 >= pos0 + S)
        return;
    float *dst = cache + (size_t)k * width;
    for (int ch = threadIdx.x; ch < width; ch += blockDim.x)
        ent[ch] = dst[ch];
    __syncthreads();
    compress_finish(ent, sh, width, normw, eps, rope + (size_t)(k * ratio) * rd, rd, indexer, hsc, dst,
                    k8 ? k8 + (size_t)k * width : k8, kx ? kx + k : kx);
}

// One thread per (residue j, element i of a carry row).
__global__ void k_compress_carry(const float *kvp, const float *scp, int S, const long long *ppos, int ratio,
                                 int width, const float *ape, float *ckv, float *csc)
{
    int overlap = ratio == 4, rw = (overlap ? 2 : 1) * width;
    size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (t >= (size_t)ratio * rw)
        return;
    int j = (int)(t / rw), i = (int)(t % rw), cur = (overlap ? ratio : 0) + j;
    long long pos0 = *ppos, plast = pos0 + S - 1;
    long long q = plast - (((plast - j) % ratio) + ratio) % ratio; // the latest position = j mod ratio
    float okv = ckv[(size_t)cur * rw + i], osc = csc[(size_t)cur * rw + i];
    if (overlap && (pos0 + S) / ratio > pos0 / ratio) { // the last block completed here -> previous rows
        long long qq = ((pos0 + S) / ratio - 1) * ratio + j;
        float pkv = okv, psc = osc;
        if (qq >= pos0) {
            size_t o = (size_t)(qq - pos0) * rw + i;
            pkv = kvp[o];
            psc = scp[o] + ape[(size_t)j * rw + i];
        }
        ckv[(size_t)j * rw + i] = pkv;
        csc[(size_t)j * rw + i] = psc;
    }
    if (q >= pos0) {
        size_t o = (size_t)(q - pos0) * rw + i;
        ckv[(size_t)cur * rw + i] = kvp[o];
        csc[(size_t)cur * rw + i] = scp[o] + ape[(size_t)j * rw + i];
    }
}

// Indexer scores: score[s][e] = bf16(sum_h bf16(relu(bf16(q_h . key_e)) * w_h)) for e < (p+1)/4.
// One thread per (token, entry): the token's queries and weights sit in shared memory (read as
// broadcasts), the thread's key is read once in float4 pieces, and each head's dot product is summed
// in dimension order (a*b + c rounded twice, the CPU's scalar loop) before the bf16 rounding; heads
// are added in head order. Grid-stride over entries with a fixed grid (graph replay), grid.y = S.
template <int HI>
__global__ void __launch_bounds__(256) k_idx_score(const float *qI, const float *wts, const float *keys, int di,
                                                   const long long *ppos, float *score, size_t ld)
{
    pdl_begin();
    extern __shared__ float qs[]; // [HI][di] then w[HI]
    int s = blockIdx.y;
    long long nv = (*ppos + s + 1) / 4;
    if ((long long)blockIdx.x * blockDim.x >= nv) // nothing for this block (the grid is sized for max_ctx)
        return;
    const float *q = qI + (size_t)s * HI * di;
    for (int i = threadIdx.x; i < HI * di; i += blockDim.x)
        qs[i] = q[i];
    float *ws = qs + HI * di;
    for (int i = threadIdx.x; i < HI; i += blockDim.x)
        ws[i] = wts[(size_t)s * HI + i];
    __syncthreads();
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < nv; e += (long long)gridDim.x * blockDim.x) {
        const float4 *key = reinterpret_cast<const float4 *>(keys + (size_t)e * di);
        float acc[HI];
#pragma unroll
        for (int h = 0; h < HI; h++)
            acc[h] = 0.f;
        for (int c = 0; c < di / 4; c++) {
            float4 k4 = __ldg(key + c);
#pragma unroll
            for (int h = 0; h < HI; h++) {
                float4 q4 = reinterpret_cast<const float4 *>(qs + h * di)[c];
                float a = acc[h];
                a = a + q4.x * k4.x;
                a = a + q4.y * k4.y;
                a = a + q4.z * k4.z;
                a = a + q4.w * k4.w;
                acc[h] = a;
            }
        }
        float sum = 0.f;
#pragma unroll
        for (int h = 0; h < HI; h++) {
            float dot = bf16r(acc[h]);
            if (dot < 0.f)
                dot = 0.f;
            sum += bf16r(dot * ws[h]);
        }
        score[(size_t)s * ld + e] = bf16r(sum);
    }
}
// Any other head count: one warp per (token, entry), lanes over the dimensions.
__global__ void k_idx_score_warp(const float *qI, const float *wts, const float *keys, int Hi, int di,
                                 const long long *ppos, float *score, size_t ld)
{
    pdl_begin();
    int s = blockIdx.y, lane = threadIdx.x & 31;
    long long nv = (*ppos + s + 1) / 4;
    for (long long e = blockIdx.x * 8LL + (threadIdx.x >> 5); e < nv; e += gridDim.x * 8LL) {
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
}

// Indexer scores on tensor cores, for prefill chunks (S >= IDX_TC_MIN_S): the same formula and the
// same bits as k_idx_score wherever the fp32 dot products are exact (below). Block = 4 queries of up
// to 64 heads (or 8 of up to 32) x a run of IDX_TC_ET-entry tiles; each warp holds 32 heads
// of one query as mma A fragments (bf16, in registers for the whole run), each tile of keys is
// converted to bf16 on its way into shared memory, and mma.sync m16n8k16 (bf16 in, fp32 out) gives
// the dot products. Why this is exact: the queries and keys are FP4-QDQ'd, every value an e2m1 code
// (at most 2 significant bits) times a power-of-two scale per 32 dimensions, so bf16 holds them
// exactly and every product is exact; within one 32-dim block the products are multiples of
// u = sq*sk/4 and their sum is at most 32*36*sq*sk = 4608u (13 bits), so the tensor core's sum of a
// block (a fresh accumulator per block: its two k16 steps) is exact. The blocks' partials are then
// added in fp32. The CPU (inf_cpu_dot) adds the same products in another order (8-lane strided fp32
// sums); both give the exact dot, hence the same bits, whenever every partial sum of either order is
// representable, which holds when sum|q_i k_i| <= 2^24 u_min (u_min: the smallest block unit). After
// a Hadamard the blocks' scales stay within a few powers of two and this always holds (di = 128:
// scale spreads of sq*sk up to 2^9 in the worst case of all-6 codes); beyond it the two orders may
// round differently (each dot within a few fp32 ulps of sum|q_i k_i|), which tests/kernels/test_idx.c
// bounds. Each head's term bf16(relu(bf16(dot)) * w_h) is staged in shared memory as bf16 (it is a
// bf16 value) and one thread per (query, entry) adds the heads in head order, as the CPU does.
//
// Measured (H200, 64 heads x 128, 125K entries; bench-gpu-engine --suffix): 0.063 / 0.087 / 3.60 /
// 28.8 ms for S = 1 / 4 / 256 / 2048 against 0.138 / 0.525 / 30.7 / 244 ms one thread per entry
// (8.5x for chunks, 19% of the bf16 tensor-core peak). With fewer than 4 queries (decode) most of
// its warps would idle: k_idx_score_tc1 below takes those, with a grid fixed from max_ctx (graph
// replay). Both kernels' shared-memory limits are set once per device (idx_tc_attrs, at engine
// creation), never inside a capture.
#define IDX_TC_ET 64
#define IDX_TC_MIN_S 4
template <int DI>
constexpr size_t idx_tc_smem()
{
    return sizeof(uint16_t) * ((size_t)IDX_TC_ET * (DI + 8) + 8 * 32 * (IDX_TC_ET + 8));
}
// grid (tiles, ceil(S / queries per block)), 256 threads; Hi <= 64.
template <int DI>
__global__ void __launch_bounds__(256, 2) k_idx_score_tc(const float *qI, const float *wts, const float *keys, int Hi,
                                                         int S, const long long *ppos, float *score, size_t ld)
{
    constexpr int KS = DI / 16, KST = DI + 8, TST = IDX_TC_ET + 8; // strides padded: conflict-free fragments
    extern __shared__ __align__(16) unsigned char idx_smem[];
    uint16_t *ks = (uint16_t *)idx_smem;  // [ET][KST] the tile's keys
    uint16_t *ts = ks + IDX_TC_ET * KST;  // [8 warps][32 heads][TST] the heads' terms
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    int wpq = Hi <= 32 ? 1 : 2, QB = 8 / wpq; // warps per query, queries per block
    long long pos0 = *ppos;
    int sb = (int)blockIdx.y * QB;
    if (sb >= S)
        return;
    int nq = S - sb < QB ? S - sb : QB;
    long long nvmax = (pos0 + sb + nq) / 4; // the entries of the block's last query
    if ((long long)blockIdx.x * IDX_TC_ET >= nvmax)
        return;
    int qi = warp / wpq, h0 = (warp % wpq) * 32, s = sb + qi, qvalid = qi < nq;
    // A fragments (row = head h0 + 16m + g (+8), col = dimension) and the rows' head weights
    uint32_t a[2][KS][4];
    float wv[2][2];
#pragma unroll
    for (int m = 0; m < 2; m++) {
#pragma unroll
        for (int r = 0; r < 2; r++) {
            int h = h0 + 16 * m + g + 8 * r;
            int ok = qvalid && h < Hi;
            wv[m][r] = ok ? wts[(size_t)s * Hi + h] : 0.f;
            const float *qr = qI + ((size_t)s * Hi + (ok ? h : 0)) * DI;
#pragma unroll
            for (int kk = 0; kk < KS; kk++)
#pragma unroll
                for (int c = 0; c < 2; c++) {
                    float2 v = ok ? *reinterpret_cast<const float2 *>(qr + kk * 16 + 2 * t + 8 * c) : make_float2(0.f, 0.f);
                    a[m][kk][r + 2 * c] = pack_bf16x2(v.x, v.y);
                }
        }
    }
    uint16_t *tw = ts + (size_t)warp * 32 * TST;
    for (long long e0 = (long long)blockIdx.x * IDX_TC_ET; e0 < nvmax; e0 += (long long)gridDim.x * IDX_TC_ET) {
        for (int i = threadIdx.x; i < IDX_TC_ET * DI / 4; i += blockDim.x) {
            int er = i / (DI / 4), c4 = i % (DI / 4);
            float4 v = e0 + er < nvmax ? __ldg(reinterpret_cast<const float4 *>(keys + (size_t)(e0 + er) * DI) + c4)
                                       : make_float4(0.f, 0.f, 0.f, 0.f);
            uint2 p;
            p.x = pack_bf16x2(v.x, v.y);
            p.y = pack_bf16x2(v.z, v.w);
            *reinterpret_cast<uint2 *>(ks + er * KST + c4 * 4) = p;
        }
        __syncthreads();
        if (qvalid) {
            for (int ng = 0; ng < IDX_TC_ET / 16; ng++) { // 16 entries: two n8 tiles
                float run[2][2][4];
#pragma unroll
                for (int kb = 0; kb < DI / 32; kb++) {
                    float part[2][2][4];
#pragma unroll
                    for (int m = 0; m < 2; m++)
#pragma unroll
                        for (int n = 0; n < 2; n++)
#pragma unroll
                            for (int j = 0; j < 4; j++)
                                part[m][n][j] = 0.f;
#pragma unroll
                    for (int k2 = 0; k2 < 2; k2++) {
                        int kk = 2 * kb + k2;
                        uint32_t b[2][2];
#pragma unroll
                        for (int n = 0; n < 2; n++) {
                            const uint16_t *kr = ks + (ng * 16 + n * 8 + g) * KST + kk * 16 + 2 * t;
                            b[n][0] = *reinterpret_cast<const uint32_t *>(kr);
                            b[n][1] = *reinterpret_cast<const uint32_t *>(kr + 8);
                        }
#pragma unroll
                        for (int m = 0; m < 2; m++)
#pragma unroll
                            for (int n = 0; n < 2; n++)
                                mma_bf16_16816(part[m][n], a[m][kk], b[n][0], b[n][1]);
                    }
#pragma unroll
                    for (int m = 0; m < 2; m++)
#pragma unroll
                        for (int n = 0; n < 2; n++)
#pragma unroll
                            for (int j = 0; j < 4; j++)
                                run[m][n][j] = kb ? run[m][n][j] + part[m][n][j] : part[m][n][j];
                }
                // C fragment: c0, c1 = (row g, cols 2t, 2t+1), c2, c3 = (row g+8, the same cols)
#pragma unroll
                for (int m = 0; m < 2; m++)
#pragma unroll
                    for (int n = 0; n < 2; n++)
#pragma unroll
                        for (int r = 0; r < 2; r++) {
                            float d0 = bf16r(run[m][n][2 * r]), d1 = bf16r(run[m][n][2 * r + 1]);
                            if (d0 < 0.f)
                                d0 = 0.f;
                            if (d1 < 0.f)
                                d1 = 0.f;
                            *reinterpret_cast<uint32_t *>(tw + (16 * m + g + 8 * r) * TST + ng * 16 + n * 8 + 2 * t) =
                                pack_bf16x2(d0 * wv[m][r], d1 * wv[m][r]);
                        }
            }
        }
        __syncthreads();
        for (int i = threadIdx.x; i < nq * IDX_TC_ET; i += blockDim.x) {
            int q2 = i / IDX_TC_ET, er = i % IDX_TC_ET, s2 = sb + q2;
            long long e = e0 + er;
            if (e >= (pos0 + s2 + 1) / 4)
                continue;
            const uint16_t *tq = ts + (size_t)q2 * wpq * 32 * TST + er;
            float sum = 0.f;
            for (int h = 0; h < Hi; h++)
                sum += __uint_as_float((uint32_t)tq[(size_t)h * TST] << 16); // rows of the query's warps in head order
            score[(size_t)s2 * ld + e] = bf16r(sum);
        }
        // the next tile's key writes touch ks only; its term writes come after the next barrier
    }
}

// Indexer scores on tensor cores for a few queries (decode: S = 1 inside the captured graph; any
// S < IDX_TC_MIN_S): with one query the mma's M dimension is the query's heads, so a block takes one
// query's 64 heads x a tile of IDX_TC_ET entries: warp w holds heads 32 (w & 1).. as A fragments
// (as k_idx_score_tc) and computes entries 16 (w >> 1).. of the tile. The tile's keys come in fp32 by
// cp.async into a two-stage ring (the next tile loads while this one is multiplied: one query does
// little arithmetic per key byte, so the kernel is a stream over the keys), are converted to bf16 as
// B fragments are read, and every dot product, rounding and the head-ordered sum are k_idx_score_tc's
// own, so the scores are its bits. Grid (blocks, S) fixed by the caller (graph replay: sized from
// max_ctx); a block strides over tiles and blocks past the position's entries exit at once.
#define IDX_TC1_KPAD 8  // floats of padding per key row: conflict-free float2 fragment reads
#define IDX_TC1_TST 24  // bf16 stride of a warp's term rows (16 entries + 8): conflict-free writes
template <int DI>
constexpr size_t idx_tc1_smem()
{
    return sizeof(float) * 2 * IDX_TC_ET * (DI + IDX_TC1_KPAD) + sizeof(uint16_t) * 8 * 32 * IDX_TC1_TST;
}
template <int DI>
__global__ void __launch_bounds__(256, 2) k_idx_score_tc1(const float *qI, const float *wts, const float *keys, int Hi,
                                                          const long long *ppos, float *score, size_t ld)
{
    pdl_begin();
    constexpr int KS = DI / 16, KST = DI + IDX_TC1_KPAD, CPR = DI / 4; // 16-byte chunks per key row
    extern __shared__ __align__(16) unsigned char idx_smem[];
    float *kbuf = (float *)idx_smem;                                // [2][ET][KST] fp32 keys
    uint16_t *ts = (uint16_t *)(kbuf + 2 * IDX_TC_ET * KST);       // [8 warps][32 heads][TST] terms
    int s = blockIdx.y, warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    long long nv = (*ppos + s + 1) / 4;
    if ((long long)blockIdx.x * IDX_TC_ET >= nv) // nothing for this block (the grid is sized for max_ctx)
        return;
    int h0 = (warp & 1) * 32, es = (warp >> 1) * 16, active = h0 < Hi;
    uint32_t a[2][KS][4];
    float wv[2][2];
#pragma unroll
    for (int m = 0; m < 2; m++) {
#pragma unroll
        for (int r = 0; r < 2; r++) {
            int h = h0 + 16 * m + g + 8 * r;
            int ok = h < Hi;
            wv[m][r] = ok ? wts[(size_t)s * Hi + h] : 0.f;
            const float *qr = qI + ((size_t)s * Hi + (ok ? h : 0)) * DI;
#pragma unroll
            for (int kk = 0; kk < KS; kk++)
#pragma unroll
                for (int c = 0; c < 2; c++) {
                    float2 v = ok ? *reinterpret_cast<const float2 *>(qr + kk * 16 + 2 * t + 8 * c) : make_float2(0.f, 0.f);
                    a[m][kk][r + 2 * c] = pack_bf16x2(v.x, v.y);
                }
        }
    }
    uint32_t kbase = (uint32_t)__cvta_generic_to_shared(kbuf);
    uint16_t *tw = ts + (size_t)warp * 32 * IDX_TC1_TST;
    long long stride = (long long)gridDim.x * IDX_TC_ET;
    // tile i of this block starts at entry e0 = blockIdx.x * ET + i * stride; stage i & 1
    auto load = [&](long long e0, int stage) {
#pragma unroll
        for (int j = 0; j < IDX_TC_ET * CPR / 256; j++) {
            int i = threadIdx.x + j * 256, er = i / CPR, c4 = i % CPR;
            bool ok = e0 + er < nv;
            const float *src = keys + (ok ? (size_t)(e0 + er) * DI + c4 * 4 : 0);
            cp_async16(kbase + (uint32_t)(sizeof(float) * ((stage * IDX_TC_ET + er) * KST + c4 * 4)), src, ok);
        }
        cp_async_commit();
    };
    long long e0 = (long long)blockIdx.x * IDX_TC_ET;
    load(e0, 0);
    for (int stage = 0; e0 < nv; e0 += stride, stage ^= 1) {
        if (e0 + stride < nv) {
            load(e0 + stride, stage ^ 1); // the stage the last tile read (released by its second barrier)
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads(); // this tile's keys are in; the last tile's terms have been summed
        if (active) {
            const float *kt = kbuf + (size_t)stage * IDX_TC_ET * KST;
            float run[2][2][4];
#pragma unroll
            for (int kb = 0; kb < DI / 32; kb++) {
                float part[2][2][4];
#pragma unroll
                for (int m = 0; m < 2; m++)
#pragma unroll
                    for (int n = 0; n < 2; n++)
#pragma unroll
                        for (int j = 0; j < 4; j++)
                            part[m][n][j] = 0.f;
#pragma unroll
                for (int k2 = 0; k2 < 2; k2++) {
                    int kk = 2 * kb + k2;
                    uint32_t b[2][2];
#pragma unroll
                    for (int n = 0; n < 2; n++) {
                        const float *kr = kt + (es + n * 8 + g) * KST + kk * 16 + 2 * t;
                        float2 v0 = *reinterpret_cast<const float2 *>(kr), v1 = *reinterpret_cast<const float2 *>(kr + 8);
                        b[n][0] = pack_bf16x2(v0.x, v0.y);
                        b[n][1] = pack_bf16x2(v1.x, v1.y);
                    }
#pragma unroll
                    for (int m = 0; m < 2; m++)
#pragma unroll
                        for (int n = 0; n < 2; n++)
                            mma_bf16_16816(part[m][n], a[m][kk], b[n][0], b[n][1]);
                }
#pragma unroll
                for (int m = 0; m < 2; m++)
#pragma unroll
                    for (int n = 0; n < 2; n++)
#pragma unroll
                        for (int j = 0; j < 4; j++)
                            run[m][n][j] = kb ? run[m][n][j] + part[m][n][j] : part[m][n][j];
            }
#pragma unroll
            for (int m = 0; m < 2; m++)
#pragma unroll
                for (int n = 0; n < 2; n++)
#pragma unroll
                    for (int r = 0; r < 2; r++) {
                        float d0 = bf16r(run[m][n][2 * r]), d1 = bf16r(run[m][n][2 * r + 1]);
                        if (d0 < 0.f)
                            d0 = 0.f;
                        if (d1 < 0.f)
                            d1 = 0.f;
                        *reinterpret_cast<uint32_t *>(tw + (16 * m + g + 8 * r) * IDX_TC1_TST + n * 8 + 2 * t) =
                            pack_bf16x2(d0 * wv[m][r], d1 * wv[m][r]);
                    }
        }
        __syncthreads(); // terms written; every warp is done with this stage's keys
        if (threadIdx.x < IDX_TC_ET && e0 + threadIdx.x < nv) {
            int er = threadIdx.x;
            const uint16_t *tq = ts + (size_t)(er >> 4) * 2 * 32 * IDX_TC1_TST + (er & 15);
            float sum = 0.f;
            for (int h = 0; h < Hi; h++) // warp (er / 16) * 2 + h / 32, row h % 32: head order
                sum += __uint_as_float((uint32_t)tq[(size_t)h * IDX_TC1_TST] << 16);
            score[(size_t)s * ld + e0 + er] = bf16r(sum);
        }
    }
}

// Indexer scores of prefill chunks (S >= IDX_TC_MIN_S), the engine's kernel: k_idx_score_tc's blocks,
// fragments and mma loop (so its dot products, hence its bits: tests/kernels/test_idx.c compares the
// two on every entry), with three changes that cut what it spent outside the tensor cores:
// - the grid is (query groups, runs of tiles) with the groups fastest, and a block walks a contiguous
//   run of tiles: the blocks resident at once are the groups of one run, so they read the same key
//   tiles at about the same time (from L2; k_idx_score_tc's strided runs spread every group over the
//   whole key range, 64 MB at 500K, more than the L2 holds);
// - the next tile's fp32 keys come by cp.async into a staging buffer while this tile is multiplied,
//   each thread converting to bf16 exactly the 16-byte pieces it copied itself (so wait_group alone
//   orders them: no extra barrier), instead of a load whose latency every tile waited for;
// - the per-head epilogue runs on bf16 pairs: cvt.rn.bf16x2 of the two fp32 dots (bf16r's rounding),
//   max.bf16x2 with 0 (relu: a negative becomes +0, and a zero term never changes the head sum, whose
//   running value starts at +0 and so is never -0), mul.rn.bf16x2 by the head weight (one rounding of
//   the exact product of two bf16 values: the weights are bf16-valued, k_scale_bf16, which is the
//   fp32 product rounded to bf16 as before) -- four instructions per two terms instead of ~20 integer
//   ones; and the head-ordered sum reads two entries' terms per 32-bit load (one thread per query
//   and entry pair, two independent fp32 chains in head order).
// Grid (ceil(S / queries per block), runs), tpb tiles a run; 256 threads, Hi <= 64.
template <int DI>
constexpr size_t idx_tc2_smem()
{
    return sizeof(float) * (size_t)IDX_TC_ET * DI + idx_tc_smem<DI>();
}
// relu(d) * w on two bf16 values at once (d: two dot products already rounded to bf16; w: the head's
// weight in both halves), rounded once to bf16.
__device__ __forceinline__ uint32_t idx_term_bf16x2(uint32_t d, uint32_t w)
{
    uint32_t r;
    asm("{\n\t.reg .b32 rz, rl;\n\tmov.b32 rz, 0;\n\tmax.bf16x2 rl, %1, rz;\n\tmul.rn.bf16x2 %0, rl, %2;\n\t}"
        : "=r"(r)
        : "r"(d), "r"(w));
    return r;
}
// The block of k_idx_score_tc2 / _i8 (grid (query groups, runs of tpb tiles)): queries sb.. (nq of them,
// wpq warps each), entries [e0, eend) of the run, the position; false when the block has none.
struct idx_run {
    int wpq, sb, nq;
    long long pos0, e0, eend;
};
// The same for blocks of qpb queries (wpq left alone: k_idx_score_i8e and _iwg take 8 queries a block).
__device__ __forceinline__ bool idx_run_at(int qpb, int S, const long long *ppos, int tpb, struct idx_run *b)
{
    b->pos0 = *ppos;
    b->sb = (int)blockIdx.x * qpb;
    if (b->sb >= S)
        return false;
    b->nq = S - b->sb < qpb ? S - b->sb : qpb;
    long long nvmax = (b->pos0 + b->sb + b->nq) / 4; // the entries of the block's last query
    b->e0 = (long long)blockIdx.y * tpb * IDX_TC_ET;
    b->eend = b->e0 + (long long)tpb * IDX_TC_ET;
    if (b->eend > nvmax || blockIdx.y == gridDim.y - 1) // the last run takes every entry left (max_n too small)
        b->eend = nvmax;
    return b->e0 < b->eend;
}
__device__ __forceinline__ bool idx_run_of(int Hi, int S, const long long *ppos, int tpb, struct idx_run *b)
{
    b->wpq = Hi <= 32 ? 1 : 2; // warps per query; 8 / wpq queries per block
    return idx_run_at(8 / b->wpq, S, ppos, tpb, b);
}
// A tile's scores from the heads' bf16 terms ts [warps][32 heads][TST] (a query's warps in a row): one
// thread per (query, pair of entries) adds the heads in head order in fp32 (the CPU's order), two
// entries' terms per 32-bit load, two chains; only the entries below a query's (pos + 1) / 4 written.
__device__ __forceinline__ void idx_head_sums(const uint16_t *ts, int TST, int Hi, const struct idx_run &b, long long e0,
                                              float *score, size_t ld)
{
    if ((int)threadIdx.x >= b.nq * (IDX_TC_ET / 2))
        return;
    int q2 = (int)threadIdx.x / (IDX_TC_ET / 2), ep = (int)threadIdx.x % (IDX_TC_ET / 2), s2 = b.sb + q2;
    long long e = e0 + 2 * ep, nv = (b.pos0 + s2 + 1) / 4;
    const uint32_t *tq = reinterpret_cast<const uint32_t *>(ts + (size_t)q2 * b.wpq * 32 * TST) + ep;
    float sum0 = 0.f, sum1 = 0.f;
#pragma unroll 8
    for (int h = 0; h < Hi; h++) { // rows of the query's warps in head order
        uint32_t u = tq[(size_t)h * (TST / 2)];
        sum0 += __uint_as_float(u << 16);
        sum1 += __uint_as_float(u & 0xffff0000u);
    }
    if (e < nv)
        score[(size_t)s2 * ld + e] = bf16r(sum0);
    if (e + 1 < nv)
        score[(size_t)s2 * ld + e + 1] = bf16r(sum1);
}
template <int DI>
__global__ void __launch_bounds__(256, 2) k_idx_score_tc2(const float *qI, const float *wts, const float *keys, int Hi,
                                                          int S, const long long *ppos, float *score, size_t ld, int tpb)
{
    constexpr int KS = DI / 16, KST = DI + 8, TST = IDX_TC_ET + 8, CPR = DI / 4, NCH = IDX_TC_ET * CPR / 256;
    extern __shared__ __align__(16) unsigned char idx_smem[];
    float *stg = (float *)idx_smem;                     // [ET][DI] a tile's fp32 keys, as copied
    uint16_t *ks = (uint16_t *)(stg + IDX_TC_ET * DI); // [ET][KST] the tile's keys in bf16
    uint16_t *ts = ks + IDX_TC_ET * KST;               // [8 warps][32 heads][TST] the heads' terms
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    struct idx_run b;
    if (!idx_run_of(Hi, S, ppos, tpb, &b))
        return;
    const int wpq = b.wpq, sb = b.sb, nq = b.nq;
    const long long eend = b.eend;
    long long e0 = b.e0;
    int qi = warp / wpq, h0 = (warp % wpq) * 32, s = sb + qi, qvalid = qi < nq;
    // A fragments (row = head h0 + 16m + g (+8), col = dimension) and the rows' head weights (bf16 pairs)
    uint32_t a[2][KS][4], wv2[2][2];
#pragma unroll
    for (int m = 0; m < 2; m++) {
#pragma unroll
        for (int r = 0; r < 2; r++) {
            int h = h0 + 16 * m + g + 8 * r;
            int ok = qvalid && h < Hi;
            float w = ok ? wts[(size_t)s * Hi + h] : 0.f;
            wv2[m][r] = pack_bf16x2(w, w);
            const float *qr = qI + ((size_t)s * Hi + (ok ? h : 0)) * DI;
#pragma unroll
            for (int kk = 0; kk < KS; kk++)
#pragma unroll
                for (int c = 0; c < 2; c++) {
                    float2 v = ok ? *reinterpret_cast<const float2 *>(qr + kk * 16 + 2 * t + 8 * c) : make_float2(0.f, 0.f);
                    a[m][kk][r + 2 * c] = pack_bf16x2(v.x, v.y);
                }
        }
    }
    uint16_t *tw = ts + (size_t)warp * 32 * TST;
    uint32_t sbase = (uint32_t)__cvta_generic_to_shared(stg);
    // piece i = threadIdx.x + 256 j of the tile at entry t0: row i / CPR, 16 bytes i % CPR; zeros past eend
    auto load = [&](long long t0) {
#pragma unroll
        for (int j = 0; j < NCH; j++) {
            int i = threadIdx.x + j * 256;
            bool ok = t0 + i / CPR < eend;
            const float *src = keys + (ok ? (size_t)t0 * DI + (size_t)4 * i : 0); // row i / CPR, floats 4 (i % CPR)
            cp_async16(sbase + (uint32_t)(sizeof(float) * 4 * i), src, ok);
        }
        cp_async_commit();
    };
    load(e0);
    for (; e0 < eend; e0 += IDX_TC_ET) {
        // this thread's pieces of this tile are in; they are read by asm volatile loads, which stay
        // after the wait (the compiler does not see the cp.async writes)
        cp_async_wait<0>();
#pragma unroll 2 // (fully unrolled, its loads in flight together cost spills: 128 registers)
        for (int j = 0; j < NCH; j++) { // ks is free: every warp passed the last tile's second barrier
            int i = threadIdx.x + j * 256;
            float4 v;
            asm volatile("ld.shared.v4.f32 {%0, %1, %2, %3}, [%4];\n"
                         : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w)
                         : "r"(sbase + (uint32_t)(sizeof(float) * 4 * i)));
            uint2 p;
            p.x = pack_bf16x2(v.x, v.y);
            p.y = pack_bf16x2(v.z, v.w);
            *reinterpret_cast<uint2 *>(ks + (i / CPR) * KST + (i % CPR) * 4) = p;
        }
        __syncthreads(); // the tile's bf16 keys are in; every thread is done summing the last tile's terms
        if (e0 + IDX_TC_ET < eend)
            load(e0 + IDX_TC_ET); // into the pieces this thread has just converted
        if (qvalid) {
            for (int nt = 0; nt < IDX_TC_ET / 8; nt++) { // 8 entries (one n8 tile) at a time: fewer live registers
                float run[2][4];
#pragma unroll
                for (int kb = 0; kb < DI / 32; kb++) {
                    float part[2][4];
#pragma unroll
                    for (int m = 0; m < 2; m++)
#pragma unroll
                        for (int j = 0; j < 4; j++)
                            part[m][j] = 0.f;
#pragma unroll
                    for (int k2 = 0; k2 < 2; k2++) {
                        int kk = 2 * kb + k2;
                        const uint16_t *kr = ks + (nt * 8 + g) * KST + kk * 16 + 2 * t;
                        uint32_t b0 = *reinterpret_cast<const uint32_t *>(kr), b1 = *reinterpret_cast<const uint32_t *>(kr + 8);
#pragma unroll
                        for (int m = 0; m < 2; m++)
                            mma_bf16_16816(part[m], a[m][kk], b0, b1);
                    }
#pragma unroll
                    for (int m = 0; m < 2; m++)
#pragma unroll
                        for (int j = 0; j < 4; j++)
                            run[m][j] = kb ? run[m][j] + part[m][j] : part[m][j];
                }
                // C fragment: c0, c1 = (row g, cols 2t, 2t+1), c2, c3 = (row g+8, the same cols)
#pragma unroll
                for (int m = 0; m < 2; m++)
#pragma unroll
                    for (int r = 0; r < 2; r++)
                        *reinterpret_cast<uint32_t *>(tw + (16 * m + g + 8 * r) * TST + nt * 8 + 2 * t) =
                            idx_term_bf16x2(pack_bf16x2(run[m][2 * r], run[m][2 * r + 1]), wv2[m][r]);
            }
        }
        __syncthreads(); // the terms are in; every warp is done with ks
        idx_head_sums(ts, TST, Hi, b, e0, score, ld);
    }
}

// ---- Indexer scores on integer tensor cores (issue 10; 2026-11-29, sixth session) ----
//
// Indexer queries and keys are FP4-QDQ'd: every value is an e2m1 code times a power of two per 32 dims,
// i.e. an integer in [-12, 12] times 2^(s - 1). So a row of di values is exactly a vector of int8 values
// times a power of two per 32-dim block (its "8-bit form": int8 [di] + one exponent byte a block in a
// 32-bit word), and often times ONE power of two for the whole row (the "common" form: every block's
// integers shifted to the smallest exponent; fits when the blocks' exponents are within 3 of each other,
// 12 * 2^3 <= 127, which is what a Hadamard leaves). warp_i8_pack writes that form: common when it fits,
// else per block (exact for any FP4-QDQ'd row; values off that grid, which the engine never makes,
// are rounded to 8 bits in their block: documented, tested).
//
// k_idx_score_i8 then computes the dots with mma.sync m16n8k32 s8 x s8 -> s32, which is exact:
// - both sides common (every entry of the 64-entry tile and every head of the warp): ONE integer
//   accumulator over all di dims (|sum| <= 128 * 127^2 < 2^22), scaled once: dot = c * 2^(Eq + Ek), the
//   exact dot product. k_idx_score_tc2 adds four exact block partials in fp32 and so gives the exact
//   dot whenever those sums are exact (the condition tests/kernels/test_idx.c checks: always after a
//   Hadamard), i.e. the same bits there; elsewhere this one is the more exact;
// - otherwise (a tile holding a per-block entry, or a warp holding a per-block head): each 32-dim
//   block in a fresh accumulator, its exact partial c_b * 2^(Eq_b + Ek_b) added in block order in fp32:
//   tc2's partials and additions, so tc2's bits everywhere.
// The accumulator starts at 0x4B400000 (1.5 * 2^23 as a float), so its bits read as a float ARE
// 1.5 * 2^23 + c (|c| < 2^22): no integer-to-float conversion (a quarter-rate instruction), and
// fma(acc, 2^Eq, -1.5 * 2^23 * 2^Eq) = c * 2^Eq exactly. Against tc2: half the tensor-core
// instructions (k32 per mma instead of k16 and no separate block partials), half the query registers,
// a quarter of the key bytes (the tile's keys land by cp.async straight into their fragment layout;
// no fp32 -> bf16 conversion pass). The rest (grid, epilogue, head-ordered sums) is tc2's.
#define IDX_I8_KPAD 16 // bytes of padding per key row: conflict-free 32-bit fragment reads
// n rows of di values: one warp a row (the bulk form: a state upload, a restore, a random fill). With
// qdq != 0 the rows are first FP4-QDQ'd in place (a random fill, so that its keys are the engine's kind).
__global__ void k_i8_pack_rows(float *x, long long n, int di, int qdq, int8_t *q, uint32_t *qx)
{
    long long w = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5, nw = ((long long)gridDim.x * blockDim.x) >> 5;
    for (; w < n; w += nw) { // warp-uniform
        float *row = x + (size_t)w * di;
        if (qdq)
            for (int b = 0; b < di / 32; b++)
                warp_fp4_qdq32(row + b * 32);
        __syncwarp();
        warp_i8_pack(row, di, q + (size_t)w * di, qx + w);
    }
}
__device__ __forceinline__ void mma_s8_16832(int *d, const uint32_t *a, uint32_t b0, uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ bool i8_common(uint32_t x) { return x == (x & 0xffu) * 0x01010101u; }
#define IDX_I8_MAGIC 0x4B400000
// A warp's query side: A fragments of 32 heads (row = head h0 + 16m + g (+8), col = dimension; a[m][kb]:
// a0/a1 rows g/g+8 dims 32kb + 4t.., a2/a3 the same rows at +16), the rows' exponent words, their
// common-form scales (sq; nq = -1.5 * 2^23 * sq) and head weights (bf16 pairs); returns whether every
// head of the warp is in common form (uniform over the warp).
template <int NB>
__device__ __forceinline__ bool i8_query(const int8_t *q8, const uint32_t *qx, const float *wts, int s, int Hi, int h0,
                                         bool qvalid, uint32_t (&a)[2][NB][4], uint32_t (&qxw)[2][2],
                                         float (&sq)[2][2], float (&nq)[2][2], uint32_t (&wv2)[2][2])
{
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    bool qc = true;
#pragma unroll
    for (int m = 0; m < 2; m++)
#pragma unroll
        for (int r = 0; r < 2; r++) {
            int h = h0 + 16 * m + g + 8 * r;
            bool ok = qvalid && h < Hi;
            float w = ok ? wts[(size_t)s * Hi + h] : 0.f;
            wv2[m][r] = pack_bf16x2(w, w);
            const int8_t *qr = q8 + ((size_t)s * Hi + (ok ? h : 0)) * (NB * 32);
#pragma unroll
            for (int kb = 0; kb < NB; kb++)
#pragma unroll
                for (int c = 0; c < 2; c++)
                    a[m][kb][r + 2 * c] = ok ? *reinterpret_cast<const uint32_t *>(qr + 32 * kb + 16 * c + 4 * t) : 0u;
            uint32_t x = ok ? qx[(size_t)s * Hi + h] : 0u;
            qxw[m][r] = x;
            qc = qc && i8_common(x);
            sq[m][r] = pow2i((int)(int8_t)(x & 0xffu));
            nq[m][r] = -12582912.f * sq[m][r];
        }
    return __all_sync(0xffffffffu, qc);
}
// The warp's 32 heads x one n8 tile of entries (key rows at kr = the tile's row g + 4t bytes, rows
// KST apart; exponent words x0, x1 of entries 2t, 2t+1), into its term rows tw (stride TST) at column
// col: the exact dot products (fast: every head and entry in common form) or tc2's block partials in
// block order, then bf16(relu(bf16(dot)) * w_h).
template <int NB>
__device__ __forceinline__ void i8_tile8(const uint32_t (&a)[2][NB][4], const uint32_t (&qxw)[2][2],
                                         const float (&sq)[2][2], const float (&nq)[2][2], const uint32_t (&wv2)[2][2],
                                         const int8_t *kr, uint32_t x0, uint32_t x1, bool fast, uint16_t *tw, int TST,
                                         int col)
{
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    float dot[2][4];
    if (fast) {
        int acc[2][4];
#pragma unroll
        for (int m = 0; m < 2; m++)
#pragma unroll
            for (int j = 0; j < 4; j++)
                acc[m][j] = IDX_I8_MAGIC;
#pragma unroll
        for (int kb = 0; kb < NB; kb++) {
            uint32_t b0 = *reinterpret_cast<const uint32_t *>(kr + 32 * kb);
            uint32_t b1 = *reinterpret_cast<const uint32_t *>(kr + 32 * kb + 16);
#pragma unroll
            for (int m = 0; m < 2; m++)
                mma_s8_16832(acc[m], a[m][kb], b0, b1);
        }
        const float sk0 = pow2i((int)(int8_t)(x0 & 0xffu)), sk1 = pow2i((int)(int8_t)(x1 & 0xffu));
#pragma unroll
        for (int m = 0; m < 2; m++)
#pragma unroll
            for (int r = 0; r < 2; r++) {
                dot[m][2 * r] = fmaf(__int_as_float(acc[m][2 * r]), sq[m][r], nq[m][r]) * sk0;
                dot[m][2 * r + 1] = fmaf(__int_as_float(acc[m][2 * r + 1]), sq[m][r], nq[m][r]) * sk1;
            }
    } else {
#pragma unroll
        for (int kb = 0; kb < NB; kb++) {
            int acc[2][4];
#pragma unroll
            for (int m = 0; m < 2; m++)
#pragma unroll
                for (int j = 0; j < 4; j++)
                    acc[m][j] = IDX_I8_MAGIC;
            uint32_t b0 = *reinterpret_cast<const uint32_t *>(kr + 32 * kb);
            uint32_t b1 = *reinterpret_cast<const uint32_t *>(kr + 32 * kb + 16);
#pragma unroll
            for (int m = 0; m < 2; m++)
                mma_s8_16832(acc[m], a[m][kb], b0, b1);
            const float sk0 = pow2i((int)(int8_t)((x0 >> (8 * kb)) & 0xffu));
            const float sk1 = pow2i((int)(int8_t)((x1 >> (8 * kb)) & 0xffu));
#pragma unroll
            for (int m = 0; m < 2; m++)
#pragma unroll
                for (int r = 0; r < 2; r++) {
                    const float sqb = pow2i((int)(int8_t)((qxw[m][r] >> (8 * kb)) & 0xffu));
                    const float p0 = fmaf(__int_as_float(acc[m][2 * r]), sqb, -12582912.f * sqb);
                    const float p1 = fmaf(__int_as_float(acc[m][2 * r + 1]), sqb, -12582912.f * sqb);
                    dot[m][2 * r] = kb ? fmaf(p0, sk0, dot[m][2 * r]) : p0 * sk0;
                    dot[m][2 * r + 1] = kb ? fmaf(p1, sk1, dot[m][2 * r + 1]) : p1 * sk1;
                }
        }
    }
#pragma unroll
    for (int m = 0; m < 2; m++)
#pragma unroll
        for (int r = 0; r < 2; r++)
            *reinterpret_cast<uint32_t *>(tw + (16 * m + g + 8 * r) * TST + col + 2 * t) =
                idx_term_bf16x2(pack_bf16x2(dot[m][2 * r], dot[m][2 * r + 1]), wv2[m][r]);
}
// A 64-entry key tile at entry t0 into buffer b (cp.async, one commit group): piece i = row i / (DI / 16),
// 16 bytes i % (DI / 16); exponent words by the first ET threads; zeros past eend (a zero word: common
// form, exponent 0).
template <int DI>
__device__ __forceinline__ void i8_tile_load(uint32_t kbase, uint32_t xbase, const int8_t *k8, const uint32_t *kx,
                                             long long t0, long long eend, int b)
{
    constexpr int KST = DI + IDX_I8_KPAD, CPR = DI / 16, NCH = (IDX_TC_ET * CPR + 255) / 256;
#pragma unroll
    for (int j = 0; j < NCH; j++) {
        int i = threadIdx.x + j * 256;
        if (i < IDX_TC_ET * CPR) {
            int row = i / CPR, pc = i % CPR;
            bool ok = t0 + row < eend;
            cp_async16(kbase + (uint32_t)((b * IDX_TC_ET + row) * KST + 16 * pc), k8 + (ok ? (size_t)(t0 + row) * DI + 16 * pc : 0),
                       ok);
        }
    }
    if (threadIdx.x < IDX_TC_ET) {
        bool ok = t0 + threadIdx.x < eend;
        cp_async4(xbase + (uint32_t)(4 * (b * IDX_TC_ET + threadIdx.x)), kx + (ok ? t0 + threadIdx.x : 0), ok);
    }
    cp_async_commit();
}
template <int DI>
constexpr size_t idx_i8_smem()
{
    return 2 * ((size_t)IDX_TC_ET * (DI + IDX_I8_KPAD) + sizeof(uint32_t) * IDX_TC_ET) +
           sizeof(uint16_t) * 8 * 32 * (IDX_TC_ET + 8);
}
// Grid (ceil(S / queries per block), runs), tpb tiles a run (tc2's); 256 threads, Hi <= 64.
// q8 / qx: the queries' 8-bit form [S][Hi][DI] / [S][Hi]; k8 / kx: the keys' [n][DI] / [n].
template <int DI>
__global__ void __launch_bounds__(256, 2)
    k_idx_score_i8(const int8_t *q8, const uint32_t *qx, const float *wts, const int8_t *k8, const uint32_t *kx, int Hi,
                   int S, const long long *ppos, float *score, size_t ld, int tpb)
{
    constexpr int NB = DI / 32, KST = DI + IDX_I8_KPAD, TST = IDX_TC_ET + 8;
    extern __shared__ __align__(16) unsigned char idx_smem[];
    // [2][ET][KST] key tiles, [2][ET] their exponent words, [8 warps][32 heads][TST] the heads' terms
    uint32_t *xs = (uint32_t *)(idx_smem + 2 * IDX_TC_ET * KST);
    uint16_t *ts = (uint16_t *)(xs + 2 * IDX_TC_ET);
    const uint32_t kbase = (uint32_t)__cvta_generic_to_shared(idx_smem), xbase = (uint32_t)__cvta_generic_to_shared(xs);
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    struct idx_run b;
    if (!idx_run_of(Hi, S, ppos, tpb, &b))
        return;
    const int wpq = b.wpq, sb = b.sb, nq = b.nq;
    const long long eend = b.eend;
    long long e0 = b.e0;
    int qi = warp / wpq, h0 = (warp % wpq) * 32, s = sb + qi, qvalid = qi < nq;
    uint32_t a[2][NB][4], qxw[2][2], wv2[2][2];
    float sq[2][2], nq2[2][2];
    const bool qc = i8_query<NB>(q8, qx, wts, s, Hi, h0, qvalid, a, qxw, sq, nq2, wv2);
    uint16_t *tw = ts + (size_t)warp * 32 * TST;
    int buf = 0;
    i8_tile_load<DI>(kbase, xbase, k8, kx, e0, eend, 0);
    for (; e0 < eend; e0 += IDX_TC_ET, buf ^= 1) {
        cp_async_wait<0>(); // this thread's pieces of this tile are in
        // every thread's pieces are in, and every thread is done with the previous tile (its terms
        // summed, its buffer free); the tile is all common form or not (uniform over the block)
        int tc = __syncthreads_and(threadIdx.x >= IDX_TC_ET || i8_common(xs[buf * IDX_TC_ET + threadIdx.x]));
        if (e0 + IDX_TC_ET < eend)
            i8_tile_load<DI>(kbase, xbase, k8, kx, e0 + IDX_TC_ET, eend, buf ^ 1);
        if (qvalid) {
            const int8_t *kt = (const int8_t *)idx_smem + (size_t)buf * IDX_TC_ET * KST;
            const uint32_t *xt = xs + buf * IDX_TC_ET;
            for (int nt = 0; nt < IDX_TC_ET / 8; nt++) // 8 entries (one n8 tile) at a time
                i8_tile8<NB>(a, qxw, sq, nq2, wv2, kt + (nt * 8 + g) * KST + 4 * t, xt[nt * 8 + 2 * t],
                             xt[nt * 8 + 2 * t + 1], tc && qc, tw, TST, nt * 8);
        }
        __syncthreads(); // the terms are in
        // tc2's sums (one thread per entry instead, all 256 busy, measured the same: 13.32 vs 13.34 ms at
        // S = 2048 over 125,000 entries)
        idx_head_sums(ts, TST, Hi, b, e0, score, ld);
    }
}

template <int DI>
constexpr size_t idx_i8d_smem() // key tiles as k_idx_score_i8's, the terms of one query's 64 heads
{
    return 2 * ((size_t)IDX_TC_ET * (DI + IDX_I8_KPAD) + sizeof(uint32_t) * IDX_TC_ET) +
           sizeof(uint16_t) * 64 * (IDX_TC_ET + 8);
}
// The integer kernel for fewer than IDX_TC_MIN_S queries (a decode step, inside its CUDA graph; tc1's
// layout): a block = one query (blockIdx.y) x tiles blockIdx.x, blockIdx.x + gridDim.x, ... (the grid
// fixed from max_ctx; blocks past the position's entries exit at once); warp w holds heads 32 (w & 1)..
// and computes entries 16 (w >> 1).. of each tile (two n8 tiles); the tiles stream through the same
// two cp.async buffers; one thread per entry adds the heads in order. Same arithmetic as k_idx_score_i8.
template <int DI>
__global__ void __launch_bounds__(256, 2)
    k_idx_score_i8d(const int8_t *q8, const uint32_t *qx, const float *wts, const int8_t *k8, const uint32_t *kx, int Hi,
                    const long long *ppos, float *score, size_t ld)
{
    constexpr int NB = DI / 32, KST = DI + IDX_I8_KPAD, TST = IDX_TC_ET + 8;
    pdl_begin(); // queries, weights and the newest key are the previous kernels'
    extern __shared__ __align__(16) unsigned char idx_smem[];
    uint32_t *xs = (uint32_t *)(idx_smem + 2 * IDX_TC_ET * KST);
    uint16_t *ts = (uint16_t *)(xs + 2 * IDX_TC_ET); // [64 heads][TST]
    const uint32_t kbase = (uint32_t)__cvta_generic_to_shared(idx_smem), xbase = (uint32_t)__cvta_generic_to_shared(xs);
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3, s = blockIdx.y;
    long long nv = (*ppos + s + 1) / 4;
    long long e0 = (long long)blockIdx.x * IDX_TC_ET, stride = (long long)gridDim.x * IDX_TC_ET;
    if (e0 >= nv) // nothing for this block (the grid is sized for max_ctx)
        return;
    int h0 = (warp & 1) * 32, ecol = (warp >> 1) * 16;
    uint32_t a[2][NB][4], qxw[2][2], wv2[2][2];
    float sq[2][2], nq2[2][2];
    const bool qc = i8_query<NB>(q8, qx, wts, s, Hi, h0, h0 < Hi, a, qxw, sq, nq2, wv2);
    uint16_t *tw = ts + (size_t)h0 * TST;
    int buf = 0;
    i8_tile_load<DI>(kbase, xbase, k8, kx, e0, nv, 0);
    for (; e0 < nv; e0 += stride, buf ^= 1) {
        cp_async_wait<0>();
        int tc = __syncthreads_and(threadIdx.x >= IDX_TC_ET || i8_common(xs[buf * IDX_TC_ET + threadIdx.x]));
        if (e0 + stride < nv)
            i8_tile_load<DI>(kbase, xbase, k8, kx, e0 + stride, nv, buf ^ 1);
        if (h0 < Hi) {
            const int8_t *kt = (const int8_t *)idx_smem + (size_t)buf * IDX_TC_ET * KST;
            const uint32_t *xt = xs + buf * IDX_TC_ET;
#pragma unroll
            for (int n2 = 0; n2 < 2; n2++) {
                int c = ecol + 8 * n2;
                i8_tile8<NB>(a, qxw, sq, nq2, wv2, kt + (c + g) * KST + 4 * t, xt[c + 2 * t], xt[c + 2 * t + 1], tc && qc,
                             tw, TST, c);
            }
        }
        __syncthreads(); // the terms are in
        if ((int)threadIdx.x < IDX_TC_ET) {
            long long e = e0 + threadIdx.x;
            const uint16_t *tq = ts + threadIdx.x;
            float sum = 0.f;
#pragma unroll 16
            for (int h = 0; h < Hi; h++)
                sum += __uint_as_float((uint32_t)tq[(size_t)h * TST] << 16);
            if (e < nv)
                score[(size_t)s * ld + e] = bf16r(sum);
        }
    }
}

// ---- Indexer scores with the entries on the mma's rows (k_idx_score_i8e; issue 10, 2026-11-29, eighth session) ----
//
// k_idx_score_i8 puts 16 heads on an mma's rows and 8 entries on its columns, so a (query, entry)'s 64
// head terms land in 64 different threads: each tile's terms go through shared memory and a second
// pass adds them in head order. That epilogue, not the tensor cores, set its speed (16% of the int8
// rate at S = 2048). Here the rows are 16 entries (A = keys, from a warp's own tile, in registers for
// all heads) and the columns the block's 8 queries (B = one head of each query, from shared memory),
// and the heads are the loop: thread (g, t) holds the same 4 (entry, query) elements of every head's
// product, so it adds the head terms in head order in its own registers. No term staging, no second
// pass; per head and element: the magic's removal, half a cvt.rn.relu.bf16x2, half a mul.rn.bf16x2, the
// bf16's widening and the fp32 add.
//
// Arithmetic (the bits of k_idx_score_i8 on every entry):
// - fast tiles (every entry of the warp's tile and every (query, head) of the block in the common form, with
//   exponents in [-40, 40] and each head weight scaled by its query's 2^Eq within [2^-40, 2^40] or 0):
//   the integer dot c (one accumulator over all dims, exact) gives term_h = bf16(relu(bf16(c)) * w'_h)
//   with w'_h = w_h * 2^Eq, and score = bf16(sum_h term_h) * 2^Ek. That is i8's bf16(relu(bf16(c 2^Eq
//   2^Ek)) w_h) summed and rounded, scaled by 2^Ek: a power of two commutes with every rounding while no
//   value leaves fp32's normal range, which the bounds make sure of (|c| < 2^21: terms within 2^-80 ..
//   2^103 in i8's form, sums below 2^110);
// - otherwise, per element: both sides common -> the exact dot (the blocks' integer partials added as
//   integers, scaled once), else i8's block partials in block order. Both-common elements in a mixed
//   tile get i8's per-block path's bits too there: partials of one common exponent are integers of that
//   unit below 2^21, so their fp32 sums are exact.
// Fragments: ldmatrix gives A (keys) its standard m16n8k32 fragments; the queries are stored so that a
// thread's standard B words of every 32-dim block (k 4t.. and 16 + 4t..) are one contiguous 8 * NB bytes:
// NB / 2 16-byte loads a head (one 8-byte load for di 32).
// Shape: a warp's tile is IE_MT m16 tiles (its A fragments stay in registers for all heads), a block
// IE_NW warps (one block an SM: the queries' 66 KB of shared memory). H200, 125K entries: 6.94 ms at
// S = 2048 against 7.18 with 4 tiles and 8 warps (255 registers: Nsight Compute had each of a scheduler's
// 2 warps issue every ~4 cycles, issue slots 47% busy; bench/gpu/results/2026-11-29-s10, calls 3 and 4).
#define IE_MT 2
#define IE_NW 16
#define IE_ET (16 * IE_MT) // entries a warp tile
#define IE_Q 8     // queries a block (the mma's n8)
#define IE_EXP 40  // the fast path's exponent bound (above)
template <int DI>
__host__ __device__ constexpr int ie_qstride(int Hi) // bytes a query in shared memory: conflict-free B loads
{
    return (Hi * DI + 127) / 128 * 128 + (DI == 128 ? 16 : DI == 64 ? 64 : 32);
}
template <int DI>
__host__ __device__ constexpr size_t idx_i8e_smem(int Hi)
{
    return (size_t)IE_Q * ie_qstride<DI>(Hi) + sizeof(uint32_t) * 3 * 64 * IE_Q +
           (size_t)IE_NW * IE_ET * (DI + IDX_I8_KPAD) + sizeof(uint32_t) * IE_NW * IE_ET;
}
__device__ __forceinline__ bool ie_exp_ok(uint32_t x)
{
    int E = (int)(int8_t)(x & 0xffu);
    return i8_common(x) && E >= -IE_EXP && E <= IE_EXP;
}
// A warp's IE_ET-entry tile at t0 into its buffer (cp.async, one commit group; zeros past eend).
template <int DI>
__device__ __forceinline__ void ie_tile_load(uint32_t kb, uint32_t xb, const int8_t *k8, const uint32_t *kx, long long t0,
                                             long long eend, int lane)
{
    constexpr int KST = DI + IDX_I8_KPAD, CPR = DI / 16;
#pragma unroll
    for (int j = 0; j < IE_ET * CPR / 32; j++) {
        int i = lane + 32 * j, row = i / CPR, pc = i % CPR;
        bool ok = t0 + row < eend;
        cp_async16(kb + (uint32_t)(row * KST + 16 * pc), k8 + (ok ? (size_t)(t0 + row) * DI + 16 * pc : 0), ok);
    }
#pragma unroll
    for (int j = 0; j < IE_ET / 32; j++) {
        int r = lane + 32 * j;
        bool ok = t0 + r < eend;
        cp_async4(xb + 4u * r, kx + (ok ? t0 + r : 0), ok);
    }
    cp_async_commit();
}
__device__ __forceinline__ uint32_t ie_relu_bf16x2(float lo, float hi) // relu(bf16(x)) of two values
{
    uint32_t r;
    asm("cvt.rn.relu.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}
__device__ __forceinline__ uint32_t ie_mul_bf16x2(uint32_t a, uint32_t b)
{
    uint32_t r;
    asm("mul.rn.bf16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
    return r;
}
// One m16 tile's head terms into its sums, in head order: u0 = the bf16 terms of (entry g, entry g + 8) for
// query 2t, u1 for query 2t + 1; sm as sum[mt] in k_idx_score_i8e.
__device__ __forceinline__ void ie_add_terms(float (&sm)[4], uint32_t u0, uint32_t u1)
{
    sm[0] += __uint_as_float(u0 << 16);
    sm[2] += __uint_as_float(u0 & 0xffff0000u);
    sm[1] += __uint_as_float(u1 << 16);
    sm[3] += __uint_as_float(u1 & 0xffff0000u);
}
// A head's B words of this thread (query g, thread t) from qh: QW words, 16-byte loads (quarter warps:
// query rows QS = 16 or 64 mod 128 bytes apart) or, for di 32, one 8-byte load (rows 32 mod 128 apart).
template <int QW>
__device__ __forceinline__ void ie_load_b(uint32_t (&b)[QW], const uint32_t *qh)
{
    if constexpr (QW % 4 == 0) {
#pragma unroll
        for (int i = 0; i < QW; i += 4) {
            uint4 v = *reinterpret_cast<const uint4 *>(qh + i);
            b[i] = v.x;
            b[i + 1] = v.y;
            b[i + 2] = v.z;
            b[i + 3] = v.w;
        }
    } else {
        static_assert(QW == 2, "ie_load_b: di 32, 64 or 128");
        uint2 v = *reinterpret_cast<const uint2 *>(qh);
        b[0] = v.x;
        b[1] = v.y;
    }
}
// The block's head weights as the terms use them (i8e and iwg): for every (head h < 64, query q < 8) at
// h * IE_Q + q, wf = bf16x2 of w' = w 2^Eq (the fast path's), wsl = bf16x2 of w, qxs = the exponent word
// (zeros past Hi heads and nq queries). Returns whether this thread's pairs all allow the fast path
// (common form, exponent within IE_EXP, w' zero or within 2^-40 .. 2^40); the caller ANDs it over the block.
__device__ __forceinline__ int ie_fill_weights(const uint32_t *qx, const float *wts, int Hi, int sb, int nq, uint32_t *wf,
                                               uint32_t *wsl, uint32_t *qxs)
{
    int okq = 1;
    for (int i = threadIdx.x; i < 64 * IE_Q; i += blockDim.x) {
        int h = i / IE_Q, q = i % IE_Q;
        bool in = h < Hi && q < nq;
        uint32_t x = in ? qx[(size_t)(sb + q) * Hi + h] : 0u;
        float w = in ? wts[(size_t)(sb + q) * Hi + h] : 0.f;
        bool f = ie_exp_ok(x);
        float wp = f ? w * pow2i((int)(int8_t)(x & 0xffu)) : 0.f;
        f = f && (wp == 0.f || (fabsf(wp) >= 0x1p-40f && fabsf(wp) <= 0x1p40f));
        okq &= f;
        wf[i] = pack_bf16x2(wp, wp);
        wsl[i] = pack_bf16x2(w, w);
        qxs[i] = x;
    }
    return okq;
}
// One head's terms of an m16 tile on the per-block path (tiles not in the fast form), added to sm as
// ie_add_terms does: a = the tile's A fragments (NB 32-dim blocks), b = this thread's B words (2 a
// block), w2 = the head's w of queries 2t, 2t + 1, xq their exponent words, ex the entries' (g, g + 8).
// Per element: both sides common -> the blocks' integer partials added as integers and scaled once (the
// exact dot), else i8's block partials in block order.
template <int NB>
__device__ __forceinline__ void ie_slow_terms(float (&sm)[4], const uint32_t (&a)[NB][4], const uint32_t *b, uint2 w2,
                                              const uint32_t (&xq)[2], const uint32_t (&ex)[2])
{
    float dot[4];
    int ctot[4] = {0, 0, 0, 0};
#pragma unroll
    for (int kb = 0; kb < NB; kb++) {
        int acc[4] = {IDX_I8_MAGIC, IDX_I8_MAGIC, IDX_I8_MAGIC, IDX_I8_MAGIC};
        mma_s8_16832(acc, a[kb], b[2 * kb], b[2 * kb + 1]);
#pragma unroll
        for (int j = 0; j < 4; j++) { // element j: entry row j >> 1, query 2t + (j & 1)
            const float sqb = pow2i((int)(int8_t)((xq[j & 1] >> (8 * kb)) & 0xffu));
            const float skb = pow2i((int)(int8_t)((ex[j >> 1] >> (8 * kb)) & 0xffu));
            const float p = fmaf(__int_as_float(acc[j]), sqb, -12582912.f * sqb);
            dot[j] = kb ? fmaf(p, skb, dot[j]) : p * skb;
            ctot[j] += acc[j] - IDX_I8_MAGIC;
        }
    }
#pragma unroll
    for (int j = 0; j < 4; j++)
        if (i8_common(xq[j & 1]) && i8_common(ex[j >> 1]))
            dot[j] = (float)ctot[j] * pow2i((int)(int8_t)(xq[j & 1] & 0xffu)) * pow2i((int)(int8_t)(ex[j >> 1] & 0xffu));
    uint32_t u0 = idx_term_bf16x2(pack_bf16x2(dot[0], dot[2]), w2.x);
    uint32_t u1 = idx_term_bf16x2(pack_bf16x2(dot[1], dot[3]), w2.y);
    ie_add_terms(sm, u0, u1);
}
// Grid (ceil(S / 8), runs), tpb 64-entry tiles a run; 32 IE_NW threads; Hi <= 64; dynamic shared memory
// idx_i8e_smem<DI>(Hi).
template <int DI>
__global__ void __launch_bounds__(32 * IE_NW, 1)
    k_idx_score_i8e(const int8_t *q8, const uint32_t *qx, const float *wts, const int8_t *k8, const uint32_t *kx, int Hi,
                    int S, const long long *ppos, float *score, size_t ld, int tpb)
{
    constexpr int NB = DI / 32, KST = DI + IDX_I8_KPAD, QW = 2 * NB, MT = IE_MT, ET = IE_ET; // QW: a thread's B words a head
    extern __shared__ __align__(16) unsigned char ie_smem[];
    const int QS = ie_qstride<DI>(Hi);
    int8_t *qs = (int8_t *)ie_smem;                          // [8 queries][QS] the heads' rows, permuted
    uint32_t *wf = (uint32_t *)(ie_smem + (size_t)IE_Q * QS); // [64 heads][8 queries] w' (fast path), bf16x2
    uint32_t *wsl = wf + 64 * IE_Q, *qxs = wsl + 64 * IE_Q;  // the same of w, and the queries' exponent words
    int8_t *ks = (int8_t *)(qxs + 64 * IE_Q);                   // [IE_NW warps][ET][KST] key tiles
    uint32_t *kxs = (uint32_t *)(ks + (size_t)IE_NW * ET * KST); // [IE_NW warps][ET] their exponent words
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    struct idx_run run = {};
    if (!idx_run_at(IE_Q, S, ppos, tpb, &run))
        return;
    const int sb = run.sb, nq = run.nq;
    const long long pos0 = run.pos0, e0 = run.e0, eend = run.eend;
    int8_t *kw = ks + (size_t)warp * ET * KST;
    uint32_t *kxw = kxs + warp * ET;
    const uint32_t kwb = (uint32_t)__cvta_generic_to_shared(kw), kxb = (uint32_t)__cvta_generic_to_shared(kxw);
    long long te = e0 + (long long)warp * ET;
    const long long tstride = (long long)IE_NW * ET;
    if (te < eend) // the first tile's copy runs under the queries' fill
        ie_tile_load<DI>(kwb, kxb, k8, kx, te, eend, lane);
    // the queries: word j of a head's row (dims 4j..4j+3: block j / 8, half (j / 4) & 1, t = j % 4) to word
    // t * QW + 2 * block + half
    for (int i = threadIdx.x; i < IE_Q * Hi * (DI / 4); i += blockDim.x) {
        int q = i / (Hi * (DI / 4)), rem = i % (Hi * (DI / 4)), h = rem / (DI / 4), j = rem % (DI / 4);
        uint32_t v = q < nq ? reinterpret_cast<const uint32_t *>(q8 + ((size_t)(sb + q) * Hi + h) * DI)[j] : 0u;
        reinterpret_cast<uint32_t *>(qs + (size_t)q * QS + (size_t)h * DI)[(j & 3) * QW + 2 * (j >> 3) + ((j >> 2) & 1)] = v;
    }
    const bool qfast = __syncthreads_and(ie_fill_weights(qx, wts, Hi, sb, nq, wf, wsl, qxs));
    const uint32_t *qme = reinterpret_cast<const uint32_t *>(qs + (size_t)g * QS) + t * QW; // query g, thread t's words
    for (; te < eend; te += tstride) {
        cp_async_wait<0>();
        __syncwarp();
        uint32_t a[MT][NB][4];
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int kb = 0; kb < NB; kb++) {
                uint32_t ad = kwb + (uint32_t)((16 * mt + (lane & 7) + 8 * ((lane >> 3) & 1)) * KST + 32 * kb + 16 * (lane >> 4));
                asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                             : "=r"(a[mt][kb][0]), "=r"(a[mt][kb][1]), "=r"(a[mt][kb][2]), "=r"(a[mt][kb][3])
                             : "r"(ad));
            }
        uint32_t ex[MT][2]; // exponent words of entries 16 mt + g + 8 r
        bool ef = true;
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int r = 0; r < 2; r++) {
                ex[mt][r] = kxw[16 * mt + g + 8 * r];
                ef = ef && ie_exp_ok(ex[mt][r]);
            }
        const bool fast = __all_sync(0xffffffffu, ef) && qfast;
        __syncwarp(); // every lane is done with the buffer
        if (te + tstride < eend)
            ie_tile_load<DI>(kwb, kxb, k8, kx, te + tstride, eend, lane);
        float sum[MT][4]; // [m tile][(entry g, query 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1)]
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int j = 0; j < 4; j++)
                sum[mt][j] = 0.f;
        if (fast) {
#pragma unroll 2
            for (int h = 0; h < Hi; h++) {
                uint32_t b[QW];
                ie_load_b<QW>(b, qme + h * (DI / 4));
                const uint2 w2 = *reinterpret_cast<const uint2 *>(wf + h * IE_Q + 2 * t);
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    int acc[4] = {IDX_I8_MAGIC, IDX_I8_MAGIC, IDX_I8_MAGIC, IDX_I8_MAGIC};
#pragma unroll
                    for (int kb = 0; kb < NB; kb++)
                        mma_s8_16832(acc, a[mt][kb], b[2 * kb], b[2 * kb + 1]);
                    // pairs of one query (one weight): (g, g+8) of query 2t, then of 2t+1
                    uint32_t u0 = ie_mul_bf16x2(ie_relu_bf16x2(__int_as_float(acc[0]) - 12582912.f,
                                                               __int_as_float(acc[2]) - 12582912.f), w2.x);
                    uint32_t u1 = ie_mul_bf16x2(ie_relu_bf16x2(__int_as_float(acc[1]) - 12582912.f,
                                                               __int_as_float(acc[3]) - 12582912.f), w2.y);
                    ie_add_terms(sum[mt], u0, u1);
                }
            }
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
#pragma unroll
                for (int j = 0; j < 4; j++)
                    sum[mt][j] = bf16r(sum[mt][j]) * pow2i((int)(int8_t)(ex[mt][j >> 1] & 0xffu));
        } else {
            for (int h = 0; h < Hi; h++) {
                uint32_t b[QW];
                ie_load_b<QW>(b, qme + h * (DI / 4));
                const uint2 w2 = *reinterpret_cast<const uint2 *>(wsl + h * IE_Q + 2 * t);
                const uint2 x2 = *reinterpret_cast<const uint2 *>(qxs + h * IE_Q + 2 * t);
                const uint32_t xq[2] = {x2.x, x2.y};
#pragma unroll
                for (int mt = 0; mt < MT; mt++)
                    ie_slow_terms<NB>(sum[mt], a[mt], b, w2, xq, ex[mt]);
            }
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
#pragma unroll
                for (int j = 0; j < 4; j++)
                    sum[mt][j] = bf16r(sum[mt][j]);
        }
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int j = 0; j < 4; j++) {
                const int q = 2 * t + (j & 1);
                const long long e = te + 16 * mt + g + 8 * (j >> 1);
                if (q < nq && e < (pos0 + sb + q + 1) / 4)
                    score[(size_t)(sb + q) * ld + e] = sum[mt][j];
            }
    }
}

// ---- Indexer scores on Hopper's warpgroup MMA (k_idx_score_iwg; issue 10, 2026-11-29, fourteenth session) ----
//
// k_idx_score_i8e's arithmetic and bits (the same terms, added in the same head order by the same
// thread), with the integer dot products on wgmma instead of mma.sync. i8e issued one m16n8k32 a head
// and 32-dim block per 16 x 8 outputs and waited for each chain of four before its epilogue, with two
// warps a scheduler (255 registers): its issue slots were ~47% busy and the tensor pipe far from full.
// Here a warpgroup's four warps hold the A fragments (keys: 64 entries, 16 a warp, from ldmatrix as in
// i8e) in registers for every head, and one m64n64k32 takes 8 heads x the block's 8 queries (B: the
// queries in shared memory, row 8 h + q holding query q's 128 bytes of head h, 128-byte swizzled: the
// 8 rows of a head are one swizzle atom). Column 8 hl + q of head group hg is head 8 hg + hl, so a
// thread's accumulator d[4 hl .. 4 hl + 3] is i8e's acc[0..3] of head 8 hg + hl: (entry g, query 2t),
// (g, 2t + 1), (g + 8, 2t), (g + 8, 2t + 1). Two accumulators alternate: group hg + 1's products run
// on the tensor cores while the warps add group hg's terms. The accumulators start at the magic
// (IDX_I8_MAGIC) as i8e's do, so each reads as 1.5 * 2^23 + c in fp32.
// Tiles that are not in the fast form (some entry or the block's queries out of i8e's bounds) take
// i8e's per-block path with mma.sync after the wgmma pass (whose sums they discard): the wgmma runs in
// every warp of the warpgroup whatever its tile, so it stays in uniform control flow.
// Shape: two warpgroups a block, two blocks an SM (~90 KB of shared memory each: the 8 queries' 64 KB,
// the weights, each warp's 16-entry key tile; 114 registers). di 128, Hi = 8 NG (instances: 16, 32, 64).
// H200, 125K entries, S = 2048: 5.65 ms against i8e's 6.94 (results/2026-11-29-s16). The tensor cores
// are ~half busy and so are the issue slots (the terms: ~4 instructions an element and head, against
// ~32 cycles of tensor time a 64 x 64 x 32 product); tried in the same run and slower: two groups in
// flight throughout (unrolled: 205 registers, one block an SM) 5.88 ms, four groups a pass (186
// registers, one block) 6.24 ms: the warps of a second block hide more than a deeper pipeline.
// ptxas serialises the wgmma (C7512 / C7514) when a group stays in flight across the loop's back edge,
// and waits before any wgmma whose accumulators were filled from one shared copy of the magic: each
// accumulator register gets its own immediate move (issue, below).
#define IW_WG 2                   // warpgroups a block
#define IW_KST (128 + IDX_I8_KPAD) // bytes a key row in a warp's tile
__host__ __device__ constexpr size_t idx_iwg_smem()
{
    return 1024 + (size_t)64 * IE_Q * 128 + sizeof(uint32_t) * 3 * 64 * IE_Q + (size_t)IW_WG * 4 * 16 * IW_KST +
           sizeof(uint32_t) * IW_WG * 4 * 16;
}
// A warp's 16 keys from t0 (zeros past eend) into its tile: cp.async, one commit group.
__device__ __forceinline__ void iw_tile_load(uint32_t kb, uint32_t xb, const int8_t *k8, const uint32_t *kx, long long t0,
                                             long long eend, int lane)
{
#pragma unroll
    for (int j = 0; j < 4; j++) {
        int i = lane + 32 * j, row = i >> 3, pc = i & 7;
        bool ok = t0 + row < eend;
        cp_async16(kb + (uint32_t)(row * IW_KST + 16 * pc), k8 + (ok ? (size_t)(t0 + row) * 128 + 16 * pc : 0), ok);
    }
    if (lane < 16) {
        bool ok = t0 + lane < eend;
        cp_async4(xb + 4u * lane, kx + (ok ? t0 + lane : 0), ok);
    }
    cp_async_commit();
}
// Grid (ceil(S / 8), runs), tpb 64-entry tiles a run (a warpgroup takes every IW_WG-th); 128 IW_WG
// threads; dynamic shared memory idx_iwg_smem().
template <int NG>
__global__ void __launch_bounds__(128 * IW_WG, 2)
    k_idx_score_iwg(const int8_t *q8, const uint32_t *qx, const float *wts, const int8_t *k8, const uint32_t *kx, int Hi,
                    int S, const long long *ppos, float *score, size_t ld, int tpb)
{
    extern __shared__ __align__(16) unsigned char iw_raw[];
    unsigned char *iw = iw_raw + ((1024 - ((uint32_t)__cvta_generic_to_shared(iw_raw) & 1023u)) & 1023u);
    int8_t *qs = (int8_t *)iw;                              // [Hi heads][8 queries][128], swizzled
    uint32_t *wf = (uint32_t *)(iw + (size_t)64 * IE_Q * 128); // [64 heads][8 queries] as i8e's
    uint32_t *wsl = wf + 64 * IE_Q, *qxs = wsl + 64 * IE_Q;
    int8_t *ks = (int8_t *)(qxs + 64 * IE_Q);               // [warps][16][IW_KST]
    uint32_t *kxs = (uint32_t *)(ks + (size_t)IW_WG * 4 * 16 * IW_KST);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int wg = warp >> 2, wl = warp & 3;
    struct idx_run run = {};
    if (!idx_run_at(IE_Q, S, ppos, tpb, &run))
        return;
    const int sb = run.sb, nq = run.nq;
    const long long pos0 = run.pos0, e0 = run.e0, eend = run.eend;
    const uint32_t qsb = (uint32_t)__cvta_generic_to_shared(qs);
    const uint32_t kwb = (uint32_t)__cvta_generic_to_shared(ks + (size_t)warp * 16 * IW_KST);
    const uint32_t kxb = (uint32_t)__cvta_generic_to_shared(kxs + warp * 16);
    const uint32_t *kxw = kxs + warp * 16;
    long long te = e0 + (long long)wg * 64; // this warpgroup's tile; the warp's rows from te + 16 wl
    const long long tstride = (long long)IW_WG * 64;
    if (te < eend) // the first tile's copy runs under the queries' fill
        iw_tile_load(kwb, kxb, k8, kx, te + 16 * wl, eend, lane);
    // the queries: 16-byte chunk c of (query q, head h) to row 8 h + q, chunk c ^ q
    for (int i = threadIdx.x; i < IE_Q * Hi * 8; i += blockDim.x) {
        int c = i & 7, r = i >> 3, h = r % Hi, q = r / Hi;
        uint4 v = make_uint4(0, 0, 0, 0);
        if (q < nq)
            v = *reinterpret_cast<const uint4 *>(q8 + ((size_t)(sb + q) * Hi + h) * 128 + 16 * c);
        *reinterpret_cast<uint4 *>(qs + (size_t)(8 * h + q) * 128 + ((c ^ q) << 4)) = v;
    }
    const int okq = ie_fill_weights(qx, wts, Hi, sb, nq, wf, wsl, qxs);
    wgmma_proxy_fence(); // the queries are wgmma's B
    const bool qfast = __syncthreads_and(okq);
    for (; te < eend; te += tstride) { // uniform over the warpgroup
        cp_async_wait<0>();
        __syncwarp();
        uint32_t a[4][4];
#pragma unroll
        for (int kb = 0; kb < 4; kb++) {
            uint32_t ad = kwb + (uint32_t)(((lane & 7) + 8 * ((lane >> 3) & 1)) * IW_KST + 32 * kb + 16 * (lane >> 4));
            asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                         : "=r"(a[kb][0]), "=r"(a[kb][1]), "=r"(a[kb][2]), "=r"(a[kb][3])
                         : "r"(ad));
        }
        const uint32_t ex[2] = {kxw[g], kxw[g + 8]};
        const bool fast = __all_sync(0xffffffffu, ie_exp_ok(ex[0]) && ie_exp_ok(ex[1])) && qfast;
        __syncwarp(); // every lane is done with the tile
        if (te + tstride < eend)
            iw_tile_load(kwb, kxb, k8, kx, te + tstride + 16 * wl, eend, lane);
        float sum[4] = {0.f, 0.f, 0.f, 0.f}; // (entry g, query 2t), (g, 2t + 1), (g + 8, 2t), (g + 8, 2t + 1)
        int acc0[32], acc1[32];
        auto issue = [&](int (&acc)[32], int hg) {
#pragma unroll
            for (int i = 0; i < 32; i++) // one immediate move each (a shared copy source draws a wait from ptxas)
                asm volatile("mov.b32 %0, 0x4B400000;" : "=r"(acc[i]));
            wgmma_fence();
#pragma unroll
            for (int kb = 0; kb < 4; kb++)
                wgmma_s8_ra64(acc, a[kb], wgmma_desc_sw128(qsb + (uint32_t)hg * 8192u + 32u * kb), 1);
            wgmma_commit();
        };
        auto terms = [&](const int (&acc)[32], int hg) { // i8e's fast-path terms of heads 8 hg ..
#pragma unroll
            for (int hl = 0; hl < 8; hl++) {
                const uint2 w2 = *reinterpret_cast<const uint2 *>(wf + (8 * hg + hl) * IE_Q + 2 * t);
                uint32_t u0 = ie_mul_bf16x2(ie_relu_bf16x2(__int_as_float(acc[4 * hl]) - 12582912.f,
                                                           __int_as_float(acc[4 * hl + 2]) - 12582912.f), w2.x);
                uint32_t u1 = ie_mul_bf16x2(ie_relu_bf16x2(__int_as_float(acc[4 * hl + 1]) - 12582912.f,
                                                           __int_as_float(acc[4 * hl + 3]) - 12582912.f), w2.y);
                ie_add_terms(sum, u0, u1);
            }
        };
        // Two groups a pass: the second's products run while the warps add the first's terms, and no
        // wgmma is in flight across the loop's back edge (ptxas serialises the wgmma otherwise); the other
        // warpgroups of the SM fill the tensor cores during the second's terms.
#pragma unroll 1
        for (int hg = 0; hg < NG; hg += 2) {
            issue(acc0, hg);
            issue(acc1, hg + 1);
            wgmma_wait1();
            terms(acc0, hg);
            wgmma_wait0();
            terms(acc1, hg + 1);
        }
        if (fast) {
#pragma unroll
            for (int j = 0; j < 4; j++)
                sum[j] = bf16r(sum[j]) * pow2i((int)(int8_t)(ex[j >> 1] & 0xffu));
        } else { // i8e's per-block path for this warp's 16 entries
#pragma unroll
            for (int j = 0; j < 4; j++)
                sum[j] = 0.f;
            for (int h = 0; h < Hi; h++) {
                const uint32_t rowb = qsb + (uint32_t)(8 * h + g) * 128u + 4u * t;
                uint32_t b[8];
#pragma unroll
                for (int c = 0; c < 8; c++)
                    asm volatile("ld.shared.u32 %0, [%1];" : "=r"(b[c]) : "r"(rowb + ((uint32_t)(c ^ g) << 4)));
                const uint2 w2 = *reinterpret_cast<const uint2 *>(wsl + h * IE_Q + 2 * t);
                const uint2 x2 = *reinterpret_cast<const uint2 *>(qxs + h * IE_Q + 2 * t);
                const uint32_t xq[2] = {x2.x, x2.y};
                ie_slow_terms<4>(sum, a, b, w2, xq, ex);
            }
#pragma unroll
            for (int j = 0; j < 4; j++)
                sum[j] = bf16r(sum[j]);
        }
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int q = 2 * t + (j & 1);
            const long long e = te + 16 * wl + g + 8 * (j >> 1);
            if (q < nq && e < (pos0 + sb + q + 1) / 4)
                score[(size_t)(sb + q) * ld + e] = sum[j];
        }
    }
}

static cudaError_t iwg_attrs() // the kernels' shared-memory limit
{
    cudaError_t ce = cudaSuccess;
    for (auto k : {k_idx_score_iwg<2>, k_idx_score_iwg<4>, k_idx_score_iwg<8>})
        if (ce == cudaSuccess)
            ce = cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)idx_iwg_smem());
    return ce;
}

// The shared-memory limits of the tensor-core score kernels for keys of di dims, on the current
// device (a per-device setting: engines may live on several devices). Called at engine creation, so
// that a decode step's graph capture launches the kernel without setting anything, and by
// cuda_engine_idx_scores (tests, benchmarks). Shapes the kernels do not take: nothing to set.
static cudaError_t idx_tc_attrs(int di)
{
    cudaError_t ce = cudaSuccess;
#define IDX_ATTR(D)                                                                                                    \
    do {                                                                                                               \
        ce = cudaFuncSetAttribute(k_idx_score_tc<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)idx_tc_smem<D>()); \
        if (ce == cudaSuccess)                                                                                         \
            ce = cudaFuncSetAttribute(k_idx_score_tc1<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,                 \
                                      (int)idx_tc1_smem<D>());                                                         \
        if (ce == cudaSuccess)                                                                                         \
            ce = cudaFuncSetAttribute(k_idx_score_tc2<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,                 \
                                      (int)idx_tc2_smem<D>());                                                         \
        if (ce == cudaSuccess)                                                                                         \
            ce = cudaFuncSetAttribute(k_idx_score_i8<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,                  \
                                      (int)idx_i8_smem<D>());                                                          \
        if (ce == cudaSuccess)                                                                                         \
            ce = cudaFuncSetAttribute(k_idx_score_i8<D>, cudaFuncAttributePreferredSharedMemoryCarveout,               \
                                      (int)cudaSharedmemCarveoutMaxShared);                                            \
        if (ce == cudaSuccess)                                                                                         \
            ce = cudaFuncSetAttribute(k_idx_score_i8e<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,                 \
                                      (int)idx_i8e_smem<D>(64));                                                       \
        if (ce == cudaSuccess) /* two blocks of 87 KB a SM (a hint: the carveout that holds them) */                  \
            ce = cudaFuncSetAttribute(k_idx_score_tc2<D>, cudaFuncAttributePreferredSharedMemoryCarveout,              \
                                      (int)cudaSharedmemCarveoutMaxShared);                                            \
    } while (0)
    if (di == 128) {
        IDX_ATTR(128);
        if (ce == cudaSuccess)
            ce = iwg_attrs();
    } else if (di == 64)
        IDX_ATTR(64);
    else if (di == 32)
        IDX_ATTR(32);
#undef IDX_ATTR
    return ce;
}

// Top-k of each query's scores in O(n): sel[s][rank] = e for rank < k (descending score, ties to the
// lowest index: inf_cpu_topk's order), the rest -1. Two launches, so that one query's scan spreads
// over many blocks: k_topk_seg takes the top k of each TOPK_SEG-entry segment of the row, k_topk_merge
// the top k of the segments' lists laid end to end. The global top k is within the union of the
// segments' top k under this total order, and in the merged array equal scores stand in index order
// (segments in index order, each list in index order), so the merge's ties to the lowest position
// are ties to the lowest index.
//
// topk_block, one block of TOPK_THREADS: a radix select on the scores' order-preserving 32-bit keys
// (-0 as +0, so that equal values tie) in up to four passes of 8 bits finds the k-th largest
// key T and how many of the entries equal to it are needed; one more pass, in position order,
// collects the entries above T and the lowest-position ones equal to T, each at its rank in position
// order (a block prefix count of both kinds), and with `sorted` a bitonic sort of those k by (score
// desc, position asc) gives the rank order (the segments skip it: the merge needs their lists in
// index order only). Histogram counts are warp-aggregated (__match_any_sync), since scores crowd into
// few bins. A pass stops early when the chosen bin's entries are all needed or all equal (no key of
// the bin has a bit set below its digit: bf16 scores, the indexer's, end after two passes). 8-bit
// digits (until 2026-11-29's eighth session 11/11/10, the same passes for bf16 scores): the bin search
// (warp 0, nb / 32 bins a lane in turn) was most of a segment's time with 2048 bins. Rows of
// up to TOPK_THREADS * TOPK_REG entries (every segment; the merge up to 16K candidates) are read once
// into registers; longer ones are read from memory in each pass. Returns with keys[r] & 0xffffffff =
// the position of entry r (rank r when sorted; else the r-th selected in position order).
#define TOPK_THREADS 1024
#define TOPK_MAXK 2048
#define TOPK_SEG 16384 // 8192 until 2026-11-29's eighth session: half the blocks, each with its fixed cost
#define TOPK_REG 16
#define TOPK_RUN 16 // rows of up to TOPK_THREADS * TOPK_RUN entries are collected in one round
__device__ __forceinline__ uint32_t score_key(float v)
{
    uint32_t u = __float_as_uint(v == 0.f ? 0.f : v);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
// One radix pass's histogram, a warp at a time: the lanes whose keys fall in the same bin add once
// (warp-aggregated: scores crowd into few bins), and lowbit marks the bins holding a key with a bit set
// below the digit (a bin without one holds equal keys). `in`: the lane's key takes part.
__device__ __forceinline__ void topk_hist_add(unsigned *hist, unsigned *lowbit, bool in, uint32_t key, int shift, int nb,
                                              int lane)
{
    const uint32_t lowm = (1u << shift) - 1u;
    const unsigned bin = in ? (key >> shift) & (unsigned)(nb - 1) : 0xffffffffu;
    const unsigned peers = __match_any_sync(0xffffffffu, bin);
    const unsigned low = __ballot_sync(0xffffffffu, in && (key & lowm)) & peers;
    if (in && lane == __ffs(peers) - 1) {
        atomicAdd(&hist[bin], (unsigned)__popc(peers));
        if (low)
            atomicOr(&lowbit[bin >> 5], 1u << (bin & 31));
    }
}
// keys[0, k) of shared memory into ascending order (rank order: ~score_key in the high word, the
// position in the low one), by a bitonic sort over the next power of two (padding keys of ~0 sort
// last); the whole block takes part. Where the padded count fits the block (since 2026-11-30's
// twentieth session), a key a thread in a register: the stages within a warp (j < 32) by shuffles,
// the others through shared memory with two barriers each (10 of the 45 stages of 512 keys);
// beyond, every stage through shared memory.
__device__ void topk_bitonic(unsigned long long *keys, int k)
{
    const int tid = (int)threadIdx.x;
    int P = 1;
    while (P < k)
        P <<= 1;
    if (P <= (int)blockDim.x) {
        __syncthreads(); // keys[0, k) written
        unsigned long long x = tid < k ? keys[tid] : ~0ull;
        for (int kk = 2; kk <= P; kk <<= 1)
            for (int j = kk >> 1; j > 0; j >>= 1) {
                unsigned long long y;
                if (j >= 32) {
                    __syncthreads(); // the previous stage's reads are done
                    if (tid < P)
                        keys[tid] = x;
                    __syncthreads();
                    y = tid < P ? keys[tid ^ j] : ~0ull;
                } else {
                    y = __shfl_xor_sync(0xffffffffu, x, j);
                }
                const bool up = (tid & kk) == 0, lower = (tid & j) == 0;
                x = (lower == up) ? (x < y ? x : y) : (x < y ? y : x);
            }
        __syncthreads();
        if (tid < P)
            keys[tid] = x;
        __syncthreads();
        return;
    }
    for (int i = k + tid; i < P; i += blockDim.x)
        keys[i] = ~0ull;
    __syncthreads();
    for (int kk = 2; kk <= P; kk <<= 1)
        for (int j = kk >> 1; j > 0; j >>= 1) {
            for (int i = tid; i < P; i += blockDim.x) {
                int ixj = i ^ j;
                if (ixj > i) {
                    unsigned long long a = keys[i], c = keys[ixj];
                    if ((a > c) == ((i & kk) == 0)) {
                        keys[i] = c;
                        keys[ixj] = a;
                    }
                }
            }
            __syncthreads();
        }
}
__device__ void topk_block(const float *sc, int nv, int k, unsigned long long *keys, int sorted)
{
    __shared__ unsigned hist[256], lowbit[8];
    __shared__ unsigned wcnt[32], wexc[32], sh_bin, sh_above, sh_total;
    int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const bool cached = nv <= TOPK_THREADS * TOPK_REG;
    uint32_t rk[TOPK_REG];
    if (cached) {
#pragma unroll
        for (int j = 0; j < TOPK_REG; j++) {
            int e = j * TOPK_THREADS + tid;
            rk[j] = e < nv ? score_key(sc[e]) : 0u;
        }
    }
    // body(e, key) for every position e of the row, TOPK_THREADS at a time in position order; every
    // thread runs every round (e >= nv: not an entry), so barriers inside body are uniform
    auto sweep = [&](auto body) {
        if (cached) {
#pragma unroll
            for (int j = 0; j < TOPK_REG; j++)
                if (j * TOPK_THREADS < nv)
                    body(j * TOPK_THREADS + tid, rk[j]);
        } else {
            for (int base = 0; base < nv; base += TOPK_THREADS) {
                int e = base + tid;
                body(e, e < nv ? score_key(sc[e]) : 0u);
            }
        }
    };
    uint32_t prefix = 0, pmask = 0;
    unsigned need = (unsigned)k; // entries still to take among those whose key matches prefix under pmask
    if (nv > k) {
        for (int pass = 0; pass < 4; pass++) { // bits 31..24, 23..16, 15..8, 7..0
            const int shift = 24 - 8 * pass, nb = 256;
            for (int i = tid; i < nb; i += blockDim.x)
                hist[i] = 0;
            if (tid < nb / 32)
                lowbit[tid] = 0;
            __syncthreads();
            sweep([&](int e, uint32_t key) {
                topk_hist_add(hist, lowbit, e < nv && (key & pmask) == prefix, key, shift, nb, lane);
            });
            __syncthreads();
            if (warp == 0) { // the bin (from the top) where the count reaches need
                int per = nb >> 5, top = nb - lane * per;
                unsigned ls = 0;
                for (int i = 1; i <= per; i++)
                    ls += hist[top - i];
                unsigned inc = ls;
                inc = warp_incl_scan(inc, lane);
                unsigned acc = inc - ls;
                if (acc < need && inc >= need)
                    for (int i = 1; i <= per; i++) {
                        unsigned h = hist[top - i];
                        if (acc + h >= need) {
                            sh_bin = (unsigned)(top - i);
                            sh_above = acc;
                            break;
                        }
                        acc += h;
                    }
            }
            __syncthreads();
            unsigned bin = sh_bin, cnt = hist[bin];
            int equal = !((lowbit[bin >> 5] >> (bin & 31)) & 1u); // the bin's keys have no bit below: all equal
            need -= sh_above;
            prefix |= bin << shift;
            pmask |= (uint32_t)(nb - 1) << shift;
            __syncthreads();
            if (cnt == need || equal) // every entry of this bin is taken, or they tie: no need for lower bits
                break;
        }
    }
    uint32_t hi = prefix | ~pmask; // keys above every key that matches the prefix
    __syncthreads();
    if (nv <= TOPK_THREADS * TOPK_RUN) {
        // One round instead of a sweep's nv / TOPK_THREADS (each with two barriers and a scan): thread
        // tid takes the TOPK_RUN consecutive positions from TOPK_RUN * tid, so one block prefix count of
        // (above, tied) per thread orders every entry; its keys are read again from sc (the rows in
        // registers are strided). The same selection and slots as the sweep below.
        uint32_t kq[TOPK_RUN];
        unsigned ma = 0, mt = 0; // this thread's positions above / tied, as bit masks
        // Four 16-byte loads where the run is whole and aligned: one load a position put each lane's 4
        // bytes in a sector of its own (TOPK_RUN * 4 bytes apart), 7 of 32 bytes used (Nsight Compute,
        // results/2026-11-29-s16/call3-ncu-topk).
        static_assert(TOPK_RUN == 16, "topk_block: the run's four float4 loads");
        if (tid * TOPK_RUN + TOPK_RUN <= nv && !(reinterpret_cast<uintptr_t>(sc + tid * TOPK_RUN) & 15u)) {
            const float4 *v4 = reinterpret_cast<const float4 *>(sc + tid * TOPK_RUN);
#pragma unroll
            for (int u = 0; u < 4; u++) {
                const float4 v = v4[u];
                kq[4 * u] = score_key(v.x);
                kq[4 * u + 1] = score_key(v.y);
                kq[4 * u + 2] = score_key(v.z);
                kq[4 * u + 3] = score_key(v.w);
            }
        } else {
#pragma unroll
            for (int j = 0; j < TOPK_RUN; j++) {
                int e = tid * TOPK_RUN + j;
                kq[j] = e < nv ? score_key(sc[e]) : 0u;
            }
        }
#pragma unroll
        for (int j = 0; j < TOPK_RUN; j++) {
            int e = tid * TOPK_RUN + j;
            uint32_t key = kq[j];
            if (e < nv && key > hi)
                ma |= 1u << j;
            else if (e < nv && (key & pmask) == prefix)
                mt |= 1u << j;
        }
        unsigned v = ((unsigned)__popc(ma) << 16) | (unsigned)__popc(mt), inc = v; // both <= 16384: one scan for two
        inc = warp_incl_scan(inc, lane);
        if (lane == 31)
            wcnt[warp] = inc;
        __syncthreads();
        if (warp == 0) {
            unsigned wv = lane < (int)(blockDim.x >> 5) ? wcnt[lane] : 0, wi = wv;
            wi = warp_incl_scan(wi, lane);
            wexc[lane] = wi - wv;
        }
        __syncthreads();
        // above / tied before position TOPK_RUN * tid
        unsigned ex = wexc[warp] + inc - v, na = ex >> 16, nt = ex & 0xffffu;
#pragma unroll
        for (int j = 0; j < TOPK_RUN; j++) {
            int e = tid * TOPK_RUN + j;
            unsigned long long kv = ((unsigned long long)~kq[j] << 32) | (unsigned long long)(uint32_t)e;
            if ((ma >> j) & 1u) {
                keys[na + (nt < need ? nt : need)] = kv;
                na++;
            } else if ((mt >> j) & 1u) {
                if (nt < need)
                    keys[na + nt] = kv;
                nt++;
            }
        }
        __syncthreads();
    } else {
    unsigned run_a = 0, run_t = 0; // entries above / tied so far, in position order
    sweep([&](int e, uint32_t key) {
        int above = e < nv && key > hi, tie = e < nv && (key & pmask) == prefix;
        unsigned ab = __ballot_sync(0xffffffffu, above), tb = __ballot_sync(0xffffffffu, tie);
        if (lane == 0)
            wcnt[warp] = ((unsigned)__popc(ab) << 16) | (unsigned)__popc(tb); // both <= 32: one scan for two
        __syncthreads();
        if (warp == 0) {
            unsigned v = lane < (int)(blockDim.x >> 5) ? wcnt[lane] : 0, inc = v;
            inc = warp_incl_scan(inc, lane);
            wexc[lane] = inc - v;
            if (lane == 31)
                sh_total = inc;
        }
        __syncthreads();
        unsigned lt = (1u << lane) - 1u, ex = wexc[warp];
        unsigned na = run_a + (ex >> 16) + (unsigned)__popc(ab & lt), nt = run_t + (ex & 0xffffu) + (unsigned)__popc(tb & lt);
        // the selected before this position: every entry above, the first `need` ties
        if (above || (tie && nt < need))
            keys[na + (nt < need ? nt : need)] = ((unsigned long long)~key << 32) | (unsigned long long)(uint32_t)e;
        unsigned tot = sh_total;
        run_a += tot >> 16;
        run_t += tot & 0xffffu;
        __syncthreads();
    });
    }
    if (sorted)
        topk_bitonic(keys, k);
}
// Grid (segments, S): the top min(K, n) of segment blockIdx.x of query s's row, in rank order, into
// cand_sc / cand_ix [S][ld] at segment * K.
__global__ void __launch_bounds__(TOPK_THREADS) k_topk_seg(const float *score, size_t ld, const long long *ppos, int K,
                                                           float *cand_sc, int *cand_ix, size_t cld)
{
    pdl_begin();
    __shared__ unsigned long long keys[TOPK_MAXK];
    int s = blockIdx.y;
    long long nv = (*ppos + s + 1) / 4, lo = (long long)blockIdx.x * TOPK_SEG;
    if (lo >= nv)
        return;
    int n = nv - lo < TOPK_SEG ? (int)(nv - lo) : TOPK_SEG, k = n < K ? n : K;
    const float *sc = score + (size_t)s * ld + lo;
    topk_block(sc, n, k, keys, 0); // the list in index order (what the merge's ties need)
    float *os = cand_sc + (size_t)s * cld + (size_t)blockIdx.x * K;
    int *oi = cand_ix + (size_t)s * cld + (size_t)blockIdx.x * K;
    for (int i = threadIdx.x; i < k; i += blockDim.x) { // the score from its key (-0 comes back as +0: the same key)
        const uint32_t key = ~(uint32_t)(keys[i] >> 32);
        os[i] = __uint_as_float(key & 0x80000000u ? key & 0x7fffffffu : ~key);
        oi[i] = (int)lo + (int)(uint32_t)keys[i];
    }
}
// Grid S: the top min(K, n) of the segments' lists (full ones of K, the last of min(K, its size)).
__global__ void __launch_bounds__(TOPK_THREADS) k_topk_merge(const float *cand_sc, const int *cand_ix, size_t cld,
                                                             const long long *ppos, int K, int *sel)
{
    pdl_begin();
    __shared__ unsigned long long keys[TOPK_MAXK];
    int s = blockIdx.x;
    long long nv = (*ppos + s + 1) / 4;
    int k = nv < K ? (int)nv : K;
    int *out = sel + (size_t)s * K;
    for (int i = k + threadIdx.x; i < K; i += blockDim.x)
        out[i] = -1;
    if (k <= 0)
        return;
    int nseg = (int)((nv + TOPK_SEG - 1) / TOPK_SEG);
    long long last = nv - (long long)(nseg - 1) * TOPK_SEG;
    int n2 = (nseg - 1) * K + (last < K ? (int)last : K);
    const float *sc = cand_sc + (size_t)s * cld;
    topk_block(sc, n2, k, keys, 1);
    for (int i = threadIdx.x; i < k; i += blockDim.x)
        out[i] = cand_ix[(size_t)s * cld + (uint32_t)keys[i]];
}

// ---- The prefill top-k, a block a query (k_topk_row; issue 10, 2026-11-30, twentieth session)
// ----
//
// k_topk_seg + k_topk_merge spread a row over blocks of TOPK_SEG entries, each selecting by two
// 8-bit radix passes whose warp-aggregated histogram (__match_any_sync: the top 8 bits of the
// scores crowd into a few bins) left most of their stall samples on the instructions waiting for
// MATCH's result, then merged the segments' lists: 4.5 + 0.6 ms for a CSA layer's 4096 queries at
// 500K (results/2026-11-30-s22, call1-ncu-topk). A prefill chunk has queries enough to fill the GPU
// with a block each, so here one block takes a whole row of n <= TOPK_ROW_MAXN entries:
// 1. A histogram of the keys' top 16 bits (score_key; all of a bf16 value's key) in shared memory:
// 65536
//    16-bit counters, two a word. The bins of whole bf16 values spread where those of 8 bits crowd,
//    so plain shared atomics. A counter past 65535 wraps: the atomic that wrapped it sees 0xffff in
//    its old value (race-free: each atomic's own) and notes it in a small table, with the carry
//    that a low counter's wrap adds to its high neighbour; trow_count gives the exact counts back.
// 2. The bin T where the count from the top reaches k (trow_find): thread t sums 64 bins, one block
// scan,
//    the thread whose bins hold T walks them.
// 3. Only where some key has low bits set (not the indexer's bf16 scores) and T's keys are not all
// taken:
//    the same over the low 16 bits of T's keys (a second read of the row).
// 4. Thread t takes the R consecutive entries from t R (R <= 260: bit masks in registers of the
// entries
//    above T and those tied with it), one block scan of both counts, then every entry above and the
//    first `need` ties in index order into their slots (topk_block's selection), and topk_bitonic's
//    rank order: score_key descending, ties by the lowest index, the same bytes as the other
//    routes.
// Two reads of a row, as the segments' (then the merge's pass over their lists is gone); one block an
// SM (the counters: 128 KB).
#define TOPK_ROW_MW 9        // mask words a thread: runs of up to 288 slots
#define TOPK_ROW_MAXN 262144 // entries (a 1M-token context): runs of 256 + 4 slots at most
#define TOPK_ROW_WRAPS 8     // the wrap table: n <= TOPK_ROW_MAXN adds wrap at most 4 words
#define TOPK_ROW_SMEM (65536 * 2)
struct trow_wraps {
    unsigned w[TOPK_ROW_WRAPS], lo[TOPK_ROW_WRAPS],
        hi[TOPK_ROW_WRAPS]; // word (~0u: free), its wraps
};
// A wrap of word w's low (lo) and / or high (hi) counter into the table; slots are taken in order,
// so the used ones are a prefix.
__device__ void trow_note(trow_wraps *t, unsigned w, bool lo, bool hi)
{
    for (int i = 0; i < TOPK_ROW_WRAPS; i++) {
        const unsigned prev = atomicCAS(&t->w[i], ~0u, w);
        if (prev == ~0u || prev == w) {
            if (lo)
                atomicAdd(&t->lo[i], 1u);
            if (hi)
                atomicAdd(&t->hi[i], 1u);
            return;
        }
    }
}
__device__ __forceinline__ void trow_add(uint32_t *h, trow_wraps *t, uint32_t bin)
{
    const uint32_t w = bin >> 1;
    if (bin & 1u) {
        const uint32_t old = atomicAdd(&h[w], 0x10000u);
        if ((old >> 16) == 0xffffu)
            trow_note(t, w, false, true);
    } else {
        const uint32_t old = atomicAdd(&h[w], 1u);
        if ((old & 0xffffu) ==
            0xffffu) // the carry lands in the high counter, which may wrap with it
            trow_note(t, w, true, (old >> 16) == 0xffffu);
    }
}
// Bin b's count: the stored low counter plus its wraps; the high one plus its wraps less the
// carries the low one's wraps put in it. nw: the table's used slots.
__device__ __forceinline__ unsigned trow_count(const uint32_t *h, const trow_wraps *t, int nw,
                                               uint32_t b)
{
    const uint32_t w = b >> 1, v = h[w];
    unsigned c = (b & 1u) ? v >> 16 : v & 0xffffu;
    for (int i = 0; i < nw; i++)
        if (t->w[i] == w)
            c += (b & 1u) ? 65536u * t->hi[i] - t->lo[i] : 65536u * t->lo[i];
    return c;
}
// The block's exclusive prefix sum of v in thread order (every thread calls it; wtot: 32 of shared
// memory).
__device__ __forceinline__ unsigned long long trow_scan(unsigned long long v,
                                                        unsigned long long *wtot)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const unsigned long long inc = warp_incl_scan(v, lane);
    if (lane == 31)
        wtot[warp] = inc;
    __syncthreads();
    if (warp == 0) {
        const unsigned long long x = lane < (int)(blockDim.x >> 5) ? wtot[lane] : 0ull;
        const unsigned long long xi = warp_incl_scan(x, lane);
        __syncwarp();
        wtot[lane] = xi - x;
    }
    __syncthreads();
    const unsigned long long r = wtot[warp] + inc - v;
    __syncthreads(); // wtot is free again
    return r;
}
// After a histogram (and a barrier): the bin b where fewer than need keys lie in the bins above it
// and need or more with b's; out[0] = b, out[1] = the keys above b, out[2] = b's (need <= the
// total). Thread t owns bins 65535 - 64 t - j, j < 64 (words 32767 - 32 t - j', rotated by t: no
// bank conflicts).
__device__ void trow_find(const uint32_t *h, const trow_wraps *t, unsigned need,
                          unsigned long long *wtot, unsigned *out)
{
    const int tid = (int)threadIdx.x, w0 = 32767 - 32 * tid;
    int nw = 0;
    while (nw < TOPK_ROW_WRAPS && t->w[nw] != ~0u)
        nw++;
    unsigned ct = 0;
#pragma unroll 8
    for (int j = 0; j < 32; j++) {
        const uint32_t v = h[w0 - ((j + tid) & 31)];
        ct += (v & 0xffffu) + (v >> 16);
    }
    for (int i = 0; i < nw; i++)
        if ((int)t->w[i] <= w0 && (int)t->w[i] > w0 - 32)
            ct += 65536u * t->lo[i] + 65536u * t->hi[i] - t->lo[i];
    const unsigned ex = (unsigned)trow_scan(ct, wtot);
    if (ex < need && ex + ct >= need) // one thread: its bins hold T
        wtot[0] = ((unsigned long long)tid << 32) | ex;
    __syncthreads();
    if (tid < 32) { // warp 0 walks that thread's 64 bins, two a lane, by a scan (2026-12-01; one thread before)
        const unsigned long long wt = wtot[0];
        const int owner = (int)(wt >> 32);
        const unsigned base = (unsigned)wt;
        const uint32_t b0 = (uint32_t)(65535 - 64 * owner - 2 * tid);
        const unsigned c0 = trow_count(h, t, nw, b0), c1 = trow_count(h, t, nw, b0 - 1u);
        const unsigned inc = warp_incl_scan(c0 + c1, tid), before = base + inc - (c0 + c1);
        if (before < need && base + inc >= need) {
            const bool first = before + c0 >= need;
            out[0] = first ? b0 : b0 - 1u;
            out[1] = first ? before : before + c0;
            out[2] = first ? c0 : c1;
        }
    }
    __syncthreads();
}
// k_topk_row's rank order where every selected key is a whole bf16 value's (the indexer's scores: the
// key's low 16 bits only repeat its sign) and the padded count fits the block: keys[0, k) as the selection
// left them (rank order's high word ~score_key, the entry in the low one; the entries above the threshold
// in index order, then the tied ones in index order) sorted by the 32-bit key (~score_key's high 16 bits
// << 16 | slot): a slot is below 2048, and slots follow the index among equal scores, so the order is
// topk_bitonic's rank order, in a sort of half the width over P = max(32, next power of two of k)
// threads instead of the block (named barrier 1; one barrier a shared-memory stage, the stages
// alternating between two buffers). Writes out[0, k) (the entries); every thread calls it, after a block
// barrier that follows the keys' writes (k_topk_row's __syncthreads_or).
__device__ void topk_rank16(const unsigned long long *keys, int k, uint32_t (*buf)[TOPK_THREADS], int *out)
{
    const int tid = (int)threadIdx.x;
    int P = 32;
    while (P < k)
        P <<= 1;
    if (tid < P) {
        uint32_t x = tid < k ? (uint32_t)(keys[tid] >> 48) << 16 | (uint32_t)tid : ~0u;
        int b = 0;
        for (int kk = 2; kk <= P; kk <<= 1)
            for (int j = kk >> 1; j > 0; j >>= 1) {
                uint32_t y;
                if (j >= 32) {
                    buf[b][tid] = x;
                    asm volatile("bar.sync 1, %0;" ::"r"(P) : "memory");
                    y = buf[b][tid ^ j];
                    b ^= 1;
                } else {
                    y = __shfl_xor_sync(0xffffffffu, x, j);
                }
                const bool up = (tid & kk) == 0, lower = (tid & j) == 0;
                x = (lower == up) ? min(x, y) : max(x, y);
            }
        if (tid < k)
            out[tid] = (int)(uint32_t)keys[x & 0xffffu];
    }
}
// Grid S, TOPK_THREADS threads, TOPK_ROW_SMEM bytes of dynamic shared memory: query s's top min(K,
// n), n = (pos + s + 1) / 4 <= TOPK_ROW_MAXN, in rank order into sel[s], the rest -1.
__global__ void __launch_bounds__(TOPK_THREADS)
    k_topk_row(const float *score, size_t ld, const long long *ppos, int K, int *sel, int topk_rank16_on)
{
    pdl_begin();
    extern __shared__ uint32_t trow_h[];
    __shared__ unsigned long long keys[TOPK_MAXK], wtot[32];
    __shared__ uint32_t rbuf[2][TOPK_THREADS];
    __shared__ trow_wraps wraps;
    __shared__ unsigned fnd[3];
    const int s = (int)blockIdx.x, tid = (int)threadIdx.x;
    const long long nvl = (*ppos + s + 1) / 4;
    const int nv = (int)(nvl < TOPK_ROW_MAXN ? nvl : TOPK_ROW_MAXN); // the host checked max_n
    const int k = nv < K ? nv : K;
    int *out = sel + (size_t)s * K;
    for (int i = k + tid; i < K; i += blockDim.x)
        out[i] = -1;
    if (k <= 0)
        return;
    const float *sc = score + (size_t)s * ld;
    // rows start anywhere (ld need not be a multiple of 4): sh floats past a 16-byte boundary, so
    // entry e lies in the aligned float4 of slot q = e + sh; pre = the entries before the first
    // whole float4
    const int sh = (int)((reinterpret_cast<uintptr_t>(sc) >> 2) & 3u), pre = (4 - sh) & 3;
    uint32_t prefix = 0, pmask = 0;
    unsigned need = (unsigned)k;
    auto hist_reset = [&]() {
        uint4 *h4 = reinterpret_cast<uint4 *>(trow_h);
        for (int i = tid; i < 65536 / 8; i += blockDim.x)
            h4[i] = make_uint4(0, 0, 0, 0);
        if (tid < TOPK_ROW_WRAPS) {
            wraps.w[tid] = ~0u;
            wraps.lo[tid] = 0;
            wraps.hi[tid] = 0;
        }
        __syncthreads();
    };
    if (nv > k) {
        hist_reset();
        // low: some key whose low 16 bits differ from its sign's (zeros above 0, ones below: the
        // keys of bf16 values, whose bins hold one value each)
        unsigned low = 0;
        auto add = [&](float v) {
            const uint32_t key = score_key(v);
            low |= (key ^ ((key >> 31) - 1u)) & 0xffffu;
            trow_add(trow_h, &wraps, key >> 16);
        };
        if (tid < pre && tid < nv)
            add(sc[tid]);
        int e = pre + tid;
        if (pre < nv) { // float4 f = entries pre + 4 f ..: 4 loads a thread in flight
            const float4 *s4 = reinterpret_cast<const float4 *>(sc + pre);
            const int n4 = (nv - pre) >> 2;
            int f = tid;
            for (; f + 3 * TOPK_THREADS < n4; f += 4 * TOPK_THREADS) {
                float4 v[4];
#pragma unroll
                for (int u = 0; u < 4; u++)
                    v[u] = s4[f + u * TOPK_THREADS];
#pragma unroll
                for (int u = 0; u < 4; u++) {
                    add(v[u].x);
                    add(v[u].y);
                    add(v[u].z);
                    add(v[u].w);
                }
            }
            for (; f < n4; f += TOPK_THREADS) {
                const float4 v = s4[f];
                add(v.x);
                add(v.y);
                add(v.z);
                add(v.w);
            }
            e = pre + 4 * n4 + tid;
        }
        for (; e < nv; e += TOPK_THREADS)
            add(sc[e]);
        low = __syncthreads_or(low);
        trow_find(trow_h, &wraps, need, wtot, fnd);
        const uint32_t T = fnd[0];
        const unsigned cnt = fnd[2];
        need -= fnd[1];
        prefix = T << 16;
        pmask = 0xffff0000u;
        if (low &&
            cnt != need) { // T's keys differ below: their low 16 bits (a second read of the row)
            __syncthreads();
            hist_reset();
            for (int i = tid; i < nv; i += TOPK_THREADS) {
                const uint32_t key = score_key(sc[i]);
                if ((key >> 16) == T)
                    trow_add(trow_h, &wraps, key & 0xffffu);
            }
            __syncthreads();
            trow_find(trow_h, &wraps, need, wtot, fnd);
            need -= fnd[1];
            prefix |= fnd[0];
            pmask = ~0u;
        }
    }
    // 4. the selection: above = key > hi (above every key matching prefix under pmask), tied =
    // matching; every entry above and the first `need` ties, in index order (nv <= K: pmask 0,
    // every entry tied) Thread t's run: slots q in [t R, t R + R), entries e = q - sh (R a multiple
    // of 4: whole float4s, each read at once where it lies inside the row, else entry by entry)
    const uint32_t hi = prefix | ~pmask;
    const int R = (((nv + sh + TOPK_THREADS - 1) / TOPK_THREADS) + 3) & ~3, e0 = tid * R - sh;
    uint32_t am[TOPK_ROW_MW], tm[TOPK_ROW_MW];
    unsigned na = 0, nt = 0;
#pragma unroll
    for (int w = 0; w < TOPK_ROW_MW; w++) {
        uint32_t a = 0, t = 0;
        if (32 * w < R) {
            for (int b = 0; b < 32 && 32 * w + b < R;
                 b += 16) { // 16 slots: four float4 loads in flight
                float v[16];
#pragma unroll
                for (int g4 = 0; g4 < 4; g4++) {
                    const int j = 32 * w + b + 4 * g4, e = e0 + j;
                    if (j < R && e >= 0 && e + 4 <= nv) {
                        const float4 q = *reinterpret_cast<const float4 *>(sc + e);
                        v[4 * g4] = q.x, v[4 * g4 + 1] = q.y, v[4 * g4 + 2] = q.z,
                              v[4 * g4 + 3] = q.w;
                    } else {
#pragma unroll
                        for (int u = 0; u < 4; u++)
                            v[4 * g4 + u] = j < R && e + u >= 0 && e + u < nv ? sc[e + u] : 0.f;
                    }
                }
#pragma unroll
                for (int u = 0; u < 16; u++) {
                    const int j = 32 * w + b + u, e = e0 + j;
                    const uint32_t key = score_key(v[u]);
                    const bool in = j < R && e >= 0 && e < nv;
                    a |= (uint32_t)(in && key > hi) << (b + u);
                    t |= (uint32_t)(in && (key & pmask) == prefix) << (b + u);
                }
            }
        }
        am[w] = a;
        tm[w] = t;
        na += (unsigned)__popc(a);
        nt += (unsigned)__popc(t);
    }
    const unsigned long long ex = trow_scan(((unsigned long long)na << 32) | nt, wtot);
    unsigned ra = (unsigned)(ex >> 32), rt = (unsigned)ex; // above / tied before this run
    unsigned lows = 0; // some selected key with low bits (not a bf16 value's): topk_bitonic's wide sort
#pragma unroll
    for (int w = 0; w < TOPK_ROW_MW; w++) {
        uint32_t m = am[w] | tm[w];
        while (m) {
            const int b = __ffs(m) - 1;
            m &= m - 1;
            const int e = e0 + 32 * w + b;
            const bool above = (am[w] >> b) & 1u;
            int slot = -1;
            if (above)
                slot = (int)(ra + (rt < need ? rt : need)), ra++;
            else if (rt++ < need)
                slot = (int)(ra + rt - 1);
            if (slot >= 0) {
                const uint32_t key = score_key(sc[e]);
                lows |= (key ^ ((key >> 31) - 1u)) & 0xffffu;
                keys[slot] = ((unsigned long long)~key << 32) | (unsigned long long)(uint32_t)e;
            }
        }
    }
    if (!__syncthreads_or(lows) && k <= TOPK_THREADS && topk_rank16_on) {
        topk_rank16(keys, k, rbuf, out);
        return;
    }
    topk_bitonic(keys, k);
    for (int i = tid; i < k; i += blockDim.x)
        out[i] = (int)(uint32_t)keys[i];
}
// k_topk_row's shared-memory limit on the current device (engine creation, before any graph
// capture, and each launch through cuda_engine_topk, which tests call without an engine).
static cudaError_t topk_row_attrs(void)
{
    return cudaFuncSetAttribute(k_topk_row, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                TOPK_ROW_SMEM);
}

// The decode top-k (S <= TOPK_FAST_S queries; cuda_engine_topk picks it, CTX_CUDA_TOPK_FAST=0 keeps
// the two launches above): the same selection in ONE launch, each query's row spread over a thread
// block cluster of TOPK_CL blocks (grid (TOPK_CL, S)), which replaces the merge's second launch and
// its single-block radix passes and bitonic sort (latency, not bandwidth: 128 KB of scores at 128K).
// The output is defined by a total order (score_key descending, then index ascending), so the same
// bytes as k_topk_seg + k_topk_merge whatever the route; tests/kernels/test_engine.c compares both.
// Thread t of cluster block b holds the R = ceil(n / (TOPK_CL * TOPK_THREADS)) consecutive entries
// from (b * TOPK_THREADS + t) * R, so (b, t, j) runs in index order; in registers when R <= TOPK_REG
// (n <= 131072), else read again from memory in each pass. The radix passes are topk_block's (8-bit
// digits, the same early stops: two passes for the indexer's bf16 scores; 11/11/10 bits until
// 2026-11-29's ninth session: the 2048-bin histograms' zeroing, cluster sums and scans cost more than
// the pass they saved on fp32 keys, and bf16 keys took two passes either way; this kernel went 24.2 ->
// 14.5 us at 131K and 38.5 -> 24.2 us at 500K, results/2026-11-29-s11/call10-topk8), with each block's
// histogram summed over the cluster through
// distributed shared memory (every block sums all of them, so every block chooses the same digit, by
// two warp scans, over groups of 64 bins and then within one, instead of one lane's walk; histograms
// alternate between two buffers per pass, so a block zeroes one only after the cluster
// barrier that follows every read of it). Then the k selected (every key above the k-th key's bin,
// the `need` lowest-index ties) go to slots 0..k-1 of every block's cand[] (above ones by their rank
// among the above, ties after them), and each rank is a count: entry i's rank is the number of
// selected composite keys (~key << 32 | index, all distinct) below its own.
#define TOPK_CL 8
#define TOPK_FNB 256 // bins of a pass (8-bit digits)
#define TOPK_FAST_S 8
#define TOPK_FAST_MAXN (1LL << 20) // longer rows (a 4M context) keep the segmented path
__global__ void __cluster_dims__(TOPK_CL, 1, 1) __launch_bounds__(TOPK_THREADS)
    k_topk_fast(const float *score, size_t ld, const long long *ppos, int K, int *sel)
{
    namespace cg = cooperative_groups;
    __shared__ unsigned hist[2][TOPK_FNB], lowb[2][TOPK_FNB / 32], tot[TOPK_FNB], lowt[TOPK_FNB / 32];
    __shared__ unsigned long long cand[TOPK_MAXK], wcnt[32], wexc[32], btot;
    __shared__ unsigned gsum[32], sh_bin, sh_above;
    pdl_begin();
    cg::cluster_group cl = cg::this_cluster();
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, rank = (int)cl.block_rank(), s = blockIdx.y;
    const long long nvl = (*ppos + s + 1) / 4;
    const int n = (int)nvl, k = nvl < K ? (int)nvl : K; // the same n and k in every block of the cluster
    int *out = sel + (size_t)s * K;
    for (int i = k + rank * TOPK_THREADS + tid; i < K; i += TOPK_CL * TOPK_THREADS)
        out[i] = -1;
    if (k <= 0) // the whole cluster returns here, before any cluster barrier
        return;
    const int R = (int)((nvl + TOPK_CL * TOPK_THREADS - 1) / (TOPK_CL * TOPK_THREADS));
    const long long base = ((long long)rank * TOPK_THREADS + tid) * R;
    const int mine = nvl - base <= 0 ? 0 : nvl - base < R ? (int)(nvl - base) : R; // this thread's entries
    const float *sc = score + (size_t)s * ld + base;
    const bool cached = R <= TOPK_REG;
    uint32_t rk[TOPK_REG];
    if (cached) {
#pragma unroll
        for (int j = 0; j < TOPK_REG; j++)
            rk[j] = j < mine ? score_key(sc[j]) : 0u;
    }
    // body(j, key) for j < R (R is the same in every thread: barriers and warp votes inside are uniform);
    // j >= mine is not an entry
    auto each = [&](auto body) {
        if (cached) {
#pragma unroll
            for (int j = 0; j < TOPK_REG; j++)
                if (j < R)
                    body(j, rk[j]);
        } else {
            for (int j = 0; j < R; j++)
                body(j, j < mine ? score_key(sc[j]) : 0u);
        }
    };
    uint32_t prefix = 0, pmask = 0;
    unsigned need = (unsigned)k;
    if (n > k) {
        for (int pass = 0; pass < 4; pass++) { // bits 31..24, 23..16, 15..8, 7..0, as topk_block
            const int shift = 24 - 8 * pass, nb = TOPK_FNB;
            unsigned *h = hist[pass & 1], *lb = lowb[pass & 1];
            for (int i = tid; i < nb; i += TOPK_THREADS)
                h[i] = 0;
            if (tid < nb / 32)
                lb[tid] = 0;
            __syncthreads();
            each([&](int j, uint32_t key) {
                topk_hist_add(h, lb, j < mine && (key & pmask) == prefix, key, shift, nb, lane);
            });
            cl.sync(); // every block's histogram of this pass is complete
            // the cluster's totals; thread tid sums bins 2 tid, 2 tid + 1, so warp w holds the 64 of group w
            unsigned t0 = 0, t1 = 0;
            if (2 * tid < nb) {
#pragma unroll
                for (int r = 0; r < TOPK_CL; r++) {
                    const unsigned *rh = cl.map_shared_rank(h, (unsigned)r);
                    t0 += rh[2 * tid];
                    t1 += rh[2 * tid + 1];
                }
                tot[2 * tid] = t0;
                tot[2 * tid + 1] = t1;
            }
            unsigned gs = t0 + t1;
            for (int o = 16; o > 0; o >>= 1)
                gs += __shfl_xor_sync(0xffffffffu, gs, o);
            if (lane == 0)
                gsum[warp] = gs;
            if (tid < nb / 32) {
                unsigned o = 0;
#pragma unroll
                for (int r = 0; r < TOPK_CL; r++)
                    o |= cl.map_shared_rank(lb, (unsigned)r)[tid];
                lowt[tid] = o;
            }
            __syncthreads();
            if (warp == 0) {
                // topk_block's choice (the highest bin where the count from the top reaches need) in two
                // warp scans: over the groups of 64 bins from the top, lane l group G - 1 - l, then over
                // that group's bins from the top, two a lane
                int G = nb >> 6;
                unsigned ls = lane < G ? gsum[G - 1 - lane] : 0u, inc = ls;
                inc = warp_incl_scan(inc, lane);
                unsigned acc = inc - ls;
                int gl = __ffs(__ballot_sync(0xffffffffu, acc < need && inc >= need)) - 1; // exactly one lane
                unsigned acc0 = __shfl_sync(0xffffffffu, acc, gl);
                int hb = (G - 1 - gl) * 64 + 63 - 2 * lane; // this lane's upper bin; the lower is hb - 1
                unsigned c0 = tot[hb], c1 = tot[hb - 1], ls2 = c0 + c1, inc2 = ls2;
                inc2 = warp_incl_scan(inc2, lane);
                int l2 = __ffs(__ballot_sync(0xffffffffu, acc0 + inc2 >= need)) - 1;
                if (lane == l2) {
                    unsigned ex2 = acc0 + inc2 - ls2; // entries in the bins above hb (< need)
                    sh_bin = ex2 + c0 >= need ? (unsigned)hb : (unsigned)(hb - 1);
                    sh_above = ex2 + c0 >= need ? ex2 : ex2 + c0;
                }
            }
            __syncthreads();
            unsigned bin = sh_bin, cnt = tot[bin];
            int equal = !((lowt[bin >> 5] >> (bin & 31)) & 1u);
            need -= sh_above;
            prefix |= bin << shift;
            pmask |= (uint32_t)(nb - 1) << shift;
            __syncthreads(); // tot, lowt, sh_bin are rewritten by the next pass
            if (cnt == need || equal)
                break;
        }
    }
    // Collect: this thread's entries above the bin (key > hi) and tied with it (key matches prefix),
    // a block prefix count of both, the blocks' totals through the cluster.
    const uint32_t hi = prefix | ~pmask;
    unsigned ca = 0, ct = 0;
    each([&](int j, uint32_t key) {
        if (j < mine) {
            if (key > hi)
                ca++;
            else if ((key & pmask) == prefix)
                ct++;
        }
    });
    unsigned long long v = ((unsigned long long)ca << 32) | ct, inc = v;
    inc = warp_incl_scan(inc, lane);
    if (lane == 31)
        wcnt[warp] = inc;
    __syncthreads();
    if (warp == 0) {
        unsigned long long wv = wcnt[lane], wi = wv; // TOPK_THREADS / 32 = 32 warps
        wi = warp_incl_scan(wi, lane);
        wexc[lane] = wi - wv;
        if (lane == 31)
            btot = wi;
    }
    cl.sync(); // every block's totals (and wexc, within the block)
    unsigned long long before = 0; // above / tied in the blocks before this one
    for (int r = 0; r < rank; r++)
        before += *cl.map_shared_rank(&btot, (unsigned)r);
    unsigned long long ex = before + wexc[warp] + inc - v;
    unsigned na = (unsigned)(ex >> 32), nt = (unsigned)ex, abv = (unsigned)k - need; // abv: every entry above
    each([&](int j, uint32_t key) {
        if (j < mine) {
            int slot = -1;
            if (key > hi) {
                slot = (int)na++;
            } else if ((key & pmask) == prefix) {
                if (nt < need)
                    slot = (int)(abv + nt);
                nt++;
            }
            if (slot >= 0) {
                unsigned long long kv = ((unsigned long long)~key << 32) | (unsigned long long)(uint32_t)(base + j);
#pragma unroll
                for (int r = 0; r < TOPK_CL; r++)
                    cl.map_shared_rank(cand, (unsigned)r)[slot] = kv;
            }
        }
    });
    cl.sync(); // cand[0..k) complete in every block; no block reads another's memory after this
    // rank of cand[i] = how many selected keys are below it (they are distinct); warp per entry
    for (int i = rank * 32 + warp; i < k; i += TOPK_CL * 32) {
        unsigned long long kv = cand[i];
        unsigned c = 0;
        for (int j = lane; j < k; j += 32)
            c += cand[j] < kv;
        for (int o = 16; o > 0; o >>= 1)
            c += __shfl_xor_sync(0xffffffffu, c, o);
        if (lane == 0)
            out[c] = (int)(uint32_t)kv;
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
        if (q >= pos0)
            return kvnew + (size_t)(q - pos0) * d;
        int slot;
        divmod_idx(q, W, &slot);
        return ring + (size_t)slot * d;
    }
    j -= W;
    if (ratio == 4) {
        int e = selrow[j];
        return e >= 0 ? cache + (size_t)e * d : nullptr;
    }
    return cache + (size_t)j * d;
}
// The same with the CSA entry's selected index e (= selrow[j - W]) already loaded.
__device__ __forceinline__ const float *att_entry_id(int j, int e, long long p, long long pos0, int W, int d,
                                                     const float *kvnew, const float *ring, const float *cache,
                                                     int ratio)
{
    if (j < W) {
        long long first = p - W + 1 < 0 ? 0 : p - W + 1, q = first + j;
        if (q > p)
            return nullptr;
        if (q >= pos0)
            return kvnew + (size_t)(q - pos0) * d;
        int slot;
        divmod_idx(q, W, &slot);
        return ring + (size_t)slot * d;
    }
    if (ratio == 4)
        return e >= 0 ? cache + (size_t)e * d : nullptr;
    return cache + (size_t)(j - W) * d;
}

// Sparse attention of one token, in three launches. Its entries j < n (window, then CSA entries in
// indexer order or HCA entries ascending; n = att_n) go in blocks of 64, as the reference's online
// softmax does them; the blocks are cut into at most ATT_MAXSPLIT consecutive runs by a rule that
// depends on n alone (so a query's result does not depend on how a prompt was chunked).
// - k_attn_score (items of (token, head group, entry block) over the grid): the scores q_h . kv_j *
//   scale of a group of heads for one block of entries (each entry read once for all the group's heads:
//   MQA), the dot product lane-strided and warp-summed; into asc[token][head][j].
// - k_attn_pv (grid (tokens * head groups, runs, dim slices)): a run starts from the running max the reference
//   has at its first block (the max of the valid scores before it: exact), then does the reference's
//   arithmetic block by block: running max, fp32 probabilities and their sum in the CPU's order, bf16
//   probabilities in P.V (fused multiply-add in entry order, as the CPU's axpy). So every bf16
//   probability is the reference's; out: the run's unnormalised numerator [d], max and denominator.
// - k_attn_combine (grid tokens * heads): the runs rescaled to the last max and added; one run is
//   the reference's single pass bit for bit, several differ from it by fp32 rounding only.
#define ATT_THREADS 512
#define ATT_HB 8
#define ATT_MAXSPLIT 16
#define ATT_MAXD 1024
#define ATT_DPT (ATT_MAXD / ATT_THREADS)
#define ATT_TOKENS 16 // tokens per launch (bounds the score and partial buffers)
#define ATT_MAXSPLIT_TC 32 // runs of a query in k_attn_dtc (the decode attention on tensor cores)
#define ATT_TOKENS_TC 8    // its tokens per launch: the partials' buffer holds ATT_TOKENS * ATT_MAXSPLIT rows
static_assert(ATT_TOKENS_TC * ATT_MAXSPLIT_TC <= ATT_TOKENS * ATT_MAXSPLIT, "k_attn_dtc: the partials' buffer");
__device__ __forceinline__ void att_split_m(int n, int sp, int msplit, int *c0, int *c1, int *nsplit)
{
    int nch = (n + 63) / 64, cps = (nch + msplit - 1) / msplit;
    *nsplit = (nch + cps - 1) / cps;
    *c0 = sp * cps;
    *c1 = (sp + 1) * cps < nch ? (sp + 1) * cps : nch;
}
__device__ __forceinline__ void att_split(int n, int sp, int *c0, int *c1, int *nsplit)
{
    att_split_m(n, sp, ATT_MAXSPLIT, c0, c1, nsplit);
}
__device__ __forceinline__ int att_n(long long p, int W, int ratio, int K)
{
    return W + (ratio == 4 ? K : ratio ? (int)divmod_idx(p + 1, ratio, nullptr) : 0);
}
// One warp's scores q_h . kv_e * scale of the ne <= ATT_SE entries kv[e] (NULL: empty, -inf) for the
// heads hb < nh (q in shared memory), into o[hb * hs + e]: lane l adds the dims l + 32u in u order,
// then warp_sum (k_attn_score's arithmetic); the entries' loads are all in flight together. d <= 512.
#define ATT_SE 4
__device__ __forceinline__ void att_score_se(const float *const *kv, int ne, const float (*q)[ATT_MAXD], int nh, int d,
                                             float scale, float *o, size_t hs)
{
    int lane = threadIdx.x & 31;
    float kr[ATT_SE][16];
#pragma unroll
    for (int e = 0; e < ATT_SE; e++)
#pragma unroll
        for (int u = 0; u < 16; u++)
            kr[e][u] = kv[e] && lane + 32 * u < d ? kv[e][lane + 32 * u] : 0.f;
    for (int hb = 0; hb < nh; hb++) {
        float dot[ATT_SE];
#pragma unroll
        for (int e = 0; e < ATT_SE; e++) {
            dot[e] = 0.f;
            if (kv[e])
#pragma unroll
                for (int u = 0; u < 16; u++)
                    if (lane + 32 * u < d)
                        dot[e] += q[hb][lane + 32 * u] * kr[e][u];
        }
#pragma unroll
        for (int e = 0; e < ATT_SE; e++) {
            float v = warp_sum(dot[e]);
            if (lane == 0 && e < ne)
                o[(size_t)hb * hs + e] = kv[e] ? v * scale : -INFINITY;
        }
    }
}
// Work items: (token, group of hpb heads, epb entries), item it = (entries, then token and group fastest)
// over the grid in strides (one item a block in the old launch: grid (tokens * groups, entry blocks),
// hpb = ATT_HB, epb 64, target 0). The item shape is chosen here from the entries the chunk's last
// token has (the most), so that a fixed grid (graph replay) fits a short list (sliding window, HCA
// early on) and a long one: epb_max entries when ATT_HB-head items of that size give every SM two
// (2 * target items), else epb_min; then the widest head group of ATT_HB, ATT_HB / 2, .., hpb_min that
// gives `target` items. Which block scores an entry for a head, with which other heads or entries,
// changes nothing in how the score is computed.
__global__ void __launch_bounds__(ATT_THREADS) k_attn_score(const float *Q, const float *kvnew, const float *ring,
                                                            const float *cache, const int *sel, int s0, int ns, int H,
                                                            int d, int W, int ratio, int K, const long long *ppos,
                                                            float scale, float *asc, int ldn, int epb_max, int epb_min,
                                                            int target, int hpb_min)
{
    pdl_begin();
    __shared__ float q[ATT_HB][ATT_MAXD];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarp = (int)blockDim.x / 32;
    long long pos0 = *ppos;
    int nlast = att_n(pos0 + s0 + ns - 1, W, ratio, K), epb = epb_max, hpb = ATT_HB;
    if ((long long)ns * ((H + ATT_HB - 1) / ATT_HB) * ((nlast + epb - 1) / epb) < 2LL * target)
        epb = epb_min;
    int neb = (nlast + epb - 1) / epb;
    while (hpb > hpb_min && (long long)ns * ((H + hpb - 1) / hpb) * neb < target)
        hpb /= 2;
    int ng = (H + hpb - 1) / hpb, nx = ns * ng, nitems = nx * neb;
    for (int it = (int)(blockIdx.y * gridDim.x + blockIdx.x); it < nitems; it += (int)(gridDim.x * gridDim.y)) {
        int s = s0 + it % nx / ng, h0 = it % nx % ng * hpb, b0 = it / nx * epb;
        int nh = H - h0 < hpb ? H - h0 : hpb;
        long long p = pos0 + s;
        int n = att_n(p, W, ratio, K);
        if (b0 >= n) // (block-uniform)
            continue;
        int bn = n - b0 < epb ? n - b0 : epb;
        __syncthreads(); // the previous item's reads of q are done
        for (int t = threadIdx.x; t < d; t += blockDim.x) { // the heads' loads in flight together
            float v[ATT_HB];
#pragma unroll
            for (int hb = 0; hb < ATT_HB; hb++)
                v[hb] = hb < nh ? Q[((size_t)s * H + h0 + hb) * d + t] : 0.f;
#pragma unroll
            for (int hb = 0; hb < ATT_HB; hb++)
                q[hb][t] = v[hb];
        }
        __syncthreads();
        const int *selrow = ratio == 4 ? sel + (size_t)s * K : nullptr;
        if (d <= 512) { // warp w: entries 4w .. 4w + 3, loaded together
            for (int j0 = warp * ATT_SE; j0 < bn; j0 += nwarp * ATT_SE) {
                const float *kv[ATT_SE];
#pragma unroll
                for (int e = 0; e < ATT_SE; e++)
                    kv[e] = j0 + e < bn ? att_entry(b0 + j0 + e, p, pos0, W, d, kvnew, ring, cache, ratio, selrow)
                                        : nullptr;
                att_score_se(kv, bn - j0, q, nh, d, scale, asc + ((size_t)(s - s0) * H + h0) * ldn + b0 + j0,
                             (size_t)ldn);
            }
            continue;
        }
        for (int j = warp; j < bn; j += nwarp) {
            const float *kv = att_entry(b0 + j, p, pos0, W, d, kvnew, ring, cache, ratio, selrow);
            float kr[ATT_MAXD / 32];
#pragma unroll
            for (int u = 0; u < ATT_MAXD / 32; u++)
                kr[u] = kv && lane + 32 * u < d ? kv[lane + 32 * u] : 0.f;
            for (int hb = 0; hb < nh; hb++) {
                float dot = 0.f;
                if (kv)
#pragma unroll
                    for (int u = 0; u < ATT_MAXD / 32; u++)
                        if (lane + 32 * u < d)
                            dot += q[hb][lane + 32 * u] * kr[u];
                dot = warp_sum(dot);
                if (lane == 0)
                    asc[((size_t)(s - s0) * H + h0 + hb) * ldn + b0 + j] = kv ? dot * scale : -INFINITY;
            }
        }
    }
}

#define ATT_VB 32 // entries whose values a thread loads before adding them
// HPT: heads a thread accumulates in P.V. HPT = ATT_HB (grid z 1) is the original kernel: thread t owns
// dims t, t + ATT_THREADS of all ATT_HB heads. HPT < ATT_HB splits a run over NGR = ATT_HB / HPT blocks
// (grid z): block z, thread t owns heads (t / DSL) * HPT .. + HPT - 1 and dims z * DSL + t % DSL (+
// ATT_THREADS), DSL = ATT_THREADS / NGR, so z and t cover the same (head, dim) pairs. Every block of a
// run redoes the run's softmax (the same operations on the same scores: the same bits), and each
// numerator element is the same chain num * corr, then one fmaf per entry in entry order, whichever
// thread runs it; block z = 0 writes the run's max and denominator.
// V4: the probabilities of four entries come in one 16-byte shared load (a quarter of the loads of
// the P.V loop, which had one per multiply-add); the same operands in the same order.
template <int HPT, bool V4>
__global__ void __launch_bounds__(ATT_THREADS) k_attn_pv(const float *kvnew, const float *ring, const float *cache,
                                                         const int *sel, int s0, int H, int d, int W, int ratio, int K,
                                                         const long long *ppos, const float *asc, int ldn, float *part)
{
    pdl_begin();
    __shared__ float sc[ATT_HB][64], praw[ATT_HB][64], red[ATT_HB][ATT_THREADS / 32];
    __shared__ __align__(16) float pj[ATT_HB][64];
    __shared__ const float *ptr[64];
    __shared__ float corr_sh[ATT_HB], mx_sh[ATT_HB];
    __shared__ int any_sh;
    int ng = (H + ATT_HB - 1) / ATT_HB;
    int s = s0 + (int)blockIdx.x / ng, h0 = (int)(blockIdx.x % ng) * ATT_HB, sp = blockIdx.y;
    int nh = H - h0 < ATT_HB ? H - h0 : ATT_HB;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    long long pos0 = *ppos, p = pos0 + s;
    int n = att_n(p, W, ratio, K), c0, c1, nsplit;
    att_split(n, sp, &c0, &c1, &nsplit);
    if (sp >= nsplit)
        return;
    const int *selrow = ratio == 4 ? sel + (size_t)s * K : nullptr;
    const float *sc0 = asc + ((size_t)(s - s0) * H + h0) * ldn;
    // thread t holds score t % 64 of head t / 64 of a 64-entry block (and, t < 64, its selected index),
    // loaded one block ahead so that the loads' latency overlaps the work on the current block
    static_assert(ATT_HB * 64 == ATT_THREADS, "k_attn_pv: one score of a block per thread");
    int tj = threadIdx.x % 64, thb = threadIdx.x / 64, nid = 0;
    float nsc = -INFINITY;
    {
        int b1 = c0 * 64, bn1 = n - b1 < 64 ? n - b1 : 64;
        if (threadIdx.x < 64 && ratio == 4 && tj < bn1 && b1 + tj >= W)
            nid = selrow[b1 + tj - W];
        nsc = thb < nh && tj < bn1 ? sc0[(size_t)thb * ldn + b1 + tj] : -INFINITY;
    }
    { // the running max before this run: the max of the valid scores of the earlier blocks
        float lm[ATT_HB];
#pragma unroll
        for (int hb = 0; hb < ATT_HB; hb++)
            lm[hb] = -INFINITY;
        // k_attn_score wrote -inf for the empty entries, which the max ignores: no entry lookup here
#pragma unroll 4
        for (int j = threadIdx.x; j < c0 * 64; j += ATT_THREADS)
#pragma unroll
            for (int hb = 0; hb < ATT_HB; hb++)
                if (hb < nh)
                    lm[hb] = fmaxf(lm[hb], sc0[(size_t)hb * ldn + j]);
#pragma unroll
        for (int hb = 0; hb < ATT_HB; hb++) {
            float v = warp_max(lm[hb]);
            if (lane == 0)
                red[hb][warp] = v;
        }
        __syncthreads();
        if (threadIdx.x < ATT_HB) {
            float v = -INFINITY;
            for (int w = 0; w < ATT_THREADS / 32; w++)
                v = fmaxf(v, red[threadIdx.x][w]);
            mx_sh[threadIdx.x] = v;
        }
    }
    static_assert(ATT_HB % HPT == 0, "k_attn_pv: HPT divides ATT_HB");
    constexpr int NGR = ATT_HB / HPT, DSL = ATT_THREADS / NGR;
    // this thread's heads hg .. hg + HPT - 1 and its first dim i0 (HPT = ATT_HB: hg 0, i0 = threadIdx.x)
    int hg = (int)threadIdx.x / DSL * HPT, i0 = (int)blockIdx.z * DSL + (int)threadIdx.x % DSL;
    float num[HPT][ATT_DPT], den = 0.f; // den: lane 0 of warp hb, for head hb
#pragma unroll
    for (int k = 0; k < HPT; k++)
#pragma unroll
        for (int u = 0; u < ATT_DPT; u++)
            num[k][u] = 0.f;
    __syncthreads();
    for (int b0 = c0 * 64; b0 < c1 * 64 && b0 < n; b0 += 64) {
        int bn = n - b0 < 64 ? n - b0 : 64;
        if (threadIdx.x < 64)
            ptr[tj] = tj < bn ? att_entry_id(b0 + tj, nid, p, pos0, W, d, kvnew, ring, cache, ratio) : nullptr;
        sc[thb][tj] = nsc;
        __syncthreads();
        { // the next block's ids and scores
            int b1 = b0 + 64, bn1 = n - b1 < 64 ? n - b1 : 64;
            if (b1 < c1 * 64 && b1 < n) {
                if (threadIdx.x < 64 && ratio == 4 && tj < bn1 && b1 + tj >= W)
                    nid = selrow[b1 + tj - W];
                nsc = thb < nh && tj < bn1 ? sc0[(size_t)thb * ldn + b1 + tj] : -INFINITY;
            }
        }
        if (warp < nh) {
            int hb = warp;
            int v0 = lane < bn && ptr[lane], v1 = lane + 32 < bn && ptr[lane + 32];
            float bmax = warp_max(fmaxf(v0 ? sc[hb][lane] : -INFINITY, v1 ? sc[hb][lane + 32] : -INFINITY));
            int any = __any_sync(0xffffffffu, v0 || v1);
            if (any) {
                float nmax = fmaxf(mx_sh[hb], bmax);
                float p0 = v0 ? expf(sc[hb][lane] - nmax) : 0.f, p1 = v1 ? expf(sc[hb][lane + 32] - nmax) : 0.f;
                praw[hb][lane] = p0;
                praw[hb][lane + 32] = p1;
                pj[hb][lane] = bf16r(p0);
                pj[hb][lane + 32] = bf16r(p1);
                __syncwarp();
                if (lane == 0) {
                    float corr = expf(mx_sh[hb] - nmax), psum = 0.f;
#pragma unroll
                    for (int j = 0; j < 64; j++) // in entry order; unrolled so that the loads overlap
                        if (j < bn)
                            psum += praw[hb][j];
                    den = den * corr + psum;
                    corr_sh[hb] = corr;
                    mx_sh[hb] = nmax;
                }
            }
            if (hb == 0 && lane == 0)
                any_sh = any;
        }
        __syncthreads();
        if (any_sh && hg < nh) { // (heads past nh: nothing to keep; HPT = ATT_HB: hg = 0 < nh always)
#pragma unroll
            for (int u = 0; u < ATT_DPT; u++) {
                int i = i0 + u * ATT_THREADS;
                if (i >= d)
                    break;
                float a[HPT];
#pragma unroll
                for (int k = 0; k < HPT; k++)
                    a[k] = num[k][u] * corr_sh[hg + k < nh ? hg + k : 0];
                for (int j0 = 0; j0 < bn; j0 += ATT_VB) { // loads first, then the adds in entry order
                    float v[ATT_VB];
#pragma unroll
                    for (int w = 0; w < ATT_VB; w++)
                        v[w] = j0 + w < bn && ptr[j0 + w] ? ptr[j0 + w][i] : 0.f;
                    if (V4) { // per head, its entries in order: each a[k] sees the same fmaf chain
#pragma unroll
                        for (int w4 = 0; w4 < ATT_VB; w4 += 4) {
                            bool ok[4];
#pragma unroll
                            for (int w = 0; w < 4; w++)
                                ok[w] = j0 + w4 + w < bn && ptr[j0 + w4 + w];
#pragma unroll
                            for (int k = 0; k < HPT; k++) {
                                float4 p4 = *reinterpret_cast<const float4 *>(&pj[hg + k][j0 + w4]);
                                if (ok[0])
                                    a[k] = fmaf(p4.x, v[w4], a[k]);
                                if (ok[1])
                                    a[k] = fmaf(p4.y, v[w4 + 1], a[k]);
                                if (ok[2])
                                    a[k] = fmaf(p4.z, v[w4 + 2], a[k]);
                                if (ok[3])
                                    a[k] = fmaf(p4.w, v[w4 + 3], a[k]);
                            }
                        }
                    } else {
#pragma unroll
                        for (int w = 0; w < ATT_VB; w++)
                            if (j0 + w < bn && ptr[j0 + w])
#pragma unroll
                                for (int k = 0; k < HPT; k++)
                                    a[k] = fmaf(pj[hg + k][j0 + w], v[w], a[k]);
                    }
                }
#pragma unroll
                for (int k = 0; k < HPT; k++)
                    num[k][u] = a[k];
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int k = 0; k < HPT; k++) {
        if (hg + k >= nh)
            break;
        float *o = part + (((size_t)(s - s0) * H + h0 + hg + k) * ATT_MAXSPLIT + sp) * (size_t)(d + 2);
#pragma unroll
        for (int u = 0; u < ATT_DPT; u++) {
            int i = i0 + u * ATT_THREADS;
            if (i < d)
                o[i] = num[k][u];
        }
    }
    if (blockIdx.z == 0 && warp < nh && lane == 0) { // lane 0 of warp hb holds head hb's denominator
        float *o = part + (((size_t)(s - s0) * H + h0 + warp) * ATT_MAXSPLIT + sp) * (size_t)(d + 2);
        o[d] = mx_sh[warp];
        o[d + 1] = den;
    }
}

// Merge of the runs of one (token, head) (grid S*H): the runs' numerators and denominators rescaled
// to the largest max (a factor of exactly 1 when there is one run: then this is the single-pass
// result bit for bit), the sink in the denominator, bf16 out, inverse RoPE of the tail.
// With ring != NULL (a chunk of S <= ATT_TOKENS tokens: this is its only combine) it also does
// k_ring_update's copy of the chunk's kv into the window ring, one block a token: the ring's readers
// (k_attn_score, k_attn_pv) have completed when this kernel passes its wait.
// MS: the most runs a query of this launch can have (the caller's bound: the grid of the kernel that
// wrote part), a power of two up to ATT_COMBINE_MS. The loops over the runs are unrolled to MS with the
// runs past nsplit predicated off, so a launch of few runs (a sliding-window layer's 2, a CSA layer's 10)
// does not carry 32 runs' addresses and predicates (the 32-run form's issue slots were 22% busy on them at
// decode: twenty-fifth session); the runs are added in the same order whatever MS, so the same bits.
#define ATT_COMBINE_MS (ATT_MAXSPLIT_TC > ATT_MAXSPLIT ? ATT_MAXSPLIT_TC : ATT_MAXSPLIT)
template <int MS = ATT_COMBINE_MS>
__global__ void k_attn_combine(const float *part, int s0, int H, int d, int W, int ratio, int K,
                               const long long *ppos, const float *sink, const float *rope, int rd, float *O,
                               const float *kv, float *ring, int S, int msplit)
{
    static_assert(MS >= 1 && MS <= ATT_COMBINE_MS, "k_attn_combine: runs");
    pdl_begin();
    extern __shared__ float outs[];
    if (ring) {
        int rs0 = S - W < 0 ? 0 : S - W, rs = rs0 + (int)blockIdx.x;
        if (rs < S) {
            int slot;
            divmod_idx(*ppos + rs, W, &slot);
            float *dst = ring + (size_t)slot * d;
            for (int i = threadIdx.x; i < d; i += blockDim.x)
                dst[i] = kv[(size_t)rs * d + i];
        }
    }
    int s = s0 + (int)blockIdx.x / H, h = (int)blockIdx.x % H;
    long long p = *ppos + s;
    const float *cs = rope + (size_t)p * rd;
    // the thread's first RoPE pair's table entries, loaded now: their latency under the runs' loads
    const float2 cs0 = (int)threadIdx.x < rd / 2 ? make_float2(cs[2 * threadIdx.x], cs[2 * threadIdx.x + 1])
                                                 : make_float2(0.f, 0.f);
    const float sink_h = sink[h];
    int n = att_n(p, W, ratio, K), c0, c1, nsplit;
    att_split_m(n, 0, msplit, &c0, &c1, &nsplit);
    const float *pt = part + ((size_t)(s - s0) * H + h) * msplit * (size_t)(d + 2);
    // every thread computes the max, factors and denominator itself (the same arithmetic in the same
    // order, so the same bits in every thread), with the loads of all runs in flight at once
    float mv[MS], dv[MS], fac[MS], M = -INFINITY, den = 0.f;
#pragma unroll
    for (int i = 0; i < MS; i++) {
        mv[i] = i < nsplit ? pt[(size_t)i * (d + 2) + d] : -INFINITY;
        dv[i] = i < nsplit ? pt[(size_t)i * (d + 2) + d + 1] : 0.f;
    }
#pragma unroll
    for (int i = 0; i < MS; i++)
        if (i < nsplit)
            M = fmaxf(M, mv[i]);
#pragma unroll
    for (int i = 0; i < MS; i++) {
        fac[i] = i < nsplit && mv[i] != -INFINITY ? expf(mv[i] - M) : 0.f;
        if (i < nsplit)
            den += dv[i] * fac[i];
    }
    float dn = den + expf(sink_h - M);
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
        float v[MS], num = 0.f;
#pragma unroll
        for (int k = 0; k < MS; k++)
            v[k] = k < nsplit ? pt[(size_t)k * (d + 2) + i] : 0.f;
#pragma unroll
        for (int k = 0; k < MS; k++)
            if (k < nsplit)
                num += v[k] * fac[k];
        outs[i] = bf16r(num / dn);
    }
    __syncthreads();
    rope_pairs(outs + d - rd, cs, rd, 1, &cs0); // the inverse RoPE of the tail
    __syncthreads();
    for (int i = threadIdx.x; i < d; i += blockDim.x)
        O[((size_t)s * H + h) * d + i] = outs[i];
}

// Sparse attention of prefill chunks on tensor cores (S > ATC_MIN_S tokens, head_dim 512): one block
// per (token, 64 heads) does the whole entry list, one 64-entry block after another, in the
// reference's online-softmax arithmetic. For one query this is two GEMMs with M = the heads: the
// scores S[h][j] = q_h . kv_j (mma.sync m16n8k16, bf16 in, fp32 accumulate: queries and entries are
// bf16-exact, so every product is exact and only the fp32 summation order differs from the CPU's),
// then per head and block the CPU's steps (max of the valid scores, running max, fp32 exp, the
// probabilities' sum in entry order, the correction of the numerator and denominator), and
// num = num * corr + P . V with P the bf16 probabilities (exact products again). The entries are
// gathered from the window ring / this chunk's kv / the compressed cache as bf16 into shared memory
// (exact) and serve both products (MQA: V = K); the numerator stays in registers (a warp: 16 heads x
// 128 dims). Then the sink, num / den in bf16 and the inverse RoPE of the tail, as k_attn_combine.
// A query's arithmetic depends on its own entry list only (not on the chunk), so chunked prefill is
// invariant; decode (S <= ATC_MIN_S) keeps the three kernels above (many blocks for one token).
#define ATC_MIN_S 8
#define ATC_THREADS 512
#define ATC_D 512
#define ATC_LD (ATC_D + 8) // bf16 row stride of the query and entry tiles: conflict-free fragments / ldmatrix
#define ATC_LDP 72         // bf16 probabilities [64][ATC_LDP]
#define ATC_LDS 72         // fp32 scores / probabilities [64][ATC_LDS]
// shared memory of a block of NHG groups of 16 heads: queries and entries (bf16), probabilities (bf16 and fp32)
#define ATC_SMEM_H(NHG) (sizeof(uint16_t) * ((16 * (NHG) + 64) * ATC_LD + 16 * (NHG) * ATC_LDP) + sizeof(float) * 16 * (NHG) * ATC_LDS)
#define ATC_SMEM ATC_SMEM_H(4)
// k_attn_tc's C16 path: a second entry tile, so that the next block's entries arrive while this one's are used
#define ATC_SMEM_C16 (ATC_SMEM + sizeof(uint16_t) * 64 * ATC_LD)
__device__ __forceinline__ uint32_t atc_ld32(const uint16_t *p) { return *(const uint32_t *)p; }
// An m16n8k16 A fragment from bf16 rows of stride ld: p = this lane's row g at column k0 + 2 t4
__device__ __forceinline__ void atc_afrag(uint32_t (&a)[4], const uint16_t *p, int ld)
{
    a[0] = atc_ld32(p);
    a[1] = atc_ld32(p + 8 * ld);
    a[2] = atc_ld32(p + 8);
    a[3] = atc_ld32(p + 8 * ld + 8);
}
// The body of k_attn_tc (NHG = 4: 64 heads, 512 threads) and of the decode kernel k_attn_dtc (NHG = 1:
// 16 heads, 128 threads): query s's heads h0 .. h0 + nh (nh <= 16 NHG) over the 64-entry blocks
// [t_lo, t_hi) of its list (n entries), then PART == false: the whole list was done, so the sink,
// num / den and the inverse RoPE into O; PART == true: the unnormalised numerator, the running max
// and the denominator into part's row (h, sp) of msplit, k_attn_pv's layout, for k_attn_combine.
// Warps: scores on SW warps of SH m16 tiles of heads x 16 entries (64 heads: 8 warps of 32 x 16; 16
// heads: 4 warps of 16 x 16), P.V on every warp (16 heads x 128 dims): each (head, entry) and (head, dim)
// gets the same instruction sequence in both kernels, whatever warp runs it.
// C16 (k_attn_tc of HCA layers): c16 holds the compressed cache in bf16 (k_stage_bf16 of cache, the same
// bits the gather's conversion gives), and the blocks wholly past the window come from it by cp.async
// into two tiles in turn: block b + 1's copy is issued once block b's has landed, so it runs under block
// b's products. The window's blocks are gathered as before. The same values in the same tiles: the same
// arithmetic, the same bits.
// QB (k_attn_dtc with ATTN_LAT): the queries' 16 loads a thread all in flight before the first is converted,
// instead of one loop iteration (a load, its conversion, its store) at a time.
template <int NHG, bool PART, bool C16 = false, bool QB = false>
__device__ __forceinline__ void attn_tc_body(const float *Q, const float *kvnew, const float *ring, const float *cache,
                                             const int *selrow, int s, int H, int h0, int W, int ratio, long long p,
                                             long long pos0, int n, int t_lo, int t_hi, float scale, const float *sink,
                                             const float *rope, int rd, float *O, float *part, int s0, int sp,
                                             int msplit, const uint16_t *c16 = nullptr)
{
    constexpr int NT = NHG * 128, NHR = NHG * 16, LPT = 64 * (ATC_D / 4) / NT, RL = NHG == 4 ? 8 : 16;
    static_assert(LPT % RL == 0, "attn_tc_body: gather rounds");
    extern __shared__ __align__(16) unsigned char atc_sm[];
    uint16_t *qs = (uint16_t *)atc_sm, *ks0 = qs + NHR * ATC_LD, *pb = ks0 + 64 * ATC_LD;
    float *ps = (float *)(pb + NHR * ATC_LDP);
    uint16_t *const ks1 = C16 ? (uint16_t *)(ps + NHR * ATC_LDS) : ks0; // C16: the second tile, after ps
    int cur = 0;            // the tile of this block
    int pend = -1;          // C16: the block whose copy is in flight (into the tile of its turn)
    __shared__ const float *ptr[64];
    __shared__ float corr_sh[64], mx_sh[64], den_sh[64];
    const int d = ATC_D;
    int nh = H - h0 < NHR ? H - h0 : NHR;
    int tid = (int)threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t4 = lane & 3;
    if (QB) { // queries (bf16-exact) as bf16; rows >= nh zero
        constexpr int QPT = NHR * (ATC_D / 4) / NT;
        static_assert(QPT * NT == NHR * (ATC_D / 4), "attn_tc_body: query loads a thread");
        float4 v[QPT];
#pragma unroll
        for (int u = 0; u < QPT; u++) {
            const int i = tid + u * NT, h = i / (ATC_D / 4), c = (i % (ATC_D / 4)) * 4;
            v[u] = h < nh ? *(const float4 *)(Q + ((size_t)s * H + h0 + h) * ATC_D + c) : make_float4(0.f, 0.f, 0.f, 0.f);
        }
#pragma unroll
        for (int u = 0; u < QPT; u++) {
            const int i = tid + u * NT, h = i / (ATC_D / 4), c = (i % (ATC_D / 4)) * 4;
            *(uint2 *)(qs + h * ATC_LD + c) = make_uint2(pack_bf16x2(v[u].x, v[u].y), pack_bf16x2(v[u].z, v[u].w));
        }
    } else {
        for (int i = tid; i < NHR * (d / 4); i += NT) { // queries (bf16-exact) as bf16; rows >= nh zero
            int h = i / (d / 4), c = (i % (d / 4)) * 4;
            float4 v = h < nh ? *(const float4 *)(Q + ((size_t)s * H + h0 + h) * d + c) : make_float4(0.f, 0.f, 0.f, 0.f);
            *(uint2 *)(qs + h * ATC_LD + c) = make_uint2(pack_bf16x2(v.x, v.y), pack_bf16x2(v.z, v.w));
        }
    }
    if (tid < NHR)
        mx_sh[tid] = -INFINITY;
    float den = 0.f;                               // threads 8h: head h's denominator
    // Scores: SW warps, each SH m16 tiles of heads x SE n8 tiles of entries (64 heads: 8 warps of 32 x 16;
    // 16 heads: 4 warps of 16 x 16); P.V: every warp 16 heads x 128 dims. Until 2026-11-29's eighth session the 64-head scores ran on 16 warps of 16 x 16: Nsight Compute had
    // k_attn_tc's shared-memory pipe the busiest unit (L1/TEX 74%), and 32-head tiles read each key
    // fragment for two products. Measured in one run (results/2026-11-29-s10/call7-maps, the HCA layer's
    // chunk of 2048 at 500K, flash4's attention stage): 10.6 ms before, 10.0 with these tiles, 10.3 with
    // P.V on 32 x 64, 10.8 with scores on 4 warps of 32 x 32 and P.V on 32 x 64. Every (head, entry) and
    // (head, dim) gets the same mma sequence whatever the tiles: the same bytes (test_attn's bound lines
    // identical under all four).
    constexpr int SH = NHG == 4 ? 2 : 1, SE = 2, SW = NHG == 4 ? 8 : 4;
    static_assert(NHG == 4 || NHG == 1, "attn_tc_body: 16 or 64 heads a block");
    const int hs = NHG == 4 ? (warp >> 2) * 32 : 0, es = NHG == 4 ? (warp & 3) * 16 : warp * 16; // score tile
    const int hv = NHG == 4 ? (warp & 3) * 16 : 0, dv = NHG == 4 ? (warp >> 2) * 128 : warp * 128; // P.V tile
    float acc[16][4];
#pragma unroll
    for (int nt = 0; nt < 16; nt++)
#pragma unroll
        for (int r = 0; r < 4; r++)
            acc[nt][r] = 0.f;
    // C16: block b0's bf16 entries (cache rows b0 - W ..) into tile kt by cp.async, zeros past the list
    auto c16_load = [&](int b0, uint16_t *kt) {
        const uint32_t kb = (uint32_t)__cvta_generic_to_shared(kt);
#pragma unroll
        for (int u = 0; u < 64 * (ATC_D / 8) / NT; u++) {
            int i = tid + u * NT, r = i >> 6, c = i & 63;
            bool ok = b0 + r < n;
            cp_async16(kb + (uint32_t)(sizeof(uint16_t) * (r * ATC_LD + c * 8)),
                       c16 + (ok ? (size_t)(b0 + r - W) * ATC_D + c * 8 : 0), ok);
        }
        cp_async_commit();
    };
    for (int b0 = t_lo * 64; b0 < t_hi * 64 && b0 < n; b0 += 64, cur ^= (C16 ? 1 : 0)) {
        int bn = n - b0 < 64 ? n - b0 : 64;
        uint16_t *const ks = cur ? ks1 : ks0;
        const bool cblk = C16 && b0 >= W; // uniform: every entry of the block is a compressed one
        __syncthreads(); // the previous block's reads of ptr, ks and pb are done
        if (tid < 64)
            ptr[tid] = tid < bn ? att_entry(b0 + tid, p, pos0, W, d, kvnew, ring, cache, ratio, selrow) : nullptr;
        if (cblk) {
            if (pend != b0) // the first such block: nobody asked for it yet
                c16_load(b0, ks);
            cp_async_wait<0>(); // this thread's pieces are in
        }
        __syncthreads();
        if (cblk) {
            if (b0 + 64 < t_hi * 64 && b0 + 64 < n) { // the next block into the other tile (its last reader was
                c16_load(b0 + 64, cur ? ks0 : ks1);   // the previous block, done before the barrier at the top)
                pend = b0 + 64;
            }
        } else {
#pragma unroll
            for (int rr = 0; rr < LPT / RL; rr++) { // 64 entries x 128 float4: RL loads a thread in flight at once
                float4 v[RL];
#pragma unroll
                for (int u = 0; u < RL; u++) {
                    int i = tid + (rr * RL + u) * NT, r = i >> 7, c = (i & 127) * 4;
                    const float *src = ptr[r];
                    v[u] = src ? __ldg((const float4 *)(src + c)) : make_float4(0.f, 0.f, 0.f, 0.f);
                }
#pragma unroll
                for (int u = 0; u < RL; u++) {
                    int i = tid + (rr * RL + u) * NT, r = i >> 7, c = (i & 127) * 4;
                    *(uint2 *)(ks + r * ATC_LD + c) = make_uint2(pack_bf16x2(v[u].x, v[u].y), pack_bf16x2(v[u].z, v[u].w));
                }
            }
        }
        // an all-empty block changes nothing (the reference skips it)
        if (!__syncthreads_or(tid < bn && ptr[tid] != nullptr))
            continue;
        if (warp < SW && hs < nh) {
            float c[SH][SE][4];
#pragma unroll
            for (int m = 0; m < SH; m++)
#pragma unroll
                for (int nt = 0; nt < SE; nt++)
#pragma unroll
                    for (int r = 0; r < 4; r++)
                        c[m][nt][r] = 0.f;
            const uint16_t *qa = qs + (hs + g) * ATC_LD + 2 * t4, *kb = ks + (es + g) * ATC_LD + 2 * t4;
#pragma unroll 4
            for (int k0 = 0; k0 < d; k0 += 16) {
                uint32_t a[SH][4];
#pragma unroll
                for (int m = 0; m < SH; m++)
                    atc_afrag(a[m], qa + m * 16 * ATC_LD + k0, ATC_LD);
#pragma unroll
                for (int nt = 0; nt < SE; nt++) {
                    uint32_t b0 = atc_ld32(kb + nt * 8 * ATC_LD + k0), b1 = atc_ld32(kb + nt * 8 * ATC_LD + k0 + 8);
#pragma unroll
                    for (int m = 0; m < SH; m++)
                        mma_bf16_16816(c[m][nt], a[m], b0, b1);
                }
            }
#pragma unroll
            for (int m = 0; m < SH; m++)
#pragma unroll
                for (int nt = 0; nt < SE; nt++) {
                    int col = es + nt * 8 + 2 * t4, row = hs + m * 16 + g;
                    *(float2 *)(ps + row * ATC_LDS + col) = make_float2(c[m][nt][0] * scale, c[m][nt][1] * scale);
                    *(float2 *)(ps + (row + 8) * ATC_LDS + col) = make_float2(c[m][nt][2] * scale, c[m][nt][3] * scale);
                }
        }
        __syncthreads();
        { // the reference's block step: 8 threads a head, 8 entries each
            int h = tid >> 3, sub = tid & 7;
            float *row = ps + h * ATC_LDS;
            float v[8], bmax = -INFINITY;
            int ok[8];
#pragma unroll
            for (int u = 0; u < 8; u++) {
                int j = sub * 8 + u;
                ok[u] = j < bn && ptr[j] != nullptr;
                v[u] = row[j];
                if (ok[u])
                    bmax = fmaxf(bmax, v[u]);
            }
            bmax = fmaxf(bmax, __shfl_xor_sync(0xffffffffu, bmax, 1));
            bmax = fmaxf(bmax, __shfl_xor_sync(0xffffffffu, bmax, 2));
            bmax = fmaxf(bmax, __shfl_xor_sync(0xffffffffu, bmax, 4));
            float mo = mx_sh[h], nmax = fmaxf(mo, bmax);
#pragma unroll
            for (int u = 0; u < 8; u++) {
                int j = sub * 8 + u;
                float pr = ok[u] ? expf(v[u] - nmax) : 0.f;
                row[j] = pr;
                pb[h * ATC_LDP + j] = bf16bits(pr);
            }
            __syncwarp();
            if (sub == 0) {
                float corr = expf(mo - nmax), pv[64], psum = 0.f;
#pragma unroll
                for (int j = 0; j < 64; j++) // loads first, then the sum in entry order (the CPU's)
                    pv[j] = row[j];
#pragma unroll
                for (int j = 0; j < 64; j++)
                    if (j < bn)
                        psum += pv[j];
                den = den * corr + psum;
                corr_sh[h] = corr;
                mx_sh[h] = nmax;
            }
        }
        __syncthreads();
        if (hv < nh) {
            float c0 = corr_sh[hv + g], c1 = corr_sh[hv + g + 8];
#pragma unroll
            for (int nt = 0; nt < 16; nt++) {
                acc[nt][0] *= c0;
                acc[nt][1] *= c0;
                acc[nt][2] *= c1;
                acc[nt][3] *= c1;
            }
            const uint16_t *pa = pb + (hv + g) * ATC_LDP + 2 * t4;
            uint32_t vbase = (uint32_t)__cvta_generic_to_shared(ks + (lane & 15) * ATC_LD + dv + 8 * (lane >> 4));
#pragma unroll
            for (int k0 = 0; k0 < 64; k0 += 16) {
                uint32_t a[4];
                atc_afrag(a, pa + k0, ATC_LDP);
#pragma unroll
                for (int np = 0; np < 8; np++) {
                    uint32_t r0, r1, r2, r3;
                    uint32_t addr = vbase + (uint32_t)sizeof(uint16_t) * (k0 * ATC_LD + np * 16);
                    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                                 : "r"(addr));
                    mma_bf16_16816(acc[2 * np], a, r0, r1);
                    mma_bf16_16816(acc[2 * np + 1], a, r2, r3);
                }
            }
        }
    }
    __syncthreads();
    if (PART) { // the run's numerator, max and denominator (k_attn_pv's layout)
        const size_t rs = (size_t)(d + 2);
        if ((tid & 7) == 0 && (tid >> 3) < nh) {
            float *o = part + (((size_t)(s - s0) * H + h0 + (tid >> 3)) * msplit + sp) * rs;
            o[d] = mx_sh[tid >> 3];
            o[d + 1] = den;
        }
        if (hv < nh) {
#pragma unroll
            for (int nt = 0; nt < 16; nt++) {
                int col = dv + nt * 8 + 2 * t4;
#pragma unroll
                for (int hf = 0; hf < 2; hf++) {
                    int r = hv + g + 8 * hf;
                    if (r < nh)
                        *(float2 *)(part + (((size_t)(s - s0) * H + h0 + r) * msplit + sp) * rs + col) =
                            make_float2(acc[nt][2 * hf], acc[nt][2 * hf + 1]);
                }
            }
        }
        return;
    }
    if ((tid & 7) == 0 && (tid >> 3) < nh)
        den_sh[tid >> 3] = den + expf(sink[h0 + (tid >> 3)] - mx_sh[tid >> 3]);
    __syncthreads();
    if (hv < nh) {
        const float *cs = rope + (size_t)p * rd;
#pragma unroll
        for (int nt = 0; nt < 16; nt++) {
            int col = dv + nt * 8 + 2 * t4;
#pragma unroll
            for (int hf = 0; hf < 2; hf++) {
                int r = hv + g + 8 * hf;
                if (r >= nh)
                    continue;
                float a = bf16r(acc[nt][2 * hf] / den_sh[r]), b = bf16r(acc[nt][2 * hf + 1] / den_sh[r]);
                if (col >= d - rd) { // inverse RoPE of the tail (pairs are adjacent dims: this thread's own)
                    int pi = (col - (d - rd)) / 2;
                    float co = cs[2 * pi], sn = -cs[2 * pi + 1], x = a;
                    a = bf16r(x * co - b * sn);
                    b = bf16r(x * sn + b * co);
                }
                *(float2 *)(O + ((size_t)s * H + h0 + r) * d + col) = make_float2(a, b);
            }
        }
    }
}
template <bool C16>
__global__ void __launch_bounds__(ATC_THREADS, 1) k_attn_tc(const float *Q, const float *kvnew, const float *ring,
                                                            const float *cache, const int *sel, int H, int W, int ratio,
                                                            int K, const long long *ppos, float scale, const float *sink,
                                                            const float *rope, int rd, float *O, const uint16_t *c16)
{
    int s = (int)blockIdx.x, h0 = (int)blockIdx.y * 64;
    long long pos0 = *ppos, p = pos0 + s;
    int n = att_n(p, W, ratio, K);
    attn_tc_body<4, false, C16>(Q, kvnew, ring, cache, ratio == 4 ? sel + (size_t)s * K : nullptr, s, H, h0, W, ratio, p,
                                pos0, n, 0, (n + 63) / 64, scale, sink, rope, rd, O, nullptr, 0, 0, 0, c16);
}

// Prefill attention on Hopper's warpgroup MMA (k_attn_hwg; attention() takes it for chunks of S > ATC_MIN_S
// tokens when the heads come in 64s, CTX_CUDA_ATTN_WG's layer types, default all). Why: at 500K an HCA
// query's list is ~4K entries (63 blocks), and k_attn_tc, whose mma.sync fragments come from shared
// memory for every warp (its busiest unit), ran ~150 TFLOP/s there: the attention core was a quarter of a
// 500K chunk. The same per-query arithmetic as k_attn_tc (one block per (token, 64 heads), the whole list
// in 64-entry blocks: scores, the reference's online-softmax step, bf16 probabilities, num = num * corr +
// P.V, then the sink, num / den in bf16 and the inverse RoPE of the tail), on wgmma with both operands in
// shared memory:
// - Tiles of 64 rows x 512 bf16 as 8 slabs of 64 dims (64 rows x 128 bytes, 128-byte swizzle,
//   awg_off): the queries (A of the scores), two entry tiles (B of the scores, K-major; B of P.V,
//   N-major: one layout serves both) and the probabilities (A of P.V, one slab: 64 heads x 64 entries).
// - Two warpgroups. Scores: warpgroup w the 64 heads x entries 32 w .. 32 w + 31 (32 wgmma m64n32k16 over
//   the 512 dims). Softmax: row maxima and probability sums exchanged through shared memory, both
//   warpgroups then hold the same running max and denominator. P.V: warpgroup w the dims 256 w ..
//   256 w + 255 (4 wgmma m64n256k16 over the 64 entries; its numerator, 128 registers a thread).
// - Entries (C16, the copy path): every block by cp.async into the other tile, issued one block ahead,
//   from bf16 copies that attn_tc_launch stages with k_stage_bf16 (exact: the values are bf16's): the
//   compressed cache (HCA: rows in order, CSA: the indexer's selection) in c16, the window (the ring's W
//   slots, then this chunk's kv) in w16. Without C16 every block is gathered from the fp32 rows (the same
//   tile values: the same bytes); the engine takes that path only with CTX_CUDA_ATTN_C16=0 or a cache
//   beyond c16's capacity.
// - What it costs (H200, bench/gpu/README.md thirteenth session): ~4.7 us a block an SM at 500K, the
//   block's phases one after another on the SM's one CTA (206 KB of shared memory).
// Numerics against k_attn_tc: the same exact products, other fp32 summation orders (the tensor core's
// within the MMAs; the probability sums by quads, then across warpgroups): test_attn's bound, not its
// bytes. A query's arithmetic depends on its own list only (chunked prefill stays bit-identical).
#define AWG_THREADS 256
#define AWG_SLAB 8192                        // 64 rows x 128 bytes: 64 dims of a 64-row tile
#define AWG_TILE (8 * AWG_SLAB)              // 64 rows x 512 dims, bf16
#define AWG_K0 AWG_TILE                      // queries at 0, entry tiles at AWG_K0 and AWG_K1
#define AWG_K1 (2 * AWG_TILE)
#define AWG_P (3 * AWG_TILE)                 // probabilities: one slab
#define AWG_SMEM (1024 + 3 * AWG_TILE + AWG_SLAB) // + the slack that aligns the tiles to 1024 bytes
// Byte offset of bf16 element (row r, dim c) in a tile: slab c / 64, row r's 128 bytes, its 16-byte
// chunks XOR-swizzled by r & 7 (wgmma's 128-byte swizzle: the tiles are 1024-byte aligned).
__device__ __forceinline__ uint32_t awg_off(int r, int c)
{
    return (uint32_t)((c >> 6) * AWG_SLAB + r * 128 + ((((c & 63) >> 3) ^ (r & 7)) << 4) + (c & 7) * 2);
}
// One output pair (columns col, col + 1 of a row) from its numerators and the row's denominator:
// bf16(num / den), then the tail's inverse RoPE (a pair of adjacent dims: this thread's own); the
// epilogue of k_attn_hwg and k_attn_hsw.
__device__ __forceinline__ float2 awg_out_pair(float n0, float n1, float dd, int col, int rd,
                                               const float *cs)
{
    float a = bf16r(n0 / dd), bv = bf16r(n1 / dd);
    if (col >= ATC_D - rd) {
        const int pi = (col - (ATC_D - rd)) / 2;
        const float co = cs[2 * pi], sn = -cs[2 * pi + 1], x = a;
        a = bf16r(x * co - bv * sn);
        bv = bf16r(x * sn + bv * co);
    }
    return make_float2(a, bv);
}
template <bool C16>
__global__ void __launch_bounds__(AWG_THREADS, 1)
    k_attn_hwg(const float *Q, const float *kvnew, const float *ring, const float *cache, const int *sel, int H, int W,
               int ratio, int K, const long long *ppos, float scale, const float *sink, const float *rope, int rd,
               float *O, const uint16_t *c16, const uint16_t *w16)
{
    extern __shared__ __align__(1024) unsigned char awg_sm[];
    __shared__ const float *ptr[64];
    __shared__ unsigned long long vmask_sh;
    __shared__ float red_max[2][64], red_sum[2][64];
    const uint32_t sraw = (uint32_t)__cvta_generic_to_shared(awg_sm), sb = (sraw + 1023u) & ~1023u;
    unsigned char *const gb = awg_sm + (sb - sraw);
    const int tid = (int)threadIdx.x, wg = tid >> 7, lane = tid & 31, g = lane >> 2, t = lane & 3;
    const int hr0 = ((tid & 127) >> 5) * 16 + g, hr1 = hr0 + 8; // this thread's heads (fragment rows)
    const int s = (int)blockIdx.x, h0 = (int)blockIdx.y * 64;
    const long long pos0 = *ppos, p = pos0 + s, first = p - W + 1 < 0 ? 0 : p - W + 1;
    const int n = att_n(p, W, ratio, K), nblk = (n + 63) / 64;
    const int *const selrow = ratio == 4 ? sel + (size_t)s * K : nullptr; // CSA: the query's selected entries
    // C16: block b's entries into the tile at ts by cp.async, zeros for empty slots and past the list. List j
    // < W: the window's position q = first + j (empty past p), row W + q - pos0 (this chunk) or q % W (the
    // ring) of w16; j >= W: row j - W (HCA) or selrow[j - W] (CSA, -1 empty) of c16. Thread tid copies the
    // 16-byte chunk tid % 64 (dims 8 (tid % 64) ..) of rows tid / 64 + 4 u.
    // The window's slots in 32-bit terms (no division in the unrolled copy loop below: its code stays
    // small): j <= jl holds an entry, j >= jc is this chunk's (w16 row W + j - jc), else ring slot (fq + j) mod W.
    const int jl = (int)(p - first), jc = (int)(pos0 - first < W ? pos0 - first : W), fq = (int)(first % W);
    auto c16_load = [&](int b, uint32_t ts) {
        const int b0 = b * 64, k = tid & 63;
        const uint32_t dk = (uint32_t)((k >> 3) * AWG_SLAB + ((k & 7) << 4));
#pragma unroll
        for (int u = 0; u < 16; u++) {
            const int r = (tid >> 6) + 4 * u, j = b0 + r;
            const uint16_t *src = nullptr;
            if (j < W) {
                if (j <= jl)
                    src = w16 + (size_t)(j >= jc ? W + j - jc : fq + j - (fq + j >= W ? W : 0)) * ATC_D;
            } else if (j < n) {
                const int row = selrow ? __ldg(selrow + j - W) : j - W;
                if (row >= 0)
                    src = c16 + (size_t)row * ATC_D;
            }
            cp_async16(ts + (uint32_t)(r * 128) + (dk ^ (uint32_t)((r & 7) << 4)), (src ? src : w16) + k * 8,
                       src != nullptr);
        }
    };
    if (C16)
        c16_load(0, sb + AWG_K0);
    cp_async_commit();
#pragma unroll
    for (int rr = 0; rr < 4; rr++) { // queries (bf16-exact) as bf16, 8 loads a thread in flight (the CTA, alone
        float4 v[8];                   // on its SM, waits for them in full) while block 0's copy is on its way
#pragma unroll
        for (int u = 0; u < 8; u++) {
            const int i = tid + (rr * 8 + u) * AWG_THREADS;
            v[u] = __ldg((const float4 *)(Q + ((size_t)s * H + h0 + (i >> 7)) * ATC_D + (i & 127) * 4));
        }
#pragma unroll
        for (int u = 0; u < 8; u++) {
            const int i = tid + (rr * 8 + u) * AWG_THREADS;
            *(uint2 *)(gb + awg_off(i >> 7, (i & 127) * 4)) =
                make_uint2(pack_bf16x2(v[u].x, v[u].y), pack_bf16x2(v[u].z, v[u].w));
        }
    }
    float acc[128];
#pragma unroll
    for (int i = 0; i < 128; i++)
        acc[i] = 0.f;
    float mo0 = -INFINITY, mo1 = -INFINITY, den0 = 0.f, den1 = 0.f;
    // descriptors: queries, probabilities; a k16 step adds its byte offset / 16 (no carry out of the
    // 14-bit address field: shared memory ends below 256 KB)
    const uint64_t dq = wgmma_desc_sw128(sb), dp = wgmma_desc_sw128(sb + AWG_P);
    for (int b = 0; b < nblk; b++) {
        const int b0 = b * 64;
        const uint32_t ts = sb + ((b & 1) ? AWG_K1 : AWG_K0);
        unsigned char *const tg = gb + ((b & 1) ? AWG_K1 : AWG_K0);
        __syncthreads(); // every read of block b - 1 (its tile, the probabilities, ptr) is done
        if (C16 && b + 1 < nblk) // the next block into the other tile, under this one
            c16_load(b + 1, sb + (((b + 1) & 1) ? AWG_K1 : AWG_K0));
        cp_async_commit();
        if (!C16) { // every block gathered
            if (tid < 64)
                ptr[tid] = b0 + tid < n ? att_entry(b0 + tid, p, pos0, W, ATC_D, kvnew, ring, cache, ratio, selrow)
                                        : nullptr;
            __syncthreads();
            if (tid < 64) {
                const unsigned bal = __ballot_sync(0xffffffffu, ptr[tid] != nullptr);
                if (lane == 0)
                    reinterpret_cast<unsigned *>(&vmask_sh)[tid >> 5] = bal;
            }
#pragma unroll
            for (int rr = 0; rr < 4; rr++) { // 64 entries x 128 float4: 8 loads a thread in flight
                float4 v[8];
#pragma unroll
                for (int u = 0; u < 8; u++) {
                    const int i = tid + (rr * 8 + u) * AWG_THREADS, r = i >> 7, c = (i & 127) * 4;
                    const float *src = ptr[r];
                    v[u] = src ? __ldg((const float4 *)(src + c)) : make_float4(0.f, 0.f, 0.f, 0.f);
                }
#pragma unroll
                for (int u = 0; u < 8; u++) {
                    const int i = tid + (rr * 8 + u) * AWG_THREADS, r = i >> 7, c = (i & 127) * 4;
                    *(uint2 *)(tg + awg_off(r, c)) = make_uint2(pack_bf16x2(v[u].x, v[u].y), pack_bf16x2(v[u].z, v[u].w));
                }
            }
        } else {
            if (b0 < W || !selrow) { // the window's non-empty slots come first; HCA entries fill the list
                if (tid == 0) {
                    const long long c = b0 < W ? p - first + 1 - b0 : n - b0; // slots with an entry from b0 on
                    vmask_sh = c >= 64 ? ~0ull : c <= 0 ? 0ull : (1ull << c) - 1ull;
                }
            } else if (tid < 64) { // CSA: the selected slots that hold an entry
                const unsigned bal = __ballot_sync(0xffffffffu, b0 + tid < n && __ldg(selrow + b0 + tid - W) >= 0);
                if (lane == 0)
                    reinterpret_cast<unsigned *>(&vmask_sh)[tid >> 5] = bal;
            }
            cp_async_wait<1>(); // block b's copies (the group before the one just committed) have landed
        }
        wgmma_proxy_fence(); // the tile's (and the queries') generic stores, then the async proxy reads them
        __syncthreads();
        const unsigned long long vmask = vmask_sh;
        if (!vmask) // an all-empty block changes nothing (the reference skips it)
            continue;
        const uint32_t vm = (uint32_t)(vmask >> (32 * wg)); // this warpgroup's 32 entries
        // scores: this warpgroup's 64 heads x 32 entries (32 w + 8 j + 2 t + c: sc[4 j + c] row hr0, sc[4 j + 2 + c] hr1)
        float sc[16];
#pragma unroll
        for (int i = 0; i < 16; i++)
            sc[i] = 0.f;
        const uint64_t dk = wgmma_desc_sw128(ts + wg * 32 * 128);
        wgmma_fence();
#pragma unroll
        for (int ks = 0; ks < 32; ks++) {
            const uint64_t off = (uint64_t)(((ks >> 2) * AWG_SLAB + (ks & 3) * 32) >> 4);
            wgmma_bf16<32>(sc, dq + off, dk + off, ks > 0);
        }
        wgmma_commit();
        wgmma_wait0();
        float bm0 = -INFINITY, bm1 = -INFINITY;
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int c = 0; c < 2; c++) {
                const bool ok = (vm >> (8 * j + 2 * t + c)) & 1u;
                sc[4 * j + c] *= scale;
                sc[4 * j + 2 + c] *= scale;
                if (ok) {
                    bm0 = fmaxf(bm0, sc[4 * j + c]);
                    bm1 = fmaxf(bm1, sc[4 * j + 2 + c]);
                }
            }
        bm0 = fmaxf(bm0, __shfl_xor_sync(0xffffffffu, bm0, 1));
        bm0 = fmaxf(bm0, __shfl_xor_sync(0xffffffffu, bm0, 2));
        bm1 = fmaxf(bm1, __shfl_xor_sync(0xffffffffu, bm1, 1));
        bm1 = fmaxf(bm1, __shfl_xor_sync(0xffffffffu, bm1, 2));
        if (t == 0) {
            red_max[wg][hr0] = bm0;
            red_max[wg][hr1] = bm1;
        }
        __syncthreads();
        const float nm0 = fmaxf(mo0, fmaxf(red_max[0][hr0], red_max[1][hr0]));
        const float nm1 = fmaxf(mo1, fmaxf(red_max[0][hr1], red_max[1][hr1]));
        float ps0 = 0.f, ps1 = 0.f;
        const uint32_t prow0 = sb + AWG_P + hr0 * 128, prow1 = sb + AWG_P + hr1 * 128;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            float pr[4];
#pragma unroll
            for (int c = 0; c < 2; c++) {
                const bool ok = (vm >> (8 * j + 2 * t + c)) & 1u;
                pr[c] = ok ? expf(sc[4 * j + c] - nm0) : 0.f;
                pr[2 + c] = ok ? expf(sc[4 * j + 2 + c] - nm1) : 0.f;
            }
            ps0 += pr[0] + pr[1];
            ps1 += pr[2] + pr[3];
            // bf16 probabilities at entries 32 w + 8 j + 2 t (+1): chunk 4 w + j of the row, bytes 4 t ..
            const uint32_t w0 = (uint32_t)bf16bits(pr[0]) | ((uint32_t)bf16bits(pr[1]) << 16);
            const uint32_t w1 = (uint32_t)bf16bits(pr[2]) | ((uint32_t)bf16bits(pr[3]) << 16);
            asm volatile("st.shared.u32 [%0], %1;\n" ::"r"(prow0 + ((((4 * wg + j) ^ (hr0 & 7)) << 4) + 4 * t)), "r"(w0));
            asm volatile("st.shared.u32 [%0], %1;\n" ::"r"(prow1 + ((((4 * wg + j) ^ (hr1 & 7)) << 4) + 4 * t)), "r"(w1));
        }
        ps0 += __shfl_xor_sync(0xffffffffu, ps0, 1);
        ps0 += __shfl_xor_sync(0xffffffffu, ps0, 2);
        ps1 += __shfl_xor_sync(0xffffffffu, ps1, 1);
        ps1 += __shfl_xor_sync(0xffffffffu, ps1, 2);
        if (t == 0) {
            red_sum[wg][hr0] = ps0;
            red_sum[wg][hr1] = ps1;
        }
        wgmma_proxy_fence();
        __syncthreads();
        const float corr0 = expf(mo0 - nm0), corr1 = expf(mo1 - nm1);
        den0 = den0 * corr0 + (red_sum[0][hr0] + red_sum[1][hr0]);
        den1 = den1 * corr1 + (red_sum[0][hr1] + red_sum[1][hr1]);
        mo0 = nm0;
        mo1 = nm1;
        // num * corr: skipped where every factor of the warp is 1 (the running max stayed; x * 1 == x)
        if (!__all_sync(0xffffffffu, corr0 == 1.f && corr1 == 1.f)) {
#pragma unroll
            for (int j = 0; j < 32; j++) {
                acc[4 * j] *= corr0;
                acc[4 * j + 1] *= corr0;
                acc[4 * j + 2] *= corr1;
                acc[4 * j + 3] *= corr1;
            }
        }
        const uint64_t dv = wgmma_desc_sw128_mn(ts + 4 * wg * AWG_SLAB, AWG_SLAB);
        wgmma_fence();
#pragma unroll
        for (int ks = 0; ks < 4; ks++) // entries 16 ks ..: the P slab + 32 bytes, the tile's rows + 2048 bytes
            wgmma_bf16_tb<256>(acc, dp + (uint64_t)(2 * ks), dv + (uint64_t)(128 * ks), 1);
        wgmma_commit();
        wgmma_wait0();
    }
    cp_async_wait<0>();
    const float d0 = den0 + expf(sink[h0 + hr0] - mo0), d1 = den1 + expf(sink[h0 + hr1] - mo1);
    const float *cs = rope + (size_t)p * rd;
#pragma unroll
    for (int j = 0; j < 32; j++) {
        const int col = 256 * wg + 8 * j + 2 * t;
#pragma unroll
        for (int hf = 0; hf < 2; hf++) {
            const int r = hf ? hr1 : hr0;
            const float dd = hf ? d1 : d0;
            *(float2 *)(O + ((size_t)s * H + h0 + r) * ATC_D + col) =
                awg_out_pair(acc[4 * j + 2 * hf], acc[4 * j + 2 * hf + 1], dd, col, rd, cs);
        }
    }
}

// Prefill attention in the "seesaw" schedule (k_attn_hsw; issue 10, twenty-first session).
// attn_tc_launch takes it instead of k_attn_hwg for every layer type on the C16 path with a window
// of two 64-entry blocks, V4's 128 (CTX_CUDA_ATTN_HSW=0 or cuda_engine_attn_hsw_mode(0):
// k_attn_hwg). Why: k_attn_hwg runs each 64-entry block as one chain on the SM's one CTA (copy
// wait, scores, a barrier, softmax, a barrier, P.V), so the tensor pipe sat at 25% with 33% of the
// issue slots busy (Nsight Compute, bench/gpu/results/2026-11-30-s21/call1-ncu), and its split of
// the scores (32 entries a warpgroup) read the queries from shared memory once per 32 entries. Here
// (FlashMLA's schedule, from its public write-up; our own code) the two warpgroups take the blocks
// in pairs: warpgroup 0 the scores of the even block b0 over all 512 dims, warpgroup 1 those of the
// odd block b1, and each keeps half of the output (O_L dims 0..255 in warpgroup 0, O_R 256..511 in
// warpgroup 1; 128 registers a thread):
//   [0] S0 = Q K0^T;  m0 = max(m, rowmax S0), c0 = 2^(m - m0);  P0 = 2^(S0 - m0);  O_L = O_L c0 +
//   P0 V0_L [1] S1 = Q K1^T;  m1 = max(m0, rowmax S1), f = 2^(m0 - m1);  P1 = 2^(S1 - m1);  O_R =
//   O_R c0 f + P1 V1_R [0] P0' = P0 f (to shared memory);  O_L = O_L f + P1 V1_L      [1] O_R +=
//   P0' V0_R;   m = m1
// so one warpgroup's softmax runs under the other's products. Each warpgroup's own P is wgmma's A
// from registers (the scores' accumulator layout), the other's comes through a shared-memory slab.
// Exchanges are named barriers between the warpgroups (M0: m0 and c0; S1: m1, f and P1; P0: P0'),
// each used once a pair in one direction.
// - Entries: blocks 0 and 1 (the window) by cp.async before the loop, from w16 as in k_attn_hwg.
// Each
//   half of a later block's tile (dims 0..255, 256..511: 32 KB) completes on an mbarrier: HCA
//   (!GATHER) a cache tile of t16, which attn_tc_launch stages in the tiles' shared-memory image
//   (k_stage_tiles: 64 rows x 512 bf16, awg_off's swizzle, zero rows past the cache), one bulk copy
//   a half; CSA (GATHER) the selected rows of c16 (k_attn_hwg's bf16 rows; -1 slots zero), 16
//   cp.async a thread of one warpgroup, each thread's arrival on the mbarrier when its copies land
//   (cp.async.mbarrier.arrive.noinc), then a proxy fence in each reader. Sliding layers have the
//   window only. A half is reloaded by the warpgroup that used it last, right after that product:
//   T0's low half after [0]'s P0 V0_L, its high half after [1]'s P0' V0_R, T1's high half after P1
//   V1_R, its low half after P1 V1_L; warpgroup 1 takes T1's scores high half first, the half that
//   comes back first.
// - Softmax in base 2: scores times scale log2(e) (one fma with the max), ex2.approx; a block's
// valid
//   slots as a 64-bit mask (the window's filled slots and HCA entries are prefixes; CSA: the
//   selection's slots >= 0, by ballots).
// Numerics: k_attn_hwg's entries, products and bf16 probabilities up to fp32 and ex2 rounding, and
// the odd block's P0 carried as bf16(P0 f) in O_R: test_attn's bound (not k_attn_hwg's bytes). A
// query's arithmetic depends on its own list only (chunked prefill stays bit-identical).
#define HSW_T0 AWG_TILE // queries at 0 (as k_attn_hwg), entry tiles T0, T1
#define HSW_T1 (2 * AWG_TILE)
#define HSW_P0 (3 * AWG_TILE)            // P0' (warpgroup 0's probabilities for warpgroup 1)
#define HSW_P1 (3 * AWG_TILE + AWG_SLAB) // P1 (warpgroup 1's for warpgroup 0)
#define HSW_SMEM (1024 + 3 * AWG_TILE + 2 * AWG_SLAB) // 209 KB + alignment slack
#define HSW_HALF (AWG_TILE / 2)
enum { HSW_BAR_M0 = 1, HSW_BAR_S1 = 2, HSW_BAR_P0 = 3 }; // named barriers (0 is __syncthreads)
__device__ __forceinline__ float hsw_ex2(float x)
{
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}
__device__ __forceinline__ void hsw_mbar_wait(uint32_t mb, uint32_t parity)
{
    asm volatile("{\n\t.reg .pred P1;\n\tHSW_WAIT:\n\t"
                 "mbarrier.try_wait.parity.shared::cta.b64 P1, [%0], %1;\n\t"
                 "@P1 bra HSW_DONE;\n\tbra HSW_WAIT;\n\tHSW_DONE:\n\t}\n" ::"r"(mb),
                 "r"(parity)
                 : "memory");
}
// One thread: bytes (a multiple of 16) from src to shared dst, completing on the mbarrier mb.
__device__ __forceinline__ void hsw_bulk(uint32_t dst, const void *src, uint32_t bytes, uint32_t mb)
{
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(mb), "r"(bytes)
                 : "memory");
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], "
                 "%2, [%3];\n" ::"r"(dst),
                 "l"(src), "r"(bytes), "r"(mb)
                 : "memory");
}
// k_attn_hsw's shapes: heads in 64s, a window of two 64-entry blocks (V4's 128), head_dim 512
static bool attn_hsw_shape(int H, int W, int d)
{
    return H % 64 == 0 && W == 128 && d == ATC_D;
}
// rows x ATC_D fp32 entries (bf16-valued) -> 64-row tiles in k_attn_hsw's shared-memory image: row
// r, dim c at byte (r / 64) AWG_TILE + awg_off(r % 64, c); the rows up to the next multiple of 64
// are zeros.
__global__ void k_stage_tiles(const float *x, long long rows, uint16_t *t16)
{
    const long long n4 = (rows + 63) / 64 * 64 * (ATC_D / 4);
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n4;
         i += (long long)gridDim.x * blockDim.x) {
        const long long r = i / (ATC_D / 4);
        const int c = (int)(i % (ATC_D / 4)) * 4;
        const float4 v =
            r < rows ? *(const float4 *)(x + r * ATC_D + c) : make_float4(0.f, 0.f, 0.f, 0.f);
        *(uint2 *)((unsigned char *)t16 + (r >> 6) * AWG_TILE + awg_off((int)(r & 63), c)) =
            make_uint2(pack_bf16x2(v.x, v.y), pack_bf16x2(v.z, v.w));
    }
}
// Grid (S, H / 64), AWG_THREADS threads, HSW_SMEM bytes of dynamic shared memory. W = 128. GATHER:
// CSA (ratio 4: sel [S][K], t16 the cache's bf16 rows) or sliding (ratio 0); else HCA (t16 the
// tiles). The queries and the output as bf16 ([S][H][512]): Q16 comes by cp.async with the window
// (k_q_prep_w writes it, or attn_tc_launch stages Q), O16 is wo_a's cuBLASLt input as it stands (or
// attn_tc_launch makes O from it). One path each: optional fp32 forms cost the loop registers.
template <bool GATHER>
__global__ void __launch_bounds__(AWG_THREADS, 1)
    k_attn_hsw(const uint16_t *Q16, const int *sel, int H, int W, int ratio, int K,
               const long long *ppos, float scale, const float *sink, const float *rope, int rd,
               uint16_t *O16, const uint16_t *t16, const uint16_t *w16)
{
    extern __shared__ __align__(1024) unsigned char hsw_sm[];
    __shared__ __align__(8) unsigned long long mbar[4]; // T0 low, T0 high, T1 low, T1 high
    __shared__ float xm0[64], xc0[64], xm1[64], xf1[64];
    const uint32_t sraw = (uint32_t)__cvta_generic_to_shared(hsw_sm), sb = (sraw + 1023u) & ~1023u;
    const int tid = (int)threadIdx.x, wg = tid >> 7, lane = tid & 31, g = lane >> 2, t = lane & 3;
    const int hr0 = ((tid & 127) >> 5) * 16 + g,
              hr1 = hr0 + 8; // this thread's heads (fragment rows)
    const int s = (int)blockIdx.x, h0 = (int)blockIdx.y * 64;
    const long long pos0 = *ppos, p = pos0 + s, first = p - W + 1 < 0 ? 0 : p - W + 1;
    const int nwb = 2, n = att_n(p, W, ratio, K), nblk = (n + 63) / 64; // nwb: the window's blocks
    const int *const selrow = GATHER && ratio == 4 ? sel + (size_t)s * K : nullptr;
    const int jl = (int)(p - first), jc = (int)(pos0 - first < W ? pos0 - first : W),
              fq = (int)(first % W);
    const uint32_t mb = (uint32_t)__cvta_generic_to_shared(mbar), t0 = sb + HSW_T0,
                   t1 = sb + HSW_T1;
    if (tid == 0) {
#pragma unroll
        for (int i = 0; i < 4; i++)
            asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(mb + 8u * i),
                         "r"(GATHER ? 128 : 1)
                         : "memory");
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    // blocks 0 and 1, the window's slots, by cp.async (k_attn_hwg's c16_load; empty slots zero)
    auto first_load = [&](int b, uint32_t ts) {
        const int k = tid & 63;
        const uint32_t dk = (uint32_t)((k >> 3) * AWG_SLAB + ((k & 7) << 4));
#pragma unroll
        for (int u = 0; u < 16; u++) {
            const int r = (tid >> 6) + 4 * u, j = b * 64 + r;
            const uint16_t *src =
                j <= jl
                    ? w16 + (size_t)(j >= jc ? W + j - jc : fq + j - (fq + j >= W ? W : 0)) * ATC_D
                    : nullptr;
            cp_async16(ts + (uint32_t)(r * 128) + (dk ^ (uint32_t)((r & 7) << 4)),
                       (src ? src : w16) + k * 8, src != nullptr);
        }
    };
    first_load(0, t0);
    first_load(1, t1);
    // the queries' bf16 rows: 16-byte chunk c of head h to awg_off(h, 8 c)
#pragma unroll
    for (int u = 0; u < 16; u++) {
        const int i = tid + AWG_THREADS * u, h = i >> 6, c = i & 63;
        cp_async16(sb + awg_off(h, 8 * c), Q16 + ((size_t)s * H + h0 + h) * ATC_D + 8 * c, true);
    }
    cp_async_commit();
    cp_async_wait<0>();
    wgmma_proxy_fence();
    __syncthreads(); // the queries, blocks 0 and 1, the mbarriers' initialisation
    const float sc2 = scale * 1.4426950408889634f;
    const uint64_t dq = wgmma_desc_sw128(sb);
    // the half h (0: dims 0..255, 1: 256..511) of block b >= 2's tile, and its mbarrier
    auto tile_src = [&](int b, int h) {
        return (const void *)((const unsigned char *)t16 + (size_t)(b - nwb) * AWG_TILE +
                              (size_t)h * HSW_HALF);
    };
    // the half h of block b >= 2 into the tile at ts (one warpgroup, tw its thread), completing on
    // mbh
    auto refill = [&](int b, int h, uint32_t ts, uint32_t mbh, int tw) {
        if (!GATHER) {
            if (tw == 0)
                hsw_bulk(ts + (uint32_t)h * HSW_HALF, tile_src(b, h), HSW_HALF, mbh);
            return;
        }
        const int cc =
            tw & 31; // this thread's 16-byte chunk of each row's half: dims 256 h + 8 cc ..
        const uint32_t dk = (uint32_t)((4 * h + (cc >> 3)) * AWG_SLAB + ((cc & 7) << 4));
#pragma unroll
        for (int u = 0; u < 16; u++) {
            const int r = (tw >> 5) + 4 * u, j = b * 64 + r;
            const int row = j < n ? __ldg(selrow + j - W) : -1;
            cp_async16(ts + (uint32_t)(r * 128) + (dk ^ (uint32_t)((r & 7) << 4)),
                       t16 + (row >= 0 ? (size_t)row * ATC_D : 0) + 256 * h + 8 * cc, row >= 0);
        }
        asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(mbh)
                     : "memory");
    };
    // block b's valid slots (warp-uniform; every lane calls it): the window's filled ones and HCA
    // entries are prefixes, CSA's the selection's slots >= 0
    auto block_mask = [&](int b) -> unsigned long long {
        if (GATHER && selrow && b >= nwb) {
            const int j0 = 64 * b + lane, j1 = j0 + 32;
            const unsigned lo = __ballot_sync(0xffffffffu, j0 < n && __ldg(selrow + j0 - W) >= 0);
            const unsigned hi = __ballot_sync(0xffffffffu, j1 < n && __ldg(selrow + j1 - W) >= 0);
            return (unsigned long long)lo | ((unsigned long long)hi << 32);
        }
        const int c = b < nwb ? jl + 1 - 64 * b : n - 64 * b;
        return c >= 64 ? ~0ull : c <= 0 ? 0ull : (1ull << c) - 1ull;
    };
    // scores of the tile at ts into d (64 heads x 64 entries), the half hf's 16 k steps first; each
    // half waited for on its mbarrier first when the block came by bulk copy (par >= 0)
    auto scores = [&](float(&d)[32], uint32_t ts, uint32_t mbt, int hf, int par) {
        const uint64_t dk = wgmma_desc_sw128(ts);
#pragma unroll
        for (int hh = 0; hh < 2; hh++) {
            const int h = hf ^ hh;
            if (par >= 0) {
                hsw_mbar_wait(mbt + 8u * (uint32_t)h, (uint32_t)par);
                if (GATHER) // the copies were the generic proxy's
                    wgmma_proxy_fence();
            }
            wgmma_fence(); // (also after the wait: ptxas serialises the wgmma otherwise)
#pragma unroll
            for (int i = 0; i < 16; i++) {
                const int ks = 16 * h + i;
                const uint64_t off = (uint64_t)(((ks >> 2) * AWG_SLAB + (ks & 3) * 32) >> 4);
                wgmma_bf16<64>(d, dq + off, dk + off, hh > 0 || i > 0);
            }
        }
        wgmma_commit();
        wgmma_wait0();
    };
    // the block's row maxima (raw scores of the valid columns, over the quad) against the running
    // max b (base 2): the new max n = max(b, sc2 rowmax) and its factor f = 2^(b - n), published at
    // xm / xf (lanes t == 0) for the other warpgroup
    auto new_max = [&](const float(&d)[32], unsigned long long vm, float b0, float b1, float *xm,
                       float *xf, float &n0, float &n1, float &f0, float &f1) {
        float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
        for (int j = 0; j < 8; j++)
#pragma unroll
            for (int c = 0; c < 2; c++)
                if ((vm >> (8 * j + 2 * t + c)) & 1ull) {
                    mx0 = fmaxf(mx0, d[4 * j + c]);
                    mx1 = fmaxf(mx1, d[4 * j + 2 + c]);
                }
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
        n0 = fmaxf(b0, mx0 * sc2);
        n1 = fmaxf(b1, mx1 * sc2);
        f0 = hsw_ex2(b0 - n0);
        f1 = hsw_ex2(b1 - n1);
        if (t == 0) {
            xm[hr0] = n0;
            xm[hr1] = n1;
            xf[hr0] = f0;
            xf[hr1] = f1;
        }
    };
    // probabilities 2^(s sc2 - m) of the valid columns in place (0 elsewhere); their sums
    auto probs = [&](float(&d)[32], unsigned long long vm, float m0, float m1, float &ps0,
                     float &ps1) {
        ps0 = 0.f;
        ps1 = 0.f;
#pragma unroll
        for (int j = 0; j < 8; j++)
#pragma unroll
            for (int c = 0; c < 2; c++) {
                const bool ok = (vm >> (8 * j + 2 * t + c)) & 1ull;
                d[4 * j + c] = ok ? hsw_ex2(fmaf(d[4 * j + c], sc2, -m0)) : 0.f;
                d[4 * j + 2 + c] = ok ? hsw_ex2(fmaf(d[4 * j + 2 + c], sc2, -m1)) : 0.f;
                ps0 += d[4 * j + c];
                ps1 += d[4 * j + 2 + c];
            }
    };
    auto rescale = [&](float(&a)[128], float f0,
                       float f1) { // skipped where every factor of the warp is 1
        if (!__all_sync(0xffffffffu, f0 == 1.f && f1 == 1.f)) {
#pragma unroll
            for (int j = 0; j < 32; j++) {
                a[4 * j] *= f0;
                a[4 * j + 1] *= f0;
                a[4 * j + 2] *= f1;
                a[4 * j + 3] *= f1;
            }
        }
    };
    // this warpgroup's probabilities (d) times f0 / f1 as bf16 into the slab at ps (row = head,
    // swizzled)
    auto to_slab = [&](const float(&d)[32], uint32_t ps, float f0, float f1) {
#pragma unroll
        for (int j = 0; j < 8; j++) {
            const uint32_t w0 = pack_bf16x2(d[4 * j] * f0, d[4 * j + 1] * f0);
            const uint32_t w1 = pack_bf16x2(d[4 * j + 2] * f1, d[4 * j + 3] * f1);
            asm volatile("st.shared.u32 [%0], %1;\n" ::"r"(
                             ps + (uint32_t)hr0 * 128u + (((uint32_t)j ^ (hr0 & 7)) << 4) + 4u * t),
                         "r"(w0));
            asm volatile("st.shared.u32 [%0], %1;\n" ::"r"(
                             ps + (uint32_t)hr1 * 128u + (((uint32_t)j ^ (hr1 & 7)) << 4) + 4u * t),
                         "r"(w1));
        }
    };
    // O half += this warpgroup's own probabilities (A from registers) x the tile half at vs
    auto pv_own = [&](float(&a)[128], const float(&d)[32], uint32_t vs) {
        uint32_t pa[4][4];
#pragma unroll
        for (int ks = 0; ks < 4; ks++) {
            pa[ks][0] = pack_bf16x2(d[8 * ks], d[8 * ks + 1]);
            pa[ks][1] = pack_bf16x2(d[8 * ks + 2], d[8 * ks + 3]);
            pa[ks][2] = pack_bf16x2(d[8 * ks + 4], d[8 * ks + 5]);
            pa[ks][3] = pack_bf16x2(d[8 * ks + 6], d[8 * ks + 7]);
        }
        const uint64_t dv = wgmma_desc_sw128_mn(vs, AWG_SLAB);
        wgmma_fence();
#pragma unroll
        for (int ks = 0; ks < 4; ks++)
            wgmma_bf16_ra_tb<256>(a, pa[ks], dv + (uint64_t)(128 * ks), 1);
        wgmma_commit();
        wgmma_wait0();
    };
    // O half += the other warpgroup's probabilities (the slab at ps) x the tile half at vs
    auto pv_slab = [&](float(&a)[128], uint32_t ps, uint32_t vs) {
        const uint64_t dp = wgmma_desc_sw128(ps), dv = wgmma_desc_sw128_mn(vs, AWG_SLAB);
        wgmma_fence();
#pragma unroll
        for (int ks = 0; ks < 4; ks++)
            wgmma_bf16_tb<256>(a, dp + (uint64_t)(2 * ks), dv + (uint64_t)(128 * ks), 1);
        wgmma_commit();
        wgmma_wait0();
    };
    float acc[128];
#pragma unroll
    for (int i = 0; i < 128; i++)
        acc[i] = 0.f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f,
          l1 = 0.f; // rows hr0, hr1: running max (base 2), this thread's sums
    const uint32_t half = wg ? (uint32_t)HSW_HALF : 0u; // this warpgroup's output dims in a tile
    // Each warpgroup runs the same products in the same order (scores of its own block, P.V of its
    // own probabilities, P.V of the other's), so that ptxas sees every wgmma on a converged path;
    // the roles differ only in the softmax and the exchanges between them. A missing odd block
    // (nblk odd) is computed on T1's old, finite contents with every column masked: its
    // probabilities are zeros.
    const uint32_t own = wg ? t1 : t0, other = wg ? t0 : t1;
    const uint32_t own_mb = mb + (wg ? 16u : 0u),
                   other_mb = mb + (wg ? 8u : 16u); // other: the half it reads
    const uint32_t own_slab = sb + (wg ? HSW_P1 : HSW_P0), other_slab = sb + (wg ? HSW_P0 : HSW_P1);
    for (int b0 = 0; b0 < nblk; b0 += 2) {
        const int b1 = b0 + 1, par = b0 >= 2 ? ((b0 - 2) / 2) & 1 : -1;
        const bool has1 = b1 < nblk;
        const int bo = wg ? b1 : b0; // this warpgroup's own block
        const bool loaded = bo < nblk, oloaded = wg ? true : has1;
        float sc[32];
        scores(sc, own, own_mb, wg, loaded ? par : -1);
        float ps0, ps1;
        const unsigned long long vc = loaded ? block_mask(bo) : 0ull;
        if (wg == 0) {
            float n0, n1, c0, c1;
            new_max(sc, vc, m0, m1, xm0, xc0, n0, n1, c0, c1);
            named_bar_arrive(HSW_BAR_M0, AWG_THREADS);
            probs(sc, vc, n0, n1, ps0, ps1);
            l0 = l0 * c0 + ps0;
            l1 = l1 * c1 + ps1;
            rescale(acc, c0, c1);
        } else {
            named_bar_sync(HSW_BAR_M0, AWG_THREADS); // warpgroup 0's max and factor
            const float n0 = xm0[hr0], n1 = xm0[hr1], c0 = xc0[hr0], c1 = xc0[hr1];
            float q0, q1, f0, f1;
            new_max(sc, vc, n0, n1, xm1, xf1, q0, q1, f0, f1);
            probs(sc, vc, q0, q1, ps0, ps1);
            to_slab(sc, own_slab, 1.f, 1.f);
            wgmma_proxy_fence();
            named_bar_arrive(HSW_BAR_S1, AWG_THREADS);
            l0 = l0 * (c0 * f0) + ps0;
            l1 = l1 * (c1 * f1) + ps1;
            rescale(acc, c0 * f0, c1 * f1);
            m0 = q0;
            m1 = q1;
        }
        pv_own(acc, sc, own + half);
        // the half of the own tile this warpgroup used last: T0's low half after [0]'s P0 V0_L,
        // T1's high half after [1]'s P1 V1_R; refilled with the block two on
        if (bo + 2 < nblk)
            refill(bo + 2, wg, own, own_mb + 8u * (uint32_t)wg, tid & 127);
        if (wg == 0) {
            named_bar_sync(HSW_BAR_S1, AWG_THREADS); // warpgroup 1's max, factor and P1
            const float f0 = xf1[hr0], f1 = xf1[hr1];
            m0 = xm1[hr0];
            m1 = xm1[hr1];
            to_slab(sc, own_slab, f0, f1);
            wgmma_proxy_fence();
            named_bar_arrive(HSW_BAR_P0, AWG_THREADS);
            l0 *= f0;
            l1 *= f1;
            rescale(acc, f0, f1);
        } else {
            named_bar_sync(HSW_BAR_P0, AWG_THREADS); // P0'
        }
        if (oloaded &&
            par >= 0) { // the other tile came by copies: the half read here seen complete too
            hsw_mbar_wait(other_mb, (uint32_t)par);
            if (GATHER)
                wgmma_proxy_fence();
        }
        pv_slab(acc, other_slab, other + half);
        // the other tile's half this warpgroup used last: T1's low half after [0]'s P1 V1_L, T0's
        // high half after [1]'s P0' V0_R
        const int bt = wg ? b0 : b1;
        if (bt + 2 < nblk)
            refill(bt + 2, wg, other, other_mb, tid & 127);
    }
    // the denominators: this thread's sums over its quad, then both warpgroups' (the same running
    // max)
    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    __syncthreads(); // every exchange of the loop is read
    float *const xl = wg ? xm1 : xm0;
    if (t == 0) {
        xl[hr0] = l0;
        xl[hr1] = l1;
    }
    __syncthreads();
    const float d0 = xm0[hr0] + xm1[hr0] + hsw_ex2(fmaf(sink[h0 + hr0], 1.4426950408889634f, -m0));
    const float d1 = xm0[hr1] + xm1[hr1] + hsw_ex2(fmaf(sink[h0 + hr1], 1.4426950408889634f, -m1));
    const float *cs = rope + (size_t)p * rd;
#pragma unroll
    for (int j = 0; j < 32; j++) {
        const int col = 256 * wg + 8 * j + 2 * t;
#pragma unroll
        for (int hf = 0; hf < 2; hf++) {
            const int r = hf ? hr1 : hr0;
            const float dd = hf ? d1 : d0;
            const float2 v =
                awg_out_pair(acc[4 * j + 2 * hf], acc[4 * j + 2 * hf + 1], dd, col, rd, cs);
            *(uint32_t *)(O16 + ((size_t)s * H + h0 + r) * ATC_D + col) =
                pack_bf16x2(v.x, v.y); // exact
        }
    }
}

// Decode attention on tensor cores (attention(), ATTN_TC; S <= ATT_TOKENS_TC tokens a launch): k_attn_tc's
// arithmetic over runs of a query's list, flash-decoding style, so that a token's ~4K HCA entries at
// 500K spread over ~128 blocks instead of one. Grid (run, token s0 + y, group of 16 heads), 128 threads,
// two blocks an SM; the runs are att_split's with at most ATT_MAXSPLIT_TC of them, each starting from
// an empty running max (the partials are merged by k_attn_combine, rescaled to the largest max). A
// query whose list is one run gets k_attn_tc's bits (the combine's factor is then exactly 1).
#define ATD_SMEM ATC_SMEM_H(1)
template <bool QB>
__global__ void __launch_bounds__(128, 2) k_attn_dtc(const float *Q, const float *kvnew, const float *ring,
                                                     const float *cache, const int *sel, int s0, int H, int W,
                                                     int ratio, int K, const long long *ppos, float scale, float *part)
{
    pdl_begin();
    int sp = (int)blockIdx.x, s = s0 + (int)blockIdx.y, h0 = (int)blockIdx.z * 16;
    long long pos0 = *ppos, p = pos0 + s;
    int n = att_n(p, W, ratio, K), c0, c1, nsplit;
    att_split_m(n, sp, ATT_MAXSPLIT_TC, &c0, &c1, &nsplit);
    if (sp >= nsplit)
        return;
    attn_tc_body<1, true, false, QB>(Q, kvnew, ring, cache, ratio == 4 ? sel + (size_t)s * K : nullptr, s, H, h0, W,
                                     ratio, p, pos0, n, c0, c1, scale, nullptr, nullptr, 0, nullptr, part, s0, sp,
                                     ATT_MAXSPLIT_TC);
}

__global__ void k_ring_update(const float *kv, float *ring, int S, const long long *ppos, int W, int d)
{
    pdl_begin();
    long long pos0 = *ppos;
    int s0 = S - W < 0 ? 0 : S - W, s = s0 + blockIdx.x;
    if (s >= S)
        return;
    float *dst = ring + (size_t)((pos0 + s) % W) * d;
    for (int i = threadIdx.x; i < d; i += blockDim.x)
        dst[i] = kv[(size_t)s * d + i];
}

// ---------------------------------------------------------------- MoE

__device__ float softplusf_(float x) { return x > 20.f ? x : log1pf(expf(x)); }

// Routing of one token per block (256 threads, or 512 when E > 256: one per expert; V4-Pro has 384):
// scores, hash or learned top-k,
// weights. The learned top-k takes, k times, the largest untaken score + bias with ties to the
// lowest expert id (a block argmax: the same choice as the CPU's first-strictly-greater scan); the
// softmax and the weight sums run in thread 0 in the CPU's order. ri/rw [S][k]; ri [S][k] after
// them holds the ids + E (w3 in the expert table).
// With MOE_ROUTE_AQ the launch has more blocks than tokens, and those past the tokens run
// k_act_quant_f32's warps on u (2S rows, the routed w1|w3 product's input): the two are independent,
// so one launch instead of two in the decode chain; u, D, q8, sa are unused when the grid is S.
// wreg (MOE_ROUTE_REG): thread 0 computes the weights from the ids in shared memory and keeps them in
// registers, instead of reading back ri and rw, which it has just written to global memory (each of
// those 2k dependent round trips costs a global load's latency: most of the kernel's ~4 us).
__device__ __forceinline__ void act_quant_f32_warp(const float *x, int mx, int m, int k, uint8_t *q, float *sa,
                                                   long long w, int lane);
__global__ void __launch_bounds__(512) k_route(const float *logit, int S, int E, int k, int func, const float *bias,
                                               const long long *tid2eid, const int *tok, float rsf, int *ri,
                                               float *rw, const float *u, int D, uint8_t *q8, float *sa, int wreg)
{
    pdl_begin();
    if ((int)blockIdx.x >= S) { // a whole block: no barrier below is skipped by part of one
        act_quant_f32_warp(u, S, 2 * S, D, q8, sa,
                           ((long long)(blockIdx.x - (unsigned)S) * blockDim.x + threadIdx.x) >> 5,
                           (int)(threadIdx.x & 31));
        return;
    }
    __shared__ float sc[512], wv[16];
    __shared__ int taken[512], wi[16], selsh[16];
    int s = blockIdx.x, x = threadIdx.x, lane = x & 31, warp = x >> 5;
    const float *lg = logit + (size_t)s * E;
    if (x < E) {
        float v = lg[x];
        sc[x] = func == 0 ? v : func == 1 ? 1.0f / (1.0f + expf(-v)) : sqrtf(softplusf_(v));
    }
    taken[x] = 0;
    __syncthreads();
    if (func == 0 && x == 0) {
        float mx = -INFINITY, sum = 0.f;
        for (int e = 0; e < E; e++)
            mx = fmaxf(mx, sc[e]);
        for (int e = 0; e < E; e++)
            sum += (sc[e] = expf(sc[e] - mx));
        for (int e = 0; e < E; e++)
            sc[e] /= sum;
    }
    __syncthreads();
    if (tid2eid) {
        if (x < k)
            selsh[x] = (int)tid2eid[(size_t)tok[s] * k + x];
    } else {
        for (int i = 0; i < k; i++) {
            float v = x < E && !taken[x] ? sc[x] + (bias ? bias[x] : 0.f) : 0.f;
            int id = x < E && !taken[x] ? x : 0x7fffffff;
            for (int o = 16; o; o >>= 1) {
                float v2 = __shfl_xor_sync(0xffffffffu, v, o);
                int id2 = __shfl_xor_sync(0xffffffffu, id, o);
                if (id2 != 0x7fffffff && (id == 0x7fffffff || v2 > v || (v2 == v && id2 < id))) {
                    v = v2;
                    id = id2;
                }
            }
            if (lane == 0) {
                wv[warp] = v;
                wi[warp] = id;
            }
            __syncthreads();
            if (x == 0) {
                float bv = wv[0];
                int best = wi[0];
                for (int w = 1; w < (int)(blockDim.x >> 5); w++)
                    if (wi[w] != 0x7fffffff && (best == 0x7fffffff || wv[w] > bv || (wv[w] == bv && wi[w] < best))) {
                        bv = wv[w];
                        best = wi[w];
                    }
                selsh[i] = best;
                taken[best] = 1;
            }
            __syncthreads();
        }
    }
    __syncthreads();
    if (x == 0) {
        int *sel = ri + (size_t)s * k;
        float *w = rw + (size_t)s * k, sum = 0.f;
        for (int i = 0; i < k; i++) {
            sel[i] = selsh[i];
            sel[(size_t)S * k + i] = selsh[i] + E; // the w3 half of the expert table
        }
        if (wreg) { // MOE_ROUTE_REG: the same values and operations from shared memory and registers
            float wl[16];
            for (int i = 0; i < k; i++)
                sum += (wl[i] = sc[selsh[i]]);
            for (int i = 0; i < k; i++) {
                float v = wl[i];
                if (func != 0)
                    v /= sum;
                w[i] = v * rsf;
            }
            return;
        }
        for (int i = 0; i < k; i++)
            sum += (w[i] = sc[sel[i]]);
        for (int i = 0; i < k; i++) {
            if (func != 0)
                w[i] /= sum;
            w[i] *= rsf;
        }
    }
}

// The 1x128 e4m3 quantisation's pieces (gemm.cu's act_quant_kernel arithmetic), shared by the kernels below: the
// block's power-of-two scale from its amax (returned; *inv = 1 / scale, exact), and two values as e4m3 bytes
// (saturating) after the scaling.
__device__ __forceinline__ float e4m3_block_scale(float amax, float *inv)
{
    amax = fmaxf(amax, 1e-4f);
    const uint32_t u = __float_as_uint(amax * (1.0f / 448.0f));
    const uint32_t code = ((u >> 23) & 255u) + ((u & 0x7fffffu) != 0);
    *inv = __uint_as_float((254u - code) << 23);
    return __uint_as_float(code << 23);
}
__device__ __forceinline__ uint32_t e4m3_pair(float a, float b, float inv)
{
    const float2 f = make_float2(fminf(fmaxf(a * inv, -448.f), 448.f), fminf(fmaxf(b * inv, -448.f), 448.f));
    return (uint32_t)__nv_cvt_float2_to_fp8x2(f, __NV_SATFINITE, __NV_E4M3);
}

// Per-token 1x128 e4m3 quantisation of float rows (bf16 values) straight from x: row r of the m
// output rows reads row r % mx of x (mx < m: the rows again, for the routed w1|w3 product). The
// arithmetic of gemm.cu's act_quant_kernel on bf16(x), so the same bytes and scales as k_f2bf then
// cuda_act_quant, in one launch. One warp per (row, 128-K block); sa row-major [m][k/128].
// act_quant_f32_warp is warp w's share (lane `lane`), so that k_route's extra blocks run the same code.
__device__ __forceinline__ void act_quant_f32_warp(const float *x, int mx, int m, int k, uint8_t *q, float *sa,
                                                   long long w, int lane)
{
    const int kb_n = k >> 7;
    if (w >= (long long)m * kb_n)
        return;
    int kb;
    const int row = (int)divmod_idx(w, kb_n, &kb);
    const size_t off = (size_t)row * k + (size_t)kb * 128 + lane * 4;
    const float4 xv = *reinterpret_cast<const float4 *>(x + (size_t)(row % mx) * k + (size_t)kb * 128 + lane * 4);
    float v[4] = {bf16ld(bf16bits(xv.x)), bf16ld(bf16bits(xv.y)), bf16ld(bf16bits(xv.z)), bf16ld(bf16bits(xv.w))};
    float amax = fmaxf(fmaxf(fabsf(v[0]), fabsf(v[1])), fmaxf(fabsf(v[2]), fabsf(v[3])));
    for (int o = 16; o > 0; o >>= 1)
        amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    float inv;
    const float sc = e4m3_block_scale(amax, &inv);
    *reinterpret_cast<uint32_t *>(q + off) = e4m3_pair(v[0], v[1], inv) | e4m3_pair(v[2], v[3], inv) << 16;
    if (lane == 0)
        sa[(size_t)row * kb_n + kb] = sc;
}
__global__ void __launch_bounds__(256) k_act_quant_f32(const float *x, int mx, int m, int k, uint8_t *q, float *sa)
{
    pdl_begin();
    act_quant_f32_warp(x, mx, m, k, q, sa, ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5,
                       (int)(threadIdx.x & 31));
}

// SwiGLU, h = bf16(weight[r] * silu(min(g, lim)) * clamp(u, +-lim)) (no weight for the shared
// expert), followed by the 1x128 e4m3 quantisation of h (gemm.cu's act_quant_kernel arithmetic: the
// bytes and scales of cuda_act_quant on the bf16 rows) in one launch, so the bf16 rows are never
// written. Element (r, i) of the gate is g[r * ld + i], of the up projection u[r * ld + i] (routed:
// separate [rows][I] arrays; shared: the halves of one concatenated row); out q [rows][I], sa
// [rows][I/128]. One warp per (row, 128 block), 4 consecutive values per lane.
// One element of the SwiGLU above, bf16-rounded: gate and up as bf16 bits, wr the row's weight (NULL: none).
__device__ __forceinline__ float swiglu_elem(uint16_t gb, uint16_t ub, float lim, const float *wr)
{
    float gv = bf16ld(gb), uv = bf16ld(ub);
    if (lim > 0) {
        uv = uv < -lim ? -lim : uv > lim ? lim : uv;
        gv = gv > lim ? lim : gv;
    }
    float x = gv / (1.0f + expf(-gv)) * uv;
    if (wr)
        x = *wr * x;
    return bf16ld(bf16bits(x));
}
__global__ void __launch_bounds__(256) k_swiglu_quant(const uint16_t *g, const uint16_t *u, int ld, int rows, int I,
                                                      const float *weights, float lim, uint8_t *q, float *sa)
{
    pdl_begin();
    const int kb_n = I >> 7;
    const long long wi = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (wi >= (long long)rows * kb_n)
        return;
    int kb;
    const int r = (int)divmod_idx(wi, kb_n, &kb);
    const size_t off = (size_t)r * ld + (size_t)kb * 128 + lane * 4;
    const uint2 gr = *reinterpret_cast<const uint2 *>(g + off), ur = *reinterpret_cast<const uint2 *>(u + off);
    const uint32_t gw[2] = {gr.x, gr.y}, uw[2] = {ur.x, ur.y};
    float v[4];
#pragma unroll
    for (int j = 0; j < 4; j++)
        v[j] = swiglu_elem((uint16_t)(gw[j >> 1] >> (16 * (j & 1))), (uint16_t)(uw[j >> 1] >> (16 * (j & 1))), lim,
                           weights ? weights + r : nullptr);
    float amax = fmaxf(fmaxf(fabsf(v[0]), fabsf(v[1])), fmaxf(fabsf(v[2]), fabsf(v[3])));
    for (int o = 16; o > 0; o >>= 1)
        amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    float inv;
    const float sc = e4m3_block_scale(amax, &inv);
    *reinterpret_cast<uint32_t *>(q + (size_t)r * I + (size_t)kb * 128 + lane * 4) =
        e4m3_pair(v[0], v[1], inv) | e4m3_pair(v[2], v[3], inv) << 16;
    if (lane == 0)
        sa[(size_t)r * kb_n + kb] = sc;
}
// k_swiglu_quant with a half-warp a (row, 128 block): 8 consecutive values a lane (16-byte loads of g and u,
// an 8-byte store), the block's amax over the half-warp (a max: its order does not matter), every value's
// arithmetic k_swiglu_quant's: the same bytes and scales (2026-12-01, thirtieth session; CTX_CUDA_SWIGLU16=0
// keeps k_swiglu_quant: 4 values a lane in 8-byte loads ran at ~2 TB/s in Nsight Compute). ld, I: multiples of 8.
__global__ void __launch_bounds__(256) k_swiglu_quant16(const uint16_t *g, const uint16_t *u, int ld, int rows, int I,
                                                        const float *weights, float lim, uint8_t *q, float *sa)
{
    pdl_begin();
    const int kb_n = I >> 7;
    const long long wi = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 4;
    const int hl = threadIdx.x & 15;
    const bool live = wi < (long long)rows * kb_n; // a half-warp past the end runs on zeros (shuffles stay whole)
    int kb = 0;
    const int r = live ? (int)divmod_idx(wi, kb_n, &kb) : 0;
    const size_t off = (size_t)r * ld + (size_t)kb * 128 + hl * 8;
    uint4 gr = make_uint4(0, 0, 0, 0), ur = make_uint4(0, 0, 0, 0);
    if (live) {
        gr = *reinterpret_cast<const uint4 *>(g + off);
        ur = *reinterpret_cast<const uint4 *>(u + off);
    }
    const uint32_t gw[4] = {gr.x, gr.y, gr.z, gr.w}, uw[4] = {ur.x, ur.y, ur.z, ur.w};
    float v[8], amax = 0.f;
#pragma unroll
    for (int j = 0; j < 8; j++) {
        v[j] = swiglu_elem((uint16_t)(gw[j >> 1] >> (16 * (j & 1))), (uint16_t)(uw[j >> 1] >> (16 * (j & 1))), lim,
                           weights ? weights + r : nullptr);
        amax = fmaxf(amax, fabsf(v[j]));
    }
    for (int o = 8; o > 0; o >>= 1)
        amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    float inv;
    const float sc = e4m3_block_scale(amax, &inv);
    if (!live)
        return;
    *reinterpret_cast<uint2 *>(q + (size_t)r * I + (size_t)kb * 128 + hl * 8) =
        make_uint2(e4m3_pair(v[0], v[1], inv) | e4m3_pair(v[2], v[3], inv) << 16,
                   e4m3_pair(v[4], v[5], inv) | e4m3_pair(v[6], v[7], inv) << 16);
    if (hl == 0)
        sa[(size_t)r * kb_n + kb] = sc;
}
static env_switch swiglu16_switch{"CTX_CUDA_SWIGLU16"};
extern "C" void cuda_engine_swiglu16_mode(int on) { swiglu16_switch.set(on); }
// k_swiglu_quant16 (or k_swiglu_quant) over rows x I on st
static void swiglu_launch(cudaStream_t st, const uint16_t *gp, const uint16_t *up, int ld, int rows, int I,
                          const float *weights, float lim, uint8_t *q, float *sa)
{
    const long long tasks = (long long)rows * (I / 128);
    if (swiglu16_switch.on() && ld % 8 == 0)
        launch_pdl(k_swiglu_quant16, (unsigned)((tasks + 15) / 16), 256, 0, st, gp, up, ld, rows, I, weights, lim, q, sa);
    else
        launch_pdl(k_swiglu_quant, (unsigned)((tasks + 7) / 8), 256, 0, st, gp, up, ld, rows, I, weights, lim, q, sa);
}

// A concatenated product's bf16 rows [S][n1 + n2] to floats y1 [S][n1] and y2 [S][n2].
__global__ void k_bf2f_split(const uint16_t *o, int S, int n1, int n2, float *y1, float *y2)
{
    pdl_begin();
    size_t n = (size_t)S * (n1 + n2);
    for (size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x; t < n; t += (size_t)gridDim.x * blockDim.x) {
        size_t s = t / (n1 + n2);
        int i = (int)(t % (n1 + n2));
        float v = bf16ld(o[t]);
        if (i < n1)
            y1[s * n1 + i] = v;
        else
            y2[s * n2 + i - n1] = v;
    }
}

// out[s][i] = bf16(sum over the token's experts in ascending id of y + shared y).
__global__ void k_moe_combine(const uint16_t *ys, const int *ri, const uint16_t *sy, int S, int k, int D, float *out)
{
    pdl_begin();
    size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (t >= (size_t)S * D)
        return;
    out[t] = moe_combine_at<16>(ys, ri, sy, t / D, k, D, (int)(t % D));
}

// k_moe_combine's outputs, 4 consecutive ones a thread (MOE_COMBINE4; needs D % 4 == 0, k <= KMAX):
// the same expert order (the same scan over the ids, held in registers) and the same fp32 additions
// per output, so the same bits. It was written when k_moe_combine's thread read the ids again for every
// expert and issued each row's load only after the scan that picked it (~7 dependent rounds of loads,
// 8.6 us for one token of 4096 at 16 blocks); here the ids, the k rows (8 bytes a row) and the shared
// row are loaded up front, as moe_combine_at now does for one output, and each thread does 4 outputs.
template <int KMAX>
__global__ void __launch_bounds__(64) k_moe_combine4(const uint16_t *ys, const int *ri, const uint16_t *sy, int S, int k,
                                                     int D, float *out)
{
    pdl_begin();
    const int nq = D >> 2;
    const size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (t >= (size_t)S * nq)
        return;
    int i;
    const size_t s = (size_t)divmod_idx((long long)t, nq, &i);
    i *= 4;
    const int *sel = ri + s * k;
    int id[KMAX];
    uint2 y[KMAX];
#pragma unroll
    for (int j = 0; j < KMAX; j++)
        if (j < k) {
            id[j] = sel[j];
            y[j] = *reinterpret_cast<const uint2 *>(ys + (s * k + j) * D + i);
        }
    const uint2 sv = *reinterpret_cast<const uint2 *>(sy + s * D + i);
    float acc[4] = {0.f, 0.f, 0.f, 0.f};
    moe_combine_scan<KMAX>(id, k, [&](int j) {
        acc[0] += bf16ld((uint16_t)(y[j].x & 0xffffu));
        acc[1] += bf16ld((uint16_t)(y[j].x >> 16));
        acc[2] += bf16ld((uint16_t)(y[j].y & 0xffffu));
        acc[3] += bf16ld((uint16_t)(y[j].y >> 16));
    });
    const float4 o = make_float4(bf16r(acc[0] + bf16ld((uint16_t)(sv.x & 0xffffu))),
                                 bf16r(acc[1] + bf16ld((uint16_t)(sv.x >> 16))),
                                 bf16r(acc[2] + bf16ld((uint16_t)(sv.y & 0xffffu))),
                                 bf16r(acc[3] + bf16ld((uint16_t)(sv.y >> 16))));
    *reinterpret_cast<float4 *>(out + s * D + i) = o;
}

// k_moe_combine4 over 16 consecutive outputs a thread (prefill chunks: S > 8, D % 16 == 0, k <= KMAX): the
// same scan and the same additions per output, so the same bits. The scan over the ids (k rounds of KMAX
// compares) is per warp what 4 outputs' additions are several times over; Nsight Compute had k_moe_combine4's
// issue slots 72% busy, most on the scan's compares, at half the copy rate (twenty-fourth session). Here one
// scan serves 16 outputs, each row's 32 bytes come in two 16-byte loads.
template <int KMAX>
__global__ void __launch_bounds__(64) k_moe_combine16(const uint16_t *ys, const int *ri, const uint16_t *sy, int S,
                                                      int k, int D, float *out)
{
    pdl_begin();
    const int nq = D >> 4;
    const size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (t >= (size_t)S * nq)
        return;
    int i;
    const size_t s = (size_t)divmod_idx((long long)t, nq, &i);
    i *= 16;
    const int *sel = ri + s * k;
    int id[KMAX];
    uint4 y[KMAX][2];
#pragma unroll
    for (int j = 0; j < KMAX; j++)
        if (j < k) {
            id[j] = sel[j];
            const uint4 *src = reinterpret_cast<const uint4 *>(ys + (s * k + j) * D + i);
            y[j][0] = src[0];
            y[j][1] = src[1];
        }
    const uint4 *ssrc = reinterpret_cast<const uint4 *>(sy + s * D + i);
    const uint4 sv[2] = {ssrc[0], ssrc[1]};
    float acc[16];
#pragma unroll
    for (int c = 0; c < 16; c++)
        acc[c] = 0.f;
    moe_combine_scan<KMAX>(id, k, [&](int j) {
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const uint32_t w[4] = {y[j][h].x, y[j][h].y, y[j][h].z, y[j][h].w};
#pragma unroll
            for (int c = 0; c < 4; c++) {
                acc[8 * h + 2 * c] += bf16ld((uint16_t)(w[c] & 0xffffu));
                acc[8 * h + 2 * c + 1] += bf16ld((uint16_t)(w[c] >> 16));
            }
        }
    });
    float o[16];
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const uint32_t w[4] = {sv[h].x, sv[h].y, sv[h].z, sv[h].w};
#pragma unroll
        for (int c = 0; c < 4; c++) {
            o[8 * h + 2 * c] = bf16r(acc[8 * h + 2 * c] + bf16ld((uint16_t)(w[c] & 0xffffu)));
            o[8 * h + 2 * c + 1] = bf16r(acc[8 * h + 2 * c + 1] + bf16ld((uint16_t)(w[c] >> 16)));
        }
    }
    float4 *dst = reinterpret_cast<float4 *>(out + s * D + i);
#pragma unroll
    for (int c = 0; c < 4; c++)
        dst[c] = make_float4(o[4 * c], o[4 * c + 1], o[4 * c + 2], o[4 * c + 3]);
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
    // the scales as fp32 [ceil(n/128)][round_up(k/128, 4)] for cuBLASLt (prefill_lt), in the layer's lt32
    // block; NULL: this product always runs cuda_fp8_gemm
    const float *s32;
    // cuBLASLt's rows form (cuda_lt_ctx_run_rows: y in rows, no k_lt_out), decided once in lt_setup
    int lt_rows;
};

struct dlayer {
    int ratio, hash;
    const float *hc_fn[2], *hc_base[2], *hc_scale[2];
    const uint16_t *attn_norm, *ffn_norm, *q_norm, *kv_norm, *c_norm, *ic_norm;
    const float *sink, *c_ape, *ic_ape, *gate_bias;
    const long long *tid2eid;
    struct dlin wq_a, wq_b, wkv, wo_a, wo_b, c_wkv, c_wgate, i_wq_b, i_wproj, ic_wkv, ic_wgate, gate, sw1, sw2, sw3;
    // device: [6][E] pointers: w1 weights, w3 weights, w1 scales, w3 scales, w2 weights, w2 scales (so
    // that id and E + id address w1 and w3 of expert id in one grouped product)
    const uint8_t **etab;
    // copies of wq_a and wkv, and of the shared expert's w1 and w3, one after the other (rows and
    // scale rows concatenated): one product each for two matrices of the same input
    struct dlin wqkv, sw13;
    void *cat;
    // the compressor's wkv, wgate and, in CSA layers, the indexer's compressor wkv, wgate and
    // weights_proj, rows concatenated (bf16): one product
    struct dlin cbf;
    void *cat2;
    void *lt32; // the s32 scales of the FP8 products (prefill_lt)
    int cbf_lt; // cbf's products of prefill chunks on cuBLASLt (cbf_lt; lt_setup decides for the largest chunk)
    // state
    float *ring, *c_kv, *c_sc, *ic_kv, *ic_sc, *cache, *icache;
    // CSA: the indexer keys' 8-bit form (warp_i8_pack), written wherever icache is, for k_idx_score_i8
    int8_t *ik8;
    uint32_t *ikx;
};

struct wentry {
    const char *name;
    const struct inf_tensor *t;
    void *d;
};

#define HIN_SLOTS 4 // pinned input slots: an asynchronous call (pipeline) reuses one only after its copy ran
#define LOGIT_ROWS 8 // most rows of logits one forward call computes (cuda_engine_forward_rows)

struct cuda_engine {
    struct inf_config c;
    int Smax;
    long long max_ctx, pos;
    int dev;    // CUDA ordinal; every call makes it current (struct dev_guard)
    int lb, le; // layers [lb, le) (a pipeline stage: kernels/multi.h)
    cudaStream_t st;
    void *warena;
    size_t wbytes, sbytes;
    struct wentry *wmap;
    int nw;
    const uint16_t *embed, *norm, *head;
    const float *hch_fn, *hch_base, *hch_scale;
    struct dlayer *L;
    float *rope[2]; // [max_ctx][rd]: 0 plain, 1 compressed layers (YaRN)
    // inputs of a forward call: the position then the tokens, staged in pinned host memory (hin) and
    // copied in one transfer, so that kernels read the position from device memory and a captured
    // decode step replays unchanged
    // asynchronous calls (cuda_engine_forward_async) rotate over HIN_SLOTS slots of hin, each reused
    // after its event (recorded behind its copy) has completed; the decode graph copies from slot 0
    char *dio, *hin;
    size_t hin_stride;
    int hslot;
    cudaEvent_t hev[HIN_SLOTS];
    long long *dpos;
    int *tok;
    float *hlogits; // pinned host copy of the logits
    void *d2h_stage[2];      // d2h_staged's pinned ring (allocated on first use), its pieces' events
    cudaEvent_t d2h_ev[2];
    // scratch
    float *X, *u, *f, *post, *comb, *hcpart;
    int hc_nch;
    // decode mHC (hc = 4; block_site): hc_fuse runs the mixes and pre as one launch (k_hc_mixpre, its
    // per-token counters hccnt, zero between launches), hc_side the Sinkhorn (k_hc_sink4) on stream hst,
    // forked after pre by event hfork and joined before post by hjoin, off the critical path
    // (CTX_CUDA_HC_FUSE=0 / CTX_CUDA_HC_SIDE=0: the earlier launches; cuda_engine_hc_paths: tests)
    unsigned *hccnt;
    int hc_fuse, hc_side;
    // hc_pfuse (with hc_fuse; S <= HCM_MIN_S, no hook): a site's post (and, after the MoE, the combine)
    // is left to the next site's k_hc_mixpre (hc_prev) instead of k_hc_post (k_moe_combine) launches.
    // The streams then alternate between X and Xb (HCM_MIN_S tokens): xcur is where they are now,
    // pend the post left over (1: attention's, f in g->f; 2: the MoE's, f from the combine's inputs);
    // the last site of a forward posts into X as before
    // (CTX_CUDA_HC_POST=0: every post a launch)
    int hc_pfuse, pend;
    float *Xb, *xcur;
    // a prefill forward's streams as bf16 bits (S > HCM_MIN_S, hc = 4, no hook): x16 while they are in X16
    // (forward_queue narrows X into it before the blocks and widens it back after; CTX_CUDA_X16=0: floats)
    uint16_t *X16;
    int x16;
    cudaStream_t hst;
    cudaEvent_t hfork, hjoin;
    float *cq, *Q, *kv, *O, *Z, *ctmp, *ctmp2, *itmp, *itmp2, *wts, *qI, *score, *hidden, *logits, *logit, *apart, *asc;
    int8_t *qi8; // a chunk's indexer queries in 8-bit form (k_idx_score_i8): [S][Hi][di], exponents [S][Hi]
    // a layer's compressed cache in bf16 for a prefill chunk's attention (the C16 paths: k_attn_tc's for HCA
    // layers, k_attn_hwg's for CSA ones too), then, when the heads come in 64s, k_attn_hwg's window copy
    // (the ring's W rows, the chunk's S)
    uint16_t *c16;
    long long c16_rows; // the cache part's capacity in entries (0: no such layer)
    uint16_t *q16; // prefill queries as bf16 for k_attn_hsw (k_q_prep_w's output then; NULL: none)
    uint32_t *qix;
    int asc_ld; // entries per (token, head) row of asc: the most any layer's query can have
    size_t score_ld;
    int *sel, *ri;
    float *rw;
    void *topk_scratch; // cuda_engine_topk's segment lists
    uint16_t *o16, *g16, *ys16, *sg16, *sy16;
    void *moe_s13, *moe_s2; // scratch of the routed experts' bucketing for prefill (moe_gemm.h)
    size_t moe_b13, moe_b2;
    uint8_t *q8;
    float *sa;
    void *state_block;
    int idx_blocks; // grid of the indexer scores (fixed: graph replay)
    int lin_blocks; // grid of the persistent bf16 / wo_a products: two blocks (16 warps) per SM
    int cp_legacy;  // prefill compressors and mHC through the decode kernels (cuda_engine_cp_legacy: tests)
    // the decode attention's launches (issue 10, attention()): attn_fuse the ATTN_* bits in use
    // (CTX_CUDA_FUSE_ATTN, cuda_engine_attn_fuse; 0: the launches before), attn_force a forced grid
    // shape (tests: att_shape_for), attn_sms the device's SMs; ast the second stream the compressors
    // of a decode step run on while the queries are prepared, forked from st by aev[0] and joined back
    // by aev[1] (indexer compressor done) and aev[2] (main compressor done); with ATTN_SIDE the third
    // stream ist a CSA layer's indexer runs on, forked by aev[3] (cq normalised) and joined by aev[4];
    // created with the engine
    int attn_fuse, attn_force, attn_sms;
    cudaStream_t ast, ist;
    cudaEvent_t aev[5];
    int hcx; // hc = 4's mixes on tensor cores (HCX; CTX_CUDA_HC_MMA, cuda_engine_hcx_mode at creation)
    // the decode step as a CUDA graph (captured at the first decode, replayed after)
    int graph_on;   // allowed (cuda_engine_use_graph)
    int graph_fail; // capture or instantiation failed: direct launches
    int gembed, glogits; // what the captured graph does: embed the tokens, compute the logits
    int gamax, glcopy;   // ... their argmax (cuda_engine_forward_rows), the logits' copy to the host
    int gpdl;            // cuda_pdl_enabled() at its capture (the launch attribute is part of the graph)
    int gi8;             // idx_i8_on() at its capture (the indexer kernel is part of the graph)
    cudaGraphExec_t gexec;
    // the two-token forward of a speculative step (cuda_engine_generate: both rows' argmax, the undo
    // record saved) as a graph of its own, captured at its first use; dropped with gexec (graphs_drop)
    cudaGraphExec_t gexec2;
    int g2pdl, g2i8;
    // profiling (cuda_engine_profile)
    int prof_on, prof_active, nev, cur_layer; // events allocated / in use
    cudaEvent_t ev[PROF_MAX_EV];
    int evstage[PROF_MAX_EV], evlayer[PROF_MAX_EV];
    double prof_ms[CUDA_PROF_N];
    double *prof_layer_ms; // [layers + 1]: the last is everything outside the blocks
    // marks (cuda_engine_mark): the generation, bumped by a reset or a state upload (marks of an older
    // one are refused), and the live marks (a rewind flags those it goes behind)
    unsigned long long gen;
    struct cuda_engine_mark *marks;
    // MoE of a decode step (issue 10; moe(), moe_streams_new/_free): the switches (MOE_SIDE, MOE_COMBINE4,
    // MOE_ROUTE_AQ, MOE_ROUTE_REG; env CTX_CUDA_MOE_SIDE / _COMBINE / _FUSE / _ROUTE = 0 turn one off),
    // and the shared expert's side stream: forked from st after mHC pre (mev[0]), joined back before
    // the combine (mev[1]); it quantises u into its own q8s / sas (rows [0, MOE_SIDE_MAX_S)), since the
    // routed SwiGLU rewrites q8 / sa while the shared products would still read them.
    int moe_mode;
    cudaStream_t mst;
    cudaEvent_t mev[2];
    uint8_t *q8s;
    float *sas;
    // Prefill chunks' FP8 products (lin_fp8, lin_fp8_split, lin_fp8_q with S > 8) on cuBLASLt's block-scaled
    // FP8 (gemm.h cuda_lt_ctx: the numerics of DeepSeek's FP8 GEMM on Hopper's tensor cores, each 128-K
    // block summed by the FP8 MMA) instead of cuda_fp8_gemm (fp32 partials, the CPU engine's numerics):
    // CTX_CUDA_PREFILL_GEMM=exact turns it off for engines created after. lt_sat holds a call's
    // activation scales transposed [k/128][mp]; the product comes out transposed into o16 and k_lt_out
    // writes the rows (mp: cuda_lt_ctx_rows' padding; with lt, q8, lt_sat, o16 and Z hold S + 127
    // rows). lt_calls / lt_exact count the products that ran each way.
    struct cuda_lt_ctx *lt;
    int lt_on;
    float *lt_sat;
    uint16_t *lt_w16; // a layer's wo_a dequantised to bf16 for cuBLASLt (wo_a_lt); NULL: k_bgemm runs it
    unsigned long long lt_calls, lt_exact, lt_rows_calls; // lt_rows_calls: those of lt_calls in the rows form
    // The MTP block (spec 4.9; cuda_engine_opts.mtp): its layer is L[le] (le == num_hidden_layers, so
    // the loops over an engine's layers that set up weights and state run to le + mtp), with its own
    // projections, norms and hc_head; the head and the embedding are the backbone's. lastl: the last
    // layer of the forward being queued (its final post is not deferred). last_p0 / last_S: position
    // and size of the last forward call, whose output streams (X) the MTP reads; last_S = 0 when X
    // holds none (a reset, an upload, a rewind or an MTP call since).
    int mtp, lastl;
    struct dlin m_eproj, m_hproj;
    const uint16_t *m_enorm, *m_hnorm, *m_norm;
    const float *m_hch_fn, *m_hch_base, *m_hch_scale;
    long long last_p0;
    int last_S;
    const int *force; // tests (cuda_engine_spec_force): drafts to use instead of the MTP's
    int nforce;
    // the argmax of each logits row (k_argmax_rows; cuda_engine_forward_rows, cuda_engine_mtp)
    int *d_amax, *h_amax;
    // The undo record of a speculative step (k_undo; cuda_engine_generate): what feeding the draft's
    // position changes in the state, saved before the two-token forward and put back when the draft
    // goes, so that the state is then exactly the one after the step's first token. Per backbone
    // layer: the window ring's slot of that position, each compressor's carry rows it writes (kv and
    // score) and, for an overlapping one (CSA: main and indexer) whose block it completes, the
    // previous-block rows that completion overwrites. undo_n entries, undo_buf their floats (~0.9 MB
    // for V4-Flash).
    struct undo_ent *undo_tab;
    int undo_n;
    float *undo_buf;
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
    g->evlayer[g->nev] = g->cur_layer;
    g->evstage[g->nev++] = stage;
}

static int cu(struct ctx_err *e, cudaError_t rc, const char *what)
{
    if (rc == cudaSuccess)
        return 0;
    // out of device memory is CTX_ENOMEM, so that a caller can retry smaller (ctxd's chunk fallback)
    return ctx_err_set(e, rc == cudaErrorMemoryAllocation ? CTX_ENOMEM : CTX_EIO, "cuda engine: %s: %s", what,
                       cudaGetErrorString(rc));
}

// Test entry (tests/kernels/test_engine.c, part mhc): hc = 4's chunk partials of S rows X [S][n] (floats of bf16
// values) against fn [24][n] by the prefill kernel of `mode` (0: k_hc_mix4, 1 or 2: k_hc_mixt) into part and by
// the decode kernel k_hc_mix of the same mode into dpart, both [S][ceil(n / 256)][25].
extern "C" int cuda_hc_mix_check(int mode, const float *X, const float *fn, int S, int n, float *part, float *dpart,
                                 struct ctx_err *e)
{
    if (mode < 0 || mode > 2 || S < 1 || n < 1)
        return ctx_err_set(e, CTX_EINVAL, "cuda_hc_mix_check: mode %d, S %d, n %d", mode, S, n);
    const int nch = (n + HC_CH - 1) / HC_CH;
    const size_t xb = sizeof(float) * (size_t)S * n, fb = sizeof(float) * (size_t)HCM_NM * n,
                 pb = sizeof(float) * (size_t)S * nch * (HCM_NM + 1);
    float *dX = nullptr, *dF = nullptr, *dP = nullptr, *dQ = nullptr;
    int rc = cu(e, cudaMalloc(&dX, xb), "cuda_hc_mix_check: cudaMalloc");
    if (!rc)
        rc = cu(e, cudaMalloc(&dF, fb), "cuda_hc_mix_check: cudaMalloc");
    if (!rc)
        rc = cu(e, cudaMalloc(&dP, pb), "cuda_hc_mix_check: cudaMalloc");
    if (!rc)
        rc = cu(e, cudaMalloc(&dQ, pb), "cuda_hc_mix_check: cudaMalloc");
    if (!rc)
        rc = cu(e, cudaMemcpy(dX, X, xb, cudaMemcpyHostToDevice), "cuda_hc_mix_check: cudaMemcpy");
    if (!rc)
        rc = cu(e, cudaMemcpy(dF, fn, fb, cudaMemcpyHostToDevice), "cuda_hc_mix_check: cudaMemcpy");
    if (!rc) {
        if (mode)
            k_hc_mixt<float><<<dim3((unsigned)nch, (unsigned)((S + HCX_TOK - 1) / HCX_TOK)), 32 * HCX_WARPS>>>(
                dX, dF, S, n, dP, mode);
        else
            k_hc_mix4<float><<<dim3((unsigned)nch, (unsigned)((S + HCM_TOK - 1) / HCM_TOK)), HCM_TOK>>>(dX, dF, S, n,
                                                                                                      dP);
        k_hc_mix<<<dim3((unsigned)nch, (unsigned)S), HC_CH>>>(dX, dF, n, HCM_NM, dQ, mode);
        rc = cu(e, cudaDeviceSynchronize(), "cuda_hc_mix_check: the kernels");
    }
    if (!rc)
        rc = cu(e, cudaMemcpy(part, dP, pb, cudaMemcpyDeviceToHost), "cuda_hc_mix_check: cudaMemcpy");
    if (!rc)
        rc = cu(e, cudaMemcpy(dpart, dQ, pb, cudaMemcpyDeviceToHost), "cuda_hc_mix_check: cudaMemcpy");
    cudaFree(dX);
    cudaFree(dF);
    cudaFree(dP);
    cudaFree(dQ);
    return rc;
}

// ---- MoE of a decode step (issue 10): the switches of moe() and the shared expert's side stream
// (struct cuda_engine's last fields). Each switch changes where and in how many launches work runs,
// never an operation's order, so every setting gives the same bits (tests/kernels/test_engine.c, part
// "moe", compares them). Default all on but MOE_FORK_ROUTE; CTX_CUDA_MOE_SIDE / _COMBINE / _FUSE / _ROUTE = 0
// turn one off, CTX_CUDA_MOE_FORK = 0 / 1 / 2 forks the shared expert before the gate / after it / after the router.
#define MOE_SIDE 1     // decode (S <= MOE_SIDE_MAX_S): the shared expert on the side stream mst
#define MOE_COMBINE4 2 // k_moe_combine4 (vector loads all in flight) instead of k_moe_combine
#define MOE_ROUTE_AQ 4 // the routed input's quantisation in k_route's launch (extra blocks)
#define MOE_ROUTE_REG 8 // k_route's weights from shared memory and registers, not read back from global
// With MOE_SIDE, where the side stream forks (twenty-fifth session): MOE_FORK_GATE after the gate's
// launch, MOE_FORK_ROUTE after the router's (both: the router's), instead of before the gate. Forked
// first, the shared expert's GEMV took the SMs the gate's 256 blocks needed: a flash4 step at 128K
// lost 51 us to the gate and 52 to the "hidden" shared expert (results/2026-11-30-s27 call4, a build
// that skips launches for timing). Forked after the gate, a flash4 step took 21 / 35 / 25 us less at 4K /
// 128K / 500K, after the router 22 / 32 / 24 (call5): the default is after the gate (mode 31).
#define MOE_FORK_GATE 16
#define MOE_FORK_ROUTE 32
#define MOE_SIDE_MAX_S 8
#define MOE_MODE_ALL (MOE_SIDE | MOE_COMBINE4 | MOE_ROUTE_AQ | MOE_ROUTE_REG | MOE_FORK_GATE | MOE_FORK_ROUTE)
#define MOE_MODE_DEFAULT (MOE_SIDE | MOE_COMBINE4 | MOE_ROUTE_AQ | MOE_ROUTE_REG | MOE_FORK_GATE)
static int moe_mode_default(void)
{
    static const int mode = [] { // read once per process
        int m = MOE_MODE_DEFAULT;
        const char *v;
        if ((v = getenv("CTX_CUDA_MOE_SIDE")) && !strcmp(v, "0"))
            m &= ~MOE_SIDE;
        if ((v = getenv("CTX_CUDA_MOE_COMBINE")) && !strcmp(v, "0"))
            m &= ~MOE_COMBINE4;
        if ((v = getenv("CTX_CUDA_MOE_FUSE")) && !strcmp(v, "0"))
            m &= ~MOE_ROUTE_AQ;
        if ((v = getenv("CTX_CUDA_MOE_ROUTE")) && !strcmp(v, "0"))
            m &= ~MOE_ROUTE_REG;
        if ((v = getenv("CTX_CUDA_MOE_FORK"))) { // 0: before the gate, 1: after it, 2: after the router
            m &= ~(MOE_FORK_GATE | MOE_FORK_ROUTE);
            m |= !strcmp(v, "1") ? MOE_FORK_GATE : !strcmp(v, "2") ? MOE_FORK_ROUTE : 0;
        }
        return m;
    }();
    return mode;
}
// At engine creation (the engine's device current): the side stream and its fork / join events.
static int moe_streams_new(struct cuda_engine *g, struct ctx_err *e)
{
    g->moe_mode = moe_mode_default();
    int rc = cu(e, cudaStreamCreateWithFlags(&g->mst, cudaStreamNonBlocking), "cudaStreamCreate(moe side)");
    for (int i = 0; i < 2 && !rc; i++)
        rc = cu(e, cudaEventCreateWithFlags(&g->mev[i], cudaEventDisableTiming), "cudaEventCreate(moe side)");
    return rc;
}
static void moe_streams_free(struct cuda_engine *g)
{
    if (g->mst) { // every fork is joined into st, so this waits for nothing in a finished call
        cudaStreamSynchronize(g->mst);
        cudaStreamDestroy(g->mst);
    }
    for (int i = 0; i < 2; i++)
        if (g->mev[i])
            cudaEventDestroy(g->mev[i]);
}
// Test entry (declared in tests/kernels/test_engine.c): the MOE_* switches of this engine; a change
// drops the captured decode graph, so the next decode step captures the new launches.
// The captured decode graphs (one-token steps and speculative two-token forwards) dropped: the next
// such call captures the launches anew.
static void graphs_drop(struct cuda_engine *g)
{
    if (g->gexec)
        cudaGraphExecDestroy(g->gexec);
    if (g->gexec2)
        cudaGraphExecDestroy(g->gexec2);
    g->gexec = g->gexec2 = NULL;
}
extern "C" void cuda_engine_moe_mode(struct cuda_engine *g, int mode)
{
    mode = mode < 0 ? moe_mode_default() : mode & MOE_MODE_ALL;
    if (mode != g->moe_mode)
        graphs_drop(g);
    g->moe_mode = mode;
}

// Makes the engine's device current for the scope of a call and restores the caller's after, so that
// engines on several devices can be driven from one thread.
struct dev_guard {
    int prev;
    explicit dev_guard(int dev) : prev(-1)
    {
        if (cudaGetDevice(&prev) != cudaSuccess)
            prev = -1;
        if (prev != dev)
            cudaSetDevice(dev);
    }
    ~dev_guard()
    {
        int now = -1;
        if (prev >= 0 && cudaGetDevice(&now) == cudaSuccess && now != prev)
            cudaSetDevice(prev);
    }
};

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

// Whether tensor `name` belongs to the engine's layers: "layers.N." for N in [lb, le); the embedding
// for the first stage; the other top-level tensors (final norm, head, hc_head) for the last.
static int in_range(const struct cuda_engine *g, const char *name)
{
    if (!strncmp(name, "mtp.", 4)) // the first MTP block, when the engine runs it (cuda_engine_opts.mtp)
        return g->mtp && !strncmp(name, "mtp.0.", 6);
    if (!strncmp(name, "layers.", 7)) {
        char *end = NULL;
        long l = strtol(name + 7, &end, 10);
        return end != name + 7 && *end == '.' && l >= g->lb && l < g->le;
    }
    if (!strcmp(name, "embed.weight")) // the MTP block embeds its input tokens too
        return g->lb == 0 || g->mtp;
    return g->le == g->c.num_hidden_layers;
}

static int upload_weights(struct cuda_engine *g, const struct inf_weights *w, struct ctx_err *e)
{
    int n = inf_weights_count(w), rc;
    g->wmap = (struct wentry *)calloc((size_t)(n > 0 ? n : 1), sizeof *g->wmap);
    if (!g->wmap)
        return ctx_err_set(e, CTX_ENOMEM, "cuda engine: out of memory");
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        const struct inf_tensor *t = inf_weights_tensor(w, i);
        if (!in_range(g, t->name))
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
    if (i < c->num_hidden_layers)
        snprintf(p, sizeof p, "layers.%d", i);
    else // the MTP block (g->mtp): its tensors are a sliding layer's under mtp.0., plus its own below
        snprintf(p, sizeof p, "mtp.%d", i - c->num_hidden_layers);
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
    static const int wslot[3] = {0, 4, 1}, sslot[3] = {2, 5, 3}; // the table layout of struct dlayer
    for (int x = 0; x < E && !rc; x++)
        for (int m = 0; m < 3; m++) {
            int n = m == 1 ? D : I, kk = m == 1 ? I : D;
            tab[(size_t)wslot[m] * E + x] = (const uint8_t *)dget(g, &rc, e, INF_DT_I8, (long long)n * kk / 2,
                                                                  "%s.ffn.experts.%d.%s.weight", p, x, wn[m]);
            tab[(size_t)sslot[m] * E + x] = (const uint8_t *)dget(g, &rc, e, INF_DT_F8_E8M0, (long long)n * (kk / 32),
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
    if (i >= c->num_hidden_layers) { // the MTP block's own input projections, norms and hc_head (spec 4.9)
        snprintf(q, sizeof q, "%s.e_proj", p);
        bind_fp8(g, &rc, e, &g->m_eproj, D, D, q);
        snprintf(q, sizeof q, "%s.h_proj", p);
        bind_fp8(g, &rc, e, &g->m_hproj, D, D, q);
        g->m_enorm = (const uint16_t *)dget(g, &rc, e, INF_DT_BF16, D, "%s.enorm.weight", p);
        g->m_hnorm = (const uint16_t *)dget(g, &rc, e, INF_DT_BF16, D, "%s.hnorm.weight", p);
        g->m_norm = (const uint16_t *)dget(g, &rc, e, INF_DT_BF16, D, "%s.norm.weight", p);
        g->m_hch_fn = (const float *)dget(g, &rc, e, INF_DT_F32, (long long)hc * hc * D, "%s.hc_head_fn", p);
        g->m_hch_base = (const float *)dget(g, &rc, e, INF_DT_F32, hc, "%s.hc_head_base", p);
        g->m_hch_scale = (const float *)dget(g, &rc, e, INF_DT_F32, 1, "%s.hc_head_scale", p);
    }
    if (!rc) { // pieces 256-byte aligned: the products load weights in 16-byte vectors
        size_t b1 = (size_t)L->wq_a.n * D + (size_t)L->wkv.n * D, b2 = 2 * (size_t)SI * D;
        size_t s1 = (size_t)((L->wq_a.n + 127) / 128 + (L->wkv.n + 127) / 128) * (D / 128);
        size_t s2 = (size_t)(2 * SI / 128) * (D / 128);
        rc = cu(e, cudaMalloc(&L->cat, al256(b1) + al256(b2) + al256(s1) + al256(s2)),
                "cudaMalloc(concatenated weights)");
        if (!rc) // held as weights: cuda_engine_memory counts them
            g->wbytes += al256(b1) + al256(b2) + al256(s1) + al256(s2);
        uint8_t *at = (uint8_t *)L->cat;
        struct {
            struct dlin *out;
            const struct dlin *a, *b;
        } cats[2] = {{&L->wqkv, &L->wq_a, &L->wkv}, {&L->sw13, &L->sw1, &L->sw3}};
        for (int j = 0; j < 2 && !rc; j++) {
            const struct dlin *a = cats[j].a, *b = cats[j].b;
            size_t wa = (size_t)a->n * a->k, wb = (size_t)b->n * b->k;
            size_t sa = (size_t)((a->n + 127) / 128) * (a->k / 128), sb = (size_t)((b->n + 127) / 128) * (b->k / 128);
            uint8_t *w = at, *sc = at + al256(wa + wb);
            at += al256(wa + wb) + al256(sa + sb);
            *cats[j].out = (struct dlin){a->n + b->n, a->k, w, sc, NULL, 0};
            if ((rc = cu(e, cudaMemcpy(w, a->w, wa, cudaMemcpyDeviceToDevice), "concatenate")) ||
                (rc = cu(e, cudaMemcpy(w + wa, b->w, wb, cudaMemcpyDeviceToDevice), "concatenate")) ||
                (rc = cu(e, cudaMemcpy(sc, a->s, sa, cudaMemcpyDeviceToDevice), "concatenate")) ||
                (rc = cu(e, cudaMemcpy(sc + sa, b->s, sb, cudaMemcpyDeviceToDevice), "concatenate")))
                break;
        }
    }
    if (!rc && L->ratio) {
        const struct dlin *parts[5] = {&L->c_wkv, &L->c_wgate, &L->ic_wkv, &L->ic_wgate, &L->i_wproj};
        int np = L->ratio == 4 ? 5 : 2, rows = 0;
        for (int j = 0; j < np; j++)
            rows += parts[j]->n;
        rc = cu(e, cudaMalloc(&L->cat2, (size_t)rows * D * 2), "cudaMalloc(concatenated weights)");
        if (!rc)
            g->wbytes += (size_t)rows * D * 2;
        for (int j = 0, off = 0; j < np && !rc; off += parts[j]->n, j++)
            rc = cu(e, cudaMemcpy((uint8_t *)L->cat2 + (size_t)off * D * 2, parts[j]->w, (size_t)parts[j]->n * D * 2,
                                  cudaMemcpyDeviceToDevice),
                    "concatenate");
        L->cbf = (struct dlin){rows, D, (const uint8_t *)L->cat2, NULL, NULL, 0};
    }
    return rc;
}

static size_t carry_n(const struct inf_config *c, int ratio)
{
    int coff = ratio == 4 ? 2 : 1;
    return ratio ? (size_t)coff * ratio * coff * c->head_dim : 0;
}
static size_t icarry_n(const struct inf_config *c, int ratio) { return ratio == 4 ? (size_t)8 * 2 * c->index_head_dim : 0; }

static int smax_i(int a, int b) { return a > b ? a : b; }

extern "C" size_t cuda_engine_layer_state_bytes(const struct inf_config *c, int l, long long max_ctx)
{
    int r = c->compress_ratios[l], d = c->head_dim, di = c->index_head_dim;
    size_t total = al256(sizeof(float) * (size_t)c->sliding_window * d) + 2 * al256(sizeof(float) * carry_n(c, r)) +
                   2 * al256(sizeof(float) * icarry_n(c, r));
    if (r)
        total += al256(sizeof(float) * (size_t)(max_ctx / r + 1) * d);
    if (r == 4)
        total += al256(sizeof(float) * (size_t)(max_ctx / 4 + 1) * di) + al256((size_t)(max_ctx / 4 + 1) * di) +
                 al256(sizeof(uint32_t) * (size_t)(max_ctx / 4 + 1));
    return total;
}

// State (of the engine's layers only) and scratch in one allocation, carved in 256-byte aligned pieces.
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
    if (stage_n < 2 * (size_t)S * D) // the routed experts' input, twice (w1 and w3 in one product)
        stage_n = 2 * (size_t)S * D;
    int omax = smax_i(smax_i(smax_i(Lq + d, H * d), smax_i(d, Hi * di)), smax_i(D, 2 * SI));
    const int lpad = g->lt ? CUDA_LT_PAD_MAX : 0; // cuBLASLt's calls read and write up to S + 127 rows
    size_t o16_n = (size_t)(S + lpad) * omax;
    struct piece {
        void **p;
        size_t bytes;
    };
    struct piece pc[64];
    int np = 0;
#define PIECE(ptr, n) pc[np++] = (struct piece){(void **)&(ptr), (size_t)(n)}
    PIECE(g->dio, 8 + sizeof(int) * S);
    PIECE(g->X, sizeof(float) * S * hc * D);
    PIECE(g->Xb, sizeof(float) * (S < HCM_MIN_S ? S : HCM_MIN_S) * hc * D);
    g->X16 = NULL; // (a prefill forward's bf16 streams: x16_use)
    if (S > HCM_MIN_S && hc == 4)
        PIECE(g->X16, sizeof(uint16_t) * S * hc * D);
    PIECE(g->u, sizeof(float) * S * D);
    PIECE(g->f, sizeof(float) * S * D);
    PIECE(g->post, sizeof(float) * S * hc);
    PIECE(g->comb, sizeof(float) * S * hc * hc);
    g->hc_nch = (hc * D + HC_CH - 1) / HC_CH;
    PIECE(g->hcpart, sizeof(float) * S * g->hc_nch * (nm + 1));
    PIECE(g->hccnt, sizeof(unsigned) * S);
    PIECE(g->apart, sizeof(float) * ATT_TOKENS * H * ATT_MAXSPLIT * (size_t)(d + 2));
    g->asc_ld = W + (int)(K > g->max_ctx / 128 ? K : g->max_ctx / 128) + 64;
    PIECE(g->asc, sizeof(float) * ATT_TOKENS * H * (size_t)g->asc_ld);
    PIECE(g->cq, sizeof(float) * S * Lq);
    PIECE(g->Q, sizeof(float) * S * H * d);
    g->q16 = NULL;
    if (attn_hsw_shape(H, c->sliding_window, d)) // cuBLASLt's rows form writes wq_b's padding rows here
        PIECE(g->q16, sizeof(uint16_t) * (S + lpad) * H * d);
    PIECE(g->kv, sizeof(float) * S * d);
    PIECE(g->O, sizeof(float) * S * H * d);
    // cuBLASLt's wo_a writes its padding rows; with cuBLASLt, the compressors' products too (cbf_lt)
    size_t zw = (size_t)G * R;
    for (int l = g->lb; l < g->le + g->mtp; l++)
        if (g->L[l].cbf_lt && (size_t)g->L[l].cbf.n > zw)
            zw = (size_t)g->L[l].cbf.n;
    PIECE(g->Z, sizeof(float) * (S + lpad) * zw);
    g->lt_w16 = NULL;
    if (g->lt) { // wo_a on cuBLASLt when its shape runs there (every layer's wo_a has the same one)
        const int gd = H * d / G;
        if (R % 128 == 0 && gd % 128 == 0 && cuda_lt_ctx_rows_bf16(g->lt, 1, R, gd, G, G * gd, G * R) > 0)
            PIECE(g->lt_w16, sizeof(uint16_t) * (size_t)G * R * gd);
    }
    PIECE(g->ctmp, sizeof(float) * S * 2 * d);
    PIECE(g->ctmp2, sizeof(float) * S * 2 * d);
    PIECE(g->itmp, sizeof(float) * S * 2 * di);
    PIECE(g->itmp2, sizeof(float) * S * 2 * di);
    PIECE(g->wts, sizeof(float) * S * Hi);
    PIECE(g->qI, sizeof(float) * S * Hi * di);
    PIECE(g->qi8, (size_t)S * Hi * di);
    PIECE(g->qix, sizeof(uint32_t) * S * Hi);
    PIECE(g->score, sizeof(float) * S * (size_t)nc4);
    g->c16_rows = 0; // HCA layers (k_attn_tc and k_attn_hwg), CSA ones (k_attn_hwg) when the heads come in 64s
    for (int l = g->lb; l < g->le; l++)
        if ((c->compress_ratios[l] > 4 || (c->compress_ratios[l] == 4 && H % 64 == 0)) &&
            g->max_ctx / c->compress_ratios[l] + 1 > g->c16_rows)
            g->c16_rows = g->max_ctx / c->compress_ratios[l] + 1;
    // k_attn_hwg's window copy (ring, then the chunk's kv) after those rows
    const size_t w16_rows = H % 64 == 0 ? (size_t)c->sliding_window + (size_t)S : 0;
    PIECE(g->c16, sizeof(uint16_t) * ((size_t)(g->c16_rows + 63) / 64 * 64 + w16_rows) * d + 16);
    PIECE(g->hidden, sizeof(float) * LOGIT_ROWS * D);
    PIECE(g->logits, sizeof(float) * LOGIT_ROWS * V);
    PIECE(g->d_amax, sizeof(int) * LOGIT_ROWS);
    PIECE(g->logit, sizeof(float) * S * E);
    PIECE(g->sel, sizeof(int) * S * K);
    PIECE(g->topk_scratch, cuda_engine_topk_scratch(S, g->max_ctx / 4, K));
    PIECE(g->ri, sizeof(int) * 2 * S * k);
    PIECE(g->rw, sizeof(float) * S * k);
    PIECE(g->q8, stage_n + (size_t)lpad * kmax);
    PIECE(g->lt_sat, g->lt ? sizeof(float) * (size_t)(S + lpad) * (kmax / 128 + 1) : 0);
    PIECE(g->sa, sizeof(float) * (stage_n / 128 + 1));
    PIECE(g->o16, 2 * o16_n);
    PIECE(g->g16, 2 * 2 * (size_t)S * k * I);
    PIECE(g->ys16, 2 * (size_t)S * k * D);
    PIECE(g->sg16, 2 * 2 * (size_t)(S + lpad) * SI); // + the rows form's padding rows
    PIECE(g->sy16, 2 * (size_t)(S + lpad) * D);
    g->moe_b13 = cuda_moe_scratch_bytes(2 * E, 2 * S * k);
    g->moe_b2 = cuda_moe_scratch_bytes(E, S * k);
    PIECE(g->moe_s13, g->moe_b13);
    PIECE(g->moe_s2, g->moe_b2);
    { // the side stream's shared-expert activations (MOE_SIDE): u, then the SwiGLU output, quantised
        size_t rows = (size_t)(S < MOE_SIDE_MAX_S ? S : MOE_SIDE_MAX_S), kq = (size_t)smax_i(D, SI);
        PIECE(g->q8s, rows * kq);
        PIECE(g->sas, sizeof(float) * rows * (kq / 128 + 1));
    }
    PIECE(g->rope[0], sizeof(float) * (size_t)g->max_ctx * rd);
    PIECE(g->rope[1], sizeof(float) * (size_t)g->max_ctx * rd);
#undef PIECE
    size_t total = 0;
    for (int i = 0; i < np; i++)
        total += al256(pc[i].bytes);
    for (int l = g->lb; l < g->le + g->mtp; l++)
        total += cuda_engine_layer_state_bytes(c, l, g->max_ctx);
    int rc;
    if ((rc = cu(e, cudaMalloc(&g->state_block, total), "cudaMalloc(state and scratch)")))
        return rc;
    g->sbytes = total;
    char *at = (char *)g->state_block;
    for (int i = 0; i < np; i++) {
        *pc[i].p = at;
        at += al256(pc[i].bytes);
    }
    g->dpos = (long long *)g->dio;
    g->tok = (int *)(g->dio + 8);
    if ((rc = cu(e, cudaMemset(g->hccnt, 0, sizeof(unsigned) * S), "mHC counters")))
        return rc;
    g->hin_stride = al256(8 + sizeof(int) * S);
    if ((rc = cu(e, cudaMallocHost((void **)&g->hin, HIN_SLOTS * g->hin_stride), "cudaMallocHost(inputs)")) ||
        (rc = cu(e, cudaMallocHost((void **)&g->hlogits, sizeof(float) * LOGIT_ROWS * V), "cudaMallocHost(logits)")) ||
        (rc = cu(e, cudaMallocHost((void **)&g->h_amax, sizeof(int) * LOGIT_ROWS), "cudaMallocHost(argmax)")))
        return rc;
    for (int i = 0; i < HIN_SLOTS; i++)
        if ((rc = cu(e, cudaEventCreateWithFlags(&g->hev[i], cudaEventDisableTiming), "cudaEventCreate")))
            return rc;
    for (int l = g->lb; l < g->le + g->mtp; l++) {
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
        L->ik8 = NULL;
        L->ikx = NULL;
        if (r) {
            L->cache = (float *)at;
            at += al256(sizeof(float) * (size_t)(g->max_ctx / r + 1) * d);
        }
        if (r == 4) {
            L->icache = (float *)at;
            at += al256(sizeof(float) * (size_t)(g->max_ctx / 4 + 1) * di);
            L->ik8 = (int8_t *)at;
            at += al256((size_t)(g->max_ctx / 4 + 1) * di);
            L->ikx = (uint32_t *)at;
            at += al256(sizeof(uint32_t) * (size_t)(g->max_ctx / 4 + 1));
        }
    }
    { // the undo record of a speculative step (struct cuda_engine's undo_tab)
        const int nl = g->le - g->lb;
        undo_ent *t = (undo_ent *)calloc((size_t)nl * 9 + 1, sizeof *t);
        if (!t)
            return ctx_err_set(e, CTX_ENOMEM, "cuda engine: out of memory");
        long long off = 0;
        int n = 0;
        auto add = [&](float *base, int rw, int mod, int addr, int shift) {
            t[n++] = undo_ent{base, off, rw, mod, addr, shift};
            off += rw;
        };
        // a compressor's carry rows (inference/model.c compress_token): position p writes row
        // (overlap ? ratio : 0) + p % ratio; an overlapping one completing a block copies rows
        // [ratio, 2 ratio) over [0, ratio). The two-token step's first position writes another row and
        // completes no block where the second does, so the rows saved before the step are the first
        // position's state.
        auto carry = [&](float *kv, float *sc, int ratio, int width) {
            const int ov = ratio == 4, rw = (ov ? 2 : 1) * width;
            add(kv, rw, ratio, ov ? ratio : 0, 0);
            add(sc, rw, ratio, ov ? ratio : 0, 0);
            if (ov) {
                add(kv, ratio * rw, ratio, 0, 1);
                add(sc, ratio * rw, ratio, 0, 1);
            }
        };
        for (int l = g->lb; l < g->le; l++) {
            struct dlayer *L = &g->L[l];
            add(L->ring, d, W, 0, 0);
            if (L->ratio)
                carry(L->c_kv, L->c_sc, L->ratio, d);
            if (L->ratio == 4)
                carry(L->ic_kv, L->ic_sc, 4, c->index_head_dim);
        }
        g->undo_n = n;
        rc = cu(e, cudaMalloc((void **)&g->undo_tab, sizeof *t * (size_t)n), "cudaMalloc(undo table)");
        if (!rc)
            rc = cu(e, cudaMalloc((void **)&g->undo_buf, sizeof(float) * (size_t)off), "cudaMalloc(undo record)");
        if (!rc)
            rc = cu(e, cudaMemcpy(g->undo_tab, t, sizeof *t * (size_t)n, cudaMemcpyHostToDevice), "undo table");
        free(t);
        if (rc)
            return rc;
        g->sbytes += sizeof *t * (size_t)n + sizeof(float) * (size_t)off;
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
    dev_guard dg(g->dev);
    const struct inf_config *c = &g->c;
    g->pos = 0;
    g->gen++; // earlier marks are of another sequence
    g->last_S = 0;
    for (int l = g->lb; l < g->le + g->mtp; l++) { // the MTP block's window too
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
    dev_guard dg(g->dev);
    if (g->st) // queued work (an asynchronous call) may still use what is freed below
        cudaStreamSynchronize(g->st);
    moe_streams_free(g);
    if (g->hst) // joined into st after every site, but not if a forward call failed in between
        cudaStreamSynchronize(g->hst);
    if (g->L)
        for (int l = 0; l <= g->c.num_hidden_layers; l++) {
            cudaFree(g->L[l].etab);
            cudaFree(g->L[l].cat);
            cudaFree(g->L[l].cat2);
            cudaFree(g->L[l].lt32);
        }
    cuda_lt_ctx_free(g->lt);
    free(g->L);
    graphs_drop(g);
    cudaFree(g->state_block);
    cudaFree(g->warena);
    cudaFreeHost(g->hin);
    cudaFreeHost(g->hlogits);
    for (int i = 0; i < 2; i++) {
        cudaFreeHost(g->d2h_stage[i]);
        if (g->d2h_ev[i])
            cudaEventDestroy(g->d2h_ev[i]);
    }
    cudaFreeHost(g->h_amax);
    cudaFree(g->undo_tab);
    cudaFree(g->undo_buf);
    for (int i = 0; i < HIN_SLOTS; i++)
        if (g->hev[i])
            cudaEventDestroy(g->hev[i]);
    free(g->wmap);
    free(g->prof_layer_ms);
    if (g->hfork)
        cudaEventDestroy(g->hfork);
    if (g->hjoin)
        cudaEventDestroy(g->hjoin);
    if (g->hst)
        cudaStreamDestroy(g->hst);
    if (g->st)
        cudaStreamDestroy(g->st);
    if (g->ast) // its work was joined into st (attention), so st's synchronisation above covered it
        cudaStreamDestroy(g->ast);
    if (g->ist) // the same
        cudaStreamDestroy(g->ist);
    for (int i = 0; i < 5; i++)
        if (g->aev[i])
            cudaEventDestroy(g->aev[i]);
    if (g->prof_on)
        for (int i = 0; i < PROF_MAX_EV; i++)
            cudaEventDestroy(g->ev[i]);
    free(g);
}

extern "C" int cuda_engine_profile(struct cuda_engine *g, int on, struct ctx_err *e)
{
    dev_guard dg(g->dev); // the events belong to the engine's device
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

extern "C" void cuda_engine_profile_layers(struct cuda_engine *g, double *ms, int reset)
{
    size_t n = (size_t)g->c.num_hidden_layers + 1;
    memcpy(ms, g->prof_layer_ms, sizeof(double) * n);
    if (reset)
        memset(g->prof_layer_ms, 0, sizeof(double) * n);
}

// Test entry (declared in tests/kernels/test_engine.c): on != 0 runs prefill chunks' compressors and
// mHC through the decode kernels (k_compress; k_hc_mixpre and the side k_hc_sink4, or k_hc_mix and
// k_hc_pre<4> with the hc switches off), which the prefill forms must match bit for bit.
extern "C" void cuda_engine_cp_legacy(struct cuda_engine *g, int on)
{
    g->cp_legacy = on != 0;
}

// The decode attention's changes of issue 10 (attention(), decode steps S <= CMP_MIN_S), each
// selectable: the results are bit-identical with any of them on or off.
#define ATTN_SHAPES 1 // k_attn_score / k_attn_pv grids that use the device's SMs (att_shape_for)
#define ATTN_FORK 2   // CSA / HCA compressors on the second stream, beside the query path
#define ATTN_FOLD 4   // the ring update in k_attn_combine, the indexer weights' scaling in k_iq_prep
#define ATTN_TC 8     // k_attn_dtc (tensor cores, runs merged by k_attn_combine) instead of k_attn_score +
                      // k_attn_pv: other arithmetic (k_attn_tc's), so not the bits of the others
#define ATTN_SIDE 16  // with ATTN_FORK, one-token steps of a CSA layer: the compressors' products on the
                      // second stream and the indexer on a third, beside wq_b and k_q_prep (attention())
#define ATTN_SIDE_HCA 32 // the same for an HCA layer (its compressor's products; it has no indexer)
#define ATTN_WOA_RING 64 // decode wo_a through shared-memory rings (k_wo_a_ring) instead of k_wo_a_mma
#define ATTN_QPREP_W 128 // prefill chunks: the query heads' norm and RoPE a warp a head (k_q_prep_w)
#define ATTN_IQ_W 256    // prefill chunks: the indexer queries' RoPE, Hadamard and QDQ a warp a head (k_iq_prep_w)
#define ATTN_LAT 512     // one-token steps' latency chain (twenty-fifth session): k_attn_dtc's queries loaded all at
                         // once, k_attn_combine unrolled to its launch's runs, cq's RMSNorm weights before the wait
#define ATTN_ALL 1023 // the default
// CTX_CUDA_FUSE_ATTN: unset ATTN_ALL, 0 the launches before, 1..1023 those bits; read once per process.
static int attn_fuse_env(void)
{
    const char *env = getenv("CTX_CUDA_FUSE_ATTN");
    if (!env || !*env)
        return ATTN_ALL;
    char *end = NULL;
    long v = strtol(env, &end, 10);
    return *end || v < 0 || v > ATTN_ALL ? ATTN_ALL : (int)v;
}
static int attn_fuse_default(void)
{
    static const int v = attn_fuse_env();
    return v;
}

// Test and benchmark entry (declared in tests/kernels/test_engine.c): the ATTN_* bits (bits < 0: the
// environment's default) and a forced grid shape (force 1..3, att_shape_for: every kernel variant and
// the score kernel's item loop on any device; 0: shapes for the device). A captured decode graph is
// dropped when either changes (the next decode step recaptures).
extern "C" void cuda_engine_attn_fuse(struct cuda_engine *g, int bits, int force)
{
    bits = bits < 0 || bits > ATTN_ALL ? attn_fuse_default() : bits;
    force = force < 0 || force > 3 ? 0 : force;
    if ((bits != g->attn_fuse || force != g->attn_force) && (g->gexec || g->gexec2)) {
        dev_guard dg(g->dev);
        cudaStreamSynchronize(g->st);
        graphs_drop(g);
    }
    g->attn_fuse = bits;
    g->attn_force = force;
}

extern "C" void cuda_engine_use_graph(struct cuda_engine *g, int on)
{
    g->graph_on = on != 0;
}

extern "C" int cuda_engine_graph_state(const struct cuda_engine *g)
{
    return g->graph_fail ? -1 : g->gexec ? 1 : 0;
}

// The decode mHC's paths (struct cuda_engine's hc_fuse, hc_side, hc_pfuse): env CTX_CUDA_HC_FUSE=0,
// CTX_CUDA_HC_SIDE=0 and CTX_CUDA_HC_POST=0 turn them off for engines created after; read once per process.
static int hc_flag(int which)
{
    static std::atomic<int> v[3] = {{-1}, {-1}, {-1}};
    static const char *const name[3] = {"CTX_CUDA_HC_FUSE", "CTX_CUDA_HC_SIDE", "CTX_CUDA_HC_POST"};
    int x = v[which].load();
    if (x < 0) {
        const char *env = getenv(name[which]);
        x = !(env && env[0] == '0' && env[1] == 0);
        v[which].store(x);
    }
    return x;
}

// Test entry (declared in tests/kernels/test_engine.c): sets the engine's decode mHC paths (fuse:
// k_hc_mixpre instead of k_hc_mix + k_hc_pre; side: the Sinkhorn on the side stream; post: with fuse,
// each site's post and the MoE's combine done by the next site's k_hc_mixpre) and drops its captured
// decode graph, so the next decode step captures the paths set.
extern "C" void cuda_engine_hc_paths(struct cuda_engine *g, int fuse, int side, int post)
{
    dev_guard dg(g->dev);
    g->hc_fuse = fuse != 0;
    g->hc_side = side != 0;
    g->hc_pfuse = post != 0;
    graphs_drop(g);
}

// CTX_CUDA_PREFILL_GEMM: "exact" runs prefill chunks' FP8 products on cuda_fp8_gemm (the CPU engine's
// fp32 partials) for engines created after; unset or "lt", cuBLASLt's (struct cuda_engine's lt). Read
// once per process; anything else is "lt".
static int prefill_lt_default(void)
{
    static const int v = [] {
        const char *env = getenv("CTX_CUDA_PREFILL_GEMM");
        return !(env && !strcmp(env, "exact"));
    }();
    return v;
}

// cuBLASLt's rows form for the prefill FP8 products (CTX_CUDA_LT_ROWS=0, or cuda_engine_lt_rows_mode(0)
// before an engine is made: the transposed form and k_lt_out for that engine's products).
static env_switch lt_rows_switch{"CTX_CUDA_LT_ROWS"};
extern "C" void cuda_engine_lt_rows_mode(int on) { lt_rows_switch.set(on); }
extern "C" unsigned long long cuda_engine_lt_rows_calls(const struct cuda_engine *g) { return g->lt_rows_calls; }

// cuBLASLt for the prefill products (struct cuda_engine's lt): the context, and each FP8 product's
// scales as fp32 in the layout it reads. A product whose shape cuBLASLt refuses keeps s32 NULL (the
// exact kernel); an engine whose cuBLASLt cannot start runs every product exactly.
static int lt_setup(struct cuda_engine *g, struct ctx_err *e)
{
    g->lt_on = prefill_lt_default();
    struct ctx_err le;
    // chunks of at most 8 tokens never use it (lin_lt): no handle, workspace or heuristic queries then
    if (!g->lt_on || g->Smax <= 8 || cuda_lt_ctx_new(&g->lt, g->Smax, &le)) {
        g->lt = NULL;
        return 0;
    }
    int rc = 0;
    for (int l = g->lb; l < g->le + g->mtp && !rc; l++) {
        struct dlayer *L = &g->L[l];
        // the compressors' bf16 products (cbf_lt): their shape registered now, for the engine's largest chunk,
        // so that a chunk of any size runs them there or none does
        const struct dlin *cb = &L->cbf;
        L->cbf_lt = cb->w && cb->n % 4 == 0 && cb->k % 128 == 0 &&
                    cuda_lt_ctx_rows_bf16(g->lt, g->Smax, cb->n, cb->k, 1, cb->k, cb->n) >= g->Smax;
        struct dlin *ps[6] = {&L->wqkv, &L->wq_b, &L->wo_b, &L->sw13, &L->sw2, L->ratio == 4 ? &L->i_wq_b : NULL};
        size_t off[6], total = 0;
        for (int j = 0; j < 6; j++) {
            off[j] = (size_t)-1;
            if (!ps[j] || !ps[j]->w || !ps[j]->s || cuda_lt_ctx_supports(g->lt, ps[j]->n, ps[j]->k, &le) != 1)
                continue;
            // the rows form where cuBLASLt takes the shape that way (for every chunk, as the transposed form)
            ps[j]->lt_rows = lt_rows_switch.on() && ps[j]->n % 8 == 0 &&
                             cuda_lt_ctx_supports_form(g->lt, ps[j]->n, ps[j]->k, 1, &le) == 1;
            off[j] = total;
            total += al256(sizeof(float) * (size_t)((ps[j]->n + 127) / 128) * ((ps[j]->k / 128 + 3) / 4 * 4));
        }
        if (!total)
            continue;
        if ((rc = cu(e, cudaMalloc(&L->lt32, total), "cudaMalloc(cuBLASLt scales)")))
            break;
        g->wbytes += total;
        for (int j = 0; j < 6 && !rc; j++) {
            if (off[j] == (size_t)-1)
                continue;
            float *s32 = (float *)((char *)L->lt32 + off[j]);
            const int kb = ps[j]->k / 128;
            rc = cuda_e8m0_to_f32(ps[j]->s, (ps[j]->n + 127) / 128, kb, (kb + 3) / 4 * 4, 0, s32, g->st, e);
            ps[j]->s32 = s32;
        }
    }
    if (!rc)
        rc = cu(e, cudaStreamSynchronize(g->st), "cuBLASLt scales");
    return rc;
}

// Test and benchmark entry (cuda_engine.h): prefill products on cuBLASLt (on != 0, where the engine
// has it) or cuda_fp8_gemm; on < 0 only reports. Returns whether cuBLASLt is now in use; the counters
// are the products run each way since the engine's creation.
extern "C" int cuda_engine_prefill_lt(struct cuda_engine *g, int on, unsigned long long *lt_calls,
                                      unsigned long long *exact_fallbacks)
{
    if (on >= 0)
        g->lt_on = on != 0 && g->lt;
    if (lt_calls)
        *lt_calls = g->lt_calls;
    if (exact_fallbacks)
        *exact_fallbacks = g->lt_exact;
    return g->lt && g->lt_on;
}

extern "C" int cuda_engine_new(const struct inf_weights *w, const struct cuda_engine_opts *o, struct cuda_engine **out,
                               struct ctx_err *e)
{
    *out = NULL;
    int ndev = cuda_device_count();
    if (ndev < 1)
        return ctx_err_set(e, CTX_EUNSUPPORTED, "cuda engine: no CUDA device");
    const struct inf_config *c = inf_weights_config(w);
    int dev = o ? o->device : 0, lb = o ? o->layer_begin : 0, le = o ? o->layer_end : 0;
    if (dev < 0 && cudaGetDevice(&dev) != cudaSuccess)
        return ctx_err_set(e, CTX_EIO, "cuda engine: no current CUDA device");
    if (dev >= ndev)
        return ctx_err_set(e, CTX_EINVAL, "cuda engine: device %d does not exist (%d devices)", dev, ndev);
    if (lb == 0 && le == 0)
        le = c->num_hidden_layers;
    if (lb < 0 || le > c->num_hidden_layers || lb >= le)
        return ctx_err_set(e, CTX_EINVAL, "cuda engine: layer range [%d, %d) outside the model's %d layers or empty",
                           lb, le, c->num_hidden_layers);
    dev_guard dg(dev);
    if (c->expert_dtype != INF_EXPERT_FP4)
        return ctx_err_set(e, CTX_EUNSUPPORTED, "cuda engine: FP8 routed experts (Base checkpoints) are not implemented");
    if (c->head_dim > ATT_MAXD || c->head_dim % 64 || c->hc_mult > 16 || c->n_routed_experts > 512 ||
        c->index_head_dim % 32 || (c->index_head_dim & (c->index_head_dim - 1)) || c->index_head_dim > 1024 ||
        c->qk_rope_head_dim > 128 || c->hidden_size % 128 || c->q_lora_rank % 128 || c->moe_intermediate_size % 128 ||
        (c->o_lora_rank * c->o_groups) % 128 || c->num_experts_per_tok > 16 || c->index_topk > TOPK_MAXK ||
        (c->num_attention_heads * c->head_dim) % (16 * c->o_groups))
        return ctx_err_set(e, CTX_EUNSUPPORTED, "cuda engine: config shape outside what the CUDA forward pass supports");
    struct cuda_engine *g = (struct cuda_engine *)calloc(1, sizeof *g);
    if (!g)
        return ctx_err_set(e, CTX_ENOMEM, "cuda engine: out of memory");
    g->c = *c;
    g->dev = dev;
    g->lb = lb;
    g->le = le;
    g->lastl = le - 1;
    g->graph_on = 1;
    if (o && o->mtp) { // the MTP block follows the last layer and needs the head: a last stage only
        const char *why = le != c->num_hidden_layers        ? "an engine that ends before the last layer"
                          : c->num_nextn_predict_layers < 1 ? "a config without num_nextn_predict_layers"
                          : inf_weights_mtp_layers(w) < 1   ? "a checkpoint without mtp.0 tensors"
                          : o->max_chunk > 0 && o->max_chunk < c->hc_mult ? "max_chunk below hc_mult"
                                                                           : NULL;
        if (why) {
            free(g);
            return ctx_err_set(e, CTX_EINVAL, "cuda engine: no MTP block on %s", why);
        }
        g->mtp = 1;
    }
    g->cur_layer = c->num_hidden_layers;
    g->prof_layer_ms = (double *)calloc((size_t)c->num_hidden_layers + 1, sizeof(double));
    if (!g->prof_layer_ms) {
        free(g);
        return ctx_err_set(e, CTX_ENOMEM, "cuda engine: out of memory");
    }
    g->Smax = o && o->max_chunk > 0 ? o->max_chunk : 256;
    g->max_ctx = o && o->max_ctx > 0 ? o->max_ctx : 8192;
    // a prefill chunk's bucketing of its w1|w3 pairs (2 S k over 2E table entries; decode steps, S <= 8,
    // take the GEMV instead): refused here rather than at the first long prefill
    const long long npairs13 = 2LL * g->Smax * c->num_experts_per_tok;
    if (!cuda_moe_buckets_fit(2 * c->n_routed_experts, npairs13)) {
        int sm = g->Smax;
        free(g->prof_layer_ms);
        free(g);
        return ctx_err_set(e, CTX_EINVAL, "cuda engine: max_chunk %d too large (its %lld routed pairs exceed the "
                           "grouped GEMM's tile grid)", sm, npairs13);
    }
    int rc = cu(e, cudaStreamCreateWithFlags(&g->st, cudaStreamNonBlocking), "cudaStreamCreate");
    if (!rc)
        rc = moe_streams_new(g, e);
    g->hc_fuse = hc_flag(0);
    g->hc_side = hc_flag(1);
    g->hc_pfuse = hc_flag(2);
    if (!rc)
        rc = cu(e, cudaStreamCreateWithFlags(&g->hst, cudaStreamNonBlocking), "cudaStreamCreate (mHC side)");
    if (!rc)
        rc = cu(e, cudaEventCreateWithFlags(&g->hfork, cudaEventDisableTiming), "cudaEventCreate (mHC fork)");
    if (!rc)
        rc = cu(e, cudaEventCreateWithFlags(&g->hjoin, cudaEventDisableTiming), "cudaEventCreate (mHC join)");
    int sms = 0;
    if (!rc)
        rc = cu(e, cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev), "cudaDeviceGetAttribute");
    // the decode attention's second stream and its fork / join events (struct cuda_engine: attn_fuse)
    g->attn_fuse = attn_fuse_default();
    g->attn_sms = sms > 0 ? sms : 1;
    g->hcx = hcx_mode_now();
    if (!rc)
        rc = cu(e, cudaStreamCreateWithFlags(&g->ast, cudaStreamNonBlocking), "cudaStreamCreate (attention)");
    if (!rc)
        rc = cu(e, cudaStreamCreateWithFlags(&g->ist, cudaStreamNonBlocking), "cudaStreamCreate (indexer)");
    for (int i = 0; i < 5 && !rc; i++)
        rc = cu(e, cudaEventCreateWithFlags(&g->aev[i], cudaEventDisableTiming), "cudaEventCreate (attention)");
    g->lin_blocks = sms > 0 ? 2 * sms : 1;
    { // the indexer scores' grid: enough blocks for the largest context, at most 4 per SM
        long long need = (g->max_ctx / 4 + 255) / 256;
        g->idx_blocks = (int)(need < 4LL * sms ? need : 4LL * sms);
        if (g->idx_blocks < 1)
            g->idx_blocks = 1;
    }
    if (!rc) // the tensor-core indexer kernels' shared memory, for this device, before any graph capture
        rc = cu(e, idx_tc_attrs(c->index_head_dim), "indexer scores: cudaFuncSetAttribute");
    if (!rc) // k_attn_dtc's (a decode step's attention), likewise
        rc = cu(e, cudaFuncSetAttribute(k_attn_dtc<true>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)ATD_SMEM),
                "cudaFuncSetAttribute(k_attn_dtc)");
    if (!rc)
        rc = cu(e, cudaFuncSetAttribute(k_attn_dtc<false>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)ATD_SMEM),
                "cudaFuncSetAttribute(k_attn_dtc)");
    if (!rc) // and decode wo_a's
        rc = cu(e, wo_a_ring_attrs(), "cudaFuncSetAttribute(k_wo_a_ring)");
    if (!rc) // and the prefill top-k's (a decode step takes it with CTX_CUDA_TOPK_FAST=0)
        rc = cu(e, topk_row_attrs(), "cudaFuncSetAttribute(k_topk_row)");
    if (!rc)
        rc = upload_weights(g, w, e);
    g->L = (struct dlayer *)calloc((size_t)c->num_hidden_layers + 1, sizeof *g->L); // + the MTP block's
    if (!rc && !g->L)
        rc = ctx_err_set(e, CTX_ENOMEM, "cuda engine: out of memory");
    int D = c->hidden_size, hc = c->hc_mult;
    if (lb == 0 || g->mtp)
        g->embed = (const uint16_t *)dget(g, &rc, e, INF_DT_BF16, (long long)c->vocab_size * D, "embed.weight");
    if (le == c->num_hidden_layers) {
        g->norm = (const uint16_t *)dget(g, &rc, e, INF_DT_BF16, D, "norm.weight");
        g->head = (const uint16_t *)dget(g, &rc, e, INF_DT_BF16, (long long)c->vocab_size * D, "head.weight");
        g->hch_fn = (const float *)dget(g, &rc, e, INF_DT_F32, (long long)hc * hc * D, "hc_head_fn");
        g->hch_base = (const float *)dget(g, &rc, e, INF_DT_F32, hc, "hc_head_base");
        g->hch_scale = (const float *)dget(g, &rc, e, INF_DT_F32, 1, "hc_head_scale");
    }
    for (int l = lb; l < le + g->mtp && !rc; l++)
        rc = bind_layer(g, w, l, e);
    if (!rc)
        rc = lt_setup(g, e);
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

// A prefill chunk's wo_a on cuBLASLt (struct cuda_engine's lt, lt_w16): the reference's own form, the FP8
// weights dequantised to bf16 (k_deq_fp8_bf16, exact) and a bf16 x bf16 -> fp32 product per group, O
// staged as its bf16 bits (exact: bf16-valued). Z keeps the fp32 sums: its one reader, wo_b's
// quantisation (k_act_quant_f32), rounds its input to bf16 first, so this gives the bytes a rounded Z
// would (k_bgemm rounds in its epilogue). Returns 1 when it does not run there (the caller's k_bgemm
// runs), else 0 or a CTX_E* code.
static bool wo_a_lt_ready(struct cuda_engine *g, int S, int G, int R, int gd)
{
    return g->lt && g->lt_on && g->lt_w16 && S > 8 &&
           cuda_lt_ctx_rows_bf16(g->lt, S, R, gd, G, G * gd, G * R) >= S;
}
// staged: the attention wrote O's bf16 bits to o16 already (k_attn_hsw), not O; should cuBLASLt
// then reject the call, O is made from them (exact) for the caller's k_bgemm.
static int wo_a_lt(struct cuda_engine *g, const struct dlayer *L, int S, int G, int R, int gd,
                   bool ready, int staged, struct ctx_err *e)
{
    if (!ready) // (wo_a_lt_ready's answer, asked once by the caller)
        return 1;
    const size_t nw = (size_t)G * R * gd, nx4 = (size_t)S * G * gd / 4; // the padding rows' inputs: any bytes
    launch_pdl(k_deq_fp8_bf16, grid_for(nw / 8, 256), 256, 0, g->st, L->wo_a.w, L->wo_a.s, G * R, gd, g->lt_w16);
    if (!staged)
        k_stage_bf16<<<grid_for(nx4, 256) < 4096 ? grid_for(nx4, 256) : 4096, 256, 0, g->st>>>(
            g->O, nx4, 1.0f, g->o16);
    int rc = cu(e, cudaGetLastError(), "wo_a: k_deq_fp8_bf16 / k_stage_bf16");
    if (!rc)
        rc = cuda_lt_ctx_bf16(g->lt, S, R, gd, G, g->o16, G * gd, g->lt_w16, g->Z, G * R, g->st, e);
    if (rc == CTX_EUNSUPPORTED) {
        g->lt_exact++;
        if (staged) {
            launch_pdl(k_bf2f, grid_for(nx4 * 4, 256), 256, 0, g->st, (const uint16_t *)g->o16,
                       nx4 * 4, g->O);
            if ((rc = cu(e, cudaGetLastError(), "wo_a: k_bf2f")))
                return rc;
        }
        return 1;
    }
    if (rc)
        return rc;
    g->lt_calls++;
    LAUNCHED("wo_a lt");
    return 0;
}

// A prefill chunk's FP8 product on cuBLASLt (struct cuda_engine's lt) from q8 / sa as the exact path
// has them: the scales transposed (k_lt_sat), then, in the rows form (w->lt_rows, since 2026-12-01), the
// product straight into y16 or into o16 in rows, which k_lt_rows_f32 widens into y1 / y2; in the
// transposed form the product into o16 transposed, k_lt_out writes y1 / y2 (floats, split at n1) or y16
// (bf16). Returns 1 when this product does not run there (no cuBLASLt,
// S <= 8, a shape cuBLASLt refused, or a call it rejected: the caller runs cuda_fp8_gemm), else 0 or
// a CTX_E* code.
static int lin_lt(struct cuda_engine *g, const struct dlin *w, int S, int n1, float *y1, float *y2, uint16_t *y16,
                  struct ctx_err *e)
{
    if (!g->lt || !g->lt_on || !w->s32 || S <= 8)
        return 1;
    const int kb = w->k / 128, mp = cuda_lt_ctx_rows_form(g->lt, S, w->n, w->k, w->lt_rows);
    if (mp < S)
        return 1;
    launch_pdl(k_lt_sat, grid_for((size_t)kb * mp, 256), 256, 0, g->st, g->sa, S, kb, mp, g->lt_sat);
    int rc = cu(e, cudaGetLastError(), "k_lt_sat");
    if (!rc && w->lt_rows) { // the rows form: y16 written in place (its buffer has the padding rows), else
                             // o16 widened
        rc = cuda_lt_ctx_run_rows(g->lt, S, w->n, w->k, g->q8, g->lt_sat, w->w, w->s32, y16 ? y16 : g->o16, g->st, e);
        if (rc == CTX_EUNSUPPORTED) {
            g->lt_exact++;
            return 1;
        }
        if (rc)
            return rc;
        if (!y16 && n1 % 8 == 0)
            launch_pdl(k_lt_rows_f32, dim3((unsigned)((w->n + 2047) / 2048), (unsigned)(S < 65535 ? S : 65535)), 256,
                       0, g->st, (const uint16_t *)g->o16, S, w->n, n1, y1, y2);
        else if (!y16)
            launch_pdl(k_bf2f_split, grid_for((size_t)S * w->n, 256), 256, 0, g->st, (const uint16_t *)g->o16, S, n1,
                       w->n - n1, y1, y2);
        if (!y16 && (rc = cu(e, cudaGetLastError(), "k_lt_rows_f32")))
            return rc;
        g->lt_calls++;
        g->lt_rows_calls++;
        LAUNCHED("lt rows");
        return 0;
    }
    if (!rc)
        rc = cuda_lt_ctx_run(g->lt, S, w->n, w->k, g->q8, g->lt_sat, w->w, w->s32, g->o16, g->st, e);
    if (rc == CTX_EUNSUPPORTED) {
        g->lt_exact++;
        return 1;
    }
    if (rc)
        return rc;
    k_lt_out<<<dim3((unsigned)((S + LTO_TOK - 1) / LTO_TOK), (unsigned)((w->n + 31) / 32)), dim3(32, 8), 0,
               g->st>>>(g->o16, mp, S, w->n, n1, y1, y2, y16);
    g->lt_calls++;
    LAUNCHED("k_lt_out");
    return 0;
}

// y [S][n] (float, bf16 values) = W x with FP8 weights: x to bf16, 1x128 e4m3 quantisation, GEMV
// (S <= 8) or GEMM (cuBLASLt's with lt), bf16 out.
static int lin_fp8(struct cuda_engine *g, const struct dlin *w, const float *x, int S, float *y, struct ctx_err *e)
{
    size_t ny = (size_t)S * w->n;
    // decode (one token, or a speculative step's two): quantisation, product and conversion in one
    // launch (the same bits)
    if (S <= 2 && cuda_fp8_gemv_f32_fits(S, w->n, w->k))
        return cuda_fp8_gemv_f32m(x, S, w->w, w->s, w->n, w->k, y, w->n, NULL, g->st, e);
    launch_pdl(k_act_quant_f32, (unsigned)(((long long)S * (w->k / 128) + 7) / 8), 256, 0, g->st, x, S, S, w->k, g->q8,
               g->sa);
    int rc = cu(e, cudaGetLastError(), "k_act_quant_f32");
    if (rc || (rc = lin_lt(g, w, S, w->n, y, NULL, NULL, e)) != 1)
        return rc;
    rc = S <= 8 ? cuda_fp8_gemv(g->q8, g->sa, S, w->w, w->s, w->n, w->k, g->o16, g->st, e)
                : cuda_fp8_gemm(g->q8, g->sa, S, w->w, w->s, w->n, w->k, g->o16, g->st, e);
    if (rc)
        return rc;
    launch_pdl(k_bf2f, grid_for(ny, 256), 256, 0, g->st, g->o16, ny, y);
    LAUNCHED("lin_fp8");
    return 0;
}
// lin_fp8 with bf16 out: y16 [S][n] gets the bits whose values lin_fp8's floats hold (both paths' products
// are bf16), in half the bytes (a prefill chunk's wq_b into k_attn_hsw's bf16 queries).
static int lin_fp8_16(struct cuda_engine *g, const struct dlin *w, const float *x, int S, uint16_t *y16,
                      struct ctx_err *e)
{
    if (S <= 2 && cuda_fp8_gemv_f32_fits(S, w->n, w->k))
        return ctx_err_set(e, CTX_EINTERNAL, "lin_fp8_16: a decode step's product (lin_fp8's fused path)");
    launch_pdl(k_act_quant_f32, (unsigned)(((long long)S * (w->k / 128) + 7) / 8), 256, 0, g->st, x, S, S, w->k, g->q8,
               g->sa);
    int rc = cu(e, cudaGetLastError(), "k_act_quant_f32");
    if (rc || (rc = lin_lt(g, w, S, w->n, NULL, NULL, y16, e)) != 1)
        return rc;
    rc = S <= 8 ? cuda_fp8_gemv(g->q8, g->sa, S, w->w, w->s, w->n, w->k, y16, g->st, e)
                : cuda_fp8_gemm(g->q8, g->sa, S, w->w, w->s, w->n, w->k, y16, g->st, e);
    LAUNCHED("lin_fp8_16");
    return rc;
}
// The same for a concatenated weight (struct dlayer's wqkv): rows [0, n1) into y1 [S][n1], the rest
// into y2 [S][n - n1].
static int lin_fp8_split(struct cuda_engine *g, const struct dlin *w, const float *x, int S, int n1, float *y1,
                         float *y2, struct ctx_err *e)
{
    size_t ny = (size_t)S * w->n;
    if (S <= 2 && cuda_fp8_gemv_f32_fits(S, w->n, w->k))
        return cuda_fp8_gemv_f32m(x, S, w->w, w->s, w->n, w->k, y1, n1, y2, g->st, e);
    launch_pdl(k_act_quant_f32, (unsigned)(((long long)S * (w->k / 128) + 7) / 8), 256, 0, g->st, x, S, S, w->k, g->q8,
               g->sa);
    int rc = cu(e, cudaGetLastError(), "k_act_quant_f32");
    if (rc || (rc = lin_lt(g, w, S, n1, y1, y2, NULL, e)) != 1)
        return rc;
    rc = S <= 8 ? cuda_fp8_gemv(g->q8, g->sa, S, w->w, w->s, w->n, w->k, g->o16, g->st, e)
                : cuda_fp8_gemm(g->q8, g->sa, S, w->w, w->s, w->n, w->k, g->o16, g->st, e);
    if (rc)
        return rc;
    launch_pdl(k_bf2f_split, grid_for(ny, 256), 256, 0, g->st, g->o16, S, n1, w->n - n1, y1, y2);
    LAUNCHED("lin_fp8_split");
    return 0;
}
// The same product on already quantised activations (q8/sa), bf16 out.
static int lin_fp8_q(struct cuda_engine *g, const struct dlin *w, int S, uint16_t *y16, struct ctx_err *e)
{
    int rc = lin_lt(g, w, S, w->n, NULL, NULL, y16, e);
    if (rc != 1)
        return rc;
    return S <= 8 ? cuda_fp8_gemv(g->q8, g->sa, S, w->w, w->s, w->n, w->k, y16, g->st, e)
                  : cuda_fp8_gemm(g->q8, g->sa, S, w->w, w->s, w->n, w->k, y16, g->st, e);
}
// The prefill GEMM (k_bgemm) of S tokens: x staged into xb as bf16 of x * mul (see the kernel).
template <bool FP8>
static int bgemm_launch(const uint8_t *W, const uint8_t *scale, const float *x, int S, int n, int k, int ldx,
                        int grp_rows, float mul, const lin_out &o, uint16_t *xb, cudaStream_t st, struct ctx_err *e)
{
    const size_t n4 = (size_t)S * ldx / 4;
    k_stage_bf16<<<grid_for(n4, 256) < 4096 ? grid_for(n4, 256) : 4096, 256, 0, st>>>(x, n4, mul, xb);
    cudaError_t ce =
        cudaFuncSetAttribute(k_bgemm<FP8>, cudaFuncAttributeMaxDynamicSharedMemorySize, bg_smem_bytes<FP8>());
    if (ce != cudaSuccess)
        return cu(e, ce, "cudaFuncSetAttribute(k_bgemm)");
    k_bgemm<FP8><<<dim3((unsigned)((n + 127) / 128), (unsigned)((S + 127) / 128)), 256, bg_smem_bytes<FP8>(), st>>>(
        W, scale, xb, S, n, k, ldx, grp_rows, o);
    LAUNCHED("k_bgemm");
    return 0;
}
// bf16 products (fp32 sums) of S tokens: mode 0 as the engine (S > 8: the tensor-core GEMM, which
// needs bf16-valued x and k % 128 == 0, staging x in xb [S][k]; otherwise warps per row), 1 warps per
// row, 2 the GEMM. lin_blocks: the persistent kernel's grid.
static int lin_bf16_launch(const uint16_t *W, int n, int k, const float *x, int S, const lin_out &o, uint16_t *xb,
                           int lin_blocks, int mode, cudaStream_t st, struct ctx_err *e)
{
    if (mode == 2 || (mode == 0 && S > 8 && k % 128 == 0)) {
        if (k % 128)
            return ctx_err_set(e, CTX_EINVAL, "cuda engine: bf16 GEMM needs k %% 128 == 0 (k = %d)", k);
        return bgemm_launch<false>((const uint8_t *)W, NULL, x, S, n, k, k, n, 1.0f, o, xb, st, e);
    }
    // Warps per row: more while the rows alone would leave SMs idle (decode chunks only).
    int wl = 0;
    while (S <= 8 && wl < 3 && (n + (8 >> wl) - 1) / (8 >> wl) < lin_blocks)
        wl++;
    unsigned blocks = (unsigned)((n + (8 >> wl) - 1) / (8 >> wl));
    if (blocks > (unsigned)lin_blocks)
        blocks = (unsigned)lin_blocks;
    if (k <= (256 << wl) * 16)
        launch_pdl(k_lin_bf16<16>, blocks, 256, 0, st, W, x, S, n, k, o, wl);
    else
        launch_pdl(k_lin_bf16<0>, blocks, 256, 0, st, W, x, S, n, k, o, wl);
    LAUNCHED("k_lin_bf16");
    return 0;
}
// x must be bf16-valued when S > 8 (the GEMM stages it as bf16): the callers pass u, which
// k_hc_pre rounds. g->o16 ([S][omax] bf16, free between the FP8 products) is the staging buffer.
static int lin_bf16_out(struct cuda_engine *g, const struct dlin *w, const float *x, int S, const lin_out &o,
                        struct ctx_err *e)
{
    return lin_bf16_launch((const uint16_t *)w->w, w->n, w->k, x, S, o, g->o16, g->lin_blocks, 0, g->st, e);
}
static int lin_bf16(struct cuda_engine *g, const struct dlin *w, const float *x, int S, float *y, int out_bf16,
                    struct ctx_err *e)
{
    lin_out o;
    memset(&o, 0, sizeof o);
    o.nseg = 1;
    o.n[0] = w->n;
    o.bf[0] = out_bf16;
    o.y[0] = y;
    return lin_bf16_out(g, w, x, S, o, e);
}

// wo_a of S tokens: Z [S][G*R] (bf16 values) from O [S][G*gd]. mode 0 as the engine: S <= 8 the
// decode kernel on tensor cores (k_wo_a_ring; k_wo_a_mma where gd % 128 != 0), S > 8 the GEMM (one
// kernel for every S > 8: chunk invariance), both when R % 128 == 0; otherwise one warp per row
// (k_wo_a). 1: k_wo_a, 2: the GEMM (any S), 3: as 0 with k_wo_a_mma for decode (the kernel before
// k_wo_a_ring: the same bits). xb: [S][G*gd] bf16 staging for the GEMM.
static int wo_a_launch(const uint8_t *W, const uint8_t *scale, const float *O, int S, int G, int R, int gd, float *Z,
                       uint16_t *xb, int lin_blocks, int mode, cudaStream_t st, struct ctx_err *e)
{
    if (mode == 2 && (R % 128 || gd % 128))
        return ctx_err_set(e, CTX_EINVAL, "cuda engine: wo_a GEMM needs R, gd %% 128 == 0 (R %d, gd %d)", R, gd);
    const int dec = (mode == 0 || mode == 3) && S <= 8 && R % 128 == 0 && (size_t)S * gd * 2 <= 32768;
    if (dec && mode == 0 && gd % 128 == 0) { // decode: weights through shared-memory rings (wo_a_ring_attrs)
        // two 16-row tiles a CTA where one a CTA would take more than one wave (lin_blocks: two CTAs an SM)
        const size_t smem = wo_a_ring_smem(S, gd);
        if (G * R / 16 > lin_blocks)
            launch_pdl(k_wo_a_ring<2>, (unsigned)(G * R / 32), 256, smem, st, W, scale, O, S, R, gd, G * gd, G * R, Z);
        else
            launch_pdl(k_wo_a_ring<1>, (unsigned)(G * R / 16), 256, smem, st, W, scale, O, S, R, gd, G * gd, G * R, Z);
    } else if (dec) { // decode: x staged in shared memory, the weights in registers
        launch_pdl(k_wo_a_mma, (unsigned)(G * R / 16), 256, (size_t)S * gd * 2, st, W, scale, O, S, R, gd, G * gd,
                   G * R, Z);
    } else if (mode == 2 || ((mode == 0 || mode == 3) && S > 8 && R % 128 == 0 && gd % 128 == 0)) {
        lin_out o;
        memset(&o, 0, sizeof o);
        o.nseg = 1;
        o.n[0] = G * R;
        o.bf[0] = 1;
        o.y[0] = Z;
        return bgemm_launch<true>(W, scale, O, S, G * R, gd, G * gd, R, 0x1p100f, o, xb, st, e);
    } else {
        unsigned blocks = (unsigned)((G * R + 7) / 8);
        if (blocks > (unsigned)lin_blocks)
            blocks = (unsigned)lin_blocks;
        if (gd <= 512 * 8)
            launch_pdl(k_wo_a<8>, blocks, 256, 0, st, W, scale, O, S, G, R, gd, G * gd, Z);
        else
            launch_pdl(k_wo_a<0>, blocks, 256, 0, st, W, scale, O, S, G, R, gd, G * gd, Z);
    }
    LAUNCHED("wo_a");
    return 0;
}

// Test entries (tests/kernels/test_wo.c): the engine's own launches on caller buffers. d_xb: the
// staging buffer, S * k (lin) or S * G * gd (wo_a) bf16.
extern "C" int cuda_engine_wo_a(const uint8_t *d_w, const uint8_t *d_s, const float *d_O, int S, int G, int R, int gd,
                                float *d_Z, void *d_xb, int mode, void *stream, struct ctx_err *e)
{
    if (S < 1 || G < 1 || R < 1 || gd < 16 || gd % 16 || (G * R) % 128 || mode < 0 || mode > 3)
        return ctx_err_set(e, CTX_EINVAL, "cuda engine: wo_a of %d tokens, %d groups x %d rows x %d, mode %d", S, G, R,
                           gd, mode);
    int sms = 0;
    cudaError_t ce = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
    if (ce != cudaSuccess)
        return cu(e, ce, "cudaDeviceGetAttribute");
    if ((ce = wo_a_ring_attrs()) != cudaSuccess)
        return cu(e, ce, "cudaFuncSetAttribute(k_wo_a_ring)");
    return wo_a_launch(d_w, d_s, d_O, S, G, R, gd, d_Z, (uint16_t *)d_xb, 2 * sms, mode, (cudaStream_t)stream, e);
}
extern "C" int cuda_engine_lin_bf16(const uint16_t *d_w, int n, int k, const float *d_x, int S, float *d_y,
                                    int out_bf16, void *d_xb, int mode, void *stream, struct ctx_err *e)
{
    if (S < 1 || n < 1 || k < 8 || k % 8 || mode < 0 || mode > 2)
        return ctx_err_set(e, CTX_EINVAL, "cuda engine: bf16 product %d x %d of %d tokens, mode %d", n, k, S, mode);
    int sms = 0;
    cudaError_t ce = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
    if (ce != cudaSuccess)
        return cu(e, ce, "cudaDeviceGetAttribute");
    lin_out o;
    memset(&o, 0, sizeof o);
    o.nseg = 1;
    o.n[0] = n;
    o.bf[0] = out_bf16;
    o.y[0] = d_y;
    return lin_bf16_launch(d_w, n, k, d_x, S, o, (uint16_t *)d_xb, 2 * sms, mode, (cudaStream_t)stream, e);
}


// The grid of k_idx_score_tc2 and k_idx_score_i8 for gy query groups over `tiles` key tiles: `runs`
// runs of `tpb` tiles, about 16 blocks per SM in all, at least 4 tiles a run.
static void idx_runs(int sms, long long gy, long long tiles, long long *runs, long long *tpb)
{
    long long r = (16LL * sms + gy - 1) / gy;
    if (r > (tiles + 3) / 4)
        r = (tiles + 3) / 4;
    if (r < 1)
        r = 1;
    long long t = (tiles + r - 1) / r;
    *runs = r;
    *tpb = t < 1 ? 1 : t;
}

// k_idx_score_i8e for prefill chunks of IE_MIN_S+ queries (CTX_CUDA_IDX_I8E=0 keeps k_idx_score_i8; the same
// bits). Below IE_MIN_S its one or two query groups leave most SMs idle (H200, 125K entries: 0.052 ms at
// S = 4 against i8's 0.038; 0.109 against 0.126 at S = 16). The test entry's 2 takes it for any S >= 4.
#define IE_MIN_S 16
static env_switch idx_i8e_switch{"CTX_CUDA_IDX_I8E"};
static std::atomic<int> idx_i8e_force{0};
static int idx_i8e_on(int S) { return idx_i8e_switch.on() && (S >= IE_MIN_S || idx_i8e_force.load()); }
extern "C" void cuda_engine_idx_i8e_mode(int on)
{
    idx_i8e_switch.set(on);
    idx_i8e_force.store(on == 2);
}
// k_idx_score_iwg instead of k_idx_score_i8e where it takes the shape (di 128, Hi 16, 32 or 64: Flash's and
// Pro's indexer is 64 x 128) and i8e would run (CTX_CUDA_IDX_WG=0 keeps i8e; the same bits). The test
// entry's 2 takes it for any S >= 4 (with i8e's switch on).
static env_switch idx_wg_switch{"CTX_CUDA_IDX_WG"};
static std::atomic<int> idx_wg_force{0};
static int idx_wg_on(int S, int Hi, int di)
{
    return idx_wg_switch.on() && di == 128 && (Hi == 16 || Hi == 32 || Hi == 64) && (S >= IE_MIN_S || idx_wg_force.load());
}
extern "C" void cuda_engine_idx_wg_mode(int on)
{
    idx_wg_switch.set(on);
    idx_wg_force.store(on == 2);
}

// The grid of k_idx_score_i8e and k_idx_score_iwg: ceil(S / 8) query groups x runs of at least 16 tiles,
// about `blocks` blocks in all; *tpb = the tiles of a run.
static dim3 ie_grid(int S, int blocks, long long tiles, int *tpb)
{
    long long gq = (S + IE_Q - 1) / IE_Q, r = ((long long)blocks + gq - 1) / gq;
    if (r > tiles / 16)
        r = tiles / 16;
    if (r < 1)
        r = 1;
    long long t = (tiles + r - 1) / r;
    *tpb = (int)(t < 1 ? 1 : t);
    return dim3((unsigned)gq, (unsigned)r);
}

// The integer kernels over queries and keys in 8-bit form (Hi <= 64, di 32, 64 or 128: the caller
// checks): k_idx_score_i8e (or k_idx_score_i8) for S >= IDX_TC_MIN_S, k_idx_score_i8d below (its grid from max_n: a decode
// step passes max_ctx / 4). idx_tc_attrs(di) must have run on the current device.
static int idx_i8_launch(const int8_t *q8, const uint32_t *qx, const float *wts, const int8_t *k8, const uint32_t *kx,
                         int S, int Hi, int di, const long long *dpos, long long max_n, float *score, size_t ld,
                         cudaStream_t st, struct ctx_err *e)
{
    int sms = 0, dev = 0;
    cudaError_t ce = cudaGetDevice(&dev);
    if (ce == cudaSuccess)
        ce = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
    if (ce != cudaSuccess)
        return cu(e, ce, "cudaDeviceGetAttribute");
    long long tiles = (max_n + IDX_TC_ET - 1) / IDX_TC_ET, gy = (S + (Hi <= 32 ? 8 : 4) - 1) / (Hi <= 32 ? 8 : 4), runs, tpb;
    if (S < IDX_TC_MIN_S) { // k_idx_score_i8d: one query a block row, 2 blocks per SM in all
        long long gx = (2LL * sms + S - 1) / S;
        if (gx > tiles)
            gx = tiles;
        if (gx < 1)
            gx = 1;
        dim3 grid((unsigned)gx, (unsigned)S);
        if (di == 128)
            launch_pdl(k_idx_score_i8d<128>, grid, 256, idx_i8d_smem<128>(), st, q8, qx, wts, k8, kx, Hi, dpos, score, ld);
        else if (di == 64)
            launch_pdl(k_idx_score_i8d<64>, grid, 256, idx_i8d_smem<64>(), st, q8, qx, wts, k8, kx, Hi, dpos, score, ld);
        else
            launch_pdl(k_idx_score_i8d<32>, grid, 256, idx_i8d_smem<32>(), st, q8, qx, wts, k8, kx, Hi, dpos, score, ld);
        LAUNCHED("indexer scores (integer tensor cores, few queries)");
        return 0;
    }
    if (idx_i8e_on(S) && idx_wg_on(S, Hi, di)) { // k_idx_score_iwg: 8 queries a block, two blocks an SM; ~16 in all
        int t;
        const dim3 grid = ie_grid(S, 16 * sms, tiles, &t);
        if (Hi == 64)
            k_idx_score_iwg<8><<<grid, 128 * IW_WG, idx_iwg_smem(), st>>>(q8, qx, wts, k8, kx, Hi, S, dpos, score, ld, t);
        else if (Hi == 32)
            k_idx_score_iwg<4><<<grid, 128 * IW_WG, idx_iwg_smem(), st>>>(q8, qx, wts, k8, kx, Hi, S, dpos, score, ld, t);
        else
            k_idx_score_iwg<2><<<grid, 128 * IW_WG, idx_iwg_smem(), st>>>(q8, qx, wts, k8, kx, Hi, S, dpos, score, ld, t);
        LAUNCHED("indexer scores (integer warpgroup MMA)");
        return 0;
    }
    if (idx_i8e_on(S)) { // k_idx_score_i8e: 8 queries a block, one block an SM; ~8 blocks per SM in all, runs of 16+ tiles
        int t;
        const dim3 grid = ie_grid(S, 8 * sms, tiles, &t);
        const size_t sm = di == 128 ? idx_i8e_smem<128>(Hi) : di == 64 ? idx_i8e_smem<64>(Hi) : idx_i8e_smem<32>(Hi);
        if (di == 128)
            k_idx_score_i8e<128><<<grid, 32 * IE_NW, sm, st>>>(q8, qx, wts, k8, kx, Hi, S, dpos, score, ld, t);
        else if (di == 64)
            k_idx_score_i8e<64><<<grid, 32 * IE_NW, sm, st>>>(q8, qx, wts, k8, kx, Hi, S, dpos, score, ld, t);
        else
            k_idx_score_i8e<32><<<grid, 32 * IE_NW, sm, st>>>(q8, qx, wts, k8, kx, Hi, S, dpos, score, ld, t);
        LAUNCHED("indexer scores (integer tensor cores, entries on the rows)");
        return 0;
    }
    idx_runs(sms, gy, tiles, &runs, &tpb);
    dim3 grid((unsigned)gy, (unsigned)runs);
    if (di == 128)
        k_idx_score_i8<128><<<grid, 256, idx_i8_smem<128>(), st>>>(q8, qx, wts, k8, kx, Hi, S, dpos, score, ld, (int)tpb);
    else if (di == 64)
        k_idx_score_i8<64><<<grid, 256, idx_i8_smem<64>(), st>>>(q8, qx, wts, k8, kx, Hi, S, dpos, score, ld, (int)tpb);
    else
        k_idx_score_i8<32><<<grid, 256, idx_i8_smem<32>(), st>>>(q8, qx, wts, k8, kx, Hi, S, dpos, score, ld, (int)tpb);
    LAUNCHED("indexer scores (integer tensor cores)");
    return 0;
}

// The indexer's scores of S queries at *dpos.. over keys[0..(pos+S)/4): mode 0 as the engine
// (tensor cores when Hi <= 64 and di is 32, 64 or 128: k_idx_score_tc2 for S >= IDX_TC_MIN_S,
// k_idx_score_tc1 below that, e.g. a decode step; the scalar kernels otherwise), 1 the scalar
// kernels, 2 tensor cores, 3 k_idx_score_tc for any S (the bf16 kernel k_idx_score_tc2 replaced for
// chunks, kept as the reference the tests compare it with bit for bit). max_n >= the entries of
// the last query sizes the grids (all stride and exit early past a query's entries; a decode step
// passes max_ctx / 4, so its grid never changes).
// idx_tc_attrs(di) must have run on the current device.
static int idx_scores_launch(const float *qI, const float *wts, const float *keys, int S, int Hi, int di,
                             const long long *dpos, long long max_n, float *score, size_t ld, int scalar_blocks,
                             int mode, cudaStream_t st, struct ctx_err *e)
{
    int tc_ok = Hi >= 1 && Hi <= 64 && (di == 32 || di == 64 || di == 128);
    if (mode >= 2 && !tc_ok)
        return ctx_err_set(e, CTX_EUNSUPPORTED, "cuda engine: tensor-core indexer scores need <= 64 heads of 32, 64 "
                                                "or 128 dims (got %d x %d)", Hi, di);
    if (mode >= 2 || (mode == 0 && tc_ok)) {
        int sms = 0, dev = 0;
        cudaError_t ce = cudaGetDevice(&dev);
        if (ce == cudaSuccess)
            ce = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
        if (ce != cudaSuccess)
            return cu(e, ce, "cudaDeviceGetAttribute");
        long long tiles = (max_n + IDX_TC_ET - 1) / IDX_TC_ET;
        if (S < IDX_TC_MIN_S && mode != 3) { // one query per block row; 2 blocks per SM fit (82 KB of shared memory each)
            long long gx = (2LL * sms + S - 1) / S;
            if (gx > tiles)
                gx = tiles;
            if (gx < 1)
                gx = 1;
            dim3 grid((unsigned)gx, (unsigned)S);
            if (di == 128)
                launch_pdl(k_idx_score_tc1<128>, grid, 256, idx_tc1_smem<128>(), st, qI, wts, keys, Hi, dpos, score,
                           ld);
            else if (di == 64)
                launch_pdl(k_idx_score_tc1<64>, grid, 256, idx_tc1_smem<64>(), st, qI, wts, keys, Hi, dpos, score, ld);
            else
                launch_pdl(k_idx_score_tc1<32>, grid, 256, idx_tc1_smem<32>(), st, qI, wts, keys, Hi, dpos, score, ld);
            LAUNCHED("indexer scores (tensor cores, few queries)");
            return 0;
        }
        int qb = Hi <= 32 ? 8 : 4;
        long long gy = (S + qb - 1) / qb;
        if (mode != 3) { // k_idx_score_tc2: grid (query groups, runs of tiles), the groups fastest
            long long runs, tpb;
            idx_runs(sms, gy, tiles, &runs, &tpb);
            dim3 grid((unsigned)gy, (unsigned)runs);
            if (di == 128)
                k_idx_score_tc2<128><<<grid, 256, idx_tc2_smem<128>(), st>>>(qI, wts, keys, Hi, S, dpos, score, ld, (int)tpb);
            else if (di == 64)
                k_idx_score_tc2<64><<<grid, 256, idx_tc2_smem<64>(), st>>>(qI, wts, keys, Hi, S, dpos, score, ld, (int)tpb);
            else
                k_idx_score_tc2<32><<<grid, 256, idx_tc2_smem<32>(), st>>>(qI, wts, keys, Hi, S, dpos, score, ld, (int)tpb);
            LAUNCHED("indexer scores (tensor cores)");
            return 0;
        }
        // mode 3: k_idx_score_tc, the kernel k_idx_score_tc2 is checked against (tests/kernels/test_idx.c)
        long long gx = (16LL * sms + gy - 1) / gy; // about 16 blocks per SM in all: even waves
        if (gx > (tiles + 3) / 4) // but 4+ tiles per block: loading a block's queries costs 4 tiles' keys
            gx = (tiles + 3) / 4;
        if (gx < 1)
            gx = 1;
        dim3 grid((unsigned)gx, (unsigned)gy);
        if (di == 128)
            k_idx_score_tc<128><<<grid, 256, idx_tc_smem<128>(), st>>>(qI, wts, keys, Hi, S, dpos, score, ld);
        else if (di == 64)
            k_idx_score_tc<64><<<grid, 256, idx_tc_smem<64>(), st>>>(qI, wts, keys, Hi, S, dpos, score, ld);
        else
            k_idx_score_tc<32><<<grid, 256, idx_tc_smem<32>(), st>>>(qI, wts, keys, Hi, S, dpos, score, ld);
        LAUNCHED("indexer scores (tensor cores, bf16 reference kernel)");
        return 0;
    }
    dim3 grid((unsigned)scalar_blocks, (unsigned)S);
    size_t sm = sizeof(float) * ((size_t)Hi * di + Hi);
    if (di % 4 == 0 && sm <= 48 * 1024 && (Hi == 64 || Hi == 16 || Hi == 4)) {
        if (Hi == 64)
            launch_pdl(k_idx_score<64>, grid, 256, sm, st, qI, wts, keys, di, dpos, score, ld);
        else if (Hi == 16)
            launch_pdl(k_idx_score<16>, grid, 256, sm, st, qI, wts, keys, di, dpos, score, ld);
        else
            launch_pdl(k_idx_score<4>, grid, 256, sm, st, qI, wts, keys, di, dpos, score, ld);
    } else {
        launch_pdl(k_idx_score_warp, grid, 256, 0, st, qI, wts, keys, Hi, di, dpos, score, ld);
    }
    LAUNCHED("indexer scores");
    return 0;
}

// k_idx_score_i8 / _i8d (CTX_CUDA_IDX_I8=0 keeps k_idx_score_tc2 / tc1; decode_graph recaptures on a change).
static env_switch idx_i8_switch{"CTX_CUDA_IDX_I8"};
static int idx_i8_on(void) { return idx_i8_switch.on(); }
extern "C" void cuda_engine_idx_i8_mode(int on) { idx_i8_switch.set(on); }
// Whether the engine scores on the integer kernels (k_idx_score_i8 for chunks, k_idx_score_i8d for
// decode steps; the queries packed by k_iq_prep).
static int idx_i8_use(const struct cuda_engine *g)
{
    int Hi = g->c.index_n_heads, di = g->c.index_head_dim;
    return Hi >= 1 && Hi <= 64 && (di == 32 || di == 64 || di == 128) && idx_i8_on();
}

static int indexer_scores(struct cuda_engine *g, const struct dlayer *L, int S, int i8, struct ctx_err *e)
{
    const struct inf_config *c = &g->c;
    const float *keys = L->icache;
    if (i8) // a decode step's grid from max_ctx (captured once, replayed at every position)
        return idx_i8_launch(g->qi8, g->qix, g->wts, L->ik8, L->ikx, S, c->index_n_heads, c->index_head_dim, g->dpos,
                             S < IDX_TC_MIN_S ? g->max_ctx / 4 : (g->pos + S) / 4, g->score, g->score_ld, g->st, e);
    // a decode step's grid from max_ctx (captured once, replayed at every position); chunks from pos
    long long max_n = S < IDX_TC_MIN_S ? g->max_ctx / 4 : (g->pos + S) / 4;
    return idx_scores_launch(g->qI, g->wts, keys, S, c->index_n_heads, c->index_head_dim, g->dpos, max_n, g->score,
                             g->score_ld, g->idx_blocks, 0, g->st, e);
}

extern "C" int cuda_engine_idx_scores(const float *d_q, const float *d_w, const float *d_keys, int S, int Hi, int di,
                                      const long long *d_pos, long long max_n, float *d_score, size_t ld, int mode,
                                      void *stream, struct ctx_err *e)
{
    if (S < 1 || Hi < 1 || di < 4 || di % 4 || max_n < 0 || max_n > 0x7fffffffLL || mode < 0 || mode > 3)
        return ctx_err_set(e, CTX_EINVAL, "cuda engine: indexer scores of %d queries, %d heads x %d dims, %lld entries, "
                                          "mode %d", S, Hi, di, max_n, mode);
    int sms = 0, dev = 0;
    cudaError_t ce = cudaGetDevice(&dev);
    if (ce == cudaSuccess)
        ce = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
    if (ce == cudaSuccess)
        ce = idx_tc_attrs(di);
    if (ce != cudaSuccess)
        return cu(e, ce, "indexer scores: device attributes");
    long long need = (max_n + 255) / 256;
    int blocks = (int)(need < 4LL * sms ? need : 4LL * sms);
    return idx_scores_launch(d_q, d_w, d_keys, S, Hi, di, d_pos, max_n, d_score, ld, blocks > 0 ? blocks : 1, mode,
                             (cudaStream_t)stream, e);
}

extern "C" int cuda_engine_idx_pack(float *d_x, long long n, int di, int qdq, int8_t *d_q8, uint32_t *d_qx, void *stream,
                                    struct ctx_err *e)
{
    if (n < 0 || (di != 32 && di != 64 && di != 128))
        return ctx_err_set(e, CTX_EINVAL, "cuda engine: 8-bit form of %lld rows of %d values (32, 64 or 128)", n, di);
    if (!n)
        return 0;
    long long blocks = (n + 7) / 8;
    k_i8_pack_rows<<<(unsigned)(blocks < 4096 ? blocks : 4096), 256, 0, (cudaStream_t)stream>>>(d_x, n, di, qdq, d_q8,
                                                                                               d_qx);
    return cu(e, cudaGetLastError(), "k_i8_pack_rows");
}

extern "C" int cuda_engine_idx_scores_i8(const int8_t *d_q8, const uint32_t *d_qx, const float *d_w, const int8_t *d_k8,
                                         const uint32_t *d_kx, int S, int Hi, int di, const long long *d_pos,
                                         long long max_n, float *d_score, size_t ld, void *stream, struct ctx_err *e)
{
    if (S < 1 || Hi < 1 || max_n < 0 || max_n > 0x7fffffffLL)
        return ctx_err_set(e, CTX_EINVAL, "cuda engine: indexer scores of %d queries, %d heads, %lld entries", S, Hi,
                           max_n);
    if (Hi > 64 || (di != 32 && di != 64 && di != 128))
        return ctx_err_set(e, CTX_EUNSUPPORTED, "cuda engine: integer indexer scores need <= 64 heads of 32, 64 or 128 "
                                                "dims (got %d x %d)", Hi, di);
    cudaError_t ce = idx_tc_attrs(di);
    if (ce != cudaSuccess)
        return cu(e, ce, "indexer scores: device attributes");
    return idx_i8_launch(d_q8, d_qx, d_w, d_k8, d_kx, S, Hi, di, d_pos, max_n, d_score, ld, (cudaStream_t)stream, e);
}

// The decode top-k's switch (k_topk_fast for S <= TOPK_FAST_S; CTX_CUDA_TOPK_FAST=0 off;
// cuda_engine_topk_mode is declared where used); a captured decode graph keeps the kernels it captured.
static env_switch topk_fast_switch{"CTX_CUDA_TOPK_FAST"};
static int topk_fast_on(void) { return topk_fast_switch.on(); }
extern "C" void cuda_engine_topk_mode(int fast) { topk_fast_switch.set(fast); }

// The prefill top-k's route: k_topk_row where a row fits (max_n <= TOPK_ROW_MAXN) and the queries
// fill the GPU (S >= TOPK_ROW_MIN_S: a block a query; at S = 16 the segments' 8 blocks a query were
// faster, 0.040 against 0.058 ms over 125K entries), else and with CTX_CUDA_TOPK_ROW=0 (or
// cuda_engine_topk_row_mode(0)) the segments and the merge; mode 2 takes the row for every S
// (tests). The same bytes whatever the route.
#define TOPK_ROW_MIN_S 32
static env_switch topk_row_switch{"CTX_CUDA_TOPK_ROW"};
// k_topk_row's rank order by topk_rank16 where the selected keys allow it (CTX_CUDA_TOPK_R16=0 or
// cuda_engine_topk_r16_mode(0): topk_bitonic's 64-bit sort for every row; the same bytes either way).
static env_switch topk_rank16_switch{"CTX_CUDA_TOPK_R16"};
extern "C" void cuda_engine_topk_r16_mode(int on) { topk_rank16_switch.set(on); }
static std::atomic<int> topk_row_every{0};
extern "C" void cuda_engine_topk_row_mode(int on)
{
    topk_row_every.store(on == 2);
    topk_row_switch.set(on);
}

extern "C" size_t cuda_engine_topk_scratch(int S, long long max_n, int K)
{
    size_t nseg = (size_t)((max_n + TOPK_SEG - 1) / TOPK_SEG);
    return (size_t)S * (nseg > 0 ? nseg : 1) * (size_t)K * (sizeof(float) + sizeof(int));
}

extern "C" int cuda_engine_topk(const float *d_score, size_t ld, const long long *d_pos, int S, long long max_n, int K,
                                int *d_sel, void *d_scratch, void *stream, struct ctx_err *e)
{
    if (S < 1 || K < 1 || K > TOPK_MAXK || max_n < 0 || max_n > 0x7fffffffLL)
        return ctx_err_set(e, CTX_EINVAL, "cuda engine: top-k of %d queries, k %d (1..%d), up to %lld entries", S, K,
                           TOPK_MAXK, max_n);
    size_t nseg = (size_t)((max_n + TOPK_SEG - 1) / TOPK_SEG);
    if (nseg < 1)
        nseg = 1;
    if (S <= TOPK_FAST_S && max_n <= TOPK_FAST_MAXN && topk_fast_on()) { // decode steps: one launch, no scratch
        launch_pdl(k_topk_fast, dim3(TOPK_CL, (unsigned)S), TOPK_THREADS, 0, (cudaStream_t)stream, d_score, ld, d_pos,
                   K, d_sel);
        LAUNCHED("k_topk_fast");
        return 0;
    }
    if (max_n <= TOPK_ROW_MAXN && topk_row_switch.on() &&
        (S >= TOPK_ROW_MIN_S || topk_row_every.load())) {
        cudaError_t ce = topk_row_attrs();
        if (ce != cudaSuccess)
            return cu(e, ce, "cudaFuncSetAttribute(k_topk_row)");
        launch_pdl(k_topk_row, S, TOPK_THREADS, TOPK_ROW_SMEM, (cudaStream_t)stream, d_score, ld,
                   d_pos, K, d_sel, topk_rank16_switch.on());
        LAUNCHED("k_topk_row");
        return 0;
    }
    size_t cld = nseg * (size_t)K;
    float *csc = (float *)d_scratch;
    int *cix = (int *)(csc + (size_t)S * cld);
    launch_pdl(k_topk_seg, dim3((unsigned)nseg, (unsigned)S), TOPK_THREADS, 0, (cudaStream_t)stream, d_score, ld, d_pos,
               K, csc, cix, cld);
    launch_pdl(k_topk_merge, S, TOPK_THREADS, 0, (cudaStream_t)stream, csc, cix, cld, d_pos, K, d_sel);
    LAUNCHED("k_topk");
    return 0;
}

// The C16 paths: k_attn_tc's for HCA layers, k_attn_hwg's copy path (CTX_CUDA_ATTN_C16=0: the fp32 gather
// of every block in both).
static env_switch attn_c16_switch{"CTX_CUDA_ATTN_C16"};
extern "C" void cuda_engine_attn_c16_mode(int on) { attn_c16_switch.set(on); }

// k_attn_hwg's layer types: bit 1 sliding (ratio 0), 2 CSA (4), 4 HCA (> 4); from CTX_CUDA_ATTN_WG (an
// integer, read once; default 7, 0: k_attn_tc everywhere) or cuda_engine_attn_wg_mode (< 0: back to the
// environment). The routing depends on the layer type and the shapes only, never on S or the position, so
// chunked prefill stays bit-identical.
static std::atomic<int> attn_wg_env{-1}, attn_wg_set{-1};
extern "C" void cuda_engine_attn_wg_mode(int mask) { attn_wg_set.store(mask < 0 ? -1 : mask & 7); }
static int attn_wg_mask(void)
{
    int m = attn_wg_set.load();
    if (m >= 0)
        return m;
    int v = attn_wg_env.load();
    if (v < 0) {
        const char *s = getenv("CTX_CUDA_ATTN_WG");
        char *end = nullptr;
        long x = s && *s ? strtol(s, &end, 0) : 7;
        v = s && *s && (*end || x < 0 || x > 7) ? 7 : (int)x; // not a mask: the default
        attn_wg_env.store(v);
    }
    return v;
}
static int attn_wg_bit(int ratio) { return ratio == 0 ? 1 : ratio == 4 ? 2 : 4; }
// k_attn_hwg's shapes: 64-head groups, a window of whole blocks (head_dim ATC_D: checked by the callers)
static bool attn_wg_fits(int H, int W) { return H % 64 == 0 && W % 64 == 0; }

// k_attn_hsw instead of k_attn_hwg on the C16 path (CTX_CUDA_ATTN_HSW=0: k_attn_hwg); its queries
// as bf16 from k_q_prep_w (CTX_CUDA_ATTN_Q16=0: from Q) and its output as bf16 for wo_a's cuBLASLt
// product (CTX_CUDA_ATTN_O16=0: O, staged by wo_a)
static env_switch attn_hsw_switch{"CTX_CUDA_ATTN_HSW"};
static env_switch attn_q16_switch{"CTX_CUDA_ATTN_Q16"};
// wq_b's product straight into q16 as bf16 for k_q_prep_w to read in place (CTX_CUDA_Q16_IN=0: through
// fp32 Q as before the twenty-fourth session; the same bits)
static env_switch q16in_switch{"CTX_CUDA_Q16_IN"};
// k_moe_combine16 for prefill chunks (CTX_CUDA_COMBINE16=0: k_moe_combine4 as before the twenty-fourth
// session; the same bits)
static env_switch combine16_switch{"CTX_CUDA_COMBINE16"};
// k_q_prep_w's query heads a lane a 32-value group (q_prep_rows; CTX_CUDA_QPREP_ROWS=0: a warp a head as
// before the twenty-fourth session; the same bits)
static env_switch qprep_rows_switch{"CTX_CUDA_QPREP_ROWS"};
static env_switch attn_o16_switch{"CTX_CUDA_ATTN_O16"};
extern "C" void cuda_engine_attn_hsw_mode(int on)
{
    attn_hsw_switch.set(on);
}
// Test entry: wq_b's product into q16 (CTX_CUDA_Q16_IN) on (1) or off (0); v < 0: the environment's again.
extern "C" void cuda_engine_q16in_mode(int v)
{
    q16in_switch.set(v);
}
// Test entry: k_moe_combine16 for prefill chunks (CTX_CUDA_COMBINE16) on (1) or off (0); v < 0: the
// environment's again.
extern "C" void cuda_engine_combine16_mode(int v)
{
    combine16_switch.set(v);
}
// Test entry: q_prep_rows (CTX_CUDA_QPREP_ROWS) on (1) or off (0); v < 0: the environment's again.
extern "C" void cuda_engine_qprep_rows_mode(int v)
{
    qprep_rows_switch.set(v);
}

// attn_tc_launch's copy path for k_attn_hwg and k_attn_hsw: every block by cp.async from bf16
// copies (c16, capacity c16_rows cache rows), else every block gathered (the same bytes). A chunk
// whose queries see no cache entry yet (nc 0) takes it too: k_attn_hsw must run on every chunk of a
// layer, or a prompt's chunks would meet two kernels' roundings.
static bool attn_c16_path(const uint16_t *c16, int ratio, long long nc, long long c16_rows)
{
    return c16 && attn_c16_switch.on() && (ratio == 0 || (nc >= 0 && nc <= c16_rows));
}
// Whether attn_tc_launch (wg < 0) runs k_attn_hsw for a layer of this shape: the queries'
// preparation then writes them as bf16 (q16) for it.
static bool attn_hsw_runs(int H, int W, int ratio, const uint16_t *c16, long long c16_rows,
                          long long nc)
{
    return (attn_wg_mask() & attn_wg_bit(ratio)) && attn_hsw_shape(H, W, ATC_D) &&
           attn_c16_path(c16, ratio, nc, c16_rows) && attn_hsw_switch.on();
}

// rows x ATC_D fp32 entries (bf16-valued) -> their bf16 copy xb: the attention's C16 staging, exact
static void stage_bf16_rows(const float *x, size_t rows, uint16_t *xb, cudaStream_t st)
{
    const size_t n4 = rows * ATC_D / 4;
    k_stage_bf16<<<(unsigned)(n4 / 256 + 1 < 1024 ? n4 / 256 + 1 : 1024), 256, 0, st>>>(x, n4, 1.0f, xb);
}

// c16 (capacity c16_rows entries, or NULL): scratch for the C16 paths; nc = the compressed entries
// the chunk's last query sees ((pos + S) / ratio), converted first. k_attn_tc takes it for HCA
// layers when nc fits and the c16 switch is on; k_attn_hwg for every layer type (sliding layers: no
// cache rows), with the window's W + S rows after the first c16_rows rounded up to 64 (the engine's
// scratch has them when the heads come in 64s); k_attn_hsw there when W is 128 (HCA: the cache rows
// staged as its 64-row tiles). wg: 1 k_attn_hwg (k_attn_hsw where it applies), 0 k_attn_tc, < 0 by
// attn_wg_mask. k_attn_hsw reads bf16 queries and writes bf16 output: q16, the queries' bf16 bits
// (the caller makes them only where attn_hsw_runs says it runs), else Q staged into q16buf; o16:
// where it may write O's bf16 bits instead of O (*wrote16: whether it did), else it writes o16buf
// and O is made from it. Without q16 or q16buf, or o16 or o16buf, k_attn_hwg runs.
static int attn_tc_launch(const float *Q, const float *kvnew, const float *ring, const float *cache,
                          const int *sel, int S, int H, int W, int ratio, int K,
                          const long long *dpos, float scale, const float *sink, const float *rope,
                          int rd, float *O, uint16_t *c16, long long c16_rows, long long nc,
                          cudaStream_t st, struct ctx_err *e, int wg = -1, uint16_t *o16 = nullptr,
                          int *wrote16 = nullptr, const uint16_t *q16 = nullptr,
                          uint16_t *q16buf = nullptr, uint16_t *o16buf = nullptr)
{
    if (wrote16)
        *wrote16 = 0;
    if (wg < 0)
        wg = (attn_wg_mask() & attn_wg_bit(ratio)) != 0;
    wg = wg && attn_wg_fits(H, W);
    // the copy path (attn_c16_path), the window's rows (ring, then this chunk's kv) in w16 after
    // the cache's c16_rows rounded up to 64
    const bool async = wg && attn_c16_path(c16, ratio, nc, c16_rows);
    const bool hsw = async && attn_hsw_shape(H, W, ATC_D) && attn_hsw_switch.on() &&
                     (q16 || q16buf) && (o16 || o16buf);
    if (q16 && !hsw) { // (the caller asked attn_hsw_runs: not expected) the others read Q, exactly
        const size_t nq = (size_t)S * H * ATC_D;
        k_bf2f<<<(unsigned)(nq / 256 + 1 < 4096 ? nq / 256 + 1 : 4096), 256, 0, st>>>(q16, nq,
                                                                                      (float *)Q);
    }
    dim3 grid((unsigned)S, (unsigned)((H + 63) / 64));
    cudaError_t ce = cudaSuccess;
    if (wg) {
        uint16_t *const w16 = async ? c16 + (size_t)((c16_rows + 63) / 64 * 64) * ATC_D : nullptr;
        if (async) {
            if (hsw && ratio > 4 && nc > 0) {
                const long long n4 = (nc + 63) / 64 * 64 * (ATC_D / 4);
                k_stage_tiles<<<(unsigned)(n4 / 256 + 1 < 1024 ? n4 / 256 + 1 : 1024), 256, 0,
                                st>>>(cache, nc, c16);
            } else if (ratio && nc > 0) {
                stage_bf16_rows(cache, (size_t)nc, c16, st);
            }
            stage_bf16_rows(ring, (size_t)W, w16, st);
            stage_bf16_rows(kvnew, (size_t)S, w16 + (size_t)W * ATC_D, st);
            LAUNCHED("k_stage_bf16 (attention entries)");
        }
        if (hsw) {
            void (*hk)(const uint16_t *, const int *, int, int, int, int, const long long *, float,
                       const float *, const float *, int, uint16_t *, const uint16_t *,
                       const uint16_t *) = ratio > 4 ? k_attn_hsw<false> : k_attn_hsw<true>;
            ce = cudaFuncSetAttribute(hk, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      (int)HSW_SMEM);
            if (ce != cudaSuccess)
                return cu(e, ce, "cudaFuncSetAttribute(k_attn_hsw)");
            const size_t nq = (size_t)S * H * ATC_D;
            if (!q16) { // the queries' bf16 bits (exact: bf16-valued)
                stage_bf16_rows(Q, (size_t)S * H, q16buf, st);
                q16 = q16buf;
            }
            hk<<<grid, AWG_THREADS, HSW_SMEM, st>>>(q16, sel, H, W, ratio, K, dpos, scale, sink,
                                                    rope, rd, o16 ? o16 : o16buf, c16, w16);
            if (!o16) // O from the output's bf16 bits (exact)
                k_bf2f<<<(unsigned)(nq / 256 + 1 < 4096 ? nq / 256 + 1 : 4096), 256, 0, st>>>(
                    o16buf, nq, O);
            if (wrote16)
                *wrote16 = o16 != nullptr;
            LAUNCHED("k_attn_hsw");
            return 0;
        }
        void (*kern)(const float *, const float *, const float *, const float *, const int *, int, int, int, int,
                     const long long *, float, const float *, const float *, int, float *, const uint16_t *,
                     const uint16_t *) = async ? k_attn_hwg<true> : k_attn_hwg<false>;
        ce = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)AWG_SMEM);
        if (ce != cudaSuccess)
            return cu(e, ce, "cudaFuncSetAttribute(k_attn_hwg)");
        kern<<<grid, AWG_THREADS, AWG_SMEM, st>>>(Q, kvnew, ring, cache, sel, H, W, ratio, K, dpos, scale, sink, rope,
                                                  rd, O, async ? c16 : nullptr, w16);
        LAUNCHED("k_attn_hwg");
        return 0;
    }
    const bool use16 = c16 && ratio > 4 && nc > 0 && nc <= c16_rows && attn_c16_switch.on();
    if (use16) {
        stage_bf16_rows(cache, (size_t)nc, c16, st);
        LAUNCHED("k_stage_bf16 (HCA cache)");
    }
#define ATC_GO(C)                                                                                                      \
    do {                                                                                                               \
        ce = cudaFuncSetAttribute(k_attn_tc<C>, cudaFuncAttributeMaxDynamicSharedMemorySize,                           \
                                  (int)(C ? ATC_SMEM_C16 : ATC_SMEM));                                                 \
        if (ce == cudaSuccess)                                                                                         \
            k_attn_tc<C><<<grid, ATC_THREADS, C ? ATC_SMEM_C16 : ATC_SMEM, st>>>(                                      \
                Q, kvnew, ring, cache, sel, H, W, ratio, K, dpos, scale, sink, rope, rd, O, C ? c16 : nullptr);        \
    } while (0)
    if (use16)
        ATC_GO(true);
    else
        ATC_GO(false);
#undef ATC_GO
    if (ce != cudaSuccess)
        return cu(e, ce, "cudaFuncSetAttribute(k_attn_tc)");
    LAUNCHED("k_attn_tc");
    return 0;
}

extern "C" int cuda_engine_attn_tc(const float *d_q, const float *d_kvnew, const float *d_ring, const float *d_cache,
                                   const int *d_sel, int S, int H, int d, int W, int ratio, int K, const long long *d_pos,
                                   const float *d_sink, const float *d_rope, int rd, float *d_out, void *stream,
                                   struct ctx_err *e)
{
    if (S < 1 || H < 1 || W < 1 || ratio < 0 || K < 0 || (ratio == 4 && K < 1) || rd < 0 || rd % 2 || rd > d)
        return ctx_err_set(e, CTX_EINVAL, "cuda engine: attention of %d queries, %d heads, window %d, ratio %d, k %d, "
                                          "rope %d", S, H, W, ratio, K, rd);
    if (d != ATC_D)
        return ctx_err_set(e, CTX_EUNSUPPORTED, "cuda engine: tensor-core attention needs head_dim %d, not %d", ATC_D, d);
    return attn_tc_launch(d_q, d_kvnew, d_ring, d_cache, d_sel, S, H, W, ratio, K, d_pos, 1.0f / sqrtf((float)d), d_sink,
                          d_rope, rd, d_out, nullptr, 0, 0, (cudaStream_t)stream, e, 0); // k_attn_tc itself
}

extern "C" int cuda_engine_attn_tc16(const float *d_q, const float *d_kvnew, const float *d_ring, const float *d_cache,
                                     const int *d_sel, int S, int H, int d, int W, int ratio, int K, const long long *d_pos,
                                     const float *d_sink, const float *d_rope, int rd, long long nc, void *d_c16,
                                     float *d_out, void *stream, struct ctx_err *e)
{
    if (S < 1 || H < 1 || W < 1 || ratio <= 4 || K < 0 || rd < 0 || rd % 2 || rd > d || nc < 1 || !d_c16)
        return ctx_err_set(e, CTX_EINVAL, "cuda engine: bf16-cache attention of %d queries, %d heads, window %d, ratio %d "
                                          "(> 4), rope %d, %lld entries", S, H, W, ratio, rd, nc);
    if (d != ATC_D)
        return ctx_err_set(e, CTX_EUNSUPPORTED, "cuda engine: tensor-core attention needs head_dim %d, not %d", ATC_D, d);
    return attn_tc_launch(d_q, d_kvnew, d_ring, d_cache, d_sel, S, H, W, ratio, K, d_pos, 1.0f / sqrtf((float)d), d_sink,
                          d_rope, rd, d_out, (uint16_t *)d_c16, nc, nc, (cudaStream_t)stream, e, 0);
}

extern "C" int cuda_engine_attn_wg(const float *d_q, const float *d_kvnew, const float *d_ring, const float *d_cache,
                                   const int *d_sel, int S, int H, int d, int W, int ratio, int K,
                                   const long long *d_pos, const float *d_sink, const float *d_rope, int rd,
                                   long long nc, void *d_c16, float *d_out, void *stream, struct ctx_err *e)
{
    if (S < 1 || H < 1 || W < 0 || ratio < 0 || K < 0 || (ratio == 4 && K < 1) || rd < 0 || rd % 2 || rd > d ||
        (d_c16 && ratio && nc < 1))
        return ctx_err_set(e, CTX_EINVAL, "cuda engine: attention on wgmma of %d queries, %d heads, window %d, ratio %d, "
                                          "k %d, rope %d, %lld bf16 entries", S, H, W, ratio, K, rd, d_c16 ? nc : 0);
    if (d != ATC_D || !attn_wg_fits(H, W))
        return ctx_err_set(e, CTX_EUNSUPPORTED, "cuda engine: attention on wgmma needs head_dim %d (not %d), 64-head "
                                                "groups (not %d heads) and a window of 64-entry blocks (not %d)",
                           ATC_D, d, H, W);
    // the scratch: the cache's rows (rounded up to 64), the window's W + S, then k_attn_hsw's
    // queries and output (S H rows each)
    uint16_t *const c16 = (uint16_t *)d_c16;
    uint16_t *const q16buf =
        c16 ? c16 + ((size_t)(nc + 63) / 64 * 64 + (size_t)W + S) * ATC_D : nullptr;
    uint16_t *const o16buf = c16 ? q16buf + (size_t)S * H * ATC_D : nullptr;
    return attn_tc_launch(d_q, d_kvnew, d_ring, d_cache, d_sel, S, H, W, ratio, K, d_pos,
                          1.0f / sqrtf((float)d), d_sink, d_rope, rd, d_out, c16, c16 ? nc : 0,
                          c16 ? nc : 0, (cudaStream_t)stream, e, 1, nullptr, nullptr, nullptr,
                          q16buf, o16buf);
}

extern "C" size_t cuda_engine_attn_dtc_scratch(int S, int H, int d)
{
    return sizeof(float) * (size_t)(S > 0 ? S : 0) * (size_t)(H > 0 ? H : 0) * ATT_MAXSPLIT_TC * (size_t)(d + 2);
}

extern "C" int cuda_engine_attn_dtc(const float *d_q, const float *d_kvnew, const float *d_ring, const float *d_cache,
                                    const int *d_sel, int S, int H, int d, int W, int ratio, int K,
                                    const long long *d_pos, const float *d_sink, const float *d_rope, int rd,
                                    float *d_scratch, float *d_out, void *stream, struct ctx_err *e)
{
    if (S < 1 || S > ATT_TOKENS_TC || H < 1 || W < 1 || ratio < 0 || K < 0 || (ratio == 4 && K < 1) || rd < 0 ||
        rd % 2 || rd > d)
        return ctx_err_set(e, CTX_EINVAL, "cuda engine: decode attention of %d queries (at most %d), %d heads, window "
                                          "%d, ratio %d, k %d, rope %d", S, ATT_TOKENS_TC, H, W, ratio, K, rd);
    if (d != ATC_D)
        return ctx_err_set(e, CTX_EUNSUPPORTED, "cuda engine: tensor-core attention needs head_dim %d, not %d", ATC_D, d);
    cudaStream_t st = (cudaStream_t)stream;
    cudaError_t ce = cudaFuncSetAttribute(k_attn_dtc<true>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)ATD_SMEM);
    if (ce != cudaSuccess)
        return cu(e, ce, "cudaFuncSetAttribute(k_attn_dtc)");
    // every run a list can have (the blocks past a query's runs return at once)
    k_attn_dtc<true><<<dim3(ATT_MAXSPLIT_TC, (unsigned)S, (unsigned)((H + 15) / 16)), 128, ATD_SMEM, st>>>(
        d_q, d_kvnew, d_ring, d_cache, d_sel, 0, H, W, ratio, K, d_pos, 1.0f / sqrtf((float)d), d_scratch);
    k_attn_combine<ATT_MAXSPLIT_TC><<<(unsigned)(S * H), 512, sizeof(float) * d, st>>>(d_scratch, 0, H, d, W, ratio, K, d_pos, d_sink,
                                                                      d_rope, rd, d_out, nullptr, nullptr, S,
                                                                      ATT_MAXSPLIT_TC);
    LAUNCHED("k_attn_dtc");
    return 0;
}

// One compressor over a chunk: k_compress for decode steps (S <= CMP_MIN_S) and when the legacy path
// is forced (cuda_engine_cp_legacy, tests), else its parallel form (pool, fin, carry: the same bits).
// `threads` is k_compress's block size, which the entry's norm sum depends on, so fin uses it too.
// side: a decode step's compressor forked onto the attention's second stream (attention(); S <=
// CMP_MIN_S only): a plain launch there, ordered by the fork / join events.
static void compress_launch(struct cuda_engine *g, const float *kvp, const float *scp, int S, int ratio, int width,
                           int threads, const float *ape, const uint16_t *normw, float eps, int indexer, float *ckv,
                           float *csc, float *cache, int8_t *k8, uint32_t *kx, const float *rope, int rd, float hsc,
                           cudaStream_t side = nullptr)
{
    int ns = (ratio == 4 ? 2 : 1) * ratio, rw = (ratio == 4 ? 2 : 1) * width;
    if (S <= CMP_MIN_S || g->cp_legacy || ns > CMP_MAXNS || width % CMP_CH) {
        if (side)
            k_compress<<<1, threads, sizeof(float) * width, side>>>(kvp, scp, S, g->dpos, ratio, width, ape, normw, eps,
                                                                    indexer, ckv, csc, cache, rope, rd, hsc, k8, kx);
        else
            launch_pdl(k_compress, 1, threads, sizeof(float) * width, g->st, kvp, scp, S, g->dpos, ratio, width, ape,
                       normw, eps, indexer, ckv, csc, cache, rope, rd, hsc, k8, kx);
        return;
    }
    unsigned nent = (unsigned)(S / ratio + 1); // entries completed in S positions: at most this many
    k_compress_pool<<<dim3(nent, (unsigned)(width / CMP_CH)), CMP_CH * CMP_WARPS, 0, g->st>>>(
        kvp, scp, S, g->dpos, ratio, width, ape, ckv, csc, cache);
    k_compress_fin<<<nent, threads, sizeof(float) * width, g->st>>>(S, g->dpos, ratio, width, normw, eps, indexer, cache,
                                                                    rope, rd, hsc, k8, kx);
    k_compress_carry<<<grid_for((size_t)ratio * rw, 256), 256, 0, g->st>>>(kvp, scp, S, g->dpos, ratio, width, ape, ckv,
                                                                          csc);
}

// Work queued through g->st goes to another stream while one of these lives (attention()'s side paths:
// the helpers that launch on g->st then launch there).
struct stream_swap {
    struct cuda_engine *g;
    cudaStream_t was;
    stream_swap(struct cuda_engine *ge, cudaStream_t to) : g(ge), was(ge->st) { g->st = to; }
    ~stream_swap() { g->st = was; }
};
// Stream `to` waits for everything queued on g->st so far (ev recorded there).
static int stream_fork(struct cuda_engine *g, cudaStream_t to, cudaEvent_t ev, struct ctx_err *e)
{
    int rc = cu(e, cudaEventRecord(ev, g->st), "attention: fork");
    return rc ? rc : cu(e, cudaStreamWaitEvent(to, ev, 0), "attention: fork");
}

// A launch through launch_pdl, or a plain one (pdl == 0): the first kernel after a join of the
// attention's second stream waits for everything before it in full (an ordinary dependency on both
// streams' work), not through a programmatic edge.
template <typename... Params, typename... Args>
static cudaError_t launch_att(int pdl, void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t st,
                              const Args &...args)
{
    if (pdl)
        return launch_pdl(kernel, grid, block, smem, st, args...);
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = st;
    return cudaLaunchKernelEx(&cfg, kernel, args...);
}

// Runs of a query with n entries (att_split_m on the host).
static int att_nsplit_host_m(int n, int msplit)
{
    int nch = (n + 63) / 64, cps = (nch + msplit - 1) / msplit;
    return cps ? (nch + cps - 1) / cps : 0;
}
static int att_nsplit_host(int n) { return att_nsplit_host_m(n, ATT_MAXSPLIT); }

// The decode attention's launch shapes for ns tokens of H heads whose queries have at most nmaxe
// entries (fixed by max_ctx, so that a captured graph fits every later position; nfixed: every query
// has nmaxe, the sliding-window and CSA layers). Off (the launches before): k_attn_score one item of
// ATT_HB heads x 64 entries a block on ATT_THREADS, grid (tokens * head groups, entry blocks): 16
// blocks for a sliding-window layer of 64 heads (16 of 132 SMs); k_attn_pv one block per (token,
// ATT_HB heads, run), grid y ATT_MAXSPLIT. On (ATTN_SHAPES):
// - k_attn_score, unless a fixed list already gives half the SMs an old block (CSA: 80 of 132; the
//   same blocks in smaller pieces would only add query loads): a fixed grid of two 256-thread blocks
//   per SM (at most the items there can be) taking the items in strides, the kernel choosing their
//   shape for the list at hand (64 entries by ATT_HB heads for long lists, else 32 entries and head
//   groups narrowed to 2 until there are as many items as SMs);
// - k_attn_pv: a run split over ngr blocks (grid z, k_attn_pv<ATT_HB / ngr>), the largest ngr whose
//   blocks all fit on the device at once (one per SM: 93 to 124 registers of 512 threads), so the
//   split never adds a round of blocks; grid y the most runs a query of this layer can have; the
//   probabilities read 4 at a time.
// Each score and each numerator element is computed the same way in every shape (see the kernels).
struct att_shape {
    int epb_max, epb_min, target, hpb_min, sthreads, ngr, ny;
    dim3 sgrid;
};
static struct att_shape att_shape_for(const struct cuda_engine *g, int ns, int H, int nmaxe, int nfixed, int on)
{
    struct att_shape a;
    long long ng8 = (H + ATT_HB - 1) / ATT_HB, nsm = g->attn_sms;
    int nch = (nmaxe + 63) / 64, f = g->attn_force;
    a.epb_max = a.epb_min = 64;
    a.target = 0;
    a.hpb_min = ATT_HB;
    a.sthreads = ATT_THREADS;
    a.ngr = 1;
    a.ny = ATT_MAXSPLIT;
    a.sgrid = dim3((unsigned)(ns * ng8), (unsigned)nch);
    if (!on)
        return a;
    a.ny = nch < ATT_MAXSPLIT ? (nch > 0 ? nch : 1) : ATT_MAXSPLIT; // att_split: at most min(blocks, ATT_MAXSPLIT)
    if (f) {
        a.ngr = f == 1 ? 8 : f == 2 ? 2 : 4;
    } else {
        long long b1 = ns * ng8 * att_nsplit_host(nmaxe);
        for (a.ngr = ATT_HB; a.ngr > 1 && b1 * a.ngr > nsm; a.ngr /= 2)
            ;
    }
    if (!f && nfixed && 2 * ns * ng8 * nch >= nsm) // the old score launch
        return a;
    // forced (tests): 16 entries x 1 head on 5 blocks (many items a block), 32 x 4 on 64, 64 x ATT_HB one
    // item a block
    static const int f_emax[4] = {64, 16, 32, 64}, f_emin[4] = {32, 16, 32, 64}, f_hmin[4] = {2, 1, 4, ATT_HB};
    a.epb_max = f_emax[f];
    a.epb_min = f_emin[f];
    a.hpb_min = f_hmin[f];
    a.target = f == 0 ? (int)nsm : f == 3 ? 0 : 1 << 30;
    a.sthreads = a.epb_min / ATT_SE * 32;
    long long items = ns * ((H + a.hpb_min - 1) / a.hpb_min) * (long long)((nmaxe + a.epb_min - 1) / a.epb_min);
    long long blocks = f == 0 ? 2 * nsm : f == 1 ? 5 : f == 2 ? 64 : items;
    a.sgrid = dim3((unsigned)(blocks < items ? blocks : items));
    return a;
}

// k_attn_pv: the launch before (on == 0: k_attn_pv<ATT_HB, false>, grid z 1), or ngr blocks a run
// with the 16-byte probability loads.
static cudaError_t attn_pv_launch(int on, int ngr, dim3 grid, cudaStream_t st, const float *kvnew, const float *ring,
                                  const float *cache, const int *sel, int s0, int H, int d, int W, int ratio, int K,
                                  const long long *ppos, const float *asc, int ldn, float *part)
{
    grid.z = (unsigned)(on ? ngr : 1);
    if (!on)
        return launch_pdl(k_attn_pv<ATT_HB, false>, grid, ATT_THREADS, 0, st, kvnew, ring, cache, sel, s0, H, d, W,
                          ratio, K, ppos, asc, ldn, part);
    switch (ngr) {
    case 2:
        return launch_pdl(k_attn_pv<ATT_HB / 2, true>, grid, ATT_THREADS, 0, st, kvnew, ring, cache, sel, s0, H, d, W,
                          ratio, K, ppos, asc, ldn, part);
    case 4:
        return launch_pdl(k_attn_pv<ATT_HB / 4, true>, grid, ATT_THREADS, 0, st, kvnew, ring, cache, sel, s0, H, d, W,
                          ratio, K, ppos, asc, ldn, part);
    case 8:
        return launch_pdl(k_attn_pv<ATT_HB / 8, true>, grid, ATT_THREADS, 0, st, kvnew, ring, cache, sel, s0, H, d, W,
                          ratio, K, ppos, asc, ldn, part);
    default:
        return launch_pdl(k_attn_pv<ATT_HB, true>, grid, ATT_THREADS, 0, st, kvnew, ring, cache, sel, s0, H, d, W,
                          ratio, K, ppos, asc, ldn, part);
    }
}
static_assert(ATT_HB == 8, "attn_pv_launch: grid z 1, 2, 4, 8");
static_assert(ATC_MIN_S <= ATT_TOKENS && CMP_MIN_S <= ATC_MIN_S, "attention(): a fused decode chunk is one combine");

// A prefill chunk's compressor products (L->cbf: the compressor's, and in CSA layers the indexer
// compressor's and the indexer weights', bf16 weights of one input) on cuBLASLt's bf16 GEMM (struct
// cuda_engine's lt) instead of k_bgemm: u staged as its bf16 bits (exact: bf16-valued), one bf16 x bf16
// -> fp32 product into Z ([mp][n]; free until wo_a, sized for it), then k_lin_split gives each segment
// its rows (bf16-rounded where the segment is). The sums are cuBLASLt's fp32 ones, not k_bgemm's
// 128-wide partials (the reference's bf16 GEMMs are cuBLAS's too); one algorithm a shape with rows
// padded (cuda_lt_ctx), so a chunked prefill gives one chunk's bytes (test_gemm checks the compressors'
// shapes), and whether the path runs is the layer's (L->cbf_lt, lt_setup: for the largest chunk),
// never the call's S. k_bgemm
// took 0.41 ms a CSA layer and 0.14 an HCA one at 4096 tokens (results/2026-12-01-s29).
// CTX_CUDA_CMP_LT=0 keeps k_bgemm; cuda_engine_cmp_lt_mode is the test entry. Returns 1 when it does not
// run there.
static env_switch cmp_lt_switch{"CTX_CUDA_CMP_LT"};
extern "C" void cuda_engine_cmp_lt_mode(int on) { cmp_lt_switch.set(on); }
// y[j] [S][n[j]] from y [S][n], segment j rounded to bf16 where o.bf[j]. Grid (ceil(n / 1024), up to
// 65535 rows a pass), 256 threads, four columns a thread (n and the segments' offsets multiples of 4).
__global__ void k_lin_split(const float *y, int S, int n, lin_out o)
{
    pdl_begin();
    const int r = 4 * ((int)blockIdx.x * 256 + (int)threadIdx.x);
    if (r >= n)
        return;
    int j = 0;
    while (j + 1 < o.nseg && r >= o.off[j + 1])
        j++;
    for (size_t s = blockIdx.y; s < (size_t)S; s += gridDim.y) {
        float4 v = *reinterpret_cast<const float4 *>(y + s * n + r);
        if (o.bf[j])
            v = make_float4(bf16r(v.x), bf16r(v.y), bf16r(v.z), bf16r(v.w));
        *reinterpret_cast<float4 *>(o.y[j] + s * o.n[j] + (r - o.off[j])) = v;
    }
}
static int cbf_lt(struct cuda_engine *g, const struct dlayer *L, const float *x, int S, const lin_out &o,
                  struct ctx_err *e)
{
    const struct dlin *w = &L->cbf;
    const int n = w->n, k = w->k;
    if (!L->cbf_lt || !g->lt_on || S <= 8 || !cmp_lt_switch.on())
        return 1;
    for (int j = 0; j < o.nseg; j++) // (the same segments every call of the layer)
        if (o.off[j] % 4 || o.n[j] % 4)
            return 1;
    const size_t n4 = (size_t)S * k / 4;
    k_stage_bf16<<<grid_for(n4, 256) < 4096 ? grid_for(n4, 256) : 4096, 256, 0, g->st>>>(x, n4, 1.0f, g->o16);
    int rc = cu(e, cudaGetLastError(), "compressor products: k_stage_bf16");
    if (!rc)
        rc = cuda_lt_ctx_bf16(g->lt, S, n, k, 1, g->o16, k, (const uint16_t *)w->w, g->Z, n, g->st, e);
    if (rc)
        return rc; // a shape the context took for the largest chunk takes every smaller one
    launch_pdl(k_lin_split, dim3((unsigned)((n + 1023) / 1024), (unsigned)(S < 65535 ? S : 65535)), 256, 0, g->st,
               (const float *)g->Z, S, n, o);
    g->lt_calls++;
    LAUNCHED("compressor products lt");
    return 0;
}

// A CSA layer's indexer from its query product qI on: k_iq_prep (a launch through PDL when pdl, else
// plain: the first after a join; fold: it scales wts too, else k_scale_bf16), the scores and the top-k
// of K into sel, all on g->st.
static int indexer_run(struct cuda_engine *g, const struct dlayer *L, int S, int pdl, int fold, float wscale,
                       float hsc, const float *rope, int K, struct ctx_err *e)
{
    const struct inf_config *c = &g->c;
    const int Hi = c->index_n_heads, di = c->index_head_dim, rd = c->qk_rope_head_dim, i8 = idx_i8_use(g);
    if (S > CMP_MIN_S && di == IQW_D && rd % 32 == 0 && rd <= di && (g->attn_fuse & ATTN_IQ_W))
        launch_att(pdl, k_iq_prep_w, (S * Hi + IQW_HPB - 1) / IQW_HPB, 32 * IQW_HPB, 0, g->st, g->qI, S * Hi, Hi, rd,
                   rope, g->dpos, hsc, fold ? g->wts : (float *)nullptr, wscale, i8 ? g->qi8 : (int8_t *)nullptr,
                   i8 ? g->qix : (uint32_t *)nullptr);
    else
        launch_att(pdl, k_iq_prep, S * Hi, 128, sizeof(float) * di, g->st, g->qI, Hi, di, rd, rope, g->dpos, hsc,
                   fold ? g->wts : (float *)nullptr, wscale, i8 ? g->qi8 : (int8_t *)nullptr,
                   i8 ? g->qix : (uint32_t *)nullptr);
    if (!fold)
        launch_pdl(k_scale_bf16, grid_for((size_t)S * Hi, 256), 256, 0, g->st, g->wts, (size_t)S * Hi, wscale);
    LAUNCHED("k_iq_prep");
    int rc = indexer_scores(g, L, S, i8, e);
    return rc ? rc
              : cuda_engine_topk(g->score, g->score_ld, g->dpos, S, g->max_ctx / 4, K, g->sel, g->topk_scratch, g->st,
                                 e);
}

static int attention(struct cuda_engine *g, int l, int S, struct ctx_err *e)
{
    const struct inf_config *c = &g->c;
    struct dlayer *L = &g->L[l];
    int H = c->num_attention_heads, d = c->head_dim, rd = c->qk_rope_head_dim, Lq = c->q_lora_rank;
    int W = c->sliding_window, G = c->o_groups, R = c->o_lora_rank, di = c->index_head_dim, Hi = c->index_n_heads;
    float eps = (float)c->rms_norm_eps;
    const float *rope = g->rope[L->ratio ? 1 : 0];
    const float *a = g->u;
    int rc;
    // decode steps (S <= CMP_MIN_S), by the ATTN_* bits: the compressors of CSA / HCA layers run on the
    // second stream g->ast while the queries are prepared (they need only the bf16 products of `a`),
    // joined back before the indexer (its compressor) and before the attention core (the main one);
    // the ring update rides in k_attn_combine and the weights' scaling in k_iq_prep; the score and
    // P.V grids fit the device.
    // side (ATTN_SIDE for CSA layers, ATTN_SIDE_HCA for HCA ones, steps of one or two tokens): the compressors'
    // bf16 products move to ast too, forked at the top (they read only `a`, which the mHC pre wrote),
    // and a CSA layer's indexer (its query product, k_iq_prep, the scores and the top-k) runs on the
    // third stream g->ist from the normalised cq on, so that wq_b and k_q_prep on st overlap it; st
    // joins both before the attention core (aev[2] after the main compressor, aev[4] after the top-k).
    // The buffers each stream writes are read only by that stream or after a join (ctmp, itmp, wts,
    // the caches on ast; qI, qi8 / qix, score, sel on ist; cq, Q, kv on st, read by ist after aev[3]).
    // One or two tokens only: these products then need no scratch shared with st (lin_fp8's other paths
    // stage through q8 / sa / o16). Not while profiling, whose stage times come from events on st. Measured
    // (bench-gpu-engine --attn-ab, 2026-11-29, flash4): ~10 us a CSA layer, ~8.5 us an HCA one.
    int dec = S <= CMP_MIN_S, fork = dec && (g->attn_fuse & ATTN_FORK) && L->ratio;
    int fold = dec && (g->attn_fuse & ATTN_FOLD), shapes = dec && (g->attn_fuse & ATTN_SHAPES);
    // Two tokens too (a speculative step) where the indexer's query product takes them in one fused launch
    // (cuda_fp8_gemv_f32m: no scratch either).
    const int side_s = S == 1 || (S == 2 && (L->ratio != 4 || cuda_fp8_gemv_f32_fits(2, L->i_wq_b.n, L->i_wq_b.k)));
    const int side = fork && side_s && (g->attn_fuse & (L->ratio == 4 ? ATTN_SIDE : ATTN_SIDE_HCA)) && !g->prof_active;
    float hsc = (float)(1.0 / sqrt((double)di));
    if (side && (rc = stream_fork(g, g->ast, g->aev[0], e)))
        return rc;
    if ((rc = lin_fp8_split(g, &L->wqkv, a, S, L->wq_a.n, g->cq, g->kv, e)))
        return rc;
    if (L->ratio) { // the compressor's (and the indexer's) bf16 products of `a` in one launch
        lin_out o;
        memset(&o, 0, sizeof o);
        const struct dlin *parts[5] = {&L->c_wkv, &L->c_wgate, &L->ic_wkv, &L->ic_wgate, &L->i_wproj};
        float *ys[5] = {g->ctmp, g->ctmp2, g->itmp, g->itmp2, g->wts};
        o.nseg = L->ratio == 4 ? 5 : 2;
        for (int j = 0, off = 0; j < o.nseg; off += parts[j]->n, j++) {
            o.off[j] = off;
            o.n[j] = parts[j]->n;
            o.y[j] = ys[j];
            o.bf[j] = j == 4;
        }
        stream_swap sw(g, side ? g->ast : g->st); // side: on ast, the first launch after its wait: plain
        if (side)
            cuda_pdl_plain_next();
        rc = cbf_lt(g, L, a, S, o, e);
        if (rc == 1)
            rc = lin_bf16_out(g, &L->cbf, a, S, o, e);
        if (rc)
            return rc;
    }
    if (fork) { // indexer compressor first (needed first), then the main one; each records its join event
        if (!side && (rc = stream_fork(g, g->ast, g->aev[0], e))) // (side: forked at the top)
            return rc;
        if (L->ratio == 4) {
            compress_launch(g, g->itmp, g->itmp2, S, 4, di, 128, L->ic_ape, L->ic_norm, eps, 1, L->ic_kv, L->ic_sc,
                            L->icache, L->ik8, L->ikx, rope, rd, hsc, g->ast);
            if ((rc = cu(e, cudaEventRecord(g->aev[1], g->ast), "attention: indexer compressor")))
                return rc;
        }
        compress_launch(g, g->ctmp, g->ctmp2, S, L->ratio, d, 512, L->c_ape, L->c_norm, eps, 0, L->c_kv, L->c_sc,
                        L->cache, nullptr, nullptr, rope, rd, 0.f, g->ast);
        if ((rc = cu(e, cudaEventRecord(g->aev[2], g->ast), "attention: compressor")))
            return rc;
        LAUNCHED("k_compress (second stream)");
    }
    // q_lora_rank 1024: one element a thread
    if ((g->attn_fuse & ATTN_LAT) && Lq <= 2 * 1024)
        launch_pdl(k_rmsnorm_r<2>, S, 1024, 0, g->st, g->cq, L->q_norm, Lq, eps, g->cq);
    else
        launch_pdl(k_rmsnorm, S, 1024, 0, g->st, g->cq, L->q_norm, Lq, eps, g->cq);
    int K = 0;
    const float wscale = (float)(pow((double)di, -0.5) * pow((double)Hi, -0.5));
    if (side && L->ratio == 4) { // the indexer on ist: from cq (aev[3]) and the indexer compressor (aev[1])
        K = c->index_topk;
        if ((rc = stream_fork(g, g->ist, g->aev[3], e)))
            return rc;
        stream_swap sw(g, g->ist);
        cuda_pdl_plain_next(); // the first launch after ist's wait
        if ((rc = lin_fp8(g, &L->i_wq_b, g->cq, S, g->qI, e)) ||
            (rc = cu(e, cudaStreamWaitEvent(g->ist, g->aev[1], 0), "attention: indexer join")) ||
            (rc = indexer_run(g, L, S, 0, fold, wscale, hsc, rope, K, e)) ||
            (rc = cu(e, cudaEventRecord(g->aev[4], g->ist), "attention: indexer")))
            return rc;
    }
    // prefill: the queries' norm and RoPE a warp a head (k_q_prep_w); as bf16 (q16) where k_attn_hsw
    // takes them, and then (q16in) wq_b writes them as bf16 into q16 too, which k_q_prep_w reads and
    // rewrites in place: the values fp32 Q would hold (cuBLASLt's products are bf16), in half the bytes
    const int qpw = !dec && d == QPW_D && rd % 32 == 0 && rd <= d && (g->attn_fuse & ATTN_QPREP_W);
    uint16_t *q16 = nullptr;
    if (qpw && S > ATC_MIN_S && d == ATC_D && g->q16 && attn_q16_switch.on() &&
        attn_hsw_runs(H, W, L->ratio, g->c16, g->c16_rows, L->ratio ? (g->pos + S) / L->ratio : 0))
        q16 = g->q16;
    const int q16in = q16 && q16in_switch.on();
    if ((rc = q16in ? lin_fp8_16(g, &L->wq_b, g->cq, S, q16, e) : lin_fp8(g, &L->wq_b, g->cq, S, g->Q, e)))
        return rc;
    if (L->ratio == 4 && !side && (rc = lin_fp8(g, &L->i_wq_b, g->cq, S, g->qI, e)))
        return rc;
    prof_mark(g, CUDA_PROF_ATTN_PROJ);
    if (qpw && qprep_rows_switch.on()) {
        launch_pdl(k_q_prep_w<true>, (unsigned)(S + (S * H + QPR_HPB - 1) / QPR_HPB), 512, 0, g->st, g->Q,
                   S, H, rd, eps, rope, g->dpos, g->kv, L->kv_norm, q16, q16in);
    } else if (qpw) {
        launch_pdl(k_q_prep_w<false>, (unsigned)(S + (S * H + QPW_HPB - 1) / QPW_HPB), 512, 0, g->st, g->Q,
                   S, H, rd, eps, rope, g->dpos, g->kv, L->kv_norm, q16, q16in);
    } else
        launch_pdl((g->attn_fuse & ATTN_LAT) ? k_q_prep<true> : k_q_prep<false>, S + S * H, 512, sizeof(float) * d, g->st,
                   g->Q, S, H, d, rd, eps, rope, g->dpos, g->kv,
                   L->kv_norm);
    LAUNCHED("attention prep");
    prof_mark(g, CUDA_PROF_ATTN_PREP);
    if (L->ratio && !side) {
        if (!fork) {
            compress_launch(g, g->ctmp, g->ctmp2, S, L->ratio, d, 512, L->c_ape, L->c_norm, eps, 0, L->c_kv, L->c_sc,
                            L->cache, nullptr, nullptr, rope, rd, 0.f);
            if (L->ratio == 4)
                compress_launch(g, g->itmp, g->itmp2, S, 4, di, 128, L->ic_ape, L->ic_norm, eps, 1, L->ic_kv, L->ic_sc,
                                L->icache, L->ik8, L->ikx, rope, rd, hsc);
            LAUNCHED("k_compress");
        }
        prof_mark(g, CUDA_PROF_COMPRESS);
        if (L->ratio == 4) {
            // fork: join the indexer compressor, k_iq_prep a plain launch after it; fold: it scales wts too
            K = c->index_topk;
            if ((fork && (rc = cu(e, cudaStreamWaitEvent(g->st, g->aev[1], 0), "attention: join"))) ||
                (rc = indexer_run(g, L, S, !fork, fold, wscale, hsc, rope, K, e)))
                return rc;
            prof_mark(g, CUDA_PROF_INDEXER);
        }
    }
    if (side && L->ratio == 4 && (rc = cu(e, cudaStreamWaitEvent(g->st, g->aev[4], 0), "attention: indexer join")))
        return rc;
    int nmaxe = W + (L->ratio == 4 ? K : L->ratio ? (int)(g->max_ctx / L->ratio) : 0);
    int tc = S > ATC_MIN_S && d == ATC_D; // prefill chunks: tensor cores, one block per (token, 64 heads)
    // k_attn_hsw writes O's bf16 bits straight into o16 (free here) when wo_a runs on cuBLASLt
    const bool lt_wo = wo_a_lt_ready(g, S, G, R, H * d / G);
    int staged = 0;
    uint16_t *const o16 = tc && attn_o16_switch.on() && lt_wo ? g->o16 : nullptr;
    if (tc && (rc = attn_tc_launch(g->Q, g->kv, L->ring, L->cache, g->sel, S, H, W, L->ratio, K,
                                   g->dpos, 1.0f / sqrtf((float)d), L->sink, rope, rd, g->O, g->c16,
                                   g->c16_rows, L->ratio ? (g->pos + S) / L->ratio : 0, g->st, e,
                                   -1, o16, &staged, q16, g->q16, g->o16)))
        return rc;
    // decode on tensor cores (ATTN_TC, head_dim 512): k_attn_dtc's runs, then the combine
    const int dtc = dec && !tc && d == ATC_D && (g->attn_fuse & ATTN_TC), step = dtc ? ATT_TOKENS_TC : ATT_TOKENS;
    // fused decode (S <= CMP_MIN_S <= step: one pass of the loop below): the ring update in the combine
    int ring_fused = fold && !tc && S <= step;
    if (fork && (rc = cu(e, cudaStreamWaitEvent(g->st, g->aev[2], 0), "attention: join")))
        return rc;
    for (int s0 = 0; s0 < S && !tc; s0 += step) { // decode: many blocks a token
        int ns = S - s0 < step ? S - s0 : step;
        int ng = (H + ATT_HB - 1) / ATT_HB;
        // the first launch after the join (fork) is a plain one: it waits for both streams in full
        if (dtc) {
            dim3 grid((unsigned)att_nsplit_host_m(nmaxe, ATT_MAXSPLIT_TC), (unsigned)ns, (unsigned)((H + 15) / 16));
            launch_att(!(fork && s0 == 0), (g->attn_fuse & ATTN_LAT) ? k_attn_dtc<true> : k_attn_dtc<false>, grid, 128,
                       ATD_SMEM, g->st, g->Q, g->kv, L->ring, L->cache, g->sel, s0, H, W, L->ratio, K, g->dpos,
                       1.0f / sqrtf((float)d), g->apart);
        } else {
            struct att_shape sh = att_shape_for(g, ns, H, nmaxe, L->ratio == 0 || L->ratio == 4, shapes);
            launch_att(!(fork && s0 == 0), k_attn_score, sh.sgrid, sh.sthreads, 0, g->st, g->Q, g->kv, L->ring,
                       L->cache, g->sel, s0, ns, H, d, W, L->ratio, K, g->dpos, 1.0f / sqrtf((float)d), g->asc,
                       g->asc_ld, sh.epb_max, sh.epb_min, sh.target, sh.hpb_min);
            attn_pv_launch(shapes, sh.ngr, dim3((unsigned)(ns * ng), (unsigned)sh.ny), g->st, g->kv, L->ring,
                           L->cache, g->sel, s0, H, d, W, L->ratio, K, g->dpos, g->asc, g->asc_ld, g->apart);
        }
        // ATTN_LAT: the combine unrolled to the runs k_attn_dtc's grid can write (its x), not to 32
        const int runs = dtc && (g->attn_fuse & ATTN_LAT) ? att_nsplit_host_m(nmaxe, ATT_MAXSPLIT_TC) : ATT_COMBINE_MS;
        void (*const comb)(const float *, int, int, int, int, int, int, const long long *, const float *,
                           const float *, int, float *, const float *, float *, int, int) =
            runs <= 2    ? k_attn_combine<2>
            : runs <= 4  ? k_attn_combine<4>
            : runs <= 8  ? k_attn_combine<8>
            : runs <= 16 ? k_attn_combine<16>
                         : k_attn_combine<ATT_COMBINE_MS>;
        launch_pdl(comb, (unsigned)(ns * H), 512, sizeof(float) * d, g->st, g->apart, s0, H, d, W, L->ratio, K, g->dpos,
                   L->sink, rope, rd, g->O, g->kv, ring_fused ? L->ring : (float *)nullptr, S,
                   dtc ? ATT_MAXSPLIT_TC : ATT_MAXSPLIT);
    }
    int nring = S < W ? S : W;
    if (!ring_fused)
        launch_pdl(k_ring_update, nring, 256, 0, g->st, g->kv, L->ring, S, g->dpos, W, d);
    LAUNCHED("attention core");
    prof_mark(g, CUDA_PROF_ATTN_CORE);
    // wo_a: O (bf16-valued) staged in o16 (free here: wo_b's product writes it after) for the GEMM
    if ((rc = wo_a_lt(g, L, S, G, R, H * d / G, lt_wo, staged, e)) == 1 &&
        (rc = wo_a_launch(L->wo_a.w, L->wo_a.s, g->O, S, G, R, H * d / G, g->Z, g->o16,
                          g->lin_blocks, dec && !(g->attn_fuse & ATTN_WOA_RING) ? 3 : 0, g->st, e)))
        return rc;
    if (rc)
        return rc;
    rc = lin_fp8(g, &L->wo_b, g->Z, S, g->f, e);
    prof_mark(g, CUDA_PROF_ATTN_OUT);
    return rc;
}

#define MOE_GEMM_MIN_S 8
// The grouped GEMM kernel of prefill chunks with the engine's fast (cuBLASLt) products: FP8 wgmma,
// V7, or V9 (V7's bytes, CTAs of 128 pairs with a producer warpgroup converting the weights) where a
// chunk's experts average more than one 64-pair tile (S k > 64 E: Flash's 4096-token chunks), so that a
// row's conversion serves up to 128 pairs. V9 replaced V8 (the same CTAs, each warp converting its own
// rows) in 2026-11-30's nineteenth session: 3.78 against 4.08 ms a V4-Flash layer at S = 4096.
#define MOE_GEMM_FAST CUDA_MOE_GEMM_V7
#define MOE_GEMM_FAST_WIDE CUDA_MOE_GEMM_V9
// MOE_SIDE: the shared expert of a decode step on the side stream mst, in parallel with the gate,
// the router and the routed experts on st (the gate and the one-block router leave most SMs idle, the
// routed FP4 GEMVs leave bandwidth unused). Forked here, right after k_hc_pre wrote u (the only input);
// moe() joins it (mev[1]) before the combine, the one reader of its output sy16. The launches of the
// serial path with the side stream's own q8s / sas instead of q8 / sa: k_act_quant_f32 over S rows
// writes the bytes of rows [0, S) of moe()'s 2S-row launch (a row's quantisation reads that row only),
// and the two products and the SwiGLU are the same calls on them, so the same bits. The first launch
// is plain: its dependency on k_hc_pre is the event's, a full one.
static int moe_shared_side(struct cuda_engine *g, const struct dlayer *L, int S, struct ctx_err *e)
{
    const struct inf_config *c = &g->c;
    int D = c->hidden_size, SI = c->moe_intermediate_size * c->n_shared_experts, rc;
    if ((rc = cu(e, cudaEventRecord(g->mev[0], g->st), "moe: fork")) ||
        (rc = cu(e, cudaStreamWaitEvent(g->mst, g->mev[0], 0), "moe: fork")))
        return rc;
    k_act_quant_f32<<<(unsigned)(((long long)S * (D / 128) + 7) / 8), 256, 0, g->mst>>>(g->u, S, S, D, g->q8s, g->sas);
    LAUNCHED("moe shared: k_act_quant_f32");
    if ((rc = cuda_fp8_gemv(g->q8s, g->sas, S, L->sw13.w, L->sw13.s, L->sw13.n, L->sw13.k, g->sg16, g->mst, e)))
        return rc;
    swiglu_launch(g->mst, g->sg16, g->sg16 + SI, 2 * SI, S, SI, nullptr, (float)c->swiglu_limit, g->q8s, g->sas);
    LAUNCHED("moe shared: swiglu");
    if ((rc = cuda_fp8_gemv(g->q8s, g->sas, S, L->sw2.w, L->sw2.s, L->sw2.n, L->sw2.k, g->sy16, g->mst, e)))
        return rc;
    return cu(e, cudaEventRecord(g->mev[1], g->mst), "moe: join");
}

// defer: leave the combine to the next site's k_hc_mixpre (block_site, hc_pfuse).
static int moe(struct cuda_engine *g, int l, int S, int defer, struct ctx_err *e)
{
    const struct inf_config *c = &g->c;
    struct dlayer *L = &g->L[l];
    int E = c->n_routed_experts, k = c->num_experts_per_tok, D = c->hidden_size, I = c->moe_intermediate_size;
    int SI = I * c->n_shared_experts, rc;
    float lim = (float)c->swiglu_limit;
    if (I % 128 || SI % 128)
        return ctx_err_set(e, CTX_EINVAL, "moe: intermediate sizes %d, %d are not multiples of 128", I, SI);
    const int side = (g->moe_mode & MOE_SIDE) && S <= MOE_SIDE_MAX_S;
    // where the shared expert forks: 0 before the gate, 1 after the gate's launch, 2 after the router's
    const int fork_at = !side ? -1 : (g->moe_mode & MOE_FORK_ROUTE) ? 2 : (g->moe_mode & MOE_FORK_GATE) ? 1 : 0;
    if (fork_at == 0 && (rc = moe_shared_side(g, L, S, e)))
        return rc;
    if ((rc = lin_bf16(g, &L->gate, g->u, S, g->logit, 0, e)))
        return rc;
    if (fork_at == 1 && (rc = moe_shared_side(g, L, S, e)))
        return rc;
    int func = c->scoring_func == INF_SCORE_SOFTMAX ? 0 : c->scoring_func == INF_SCORE_SIGMOID ? 1 : 2;
    // the routing, and the quantisation of u (twice: w1 and w3 rows) for the routed experts: with
    // MOE_ROUTE_AQ one launch, its blocks past the S routing blocks running k_act_quant_f32's warps
    const unsigned rthreads = E > 256 ? 512 : 256, aq_warps = (unsigned)(2 * S * (D / 128));
    const unsigned aq_blocks = (g->moe_mode & MOE_ROUTE_AQ) ? (aq_warps + rthreads / 32 - 1) / (rthreads / 32) : 0;
    launch_pdl(k_route, (unsigned)S + aq_blocks, rthreads, 0, g->st, g->logit, S, E, k, func,
               L->hash ? NULL : L->gate_bias, L->hash ? L->tid2eid : NULL, g->tok, (float)c->routed_scaling_factor,
               g->ri, g->rw, g->u, D, g->q8, g->sa, (g->moe_mode & MOE_ROUTE_REG) ? 1 : 0);
    if (!aq_blocks)
        launch_pdl(k_act_quant_f32, (unsigned)((2LL * S * (D / 128) + 7) / 8), 256, 0, g->st, g->u, S, 2 * S, D, g->q8,
                   g->sa);
    LAUNCHED("moe routing");
    if (fork_at == 2 && (rc = moe_shared_side(g, L, S, e)))
        return rc;
    prof_mark(g, CUDA_PROF_MOE_ROUTE);
    // w1 and w3 of the routed experts in one grouped product (pairs [0, S*k): w1 on input rows [0, S);
    // [S*k, 2*S*k): w3 on the copy, rows [S, 2S)), then (without MOE_SIDE) the shared expert's w1|w3 on
    // rows [0, S)
    // A prefill chunk (S > MOE_GEMM_MIN_S: every chunk size the chunk-invariance guarantee covers takes
    // the same path) buckets its pairs by expert and runs the grouped GEMM of moe_gemm.h, which reads
    // each expert's weights once per 64-pair tile (V9: per 128); a decode step (S <= 8) keeps the grouped
    // GEMV. The exact-sum kernel (V6, with CTX_CUDA_PREFILL_GEMM=exact) agrees with the GEMV within
    // moe_gemm.h's bound of the exact sums; the FP8 one (V7, or V9 for wide chunks: V7's bytes, with the
    // cuBLASLt products) within EPS7 of them. Every chunk of more than 8 tokens gives the bytes of the same
    // kernel, so chunked prefills stay bit-identical.
    const uint8_t *const *t = L->etab;
    uint16_t *u16 = g->g16 + (size_t)S * k * I;
    const int grouped = S > MOE_GEMM_MIN_S;
    // the grouped GEMM's kernel: the FP8 one (V7, V9 when the experts average more than one 64-pair
    // tile) with the cuBLASLt products, the exact-sum one (V6) with CTX_CUDA_PREFILL_GEMM=exact;
    // CTX_CUDA_MOE_GEMM forces one (moe_gemm.h)
    const int forced = cuda_moe_gemm_forced_variant();
    const int wide = (long long)S * k > (long long)CUDA_MOE_BM * E;
    const int mv = forced != CUDA_MOE_GEMM_UNSET ? forced
                   : g->lt && g->lt_on             ? (wide ? MOE_GEMM_FAST_WIDE : MOE_GEMM_FAST)
                                                   : CUDA_MOE_GEMM_DEFAULT;
    struct cuda_moe_buckets b13, b2;
    if (grouped)
        rc = cuda_moe_buckets_init(&b13, g->moe_s13, g->moe_b13, 2 * E, 2 * S * k, e);
    if (!rc && grouped && !(rc = cuda_moe_bucket(&b13, g->ri, g->st, e)))
        rc = cuda_moe_gemm_variant(&b13, g->q8, g->sa, k, t, t + 2 * E, I, D, g->g16, mv, g->st, e);
    if (!rc && !grouped)
        rc = cuda_fp4_gemv_grouped(g->q8, g->sa, k, 2 * S * k, g->ri, t, t + 2 * E, I, D, g->g16, g->st, e);
    if (rc || (!side && (rc = lin_fp8_q(g, &L->sw13, S, g->sg16, e))))
        return rc;
    // SwiGLU fused with the quantisation of its output (k_swiglu_quant), the routed rows, then, after
    // their w2 product has read q8, the shared expert's (on the side stream: its own q8s).
    swiglu_launch(g->st, g->g16, u16, I, S * k, I, g->rw, lim, g->q8, g->sa);
    LAUNCHED("swiglu");
    if (grouped) {
        if (!(rc = cuda_moe_buckets_init(&b2, g->moe_s2, g->moe_b2, E, S * k, e)) &&
            !(rc = cuda_moe_bucket(&b2, g->ri, g->st, e)))
            rc = cuda_moe_gemm_variant(&b2, g->q8, g->sa, 1, t + 4 * E, t + 5 * E, D, I, g->ys16, mv, g->st, e);
    } else {
        rc = cuda_fp4_gemv_grouped(g->q8, g->sa, 1, S * k, g->ri, t + 4 * E, t + 5 * E, D, I, g->ys16, g->st, e);
    }
    if (rc)
        return rc;
    if (!side) {
        swiglu_launch(g->st, g->sg16, g->sg16 + SI, 2 * SI, S, SI, nullptr, lim, g->q8, g->sa);
        LAUNCHED("swiglu shared");
        if ((rc = lin_fp8_q(g, &L->sw2, S, g->sy16, e)))
            return rc;
    } else if ((rc = cu(e, cudaStreamWaitEvent(g->st, g->mev[1], 0), "moe: join"))) {
        return rc;
    }
    prof_mark(g, CUDA_PROF_MOE_EXPERTS);
    if (defer) // the next site's k_hc_mixpre forms the combine's outputs itself (hc_prev)
        return 0;
    // the combine; after the join a plain launch (a full dependency on both streams' last kernels)
    const int c4 = (g->moe_mode & MOE_COMBINE4) && D % 4 == 0 && k <= 16;
    const unsigned cgrid = c4 ? grid_for((size_t)S * (D / 4), 64) : grid_for((size_t)S * D, 256);
    if (c4 && side && k <= 8)
        k_moe_combine4<8><<<cgrid, 64, 0, g->st>>>(g->ys16, g->ri, g->sy16, S, k, D, g->f);
    else if (c4 && side)
        k_moe_combine4<16><<<cgrid, 64, 0, g->st>>>(g->ys16, g->ri, g->sy16, S, k, D, g->f);
    else if (c4 && k <= 8 && S > 8 && D % 16 == 0 && combine16_switch.on()) // prefill chunks: 16 outputs a thread
        launch_pdl(k_moe_combine16<8>, grid_for((size_t)S * (D / 16), 64), 64, 0, g->st, g->ys16, g->ri, g->sy16, S, k,
                   D, g->f);
    else if (c4 && k <= 8)
        launch_pdl(k_moe_combine4<8>, cgrid, 64, 0, g->st, g->ys16, g->ri, g->sy16, S, k, D, g->f);
    else if (c4)
        launch_pdl(k_moe_combine4<16>, cgrid, 64, 0, g->st, g->ys16, g->ri, g->sy16, S, k, D, g->f);
    else if (side)
        k_moe_combine<<<cgrid, 256, 0, g->st>>>(g->ys16, g->ri, g->sy16, S, k, D, g->f);
    else
        launch_pdl(k_moe_combine, cgrid, 256, 0, g->st, g->ys16, g->ri, g->sy16, S, k, D, g->f);
    LAUNCHED("moe combine");
    prof_mark(g, CUDA_PROF_MOE_COMBINE);
    return 0;
}

// The bf16 streams of prefill forwards (CTX_CUDA_X16=0 or cuda_engine_x16_mode(0): floats throughout; the same
// bits either way): chunks of more than HCM_MIN_S tokens with hc = 4 (HCM_NM mixes) and D % 8 == 0 on the
// prefill mHC kernels (k_hc_mix4, k_hc_sink4 + k_hc_pre<4, 1>, k_hc_post4v), not the legacy path.
static env_switch x16_switch{"CTX_CUDA_X16"};
// k_hc_pre4q for prefill's pre (CTX_CUDA_HC_PRE4Q=0: k_hc_pre<4, 1>; the same bits)
static env_switch pre4q_switch{"CTX_CUDA_HC_PRE4Q"};
extern "C" void cuda_engine_pre4q_mode(int on) { pre4q_switch.set(on); }
extern "C" void cuda_engine_x16_mode(int on) { x16_switch.set(on); }
static int x16_use(const struct cuda_engine *g, int S)
{
    const struct inf_config *c = &g->c;
    return g->X16 && S > HCM_MIN_S && c->hc_mult == 4 && !g->cp_legacy && c->hidden_size % 8 == 0 && x16_switch.on();
}

// hook: forward_queue hands each block's streams to a callback (no post left to the next site then).
static int block_site(struct cuda_engine *g, int l, int site, int S, int hook, struct ctx_err *e)
{
    const struct inf_config *c = &g->c;
    struct dlayer *L = &g->L[l];
    int hc = c->hc_mult, D = c->hidden_size, nm = (2 + hc) * hc, rc;
    float eps = (float)c->rms_norm_eps;
    // decode kernels (hc = 4): the Sinkhorn, post and comb on the side stream (k_hc_sink4: k_hc_pre's
    // bits) while the sub-layer runs, since only post needs them; pre then computes pre, u and its norm
    const int dec4 = hc == 4 && (S <= HCM_MIN_S || g->cp_legacy), side = dec4 && g->hc_side;
    float *po = side ? nullptr : g->post, *co = side ? nullptr : g->comb;
    // the previous site's post (and combine) left to this launch (hc_pfuse): from xcur into the other buffer
    const int pf = dec4 && g->hc_fuse && g->hc_pfuse && S <= HCM_MIN_S && !hook;
    hc_prev pv = {};
    if (g->pend) {
        if (!pf)
            return ctx_err_set(e, CTX_EINTERNAL, "cuda engine: a deferred mHC post without the fused path");
        pv.X0 = g->xcur;
        pv.post = g->post;
        pv.comb = g->comb;
        if (g->pend == 2) {
            pv.ys = g->ys16;
            pv.sy = g->sy16;
            pv.ri = g->ri;
            pv.k = c->num_experts_per_tok;
        } else {
            pv.f = g->f;
        }
        g->xcur = g->xcur == g->X ? g->Xb : g->X;
        g->pend = 0;
    }
    float *X = g->xcur;
    const uint16_t *const site_norm = site ? L->ffn_norm : L->attn_norm;
    // a prefill forward's streams as bf16 bits (forward_queue: x16), for the kernels below that take them
    uint16_t *const X16 = g->x16 && hc == 4 && !dec4 && nm == HCM_NM && S > HCM_MIN_S ? g->X16 : nullptr;
    if (g->x16 && !X16)
        return ctx_err_set(e, CTX_EINTERNAL, "cuda engine: bf16 streams on a path without them");
    if (dec4 && g->hc_fuse) // decode: the mixes and pre in one launch (k_hc_mixpre: k_hc_mix's and k_hc_pre's bits)
        launch_pdl(k_hc_mixpre<4>, dim3((unsigned)g->hc_nch, (unsigned)S), HCP_THREADS, 0, g->st, X, L->hc_fn[site], nm,
                   g->hcpart, g->hccnt, L->hc_scale[site], L->hc_base[site], hc, c->hc_sinkhorn_iters,
                   (float)c->hc_eps, D, po, co, site ? L->ffn_norm : L->attn_norm, eps, g->u, 0, pv, g->hcx);
    else if (S > HCM_MIN_S && nm == HCM_NM && !g->cp_legacy && g->hcx) // prefill HCX: 16 tokens a warp
        if (X16)
            k_hc_mixt<uint16_t><<<dim3((unsigned)g->hc_nch, (unsigned)((S + HCX_TOK - 1) / HCX_TOK)), 32 * HCX_WARPS, 0,
                                  g->st>>>(X16, L->hc_fn[site], S, hc * D, g->hcpart, g->hcx);
        else
            k_hc_mixt<float><<<dim3((unsigned)g->hc_nch, (unsigned)((S + HCX_TOK - 1) / HCX_TOK)), 32 * HCX_WARPS, 0,
                               g->st>>>(X, L->hc_fn[site], S, hc * D, g->hcpart, g->hcx);
    else if (S > HCM_MIN_S && nm == HCM_NM && !g->cp_legacy) // prefill: fn held in shared memory, a thread a token
        if (X16)
            k_hc_mix4<uint16_t><<<dim3((unsigned)g->hc_nch, (unsigned)((S + HCM_TOK - 1) / HCM_TOK)), HCM_TOK, 0,
                                  g->st>>>(X16, L->hc_fn[site], S, hc * D, g->hcpart);
        else
            k_hc_mix4<float><<<dim3((unsigned)g->hc_nch, (unsigned)((S + HCM_TOK - 1) / HCM_TOK)), HCM_TOK, 0,
                               g->st>>>(X, L->hc_fn[site], S, hc * D, g->hcpart);
    else
        launch_pdl(k_hc_mix, dim3((unsigned)g->hc_nch, (unsigned)S), HC_CH, 0, g->st, X, L->hc_fn[site], hc * D, nm,
                   g->hcpart, g->hcx);
    if (dec4 && g->hc_fuse) {
        // pre ran in k_hc_mixpre
    } else if (hc == 4 && S > HCM_MIN_S && !g->cp_legacy) { // prefill: Sinkhorn a warp a token, then u and its norm
        k_hc_sink4<<<(unsigned)((S + HCS_WARPS - 1) / HCS_WARPS), HCS_WARPS * 32, 0, g->st>>>(
            g->hcpart, S, g->hc_nch, L->hc_scale[site], L->hc_base[site], c->hc_sinkhorn_iters, (float)c->hc_eps, D,
            g->post, g->comb, eps);
        if (D % 4 == 0 && D / 4 <= HCP_THREADS && site_norm && pre4q_switch.on()) // 256-thread blocks, the same bits
            if (X16)
                k_hc_pre4q<uint16_t><<<S, HCQ_THREADS, 0, g->st>>>(g->hcpart, g->hc_nch, X16, D, site_norm, eps, g->u);
            else
                k_hc_pre4q<float><<<S, HCQ_THREADS, 0, g->st>>>(g->hcpart, g->hc_nch, X, D, site_norm, eps, g->u);
        else if (X16)
            k_hc_pre<4, 1, uint16_t><<<S, HCP_THREADS, 0, g->st>>>(
                g->hcpart, g->hc_nch, L->hc_scale[site], L->hc_base[site], hc, c->hc_sinkhorn_iters, (float)c->hc_eps,
                X16, D, g->post, g->comb, site ? L->ffn_norm : L->attn_norm, eps, g->u, 0);
        else
            k_hc_pre<4, 1><<<S, HCP_THREADS, 0, g->st>>>(g->hcpart, g->hc_nch, L->hc_scale[site], L->hc_base[site], hc,
                                                         c->hc_sinkhorn_iters, (float)c->hc_eps, X, D, g->post, g->comb,
                                                         site ? L->ffn_norm : L->attn_norm, eps, g->u, 0);
    } else if (hc == 4)
        launch_pdl(k_hc_pre<4>, S, HCP_THREADS, 0, g->st, g->hcpart, g->hc_nch, L->hc_scale[site], L->hc_base[site], hc,
                   c->hc_sinkhorn_iters, (float)c->hc_eps, X, D, po, co, site ? L->ffn_norm : L->attn_norm, eps, g->u,
                   0);
    else
        launch_pdl(k_hc_pre<0>, S, HCP_THREADS, 0, g->st, g->hcpart, g->hc_nch, L->hc_scale[site], L->hc_base[site], hc,
                   c->hc_sinkhorn_iters, (float)c->hc_eps, X, D, g->post, g->comb, site ? L->ffn_norm : L->attn_norm,
                   eps, g->u, 0);
    LAUNCHED("mhc pre");
    if (side) { // fork after pre (the partials are complete), join before post; plain launch on hst
        if ((rc = cu(e, cudaEventRecord(g->hfork, g->st), "mHC fork")) ||
            (rc = cu(e, cudaStreamWaitEvent(g->hst, g->hfork, 0), "mHC fork")))
            return rc;
        k_hc_sink4<<<(unsigned)((S + HCS_WARPS - 1) / HCS_WARPS), HCS_WARPS * 32, 0, g->hst>>>(
            g->hcpart, S, g->hc_nch, L->hc_scale[site], L->hc_base[site], c->hc_sinkhorn_iters, (float)c->hc_eps, D,
            g->post, g->comb, eps);
        LAUNCHED("mhc sinkhorn");
        if ((rc = cu(e, cudaEventRecord(g->hjoin, g->hst), "mHC join")))
            return rc;
    }
    prof_mark(g, CUDA_PROF_HC);
    // this site's post (and combine) left to the next site's k_hc_mixpre when there is one in this forward
    const int defer = pf && !(l == g->lastl && site == 1);
    // the combine too, for k <= 8 (k_hc_mixpre's rows); else moe() combines into f
    const int defer_combine = defer && site && c->num_experts_per_tok <= 8;
    rc = site ? moe(g, l, S, defer_combine, e) : attention(g, l, S, e);
    if (rc)
        return rc;
    if (side && (rc = cu(e, cudaStreamWaitEvent(g->st, g->hjoin, 0), "mHC join")))
        return rc;
    if (defer) {
        g->pend = defer_combine ? 2 : 1;
        prof_mark(g, CUDA_PROF_HC);
        return 0;
    }
    if (X16)
        launch_pdl(k_hc_post4v, grid_for((size_t)S * D / 8, 256), 256, 0, g->st, X16, (const float *)g->f,
                   (const float *)g->post, (const float *)g->comb, S, D);
    else if (hc == 4)
        launch_pdl(k_hc_post<4>, grid_for((size_t)S * D, 256), 256, 0, g->st, X, g->X, g->f, g->post, g->comb, S, hc, D);
    else
        launch_pdl(k_hc_post<0>, grid_for((size_t)S * D, 256), 256, 0, g->st, X, g->X, g->f, g->post, g->comb, S, hc, D);
    g->xcur = g->X;
    LAUNCHED("mhc post");
    prof_mark(g, CUDA_PROF_HC);
    return 0;
}

// Queues one forward pass of S tokens on the engine's stream (inputs already in g->dio; the input
// streams already in g->X unless embed): the embedding when embed, the engine's blocks, then, when
// want_logits, the head and the logits' copy into g->hlogits. With a hook, a host copy of the streams
// after each block (synchronising). Nothing here allocates or waits otherwise, so that a decode step
// can be captured as a graph.
// hc_head, the final norm and the head on nlog rows of streams from X (rows one after another), with
// the given hc_head weights and norm (the backbone's, or the MTP block's): logits [nlog][V] in g->logits,
// then, with amax, each row's argmax in g->d_amax; the logits (lcopy) and the argmax copied to the
// pinned host buffers. Queued on st.
static int head_queue(struct cuda_engine *g, const float *X, int nlog, const float *fn, const float *base,
                      const float *scale, const uint16_t *normw, int lcopy, int amax, struct ctx_err *e)
{
    const struct inf_config *c = &g->c;
    int rc, hc = c->hc_mult, D = c->hidden_size, V = c->vocab_size;
    float reps = (float)c->rms_norm_eps, heps = (float)c->hc_eps;
    // hc_head: k_hc_mix's chunk partials of the hc mixes, then k_hc_pre's head mode (pre only), a row a
    // block row
    if (hc == 4 && g->hc_fuse) // both in one launch (k_hc_mixpre in head mode: the same bits)
        launch_pdl(k_hc_mixpre<4>, dim3((unsigned)g->hc_nch, (unsigned)nlog), HCP_THREADS, 0, g->st, (float *)X, fn, hc,
                   g->hcpart, g->hccnt, scale, base, hc, 0, heps, D, nullptr, nullptr, normw, reps, g->hidden, 1,
                   hc_prev{}, g->hcx);
    else {
        launch_pdl(k_hc_mix, dim3((unsigned)g->hc_nch, (unsigned)nlog), HC_CH, 0, g->st, X, fn, hc * D, hc, g->hcpart,
                   g->hcx);
        if (hc == 4)
            launch_pdl(k_hc_pre<4>, nlog, HCP_THREADS, 0, g->st, g->hcpart, g->hc_nch, scale, base, hc, 0, heps, X, D,
                       nullptr, nullptr, normw, reps, g->hidden, 1);
        else
            launch_pdl(k_hc_pre<0>, nlog, HCP_THREADS, 0, g->st, g->hcpart, g->hc_nch, scale, base, hc, 0, heps, X, D,
                       nullptr, nullptr, normw, reps, g->hidden, 1);
    }
    LAUNCHED("hc_head");
    struct dlin head = {c->vocab_size, D, (const uint8_t *)g->head, NULL, NULL, 0};
    if ((rc = lin_bf16(g, &head, g->hidden, nlog, g->logits, 0, e)))
        return rc;
    if (amax) {
        launch_pdl(k_argmax_rows, nlog, 1024, 0, g->st, g->logits, V, g->d_amax);
        LAUNCHED("k_argmax_rows");
    }
    prof_mark(g, CUDA_PROF_HEAD);
    if (lcopy && (rc = cu(e, cudaMemcpyAsync(g->hlogits, g->logits, sizeof(float) * (size_t)nlog * V,
                                             cudaMemcpyDeviceToHost, g->st),
                          "logits")))
        return rc;
    if (amax && (rc = cu(e, cudaMemcpyAsync(g->h_amax, g->d_amax, sizeof(int) * (size_t)nlog, cudaMemcpyDeviceToHost,
                                            g->st),
                         "argmax")))
        return rc;
    return 0;
}

// The forward of S tokens over the engine's layers; then, with nlog > 0, the logits of the last nlog
// rows (head_queue: copied to the host when lcopy, their argmax when amax).
// undo: first save the undo record of the last token's position (a speculative step's draft).
static int forward_queue(struct cuda_engine *g, int S, int embed, int nlog, int lcopy, int amax, int undo,
                         cuda_engine_hook hook, void *ud, float *hx, struct ctx_err *e)
{
    const struct inf_config *c = &g->c;
    int rc, hc = c->hc_mult, D = c->hidden_size;
    size_t xn = (size_t)S * hc * D;
    g->cur_layer = c->num_hidden_layers;
    g->xcur = g->X;
    g->pend = 0;
    g->lastl = g->le - 1;
    if (undo) {
        launch_pdl(k_undo, g->undo_n, 256, 0, g->st, (const undo_ent *)g->undo_tab, (const long long *)g->dpos, S - 1,
                   g->undo_buf, 0);
        LAUNCHED("k_undo save");
    }
    if (embed) {
        launch_pdl(k_embed, S, 256, 0, g->st, g->tok, g->embed, hc, D, g->X);
        LAUNCHED("k_embed");
        prof_mark(g, CUDA_PROF_HEAD);
    }
    // prefill: the blocks' streams as bf16 bits (exact: they are bf16 values), narrowed here, widened back
    // after the last block (x16_use)
    const int x16 = !hook && x16_use(g, S);
    if (x16) {
        launch_pdl(k_x_narrow, grid_for(xn / 4, 256), 256, 0, g->st, (const float *)g->X, xn / 4, g->X16);
        LAUNCHED("k_x_narrow");
        g->x16 = 1;
    }
    for (int l = g->lb; l < g->le; l++) {
        g->cur_layer = l;
        if ((rc = block_site(g, l, 0, S, hook != NULL, e)) || (rc = block_site(g, l, 1, S, hook != NULL, e))) {
            g->x16 = 0;
            return rc;
        }
        if (hook) {
            if ((rc = cu(e, cudaMemcpyAsync(hx, g->X, sizeof(float) * xn, cudaMemcpyDeviceToHost, g->st), "hook")) ||
                (rc = cu(e, cudaStreamSynchronize(g->st), "hook")))
                return rc;
            hook(ud, l, hx, S, g->pos);
        }
    }
    if (x16) {
        g->x16 = 0;
        launch_pdl(k_x_widen, grid_for(xn / 4, 256), 256, 0, g->st, (const uint16_t *)g->X16, xn / 4, g->X);
        LAUNCHED("k_x_widen");
    }
    g->cur_layer = c->num_hidden_layers;
    if (nlog > 0)
        return head_queue(g, g->X + (size_t)(S - nlog) * hc * D, nlog, g->hch_fn, g->hch_base, g->hch_scale, g->norm,
                          lcopy, amax, e);
    return 0;
}

// Captures the decode step (input copy from hin slot 0, forward, logits copy when want_logits) once;
// later steps replay it. A step that embeds or wants logits differently from the captured one
// recaptures, and so does one after the PDL switch or the indexer's (cuda_pdl_set, cuda_engine_idx_i8_mode)
// changed. A failed capture leaves
// graph_fail set and the engine on direct launches.
// S = 2 (undo = 1): the speculative step's two-token forward, both rows' argmax and no logits copy,
// as a second graph (gexec2) on the same terms.
static int decode_graph(struct cuda_engine *g, int S, int embed, int want_logits, int lcopy, int amax, int undo,
                        struct ctx_err *e)
{
    const int pdl = cuda_pdl_enabled(), i8 = idx_i8_on();
    cudaGraphExec_t *ex = S == 2 ? &g->gexec2 : &g->gexec;
    if (S == 2 ? g->gexec2 && g->g2pdl == pdl && g->g2i8 == i8
               : g->gexec && g->gembed == embed && g->glogits == want_logits && g->glcopy == lcopy && g->gamax == amax &&
                     g->gpdl == pdl && g->gi8 == i8)
        return 0;
    if (*ex) {
        cudaGraphExecDestroy(*ex);
        *ex = NULL;
    }
    cudaGraph_t graph = NULL;
    int rc = cu(e, cudaStreamBeginCapture(g->st, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
    if (rc)
        return rc;
    int qrc = cu(e, cudaMemcpyAsync(g->dio, g->hin, 8 + sizeof(int) * S, cudaMemcpyHostToDevice, g->st), "inputs");
    if (!qrc)
        qrc = forward_queue(g, S, embed, want_logits ? S : 0, lcopy, amax, undo, NULL, NULL, NULL, e);
    cudaError_t ce = cudaStreamEndCapture(g->st, &graph);
    if (qrc) {
        if (graph)
            cudaGraphDestroy(graph);
        return qrc;
    }
    if ((rc = cu(e, ce, "cudaStreamEndCapture")))
        return rc;
    rc = cu(e, cudaGraphInstantiate(ex, graph, 0), "cudaGraphInstantiate");
    cudaGraphDestroy(graph);
    if (rc)
        *ex = NULL;
    if (S == 2) {
        g->g2pdl = pdl;
        g->g2i8 = i8;
        return rc;
    }
    g->gembed = embed;
    g->glogits = want_logits;
    g->gamax = amax;
    g->glcopy = lcopy;
    g->gpdl = pdl;
    g->gi8 = i8;
    return rc;
}

// Copy of S tokens' streams between devices (a plain device-to-device copy on one device).
static int copy_streams(struct cuda_engine *g, float *dst, int dst_dev, const float *src, int src_dev, int S,
                        struct ctx_err *e)
{
    size_t bytes = sizeof(float) * (size_t)S * g->c.hc_mult * g->c.hidden_size;
    cudaError_t rc = dst_dev == src_dev ? cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, g->st)
                                        : cudaMemcpyPeerAsync(dst, dst_dev, src, src_dev, bytes, g->st);
    return cu(e, rc, "pipeline streams copy");
}

// One forward call: checks, inputs, the graph or direct launches, the io copies and events; with
// sync (a hook or profiling imply it), waits and hands out logits.
// nlog: rows of logits (the last ones; 1 for the API's "logits of the last position"), copied to the
// host and, with sync, into logits [nlog][V]; amax: their argmax too (into amax_out with sync).
// undo (S = 2, a speculative step: both rows' argmax and no logits where the engine ends the model, a
// pipeline stage's streams otherwise): the undo record of the second position saved first, the graph
// gexec2.
static int forward_call(struct cuda_engine *g, const int *tokens, int S, const struct cuda_engine_io *io, int nlog,
                        int amax, int undo, cuda_engine_hook hook, void *ud, int sync, float *logits, int *amax_out,
                        struct ctx_err *e)
{
    const struct inf_config *c = &g->c;
    const int want_logits = nlog > 0, lcopy = want_logits && (!sync || logits); // async: cuda_engine_finish's
    if (nlog < 0 || nlog > S || nlog > LOGIT_ROWS)
        return ctx_err_set(e, CTX_EINVAL, "cuda engine: logits of %d rows of a chunk of %d (at most %d)", nlog, S,
                           LOGIT_ROWS);
    if (S <= 0 || S > g->Smax)
        return ctx_err_set(e, CTX_EINVAL, "cuda engine: chunk of %d tokens (1..%d)", S, g->Smax);
    if (g->pos + S > g->max_ctx)
        return ctx_err_set(e, CTX_ERANGE, "cuda engine: position %lld + %d beyond the engine's context of %lld", g->pos,
                           S, g->max_ctx);
    for (int s = 0; s < S; s++)
        if (tokens[s] < 0 || tokens[s] >= c->vocab_size)
            return ctx_err_set(e, CTX_EINVAL, "cuda engine: token %d at chunk offset %d outside the vocabulary",
                               tokens[s], s);
    int embed = !io || !io->x_in, last = g->le == c->num_hidden_layers;
    if (embed && g->lb > 0)
        return ctx_err_set(e, CTX_EINVAL, "cuda engine: an engine over layers [%d, %d) needs input streams", g->lb,
                           g->le);
    if (want_logits && !last)
        return ctx_err_set(e, CTX_EINVAL, "cuda engine: no logits from an engine over layers [%d, %d) of %d", g->lb,
                           g->le, c->num_hidden_layers);
    sync = sync || hook || g->prof_active;
    int rc, hc = c->hc_mult, D = c->hidden_size;
    if (undo && (S != 2 || logits || (last && (nlog != 2 || !amax))))
        return ctx_err_set(e, CTX_EINTERNAL, "cuda engine: an undo record outside a speculative step");
    int use_graph = (S == 1 || undo) && (want_logits || !last) && !hook && !g->prof_active && g->graph_on &&
                    !g->graph_fail;
    int slot = use_graph ? 0 : g->hslot;
    if (!use_graph)
        g->hslot = (g->hslot + 1) % HIN_SLOTS;
    char *hin = g->hin + (size_t)slot * g->hin_stride;
    if ((rc = cu(e, cudaEventSynchronize(g->hev[slot]), "input slot"))) // its last copy has run
        return rc;
    memcpy(hin, &g->pos, 8);
    memcpy(hin + 8, tokens, sizeof(int) * S);
    if (!embed) {
        if (io->in_ready && (rc = cu(e, cudaStreamWaitEvent(g->st, (cudaEvent_t)io->in_ready, 0), "wait for inputs")))
            return rc;
        if ((rc = copy_streams(g, g->X, g->dev, io->x_in, io->x_in_dev, S, e)))
            return rc;
        if (io->in_free && (rc = cu(e, cudaEventRecord((cudaEvent_t)io->in_free, g->st), "record inputs read")))
            return rc;
    }
    int done = 0;
    if (use_graph) {
        struct ctx_err ge;
        memset(&ge, 0, sizeof ge);
        if (decode_graph(g, S, embed, want_logits, lcopy, amax, undo, &ge)) { // not fatal: direct launches (cuda_engine_graph_state says so)
            g->graph_fail = 1;
            cudaGetLastError();
        }
        cudaGraphExec_t ex = S == 2 ? g->gexec2 : g->gexec;
        if (ex) {
            if ((rc = cu(e, cudaGraphLaunch(ex, g->st), "cudaGraphLaunch")) ||
                (rc = cu(e, cudaEventRecord(g->hev[slot], g->st), "record input slot")))
                return rc;
            done = 1;
        }
    }
    if (!done) {
        if ((rc = cu(e, cudaMemcpyAsync(g->dio, hin, 8 + sizeof(int) * S, cudaMemcpyHostToDevice, g->st), "inputs")) ||
            (rc = cu(e, cudaEventRecord(g->hev[slot], g->st), "record input slot")))
            return rc;
        if (g->prof_active) { // queue everything behind a busy kernel: the events then time GPU work, not launch gaps
            g->nev = 0;
            k_spin<<<1, 1, 0, g->st>>>(20000000LL);
            prof_mark(g, -1);
        }
        float *hx = NULL;
        if (hook && !(hx = (float *)malloc(sizeof(float) * (size_t)S * hc * D)))
            return ctx_err_set(e, CTX_ENOMEM, "cuda engine: out of memory");
        rc = forward_queue(g, S, embed, nlog, lcopy, amax, undo, hook, ud, hx, e);
        free(hx);
        if (rc)
            return rc;
    }
    if (io && io->x_out) {
        if (io->out_free && (rc = cu(e, cudaStreamWaitEvent(g->st, (cudaEvent_t)io->out_free, 0), "wait for output")))
            return rc;
        if ((rc = copy_streams(g, io->x_out, io->x_out_dev, g->X, g->dev, S, e)))
            return rc;
        if (io->out_ready && (rc = cu(e, cudaEventRecord((cudaEvent_t)io->out_ready, g->st), "record output")))
            return rc;
    }
    if (sync) {
        if ((rc = cu(e, cudaStreamSynchronize(g->st), "forward")))
            return rc;
        if (logits && lcopy)
            memcpy(logits, g->hlogits, sizeof(float) * (size_t)nlog * c->vocab_size);
        if (amax_out && amax)
            memcpy(amax_out, g->h_amax, sizeof(int) * (size_t)nlog);
        for (int i = 1; !done && g->prof_active && i < g->nev; i++) {
            float ms = 0.f;
            cudaEventElapsedTime(&ms, g->ev[i - 1], g->ev[i]);
            g->prof_ms[g->evstage[i]] += ms;
            g->prof_layer_ms[g->evlayer[i]] += ms;
        }
    }
    g->last_p0 = g->pos;
    g->last_S = S;
    g->pos += S;
    return 0;
}

extern "C" int cuda_engine_forward(struct cuda_engine *g, const int *tokens, int S, float *logits, struct ctx_err *e)
{
    return cuda_engine_forward_hook(g, tokens, S, logits, NULL, NULL, e);
}

extern "C" int cuda_engine_forward_hook(struct cuda_engine *g, const int *tokens, int S, float *logits,
                                        cuda_engine_hook hook, void *ud, struct ctx_err *e)
{
    dev_guard dg(g->dev);
    return forward_call(g, tokens, S, NULL, logits != NULL, 0, 0, hook, ud, 1, logits, NULL, e);
}

extern "C" int cuda_engine_forward_async(struct cuda_engine *g, const int *tokens, int S,
                                         const struct cuda_engine_io *io, int want_logits, struct ctx_err *e)
{
    dev_guard dg(g->dev);
    return forward_call(g, tokens, S, io, want_logits != 0, 0, 0, NULL, NULL, 0, NULL, NULL, e);
}

extern "C" int cuda_engine_finish(struct cuda_engine *g, float *logits, struct ctx_err *e)
{
    dev_guard dg(g->dev);
    int rc = cu(e, cudaStreamSynchronize(g->st), "forward");
    if (!rc && logits)
        memcpy(logits, g->hlogits, sizeof(float) * g->c.vocab_size);
    return rc;
}

extern "C" int cuda_engine_device(const struct cuda_engine *g) { return g->dev; }

extern "C" void cuda_engine_layers(const struct cuda_engine *g, int *layer_begin, int *layer_end)
{
    if (layer_begin)
        *layer_begin = g->lb;
    if (layer_end)
        *layer_end = g->le;
}

extern "C" void *cuda_engine_stream(const struct cuda_engine *g) { return (void *)g->st; }

extern "C" const float *cuda_engine_streams(const struct cuda_engine *g) { return g->X; }

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

// ---- Logits of several rows, and the MTP block (spec 4.9; issue 10: speculative decoding)

extern "C" int cuda_engine_forward_rows(struct cuda_engine *g, const int *tokens, int S, int rows, float *logits,
                                        int *amax, struct ctx_err *e)
{
    if (rows < 1)
        return ctx_err_set(e, CTX_EINVAL, "cuda engine: logits of %d rows", rows);
    dev_guard dg(g->dev);
    return forward_call(g, tokens, S, NULL, rows, amax != NULL, 0, NULL, NULL, 1, logits, amax, e);
}

// [pos, tokens[0..S)] into the device inputs (dio) through the next pinned slot, as forward_call's direct
// launches stage them.
static int stage_inputs(struct cuda_engine *g, long long pos, const int *tokens, int S, struct ctx_err *e)
{
    int slot = g->hslot, rc;
    g->hslot = (g->hslot + 1) % HIN_SLOTS;
    char *hin = g->hin + (size_t)slot * g->hin_stride;
    if ((rc = cu(e, cudaEventSynchronize(g->hev[slot]), "input slot"))) // its last copy has run
        return rc;
    memcpy(hin, &pos, 8);
    memcpy(hin + 8, tokens, sizeof(int) * S);
    if ((rc = cu(e, cudaMemcpyAsync(g->dio, hin, 8 + sizeof(int) * S, cudaMemcpyHostToDevice, g->st), "inputs")))
        return rc;
    return cu(e, cudaEventRecord(g->hev[slot], g->st), "record input slot");
}

// The MTP block on rows [row0, row0 + S) of the last forward call's output streams X (positions
// last_p0 + row0 ..), as inference/model.c's inf_model_mtp: E = enorm(embed(next token)), each stream
// hnorm'd, X0 = bf16(e_proj E + h_proj H) into X, the block (a sliding layer, L[le], its own window ring),
// then its hc_head and norm and the backbone's head on the last row. In pieces of Smax / hc rows (h_proj
// runs on every stream: hc rows a token, within the scratch of Smax rows); a piece's X0 goes to rows
// [0, piece), which no later piece reads (their rows start at piece or beyond). X holds the MTP's
// streams afterwards, so last_S drops to 0.
extern "C" int cuda_engine_mtp(struct cuda_engine *g, int row0, const int *next_tokens, int S, float *logits,
                               int *draft, struct ctx_err *e)
{
    const struct inf_config *c = &g->c;
    if (!g->mtp)
        return ctx_err_set(e, CTX_EINVAL, "cuda engine: no MTP block (the engine was created without opts.mtp)");
    if (S <= 0 || row0 < 0 || row0 + S > g->last_S)
        return ctx_err_set(e, CTX_EINVAL,
                           "cuda engine: MTP rows [%d, %d) outside the %d output rows of the last forward call", row0,
                           row0 + S, g->last_S);
    for (int s = 0; s < S; s++)
        if (next_tokens[s] < 0 || next_tokens[s] >= c->vocab_size)
            return ctx_err_set(e, CTX_EINVAL, "cuda engine: MTP token %d at offset %d outside the vocabulary",
                               next_tokens[s], s);
    dev_guard dg(g->dev);
    const int hc = c->hc_mult, D = c->hidden_size, nl = c->num_hidden_layers, piece = g->Smax / hc;
    const float eps = (float)c->rms_norm_eps;
    const long long pos_saved = g->pos;
    int rc = 0;
    for (int r = 0; r < S && !rc; r += piece) {
        const int sp = S - r < piece ? S - r : piece;
        const long long p = g->last_p0 + row0 + r;
        const float *Xm = g->X + (size_t)(row0 + r) * hc * D;
        g->pos = p; // the block reads its position from the device inputs; the host's copy agrees
        if ((rc = stage_inputs(g, p, next_tokens + r, sp, e)))
            break;
        launch_pdl(k_embed, sp, 256, 0, g->st, g->tok, g->embed, 1, D, g->u);
        launch_pdl(k_rmsnorm, sp, 256, 0, g->st, g->u, g->m_enorm, D, eps, g->u);
        launch_pdl(k_rmsnorm, sp * hc, 256, 0, g->st, Xm, g->m_hnorm, D, eps, g->Q);
        LAUNCHED("mtp: embedding and norms");
        if ((rc = lin_fp8(g, &g->m_eproj, g->u, sp, g->f, e)) || (rc = lin_fp8(g, &g->m_hproj, g->Q, sp * hc, g->O, e)))
            break;
        launch_pdl(k_mtp_x0, grid_for((size_t)sp * hc * D, 256), 256, 0, g->st, g->f, g->O, sp, hc, D, g->X);
        LAUNCHED("k_mtp_x0");
        g->xcur = g->X;
        g->pend = 0;
        g->lastl = nl;
        g->cur_layer = nl;
        if ((rc = block_site(g, nl, 0, sp, 0, e)) || (rc = block_site(g, nl, 1, sp, 0, e)))
            break;
        if (r + sp == S)
            rc = head_queue(g, g->X + (size_t)(sp - 1) * hc * D, 1, g->m_hch_fn, g->m_hch_base, g->m_hch_scale,
                            g->m_norm, logits != NULL, 1, e);
    }
    g->pos = pos_saved;
    g->lastl = g->le - 1;
    g->last_S = 0;
    if (!rc)
        rc = cu(e, cudaStreamSynchronize(g->st), "mtp");
    if (rc)
        return rc;
    if (logits)
        memcpy(logits, g->hlogits, sizeof(float) * c->vocab_size);
    if (draft)
        *draft = g->h_amax[0];
    return 0;
}

// Benchmarks: the state of position `pos` with random entries. Values: bf16 in [-1, 1) from a hash of
// (seed, layer, index); compressor carries empty as after a reset.
__global__ void k_fill_rand(float *x, size_t n, unsigned long long seed)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        unsigned long long z = seed + 0x9e3779b97f4a7c15ull * (i + 1);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        z ^= z >> 31;
        x[i] = bf16r((float)(z >> 40) * 0x1p-23f - 1.0f);
    }
}

// The 8-bit form of a CSA layer's indexer keys [0, n) from its fp32 keys (after an upload, a packed
// restore or a random fill; qdq != 0 first FP4-QDQs them in place), on the engine's stream.
static void ikeys_pack(struct cuda_engine *g, const struct dlayer *L, long long n, int qdq)
{
    if (n <= 0 || !L->ik8)
        return;
    long long blocks = (n + 7) / 8; // a warp a row
    k_i8_pack_rows<<<(unsigned)(blocks < 4096 ? blocks : 4096), 256, 0, g->st>>>(L->icache, n, g->c.index_head_dim, qdq,
                                                                                   L->ik8, L->ikx);
}

extern "C" int cuda_engine_state_fill_random(struct cuda_engine *g, long long pos, unsigned long long seed,
                                             struct ctx_err *e)
{
    const struct inf_config *c = &g->c;
    if (pos < 0 || pos > g->max_ctx)
        return ctx_err_set(e, CTX_ERANGE, "cuda engine: position %lld beyond the engine's context of %lld", pos,
                           g->max_ctx);
    dev_guard dg(g->dev);
    cuda_engine_reset(g);
    for (int l = g->lb; l < g->le; l++) { // by layer index: a pipeline's stages fill what one engine would
        struct dlayer *L = &g->L[l];
        size_t rn = (size_t)c->sliding_window * c->head_dim;
        unsigned long long sd = seed * 1000003ull + (unsigned long long)l * 3;
        k_fill_rand<<<grid_for(rn, 256), 256, 0, g->st>>>(L->ring, rn, sd);
        if (L->ratio) {
            size_t n = (size_t)(pos / L->ratio) * c->head_dim;
            if (n)
                k_fill_rand<<<grid_for(n, 256), 256, 0, g->st>>>(L->cache, n, sd + 1);
        }
        if (L->ratio == 4) {
            size_t n = (size_t)(pos / 4) * c->index_head_dim;
            if (n)
                k_fill_rand<<<grid_for(n, 256), 256, 0, g->st>>>(L->icache, n, sd + 2);
            ikeys_pack(g, L, pos / 4, 1); // keys as the engine makes them: FP4-QDQ'd, and their 8-bit form
        }
    }
    int rc;
    if ((rc = cu(e, cudaGetLastError(), "fill")) || (rc = cu(e, cudaStreamSynchronize(g->st), "fill")))
        return rc;
    g->pos = pos;
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
    dev_guard dg(g->dev);
    if ((rc = cu(e, cudaStreamSynchronize(g->st), "forward"))) // queued calls (cuda_engine_forward_async) first
        return rc;
    size_t rn = (size_t)c->sliding_window * c->head_dim;
    for (int l = g->lb; l < g->le; l++) {
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

// ---- marks: device-side copies of the part of the state that is not append-only

// A mark holds, per layer of the engine, the window ring and the main and indexer compressors' carries
// (the pieces below, each at a 256-byte aligned offset of its buffer), then the device position. The
// compressed entries and indexer keys are append-only and their counts follow from the position
// (pos / ratio), so the position restores them: what inf_state_snapshot keeps on the CPU. Nothing else
// outlives a call: the scratch is rewritten by every call, and the decode graph takes position and
// token from pinned slot 0, which every call fills from the host position before launching it.
struct cuda_engine_mark {
    struct cuda_engine *g;
    unsigned long long gen; // the engine's generation when taken
    long long pos;
    long long behind; // >= 0: the engine was since rewound to this position, behind the mark (stale)
    char *buf;        // device memory of the engine's device (stream-ordered allocation on its stream)
    struct cuda_engine_mark *prev, *next; // the engine's live marks
};

// Sizes in floats of the pieces a mark copies of a layer of compression ratio `ratio` (0: absent), in
// their order in the mark: ring, c_kv, c_sc, ic_kv, ic_sc.
static void mark_pieces(const struct inf_config *c, int ratio, size_t n[5])
{
    n[0] = (size_t)c->sliding_window * c->head_dim;
    n[1] = n[2] = carry_n(c, ratio);
    n[3] = n[4] = icarry_n(c, ratio);
}

extern "C" size_t cuda_engine_mark_bytes(const struct inf_config *c, int layer_begin, int layer_end)
{
    if (layer_begin == 0 && layer_end == 0)
        layer_end = c->num_hidden_layers;
    size_t total = 0, n[5];
    for (int l = layer_begin; l < layer_end; l++) {
        mark_pieces(c, c->compress_ratios[l], n);
        for (int i = 0; i < 5; i++)
            total += al256(sizeof(float) * n[i]);
    }
    return total + sizeof(long long);
}

// One device-to-device copy between the state at `dev` and the mark's buffer at offset off.
static int mark_run(struct cuda_engine *g, char *mb, size_t off, char *dev, size_t bytes, int save, struct ctx_err *e)
{
    return cu(e, cudaMemcpyAsync(save ? mb + off : dev, save ? dev : mb + off, bytes, cudaMemcpyDeviceToDevice, g->st),
              save ? "mark" : "rewind");
}

// Queues the copies between the engine's state and a mark's buffer (save: state -> mark, else back),
// one cudaMemcpyAsync per run of pieces lying back to back at 256-byte aligned offsets in the state
// (alloc_state carves a layer's ring and carries that way: one copy per layer, plus the position).
static int mark_copy(struct cuda_engine *g, char *mb, int save, struct ctx_err *e)
{
    const struct inf_config *c = &g->c;
    size_t off = 0, run_off = 0, run_n = 0, n[5];
    char *run = NULL;
    int rc;
    for (int l = g->lb; l < g->le; l++) {
        struct dlayer *L = &g->L[l];
        float *p[5] = {L->ring, L->c_kv, L->c_sc, L->ic_kv, L->ic_sc};
        mark_pieces(c, L->ratio, n);
        for (int i = 0; i < 5; i++) {
            if (!n[i])
                continue;
            size_t b = sizeof(float) * n[i];
            if (run && (char *)p[i] == run + al256(run_n)) { // continues the run (padding copied along)
                run_n = al256(run_n) + b;
            } else {
                if (run && (rc = mark_run(g, mb, run_off, run, run_n, save, e)))
                    return rc;
                run = (char *)p[i];
                run_off = off;
                run_n = b;
            }
            off += al256(b);
        }
    }
    if (run && (rc = mark_run(g, mb, run_off, run, run_n, save, e)))
        return rc;
    // the position the kernels read (the last call's start): rewritten by every call, kept so that the
    // device state after a rewind is the marked one in every byte the forward pass reads
    return mark_run(g, mb, off, (char *)g->dpos, sizeof(long long), save, e);
}

extern "C" int cuda_engine_mark(struct cuda_engine *g, struct cuda_engine_mark **out, struct ctx_err *e)
{
    *out = NULL;
    dev_guard dg(g->dev);
    struct cuda_engine_mark *m = (struct cuda_engine_mark *)calloc(1, sizeof *m);
    if (!m)
        return ctx_err_set(e, CTX_ENOMEM, "cuda engine: out of memory for a mark");
    size_t bytes = cuda_engine_mark_bytes(&g->c, g->lb, g->le);
    int rc = cu(e, cudaMallocAsync((void **)&m->buf, bytes, g->st), "mark: cudaMallocAsync");
    if (!rc)
        rc = mark_copy(g, m->buf, 1, e);
    if (rc) {
        if (m->buf)
            cudaFreeAsync(m->buf, g->st);
        free(m);
        return rc;
    }
    m->g = g;
    m->gen = g->gen;
    m->pos = g->pos;
    m->behind = -1;
    m->next = g->marks;
    if (g->marks)
        g->marks->prev = m;
    g->marks = m;
    *out = m;
    return 0;
}

extern "C" int cuda_engine_mark_check(const struct cuda_engine *g, const struct cuda_engine_mark *m,
                                      struct ctx_err *e)
{
    if (!m || m->g != g)
        return ctx_err_set(e, CTX_EINVAL, "cuda engine: the mark (position %lld) belongs to another engine",
                           m ? m->pos : -1LL);
    if (m->gen != g->gen)
        return ctx_err_set(e, CTX_EINVAL,
                           "cuda engine: the mark at position %lld predates a reset or state upload of the engine "
                           "(now at position %lld)",
                           m->pos, g->pos);
    if (m->pos > g->pos)
        return ctx_err_set(e, CTX_EINVAL,
                           "cuda engine: the mark at position %lld is ahead of the engine's position %lld", m->pos,
                           g->pos);
    if (m->behind >= 0)
        return ctx_err_set(e, CTX_EINVAL,
                           "cuda engine: the mark at position %lld is stale: the engine was rewound behind it (to "
                           "position %lld) and its entries from there on may be another sequence's (now at position "
                           "%lld)",
                           m->pos, m->behind, g->pos);
    return 0;
}

extern "C" int cuda_engine_rewind(struct cuda_engine *g, const struct cuda_engine_mark *m, struct ctx_err *e)
{
    int rc;
    if ((rc = cuda_engine_mark_check(g, m, e)))
        return rc;
    dev_guard dg(g->dev);
    if ((rc = mark_copy(g, m->buf, 0, e))) // a failed copy leaves the state mixed: rewinding again restores it
        return rc;
    g->pos = m->pos;
    g->last_S = 0; // X holds streams of positions rewound
    for (struct cuda_engine_mark *o = g->marks; o; o = o->next) // marks past this point go stale
        if (o->gen == g->gen && o->pos > m->pos && o->behind < 0)
            o->behind = m->pos;
    return 0;
}

extern "C" void cuda_engine_mark_free(struct cuda_engine_mark *m)
{
    if (!m)
        return;
    struct cuda_engine *g = m->g;
    dev_guard dg(g->dev);
    cudaFreeAsync(m->buf, g->st); // after the copies queued from it
    if (m->prev)
        m->prev->next = m->next;
    else
        g->marks = m->next;
    if (m->next)
        m->next->prev = m->prev;
    free(m);
}

// ---- Greedy generation, plain or with the MTP block's drafts (speculative decoding; issue 10)
//
// A speculative step feeds [t, d] (t the last token, d the MTP's draft for the position after it) as one
// forward of two tokens with both rows' argmax, and accepts d when the backbone's own choice after t is
// d: two tokens for one pass over the weights, which at batch 1 costs little more than one (the step is
// latency-bound; the routed experts of the second token are the main extra). Before the forward the
// undo record of d's position is saved (k_undo: its window ring slot, the carry rows it writes, and the
// rows an overlapping compressor's completed block overwrites); a rejected draft, or an accepted one
// that ends the output,
// puts it back and the position goes back by one (drop_last), which leaves exactly the state after t:
// the caches are append-only with counts that follow from the position, and the entry a completed
// block wrote is rewritten when the position is fed again. The tokens are the plain decode's because a
// two-token forward gives each row the bits of a one-token step (test_engine's part "spec" checks
// that, and the tokens and the state after generating).

// The draft's position dropped after a speculative step: its undo record put back, the position back by
// one (the last call's first row stays readable for the MTP), marks past it stale.
static int drop_last(struct cuda_engine *g, struct ctx_err *e)
{
    launch_pdl(k_undo, g->undo_n, 256, 0, g->st, (const undo_ent *)g->undo_tab, (const long long *)g->dpos, 1,
               g->undo_buf, 1);
    int rc = cu(e, cudaGetLastError(), "k_undo restore");
    if (rc)
        return rc;
    g->pos--;
    if (g->last_S > 1)
        g->last_S = 1;
    for (struct cuda_engine_mark *o = g->marks; o; o = o->next)
        if (o->gen == g->gen && o->pos > g->pos && o->behind < 0)
            o->behind = g->pos;
    return 0;
}

extern "C" void cuda_engine_spec_force(struct cuda_engine *g, const int *drafts, int n)
{
    g->force = drafts;
    g->nforce = drafts ? n : 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int is_stop(int t, const int *stop, int nstop)
{
    for (int i = 0; i < nstop; i++)
        if (stop[i] == t)
            return 1;
    return 0;
}

// The loop (cuda_gen.h) over a backend's steps: one engine below, a layer-split pipeline in multi.cu.
extern "C" int cuda_gen_run(const struct cuda_gen_ops *ops, const int *prompt, int n,
                            const struct cuda_engine_gen_opts *o, int *out, int *n_out,
                            struct cuda_engine_gen_stats *stats, struct ctx_err *e)
{
    struct cuda_engine_gen_stats z;
    memset(&z, 0, sizeof z);
    *n_out = 0;
    const int want = o ? o->max_tokens : 0, spec = o && o->spec;
    if (n <= 0 || want <= 0)
        return ctx_err_set(e, CTX_EINVAL, "cuda engine: generate needs a prompt (%d tokens) and max_tokens (%d) > 0", n,
                           want);
    if (spec && !ops->has_mtp)
        return ctx_err_set(e, CTX_EINVAL, "cuda engine: speculative generation needs the MTP block (opts.mtp)");
    const long long pos0 = ops->pos(ops->ud);
    if (pos0 + n + want - 1 > ops->max_ctx)
        return ctx_err_set(e, CTX_ERANGE, "cuda engine: position %lld + %d prompt + %d generated tokens beyond the "
                           "engine's context of %lld", pos0, n, want, ops->max_ctx);
    const int *stop = o->stop;
    const int nstop = stop ? o->nstop : 0;
    int rc = 0, got = 0, d = -1, t = 0;
    const double t0 = now_s();
    double t1 = t0;
    // The prompt: its head in chunks, then the final min(n, window, smax) tokens in one forward, whose
    // output streams feed the MTP's window (the window's entries are all it needs of the prompt).
    // Plain and speculative runs take the same chunks, so their states agree.
    const int wmax = ops->window < ops->smax ? ops->window : ops->smax, tail = n < wmax ? n : wmax;
    if (n > tail)
        rc = ops->prefill(ops->ud, prompt, n - tail, e);
    if (!rc)
        rc = ops->forward(ops->ud, prompt + n - tail, tail, 1, 0, &t, e);
    if (!rc) {
        t1 = now_s();
        out[got++] = t;
        if (is_stop(t, stop, nstop))
            goto done;
    }
    if (!rc && spec && got < want) { // the MTP over the prompt's last rows: the first draft
        int *nx = (int *)malloc(sizeof(int) * (size_t)tail);
        if (!nx) {
            rc = ctx_err_set(e, CTX_ENOMEM, "cuda engine: out of memory");
            goto done;
        }
        for (int i = 0; i < tail; i++)
            nx[i] = i + 1 < tail ? prompt[n - tail + i + 1] : t;
        rc = ops->mtp(ops->ud, 0, nx, tail, &d, e);
        free(nx);
        z.mtp_calls++;
    }
    while (!rc && got < want) {
        if (ops->force && got < ops->nforce && ops->force[got] >= 0) // tests: the draft for output token `got`
            d = ops->force[got] % ops->vocab;
        if (!spec || want - got < 2) { // a plain step (the decode graph): t at the position, its successor out
            int a = 0;
            if ((rc = ops->forward(ops->ud, &t, 1, 1, 0, &a, e)))
                break;
            z.forwards++;
            out[got++] = t = a;
            if (is_stop(t, stop, nstop))
                break;
            if (spec && got < want) {
                if ((rc = ops->mtp(ops->ud, 0, &t, 1, &d, e)))
                    break;
                z.mtp_calls++;
            }
            continue;
        }
        // the step: [t, d] at positions P, P + 1, the undo record of P + 1 saved first
        int in[2] = {t, d}, a[2] = {0, 0};
        if ((rc = ops->forward(ops->ud, in, 2, 2, 1, a, e)))
            break;
        z.forwards++;
        z.drafted++;
        if (a[0] == d) { // accepted: d is the backbone's own choice after t; a[1] follows d
            z.accepted++;
            out[got++] = d;
            if (is_stop(d, stop, nstop)) { // d ends the output: fed, it goes again (as a plain run has it)
                if (!(rc = ops->drop_last(ops->ud, e)))
                    z.undos++;
                break;
            }
            out[got++] = t = a[1];
            if (is_stop(t, stop, nstop) || got == want)
                break;
            int nx[2] = {d, a[1]};
            if ((rc = ops->mtp(ops->ud, 0, nx, 2, &d, e)))
                break;
            z.mtp_calls++;
        } else { // rejected: a[0] follows t; the draft's position goes
            if ((rc = ops->drop_last(ops->ud, e)))
                break;
            z.undos++;
            out[got++] = t = a[0];
            if (is_stop(t, stop, nstop) || got == want)
                break;
            if ((rc = ops->mtp(ops->ud, 0, &t, 1, &d, e)))
                break;
            z.mtp_calls++;
        }
    }
done:
    *n_out = got;
    z.prefill_s = t1 - t0;
    z.decode_s = now_s() - t1;
    if (stats)
        *stats = z;
    return rc;
}

// The steps on one engine (cuda_gen_ops).
static long long eg_pos(void *ud) { return ((struct cuda_engine *)ud)->pos; }
static int eg_prefill(void *ud, const int *tokens, int S, struct ctx_err *e)
{
    return cuda_engine_prefill((struct cuda_engine *)ud, tokens, S, NULL, e);
}
static int eg_forward(void *ud, const int *tokens, int S, int rows, int undo, int *amax, struct ctx_err *e)
{
    return forward_call((struct cuda_engine *)ud, tokens, S, NULL, rows, rows > 0, undo, NULL, NULL, 1, NULL, amax, e);
}
static int eg_drop(void *ud, struct ctx_err *e)
{
    struct cuda_engine *g = (struct cuda_engine *)ud;
    int rc = drop_last(g, e);
    return rc ? rc : cu(e, cudaStreamSynchronize(g->st), "drop");
}
static int eg_mtp(void *ud, int row0, const int *next, int S, int *draft, struct ctx_err *e)
{
    return cuda_engine_mtp((struct cuda_engine *)ud, row0, next, S, NULL, draft, e);
}

extern "C" int cuda_engine_generate(struct cuda_engine *g, const int *prompt, int n, const struct cuda_engine_gen_opts *o,
                                    int *out, int *n_out, struct cuda_engine_gen_stats *stats, struct ctx_err *e)
{
    *n_out = 0;
    if (g->le != g->c.num_hidden_layers || g->lb != 0)
        return ctx_err_set(e, CTX_EINVAL, "cuda engine: generate needs an engine over all layers (a pipeline: "
                           "cuda_multi_generate)");
    dev_guard dg(g->dev);
    struct cuda_gen_ops ops;
    memset(&ops, 0, sizeof ops);
    ops.ud = g;
    ops.smax = g->Smax;
    ops.window = g->c.sliding_window;
    ops.vocab = g->c.vocab_size;
    ops.has_mtp = g->mtp;
    ops.pos = eg_pos;
    ops.max_ctx = g->max_ctx;
    ops.prefill = eg_prefill;
    ops.forward = eg_forward;
    ops.drop_last = eg_drop;
    ops.mtp = eg_mtp;
    ops.force = g->force;
    ops.nforce = g->nforce;
    return cuda_gen_run(&ops, prompt, n, o, out, n_out, stats, e);
}

// The steps for multi.cu (cuda_gen.h).
extern "C" int cuda_engine_forward_async_rows(struct cuda_engine *g, const int *tokens, int S,
                                              const struct cuda_engine_io *io, int rows, int undo, struct ctx_err *e)
{
    dev_guard dg(g->dev);
    return forward_call(g, tokens, S, io, rows, rows > 0, undo, NULL, NULL, 0, NULL, NULL, e);
}
extern "C" int cuda_engine_argmax_rows(struct cuda_engine *g, int *amax, int rows, struct ctx_err *e)
{
    if (rows < 1 || rows > LOGIT_ROWS)
        return ctx_err_set(e, CTX_EINVAL, "cuda engine: argmax of %d rows", rows);
    dev_guard dg(g->dev);
    int rc = cu(e, cudaStreamSynchronize(g->st), "argmax");
    if (!rc)
        memcpy(amax, g->h_amax, sizeof(int) * (size_t)rows);
    return rc;
}
extern "C" int cuda_engine_logits_rows(struct cuda_engine *g, float *const *logits, int rows, struct ctx_err *e)
{
    if (rows < 1 || rows > LOGIT_ROWS)
        return ctx_err_set(e, CTX_EINVAL, "cuda engine: logits of %d rows", rows);
    dev_guard dg(g->dev);
    int rc = cu(e, cudaStreamSynchronize(g->st), "logits");
    for (int i = 0; !rc && i < rows; i++)
        memcpy(logits[i], g->hlogits + (size_t)i * g->c.vocab_size, sizeof(float) * g->c.vocab_size);
    return rc;
}
extern "C" int cuda_engine_drop_last(struct cuda_engine *g, struct ctx_err *e)
{
    dev_guard dg(g->dev);
    return eg_drop(g, e);
}
extern "C" void cuda_engine_spec_forced(const struct cuda_engine *g, const int **force, int *n)
{
    *force = g->force;
    *n = g->nforce;
}
extern "C" int cuda_engine_has_mtp(const struct cuda_engine *g) { return g->mtp; }

extern "C" long long cuda_engine_mark_pos(const struct cuda_engine_mark *m) { return m->pos; }

// Rings and carries of layer l into the host state's layer ls (the part of a download that is not the
// append-only entries).
static int download_boundary(struct cuda_engine *g, int l, struct inf_layer_state *ls, struct ctx_err *e)
{
    const struct inf_config *c = &g->c;
    struct dlayer *L = &g->L[l];
    size_t n[5];
    mark_pieces(c, L->ratio, n);
    const float *src[5] = {L->ring, L->c_kv, L->c_sc, L->ic_kv, L->ic_sc};
    float *dst[5] = {ls->ring, ls->c_kv, ls->c_sc, ls->ic_kv, ls->ic_sc};
    for (int i = 0; i < 5; i++) {
        int rc;
        if (n[i] && (rc = cu(e, cudaMemcpy(dst[i], src[i], sizeof(float) * n[i], cudaMemcpyDeviceToHost),
                             i ? "state carry" : "state ring")))
            return rc;
    }
    return 0;
}

// ---- large copies into the host copy (inf_state_sync's entries) ----
//
// A checkpoint's download moves a slice's new entries as floats into the host state's arrays (1.8 GB
// for a 131K-token slice of V4-Flash), pageable memory that has mostly never been touched. cudaMemcpy
// into it ran at 1.1 GB/s on the GPU machine (bench-gpu-restore slices, 2026-12-01): the driver copies
// through a small pinned buffer of its own on one thread, and each fresh page faults on that thread.
// d2h_staged brings the bytes over PCIe in 32 MiB pieces into a pinned ring of two (the engine's,
// allocated on first use) and copies each piece out on up to 8 host threads (the page faults spread
// over them) while the next piece is in flight. The same bytes either way; CTX_CUDA_D2H_STAGED=0 (read
// once) keeps cudaMemcpy, and so does a ring that cannot be had (a warning-free fallback: only speed).
#define D2H_PIECE ((size_t)32 << 20)
static std::atomic<int> d2h_forced{-1}; // cuda_engine_d2h_staged

extern "C" void cuda_engine_d2h_staged(int on) { d2h_forced.store(on < 0 ? -1 : on != 0); }

static bool d2h_staged_on()
{
    static std::atomic<int> env{-1};
    int f = d2h_forced.load();
    if (f >= 0)
        return f != 0;
    if (env.load() < 0) {
        const char *v = getenv("CTX_CUDA_D2H_STAGED");
        env.store(!(v && !strcmp(v, "0")));
    }
    return env.load() != 0;
}

static void host_copy_par(void *dst, const void *src, size_t n)
{
    unsigned hc = std::thread::hardware_concurrency();
    int nt = n < ((size_t)8 << 20) ? 1 : hc >= 8 ? 8 : hc >= 2 ? (int)hc : 1;
    if (nt == 1) {
        memcpy(dst, src, n);
        return;
    }
    size_t per = (n / (size_t)nt + 4095) & ~(size_t)4095;
    std::vector<std::thread> th;
    try {
        for (int t = 1; t < nt && (size_t)t * per < n; t++) {
            size_t off = (size_t)t * per, len = n - off < per ? n - off : per;
            th.emplace_back([=] { memcpy((char *)dst + off, (const char *)src + off, len); });
        }
    } catch (...) { // no thread: this one copies what the missing ones would have
        for (size_t off = (th.size() + 1) * per; off < n; off += per)
            memcpy((char *)dst + off, (const char *)src + off, n - off < per ? n - off : per);
    }
    memcpy(dst, src, n < per ? n : per);
    for (auto &t : th)
        t.join();
}

// n bytes from device src to pageable host dst, after the engine's queued work (stream g->st).
static int d2h_staged(struct cuda_engine *g, void *dst, const void *src, size_t n, const char *what, struct ctx_err *e)
{
    if (n < ((size_t)4 << 20) || !d2h_staged_on()) // (a small copy: the driver's path is as good)
        return cu(e, cudaMemcpy(dst, src, n, cudaMemcpyDeviceToHost), what);
    for (int i = 0; i < 2; i++) {
        if (!g->d2h_stage[i] && cudaHostAlloc(&g->d2h_stage[i], D2H_PIECE, cudaHostAllocDefault) != cudaSuccess)
            g->d2h_stage[i] = NULL;
        if (!g->d2h_ev[i] && cudaEventCreateWithFlags(&g->d2h_ev[i], cudaEventDisableTiming) != cudaSuccess)
            g->d2h_ev[i] = NULL;
        if (!g->d2h_stage[i] || !g->d2h_ev[i]) {
            cudaGetLastError(); // (a refused pinned allocation is not the caller's error)
            return cu(e, cudaMemcpy(dst, src, n, cudaMemcpyDeviceToHost), what);
        }
    }
    const size_t np = (n + D2H_PIECE - 1) / D2H_PIECE;
    auto issue = [&](size_t i) {
        size_t off = i * D2H_PIECE, len = n - off < D2H_PIECE ? n - off : D2H_PIECE;
        int rc = cu(e, cudaMemcpyAsync(g->d2h_stage[i % 2], (const char *)src + off, len, cudaMemcpyDeviceToHost, g->st),
                    what);
        return rc ? rc : cu(e, cudaEventRecord(g->d2h_ev[i % 2], g->st), what);
    };
    int rc = issue(0);
    if (!rc && np > 1)
        rc = issue(1);
    for (size_t i = 0; i < np && !rc; i++) {
        if ((rc = cu(e, cudaEventSynchronize(g->d2h_ev[i % 2]), what)))
            break;
        size_t off = i * D2H_PIECE, len = n - off < D2H_PIECE ? n - off : D2H_PIECE;
        host_copy_par((char *)dst + off, g->d2h_stage[i % 2], len);
        if (i + 2 < np)
            rc = issue(i + 2);
    }
    if (rc) // nothing of ours stays queued on the ring
        cudaStreamSynchronize(g->st);
    return rc;
}

extern "C" int cuda_engine_state_download_tail(struct cuda_engine *g, struct inf_state *st, struct ctx_err *e)
{
    const struct inf_config *c = &g->c;
    int rc;
    if ((rc = state_shape_check(g, st, e)))
        return rc;
    dev_guard dg(g->dev);
    if ((rc = cu(e, cudaStreamSynchronize(g->st), "forward"))) // queued calls (cuda_engine_forward_async) first
        return rc;
    for (int l = g->lb; l < g->le; l++) {
        struct dlayer *L = &g->L[l];
        struct inf_layer_state *ls = &st->layers[l];
        long long n = L->ratio ? g->pos / L->ratio : 0, have = ls->n_cache;
        if (have > n) // the engine was rewound behind st: the entries are append-only, so its are st's prefix
            have = n;
        if (have < 0)
            have = 0;
        ls->n_cache = have;
        if (n > have && (rc = inf_state_reserve(st, l, n - have, e)))
            return rc;
        if ((rc = download_boundary(g, l, ls, e)))
            return rc;
        size_t d = (size_t)c->head_dim, di = (size_t)c->index_head_dim, k = (size_t)(n - have);
        if (k && (rc = d2h_staged(g, ls->cache + (size_t)have * d, L->cache + (size_t)have * d, sizeof(float) * k * d,
                                  "state cache", e)))
            return rc;
        if (k && L->ratio == 4 &&
            (rc = d2h_staged(g, ls->icache + (size_t)have * di, L->icache + (size_t)have * di,
                             sizeof(float) * k * di, "state indexer keys", e)))
            return rc;
        ls->n_cache = n;
    }
    st->pos = g->pos;
    return 0;
}

extern "C" int cuda_engine_state_download_boundary(struct cuda_engine *g, struct inf_state *st, struct ctx_err *e)
{
    int rc;
    if ((rc = state_shape_check(g, st, e)))
        return rc;
    dev_guard dg(g->dev);
    if ((rc = cu(e, cudaStreamSynchronize(g->st), "forward"))) // queued calls (cuda_engine_forward_async) first
        return rc;
    for (int l = g->lb; l < g->le; l++)
        if ((rc = download_boundary(g, l, &st->layers[l], e)))
            return rc;
    st->pos = g->pos;
    return 0;
}

// Rings and carries of layer l from the host state's layer ls, queued on the engine's stream (the
// part of a state upload that is not the append-only entries).
static int upload_boundary(struct cuda_engine *g, int l, const struct inf_layer_state *ls, struct ctx_err *e)
{
    const struct inf_config *c = &g->c;
    struct dlayer *L = &g->L[l];
    size_t rn = (size_t)c->sliding_window * c->head_dim, cn = carry_n(c, L->ratio), in = icarry_n(c, L->ratio);
    const float *src[5] = {ls->ring, ls->c_kv, ls->c_sc, ls->ic_kv, ls->ic_sc};
    float *dst[5] = {L->ring, L->c_kv, L->c_sc, L->ic_kv, L->ic_sc};
    size_t n[5] = {rn, cn, cn, in, in};
    for (int i = 0; i < 5; i++) {
        int rc;
        if (n[i] && (rc = cu(e, cudaMemcpyAsync(dst[i], src[i], sizeof(float) * n[i], cudaMemcpyHostToDevice, g->st),
                             i ? "state carry" : "state ring")))
            return rc;
    }
    return 0;
}

// The checks every state upload makes: shape, position, and the entries each of the engine's layers
// holds at that position (counts[l], or the host state's own counts when NULL).
static int upload_check(struct cuda_engine *g, const struct inf_state *st, const long long *counts, struct ctx_err *e)
{
    int rc;
    if ((rc = state_shape_check(g, st, e)))
        return rc;
    if (st->pos < 0 || st->pos > g->max_ctx)
        return ctx_err_set(e, CTX_ERANGE, "cuda engine: state at position %lld beyond the engine's context of %lld",
                           st->pos, g->max_ctx);
    for (int l = g->lb; l < g->le; l++) {
        long long have = counts ? counts[l] : st->layers[l].n_cache;
        long long want = st->layers[l].ratio ? st->pos / st->layers[l].ratio : 0;
        if ((counts || st->layers[l].ratio) && have != want)
            return ctx_err_set(e, CTX_EINVAL, "cuda engine: layer %d holds %lld compressed entries at position %lld", l,
                               have, st->pos);
    }
    return 0;
}

// The state's position, rings and carries, and each layer's entries [0, upto[l]) (clamped to its count;
// upto NULL: all of them), host -> device; a new generation of marks.
static int upload_entries(struct cuda_engine *g, const struct inf_state *st, const long long *upto,
                          struct ctx_err *e)
{
    const struct inf_config *c = &g->c;
    int rc;
    if ((rc = upload_check(g, st, NULL, e)))
        return rc;
    for (int l = g->lb; upto && l < g->le; l++)
        if (upto[l] < 0)
            return ctx_err_set(e, CTX_EINVAL, "cuda engine: layer %d: %lld leading entries to upload", l, upto[l]);
    dev_guard dg(g->dev);
    if ((rc = cu(e, cudaStreamSynchronize(g->st), "forward"))) // queued calls (cuda_engine_forward_async) first
        return rc;
    g->gen++; // earlier marks are of another sequence
    for (int l = g->lb; l < g->le && !rc; l++) {
        struct dlayer *L = &g->L[l];
        const struct inf_layer_state *ls = &st->layers[l];
        long long n = upto && upto[l] < ls->n_cache ? upto[l] : ls->n_cache;
        if ((rc = upload_boundary(g, l, ls, e)))
            break;
        if (n && (rc = cu(e, cudaMemcpyAsync(L->cache, ls->cache, sizeof(float) * (size_t)n * c->head_dim,
                                             cudaMemcpyHostToDevice, g->st),
                          "state cache")))
            break;
        if (n && L->ratio == 4 &&
            (rc = cu(e, cudaMemcpyAsync(L->icache, ls->icache, sizeof(float) * (size_t)n * c->index_head_dim,
                                        cudaMemcpyHostToDevice, g->st),
                     "state indexer keys")))
            break;
        if (L->ratio == 4)
            ikeys_pack(g, L, n, 0);
    }
    int src = cu(e, cudaStreamSynchronize(g->st), "state upload");
    if (rc || src)
        return rc ? rc : src;
    g->pos = st->pos;
    g->last_S = 0;
    return 0;
}

extern "C" int cuda_engine_state_upload(struct cuda_engine *g, const struct inf_state *st, struct ctx_err *e)
{
    return upload_entries(g, st, NULL, e);
}

// The upload of a state the engine held before (inference/accel.c's resident): the same as
// cuda_engine_state_upload but each layer sends only its entries [0, upto[l]) (clamped to the count);
// those from there up to the count are the engine's memory as it was, which the caller vouches for.
extern "C" int cuda_engine_state_upload_prefix(struct cuda_engine *g, const struct inf_state *st,
                                               const long long *upto, struct ctx_err *e)
{
    return upload_entries(g, st, upto, e);
}

// The restore of a checkpoint as the KV cache stores it (inference/kvpack.h): rings and carries from
// st as cuda_engine_state_upload copies them, every layer's entries as packed bytes through a device
// staging buffer (stream-ordered allocation, so repeated restores reuse it) and unpacked there —
// 584 + 68 bytes per V4 entry cross PCIe instead of 2048 + 512.
#define PACKED_STAGE ((size_t)64 << 20)
extern "C" int cuda_engine_state_upload_packed(struct cuda_engine *g, const struct inf_state *st,
                                               const long long *counts, const void *const *streams,
                                               struct ctx_err *e)
{
    const struct inf_config *c = &g->c;
    int rc;
    if ((rc = upload_check(g, st, counts, e)))
        return rc;
    dev_guard dg(g->dev);
    if ((rc = cu(e, cudaStreamSynchronize(g->st), "forward"))) // queued calls (cuda_engine_forward_async) first
        return rc;
    g->gen++; // earlier marks are of another sequence
    void *stage = NULL;
    if ((rc = cu(e, cudaMallocAsync(&stage, PACKED_STAGE, g->st), "packed restore staging")))
        return rc;
    size_t eb = inf_kvpack_entry_bytes(c), ib = inf_kvpack_ikey_bytes(c);
    for (int l = g->lb; l < g->le && !rc; l++) {
        struct dlayer *L = &g->L[l];
        if ((rc = upload_boundary(g, l, &st->layers[l], e)))
            break;
        for (int k = 0; k < (L->ratio == 4 ? 2 : 1) && !rc; k++) {
            long long n = counts[l];
            size_t bytes = k ? ib : eb, w = (size_t)(k ? c->index_head_dim : c->head_dim);
            long long per = (long long)(PACKED_STAGE / bytes);
            const uint8_t *from = (const uint8_t *)streams[2 * l + k];
            float *dst = k ? L->icache : L->cache;
            for (long long i = 0; i < n && !rc; i += per) {
                long long m = n - i < per ? n - i : per;
                if (!(rc = cu(e, cudaMemcpyAsync(stage, from + (size_t)i * bytes, (size_t)m * bytes,
                                                 cudaMemcpyHostToDevice, g->st),
                              "packed state")))
                    rc = k ? cuda_kvunpack_ikeys(c, stage, m, dst + (size_t)i * w, g->st, e)
                           : cuda_kvunpack_entries(c, stage, m, dst + (size_t)i * w, g->st, e);
            }
            if (k && !rc)
                ikeys_pack(g, L, n, 0);
        }
    }
    cudaFreeAsync(stage, g->st);
    int src = cu(e, cudaStreamSynchronize(g->st), "packed restore");
    if (rc || src)
        return rc ? rc : src;
    g->pos = st->pos;
    g->last_S = 0;
    return 0;
}

