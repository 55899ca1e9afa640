/* The DeepSeek V4 forward pass (spec §4), one definition over the backend interface (backend.h):
 * embedding, mHC blocks (Sinkhorn, transposed mixing), attention (sliding window, CSA with the
 * lightning indexer, HCA, per-head sink, grouped output projection), MoE (hash and learned
 * routing, clamped SwiGLU), hc_head, final norm, head, and the MTP block.
 *
 * Every function takes the positions it runs at explicitly through the state: tokens are fed in
 * chunks of any size (prefill) or one at a time (decode) with identical results. The module-level
 * entry points (attention, MoE, block, head) exist so tests can check each against recorded
 * reference inputs. */
#ifndef INF_MODEL_H
#define INF_MODEL_H

#include "backend.h"
#include "config.h"
#include "err.h"
#include "state.h"
#include "weights.h"

struct inf_model;

/* Build a model over loaded weights (not copied: they must outlive the model) and a backend it
 * takes ownership of (NULL: a CPU backend with nthreads threads, <= 0 one per CPU). */
int inf_model_new(const struct inf_weights *w, struct inf_backend *backend, int nthreads, struct inf_model **out,
                  struct ctx_err *e);
void inf_model_free(struct inf_model *m);
const struct inf_config *inf_model_config(const struct inf_model *m);
struct inf_backend *inf_model_backend(struct inf_model *m);

/* Called after each backbone block with its output streams X [S][hc][D] for positions pos0.. */
typedef void (*inf_block_hook)(void *ud, int layer, const float *X, int S, long long pos0);

struct inf_forward_opts {
    float *logits;         /* [vocab]: logits of the chunk's last position, or NULL */
    float *streams;        /* [S][hc][D]: last block's output streams (MTP input), or NULL */
    inf_block_hook hook;   /* or NULL */
    void *hook_ud;
};

/* Run inf_model_forward on an accelerator (inference/accel.h; NULL: the CPU backend again). The
 * model does not own it; forwards with a hook or streams wanted still run on the CPU. */
struct inf_accel;
void inf_model_set_accel(struct inf_model *m, struct inf_accel *a);
struct inf_accel *inf_model_accel(const struct inf_model *m);

/* Feed tokens[0..S) at positions st->pos.. and advance st->pos by S. */
int inf_model_forward(struct inf_model *m, struct inf_state *st, const int *tokens, int S,
                      const struct inf_forward_opts *o, struct ctx_err *e);

/* MTP block `k` (0-based) on the main model's streams X [S][hc][D] of positions st->mtp_pos.., with
 * next_tokens[s] the token following each position; logits of the last position into logits[vocab]
 * (NULL: none). Advances st->mtp_pos by S. */
int inf_model_mtp(struct inf_model *m, struct inf_state *st, int k, const float *X, const int *next_tokens, int S,
                  float *logits, struct ctx_err *e);

/* MTP blocks the checkpoint has (inf_model_mtp's k < this). */
int inf_model_mtp_blocks(const struct inf_model *m);

/* Module level. layer < num_hidden_layers + num_nextn_predict_layers (MTP blocks follow the
 * backbone). a [S][D] is the normalised input; out [S][D]. Positions pos0..pos0+S-1. */
int inf_model_attention(struct inf_model *m, struct inf_state *st, int layer, const float *a, int S,
                        long long pos0, float *out, struct ctx_err *e);
int inf_model_moe(struct inf_model *m, int layer, const float *a, const int *tokens, int S, float *out,
                  struct ctx_err *e);
/* One whole block on X [S][hc][D] in place. */
int inf_model_block(struct inf_model *m, struct inf_state *st, int layer, float *X, const int *tokens, int S,
                    long long pos0, struct ctx_err *e);
/* hc_head + final norm of one position's streams X [hc][D] -> hidden [D] (bf16 values). */
void inf_model_final_hidden(struct inf_model *m, const float *X, float *hidden);
/* logits[vocab] = head(fp32) . hidden. */
void inf_model_logits(struct inf_model *m, const float *hidden, float *logits);

/* Wall time by stage, accumulated only when the environment has CTX_ENGINE_PROFILE set (for
 * bench/engine; one model at a time). */
enum { INF_PROF_ATTN, INF_PROF_MOE, INF_PROF_HC, INF_PROF_HEAD, INF_PROF_N };
void inf_model_prof_get(double out[INF_PROF_N], int reset);

#endif
