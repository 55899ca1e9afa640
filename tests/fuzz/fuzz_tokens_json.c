/* libFuzzer target: inf_tokens_json_parse (inference/tokens_json.h), the parser of ctx model score's and
 * ctx model generate's token files. Input: the file's bytes; the first byte picks the form (odd: with
 * "prefill", as score reads it). Checks the contract: success gives 1..n ids in [0, vocab) and a
 * prefill in 1..n; failure a message and nothing allocated. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "tokens_json.h"

int ctx_fuzz_tokens_json_one(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const int want_prefill = data[0] & 1, vocab = 1000;
    int *ids = NULL, n = -1, p = -1;
    struct ctx_err e = {0};
    int rc = inf_tokens_json_parse((const char *)data + 1, size - 1, "fuzz", vocab, &ids, &n, want_prefill ? &p : NULL,
                                   &e);
    if (rc)
        return ids == NULL && e.msg[0] ? 0 : 1;
    int bad = n < (want_prefill ? 0 : 1) || (want_prefill && (p < 1 || p > n));
    for (int i = 0; i < n && !bad; i++)
        bad = ids[i] < 0 || ids[i] >= vocab;
    free(ids);
    return bad;
}

#ifdef CTX_FUZZ_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (ctx_fuzz_tokens_json_one(data, size) > 0)
        abort();
    return 0;
}
#endif
