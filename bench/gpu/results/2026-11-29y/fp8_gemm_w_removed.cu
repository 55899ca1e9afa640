
// ---- FP8 GEMM (prefill) on wgmma: CUDA_FP8_GEMM_W ----
//
// Why: Hopper has no native e4m3 mma.sync (ptxas emulates each m16n8k32 e4m3 with f16 conversions,
// two HMMA.16816 and an FADD: bench/gpu/results/2026-11-29p-gemm), which holds V1/V2 at ~20% of the
// FP8 floor. This kernel converts both operands once per stage to f16 in shared memory (e4m3 -> f16
// is exact) and runs Hopper's warpgroup MMA on them, as the routed experts' V5 does.
// - CTA: 128 weight rows x 64 tokens, 2 warpgroups of 64 rows, K in 128-wide stages (one scale block).
// - No cp.async ring: each thread holds the next stage's raw bytes in registers (4 weight and 2 token
//   16-byte chunks, one token scale), loaded right after it has converted the current stage, so the
//   loads fly during the stage's wgmma; shared memory is only the f16 tiles (48 KB), 2 CTAs an SM.
// - Conversion: chunk (row, 16-byte K segment c) -> 16 f16 (cvt.rn.f16x2.e4m3x2) at the canonical
//   no-swizzle K-major offsets (wgmma_off16); the 8 lanes of a store phase take 8 consecutive rows of
//   one segment (distinct 16-byte slots of one core matrix: no bank conflicts).
// - Per stage and warpgroup: 8 wgmma m64n64k16 chained from zero in ascending K (the block's partial,
//   fp32), then acc += (partial * act_scale) * weight_scale, V1's expression, in ascending block order;
//   bf16 at the end.
// - Numerics: the products are exact (e4m3 x e4m3 in f16 operands, fp32 accumulate) and each block's
//   partial is one chain of fp32 tensor-core sums instead of V1's four chains joined by FADDs (ptxas's
//   emulation), so it is within the same fp32 bound of the exact block sums as V1 (test_gemm's EPS),
//   not bit-equal to it.
constexpr int GW_BR = 128, GW_BT = 64;
constexpr int GW_SW = GW_BR * 256, GW_SX = GW_BT * 256;
constexpr int GW_SMEM = GW_SW + GW_SX + GW_BT * 4;

// Byte offset of f16 element (row, k) of a K = 128 tile of nrows rows in the canonical K-major layout
// (k16 step slabs of nrows x 32 bytes; 8-row groups 256 bytes apart; the two 8-K core matrices of a
// step 128 bytes apart): moe_gemm.h's cuda_moe5_off.
__device__ __forceinline__ uint32_t gw_off(int row, int k, int nrows)
{
    return (uint32_t)((k >> 4) * nrows * 32 + (row >> 3) * 256 + ((k >> 3) & 1) * 128 + (row & 7) * 16 + (k & 7) * 2);
}
__device__ __forceinline__ uint32_t gw_cvt2(uint32_t x)
{
    uint32_t r;
    asm("cvt.rn.f16x2.e4m3x2 %0, %1;\n" : "=r"(r) : "h"((unsigned short)(x & 0xffffu)));
    return r;
}
__device__ __forceinline__ void gw_sts128(uint32_t addr, uint32_t a, uint32_t b, uint32_t c, uint32_t d)
{
    asm volatile("st.shared.v4.u32 [%0], {%1,%2,%3,%4};\n" ::"r"(addr), "r"(a), "r"(b), "r"(c), "r"(d));
}
// 16 e4m3 (K 16 c .. 16 c + 15 of a row) -> f16 at (row, 16 c) and (row, 16 c + 8).
__device__ __forceinline__ void gw_put(uint32_t tile, int nrows, int row, int c, uint4 v)
{
    const uint32_t o = tile + gw_off(row, 16 * c, nrows);
    gw_sts128(o, gw_cvt2(v.x), gw_cvt2(v.x >> 16), gw_cvt2(v.y), gw_cvt2(v.y >> 16));
    gw_sts128(o + 128, gw_cvt2(v.z), gw_cvt2(v.z >> 16), gw_cvt2(v.w), gw_cvt2(v.w >> 16));
}

__global__ void __launch_bounds__(256, 2) fp8_gemm_w_kernel(const uint8_t *__restrict__ q, const float *__restrict__ sa,
                                                            int m, const uint8_t *__restrict__ w,
                                                            const uint8_t *__restrict__ ws, int n, int k,
                                                            __nv_bfloat16 *__restrict__ y)
{
    extern __shared__ __align__(128) uint8_t smem[];
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    const int wg = warp >> 2, w4 = warp & 3;
    const int row0 = blockIdx.x * GW_BR, tok0 = blockIdx.y * GW_BT;
    const int kb_n = k >> 7;
    const uint32_t sW = (uint32_t)__cvta_generic_to_shared(smem), sX = sW + GW_SW;
    float *sS = reinterpret_cast<float *>(smem + GW_SW + GW_SX);
    // Work item i: row ((i >> 6) << 3) | (i & 7), segment (i >> 3) & 7 (rows past n or m read the last
    // row: their outputs are never written, and each output depends on its own row and token only).
    const uint8_t *wp[4], *xp[2];
#pragma unroll
    for (int j = 0; j < 4; j++) {
        const int i = tid + 256 * j, r = ((i >> 6) << 3) | (i & 7), c = (i >> 3) & 7;
        wp[j] = w + (size_t)min(row0 + r, n - 1) * k + c * 16;
    }
#pragma unroll
    for (int j = 0; j < 2; j++) {
        const int i = tid + 256 * j, r = ((i >> 6) << 3) | (i & 7), c = (i >> 3) & 7;
        xp[j] = q + (size_t)min(tok0 + r, m - 1) * k + c * 16;
    }
    const float *sp = sa + (size_t)min(tok0 + (tid & (GW_BT - 1)), m - 1) * kb_n;
    const uint8_t *wsr = ws + (size_t)(row0 >> 7) * kb_n;
    uint4 wr[4], xr[2];
    float sv = 0.f;
    auto fetch = [&](int kb) {
#pragma unroll
        for (int j = 0; j < 4; j++)
            wr[j] = __ldg(reinterpret_cast<const uint4 *>(wp[j] + (size_t)kb * 128));
#pragma unroll
        for (int j = 0; j < 2; j++)
            xr[j] = __ldg(reinterpret_cast<const uint4 *>(xp[j] + (size_t)kb * 128));
        if (tid < GW_BT)
            sv = __ldg(sp + kb);
    };
    fetch(0);
    float acc[8][4], p[32];
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
        for (int c = 0; c < 4; c++)
            acc[j][c] = 0.f;
    const uint64_t da = wgmma_desc(sW + wg * 2048, 128, 256), db = wgmma_desc(sX, 128, 256);
    for (int kb = 0; kb < kb_n; kb++) {
        __syncthreads(); // every warpgroup's wgmma of the last stage is done with the tiles
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int i = tid + 256 * j;
            gw_put(sW, GW_BR, ((i >> 6) << 3) | (i & 7), (i >> 3) & 7, wr[j]);
        }
#pragma unroll
        for (int j = 0; j < 2; j++) {
            const int i = tid + 256 * j;
            gw_put(sX, GW_BT, ((i >> 6) << 3) | (i & 7), (i >> 3) & 7, xr[j]);
        }
        if (tid < GW_BT)
            sS[tid] = sv;
        if (kb + 1 < kb_n)
            fetch(kb + 1);
        wgmma_proxy_fence();
        __syncthreads(); // the stage's f16 tiles and scales are in
        wgmma_fence();
#pragma unroll
        for (int s = 0; s < 8; s++)
            wgmma_f16<64>(p, da + (uint64_t)(s * (GW_BR * 32 / 16)), db + (uint64_t)(s * (GW_BT * 32 / 16)), s);
        wgmma_commit();
        wgmma_wait0();
        const float wsc = e8m0_to_float(__ldg(wsr + kb));
#pragma unroll
        for (int j = 0; j < 8; j++) {
            const float s0 = sS[j * 8 + 2 * t], s1 = sS[j * 8 + 2 * t + 1];
            acc[j][0] += (p[4 * j + 0] * s0) * wsc;
            acc[j][1] += (p[4 * j + 1] * s1) * wsc;
            acc[j][2] += (p[4 * j + 2] * s0) * wsc;
            acc[j][3] += (p[4 * j + 3] * s1) * wsc;
        }
    }
    const int r = row0 + wg * 64 + w4 * 16 + g;
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
        for (int v = 0; v < 4; v++) {
            const int rr = r + (v >> 1) * 8, tok = tok0 + j * 8 + 2 * t + (v & 1);
            if (rr < n && tok < m)
                y[(size_t)tok * n + rr] = __float2bfloat16_rn(acc[j][v]);
        }
}

int fp8_gemm_w(const uint8_t *d_q, const float *d_sa, int m, const uint8_t *d_w, const uint8_t *d_ws, int n, int k,
               uint16_t *d_y, void *stream, struct ctx_err *e)
{
    if ((m + GW_BT - 1) / GW_BT > 65535)
        return ctx_err_set(e, CTX_EINVAL, "cuda_fp8_gemm: m = %d out of range", m);
    static bool attr_set[64];
    int dev = 0;
    cudaGetDevice(&dev);
    if (dev < 0 || dev >= 64 || !attr_set[dev]) {
        cudaError_t rc = cudaFuncSetAttribute(fp8_gemm_w_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, GW_SMEM);
        if (rc == cudaSuccess)
            rc = cudaFuncSetAttribute(fp8_gemm_w_kernel, cudaFuncAttributePreferredSharedMemoryCarveout,
                                      (int)cudaSharedmemCarveoutMaxShared);
        if (rc != cudaSuccess)
            return cuda_fail(e, rc, "cudaFuncSetAttribute(fp8_gemm_w_kernel)");
        if (dev >= 0 && dev < 64)
            attr_set[dev] = true;
    }
    dim3 grid((n + GW_BR - 1) / GW_BR, (m + GW_BT - 1) / GW_BT);
    fp8_gemm_w_kernel<<<grid, 256, GW_SMEM, (cudaStream_t)stream>>>(d_q, d_sa, m, d_w, d_ws, n, k,
                                                                    reinterpret_cast<__nv_bfloat16 *>(d_y));
    return launch_check(e, "fp8_gemm_w_kernel");
}
