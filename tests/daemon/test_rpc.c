/* daemon/rpc.c: line framing and JSON-RPC request checking, without sockets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "rpc.h"

struct lines {
    char got[16][256];
    int n, overlong, stop_after;
};

static int collect(void *ud, char *line, size_t len)
{
    struct lines *l = ud;
    assert_int_equal(strlen(line), len);
    snprintf(l->got[l->n++], 256, "%s", line);
    return l->stop_after && l->n >= l->stop_after;
}

static void overlong(void *ud)
{
    ((struct lines *)ud)->overlong++;
}

static void linebuf_splits_and_joins(void **state)
{
    (void)state;
    struct ctxd_linebuf lb;
    ctxd_linebuf_init(&lb, 64);
    struct lines l = {0};
    const char *parts[] = {"{\"a\"", ":1}\n{\"b\":2}\r\n\n", "{\"c\"", ":3}\n"};
    for (int i = 0; i < 4; i++)
        assert_int_equal(ctxd_linebuf_feed(&lb, parts[i], strlen(parts[i]), collect, overlong, &l), 0);
    assert_int_equal(l.n, 3);
    assert_string_equal(l.got[0], "{\"a\":1}");
    assert_string_equal(l.got[1], "{\"b\":2}");
    assert_string_equal(l.got[2], "{\"c\":3}");
    assert_int_equal(l.overlong, 0);
    ctxd_linebuf_free(&lb);
}

static void linebuf_overlong_is_dropped_once(void **state)
{
    (void)state;
    struct ctxd_linebuf lb;
    ctxd_linebuf_init(&lb, 16);
    struct lines l = {0};
    char big[100];
    memset(big, 'x', sizeof big);
    /* over the limit, delivered in pieces with no newline yet */
    assert_int_equal(ctxd_linebuf_feed(&lb, big, 10, collect, overlong, &l), 0);
    assert_int_equal(ctxd_linebuf_feed(&lb, big, 50, collect, overlong, &l), 0);
    assert_int_equal(ctxd_linebuf_feed(&lb, big, 40, collect, overlong, &l), 0);
    assert_int_equal(l.overlong, 1);
    assert_int_equal(ctxd_linebuf_feed(&lb, "tail\nok\n", 8, collect, overlong, &l), 0);
    assert_int_equal(l.overlong, 1);
    assert_int_equal(l.n, 1);
    assert_string_equal(l.got[0], "ok");
    /* exactly at the limit is fine */
    char exact[17];
    memset(exact, 'y', 16);
    exact[16] = '\n';
    assert_int_equal(ctxd_linebuf_feed(&lb, exact, 17, collect, overlong, &l), 0);
    assert_int_equal(l.n, 2);
    assert_int_equal(strlen(l.got[1]), 16);
    ctxd_linebuf_free(&lb);
}

static void linebuf_stop_keeps_rest(void **state)
{
    (void)state;
    struct ctxd_linebuf lb;
    ctxd_linebuf_init(&lb, 0);
    struct lines l = {.stop_after = 1};
    assert_int_equal(ctxd_linebuf_feed(&lb, "one\ntwo\nthr", 11, collect, overlong, &l), 0);
    assert_int_equal(l.n, 1);
    assert_int_equal(lb.len, 7); /* "two\nthr" kept */
    l.stop_after = 0;
    char copy[16];
    memcpy(copy, lb.buf, lb.len);
    size_t n = lb.len;
    lb.len = 0;
    assert_int_equal(ctxd_linebuf_feed(&lb, copy, n, collect, overlong, &l), 0);
    assert_int_equal(ctxd_linebuf_feed(&lb, "ee\n", 3, collect, overlong, &l), 0);
    assert_int_equal(l.n, 3);
    assert_string_equal(l.got[1], "two");
    assert_string_equal(l.got[2], "three");
    ctxd_linebuf_free(&lb);
}

static int check(const char *txt, struct ctxd_rpc_req *req, char *msg)
{
    struct ctx_err e = {0};
    cJSON *v = ctx_json_parse(txt, strlen(txt), "t", &e);
    assert_non_null(v);
    int rc = ctxd_rpc_check(v, req, msg, 256);
    /* req borrows from v: copy what the caller inspects before freeing */
    static char method[64];
    if (req->method) {
        snprintf(method, sizeof method, "%s", req->method);
        req->method = method;
    }
    req->id = req->id ? (const cJSON *)1 : NULL;
    req->params = req->params ? (const cJSON *)1 : NULL;
    cJSON_Delete(v);
    return rc;
}

static void rpc_check_rules(void **state)
{
    (void)state;
    struct ctxd_rpc_req r;
    char msg[256];
    assert_int_equal(check("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"daemon.ping\"}", &r, msg), 0);
    assert_string_equal(r.method, "daemon.ping");
    assert_non_null(r.id);
    assert_null(r.params);
    assert_int_equal(check("{\"jsonrpc\":\"2.0\",\"method\":\"n\",\"params\":[1]}", &r, msg), 0);
    assert_null(r.id);
    assert_non_null(r.params);
    assert_int_equal(check("{\"id\":1,\"method\":\"m\"}", &r, msg), CTXD_RPC_INVALID_REQUEST);
    assert_string_equal(msg, "\"jsonrpc\" must be \"2.0\"");
    assert_non_null(r.id);
    assert_int_equal(check("{\"jsonrpc\":\"2.0\",\"id\":1}", &r, msg), CTXD_RPC_INVALID_REQUEST);
    assert_string_equal(msg, "\"method\" must be a non-empty string");
    assert_int_equal(check("{\"jsonrpc\":\"2.0\",\"id\":{},\"method\":\"m\"}", &r, msg),
                     CTXD_RPC_INVALID_REQUEST);
    assert_null(r.id);
    assert_int_equal(check("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"m\",\"params\":5}", &r, msg),
                     CTXD_RPC_INVALID_REQUEST);
    assert_string_equal(msg, "\"params\" must be an object or an array");
    assert_int_equal(check("[1]", &r, msg), CTXD_RPC_INVALID_REQUEST);
}

static void rpc_builders(void **state)
{
    (void)state;
    cJSON *id = cJSON_CreateString("a");
    cJSON *res = ctxd_rpc_result(id, cJSON_CreateTrue());
    size_t len;
    char *line = ctxd_rpc_line(res, &len);
    assert_string_equal(line, "{\"jsonrpc\":\"2.0\",\"id\":\"a\",\"result\":true}\n");
    assert_int_equal(len, strlen(line));
    free(line);
    cJSON_Delete(res);
    cJSON *err = ctxd_rpc_error(NULL, CTXD_RPC_PARSE_ERROR, "bad", NULL);
    line = ctxd_rpc_line(err, NULL);
    assert_string_equal(line, "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32700,\"message\":\"bad\"}}\n");
    free(line);
    cJSON_Delete(err);
    cJSON *req = ctxd_rpc_request(7, "daemon.ping", NULL);
    line = ctxd_rpc_line(req, NULL);
    assert_string_equal(line, "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\",\"id\":7}\n");
    free(line);
    cJSON_Delete(req);
    cJSON_Delete(id);
}

/* The fuzz target's entry, run here on hostile inputs so CI exercises it. */
int ctxd_fuzz_rpc_one(const uint8_t *data, size_t size);

static void fuzz_entry_on_nasty_inputs(void **state)
{
    (void)state;
    const char *cases[] = {
        "", "\n", "\n\n\n", "{", "}", "[", "[]\n", "[[[[[[[[[[[[[[[[[[[[\n", "{\"jsonrpc\":\"2.0\"}\n",
        "{\"jsonrpc\":\"2.0\",\"method\":\"\\u0000\",\"id\":1}\n", "\xff\xfe\x00\x01\n",
        "{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"id\":1e400}\n", "[{},{},1,\"x\",null]\n",
        "{\"a\":\"\\ud800\"}\n", "nul\0l\n",
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_int_equal(ctxd_fuzz_rpc_one((const uint8_t *)cases[i], strlen(cases[i]) + (i == 14 ? 3 : 0)), 0);
    /* deep nesting beyond cJSON's limit */
    char deep[5000];
    memset(deep, '[', sizeof deep - 1);
    deep[sizeof deep - 1] = '\n';
    assert_int_equal(ctxd_fuzz_rpc_one((const uint8_t *)deep, sizeof deep), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(linebuf_splits_and_joins),
        cmocka_unit_test(linebuf_overlong_is_dropped_once),
        cmocka_unit_test(linebuf_stop_keeps_rest),
        cmocka_unit_test(rpc_check_rules),
        cmocka_unit_test(rpc_builders),
        cmocka_unit_test(fuzz_entry_on_nasty_inputs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
