/* libFuzzer target: tree-sitter parsing plus our tags-query handling (predicates, de-duplication,
 * the identifier fallback) on arbitrary source text. The first byte picks the language. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "repo.h"

int repo_fuzz_symbols_one(struct repo_symbolizer *z, const uint8_t *data, size_t size)
{
    if (size == 0) return 0;
    enum repo_lang lang = (enum repo_lang)(data[0] % REPO_LANG_COUNT);
    struct repo_symbol *syms = NULL;
    size_t n = 0;
    bool errs = false;
    struct ctx_err e = {0};
    int rc = repo_symbols_extract(z, 0, lang, (const char *)data + 1, size - 1, &syms, &n, &errs, &e);
    /* Invariants every caller relies on: names inside the text, sorted, one tag per span. */
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if ((size_t)syms[i].name_off + syms[i].name_len > size - 1 || syms[i].name_len == 0) abort();
        if (i && syms[i].name_off < syms[i - 1].name_off) abort();
        if (i && syms[i].name_off == syms[i - 1].name_off && syms[i].name_len == syms[i - 1].name_len) abort();
    }
    free(syms);
    return rc;
}

#ifdef CTX_FUZZ_MAIN
static struct repo_symbolizer *fuzz_z;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!fuzz_z) {
        struct ctx_err e = {0};
        if (repo_symbolizer_new(1, &fuzz_z, &e)) abort();
    }
    repo_fuzz_symbols_one(fuzz_z, data, size);
    return 0;
}
#endif
