/* fim.complete: fill-in-the-middle completion for editors (inline completion). The prompt is V4's
 * FIM form (spec §7.3: BOS <｜fim▁begin｜>prefix<｜fim▁hole｜>suffix<｜fim▁end｜>, the model writes the
 * middle), decoded on a fresh engine state — never the resident repository state — as an
 * interactive, cancellable scheduler job. A client's newer fim.complete supersedes its older ones,
 * which is what an editor wants while the user types on. */
#ifndef CTXD_FIM_H
#define CTXD_FIM_H

#include <stddef.h>

#include "ctxd.h"

/* Registers fim.complete and fim.cancel. */
int ctxd_fim_init(struct ctxd *d);

/* Where a completion ends, given the text decoded so far (pure; exposed for tests): the length of
 * text to keep when it contains one of the stop strings (cut before the earliest occurrence) or a
 * blank line ("\n", optional spaces/tabs/"\r", "\n": cut before its first newline), else len.
 * *why is "stop_string", "blank_line" or NULL. Stop strings must be non-empty. */
size_t ctxd_fim_cut(const char *text, size_t len, const char *const *stops, size_t n_stops, const char **why);

/* A degenerate loop at the end of the text (what small models fall into: "0, 0, 0, ..." or one line
 * written again and again): the shortest period p (1..FIM_LOOP_MAX_PERIOD bytes) whose repetition
 * covers the last bytes at least 4 times and at least FIM_LOOP_MIN_BYTES bytes. Returns the length to
 * keep — the repeated region's first unit when that unit is whole lines, else the text before the
 * line the loop starts in — or len when there is no such loop (pure; exposed for tests). */
#define FIM_LOOP_MAX_PERIOD 64
#define FIM_LOOP_MIN_BYTES 96
size_t ctxd_fim_loop_cut(const char *text, size_t len);

/* The byte offset where the kept tail of a prefix starts (or the kept head of a suffix ends) so
 * that it fits `budget` tokens by count(), cutting at a line boundary when one fits, else inside
 * the line nearest the cursor at a UTF-8 character boundary. count returns 0 or a CTX_E* code. */
typedef int (*ctxd_fim_count_fn)(void *ud, const char *text, size_t len, size_t *n);
int ctxd_fim_trim_prefix(const char *text, size_t len, size_t budget, ctxd_fim_count_fn count, void *ud,
                         size_t *start, size_t *tokens);
int ctxd_fim_trim_suffix(const char *text, size_t len, size_t budget, ctxd_fim_count_fn count, void *ud,
                         size_t *end, size_t *tokens);

#endif
