/* ctxd's JSON-RPC server on a Unix socket, on a libuv loop. Methods are registered by name; a
 * handler answers through its struct ctxd_call at once or later (streaming notifications first),
 * so long operations never block the loop. A connection that goes away while calls are pending
 * just drops their replies. */
#ifndef CTXD_SERVER_H
#define CTXD_SERVER_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "err.h"

struct ctxd_server;
struct ctxd_call;

struct ctxd_server_opts {
    const char *socket_path;   /* required */
    size_t max_line;           /* 0: CTXD_MAX_LINE_DEFAULT */
    size_t max_write_queue;    /* bytes queued for one slow client before it is dropped; 0: 64 MiB */
    int max_clients;           /* 0: 256 */
};

/* The handler answers with ctxd_call_reply or ctxd_call_fail exactly once, now or later. */
typedef void (*ctxd_method_fn)(struct ctxd_call *call, const cJSON *params, void *ud);

/* Takes the instance lock (socket_path + ".lock"), replaces a stale socket, binds (mode 0600) and
 * listens. Another live ctxd on the same socket gives CTX_EBUSY naming its pid. */
int ctxd_server_new(uv_loop_t *loop, const struct ctxd_server_opts *opts, struct ctxd_server **out,
                    struct ctx_err *e);
int ctxd_server_register(struct ctxd_server *s, const char *method, ctxd_method_fn fn, void *ud);
/* Stop accepting, flush what is queued to every client, close them; the loop then runs dry. */
void ctxd_server_shutdown(struct ctxd_server *s);
/* After the loop has stopped: removes the socket and lock file, frees everything. */
void ctxd_server_free(struct ctxd_server *s);

struct ctxd_server_stats {
    unsigned long long requests;   /* requests answered (notifications excluded) */
    unsigned long long errors;     /* error replies among them */
    int connections;               /* open now */
    unsigned long long accepted;   /* connections accepted since start */
};
void ctxd_server_stats(const struct ctxd_server *s, struct ctxd_server_stats *st);
const char *ctxd_server_socket(const struct ctxd_server *s);

/* Replying. Each takes ownership of the cJSON values passed. */
void ctxd_call_reply(struct ctxd_call *call, cJSON *result);
void ctxd_call_fail(struct ctxd_call *call, int rpc_code, const char *message, cJSON *data);
/* A failure from a struct ctx_err: CTXD_RPC_FAILED (or INVALID_PARAMS for CTX_EINVAL) with
 * data {"code": "EINVAL", ...}. */
void ctxd_call_fail_err(struct ctxd_call *call, const struct ctx_err *e);
/* A notification tied to this call (params get "id": the call's id). Dropped if the client left. */
void ctxd_call_notify(struct ctxd_call *call, const char *method, cJSON *params);
/* Whether the client is still connected (long jobs can stop early when it is not). */
int ctxd_call_client_alive(const struct ctxd_call *call);
struct ctxd_server *ctxd_call_server(const struct ctxd_call *call);
/* The request's id (NULL for a notification); valid until the call is answered. */
const cJSON *ctxd_call_id(const struct ctxd_call *call);
/* Params must be absent or an object whose members are all in `allowed` (NULL-terminated), so a
 * misspelt field is an error rather than ignored. On failure the call is answered with
 * INVALID_PARAMS naming the field, and -1 is returned. */
int ctxd_call_check_params(struct ctxd_call *call, const cJSON *params, const char *const *allowed);
/* The connection's serial number, unique for the daemon's lifetime (for per-client bookkeeping). */
uint64_t ctxd_call_client_id(const struct ctxd_call *call);
/* fn(ud, client_id) runs on the loop thread when a client's connection closes (to cancel its
 * jobs). One hook per server. */
void ctxd_server_on_disconnect(struct ctxd_server *s, void (*fn)(void *ud, uint64_t client), void *ud);

#endif
