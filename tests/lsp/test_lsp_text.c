/* Unit: LSP position arithmetic on UTF-8 text (UTF-16 units by default, astral characters, CRLF and
 * lone CR, clamping), edits, and the document store's didOpen/didChange/didSave/didClose. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "json.h"
#include "lsp_docs.h"
#include "lsp_text.h"

#define EMOJI "\xF0\x9F\x98\x80" /* U+1F600: 4 bytes, 2 UTF-16 units */
#define EACUTE "\xC3\xA9"        /* U+00E9: 2 bytes, 1 unit */

static size_t off(const char *t, uint32_t line, uint32_t ch, enum lsp_encoding enc)
{
    return lsp_text_offset(t, strlen(t), (struct lsp_pos){line, ch}, enc);
}

static void test_offsets_utf16(void **state)
{
    (void)state;
    const char *t = "a" EMOJI "b" EACUTE "c";
    assert_int_equal(off(t, 0, 0, LSP_ENC_UTF16), 0);
    assert_int_equal(off(t, 0, 1, LSP_ENC_UTF16), 1);
    assert_int_equal(off(t, 0, 2, LSP_ENC_UTF16), 1); /* between the surrogates: rounds down */
    assert_int_equal(off(t, 0, 3, LSP_ENC_UTF16), 5);
    assert_int_equal(off(t, 0, 4, LSP_ENC_UTF16), 6);
    assert_int_equal(off(t, 0, 5, LSP_ENC_UTF16), 8);
    assert_int_equal(off(t, 0, 6, LSP_ENC_UTF16), 9);
    assert_int_equal(off(t, 0, 99, LSP_ENC_UTF16), 9); /* past the line: its end */
    assert_int_equal(off(t, 5, 0, LSP_ENC_UTF16), 9);  /* past the last line: the end */
    /* the same text in the other encodings */
    assert_int_equal(off(t, 0, 3, LSP_ENC_UTF8), 1);   /* inside the emoji's bytes: rounds down */
    assert_int_equal(off(t, 0, 5, LSP_ENC_UTF8), 5);
    assert_int_equal(off(t, 0, 7, LSP_ENC_UTF8), 6);
    assert_int_equal(off(t, 0, 2, LSP_ENC_UTF32), 5);
    assert_int_equal(off(t, 0, 4, LSP_ENC_UTF32), 8);
    assert_int_equal(lsp_text_units(t, strlen(t), LSP_ENC_UTF16), 6);
    assert_int_equal(lsp_text_units(t, strlen(t), LSP_ENC_UTF8), 9);
    assert_int_equal(lsp_text_units(t, strlen(t), LSP_ENC_UTF32), 5);
}

static void test_line_endings(void **state)
{
    (void)state;
    const char *t = "ab\r\ncd\r\n" EMOJI "\rx\ny";
    /* lines: "ab" [0,2) "\r\n"; "cd" [4,6) "\r\n"; EMOJI [8,12) "\r"; "x" [13,14) "\n"; "y" [15,16) */
    assert_int_equal(off(t, 1, 0, LSP_ENC_UTF16), 4);
    assert_int_equal(off(t, 1, 9, LSP_ENC_UTF16), 6); /* clamps before "\r\n", never inside it */
    assert_int_equal(off(t, 2, 2, LSP_ENC_UTF16), 12);
    assert_int_equal(off(t, 3, 0, LSP_ENC_UTF16), 13); /* a lone "\r" ends a line */
    assert_int_equal(off(t, 4, 1, LSP_ENC_UTF16), 16);
    assert_int_equal(off(t, 5, 0, LSP_ENC_UTF16), 16);
    assert_int_equal(lsp_text_lines(t, strlen(t)), 5);
    assert_int_equal(lsp_text_lines("", 0), 1);
    assert_int_equal(lsp_text_lines("a\n", 2), 2);
    assert_int_equal(lsp_text_lines("a\r\n\r\n", 5), 3);
    /* a final terminator opens an empty last line that can be addressed */
    assert_int_equal(off("a\r\n", 1, 0, LSP_ENC_UTF16), 3);
    assert_int_equal(off("a\r\n", 2, 0, LSP_ENC_UTF16), 3);
    assert_int_equal(off("", 3, 3, LSP_ENC_UTF16), 0);
}

static void test_positions_roundtrip(void **state)
{
    (void)state;
    const char *t = "ab\r\n" EMOJI "c\rd";
    size_t len = strlen(t);
    struct lsp_pos p = lsp_text_position(t, len, 3, LSP_ENC_UTF16); /* between \r and \n */
    assert_int_equal(p.line, 0);
    assert_int_equal(p.character, 2);
    p = lsp_text_position(t, len, 8, LSP_ENC_UTF16); /* after the emoji */
    assert_int_equal(p.line, 1);
    assert_int_equal(p.character, 2);
    p = lsp_text_position(t, len, 6, LSP_ENC_UTF16); /* inside it: its start */
    assert_int_equal(p.character, 0);
    p = lsp_text_position(t, len, len, LSP_ENC_UTF16);
    assert_int_equal(p.line, 2);
    assert_int_equal(p.character, 1);
    p = lsp_text_position("a\n", 2, 2, LSP_ENC_UTF16);
    assert_int_equal(p.line, 1);
    assert_int_equal(p.character, 0);
    /* every character boundary survives offset -> position -> offset */
    size_t bounds[] = {0, 1, 2, 4, 8, 9, 10, 11};
    for (size_t i = 0; i < sizeof bounds / sizeof bounds[0]; i++)
        for (int enc = 0; enc < 3; enc++) {
            struct lsp_pos q = lsp_text_position(t, len, bounds[i], (enum lsp_encoding)enc);
            assert_int_equal(lsp_text_offset(t, len, q, (enum lsp_encoding)enc), bounds[i]);
        }
}

static void test_invalid_utf8_counts_per_byte(void **state)
{
    (void)state;
    const char *t = "\xff\xC3" "a\xED\xA0\x80" "b"; /* 0xFF, truncated C3, an encoded surrogate */
    assert_int_equal(off(t, 0, 1, LSP_ENC_UTF16), 1);
    assert_int_equal(off(t, 0, 2, LSP_ENC_UTF16), 2);
    assert_int_equal(off(t, 0, 3, LSP_ENC_UTF16), 3);
    assert_int_equal(off(t, 0, 6, LSP_ENC_UTF16), 6); /* ED A0 80 is three invalid bytes */
    assert_int_equal(lsp_text_units(t, strlen(t), LSP_ENC_UTF16), 7);
}

static void edit(struct lsp_text *t, uint32_t l0, uint32_t c0, uint32_t l1, uint32_t c1, const char *ins, int want)
{
    struct ctx_err e = {0};
    int rc = lsp_text_edit(t, (struct lsp_pos){l0, c0}, (struct lsp_pos){l1, c1}, ins, strlen(ins), LSP_ENC_UTF16, &e);
    if (rc != want)
        fail_msg("edit %u:%u-%u:%u: rc %d (%s), wanted %d", l0, c0, l1, c1, rc, e.msg, want);
}

static void test_edits(void **state)
{
    (void)state;
    struct lsp_text t = {0};
    struct ctx_err e = {0};
    assert_int_equal(lsp_text_set(&t, "a" EMOJI "b\r\ncd", 10, &e), 0);
    edit(&t, 0, 3, 0, 3, "Z", 0); /* just after the emoji */
    assert_string_equal(t.data, "a" EMOJI "Zb\r\ncd");
    edit(&t, 0, 1, 0, 3, EACUTE, 0); /* replace the emoji */
    assert_string_equal(t.data, "a" EACUTE "Zb\r\ncd");
    edit(&t, 0, 4, 1, 0, "", 0); /* join the lines across CRLF */
    assert_string_equal(t.data, "a" EACUTE "Zbcd");
    edit(&t, 0, 6, 0, 6, "\r\n" EMOJI, 0); /* append at the end */
    edit(&t, 1, 2, 1, 2, "!", 0);
    assert_string_equal(t.data, "a" EACUTE "Zbcd\r\n" EMOJI "!");
    edit(&t, 0, 3, 0, 1, "x", CTX_EINVAL); /* start after end: refused, text unchanged */
    assert_string_equal(t.data, "a" EACUTE "Zbcd\r\n" EMOJI "!");
    edit(&t, 0, 0, 99, 99, "", 0); /* clear everything */
    assert_int_equal(t.len, 0);
    assert_string_equal(t.data, "");
    lsp_text_free(&t);
}

static cJSON *J(const char *s)
{
    struct ctx_err e = {0};
    cJSON *v = ctx_json_parse(s, strlen(s), "test", &e);
    if (!v)
        fail_msg("bad test JSON: %s", e.msg);
    return v;
}

static int call(int (*fn)(struct lsp_docs *, const cJSON *, struct ctx_err *), struct lsp_docs *d, const char *p,
                struct ctx_err *e)
{
    cJSON *v = J(p);
    memset(e, 0, sizeof *e);
    int rc = fn(d, v, e);
    cJSON_Delete(v);
    return rc;
}

static void test_docs_lifecycle(void **state)
{
    (void)state;
    struct lsp_docs d = {0};
    struct ctx_err e;
    assert_int_equal(call(lsp_docs_open, &d,
                          "{\"textDocument\":{\"uri\":\"file:///a.c\",\"languageId\":\"c\",\"version\":1,"
                          "\"text\":\"int \\ud83d\\ude00;\\r\\nx\"}}", &e), 0);
    struct lsp_doc *doc = lsp_docs_find(&d, "file:///a.c");
    assert_non_null(doc);
    assert_string_equal(doc->text.data, "int " EMOJI ";\r\nx");
    assert_false(doc->dirty);
    /* two incremental changes in one notification, the second relative to the first's result */
    assert_int_equal(call(lsp_docs_change, &d,
                          "{\"textDocument\":{\"uri\":\"file:///a.c\",\"version\":2},\"contentChanges\":["
                          "{\"range\":{\"start\":{\"line\":0,\"character\":4},\"end\":{\"line\":0,\"character\":6}},"
                          "\"rangeLength\":2,\"text\":\"y\"},"
                          "{\"range\":{\"start\":{\"line\":1,\"character\":1},\"end\":{\"line\":1,\"character\":1}},"
                          "\"text\":\" = 1;\"}]}", &e), 0);
    assert_string_equal(doc->text.data, "int y;\r\nx = 1;");
    assert_int_equal(doc->version, 2);
    assert_true(doc->dirty);
    /* a version that does not increase: refused, and the document is out of step */
    assert_int_equal(call(lsp_docs_change, &d,
                          "{\"textDocument\":{\"uri\":\"file:///a.c\",\"version\":2},\"contentChanges\":[{\"text\":\"z\"}]}",
                          &e), CTX_EPROTO);
    assert_non_null(strstr(e.msg, "version 2 does not follow 2"));
    assert_true(doc->desync);
    assert_string_equal(doc->text.data, "int y;\r\nx = 1;");
    /* incremental edits cannot apply to text we do not have */
    assert_int_equal(call(lsp_docs_change, &d,
                          "{\"textDocument\":{\"uri\":\"file:///a.c\",\"version\":3},\"contentChanges\":["
                          "{\"range\":{\"start\":{\"line\":0,\"character\":0},\"end\":{\"line\":0,\"character\":0}},"
                          "\"text\":\"q\"}]}", &e), CTX_EPROTO);
    assert_true(doc->desync);
    /* a full text resynchronises, and the edits after it in the same notification apply */
    assert_int_equal(call(lsp_docs_change, &d,
                          "{\"textDocument\":{\"uri\":\"file:///a.c\",\"version\":4},\"contentChanges\":["
                          "{\"range\":{\"start\":{\"line\":0,\"character\":0},\"end\":{\"line\":0,\"character\":0}},"
                          "\"text\":\"lost\"},{\"text\":\"full\\n\"},"
                          "{\"range\":{\"start\":{\"line\":1,\"character\":0},\"end\":{\"line\":1,\"character\":0}},"
                          "\"text\":\"tail\"}]}", &e), 0);
    assert_false(doc->desync);
    assert_string_equal(doc->text.data, "full\ntail");
    /* save with text: the buffer is what is on disk */
    assert_int_equal(call(lsp_docs_save, &d, "{\"textDocument\":{\"uri\":\"file:///a.c\"},\"text\":\"disk\"}", &e), 0);
    assert_false(doc->dirty);
    assert_string_equal(doc->text.data, "disk");
    cJSON *sum = lsp_docs_summary(&d);
    char *s = cJSON_PrintUnformatted(sum);
    assert_string_equal(s, "[{\"uri\":\"file:///a.c\",\"languageId\":\"c\",\"version\":4,\"bytes\":4,\"lines\":1,"
                           "\"dirty\":false,\"desync\":false}]");
    cJSON_free(s);
    cJSON_Delete(sum);
    assert_int_equal(call(lsp_docs_close, &d, "{\"textDocument\":{\"uri\":\"file:///a.c\"}}", &e), 0);
    assert_null(lsp_docs_find(&d, "file:///a.c"));
    assert_int_equal(d.n, 0);
    assert_int_equal(call(lsp_docs_close, &d, "{\"textDocument\":{\"uri\":\"file:///a.c\"}}", &e), CTX_ENOTFOUND);
    assert_int_equal(call(lsp_docs_change, &d,
                          "{\"textDocument\":{\"uri\":\"file:///b.c\",\"version\":1},\"contentChanges\":[]}", &e),
                     CTX_ENOTFOUND);
    assert_non_null(strstr(e.msg, "file:///b.c, which is not open"));
    lsp_docs_free(&d);
}

static void test_docs_malformed(void **state)
{
    (void)state;
    struct lsp_docs d = {0};
    struct ctx_err e;
    assert_int_equal(call(lsp_docs_open, &d,
                          "{\"textDocument\":{\"uri\":\"u\",\"version\":1,\"text\":\"abc\\ndef\"}}", &e), 0);
    static const struct {
        const char *params;
        const char *msg;
    } bad[] = {
        {"[]", "didChange: params must be an object"},
        {"{\"textDocument\":{\"uri\":\"u\",\"version\":2}}", "didChange.contentChanges must be an array"},
        {"{\"textDocument\":{\"uri\":\"u\",\"version\":2.5},\"contentChanges\":[]}", "version must be an integer"},
        {"{\"textDocument\":{\"uri\":\"u\",\"version\":4294967296},\"contentChanges\":[]}", "not a 32-bit integer"},
        {"{\"textDocument\":{\"version\":2},\"contentChanges\":[]}", "uri"},
        {"{\"textDocument\":{\"uri\":\"u\",\"version\":2},\"contentChanges\":[{\"text\":\"x\"},5]}",
         "contentChanges[1] must be an object"},
        {"{\"textDocument\":{\"uri\":\"u\",\"version\":2},\"contentChanges\":[{\"range\":{\"start\":{\"line\":0,"
         "\"character\":0},\"end\":{\"line\":0,\"character\":0}}}]}", "contentChanges[0].text"},
        {"{\"textDocument\":{\"uri\":\"u\",\"version\":2},\"contentChanges\":[{\"range\":{\"start\":{\"line\":-1,"
         "\"character\":0},\"end\":{\"line\":0,\"character\":0}},\"text\":\"\"}]}",
         "contentChanges[0].range.start: line -1"},
        {"{\"textDocument\":{\"uri\":\"u\",\"version\":2},\"contentChanges\":[{\"range\":{\"start\":{\"line\":1,"
         "\"character\":0},\"end\":{\"line\":0,\"character\":9}},\"text\":\"\"}]}", "start 1:0 comes after end 0:9"},
        {"{\"textDocument\":{\"uri\":\"u\",\"version\":2},\"contentChanges\":[{\"range\":{\"end\":{\"line\":0,"
         "\"character\":0}},\"text\":\"\"}]}", "range.start must be an object"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = call(lsp_docs_change, &d, bad[i].params, &e);
        assert_int_equal(rc, CTX_EINVAL);
        if (!strstr(e.msg, bad[i].msg))
            fail_msg("case %zu: \"%s\" lacks \"%s\"", i, e.msg, bad[i].msg);
        /* refused whole: nothing applied, version unchanged, still in step */
        struct lsp_doc *doc = lsp_docs_find(&d, "u");
        assert_string_equal(doc->text.data, "abc\ndef");
        assert_int_equal(doc->version, 1);
        assert_false(doc->desync);
    }
    assert_int_equal(call(lsp_docs_open, &d, "{\"textDocument\":{\"uri\":\"v\",\"version\":1}}", &e), CTX_EINVAL);
    assert_non_null(strstr(e.msg, "didOpen.textDocument.text"));
    lsp_docs_free(&d);
}

static void test_docs_utf8_encoding(void **state)
{
    (void)state;
    struct lsp_docs d = {.enc = LSP_ENC_UTF8};
    struct ctx_err e;
    assert_int_equal(call(lsp_docs_open, &d,
                          "{\"textDocument\":{\"uri\":\"u\",\"version\":1,\"text\":\"\\ud83d\\ude00x\"}}", &e), 0);
    /* in utf-8 mode, character 4 is just after the emoji's four bytes */
    assert_int_equal(call(lsp_docs_change, &d,
                          "{\"textDocument\":{\"uri\":\"u\",\"version\":2},\"contentChanges\":["
                          "{\"range\":{\"start\":{\"line\":0,\"character\":4},\"end\":{\"line\":0,\"character\":5}},"
                          "\"text\":\"y\"}]}", &e), 0);
    assert_string_equal(lsp_docs_find(&d, "u")->text.data, EMOJI "y");
    lsp_docs_free(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_offsets_utf16),
        cmocka_unit_test(test_line_endings),
        cmocka_unit_test(test_positions_roundtrip),
        cmocka_unit_test(test_invalid_utf8_counts_per_byte),
        cmocka_unit_test(test_edits),
        cmocka_unit_test(test_docs_lifecycle),
        cmocka_unit_test(test_docs_malformed),
        cmocka_unit_test(test_docs_utf8_encoding),
    };
    return cmocka_run_group_tests_name("lsp-text", tests, NULL, NULL);
}
