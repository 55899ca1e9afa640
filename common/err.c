#include "err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static void finish(struct ctx_err *e, int n)
{
    if (n >= CTX_ERR_MSG_MAX)
        memcpy(e->msg + CTX_ERR_MSG_MAX - 4, "...", 4);
}

int ctx_err_set(struct ctx_err *e, int code, const char *fmt, ...)
{
    if (!e)
        return code;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    finish(e, n);
    e->code = code;
    return code;
}

int ctx_err_errno(struct ctx_err *e, int code, int errno_value, const char *fmt, ...)
{
    if (!e)
        return code;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < sizeof e->msg)
        n += snprintf(e->msg + n, sizeof e->msg - (size_t)n, ": %s", strerror(errno_value));
    finish(e, n);
    e->code = code;
    return code;
}

int ctx_err_prefix(struct ctx_err *e, const char *fmt, ...)
{
    if (!e)
        return CTX_EINVAL;
    char old[CTX_ERR_MSG_MAX];
    memcpy(old, e->msg, sizeof old);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < sizeof e->msg)
        n += snprintf(e->msg + n, sizeof e->msg - (size_t)n, "%s", old);
    finish(e, n);
    return e->code;
}

void ctx_err_clear(struct ctx_err *e)
{
    if (e) {
        e->code = 0;
        e->msg[0] = 0;
    }
}

const char *ctx_code_name(int code)
{
    switch (code) {
    case CTX_OK: return "OK";
    case CTX_EINVAL: return "EINVAL";
    case CTX_EIO: return "EIO";
    case CTX_ENOMEM: return "ENOMEM";
    case CTX_EFORMAT: return "EFORMAT";
    case CTX_ENOTFOUND: return "ENOTFOUND";
    case CTX_EBUSY: return "EBUSY";
    case CTX_ECANCELED: return "ECANCELED";
    case CTX_ERANGE: return "ERANGE";
    case CTX_EEXIST: return "EEXIST";
    case CTX_EUNSUPPORTED: return "EUNSUPPORTED";
    case CTX_EPROTO: return "EPROTO";
    case CTX_ETIMEDOUT: return "ETIMEDOUT";
    case CTX_EDENIED: return "EDENIED";
    case CTX_EINTERNAL: return "EINTERNAL";
    default: return "EUNKNOWN";
    }
}
