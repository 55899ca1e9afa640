/* A growable text buffer for code that writes output piece by piece (tool results, reports).
 * Allocation failure is sticky: the first failed growth sets `oom` and every later put is a no-op,
 * so a writer checks once at the end instead of after every piece. After any put, `p` is a
 * NUL-terminated string (also when only "" was put: callers use that to get an empty result).
 * The buffer owns `p`; ctx_buf_free releases it, or the caller takes it (`p` then NULL it). */
#ifndef CTX_BUF_H
#define CTX_BUF_H

#include <stdbool.h>
#include <stddef.h>

struct ctx_buf {
    char *p;
    size_t len, cap;
    bool oom;
};

void ctx_buf_put(struct ctx_buf *b, const char *s, size_t n);
void ctx_buf_puts(struct ctx_buf *b, const char *s);
void ctx_buf_printf(struct ctx_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void ctx_buf_free(struct ctx_buf *b);

#endif
