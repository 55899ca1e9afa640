/* .ctxignore: gitignore syntax, evaluated by us rather than libgit2 because it must also exclude
 * tracked files (git's ignore rules apply to untracked files only). */
#include <stdlib.h>
#include <string.h>

#include "repo.h"

struct rule {
    char *pat;
    size_t len;
    bool negate, dir_only, anchored;
};

struct repo_ignore {
    struct rule *rules;
    size_t n;
};

void repo_ignore_free(struct repo_ignore *ig)
{
    if (!ig) return;
    for (size_t i = 0; i < ig->n; i++) free(ig->rules[i].pat);
    free(ig->rules);
    free(ig);
}

size_t repo_ignore_count(const struct repo_ignore *ig) { return ig ? ig->n : 0; }

int repo_ignore_parse(const char *text, size_t len, struct repo_ignore **out, struct ctx_err *e)
{
    *out = NULL;
    struct repo_ignore *ig = calloc(1, sizeof *ig);
    if (!ig) return ctx_err_set(e, CTX_ENOMEM, ".ctxignore: out of memory");
    size_t cap = 0;
    for (size_t i = 0; i < len;) {
        size_t j = i;
        while (j < len && text[j] != '\n') j++;
        size_t a = i, b = j;
        i = j + 1;
        if (b > a && text[b - 1] == '\r') b--;
        /* Trailing spaces go unless escaped with a backslash. */
        while (b > a && text[b - 1] == ' ' && !(b - 1 > a && text[b - 2] == '\\')) b--;
        if (b == a || text[a] == '#') continue;
        struct rule r = {0};
        if (text[a] == '!') {
            r.negate = true;
            a++;
        } else if (text[a] == '\\' && a + 1 < b && (text[a + 1] == '!' || text[a + 1] == '#')) {
            a++;
        }
        if (b > a && text[b - 1] == '/') {
            r.dir_only = true;
            b--;
        }
        if (b > a && text[a] == '/') {
            r.anchored = true;
            a++;
        }
        if (b == a) continue; /* "/" or "!" alone match nothing */
        if (memchr(text + a, '/', b - a)) r.anchored = true;
        if (memchr(text + a, '\0', b - a))
            continue; /* a NUL cannot occur in a path; the pattern can never match */
        r.len = b - a;
        r.pat = malloc(r.len + 1);
        if (!r.pat) goto oom;
        memcpy(r.pat, text + a, r.len);
        r.pat[r.len] = 0;
        if (ig->n == cap) {
            cap = cap ? cap * 2 : 16;
            struct rule *nr = realloc(ig->rules, cap * sizeof *nr);
            if (!nr) {
                free(r.pat);
                goto oom;
            }
            ig->rules = nr;
        }
        ig->rules[ig->n++] = r;
    }
    *out = ig;
    return 0;
oom:
    repo_ignore_free(ig);
    return ctx_err_set(e, CTX_ENOMEM, ".ctxignore: out of memory");
}

/* [...] at p (p[0] == '['); on success *pend is past ']' and *hit says whether c is in the class. A
 * '[' without a closing ']' returns false: the caller takes it literally. */
static bool match_class(const char *p, const char *pe, unsigned char c, const char **pend, bool *hit)
{
    const char *q = p + 1;
    bool neg = false;
    if (q < pe && (*q == '!' || *q == '^')) {
        neg = true;
        q++;
    }
    bool in = false;
    bool first = true;
    while (q < pe && (*q != ']' || first)) {
        first = false;
        unsigned char lo = (unsigned char)*q;
        if (lo == '\\' && q + 1 < pe) lo = (unsigned char)*++q;
        q++;
        unsigned char hi = lo;
        if (q + 1 < pe && *q == '-' && q[1] != ']') {
            hi = (unsigned char)q[1];
            if (hi == '\\' && q + 2 < pe) {
                hi = (unsigned char)q[2];
                q++;
            }
            q += 2;
        }
        if (c >= lo && c <= hi) in = true;
    }
    if (q >= pe) return false;
    *pend = q + 1;
    *hit = in != neg;
    return true;
}

/* Glob match with gitignore's '**'. *budget bounds the backtracking so that adversarial patterns
 * ("*a*a*a*a*b") cannot take exponential time; running out counts as no match. */
static bool wm(const char *p, const char *pe, const char *t, const char *te, long *budget)
{
    if (--*budget < 0) return false;
    while (p < pe) {
        char c = *p;
        if (c == '*') {
            if (p + 1 < pe && p[1] == '*') {
                while (p < pe && *p == '*') p++;
                if (p == pe) return true;
                if (*p == '/') {
                    /* "**" then '/': zero or more whole directories. */
                    for (const char *s = t;; s++) {
                        if ((s == t || s[-1] == '/') && wm(p + 1, pe, s, te, budget)) return true;
                        if (s >= te || *budget < 0) return false;
                    }
                }
                for (const char *s = t; s <= te; s++)
                    if (wm(p, pe, s, te, budget)) return true;
                return false;
            }
            p++;
            if (p == pe) return memchr(t, '/', (size_t)(te - t)) == NULL;
            for (const char *s = t; s <= te; s++) {
                if (wm(p, pe, s, te, budget)) return true;
                if (s == te || *s == '/' || *budget < 0) break;
            }
            return false;
        }
        if (t == te) return false;
        if (c == '?') {
            if (*t == '/') return false;
            p++;
            t++;
            continue;
        }
        if (c == '[') {
            const char *pend;
            bool hit;
            if (match_class(p, pe, (unsigned char)*t, &pend, &hit)) {
                if (!hit || *t == '/') return false;
                p = pend;
                t++;
                continue;
            }
        }
        if (c == '\\' && p + 1 < pe) c = *++p;
        if (*t != c) return false;
        p++;
        t++;
    }
    return t == te;
}

static bool match_one(const struct repo_ignore *ig, const char *path, size_t len, bool is_dir)
{
    const char *base = path;
    for (size_t i = 0; i < len; i++)
        if (path[i] == '/') base = path + i + 1;
    bool res = false;
    for (size_t i = 0; i < ig->n; i++) {
        const struct rule *r = &ig->rules[i];
        if (r->dir_only && !is_dir) continue;
        if (r->negate != res) continue; /* only a rule that could flip the result matters */
        long budget = 20000;
        const char *t = r->anchored ? path : base;
        if (wm(r->pat, r->pat + r->len, t, path + len, &budget)) res = !r->negate;
    }
    return res;
}

bool repo_ignore_match(const struct repo_ignore *ig, const char *path, bool is_dir)
{
    if (!ig || !ig->n || !path) return false;
    size_t len = strlen(path);
    /* git cannot re-include a file whose parent directory is excluded. */
    for (size_t i = 0; i < len; i++)
        if (path[i] == '/' && i > 0 && match_one(ig, path, i, true)) return true;
    return match_one(ig, path, len, is_dir);
}
