/* Logging for programs (ctxd, ctx, benches). Library code never logs: it returns struct ctx_err and
 * the program decides what to print. The sink is process-wide and set once at start-up. */
#ifndef CTX_LOG_H
#define CTX_LOG_H

#include <stdio.h>

enum ctx_log_level { CTX_LOG_DEBUG = 0, CTX_LOG_INFO = 1, CTX_LOG_WARN = 2, CTX_LOG_ERROR = 3 };

/* Set the destination (NULL: stderr) and the lowest level written. Call before starting threads. */
void ctx_log_init(FILE *out, enum ctx_log_level min_level);
/* Parse "debug", "info", "warn", "error"; returns -1 for anything else. */
int ctx_log_level_parse(const char *s);
void ctx_log(enum ctx_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define CTX_DEBUG(...) ctx_log(CTX_LOG_DEBUG, __VA_ARGS__)
#define CTX_INFO(...) ctx_log(CTX_LOG_INFO, __VA_ARGS__)
#define CTX_WARN(...) ctx_log(CTX_LOG_WARN, __VA_ARGS__)
#define CTX_ERROR(...) ctx_log(CTX_LOG_ERROR, __VA_ARGS__)

#endif
