/* A remote model backend: a streaming client for OpenAI-compatible chat completions
 * (POST {url}/chat/completions with "stream": true), shaped for DeepSeek's API: reasoning arrives
 * as `reasoning_content` deltas, and an assistant turn that made tool calls must carry its
 * reasoning_content back in every later request (the API answers 400 otherwise).
 *
 * Messages use the DSML vectors' shape (tests/fixtures/dsml): {role, content, reasoning_content,
 * tool_calls: [{id, type: "function", function: {name, arguments}}]}, tool results as
 * {role: "tool", tool_call_id, content}. The assembled answer comes back in the same shape.
 *
 * Three layers, usable on their own: the request builder (pure), the stream assembler (turns the
 * JSON payloads of the event stream into events and a final message; no I/O, fuzzed), and the
 * HTTP client (libcurl) that joins them with agent/sse.h. */
#ifndef AGENT_OPENAI_H
#define AGENT_OPENAI_H

#include <cjson/cJSON.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* Which earlier assistant turns send their reasoning_content back. */
enum agent_openai_reasoning_back {
    AGENT_OPENAI_REASONING_TOOL_TURNS = 0, /* DeepSeek's rule: turns that made tool calls */
    AGENT_OPENAI_REASONING_NEVER,          /* servers that reject unknown message fields */
    AGENT_OPENAI_REASONING_ALWAYS,
};

struct agent_openai_config {
    /* A base URL ("https://api.deepseek.com", "http://127.0.0.1:8000/v1"), to which
     * "/chat/completions" is appended, or a URL that already ends in "/chat/completions". */
    const char *url;
    const char *model;
    /* Name of the environment variable that holds the API key (read once, by agent_openai_new;
     * never logged or put into messages). NULL: no Authorization header, as for local servers. */
    const char *api_key_env;
    enum agent_openai_reasoning_back reasoning_back;
    /* DeepSeek's {"thinking": {"type": X}}: "enabled" or "disabled"; NULL omits it */
    const char *thinking;
    const char *reasoning_effort; /* "high", "max", ...; NULL omits */
    int64_t max_tokens;           /* 0 omits */
    /* Members copied into every request (temperature, tool_choice, ...); may be NULL */
    const cJSON *extra_body;
    long connect_timeout_ms; /* 0: 10 000 */
    long idle_timeout_ms;    /* fail when the server sends nothing for this long; 0: 300 000 */
    size_t max_event_bytes;  /* bound on one SSE event and on a non-streamed body; 0: 8 MiB */
};

enum agent_openai_event_kind {
    AGENT_OPENAI_EV_REASONING,  /* text: a reasoning_content delta */
    AGENT_OPENAI_EV_CONTENT,    /* text: a content delta */
    AGENT_OPENAI_EV_TOOL_BEGIN, /* index, id, name */
    AGENT_OPENAI_EV_TOOL_ARGS,  /* index, text: an arguments delta */
    AGENT_OPENAI_EV_TOOL_END,   /* index, id, name, text: the complete arguments */
    AGENT_OPENAI_EV_DONE,       /* finish_reason, usage */
};

struct agent_openai_usage {
    bool reported; /* the server sent a usage object */
    int64_t prompt_tokens;
    int64_t cached_tokens; /* prompt tokens served from the server's cache; -1: not reported */
    int64_t completion_tokens;
    int64_t reasoning_tokens; /* part of completion_tokens; -1: not reported */
    double ttft_ms;  /* request start to the first reasoning/content/tool delta; -1: none */
    double total_ms; /* request start to the end of the stream */
};

struct agent_openai_event {
    enum agent_openai_event_kind kind;
    const char *text; /* NUL-terminated */
    size_t len;
    int index; /* the tool call's position in the final message's tool_calls */
    const char *id;
    const char *name;
    const char *finish_reason;
    const struct agent_openai_usage *usage;
};

/* Event callbacks (`on_event` below) return 0 to go on, or a negative CTX_* code (after filling
 * e) to abort the request with it. */

/* ---- request builder ---- */

/* The JSON body for one streaming request. `tools` (OpenAI tool objects or bare function objects)
 * may be NULL, in which case the tools declared on a system message (DSML shape) are used. Roles
 * "latest_reminder" and "developer" are sent as "user" (as the DSML template renders them); tool
 * calls without ids get "call_<message>_<call>" and tool results without tool_call_id answer the
 * preceding calls in order. Errors name the message and field at fault (CTX_EINVAL). */
cJSON *agent_openai_request_body(const struct agent_openai_config *cfg, const cJSON *messages,
                                 const cJSON *tools, struct ctx_err *e);

/* ---- stream assembler ---- */

struct agent_openai_stream;

/* t0_ns: CLOCK_MONOTONIC time the request started (for ttft); 0 for "now". */
struct agent_openai_stream *agent_openai_stream_new(
    int (*on_event)(void *ud, const struct agent_openai_event *ev, struct ctx_err *e), void *ud,
    uint64_t t0_ns);
void agent_openai_stream_free(struct agent_openai_stream *s);

/* One "data:" payload of the stream (a chat.completion.chunk), or a whole non-streamed
 * chat.completion. `offset` is its byte offset in the stream, for error messages. Errors:
 * CTX_EPROTO (not JSON, wrong field types, an error object from the server), CTX_ERANGE (too many
 * tool calls), or what the event callback returned. */
int agent_openai_stream_data(struct agent_openai_stream *s, const char *json, size_t len,
                             uint64_t offset, struct ctx_err *e);
/* The "[DONE]" sentinel: later payloads are ignored. */
void agent_openai_stream_done(struct agent_openai_stream *s);
bool agent_openai_stream_saw_done(const struct agent_openai_stream *s);

/* The stream ended: emits TOOL_END for every call and DONE. CTX_EPROTO when the stream stopped
 * before a finish_reason or "[DONE]", or a tool call never got a name. Call once. */
int agent_openai_stream_end(struct agent_openai_stream *s, struct ctx_err *e);

/* The assembled assistant message {role, content, reasoning_content, tool_calls} (new object). */
cJSON *agent_openai_stream_message(const struct agent_openai_stream *s);
const char *agent_openai_stream_finish_reason(const struct agent_openai_stream *s);
const struct agent_openai_usage *agent_openai_stream_usage(const struct agent_openai_stream *s);

/* ---- error bodies ---- */

/* The human message in an HTTP error body ({"error": {"message", "type", "code"}}, {"error":
 * "..."},
 * {"message": ...}, {"detail": ...}, or the text itself), written to out (always NUL-terminated).
 */
void agent_openai_error_text(const char *body, size_t len, char *out, size_t cap);

/* The CTX_* code for an HTTP status: 400/422 EINVAL, 401/403 EDENIED, 404 ENOTFOUND,
 * 408/504 ETIMEDOUT, 413 ERANGE, 429/503 EBUSY, other 5xx EIO, anything else EPROTO. */
int agent_openai_status_code(long status);

/* ---- HTTP client ---- */

struct agent_openai;

/* Copies cfg. Fails (CTX_EINVAL) on a missing url/model, a URL that is not http(s), or an
 * api_key_env that is unset or empty. */
struct agent_openai *agent_openai_new(const struct agent_openai_config *cfg, struct ctx_err *e);
void agent_openai_free(struct agent_openai *c);

/* The URL requests go to (without any query string). */
const char *agent_openai_url(const struct agent_openai *c);

struct agent_openai_result {
    cJSON *message; /* the assistant message; NULL on error */
    char finish_reason[32];
    struct agent_openai_usage usage;
    long http_status;   /* 0 when no response arrived */
    long retry_after_s; /* an HTTP error's Retry-After in seconds (429, 503); -1 when absent */
};

/* One streaming request. Events reach on_event (may be NULL) as they arrive, on the calling
 * thread. `cancel` (may be NULL) is polled at least every 50 ms and before every event: setting it
 * ends the request with CTX_ECANCELED. Errors: CTX_ETIMEDOUT (connect or idle timeout), CTX_EIO
 * (connection failures), the code of agent_openai_status_code for HTTP errors (the message gives
 * the status and the server's own message), CTX_EPROTO for a malformed stream (the message says
 * what and at which byte offset). One request at a time per client; connections are reused. */
int agent_openai_chat(struct agent_openai *c, const cJSON *messages, const cJSON *tools,
                      int (*on_event)(void *ud, const struct agent_openai_event *ev,
                                      struct ctx_err *e),
                      void *ud, const atomic_int *cancel, struct agent_openai_result *out,
                      struct ctx_err *e);

void agent_openai_result_free(struct agent_openai_result *r);

#endif
