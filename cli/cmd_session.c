/* ctx chat (the conversation), ctx sessions, ctx resume ID: conversations kept by ctxd. */
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

#ifdef CTX_HAVE_LIBEDIT
#include <editline/readline.h>
#endif

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

struct view {
    bool json, tty;
    int in_reasoning, wrote;
    const struct ctx_cli *cli;
    struct ctxd_client *answer_conn; /* agent.answer goes on a second connection */
};

/* A turn runs the agent: a command its policy asks about is asked on the terminal (refused
 * without one), and answered with agent.answer. */
static void approve(struct view *v, const cJSON *params)
{
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(params, "approval");
    const cJSON *cmd = cJSON_GetObjectItemCaseSensitive(params, "command");
    if (!cJSON_IsNumber(n) || !cJSON_IsString(cmd))
        return;
    bool allow = false;
    FILE *tty = fopen("/dev/tty", "r+");
    if (tty) {
        fprintf(tty, "\nctx chat: the agent wants to run:\n    %s\nallow? [y/N] ", cmd->valuestring);
        fflush(tty);
        char line[64] = "";
        allow = fgets(line, sizeof line, tty) && (line[0] == 'y' || line[0] == 'Y');
        fclose(tty);
    } else {
        fprintf(stderr, "ctx chat: refused command (no terminal to ask): %s\n", cmd->valuestring);
    }
    if (!v->answer_conn && !(v->answer_conn = ctx_cli_connect(v->cli, "chat", false)))
        return;
    cJSON *p = cJSON_CreateObject(), *r = NULL;
    cJSON_AddNumberToObject(p, "approval", n->valuedouble);
    cJSON_AddBoolToObject(p, "allow", allow);
    struct ctx_err e = {0};
    if (ctxd_client_call(v->answer_conn, "agent.answer", p, NULL, NULL, 10000, &r, &e))
        fprintf(stderr, "ctx chat: answering the approval: %s\n", e.msg);
    cJSON_Delete(r);
}

static int on_note(void *ud, const char *method, const cJSON *params)
{
    struct view *v = ud;
    if (interrupted)
        return 1; /* stop waiting: the answer is cancelled below */
    if (v->json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "event", method);
        cJSON_AddItemToObject(o, "params", cJSON_Duplicate(params, 1));
        ctx_cli_print_json(o);
        cJSON_Delete(o);
        fflush(stdout);
        if (strcmp(method, "agent.approve") == 0)
            approve(v, params);
        return 0;
    }
    if (strcmp(method, "agent.approve") == 0) {
        approve(v, params);
        return 0;
    }
    if (strcmp(method, "agent.event") == 0) {
        /* the agent's tool calls, one line each on stderr */
        const cJSON *kind = cJSON_GetObjectItemCaseSensitive(params, "kind");
        const cJSON *tool = cJSON_GetObjectItemCaseSensitive(params, "tool");
        if (cJSON_IsString(kind) && cJSON_IsString(tool) && strcmp(kind->valuestring, "tool_call") == 0) {
            char *args = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(params, "arguments"));
            if (v->wrote)
                fputc('\n', stdout), fflush(stdout), v->wrote = 0;
            fprintf(stderr, "> %s %.160s\n", tool->valuestring, args ? args : "{}");
            free(args);
        } else if (cJSON_IsString(kind) && strcmp(kind->valuestring, "tool_result") == 0 &&
                   cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(params, "is_error"))) {
            const cJSON *t = cJSON_GetObjectItemCaseSensitive(params, "text");
            fprintf(stderr, "  %.*s\n", cJSON_IsString(t) ? (int)strcspn(t->valuestring, "\n") : 0,
                    cJSON_IsString(t) ? t->valuestring : "");
        }
        return 0;
    }
    if (strcmp(method, "ask.delta") != 0)
        return 0;
    const cJSON *kind = cJSON_GetObjectItemCaseSensitive(params, "kind");
    const cJSON *text = cJSON_GetObjectItemCaseSensitive(params, "text");
    if (!cJSON_IsString(kind) || !cJSON_IsString(text))
        return 0;
    int reasoning = strcmp(kind->valuestring, "reasoning") == 0;
    if (reasoning && !v->in_reasoning) {
        fputs(v->tty ? "\033[2m" : "[reasoning] ", stdout);
        v->in_reasoning = 1;
    } else if (!reasoning && v->in_reasoning) {
        fputs(v->tty ? "\033[0m\n" : "\n[answer] ", stdout);
        v->in_reasoning = 0;
    }
    fputs(text->valuestring, stdout);
    fflush(stdout);
    v->wrote = 1;
    return 0;
}

static cJSON *simple(const struct ctx_cli *cli, const char *cmd, const char *method, cJSON *params)
{
    struct ctxd_client *c = ctx_cli_connect(cli, cmd, true);
    if (!c) {
        cJSON_Delete(params);
        return NULL;
    }
    struct ctx_err e = {0};
    cJSON *r = NULL;
    if (ctxd_client_call(c, method, params, NULL, NULL, 60000, &r, &e))
        fprintf(stderr, "ctx %s: %s\n", cmd, e.msg);
    ctxd_client_close(c);
    return r;
}

static void print_sessions(const cJSON *list, bool json)
{
    if (json) {
        ctx_cli_print_json(list);
        return;
    }
    const cJSON *s;
    cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(list, "sessions")) {
        time_t t = (time_t)cJSON_GetObjectItem(s, "updated")->valuedouble;
        char when[32];
        strftime(when, sizeof when, "%Y-%m-%d %H:%M", localtime(&t));
        printf("%s  %s  %3d messages  %s  %s\n", cJSON_GetObjectItem(s, "id")->valuestring, when,
               cJSON_GetObjectItem(s, "n_messages")->valueint, cJSON_GetObjectItem(s, "repo_root")->valuestring,
               cJSON_GetObjectItem(s, "title")->valuestring);
    }
}

/* One turn: send, stream, print the summary. Ctrl-C cancels it (session.cancel). */
static int turn(const struct ctx_cli *cli, const char *id, const char *text, int max_tokens, bool json)
{
    struct ctxd_client *c = ctx_cli_connect(cli, "chat", true);
    if (!c)
        return -1;
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "id", id);
    cJSON_AddStringToObject(p, "message", text);
    if (max_tokens > 0)
        cJSON_AddNumberToObject(p, "max_tokens", max_tokens);
    struct view v = {.json = json, .tty = isatty(1), .cli = cli};
    struct ctx_err e = {0};
    cJSON *r = NULL;
    interrupted = 0;
    int rc = ctxd_client_call(c, "session.send", p, on_note, &v, 0, &r, &e);
    ctxd_client_close(c); /* leaving also cancels a running answer */
    if (v.answer_conn)
        ctxd_client_close(v.answer_conn);
    if (v.in_reasoning && v.tty)
        fputs("\033[0m", stdout);
    if (v.wrote)
        fputc('\n', stdout);
    fflush(stdout);
    if (rc == CTX_ECANCELED && interrupted) {
        cJSON *cp = cJSON_CreateObject();
        cJSON_AddStringToObject(cp, "id", id);
        cJSON_Delete(simple(cli, "chat", "session.cancel", cp));
        fprintf(stderr, "-- cancelled\n");
        interrupted = 0;
        return 0;
    }
    if (rc) {
        fprintf(stderr, "ctx chat: %s\n", e.msg);
        return -1;
    }
    if (json) {
        ctx_cli_print_json(r);
    } else {
        const cJSON *u = cJSON_GetObjectItemCaseSensitive(r, "usage");
        fprintf(stderr, "-- %s; %.0f prompt tokens (%.0f resident), %.0f generated%s\n",
                cJSON_GetObjectItem(r, "finish_reason")->valuestring,
                cJSON_GetObjectItem(u, "prompt_tokens")->valuedouble, cJSON_GetObjectItem(u, "cached_tokens")->valuedouble,
                cJSON_GetObjectItem(u, "generated_tokens")->valuedouble,
                cJSON_IsTrue(cJSON_GetObjectItem(r, "noise")) ? " (synthetic model: noise)" : "");
    }
    cJSON_Delete(r);
    return 0;
}

static int repl(const struct ctx_cli *cli, const char *repo, const char *id_in, bool chat_mode, int max_tokens,
                bool json)
{
    char id[64] = "";
    if (id_in) {
        snprintf(id, sizeof id, "%s", id_in);
        cJSON *p = cJSON_CreateObject();
        cJSON_AddStringToObject(p, "id", id);
        cJSON *s = simple(cli, "chat", "session.resume", p);
        if (!s)
            return 1;
        if (!json)
            fprintf(stderr, "resuming %s (%d messages) on %s\n", id,
                    cJSON_GetArraySize(cJSON_GetObjectItem(s, "messages")),
                    cJSON_GetObjectItem(s, "repo_root")->valuestring);
        cJSON_Delete(s);
    }
    struct sigaction sa = {.sa_handler = on_sigint}, dfl = {.sa_handler = SIG_DFL};
    bool tty = isatty(0);
    char line[65536];
#ifdef CTX_HAVE_LIBEDIT
    char hist[PATH_MAX] = "";
    bool edit = tty && !json;
    if (edit) {
        const char *home = getenv("HOME");
        if (home)
            snprintf(hist, sizeof hist, "%s/.ctx_chat_history", home);
        using_history();
        if (hist[0])
            read_history(hist);
    }
#endif
    for (;;) {
        sigaction(SIGINT, &dfl, NULL); /* at the prompt Ctrl-C leaves; during an answer it cancels it */
#ifdef CTX_HAVE_LIBEDIT
        if (edit) {
            char *in = readline("> ");
            if (!in)
                break;
            snprintf(line, sizeof line, "%s", in);
            if (in[0]) {
                add_history(in);
                if (hist[0])
                    write_history(hist);
            }
            free(in);
            sigaction(SIGINT, &sa, NULL);
            goto have_line;
        }
#endif
        if (tty && !json) {
            fputs("> ", stdout);
            fflush(stdout);
        }
        sigaction(SIGINT, &sa, NULL);
        if (!fgets(line, sizeof line, stdin)) {
            if (interrupted && tty) { /* Ctrl-C at the prompt: a new line, go on */
                interrupted = 0;
                clearerr(stdin);
                fputc('\n', stdout);
                continue;
            }
            break;
        }
        line[strcspn(line, "\n")] = 0;
#ifdef CTX_HAVE_LIBEDIT
    have_line:
#endif
        if (!line[0])
            continue;
        if (line[0] == '/') {
            if (!strcmp(line, "/quit") || !strcmp(line, "/exit"))
                break;
            if (!strcmp(line, "/help")) {
                printf("/new: a new conversation; /sessions: this repository's conversations; /id: this one's id;"
                       " /quit\n");
            } else if (!strcmp(line, "/new")) {
                id[0] = 0;
                printf("-- a new conversation starts with the next message\n");
            } else if (!strcmp(line, "/id")) {
                printf("%s\n", id[0] ? id : "(none yet)");
            } else if (!strcmp(line, "/sessions")) {
                cJSON *p = cJSON_CreateObject();
                cJSON_AddStringToObject(p, "path", repo);
                cJSON *l = simple(cli, "chat", "session.list", p);
                if (l)
                    print_sessions(l, json);
                cJSON_Delete(l);
            } else {
                fprintf(stderr, "ctx chat: unknown command %s (/help)\n", line);
            }
            fflush(stdout);
            continue;
        }
        if (!id[0]) {
            cJSON *p = cJSON_CreateObject();
            cJSON_AddStringToObject(p, "path", repo);
            cJSON_AddStringToObject(p, "mode", chat_mode ? "chat" : "thinking");
            cJSON *s = simple(cli, "chat", "session.create", p);
            if (!s)
                return 1;
            snprintf(id, sizeof id, "%s", cJSON_GetObjectItem(s, "id")->valuestring);
            if (json)
                ctx_cli_print_json(s);
            else
                fprintf(stderr, "-- session %s (ctx resume %s continues it)\n", id, id);
            cJSON_Delete(s);
        }
        if (turn(cli, id, line, max_tokens, json))
            return 1;
    }
    return 0;
}

static int parse_common(int argc, char **argv, int first, const char **repo, const char **session, bool *chat_mode,
                        int *max_tokens, bool *json, const char *cmd)
{
    for (int i = first; i < argc; i++) {
        if (!strcmp(argv[i], "--json"))
            *json = true;
        else if (!strcmp(argv[i], "--repo") && i + 1 < argc)
            *repo = argv[++i];
        else if (!strcmp(argv[i], "--session") && session && i + 1 < argc)
            *session = argv[++i];
        else if (!strcmp(argv[i], "--chat") && chat_mode)
            *chat_mode = true;
        else if (!strcmp(argv[i], "--max-tokens") && max_tokens && i + 1 < argc)
            *max_tokens = atoi(argv[++i]);
        else {
            fprintf(stderr, "ctx %s: unexpected argument \"%s\"\n", cmd, argv[i]);
            return 2;
        }
    }
    return 0;
}

int ctx_chat_repl(int argc, char **argv, const struct ctx_cli *cli)
{
    const char *repo = NULL, *session = NULL;
    bool chat_mode = false, json = cli->json;
    int max_tokens = 0;
    int rc = parse_common(argc, argv, 1, &repo, &session, &chat_mode, &max_tokens, &json, "chat");
    if (rc)
        return rc;
    char cwd[PATH_MAX];
    if (!repo)
        repo = getcwd(cwd, sizeof cwd) ? cwd : ".";
    return repl(cli, repo, session, chat_mode, max_tokens, json);
}

int ctx_cmd_resume(int argc, char **argv, const struct ctx_cli *cli)
{
    if (argc < 2 || argv[1][0] == '-') {
        fprintf(stderr, "usage: ctx resume ID [--max-tokens N] [--json]\n");
        return 2;
    }
    const char *repo = NULL;
    bool json = cli->json;
    int max_tokens = 0;
    int rc = parse_common(argc, argv, 2, &repo, NULL, NULL, &max_tokens, &json, "resume");
    if (rc)
        return rc;
    char cwd[PATH_MAX];
    if (!repo)
        repo = getcwd(cwd, sizeof cwd) ? cwd : ".";
    return repl(cli, repo, argv[1], false, max_tokens, json);
}

int ctx_cmd_sessions(int argc, char **argv, const struct ctx_cli *cli)
{
    const char *repo = NULL;
    bool json = cli->json;
    int rc = parse_common(argc, argv, 1, &repo, NULL, NULL, NULL, &json, "sessions");
    if (rc)
        return rc;
    cJSON *p = cJSON_CreateObject();
    if (repo)
        cJSON_AddStringToObject(p, "path", repo);
    cJSON *l = simple(cli, "sessions", "session.list", p);
    if (!l)
        return 1;
    print_sessions(l, json);
    cJSON_Delete(l);
    return 0;
}
