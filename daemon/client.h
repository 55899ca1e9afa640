/* The client side of ctxd's protocol, for ctx, ctx lsp and tests: plain blocking POSIX sockets,
 * no libuv, so it builds wherever the engine builds. */
#ifndef CTXD_CLIENT_H
#define CTXD_CLIENT_H

#include <cjson/cJSON.h>
#include <stddef.h>

#include "err.h"

struct ctxd_client;

/* The default socket: $CTXD_SOCKET, else $XDG_RUNTIME_DIR/ctxd/ctxd.sock, else
 * /tmp/ctxd-$UID/ctxd.sock. */
int ctxd_default_socket(char *buf, size_t cap, struct ctx_err *e);

/* Connect; CTX_ENOTFOUND when no daemon listens there (no socket, or a stale one). */
int ctxd_client_connect(const char *socket_path, struct ctxd_client **out, struct ctx_err *e);

/* Start `ctxd --daemon --socket PATH` and wait until it is ready (or says why it is not). */
int ctxd_client_spawn(const char *ctxd_path, const char *socket_path, const char *const *extra_args,
                      struct ctx_err *e);

/* Connect, starting ctxd first if none is running (with the options in $CTXD_FLAGS, if set). */
int ctxd_client_connect_or_spawn(const char *ctxd_path, const char *socket_path,
                                 struct ctxd_client **out, struct ctx_err *e);

/* Called for each notification that arrives while waiting for a reply. Return non-zero to stop
 * waiting (the call then returns CTX_ECANCELED). */
typedef int (*ctxd_notify_fn)(void *ud, const char *method, const cJSON *params);

/* Send a request and wait for its reply. params is taken (may be NULL). On success *result is the
 * reply's result (caller frees). An error reply fills e with the server's message and returns the
 * matching CTX_E* code (ENOTFOUND for an unknown method, EINVAL for bad params, EBUSY, ECANCELED,
 * else the code the server named, else EPROTO); ctxd_client_rpc_code then gives the JSON-RPC code.
 * timeout_ms <= 0 waits forever. */
int ctxd_client_call(struct ctxd_client *c, const char *method, cJSON *params, ctxd_notify_fn fn,
                     void *ud, int timeout_ms, cJSON **result, struct ctx_err *e);

/* After a call that failed with an error reply: its JSON-RPC code (0 if the failure was local). */
int ctxd_client_rpc_code(const struct ctxd_client *c);

void ctxd_client_close(struct ctxd_client *c);

#endif
