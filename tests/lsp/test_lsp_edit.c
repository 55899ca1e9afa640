/* The diff -> WorkspaceEdit converter and findings -> diagnostics (lsp/edit.c), with exact expected
 * edits: UTF-16 and UTF-8 columns around astral characters, CRLF buffers, hunks that moved, created
 * and deleted files, refusals naming the hunk; then the fuzz entry on hostile diffs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lsp_edit.h"

int lsp_diff_fuzz_one(const uint8_t *data, size_t size);

struct file {
    const char *path, *text;
    int64_t version;
};

static struct file files[8];

static int lookup(void *ud, const char *path, const char **text, size_t *len, int64_t *version, struct ctx_err *e)
{
    (void)ud;
    for (size_t i = 0; i < sizeof files / sizeof files[0] && files[i].path; i++)
        if (strcmp(files[i].path, path) == 0) {
            *text = files[i].text;
            *len = strlen(files[i].text);
            *version = files[i].version;
            return 0;
        }
    return ctx_err_set(e, CTX_ENOTFOUND, "%s: no such file", path);
}

static void set_files(const struct file *f, size_t n)
{
    memset(files, 0, sizeof files);
    memcpy(files, f, n * sizeof *f);
}

/* The converter's output, unformatted, compared as a string: exact. */
static void expect_edit(const char *diff, enum lsp_encoding enc, const char *want)
{
    cJSON *we = NULL;
    struct ctx_err e = {0};
    int rc = lsp_diff_to_edit(diff, strlen(diff), "/repo", lookup, NULL, enc, &we, &e);
    if (rc)
        fail_msg("conversion failed: %s", e.msg);
    char *got = cJSON_PrintUnformatted(we);
    if (strcmp(got, want) != 0)
        fail_msg("got  %s\nwant %s", got, want);
    free(got);
    cJSON_Delete(we);
}

static void expect_refusal(const char *diff, int code, const char *needle)
{
    cJSON *we = NULL;
    struct ctx_err e = {0};
    assert_int_equal(lsp_diff_to_edit(diff, strlen(diff), "/repo", lookup, NULL, LSP_ENC_UTF16, &we, &e), code);
    assert_null(we);
    if (!strstr(e.msg, needle))
        fail_msg("\"%s\" does not mention \"%s\"", e.msg, needle);
}

#define EMOJI "\xF0\x9F\x98\x80"

static void test_utf16_columns(void **state)
{
    (void)state;
    struct file f[] = {{"/repo/src/a.c", "int x = 1;\nconst char *s = \"" EMOJI " a\";\nreturn;\n", 7}};
    set_files(f, 1);
    const char *diff = "diff --git a/src/a.c b/src/a.c\n"
                       "index 1..2 100644\n"
                       "--- a/src/a.c\n"
                       "+++ b/src/a.c\n"
                       "@@ -1,3 +1,3 @@\n"
                       " int x = 1;\n"
                       "-const char *s = \"" EMOJI " a\";\n"
                       "+const char *s = \"" EMOJI " b\";\n"
                       " return;\n";
    /* 'a' sits after 17 ASCII characters, the emoji (2 UTF-16 units, 4 bytes) and a space */
    expect_edit(diff, LSP_ENC_UTF16,
                "{\"documentChanges\":[{\"textDocument\":{\"uri\":\"file:///repo/src/a.c\",\"version\":7},\"edits\":"
                "[{\"range\":{\"start\":{\"line\":1,\"character\":20},\"end\":{\"line\":1,\"character\":21}},"
                "\"newText\":\"b\"}]}]}");
    expect_edit(diff, LSP_ENC_UTF8,
                "{\"documentChanges\":[{\"textDocument\":{\"uri\":\"file:///repo/src/a.c\",\"version\":7},\"edits\":"
                "[{\"range\":{\"start\":{\"line\":1,\"character\":22},\"end\":{\"line\":1,\"character\":23}},"
                "\"newText\":\"b\"}]}]}");
}

static void test_crlf_buffer(void **state)
{
    (void)state;
    struct file f[] = {{"/repo/w.txt", "a\r\nb\r\nc\r\n", -1}};
    set_files(f, 1);
    /* the diff has LF lines (as git prints them); the buffer's CRLF is kept for new lines */
    const char *diff = "--- a/w.txt\n+++ b/w.txt\n@@ -1,3 +1,4 @@\n a\n-b\n+B1\n+B2\n c\n";
    expect_edit(diff, LSP_ENC_UTF16,
                "{\"documentChanges\":[{\"textDocument\":{\"uri\":\"file:///repo/w.txt\",\"version\":null},\"edits\":"
                "[{\"range\":{\"start\":{\"line\":1,\"character\":0},\"end\":{\"line\":1,\"character\":1}},"
                "\"newText\":\"B1\\r\\nB2\"}]}]}");
    /* a diff that carries the CR itself matches too; deleting a whole line removes its CRLF */
    const char *diff2 = "--- a/w.txt\n+++ b/w.txt\n@@ -2,2 +2 @@\n-b\r\n c\r\n";
    expect_edit(diff2, LSP_ENC_UTF16,
                "{\"documentChanges\":[{\"textDocument\":{\"uri\":\"file:///repo/w.txt\",\"version\":null},\"edits\":"
                "[{\"range\":{\"start\":{\"line\":1,\"character\":0},\"end\":{\"line\":2,\"character\":0}},"
                "\"newText\":\"\"}]}]}");
}

static void test_moved_hunks_and_no_newline(void **state)
{
    (void)state;
    /* the buffer gained two lines at the top since the diff was made: the hunk is found below */
    struct file f[] = {{"/repo/m.py", "# new\n# lines\ndef f():\n    return 1\nx = f()", 2}};
    set_files(f, 1);
    const char *diff = "--- a/m.py\n+++ b/m.py\n@@ -1,3 +1,3 @@\n def f():\n-    return 1\n+    return 2\n x = f()\n"
                       "\\ No newline at end of file\n";
    expect_edit(diff, LSP_ENC_UTF16,
                "{\"documentChanges\":[{\"textDocument\":{\"uri\":\"file:///repo/m.py\",\"version\":2},\"edits\":"
                "[{\"range\":{\"start\":{\"line\":3,\"character\":11},\"end\":{\"line\":3,\"character\":12}},"
                "\"newText\":\"2\"}]}]}");
    /* appending after a last line without a newline */
    const char *diff2 = "--- a/m.py\n+++ b/m.py\n@@ -5 +5,2 @@\n-x = f()\n\\ No newline at end of file\n+x = f()\n"
                        "+print(x)\n";
    expect_edit(diff2, LSP_ENC_UTF16,
                "{\"documentChanges\":[{\"textDocument\":{\"uri\":\"file:///repo/m.py\",\"version\":2},\"edits\":"
                "[{\"range\":{\"start\":{\"line\":4,\"character\":7},\"end\":{\"line\":4,\"character\":7}},"
                "\"newText\":\"\\nprint(x)\\n\"}]}]}");
    /* two hunks, pure insertion (count 0) */
    const char *diff3 = "--- a/m.py\n+++ b/m.py\n@@ -1,0 +2 @@\n+# inserted\n@@ -3 +4 @@\n-def f():\n+def g():\n";
    expect_edit(diff3, LSP_ENC_UTF16,
                "{\"documentChanges\":[{\"textDocument\":{\"uri\":\"file:///repo/m.py\",\"version\":2},\"edits\":"
                "[{\"range\":{\"start\":{\"line\":1,\"character\":0},\"end\":{\"line\":1,\"character\":0}},"
                "\"newText\":\"# inserted\\n\"},"
                "{\"range\":{\"start\":{\"line\":2,\"character\":4},\"end\":{\"line\":2,\"character\":5}},"
                "\"newText\":\"g\"}]}]}");
}

static void test_created_and_deleted(void **state)
{
    (void)state;
    struct file f[] = {{"/repo/old.c", "gone\n", -1}};
    set_files(f, 1);
    const char *diff = "diff --git a/tests/t_a.c b/tests/t_a.c\nnew file mode 100644\n--- /dev/null\n+++ b/tests/t a.c\n"
                       "@@ -0,0 +1,2 @@\n+#include \"a.h\"\n+int t(void);\n"
                       "--- a/old.c\n+++ /dev/null\n@@ -1 +0,0 @@\n-gone\n";
    expect_edit(diff, LSP_ENC_UTF16,
                "{\"documentChanges\":[{\"kind\":\"create\",\"uri\":\"file:///repo/tests/t%20a.c\",\"options\":"
                "{\"overwrite\":false,\"ignoreIfExists\":false}},{\"textDocument\":{\"uri\":\"file:///repo/tests/t%20a.c\","
                "\"version\":null},\"edits\":[{\"range\":{\"start\":{\"line\":0,\"character\":0},\"end\":{\"line\":0,"
                "\"character\":0}},\"newText\":\"#include \\\"a.h\\\"\\nint t(void);\\n\"}]},"
                "{\"kind\":\"delete\",\"uri\":\"file:///repo/old.c\"}]}");
}

static void test_refusals(void **state)
{
    (void)state;
    struct file f[] = {{"/repo/a.c", "one\ntwo\none\ntwo\n", -1}};
    set_files(f, 1);
    expect_refusal("--- a/a.c\n+++ b/a.c\n@@ -1,2 +1,2 @@\n-uno\n+one\n two\n", CTX_EFORMAT, "hunk 1");
    /* ambiguous: the old lines fit twice and the line numbers are wrong */
    expect_refusal("--- a/a.c\n+++ b/a.c\n@@ -7,2 +7,2 @@\n-one\n+ONE\n two\n", CTX_EFORMAT, "more than one");
    expect_refusal("--- a/a.c\n+++ b/a.c\n@@ -1,2 +1,2 @@\n one\n", CTX_EFORMAT, "cut short");
    expect_refusal("@@ -1 +1 @@\n-one\n+two\n", CTX_EFORMAT, "before any file header");
    expect_refusal("just words\n", CTX_EFORMAT, "no file header");
    expect_refusal("--- a/../x\n+++ b/../x\n@@ -1 +1 @@\n-a\n+b\n", CTX_EINVAL, "leaves the repository");
    expect_refusal("--- /etc/passwd\n+++ /etc/passwd\n@@ -1 +1 @@\n-a\n+b\n", CTX_EINVAL, "absolute");
    expect_refusal("--- a/nope.c\n+++ b/nope.c\n@@ -1 +1 @@\n-a\n+b\n", CTX_ENOTFOUND, "nope.c");
    expect_refusal("--- a/a.c\n+++ b/b.c\n@@ -1 +1 @@\n-one\n+uno\n", CTX_EUNSUPPORTED, "renaming");
    expect_refusal("--- a/a.c\n+++ b/a.c\n@@ -x +1 @@\n", CTX_EFORMAT, "bad hunk header");
}

static void test_uris(void **state)
{
    (void)state;
    char *u = lsp_path_to_uri("/a b/c#d/\xC3\xA9.c");
    assert_string_equal(u, "file:///a%20b/c%23d/%C3%A9.c");
    char *p = NULL;
    struct ctx_err e = {0};
    assert_int_equal(lsp_uri_to_path(u, &p, &e), 0);
    assert_string_equal(p, "/a b/c#d/\xC3\xA9.c");
    free(p);
    free(u);
    assert_int_equal(lsp_uri_to_path("file://localhost/x%3Ay", &p, &e), 0);
    assert_string_equal(p, "/x:y");
    free(p);
    assert_int_equal(lsp_uri_to_path("untitled:Untitled-1", &p, &e), CTX_EINVAL);
    assert_int_equal(lsp_uri_to_path("file://host/x", &p, &e), CTX_EINVAL);
    assert_int_equal(lsp_uri_to_path("file:///x%2", &p, &e), CTX_EINVAL);
    assert_int_equal(lsp_uri_to_path("file:///x%00y", &p, &e), CTX_EINVAL);
    assert_null(p);
}

static void test_findings(void **state)
{
    (void)state;
    struct file f[] = {{"/repo/a.c", "int main(void)\r\n{\r\n    char *s = \"" EMOJI "\";\r\n}\r\n", 4}};
    set_files(f, 1);
    cJSON *findings = cJSON_Parse(
        "[{\"file\":\"a.c\",\"line\":3,\"severity\":\"error\",\"message\":\"s is never freed\",\"replacement\":\"x\"},"
        "{\"file\":\"a.c\",\"line\":1,\"end_line\":2,\"severity\":\"info\",\"message\":\"style\"},"
        "{\"file\":\"lib/b.c\",\"line\":9,\"severity\":\"nit\",\"message\":\"elsewhere\"},"
        "{\"file\":\"a.c\",\"line\":0,\"severity\":\"error\",\"message\":\"no line\"},"
        "{\"line\":3,\"message\":\"no file\"}]");
    cJSON *uris = cJSON_Parse("[\"file:///repo/a.c\",\"file:///repo/clean.c\"]");
    cJSON *out = NULL;
    struct ctx_err e = {0};
    assert_int_equal(lsp_findings_to_diagnostics(findings, "/repo", uris, lookup, NULL, LSP_ENC_UTF16, &out, &e), 0);
    char *got = cJSON_PrintUnformatted(out);
    /* line 3 is `    char *s = "😀";`: 15 + 2 + 2 = 19 UTF-16 units before its CRLF */
    const char *want =
        "{\"file:///repo/a.c\":[{\"range\":{\"start\":{\"line\":2,\"character\":0},\"end\":{\"line\":2,\"character\":19}},"
        "\"severity\":1,\"source\":\"ctx\",\"message\":\"s is never freed\",\"data\":{\"replacement\":\"x\"}},"
        "{\"range\":{\"start\":{\"line\":0,\"character\":0},\"end\":{\"line\":1,\"character\":1}},\"severity\":3,"
        "\"source\":\"ctx\",\"message\":\"style\"}],\"file:///repo/clean.c\":[],"
        "\"file:///repo/lib/b.c\":[{\"range\":{\"start\":{\"line\":8,\"character\":0},\"end\":{\"line\":9,\"character\":0}},"
        "\"severity\":4,\"source\":\"ctx\",\"message\":\"elsewhere\"}]}";
    if (strcmp(got, want) != 0)
        fail_msg("got  %s\nwant %s", got, want);
    free(got);
    cJSON_Delete(out);
    cJSON_Delete(findings);
    cJSON_Delete(uris);
}

static void test_fuzz_corpus(void **state)
{
    (void)state;
    const char *corpus[] = {
        "",
        "--- a/x\n+++ b/x\n",
        "--- a/x\n+++ b/x\n@@ -1 +1 @@\n-int a;\r\n+int b;\r\n",
        "--- a/x\n+++ b/x\n@@ -2 +2 @@\n-" EMOJI " b\n+" EMOJI " c\n",
        "--- a/x\n+++ b/x\n@@ -5 +5 @@\n-end\n\\ No newline at end of file\n+end\n",
        "--- a/x\n+++ b/x\n@@ -99999999999999999999 +1 @@\n-a\n+b\n",
        "--- a/x\n+++ b/x\n@@ -1,-1 +1 @@\n",
        "--- a/x\n+++ b/x\n@@ -0,0 +0,0 @@\n",
        "--- a/x\n+++ b/x\n@@ -1,2 +1,2 @@\n\n\n",
        "--- a/x\n+++ b/x\n@@ -1 +1 @@\n\\\n\\\n-int a;\n+\n",
        "--- /dev/null\n+++ /dev/null\n@@ -0,0 +1 @@\n+x\n",
        "--- /dev/null\n+++ b/new\n@@ -0,0 +1 @@\n+\xFF\xFE\n",
        "--- a/gone.c\n+++ b/gone.c\n@@ -1 +1 @@\n-a\n+b\n",
        "--- \n+++ \n@@ -1 +1 @@\n-a\n+b\n",
        "--- a/x\n+++ b/x\n@@ -1,3 +1,3 @@\n int a;\r\n-\xF0\x9F\x98\x80 b\r\n+\xF0\x9F\x98\x80\r\n \r\n",
        "--- a/x\n+++ b/x\n@@",
        "--- a/x",
        "--- a/x\n++",
        "--- a/x\n+++",
    };
    for (size_t i = 0; i < sizeof corpus / sizeof corpus[0]; i++)
        assert_int_equal(lsp_diff_fuzz_one((const uint8_t *)corpus[i], strlen(corpus[i])), 0);
    /* every prefix of a valid diff */
    const char *d = corpus[14];
    for (size_t n = 0; n <= strlen(d); n++)
        assert_int_equal(lsp_diff_fuzz_one((const uint8_t *)d, n), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_utf16_columns),      cmocka_unit_test(test_crlf_buffer),
        cmocka_unit_test(test_moved_hunks_and_no_newline), cmocka_unit_test(test_created_and_deleted),
        cmocka_unit_test(test_refusals),           cmocka_unit_test(test_uris),
        cmocka_unit_test(test_findings),           cmocka_unit_test(test_fuzz_corpus),
    };
    return cmocka_run_group_tests_name("lsp-edit", tests, NULL, NULL);
}
