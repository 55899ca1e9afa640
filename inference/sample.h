/* Choosing the next token from logits: greedy (temperature 0), or temperature with optional top-k
 * and top-p (nucleus) truncation, from a seeded generator so that a run can be repeated exactly. */
#ifndef INF_SAMPLE_H
#define INF_SAMPLE_H

#include <stdint.h>

#include "err.h"

struct inf_sampler_opts {
    float temperature;          /* 0: greedy (ties go to the lowest id) */
    float top_p;                /* (0, 1]; 1 or 0: no nucleus cut */
    int top_k;                  /* 0: no top-k cut */
    unsigned long long seed;
};

struct inf_sampler;

int inf_sampler_new(const struct inf_sampler_opts *o, int vocab, struct inf_sampler **out,
                    struct ctx_err *e);
void inf_sampler_free(struct inf_sampler *s);
/* logits[vocab] is not modified. */
int32_t inf_sample(struct inf_sampler *s, const float *logits);
/* A token verified against a draft (speculative decoding, inference/spec.h): distributed exactly as
 * inf_sample's, with the draft taken whenever possible. Greedy: the argmax (accepted when it is the
 * draft). Sampled: the draft with probability p(draft) under the sampler's distribution (temperature,
 * top-k, top-p), else a draw from that distribution without the draft, renormalised (so every id
 * keeps its probability). It consumes one or two draws of the generator, so a seeded run differs
 * from inf_sample's sequence. *accepted (may be NULL): whether the result is the draft. draft < 0:
 * inf_sample. */
int32_t inf_sample_draft(struct inf_sampler *s, const float *logits, int32_t draft, int *accepted);
/* Index of the largest value; ties go to the lowest index; NaN never wins. */
int32_t inf_argmax(const float *v, int n);

#endif
