/* daemon.*: liveness, status and shutdown. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "ctx_config.h"
#include "ctxd.h"
#include "repos.h"
#include "rpc.h"


static void m_ping(struct ctxd_call *call, const cJSON *params, void *ud)
{
    (void)ud;
    static const char *const allowed[] = {"echo", NULL};
    if (ctxd_call_check_params(call, params, allowed))
        return;
    cJSON *r = cJSON_CreateObject();
    cJSON_AddBoolToObject(r, "pong", 1);
    cJSON_AddNumberToObject(r, "protocol", CTXD_PROTOCOL_VERSION);
    const cJSON *echo = params ? cJSON_GetObjectItemCaseSensitive(params, "echo") : NULL;
    if (echo)
        cJSON_AddItemToObject(r, "echo", cJSON_Duplicate(echo, 1));
    ctxd_call_reply(call, r);
}

static void m_status(struct ctxd_call *call, const cJSON *params, void *ud)
{
    struct ctxd *d = ud;
    if (ctxd_call_check_params(call, params, NULL))
        return;
    struct ctxd_server_stats st;
    ctxd_server_stats(d->server, &st);
    char started[32];
    struct tm tm;
    gmtime_r(&d->started, &tm);
    strftime(started, sizeof started, "%Y-%m-%dT%H:%M:%SZ", &tm);
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "version", CTX_VERSION);
    cJSON_AddNumberToObject(r, "protocol", CTXD_PROTOCOL_VERSION);
    cJSON_AddNumberToObject(r, "pid", (double)getpid());
    cJSON_AddStringToObject(r, "socket", ctxd_server_socket(d->server));
    cJSON_AddStringToObject(r, "started", started);
    cJSON_AddNumberToObject(r, "uptime_ms", (double)(uv_now(d->loop) - d->started_ms));
    cJSON_AddNumberToObject(r, "connections", st.connections);
    cJSON_AddNumberToObject(r, "connections_accepted", (double)st.accepted);
    cJSON_AddNumberToObject(r, "requests", (double)st.requests);
    cJSON_AddNumberToObject(r, "errors", (double)st.errors);
    cJSON_AddBoolToObject(r, "cuda_built", HAVE_CUDA);
    ctxd_repos_status(d, r);
    ctxd_call_reply(call, r);
}

static void m_shutdown(struct ctxd_call *call, const cJSON *params, void *ud)
{
    struct ctxd *d = ud;
    static const char *const allowed[] = {"reason", NULL};
    if (ctxd_call_check_params(call, params, allowed))
        return;
    const cJSON *reason = params ? cJSON_GetObjectItemCaseSensitive(params, "reason") : NULL;
    if (reason && !cJSON_IsString(reason)) {
        ctxd_call_fail(call, CTXD_RPC_INVALID_PARAMS, "\"reason\" must be a string", NULL);
        return;
    }
    cJSON *r = cJSON_CreateObject();
    cJSON_AddBoolToObject(r, "ok", 1);
    cJSON_AddNumberToObject(r, "pid", (double)getpid());
    ctxd_call_reply(call, r); /* queued before the shutdown, so it is flushed first */
    ctxd_begin_shutdown(d, reason ? reason->valuestring : "daemon.shutdown request");
}

int ctxd_methods_daemon(struct ctxd *d)
{
    int rc = ctxd_server_register(d->server, "daemon.ping", m_ping, d);
    if (!rc)
        rc = ctxd_server_register(d->server, "daemon.status", m_status, d);
    if (!rc)
        rc = ctxd_server_register(d->server, "daemon.shutdown", m_shutdown, d);
    return rc;
}
