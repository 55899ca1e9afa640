/* libFuzzer target: ctx_parse_int_list (common/args.h), the parser of --gpus. Input: the list text
 * (a NUL ends it early). Checks the contract: on success 1..max items, each in range. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"

int ctx_fuzz_int_list_one(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s)
        return -1;
    memcpy(s, data, size);
    s[size] = 0;
    int out[16], n = -1;
    struct ctx_err e = {0};
    int rc = ctx_parse_int_list(s, 0, 255, out, 16, &n, &e);
    free(s);
    if (rc)
        return n == 0 && rc == CTX_EINVAL && e.msg[0] ? 0 : 1;
    if (n < 1 || n > 16)
        return 1;
    for (int i = 0; i < n; i++)
        if (out[i] < 0 || out[i] > 255)
            return 1;
    return 0;
}

#ifdef CTX_FUZZ_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (ctx_fuzz_int_list_one(data, size) > 0)
        abort();
    return 0;
}
#endif
