/* The tags queries compiled into the library (generated queries.c, from grammars/). */
#ifndef REPO_QUERIES_H
#define REPO_QUERIES_H

#include <stddef.h>

struct repo_query_text {
    const char *lang; /* repo_lang_name() of the language */
    const char *text;
    size_t len;
};

extern const struct repo_query_text repo_query_texts[];
extern const unsigned repo_query_text_count;

#endif
