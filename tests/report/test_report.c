/* agent/report.c: every output format byte for byte on small inputs; the findings diff checked
 * with `git apply --check` and applied; the suggestions of every format (github, rdjsonl, sarif)
 * applied back onto the old file reproduce the suggest diff's new file; rdjsonl checked line by
 * line against reviewdog's Diagnostic fields; SARIF validated against the official 2.1.0 JSON
 * schema with ajv under node (tests/report/sarif-schema); error paths; the fuzz entry of
 * tests/fuzz/fuzz_report.c over hostile inputs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "../test_sh.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ctx_config.h"
#include "patch.h"
#include "report.h"

int agent_fuzz_report_one(const uint8_t *data, size_t size);

static char root[256];   /* the repository the findings point into */
static char work[256];   /* scratch: outputs, git repositories */

static void write_file(const char *dir, const char *rel, const char *text)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, rel);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static char *read_whole(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    assert_non_null(s);
    assert_int_equal(fread(s, 1, (size_t)n, f), (size_t)n);
    s[n] = 0;
    fclose(f);
    return s;
}

/* Replace every "@ROOT@" with the fixture root. */
static char *with_root(const char *tmpl)
{
    size_t n = strlen(tmpl) + 1, rl = strlen(root);
    for (const char *p = tmpl; (p = strstr(p, "@ROOT@")); p += 6)
        n += rl;
    char *s = malloc(n), *o = s;
    assert_non_null(s);
    for (const char *p = tmpl; *p;) {
        if (strncmp(p, "@ROOT@", 6) == 0) {
            memcpy(o, root, rl);
            o += rl;
            p += 6;
        } else {
            *o++ = *p++;
        }
    }
    *o = 0;
    return s;
}

/* src/a.c has a 4-byte (2 UTF-16 units) and a 2-byte character on line 4; docs/"my file#1.md"
 * needs URI escaping; src/b.c has no final newline. */
static const char a_c[] = "int f(int n)\n{\n    for (i = 0; i <= n; i++)\n        s += \xf0\x9f\x98\x80 + \xc3\xa9;\n"
                          "    return s;\n}\n";
static const char b_c[] = "int x;\nint y = 1";

static int setup(void **state)
{
    (void)state;
    snprintf(root, sizeof root, "/tmp/ctx-report-XXXXXX");
    assert_non_null(mkdtemp(root));
    snprintf(work, sizeof work, "/tmp/ctx-report-work-XXXXXX");
    assert_non_null(mkdtemp(work));
    test_sh("mkdir -p %s/src %s/docs", root, root);
    write_file(root, "src/a.c", a_c);
    write_file(root, "docs/my file#1.md", "# Titel\n\ntext\n");
    write_file(root, "src/b.c", b_c);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    test_sh("rm -rf %s %s", root, work);
    return 0;
}

static struct agent_finding fixture[3];

static void make_findings(void)
{
    static char abs_doc[512];
    snprintf(abs_doc, sizeof abs_doc, "%s/docs/my file#1.md", root);
    fixture[0] = (struct agent_finding){"./src/a.c", 3, 4, AGENT_SEV_ERROR, "off-by-one: reads buf[n]",
                                        "    for (i = 0; i < n; i++)\n        s += 1;\n"};
    fixture[1] = (struct agent_finding){abs_doc, 1, 1, AGENT_SEV_WARNING, "typo \"Titel\"", NULL};
    fixture[2] = (struct agent_finding){"src\\b.c", 2, 2, AGENT_SEV_INFO, "y should be 2", "int y = 2\n"};
}

static char *fmt_findings(enum agent_report_format f, const struct agent_finding *v, size_t n)
{
    char *out = NULL;
    struct ctx_err e = {0};
    int rc = agent_report_findings(f, v, n, root, &out, &e);
    if (rc)
        fail_msg("%s: %s", agent_report_format_name(f), e.msg);
    assert_non_null(out);
    return out;
}

static char *fmt_diff(enum agent_report_format f, const char *diff)
{
    char *out = NULL;
    struct ctx_err e = {0};
    int rc = agent_report_diff(f, diff, &out, &e);
    if (rc)
        fail_msg("%s: %s", agent_report_format_name(f), e.msg);
    assert_non_null(out);
    return out;
}

static void test_format_names(void **state)
{
    (void)state;
    static const char *const names[] = {"text", "json", "diff", "github", "rdjsonl", "sarif"};
    for (int i = 0; i < 6; i++) {
        assert_int_equal(agent_report_format_parse(names[i]), i);
        assert_string_equal(agent_report_format_name((enum agent_report_format)i), names[i]);
    }
    assert_int_equal(agent_report_format_parse("SARIF"), CTX_EINVAL);
    assert_int_equal(agent_report_format_parse(""), CTX_EINVAL);
    assert_int_equal(agent_report_format_parse(NULL), CTX_EINVAL);
    assert_string_equal(agent_report_format_list(), "text|json|diff|github|rdjsonl|sarif");
}

static const char sarif_head[] =
    "{\"$schema\":\"https://json.schemastore.org/sarif-2.1.0.json\",\"version\":\"2.1.0\",\"runs\":[{\"tool\":"
    "{\"driver\":{\"name\":\"ctx\",\"version\":\"" CTX_VERSION "\",\"rules\":[{\"id\":\"ctx/review\",\"name\":"
    "\"Review\",\"shortDescription\":{\"text\":\"A problem found by ctx review (model-assisted code review).\"},"
    "\"defaultConfiguration\":{\"level\":\"warning\"}},{\"id\":\"ctx/suggest\",\"name\":\"Suggestion\","
    "\"shortDescription\":{\"text\":\"A change proposed by ctx suggest.\"},\"defaultConfiguration\":"
    "{\"level\":\"note\"}}]}},";

static void test_findings_exact(void **state)
{
    (void)state;
    make_findings();
    char *s = fmt_findings(AGENT_REPORT_TEXT, fixture, 3);
    assert_string_equal(s, "src/a.c:3-4: error: off-by-one: reads buf[n]\n"
                           "  suggested replacement:\n"
                           "    |     for (i = 0; i < n; i++)\n"
                           "    |         s += 1;\n"
                           "docs/my file#1.md:1: warning: typo \"Titel\"\n"
                           "src/b.c:2: info: y should be 2\n"
                           "  suggested replacement:\n"
                           "    | int y = 2\n");
    free(s);
    s = fmt_findings(AGENT_REPORT_JSON, fixture, 3);
    assert_string_equal(s, "[{\"file\":\"src/a.c\",\"line\":3,\"end_line\":4,\"severity\":\"error\",\"message\":"
                           "\"off-by-one: reads buf[n]\",\"replacement\":\"    for (i = 0; i < n; i++)\\n        "
                           "s += 1;\\n\"},{\"file\":\"docs/my file#1.md\",\"line\":1,\"end_line\":1,\"severity\":"
                           "\"warning\",\"message\":\"typo \\\"Titel\\\"\"},{\"file\":\"src/b.c\",\"line\":2,"
                           "\"end_line\":2,\"severity\":\"info\",\"message\":\"y should be 2\",\"replacement\":"
                           "\"int y = 2\\n\"}]\n");
    free(s);
    s = fmt_findings(AGENT_REPORT_GITHUB, fixture, 3);
    assert_string_equal(s, "{\"body\":\"ctx review: 3 findings (1 error, 1 warning, 1 info).\",\"event\":\"COMMENT\","
                           "\"comments\":[{\"path\":\"src/a.c\",\"line\":4,\"start_line\":3,\"side\":\"RIGHT\","
                           "\"start_side\":\"RIGHT\",\"body\":\"**error**: off-by-one: reads buf[n]\\n\\n```suggestion\\n"
                           "    for (i = 0; i < n; i++)\\n        s += 1;\\n```\\n\"},{\"path\":\"docs/my file#1.md\","
                           "\"line\":1,\"side\":\"RIGHT\",\"body\":\"**warning**: typo \\\"Titel\\\"\"},{\"path\":"
                           "\"src/b.c\",\"line\":2,\"side\":\"RIGHT\",\"body\":\"**info**: y should be 2\\n\\n"
                           "```suggestion\\nint y = 2\\n```\\n\"}]}\n");
    free(s);
    s = fmt_findings(AGENT_REPORT_RDJSONL, fixture, 3);
    assert_string_equal(s, "{\"message\":\"off-by-one: reads buf[n]\",\"location\":{\"path\":\"src/a.c\",\"range\":"
                           "{\"start\":{\"line\":3},\"end\":{\"line\":4}}},\"severity\":\"ERROR\",\"source\":{\"name\":"
                           "\"ctx\"},\"suggestions\":[{\"range\":{\"start\":{\"line\":3},\"end\":{\"line\":4}},\"text\":"
                           "\"    for (i = 0; i < n; i++)\\n        s += 1;\"}]}\n"
                           "{\"message\":\"typo \\\"Titel\\\"\",\"location\":{\"path\":\"docs/my file#1.md\",\"range\":"
                           "{\"start\":{\"line\":1},\"end\":{\"line\":1}}},\"severity\":\"WARNING\",\"source\":{\"name\":"
                           "\"ctx\"}}\n"
                           "{\"message\":\"y should be 2\",\"location\":{\"path\":\"src/b.c\",\"range\":{\"start\":"
                           "{\"line\":2},\"end\":{\"line\":2}}},\"severity\":\"INFO\",\"source\":{\"name\":\"ctx\"},"
                           "\"suggestions\":[{\"range\":{\"start\":{\"line\":2},\"end\":{\"line\":2}},\"text\":"
                           "\"int y = 2\"}]}\n");
    free(s);
    /* SARIF: line 4 of a.c is "        s += <U+1F600> + <U+00E9>;": 17 ASCII + 2 + 1 UTF-16 units, so
     * its last column is 20 and the region ends at 21. The whole-line fix ends at column 1 of line
     * 5; b.c's last line has no newline, so its fix ends at the line's end and inserts none. */
    s = fmt_findings(AGENT_REPORT_SARIF, fixture, 3);
    char *want = with_root(
        "\"originalUriBaseIds\":{\"SRCROOT\":{\"uri\":\"file://@ROOT@/\"}},\"columnKind\":\"utf16CodeUnits\","
        "\"results\":[{\"ruleId\":\"ctx/review\",\"ruleIndex\":0,\"level\":\"error\",\"message\":{\"text\":"
        "\"off-by-one: reads buf[n]\"},\"locations\":[{\"physicalLocation\":{\"artifactLocation\":{\"uri\":"
        "\"src/a.c\",\"uriBaseId\":\"SRCROOT\"},\"region\":{\"startLine\":3,\"startColumn\":1,\"endLine\":4,"
        "\"endColumn\":21}}}],\"fixes\":[{\"description\":{\"text\":\"Replace the lines with ctx's suggestion\"},"
        "\"artifactChanges\":[{\"artifactLocation\":{\"uri\":\"src/a.c\",\"uriBaseId\":\"SRCROOT\"},"
        "\"replacements\":[{\"deletedRegion\":{\"startLine\":3,\"startColumn\":1,\"endLine\":5,\"endColumn\":1},"
        "\"insertedContent\":{\"text\":\"    for (i = 0; i < n; i++)\\n        s += 1;\\n\"}}]}]}]},"
        "{\"ruleId\":\"ctx/review\",\"ruleIndex\":0,\"level\":\"warning\",\"message\":{\"text\":\"typo "
        "\\\"Titel\\\"\"},\"locations\":[{\"physicalLocation\":{\"artifactLocation\":{\"uri\":"
        "\"docs/my%20file%231.md\",\"uriBaseId\":\"SRCROOT\"},\"region\":{\"startLine\":1,\"startColumn\":1,"
        "\"endLine\":1,\"endColumn\":8}}}]},{\"ruleId\":\"ctx/review\",\"ruleIndex\":0,\"level\":\"note\","
        "\"message\":{\"text\":\"y should be 2\"},\"locations\":[{\"physicalLocation\":{\"artifactLocation\":"
        "{\"uri\":\"src/b.c\",\"uriBaseId\":\"SRCROOT\"},\"region\":{\"startLine\":2,\"startColumn\":1,"
        "\"endLine\":2,\"endColumn\":10}}}],\"fixes\":[{\"description\":{\"text\":\"Replace the lines with ctx's "
        "suggestion\"},\"artifactChanges\":[{\"artifactLocation\":{\"uri\":\"src/b.c\",\"uriBaseId\":\"SRCROOT\"},"
        "\"replacements\":[{\"deletedRegion\":{\"startLine\":2,\"startColumn\":1,\"endLine\":2,\"endColumn\":10},"
        "\"insertedContent\":{\"text\":\"int y = 2\"}}]}]}]}]}]}\n");
    assert_int_equal(strncmp(s, sarif_head, strlen(sarif_head)), 0);
    assert_string_equal(s + strlen(sarif_head), want);
    free(want);
    free(s);
    /* The diff: git's own hunk format with blob ids, a/ b/ prefixes, the no-newline marker. */
    s = fmt_findings(AGENT_REPORT_DIFF, fixture, 3);
    assert_string_equal(s, "diff --git a/src/a.c b/src/a.c\n"
                           "index 4f7a273..3cff467 100644\n"
                           "--- a/src/a.c\n"
                           "+++ b/src/a.c\n"
                           "@@ -1,6 +1,6 @@\n"
                           " int f(int n)\n"
                           " {\n"
                           "-    for (i = 0; i <= n; i++)\n"
                           "-        s += \xf0\x9f\x98\x80 + \xc3\xa9;\n"
                           "+    for (i = 0; i < n; i++)\n"
                           "+        s += 1;\n"
                           "     return s;\n"
                           " }\n"
                           "diff --git a/src/b.c b/src/b.c\n"
                           "index 1629d2d..a3be1c0 100644\n"
                           "--- a/src/b.c\n"
                           "+++ b/src/b.c\n"
                           "@@ -1,2 +1,2 @@\n"
                           " int x;\n"
                           "-int y = 1\n"
                           "\\ No newline at end of file\n"
                           "+int y = 2\n"
                           "\\ No newline at end of file\n");
    free(s);
    /* No findings: empty outputs that are still valid documents. */
    s = fmt_findings(AGENT_REPORT_TEXT, NULL, 0);
    assert_string_equal(s, "");
    free(s);
    s = fmt_findings(AGENT_REPORT_DIFF, NULL, 0);
    assert_string_equal(s, "");
    free(s);
    s = fmt_findings(AGENT_REPORT_RDJSONL, NULL, 0);
    assert_string_equal(s, "");
    free(s);
    s = fmt_findings(AGENT_REPORT_JSON, NULL, 0);
    assert_string_equal(s, "[]\n");
    free(s);
    s = fmt_findings(AGENT_REPORT_GITHUB, NULL, 0);
    assert_string_equal(s, "{\"body\":\"ctx review: no findings.\",\"event\":\"COMMENT\",\"comments\":[]}\n");
    free(s);
}

/* A replacement holding ``` gets a longer fence; a deletion (empty replacement) an empty block;
 * overlapping replacements: the diff keeps the first. */
static void test_findings_edges(void **state)
{
    (void)state;
    struct agent_finding f[] = {
        {"src/a.c", 1, 1, AGENT_SEV_WARNING, "m", "```\nint g(void)\n"},
        {"src/a.c", 5, 5, AGENT_SEV_ERROR, "dead", ""},
        {"src/a.c", 5, 6, AGENT_SEV_ERROR, "overlaps", "x\n"},
    };
    char *s = fmt_findings(AGENT_REPORT_GITHUB, f, 2);
    assert_non_null(strstr(s, "\"body\":\"**warning**: m\\n\\n````suggestion\\n```\\nint g(void)\\n````\\n\""));
    assert_non_null(strstr(s, "\"body\":\"**error**: dead\\n\\n```suggestion\\n```\\n\""));
    free(s);
    s = fmt_findings(AGENT_REPORT_DIFF, f, 3);
    assert_string_equal(s, "diff --git a/src/a.c b/src/a.c\n"
                           "index 4f7a273..c4e77c0 100644\n"
                           "--- a/src/a.c\n"
                           "+++ b/src/a.c\n"
                           "@@ -1,6 +1,6 @@\n"
                           "-int f(int n)\n"
                           "+```\n"
                           "+int g(void)\n"
                           " {\n"
                           "     for (i = 0; i <= n; i++)\n"
                           "         s += \xf0\x9f\x98\x80 + \xc3\xa9;\n"
                           "-    return s;\n"
                           " }\n");
    free(s);
}

static void test_findings_diff_applies(void **state)
{
    (void)state;
    make_findings();
    char *s = fmt_findings(AGENT_REPORT_DIFF, fixture, 3);
    char repo[512], patch[512];
    snprintf(repo, sizeof repo, "%s/apply", work);
    snprintf(patch, sizeof patch, "%s/findings.diff", work);
    write_file(work, "findings.diff", s);
    test_sh("rm -rf %s && mkdir -p %s && cp -r %s/. %s && cd %s && git init -q . && git add -A && "
       "git -c user.name=t -c user.email=t@t commit -qm base",
       repo, repo, root, repo, repo);
    test_sh("cd %s && git apply --check %s && git apply %s", repo, patch, patch);
    char p[600];
    snprintf(p, sizeof p, "%s/src/a.c", repo);
    char *a = read_whole(p);
    assert_string_equal(a, "int f(int n)\n{\n    for (i = 0; i < n; i++)\n        s += 1;\n    return s;\n}\n");
    free(a);
    snprintf(p, sizeof p, "%s/src/b.c", repo);
    char *b = read_whole(p);
    assert_string_equal(b, "int x;\nint y = 2");
    free(b);
    free(s);
}

/* ---- applying suggestions back ---- */

struct edit {
    size_t from, to; /* byte offsets in the old text */
    char *text;
};

static int cmp_edit(const void *a, const void *b)
{
    const struct edit *x = a, *y = b;
    return x->from < y->from ? 1 : x->from > y->from ? -1 : 0; /* descending: later edits first */
}

static char *apply_edits(const char *old, struct edit *ed, size_t n)
{
    qsort(ed, n, sizeof *ed, cmp_edit);
    char *cur = strdup(old);
    for (size_t i = 0; i < n; i++) {
        if (i)
            assert_true(ed[i].to <= ed[i - 1].from); /* no overlap */
        size_t len = strlen(cur), tl = strlen(ed[i].text);
        char *nx = malloc(len - (ed[i].to - ed[i].from) + tl + 1);
        memcpy(nx, cur, ed[i].from);
        memcpy(nx + ed[i].from, ed[i].text, tl);
        strcpy(nx + ed[i].from + tl, cur + ed[i].to);
        free(cur);
        cur = nx;
        free(ed[i].text);
    }
    return cur;
}

/* Byte offset of 1-based line `line` (one past the last line = end of text). */
static size_t line_off(const char *t, unsigned line)
{
    size_t off = 0;
    for (unsigned l = 1; l < line; l++) {
        const char *nl = strchr(t + off, '\n');
        assert_non_null(nl);
        off = (size_t)(nl - t) + 1;
    }
    return off;
}

/* A suggestion on whole lines start..end (GitHub's start_line..line; reviewdog's linewise range):
 * the lines, with their line breaks, become the block's lines, each ended by a line break, except
 * that a replaced range without a final line break (the end of a file) gets none either. An
 * empty block deletes the lines. `block` is the suggestion block's content (each line + "\n"). */
static void linewise(const char *t, unsigned start, unsigned end, const char *block, struct edit *ed)
{
    ed->from = line_off(t, start);
    size_t e = line_off(t, end);
    const char *nl = strchr(t + e, '\n');
    ed->to = nl ? (size_t)(nl - t) + 1 : strlen(t);
    ed->text = strdup(block);
    size_t n = strlen(ed->text);
    if (!nl && n && ed->text[n - 1] == '\n')
        ed->text[n - 1] = 0;
}

/* SARIF (line, UTF-16 column) -> byte offset. */
static size_t sarif_off(const char *t, unsigned line, unsigned col)
{
    size_t off = line_off(t, line);
    unsigned u = 1;
    while (u < col) {
        unsigned char c = (unsigned char)t[off];
        assert_true(c && c != '\n');
        size_t n = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
        u += n == 4 ? 2 : 1;
        off += n;
    }
    assert_int_equal(u, col);
    return off;
}

static unsigned num(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItem(o, k);
    assert_true(cJSON_IsNumber(v));
    return (unsigned)v->valuedouble;
}

/* Two versions of a file; the suggest diff between them comes from `git diff`. */
static const char old_c[] =
    "#include <stdio.h>\n"
    "\n"
    "int add(int a, int b)\n"
    "{\n"
    "    return a - b; /* \xc3\xa9t\xc3\xa9 */\n"
    "}\n"
    "\n"
    "int main(void)\n"
    "{\n"
    "    printf(\"%d\\n\", add(1, 2));\n"
    "    return 0;\n"
    "}\n"
    "/* end \xf0\x9f\x98\x80 */";
static const char new_c[] =
    "#include <stdio.h>\n"
    "#include <stdlib.h>\n"
    "\n"
    "int add(int a, int b)\n"
    "{\n"
    "    return a + b; /* \xc3\xa9t\xc3\xa9 */\n"
    "}\n"
    "\n"
    "int main(void)\n"
    "{\n"
    "    printf(\"%d\\n\", add(1, 2));\n"
    "}\n"
    "/* end \xf0\x9f\x98\x81 */\n";

static char *suggest_diff(void)
{
    char repo[512], p[600];
    snprintf(repo, sizeof repo, "%s/suggest", work);
    test_sh("rm -rf %s && mkdir -p %s/src && cd %s && git init -q .", repo, repo, repo);
    write_file(repo, "src/m.c", old_c);
    write_file(repo, "src/new file.c", "");
    test_sh("cd %s && git add -A && git -c user.name=t -c user.email=t@t commit -qm base", repo);
    write_file(repo, "src/m.c", new_c);
    write_file(repo, "src/created.c", "int created;\n");
    test_sh("cd %s && git add -A && git -c core.quotepath=off diff --cached --no-color -U1 > %s/suggest.diff", repo,
       work);
    snprintf(p, sizeof p, "%s/suggest.diff", work);
    return read_whole(p);
}

static void test_diff_formats_exact(void **state)
{
    (void)state;
    static const char d[] = "diff --git a/src/a.c b/src/a.c\n--- a/src/a.c\n+++ b/src/a.c\n@@ -1,6 +1,7 @@\n"
                            " int f(int n)\n {\n-    for (i = 0; i <= n; i++)\n+    for (i = 0; i < n; i++)\n"
                            "         s += 1;\n+    /* done */\n     return s;\n }\n";
    char *s = fmt_diff(AGENT_REPORT_DIFF, d);
    assert_string_equal(s, d);
    free(s);
    s = fmt_diff(AGENT_REPORT_TEXT, d);
    assert_string_equal(s, d);
    free(s);
    s = fmt_diff(AGENT_REPORT_JSON, "--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n");
    assert_string_equal(s, "{\"diff\":\"--- a/x\\n+++ b/x\\n@@ -1 +1 @@\\n-a\\n+b\\n\"}\n");
    free(s);
    s = fmt_diff(AGENT_REPORT_GITHUB, d);
    assert_string_equal(s, "{\"body\":\"ctx suggest: 2 suggested changes.\",\"event\":\"COMMENT\",\"comments\":["
                           "{\"path\":\"src/a.c\",\"line\":3,\"side\":\"RIGHT\",\"body\":\"Suggested change to line 3."
                           "\\n\\n```suggestion\\n    for (i = 0; i < n; i++)\\n```\\n\"},{\"path\":\"src/a.c\","
                           "\"line\":4,\"side\":\"RIGHT\",\"body\":\"Suggested insertion before line 5.\\n\\n"
                           "```suggestion\\n        s += 1;\\n    /* done */\\n```\\n\"}]}\n");
    free(s);
    s = fmt_diff(AGENT_REPORT_RDJSONL, d);
    assert_string_equal(s, "{\"message\":\"Suggested change to line 3.\",\"location\":{\"path\":\"src/a.c\",\"range\":"
                           "{\"start\":{\"line\":3},\"end\":{\"line\":3}}},\"severity\":\"INFO\",\"source\":{\"name\":"
                           "\"ctx\"},\"suggestions\":[{\"range\":{\"start\":{\"line\":3},\"end\":{\"line\":3}},"
                           "\"text\":\"    for (i = 0; i < n; i++)\"}]}\n"
                           "{\"message\":\"Suggested insertion before line 5.\",\"location\":{\"path\":\"src/a.c\","
                           "\"range\":{\"start\":{\"line\":4},\"end\":{\"line\":4}}},\"severity\":\"INFO\",\"source\":"
                           "{\"name\":\"ctx\"},\"suggestions\":[{\"range\":{\"start\":{\"line\":4},\"end\":{\"line\":4}},"
                           "\"text\":\"        s += 1;\\n    /* done */\"}]}\n");
    free(s);
    s = fmt_diff(AGENT_REPORT_SARIF, d);
    assert_int_equal(strncmp(s, sarif_head, strlen(sarif_head)), 0);
    assert_string_equal(s + strlen(sarif_head),
                        "\"columnKind\":\"utf16CodeUnits\",\"results\":[{\"ruleId\":\"ctx/suggest\",\"ruleIndex\":1,"
                        "\"level\":\"note\",\"message\":{\"text\":\"Suggested change to line 3.\"},\"locations\":"
                        "[{\"physicalLocation\":{\"artifactLocation\":{\"uri\":\"src/a.c\",\"uriBaseId\":\"SRCROOT\"},"
                        "\"region\":{\"startLine\":3,\"startColumn\":1,\"endLine\":3,\"endColumn\":29}}}],\"fixes\":"
                        "[{\"description\":{\"text\":\"Apply ctx's suggested change\"},\"artifactChanges\":"
                        "[{\"artifactLocation\":{\"uri\":\"src/a.c\",\"uriBaseId\":\"SRCROOT\"},\"replacements\":"
                        "[{\"deletedRegion\":{\"startLine\":3,\"startColumn\":1,\"endLine\":4,\"endColumn\":1},"
                        "\"insertedContent\":{\"text\":\"    for (i = 0; i < n; i++)\\n\"}}]}]}]},{\"ruleId\":"
                        "\"ctx/suggest\",\"ruleIndex\":1,\"level\":\"note\",\"message\":{\"text\":\"Suggested "
                        "insertion before line 5.\"},\"locations\":[{\"physicalLocation\":{\"artifactLocation\":"
                        "{\"uri\":\"src/a.c\",\"uriBaseId\":\"SRCROOT\"},\"region\":{\"startLine\":4,\"startColumn\":1,"
                        "\"endLine\":4,\"endColumn\":16}}}],\"fixes\":[{\"description\":{\"text\":\"Insert the "
                        "suggested lines\"},\"artifactChanges\":[{\"artifactLocation\":{\"uri\":\"src/a.c\","
                        "\"uriBaseId\":\"SRCROOT\"},\"replacements\":[{\"deletedRegion\":{\"startLine\":5,"
                        "\"startColumn\":1,\"endLine\":5,\"endColumn\":1},\"insertedContent\":{\"text\":"
                        "\"    /* done */\\n\"}}]}]}]}]}]}\n");
    free(s);
    /* Nothing to suggest. */
    s = fmt_diff(AGENT_REPORT_GITHUB, "");
    assert_string_equal(s, "{\"body\":\"ctx suggest: no changes to suggest.\",\"event\":\"COMMENT\",\"comments\":[]}\n");
    free(s);
    s = fmt_diff(AGENT_REPORT_RDJSONL, "\n");
    assert_string_equal(s, "");
    free(s);
}

/* Every suggestion format, applied to the old file, gives the new file of the suggest diff. */
static void test_diff_suggestions_reproduce(void **state)
{
    (void)state;
    char *d = suggest_diff();
    /* The created file and the file deletion-free rename cases have no old lines: only m.c. */
    assert_non_null(strstr(d, "created.c"));
    /* github */
    char *s = fmt_diff(AGENT_REPORT_GITHUB, d);
    cJSON *j = cJSON_Parse(s);
    assert_non_null(j);
    cJSON *cs = cJSON_GetObjectItem(j, "comments");
    struct edit ed[16];
    size_t n = 0;
    cJSON *c;
    cJSON_ArrayForEach(c, cs) {
        assert_string_equal(cJSON_GetObjectItem(c, "path")->valuestring, "src/m.c");
        assert_string_equal(cJSON_GetObjectItem(c, "side")->valuestring, "RIGHT");
        unsigned line = num(c, "line");
        unsigned start = cJSON_GetObjectItem(c, "start_line") ? num(c, "start_line") : line;
        const char *body = cJSON_GetObjectItem(c, "body")->valuestring;
        const char *b = strstr(body, "```suggestion\n");
        assert_non_null(b);
        b += strlen("```suggestion\n");
        const char *z = strstr(b, "```\n");
        assert_non_null(z);
        assert_true(n < 16);
        char *block = strndup(b, (size_t)(z - b));
        linewise(old_c, start, line, block, &ed[n]);
        free(block);
        n++;
    }
    assert_int_equal(n, 4);
    cJSON_Delete(j);
    free(s);
    char *got = apply_edits(old_c, ed, n);
    /* GitHub suggestions cannot add a final newline the old last line lacked: linewise ranges
     * end before the line break. */
    assert_string_equal(got, "#include <stdio.h>\n#include <stdlib.h>\n\nint add(int a, int b)\n{\n"
                             "    return a + b; /* \xc3\xa9t\xc3\xa9 */\n}\n\nint main(void)\n{\n"
                             "    printf(\"%d\\n\", add(1, 2));\n}\n/* end \xf0\x9f\x98\x81 */");
    free(got);
    /* rdjsonl: linewise ranges, text without the final line break */
    s = fmt_diff(AGENT_REPORT_RDJSONL, d);
    n = 0;
    for (char *line = s, *nl; *line; line = nl + 1) {
        nl = strchr(line, '\n');
        assert_non_null(nl);
        *nl = 0;
        cJSON *o = cJSON_Parse(line);
        assert_non_null(o);
        cJSON *sg = cJSON_GetArrayItem(cJSON_GetObjectItem(o, "suggestions"), 0);
        cJSON *r = cJSON_GetObjectItem(sg, "range");
        unsigned st = num(cJSON_GetObjectItem(r, "start"), "line"), en = num(cJSON_GetObjectItem(r, "end"), "line");
        /* reviewdog writes the text + "\n" as the block, or an empty block for "". */
        const char *txt = cJSON_GetObjectItem(sg, "text")->valuestring;
        char block[512];
        snprintf(block, sizeof block, "%s%s", txt, txt[0] ? "\n" : "");
        linewise(old_c, st, en, block, &ed[n]);
        n++;
        cJSON_Delete(o);
    }
    assert_int_equal(n, 4);
    free(s);
    got = apply_edits(old_c, ed, n);
    assert_string_equal(got, "#include <stdio.h>\n#include <stdlib.h>\n\nint add(int a, int b)\n{\n"
                             "    return a + b; /* \xc3\xa9t\xc3\xa9 */\n}\n\nint main(void)\n{\n"
                             "    printf(\"%d\\n\", add(1, 2));\n}\n/* end \xf0\x9f\x98\x81 */");
    free(got);
    /* SARIF: exact regions with UTF-16 columns reproduce the new file byte for byte, final newline
     * included. */
    s = fmt_diff(AGENT_REPORT_SARIF, d);
    j = cJSON_Parse(s);
    assert_non_null(j);
    cJSON *res = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "runs"), 0), "results");
    n = 0;
    cJSON_ArrayForEach(c, res) {
        cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(c, "fixes"), 0),
                                                           "artifactChanges"), 0);
        assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(ch, "artifactLocation"), "uri")->valuestring,
                            "src/m.c");
        cJSON *rp = cJSON_GetArrayItem(cJSON_GetObjectItem(ch, "replacements"), 0);
        cJSON *dr = cJSON_GetObjectItem(rp, "deletedRegion");
        ed[n].from = sarif_off(old_c, num(dr, "startLine"), num(dr, "startColumn"));
        ed[n].to = sarif_off(old_c, num(dr, "endLine"), num(dr, "endColumn"));
        ed[n].text = strdup(cJSON_GetObjectItem(cJSON_GetObjectItem(rp, "insertedContent"), "text")->valuestring);
        n++;
    }
    assert_int_equal(n, 4);
    cJSON_Delete(j);
    free(s);
    got = apply_edits(old_c, ed, n);
    assert_string_equal(got, new_c);
    free(got);
    free(d);
}

/* ---- rdjsonl against reviewdog's Diagnostic message (proto/rdf/reviewdog.proto) ---- */

static bool only_keys(const cJSON *o, const char *const *keys)
{
    if (!cJSON_IsObject(o))
        return false;
    const cJSON *c;
    cJSON_ArrayForEach(c, o) {
        bool ok = false;
        for (size_t i = 0; keys[i]; i++)
            ok |= strcmp(c->string, keys[i]) == 0;
        if (!ok)
            return false;
    }
    return true;
}

static void check_position(const cJSON *p)
{
    static const char *const k[] = {"line", "column", NULL};
    assert_true(only_keys(p, k));
    const cJSON *l = cJSON_GetObjectItem(p, "line"), *c = cJSON_GetObjectItem(p, "column");
    assert_true(cJSON_IsNumber(l) && l->valuedouble >= 1 && l->valuedouble == (int)l->valuedouble);
    if (c)
        assert_true(cJSON_IsNumber(c) && c->valuedouble >= 1);
}

static void check_range(const cJSON *r)
{
    static const char *const k[] = {"start", "end", NULL};
    assert_true(only_keys(r, k));
    check_position(cJSON_GetObjectItem(r, "start"));
    if (cJSON_GetObjectItem(r, "end"))
        check_position(cJSON_GetObjectItem(r, "end"));
}

static void check_rdjsonl(const char *text, size_t want_lines)
{
    static const char *const kd[] = {"message", "location", "severity", "source", "code", "suggestions",
                                     "original_output", NULL};
    static const char *const kl[] = {"path", "range", NULL};
    static const char *const ks[] = {"name", "url", NULL};
    static const char *const kg[] = {"range", "text", NULL};
    size_t lines = 0;
    char *copy = strdup(text);
    for (char *line = copy, *nl; *line; line = nl + 1) {
        nl = strchr(line, '\n');
        assert_non_null(nl); /* every diagnostic ends its line */
        *nl = 0;
        cJSON *d = cJSON_Parse(line);
        assert_non_null(d);
        assert_true(only_keys(d, kd));
        assert_true(cJSON_IsString(cJSON_GetObjectItem(d, "message")));
        cJSON *loc = cJSON_GetObjectItem(d, "location");
        assert_true(only_keys(loc, kl));
        const char *path = cJSON_GetObjectItem(loc, "path")->valuestring;
        assert_true(path[0] && path[0] != '/' && !strchr(path, '\\') && strncmp(path, "./", 2) != 0);
        cJSON *range = cJSON_GetObjectItem(loc, "range");
        check_range(range);
        const char *sev = cJSON_GetObjectItem(d, "severity")->valuestring;
        assert_true(!strcmp(sev, "ERROR") || !strcmp(sev, "WARNING") || !strcmp(sev, "INFO"));
        assert_true(only_keys(cJSON_GetObjectItem(d, "source"), ks));
        cJSON *sg = cJSON_GetObjectItem(d, "suggestions"), *s;
        if (sg) {
            assert_true(cJSON_IsArray(sg));
            cJSON_ArrayForEach(s, sg) {
                assert_true(only_keys(s, kg));
                check_range(cJSON_GetObjectItem(s, "range"));
                assert_true(cJSON_IsString(cJSON_GetObjectItem(s, "text")));
                /* reviewdog's PR reporters require the suggestion's lines to be the diagnostic's. */
                for (int k = 0; k < 2; k++) {
                    const char *w = k ? "end" : "start";
                    assert_int_equal(num(cJSON_GetObjectItem(cJSON_GetObjectItem(s, "range"), w), "line"),
                                     num(cJSON_GetObjectItem(range, w), "line"));
                }
            }
        }
        cJSON_Delete(d);
        lines++;
    }
    free(copy);
    assert_int_equal(lines, want_lines);
}

static void test_rdjsonl_fields(void **state)
{
    (void)state;
    make_findings();
    char *s = fmt_findings(AGENT_REPORT_RDJSONL, fixture, 3);
    check_rdjsonl(s, 3);
    free(s);
    char *d = suggest_diff();
    s = fmt_diff(AGENT_REPORT_RDJSONL, d);
    check_rdjsonl(s, 4);
    free(s);
    free(d);
}

/* ---- SARIF against the official schema ---- */

static void test_sarif_schema(void **state)
{
    (void)state;
    const char *src = getenv("CTX_SOURCE_ROOT");
    if (!src)
        src = CTX_SOURCE_ROOT;
    char dir[600];
    snprintf(dir, sizeof dir, "%s/tests/report/sarif-schema", src);
    char mod[700];
    snprintf(mod, sizeof mod, "%s/node_modules/ajv-draft-04/package.json", dir);
    bool have_node = system("node --version >/dev/null 2>&1") == 0;
    if (!have_node || access(mod, R_OK) != 0) {
        /* CI installs both (scripts/setup: node, `npm ci` in every folder of scripts/npm-dirs). */
        if (getenv("CI"))
            fail_msg("node or %s/node_modules missing: run npm ci --ignore-scripts there", dir);
        print_message("# SKIP: node or tests/report/sarif-schema/node_modules missing\n");
        skip();
    }
    make_findings();
    char *logs[4];
    logs[0] = fmt_findings(AGENT_REPORT_SARIF, fixture, 3);
    logs[1] = fmt_findings(AGENT_REPORT_SARIF, NULL, 0);
    char *d = suggest_diff();
    logs[2] = fmt_diff(AGENT_REPORT_SARIF, d);
    logs[3] = fmt_diff(AGENT_REPORT_SARIF, "");
    free(d);
    char files[2048] = "";
    for (int i = 0; i < 4; i++) {
        char name[32];
        snprintf(name, sizeof name, "log%d.sarif", i);
        write_file(work, name, logs[i]);
        free(logs[i]);
        size_t l = strlen(files);
        snprintf(files + l, sizeof files - l, " %s/%s", work, name);
    }
    /* A broken log must be rejected, or the validator proves nothing. */
    write_file(work, "bad.sarif", "{\"version\":\"2.1.0\",\"runs\":[{\"tool\":{\"driver\":{\"name\":\"x\"}},"
                                  "\"results\":[{\"message\":{\"text\":\"m\"},\"level\":\"fatal\"}]}]}");
    test_sh("node %s/validate.js%s > %s/validate.out 2>&1 || (cat %s/validate.out; false)", dir, files, work, work);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "node %s/validate.js %s/bad.sarif >/dev/null 2>&1", dir, work);
    assert_int_not_equal(system(cmd), 0);
}

/* ---- errors ---- */

static void test_errors(void **state)
{
    (void)state;
    char *out = (char *)1;
    struct ctx_err e = {0};
    struct agent_finding missing = {"src/nope.c", 1, 1, AGENT_SEV_ERROR, "m", "x\n"};
    assert_int_equal(agent_report_findings(AGENT_REPORT_DIFF, &missing, 1, root, &out, &e), CTX_ENOTFOUND);
    assert_null(out);
    assert_non_null(strstr(e.msg, "src/nope.c"));
    struct agent_finding past = {"src/b.c", 2, 9, AGENT_SEV_ERROR, "m", "x\n"};
    assert_int_equal(agent_report_findings(AGENT_REPORT_DIFF, &past, 1, root, &out, &e), CTX_ERANGE);
    assert_non_null(strstr(e.msg, "src/b.c: finding at lines 2-9 is past the end of the file (2 lines)"));
    assert_int_equal(agent_report_findings(AGENT_REPORT_DIFF, &past, 1, NULL, &out, &e), CTX_EINVAL);
    /* SARIF without the file: line-wise regions, no columns, still a result. */
    char *s = NULL;
    assert_int_equal(agent_report_findings(AGENT_REPORT_SARIF, &missing, 1, root, &s, &e), 0);
    assert_non_null(strstr(s, "\"region\":{\"startLine\":1,\"endLine\":1}"));
    assert_non_null(strstr(s, "\"deletedRegion\":{\"startLine\":1,\"endLine\":1},\"insertedContent\":{\"text\":\"x\"}"));
    free(s);
    assert_int_equal(agent_report_diff(AGENT_REPORT_SARIF, "--- a/x\n+++ b/x\n@@ -1,2 +1 @@\n-a\n", &out, &e),
                     CTX_EFORMAT);
    assert_non_null(strstr(e.msg, "suggest diff"));
    assert_int_equal(agent_report_diff((enum agent_report_format)42, "", &out, &e), CTX_EINVAL);
    assert_int_equal(agent_report_findings((enum agent_report_format)42, NULL, 0, root, &out, &e), CTX_EINVAL);
}

static void test_fuzz_entry(void **state)
{
    (void)state;
    static const char *const nasty[] = {
        "",
        "\n\n",
        "--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b",
        "--- a/x\n+++ b/x\n@@ -0,0 +1 @@\n+a\n",
        "--- a/x\n+++ b/x\n@@ -4294967295,1 +1,1 @@\n-a\n+b\n",
        "--- a/x\n+++ b/y\n@@ -1 +1 @@\n-a\n+b\n",
        "--- /dev/null\n+++ b/x\n@@ -0,0 +1 @@\n+a\n",
        "--- a/x\n+++ /dev/null\n@@ -1 +0,0 @@\n-a\n",
        "--- a/x\n+++ b/x\n@@ -1,3 +1,3 @@\n-a\n\\ No newline at end of file\n+b\n+c\n+d\n-e\n-f\n",
        "--- a/\xff\xfe\n+++ b/\xff\xfe\n@@ -1 +1 @@\n-\xf0\x9f\n+```````\n",
        "```findings\n[{\"file\":\"a\",\"line\":1,\"severity\":\"error\",\"message\":\"m\",\"replacement\":\"````\"}]\n```",
        "```findings\n[{\"file\":\"/\",\"line\":4294967295,\"end_line\":1,\"severity\":\"info\",\"message\":\"\"}]\n```",
        "```findings\n[{\"file\":\"./././\\\\\\\\a b%\",\"line\":1,\"severity\":\"warning\",\"message\":\"\\u0000\"}]\n```",
        "```findings\n[]\n```",
    };
    for (size_t i = 0; i < sizeof nasty / sizeof *nasty; i++)
        agent_fuzz_report_one((const uint8_t *)nasty[i], strlen(nasty[i]));
    uint8_t buf[2048];
    uint32_t x = 777;
    for (int round = 0; round < 200; round++) {
        size_t n = (size_t)(x % sizeof buf);
        static const char alpha[] = "-+ @\\\n,0123456789ab/`";
        for (size_t i = 0; i < n; i++) {
            x = x * 1103515245u + 12345u;
            buf[i] = (x >> 16) % 4 ? (uint8_t)alpha[(x >> 8) % (sizeof alpha - 1)] : (uint8_t)(x >> 3);
        }
        static const char head[] = "--- a/f\n+++ b/f\n@@ -1,3 +1,3 @@\n";
        if (n > sizeof head && round % 2)
            memcpy(buf, head, sizeof head - 1);
        agent_fuzz_report_one(buf, n);
        x = x * 1103515245u + 12345u;
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format_names),
        cmocka_unit_test(test_findings_exact),
        cmocka_unit_test(test_findings_edges),
        cmocka_unit_test(test_findings_diff_applies),
        cmocka_unit_test(test_diff_formats_exact),
        cmocka_unit_test(test_diff_suggestions_reproduce),
        cmocka_unit_test(test_rdjsonl_fields),
        cmocka_unit_test(test_sarif_schema),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_fuzz_entry),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
