/* ctx init [PATH] and ctx ask "REQUEST": make a repository resident; run the agent on it (agent.run) or
 * ask a plain question (--no-tools, repo.ask). ctx_cli_agent_run is shared with review/suggest. */
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
        else if (strcmp(argv[i], "--budget") == 0 && i + 1 < argc) {
            if (!ctx_cli_long("init", "--budget", argv[++i], 0, LONG_MAX, &budget)) {
                return 2;
            }
        } else if (strcmp(argv[i], "--help") == 0) {
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

static int plain_ask(int argc, char **argv, const struct ctx_cli *cli)
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
        else if (strcmp(argv[i], "--max-tokens") == 0 && i + 1 < argc) {
            if (!ctx_cli_long("ask", "--max-tokens", argv[++i], 0, LONG_MAX, &max_tokens)) {
                return 2;
            }
        } else if (strcmp(argv[i], "--temperature") == 0 && i + 1 < argc) {
            if (!ctx_cli_double("ask", "--temperature", argv[++i], 0, 100, &temperature)) {
                return 2;
            }
        } else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc) {
            if (!ctx_cli_long("ask", "--seed", argv[++i], 0, LONG_MAX, &seed)) {
                return 2;
            }
        } else if (strcmp(argv[i], "--chat") == 0)
            mode = "chat";
        else if (strcmp(argv[i], "--no-tools") == 0)
            continue;
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
            fprintf(stderr, "-- the model has random weights (--synthetic): this answer is noise\n");
    }
    cJSON_Delete(r);
    return 0;
}

/* ---- the agent (agent.run) ---------------------------------------------------------------- */

struct agent_view {
    const struct ctx_cli *cli;
    const char *name;
    bool json, tty_out, tty_err, stream_answer, yes;
    int in_reasoning, wrote;
    struct ctxd_client *answer_conn; /* a second connection for agent.answer (the first waits) */
};

/* One line of at most `max` bytes of s (up to its first newline), for event lines. */
static void put_line(FILE *f, const char *s, size_t max)
{
    size_t n = strcspn(s, "\n");
    if (n > max) {
        fprintf(f, "%.*s…", (int)max, s);
        return;
    }
    fprintf(f, "%.*s", (int)n, s);
    if (s[n] && s[n + 1])
        fputs(" …", f);
}

static bool ask_user(struct agent_view *v, const char *command)
{
    if (v->yes)
        return true;
    FILE *tty = fopen("/dev/tty", "r+");
    if (!tty) {
        fprintf(stderr, "ctx %s: refused command (no terminal to ask; --yes approves): %s\n", v->name, command);
        return false;
    }
    fprintf(tty, "\nctx %s: the agent wants to run:\n    %s\nallow? [y/N] ", v->name, command);
    fflush(tty);
    char line[64] = "";
    bool ok = fgets(line, sizeof line, tty) && (line[0] == 'y' || line[0] == 'Y');
    fclose(tty);
    return ok;
}

static int on_agent_note(void *ud, const char *method, const cJSON *params)
{
    struct agent_view *v = ud;
    if (strcmp(method, "agent.approve") == 0) {
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(params, "approval");
        const cJSON *cmd = cJSON_GetObjectItemCaseSensitive(params, "command");
        if (v->json) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "event", method);
            cJSON_AddItemToObject(o, "params", cJSON_Duplicate(params, 1));
            ctx_cli_print_json(o);
            cJSON_Delete(o);
            fflush(stdout);
        }
        if (!cJSON_IsNumber(n) || !cJSON_IsString(cmd))
            return 0;
        bool allow = ask_user(v, cmd->valuestring);
        if (!v->answer_conn)
            v->answer_conn = ctx_cli_connect(v->cli, v->name, false);
        if (!v->answer_conn)
            return 0; /* unanswered: the daemon refuses after its timeout */
        cJSON *p = cJSON_CreateObject(), *r = NULL;
        cJSON_AddNumberToObject(p, "approval", n->valuedouble);
        cJSON_AddBoolToObject(p, "allow", allow);
        struct ctx_err e = {0};
        if (ctxd_client_call(v->answer_conn, "agent.answer", p, NULL, NULL, 10000, &r, &e))
            fprintf(stderr, "ctx %s: answering the approval: %s\n", v->name, e.msg);
        cJSON_Delete(r);
        return 0;
    }
    if (strcmp(method, "agent.event") != 0)
        return on_note(ud, method, params); /* repo.progress while it becomes resident */
    if (v->json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "event", method);
        cJSON_AddItemToObject(o, "params", cJSON_Duplicate(params, 1));
        ctx_cli_print_json(o);
        cJSON_Delete(o);
        fflush(stdout);
        return 0;
    }
    const cJSON *kind = cJSON_GetObjectItemCaseSensitive(params, "kind");
    const cJSON *text = cJSON_GetObjectItemCaseSensitive(params, "text");
    const cJSON *tool = cJSON_GetObjectItemCaseSensitive(params, "tool");
    if (!cJSON_IsString(kind))
        return 0;
    const char *k = kind->valuestring;
    const char *t = cJSON_IsString(text) ? text->valuestring : "";
    FILE *out = v->stream_answer ? stdout : stderr;
    bool tty = v->stream_answer ? v->tty_out : v->tty_err;
    if (strcmp(k, "reasoning") == 0) {
        if (!tty)
            return 0; /* reasoning only on a terminal */
        if (!v->in_reasoning)
            fputs("\033[2m", out);
        v->in_reasoning = 1;
        fputs(t, out);
        fflush(out);
        return 0;
    }
    if (v->in_reasoning) {
        fputs("\033[0m\n", out);
        fflush(out);
        v->in_reasoning = 0;
    }
    if (strcmp(k, "content") == 0) {
        if (!v->stream_answer && !tty)
            return 0;
        fputs(t, out);
        fflush(out);
        v->wrote = 1;
    } else if (strcmp(k, "tool_call") == 0) {
        char *args = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(params, "arguments"));
        if (v->wrote)
            fputc('\n', out), fflush(out), v->wrote = 0;
        fprintf(stderr, "%s> %s ", v->tty_err ? "\033[36m" : "", cJSON_IsString(tool) ? tool->valuestring : "?");
        put_line(stderr, args ? args : "{}", 160);
        fputs(v->tty_err ? "\033[0m\n" : "\n", stderr);
        free(args);
    } else if (strcmp(k, "tool_result") == 0) {
        bool err = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(params, "is_error"));
        size_t lines = 0;
        for (const char *p = t; *p; p++)
            lines += *p == '\n';
        fprintf(stderr, "  %s ", err ? "error:" : "ok:");
        put_line(stderr, strncmp(t, "error: ", 7) == 0 ? t + 7 : t, 120);
        if (lines > 1)
            fprintf(stderr, " (%zu lines)", lines);
        fputc('\n', stderr);
    } else if (strcmp(k, "malformed") == 0) {
        fprintf(stderr, "  the model's reply could not be parsed (handed back to it): ");
        put_line(stderr, t, 160);
        fputc('\n', stderr);
    }
    fflush(stderr);
    return 0;
}

int ctx_cli_agent_run(const struct ctx_cli *cli, const char *name, cJSON *params, bool json, bool stream_answer,
                      bool yes, cJSON **result)
{
    *result = NULL;
    struct ctxd_client *c = ctx_cli_connect(cli, name, true);
    if (!c) {
        cJSON_Delete(params);
        return 1;
    }
    struct agent_view v = {.cli = cli, .name = name, .json = json, .tty_out = isatty(1), .tty_err = isatty(2),
                           .stream_answer = stream_answer, .yes = yes};
    struct ctx_err e = {0};
    /* Resident first, with progress, so that a cold start is not a silent wait. */
    cJSON *op = cJSON_CreateObject(), *r = NULL;
    cJSON_AddStringToObject(op, "path", cJSON_GetObjectItemCaseSensitive(params, "path")->valuestring);
    cJSON_AddBoolToObject(op, "wait", true);
    struct view pv = {.json = json, .tty = isatty(2)};
    int rc = ctxd_client_call(c, "repo.open", op, on_note, &pv, 0, &r, &e);
    if (pv.tty && !json)
        fputs("\r\033[K", stderr);
    cJSON_Delete(r);
    r = NULL;
    if (!rc)
        rc = ctxd_client_call(c, "agent.run", params, on_agent_note, &v, 0, &r, &e);
    else
        cJSON_Delete(params);
    ctxd_client_close(c);
    if (v.answer_conn)
        ctxd_client_close(v.answer_conn);
    if (v.in_reasoning)
        fputs("\033[0m", stream_answer ? stdout : stderr);
    if (v.wrote)
        fputc('\n', stream_answer ? stdout : stderr);
    fflush(stdout);
    if (rc) {
        fprintf(stderr, "ctx %s: %s\n", name, e.msg);
        return 1;
    }
    *result = r;
    return 0;
}

/* A one-line summary of an agent result on stderr. */
void ctx_cli_agent_summary(const char *name, const cJSON *r)
{
    const cJSON *stop = cJSON_GetObjectItemCaseSensitive(r, "stop");
    const cJSON *steps = cJSON_GetObjectItemCaseSensitive(r, "steps");
    const cJSON *u = cJSON_GetObjectItemCaseSensitive(r, "usage");
    const cJSON *pt = cJSON_GetObjectItemCaseSensitive(u, "prompt_tokens");
    const cJSON *ct = cJSON_GetObjectItemCaseSensitive(u, "completion_tokens");
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(r, "error");
    fprintf(stderr, "-- %s: %s after %d step(s); %.0f new prompt tokens, %.0f generated\n", name,
            cJSON_IsString(stop) ? stop->valuestring : "?", cJSON_IsNumber(steps) ? steps->valueint : 0,
            cJSON_IsNumber(pt) ? pt->valuedouble : 0, cJSON_IsNumber(ct) ? ct->valuedouble : 0);
    if (cJSON_IsString(err))
        fprintf(stderr, "-- %s: %s\n", name, err->valuestring);
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "noise")))
        fprintf(stderr, "-- the model has random weights (--synthetic): its output is noise\n");
}

int ctx_cli_agent_opt(const char *cmd, int argc, char **argv, int *i, struct ctx_cli_agent_opts *o)
{
    const char *a = argv[*i];
    if (strcmp(a, "--json") == 0) {
        o->json = true;
        return 1;
    }
    bool has_value = *i + 1 < argc;
    if (strcmp(a, "--repo") == 0 && has_value) {
        o->path = argv[++*i];
        return 1;
    }
    long *n = strcmp(a, "--max-steps") == 0 ? &o->max_steps : strcmp(a, "--max-tokens") == 0 ? &o->max_tokens : NULL;
    if (!n || !has_value)
        return 0;
    return ctx_cli_long(cmd, a, argv[++*i], 0, LONG_MAX, n) ? 1 : -1;
}

cJSON *ctx_cli_agent_params(const struct ctx_cli_agent_opts *o, const char *mode)
{
    char cwd[PATH_MAX];
    cJSON *params = cJSON_CreateObject();
    cJSON_AddStringToObject(params, "path", path_arg(o->path, cwd));
    cJSON_AddStringToObject(params, "mode", mode);
    if (o->max_steps > 0)
        cJSON_AddNumberToObject(params, "max_steps", (double)o->max_steps);
    if (o->max_tokens > 0)
        cJSON_AddNumberToObject(params, "max_tokens", (double)o->max_tokens);
    return params;
}

int ctx_cmd_ask(int argc, char **argv, const struct ctx_cli *cli)
{
    const char *prompt = NULL;
    struct ctx_cli_agent_opts o = {.json = cli->json};
    bool yes = false, thinking = true;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--no-tools") == 0 || strcmp(argv[i], "--temperature") == 0 ||
            strcmp(argv[i], "--seed") == 0)
            return plain_ask(argc, argv, cli);
    }
    for (int i = 1; i < argc; i++) {
        int k = ctx_cli_agent_opt("ask", argc, argv, &i, &o);
        if (k < 0)
            return 2;
        if (k > 0)
            continue;
        if (strcmp(argv[i], "--yes") == 0)
            yes = true;
        else if (strcmp(argv[i], "--chat") == 0)
            thinking = false;
        else if (strcmp(argv[i], "--help") == 0) {
            printf("usage: ctx ask [--repo PATH] [--max-steps N] [--max-tokens N] [--chat] [--yes] [--json] \"REQUEST\"\n"
                   "       ctx ask --no-tools [--temperature T] [--seed N] ... \"QUESTION\"\n"
                   "The agent works on the repository containing PATH (default: the current directory): it reads,\n"
                   "searches and edits files and runs commands (as the command policy allows; --yes approves the\n"
                   "commands the policy would ask about). Tool calls are shown one line each on stderr, the answer\n"
                   "streams on stdout. `ctx undo` takes its edits back. --no-tools: a plain answer (repo.ask).\n"
                   "Exit: 0 final answer, 1 stopped otherwise (step limit, token budget, cancelled, error), 2 usage.\n");
            return 0;
        } else if (argv[i][0] != '-' && !prompt)
            prompt = argv[i];
        else {
            fprintf(stderr, "ctx ask: unexpected argument \"%s\"\n", argv[i]);
            return 2;
        }
    }
    if (!prompt) {
        fprintf(stderr, "ctx ask: a request is required\n");
        return 2;
    }
    cJSON *params = ctx_cli_agent_params(&o, "ask"), *r = NULL;
    cJSON_AddStringToObject(params, "prompt", prompt);
    cJSON_AddBoolToObject(params, "thinking", thinking);
    bool json = o.json;
    if (ctx_cli_agent_run(cli, "ask", params, json, true, yes, &r))
        return 1;
    const cJSON *stop = cJSON_GetObjectItemCaseSensitive(r, "stop");
    int final = cJSON_IsString(stop) && strcmp(stop->valuestring, "final") == 0;
    if (json) {
        ctx_cli_print_json(r);
    } else {
        const cJSON *ch = cJSON_GetObjectItemCaseSensitive(r, "changed");
        if (cJSON_GetArraySize(ch) > 0) {
            fprintf(stderr, "-- changed:");
            const cJSON *p;
            cJSON_ArrayForEach(p, ch) fprintf(stderr, " %s", p->valuestring);
            fprintf(stderr, " (ctx undo takes it back)\n");
        }
        ctx_cli_agent_summary("ask", r);
    }
    cJSON_Delete(r);
    return final ? 0 : 1;
}
