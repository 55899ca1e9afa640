/* Integration: LSP conformance of the real `ctx lsp` process, driven over pipes, with a real ctxd
 * (started on demand by the server) on a temporary socket. argv[1] = ctx, argv[2] = ctxd. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include "json.h"

static const char *ctx_bin, *ctxd_bin;

#define MAXNOTE 64

struct lsp {
    char dir[64];
    char sock[100];
    char log[100];
    pid_t pid;
    int in, out;       /* the server's stdin (we write) and stdout (we read) */
    char buf[1 << 20]; /* unread output */
    size_t len;
    cJSON *notes[MAXNOTE]; /* notifications received while waiting for replies */
    int nnotes;
};

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void start2(struct lsp *l, const char *ctxd, const char *extra, const char *extra2)
{
    /* a previous server's pipes, if any */
    if (l->in >= 0)
        close(l->in);
    if (l->out >= 0)
        close(l->out);
    l->len = 0;
    int pin[2], pout[2];
    assert_int_equal(pipe(pin), 0);
    assert_int_equal(pipe(pout), 0);
    l->pid = fork();
    assert_true(l->pid >= 0);
    if (l->pid == 0) {
        dup2(pin[0], 0);
        dup2(pout[1], 1);
        int fd = open(l->log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd >= 0)
            dup2(fd, 2);
        close(pin[1]);
        close(pout[0]);
        execl(ctx_bin, ctx_bin, "--socket", l->sock, "--ctxd", ctxd, "lsp", extra, extra2, (char *)NULL);
        _exit(127);
    }
    close(pin[0]);
    close(pout[1]);
    l->in = pin[1];
    l->out = pout[0];
}

static void start(struct lsp *l, const char *ctxd, const char *extra)
{
    start2(l, ctxd, extra, NULL);
}

static int setup(void **state)
{
    struct lsp *l = calloc(1, sizeof *l);
    snprintf(l->dir, sizeof l->dir, "/tmp/ctx-lsp-test-XXXXXX");
    if (!mkdtemp(l->dir))
        return -1;
    snprintf(l->sock, sizeof l->sock, "%s/ctxd.sock", l->dir);
    snprintf(l->log, sizeof l->log, "%s/lsp.log", l->dir);
    l->in = l->out = -1;
    signal(SIGPIPE, SIG_IGN);
    *state = l;
    return 0;
}

static int teardown(void **state)
{
    struct lsp *l = *state;
    if (l->pid > 0) {
        kill(l->pid, SIGKILL);
        waitpid(l->pid, NULL, 0);
    }
    if (l->in >= 0)
        close(l->in);
    if (l->out >= 0)
        close(l->out);
    for (int i = 0; i < l->nnotes; i++)
        cJSON_Delete(l->notes[i]);
    /* stop the ctxd the server started, if any */
    struct ctxd_client *c = NULL;
    struct ctx_err e = {0};
    if (ctxd_client_connect(l->sock, &c, &e) == 0) {
        cJSON *r = NULL;
        ctxd_client_call(c, "daemon.shutdown", NULL, NULL, NULL, 5000, &r, &e);
        cJSON_Delete(r);
        ctxd_client_close(c);
        for (long long end = now_ms() + 5000; access(l->sock, F_OK) == 0 && now_ms() < end;)
            usleep(10000);
    }
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", l->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", l->dir);
    free(l);
    return 0;
}

static void send_raw(struct lsp *l, const char *s, size_t n)
{
    while (n) {
        ssize_t w = write(l->in, s, n);
        if (w < 0 && errno == EINTR)
            continue;
        assert_true(w > 0);
        s += w;
        n -= (size_t)w;
    }
}

/* Frame each JSON text; all of them go out in ONE write so that the server reads them together
 * (what cancellation tests rely on: the pipe buffer keeps small writes atomic). */
static void sendv(struct lsp *l, int n, ...)
{
    static char buf[1 << 16];
    size_t len = 0;
    va_list ap;
    va_start(ap, n);
    for (int i = 0; i < n; i++) {
        const char *body = va_arg(ap, const char *);
        len += (size_t)snprintf(buf + len, sizeof buf - len, "Content-Length: %zu\r\n\r\n%s", strlen(body), body);
        assert_true(len < sizeof buf);
    }
    va_end(ap);
    send_raw(l, buf, len);
}

#define send1(l, body) sendv(l, 1, body)

/* Next message from the server, or NULL on EOF; fails after 15 s. */
static cJSON *recv_msg(struct lsp *l)
{
    long long deadline = now_ms() + 15000;
    for (;;) {
        char *end = memmem(l->buf, l->len, "\r\n\r\n", 4);
        if (end) {
            size_t hl = (size_t)(end - l->buf) + 4;
            assert_true(strncmp(l->buf, "Content-Length: ", 16) == 0);
            size_t bl = strtoul(l->buf + 16, NULL, 10);
            if (l->len >= hl + bl) {
                struct ctx_err e = {0};
                cJSON *v = ctx_json_parse(l->buf + hl, bl, "reply", &e);
                if (!v)
                    fail_msg("server sent bad JSON: %s", e.msg);
                memmove(l->buf, l->buf + hl + bl, l->len - hl - bl);
                l->len -= hl + bl;
                return v;
            }
        }
        struct pollfd p = {.fd = l->out, .events = POLLIN};
        int left = (int)(deadline - now_ms());
        if (left <= 0)
            fail_msg("no message from ctx lsp within 15 s");
        if (poll(&p, 1, left) <= 0)
            continue;
        ssize_t r = read(l->out, l->buf + l->len, sizeof l->buf - l->len);
        if (r == 0) {
            assert_int_equal(l->len, 0);
            return NULL;
        }
        assert_true(r > 0);
        l->len += (size_t)r;
    }
}

static bool is_reply(const cJSON *m)
{
    return !cJSON_GetObjectItemCaseSensitive(m, "method");
}

/* The next reply; notifications before it are kept in l->notes. */
static cJSON *reply(struct lsp *l)
{
    for (;;) {
        cJSON *m = recv_msg(l);
        if (!m)
            fail_msg("ctx lsp closed its output while a reply was expected");
        if (is_reply(m))
            return m;
        assert_true(l->nnotes < MAXNOTE);
        l->notes[l->nnotes++] = m;
    }
}

static int err_code(const cJSON *r)
{
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(r, "error");
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(e, "code");
    return cJSON_IsNumber(c) ? c->valueint : 0;
}

static const char *err_msg(const cJSON *r)
{
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(r, "error");
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(e, "message");
    return cJSON_IsString(m) ? m->valuestring : "";
}

static void assert_id_int(const cJSON *r, int id)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(r, "id");
    assert_true(cJSON_IsNumber(v));
    assert_int_equal(v->valueint, id);
}

static void assert_id_null(const cJSON *r)
{
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(r, "id")));
}

/* Expect an error reply with this id and code. */
static void expect_error(struct lsp *l, int id, int code)
{
    cJSON *r = reply(l);
    assert_id_int(r, id);
    if (err_code(r) != code)
        fail_msg("id %d: wanted error %d, got %d (%s)", id, code, err_code(r), err_msg(r));
    cJSON_Delete(r);
}

static const cJSON *path(const cJSON *v, const char *p)
{
    char key[64];
    while (v && *p) {
        size_t n = strcspn(p, ".");
        snprintf(key, sizeof key, "%.*s", (int)n, p);
        v = cJSON_IsArray(v) ? cJSON_GetArrayItem(v, atoi(key)) : cJSON_GetObjectItemCaseSensitive(v, key);
        p += n + (p[n] == '.');
    }
    return v;
}

static double num(const cJSON *v, const char *p)
{
    const cJSON *x = path(v, p);
    if (!cJSON_IsNumber(x))
        fail_msg("%s is not a number", p);
    return x->valuedouble;
}

static const char *str(const cJSON *v, const char *p)
{
    const cJSON *x = path(v, p);
    if (!cJSON_IsString(x))
        fail_msg("%s is not a string", p);
    return x->valuestring;
}

/* The notification with this method whose params.message contains `needle`, taken from the kept
 * ones or read until it comes. */
static cJSON *expect_note(struct lsp *l, const char *method, const char *needle)
{
    for (;;) {
        for (int i = 0; i < l->nnotes; i++) {
            const cJSON *m = cJSON_GetObjectItemCaseSensitive(l->notes[i], "method");
            const cJSON *msg = path(l->notes[i], "params.message");
            if (strcmp(m->valuestring, method) == 0 && (!needle || (cJSON_IsString(msg) && strstr(msg->valuestring, needle)))) {
                cJSON *n = l->notes[i];
                memmove(&l->notes[i], &l->notes[i + 1], (size_t)(l->nnotes - i - 1) * sizeof *l->notes);
                l->nnotes--;
                return n;
            }
        }
        cJSON *m = recv_msg(l);
        if (!m)
            fail_msg("EOF while waiting for %s \"%s\"", method, needle ? needle : "");
        assert_true(l->nnotes < MAXNOTE);
        l->notes[l->nnotes++] = m;
    }
}

static int wait_exit(struct lsp *l)
{
    int st = 0;
    long long deadline = now_ms() + 10000;
    while (now_ms() < deadline) {
        pid_t r = waitpid(l->pid, &st, WNOHANG);
        if (r == l->pid) {
            l->pid = 0;
            assert_true(WIFEXITED(st));
            return WEXITSTATUS(st);
        }
        usleep(5000);
    }
    fail_msg("ctx lsp did not exit");
    return -1;
}

#define INIT "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{\"processId\":null,\"rootUri\":null," \
             "\"capabilities\":{\"window\":{\"workDoneProgress\":true}}}}"
#define INITIALIZED "{\"jsonrpc\":\"2.0\",\"method\":\"initialized\",\"params\":{}}"
#define SHUTDOWN(id) "{\"jsonrpc\":\"2.0\",\"id\":" #id ",\"method\":\"shutdown\"}"
#define EXIT "{\"jsonrpc\":\"2.0\",\"method\":\"exit\"}"

static void init(struct lsp *l)
{
    sendv(l, 2, INIT, INITIALIZED);
    cJSON *r = reply(l);
    assert_id_int(r, 1);
    assert_null(cJSON_GetObjectItemCaseSensitive(r, "error"));
    cJSON_Delete(r);
}

static void shutdown_exit(struct lsp *l, int want_status)
{
    sendv(l, 2, SHUTDOWN(99), EXIT);
    cJSON *r = reply(l);
    assert_id_int(r, 99);
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(r, "result")));
    cJSON_Delete(r);
    assert_null(recv_msg(l)); /* then EOF: nothing else is written */
    assert_int_equal(wait_exit(l), want_status);
}

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
    assert_int_equal(cJSON_GetArraySize(caps), 3);
    assert_string_equal(str(caps, "positionEncoding"), "utf-16");
    assert_int_equal(cJSON_GetArraySize(path(caps, "textDocumentSync")), 3);
    assert_true(cJSON_IsTrue(path(caps, "textDocumentSync.openClose")));
    assert_int_equal((int)num(caps, "textDocumentSync.change"), 2);
    assert_true(cJSON_IsTrue(path(caps, "textDocumentSync.save.includeText")));
    assert_int_equal(cJSON_GetArraySize(path(caps, "executeCommandProvider.commands")), 1);
    assert_string_equal(str(caps, "executeCommandProvider.commands.0"), "ctx.status");
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
