/* Routed experts for prefill as a grouped GEMM (issue 10): a chunk's (token, slot) pairs are bucketed
 * by expert on the device, then each expert's weights are read once per 64-pair tile instead of once
 * per pair (cuda_fp4_gemv_grouped, the decode kernel, re-reads an expert's 4-12 MB for every token
 * routed to it).
 *
 * Same inputs and output layout as cuda_fp4_gemv_grouped (gemm.h): pair p (expert d_ids[p],
 * activation row p / x_group of q/sa from cuda_act_quant) gets y[p][0..n) = bf16 of the sum over K of
 * w * x * act_scale * weight_scale, every product exact, summed in fp32. Deterministic: the bucketing
 * and every sum have a fixed order (a second run gives the same bytes).
 * The default kernel (V3, below) sums each row's 128 products of a 128-K stage in the tensor core's
 * fp32 accumulator (4 chained k32 steps, the weights converted exactly to e4m3 at one exponent per
 * row and stage) and adds the scaled stage partials in ascending K order: within
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

/* Device arrays carved from one scratch buffer; filled by cuda_moe_bucket. */
struct cuda_moe_buckets {
    int n_experts, npairs, max_tiles;
    int *d_counts;  /* [n_experts]: pairs routed to each expert */
    int *d_offsets; /* [n_experts + 1]: exclusive prefix sums of d_counts */
    int *d_perm;    /* [npairs]: pair indices by expert (ascending), ascending within an expert
                     * (= token, then slot); expert x's pairs are d_perm[d_offsets[x] .. d_offsets[x+1]) */
    int *d_tiles;   /* [max_tiles][2]: (expert, first index into d_perm) of each tile, in expert order */
    int *d_ntiles;  /* [1]: tiles in use */
};

/* Bytes of scratch for a bucketing of npairs pairs over n_experts table entries. */
size_t cuda_moe_scratch_bytes(int n_experts, int npairs);
/* Carve d_scratch (device, >= cuda_moe_scratch_bytes, 16-byte aligned) into b. CTX_EINVAL on bad
 * sizes (n_experts 1..CUDA_MOE_MAX_EXPERTS, npairs >= 1, tiles <= 65535) or a short buffer. */
int cuda_moe_buckets_init(struct cuda_moe_buckets *b, void *d_scratch, size_t bytes, int n_experts, int npairs,
                          struct ctx_err *e);
/* Bucket d_ids[0..npairs) by expert (device; three small launches). */
int cuda_moe_bucket(const struct cuda_moe_buckets *b, const int *d_ids, void *stream, struct ctx_err *e);
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
 * V3 (the default) converts each stage's 128 x 128 weight tile once per CTA into shared memory as
 * e4m3 at one exponent per row: with E = the max of the row's 4 e8m0 codes in the stage, an e2m1 value
 * v of sub-block i (code e_i) becomes v * 2^(e_i - E + 6) (<= 384, exact while e_i >= E - 14: spec
 * §5.4), the 4 k32 mmas chain, and the stage partial is scaled once by act_scale * 2^(E - 133).
 * Exactness guard (in the kernel, no caller action needed): a stage in which some row of the CTA has
 * e_i < E - 14 (or the NaN code 255) is computed by that CTA with every 32-K block on its own (V1's
 * arithmetic, such a sub-block converted at its own exponent), so results are never inexact, whatever
 * the scales; a product whose every stage falls back gives V1's (= V2's) bytes. Weights within the
 * spec's lossless-FP8 condition (2^14 per 128 x 128 tile, so per row) never fall back;
 * cuda_moe_v3_fallback_stages counts the stages that did. */
#define CUDA_MOE_GEMM_V1 0
#define CUDA_MOE_GEMM_V2 1
#define CUDA_MOE_GEMM_V3 2
#define CUDA_MOE_GEMM_DEFAULT CUDA_MOE_GEMM_V3
/* cuda_moe_gemm with the kernel chosen; CTX_EINVAL on an unknown variant. */
int cuda_moe_gemm_variant(const struct cuda_moe_buckets *b, const uint8_t *d_q, const float *d_sa, int x_group,
                          const uint8_t *const *d_wtab, const uint8_t *const *d_stab, int n, int k, uint16_t *d_y,
                          int variant, void *stream, struct ctx_err *e);
/* V3's (CTA, 128-K stage) units that took the exactness fallback on the current device since the last
 * reset (a device-wide counter; synchronises the device). reset != 0 sets it back to 0. */
int cuda_moe_v3_fallback_stages(unsigned long long *count, int reset, struct ctx_err *e);

#ifdef __cplusplus
}
#endif

#endif
