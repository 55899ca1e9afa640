#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "json.h"
#include "log.h"
#include "rpc.h"

struct method {
    char *name;
    ctxd_method_fn fn;
    void *ud;
};

struct conn {
    uv_pipe_t pipe;
    struct ctxd_server *srv;
    struct conn *prev, *next;
    struct ctxd_linebuf lb;
    unsigned long long serial;
    int refs;         /* the handle itself + pending calls */
    int closing;      /* close requested: no more reads or writes */
};

struct batch {
    cJSON *replies;
    int pending;
};

struct ctxd_call {
    struct conn *conn;
    cJSON *id;        /* NULL for a notification */
    struct batch *batch;
    int answered;
};

struct ctxd_server {
    uv_loop_t *loop;
    uv_pipe_t listener;
    int listening;
    int bound;        /* the socket file is ours to remove */
    char *socket_path;
    char *lock_path;
    int lock_fd;
    size_t max_line, max_write_queue;
    int max_clients;
    struct method *methods;
    size_t n_methods;
    struct conn *conns;
    int n_conns;
    int stopping;
    unsigned long long serial;
    struct ctxd_server_stats st;
    void (*on_disconnect)(void *ud, uint64_t client);
    void *on_disconnect_ud;
};

struct write_req {
    uv_write_t req;
    uv_buf_t buf;
    struct conn *c;
};

static void conn_unref(struct conn *c);

/* ---- instance lock and socket path ------------------------------------------------------- */

static int mkdir_p(const char *dir, struct ctx_err *e)
{
    char tmp[PATH_MAX];
    size_t n = strlen(dir);
    if (n >= sizeof tmp)
        return ctx_err_set(e, CTX_ERANGE, "directory path too long: %s", dir);
    memcpy(tmp, dir, n + 1);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
            return ctx_err_errno(e, CTX_EIO, errno, "creating %s", tmp);
        *p = '/';
    }
    if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
        return ctx_err_errno(e, CTX_EIO, errno, "creating %s", tmp);
    return 0;
}

static int take_lock(struct ctxd_server *s, struct ctx_err *e)
{
    s->lock_fd = open(s->lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (s->lock_fd < 0)
        return ctx_err_errno(e, CTX_EIO, errno, "opening lock file %s", s->lock_path);
    if (flock(s->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        int er = errno;
        char pid[32] = "";
        ssize_t r = pread(s->lock_fd, pid, sizeof pid - 1, 0);
        if (r > 0) {
            pid[r] = 0;
            pid[strcspn(pid, "\n")] = 0;
        }
        close(s->lock_fd);
        s->lock_fd = -1;
        if (er == EWOULDBLOCK)
            return ctx_err_set(e, CTX_EBUSY, "another ctxd (pid %s) is already serving %s",
                               pid[0] ? pid : "?", s->socket_path);
        return ctx_err_errno(e, CTX_EIO, er, "locking %s", s->lock_path);
    }
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%ld\n", (long)getpid());
    if (ftruncate(s->lock_fd, 0) != 0 || pwrite(s->lock_fd, buf, (size_t)n, 0) != n)
        return ctx_err_errno(e, CTX_EIO, errno, "writing pid to %s", s->lock_path);
    return 0;
}

/* We hold the lock, so a socket file left at the path belongs to a dead ctxd: remove it. Anything
 * that is not a socket is left alone and reported. */
static int clear_stale(const char *path, struct ctx_err *e)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return errno == ENOENT ? 0 : ctx_err_errno(e, CTX_EIO, errno, "stat %s", path);
    if (!S_ISSOCK(st.st_mode))
        return ctx_err_set(e, CTX_EEXIST, "%s exists and is not a socket; not replacing it", path);
    if (unlink(path) != 0)
        return ctx_err_errno(e, CTX_EIO, errno, "removing stale socket %s", path);
    CTX_INFO("replaced stale socket %s", path);
    return 0;
}

/* ---- writing ------------------------------------------------------------------------------ */

static void on_write(uv_write_t *req, int status)
{
    struct write_req *w = (struct write_req *)req;
    (void)status;
    free(w->buf.base);
    conn_unref(w->c);
    free(w);
}

static void on_close(uv_handle_t *h)
{
    conn_unref((struct conn *)h->data);
}

static void conn_close(struct conn *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    if (c->srv->on_disconnect)
        c->srv->on_disconnect(c->srv->on_disconnect_ud, c->serial);
    uv_read_stop((uv_stream_t *)&c->pipe);
    uv_close((uv_handle_t *)&c->pipe, on_close);
}

static void conn_send(struct conn *c, const cJSON *msg)
{
    if (c->closing || !msg)
        return;
    size_t len;
    char *line = ctxd_rpc_line(msg, &len);
    if (!line) {
        CTX_ERROR("out of memory serialising a reply; closing connection %llu", c->serial);
        conn_close(c);
        return;
    }
    if (uv_stream_get_write_queue_size((uv_stream_t *)&c->pipe) + len > c->srv->max_write_queue) {
        /* A client that does not read must not make the daemon hold unbounded memory. */
        CTX_WARN("connection %llu: over %zu bytes queued unread; dropping the client",
                 c->serial, c->srv->max_write_queue);
        free(line);
        conn_close(c);
        return;
    }
    struct write_req *w = malloc(sizeof *w);
    if (!w) {
        free(line);
        conn_close(c);
        return;
    }
    w->buf = uv_buf_init(line, (unsigned)len);
    w->c = c;
    c->refs++;
    int rc = uv_write(&w->req, (uv_stream_t *)&c->pipe, &w->buf, 1, on_write);
    if (rc != 0) {
        CTX_DEBUG("connection %llu: write failed: %s", c->serial, uv_strerror(rc));
        free(line);
        free(w);
        conn_unref(c);
        conn_close(c);
    }
}

/* ---- calls -------------------------------------------------------------------------------- */

static void call_finish(struct ctxd_call *call, cJSON *reply, int is_error)
{
    struct conn *c = call->conn;
    struct ctxd_server *s = c->srv;
    if (call->answered) {
        CTX_ERROR("a method answered twice; the second answer is dropped");
        cJSON_Delete(reply);
        return;
    }
    call->answered = 1;
    if (call->id) {
        s->st.requests++;
        if (is_error)
            s->st.errors++;
    }
    if (call->batch) {
        struct batch *b = call->batch;
        if (call->id && reply)
            cJSON_AddItemToArray(b->replies, reply);
        else
            cJSON_Delete(reply);
        if (--b->pending == 0) {
            if (cJSON_GetArraySize(b->replies) > 0)
                conn_send(c, b->replies);
            cJSON_Delete(b->replies);
            free(b);
        }
    } else {
        if (call->id)
            conn_send(c, reply);
        cJSON_Delete(reply);
    }
    cJSON_Delete(call->id);
    free(call);
    conn_unref(c);
}

void ctxd_call_reply(struct ctxd_call *call, cJSON *result)
{
    call_finish(call, ctxd_rpc_result(call->id, result), 0);
}

void ctxd_call_fail(struct ctxd_call *call, int rpc_code, const char *message, cJSON *data)
{
    call_finish(call, ctxd_rpc_error(call->id, rpc_code, message, data), 1);
}

void ctxd_call_fail_err(struct ctxd_call *call, const struct ctx_err *e)
{
    cJSON *data = cJSON_CreateObject();
    if (data)
        cJSON_AddStringToObject(data, "code", ctx_code_name(e->code));
    int rpc = e->code == CTX_EINVAL ? CTXD_RPC_INVALID_PARAMS
            : e->code == CTX_EBUSY ? CTXD_RPC_BUSY
            : e->code == CTX_ECANCELED ? CTXD_RPC_CANCELLED
            : CTXD_RPC_FAILED;
    ctxd_call_fail(call, rpc, e->msg[0] ? e->msg : ctx_code_name(e->code), data);
}

void ctxd_call_notify(struct ctxd_call *call, const char *method, cJSON *params)
{
    if (!params)
        params = cJSON_CreateObject();
    if (params && call->id && cJSON_IsObject(params) && !cJSON_HasObjectItem(params, "id"))
        cJSON_AddItemToObject(params, "id", cJSON_Duplicate(call->id, true));
    cJSON *n = ctxd_rpc_notification(method, params);
    conn_send(call->conn, n);
    cJSON_Delete(n);
}

int ctxd_call_client_alive(const struct ctxd_call *call)
{
    return !call->conn->closing;
}

struct ctxd_server *ctxd_call_server(const struct ctxd_call *call)
{
    return call->conn->srv;
}

const cJSON *ctxd_call_id(const struct ctxd_call *call)
{
    return call->id;
}

int ctxd_call_check_params(struct ctxd_call *call, const cJSON *params, const char *const *allowed)
{
    if (!params)
        return 0;
    if (!cJSON_IsObject(params)) {
        ctxd_call_fail(call, CTXD_RPC_INVALID_PARAMS, "params must be an object", NULL);
        return -1;
    }
    const cJSON *it;
    cJSON_ArrayForEach(it, params) {
        int ok = 0;
        for (int i = 0; allowed && allowed[i]; i++)
            ok |= strcmp(it->string, allowed[i]) == 0;
        if (!ok) {
            char msg[256];
            snprintf(msg, sizeof msg, "unknown parameter \"%.200s\"", it->string);
            ctxd_call_fail(call, CTXD_RPC_INVALID_PARAMS, msg, NULL);
            return -1;
        }
    }
    return 0;
}

uint64_t ctxd_call_client_id(const struct ctxd_call *call)
{
    return call->conn->serial;
}

void ctxd_server_on_disconnect(struct ctxd_server *s, void (*fn)(void *ud, uint64_t client), void *ud)
{
    s->on_disconnect = fn;
    s->on_disconnect_ud = ud;
}

/* ---- dispatch ----------------------------------------------------------------------------- */

static void dispatch_one(struct conn *c, const cJSON *msg, struct batch *b)
{
    struct ctxd_server *s = c->srv;
    struct ctxd_rpc_req req;
    char emsg[256];
    int code = ctxd_rpc_check(msg, &req, emsg, sizeof emsg);

    struct ctxd_call *call = calloc(1, sizeof *call);
    if (!call) {
        conn_close(c);
        return;
    }
    call->conn = c;
    call->batch = b;
    c->refs++;
    /* An invalid request is answered even without a usable id (with id null), as JSON-RPC says. */
    if (code != 0) {
        call->id = req.id ? cJSON_Duplicate(req.id, true) : cJSON_CreateNull();
        ctxd_call_fail(call, code, emsg, NULL);
        return;
    }
    call->id = req.id ? cJSON_Duplicate(req.id, true) : NULL;
    if (s->stopping) {
        ctxd_call_fail(call, CTXD_RPC_SHUTTING_DOWN, "ctxd is shutting down", NULL);
        return;
    }
    for (size_t i = 0; i < s->n_methods; i++) {
        if (strcmp(s->methods[i].name, req.method) == 0) {
            s->methods[i].fn(call, req.params, s->methods[i].ud);
            return;
        }
    }
    snprintf(emsg, sizeof emsg, "method not found: %.200s", req.method);
    ctxd_call_fail(call, CTXD_RPC_METHOD_NOT_FOUND, emsg, NULL);
}

static void send_error(struct conn *c, int code, const char *msg)
{
    cJSON *err = ctxd_rpc_error(NULL, code, msg, NULL);
    conn_send(c, err);
    cJSON_Delete(err);
    c->srv->st.requests++;
    c->srv->st.errors++;
}

static int on_line(void *ud, char *line, size_t len)
{
    struct conn *c = ud;
    if (c->closing)
        return 1;
    struct ctx_err e = {0};
    cJSON *msg = ctx_json_parse(line, len, "request", &e);
    if (!msg) {
        send_error(c, CTXD_RPC_PARSE_ERROR, e.msg);
        return 0;
    }
    if (cJSON_IsArray(msg)) {
        int n = cJSON_GetArraySize(msg);
        if (n == 0) {
            send_error(c, CTXD_RPC_INVALID_REQUEST, "an empty batch is not a request");
        } else {
            struct batch *b = calloc(1, sizeof *b);
            cJSON *replies = cJSON_CreateArray();
            if (!b || !replies) {
                free(b);
                cJSON_Delete(replies);
                cJSON_Delete(msg);
                conn_close(c);
                return 1;
            }
            b->replies = replies;
            b->pending = n;
            c->refs++; /* keep the connection while the batch is dispatched */
            const cJSON *it;
            cJSON_ArrayForEach(it, msg) dispatch_one(c, it, b);
            conn_unref(c);
        }
    } else {
        dispatch_one(c, msg, NULL);
    }
    cJSON_Delete(msg);
    return 0;
}

static void on_overlong(void *ud)
{
    struct conn *c = ud;
    char msg[128];
    snprintf(msg, sizeof msg, "request line longer than %zu bytes; discarded", c->srv->max_line);
    send_error(c, CTXD_RPC_LINE_TOO_LONG, msg);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    if (suggested > 65536)
        suggested = 65536;
    buf->base = malloc(suggested);
    buf->len = buf->base ? suggested : 0;
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = stream->data;
    if (nread > 0) {
        c->refs++;
        if (ctxd_linebuf_feed(&c->lb, buf->base, (size_t)nread, on_line, on_overlong, c) != 0) {
            CTX_ERROR("connection %llu: out of memory buffering a request", c->serial);
            conn_close(c);
        }
        conn_unref(c);
    } else if (nread < 0) {
        if (nread != UV_EOF)
            CTX_DEBUG("connection %llu: read error %s", c->serial, uv_strerror((int)nread));
        conn_close(c);
    }
    free(buf->base);
}

static void conn_unref(struct conn *c)
{
    if (--c->refs > 0)
        return;
    struct ctxd_server *s = c->srv;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->n_conns--;
    CTX_DEBUG("connection %llu closed", c->serial);
    ctxd_linebuf_free(&c->lb);
    free(c);
}

static void on_connection(uv_stream_t *listener, int status)
{
    struct ctxd_server *s = listener->data;
    if (status < 0) {
        CTX_WARN("accept failed: %s", uv_strerror(status));
        return;
    }
    struct conn *c = calloc(1, sizeof *c);
    if (!c)
        return;
    uv_pipe_init(s->loop, &c->pipe, 0);
    c->pipe.data = c;
    c->srv = s;
    c->refs = 1;
    c->serial = ++s->serial;
    ctxd_linebuf_init(&c->lb, s->max_line);
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->n_conns++;
    if (uv_accept(listener, (uv_stream_t *)&c->pipe) != 0) {
        conn_close(c);
        return;
    }
    s->st.accepted++;
    if (s->n_conns > s->max_clients || s->stopping) {
        send_error(c, s->stopping ? CTXD_RPC_SHUTTING_DOWN : CTXD_RPC_BUSY,
                   s->stopping ? "ctxd is shutting down" : "too many clients connected");
        conn_close(c);
        return;
    }
    CTX_DEBUG("connection %llu accepted", c->serial);
    uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read);
}

/* ---- life cycle --------------------------------------------------------------------------- */

int ctxd_server_new(uv_loop_t *loop, const struct ctxd_server_opts *opts, struct ctxd_server **out,
                    struct ctx_err *e)
{
    *out = NULL;
    if (!opts->socket_path || !opts->socket_path[0])
        return ctx_err_set(e, CTX_EINVAL, "no socket path given");
    struct sockaddr_un sun;
    if (strlen(opts->socket_path) >= sizeof sun.sun_path)
        return ctx_err_set(e, CTX_ERANGE, "socket path is longer than %zu bytes: %s",
                           sizeof sun.sun_path - 1, opts->socket_path);
    struct ctxd_server *s = calloc(1, sizeof *s);
    if (!s)
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    s->loop = loop;
    s->lock_fd = -1;
    s->max_line = opts->max_line ? opts->max_line : CTXD_MAX_LINE_DEFAULT;
    s->max_write_queue = opts->max_write_queue ? opts->max_write_queue : ((size_t)64 << 20);
    s->max_clients = opts->max_clients > 0 ? opts->max_clients : 256;
    s->socket_path = strdup(opts->socket_path);
    size_t ln = strlen(opts->socket_path) + 6;
    s->lock_path = malloc(ln);
    if (!s->socket_path || !s->lock_path) {
        ctxd_server_free(s);
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    }
    snprintf(s->lock_path, ln, "%s.lock", opts->socket_path);

    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", opts->socket_path);
    char *slash = strrchr(dir, '/');
    int rc = 0;
    if (slash && slash != dir) {
        *slash = 0;
        rc = mkdir_p(dir, e);
    }
    if (rc == 0)
        rc = take_lock(s, e);
    if (rc == 0)
        rc = clear_stale(s->socket_path, e);
    if (rc != 0) {
        ctxd_server_free(s);
        return rc;
    }
    uv_pipe_init(loop, &s->listener, 0);
    s->listener.data = s;
    s->listening = 1;
    mode_t old = umask(0177); /* the socket is born 0600: no window where others can connect */
    int urc = uv_pipe_bind(&s->listener, s->socket_path);
    umask(old);
    if (urc == 0)
        s->bound = 1;
    if (urc == 0)
        urc = uv_listen((uv_stream_t *)&s->listener, 128, on_connection);
    if (urc != 0) {
        ctx_err_set(e, CTX_EIO, "binding %s: %s", s->socket_path, uv_strerror(urc));
        *out = s; /* the listener handle must be closed through the loop */
        ctxd_server_shutdown(s);
        uv_run(loop, UV_RUN_DEFAULT);
        ctxd_server_free(s);
        *out = NULL;
        return CTX_EIO;
    }
    chmod(s->socket_path, 0600);
    *out = s;
    return 0;
}

int ctxd_server_register(struct ctxd_server *s, const char *method, ctxd_method_fn fn, void *ud)
{
    struct method *m = realloc(s->methods, (s->n_methods + 1) * sizeof *m);
    if (!m)
        return CTX_ENOMEM;
    s->methods = m;
    m[s->n_methods].name = strdup(method);
    if (!m[s->n_methods].name)
        return CTX_ENOMEM;
    m[s->n_methods].fn = fn;
    m[s->n_methods].ud = ud;
    s->n_methods++;
    return 0;
}

static void on_shutdown_done(uv_shutdown_t *req, int status)
{
    (void)status;
    struct conn *c = req->data;
    free(req);
    conn_close(c);
    conn_unref(c);
}

void ctxd_server_shutdown(struct ctxd_server *s)
{
    if (s->stopping)
        return;
    s->stopping = 1;
    if (s->listening) {
        s->listening = 0;
        uv_close((uv_handle_t *)&s->listener, NULL);
    }
    /* Let queued replies (the shutdown's own answer among them) reach their clients first. */
    for (struct conn *c = s->conns; c; c = c->next) {
        if (c->closing)
            continue;
        uv_read_stop((uv_stream_t *)&c->pipe);
        uv_shutdown_t *req = malloc(sizeof *req);
        if (req) {
            req->data = c;
            c->refs++;
            if (uv_shutdown(req, (uv_stream_t *)&c->pipe, on_shutdown_done) == 0)
                continue;
            free(req);
            c->refs--;
        }
        conn_close(c);
    }
}

void ctxd_server_free(struct ctxd_server *s)
{
    if (!s)
        return;
    if (s->bound)
        unlink(s->socket_path);
    /* The lock file stays: unlinking it would let a starting ctxd lock an orphaned inode. */
    if (s->lock_fd >= 0)
        close(s->lock_fd);
    for (size_t i = 0; i < s->n_methods; i++)
        free(s->methods[i].name);
    free(s->methods);
    free(s->socket_path);
    free(s->lock_path);
    free(s);
}

void ctxd_server_stats(const struct ctxd_server *s, struct ctxd_server_stats *st)
{
    *st = s->st;
    st->connections = s->n_conns;
}

const char *ctxd_server_socket(const struct ctxd_server *s)
{
    return s->socket_path;
}
