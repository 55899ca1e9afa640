/* ctx: the command-line client. Global options come before the subcommand. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client.h"
#include "commands.h"
#include "ctx_config.h"

struct command {
    const char *name;
    int (*fn)(int argc, char **argv, const struct ctx_cli *cli);
    const char *help;
};

static const struct command commands[] = {
    {"status", ctx_cmd_status, "show the daemon's state (starts ctxd if none runs)"},
    {"ping", ctx_cmd_ping, "check that ctxd answers (starts ctxd if none runs)"},
    {"hook", ctx_cmd_hook, "git pre-commit hook: install|uninstall|status|run (reviews staged changes)"},
    {"stop", ctx_cmd_stop, "stop the running ctxd"},
    {"version", ctx_cmd_version, "print the version"},
    {"init", ctx_cmd_init, "make a repository resident (ingest and prefill), with progress"},
    {"ask", ctx_cmd_ask, "the agent answers or acts on a repository, calling tools (--no-tools: a plain answer)"},
    {"cache", ctx_cmd_cache, "the resident KV cache on disk: status, clear"},
    {"sessions", ctx_cmd_sessions, "list conversations (of a repository with --repo)"},
    {"resume", ctx_cmd_resume, "continue a conversation: ctx resume ID"},
    {"undo", ctx_cmd_undo, "take back the agent's last turn of edits (ctx ask)"},
    {"complete", ctx_cmd_complete, "fill-in-the-middle completion at FILE LINE:COL (inline completion)"},
    {"model", ctx_cmd_model, "model info / model score: the in-process engine (no daemon)"},
    {"tokenize", ctx_cmd_tokenize, "text to token ids and back with a tokenizer.json (no daemon)"},
    {"chat", ctx_cmd_chat, "a conversation about the repository; chat encode|parse: the DSML format"},
#if CTX_HAVE_REPO
    {"repo", ctx_cmd_repo, "repository ingestion: prompt layout, symbols (no daemon)"},
    {"lsp", ctx_cmd_lsp, "Language Server on stdio for editors (starts ctxd on demand)"},
    {"review", ctx_cmd_review, "the agent reviews staged changes, a range or files: findings"},
    {"suggest", ctx_cmd_suggest, "the agent proposes a fix as a diff (nothing on disk changes)"},
    {"tool", ctx_cmd_tool, "run one agent tool directly (no model): ctx tool NAME [JSON-ARGS]"},
#endif
};

static void usage(FILE *f)
{
    fprintf(f, "usage: ctx [--json] [--socket PATH] [--ctxd PATH] COMMAND [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].help);
    fprintf(f, "\n'ctx COMMAND --help' describes a command. The daemon's socket: --socket, else $CTX_SOCKET,\n"
               "else $XDG_RUNTIME_DIR/ctxd/ctxd.sock. A ctxd that ctx starts gets the options in $CTXD_FLAGS\n"
               "(e.g. CTXD_FLAGS=\"--backend cuda --gpus 0,1 --model /models/DeepSeek-V4-Flash\").\n");
}

/* ctxd is looked for beside ctx (the build tree or the install prefix), then in ../daemon/ (the
 * build tree's layout), then on PATH. */
static const char *find_ctxd(char *buf, size_t cap)
{
    const char *env = getenv("CTXD_BIN");
    if (env && env[0])
        return env;
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) {
        self[n] = 0;
        char *slash = strrchr(self, '/');
        if (slash) {
            *slash = 0;
            snprintf(buf, cap, "%s/ctxd", self);
            if (access(buf, X_OK) == 0)
                return buf;
            snprintf(buf, cap, "%s/../daemon/ctxd", self);
            if (access(buf, X_OK) == 0)
                return buf;
        }
    }
    const char *path = getenv("PATH");
    while (path && *path) {
        size_t len = strcspn(path, ":");
        snprintf(buf, cap, "%.*s/ctxd", (int)len, path);
        if (len && access(buf, X_OK) == 0)
            return buf;
        path += len + (path[len] == ':');
    }
    return "ctxd";
}

int main(int argc, char **argv)
{
    struct ctx_cli cli = {0};
    char sockbuf[256], ctxdbuf[PATH_MAX + 32];
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            cli.json = true;
        } else if (strcmp(argv[i], "--socket") == 0 && i + 1 < argc) {
            cli.socket_path = argv[++i];
        } else if (strcmp(argv[i], "--ctxd") == 0 && i + 1 < argc) {
            cli.ctxd_path = argv[++i];
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--version") == 0) {
            printf("ctx %s\n", CTX_VERSION);
            return 0;
        } else {
            fprintf(stderr, "ctx: unknown option \"%s\"\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (i >= argc) {
        usage(stderr);
        return 2;
    }
    /* CTX_SOCKET names the daemon for programs that run ctx for the user (git hooks, editors)
     * when the daemon is not the default one. */
    if (!cli.socket_path && getenv("CTX_SOCKET") && getenv("CTX_SOCKET")[0])
        cli.socket_path = getenv("CTX_SOCKET");
    if (!cli.socket_path) {
        struct ctx_err e = {0};
        if (ctxd_default_socket(sockbuf, sizeof sockbuf, &e) != 0) {
            fprintf(stderr, "ctx: %s\n", e.msg);
            return 1;
        }
        cli.socket_path = sockbuf;
    }
    if (!cli.ctxd_path)
        cli.ctxd_path = find_ctxd(ctxdbuf, sizeof ctxdbuf);
    /* --json is also accepted after the subcommand: the commands parse it themselves. */
    for (size_t c = 0; c < sizeof commands / sizeof commands[0]; c++)
        if (strcmp(argv[i], commands[c].name) == 0)
            return commands[c].fn(argc - i, argv + i, &cli);
    fprintf(stderr, "ctx: unknown command \"%s\"\n", argv[i]);
    usage(stderr);
    return 2;
}
