/* A push-based parser for Server-Sent Events (text/event-stream, WHATWG HTML §9.2), as remote
 * chat-completion endpoints stream them. Bytes arrive in whatever pieces the transport hands over;
 * the parser keeps the partial line and the partial event between calls, so the events it reports
 * do not depend on where the stream was split. */
#ifndef AGENT_SSE_H
#define AGENT_SSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* One dispatched event. `data` is the event's data lines joined by '\n' (the final newline
 * removed), NUL-terminated; `event` is the "event:" field or "" (the default "message" type).
 * `done` is set when the data is exactly "[DONE]", the OpenAI end-of-stream sentinel. The
 * pointers are valid only during the callback. `offset` is the stream byte offset of the first
 * line of the event, for error messages. */
struct agent_sse_event {
    const char *event;
    const char *data;
    size_t data_len;
    const char *id;
    bool done;
    uint64_t offset;
};

/* Default bound on one event (data plus any single line), so that a hostile or broken server
 * cannot make the client buffer without limit. */
#define AGENT_SSE_DEFAULT_MAX_EVENT ((size_t)8 << 20)

struct agent_sse {
    size_t max_event; /* bound on one line and on one event's data */
    char *line;       /* the current, not yet terminated line */
    size_t line_len, line_cap;
    char *data; /* the current event's data so far (each line followed by '\n') */
    size_t data_len, data_cap;
    char event[64];   /* event type; longer names are kept truncated (they are never ours) */
    char id[128];     /* last event id, truncated likewise */
    bool cr_pending;  /* the previous piece ended with CR: a leading LF belongs to it */
    bool bom_checked; /* a UTF-8 BOM is skipped only at the very start */
    uint64_t offset;  /* bytes consumed so far */
    uint64_t event_offset;
    uint64_t events; /* events dispatched so far */
    int failed;      /* a sticky error: once the stream is broken further input is refused */
};

/* max_event 0 means AGENT_SSE_DEFAULT_MAX_EVENT. */
void agent_sse_init(struct agent_sse *p, size_t max_event);
void agent_sse_free(struct agent_sse *p);

/* Consume len bytes; for every complete event call on_event. A non-zero return from on_event stops
 * parsing and is returned as is (the callback should fill e). Errors: CTX_ERANGE when a line or an
 * event exceeds max_event (the message gives the byte offset and the limit), CTX_ENOMEM. After an
 * error the parser refuses further input with the same code. */
int agent_sse_feed(struct agent_sse *p, const char *buf, size_t len,
                   int (*on_event)(void *ud, const struct agent_sse_event *ev, struct ctx_err *e),
                   void *ud, struct ctx_err *e);

/* The stream ended. Per the SSE rules an event without its terminating blank line is dropped,
 * but a client usually wants to know: returns CTX_EPROTO if an unterminated line or an undispatched
 * event remains (the message says how many bytes and where), otherwise 0. */
int agent_sse_finish(struct agent_sse *p, struct ctx_err *e);

#endif
