/* FP8 / FP4 matrix products of the DeepSeek V4 forward pass on Hopper (sm_90a), with the reference's
 * numerics (spec §5.2; tests/fixtures/v4-tiny-a/README.md "Numerically relevant details"):
 *
 * - activations are quantised per token in 1x128 K blocks to e4m3: amax floored at 1e-4,
 *   scale = 2^ceil(log2(amax * fp32(1/448))) from the fp32 exponent bits, clamp +-448, round to
 *   nearest even (cuda_act_quant, bit-exact with kernels/ref.c and inference/cpu);
 * - FP8 weights: e4m3 [n][k] + e8m0 [ceil(n/128)][k/128]; each 128-K partial is multiplied by
 *   act_scale * weight_scale and accumulated in fp32; output bf16;
 * - FP4 weights (routed experts): e2m1 pairs [n][k/2] (low nibble = even k) + e8m0 [n][k/32]; each
 *   32-K partial is multiplied by act_scale(k/128) * weight_scale(k/32), accumulated in fp32.
 *
 * Partials come from tensor cores (fp32 accumulation in a different order than the reference's
 * exact partial sums), so results agree with kernels/ref.c within a relative bound, not bitwise;
 * tests/kernels states and checks the bound.
 *
 * Every pointer named d_* is device memory. Every k must be a multiple of 128. Launch functions are
 * asynchronous on `stream` (a cudaStream_t, NULL = the legacy default stream) and return 0 or a
 * negative CTX_E* code with *e filled (bad shape, or a launch error reported by the runtime). */
#ifndef CUDA_GEMM_H
#define CUDA_GEMM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "err.h" /* a C header without C++ guards: keep its declarations C-linked */

/* ---- device memory and synchronisation (thin wrappers so that C callers need no CUDA headers) ---- */

/* Number of CUDA devices; 0 when there is no driver or device (never an error). */
int cuda_device_count(void);
/* Name and SM count of device 0, for reports. */
int cuda_device_name(char *buf, size_t cap, int *sms, struct ctx_err *e);
int cuda_malloc(void **d_ptr, size_t bytes, struct ctx_err *e);
void cuda_free(void *d_ptr);
int cuda_memset(void *d_ptr, int value, size_t bytes, struct ctx_err *e);
int cuda_h2d(void *d_dst, const void *src, size_t bytes, struct ctx_err *e);
int cuda_d2h(void *dst, const void *d_src, size_t bytes, struct ctx_err *e);
/* Wait for all work on the device; reports the first asynchronous error. */
int cuda_sync(struct ctx_err *e);

/* Programmatic Dependent Launch of the decode kernels (kernels/README.md "PDL"): on by default, off
 * when the environment has CTX_CUDA_PDL=0 at the first query. cuda_pdl_set changes it for launches
 * queued afterwards (a CUDA graph keeps what it was captured with; the engine recaptures its decode
 * graph when the switch changed). Results are the same bits either way. */
void cuda_pdl_set(int on);
int cuda_pdl_enabled(void);
/* The next launch_pdl of the calling thread is a plain launch (a full dependency on its stream's
 * previous work): for the first kernel after a cudaStreamWaitEvent on a side stream, so that the join
 * is the runtime's plain one. One-shot; cuda_pdl_take_plain reads and clears it (launch_pdl calls it). */
void cuda_pdl_plain_next(void);
int cuda_pdl_take_plain(void);

/* ---- kernels ---- */

/* x bf16 [m][k] -> q e4m3 [m][k] and scales: sa[i*(k/128) + b] (row-major [m][k/128]) or, with
 * scale_t != 0, sa[b*ld + i] with ld = round_up(m, 4) ([k/128][ld], what cuBLASLt's VEC128 wants). */
int cuda_act_quant(const uint16_t *d_x, int m, int k, uint8_t *d_q, float *d_sa, int scale_t,
                   void *stream, struct ctx_err *e);

/* y bf16 [m][n] = dequant(W) x for m = 1..8 tokens: the bandwidth-bound decode path. q/sa from
 * cuda_act_quant (sa row-major [m][k/128]). Deterministic (fixed summation order). */
int cuda_fp8_gemv(const uint8_t *d_q, const float *d_sa, int m, const uint8_t *d_w, const uint8_t *d_ws,
                  int n, int k, uint16_t *d_y, void *stream, struct ctx_err *e);

/* The same product for one token fed by fp32 activations (the engine's hidden states): d_x [k] is
 * rounded to bf16 and quantised inside the kernel with cuda_act_quant's arithmetic (the same bytes
 * and scales), and the bf16-rounded outputs are written as fp32: rows [0, n1) to d_y1 [n1], rows
 * [n1, n) to d_y2 [n - n1] (n1 = n: d_y2 unused). The same bits as cuda_act_quant on bf16(x), then
 * cuda_fp8_gemv with m = 1, then the conversion to fp32, in one launch. k <= 16384. */
int cuda_fp8_gemv_f32(const float *d_x, const uint8_t *d_w, const uint8_t *d_ws, int n, int k, float *d_y1, int n1,
                      float *d_y2, void *stream, struct ctx_err *e);
/* The same for m = 1 or 2 tokens: d_x [m][k], d_y1 [m][n1], d_y2 [m][n - n1] (a speculative step's
 * two-token forward); k <= 16384 / m. Each token's outputs are the bits cuda_fp8_gemv_f32 gives it. */
int cuda_fp8_gemv_f32m(const float *d_x, int m, const uint8_t *d_w, const uint8_t *d_ws, int n, int k, float *d_y1,
                       int n1, float *d_y2, void *stream, struct ctx_err *e);
/* Whether cuda_fp8_gemv_f32m takes m tokens of this shape (1: yes). */
int cuda_fp8_gemv_f32_fits(int m, int n, int k);

/* Same product for any m (prefill) on mma.sync m16n8k32 tensor-core tiles: each output's 128-K
 * partial is 4 chained mma steps from zero, scaled (partial * act_scale) * weight_scale and added
 * into fp32 accumulators in ascending block order, then rounded to bf16. Two kernels give the same
 * bits (the same operand bytes in the same fragment slots and the same arithmetic; tests/kernels
 * checks byte equality): CUDA_FP8_GEMM_V1, the first (128 rows x 128 tokens, one CTA per SM), and
 * CUDA_FP8_GEMM_V2, the second, which picks its tile and CTAs per SM by shape (1.17-2.6x V1 on the
 * H200, kernels/README.md); the variants after V2 run one of its tiles each (tests, benchmarks).
 * cuda_fp8_gemm runs CUDA_FP8_GEMM_DEFAULT (V2), with no environment switch: V1 gives the same bytes
 * and was slower at every measured shape, so choosing it only ever costs time (tests and benchmarks
 * reach it through cuda_fp8_gemm_variant). */
#define CUDA_FP8_GEMM_V1 0
#define CUDA_FP8_GEMM_V2 1
#define CUDA_FP8_GEMM_NVARIANTS 5
#define CUDA_FP8_GEMM_DEFAULT CUDA_FP8_GEMM_V2
int cuda_fp8_gemm(const uint8_t *d_q, const float *d_sa, int m, const uint8_t *d_w, const uint8_t *d_ws,
                  int n, int k, uint16_t *d_y, void *stream, struct ctx_err *e);
/* cuda_fp8_gemm with the kernel chosen; CTX_EINVAL on an unknown variant. */
int cuda_fp8_gemm_variant(const uint8_t *d_q, const float *d_sa, int m, const uint8_t *d_w, const uint8_t *d_ws,
                          int n, int k, uint16_t *d_y, int variant, void *stream, struct ctx_err *e);
/* A short name of a variant, for reports. */
const char *cuda_fp8_gemm_variant_name(int variant);

/* Routed experts, decode: for each pair p < npairs (a token's selected expert), with expert
 * id = d_ids[p] and activation row r = p / x_group of q/sa ([rows][k], [rows][k/128]):
 *   y[p][0..n) = dequant(W_id) x_r
 * d_wtab[id] / d_stab[id] point to expert id's e2m1 [n][k/2] and e8m0 [n][k/32] (a device array of
 * device pointers, so experts may live anywhere). For w1/w3 pass x_group = top-k (the token's
 * activation is shared by its experts); for w2 pass 1 (each pair has its own input).
 * Two kernels (kernels/README.md): CUDA_FP4_GEMV_V1, the first (e4m3 mma.sync, each 32-K partial from
 * the tensor core's fp32 accumulator, within test_gemm's bound), and CUDA_FP4_GEMV_V2, the default
 * (1.14-1.59x V1 at the engine's decode calls on the H200): each 32-K partial exact on int8
 * mma.sync and every row summed in the reference's order, so its output is bf16 of kernels/ref.c's
 * exactly (NaN activation bytes, which cuda_act_quant never produces, count as 0). The environment
 * variable CTX_CUDA_FP4_GEMV = 1 or 2 forces V1 or V2 in cuda_fp4_gemv_grouped, 3..9 the variants after V2
 * (read once per process; benchmarks, one-line revert). The variants after V2 run one fixed configuration of V2's
 * kernel each (K parts per 16-row tile, warps per CTA, ring depth; the same bits; tests and
 * benchmarks); V2 picks one by shape. V2's shared memory grows with k (3 bytes a K position + ~18
 * KB, 4.5 bytes with four K parts; k up to ~48000, CTX_EINVAL beyond). Any npairs up to 65535
 * (prefill sizes run too; the engine uses moe_gemm.h there). */
#define CUDA_FP4_GEMV_V1 0
#define CUDA_FP4_GEMV_V2 1
#define CUDA_FP4_GEMV_NVARIANTS 9
#define CUDA_FP4_GEMV_DEFAULT CUDA_FP4_GEMV_V2
int cuda_fp4_gemv_grouped(const uint8_t *d_q, const float *d_sa, int x_group, int npairs, const int *d_ids,
                          const uint8_t *const *d_wtab, const uint8_t *const *d_stab, int n, int k,
                          uint16_t *d_y, void *stream, struct ctx_err *e);
/* cuda_fp4_gemv_grouped with the kernel chosen (no environment); CTX_EINVAL on an unknown variant. */
int cuda_fp4_gemv_grouped_variant(const uint8_t *d_q, const float *d_sa, int x_group, int npairs, const int *d_ids,
                                  const uint8_t *const *d_wtab, const uint8_t *const *d_stab, int n, int k,
                                  uint16_t *d_y, int variant, void *stream, struct ctx_err *e);
/* A short name of a variant, for reports. */
const char *cuda_fp4_gemv_variant_name(int variant);

/* ---- cuBLASLt block-scaled FP8 (Hopper: VEC128 activation scales on A, BLK128x128 weight scales on
 * B; the product comes out transposed and a small kernel writes y [m][n]; the engine's context also has
 * the rows form, the roles swapped: cuda_lt_ctx_run_rows) ----
 *
 * About 4x faster than cuda_fp8_gemm at prefill shapes, but less exact: its tensor cores sum each
 * 128-K block with a ~13-bit accumulator (errors up to ~2^-11 of sum |w x| seen on the H200, where
 * cuda_fp8_gemm and the GEMV match the reference's fp32 partials). Whether prefill may use it is
 * the engine's call; tests/kernels checks it against its own, wider bound. */

/* Scale layouts (`layout` bits): the weight's fp32 tile scales are [ceil(n/128)][ld] with
 * ld = round_up(k/128, 4) (tile (nb, kb) at nb*ld + kb), or with bit 2 [k/128][ceil(n/128)]; the
 * activation scales come from cuda_act_quant with scale_t = (layout & 1). cuda_lt_layout() is the
 * one cuBLASLt reads (tests/kernels tries every layout against kernels/ref.c and checks that this
 * one passes). m must be a multiple of 4 (pad the tokens), n of 16. */
#define CUDA_LT_ACT_T 1
#define CUDA_LT_W_T 2
int cuda_lt_layout(void);
struct cuda_lt_plan;
/* A plan for y bf16 [m][n] = W x. Returns CTX_EUNSUPPORTED when cuBLASLt offers no algorithm. */
int cuda_lt_plan_new(struct cuda_lt_plan **out, int m, int n, int k, int layout, struct ctx_err *e);
int cuda_lt_run(struct cuda_lt_plan *p, const uint8_t *d_q, const float *d_sa, const uint8_t *d_w,
                const float *d_ws32, uint16_t *d_y, void *stream, struct ctx_err *e);
void cuda_lt_plan_free(struct cuda_lt_plan *p);
/* e8m0 weight tile scales [rows][cols] -> fp32, [rows][ld] (ld >= cols, padding 1.0) or, with
 * transpose, [cols][rows]. */
int cuda_e8m0_to_f32(const uint8_t *d_s, int rows, int cols, int ld, int transpose, float *d_out,
                     void *stream, struct ctx_err *e);

/* cuBLASLt for the engine's prefill products, any m up to max_m with one handle and one workspace.
 * Per (n, k) the context keeps the algorithm cuBLASLt's heuristic picks for m = max_m (rounded up to
 * CUDA_LT_PAD_MAX) and runs every call of that shape with it, the rows padded to the granularity that
 * algorithm accepts (cuda_lt_ctx_rows: the smallest of 8, 16, .., CUDA_LT_PAD_MAX that
 * cublasLtMatmulAlgoCheck takes): one algorithm computes an output from its own row the same way
 * whatever the call's other rows are, so a prefill in chunks gives the bits of one chunk (what
 * cuda_fp8_gemm guarantees by being one kernel; tests/kernels checks it). Numerics are cuda_lt_run's
 * (tests/kernels: within EPS_LT). With mp = cuda_lt_ctx_rows(c, m, n, k): the activations are d_q
 * [mp][k] (rows m..mp-1 may hold any bytes) with scales d_sat [k/128][mp] (column i of row b: token
 * i's scale of K block b; 0 for the padding), the weight scales d_ws32 fp32 [ceil(n/128)][round_up(k/128,
 * 4)] (cuda_e8m0_to_f32 with that ld), and the product comes out transposed: d_yt[j * mp + i] =
 * bf16(y[i][j]) for token i < m, output j < n (the padding columns hold whatever the padding rows give). */
#define CUDA_LT_PAD_MAX 128
struct cuda_lt_ctx;
int cuda_lt_ctx_new(struct cuda_lt_ctx **out, int max_m, struct ctx_err *e);
void cuda_lt_ctx_free(struct cuda_lt_ctx *c);
/* 1 when (n, k) can run (asks cuBLASLt for an algorithm at the first call for a shape), 0 when not
 * (n % 16, k % 128, no block-scaled algorithm, or none of the paddings: *e says why), CTX_ENOMEM. */
int cuda_lt_ctx_supports(struct cuda_lt_ctx *c, int n, int k, struct ctx_err *e);
/* The padded row count of an m-row call of (n, k) (m <= mp <= m + CUDA_LT_PAD_MAX - 1); 0 for a shape
 * cuda_lt_ctx_supports refuses or an m outside 1..max_m. */
int cuda_lt_ctx_rows(struct cuda_lt_ctx *c, int m, int n, int k);
/* The algorithm of (n, k) in words (tile, stages, split-K, reduction, swizzle, cluster), for reports. */
int cuda_lt_ctx_describe(struct cuda_lt_ctx *c, int n, int k, char *buf, size_t len);
/* bf16 products on the same context (the engine's prefill wo_a: batch = the groups): for group b < batch,
 * token i < m and output j < n, d_y[i * ldy + b * n + j] = sum_l d_w[(b * n + j) * k + l] *
 * d_x[i * ldx + b * k + l], bf16 operands, fp32 accumulation and output. One algorithm per (n, k, batch,
 * ldx, ldy) as above; with mp = cuda_lt_ctx_rows_bf16(..) (0: refused), d_x must have mp readable rows
 * and d_y mp writable ones (the padding rows' outputs are whatever their inputs give). n, k multiples of
 * 8, ldx >= batch * k a multiple of 8, ldy >= batch * n a multiple of 4. */
int cuda_lt_ctx_rows_bf16(struct cuda_lt_ctx *c, int m, int n, int k, int batch, int ldx, int ldy);
int cuda_lt_ctx_bf16(struct cuda_lt_ctx *c, int m, int n, int k, int batch, const uint16_t *d_x, int ldx,
                     const uint16_t *d_w, float *d_y, int ldy, void *stream, struct ctx_err *e);
/* CTX_EINVAL for m outside 1..max_m, CTX_EUNSUPPORTED for a shape cuda_lt_ctx_supports refuses or a
 * call cuBLASLt rejects with the shape's algorithm. */
int cuda_lt_ctx_run(struct cuda_lt_ctx *c, int m, int n, int k, const uint8_t *d_q, const float *d_sat,
                    const uint8_t *d_w, const float *d_ws32, uint16_t *d_yt, void *stream, struct ctx_err *e);
/* The rows form (2026-12-01): the same operands and scale layouts with the roles swapped, the weights as
 * cuBLASLt's A (BLK128x128 scales) and the activations as B (VEC128), so the product comes out in rows,
 * d_y[i * n + j] = bf16(y[i][j]) for i < mp (the padding rows hold whatever the padding tokens give) and no
 * transpose is needed. Its own algorithm and padding per (n, k), chosen as above; cuBLASLt 13.1 on the H200
 * gives the transposed form's bits (bench-gpu-ltrows; tests/kernels checks the bound and the chunks).
 * cuda_lt_ctx_supports_form / cuda_lt_ctx_rows_form / cuda_lt_ctx_describe_form take rows = 0 for the
 * transposed form (the functions above) or 1 for this one. */
int cuda_lt_ctx_supports_form(struct cuda_lt_ctx *c, int n, int k, int rows, struct ctx_err *e);
int cuda_lt_ctx_rows_form(struct cuda_lt_ctx *c, int m, int n, int k, int rows);
int cuda_lt_ctx_describe_form(struct cuda_lt_ctx *c, int n, int k, int rows, char *buf, size_t len);
int cuda_lt_ctx_run_rows(struct cuda_lt_ctx *c, int m, int n, int k, const uint8_t *d_q, const float *d_sat,
                         const uint8_t *d_w, const float *d_ws32, uint16_t *d_y, void *stream, struct ctx_err *e);

#ifdef __cplusplus
}
#endif

#endif
