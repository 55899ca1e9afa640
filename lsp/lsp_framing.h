/* LSP base protocol framing: "Content-Length: N\r\n[Content-Type: ...\r\n]\r\n" + N bytes of
 * UTF-8 JSON. A pure, incremental parser over bytes (no I/O), so it is unit-tested and fuzzed apart
 * from any pipe. Every problem is reported and skipped: the stream always resynchronises on the
 * next header block, so one bad message never wedges the server. */
#ifndef LSP_FRAMING_H
#define LSP_FRAMING_H

#include <stdbool.h>
#include <stddef.h>

#include "err.h"

#define LSP_MAX_HEADER_DEFAULT ((size_t)8 << 10)
#define LSP_MAX_BODY_DEFAULT ((size_t)64 << 20)

struct lsp_framer {
    char *buf;            /* the current header line, or the body being collected */
    size_t len, cap;
    size_t max_header;    /* bytes of one header block, terminator included */
    size_t max_body;      /* largest Content-Length accepted */
    unsigned long long pos;          /* bytes consumed so far (offsets in messages) */
    unsigned long long block_start;  /* offset of the current header block */
    size_t block_bytes;   /* bytes of the current header block so far */
    size_t block_lines;   /* header lines seen in it */
    size_t body_len;      /* Content-Length of the current block */
    bool has_len;
    int block_code;       /* first problem in the block (0: none) */
    char block_msg[160];
    unsigned long long garbage_start; /* pending run of skipped bytes, reported once */
    size_t garbage_bytes;
    size_t skip;          /* bytes of a refused body still to drop */
    bool in_body;
    bool dropping_line;   /* dropping an overlong header line up to its newline */
};

/* on_message gets a complete body, NUL-terminated and writable (valid until it returns); on_error a
 * recoverable framing problem (code CTX_EFORMAT or CTX_ERANGE; message names the stream offset).
 * Either returns non-zero to stop feeding: the unconsumed bytes are then dropped. */
struct lsp_framer_cb {
    int (*on_message)(void *ud, char *body, size_t len);
    int (*on_error)(void *ud, const struct ctx_err *e);
    void *ud;
};

/* 0 for a limit takes the default. */
void lsp_framer_init(struct lsp_framer *f, size_t max_header, size_t max_body);
void lsp_framer_free(struct lsp_framer *f);

/* Consume n bytes. Returns 0, 1 when a callback asked to stop, or CTX_ENOMEM. */
int lsp_framer_feed(struct lsp_framer *f, const char *data, size_t n, const struct lsp_framer_cb *cb);

/* The header block for a body of len bytes ("Content-Length: len\r\n\r\n"); returns its length. */
size_t lsp_frame_header(char *buf, size_t cap, size_t len);

#endif
