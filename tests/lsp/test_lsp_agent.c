/* Integration: the agent side of `ctx lsp` at the protocol level, with a real ctxd: code actions,
 * inline completion through fim.complete (round trip checked against a direct fim.complete, and
 * cancelled by typing, by a newer request, by $/cancelRequest, by its latency budget), Fix through
 * agent.run (suggest) and workspace/applyEdit with the exact edit, diagnostics published after a
 * save (review), Explain and ctx.ask answers, server-created $/progress, cancelling a long answer,
 * unsaved buffers reaching ctxd.
 * The agent's model output is forced (ctxd --forced-completions) so answers, diffs and findings are
 * exact. argv[1] = ctx, argv[2] = ctxd. */
#include "lsp_harness.h"

#include <limits.h>

#include "../daemon/harness.h"

#define D "\xEF\xBD\x9C" "DSML" "\xEF\xBD\x9C" /* ｜DSML｜ */
#define EOS "<\xEF\xBD\x9C" "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>"
#define CALLS(x) "</think>\n\n<" D "tool_calls>\n" x "\n</" D "tool_calls>"
#define INVOKE(name, params) "<" D "invoke name=\"" name "\">\n" params "\n</" D "invoke>"
#define PS(name, v) "<" D "parameter name=\"" name "\" string=\"true\">" v "</" D "parameter>"
#define PJ(name, v) "<" D "parameter name=\"" name "\" string=\"false\">" v "</" D "parameter>"
#define FINAL(text) "</think>" text EOS
#define FINDINGS "```findings\n[{\"file\": \"src/math.c\", \"line\": 3, \"severity\": \"warning\", " \
                 "\"message\": \"add subtracts\", \"replacement\": \"    return a + b;\\n\"}]\n```"

#define MATH "int add(int a, int b)\n{\n    return a - b;\n}\n"
#define MATH_JSON "int add(int a, int b)\\n{\\n    return a - b;\\n}\\n"

static char repo[128], uri[200];
static pid_t dpid;

/* A repository with src/math.c and a ctxd on the test's socket forced to produce `completions`
 * (NULL: none; the model samples). */
/* Set by a test that needs completions which run long whatever the text: the synthetic model's
 * random weights rarely stop, the bundled trained model (the default) often stops at once. */
static const char *synthetic_model;

static void start_daemon(struct lsp *l, const char *const *completions)
{
    snprintf(repo, sizeof repo, "%s/repo", l->dir);
    setenv("HOME", l->dir, 1);
    setenv("GIT_CONFIG_NOSYSTEM", "1", 1);
    test_sh("git init -q '%s' && cd '%s' && git config user.email t@example.com && git config user.name T && "
       "mkdir -p src && printf 'int add(int a, int b)\\n{\\n    return a - b;\\n}\\n' > src/math.c && "
       "git add -A && git commit -q -m one",
       repo, repo);
    char real[PATH_MAX];
    assert_non_null(realpath(repo, real));
    assert_true(strlen(real) < 120);
    memcpy(repo, real, strlen(real) + 1);
    snprintf(uri, sizeof uri, "file://%s/src/math.c", repo);
    char forced[160], dlog[160];
    snprintf(forced, sizeof forced, "%s/forced.json", l->dir);
    snprintf(dlog, sizeof dlog, "%s/ctxd.log", l->dir);
    cJSON *arr = cJSON_CreateArray();
    for (const char *const *c = completions; c && *c; c++)
        cJSON_AddItemToArray(arr, cJSON_CreateString(*c));
    char *text = cJSON_PrintUnformatted(arr);
    FILE *f = fopen(forced, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    free(text);
    cJSON_Delete(arr);
    /* NULL-terminated early unless a test asks for the synthetic model (random weights run long) */
    char *const argv[] = {(char *)ctxd_bin, "--socket", l->sock, "--no-cache", "--budget", "4096", "--threads", "2",
                          "--no-watch", "--state", l->dir, "--forced-completions", forced,
                          synthetic_model ? "--synthetic" : NULL, (char *)synthetic_model, NULL};
    dpid = dh_start(l->sock, dlog, argv);
    if (dpid <= 0)
        fail_msg("ctxd did not start");
}

static void stop_daemon(void)
{
    if (dpid > 0)
        dh_teardown(dpid, "");
    dpid = 0;
}

/* initialize with the repository as the workspace folder, progress support and these options. */
static void init_root(struct lsp *l, const char *options)
{
    char msg[2048];
    snprintf(msg, sizeof msg,
             "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{\"processId\":null,"
             "\"rootUri\":\"file://%s\",\"capabilities\":{\"window\":{\"workDoneProgress\":true}},"
             "\"initializationOptions\":%s}}",
             repo, options);
    sendv(l, 2, msg, INITIALIZED);
    cJSON *r = reply(l);
    assert_id_int(r, 1);
    assert_null(cJSON_GetObjectItemCaseSensitive(r, "error"));
    cJSON_Delete(r);
}

static void open_math(struct lsp *l, int version)
{
    char msg[1024];
    snprintf(msg, sizeof msg,
             "{\"jsonrpc\":\"2.0\",\"method\":\"textDocument/didOpen\",\"params\":{\"textDocument\":{\"uri\":\"%s\","
             "\"languageId\":\"c\",\"version\":%d,\"text\":\"" MATH_JSON "\"}}}",
             uri, version);
    send1(l, msg);
}

/* A request from the server (method and id), taken from the kept messages or read until it comes. */
static cJSON *expect_request(struct lsp *l, const char *method)
{
    for (;;) {
        for (int i = 0; i < l->nnotes; i++) {
            const cJSON *m = cJSON_GetObjectItemCaseSensitive(l->notes[i], "method");
            if (strcmp(m->valuestring, method) == 0 && cJSON_GetObjectItemCaseSensitive(l->notes[i], "id")) {
                cJSON *n = l->notes[i];
                memmove(&l->notes[i], &l->notes[i + 1], (size_t)(l->nnotes - i - 1) * sizeof *l->notes);
                l->nnotes--;
                return n;
            }
        }
        cJSON *m = recv_msg(l);
        if (!m)
            fail_msg("EOF while waiting for the request %s", method);
        assert_true(l->nnotes < MAXNOTE);
        l->notes[l->nnotes++] = m;
    }
}

static void answer(struct lsp *l, const cJSON *req, const char *result)
{
    char msg[512];
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(req, "id");
    assert_true(cJSON_IsNumber(id));
    snprintf(msg, sizeof msg, "{\"jsonrpc\":\"2.0\",\"id\":%d,\"result\":%s}", id->valueint, result);
    send1(l, msg);
}

/* The kept $/progress notifications for a token, as "begin,report,...,end". */
static void progress_kinds(struct lsp *l, const char *token, char *out, size_t cap)
{
    out[0] = 0;
    for (int i = 0; i < l->nnotes;) {
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(l->notes[i], "method");
        const cJSON *t = path(l->notes[i], "params.token");
        if (strcmp(m->valuestring, "$/progress") == 0 && cJSON_IsString(t) && strcmp(t->valuestring, token) == 0) {
            size_t n = strlen(out);
            snprintf(out + n, cap - n, "%s%s", n ? "," : "", str(l->notes[i], "params.value.kind"));
            cJSON_Delete(l->notes[i]);
            memmove(&l->notes[i], &l->notes[i + 1], (size_t)(l->nnotes - i - 1) * sizeof *l->notes);
            l->nnotes--;
        } else {
            i++;
        }
    }
}

static void drop_notes(struct lsp *l)
{
    for (int i = 0; i < l->nnotes; i++)
        cJSON_Delete(l->notes[i]);
    l->nnotes = 0;
}

/* ---- tests ---- */

static void test_code_actions(void **state)
{
    struct lsp *l = *state;
    start(l, ctxd_bin, NULL);
    init(l);
    send1(l, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"textDocument/codeAction\",\"params\":{\"textDocument\":{\"uri\":"
             "\"file:///w/a.c\"},\"range\":{\"start\":{\"line\":1,\"character\":2},\"end\":{\"line\":3,\"character\":0}},"
             "\"context\":{\"diagnostics\":[{\"range\":{\"start\":{\"line\":1,\"character\":0},\"end\":{\"line\":1,"
             "\"character\":4}},\"message\":\"unused x\"}]}}}");
    cJSON *r = reply(l);
    assert_id_int(r, 2);
    const cJSON *list = path(r, "result");
    assert_int_equal(cJSON_GetArraySize(list), 4);
    const char *want[][3] = {{"ctx: Explain", "ctx.explain", NULL},
                             {"ctx: Fix", "ctx.fix", "quickfix"},
                             {"ctx: Refactor\xE2\x80\xA6", "ctx.refactor", "refactor.rewrite"},
                             {"ctx: Write tests", "ctx.writeTests", "source"}};
    for (int i = 0; i < 4; i++) {
        const cJSON *a = cJSON_GetArrayItem(list, i);
        assert_string_equal(str(a, "title"), want[i][0]);
        assert_string_equal(str(a, "command.command"), want[i][1]);
        if (want[i][2])
            assert_string_equal(str(a, "kind"), want[i][2]);
        else
            assert_null(path(a, "kind"));
        assert_string_equal(str(a, "command.arguments.0.uri"), "file:///w/a.c");
        assert_int_equal((int)num(a, "command.arguments.0.range.start.character"), 2);
        assert_int_equal((int)num(a, "command.arguments.0.range.end.line"), 3);
        assert_string_equal(str(a, "command.arguments.0.diagnostics.0"), "unused x");
    }
    /* the Fix action names the diagnostic it fixes */
    assert_string_equal(str(list, "1.diagnostics.0.message"), "unused x");
    cJSON_Delete(r);
    /* context.only filters by kind; an untitled buffer has no file for the agent */
    sendv(l, 2,
          "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"textDocument/codeAction\",\"params\":{\"textDocument\":{\"uri\":"
          "\"file:///w/a.c\"},\"range\":{\"start\":{\"line\":0,\"character\":0},\"end\":{\"line\":0,\"character\":0}},"
          "\"context\":{\"diagnostics\":[],\"only\":[\"refactor\"]}}}",
          "{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"textDocument/codeAction\",\"params\":{\"textDocument\":{\"uri\":"
          "\"untitled:1\"},\"range\":{\"start\":{\"line\":0,\"character\":0},\"end\":{\"line\":0,\"character\":0}},"
          "\"context\":{\"diagnostics\":[]}}}");
    r = reply(l);
    assert_id_int(r, 3);
    assert_int_equal(cJSON_GetArraySize(path(r, "result")), 1);
    assert_string_equal(str(r, "result.0.command.command"), "ctx.refactor");
    cJSON_Delete(r);
    r = reply(l);
    assert_id_int(r, 4);
    assert_int_equal(cJSON_GetArraySize(path(r, "result")), 0);
    cJSON_Delete(r);
    /* bad params: named, and the server goes on */
    sendv(l, 5,
          "{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"textDocument/codeAction\",\"params\":{\"textDocument\":{}}}",
          "{\"jsonrpc\":\"2.0\",\"id\":6,\"method\":\"textDocument/inlineCompletion\",\"params\":{\"textDocument\":"
          "{\"uri\":\"file:///w/a.c\"},\"position\":{\"line\":-1,\"character\":0}}}",
          "{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"workspace/executeCommand\",\"params\":{\"command\":\"ctx.fix\","
          "\"arguments\":[{\"uri\":\"file:///w/a.c\"}]}}",
          "{\"jsonrpc\":\"2.0\",\"id\":8,\"method\":\"workspace/executeCommand\",\"params\":{\"command\":\"ctx.ask\","
          "\"arguments\":[7]}}",
          "{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"workspace/executeCommand\",\"params\":{\"command\":\"ctx.nope\"}}");
    for (int id = 5; id <= 9; id++) {
        r = reply(l);
        assert_id_int(r, id);
        assert_int_equal(err_code(r), -32602);
        if (id == 7)
            assert_non_null(strstr(err_msg(r), "range"));
        if (id == 8)
            assert_non_null(strstr(err_msg(r), "question"));
        cJSON_Delete(r);
    }
    /* an inline completion for a document that is not open has no items (and starts nothing) */
    send1(l, "{\"jsonrpc\":\"2.0\",\"id\":10,\"method\":\"textDocument/inlineCompletion\",\"params\":{\"textDocument\":"
             "{\"uri\":\"file:///w/none.c\"},\"position\":{\"line\":0,\"character\":0},\"context\":{\"triggerKind\":2}}}");
    r = reply(l);
    assert_int_equal(cJSON_GetArraySize(path(r, "result.items")), 0);
    cJSON_Delete(r);
    assert_int_equal(l->nnotes, 0);
    shutdown_exit(l, 0);
    assert_int_not_equal(access(l->sock, F_OK), 0); /* nothing needed ctxd */
}

#define MAIN_JSON "int main(void)\\n{\\n"

static void test_inline_completion(void **state)
{
    struct lsp *l = *state;
    if (!dh_have_tokenizer())
        skip();
    synthetic_model = "tiny"; /* the cancellation half below needs completions that run long */
    start_daemon(l, NULL);
    synthetic_model = NULL;
    start(l, ctxd_bin, NULL);
    init_root(l, "{\"openRepository\":false,\"reviewOnSave\":false,\"inlineCompletion\":{\"maxTokens\":8,"
                 "\"budget\":512}}");
    /* "ab😀" then the cursor after the emoji (UTF-16 column 4), then the rest of the line */
    send1(l, "{\"jsonrpc\":\"2.0\",\"method\":\"textDocument/didOpen\",\"params\":{\"textDocument\":{\"uri\":"
             "\"file:///w/m.c\",\"languageId\":\"c\",\"version\":1,\"text\":\"int x;\\nab\\ud83d\\ude00 = f();\\n\"}}}");
    const char *req = "{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"textDocument/inlineCompletion\",\"params\":{"
                      "\"textDocument\":{\"uri\":\"file:///w/m.c\"},\"position\":{\"line\":1,\"character\":4},"
                      "\"context\":{\"triggerKind\":2}}}";
    char msg[512];
    snprintf(msg, sizeof msg, req, 2);
    send1(l, msg);
    cJSON *r = reply(l);
    assert_id_int(r, 2);
    const cJSON *items = path(r, "result.items");
    assert_true(cJSON_IsArray(items));
    /* the same request straight to ctxd: the server sent the buffer split at the cursor */
    struct ctxd_client *c;
    struct ctx_err e = {0};
    assert_int_equal(ctxd_client_connect(l->sock, &c, &e), 0);
    cJSON *p = cJSON_CreateObject(), *direct = NULL;
    cJSON_AddStringToObject(p, "file", "/w/m.c");
    cJSON_AddStringToObject(p, "prefix", "int x;\nab\xF0\x9F\x98\x80");
    cJSON_AddStringToObject(p, "suffix", " = f();\n");
    cJSON_AddNumberToObject(p, "max_tokens", 8);
    cJSON_AddNumberToObject(p, "budget", 512);
    assert_int_equal(ctxd_client_call(c, "fim.complete", p, NULL, NULL, 60000, &direct, &e), 0);
    ctxd_client_close(c);
    const char *text = str(direct, "text");
    if (text[0]) {
        assert_int_equal(cJSON_GetArraySize(items), 1);
        assert_string_equal(str(items, "0.insertText"), text);
        assert_int_equal((int)num(items, "0.range.start.line"), 1);
        assert_int_equal((int)num(items, "0.range.start.character"), 4);
        assert_int_equal((int)num(items, "0.range.end.character"), 4);
    } else {
        assert_int_equal(cJSON_GetArraySize(items), 0);
    }
    cJSON_Delete(direct);
    cJSON_Delete(r);
    shutdown_exit(l, 0);

    /* long completions (the synthetic model runs to ~200 tokens, seconds on a CPU): typing, a newer
     * request and $/cancelRequest cancel them; the latency budget answers with no items */
    start(l, ctxd_bin, NULL);
    init_root(l, "{\"openRepository\":false,\"reviewOnSave\":false,\"inlineCompletion\":{\"maxTokens\":1024,"
                 "\"timeoutMs\":400}}");
    send1(l, "{\"jsonrpc\":\"2.0\",\"method\":\"textDocument/didOpen\",\"params\":{\"textDocument\":{\"uri\":"
             "\"file:///w/n.c\",\"languageId\":\"c\",\"version\":1,\"text\":\"" MAIN_JSON "\"}}}");
    const char *req2 = "{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"textDocument/inlineCompletion\",\"params\":{"
                       "\"textDocument\":{\"uri\":\"file:///w/n.c\"},\"position\":{\"line\":2,\"character\":0},"
                       "\"context\":{\"triggerKind\":2}}}";
    char a[512], b[512];
    snprintf(a, sizeof a, req2, 10);
    sendv(l, 2, a,
          "{\"jsonrpc\":\"2.0\",\"method\":\"textDocument/didChange\",\"params\":{\"textDocument\":{\"uri\":"
          "\"file:///w/n.c\",\"version\":2},\"contentChanges\":[{\"range\":{\"start\":{\"line\":2,\"character\":0},"
          "\"end\":{\"line\":2,\"character\":0}},\"text\":\"r\"}]}}");
    expect_error(l, 10, -32801); /* ContentModified */
    snprintf(a, sizeof a, req2, 11);
    snprintf(b, sizeof b, req2, 12);
    sendv(l, 2, a, b);
    expect_error(l, 11, -32802); /* superseded by 12 */
    send1(l, "{\"jsonrpc\":\"2.0\",\"method\":\"$/cancelRequest\",\"params\":{\"id\":12}}");
    expect_error(l, 12, -32800); /* running on ctxd, cancelled */
    long long t0 = now_ms();
    snprintf(a, sizeof a, req2, 13);
    send1(l, a);
    r = reply(l);
    assert_id_int(r, 13);
    assert_int_equal(cJSON_GetArraySize(path(r, "result.items")), 0); /* past its 400 ms */
    assert_true(now_ms() - t0 >= 400);
    cJSON_Delete(r);
    /* the daemon dropped every cancelled completion: a quick one still answers */
    drop_notes(l);
    shutdown_exit(l, 0);
    stop_daemon();
}

static void test_fix_applies_edit(void **state)
{
    struct lsp *l = *state;
    if (!dh_have_tokenizer())
        skip();
    static const char *const c[] = {
        CALLS(INVOKE("edit_file", PS("path", "src/math.c") "\n" PS("old_string", "a - b") "\n" PS("new_string", "a + b"))),
        FINAL("add adds now."), NULL};
    start_daemon(l, c);
    start(l, ctxd_bin, NULL);
    init_root(l, "{\"openRepository\":false,\"reviewOnSave\":false}");
    open_math(l, 3);
    char msg[1024];
    snprintf(msg, sizeof msg,
             "{\"jsonrpc\":\"2.0\",\"id\":20,\"method\":\"workspace/executeCommand\",\"params\":{\"command\":\"ctx.fix\","
             "\"arguments\":[{\"uri\":\"%s\",\"range\":{\"start\":{\"line\":2,\"character\":0},\"end\":{\"line\":2,"
             "\"character\":17}},\"diagnostics\":[\"add subtracts\"]}]}}",
             uri);
    send1(l, msg);
    /* the server asks for a progress token first */
    cJSON *create = expect_request(l, "window/workDoneProgress/create");
    char token[64];
    snprintf(token, sizeof token, "%s", str(create, "params.token"));
    answer(l, create, "null");
    cJSON_Delete(create);
    cJSON *apply = expect_request(l, "workspace/applyEdit");
    assert_string_equal(str(apply, "params.label"), "ctx: Fix");
    char *got = cJSON_PrintUnformatted(path(apply, "params.edit"));
    char want[1024];
    /* "    return a - b;": the '-' at column 13 becomes '+', in the open buffer (version 3) */
    snprintf(want, sizeof want,
             "{\"documentChanges\":[{\"textDocument\":{\"uri\":\"%s\",\"version\":3},\"edits\":[{\"range\":{\"start\":"
             "{\"line\":2,\"character\":13},\"end\":{\"line\":2,\"character\":14}},\"newText\":\"+\"}]}]}",
             uri);
    assert_string_equal(got, want);
    free(got);
    answer(l, apply, "{\"applied\":true}");
    cJSON_Delete(apply);
    cJSON *r = reply(l);
    assert_id_int(r, 20);
    assert_string_equal(str(r, "result.stop"), "final");
    assert_non_null(strstr(str(r, "result.diff"), "\n-    return a - b;\n+    return a + b;\n"));
    assert_int_equal((int)num(r, "result.edit.documentChanges.0.edits.0.range.start.character"), 13);
    cJSON_Delete(r);
    char kinds[256];
    progress_kinds(l, token, kinds, sizeof kinds);
    assert_true(strncmp(kinds, "begin,", 6) == 0);
    assert_non_null(strstr(kinds, "report"));
    assert_true(strlen(kinds) > 4 && strcmp(kinds + strlen(kinds) - 4, ",end") == 0);
    /* the file on disk is untouched: the editor applies the edit */
    char *disk = NULL;
    size_t n = 0;
    char fp[256];
    snprintf(fp, sizeof fp, "%s/src/math.c", repo);
    struct ctx_err e = {0};
    assert_int_equal(ctx_read_file(fp, 4096, &disk, &n, &e), 0);
    assert_string_equal(disk, MATH);
    free(disk);
    drop_notes(l);
    shutdown_exit(l, 0);
    stop_daemon();
}

static void test_review_on_save(void **state)
{
    struct lsp *l = *state;
    if (!dh_have_tokenizer())
        skip();
    static const char *const c[] = {FINAL(FINDINGS), NULL};
    start_daemon(l, c);
    start(l, ctxd_bin, NULL);
    init_root(l, "{\"openRepository\":false,\"reviewDebounceMs\":100}");
    open_math(l, 1);
    char msg[1024];
    /* two saves in a row: debounced into one review */
    snprintf(msg, sizeof msg,
             "{\"jsonrpc\":\"2.0\",\"method\":\"textDocument/didSave\",\"params\":{\"textDocument\":{\"uri\":\"%s\"},"
             "\"text\":\"" MATH_JSON "\"}}",
             uri);
    sendv(l, 2, msg, msg);
    cJSON *create = expect_request(l, "window/workDoneProgress/create");
    answer(l, create, "null");
    cJSON_Delete(create);
    cJSON *pub = expect_note(l, "textDocument/publishDiagnostics", NULL);
    assert_string_equal(str(pub, "params.uri"), uri);
    assert_int_equal((int)num(pub, "params.version"), 1);
    char *got = cJSON_PrintUnformatted(path(pub, "params.diagnostics"));
    assert_string_equal(got, "[{\"range\":{\"start\":{\"line\":2,\"character\":0},\"end\":{\"line\":2,\"character\":17}},"
                             "\"severity\":2,\"source\":\"ctx\",\"message\":\"add subtracts\",\"data\":"
                             "{\"replacement\":\"    return a + b;\\n\"}}]");
    free(got);
    cJSON_Delete(pub);
    /* ctx.review on demand answers with the count (the forced findings are used up: the model's
     * noise then has no findings block, and the daemon says so) */
    drop_notes(l);
    shutdown_exit(l, 0);
    stop_daemon();
}

static void test_explain_ask_cancel(void **state)
{
    struct lsp *l = *state;
    if (!dh_have_tokenizer())
        skip();
    static const char *const c[] = {FINAL("It returns a minus b."), FINAL("Forty-two."), NULL};
    start_daemon(l, c);
    start(l, ctxd_bin, NULL);
    init_root(l, "{\"openRepository\":false,\"reviewOnSave\":false}");
    open_math(l, 1);
    char msg[1024];
    snprintf(msg, sizeof msg,
             "{\"jsonrpc\":\"2.0\",\"id\":30,\"method\":\"workspace/executeCommand\",\"params\":{\"command\":"
             "\"ctx.explain\",\"workDoneToken\":\"w30\",\"arguments\":[{\"uri\":\"%s\",\"range\":{\"start\":{\"line\":0,"
             "\"character\":0},\"end\":{\"line\":3,\"character\":1}}}]}}",
             uri);
    send1(l, msg);
    cJSON *r = reply(l);
    assert_id_int(r, 30);
    assert_string_equal(str(r, "result.answer"), "It returns a minus b.");
    cJSON_Delete(r);
    cJSON *n = expect_note(l, "window/showMessage", "It returns a minus b.");
    assert_int_equal((int)num(n, "params.type"), 3);
    cJSON_Delete(n);
    char kinds[256];
    progress_kinds(l, "w30", kinds, sizeof kinds); /* the client's token: no create request */
    assert_true(strncmp(kinds, "begin", 5) == 0 && strcmp(kinds + strlen(kinds) - 3, "end") == 0);
    send1(l, "{\"jsonrpc\":\"2.0\",\"id\":31,\"method\":\"workspace/executeCommand\",\"params\":{\"command\":\"ctx.ask\","
             "\"arguments\":[\"What is the answer?\"]}}");
    cJSON *create = expect_request(l, "window/workDoneProgress/create");
    answer(l, create, "null");
    cJSON_Delete(create);
    r = reply(l);
    assert_id_int(r, 31);
    assert_string_equal(str(r, "result.answer"), "Forty-two.");
    cJSON_Delete(r);
    /* nothing forced is left: the model samples a long answer, which $/cancelRequest stops */
    send1(l, "{\"jsonrpc\":\"2.0\",\"id\":32,\"method\":\"workspace/executeCommand\",\"params\":{\"command\":\"ctx.ask\","
             "\"arguments\":[\"And now?\"]}}");
    create = expect_request(l, "window/workDoneProgress/create");
    answer(l, create, "null");
    cJSON_Delete(create);
    send1(l, "{\"jsonrpc\":\"2.0\",\"method\":\"$/cancelRequest\",\"params\":{\"id\":32}}");
    expect_error(l, 32, -32800);
    drop_notes(l);
    /* and ctxd is free for the next one */
    send1(l, "{\"jsonrpc\":\"2.0\",\"id\":33,\"method\":\"workspace/executeCommand\",\"params\":{\"command\":\"ctx.status\"}}");
    r = reply(l);
    assert_id_int(r, 33);
    assert_true(num(r, "result.daemon.pid") > 0);
    cJSON_Delete(r);
    drop_notes(l);
    shutdown_exit(l, 0);
    stop_daemon();
}

/* The text of the last tool result of an agent.run (agent.event notifications). */
struct tool_text {
    char text[4096];
};

static int on_tool_result(void *ud, const char *method, const cJSON *params)
{
    struct tool_text *t = ud;
    const cJSON *k = cJSON_GetObjectItemCaseSensitive(params, "kind"), *x = cJSON_GetObjectItemCaseSensitive(params, "text");
    if (strcmp(method, "agent.event") == 0 && cJSON_IsString(k) && strcmp(k->valuestring, "tool_result") == 0 &&
        cJSON_IsString(x))
        snprintf(t->text, sizeof t->text, "%s", x->valuestring);
    return 0;
}

/* The number of unsaved buffers ctxd holds for the repository, once it is `want` (or the last
 * value seen after 10 s). */
static int daemon_buffers(struct lsp *l, int want)
{
    int n = -1;
    for (int i = 0; i < 500 && n != want; i++) {
        struct ctxd_client *c;
        struct ctx_err e = {0};
        assert_int_equal(ctxd_client_connect(l->sock, &c, &e), 0);
        cJSON *p = cJSON_CreateObject(), *r = NULL;
        cJSON_AddStringToObject(p, "path", repo);
        n = ctxd_client_call(c, "repo.status", p, NULL, NULL, 10000, &r, &e) == 0 ? (int)num(r, "buffers") : -1;
        cJSON_Delete(r);
        ctxd_client_close(c);
        if (n != want)
            usleep(20000);
    }
    return n;
}

/* Unsaved text reaches ctxd: didOpen + didChange become a buffer.update (debounced) on the
 * server's kept connection, and Explain's agent.run names that connection (buffers_from), so the
 * tools read the editor's text: the forced read_file of line 6, which only the buffer has,
 * succeeds, and an edit of the buffered file is refused (the disk stays as it was). didSave
 * closes the buffer: the disk is current again. */
static void test_unsaved_buffers(void **state)
{
    struct lsp *l = *state;
    if (!dh_have_tokenizer())
        skip();
    static const char *const c[] = {
        CALLS(INVOKE("read_file", PS("path", "src/math.c") "\n" PJ("start_line", "6")) "\n" INVOKE(
            "edit_file", PS("path", "src/math.c") "\n" PS("old_string", "int add(int a, int b)") "\n"
                             PS("new_string", "long add(long a, long b)"))),
        FINAL("It adds; only_here returns 7."), CALLS(INVOKE("read_file", PS("path", "src/math.c"))), FINAL("Read."),
        NULL};
    start_daemon(l, c);
    start(l, ctxd_bin, NULL);
    init_root(l, "{\"openRepository\":false,\"reviewOnSave\":false,\"bufferDebounceMs\":50}");
    open_math(l, 1);
    char msg[2048];
    snprintf(msg, sizeof msg,
             "{\"jsonrpc\":\"2.0\",\"method\":\"textDocument/didChange\",\"params\":{\"textDocument\":{\"uri\":\"%s\","
             "\"version\":2},\"contentChanges\":[{\"text\":\"int add(int a, int b)\\n{\\n    return a + b;\\n}\\n\\n"
             "int only_here(void)\\n{\\n    return 7;\\n}\\n\"}]}}",
             uri);
    send1(l, msg);
    /* the debounce passes (the server's loop wakes for it) and ctxd holds the buffer */
    assert_int_equal(daemon_buffers(l, 1), 1);
    snprintf(msg, sizeof msg,
             "{\"jsonrpc\":\"2.0\",\"id\":40,\"method\":\"workspace/executeCommand\",\"params\":{\"command\":"
             "\"ctx.explain\",\"workDoneToken\":\"w40\",\"arguments\":[{\"uri\":\"%s\",\"range\":{\"start\":{\"line\":5,"
             "\"character\":0},\"end\":{\"line\":8,\"character\":1}}}]}}",
             uri);
    send1(l, msg);
    cJSON *r = reply(l);
    assert_id_int(r, 40);
    assert_string_equal(str(r, "result.answer"), "It adds; only_here returns 7.");
    const cJSON *calls = path(r, "result.tool_calls");
    assert_int_equal(cJSON_GetArraySize(calls), 2);
    const cJSON *rf = cJSON_GetArrayItem(calls, 0), *ef = cJSON_GetArrayItem(calls, 1);
    assert_string_equal(str(rf, "tool"), "read_file");
    assert_true(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(rf, "is_error"))); /* line 6 exists in the buffer */
    assert_string_equal(str(ef, "tool"), "edit_file");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(ef, "is_error"))); /* unsaved changes there */
    assert_int_equal(cJSON_GetArraySize(path(r, "result.changed")), 0);
    cJSON_Delete(r);
    drop_notes(l);
    /* the buffer ctxd holds is the editor's text: ctx.status names the connection holding it, and an
     * agent.run naming that connection reads the unsaved text */
    send1(l, "{\"jsonrpc\":\"2.0\",\"id\":41,\"method\":\"workspace/executeCommand\",\"params\":{\"command\":\"ctx.status\"}}");
    r = reply(l);
    assert_id_int(r, 41);
    assert_int_equal((int)num(r, "result.lsp.buffers.held"), 1);
    double client = num(r, "result.lsp.buffers.client");
    assert_true(client > 0);
    cJSON_Delete(r);
    struct ctxd_client *dc;
    struct ctx_err ce = {0};
    assert_int_equal(ctxd_client_connect(l->sock, &dc, &ce), 0);
    cJSON *p = cJSON_CreateObject(), *res = NULL;
    cJSON_AddStringToObject(p, "path", repo);
    cJSON_AddStringToObject(p, "prompt", "Read it.");
    cJSON_AddNumberToObject(p, "buffers_from", client);
    struct tool_text tt = {0};
    assert_int_equal(ctxd_client_call(dc, "agent.run", p, on_tool_result, &tt, 120000, &res, &ce), 0);
    ctxd_client_close(dc);
    assert_non_null(strstr(tt.text, "return a + b;"));
    assert_non_null(strstr(tt.text, "int only_here(void)"));
    assert_null(strstr(tt.text, "a - b"));
    cJSON_Delete(res);
    char file[200], *disk = NULL;
    size_t dlen;
    struct ctx_err e = {0};
    snprintf(file, sizeof file, "%s/src/math.c", repo);
    assert_int_equal(ctx_read_file(file, 1 << 20, &disk, &dlen, &e), 0);
    assert_string_equal(disk, MATH);
    free(disk);
    drop_notes(l);
    /* a save: the buffer is closed on ctxd */
    snprintf(msg, sizeof msg,
             "{\"jsonrpc\":\"2.0\",\"method\":\"textDocument/didSave\",\"params\":{\"textDocument\":{\"uri\":\"%s\"}}}",
             uri);
    send1(l, msg);
    assert_int_equal(daemon_buffers(l, 0), 0);
    shutdown_exit(l, 0);
    stop_daemon();
}

static int teardown_all(void **state)
{
    stop_daemon();
    return teardown(state);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s CTX CTXD\n", argv[0]);
        return 2;
    }
    ctx_bin = argv[1];
    ctxd_bin = argv[2];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_code_actions, setup, teardown_all),
        cmocka_unit_test_setup_teardown(test_inline_completion, setup, teardown_all),
        cmocka_unit_test_setup_teardown(test_fix_applies_edit, setup, teardown_all),
        cmocka_unit_test_setup_teardown(test_review_on_save, setup, teardown_all),
        cmocka_unit_test_setup_teardown(test_explain_ask_cancel, setup, teardown_all),
        cmocka_unit_test_setup_teardown(test_unsaved_buffers, setup, teardown_all),
    };
    return cmocka_run_group_tests_name("lsp-agent", tests, NULL, NULL);
}
