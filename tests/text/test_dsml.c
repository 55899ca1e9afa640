/* DSML encoder and streaming parser against tests/fixtures/dsml/ (DeepSeek's official pairs,
 * encode.json and parse.json made with encoding_dsv4.py), plus malformed completions, event
 * order, and the Python-json compatibility layer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ctx_config.h"
#include "dsml.h"
#include "json.h"
#include "pyjson.h"
#include "tokenizer.h"

static char dir[4096];

static cJSON *load(const char *name)
{
    char p[4200];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    struct ctx_err e = {0};
    cJSON *v = ctx_json_read_file(p, 0, &e);
    if (!v)
        fail_msg("%s", e.msg);
    return v;
}

static int setup(void **state)
{
    (void)state;
    const char *r = getenv("CTX_SOURCE_ROOT");
    snprintf(dir, sizeof dir, "%s/tests/fixtures/dsml", r ? r : CTX_SOURCE_ROOT);
    return 0;
}

static void assert_text_equal(const char *what, const char *got, size_t gl, const char *want, size_t wl)
{
    size_t k = 0;
    while (k < gl && k < wl && got[k] == want[k])
        k++;
    if (k != gl || k != wl)
        fail_msg("%s: differs at byte %zu (got %zu bytes, want %zu): got \"%.60s\" want \"%.60s\"", what, k,
                 gl, wl, got + k, want + k);
}

static void test_encode_vectors(void **state)
{
    (void)state;
    cJSON *vec = load("encode.json");
    struct ctx_err e = {0};
    size_t n = 0;
    for (const cJSON *c = vec->child; c; c = c->next, n++) {
        struct inf_dsml_opts o = {.drop_thinking = true};
        char *p;
        size_t l;
        const char *name = cJSON_GetObjectItem(c, "name")->valuestring;
        if (inf_dsml_encode_request(c, &o, &p, &l, &e))
            fail_msg("%s: %s", name, e.msg);
        const char *want = cJSON_GetObjectItem(c, "prompt")->valuestring;
        assert_text_equal(name, p, l, want, strlen(want));
        free(p);
    }
    assert_int_equal(n, 40);
    cJSON_Delete(vec);
}

static void test_encode_official(void **state)
{
    (void)state;
    /* DeepSeek's own pairs: 1-3 in thinking mode (the reference's default drop_thinking), 4 in
     * chat mode; input 1 carries its tools at the top level of the request. */
    const enum inf_dsml_mode modes[] = {INF_DSML_THINKING, INF_DSML_THINKING, INF_DSML_THINKING, INF_DSML_CHAT};
    for (int i = 1; i <= 4; i++) {
        char in[64], out[64], path[4300];
        snprintf(in, sizeof in, "official/input_%d.json", i);
        snprintf(out, sizeof out, "official/output_%d.txt", i);
        cJSON *req = load(in);
        snprintf(path, sizeof path, "%s/%s", dir, out);
        struct ctx_err e = {0};
        char *want, *got;
        size_t wl, gl;
        assert_int_equal(ctx_read_file(path, 0, &want, &wl, &e), 0);
        struct inf_dsml_opts o = {.mode = modes[i - 1], .drop_thinking = true};
        if (inf_dsml_encode_request(req, &o, &got, &gl, &e))
            fail_msg("official %d: %s", i, e.msg);
        assert_text_equal(out, got, gl, want, wl);
        /* The other mode gives a different prompt: the mode is really exercised. */
        o.mode = modes[i - 1] == INF_DSML_CHAT ? INF_DSML_THINKING : INF_DSML_CHAT;
        char *other;
        size_t ol;
        assert_int_equal(inf_dsml_encode_request(req, &o, &other, &ol, &e), 0);
        assert_false(ol == wl && memcmp(other, want, wl) == 0);
        free(other);
        free(got);
        free(want);
        cJSON_Delete(req);
    }
}

/* Our embedded fixed text equals strings.json's (the reference's constants). */
static void test_fixed_strings(void **state)
{
    (void)state;
    cJSON *s = load("strings.json");
    struct ctx_err e = {0};
    const char *tmpl = cJSON_GetObjectItem(s, "TOOLS_TEMPLATE")->valuestring;
    /* Build the expected text by Python's str.format over the template. */
    struct inf_buf want = {0};
    const char *tool_json = "{\"name\": \"f\", \"description\": \"d\", \"parameters\": {}}";
    for (const char *q = tmpl; *q;) {
        const char *names[] = {"{dsml_token}", "{thinking_start_token}", "{thinking_end_token}", "{tool_schemas}"};
        const char *vals[] = {INF_DSML_TOKEN, INF_DSML_THINK_START, INF_DSML_THINK_END, tool_json};
        bool hit = false;
        for (int k = 0; k < 4 && !hit; k++)
            if (!strncmp(q, names[k], strlen(names[k]))) {
                inf_buf_puts(&want, vals[k]);
                q += strlen(names[k]);
                hit = true;
            }
        if (!hit)
            inf_buf_put(&want, q++, 1);
    }
    cJSON *msgs = cJSON_Parse("[{\"role\": \"system\", \"content\": \"S\", \"tools\": [{\"type\": \"function\", "
                              "\"function\": {\"name\": \"f\", \"description\": \"d\", \"parameters\": {}}}]}, "
                              "{\"role\": \"user\", \"content\": \"u\"}]");
    struct inf_dsml_opts o = {.mode = INF_DSML_THINKING, .effort = INF_DSML_EFFORT_MAX, .drop_thinking = true};
    char *p;
    size_t l;
    assert_int_equal(inf_dsml_encode(msgs, NULL, &o, &p, &l, &e), 0);
    struct inf_buf full = {0};
    inf_buf_puts(&full, cJSON_GetObjectItem(s, "bos_token")->valuestring);
    inf_buf_puts(&full, cJSON_GetObjectItem(s, "REASONING_EFFORT_MAX")->valuestring);
    inf_buf_puts(&full, "S\n\n");
    inf_buf_put(&full, want.p, want.len);
    inf_buf_puts(&full, cJSON_GetObjectItem(s, "USER_SP_TOKEN")->valuestring);
    inf_buf_puts(&full, "u");
    inf_buf_puts(&full, cJSON_GetObjectItem(s, "ASSISTANT_SP_TOKEN")->valuestring);
    inf_buf_puts(&full, cJSON_GetObjectItem(s, "thinking_start_token")->valuestring);
    assert_text_equal("tools section", p, l, full.p, full.len);
    assert_string_equal(INF_DSML_EOS, cJSON_GetObjectItem(s, "eos_token")->valuestring);
    assert_string_equal(INF_DSML_TOKEN, cJSON_GetObjectItem(s, "dsml_token")->valuestring);
    assert_string_equal(INF_DSML_LATEST_REMINDER, cJSON_GetObjectItem(s, "LATEST_REMINDER_SP_TOKEN")->valuestring);
    free(p);
    inf_buf_free(&want);
    inf_buf_free(&full);
    cJSON_Delete(msgs);
    cJSON_Delete(s);
}

static void test_encode_errors(void **state)
{
    (void)state;
    struct {
        const char *json;
        const char *needle;
    } cases[] = {
        {"[{\"role\": \"robot\", \"content\": \"x\"}]", "messages[0].role"},
        {"[{\"content\": \"x\"}]", "messages[0].role"},
        {"[{\"role\": \"user\", \"content\": \"x\", \"task\": \"dance\"}]", "messages[0].task"},
        {"[{\"role\": \"developer\", \"content\": \"\"}]", "messages[0].content"},
        {"[{\"role\": \"user\", \"content\": \"x\"}, {\"role\": \"assistant\", \"content\": \"\", \"tool_calls\": "
         "[{\"function\": {\"name\": \"f\", \"arguments\": \"[1, 2]\"}}]}]",
         "messages[1].tool_calls[0].function.arguments"},
        {"[{\"role\": \"assistant\", \"tool_calls\": [{\"function\": {\"arguments\": \"{}\"}}]}]",
         "messages[0].tool_calls[0].function.name"},
        {"[{\"role\": \"user\", \"content\": 5}]", "messages[0].content"},
        {"{\"messages\": []}", NULL},
        {"{\"messages\": 1}", "request.messages"},
        {"{\"messages\": [], \"thinking_mode\": \"dream\"}", "thinking_mode"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cJSON *req = cJSON_Parse(cases[i].json);
        struct inf_dsml_opts o = {0};
        struct ctx_err e = {0};
        char *p = NULL;
        size_t l;
        int rc = inf_dsml_encode_request(req, &o, &p, &l, &e);
        if (!cases[i].needle) {
            assert_int_equal(rc, 0);
            assert_string_equal(p, INF_DSML_BOS);
        } else if (rc != CTX_EINVAL || !strstr(e.msg, cases[i].needle))
            fail_msg("case %zu: rc %d \"%s\"", i, rc, e.msg);
        free(p);
        cJSON_Delete(req);
    }
    /* Arguments that are not JSON become one string parameter, as in the reference. */
    cJSON *m = cJSON_Parse("[{\"role\": \"assistant\", \"tool_calls\": [{\"function\": {\"name\": \"f\", "
                           "\"arguments\": \"not json\"}}]}]");
    struct inf_dsml_opts o = {0};
    struct ctx_err e = {0};
    char *p;
    size_t l;
    assert_int_equal(inf_dsml_encode(m, NULL, &o, &p, &l, &e), 0);
    assert_non_null(strstr(p, "<｜DSML｜parameter name=\"arguments\" string=\"true\">not json</｜DSML｜parameter>"));
    free(p);
    cJSON_Delete(m);
}

/* ---- parser -------------------------------------------------------------------------------- */

struct rec {
    struct inf_buf log; /* one line per event */
    int errors, dones;
    size_t fed_at_first_call; /* bytes fed when CALL_BEGIN first fired */
    size_t fed;
};

static int rec_cb(void *ud, const struct inf_dsml_event *ev)
{
    struct rec *r = ud;
    char line[256];
    switch (ev->type) {
    case INF_DSML_EV_REASONING_DELTA:
    case INF_DSML_EV_CONTENT_DELTA:
    case INF_DSML_EV_VALUE_DELTA:
        assert_true(ev->len > 0);
        assert_int_equal(inf_utf8_invalid_at(ev->text, ev->len), 0); /* whole characters only */
        /* Merge consecutive deltas of one kind so that logs compare across chunkings. */
        snprintf(line, sizeof line, "%c", ev->type == INF_DSML_EV_REASONING_DELTA ? 'R'
                                          : ev->type == INF_DSML_EV_CONTENT_DELTA ? 'C' : 'V');
        if (!(r->log.len && r->log.p[r->log.len - 1] == line[0]))
            inf_buf_puts(&r->log, line);
        return 0;
    case INF_DSML_EV_CALL_BEGIN:
        if (!r->fed_at_first_call)
            r->fed_at_first_call = r->fed;
        snprintf(line, sizeof line, "\n[call %d %s]", ev->call_index, ev->name);
        break;
    case INF_DSML_EV_PARAM_BEGIN:
        snprintf(line, sizeof line, "\n[param %s %d]", ev->name, ev->is_string);
        break;
    case INF_DSML_EV_PARAM_END:
        snprintf(line, sizeof line, "\n[/param %s %zu]", ev->name, ev->len);
        break;
    case INF_DSML_EV_CALL_END:
        snprintf(line, sizeof line, "\n[/call %d %.*s]", ev->call_index, (int)(ev->len > 80 ? 80 : ev->len), ev->text);
        break;
    case INF_DSML_EV_DONE:
        r->dones++;
        snprintf(line, sizeof line, "\n[done]");
        break;
    case INF_DSML_EV_ERROR:
        r->errors++;
        snprintf(line, sizeof line, "\n[error %d]", ev->error->kind);
        break;
    }
    inf_buf_puts(&r->log, line);
    /* Line-type events end a run of deltas. */
    inf_buf_puts(&r->log, "\n");
    return 0;
}

/* Parse `text` fed in chunks of `step` bytes; returns the rc of the first failure (0: success). */
static int parse_chunked(const char *text, size_t len, enum inf_dsml_mode mode, const cJSON *tools, size_t step,
                         struct rec *r, cJSON **msg, struct inf_dsml_error *err)
{
    struct inf_dsml_parser_opts o = {.mode = mode, .tools = tools};
    struct inf_dsml_parser *p = inf_dsml_parser_new(&o, rec_cb, r);
    struct ctx_err e = {0};
    int rc = 0;
    for (size_t i = 0; i < len && !rc; i += step) {
        size_t n = i + step > len ? len - i : step;
        r->fed = i + n;
        rc = inf_dsml_parser_feed(p, text + i, n, &e);
    }
    if (!rc)
        rc = inf_dsml_parser_finish(p, &e);
    if (msg)
        *msg = rc ? NULL : inf_dsml_parser_message(p);
    if (err && inf_dsml_parser_error(p))
        *err = *inf_dsml_parser_error(p);
    inf_dsml_parser_free(p);
    return rc;
}

static void test_parse_vectors(void **state)
{
    (void)state;
    cJSON *vec = load("parse.json");
    size_t n = 0;
    for (const cJSON *c = vec->child; c; c = c->next, n++) {
        const char *name = cJSON_GetObjectItem(c, "name")->valuestring;
        const char *text = cJSON_GetObjectItem(c, "completion")->valuestring;
        enum inf_dsml_mode mode = !strcmp(cJSON_GetObjectItem(c, "thinking_mode")->valuestring, "thinking")
                                      ? INF_DSML_THINKING
                                      : INF_DSML_CHAT;
        size_t len = strlen(text);
        char *first_log = NULL;
        const size_t steps[] = {len ? len : 1, 1, 2, 3, 5, 7, 13, 64};
        for (size_t s = 0; s < sizeof steps / sizeof steps[0]; s++) {
            struct rec r = {0};
            cJSON *msg;
            int rc = parse_chunked(text, len, mode, NULL, steps[s], &r, &msg, NULL);
            if (rc)
                fail_msg("%s (chunks of %zu): rc %d", name, steps[s], rc);
            if (!cJSON_Compare(msg, cJSON_GetObjectItem(c, "message"), true)) {
                char *got = cJSON_PrintUnformatted(msg);
                fail_msg("%s (chunks of %zu): message %s", name, steps[s], got);
            }
            assert_int_equal(r.dones, 1);
            assert_int_equal(r.errors, 0);
            /* The same events in the same order however the text is cut. */
            if (!first_log)
                first_log = strdup(r.log.p);
            else if (strcmp(first_log, r.log.p))
                fail_msg("%s: events differ with chunks of %zu:\n%s\n--- vs ---\n%s", name, steps[s], r.log.p,
                         first_log);
            /* A call is announced before the completion is over (streaming). */
            if (r.fed_at_first_call && steps[s] == 1)
                assert_true(r.fed_at_first_call < len - 40);
            inf_buf_free(&r.log);
            cJSON_Delete(msg);
        }
        free(first_log);
    }
    assert_int_equal(n, 38);
    cJSON_Delete(vec);
}

/* Encoding a parsed message back gives the completion: parse and encode agree. */
static void test_parse_encode_roundtrip(void **state)
{
    (void)state;
    cJSON *vec = load("parse.json");
    for (const cJSON *c = vec->child; c; c = c->next) {
        const char *text = cJSON_GetObjectItem(c, "completion")->valuestring;
        bool thinking = !strcmp(cJSON_GetObjectItem(c, "thinking_mode")->valuestring, "thinking");
        cJSON *msgs = cJSON_CreateArray();
        cJSON *u = cJSON_CreateObject();
        cJSON_AddStringToObject(u, "role", "user");
        cJSON_AddStringToObject(u, "content", "x");
        cJSON_AddItemToArray(msgs, u);
        cJSON_AddItemToArray(msgs, cJSON_Duplicate(cJSON_GetObjectItem(c, "message"), true));
        struct inf_dsml_opts o = {.mode = thinking ? INF_DSML_THINKING : INF_DSML_CHAT, .drop_thinking = true};
        struct ctx_err e = {0};
        char *p;
        size_t l;
        assert_int_equal(inf_dsml_encode(msgs, NULL, &o, &p, &l, &e), 0);
        struct inf_buf want = {0};
        inf_buf_puts(&want, INF_DSML_BOS INF_DSML_USER "x" INF_DSML_ASSISTANT);
        inf_buf_puts(&want, thinking ? INF_DSML_THINK_START : INF_DSML_THINK_END);
        inf_buf_puts(&want, text);
        assert_text_equal(cJSON_GetObjectItem(c, "name")->valuestring, p, l, want.p, want.len);
        free(p);
        inf_buf_free(&want);
        cJSON_Delete(msgs);
    }
    cJSON_Delete(vec);
}

#define CALL_HEAD "\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"read_file\">\n"
#define PARAM(n, s, v) "<｜DSML｜parameter name=\"" n "\" string=\"" s "\">" v "</｜DSML｜parameter>\n"
#define CALL_TAIL "</｜DSML｜invoke>\n</｜DSML｜tool_calls>"

static void test_parse_malformed(void **state)
{
    (void)state;
    cJSON *tools = cJSON_Parse("[{\"type\": \"function\", \"function\": {\"name\": \"read_file\"}}, {\"name\": \"search\"}]");
    struct {
        const char *text;
        enum inf_dsml_mode mode;
        enum inf_dsml_error_kind kind;
        const char *tool, *param;
    } cases[] = {
        /* unclosed tags: the stream ends inside the call, which is reported, not dropped */
        {"ok" CALL_HEAD PARAM("path", "true", "a.c"), INF_DSML_CHAT, INF_DSML_ERR_UNCLOSED, "read_file", ""},
        {"ok" CALL_HEAD "<｜DSML｜parameter name=\"path\" string=\"true\">a.", INF_DSML_CHAT, INF_DSML_ERR_UNCLOSED,
         "read_file", ""},
        {"ok" CALL_HEAD, INF_DSML_CHAT, INF_DSML_ERR_UNCLOSED, "", ""},
        {"no end of sentence", INF_DSML_CHAT, INF_DSML_ERR_UNCLOSED, "", ""},
        {"thinking without end", INF_DSML_THINKING, INF_DSML_ERR_MISSING_THINK_END, "", ""},
        {"r" CALL_HEAD CALL_TAIL, INF_DSML_THINKING, INF_DSML_ERR_MISSING_THINK_END, "", ""},
        /* bad JSON under string="false" */
        {"ok" CALL_HEAD PARAM("start_line", "false", "12a") CALL_TAIL, INF_DSML_CHAT, INF_DSML_ERR_BAD_JSON,
         "read_file", "start_line"},
        {"ok" CALL_HEAD PARAM("x", "false", "") CALL_TAIL, INF_DSML_CHAT, INF_DSML_ERR_BAD_JSON, "read_file", "x"},
        {"ok" CALL_HEAD PARAM("x", "false", "{\"a\": }") CALL_TAIL, INF_DSML_CHAT, INF_DSML_ERR_BAD_JSON,
         "read_file", "x"},
        /* duplicate parameter */
        {"ok" CALL_HEAD PARAM("path", "true", "a") PARAM("path", "true", "b") CALL_TAIL INF_DSML_EOS, INF_DSML_CHAT,
         INF_DSML_ERR_DUPLICATE_PARAM, "read_file", "path"},
        /* unknown tool */
        {"\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"rm_rf\">\n" CALL_TAIL, INF_DSML_CHAT,
         INF_DSML_ERR_UNKNOWN_TOOL, "rm_rf", ""},
        /* format */
        {"ok" CALL_HEAD "<｜DSML｜parameter nam=\"p\">v</｜DSML｜parameter>\n" CALL_TAIL, INF_DSML_CHAT,
         INF_DSML_ERR_FORMAT, "", ""},
        {"ok" CALL_HEAD "<｜DSML｜parameter name=\"p\" string=\"maybe\">v</｜DSML｜parameter>\n" CALL_TAIL,
         INF_DSML_CHAT, INF_DSML_ERR_FORMAT, "", ""},
        {"ok" CALL_HEAD "<｜DSML｜parameter name=\"p\" string=\"true\">v/｜DSML｜parameter>\n" CALL_TAIL,
         INF_DSML_CHAT, INF_DSML_ERR_FORMAT, "", ""},
        {"ok\n\n<｜DSML｜tool_calls> junk", INF_DSML_CHAT, INF_DSML_ERR_FORMAT, "", ""},
        {"ok\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke nome=\"x\">\n", INF_DSML_CHAT, INF_DSML_ERR_FORMAT, "", ""},
        {"ok" CALL_HEAD PARAM("path", "true", "a") "x" CALL_TAIL, INF_DSML_CHAT, INF_DSML_ERR_FORMAT, "", ""},
        /* special tokens in content or reasoning */
        {"a <think> b" INF_DSML_EOS, INF_DSML_CHAT, INF_DSML_ERR_SPECIAL_TOKEN, "", ""},
        {"a｜DSML｜b" INF_DSML_EOS, INF_DSML_CHAT, INF_DSML_ERR_SPECIAL_TOKEN, "", ""},
        {"r</think>c</think>" INF_DSML_EOS, INF_DSML_THINKING, INF_DSML_ERR_SPECIAL_TOKEN, "", ""},
        {"r<think></think>c" INF_DSML_EOS, INF_DSML_THINKING, INF_DSML_ERR_SPECIAL_TOKEN, "", ""},
        /* trailing text */
        {"done" INF_DSML_EOS "more", INF_DSML_CHAT, INF_DSML_ERR_TRAILING, "", ""},
        {"ok" CALL_HEAD PARAM("path", "true", "a") CALL_TAIL "tail", INF_DSML_CHAT, INF_DSML_ERR_TRAILING, "", ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t len = strlen(cases[i].text);
        for (size_t step = 1; step <= len; step = step * 2 + 1) {
            struct rec r = {0};
            struct inf_dsml_error err = {0};
            int rc = parse_chunked(cases[i].text, len, cases[i].mode, tools, step, &r, NULL, &err);
            if (rc != CTX_EFORMAT || err.kind != cases[i].kind)
                fail_msg("case %zu (chunks of %zu): rc %d kind %d (want %d): %s", i, step, rc, err.kind,
                         cases[i].kind, err.message);
            assert_int_equal(r.errors, 1);
            assert_int_equal(r.dones, 0);
            assert_true(err.offset <= len);
            assert_true(err.message[0] != 0);
            if (cases[i].tool[0])
                assert_string_equal(err.tool, cases[i].tool);
            if (cases[i].param[0])
                assert_string_equal(err.param, cases[i].param);
            inf_buf_free(&r.log);
        }
    }
    /* Without a tool list any name is accepted; after an error feed keeps failing. */
    cJSON *msg;
    struct inf_dsml_error err;
    struct ctx_err e = {0};
    const char *t = "\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"rm_rf\">\n" CALL_TAIL;
    struct inf_dsml_parser_opts o = {.mode = INF_DSML_CHAT};
    assert_int_equal(inf_dsml_parse(t, strlen(t), &o, &msg, &err, &e), 0);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(msg, "tool_calls"), 0), "function")
                            ->child->valuestring,
                        "rm_rf");
    cJSON_Delete(msg);
    struct inf_dsml_parser *p = inf_dsml_parser_new(&o, NULL, NULL);
    assert_int_equal(inf_dsml_parser_feed(p, "a<think>", 8, &e), CTX_EFORMAT);
    assert_int_equal(inf_dsml_parser_feed(p, "b", 1, &e), CTX_EFORMAT);
    assert_int_equal(inf_dsml_parser_finish(p, &e), CTX_EFORMAT);
    assert_non_null(strstr(e.msg, "<think>"));
    inf_dsml_parser_free(p);
    cJSON_Delete(tools);
}

static int stop_cb(void *ud, const struct inf_dsml_event *ev)
{
    (void)ud;
    return ev->type == INF_DSML_EV_CALL_BEGIN;
}

static void test_parse_stream_order(void **state)
{
    (void)state;
    const char *t = "<tag>" CALL_HEAD PARAM("path", "true", "日本/a.c") PARAM("start_line", "false", "7")
        "</｜DSML｜invoke>\n<｜DSML｜invoke name=\"search\">\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>" INF_DSML_EOS;
    struct rec r = {0};
    cJSON *msg;
    assert_int_equal(parse_chunked(t, strlen(t), INF_DSML_CHAT, NULL, 1, &r, &msg, NULL), 0);
    assert_string_equal(r.log.p, "C\n[call 0 read_file]\n\n[param path 1]\nV\n[/param path 10]\n\n[param start_line 0]\n"
                                 "V\n[/param start_line 1]\n\n[/call 0 {\"path\": \"日本/a.c\", \"start_line\": 7}]\n"
                                 "\n[call 1 search]\n\n[/call 1 {}]\n\n[done]\n");
    char *s = cJSON_PrintUnformatted(msg);
    assert_string_equal(s, "{\"role\":\"assistant\",\"content\":\"<tag>\",\"reasoning_content\":\"\",\"tool_calls\":["
                           "{\"type\":\"function\",\"function\":{\"name\":\"read_file\",\"arguments\":\"{\\\"path\\\": "
                           "\\\"日本/a.c\\\", \\\"start_line\\\": 7}\"}},{\"type\":\"function\",\"function\":{\"name\":"
                           "\"search\",\"arguments\":\"{}\"}}]}");
    free(s);
    cJSON_Delete(msg);
    inf_buf_free(&r.log);
    /* A callback can stop the parse. */
    struct inf_dsml_parser_opts o = {.mode = INF_DSML_CHAT};
    struct inf_dsml_parser *p = inf_dsml_parser_new(&o, stop_cb, NULL);
    struct ctx_err e = {0};
    assert_int_equal(inf_dsml_parser_feed(p, t, strlen(t), &e), CTX_ECANCELED);
    inf_dsml_parser_free(p);
    /* UTF-8 split across feeds never reaches a delta half-cut. */
    const char *u = "日本語" INF_DSML_EOS;
    struct rec r2 = {0};
    assert_int_equal(parse_chunked(u, strlen(u), INF_DSML_CHAT, NULL, 1, &r2, &msg, NULL), 0);
    assert_string_equal(cJSON_GetObjectItem(msg, "content")->valuestring, "日本語");
    cJSON_Delete(msg);
    inf_buf_free(&r2.log);
}

static void test_pyjson(void **state)
{
    (void)state;
    struct {
        double v;
        const char *s;
    } fl[] = {{0.1, "0.1"}, {1e16, "1e+16"}, {1e-5, "1e-05"}, {123.0, "123.0"}, {-0.0, "-0.0"},
              {1.5e300, "1.5e+300"}, {0.0001, "0.0001"}, {123456789012345.6, "123456789012345.6"},
              {2.5, "2.5"}, {1e15, "1000000000000000.0"}};
    for (size_t i = 0; i < sizeof fl / sizeof fl[0]; i++) {
        struct inf_buf b = {0};
        inf_py_float_repr(&b, fl[i].v);
        assert_string_equal(b.p, fl[i].s);
        inf_buf_free(&b);
    }
    const char *in = " {\"a\":1,\"b\":[1.0,2e3,-0,1E-7,true,null,NaN],\"c\":\"x\\u00e9\\n\\ud83d\\ude80/\\/\",\"a\":2} ";
    struct inf_buf b = {0};
    size_t at;
    assert_int_equal(inf_py_reserialize(in, strlen(in), &b, &at), 0);
    assert_string_equal(b.p, "{\"a\": 2, \"b\": [1.0, 2000.0, 0, 1e-07, true, null, NaN], \"c\": \"xé\\n🚀//\"}");
    inf_buf_free(&b);
    const char *bad[] = {"", "01", "{\"a\" 1}", "[1,]", "\"raw\ttab\"", "tru", "{\"a\":1}x", "\"\\x\"", "1.", "-"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct inf_buf o = {0};
        if (inf_py_reserialize(bad[i], strlen(bad[i]), &o, &at) != -1)
            fail_msg("accepted \"%s\"", bad[i]);
        inf_buf_free(&o);
    }
    struct inf_py_member *m;
    size_t n;
    assert_int_equal(inf_py_object_members("[1]", 3, &m, &n, &at), -2);
    assert_int_equal(inf_py_object_members("{\"k\": \"v\\\"\", \"n\": {\"x\": [1, 2]}}", 32, &m, &n, &at), 0);
    assert_int_equal(n, 2);
    assert_true(m[0].is_string);
    assert_string_equal(m[0].value, "v\"");
    assert_false(m[1].is_string);
    assert_string_equal(m[1].value, "{\"x\": [1, 2]}");
    inf_py_members_free(m, n);
    cJSON *c = cJSON_Parse("{\"s\": \"a\\u0001\\\"\", \"i\": -3, \"f\": 0.25, \"big\": 1e20, \"l\": [], \"o\": {}}");
    inf_py_dump_cjson(&b, c);
    assert_string_equal(b.p, "{\"s\": \"a\\u0001\\\"\", \"i\": -3, \"f\": 0.25, \"big\": 1e+20, \"l\": [], \"o\": {}}");
    inf_buf_free(&b);
    cJSON_Delete(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encode_vectors),  cmocka_unit_test(test_encode_official),
        cmocka_unit_test(test_fixed_strings),   cmocka_unit_test(test_encode_errors),
        cmocka_unit_test(test_parse_vectors),   cmocka_unit_test(test_parse_encode_roundtrip),
        cmocka_unit_test(test_parse_malformed), cmocka_unit_test(test_parse_stream_order),
        cmocka_unit_test(test_pyjson),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
