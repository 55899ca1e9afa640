/* Unified diffs: a parser of model-written (and git-written) patches and an applier that is all or
 * nothing per file. Used by the apply_patch tool; parse is fuzzed (tests/fuzz/fuzz_patch.c).
 *
 * Accepted: optional "diff --git"/"index"/mode lines, then per file "--- a/path" and "+++ b/path"
 * ("/dev/null" for a created or deleted file, "a/"/"b/" prefixes and a trailing tab + timestamp
 * are stripped), then hunks "@@ -l[,c] +l[,c] @@" whose line counts must match their bodies,
 * "\ No newline at end of file" markers. An empty line inside a hunk counts as an empty context
 * line (editors and models drop the lone space). */
#ifndef AGENT_PATCH_H
#define AGENT_PATCH_H

#include <stdbool.h>
#include <stddef.h>

#include "err.h"

struct agent_patch_line {
    char kind;          /* ' ', '-' or '+' */
    const char *text;   /* into the patch's copy of the text; no newline */
    size_t len;
    bool no_eol;        /* followed by "\ No newline at end of file" */
};

struct agent_patch_hunk {
    size_t old_start, old_count, new_start, new_count;
    struct agent_patch_line *lines;
    size_t nlines;
    size_t at_line;     /* 1-based line of the "@@" in the patch text */
};

struct agent_patch_file {
    char *old_path;     /* NULL for /dev/null (a new file) */
    char *new_path;     /* NULL for /dev/null (a deleted file) */
    struct agent_patch_hunk *hunks;
    size_t nhunks;
};

struct agent_patch {
    char *text;
    struct agent_patch_file *files;
    size_t nfiles;
};

/* Parse; errors (CTX_EFORMAT) name the patch line and say what was expected. A patch without any
 * file is an error. */
int agent_patch_parse(const char *text, size_t len, struct agent_patch **out, struct ctx_err *e);
void agent_patch_free(struct agent_patch *p);

/* Apply one file's hunks to `old` (NULL/0 for a new file). Each hunk is placed at its line number
 * or, if the context moved, at the nearest position where its old lines match exactly (then
 * ignoring trailing white space), after the previous hunk. *out is malloc'd (NUL-terminated). A
 * hunk that fits nowhere fails with CTX_ENOTFOUND naming the hunk and the first line that differs
 * at its stated position. */
int agent_patch_apply_file(const struct agent_patch_file *f, const char *old, size_t old_len,
                           char **out, size_t *out_len, struct ctx_err *e);

#endif
