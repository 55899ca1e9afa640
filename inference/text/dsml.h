/* DeepSeek V4 chat format (DSML): the prompt encoder and a streaming parser of completions.
 * Both follow DeepSeek's encoding_dsv4.py byte for byte on valid input (spec §7.2, vectors in
 * tests/fixtures/dsml/); the parser additionally turns every malformed completion into a
 * structured error instead of an exception or a silently dropped call. */
#ifndef INF_DSML_H
#define INF_DSML_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>

#include "err.h"
#include "tokenizer.h"

enum inf_dsml_mode { INF_DSML_CHAT = 0, INF_DSML_THINKING = 1 };
enum inf_dsml_effort { INF_DSML_EFFORT_NONE = 0, INF_DSML_EFFORT_HIGH, INF_DSML_EFFORT_MAX };

/* The fixed strings of the format. */
#define INF_DSML_BOS "<｜begin▁of▁sentence｜>"
#define INF_DSML_EOS "<｜end▁of▁sentence｜>"
#define INF_DSML_THINK_START "<think>"
#define INF_DSML_THINK_END "</think>"
#define INF_DSML_TOKEN "｜DSML｜"
#define INF_DSML_USER "<｜User｜>"
#define INF_DSML_ASSISTANT "<｜Assistant｜>"
#define INF_DSML_LATEST_REMINDER "<｜latest_reminder｜>"

/* ---- encoder ---------------------------------------------------------------------------- */

struct inf_dsml_opts {
    enum inf_dsml_mode mode;
    enum inf_dsml_effort effort; /* MAX adds the fixed preamble (thinking mode only) */
    bool drop_thinking;          /* the reference's default is true; switched off by any tools */
    bool no_bos;                 /* leave out the leading BOS (continuing an earlier prompt) */
};

/* Messages (a cJSON array in the OpenAI shape the vectors use: role system/user/assistant/tool/
 * latest_reminder/developer, content, reasoning_content, tools, tool_calls, tool_call_id, task,
 * response_format, wo_eos) to the prompt text (malloc'd, NUL-terminated). `tools`, if not NULL,
 * is attached to the first message when it is a system message (or to a new empty system
 * message put in front), the way a request's top-level tools reach the template. Invalid input
 * (unknown role or task, developer without content, arguments that are JSON but not an object)
 * is CTX_EINVAL naming messages[i].field. */
int inf_dsml_encode(const cJSON *messages, const cJSON *tools, const struct inf_dsml_opts *o,
                    char **prompt, size_t *len, struct ctx_err *e);

/* The same prompt, plus the byte ranges of it that came from the messages (content, reasoning,
 * tool results, call names and arguments, tool schemas, response formats) rather than from the
 * template: sorted, non-overlapping, malloc'd (caller frees). Give them to
 * inf_tokenizer_encode_spans so that text inside them cannot turn into control tokens. */
int inf_dsml_encode_spans(const cJSON *messages, const cJSON *tools, const struct inf_dsml_opts *o,
                          char **prompt, size_t *len, struct inf_text_span **spans, size_t *n_spans,
                          struct ctx_err *e);

/* A request in the vectors' shape: a messages array, or an object with "messages" and optional
 * "tools", "thinking_mode" ("thinking"|"chat"), "reasoning_effort" ("max"|"high"|null),
 * "drop_thinking". Fields present in the request override *defaults. */
int inf_dsml_encode_request(const cJSON *request, const struct inf_dsml_opts *defaults,
                            char **prompt, size_t *len, struct ctx_err *e);
int inf_dsml_encode_request_spans(const cJSON *request, const struct inf_dsml_opts *defaults,
                                  char **prompt, size_t *len, struct inf_text_span **spans,
                                  size_t *n_spans, struct ctx_err *e);

/* ---- streaming parser ------------------------------------------------------------------- */

enum inf_dsml_event_type {
    INF_DSML_EV_REASONING_DELTA, /* text: a piece of reasoning (thinking mode, before </think>) */
    INF_DSML_EV_CONTENT_DELTA,   /* text: a piece of the visible answer */
    INF_DSML_EV_CALL_BEGIN,      /* name: the tool's name; call_index */
    INF_DSML_EV_PARAM_BEGIN,     /* name: the parameter's name; is_string */
    INF_DSML_EV_VALUE_DELTA,     /* text: a piece of the parameter's raw value */
    INF_DSML_EV_PARAM_END,       /* name, is_string, text: the whole raw value */
    INF_DSML_EV_CALL_END,        /* name; text: the call's arguments as a JSON object string */
    INF_DSML_EV_DONE,            /* the completion ended well; the message is final */
    INF_DSML_EV_ERROR,           /* error: what went wrong; no event follows */
};

enum inf_dsml_error_kind {
    INF_DSML_ERR_NONE = 0,
    INF_DSML_ERR_MISSING_THINK_END, /* thinking mode: no </think> before the answer or the calls */
    INF_DSML_ERR_UNCLOSED,          /* the text ended inside reasoning, content or a call block */
    INF_DSML_ERR_FORMAT,            /* tags out of order, bad attribute syntax, stray text */
    INF_DSML_ERR_BAD_JSON,          /* a string="false" value is not valid JSON */
    INF_DSML_ERR_DUPLICATE_PARAM,   /* the same parameter twice in one invoke */
    INF_DSML_ERR_UNKNOWN_TOOL,      /* an invoke names a tool that was not declared */
    INF_DSML_ERR_SPECIAL_TOKEN,     /* a special token inside content or reasoning */
    INF_DSML_ERR_TRAILING,          /* text after the end of sentence or after the calls */
};

/* A short stable name for a kind ("unclosed", "bad_json", ...), for logs and protocols. */
const char *inf_dsml_error_kind_name(enum inf_dsml_error_kind kind);

struct inf_dsml_error {
    enum inf_dsml_error_kind kind;
    size_t offset;      /* byte offset in the completion text where it was detected */
    int call_index;     /* -1 outside a call */
    char tool[128];     /* the call's tool name, if known */
    char param[128];    /* the parameter's name, if known */
    char message[512];  /* one line, for logs and for handing back to the model */
};

struct inf_dsml_event {
    enum inf_dsml_event_type type;
    const char *text; /* not NUL-terminated; valid during the callback only */
    size_t len;
    const char *name; /* NUL-terminated; valid during the callback only */
    bool is_string;
    int call_index;
    const struct inf_dsml_error *error;
};

/* Return 0 to go on, anything else to stop: feed() then returns CTX_ECANCELED. */
typedef int (*inf_dsml_callback)(void *ud, const struct inf_dsml_event *ev);

struct inf_dsml_parser_opts {
    enum inf_dsml_mode mode;
    /* Optional: the declared tools (OpenAI shape, or objects with "name"); when set, an invoke of
     * any other name is INF_DSML_ERR_UNKNOWN_TOOL. Copied at creation. */
    const cJSON *tools;
};

struct inf_dsml_parser;
struct inf_dsml_parser *inf_dsml_parser_new(const struct inf_dsml_parser_opts *o,
                                            inf_dsml_callback cb, void *ud);
void inf_dsml_parser_free(struct inf_dsml_parser *p);

/* Push decoded completion text in any pieces (even split inside a UTF-8 character or a tag).
 * Events fire as soon as they are certain; text that might begin a tag is held back until it is
 * known not to. Returns 0, CTX_EFORMAT once the completion is malformed (the error event has
 * fired and *e has the message; later calls return the same), or CTX_ECANCELED. */
int inf_dsml_parser_feed(struct inf_dsml_parser *p, const char *text, size_t len, struct ctx_err *e);

/* End of the text (the generation stopped). Emits DONE, or the error: a completion must end with
 * the end-of-sentence token, except right after a tool-call block where it is optional. */
int inf_dsml_parser_finish(struct inf_dsml_parser *p, struct ctx_err *e);

/* The error, or NULL if none so far. */
const struct inf_dsml_error *inf_dsml_parser_error(const struct inf_dsml_parser *p);

/* The message so far as parse.json writes it: {role, content, reasoning_content, tool_calls:
 * [{type: "function", function: {name, arguments}}]} (a new cJSON tree; NULL when out of memory). */
cJSON *inf_dsml_parser_message(const struct inf_dsml_parser *p);

/* One shot: parse a whole completion. On success *message is the final message; on a malformed
 * completion returns CTX_EFORMAT with *err filled (err may be NULL). */
int inf_dsml_parse(const char *text, size_t len, const struct inf_dsml_parser_opts *o,
                   cJSON **message, struct inf_dsml_error *err, struct ctx_err *e);

#endif
