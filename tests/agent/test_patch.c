/* agent/patch.c: unified diffs parsed and applied (exact, moved, whitespace-tolerant, no-newline,
 * create/delete, every error), and the fuzz entry of tests/fuzz/fuzz_patch.c over hostile inputs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "patch.h"

int agent_fuzz_patch_one(const uint8_t *data, size_t size);

static char *apply1(const char *patch, const char *old, int *rc, struct ctx_err *e)
{
    struct agent_patch *p;
    *rc = agent_patch_parse(patch, strlen(patch), &p, e);
    if (*rc)
        return NULL;
    assert_int_equal(p->nfiles, 1);
    char *out = NULL;
    size_t len;
    *rc = agent_patch_apply_file(&p->files[0], old, old ? strlen(old) : 0, &out, &len, e);
    if (!*rc)
        assert_int_equal(strlen(out), len);
    agent_patch_free(p);
    return out;
}

static void test_parse_shape(void **state)
{
    (void)state;
    const char *t = "diff --git a/x.c b/x.c\nindex 1..2 100644\n--- a/x.c\t2020-01-01\n+++ b/x.c\n"
                    "@@ -1,3 +1,3 @@ int f()\n a\n-b\n+B\n c\n@@ -10 +10,2 @@\n k\n+l\n"
                    "--- /dev/null\n+++ b/new.txt\n@@ -0,0 +1 @@\n+hi\n\\ No newline at end of file\n";
    struct agent_patch *p;
    struct ctx_err e = {0};
    assert_int_equal(agent_patch_parse(t, strlen(t), &p, &e), 0);
    assert_int_equal(p->nfiles, 2);
    assert_string_equal(p->files[0].old_path, "x.c");
    assert_string_equal(p->files[0].new_path, "x.c");
    assert_int_equal(p->files[0].nhunks, 2);
    assert_int_equal(p->files[0].hunks[0].old_start, 1);
    assert_int_equal(p->files[0].hunks[0].old_count, 3);
    assert_int_equal(p->files[0].hunks[1].old_count, 1);
    assert_int_equal(p->files[0].hunks[1].new_count, 2);
    assert_int_equal(p->files[0].hunks[0].at_line, 5);
    assert_null(p->files[1].old_path);
    assert_string_equal(p->files[1].new_path, "new.txt");
    assert_true(p->files[1].hunks[0].lines[0].no_eol);
    agent_patch_free(p);
}

static void test_apply(void **state)
{
    (void)state;
    int rc;
    struct ctx_err e = {0};
    const char *old = "one\ntwo\nthree\nfour\nfive\n";
    char *o = apply1("--- a/f\n+++ b/f\n@@ -2,3 +2,3 @@\n two\n-three\n+THREE\n four\n", old, &rc, &e);
    assert_int_equal(rc, 0);
    assert_string_equal(o, "one\ntwo\nTHREE\nfour\nfive\n");
    free(o);
    /* Context moved by two lines: found at the nearest position. */
    o = apply1("--- a/f\n+++ b/f\n@@ -1,2 +1,2 @@\n four\n-five\n+5\n", old, &rc, &e);
    assert_int_equal(rc, 0);
    assert_string_equal(o, "one\ntwo\nthree\nfour\n5\n");
    free(o);
    /* Trailing white space differs: the loose pass matches, the file's context bytes are kept. */
    o = apply1("--- a/f\n+++ b/f\n@@ -1,2 +1,2 @@\n one  \n-two\n+2\n", old, &rc, &e);
    assert_int_equal(rc, 0);
    assert_string_equal(o, "one\n2\nthree\nfour\nfive\n");
    free(o);
    /* An empty line inside a hunk is an empty context line. */
    o = apply1("--- a/f\n+++ b/f\n@@ -1,3 +1,3 @@\n a\n\n-b\n+c\n", "a\n\nb\n", &rc, &e);
    assert_int_equal(rc, 0);
    assert_string_equal(o, "a\n\nc\n");
    free(o);
    /* No newline at the end, on both sides. */
    o = apply1("--- a/f\n+++ b/f\n@@ -1,2 +1,2 @@\n a\n-b\n\\ No newline at end of file\n+c\n", "a\nb", &rc, &e);
    assert_int_equal(rc, 0);
    assert_string_equal(o, "a\nc\n");
    free(o);
    o = apply1("--- a/f\n+++ b/f\n@@ -1,2 +1,2 @@\n a\n-b\n+c\n\\ No newline at end of file\n", "a\nb\n", &rc, &e);
    assert_int_equal(rc, 0);
    assert_string_equal(o, "a\nc");
    free(o);
    /* New file; deletion to empty. */
    o = apply1("--- /dev/null\n+++ b/n\n@@ -0,0 +1,2 @@\n+x\n+y\n", NULL, &rc, &e);
    assert_int_equal(rc, 0);
    assert_string_equal(o, "x\ny\n");
    free(o);
    /* Insertion after line 1 ("-1,0"). */
    o = apply1("--- a/f\n+++ b/f\n@@ -1,0 +2 @@\n+ins\n", "a\nb\n", &rc, &e);
    assert_int_equal(rc, 0);
    assert_string_equal(o, "a\nins\nb\n");
    free(o);
    /* Insertion after the last line of a file without a final newline (found by fuzzing: the
     * output needs room for that newline and the NUL). */
    o = apply1("--- a/f\n+++ b/f\n@@ -2,0 +3 @@\n+c\n", "a\nb", &rc, &e);
    assert_int_equal(rc, 0);
    assert_string_equal(o, "a\nb\nc\n");
    free(o);
    /* Two hunks, second before first in the file: refused. */
    o = apply1("--- a/f\n+++ b/f\n@@ -4 +4 @@\n-four\n+4\n@@ -1 +1 @@\n-one\n+1\n", old, &rc, &e);
    assert_int_equal(rc, CTX_ENOTFOUND);
    assert_non_null(strstr(e.msg, "hunk 2"));
    /* Nowhere: the error names the first differing line at the stated position. */
    o = apply1("--- a/f\n+++ b/f\n@@ -2,2 +2,2 @@\n two\n-tree\n+3\n", old, &rc, &e);
    assert_int_equal(rc, CTX_ENOTFOUND);
    assert_non_null(strstr(e.msg, "at line 3 the patch expects \"tree\" but the file has \"three\""));
    o = apply1("--- a/f\n+++ b/f\n@@ -9,2 +9,2 @@\n x\n-y\n+z\n", "a\n", &rc, &e);
    assert_int_equal(rc, CTX_ENOTFOUND);
    assert_non_null(strstr(e.msg, "only 1 lines"));
}

static void test_parse_errors(void **state)
{
    (void)state;
    static const struct {
        const char *text, *msg;
    } cases[] = {
        {"", "no file in the patch"},
        {"just prose\n", "no file in the patch"},
        {"@@ -1 +1 @@\n-a\n+b\n", "a hunk before any"},
        {"--- a/f\nhello\n", "must be followed by a \"+++ \" line"},
        {"--- /dev/null\n+++ /dev/null\n@@ -0,0 +1 @@\n+a\n", "a file header needs a path"},
        {"--- a/f\n+++ b/f\n@@ -x +1 @@\n", "bad hunk header"},
        {"--- a/f\n+++ b/f\n@@ -1,2 +1,2 @@\n a\n", "ends early"},
        {"--- a/f\n+++ b/f\n@@ -1,1 +1,1 @@\n+a\n+b\n", "unexpected line"},
        {"--- a/f\n+++ b/f\n@@ -1,1 +1,1 @@\n*a\n", "unexpected line"},
        {"--- a/f\n+++ b/f\n", "has no hunks"},
        {"--- a/f\n+++ b/f\n@@ -99999999999 +1 @@\n", "bad hunk header"},
        {"--- a/f\n+++ b/f\n@@ -1,90000 +1 @@\n a\n", "exceed the patch"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        struct agent_patch *p = (void *)1;
        struct ctx_err e = {0};
        int rc = agent_patch_parse(cases[i].text, strlen(cases[i].text), &p, &e);
        if (rc != CTX_EFORMAT || !strstr(e.msg, cases[i].msg))
            fail_msg("case %zu: rc %d, message \"%s\"", i, rc, e.msg);
        assert_null(p);
    }
}

static void test_fuzz_entry(void **state)
{
    (void)state;
    static const char *const nasty[] = {
        "", "---", "--- \n+++ \n", "--- a\n+++ b\n@@", "--- a\n+++ b\n@@ -0,0 +0,0 @@\n",
        "--- a/x\n+++ b/x\n@@ -1 +1 @@\n\\\n\\\n-alpha\n+A\n",
        "--- a/x\n+++ b/x\n@@ -6 +6 @@\n-epsilon\n\\ No newline at end of file\n+E\n",
        "--- a/x\n+++ b/x\n@@ -100000000,1 +1 @@\n-alpha\n+a\n",
        "--- a/x\n+++ b/x\n@@ -1,0 +1,0 @@\n@@ -1,0 +1,0 @@\n",
        "--- a/x\n+++ b/x\n@@ -3,2 +3,1 @@\n\n-gamma\n",
        "--- a/x\r\n+++ b/x\r\n@@ -1 +1 @@\r\n-alpha\r\n+b\r\n",
        "--- /dev/null\n+++ b/y\n@@ -0,0 +1,3 @@\n+\n+\n+\n",
        "--- a/x\n+++ /dev/null\n@@ -1,6 +0,0 @@\n-alpha\n-beta\n-\n-gamma\n-  delta\t\n-epsilon\n",
        /* libFuzzer's first find: a heap overflow by one byte, fixed */
        "--- /de/nudl\n+++ b/{\n@@ -8,0 +1,2 @@\n+--- \n+++ b/y\n@@ -0,0 +1,2 @@\n+a\n+b\n-,- a\n+b\na/--",
    };
    for (size_t i = 0; i < sizeof nasty / sizeof *nasty; i++)
        agent_fuzz_patch_one((const uint8_t *)nasty[i], strlen(nasty[i]));
    /* Binary noise and a long run of hunk headers. */
    uint8_t buf[4096];
    uint32_t x = 12345;
    for (int round = 0; round < 200; round++) {
        size_t n = (size_t)(x % sizeof buf);
        for (size_t i = 0; i < n; i++) {
            x = x * 1103515245u + 12345u;
            static const char alpha[] = "-+ @\\\n,0123456789abdev/ul";
            buf[i] = (x >> 16) % 3 ? (uint8_t)alpha[(x >> 8) % (sizeof alpha - 1)] : (uint8_t)(x >> 3);
        }
        memcpy(buf, "--- a/x\n+++ b/x\n", n > 16 ? 16 : n);
        agent_fuzz_patch_one(buf, n);
    }
    /* The whole-file deletion of the base text applies to the empty text. */
    const char *del = "--- a/x\n+++ /dev/null\n@@ -1,6 +0,0 @@\n-alpha\n-beta\n-\n-gamma\n-  delta\t\n-epsilon\n";
    assert_int_equal(agent_fuzz_patch_one((const uint8_t *)del, strlen(del)), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_shape),
        cmocka_unit_test(test_apply),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_fuzz_entry),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
