#include "lsp_edit.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- URIs ---- */

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int lsp_uri_to_path(const char *uri, char **path, struct ctx_err *e)
{
    *path = NULL;
    if (strncmp(uri, "file://", 7) != 0)
        return ctx_err_set(e, CTX_EINVAL, "uri %s: only file: URIs name files", uri);
    const char *p = uri + 7;
    if (strncmp(p, "localhost/", 10) == 0)
        p += 9;
    if (*p != '/')
        return ctx_err_set(e, CTX_EINVAL, "uri %s: a file URI on another host", uri);
    char *out = malloc(strlen(p) + 1);
    if (!out)
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    size_t n = 0;
    for (; *p && *p != '?' && *p != '#'; p++) {
        if (*p == '%') {
            int h = hexval(p[1]), l = h < 0 ? -1 : hexval(p[2]);
            if (l < 0 || (h == 0 && l == 0)) {
                free(out);
                return ctx_err_set(e, CTX_EINVAL, "uri %s: bad %%-escape at byte %zu", uri, (size_t)(p - uri));
            }
            out[n++] = (char)(h * 16 + l);
            p += 2;
        } else {
            out[n++] = *p;
        }
    }
    out[n] = 0;
    *path = out;
    return 0;
}

char *lsp_path_to_uri(const char *path)
{
    size_t n = strlen(path);
    char *out = malloc(7 + 3 * n + 1);
    if (!out)
        return NULL;
    size_t k = (size_t)sprintf(out, "file://");
    for (const unsigned char *p = (const unsigned char *)path; *p; p++) {
        unsigned char c = *p;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
            c == '_' || c == '~' || c == '/')
            out[k++] = (char)c;
        else
            k += (size_t)sprintf(out + k, "%%%02X", c);
    }
    out[k] = 0;
    return out;
}

/* ---- unified diffs ---- */

struct dline {
    char kind;          /* ' ', '-', '+' */
    const char *s;      /* content without the kind character and without '\n' */
    size_t n;
    bool no_eol;        /* followed by "\ No newline at end of file" */
};

struct hunk {
    long old_start, old_count, new_start, new_count;
    struct dline *l;
    size_t n, cap;
};

struct fdiff {
    char *old_path, *new_path; /* NULL for /dev/null */
    struct hunk *h;
    size_t n, cap;
};

static void fdiff_clear(struct fdiff *f)
{
    for (size_t i = 0; i < f->n; i++)
        free(f->h[i].l);
    free(f->h);
    free(f->old_path);
    free(f->new_path);
    memset(f, 0, sizeof *f);
}

/* Content length without one trailing '\r' (lines compare without their line ending). */
static size_t bare(const char *s, size_t n)
{
    return n && s[n - 1] == '\r' ? n - 1 : n;
}

/* "a/x" or "b/x" -> "x" when `strip`; "/dev/null" -> NULL; a tab ends the name (timestamps). */
static int diff_path(const char *s, size_t n, bool strip, char **out, struct ctx_err *e)
{
    n = bare(s, n);
    const char *tab = memchr(s, '\t', n);
    if (tab)
        n = (size_t)(tab - s);
    *out = NULL;
    if (n == 9 && memcmp(s, "/dev/null", 9) == 0)
        return 0;
    if (strip && n > 2 && (s[0] == 'a' || s[0] == 'b') && s[1] == '/') {
        s += 2;
        n -= 2;
    }
    if (!n)
        return ctx_err_set(e, CTX_EFORMAT, "diff: an empty file name");
    if (s[0] == '/')
        return ctx_err_set(e, CTX_EINVAL, "diff: %.*s is absolute: it leaves the repository", (int)n, s);
    /* nothing outside the repository: no ".." component */
    for (size_t i = 0; i + 1 < n; i++)
        if (s[i] == '.' && s[i + 1] == '.' && (i == 0 || s[i - 1] == '/') && (i + 2 == n || s[i + 2] == '/'))
            return ctx_err_set(e, CTX_EINVAL, "diff: %.*s leaves the repository", (int)n, s);
    if (!(*out = strndup(s, n)))
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    return 0;
}

static bool parse_range(const char **p, long *start, long *count)
{
    char *end;
    *start = strtol(*p, &end, 10);
    if (end == *p || *start < 0)
        return false;
    *count = 1;
    if (*end == ',') {
        const char *c = end + 1;
        *count = strtol(c, &end, 10);
        if (end == c || *count < 0)
            return false;
    }
    *p = end;
    return true;
}

struct text_lines {
    const char *t;
    size_t len;
    size_t *start; /* start[i] of line i; start[n] = len */
    size_t n;
    bool crlf;
};

static int index_lines(const char *t, size_t len, struct text_lines *tl, struct ctx_err *e)
{
    size_t cap = 64;
    tl->t = t;
    tl->len = len;
    tl->n = 0;
    tl->crlf = false;
    tl->start = malloc(cap * sizeof *tl->start);
    if (!tl->start)
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    size_t i = 0;
    bool first_eol = true;
    while (i < len) {
        if (tl->n + 2 > cap) {
            size_t *g = realloc(tl->start, (cap *= 2) * sizeof *g);
            if (!g)
                return ctx_err_set(e, CTX_ENOMEM, "out of memory");
            tl->start = g;
        }
        tl->start[tl->n++] = i;
        const char *nl = memchr(t + i, '\n', len - i);
        if (nl && first_eol) {
            tl->crlf = nl > t + i && nl[-1] == '\r';
            first_eol = false;
        }
        i = nl ? (size_t)(nl - t) + 1 : len;
    }
    tl->start[tl->n] = len;
    return 0;
}

/* Line i's content without its terminator. */
static size_t line_len(const struct text_lines *tl, size_t i)
{
    size_t a = tl->start[i], b = tl->start[i + 1];
    if (b > a && tl->t[b - 1] == '\n')
        b--;
    return bare(tl->t + a, b - a);
}

static bool hunk_matches(const struct text_lines *tl, const struct hunk *h, size_t at)
{
    size_t k = at;
    for (size_t i = 0; i < h->n; i++) {
        const struct dline *d = &h->l[i];
        if (d->kind == '+')
            continue;
        if (k >= tl->n)
            return false;
        size_t ln = line_len(tl, k), dn = bare(d->s, d->n);
        if (ln != dn || memcmp(tl->t + tl->start[k], d->s, dn) != 0)
            return false;
        k++;
    }
    return true;
}

static size_t old_lines(const struct hunk *h)
{
    size_t n = 0;
    for (size_t i = 0; i < h->n; i++)
        n += h->l[i].kind != '+';
    return n;
}

static bool is_cont(unsigned char c)
{
    return (c & 0xC0) == 0x80;
}

static cJSON *pos_json(struct lsp_pos p)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "line", p.line);
    cJSON_AddNumberToObject(o, "character", p.character);
    return o;
}

static cJSON *range_json(struct lsp_pos a, struct lsp_pos b)
{
    cJSON *r = cJSON_CreateObject();
    cJSON_AddItemToObject(r, "start", pos_json(a));
    cJSON_AddItemToObject(r, "end", pos_json(b));
    return r;
}

/* One changed block: old bytes [a, b) of the text become nt[0..nn). Common leading and trailing
 * bytes are left out of the edit, never splitting a character or a CRLF. */
static int add_edit(cJSON *edits, const struct text_lines *tl, size_t a, size_t b, const char *nt, size_t nn,
                    enum lsp_encoding enc)
{
    const char *ot = tl->t + a;
    size_t on = b - a, p = 0, s = 0;
    while (p < on && p < nn && ot[p] == nt[p])
        p++;
    while (p > 0 && ((p < on && is_cont((unsigned char)ot[p])) || (p < nn && is_cont((unsigned char)nt[p])) ||
                     (ot[p - 1] == '\r' && p < on && ot[p] == '\n')))
        p--;
    while (s < on - p && s < nn - p && ot[on - 1 - s] == nt[nn - 1 - s])
        s++;
    while (s > 0 && ((is_cont((unsigned char)ot[on - s])) || is_cont((unsigned char)nt[nn - s]) ||
                     (ot[on - s] == '\n' && on - s > 0 && ot[on - s - 1] == '\r')))
        s--;
    if (p + s == on && p + s == nn)
        return 0; /* no change */
    struct lsp_pos ps = lsp_text_position(tl->t, tl->len, a + p, enc);
    struct lsp_pos pe = lsp_text_position(tl->t, tl->len, b - s, enc);
    cJSON *ed = cJSON_CreateObject();
    cJSON_AddItemToObject(ed, "range", range_json(ps, pe));
    char *txt = strndup(nt + p, nn - p - s);
    if (!ed || !txt) {
        cJSON_Delete(ed);
        free(txt);
        return CTX_ENOMEM;
    }
    cJSON_AddStringToObject(ed, "newText", txt);
    free(txt);
    cJSON_AddItemToArray(edits, ed);
    return 0;
}

struct buf {
    char *p;
    size_t n, cap;
};

static int buf_add(struct buf *b, const char *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *g = realloc(b->p, cap);
        if (!g)
            return CTX_ENOMEM;
        b->p = g;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
    return 0;
}

static char *abs_path(const char *root, const char *rel)
{
    if (rel[0] == '/' || !root)
        return strdup(rel);
    size_t n = strlen(root) + strlen(rel) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s%s%s", root, root[0] && root[strlen(root) - 1] == '/' ? "" : "/", rel);
    return p;
}

static cJSON *text_doc_edit(const char *uri, int64_t version, cJSON *edits)
{
    cJSON *t = cJSON_CreateObject();
    cJSON *id = cJSON_AddObjectToObject(t, "textDocument");
    cJSON_AddStringToObject(id, "uri", uri);
    if (version >= 0)
        cJSON_AddNumberToObject(id, "version", (double)version);
    else
        cJSON_AddNullToObject(id, "version");
    cJSON_AddItemToObject(t, "edits", edits);
    return t;
}

/* The added text of a created file ('+' lines; the last one without '\n' when marked so). */
static int new_file_text(const struct fdiff *f, struct buf *b)
{
    for (size_t i = 0; i < f->n; i++)
        for (size_t j = 0; j < f->h[i].n; j++) {
            const struct dline *d = &f->h[i].l[j];
            if (d->kind != '+')
                continue;
            if (buf_add(b, d->s, d->n) || (!d->no_eol && buf_add(b, "\n", 1)))
                return CTX_ENOMEM;
        }
    return b->p || !buf_add(b, "", 0) ? 0 : CTX_ENOMEM;
}

static int emit_file(const struct fdiff *f, const char *root, lsp_lookup_fn lookup, void *ud, enum lsp_encoding enc,
                     cJSON *changes, struct ctx_err *e)
{
    if (!f->old_path && !f->new_path)
        return ctx_err_set(e, CTX_EFORMAT, "diff: a file from /dev/null to /dev/null");
    const char *rel = f->new_path ? f->new_path : f->old_path;
    char *path = abs_path(root, rel), *uri = path ? lsp_path_to_uri(path) : NULL;
    int rc = 0;
    if (!uri) {
        rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
        goto out;
    }
    if (!f->new_path) { /* deleted */
        cJSON *d = cJSON_CreateObject();
        cJSON_AddStringToObject(d, "kind", "delete");
        cJSON_AddStringToObject(d, "uri", uri);
        cJSON_AddItemToArray(changes, d);
        goto out;
    }
    if (!f->old_path) { /* created */
        struct buf b = {0};
        if (new_file_text(f, &b)) {
            free(b.p);
            rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
            goto out;
        }
        cJSON *c = cJSON_CreateObject();
        cJSON_AddStringToObject(c, "kind", "create");
        cJSON_AddStringToObject(c, "uri", uri);
        cJSON *o = cJSON_AddObjectToObject(c, "options");
        cJSON_AddBoolToObject(o, "overwrite", false);
        cJSON_AddBoolToObject(o, "ignoreIfExists", false);
        cJSON_AddItemToArray(changes, c);
        cJSON *edits = cJSON_CreateArray(), *ed = cJSON_CreateObject();
        struct lsp_pos z = {0, 0};
        cJSON_AddItemToObject(ed, "range", range_json(z, z));
        cJSON_AddStringToObject(ed, "newText", b.p);
        cJSON_AddItemToArray(edits, ed);
        cJSON_AddItemToArray(changes, text_doc_edit(uri, -1, edits));
        free(b.p);
        goto out;
    }
    if (strcmp(f->old_path, f->new_path) != 0) {
        rc = ctx_err_set(e, CTX_EUNSUPPORTED, "diff: renaming %s to %s is not supported", f->old_path, f->new_path);
        goto out;
    }
    const char *text = NULL;
    size_t len = 0;
    int64_t version = -1;
    if ((rc = lookup(ud, path, &text, &len, &version, e)))
        goto out;
    struct text_lines tl = {0};
    if ((rc = index_lines(text, len, &tl, e))) {
        free(tl.start);
        goto out;
    }
    const char *eol = tl.crlf ? "\r\n" : "\n";
    cJSON *edits = cJSON_CreateArray();
    size_t min_line = 0;
    for (size_t hi = 0; hi < f->n && !rc; hi++) {
        const struct hunk *h = &f->h[hi];
        size_t nold = old_lines(h);
        size_t at = h->old_count == 0 ? (size_t)h->old_start : (size_t)(h->old_start ? h->old_start - 1 : 0);
        if (at < min_line || !hunk_matches(&tl, h, at)) {
            /* the buffer moved since the diff was made: the one place the old lines fit */
            size_t found = SIZE_MAX, count = 0;
            for (size_t k = min_line; k + nold <= tl.n && count < 2; k++)
                if (hunk_matches(&tl, h, k)) {
                    found = k;
                    count++;
                }
            if (count != 1) {
                rc = ctx_err_set(e, CTX_EFORMAT, "diff: %s: hunk %zu (@@ -%ld,%ld) %s the current text", rel, hi + 1,
                                 h->old_start, h->old_count, count ? "matches more than one place in" : "does not match");
                break;
            }
            at = found;
        }
        /* walk the hunk, one edit per block of removed/added lines */
        size_t k = at, i = 0;
        while (i < h->n && !rc) {
            if (h->l[i].kind == ' ') {
                k++;
                i++;
                continue;
            }
            size_t first = k;
            struct buf nb = {0};
            for (; i < h->n && h->l[i].kind != ' '; i++) {
                const struct dline *d = &h->l[i];
                if (d->kind == '-') {
                    k++;
                } else if (buf_add(&nb, d->s, bare(d->s, d->n)) || (!d->no_eol && buf_add(&nb, eol, strlen(eol)))) {
                    rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
                }
            }
            /* a removed last line without a newline: the edit runs to the end of the text */
            size_t a = tl.start[first < tl.n ? first : tl.n], b = tl.start[k < tl.n ? k : tl.n];
            if (!rc && add_edit(edits, &tl, a, b, nb.p ? nb.p : "", nb.n, enc))
                rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
            free(nb.p);
        }
        min_line = at + nold;
    }
    free(tl.start);
    if (rc)
        cJSON_Delete(edits);
    else
        cJSON_AddItemToArray(changes, text_doc_edit(uri, version, edits));
out:
    free(path);
    free(uri);
    return rc;
}

int lsp_diff_to_edit(const char *diff, size_t len, const char *root, lsp_lookup_fn lookup, void *ud,
                     enum lsp_encoding enc, cJSON **edit, struct ctx_err *e)
{
    *edit = NULL;
    cJSON *we = cJSON_CreateObject(), *changes = cJSON_AddArrayToObject(we, "documentChanges");
    if (!changes) {
        cJSON_Delete(we);
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    }
    struct fdiff f = {0};
    bool have_file = false;
    struct hunk *cur = NULL;
    long need_old = 0, need_new = 0;
    int rc = 0;
    size_t i = 0, lineno = 0;
    while (i < len && !rc) {
        const char *s = diff + i, *nl = memchr(s, '\n', len - i);
        size_t n = nl ? (size_t)(nl - s) : len - i;
        i += n + (nl != NULL);
        lineno++;
        if (cur && (need_old > 0 || need_new > 0)) {
            char k = n ? s[0] : ' '; /* an empty line inside a hunk is an empty context line */
            if (k == ' ' || k == '-' || k == '+') {
                if (cur->n == cur->cap) {
                    size_t cap = cur->cap ? cur->cap * 2 : 16;
                    struct dline *g = realloc(cur->l, cap * sizeof *g);
                    if (!g) {
                        rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
                        break;
                    }
                    cur->l = g;
                    cur->cap = cap;
                }
                cur->l[cur->n++] = (struct dline){k, n ? s + 1 : s, n ? n - 1 : 0, false};
                if (k != '+')
                    need_old--;
                if (k != '-')
                    need_new--;
                continue;
            }
            if (k != '\\') {
                rc = ctx_err_set(e, CTX_EFORMAT, "diff line %zu: the hunk ends early", lineno);
                break;
            }
        }
        if (n && s[0] == '\\') { /* "\ No newline at end of file" */
            if (cur && cur->n)
                cur->l[cur->n - 1].no_eol = true;
            continue;
        }
        if (n >= 4 && memcmp(s, "--- ", 4) == 0 && len - i >= 4 && memcmp(diff + i, "+++ ", 4) == 0) {
            if (have_file && (rc = emit_file(&f, root, lookup, ud, enc, changes, e)))
                break;
            fdiff_clear(&f);
            cur = NULL;
            const char *s2 = diff + i, *nl2 = memchr(s2, '\n', len - i);
            size_t n2 = nl2 ? (size_t)(nl2 - s2) : len - i;
            i += n2 + (nl2 != NULL);
            lineno++;
            /* strip a/ and b/ only when both sides use them (git's default) */
            bool strip = (n > 6 && memcmp(s + 4, "a/", 2) == 0) || (n2 > 6 && memcmp(s2 + 4, "b/", 2) == 0);
            if ((rc = diff_path(s + 4, n - 4, strip, &f.old_path, e)) ||
                (rc = diff_path(s2 + 4, n2 - 4, strip, &f.new_path, e)))
                break;
            have_file = true;
            continue;
        }
        if (n >= 2 && memcmp(s, "@@", 2) == 0) {
            if (!have_file) {
                rc = ctx_err_set(e, CTX_EFORMAT, "diff line %zu: a hunk before any file header", lineno);
                break;
            }
            /* the header as a C string (the diff is not NUL-terminated) */
            char hdr[128];
            size_t hn = n - 2 < sizeof hdr - 1 ? n - 2 : sizeof hdr - 1;
            memcpy(hdr, s + 2, hn);
            hdr[hn] = 0;
            const char *p = hdr;
            struct hunk h = {0};
            while (*p == ' ')
                p++;
            bool ok = *p == '-' && (p++, parse_range(&p, &h.old_start, &h.old_count));
            while (ok && *p == ' ')
                p++;
            ok = ok && *p == '+' && (p++, parse_range(&p, &h.new_start, &h.new_count));
            if (!ok) {
                rc = ctx_err_set(e, CTX_EFORMAT, "diff line %zu: a bad hunk header", lineno);
                break;
            }
            if (f.n == f.cap) {
                size_t cap = f.cap ? f.cap * 2 : 4;
                struct hunk *g = realloc(f.h, cap * sizeof *g);
                if (!g) {
                    rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
                    break;
                }
                f.h = g;
                f.cap = cap;
            }
            f.h[f.n] = h;
            cur = &f.h[f.n++];
            need_old = h.old_count;
            need_new = h.new_count;
            continue;
        }
        /* "diff --git", "index", mode lines, commentary: nothing to apply */
    }
    if (!rc && cur && (need_old > 0 || need_new > 0))
        rc = ctx_err_set(e, CTX_EFORMAT, "diff: the last hunk of %s is cut short",
                         f.new_path ? f.new_path : f.old_path ? f.old_path : "?");
    if (!rc && have_file)
        rc = emit_file(&f, root, lookup, ud, enc, changes, e);
    if (!rc && !have_file)
        rc = ctx_err_set(e, CTX_EFORMAT, "diff: no file header (--- / +++) found");
    fdiff_clear(&f);
    if (rc) {
        cJSON_Delete(we);
        return rc;
    }
    *edit = we;
    return 0;
}

/* ---- findings ---- */

static int severity_of(const char *s)
{
    if (!s)
        return 2;
    if (!strcmp(s, "error"))
        return 1;
    if (!strcmp(s, "warning"))
        return 2;
    if (!strcmp(s, "info") || !strcmp(s, "information"))
        return 3;
    return 4;
}

static cJSON *uri_entry(cJSON *out, const char *uri)
{
    cJSON *a = cJSON_GetObjectItemCaseSensitive(out, uri);
    return a ? a : cJSON_AddArrayToObject(out, uri);
}

int lsp_findings_to_diagnostics(const cJSON *findings, const char *root, const cJSON *uris, lsp_lookup_fn lookup,
                                void *ud, enum lsp_encoding enc, cJSON **out, struct ctx_err *e)
{
    cJSON *o = cJSON_CreateObject();
    *out = NULL;
    if (!o)
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    const cJSON *u;
    cJSON_ArrayForEach(u, uris)
    {
        if (cJSON_IsString(u))
            uri_entry(o, u->valuestring);
    }
    const cJSON *f;
    cJSON_ArrayForEach(f, findings)
    {
        const cJSON *file = cJSON_GetObjectItemCaseSensitive(f, "file");
        const cJSON *line = cJSON_GetObjectItemCaseSensitive(f, "line");
        const cJSON *end = cJSON_GetObjectItemCaseSensitive(f, "end_line");
        const cJSON *sev = cJSON_GetObjectItemCaseSensitive(f, "severity");
        const cJSON *msg = cJSON_GetObjectItemCaseSensitive(f, "message");
        const cJSON *rep = cJSON_GetObjectItemCaseSensitive(f, "replacement");
        if (!cJSON_IsString(file) || !file->valuestring[0] || !cJSON_IsNumber(line) || line->valuedouble < 1 ||
            !cJSON_IsString(msg))
            continue;
        long l0 = (long)line->valuedouble, l1 = cJSON_IsNumber(end) && end->valuedouble >= l0 ? (long)end->valuedouble : l0;
        char *path = abs_path(root, file->valuestring), *uri = path ? lsp_path_to_uri(path) : NULL;
        if (!uri) {
            free(path);
            cJSON_Delete(o);
            return ctx_err_set(e, CTX_ENOMEM, "out of memory");
        }
        const char *text = NULL;
        size_t len = 0;
        int64_t version = -1;
        struct ctx_err le = {0};
        struct lsp_pos a = {(uint32_t)(l0 - 1), 0}, b = {(uint32_t)(l1 - 1), 0};
        if (lookup && lookup(ud, path, &text, &len, &version, &le) == 0 && text) {
            /* the end of end_line's text: a position past the line's end clamps to it */
            size_t off = lsp_text_offset(text, len, (struct lsp_pos){b.line, UINT32_MAX}, enc);
            b = lsp_text_position(text, len, off, enc);
            if (b.line < a.line) /* a finding past the end of the text: its last line */
                a = (struct lsp_pos){b.line, 0};
        } else {
            b = (struct lsp_pos){(uint32_t)l1, 0}; /* unknown text: up to the next line's start */
        }
        cJSON *d = cJSON_CreateObject();
        cJSON_AddItemToObject(d, "range", range_json(a, b));
        cJSON_AddNumberToObject(d, "severity", severity_of(cJSON_IsString(sev) ? sev->valuestring : NULL));
        cJSON_AddStringToObject(d, "source", "ctx");
        cJSON_AddStringToObject(d, "message", msg->valuestring);
        if (cJSON_IsString(rep)) {
            cJSON *data = cJSON_AddObjectToObject(d, "data");
            cJSON_AddStringToObject(data, "replacement", rep->valuestring);
        }
        cJSON_AddItemToArray(uri_entry(o, uri), d);
        free(path);
        free(uri);
    }
    *out = o;
    return 0;
}
