/* ctx tool NAME [JSON-ARGS] [--repo PATH]: run one of the agent's tools directly, in this process,
 * without a model or a daemon (scripting, and seeing exactly what the model sees). */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "repo.h"
#include "sandbox.h"
#include "tools.h"
#include "undo.h"
#include "util.h"

static bool ask_tty(void *ud, const char *command)
{
    (void)ud;
    FILE *tty = fopen("/dev/tty", "r+");
    if (!tty)
        return false;
    fprintf(tty, "ctx tool: run %s ? [y/N] ", command);
    fflush(tty);
    char line[64] = "";
    bool ok = fgets(line, sizeof line, tty) && (line[0] == 'y' || line[0] == 'Y');
    fclose(tty);
    return ok;
}

int ctx_cmd_tool(int argc, char **argv, const struct ctx_cli *cli)
{
    const char *path = NULL, *name = NULL, *args = NULL, *policy_path = NULL, *mode = "ask";
    bool json = cli->json;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            json = true;
        else if (strcmp(argv[i], "--repo") == 0 && i + 1 < argc)
            path = argv[++i];
        else if (strcmp(argv[i], "--policy") == 0 && i + 1 < argc)
            policy_path = argv[++i];
        else if (strcmp(argv[i], "--mode") == 0 && i + 1 < argc)
            mode = argv[++i];
        else if (strcmp(argv[i], "--list") == 0) {
            printf("%s\n", agent_tools_schema_text());
            return 0;
        } else if (strcmp(argv[i], "--help") == 0) {
            printf("usage: ctx tool NAME [JSON-ARGS] [--repo PATH] [--mode ask|review] [--policy FILE] [--json]\n"
                   "       ctx tool --list\n"
                   "Run one agent tool (read_file, list_dir, search, find_symbol, find_references, edit_file,\n"
                   "write_file, apply_patch, run_command, run_tests, git_status, git_diff) on the repository\n"
                   "containing PATH (default: the current directory), with the same confinement, caps and\n"
                   "command policy as the agent (commands the policy asks about are asked on the terminal).\n"
                   "JSON-ARGS is the call's arguments object (default {}); --list prints the schemas.\n"
                   "Prints the result text the model would see. Exit: 0 ok, 1 the tool reported an error, 2 usage.\n");
            return 0;
        } else if (argv[i][0] != '-' && !name)
            name = argv[i];
        else if (argv[i][0] != '-' && !args)
            args = argv[i];
        else {
            fprintf(stderr, "ctx tool: unexpected argument \"%s\"\n", argv[i]);
            return 2;
        }
    }
    if (!name) {
        fprintf(stderr, "ctx tool: a tool name is required (ctx tool --list shows them)\n");
        return 2;
    }
    enum agent_mode m;
    if (strcmp(mode, "ask") == 0)
        m = AGENT_MODE_INTERACTIVE;
    else if (strcmp(mode, "review") == 0)
        m = AGENT_MODE_REVIEW;
    else {
        fprintf(stderr, "ctx tool: --mode is ask or review\n");
        return 2;
    }
    char root[PATH_MAX];
    struct ctx_err e = {0};
    if (repo_work_tree(path ? path : ".", root, sizeof root, &e)) {
        fprintf(stderr, "ctx tool: %s\n", e.msg);
        return 1;
    }
    struct agent_policy *policy = NULL;
    if (policy_path && agent_policy_load(policy_path, &policy, &e)) {
        fprintf(stderr, "ctx tool: %s\n", e.msg);
        return 1;
    }
    /* Edits are recorded like an agent turn, so `ctx undo` takes them back too. */
    struct agent_undo *undo = NULL;
    char label[160];
    snprintf(label, sizeof label, "ctx tool %s", name);
    if (m == AGENT_MODE_INTERACTIVE && !agent_tool_is_read_only(name) &&
        (agent_undo_open(root, &undo, &e) || agent_undo_begin(undo, label, &e))) {
        fprintf(stderr, "ctx tool: warning: edits are not recorded for undo: %s\n", e.msg);
        agent_undo_free(undo);
        undo = NULL;
        e = (struct ctx_err){0};
    }
    struct agent_tools_config tc = {.root = root, .mode = m, .policy = policy, .ask = ask_tty, .undo = undo};
    struct agent_tools *t = NULL;
    struct agent_tool_result res = {0};
    int rc = agent_tools_new(&tc, &t, &e);
    if (!rc)
        rc = agent_tools_call(t, name, args ? args : "{}", &res, &e);
    agent_tools_free(t);
    if (undo) {
        unsigned seq = 0;
        struct ctx_err ue = {0};
        if (agent_undo_commit(undo, &seq, &ue))
            fprintf(stderr, "ctx tool: warning: recording for undo: %s\n", ue.msg);
        agent_undo_free(undo);
    }
    agent_policy_free(policy);
    if (rc) {
        fprintf(stderr, "ctx tool: %s\n", e.msg);
        return 1;
    }
    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "tool", name);
        cJSON_AddStringToObject(o, "text", res.text);
        cJSON_AddBoolToObject(o, "is_error", res.is_error);
        cJSON_AddBoolToObject(o, "changed", res.changed);
        ctx_cli_print_json(o);
        cJSON_Delete(o);
    } else {
        fwrite(res.text, 1, res.len, res.is_error ? stderr : stdout);
        if (res.len && res.text[res.len - 1] != '\n')
            fputc('\n', res.is_error ? stderr : stdout);
    }
    int status = res.is_error ? 1 : 0;
    agent_tool_result_free(&res);
    return status;
}
