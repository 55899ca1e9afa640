/* Byte-level BPE training (issue 12) with the DeepSeek V3/V4 pre-tokenizer, and the writer of a
 * Hugging Face tokenizer.json that inference/text/tokenizer.c loads (inf_tokenizer_load).
 *
 * Id layout of the written tokenizer (tools/data/README.md "Tokenizer"):
 *   0, 1, 2                  <｜begin▁of▁sentence｜>, <｜end▁of▁sentence｜>, <｜▁pad▁｜> (as V3)
 *   3 .. 258                 the 256 byte tokens, ordered by their byte-level character
 *   259 .. vocab-1-n_added   merges, in rank order
 *   vocab-n_added .. vocab-1 V4's other special tokens, in V4's id order (data_special_tokens) */
#ifndef DATA_BPE_H
#define DATA_BPE_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "tokenizer.h"

/* One of V4's added tokens as written to tokenizer.json; v4_id is its id in V4 (spec §7.1). */
struct data_special {
    int32_t v4_id;
    const char *content;
    int special;
};
/* The table, in V4 id order: BOS, EOS, pad first (they take ids 0..2), then the rest. */
size_t data_special_tokens(const struct data_special **out);

/* The DeepSeek V3/V4 pre_tokenizer, post_processor, decoder objects as JSON text (copied from V3's
 * tokenizer.json, which V4 shares). */
extern const char data_pre_tokenizer_json[];

/* A loader that splits text exactly as the written tokenizer will: the pre-tokenizer above and
 * a byte-only vocabulary. */
int data_pretokenizer_new(struct inf_tokenizer **out, struct ctx_err *e);

struct data_bpe; /* opaque: word counts and, after training, the merges */
struct data_bpe *data_bpe_new(void);
void data_bpe_free(struct data_bpe *b);
/* Count the pre-tokens of text (valid UTF-8). */
int data_bpe_add_text(struct data_bpe *b, const struct inf_tokenizer *pre, const char *text,
                      size_t len, struct ctx_err *e);
/* Learn merges until the vocabulary (3 + 256 + merges + specials) reaches vocab_size, or no pair
 * occurs at least twice. */
int data_bpe_train(struct data_bpe *b, size_t vocab_size, struct ctx_err *e);
size_t data_bpe_n_merges(const struct data_bpe *b);
size_t data_bpe_n_words(const struct data_bpe *b);
/* Write tokenizer.json (atomically) with the learnt merges, padded to vocab_size. */
int data_bpe_write(const struct data_bpe *b, size_t vocab_size, const char *path, struct ctx_err *e);
/* Write tokenizer_config.json for Hugging Face's PreTrainedTokenizerFast. */
int data_write_tokenizer_config(const char *path, struct ctx_err *e);

/* Write len bytes to path through a temporary file, fsync and rename. */
int data_write_atomic(const char *path, const void *buf, size_t len, struct ctx_err *e);

#endif
