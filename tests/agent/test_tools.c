/* agent/tools*.c, agent/undo.c: every tool on a real repository built with the git CLI, with its
 * error paths; path confinement (absolute, "..", symlinks, .git/.ctx writes); review and suggest
 * modes; undo round trips (edits, created and deleted files, later user edits). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "../test_sh.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dsml.h"
#include "json.h"
#include "repo.h"
#include "sandbox.h"
#include "tools.h"
#include "undo.h"

#ifndef SCHEMA_HASH
#define SCHEMA_HASH 0x93b354422103a36aull
#endif

static char base[128], root[256];

static char *slurp(const char *rel)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", root, rel);
    char *buf;
    size_t len;
    struct ctx_err e = {0};
    if (ctx_read_file(p, 1 << 24, &buf, &len, &e))
        return NULL;
    return buf;
}

static void put(const char *rel, const char *text)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", root, rel);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static bool exists(const char *rel)
{
    char p[512];
    struct stat st;
    snprintf(p, sizeof p, "%s/%s", root, rel);
    return lstat(p, &st) == 0;
}

static const char main_c[] =
    "#include \"util.h\"\n"
    "\n"
    "int main(void)\n"
    "{\n"
    "    int x = add(1, 2);\n"
    "    if (x != 3)\n"
    "        return 1;\n"
    "    return 0;\n"
    "}\n";

static int setup(void **state)
{
    (void)state;
    snprintf(base, sizeof base, "/tmp/ctx-tools-XXXXXX");
    if (!mkdtemp(base))
        return -1;
    snprintf(root, sizeof root, "%s/repo", base);
    setenv("HOME", base, 1);
    setenv("GIT_CONFIG_NOSYSTEM", "1", 1);
    test_sh("cd %s && git init -q -b main repo && cd repo && git config user.email t@example.com && "
       "git config user.name T && mkdir -p src build docs && printf 'build/\\n*.log\\n' > .gitignore && "
       "printf 'int add(int a, int b)\\n{\\n    return a + b;\\n}\\n' > src/util.c && "
       "printf 'int add(int a, int b);\\n' > src/util.h && "
       "printf 'artifact add\\n' > build/out.txt && printf 'add log\\n' > debug.log && "
       "printf 'Docs\\n' > docs/README.md && printf 'a\\0b add\\n' > blob.bin && "
       "ln -s /etc escape && ln -s src/util.c inlink && ln -s .git gitlink", base);
    put("src/main.c", main_c);
    test_sh("cd %s && git add -A && git commit -q -m one", root);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf %s", base);
    return system(cmd) == 0 ? 0 : -1;
}

static struct agent_tools *tools_new(enum agent_mode mode, struct agent_undo *u)
{
    struct agent_tools_config c = {.root = root, .mode = mode, .undo = u};
    struct agent_tools *t;
    struct ctx_err e = {0};
    if (agent_tools_new(&c, &t, &e))
        fail_msg("agent_tools_new: %s", e.msg);
    return t;
}

/* Call a tool; check is_error and that `want` (if any) is in the text; return the text. */
static char *call(struct agent_tools *t, const char *name, const char *args, bool want_err,
                  const char *want)
{
    struct agent_tool_result r;
    struct ctx_err e = {0};
    if (agent_tools_call(t, name, args, &r, &e))
        fail_msg("%s: %s", name, e.msg);
    assert_int_equal(strlen(r.text), r.len);
    if (r.is_error != want_err || (want && !strstr(r.text, want)))
        fail_msg("%s %s: is_error %d, text:\n%s\n(wanted %s\"%s\")", name, args, r.is_error, r.text,
                 want_err ? "an error with " : "", want ? want : "");
    return r.text;
}

#define CALL_OK(t, n, a, w) free(call(t, n, a, false, w))
#define CALL_ERR(t, n, a, w) free(call(t, n, a, true, w))

static void test_schemas(void **state)
{
    (void)state;
    struct agent_tools *t = tools_new(AGENT_MODE_INTERACTIVE, NULL);
    const cJSON *s = agent_tools_schemas(t);
    static const char *const names[] = {"read_file", "list_dir", "search", "find_symbol",
                                        "find_references", "edit_file", "write_file", "apply_patch",
                                        "run_command", "run_tests", "git_status", "git_diff"};
    assert_int_equal(cJSON_GetArraySize(s), 12);
    size_t i = 0;
    for (const cJSON *it = s->child; it; it = it->next, i++) {
        const cJSON *fn = cJSON_GetObjectItem(it, "function");
        assert_string_equal(cJSON_GetObjectItem(fn, "name")->valuestring, names[i]);
        assert_true(cJSON_IsObject(cJSON_GetObjectItem(fn, "parameters")));
        assert_int_equal(agent_tool_is_read_only(names[i]),
                         i < 5 || !strcmp(names[i], "git_status") || !strcmp(names[i], "git_diff"));
    }
    /* Byte-stable: the rendered tools section is the same for every instance and every mode, and
     * the frozen text's hash is pinned (a change here invalidates every cached prefix). */
    struct agent_tools *r = tools_new(AGENT_MODE_REVIEW, NULL);
    cJSON *msgs = cJSON_Parse("[{\"role\":\"system\",\"content\":\"sys\"},{\"role\":\"user\",\"content\":\"q\"}]");
    struct inf_dsml_opts o = {.mode = INF_DSML_CHAT};
    char *p1, *p2;
    size_t l1, l2;
    struct ctx_err e = {0};
    assert_int_equal(inf_dsml_encode(msgs, agent_tools_schemas(t), &o, &p1, &l1, &e), 0);
    assert_int_equal(inf_dsml_encode(msgs, agent_tools_schemas(r), &o, &p2, &l2, &e), 0);
    assert_int_equal(l1, l2);
    assert_memory_equal(p1, p2, l1);
    assert_non_null(strstr(p1, "{\"name\": \"read_file\", \"description\": \"Read a text file"));
    const char *txt = agent_tools_schema_text();
    fprintf(stderr, "# schema hash %016llx, %zu bytes\n", (unsigned long long)repo_hash64(txt, strlen(txt)), strlen(txt));
    assert_int_equal(repo_hash64(txt, strlen(txt)), SCHEMA_HASH);
    free(p1);
    free(p2);
    cJSON_Delete(msgs);
    agent_tools_free(r);
    agent_tools_free(t);
}

static void test_paths(void **state)
{
    (void)state;
    static const struct {
        const char *path;
        bool write;
        int rc;
        const char *out_or_msg;
    } cases[] = {
        {"src/main.c", false, 0, "src/main.c"},
        {"./src//main.c", true, 0, "src/main.c"},
        {"", false, 0, ""},
        {".", false, 0, ""},
        {"new/dir/file.c", true, 0, "new/dir/file.c"},
        {"/etc/passwd", false, CTX_EDENIED, "absolute path"},
        {"../x", false, CTX_EDENIED, "contains \"..\""},
        {"src/../../x", true, CTX_EDENIED, "contains \"..\""},
        {"src/..", false, CTX_EDENIED, "contains \"..\""},
        {"escape/passwd", false, CTX_EDENIED, "outside the repository"},
        {"escape/newfile", true, CTX_EDENIED, "outside the repository"},
        {"escape", false, CTX_EDENIED, "outside the repository"},
        {".git/config", true, CTX_EDENIED, "under .git/"},
        {".git", true, CTX_EDENIED, "under .git/"},
        {".ctx/config.json", true, CTX_EDENIED, "under .ctx/"},
        {"gitlink/config", true, CTX_EDENIED, "may not change"},
        {"inlink", true, CTX_EDENIED, "is a symbolic link"},
        {"", true, CTX_EINVAL, "repository root"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *rel = NULL;
        struct ctx_err e = {0};
        int rc = agent_path_resolve(root, cases[i].path, cases[i].write, &rel, &e);
        if (rc != cases[i].rc || (rc ? !strstr(e.msg, cases[i].out_or_msg) : strcmp(rel, cases[i].out_or_msg)))
            fail_msg("case %zu (%s): rc %d, rel %s, msg %s", i, cases[i].path, rc, rel ? rel : "-", e.msg);
        free(rel);
    }
    /* Reading .git is allowed; reading through a symlink inside the repository too. */
    struct agent_tools *t = tools_new(AGENT_MODE_INTERACTIVE, NULL);
    CALL_OK(t, "read_file", "{\"path\":\"inlink\"}", "return a + b;");
    CALL_ERR(t, "read_file", "{\"path\":\"/etc/passwd\"}", "absolute path");
    CALL_ERR(t, "read_file", "{\"path\":\"escape/passwd\"}", "outside the repository");
    CALL_ERR(t, "write_file", "{\"path\":\"escape/evil\",\"content\":\"x\"}", "outside the repository");
    CALL_ERR(t, "write_file", "{\"path\":\".git/hooks/pre-commit\",\"content\":\"x\"}", "under .git/");
    CALL_ERR(t, "edit_file", "{\"path\":\"gitlink/config\",\"old_string\":\"a\",\"new_string\":\"b\"}", "may not change");
    CALL_ERR(t, "apply_patch", "{\"patch\":\"--- /dev/null\\n+++ b/../evil\\n@@ -0,0 +1 @@\\n+x\\n\"}", "contains \"..\"");
    CALL_ERR(t, "list_dir", "{\"path\":\"..\"}", "contains \"..\"");
    CALL_ERR(t, "search", "{\"pattern\":\"root\",\"path\":\"escape\"}", "outside the repository");
    assert_false(exists("../evil"));
    agent_tools_free(t);
}

static void test_read_file(void **state)
{
    (void)state;
    struct agent_tools *t = tools_new(AGENT_MODE_INTERACTIVE, NULL);
    char *r = call(t, "read_file", "{\"path\":\"src/main.c\"}", false, NULL);
    assert_string_equal(r, "     1\t#include \"util.h\"\n     2\t\n     3\tint main(void)\n     4\t{\n"
                           "     5\t    int x = add(1, 2);\n     6\t    if (x != 3)\n     7\t        return 1;\n"
                           "     8\t    return 0;\n     9\t}\n");
    free(r);
    r = call(t, "read_file", "{\"path\":\"src/main.c\",\"start_line\":5,\"end_line\":6}", false, NULL);
    assert_string_equal(r, "     5\t    int x = add(1, 2);\n     6\t    if (x != 3)\n[lines 5-6 of 9]\n");
    free(r);
    CALL_OK(t, "read_file", "{\"path\":\"src/main.c\",\"start_line\":\"8\"}", "     9\t}\n");
    CALL_ERR(t, "read_file", "{\"path\":\"src/main.c\",\"start_line\":10}", "past the end of src/main.c, which has 9 lines");
    CALL_ERR(t, "read_file", "{\"path\":\"src/main.c\",\"start_line\":5,\"end_line\":2}", "end_line 2 is before start_line 5");
    CALL_ERR(t, "read_file", "{\"path\":\"src/main.c\",\"start_line\":0}", "from 1 to");
    CALL_ERR(t, "read_file", "{\"path\":\"src/main.c\",\"start_line\":\"x\"}", "must be an integer");
    CALL_ERR(t, "read_file", "{\"path\":\"nope.c\"}", "does not exist; use list_dir or search");
    CALL_ERR(t, "read_file", "{\"path\":\"src\"}", "is a directory; use list_dir");
    CALL_ERR(t, "read_file", "{\"path\":\"blob.bin\"}", "binary file");
    CALL_ERR(t, "read_file", "{}", "missing required argument \"path\"");
    CALL_ERR(t, "read_file", "{\"path\":7}", "must be a string");
    agent_tools_free(t);
    /* Line and byte caps, each with a note that says how to go on. */
    struct agent_tools_config c = {.root = root, .max_read_lines = 3, .max_output = 400};
    struct ctx_err e = {0};
    assert_int_equal(agent_tools_new(&c, &t, &e), 0);
    r = call(t, "read_file", "{\"path\":\"src/main.c\",\"start_line\":2}", false, NULL);
    assert_string_equal(r, "     2\t\n     3\tint main(void)\n     4\t{\n[lines 2-4 of 9 shown; call read_file with start_line=5 for more]\n");
    free(r);
    char big[3000];
    for (int i = 0; i < 100; i++)
        snprintf(big + i * 24, 25, "line %03d of a long file\n", i);
    put("big.txt", big);
    c.max_read_lines = 0;
    agent_tools_free(t);
    assert_int_equal(agent_tools_new(&c, &t, &e), 0);
    r = call(t, "read_file", "{\"path\":\"big.txt\"}", false, "call read_file with start_line=");
    assert_true(strlen(r) <= 400);
    free(r);
    r = call(t, "search", "{\"pattern\":\"long\",\"path\":\"big.txt\"}", false, "[output truncated: ");
    assert_true(strlen(r) < 400 + 200);
    free(r);
    agent_tools_free(t);
    char p[512];
    snprintf(p, sizeof p, "%s/big.txt", root);
    unlink(p);
    put("empty.txt", "");
    t = tools_new(AGENT_MODE_INTERACTIVE, NULL);
    CALL_OK(t, "read_file", "{\"path\":\"empty.txt\"}", "empty.txt is empty (0 lines)");
    agent_tools_free(t);
    snprintf(p, sizeof p, "%s/empty.txt", root);
    unlink(p);
}

static void test_list_and_search(void **state)
{
    (void)state;
    struct agent_tools *t = tools_new(AGENT_MODE_INTERACTIVE, NULL);
    char *r = call(t, "list_dir", "{}", false, NULL);
    assert_string_equal(r, ".gitignore\nblob.bin\ndocs/\nescape\ngitlink\ninlink\nsrc/\n");
    free(r);
    r = call(t, "list_dir", "{\"path\":\"src\",\"depth\":2}", false, NULL);
    assert_string_equal(r, "main.c\nutil.c\nutil.h\n");
    free(r);
    r = call(t, "list_dir", "{\"depth\":2}", false, NULL);
    assert_non_null(strstr(r, "docs/\n  README.md\n"));
    assert_null(strstr(r, "out.txt"));
    free(r);
    CALL_ERR(t, "list_dir", "{\"path\":\"src/main.c\"}", "is not a directory; use read_file");
    CALL_ERR(t, "list_dir", "{\"path\":\"nope\"}", "(it does not exist)");
    CALL_ERR(t, "list_dir", "{\"path\":\"build\"}", "ignored");
    CALL_ERR(t, "list_dir", "{\"depth\":9}", "from 1 to 4");
    /* search: ignored (build/, *.log), binary and .git files are skipped; symlinks not followed. */
    r = call(t, "search", "{\"pattern\":\"\\\\badd\\\\(\"}", false, NULL);
    assert_string_equal(r, "src/main.c:5:     int x = add(1, 2);\nsrc/util.c:1: int add(int a, int b)\nsrc/util.h:1: int add(int a, int b);\n");
    free(r);
    CALL_OK(t, "search", "{\"pattern\":\"add\",\"glob\":\"*.h\"}", "src/util.h:1:");
    r = call(t, "search", "{\"pattern\":\"ADD\\\\(\",\"case_insensitive\":true,\"glob\":\"src/*.c\"}", false, NULL);
    assert_string_equal(r, "src/main.c:5:     int x = add(1, 2);\nsrc/util.c:1: int add(int a, int b)\n");
    free(r);
    CALL_OK(t, "search", "{\"pattern\":\"add\",\"max_results\":1}", "[1 of 3 matches shown;");
    CALL_OK(t, "search", "{\"pattern\":\"zebra\"}", "no matches for /zebra/ in . (");
    CALL_ERR(t, "search", "{\"pattern\":\"add(\"}", "not a valid PCRE2 regular expression");
    CALL_ERR(t, "search", "{\"pattern\":\"\"}", "the pattern is empty");
    CALL_ERR(t, "search", "{\"pattern\":\"x\",\"path\":\"nope.c\"}", "does not exist");
    CALL_ERR(t, "search", "{\"pattern\":\"x\",\"max_results\":0}", "from 1 to");
    CALL_ERR(t, "search", "{\"pattern\":\"x\",\"case_insensitive\":\"maybe\"}", "true or false");
    /* .ctxignore applies like .gitignore. */
    put(".ctxignore", "docs/\n");
    struct agent_tools *t2 = tools_new(AGENT_MODE_INTERACTIVE, NULL);
    r = call(t2, "list_dir", "{}", false, NULL);
    assert_string_equal(r, ".ctxignore\n.gitignore\nblob.bin\nescape\ngitlink\ninlink\nsrc/\n");
    free(r);
    CALL_OK(t2, "search", "{\"pattern\":\"Docs\"}", "no matches");
    CALL_OK(t, "search", "{\"pattern\":\"Docs\"}", "docs/README.md:1: Docs");
    agent_tools_free(t2);
    char ci[512];
    snprintf(ci, sizeof ci, "%s/.ctxignore", root);
    unlink(ci);
    /* Catastrophic backtracking is bounded by the match limit, not a hang. */
    put("docs/slow.txt", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!\n");
    CALL_OK(t, "search", "{\"pattern\":\"(a+)+$\",\"path\":\"docs\"}", "no matches");
    char p[512];
    snprintf(p, sizeof p, "%s/docs/slow.txt", root);
    unlink(p);
    agent_tools_free(t);
}

static void test_edit_file(void **state)
{
    (void)state;
    struct agent_tools *t = tools_new(AGENT_MODE_INTERACTIVE, NULL);
    put("e.c", "int a = 1;\nint b = 1;\nvoid f(void)\n{\n\tif (a)\n\t\tb = 2;\n}\n");
    CALL_OK(t, "edit_file", "{\"path\":\"e.c\",\"old_string\":\"int b = 1;\",\"new_string\":\"int b = 5;\"}",
            "edited e.c: replaced 1 occurrence (exact match) at line 2");
    char *s = slurp("e.c");
    assert_string_equal(s, "int a = 1;\nint b = 5;\nvoid f(void)\n{\n\tif (a)\n\t\tb = 2;\n}\n");
    free(s);
    CALL_ERR(t, "edit_file", "{\"path\":\"e.c\",\"old_string\":\"int\",\"new_string\":\"long\"}",
             "old_string occurs 2 times in e.c (lines 1 2); include more surrounding lines");
    CALL_OK(t, "edit_file", "{\"path\":\"e.c\",\"old_string\":\"int\",\"new_string\":\"long\",\"replace_all\":true}",
            "replaced 2 occurrences");
    /* Whitespace-tolerant: spaces instead of tabs; re-indented to the file's tabs. */
    CALL_OK(t, "edit_file", "{\"path\":\"e.c\",\"old_string\":\"    if (a)\\n        b = 2;\",\"new_string\":\"    if (a && b)\\n        b = 3;\"}",
            "(match ignoring leading/trailing white space) at line 5");
    s = slurp("e.c");
    assert_string_equal(s, "long a = 1;\nlong b = 5;\nvoid f(void)\n{\n\tif (a && b)\n\t    b = 3;\n}\n");
    free(s);
    /* Not found: the error names the closest line and shows the file there. */
    char *r = call(t, "edit_file", "{\"path\":\"e.c\",\"old_string\":\"void g(void)\",\"new_string\":\"x\"}", true, NULL);
    assert_non_null(strstr(r, "old_string was not found in e.c, not even ignoring white space. The closest line is 3;"));
    assert_non_null(strstr(r, "     3\tvoid f(void)\n"));
    free(r);
    CALL_ERR(t, "edit_file", "{\"path\":\"e.c\",\"old_string\":\"\",\"new_string\":\"x\"}", "old_string is empty; to create a file");
    CALL_ERR(t, "edit_file", "{\"path\":\"e.c\",\"old_string\":\"a\",\"new_string\":\"a\"}", "the same");
    CALL_ERR(t, "edit_file", "{\"path\":\"nope.c\",\"old_string\":\"a\",\"new_string\":\"b\"}", "does not exist; use write_file");
    CALL_ERR(t, "edit_file", "{\"path\":\"e.c\",\"old_string\":\"a\"}", "missing required argument \"new_string\"");
    CALL_ERR(t, "edit_file", "{\"path\":\"e.c\",\"old_string\":\"long\",\"new_string\":\"x\",\"replace_all\":3}", "true or false");
    put("w.c", "  x = 1;\n  y = 2;\n  x = 1;\n  y = 2;\n");
    CALL_ERR(t, "edit_file", "{\"path\":\"w.c\",\"old_string\":\"x = 1;\\ny = 2;\",\"new_string\":\"z\"}",
             "ignoring white space it matches 2 places (first at line 1)");
    /* The write is atomic: no temporary file is left, the mode is kept. */
    char p[512];
    snprintf(p, sizeof p, "%s/e.c", root);
    chmod(p, 0755);
    CALL_OK(t, "edit_file", "{\"path\":\"e.c\",\"old_string\":\"long a\",\"new_string\":\"short a\"}", NULL);
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0755);
    FILE *ls = popen("ls -a /tmp/ctx-tools-*/repo | grep -c ctx-tmp", "r");
    char buf[16] = "";
    assert_non_null(fgets(buf, sizeof buf, ls));
    pclose(ls);
    assert_int_equal(atoi(buf), 0);
    unlink(p);
    snprintf(p, sizeof p, "%s/w.c", root);
    unlink(p);
    agent_tools_free(t);
}

static void test_write_patch_undo(void **state)
{
    (void)state;
    struct agent_undo *u;
    struct ctx_err e = {0};
    assert_int_equal(agent_undo_open(root, &u, &e), 0);
    struct agent_tools *t = tools_new(AGENT_MODE_INTERACTIVE, u);
    char *orig_main = slurp("src/main.c"), *orig_util = slurp("src/util.c"), *orig_h = slurp("src/util.h");
    /* Turn 1: create a file (new directory), rewrite one, patch two, delete one. */
    assert_int_equal(agent_undo_begin(u, "turn one", &e), 0);
    CALL_OK(t, "write_file", "{\"path\":\"lib/new.c\",\"content\":\"int n;\\n\"}", "created lib/new.c: 7 bytes, 1 lines");
    CALL_OK(t, "write_file", "{\"path\":\"src/util.h\",\"content\":\"int add(int, int);\\n\"}", "replaced src/util.h");
    CALL_ERR(t, "write_file", "{\"path\":\"src\",\"content\":\"x\"}", "is a directory");
    CALL_OK(t, "apply_patch",
            "{\"patch\":\"--- a/src/main.c\\n+++ b/src/main.c\\n@@ -5,2 +5,2 @@\\n     int x = add(1, 2);\\n-    if (x != 3)\\n+    if (x != 4)\\n"
            "--- a/src/util.c\\n+++ /dev/null\\n@@ -1,4 +0,0 @@\\n-int add(int a, int b)\\n-{\\n-    return a + b;\\n-}\\n\"}",
            "patched src/main.c\ndeleted src/util.c\n");
    assert_false(exists("src/util.c"));
    char *m = slurp("src/main.c");
    assert_non_null(strstr(m, "if (x != 4)"));
    free(m);
    /* All or nothing: the second file's hunk fails, so the first is not touched either. */
    CALL_ERR(t, "apply_patch",
             "{\"patch\":\"--- a/src/main.c\\n+++ b/src/main.c\\n@@ -8 +8 @@\\n-    return 0;\\n+    return 9;\\n"
             "--- a/lib/new.c\\n+++ b/lib/new.c\\n@@ -1 +1 @@\\n-int q;\\n+int r;\\n\"}",
             "nothing was changed");
    m = slurp("src/main.c");
    assert_non_null(strstr(m, "return 0;"));
    free(m);
    CALL_ERR(t, "apply_patch", "{\"patch\":\"--- /dev/null\\n+++ b/lib/new.c\\n@@ -0,0 +1 @@\\n+x\\n\"}", "already exists");
    CALL_ERR(t, "apply_patch", "{\"patch\":\"--- a/gone.c\\n+++ b/gone.c\\n@@ -1 +1 @@\\n-a\\n+b\\n\"}", "gone.c does not exist");
    CALL_ERR(t, "apply_patch", "{\"patch\":\"hello\"}", "the patch does not parse: no file in the patch");
    CALL_ERR(t, "apply_patch", "{\"patch\":\"--- a/.git/config\\n+++ b/.git/config\\n@@ -1 +1 @@\\n-a\\n+b\\n\"}", "under .git/");
    unsigned seq;
    assert_int_equal(agent_undo_commit(u, &seq, &e), 0);
    assert_int_equal(seq, 1);
    /* Turn 2: rename through a patch. */
    CALL_OK(t, "apply_patch", "{\"patch\":\"--- a/lib/new.c\\n+++ b/lib/renamed.c\\n@@ -1 +1 @@\\n-int n;\\n+int m;\\n\"}", "patched lib/renamed.c\ndeleted lib/new.c");
    assert_int_equal(agent_undo_commit(u, &seq, &e), 0);
    assert_int_equal(seq, 2);
    cJSON *list;
    assert_int_equal(agent_undo_list(u, &list, &e), 0);
    assert_int_equal(cJSON_GetArraySize(list), 2);
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(list, 0), "seq")->valueint, 2);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(list, 1), "label")->valuestring, "turn one");
    cJSON_Delete(list);
    /* Changed paths for the caller's snapshot refresh. */
    char **paths;
    size_t np;
    agent_tools_take_changed(t, &paths, &np);
    assert_int_equal(np, 5);
    assert_string_equal(paths[0], "lib/new.c");
    assert_string_equal(paths[1], "lib/renamed.c");
    assert_string_equal(paths[4], "src/util.h");
    agent_tools_paths_free(paths, np);
    /* Undo turn 2, then turn 1: everything is as before, created files are gone. */
    cJSON *done;
    assert_int_equal(agent_undo_last(u, false, &done, &e), 0);
    assert_int_equal(cJSON_GetArraySize(done), 2);
    cJSON_Delete(done);
    assert_true(exists("lib/new.c"));
    assert_false(exists("lib/renamed.c"));
    /* A user edit after the turn blocks undo unless forced. */
    put("src/util.h", "user edit\n");
    assert_int_equal(agent_undo_last(u, false, &done, &e), CTX_EBUSY);
    assert_non_null(strstr(e.msg, "src/util.h"));
    assert_int_equal(agent_undo_last(u, true, &done, &e), 0);
    cJSON_Delete(done);
    char *s = slurp("src/main.c");
    assert_string_equal(s, orig_main);
    free(s);
    s = slurp("src/util.c");
    assert_string_equal(s, orig_util);
    free(s);
    s = slurp("src/util.h");
    assert_string_equal(s, orig_h);
    free(s);
    assert_false(exists("lib/new.c"));
    assert_int_equal(agent_undo_last(u, false, &done, &e), CTX_ENOTFOUND);
    assert_non_null(strstr(e.msg, "nothing to undo"));
    free(orig_main);
    free(orig_util);
    free(orig_h);
    agent_tools_free(t);
    agent_undo_free(u);
    test_sh("cd %s && rmdir lib && test -z \"$(git status --porcelain)\"", root);
}

static void test_modes(void **state)
{
    (void)state;
    /* Review: read-only tools only. */
    struct agent_tools *t = tools_new(AGENT_MODE_REVIEW, NULL);
    CALL_ERR(t, "edit_file", "{\"path\":\"src/main.c\",\"old_string\":\"x\",\"new_string\":\"y\"}",
             "review mode is read-only: edit_file is not available. Report the problem as a finding");
    CALL_ERR(t, "run_command", "{\"command\":\"true\"}", "review mode is read-only");
    CALL_OK(t, "read_file", "{\"path\":\"src/util.h\"}", "int add");
    agent_tools_free(t);
    /* Suggest: edits go to the overlay; the tools read through it; the diff is exact. */
    t = tools_new(AGENT_MODE_SUGGEST, NULL);
    CALL_OK(t, "edit_file", "{\"path\":\"src/util.h\",\"old_string\":\"int add\",\"new_string\":\"long add\"}", "[in the suggestion overlay]");
    CALL_OK(t, "write_file", "{\"path\":\"src/sub.c\",\"content\":\"int sub;\\n\"}", "created src/sub.c");
    CALL_OK(t, "apply_patch", "{\"patch\":\"--- a/docs/README.md\\n+++ /dev/null\\n@@ -1 +1,0 @@\\n-Docs\\n\"}", "deleted docs/README.md");
    CALL_OK(t, "read_file", "{\"path\":\"src/util.h\"}", "long add(int a, int b);");
    CALL_OK(t, "search", "{\"pattern\":\"int sub\"}", "src/sub.c:1: int sub;");
    CALL_OK(t, "list_dir", "{\"path\":\"src\"}", "sub.c\n");
    CALL_ERR(t, "read_file", "{\"path\":\"docs/README.md\"}", "does not exist");
    CALL_ERR(t, "run_tests", "{}", "suggest mode does not run commands");
    char *s = slurp("src/util.h");
    assert_string_equal(s, "int add(int a, int b);\n");
    free(s);
    assert_false(exists("src/sub.c"));
    assert_true(exists("docs/README.md"));
    char *diff;
    size_t dl;
    struct ctx_err e = {0};
    assert_int_equal(agent_tools_overlay_diff(t, &diff, &dl, &e), 0);
    assert_string_equal(diff, "--- a/docs/README.md\n+++ /dev/null\n@@ -1 +0,0 @@\n-Docs\n"
                              "--- /dev/null\n+++ b/src/sub.c\n@@ -0,0 +1 @@\n+int sub;\n"
                              "--- a/src/util.h\n+++ b/src/util.h\n@@ -1 +1 @@\n-int add(int a, int b);\n+long add(int a, int b);\n");
    /* The suggestion applies with git apply to exactly the overlay's state. */
    char p[512];
    snprintf(p, sizeof p, "%s/s.patch", base);
    FILE *f = fopen(p, "w");
    fwrite(diff, 1, dl, f);
    fclose(f);
    test_sh("cd %s && git apply --check %s", root, p);
    free(diff);
    agent_tools_free(t);
    /* Unknown tools and bad argument objects. */
    t = tools_new(AGENT_MODE_INTERACTIVE, NULL);
    CALL_ERR(t, "rm_rf", "{}", "there is no tool named \"rm_rf\"; the tools are: read_file list_dir");
    CALL_ERR(t, "read_file", "[1,2]", "not a JSON object");
    CALL_ERR(t, "read_file", "{bad json", "not a JSON object");
    agent_tools_free(t);
}

static void test_git_and_symbols(void **state)
{
    (void)state;
    struct agent_tools *t = tools_new(AGENT_MODE_INTERACTIVE, NULL);
    CALL_OK(t, "git_status", "{}", "on branch main\nnothing to commit");
    CALL_OK(t, "git_diff", "{}", "no unstaged changes");
    put("src/util.h", "int add(int a, int b);\nint twice(int x);\n");
    put("notes.txt", "n\n");
    test_sh("cd %s && git add notes.txt", root);
    char *r = call(t, "git_status", "{}", false, NULL);
    assert_string_equal(r, "on branch main\nA  notes.txt\n M src/util.h\n");
    free(r);
    r = call(t, "git_diff", "{}", false, NULL);
    assert_non_null(strstr(r, "--- a/src/util.h\n+++ b/src/util.h\n@@ -1 +1,2 @@\n int add(int a, int b);\n+int twice(int x);\n"));
    free(r);
    CALL_OK(t, "git_diff", "{\"staged\":true}", "+++ b/notes.txt\n@@ -0,0 +1 @@\n+n\n");
    CALL_OK(t, "git_diff", "{\"path\":\"notes.txt\"}", "no unstaged changes");
    CALL_ERR(t, "git_diff", "{\"path\":\"../x\"}", "contains \"..\"");
    test_sh("cd %s && git rm -q --cached notes.txt && rm notes.txt && git checkout -q src/util.h", root);
    /* Symbols from the repository index. */
    CALL_OK(t, "find_symbol", "{\"name\":\"add\"}", "src/util.c:1: function add: int add(int a, int b)");
    r = call(t, "find_symbol", "{\"name\":\"MAI\"}", false, NULL);
    assert_string_equal(r, "src/main.c:3: function main: int main(void)\n");
    free(r);
    r = call(t, "find_references", "{\"name\":\"add\"}", false, NULL);
    assert_string_equal(r, "src/main.c:5:13: int x = add(1, 2);\n");
    free(r);
    CALL_OK(t, "find_symbol", "{\"name\":\"zebra\"}", "no definitions named \"zebra\" in the index; try search");
    CALL_ERR(t, "find_symbol", "{\"name\":\"\"}", "the name is empty");
    /* The agent's own edits are visible to the next query. */
    CALL_OK(t, "write_file", "{\"path\":\"src/more.c\",\"content\":\"int twice(int x) { return add(x, x); }\\n\"}", NULL);
    CALL_OK(t, "find_symbol", "{\"name\":\"twice\"}", "src/more.c:1: function twice");
    CALL_OK(t, "find_references", "{\"name\":\"add\"}", "src/more.c:1:");
    char p[512];
    snprintf(p, sizeof p, "%s/src/more.c", root);
    unlink(p);
    agent_tools_free(t);
}

static int asked;
static bool ask_yes(void *ud, const char *cmd)
{
    asked++;
    return ud != NULL && strstr(cmd, "echo") != NULL;
}

static void test_commands(void **state)
{
    (void)state;
    char why[256];
    bool ns = agent_sandbox_probe(why, sizeof why);
    const char *pj = "{\"allow\": [\"echo *\", \"false\", \"sleep *\"], \"deny\": [\"curl *\"], \"default\": \"ask\"}";
    struct agent_policy *pol;
    struct ctx_err e = {0};
    assert_int_equal(agent_policy_parse(pj, strlen(pj), &pol, &e), 0);
    struct agent_tools_config c = {.root = root, .policy = pol, .ask = ask_yes, .ask_ud = NULL};
    struct agent_tools *t;
    assert_int_equal(agent_tools_new(&c, &t, &e), 0);
    CALL_ERR(t, "run_command", "{\"command\":\"curl http://example.com\"}",
             "the user's command policy denies it (pattern \"curl *\"). This is a policy decision");
    CALL_ERR(t, "run_command", "{\"command\":\"ls\"}", "the user declined it");
    assert_int_equal(asked, 1);
    CALL_ERR(t, "run_command", "{\"command\":\"\"}", "the command is empty");
    CALL_ERR(t, "run_command", "{\"command\":\"echo x\",\"timeout_s\":0}", "from 1 to 1800");
    if (ns) {
        CALL_OK(t, "run_command", "{\"command\":\"echo hello\"}", "$ echo hello\n[exit code 0]\nhello\n");
        CALL_ERR(t, "run_command", "{\"command\":\"false\"}", "[exit code 1]");
        CALL_ERR(t, "run_command", "{\"command\":\"echo x > /etc/ctx-test\"}",
                 "come from the sandbox, not from the project");
        assert_int_not_equal(access("/etc/ctx-test", F_OK), 0);
        CALL_ERR(t, "run_command", "{\"command\":\"sleep 5\",\"timeout_s\":1}", "[killed after the 1 s timeout");
        /* run_tests: configured by the user in .ctx/config.json, not subject to the patterns. */
        CALL_ERR(t, "run_tests", "{}", "no test command is configured for this repository: .ctx/config.json does not exist");
        test_sh("mkdir -p %s/.ctx && echo '{}' > %s/.ctx/config.json", root, root);
        CALL_ERR(t, "run_tests", "{}", "has no \"test_command\" string");
        test_sh("echo '{' > %s/.ctx/config.json", root);
        CALL_ERR(t, "run_tests", "{}", ".ctx/config.json cannot be used");
        test_sh("echo '{\"test_command\": \"echo tests ran; test -f src/main.c\"}' > %s/.ctx/config.json", root);
        CALL_OK(t, "run_tests", "{}", "[exit code 0]\ntests ran\n");
        /* The command cannot change the configuration it runs under. */
        test_sh("echo '{\"test_command\": \"echo x > .ctx/config.json\"}' > %s/.ctx/config.json", root);
        CALL_ERR(t, "run_tests", "{}", "Read-only file system");
        test_sh("rm -rf %s/.ctx", root);
    } else {
        CALL_ERR(t, "run_command", "{\"command\":\"echo hello\"}", "which is unavailable here");
    }
    agent_tools_free(t);
    /* With an ask callback that says yes. */
    c.ask_ud = (void *)1;
    assert_int_equal(agent_tools_new(&c, &t, &e), 0);
    if (ns)
        CALL_OK(t, "run_command", "{\"command\":\"printf 'a%s' b; echo\"}", "ab\n");
    agent_tools_free(t);
    /* Without any callback, 'ask' is refused with a clear reason. */
    c.ask = NULL;
    assert_int_equal(agent_tools_new(&c, &t, &e), 0);
    CALL_ERR(t, "run_command", "{\"command\":\"ls\"}", "was not available to approve it");
    agent_tools_free(t);
    agent_policy_free(pol);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schemas),
        cmocka_unit_test(test_paths),
        cmocka_unit_test(test_read_file),
        cmocka_unit_test(test_list_and_search),
        cmocka_unit_test(test_edit_file),
        cmocka_unit_test(test_write_patch_undo),
        cmocka_unit_test(test_modes),
        cmocka_unit_test(test_git_and_symbols),
        cmocka_unit_test(test_commands),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
