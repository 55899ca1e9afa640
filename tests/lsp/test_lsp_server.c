/* Integration: LSP conformance of the real `ctx lsp` process, driven over pipes, with a real ctxd
 * (started on demand by the server) on a temporary socket. argv[1] = ctx, argv[2] = ctxd. */
#include "lsp_harness.h"

/* ---- tests ---- */

static void test_lifecycle(void **state)
{
    struct lsp *l = *state;
    start(l, ctxd_bin, NULL);
    send1(l, INIT);
    cJSON *r = reply(l);
    assert_id_int(r, 1);
    /* exactly the capabilities that work now, nothing more */
    const cJSON *caps = path(r, "result.capabilities");
    assert_true(cJSON_IsObject(caps));
    assert_int_equal(cJSON_GetArraySize(caps), 5);
    assert_string_equal(str(caps, "positionEncoding"), "utf-16");
    assert_int_equal(cJSON_GetArraySize(path(caps, "textDocumentSync")), 3);
    assert_true(cJSON_IsTrue(path(caps, "textDocumentSync.openClose")));
    assert_int_equal((int)num(caps, "textDocumentSync.change"), 2);
    assert_true(cJSON_IsTrue(path(caps, "textDocumentSync.save.includeText")));
    assert_int_equal(cJSON_GetArraySize(path(caps, "executeCommandProvider.commands")), 7);
    const char *cmds[] = {"ctx.status", "ctx.ask", "ctx.explain", "ctx.fix", "ctx.refactor", "ctx.writeTests",
                          "ctx.review"};
    for (int i = 0; i < 7; i++) {
        char key[64];
        snprintf(key, sizeof key, "executeCommandProvider.commands.%d", i);
        assert_string_equal(str(caps, key), cmds[i]);
    }
    assert_int_equal(cJSON_GetArraySize(path(caps, "codeActionProvider.codeActionKinds")), 3);
    assert_string_equal(str(caps, "codeActionProvider.codeActionKinds.0"), "quickfix");
    assert_string_equal(str(caps, "codeActionProvider.codeActionKinds.1"), "refactor.rewrite");
    assert_string_equal(str(caps, "codeActionProvider.codeActionKinds.2"), "source");
    assert_true(cJSON_IsObject(path(caps, "inlineCompletionProvider")));
    assert_string_equal(str(r, "result.serverInfo.name"), "ctx");
    cJSON_Delete(r);
    send1(l, INITIALIZED);
    /* a second initialize is refused */
    send1(l, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"initialize\",\"params\":{\"capabilities\":{}}}");
    expect_error(l, 2, -32600);
    /* after shutdown: requests are invalid, notifications ignored, exit gives 0 */
    send1(l, SHUTDOWN(3));
    r = reply(l);
    assert_id_int(r, 3);
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(r, "result")));
    cJSON_Delete(r);
    sendv(l, 2, "{\"jsonrpc\":\"2.0\",\"method\":\"textDocument/didOpen\",\"params\":{}}",
          "{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"workspace/executeCommand\",\"params\":{\"command\":\"ctx.status\"}}");
    expect_error(l, 4, -32600);
    send1(l, EXIT);
    assert_null(recv_msg(l));
    assert_int_equal(wait_exit(l), 0);
    assert_int_equal(l->nnotes, 0);
    /* ctx.status was never run, so no daemon was started */
    assert_int_not_equal(access(l->sock, F_OK), 0);
}

static void test_exit_without_shutdown(void **state)
{
    struct lsp *l = *state;
    start(l, ctxd_bin, NULL);
    init(l);
    send1(l, EXIT);
    assert_null(recv_msg(l));
    assert_int_equal(wait_exit(l), 1);
    /* input closed without exit: also 1 */
    start(l, ctxd_bin, NULL);
    init(l);
    close(l->in);
    l->in = -1;
    assert_null(recv_msg(l));
    assert_int_equal(wait_exit(l), 1);
    /* exit before initialize: 1, immediately */
    start(l, ctxd_bin, NULL);
    send1(l, EXIT);
    assert_null(recv_msg(l));
    assert_int_equal(wait_exit(l), 1);
}

static void test_before_initialize(void **state)
{
    struct lsp *l = *state;
    start(l, ctxd_bin, NULL);
    /* a request is refused with ServerNotInitialized; a notification is dropped without a word */
    sendv(l, 3, "{\"jsonrpc\":\"2.0\",\"method\":\"textDocument/didOpen\",\"params\":{\"textDocument\":{\"uri\":\"file:///x\","
                "\"languageId\":\"c\",\"version\":1,\"text\":\"x\"}}}",
          "{\"jsonrpc\":\"2.0\",\"id\":\"early\",\"method\":\"workspace/executeCommand\",\"params\":{\"command\":\"ctx.status\"}}",
          SHUTDOWN(5));
    cJSON *r = reply(l);
    assert_string_equal(str(r, "id"), "early");
    assert_int_equal(err_code(r), -32002);
    cJSON_Delete(r);
    expect_error(l, 5, -32002);
    assert_int_equal(l->nnotes, 0);
    init(l);
    shutdown_exit(l, 0);
    assert_int_not_equal(access(l->sock, F_OK), 0); /* the early ctx.status did not run */
}

static void test_bad_input(void **state)
{
    struct lsp *l = *state;
    start(l, ctxd_bin, "--max-message=");
    /* a bad option is a usage error */
    assert_int_equal(wait_exit(l), 2);
    start(l, ctxd_bin, NULL);
    init(l);
    /* malformed JSON: -32700 with id null, and the server carries on */
    sendv(l, 2, "{\"jsonrpc\":\"2.0\",\"id\":10,\"method\":", "{\"jsonrpc\":\"2.0\",\"id\":11,\"method\":\"nope/nothing\"}");
    cJSON *r = reply(l);
    assert_id_null(r);
    assert_int_equal(err_code(r), -32700);
    cJSON_Delete(r);
    expect_error(l, 11, -32601);
    /* not an object, no jsonrpc, a bad id type, params of the wrong type */
    sendv(l, 4, "[1,2]", "{\"id\":12,\"method\":\"shutdown\"}",
          "{\"jsonrpc\":\"2.0\",\"id\":{\"a\":1},\"method\":\"shutdown\"}",
          "{\"jsonrpc\":\"2.0\",\"id\":13,\"method\":\"workspace/executeCommand\",\"params\":7}");
    r = reply(l);
    assert_id_null(r);
    assert_int_equal(err_code(r), -32600);
    cJSON_Delete(r);
    expect_error(l, 12, -32600);
    r = reply(l);
    assert_id_null(r);
    assert_int_equal(err_code(r), -32600);
    cJSON_Delete(r);
    expect_error(l, 13, -32600);
    /* executeCommand with an unknown command or none */
    sendv(l, 2, "{\"jsonrpc\":\"2.0\",\"id\":14,\"method\":\"workspace/executeCommand\",\"params\":{\"command\":\"ctx.fake\"}}",
          "{\"jsonrpc\":\"2.0\",\"id\":15,\"method\":\"workspace/executeCommand\",\"params\":{}}");
    r = reply(l);
    assert_int_equal(err_code(r), -32602);
    assert_non_null(strstr(err_msg(r), "unknown command \"ctx.fake\""));
    cJSON_Delete(r);
    expect_error(l, 15, -32602);
    /* unknown notifications, $/ notifications and a stray response are ignored; $/ requests are not found */
    sendv(l, 4, "{\"jsonrpc\":\"2.0\",\"method\":\"custom/thing\",\"params\":{}}",
          "{\"jsonrpc\":\"2.0\",\"method\":\"$/setTrace\",\"params\":{\"value\":\"off\"}}",
          "{\"jsonrpc\":\"2.0\",\"id\":777,\"result\":{}}",
          "{\"jsonrpc\":\"2.0\",\"id\":16,\"method\":\"$/unknown\"}");
    expect_error(l, 16, -32601);
    assert_int_equal(l->nnotes, 0);
    /* garbage between messages, a header without Content-Length, a bad charset: logged, skipped */
    static const char junk[] = "hello there\r\n\r\n"
                               "Content-Type: application/vscode-jsonrpc\r\n\r\n"
                               "Content-Length: 2\r\nContent-Type: text/x; charset=koi8-r\r\n\r\n{}"
                               "Content-Length: 40\r\n\r\n{\"jsonrpc\":\"2.0\",\"id\":17,\"method\":\"x/y\"}";
    send_raw(l, junk, sizeof junk - 1);
    expect_error(l, 17, -32601);
    cJSON *n = expect_note(l, "window/logMessage", "skipped 13 bytes");
    assert_int_equal((int)num(n, "params.type"), 1);
    cJSON_Delete(n);
    cJSON_Delete(expect_note(l, "window/logMessage", "without Content-Length"));
    cJSON_Delete(expect_note(l, "window/logMessage", "unsupported charset \"koi8-r\""));
    shutdown_exit(l, 0);
    start(l, ctxd_bin, "--max-message");
    assert_int_equal(wait_exit(l), 2); /* missing value */
}

static void test_message_limit(void **state)
{
    struct lsp *l = *state;
    start2(l, ctxd_bin, "--max-message", "1024");
    init(l);
    static char big[3000];
    int n = snprintf(big, sizeof big, "{\"jsonrpc\":\"2.0\",\"id\":20,\"method\":\"x\",\"params\":{\"pad\":\"");
    memset(big + n, 'a', 2000);
    strcpy(big + n + 2000, "\"}}");
    sendv(l, 2, big, "{\"jsonrpc\":\"2.0\",\"id\":21,\"method\":\"x\"}");
    expect_error(l, 21, -32601); /* 20 never arrived */
    cJSON_Delete(expect_note(l, "window/logMessage", "over the 1024-byte limit"));
    shutdown_exit(l, 0);
}

static void test_cancellation(void **state)
{
    struct lsp *l = *state;
    start(l, ctxd_bin, NULL);
    init(l);
    /* cancelled before its turn: answered RequestCancelled, never run (no daemon gets started) */
    sendv(l, 3,
          "{\"jsonrpc\":\"2.0\",\"id\":30,\"method\":\"workspace/executeCommand\",\"params\":{\"command\":\"ctx.status\"}}",
          "{\"jsonrpc\":\"2.0\",\"id\":\"s-31\",\"method\":\"workspace/executeCommand\",\"params\":{\"command\":\"ctx.status\"}}",
          "{\"jsonrpc\":\"2.0\",\"method\":\"$/cancelRequest\",\"params\":{\"id\":30}}");
    expect_error(l, 30, -32800);
    cJSON *r = reply(l);
    assert_string_equal(str(r, "id"), "s-31");
    /* the uncancelled one ran: a real daemon answered */
    assert_null(cJSON_GetObjectItemCaseSensitive(r, "error"));
    assert_true(num(r, "result.daemon.pid") > 0);
    cJSON_Delete(r);
    /* string ids; a cancel naming an answered or unknown request is ignored */
    sendv(l, 4, "{\"jsonrpc\":\"2.0\",\"method\":\"$/cancelRequest\",\"params\":{\"id\":30}}",
          "{\"jsonrpc\":\"2.0\",\"method\":\"$/cancelRequest\",\"params\":{\"id\":\"nobody\"}}",
          "{\"jsonrpc\":\"2.0\",\"id\":\"s-32\",\"method\":\"shutdown\"}",
          "{\"jsonrpc\":\"2.0\",\"method\":\"$/cancelRequest\",\"params\":{\"id\":\"s-32\"}}");
    r = reply(l);
    assert_string_equal(str(r, "id"), "s-32");
    assert_int_equal(err_code(r), -32800);
    cJSON_Delete(r);
    /* a cancelled shutdown did not shut down */
    sendv(l, 1, "{\"jsonrpc\":\"2.0\",\"id\":33,\"method\":\"x/y\"}");
    expect_error(l, 33, -32601);
    assert_int_equal(l->nnotes, 0);
    shutdown_exit(l, 0);
}

#define EMOJI "\xF0\x9F\x98\x80"

static void test_documents_and_status(void **state)
{
    struct lsp *l = *state;
    start(l, ctxd_bin, NULL);
    init(l);
    /* "a😀b\r\nline2\n" is 14 bytes; edits at UTF-16 columns around the astral character */
    sendv(l, 4,
          "{\"jsonrpc\":\"2.0\",\"method\":\"textDocument/didOpen\",\"params\":{\"textDocument\":{\"uri\":\"file:///t/a.c\","
          "\"languageId\":\"c\",\"version\":1,\"text\":\"a\\ud83d\\ude00b\\r\\nline2\\n\"}}}",
          /* replace the emoji (columns 1..3) with "XY": 14 - 4 + 2 = 12 bytes */
          "{\"jsonrpc\":\"2.0\",\"method\":\"textDocument/didChange\",\"params\":{\"textDocument\":{\"uri\":\"file:///t/a.c\","
          "\"version\":2},\"contentChanges\":[{\"range\":{\"start\":{\"line\":0,\"character\":1},\"end\":{\"line\":0,"
          "\"character\":3}},\"text\":\"XY\"}]}}",
          /* insert "\r\n😁" after "line2": 12 + 6 = 18 bytes, 4 lines */
          "{\"jsonrpc\":\"2.0\",\"method\":\"textDocument/didChange\",\"params\":{\"textDocument\":{\"uri\":\"file:///t/a.c\","
          "\"version\":3},\"contentChanges\":[{\"range\":{\"start\":{\"line\":1,\"character\":5},\"end\":{\"line\":1,"
          "\"character\":5}},\"text\":\"\\r\\n\\ud83d\\ude01\"}]}}",
          "{\"jsonrpc\":\"2.0\",\"method\":\"textDocument/didOpen\",\"params\":{\"textDocument\":{\"uri\":\"file:///t/b.py\","
          "\"languageId\":\"python\",\"version\":7,\"text\":\"\"}}}");
    /* with a work done token: $/progress begin ... end, then the reply */
    send1(l, "{\"jsonrpc\":\"2.0\",\"id\":40,\"method\":\"workspace/executeCommand\",\"params\":{\"command\":\"ctx.status\","
             "\"arguments\":[],\"workDoneToken\":\"tok-40\"}}");
    cJSON *r = reply(l);
    assert_id_int(r, 40);
    if (cJSON_GetObjectItemCaseSensitive(r, "error"))
        fail_msg("ctx.status failed: %s", err_msg(r));
    assert_int_equal((int)num(r, "result.daemon.protocol"), 1);
    assert_true(num(r, "result.daemon.pid") > 0);
    assert_string_equal(str(r, "result.daemon.socket"), l->sock);
    assert_string_equal(str(r, "result.lsp.positionEncoding"), "utf-16");
    const cJSON *docs = path(r, "result.lsp.documents");
    assert_int_equal(cJSON_GetArraySize(docs), 2);
    assert_string_equal(str(docs, "0.uri"), "file:///t/a.c");
    assert_int_equal((int)num(docs, "0.version"), 3);
    assert_int_equal((int)num(docs, "0.bytes"), 18);
    assert_int_equal((int)num(docs, "0.lines"), 4);
    assert_true(cJSON_IsTrue(path(docs, "0.dirty")));
    assert_true(cJSON_IsFalse(path(docs, "0.desync")));
    assert_string_equal(str(docs, "1.languageId"), "python");
    assert_int_equal((int)num(docs, "1.bytes"), 0);
    cJSON_Delete(r);
    /* the progress came before the reply, begin first and end last, on the client's token */
    assert_int_equal(l->nnotes >= 2, 1);
    assert_string_equal(str(l->notes[0], "method"), "$/progress");
    assert_string_equal(str(l->notes[0], "params.token"), "tok-40");
    assert_string_equal(str(l->notes[0], "params.value.kind"), "begin");
    assert_string_equal(str(l->notes[l->nnotes - 1], "params.value.kind"), "end");
    for (int i = 0; i < l->nnotes; i++)
        cJSON_Delete(l->notes[i]);
    l->nnotes = 0;
    /* a stale version is refused (logged) and the document waits for its full text */
    sendv(l, 3,
          "{\"jsonrpc\":\"2.0\",\"method\":\"textDocument/didChange\",\"params\":{\"textDocument\":{\"uri\":\"file:///t/a.c\","
          "\"version\":3},\"contentChanges\":[{\"text\":\"zzz\"}]}}",
          "{\"jsonrpc\":\"2.0\",\"method\":\"textDocument/didChange\",\"params\":{\"textDocument\":{\"uri\":\"file:///t/nope.c\","
          "\"version\":3},\"contentChanges\":[{\"text\":\"zzz\"}]}}",
          "{\"jsonrpc\":\"2.0\",\"id\":41,\"method\":\"workspace/executeCommand\",\"params\":{\"command\":\"ctx.status\"}}");
    r = reply(l);
    docs = path(r, "result.lsp.documents");
    assert_int_equal((int)num(docs, "0.bytes"), 18);
    assert_true(cJSON_IsTrue(path(docs, "0.desync")));
    cJSON_Delete(r);
    cJSON *n = expect_note(l, "window/logMessage", "version 3 does not follow 3");
    assert_int_equal((int)num(n, "params.type"), 2);
    cJSON_Delete(n);
    cJSON_Delete(expect_note(l, "window/logMessage", "file:///t/nope.c, which is not open"));
    /* save with text resynchronises; close forgets */
    sendv(l, 3,
          "{\"jsonrpc\":\"2.0\",\"method\":\"textDocument/didSave\",\"params\":{\"textDocument\":{\"uri\":\"file:///t/a.c\"},"
          "\"text\":\"saved\\r\\n\"}}",
          "{\"jsonrpc\":\"2.0\",\"method\":\"textDocument/didClose\",\"params\":{\"textDocument\":{\"uri\":\"file:///t/b.py\"}}}",
          "{\"jsonrpc\":\"2.0\",\"id\":42,\"method\":\"workspace/executeCommand\",\"params\":{\"command\":\"ctx.status\"}}");
    r = reply(l);
    docs = path(r, "result.lsp.documents");
    assert_int_equal(cJSON_GetArraySize(docs), 1);
    assert_int_equal((int)num(docs, "0.bytes"), 7);
    assert_int_equal((int)num(docs, "0.lines"), 2);
    assert_true(cJSON_IsFalse(path(docs, "0.dirty")));
    assert_true(cJSON_IsFalse(path(docs, "0.desync")));
    /* the connection to the daemon is kept: the daemon counts one client */
    assert_int_equal((int)num(r, "result.daemon.connections"), 1);
    cJSON_Delete(r);
    assert_int_equal(l->nnotes, 0);
    shutdown_exit(l, 0);
}

static void test_utf8_negotiation(void **state)
{
    struct lsp *l = *state;
    start(l, ctxd_bin, NULL);
    send1(l, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{\"capabilities\":{\"general\":"
             "{\"positionEncodings\":[\"utf-32\",\"utf-8\",\"utf-16\"]}}}}");
    cJSON *r = reply(l);
    assert_string_equal(str(r, "result.capabilities.positionEncoding"), "utf-8");
    cJSON_Delete(r);
    /* column 5 in bytes is just after the emoji (4 bytes) + "a" */
    sendv(l, 3,
          "{\"jsonrpc\":\"2.0\",\"method\":\"textDocument/didOpen\",\"params\":{\"textDocument\":{\"uri\":\"u\","
          "\"languageId\":\"c\",\"version\":1,\"text\":\"a\\ud83d\\ude00bc\"}}}",
          "{\"jsonrpc\":\"2.0\",\"method\":\"textDocument/didChange\",\"params\":{\"textDocument\":{\"uri\":\"u\","
          "\"version\":2},\"contentChanges\":[{\"range\":{\"start\":{\"line\":0,\"character\":5},\"end\":{\"line\":0,"
          "\"character\":7}},\"text\":\"\"}]}}",
          "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"workspace/executeCommand\",\"params\":{\"command\":\"ctx.status\"}}");
    r = reply(l);
    assert_string_equal(str(r, "result.lsp.positionEncoding"), "utf-8");
    assert_int_equal((int)num(r, "result.lsp.documents.0.bytes"), 5); /* "a😀" */
    cJSON_Delete(r);
    shutdown_exit(l, 0);
}

static void test_daemon_unavailable(void **state)
{
    struct lsp *l = *state;
    start(l, "/nonexistent/ctxd", NULL);
    init(l);
    send1(l, "{\"jsonrpc\":\"2.0\",\"id\":50,\"method\":\"workspace/executeCommand\",\"params\":{\"command\":\"ctx.status\"}}");
    cJSON *r = reply(l);
    assert_id_int(r, 50);
    assert_int_equal(err_code(r), -32803);
    assert_non_null(strstr(err_msg(r), "/nonexistent/ctxd"));
    assert_string_equal(str(r, "error.data.code"), "EIO");
    cJSON_Delete(r);
    cJSON *n = expect_note(l, "window/showMessage", "cannot reach ctxd");
    assert_int_equal((int)num(n, "params.type"), 1);
    cJSON_Delete(n);
    /* the server is still fine */
    shutdown_exit(l, 0);
}

static void test_editor_death(void **state)
{
    struct lsp *l = *state;
    /* the "editor" whose pid initialize names; it dies without closing the server's input */
    pid_t editor = fork();
    assert_true(editor >= 0);
    if (editor == 0) {
        pause();
        _exit(0);
    }
    start(l, ctxd_bin, NULL);
    char init[256];
    snprintf(init, sizeof init,
             "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{\"processId\":%d,\"capabilities\":{}}}",
             (int)editor);
    send1(l, init);
    cJSON_Delete(reply(l));
    kill(editor, SIGKILL);
    waitpid(editor, NULL, 0);
    long long t0 = now_ms();
    assert_null(recv_msg(l)); /* the server exits on its own (it checks every 3 s) */
    assert_int_equal(wait_exit(l), 1);
    assert_true(now_ms() - t0 < 10000);
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
        cmocka_unit_test_setup_teardown(test_lifecycle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exit_without_shutdown, setup, teardown),
        cmocka_unit_test_setup_teardown(test_before_initialize, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_input, setup, teardown),
        cmocka_unit_test_setup_teardown(test_message_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancellation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_documents_and_status, setup, teardown),
        cmocka_unit_test_setup_teardown(test_utf8_negotiation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_daemon_unavailable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_editor_death, setup, teardown),
    };
    return cmocka_run_group_tests_name("lsp-server", tests, NULL, NULL);
}
