/* Positions and edits on UTF-8 text as LSP counts them: a position is (line, character) where
 * lines end at "\n", "\r\n" or "\r", and characters are counted in the negotiated position
 * encoding (UTF-16 code units by default, so a character outside the BMP counts 2). Pure functions,
 * unit-tested apart from the server. */
#ifndef LSP_TEXT_H
#define LSP_TEXT_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

enum lsp_encoding {
    LSP_ENC_UTF16 = 0, /* the LSP default */
    LSP_ENC_UTF8,      /* bytes */
    LSP_ENC_UTF32,     /* code points */
};

struct lsp_pos {
    uint32_t line, character;
};

/* The name LSP uses for an encoding ("utf-16", ...). */
const char *lsp_encoding_name(enum lsp_encoding enc);

/* Byte offset of position p in text[0..len). As the spec asks, a character past the end of its
 * line means the end of the line, and a line past the last means the end of the text. A position
 * inside one character (between the two halves of a surrogate pair, or inside a UTF-8 sequence in
 * utf-8 mode) rounds down to that character's start. Bytes that are not valid UTF-8 count as one
 * unit each (as U+FFFD would). Never fails. */
size_t lsp_text_offset(const char *text, size_t len, struct lsp_pos p, enum lsp_encoding enc);

/* The position of byte offset off (clamped to len): the inverse of lsp_text_offset. */
struct lsp_pos lsp_text_position(const char *text, size_t len, size_t off, enum lsp_encoding enc);

/* Length of text[0..len) in encoding units. */
size_t lsp_text_units(const char *text, size_t len, enum lsp_encoding enc);

/* Number of lines (a final line without terminator counts; "" has 1 line, "a\n" has 2). */
size_t lsp_text_lines(const char *text, size_t len);

/* A growable text buffer. */
struct lsp_text {
    char *data; /* NUL-terminated; NULL when empty and never set */
    size_t len, cap;
};

void lsp_text_free(struct lsp_text *t);
int lsp_text_set(struct lsp_text *t, const char *s, size_t n, struct ctx_err *e);

/* Replace the range [start, end) (positions in enc) by ins[0..n). CTX_EINVAL when start comes after
 * end; the text is then unchanged. */
int lsp_text_edit(struct lsp_text *t, struct lsp_pos start, struct lsp_pos end, const char *ins, size_t n,
                  enum lsp_encoding enc, struct ctx_err *e);

#endif
