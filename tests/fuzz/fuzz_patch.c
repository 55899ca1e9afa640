/* libFuzzer target: the unified-diff parser of the apply_patch tool (agent/patch.c), and applying
 * every parsed file to a small fixed text, so hunk placement, line counts, "\ No newline" markers
 * and huge line numbers are all reached from arbitrary bytes. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "patch.h"

static const char base[] = "alpha\nbeta\n\ngamma\n  delta\t\nepsilon";

int agent_fuzz_patch_one(const uint8_t *data, size_t size)
{
    struct agent_patch *p = NULL;
    struct ctx_err e = {0};
    int rc = agent_patch_parse((const char *)data, size, &p, &e);
    if (rc)
        return rc;
    for (size_t i = 0; i < p->nfiles; i++) {
        char *out = NULL;
        size_t len = 0;
        struct ctx_err ae = {0};
        const struct agent_patch_file *f = &p->files[i];
        if (agent_patch_apply_file(f, f->old_path ? base : NULL, f->old_path ? sizeof base - 1 : 0,
                                   &out, &len, &ae) == 0)
            free(out);
    }
    agent_patch_free(p);
    return 0;
}

#ifdef CTX_FUZZ_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    agent_fuzz_patch_one(data, size);
    return 0;
}
#endif
