#include "rpc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ctxd_linebuf_init(struct ctxd_linebuf *lb, size_t max_line)
{
    memset(lb, 0, sizeof *lb);
    lb->max = max_line ? max_line : CTXD_MAX_LINE_DEFAULT;
}

void ctxd_linebuf_free(struct ctxd_linebuf *lb)
{
    free(lb->buf);
    memset(lb, 0, sizeof *lb);
}

static int append(struct ctxd_linebuf *lb, const char *data, size_t n)
{
    if (lb->len + n + 1 > lb->cap) {
        size_t cap = lb->cap ? lb->cap : 4096;
        while (cap < lb->len + n + 1)
            cap *= 2;
        char *nb = realloc(lb->buf, cap);
        if (!nb)
            return CTX_ENOMEM;
        lb->buf = nb;
        lb->cap = cap;
    }
    memcpy(lb->buf + lb->len, data, n);
    lb->len += n;
    return 0;
}

int ctxd_linebuf_feed(struct ctxd_linebuf *lb, const char *data, size_t n,
                      int (*on_line)(void *ud, char *line, size_t len),
                      void (*on_overlong)(void *ud), void *ud)
{
    size_t i = 0;
    while (i < n) {
        const char *nl = memchr(data + i, '\n', n - i);
        size_t chunk = nl ? (size_t)(nl - (data + i)) : n - i;
        if (lb->discarding) {
            if (nl)
                lb->discarding = false;
            i += chunk + (nl ? 1 : 0);
            continue;
        }
        if (lb->len + chunk > lb->max) {
            /* Over the limit: drop what we hold and the rest of this line. */
            lb->len = 0;
            if (on_overlong)
                on_overlong(ud);
            if (!nl)
                lb->discarding = true;
            i += chunk + (nl ? 1 : 0);
            continue;
        }
        if (append(lb, data + i, chunk) != 0)
            return CTX_ENOMEM;
        i += chunk;
        if (!nl)
            break;
        i++; /* the newline */
        size_t len = lb->len;
        if (len && lb->buf[len - 1] == '\r')
            len--;
        lb->buf[len] = 0;
        lb->len = 0;
        if (len == 0)
            continue; /* blank lines are keep-alives, not requests */
        int stop = on_line(ud, lb->buf, len);
        if (stop) {
            /* keep the unread remainder for the next feed */
            if (i < n && append(lb, data + i, n - i) != 0)
                return CTX_ENOMEM;
            return 0;
        }
    }
    return 0;
}

int ctxd_rpc_check(const cJSON *msg, struct ctxd_rpc_req *req, char *errmsg, size_t cap)
{
    memset(req, 0, sizeof *req);
    if (!cJSON_IsObject(msg)) {
        snprintf(errmsg, cap, "a request must be a JSON object");
        return CTXD_RPC_INVALID_REQUEST;
    }
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(msg, "id");
    if (id) {
        if (!cJSON_IsString(id) && !cJSON_IsNumber(id) && !cJSON_IsNull(id)) {
            snprintf(errmsg, cap, "\"id\" must be a string, a number or null");
            return CTXD_RPC_INVALID_REQUEST;
        }
        req->id = id;
    }
    const cJSON *ver = cJSON_GetObjectItemCaseSensitive(msg, "jsonrpc");
    if (!cJSON_IsString(ver) || strcmp(ver->valuestring, "2.0") != 0) {
        snprintf(errmsg, cap, "\"jsonrpc\" must be \"2.0\"");
        return CTXD_RPC_INVALID_REQUEST;
    }
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(msg, "method");
    if (!cJSON_IsString(m) || !m->valuestring[0]) {
        snprintf(errmsg, cap, "\"method\" must be a non-empty string");
        return CTXD_RPC_INVALID_REQUEST;
    }
    req->method = m->valuestring;
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(msg, "params");
    if (p && !cJSON_IsObject(p) && !cJSON_IsArray(p)) {
        snprintf(errmsg, cap, "\"params\" must be an object or an array");
        return CTXD_RPC_INVALID_REQUEST;
    }
    req->params = p;
    return 0;
}

static cJSON *base(const cJSON *id)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    cJSON_AddStringToObject(o, "jsonrpc", "2.0");
    cJSON *idc = id ? cJSON_Duplicate(id, true) : cJSON_CreateNull();
    cJSON_AddItemToObject(o, "id", idc);
    return o;
}

cJSON *ctxd_rpc_result(const cJSON *id, cJSON *result)
{
    cJSON *o = base(id);
    if (!o) {
        cJSON_Delete(result);
        return NULL;
    }
    cJSON_AddItemToObject(o, "result", result ? result : cJSON_CreateNull());
    return o;
}

cJSON *ctxd_rpc_error(const cJSON *id, int code, const char *message, cJSON *data)
{
    cJSON *o = base(id);
    cJSON *err = cJSON_CreateObject();
    if (!o || !err) {
        cJSON_Delete(o);
        cJSON_Delete(err);
        cJSON_Delete(data);
        return NULL;
    }
    cJSON_AddNumberToObject(err, "code", code);
    cJSON_AddStringToObject(err, "message", message);
    if (data)
        cJSON_AddItemToObject(err, "data", data);
    cJSON_AddItemToObject(o, "error", err);
    return o;
}

cJSON *ctxd_rpc_notification(const char *method, cJSON *params)
{
    cJSON *o = cJSON_CreateObject();
    if (!o) {
        cJSON_Delete(params);
        return NULL;
    }
    cJSON_AddStringToObject(o, "jsonrpc", "2.0");
    cJSON_AddStringToObject(o, "method", method);
    if (params)
        cJSON_AddItemToObject(o, "params", params);
    return o;
}

cJSON *ctxd_rpc_request(long long id, const char *method, cJSON *params)
{
    cJSON *o = ctxd_rpc_notification(method, params);
    if (o)
        cJSON_AddNumberToObject(o, "id", (double)id);
    return o;
}

char *ctxd_rpc_line(const cJSON *msg, size_t *len)
{
    char *s = cJSON_PrintUnformatted(msg);
    if (!s)
        return NULL;
    size_t n = strlen(s);
    char *line = realloc(s, n + 2);
    if (!line) {
        free(s);
        return NULL;
    }
    line[n] = '\n';
    line[n + 1] = 0;
    if (len)
        *len = n + 1;
    return line;
}
