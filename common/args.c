/* See args.h. */
#include "args.h"

#include <errno.h>
#include <stdlib.h>

int ctx_parse_int_list(const char *s, long lo, long hi, int *out, int max, int *n, struct ctx_err *e)
{
    *n = 0;
    if (!*s)
        return ctx_err_set(e, CTX_EINVAL, "empty list");
    int k = 0;
    for (const char *p = s;;) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || (*end && *end != ','))
            return ctx_err_set(e, CTX_EINVAL, "item %d is not a number", k + 1);
        if (errno || v < lo || v > hi)
            return ctx_err_set(e, CTX_EINVAL, "item %d is outside %ld..%ld", k + 1, lo, hi);
        if (k == max)
            return ctx_err_set(e, CTX_EINVAL, "more than %d items", max);
        out[k++] = (int)v;
        if (!*end)
            break;
        p = end + 1;
    }
    *n = k;
    return 0;
}

int ctx_parse_ll(const char *s, long long lo, long long hi, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 0);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}
