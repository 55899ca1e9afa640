/* ctx-data build: the data set of tools/data/README.md. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bpe.h"
#include "corpus.h"
#include "ctx_config.h"
#include "data.h"
#include "json.h"
#include "repo.h"
#include "tools.h"
#include "transcript.h"

/* ---- token streams ---------------------------------------------------------------------------- */

struct stream {
    uint16_t *ids;
    uint8_t *mask; /* one byte per token here; packed to bits when written */
    size_t n, cap;
    uint32_t *docs; /* (start, length, kind) per document */
    size_t ndocs, cdocs;
};

enum doc_kind { DOC_CODE = 0, DOC_FIM = 1, DOC_TRANSCRIPT = 2 };

/* Record a document that started at token `start` and ends at the current end. */
static int stream_doc(struct stream *s, size_t start, enum doc_kind kind)
{
    if (s->ndocs == s->cdocs) {
        size_t cap = s->cdocs ? s->cdocs * 2 : 4096;
        uint32_t *d = realloc(s->docs, cap * 3 * sizeof *d);
        if (!d)
            return CTX_ENOMEM;
        s->docs = d;
        s->cdocs = cap;
    }
    s->docs[3 * s->ndocs] = (uint32_t)start;
    s->docs[3 * s->ndocs + 1] = (uint32_t)(s->n - start);
    s->docs[3 * s->ndocs + 2] = (uint32_t)kind;
    s->ndocs++;
    return 0;
}

static int stream_add(struct stream *s, const int32_t *ids, const uint8_t *mask, uint8_t all, size_t n)
{
    if (s->n + n > s->cap) {
        size_t cap = s->cap ? s->cap : 1 << 20;
        while (cap < s->n + n)
            cap *= 2;
        uint16_t *ni = realloc(s->ids, cap * sizeof *ni);
        if (!ni)
            return CTX_ENOMEM;
        s->ids = ni;
        uint8_t *nm = realloc(s->mask, cap);
        if (!nm)
            return CTX_ENOMEM;
        s->mask = nm;
        s->cap = cap;
    }
    for (size_t i = 0; i < n; i++) {
        s->ids[s->n + i] = (uint16_t)ids[i];
        s->mask[s->n + i] = mask ? mask[i] : all;
    }
    s->n += n;
    return 0;
}

static int stream_write(const struct stream *s, const char *dir, const char *name, struct ctx_err *e)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.bin", dir, name);
    int rc = data_write_atomic(path, s->ids, s->n * sizeof *s->ids, e); /* little-endian host */
    if (rc)
        return rc;
    size_t nb = (s->n + 7) / 8;
    uint8_t *bits = calloc(nb ? nb : 1, 1);
    if (!bits)
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    for (size_t i = 0; i < s->n; i++)
        if (s->mask[i])
            bits[i / 8] |= (uint8_t)(1u << (i % 8));
    snprintf(path, sizeof path, "%s/%s.mask", dir, name);
    rc = data_write_atomic(path, bits, nb, e);
    free(bits);
    if (rc)
        return rc;
    snprintf(path, sizeof path, "%s/%s.idx", dir, name);
    return data_write_atomic(path, s->docs, s->ndocs * 3 * sizeof *s->docs, e);
}

static size_t stream_masked(const struct stream *s)
{
    size_t k = 0;
    for (size_t i = 0; i < s->n; i++)
        k += s->mask[i];
    return k;
}

/* ---- small helpers ---------------------------------------------------------------------------- */

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static int run_sh(const char *fmt, const char *a, const char *b)
{
    char cmd[8192];
    snprintf(cmd, sizeof cmd, fmt, a, b);
    return system(cmd);
}

static int mkdirs(const char *path)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(tmp, 0755) && errno != EEXIST)
                return -1;
            *p = '/';
        }
    return mkdir(tmp, 0755) && errno != EEXIST ? -1 : 0;
}

struct ids {
    int32_t *v;
    size_t n;
};

static int encode_literal(const struct inf_tokenizer *tok, const char *text, size_t len, struct ids *out,
                          struct ctx_err *e)
{
    return inf_tokenizer_encode_flags(tok, text, len, INF_TOK_LITERAL, &out->v, &out->n, e);
}

/* ---- code documents and FIM ------------------------------------------------------------------- */

struct specials {
    int32_t bos, eos, fim_begin, fim_hole, fim_end;
};

/* BOS text EOS, all trained but BOS. */
static int add_code_doc(struct stream *s, const struct specials *sp, const struct ids *t)
{
    int32_t b = sp->bos, eos = sp->eos;
    size_t start = s->n;
    int rc = stream_add(s, &b, NULL, 0, 1);
    if (!rc)
        rc = stream_add(s, t->v, NULL, 1, t->n);
    if (!rc)
        rc = stream_add(s, &eos, NULL, 1, 1);
    if (!rc)
        rc = stream_doc(s, start, DOC_CODE);
    return rc;
}

/* FIM as daemon/fim.c prompts it: BOS <｜fim▁begin｜> prefix <｜fim▁hole｜> suffix <｜fim▁end｜>, then
 * the model's middle and EOS (trained: middle + EOS). Prefix, suffix and middle are tokenized
 * separately and literally, as the daemon does. The middle is a span of 1-4 lines or the rest of a
 * line, cut at a random point. */
static int add_fim_doc(struct stream *s, const struct specials *sp, const struct inf_tokenizer *tok,
                       const char *text, size_t len, uint64_t *rng, struct ctx_err *e)
{
    if (len < 64)
        return 0;
    size_t a = (size_t)(rng_next(rng) % len);
    while (a > 0 && (text[a] & 0xC0) == 0x80)
        a--;
    size_t b = a;
    uint64_t r = rng_next(rng) % 4;
    if (r == 0) { /* rest of the line */
        while (b < len && text[b] != '\n')
            b++;
    } else { /* from a line start, r lines */
        while (a > 0 && text[a - 1] != '\n')
            a--;
        b = a;
        for (uint64_t k = 0; k < r && b < len; k++) {
            while (b < len && text[b] != '\n')
                b++;
            if (b < len)
                b++;
        }
    }
    if (b <= a)
        return 0;
    /* the daemon's budget keeps at most ~2K tokens around the cursor: keep 4 KB / 1.5 KB */
    size_t p0 = a > 4096 ? a - 4096 : 0, s1 = len - b > 1536 ? b + 1536 : len;
    while (p0 > 0 && (text[p0] & 0xC0) == 0x80)
        p0++;
    while (s1 < len && (text[s1] & 0xC0) == 0x80)
        s1--;
    struct ids pre = {0}, mid = {0}, suf = {0};
    int rc = encode_literal(tok, text + p0, a - p0, &pre, e);
    if (!rc)
        rc = encode_literal(tok, text + a, b - a, &mid, e);
    if (!rc)
        rc = encode_literal(tok, text + b, s1 - b, &suf, e);
    if (!rc) {
        int32_t h[2] = {sp->bos, sp->fim_begin};
        size_t start = s->n;
        rc = stream_add(s, h, NULL, 0, 2);
        if (!rc)
            rc = stream_add(s, pre.v, NULL, 0, pre.n);
        if (!rc)
            rc = stream_add(s, &sp->fim_hole, NULL, 0, 1);
        if (!rc)
            rc = stream_add(s, suf.v, NULL, 0, suf.n);
        if (!rc)
            rc = stream_add(s, &sp->fim_end, NULL, 0, 1);
        if (!rc)
            rc = stream_add(s, mid.v, NULL, 1, mid.n);
        if (!rc)
            rc = stream_add(s, &sp->eos, NULL, 1, 1);
        if (!rc)
            rc = stream_doc(s, start, DOC_FIM);
        if (rc)
            ctx_err_set(e, rc, "out of memory");
    }
    free(pre.v);
    free(mid.v);
    free(suf.v);
    return rc;
}

/* ---- repositories for transcripts ------------------------------------------------------------- */

static bool grammar_file(const char *p)
{
    const char *d = strrchr(p, '.');
    if (!d)
        return false;
    static const char *const ext[] = {".c", ".h", ".py", ".js", ".mjs", ".cjs", ".ts", ".go", ".rs", ".java",
                                      ".sh", ".cc", ".cpp", ".hpp", NULL};
    for (size_t i = 0; ext[i]; i++)
        if (strcmp(d, ext[i]) == 0)
            return true;
    return false;
}

static int cmp_doc_path(const void *a, const void *b, void *ud)
{
    const struct data_corpus *c = ud;
    return strcmp(c->doc[*(const size_t *)a].path, c->doc[*(const size_t *)b].path);
}

/* Make a git repository at dst holding the corpus files ix[0..n) (paths relative to their common
 * directory; `label` names the commit). Returns the number of files, or 0 if they do not suit. */
static size_t make_repo_docs(const struct data_corpus *c, const size_t *ix, size_t n_ix, const char *label,
                             const char *dst, size_t max_files, size_t max_bytes)
{
    size_t n = 0, bytes = 0, gram = 0, common = 0;
    const char *first = NULL;
    for (size_t q = 0; q < n_ix; q++) {
        const char *p = c->doc[ix[q]].path;
        if (!first) {
            first = p;
            const char *sl = strrchr(p, '/');
            common = sl ? (size_t)(sl - p) + 1 : 0;
        } else {
            size_t k = 0;
            while (k < common && p[k] == first[k])
                k++;
            while (k > 0 && first[k - 1] != '/')
                k--;
            common = k;
        }
        n++;
        bytes += c->doc[ix[q]].size;
        gram += grammar_file(p);
    }
    if (n < 3 || n > max_files || bytes > max_bytes || gram * 2 < n)
        return 0;
    struct stat st;
    char probe[4200];
    snprintf(probe, sizeof probe, "%s/.git", dst);
    if (stat(probe, &st) == 0)
        return n; /* made by an earlier run */
    if (mkdirs(dst))
        return 0;
    for (size_t q = 0; q < n_ix; q++) {
        const struct data_doc *d = &c->doc[ix[q]];
        char to[8192];
        snprintf(to, sizeof to, "%s/%s", dst, d->path + common);
        char *sl = strrchr(to, '/');
        *sl = 0;
        mkdirs(to);
        *sl = '/';
        size_t len;
        char *text = data_doc_read(d, &len);
        if (!text)
            continue;
        FILE *f = fopen(to, "wb");
        if (f) {
            fwrite(text, 1, len, f);
            fclose(f);
        }
        free(text);
    }
    if (run_sh("cd '%s' && git init -q && git add -A && git -c user.name=ctx -c user.email=ctx@localhost "
               "commit -qm 'import %s' >/dev/null 2>&1",
               dst, label))
        return 0;
    return n;
}

/* The indices of a group's files, in list order (or sorted by path); *n their count. */
static size_t *group_docs(const struct data_corpus *c, const char *group, bool sorted, size_t *n)
{
    size_t k = 0;
    for (size_t i = 0; i < c->n; i++)
        k += c->doc[i].group == group;
    size_t *ix = malloc((k ? k : 1) * sizeof *ix);
    if (!ix) {
        *n = 0;
        return NULL;
    }
    k = 0;
    for (size_t i = 0; i < c->n; i++)
        if (c->doc[i].group == group)
            ix[k++] = i;
    if (sorted)
        qsort_r(ix, k, sizeof *ix, cmp_doc_path, (void *)c);
    *n = k;
    return ix;
}

/* Make a git repository at dst holding the group's files (paths relative to their common
 * directory). Returns the number of files, or 0 if the group does not suit. */
static size_t make_repo(const struct data_corpus *c, const char *group, const char *dst, size_t max_files,
                        size_t max_bytes)
{
    size_t n;
    size_t *ix = group_docs(c, group, false, &n);
    size_t r = ix ? make_repo_docs(c, ix, n, group, dst, max_files, max_bytes) : 0;
    free(ix);
    return r;
}

static int count_literal(void *ud, const char *text, size_t len, size_t *n)
{
    struct ctx_err e = {0};
    return inf_tokenizer_count_flags(ud, text, len, INF_TOK_LITERAL, n, &e);
}

static bool good_def(const struct repo_file *f, const struct repo_symbol *y)
{
    if (!y->is_def || y->name_len < 3 || y->name_len > 48)
        return false;
    switch (y->kind) {
    case REPO_SYM_FUNCTION:
    case REPO_SYM_METHOD:
    case REPO_SYM_CLASS:
    case REPO_SYM_TYPE:
    case REPO_SYM_MACRO:
    case REPO_SYM_INTERFACE:
    case REPO_SYM_CONSTANT:
        break;
    default:
        return false;
    }
    for (uint32_t i = 0; i < y->name_len; i++) {
        char ch = f->text[y->name_off + i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_'))
            return false;
    }
    return true;
}

struct cand {
    size_t file, sym;
};

struct repo_job {
    const char *name; /* group or repository label */
    char dir[4096];
    bool heldout;
    bool chunk; /* a piece of a large training group (name allocated) */
};

struct build {
    const struct inf_tokenizer *tok;
    struct specials sp;
    struct stream *train, *val;
    FILE *eval;
    size_t n_tr[DATA_TASK_KIND_COUNT], n_drop, n_repos, tr_tokens_train, tr_tokens_val, tr_masked;
    size_t n_eval;
    int show;
    /* training repositories only (held-out ones keep the original recipe, so val and eval.jsonl
     * stay the same for a given corpus and tokenizer): */
    size_t short_budget; /* > 0: a share of tasks see the repository laid out at this budget */
    double short_frac;   /* that share */
    double long_frac;    /* share of picks among long names (>= 14 chars, or upper-case macros >= 10) */
    bool def_heavy;      /* more "where is X defined" tasks (50/15/15/10/10 instead of 40/15/15/18/12) */
    bool read_quote;     /* find_symbol + read_file tasks asked as "quote the line" (data_task.quote) */
    size_t n_short, n_long;
};

/* Long identifiers are where the small model's copying fails (GAUDI2_QUEUE_ID_NIC_13_2): a share
 * of the training questions is drawn among them. */
static bool long_name(const char *s, size_t n)
{
    if (n >= 14)
        return true;
    bool lower = false;
    size_t us = 0;
    for (size_t i = 0; i < n; i++) {
        lower |= s[i] >= 'a' && s[i] <= 'z';
        us += s[i] == '_';
    }
    return n >= 10 && !lower && us > 0;
}

static const char *comment_for(const char *path)
{
    const char *d = strrchr(path, '.');
    if (d && (!strcmp(d, ".py") || !strcmp(d, ".sh")))
        return "#";
    return "//";
}

/* Transcripts for one repository: up to per_repo tasks over distinct, uniquely defined names. */
static int repo_transcripts(struct build *B, const struct repo_job *job, size_t per_repo, uint64_t seed,
                            struct ctx_err *e)
{
    struct repo_options ro;
    repo_options_default(&ro);
    struct repo_snapshot *snap = NULL;
    struct repo_layout *lay = NULL;
    struct agent_tools *tools = NULL;
    int rc = repo_snapshot_open(job->dir, &ro, NULL, &snap, e);
    if (rc)
        return rc;
    struct repo_layout_options lo;
    repo_layout_options_default(&lo);
    lo.count_tokens = count_literal;
    lo.count_ud = (void *)B->tok;
    /* DATA_BUDGET where the repository's preamble, map and report fit it, else the next step of
     * the ladder (README.md: the daemon must open the repository with the same budget) */
    static const size_t ladder[] = {DATA_BUDGET, 3072, 6144};
    for (size_t i = 0; i < 3; i++) {
        lo.budget = ladder[i];
        rc = repo_layout_build(snap, &lo, &lay, e);
        if (rc != CTX_ERANGE && rc != CTX_EINVAL)
            break;
    }
    /* a shorter repository block for a share of the training tasks: more completions per trained
     * token, and prompts of several lengths */
    struct repo_layout *lay_short = NULL;
    if (!rc && !job->heldout && B->short_budget && B->short_budget < lo.budget) {
        struct repo_layout_options so = lo;
        struct ctx_err se = {0};
        for (size_t b = B->short_budget; b < lo.budget && !lay_short; b += 256) {
            so.budget = b;
            if (repo_layout_build(snap, &so, &lay_short, &se))
                lay_short = NULL;
        }
    }
    struct cand *cs = NULL;
    size_t nc = 0, cc = 0;
    if (!rc) {
        for (size_t fi = 0; fi < snap->nfiles; fi++) {
            const struct repo_file *f = &snap->files[fi];
            if (!f->text || f->skip)
                continue;
            for (size_t k = 0; k < f->nsyms; k++) {
                if (!good_def(f, &f->syms[k]))
                    continue;
                if (nc == cc) {
                    cc = cc ? cc * 2 : 256;
                    cs = realloc(cs, cc * sizeof *cs);
                }
                cs[nc++] = (struct cand){fi, k};
            }
        }
    }
    /* names defined exactly once: the question then has one right answer */
    size_t used = 0, nlong = 0;
    uint8_t *taken = calloc(nc ? nc : 1, 1);
    size_t *longs = malloc((nc ? nc : 1) * sizeof *longs);
    if (!taken || !longs)
        rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
    for (size_t i = 0; !rc && i < nc; i++) {
        const struct repo_file *f = &snap->files[cs[i].file];
        const struct repo_symbol *y = &f->syms[cs[i].sym];
        if (long_name(f->text + y->name_off, y->name_len))
            longs[nlong++] = i;
    }
    if (!rc)
        fprintf(stderr, "  %s: %zu files, budget %zu, %zu definitions\n", job->name, snap->nfiles, lo.budget, nc);
    uint64_t rng = seed;
    for (size_t tries = 0; !rc && nc && used < per_repo && tries < per_repo * 6; tries++) {
        size_t ci = rng_next(&rng) % nc;
        if (!job->heldout && nlong && B->long_frac > 0 &&
            (double)(rng_next(&rng) % 1000) < B->long_frac * 1000)
            ci = longs[rng_next(&rng) % nlong];
        if (taken[ci])
            continue;
        taken[ci] = 1;
        struct cand c = cs[ci];
        const struct repo_file *f = &snap->files[c.file];
        const struct repo_symbol *y = &f->syms[c.sym];
        char name[64];
        memcpy(name, f->text + y->name_off, y->name_len);
        name[y->name_len] = 0;
        size_t defs = 0;
        for (size_t i = 0; i < nc && defs < 2; i++) {
            const struct repo_file *g = &snap->files[cs[i].file];
            const struct repo_symbol *z = &g->syms[cs[i].sym];
            defs += z->name_len == y->name_len && memcmp(g->text + z->name_off, name, y->name_len) == 0;
        }
        if (defs != 1)
            continue;
        /* the line's text, for edits */
        const char *ls = f->text + y->name_off;
        while (ls > f->text && ls[-1] != '\n')
            ls--;
        struct data_task t = {.symbol = name, .path = f->path, .line = y->line + 1, .seed = rng_next(&rng),
                              .comment = comment_for(f->path)};
        uint64_t r = rng_next(&rng) % 100;
        t.kind = r < 40 ? DATA_TASK_DEF_FIND
                 : r < 55 ? DATA_TASK_DEF_SEARCH
                 : r < 70 ? DATA_TASK_DEF_READ
                 : r < 88 ? DATA_TASK_USES
                          : DATA_TASK_EDIT;
        if (!job->heldout && B->def_heavy)
            t.kind = r < 50 ? DATA_TASK_DEF_FIND
                     : r < 65 ? DATA_TASK_DEF_SEARCH
                     : r < 80 ? DATA_TASK_DEF_READ
                     : r < 90 ? DATA_TASK_USES
                              : DATA_TASK_EDIT;
        t.quote = !job->heldout && B->read_quote && t.kind == DATA_TASK_DEF_READ;
        const struct repo_layout *tl = lay;
        if (lay_short && (double)(rng_next(&rng) % 1000) < B->short_frac * 1000)
            tl = lay_short;
        if (job->heldout) { /* the evaluation asks "where is X defined" */
            char *q = data_task_question(&(struct data_task){.kind = DATA_TASK_DEF_FIND, .symbol = name,
                                                             .seed = t.seed});
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "repo", job->name);
            const char *rel = strstr(job->dir, "eval-repos/");
            cJSON_AddStringToObject(o, "dir", rel ? rel : job->dir);
            cJSON_AddStringToObject(o, "question", q ? q : "");
            cJSON_AddStringToObject(o, "symbol", name);
            cJSON_AddStringToObject(o, "file", f->path);
            cJSON_AddNumberToObject(o, "line", y->line + 1);
            cJSON_AddStringToObject(o, "kind", repo_sym_kind_name(y->kind));
            cJSON_AddNumberToObject(o, "budget", (double)lo.budget);
            char *js = cJSON_PrintUnformatted(o);
            if (js)
                fprintf(B->eval, "%s\n", js);
            free(js);
            cJSON_Delete(o);
            free(q);
            B->n_eval++;
        }
        /* a fresh tool set per task: suggest mode keeps edits in its overlay, never on disk */
        struct agent_tools_config tc = {.root = snap->workdir, .mode = AGENT_MODE_SUGGEST, .snapshot = snap};
        if ((rc = agent_tools_new(&tc, &tools, e)))
            break;
        struct data_transcript tr;
        struct ctx_err te = {0};
        int trc = data_transcript_run(tools, tl, &t, &tr, &te);
        agent_tools_free(tools);
        tools = NULL;
        if (trc == CTX_ENOTFOUND) {
            B->n_drop++;
            continue;
        }
        if (trc) {
            fprintf(stderr, "ctx-data: %s: %s: %s\n", job->name, name, te.msg);
            B->n_drop++;
            continue;
        }
        int32_t *ids;
        uint8_t *mask;
        size_t n;
        trc = data_transcript_tokens(B->tok, &tr, &ids, &mask, &n, &te);
        if (trc) {
            fprintf(stderr, "ctx-data: %s: %s: %s\n", job->name, name, te.msg);
            B->n_drop++;
            data_transcript_free(&tr);
            continue;
        }
        if (B->show > 0) {
            B->show--;
            fprintf(stderr, "==== %s (%zu tokens)\n%.*s\n", job->name, n, (int)tr.prompt.len, tr.prompt.text);
        }
        struct stream *s = job->heldout ? B->val : B->train;
        size_t start = s->n;
        rc = stream_add(s, ids, mask, 0, n);
        if (!rc)
            rc = stream_doc(s, start, DOC_TRANSCRIPT);
        for (size_t i = 0; i < n; i++)
            B->tr_masked += mask[i];
        if (job->heldout)
            B->tr_tokens_val += n;
        else
            B->tr_tokens_train += n;
        B->n_tr[t.kind]++;
        B->n_short += tl != lay;
        B->n_long += !job->heldout && long_name(name, strlen(name));
        used++;
        free(ids);
        free(mask);
        data_transcript_free(&tr);
    }
    free(cs);
    free(taken);
    free(longs);
    repo_layout_free(lay_short);
    repo_layout_free(lay);
    repo_snapshot_free(snap);
    return rc;
}

/* ---- the command ------------------------------------------------------------------------------ */

static int special(const struct inf_tokenizer *tok, const char *s, int32_t *id, struct ctx_err *e)
{
    *id = inf_tokenizer_token_id(tok, s);
    return *id < 0 ? ctx_err_set(e, CTX_EFORMAT, "the tokenizer has no %s", s) : 0;
}

int data_cmd_build(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: ctx-data build SOURCES.tsv TOKENIZER.json OUTDIR [--code-tokens N] "
                        "[--val-tokens N] [--fim P] [--per-repo N] [--max-repos N] [--show N]\n"
                        "       [--transcript-tokens N] [--eval-per-repo N] [--split-files N] [--short-budget B]\n"
                        "       [--short-frac P] [--long-frac P] [--def-heavy 0|1] [--read-quote 0|1] [--code-skip N]\n");
        return 2;
    }
    char outbuf[4096];
    snprintf(outbuf, sizeof outbuf, "%s", argv[3]);
    for (size_t l = strlen(outbuf); l > 1 && outbuf[l - 1] == '/'; l--)
        outbuf[l - 1] = 0;
    const char *outdir = outbuf;
    double code_tokens = 12.5e6, val_tokens = 4e5, fim = 0.25, tr_tokens = 6.5e6;
    size_t per_repo = 10, max_repos = 400, max_eval_repos = 20, eval_per_repo = 0, split_files = 0;
    size_t short_budget = 0;
    double short_frac = 0, long_frac = 0, code_skip = 0;
    int show = 0, def_heavy = 0, read_quote = 0;
    for (int i = 4; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--code-tokens"))
            code_tokens = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--val-tokens"))
            val_tokens = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--transcript-tokens"))
            tr_tokens = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--fim"))
            fim = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--per-repo"))
            per_repo = strtoul(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--max-repos"))
            max_repos = strtoul(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--show"))
            show = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--eval-per-repo"))
            eval_per_repo = strtoul(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--split-files"))
            split_files = strtoul(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--short-budget"))
            short_budget = strtoul(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--short-frac"))
            short_frac = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--long-frac"))
            long_frac = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--def-heavy"))
            def_heavy = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--read-quote"))
            read_quote = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--code-skip"))
            code_skip = atof(argv[i + 1]);
        else {
            fprintf(stderr, "ctx-data build: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    struct ctx_err e = {0};
    struct data_corpus c;
    struct inf_tokenizer *tok = NULL;
    if (data_corpus_load(argv[1], &c, &e) || inf_tokenizer_load(argv[2], &tok, &e)) {
        fprintf(stderr, "ctx-data build: %s\n", e.msg);
        return 1;
    }
    if (mkdirs(outdir)) {
        fprintf(stderr, "ctx-data build: %s: %s\n", outdir, strerror(errno));
        return 1;
    }
    struct stream train = {0}, val = {0};
    struct build B = {.tok = tok, .train = &train, .val = &val, .show = show, .short_budget = short_budget,
                      .short_frac = short_frac, .long_frac = long_frac, .def_heavy = def_heavy != 0,
                      .read_quote = read_quote != 0};
    if (!eval_per_repo)
        eval_per_repo = per_repo * 2;
    if (special(tok, "<｜begin▁of▁sentence｜>", &B.sp.bos, &e) || special(tok, "<｜end▁of▁sentence｜>", &B.sp.eos, &e) ||
        special(tok, "<｜fim▁begin｜>", &B.sp.fim_begin, &e) || special(tok, "<｜fim▁hole｜>", &B.sp.fim_hole, &e) ||
        special(tok, "<｜fim▁end｜>", &B.sp.fim_end, &e)) {
        fprintf(stderr, "ctx-data build: %s\n", e.msg);
        return 1;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/eval.jsonl.tmp", outdir);
    B.eval = fopen(path, "w");
    snprintf(path, sizeof path, "%s/heldout_code.jsonl.tmp", outdir);
    FILE *hc = fopen(path, "w");
    if (!B.eval || !hc) {
        fprintf(stderr, "ctx-data build: %s: %s\n", path, strerror(errno));
        return 1;
    }

    /* the held-out groups, for README.md */
    snprintf(path, sizeof path, "%s/heldout_groups.txt", outdir);
    FILE *hg = fopen(path, "w");
    for (size_t g = 0; hg && g < c.n_groups; g++)
        if (data_group_heldout(c.groups[g])) {
            size_t nf = 0;
            for (size_t i = 0; i < c.n; i++)
                nf += c.doc[i].group == c.groups[g];
            fprintf(hg, "%s\t%zu\n", c.groups[g], nf);
        }
    if (hg)
        fclose(hg);

    /* 1. transcripts: train repositories, then the held-out ones (val + eval.jsonl) */
    size_t cap_jobs = c.n_groups + 8 + (split_files ? c.n / split_files + c.n_groups : 0);
    struct repo_job *jobs = calloc(cap_jobs, sizeof *jobs);
    size_t nj = 0, n_train_repos = 0, n_eval_repos = 0, n_chunks = 0;
    /* ctxd itself: the repository the demo asks about */
    jobs[nj].name = "ctxd";
    snprintf(jobs[nj++].dir, sizeof jobs->dir, "%s", CTX_SOURCE_ROOT);
    for (size_t g = 0; g < c.n_groups; g++) {
        bool held = data_group_heldout(c.groups[g]);
        if (held ? n_eval_repos >= max_eval_repos : n_train_repos >= max_repos)
            continue;
        struct repo_job *j = &jobs[nj];
        j->name = c.groups[g];
        j->heldout = held;
        char safe[256];
        snprintf(safe, sizeof safe, "%s", c.groups[g]);
        for (char *p = safe; *p; p++)
            if (*p == ':' || *p == '/' || *p == '@' || *p == ' ')
                *p = '_';
        /* training repositories stay beside the output (OUTDIR-work), which is not carried */
        snprintf(j->dir, sizeof j->dir, "%s%s/%s", outdir, held ? "/eval-repos" : "-work/repos", safe);
        /* held-out repositories travel with the data: keep them small */
        size_t nf = make_repo(&c, c.groups[g], j->dir, held ? 100 : 400, held ? 400000 : 4000000);
        if (!nf && !held && split_files) {
            /* a training group too large for one repository (postgresql, linux headers, node's
             * headers, torch...): consecutive runs of its files in path order, each a repository
             * of at most split_files files and 2 MB */
            size_t n;
            size_t *ix = group_docs(&c, c.groups[g], true, &n);
            for (size_t a = 0; ix && a < n && n_train_repos < max_repos;) {
                size_t b = a, bytes = 0;
                while (b < n && b - a < split_files && bytes + c.doc[ix[b]].size <= 2000000)
                    bytes += c.doc[ix[b++]].size;
                if (b == a)
                    b++;
                struct repo_job *k = &jobs[nj];
                char label[300];
                snprintf(label, sizeof label, "%s#%zu", c.groups[g], a / split_files + 1);
                snprintf(k->dir, sizeof k->dir, "%s-work/repos/%s-%zu", outdir, safe, a / split_files + 1);
                if (nj + 1 < cap_jobs && make_repo_docs(&c, ix + a, b - a, label, k->dir, 400, 4000000)) {
                    k->name = strdup(label);
                    k->chunk = true;
                    nj++;
                    n_train_repos++;
                    n_chunks++;
                }
                a = b;
            }
            free(ix);
            continue;
        }
        if (!nf)
            continue;
        nj++;
        if (held)
            n_eval_repos++;
        else
            n_train_repos++;
    }
    fprintf(stderr, "repositories: %zu train (+ ctxd; %zu pieces of large groups), %zu held out\n", n_train_repos,
            n_chunks, n_eval_repos);
    /* visit in a hashed order, so the transcript cap samples every kind of package */
    for (size_t i = nj - 1; i > 1; i--) {
        size_t j = 1 + data_hash64(jobs[i].name, strlen(jobs[i].name)) % i;
        struct repo_job t = jobs[i];
        jobs[i] = jobs[j];
        jobs[j] = t;
    }
    for (size_t i = 0; i < nj; i++) {
        struct ctx_err re = {0};
        if (!jobs[i].heldout && (double)B.tr_tokens_train >= tr_tokens)
            continue;
        /* more about ctxd (the demo's repository); held-out ones give the evaluation questions */
        size_t k = i == 0 ? (per_repo * 6 < 200 ? per_repo * 6 : 200) : jobs[i].heldout ? eval_per_repo : per_repo;
        if (repo_transcripts(&B, &jobs[i], k, data_hash64(jobs[i].name, strlen(jobs[i].name)), &re)) {
            fprintf(stderr, "ctx-data: %s: %s\n", jobs[i].name, re.msg);
            continue;
        }
        B.n_repos++;
        if (i % 20 == 0)
            fprintf(stderr, "  %zu/%zu repositories, %zu transcript tokens\n", i + 1, nj,
                    B.tr_tokens_train + B.tr_tokens_val);
    }

    /* 2. code: training groups -> train.bin (a share as FIM), held-out groups -> val.bin + the
     *    perplexity file set */
    size_t *order = malloc(c.n * sizeof *order);
    for (size_t i = 0; i < c.n; i++)
        order[i] = i;
    for (size_t i = c.n; i > 1; i--) {
        uint64_t h = data_hash64(&i, sizeof i) ^ 0x5bd1e995ull;
        size_t j = h % i, t = order[i - 1];
        order[i - 1] = order[j];
        order[j] = t;
    }
    uint64_t rng = 12;
    size_t code_train = 0, fim_train = 0, code_val = 0, n_code = 0, n_fim = 0, n_hc = 0, code_bytes = 0;
    size_t skipped = 0; /* --code-skip: training code of an earlier data set, left out so the code is new */
    for (size_t k = 0; k < c.n; k++) {
        struct data_doc *d = &c.doc[order[k]];
        bool held = d->heldout;
        if (held ? code_val >= val_tokens && n_hc >= 200 : code_train + fim_train >= code_tokens)
            continue;
        size_t len;
        char *text = data_doc_read(d, &len);
        if (!text)
            continue;
        struct ids t = {0};
        if (encode_literal(tok, text, len, &t, &e)) {
            free(text);
            continue;
        }
        int rc = 0;
        if (!held && (double)skipped < code_skip) {
            skipped += t.n + 2;
            free(t.v);
            free(text);
            continue;
        }
        if (held) {
            if (code_val < val_tokens) {
                rc = add_code_doc(&val, &B.sp, &t);
                code_val += t.n + 2;
            }
            if (n_hc < 200 && len <= 16384) {
                cJSON *o = cJSON_CreateObject();
                cJSON_AddStringToObject(o, "group", d->group);
                cJSON_AddStringToObject(o, "path", d->path);
                cJSON_AddStringToObject(o, "text", text);
                /* the ids themselves (no BOS), so trainer and engine score the very same tokens */
                cJSON *arr = cJSON_AddArrayToObject(o, "tokens");
                for (size_t q = 0; arr && q < t.n; q++)
                    cJSON_AddItemToArray(arr, cJSON_CreateNumber(t.v[q]));
                cJSON_AddNumberToObject(o, "n_tokens", (double)t.n);
                char *js = cJSON_PrintUnformatted(o);
                if (js)
                    fprintf(hc, "%s\n", js);
                free(js);
                cJSON_Delete(o);
                n_hc++;
            }
        } else if ((double)(rng_next(&rng) % 1000) < fim * 1000) {
            size_t before = train.n;
            rc = add_fim_doc(&train, &B.sp, tok, text, len, &rng, &e);
            fim_train += train.n - before;
            n_fim += train.n > before;
        } else {
            rc = add_code_doc(&train, &B.sp, &t);
            code_train += t.n + 2;
            code_bytes += len;
            n_code++;
        }
        free(t.v);
        free(text);
        if (rc) {
            fprintf(stderr, "ctx-data build: %s\n", e.msg);
            return 1;
        }
    }
    fclose(B.eval);
    fclose(hc);
    char from[4096];
    snprintf(from, sizeof from, "%s/eval.jsonl.tmp", outdir);
    snprintf(path, sizeof path, "%s/eval.jsonl", outdir);
    rename(from, path);
    snprintf(from, sizeof from, "%s/heldout_code.jsonl.tmp", outdir);
    snprintf(path, sizeof path, "%s/heldout_code.jsonl", outdir);
    rename(from, path);
    if (stream_write(&train, outdir, "train", &e) || stream_write(&val, outdir, "val", &e)) {
        fprintf(stderr, "ctx-data build: %s\n", e.msg);
        return 1;
    }
    cJSON *st = cJSON_CreateObject();
    cJSON_AddNumberToObject(st, "vocab_size", (double)inf_tokenizer_vocab_size(tok));
    cJSON_AddNumberToObject(st, "budget", DATA_BUDGET);
    cJSON_AddNumberToObject(st, "train_tokens", (double)train.n);
    cJSON_AddNumberToObject(st, "train_masked_tokens", (double)stream_masked(&train));
    cJSON_AddNumberToObject(st, "val_tokens", (double)val.n);
    cJSON_AddNumberToObject(st, "val_masked_tokens", (double)stream_masked(&val));
    cJSON_AddNumberToObject(st, "code_train_tokens", (double)code_train);
    cJSON_AddNumberToObject(st, "code_train_files", (double)n_code);
    cJSON_AddNumberToObject(st, "code_train_bytes_per_token", code_train ? (double)code_bytes / (double)code_train : 0);
    cJSON_AddNumberToObject(st, "fim_train_tokens", (double)fim_train);
    cJSON_AddNumberToObject(st, "fim_train_docs", (double)n_fim);
    cJSON_AddNumberToObject(st, "code_val_tokens", (double)code_val);
    cJSON_AddNumberToObject(st, "transcript_train_tokens", (double)B.tr_tokens_train);
    cJSON_AddNumberToObject(st, "transcript_val_tokens", (double)B.tr_tokens_val);
    cJSON_AddNumberToObject(st, "transcript_masked_tokens", (double)B.tr_masked);
    static const char *const kinds[] = {"def_find_symbol", "def_search", "def_read_file", "uses", "edit"};
    cJSON *tk = cJSON_AddObjectToObject(st, "transcripts");
    for (int i = 0; i < DATA_TASK_KIND_COUNT; i++)
        cJSON_AddNumberToObject(tk, kinds[i], (double)B.n_tr[i]);
    cJSON_AddNumberToObject(st, "transcripts_dropped", (double)B.n_drop);
    cJSON_AddNumberToObject(st, "transcripts_short_layout", (double)B.n_short);
    cJSON_AddNumberToObject(st, "transcripts_long_name_train", (double)B.n_long);
    cJSON_AddNumberToObject(st, "code_skipped_tokens", (double)skipped);
    cJSON_AddNumberToObject(st, "train_repository_pieces", (double)n_chunks);
    cJSON_AddNumberToObject(st, "repositories", (double)B.n_repos);
    cJSON_AddNumberToObject(st, "train_repositories", (double)n_train_repos + 1);
    cJSON_AddNumberToObject(st, "eval_repositories", (double)n_eval_repos);
    cJSON_AddNumberToObject(st, "eval_questions", (double)B.n_eval);
    cJSON_AddNumberToObject(st, "heldout_code_files", (double)n_hc);
    char *js = cJSON_Print(st);
    snprintf(path, sizeof path, "%s/stats.json", outdir);
    if (js)
        data_write_atomic(path, js, strlen(js), &e);
    printf("%s\n", js ? js : "");
    free(js);
    cJSON_Delete(st);
    free(order);
    for (size_t i = 0; i < nj; i++)
        if (jobs[i].chunk)
            free((char *)jobs[i].name);
    free(jobs);
    free(train.ids);
    free(train.mask);
    free(train.docs);
    free(val.ids);
    free(val.mask);
    free(val.docs);
    inf_tokenizer_free(tok);
    data_corpus_free(&c);
    return 0;
}
