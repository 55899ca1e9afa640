/* Byte-level BPE tokenizer loaded from a Hugging Face tokenizer.json (DeepSeek V3/V4 family).
 *
 * Encoding follows the `tokenizers` library step by step: added tokens are cut out of the text
 * first (special ones, then the others, each leftmost-longest by exact string), the remaining
 * pieces run through the normalizer (only an empty Sequence is accepted) and the pre-tokenizer
 * sequence (regex Splits compiled with PCRE2 JIT, then ByteLevel), and every pre-token is merged
 * by rank. Decoding maps token strings back to bytes as the ByteLevel decoder does and replaces
 * invalid UTF-8 like Rust's from_utf8_lossy.
 *
 * A loaded tokenizer is immutable: any number of threads may encode/count/decode on it at once
 * (all scratch, PCRE2 match data included, is per call). Input text must be valid UTF-8 (the
 * reference cannot represent anything else); invalid input is an error naming the byte offset. */
#ifndef INF_TOKENIZER_H
#define INF_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

struct inf_tokenizer; /* opaque */

/* Load a tokenizer.json exactly as written. Malformed files give CTX_EFORMAT naming the field. */
int inf_tokenizer_load(const char *tokenizer_json_path, struct inf_tokenizer **out,
                       struct ctx_err *e);

/* Load DeepSeek-V3's tokenizer.json and add V4's special tokens (ids 128815..129279, spec §7.1)
 * that the file does not already define. Where the file does define one of V4's confirmed ids
 * (a real V4 tokenizer.json), its string must agree with V4's or the load fails. A file that
 * defines "</think>" at an id of its own (a small V4-family vocabulary such as
 * models/ctx-small's) is loaded as written, like inf_tokenizer_load. */
int inf_tokenizer_load_v4(const char *v3_tokenizer_json_path, struct inf_tokenizer **out,
                          struct ctx_err *e);

/* Load from tokenizer.json text in memory (len bytes); `name` labels errors; v4 as above. */
int inf_tokenizer_load_buffer(const char *json, size_t len, const char *name, bool v4,
                              struct inf_tokenizer **out, struct ctx_err *e);

void inf_tokenizer_free(struct inf_tokenizer *t);

/* Number of ids (base vocabulary plus added tokens; the largest id + 1). */
size_t inf_tokenizer_vocab_size(const struct inf_tokenizer *t);

/* Text (len bytes, need not be NUL-terminated) to ids; *ids is malloc'd (NULL when *n_ids is 0),
 * the caller frees it. No BOS/EOS is added. */
int inf_tokenizer_encode(const struct inf_tokenizer *t, const char *text, size_t len,
                         int32_t **ids, size_t *n_ids, struct ctx_err *e);

/* Count the ids encode would return, without materialising them (for budgeting). */
int inf_tokenizer_count(const struct inf_tokenizer *t, const char *text, size_t len, size_t *n,
                        struct ctx_err *e);

/* Flags for the _flags variants. INF_TOK_LITERAL: added-token strings inside the text are ordinary
 * text (BPE'd like any other), so untrusted content (repository files, tool results, web pages)
 * cannot smuggle control tokens such as <｜User｜> or </think> into a prompt. The plain functions
 * match added tokens, as `tokenizers` does by default. */
#define INF_TOK_LITERAL 1u
int inf_tokenizer_encode_flags(const struct inf_tokenizer *t, const char *text, size_t len,
                               unsigned flags, int32_t **ids, size_t *n_ids, struct ctx_err *e);
int inf_tokenizer_count_flags(const struct inf_tokenizer *t, const char *text, size_t len,
                              unsigned flags, size_t *n, struct ctx_err *e);

/* Encode a prompt whose pieces have different trust: inside the given spans (byte ranges of
 * `text`, sorted and non-overlapping) added-token strings are ordinary text, everywhere else they
 * are matched as usual. For text without added-token strings inside the spans the ids equal
 * inf_tokenizer_encode's, since spans change only which added tokens may match. Pair it with
 * inf_dsml_encode_spans, which reports where caller-provided text went in a prompt. */
struct inf_text_span {
    size_t off, len;
};
int inf_tokenizer_encode_spans(const struct inf_tokenizer *t, const char *text, size_t len,
                               const struct inf_text_span *spans, size_t n_spans, int32_t **ids,
                               size_t *n_ids, struct ctx_err *e);

/* Run only the normalizer and pre-tokenizer over text (added-token strings are ordinary text, as
 * with INF_TOK_LITERAL) and call fn with every pre-token's bytes in order, for BPE trainers that
 * must split text exactly as this loader does. A non-zero return from fn stops the walk and is
 * returned. Invalid UTF-8 is CTX_EINVAL as in encode. */
int inf_tokenizer_pretokenize(const struct inf_tokenizer *t, const char *text, size_t len,
                              int (*fn)(void *ud, const char *piece, size_t n), void *ud,
                              struct ctx_err *e);

/* Ids to text (malloc'd, NUL-terminated, *len excludes the NUL). Unknown ids are CTX_EINVAL. */
int inf_tokenizer_decode(const struct inf_tokenizer *t, const int32_t *ids, size_t n, char **text,
                         size_t *len, struct ctx_err *e);

/* The id of a vocabulary token string (byte-level form, e.g. "Ġthe") or added token content
 * ("<｜User｜>"); -1 if none. */
int inf_tokenizer_token_id(const struct inf_tokenizer *t, const char *token_string);

/* The raw bytes an id decodes to (not NUL-terminated), or NULL for an unknown id. */
const char *inf_tokenizer_id_bytes(const struct inf_tokenizer *t, int32_t id, size_t *len);

/* Streaming detokenizer: push ids one at a time as the model produces them and get text that is
 * always whole UTF-8 characters. Bytes of an unfinished character are held back until the next
 * id completes it; bytes that can never form a character come out as U+FFFD, as in decode(). */
struct inf_detok;
struct inf_detok *inf_detok_new(const struct inf_tokenizer *t);
/* Append the text that id completes to out (at most cap bytes; cap >= 64 + the longest token
 * is always enough, see inf_detok_max_chunk). *len receives the bytes written. CTX_EINVAL for an
 * unknown id, CTX_ERANGE if cap is too small (nothing is consumed then). */
int inf_detok_push(struct inf_detok *d, int32_t id, char *out, size_t cap, size_t *len);
/* Flush held-back bytes at end of stream (as U+FFFD, since they never completed). */
int inf_detok_finish(struct inf_detok *d, char *out, size_t cap, size_t *len);
/* An out buffer of this size always suffices for one push or finish. */
size_t inf_detok_max_chunk(const struct inf_detok *d);
void inf_detok_reset(struct inf_detok *d);
void inf_detok_free(struct inf_detok *d);

/* The V4 special tokens that inf_tokenizer_load_v4 adds, in id order (for tools and tests).
 * content is the token string; confirmed is false for ids whose string the public sources do not
 * give (spec §7.1), which get a reserved "<｜ctx▁unconfirmed▁ID｜>" name. */
struct inf_added_token_def {
    int32_t id;
    const char *content;
    int special;
    int confirmed;
};
/* Fills a static table on first use; returns its length. Thread-safe (pthread_once). */
size_t inf_tokenizer_v4_added(const struct inf_added_token_def **defs);

/* Whether tokenizing two texts separately and concatenating the ids equals tokenizing their
 * concatenation, for the DeepSeek pre-tokenizer (DESIGN.md §4): true when either is empty, or
 * `prev` ends with '\n' and `next` does not begin with a white-space character (Unicode
 * White_Space, what \s matches under PCRE2_UCP). Under that rule no pre-token, added token or
 * regex look-ahead crosses the boundary; tests/text/test_tokenizer.c checks it on real text. */
bool inf_tokenizer_boundary_safe(const char *prev, size_t prev_len, const char *next,
                                 size_t next_len);

/* Validate UTF-8; returns 0 or the offset+1 of the first invalid byte. */
size_t inf_utf8_invalid_at(const char *s, size_t len);

#endif
