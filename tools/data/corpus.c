#include "corpus.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "json.h"
#include "tokenizer.h"

/* Held out whatever their hash says: a real git repository (the agent evaluation runs on it) and
 * packages of each kind of source, so that perplexity covers C, Python and JavaScript. */
static const char *const heldout_fixed[] = {
    "repo:redis", "py3:pygments", "npm:ajv", "inc:X11", "share:cmake-3.25", NULL,
};

uint64_t data_hash64(const void *p, size_t n)
{
    const unsigned char *s = p;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ s[i]) * 0x100000001b3ull;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    return h ^ (h >> 33);
}

bool data_group_heldout(const char *group)
{
    for (size_t i = 0; heldout_fixed[i]; i++)
        if (strcmp(group, heldout_fixed[i]) == 0)
            return true;
    /* Large training repositories stay in training. */
    if (strncmp(group, "repo:", 5) == 0 || strcmp(group, "sub:subprojects") == 0)
        return false;
    return data_hash64(group, strlen(group)) % 16 == 0;
}

char *data_doc_read(const struct data_doc *d, size_t *len)
{
    char *buf = NULL;
    struct ctx_err e = {0};
    *len = 0;
    if (ctx_read_file(d->path, 256 * 1024, &buf, len, &e))
        return NULL;
    if (*len == 0 || memchr(buf, 0, *len) || inf_utf8_invalid_at(buf, *len)) {
        free(buf);
        *len = 0;
        return NULL;
    }
    return buf;
}

void data_corpus_free(struct data_corpus *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->doc[i].path);
    for (size_t i = 0; i < c->n_groups; i++)
        free(c->groups[i]);
    free(c->doc);
    free(c->groups);
    memset(c, 0, sizeof *c);
}

int data_corpus_load(const char *list_path, struct data_corpus *c, struct ctx_err *e)
{
    memset(c, 0, sizeof *c);
    FILE *f = fopen(list_path, "r");
    if (!f)
        return ctx_err_errno(e, CTX_EIO, errno, "%s", list_path);
    size_t seen_cap = 1 << 17, seen_n = 0;
    uint64_t *seen = calloc(seen_cap, sizeof *seen);
    char *line = NULL;
    size_t lcap = 0, cap = 0, gcap = 0;
    ssize_t ll;
    int rc = 0;
    size_t lineno = 0;
    while ((ll = getline(&line, &lcap, f)) > 0) {
        lineno++;
        if (line[ll - 1] == '\n')
            line[--ll] = 0;
        char *tab = strchr(line, '\t');
        if (!tab) {
            rc = ctx_err_set(e, CTX_EFORMAT, "%s:%zu: no tab between group and path", list_path, lineno);
            break;
        }
        *tab = 0;
        const char *group = line, *path = tab + 1;
        struct data_doc d = {.path = (char *)path};
        size_t len;
        char *text = data_doc_read(&d, &len);
        if (!text) {
            c->n_bad++;
            continue;
        }
        uint64_t h = data_hash64(text, len);
        free(text);
        if (!h)
            h = 1;
        size_t k = h & (seen_cap - 1);
        bool dup = false;
        while (seen[k]) {
            if (seen[k] == h) {
                dup = true;
                break;
            }
            k = (k + 1) & (seen_cap - 1);
        }
        if (dup) {
            c->n_dup++;
            continue;
        }
        seen[k] = h;
        if (++seen_n * 2 > seen_cap) {
            size_t nc = seen_cap * 2;
            uint64_t *ns = calloc(nc, sizeof *ns);
            for (size_t i = 0; i < seen_cap; i++)
                if (seen[i]) {
                    size_t j = seen[i] & (nc - 1);
                    while (ns[j])
                        j = (j + 1) & (nc - 1);
                    ns[j] = seen[i];
                }
            free(seen);
            seen = ns;
            seen_cap = nc;
        }
        if (!c->n_groups || strcmp(c->groups[c->n_groups - 1], group) != 0) {
            size_t g;
            for (g = 0; g < c->n_groups; g++)
                if (strcmp(c->groups[g], group) == 0)
                    break;
            if (g == c->n_groups) {
                if (c->n_groups == gcap) {
                    gcap = gcap ? gcap * 2 : 256;
                    c->groups = realloc(c->groups, gcap * sizeof *c->groups);
                }
                c->groups[c->n_groups++] = strdup(group);
            } else { /* keep the group last for the fast path */
                char *t = c->groups[g];
                memmove(c->groups + g, c->groups + g + 1, (c->n_groups - g - 1) * sizeof *c->groups);
                c->groups[c->n_groups - 1] = t;
            }
        }
        if (c->n == cap) {
            cap = cap ? cap * 2 : 4096;
            c->doc = realloc(c->doc, cap * sizeof *c->doc);
        }
        const char *gname = c->groups[c->n_groups - 1];
        c->doc[c->n++] = (struct data_doc){.group = gname, .path = strdup(path), .hash = h, .size = len,
                                           .heldout = data_group_heldout(gname)};
    }
    free(line);
    free(seen);
    fclose(f);
    if (rc)
        data_corpus_free(c);
    return rc;
}
