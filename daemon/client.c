#include "client.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "json.h"
#include "rpc.h"

struct ctxd_client {
    int fd;
    long long next_id;
    int rpc_code;
    struct ctxd_linebuf lb;
};

int ctxd_default_socket(char *buf, size_t cap, struct ctx_err *e)
{
    const char *env = getenv("CTXD_SOCKET");
    int n;
    if (env && env[0])
        n = snprintf(buf, cap, "%s", env);
    else if ((env = getenv("XDG_RUNTIME_DIR")) && env[0])
        n = snprintf(buf, cap, "%s/ctxd/ctxd.sock", env);
    else
        n = snprintf(buf, cap, "/tmp/ctxd-%ld/ctxd.sock", (long)getuid());
    if (n < 0 || (size_t)n >= cap)
        return ctx_err_set(e, CTX_ERANGE, "socket path too long");
    struct sockaddr_un sun;
    if ((size_t)n >= sizeof sun.sun_path)
        return ctx_err_set(e, CTX_ERANGE, "socket path is longer than %zu bytes: %s",
                           sizeof sun.sun_path - 1, buf);
    return 0;
}

int ctxd_client_connect(const char *path, struct ctxd_client **out, struct ctx_err *e)
{
    *out = NULL;
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sun.sun_path)
        return ctx_err_set(e, CTX_ERANGE, "socket path is longer than %zu bytes: %s",
                           sizeof sun.sun_path - 1, path);
    strcpy(sun.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return ctx_err_errno(e, CTX_EIO, errno, "socket");
    if (connect(fd, (struct sockaddr *)&sun, sizeof sun) != 0) {
        int er = errno;
        close(fd);
        if (er == ENOENT || er == ECONNREFUSED)
            return ctx_err_set(e, CTX_ENOTFOUND, "no ctxd is listening on %s", path);
        return ctx_err_errno(e, CTX_EIO, er, "connecting to %s", path);
    }
    struct ctxd_client *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    }
    c->fd = fd;
    c->next_id = 1;
    ctxd_linebuf_init(&c->lb, 0);
    *out = c;
    return 0;
}

void ctxd_client_close(struct ctxd_client *c)
{
    if (!c)
        return;
    close(c->fd);
    ctxd_linebuf_free(&c->lb);
    free(c);
}

int ctxd_client_rpc_code(const struct ctxd_client *c)
{
    return c->rpc_code;
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int ctxd_client_spawn(const char *ctxd_path, const char *socket_path, const char *const *extra,
                      struct ctx_err *e)
{
    /* ctxd --daemon forks, and its first process exits once the socket listens (0) or with the
     * reason it could not (non-zero, message on stderr); we relay that message. */
    int errpipe[2];
    if (pipe(errpipe) != 0)
        return ctx_err_errno(e, CTX_EIO, errno, "pipe");
    const char *argv[32];
    int a = 0;
    argv[a++] = ctxd_path;
    argv[a++] = "--daemon";
    argv[a++] = "--socket";
    argv[a++] = socket_path;
    for (int i = 0; extra && extra[i] && a < 31; i++)
        argv[a++] = extra[i];
    argv[a] = NULL;
    pid_t pid = fork();
    if (pid < 0) {
        int er = errno;
        close(errpipe[0]);
        close(errpipe[1]);
        return ctx_err_errno(e, CTX_EIO, er, "fork");
    }
    if (pid == 0) {
        close(errpipe[0]);
        dup2(errpipe[1], 2);
        close(errpipe[1]);
        execv(ctxd_path, (char *const *)argv);
        fprintf(stderr, "cannot run %s: %s\n", ctxd_path, strerror(errno));
        _exit(127);
    }
    close(errpipe[1]);
    char msg[512];
    size_t n = 0;
    for (;;) {
        ssize_t r = read(errpipe[0], msg + n, sizeof msg - 1 - n);
        if (r > 0 && n + (size_t)r < sizeof msg - 1) {
            n += (size_t)r;
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        break;
    }
    close(errpipe[0]);
    msg[n] = 0;
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = 0;
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        return ctx_err_set(e, CTX_EIO, "starting %s failed: %s", ctxd_path, n ? msg : "no message");
    return 0;
}

int ctxd_client_connect_or_spawn(const char *ctxd_path, const char *socket_path,
                                 struct ctxd_client **out, struct ctx_err *e)
{
    int rc = ctxd_client_connect(socket_path, out, e);
    if (rc != CTX_ENOTFOUND)
        return rc;
    /* $CTXD_FLAGS: options for a ctxd started this way (say "--backend cuda --gpus 0,1 --model DIR"),
     * words separated by blanks, no quoting */
    const char *env = getenv("CTXD_FLAGS");
    char *flags = env ? strdup(env) : NULL;
    const char *extra[25];
    int n = 0;
    if (env && !flags)
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    char *save = NULL;
    for (char *w = flags ? strtok_r(flags, " \t\n", &save) : NULL; w; w = strtok_r(NULL, " \t\n", &save)) {
        if (n == 24) {
            free(flags);
            return ctx_err_set(e, CTX_EINVAL, "CTXD_FLAGS has more than 24 words");
        }
        extra[n++] = w;
    }
    extra[n] = NULL;
    struct ctx_err se = {0};
    rc = ctxd_client_spawn(ctxd_path, socket_path, extra, &se);
    free(flags);
    if (rc != 0 && se.msg[0] && !strstr(se.msg, "already serving")) {
        *e = se;
        return rc;
    }
    /* Ready (or another client started it at the same moment): connect, briefly retrying. */
    long long deadline = now_ms() + 5000;
    for (;;) {
        rc = ctxd_client_connect(socket_path, out, e);
        if (rc != CTX_ENOTFOUND || now_ms() > deadline)
            return rc;
        usleep(20000);
    }
}

static int write_all(int fd, const char *buf, size_t n, struct ctx_err *e)
{
    while (n) {
        ssize_t w = send(fd, buf, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return ctx_err_errno(e, CTX_EIO, errno, "writing to ctxd");
        }
        buf += w;
        n -= (size_t)w;
    }
    return 0;
}

struct wait_state {
    struct ctxd_client *c;
    long long id;
    cJSON *reply;
    ctxd_notify_fn fn;
    void *ud;
    int stop;
    int bad;
    struct ctx_err *e;
};

static int on_reply_line(void *ud, char *line, size_t len)
{
    struct wait_state *w = ud;
    struct ctx_err pe = {0};
    cJSON *msg = ctx_json_parse(line, len, "reply from ctxd", &pe);
    if (!msg) {
        *w->e = pe;
        w->bad = 1;
        return 1;
    }
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(msg, "id");
    const cJSON *method = cJSON_GetObjectItemCaseSensitive(msg, "method");
    if (cJSON_IsString(method) && !id) {
        if (w->fn && w->fn(w->ud, method->valuestring,
                           cJSON_GetObjectItemCaseSensitive(msg, "params")) != 0)
            w->stop = 1;
        cJSON_Delete(msg);
        return w->stop;
    }
    if (cJSON_IsNumber(id) && (long long)id->valuedouble == w->id) {
        w->reply = msg;
        return 1;
    }
    cJSON_Delete(msg); /* a reply to an earlier, abandoned call */
    return 0;
}

static int map_code(const cJSON *err)
{
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(err, "data");
    const cJSON *dc = cJSON_IsObject(data) ? cJSON_GetObjectItemCaseSensitive(data, "code") : NULL;
    if (cJSON_IsString(dc)) {
        for (int c = -1; c >= CTX_EINTERNAL; c--)
            if (strcmp(ctx_code_name(c), dc->valuestring) == 0)
                return c;
    }
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(err, "code");
    int rc = cJSON_IsNumber(code) ? (int)code->valuedouble : 0;
    switch (rc) {
    case CTXD_RPC_METHOD_NOT_FOUND: return CTX_ENOTFOUND;
    case CTXD_RPC_INVALID_PARAMS: return CTX_EINVAL;
    case CTXD_RPC_BUSY: return CTX_EBUSY;
    case CTXD_RPC_CANCELLED: return CTX_ECANCELED;
    case CTXD_RPC_LINE_TOO_LONG: return CTX_ERANGE;
    default: return CTX_EPROTO;
    }
}

int ctxd_client_call(struct ctxd_client *c, const char *method, cJSON *params, ctxd_notify_fn fn,
                     void *ud, int timeout_ms, cJSON **result, struct ctx_err *e)
{
    *result = NULL;
    c->rpc_code = 0;
    long long id = c->next_id++;
    cJSON *req = ctxd_rpc_request(id, method, params);
    size_t len;
    char *line = req ? ctxd_rpc_line(req, &len) : NULL;
    cJSON_Delete(req);
    if (!line)
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    int rc = write_all(c->fd, line, len, e);
    free(line);
    if (rc)
        return rc;

    struct wait_state w = {.c = c, .id = id, .fn = fn, .ud = ud, .e = e};
    long long deadline = timeout_ms > 0 ? now_ms() + timeout_ms : 0;
    char buf[65536];
    /* Lines already buffered from an earlier call come first. */
    if (c->lb.len) {
        size_t held = c->lb.len;
        char *copy = malloc(held);
        if (!copy)
            return ctx_err_set(e, CTX_ENOMEM, "out of memory");
        memcpy(copy, c->lb.buf, held);
        c->lb.len = 0;
        rc = ctxd_linebuf_feed(&c->lb, copy, held, on_reply_line, NULL, &w);
        free(copy);
        if (rc)
            return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    }
    while (!w.reply && !w.stop && !w.bad) {
        int wait = -1;
        if (deadline) {
            long long left = deadline - now_ms();
            if (left <= 0)
                return ctx_err_set(e, CTX_ETIMEDOUT, "ctxd did not answer %s within %d ms",
                                   method, timeout_ms);
            wait = (int)left;
        }
        struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
        int pr = poll(&pfd, 1, wait);
        if (pr < 0) {
            if (errno == EINTR)
                continue;
            return ctx_err_errno(e, CTX_EIO, errno, "poll");
        }
        if (pr == 0)
            continue;
        ssize_t r = recv(c->fd, buf, sizeof buf, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return ctx_err_errno(e, CTX_EIO, errno, "reading from ctxd");
        }
        if (r == 0)
            return ctx_err_set(e, CTX_EIO, "ctxd closed the connection before answering %s", method);
        if (ctxd_linebuf_feed(&c->lb, buf, (size_t)r, on_reply_line, NULL, &w) != 0)
            return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    }
    if (w.bad)
        return CTX_EPROTO;
    if (w.stop)
        return ctx_err_set(e, CTX_ECANCELED, "stopped waiting for %s", method);
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(w.reply, "error");
    if (err) {
        const cJSON *code = cJSON_GetObjectItemCaseSensitive(err, "code");
        const cJSON *msg = cJSON_GetObjectItemCaseSensitive(err, "message");
        c->rpc_code = cJSON_IsNumber(code) ? (int)code->valuedouble : CTXD_RPC_INTERNAL_ERROR;
        rc = map_code(err);
        ctx_err_set(e, rc, "%s", cJSON_IsString(msg) ? msg->valuestring : "error without message");
        cJSON_Delete(w.reply);
        return rc;
    }
    *result = cJSON_DetachItemFromObjectCaseSensitive(w.reply, "result");
    cJSON_Delete(w.reply);
    if (!*result)
        return ctx_err_set(e, CTX_EPROTO, "ctxd's reply to %s has neither result nor error", method);
    return 0;
}
