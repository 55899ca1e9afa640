#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct ctxd_client *ctx_cli_connect(const struct ctx_cli *cli, const char *cmd, bool autostart)
{
    struct ctxd_client *c = NULL;
    struct ctx_err e = {0};
    int rc = autostart ? ctxd_client_connect_or_spawn(cli->ctxd_path, cli->socket_path, &c, &e)
                       : ctxd_client_connect(cli->socket_path, &c, &e);
    if (rc != 0) {
        fprintf(stderr, "ctx %s: %s\n", cmd, e.msg);
        return NULL;
    }
    return c;
}

bool ctx_cli_has_flag(int argc, char **argv, const char *flag)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], flag) == 0)
            return true;
    return false;
}

void ctx_cli_print_json(const cJSON *v)
{
    char *s = cJSON_PrintUnformatted(v);
    if (s) {
        puts(s);
        free(s);
    }
}

int ctx_cli_read_stdin(char **out, size_t *len)
{
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    if (!buf)
        return -1;
    for (;;) {
        if (n + 1 >= cap) {
            char *nb = cap < ((size_t)1 << 30) ? realloc(buf, cap * 2) : NULL;
            if (!nb) {
                free(buf);
                return -1;
            }
            buf = nb;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, stdin);
        n += r;
        if (r == 0)
            break;
    }
    if (ferror(stdin)) {
        free(buf);
        return -1;
    }
    buf[n] = 0;
    *out = buf;
    *len = n;
    return 0;
}

bool ctx_cli_long(const char *cmd, const char *flag, const char *text, long lo, long hi, long *out)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (!*text || *end || errno || v < lo || v > hi) {
        fprintf(stderr, "ctx %s: %s needs an integer from %ld to %ld, not \"%s\"\n", cmd, flag, lo, hi, text);
        return false;
    }
    *out = v;
    return true;
}

bool ctx_cli_double(const char *cmd, const char *flag, const char *text, double lo, double hi, double *out)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(text, &end);
    if (!*text || *end || errno || !(v >= lo && v <= hi)) {
        fprintf(stderr, "ctx %s: %s needs a number from %g to %g, not \"%s\"\n", cmd, flag, lo, hi, text);
        return false;
    }
    *out = v;
    return true;
}
