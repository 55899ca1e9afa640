#include "lsp_framing.h"

#include <ctype.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void lsp_framer_init(struct lsp_framer *f, size_t max_header, size_t max_body)
{
    memset(f, 0, sizeof *f);
    f->max_header = max_header ? max_header : LSP_MAX_HEADER_DEFAULT;
    f->max_body = max_body ? max_body : LSP_MAX_BODY_DEFAULT;
}

void lsp_framer_free(struct lsp_framer *f)
{
    free(f->buf);
    f->buf = NULL;
    f->len = f->cap = 0;
}

size_t lsp_frame_header(char *buf, size_t cap, size_t len)
{
    int n = snprintf(buf, cap, "Content-Length: %zu\r\n\r\n", len);
    return n < 0 ? 0 : (size_t)n;
}

static int reserve(struct lsp_framer *f, size_t need)
{
    if (need <= f->cap)
        return 0;
    size_t cap = f->cap ? f->cap : 256;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    char *b = realloc(f->buf, cap);
    if (!b)
        return CTX_ENOMEM;
    f->buf = b;
    f->cap = cap;
    return 0;
}

static void reset_block(struct lsp_framer *f)
{
    f->block_bytes = 0;
    f->block_lines = 0;
    f->has_len = false;
    f->body_len = 0;
    f->block_code = 0;
    f->block_msg[0] = 0;
    f->block_start = f->pos;
}

static int report(const struct lsp_framer_cb *cb, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int report(const struct lsp_framer_cb *cb, int code, const char *fmt, ...)
{
    if (!cb->on_error)
        return 0;
    struct ctx_err e = {.code = code};
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e.msg, sizeof e.msg, fmt, ap);
    va_end(ap);
    return cb->on_error(cb->ud, &e);
}

/* Garbage is counted, not reported line by line, so that a flood of junk costs one message. */
static void add_garbage(struct lsp_framer *f, unsigned long long at, size_t n)
{
    if (!f->garbage_bytes)
        f->garbage_start = at;
    f->garbage_bytes += n;
}

static int flush_garbage(struct lsp_framer *f, const struct lsp_framer_cb *cb)
{
    if (!f->garbage_bytes)
        return 0;
    size_t n = f->garbage_bytes;
    f->garbage_bytes = 0;
    return report(cb, CTX_EFORMAT, "skipped %zu bytes that are not an LSP header at stream offset %llu", n,
                  f->garbage_start);
}

static void block_fail(struct lsp_framer *f, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void block_fail(struct lsp_framer *f, int code, const char *fmt, ...)
{
    if (f->block_code)
        return; /* the first problem is the one worth naming */
    f->block_code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->block_msg, sizeof f->block_msg, fmt, ap);
    va_end(ap);
}

static bool is_token_char(unsigned char c)
{
    return c > 32 && c < 127 && !strchr("()<>@,;:\\\"/[]?={}", c);
}

static const char *trim(char *s, size_t *len)
{
    while (*len && (s[0] == ' ' || s[0] == '\t')) {
        s++;
        (*len)--;
    }
    while (*len && (s[*len - 1] == ' ' || s[*len - 1] == '\t'))
        (*len)--;
    s[*len] = 0;
    return s;
}

static void parse_length(struct lsp_framer *f, char *v, size_t vlen)
{
    if (f->block_code)
        return; /* the block is refused already */
    const char *s = trim(v, &vlen);
    if (!vlen) {
        block_fail(f, CTX_EFORMAT, "empty Content-Length");
        return;
    }
    unsigned long long n = 0;
    for (size_t i = 0; i < vlen; i++) {
        if (!isdigit((unsigned char)s[i])) {
            block_fail(f, CTX_EFORMAT, "Content-Length \"%.40s\" is not a decimal number", s);
            return;
        }
        if (n > (ULLONG_MAX - 9) / 10) {
            block_fail(f, CTX_ERANGE, "Content-Length \"%.40s\" overflows", s);
            return;
        }
        n = n * 10 + (unsigned)(s[i] - '0');
    }
    if (f->has_len && n != f->body_len) {
        /* which one is the body's length cannot be known: skip nothing, resynchronise on headers */
        block_fail(f, CTX_EFORMAT, "two different Content-Length headers (%zu and %llu)", f->body_len, n);
        f->has_len = false;
        return;
    }
    if (n > SIZE_MAX) {
        block_fail(f, CTX_ERANGE, "Content-Length %llu overflows", n);
        return;
    }
    f->has_len = true;
    f->body_len = (size_t)n;
}

/* Content-Type: application/vscode-jsonrpc; charset=utf-8. The spec allows only UTF-8 ("utf8" is
 * accepted for old clients); any other charset is refused rather than misread. */
static void parse_type(struct lsp_framer *f, char *v, size_t vlen)
{
    const char *s = trim(v, &vlen);
    const char *p = strchr(s, ';');
    while (p) {
        p++;
        while (*p == ' ' || *p == '\t')
            p++;
        const char *end = strchr(p, ';');
        size_t plen = end ? (size_t)(end - p) : strlen(p);
        if (plen >= 8 && strncasecmp(p, "charset=", 8) == 0) {
            const char *cs = p + 8;
            size_t cl = plen - 8;
            while (cl && (cs[cl - 1] == ' ' || cs[cl - 1] == '\t'))
                cl--;
            if (cl >= 2 && cs[0] == '"' && cs[cl - 1] == '"') {
                cs++;
                cl -= 2;
            }
            if (!((cl == 5 && strncasecmp(cs, "utf-8", 5) == 0) || (cl == 4 && strncasecmp(cs, "utf8", 4) == 0)))
                block_fail(f, CTX_EFORMAT, "unsupported charset \"%.*s\" (only utf-8)", (int)(cl > 40 ? 40 : cl), cs);
        }
        p = end;
    }
}

/* Where "content-length:" starts inside a garbage line, if anywhere (resynchronisation). */
static const char *find_header_start(const char *s, size_t len)
{
    static const char key[] = "content-length:";
    const size_t kl = sizeof key - 1;
    for (size_t i = 0; i + kl <= len; i++)
        if (strncasecmp(s + i, key, kl) == 0)
            return s + i;
    return NULL;
}

/* One complete header line (terminator stripped) in f->buf[0..len). Returns a callback's stop. */
static int header_line(struct lsp_framer *f, size_t len, size_t raw_len, const struct lsp_framer_cb *cb)
{
    char *line = f->buf;
    line[len] = 0;
    unsigned long long line_start = f->pos - raw_len, hdr_start = line_start;
    if (len == 0) {
        if (f->block_lines == 0) {
            reset_block(f); /* a stray blank line between messages: harmless, not reported */
            return 0;
        }
        int stop = flush_garbage(f, cb);
        if (stop)
            return stop;
        if (!f->block_code && !f->has_len)
            block_fail(f, CTX_EFORMAT, "header block without Content-Length");
        if (!f->block_code && f->body_len > f->max_body)
            block_fail(f, CTX_ERANGE, "message of %zu bytes is over the %zu-byte limit", f->body_len, f->max_body);
        if (f->block_code) {
            /* With a usable length the refused body is dropped whole, so the next message parses. */
            if (f->has_len)
                f->skip = f->body_len;
            int code = f->block_code;
            stop = report(cb, code, "%s (header at stream offset %llu)%s", f->block_msg, f->block_start,
                          f->has_len ? "; body skipped" : "");
            reset_block(f);
            return stop;
        }
        f->len = 0;
        if (f->body_len == 0) {
            /* an empty body is complete now, not when more input happens to arrive */
            reset_block(f);
            f->buf[0] = 0; /* buf holds at least the blank line just read */
            return cb->on_message ? cb->on_message(cb->ud, f->buf, 0) : 0;
        }
        f->in_body = true;
        return 0;
    }
    size_t name_len = 0;
    while (name_len < len && is_token_char((unsigned char)line[name_len]))
        name_len++;
    bool glued = name_len > 14 && name_len < len && line[name_len] == ':' &&
                 strncasecmp(line + name_len - 14, "content-length", 14) == 0;
    if (glued || name_len == 0 || name_len >= len || line[name_len] != ':') {
        /* Not a header: junk between messages (or a body sent without one), possibly glued to the
         * front of the next header. If a header starts later on this line, resynchronise there. */
        const char *h = glued ? line + name_len - 14 : find_header_start(line, len);
        size_t skipped = h ? (size_t)(h - line) : raw_len;
        if (f->block_lines)
            add_garbage(f, f->block_start, (size_t)(line_start - f->block_start));
        add_garbage(f, line_start, skipped);
        reset_block(f);
        if (!h)
            return 0;
        hdr_start = line_start + skipped;
        memmove(line, h, len - skipped + 1);
        len -= skipped;
        name_len = strlen("content-length");
    }
    int stop = flush_garbage(f, cb);
    if (f->block_lines == 0)
        f->block_start = hdr_start;
    f->block_lines++;
    char *value = line + name_len + 1;
    size_t vlen = len - name_len - 1;
    if (name_len == 14 && strncasecmp(line, "content-length", 14) == 0)
        parse_length(f, value, vlen);
    else if (name_len == 12 && strncasecmp(line, "content-type", 12) == 0)
        parse_type(f, value, vlen);
    /* other headers are allowed by the spec and ignored */
    return stop;
}

int lsp_framer_feed(struct lsp_framer *f, const char *data, size_t n, const struct lsp_framer_cb *cb)
{
    while (n) {
        if (f->skip) {
            size_t k = f->skip < n ? f->skip : n;
            f->skip -= k;
            f->pos += k;
            data += k;
            n -= k;
            if (!f->skip)
                reset_block(f);
            continue;
        }
        if (f->in_body) {
            size_t want = f->body_len - f->len;
            size_t k = want < n ? want : n;
            if (reserve(f, f->body_len + 1))
                return CTX_ENOMEM;
            memcpy(f->buf + f->len, data, k);
            f->len += k;
            f->pos += k;
            data += k;
            n -= k;
            if (f->len == f->body_len) {
                f->buf[f->len] = 0;
                size_t blen = f->len;
                f->in_body = false;
                f->len = 0;
                reset_block(f);
                int stop = cb->on_message ? cb->on_message(cb->ud, f->buf, blen) : 0;
                if (stop)
                    return 1;
                /* a large body's buffer is not kept for the small messages that follow */
                if (f->cap > ((size_t)1 << 20)) {
                    free(f->buf);
                    f->buf = NULL;
                    f->cap = 0;
                }
            }
            continue;
        }
        const char *nl = memchr(data, '\n', n);
        size_t k = nl ? (size_t)(nl - data) + 1 : n;
        if (f->dropping_line) {
            f->pos += k;
            data += k;
            n -= k;
            if (nl) {
                f->dropping_line = false;
                reset_block(f);
            }
            continue;
        }
        if (f->block_bytes + k > f->max_header) {
            size_t over = f->block_bytes + k;
            unsigned long long at = f->block_start;
            f->len = 0;
            f->pos += k;
            data += k;
            n -= k;
            f->dropping_line = !nl;
            reset_block(f);
            int stop = flush_garbage(f, cb);
            if (!stop)
                stop = report(cb, CTX_ERANGE, "header block at stream offset %llu is over the %zu-byte limit (%zu+ bytes); dropped",
                              at, f->max_header, over);
            if (stop)
                return 1;
            continue;
        }
        if (reserve(f, f->len + k + 1))
            return CTX_ENOMEM;
        memcpy(f->buf + f->len, data, k);
        f->len += k;
        f->block_bytes += k;
        f->pos += k;
        data += k;
        n -= k;
        if (!nl)
            continue;
        size_t raw = f->len;
        size_t len = raw - 1;
        if (len && f->buf[len - 1] == '\r')
            len--;
        f->len = 0;
        if (header_line(f, len, raw, cb))
            return 1;
    }
    return 0;
}
