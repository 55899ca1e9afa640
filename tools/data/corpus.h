/* The code corpus (issue 12): "GROUP<TAB>PATH" lines from list-sources.sh, read, filtered
 * (valid UTF-8, no NUL byte, at most 256 KiB), de-duplicated by content and split by group (one
 * package or repository) into train and held-out. */
#ifndef DATA_CORPUS_H
#define DATA_CORPUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

struct data_doc {
    const char *group; /* shared string */
    char *path;
    uint64_t hash;     /* of the content, for de-duplication */
    size_t size;
    bool heldout;
};

struct data_corpus {
    struct data_doc *doc; /* unique contents only, in list order */
    size_t n;
    char **groups;
    size_t n_groups;
    size_t n_dup, n_bad; /* files dropped as duplicates / not text */
};

/* Whether a group is held out: the fixed list in README.md, or 1 in 16 by a hash of its name. */
bool data_group_heldout(const char *group);

int data_corpus_load(const char *list_path, struct data_corpus *c, struct ctx_err *e);
void data_corpus_free(struct data_corpus *c);
/* Read a corpus document; NULL if it no longer reads as text (*len = 0). */
char *data_doc_read(const struct data_doc *d, size_t *len);
uint64_t data_hash64(const void *p, size_t n);

#endif
