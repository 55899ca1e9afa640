#include "lsp_text.h"

#include <stdlib.h>
#include <string.h>

const char *lsp_encoding_name(enum lsp_encoding enc)
{
    switch (enc) {
    case LSP_ENC_UTF8: return "utf-8";
    case LSP_ENC_UTF32: return "utf-32";
    default: return "utf-16";
    }
}

static int cont(const unsigned char *s, size_t n, size_t i, unsigned char lo, unsigned char hi)
{
    return i < n && s[i] >= lo && s[i] <= hi;
}

/* Byte length of the UTF-8 sequence at s (1 for an invalid byte, which then stands for itself). */
static size_t seq_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        return cont(s, n, 1, 0x80, 0xBF) ? 2 : 1;
    if (c >= 0xE0 && c <= 0xEF) {
        unsigned char lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
        return cont(s, n, 1, lo, hi) && cont(s, n, 2, 0x80, 0xBF) ? 3 : 1;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        unsigned char lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
        return cont(s, n, 1, lo, hi) && cont(s, n, 2, 0x80, 0xBF) && cont(s, n, 3, 0x80, 0xBF) ? 4 : 1;
    }
    return 1;
}

static uint32_t units_of(size_t bytes, enum lsp_encoding enc)
{
    if (enc == LSP_ENC_UTF8)
        return (uint32_t)bytes;
    if (enc == LSP_ENC_UTF16)
        return bytes == 4 ? 2 : 1; /* only 4-byte sequences lie outside the BMP */
    return 1;
}

static int is_eol(char c)
{
    return c == '\n' || c == '\r';
}

/* Offset just past the terminator of the line containing i, or len when it is the last line. */
static size_t next_line(const char *t, size_t len, size_t i)
{
    while (i < len && !is_eol(t[i]))
        i++;
    if (i >= len)
        return len;
    if (t[i] == '\r' && i + 1 < len && t[i + 1] == '\n')
        return i + 2;
    return i + 1;
}

size_t lsp_text_offset(const char *text, size_t len, struct lsp_pos p, enum lsp_encoding enc)
{
    const unsigned char *u = (const unsigned char *)text;
    size_t i = 0;
    for (uint32_t line = 0; line < p.line; line++) {
        size_t nx = next_line(text, len, i);
        if (nx == len && (len == 0 || !is_eol(text[len - 1])))
            return len; /* asked for a line past the last one */
        if (nx == len && line + 1 < p.line)
            return len;
        i = nx;
    }
    uint32_t col = 0;
    while (i < len && !is_eol(text[i]) && col < p.character) {
        size_t bl = seq_len(u + i, len - i);
        uint32_t cu = units_of(bl, enc);
        if (cu > p.character - col)
            break; /* inside this character: round down */
        col += cu;
        i += bl;
    }
    return i;
}

struct lsp_pos lsp_text_position(const char *text, size_t len, size_t off, enum lsp_encoding enc)
{
    const unsigned char *u = (const unsigned char *)text;
    struct lsp_pos p = {0, 0};
    if (off > len)
        off = len;
    size_t ls = 0; /* start of off's line */
    for (size_t i = 0; i < off;) {
        if (text[i] == '\r' && i + 1 < len && text[i + 1] == '\n') {
            if (i + 1 == off)
                break; /* between \r and \n: the end of the line */
            i += 2;
        } else if (is_eol(text[i])) {
            i++;
        } else {
            i++;
            continue;
        }
        p.line++;
        ls = i;
    }
    for (size_t i = ls; i < off && !is_eol(text[i]);) {
        size_t bl = seq_len(u + i, len - i);
        if (i + bl > off)
            break; /* off is inside this character */
        p.character += units_of(bl, enc);
        i += bl;
    }
    return p;
}

size_t lsp_text_units(const char *text, size_t len, enum lsp_encoding enc)
{
    const unsigned char *u = (const unsigned char *)text;
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        size_t bl = seq_len(u + i, len - i);
        n += units_of(bl, enc);
        i += bl;
    }
    return n;
}

size_t lsp_text_lines(const char *text, size_t len)
{
    size_t lines = 1;
    for (size_t i = 0; i < len; i++) {
        if (text[i] == '\n' || (text[i] == '\r' && !(i + 1 < len && text[i + 1] == '\n')))
            lines++;
    }
    return lines;
}

void lsp_text_free(struct lsp_text *t)
{
    free(t->data);
    memset(t, 0, sizeof *t);
}

static int reserve(struct lsp_text *t, size_t need, struct ctx_err *e)
{
    if (need + 1 <= t->cap)
        return 0;
    size_t cap = t->cap ? t->cap : 64;
    while (cap < need + 1)
        cap = cap > SIZE_MAX / 2 ? need + 1 : cap * 2;
    char *d = realloc(t->data, cap);
    if (!d)
        return ctx_err_set(e, CTX_ENOMEM, "document text of %zu bytes", need);
    t->data = d;
    t->cap = cap;
    return 0;
}

int lsp_text_set(struct lsp_text *t, const char *s, size_t n, struct ctx_err *e)
{
    int rc = reserve(t, n, e);
    if (rc)
        return rc;
    if (n)
        memcpy(t->data, s, n);
    t->data[n] = 0;
    t->len = n;
    return 0;
}

int lsp_text_edit(struct lsp_text *t, struct lsp_pos start, struct lsp_pos end, const char *ins, size_t n,
                  enum lsp_encoding enc, struct ctx_err *e)
{
    if (start.line > end.line || (start.line == end.line && start.character > end.character))
        return ctx_err_set(e, CTX_EINVAL, "range start %u:%u comes after its end %u:%u", start.line,
                           start.character, end.line, end.character);
    const char *base = t->data ? t->data : "";
    size_t s = lsp_text_offset(base, t->len, start, enc);
    size_t en = lsp_text_offset(base, t->len, end, enc);
    size_t newlen = t->len - (en - s) + n;
    if (n > SIZE_MAX / 2 || newlen < n)
        return ctx_err_set(e, CTX_ERANGE, "edit of %zu bytes is too large", n);
    int rc = reserve(t, newlen, e);
    if (rc)
        return rc;
    memmove(t->data + s + n, t->data + en, t->len - en);
    if (n)
        memcpy(t->data + s, ins, n);
    t->len = newlen;
    t->data[newlen] = 0;
    return 0;
}
