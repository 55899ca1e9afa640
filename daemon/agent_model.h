/* The agent loop's model (agent/loop.h's struct agent_model) as ctxd runs it: the local engine,
 * continuing from the state that holds the resident prefix, or the remote OpenAI-compatible
 * backend; plus teacher forcing for tests (--forced-completions). Engine thread only. */
#ifndef CTXD_AGENT_MODEL_H
#define CTXD_AGENT_MODEL_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>

#include "err.h"
#include "loop.h"

struct ctxd_engine;
struct ctxd_job_ctx;
struct inf_state;
struct inf_snapshot;
struct inf_dsml_guide;

/* Forced completions (tests): a JSON array of completion strings, consumed in order across all
 * requests. While one is left, a step's tokens are that string's tokens instead of sampled ones;
 * every one of them still goes through the model's forward pass as if it had been sampled. */
struct ctxd_forced;
int ctxd_forced_load(const char *path, struct ctxd_forced **out, struct ctx_err *e);
void ctxd_forced_free(struct ctxd_forced *f);
/* The next completion, or NULL when none is left (the model samples again). */
const char *ctxd_forced_next(struct ctxd_forced *f);
size_t ctxd_forced_left(const struct ctxd_forced *f);

/* Grammar-constrained decoding of tool-call blocks (inference/text/dsml_guide.h): STRICT masks, at
 * every sampled token of the local engine, the tokens that would take the completion out of what
 * the DSML parser accepts with the declared tools (unknown tools or parameters, a wrong string
 * attribute, invalid JSON, a required parameter missing, a block never closed); OFF samples from
 * the raw logits. Forced completions (tests) and the remote backend are never masked. */
enum ctxd_tool_grammar { CTXD_TOOL_GRAMMAR_STRICT = 0, CTXD_TOOL_GRAMMAR_OFF = 1 };
const char *ctxd_tool_grammar_name(enum ctxd_tool_grammar g);
/* "strict" or "off"; CTX_EINVAL otherwise. */
int ctxd_tool_grammar_parse(const char *s, enum ctxd_tool_grammar *out);

#ifndef CTXD_BLOCK_CAP_DEFAULT /* a build may lower it to exercise the cap */
#define CTXD_BLOCK_CAP_DEFAULT 1024
#endif

struct ctxd_agent_model_opts {
    struct ctxd_engine *engine;
    struct ctxd_job_ctx *job;          /* cancellation */
    /* local engine: the state holding the resident prefix, its snapshot and the prefix text */
    struct inf_state *st;
    const struct inf_snapshot *ready;
    const char *prefix_text;
    size_t prefix_len;
    struct ctxd_forced *forced;        /* may be NULL */
    size_t max_tokens;                 /* completion tokens over the whole run; 0: 8192 */
    float temperature, top_p;          /* sampling (local engine); 0: greedy */
    enum ctxd_tool_grammar tool_grammar; /* default (0): strict */
    /* STRICT: tokens one tool-call block may take (0: CTXD_BLOCK_CAP_DEFAULT). Past it the block
     * is closed by force where that cuts no value and no required parameter is missing, or cuts
     * only a read-only tool's string argument (the closing tags then go through the model like
     * forced tokens); else the step ends there and the parser reports the block as unclosed. */
    size_t block_cap;
    unsigned long long seed;
    /* Local engine: run engine work on the engine thread, calling work(arg) until it returns
     * something other than 1 (other jobs may run between two calls); returns that value. NULL:
     * the work runs on the calling thread (which must then be the engine thread). */
    int (*engine_call)(void *ud, int (*work)(void *arg), void *arg);
    void *engine_ud;
};

struct ctxd_agent_model {
    struct agent_model model; /* give &model to agent_loop_run */
    struct ctxd_agent_model_opts o;
    char *held;               /* the prompt text the state covers (local engine) */
    size_t held_len, held_cap;
    bool held_valid;
    size_t used;              /* completion tokens so far */
    size_t restarts;          /* steps that had to start again from the resident prefix */
    cJSON *steps;             /* per step: {prompt_tokens, cached_tokens, completion_tokens, forced,
                                 tool_grammar, block_cap?: "closed"|"value_cut"|"cut"} */
    struct inf_dsml_guide *guide; /* STRICT: built on the first sampled step from its tools */
    unsigned char *allow;     /* the mask, one byte per id of the model's vocabulary */
    size_t blocks_capped;     /* tool-call blocks that hit block_cap */
    struct inf_spec *spec;    /* speculative decoding (ctxd --spec; inference/spec.h), made on the
                               * first step when the engine offers it; NULL: plain decoding */
    bool spec_tried;
};

int ctxd_agent_model_init(struct ctxd_agent_model *m, const struct ctxd_agent_model_opts *o, struct ctx_err *e);
void ctxd_agent_model_fini(struct ctxd_agent_model *m);

#endif
