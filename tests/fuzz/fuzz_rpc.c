/* libFuzzer target: ctxd's request path without the socket — line framing (with a small limit so
 * overlong lines are reached), JSON parsing, request checking and reply building. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "json.h"
#include "rpc.h"

static int on_line(void *ud, char *line, size_t len)
{
    (void)ud;
    struct ctx_err e = {0};
    cJSON *msg = ctx_json_parse(line, len, "request", &e);
    cJSON *reply = NULL;
    if (!msg) {
        reply = ctxd_rpc_error(NULL, CTXD_RPC_PARSE_ERROR, e.msg, NULL);
    } else {
        const cJSON *items = cJSON_IsArray(msg) ? msg->child : msg;
        for (const cJSON *it = items; it; it = cJSON_IsArray(msg) ? it->next : NULL) {
            struct ctxd_rpc_req req;
            char err[256];
            int code = ctxd_rpc_check(it, &req, err, sizeof err);
            cJSON *r = code ? ctxd_rpc_error(req.id, code, err, NULL)
                            : ctxd_rpc_result(req.id, cJSON_CreateString(req.method));
            char *s = r ? ctxd_rpc_line(r, NULL) : NULL;
            free(s);
            cJSON_Delete(r);
        }
    }
    char *s = reply ? ctxd_rpc_line(reply, NULL) : NULL;
    free(s);
    cJSON_Delete(reply);
    cJSON_Delete(msg);
    return 0;
}

static void on_overlong(void *ud)
{
    (void)ud;
}

int ctxd_fuzz_rpc_one(const uint8_t *data, size_t size)
{
    struct ctxd_linebuf lb;
    ctxd_linebuf_init(&lb, 4096);
    /* feed in two pieces so that lines straddling reads are covered */
    size_t half = size / 2;
    int rc = ctxd_linebuf_feed(&lb, (const char *)data, half, on_line, on_overlong, NULL);
    if (rc == 0)
        rc = ctxd_linebuf_feed(&lb, (const char *)data + half, size - half, on_line, on_overlong, NULL);
    ctxd_linebuf_free(&lb);
    return rc;
}

#ifdef CTX_FUZZ_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ctxd_fuzz_rpc_one(data, size);
    return 0;
}
#endif
