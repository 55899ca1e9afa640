/* Errors shared by every module: an int code (0 or negative) plus a caller-provided struct that
 * carries a message naming the file, tensor, byte offset or field at fault. */
#ifndef CTX_ERR_H
#define CTX_ERR_H

#include <stddef.h>

enum ctx_code {
    CTX_OK = 0,
    CTX_EINVAL = -1,      /* bad argument or bad input value */
    CTX_EIO = -2,         /* an operating-system call failed */
    CTX_ENOMEM = -3,
    CTX_EFORMAT = -4,     /* malformed file or message */
    CTX_ENOTFOUND = -5,
    CTX_EBUSY = -6,
    CTX_ECANCELED = -7,
    CTX_ERANGE = -8,      /* a size or count over its limit */
    CTX_EEXIST = -9,
    CTX_EUNSUPPORTED = -10,
    CTX_EPROTO = -11,     /* the peer broke the protocol */
    CTX_ETIMEDOUT = -12,
    CTX_EDENIED = -13,    /* refused by a policy */
    CTX_EINTERNAL = -14,  /* a broken invariant: a bug, reported rather than aborted on */
};

#define CTX_ERR_MSG_MAX 512

struct ctx_err {
    int code;
    char msg[CTX_ERR_MSG_MAX];
};

/* Fill *e (if not NULL) and return code, so that `return ctx_err_set(e, CTX_EIO, ...)` reads well.
 * The message is truncated with "..." only if it exceeds CTX_ERR_MSG_MAX. */
int ctx_err_set(struct ctx_err *e, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Like ctx_err_set, with ": <strerror(errno_value)>" appended. */
int ctx_err_errno(struct ctx_err *e, int code, int errno_value, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Prefix the existing message with more context ("loading X: " + old message); keeps the code. */
int ctx_err_prefix(struct ctx_err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

void ctx_err_clear(struct ctx_err *e);

/* A short stable name for a code ("EINVAL", "EFORMAT", ...). */
const char *ctx_code_name(int code);

#endif
