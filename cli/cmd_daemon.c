/* ctx status | ping | stop | version: the daemon's life cycle. */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <signal.h>
#include <unistd.h>

#include "ctx_config.h"
#include "util.h"

static int check_args(int argc, char **argv, const char *usage)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            continue;
        if (strcmp(argv[i], "--help") == 0) {
            printf("usage: %s\n", usage);
            return 0;
        }
        fprintf(stderr, "ctx %s: unexpected argument \"%s\"\nusage: %s\n", argv[0], argv[i], usage);
        return 2;
    }
    return -1;
}

static int simple_call(const struct ctx_cli *cli, const char *cmd, const char *method, bool autostart,
                       cJSON **result)
{
    struct ctxd_client *c = ctx_cli_connect(cli, cmd, autostart);
    if (!c)
        return 1;
    struct ctx_err e = {0};
    int rc = ctxd_client_call(c, method, NULL, NULL, NULL, 30000, result, &e);
    ctxd_client_close(c);
    if (rc != 0) {
        fprintf(stderr, "ctx %s: %s\n", cmd, e.msg);
        return 1;
    }
    return 0;
}

static double num(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

static const char *str(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : "?";
}

int ctx_cmd_status(int argc, char **argv, const struct ctx_cli *cli)
{
    int a = check_args(argc, argv, "ctx status [--json]");
    if (a >= 0)
        return a;
    bool json = cli->json || ctx_cli_has_flag(argc, argv, "--json");
    cJSON *r = NULL, *cache = NULL;
    if (simple_call(cli, "status", "daemon.status", true, &r))
        return 1;
    {
        struct ctxd_client *c = ctx_cli_connect(cli, "status", false);
        struct ctx_err e = {0};
        if (c && ctxd_client_call(c, "cache.status", NULL, NULL, NULL, 30000, &cache, &e) == 0)
            cJSON_AddItemToObject(r, "cache", cache);
        ctxd_client_close(c);
    }
    if (json) {
        ctx_cli_print_json(r);
    } else {
        printf("ctxd %s (protocol %.0f), pid %.0f\n", str(r, "version"), num(r, "protocol"), num(r, "pid"));
        printf("socket    %s\n", str(r, "socket"));
        printf("started   %s (up %.1f s)\n", str(r, "started"), num(r, "uptime_ms") / 1000.0);
        printf("clients   %.0f connected, %.0f since start\n", num(r, "connections"),
               num(r, "connections_accepted"));
        printf("requests  %.0f answered, %.0f errors\n", num(r, "requests"), num(r, "errors"));
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(r, "model");
        if (m) {
            const cJSON *dev = cJSON_GetObjectItemCaseSensitive(m, "device");
            const char *be = cJSON_IsString(cJSON_GetObjectItem(m, "backend")) ? str(m, "backend") : "cpu";
            const cJSON *spec = cJSON_GetObjectItemCaseSensitive(m, "speculative");
            printf("model     %s%s; backend %s%s%s%s%s\n", str(m, "source"),
                   cJSON_IsTrue(cJSON_GetObjectItem(m, "loaded")) ? "" : " (not loaded yet)", be,
                   cJSON_IsString(dev) ? " on " : "", cJSON_IsString(dev) ? dev->valuestring : "",
                   cJSON_IsString(spec) ? "; speculative decoding " : "", cJSON_IsString(spec) ? spec->valuestring : "");
        }
        if (cache)
            printf("cache     %.1f MiB in %.0f checkpoints, hit ratio %.0f%% (%s)\n", num(cache, "bytes") / 1048576.0,
                   num(cache, "checkpoints"), num(cache, "hit_ratio") * 100, str(cache, "dir"));
        const cJSON *repo;
        cJSON_ArrayForEach(repo, cJSON_GetObjectItemCaseSensitive(r, "repos")) {
            printf("repo      %s: %s, %.0f of %.0f prompt tokens resident (%.0f restored from disk)", str(repo, "root"),
                   str(repo, "phase"), num(repo, "resident_tokens"), num(repo, "prompt_tokens"),
                   num(repo, "restored_tokens"));
            if (num(repo, "overlay_files") > 0)
                printf(", %.0f edited files overlaid", num(repo, "overlay_files"));
            printf("\n");
        }
    }
    cJSON_Delete(r);
    return 0;
}

int ctx_cmd_ping(int argc, char **argv, const struct ctx_cli *cli)
{
    int a = check_args(argc, argv, "ctx ping [--json]");
    if (a >= 0)
        return a;
    bool json = cli->json || ctx_cli_has_flag(argc, argv, "--json");
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    cJSON *r = NULL;
    if (simple_call(cli, "ping", "daemon.ping", true, &r))
        return 1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    if (json) {
        cJSON_AddNumberToObject(r, "round_trip_ms", ms);
        ctx_cli_print_json(r);
    } else {
        printf("pong from ctxd in %.2f ms\n", ms);
    }
    cJSON_Delete(r);
    return 0;
}

int ctx_cmd_stop(int argc, char **argv, const struct ctx_cli *cli)
{
    int a = check_args(argc, argv, "ctx stop [--json]");
    if (a >= 0)
        return a;
    bool json = cli->json || ctx_cli_has_flag(argc, argv, "--json");
    struct ctxd_client *c = NULL;
    struct ctx_err e = {0};
    int rc = ctxd_client_connect(cli->socket_path, &c, &e);
    if (rc == CTX_ENOTFOUND) {
        if (json)
            printf("{\"stopped\":false,\"running\":false}\n");
        else
            printf("no ctxd is running on %s\n", cli->socket_path);
        return 0;
    }
    if (rc != 0) {
        fprintf(stderr, "ctx stop: %s\n", e.msg);
        return 1;
    }
    cJSON *params = cJSON_CreateObject();
    cJSON_AddStringToObject(params, "reason", "ctx stop");
    cJSON *r = NULL;
    rc = ctxd_client_call(c, "daemon.shutdown", params, NULL, NULL, 30000, &r, &e);
    ctxd_client_close(c);
    if (rc != 0) {
        fprintf(stderr, "ctx stop: %s\n", e.msg);
        return 1;
    }
    double pid = num(r, "pid");
    cJSON_Delete(r);
    /* Wait until the socket is gone and the process has exited (it holds the instance lock until
     * then), so that a following command can start a fresh daemon at once. */
    for (int i = 0; i < 1000 && (access(cli->socket_path, F_OK) == 0 || (pid > 0 && kill((pid_t)pid, 0) == 0));
         i++)
        usleep(10000);
    if (access(cli->socket_path, F_OK) == 0 || (pid > 0 && kill((pid_t)pid, 0) == 0)) {
        fprintf(stderr, "ctx stop: ctxd (pid %.0f) accepted the shutdown but has not exited after 10 s\n", pid);
        return 1;
    }
    if (json)
        printf("{\"stopped\":true,\"pid\":%.0f}\n", pid);
    else
        printf("stopped ctxd (pid %.0f)\n", pid);
    return 0;
}

int ctx_cmd_version(int argc, char **argv, const struct ctx_cli *cli)
{
    int a = check_args(argc, argv, "ctx version [--json]");
    if (a >= 0)
        return a;
    if (cli->json || ctx_cli_has_flag(argc, argv, "--json"))
        printf("{\"version\":\"%s\",\"cuda_built\":%s}\n", CTX_VERSION, HAVE_CUDA ? "true" : "false");
    else
        printf("ctx %s%s\n", CTX_VERSION, HAVE_CUDA ? " (CUDA backend built)" : "");
    return 0;
}
