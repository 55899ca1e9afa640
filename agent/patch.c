/* Unified diff parsing and application (patch.h). */
#include "patch.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct line {
    const char *p;
    size_t len;
};

static void free_file(struct agent_patch_file *f)
{
    free(f->old_path);
    free(f->new_path);
    for (size_t i = 0; i < f->nhunks; i++)
        free(f->hunks[i].lines);
    free(f->hunks);
}

void agent_patch_free(struct agent_patch *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->nfiles; i++)
        free_file(&p->files[i]);
    free(p->files);
    free(p->text);
    free(p);
}

static bool starts(const struct line *l, const char *s)
{
    size_t n = strlen(s);
    return l->len >= n && memcmp(l->p, s, n) == 0;
}

/* "--- a/path\tdate" -> "path"; "/dev/null" -> NULL with *is_null. */
static int header_path(const struct line *l, char **out, bool *is_null)
{
    const char *s = l->p + 4;
    size_t n = l->len - 4;
    const char *tab = memchr(s, '\t', n);
    if (tab)
        n = (size_t)(tab - s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\r'))
        n--;
    *is_null = n == 9 && !memcmp(s, "/dev/null", 9);
    *out = NULL;
    if (*is_null)
        return 0;
    if (n >= 2 && (s[0] == 'a' || s[0] == 'b') && s[1] == '/')
        s += 2, n -= 2;
    if (!n)
        return -1;
    if (!(*out = malloc(n + 1)))
        return -2;
    memcpy(*out, s, n);
    (*out)[n] = 0;
    return 0;
}

static bool read_num(const char **s, const char *end, size_t *v)
{
    const char *p = *s;
    size_t x = 0;
    if (p >= end || *p < '0' || *p > '9')
        return false;
    while (p < end && *p >= '0' && *p <= '9') {
        if (x > (SIZE_MAX - 9) / 10)
            return false;
        x = x * 10 + (size_t)(*p - '0');
        p++;
    }
    *v = x;
    *s = p;
    return true;
}

static bool hunk_header(const struct line *l, struct agent_patch_hunk *h)
{
    const char *s = l->p + 3, *end = l->p + l->len;
    if (s >= end || *s != '-')
        return false;
    s++;
    if (!read_num(&s, end, &h->old_start))
        return false;
    h->old_count = 1;
    if (s < end && *s == ',') {
        s++;
        if (!read_num(&s, end, &h->old_count))
            return false;
    }
    if (end - s < 2 || s[0] != ' ' || s[1] != '+')
        return false;
    s += 2;
    if (!read_num(&s, end, &h->new_start))
        return false;
    h->new_count = 1;
    if (s < end && *s == ',') {
        s++;
        if (!read_num(&s, end, &h->new_count))
            return false;
    }
    /* Line numbers past any real file would only overflow the placement arithmetic. */
    if (h->old_start > 100000000 || h->old_count > 100000000 || h->new_start > 100000000 ||
        h->new_count > 100000000)
        return false;
    return end - s >= 3 && !memcmp(s, " @@", 3);
}

int agent_patch_parse(const char *text, size_t len, struct agent_patch **out, struct ctx_err *e)
{
    *out = NULL;
    struct agent_patch *p = calloc(1, sizeof *p);
    if (!p || !(p->text = malloc(len + 1))) {
        free(p);
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    }
    memcpy(p->text, text, len);
    p->text[len] = 0;
    /* Split into lines (without "\n"; a "\r" before it is kept as text: CRLF files patch as such). */
    size_t nl = 0, capl = 64;
    struct line *ls = malloc(capl * sizeof *ls);
    if (!ls) {
        agent_patch_free(p);
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < len;) {
        const char *nlp = memchr(p->text + i, '\n', len - i);
        size_t end = nlp ? (size_t)(nlp - p->text) : len;
        if (nl == capl) {
            struct line *t = realloc(ls, 2 * capl * sizeof *ls);
            if (!t) {
                free(ls);
                agent_patch_free(p);
                return ctx_err_set(e, CTX_ENOMEM, "out of memory");
            }
            ls = t;
            capl *= 2;
        }
        ls[nl].p = p->text + i;
        ls[nl].len = end - i;
        nl++;
        i = end + 1;
    }
    int rc = 0;
    size_t i = 0;
    while (!rc && i < nl) {
        if (!starts(&ls[i], "--- ")) {
            if (starts(&ls[i], "@@ ")) {
                rc = ctx_err_set(e, CTX_EFORMAT, "patch line %zu: a hunk before any \"--- a/path\" / "
                                                 "\"+++ b/path\" header", i + 1);
                break;
            }
            i++; /* "diff --git", "index", mode lines, prose around the patch */
            continue;
        }
        if (i + 1 >= nl || !starts(&ls[i + 1], "+++ ")) {
            rc = ctx_err_set(e, CTX_EFORMAT, "patch line %zu: \"--- \" must be followed by a "
                                             "\"+++ \" line", i + 1);
            break;
        }
        struct agent_patch_file *nf = realloc(p->files, (p->nfiles + 1) * sizeof *nf);
        if (!nf) {
            rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
            break;
        }
        p->files = nf;
        struct agent_patch_file *f = &p->files[p->nfiles++];
        memset(f, 0, sizeof *f);
        bool onull, nnull;
        int r1 = header_path(&ls[i], &f->old_path, &onull);
        int r2 = r1 ? 0 : header_path(&ls[i + 1], &f->new_path, &nnull);
        if (r1 == -2 || r2 == -2) {
            rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
            break;
        }
        if (r1 || r2 || (onull && nnull)) {
            rc = ctx_err_set(e, CTX_EFORMAT, "patch line %zu: a file header needs a path (or "
                                             "/dev/null on one side only)", i + (r1 ? 1 : 2));
            break;
        }
        i += 2;
        while (!rc && i < nl && starts(&ls[i], "@@ ")) {
            struct agent_patch_hunk h = {0};
            if (!hunk_header(&ls[i], &h)) {
                rc = ctx_err_set(e, CTX_EFORMAT, "patch line %zu: bad hunk header (expected "
                                                 "\"@@ -start,count +start,count @@\")", i + 1);
                break;
            }
            h.at_line = i + 1;
            if (h.old_count > nl || h.new_count > nl) {
                rc = ctx_err_set(e, CTX_EFORMAT, "patch line %zu: the hunk's line counts exceed "
                                                 "the patch", i + 1);
                break;
            }
            size_t want_old = h.old_count, want_new = h.new_count, k = i + 1;
            if (!(h.lines = calloc(want_old + want_new + 1, sizeof *h.lines))) {
                rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
                break;
            }
            while (!rc && (want_old || want_new)) {
                if (k >= nl) {
                    rc = ctx_err_set(e, CTX_EFORMAT, "patch line %zu: the hunk at line %zu ends "
                                     "early (%zu old and %zu new lines missing)", k, h.at_line,
                                     want_old, want_new);
                    break;
                }
                const struct line *l = &ls[k];
                char kind = l->len ? l->p[0] : ' ';
                if (kind == '\\') {
                    if (h.nlines)
                        h.lines[h.nlines - 1].no_eol = true;
                    k++;
                    continue;
                }
                bool ok = (kind == ' ' && want_old && want_new) || (kind == '-' && want_old) ||
                          (kind == '+' && want_new);
                if (!ok) {
                    rc = ctx_err_set(e, CTX_EFORMAT, "patch line %zu: unexpected line in the hunk "
                                     "at line %zu (it declares %zu old and %zu new lines; lines "
                                     "start with ' ', '-' or '+')", k + 1, h.at_line, h.old_count,
                                     h.new_count);
                    break;
                }
                struct agent_patch_line *pl = &h.lines[h.nlines++];
                pl->kind = kind;
                pl->text = l->len ? l->p + 1 : l->p;
                pl->len = l->len ? l->len - 1 : 0;
                if (kind != '+')
                    want_old--;
                if (kind != '-')
                    want_new--;
                k++;
            }
            if (!rc && k < nl && ls[k].len && ls[k].p[0] == '\\') {
                if (h.nlines)
                    h.lines[h.nlines - 1].no_eol = true;
                k++;
            }
            struct agent_patch_hunk *nh = rc ? NULL : realloc(f->hunks, (f->nhunks + 1) * sizeof *nh);
            if (!nh) {
                free(h.lines);
                if (!rc)
                    rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
                break;
            }
            f->hunks = nh;
            f->hunks[f->nhunks++] = h;
            i = k;
        }
        if (!rc && !f->nhunks && !(f->old_path == NULL || f->new_path == NULL))
            rc = ctx_err_set(e, CTX_EFORMAT, "patch line %zu: file %s has no hunks", i,
                             f->new_path ? f->new_path : "?");
    }
    free(ls);
    if (!rc && !p->nfiles)
        rc = ctx_err_set(e, CTX_EFORMAT, "no file in the patch: expected \"--- a/path\", "
                                         "\"+++ b/path\" and \"@@ ... @@\" hunks");
    if (rc) {
        agent_patch_free(p);
        return rc;
    }
    *out = p;
    return 0;
}

/* ---- apply ------------------------------------------------------------------------------- */

static bool eq_line(const char *a, size_t al, const char *b, size_t bl, bool loose)
{
    if (loose) {
        while (al && (a[al - 1] == ' ' || a[al - 1] == '\t' || a[al - 1] == '\r'))
            al--;
        while (bl && (b[bl - 1] == ' ' || b[bl - 1] == '\t' || b[bl - 1] == '\r'))
            bl--;
    }
    return al == bl && !memcmp(a, b, al);
}

static bool hunk_fits(const struct agent_patch_hunk *h, const struct line *ol, size_t nold, size_t at,
                      bool loose)
{
    if (at + h->old_count > nold)
        return false;
    size_t j = at;
    for (size_t k = 0; k < h->nlines; k++) {
        const struct agent_patch_line *l = &h->lines[k];
        if (l->kind == '+')
            continue;
        if (!eq_line(ol[j].p, ol[j].len, l->text, l->len, loose))
            return false;
        j++;
    }
    return true;
}

static void describe_miss(const struct agent_patch_file *f, size_t hi, const struct line *ol,
                          size_t nold, struct ctx_err *e)
{
    const struct agent_patch_hunk *h = &f->hunks[hi];
    size_t at = h->old_start ? h->old_start - 1 : 0, j = at;
    const char *path = f->old_path ? f->old_path : "?";
    for (size_t k = 0; k < h->nlines; k++) {
        const struct agent_patch_line *l = &h->lines[k];
        if (l->kind == '+')
            continue;
        if (j >= nold) {
            ctx_err_set(e, CTX_ENOTFOUND, "hunk %zu of %s (@@ -%zu,%zu @@) does not apply: the "
                        "file has only %zu lines; read the file again and regenerate the patch",
                        hi + 1, path, h->old_start, h->old_count, nold);
            return;
        }
        if (!eq_line(ol[j].p, ol[j].len, l->text, l->len, false)) {
            ctx_err_set(e, CTX_ENOTFOUND, "hunk %zu of %s (@@ -%zu,%zu @@) does not apply and its "
                        "lines were found nowhere else: at line %zu the patch expects \"%.*s\" but "
                        "the file has \"%.*s\"; read the file again and regenerate the patch",
                        hi + 1, path, h->old_start, h->old_count, j + 1, (int)(l->len > 120 ? 120 : l->len),
                        l->text, (int)(ol[j].len > 120 ? 120 : ol[j].len), ol[j].p);
            return;
        }
        j++;
    }
    ctx_err_set(e, CTX_ENOTFOUND, "hunk %zu of %s (@@ -%zu,%zu @@) does not apply after the hunk "
                "before it (hunks must be in file order)", hi + 1, path, h->old_start, h->old_count);
}

int agent_patch_apply_file(const struct agent_patch_file *f, const char *old, size_t old_len,
                           char **out, size_t *out_len, struct ctx_err *e)
{
    *out = NULL;
    *out_len = 0;
    size_t nold = 0;
    for (size_t i = 0; i < old_len; i++)
        nold += old[i] == '\n';
    bool old_eol = !old_len || old[old_len - 1] == '\n';
    if (old_len && !old_eol)
        nold++;
    struct line *ol = malloc((nold + 1) * sizeof *ol);
    if (!ol)
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    for (size_t i = 0, k = 0; i < old_len; k++) {
        const char *nlp = memchr(old + i, '\n', old_len - i);
        size_t end = nlp ? (size_t)(nlp - old) : old_len;
        ol[k].p = old + i;
        ol[k].len = end - i;
        i = end + 1;
    }
    /* Output size bound: old text, a newline after its last line, every added line with a
     * newline, and the terminating NUL. */
    size_t bound = old_len + 2;
    for (size_t h = 0; h < f->nhunks; h++)
        for (size_t k = 0; k < f->hunks[h].nlines; k++)
            bound += f->hunks[h].lines[k].len + 1;
    char *buf = malloc(bound);
    if (!buf) {
        free(ol);
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    }
    size_t w = 0, cur = 0; /* next old line to copy */
    bool final_eol = old_eol;
    bool last_line_written = false;
    for (size_t hi = 0; hi < f->nhunks; hi++) {
        const struct agent_patch_hunk *h = &f->hunks[hi];
        size_t nominal = h->old_start ? h->old_start - 1 : 0;
        if (h->old_count == 0 && h->old_start)
            nominal = h->old_start; /* "-l,0": insert after line l */
        size_t at = SIZE_MAX;
        for (int loose = 0; loose < 2 && at == SIZE_MAX; loose++) {
            for (size_t d = 0; d <= nold; d++) {
                if (nominal >= d && nominal - d >= cur && hunk_fits(h, ol, nold, nominal - d, loose)) {
                    at = nominal - d;
                    break;
                }
                if (d && nominal + d <= nold && nominal + d >= cur &&
                    hunk_fits(h, ol, nold, nominal + d, loose)) {
                    at = nominal + d;
                    break;
                }
                if (nominal < d && nominal + d > nold)
                    break;
            }
        }
        if (at == SIZE_MAX) {
            describe_miss(f, hi, ol, nold, e);
            free(ol);
            free(buf);
            return CTX_ENOTFOUND;
        }
        for (; cur < at; cur++) {
            memcpy(buf + w, ol[cur].p, ol[cur].len);
            w += ol[cur].len;
            buf[w++] = '\n';
        }
        bool reaches_end = at + h->old_count == nold;
        size_t j = at;
        for (size_t k = 0; k < h->nlines; k++) {
            const struct agent_patch_line *l = &h->lines[k];
            if (l->kind == '-') {
                j++;
                continue;
            }
            if (l->kind == ' ') {
                /* Context keeps the file's own bytes (a loose match must not rewrite it). */
                memcpy(buf + w, ol[j].p, ol[j].len);
                w += ol[j].len;
                j++;
            } else {
                memcpy(buf + w, l->text, l->len);
                w += l->len;
            }
            buf[w++] = '\n';
        }
        cur = at + h->old_count;
        if (reaches_end) {
            /* The file's last line is now the hunk's last new-side line. */
            const struct agent_patch_line *last = NULL;
            for (size_t k = 0; k < h->nlines; k++)
                if (h->lines[k].kind != '-')
                    last = &h->lines[k];
            final_eol = last ? !last->no_eol : old_eol;
            last_line_written = true;
        } else {
            last_line_written = false;
        }
    }
    for (; cur < nold; cur++) {
        memcpy(buf + w, ol[cur].p, ol[cur].len);
        w += ol[cur].len;
        buf[w++] = '\n';
        last_line_written = false;
    }
    (void)last_line_written;
    if (w && !final_eol)
        w--; /* drop the newline after the last line */
    buf[w] = 0;
    free(ol);
    *out = buf;
    *out_len = w;
    return 0;
}
