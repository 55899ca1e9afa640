/* Token-id files of the in-process model commands (ctx model score, ctx model generate): JSON
 * {"tokens":[ids...],"prefill":N}, or for a prompt ("prefill" not wanted) also a bare array [ids...],
 * as ctx tokenize prints it. Each id an integer in [0, vocab). */
#ifndef INF_TOKENS_JSON_H
#define INF_TOKENS_JSON_H

#include <stddef.h>

#include "err.h"

/* Parse len bytes (`what` names the source in errors). With prefill != NULL the object form is
 * required and its "prefill" (1..n) goes to *prefill; without, "prefill" is not read and an empty list
 * is refused. On success *tokens (malloc'd, the caller frees) holds *n ids; on error nothing is
 * allocated and the message names the field or the index at fault. */
int inf_tokens_json_parse(const char *buf, size_t len, const char *what, int vocab, int **tokens, int *n, int *prefill,
                          struct ctx_err *e);
/* The same from a file (at most 256 MiB). */
int inf_tokens_json_read(const char *path, int vocab, int **tokens, int *n, int *prefill, struct ctx_err *e);

#endif
