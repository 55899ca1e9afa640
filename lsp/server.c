#include "lsp_server.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include "ctx_config.h"
#include "lsp_docs.h"
#include "lsp_edit.h"
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

/* initializationOptions (all optional): {"reviewOnSave": bool, "reviewDebounceMs": int,
 * "openRepository": bool, "inlineCompletion": {"maxTokens", "timeoutMs", "budget"}}. */
struct settings {
    bool review_on_save;
    int review_debounce_ms;
    bool open_repository;
    int fim_max_tokens, fim_timeout_ms, fim_budget;
    bool sync_buffers;
    int buffer_debounce_ms;
};

enum job_kind { JOB_FIM, JOB_AGENT, JOB_REVIEW, JOB_OPEN };

/* One call to ctxd on a connection of its own: closing the connection is how it is cancelled (ctxd
 * cancels a departed client's jobs within one decode step), so the loop never waits on the daemon. */
struct job {
    struct job *next;
    unsigned long long seq;
    enum job_kind kind;
    int fd;
    struct ctxd_linebuf lb;
    bool finished;
    cJSON *lsp_id;          /* the editor's request this answers, or NULL */
    char *command;          /* JOB_AGENT: ctx.ask, ctx.explain, ctx.fix, ... */
    char *uri;              /* the document concerned */
    int64_t version;
    struct lsp_pos pos;     /* JOB_FIM: the cursor */
    long long deadline;     /* JOB_FIM: give up (empty answer) at this time; 0: none */
    /* $/progress: a token the client gave, or one we asked it to create */
    cJSON *token;
    int prog;               /* 0 none, 1 creating, 2 begun, 3 over */
    char title[64], prog_msg[200];
};

enum outreq_kind { OUT_PROGRESS_CREATE, OUT_APPLY_EDIT, OUT_APPROVAL };

struct outreq {
    struct outreq *next;
    long long id;
    enum outreq_kind kind;
    unsigned long long job;  /* the job's seq (it may be gone by the time the answer comes) */
    long long approval;      /* OUT_APPROVAL: the daemon's approval number */
};

struct review_due {
    struct review_due *next;
    char *uri;
    long long due;
};

/* A document's unsaved buffer as ctxd holds it (buffer.update / buffer.close on the kept
 * connection, so ctxd drops it when we go away). */
struct sync {
    struct sync *next;
    char *uri;
    long long due;     /* send its state to ctxd at this time (debounce); 0: nothing to send */
    bool held;         /* ctxd holds our buffer of it, on connection generation `gen` */
    unsigned gen;
    bool differs;      /* opened with text other than the file's on disk */
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
    char *root;             /* the workspace folder (rootUri, rootPath or the first folder) */
    struct settings set;
    struct job *jobs;       /* requests to ctxd in flight, one connection each */
    unsigned long long job_seq;
    struct outreq *outreqs; /* our requests to the client awaiting its response */
    long long next_out_id;
    struct review_due *due; /* saved documents waiting for their debounced review */
    struct sync *syncs;     /* open documents' buffers on ctxd */
    unsigned daemon_gen;    /* bumped whenever the kept connection is replaced (its buffers are gone) */
    long long buffer_client; /* ctxd's id of the kept connection (buffer.update's "client") */
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
    char msg[8192]; /* answers are logged whole up to here */
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

/* A call on the kept connection (params taken; may be NULL). */
static int daemon_call_p(struct server *s, const char *method, cJSON *params, const cJSON *token, cJSON **result,
                         struct ctx_err *e)
{
    int timeout = s->opt->daemon_timeout_ms > 0 ? s->opt->daemon_timeout_ms : 30000;
    int rc = CTX_EINTERNAL;
    /* A kept connection may have died with its daemon: one fresh attempt follows a local failure. */
    for (int attempt = 0; attempt < 2; attempt++) {
        if (!s->daemon) {
            s->daemon_gen++;
            rc = ctxd_client_connect(s->opt->socket_path, &s->daemon, e);
            if (rc == CTX_ENOTFOUND) {
                progress_report(s, token, "starting ctxd", -1);
                rc = ctxd_client_connect_or_spawn(s->opt->ctxd_path, s->opt->socket_path, &s->daemon, e);
            }
            if (rc) {
                s->daemon = NULL;
                break;
            }
        }
        rc = ctxd_client_call(s->daemon, method, params ? cJSON_Duplicate(params, true) : NULL, NULL, NULL, timeout,
                              result, e);
        if (rc == 0 || ctxd_client_rpc_code(s->daemon) != 0)
            break;
        ctxd_client_close(s->daemon);
        s->daemon = NULL;
    }
    cJSON_Delete(params);
    return rc;
}

static int daemon_call(struct server *s, const char *method, const cJSON *token, cJSON **result,
                       struct ctx_err *e)
{
    return daemon_call_p(s, method, NULL, token, result, e);
}

/* ---- calls to ctxd that run while the loop goes on ---- */

static bool same_id(const cJSON *a, const cJSON *b);

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct job *find_job(struct server *s, unsigned long long seq)
{
    for (struct job *j = s->jobs; j; j = j->next)
        if (j->seq == seq)
            return j;
    return NULL;
}

/* A request of ours to the client; its response comes back through handle_response. */
static long long send_request(struct server *s, const char *method, cJSON *params, enum outreq_kind kind,
                              unsigned long long job, long long approval)
{
    struct outreq *o = calloc(1, sizeof *o);
    if (!o) {
        cJSON_Delete(params);
        return -1;
    }
    o->id = ++s->next_out_id;
    o->kind = kind;
    o->job = job;
    o->approval = approval;
    o->next = s->outreqs;
    s->outreqs = o;
    send_msg(s, ctxd_rpc_request(o->id, method, params));
    return o->id;
}

/* Progress of a job: begin once the token exists, then reports, then end. */
static void job_progress(struct server *s, struct job *j, const char *msg, int percent)
{
    if (msg)
        snprintf(j->prog_msg, sizeof j->prog_msg, "%s", msg);
    if (j->prog == 2)
        progress_report(s, j->token, msg, percent);
}

static void job_progress_start(struct server *s, struct job *j, const cJSON *client_token, const char *title)
{
    snprintf(j->title, sizeof j->title, "%s", title);
    if (client_token) {
        j->token = cJSON_Duplicate(client_token, true);
        j->prog = 2;
        progress_begin(s, j->token, title, NULL);
    } else if (s->client_progress) {
        char tok[48];
        snprintf(tok, sizeof tok, "ctx-%llu", j->seq);
        j->token = cJSON_CreateString(tok);
        j->prog = 1;
        cJSON *p = cJSON_CreateObject();
        cJSON_AddStringToObject(p, "token", tok);
        send_request(s, "window/workDoneProgress/create", p, OUT_PROGRESS_CREATE, j->seq, 0);
    }
}

static void free_job(struct server *s, struct job *j, const char *end_msg)
{
    for (struct job **pp = &s->jobs; *pp; pp = &(*pp)->next)
        if (*pp == j) {
            *pp = j->next;
            break;
        }
    if (j->prog == 2)
        progress_end(s, j->token, end_msg);
    if (j->fd >= 0)
        close(j->fd);
    ctxd_linebuf_free(&j->lb);
    cJSON_Delete(j->lsp_id);
    cJSON_Delete(j->token);
    free(j->command);
    free(j->uri);
    free(j);
}

/* Cancel a job: its connection closes (ctxd cancels the work), the editor's request, if any, is
 * answered with `code`. */
static void cancel_job(struct server *s, struct job *j, int code, const char *why)
{
    if (j->lsp_id)
        respond_error(s, j->lsp_id, code, "%s", why);
    free_job(s, j, why);
}

static int raw_connect(const char *path, int *fd)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof a.sun_path)
        return CTX_EINVAL;
    memcpy(a.sun_path, path, strlen(path) + 1);
    int f = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (f < 0)
        return CTX_EIO;
    if (connect(f, (struct sockaddr *)&a, sizeof a) != 0) {
        close(f);
        return CTX_ENOTFOUND;
    }
    *fd = f;
    return 0;
}

/* A new connection to ctxd, starting it if none runs. */
static int open_connection(struct server *s, int *fd, struct ctx_err *e)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        if (!s->daemon) {
            s->daemon_gen++;
            int rc = ctxd_client_connect_or_spawn(s->opt->ctxd_path, s->opt->socket_path, &s->daemon, e);
            if (rc) {
                s->daemon = NULL;
                return rc;
            }
        }
        if (raw_connect(s->opt->socket_path, fd) == 0)
            return 0;
        ctxd_client_close(s->daemon); /* it went away: start or reach a new one */
        s->daemon = NULL;
    }
    return ctx_err_set(e, CTX_EIO, "cannot connect to ctxd on %s", s->opt->socket_path);
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return CTX_EIO;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int send_line(int fd, cJSON *msg)
{
    size_t len = 0;
    char *line = msg ? ctxd_rpc_line(msg, &len) : NULL;
    cJSON_Delete(msg);
    int rc = line ? write_all(fd, line, len) : CTX_ENOMEM;
    free(line);
    return rc;
}

/* Start a job: connect, send `method` (params taken) as request 1. On failure the editor's request
 * is answered (RequestFailed, and a showMessage unless quiet) and NULL returned. */
static struct job *start_job(struct server *s, enum job_kind kind, const cJSON *lsp_id, const char *method,
                             cJSON *params, bool quiet)
{
    struct ctx_err e = {0};
    struct job *j = calloc(1, sizeof *j);
    int fd = -1, rc = j ? open_connection(s, &fd, &e) : ctx_err_set(&e, CTX_ENOMEM, "out of memory");
    if (rc)
        cJSON_Delete(params);
    else if ((rc = send_line(fd, ctxd_rpc_request(1, method, params))))
        ctx_err_set(&e, rc, "sending %s to ctxd failed", method);
    if (rc) {
        if (fd >= 0)
            close(fd);
        free(j);
        if (quiet)
            log_message(s, MSG_WARNING, "ctx: %s: %s", method, e.msg);
        else
            show_message(s, MSG_ERROR, "ctx: %s: %s", method, e.msg);
        if (lsp_id) {
            cJSON *data = cJSON_CreateObject();
            cJSON_AddStringToObject(data, "code", ctx_code_name(rc));
            send_msg(s, ctxd_rpc_error(lsp_id, LSP_REQUEST_FAILED, e.msg, data));
        }
        return NULL;
    }
    j->seq = ++s->job_seq;
    j->kind = kind;
    j->fd = fd;
    j->version = -1;
    ctxd_linebuf_init(&j->lb, CTXD_MAX_LINE_DEFAULT);
    j->lsp_id = lsp_id ? cJSON_Duplicate(lsp_id, true) : NULL;
    j->next = s->jobs;
    s->jobs = j;
    return j;
}

/* ---- file text for the diff converter: the open buffer, else the file on disk ---- */

struct lookup_ctx {
    struct server *s;
    char **bufs;
    size_t n;
};

static int lookup_text(void *ud, const char *path, const char **text, size_t *len, int64_t *version,
                       struct ctx_err *e)
{
    struct lookup_ctx *lc = ud;
    struct lsp_docs *d = &lc->s->docs;
    for (size_t i = 0; i < d->n; i++) {
        char *p = NULL;
        struct ctx_err ue = {0};
        if (lsp_uri_to_path(d->v[i].uri, &p, &ue) == 0 && strcmp(p, path) == 0) {
            free(p);
            *text = d->v[i].text.data ? d->v[i].text.data : "";
            *len = d->v[i].text.len;
            *version = d->v[i].version;
            return 0;
        }
        free(p);
    }
    char *buf = NULL;
    size_t n = 0;
    int rc = ctx_read_file(path, (size_t)64 << 20, &buf, &n, e);
    if (rc)
        return rc == CTX_EIO && access(path, F_OK) != 0 ? ctx_err_set(e, CTX_ENOTFOUND, "%s does not exist", path) : rc;
    char **g = realloc(lc->bufs, (lc->n + 1) * sizeof *g);
    if (!g) {
        free(buf);
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    }
    lc->bufs = g;
    lc->bufs[lc->n++] = buf;
    *text = buf;
    *len = n;
    *version = -1;
    return 0;
}

static void lookup_free(struct lookup_ctx *lc)
{
    for (size_t i = 0; i < lc->n; i++)
        free(lc->bufs[i]);
    free(lc->bufs);
}

/* ---- what comes back from ctxd ---- */

static const char *jstr(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, k) : NULL;
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static void fim_reply(struct server *s, struct job *j, const cJSON *result)
{
    const char *text = jstr(result, "text");
    cJSON *r = cJSON_CreateObject(), *items = cJSON_AddArrayToObject(r, "items");
    if (text && text[0]) {
        cJSON *it = cJSON_CreateObject();
        cJSON_AddStringToObject(it, "insertText", text);
        cJSON *range = cJSON_AddObjectToObject(it, "range");
        for (int k = 0; k < 2; k++) {
            cJSON *p = cJSON_AddObjectToObject(range, k ? "end" : "start");
            cJSON_AddNumberToObject(p, "line", j->pos.line);
            cJSON_AddNumberToObject(p, "character", j->pos.character);
        }
        cJSON_AddItemToArray(items, it);
    }
    respond(s, j->lsp_id, r);
}

static void publish(struct server *s, const char *uri, cJSON *diagnostics)
{
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "uri", uri);
    const struct lsp_doc *d = lsp_docs_find(&s->docs, uri);
    if (d)
        cJSON_AddNumberToObject(p, "version", (double)d->version);
    cJSON_AddItemToObject(p, "diagnostics", diagnostics);
    notify(s, "textDocument/publishDiagnostics", p);
}

static void review_reply(struct server *s, struct job *j, const cJSON *result)
{
    const cJSON *findings = cJSON_GetObjectItemCaseSensitive(result, "findings");
    const char *ferr = jstr(result, "findings_error");
    if (ferr) /* the model's answer had no readable findings: nothing to show, but say why */
        log_message(s, MSG_WARNING, "ctx review of %s: %s", j->uri, ferr);
    cJSON *uris = cJSON_CreateArray(), *out = NULL;
    cJSON_AddItemToArray(uris, cJSON_CreateString(j->uri));
    struct lookup_ctx lc = {s, NULL, 0};
    struct ctx_err e = {0};
    int rc = lsp_findings_to_diagnostics(findings, s->root, uris, lookup_text, &lc, s->docs.enc, &out, &e);
    lookup_free(&lc);
    cJSON_Delete(uris);
    if (rc) {
        show_message(s, MSG_ERROR, "ctx review: %s", e.msg);
        if (j->lsp_id)
            respond_error(s, j->lsp_id, LSP_REQUEST_FAILED, "%s", e.msg);
        return;
    }
    int n = 0;
    for (cJSON *it = out->child; it; it = it->next)
        n += cJSON_GetArraySize(it);
    while (out->child) {
        cJSON *it = cJSON_DetachItemViaPointer(out, out->child);
        publish(s, it->string, it);
    }
    cJSON_Delete(out);
    if (j->lsp_id) {
        cJSON *r = cJSON_CreateObject();
        cJSON_AddNumberToObject(r, "findings", n);
        respond(s, j->lsp_id, r);
    }
}

static void agent_reply(struct server *s, struct job *j, cJSON *result)
{
    const char *answer = jstr(result, "answer"), *diff = jstr(result, "diff");
    const char *cmd = j->command;
    bool suggest = strcmp(cmd, "ctx.fix") == 0 || strcmp(cmd, "ctx.refactor") == 0 || strcmp(cmd, "ctx.writeTests") == 0;
    if (answer && answer[0])
        log_message(s, MSG_LOG, "%s: %s", cmd, answer);
    if (strcmp(cmd, "ctx.explain") == 0 && answer)
        show_message(s, MSG_INFO, "%.900s%s", answer, strlen(answer) > 900 ? " … (the whole answer is in the log)" : "");
    if (suggest) {
        if (!diff || !diff[0]) {
            show_message(s, MSG_INFO, "ctx: no change was suggested%s%.400s", answer ? ": " : "", answer ? answer : "");
        } else {
            struct lookup_ctx lc = {s, NULL, 0};
            struct ctx_err e = {0};
            cJSON *edit = NULL;
            int rc = lsp_diff_to_edit(diff, strlen(diff), s->root, lookup_text, &lc, s->docs.enc, &edit, &e);
            lookup_free(&lc);
            if (rc) {
                show_message(s, MSG_ERROR, "ctx: the suggested change cannot be applied: %s", e.msg);
                cJSON_AddStringToObject(result, "applyError", e.msg);
            } else {
                cJSON *p = cJSON_CreateObject();
                cJSON_AddStringToObject(p, "label", strcmp(cmd, "ctx.fix") == 0        ? "ctx: Fix"
                                                    : strcmp(cmd, "ctx.refactor") == 0 ? "ctx: Refactor"
                                                                                       : "ctx: Write tests");
                cJSON_AddItemToObject(p, "edit", cJSON_Duplicate(edit, true));
                send_request(s, "workspace/applyEdit", p, OUT_APPLY_EDIT, j->seq, 0);
                cJSON_AddItemToObject(result, "edit", edit);
            }
        }
    }
    if (j->lsp_id) {
        respond(s, j->lsp_id, cJSON_Duplicate(result, true));
    }
}

static void job_result(struct server *s, struct job *j, cJSON *result)
{
    switch (j->kind) {
    case JOB_FIM: fim_reply(s, j, result); break;
    case JOB_REVIEW: review_reply(s, j, result); break;
    case JOB_AGENT: agent_reply(s, j, result); break;
    case JOB_OPEN:
        log_message(s, MSG_INFO, "ctx: %s is resident (%d tokens)", s->root,
                    cJSON_GetObjectItemCaseSensitive(result, "resident_tokens")
                        ? cJSON_GetObjectItemCaseSensitive(result, "resident_tokens")->valueint
                        : 0);
        break;
    }
}

static void job_error(struct server *s, struct job *j, const cJSON *err)
{
    const char *msg = jstr(err, "message");
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(err, "code");
    char m[1024];
    snprintf(m, sizeof m, "%s", msg ? msg : "ctxd failed");
    if (j->kind == JOB_FIM)
        log_message(s, MSG_WARNING, "ctx: inline completion: %s", m);
    else if (j->kind == JOB_OPEN) /* e.g. a workspace that is no git repository: nothing to alarm about */
        log_message(s, MSG_WARNING, "ctx: opening %s: %s", s->root, m);
    else
        show_message(s, MSG_ERROR, "ctx: %s: %s", j->kind == JOB_AGENT ? j->command : j->kind == JOB_REVIEW ? "review" : "opening the repository", m);
    if (j->lsp_id) {
        const cJSON *data = cJSON_GetObjectItemCaseSensitive(err, "data");
        cJSON *d = cJSON_IsObject(data) ? cJSON_Duplicate(data, true) : cJSON_CreateObject();
        if (cJSON_IsNumber(code))
            cJSON_AddNumberToObject(d, "ctxd", code->valuedouble);
        send_msg(s, ctxd_rpc_error(j->lsp_id, LSP_REQUEST_FAILED, m, d));
    }
}

static void job_note(struct server *s, struct job *j, const char *method, const cJSON *p)
{
    char msg[200];
    if (strcmp(method, "repo.progress") == 0) {
        const char *phase = jstr(p, "phase");
        const cJSON *done = cJSON_GetObjectItemCaseSensitive(p, "done"), *total = cJSON_GetObjectItemCaseSensitive(p, "total");
        int pct = cJSON_IsNumber(done) && cJSON_IsNumber(total) && total->valuedouble > 0
                      ? (int)(100.0 * done->valuedouble / total->valuedouble)
                      : -1;
        snprintf(msg, sizeof msg, "%s", phase ? phase : "working");
        job_progress(s, j, msg, pct > 100 ? 100 : pct);
    } else if (strcmp(method, "agent.event") == 0) {
        const char *kind = jstr(p, "kind"), *tool = jstr(p, "tool");
        const cJSON *step = cJSON_GetObjectItemCaseSensitive(p, "step");
        int n = cJSON_IsNumber(step) ? step->valueint : 0;
        if (kind && strcmp(kind, "tool_call") == 0)
            snprintf(msg, sizeof msg, "step %d: %s", n, tool ? tool : "a tool");
        else if (kind && strcmp(kind, "step") == 0)
            snprintf(msg, sizeof msg, "step %d", n);
        else if (kind && (strcmp(kind, "content") == 0 || strcmp(kind, "reasoning") == 0))
            snprintf(msg, sizeof msg, "step %d: %s", n, strcmp(kind, "content") == 0 ? "writing" : "thinking");
        else
            return;
        if (strcmp(msg, j->prog_msg) != 0)
            job_progress(s, j, msg, -1);
    } else if (strcmp(method, "agent.approve") == 0) {
        /* the agent wants to run a command its policy asks about: the user decides */
        const char *cmd = jstr(p, "command");
        const cJSON *ap = cJSON_GetObjectItemCaseSensitive(p, "approval");
        if (!cJSON_IsNumber(ap))
            return;
        cJSON *q = cJSON_CreateObject();
        char text[1200];
        snprintf(text, sizeof text, "ctx wants to run: %.1100s", cmd ? cmd : "?");
        cJSON_AddNumberToObject(q, "type", MSG_WARNING);
        cJSON_AddStringToObject(q, "message", text);
        cJSON *acts = cJSON_AddArrayToObject(q, "actions");
        for (int k = 0; k < 2; k++) {
            cJSON *a = cJSON_CreateObject();
            cJSON_AddStringToObject(a, "title", k ? "Deny" : "Allow");
            cJSON_AddItemToArray(acts, a);
        }
        send_request(s, "window/showMessageRequest", q, OUT_APPROVAL, j->seq, (long long)ap->valuedouble);
    }
}

struct line_ctx {
    struct server *s;
    struct job *j;
};

static int on_job_line(void *ud, char *line, size_t len)
{
    struct line_ctx *lc = ud;
    struct job *j = lc->j;
    if (j->finished)
        return 1;
    struct ctx_err e = {0};
    cJSON *m = ctx_json_parse(line, len, "ctxd reply", &e);
    if (!m)
        return 0;
    const cJSON *method = cJSON_GetObjectItemCaseSensitive(m, "method");
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(m, "id");
    if (cJSON_IsString(method)) {
        job_note(lc->s, j, method->valuestring, cJSON_GetObjectItemCaseSensitive(m, "params"));
    } else if (cJSON_IsNumber(id) && id->valueint == 1) {
        cJSON *err = cJSON_GetObjectItemCaseSensitive(m, "error");
        if (j->prog == 2) /* the progress ends before the answer comes */
            progress_end(lc->s, j->token, err ? "failed" : "done");
        j->prog = 3;
        if (err)
            job_error(lc->s, j, err);
        else
            job_result(lc->s, j, cJSON_GetObjectItemCaseSensitive(m, "result"));
        j->finished = true;
    } /* replies to agent.answer (other ids) carry nothing we need */
    cJSON_Delete(m);
    return j->finished;
}

static void on_job_overlong(void *ud)
{
    struct line_ctx *lc = ud;
    log_message(lc->s, MSG_ERROR, "ctx: a line from ctxd was too long and was dropped");
}

static void job_readable(struct server *s, struct job *j)
{
    char buf[65536];
    ssize_t n = read(j->fd, buf, sizeof buf);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return;
    if (n <= 0) {
        cJSON *err = cJSON_CreateObject();
        cJSON_AddStringToObject(err, "message", "ctxd closed the connection before answering");
        job_error(s, j, err);
        cJSON_Delete(err);
        free_job(s, j, "failed");
        return;
    }
    struct line_ctx lc = {s, j};
    ctxd_linebuf_feed(&j->lb, buf, (size_t)n, on_job_line, on_job_overlong, &lc);
    if (j->finished)
        free_job(s, j, "done");
}

static void handle_response(struct server *s, const cJSON *msg)
{
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(msg, "id");
    struct outreq *o = NULL, **pp;
    for (pp = &s->outreqs; *pp; pp = &(*pp)->next)
        if (cJSON_IsNumber(id) && (*pp)->id == (long long)id->valuedouble) {
            o = *pp;
            *pp = o->next;
            break;
        }
    if (!o)
        return; /* stray: ignored */
    const cJSON *result = cJSON_GetObjectItemCaseSensitive(msg, "result");
    const cJSON *error = cJSON_GetObjectItemCaseSensitive(msg, "error");
    struct job *j = find_job(s, o->job);
    switch (o->kind) {
    case OUT_PROGRESS_CREATE:
        if (j && j->prog == 1) {
            j->prog = error ? 3 : 2;
            if (j->prog == 2)
                progress_begin(s, j->token, j->title, j->prog_msg[0] ? j->prog_msg : NULL);
        }
        break;
    case OUT_APPLY_EDIT: {
        const cJSON *applied = cJSON_GetObjectItemCaseSensitive(result, "applied");
        if (error || !cJSON_IsTrue(applied)) {
            const char *why = error ? jstr(error, "message") : jstr(result, "failureReason");
            show_message(s, MSG_WARNING, "ctx: the editor did not apply the change%s%s", why ? ": " : "", why ? why : "");
        }
        break;
    }
    case OUT_APPROVAL:
        if (j) {
            const char *title = jstr(result, "title");
            cJSON *p = cJSON_CreateObject();
            cJSON_AddNumberToObject(p, "approval", (double)o->approval);
            cJSON_AddBoolToObject(p, "allow", title && strcmp(title, "Allow") == 0);
            if (send_line(j->fd, ctxd_rpc_request(2, "agent.answer", p)))
                log_message(s, MSG_WARNING, "ctx: could not send the approval to ctxd");
        }
        break;
    }
    free(o);
}

/* ---- agent commands, code actions, inline completion, reviews ---- */

static const char *const commands[] = {"ctx.status", "ctx.ask",        "ctx.explain", "ctx.fix",
                                       "ctx.refactor", "ctx.writeTests", "ctx.review"};

/* The file a document URI names, or NULL (the error is in e). */
static char *uri_path(const char *uri, struct ctx_err *e)
{
    char *p = NULL;
    return lsp_uri_to_path(uri, &p, e) ? NULL : p;
}

/* The repository to ask about a file: the workspace folder, else the file's directory. */
static char *repo_for(struct server *s, const char *path)
{
    if (s->root)
        return strdup(s->root);
    char *d = strdup(path);
    char *slash = d ? strrchr(d, '/') : NULL;
    if (slash)
        *(slash == d ? slash + 1 : slash) = 0;
    return d;
}

static const char *rel_to_root(const struct server *s, const char *path)
{
    size_t n = s->root ? strlen(s->root) : 0;
    if (n && strncmp(path, s->root, n) == 0 && path[n] == '/')
        return path + n + 1;
    return path;
}

/* ---- unsaved buffers to ctxd ---- */

static struct sync *find_sync(struct server *s, const char *uri, bool create)
{
    for (struct sync *y = s->syncs; y; y = y->next)
        if (strcmp(y->uri, uri) == 0)
            return y;
    if (!create)
        return NULL;
    struct sync *y = calloc(1, sizeof *y);
    if (!y || !(y->uri = strdup(uri))) {
        free(y);
        return NULL;
    }
    y->next = s->syncs;
    s->syncs = y;
    return y;
}

static void free_sync(struct server *s, struct sync *y)
{
    for (struct sync **pp = &s->syncs; *pp; pp = &(*pp)->next)
        if (*pp == y) {
            *pp = y->next;
            break;
        }
    free(y->uri);
    free(y);
}

/* Tell ctxd the document's state now: its text while it differs from the disk (changed since it
 * was opened or saved, and in step with the editor), else no buffer (the disk is current). A file
 * whose repository is not open yet gets it opened (in the background) and the update retried. */
static void sync_send(struct server *s, struct sync *y)
{
    y->due = 0;
    const struct lsp_doc *doc = lsp_docs_find(&s->docs, y->uri);
    bool held = y->held && y->gen == s->daemon_gen;
    bool want = doc && !doc->desync && (doc->dirty || y->differs);
    struct ctx_err e = {0};
    char *path = uri_path(y->uri, &e);
    if (!path || (!want && !held)) {
        y->held = false;
        free(path);
        return;
    }
    cJSON *p = cJSON_CreateObject(), *res = NULL;
    cJSON_AddStringToObject(p, "path", path);
    int rc;
    if (!want) {
        rc = daemon_call_p(s, "buffer.close", p, NULL, &res, &e);
        y->held = false;
    } else {
        cJSON_AddStringToObject(p, "text", doc->text.data ? doc->text.data : "");
        cJSON_AddNumberToObject(p, "version", (double)doc->version);
        rc = daemon_call_p(s, "buffer.update", cJSON_Duplicate(p, true), NULL, &res, &e);
        if (rc == CTX_ENOTFOUND && s->daemon && ctxd_client_rpc_code(s->daemon)) {
            char *repo = repo_for(s, path);
            cJSON *o = cJSON_CreateObject(), *ores = NULL;
            cJSON_AddStringToObject(o, "path", repo ? repo : path);
            free(repo);
            struct ctx_err oe = {0};
            if (daemon_call_p(s, "repo.open", o, NULL, &ores, &oe) == 0) {
                memset(&e, 0, sizeof e);
                rc = daemon_call_p(s, "buffer.update", cJSON_Duplicate(p, true), NULL, &res, &e);
            }
            cJSON_Delete(ores);
        }
        cJSON_Delete(p);
        const cJSON *client = cJSON_GetObjectItemCaseSensitive(res, "client");
        y->held = rc == 0;
        y->gen = s->daemon_gen;
        if (!rc && cJSON_IsNumber(client))
            s->buffer_client = (long long)client->valuedouble;
    }
    /* A file in no repository ctxd can open (a scratch file, a new directory) has nothing to
     * sync: not worth a line. Other failures mean the agent reads the file from disk instead:
     * worth a line in the log, not a popup. */
    if (rc && rc != CTX_ENOTFOUND)
        log_message(s, MSG_LOG, "ctx: %s of %s: %s", want ? "buffer.update" : "buffer.close", path, e.msg);
    cJSON_Delete(res);
    free(path);
}

/* Before an agent request: everything still waiting for its debounce goes now, and buffers held
 * on a connection that has since been replaced are sent again. Returns whether ctxd holds any of
 * ours (the request then names our connection in buffers_from). */
static bool sync_flush(struct server *s)
{
    bool any = false;
    for (struct sync *y = s->syncs; y; y = y->next) {
        if (y->due || (y->held && y->gen != s->daemon_gen))
            sync_send(s, y);
        any |= y->held && y->gen == s->daemon_gen;
    }
    return any;
}

/* After a document notification was applied (or refused). */
static void sync_note(struct server *s, const char *method, const char *uri)
{
    if (!s->set.sync_buffers || strncmp(uri, "file:", 5) != 0)
        return;
    bool open = strcmp(method, "textDocument/didOpen") == 0;
    struct sync *y = find_sync(s, uri, open);
    if (!y)
        return;
    if (open) {
        /* an editor may open a buffer that differs from the disk already (restored sessions) */
        const struct lsp_doc *doc = lsp_docs_find(&s->docs, uri);
        struct ctx_err e = {0};
        char *path = uri_path(uri, &e), *disk = NULL;
        size_t dlen = 0;
        bool same = doc && path && ctx_read_file(path, 64u << 20, &disk, &dlen, &e) == 0 && dlen == doc->text.len &&
                    (!dlen || memcmp(disk, doc->text.data, dlen) == 0);
        free(path);
        free(disk);
        y->differs = doc && !same;
        y->due = y->differs ? now_ms() + s->set.buffer_debounce_ms : 0;
        if (!y->differs && y->held)
            sync_send(s, y);
    } else if (strcmp(method, "textDocument/didChange") == 0) {
        y->due = now_ms() + s->set.buffer_debounce_ms; /* a later change pushes it back */
    } else {
        /* didSave: the disk is current again; didClose: the editor let go of the buffer */
        y->differs = false;
        sync_send(s, y);
        if (strcmp(method, "textDocument/didClose") == 0)
            free_sync(s, y);
    }
}

static bool read_pos(const cJSON *o, struct lsp_pos *p)
{
    const cJSON *l = cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, "line") : NULL;
    const cJSON *c = cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, "character") : NULL;
    if (!cJSON_IsNumber(l) || !cJSON_IsNumber(c) || l->valuedouble < 0 || c->valuedouble < 0 ||
        l->valuedouble > 4294967295.0 || c->valuedouble > 4294967295.0)
        return false;
    p->line = (uint32_t)l->valuedouble;
    p->character = (uint32_t)c->valuedouble;
    return true;
}

static bool read_range(const cJSON *r, struct lsp_pos *a, struct lsp_pos *b)
{
    return cJSON_IsObject(r) && read_pos(cJSON_GetObjectItemCaseSensitive(r, "start"), a) &&
           read_pos(cJSON_GetObjectItemCaseSensitive(r, "end"), b);
}

struct buf2 {
    char *p;
    size_t n, cap;
    bool oom;
};

static void bprintf(struct buf2 *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void bprintf(struct buf2 *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || b->oom)
        return;
    if (b->n + (size_t)n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->n + (size_t)n + 1)
            cap *= 2;
        char *g = realloc(b->p, cap);
        if (!g) {
            b->oom = true;
            return;
        }
        b->p = g;
        b->cap = cap;
    }
    va_start(ap, fmt);
    vsnprintf(b->p + b->n, b->cap - b->n, fmt, ap);
    va_end(ap);
    b->n += (size_t)n;
}

/* The code a command is about: {uri, range, diagnostics?, instruction?} -> the prompt for the agent. */
static int code_prompt(struct server *s, const char *cmd, const cJSON *arg, char **prompt, char **path,
                       struct ctx_err *e)
{
    const char *uri = jstr(arg, "uri");
    struct lsp_pos a, b;
    if (!uri)
        return ctx_err_set(e, CTX_EINVAL, "%s: arguments[0].uri (a string) is required", cmd);
    if (!read_range(cJSON_GetObjectItemCaseSensitive(arg, "range"), &a, &b))
        return ctx_err_set(e, CTX_EINVAL, "%s: arguments[0].range must be an LSP range", cmd);
    if (!(*path = uri_path(uri, e)))
        return e->code;
    const struct lsp_doc *d = lsp_docs_find(&s->docs, uri);
    char *disk = NULL;
    const char *text = d && d->text.data ? d->text.data : "";
    size_t len = d ? d->text.len : 0;
    if (!d) {
        if (ctx_read_file(*path, (size_t)16 << 20, &disk, &len, e))
            return e->code;
        text = disk;
    }
    size_t oa = lsp_text_offset(text, len, a, s->docs.enc), ob = lsp_text_offset(text, len, b, s->docs.enc);
    if (ob < oa) {
        size_t t = oa;
        oa = ob;
        ob = t;
    }
    if (oa == ob) { /* no selection: the whole line */
        oa = lsp_text_offset(text, len, (struct lsp_pos){a.line, 0}, s->docs.enc);
        ob = lsp_text_offset(text, len, (struct lsp_pos){a.line + 1, 0}, s->docs.enc);
    }
    unsigned l1 = lsp_text_position(text, len, oa, s->docs.enc).line + 1;
    unsigned l2 = lsp_text_position(text, len, ob > oa ? ob - 1 : ob, s->docs.enc).line + 1;
    const char *rel = rel_to_root(s, *path);
    struct buf2 p = {0};
    if (strcmp(cmd, "ctx.explain") == 0)
        bprintf(&p, "Explain what this code in %s (lines %u-%u) does and why.", rel, l1, l2);
    else if (strcmp(cmd, "ctx.fix") == 0)
        bprintf(&p, "Fix the problem in %s (lines %u-%u). Change only what the fix needs.", rel, l1, l2);
    else if (strcmp(cmd, "ctx.refactor") == 0) {
        const char *ins = jstr(arg, "instruction");
        bprintf(&p, "Refactor %s (lines %u-%u): %s", rel, l1, l2,
                ins && ins[0] ? ins : "make it simpler and clearer without changing its behaviour.");
    } else if (strcmp(cmd, "ctx.writeTests") == 0)
        bprintf(&p, "Write tests for the code in %s (lines %u-%u), in the repository's existing test framework and "
                    "layout.", rel, l1, l2);
    else {
        const char *q = jstr(arg, "question");
        bprintf(&p, "%s\n\nAbout %s (lines %u-%u).", q ? q : "", rel, l1, l2);
    }
    const cJSON *diags = cJSON_GetObjectItemCaseSensitive(arg, "diagnostics"), *it;
    if (cJSON_GetArraySize(diags) > 0) {
        bprintf(&p, "\n\nDiagnostics reported there:");
        cJSON_ArrayForEach(it, diags)
        {
            const char *m = cJSON_IsString(it) ? it->valuestring : jstr(it, "message");
            if (m)
                bprintf(&p, "\n- %s", m);
        }
    }
    bprintf(&p, "\n\n```\n%.*s%s```\n", (int)(ob - oa), text + oa, ob > oa && text[ob - 1] == '\n' ? "" : "\n");
    free(disk);
    if (p.oom) {
        free(p.p);
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    }
    *prompt = p.p;
    return 0;
}

/* workspace/executeCommand for the agent's commands: agent.run on a connection of its own. */
static void cmd_agent(struct server *s, const cJSON *id, const char *cmd, const cJSON *params)
{
    const cJSON *args = cJSON_GetObjectItemCaseSensitive(params, "arguments");
    const cJSON *arg = cJSON_IsArray(args) ? cJSON_GetArrayItem(args, 0) : NULL;
    struct ctx_err e = {0};
    char *prompt = NULL, *path = NULL;
    const char *mode = "suggest";
    int rc = 0;
    if (strcmp(cmd, "ctx.ask") == 0) {
        mode = "ask";
        const char *q = cJSON_IsString(arg) ? arg->valuestring : jstr(arg, "question");
        if (!q || !q[0])
            rc = ctx_err_set(&e, CTX_EINVAL, "ctx.ask: arguments[0] must be the question or {\"question\": ...}");
        else if (jstr(arg, "uri"))
            rc = code_prompt(s, cmd, arg, &prompt, &path, &e);
        else if (!(prompt = strdup(q)))
            rc = ctx_err_set(&e, CTX_ENOMEM, "out of memory");
    } else if (strcmp(cmd, "ctx.review") == 0) {
        mode = "review";
        const char *uri = cJSON_IsString(arg) ? arg->valuestring : jstr(arg, "uri");
        if (!uri)
            rc = ctx_err_set(&e, CTX_EINVAL, "ctx.review: arguments[0] must be the document's uri or {\"uri\": ...}");
        else if (!(path = uri_path(uri, &e)))
            rc = e.code;
    } else {
        if (strcmp(cmd, "ctx.explain") == 0)
            mode = "ask";
        if (!cJSON_IsObject(arg))
            rc = ctx_err_set(&e, CTX_EINVAL, "%s: arguments[0] must be {\"uri\", \"range\"}", cmd);
        else
            rc = code_prompt(s, cmd, arg, &prompt, &path, &e);
    }
    char *repo = rc ? NULL : path ? repo_for(s, path) : s->root ? strdup(s->root) : NULL;
    if (!rc && !repo)
        rc = ctx_err_set(&e, CTX_ENOTFOUND, "%s: no workspace folder to ask about (open a file of a repository)", cmd);
    if (rc) {
        free(prompt);
        free(path);
        if (id)
            respond_error(s, id, rc == CTX_EINVAL ? CTXD_RPC_INVALID_PARAMS : LSP_REQUEST_FAILED, "%s", e.msg);
        else /* a review after a save: nobody asked, so the log says it */
            log_message(s, MSG_WARNING, "ctx: %s", e.msg);
        return;
    }
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "path", repo);
    cJSON_AddStringToObject(p, "mode", mode);
    if (strcmp(mode, "review") == 0) { /* the file as the repository names it */
        cJSON *files = cJSON_AddArrayToObject(p, "files");
        cJSON_AddItemToArray(files, cJSON_CreateString(rel_to_root(s, path)));
    } else {
        cJSON_AddStringToObject(p, "prompt", prompt);
    }
    free(repo);
    free(prompt);
    /* the agent's requests run on connections of their own: they name the kept connection, which
     * holds the editor's unsaved buffers, so the tools read those instead of the disk */
    if (s->set.sync_buffers && sync_flush(s) && s->buffer_client > 0)
        cJSON_AddNumberToObject(p, "buffers_from", (double)s->buffer_client);
    struct job *j = start_job(s, strcmp(mode, "review") == 0 ? JOB_REVIEW : JOB_AGENT, id, "agent.run", p, false);
    if (j) {
        j->command = strdup(cmd);
        if (path) {
            j->uri = lsp_path_to_uri(path);
            const cJSON *u = cJSON_IsObject(arg) ? cJSON_GetObjectItemCaseSensitive(arg, "uri") : arg;
            if (cJSON_IsString(u)) { /* the editor's spelling of the URI, for publishDiagnostics */
                free(j->uri);
                j->uri = strdup(u->valuestring);
            }
        }
        job_progress_start(s, j, s->client_progress ? work_token(params) : NULL, cmd);
        if (!j->command || (path && !j->uri))
            cancel_job(s, j, LSP_REQUEST_FAILED, "out of memory");
    }
    free(path);
}

static const char *const action_titles[][3] = {
    {"ctx: Explain", "ctx.explain", NULL},
    {"ctx: Fix", "ctx.fix", "quickfix"},
    {"ctx: Refactor…", "ctx.refactor", "refactor.rewrite"},
    {"ctx: Write tests", "ctx.writeTests", "source"},
};

static bool kind_wanted(const cJSON *only, const char *kind)
{
    if (!cJSON_IsArray(only))
        return true;
    const cJSON *it;
    cJSON_ArrayForEach(it, only)
    {
        if (!cJSON_IsString(it) || !kind)
            continue;
        size_t n = strlen(it->valuestring);
        if (strncmp(kind, it->valuestring, n) == 0 && (kind[n] == 0 || kind[n] == '.'))
            return true;
    }
    return false;
}

static void code_action(struct server *s, const cJSON *id, const cJSON *params)
{
    const cJSON *td = cJSON_IsObject(params) ? cJSON_GetObjectItemCaseSensitive(params, "textDocument") : NULL;
    const char *uri = jstr(td, "uri");
    const cJSON *range = cJSON_IsObject(params) ? cJSON_GetObjectItemCaseSensitive(params, "range") : NULL;
    struct lsp_pos a, b;
    if (!uri || !read_range(range, &a, &b)) {
        respond_error(s, id, CTXD_RPC_INVALID_PARAMS, "textDocument/codeAction: textDocument.uri and range are required");
        return;
    }
    const cJSON *ctx = cJSON_GetObjectItemCaseSensitive(params, "context");
    const cJSON *diags = cJSON_IsObject(ctx) ? cJSON_GetObjectItemCaseSensitive(ctx, "diagnostics") : NULL;
    const cJSON *only = cJSON_IsObject(ctx) ? cJSON_GetObjectItemCaseSensitive(ctx, "only") : NULL;
    cJSON *list = cJSON_CreateArray();
    if (strncmp(uri, "file://", 7) == 0) { /* the agent works on files */
        for (size_t i = 0; i < sizeof action_titles / sizeof action_titles[0]; i++) {
            if (!kind_wanted(only, action_titles[i][2]))
                continue;
            cJSON *ca = cJSON_CreateObject();
            cJSON_AddStringToObject(ca, "title", action_titles[i][0]);
            if (action_titles[i][2])
                cJSON_AddStringToObject(ca, "kind", action_titles[i][2]);
            if (cJSON_GetArraySize(diags) > 0 && i == 1)
                cJSON_AddItemToObject(ca, "diagnostics", cJSON_Duplicate(diags, true));
            cJSON *cmd = cJSON_AddObjectToObject(ca, "command");
            cJSON_AddStringToObject(cmd, "title", action_titles[i][0]);
            cJSON_AddStringToObject(cmd, "command", action_titles[i][1]);
            cJSON *args = cJSON_AddArrayToObject(cmd, "arguments");
            cJSON *arg = cJSON_CreateObject();
            cJSON_AddStringToObject(arg, "uri", uri);
            cJSON_AddItemToObject(arg, "range", cJSON_Duplicate(range, true));
            cJSON *msgs = cJSON_AddArrayToObject(arg, "diagnostics");
            const cJSON *d;
            cJSON_ArrayForEach(d, diags)
            {
                const char *m = jstr(d, "message");
                if (m)
                    cJSON_AddItemToArray(msgs, cJSON_CreateString(m));
            }
            cJSON_AddItemToArray(args, arg);
            cJSON_AddItemToArray(list, ca);
        }
    }
    respond(s, id, list);
}

static cJSON *empty_items(void)
{
    cJSON *r = cJSON_CreateObject();
    cJSON_AddArrayToObject(r, "items");
    return r;
}

/* textDocument/inlineCompletion (LSP 3.18): fim.complete on the buffer around the cursor. */
static void inline_completion(struct server *s, const cJSON *id, const cJSON *params)
{
    const cJSON *td = cJSON_IsObject(params) ? cJSON_GetObjectItemCaseSensitive(params, "textDocument") : NULL;
    const char *uri = jstr(td, "uri");
    struct lsp_pos pos;
    if (!uri || !read_pos(cJSON_GetObjectItemCaseSensitive(params, "position"), &pos)) {
        respond_error(s, id, CTXD_RPC_INVALID_PARAMS,
                      "textDocument/inlineCompletion: textDocument.uri and position are required");
        return;
    }
    /* one completion at a time: the newest request is the one the user waits for */
    for (struct job *j = s->jobs, *nx; j; j = nx) {
        nx = j->next;
        if (j->kind == JOB_FIM)
            cancel_job(s, j, LSP_SERVER_CANCELLED, "superseded by a newer inline completion request");
    }
    const struct lsp_doc *d = lsp_docs_find(&s->docs, uri);
    if (!d || d->desync) {
        respond(s, id, empty_items()); /* we do not have the buffer's text */
        return;
    }
    const char *text = d->text.data ? d->text.data : "";
    size_t off = lsp_text_offset(text, d->text.len, pos, s->docs.enc);
    struct ctx_err e = {0};
    char *path = uri_path(uri, &e);
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "file", path ? rel_to_root(s, path) : uri);
    if (s->root)
        cJSON_AddStringToObject(p, "path", s->root);
    char *prefix = strndup(text, off);
    cJSON_AddStringToObject(p, "prefix", prefix ? prefix : "");
    cJSON_AddStringToObject(p, "suffix", text + off);
    cJSON_AddNumberToObject(p, "max_tokens", s->set.fim_max_tokens);
    cJSON_AddNumberToObject(p, "budget", s->set.fim_budget);
    free(prefix);
    free(path);
    struct job *j = start_job(s, JOB_FIM, id, "fim.complete", p, true);
    if (!j)
        return;
    j->uri = strdup(uri);
    j->version = d->version;
    j->pos = lsp_text_position(text, d->text.len, off, s->docs.enc);
    j->deadline = now_ms() + s->set.fim_timeout_ms;
    if (!j->uri)
        cancel_job(s, j, LSP_REQUEST_FAILED, "out of memory");
}

/* Typing makes a pending completion of that document stale. */
static void cancel_fim_for(struct server *s, const char *uri)
{
    for (struct job *j = s->jobs, *nx; j; j = nx) {
        nx = j->next;
        if (j->kind == JOB_FIM && j->uri && strcmp(j->uri, uri) == 0)
            cancel_job(s, j, -32801, "the document changed");
    }
}

static void schedule_review(struct server *s, const char *uri)
{
    struct ctx_err e = {0};
    char *path = uri_path(uri, &e);
    bool inside = path && s->root && rel_to_root(s, path) != path;
    free(path);
    if (!inside)
        return; /* a review needs the repository the file is in */
    struct review_due *r;
    for (r = s->due; r; r = r->next)
        if (strcmp(r->uri, uri) == 0)
            break;
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r || !(r->uri = strdup(uri))) {
            free(r);
            return;
        }
        r->next = s->due;
        s->due = r;
    }
    r->due = now_ms() + s->set.review_debounce_ms; /* debounce: a later save pushes it back */
}

static void start_review(struct server *s, const char *uri)
{
    for (struct job *j = s->jobs, *nx; j; j = nx) { /* an older review of the same file is stale */
        nx = j->next;
        if (j->kind == JOB_REVIEW && !j->lsp_id && j->uri && strcmp(j->uri, uri) == 0)
            free_job(s, j, "superseded");
    }
    cJSON *params = cJSON_CreateObject(), *args = cJSON_AddArrayToObject(params, "arguments");
    cJSON_AddItemToArray(args, cJSON_CreateString(uri));
    cmd_agent(s, NULL, "ctx.review", params);
    cJSON_Delete(params);
}

/* Timers: completions past their latency budget answer empty; reviews whose debounce is over start. */
static long long run_timers(struct server *s)
{
    long long now = now_ms(), next = -1;
    for (struct job *j = s->jobs, *nx; j; j = nx) {
        nx = j->next;
        if (!j->deadline)
            continue;
        if (j->deadline <= now) {
            log_message(s, MSG_LOG, "ctx: inline completion gave up after %d ms", s->set.fim_timeout_ms);
            respond(s, j->lsp_id, empty_items());
            cJSON_Delete(j->lsp_id);
            j->lsp_id = NULL;
            free_job(s, j, "timed out");
        } else if (next < 0 || j->deadline < next) {
            next = j->deadline;
        }
    }
    for (struct sync *y = s->syncs; y; y = y->next) {
        if (!y->due)
            continue;
        if (y->due <= now_ms())
            sync_send(s, y);
        else if (next < 0 || y->due < next)
            next = y->due;
    }
    now = now_ms(); /* sending took a moment */
    for (struct review_due **pp = &s->due; *pp;) {
        struct review_due *r = *pp;
        if (r->due <= now) {
            *pp = r->next;
            start_review(s, r->uri);
            free(r->uri);
            free(r);
        } else {
            if (next < 0 || r->due < next)
                next = r->due;
            pp = &r->next;
        }
    }
    return next < 0 ? -1 : next - now;
}

/* Make the workspace's repository resident at start, with $/progress, so the first question does
 * not wait for ingestion. */
static void open_repository(struct server *s)
{
    if (!s->root || !s->set.open_repository)
        return;
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "path", s->root);
    cJSON_AddBoolToObject(p, "wait", true);
    struct job *j = start_job(s, JOB_OPEN, NULL, "repo.open", p, true);
    if (j)
        job_progress_start(s, j, NULL, "ctx: making the repository resident");
}

/* ---- requests ---- */

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
    /* the unsaved buffers ctxd holds for us, and the connection that holds them (buffers_from) */
    size_t held = 0;
    for (const struct sync *y = s->syncs; y; y = y->next)
        held += y->held && y->gen == s->daemon_gen;
    cJSON *b = cJSON_AddObjectToObject(l, "buffers");
    cJSON_AddNumberToObject(b, "held", (double)held);
    cJSON_AddNumberToObject(b, "client", (double)s->buffer_client);
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
    for (size_t i = 1; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(cmd, commands[i]) == 0) {
            cmd_agent(s, id, cmd, params);
            return;
        }
    respond_error(s, id, CTXD_RPC_INVALID_PARAMS,
                  "unknown command \"%s\" (this server has: ctx.status, ctx.ask, ctx.explain, ctx.fix, ctx.refactor, "
                  "ctx.writeTests, ctx.review)", cmd);
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

static int opt_int(const cJSON *o, const char *k, int def, int lo, int hi)
{
    const cJSON *v = cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, k) : NULL;
    return cJSON_IsNumber(v) && v->valuedouble >= lo && v->valuedouble <= hi ? (int)v->valuedouble : def;
}

static bool opt_bool(const cJSON *o, const char *k, bool def)
{
    const cJSON *v = cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, k) : NULL;
    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : def;
}

/* initializationOptions; a value of the wrong type or out of range keeps the default. */
static void read_settings(struct server *s, const cJSON *o)
{
    s->set.review_on_save = opt_bool(o, "reviewOnSave", true);
    s->set.review_debounce_ms = opt_int(o, "reviewDebounceMs", 1500, 0, 600000);
    s->set.open_repository = opt_bool(o, "openRepository", true);
    const cJSON *ic = cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, "inlineCompletion") : NULL;
    s->set.fim_max_tokens = opt_int(ic, "maxTokens", 64, 1, 1024);
    s->set.fim_timeout_ms = opt_int(ic, "timeoutMs", 5000, 50, 600000);
    s->set.fim_budget = opt_int(ic, "budget", 2048, 16, 65536);
    s->set.sync_buffers = opt_bool(o, "syncBuffers", true);
    s->set.buffer_debounce_ms = opt_int(o, "bufferDebounceMs", 150, 0, 60000);
}

/* The workspace folder: the first workspaceFolders entry, else rootUri, else rootPath; only an
 * existing directory counts. */
static void read_root(struct server *s, const cJSON *params)
{
    const cJSON *wf = cJSON_IsObject(params) ? cJSON_GetObjectItemCaseSensitive(params, "workspaceFolders") : NULL;
    const char *uri = cJSON_IsArray(wf) ? jstr(cJSON_GetArrayItem(wf, 0), "uri") : NULL;
    if (!uri)
        uri = jstr(params, "rootUri");
    struct ctx_err e = {0};
    char *p = uri ? uri_path(uri, &e) : NULL;
    if (!p && jstr(params, "rootPath"))
        p = strdup(jstr(params, "rootPath"));
    char real[PATH_MAX];
    if (p && realpath(p, real) && access(real, X_OK) == 0)
        s->root = strdup(real);
    free(p);
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
    read_settings(s, params ? cJSON_GetObjectItemCaseSensitive(params, "initializationOptions") : NULL);
    read_root(s, params);

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
    cJSON *ca = cJSON_AddObjectToObject(c, "codeActionProvider");
    cJSON *kinds = cJSON_AddArrayToObject(ca, "codeActionKinds");
    cJSON_AddItemToArray(kinds, cJSON_CreateString("quickfix"));
    cJSON_AddItemToArray(kinds, cJSON_CreateString("refactor.rewrite"));
    cJSON_AddItemToArray(kinds, cJSON_CreateString("source"));
    cJSON_AddObjectToObject(c, "inlineCompletionProvider");
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
    const cJSON *td = cJSON_IsObject(params) ? cJSON_GetObjectItemCaseSensitive(params, "textDocument") : NULL;
    const char *uri = jstr(td, "uri");
    if (!uri)
        return;
    sync_note(s, method, uri);
    if (strcmp(method, "textDocument/didChange") == 0 || strcmp(method, "textDocument/didClose") == 0)
        cancel_fim_for(s, uri);
    else if (!rc && strcmp(method, "textDocument/didSave") == 0 && s->set.review_on_save)
        schedule_review(s, uri);
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
        handle_response(s, msg); /* to one of our requests, else stray and ignored */
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
        if (strcmp(m, "initialized") == 0) {
            if (!s->initialized)
                open_repository(s);
            s->initialized = true;
        } else if (strcmp(m, "$/cancelRequest") == 0) {
            /* a request still running on ctxd: close its connection (queued ones were marked) */
            const cJSON *cid = cJSON_IsObject(req.params) ? cJSON_GetObjectItemCaseSensitive(req.params, "id") : NULL;
            for (struct job *j = s->jobs; cid && j; j = j->next)
                if (j->lsp_id && same_id(j->lsp_id, cid)) {
                    cancel_job(s, j, LSP_REQUEST_CANCELLED, "cancelled");
                    break;
                }
        }
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
    else if (strcmp(m, "textDocument/codeAction") == 0)
        code_action(s, req.id, req.params);
    else if (strcmp(m, "textDocument/inlineCompletion") == 0)
        inline_completion(s, req.id, req.params);
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
    long long last_parent_check = now_ms();
    while (!s.exit_seen && !s.out_broken) {
        /* the editor's input, then one connection per call in flight to ctxd */
        size_t nj = 0;
        for (struct job *jb = s.jobs; jb; jb = jb->next)
            nj++;
        struct pollfd stack_fds[33], *fds = nj < 32 ? stack_fds : malloc((nj + 1) * sizeof *fds);
        unsigned long long *seqs = nj ? malloc(nj * sizeof *seqs) : NULL;
        if (!fds || (nj && !seqs)) {
            if (fds != stack_fds)
                free(fds);
            free(seqs);
            fprintf(stderr, "ctx lsp: out of memory\n");
            break;
        }
        fds[0] = (struct pollfd){.fd = in_fd, .events = POLLIN};
        size_t k = 0;
        for (struct job *jb = s.jobs; jb; jb = jb->next, k++) {
            fds[k + 1] = (struct pollfd){.fd = jb->fd, .events = POLLIN};
            seqs[k] = jb->seq;
        }
        long long wait = run_timers(&s);
        /* Wake now and then to notice an editor that died without closing our input. */
        if (s.parent_pid > 0 && (wait < 0 || wait > 3000))
            wait = 3000;
        int pr = poll(fds, nj + 1, wait < 0 ? -1 : (int)wait);
        if (pr < 0 && errno != EINTR) {
            fprintf(stderr, "ctx lsp: poll: %s\n", strerror(errno));
            if (fds != stack_fds)
                free(fds);
            free(seqs);
            break;
        }
        if (s.parent_pid > 0 && now_ms() - last_parent_check >= 3000) {
            last_parent_check = now_ms();
            if (parent_gone(&s)) {
                fprintf(stderr, "ctx lsp: the editor (pid %lld) is gone; exiting\n", s.parent_pid);
                if (fds != stack_fds)
                    free(fds);
                free(seqs);
                break;
            }
        }
        short in_ev = pr > 0 ? fds[0].revents : 0;
        /* ctxd's answers first (a job may be gone by the time its turn comes) */
        for (size_t q = 0; pr > 0 && q < nj; q++) {
            if (!fds[q + 1].revents)
                continue;
            struct job *jb = find_job(&s, seqs[q]);
            if (jb)
                job_readable(&s, jb);
        }
        if (fds != stack_fds)
            free(fds);
        free(seqs);
        if (!in_ev)
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
    while (s.jobs) { /* closing their connections cancels them on ctxd; nothing more is said */
        s.jobs->prog = 0;
        free_job(&s, s.jobs, NULL);
    }
    while (s.outreqs) {
        struct outreq *o = s.outreqs;
        s.outreqs = o->next;
        free(o);
    }
    while (s.due) {
        struct review_due *r = s.due;
        s.due = r->next;
        free(r->uri);
        free(r);
    }
    while (s.syncs) /* the kept connection closes below: ctxd drops its buffers */
        free_sync(&s, s.syncs);
    free(s.root);
    if (s.daemon)
        ctxd_client_close(s.daemon);
    return status;
}
