/* Per-path commit counts from history, kept between snapshots and extended incrementally. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct churn_ent {
    char *path; /* NULL: empty slot */
    uint32_t commits;
    int64_t last;
};

struct repo_churn {
    struct churn_ent *tab;
    size_t cap, n; /* cap is a power of two */
    char head[41];
    uint32_t walked;
    bool truncated;
};

struct repo_churn *repo_churn_new(void) { return calloc(1, sizeof(struct repo_churn)); }

static void churn_clear(struct repo_churn *c)
{
    for (size_t i = 0; i < c->cap; i++) free(c->tab[i].path);
    free(c->tab);
    c->tab = NULL;
    c->cap = c->n = 0;
    c->head[0] = 0;
    c->walked = 0;
    c->truncated = false;
}

void repo_churn_free(struct repo_churn *c)
{
    if (!c) return;
    churn_clear(c);
    free(c);
}

const char *repo_churn_head(const struct repo_churn *c) { return c->head; }
uint32_t repo_churn_walked(const struct repo_churn *c) { return c->walked; }
bool repo_churn_truncated(const struct repo_churn *c) { return c->truncated; }

int repo_churn_set_head(struct repo_churn *c, const char *head_hex, uint32_t walked, bool truncated)
{
    size_t l = strlen(head_hex);
    if (l != 0 && l != 40) return CTX_EINVAL;
    memcpy(c->head, head_hex, l + 1);
    c->walked = walked;
    c->truncated = truncated;
    return 0;
}

static struct churn_ent *slot(struct repo_churn *c, const char *path, bool create)
{
    if (c->cap == 0 || (create && (c->n + 1) * 4 > c->cap * 3)) {
        if (!create && c->cap == 0) return NULL;
        size_t ncap = c->cap ? c->cap * 2 : 256;
        struct churn_ent *nt = calloc(ncap, sizeof *nt);
        if (!nt) return NULL;
        for (size_t i = 0; i < c->cap; i++) {
            if (!c->tab[i].path) continue;
            size_t h = (size_t)repo_hash64(c->tab[i].path, strlen(c->tab[i].path)) & (ncap - 1);
            while (nt[h].path) h = (h + 1) & (ncap - 1);
            nt[h] = c->tab[i];
        }
        free(c->tab);
        c->tab = nt;
        c->cap = ncap;
    }
    size_t h = (size_t)repo_hash64(path, strlen(path)) & (c->cap - 1);
    while (c->tab[h].path) {
        if (strcmp(c->tab[h].path, path) == 0) return &c->tab[h];
        h = (h + 1) & (c->cap - 1);
    }
    if (!create) return NULL;
    c->tab[h].path = strdup(path);
    if (!c->tab[h].path) return NULL;
    c->tab[h].commits = 0;
    c->tab[h].last = 0;
    c->n++;
    return &c->tab[h];
}

int repo_churn_set(struct repo_churn *c, const char *path, uint32_t commits, int64_t last_change)
{
    struct churn_ent *s = slot(c, path, true);
    if (!s) return CTX_ENOMEM;
    s->commits = commits;
    s->last = last_change;
    return 0;
}

bool repo_churn_get(const struct repo_churn *c, const char *path, uint32_t *commits, int64_t *last_change)
{
    struct churn_ent *s = slot((struct repo_churn *)c, path, false);
    if (!s) return false;
    *commits = s->commits;
    *last_change = s->last;
    return true;
}

static int cmp_ent_path(const void *a, const void *b)
{
    return strcmp((*(const struct churn_ent *const *)a)->path, (*(const struct churn_ent *const *)b)->path);
}

void repo_churn_foreach(const struct repo_churn *c,
                        void (*fn)(void *ud, const char *path, uint32_t commits, int64_t last_change),
                        void *ud)
{
    /* In path order, so that what the caller persists does not depend on hash layout. */
    const struct churn_ent **v = malloc((c->n ? c->n : 1) * sizeof *v);
    if (!v) return;
    size_t k = 0;
    for (size_t i = 0; i < c->cap; i++)
        if (c->tab[i].path) v[k++] = &c->tab[i];
    qsort(v, k, sizeof *v, cmp_ent_path);
    for (size_t i = 0; i < k; i++) fn(ud, v[i]->path, v[i]->commits, v[i]->last);
    free(v);
}

int repo_git_err(struct ctx_err *e, int gitrc, const char *fmt, ...)
{
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    const git_error *ge = git_error_last();
    int code = gitrc == GIT_ENOTFOUND ? CTX_ENOTFOUND : CTX_EIO;
    return ctx_err_set(e, code, "%s: %s (libgit2 %d)", what, ge && ge->message ? ge->message : "unknown error",
                       gitrc);
}

struct diff_ud {
    struct repo_churn *c;
    int64_t when;
    int rc;
};

static int count_delta(const git_diff_delta *d, float progress, void *payload)
{
    (void)progress;
    struct diff_ud *u = payload;
    const char *paths[2] = {d->new_file.path, d->old_file.path};
    for (int i = 0; i < 2; i++) {
        if (!paths[i] || (i == 1 && d->new_file.path && strcmp(paths[0], paths[1]) == 0)) continue;
        struct churn_ent *s = slot(u->c, paths[i], true);
        if (!s) {
            u->rc = CTX_ENOMEM;
            return -1;
        }
        s->commits++;
        if (u->when > s->last) s->last = u->when;
    }
    return 0;
}

int repo_churn_update(git_repository *g, const git_oid *head, struct repo_churn *c, uint32_t max,
                      struct ctx_err *e)
{
    char hex[41];
    git_oid_tostr(hex, sizeof hex, head);
    if (strcmp(hex, c->head) == 0) return 0;
    git_oid known;
    bool have_known = c->head[0] && git_oid_fromstr(&known, c->head) == 0;

    /* First-parent walk by hand: libgit2 1.5's revwalk fails on a shallow clone before yielding
     * anything, while git_commit_parent simply fails at the boundary. */
    git_commit **list = NULL;
    size_t n = 0, cap = 0;
    bool reached = false, truncated = false;
    git_commit *cur = NULL;
    int rc = git_commit_lookup(&cur, g, head);
    if (rc) return repo_git_err(e, rc, "history: looking up HEAD %s", hex);
    uint32_t limit = max ? max : 1;
    while (cur) {
        if (have_known && git_oid_equal(git_commit_id(cur), &known)) {
            reached = true;
            git_commit_free(cur);
            break;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            git_commit **nl = realloc(list, cap * sizeof *nl);
            if (!nl) {
                git_commit_free(cur);
                rc = ctx_err_set(e, CTX_ENOMEM, "history: out of memory");
                goto out;
            }
            list = nl;
        }
        list[n++] = cur;
        cur = NULL;
        if (n >= limit) {
            truncated = true;
            break;
        }
        if (git_commit_parentcount(list[n - 1]) == 0) break;
        if (git_commit_parent(&cur, list[n - 1], 0)) {
            /* A shallow boundary: the parent object is not here. */
            truncated = true;
            cur = NULL;
        }
    }
    if (!reached) {
        churn_clear(c);
    } else {
        truncated = c->truncated;
    }
    git_diff_options dopt = GIT_DIFF_OPTIONS_INIT;
    dopt.flags |= GIT_DIFF_SKIP_BINARY_CHECK;
    uint32_t counted = 0;
    for (size_t i = 0; i < n; i++) {
        git_commit *cm = list[i];
        git_tree *t = NULL, *pt = NULL;
        git_commit *parent = NULL;
        unsigned np = git_commit_parentcount(cm);
        if (np > 0 && git_commit_parent(&parent, cm, 0)) {
            /* Its parent is past the shallow boundary: what it changed is unknown. */
            git_error_clear();
            continue;
        }
        if ((rc = git_commit_tree(&t, cm)) || (parent && (rc = git_commit_tree(&pt, parent)))) {
            git_commit_free(parent);
            git_tree_free(t);
            rc = repo_git_err(e, rc, "history: reading the tree of a commit");
            goto out;
        }
        git_diff *d = NULL;
        rc = git_diff_tree_to_tree(&d, g, pt, t, &dopt);
        if (rc == 0) {
            struct diff_ud u = {c, git_commit_time(cm), 0};
            int frc = git_diff_foreach(d, count_delta, NULL, NULL, NULL, &u);
            if (u.rc) rc = u.rc;
            else if (frc) rc = frc;
        }
        git_diff_free(d);
        git_tree_free(pt);
        git_tree_free(t);
        git_commit_free(parent);
        if (rc) {
            if (rc == CTX_ENOMEM) rc = ctx_err_set(e, rc, "history: out of memory");
            else rc = repo_git_err(e, rc, "history: diffing a commit against its parent");
            goto out;
        }
        counted++;
    }
    memcpy(c->head, hex, sizeof hex);
    c->walked = (reached ? c->walked : 0) + counted;
    c->truncated = truncated;
    rc = 0;
out:
    for (size_t i = 0; i < n; i++) git_commit_free(list[i]);
    free(list);
    return rc;
}
