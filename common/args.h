/* Parsing of command-line values shared by the programs (ctxd, ctx). */
#ifndef CTX_ARGS_H
#define CTX_ARGS_H

#include <stddef.h>

#include "err.h"

/* A comma-separated list of decimal integers in [lo, hi] ("0,1"), at most `max` of them, into out[];
 * *n receives the count. CTX_EINVAL naming the offending item for an empty list or item, a
 * non-number, a value out of range, or more than `max` items; *n is then 0. */
int ctx_parse_int_list(const char *s, long lo, long hi, int *out, int max, int *n, struct ctx_err *e);

/* One integer in [lo, hi] (strtoll's forms: decimal, 0x hex, leading 0 octal) filling the whole string
 * into *out: 0, or -1 (out unchanged) for an empty string, trailing text, overflow or a value out of
 * range. For command-line numbers whose caller writes its own message. */
int ctx_parse_ll(const char *s, long long lo, long long hi, long long *out);

#endif
