/* agent/sse.c: the text/event-stream parser (spec examples, every split point, limits, end of
 * stream) and the fuzz entry (tests/fuzz/fuzz_sse.c) over hostile inputs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sse.h"

int agent_fuzz_sse_one(const uint8_t *data, size_t size);

struct rec {
    char ev[32][160]; /* "type|id|data" with data's newlines as \n */
    int n;
    int stop_at; /* return CTX_ECANCELED on this event (1-based), 0 never */
    int dones;
    uint64_t offsets[32];
};

static int record(void *ud, const struct agent_sse_event *ev, struct ctx_err *e)
{
    struct rec *r = ud;
    assert_true(r->n < 32);
    assert_int_equal(strlen(ev->data), ev->data_len);
    snprintf(r->ev[r->n], sizeof r->ev[0], "%s|%s|%s", ev->event, ev->id, ev->data);
    r->offsets[r->n] = ev->offset;
    r->n++;
    if (ev->done)
        r->dones++;
    if (r->stop_at && r->n == r->stop_at)
        return ctx_err_set(e, CTX_ECANCELED, "stop requested");
    return 0;
}

static int feed_all(struct agent_sse *p, const char *s, size_t n, struct rec *r, struct ctx_err *e)
{
    return agent_sse_feed(p, s, n, record, r, e);
}

static void spec_examples(void **state)
{
    (void)state;
    /* From the WHATWG examples: multi-line data, comments, fields without a space, a field name
     * alone (empty value), an event type, and an id that persists. */
    const char *s = ": this is a test stream\n\n"
                    "data: some text\n\n"
                    "data: another message\n"
                    "data: with two lines\n\n"
                    "event: add\ndata: 73857293\nid: 7\n\n"
                    "data\n\n"
                    "data\ndata\n\n"
                    "data:test\n\n"
                    "data:  two spaces\n\n"
                    "retry: 1000\nunknown: x\ndata: [DONE]\n\n"
                    "data: never finished\n";
    struct agent_sse p;
    agent_sse_init(&p, 0);
    struct rec r = {0};
    struct ctx_err e = {0};
    assert_int_equal(feed_all(&p, s, strlen(s), &r, &e), 0);
    assert_int_equal(r.n, 8);
    assert_string_equal(r.ev[0], "||some text");
    assert_string_equal(r.ev[1], "||another message\nwith two lines");
    assert_string_equal(r.ev[2], "add|7|73857293");
    assert_string_equal(r.ev[3], "|7|");   /* "data" alone: an empty event */
    assert_string_equal(r.ev[4], "|7|\n"); /* two empty data lines: one newline */
    assert_string_equal(r.ev[5], "|7|test");
    assert_string_equal(r.ev[6], "|7| two spaces"); /* only one space is dropped */
    assert_string_equal(r.ev[7], "|7|[DONE]");
    assert_int_equal(r.dones, 1);
    assert_int_equal(r.offsets[0], 25); /* where "data: some text" starts */
    /* the last event has no blank line: finish says so */
    assert_int_equal(agent_sse_finish(&p, &e), CTX_EPROTO);
    assert_string_equal(e.msg, "SSE stream ended inside an event: 15 data bytes from offset 203 "
                               "were never closed by a blank line");
    agent_sse_free(&p);
}

/* A stream with every line ending, a BOM, comments, UTF-8 and a [DONE]. */
static const char mixed[] = "\xEF\xBB\xBF: keep-alive\r\n\r\n"
                            "data: {\"a\":\"caf\xC3\xA9\"}\r\n\r\n"
                            "event: ping\rdata: x\r\r"
                            "data: line1\ndata: line2\n\n"
                            "id: 42\r\ndata: \xE6\x97\xA5\xE6\x9C\xAC\r\n\r\n"
                            "data: [DONE]\n\n";

static void check_mixed(const struct rec *r)
{
    assert_int_equal(r->n, 5);
    assert_string_equal(r->ev[0], "||{\"a\":\"caf\xC3\xA9\"}");
    assert_string_equal(r->ev[1], "ping||x");
    assert_string_equal(r->ev[2], "||line1\nline2");
    assert_string_equal(r->ev[3], "|42|\xE6\x97\xA5\xE6\x9C\xAC");
    assert_string_equal(r->ev[4], "|42|[DONE]");
    assert_int_equal(r->dones, 1);
}

static void every_split_gives_the_same_events(void **state)
{
    (void)state;
    size_t n = sizeof mixed - 1;
    struct ctx_err e = {0};
    /* whole */
    struct agent_sse p;
    struct rec whole = {0};
    agent_sse_init(&p, 0);
    assert_int_equal(feed_all(&p, mixed, n, &whole, &e), 0);
    assert_int_equal(agent_sse_finish(&p, &e), 0);
    agent_sse_free(&p);
    check_mixed(&whole);
    /* every two-way and three-way split (which covers CR|LF, the BOM and UTF-8 sequences cut apart)
     */
    for (size_t i = 0; i <= n; i++) {
        for (size_t j = i; j <= n; j += 3) {
            struct rec r = {0};
            agent_sse_init(&p, 0);
            assert_int_equal(feed_all(&p, mixed, i, &r, &e), 0);
            assert_int_equal(feed_all(&p, mixed + i, j - i, &r, &e), 0);
            assert_int_equal(feed_all(&p, mixed + j, n - j, &r, &e), 0);
            assert_int_equal(agent_sse_finish(&p, &e), 0);
            agent_sse_free(&p);
            check_mixed(&r);
            for (int k = 0; k < r.n; k++)
                assert_int_equal(r.offsets[k], whole.offsets[k]);
        }
    }
    /* one byte at a time, empty pieces in between */
    struct rec r = {0};
    agent_sse_init(&p, 0);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(feed_all(&p, mixed + i, 1, &r, &e), 0);
        assert_int_equal(feed_all(&p, mixed + i, 0, &r, &e), 0);
    }
    assert_int_equal(agent_sse_finish(&p, &e), 0);
    agent_sse_free(&p);
    check_mixed(&r);
}

static void bom_only_at_start(void **state)
{
    (void)state;
    struct agent_sse p;
    struct rec r = {0};
    struct ctx_err e = {0};
    /* a partial BOM that turns out not to be one starts the first line: "\xEF" + "data" is an
     * unknown field, so nothing is dispatched from that line */
    agent_sse_init(&p, 0);
    assert_int_equal(feed_all(&p, "\xEF", 1, &r, &e), 0);
    assert_int_equal(feed_all(&p, "data: a\n\ndata: b\n\n", 18, &r, &e), 0);
    assert_int_equal(r.n, 1);
    assert_string_equal(r.ev[0], "||b");
    agent_sse_free(&p);
    /* a second BOM later is data, not skipped */
    memset(&r, 0, sizeof r);
    agent_sse_init(&p, 0);
    const char *s = "\xEF\xBB\xBF"
                    "data: a\n\n\xEF\xBB\xBF"
                    "data: b\n\n";
    assert_int_equal(feed_all(&p, s, strlen(s), &r, &e), 0);
    assert_int_equal(r.n, 1);
    assert_string_equal(r.ev[0], "||a");
    agent_sse_free(&p);
}

static void limits_are_errors(void **state)
{
    (void)state;
    struct agent_sse p;
    struct rec r = {0};
    struct ctx_err e = {0};
    char big[200];
    memset(big, 'x', sizeof big);
    /* one long line arriving in pieces with no line end */
    agent_sse_init(&p, 64);
    assert_int_equal(feed_all(&p, "data: ok\n\n", 10, &r, &e), 0);
    assert_int_equal(feed_all(&p, big, 40, &r, &e), 0);
    assert_int_equal(feed_all(&p, big, 40, &r, &e), CTX_ERANGE);
    assert_string_equal(e.msg,
                        "SSE line starting at byte offset 10 is longer than the limit of 64 bytes");
    /* sticky */
    assert_int_equal(feed_all(&p, "\n\n", 2, &r, &e), CTX_ERANGE);
    assert_string_equal(e.msg, "SSE stream already failed at byte offset 50");
    assert_int_equal(agent_sse_finish(&p, &e), CTX_ERANGE);
    agent_sse_free(&p);
    /* an event of many short data lines */
    memset(&r, 0, sizeof r);
    agent_sse_init(&p, 64);
    int rc = 0;
    for (int i = 0; i < 20 && rc == 0; i++)
        rc = feed_all(&p, "data: 0123456789\n", 17, &r, &e);
    assert_int_equal(rc, CTX_ERANGE);
    assert_string_equal(e.msg,
                        "SSE event starting at byte offset 0 is larger than the limit of 64 bytes");
    assert_int_equal(r.n, 0);
    agent_sse_free(&p);
    /* a long line inside one piece */
    memset(&r, 0, sizeof r);
    agent_sse_init(&p, 64);
    char line[120];
    memcpy(line, "data: ", 6);
    memset(line + 6, 'y', 100);
    line[106] = '\n';
    assert_int_equal(feed_all(&p, line, 107, &r, &e), CTX_ERANGE);
    assert_string_equal(e.msg,
                        "SSE line starting at byte offset 0 is longer than the limit of 64 bytes");
    agent_sse_free(&p);
}

static void finish_reports_truncation(void **state)
{
    (void)state;
    struct agent_sse p;
    struct rec r = {0};
    struct ctx_err e = {0};
    agent_sse_init(&p, 0);
    assert_int_equal(feed_all(&p, "data: a\n\ndata: {\"trunc", 22, &r, &e), 0);
    assert_int_equal(agent_sse_finish(&p, &e), CTX_EPROTO);
    assert_string_equal(e.msg,
                        "SSE stream ended inside a line: 13 bytes from offset 9 have no line end");
    agent_sse_free(&p);
    /* a trailing lone CR ends its line */
    agent_sse_init(&p, 0);
    memset(&r, 0, sizeof r);
    assert_int_equal(feed_all(&p, "data: a\r\r", 9, &r, &e), 0);
    assert_int_equal(r.n, 1);
    assert_int_equal(agent_sse_finish(&p, &e), 0);
    agent_sse_free(&p);
}

static void callback_can_stop(void **state)
{
    (void)state;
    struct agent_sse p;
    struct rec r = {.stop_at = 2};
    struct ctx_err e = {0};
    agent_sse_init(&p, 0);
    const char *s = "data: 1\n\ndata: 2\n\ndata: 3\n\n";
    assert_int_equal(feed_all(&p, s, strlen(s), &r, &e), CTX_ECANCELED);
    assert_string_equal(e.msg, "stop requested");
    assert_int_equal(r.n, 2);
    assert_int_equal(feed_all(&p, "data: 4\n\n", 9, &r, &e), CTX_ECANCELED);
    assert_int_equal(r.n, 2);
    agent_sse_free(&p);
}

/* The fuzz entry over hostile inputs; the first byte is the piece size (0: all at once). */
static void fuzz_entry_on_nasty_inputs(void **state)
{
    (void)state;
#define C(lit, want)                                                                               \
    {                                                                                              \
        lit, sizeof(lit) - 1, want                                                                 \
    }
    static const struct {
        const char *s;
        size_t n;
        int want;
    } cases[] = {
        C("\x03"
          "data: "
          "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"},\"finish_reason\":\"stop\"}]}"
          "\n\n"
          "data: [DONE]\n\n",
          0),
        /* after [DONE] whatever follows is ignored */
        C("\x00"
          "data: [DONE]\n\ndata: {not json\n\n",
          0),
        C("\x01"
          "data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n",
          CTX_EPROTO), /* no finish */
        C("\x05"
          "data: [1,2,3]\n\n",
          CTX_EPROTO),
        C("\x05"
          "data: \"str\"\n\n",
          CTX_EPROTO),
        C("\x02"
          "data: {\"choices\":7}\n\n",
          CTX_EPROTO),
        C("\x02"
          "data: {\"choices\":[{\"delta\":5}]}\n\n",
          CTX_EPROTO),
        C("\x02"
          "data: {\"choices\":[{\"delta\":{\"content\":5}}]}\n\n",
          CTX_EPROTO),
        C("\x02"
          "data: {\"choices\":[{\"delta\":{\"tool_calls\":{}}}]}\n\n",
          CTX_EPROTO),
        C("\x02"
          "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":1e300}]}}]}\n\n",
          CTX_EPROTO),
        C("\x02"
          "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":-1}]}}]}\n\n",
          CTX_EPROTO),
        C("\x02"
          "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0.5}]}}]}\n\n",
          CTX_EPROTO),
        C("\x02"
          "data: {\"choices\":[{\"delta\":{\"tool_calls\":[7]}}]}\n\n",
          CTX_EPROTO),
        C("\x02"
          "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"function\":{\"name\":3}}]}}]}\n\n",
          CTX_EPROTO),
        C("\x02"
          "data: "
          "{\"choices\":[{\"delta\":{\"tool_calls\":[{\"function\":{\"arguments\":[1]}}]}}]}\n\n",
          CTX_EPROTO),
        /* a tool call that never gets a name */
        C("\x04"
          "data: "
          "{\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{}"
          "\"}}]},"
          "\"finish_reason\":\"tool_calls\"}]}\n\n",
          CTX_EPROTO),
        C("\x04"
          "data: {\"error\":{\"message\":\"overloaded\"}}\n\n",
          CTX_EPROTO),
        C("\x04"
          "data: "
          "{\"usage\":{\"prompt_tokens\":\"x\",\"completion_tokens\":-5,\"prompt_tokens_details\":"
          "3}}\n\n"
          "data: [DONE]\n\n",
          0),
        /* deep nesting: cJSON's nesting limit, not the stack */
        C("\x00"
          "data: "
          "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\n\n",
          CTX_EPROTO),
        C("\x07"
          "data: {\"choices\":[{\"delta\":{\"content\":\"\\ud800\"}}]}\n\n",
          CTX_EPROTO),
        C("\x00"
          "\r\r\r\n\n\n::::\n\n\xEF\xBB",
          CTX_EPROTO), /* ends inside a line */
        C("\x01"
          "data",
          CTX_EPROTO),
        C("\x00"
          "data: \x00\x01\x02\n\n",
          CTX_EPROTO),         /* NUL inside data */
        C("\x00", CTX_EPROTO), /* an empty stream never finished */
        C("", 0),
    };
#undef C
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = agent_fuzz_sse_one((const uint8_t *)cases[i].s, cases[i].n);
        if (rc != cases[i].want)
            fail_msg("case %zu: got %d, want %d", i, rc, cases[i].want);
    }
    /* many tool calls and an event over the fuzz entry's 4096-byte limit */
    char *big = malloc(70000);
    assert_non_null(big);
    size_t o = 0;
    big[o++] = '\x00';
    for (int k = 0; k < 300; k++)
        o += (size_t)sprintf(
            big + o,
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":%d,\"id\":\"c%d\","
            "\"function\":{\"name\":\"f\"}}]}}]}\n\n",
            k, k);
    assert_int_equal(agent_fuzz_sse_one((const uint8_t *)big, o), CTX_ERANGE); /* > 256 calls */
    o = 1;
    memcpy(big + o, "data: ", 6);
    o += 6;
    memset(big + o, 'a', 5000);
    o += 5000;
    big[o++] = '\n';
    assert_int_equal(agent_fuzz_sse_one((const uint8_t *)big, o), CTX_ERANGE);
    /* random bytes: no crash, and a defined code */
    unsigned x = 12345;
    for (int round = 0; round < 300; round++) {
        size_t n = 1 + (size_t)(round * 37 % 2000);
        for (size_t k = 0; k < n; k++) {
            x = x * 1103515245u + 12345u;
            static const char alphabet[] =
                "data: {}[]\",:\n\r[DONE]choicesdeltatool_callsindex0123 ";
            big[k] = (x >> 16) % 4 ? alphabet[(x >> 8) % (sizeof alphabet - 1)] : (char)(x >> 8);
        }
        int rc = agent_fuzz_sse_one((const uint8_t *)big, n);
        assert_true(rc == 0 || rc == CTX_EPROTO || rc == CTX_ERANGE);
    }
    free(big);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(spec_examples),
        cmocka_unit_test(every_split_gives_the_same_events),
        cmocka_unit_test(bom_only_at_start),
        cmocka_unit_test(limits_are_errors),
        cmocka_unit_test(finish_reports_truncation),
        cmocka_unit_test(callback_can_stop),
        cmocka_unit_test(fuzz_entry_on_nasty_inputs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
