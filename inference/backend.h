/* The small interface between the forward definition (model.c) and the machine that runs its heavy
 * operations. model.c owns the semantics (what is computed, in which order, where values are
 * rounded); a backend owns only how the products and the attention core run. The CPU backend
 * (cpu/) implements it with pthreads and SIMD; a CUDA backend implements the same entry points.
 *
 * Activations cross this interface as float arrays holding bf16-exact values where the reference
 * stores bf16. Weights are views of the stored tensors (never expanded). */
#ifndef INF_BACKEND_H
#define INF_BACKEND_H

#include <stddef.h>
#include <stdint.h>

/* A weight matrix in its stored format. */
enum inf_lin_kind {
    INF_LIN_FP8,    /* e4m3 [n][k] + e8m0 [ceil(n/128)][k/128]; input quantised to e4m3 per 1x128 */
    INF_LIN_FP4,    /* e2m1 pairs [n][k/2] (low nibble = even k) + e8m0 [n][k/32]; input as FP8 */
    INF_LIN_FP8_DQ, /* FP8 storage used as its exact bf16 dequantisation, fp32 product (wo_a) */
    INF_LIN_BF16,   /* bf16 [n][k], fp32 product */
    INF_LIN_F32     /* f32 [n][k], fp32 product */
};
struct inf_lin {
    enum inf_lin_kind kind;
    int n, k;
    const void *w;
    const uint8_t *scale;
};
enum inf_lin_out { INF_OUT_BF16, INF_OUT_F32 };

/* One product of a batch: y[s] = W x[s] for s < S. */
struct inf_lin_call {
    const struct inf_lin *w;
    const float *x;
    int S;
    float *y;
    enum inf_lin_out out;
};

struct inf_backend {
    const char *name;
    void *ctx;
    int nthreads;
    /* y[s] = W x[s] for s < S (x [S][k], y [S][n]) with the format's exact semantics. */
    void (*linear)(struct inf_backend *b, const struct inf_lin *w, const float *x, int S, float *y,
                   enum inf_lin_out out);
    /* Several independent products at once (one parallel loop for all their rows: a decode step
     * issues many small products). Same results as calling linear for each. */
    void (*linear_batch)(struct inf_backend *b, const struct inf_lin_call *calls, int n);
    /* fn(ud, i, tid) for i < n, possibly in parallel; tid < nthreads. */
    void (*parallel_for)(struct inf_backend *b, size_t n, void (*fn)(void *ud, size_t i, int tid), void *ud);
    /* One query, `H` heads of `d` dims: online-softmax sparse attention over the entries kv[0..n)
     * (NULL = empty slot), blocks of 64, bf16 probabilities, per-head sink. out [H][d] bf16. */
    void (*sparse_attn)(struct inf_backend *b, const float *q, int H, int d, const float *const *kv, int n,
                        const float *sink, float scale, float *out);
    void (*destroy)(struct inf_backend *b);
};

/* The CPU backend: nthreads <= 0 means one per CPU. NULL on allocation failure. */
struct inf_backend *inf_cpu_backend_new(int nthreads);

#endif
