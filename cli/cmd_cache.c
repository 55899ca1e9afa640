/* ctx cache status | clear: the resident KV cache on disk. */
#include <stdio.h>
#include <string.h>

#include "util.h"

static double num(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

int ctx_cmd_cache(int argc, char **argv, const struct ctx_cli *cli)
{
    const char *sub = NULL;
    bool json = cli->json;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            json = true;
        else if (strcmp(argv[i], "--help") == 0) {
            printf("usage: ctx cache status|clear [--json]\n"
                   "status: lineages, checkpoints, bytes on disk and the hit ratio; clear: remove everything.\n");
            return 0;
        } else if (!sub && (strcmp(argv[i], "status") == 0 || strcmp(argv[i], "clear") == 0))
            sub = argv[i];
        else {
            fprintf(stderr, "ctx cache: unexpected argument \"%s\"\nusage: ctx cache status|clear [--json]\n",
                    argv[i]);
            return 2;
        }
    }
    if (!sub)
        sub = "status";
    struct ctxd_client *c = ctx_cli_connect(cli, "cache", true);
    if (!c)
        return 1;
    struct ctx_err e = {0};
    cJSON *r = NULL;
    int rc = ctxd_client_call(c, strcmp(sub, "clear") == 0 ? "cache.clear" : "cache.status", NULL, NULL, NULL,
                              60000, &r, &e);
    ctxd_client_close(c);
    if (rc) {
        fprintf(stderr, "ctx cache: %s\n", e.msg);
        return 1;
    }
    if (json) {
        ctx_cli_print_json(r);
    } else if (strcmp(sub, "clear") == 0) {
        printf("removed %.0f lineages, %.1f MiB\n", num(r, "lineages"), num(r, "freed_bytes") / 1048576.0);
    } else {
        const cJSON *dir = cJSON_GetObjectItemCaseSensitive(r, "dir");
        printf("cache        %s\n", cJSON_IsString(dir) ? dir->valuestring : "?");
        printf("lineages     %.0f, %.0f checkpoints (every %.0f tokens)\n", num(r, "lineages"),
               num(r, "checkpoints"), num(r, "checkpoint_every"));
        printf("disk         %.1f MiB of %.1f MiB\n", num(r, "bytes") / 1048576.0,
               num(r, "budget_bytes") / 1048576.0);
        printf("hit ratio    %.0f%% (%.0f hits, %.0f misses)\n", num(r, "hit_ratio") * 100, num(r, "hits"),
               num(r, "misses"));
    }
    cJSON_Delete(r);
    return 0;
}
