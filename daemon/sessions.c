#include "sessions.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agentd.h"
#include "log.h"
#include "repo.h"
#include "repos.h"
#include "rpc.h"
#include "store.h"
#include "../store/sessions.h"

struct ctxd_sessions {
    struct ctxd *d;
    struct store_db *db;
};

static struct ctxd_sessions *S(struct ctxd *d)
{
    return (struct ctxd_sessions *)d->sessions;
}


static const char *string_param(struct ctxd_call *call, const cJSON *params, const char *name)
{
    const cJSON *v = params ? cJSON_GetObjectItemCaseSensitive(params, name) : NULL;
    if (!cJSON_IsString(v) || !v->valuestring[0]) {
        char msg[128];
        snprintf(msg, sizeof msg, "\"%s\" (a non-empty string) is required", name);
        ctxd_call_fail(call, CTXD_RPC_INVALID_PARAMS, msg, NULL);
        return NULL;
    }
    return v->valuestring;
}

/* Methods that take only {"id"}: the id, or NULL after answering the call with the error. */
static const char *id_param(struct ctxd_call *call, const cJSON *params)
{
    static const char *const allowed[] = {"id", NULL};
    if (ctxd_call_check_params(call, params, allowed))
        return NULL;
    return string_param(call, params, "id");
}

static void m_create(struct ctxd_call *call, const cJSON *params, void *ud)
{
    struct ctxd *d = ud;
    static const char *const allowed[] = {"path", "mode", NULL};
    if (ctxd_call_check_params(call, params, allowed))
        return;
    const char *path = string_param(call, params, "path");
    if (!path)
        return;
    const cJSON *mode = cJSON_GetObjectItemCaseSensitive(params, "mode");
    if (mode && (!cJSON_IsString(mode) || (strcmp(mode->valuestring, "thinking") && strcmp(mode->valuestring, "chat")))) {
        ctxd_call_fail(call, CTXD_RPC_INVALID_PARAMS, "\"mode\" must be \"thinking\" or \"chat\"", NULL);
        return;
    }
    char root[PATH_MAX], id[STORE_SESSION_ID_LEN + 1];
    struct ctx_err e = {0};
    if (repo_work_tree(path, root, sizeof root, &e) ||
        store_session_create(S(d)->db, root, mode ? mode->valuestring : "thinking", id, &e)) {
        ctxd_call_fail_err(call, &e);
        return;
    }
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "id", id);
    cJSON_AddStringToObject(r, "repo_root", root);
    cJSON_AddStringToObject(r, "mode", mode ? mode->valuestring : "thinking");
    ctxd_call_reply(call, r);
}

/* A completed turn of the agent: the user's message, the assistant's (with the exact text the
 * model emitted) and the tools' results, in order. */
static void on_turn(void *ud, const char *session, const cJSON *messages, const cJSON *raws)
{
    struct ctxd *d = ud;
    if (!S(d))
        return;
    struct ctx_err e = {0};
    int i = 0;
    for (const cJSON *m = messages ? messages->child : NULL; m; m = m->next, i++) {
        const cJSON *raw = cJSON_GetArrayItem(raws, i);
        if (store_session_append(S(d)->db, session, m, cJSON_IsString(raw) ? raw->valuestring : NULL, &e)) {
            CTX_ERROR("session %s: storing the turn failed: %s", session, e.msg);
            return;
        }
    }
}

static void m_send(struct ctxd_call *call, const cJSON *params, void *ud)
{
    struct ctxd *d = ud;
    static const char *const allowed[] = {"id", "message", "max_tokens", "temperature", "top_p", "seed",
                                          "top_logprobs", NULL};
    struct ctxd_ask_opts o = {0};
    if (ctxd_call_check_params(call, params, allowed) || ctxd_repos_ask_options(call, params, &o))
        return;
    const char *id = string_param(call, params, "id");
    const char *text = id ? string_param(call, params, "message") : NULL;
    if (!text)
        return;
    struct ctx_err e = {0};
    cJSON *s = NULL;
    if (store_session_get(S(d)->db, id, &s, &e)) {
        ctxd_call_fail_err(call, &e);
        return;
    }
    cJSON *turns = cJSON_DetachItemFromObjectCaseSensitive(s, "messages");
    cJSON *raws = cJSON_DetachItemFromObjectCaseSensitive(s, "raw");
    o.chat_mode = strcmp(cJSON_GetObjectItem(s, "mode")->valuestring, "chat") == 0;
    char root[PATH_MAX];
    snprintf(root, sizeof root, "%s", cJSON_GetObjectItem(s, "repo_root")->valuestring);
    cJSON_Delete(s);
    /* a turn of the agent: tools, exact replay of the earlier turns */
    if (ctxd_agent_session_send(d, call, root, turns, raws, text, &o, id, on_turn, d, &e))
        ctxd_call_fail_err(call, &e);
}

int ctxd_sessions_load(struct ctxd *d, const char *id, cJSON **messages, cJSON **raws, char *root,
                       size_t root_cap, int *chat, struct ctx_err *e)
{
    cJSON *s = NULL;
    if (!S(d))
        return ctx_err_set(e, CTX_EINVAL, "sessions are not available");
    int rc = store_session_get(S(d)->db, id, &s, e);
    if (rc)
        return rc;
    *messages = cJSON_DetachItemFromObjectCaseSensitive(s, "messages");
    *raws = cJSON_DetachItemFromObjectCaseSensitive(s, "raw");
    snprintf(root, root_cap, "%s", cJSON_GetObjectItem(s, "repo_root")->valuestring);
    *chat = strcmp(cJSON_GetObjectItem(s, "mode")->valuestring, "chat") == 0;
    cJSON_Delete(s);
    return 0;
}

void ctxd_sessions_store_turn(void *ud, const char *session, const cJSON *messages, const cJSON *raws)
{
    on_turn(ud, session, messages, raws);
}

static void m_list(struct ctxd_call *call, const cJSON *params, void *ud)
{
    struct ctxd *d = ud;
    static const char *const allowed[] = {"path", NULL};
    if (ctxd_call_check_params(call, params, allowed))
        return;
    const cJSON *p = params ? cJSON_GetObjectItemCaseSensitive(params, "path") : NULL;
    char root[PATH_MAX];
    struct ctx_err e = {0};
    if (p && (!cJSON_IsString(p) || repo_work_tree(p->valuestring, root, sizeof root, &e))) {
        if (!e.code)
            ctx_err_set(&e, CTX_EINVAL, "\"path\" must be a string");
        ctxd_call_fail_err(call, &e);
        return;
    }
    cJSON *l = NULL;
    if (store_session_list(S(d)->db, p ? root : NULL, &l, &e)) {
        ctxd_call_fail_err(call, &e);
        return;
    }
    cJSON *r = cJSON_CreateObject();
    cJSON_AddItemToObject(r, "sessions", l);
    ctxd_call_reply(call, r);
}

static void m_get(struct ctxd_call *call, const cJSON *params, void *ud)
{
    struct ctxd *d = ud;
    const char *id = id_param(call, params);
    if (!id)
        return;
    cJSON *s = NULL;
    struct ctx_err e = {0};
    if (store_session_get(S(d)->db, id, &s, &e))
        ctxd_call_fail_err(call, &e);
    else
        ctxd_call_reply(call, s);
}

/* session.resume: the session with its messages, its repository made resident in the background
 * so that the next send does not wait for ingestion. */
static void m_resume(struct ctxd_call *call, const cJSON *params, void *ud)
{
    struct ctxd *d = ud;
    const char *id = id_param(call, params);
    if (!id)
        return;
    cJSON *s = NULL;
    struct ctx_err e = {0};
    if (store_session_get(S(d)->db, id, &s, &e) ||
        ctxd_repos_open(d, cJSON_GetObjectItem(s, "repo_root")->valuestring, &e)) {
        cJSON_Delete(s);
        ctxd_call_fail_err(call, &e);
        return;
    }
    ctxd_call_reply(call, s);
}

static void m_delete(struct ctxd_call *call, const cJSON *params, void *ud)
{
    struct ctxd *d = ud;
    const char *id = id_param(call, params);
    if (!id)
        return;
    struct ctx_err e = {0};
    ctxd_repos_cancel_session(d, id);
    if (store_session_delete(S(d)->db, id, &e)) {
        ctxd_call_fail_err(call, &e);
        return;
    }
    cJSON *r = cJSON_CreateObject();
    cJSON_AddBoolToObject(r, "deleted", 1);
    ctxd_call_reply(call, r);
}

static void m_cancel(struct ctxd_call *call, const cJSON *params, void *ud)
{
    struct ctxd *d = ud;
    const char *id = id_param(call, params);
    if (!id)
        return;
    cJSON *r = cJSON_CreateObject();
    cJSON_AddNumberToObject(r, "cancelled", ctxd_repos_cancel_session(d, id));
    ctxd_call_reply(call, r);
}

int ctxd_sessions_init(struct ctxd *d, const char *state_dir, struct ctx_err *e)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s", state_dir);
    for (char *p = path + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            mkdir(path, 0700);
            *p = '/';
        }
    if (mkdir(path, 0700) != 0 && errno != EEXIST)
        return ctx_err_errno(e, CTX_EIO, errno, "creating state directory %s", state_dir);
    struct ctxd_sessions *s = calloc(1, sizeof *s);
    if (!s)
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    snprintf(path, sizeof path, "%s/ctxd.db", state_dir);
    int rc = store_open(path, &s->db, e);
    if (rc) {
        free(s);
        return rc;
    }
    s->d = d;
    d->sessions = s;
    static const struct {
        const char *name;
        ctxd_method_fn fn;
    } methods[] = {{"session.create", m_create}, {"session.send", m_send}, {"session.list", m_list},
                   {"session.get", m_get},       {"session.resume", m_resume},       {"session.delete", m_delete}, {"session.cancel", m_cancel}};
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
        if ((rc = ctxd_server_register(d->server, methods[i].name, methods[i].fn, d)))
            return ctx_err_set(e, rc, "registering %s", methods[i].name);
    return 0;
}

void ctxd_sessions_free(struct ctxd *d)
{
    struct ctxd_sessions *s = S(d);
    if (!s)
        return;
    store_close(s->db);
    free(s);
    d->sessions = NULL;
}
