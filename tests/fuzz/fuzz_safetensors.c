/* libFuzzer target: the safetensors parser (inference/safetensors.c) on arbitrary bytes, as a whole
 * file (8-byte length + header + data) and as a bare header with no data section. On success the
 * parsed tensors must satisfy the reader's promises: every tensor inside the data section, sizes
 * equal to shape × dtype, no two tensors overlapping. tests/inference/test_loader.c runs the same
 * entry over a corpus of hostile inputs, so it is exercised in CI without libFuzzer. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "safetensors.h"

static void check_tensors(const struct inf_tensor *t, int n, const uint8_t *base, size_t len)
{
    for (int i = 0; i < n; i++) {
        long long numel = 1;
        for (int k = 0; k < t[i].ndim; k++)
            numel *= t[i].shape[k];
        if ((unsigned long long)numel * inf_dtype_size(t[i].dtype) != t[i].nbytes)
            abort();
        if (base) {
            const uint8_t *p = t[i].data;
            if (p < base || p + t[i].nbytes > base + len)
                abort();
            /* sorted by offset, so overlap can only be with the previous tensor */
            if (i && t[i].nbytes && p < (const uint8_t *)t[i - 1].data + t[i - 1].nbytes)
                abort();
        }
    }
}

/* Returns the parser's code for the whole-file parse. */
int inf_fuzz_safetensors_one(const uint8_t *data, size_t size)
{
    struct inf_tensor *t = NULL;
    int n = 0;
    struct ctx_err e = {0};
    int rc = inf_st_parse_bytes(data, size, "fuzz", &t, &n, &e);
    if (rc == 0) {
        uint64_t hl = 0;
        for (int i = 7; i >= 0; i--)
            hl = hl << 8 | data[i];
        check_tensors(t, n, data + 8 + hl, size - 8 - (size_t)hl);
    } else if (t || n) {
        abort();
    }
    inf_st_free_tensors(t, n);
    /* the bare header form, claiming a data section as long as the input */
    struct inf_tensor *t2 = NULL;
    int n2 = 0;
    if (inf_st_parse_header((const char *)data, size, NULL, size, "fuzz header", &t2, &n2, &e) == 0)
        check_tensors(t2, n2, NULL, 0);
    inf_st_free_tensors(t2, n2);
    return rc;
}

#ifdef CTX_FUZZ_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    inf_fuzz_safetensors_one(data, size);
    return 0;
}
#endif
