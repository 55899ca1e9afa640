/* libFuzzer target: the sequence-state deserializer (inference/state.c) on arbitrary bytes, for the
 * shape of the built-in "tiny" config (the v4-tiny-a fixture). A successful load must serialize back
 * to the very same bytes. tests/inference/test_forward_state.c runs the same entry over hostile
 * inputs (truncations, flipped bytes, inflated counts), so it is exercised in CI without libFuzzer. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "state.h"

/* Returns the deserializer's code. */
int inf_fuzz_state_one(const uint8_t *data, size_t size)
{
    static struct inf_config c;
    static int have;
    struct ctx_err e = {0};
    if (!have) {
        if (inf_config_builtin("tiny", &c, &e))
            abort();
        have = 1;
    }
    struct inf_state *s = NULL;
    int rc = inf_state_deserialize(&c, data, size, &s, &e);
    if (rc == 0) {
        uint8_t *buf = NULL;
        size_t len = 0;
        if (inf_state_serialize(s, &buf, &len, &e) || len != size || memcmp(buf, data, size))
            abort();
        free(buf);
        inf_state_free(s);
    } else if (s) {
        abort();
    }
    return rc;
}

#ifdef CTX_FUZZ_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    inf_fuzz_state_one(data, size);
    return 0;
}
#endif
