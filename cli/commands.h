/* The ctx subcommands. Each lives in its own cli/cmd_*.c, is declared here and registered in the
 * table in cli/main.c. argv[0] is the subcommand's name; options follow. Each returns the process
 * exit status (0 success, 1 failure, 2 usage error). Every command accepts --json where it prints
 * data, and writes errors to stderr as "ctx NAME: message". */
#ifndef CTX_CLI_COMMANDS_H
#define CTX_CLI_COMMANDS_H

#include <stdbool.h>

struct ctx_cli {
    const char *socket_path; /* --socket, or the default under $XDG_RUNTIME_DIR/ctxd/ */
    const char *ctxd_path;   /* the ctxd binary to start on demand */
    bool json;               /* --json given before the subcommand */
};

int ctx_cmd_status(int argc, char **argv, const struct ctx_cli *cli);
int ctx_cmd_ping(int argc, char **argv, const struct ctx_cli *cli);
int ctx_cmd_stop(int argc, char **argv, const struct ctx_cli *cli);
int ctx_cmd_version(int argc, char **argv, const struct ctx_cli *cli);
int ctx_cmd_init(int argc, char **argv, const struct ctx_cli *cli);
int ctx_cmd_ask(int argc, char **argv, const struct ctx_cli *cli);
int ctx_cmd_cache(int argc, char **argv, const struct ctx_cli *cli);
int ctx_chat_repl(int argc, char **argv, const struct ctx_cli *cli);
int ctx_cmd_sessions(int argc, char **argv, const struct ctx_cli *cli);
int ctx_cmd_resume(int argc, char **argv, const struct ctx_cli *cli);
int ctx_cmd_model(int argc, char **argv, const struct ctx_cli *cli);
int ctx_cmd_tokenize(int argc, char **argv, const struct ctx_cli *cli);
int ctx_cmd_chat(int argc, char **argv, const struct ctx_cli *cli);
int ctx_model_score(int argc, char **argv, const struct ctx_cli *cli); /* cli/cmd_model_score.c */
int ctx_model_generate(int argc, char **argv, const struct ctx_cli *cli); /* cli/cmd_model_generate.c */
int ctx_cmd_repo(int argc, char **argv, const struct ctx_cli *cli); /* needs CTX_HAVE_REPO */
int ctx_cmd_lsp(int argc, char **argv, const struct ctx_cli *cli);  /* needs CTX_HAVE_REPO */
int ctx_cmd_hook(int argc, char **argv, const struct ctx_cli *cli); /* cli/cmd_hook.c: git pre-commit hook */
int ctx_cmd_review(int argc, char **argv, const struct ctx_cli *cli);  /* needs CTX_HAVE_REPO */
int ctx_cmd_suggest(int argc, char **argv, const struct ctx_cli *cli); /* needs CTX_HAVE_REPO */
int ctx_cmd_undo(int argc, char **argv, const struct ctx_cli *cli);
int ctx_cmd_complete(int argc, char **argv, const struct ctx_cli *cli);
int ctx_cmd_tool(int argc, char **argv, const struct ctx_cli *cli);    /* needs CTX_HAVE_REPO */
/* cli/cmd_ask.c: agent.run with `params` (taken; "path" required), events shown as they come;
 * *result gets the reply. 0, or 1 after printing "ctx NAME: message". */
struct cJSON;
int ctx_cli_agent_run(const struct ctx_cli *cli, const char *name, struct cJSON *params, bool json,
                      bool stream_answer, bool yes, struct cJSON **result);
void ctx_cli_agent_summary(const char *name, const struct cJSON *result);
/* The options every agent command takes: --repo PATH, --max-steps N, --max-tokens N, --json. */
struct ctx_cli_agent_opts {
    const char *path; /* NULL: the current directory */
    long max_steps, max_tokens;
    bool json;
};
/* argv[*i] is one of them: 1 (*i moved past its value), 0 not one of them, -1 a bad value (printed as
 * "ctx CMD: ..."; exit 2). */
int ctx_cli_agent_opt(const char *cmd, int argc, char **argv, int *i, struct ctx_cli_agent_opts *o);
/* agent.run params {path, mode, max_steps?, max_tokens?} from them (the caller adds the rest). */
struct cJSON *ctx_cli_agent_params(const struct ctx_cli_agent_opts *o, const char *mode);

#endif
