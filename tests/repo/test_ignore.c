/* .ctxignore: gitignore semantics, and the fuzz entry on hostile inputs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "repo.h"

int repo_fuzz_ctxignore_one(const uint8_t *data, size_t size);

static struct repo_ignore *parse(const char *text)
{
    struct repo_ignore *ig = NULL;
    struct ctx_err e = {0};
    assert_int_equal(repo_ignore_parse(text, strlen(text), &ig, &e), 0);
    return ig;
}

static void test_basic(void **state)
{
    (void)state;
    struct repo_ignore *ig = parse("# comment\n\n*.log\nbuild/\n/root_only.txt\ndocs/*.md\n!keep.log\n"
                                   "a/**/z.c\n**/gen/**\nspace\\ \n");
    assert_int_equal(repo_ignore_count(ig), 8);
    assert_true(repo_ignore_match(ig, "x.log", false));
    assert_true(repo_ignore_match(ig, "deep/dir/x.log", false));
    assert_false(repo_ignore_match(ig, "keep.log", false));        /* negated later */
    assert_false(repo_ignore_match(ig, "sub/keep.log", false));
    assert_true(repo_ignore_match(ig, "build/out.o", false));       /* under an ignored dir */
    assert_true(repo_ignore_match(ig, "src/build/out.o", false));
    assert_false(repo_ignore_match(ig, "build", false));            /* dir-only pattern, a file */
    assert_true(repo_ignore_match(ig, "build", true));
    assert_true(repo_ignore_match(ig, "root_only.txt", false));
    assert_false(repo_ignore_match(ig, "sub/root_only.txt", false)); /* anchored */
    assert_true(repo_ignore_match(ig, "docs/a.md", false));
    assert_false(repo_ignore_match(ig, "docs/sub/a.md", false));     /* '*' does not cross '/' */
    assert_true(repo_ignore_match(ig, "a/z.c", false));              /* '**' = zero dirs */
    assert_true(repo_ignore_match(ig, "a/b/c/z.c", false));
    assert_false(repo_ignore_match(ig, "b/a/z.c", false));
    assert_true(repo_ignore_match(ig, "x/gen/y/z.py", false));
    assert_true(repo_ignore_match(ig, "gen/z.py", false));
    assert_true(repo_ignore_match(ig, "space ", false));             /* escaped trailing space */
    assert_false(repo_ignore_match(ig, "space", false));
    repo_ignore_free(ig);
}

static void test_classes_and_escapes(void **state)
{
    (void)state;
    struct repo_ignore *ig = parse("file[0-9].txt\n[!a]x\n\\!bang\n\\#hash\nq?.c\n[unterminated\r\n");
    assert_true(repo_ignore_match(ig, "file7.txt", false));
    assert_false(repo_ignore_match(ig, "fileA.txt", false));
    assert_true(repo_ignore_match(ig, "bx", false));
    assert_false(repo_ignore_match(ig, "ax", false));
    assert_true(repo_ignore_match(ig, "!bang", false));
    assert_true(repo_ignore_match(ig, "#hash", false));
    assert_true(repo_ignore_match(ig, "q1.c", false));
    assert_false(repo_ignore_match(ig, "q12.c", false));
    assert_true(repo_ignore_match(ig, "[unterminated", false)); /* taken literally, CR stripped */
    repo_ignore_free(ig);
}

static void test_parent_cannot_be_reincluded(void **state)
{
    (void)state;
    /* As in git: once a directory is excluded, a negation for a file inside it does not apply. */
    struct repo_ignore *ig = parse("vendor/\n!vendor/keep.c\n");
    assert_true(repo_ignore_match(ig, "vendor/keep.c", false));
    repo_ignore_free(ig);
    ig = parse("vendor/*\n!vendor/keep.c\n");
    assert_false(repo_ignore_match(ig, "vendor/keep.c", false));
    assert_true(repo_ignore_match(ig, "vendor/other.c", false));
    repo_ignore_free(ig);
}

static void test_empty(void **state)
{
    (void)state;
    struct repo_ignore *ig = parse("");
    assert_int_equal(repo_ignore_count(ig), 0);
    assert_false(repo_ignore_match(ig, "a", false));
    repo_ignore_free(ig);
    ig = parse("/\n!\n#x\n   \n");
    assert_int_equal(repo_ignore_count(ig), 0);
    repo_ignore_free(ig);
    assert_false(repo_ignore_match(NULL, "a", false));
}

static void test_fuzz_corpus(void **state)
{
    (void)state;
    /* Patterns, NUL, paths. Includes pathological backtracking: it must finish (bounded) and the
     * result must be "no match" for the path that does not end in b. */
    static const struct {
        const char *d;
        size_t n;
        int hits;
    } c[] = {
        {"*.c\0a.c\nb.h", 11, 2},
        {"*a*a*a*a*a*a*a*a*a*a*a*b\0aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 69, 0},
        {"**/**/**/**/**/**/**/x\0a/b/c/d/e/f/g/h/i/j/k/l/m/n/y", 52, 0},
        {"[\0[", 3, 2},
        {"[]\0]", 4, 0},
        {"[]]\0]", 5, 2},
        {"[a-]\0-", 6, 2},
        {"\\\0\\", 3, 2},
        {"!\0x", 3, 0},
        {"a/\0a/b\na", 8, 3},
        {"\xff\xfe*\0\xff\xfe\x01", 7, 2},
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++)
        assert_int_equal(repo_fuzz_ctxignore_one((const uint8_t *)c[i].d, c[i].n), c[i].hits);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_basic), cmocka_unit_test(test_classes_and_escapes),
        cmocka_unit_test(test_parent_cannot_be_reincluded), cmocka_unit_test(test_empty),
        cmocka_unit_test(test_fuzz_corpus),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
