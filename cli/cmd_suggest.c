/* ctx suggest [--from-log FILE] ["INSTRUCTION"] [--format F]: the agent edits an in-memory overlay
 * of the repository and the result is a diff; nothing on disk changes. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "json.h"
#include "report.h"
#include "util.h"

int ctx_cmd_suggest(int argc, char **argv, const struct ctx_cli *cli)
{
    const char *log_path = NULL, *format = "diff", *instruction = NULL;
    struct ctx_cli_agent_opts o = {.json = cli->json};
    for (int i = 1; i < argc; i++) {
        int k = ctx_cli_agent_opt("suggest", argc, argv, &i, &o);
        if (k < 0)
            return 2;
        if (k > 0)
            continue;
        if (strcmp(argv[i], "--from-log") == 0 && i + 1 < argc)
            log_path = argv[++i];
        else if (strcmp(argv[i], "--format") == 0 && i + 1 < argc)
            format = argv[++i];
        else if (strcmp(argv[i], "--help") == 0) {
            printf("usage: ctx suggest [--from-log FILE|-] [\"INSTRUCTION\"] [--format %s]\n"
                   "                   [--repo PATH] [--max-steps N] [--max-tokens N] [--json]\n"
                   "The agent works out a change (from the instruction and/or a failing test log) on an in-memory\n"
                   "overlay of the repository containing PATH (default: the current directory); the change is\n"
                   "printed (default: a unified diff that `git apply` takes) and nothing on disk changes.\n"
                   "Exit: 0 done, 1 the agent did not finish (step limit, budget, cancelled, error), 2 usage,\n"
                   "3 daemon or engine failure.\n",
                   agent_report_format_list());
            return 0;
        } else if (argv[i][0] != '-' && !instruction)
            instruction = argv[i];
        else {
            fprintf(stderr, "ctx suggest: unexpected argument \"%s\"\n", argv[i]);
            return 2;
        }
    }
    int fmt = agent_report_format_parse(format);
    if (fmt < 0) {
        fprintf(stderr, "ctx suggest: --format must be one of %s\n", agent_report_format_list());
        return 2;
    }
    if (!instruction && !log_path) {
        fprintf(stderr, "ctx suggest: an instruction or --from-log FILE is required\n");
        return 2;
    }
    char *log = NULL;
    size_t log_len = 0;
    struct ctx_err e = {0};
    if (log_path) {
        int rc = strcmp(log_path, "-") == 0 ? ctx_cli_read_stdin(&log, &log_len)
                                            : ctx_read_file(log_path, 64u << 20, &log, &log_len, &e);
        if (rc) {
            fprintf(stderr, "ctx suggest: %s\n", e.msg[0] ? e.msg : "cannot read the log from stdin");
            return 2;
        }
    }
    cJSON *params = ctx_cli_agent_params(&o, "suggest"), *r = NULL;
    bool json = o.json;
    if (instruction)
        cJSON_AddStringToObject(params, "prompt", instruction);
    if (log)
        cJSON_AddStringToObject(params, "log", log);
    free(log);
    if (ctx_cli_agent_run(cli, "suggest", params, json, false, false, &r))
        return 3;
    const cJSON *stop = cJSON_GetObjectItemCaseSensitive(r, "stop");
    const cJSON *diff = cJSON_GetObjectItemCaseSensitive(r, "diff");
    int status = cJSON_IsString(stop) && strcmp(stop->valuestring, "final") == 0 ? 0 : 1;
    if (json) {
        ctx_cli_print_json(r);
    } else {
        char *out = NULL;
        if (agent_report_diff((enum agent_report_format)fmt, cJSON_IsString(diff) ? diff->valuestring : "", &out,
                              &e)) {
            fprintf(stderr, "ctx suggest: %s\n", e.msg);
            status = 3;
        } else {
            fputs(out, stdout);
        }
        free(out);
        if (status == 1)
            fprintf(stderr, "ctx suggest: the agent did not finish (%s); the diff is what it had done\n",
                    cJSON_IsString(stop) ? stop->valuestring : "?");
        if (isatty(2))
            ctx_cli_agent_summary("suggest", r);
    }
    cJSON_Delete(r);
    return status;
}
