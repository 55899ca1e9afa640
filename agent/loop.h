/* The agent loop (issue 8): render the conversation, let the model complete it, parse the
 * completion with the streaming DSML parser, run the tool calls in order, append the results
 * (DSML: tool messages, merged by the encoder into the next user turn in call order), repeat until
 * a final answer, the step limit, the token budget or cancellation.
 *
 * The model is a struct of callbacks, so the daemon can plug in the local engine (render with
 * inf_dsml_encode, decode, detokenize) or the remote backend (agent_openai_chat with the messages
 * as they are). Messages are cJSON in the shape of the DSML vectors (role, content,
 * reasoning_content, tool_calls [{id, type, function: {name, arguments}}], tool_call_id).
 *
 * Exact replay: the loop keeps the prompt text the model sees, and extends it after every step
 * with the raw text the model emitted (byte for byte, plus the end-of-sentence token if the model
 * stopped without one) followed by the encoder's rendering of what came after (tool results, the
 * next "<｜Assistant｜>"). A local engine that keeps the decoded tokens' state therefore never
 * re-prefills history: prompt(k+1) always starts with prompt(k) + raw(k). When a completion is not
 * in the encoder's canonical form (JSON spacing in string="false" values, a malformed reply), the
 * canonical rendering of the messages differs from that prompt: replay_mismatch counts those steps
 * (a backend that re-renders the messages — the remote API — would re-read the turn from there). */
#ifndef AGENT_LOOP_H
#define AGENT_LOOP_H

#include <cjson/cJSON.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "dsml.h"
#include "err.h"
#include "tokenizer.h"
#include "tools.h"

/* The exact prompt text and the byte ranges of it that came from messages (file text, tool
 * results, user content) rather than from the template or the model: tokenize with
 * inf_tokenizer_encode_spans(text, len, spans, nspans) so that a file spelling "<｜User｜>" stays
 * text and cannot inject a turn. */
struct agent_prompt {
    char *text;
    size_t len;
    struct inf_text_span *spans;
    size_t nspans;
};

void agent_prompt_free(struct agent_prompt *p);

struct agent_model_usage {
    size_t prompt_tokens;     /* 0 when unknown */
    size_t completion_tokens; /* 0 when unknown: the loop then estimates bytes / 4 */
};

/* Stream a piece of completion text; returns non-zero when the loop wants the model to stop
 * (cancellation): the model then returns CTX_ECANCELED. */
typedef int (*agent_emit_fn)(void *emit_ud, const char *text, size_t len);

struct agent_model {
    void *ud;
    /* Complete the conversation in `mode`: `messages` (with `tools` declared; the first message
     * is the system message) for backends that take messages, or `prompt`, the exact DSML text of
     * the conversation (with its literal spans) ending with "<｜Assistant｜>" + "</think>" or "<think>", for engines that
     * take text (everything before it was either rendered from the same messages or emitted by the
     * model itself). Stream the raw completion text (DSML: reasoning, "</think>", content,
     * tool-call blocks, end-of-sentence) through emit, in any pieces. Returns 0, or a negative
     * CTX_E* code (the loop stops with stop == "error" and that message). */
    int (*complete)(void *ud, const cJSON *messages, const cJSON *tools,
                    const struct agent_prompt *prompt, enum inf_dsml_mode mode, agent_emit_fn emit,
                    void *emit_ud, struct agent_model_usage *usage, struct ctx_err *e);
};

enum agent_event_kind {
    AGENT_EV_REASONING = 0, /* text: a piece of reasoning */
    AGENT_EV_CONTENT,       /* text: a piece of the visible answer */
    AGENT_EV_TOOL_CALL,     /* tool, arguments (JSON object text): about to run */
    AGENT_EV_TOOL_RESULT,   /* tool, text, is_error, changed */
    AGENT_EV_MALFORMED,     /* text: the parser's message handed back to the model */
    AGENT_EV_STEP,          /* a new model step begins (step) */
};

struct agent_event {
    enum agent_event_kind kind;
    int step;
    const char *text;
    size_t len;
    const char *tool;
    const char *arguments;
    const char *call_id;
    bool is_error, changed;
};

struct agent_loop_opts {
    enum inf_dsml_mode mode;
    int max_steps;              /* model completions; 0: 25 */
    size_t token_budget;        /* completion tokens over all steps; 0: unlimited */
    const atomic_int *cancel;   /* non-zero: stop as soon as possible; may be NULL */
    void (*on_event)(void *ud, const struct agent_event *ev);
    void *ud;
    /* Continuing a conversation (a follow-up question): the previous run's r->prompt and how many
     * of `messages` it covered. The messages after those (the new user turn) are rendered by the
     * encoder and appended to it, so the engine's state for the earlier transcript stays valid
     * byte for byte. NULL: the prompt is the encoder's rendering of all messages. */
    const struct agent_prompt *resume;
    size_t resume_messages;
};

struct agent_loop_result {
    const char *stop;           /* "final", "step_limit", "token_budget", "cancelled", "error" */
    char *final_text;           /* the final answer's content (malloc'd; "" if none) */
    char *final_reasoning;
    int steps;
    size_t tool_calls, malformed;
    size_t completion_tokens, prompt_tokens;
    cJSON *raw;                 /* the raw completion of every step, in order (strings) */
    struct agent_prompt prompt; /* the exact transcript: the last prompt + the last completion */
    size_t replay_checked;      /* completions appended to the prompt */
    size_t replay_mismatch;     /* ... whose canonical rendering differs from the raw text */
    size_t replay_rerendered;   /* steps where the encoder broke the prefix property (then the
                                   prompt restarts from the canonical rendering; 0 in tests) */
    struct ctx_err error;       /* stop == "error": what happened */
};

/* Run the loop on `messages` (a cJSON array, at least [system, user]; assistant and tool
 * messages are appended to it in place, so the caller keeps the transcript). Returns 0 whenever
 * the loop ended in an orderly way (see r->stop, including "error" for a failing model), or a
 * negative code for bad arguments and out-of-memory. */
int agent_loop_run(struct agent_tools *tools, const struct agent_model *model, cJSON *messages,
                   const struct agent_loop_opts *o, struct agent_loop_result *r, struct ctx_err *e);
/* Always call it after agent_loop_run, whatever it returned. */
void agent_loop_result_free(struct agent_loop_result *r);

/* Render `messages` with the tool schemas as the loop does (DSML encoder, drop_thinking off
 * because tools are declared). For engines and for tests. */
int agent_loop_render(const cJSON *messages, const cJSON *tools, enum inf_dsml_mode mode,
                      char **prompt, size_t *len, struct ctx_err *e);
/* The same with the literal spans. */
int agent_loop_render_prompt(const cJSON *messages, const cJSON *tools, enum inf_dsml_mode mode,
                             struct agent_prompt *out, struct ctx_err *e);

/* The exact transcript of a stored conversation, to continue it (opts.resume, resume_messages =
 * the number of messages): the encoder's rendering of `messages`, except that each assistant
 * message whose text the model emitted is known (`raws`: an array parallel to messages, a string
 * for such assistant messages, null elsewhere) appears as that text byte for byte (+ the
 * end-of-sentence token when it lacked one), as the loop built the prompt when it ran. *exact is
 * false when the encoder's renderings do not nest (not expected with tools declared): then *out
 * is the canonical rendering. */
int agent_loop_replay_prompt(const cJSON *messages, const cJSON *raws, const cJSON *tools,
                             enum inf_dsml_mode mode, struct agent_prompt *out, bool *exact,
                             struct ctx_err *e);

#endif
