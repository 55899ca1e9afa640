/* ctx undo [--repo PATH] [--force]: take back the agent's newest turn of edits (agent.undo). */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

int ctx_cmd_undo(int argc, char **argv, const struct ctx_cli *cli)
{
    const char *path = NULL;
    bool json = cli->json, force = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            json = true;
        else if (strcmp(argv[i], "--force") == 0)
            force = true;
        else if (strcmp(argv[i], "--repo") == 0 && i + 1 < argc)
            path = argv[++i];
        else if (strcmp(argv[i], "--help") == 0) {
            printf("usage: ctx undo [--repo PATH] [--force] [--json]\n"
                   "Restore the files the agent changed in its newest turn (ctx ask) in the repository containing\n"
                   "PATH (default: the current directory): edited files get their old text back, files it created\n"
                   "are removed, files it deleted come back. Repeat to walk further back. When a file changed again\n"
                   "after the agent's turn, undo refuses and names it; --force restores anyway.\n"
                   "Exit: 0 restored, 1 nothing to undo or refused, 2 usage.\n");
            return 0;
        } else {
            fprintf(stderr, "ctx undo: unexpected argument \"%s\"\n", argv[i]);
            return 2;
        }
    }
    char cwd[PATH_MAX];
    if (!path)
        path = getcwd(cwd, sizeof cwd) ? cwd : ".";
    struct ctxd_client *c = ctx_cli_connect(cli, "undo", true);
    if (!c)
        return 1;
    cJSON *params = cJSON_CreateObject(), *r = NULL;
    cJSON_AddStringToObject(params, "path", path);
    cJSON_AddBoolToObject(params, "force", force);
    struct ctx_err e = {0};
    int rc = ctxd_client_call(c, "agent.undo", params, NULL, NULL, 0, &r, &e);
    ctxd_client_close(c);
    if (rc) {
        fprintf(stderr, "ctx undo: %s\n", e.msg);
        return 1;
    }
    if (json) {
        ctx_cli_print_json(r);
    } else {
        const cJSON *a;
        cJSON_ArrayForEach(a, cJSON_GetObjectItemCaseSensitive(r, "actions")) {
            const cJSON *p = cJSON_GetObjectItemCaseSensitive(a, "path");
            const cJSON *act = cJSON_GetObjectItemCaseSensitive(a, "action");
            printf("%s %s\n", cJSON_IsString(act) ? act->valuestring : "restored",
                   cJSON_IsString(p) ? p->valuestring : "?");
        }
    }
    cJSON_Delete(r);
    return 0;
}
