#include "log.h"

#include <pthread.h>
#include <stdarg.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

/* The one piece of mutable process state outside an object: programs set it once in main(). */
static FILE *log_out;
static enum ctx_log_level log_min = CTX_LOG_INFO;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

void ctx_log_init(FILE *out, enum ctx_log_level min_level)
{
    log_out = out;
    log_min = min_level;
}

int ctx_log_level_parse(const char *s)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++)
        if (strcmp(s, names[i]) == 0)
            return i;
    return -1;
}

void ctx_log(enum ctx_log_level level, const char *fmt, ...)
{
    static const char *tag[] = {"debug", "info", "warn", "error"};
    if (level < log_min || !fmt)
        return;
    FILE *out = log_out ? log_out : stderr;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char ts[32];
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    pthread_mutex_lock(&log_lock);
    fprintf(out, "%s.%03dZ %-5s ", ts, (int)(tv.tv_usec / 1000), tag[level]);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(out, fmt, ap);
    va_end(ap);
    fputc('\n', out);
    fflush(out);
    pthread_mutex_unlock(&log_lock);
}
