/* Routed experts for prefill as a grouped GEMM (issue 10): a chunk's (token, slot) pairs are bucketed
 * by expert on the device, then each expert's weights are read once per 64-pair tile instead of once
 * per pair (cuda_fp4_gemv_grouped, the decode kernel, re-reads an expert's 4-12 MB for every token
 * routed to it).
 *
 * Same inputs and output layout as cuda_fp4_gemv_grouped (gemm.h): pair p (expert d_ids[p],
 * activation row p / x_group of q/sa from cuda_act_quant) gets y[p][0..n) = bf16 of the sum over K of
 * w * x * act_scale * weight_scale, every product exact, summed in fp32. Deterministic: the bucketing
 * and every sum have a fixed order (a second run gives the same bytes).
 * The default kernel (V4 at every size: see cuda_moe_gemm_default_variant)
 * sum each row's 128 products of a 128-K stage in the tensor core's fp32 accumulator (V3: 4 chained
 * k32 steps, the weights converted exactly to e4m3 at one exponent per row and stage; V4: 8 chained
 * f16 k16 steps) and add the scaled stage partials in ascending K order: within
 *   |y - exact| <= ulp_bf16 / 2 + (3 K / 32 + 2) 2^-24 mag,   mag = sum |w x| * scales
 * (test_moe_gemm checks it), not bit-equal to V1/V2, which compute
 *   y[p][0..n) = bf16(sum over 32-K blocks b, in ascending K order, of
 *                     ((partial_b * act_scale(b/4)) * weight_scale(b)))
 * with partial_b one m16n8k32 e4m3 mma from zero over the block, as kernels/ref.c does.
 *
 * Usage (all asynchronous on `stream`, no allocation, no host synchronisation: capturable):
 *   size_t b = cuda_moe_scratch_bytes(T, npairs);          T = entries of the expert tables
 *   cuda_moe_buckets_init(&bk, d_scratch, b, T, npairs, e);  (host only: carves the scratch)
 *   cuda_moe_bucket(&bk, d_ids, stream, e);                   (device: counts, offsets, permutation)
 *   cuda_moe_gemm(&bk, d_q, d_sa, x_group, d_wtab, d_stab, n, k, d_y, stream, e);
 * A bucketing may serve several products over the same ids (it does not depend on the tables).
 * Expert weights must be 16-byte aligned and their scales 4-byte aligned (cudaMalloc'd or 256-byte
 * aligned pieces, as the engine uploads them). An id outside [0, T) is in no bucket: its row of y is
 * not written. */
#ifndef CUDA_MOE_GEMM_H
#define CUDA_MOE_GEMM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "err.h"

/* Pairs per tile of the grouped GEMM (an expert with c pairs runs ceil(c / CUDA_MOE_BM) tiles). */
#define CUDA_MOE_BM 64
/* Largest table size the bucketing takes. */
#define CUDA_MOE_MAX_EXPERTS 4096
/* Most tiles of one bucketing (the grouped GEMM's grid has a row a tile) and most pairs. */
#define CUDA_MOE_MAX_TILES 65535
#define CUDA_MOE_MAX_PAIRS (1 << 26)

/* Device arrays carved from one scratch buffer; filled by cuda_moe_bucket. */
struct cuda_moe_buckets {
    int n_experts, npairs, max_tiles;
    int *d_counts;  /* [n_experts]: pairs routed to each expert */
    int *d_offsets; /* [n_experts + 1]: exclusive prefix sums of d_counts */
    int *d_perm;    /* [npairs]: pair indices by expert (ascending), ascending within an expert
                     * (= token, then slot); expert x's pairs are d_perm[d_offsets[x] .. d_offsets[x+1]) */
    int *d_tiles;   /* [max_tiles][2]: (expert, first index into d_perm) of each tile, in expert order */
    int *d_ntiles;  /* [1]: tiles in use */
    int nblk;       /* blocks of the short bucketing kernels (0: the per-expert ones), and their */
    int *d_hist;    /* per-block counts [nblk][n_experts] */
};

/* Bytes of scratch for a bucketing of npairs pairs over n_experts table entries. */
size_t cuda_moe_scratch_bytes(int n_experts, int npairs);
/* Whether a bucketing of npairs pairs over n_experts table entries has sizes cuda_moe_buckets_init
 * takes: n_experts 1..CUDA_MOE_MAX_EXPERTS, npairs 1..CUDA_MOE_MAX_PAIRS, at most CUDA_MOE_MAX_TILES
 * tiles (an expert with c pairs: ceil(c / CUDA_MOE_BM)). Needs no device. */
int cuda_moe_buckets_fit(int n_experts, long long npairs);
/* Carve d_scratch (device, >= cuda_moe_scratch_bytes, 16-byte aligned) into b. CTX_EINVAL on sizes
 * cuda_moe_buckets_fit refuses, or a short buffer. */
int cuda_moe_buckets_init(struct cuda_moe_buckets *b, void *d_scratch, size_t bytes, int n_experts, int npairs,
                          struct ctx_err *e);
/* Bucket d_ids[0..npairs) by expert (device; three small launches: over blocks of 1024 pairs where
 * n_experts <= 1024, else one block an expert; ids outside 0..n_experts-1 are left out). */
int cuda_moe_bucket(const struct cuda_moe_buckets *b, const int *d_ids, void *stream, struct ctx_err *e);
/* Test entry: 0 runs the per-expert bucketing kernels for every bucketing, 1 the block ones where they
 * apply, < 0 as CTX_CUDA_MOE_BUCKET says (default 1). The same bytes either way. Process-wide. */
void cuda_moe_bucket_mode(int on);
/* y[p][0..n) for every bucketed pair p, as cuda_fp4_gemv_grouped(d_q, d_sa, x_group, b->npairs, ids,
 * d_wtab, d_stab, n, k, d_y) computes it (see above), on tensor cores: tiles of 128 weight rows x 64
 * pairs of one expert, K in 128-wide stages. k a multiple of 128; n >= 1. */
int cuda_moe_gemm(const struct cuda_moe_buckets *b, const uint8_t *d_q, const float *d_sa, int x_group,
                  const uint8_t *const *d_wtab, const uint8_t *const *d_stab, int n, int k, uint16_t *d_y,
                  void *stream, struct ctx_err *e);

/* The kernels behind cuda_moe_gemm, for tests and benchmarks.
 * V1 computes every 64-pair tile in full and scales each 32-K partial as (partial * a) * w (3 FP32
 * instructions per output per mma); V2 skips the n8 pair blocks past a tile's pairs and accumulates
 * acc / a with one fma per output per mma, bit-equal to V1 (moe_gemm.cu says why; a warp whose scales
 * leave the range where that holds finishes with V1's arithmetic).
 * V3 converts each stage's 128 x 128 weight tile once per CTA into shared memory as
 * e4m3 at one exponent per row: with E = the max of the row's 4 e8m0 codes in the stage, an e2m1 value
 * v of sub-block i (code e_i) becomes v * 2^(e_i - E + 6) (<= 384, exact while e_i >= E - 14: spec
 * §5.4), the 4 k32 mmas chain, and the stage partial is scaled once by act_scale * 2^(E - 133).
 * Exactness guard (in the kernel, no caller action needed): a stage in which some row of the CTA has
 * e_i < E - 14 (or the NaN code 255) is computed by that CTA with every 32-K block on its own (V1's
 * arithmetic, such a sub-block converted at its own exponent), so results are never inexact, whatever
 * the scales; a product whose every stage falls back gives V1's (= V2's) bytes. Weights within the
 * spec's lossless-FP8 condition (2^14 per 128 x 128 tile, so per row) never fall back;
 * cuda_moe_v3_fallback_stages counts the stages that did. */
/* V4 runs the tensor cores' native f16 instruction (mma.sync m16n8k16 f16 -> f32; Hopper has no
 * native e4m3 mma.sync, and V1-V3's m16n8k32 e4m3 is emulated by ptxas with ~16 extra instructions
 * per mma): each 128-K stage's weight tile and activation tile are converted once per CTA into shared
 * memory as f16 (layout and conversion below, shared with the host test), the 8 k16 steps of a stage
 * chain in fp32, and the stage partial is scaled once, as V3's. Weights: with E = the max of the row's
 * 4 e8m0 codes in the stage, an e2m1 value v of sub-block i (code e_i) becomes the f16 v * 2^(e_i - E +
 * 13) (<= 6 * 2^13, a normal f16 >= 2^-14 while e_i >= E - 26), scaled by 2^(E - 140) with the
 * activation scale; activations: e4m3 -> f16 is exact. Exactness guard as V3's: a stage in which some
 * row of the CTA has e_i < E - 26 (or the NaN code 255) runs V1's arithmetic from the raw FP4 / e4m3
 * stage (so such a stage gives V1's bits); cuda_moe_v4_fallback_stages counts them. Same bound as V3. */
#define CUDA_MOE_GEMM_V1 0
#define CUDA_MOE_GEMM_V2 1
#define CUDA_MOE_GEMM_V3 2
#define CUDA_MOE_GEMM_V4 3
/* V5 is V4 on Hopper's warpgroup instruction: the same conversions, scales, guard and fallback, with
 * the f16 tiles in wgmma's canonical no-swizzle K-major layout (cuda_moe5_off below) and each stage's 8
 * k16 steps as wgmma.mma_async m64nNk16 f16 -> f32 (two warpgroups of 64 weight rows, N = the tile's
 * pairs rounded up to 16, 32, 48 or 64) read straight from shared memory, instead of ldmatrix + mma.sync
 * per warp. Same bound as V3/V4; cuda_moe_v5_fallback_stages counts its fallback stages. sm_90a only. */
#define CUDA_MOE_GEMM_V5 4
/* V6 is V5 with each warp's weight rows converted straight into wgmma's A fragments in registers (the
 * stage's K permuted so that a thread's fragments are one 32-K sub-block of its two rows: moe_gemm.cu
 * says how); only the activations go through an f16 tile. Same bound, not V5's bytes. */
#define CUDA_MOE_GEMM_V6 5
/* V7 runs FP8 warpgroup MMAs (wgmma m64nNk32 e4m3, N = the tile's pairs rounded up to 8): the weights
 * converted per row and stage to e4m3 at the row's exponent as V3 does, for pieces within
 * CUDA_MOE7_SPREAD of the row's max (every non-zero value a normal e4m3), straight into each warp's A
 * fragments in registers (K in natural order: a thread's fragments of k32 step s are bytes 2t, 2t + 1,
 * 8 + 2t, 9 + 2t of sub-block s, cuda_moe7_pick), the activations read by wgmma from the cp.async ring
 * as they came (128-byte-swizzled rows, cuda_moe7_xoff; no conversion pass). Guard: decided per warp
 * (its 16 rows); such a warp runs the stage with V1's arithmetic from the raw ring, so a product whose
 * every stage falls back gives V2's bytes. Numerics: the tensor core adds each k32 step of a stage with
 * its narrower FP8 accumulator (about 13 fraction bits; DeepSeek's own FP8 GEMMs and cuBLASLt's
 * block-scaled kernel do the same), then the stage partial is scaled into fp32 once: not V3-V6's bound
 * but test_moe_gemm's EPS7 (test_gemm's EPS_LT). The engine runs it for prefill chunks with its cuBLASLt
 * products (the default; CTX_CUDA_PREFILL_GEMM=exact keeps V6). sm_90a only. */
#define CUDA_MOE_GEMM_V7 6
/* V7's fast range: pieces with e_i >= E - 12 (v * 2^(e_i - E + 6) >= 0.5 * 2^-6 = 2^-7; only the
 * 0.5s at a spread of 12 are e4m3 subnormals). At 14 (V3's range, reaching e4m3's smallest subnormal
 * 2^-9) Hopper's FP8 tensor cores missed the EPS7 bound on 9 of 576000 outputs of test_moe_gemm's
 * spread-14 case (results/2026-11-29-s14/call1). */
#define CUDA_MOE7_SPREAD 12
/* V8 is V7 with CTAs of 128 weight rows x up to 128 pairs of one expert: a CTA takes an expert's tiles
 * two at a time (the even-numbered one and the next), so a row's stage is converted once for up to 128
 * pairs instead of once per 64, and the wgmma is m64nNk32 with N = the pairs rounded up to 16. One
 * CTA an SM (the accumulators of 128 pairs). Per output the same arithmetic as V7: V7's bytes (V7's
 * guard and fallback, counted by cuda_moe_v8_fallback_stages). For chunks whose experts average more
 * than 64 pairs (engine.cu says where it runs). sm_90a only. */
#define CUDA_MOE_GEMM_V8 7
/* V9 is V8 with warp specialisation: a producer warpgroup converts each stage's weights to e4m3 into
 * shared memory, two consumer warpgroups copy the stages (5 ahead) and run the wgmma (both operands in
 * shared memory) and the promotion, so that the conversion of later stages overlaps the products (CTAs
 * of 384 threads, one an SM). The same conversion, guard, fallback and promotion as V8: V8's (= V7's)
 * bytes (its fallbacks counted by cuda_moe_v9_fallback_stages). The engine's kernel for wide prefill
 * chunks since 2026-11-30's nineteenth session (engine.cu MOE_GEMM_FAST_WIDE). sm_90a only. */
#define CUDA_MOE_GEMM_V9 8
/* The kernel cuda_moe_gemm runs: the one the environment variable CTX_CUDA_MOE_GEMM forces, if it is
 * "1" .. "9" (V1..V9; read once, at the first call; any other value is ignored), else
 * CUDA_MOE_GEMM_DEFAULT, V6 at every size: on the H200 (one V4-Flash layer, bench-gpu moe, 2026-11-29,
 * bench/gpu/results/2026-11-29z) V5's time / V6's was 1.21 at S = 512, 1.12 at S = 2048 and 1.08 at
 * S = 8192 (V4's / V6's 1.39 / 1.34 / 1.33), V6 within the bound of the exact sums on every test case
 * and equal to V5 on 99.994% of the outputs (V5 gives V4's bytes; V4 had replaced V3, 3% faster at
 * S = 512 only). One kernel for every call keeps a chunked prefill bit-identical to one chunk
 * (kernels/README.md's engine bullet), which choosing by size would break. The engine runs V7 instead
 * for prefill chunks with its cuBLASLt products (engine.cu MOE_GEMM_FAST; V9, V7's bytes, for wide
 * ones). cuda_moe_gemm_variant_of_env is the parse (value NULL: unset): V1..V9, or CUDA_MOE_GEMM_UNSET. */
#define CUDA_MOE_GEMM_DEFAULT CUDA_MOE_GEMM_V6
#define CUDA_MOE_GEMM_UNSET (-1)
#define CUDA_MOE_GEMM_NVARIANTS 9
int cuda_moe_gemm_default_variant(void);
/* The variant CTX_CUDA_MOE_GEMM forces (read once), or CUDA_MOE_GEMM_UNSET. */
int cuda_moe_gemm_forced_variant(void);
int cuda_moe_gemm_variant_of_env(const char *value);
/* cuda_moe_gemm with the kernel chosen; CTX_EINVAL on an unknown variant. */
int cuda_moe_gemm_variant(const struct cuda_moe_buckets *b, const uint8_t *d_q, const float *d_sa, int x_group,
                          const uint8_t *const *d_wtab, const uint8_t *const *d_stab, int n, int k, uint16_t *d_y,
                          int variant, void *stream, struct ctx_err *e);
/* The CTAs of the variant's kernel that fit on one SM of the current device (occupancy: registers and
 * shared memory; V2-V4 are built for 2). */
int cuda_moe_gemm_ctas_per_sm(int variant, int *ctas, struct ctx_err *e);
/* V3's (CTA, 128-K stage) units that took the exactness fallback on the current device since the last
 * reset (a device-wide counter; synchronises the device). reset != 0 sets it back to 0. */
int cuda_moe_v3_fallback_stages(unsigned long long *count, int reset, struct ctx_err *e);
/* The same for V4's (CTA, stage)s that ran V1's arithmetic (spread beyond 26, or the NaN code). */
int cuda_moe_v4_fallback_stages(unsigned long long *count, int reset, struct ctx_err *e);
/* The same for V5's (V4's guard), and V6's. */
int cuda_moe_v5_fallback_stages(unsigned long long *count, int reset, struct ctx_err *e);
int cuda_moe_v6_fallback_stages(unsigned long long *count, int reset, struct ctx_err *e);
/* V7's (warp, stage)s that ran V1's arithmetic (spread beyond CUDA_MOE7_SPREAD, or the NaN code;
 * decided per warp, for its 16 rows). */
int cuda_moe_v7_fallback_stages(unsigned long long *count, int reset, struct ctx_err *e);
/* The same for V8's (warp, stage)s (a warp's stage covers up to 128 pairs: fewer than V7's count). */
int cuda_moe_v8_fallback_stages(unsigned long long *count, int reset, struct ctx_err *e);
/* The same for V9's (warp, stage)s (V8's granularity). */
int cuda_moe_v9_fallback_stages(unsigned long long *count, int reset, struct ctx_err *e);

/* ---- V4's shared-memory layout and weight conversion (internal to moe_gemm.cu; here so that
 * test_moe_gemm checks, on the host, the very functions the kernel runs) ----
 * f16 tiles: 128 weight rows (or 64 pairs) x 128 K, k16-step-major: step s = k / 16 is a slab of
 * nrows x 32 bytes (the row's 16 K values, two 16-byte chunks h = (k / 8) & 1), the chunks of rows
 * 4..7 of every 8 swapped (h ^ (row / 4 & 1)). So the 8 row addresses of each ldmatrix phase (8
 * consecutive rows, one chunk) and of each conversion store phase fall in 8 distinct 16-byte bank
 * groups (2 row + (h ^ (row / 4 & 1)) mod 8), and the addresses of one lane for the 8 steps (and the
 * two 16-row halves, and the pair blocks) differ by constants: one base register, immediate offsets. */
#ifdef __CUDACC__
#define CUDA_MOE4_HD __host__ __device__
#else
#define CUDA_MOE4_HD
#endif
/* Shifts of the weight conversion: LUT index idx = 26 - (E - e_i), value v * 2^(idx - 13). */
#define CUDA_MOE4_SPREAD 26
/* Byte offset of f16 element (row, k) in a tile of nrows rows. */
static inline CUDA_MOE4_HD uint32_t cuda_moe4_off(int row, int k, int nrows)
{
    return (uint32_t)((k >> 4) * nrows * 32 + row * 32 + ((((k >> 3) ^ (row >> 2)) & 1) << 4) + (k & 7) * 2);
}
/* The weight tile (128 rows) and the activation tile (64 pairs). */
static inline CUDA_MOE4_HD uint32_t cuda_moe4_woff(int row, int k) { return cuda_moe4_off(row, k, 128); }
static inline CUDA_MOE4_HD uint32_t cuda_moe4_xoff(int pair, int k) { return cuda_moe4_off(pair, k, 64); }
/* The row address lane gives to ldmatrix.x4 for A of mma m16n8k16 (warp row block wr: rows wr*32 ..,
 * 16-row half mi, k16 step s): matrices (rows 0-7 | 8-15) x (k 0-7 | 8-15) = a0, a1, a2, a3. */
static inline CUDA_MOE4_HD uint32_t cuda_moe4_a_ldsm(int lane, int wr, int mi, int s)
{
    return cuda_moe4_woff(wr * 32 + mi * 16 + (lane & 15), 16 * s + 8 * (lane >> 4));
}
/* The row address lane gives to ldmatrix.x4 for B of pair blocks nb0 and nb1 (pairs nb*8 ..) at k16
 * step s: matrices (nb0, k 0-7), (nb0, k 8-15), (nb1, k 0-7), (nb1, k 8-15) = b0, b1 of nb0, b0, b1
 * of nb1 (ldmatrix.x2 with nb1 = nb0: lanes 0-15 only). */
static inline CUDA_MOE4_HD uint32_t cuda_moe4_b_ldsm(int lane, int nb0, int nb1, int s)
{
    return cuda_moe4_xoff(((lane >> 4) ? nb1 : nb0) * 8 + (lane & 7), 16 * s + 8 * ((lane >> 3) & 1));
}
/* V5's tiles: wgmma's canonical K-major layout without swizzle. A core matrix is 8 rows x 16 bytes
 * (8 f16 of K) stored as 128 contiguous bytes; per k16 step s a slab of nrows x 32 bytes holds, per
 * 8-row group (256 bytes apart: the descriptor's stride byte offset), the core matrices of K 0-7 and
 * 8-15 (128 bytes apart: the leading byte offset). A warpgroup's 64 rows of step s start at
 * s * nrows * 32 + (first row / 8) * 256. The conversion's 8-lane phases (8 consecutive rows, one
 * K chunk) store to 8 distinct 16-byte slots of one core matrix: no bank conflicts. */
static inline CUDA_MOE4_HD uint32_t cuda_moe5_off(int row, int k, int nrows)
{
    return (uint32_t)((k >> 4) * nrows * 32 + (row >> 3) * 256 + ((k >> 3) & 1) * 128 + (row & 7) * 16 + (k & 7) * 2);
}
/* V6's K order within a stage: logical k16 step s, position kk (the wgmma operands' K) -> the stage's
 * physical K: kk = 2t + e -> 32t + 4s + e, kk = 8 + 2t + e -> 32t + 4s + 2 + e (t = 0..3, e = 0, 1). */
static inline CUDA_MOE4_HD int cuda_moe6_phys(int s, int kk)
{
    const int hi = kk >> 3, t = (kk & 7) >> 1, e = kk & 1;
    return 32 * t + 4 * s + 2 * hi + e;
}
#define CUDA_MOE5_LBO 128
#define CUDA_MOE5_SBO 256
/* Conversion work item i (0..511; thread tid takes tid and tid + 256) of the weights: row ra,
 * 32-K sub-block ca; of the activations: pair rb, 16-K chunk cb. Each 8-lane phase of a warp takes 8
 * consecutive rows at one sub-block (chunk), which keeps the raw loads and f16 stores conflict-free. */
static inline CUDA_MOE4_HD void cuda_moe4_wpiece(int i, int *ra, int *ca)
{
    *ra = ((i >> 5) << 3) | (i & 7);
    *ca = (i >> 3) & 3;
}
static inline CUDA_MOE4_HD void cuda_moe4_xpiece(int i, int *rb, int *cb)
{
    *rb = ((i >> 6) << 3) | (i & 7);
    *cb = (i >> 3) & 7;
}
/* High byte of the f16 of e2m1 magnitude code c (0..7) times 2^(idx - 13), idx 0..CUDA_MOE4_SPREAD:
 * a normal f16 (or 0) whose low byte is 0 (2 significant bits): exponent field (biased 15) at bits
 * 2-6 of the byte, the e2m1 mantissa bit at bit 1. */
static inline CUDA_MOE4_HD uint32_t cuda_moe4_lut_byte(int c, int idx)
{
    const int e = c >> 1, m = c & 1;
    if (c == 0)
        return 0;
    return e == 0 ? (uint32_t)(idx + 1) << 2 : ((uint32_t)(e + idx + 1) << 2) | ((uint32_t)m << 1);
}
/* PTX prmt.b32 (default mode): byte j of the result is byte (c >> 4j) & 7 of {b, a} (a bytes 0-3),
 * or, with bit 3 of that selector set, that byte's bit 7 replicated. */
static inline CUDA_MOE4_HD uint32_t cuda_moe4_prmt(uint32_t a, uint32_t b, uint32_t c)
{
#ifdef __CUDA_ARCH__
    uint32_t r;
    asm("prmt.b32 %0, %1, %2, %3;\n" : "=r"(r) : "r"(a), "r"(b), "r"(c));
    return r;
#else
    uint32_t r = 0;
    for (int i = 0; i < 4; i++) {
        const uint32_t sel = (c >> (4 * i)) & 15, src = sel & 7;
        uint32_t byte = ((src < 4 ? a : b) >> (8 * (src & 3))) & 0xffu;
        if (sel & 8)
            byte = (byte & 0x80u) ? 0xffu : 0u;
        r |= byte << (8 * i);
    }
    return r;
#endif
}
/* 8 e2m1 codes (nibble j of x: K position j) -> 4 f16x2 words in K order (out[q] = positions 2q
 * (low half), 2q + 1), through the LUT words l0 (codes 0..3) / l1 (4..7) of one shift: the high bytes
 * of positions 0..3 (lo) and 4..7 (hi) by prmt, the signs by prmt's sign-replicate selectors (bit 7 of
 * byte j of x << 4 is nibble 2j's sign, of x nibble 2j + 1's), then each byte moved to the high half
 * of its f16 (low bytes 0: byte 0 of the zero operand). */
static inline CUDA_MOE4_HD void cuda_moe4_convert(uint32_t x, uint32_t l0, uint32_t l1, uint32_t out[4])
{
    const uint32_t m = x & 0x77777777u, xs = x << 4;
    const uint32_t lo = cuda_moe4_prmt(l0, l1, m) | (cuda_moe4_prmt(xs, x, 0xD9C8u) & 0x80808080u);
    const uint32_t hi = cuda_moe4_prmt(l0, l1, m >> 16) | (cuda_moe4_prmt(xs, x, 0xFBEAu) & 0x80808080u);
    out[0] = cuda_moe4_prmt(lo, 0u, 0x1404u);
    out[1] = cuda_moe4_prmt(lo, 0u, 0x3424u);
    out[2] = cuda_moe4_prmt(hi, 0u, 0x1404u);
    out[3] = cuda_moe4_prmt(hi, 0u, 0x3424u);
}

/* V7's A fragments. Thread t of a quad needs, for k32 step s (= 32-K sub-block s of the stage, K in
 * natural order on both operands), the codes of K 4t..4t+3 (a0 / a1: bytes 2t, 2t + 1 of the
 * sub-block's 16) and of K 16 + 4t.. (a2 / a3: bytes 8 + 2t, 9 + 2t). w0, w1 = words t / 2 and 2 + t / 2
 * of the sub-block; the result holds those 4 bytes in that order, so its nibble j is K position j of
 * the fragment's 8 (4t + j for j < 4, 16 + 4t + j - 4 after). */
static inline CUDA_MOE4_HD uint32_t cuda_moe7_pick(uint32_t w0, uint32_t w1, int t)
{
    return cuda_moe4_prmt(w0, w1, (t & 1) ? 0x7632u : 0x5410u);
}
/* 8 e2m1 codes (nibble j of x: K position j) -> 8 e4m3 bytes in K order (lo: positions 0..3, hi:
 * 4..7) through the magnitude LUT l0 (codes 0..3) / l1 (4..7) of one shift (V3's conversion): the
 * magnitudes by prmt, the signs by prmt's sign-replicate selectors (bit 7 of byte j of x << 4 is
 * nibble 2j's sign, of x nibble 2j + 1's). */
static inline CUDA_MOE4_HD void cuda_moe7_convert(uint32_t x, uint32_t l0, uint32_t l1, uint32_t *lo, uint32_t *hi)
{
    const uint32_t m = x & 0x77777777u, xs = x << 4;
    *lo = cuda_moe4_prmt(l0, l1, m) | (cuda_moe4_prmt(xs, x, 0xD9C8u) & 0x80808080u);
    *hi = cuda_moe4_prmt(l0, l1, m >> 16) | (cuda_moe4_prmt(xs, x, 0xFBEAu) & 0x80808080u);
}
/* V7's activation rows in a ring slot: pair row r, 16-byte chunk c (K 16c..16c+15) at r * 128 +
 * ((c ^ (r & 7)) << 4): the 128-byte swizzle wgmma's descriptor (layout type 1) reads. */
static inline CUDA_MOE4_HD uint32_t cuda_moe7_xoff(int r, int c)
{
    return (uint32_t)(r * 128 + ((c ^ (r & 7)) << 4));
}

#ifdef __cplusplus
}
#endif

#endif
