/* Unit: the LSP Content-Length framer on good, split, odd and hostile streams, and the fuzz entry on
 * a corpus of nasty inputs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lsp_framing.h"

int lsp_fuzz_one(const uint8_t *data, size_t size);

#define MAXEV 32

struct events {
    int n;
    char kind[MAXEV];      /* 'm' message, 'e' error */
    char text[MAXEV][600]; /* body or error message */
    size_t len[MAXEV];
    int code[MAXEV];
    int stop_after;        /* stop when this many events were seen (0: never) */
};

static int on_msg(void *ud, char *body, size_t len)
{
    struct events *ev = ud;
    assert_true(ev->n < MAXEV);
    assert_int_equal(body[len], 0);
    ev->kind[ev->n] = 'm';
    snprintf(ev->text[ev->n], sizeof ev->text[0], "%.*s", (int)len, body);
    ev->len[ev->n] = len;
    ev->n++;
    return ev->stop_after && ev->n >= ev->stop_after;
}

static int on_err(void *ud, const struct ctx_err *e)
{
    struct events *ev = ud;
    assert_true(ev->n < MAXEV);
    ev->kind[ev->n] = 'e';
    snprintf(ev->text[ev->n], sizeof ev->text[0], "%s", e->msg);
    ev->code[ev->n] = e->code;
    ev->n++;
    return ev->stop_after && ev->n >= ev->stop_after;
}

/* Feed s in pieces of `step` bytes (0: all at once) through a framer with the given limits. */
static void run(const char *s, size_t len, size_t step, size_t max_header, size_t max_body, struct events *ev)
{
    memset(ev, 0, sizeof *ev);
    struct lsp_framer f;
    lsp_framer_init(&f, max_header, max_body);
    struct lsp_framer_cb cb = {on_msg, on_err, ev};
    if (!step)
        step = len ? len : 1;
    for (size_t off = 0; off < len; off += step) {
        size_t k = len - off < step ? len - off : step;
        assert_int_equal(lsp_framer_feed(&f, s + off, k, &cb), 0);
    }
    lsp_framer_free(&f);
}

static void run_str(const char *s, size_t step, struct events *ev)
{
    run(s, strlen(s), step, 0, 0, ev);
}

static void test_one_message_any_split(void **state)
{
    (void)state;
    const char *s = "Content-Length: 17\r\n\r\n{\"jsonrpc\":\"2.0\"}";
    for (size_t step = 0; step <= 23; step++) {
        struct events ev;
        run_str(s, step, &ev);
        assert_int_equal(ev.n, 1);
        assert_int_equal(ev.kind[0], 'm');
        assert_int_equal(ev.len[0], 17);
        assert_string_equal(ev.text[0], "{\"jsonrpc\":\"2.0\"}");
    }
}

static void test_back_to_back_and_empty(void **state)
{
    (void)state;
    struct events ev;
    run_str("Content-Length: 2\r\n\r\n{}Content-Length: 0\r\n\r\nContent-Length: 3\r\n\r\n[1]", 0, &ev);
    assert_int_equal(ev.n, 3);
    assert_string_equal(ev.text[0], "{}");
    assert_int_equal(ev.kind[1], 'm');
    assert_int_equal(ev.len[1], 0);
    assert_string_equal(ev.text[2], "[1]");
}

static void test_empty_body_at_end_of_input(void **state)
{
    (void)state;
    struct events ev;
    run_str("Content-Length: 0\r\n\r\n", 0, &ev);
    assert_int_equal(ev.n, 1);
    assert_int_equal(ev.kind[0], 'm');
    assert_int_equal(ev.len[0], 0);
}

static void test_header_case_and_content_type(void **state)
{
    (void)state;
    struct events ev;
    run_str("content-length:2\r\n\r\n{}"
            "CONTENT-LENGTH: 2 \r\nContent-Type: application/vscode-jsonrpc; charset=utf-8\r\n\r\n{}"
            "Content-Type: application/vscode-jsonrpc; charset=\"UTF8\"\r\ncOnTeNt-LeNgTh:\t2\r\n\r\n{}"
            "Content-Length: 2\r\nX-Extra: whatever: colons\r\n\r\n{}"
            "Content-Length: 2\n\n{}",  /* bare newlines are tolerated */
            0, &ev);
    assert_int_equal(ev.n, 5);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(ev.kind[i], 'm');
        assert_string_equal(ev.text[i], "{}");
    }
}

static void test_bad_charset_skips_body(void **state)
{
    (void)state;
    struct events ev;
    run_str("Content-Length: 4\r\nContent-Type: application/vscode-jsonrpc; charset=latin1\r\n\r\n\"\xe9\"x"
            "Content-Length: 2\r\n\r\n{}",
            0, &ev);
    assert_int_equal(ev.n, 2);
    assert_int_equal(ev.kind[0], 'e');
    assert_int_equal(ev.code[0], CTX_EFORMAT);
    assert_non_null(strstr(ev.text[0], "unsupported charset \"latin1\""));
    assert_non_null(strstr(ev.text[0], "stream offset 0"));
    assert_non_null(strstr(ev.text[0], "body skipped"));
    assert_string_equal(ev.text[1], "{}");
}

static void test_bad_lengths(void **state)
{
    (void)state;
    static const struct {
        const char *hdr;
        int code;
        const char *msg;
    } cases[] = {
        {"Content-Length: 12a\r\n\r\n", CTX_EFORMAT, "is not a decimal number"},
        {"Content-Length: -1\r\n\r\n", CTX_EFORMAT, "is not a decimal number"},
        {"Content-Length: \r\n\r\n", CTX_EFORMAT, "empty Content-Length"},
        {"Content-Length: 99999999999999999999999\r\n\r\n", CTX_ERANGE, "overflows"},
        {"Content-Length: 2\r\nContent-Length: 3\r\n\r\n", CTX_EFORMAT, "two different Content-Length"},
        {"Content-Type: application/vscode-jsonrpc\r\n\r\n", CTX_EFORMAT, "without Content-Length"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char buf[256];
        /* the good message after it must still parse: no Content-Length means nothing to skip */
        snprintf(buf, sizeof buf, "%sContent-Length: 2\r\n\r\n{}", cases[i].hdr);
        struct events ev;
        run_str(buf, 0, &ev);
        assert_true(ev.n >= 2);
        assert_int_equal(ev.kind[0], 'e');
        assert_int_equal(ev.code[0], cases[i].code);
        if (!strstr(ev.text[0], cases[i].msg))
            fail_msg("case %zu: \"%s\" lacks \"%s\"", i, ev.text[0], cases[i].msg);
        assert_int_equal(ev.kind[ev.n - 1], 'm');
        assert_string_equal(ev.text[ev.n - 1], "{}");
    }
    /* the same length twice is fine */
    struct events ev;
    run_str("Content-Length: 2\r\ncontent-length: 2\r\n\r\n{}", 0, &ev);
    assert_int_equal(ev.n, 1);
    assert_int_equal(ev.kind[0], 'm');
}

static void test_body_over_limit_is_skipped(void **state)
{
    (void)state;
    char big[300];
    int n = snprintf(big, sizeof big, "Content-Length: 100\r\n\r\n%0100dContent-Length: 2\r\n\r\n{}", 0);
    for (size_t step = 0; step <= 7; step += 7) {
        struct events ev;
        run(big, (size_t)n, step, 0, 64, &ev);
        assert_int_equal(ev.n, 2);
        assert_int_equal(ev.kind[0], 'e');
        assert_int_equal(ev.code[0], CTX_ERANGE);
        assert_non_null(strstr(ev.text[0], "message of 100 bytes is over the 64-byte limit"));
        assert_string_equal(ev.text[1], "{}");
    }
}

static void test_header_over_limit(void **state)
{
    (void)state;
    /* a header line that never ends within the limit, then a good message */
    char s[400];
    memset(s, 'X', 200);
    int n = 200 + snprintf(s + 200, sizeof s - 200, ": y\r\nContent-Length: 2\r\n\r\n{}");
    for (size_t step = 0; step <= 16; step += 16) {
        struct events ev;
        run(s, (size_t)n, step, 64, 0, &ev);
        assert_int_equal(ev.n, 2);
        assert_int_equal(ev.kind[0], 'e');
        assert_int_equal(ev.code[0], CTX_ERANGE);
        assert_non_null(strstr(ev.text[0], "over the 64-byte limit"));
        assert_int_equal(ev.kind[1], 'm');
        assert_string_equal(ev.text[1], "{}");
    }
}

static void test_garbage_between_messages(void **state)
{
    (void)state;
    struct events ev;
    /* junk lines, stray blank lines, and junk glued to the front of a header */
    run_str("Content-Length: 2\r\n\r\n{}\r\n\r\nhello world\r\nnot a header\r\n"
            "Content-Length: 2\r\n\r\n{}"
            "\r\n"
            "xyzContent-Length: 2\r\n\r\n[]",
            0, &ev);
    assert_int_equal(ev.n, 5);
    assert_string_equal(ev.text[0], "{}");
    assert_int_equal(ev.kind[1], 'e');
    assert_int_equal(ev.code[1], CTX_EFORMAT);
    /* "hello world\r\n" + "not a header\r\n" = 27 bytes, starting after "{}\r\n\r\n" */
    assert_non_null(strstr(ev.text[1], "skipped 27 bytes"));
    assert_non_null(strstr(ev.text[1], "stream offset 27"));
    assert_string_equal(ev.text[2], "{}");
    assert_non_null(strstr(ev.text[3], "skipped 3 bytes"));
    assert_string_equal(ev.text[4], "[]");
    /* a body sent without any header: reported once, the next framed message parses */
    run_str("{\"jsonrpc\":\"2.0\",\"method\":\"x\"}\nContent-Length: 2\r\n\r\n{}", 0, &ev);
    assert_int_equal(ev.n, 2);
    assert_int_equal(ev.kind[0], 'e');
    assert_string_equal(ev.text[1], "{}");
}

static void test_stop_from_callback(void **state)
{
    (void)state;
    struct events ev;
    memset(&ev, 0, sizeof ev);
    ev.stop_after = 1;
    struct lsp_framer f;
    lsp_framer_init(&f, 0, 0);
    struct lsp_framer_cb cb = {on_msg, on_err, &ev};
    const char *s = "Content-Length: 2\r\n\r\n{}Content-Length: 2\r\n\r\n[]";
    assert_int_equal(lsp_framer_feed(&f, s, strlen(s), &cb), 1);
    assert_int_equal(ev.n, 1);
    lsp_framer_free(&f);
}

static void test_frame_header(void **state)
{
    (void)state;
    char buf[64];
    assert_int_equal(lsp_frame_header(buf, sizeof buf, 1234), 24);
    assert_string_equal(buf, "Content-Length: 1234\r\n\r\n");
}

/* The fuzz entry on inputs chosen to hit every path, plus deterministic random noise. */
static void test_fuzz_corpus(void **state)
{
    (void)state;
    static const char *const corpus[] = {
        "",
        "\r\n\r\n\r\n",
        "Content-Length: 0\r\n\r\n",
        "Content-Length: 4294967296\r\n\r\n",
        "Content-Length: 18446744073709551615\r\n\r\n",
        "Content-Length: 5000\r\n\r\nabc",
        "Content-Length:",
        "Content-Length: 2\r\nContent-Type: ; ; charset=\r\n\r\n{}",
        "Content-Length: 2\r\nContent-Type: a; charset=\"\r\n\r\n{}",
        "Content-Length: 2\r\n\x00\x01\x02\r\n\r\n{}",
        "content-length: 2content-length: 2\r\n\r\n{}",
    };
    for (size_t i = 0; i < sizeof corpus / sizeof corpus[0]; i++)
        assert_int_equal(lsp_fuzz_one((const uint8_t *)corpus[i], strlen(corpus[i])), 0);
    /* document traffic, framed with correct lengths: astral characters, CRLF and lone CR, ranges
     * past the end, a lone surrogate, bad field types */
    static const char *const bodies[] = {
        "{\"method\":\"textDocument/didOpen\",\"params\":{\"textDocument\":{\"uri\":\"u\",\"version\":1,"
        "\"text\":\"\\ud83d\\ude00\\r\\n\\r\\u00e9x\\n\"}}}",
        "{\"method\":\"textDocument/didChange\",\"params\":{\"textDocument\":{\"uri\":\"u\",\"version\":2},"
        "\"contentChanges\":[{\"range\":{\"start\":{\"line\":0,\"character\":1},\"end\":{\"line\":9,"
        "\"character\":99}},\"text\":\"\\ud83d\\ude01\"}]}}",
        "{\"method\":\"textDocument/didChange\",\"params\":{\"textDocument\":{\"uri\":\"u\",\"version\":3},"
        "\"contentChanges\":[{\"range\":{\"start\":{\"line\":1,\"character\":0},\"end\":{\"line\":0,"
        "\"character\":0}},\"text\":\"\"}]}}",
        "{\"method\":\"textDocument/didChange\",\"params\":{\"textDocument\":{\"uri\":\"u\",\"version\":4},"
        "\"contentChanges\":[{\"range\":{\"start\":{\"line\":-1}},\"text\":1}]}}",
        "{\"method\":\"textDocument/didChange\",\"params\":{\"textDocument\":{\"uri\":\"u\",\"version\":5},"
        "\"contentChanges\":[{\"text\":\"a\\r\\nb\"},{\"range\":{\"start\":{\"line\":0,\"character\":1},"
        "\"end\":{\"line\":1,\"character\":0}},\"text\":\"\\ud83d\"}]}}",
        "{\"method\":\"textDocument/didSave\",\"params\":{\"textDocument\":{\"uri\":\"u\"},\"text\":\"saved\"}}",
        "{\"method\":\"textDocument/didClose\",\"params\":{\"textDocument\":5}}",
        "{\"method\":\"textDocument/didClose\",\"params\":{\"textDocument\":{\"uri\":\"u\"}}}",
    };
    static char framed[8192];
    size_t flen = 0;
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        size_t bl = strlen(bodies[i]);
        char one[1024];
        int n = snprintf(one, sizeof one, "Content-Length: %zu\r\n\r\n%s", bl, bodies[i]);
        assert_true(n > 0 && (size_t)n < sizeof one);
        assert_int_equal(lsp_fuzz_one((const uint8_t *)one, (size_t)n), 0);
        memcpy(framed + flen, one, (size_t)n);
        flen += (size_t)n;
    }
    /* the whole conversation in each position encoding: the first byte picks it, and the byte plus
     * a newline are then skipped as junk before the first header */
    static uint8_t conv[8194];
    memcpy(conv + 2, framed, flen);
    conv[1] = '\n';
    for (uint8_t enc = 0; enc < 3; enc++) {
        conv[0] = enc;
        assert_int_equal(lsp_fuzz_one(conv, flen + 2), 0);
    }
    /* with the NUL bytes inside */
    static const char nul[] = "Content-Length: 2\r\n\x00\x01\x02\r\n\r\n{}";
    assert_int_equal(lsp_fuzz_one((const uint8_t *)nul, sizeof nul - 1), 0);
    uint32_t x = 12345;
    uint8_t buf[2048];
    for (int round = 0; round < 300; round++) {
        size_t len = 0;
        /* mix real fragments and noise so that the parser gets deep */
        while (len < sizeof buf - 64) {
            x = x * 1103515245u + 12345u;
            uint32_t r = x >> 16;
            const char *frag = corpus[r % (sizeof corpus / sizeof corpus[0])];
            size_t fl = strlen(frag);
            if (r & 1) {
                size_t k = fl < sizeof buf - len ? fl : sizeof buf - len;
                memcpy(buf + len, frag, k);
                len += k;
            } else {
                buf[len++] = (uint8_t)(r >> 3);
            }
            if ((r & 0x70) == 0)
                break;
        }
        assert_int_equal(lsp_fuzz_one(buf, len), 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_message_any_split),
        cmocka_unit_test(test_back_to_back_and_empty),
        cmocka_unit_test(test_empty_body_at_end_of_input),
        cmocka_unit_test(test_header_case_and_content_type),
        cmocka_unit_test(test_bad_charset_skips_body),
        cmocka_unit_test(test_bad_lengths),
        cmocka_unit_test(test_body_over_limit_is_skipped),
        cmocka_unit_test(test_header_over_limit),
        cmocka_unit_test(test_garbage_between_messages),
        cmocka_unit_test(test_stop_from_callback),
        cmocka_unit_test(test_frame_header),
        cmocka_unit_test(test_fuzz_corpus),
    };
    return cmocka_run_group_tests_name("lsp-framing", tests, NULL, NULL);
}
