/* ctx review [--staged|--range A..B|FILES] [--format F] [--fail-on LEVEL]: the agent reviews
 * changes in review mode (read-only tools) and reports findings (agent/report.h formats). */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "report.h"
#include "review.h"
#include "util.h"

/* The findings of a result (review.h's JSON shape) as structs, through the same parser that
 * checked the model's answer. */
static int findings_of(const cJSON *arr, struct agent_findings *f, struct ctx_err *e)
{
    char *json = cJSON_PrintUnformatted(arr);
    if (!json)
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    size_t n = strlen(json);
    char *text = malloc(n + 32);
    if (!text) {
        free(json);
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    }
    int len = snprintf(text, n + 32, "```findings\n%s\n```\n", json);
    free(json);
    int rc = agent_review_parse(text, (size_t)len, f, e);
    free(text);
    return rc;
}

int ctx_cmd_review(int argc, char **argv, const struct ctx_cli *cli)
{
    const char *range = NULL, *format = "text", *fail_on = "error", *prompt = NULL;
    struct ctx_cli_agent_opts o = {.json = cli->json};
    bool staged = false;
    cJSON *files = cJSON_CreateArray();
    for (int i = 1; i < argc; i++) {
        int k = ctx_cli_agent_opt("review", argc, argv, &i, &o);
        if (k < 0) {
            cJSON_Delete(files);
            return 2;
        }
        if (k > 0)
            continue;
        if (strcmp(argv[i], "--staged") == 0)
            staged = true;
        else if (strcmp(argv[i], "--range") == 0 && i + 1 < argc)
            range = argv[++i];
        else if (strcmp(argv[i], "--format") == 0 && i + 1 < argc)
            format = argv[++i];
        else if (strcmp(argv[i], "--fail-on") == 0 && i + 1 < argc)
            fail_on = argv[++i];
        else if (strcmp(argv[i], "--prompt") == 0 && i + 1 < argc)
            prompt = argv[++i];
        else if (strcmp(argv[i], "--help") == 0) {
            printf("usage: ctx review [--staged | --range A..B | FILE...] [--format %s]\n"
                   "                  [--fail-on error|warning|info|never] [--prompt TEXT] [--repo PATH]\n"
                   "                  [--max-steps N] [--max-tokens N] [--json]\n"
                   "The agent reviews the uncommitted changes (default), the staged ones, a commit range or the\n"
                   "named files of the repository containing PATH (default: the current directory) with read-only\n"
                   "tools, and reports findings (file, line, severity, message, optional replacement).\n"
                   "--json prints the whole agent result; --format chooses how findings are printed.\n"
                   "Exit: 0 no finding at or above --fail-on (default error), 1 such findings, 2 usage,\n"
                   "3 the review failed (daemon or engine error, or no readable findings).\n",
                   agent_report_format_list());
            cJSON_Delete(files);
            return 0;
        } else if (argv[i][0] != '-')
            cJSON_AddItemToArray(files, cJSON_CreateString(argv[i]));
        else {
            fprintf(stderr, "ctx review: unexpected argument \"%s\"\n", argv[i]);
            cJSON_Delete(files);
            return 2;
        }
    }
    int fmt = agent_report_format_parse(format);
    int threshold = strcmp(fail_on, "error") == 0     ? AGENT_SEV_ERROR
                    : strcmp(fail_on, "warning") == 0 ? AGENT_SEV_WARNING
                    : strcmp(fail_on, "info") == 0    ? AGENT_SEV_INFO
                    : strcmp(fail_on, "never") == 0   ? -1
                                                      : -2;
    const char *usage_err = fmt < 0 ? "--format must be one of text|json|diff|github|rdjsonl|sarif"
                            : threshold == -2 ? "--fail-on must be error, warning, info or never"
                            : staged && range ? "--staged and --range exclude each other"
                            : (staged || range) && cJSON_GetArraySize(files) ? "files and --staged/--range exclude each other"
                                                                              : NULL;
    if (usage_err) {
        fprintf(stderr, "ctx review: %s\n", usage_err);
        cJSON_Delete(files);
        return 2;
    }
    char cwd[PATH_MAX];
    const char *path = o.path ? o.path : getcwd(cwd, sizeof cwd) ? cwd : ".";
    cJSON *params = ctx_cli_agent_params(&o, "review"), *r = NULL;
    bool json = o.json;
    if (prompt)
        cJSON_AddStringToObject(params, "prompt", prompt);
    if (staged)
        cJSON_AddBoolToObject(params, "staged", true);
    if (range)
        cJSON_AddStringToObject(params, "range", range);
    if (cJSON_GetArraySize(files))
        cJSON_AddItemToObject(params, "files", files);
    else
        cJSON_Delete(files);
    if (ctx_cli_agent_run(cli, "review", params, json, false, false, &r))
        return 3;
    const cJSON *stop = cJSON_GetObjectItemCaseSensitive(r, "stop");
    const cJSON *ferr = cJSON_GetObjectItemCaseSensitive(r, "findings_error");
    const cJSON *root = cJSON_GetObjectItemCaseSensitive(r, "root");
    struct agent_findings f = {0};
    struct ctx_err e = {0};
    int status = 0;
    if (!cJSON_IsString(stop) || strcmp(stop->valuestring, "final") != 0 || cJSON_IsString(ferr)) {
        fprintf(stderr, "ctx review: the review did not finish (%s)%s%s\n",
                cJSON_IsString(stop) ? stop->valuestring : "?", cJSON_IsString(ferr) ? ": " : "",
                cJSON_IsString(ferr) ? ferr->valuestring : "");
        status = 3;
    } else if (findings_of(cJSON_GetObjectItemCaseSensitive(r, "findings"), &f, &e)) {
        fprintf(stderr, "ctx review: %s\n", e.msg);
        status = 3;
    }
    if (json) {
        ctx_cli_print_json(r);
    } else if (status == 0) {
        char *out = NULL;
        char real[PATH_MAX];
        const char *rootp = cJSON_IsString(root) ? root->valuestring : realpath(path, real) ? real : path;
        if (agent_report_findings((enum agent_report_format)fmt, f.v, f.n, rootp, &out, &e)) {
            fprintf(stderr, "ctx review: %s\n", e.msg);
            status = 3;
        } else {
            fputs(out, stdout);
        }
        free(out);
    }
    if (status == 0)
        for (size_t i = 0; i < f.n; i++)
            if ((int)f.v[i].severity <= threshold)
                status = 1;
    if (!json && isatty(2))
        ctx_cli_agent_summary("review", r);
    agent_findings_free(&f);
    cJSON_Delete(r);
    return status;
}
