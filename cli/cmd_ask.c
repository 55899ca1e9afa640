/* ctx init [PATH] and ctx ask "QUESTION": make a repository resident and ask about it. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

struct view {
    bool json, tty;
    int in_reasoning;   /* a reasoning block is open on the terminal */
    int wrote;
};

static int on_note(void *ud, const char *method, const cJSON *params)
{
    struct view *v = ud;
    if (v->json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "event", method);
        cJSON_AddItemToObject(o, "params", cJSON_Duplicate(params, 1));
        ctx_cli_print_json(o);
        cJSON_Delete(o);
        fflush(stdout);
        return 0;
    }
    if (strcmp(method, "repo.progress") == 0) {
        const cJSON *ph = cJSON_GetObjectItemCaseSensitive(params, "phase");
        const cJSON *done = cJSON_GetObjectItemCaseSensitive(params, "done");
        const cJSON *total = cJSON_GetObjectItemCaseSensitive(params, "total");
        const cJSON *tps = cJSON_GetObjectItemCaseSensitive(params, "tokens_per_s");
        const cJSON *eta = cJSON_GetObjectItemCaseSensitive(params, "eta_s");
        if (!v->tty)
            return 0; /* progress only on a terminal */
        if (cJSON_IsString(ph) && strcmp(ph->valuestring, "ingesting") == 0) {
            fprintf(stderr, "\r\033[Kingesting the repository...");
        } else if (cJSON_IsNumber(done) && cJSON_IsNumber(total) && total->valuedouble > 0) {
            double f = done->valuedouble / total->valuedouble;
            int bar = (int)(f * 30);
            fprintf(stderr, "\r\033[Kprefill [%.*s%*s] %3.0f%% %.0f/%.0f tokens", bar,
                    "##############################", 30 - bar, "", f * 100, done->valuedouble,
                    total->valuedouble);
            if (cJSON_IsNumber(tps))
                fprintf(stderr, ", %.0f tokens/s", tps->valuedouble);
            if (cJSON_IsNumber(eta))
                fprintf(stderr, ", %.0f s left", eta->valuedouble);
        }
        fflush(stderr);
        return 0;
    }
    if (strcmp(method, "ask.delta") == 0) {
        const cJSON *kind = cJSON_GetObjectItemCaseSensitive(params, "kind");
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(params, "text");
        if (!cJSON_IsString(kind) || !cJSON_IsString(text))
            return 0;
        int reasoning = strcmp(kind->valuestring, "reasoning") == 0;
        if (reasoning && !v->in_reasoning) {
            fputs(v->tty ? "\033[2m" : "[reasoning] ", stdout);
            v->in_reasoning = 1;
        } else if (!reasoning && v->in_reasoning) {
            fputs(v->tty ? "\033[0m\n\n" : "\n[answer] ", stdout);
            v->in_reasoning = 0;
        }
        fputs(text->valuestring, stdout);
        fflush(stdout);
        v->wrote = 1;
    }
    return 0;
}

static const char *path_arg(const char *p, char *buf)
{
    if (p)
        return p;
    return getcwd(buf, PATH_MAX) ? buf : ".";
}

int ctx_cmd_init(int argc, char **argv, const struct ctx_cli *cli)
{
    const char *path = NULL;
    long budget = 0;
    bool json = cli->json, wait = true;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            json = true;
        else if (strcmp(argv[i], "--no-wait") == 0)
            wait = false;
        else if (strcmp(argv[i], "--budget") == 0 && i + 1 < argc)
            budget = strtol(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--help") == 0) {
            printf("usage: ctx init [PATH] [--budget TOKENS] [--no-wait] [--json]\n"
                   "Open the repository containing PATH (default: the current directory) in ctxd, ingest it and\n"
                   "prefill its resident prompt, showing progress; --no-wait returns at once.\n");
            return 0;
        } else if (argv[i][0] != '-' && !path)
            path = argv[i];
        else {
            fprintf(stderr, "ctx init: unexpected argument \"%s\"\n", argv[i]);
            return 2;
        }
    }
    char cwd[PATH_MAX];
    path = path_arg(path, cwd);
    struct ctxd_client *c = ctx_cli_connect(cli, "init", true);
    if (!c)
        return 1;
    cJSON *params = cJSON_CreateObject();
    cJSON_AddStringToObject(params, "path", path);
    cJSON_AddBoolToObject(params, "wait", wait);
    if (budget > 0)
        cJSON_AddNumberToObject(params, "budget", (double)budget);
    struct view v = {.json = json, .tty = isatty(2)};
    cJSON *r = NULL;
    struct ctx_err e = {0};
    int rc = ctxd_client_call(c, "repo.open", params, on_note, &v, 0, &r, &e);
    ctxd_client_close(c);
    if (v.tty && !json)
        fputs("\r\033[K", stderr);
    if (rc) {
        fprintf(stderr, "ctx init: %s\n", e.msg);
        return 1;
    }
    if (json) {
        ctx_cli_print_json(r);
    } else {
        const cJSON *root = cJSON_GetObjectItemCaseSensitive(r, "root");
        const cJSON *phase = cJSON_GetObjectItemCaseSensitive(r, "phase");
        const cJSON *tokens = cJSON_GetObjectItemCaseSensitive(r, "prompt_tokens");
        const cJSON *files = cJSON_GetObjectItemCaseSensitive(r, "files");
        printf("%s: %s", cJSON_IsString(root) ? root->valuestring : path,
               cJSON_IsString(phase) ? phase->valuestring : "?");
        if (cJSON_IsNumber(files))
            printf(", %.0f files", files->valuedouble);
        if (cJSON_IsNumber(tokens))
            printf(", %.0f prompt tokens resident", tokens->valuedouble);
        printf("\n");
    }
    cJSON_Delete(r);
    return 0;
}

int ctx_cmd_ask(int argc, char **argv, const struct ctx_cli *cli)
{
    const char *path = NULL, *question = NULL, *mode = NULL;
    long max_tokens = 0, seed = -1;
    double temperature = -1;
    bool json = cli->json;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            json = true;
        else if (strcmp(argv[i], "--repo") == 0 && i + 1 < argc)
            path = argv[++i];
        else if (strcmp(argv[i], "--max-tokens") == 0 && i + 1 < argc)
            max_tokens = strtol(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--temperature") == 0 && i + 1 < argc)
            temperature = strtod(argv[++i], NULL);
        else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc)
            seed = strtol(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--chat") == 0)
            mode = "chat";
        else if (strcmp(argv[i], "--help") == 0) {
            printf("usage: ctx ask [--repo PATH] [--max-tokens N] [--temperature T] [--seed N] [--chat] [--json] "
                   "\"QUESTION\"\n"
                   "Ask about the repository containing PATH (default: the current directory); it is made\n"
                   "resident first if it is not. The answer streams as it is generated.\n");
            return 0;
        } else if (argv[i][0] != '-' && !question)
            question = argv[i];
        else {
            fprintf(stderr, "ctx ask: unexpected argument \"%s\"\n", argv[i]);
            return 2;
        }
    }
    if (!question) {
        fprintf(stderr, "ctx ask: a question is required\n");
        return 2;
    }
    char cwd[PATH_MAX];
    path = path_arg(path, cwd);
    struct ctxd_client *c = ctx_cli_connect(cli, "ask", true);
    if (!c)
        return 1;
    struct view v = {.json = json, .tty = isatty(1)};
    struct ctx_err e = {0};
    cJSON *r = NULL;
    /* Make it resident first, with progress, so that a cold start is not a silent wait. */
    cJSON *op = cJSON_CreateObject();
    cJSON_AddStringToObject(op, "path", path);
    cJSON_AddBoolToObject(op, "wait", true);
    struct view pv = {.json = json, .tty = isatty(2)};
    int rc = ctxd_client_call(c, "repo.open", op, on_note, &pv, 0, &r, &e);
    if (pv.tty && !json)
        fputs("\r\033[K", stderr);
    cJSON_Delete(r);
    r = NULL;
    cJSON *params = cJSON_CreateObject();
    cJSON_AddStringToObject(params, "path", path);
    cJSON_AddStringToObject(params, "question", question);
    if (max_tokens > 0)
        cJSON_AddNumberToObject(params, "max_tokens", (double)max_tokens);
    if (temperature >= 0)
        cJSON_AddNumberToObject(params, "temperature", temperature);
    if (seed >= 0)
        cJSON_AddNumberToObject(params, "seed", (double)seed);
    if (mode)
        cJSON_AddStringToObject(params, "mode", mode);
    if (!rc)
        rc = ctxd_client_call(c, "repo.ask", params, on_note, &v, 0, &r, &e);
    else
        cJSON_Delete(params);
    ctxd_client_close(c);
    if (v.in_reasoning && v.tty)
        fputs("\033[0m", stdout);
    if (rc) {
        if (v.wrote)
            fputc('\n', stdout);
        fprintf(stderr, "ctx ask: %s\n", e.msg);
        return 1;
    }
    if (json) {
        ctx_cli_print_json(r);
    } else {
        if (v.wrote)
            fputc('\n', stdout);
        fflush(stdout); /* the summary goes to stderr: keep the order */
        const cJSON *u = cJSON_GetObjectItemCaseSensitive(r, "usage");
        const cJSON *fin = cJSON_GetObjectItemCaseSensitive(r, "finish_reason");
        const cJSON *mal = cJSON_GetObjectItemCaseSensitive(r, "malformed");
        const cJSON *noise = cJSON_GetObjectItemCaseSensitive(r, "noise");
        double pt = 0, ct = 0, gt = 0, ttft = 0, tps = 0;
        const cJSON *x;
        if ((x = cJSON_GetObjectItemCaseSensitive(u, "prompt_tokens")))
            pt = x->valuedouble;
        if ((x = cJSON_GetObjectItemCaseSensitive(u, "cached_tokens")))
            ct = x->valuedouble;
        if ((x = cJSON_GetObjectItemCaseSensitive(u, "generated_tokens")))
            gt = x->valuedouble;
        if ((x = cJSON_GetObjectItemCaseSensitive(u, "time_to_first_token_ms")))
            ttft = x->valuedouble;
        if ((x = cJSON_GetObjectItemCaseSensitive(u, "tokens_per_s")))
            tps = x->valuedouble;
        fprintf(stderr, "-- %s; %.0f prompt tokens (%.0f resident), %.0f generated, first token after %.0f ms, %.1f tokens/s\n",
                cJSON_IsString(fin) ? fin->valuestring : "?", pt, ct, gt, ttft, tps);
        if (cJSON_IsString(mal))
            fprintf(stderr, "-- the model's output was malformed: %s\n", mal->valuestring);
        if (cJSON_IsTrue(noise))
            fprintf(stderr, "-- the bundled default model has random weights: this answer is noise\n");
    }
    cJSON_Delete(r);
    return 0;
}
