#include "lsp_server.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include "client.h"
#include "ctx_config.h"
#include "lsp_docs.h"
#include "lsp_framing.h"
#include "json.h"
#include "rpc.h"

/* window/showMessage and window/logMessage types. */
enum { MSG_ERROR = 1, MSG_WARNING = 2, MSG_INFO = 3, MSG_LOG = 4 };

/* A message read and not yet handled; a body that is not JSON is queued as its parse error, so
 * that replies keep the order of the input. */
struct queued {
    cJSON *msg;
    char *parse_error;
    bool cancelled;
};

struct server {
    const struct lsp_options *opt;
    int out_fd;
    bool out_broken;
    struct lsp_framer framer;
    struct lsp_docs docs;
    struct queued *q;
    size_t qn, qcap;
    bool initialize_seen, initialized, shutdown, exit_seen;
    bool client_progress;   /* window.workDoneProgress */
    long long parent_pid;   /* initialize.processId: we exit when it dies */
    struct ctxd_client *daemon;
};

/* ---- output ---- */

static void send_msg(struct server *s, cJSON *msg)
{
    if (!msg)
        return;
    char *body = s->out_broken ? NULL : cJSON_PrintUnformatted(msg);
    cJSON_Delete(msg);
    if (!body)
        return;
    size_t blen = strlen(body);
    char hdr[64];
    size_t hlen = lsp_frame_header(hdr, sizeof hdr, blen);
    const char *parts[2] = {hdr, body};
    size_t lens[2] = {hlen, blen};
    for (int p = 0; p < 2 && !s->out_broken; p++) {
        size_t off = 0;
        while (off < lens[p]) {
            ssize_t w = write(s->out_fd, parts[p] + off, lens[p] - off);
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0 && errno == EAGAIN) {
                struct pollfd pfd = {.fd = s->out_fd, .events = POLLOUT};
                poll(&pfd, 1, -1);
                continue;
            }
            if (w <= 0) {
                /* The editor is gone; nothing more can be said to it. */
                fprintf(stderr, "ctx lsp: writing to the client failed: %s\n", strerror(errno));
                s->out_broken = true;
                break;
            }
            off += (size_t)w;
        }
    }
    free(body);
}

static void respond(struct server *s, const cJSON *id, cJSON *result)
{
    send_msg(s, ctxd_rpc_result(id, result ? result : cJSON_CreateNull()));
}

static void respond_error(struct server *s, const cJSON *id, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void respond_error(struct server *s, const cJSON *id, int code, const char *fmt, ...)
{
    char msg[CTX_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    send_msg(s, ctxd_rpc_error(id, code, msg, NULL));
}

static void notify(struct server *s, const char *method, cJSON *params)
{
    send_msg(s, ctxd_rpc_notification(method, params));
}

static void message(struct server *s, const char *method, int type, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void message(struct server *s, const char *method, int type, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "ctx lsp: %s\n", msg);
    cJSON *p = cJSON_CreateObject();
    cJSON_AddNumberToObject(p, "type", type);
    cJSON_AddStringToObject(p, "message", msg);
    notify(s, method, p);
}

#define show_message(s, type, ...) message(s, "window/showMessage", type, __VA_ARGS__)
#define log_message(s, type, ...) message(s, "window/logMessage", type, __VA_ARGS__)

/* ---- $/progress (work done progress on a token the client gave) ---- */

static void progress(struct server *s, const cJSON *token, const char *kind, const char *title, const char *msg,
                     int percent)
{
    if (!token)
        return;
    cJSON *v = cJSON_CreateObject();
    cJSON_AddStringToObject(v, "kind", kind);
    if (title)
        cJSON_AddStringToObject(v, "title", title);
    if (msg)
        cJSON_AddStringToObject(v, "message", msg);
    if (percent >= 0)
        cJSON_AddNumberToObject(v, "percentage", percent);
    if (strcmp(kind, "begin") == 0)
        cJSON_AddBoolToObject(v, "cancellable", false);
    cJSON *p = cJSON_CreateObject();
    cJSON_AddItemToObject(p, "token", cJSON_Duplicate(token, true));
    cJSON_AddItemToObject(p, "value", v);
    notify(s, "$/progress", p);
}

static void progress_begin(struct server *s, const cJSON *token, const char *title, const char *msg)
{
    progress(s, token, "begin", title, msg, -1);
}

static void progress_report(struct server *s, const cJSON *token, const char *msg, int percent)
{
    progress(s, token, "report", NULL, msg, percent);
}

static void progress_end(struct server *s, const cJSON *token, const char *msg)
{
    progress(s, token, "end", NULL, msg, -1);
}

/* A workDoneToken is an integer or a string; anything else is ignored. */
static const cJSON *work_token(const cJSON *params)
{
    const cJSON *t = cJSON_IsObject(params) ? cJSON_GetObjectItemCaseSensitive(params, "workDoneToken") : NULL;
    return cJSON_IsString(t) || cJSON_IsNumber(t) ? t : NULL;
}

/* ---- the daemon ---- */

static int daemon_call(struct server *s, const char *method, const cJSON *token, cJSON **result,
                       struct ctx_err *e)
{
    int timeout = s->opt->daemon_timeout_ms > 0 ? s->opt->daemon_timeout_ms : 30000;
    /* A kept connection may have died with its daemon: one fresh attempt follows a local failure. */
    for (int attempt = 0; attempt < 2; attempt++) {
        if (!s->daemon) {
            int rc = ctxd_client_connect(s->opt->socket_path, &s->daemon, e);
            if (rc == CTX_ENOTFOUND) {
                progress_report(s, token, "starting ctxd", -1);
                rc = ctxd_client_connect_or_spawn(s->opt->ctxd_path, s->opt->socket_path, &s->daemon, e);
            }
            if (rc) {
                s->daemon = NULL;
                return rc;
            }
        }
        int rc = ctxd_client_call(s->daemon, method, NULL, NULL, NULL, timeout, result, e);
        if (rc == 0 || ctxd_client_rpc_code(s->daemon) != 0)
            return rc;
        ctxd_client_close(s->daemon);
        s->daemon = NULL;
        if (attempt == 1)
            return rc;
    }
    return CTX_EINTERNAL;
}

/* ---- requests ---- */

static const char *const commands[] = {"ctx.status"};

static void cmd_status(struct server *s, const cJSON *id, const cJSON *params)
{
    const cJSON *token = s->client_progress ? work_token(params) : NULL;
    progress_begin(s, token, "ctx status", "asking ctxd");
    cJSON *st = NULL;
    struct ctx_err e = {0};
    int rc = daemon_call(s, "daemon.status", token, &st, &e);
    if (rc) {
        progress_end(s, token, "failed");
        show_message(s, MSG_ERROR, "ctx: cannot reach ctxd on %s: %s", s->opt->socket_path, e.msg);
        cJSON *data = cJSON_CreateObject();
        cJSON_AddStringToObject(data, "code", ctx_code_name(rc));
        send_msg(s, ctxd_rpc_error(id, LSP_REQUEST_FAILED, e.msg, data));
        return;
    }
    cJSON *r = cJSON_CreateObject();
    cJSON_AddItemToObject(r, "daemon", st);
    cJSON *l = cJSON_AddObjectToObject(r, "lsp");
    cJSON_AddStringToObject(l, "version", CTX_VERSION);
    cJSON_AddNumberToObject(l, "pid", (double)getpid());
    cJSON_AddStringToObject(l, "positionEncoding", lsp_encoding_name(s->docs.enc));
    cJSON_AddItemToObject(l, "documents", lsp_docs_summary(&s->docs));
    progress_end(s, token, "done");
    respond(s, id, r);
}

static void execute_command(struct server *s, const cJSON *id, const cJSON *params)
{
    const char *cmd;
    struct ctx_err e = {0};
    if (!cJSON_IsObject(params)) {
        respond_error(s, id, CTXD_RPC_INVALID_PARAMS, "workspace/executeCommand: params must be an object");
        return;
    }
    if (ctx_json_get_string(params, "command", true, NULL, &cmd, "executeCommand", &e)) {
        respond_error(s, id, CTXD_RPC_INVALID_PARAMS, "%s", e.msg);
        return;
    }
    if (strcmp(cmd, "ctx.status") == 0) {
        cmd_status(s, id, params);
        return;
    }
    respond_error(s, id, CTXD_RPC_INVALID_PARAMS, "unknown command \"%s\" (this server has: ctx.status)", cmd);
}

/* The client's preferred position encodings (3.17); we take utf-8 when offered (the daemon works in
 * bytes), else the mandatory utf-16. */
static enum lsp_encoding pick_encoding(const cJSON *caps)
{
    const cJSON *general = cJSON_IsObject(caps) ? cJSON_GetObjectItemCaseSensitive(caps, "general") : NULL;
    const cJSON *encs = cJSON_IsObject(general) ? cJSON_GetObjectItemCaseSensitive(general, "positionEncodings") : NULL;
    for (const cJSON *it = cJSON_IsArray(encs) ? encs->child : NULL; it; it = it->next)
        if (cJSON_IsString(it) && strcmp(it->valuestring, "utf-8") == 0)
            return LSP_ENC_UTF8;
    return LSP_ENC_UTF16;
}

static void initialize(struct server *s, const cJSON *id, const cJSON *params)
{
    if (params && !cJSON_IsObject(params)) {
        respond_error(s, id, CTXD_RPC_INVALID_PARAMS, "initialize: params must be an object");
        return;
    }
    const cJSON *caps = params ? cJSON_GetObjectItemCaseSensitive(params, "capabilities") : NULL;
    const cJSON *window = cJSON_IsObject(caps) ? cJSON_GetObjectItemCaseSensitive(caps, "window") : NULL;
    const cJSON *wdp = cJSON_IsObject(window) ? cJSON_GetObjectItemCaseSensitive(window, "workDoneProgress") : NULL;
    s->client_progress = cJSON_IsTrue(wdp);
    const cJSON *pid = params ? cJSON_GetObjectItemCaseSensitive(params, "processId") : NULL;
    if (cJSON_IsNumber(pid) && pid->valuedouble > 1 && pid->valuedouble < 4194305)
        s->parent_pid = (long long)pid->valuedouble;
    s->docs.enc = pick_encoding(caps);
    s->initialize_seen = true;

    /* Honest capabilities: only what this server does now. */
    cJSON *r = cJSON_CreateObject();
    cJSON *c = cJSON_AddObjectToObject(r, "capabilities");
    cJSON_AddStringToObject(c, "positionEncoding", lsp_encoding_name(s->docs.enc));
    cJSON *sync = cJSON_AddObjectToObject(c, "textDocumentSync");
    cJSON_AddBoolToObject(sync, "openClose", true);
    cJSON_AddNumberToObject(sync, "change", 2); /* incremental */
    cJSON *save = cJSON_AddObjectToObject(sync, "save");
    cJSON_AddBoolToObject(save, "includeText", true);
    cJSON *ex = cJSON_AddObjectToObject(c, "executeCommandProvider");
    cJSON *cmds = cJSON_AddArrayToObject(ex, "commands");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        cJSON_AddItemToArray(cmds, cJSON_CreateString(commands[i]));
    cJSON_AddBoolToObject(ex, "workDoneProgress", true);
    cJSON *info = cJSON_AddObjectToObject(r, "serverInfo");
    cJSON_AddStringToObject(info, "name", "ctx");
    cJSON_AddStringToObject(info, "version", CTX_VERSION);
    respond(s, id, r);
}

static void document_notification(struct server *s, const char *method, const cJSON *params)
{
    struct ctx_err e = {0};
    int rc;
    if (strcmp(method, "textDocument/didOpen") == 0)
        rc = lsp_docs_open(&s->docs, params, &e);
    else if (strcmp(method, "textDocument/didChange") == 0)
        rc = lsp_docs_change(&s->docs, params, &e);
    else if (strcmp(method, "textDocument/didSave") == 0)
        rc = lsp_docs_save(&s->docs, params, &e);
    else
        rc = lsp_docs_close(&s->docs, params, &e);
    /* Notifications have no reply: a refused one is logged, where the editor's log shows it. */
    if (rc)
        log_message(s, rc == CTX_EPROTO || rc == CTX_ENOTFOUND ? MSG_WARNING : MSG_ERROR, "%s: %s", method, e.msg);
}

static bool valid_request_id(const cJSON *id)
{
    return cJSON_IsString(id) || (cJSON_IsNumber(id) && id->valuedouble == (double)(long long)id->valuedouble);
}

static void handle(struct server *s, struct queued *qm)
{
    const cJSON *msg = qm->msg;
    if (cJSON_IsObject(msg) && !cJSON_GetObjectItemCaseSensitive(msg, "method") &&
        cJSON_GetObjectItemCaseSensitive(msg, "id") &&
        (cJSON_GetObjectItemCaseSensitive(msg, "result") || cJSON_GetObjectItemCaseSensitive(msg, "error"))) {
        /* A response: this server sends no requests yet, so any response is stray. */
        return;
    }
    struct ctxd_rpc_req req;
    char err[256];
    int code = ctxd_rpc_check(msg, &req, err, sizeof err);
    if (!code && req.id && !valid_request_id(req.id)) {
        code = CTXD_RPC_INVALID_REQUEST;
        snprintf(err, sizeof err, "\"id\" must be an integer or a string");
        req.id = NULL;
    }
    if (code) {
        respond_error(s, req.id, code, "%s", err);
        return;
    }
    const char *m = req.method;
    if (strcmp(m, "exit") == 0) {
        s->exit_seen = true;
        return;
    }
    if (req.id && qm->cancelled) {
        respond_error(s, req.id, LSP_REQUEST_CANCELLED, "%s was cancelled", m);
        return;
    }
    if (!s->initialize_seen) {
        if (req.id && strcmp(m, "initialize") == 0)
            initialize(s, req.id, req.params);
        else if (req.id)
            respond_error(s, req.id, LSP_SERVER_NOT_INITIALIZED, "%s before initialize", m);
        return; /* notifications before initialize are dropped, as the spec says */
    }
    if (!req.id && s->shutdown)
        return; /* after shutdown only exit matters */
    if (!req.id) {
        if (strcmp(m, "initialized") == 0)
            s->initialized = true;
        else if (strncmp(m, "textDocument/did", 16) == 0 &&
                 (!strcmp(m + 16, "Open") || !strcmp(m + 16, "Change") || !strcmp(m + 16, "Save") ||
                  !strcmp(m + 16, "Close")))
            document_notification(s, m, req.params);
        /* everything else ($/setTrace, workspace/didChangeConfiguration, ...) is ignored */
        return;
    }
    if (s->shutdown) {
        respond_error(s, req.id, CTXD_RPC_INVALID_REQUEST, "%s after shutdown", m);
        return;
    }
    if (strcmp(m, "initialize") == 0)
        respond_error(s, req.id, CTXD_RPC_INVALID_REQUEST, "initialize was already received");
    else if (strcmp(m, "shutdown") == 0) {
        s->shutdown = true;
        respond(s, req.id, NULL);
    } else if (strcmp(m, "workspace/executeCommand") == 0)
        execute_command(s, req.id, req.params);
    else
        respond_error(s, req.id, CTXD_RPC_METHOD_NOT_FOUND, "method \"%s\" is not supported", m);
}

/* ---- input ---- */

static int on_body(void *ud, char *body, size_t len)
{
    struct server *s = ud;
    struct ctx_err e = {0};
    cJSON *msg = ctx_json_parse(body, len, "message", &e);
    char *perr = msg ? NULL : strdup(e.msg);
    if (!msg && !perr) {
        respond_error(s, NULL, CTXD_RPC_PARSE_ERROR, "%s", e.msg);
        return 0;
    }
    if (s->qn == s->qcap) {
        size_t cap = s->qcap ? s->qcap * 2 : 16;
        struct queued *q = realloc(s->q, cap * sizeof *q);
        if (!q) {
            cJSON_Delete(msg);
            free(perr);
            respond_error(s, NULL, CTXD_RPC_INTERNAL_ERROR, "out of memory queueing a message");
            return 0;
        }
        s->q = q;
        s->qcap = cap;
    }
    s->q[s->qn++] = (struct queued){.msg = msg, .parse_error = perr};
    return 0;
}

static int on_frame_error(void *ud, const struct ctx_err *e)
{
    log_message(ud, MSG_ERROR, "framing: %s", e->msg);
    return 0;
}

static bool same_id(const cJSON *a, const cJSON *b)
{
    if (cJSON_IsString(a) && cJSON_IsString(b))
        return strcmp(a->valuestring, b->valuestring) == 0;
    return cJSON_IsNumber(a) && cJSON_IsNumber(b) && a->valuedouble == b->valuedouble;
}

static bool is_method(const cJSON *msg, const char *name)
{
    const cJSON *m = cJSON_IsObject(msg) ? cJSON_GetObjectItemCaseSensitive(msg, "method") : NULL;
    return cJSON_IsString(m) && strcmp(m->valuestring, name) == 0;
}

/* Cancellations first: a $/cancelRequest marks the queued, unanswered request it names (earlier in
 * the queue). One naming an answered or unknown request is ignored, as the spec allows. */
static void apply_cancellations(struct server *s)
{
    for (size_t i = 0; i < s->qn; i++) {
        const cJSON *msg = s->q[i].msg;
        if (!is_method(msg, "$/cancelRequest") || cJSON_GetObjectItemCaseSensitive(msg, "id"))
            continue;
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(msg, "params");
        const cJSON *id = cJSON_IsObject(p) ? cJSON_GetObjectItemCaseSensitive(p, "id") : NULL;
        for (size_t j = 0; id && j < i; j++) {
            const cJSON *rid = cJSON_GetObjectItemCaseSensitive(s->q[j].msg, "id");
            if (rid && cJSON_GetObjectItemCaseSensitive(s->q[j].msg, "method") && same_id(rid, id))
                s->q[j].cancelled = true;
        }
    }
}

static void drain_queue(struct server *s)
{
    apply_cancellations(s);
    size_t i = 0;
    for (; i < s->qn && !s->exit_seen && !s->out_broken; i++) {
        if (s->q[i].parse_error)
            respond_error(s, NULL, CTXD_RPC_PARSE_ERROR, "%s", s->q[i].parse_error);
        else
            handle(s, &s->q[i]);
        cJSON_Delete(s->q[i].msg);
        free(s->q[i].parse_error);
    }
    for (; i < s->qn; i++) { /* after exit nothing more is read */
        cJSON_Delete(s->q[i].msg);
        free(s->q[i].parse_error);
    }
    s->qn = 0;
}

static bool parent_gone(const struct server *s)
{
    return s->parent_pid > 0 && kill((pid_t)s->parent_pid, 0) != 0 && errno == ESRCH;
}

int lsp_server_run(int in_fd, int out_fd, const struct lsp_options *opt)
{
    struct server s = {.opt = opt, .out_fd = out_fd};
    lsp_framer_init(&s.framer, 0, opt->max_message);
    struct lsp_framer_cb cb = {.on_message = on_body, .on_error = on_frame_error, .ud = &s};
    char *buf = malloc(1 << 16);
    bool eof = false;
    if (!buf) {
        fprintf(stderr, "ctx lsp: out of memory\n");
        return 1;
    }
    while (!s.exit_seen && !s.out_broken) {
        struct pollfd pfd = {.fd = in_fd, .events = POLLIN};
        /* Wake now and then to notice an editor that died without closing our input. */
        int pr = poll(&pfd, 1, s.parent_pid > 0 ? 3000 : -1);
        if (pr < 0 && errno != EINTR) {
            fprintf(stderr, "ctx lsp: poll: %s\n", strerror(errno));
            break;
        }
        if (pr == 0) {
            if (parent_gone(&s)) {
                fprintf(stderr, "ctx lsp: the editor (pid %lld) is gone; exiting\n", s.parent_pid);
                break;
            }
            continue;
        }
        if (pr < 0)
            continue;
        ssize_t n = read(in_fd, buf, 1 << 16);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n <= 0) {
            if (n < 0)
                fprintf(stderr, "ctx lsp: reading from the client: %s\n", strerror(errno));
            eof = true;
            break;
        }
        if (lsp_framer_feed(&s.framer, buf, (size_t)n, &cb) == CTX_ENOMEM) {
            log_message(&s, MSG_ERROR, "out of memory reading a message; it was dropped");
            lsp_framer_free(&s.framer);
            lsp_framer_init(&s.framer, 0, opt->max_message);
        }
        drain_queue(&s);
    }
    if (eof && !s.exit_seen)
        fprintf(stderr, "ctx lsp: input closed without exit\n");
    int status = s.exit_seen && s.shutdown ? 0 : 1;
    free(buf);
    free(s.q);
    lsp_framer_free(&s.framer);
    lsp_docs_free(&s.docs);
    if (s.daemon)
        ctxd_client_close(s.daemon);
    return status;
}
