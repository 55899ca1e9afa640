/* Shared between the repo/ sources; not part of the API. */
#ifndef REPO_INTERNAL_H
#define REPO_INTERNAL_H

#include <git2.h>

#include "repo.h"

struct repo_priv {
    git_repository *git;
    struct repo_ignore *ctxignore; /* NULL when there is no .ctxignore */
    bool libgit2_inited;
};

/* Walk first parents from `head` and add the commits not yet counted in `c` (all of them, up to
 * max, when c's head is not an ancestor within reach). */
int repo_churn_update(git_repository *g, const git_oid *head, struct repo_churn *c, uint32_t max,
                      struct ctx_err *e);

/* t (len bytes, malloc'd, NUL-terminated) with every byte that does not start a valid UTF-8
 * sequence replaced by U+FFFD; t itself when it was valid, else a new buffer (t freed). NULL on
 * allocation failure (t untouched). */
char *repo_utf8_lossy(char *t, size_t *len, bool *changed);

/* A libgit2 error as a ctx_err, prefixed with what we were doing. */
int repo_git_err(struct ctx_err *e, int gitrc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
