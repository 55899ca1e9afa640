/* Output formats for review findings and suggest diffs (report.h). */
#include "report.h"

#include <git2.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "ctx_config.h"
#include "json.h"
#include "patch.h"

static const char *const format_names[] = {"text", "json", "diff", "github", "rdjsonl", "sarif"};

int agent_report_format_parse(const char *name)
{
    for (size_t i = 0; name && i < sizeof format_names / sizeof *format_names; i++)
        if (strcmp(name, format_names[i]) == 0)
            return (int)i;
    return CTX_EINVAL;
}

const char *agent_report_format_name(enum agent_report_format fmt)
{
    if ((unsigned)fmt < sizeof format_names / sizeof *format_names)
        return format_names[fmt];
    return "?";
}

const char *agent_report_format_list(void) { return "text|json|diff|github|rdjsonl|sarif"; }

static int rfinish(struct ctx_buf *b, char **out, struct ctx_err *e)
{
    if (!b->oom && !b->p)
        ctx_buf_puts(b, "");
    if (b->oom) {
        free(b->p);
        return ctx_err_set(e, CTX_ENOMEM, "out of memory while formatting the report");
    }
    *out = b->p;
    return 0;
}

/* Print a cJSON tree unformatted + "\n" into *out; frees the tree. */
static int json_out(cJSON *j, char **out, struct ctx_err *e)
{
    char *s = j ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    if (!s)
        return ctx_err_set(e, CTX_ENOMEM, "out of memory while formatting the report");
    struct ctx_buf b = {0};
    ctx_buf_puts(&b, s);
    ctx_buf_puts(&b, "\n");
    free(s);
    return rfinish(&b, out, e);
}

/* ---- positions and paths ---- */

/* Repository-relative, forward slashes, no "./" segments at the front. Absolute paths inside root
 * lose the root; others stay as they are (the caller's finding names what the model named). */
static char *rel_path(const char *root, const char *p)
{
    char *s = strdup(p ? p : "");
    if (!s)
        return NULL;
    for (char *c = s; *c; c++)
        if (*c == '\\')
            *c = '/';
    char *q = s;
    if (root && root[0] == '/' && q[0] == '/') {
        size_t rl = strlen(root);
        while (rl > 1 && root[rl - 1] == '/')
            rl--;
        if (strncmp(q, root, rl) == 0 && q[rl] == '/')
            q += rl + 1;
    }
    for (;;) {
        if (q[0] == '.' && q[1] == '/')
            q += 2;
        else if (q[0] == '/' && q != s + 0 && q[-1] == '/')
            q++;
        else
            break;
    }
    memmove(s, q, strlen(q) + 1);
    return s;
}

/* Percent-encode for a URI path: RFC 3986 unreserved characters and '/' stay, everything else
 * (including ':' so a first segment cannot read as a scheme) becomes %XX. */
static void uri_put(struct ctx_buf *b, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if ((*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') ||
            *c == '-' || *c == '.' || *c == '_' || *c == '~' || *c == '/') {
            ctx_buf_put(b, (const char *)c, 1);
        } else {
            char t[3] = {'%', hex[*c >> 4], hex[*c & 15]};
            ctx_buf_put(b, t, 3);
        }
    }
}

static char *uri_of(const char *path)
{
    struct ctx_buf b = {0};
    uri_put(&b, path);
    char *s = NULL;
    if (rfinish(&b, &s, NULL))
        return NULL;
    return s;
}

/* Length of a line in UTF-16 code units (SARIF's default columnKind): 4-byte UTF-8 sequences are
 * surrogate pairs; continuation bytes add nothing; an invalid byte counts as one unit (it would be
 * decoded as U+FFFD). */
static unsigned utf16_len(const char *s, size_t n)
{
    unsigned u = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c & 0xC0) == 0x80)
            continue;
        u += c >= 0xF0 && c <= 0xF4 ? 2 : 1;
    }
    return u;
}

/* A file split into lines (no line terminators; a CR before LF is kept out of the length). */
struct lines {
    char *text;
    size_t len;
    size_t *start, *n; /* line i (0-based): text + start[i], n[i] bytes */
    size_t count;
    bool final_eol;    /* the text ends with a newline (or is empty) */
};

static void lines_free(struct lines *l)
{
    free(l->text);
    free(l->start);
    free(l->n);
    memset(l, 0, sizeof *l);
}

static int lines_read(const char *root, const char *rel, struct lines *l, struct ctx_err *e)
{
    memset(l, 0, sizeof *l);
    size_t plen = strlen(root) + strlen(rel) + 2;
    char *path = malloc(plen);
    if (!path)
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    snprintf(path, plen, "%s/%s", root, rel);
    int rc = ctx_read_file(path, 0, &l->text, &l->len, e);
    free(path);
    if (rc)
        return rc;
    size_t cap = 16;
    l->start = malloc(cap * sizeof *l->start);
    l->n = malloc(cap * sizeof *l->n);
    if (!l->start || !l->n) {
        lines_free(l);
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    }
    size_t i = 0;
    while (i < l->len) {
        const char *nl = memchr(l->text + i, '\n', l->len - i);
        size_t end = nl ? (size_t)(nl - l->text) : l->len;
        if (l->count == cap) {
            cap *= 2;
            size_t *a = realloc(l->start, cap * sizeof *a);
            if (a)
                l->start = a;
            size_t *b = realloc(l->n, cap * sizeof *b);
            if (b)
                l->n = b;
            if (!a || !b) {
                lines_free(l);
                return ctx_err_set(e, CTX_ENOMEM, "out of memory");
            }
        }
        l->start[l->count] = i;
        l->n[l->count] = end - i - (end > i && nl && l->text[end - 1] == '\r' ? 1 : 0);
        l->count++;
        i = nl ? end + 1 : end;
    }
    l->final_eol = l->len == 0 || l->text[l->len - 1] == '\n';
    return 0;
}

/* ---- normalised findings ---- */

struct nfinding {
    const struct agent_finding *f;
    char *path;        /* repository-relative */
    unsigned line, end_line;
};

static int normalise(const struct agent_finding *v, size_t n, const char *root, struct nfinding **out,
                     struct ctx_err *e)
{
    struct nfinding *a = calloc(n ? n : 1, sizeof *a);
    if (!a)
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        a[i].f = &v[i];
        a[i].path = rel_path(root, v[i].file);
        a[i].line = v[i].line ? v[i].line : 1;
        a[i].end_line = v[i].end_line >= a[i].line ? v[i].end_line : a[i].line;
        if (!a[i].path) {
            for (size_t k = 0; k < i; k++)
                free(a[k].path);
            free(a);
            return ctx_err_set(e, CTX_ENOMEM, "out of memory");
        }
    }
    *out = a;
    return 0;
}

static void nfree(struct nfinding *a, size_t n)
{
    for (size_t i = 0; a && i < n; i++)
        free(a[i].path);
    free(a);
}

/* A copy of the findings with normalised paths/lines, for review.c's text/json writers. */
static int norm_copy(const struct nfinding *a, size_t n, struct agent_findings *c, struct ctx_err *e)
{
    c->v = calloc(n ? n : 1, sizeof *c->v);
    c->n = 0;
    if (!c->v)
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        struct agent_finding *d = &c->v[c->n++];
        d->file = strdup(a[i].path);
        d->line = a[i].line;
        d->end_line = a[i].end_line;
        d->severity = a[i].f->severity;
        d->message = strdup(a[i].f->message ? a[i].f->message : "");
        d->replacement = a[i].f->replacement ? strdup(a[i].f->replacement) : NULL;
        if (!d->file || !d->message || (a[i].f->replacement && !d->replacement)) {
            agent_findings_free(c);
            return ctx_err_set(e, CTX_ENOMEM, "out of memory");
        }
    }
    return 0;
}

/* ---- rdjsonl (reviewdog) ---- */

/* Linewise positions (no columns): reviewdog then treats the range as whole lines start..end and
 * its GitHub/GitLab/Gitea reporters turn the suggestion into a suggestion block on exactly the
 * diagnostic's lines (they refuse a suggestion whose lines differ from the diagnostic's). The
 * suggestion text therefore replaces the lines without their final line break. */
static cJSON *rd_range(unsigned line, unsigned end_line)
{
    cJSON *r = cJSON_CreateObject();
    cJSON *st = cJSON_AddObjectToObject(r, "start");
    cJSON_AddNumberToObject(st, "line", line);
    cJSON *en = cJSON_AddObjectToObject(r, "end");
    cJSON_AddNumberToObject(en, "line", end_line);
    return r;
}

static const char *const rd_sev[] = {"ERROR", "WARNING", "INFO"};

static cJSON *rd_diag(const char *msg, const char *path, unsigned line, unsigned end_line,
                      enum agent_severity sev, const char *sugg, size_t sugg_len)
{
    cJSON *d = cJSON_CreateObject();
    cJSON_AddStringToObject(d, "message", msg);
    cJSON *loc = cJSON_AddObjectToObject(d, "location");
    cJSON_AddStringToObject(loc, "path", path);
    cJSON_AddItemToObject(loc, "range", rd_range(line, end_line));
    cJSON_AddStringToObject(d, "severity", rd_sev[sev <= AGENT_SEV_INFO ? sev : AGENT_SEV_INFO]);
    cJSON *src = cJSON_AddObjectToObject(d, "source");
    cJSON_AddStringToObject(src, "name", "ctx");
    if (sugg) {
        if (sugg_len && sugg[sugg_len - 1] == '\n')
            sugg_len--;
        char *t = strndup(sugg, sugg_len);
        cJSON *arr = cJSON_AddArrayToObject(d, "suggestions");
        cJSON *s = cJSON_CreateObject();
        cJSON_AddItemToObject(s, "range", rd_range(line, end_line));
        cJSON_AddStringToObject(s, "text", t ? t : "");
        cJSON_AddItemToArray(arr, s);
        free(t);
    }
    return d;
}

static void rd_line(struct ctx_buf *b, cJSON *d)
{
    char *s = d ? cJSON_PrintUnformatted(d) : NULL;
    cJSON_Delete(d);
    if (!s) {
        b->oom = true;
        return;
    }
    ctx_buf_puts(b, s);
    ctx_buf_puts(b, "\n");
    free(s);
}

char *agent_findings_rdjsonl(const struct agent_findings *f)
{
    struct ctx_buf b = {0};
    ctx_buf_puts(&b, "");
    for (size_t i = 0; i < f->n; i++) {
        const struct agent_finding *x = &f->v[i];
        unsigned end = x->end_line >= x->line ? x->end_line : x->line;
        rd_line(&b, rd_diag(x->message, x->file, x->line, end, x->severity, x->replacement,
                            x->replacement ? strlen(x->replacement) : 0));
    }
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

/* ---- GitHub review ---- */

/* A fence longer than any backtick run in the text, so a suggestion holding ``` stays one block. */
static size_t fence_len(const char *s)
{
    size_t best = 0, run = 0;
    for (; s && *s; s++) {
        run = *s == '`' ? run + 1 : 0;
        if (run > best)
            best = run;
    }
    return best >= 3 ? best + 1 : 3;
}

static void put_suggestion(struct ctx_buf *b, const char *text, size_t len)
{
    char *t = strndup(text, len);
    if (!t) {
        b->oom = true;
        return;
    }
    size_t fl = fence_len(t);
    char fence[64];
    if (fl >= sizeof fence)
        fl = sizeof fence - 1;
    memset(fence, '`', fl);
    fence[fl] = 0;
    ctx_buf_puts(b, fence);
    ctx_buf_puts(b, "suggestion\n");
    ctx_buf_puts(b, t);
    if (len && t[len - 1] != '\n')
        ctx_buf_puts(b, "\n");
    ctx_buf_puts(b, fence);
    ctx_buf_puts(b, "\n");
    free(t);
}

static cJSON *gh_comment(const char *path, unsigned line, unsigned end_line, const char *body)
{
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "path", path);
    cJSON_AddNumberToObject(c, "line", end_line);
    if (end_line > line)
        cJSON_AddNumberToObject(c, "start_line", line);
    cJSON_AddStringToObject(c, "side", "RIGHT");
    if (end_line > line)
        cJSON_AddStringToObject(c, "start_side", "RIGHT");
    cJSON_AddStringToObject(c, "body", body);
    return c;
}

static cJSON *gh_review(const char *body)
{
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "body", body);
    cJSON_AddStringToObject(r, "event", "COMMENT");
    cJSON_AddArrayToObject(r, "comments");
    return r;
}

static int findings_github(const struct nfinding *a, size_t n, char **out, struct ctx_err *e)
{
    size_t cnt[3] = {0};
    for (size_t i = 0; i < n; i++)
        cnt[a[i].f->severity <= AGENT_SEV_INFO ? a[i].f->severity : AGENT_SEV_INFO]++;
    char head[160];
    if (n == 0)
        snprintf(head, sizeof head, "ctx review: no findings.");
    else
        snprintf(head, sizeof head, "ctx review: %zu finding%s (%zu error%s, %zu warning%s, %zu info).", n,
                 n == 1 ? "" : "s", cnt[0], cnt[0] == 1 ? "" : "s", cnt[1], cnt[1] == 1 ? "" : "s", cnt[2]);
    cJSON *r = gh_review(head);
    cJSON *cs = cJSON_GetObjectItem(r, "comments");
    bool oom = !r;
    for (size_t i = 0; i < n && !oom; i++) {
        struct ctx_buf b = {0};
        ctx_buf_puts(&b, "**");
        ctx_buf_puts(&b, agent_severity_name(a[i].f->severity));
        ctx_buf_puts(&b, "**: ");
        ctx_buf_puts(&b, a[i].f->message ? a[i].f->message : "");
        if (a[i].f->replacement) {
            ctx_buf_puts(&b, "\n\n");
            put_suggestion(&b, a[i].f->replacement, strlen(a[i].f->replacement));
        }
        oom = b.oom;
        if (!oom)
            cJSON_AddItemToArray(cs, gh_comment(a[i].path, a[i].line, a[i].end_line, b.p));
        free(b.p);
    }
    if (oom) {
        cJSON_Delete(r);
        return ctx_err_set(e, CTX_ENOMEM, "out of memory while formatting the report");
    }
    return json_out(r, out, e);
}

/* ---- SARIF 2.1.0 ---- */

#define SARIF_SCHEMA "https://json.schemastore.org/sarif-2.1.0.json"

static cJSON *sarif_log(const char *root, cJSON **results)
{
    cJSON *log = cJSON_CreateObject();
    cJSON_AddStringToObject(log, "$schema", SARIF_SCHEMA);
    cJSON_AddStringToObject(log, "version", "2.1.0");
    cJSON *runs = cJSON_AddArrayToObject(log, "runs");
    cJSON *run = cJSON_CreateObject();
    cJSON_AddItemToArray(runs, run);
    cJSON *tool = cJSON_AddObjectToObject(run, "tool");
    cJSON *drv = cJSON_AddObjectToObject(tool, "driver");
    cJSON_AddStringToObject(drv, "name", "ctx");
    cJSON_AddStringToObject(drv, "version", CTX_VERSION);
    cJSON *rules = cJSON_AddArrayToObject(drv, "rules");
    /* Two fixed rules so ruleIndex is stable whatever the output holds. */
    static const struct {
        const char *id, *name, *text, *level;
    } rd[] = {
        {"ctx/review", "Review", "A problem found by ctx review (model-assisted code review).", "warning"},
        {"ctx/suggest", "Suggestion", "A change proposed by ctx suggest.", "note"},
    };
    for (size_t i = 0; i < 2; i++) {
        cJSON *r = cJSON_CreateObject();
        cJSON_AddStringToObject(r, "id", rd[i].id);
        cJSON_AddStringToObject(r, "name", rd[i].name);
        cJSON *sd = cJSON_AddObjectToObject(r, "shortDescription");
        cJSON_AddStringToObject(sd, "text", rd[i].text);
        cJSON *dc = cJSON_AddObjectToObject(r, "defaultConfiguration");
        cJSON_AddStringToObject(dc, "level", rd[i].level);
        cJSON_AddItemToArray(rules, r);
    }
    if (root && root[0] == '/') {
        struct ctx_buf b = {0};
        ctx_buf_puts(&b, "file://");
        uri_put(&b, root);
        if (b.len && b.p && b.p[b.len - 1] != '/')
            ctx_buf_puts(&b, "/");
        if (!b.oom) {
            cJSON *ob = cJSON_AddObjectToObject(run, "originalUriBaseIds");
            cJSON *sr = cJSON_AddObjectToObject(ob, "SRCROOT");
            cJSON_AddStringToObject(sr, "uri", b.p);
        }
        free(b.p);
    }
    cJSON_AddStringToObject(run, "columnKind", "utf16CodeUnits");
    *results = cJSON_AddArrayToObject(run, "results");
    return log;
}

static cJSON *artifact_loc(const char *path)
{
    cJSON *a = cJSON_CreateObject();
    char *u = uri_of(path);
    cJSON_AddStringToObject(a, "uri", u ? u : "");
    free(u);
    cJSON_AddStringToObject(a, "uriBaseId", "SRCROOT");
    return a;
}

/* region fields; 0 = leave out */
static cJSON *region(unsigned sl, unsigned sc, unsigned el, unsigned ec)
{
    cJSON *r = cJSON_CreateObject();
    cJSON_AddNumberToObject(r, "startLine", sl);
    if (sc)
        cJSON_AddNumberToObject(r, "startColumn", sc);
    if (el)
        cJSON_AddNumberToObject(r, "endLine", el);
    if (ec)
        cJSON_AddNumberToObject(r, "endColumn", ec);
    return r;
}

static cJSON *sarif_result(const char *rule, int rule_index, const char *level, const char *msg,
                           const char *path, cJSON *reg)
{
    cJSON *res = cJSON_CreateObject();
    cJSON_AddStringToObject(res, "ruleId", rule);
    cJSON_AddNumberToObject(res, "ruleIndex", rule_index);
    cJSON_AddStringToObject(res, "level", level);
    cJSON *m = cJSON_AddObjectToObject(res, "message");
    cJSON_AddStringToObject(m, "text", msg);
    cJSON *locs = cJSON_AddArrayToObject(res, "locations");
    cJSON *loc = cJSON_CreateObject();
    cJSON *pl = cJSON_AddObjectToObject(loc, "physicalLocation");
    cJSON_AddItemToObject(pl, "artifactLocation", artifact_loc(path));
    cJSON_AddItemToObject(pl, "region", reg);
    cJSON_AddItemToArray(locs, loc);
    return res;
}

static void sarif_fix(cJSON *res, const char *desc, const char *path, cJSON *deleted, const char *text)
{
    cJSON *fixes = cJSON_AddArrayToObject(res, "fixes");
    cJSON *fx = cJSON_CreateObject();
    cJSON *d = cJSON_AddObjectToObject(fx, "description");
    cJSON_AddStringToObject(d, "text", desc);
    cJSON *ac = cJSON_AddArrayToObject(fx, "artifactChanges");
    cJSON *ch = cJSON_CreateObject();
    cJSON_AddItemToObject(ch, "artifactLocation", artifact_loc(path));
    cJSON *reps = cJSON_AddArrayToObject(ch, "replacements");
    cJSON *rp = cJSON_CreateObject();
    cJSON_AddItemToObject(rp, "deletedRegion", deleted);
    cJSON *ins = cJSON_AddObjectToObject(rp, "insertedContent");
    cJSON_AddStringToObject(ins, "text", text);
    cJSON_AddItemToArray(reps, rp);
    cJSON_AddItemToArray(ac, ch);
    cJSON_AddItemToArray(fixes, fx);
}

static const char *sarif_level(enum agent_severity s)
{
    return s == AGENT_SEV_ERROR ? "error" : s == AGENT_SEV_WARNING ? "warning" : "note";
}

/* The replacement as it must be inserted for whole lines line..end_line: it ends with a newline
 * exactly when the replaced lines did (the last line of a file may lack one). */
static char *fit_replacement(const char *rep, bool had_eol)
{
    size_t n = strlen(rep);
    bool has = n && rep[n - 1] == '\n';
    char *s = malloc(n + 2);
    if (!s)
        return NULL;
    memcpy(s, rep, n);
    if (had_eol && !has && n)
        s[n++] = '\n';
    else if (!had_eol && has)
        n--;
    s[n] = 0;
    return s;
}

static int findings_sarif(const struct nfinding *a, size_t n, const char *root, char **out, struct ctx_err *e)
{
    cJSON *results;
    cJSON *log = sarif_log(root, &results);
    for (size_t i = 0; i < n; i++) {
        const struct nfinding *x = &a[i];
        struct lines l = {0};
        bool have = root && lines_read(root, x->path, &l, NULL) == 0 && x->end_line <= l.count;
        cJSON *reg = have ? region(x->line, 1, x->end_line,
                                   utf16_len(l.text + l.start[x->end_line - 1], l.n[x->end_line - 1]) + 1)
                          : region(x->line, 0, x->end_line, 0);
        cJSON *res = sarif_result("ctx/review", 0, sarif_level(x->f->severity),
                                  x->f->message ? x->f->message : "", x->path, reg);
        if (x->f->replacement) {
            /* Whole lines with their line break: up to column 1 of the next line; the last line
             * of a file without a final newline ends at its last column instead. Without the file
             * the region is line-wise (SARIF: to the end of endLine, line break excluded). */
            cJSON *del;
            char *text;
            if (have) {
                bool last_no_eol = x->end_line == l.count && !l.final_eol;
                del = last_no_eol ? region(x->line, 1, x->end_line,
                                           utf16_len(l.text + l.start[x->end_line - 1], l.n[x->end_line - 1]) + 1)
                                  : region(x->line, 1, x->end_line + 1, 1);
                text = fit_replacement(x->f->replacement, !last_no_eol);
            } else {
                del = region(x->line, 0, x->end_line, 0);
                text = fit_replacement(x->f->replacement, false);
            }
            sarif_fix(res, "Replace the lines with ctx's suggestion", x->path, del, text ? text : "");
            free(text);
        }
        lines_free(&l);
        cJSON_AddItemToArray(results, res);
    }
    return json_out(log, out, e);
}

/* ---- findings as a unified diff ---- */

static int cmp_line(const void *pa, const void *pb)
{
    const struct nfinding *const *a = pa, *const *b = pb;
    if ((*a)->line != (*b)->line)
        return (*a)->line < (*b)->line ? -1 : 1;
    return (*a < *b) ? -1 : (*a > *b); /* stable: input order */
}

static int patch_cb_buf(struct ctx_buf *b, git_patch *p)
{
    git_buf gb = {0};
    if (git_patch_to_buf(&gb, p) < 0)
        return -1;
    ctx_buf_put(b, gb.ptr, gb.size);
    git_buf_dispose(&gb);
    return 0;
}

static int diff_one_file(const char *root, const char *path, struct nfinding **fs, size_t k, struct ctx_buf *b,
                         struct ctx_err *e)
{
    struct lines l;
    int rc = lines_read(root, path, &l, e);
    if (rc)
        return ctx_err_prefix(e, "diff for %s", path), rc;
    qsort(fs, k, sizeof *fs, cmp_line);
    struct ctx_buf nb = {0};
    ctx_buf_puts(&nb, "");
    unsigned next = 1; /* first old line not yet copied */
    for (size_t i = 0; i < k; i++) {
        const struct nfinding *x = fs[i];
        if (x->end_line > l.count) {
            rc = ctx_err_set(e, CTX_ERANGE, "%s: finding at lines %u-%u is past the end of the file (%zu lines)",
                             path, x->line, x->end_line, l.count);
            goto out;
        }
        if (x->line < next) /* overlaps an earlier replacement: left out of the diff */
            continue;
        size_t from = l.start[next - 1];
        size_t to = l.start[x->line - 1];
        ctx_buf_put(&nb, l.text + from, to - from);
        bool last_no_eol = x->end_line == l.count && !l.final_eol;
        char *t = fit_replacement(x->f->replacement, !last_no_eol);
        if (!t) {
            rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
            goto out;
        }
        ctx_buf_puts(&nb, t);
        free(t);
        next = x->end_line + 1;
    }
    if (next <= l.count)
        ctx_buf_put(&nb, l.text + l.start[next - 1], l.len - l.start[next - 1]);
    if (nb.oom) {
        rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
        goto out;
    }
    git_patch *p = NULL;
    git_diff_options o = GIT_DIFF_OPTIONS_INIT;
    o.context_lines = 3;
    size_t pl = strlen(path) + 3;
    char *oldp = malloc(pl), *newp = malloc(pl);
    if (!oldp || !newp) {
        free(oldp);
        free(newp);
        rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
        goto out;
    }
    /* git_patch_from_buffers adds the a/ b/ prefixes itself; the names are the repository paths. */
    snprintf(oldp, pl, "%s", path);
    snprintf(newp, pl, "%s", path);
    if (git_patch_from_buffers(&p, l.text, l.len, oldp, nb.p, nb.len, newp, &o) < 0 || patch_cb_buf(b, p) < 0) {
        const git_error *ge = git_error_last();
        rc = ctx_err_set(e, CTX_EINTERNAL, "diff for %s: %s", path, ge && ge->message ? ge->message : "libgit2 failed");
    }
    git_patch_free(p);
    free(oldp);
    free(newp);
out:
    free(nb.p);
    lines_free(&l);
    return rc;
}

static int findings_diff(struct nfinding *a, size_t n, const char *root, char **out, struct ctx_err *e)
{
    if (!root)
        return ctx_err_set(e, CTX_EINVAL, "the diff format needs the repository root");
    git_libgit2_init();
    struct nfinding **fs = calloc(n ? n : 1, sizeof *fs);
    bool *done = calloc(n ? n : 1, sizeof *done);
    struct ctx_buf b = {0};
    int rc = 0;
    if (!fs || !done) {
        rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
        goto out;
    }
    ctx_buf_puts(&b, "");
    /* Files in the order of their first finding with a replacement. */
    for (size_t i = 0; i < n && !rc; i++) {
        if (done[i] || !a[i].f->replacement)
            continue;
        size_t k = 0;
        for (size_t j = i; j < n; j++)
            if (!done[j] && a[j].f->replacement && strcmp(a[j].path, a[i].path) == 0) {
                fs[k++] = &a[j];
                done[j] = true;
            }
        rc = diff_one_file(root, a[i].path, fs, k, &b, e);
    }
out:
    git_libgit2_shutdown();
    free(fs);
    free(done);
    if (rc) {
        free(b.p);
        return rc;
    }
    return rfinish(&b, out, e);
}

int agent_report_findings(enum agent_report_format fmt, const struct agent_finding *findings, size_t n,
                          const char *root, char **out, struct ctx_err *e)
{
    *out = NULL;
    if (n && !findings)
        return ctx_err_set(e, CTX_EINVAL, "findings: NULL with n = %zu", n);
    struct nfinding *a = NULL;
    int rc = normalise(findings, n, root, &a, e);
    if (rc)
        return rc;
    switch (fmt) {
    case AGENT_REPORT_TEXT:
    case AGENT_REPORT_JSON:
    case AGENT_REPORT_RDJSONL: {
        struct agent_findings c;
        rc = norm_copy(a, n, &c, e);
        if (rc)
            break;
        if (fmt == AGENT_REPORT_JSON) {
            rc = json_out(agent_findings_json(&c), out, e);
        } else {
            *out = fmt == AGENT_REPORT_TEXT ? agent_findings_text(&c) : agent_findings_rdjsonl(&c);
            if (!*out)
                rc = ctx_err_set(e, CTX_ENOMEM, "out of memory while formatting the report");
        }
        agent_findings_free(&c);
        break;
    }
    case AGENT_REPORT_DIFF: rc = findings_diff(a, n, root, out, e); break;
    case AGENT_REPORT_GITHUB: rc = findings_github(a, n, out, e); break;
    case AGENT_REPORT_SARIF: rc = findings_sarif(a, n, root, out, e); break;
    default: rc = ctx_err_set(e, CTX_EINVAL, "unknown report format %d", (int)fmt);
    }
    nfree(a, n);
    return rc;
}

/* ---- suggest diffs ---- */

/* One change inside a hunk: old lines old_line..old_line+nold-1 become the added lines. A pure
 * insertion (nold == 0) is widened to a neighbouring context line (anchor) so that it has lines to
 * sit on in a review comment. */
struct change {
    const char *path;
    unsigned line, end_line;       /* old-file lines covered (after widening) */
    bool last_no_eol;              /* the last covered old line has no line break */
    unsigned last_u16;             /* its length in UTF-16 units */
    bool insertion;                /* nothing removed: a zero-width fix at `ins_line` */
    unsigned ins_line;
    struct ctx_buf text;              /* the exact new text of lines line..end_line (line breaks
                                    * as the diff's "\ No newline" markers say) */
    struct ctx_buf inserted;          /* insertion only: the added lines alone */
};

typedef int (*change_fn)(const struct change *c, void *ud);

static void put_line(struct ctx_buf *b, const struct agent_patch_line *pl, bool eol)
{
    ctx_buf_put(b, pl->text, pl->len);
    if (eol)
        ctx_buf_puts(b, "\n");
}

static int walk_changes(const struct agent_patch *p, change_fn fn, void *ud, struct ctx_err *e)
{
    for (size_t fi = 0; fi < p->nfiles; fi++) {
        const struct agent_patch_file *f = &p->files[fi];
        /* Created, deleted and renamed files have no old lines to comment on; they stay in the
         * diff format only. */
        if (!f->old_path || !f->new_path || strcmp(f->old_path, f->new_path) != 0)
            continue;
        char *path = rel_path(NULL, f->new_path);
        if (!path)
            return ctx_err_set(e, CTX_ENOMEM, "out of memory");
        for (size_t hi = 0; hi < f->nhunks; hi++) {
            const struct agent_patch_hunk *h = &f->hunks[hi];
            unsigned old_ln = (unsigned)h->old_start;
            size_t i = 0;
            while (i < h->nlines) {
                if (h->lines[i].kind == ' ') {
                    old_ln++;
                    i++;
                    continue;
                }
                size_t j = i;
                unsigned nold = 0;
                while (j < h->nlines && h->lines[j].kind != ' ') {
                    if (h->lines[j].kind == '-')
                        nold++;
                    j++;
                }
                struct change c = {.path = path};
                int rc = 0;
                if (nold) {
                    c.line = old_ln;
                    c.end_line = old_ln + nold - 1;
                    for (size_t k = i; k < j; k++) {
                        const struct agent_patch_line *pl = &h->lines[k];
                        if (pl->kind == '-') {
                            c.last_no_eol = pl->no_eol;
                            c.last_u16 = utf16_len(pl->text, pl->len);
                        } else {
                            put_line(&c.text, pl, !pl->no_eol);
                        }
                    }
                } else {
                    c.insertion = true;
                    c.ins_line = old_ln;
                    for (size_t k = i; k < j; k++)
                        put_line(&c.inserted, &h->lines[k], !h->lines[k].no_eol);
                    if (i > 0) { /* the context line before: keep it, then the new lines */
                        const struct agent_patch_line *pl = &h->lines[i - 1];
                        c.line = c.end_line = old_ln - 1;
                        c.last_no_eol = pl->no_eol;
                        c.last_u16 = utf16_len(pl->text, pl->len);
                        put_line(&c.text, pl, !pl->no_eol);
                        ctx_buf_puts(&c.text, c.inserted.p ? c.inserted.p : "");
                    } else if (j < h->nlines) { /* the context line after */
                        const struct agent_patch_line *pl = &h->lines[j];
                        c.line = c.end_line = old_ln;
                        c.last_no_eol = pl->no_eol;
                        c.last_u16 = utf16_len(pl->text, pl->len);
                        ctx_buf_puts(&c.text, c.inserted.p ? c.inserted.p : "");
                        put_line(&c.text, pl, !pl->no_eol);
                    } else {
                        c.line = 0; /* no line to anchor on */
                    }
                }
                if (!c.text.p)
                    ctx_buf_puts(&c.text, "");
                if (!c.inserted.p)
                    ctx_buf_puts(&c.inserted, "");
                if (c.text.oom || c.inserted.oom)
                    rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
                else if (c.line)
                    rc = fn(&c, ud);
                free(c.text.p);
                free(c.inserted.p);
                if (rc) {
                    free(path);
                    return rc;
                }
                for (size_t k = i; k < j; k++)
                    if (h->lines[k].kind == '-')
                        old_ln++;
                i = j;
            }
        }
        free(path);
    }
    return 0;
}

struct diff_ctx {
    enum agent_report_format fmt;
    cJSON *arr;       /* github comments / sarif results */
    struct ctx_buf out;  /* rdjsonl */
    size_t count;
};

static void lines_msg(char *buf, size_t n, const struct change *c)
{
    if (c->insertion)
        snprintf(buf, n, "Suggested insertion before line %u.", c->ins_line);
    else if (c->end_line > c->line)
        snprintf(buf, n, "Suggested change to lines %u-%u.", c->line, c->end_line);
    else
        snprintf(buf, n, "Suggested change to line %u.", c->line);
}

static int diff_change(const struct change *c, void *ud)
{
    struct diff_ctx *d = ud;
    char msg[128];
    lines_msg(msg, sizeof msg, c);
    d->count++;
    switch (d->fmt) {
    case AGENT_REPORT_GITHUB: {
        struct ctx_buf b = {0};
        ctx_buf_puts(&b, msg);
        ctx_buf_puts(&b, "\n\n");
        /* put_suggestion adds the closing newline itself when the text lacks one. */
        put_suggestion(&b, c->text.p, c->text.len);
        if (b.oom)
            return free(b.p), ctx_err_set(NULL, CTX_ENOMEM, "oom");
        cJSON_AddItemToArray(d->arr, gh_comment(c->path, c->line, c->end_line, b.p));
        free(b.p);
        return 0;
    }
    case AGENT_REPORT_RDJSONL:
        rd_line(&d->out, rd_diag(msg, c->path, c->line, c->end_line, AGENT_SEV_INFO, c->text.p, c->text.len));
        return d->out.oom ? CTX_ENOMEM : 0;
    case AGENT_REPORT_SARIF: {
        cJSON *res = sarif_result("ctx/suggest", 1, "note", msg, c->path,
                                  region(c->line, 1, c->end_line, c->last_u16 + 1));
        if (c->insertion)
            sarif_fix(res, "Insert the suggested lines", c->path, region(c->ins_line, 1, c->ins_line, 1),
                      c->inserted.p);
        else
            sarif_fix(res, "Apply ctx's suggested change", c->path,
                      c->last_no_eol ? region(c->line, 1, c->end_line, c->last_u16 + 1)
                                     : region(c->line, 1, c->end_line + 1, 1),
                      c->text.p);
        cJSON_AddItemToArray(d->arr, res);
        return 0;
    }
    default: return 0;
    }
}

int agent_report_diff(enum agent_report_format fmt, const char *diff_text, char **out, struct ctx_err *e)
{
    *out = NULL;
    if (!diff_text)
        diff_text = "";
    struct ctx_buf b = {0};
    if (fmt == AGENT_REPORT_TEXT || fmt == AGENT_REPORT_DIFF) {
        ctx_buf_puts(&b, diff_text);
        return rfinish(&b, out, e);
    }
    if (fmt == AGENT_REPORT_JSON) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "diff", diff_text);
        return json_out(j, out, e);
    }
    if (fmt != AGENT_REPORT_GITHUB && fmt != AGENT_REPORT_RDJSONL && fmt != AGENT_REPORT_SARIF)
        return ctx_err_set(e, CTX_EINVAL, "unknown report format %d", (int)fmt);
    struct agent_patch *p = NULL;
    /* An empty diff (nothing to suggest) is not a parse error. */
    bool empty = diff_text[strspn(diff_text, " \t\r\n")] == 0;
    if (!empty) {
        int rc = agent_patch_parse(diff_text, strlen(diff_text), &p, e);
        if (rc)
            return ctx_err_prefix(e, "suggest diff"), rc;
    }
    struct diff_ctx d = {.fmt = fmt};
    cJSON *root = NULL;
    if (fmt == AGENT_REPORT_GITHUB) {
        root = gh_review("");
        d.arr = cJSON_GetObjectItem(root, "comments");
    } else if (fmt == AGENT_REPORT_SARIF) {
        root = sarif_log(NULL, &d.arr);
    } else {
        ctx_buf_puts(&d.out, "");
    }
    int rc = p ? walk_changes(p, diff_change, &d, e) : 0;
    agent_patch_free(p);
    if (rc) {
        cJSON_Delete(root);
        free(d.out.p);
        if (rc == CTX_ENOMEM)
            return ctx_err_set(e, CTX_ENOMEM, "out of memory while formatting the report");
        return rc;
    }
    if (fmt == AGENT_REPORT_RDJSONL)
        return rfinish(&d.out, out, e);
    if (fmt == AGENT_REPORT_GITHUB) {
        char body[96];
        if (d.count)
            snprintf(body, sizeof body, "ctx suggest: %zu suggested change%s.", d.count, d.count == 1 ? "" : "s");
        else
            snprintf(body, sizeof body, "ctx suggest: no changes to suggest.");
        cJSON_ReplaceItemInObject(root, "body", cJSON_CreateString(body));
    }
    return json_out(root, out, e);
}
