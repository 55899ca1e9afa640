/* The greedy generation loop of kernels/cuda_engine.h's cuda_engine_generate over any forward that
 * offers these steps, so that one engine and a layer-split pipeline (kernels/multi.h
 * cuda_multi_generate) run the same loop. Internal to the CUDA backend (engine.cu, multi.cu); not an
 * API of its own. engine.cu's comment above cuda_engine_generate says what the steps do and why a
 * speculative run gives a plain run's tokens and state. */
#ifndef CUDA_GEN_H
#define CUDA_GEN_H

#ifdef __cplusplus
extern "C" {
#endif

#include "cuda_engine.h"

struct cuda_gen_ops {
    void *ud;
    int smax, window, vocab; /* most tokens a forward, the sliding window, the vocabulary */
    int has_mtp;             /* the (last) engine holds the MTP block */
    long long (*pos)(void *ud);
    long long max_ctx;
    /* tokens[0..S) as prompt chunks (S may exceed smax: split, pipelined where the backend can) */
    int (*prefill)(void *ud, const int *tokens, int S, struct ctx_err *e);
    /* One forward of S <= smax tokens, then the argmax of its last `rows` rows into amax (rows 0:
     * none); undo: a speculative step's two tokens, the undo record of the second saved first. */
    int (*forward)(void *ud, const int *tokens, int S, int rows, int undo, int *amax, struct ctx_err *e);
    /* Right after an undo forward: its second position undone (cuda_engine_drop_last). */
    int (*drop_last)(void *ud, struct ctx_err *e);
    /* cuda_engine_mtp on the engine that holds the block: the argmax of its last row into *draft. */
    int (*mtp)(void *ud, int row0, const int *next, int S, int *draft, struct ctx_err *e);
    const int *force; /* tests (cuda_engine_spec_force): the draft for output token i */
    int nforce;
};

int cuda_gen_run(const struct cuda_gen_ops *ops, const int *prompt, int n, const struct cuda_engine_gen_opts *o,
                 int *out, int *n_out, struct cuda_engine_gen_stats *stats, struct ctx_err *e);

/* The steps on one engine, for multi.cu: an asynchronous forward call (cuda_engine_forward_async with
 * the argmax of the last `rows` rows and the undo record), the argmax of the last finished call, and
 * the drop of the position an undo forward saved. */
int cuda_engine_forward_async_rows(struct cuda_engine *g, const int *tokens, int S, const struct cuda_engine_io *io,
                                   int rows, int undo, struct ctx_err *e);
int cuda_engine_argmax_rows(struct cuda_engine *g, int *amax, int rows, struct ctx_err *e);
int cuda_engine_drop_last(struct cuda_engine *g, struct ctx_err *e);
/* The logits of the last finished call that asked for rows (an async rows call copies them to pinned
 * memory as cuda_engine_forward_rows does): row i into logits[i][0..vocab). */
int cuda_engine_logits_rows(struct cuda_engine *g, float *const *logits, int rows, struct ctx_err *e);
/* The engine's test drafts (cuda_engine_spec_force) and its MTP switch. */
void cuda_engine_spec_forced(const struct cuda_engine *g, const int **force, int *n);
int cuda_engine_has_mtp(const struct cuda_engine *g);

#ifdef __cplusplus
}
#endif

#endif
