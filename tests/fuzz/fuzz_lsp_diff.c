/* libFuzzer target: the agent's unified diff -> WorkspaceEdit converter (lsp/edit.c) against a
 * fixed buffer with CRLF, astral characters and no final newline, in all three encodings. The input
 * is outside text (a model wrote it): the converter must refuse or convert, never crash or emit an
 * edit whose range runs backwards. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lsp_edit.h"

static const char buffer[] = "int a;\r\n\xF0\x9F\x98\x80 b\r\n\r\nreturn x;\nend";

static int lookup(void *ud, const char *path, const char **text, size_t *len, int64_t *version, struct ctx_err *e)
{
    (void)ud;
    if (strcmp(path, "/r/gone.c") == 0)
        return ctx_err_set(e, CTX_ENOTFOUND, "%s: no such file", path);
    *text = buffer;
    *len = sizeof buffer - 1;
    *version = 3;
    return 0;
}

static int check(const cJSON *we)
{
    const cJSON *dc = cJSON_GetObjectItemCaseSensitive(we, "documentChanges"), *c, *ed;
    cJSON_ArrayForEach(c, dc)
    {
        cJSON_ArrayForEach(ed, cJSON_GetObjectItemCaseSensitive(c, "edits"))
        {
            const cJSON *r = cJSON_GetObjectItemCaseSensitive(ed, "range");
            const cJSON *s = cJSON_GetObjectItemCaseSensitive(r, "start"), *en = cJSON_GetObjectItemCaseSensitive(r, "end");
            double sl = cJSON_GetObjectItemCaseSensitive(s, "line")->valuedouble;
            double sc = cJSON_GetObjectItemCaseSensitive(s, "character")->valuedouble;
            double el = cJSON_GetObjectItemCaseSensitive(en, "line")->valuedouble;
            double ec = cJSON_GetObjectItemCaseSensitive(en, "character")->valuedouble;
            if (sl > el || (sl == el && sc > ec))
                return 1;
        }
    }
    return 0;
}

int lsp_diff_fuzz_one(const uint8_t *data, size_t size)
{
    int broken = 0;
    for (int enc = LSP_ENC_UTF16; enc <= LSP_ENC_UTF32; enc++) {
        cJSON *we = NULL;
        struct ctx_err e = {0};
        int rc = lsp_diff_to_edit((const char *)data, size, "/r", lookup, NULL, (enum lsp_encoding)enc, &we, &e);
        if (rc == 0 && (!we || check(we)))
            broken = 1;
        if (rc != 0 && (we || !e.msg[0]))
            broken = 1;
        cJSON_Delete(we);
    }
    return broken;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (lsp_diff_fuzz_one(data, size))
        abort();
    return 0;
}
