/* Parsing of command-line values shared by the programs (ctxd, ctx). */
#ifndef CTX_ARGS_H
#define CTX_ARGS_H

#include <stddef.h>

#include "err.h"

/* A comma-separated list of decimal integers in [lo, hi] ("0,1"), at most `max` of them, into out[];
 * *n receives the count. CTX_EINVAL naming the offending item for an empty list or item, a
 * non-number, a value out of range, or more than `max` items; *n is then 0. */
int ctx_parse_int_list(const char *s, long lo, long hi, int *out, int max, int *n, struct ctx_err *e);

#endif
