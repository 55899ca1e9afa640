/* libFuzzer target: .ctxignore parsing and matching. Input: pattern text, then a NUL byte, then
 * newline-separated paths to match (each both as a file and as a directory). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "repo.h"

int repo_fuzz_ctxignore_one(const uint8_t *data, size_t size)
{
    const char *d = (const char *)data;
    const char *nul = memchr(d, 0, size);
    size_t plen = nul ? (size_t)(nul - d) : size;
    struct repo_ignore *ig = NULL;
    struct ctx_err e = {0};
    if (repo_ignore_parse(d, plen, &ig, &e)) return -1;
    int hits = 0;
    if (nul) {
        const char *p = nul + 1, *end = d + size;
        while (p < end) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            size_t l = nl ? (size_t)(nl - p) : (size_t)(end - p);
            char *path = malloc(l + 1);
            if (!path) break;
            memcpy(path, p, l);
            path[l] = 0; /* an embedded NUL just shortens the path */
            hits += repo_ignore_match(ig, path, false);
            hits += repo_ignore_match(ig, path, true);
            free(path);
            p += l + 1;
        }
    }
    repo_ignore_free(ig);
    return hits;
}

#ifdef CTX_FUZZ_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    repo_fuzz_ctxignore_one(data, size);
    return 0;
}
#endif
