/* Speculative decoding with the checkpoint's MTP block (spec §4.9) for a caller that chooses every
 * token itself (sampling, grammar masks, forced tokens: ctxd's agent). One draft a step: after the
 * caller's token t, the MTP block drafts d from the last rows' streams, and [t, d] go through the
 * model as one two-token forward, which gives the logits after t and after d for about the price of
 * one token (decode reads the weights once either way). The caller chooses its next token from the
 * logits after t, verified against d (inf_sample_draft: greedy keeps the argmax, sampling keeps the
 * distribution exactly); if that token is d, the logits after d are already there and the next step
 * costs no forward, otherwise d's position is dropped. So the tokens are the plain decode's (greedy:
 * the same ids; sampled: the same distribution), only faster where drafts are accepted.
 *
 * Runs on the accelerator when it offers the spec ops (inference/accel.h: the CUDA engine with its
 * MTP block loaded, a drop by the engine's undo record), else on the CPU (two one-token forwards, a
 * snapshot between them to drop the second). The MTP block's window of earlier positions is fed
 * with every position kept (the prompt's last rows at inf_spec_prefill), but a draft is only a
 * guess: stale or missing MTP entries (after the device served another state) cost acceptance,
 * never a different token.
 *
 * The state holds, between calls, every token given plus possibly the pending draft: call
 * inf_spec_settle before anything else touches the state (a snapshot, truncate, sync, checkpoint)
 * or the device (other states' work). Not thread-safe; one per state at a time. */
#ifndef INF_SPEC_H
#define INF_SPEC_H

#include "err.h"
#include "model.h"
#include "state.h"

struct inf_spec;

struct inf_spec_stats {
    long long drafted;  /* two-token forwards (a draft verified) */
    long long accepted; /* drafts that were the next token */
    long long plain;    /* one-token forwards (no rows to draft from: the first token, after a settle
                         * whose rows went, or a failed draft) */
};

/* A speculative decoder for st on m. CTX_EUNSUPPORTED when the checkpoint has no MTP block, or when
 * the model runs on an accelerator without the spec ops (the CUDA engine without opts.mtp). */
int inf_spec_new(struct inf_model *m, struct inf_state *st, struct inf_spec **out, struct ctx_err *e);
void inf_spec_free(struct inf_spec *sp);

/* tokens[0..n) at the state's position (settled first), the logits of the last into logits[vocab];
 * the last min(n, sliding_window) go in a forward of their own whose rows feed the MTP block. */
int inf_spec_prefill(struct inf_spec *sp, const int *tokens, int n, float *logits, struct ctx_err *e);

/* The draft the state holds beyond the tokens given (the next token is verified against it:
 * inf_sample_draft), or -1. */
int inf_spec_pending(const struct inf_spec *sp);

/* t is the next token: afterwards the state holds it (and maybe a new draft beyond), and
 * logits[vocab] are the logits of the token after t. On an error the state is unknown (start again
 * from a snapshot). */
int inf_spec_next(struct inf_spec *sp, int t, float *logits, struct ctx_err *e);

/* Drop the pending draft, if any: the state then holds exactly the tokens given, and the logits
 * from the last inf_spec_next stay those of the token after the last. */
int inf_spec_settle(struct inf_spec *sp, struct ctx_err *e);

void inf_spec_stats(const struct inf_spec *sp, struct inf_spec_stats *out);

#endif
