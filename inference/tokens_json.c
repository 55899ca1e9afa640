/* Token-id files (tokens_json.h). */
#include "tokens_json.h"

#include <stdlib.h>

#include "json.h"

static int from_json(cJSON *j, const char *what, int vocab, int **tokens, int *n, int *prefill, struct ctx_err *e)
{
    int rc = 0;
    const cJSON *t = !prefill && cJSON_IsArray(j) ? j
                     : cJSON_IsObject(j)          ? cJSON_GetObjectItemCaseSensitive(j, "tokens")
                                                  : NULL;
    int64_t p = 1;
    if (!cJSON_IsArray(t))
        return ctx_err_set(e, CTX_EFORMAT, "%s: \"tokens\" must be an array of token ids", what);
    if (prefill && (rc = ctx_json_get_int(j, "prefill", true, 0, &p, what, e)))
        return rc;
    int cnt = cJSON_GetArraySize(t);
    if (!prefill && cnt < 1)
        return ctx_err_set(e, CTX_EINVAL, "%s: \"tokens\" is empty", what);
    if (prefill && (p < 1 || p > cnt))
        return ctx_err_set(e, CTX_EINVAL, "%s: \"prefill\" is %lld; it must be between 1 and the %d tokens", what,
                           (long long)p, cnt);
    int *ids = malloc(sizeof(int) * (size_t)(cnt > 0 ? cnt : 1));
    if (!ids)
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    int i = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, t) {
        double d = cJSON_IsNumber(v) ? v->valuedouble : -1;
        if (!cJSON_IsNumber(v) || !(d >= 0 && d < vocab) || d != (double)(int)d) {
            free(ids);
            return ctx_err_set(e, CTX_EINVAL, "%s: tokens[%d] is not a token id below the vocabulary size %d", what, i,
                               vocab);
        }
        ids[i++] = (int)d;
    }
    *tokens = ids;
    *n = cnt;
    if (prefill)
        *prefill = (int)p;
    return 0;
}

int inf_tokens_json_parse(const char *buf, size_t len, const char *what, int vocab, int **tokens, int *n, int *prefill,
                          struct ctx_err *e)
{
    cJSON *j = ctx_json_parse(buf, len, what, e);
    if (!j)
        return e->code ? e->code : CTX_EFORMAT;
    int rc = from_json(j, what, vocab, tokens, n, prefill, e);
    cJSON_Delete(j);
    return rc;
}

int inf_tokens_json_read(const char *path, int vocab, int **tokens, int *n, int *prefill, struct ctx_err *e)
{
    cJSON *j = ctx_json_read_file(path, 256u << 20, e);
    if (!j)
        return e->code ? e->code : CTX_EFORMAT;
    int rc = from_json(j, path, vocab, tokens, n, prefill, e);
    cJSON_Delete(j);
    return rc;
}
