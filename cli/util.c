#include "util.h"

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
