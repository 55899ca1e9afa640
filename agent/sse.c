/* SSE parsing per WHATWG HTML §9.2.6 ("Interpreting an event stream"): lines end in CRLF, LF or
 * CR; a line starting with ':' is a comment; "field: value" drops one space after the colon; a
 * blank line dispatches the event when its data buffer is not empty. */
#include "sse.h"

#include <stdlib.h>
#include <string.h>

void agent_sse_init(struct agent_sse *p, size_t max_event)
{
    memset(p, 0, sizeof *p);
    p->max_event = max_event ? max_event : AGENT_SSE_DEFAULT_MAX_EVENT;
}

void agent_sse_free(struct agent_sse *p)
{
    free(p->line);
    free(p->data);
    p->line = p->data = NULL;
    p->line_len = p->line_cap = p->data_len = p->data_cap = 0;
}

static int fail(struct agent_sse *p, int code)
{
    p->failed = code;
    return code;
}

/* Grow *buf so that it holds need bytes plus a NUL. */
static int reserve(char **buf, size_t *cap, size_t need)
{
    if (need + 1 <= *cap)
        return 0;
    size_t ncap = *cap ? *cap : 256;
    while (ncap < need + 1)
        ncap *= 2;
    char *nb = realloc(*buf, ncap);
    if (!nb)
        return CTX_ENOMEM;
    *buf = nb;
    *cap = ncap;
    return 0;
}

static void copy_field(char *dst, size_t cap, const char *v, size_t n)
{
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, v, n);
    dst[n] = '\0';
}

static int dispatch(struct agent_sse *p,
                    int (*on_event)(void *, const struct agent_sse_event *, struct ctx_err *),
                    void *ud, struct ctx_err *e)
{
    if (p->data_len == 0) {
        p->event[0] = '\0';
        return 0;
    }
    size_t n = p->data_len - 1; /* every data line left a '\n' behind: drop the last */
    p->data[n] = '\0';
    struct agent_sse_event ev = {
        .event = p->event,
        .data = p->data,
        .data_len = n,
        .id = p->id,
        .done = n == 6 && memcmp(p->data, "[DONE]", 6) == 0,
        .offset = p->event_offset,
    };
    p->events++;
    int rc = on_event ? on_event(ud, &ev, e) : 0;
    p->data_len = 0;
    p->event[0] = '\0';
    return rc;
}

/* One complete line (without its terminator) that started at stream offset `at`. */
static int process_line(struct agent_sse *p, const char *s, size_t n, uint64_t at,
                        int (*on_event)(void *, const struct agent_sse_event *, struct ctx_err *),
                        void *ud, struct ctx_err *e)
{
    if (n == 0)
        return dispatch(p, on_event, ud, e);
    if (s[0] == ':')
        return 0; /* comment: servers send these as keep-alives */
    const char *colon = memchr(s, ':', n);
    size_t flen = colon ? (size_t)(colon - s) : n;
    const char *v = colon ? colon + 1 : s + n;
    size_t vlen = (size_t)(s + n - v);
    if (vlen > 0 && v[0] == ' ') {
        v++;
        vlen--;
    }
    if (flen == 4 && memcmp(s, "data", 4) == 0) {
        if (p->data_len == 0)
            p->event_offset = at;
        if (p->data_len + vlen + 1 > p->max_event) {
            ctx_err_set(
                e, CTX_ERANGE,
                "SSE event starting at byte offset %llu is larger than the limit of %zu bytes",
                (unsigned long long)p->event_offset, p->max_event);
            return fail(p, CTX_ERANGE);
        }
        if (reserve(&p->data, &p->data_cap, p->data_len + vlen + 1)) {
            ctx_err_set(e, CTX_ENOMEM, "SSE event of %zu bytes: out of memory",
                        p->data_len + vlen + 1);
            return fail(p, CTX_ENOMEM);
        }
        memcpy(p->data + p->data_len, v, vlen);
        p->data_len += vlen;
        p->data[p->data_len++] = '\n';
    } else if (flen == 5 && memcmp(s, "event", 5) == 0) {
        copy_field(p->event, sizeof p->event, v, vlen);
    } else if (flen == 2 && memcmp(s, "id", 2) == 0) {
        if (!memchr(v, '\0', vlen))
            copy_field(p->id, sizeof p->id, v, vlen);
    }
    /* "retry" and unknown fields are ignored, as the specification says */
    return 0;
}

int agent_sse_feed(struct agent_sse *p, const char *buf, size_t len,
                   int (*on_event)(void *ud, const struct agent_sse_event *ev, struct ctx_err *e),
                   void *ud, struct ctx_err *e)
{
    if (p->failed)
        return ctx_err_set(e, p->failed, "SSE stream already failed at byte offset %llu",
                           (unsigned long long)p->offset);
    const char *s = buf, *end = buf + len;
    if (!p->bom_checked && s < end) {
        /* the BOM may itself arrive split: wait until three bytes (or a mismatch) are seen */
        static const char bom[3] = {'\xEF', '\xBB', '\xBF'};
        size_t have = p->line_len;
        while (have < 3 && s < end && *s == bom[have]) {
            if (reserve(&p->line, &p->line_cap, have + 1))
                return fail(p, ctx_err_set(e, CTX_ENOMEM, "SSE line: out of memory"));
            p->line[have++] = *s++;
            p->offset++;
        }
        if (have == 3) {
            p->line_len = 0;
            p->bom_checked = true;
        } else if (s == end) {
            p->line_len = have; /* a strict prefix of the BOM so far */
            return 0;
        } else {
            p->line_len = have; /* not a BOM: those bytes start the first line */
            p->bom_checked = true;
        }
    }
    if (p->cr_pending && s < end) {
        p->cr_pending = false;
        if (*s == '\n') {
            s++;
            p->offset++;
        }
    }
    while (s < end) {
        const char *nl = s;
        while (nl < end && *nl != '\n' && *nl != '\r')
            nl++;
        size_t piece = (size_t)(nl - s);
        if (nl == end) {
            if (p->line_len + piece > p->max_event) {
                ctx_err_set(
                    e, CTX_ERANGE,
                    "SSE line starting at byte offset %llu is longer than the limit of %zu bytes",
                    (unsigned long long)(p->offset - p->line_len), p->max_event);
                return fail(p, CTX_ERANGE);
            }
            if (reserve(&p->line, &p->line_cap, p->line_len + piece))
                return fail(p, ctx_err_set(e, CTX_ENOMEM, "SSE line: out of memory"));
            memcpy(p->line + p->line_len, s, piece);
            p->line_len += piece;
            p->offset += piece;
            return 0;
        }
        const char *ls = s;
        size_t ln = piece;
        uint64_t at = p->offset - p->line_len;
        if (p->line_len) {
            if (p->line_len + piece > p->max_event) {
                ctx_err_set(
                    e, CTX_ERANGE,
                    "SSE line starting at byte offset %llu is longer than the limit of %zu bytes",
                    (unsigned long long)at, p->max_event);
                return fail(p, CTX_ERANGE);
            }
            if (reserve(&p->line, &p->line_cap, p->line_len + piece))
                return fail(p, ctx_err_set(e, CTX_ENOMEM, "SSE line: out of memory"));
            memcpy(p->line + p->line_len, s, piece);
            ls = p->line;
            ln = p->line_len + piece;
        } else if (piece > p->max_event) {
            ctx_err_set(
                e, CTX_ERANGE,
                "SSE line starting at byte offset %llu is longer than the limit of %zu bytes",
                (unsigned long long)at, p->max_event);
            return fail(p, CTX_ERANGE);
        }
        p->offset += piece + 1;
        bool cr = *nl == '\r';
        s = nl + 1;
        if (cr) {
            if (s < end) {
                if (*s == '\n') {
                    s++;
                    p->offset++;
                }
            } else {
                p->cr_pending = true;
            }
        }
        int rc = process_line(p, ls, ln, at, on_event, ud, e);
        p->line_len = 0;
        if (rc) {
            if (!p->failed)
                p->failed = rc;
            return rc;
        }
    }
    return 0;
}

int agent_sse_finish(struct agent_sse *p, struct ctx_err *e)
{
    if (p->failed)
        return ctx_err_set(e, p->failed, "SSE stream already failed at byte offset %llu",
                           (unsigned long long)p->offset);
    if (p->line_len)
        return ctx_err_set(
            e, CTX_EPROTO,
            "SSE stream ended inside a line: %zu bytes from offset %llu have no line end",
            p->line_len, (unsigned long long)(p->offset - p->line_len));
    if (p->data_len)
        return ctx_err_set(e, CTX_EPROTO,
                           "SSE stream ended inside an event: %zu data bytes from offset %llu "
                           "were never closed by a blank line",
                           p->data_len, (unsigned long long)p->event_offset);
    return 0;
}
