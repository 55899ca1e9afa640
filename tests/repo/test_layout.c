/* Ranking, map and layout on a repository built here: segment order (stable -> volatile), segment
 * boundaries, budget (outlines, omissions, the report), determinism (byte-identical layouts from
 * two independent snapshots), and incremental updates reporting the first changed segment.
 *
 * Token counts come from a test double: one token per 4 bytes, rounded up. The real tokenizer is
 * exercised through the CLI tests (tests/repo/test_cli_repo.sh). */
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

static int count4(void *ud, const char *text, size_t len, size_t *n)
{
    (void)ud;
    (void)text;
    *n = (len + 3) / 4;
    return 0;
}

static struct repo_layout_options lopts(size_t budget)
{
    struct repo_layout_options o;
    repo_layout_options_default(&o);
    o.budget = budget;
    o.count_tokens = count4;
    o.count_thread_safe = true;
    return o;
}

/* util.c defines what everyone calls; a.c, b.c, c.c call it; docs are plain text; the working tree
 * changes c.c. Commit dates make the order: util (oldest), a, b, c (newest), then dirty files. */
static void build(const char *d)
{
    tr_sh(d, "git init -q .");
    tr_puts(d, "util.h", "#ifndef UTIL_H\n#define UTIL_H\nint util_parse_config(const char *path);\n"
                         "int util_checksum(const char *data, int len);\n#endif\n");
    tr_puts(d, "util.c", "#include \"util.h\"\nint util_parse_config(const char *path)\n{\n    return path != 0;\n}\n"
                         "int util_checksum(const char *data, int len)\n{\n    int s = 0;\n"
                         "    for (int i = 0; i < len; i++) s += data[i];\n    return s;\n}\n");
    tr_sh(d, "git add -A");
    tr_commit(d, 1600000000, "util");
    const char *names[] = {"a.c", "b.c", "c.c"};
    for (int i = 0; i < 3; i++) {
        char t[600];
        snprintf(t, sizeof t,
                 "#include \"util.h\"\n/* %s: a client of util. */\nint client_%c(void)\n{\n"
                 "    int r = util_parse_config(\"x\");\n    r += util_checksum(\"abc\", 3);\n    return r;\n}\n",
                 names[i], 'a' + i);
        tr_puts(d, names[i], t);
        tr_sh(d, "git add -A");
        tr_commit(d, 1600000000 + (i + 1) * 1000, names[i]);
    }
    tr_puts(d, "notes.txt", "Plain notes mentioning util_parse_config.\n");
    tr_sh(d, "git add -A");
    tr_commit(d, 1500000000, "notes");
    /* c.c edited in the working tree: volatile, goes last. */
    tr_puts(d, "c.c", "#include \"util.h\"\nint client_c(void)\n{\n    return util_parse_config(\"y\");\n}\n");
}

static struct repo_snapshot *snap(const char *d)
{
    struct repo_snapshot *s = NULL;
    struct ctx_err e = {0};
    int rc = repo_snapshot_open(tr_path(d), NULL, NULL, &s, &e);
    if (rc) fprintf(stderr, "# %s\n", e.msg);
    assert_int_equal(rc, 0);
    return s;
}

static struct repo_layout *layout(struct repo_snapshot *s, size_t budget)
{
    struct repo_layout_options o = lopts(budget);
    struct repo_layout *l = NULL;
    struct ctx_err e = {0};
    int rc = repo_layout_build(s, &o, &l, &e);
    if (rc) fprintf(stderr, "# %s\n", e.msg);
    assert_int_equal(rc, 0);
    return l;
}

static char *concat(const struct repo_layout *l)
{
    size_t n = 0;
    for (size_t i = 0; i < l->nsegs; i++) n += l->segs[i].len;
    char *p = malloc(n + 1);
    assert_non_null(p);
    n = 0;
    for (size_t i = 0; i < l->nsegs; i++) {
        memcpy(p + n, l->segs[i].text, l->segs[i].len);
        n += l->segs[i].len;
    }
    p[n] = 0;
    return p;
}

static const struct repo_report_entry *entry(const struct repo_layout *l, const char *path)
{
    for (size_t i = 0; i < l->nreport; i++)
        if (strcmp(l->report[i].path, path) == 0) return &l->report[i];
    fail_msg("%s not in the report", path);
    return NULL;
}

static void test_order_and_boundaries(void **state)
{
    (void)state;
    struct repo_snapshot *s = snap("lay");
    struct repo_layout *l = layout(s, REPO_BUDGET_DEFAULT);
    /* preamble, map, notes.txt (1500000000), util.h, util.c (same commit: fewer commits, then path),
     * a.c, b.c, c.c (dirty), report */
    const char *want[] = {NULL, NULL, "notes.txt", "util.c", "util.h", "a.c", "b.c", "c.c", NULL};
    assert_int_equal(l->nsegs, 9);
    for (size_t i = 0; i < l->nsegs; i++) {
        if (want[i]) assert_string_equal(l->segs[i].path, want[i]);
        else assert_null(l->segs[i].path);
        assert_true(l->segs[i].len > 0);
        assert_int_equal(l->segs[i].text[l->segs[i].len - 1], '\n');
        char c0 = l->segs[i].text[0];
        assert_true((c0 >= 'A' && c0 <= 'Z') || (c0 >= 'a' && c0 <= 'z'));
        assert_int_equal(l->segs[i].tokens, (l->segs[i].len + 3) / 4);
        assert_int_equal(l->segs[i].hash, repo_hash64(l->segs[i].text, l->segs[i].len));
    }
    assert_int_equal(l->segs[0].kind, REPO_SEG_PREAMBLE);
    assert_int_equal(l->segs[1].kind, REPO_SEG_MAP);
    assert_int_equal(l->segs[8].kind, REPO_SEG_REPORT);
    assert_true(strncmp(l->segs[0].text, "Repository: lay\n", 16) == 0);
    assert_string_equal(l->segs[7].text,
                        "File: c.c\n#include \"util.h\"\nint client_c(void)\n{\n    return util_parse_config(\"y\");\n}\n");
    assert_string_equal(l->segs[8].text, "Not shown in full: none; every file of the repository is above.\n");
    assert_int_equal(l->n_full, 6);
    assert_int_equal(l->n_outline + l->n_omitted + l->n_skipped, 0);
    size_t total = 0;
    for (size_t i = 0; i < l->nsegs; i++) total += l->segs[i].tokens;
    assert_int_equal(l->total_tokens, total);

    /* Ranking: util.c and util.h are where the references point. */
    const struct repo_file *u = repo_snapshot_find(s, "util.c"), *a = repo_snapshot_find(s, "a.c");
    assert_true(u->rank > a->rank);
    /* The map lists util_parse_config's definition line first. */
    const char *m = l->segs[1].text;
    assert_non_null(strstr(m, "util_parse_config(const char *path)"));
    assert_true(strstr(m, "util_parse_config") < strstr(m, "client_a"));
    repo_layout_free(l);
    repo_snapshot_free(s);
}

static void test_budget(void **state)
{
    (void)state;
    struct repo_snapshot *s = snap("lay");
    struct repo_layout *full = layout(s, REPO_BUDGET_DEFAULT);
    size_t need = full->total_tokens;
    /* A budget a little short of everything: the lowest-ranked files become outlines. */
    struct repo_layout *l = layout(s, need - 40);
    assert_true(l->total_tokens <= need - 40);
    assert_true(l->n_outline > 0);
    assert_int_equal(entry(l, "util.c")->decision, REPO_DEC_FULL); /* highest ranked stays */
    bool listed = false;
    for (size_t i = 0; i < l->nsegs; i++) {
        if (l->segs[i].kind != REPO_SEG_OUTLINE) continue;
        const struct repo_report_entry *r = entry(l, l->segs[i].path);
        assert_int_equal(r->decision, REPO_DEC_OUTLINE);
        assert_int_equal(r->segment, i);
        assert_true(strncmp(l->segs[i].text, "Outline: ", 9) == 0);
        assert_non_null(strstr(l->segs[l->nsegs - 1].text, r->path));
        listed = true;
    }
    assert_true(listed);
    repo_layout_free(l);

    /* Much smaller: outlines everywhere and then omissions, still within budget. */
    size_t fixed = full->segs[0].tokens + full->segs[1].tokens;
    l = layout(s, fixed + 60);
    assert_true(l->total_tokens <= fixed + 60);
    assert_true(l->n_omitted > 0);
    assert_int_equal(l->n_full + l->n_outline + l->n_omitted, 6);
    assert_non_null(strstr(l->segs[l->nsegs - 1].text, ": omitted\n"));
    repo_layout_free(l);

    /* Too small for the fixed parts: a clear error, no silent truncation. */
    struct repo_layout_options o = lopts(50);
    struct ctx_err e = {0};
    assert_int_equal(repo_layout_build(s, &o, &l, &e), CTX_ERANGE);
    assert_non_null(strstr(e.msg, "too small"));
    o = lopts(REPO_BUDGET_MAX + 1);
    assert_int_equal(repo_layout_build(s, &o, &l, &e), CTX_ERANGE);
    repo_layout_free(full);
    repo_snapshot_free(s);
}

static void test_determinism(void **state)
{
    (void)state;
    struct repo_snapshot *s1 = snap("lay");
    struct ctx_err e = {0};
    struct ctx_pool *pool = ctx_pool_new(4, &e);
    assert_non_null(pool);
    struct repo_options ro;
    repo_options_default(&ro);
    ro.pool = pool;
    struct repo_snapshot *s2 = NULL;
    assert_int_equal(repo_snapshot_open(tr_path("lay"), &ro, NULL, &s2, &e), 0);
    for (size_t budget = 300; budget <= 1200; budget += 300) {
        struct repo_layout *l1 = layout(s1, budget > 1000 ? REPO_BUDGET_DEFAULT : budget);
        struct repo_layout_options o = lopts(budget > 1000 ? REPO_BUDGET_DEFAULT : budget);
        o.pool = pool;
        struct repo_layout *l2 = NULL;
        assert_int_equal(repo_layout_build(s2, &o, &l2, &e), 0);
        char *a = concat(l1), *b = concat(l2);
        assert_string_equal(a, b);
        assert_int_equal(l1->nsegs, l2->nsegs);
        for (size_t i = 0; i < l1->nsegs; i++) assert_int_equal(l1->segs[i].hash, l2->segs[i].hash);
        free(a);
        free(b);
        repo_layout_free(l1);
        repo_layout_free(l2);
    }
    repo_snapshot_free(s1);
    repo_snapshot_free(s2);
    ctx_pool_free(pool);
}

static void test_incremental(void **state)
{
    (void)state;
    tr_sh("", "rm -rf inc && cp -a lay inc");
    struct repo_snapshot *s = snap("inc");
    struct repo_layout *l = layout(s, REPO_BUDGET_DEFAULT);
    struct repo_layout_options o = lopts(REPO_BUDGET_DEFAULT);
    struct ctx_err e = {0};
    size_t nsegs = l->nsegs;
    char *before = concat(l);

    /* Edit a stable file: a.c is segment 5. Everything before it is unchanged. */
    tr_puts("inc", "a.c", "#include \"util.h\"\nint client_a(void) { return 7; }\n");
    const char *ch[] = {"a.c"};
    assert_int_equal(repo_snapshot_refresh(s, ch, 1, &e), 0);
    size_t first = 99;
    assert_int_equal(repo_layout_update(l, s, &o, ch, 1, &first, &e), 0);
    assert_int_equal(first, 5);
    assert_int_equal(l->nsegs, nsegs);
    assert_string_equal(l->segs[5].text, "File: a.c\n#include \"util.h\"\nint client_a(void) { return 7; }\n");
    char *after = concat(l);
    size_t prefix = 0;
    for (size_t i = 0; i < 5; i++) prefix += l->segs[i].len;
    assert_memory_equal(before, after, prefix);
    free(after);

    /* No change at all: nothing to recompute. */
    assert_int_equal(repo_snapshot_refresh(s, ch, 1, &e), 0);
    assert_int_equal(repo_layout_update(l, s, &o, ch, 1, &first, &e), 0);
    assert_int_equal(first, l->nsegs);

    /* A new file goes after the last file segment (the old report's place). */
    tr_puts("inc", "d.c", "int client_d(void) { return util_checksum(\"\", 0); }\n");
    const char *ch2[] = {"d.c"};
    assert_int_equal(repo_snapshot_refresh(s, ch2, 1, &e), 0);
    assert_int_equal(repo_layout_update(l, s, &o, ch2, 1, &first, &e), 0);
    assert_int_equal(first, nsegs - 1);
    assert_int_equal(l->nsegs, nsegs + 1);
    assert_string_equal(l->segs[nsegs - 1].path, "d.c");
    assert_int_equal(entry(l, "d.c")->decision, REPO_DEC_FULL);

    /* Deleting the tracked b.c (segment 6) removes its segment; the report names it. */
    tr_sh("inc", "rm b.c");
    const char *ch3[] = {"b.c"};
    assert_int_equal(repo_snapshot_refresh(s, ch3, 1, &e), 0);
    assert_int_equal(repo_layout_update(l, s, &o, ch3, 1, &first, &e), 0);
    assert_int_equal(first, 6);
    assert_int_equal(l->nsegs, nsegs);
    assert_int_equal(entry(l, "b.c")->decision, REPO_DEC_SKIPPED);
    assert_non_null(strstr(l->segs[l->nsegs - 1].text, "- b.c: deleted\n"));
    size_t total = 0;
    for (size_t i = 0; i < l->nsegs; i++) total += l->segs[i].tokens;
    assert_int_equal(l->total_tokens, total);
    assert_false(l->over_budget);
    free(before);
    repo_layout_free(l);
    repo_snapshot_free(s);
}

static void test_focus_map(void **state)
{
    (void)state;
    struct repo_snapshot *s = snap("lay");
    struct repo_layout_options o = lopts(0);
    const char *idents[] = {"client_b"};
    const char *paths[] = {"b.c"};
    struct repo_focus f = {idents, 1, paths, 1};
    char *map = NULL;
    size_t len = 0, tok = 0;
    struct ctx_err e = {0};
    assert_int_equal(repo_map_render(s, &f, &o, 4096, &map, &len, &tok, &e), 0);
    assert_true(tok <= 4096);
    assert_non_null(strstr(map, "b.c:\n"));
    /* b.c is in focus: its personalisation mass outranks the other clients. */
    assert_true(repo_snapshot_find(s, "b.c")->rank > repo_snapshot_find(s, "a.c")->rank);
    free(map);
    /* A tiny map budget still gives the header, within budget. */
    assert_int_equal(repo_map_render(s, NULL, &o, 30, &map, &len, &tok, &e), 0);
    assert_true(tok <= 30);
    assert_true(strncmp(map, "Repository map", 14) == 0);
    free(map);
    repo_snapshot_free(s);
}

/* Many files under a small budget: the report's text names budget / 96 of them (at least 32), counts
 * the rest, and layout->report still lists every file. */
static void test_report_scales(void **state)
{
    (void)state;
    tr_sh("many", "git init -q .");
    for (int i = 0; i < 300; i++) {
        char name[64], text[160];
        snprintf(name, sizeof name, "data/sample_%03d.txt", i);
        snprintf(text, sizeof text, "sample %d: a line of text that no definition map ranks above the code\n", i);
        tr_puts("many", name, text);
    }
    tr_puts("many", "main.c", "int main(void)\n{\n    return 0;\n}\n");
    tr_sh("many", "git add -A");
    tr_commit("many", 1600000000, "many");
    struct repo_snapshot *s = snap("many");
    const size_t budgets[] = {4096, 8192, 60000};
    for (size_t k = 0; k < 3; k++) {
        struct repo_layout *l = layout(s, budgets[k]);
        const struct repo_segment *rep = &l->segs[l->nsegs - 1];
        size_t lines = 0, want = budgets[k] / 96 < 32 ? 32 : budgets[k] / 96 > 400 ? 400 : budgets[k] / 96;
        for (const char *p = rep->text; (p = strstr(p, "\n- ")) != NULL; p++)
            lines++;
        size_t not_full = l->nreport - l->n_full;
        assert_int_equal(l->nreport, 301);
        if (not_full > want) { /* names up to the cap, then "- and N more:" */
            assert_int_equal(lines, want + 1);
            char more[64];
            snprintf(more, sizeof more, "- and %zu more:", not_full - want);
            assert_non_null(strstr(rep->text, more));
        } else {
            assert_int_equal(lines, not_full);
        }
        assert_true(l->total_tokens <= budgets[k]);
        repo_layout_free(l);
    }
    repo_snapshot_free(s);
}

static int setup(void **state)
{
    (void)state;
    if (tr_init()) return -1;
    build("lay");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tr_cleanup();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_order_and_boundaries), cmocka_unit_test(test_budget),
        cmocka_unit_test(test_determinism),          cmocka_unit_test(test_incremental),
        cmocka_unit_test(test_focus_map),            cmocka_unit_test(test_report_scales),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
