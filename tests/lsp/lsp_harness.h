/* Helpers of the ctx lsp conformance tests: a real `ctx lsp` process on pipes (socket in a temporary
 * folder), framed sends in one write, replies with the notifications that came before them kept,
 * lifecycle shortcuts. Included once per test program; ctx_bin and ctxd_bin come from argv. */
#ifndef TESTS_LSP_HARNESS_H
#define TESTS_LSP_HARNESS_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
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

static inline long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline void start2(struct lsp *l, const char *ctxd, const char *extra, const char *extra2)
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

static inline void start(struct lsp *l, const char *ctxd, const char *extra)
{
    start2(l, ctxd, extra, NULL);
}

static inline int setup(void **state)
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

static inline int teardown(void **state)
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

static inline void send_raw(struct lsp *l, const char *s, size_t n)
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
static inline void sendv(struct lsp *l, int n, ...)
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
static inline cJSON *recv_msg(struct lsp *l)
{
    /* 15 s, or CTX_LSP_TEST_TIMEOUT_MS for slow builds (sanitizers make the model crawl) */
    const char *tmo = getenv("CTX_LSP_TEST_TIMEOUT_MS");
    long long wait_ms = tmo && atoll(tmo) > 0 ? atoll(tmo) : 15000;
    long long deadline = now_ms() + wait_ms;
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
            fail_msg("no message from ctx lsp within %lld ms", wait_ms);
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

static inline bool is_reply(const cJSON *m)
{
    return !cJSON_GetObjectItemCaseSensitive(m, "method");
}

/* The next reply; notifications before it are kept in l->notes. */
static inline cJSON *reply(struct lsp *l)
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

static inline int err_code(const cJSON *r)
{
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(r, "error");
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(e, "code");
    return cJSON_IsNumber(c) ? c->valueint : 0;
}

static inline const char *err_msg(const cJSON *r)
{
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(r, "error");
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(e, "message");
    return cJSON_IsString(m) ? m->valuestring : "";
}

static inline void assert_id_int(const cJSON *r, int id)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(r, "id");
    assert_true(cJSON_IsNumber(v));
    assert_int_equal(v->valueint, id);
}

static inline void assert_id_null(const cJSON *r)
{
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(r, "id")));
}

/* Expect an error reply with this id and code. */
static inline void expect_error(struct lsp *l, int id, int code)
{
    cJSON *r = reply(l);
    assert_id_int(r, id);
    if (err_code(r) != code)
        fail_msg("id %d: wanted error %d, got %d (%s)", id, code, err_code(r), err_msg(r));
    cJSON_Delete(r);
}

static inline const cJSON *path(const cJSON *v, const char *p)
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

static inline double num(const cJSON *v, const char *p)
{
    const cJSON *x = path(v, p);
    if (!cJSON_IsNumber(x))
        fail_msg("%s is not a number", p);
    return x->valuedouble;
}

static inline const char *str(const cJSON *v, const char *p)
{
    const cJSON *x = path(v, p);
    if (!cJSON_IsString(x))
        fail_msg("%s is not a string", p);
    return x->valuestring;
}

/* The notification with this method whose params.message contains `needle`, taken from the kept
 * ones or read until it comes. */
static inline cJSON *expect_note(struct lsp *l, const char *method, const char *needle)
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

static inline int wait_exit(struct lsp *l)
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

static inline void init(struct lsp *l)
{
    sendv(l, 2, INIT, INITIALIZED);
    cJSON *r = reply(l);
    assert_id_int(r, 1);
    assert_null(cJSON_GetObjectItemCaseSensitive(r, "error"));
    cJSON_Delete(r);
}

static inline void shutdown_exit(struct lsp *l, int want_status)
{
    sendv(l, 2, SHUTDOWN(99), EXIT);
    cJSON *r = reply(l);
    assert_id_int(r, 99);
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(r, "result")));
    cJSON_Delete(r);
    assert_null(recv_msg(l)); /* then EOF: nothing else is written */
    assert_int_equal(wait_exit(l), want_status);
}

#endif
