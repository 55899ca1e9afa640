// FP8 / FP4 block-scaled matrix products for Hopper (sm_90a); semantics in gemm.h.
//
// All tensor-core work uses mma.sync.m16n8k32 with e4m3 operands. Two facts shape every kernel:
// - Within one 32-wide K step the dot product does not depend on which K position a byte sits in,
//   as long as A (weights) and B (activations) use the same permutation. So each thread loads long
//   contiguous runs (16-byte vectors, full 128-byte lines per warp) and feeds them to the fragment
//   registers as they are, instead of the canonical fragment order.
// - An e2m1 code s|e1 e0|m placed in an e4m3 byte as s<<7 | (e1 e0 m)<<2 is exactly the e2m1 value
//   times 2^-6 (the e2m1 subnormal 0.5 lands on the e4m3 subnormal 2^-7). So FP4 weights become
//   e4m3 with four logic operations per 4 codes, and the power of two is folded into the scale.
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include "cuda_common.cuh"
#include "gemm.h"

namespace {





__device__ __forceinline__ uint32_t ldg_stream32(const void *p)
{
    uint32_t v;
    asm volatile("ld.global.nc.L1::no_allocate.u32 %0, [%1];\n" : "=r"(v) : "l"(p));
    return v;
}

// e2m1 codes in the low (high) nibbles of the 4 bytes of x -> 4 e4m3 bytes of value code * 2^-6.
__device__ __forceinline__ uint32_t fp4_lo_to_e4m3(uint32_t x)
{
    return ((x << 4) & 0x80808080u) | ((x << 2) & 0x1c1c1c1cu);
}
__device__ __forceinline__ uint32_t fp4_hi_to_e4m3(uint32_t x)
{
    return (x & 0x80808080u) | ((x >> 2) & 0x1c1c1c1cu);
}

// ---- activation quantisation ----

// One 128-K block of one token, 4 consecutive values per lane of a warp (bf16 values in fp32):
// returns the lane's 4 e4m3 bytes, *scale the block's scale. Shared by act_quant_kernel and the
// fused decode GEMV, so both give the same bytes.
__device__ __forceinline__ uint32_t warp_quant128(const float (&v)[4], float *scale)
{
    float amax = fmaxf(fmaxf(fabsf(v[0]), fabsf(v[1])), fmaxf(fabsf(v[2]), fabsf(v[3])));
    for (int o = 16; o > 0; o >>= 1)
        amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    amax = fmaxf(amax, 1e-4f);
    // 2^ceil(log2(amax / 448)) from the exponent bits of the fp32 product, as the reference does.
    const uint32_t u = __float_as_uint(amax * (1.0f / 448.0f));
    const uint32_t code = ((u >> 23) & 255u) + ((u & 0x7fffffu) != 0);
    const float s = __uint_as_float(code << 23);
    const float inv = __uint_as_float((254u - code) << 23); // 1/s exactly: s is a normal power of two
    uint32_t packed = 0;
    for (int i = 0; i < 4; i += 2) {
        // x * (1/s) equals x / s exactly (power of two); clamp, then round to nearest even e4m3.
        float2 f = make_float2(fminf(fmaxf(v[i] * inv, -448.f), 448.f), fminf(fmaxf(v[i + 1] * inv, -448.f), 448.f));
        __nv_fp8x2_storage_t p = __nv_cvt_float2_to_fp8x2(f, __NV_SATFINITE, __NV_E4M3);
        packed |= (uint32_t)p << (8 * i);
    }
    *scale = s;
    return packed;
}

// fp32 -> the fp32 value of its bf16 rounding (nearest even; NaN kept), as the engine's bf16r.
__device__ __forceinline__ float bf16_round(float f)
{
    uint32_t u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return f;
    u += 0x7fffu + ((u >> 16) & 1u);
    return __uint_as_float(u & 0xffff0000u);
}

// One warp per (token, 128-K block); each lane 4 consecutive values.
__global__ void __launch_bounds__(256) act_quant_kernel(const uint16_t *__restrict__ x, int m, int k,
                                                        uint8_t *__restrict__ q, float *__restrict__ sa,
                                                        int scale_t)
{
    pdl_begin();
    const int kb_n = k >> 7;
    const long long w = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (w >= (long long)m * kb_n)
        return;
    const int row = (int)(w / kb_n), kb = (int)(w % kb_n);
    const size_t off = (size_t)row * k + (size_t)kb * 128 + lane * 4;
    const uint2 raw = *reinterpret_cast<const uint2 *>(x + off);
    const float v[4] = {__uint_as_float(raw.x << 16), __uint_as_float(raw.x & 0xffff0000u),
                        __uint_as_float(raw.y << 16), __uint_as_float(raw.y & 0xffff0000u)};
    float s;
    *reinterpret_cast<uint32_t *>(q + off) = warp_quant128(v, &s);
    if (lane == 0)
        sa[scale_t ? (size_t)kb * ((m + 3) & ~3) + row : (size_t)row * kb_n + kb] = s;
}

// ---- FP8 GEMM (prefill) ----
//
// CTA tile: 128 weight rows x 128 tokens, K in 128-wide stages (one scale block) through a 3-deep
// cp.async ring. 8 warps as 2 (rows, 64 each) x 4 (tokens, 32 each). Shared-memory rows are 128
// bytes with 16-byte segments XOR-swizzled by (row & 7), so the 16-byte fragment loads of a quarter
// warp hit 8 distinct segments. Each stage's partial (4 mma steps) is scaled and added to the fp32
// accumulators, as the reference does per 128-K block.
constexpr int G_BM = 128, G_BN = 128, G_STAGES = 3;
constexpr int G_STAGE_BYTES = (G_BN + G_BM) * 128 + G_BM * 4;
constexpr int G_SMEM = G_STAGES * G_STAGE_BYTES;


__global__ void __launch_bounds__(256, 1) fp8_gemm_kernel(const uint8_t *__restrict__ q, const float *__restrict__ sa,
                                                          int m, const uint8_t *__restrict__ w,
                                                          const uint8_t *__restrict__ ws, int n, int k,
                                                          __nv_bfloat16 *__restrict__ y)
{
    extern __shared__ __align__(128) uint8_t smem[];
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    const int wn = warp & 1, wm = warp >> 1;
    const int row0 = blockIdx.x * G_BN, tok0 = blockIdx.y * G_BM;
    const int kb_n = k >> 7;
    const uint32_t sbase = (uint32_t)__cvta_generic_to_shared(smem);

    auto load_stage = [&](int stage, int kb) {
        const uint32_t sA = sbase + stage * G_STAGE_BYTES, sB = sA + G_BN * 128, sS = sB + G_BM * 128;
        for (int j = 0; j < 4; j++) {
            const int i = tid + j * 256, r = i >> 3, c = i & 7;
            const uint32_t so = r * 128 + ((c ^ (r & 7)) << 4);
            const int wrow = row0 + r, trow = tok0 + r;
            cp_async16(sA + so, w + (size_t)min(wrow, n - 1) * k + (size_t)kb * 128 + c * 16, wrow < n);
            cp_async16(sB + so, q + (size_t)min(trow, m - 1) * k + (size_t)kb * 128 + c * 16, trow < m);
        }
        if (tid < G_BM) {
            const int trow = tok0 + tid;
            cp_async4(sS + tid * 4, sa + (size_t)min(trow, m - 1) * kb_n + kb, trow < m);
        }
    };

    float acc[4][4][4];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++)
            for (int c = 0; c < 4; c++)
                acc[i][j][c] = 0.f;

    for (int s = 0; s < G_STAGES - 1; s++) {
        if (s < kb_n)
            load_stage(s, s);
        cp_async_commit();
    }
    const uint8_t *wsr = ws + (size_t)(row0 >> 7) * kb_n;
    for (int kb = 0; kb < kb_n; kb++) {
        cp_async_wait<G_STAGES - 2>();
        __syncthreads();
        if (kb + G_STAGES - 1 < kb_n)
            load_stage((kb + G_STAGES - 1) % G_STAGES, kb + G_STAGES - 1);
        cp_async_commit();

        const int stage = kb % G_STAGES;
        const uint32_t sA = sbase + stage * G_STAGE_BYTES, sB = sA + G_BN * 128;
        const float *sS = reinterpret_cast<const float *>(smem + stage * G_STAGE_BYTES + (G_BN + G_BM) * 128);
        float part[4][4][4];
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++)
                for (int c = 0; c < 4; c++)
                    part[i][j][c] = 0.f;
        // A thread's 32 bytes of a row are segments 2t and 2t+1: steps 0-1, then steps 2-3.
        for (int hseg = 0; hseg < 2; hseg++) {
            const int seg = 2 * t + hseg;
            uint4 a[4][2], b[4];
            for (int mi = 0; mi < 4; mi++)
                for (int h = 0; h < 2; h++) {
                    const int r = wn * 64 + mi * 16 + h * 8 + g;
                    a[mi][h] = lds128(sA + r * 128 + ((seg ^ (r & 7)) << 4));
                }
            for (int ni = 0; ni < 4; ni++) {
                const int r = wm * 32 + ni * 8 + g;
                b[ni] = lds128(sB + r * 128 + ((seg ^ (r & 7)) << 4));
            }
            for (int ni = 0; ni < 4; ni++)
                for (int mi = 0; mi < 4; mi++) {
                    mma_e4m3(part[mi][ni], a[mi][0].x, a[mi][1].x, a[mi][0].y, a[mi][1].y, b[ni].x, b[ni].y);
                    mma_e4m3(part[mi][ni], a[mi][0].z, a[mi][1].z, a[mi][0].w, a[mi][1].w, b[ni].z, b[ni].w);
                }
        }
        const float wsc = e8m0_to_float(__ldg(wsr + kb));
        for (int ni = 0; ni < 4; ni++) {
            const float s0 = sS[wm * 32 + ni * 8 + 2 * t], s1 = sS[wm * 32 + ni * 8 + 2 * t + 1];
            for (int mi = 0; mi < 4; mi++) {
                acc[mi][ni][0] += (part[mi][ni][0] * s0) * wsc;
                acc[mi][ni][1] += (part[mi][ni][1] * s1) * wsc;
                acc[mi][ni][2] += (part[mi][ni][2] * s0) * wsc;
                acc[mi][ni][3] += (part[mi][ni][3] * s1) * wsc;
            }
        }
    }
    cp_async_wait<0>();
    for (int mi = 0; mi < 4; mi++)
        for (int ni = 0; ni < 4; ni++) {
            const int r = row0 + wn * 64 + mi * 16 + g, c = tok0 + wm * 32 + ni * 8 + 2 * t;
            if (r < n) {
                if (c < m)
                    y[(size_t)c * n + r] = __float2bfloat16_rn(acc[mi][ni][0]);
                if (c + 1 < m)
                    y[(size_t)(c + 1) * n + r] = __float2bfloat16_rn(acc[mi][ni][1]);
            }
            if (r + 8 < n) {
                if (c < m)
                    y[(size_t)c * n + r + 8] = __float2bfloat16_rn(acc[mi][ni][2]);
                if (c + 1 < m)
                    y[(size_t)(c + 1) * n + r + 8] = __float2bfloat16_rn(acc[mi][ni][3]);
            }
        }
}

// ---- FP8 GEMM, second kernel (cuda_fp8_gemm_variant: CUDA_FP8_GEMM_V2 and its fixed tiles) ----
//
// The same bits as fp8_gemm_kernel: every output's 128-K partial is the same 4 chained mma.sync
// m16n8k32 from zero with the same bytes in the same fragment slots (thread (g, t) takes the 16-byte
// segments 2t and 2t+1 of its rows; steps = segment 2t's .xy, .zw, then segment 2t+1's .xy, .zw),
// then acc += (part * act_scale) * w_scale in ascending block order and bf16 at the end, written
// with the same expression in the same file, so that the compiler contracts it the same way.
// (ptxas builds the e4m3 mma.sync of sm_90 from f16 tensor-core steps, seen in its SASS: 12 F2FP
// e4m3 -> f16x2 conversions, HMMA.16816 on the low bytes of every fragment register from zero,
// HMMA.16816 on the high bytes, then one FADD onto the accumulator. Same operands, same bits.)
// What changes is the data flow around it:
// - the loop runs per 16-row group mi of the warp's rows: its A fragments for the whole block are
//   loaded, the 4-step chains of all NI token groups run interleaved (NI independent chains) and
//   are scaled into acc at once, so a partial lives for one mi only (NI x 4 registers instead of
//   MI x NI x 4: fp8_gemm_kernel's 255 registers spilled 228 bytes);
// - the mma wrapper is not volatile, so ptxas may interleave the chains freely (the operands alone
//   fix the result); the fragment loads stay volatile (plain loads let ptxas hoist every mi's
//   fragments at once and spill);
// - tiles are a template (warps WR x WT of MI*16 rows x NI*8 tokens, STAGES-deep cp.async ring,
//   MINB CTAs per SM), chosen by shape in fp8_gemm2_pick: 128 x 64 with 2 CTAs per SM, or for
//   small grids 64 x 64 with 3 CTAs per SM;
// - the epilogue rounds to bf16 into shared memory and stores 16-byte runs of a token's row.
template <int MI, int NI, int WR, int WT, int STAGES> struct G2Tile {
    static constexpr int BR = WR * MI * 16, BT = WT * NI * 8, THREADS = WR * WT * 32;
    static constexpr int STAGE = (BR + BT) * 128 + BT * 4;
    static constexpr int OUT_PITCH = BR * 2 + 16; // bytes per token row of the bf16 staging
    static constexpr int SMEM = STAGES * STAGE > BT * OUT_PITCH ? STAGES * STAGE : BT * OUT_PITCH;
};

// d += A * B without `volatile`: a pure function of its operands, free to be scheduled.
__device__ __forceinline__ void mma_e4m3_nv(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                            uint32_t b0, uint32_t b1)
{
    asm("mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

template <int MI, int NI, int WR, int WT, int STAGES, int MINB>
__global__ void __launch_bounds__(WR *WT * 32, MINB)
    fp8_gemm2_kernel(const uint8_t *__restrict__ q, const float *__restrict__ sa, int m,
                     const uint8_t *__restrict__ w, const uint8_t *__restrict__ ws, int n, int k,
                     __nv_bfloat16 *__restrict__ y, int vec_out)
{
    using T = G2Tile<MI, NI, WR, WT, STAGES>;
    constexpr int BR = T::BR, BT = T::BT, NT = T::THREADS;
    static_assert(128 % (MI * 16) == 0, "a warp's rows lie in one 128-row scale block");
    static_assert((BR * 8) % NT == 0 && (BT * 8) % NT == 0, "whole chunks per thread");
    extern __shared__ __align__(128) uint8_t smem[];
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    const int wr = warp % WR, wt = warp / WR;
    const int rw0 = wr * MI * 16, tw0 = wt * NI * 8;
    const int row0 = blockIdx.x * BR, tok0 = blockIdx.y * BT;
    const int kb_n = k >> 7;
    const uint32_t sbase = (uint32_t)__cvta_generic_to_shared(smem);

    // Chunk (r, c) of a stage: row r, 16-byte segment c, at segment c ^ (r & 7) of its 128-byte row
    // (the 8 lanes of a quarter warp then read 8 distinct bank groups). Rows past n or m are
    // zero-filled from a valid address.
    auto load_stage = [&](int stage, int kb) {
        const uint32_t sA = sbase + stage * T::STAGE, sB = sA + BR * 128, sS = sB + BT * 128;
#pragma unroll
        for (int j = 0; j < BR * 8 / NT; j++) {
            const int i = tid + j * NT, r = i >> 3, c = i & 7;
            const int wrow = row0 + r;
            cp_async16(sA + r * 128 + ((c ^ (r & 7)) << 4), w + (size_t)min(wrow, n - 1) * k + (size_t)kb * 128 + c * 16,
                       wrow < n);
        }
#pragma unroll
        for (int j = 0; j < BT * 8 / NT; j++) {
            const int i = tid + j * NT, r = i >> 3, c = i & 7;
            const int trow = tok0 + r;
            cp_async16(sB + r * 128 + ((c ^ (r & 7)) << 4), q + (size_t)min(trow, m - 1) * k + (size_t)kb * 128 + c * 16,
                       trow < m);
        }
        for (int i = tid; i < BT; i += NT) {
            const int trow = tok0 + i;
            cp_async4(sS + i * 4, sa + (size_t)min(trow, m - 1) * kb_n + kb, trow < m);
        }
    };

    float acc[MI][NI][4];
#pragma unroll
    for (int i = 0; i < MI; i++)
#pragma unroll
        for (int j = 0; j < NI; j++)
#pragma unroll
            for (int c = 0; c < 4; c++)
                acc[i][j][c] = 0.f;

#pragma unroll
    for (int s = 0; s < STAGES - 1; s++) {
        if (s < kb_n)
            load_stage(s, s);
        cp_async_commit();
    }
    // The warp's rows lie in one 128-row scale block; rows past n are zero-filled, any scale will do.
    const uint8_t *wsr = ws + (size_t)min((row0 + rw0) >> 7, (n - 1) >> 7) * kb_n;
    const int so0 = ((2 * t) ^ g) << 4, so1 = ((2 * t + 1) ^ g) << 4; // segments 2t, 2t+1 of rows with r & 7 = g
    for (int kb = 0; kb < kb_n; kb++) {
        cp_async_wait<STAGES - 2>();
        __syncthreads();
        if (kb + STAGES - 1 < kb_n)
            load_stage((kb + STAGES - 1) % STAGES, kb + STAGES - 1);
        cp_async_commit();

        const int stage = kb % STAGES;
        const uint32_t sA = sbase + stage * T::STAGE, sB = sA + BR * 128;
        const float *sS = reinterpret_cast<const float *>(smem + stage * T::STAGE + (BR + BT) * 128);
        uint4 b[NI][2];
#pragma unroll
        for (int ni = 0; ni < NI; ni++) {
            const uint32_t rowp = sB + (tw0 + ni * 8 + g) * 128;
            b[ni][0] = lds128(rowp + so0);
            b[ni][1] = lds128(rowp + so1);
        }
        const float wsc = e8m0_to_float(__ldg(wsr + kb));
#pragma unroll
        for (int mi = 0; mi < MI; mi++) {
            uint4 a[2][2];
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const uint32_t rowp = sA + (rw0 + mi * 16 + h * 8 + g) * 128;
                a[h][0] = lds128(rowp + so0);
                a[h][1] = lds128(rowp + so1);
            }
            float part[NI][4];
#pragma unroll
            for (int ni = 0; ni < NI; ni++)
#pragma unroll
                for (int c = 0; c < 4; c++)
                    part[ni][c] = 0.f;
#pragma unroll
            for (int hs = 0; hs < 2; hs++) {
#pragma unroll
                for (int ni = 0; ni < NI; ni++)
                    mma_e4m3_nv(part[ni], a[0][hs].x, a[1][hs].x, a[0][hs].y, a[1][hs].y, b[ni][hs].x, b[ni][hs].y);
#pragma unroll
                for (int ni = 0; ni < NI; ni++)
                    mma_e4m3_nv(part[ni], a[0][hs].z, a[1][hs].z, a[0][hs].w, a[1][hs].w, b[ni][hs].z, b[ni][hs].w);
            }
#pragma unroll
            for (int ni = 0; ni < NI; ni++) {
                const float s0 = sS[tw0 + ni * 8 + 2 * t], s1 = sS[tw0 + ni * 8 + 2 * t + 1];
                acc[mi][ni][0] += (part[ni][0] * s0) * wsc;
                acc[mi][ni][1] += (part[ni][1] * s1) * wsc;
                acc[mi][ni][2] += (part[ni][2] * s0) * wsc;
                acc[mi][ni][3] += (part[ni][3] * s1) * wsc;
            }
        }
    }
    cp_async_wait<0>();
    __syncthreads(); // every warp is done with the ring: it becomes the bf16 staging [BT][BR]
#pragma unroll
    for (int mi = 0; mi < MI; mi++)
#pragma unroll
        for (int ni = 0; ni < NI; ni++) {
            const int r = rw0 + mi * 16 + g, c = tw0 + ni * 8 + 2 * t;
            __nv_bfloat16 *p0 = reinterpret_cast<__nv_bfloat16 *>(smem + c * T::OUT_PITCH) + r;
            __nv_bfloat16 *p1 = reinterpret_cast<__nv_bfloat16 *>(smem + (c + 1) * T::OUT_PITCH) + r;
            p0[0] = __float2bfloat16_rn(acc[mi][ni][0]);
            p1[0] = __float2bfloat16_rn(acc[mi][ni][1]);
            p0[8] = __float2bfloat16_rn(acc[mi][ni][2]);
            p1[8] = __float2bfloat16_rn(acc[mi][ni][3]);
        }
    __syncthreads();
    // 16-byte runs of 8 rows of one token; ragged ends (and n % 8 != 0) element by element.
    for (int i = tid; i < BT * (BR / 8); i += NT) {
        const int c = i / (BR / 8), j = i % (BR / 8), tok = tok0 + c, r = row0 + j * 8;
        if (tok >= m || r >= n)
            continue;
        const uint8_t *src = smem + c * T::OUT_PITCH + j * 16;
        __nv_bfloat16 *dst = y + (size_t)tok * n + r;
        if (vec_out && r + 8 <= n) {
            *reinterpret_cast<uint4 *>(dst) = *reinterpret_cast<const uint4 *>(src);
        } else {
            for (int e = 0; e < 8 && r + e < n; e++)
                dst[e] = reinterpret_cast<const __nv_bfloat16 *>(src)[e];
        }
    }
}

// ---- FP8 GEMV (decode, m <= 8) ----
//
// A CTA of 4 warps covers 4/WS row tiles of 16 rows; the WS warps of a tile split its K range and
// their partials are added in warp order through shared memory (deterministic; no second pass).
// Each warp streams its 128-K blocks through its own GV_NS-deep cp.async ring in shared memory
// (a stage: the tile's 16 rows x 128 bytes), so that GV_NS - 1 blocks are always in flight while
// one is computed; the previous kernel loaded a batch into registers, computed it and ended (bursts,
// 128 registers, 2 CTAs per SM: 2.2-2.5 TB/s at 32 MB, latency-bound below).
//
// Activations: with F32 = false the m rows of each block ride in the ring with the weights (already
// quantised by cuda_act_quant); with F32 = true (m <= 2, cuda_fp8_gemv_f32m) the warp quantises the
// blocks of its K range itself from the fp32 input (warp_quant128: the bytes and scales of
// cuda_act_quant on its bf16 rounding) into its activation area while the first weight stages
// load, which saves the quantisation launch; the output is then fp32 (bf16-rounded values), which
// saves the conversion launch too.
//
// Within one 128-K block the 4 mma steps all add into one partial, so any permutation of the block's
// 128 K positions that A and B share gives the same sum. Lane t of a quad takes bytes [16t, 16t+16)
// and [64+16t, 64+16t+16) of the block. In shared memory the 16-byte chunk c of row r sits at
// chunk c ^ 4(r & 1), so the 8 lanes of a quarter warp (rows 2i, 2i+1) read 8 distinct chunks.
constexpr int GV_WARPS = 4, GV_NS = 4;
constexpr int GV_WSTAGE = 16 * 128;                     // weights of 16 rows, one 128-K block
constexpr int GV_ACT = 4096;                            // activations: GV_NS x 8 tokens, or 32 blocks x 1 token
constexpr int GV_WARP_SMEM = GV_NS * GV_WSTAGE + GV_ACT; // 12 KB per warp, 48 KB per CTA
constexpr int GV_F32_MAX_BLOCKS = GV_ACT / 128;

// Warps per row tile (ws_log2: 1, 2 or 4 = the CTA): at most 8 blocks of 128 K per warp where
// possible, then more warps per tile while there are fewer than ~2 CTAs per SM and each warp keeps
// >= 4 blocks (a ring of GV_NS - 1 blocks in flight needs a few blocks to stream).
int gemv_ws_log2(int n, int k)
{
    const int kb_n = k / 128, tiles = (n + 15) / 16;
    int l = 0;
    while (l < 2 && (kb_n + (1 << l) - 1) >> l > 8)
        l++;
    while (l < 2 && (tiles + (GV_WARPS >> l) - 1) / (GV_WARPS >> l) < 264 && kb_n >> (l + 1) >= 4)
        l++;
    return l;
}

// F32: MT the most tokens (1 or 2; the one-token instance keeps the code it had before two were taken).
template <bool F32, int MT = 1>
__global__ void __launch_bounds__(32 * GV_WARPS)
    fp8_gemv_kernel(const uint8_t *__restrict__ q, const float *__restrict__ sa, const float *__restrict__ xf, int m,
                    const uint8_t *__restrict__ w, const uint8_t *__restrict__ ws, int n, int k,
                    __nv_bfloat16 *__restrict__ y, float *__restrict__ y1, int n1, float *__restrict__ y2, int ws_log2)
{
    __shared__ __align__(128) uint8_t smem[GV_WARPS * GV_WARP_SMEM];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int wsplit = 1 << ws_log2;                   // warps per row tile
    const int sub = warp & (wsplit - 1), tile_in = warp >> ws_log2;
    const int tiles_cta = GV_WARPS >> ws_log2;
    const int kb_n = k >> 7;
    const int row0 = (blockIdx.x * tiles_cta + tile_in) * 16;
    const int per = (kb_n + wsplit - 1) / wsplit;      // blocks of this warp: [kb_lo, kb_hi)
    const int kb_lo = min(sub * per, kb_n), kb_hi = row0 < n ? min(kb_lo + per, kb_n) : kb_lo;
    const int nblk = kb_hi - kb_lo;
    const uint32_t sbase = (uint32_t)__cvta_generic_to_shared(smem) + warp * GV_WARP_SMEM;
    const uint32_t sact = sbase + GV_NS * GV_WSTAGE;
    const uint8_t *wsr = ws + (size_t)(min(row0, n - 1) >> 7) * kb_n;
    const int c0 = 2 * t, c1 = 2 * t + 1; // token columns of this thread's results
    const float *sa0 = sa + (size_t)min(c0, m - 1) * kb_n, *sa1 = sa + (size_t)min(c1, m - 1) * kb_n;

    // Block kb_lo + j into ring slot j % GV_NS: lane L copies chunks L, L+32, L+64, L+96 of the 16
    // weight rows (rows >= n: zero-filled from a valid address) and, without F32, chunks L, L+32 of
    // the activations (token r < m at sact + slot * 1024 + r * 128).
    auto issue_w = [&](int j) {
        const uint32_t slot = sbase + (j % GV_NS) * GV_WSTAGE;
        const size_t koff = (size_t)(kb_lo + j) * 128;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int c = lane + 32 * i, r = c >> 3, ch = c & 7;
            cp_async16(slot + r * 128 + ((ch ^ ((r & 1) << 2)) << 4),
                       w + (size_t)min(row0 + r, n - 1) * k + koff + ch * 16, row0 + r < n);
        }
    };
    auto issue_a = [&](int j) {
        const size_t koff = (size_t)(kb_lo + j) * 128;
        if (!F32) {
#pragma unroll
            for (int i = 0; i < 2; i++) {
                const int c = lane + 32 * i, r = c >> 3, ch = c & 7;
                if (r < m)
                    cp_async16(sact + (j % GV_NS) * 1024 + r * 128 + ((ch ^ ((r & 1) << 2)) << 4),
                               q + (size_t)r * k + koff + ch * 16, true);
            }
        }
    };

    float acc[4] = {0.f, 0.f, 0.f, 0.f};
    // PDL: the first GV_NS - 1 weight stages (immutable) go in flight before the wait, the activations
    // (the previous kernel's) after it. They join the first stage's commit group, so ring slot j still
    // holds block j's weights and activations when group j has landed.
#pragma unroll
    for (int j = 0; j < GV_NS - 1; j++)
        if (j < nblk)
            issue_w(j);
    pdl_begin();
#pragma unroll
    for (int j = 0; j < GV_NS - 1; j++) {
        if (j < nblk)
            issue_a(j);
        cp_async_commit();
    }
    // F32: lane L holds the activation scale of the warp's block L for token 0 (sreg) and token 1
    // (sreg1); token r's block j sits at sact + (r * nblk + j) * 128
    float sreg = 0.f, sreg1 = 0.f;
    if (F32) {
        for (int r = 0; r < (MT > 1 ? m : 1); r++)
            for (int jb = 0; jb < nblk; jb += 8) {
                float4 v[8];
#pragma unroll
                for (int u = 0; u < 8; u++)
                    if (jb + u < nblk)
                        v[u] = __ldg(reinterpret_cast<const float4 *>(xf + (size_t)r * k + (size_t)(kb_lo + jb + u) * 128 +
                                                                       lane * 4));
#pragma unroll
                for (int u = 0; u < 8; u++) {
                    if (jb + u >= nblk)
                        break;
                    const float x4[4] = {bf16_round(v[u].x), bf16_round(v[u].y), bf16_round(v[u].z),
                                         bf16_round(v[u].w)};
                    float sc;
                    const uint32_t packed = warp_quant128(x4, &sc);
                    asm volatile("st.shared.u32 [%0], %1;\n" ::"r"(sact + (r * nblk + jb + u) * 128 + lane * 4),
                                 "r"(packed));
                    if (lane == jb + u) {
                        if (MT > 1 && r)
                            sreg1 = sc;
                        else
                            sreg = sc;
                    }
                }
            }
    }
    const uint32_t sw = (uint32_t)((g & 1) << 2);
    for (int j = 0; j < nblk; j++) {
        // Every lane is done with slot (j - 1) % GV_NS (read in the previous iteration): refill it.
        __syncwarp();
        if (j + GV_NS - 1 < nblk) {
            issue_w(j + GV_NS - 1);
            issue_a(j + GV_NS - 1);
        }
        cp_async_commit();
        const int kb = kb_lo + j;
        const float wsc = e8m0_to_float(__ldg(wsr + kb));
        float s0, s1;
        if (F32) { // m <= 2: only t = 0 has token columns (0 and 1)
            const float sj = __shfl_sync(0xffffffffu, sreg, j);
            const float sj1 = MT > 1 ? __shfl_sync(0xffffffffu, sreg1, j) : 0.f;
            s0 = c0 < m ? sj : 0.f, s1 = MT > 1 && c1 < m ? sj1 : 0.f;
        } else {
            s0 = c0 < m ? __ldg(sa0 + kb) : 0.f, s1 = c1 < m ? __ldg(sa1 + kb) : 0.f;
        }
        cp_async_wait<GV_NS - 1>(); // this lane's copies of block j have landed
        __syncwarp();               // ... and every other lane's (and, with F32, the quantised blocks)
        const uint32_t slot = sbase + (j % GV_NS) * GV_WSTAGE;
        const uint4 v0 = lds128(slot + g * 128 + ((t ^ sw) << 4)), v1 = lds128(slot + g * 128 + (((4 + t) ^ sw) << 4));
        const uint4 v2 = lds128(slot + (g + 8) * 128 + ((t ^ sw) << 4));
        const uint4 v3 = lds128(slot + (g + 8) * 128 + (((4 + t) ^ sw) << 4));
        uint4 x0 = make_uint4(0, 0, 0, 0), x1 = x0;
        if (g < m) {
            if (F32) {
                const uint32_t xa = sact + ((MT > 1 ? g * nblk : 0) + j) * 128;
                x0 = lds128(xa + 16 * t);
                x1 = lds128(xa + 64 + 16 * t);
            } else {
                x0 = lds128(sact + (j % GV_NS) * 1024 + g * 128 + ((t ^ sw) << 4));
                x1 = lds128(sact + (j % GV_NS) * 1024 + g * 128 + (((4 + t) ^ sw) << 4));
            }
        }
        const uint32_t a0[8] = {v0.x, v0.y, v0.z, v0.w, v1.x, v1.y, v1.z, v1.w};
        const uint32_t a1[8] = {v2.x, v2.y, v2.z, v2.w, v3.x, v3.y, v3.z, v3.w};
        const uint32_t b[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
        float d[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
        for (int s = 0; s < 4; s++)
            mma_e4m3(d, a0[2 * s], a1[2 * s], a0[2 * s + 1], a1[2 * s + 1], b[2 * s], b[2 * s + 1]);
        // (partial * act_scale) * weight_scale, as the reference orders it.
        acc[0] += (d[0] * s0) * wsc;
        acc[1] += (d[1] * s1) * wsc;
        acc[2] += (d[2] * s0) * wsc;
        acc[3] += (d[3] * s1) * wsc;
    }
    cp_async_wait<0>();
    __syncwarp();
    // The warp's partials go to the start of its own ring (no other warp reads it before the barrier).
    float *red = reinterpret_cast<float *>(smem + warp * GV_WARP_SMEM); // [16][8]
    red[g * 8 + c0] = acc[0];
    red[g * 8 + c1] = acc[1];
    red[(g + 8) * 8 + c0] = acc[2];
    red[(g + 8) * 8 + c1] = acc[3];
    __syncthreads();
    // tiles_cta row tiles' worth of outputs (16 rows x 8 tokens each): sum the tile's warps in order.
    for (int i = threadIdx.x; i < tiles_cta * 128; i += blockDim.x) {
        const int ti = i >> 7, r = (i >> 3) & 15, c = i & 7;
        const int row = (blockIdx.x * tiles_cta + ti) * 16 + r;
        if (c >= m || row >= n)
            continue;
        float sum = 0.f;
        for (int v = 0; v < wsplit; v++)
            sum += reinterpret_cast<const float *>(smem + ((ti << ws_log2) + v) * GV_WARP_SMEM)[r * 8 + c];
        const __nv_bfloat16 o = __float2bfloat16_rn(sum);
        if (!F32)
            y[(size_t)c * n + row] = o;
        else if (row < n1)
            y1[(size_t)c * n1 + row] = __bfloat162float(o);
        else
            y2[(size_t)c * (n - n1) + row - n1] = __bfloat162float(o);
    }
}

// ---- FP4 grouped GEMV (routed experts, decode) ----
//
// CUDA_FP4_GEMV_V1, the first kernels (fp4_gemv_kernel, fp4_gemv_rows_kernel); the default is V2
// (fp4_gemv2_kernel, below). V1 stays reachable through cuda_fp4_gemv_grouped_variant and
// CTX_CUDA_FP4_GEMV=1.
//
// One mma covers two weight rows R (tile rows 0-7) and R+1 (tile rows 8-15) over 256 K: tile row i
// is the 32-K block i of that 256-K span, and B column j is the activation's block j. So the wanted
// per-block partials are the diagonal C[i][i] (lane 4i + i/2, register i&1 for R, 2 + (i&1) for R+1)
// and every load is a whole 128-byte line: lane (g,t) reads 4 bytes at byte 16g + 4t of each row's
// 128-byte span, and 8 activation bytes of block g.
//
// For k >= 4096 (w1|w3): a CTA owns FP4_NP row pairs (8 rows) of one pair p; its FP4_WK warps
// split the K spans and add their sums in warp order through shared memory (deterministic). Small
// CTAs, many of them (n/8 x npairs: 3072 for V4-Flash's w1|w3 of 6 experts) and fewer registers,
// so that 5 CTAs (20 warps) per SM are resident and a CTA waiting for its weights overlaps the
// others' arithmetic: the earlier kernel (fp4_gemv_rows_kernel below: 4 warps x 8 rows over all of
// K, dependent 8 KB batches per warp) reached 17% occupancy. Each warp loads a batch of FP4_U spans
// (its activation fragments once for all its rows, every weight word of the batch: 4 KB per warp)
// before its first mma; the batch's scales come in as whole words on the first lanes and reach the
// diagonal lanes by shuffles. Measured (ncu, H200): 27% achieved occupancy, SM throughput 57%,
// DRAM 23%: the per-mma scalar work (nibble conversion, scale shuffles and decodes; 1/8 of each
// mma's outputs are used) now bounds it, not the loads.
constexpr int FP4_NP = 4, FP4_U = 4, FP4_WK = 4;

__global__ void __launch_bounds__(32 * FP4_WK, 5)
    fp4_gemv_kernel(const uint8_t *__restrict__ q, const float *__restrict__ sa, int x_group,
                    const int *__restrict__ ids, const uint8_t *const *__restrict__ wtab,
                    const uint8_t *const *__restrict__ stab, int n, int k, __nv_bfloat16 *__restrict__ y)
{
    __shared__ float red[FP4_WK][2 * FP4_NP];
    pdl_begin(); // the expert ids are the router's: no weight address is known before the wait
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int p = blockIdx.y;
    const int rbase = blockIdx.x * (2 * FP4_NP); // < n: the grid has ceil(n / 8) columns
    const int e = __ldg(ids + p);
    const uint8_t *w = wtab[e], *sc = stab[e];
    const int xrow = p / x_group;
    const uint8_t *x = q + (size_t)xrow * k;
    const int kb_n = k >> 7, kh = k >> 1, k32 = k >> 5;
    const float *xs = sa + (size_t)xrow * kb_n;
    // Row i of the CTA starts kh (weights) and k32 (scales) bytes after row i-1; rows >= n are not
    // loaded (zero) and not written.
    const uint8_t *wb = w + (size_t)rbase * kh + g * 16 + t * 4, *sb = sc + (size_t)rbase * k32;
    const int rows = min(2 * FP4_NP, n - rbase);
    const bool diag = t == (g >> 1), odd = g & 1;
    const int src = g >> 2; // + 2u: the lane holding this lane's scale word of span u
    // This warp's spans [s_lo, s_hi) of the row's 256-K spans.
    const int steps = (k + 255) >> 8, per = (steps + FP4_WK - 1) / FP4_WK;
    const int s_lo = min(warp * per, steps), s_hi = min(s_lo + per, steps);
    float acc[2 * FP4_NP];
#pragma unroll
    for (int i = 0; i < 2 * FP4_NP; i++)
        acc[i] = 0.f;
    for (int st0 = s_lo; st0 < s_hi; st0 += FP4_U) {
        uint32_t a[2 * FP4_NP][FP4_U], swd[2 * FP4_NP];
        uint2 xv[FP4_U];
#pragma unroll
        for (int u = 0; u < FP4_U; u++) {
            const int st = st0 + u;
            const bool ok = st < s_hi && st * 8 + g < k32; // k may end inside a 256-K span
#pragma unroll
            for (int i = 0; i < 2 * FP4_NP; i++)
                a[i][u] = ok && i < rows ? ldg_stream32(wb + (size_t)i * kh + (size_t)st * 128) : 0u;
            xv[u] = ok ? __ldg(reinterpret_cast<const uint2 *>(x + (size_t)st * 256 + g * 32 + t * 8)) : make_uint2(0, 0);
        }
        // Scale words: lane L < 2*FP4_U holds bytes [4L, 4L+4) of the batch's 8*FP4_U block scales of
        // each row, and the activation scale of 128-K block 2*st0 + L. (Words past s_hi but inside
        // the row are loaded and not used.)
        const bool sl = lane < 2 * FP4_U && st0 * 8 + 4 * lane < k32;
#pragma unroll
        for (int i = 0; i < 2 * FP4_NP; i++)
            swd[i] = sl && i < rows ? __ldg(reinterpret_cast<const uint32_t *>(sb + (size_t)i * k32 + st0 * 8) + lane) : 0u;
        const float asw = sl && st0 * 2 + lane < kb_n ? __ldg(xs + st0 * 2 + lane) : 0.f;
#pragma unroll
        for (int u = 0; u < FP4_U; u++) {
            if (st0 + u >= s_hi)
                break;
            // Low nibbles are the even K positions of the lane's 8, high nibbles the odd ones; the
            // activation bytes are permuted the same way.
            const uint32_t b0 = __byte_perm(xv[u].x, xv[u].y, 0x6420), b1 = __byte_perm(xv[u].x, xv[u].y, 0x7531);
            const float as = __shfl_sync(0xffffffffu, asw, 2 * u + src);
            const float asd = diag ? as * 64.f : 0.f; // undo the 2^-6 of the e4m3 view; 0 off the diagonal
#pragma unroll
            for (int j = 0; j < FP4_NP; j++) {
                float d[4] = {0.f, 0.f, 0.f, 0.f};
                mma_e4m3(d, fp4_lo_to_e4m3(a[2 * j][u]), fp4_lo_to_e4m3(a[2 * j + 1][u]), fp4_hi_to_e4m3(a[2 * j][u]),
                         fp4_hi_to_e4m3(a[2 * j + 1][u]), b0, b1);
                const uint32_t w0 = __shfl_sync(0xffffffffu, swd[2 * j], 2 * u + src);
                const uint32_t w1 = __shfl_sync(0xffffffffu, swd[2 * j + 1], 2 * u + src);
                const float ws0 = e8m0_to_float((w0 >> (8 * (g & 3))) & 255u);
                const float ws1 = e8m0_to_float((w1 >> (8 * (g & 3))) & 255u);
                // ((partial * 64) * act_scale) * weight_scale: the products by 64 and by a power-of-two
                // act_scale are exact, so this equals the reference's (partial * act_scale) * weight_scale.
                acc[2 * j] += ((odd ? d[1] : d[0]) * asd) * ws0;
                acc[2 * j + 1] += ((odd ? d[3] : d[2]) * asd) * ws1;
            }
        }
    }
#pragma unroll
    for (int i = 0; i < 2 * FP4_NP; i++) {
        float v = acc[i];
        for (int o = 16; o > 0; o >>= 1)
            v += __shfl_xor_sync(0xffffffffu, v, o);
        if (lane == 0)
            red[warp][i] = v;
    }
    __syncthreads();
    if (threadIdx.x < rows) {
        float v = 0.f;
        for (int wi = 0; wi < FP4_WK; wi++)
            v += red[wi][threadIdx.x];
        y[(size_t)p * n + rbase + threadIdx.x] = __float2bfloat16_rn(v);
    }
}

// The kernel before fp4_gemv_kernel, kept for short rows (k < 4096: V4's w2) and for prefill (more
// than 128 pairs): a CTA of 4 warps covers 32 rows of one pair, each warp FP4_NP row pairs over all
// of K. bench-gpu on the H200 (6 pairs; this kernel 2026-11-28, the split one 2026-11-29): Flash w2
// (4096 x 2048) 19.7 us here against 22.8 us split over K (8 KB per CTA is too little to hide the
// CTA's start), Pro w2 (7168 x 3072) 42.0 against 45.0 us; for k >= 4096 the split kernel wins
// (Flash w1|w3 18.0 against 19.6 us, Pro w1|w3 42.2 against 50.1).
//
// A warp owns FP4_NP row pairs and walks K in batches of FP4R_U spans: it loads the batch's
// activation fragments once for all its rows and every weight word of the batch (8 KB) before the
// first mma. The batch's scales come in as whole words on the first lanes and reach the diagonal
// lanes by shuffles.
constexpr int FP4R_U = 8;

__global__ void __launch_bounds__(128, 4)
    fp4_gemv_rows_kernel(const uint8_t *__restrict__ q, const float *__restrict__ sa, int x_group,
                         const int *__restrict__ ids, const uint8_t *const *__restrict__ wtab,
                         const uint8_t *const *__restrict__ stab, int n, int k, __nv_bfloat16 *__restrict__ y)
{
    pdl_begin(); // the expert ids are the router's: no weight address is known before the wait
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int p = blockIdx.y;
    const int rbase = (blockIdx.x * 4 + warp) * (2 * FP4_NP);
    if (rbase >= n)
        return;
    const int e = __ldg(ids + p);
    const uint8_t *w = wtab[e], *sc = stab[e];
    const int xrow = p / x_group;
    const uint8_t *x = q + (size_t)xrow * k;
    const int kb_n = k >> 7, kh = k >> 1, k32 = k >> 5;
    const float *xs = sa + (size_t)xrow * kb_n;
    // Row i of the warp starts kh (weights) and k32 (scales) bytes after row i-1; rows >= n are not
    // loaded (zero) and not written.
    const uint8_t *wb = w + (size_t)rbase * kh + g * 16 + t * 4, *sb = sc + (size_t)rbase * k32;
    const int rows = min(2 * FP4_NP, n - rbase);
    const bool diag = t == (g >> 1), odd = g & 1;
    const int src = g >> 2; // + 2u: the lane holding this lane's scale word of span u
    float acc[2 * FP4_NP];
#pragma unroll
    for (int i = 0; i < 2 * FP4_NP; i++)
        acc[i] = 0.f;
    const int steps = (k + 255) >> 8;
    for (int st0 = 0; st0 < steps; st0 += FP4R_U) {
        uint32_t a[2 * FP4_NP][FP4R_U], swd[2 * FP4_NP];
        uint2 xv[FP4R_U];
#pragma unroll
        for (int u = 0; u < FP4R_U; u++) {
            const int st = st0 + u;
            const bool ok = st < steps && st * 8 + g < k32; // k may end inside a 256-K span
#pragma unroll
            for (int i = 0; i < 2 * FP4_NP; i++)
                a[i][u] = ok && i < rows ? ldg_stream32(wb + (size_t)i * kh + (size_t)st * 128) : 0u;
            xv[u] = ok ? __ldg(reinterpret_cast<const uint2 *>(x + (size_t)st * 256 + g * 32 + t * 8)) : make_uint2(0, 0);
        }
        // Scale words: lane L < 2*FP4R_U holds bytes [4L, 4L+4) of the batch's 8*FP4R_U block scales of
        // each row, and the activation scale of 128-K block 2*st0 + L.
        const bool sl = lane < 2 * FP4R_U && st0 * 8 + 4 * lane < k32;
#pragma unroll
        for (int i = 0; i < 2 * FP4_NP; i++)
            swd[i] = sl && i < rows ? __ldg(reinterpret_cast<const uint32_t *>(sb + (size_t)i * k32 + st0 * 8) + lane) : 0u;
        const float asw = sl && st0 * 2 + lane < kb_n ? __ldg(xs + st0 * 2 + lane) : 0.f;
#pragma unroll
        for (int u = 0; u < FP4R_U; u++) {
            if (st0 + u >= steps)
                break;
            // Low nibbles are the even K positions of the lane's 8, high nibbles the odd ones; the
            // activation bytes are permuted the same way.
            const uint32_t b0 = __byte_perm(xv[u].x, xv[u].y, 0x6420), b1 = __byte_perm(xv[u].x, xv[u].y, 0x7531);
            const float as = __shfl_sync(0xffffffffu, asw, 2 * u + src);
            const float asd = diag ? as * 64.f : 0.f; // undo the 2^-6 of the e4m3 view; 0 off the diagonal
#pragma unroll
            for (int j = 0; j < FP4_NP; j++) {
                float d[4] = {0.f, 0.f, 0.f, 0.f};
                mma_e4m3(d, fp4_lo_to_e4m3(a[2 * j][u]), fp4_lo_to_e4m3(a[2 * j + 1][u]), fp4_hi_to_e4m3(a[2 * j][u]),
                         fp4_hi_to_e4m3(a[2 * j + 1][u]), b0, b1);
                const uint32_t w0 = __shfl_sync(0xffffffffu, swd[2 * j], 2 * u + src);
                const uint32_t w1 = __shfl_sync(0xffffffffu, swd[2 * j + 1], 2 * u + src);
                const float ws0 = e8m0_to_float((w0 >> (8 * (g & 3))) & 255u);
                const float ws1 = e8m0_to_float((w1 >> (8 * (g & 3))) & 255u);
                // ((partial * 64) * act_scale) * weight_scale: the products by 64 and by a power-of-two
                // act_scale are exact, so this equals the reference's (partial * act_scale) * weight_scale.
                acc[2 * j] += ((odd ? d[1] : d[0]) * asd) * ws0;
                acc[2 * j + 1] += ((odd ? d[3] : d[2]) * asd) * ws1;
            }
        }
    }
#pragma unroll
    for (int i = 0; i < 2 * FP4_NP; i++) {
        float v = acc[i];
        for (int o = 16; o > 0; o >>= 1)
            v += __shfl_xor_sync(0xffffffffu, v, o);
        if (lane == 0 && rbase + i < n)
            y[(size_t)p * n + rbase + i] = __float2bfloat16_rn(v);
    }
}

// ---- FP4 grouped GEMV, second kernel (CUDA_FP4_GEMV_V2): exact integer partials on int8 mma ----
//
// Why integers: a 32-K block's partial is a sum of 32 products e2m1 x e4m3. With w = 2 * e2m1 (an
// integer in [-12, 12]) and X = 512 * e4m3 (an integer, |X| <= 229376), every product and the whole
// block sum w.X (|sum| < 2^27) are exact in int32, and w.X = 1024 * part. So the block partial comes
// out of `mma.sync m16n8k32 s8.s8 -> s32` (native on sm_90, unlike the e4m3 one, which ptxas builds from
// f16 steps) exactly, and I2F(w.X) * 2^-10 is the reference's (float)part bit for bit. Each row is
// then summed in ascending block order with the reference's ((part * as) * ws) in explicitly rounded
// fp32 (no FMA contraction), so the output is bf16(kernels/ref.c) exactly.
//
// The operands: X does not fit in int8, so the activation is split into three signed base-128 digits
// X = d0 + 128 d1 + 16384 d2 (|d| <= 127), which go to three columns of B; the weights' magnitudes
// 2|e2m1| come from one prmt per 4 codes (a byte table; a code whose sign bit is set selects the
// table byte's bit 7, i.e. 0), so positive and negative weights are two A operands: C += A+ B and
// D += A- B, and the partial is (C - D) combined over the digit columns. B's other columns carry the
// next block's digits (columns 4-6; a block's B is zero in the other block's columns), so one C/D pair
// holds two blocks and all four lanes of a row group have a (row, block) to scale. Within a 32-K
// block the K order is free (A and B use the same one): lane t's A word t (8 codes) is K 8t..8t+7,
// split into logical K 4t.. (low 16 bits) and 16 + 4t.. (high), and the digit rows are stored so.
//
// Layout: a CTA is W warps on TPC = W / KS tiles of 16 weight rows of one pair (blockIdx.y); with
// KS > 1, KS warps share a tile, one per K part (consecutive stages). Each warp streams 128-K stages (16 rows x 64
// bytes of codes + 16 x 4 scale bytes) through its own NS-deep cp.async ring, as fp8_gemv_kernel
// does; ldmatrix.x4 gives each lane its A words for two blocks of rows g and g+8 (rows 64 bytes apart,
// 16-byte chunks XOR-swizzled by (row / 2) & 3: conflict-free). A stage's scaling runs one
// iteration after its mma's (software pipelining across the ring's wait). The CTA turns its
// activation row into digits once, through a 256-entry table in shared memory, while its warps' first
// stages are in flight. With KS > 1 the warps of K parts 1.. store their scaled block terms in
// shared memory and part 0's warp adds them after its own, in order: the same bits as KS = 1.
// Configurations (KS, W, NS) are template arguments; fp4v2_pick chooses by shape.
//
// Measured (H200, 2026-11-29, bench-gpu fp4, V1 and every configuration in one run; graph times,
// copy floor 4231 GB/s): the engine's Flash w1|w3 call (12 pairs of 2048 x 4096) 22.2 us against
// V1's 31.5 (1.42x, 57% of the floor), w2 (6 of 4096 x 2048) 11.9 against 19.0 (1.59x, 53%), S = 2
// 45.4 / 22.0 against 58.7 / 31.4, Pro w2 31.8 against 41.1 (1.29x), Pro w1|w3 67.6 against 77.1
// (1.14x, four K parts), 768 pairs 1230 against 1560 us. Why not the floor: Nsight Compute on the
// Flash w1|w3 call (k2 w4 ring3) has DRAM at 31%, 4 warps a scheduler with 1.5 eligible, stalls
// spread over math-pipe throttle, fixed-latency waits and long scoreboard; the k1 w4 ring4 loop is
// ~220 SASS instructions a stage (4 blocks x 16 rows: 8 IMMA, 32 PRMT, 2 LDSM, ~30 moves of the prmt
// table constants from uniform registers that ptxas re-materialises each stage, the rest the combine
// and scaling), so the SMs issue rather than wait for DRAM. Tried (2026-11-29, seventh session): the two
// table words loaded once by an opaque ld.shared into vector registers (a plain load of constants is
// folded back into literals) - the engine's routed-expert stage got slower (0.215 -> 0.257 ms a flash4
// step; w1|w3 22.2 -> 23.5 us, Pro w2 31.8 -> 35.6 us), so the literals stay. Next: more weight rows
// per lane so that the fixed per-(row, block)
// scaling (I2F, 3 FMUL, 2 shuffles, 2 FADD) is spread over more products. At 64 registers (the first
// version) ptxas re-computed every lane constant in each stage (~300 instructions a stage, 0.7-1.0x
// V1), hence the launch bound of 16 warps an SM.
constexpr int F4_WST = 16 * 64, F4_STAGE = F4_WST + 16 * 4; // weights + scale bytes of one 128-K stage
constexpr int F4_PAIR = 6 * 32; // digits of a block pair: [block 0 d0..d2, block 1 d0..d2][32 K]

__host__ __device__ constexpr int fp4v2_smem(int ks, int w, int ns, int k)
{
    // ring, digit table, digits, then the later K parts' scaled terms (256 bytes a stage)
    return w * ns * F4_STAGE + 1024 + (k / 64) * F4_PAIR +
           (ks > 1 ? (w / ks) * (k / 128 - (k / 128 + ks - 1) / ks) * 256 : 0);
}

// e4m3 byte v -> the int8 digits of X = 512 * value: d0 | d1 << 8 | d2 << 16 (two's complement bytes).
// NaN (never produced by cuda_act_quant, which saturates) gives 0.
__device__ __forceinline__ uint32_t fp4v2_digits(uint32_t v)
{
    const uint32_t e = (v >> 3) & 15u, m = v & 7u;
    if ((v & 0x7fu) == 0x7fu)
        return 0;
    const uint32_t mag = e == 0 ? m : (8u + m) << (e - 1);
    uint32_t d0 = mag & 127u, d1 = (mag >> 7) & 127u, d2 = mag >> 14;
    if (v & 0x80u)
        d0 = (256u - d0) & 255u, d1 = (256u - d1) & 255u, d2 = (256u - d2) & 255u;
    return d0 | d1 << 8 | d2 << 16;
}

__device__ __forceinline__ uint32_t prmt(uint32_t a, uint32_t b, uint32_t sel)
{
    uint32_t r;
    asm("prmt.b32 %0, %1, %2, %3;\n" : "=r"(r) : "r"(a), "r"(b), "r"(sel));
    return r;
}

// d += A (16x32 s8, row) * B (32x8 s8, col), int32 accumulators (exact).
__device__ __forceinline__ void mma_s8(int (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                       uint32_t b1)
{
    asm("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void ldsm_x4(uint32_t addr, uint32_t &r0, uint32_t &r1, uint32_t &r2, uint32_t &r3)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(addr));
}

// e8m0 as kernels/ref.c decodes it (0 -> 2^-127, 255 -> NaN), without branches.
__device__ __forceinline__ float e8m0_sel(uint32_t b)
{
    return __uint_as_float(b == 0 ? 0x00400000u : b == 255 ? 0x7fc00000u : b << 23);
}

// Registers: up to 128 (16 warps an SM; see above).
template <int KS, int W, int NS>
__global__ void __launch_bounds__(32 * W, 16 / W)
    fp4_gemv2_kernel(const uint8_t *__restrict__ q, const float *__restrict__ sa, int x_group,
                     const int *__restrict__ ids, const uint8_t *const *__restrict__ wtab,
                     const uint8_t *const *__restrict__ stab, int n, int k, __nv_bfloat16 *__restrict__ y)
{
    constexpr int TPC = W / KS;
    extern __shared__ __align__(128) uint8_t f4smem[];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int tile = warp % TPC, part = warp / TPC;
    const uint32_t s0 = (uint32_t)__cvta_generic_to_shared(f4smem);
    uint32_t *lut = reinterpret_cast<uint32_t *>(f4smem + W * NS * F4_STAGE);
    uint8_t *dig = f4smem + W * NS * F4_STAGE + 1024;
    const uint32_t sdig = s0 + W * NS * F4_STAGE + 1024;
    for (int i = threadIdx.x; i < 256; i += blockDim.x) // a constant table: before the PDL wait
        lut[i] = fp4v2_digits((uint32_t)i);
    pdl_begin(); // the expert ids are the router's: no weight address is known before the wait
    const int p = blockIdx.y;
    const int row0 = (blockIdx.x * TPC + tile) * 16;
    const int e = __ldg(ids + p);
    const uint8_t *w = wtab[e], *sc = stab[e];
    const int xrow = p / x_group;
    const int kh = k >> 1, k32 = k >> 5, nst = k >> 7;
    const int nq = (nst + KS - 1) / KS; // stages of a K part (the last may have fewer)
    const int st_lo = min(part * nq, nst), st_hi = min(st_lo + nq, nst);
    const bool active = row0 < n;
    const int nmine = active ? st_hi - st_lo : 0;
    const uint32_t sbase = s0 + warp * (NS * F4_STAGE);

    // Stage st_lo + i into ring slot i % NS: lane L copies 16-byte chunks L and L + 32 (row c / 4,
    // chunk c % 4 = 32-K block) and, for L < 16, row L's 4 scale bytes. Rows >= n: zeros from a valid
    // address.
    const int ra = lane >> 2, rb = (lane + 32) >> 2, ch = lane & 3;
    const uint32_t da = ra * 64 + ((ch ^ ((ra >> 1) & 3)) << 4), db = rb * 64 + ((ch ^ ((rb >> 1) & 3)) << 4);
    // Source pointers of the next stage to issue (advanced by each issue).
    const uint8_t *srca = w + (size_t)min(row0 + ra, n - 1) * kh + (size_t)st_lo * 64 + ch * 16;
    const uint8_t *srcb = w + (size_t)min(row0 + rb, n - 1) * kh + (size_t)st_lo * 64 + ch * 16;
    const uint8_t *srcs = sc + (size_t)min(row0 + (lane & 15), n - 1) * k32 + (size_t)st_lo * 4;
    const bool va = row0 + ra < n, vb = row0 + rb < n, vs = lane < 16 && row0 + lane < n;
    const uint32_t dsc = F4_WST + (lane & 15) * 4;
    auto issue = [&](uint32_t slot) {
        cp_async16(slot + da, srca, va);
        cp_async16(slot + db, srcb, vb);
        if (lane < 16)
            cp_async4(slot + dsc, srcs, vs);
        srca += 64, srcb += 64, srcs += 4;
    };
#pragma unroll
    for (int i = 0; i < NS - 1; i++) {
        if (i < nmine)
            issue(sbase + i * F4_STAGE);
        cp_async_commit();
    }
    __syncthreads(); // the table

    // The activation row as digits: 16 bytes (K positions 16i .. 16i + 15 of block i / 2) per step;
    // digit c of K position kk of block b lands at dig + (b / 2) * F4_PAIR + ((b & 1) * 3 + c) * 32 + kk % 32.
    {
        const uint4 *x4 = reinterpret_cast<const uint4 *>(q + (size_t)xrow * k);
        for (int i = threadIdx.x; i < (k >> 4); i += blockDim.x) {
            const uint4 v = __ldg(x4 + i);
            const uint32_t wv[4] = {v.x, v.y, v.z, v.w};
            uint32_t d[3][4];
#pragma unroll
            for (int u = 0; u < 4; u++) {
                const uint32_t l0 = lut[wv[u] & 255u], l1 = lut[(wv[u] >> 8) & 255u];
                const uint32_t l2 = lut[(wv[u] >> 16) & 255u], l3 = lut[wv[u] >> 24];
                const uint32_t a = prmt(l0, l1, 0x5140u), b = prmt(l2, l3, 0x5140u); // d0 d0 d1 d1 of 2 bytes
                d[0][u] = prmt(a, b, 0x5410u);
                d[1][u] = prmt(a, b, 0x7632u);
                d[2][u] = prmt(prmt(l0, l1, 0x0062u), prmt(l2, l3, 0x0062u), 0x5410u);
            }
            const int b = i >> 1;
            uint8_t *dst = dig + (b >> 1) * F4_PAIR + (b & 1) * 96 + (i & 1) * 16;
#pragma unroll
            for (int c = 0; c < 3; c++)
                *reinterpret_cast<uint4 *>(dst + c * 32) = make_uint4(d[c][0], d[c][1], d[c][2], d[c][3]);
        }
    }
    __syncthreads();

    // ldmatrix.x4 row addresses: matrices (rows 0-7 | 8-15) x (block 2h | 2h + 1) of a stage.
    const int mat = lane >> 3, lr = (lane & 7) + ((mat & 1) << 3);
    const uint32_t lofs0 = lr * 64 + (((0 + (mat >> 1)) ^ ((lr >> 1) & 3)) << 4);
    const uint32_t lofs1 = lr * 64 + (((2 + (mat >> 1)) ^ ((lr >> 1) & 3)) << 4);
    // B: lane (g, t) gives column g = digit g of the pair's even block (g < 3) or digit g - 4 of the odd
    // one (4 <= g < 7), K 8t..8t+7; columns 3 and 7 are zero (those lanes load digit 2 and drop it).
    const bool beven = g < 3, bodd = g >= 4 && g < 7;
    const uint32_t dbase = sdig + (uint32_t)st_lo * 2 * F4_PAIR + (g - (g >> 2) - (g == 3) - (g == 7)) * 32 + 8 * t;
    // After the combine, lane t holds row g + 8 (t & 1) of block 2h + (t >> 1) (h: the stage's pair).
    const bool od = t & 1, lo2 = t < 2;
    const int srow = g + 8 * (t & 1);
    const int mul_own = od ? 16384 : 1; // even t: row g's digits 0, 1; odd t: row g + 8's digit 2
    const float *xs = sa + (size_t)xrow * nst + st_lo;
    const uint32_t T0 = 0x03020100u, T1 = 0x0c080604u; // 2 |e2m1| of codes 0..7
    // The terms of parts 1.. of this tile: stage st (>= nq) at (st - nq) * 64 floats.
    float *stg = reinterpret_cast<float *>(f4smem + W * NS * F4_STAGE + 1024 + (k / 64) * F4_PAIR) +
                 tile * (nst - nq) * 64 + (st_lo - nq) * 64;
    float acc = 0.f;
    int rp[2][2] = {{0, 0}, {0, 0}}; // the previous stage's (c - d) of rows g / g + 8 per pair (see below)
    uint32_t swp = 0;
    float asp = 0.f;
    // Scale stage i - 1 (its pair h: rp[h]), in block order; the later K parts store their terms.
    auto scale = [&](int i) {
#pragma unroll
        for (int h = 0; h < 2; h++) {
            // Lane t holds columns 2t, 2t + 1 of rows g and g + 8: digits 0, 1 (t even) or digit 2 and
            // a zero column (t odd) of block 2h + (t >> 1). Even t keeps row g and sends row g + 8,
            // odd t the reverse; one exchange gives each its row's whole w.X.
            const int own = (od ? rp[h][1] : rp[h][0]) * mul_own;
            const int snd = (od ? rp[h][0] : rp[h][1]) * mul_own;
            const int tot = own + __shfl_xor_sync(0xffffffffu, snd, 1);
            // The reference's ((float)part * act_scale) * weight_scale, part = tot * 2^-10 exactly.
            const float ws = e8m0_sel((swp >> (8 * (2 * h + (t >> 1)))) & 255u);
            const float f = __fmul_rn(__fmul_rn(__fmul_rn(__int2float_rn(tot), 0x1p-10f), asp), ws);
            if (KS > 1 && part) {
                if (i >= 0)
                    stg[(2 * i + h) * 32 + lane] = f;
            } else { // (i = -1: the zero terms of no stage; +0 + +0 leaves the sum's bits alone)
                const float o = __shfl_xor_sync(0xffffffffu, f, 2); // the same row's other block
                acc = __fadd_rn(acc, lo2 ? f : o);
                acc = __fadd_rn(acc, lo2 ? o : f);
            }
        }
    };
    uint32_t rslot = sbase, islot = sbase + (NS - 1) * F4_STAGE;
    const uint32_t rend = sbase + NS * F4_STAGE;
    for (int i = 0; i < nmine; i++) {
        __syncwarp(); // every lane is done with slot (i - 1) % NS
        if (i + NS - 1 < nmine)
            issue(islot);
        cp_async_commit();
        islot = islot + F4_STAGE == rend ? sbase : islot + F4_STAGE;
        const float as = __ldg(xs + i);
        cp_async_wait<NS - 1>();
        __syncwarp();
        const uint32_t sw = [&] {
            uint32_t v;
            asm volatile("ld.shared.u32 %0, [%1];\n" : "=r"(v) : "r"(rslot + F4_WST + srow * 4));
            return v;
        }();
        int rc[2][2];
#pragma unroll
        for (int h = 0; h < 2; h++) {
            uint32_t x0, x1, x2, x3, b0, b1;
            ldsm_x4(rslot + (h ? lofs1 : lofs0), x0, x1, x2, x3);
            asm volatile("ld.shared.v2.u32 {%0,%1}, [%2];\n"
                         : "=r"(b0), "=r"(b1)
                         : "r"(dbase + (uint32_t)(2 * i + h) * F4_PAIR));
            const uint32_t be0 = beven ? b0 : 0u, be1 = beven ? b1 : 0u, bo0 = bodd ? b0 : 0u, bo1 = bodd ? b1 : 0u;
            int c[4] = {0, 0, 0, 0}, d[4] = {0, 0, 0, 0};
            const uint32_t n0 = x0 ^ 0x88888888u, n1 = x1 ^ 0x88888888u, n2 = x2 ^ 0x88888888u, n3 = x3 ^ 0x88888888u;
            mma_s8(c, prmt(T0, T1, x0), prmt(T0, T1, x1), prmt(T0, T1, x0 >> 16), prmt(T0, T1, x1 >> 16), be0, be1);
            mma_s8(d, prmt(T0, T1, n0), prmt(T0, T1, n1), prmt(T0, T1, n0 >> 16), prmt(T0, T1, n1 >> 16), be0, be1);
            mma_s8(c, prmt(T0, T1, x2), prmt(T0, T1, x3), prmt(T0, T1, x2 >> 16), prmt(T0, T1, x3 >> 16), bo0, bo1);
            mma_s8(d, prmt(T0, T1, n2), prmt(T0, T1, n3), prmt(T0, T1, n2 >> 16), prmt(T0, T1, n3 >> 16), bo0, bo1);
            // rows g (c0, c1) and g + 8 (c2, c3): digit columns 2t, 2t + 1 -> lo + 128 hi (odd t: the
            // second column is zero)
            rc[h][0] = (c[0] - d[0]) + ((c[1] - d[1]) << 7);
            rc[h][1] = (c[2] - d[2]) + ((c[3] - d[3]) << 7);
        }
        scale(i - 1); // i = 0: rp, swp, asp are zero, so it adds +0 (unconditional: no divergent shuffles)
        rp[0][0] = rc[0][0], rp[0][1] = rc[0][1], rp[1][0] = rc[1][0], rp[1][1] = rc[1][1];
        swp = sw, asp = as;
        rslot = rslot + F4_STAGE == rend ? sbase : rslot + F4_STAGE;
    }
    scale(nmine - 1);
    cp_async_wait<0>();
    if (KS > 1) {
        __syncthreads(); // the later parts' terms
        if (part || !active)
            return;
        const float *st0 = stg + nq * 64; // part 0: st_lo = 0, so this is stage nq's terms
        for (int i = 0; i < 2 * (nst - nq); i++) {
            const float f = st0[i * 32 + lane], o = __shfl_xor_sync(0xffffffffu, f, 2);
            acc = __fadd_rn(acc, lo2 ? f : o);
            acc = __fadd_rn(acc, lo2 ? o : f);
        }
    }
    if (lo2 && active && row0 + srow < n)
        y[(size_t)p * n + row0 + srow] = __float2bfloat16_rn(acc);
}

// The configurations of the V2 kernel (KS, warps, ring depth), for cuda_fp4_gemv_grouped_variant.
struct fp4v2_cfg {
    const char *name;
    void (*fn)(const uint8_t *, const float *, int, const int *, const uint8_t *const *, const uint8_t *const *, int,
               int, __nv_bfloat16 *);
    int ks, w, ns;
};
const fp4v2_cfg fp4v2_cfgs[] = {
    {"v2 k1 w2 ring6", fp4_gemv2_kernel<1, 2, 6>, 1, 2, 6},
    {"v2 k1 w4 ring4", fp4_gemv2_kernel<1, 4, 4>, 1, 4, 4},
    {"v2 k1 w4 ring6", fp4_gemv2_kernel<1, 4, 6>, 1, 4, 6},
    {"v2 k2 w4 ring4", fp4_gemv2_kernel<2, 4, 4>, 2, 4, 4},
    {"v2 k2 w4 ring3", fp4_gemv2_kernel<2, 4, 3>, 2, 4, 3},
    {"v2 k2 w8 ring3", fp4_gemv2_kernel<2, 8, 3>, 2, 8, 3},
    {"v2 k4 w4 ring3", fp4_gemv2_kernel<4, 4, 3>, 4, 4, 3},
};
constexpr int F4_NCFG = sizeof fp4v2_cfgs / sizeof fp4v2_cfgs[0];
static_assert(F4_NCFG == CUDA_FP4_GEMV_NVARIANTS - 2, "gemm.h's variant count");

__global__ void e8m0_to_f32_kernel(const uint8_t *s, int rows, int cols, int ld, int transpose, float *out)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (transpose) {
        if (i >= rows * cols)
            return;
        const int r = i / cols, c = i % cols;
        out[(size_t)c * rows + r] = e8m0_to_float(s[i]);
    } else {
        if (i >= rows * ld)
            return;
        const int r = i / ld, c = i % ld;
        out[i] = c < cols ? e8m0_to_float(s[(size_t)r * cols + c]) : 1.0f;
    }
}

int check_k(int k, const char *what, struct ctx_err *e)
{
    if (k <= 0 || k % 128)
        return ctx_err_set(e, CTX_EINVAL, "%s: k = %d is not a positive multiple of 128", what, k);
    return 0;
}

} // namespace

// ---- host API ----

extern "C" int cuda_device_count(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return n;
}

extern "C" int cuda_device_name(char *buf, size_t cap, int *sms, struct ctx_err *e)
{
    cudaDeviceProp p;
    cudaError_t rc = cudaGetDeviceProperties(&p, 0);
    if (rc != cudaSuccess)
        return cuda_fail(e, rc, "cudaGetDeviceProperties");
    snprintf(buf, cap, "%s (sm_%d%d)", p.name, p.major, p.minor);
    if (sms)
        *sms = p.multiProcessorCount;
    return 0;
}

extern "C" int cuda_malloc(void **d_ptr, size_t bytes, struct ctx_err *e)
{
    cudaError_t rc = cudaMalloc(d_ptr, bytes);
    if (rc != cudaSuccess) {
        *d_ptr = nullptr;
        return ctx_err_set(e, CTX_ENOMEM, "cudaMalloc(%zu bytes): %s", bytes, cudaGetErrorString(rc));
    }
    return 0;
}

extern "C" void cuda_free(void *d_ptr)
{
    if (d_ptr)
        cudaFree(d_ptr);
}

extern "C" int cuda_memset(void *d_ptr, int value, size_t bytes, struct ctx_err *e)
{
    cudaError_t rc = cudaMemset(d_ptr, value, bytes);
    return rc == cudaSuccess ? 0 : cuda_fail(e, rc, "cudaMemset");
}

extern "C" int cuda_h2d(void *d_dst, const void *src, size_t bytes, struct ctx_err *e)
{
    cudaError_t rc = cudaMemcpy(d_dst, src, bytes, cudaMemcpyHostToDevice);
    return rc == cudaSuccess ? 0 : cuda_fail(e, rc, "cudaMemcpy host to device");
}

extern "C" int cuda_d2h(void *dst, const void *d_src, size_t bytes, struct ctx_err *e)
{
    cudaError_t rc = cudaMemcpy(dst, d_src, bytes, cudaMemcpyDeviceToHost);
    return rc == cudaSuccess ? 0 : cuda_fail(e, rc, "cudaMemcpy device to host");
}

// -1: not yet read from the environment.
static std::atomic<int> pdl_state{-1};

extern "C" void cuda_pdl_set(int on)
{
    pdl_state.store(on != 0);
}

extern "C" int cuda_pdl_enabled(void)
{
    int v = pdl_state.load();
    if (v < 0) {
        const char *env = getenv("CTX_CUDA_PDL");
        int want = !(env && env[0] == '0' && env[1] == 0);
        // a cuda_pdl_set in between wins
        pdl_state.compare_exchange_strong(v, want);
        v = pdl_state.load();
    }
    return v;
}

static thread_local int pdl_plain_once = 0;

extern "C" void cuda_pdl_plain_next(void) { pdl_plain_once = 1; }

extern "C" int cuda_pdl_take_plain(void)
{
    const int v = pdl_plain_once;
    pdl_plain_once = 0;
    return v;
}

extern "C" int cuda_sync(struct ctx_err *e)
{
    cudaError_t rc = cudaDeviceSynchronize();
    return rc == cudaSuccess ? 0 : cuda_fail(e, rc, "cudaDeviceSynchronize");
}

extern "C" int cuda_act_quant(const uint16_t *d_x, int m, int k, uint8_t *d_q, float *d_sa, int scale_t,
                              void *stream, struct ctx_err *e)
{
    if (check_k(k, "cuda_act_quant", e) || m <= 0)
        return m <= 0 ? ctx_err_set(e, CTX_EINVAL, "cuda_act_quant: m = %d", m) : CTX_EINVAL;
    const long long warps = (long long)m * (k / 128);
    const unsigned blocks = (unsigned)((warps + 7) / 8);
    launch_pdl(act_quant_kernel, blocks, 256, 0, (cudaStream_t)stream, d_x, m, k, d_q, d_sa, scale_t);
    return launch_check(e, "act_quant_kernel");
}

extern "C" int cuda_fp8_gemv(const uint8_t *d_q, const float *d_sa, int m, const uint8_t *d_w, const uint8_t *d_ws,
                             int n, int k, uint16_t *d_y, void *stream, struct ctx_err *e)
{
    if (check_k(k, "cuda_fp8_gemv", e))
        return CTX_EINVAL;
    if (m < 1 || m > 8 || n < 1)
        return ctx_err_set(e, CTX_EINVAL, "cuda_fp8_gemv: m = %d (1..8), n = %d", m, n);
    const int ws_log2 = gemv_ws_log2(n, k), tiles = (n + 15) / 16, tiles_per_cta = GV_WARPS >> ws_log2;
    launch_pdl(fp8_gemv_kernel<false>, (tiles + tiles_per_cta - 1) / tiles_per_cta, 32 * GV_WARPS, 0,
               (cudaStream_t)stream, d_q, d_sa, nullptr, m, d_w, d_ws, n, k, reinterpret_cast<__nv_bfloat16 *>(d_y),
               nullptr, 0, nullptr, ws_log2);
    return launch_check(e, "fp8_gemv_kernel");
}

extern "C" int cuda_fp8_gemv_f32m(const float *d_x, int m, const uint8_t *d_w, const uint8_t *d_ws, int n, int k,
                                  float *d_y1, int n1, float *d_y2, void *stream, struct ctx_err *e)
{
    if (check_k(k, "cuda_fp8_gemv_f32", e))
        return CTX_EINVAL;
    if (m < 1 || m > 2 || n < 1 || n1 < 1 || n1 > n || (n1 < n && !d_y2))
        return ctx_err_set(e, CTX_EINVAL, "cuda_fp8_gemv_f32: m = %d (1 or 2), n = %d, n1 = %d%s", m, n, n1,
                           n1 < n && !d_y2 ? " without a second output" : "");
    const int ws_log2 = gemv_ws_log2(n, k), tiles = (n + 15) / 16, tiles_per_cta = GV_WARPS >> ws_log2;
    if (m * ((k / 128 + (1 << ws_log2) - 1) >> ws_log2) > GV_F32_MAX_BLOCKS)
        return ctx_err_set(e, CTX_EINVAL, "cuda_fp8_gemv_f32: k = %d above %d for %d token%s", k,
                           GV_F32_MAX_BLOCKS / m * 128 * GV_WARPS, m, m > 1 ? "s" : "");
    if (m == 1)
        launch_pdl(fp8_gemv_kernel<true, 1>, (tiles + tiles_per_cta - 1) / tiles_per_cta, 32 * GV_WARPS, 0,
                   (cudaStream_t)stream, nullptr, nullptr, d_x, 1, d_w, d_ws, n, k, nullptr, d_y1, n1, d_y2, ws_log2);
    else
        launch_pdl(fp8_gemv_kernel<true, 2>, (tiles + tiles_per_cta - 1) / tiles_per_cta, 32 * GV_WARPS, 0,
                   (cudaStream_t)stream, nullptr, nullptr, d_x, m, d_w, d_ws, n, k, nullptr, d_y1, n1, d_y2, ws_log2);
    return launch_check(e, "fp8_gemv_kernel<f32>");
}

extern "C" int cuda_fp8_gemv_f32_fits(int m, int n, int k)
{
    if (m < 1 || m > 2 || n < 1 || k < 128 || k % 128)
        return 0;
    const int ws_log2 = gemv_ws_log2(n, k);
    return m * ((k / 128 + (1 << ws_log2) - 1) >> ws_log2) <= GV_F32_MAX_BLOCKS;
}

extern "C" int cuda_fp8_gemv_f32(const float *d_x, const uint8_t *d_w, const uint8_t *d_ws, int n, int k, float *d_y1,
                                 int n1, float *d_y2, void *stream, struct ctx_err *e)
{
    return cuda_fp8_gemv_f32m(d_x, 1, d_w, d_ws, n, k, d_y1, n1, d_y2, stream, e);
}

static int fp8_gemm_v1(const uint8_t *d_q, const float *d_sa, int m, const uint8_t *d_w, const uint8_t *d_ws, int n,
                       int k, uint16_t *d_y, void *stream, struct ctx_err *e)
{
    if (check_k(k, "cuda_fp8_gemm", e))
        return CTX_EINVAL;
    if (m < 1 || n < 1 || (n + G_BN - 1) / G_BN > 65535 * 1024 || (m + G_BM - 1) / G_BM > 65535)
        return ctx_err_set(e, CTX_EINVAL, "cuda_fp8_gemm: m = %d, n = %d out of range", m, n);
    /* the attribute is per device (engines of kernels/multi.h run on several): set once for each */
    static std::atomic<bool> attr_set[64]; // engines on several devices, maybe from several threads
    int dev = 0;
    cudaGetDevice(&dev);
    if (dev < 0 || dev >= 64 || !attr_set[dev]) {
        cudaError_t rc = cudaFuncSetAttribute(fp8_gemm_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, G_SMEM);
        if (rc != cudaSuccess)
            return cuda_fail(e, rc, "cudaFuncSetAttribute(fp8_gemm_kernel)");
        if (dev >= 0 && dev < 64)
            attr_set[dev] = true;
    }
    dim3 grid((n + G_BN - 1) / G_BN, (m + G_BM - 1) / G_BM);
    fp8_gemm_kernel<<<grid, 256, G_SMEM, (cudaStream_t)stream>>>(d_q, d_sa, m, d_w, d_ws, n, k,
                                                                reinterpret_cast<__nv_bfloat16 *>(d_y));
    return launch_check(e, "fp8_gemm_kernel");
}

namespace {

template <int MI, int NI, int WR, int WT, int ST, int MB>
int fp8_gemm2_launch(const uint8_t *d_q, const float *d_sa, int m, const uint8_t *d_w, const uint8_t *d_ws, int n, int k,
                     uint16_t *d_y, void *stream, struct ctx_err *e)
{
    using T = G2Tile<MI, NI, WR, WT, ST>;
    auto kern = fp8_gemm2_kernel<MI, NI, WR, WT, ST, MB>;
    if ((m + T::BT - 1) / T::BT > 65535)
        return ctx_err_set(e, CTX_EINVAL, "cuda_fp8_gemm: m = %d out of range", m);
    /* the attribute is per device and per instantiation: set once for each */
    static std::atomic<bool> attr_set[64]; // engines on several devices, maybe from several threads
    int dev = 0;
    cudaGetDevice(&dev);
    if (dev < 0 || dev >= 64 || !attr_set[dev]) {
        cudaError_t rc = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, T::SMEM);
        if (rc != cudaSuccess)
            return cuda_fail(e, rc, "cudaFuncSetAttribute(fp8_gemm2_kernel)");
        if (dev >= 0 && dev < 64)
            attr_set[dev] = true;
    }
    dim3 grid((n + T::BR - 1) / T::BR, (m + T::BT - 1) / T::BT);
    // 16-byte output stores need every token row 16-byte aligned (callers may pass an offset pointer)
    const int vec_out = n % 8 == 0 && ((uintptr_t)d_y & 15) == 0;
    kern<<<grid, T::THREADS, T::SMEM, (cudaStream_t)stream>>>(d_q, d_sa, m, d_w, d_ws, n, k,
                                                              reinterpret_cast<__nv_bfloat16 *>(d_y), vec_out);
    return launch_check(e, "fp8_gemm2_kernel");
}

typedef int (*fp8_gemm_fn)(const uint8_t *, const float *, int, const uint8_t *, const uint8_t *, int, int, uint16_t *,
                           void *, struct ctx_err *);
struct fp8_gemm_tile {
    const char *name;
    fp8_gemm_fn fn;
};
// Variant CUDA_FP8_GEMM_V2 + 1 + i runs fp8_gemm_tiles[i] (rows x tokens of a CTA, warps, warp tile,
// ring depth, CTAs per SM).
const fp8_gemm_tile fp8_gemm_tiles[] = {
    {"v2 128x128 8w 64x32 s4", fp8_gemm2_launch<4, 4, 2, 4, 4, 1>},
    {"v2 128x64 4w 64x32 s4 x2", fp8_gemm2_launch<4, 4, 2, 2, 4, 2>},
    {"v2 64x64 4w 32x32 s4 x3", fp8_gemm2_launch<2, 4, 2, 2, 4, 3>},
};
constexpr int FP8_GEMM_NTILES = (int)(sizeof fp8_gemm_tiles / sizeof fp8_gemm_tiles[0]);
static_assert(CUDA_FP8_GEMM_NVARIANTS == CUDA_FP8_GEMM_V2 + 1 + FP8_GEMM_NTILES, "gemm.h's variant count");

// The tile CUDA_FP8_GEMM_V2 runs for a shape (index into fp8_gemm_tiles), from bench-gpu's table
// (2026-11-29, H200; kernels/README.md): 128 x 64 with 2 CTAs per SM (8 warps an SM) is the
// fastest tile wherever it makes at least ~128 CTAs (1.17-1.26x V1); grids smaller than that leave
// SMs idle, and 64 x 64 with 3 CTAs per SM (4x the CTAs) wins there (1.7-2.6x V1, e.g. wq_a,
// wkv and shared w1 at m = 256).
int fp8_gemm2_pick(int m, int n, int k)
{
    (void)k;
    const long ctas_128x64 = (long)((n + 127) / 128) * ((m + 63) / 64);
    return ctas_128x64 <= 96 ? 2 : 1;
}

} // namespace

extern "C" const char *cuda_fp8_gemm_variant_name(int variant)
{
    if (variant == CUDA_FP8_GEMM_V1)
        return "v1 mma.sync 128x128";
    if (variant == CUDA_FP8_GEMM_V2)
        return "v2 (tile by shape)";
    if (variant > CUDA_FP8_GEMM_V2 && variant < CUDA_FP8_GEMM_NVARIANTS)
        return fp8_gemm_tiles[variant - CUDA_FP8_GEMM_V2 - 1].name;
    return "unknown";
}

extern "C" int cuda_fp8_gemm_variant(const uint8_t *d_q, const float *d_sa, int m, const uint8_t *d_w,
                                     const uint8_t *d_ws, int n, int k, uint16_t *d_y, int variant, void *stream,
                                     struct ctx_err *e)
{
    if (variant == CUDA_FP8_GEMM_V1)
        return fp8_gemm_v1(d_q, d_sa, m, d_w, d_ws, n, k, d_y, stream, e);
    if (variant < CUDA_FP8_GEMM_V1 || variant >= CUDA_FP8_GEMM_NVARIANTS)
        return ctx_err_set(e, CTX_EINVAL, "cuda_fp8_gemm_variant: unknown variant %d", variant);
    if (check_k(k, "cuda_fp8_gemm", e))
        return CTX_EINVAL;
    if (m < 1 || n < 1 || n > (1 << 30))
        return ctx_err_set(e, CTX_EINVAL, "cuda_fp8_gemm: m = %d, n = %d out of range", m, n);
    const int tile = variant == CUDA_FP8_GEMM_V2 ? fp8_gemm2_pick(m, n, k) : variant - CUDA_FP8_GEMM_V2 - 1;
    return fp8_gemm_tiles[tile].fn(d_q, d_sa, m, d_w, d_ws, n, k, d_y, stream, e);
}

extern "C" int cuda_fp8_gemm(const uint8_t *d_q, const float *d_sa, int m, const uint8_t *d_w, const uint8_t *d_ws,
                             int n, int k, uint16_t *d_y, void *stream, struct ctx_err *e)
{
    return cuda_fp8_gemm_variant(d_q, d_sa, m, d_w, d_ws, n, k, d_y, CUDA_FP8_GEMM_DEFAULT, stream, e);
}

namespace {

int fp4_gemv_v1(const uint8_t *d_q, const float *d_sa, int x_group, int npairs, const int *d_ids,
                const uint8_t *const *d_wtab, const uint8_t *const *d_stab, int n, int k, uint16_t *d_y, void *stream,
                struct ctx_err *e)
{
    // Short rows, or many pairs (prefill: the products are then bound by the arithmetic, and the
    // split kernel's 4x more CTAs, each with its own reduction and pointer chase, cost more: flash4's
    // prefill fell from 2820 to 2480 tok/s with it): one warp per 8 rows over all of K.
    if (k < 4096 || npairs > 128) {
        dim3 grid((n + 8 * FP4_NP - 1) / (8 * FP4_NP), npairs);
        launch_pdl(fp4_gemv_rows_kernel, grid, 128, 0, (cudaStream_t)stream, d_q, d_sa, x_group, d_ids, d_wtab, d_stab,
                   n, k, reinterpret_cast<__nv_bfloat16 *>(d_y));
        return launch_check(e, "fp4_gemv_rows_kernel");
    }
    dim3 grid((n + 2 * FP4_NP - 1) / (2 * FP4_NP), npairs);
    launch_pdl(fp4_gemv_kernel, grid, 32 * FP4_WK, 0, (cudaStream_t)stream, d_q, d_sa, x_group, d_ids, d_wtab, d_stab,
               n, k, reinterpret_cast<__nv_bfloat16 *>(d_y));
    return launch_check(e, "fp4_gemv_kernel");
}

// The V2 configuration for a shape (cuda_fp4_gemv_grouped_variant's CUDA_FP4_GEMV_V2), from the
// H200 run of 2026-11-29 (bench-gpu fp4, every configuration on the same inputs): k1 w4 ring4 was the
// fastest on every row but one (Flash w1|w3 S = 1: 22.2 us against 26.2-37.5 for the others, Flash
// w2 11.9 against 13.6-19.6, both S = 2 rows, Pro w2, 768 pairs); on the one row with k = 7168 (Pro
// w1|w3) splitting K four ways was (67.6 us against 73.2: 192 tiles of 16 rows a pair leave ~17
// warps an SM, each with 56 stages to stream).
int fp4v2_pick(int n, int k, int npairs)
{
    (void)n, (void)npairs;
    return k >= 6144 ? 6 /* k4 w4 ring3 */ : 1 /* k1 w4 ring4 */;
}

int fp4_gemv_v2(int cfg, const uint8_t *d_q, const float *d_sa, int x_group, int npairs, const int *d_ids,
                const uint8_t *const *d_wtab, const uint8_t *const *d_stab, int n, int k, uint16_t *d_y, void *stream,
                struct ctx_err *e)
{
    const fp4v2_cfg &c = fp4v2_cfgs[cfg];
    const int smem = fp4v2_smem(c.ks, c.w, c.ns, k);
    if (smem > 48 * 1024) {
        // Above the default limit (k above ~8000-10000): opt in once per process and
        // configuration; a k past the device's limit is refused here.
        static std::atomic<int> opted[F4_NCFG];
        if (!opted[cfg].load()) {
            int dev = 0, maxs = 0;
            if (cudaGetDevice(&dev) == cudaSuccess &&
                cudaDeviceGetAttribute(&maxs, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) == cudaSuccess &&
                cudaFuncSetAttribute(c.fn, cudaFuncAttributeMaxDynamicSharedMemorySize, maxs) == cudaSuccess)
                opted[cfg].store(maxs);
        }
        if (smem > opted[cfg].load())
            return ctx_err_set(e, CTX_EINVAL, "cuda_fp4_gemv_grouped: k = %d needs %d bytes of shared memory", k,
                               smem);
    }
    const int tiles = (n + 15) / 16, tpc = c.w / c.ks;
    dim3 grid((tiles + tpc - 1) / tpc, npairs);
    launch_pdl(c.fn, grid, 32 * c.w, smem, (cudaStream_t)stream, d_q, d_sa, x_group, d_ids, d_wtab, d_stab, n, k,
               reinterpret_cast<__nv_bfloat16 *>(d_y));
    return launch_check(e, "fp4_gemv2_kernel");
}

// CTX_CUDA_FP4_GEMV = 1 or 2 forces V1 or V2 in cuda_fp4_gemv_grouped (read once); else -1.
int fp4_gemv_forced()
{
    static const int forced = [] {
        const char *v = getenv("CTX_CUDA_FP4_GEMV"); // 1..9: variant 0..8 (V1, V2, V2's fixed configurations)
        return v && v[0] >= '1' && v[0] < '1' + CUDA_FP4_GEMV_NVARIANTS && !v[1] ? v[0] - '1' : -1;
    }();
    return forced;
}

} // namespace

extern "C" const char *cuda_fp4_gemv_variant_name(int variant)
{
    if (variant == CUDA_FP4_GEMV_V1)
        return "v1 e4m3 mma diagonal";
    if (variant == CUDA_FP4_GEMV_V2)
        return "v2 int8 mma exact";
    if (variant > CUDA_FP4_GEMV_V2 && variant < CUDA_FP4_GEMV_NVARIANTS)
        return fp4v2_cfgs[variant - CUDA_FP4_GEMV_V2 - 1].name;
    return "unknown";
}

extern "C" int cuda_fp4_gemv_grouped_variant(const uint8_t *d_q, const float *d_sa, int x_group, int npairs,
                                             const int *d_ids, const uint8_t *const *d_wtab,
                                             const uint8_t *const *d_stab, int n, int k, uint16_t *d_y, int variant,
                                             void *stream, struct ctx_err *e)
{
    if (variant < 0 || variant >= CUDA_FP4_GEMV_NVARIANTS)
        return ctx_err_set(e, CTX_EINVAL, "cuda_fp4_gemv_grouped_variant: unknown variant %d", variant);
    if (check_k(k, "cuda_fp4_gemv_grouped", e))
        return CTX_EINVAL;
    if (npairs < 1 || npairs > 65535 || n < 1 || x_group < 1)
        return ctx_err_set(e, CTX_EINVAL, "cuda_fp4_gemv_grouped: npairs = %d, n = %d, x_group = %d", npairs, n,
                           x_group);
    if (variant == CUDA_FP4_GEMV_V1)
        return fp4_gemv_v1(d_q, d_sa, x_group, npairs, d_ids, d_wtab, d_stab, n, k, d_y, stream, e);
    const int cfg = variant == CUDA_FP4_GEMV_V2 ? fp4v2_pick(n, k, npairs) : variant - CUDA_FP4_GEMV_V2 - 1;
    return fp4_gemv_v2(cfg, d_q, d_sa, x_group, npairs, d_ids, d_wtab, d_stab, n, k, d_y, stream, e);
}

extern "C" int cuda_fp4_gemv_grouped(const uint8_t *d_q, const float *d_sa, int x_group, int npairs, const int *d_ids,
                                     const uint8_t *const *d_wtab, const uint8_t *const *d_stab, int n, int k,
                                     uint16_t *d_y, void *stream, struct ctx_err *e)
{
    const int forced = fp4_gemv_forced();
    return cuda_fp4_gemv_grouped_variant(d_q, d_sa, x_group, npairs, d_ids, d_wtab, d_stab, n, k, d_y,
                                         forced >= 0 ? forced : CUDA_FP4_GEMV_DEFAULT, stream, e);
}

extern "C" int cuda_e8m0_to_f32(const uint8_t *d_s, int rows, int cols, int ld, int transpose, float *d_out,
                                void *stream, struct ctx_err *e)
{
    if (rows < 1 || cols < 1 || ld < cols)
        return ctx_err_set(e, CTX_EINVAL, "cuda_e8m0_to_f32: rows = %d, cols = %d, ld = %d", rows, cols, ld);
    const int total = transpose ? rows * cols : rows * ld;
    e8m0_to_f32_kernel<<<(total + 255) / 256, 256, 0, (cudaStream_t)stream>>>(d_s, rows, cols, ld, transpose, d_out);
    return launch_check(e, "e8m0_to_f32_kernel");
}

// ---- cuBLASLt ----
//
// On Hopper cuBLASLt takes 1x128 (VEC128) scales on A and 128x128 (BLK128x128) scales on B, with
// A transposed and B not ("TN"). So the activations are A (op_T of x as column-major [k][m]), the
// weights B (W as column-major [k][n]) and D = x W^T comes out column-major [m][n], i.e. y^T; a
// transpose kernel turns it into y [m][n]. cuBLASLt 13.1 also takes the roles swapped (BLK128x128 on A,
// VEC128 on B: bench-gpu-ltrows, 2026-12-01), which the engine's context uses (cuda_lt_ctx_run_rows: y
// comes out in rows); these plans keep the first form.

__global__ void transpose_bf16_kernel(const uint16_t *__restrict__ in, int rows, int cols, int ld_in,
                                      uint16_t *__restrict__ out)
{
    // in: element (r, c) at in[r + c * ld_in] (column-major rows x cols); out row-major [rows][cols]
    __shared__ uint16_t tile[32][33];
    const int r0 = blockIdx.x * 32, c0 = blockIdx.y * 32;
    for (int j = threadIdx.y; j < 32; j += 8) {
        const int r = r0 + threadIdx.x, c = c0 + j;
        if (r < rows && c < cols)
            tile[j][threadIdx.x] = in[r + (size_t)c * ld_in];
    }
    __syncthreads();
    for (int j = threadIdx.y; j < 32; j += 8) {
        const int r = r0 + j, c = c0 + threadIdx.x;
        if (r < rows && c < cols)
            out[(size_t)r * cols + c] = tile[threadIdx.x][j];
    }
}

struct cuda_lt_plan {
    cublasLtHandle_t h;
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t la, lb, ld;
    cublasLtMatmulAlgo_t algo;
    void *ws;
    size_t ws_bytes;
    uint16_t *dt; // y^T, column-major [m][n] with ld = m_pad
    int m, n, m_pad;
};

extern "C" int cuda_lt_layout(void) { return CUDA_LT_ACT_T; }

extern "C" void cuda_lt_plan_free(struct cuda_lt_plan *p)
{
    if (!p)
        return;
    if (p->la)
        cublasLtMatrixLayoutDestroy(p->la);
    if (p->lb)
        cublasLtMatrixLayoutDestroy(p->lb);
    if (p->ld)
        cublasLtMatrixLayoutDestroy(p->ld);
    if (p->desc)
        cublasLtMatmulDescDestroy(p->desc);
    if (p->h)
        cublasLtDestroy(p->h);
    cudaFree(p->ws);
    cudaFree(p->dt);
    delete p;
}

#define LT_TRY(call)                                                                                              \
    do {                                                                                                          \
        cublasStatus_t st_ = (call);                                                                              \
        if (st_ != CUBLAS_STATUS_SUCCESS) {                                                                       \
            cuda_lt_plan_free(p);                                                                                 \
            return ctx_err_set(e, CTX_EIO, "%s: cuBLAS status %d", #call, (int)st_);                              \
        }                                                                                                         \
    } while (0)

extern "C" int cuda_lt_plan_new(struct cuda_lt_plan **out, int m, int n, int k, int layout, struct ctx_err *e)
{
    *out = nullptr;
    if (check_k(k, "cuda_lt_plan_new", e))
        return CTX_EINVAL;
    if (m < 4 || m % 4 || n < 1 || n % 16)
        return ctx_err_set(e, CTX_EINVAL, "cuda_lt_plan_new: m = %d, n = %d (m must be a multiple of 4, n of 16)", m,
                           n);
    (void)layout; // cuBLASLt fixes the scale layouts; `layout` only says how the caller built them
    cuda_lt_plan *p = new cuda_lt_plan();
    p->m = m, p->n = n, p->m_pad = (m + 7) / 8 * 8;
    p->ws_bytes = 32u << 20;
    cudaError_t rc = cudaMalloc(&p->ws, p->ws_bytes);
    if (rc == cudaSuccess)
        rc = cudaMalloc(&p->dt, (size_t)p->m_pad * n * sizeof(uint16_t));
    if (rc != cudaSuccess) {
        cuda_lt_plan_free(p);
        return cuda_fail(e, rc, "cudaMalloc(cuBLASLt workspace)");
    }
    LT_TRY(cublasLtCreate(&p->h));
    LT_TRY(cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    LT_TRY(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    LT_TRY(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    int32_t amode = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F, bmode = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F;
    LT_TRY(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &amode, sizeof amode));
    LT_TRY(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &bmode, sizeof bmode));
    // The heuristic rejects block scaling without scale pointers (status 7): give it the workspace's
    // address for now; cuda_lt_run sets the real ones.
    const void *dummy = p->ws;
    LT_TRY(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &dummy, sizeof dummy));
    LT_TRY(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &dummy, sizeof dummy));
    LT_TRY(cublasLtMatrixLayoutCreate(&p->la, CUDA_R_8F_E4M3, k, m, k));
    LT_TRY(cublasLtMatrixLayoutCreate(&p->lb, CUDA_R_8F_E4M3, k, n, k));
    LT_TRY(cublasLtMatrixLayoutCreate(&p->ld, CUDA_R_16BF, m, n, p->m_pad));
    cublasLtMatmulPreference_t pref;
    LT_TRY(cublasLtMatmulPreferenceCreate(&pref));
    cublasStatus_t st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                             &p->ws_bytes, sizeof p->ws_bytes);
    cublasLtMatmulHeuristicResult_t res;
    int found = 0;
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulAlgoGetHeuristic(p->h, p->desc, p->la, p->lb, p->ld, p->ld, pref, 1, &res, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    if (st != CUBLAS_STATUS_SUCCESS || found == 0) {
        cuda_lt_plan_free(p);
        return ctx_err_set(e, CTX_EUNSUPPORTED, "cuBLASLt has no block-scaled FP8 algorithm for m=%d n=%d k=%d (status %d)",
                           m, n, k, (int)st);
    }
    p->algo = res.algo;
    *out = p;
    return 0;
}

extern "C" int cuda_lt_run(struct cuda_lt_plan *p, const uint8_t *d_q, const float *d_sa, const uint8_t *d_w,
                           const float *d_ws32, uint16_t *d_y, void *stream, struct ctx_err *e)
{
    const void *as = d_sa, *bs = d_ws32;
    cublasStatus_t st = cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &as, sizeof as);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &bs, sizeof bs);
    const float alpha = 1.f, beta = 0.f;
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmul(p->h, p->desc, &alpha, d_q, p->la, d_w, p->lb, &beta, p->dt, p->ld, p->dt, p->ld, &p->algo,
                            p->ws, p->ws_bytes, (cudaStream_t)stream);
    if (st != CUBLAS_STATUS_SUCCESS)
        return ctx_err_set(e, CTX_EIO, "cublasLtMatmul: status %d", (int)st);
    dim3 grid((p->m + 31) / 32, (p->n + 31) / 32);
    transpose_bf16_kernel<<<grid, dim3(32, 8), 0, (cudaStream_t)stream>>>(p->dt, p->m, p->n, p->m_pad, d_y);
    return launch_check(e, "transpose_bf16_kernel");
}

// ---- cuBLASLt for any m: one algorithm per (n, k) ----

namespace {
struct lt_shape {
    int n, k, ok, gran; // ok: 1 runs (rows padded to a multiple of gran), 0 refused (msg says why)
    int batch, ldx, ldy; // bf16 products (batch > 0: cuda_lt_ctx_bf16); 0 for the FP8 ones
    int rows;            // FP8 with the weights as A: y in rows (cuda_lt_ctx_run_rows)
    cublasLtMatmulAlgo_t algo;
    char msg[160];
};
} // namespace

struct cuda_lt_ctx {
    cublasLtHandle_t h;
    cublasLtMatmulDesc_t desc, desc16, descr; // block-scaled FP8; bf16 x bf16 -> fp32; FP8 with y in rows
    void *ws;
    size_t ws_bytes;
    int max_m;
    lt_shape *shapes;
    int nshapes, cap;
};


extern "C" void cuda_lt_ctx_free(struct cuda_lt_ctx *c)
{
    if (!c)
        return;
    if (c->desc)
        cublasLtMatmulDescDestroy(c->desc);
    if (c->desc16)
        cublasLtMatmulDescDestroy(c->desc16);
    if (c->descr)
        cublasLtMatmulDescDestroy(c->descr);
    if (c->h)
        cublasLtDestroy(c->h);
    cudaFree(c->ws);
    free(c->shapes);
    delete c;
}

#define LTC_TRY(call)                                                                                             \
    do {                                                                                                          \
        cublasStatus_t st_ = (call);                                                                              \
        if (st_ != CUBLAS_STATUS_SUCCESS) {                                                                       \
            cuda_lt_ctx_free(c);                                                                                  \
            return ctx_err_set(e, CTX_EIO, "%s: cuBLAS status %d", #call, (int)st_);                              \
        }                                                                                                         \
    } while (0)

// A block-scaled FP8 matmul descriptor ("TN", fp32 compute) with A's and B's scale modes; dummy as both
// scale pointers (the heuristic wants some: cuda_lt_plan_new; runs set the real ones).
static cublasStatus_t lt_fp8_desc(cublasLtMatmulDesc_t *d, int32_t amode, int32_t bmode, const void *dummy)
{
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    cublasStatus_t st = cublasLtMatmulDescCreate(d, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulDescSetAttribute(*d, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulDescSetAttribute(*d, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulDescSetAttribute(*d, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &amode, sizeof amode);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulDescSetAttribute(*d, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &bmode, sizeof bmode);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulDescSetAttribute(*d, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &dummy, sizeof dummy);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulDescSetAttribute(*d, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &dummy, sizeof dummy);
    return st;
}

extern "C" int cuda_lt_ctx_new(struct cuda_lt_ctx **out, int max_m, struct ctx_err *e)
{
    *out = nullptr;
    if (max_m < 1)
        return ctx_err_set(e, CTX_EINVAL, "cuda_lt_ctx_new: max_m = %d", max_m);
    cuda_lt_ctx *c = new cuda_lt_ctx();
    c->max_m = max_m;
    c->ws_bytes = 32u << 20;
    cudaError_t rc = cudaMalloc(&c->ws, c->ws_bytes);
    if (rc != cudaSuccess) {
        cuda_lt_ctx_free(c);
        return cuda_fail(e, rc, "cudaMalloc(cuBLASLt workspace)");
    }
    LTC_TRY(cublasLtCreate(&c->h));
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    // the FP8 forms: the transposed one (A = x with its 1x128 scales, B = W with its 128x128 ones) and the
    // rows one (the roles swapped, both scale layouts unchanged, so D = W x^T is y in rows)
    LTC_TRY(lt_fp8_desc(&c->desc, CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F, CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F,
                        c->ws));
    LTC_TRY(lt_fp8_desc(&c->descr, CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F, CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F,
                        c->ws));
    LTC_TRY(cublasLtMatmulDescCreate(&c->desc16, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    LTC_TRY(cublasLtMatmulDescSetAttribute(c->desc16, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    LTC_TRY(cublasLtMatmulDescSetAttribute(c->desc16, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    *out = c;
    return 0;
}

namespace {
// The layouts of a call with mp (padded) rows (make: the FP8 forms, make16: the bf16 products).
struct lt_layouts {
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
    ~lt_layouts()
    {
        if (a)
            cublasLtMatrixLayoutDestroy(a);
        if (b)
            cublasLtMatrixLayoutDestroy(b);
        if (d)
            cublasLtMatrixLayoutDestroy(d);
    }
    // bf16 batched (cuda_lt_ctx_bf16): A the weights, op_T of column-major [k][n] per group (stride n k);
    // B the activations, column-major [k][mp] with ld ldx (group stride k); D fp32 column-major [n][mp]
    // with ld ldy (group stride n): y row-major [mp][ldy] with the groups side by side.
    cublasStatus_t make16(int mp, int n, int k, int batch, int ldx, int ldy)
    {
        cublasStatus_t st = cublasLtMatrixLayoutCreate(&a, CUDA_R_16BF, k, n, k);
        if (st == CUBLAS_STATUS_SUCCESS)
            st = cublasLtMatrixLayoutCreate(&b, CUDA_R_16BF, k, mp, ldx);
        if (st == CUBLAS_STATUS_SUCCESS)
            st = cublasLtMatrixLayoutCreate(&d, CUDA_R_32F, n, mp, ldy);
        const int32_t bc = batch;
        const int64_t sa = (int64_t)n * k, sb = k, sd = n;
        cublasLtMatrixLayout_t ls[3] = {a, b, d};
        const int64_t strides[3] = {sa, sb, sd};
        for (int i = 0; i < 3 && st == CUBLAS_STATUS_SUCCESS; i++) {
            st = cublasLtMatrixLayoutSetAttribute(ls[i], CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &bc, sizeof bc);
            if (st == CUBLAS_STATUS_SUCCESS)
                st = cublasLtMatrixLayoutSetAttribute(ls[i], CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &strides[i],
                                                      sizeof strides[i]);
        }
        return st;
    }
    // FP8: A the activations, op_T of column-major [k][mp]; B the weights, column-major [k][n]; D column-major
    // [mp][n], ld mp (y^T). The rows form (rows != 0) swaps them: A the weights, op_T of [k][n]; B the
    // activations [k][mp]; D column-major [n][mp], ld n: y row-major [mp][n].
    cublasStatus_t make(int mp, int n, int k, int rows = 0)
    {
        const int ra = rows ? n : mp, rb = rows ? mp : n;
        cublasStatus_t st = cublasLtMatrixLayoutCreate(&a, CUDA_R_8F_E4M3, k, ra, k);
        if (st == CUBLAS_STATUS_SUCCESS)
            st = cublasLtMatrixLayoutCreate(&b, CUDA_R_8F_E4M3, k, rb, k);
        if (st == CUBLAS_STATUS_SUCCESS)
            st = cublasLtMatrixLayoutCreate(&d, CUDA_R_16BF, ra, rb, ra);
        return st;
    }
};
} // namespace

static int lt_round(int m, int g) { return (m + g - 1) / g * g; }

static cublasLtMatmulDesc_t lt_desc(const cuda_lt_ctx *c, const lt_shape *s)
{
    return s->batch ? c->desc16 : s->rows ? c->descr : c->desc;
}

// Whether the shape's algorithm takes mp rows (host-side check, no launch).
static bool lt_takes(cuda_lt_ctx *c, const lt_shape *s, int mp)
{
    lt_layouts l;
    cublasLtMatmulHeuristicResult_t r;
    const cublasStatus_t st =
        s->batch ? l.make16(mp, s->n, s->k, s->batch, s->ldx, s->ldy) : l.make(mp, s->n, s->k, s->rows);
    return st == CUBLAS_STATUS_SUCCESS &&
           cublasLtMatmulAlgoCheck(c->h, lt_desc(c, s), l.a, l.b, l.d, l.d, &s->algo, &r) == CUBLAS_STATUS_SUCCESS;
}

static lt_shape *lt_shape_of(cuda_lt_ctx *c, int n, int k, struct ctx_err *e, int batch = 0, int ldx = 0,
                             int ldy = 0, int rows = 0)
{
    for (int i = 0; i < c->nshapes; i++)
        if (c->shapes[i].n == n && c->shapes[i].k == k && c->shapes[i].batch == batch && c->shapes[i].ldx == ldx &&
            c->shapes[i].ldy == ldy && c->shapes[i].rows == rows)
            return &c->shapes[i];
    if (c->nshapes == c->cap) {
        int cap = c->cap ? 2 * c->cap : 16;
        lt_shape *s = (lt_shape *)realloc(c->shapes, sizeof *s * (size_t)cap);
        if (!s) {
            ctx_err_set(e, CTX_ENOMEM, "cuda_lt_ctx: out of memory");
            return nullptr;
        }
        c->shapes = s, c->cap = cap;
    }
    lt_shape *s = &c->shapes[c->nshapes++];
    memset(s, 0, sizeof *s);
    s->n = n, s->k = k, s->batch = batch, s->ldx = ldx, s->ldy = ldy, s->rows = rows;
    if (batch && (n < 8 || n % 8 || k < 8 || k % 8 || ldx < batch * k || ldx % 8 || ldy < batch * n || ldy % 4)) {
        snprintf(s->msg, sizeof s->msg, "cuBLASLt bf16: n = %d and k = %d must be multiples of 8, ldx = %d >= %d x k "
                 "(a multiple of 8), ldy = %d >= %d x n (a multiple of 4)", n, k, ldx, batch, ldy, batch);
        return s;
    }
    if (!batch && (n < 16 || n % 16 || k < 128 || k % 128)) {
        snprintf(s->msg, sizeof s->msg, "cuBLASLt block-scaled FP8: n = %d must be a multiple of 16, k = %d of 128", n,
                 k);
        return s;
    }
    const int top = lt_round(c->max_m, CUDA_LT_PAD_MAX);
    lt_layouts l;
    cublasLtMatmulPreference_t pref = nullptr;
    cublasLtMatmulHeuristicResult_t res;
    int found = 0;
    cublasStatus_t st = batch ? l.make16(top, n, k, batch, ldx, ldy) : l.make(top, n, k, rows);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulPreferenceCreate(&pref);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &c->ws_bytes,
                                                  sizeof c->ws_bytes);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulAlgoGetHeuristic(c->h, lt_desc(c, s), l.a, l.b, l.d, l.d, pref, 1, &res, &found);
    if (pref)
        cublasLtMatmulPreferenceDestroy(pref);
    if (st != CUBLAS_STATUS_SUCCESS || found < 1) {
        snprintf(s->msg, sizeof s->msg, "cuBLASLt has no %s algorithm for m=%d n=%d k=%d (status %d, found %d)",
                 batch ? "bf16" : rows ? "block-scaled FP8 (rows)" : "block-scaled FP8", top, n, k, (int)st, found);
        return s;
    }
    s->algo = res.algo;
    // The padding: the smallest granularity at which the algorithm takes a spread of row counts up to
    // the top (the heuristic's own m).
    for (int g = 8; g <= CUDA_LT_PAD_MAX && !s->ok; g *= 2) {
        static const int mult[] = {1, 2, 3, 5, 7, 13, 31};
        bool all = lt_takes(c, s, top);
        for (size_t i = 0; all && i < sizeof mult / sizeof mult[0]; i++)
            if (mult[i] * g < top)
                all = lt_takes(c, s, mult[i] * g);
        if (all)
            s->ok = 1, s->gran = g;
    }
    if (!s->ok)
        snprintf(s->msg, sizeof s->msg, "cuBLASLt's %s algorithm for m=%d n=%d k=%d takes no row padding up to %d",
                 batch ? "bf16" : "block-scaled FP8", top, n, k, CUDA_LT_PAD_MAX);
    return s;
}

extern "C" int cuda_lt_ctx_supports(struct cuda_lt_ctx *c, int n, int k, struct ctx_err *e)
{
    return cuda_lt_ctx_supports_form(c, n, k, 0, e);
}

extern "C" int cuda_lt_ctx_supports_form(struct cuda_lt_ctx *c, int n, int k, int rows, struct ctx_err *e)
{
    lt_shape *s = lt_shape_of(c, n, k, e, 0, 0, 0, rows != 0);
    if (!s)
        return CTX_ENOMEM;
    if (!s->ok)
        ctx_err_set(e, CTX_EUNSUPPORTED, "%s", s->msg);
    return s->ok;
}

// A call's shape (FP8 when batch is 0) and padded rows, or CTX_EINVAL / CTX_ENOMEM / CTX_EUNSUPPORTED.
static int lt_call(cuda_lt_ctx *c, int m, int n, int k, int batch, int ldx, int ldy, const char *what, lt_shape **sp,
                   int *mp, struct ctx_err *e, int rows = 0)
{
    if (m < 1 || m > c->max_m)
        return ctx_err_set(e, CTX_EINVAL, "%s: m = %d outside 1..%d", what, m, c->max_m);
    lt_shape *s = lt_shape_of(c, n, k, e, batch, ldx, ldy, rows);
    if (!s)
        return CTX_ENOMEM;
    if (!s->ok)
        return ctx_err_set(e, CTX_EUNSUPPORTED, "%s", s->msg);
    *sp = s;
    *mp = lt_round(m, s->gran);
    return 0;
}

extern "C" int cuda_lt_ctx_rows(struct cuda_lt_ctx *c, int m, int n, int k)
{
    return cuda_lt_ctx_rows_form(c, m, n, k, 0);
}

extern "C" int cuda_lt_ctx_rows_form(struct cuda_lt_ctx *c, int m, int n, int k, int rows)
{
    struct ctx_err e;
    lt_shape *s = nullptr;
    int mp = 0;
    return lt_call(c, m, n, k, 0, 0, 0, "cuda_lt_ctx_rows_form", &s, &mp, &e, rows != 0) ? 0 : mp;
}

extern "C" int cuda_lt_ctx_describe(struct cuda_lt_ctx *c, int n, int k, char *buf, size_t len)
{
    return cuda_lt_ctx_describe_form(c, n, k, 0, buf, len);
}

extern "C" int cuda_lt_ctx_describe_form(struct cuda_lt_ctx *c, int n, int k, int rows, char *buf, size_t len)
{
    struct ctx_err e;
    lt_shape *s = lt_shape_of(c, n, k, &e, 0, 0, 0, rows != 0);
    if (!s || !s->ok)
        return snprintf(buf, len, "n=%d k=%d: %s", n, k, s ? s->msg : e.msg);
    static const cublasLtMatmulAlgoConfigAttributes_t at[] = {
        CUBLASLT_ALGO_CONFIG_ID,           CUBLASLT_ALGO_CONFIG_TILE_ID,     CUBLASLT_ALGO_CONFIG_STAGES_ID,
        CUBLASLT_ALGO_CONFIG_SPLITK_NUM,   CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING,
        CUBLASLT_ALGO_CONFIG_CUSTOM_OPTION, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID};
    static const char *const nm[] = {"algo", "tile", "stages", "splitk", "reduction", "swizzle", "custom", "cluster"};
    int w = snprintf(buf, len, "n=%d k=%d pad %d:", n, k, s->gran);
    for (size_t i = 0; i < sizeof at / sizeof at[0] && w >= 0 && (size_t)w < len; i++) {
        uint64_t v = 0; // integers of at most 8 bytes, little-endian: read with their own size
        size_t need = 0, got = 0;
        if (cublasLtMatmulAlgoConfigGetAttribute(&s->algo, at[i], nullptr, 0, &need) != CUBLAS_STATUS_SUCCESS ||
            need == 0 || need > sizeof v ||
            cublasLtMatmulAlgoConfigGetAttribute(&s->algo, at[i], &v, need, &got) != CUBLAS_STATUS_SUCCESS)
            continue;
        w += snprintf(buf + w, len - (size_t)w, " %s %llu", nm[i], (unsigned long long)v);
    }
    return w;
}

// One FP8 product of either form: the transposed one (rows 0: A = x, B = W, D = y^T [n][mp] column-major)
// or the rows one (A = W, B = x, D = y [mp][n]); the scale pointers follow the operands.
static int lt_run_fp8(struct cuda_lt_ctx *c, int rows, int m, int n, int k, const uint8_t *d_q, const float *d_sat,
                      const uint8_t *d_w, const float *d_ws32, uint16_t *d_out, void *stream, struct ctx_err *e)
{
    lt_shape *s = nullptr;
    int mp = 0, rc = lt_call(c, m, n, k, 0, 0, 0, rows ? "cuda_lt_ctx_run_rows" : "cuda_lt_ctx_run", &s, &mp, e, rows);
    if (rc)
        return rc;
    lt_layouts l;
    const void *as = rows ? (const void *)d_ws32 : (const void *)d_sat, *bs = rows ? (const void *)d_sat : d_ws32;
    const void *a = rows ? (const void *)d_w : d_q, *b = rows ? (const void *)d_q : d_w;
    const float alpha = 1.f, beta = 0.f;
    cublasLtMatmulDesc_t desc = lt_desc(c, s);
    cublasStatus_t st = l.make(mp, n, k, rows);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &as, sizeof as);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &bs, sizeof bs);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmul(c->h, desc, &alpha, a, l.a, b, l.b, &beta, d_out, l.d, d_out, l.d, &s->algo, c->ws,
                            c->ws_bytes, (cudaStream_t)stream);
    if (st == CUBLAS_STATUS_NOT_SUPPORTED || st == CUBLAS_STATUS_INVALID_VALUE)
        return ctx_err_set(e, CTX_EUNSUPPORTED, "cublasLtMatmul%s m=%d (%d rows) n=%d k=%d with the algorithm of m=%d: "
                           "status %d", rows ? " (rows)" : "", m, mp, n, k, lt_round(c->max_m, CUDA_LT_PAD_MAX), (int)st);
    if (st != CUBLAS_STATUS_SUCCESS)
        return ctx_err_set(e, CTX_EIO, "cublasLtMatmul%s m=%d n=%d k=%d: status %d", rows ? " (rows)" : "", m, n, k,
                           (int)st);
    return 0;
}

extern "C" int cuda_lt_ctx_run(struct cuda_lt_ctx *c, int m, int n, int k, const uint8_t *d_q, const float *d_sat,
                               const uint8_t *d_w, const float *d_ws32, uint16_t *d_yt, void *stream, struct ctx_err *e)
{
    return lt_run_fp8(c, 0, m, n, k, d_q, d_sat, d_w, d_ws32, d_yt, stream, e);
}

extern "C" int cuda_lt_ctx_run_rows(struct cuda_lt_ctx *c, int m, int n, int k, const uint8_t *d_q, const float *d_sat,
                                    const uint8_t *d_w, const float *d_ws32, uint16_t *d_y, void *stream,
                                    struct ctx_err *e)
{
    return lt_run_fp8(c, 1, m, n, k, d_q, d_sat, d_w, d_ws32, d_y, stream, e);
}

extern "C" int cuda_lt_ctx_rows_bf16(struct cuda_lt_ctx *c, int m, int n, int k, int batch, int ldx, int ldy)
{
    struct ctx_err e;
    lt_shape *s = nullptr;
    int mp = 0;
    return batch < 1 || lt_call(c, m, n, k, batch, ldx, ldy, "cuda_lt_ctx_rows_bf16", &s, &mp, &e) ? 0 : mp;
}

extern "C" int cuda_lt_ctx_bf16(struct cuda_lt_ctx *c, int m, int n, int k, int batch, const uint16_t *d_x, int ldx,
                                const uint16_t *d_w, float *d_y, int ldy, void *stream, struct ctx_err *e)
{
    if (batch < 1)
        return ctx_err_set(e, CTX_EINVAL, "cuda_lt_ctx_bf16: batch = %d", batch);
    lt_shape *s = nullptr;
    int mp = 0, rc = lt_call(c, m, n, k, batch, ldx, ldy, "cuda_lt_ctx_bf16", &s, &mp, e);
    if (rc)
        return rc;
    lt_layouts l;
    const float alpha = 1.f, beta = 0.f;
    cublasStatus_t st = l.make16(mp, n, k, batch, ldx, ldy);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmul(c->h, c->desc16, &alpha, d_w, l.a, d_x, l.b, &beta, d_y, l.d, d_y, l.d, &s->algo, c->ws,
                            c->ws_bytes, (cudaStream_t)stream);
    if (st == CUBLAS_STATUS_NOT_SUPPORTED || st == CUBLAS_STATUS_INVALID_VALUE)
        return ctx_err_set(e, CTX_EUNSUPPORTED, "cublasLtMatmul bf16 m=%d (%d rows) n=%d k=%d x %d: status %d", m, mp,
                           n, k, batch, (int)st);
    if (st != CUBLAS_STATUS_SUCCESS)
        return ctx_err_set(e, CTX_EIO, "cublasLtMatmul bf16 m=%d n=%d k=%d x %d: status %d", m, n, k, batch, (int)st);
    return 0;
}
