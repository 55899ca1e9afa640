/* libFuzzer target: the tokenizer (inference/text/tokenizer.c). The first byte picks the mode:
 *   even: the rest is text for the real V4 tokenizer (DeepSeek-V3's tokenizer.json from
 *         tests/fixtures/tokenizer, or $CTX_TOKENIZER_JSON; skipped when absent). Invariants:
 *         invalid UTF-8 is refused with CTX_EINVAL and nothing else is; count() equals encode()'s
 *         length; decode(encode(text)) is the text; the streaming detokenizer gives the same bytes;
 *   odd:  the rest is a tokenizer.json body for the loader: no crash, and a loaded tokenizer
 *         round-trips a fixed text (every byte has a token, so encode cannot fail on valid text).
 * tests/text/test_tokenizer_fuzz.c runs this entry on hostile inputs. */
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ctx_config.h"
#include "tokenizer.h"

static struct inf_tokenizer *fuzz_tok;
static int fuzz_tok_tried;

static const struct inf_tokenizer *fuzz_tokenizer(void)
{
    if (!fuzz_tok_tried) {
        fuzz_tok_tried = 1;
        char path[4096];
        const char *env = getenv("CTX_TOKENIZER_JSON");
        const char *root = getenv("CTX_SOURCE_ROOT");
        if (env)
            snprintf(path, sizeof path, "%s", env);
        else
            snprintf(path, sizeof path, "%s/tests/fixtures/tokenizer/node_modules/@lenml/"
                                        "tokenizer-deepseek_v3/models/tokenizer.json",
                     root ? root : CTX_SOURCE_ROOT);
        struct ctx_err e = {0};
        if (access(path, R_OK) == 0 && inf_tokenizer_load_v4(path, &fuzz_tok, &e) != 0)
            abort(); /* the real file must load */
    }
    return fuzz_tok;
}

static void roundtrip(const struct inf_tokenizer *t, const char *text, size_t len, bool strict)
{
    struct ctx_err e = {0};
    int32_t *ids = NULL;
    size_t n = 0, count = 0;
    int rc = inf_tokenizer_encode(t, text, len, &ids, &n, &e);
    bool valid = inf_utf8_invalid_at(text, len) == 0;
    if (!valid) {
        if (rc != CTX_EINVAL || ids || inf_tokenizer_count(t, text, len, &count, &e) != CTX_EINVAL)
            abort();
        return;
    }
    if (rc != 0 && !strict && rc == CTX_EINTERNAL)
        return; /* a fuzzed pre-tokenizer regex may hit PCRE2's match limit: an error, not a hang */
    if (rc != 0 || inf_tokenizer_count(t, text, len, &count, &e) != 0 || count != n)
        abort();
    char *back = NULL;
    size_t bl = 0;
    if (inf_tokenizer_decode(t, ids, n, &back, &bl, &e) != 0 || bl != len || memcmp(back, text, len))
        abort();
    struct inf_detok *d = inf_detok_new(t);
    size_t cap = inf_detok_max_chunk(d), w = 0, cl;
    char *chunk = malloc(cap), *acc = malloc(len + cap + 1);
    for (size_t i = 0; i < n; i++) {
        if (inf_detok_push(d, ids[i], chunk, cap, &cl) != 0 || w + cl > len + cap)
            abort();
        memcpy(acc + w, chunk, cl);
        w += cl;
    }
    if (inf_detok_finish(d, chunk, cap, &cl) != 0)
        abort();
    memcpy(acc + w, chunk, cl);
    w += cl;
    if (w != len || memcmp(acc, text, len))
        abort();
    inf_detok_free(d);
    free(chunk);
    free(acc);
    free(back);
    free(ids);
}

/* Returns 1 when the input was exercised, 0 when skipped (no tokenizer available). */
int inf_fuzz_tokenizer_one(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const char *body = (const char *)data + 1;
    size_t len = size - 1;
    if ((data[0] & 1) == 0) {
        const struct inf_tokenizer *t = fuzz_tokenizer();
        if (!t)
            return 0;
        roundtrip(t, body, len, true);
        return 1;
    }
    struct inf_tokenizer *t = NULL;
    struct ctx_err e = {0};
    if (inf_tokenizer_load_buffer(body, len, "fuzz", (data[0] & 2) != 0, &t, &e) == 0) {
        roundtrip(t, "hello world\n", 12, false);
        inf_tokenizer_free(t);
    } else if (t || !e.msg[0]) {
        abort();
    }
    return 1;
}

#ifdef CTX_FUZZ_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    inf_fuzz_tokenizer_one(data, size);
    return 0;
}
#endif
