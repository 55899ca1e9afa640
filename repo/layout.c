/* The prompt layout of DESIGN.md §4: preamble, map, files stable -> volatile, report. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "internal.h"
#include "pool.h"

void repo_layout_options_default(struct repo_layout_options *o)
{
    memset(o, 0, sizeof *o);
    o->budget = REPO_BUDGET_DEFAULT;
}

/* ---- a growable byte buffer ---------------------------------------------------------------- */

/* Paths and skip details come from the file system and need not be UTF-8; the model's text must be. */
static void sb_lossy(struct ctx_buf *b)
{
    if (b->oom || !b->p) return;
    bool changed = false;
    size_t n = b->len;
    char *p = repo_utf8_lossy(b->p, &n, &changed);
    if (!p) {
        b->oom = true;
        return;
    }
    if (changed) {
        b->p = p;
        b->len = n;
        b->cap = n + 1;
    }
}

#define SB_LIT(b, lit) ctx_buf_put((b), (lit), sizeof(lit) - 1)

/* ---- rendering ----------------------------------------------------------------------------- */

/* Walks a file's lines forward; definitions come in line order, so rendering a file's signatures
 * is one pass over its text instead of one scan from the top per definition. */
struct line_cur {
    const char *p;
    uint32_t line;
};

static const char *line_at(const struct repo_file *f, struct line_cur *c, uint32_t line)
{
    const char *end = f->text + f->len;
    if (!c->p || line < c->line) {
        c->p = f->text;
        c->line = 0;
    }
    while (c->line < line && c->p < end) {
        const char *nl = memchr(c->p, '\n', (size_t)(end - c->p));
        c->p = nl ? nl + 1 : end;
        c->line++;
    }
    return c->p;
}

/* The source line holding `line` (0-based), trimmed, cut to at most 160 bytes on a UTF-8 boundary;
 * control characters (other than tab) become spaces so that one signature stays one line. */
static void put_signature(struct ctx_buf *b, const struct repo_file *f, struct line_cur *cur, uint32_t line)
{
    const char *end = f->text + f->len;
    const char *p = line_at(f, cur, line);
    const char *e = memchr(p, '\n', (size_t)(end - p));
    if (!e) e = end;
    while (p < e && (*p == ' ' || *p == '\t')) p++;
    while (e > p && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r')) e--;
    size_t len = (size_t)(e - p);
    bool cut = false;
    if (len > 160) {
        len = 160;
        while (len > 0 && ((unsigned char)p[len] & 0xC0) == 0x80) len--;
        cut = true;
    }
    size_t start = b->len;
    ctx_buf_put(b, p, len);
    if (!b->oom)
        for (size_t i = start; i < b->len; i++)
            if ((unsigned char)b->p[i] < 0x20 && b->p[i] != '\t') b->p[i] = ' ';
    if (cut) ctx_buf_put(b, " ...", 4);
}

/* A definition's first line, joined with the lines up to its name when the name comes a line or
 * two later ("static void\nfoo(int x)" -> "static void foo(int x)"). */
static void put_head(struct ctx_buf *b, const struct repo_file *f, struct line_cur *cur, const struct repo_symbol *y)
{
    put_signature(b, f, cur, y->node_line);
    if (y->line > y->node_line && y->line - y->node_line <= 2)
        for (uint32_t l = y->node_line + 1; l <= y->line; l++) {
            ctx_buf_put(b, " ", 1);
            put_signature(b, f, cur, l);
        }
}

static size_t count_lines(const struct repo_file *f)
{
    size_t n = 0;
    for (size_t i = 0; i < f->len; i++) n += f->text[i] == '\n';
    if (f->len && f->text[f->len - 1] != '\n') n++;
    return n;
}

static void render_full(struct ctx_buf *b, const struct repo_file *f)
{
    ctx_buf_printf(b, "File: %s\n", f->path);
    ctx_buf_put(b, f->text, f->len);
    if (f->len && f->text[f->len - 1] != '\n') ctx_buf_put(b, "\n", 1);
}

static void render_outline(struct ctx_buf *b, const struct repo_file *f)
{
    size_t nl = count_lines(f);
    if (!f->ndefs) {
        ctx_buf_printf(b, "Outline: %s (%zu lines, no definitions)\n", f->path, nl);
        return;
    }
    ctx_buf_printf(b, "Outline: %s (%zu lines)\n", f->path, nl);
    uint32_t last = UINT32_MAX;
    struct line_cur cur = {0};
    for (size_t i = 0; i < f->nsyms; i++) {
        const struct repo_symbol *y = &f->syms[i];
        /* The definition node's first line carries the signature ("static int\nfoo(void)" aside). */
        if (!y->is_def || y->node_line == last) continue;
        last = y->node_line;
        ctx_buf_printf(b, "%u: ", y->node_line + 1);
        put_head(b, f, &cur, y);
        ctx_buf_put(b, "\n", 1);
    }
}

static void render_preamble(struct ctx_buf *b, const struct repo_snapshot *s)
{
    ctx_buf_printf(b, "Repository: %s\n", s->name);
    SB_LIT(b,
           "What follows is the text of this repository. A map of its most referenced definitions "
           "comes first. Then each file follows, introduced by a line \"File: PATH\", from the least "
           "recently changed to the most recently changed; files changed in the working tree come "
           "last. When the repository does not fit, lower-ranked files appear as \"Outline: PATH\" "
           "with only the lines where their definitions begin, and a closing list names every file "
           "that is not shown in full, with the reason.\n");
}

struct def_ref {
    uint32_t file, sym;
    float rank;
};

/* qsort has no context argument in C17; ranks are compared first, and ties fall back to file index
 * order, which is path order because the snapshot's files are sorted by path. */
static int cmp_def_rank_idx(const void *a, const void *b)
{
    const struct def_ref *x = a, *y = b;
    if (x->rank != y->rank) return x->rank > y->rank ? -1 : 1;
    if (x->file != y->file) return x->file < y->file ? -1 : 1;
    return x->sym < y->sym ? -1 : x->sym > y->sym;
}

static int cmp_def_pos(const void *a, const void *b)
{
    const struct def_ref *x = a, *y = b;
    if (x->file != y->file) return x->file < y->file ? -1 : 1;
    return x->sym < y->sym ? -1 : x->sym > y->sym;
}

/* Map text from the top `k` definitions of `defs` (sorted by rank). Files appear in the order of
 * their best definition; within a file, definitions in line order. */
static void render_map(struct ctx_buf *b, const struct repo_snapshot *s, const struct def_ref *defs, size_t k,
                       struct def_ref *scratch, uint32_t *file_order)
{
    SB_LIT(b, "Repository map (definitions ranked by how much the rest of the code refers to them):\n");
    if (k == 0) return;
    memcpy(scratch, defs, k * sizeof *scratch);
    /* file_order[file] = position of its first appearance in rank order */
    for (size_t i = 0; i < k; i++) file_order[defs[i].file] = UINT32_MAX;
    uint32_t pos = 0;
    for (size_t i = 0; i < k; i++)
        if (file_order[defs[i].file] == UINT32_MAX) file_order[defs[i].file] = pos++;
    for (size_t i = 0; i < k; i++) scratch[i].rank = (float)file_order[scratch[i].file];
    /* Sort by (first appearance, sym index = line order). */
    qsort(scratch, k, sizeof *scratch, cmp_def_pos);
    /* Now group per file in rank-of-file order: collect per file start positions. */
    uint32_t nfiles = pos;
    size_t *start = calloc((size_t)nfiles + 1, sizeof *start);
    uint32_t *fidx = calloc((size_t)nfiles + 1, sizeof *fidx);
    if (!start || !fidx) {
        free(start);
        free(fidx);
        b->oom = true;
        return;
    }
    for (size_t i = 0; i < k;) {
        size_t j = i;
        while (j < k && scratch[j].file == scratch[i].file) j++;
        uint32_t o = (uint32_t)scratch[i].rank;
        start[o] = i;
        fidx[o] = (uint32_t)(j - i);
        i = j;
    }
    for (uint32_t o = 0; o < nfiles; o++) {
        const struct def_ref *d = &scratch[start[o]];
        const struct repo_file *f = &s->files[d->file];
        ctx_buf_printf(b, "%s:\n", f->path);
        uint32_t last = UINT32_MAX;
        struct line_cur cur = {0};
        for (uint32_t q = 0; q < fidx[o]; q++) {
            const struct repo_symbol *y = &f->syms[d[q].sym];
            if (y->node_line == last) continue;
            last = y->node_line;
            ctx_buf_printf(b, "  %u: ", y->node_line + 1);
            put_head(b, f, &cur, y);
            ctx_buf_put(b, "\n", 1);
        }
    }
    free(start);
    free(fidx);
}

static int count(const struct repo_layout_options *o, const char *t, size_t len, size_t *n, struct ctx_err *e)
{
    int rc = o->count_tokens(o->count_ud, t, len, n);
    if (rc) return ctx_err_set(e, rc, "counting tokens of a %zu-byte segment failed (%s)", len, ctx_code_name(rc));
    return 0;
}

/* The largest prefix of the ranked definitions whose map fits `budget`, by binary search. */
static int build_map(struct repo_snapshot *s, const struct repo_layout_options *o, size_t budget,
                     char **out, size_t *len, size_t *tokens, struct ctx_err *e)
{
    size_t nd = 0;
    for (size_t i = 0; i < s->nfiles; i++) nd += s->files[i].ndefs;
    struct def_ref *defs = malloc((nd ? nd : 1) * sizeof *defs);
    struct def_ref *scratch = malloc((nd ? nd : 1) * sizeof *scratch);
    uint32_t *order = malloc((s->nfiles ? s->nfiles : 1) * sizeof *order);
    struct ctx_buf b = {0};
    int rc = 0;
    if (!defs || !scratch || !order) {
        rc = ctx_err_set(e, CTX_ENOMEM, "map: out of memory");
        goto out;
    }
    size_t k = 0;
    for (size_t i = 0; i < s->nfiles; i++) {
        const struct repo_file *f = &s->files[i];
        for (size_t q = 0; q < f->nsyms; q++)
            if (f->syms[q].is_def) defs[k++] = (struct def_ref){(uint32_t)i, (uint32_t)q, f->syms[q].rank};
    }
    qsort(defs, nd, sizeof *defs, cmp_def_rank_idx);
    size_t lo = 0, hi = nd, best = 0, best_tokens = 0;
    /* Invariant: the map of `lo` definitions fits (0 always "fits": the header alone is tiny). */
    render_map(&b, s, defs, 0, scratch, order);
    sb_lossy(&b);
    if (b.oom) goto oom;
    if ((rc = count(o, b.p, b.len, &best_tokens, e))) goto out;
    while (lo < hi) {
        size_t mid = lo + (hi - lo + 1) / 2;
        b.len = 0;
        render_map(&b, s, defs, mid, scratch, order);
        sb_lossy(&b);
        if (b.oom) goto oom;
        size_t t;
        if ((rc = count(o, b.p, b.len, &t, e))) goto out;
        if (t <= budget) {
            lo = mid;
            best = mid;
            best_tokens = t;
        } else {
            hi = mid - 1;
        }
    }
    b.len = 0;
    render_map(&b, s, defs, best, scratch, order);
    sb_lossy(&b);
    if (b.oom) goto oom;
    *out = b.p;
    *len = b.len;
    *tokens = best_tokens;
    b.p = NULL;
    goto out;
oom:
    rc = ctx_err_set(e, CTX_ENOMEM, "map: out of memory");
out:
    free(b.p);
    free(defs);
    free(scratch);
    free(order);
    return rc;
}

int repo_map_render(struct repo_snapshot *s, const struct repo_focus *focus,
                    const struct repo_layout_options *o, size_t budget, char **out, size_t *len,
                    size_t *tokens, struct ctx_err *e)
{
    *out = NULL;
    int rc = repo_rank(s, focus, e);
    if (rc) return rc;
    return build_map(s, o, budget, out, len, tokens, e);
}

/* ---- layout -------------------------------------------------------------------------------- */

struct cand {
    uint32_t file;
    char *full, *outline;
    size_t full_len, outline_len;
    size_t full_tok, outline_tok;
    enum repo_decision dec;
    int rc;
    struct ctx_err err;
};

struct count_job {
    struct repo_snapshot *s;
    const struct repo_layout_options *o;
    struct cand *c;
};

/* Outlines are counted only when the files do not all fit in full (most repositories fit). */
static void count_outline_one(void *ud, size_t i, int tid)
{
    (void)tid;
    struct count_job *j = ud;
    struct cand *c = &j->c[i];
    if ((c->rc = count(j->o, c->outline, c->outline_len, &c->outline_tok, &c->err)))
        ctx_err_prefix(&c->err, "%s", j->s->files[c->file].path);
}

static void render_count_one(void *ud, size_t i, int tid)
{
    (void)tid;
    struct count_job *j = ud;
    struct cand *c = &j->c[i];
    const struct repo_file *f = &j->s->files[c->file];
    struct ctx_buf b = {0};
    render_full(&b, f);
    sb_lossy(&b);
    struct ctx_buf ob = {0};
    render_outline(&ob, f);
    sb_lossy(&ob);
    if (b.oom || ob.oom) {
        free(b.p);
        free(ob.p);
        c->rc = ctx_err_set(&c->err, CTX_ENOMEM, "%s: out of memory", f->path);
        return;
    }
    c->full = b.p;
    c->full_len = b.len;
    c->outline = ob.p;
    c->outline_len = ob.len;
    if ((c->rc = count(j->o, c->full, c->full_len, &c->full_tok, &c->err))) ctx_err_prefix(&c->err, "%s", f->path);
}

/* Files by rank, best first; ties by path (file index order: the snapshot is sorted by path). */
struct rank_key {
    double rank;
    uint32_t idx; /* into cands */
    uint32_t file;
};

static int cmp_rank_key(const void *a, const void *b)
{
    const struct rank_key *x = a, *y = b;
    if (x->rank != y->rank) return x->rank > y->rank ? -1 : 1;
    return x->file < y->file ? -1 : x->file > y->file;
}

/* Stable -> volatile: files unchanged in the working tree first, least recently committed first,
 * then fewer commits, then path. */
struct order_key {
    bool dirty;
    int64_t last;
    uint32_t commits;
    uint32_t file;
    uint32_t idx;
};

static int cmp_order_key(const void *a, const void *b)
{
    const struct order_key *x = a, *y = b;
    if (x->dirty != y->dirty) return x->dirty ? 1 : -1;
    if (x->last != y->last) return x->last < y->last ? -1 : 1;
    if (x->commits != y->commits) return x->commits < y->commits ? -1 : 1;
    return x->file < y->file ? -1 : x->file > y->file;
}

static const char *decision_reason(enum repo_decision d)
{
    switch (d) {
    case REPO_DEC_FULL: return "in budget";
    case REPO_DEC_OUTLINE: return "over budget, ranked low: signatures only";
    case REPO_DEC_OMITTED: return "over budget, ranked lowest: not even an outline fits";
    default: return "skipped";
    }
}

/* Lines of the closing report for a budget: ~1% of it in names (a line is ~25 tokens), between 32
 * and 400. A small budget over a repository of thousands of files (the demo's 8192 tokens here: ~1300
 * files, most of them benchmark outputs) would otherwise go to the report alone. */
static size_t report_lines(size_t budget)
{
    size_t n = budget / 96;
    return n < 32 ? 32 : n > 400 ? 400 : n;
}

/* The closing list of files not shown in full. At most report_lines(budget) lines, then counts per
 * reason, so that a repository with thousands of vendored files does not spend its budget on their
 * names. */
static void render_report(struct ctx_buf *b, const struct repo_snapshot *s, const enum repo_decision *dec,
                          size_t budget)
{
    const size_t max_lines = report_lines(budget);
    size_t n = 0;
    for (size_t i = 0; i < s->nfiles; i++) n += dec[i] != REPO_DEC_FULL;
    if (n == 0) {
        SB_LIT(b, "Not shown in full: none; every file of the repository is above.\n");
        return;
    }
    ctx_buf_printf(b, "Not shown in full (%zu files):\n", n);
    size_t shown = 0, per[16] = {0};
    size_t per_dec[4] = {0};
    for (size_t i = 0; i < s->nfiles; i++) {
        const struct repo_file *f = &s->files[i];
        if (dec[i] == REPO_DEC_FULL) continue;
        if (shown < max_lines) {
            if (dec[i] == REPO_DEC_SKIPPED)
                ctx_buf_printf(b, "- %s: %s%s%s\n", f->path, repo_skip_name(f->skip), f->skip_detail ? ", " : "",
                          f->skip_detail ? f->skip_detail : "");
            else
                ctx_buf_printf(b, "- %s: %s\n", f->path, dec[i] == REPO_DEC_OUTLINE ? "outline only" : "omitted");
            shown++;
        } else if (dec[i] == REPO_DEC_SKIPPED) {
            per[f->skip & 15]++;
        } else {
            per_dec[dec[i]]++;
        }
    }
    if (shown < n) {
        ctx_buf_printf(b, "- and %zu more:", n - shown);
        if (per_dec[REPO_DEC_OUTLINE]) ctx_buf_printf(b, " %zu outline only;", per_dec[REPO_DEC_OUTLINE]);
        if (per_dec[REPO_DEC_OMITTED]) ctx_buf_printf(b, " %zu omitted;", per_dec[REPO_DEC_OMITTED]);
        for (int k = 0; k < 16; k++)
            if (per[k]) ctx_buf_printf(b, " %zu %s;", per[k], repo_skip_name((enum repo_skip)k));
        ctx_buf_put(b, "\n", 1);
    }
}

static void seg_set(struct repo_segment *g, enum repo_seg_kind kind, const char *path, char *text, size_t len,
                    size_t tokens)
{
    g->kind = kind;
    g->path = path ? strdup(path) : NULL;
    g->text = text;
    g->len = len;
    g->tokens = tokens;
    g->hash = repo_hash64(text, len);
}

void repo_layout_free(struct repo_layout *l)
{
    if (!l) return;
    for (size_t i = 0; i < l->nsegs; i++) {
        free(l->segs[i].path);
        free(l->segs[i].text);
    }
    for (size_t i = 0; i < l->nreport; i++) {
        free(l->report[i].path);
        free(l->report[i].detail);
    }
    free(l->segs);
    free(l->report);
    free(l);
}

static int fill_report(struct repo_layout *l, const struct repo_snapshot *s, const enum repo_decision *dec,
                       const size_t *full_tok, const size_t *seg_of, struct ctx_err *e)
{
    for (size_t i = 0; i < l->nreport; i++) {
        free(l->report[i].path);
        free(l->report[i].detail);
    }
    free(l->report);
    l->report = calloc(s->nfiles ? s->nfiles : 1, sizeof *l->report);
    if (!l->report) return ctx_err_set(e, CTX_ENOMEM, "layout: out of memory");
    l->nreport = s->nfiles;
    l->n_full = l->n_outline = l->n_omitted = l->n_skipped = 0;
    for (size_t i = 0; i < s->nfiles; i++) {
        const struct repo_file *f = &s->files[i];
        struct repo_report_entry *r = &l->report[i];
        r->path = strdup(f->path);
        r->decision = dec[i];
        r->reason = dec[i] == REPO_DEC_SKIPPED ? repo_skip_name(f->skip) : decision_reason(dec[i]);
        r->detail = f->skip_detail ? strdup(f->skip_detail) : NULL;
        r->tokens_full = full_tok[i];
        r->segment = seg_of[i];
        r->tokens_used = seg_of[i] != SIZE_MAX ? l->segs[seg_of[i]].tokens : 0;
        r->rank = f->rank;
        if (!r->path) return ctx_err_set(e, CTX_ENOMEM, "layout: out of memory");
        switch (dec[i]) {
        case REPO_DEC_FULL: l->n_full++; break;
        case REPO_DEC_OUTLINE: l->n_outline++; break;
        case REPO_DEC_OMITTED: l->n_omitted++; break;
        default: l->n_skipped++; break;
        }
    }
    return 0;
}

int repo_layout_build(struct repo_snapshot *s, const struct repo_layout_options *o,
                      struct repo_layout **out, struct ctx_err *e)
{
    *out = NULL;
    if (!o->count_tokens) return ctx_err_set(e, CTX_EINVAL, "layout: no token counter given");
    size_t budget = o->budget ? o->budget : REPO_BUDGET_DEFAULT;
    if (budget > REPO_BUDGET_MAX)
        return ctx_err_set(e, CTX_ERANGE, "layout: budget %zu over the maximum %u", budget, REPO_BUDGET_MAX);
    int rc;
    if (!s->ranked && (rc = repo_rank(s, NULL, e))) return rc;
    size_t map_budget = o->map_budget;
    if (!map_budget) {
        map_budget = budget / 32;
        if (map_budget < 256) map_budget = 256;
        if (map_budget > 16384) map_budget = 16384;
    }
    struct repo_layout *l = calloc(1, sizeof *l);
    size_t nf = s->nfiles;
    struct cand *c = calloc(nf ? nf : 1, sizeof *c);
    enum repo_decision *dec = calloc(nf ? nf : 1, sizeof *dec);
    size_t *full_tok = calloc(nf ? nf : 1, sizeof *full_tok);
    size_t *seg_of = malloc((nf ? nf : 1) * sizeof *seg_of);
    struct rank_key *rk = malloc((nf ? nf : 1) * sizeof *rk);
    struct order_key *ok = malloc((nf ? nf : 1) * sizeof *ok);
    struct ctx_buf pre = {0}, rep = {0};
    char *map = NULL;
    size_t map_len = 0, map_tok = 0, pre_tok = 0;
    if (!l || !c || !dec || !full_tok || !seg_of || !rk || !ok) {
        rc = ctx_err_set(e, CTX_ENOMEM, "layout: out of memory");
        goto out;
    }
    l->budget = budget;
    render_preamble(&pre, s);
    sb_lossy(&pre);
    if (pre.oom) goto oom;
    if ((rc = count(o, pre.p, pre.len, &pre_tok, e))) goto out;
    if ((rc = build_map(s, o, map_budget, &map, &map_len, &map_tok, e))) goto out;

    size_t nc = 0;
    for (size_t i = 0; i < nf; i++) {
        seg_of[i] = SIZE_MAX;
        if (s->files[i].text) c[nc++].file = (uint32_t)i;
        else dec[i] = REPO_DEC_SKIPPED;
    }
    struct count_job job = {s, o, c};
    if (o->pool && o->count_thread_safe) ctx_pool_for(o->pool, nc, 1, render_count_one, &job);
    else
        for (size_t i = 0; i < nc; i++) render_count_one(&job, i, 0);
    for (size_t i = 0; i < nc; i++)
        if (c[i].rc) {
            rc = c[i].rc;
            if (e) *e = c[i].err;
            goto out;
        }
    for (size_t i = 0; i < nc; i++) {
        rk[i] = (struct rank_key){s->files[c[i].file].rank, (uint32_t)i, c[i].file};
        full_tok[c[i].file] = c[i].full_tok;
    }
    qsort(rk, nc, sizeof *rk, cmp_rank_key);

    /* Decide: everything in full if it fits; else outlines for all, omissions from the bottom of
     * the ranking until the outlines fit, then full text again from the top of the ranking while it
     * fits. The closing report's size depends on the decisions, so the room reserved for it starts
     * at zero and grows by the overshoot until the whole fits (a few rounds). */
    size_t reserve = 0, rep_tok = 0, files_tok = 0;
    bool outlines_counted = false;
    for (int round = 0;; round++) {
        size_t fixed = pre_tok + map_tok + reserve;
        size_t avail = budget > fixed ? budget - fixed : 0;
        size_t sum_full = 0;
        for (size_t i = 0; i < nc; i++) {
            sum_full += c[i].full_tok;
        }
        size_t used;
        if (sum_full <= avail) {
            for (size_t i = 0; i < nc; i++) c[i].dec = REPO_DEC_FULL;
            used = sum_full;
        } else {
            if (!outlines_counted) {
                if (o->pool && o->count_thread_safe) ctx_pool_for(o->pool, nc, 1, count_outline_one, &job);
                else
                    for (size_t i = 0; i < nc; i++) count_outline_one(&job, i, 0);
                for (size_t i = 0; i < nc; i++)
                    if (c[i].rc) {
                        rc = c[i].rc;
                        if (e) *e = c[i].err;
                        goto out;
                    }
                outlines_counted = true;
            }
            /* Each file in its cheaper form: a small file's outline can cost more than its text. */
            used = 0;
            for (size_t i = 0; i < nc; i++) {
                c[i].dec = c[i].full_tok <= c[i].outline_tok ? REPO_DEC_FULL : REPO_DEC_OUTLINE;
                used += c[i].dec == REPO_DEC_FULL ? c[i].full_tok : c[i].outline_tok;
            }
            for (size_t r = nc; r-- > 0 && used > avail;) {
                struct cand *x = &c[rk[r].idx];
                used -= x->dec == REPO_DEC_FULL ? x->full_tok : x->outline_tok;
                x->dec = REPO_DEC_OMITTED;
            }
            for (size_t r = 0; r < nc; r++) {
                struct cand *x = &c[rk[r].idx];
                if (x->dec != REPO_DEC_OUTLINE) continue;
                if (used - x->outline_tok + x->full_tok <= avail) {
                    used = used - x->outline_tok + x->full_tok;
                    x->dec = REPO_DEC_FULL;
                }
            }
        }
        for (size_t i = 0; i < nc; i++) dec[c[i].file] = c[i].dec;
        rep.len = 0;
        render_report(&rep, s, dec, budget);
        sb_lossy(&rep);
        if (rep.oom) goto oom;
        if ((rc = count(o, rep.p, rep.len, &rep_tok, e))) goto out;
        files_tok = used;
        size_t total = pre_tok + map_tok + files_tok + rep_tok;
        if (total <= budget || avail == 0) break;
        size_t over = total - budget;
        /* Late rounds jump further, so that a report that grows with every demotion still ends. */
        reserve += round < 8 ? over : over * 2 + (size_t)round * 16;
    }
    if (pre_tok + map_tok + files_tok + rep_tok > budget) {
        rc = ctx_err_set(e, CTX_ERANGE,
                         "layout: budget %zu is too small: the preamble, map and report alone need %zu tokens",
                         budget, pre_tok + map_tok + rep_tok);
        goto out;
    }

    size_t nk = 0;
    for (size_t i = 0; i < nc; i++) {
        if (c[i].dec == REPO_DEC_OMITTED) continue;
        const struct repo_file *f = &s->files[c[i].file];
        ok[nk++] = (struct order_key){f->dirty, f->last_change, f->churn_commits, c[i].file, (uint32_t)i};
    }
    qsort(ok, nk, sizeof *ok, cmp_order_key);
    l->segs = calloc(nk + 3, sizeof *l->segs);
    if (!l->segs) goto oom;
    seg_set(&l->segs[0], REPO_SEG_PREAMBLE, NULL, pre.p, pre.len, pre_tok);
    pre.p = NULL;
    seg_set(&l->segs[1], REPO_SEG_MAP, NULL, map, map_len, map_tok);
    map = NULL;
    l->nsegs = 2;
    for (size_t k = 0; k < nk; k++) {
        struct cand *x = &c[ok[k].idx];
        const struct repo_file *f = &s->files[x->file];
        struct repo_segment *g = &l->segs[l->nsegs];
        if (x->dec == REPO_DEC_FULL) {
            seg_set(g, REPO_SEG_FILE, f->path, x->full, x->full_len, x->full_tok);
            x->full = NULL;
        } else {
            seg_set(g, REPO_SEG_OUTLINE, f->path, x->outline, x->outline_len, x->outline_tok);
            x->outline = NULL;
        }
        if (!g->path) goto oom;
        seg_of[x->file] = l->nsegs++;
    }
    seg_set(&l->segs[l->nsegs++], REPO_SEG_REPORT, NULL, rep.p, rep.len, rep_tok);
    rep.p = NULL;
    l->total_tokens = 0;
    for (size_t i = 0; i < l->nsegs; i++) l->total_tokens += l->segs[i].tokens;
    if ((rc = fill_report(l, s, dec, full_tok, seg_of, e))) goto out;
    *out = l;
    l = NULL;
    rc = 0;
    goto out;
oom:
    rc = ctx_err_set(e, CTX_ENOMEM, "layout: out of memory");
out:
    for (size_t i = 0; c && i < nf; i++) {
        free(c[i].full);
        free(c[i].outline);
    }
    free(c);
    free(dec);
    free(full_tok);
    free(seg_of);
    free(rk);
    free(ok);
    free(pre.p);
    free(rep.p);
    free(map);
    repo_layout_free(l);
    return rc;
}

static size_t find_seg(const struct repo_layout *l, const char *path)
{
    for (size_t i = 0; i < l->nsegs; i++)
        if (l->segs[i].path && strcmp(l->segs[i].path, path) == 0) return i;
    return SIZE_MAX;
}

int repo_layout_update(struct repo_layout *l, struct repo_snapshot *s, const struct repo_layout_options *o,
                       const char *const *changed, size_t n, size_t *first_changed, struct ctx_err *e)
{
    *first_changed = l->nsegs;
    if (!o->count_tokens) return ctx_err_set(e, CTX_EINVAL, "layout: no token counter given");
    size_t old_n = l->nsegs;
    uint64_t *old_hash = malloc((old_n ? old_n : 1) * sizeof *old_hash);
    char **old_path = malloc((old_n ? old_n : 1) * sizeof *old_path);
    size_t nf = s->nfiles;
    enum repo_decision *dec = calloc(nf ? nf : 1, sizeof *dec);
    size_t *full_tok = calloc(nf ? nf : 1, sizeof *full_tok);
    size_t *seg_of = malloc((nf ? nf : 1) * sizeof *seg_of);
    struct ctx_buf b = {0};
    int rc = 0;
    if (!old_hash || !old_path || !dec || !full_tok || !seg_of) goto oom;
    for (size_t i = 0; i < old_n; i++) {
        old_hash[i] = l->segs[i].hash;
        old_path[i] = l->segs[i].path;
    }
    /* Room for every new file. */
    struct repo_segment *ns = realloc(l->segs, (l->nsegs + n + 1) * sizeof *ns);
    if (!ns) goto oom;
    l->segs = ns;
    for (size_t k = 0; k < n; k++) {
        const char *p = changed[k];
        bool dup = false;
        for (size_t q = 0; q < k; q++) dup |= strcmp(changed[q], p) == 0;
        if (dup) continue;
        struct repo_file *f = repo_snapshot_find(s, p);
        size_t si = find_seg(l, p);
        if (!f || !f->text) {
            if (si != SIZE_MAX) {
                /* Its path string is still referenced by old_path: freed at the end. */
                free(l->segs[si].text);
                for (size_t q = 0; q < old_n; q++)
                    if (old_path[q] == l->segs[si].path) old_path[q] = NULL;
                free(l->segs[si].path);
                memmove(&l->segs[si], &l->segs[si + 1], (l->nsegs - si - 1) * sizeof *l->segs);
                l->nsegs--;
            }
            continue;
        }
        bool outline = si != SIZE_MAX && l->segs[si].kind == REPO_SEG_OUTLINE;
        b.len = 0;
        if (outline) render_outline(&b, f);
        else render_full(&b, f);
        sb_lossy(&b);
        if (b.oom) goto oom;
        size_t t;
        if ((rc = count(o, b.p, b.len, &t, e))) goto out;
        char *text = malloc(b.len + 1);
        if (!text) goto oom;
        memcpy(text, b.p, b.len + 1);
        if (si == SIZE_MAX) {
            /* A new file: after the last file segment, i.e. just before the report. */
            si = l->nsegs - 1;
            memmove(&l->segs[si + 1], &l->segs[si], sizeof *l->segs);
            l->nsegs++;
            seg_set(&l->segs[si], REPO_SEG_FILE, f->path, text, b.len, t);
            if (!l->segs[si].path) goto oom;
        } else {
            free(l->segs[si].text);
            l->segs[si].text = text;
            l->segs[si].len = b.len;
            l->segs[si].tokens = t;
            l->segs[si].hash = repo_hash64(text, b.len);
        }
    }
    /* Decisions and the report from the segments as they now are. */
    for (size_t i = 0; i < nf; i++) {
        seg_of[i] = SIZE_MAX;
        dec[i] = s->files[i].text ? REPO_DEC_OMITTED : REPO_DEC_SKIPPED;
    }
    for (size_t i = 0; i < l->nsegs; i++) {
        if (!l->segs[i].path) continue;
        struct repo_file *f = repo_snapshot_find(s, l->segs[i].path);
        if (!f) continue;
        size_t fi = (size_t)(f - s->files);
        seg_of[fi] = i;
        dec[fi] = l->segs[i].kind == REPO_SEG_FILE ? REPO_DEC_FULL : REPO_DEC_OUTLINE;
    }
    for (size_t i = 0; i < l->nreport; i++) {
        struct repo_file *f = repo_snapshot_find(s, l->report[i].path);
        if (f) full_tok[f - s->files] = l->report[i].tokens_full;
    }
    for (size_t i = 0; i < nf; i++)
        if (dec[i] == REPO_DEC_FULL) full_tok[i] = l->segs[seg_of[i]].tokens;
    b.len = 0;
    render_report(&b, s, dec, l->budget);
    sb_lossy(&b);
    if (b.oom) goto oom;
    size_t rt;
    if ((rc = count(o, b.p, b.len, &rt, e))) goto out;
    struct repo_segment *rs = &l->segs[l->nsegs - 1];
    free(rs->text);
    rs->text = b.p;
    rs->len = b.len;
    rs->tokens = rt;
    rs->hash = repo_hash64(b.p, b.len);
    b.p = NULL;
    l->total_tokens = 0;
    for (size_t i = 0; i < l->nsegs; i++) l->total_tokens += l->segs[i].tokens;
    l->over_budget = l->total_tokens > l->budget;
    if ((rc = fill_report(l, s, dec, full_tok, seg_of, e))) goto out;
    size_t fc = 0;
    while (fc < l->nsegs && fc < old_n && l->segs[fc].hash == old_hash[fc] &&
           ((!l->segs[fc].path && !old_path[fc]) ||
            (l->segs[fc].path && old_path[fc] && l->segs[fc].path == old_path[fc])))
        fc++;
    *first_changed = fc == old_n && fc == l->nsegs ? l->nsegs : fc;
    goto out;
oom:
    rc = ctx_err_set(e, CTX_ENOMEM, "layout: out of memory");
out:
    free(b.p);
    free(old_hash);
    free(old_path);
    free(dec);
    free(full_tok);
    free(seg_of);
    return rc;
}
