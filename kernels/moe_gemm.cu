// Routed experts for prefill: device bucketing of (token, slot) pairs by expert and a grouped FP4 x FP8
// GEMM over the buckets; semantics in moe_gemm.h.
//
// Four kernels (moe_gemm.h): V1 and V2 below have the numerics described here; V3 (further down)
// chains a 128-K stage's mmas on weights converted once per stage and has its own section, as has V4
// (both operands converted to f16 once per stage, native f16 mma; the default at every size,
// cuda_moe_gemm_default_variant).
//
// V1/V2: the numerics are the decode kernel's (gemm.cu, fp4_gemv_kernel): each 32-K block is one
// m16n8k32 e4m3 mma started from zero, fed the same K positions in the same fragment slots (lane t's
// 4 weight bytes 4t..4t+3 of the block's 16: low nibbles = even K positions into k 4t..4t+3, high
// nibbles = odd ones into k 16+4t..; the activation's 8 bytes 8t..8t+7 split the same way by
// __byte_perm), so every 32-K partial is the same tensor-core result; it is then scaled as
// (partial * (act_scale * 64)) * weight_scale (64 undoes the e2m1 -> e4m3 view's 2^-6). The partials
// are added in ascending K order (kernels/ref.c's order; the decode kernel adds them per lane and
// then across lanes, so the two agree within fp32 rounding of the sum, not bitwise).
#include <cstdint>
#include <cstdlib>

#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <atomic>

#include "cuda_common.cuh"
#include "moe_gemm.h"
#include "wgmma.cuh"

namespace {





// e2m1 codes in the low (high) nibbles of the 4 bytes of x -> 4 e4m3 bytes of value code * 2^-6.
__device__ __forceinline__ uint32_t fp4_lo_to_e4m3(uint32_t x)
{
    return ((x << 4) & 0x80808080u) | ((x << 2) & 0x1c1c1c1cu);
}
__device__ __forceinline__ uint32_t fp4_hi_to_e4m3(uint32_t x)
{
    return (x & 0x80808080u) | ((x >> 2) & 0x1c1c1c1cu);
}


__device__ __forceinline__ uint32_t lds32(uint32_t addr)
{
    uint32_t v;
    asm volatile("ld.shared.u32 %0, [%1];\n" : "=r"(v) : "r"(addr));
    return v;
}
__device__ __forceinline__ uint2 lds64(uint32_t addr)
{
    uint2 v;
    asm volatile("ld.shared.v2.u32 {%0,%1}, [%2];\n" : "=r"(v.x), "=r"(v.y) : "r"(addr));
    return v;
}

// ---- bucketing ----
//
// One block per expert scans all ids (a chunk has at most a few 10K pairs: L2-resident), so the
// counts and the placement need no atomics and the order within an expert is the pair order.

__global__ void __launch_bounds__(256) moe_count_kernel(const int *__restrict__ ids, int npairs, int *__restrict__ counts)
{
    __shared__ int part[8];
    const int x = blockIdx.x;
    int c = 0;
    for (int p = threadIdx.x; p < npairs; p += 256)
        c += __ldg(ids + p) == x;
    for (int o = 16; o > 0; o >>= 1)
        c += __shfl_xor_sync(0xffffffffu, c, o);
    if ((threadIdx.x & 31) == 0)
        part[threadIdx.x >> 5] = c;
    __syncthreads();
    if (threadIdx.x == 0) {
        int s = 0;
        for (int i = 0; i < 8; i++)
            s += part[i];
        counts[x] = s;
    }
}

// One block: offsets (serial scan: at most CUDA_MOE_MAX_EXPERTS adds), then the tile table.
__global__ void __launch_bounds__(256) moe_scan_kernel(const int *__restrict__ counts, int E, int *__restrict__ offsets,
                                                       int *__restrict__ tiles, int *__restrict__ ntiles)
{
    __shared__ int soff[CUDA_MOE_MAX_EXPERTS + 1], tstart[CUDA_MOE_MAX_EXPERTS + 1];
    if (threadIdx.x == 0) {
        int o = 0, t = 0;
        for (int x = 0; x < E; x++) {
            soff[x] = o;
            tstart[x] = t;
            const int c = counts[x];
            o += c;
            t += (c + CUDA_MOE_BM - 1) / CUDA_MOE_BM;
        }
        soff[E] = o;
        tstart[E] = t;
        *ntiles = t;
    }
    __syncthreads();
    for (int x = threadIdx.x; x <= E; x += blockDim.x) {
        offsets[x] = soff[x];
        if (x == E)
            break;
        for (int t = tstart[x], r = 0; t < tstart[x + 1]; t++, r += CUDA_MOE_BM) {
            tiles[2 * t] = x;
            tiles[2 * t + 1] = soff[x] + r;
        }
    }
}

// One block per expert: the pairs routed to it, in pair order, at offsets[x].. of perm. A round covers
// 256 threads x PLACE_V consecutive pairs each: per-thread hits, a warp scan, one barrier per round.
constexpr int PLACE_V = 8;

__global__ void __launch_bounds__(256) moe_place_kernel(const int *__restrict__ ids, int npairs,
                                                        const int *__restrict__ offsets, int *__restrict__ perm)
{
    __shared__ int wcount[2][8];
    const int x = blockIdx.x, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int base = offsets[x];
    for (int p0 = 0, round = 0; p0 < npairs; p0 += 256 * PLACE_V, round ^= 1) {
        const int pt = p0 + threadIdx.x * PLACE_V;
        uint32_t hits = 0;
#pragma unroll
        for (int v = 0; v < PLACE_V; v++)
            hits |= (uint32_t)(pt + v < npairs && __ldg(ids + pt + v) == x) << v;
        const int c = __popc(hits);
        int inc = c; // inclusive scan over the warp's lanes
        inc = warp_incl_scan(inc, lane);
        if (lane == 31)
            wcount[round][warp] = inc;
        __syncthreads(); // (wcount alternates between rounds, so one barrier a round suffices)
        int before = 0, total = 0;
        for (int i = 0; i < 8; i++) {
            const int wc = wcount[round][i];
            before += i < warp ? wc : 0;
            total += wc;
        }
        int pos = base + before + inc - c;
        for (int v = 0; v < PLACE_V; v++)
            if (hits >> v & 1)
                perm[pos++] = pt + v;
        base += total;
    }
}

// Since 2026-12-01 (twenty-eighth session) buckets of up to MB_MAXE experts whose per-block counts fit
// MB_MAXH run three short kernels instead: the kernels above took ~7.6 + 14 + 27 us a bucketing at a
// 4096-token chunk (Nsight Compute, results/2026-12-01-s30 call2: every expert's block reading every id,
// the scan on one thread), twice a layer. The same counts, offsets, permutation and tiles (test_moe_gemm
// compares both with the host's counting sort).
// 1. moe_hist_kernel: blocks of MB_T consecutive pairs, a histogram of their experts in shared memory
//    (atomics: counts only, so any order gives the same) into hist [block][E].
// 2. moe_bscan_kernel (one block, a thread an expert): each expert's counts made exclusive over the
//    blocks in place (the pairs of x before block b), its total, then one block scan of the totals and of
//    the tile counts: offsets, counts, the tile table.
// 3. moe_place2_kernel: each pair's rank among its block's pairs of the same expert, in pair order: the
//    lower lanes of its warp with that expert (__match_any_sync) plus the earlier warps' counts of it
//    (a byte each in shared memory), at offsets[x] + hist[b][x] + rank.
// Ids outside 0..E-1 are placed nowhere, as above.
constexpr int MB_T = 1024, MB_MAXE = 1024, MB_MAXH = 1 << 22;
// CTX_CUDA_MOE_BUCKET=0 (read once) or cuda_moe_bucket_mode(0): the per-expert kernels for every bucketing.
env_switch moe_bucket_blocks{"CTX_CUDA_MOE_BUCKET"};

__global__ void __launch_bounds__(MB_T) moe_hist_kernel(const int *__restrict__ ids, int npairs, int E,
                                                        int *__restrict__ hist)
{
    extern __shared__ int mb_h[];
    for (int x = threadIdx.x; x < E; x += MB_T)
        mb_h[x] = 0;
    __syncthreads();
    const long long p = (long long)blockIdx.x * MB_T + threadIdx.x;
    if (p < npairs) {
        const int x = __ldg(ids + p);
        if (x >= 0 && x < E)
            atomicAdd(&mb_h[x], 1);
    }
    __syncthreads();
    for (int x = threadIdx.x; x < E; x += MB_T)
        hist[(size_t)blockIdx.x * E + x] = mb_h[x];
}

__global__ void __launch_bounds__(MB_T) moe_bscan_kernel(int *__restrict__ hist, int nb, int E, int *__restrict__ counts,
                                                         int *__restrict__ offsets, int *__restrict__ tiles,
                                                         int *__restrict__ ntiles)
{
    __shared__ unsigned long long wtot[32];
    const int x = threadIdx.x, lane = x & 31, warp = x >> 5;
    int c = 0;
    if (x < E)
        for (int b = 0; b < nb; b++) {
            const int v = hist[(size_t)b * E + x];
            hist[(size_t)b * E + x] = c;
            c += v;
        }
    const int nt = (c + CUDA_MOE_BM - 1) / CUDA_MOE_BM;
    // one exclusive scan of both: pairs (< 2^26) in the high word, tiles in the low one
    const unsigned long long v = ((unsigned long long)c << 32) | (unsigned)nt;
    const unsigned long long inc = warp_incl_scan(v, lane);
    if (lane == 31)
        wtot[warp] = inc;
    __syncthreads();
    if (warp == 0) {
        const unsigned long long wv = wtot[lane], wi = warp_incl_scan(wv, lane);
        __syncwarp();
        wtot[lane] = wi - wv;
    }
    __syncthreads();
    const unsigned long long ex = wtot[warp] + inc - v;
    const int off = (int)(ex >> 32), ts = (int)(unsigned)ex;
    if (x < E) {
        counts[x] = c;
        offsets[x] = off;
        for (int i = 0; i < nt; i++)
            tiles[2 * (ts + i)] = x, tiles[2 * (ts + i) + 1] = off + i * CUDA_MOE_BM;
        if (x == E - 1) {
            offsets[E] = off + c;
            *ntiles = ts + nt;
        }
    }
}

__global__ void __launch_bounds__(MB_T) moe_place2_kernel(const int *__restrict__ ids, int npairs, int E,
                                                          const int *__restrict__ hist,
                                                          const int *__restrict__ offsets, int *__restrict__ perm)
{
    extern __shared__ uint8_t mb_wc[]; // [MB_T / 32 warps][E]: a warp's pairs of each expert
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int i = threadIdx.x; i < (MB_T / 32) * E; i += MB_T)
        mb_wc[i] = 0;
    __syncthreads();
    const long long p = (long long)blockIdx.x * MB_T + threadIdx.x;
    const int id = p < npairs ? __ldg(ids + p) : -1, x = id >= 0 && id < E ? id : -1;
    const unsigned peers = __match_any_sync(0xffffffffu, x), lower = peers & ((1u << lane) - 1u);
    if (x >= 0 && !lower) // the lowest lane of the expert's lanes
        mb_wc[warp * E + x] = (uint8_t)__popc(peers);
    __syncthreads();
    if (x < 0)
        return;
    int r = __popc(lower);
    for (int w = 0; w < warp; w++)
        r += mb_wc[w * E + x];
    perm[offsets[x] + hist[(size_t)blockIdx.x * E + x] + r] = (int)p;
}

// ---- grouped GEMM ----
//
// CTA: 128 weight rows (output columns) x 64 pairs of one expert (one tile of the table), 8 warps as
// 4 (rows, 32 each) x 2 (pairs, 32 each); K in 128-wide stages through a 3-deep cp.async ring. A stage
// holds the FP4 weights as stored (64 bytes a row; the 16-byte segments XOR-swizzled by (row >> 1) & 3
// so that the 4-byte fragment loads of 8 rows hit 32 distinct banks), the rows' 4 e8m0 scales, the
// gathered activation rows (128 bytes, segments swizzled by row & 7) and their scales. Each 32-K block
// of each 16x8 fragment is one mma from zero, scaled and added to the fp32 accumulators at once.
constexpr int M_BN = 128, M_BM = CUDA_MOE_BM, M_STAGES = 3;
constexpr int M_A = M_BN * 64, M_AS = M_BN * 4, M_B = M_BM * 128, M_BS = M_BM * 4;
constexpr int M_STAGE = M_A + M_AS + M_B + M_BS;
constexpr int M_SMEM = M_STAGES * M_STAGE;

// The tile that block (blockIdx.x, tile) of a grouped GEMM runs (grid: weight-row blocks x tiles): expert
// x's pairs from `start` (rows of them, at most M_BM, in nbv n8 blocks), the weight rows from row0, the
// expert's weights and scales; sP[r] = pair r's activation row (perm; -1 past rows), written by threads
// r < M_BM: the caller's barrier publishes it. Shared by every kernel version.
struct moe_tile {
    int rows, nbv, row0;
    const uint8_t *w, *ws;
};
// BM: the pairs a CTA takes (V8: 2 M_BM, its tile and the expert's next one; moe_tile_leads).
template <int BM = M_BM>
__device__ __forceinline__ moe_tile moe_tile_of(int tile, const int *__restrict__ perm, const int *__restrict__ tiles,
                                                const int *__restrict__ offsets, const uint8_t *const *__restrict__ wtab,
                                                const uint8_t *const *__restrict__ stab, int *sP)
{
    const int x = __ldg(tiles + 2 * tile), start = __ldg(tiles + 2 * tile + 1), tid = (int)threadIdx.x;
    moe_tile m;
    m.rows = min(BM, __ldg(offsets + x + 1) - start);
    m.nbv = (m.rows + 7) >> 3;
    m.row0 = (int)blockIdx.x * M_BN;
    m.w = wtab[x];
    m.ws = stab[x];
    if (tid < BM)
        sP[tid] = tid < m.rows ? __ldg(perm + start + tid) : -1;
    return m;
}
// Whether a CTA of BM pairs runs the table's tile: an expert's tiles of M_BM pairs are taken BM / M_BM at a
// time, by the CTA of the first (the others return).
template <int BM>
__device__ __forceinline__ bool moe_tile_leads(int tile, const int *__restrict__ tiles, const int *__restrict__ offsets)
{
    if (BM == M_BM)
        return true;
    const int x = __ldg(tiles + 2 * tile), start = __ldg(tiles + 2 * tile + 1);
    return (start - __ldg(offsets + x)) % BM == 0;
}

__global__ void __launch_bounds__(256, 2) moe_gemm_kernel(const uint8_t *__restrict__ q, const float *__restrict__ sa,
                                                          int x_group, const int *__restrict__ perm,
                                                          const int *__restrict__ tiles, const int *__restrict__ ntiles,
                                                          const int *__restrict__ offsets,
                                                          const uint8_t *const *__restrict__ wtab,
                                                          const uint8_t *const *__restrict__ stab, int n, int k,
                                                          __nv_bfloat16 *__restrict__ y)
{
    extern __shared__ __align__(128) uint8_t smem[];
    __shared__ int sP[M_BM];
    const int tile = blockIdx.y;
    if (tile >= __ldg(ntiles))
        return;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    const int wr = warp & 3, wc = warp >> 2;
    const moe_tile tl = moe_tile_of(tile, perm, tiles, offsets, wtab, stab, sP);
    const int rows = tl.rows, row0 = tl.row0;
    const uint8_t *w = tl.w, *ws = tl.ws;
    const int kb_n = k >> 7, kh = k >> 1, k32 = k >> 5;
    __syncthreads();

    // Fixed per thread across stages: 2 weight chunks, 2 activation chunks, one scale of each.
    const uint8_t *asrc[2], *bsrc[2];
    bool aval[2], bval[2];
    uint32_t adst[2], bdst[2];
    for (int j = 0; j < 2; j++) {
        const int i = tid + j * 256;
        const int ra = i >> 2, ca = i & 3; // weights: 128 rows x 4 segments
        aval[j] = row0 + ra < n;
        asrc[j] = w + (size_t)min(row0 + ra, n - 1) * kh + ca * 16;
        adst[j] = ra * 64 + ((ca ^ ((ra >> 1) & 3)) << 4);
        const int rb = i >> 3, cb = i & 7; // activations: 64 rows x 8 segments
        const int pr = sP[rb];
        bval[j] = pr >= 0;
        bsrc[j] = q + (size_t)(pr >= 0 ? pr / x_group : 0) * k + cb * 16;
        bdst[j] = M_A + M_AS + rb * 128 + ((cb ^ (rb & 7)) << 4);
    }
    const bool as_val = tid < M_BN && row0 + tid < n;
    const uint8_t *as_src = ws + (size_t)min(row0 + (tid & (M_BN - 1)), n - 1) * k32;
    const int pb = tid < M_BM ? sP[tid] : -1;
    const float *bs_src = sa + (size_t)(pb >= 0 ? pb / x_group : 0) * kb_n;
    const uint32_t sbase = (uint32_t)__cvta_generic_to_shared(smem);

    auto load_stage = [&](int stage, int kb) {
        const uint32_t s0 = sbase + stage * M_STAGE;
        for (int j = 0; j < 2; j++) {
            cp_async16(s0 + adst[j], asrc[j] + (size_t)kb * 64, aval[j]);
            cp_async16(s0 + bdst[j], bsrc[j] + (size_t)kb * 128, bval[j]);
        }
        if (tid < M_BN)
            cp_async4(s0 + M_A + tid * 4, as_src + kb * 4, as_val);
        if (tid < M_BM)
            cp_async4(s0 + M_A + M_AS + M_B + tid * 4, bs_src + kb, pb >= 0);
    };

    float acc[2][4][4];
#pragma unroll
    for (int mi = 0; mi < 2; mi++)
#pragma unroll
        for (int ni = 0; ni < 4; ni++)
#pragma unroll
            for (int c = 0; c < 4; c++)
                acc[mi][ni][c] = 0.f;

    for (int s = 0; s < M_STAGES - 1; s++) {
        if (s < kb_n)
            load_stage(s, s);
        cp_async_commit();
    }
    for (int kb = 0; kb < kb_n; kb++) {
        cp_async_wait<M_STAGES - 2>();
        __syncthreads();
        if (kb + M_STAGES - 1 < kb_n)
            load_stage((kb + M_STAGES - 1) % M_STAGES, kb + M_STAGES - 1);
        cp_async_commit();

        const int stage = kb % M_STAGES;
        const uint32_t sA = sbase + stage * M_STAGE, sAS = sA + M_A, sB = sAS + M_AS;
        const float *sBS = reinterpret_cast<const float *>(smem + stage * M_STAGE + M_A + M_AS + M_B);
        const uint8_t *sASb = smem + stage * M_STAGE + M_A;
        // Activation scales of this thread's 8 pair columns, times 64 (exact: powers of two).
        float asd[4][2];
#pragma unroll
        for (int ni = 0; ni < 4; ni++) {
            const int c = wc * 32 + ni * 8 + 2 * t;
            asd[ni][0] = sBS[c] * 64.f;
            asd[ni][1] = sBS[c + 1] * 64.f;
        }
#pragma unroll
        for (int blk = 0; blk < 4; blk++) {
            uint32_t a[2][4];
            float wsc[2][2];
#pragma unroll
            for (int mi = 0; mi < 2; mi++)
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    const int r = wr * 32 + mi * 16 + h * 8 + g;
                    const uint32_t v = lds32(sA + r * 64 + ((blk ^ ((r >> 1) & 3)) << 4) + 4 * t);
                    a[mi][h] = fp4_lo_to_e4m3(v);     // a0 (h 0) / a1 (h 1): even K positions
                    a[mi][2 + h] = fp4_hi_to_e4m3(v); // a2 / a3: odd K positions
                    wsc[mi][h] = e8m0_to_float(sASb[r * 4 + blk]);
                }
#pragma unroll
            for (int ni = 0; ni < 4; ni++) {
                const int c = wc * 32 + ni * 8 + g;
                const int seg = 2 * blk + (t >> 1);
                const uint2 xv = lds64(sB + c * 128 + ((seg ^ (c & 7)) << 4) + (t & 1) * 8);
                const uint32_t b0 = __byte_perm(xv.x, xv.y, 0x6420), b1 = __byte_perm(xv.x, xv.y, 0x7531);
#pragma unroll
                for (int mi = 0; mi < 2; mi++) {
                    float d[4] = {0.f, 0.f, 0.f, 0.f};
                    mma_e4m3(d, a[mi][0], a[mi][1], a[mi][2], a[mi][3], b0, b1);
                    acc[mi][ni][0] += (d[0] * asd[ni][0]) * wsc[mi][0];
                    acc[mi][ni][1] += (d[1] * asd[ni][1]) * wsc[mi][0];
                    acc[mi][ni][2] += (d[2] * asd[ni][0]) * wsc[mi][1];
                    acc[mi][ni][3] += (d[3] * asd[ni][1]) * wsc[mi][1];
                }
            }
        }
    }
    cp_async_wait<0>();
#pragma unroll
    for (int mi = 0; mi < 2; mi++)
#pragma unroll
        for (int ni = 0; ni < 4; ni++) {
            const int r = row0 + wr * 32 + mi * 16 + g, c = wc * 32 + ni * 8 + 2 * t;
#pragma unroll
            for (int v = 0; v < 4; v++) {
                const int rr = r + (v >> 1) * 8, cc = c + (v & 1);
                if (rr < n && cc < rows)
                    y[(size_t)sP[cc] * n + rr] = __float2bfloat16_rn(acc[mi][ni][v]);
            }
        }
}

// ---- grouped GEMM, second kernel (CUDA_MOE_GEMM_V2) ----
//
// moe_gemm_kernel's tile, ring, swizzles and fragments, and the same output bits; two changes:
// (1) The two column warps take the tile's n8 pair blocks interleaved (warp wc: blocks 2*ni + wc) and
//     skip every block past the tile's pairs (warp-uniform, so mma.sync stays converged): a tile of 12
//     pairs (an expert's share at S = 512) runs 2 of the 8 blocks instead of all 8, one per warp.
// (2) Scaled accumulation. The old kernel adds acc += (d * a) * w per 32-K block, where d is the mma
//     partial, a = act_scale * 64 (per pair, per 128-K stage) and w the e8m0 weight scale (per row,
//     per 32-K block): 3 FP32 instructions per output per mma. This one keeps acc' = acc / a_cur
//     (a_cur: the pair's a in the current stage) and adds acc' = fma(d, w, acc'): 1 instruction;
//     between stages acc' *= a_prev / a_cur, and the output is acc' * a_last.
//     Why the bits are the same: a and w are powers of two (act_quant rounds the scale to one; e8m0 is
//     one). The partial d is a float with |d| < 2^11 (32 products of |e4m3| <= 448 and e2m1 * 2^-6 <= 6/64)
//     and a multiple of 2^-16 (the products' quantum, 2^-9 * 2^-7). When every a of the warp's pairs
//     is in [2^-24, 2^24] and every w of its rows in [2^-32, 2^32] (the guard below), each term
//     d * a * w is a float in [2^-72, 2^67) reached exactly by both (d * a) * w and fma(d, w, .) * a,
//     |acc| < 2^94 and acc is a multiple of 2^-72, so acc / a_cur is a normal float (< 2^118, >= 2^-96
//     when non-zero): the rescales and the final * a are exact, and each step's sum
//     z = acc + term, rounded once in both kernels (fl(acc + exact term)), is either 0 or a normal
//     number in both domains, where rounding commutes with a power-of-two scale:
//     fl(z / a_cur) = fl(z) / a_cur. So acc' == acc / a_cur after every step, bit for bit.
//     A warp whose stage fails the guard (out-of-range or non-power-of-two scales) turns acc' back into
//     acc (exact) and runs the old arithmetic for the rest of its K loop.
constexpr uint32_t M2_A_LO = 103u << 23, M2_A_SPAN = 48u << 23;       // a in [2^-24, 2^24]: float bits
constexpr uint32_t M2_W_LO = 0x5f5f5f5fu, M2_W_HI = 0x9f9f9f9fu;      // e8m0 codes in [95, 159]: 2^-32..2^32

// The a (a power of two) whose biased exponent is byte i of e.
__device__ __forceinline__ float a_of(uint32_t e, int i) { return __uint_as_float(((e >> (8 * i)) & 0xffu) << 23); }

// One 128-K stage of a warp's 32 rows x 4 n8 blocks (nbv: n8 blocks holding pairs; the warp computes
// blocks 2 * ni + wc < nbv). FAST: acc holds acc / a (see above); otherwise moe_gemm_kernel's arithmetic.
template <bool FAST>
__device__ __forceinline__ void moe2_stage(float (&acc)[2][4][4], uint32_t sA, uint32_t sB, const uint32_t (&wraw)[2][2],
                                           const float (&asd)[4][2], int wr, int wc, int g, int t, int nbv)
{
#pragma unroll
    for (int blk = 0; blk < 4; blk++) {
        uint32_t a[2][4];
        float wsc[2][2];
#pragma unroll
        for (int mi = 0; mi < 2; mi++)
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const int r = wr * 32 + mi * 16 + h * 8 + g;
                const uint32_t v = lds32(sA + r * 64 + ((blk ^ ((r >> 1) & 3)) << 4) + 4 * t);
                a[mi][h] = fp4_lo_to_e4m3(v);
                a[mi][2 + h] = fp4_hi_to_e4m3(v);
                const uint32_t code = (wraw[mi][h] >> (8 * blk)) & 0xffu;
                wsc[mi][h] = FAST ? __uint_as_float(code << 23) : e8m0_to_float(code); // FAST: code in 95..159
            }
#pragma unroll
        for (int ni = 0; ni < 4; ni++) {
            if (2 * ni + wc >= nbv)
                continue; // warp-uniform
            const int c = (2 * ni + wc) * 8 + g;
            const int seg = 2 * blk + (t >> 1);
            const uint2 xv = lds64(sB + c * 128 + ((seg ^ (c & 7)) << 4) + (t & 1) * 8);
            const uint32_t b0 = __byte_perm(xv.x, xv.y, 0x6420), b1 = __byte_perm(xv.x, xv.y, 0x7531);
#pragma unroll
            for (int mi = 0; mi < 2; mi++) {
                float d[4] = {0.f, 0.f, 0.f, 0.f};
                mma_e4m3(d, a[mi][0], a[mi][1], a[mi][2], a[mi][3], b0, b1);
                if (FAST) {
                    acc[mi][ni][0] = __fmaf_rn(d[0], wsc[mi][0], acc[mi][ni][0]);
                    acc[mi][ni][1] = __fmaf_rn(d[1], wsc[mi][0], acc[mi][ni][1]);
                    acc[mi][ni][2] = __fmaf_rn(d[2], wsc[mi][1], acc[mi][ni][2]);
                    acc[mi][ni][3] = __fmaf_rn(d[3], wsc[mi][1], acc[mi][ni][3]);
                } else {
                    acc[mi][ni][0] += (d[0] * asd[ni][0]) * wsc[mi][0];
                    acc[mi][ni][1] += (d[1] * asd[ni][1]) * wsc[mi][0];
                    acc[mi][ni][2] += (d[2] * asd[ni][0]) * wsc[mi][1];
                    acc[mi][ni][3] += (d[3] * asd[ni][1]) * wsc[mi][1];
                }
            }
        }
    }
}

__global__ void __launch_bounds__(256, 2) moe_gemm2_kernel(const uint8_t *__restrict__ q, const float *__restrict__ sa,
                                                           int x_group, const int *__restrict__ perm,
                                                           const int *__restrict__ tiles, const int *__restrict__ ntiles,
                                                           const int *__restrict__ offsets,
                                                           const uint8_t *const *__restrict__ wtab,
                                                           const uint8_t *const *__restrict__ stab, int n, int k,
                                                           __nv_bfloat16 *__restrict__ y)
{
    extern __shared__ __align__(128) uint8_t smem[];
    __shared__ int sP[M_BM];
    const int tile = blockIdx.y;
    if (tile >= __ldg(ntiles))
        return;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    const int wr = warp & 3, wc = warp >> 2;
    const moe_tile tl = moe_tile_of(tile, perm, tiles, offsets, wtab, stab, sP);
    const int rows = tl.rows, row0 = tl.row0, nbv = tl.nbv;
    const uint8_t *w = tl.w, *ws = tl.ws;
    const int kb_n = k >> 7, kh = k >> 1, k32 = k >> 5;
    __syncthreads();

    // The loads are moe_gemm_kernel's (every thread takes part: the ring is shared by all warps).
    const uint8_t *asrc[2], *bsrc[2];
    bool aval[2], bval[2];
    uint32_t adst[2], bdst[2];
    for (int j = 0; j < 2; j++) {
        const int i = tid + j * 256;
        const int ra = i >> 2, ca = i & 3;
        aval[j] = row0 + ra < n;
        asrc[j] = w + (size_t)min(row0 + ra, n - 1) * kh + ca * 16;
        adst[j] = ra * 64 + ((ca ^ ((ra >> 1) & 3)) << 4);
        const int rb = i >> 3, cb = i & 7;
        const int pr = sP[rb];
        bval[j] = pr >= 0;
        bsrc[j] = q + (size_t)(pr >= 0 ? pr / x_group : 0) * k + cb * 16;
        bdst[j] = M_A + M_AS + rb * 128 + ((cb ^ (rb & 7)) << 4);
    }
    const bool as_val = tid < M_BN && row0 + tid < n;
    const uint8_t *as_src = ws + (size_t)min(row0 + (tid & (M_BN - 1)), n - 1) * k32;
    const int pb = tid < M_BM ? sP[tid] : -1;
    const float *bs_src = sa + (size_t)(pb >= 0 ? pb / x_group : 0) * kb_n;
    const uint32_t sbase = (uint32_t)__cvta_generic_to_shared(smem);

    auto load_stage = [&](int stage, int kb) {
        const uint32_t s0 = sbase + stage * M_STAGE;
        for (int j = 0; j < 2; j++) {
            cp_async16(s0 + adst[j], asrc[j] + (size_t)kb * 64, aval[j]);
            cp_async16(s0 + bdst[j], bsrc[j] + (size_t)kb * 128, bval[j]);
        }
        if (tid < M_BN)
            cp_async4(s0 + M_A + tid * 4, as_src + kb * 4, as_val);
        if (tid < M_BM)
            cp_async4(s0 + M_A + M_AS + M_B + tid * 4, bs_src + kb, pb >= 0);
    };

    float acc[2][4][4];
#pragma unroll
    for (int mi = 0; mi < 2; mi++)
#pragma unroll
        for (int ni = 0; ni < 4; ni++)
#pragma unroll
            for (int c = 0; c < 4; c++)
                acc[mi][ni][c] = 0.f;
    // a_prev of the thread's pair columns (ni, j) as biased exponents: byte ni of aexp[j] (127: 1.0).
    // Packed because the kernel is at its 128-register cap.
    uint32_t aexp[2] = {0x7f7f7f7fu, 0x7f7f7f7fu};
    const int rlim = n - row0 - wr * 32 - g; // this thread's row mi * 16 + h * 8 is below n when less than rlim
    const bool warp_busy = wc < nbv; // warp-uniform
    bool fast = true;                // warp-uniform: acc holds acc / a_prev

    for (int s = 0; s < M_STAGES - 1; s++) {
        if (s < kb_n)
            load_stage(s, s);
        cp_async_commit();
    }
    for (int kb = 0; kb < kb_n; kb++) {
        cp_async_wait<M_STAGES - 2>();
        __syncthreads();
        if (kb + M_STAGES - 1 < kb_n)
            load_stage((kb + M_STAGES - 1) % M_STAGES, kb + M_STAGES - 1);
        cp_async_commit();
        if (!warp_busy)
            continue;

        const int stage = kb % M_STAGES;
        const uint32_t sA = sbase + stage * M_STAGE, sAS = sA + M_A, sB = sAS + M_AS;
        const float *sBS = reinterpret_cast<const float *>(smem + stage * M_STAGE + M_A + M_AS + M_B);
        // a of this thread's 8 pair columns (1 past the tile's pairs: their partials are 0), and the
        // 4 e8m0 codes of each of its 4 rows in this stage.
        float asd[4][2];
#pragma unroll
        for (int ni = 0; ni < 4; ni++) {
            const int c = (2 * ni + wc) * 8 + 2 * t;
            asd[ni][0] = c < rows ? sBS[c] * 64.f : 1.f;
            asd[ni][1] = c + 1 < rows ? sBS[c + 1] * 64.f : 1.f;
        }
        uint32_t wraw[2][2];
#pragma unroll
        for (int mi = 0; mi < 2; mi++)
#pragma unroll
            for (int h = 0; h < 2; h++)
                wraw[mi][h] = lds32(sAS + (wr * 32 + mi * 16 + h * 8 + g) * 4);
        if (fast) {
            bool ok = true;
#pragma unroll
            for (int ni = 0; ni < 4; ni++)
#pragma unroll
                for (int j = 0; j < 2; j++) {
                    const uint32_t u = __float_as_uint(asd[ni][j]);
                    ok &= (u & 0x807fffffu) == 0 && u - M2_A_LO <= M2_A_SPAN;
                }
            // per-byte min and max of the codes (rows past n hold zero-filled codes, never written out:
            // taken as 127)
            uint32_t wlo = 0xffffffffu, whi = 0;
#pragma unroll
            for (int mi = 0; mi < 2; mi++)
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    const uint32_t wv = mi * 16 + h * 8 < rlim ? wraw[mi][h] : 0x7f7f7f7fu;
                    wlo = __vminu4(wlo, wv);
                    whi = __vmaxu4(whi, wv);
                }
            ok &= (__vcmpltu4(wlo, M2_W_LO) | __vcmpgtu4(whi, M2_W_HI)) == 0;
            if (!__all_sync(0xffffffffu, ok)) {
                fast = false;
#pragma unroll
                for (int mi = 0; mi < 2; mi++)
#pragma unroll
                    for (int ni = 0; ni < 4; ni++)
#pragma unroll
                        for (int v = 0; v < 4; v++)
                            acc[mi][ni][v] *= a_of(aexp[v & 1], ni); // exact: back to acc
            }
        }
        if (fast) {
            // acc / a_prev -> acc / a_cur: times a_prev / a_cur, a power of two in [2^-48, 2^48]
#pragma unroll
            for (int j = 0; j < 2; j++) {
                uint32_t next = 0;
#pragma unroll
                for (int ni = 0; ni < 4; ni++) {
                    const uint32_t ec = __float_as_uint(asd[ni][j]) >> 23; // 103..151 (the guard)
                    const float r = __uint_as_float((((aexp[j] >> (8 * ni)) & 0xffu) + 127u - ec) << 23);
#pragma unroll
                    for (int mi = 0; mi < 2; mi++) {
                        acc[mi][ni][j] *= r;
                        acc[mi][ni][2 + j] *= r;
                    }
                    next |= ec << (8 * ni);
                }
                aexp[j] = next;
            }
            moe2_stage<true>(acc, sA, sB, wraw, asd, wr, wc, g, t, nbv);
        } else {
            moe2_stage<false>(acc, sA, sB, wraw, asd, wr, wc, g, t, nbv);
        }
    }
    cp_async_wait<0>();
    if (!warp_busy)
        return;
#pragma unroll
    for (int mi = 0; mi < 2; mi++)
#pragma unroll
        for (int ni = 0; ni < 4; ni++) {
            const int r = row0 + wr * 32 + mi * 16 + g, c = (2 * ni + wc) * 8 + 2 * t;
#pragma unroll
            for (int v = 0; v < 4; v++) {
                const int rr = r + (v >> 1) * 8, cc = c + (v & 1);
                if (rr < n && cc < rows)
                    y[(size_t)sP[cc] * n + rr] =
                        __float2bfloat16_rn(fast ? acc[mi][ni][v] * a_of(aexp[v & 1], ni) : acc[mi][ni][v]);
            }
        }
}

// ---- grouped GEMM, third kernel (CUDA_MOE_GEMM_V3) ----
//
// V2's tile, ring, loads and pair-block skipping; the weights go to the tensor cores as e4m3 with one
// scale per row and 128-K stage instead of one per 32-K block (the per-128x128-tile conversion of
// spec §5.4, "Lossless FP4 -> FP8", done per row so that the exact range is as wide as possible):
// - For row r of a stage with e8m0 codes e0..e3 (one per 32-K sub-block) and E = max(e_i), each e2m1
//   value v of sub-block i becomes the e4m3 value v * 2^(e_i - E + 6): at most 6 * 64 = 384 < 448, and
//   exact while e_i >= E - 14 (the smallest, 0.5 * 2^-8, is e4m3's smallest subnormal 2^-9). The row's
//   stage partial is then scaled once by 2^(E - 127 - 6) (and the pair's activation scale), so the 4
//   k32 mmas of a stage chain in the tensor core's fp32 accumulator, as cuda_fp8_gemm's do, and the
//   CUDA-core work is 2 instructions per output per stage (acc = fma(P * a, w, acc)) instead of one
//   per output per mma plus the e8m0 decodes and e2m1 conversions of V2.
// - The conversion is done once per stage by the whole CTA (each thread 2 of the 128 x 4 (row,
//   sub-block) pieces: the 16 bytes and the row's 4 codes, a LUT of the 8 magnitudes at the piece's
//   shift read once, prmt per 4 values, the signs by prmt's sign-replicate mode), into a 128 x 128-byte
//   e4m3 tile in natural K order (16-byte chunks XOR-swizzled by row & 7), which ldmatrix reads without
//   bank conflicts for A and, from V2's activation layout unchanged, for B: 8 + up to 8 ldmatrix.x4
//   per warp and stage for its 32 mmas.
// - Exactness guard, per stage and CTA: a piece with e_i < E - 14 (or a row with the NaN code 255) is
//   converted at its own exponent instead (base e_i, exact), every piece records its base, and the
//   stage barrier is __syncthreads_or of "some piece of the stage is not at E": such a stage runs each
//   32-K block as one mma from zero scaled by its own base, i.e. V1's arithmetic ((d * a) * w + acc,
//   the same terms up to exact powers of two), for the whole CTA. So the results are never inexact;
//   weights whose scales stay within 2^14 inside every row's 128-K block (the spec's condition for its
//   lossless FP8 checkpoints; whether V4's weights meet it is unconfirmed, cuda_moe_v3_fallback_stages
//   counts the stages that fell back) never take that path. A product whose every stage falls back
//   gives V1's (= V2's) bytes.
// Numerics: not bit-equal to V1/V2 (a stage's 128 products are summed in the tensor core's fp32
// accumulator before the one scaling); each output is the exact sum of the same exact products with
// K / 32 accumulator steps and K / 128 fp32 fma roundings (moe_gemm.h, test_moe_gemm's bound).
// Speed (H200, kernels/README.md): only 1.10x V2. Nsight Compute puts both at ~60% issue-slot use
// with the ALU pipe the busiest and ~790 instructions per warp and stage for V3 (1.68e9 issued over
// ~2.1e6 warp-stages at S = 2048) where this code asks for ~400, i.e. ~16 more per mma: mma.sync
// m16n8k32 e4m3 is Ada's instruction, not native on Hopper, and the compiler emulates each one by
// converting its A and B fragments to f16 for f16 mmas (NVIDIA, cutlass issue #1986), so every mma
// still pays conversions that this kernel's per-stage conversion cannot remove.
constexpr int M3_W = M_BN * 128;  // converted weights of the current stage
constexpr int M3_RS = M_BN * 4;   // per row: its stage scale 2^(E - 133) (float)
constexpr int M3_RB = M_BN * 16;  // per row and sub-block: 2^(base - 133), base = the conversion's exponent
constexpr int M3_LUT = 16 * 8;    // 15 shifts x the 8 e2m1 magnitudes in e4m3
// 4 stages in the ring (3 in flight, 86 KB with the converted tile: still 2 CTAs an SM). Measured on
// the H200 at S = 2048 (bench-gpu moe, one run): 3, 4 or 5 stages, and an L2::256B prefetch of the
// weight rows, all within 3% of each other (4.55-4.84 ms): the kernel is not bound by its loads'
// latency (see kernels/README.md for what is known of its limit).
constexpr int M3_STAGES = 4;
constexpr int M3_SMEM = M3_STAGES * M_STAGE + M3_W + M3_RS + M3_RB + M3_LUT;
// (CTA, stage)s of moe_gemm3_kernel that took the fallback, since the last reset (per device).
__device__ unsigned long long g_moe_v3_fallbacks;

__device__ __forceinline__ void m3_sts128(uint32_t addr, uint32_t a, uint32_t b, uint32_t c, uint32_t d)
{
    asm volatile("st.shared.v4.u32 [%0], {%1,%2,%3,%4};\n" ::"r"(addr), "r"(a), "r"(b), "r"(c), "r"(d));
}
__device__ __forceinline__ void m3_ldsm4(uint32_t (&r)[4], uint32_t addr)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}
__device__ __forceinline__ uint32_t m3_prmt(uint32_t a, uint32_t b, uint32_t sel)
{
    uint32_t r;
    asm("prmt.b32 %0, %1, %2, %3;\n" : "=r"(r) : "r"(a), "r"(b), "r"(sel));
    return r;
}

// V3's e4m3 LUT (15 entries of 8 bytes at sLUT, filled by threads 0..14): entry i = the magnitudes 0,
// 0.5, 1, 1.5, 2, 3, 4, 6 times 2^(i - 8), exact (V3's and V7's conversions at a shift of 14 - i).
__device__ __forceinline__ void m3_lut_fill(uint32_t sLUT, int tid)
{
    if (tid < 15) {
        const float mags[8] = {0.f, 0.5f, 1.f, 1.5f, 2.f, 3.f, 4.f, 6.f};
        uint32_t l[2] = {0, 0};
        for (int c = 1; c < 8; c++) {
            const float v = ldexpf(mags[c], tid - 8);
            l[c >> 2] |= (uint32_t)__nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3) << (8 * (c & 3));
        }
        asm volatile("st.shared.v2.u32 [%0], {%1,%2};\n" ::"r"(sLUT + tid * 8), "r"(l[0]), "r"(l[1]));
    }
}

// acc += (d * a) * w, each step rounded (V1's arithmetic). volatile: kept in order with the mma
// (also volatile) of the same block, so that the fallback path holds one block's partials at a time
// and fits the 128 registers the fast path needs.
__device__ __forceinline__ void m3_add_scaled(float &acc, float d, float a, float w)
{
    asm volatile("{\n .reg .f32 t;\n mul.rn.f32 t, %1, %2;\n mul.rn.f32 t, t, %3;\n add.rn.f32 %0, %0, t;\n}\n"
                 : "+f"(acc)
                 : "f"(d), "f"(a), "f"(w));
}

// 8 e2m1 codes (nibble j of x: K position j) -> 8 e4m3 bytes in K order (lo: positions 0..3, hi:
// 4..7), through the magnitude LUT l0 (codes 0..3) / l1 (codes 4..7). Signs: prmt's sign-replicate
// selectors (msb set) copy bit 7 of byte j of x << 4 (nibble 2j's sign) or of x (nibble 2j + 1's).
__device__ __forceinline__ void m3_convert(uint32_t x, uint32_t l0, uint32_t l1, uint32_t &lo, uint32_t &hi)
{
    const uint32_t m = x & 0x77777777u, xs = x << 4;
    lo = m3_prmt(l0, l1, m) | (m3_prmt(xs, x, 0xD9C8u) & 0x80808080u);
    hi = m3_prmt(l0, l1, m >> 16) | (m3_prmt(xs, x, 0xFBEAu) & 0x80808080u);
}

// NB pair blocks (1 or 2) from ni0, ni0 + 1 of one 16-row half (mi): their chains interleaved, so two
// independent accumulators are in flight when the tile has the pairs for both.
template <bool FALLBACK, int NB>
__device__ __forceinline__ void m3_blocks(float (&acc)[2][4][4], const uint32_t (&af)[4][4], int mi, int ni0,
                                          uint32_t sB, const float *sBS, uint32_t sSc, int wr, int wc, int lane,
                                          int g, int t)
{
    uint32_t bf[NB][2][4]; // per block: chunks 0-3 | 4-7 of its 8 pairs = b0, b1 of k32 blocks 0, 1 | 2, 3
    float2 a2[NB];         // a of this thread's 2 pair columns (0 past the tile's pairs: not written)
#pragma unroll
    for (int q = 0; q < NB; q++) {
        const int nb = 2 * (ni0 + q) + wc, c = nb * 8 + (lane & 7);
#pragma unroll
        for (int hb = 0; hb < 2; hb++)
            m3_ldsm4(bf[q][hb], sB + c * 128 + (((4 * hb + (lane >> 3)) ^ (c & 7)) << 4));
        a2[q] = *reinterpret_cast<const float2 *>(sBS + nb * 8 + 2 * t);
    }
    const uint32_t r0 = wr * 32 + mi * 16 + g;
    if (!FALLBACK) {
        float d[NB][4];
#pragma unroll
        for (int q = 0; q < NB; q++)
            d[q][0] = d[q][1] = d[q][2] = d[q][3] = 0.f;
#pragma unroll
        for (int blk = 0; blk < 4; blk++)
#pragma unroll
            for (int q = 0; q < NB; q++)
                mma_e4m3(d[q], af[blk][0], af[blk][1], af[blk][2], af[blk][3], bf[q][blk >> 1][2 * (blk & 1)],
                         bf[q][blk >> 1][2 * (blk & 1) + 1]);
        const float w0 = __uint_as_float(lds32(sSc + r0 * 4)), w1 = __uint_as_float(lds32(sSc + (r0 + 8) * 4));
#pragma unroll
        for (int q = 0; q < NB; q++) {
            float(&o)[4] = acc[mi][ni0 + q];
            o[0] = __fmaf_rn(__fmul_rn(d[q][0], a2[q].x), w0, o[0]);
            o[1] = __fmaf_rn(__fmul_rn(d[q][1], a2[q].y), w0, o[1]);
            o[2] = __fmaf_rn(__fmul_rn(d[q][2], a2[q].x), w1, o[2]);
            o[3] = __fmaf_rn(__fmul_rn(d[q][3], a2[q].y), w1, o[3]);
        }
    } else {
#pragma unroll
        for (int q = 0; q < NB; q++)
#pragma unroll
            for (int blk = 0; blk < 4; blk++) {
                float d[4] = {0.f, 0.f, 0.f, 0.f};
                mma_e4m3(d, af[blk][0], af[blk][1], af[blk][2], af[blk][3], bf[q][blk >> 1][2 * (blk & 1)],
                         bf[q][blk >> 1][2 * (blk & 1) + 1]);
                const float w0 = __uint_as_float(lds32(sSc + r0 * 16 + blk * 4));
                const float w1 = __uint_as_float(lds32(sSc + (r0 + 8) * 16 + blk * 4));
                float(&o)[4] = acc[mi][ni0 + q];
                m3_add_scaled(o[0], d[0], a2[q].x, w0);
                m3_add_scaled(o[1], d[1], a2[q].y, w0);
                m3_add_scaled(o[2], d[2], a2[q].x, w1);
                m3_add_scaled(o[3], d[3], a2[q].y, w1);
            }
    }
}

// One stage of a warp's 32 rows x 4 pair blocks from the converted tile sW (see moe_gemm3_kernel).
// FALLBACK = false: the 4 k32 mmas of each fragment chained from zero, acc = fma(P * a, 2^(E - 133), acc)
// (sSc: the rows' stage scales); true: every 32-K block one mma from zero, acc += (d * a) * w with w
// = 2^(base - 133) of the block (sSc: 4 a row), in ascending K order (V1's arithmetic).
// Per 16-row half: its A fragments of the 4 k32 blocks (ldmatrix matrices (rows 0-7 | 8-15) x
// (chunk 2 blk | 2 blk + 1) = a0, a1, a2, a3 of mma m16n8k32), then the pair blocks two at a time
// (B is read once per half, so that one half's A and two blocks' B fit in the 128 registers; the
// fallback takes them one at a time).
template <bool FALLBACK>
__device__ __forceinline__ void m3_stage(float (&acc)[2][4][4], uint32_t sW, uint32_t sB, const float *sBS, uint32_t sSc,
                                         int wr, int wc, int lane, int g, int t, int nbv)
{
#pragma unroll
    for (int mi = 0; mi < 2; mi++) {
        const int r = wr * 32 + mi * 16 + (lane & 15);
        uint32_t af[4][4];
#pragma unroll
        for (int blk = 0; blk < 4; blk++)
            m3_ldsm4(af[blk], sW + r * 128 + (((2 * blk + (lane >> 4)) ^ (r & 7)) << 4));
#pragma unroll
        for (int ni0 = 0; ni0 < 4; ni0 += 2) { // blocks 2 ni + wc (warp-uniform tests)
            if (2 * (ni0 + 1) + wc < nbv && !FALLBACK) {
                m3_blocks<FALLBACK, 2>(acc, af, mi, ni0, sB, sBS, sSc, wr, wc, lane, g, t);
            } else {
                if (2 * ni0 + wc < nbv)
                    m3_blocks<FALLBACK, 1>(acc, af, mi, ni0, sB, sBS, sSc, wr, wc, lane, g, t);
                if (2 * (ni0 + 1) + wc < nbv)
                    m3_blocks<FALLBACK, 1>(acc, af, mi, ni0 + 1, sB, sBS, sSc, wr, wc, lane, g, t);
            }
        }
    }
}

__global__ void __launch_bounds__(256, 2) moe_gemm3_kernel(const uint8_t *__restrict__ q, const float *__restrict__ sa,
                                                           int x_group, const int *__restrict__ perm,
                                                           const int *__restrict__ tiles, const int *__restrict__ ntiles,
                                                           const int *__restrict__ offsets,
                                                           const uint8_t *const *__restrict__ wtab,
                                                           const uint8_t *const *__restrict__ stab, int n, int k,
                                                           __nv_bfloat16 *__restrict__ y)
{
    extern __shared__ __align__(128) uint8_t smem[];
    __shared__ int sP[M_BM];
    const int tile = blockIdx.y;
    if (tile >= __ldg(ntiles))
        return;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    const int wr = warp & 3, wc = warp >> 2;
    const moe_tile tl = moe_tile_of(tile, perm, tiles, offsets, wtab, stab, sP);
    const int rows = tl.rows, row0 = tl.row0, nbv = tl.nbv;
    const uint8_t *w = tl.w, *ws = tl.ws;
    const int kb_n = k >> 7, kh = k >> 1, k32 = k >> 5;
    const uint32_t sbase = (uint32_t)__cvta_generic_to_shared(smem);
    const uint32_t sW = sbase + M3_STAGES * M_STAGE, sRS = sW + M3_W, sRB = sRS + M3_RS, sLUT = sRB + M3_RB;
    m3_lut_fill(sLUT, tid);
    __syncthreads();

    // The loads are moe_gemm_kernel's, into a deeper ring (M3_STAGES).
    const uint8_t *asrc[2], *bsrc[2];
    bool aval[2], bval[2];
    uint32_t adst[2], bdst[2];
    for (int j = 0; j < 2; j++) {
        const int i = tid + j * 256;
        const int ra = i >> 2, ca = i & 3;
        aval[j] = row0 + ra < n;
        asrc[j] = w + (size_t)min(row0 + ra, n - 1) * kh + ca * 16;
        adst[j] = ra * 64 + ((ca ^ ((ra >> 1) & 3)) << 4);
        const int rb = i >> 3, cb = i & 7;
        const int pr = sP[rb];
        bval[j] = pr >= 0;
        bsrc[j] = q + (size_t)(pr >= 0 ? pr / x_group : 0) * k + cb * 16;
        bdst[j] = M_A + M_AS + rb * 128 + ((cb ^ (rb & 7)) << 4);
    }
    const bool as_val = tid < M_BN && row0 + tid < n;
    const uint8_t *as_src = ws + (size_t)min(row0 + (tid & (M_BN - 1)), n - 1) * k32;
    const int pb = tid < M_BM ? sP[tid] : -1;
    const float *bs_src = sa + (size_t)(pb >= 0 ? pb / x_group : 0) * kb_n;

    auto load_stage = [&](int stage, int kb) {
        const uint32_t s0 = sbase + stage * M_STAGE;
        for (int j = 0; j < 2; j++) {
            cp_async16(s0 + adst[j], asrc[j] + (size_t)kb * 64, aval[j]);
            cp_async16(s0 + bdst[j], bsrc[j] + (size_t)kb * 128, bval[j]);
        }
        if (tid < M_BN)
            cp_async4(s0 + M_A + tid * 4, as_src + kb * 4, as_val);
        if (tid < M_BM)
            cp_async4(s0 + M_A + M_AS + M_B + tid * 4, bs_src + kb, pb >= 0);
    };

    float acc[2][4][4];
#pragma unroll
    for (int mi = 0; mi < 2; mi++)
#pragma unroll
        for (int ni = 0; ni < 4; ni++)
#pragma unroll
            for (int c = 0; c < 4; c++)
                acc[mi][ni][c] = 0.f;
    const bool warp_busy = wc < nbv; // warp-uniform

    for (int s = 0; s < M3_STAGES - 1; s++) {
        if (s < kb_n)
            load_stage(s, s);
        cp_async_commit();
    }
    for (int kb = 0; kb < kb_n; kb++) {
        cp_async_wait<M3_STAGES - 2>();
        __syncthreads(); // stage kb landed; every warp is done with sW of stage kb - 1
        if (kb + M3_STAGES - 1 < kb_n)
            load_stage((kb + M3_STAGES - 1) % M3_STAGES, kb + M3_STAGES - 1);
        cp_async_commit();

        const int stage = kb % M3_STAGES;
        const uint32_t sA = sbase + stage * M_STAGE, sAS = sA + M_A, sB = sAS + M_AS;
        const float *sBS = reinterpret_cast<const float *>(smem + stage * M_STAGE + M_A + M_AS + M_B);

        // Convert: piece i = (row i >> 2, sub-block i & 3), as the loads number them (conflict-free
        // 16-byte reads of the swizzled FP4 rows and 16-byte writes of the e4m3 rows).
        int off_e = 0;
#pragma unroll
        for (int j = 0; j < 2; j++) {
            const int i = tid + j * 256, ra = i >> 2, ca = i & 3;
            const uint4 raw = lds128(sA + ra * 64 + ((ca ^ ((ra >> 1) & 3)) << 4));
            const uint32_t codes = lds32(sAS + ra * 4);
            uint32_t mx = __vmaxu4(codes, codes >> 16);
            mx = __vmaxu4(mx, mx >> 8) & 0xffu;
            const uint32_t e = (codes >> (8 * ca)) & 0xffu;
            const bool at_e = mx - e <= 14u && mx != 255u;
            const uint32_t base = at_e ? mx : e;
            off_e |= !at_e;
            const uint2 l = lds64(sLUT + (e + 14u - base) * 8);
            uint32_t o[8];
            m3_convert(raw.x, l.x, l.y, o[0], o[1]);
            m3_convert(raw.y, l.x, l.y, o[2], o[3]);
            m3_convert(raw.z, l.x, l.y, o[4], o[5]);
            m3_convert(raw.w, l.x, l.y, o[6], o[7]);
            const uint32_t dst = sW + ra * 128, sw = ra & 7;
            m3_sts128(dst + (((2 * ca) ^ sw) << 4), o[0], o[1], o[2], o[3]);
            m3_sts128(dst + (((2 * ca + 1) ^ sw) << 4), o[4], o[5], o[6], o[7]);
            const float bs = e8m0_to_float(base) * 0.015625f; // 2^(base - 127 - 6), exact
            asm volatile("st.shared.f32 [%0], %1;\n" ::"r"(sRB + ra * 16 + ca * 4), "f"(bs));
            if (ca == 0) {
                const float rs = e8m0_to_float(mx) * 0.015625f; // 2^(E - 127 - 6), exact
                asm volatile("st.shared.f32 [%0], %1;\n" ::"r"(sRS + ra * 4), "f"(rs));
            }
        }
        const int fallback = __syncthreads_or(off_e); // CTA-uniform
        if (fallback && tid == 0)
            atomicAdd(&g_moe_v3_fallbacks, 1ull); // (cuda_moe_v3_fallback_stages)
        if (!warp_busy)
            continue;

        // Per 16-row half mi of the warp's 32 rows: its A fragments of the 4 k32 blocks (ldmatrix
        // matrices (rows 0-7 | 8-15) x (chunk 2 blk | 2 blk + 1) = a0, a1, a2, a3 of mma m16n8k32),
        // then per pair block its B fragments (chunks 0-3 | 4-7 of the 8 pairs: b0, b1 of blocks
        // 0, 1 | 2, 3) and a of its 2 pair columns (0 past the tile's pairs: those outputs are not
        // written). B is read twice per stage so that only one half's A is live (128 registers).
        if (!fallback)
            m3_stage<false>(acc, sW, sB, sBS, sRS, wr, wc, lane, g, t, nbv);
        else // some piece of the stage is not at its row's E
            m3_stage<true>(acc, sW, sB, sBS, sRB, wr, wc, lane, g, t, nbv);
    }
    cp_async_wait<0>();
    if (!warp_busy)
        return;
#pragma unroll
    for (int mi = 0; mi < 2; mi++)
#pragma unroll
        for (int ni = 0; ni < 4; ni++) {
            const int r = row0 + wr * 32 + mi * 16 + g, c = (2 * ni + wc) * 8 + 2 * t;
#pragma unroll
            for (int v = 0; v < 4; v++) {
                const int rr = r + (v >> 1) * 8, cc = c + (v & 1);
                if (rr < n && cc < rows)
                    y[(size_t)sP[cc] * n + rr] = __float2bfloat16_rn(acc[mi][ni][v]);
            }
        }
}

// ---- grouped GEMM, fourth kernel (CUDA_MOE_GEMM_V4, the default) ----
//
// Why: V3 is issue-bound because Hopper has no native e4m3 mma.sync: ptxas turns every m16n8k32 e4m3
// into ~12 F2FP conversions of its fragments plus two f16 HMMA.16816 and an fp32 add (bench/gpu/
// results/2026-11-29p-gemm). V4 pays the conversions once per CTA and stage instead of once per mma
// and warp: both operands are converted into shared memory as f16 and the warps run the native
// mma.sync m16n8k16 f16 -> f32 on fragments from ldmatrix.
// - Tile, pair-block skipping, raw cp.async ring (FP4 bytes + e8m0 codes + gathered e4m3 rows + their
//   scales, moe_gemm_kernel's layout) as V3, with 3 stages instead of 4 (the f16 tiles take 48 KB).
// - Per stage, after the ring's barrier, every thread converts 2 weight pieces (row, 32-K sub-block:
//   16 FP4 bytes -> 32 f16, cuda_moe4_convert with the LUT of the piece's shift, moe_gemm.h) and 2
//   activation chunks (pair, 16 K: cvt.rn.f16x2.e4m3x2, exact) into the f16 tiles sWh (128 x 256 B)
//   and sXh (64 x 256 B), layout cuda_moe4_off (k16-step-major: a lane's ldmatrix addresses over the
//   stage are one register plus immediates); the row's stage scale 2^(E - 140) goes to sRS. Work
//   items and ldmatrix addresses are moe_gemm.h's cuda_moe4_* functions, checked on the host by
//   test_moe_gemm against the PTX ISA fragment layout of m16n8k16 and for bank conflicts.
// - Weights: v * 2^(e_i - E + 13) is a normal f16 (2 significant bits, low byte 0) for
//   0 <= E - e_i <= 26, so the LUT holds only high bytes and the conversion is V3's prmt scheme plus
//   one prmt per f16x2 word. The 2^13 (rather than 2^0) keeps the smallest value, 0.5 * 2^-13, normal;
//   products are exact in the tensor core (<= 448 * 6 * 2^13 < 2^25; stage partials < 2^32).
// - Fast stage (every piece of the CTA at its row's E): per warp, per k16 step s, A = ldmatrix.x4 of
//   its two 16-row halves, B = ldmatrix.x4 per two active pair blocks (x2 for an odd one), 8 HMMAs per
//   fragment chained from zero in ascending K, then acc = fma(P * act_scale, 2^(E - 140), acc) (V3's
//   2^(E - 133) times V3's 2^-6 = 2^(E - 127 - 13)); the number of active pair blocks is a template
//   argument (tiles are mostly partial at S <= 2048).
// - Guard: a stage in which some piece has E - e_i > 26 or the NaN code (flag reduced by the second
//   barrier, __syncthreads_or) is computed by the whole CTA from the raw stage, which is still in the
//   ring, with moe2_stage<false>: V1's instructions and arithmetic, so V1's bits for that stage.
// Why not a double-buffered f16 tile (convert stage kb + 1 while computing kb, one barrier a stage):
// two f16 buffers are 96 KB, and with even a 2-stage raw ring (34 KB) a CTA would need ~132 KB, so
// only one CTA (8 warps) per SM instead of two; the single buffer + 3-stage ring is 99 KB (2 CTAs per
// SM at 227 KB) and the other CTA of the SM covers each CTA's barriers.
constexpr int M4_STAGES = 3;
constexpr int M4_W = M_BN * 256;   // f16 weights of the current stage
constexpr int M4_X = M_BM * 256;   // f16 activations
constexpr int M4_RS = M_BN * 4;    // per row: 2^(E - 140)
constexpr int M4_LUT = 28 * 8;     // 27 shifts x the 8 e2m1 magnitudes (f16 high bytes)
constexpr int M4_SMEM = M4_STAGES * M_STAGE + M4_W + M4_X + M4_RS + M4_LUT;
static_assert(M4_STAGES * M_STAGE % 128 == 0 && M4_W % 128 == 0, "f16 tiles 128-byte aligned (swizzle)");
static_assert(2 * (M4_SMEM + M_BM * 4 + 1024) <= 228 * 1024, "2 CTAs per SM");
__device__ unsigned long long g_moe_v4_fallbacks;

// d += A (16x16 f16, row) * B (16x8 f16, col), fp32 accumulators (native HMMA.16816 on sm_80+).
__device__ __forceinline__ void m4_mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void m4_ldsm2(uint32_t (&r)[2], uint32_t addr)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n" : "=r"(r[0]), "=r"(r[1]) : "r"(addr));
}
// Two e4m3 (the low and high byte of x) -> f16x2 (low, high half), exact.
__device__ __forceinline__ uint32_t m4_e4m3x2_to_f16x2(uint32_t x)
{
    uint32_t r;
    asm("cvt.rn.f16x2.e4m3x2 %0, %1;\n" : "=r"(r) : "h"((unsigned short)(x & 0xffffu)));
    return r;
}

// A fast stage of the warp: NB active pair blocks (2 q + wc, q < NB), 32 rows (2 halves mi).
template <int NB>
__device__ __forceinline__ void m4_stage(float (&acc)[2][4][4], uint32_t sWh, uint32_t sXh, const float *sBS,
                                         uint32_t sRS, int wr, int wc, int lane, int g, int t)
{
    float p[2][NB][4];
#pragma unroll
    for (int mi = 0; mi < 2; mi++)
#pragma unroll
        for (int q = 0; q < NB; q++)
            p[mi][q][0] = p[mi][q][1] = p[mi][q][2] = p[mi][q][3] = 0.f;
#pragma unroll
    for (int s = 0; s < 8; s++) { // k16 steps in ascending K
        uint32_t a[2][4], b[NB][2];
#pragma unroll
        for (int mi = 0; mi < 2; mi++)
            m3_ldsm4(a[mi], sWh + cuda_moe4_a_ldsm(lane, wr, mi, s));
#pragma unroll
        for (int q = 0; q + 1 < NB; q += 2) { // blocks 2 q + wc and 2 q + 2 + wc
            uint32_t r[4];
            m3_ldsm4(r, sXh + cuda_moe4_b_ldsm(lane, 2 * q + wc, 2 * q + 2 + wc, s));
            b[q][0] = r[0], b[q][1] = r[1], b[q + 1][0] = r[2], b[q + 1][1] = r[3];
        }
        if (NB & 1)
            m4_ldsm2(b[NB - 1], sXh + cuda_moe4_b_ldsm(lane, 2 * (NB - 1) + wc, 2 * (NB - 1) + wc, s));
#pragma unroll
        for (int mi = 0; mi < 2; mi++)
#pragma unroll
            for (int q = 0; q < NB; q++)
                m4_mma(p[mi][q], a[mi], b[q][0], b[q][1]);
    }
#pragma unroll
    for (int mi = 0; mi < 2; mi++) {
        const uint32_t r0 = wr * 32 + mi * 16 + g;
        const float w0 = __uint_as_float(lds32(sRS + r0 * 4)), w1 = __uint_as_float(lds32(sRS + (r0 + 8) * 4));
#pragma unroll
        for (int q = 0; q < NB; q++) {
            const float2 a2 = *reinterpret_cast<const float2 *>(sBS + (2 * q + wc) * 8 + 2 * t);
            float(&o)[4] = acc[mi][q];
            o[0] = __fmaf_rn(__fmul_rn(p[mi][q][0], a2.x), w0, o[0]);
            o[1] = __fmaf_rn(__fmul_rn(p[mi][q][1], a2.y), w0, o[1]);
            o[2] = __fmaf_rn(__fmul_rn(p[mi][q][2], a2.x), w1, o[2]);
            o[3] = __fmaf_rn(__fmul_rn(p[mi][q][3], a2.y), w1, o[3]);
        }
    }
}

__global__ void __launch_bounds__(256, 2) moe_gemm4_kernel(const uint8_t *__restrict__ q, const float *__restrict__ sa,
                                                           int x_group, const int *__restrict__ perm,
                                                           const int *__restrict__ tiles, const int *__restrict__ ntiles,
                                                           const int *__restrict__ offsets,
                                                           const uint8_t *const *__restrict__ wtab,
                                                           const uint8_t *const *__restrict__ stab, int n, int k,
                                                           __nv_bfloat16 *__restrict__ y)
{
    extern __shared__ __align__(128) uint8_t smem[];
    __shared__ int sP[M_BM];
    const int tile = blockIdx.y;
    if (tile >= __ldg(ntiles))
        return;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    const int wr = warp & 3, wc = warp >> 2;
    const moe_tile tl = moe_tile_of(tile, perm, tiles, offsets, wtab, stab, sP);
    const int rows = tl.rows, row0 = tl.row0, nbv = tl.nbv;
    const uint8_t *w = tl.w, *ws = tl.ws;
    const int nact = (nbv + 1 - wc) >> 1; // this warp's blocks 2 q + wc < nbv (0..4)
    const int kb_n = k >> 7, kh = k >> 1, k32 = k >> 5;
    const uint32_t sbase = (uint32_t)__cvta_generic_to_shared(smem);
    const uint32_t sWh = sbase + M4_STAGES * M_STAGE, sXh = sWh + M4_W, sRS = sXh + M4_X, sLUT = sRS + M4_RS;
    if (tid <= CUDA_MOE4_SPREAD) { // LUT entry tid: high bytes of the f16 of the 8 magnitudes * 2^(tid - 13)
        uint32_t l[2] = {0, 0};
        for (int c = 1; c < 8; c++)
            l[c >> 2] |= cuda_moe4_lut_byte(c, tid) << (8 * (c & 3));
        asm volatile("st.shared.v2.u32 [%0], {%1,%2};\n" ::"r"(sLUT + tid * 8), "r"(l[0]), "r"(l[1]));
    }
    __syncthreads();

    // The loads are moe_gemm_kernel's (the shared destinations recomputed at each stage: 4 registers
    // fewer, which keeps the NB = 4 stage and the fallback free of spills at the 128-register cap).
    const uint8_t *asrc[2], *bsrc[2];
    bool aval[2], bval[2];
    for (int j = 0; j < 2; j++) {
        const int i = tid + j * 256;
        const int ra = i >> 2, ca = i & 3;
        aval[j] = row0 + ra < n;
        asrc[j] = w + (size_t)min(row0 + ra, n - 1) * kh + ca * 16;
        const int rb = i >> 3, cb = i & 7;
        const int pr = sP[rb];
        bval[j] = pr >= 0;
        bsrc[j] = q + (size_t)(pr >= 0 ? pr / x_group : 0) * k + cb * 16;
    }
    const bool as_val = tid < M_BN && row0 + tid < n;
    const uint8_t *as_src = ws + (size_t)min(row0 + (tid & (M_BN - 1)), n - 1) * k32;
    const int pb = tid < M_BM ? sP[tid] : -1;
    const float *bs_src = sa + (size_t)(pb >= 0 ? pb / x_group : 0) * kb_n;

    auto load_stage = [&](int stage, int kb) {
        const uint32_t s0 = sbase + stage * M_STAGE;
        for (int j = 0; j < 2; j++) {
            const int i = tid + j * 256, ra = i >> 2, ca = i & 3, rb = i >> 3, cb = i & 7;
            cp_async16(s0 + ra * 64 + ((ca ^ ((ra >> 1) & 3)) << 4), asrc[j] + (size_t)kb * 64, aval[j]);
            cp_async16(s0 + M_A + M_AS + rb * 128 + ((cb ^ (rb & 7)) << 4), bsrc[j] + (size_t)kb * 128, bval[j]);
        }
        if (tid < M_BN)
            cp_async4(s0 + M_A + tid * 4, as_src + kb * 4, as_val);
        if (tid < M_BM)
            cp_async4(s0 + M_A + M_AS + M_B + tid * 4, bs_src + kb, pb >= 0);
    };

    float acc[2][4][4];
#pragma unroll
    for (int mi = 0; mi < 2; mi++)
#pragma unroll
        for (int ni = 0; ni < 4; ni++)
#pragma unroll
            for (int c = 0; c < 4; c++)
                acc[mi][ni][c] = 0.f;

    for (int s = 0; s < M4_STAGES - 1; s++) {
        if (s < kb_n)
            load_stage(s, s);
        cp_async_commit();
    }
    for (int kb = 0; kb < kb_n; kb++) {
        cp_async_wait<M4_STAGES - 2>();
        __syncthreads(); // stage kb landed; every warp is done with the f16 tiles and ring slot of kb - 1
        if (kb + M4_STAGES - 1 < kb_n)
            load_stage((kb + M4_STAGES - 1) % M4_STAGES, kb + M4_STAGES - 1);
        cp_async_commit();

        const int stage = kb % M4_STAGES;
        const uint32_t sA = sbase + stage * M_STAGE, sAS = sA + M_A, sB = sAS + M_AS;
        const float *sBS = reinterpret_cast<const float *>(smem + stage * M_STAGE + M_A + M_AS + M_B);

        // Weights: piece (ra, ca) -> f16 chunks 4 ca .. 4 ca + 3 of row ra.
        int off_e = 0;
#pragma unroll
        for (int j = 0; j < 2; j++) {
            int ra, ca;
            cuda_moe4_wpiece(tid + j * 256, &ra, &ca);
            const uint4 raw = lds128(sA + ra * 64 + ((ca ^ ((ra >> 1) & 3)) << 4));
            const uint32_t codes = lds32(sAS + ra * 4);
            // (byte-wise max by integer max: __vmaxu4 is ~12 instructions on sm_90)
            const uint32_t mx = max(max(codes & 0xffu, (codes >> 8) & 0xffu), max((codes >> 16) & 0xffu, codes >> 24));
            const uint32_t sh = mx - ((codes >> (8 * ca)) & 0xffu); // E - e_i >= 0
            const bool at_e = sh <= (uint32_t)CUDA_MOE4_SPREAD && mx != 255u;
            off_e |= !at_e;
            // (a piece off the range is converted at the smallest shift: the stage then falls back
            // and does not read the f16 tile)
            const uint2 l = lds64(sLUT + (at_e ? CUDA_MOE4_SPREAD - sh : 0u) * 8);
            const uint32_t wv[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
            for (int c = 0; c < 4; c++) {
                uint32_t o[4];
                cuda_moe4_convert(wv[c], l.x, l.y, o);
                m3_sts128(sWh + cuda_moe4_woff(ra, 32 * ca + 8 * c), o[0], o[1], o[2], o[3]);
            }
            if (ca == 0) {
                const float rs = e8m0_to_float(mx) * 0x1p-13f; // 2^(E - 140), exact (subnormal below E = 14)
                asm volatile("st.shared.f32 [%0], %1;\n" ::"r"(sRS + ra * 4), "f"(rs));
            }
        }
        // Activations: chunk (rb, cb) -> f16 chunks 2 cb, 2 cb + 1 of pair rb; 8-pair groups past the
        // tile's pairs are skipped (warp-uniform: rb >> 3 = i >> 6; no active block reads them).
#pragma unroll
        for (int j = 0; j < 2; j++) {
            const int i = tid + j * 256;
            if ((i >> 6) >= nbv)
                continue;
            int rb, cb;
            cuda_moe4_xpiece(i, &rb, &cb);
            const uint4 raw = lds128(sB + rb * 128 + ((cb ^ (rb & 7)) << 4));
            m3_sts128(sXh + cuda_moe4_xoff(rb, 16 * cb), m4_e4m3x2_to_f16x2(raw.x), m4_e4m3x2_to_f16x2(raw.x >> 16),
                      m4_e4m3x2_to_f16x2(raw.y), m4_e4m3x2_to_f16x2(raw.y >> 16));
            m3_sts128(sXh + cuda_moe4_xoff(rb, 16 * cb + 8), m4_e4m3x2_to_f16x2(raw.z),
                      m4_e4m3x2_to_f16x2(raw.z >> 16), m4_e4m3x2_to_f16x2(raw.w), m4_e4m3x2_to_f16x2(raw.w >> 16));
        }
        const int fallback = __syncthreads_or(off_e); // CTA-uniform; the f16 tiles are complete
        if (fallback && tid == 0)
            atomicAdd(&g_moe_v4_fallbacks, 1ull); // (cuda_moe_v4_fallback_stages)
        if (nact == 0)
            continue;
        if (!fallback) {
            switch (nact) { // warp-uniform
            case 1: m4_stage<1>(acc, sWh, sXh, sBS, sRS, wr, wc, lane, g, t); break;
            case 2: m4_stage<2>(acc, sWh, sXh, sBS, sRS, wr, wc, lane, g, t); break;
            case 3: m4_stage<3>(acc, sWh, sXh, sBS, sRS, wr, wc, lane, g, t); break;
            default: m4_stage<4>(acc, sWh, sXh, sBS, sRS, wr, wc, lane, g, t); break;
            }
        } else { // V1's arithmetic on the raw stage (moe_gemm2_kernel's slow path)
            float asd[4][2];
#pragma unroll
            for (int ni = 0; ni < 4; ni++) {
                const int c = (2 * ni + wc) * 8 + 2 * t;
                asd[ni][0] = sBS[c] * 64.f;
                asd[ni][1] = sBS[c + 1] * 64.f;
            }
            uint32_t wraw[2][2];
#pragma unroll
            for (int mi = 0; mi < 2; mi++)
#pragma unroll
                for (int h = 0; h < 2; h++)
                    wraw[mi][h] = lds32(sAS + (wr * 32 + mi * 16 + h * 8 + g) * 4);
            moe2_stage<false>(acc, sA, sB, wraw, asd, wr, wc, g, t, nbv);
        }
    }
    cp_async_wait<0>();
    if (nact == 0)
        return;
#pragma unroll
    for (int mi = 0; mi < 2; mi++)
#pragma unroll
        for (int ni = 0; ni < 4; ni++) {
            const int r = row0 + wr * 32 + mi * 16 + g, c = (2 * ni + wc) * 8 + 2 * t;
#pragma unroll
            for (int v = 0; v < 4; v++) {
                const int rr = r + (v >> 1) * 8, cc = c + (v & 1);
                if (rr < n && cc < rows)
                    y[(size_t)sP[cc] * n + rr] = __float2bfloat16_rn(acc[mi][ni][v]);
            }
        }
}

// ---- grouped GEMM, fifth kernel (CUDA_MOE_GEMM_V5): V4 on wgmma ----
//
// Why: V4 pays its conversions once per CTA and stage but still feeds the tensor cores through
// ldmatrix + mma.sync per warp; Nsight Compute on V4 at S = 2048 shows the shared-memory pipe ~72%
// busy and issue slots ~47% (tools/gpu/ncu-prefill.sh). Hopper's warpgroup MMA reads both operands
// straight from shared memory through descriptors, asynchronously, so the ldmatrix traffic and the
// per-warp HMMA issue go away.
// - Everything else is V4's: tile (128 weight rows x 64 pairs of one expert), 3-stage raw cp.async
//   ring, per-stage conversion of the weights (LUT + prmt at the row's exponent) and activations
//   (cvt e4m3x2 -> f16x2) into shared f16 tiles, the row scales 2^(E - 140), the guard (a stage with
//   E - e_i > 26 or the NaN code runs V1's arithmetic from the raw stage), 2 CTAs an SM.
// - The f16 tiles are in wgmma's canonical no-swizzle K-major layout (moe_gemm.h cuda_moe5_off). After
//   its stores each thread fences the generic proxy against the async proxy (fence.proxy.async), then
//   the stage's barrier; warpgroup wg (warps 4 wg .. 4 wg + 3) multiplies weight rows 64 wg .. 64 wg + 63
//   by the tile's pairs: 8 wgmma m64nNk16 (N = the pairs rounded up to 16, 32, 48 or 64; columns past
//   the pairs are computed from whatever the tile holds and never written), chained from zero in
//   ascending K, one commit, one wait, then V4's acc = fma(P * act_scale, 2^(E - 140), acc).
// - The accumulator fragment of m64nN is m16n8's per warp (warp w4 of the warpgroup: rows 16 w4 + g and
//   + 8, columns 8 j + 2 t, + 1), so a thread owns 16 x 64 / 32 outputs of its warp's 16 rows across
//   all 64 pairs, and the fallback (m5_fallback) computes exactly those with V1's instructions.
// - Numerics: a stage partial is 8 chained k16 steps in fp32, as V4's 8 chained HMMA.16816; the same
//   bound as V3/V4 (test_moe_gemm), and V4's bytes wherever the tensor core's k16 sums agree.
// ---- pieces shared by the wgmma kernels (V5-V8) ----

// A thread's global sources for the ring of one tile of BM pairs (V1's copy pattern): its two 16-byte
// weight pieces (row i >> 2, piece i & 3 of i = tid, tid + 256) and BM / 32 activation pieces (pair i >> 3,
// piece i & 7 of i = tid + 256 j), the weight row's e8m0 codes (thread tid < M_BN: row tid) and the pair's
// activation scales (tid < BM). Rows past n read row n - 1 with the copy zero-filled; pairs past the tile
// read pair 0, zero-filled.
template <int BM = M_BM> struct moe_srcs_t {
    static constexpr int NB = BM / 32; // activation pieces a thread
    const uint8_t *a[2], *b[NB], *as;
    const float *bs;
    bool aval[2], bval[NB], as_val, bs_val;
};
using moe_srcs = moe_srcs_t<M_BM>;
template <int BM = M_BM>
__device__ __forceinline__ moe_srcs_t<BM> moe_srcs_of(const uint8_t *q, const float *sa, int x_group, const uint8_t *w,
                                                      const uint8_t *ws, const int *sP, int row0, int n, int k, int tid)
{
    moe_srcs_t<BM> r;
    const int kh = k >> 1, k32 = k >> 5, kb_n = k >> 7;
    for (int j = 0; j < 2; j++) {
        const int i = tid + j * 256, ra = i >> 2, ca = i & 3;
        r.aval[j] = row0 + ra < n;
        r.a[j] = w + (size_t)min(row0 + ra, n - 1) * kh + ca * 16;
    }
    for (int j = 0; j < moe_srcs_t<BM>::NB; j++) {
        const int i = tid + j * 256;
        const int rb = i >> 3, cb = i & 7;
        const int pr = sP[rb];
        r.bval[j] = pr >= 0;
        r.b[j] = q + (size_t)(pr >= 0 ? pr / x_group : 0) * k + cb * 16;
    }
    r.as_val = tid < M_BN && row0 + tid < n;
    r.as = ws + (size_t)min(row0 + (tid & (M_BN - 1)), n - 1) * k32;
    const int pb = tid < BM ? sP[tid] : -1;
    r.bs_val = pb >= 0;
    r.bs = sa + (size_t)(pb >= 0 ? pb / x_group : 0) * kb_n;
    return r;
}

// A stage partial P (m64nN fragment: rows g / g + 8 of the warp, columns 8 j + 2 t, + 1) into acc:
// acc = fma(P * act_scale, w, acc), w0 / w1 the rows' stage scales.
template <int N, int NJ>
__device__ __forceinline__ void moe_promote(float (&acc)[NJ][4], const float (&p)[N / 2], const float *sBS, float w0,
                                            float w1, int t)
{
#pragma unroll
    for (int j = 0; j < N / 8; j++) {
        const float2 a2 = *reinterpret_cast<const float2 *>(sBS + j * 8 + 2 * t);
        float(&o)[4] = acc[j];
        o[0] = __fmaf_rn(__fmul_rn(p[4 * j + 0], a2.x), w0, o[0]);
        o[1] = __fmaf_rn(__fmul_rn(p[4 * j + 1], a2.y), w0, o[1]);
        o[2] = __fmaf_rn(__fmul_rn(p[4 * j + 2], a2.x), w1, o[2]);
        o[3] = __fmaf_rn(__fmul_rn(p[4 * j + 3], a2.y), w1, o[3]);
    }
}

// The thread's outputs (rows r0 and r0 + 8 of the matrix, the tile's nbv pair blocks) to y as bf16.
template <int NJ>
__device__ __forceinline__ void moe_store(__nv_bfloat16 *y, const float (&acc)[NJ][4], const int *sP, int r0, int n,
                                          int nbv, int rows, int t)
{
#pragma unroll
    for (int j = 0; j < NJ; j++) {
        if (j >= nbv)
            break;
#pragma unroll
        for (int v = 0; v < 4; v++) {
            const int rr = r0 + (v >> 1) * 8, cc = j * 8 + 2 * t + (v & 1);
            if (rr < n && cc < rows)
                y[(size_t)sP[cc] * n + rr] = __float2bfloat16_rn(acc[j][v]);
        }
    }
}

constexpr int M5_STAGES = M4_STAGES;
constexpr int M5_SMEM = M4_SMEM;
__device__ unsigned long long g_moe_v5_fallbacks;

__device__ __forceinline__ uint64_t m5_desc(uint32_t saddr) { return wgmma_desc(saddr, CUDA_MOE5_LBO, CUDA_MOE5_SBO); }

// A fast stage of warpgroup wg: rows 64 wg + 16 w4 + g (+ 8), N columns (pairs).
template <int N>
__device__ __forceinline__ void m5_stage(float (&acc)[8][4], uint32_t sWh, uint32_t sXh, const float *sBS,
                                         uint32_t sRS, int wg, int w4, int g, int t)
{
    float p[N / 2];
    const uint64_t da = m5_desc(sWh + wg * 2048), db = m5_desc(sXh);
    wgmma_fence();
#pragma unroll
    for (int s = 0; s < 8; s++) // k16 steps in ascending K; (s * 4096) >> 4 and (s * 2048) >> 4 in the start field
        wgmma_f16<N>(p, da + (uint64_t)(s * (M_BN * 32 / 16)), db + (uint64_t)(s * (M_BM * 32 / 16)), s);
    wgmma_commit();
    wgmma_wait0();
    const uint32_t r0 = wg * 64 + w4 * 16 + g;
    const float w0 = __uint_as_float(lds32(sRS + r0 * 4)), w1 = __uint_as_float(lds32(sRS + (r0 + 8) * 4));
    moe_promote<N>(acc, p, sBS, w0, w1, t);
}

// V1's arithmetic on the raw stage for this thread's outputs (moe2_stage<false> with V5's ownership:
// rows rb + g and rb + 8 + g, the tile's nbv pair blocks).
template <int NJ>
__device__ __forceinline__ void m5_fallback(float (&acc)[NJ][4], uint32_t sA, uint32_t sAS, uint32_t sB,
                                            const float *sBS, int rb, int g, int t, int nbv)
{
    uint32_t wraw[2];
    wraw[0] = lds32(sAS + (rb + g) * 4);
    wraw[1] = lds32(sAS + (rb + 8 + g) * 4);
#pragma unroll
    for (int blk = 0; blk < 4; blk++) {
        uint32_t a[4];
        float wsc[2];
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int r = rb + h * 8 + g;
            const uint32_t v = lds32(sA + r * 64 + ((blk ^ ((r >> 1) & 3)) << 4) + 4 * t);
            a[h] = fp4_lo_to_e4m3(v);
            a[2 + h] = fp4_hi_to_e4m3(v);
            wsc[h] = e8m0_to_float((wraw[h] >> (8 * blk)) & 0xffu);
        }
#pragma unroll
        for (int ni = 0; ni < NJ; ni++) {
            if (ni >= nbv)
                break; // CTA-uniform
            const int c = ni * 8 + g, seg = 2 * blk + (t >> 1);
            const uint2 xv = lds64(sB + c * 128 + ((seg ^ (c & 7)) << 4) + (t & 1) * 8);
            const uint32_t b0 = __byte_perm(xv.x, xv.y, 0x6420), b1 = __byte_perm(xv.x, xv.y, 0x7531);
            float d[4] = {0.f, 0.f, 0.f, 0.f};
            mma_e4m3(d, a[0], a[1], a[2], a[3], b0, b1);
            const float as0 = sBS[ni * 8 + 2 * t] * 64.f, as1 = sBS[ni * 8 + 2 * t + 1] * 64.f;
            acc[ni][0] += (d[0] * as0) * wsc[0];
            acc[ni][1] += (d[1] * as1) * wsc[0];
            acc[ni][2] += (d[2] * as0) * wsc[1];
            acc[ni][3] += (d[3] * as1) * wsc[1];
        }
    }
}

__global__ void __launch_bounds__(256, 2) moe_gemm5_kernel(const uint8_t *__restrict__ q, const float *__restrict__ sa,
                                                           int x_group, const int *__restrict__ perm,
                                                           const int *__restrict__ tiles, const int *__restrict__ ntiles,
                                                           const int *__restrict__ offsets,
                                                           const uint8_t *const *__restrict__ wtab,
                                                           const uint8_t *const *__restrict__ stab, int n, int k,
                                                           __nv_bfloat16 *__restrict__ y)
{
    extern __shared__ __align__(128) uint8_t smem[];
    __shared__ int sP[M_BM];
    const int tile = blockIdx.y;
    if (tile >= __ldg(ntiles))
        return;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    const int wg = warp >> 2, w4 = warp & 3;
    const moe_tile tl = moe_tile_of(tile, perm, tiles, offsets, wtab, stab, sP);
    const int rows = tl.rows, row0 = tl.row0, nbv = tl.nbv;
    const uint8_t *w = tl.w, *ws = tl.ws;
    const int kb_n = k >> 7;
    const uint32_t sbase = (uint32_t)__cvta_generic_to_shared(smem);
    const uint32_t sWh = sbase + M5_STAGES * M_STAGE, sXh = sWh + M4_W, sRS = sXh + M4_X, sLUT = sRS + M4_RS;
    if (tid <= CUDA_MOE4_SPREAD) { // V4's LUT
        uint32_t l[2] = {0, 0};
        for (int c = 1; c < 8; c++)
            l[c >> 2] |= cuda_moe4_lut_byte(c, tid) << (8 * (c & 3));
        asm volatile("st.shared.v2.u32 [%0], {%1,%2};\n" ::"r"(sLUT + tid * 8), "r"(l[0]), "r"(l[1]));
    }
    __syncthreads();

    const moe_srcs src = moe_srcs_of(q, sa, x_group, w, ws, sP, row0, n, k, tid);

    auto load_stage = [&](int stage, int kb) {
        const uint32_t s0 = sbase + stage * M_STAGE;
        for (int j = 0; j < 2; j++) {
            const int i = tid + j * 256, ra = i >> 2, ca = i & 3, rb = i >> 3, cb = i & 7;
            cp_async16(s0 + ra * 64 + ((ca ^ ((ra >> 1) & 3)) << 4), src.a[j] + (size_t)kb * 64, src.aval[j]);
            cp_async16(s0 + M_A + M_AS + rb * 128 + ((cb ^ (rb & 7)) << 4), src.b[j] + (size_t)kb * 128, src.bval[j]);
        }
        if (tid < M_BN)
            cp_async4(s0 + M_A + tid * 4, src.as + kb * 4, src.as_val);
        if (tid < M_BM)
            cp_async4(s0 + M_A + M_AS + M_B + tid * 4, src.bs + kb, src.bs_val);
    };

    float acc[8][4];
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
        for (int c = 0; c < 4; c++)
            acc[j][c] = 0.f;

    for (int s = 0; s < M5_STAGES - 1; s++) {
        if (s < kb_n)
            load_stage(s, s);
        cp_async_commit();
    }
    for (int kb = 0; kb < kb_n; kb++) {
        cp_async_wait<M5_STAGES - 2>();
        __syncthreads(); // stage kb landed; every warpgroup is done with the f16 tiles and ring slot of kb - 1
        if (kb + M5_STAGES - 1 < kb_n)
            load_stage((kb + M5_STAGES - 1) % M5_STAGES, kb + M5_STAGES - 1);
        cp_async_commit();

        const int stage = kb % M5_STAGES;
        const uint32_t sA = sbase + stage * M_STAGE, sAS = sA + M_A, sB = sAS + M_AS;
        const float *sBS = reinterpret_cast<const float *>(smem + stage * M_STAGE + M_A + M_AS + M_B);

        // Weights: V4's pieces and conversion, stored at cuda_moe5_off.
        int off_e = 0;
#pragma unroll
        for (int j = 0; j < 2; j++) {
            int ra, ca;
            cuda_moe4_wpiece(tid + j * 256, &ra, &ca);
            const uint4 raw = lds128(sA + ra * 64 + ((ca ^ ((ra >> 1) & 3)) << 4));
            const uint32_t codes = lds32(sAS + ra * 4);
            const uint32_t mx = max(max(codes & 0xffu, (codes >> 8) & 0xffu), max((codes >> 16) & 0xffu, codes >> 24));
            const uint32_t sh = mx - ((codes >> (8 * ca)) & 0xffu);
            const bool at_e = sh <= (uint32_t)CUDA_MOE4_SPREAD && mx != 255u;
            off_e |= !at_e;
            const uint2 l = lds64(sLUT + (at_e ? CUDA_MOE4_SPREAD - sh : 0u) * 8);
            const uint32_t wv[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
            for (int c = 0; c < 4; c++) {
                uint32_t o[4];
                cuda_moe4_convert(wv[c], l.x, l.y, o);
                m3_sts128(sWh + cuda_moe5_off(ra, 32 * ca + 8 * c, M_BN), o[0], o[1], o[2], o[3]);
            }
            if (ca == 0) {
                const float rs = e8m0_to_float(mx) * 0x1p-13f; // 2^(E - 140)
                asm volatile("st.shared.f32 [%0], %1;\n" ::"r"(sRS + ra * 4), "f"(rs));
            }
        }
        // Activations (8-pair groups past the tile's pairs skipped: their columns are never written).
#pragma unroll
        for (int j = 0; j < 2; j++) {
            const int i = tid + j * 256;
            if ((i >> 6) >= nbv)
                continue;
            int rb, cb;
            cuda_moe4_xpiece(i, &rb, &cb);
            const uint4 raw = lds128(sB + rb * 128 + ((cb ^ (rb & 7)) << 4));
            m3_sts128(sXh + cuda_moe5_off(rb, 16 * cb, M_BM), m4_e4m3x2_to_f16x2(raw.x), m4_e4m3x2_to_f16x2(raw.x >> 16),
                      m4_e4m3x2_to_f16x2(raw.y), m4_e4m3x2_to_f16x2(raw.y >> 16));
            m3_sts128(sXh + cuda_moe5_off(rb, 16 * cb + 8, M_BM), m4_e4m3x2_to_f16x2(raw.z),
                      m4_e4m3x2_to_f16x2(raw.z >> 16), m4_e4m3x2_to_f16x2(raw.w), m4_e4m3x2_to_f16x2(raw.w >> 16));
        }
        // the generic-proxy stores above become visible to wgmma (the async proxy) after this fence and
        // the barrier
        wgmma_proxy_fence();
        const int fallback = __syncthreads_or(off_e); // CTA-uniform; the f16 tiles are complete
        if (fallback && tid == 0)
            atomicAdd(&g_moe_v5_fallbacks, 1ull); // (cuda_moe_v5_fallback_stages)
        if (!fallback) {
            if (nbv <= 2) // CTA-uniform
                m5_stage<16>(acc, sWh, sXh, sBS, sRS, wg, w4, g, t);
            else if (nbv <= 4)
                m5_stage<32>(acc, sWh, sXh, sBS, sRS, wg, w4, g, t);
            else if (nbv <= 6)
                m5_stage<48>(acc, sWh, sXh, sBS, sRS, wg, w4, g, t);
            else
                m5_stage<64>(acc, sWh, sXh, sBS, sRS, wg, w4, g, t);
        } else {
            m5_fallback(acc, sA, sAS, sB, sBS, wg * 64 + w4 * 16, g, t, nbv);
        }
    }
    cp_async_wait<0>();
    moe_store(y, acc, sP, row0 + wg * 64 + w4 * 16 + g, n, nbv, rows, t);
}

// ---- grouped GEMM, sixth kernel (CUDA_MOE_GEMM_V6): V5 with the weights in registers ----
//
// Why: Nsight Compute on V5 (S = 2048, results/2026-11-29y) has the shared-memory pipe the busiest unit
// (L1/TEX 73%, issue slots 47%): per CTA and stage the weights cross shared memory three times (the
// raw ring, the 32 KB f16 tile written by the conversion, and read again by wgmma). wgmma can take A
// from registers, and the conversion produces f16 pairs in registers anyway, so V6 converts each
// warp's own weight rows straight into its A fragments; only the activations go through an f16 tile.
// - K order: a thread (g, t) of a warp needs, per k16 step s, A elements K 2t, 2t+1 and 8+2t, 9+2t of
//   rows g and g+8. Logical step s / position kk is mapped to the stage's physical K (a bijection of
//   0..127): kk = 2t+e -> 32t + 4s + e, kk = 8+2t+e -> 32t + 4s + 2 + e (e = 0, 1). So thread t's A
//   elements for all 8 steps are exactly sub-block t (K 32t..32t+31) of its two rows: one 16-byte
//   load from the raw ring per row, one shift (its own e8m0 code against the row's E), and the 4
//   words of cuda_moe4_convert per 8 codes are the fragment registers as they come (word c, f16x2
//   q -> step 2c + q/2, low pair for q even, high pair for q odd). The activation tile is written in
//   the same order (moe_gemm.h cuda_moe6_xoff): a pair's 4 e4m3 at physical 32t + 4s + 0..3 go to
//   logical (s, 2t..2t+1) and (s, 8+2t..9+2t).
// - Everything else is V5's: the ring, the activations' conversion (cvt e4m3x2 -> f16x2), the guard
//   (a piece with E - e_i > 26 or the NaN code: the stage runs V1's arithmetic from the raw ring,
//   m5_fallback), the stage arithmetic acc = fma(P * act_scale, 2^(E - 140), acc), with the rows'
//   scales kept in registers.
// - Numerics: the same 128 exact products a stage, summed by the tensor core in another grouping of
//   K (8 chained k16 steps over the permuted order): the same bound as V3-V5, not V5's bytes.
constexpr int M6_SMEM = M4_STAGES * M_STAGE + M4_X + M4_LUT; // no f16 weight tile, no row scales
static_assert(2 * (M6_SMEM + M_BM * 4 + 1024) <= 228 * 1024, "2 CTAs per SM");
__device__ unsigned long long g_moe_v6_fallbacks;

template <int N>
__device__ __forceinline__ void m6_stage(float (&acc)[8][4], const uint32_t (&a)[8][4], uint32_t sXh, const float *sBS,
                                         float w0, float w1, int t)
{
    float p[N / 2];
    const uint64_t db = wgmma_desc(sXh, CUDA_MOE5_LBO, CUDA_MOE5_SBO);
    wgmma_fence();
#pragma unroll
    for (int s = 0; s < 8; s++)
        wgmma_f16_ra<N>(p, a[s], db + (uint64_t)(s * (M_BM * 32 / 16)), s);
    wgmma_commit();
    wgmma_wait0();
    moe_promote<N>(acc, p, sBS, w0, w1, t);
}

__global__ void __launch_bounds__(256, 2) moe_gemm6_kernel(const uint8_t *__restrict__ q, const float *__restrict__ sa,
                                                           int x_group, const int *__restrict__ perm,
                                                           const int *__restrict__ tiles, const int *__restrict__ ntiles,
                                                           const int *__restrict__ offsets,
                                                           const uint8_t *const *__restrict__ wtab,
                                                           const uint8_t *const *__restrict__ stab, int n, int k,
                                                           __nv_bfloat16 *__restrict__ y)
{
    extern __shared__ __align__(128) uint8_t smem[];
    __shared__ int sP[M_BM];
    const int tile = blockIdx.y;
    if (tile >= __ldg(ntiles))
        return;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    const int wg = warp >> 2, w4 = warp & 3;
    const moe_tile tl = moe_tile_of(tile, perm, tiles, offsets, wtab, stab, sP);
    const int rows = tl.rows, row0 = tl.row0, nbv = tl.nbv;
    const uint8_t *w = tl.w, *ws = tl.ws;
    const int kb_n = k >> 7;
    const uint32_t sbase = (uint32_t)__cvta_generic_to_shared(smem);
    const uint32_t sXh = sbase + M4_STAGES * M_STAGE, sLUT = sXh + M4_X;
    if (tid <= CUDA_MOE4_SPREAD) {
        uint32_t l[2] = {0, 0};
        for (int c = 1; c < 8; c++)
            l[c >> 2] |= cuda_moe4_lut_byte(c, tid) << (8 * (c & 3));
        asm volatile("st.shared.v2.u32 [%0], {%1,%2};\n" ::"r"(sLUT + tid * 8), "r"(l[0]), "r"(l[1]));
    }
    __syncthreads();

    const moe_srcs src = moe_srcs_of(q, sa, x_group, w, ws, sP, row0, n, k, tid);

    auto load_stage = [&](int stage, int kb) {
        const uint32_t s0 = sbase + stage * M_STAGE;
        for (int j = 0; j < 2; j++) {
            const int i = tid + j * 256, ra = i >> 2, ca = i & 3, rb = i >> 3, cb = i & 7;
            cp_async16(s0 + ra * 64 + ((ca ^ ((ra >> 1) & 3)) << 4), src.a[j] + (size_t)kb * 64, src.aval[j]);
            cp_async16(s0 + M_A + M_AS + rb * 128 + ((cb ^ (rb & 7)) << 4), src.b[j] + (size_t)kb * 128, src.bval[j]);
        }
        if (tid < M_BN)
            cp_async4(s0 + M_A + tid * 4, src.as + kb * 4, src.as_val);
        if (tid < M_BM)
            cp_async4(s0 + M_A + M_AS + M_B + tid * 4, src.bs + kb, src.bs_val);
    };

    float acc[8][4];
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
        for (int c = 0; c < 4; c++)
            acc[j][c] = 0.f;
    const int rw = wg * 64 + w4 * 16 + g; // this thread's rows rw and rw + 8 (tile-relative)

    for (int s = 0; s < M4_STAGES - 1; s++) {
        if (s < kb_n)
            load_stage(s, s);
        cp_async_commit();
    }
    for (int kb = 0; kb < kb_n; kb++) {
        cp_async_wait<M4_STAGES - 2>();
        __syncthreads(); // stage kb landed; every warpgroup is done with the activation tile of kb - 1
        if (kb + M4_STAGES - 1 < kb_n)
            load_stage((kb + M4_STAGES - 1) % M4_STAGES, kb + M4_STAGES - 1);
        cp_async_commit();

        const int stage = kb % M4_STAGES;
        const uint32_t sA = sbase + stage * M_STAGE, sAS = sA + M_A, sB = sAS + M_AS;
        const float *sBS = reinterpret_cast<const float *>(smem + stage * M_STAGE + M_A + M_AS + M_B);

        // Activations: chunk (rb, cb) = physical K 16 cb .. 16 cb + 15 = sub-block t' = cb / 2, steps
        // 4 (cb & 1) .. + 3; each 4 bytes -> the f16 pairs at logical (s, 2t') and (s, 8 + 2t').
#pragma unroll
        for (int j = 0; j < 2; j++) {
            const int i = tid + j * 256;
            if ((i >> 6) >= nbv)
                continue;
            int rb, cb;
            cuda_moe4_xpiece(i, &rb, &cb);
            const uint4 raw = lds128(sB + rb * 128 + ((cb ^ (rb & 7)) << 4));
            const uint32_t rv[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
            for (int qq = 0; qq < 4; qq++) {
                const int s = 4 * (cb & 1) + qq, tp = cb >> 1;
                asm volatile("st.shared.u32 [%0], %1;\n" ::"r"(sXh + cuda_moe5_off(rb, 16 * s + 2 * tp, M_BM)),
                             "r"(m4_e4m3x2_to_f16x2(rv[qq])));
                asm volatile("st.shared.u32 [%0], %1;\n" ::"r"(sXh + cuda_moe5_off(rb, 16 * s + 8 + 2 * tp, M_BM)),
                             "r"(m4_e4m3x2_to_f16x2(rv[qq] >> 16)));
            }
        }
        // Weights: rows rw, rw + 8, sub-block t, into the A fragments a[s][0..3].
        uint32_t a[8][4];
        int off_e = 0;
        float wsc[2];
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int ra = rw + 8 * h;
            const uint4 raw = lds128(sA + ra * 64 + ((t ^ ((ra >> 1) & 3)) << 4));
            const uint32_t codes = lds32(sAS + ra * 4);
            const uint32_t mx = max(max(codes & 0xffu, (codes >> 8) & 0xffu), max((codes >> 16) & 0xffu, codes >> 24));
            const uint32_t sh = mx - ((codes >> (8 * t)) & 0xffu);
            const bool at_e = sh <= (uint32_t)CUDA_MOE4_SPREAD && mx != 255u;
            off_e |= !at_e;
            const uint2 l = lds64(sLUT + (at_e ? CUDA_MOE4_SPREAD - sh : 0u) * 8);
            const uint32_t wv[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
            for (int c = 0; c < 4; c++) {
                uint32_t o[4];
                cuda_moe4_convert(wv[c], l.x, l.y, o);
                // word c covers physical K 32t + 8c .. + 7 = steps 2c, 2c + 1; o[q]: positions 2q, 2q + 1
                a[2 * c][h] = o[0], a[2 * c][2 + h] = o[1];
                a[2 * c + 1][h] = o[2], a[2 * c + 1][2 + h] = o[3];
            }
            wsc[h] = e8m0_to_float(mx) * 0x1p-13f; // 2^(E - 140)
        }
        wgmma_proxy_fence();
        const int fallback = __syncthreads_or(off_e); // CTA-uniform; the activation tile is complete
        if (fallback && tid == 0)
            atomicAdd(&g_moe_v6_fallbacks, 1ull); // (cuda_moe_v6_fallback_stages)
        if (!fallback) {
            if (nbv <= 2) // CTA-uniform
                m6_stage<16>(acc, a, sXh, sBS, wsc[0], wsc[1], t);
            else if (nbv <= 4)
                m6_stage<32>(acc, a, sXh, sBS, wsc[0], wsc[1], t);
            else if (nbv <= 6)
                m6_stage<48>(acc, a, sXh, sBS, wsc[0], wsc[1], t);
            else
                m6_stage<64>(acc, a, sXh, sBS, wsc[0], wsc[1], t);
        } else {
            m5_fallback(acc, sA, sAS, sB, sBS, wg * 64 + w4 * 16, g, t, nbv);
        }
    }
    cp_async_wait<0>();
    moe_store(y, acc, sP, row0 + rw, n, nbv, rows, t);
}

// ---- grouped GEMM, seventh kernel (CUDA_MOE_GEMM_V7): FP8 wgmma ----
//
// Why: V6 still runs f16 wgmma (half Hopper's FP8 rate), converts every stage's activations to f16
// through shared memory, and each warpgroup waits for its stage's wgmma before converting the next.
// V7 keeps both operands in FP8:
// - Weights: V3's conversion (per row and stage, E = max of the row's 4 e8m0 codes; an e2m1 value of
//   sub-block i becomes the e4m3 v * 2^(e_i - E + 6)), for e_i >= E - CUDA_MOE7_SPREAD (12; V3 goes
//   to 14, deeper into e4m3's subnormals, which Hopper's FP8 tensor cores did not sum to the bound:
//   results/2026-11-29-s14/call1), straight into the
//   warp's A fragments of wgmma m64nNk32 e4m3 (wgmma_e4m3_ra), K in natural order: k32 step s is
//   sub-block s, thread t's bytes of it are 2t, 2t + 1, 8 + 2t, 9 + 2t (two 4-byte loads and a prmt,
//   cuda_moe7_pick), one LUT row per (row, sub-block).
// - Activations: read by wgmma from the cp.async ring as they were copied. The ring's rows are 128
//   bytes (one stage of K) with the 16-byte chunks XOR-swizzled by row & 7 (cuda_moe7_xoff), which is
//   the 128-byte swizzle of wgmma's descriptor when the slot is 1024-byte aligned: no conversion pass,
//   no f16 tile, one fence.proxy.async per thread after its copies land, one barrier per stage.
// - N = 8 x the tile's pair blocks (one instantiation of the K loop per N).
// - Guard, per warp: a piece with e_i < E - 12 (or the NaN code 255) makes its warp run the stage with
//   V1's arithmetic from the raw ring (m5_fallback: the ring's weight and activation layouts are V5's),
//   discarding its wgmma rows; cuda_moe_v7_fallback_stages counts such (warp, stage)s.
//   Deciding per warp (its own 16 rows) needs no barrier; the wgmma is issued on every stage, in
//   uniform control flow, which keeps ptxas from serialising it.
// - Two CTAs an SM (128 registers), a 6-stage ring; a stage's conversion comes before its wgmma, and
//   the other CTA's warpgroups overlap it. Tried (results/2026-11-29-s14/call1): one CTA an SM (183
//   registers) with a 10-stage ring, each warpgroup converting the next stage while the tensor cores
//   run this one: the same bytes, 0.75-0.80x this form at S = 512 / 2048 / 8192.
// - Numerics: each stage's 128 exact products summed by the FP8 tensor core (4 k32 steps in its
//   narrower accumulator, about 13 fraction bits), then acc = fma(P * act_scale, 2^(E - 133), acc) in
//   fp32: test_moe_gemm's EPS7 bound (test_gemm's EPS_LT), as cuBLASLt's block-scaled products and
//   DeepSeek's FP8 GEMMs (promotion to fp32 every 128 K).
constexpr int M7_STAGES = 6;
constexpr int M7_B = 0, M7_A = M_BM * 128, M7_AS = M7_A + M_BN * 64, M7_BS = M7_AS + M_BN * 4;
constexpr int M7_STAGE = 17 * 1024; // a multiple of 1024: every slot's activation rows are 1024-aligned
static_assert(M7_BS + M_BM * 4 <= M7_STAGE, "V7 stage layout");
constexpr int M7_LUT = 128; // 15 entries of 8 bytes
constexpr int M7_SMEM = 1024 + M7_STAGES * M7_STAGE + M7_LUT; // + the slack to align the ring to 1024
static_assert(2 * (M7_SMEM + M_BM * 4 + 1024) <= 228 * 1024, "two CTAs per SM");
__device__ unsigned long long g_moe_v7_fallbacks;

// The stage's weights of this thread's rows ra0, ra0 + 8 into A fragments a[s][0..3] (k32 step s),
// their fast-path scales 2^(E - 133) into wsc; returns whether some piece of them is out of the fast
// range (a row's codes spread more than CUDA_MOE7_SPREAD, or the NaN code): the warp then runs V1's
// arithmetic instead, so such a row's fragments (converted from LUT rows below the table: other ring
// bytes, never out of shared memory, as E - e_i <= 255) are never used.
__device__ __forceinline__ int m7_convert(uint32_t (&a)[4][4], float (&wsc)[2], uint32_t sA, uint32_t sAS,
                                          uint32_t sLUT, int ra0, int t)
{
    int off = 0;
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const int ra = ra0 + 8 * h;
        const uint32_t codes = lds32(sAS + ra * 4);
        uint32_t e[4];
#pragma unroll
        for (int s = 0; s < 4; s++)
            e[s] = (codes >> (8 * s)) & 0xffu;
        const uint32_t mx = max(max(e[0], e[1]), max(e[2], e[3])), mn = min(min(e[0], e[1]), min(e[2], e[3]));
        off |= (mx - mn > (uint32_t)CUDA_MOE7_SPREAD) | (mx == 255u);
        // LUT row 14 - (E - e_i) (the shift of the piece): lrow + 8 e_i
        const uint32_t lrow = sLUT + 8u * (14u - mx);
        const uint32_t row = sA + ra * 64 + 4 * (t >> 1), sw = (ra >> 1) & 3;
#pragma unroll
        for (int s = 0; s < 4; s++) {
            const uint2 l = lds64(lrow + 8u * e[s]);
            const uint32_t seg = row + ((s ^ sw) << 4);
            cuda_moe7_convert(cuda_moe7_pick(lds32(seg), lds32(seg + 8), t), l.x, l.y, &a[s][h], &a[s][2 + h]);
        }
        wsc[h] = e8m0_to_float(mx) * 0.015625f; // 2^(E - 127 - 6), exact
    }
    return off;
}

// The 4 k32 wgmmas of a stage (activations at sB), committed, not waited for.
template <int N>
__device__ __forceinline__ void m7_issue(float (&p)[N / 2], const uint32_t (&a)[4][4], uint32_t sB)
{
    const uint64_t db = wgmma_desc_sw128(sB);
    wgmma_fence();
#pragma unroll
    for (int s = 0; s < 4; s++)
        wgmma_e4m3_ra<N>(p, a[s], db + (uint64_t)(2 * s), s); // + 32 bytes a k32 step
    wgmma_commit();
}

// ---- grouped GEMM, eighth kernel (CUDA_MOE_GEMM_V8): V7 over 128 pairs ----
//
// Why: V7 converts a weight row's stage once per tile of at most 64 pairs, and that conversion is most
// of its instructions (results/2026-11-29-s14/call3-v7: ~200 of ~340 a warp and stage), so an expert
// with 65..128 pairs (a 4096-token chunk of Flash: 96 on average) pays it twice. V8 is V7 with CTAs of
// 128 weight rows x up to 128 pairs: a CTA takes the table's tiles in pairs (the even-numbered tile of
// an expert and the next one; the odd one's CTA returns, moe_tile_leads), converts each row's stage once
// and issues m64nNk32 with N = the pairs rounded up to 16 (16..128). The same conversion, guard,
// fallback, promotion and store as V7, per output the same arithmetic: V7's bytes (test_moe_gemm checks
// it). Costs: 64 + 64 accumulator registers a thread, so one CTA an SM (V7: two), and a ring of 8
// stages of 25 KB (the activation rows of 128 pairs). One template serves both (m7_lay: the ring).
// Tried (results/2026-11-30-s17/call2-pipe): each warp converting stage kb + 1 while stage kb's wgmma
// runs (two A register sets, 255 registers): 0.90x this form at S = 4096.
constexpr int M8_BM = 2 * M_BM;
constexpr int M8_STAGES = 8;
constexpr int M8_B = 0, M8_A = M8_BM * 128, M8_AS = M8_A + M_BN * 64, M8_BS = M8_AS + M_BN * 4;
constexpr int M8_STAGE = 25 * 1024; // a multiple of 1024: every slot's activation rows are 1024-aligned
static_assert(M8_BS + M8_BM * 4 <= M8_STAGE, "V8 stage layout");
constexpr int M8_SMEM = 1024 + M8_STAGES * M8_STAGE + M7_LUT;
static_assert(M8_SMEM + M8_BM * 4 + 1024 <= 227 * 1024, "one CTA per SM");
__device__ unsigned long long g_moe_v8_fallbacks;

// The ring of a CTA of BM pairs: V7's (64) or V8's (128).
template <int BM> struct m7_lay;
template <> struct m7_lay<M_BM> {
    static constexpr int STAGES = M7_STAGES, STAGE = M7_STAGE, A = M7_A, AS = M7_AS, B = M7_B, BS = M7_BS;
    static __device__ __forceinline__ unsigned long long *fallbacks() { return &g_moe_v7_fallbacks; }
};
template <> struct m7_lay<M8_BM> {
    static constexpr int STAGES = M8_STAGES, STAGE = M8_STAGE, A = M8_A, AS = M8_AS, B = M8_B, BS = M8_BS;
    static __device__ __forceinline__ unsigned long long *fallbacks() { return &g_moe_v8_fallbacks; }
};

// After the stage's wgmma: its partial into acc (acc = fma(P * act_scale, w, acc), rows g / g + 8 by
// w0 / w1), or, for a warp whose stage fell back, V1's arithmetic from the raw stage.
template <int N, int BM>
__device__ __forceinline__ void m7_finish(float (&acc)[BM / 8][4], const float (&p)[N / 2], const uint32_t (&a)[4][4],
                                          const float (&wsc)[2], int fb, uint32_t s0, const float *sBS, int ra0,
                                          int t, int tid)
{
    using L = m7_lay<BM>;
    wgmma_wait0();
    // a was read by the wgmma until the wait: keep its registers (and so their values) alive to here
#pragma unroll
    for (int s = 0; s < 4; s++)
        asm volatile("" ::"r"(a[s][0]), "r"(a[s][1]), "r"(a[s][2]), "r"(a[s][3]));
    if (!fb) { // warp-uniform
        moe_promote<N>(acc, p, sBS, wsc[0], wsc[1], t);
    } else {
        if ((tid & 31) == 0)
            atomicAdd(L::fallbacks(), 1ull); // (cuda_moe_v7_fallback_stages, cuda_moe_v8_fallback_stages)
        const int g = (tid & 31) >> 2;
        m5_fallback(acc, s0 + L::A, s0 + L::AS, s0 + L::B, sBS, ra0 - g, g, t, N / 8);
    }
}

// Stage kb of the tile into the ring slot at s0 (m7_lay<BM>'s layout): thread tid's share of 256 threads'
// copies (V1's pattern). V7, V8 and V9's consumers issue it.
template <int BM>
__device__ __forceinline__ void m7_load_stage(uint32_t s0, const moe_srcs_t<BM> &src, int kb, int tid)
{
    using L = m7_lay<BM>;
#pragma unroll
    for (int j = 0; j < 2; j++) {
        const int i = tid + j * 256, ra = i >> 2, ca = i & 3;
        cp_async16(s0 + L::A + ra * 64 + ((ca ^ ((ra >> 1) & 3)) << 4), src.a[j] + (size_t)kb * 64, src.aval[j]);
    }
#pragma unroll
    for (int j = 0; j < moe_srcs_t<BM>::NB; j++) {
        const int i = tid + j * 256, rb = i >> 3, cb = i & 7;
        cp_async16(s0 + L::B + cuda_moe7_xoff(rb, cb), src.b[j] + (size_t)kb * 128, src.bval[j]);
    }
    if (tid < M_BN)
        cp_async4(s0 + L::AS + tid * 4, src.as + kb * 4, src.as_val);
    if (tid < BM)
        cp_async4(s0 + L::BS + tid * 4, src.bs + kb, src.bs_val);
}

// The K loop of one CTA with N columns (the tile's pairs rounded up: CTA-uniform).
template <int N, int BM>
__device__ __forceinline__ void m7_loop(float (&acc)[BM / 8][4], uint32_t sbase, const uint8_t *gbase, uint32_t sLUT,
                                        int kb_n, int ra0, int t, int tid, const moe_srcs_t<BM> &src)
{
    using L = m7_lay<BM>;
    constexpr int S = L::STAGES;
    auto load_stage = [&](int stage, int kb) { m7_load_stage<BM>(sbase + stage * L::STAGE, src, kb, tid); };
    for (int s = 0; s < S - 1; s++) {
        if (s < kb_n)
            load_stage(s, s);
        cp_async_commit();
    }
    uint32_t a[4][4];
    float wsc[2];
    for (int kb = 0; kb < kb_n; kb++) {
        cp_async_wait<S - 2>();
        wgmma_proxy_fence();
        __syncthreads(); // stage kb landed; every warp is done with stage kb - 1's slot
        if (kb + S - 1 < kb_n)
            load_stage((kb + S - 1) % S, kb + S - 1);
        cp_async_commit();
        const int stage = kb % S;
        const uint32_t s0 = sbase + stage * L::STAGE;
        const int fb = __any_sync(0xffffffffu, m7_convert(a, wsc, s0 + L::A, s0 + L::AS, sLUT, ra0, t));
        float p[N / 2];
        m7_issue<N>(p, a, s0 + L::B);
        m7_finish<N, BM>(acc, p, a, wsc, fb, s0, reinterpret_cast<const float *>(gbase + stage * L::STAGE + L::BS),
                         ra0, t, tid);
    }
    cp_async_wait<0>();
}

// V7 (BM = 64: two CTAs an SM) and V8 (BM = 128: one). N = the tile's pairs rounded up to BM / 8 (8 or 16).
template <int BM>
__global__ void __launch_bounds__(256, BM == M_BM ? 2 : 1)
    moe_gemm7_kernel(const uint8_t *__restrict__ q, const float *__restrict__ sa, int x_group,
                     const int *__restrict__ perm, const int *__restrict__ tiles, const int *__restrict__ ntiles,
                     const int *__restrict__ offsets, const uint8_t *const *__restrict__ wtab,
                     const uint8_t *const *__restrict__ stab, int n, int k, __nv_bfloat16 *__restrict__ y)
{
    using L = m7_lay<BM>;
    extern __shared__ __align__(128) uint8_t smem[];
    __shared__ int sP[BM];
    const int tile = blockIdx.y;
    if (tile >= __ldg(ntiles) || !moe_tile_leads<BM>(tile, tiles, offsets))
        return;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    const int wg = warp >> 2, w4 = warp & 3;
    const moe_tile tl = moe_tile_of<BM>(tile, perm, tiles, offsets, wtab, stab, sP);
    const int rows = tl.rows, row0 = tl.row0, nbv = tl.nbv;
    const uint8_t *w = tl.w, *ws = tl.ws;
    const int kb_n = k >> 7;
    const uint32_t sraw = (uint32_t)__cvta_generic_to_shared(smem);
    const uint32_t sbase = (sraw + 1023u) & ~1023u;
    const uint8_t *gbase = smem + (sbase - sraw);
    const uint32_t sLUT = sbase + L::STAGES * L::STAGE;
    m3_lut_fill(sLUT, tid); // V3's LUT
    __syncthreads();

    const moe_srcs_t<BM> src = moe_srcs_of<BM>(q, sa, x_group, w, ws, sP, row0, n, k, tid);

    float acc[BM / 8][4];
#pragma unroll
    for (int j = 0; j < BM / 8; j++)
#pragma unroll
        for (int c = 0; c < 4; c++)
            acc[j][c] = 0.f;
    const int ra0 = wg * 64 + w4 * 16 + g; // this thread's rows ra0 and ra0 + 8 (tile-relative)
    constexpr int NS = BM / 8;                  // N's step: 8 (V7) or 16 (V8)
    switch (BM == M_BM ? nbv : (nbv + 1) >> 1) { // CTA-uniform
#define M7_CASE(C)                                                                                                     \
    case C:                                                                                                            \
        m7_loop<NS * C, BM>(acc, sbase, gbase, sLUT, kb_n, ra0, t, tid, src);                                         \
        break;
        M7_CASE(1) M7_CASE(2) M7_CASE(3) M7_CASE(4) M7_CASE(5) M7_CASE(6) M7_CASE(7) M7_CASE(8)
#undef M7_CASE
    default:
        break;
    }
    moe_store(y, acc, sP, row0 + ra0, n, nbv, rows, t);
}

// ---- grouped GEMM, ninth kernel (CUDA_MOE_GEMM_V9): V8 with the conversion in warps of its own ----
//
// Why: Nsight Compute on V8 (a 4096-token chunk of flash4 at 500K, results/2026-11-30-s21/call1): issue
// slots 39% busy, the tensor pipe far from full, no eligible warp on 61% of the cycles, one CTA of 8
// warps an SM (211 registers). Each warp converts its rows' stage, then issues the stage's wgmma and
// waits for it before the promotion: the conversion (ALU) and the products (tensor cores) of one warp
// never overlap, and only the other warpgroup's phases can fill the gap. Converting the next stage
// under the products from a second register set cost more than it gave (V8's note).
// V9 splits the roles (warp specialisation), 384 threads:
// - Warpgroup 0 (the producer) converts each stage's 128 weight rows (a thread a row: V7's LUT
//   conversion at the row's exponent, its guard and scale; the row's loads issued before its stores)
//   into an e4m3 tile in shared memory, in wgmma's 128-byte-swizzled K-major layout (the activations').
// - Warpgroups 1 and 2 (the consumers: rows 0..63, 64..127) copy the stages with V8's 256-thread
//   cp.async pattern (raw weights, their e8m0 codes, activations, their scales) LAG stages ahead into
//   a ring of RAW slots, and run each stage's 4 wgmma m64nNk32 with both operands in shared memory
//   (the converted tile from a ring of CONV slots), then V8's promotion (or, for a warp whose 16 rows
//   have a piece out of the fast range, V1's arithmetic from the raw stage: m5_fallback, as V7/V8).
// - Named barriers: RAW_FULL (a stage's copies landed: the consumers arrive after their wait and
//   fence.proxy.async, the producer waits), FULL (a converted tile: the producer arrives after its
//   fence, the consumers wait), EMPTY_CONV (the consumers are done with a converted slot).
// Tried first (results/2026-11-30-s21, call2 / call3 / call5): the producer also issuing the copies, 2
// or 5 stages ahead: no faster than V8 (4.07 ms a V4-Flash layer at S = 4096). Nsight Compute's SASS
// samples: the producer's 393 instructions a stage (110 of them the copies' addresses) on one warp a
// scheduler, its conversion's loads issued one sub-block at a time behind the previous stores, set the
// pace; the consumers waited on FULL a third of their time. Two producer warpgroups (512 threads, a
// thread a half row) spilled the consumers' accumulators at every setmaxnreg split that fits 64K
// registers (ptxas: 380-670 bytes), so the producer stays one warpgroup and sheds the copies instead.
// Also tried (call10, patch kept there): a FULL barrier per consumer warpgroup, so that one's promotion
// could run under the other's products, with the wait for the next stage's copies under the products:
// 4.00 against 3.78 ms. And 6 raw slots, 3 converted, copies 4 ahead (call11): 3.80 ms.
// Not the copies' traffic either (results/2026-11-30-s25, patch kept there; one V4-Flash layer, S =
// 4096, V9 3.79-3.81 ms in the same runs): clusters of 2 / 4 CTAs on adjacent row blocks sharing each
// stage's activation rows by TMA multicast, as one-row boxes (9.80 ms with 2: 64 boxes a stage a CTA)
// or as one box a CTA from rows gathered in the tiles' order (3.97 / 4.37 ms), and without clusters
// 3.92 (the gather included); reading the weights as if repacked into contiguous 8 KB stages: 3.89.
// Halving the activations' L2 reads bought nothing: V9's pace is set by its per-stage chain, not bytes.
// A clock64 trace of one CTA (call5; its build spilled, 4.72 ms) put a consumer stage at ~2650 cycles:
// issuing the copies of stage kb + LAG ~400, waiting for stage kb + 1's ~400-680, FULL ~40, the products
// ~620, the promotion ~460; the producer waited on EMPTY_CONV ~680 of its ~2200. So the wait for stage
// kb + 1's copies (and the producer's RAW_FULL of it) now comes after this stage's products are issued,
// under them: 3.785 -> 3.685 ms at S = 4096, 2.905 -> 2.815 at 2048 (call7, two rounds each; V7's bytes
// on test_moe_gemm's 731 cases). A fourth warpgroup issuing every copy (512 threads: the launch's 128
// registers a thread spilled the consumers' path, 352 bytes, whatever setmaxnreg gave them) was slower:
// 4.36 ms (call6).
// Tried too (results/2026-11-30-s28 call1, v9-split.patch; V9's bytes): each stage's products as column
// parts of 32 pairs, one commit group each, part i promoted while the later ones run: 4.73 against 3.71
// ms at S = 4096, every part re-reading the weight tile (wgmma's A) from shared memory. The next stage's
// products in flight under this one's promotion (a second set of partials) made ptxas serialise the
// wgmma (C7514 / C7518: a group in flight across the K loop's back edge or a branch that touches
// registers) and spilled at N = 128 with 232 registers.
// Numerics: the e4m3 values, their K order, the scales, the guard and the promotion are V8's, and the
// tensor core sums the same values whether A comes from registers or shared memory: V8's (= V7's)
// bytes (test_moe_gemm compares them on every case).
constexpr int M9_RAW = 7, M9_CONV = 2, M9_LAG = 5;
static_assert(M9_LAG + 2 <= M9_RAW, "a slot is refilled only after both consumer warpgroups are done with it");
// a raw slot: V8's stage (activations, weights, their codes and scales; m5_fallback reads it as V8's)
constexpr int M9_B = M8_B, M9_A = M8_A, M9_AS = M8_AS, M9_BS = M8_BS, M9_RSLOT = M8_STAGE;
// a converted slot: the e4m3 tile (1024-aligned: the swizzle's atoms), the rows' stage scales
// 2^(E - 133), the 8 consumer warps' fallback flags
constexpr int M9_C = 0, M9_WS = M_BN * 128, M9_FB = M9_WS + M_BN * 4;
constexpr int M9_CSLOT = 17 * 1024;
static_assert(M9_FB + 8 * 4 <= M9_CSLOT, "V9 converted slot layout");
constexpr int M9_SMEM = 1024 + M9_RAW * M9_RSLOT + M9_CONV * M9_CSLOT + M7_LUT;
static_assert(M9_SMEM + M8_BM * 4 + 1024 <= 227 * 1024, "one CTA per SM");
constexpr int M9_THREADS = 384;
// named barriers (0 is __syncthreads'): FULL (converted slot c) 1 + c, EMPTY_CONV 1 + CONV + c,
// RAW_FULL (raw slot r) 1 + 2 CONV + r
constexpr int M9_BAR_FULL = 1, M9_BAR_ECONV = 1 + M9_CONV, M9_BAR_RAW = 1 + 2 * M9_CONV;
static_assert(M9_BAR_RAW + M9_RAW <= 16, "16 named barriers");
__device__ unsigned long long g_moe_v9_fallbacks;

// The producer's conversion of weight row r of the stage at s0 (thread r of warpgroup 0): V7's m7_convert
// for one row, every sub-block, into row r of the e4m3 tile at c0 (K in natural order: chunk c = K
// 16c..16c+15 at r * 128 + ((c ^ (r & 7)) << 4)), the row's scale 2^(E - 133) into the slot; returns
// whether the row is out of the fast range. Every load comes before the first store (four in flight:
// the compiler cannot move a load across a store it cannot tell apart).
__device__ __forceinline__ int m9_convert_row(uint32_t s0, uint32_t c0, uint32_t sLUT, int r)
{
    const uint32_t codes = lds32(s0 + M9_AS + r * 4), sw = (r >> 1) & 3;
    uint4 v[4]; // sub-block s: K 32s .. 32s + 31, 8 codes a word
#pragma unroll
    for (int s = 0; s < 4; s++)
        v[s] = lds128(s0 + M9_A + r * 64 + ((s ^ sw) << 4));
    uint32_t e[4];
#pragma unroll
    for (int s = 0; s < 4; s++)
        e[s] = (codes >> (8 * s)) & 0xffu;
    const uint32_t mx = max(max(e[0], e[1]), max(e[2], e[3])), mn = min(min(e[0], e[1]), min(e[2], e[3]));
    const int off = (mx - mn > (uint32_t)CUDA_MOE7_SPREAD) | (mx == 255u);
    const uint32_t lrow = sLUT + 8u * (14u - mx), dst = c0 + M9_C + r * 128;
    uint2 l[4];
#pragma unroll
    for (int s = 0; s < 4; s++)
        l[s] = lds64(lrow + 8u * e[s]);
#pragma unroll
    for (int s = 0; s < 4; s++) {
        uint32_t o[8];
        cuda_moe7_convert(v[s].x, l[s].x, l[s].y, &o[0], &o[1]);
        cuda_moe7_convert(v[s].y, l[s].x, l[s].y, &o[2], &o[3]);
        cuda_moe7_convert(v[s].z, l[s].x, l[s].y, &o[4], &o[5]);
        cuda_moe7_convert(v[s].w, l[s].x, l[s].y, &o[6], &o[7]);
        m3_sts128(dst + (((2 * s) ^ (r & 7)) << 4), o[0], o[1], o[2], o[3]);
        m3_sts128(dst + (((2 * s + 1) ^ (r & 7)) << 4), o[4], o[5], o[6], o[7]);
    }
    *reinterpret_cast<float *>(__cvta_shared_to_generic(c0 + M9_WS + r * 4)) = e8m0_to_float(mx) * 0.015625f;
    return off;
}

// The producer warpgroup (threads 0..127): each stage's conversion once its copies have landed
// (RAW_FULL) and its converted slot is free (EMPTY_CONV).
__device__ __forceinline__ void m9_produce(uint32_t sbase, uint32_t cbase, uint32_t sLUT, int kb_n, int ptid)
{
    for (int kc = 0; kc < kb_n; kc++) {
        const int cs = kc % M9_CONV;
        named_bar_sync(M9_BAR_RAW + kc % M9_RAW, M9_THREADS);
        if (kc >= M9_CONV)
            named_bar_sync(M9_BAR_ECONV + cs,
                           M9_THREADS); // the consumers are done with stage kc - CONV
        const uint32_t s0 = sbase + (kc % M9_RAW) * M9_RSLOT, c0 = cbase + cs * M9_CSLOT;
        const unsigned bal = __ballot_sync(0xffffffffu, m9_convert_row(s0, c0, sLUT, ptid));
        if ((ptid & 31) == 0) { // consumer warps 2 w and 2 w + 1 hold rows 32 w .. 32 w + 15 and + 16 .. + 31
            int *fb = reinterpret_cast<int *>(__cvta_shared_to_generic(c0 + M9_FB));
            fb[2 * (ptid >> 5)] = (bal & 0xffffu) != 0;
            fb[2 * (ptid >> 5) + 1] = (bal >> 16) != 0;
        }
        wgmma_proxy_fence(); // the tile to the async proxy
        named_bar_arrive(M9_BAR_FULL + cs, M9_THREADS);
    }
}

// A consumer warpgroup (cw 0 / 1: rows 64 cw .. 64 cw + 63 of the tile; ctid = its thread among the
// consumers' 256) over every stage, N columns: the copies LAG stages ahead, the products, the promotion.
template <int N>
__device__ __forceinline__ void m9_consume(float (&acc)[M8_BM / 8][4], uint32_t sbase, const uint8_t *gbase,
                                           uint32_t cbase, const uint8_t *gcbase, int kb_n, int cw, int w4, int g,
                                           int t, int lane, int ctid, const moe_srcs_t<M8_BM> &src)
{
    auto load_stage = [&](int kb) { // V8's copies into the stage's raw slot (V8's stage layout)
        m7_load_stage<M8_BM>(sbase + (kb % M9_RAW) * M9_RSLOT, src, kb, ctid);
    };
    // stages 0 .. LAG - 1 in flight, stage 0 handed to the producer
    for (int s = 0; s < M9_LAG; s++) {
        if (s < kb_n)
            load_stage(s);
        cp_async_commit();
    }
    cp_async_wait<M9_LAG - 1>();
    wgmma_proxy_fence(); // the activations are wgmma's B
    named_bar_arrive(M9_BAR_RAW, M9_THREADS);
    const int ra0 = cw * 64 + w4 * 16 + g;
    for (int kb = 0; kb < kb_n; kb++) {
        // stage kb + LAG into the slot of stage kb + LAG - RAW <= kb - 2, which both consumer warpgroups
        // are done with (each passed FULL of stage kb - 1, which waited for the other's arrival)
        if (kb + M9_LAG < kb_n)
            load_stage(kb + M9_LAG);
        cp_async_commit();
        const int rs = kb % M9_RAW, cs = kb % M9_CONV;
        const uint32_t s0 = sbase + rs * M9_RSLOT, c0 = cbase + cs * M9_CSLOT;
        const uint8_t *g0 = gbase + rs * M9_RSLOT, *gc = gcbase + cs * M9_CSLOT;
        named_bar_sync(M9_BAR_FULL + cs, M9_THREADS);
        const int fb = reinterpret_cast<const int *>(gc + M9_FB)[4 * cw + w4]; // warp-uniform
        const float w0 = reinterpret_cast<const float *>(gc + M9_WS)[ra0];
        const float w1 = reinterpret_cast<const float *>(gc + M9_WS)[ra0 + 8];
        const float *sBS = reinterpret_cast<const float *>(g0 + M9_BS);
        float p[N / 2];
        const uint64_t da = wgmma_desc_sw128(c0 + M9_C + cw * 64 * 128), db = wgmma_desc_sw128(s0 + M9_B);
        wgmma_fence();
#pragma unroll
        for (int s = 0; s < 4; s++) // + 32 bytes a k32 step on both operands
            wgmma_e4m3_ss<N>(p, da + (uint64_t)(2 * s), db + (uint64_t)(2 * s), s);
        wgmma_commit();
        // stage kb + 1's copies have landed (LAG - 1 newer groups may be pending): waited for under the
        // products, the producer told after this stage's FULL (its conversion of kb + 1 still runs under
        // this stage's promotion)
        if (kb + 1 < kb_n) {
            cp_async_wait<M9_LAG - 1>();
            wgmma_proxy_fence();
            named_bar_arrive(M9_BAR_RAW + (kb + 1) % M9_RAW, M9_THREADS);
        }
        wgmma_wait0();
        if (!fb) {
            moe_promote<N>(acc, p, sBS, w0, w1, t);
        } else {
            if (lane == 0)
                atomicAdd(&g_moe_v9_fallbacks, 1ull); // (cuda_moe_v9_fallback_stages)
            m5_fallback(acc, s0 + M9_A, s0 + M9_AS, s0 + M9_B, sBS, ra0 - g, g, t, N / 8);
        }
        if (kb + M9_CONV < kb_n) // the producer waits for this release only to refill the slot
            named_bar_arrive(M9_BAR_ECONV + cs, M9_THREADS);
    }
    cp_async_wait<0>();
}

__global__ void __launch_bounds__(M9_THREADS, 1)
    moe_gemm9_kernel(const uint8_t *__restrict__ q, const float *__restrict__ sa, int x_group,
                     const int *__restrict__ perm, const int *__restrict__ tiles, const int *__restrict__ ntiles,
                     const int *__restrict__ offsets, const uint8_t *const *__restrict__ wtab,
                     const uint8_t *const *__restrict__ stab, int n, int k, __nv_bfloat16 *__restrict__ y)
{
    extern __shared__ __align__(128) uint8_t smem[];
    __shared__ int sP[M8_BM];
    const int tile = blockIdx.y;
    if (tile >= __ldg(ntiles) || !moe_tile_leads<M8_BM>(tile, tiles, offsets))
        return;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    const moe_tile tl = moe_tile_of<M8_BM>(tile, perm, tiles, offsets, wtab, stab, sP);
    const int rows = tl.rows, row0 = tl.row0, nbv = tl.nbv;
    const int kb_n = k >> 7;
    const uint32_t sraw = (uint32_t)__cvta_generic_to_shared(smem);
    const uint32_t sbase = (sraw + 1023u) & ~1023u;
    const uint8_t *gbase = smem + (sbase - sraw);
    const uint32_t cbase = sbase + M9_RAW * M9_RSLOT, sLUT = cbase + M9_CONV * M9_CSLOT;
    const uint8_t *gcbase = gbase + M9_RAW * M9_RSLOT;
    m3_lut_fill(sLUT, tid);
    __syncthreads(); // sP and the LUT
    if (warp < 4) { // the producer: 64 registers a thread, the consumers 216
        asm volatile("setmaxnreg.dec.sync.aligned.u32 64;\n" ::: "memory");
        m9_produce(sbase, cbase, sLUT, kb_n, tid);
        return;
    }
    asm volatile("setmaxnreg.inc.sync.aligned.u32 216;\n" ::: "memory");
    const int ctid = tid - 128, cw = ctid >> 7, w4 = warp & 3;
    const moe_srcs_t<M8_BM> src = moe_srcs_of<M8_BM>(q, sa, x_group, tl.w, tl.ws, sP, row0, n, k, ctid);
    float acc[M8_BM / 8][4];
#pragma unroll
    for (int j = 0; j < M8_BM / 8; j++)
#pragma unroll
        for (int c = 0; c < 4; c++)
            acc[j][c] = 0.f;
    switch ((nbv + 1) >> 1) { // N = the pairs rounded up to 16 (CTA-uniform)
#define M9_CASE(C)                                                                                                     \
    case C:                                                                                                            \
        m9_consume<16 * C>(acc, sbase, gbase, cbase, gcbase, kb_n, cw, w4, g, t, lane, ctid, src);                    \
        break;
        M9_CASE(1) M9_CASE(2) M9_CASE(3) M9_CASE(4) M9_CASE(5) M9_CASE(6) M9_CASE(7) M9_CASE(8)
#undef M9_CASE
    default:
        break;
    }
    moe_store(y, acc, sP, row0 + cw * 64 + w4 * 16 + g, n, nbv, rows, t);
}

using moe_kernel_fn = void (*)(const uint8_t *, const float *, int, const int *, const int *, const int *,
                               const int *, const uint8_t *const *, const uint8_t *const *, int, int,
                               __nv_bfloat16 *);

// The kernel of a (valid) variant and its dynamic shared memory, with the shared-memory opt-in done on
// the current device.
int moe_kernel_ready(int variant, moe_kernel_fn *kernel_out, int *smem_out, struct ctx_err *e)
{
    const moe_kernel_fn kernel = variant == CUDA_MOE_GEMM_V1   ? moe_gemm_kernel
                                 : variant == CUDA_MOE_GEMM_V2 ? moe_gemm2_kernel
                                 : variant == CUDA_MOE_GEMM_V3 ? moe_gemm3_kernel
                                 : variant == CUDA_MOE_GEMM_V4 ? moe_gemm4_kernel
                                 : variant == CUDA_MOE_GEMM_V5 ? moe_gemm5_kernel
                                 : variant == CUDA_MOE_GEMM_V6 ? moe_gemm6_kernel
                                 : variant == CUDA_MOE_GEMM_V7 ? moe_gemm7_kernel<M_BM>
                                 : variant == CUDA_MOE_GEMM_V8 ? moe_gemm7_kernel<M8_BM>
                                                               : moe_gemm9_kernel;
    const int smem = variant == CUDA_MOE_GEMM_V3   ? M3_SMEM
                     : variant == CUDA_MOE_GEMM_V4 ? M4_SMEM
                     : variant == CUDA_MOE_GEMM_V5 ? M5_SMEM
                     : variant == CUDA_MOE_GEMM_V6 ? M6_SMEM
                     : variant == CUDA_MOE_GEMM_V7 ? M7_SMEM
                     : variant == CUDA_MOE_GEMM_V8 ? M8_SMEM
                     : variant == CUDA_MOE_GEMM_V9 ? M9_SMEM
                                                   : M_SMEM;
    // The shared-memory opt-in is a per-device, per-kernel setting: remember it for each device used
    // (engines on several GPUs call this, from one thread or, in a pipelined prefill, one thread each).
    static std::atomic<unsigned long long> attr_set[CUDA_MOE_GEMM_NVARIANTS];
    int dev = 0;
    cudaError_t rc = cudaGetDevice(&dev);
    if (rc != cudaSuccess)
        return cuda_fail(e, rc, "cudaGetDevice");
    const unsigned long long bit = dev < 64 ? 1ull << dev : 0;
    if (!(attr_set[variant].load() & bit)) {
        rc = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
        if (rc != cudaSuccess)
            return cuda_fail(e, rc, "cudaFuncSetAttribute(moe gemm kernel)");
        // V4's 2 CTAs an SM need 2 x 100 KB of the 228 KB: ask for the largest shared-memory carveout
        // (a preference; the L1 left is what the kernel does not use anyway).
        if (variant >= CUDA_MOE_GEMM_V4) {
            rc = cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout,
                                      (int)cudaSharedmemCarveoutMaxShared);
            if (rc != cudaSuccess)
                return cuda_fail(e, rc, "cudaFuncSetAttribute(moe_gemm4..8_kernel carveout)");
        }
        attr_set[variant].fetch_or(bit);
    }
    *kernel_out = kernel;
    *smem_out = smem;
    return 0;
}

size_t align16(size_t b) { return (b + 15) & ~(size_t)15; }

// A CTA's threads: 256, V9's 384 (its producer warpgroup and two consumers).
int moe_threads(int variant) { return variant == CUDA_MOE_GEMM_V9 ? M9_THREADS : 256; }

int max_tiles_of(int n_experts, int npairs)
{
    return (npairs + CUDA_MOE_BM - 1) / CUDA_MOE_BM + (n_experts < npairs ? n_experts : npairs);
}

// The blocks of the three short bucketing kernels (moe_hist_kernel ..), or 0 where the per-expert kernels run.
int mb_blocks_of(int n_experts, int npairs)
{
    const long long nb = ((long long)npairs + MB_T - 1) / MB_T;
    return n_experts <= MB_MAXE && nb * n_experts <= MB_MAXH ? (int)nb : 0;
}

} // namespace

extern "C" size_t cuda_moe_scratch_bytes(int n_experts, int npairs)
{
    if (n_experts < 1 || npairs < 1)
        return 0;
    const size_t mt = (size_t)max_tiles_of(n_experts, npairs);
    return align16(sizeof(int) * (size_t)n_experts) + align16(sizeof(int) * ((size_t)n_experts + 1)) +
           align16(sizeof(int) * (size_t)npairs) + align16(sizeof(int) * 2 * mt) + align16(sizeof(int)) +
           align16(sizeof(int) * (size_t)mb_blocks_of(n_experts, npairs) * (size_t)n_experts);
}

extern "C" int cuda_moe_buckets_fit(int n_experts, long long npairs)
{
    return n_experts >= 1 && n_experts <= CUDA_MOE_MAX_EXPERTS && npairs >= 1 && npairs <= CUDA_MOE_MAX_PAIRS &&
           max_tiles_of(n_experts, (int)npairs) <= CUDA_MOE_MAX_TILES;
}

extern "C" int cuda_moe_buckets_init(struct cuda_moe_buckets *b, void *d_scratch, size_t bytes, int n_experts,
                                     int npairs, struct ctx_err *e)
{
    if (n_experts < 1 || n_experts > CUDA_MOE_MAX_EXPERTS || npairs < 1 || npairs > CUDA_MOE_MAX_PAIRS)
        return ctx_err_set(e, CTX_EINVAL, "cuda_moe_buckets_init: n_experts = %d (1..%d), npairs = %d", n_experts,
                           CUDA_MOE_MAX_EXPERTS, npairs);
    const int mt = max_tiles_of(n_experts, npairs);
    if (!cuda_moe_buckets_fit(n_experts, npairs))
        return ctx_err_set(e, CTX_EINVAL, "cuda_moe_buckets_init: %d pairs over %d experts need up to %d tiles (> %d)",
                           npairs, n_experts, mt, CUDA_MOE_MAX_TILES);
    const size_t need = cuda_moe_scratch_bytes(n_experts, npairs);
    if (!d_scratch || bytes < need || ((uintptr_t)d_scratch & 15))
        return ctx_err_set(e, CTX_EINVAL, "cuda_moe_buckets_init: scratch of %zu bytes at %p (need %zu, 16-byte aligned)",
                           bytes, d_scratch, need);
    uint8_t *p = (uint8_t *)d_scratch;
    b->n_experts = n_experts, b->npairs = npairs, b->max_tiles = mt;
    b->d_counts = (int *)p;
    p += align16(sizeof(int) * (size_t)n_experts);
    b->d_offsets = (int *)p;
    p += align16(sizeof(int) * ((size_t)n_experts + 1));
    b->d_perm = (int *)p;
    p += align16(sizeof(int) * (size_t)npairs);
    b->d_tiles = (int *)p;
    p += align16(sizeof(int) * 2 * (size_t)mt);
    b->d_ntiles = (int *)p;
    p += align16(sizeof(int));
    b->nblk = mb_blocks_of(n_experts, npairs);
    b->d_hist = b->nblk ? (int *)p : NULL;
    return 0;
}

extern "C" void cuda_moe_bucket_mode(int on) { moe_bucket_blocks.set(on); }

extern "C" int cuda_moe_bucket(const struct cuda_moe_buckets *b, const int *d_ids, void *stream, struct ctx_err *e)
{
    if (!b || b->n_experts < 1 || b->npairs < 1)
        return ctx_err_set(e, CTX_EINVAL, "cuda_moe_bucket: buckets not initialised");
    cudaStream_t st = (cudaStream_t)stream;
    if (b->nblk > 0 && moe_bucket_blocks.on()) {
        const int E = b->n_experts;
        moe_hist_kernel<<<b->nblk, MB_T, sizeof(int) * E, st>>>(d_ids, b->npairs, E, b->d_hist);
        moe_bscan_kernel<<<1, MB_T, 0, st>>>(b->d_hist, b->nblk, E, b->d_counts, b->d_offsets, b->d_tiles,
                                             b->d_ntiles);
        moe_place2_kernel<<<b->nblk, MB_T, (MB_T / 32) * E, st>>>(d_ids, b->npairs, E, b->d_hist, b->d_offsets,
                                                                   b->d_perm);
        return launch_check(e, "moe bucketing kernels");
    }
    moe_count_kernel<<<b->n_experts, 256, 0, st>>>(d_ids, b->npairs, b->d_counts);
    moe_scan_kernel<<<1, 256, 0, st>>>(b->d_counts, b->n_experts, b->d_offsets, b->d_tiles, b->d_ntiles);
    moe_place_kernel<<<b->n_experts, 256, 0, st>>>(d_ids, b->npairs, b->d_offsets, b->d_perm);
    return launch_check(e, "moe bucketing kernels");
}

extern "C" int cuda_moe_gemm_variant(const struct cuda_moe_buckets *b, const uint8_t *d_q, const float *d_sa,
                                     int x_group, const uint8_t *const *d_wtab, const uint8_t *const *d_stab, int n,
                                     int k, uint16_t *d_y, int variant, void *stream, struct ctx_err *e)
{
    if (!b || b->n_experts < 1 || b->npairs < 1 || b->max_tiles < 1)
        return ctx_err_set(e, CTX_EINVAL, "cuda_moe_gemm: buckets not initialised");
    if (k <= 0 || k % 128)
        return ctx_err_set(e, CTX_EINVAL, "cuda_moe_gemm: k = %d is not a positive multiple of 128", k);
    if (n < 1 || x_group < 1 || (n + M_BN - 1) / M_BN > 65535 * 1024)
        return ctx_err_set(e, CTX_EINVAL, "cuda_moe_gemm: n = %d, x_group = %d", n, x_group);
    if (variant < CUDA_MOE_GEMM_V1 || variant >= CUDA_MOE_GEMM_NVARIANTS)
        return ctx_err_set(e, CTX_EINVAL, "cuda_moe_gemm: variant %d (0..%d)", variant, CUDA_MOE_GEMM_NVARIANTS - 1);
    static const char *const names[CUDA_MOE_GEMM_NVARIANTS] = {"moe_gemm_kernel", "moe_gemm2_kernel",
                                                               "moe_gemm3_kernel", "moe_gemm4_kernel",
                                                               "moe_gemm5_kernel", "moe_gemm6_kernel",
                                                               "moe_gemm7_kernel", "moe_gemm8_kernel",
                                                               "moe_gemm9_kernel"};
    moe_kernel_fn kernel;
    int smem;
    const int rc = moe_kernel_ready(variant, &kernel, &smem, e);
    if (rc)
        return rc;
    dim3 grid((n + M_BN - 1) / M_BN, b->max_tiles);
    kernel<<<grid, moe_threads(variant), smem, (cudaStream_t)stream>>>(
        d_q, d_sa, x_group, b->d_perm, b->d_tiles, b->d_ntiles, b->d_offsets, d_wtab, d_stab, n, k,
        reinterpret_cast<__nv_bfloat16 *>(d_y));
    return launch_check(e, names[variant]);
}

extern "C" int cuda_moe_gemm_ctas_per_sm(int variant, int *ctas, struct ctx_err *e)
{
    if (variant < CUDA_MOE_GEMM_V1 || variant >= CUDA_MOE_GEMM_NVARIANTS)
        return ctx_err_set(e, CTX_EINVAL, "cuda_moe_gemm_ctas_per_sm: variant %d (0..%d)", variant,
                           CUDA_MOE_GEMM_NVARIANTS - 1);
    moe_kernel_fn kernel;
    int smem;
    const int rc = moe_kernel_ready(variant, &kernel, &smem, e);
    if (rc)
        return rc;
    const cudaError_t cr = cudaOccupancyMaxActiveBlocksPerMultiprocessor(ctas, kernel, moe_threads(variant), smem);
    return cr == cudaSuccess ? 0 : cuda_fail(e, cr, "cudaOccupancyMaxActiveBlocksPerMultiprocessor(moe gemm kernel)");
}

extern "C" int cuda_moe_gemm(const struct cuda_moe_buckets *b, const uint8_t *d_q, const float *d_sa, int x_group,
                             const uint8_t *const *d_wtab, const uint8_t *const *d_stab, int n, int k, uint16_t *d_y,
                             void *stream, struct ctx_err *e)
{
    // b NULL: cuda_moe_gemm_variant reports it
    return cuda_moe_gemm_variant(b, d_q, d_sa, x_group, d_wtab, d_stab, n, k, d_y,
                                 cuda_moe_gemm_default_variant(), stream, e);
}

extern "C" int cuda_moe_gemm_variant_of_env(const char *value)
{
    if (value && value[0] >= '1' && value[0] < '1' + CUDA_MOE_GEMM_NVARIANTS && value[1] == '\0')
        return CUDA_MOE_GEMM_V1 + (value[0] - '1');
    return CUDA_MOE_GEMM_UNSET;
}

extern "C" int cuda_moe_gemm_forced_variant(void)
{
    // The environment is read once (a thread-safe static initialisation), so that results do not depend
    // on when it was changed.
    static const int forced = cuda_moe_gemm_variant_of_env(getenv("CTX_CUDA_MOE_GEMM"));
    return forced;
}

extern "C" int cuda_moe_gemm_default_variant(void)
{
    const int forced = cuda_moe_gemm_forced_variant();
    return forced != CUDA_MOE_GEMM_UNSET ? forced : CUDA_MOE_GEMM_DEFAULT;
}

namespace {
int fallback_stages(const unsigned long long &sym, const char *what, unsigned long long *count, int reset,
                    struct ctx_err *e)
{
    cudaError_t rc = cudaMemcpyFromSymbol(count, sym, sizeof *count);
    if (rc != cudaSuccess)
        return ctx_err_set(e, CTX_EIO, "%s: read: %s", what, cudaGetErrorString(rc));
    if (reset) {
        const unsigned long long zero = 0;
        rc = cudaMemcpyToSymbol(sym, &zero, sizeof zero);
        if (rc != cudaSuccess)
            return ctx_err_set(e, CTX_EIO, "%s: reset: %s", what, cudaGetErrorString(rc));
    }
    return 0;
}
} // namespace

extern "C" int cuda_moe_v3_fallback_stages(unsigned long long *count, int reset, struct ctx_err *e)
{
    return fallback_stages(g_moe_v3_fallbacks, "cuda_moe_v3_fallback_stages", count, reset, e);
}

extern "C" int cuda_moe_v4_fallback_stages(unsigned long long *count, int reset, struct ctx_err *e)
{
    return fallback_stages(g_moe_v4_fallbacks, "cuda_moe_v4_fallback_stages", count, reset, e);
}

extern "C" int cuda_moe_v5_fallback_stages(unsigned long long *count, int reset, struct ctx_err *e)
{
    return fallback_stages(g_moe_v5_fallbacks, "cuda_moe_v5_fallback_stages", count, reset, e);
}

extern "C" int cuda_moe_v6_fallback_stages(unsigned long long *count, int reset, struct ctx_err *e)
{
    return fallback_stages(g_moe_v6_fallbacks, "cuda_moe_v6_fallback_stages", count, reset, e);
}

extern "C" int cuda_moe_v7_fallback_stages(unsigned long long *count, int reset, struct ctx_err *e)
{
    return fallback_stages(g_moe_v7_fallbacks, "cuda_moe_v7_fallback_stages", count, reset, e);
}

extern "C" int cuda_moe_v8_fallback_stages(unsigned long long *count, int reset, struct ctx_err *e)
{
    return fallback_stages(g_moe_v8_fallbacks, "cuda_moe_v8_fallback_stages", count, reset, e);
}

extern "C" int cuda_moe_v9_fallback_stages(unsigned long long *count, int reset, struct ctx_err *e)
{
    return fallback_stages(g_moe_v9_fallbacks, "cuda_moe_v9_fallback_stages", count, reset, e);
}
