/* JSON-RPC 2.0 over newline-delimited JSON: the framing and message rules shared by ctxd and its
 * clients. Pure functions over bytes and cJSON values, so they are unit-tested and fuzzed apart
 * from any socket. */
#ifndef CTXD_RPC_H
#define CTXD_RPC_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>

#include "err.h"

#define CTXD_PROTOCOL_VERSION 1
#define CTXD_MAX_LINE_DEFAULT ((size_t)16 << 20)

/* JSON-RPC 2.0 error codes, plus ctxd's own in the implementation-defined range. */
enum ctxd_rpc_code {
    CTXD_RPC_PARSE_ERROR = -32700,
    CTXD_RPC_INVALID_REQUEST = -32600,
    CTXD_RPC_METHOD_NOT_FOUND = -32601,
    CTXD_RPC_INVALID_PARAMS = -32602,
    CTXD_RPC_INTERNAL_ERROR = -32603,
    CTXD_RPC_LINE_TOO_LONG = -32001,  /* the line exceeded the limit and was discarded */
    CTXD_RPC_BUSY = -32002,           /* a bounded queue is full; retry later */
    CTXD_RPC_CANCELLED = -32003,
    CTXD_RPC_SHUTTING_DOWN = -32004,
    CTXD_RPC_FAILED = -32010,         /* the method ran and failed; data.code names the CTX_E* code */
};

/* Splits a byte stream into lines. A line longer than `max` is reported once through on_overlong
 * and its bytes are dropped up to the next newline, so the connection stays usable. */
struct ctxd_linebuf {
    char *buf;
    size_t len, cap, max;
    bool discarding;
};

void ctxd_linebuf_init(struct ctxd_linebuf *lb, size_t max_line);
void ctxd_linebuf_free(struct ctxd_linebuf *lb);
/* on_line gets each complete line without its '\n' (and without a trailing '\r'), NUL-terminated
 * and writable; returns non-zero to stop feeding (the rest stays buffered). Returns CTX_ENOMEM or 0. */
int ctxd_linebuf_feed(struct ctxd_linebuf *lb, const char *data, size_t n,
                      int (*on_line)(void *ud, char *line, size_t len),
                      void (*on_overlong)(void *ud), void *ud);

/* A parsed request. `id` is NULL for a notification (no reply is sent). Pointers borrow from the
 * message passed to ctxd_rpc_check. */
struct ctxd_rpc_req {
    const cJSON *id;
    const char *method;
    const cJSON *params; /* object, array or NULL */
};

/* Check one request object against JSON-RPC 2.0. On failure returns a JSON-RPC code (< 0) and writes
 * a message naming the field to msg; `req->id` is set when the id itself was readable. */
int ctxd_rpc_check(const cJSON *msg, struct ctxd_rpc_req *req, char *errmsg, size_t cap);

/* Builders: each returns a new object (caller frees); `id` is copied (NULL → JSON null). */
cJSON *ctxd_rpc_result(const cJSON *id, cJSON *result /* taken */);
cJSON *ctxd_rpc_error(const cJSON *id, int code, const char *message, cJSON *data /* taken, may be NULL */);
cJSON *ctxd_rpc_notification(const char *method, cJSON *params /* taken */);
cJSON *ctxd_rpc_request(long long id, const char *method, cJSON *params /* taken, may be NULL */);

/* Serialise a message as one line ending in '\n' (malloc'd). */
char *ctxd_rpc_line(const cJSON *msg, size_t *len);

#endif
