/* ctx chat: the DeepSeek V4 chat format (DSML), in-process (no daemon).
 *   ctx chat encode [--mode thinking|chat] [--effort max|high] [--keep-thinking] [--no-bos]
 *                   [--ids --tokenizer FILE]
 *       stdin: messages JSON (an array, or {"messages", "tools", "thinking_mode",
 *       "reasoning_effort", "drop_thinking"} as in tests/fixtures/dsml) -> the prompt text, or its
 *       token ids as a JSON array with --ids. Flags win over the request's own fields.
 *   ctx chat parse --mode thinking|chat [--tools FILE] [--events] [--json]
 *       stdin: completion text -> the assistant message as JSON. --tools (a JSON array of tools)
 *       makes calls of undeclared tools an error; --events prints every parser event as a JSON
 *       line as stdin arrives. A malformed completion exits 1 with the structured error (on
 *       stdout as {"error": ...} with --json). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "util.h"
#include "dsml.h"
#include "json.h"
#include "tokenizer.h"

static void chat_usage(FILE *f)
{
    fprintf(f,
            "usage: ctx chat encode [--mode thinking|chat] [--effort max|high] [--keep-thinking] [--no-bos]\n"
            "                       [--ids --tokenizer FILE]        stdin messages JSON -> prompt\n"
            "       ctx chat parse --mode thinking|chat [--tools FILE] [--events] [--json]\n"
            "                                                       stdin completion -> message JSON\n");
}


static int chat_encode(int argc, char **argv, const struct ctx_cli *cli)
{
    (void)cli;
    const char *mode = NULL, *effort = NULL, *tok_path = NULL;
    bool keep = false, ids = false, no_bos = false;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--mode") && i + 1 < argc)
            mode = argv[++i];
        else if (!strcmp(argv[i], "--effort") && i + 1 < argc)
            effort = argv[++i];
        else if (!strcmp(argv[i], "--keep-thinking"))
            keep = true;
        else if (!strcmp(argv[i], "--no-bos"))
            no_bos = true;
        else if (!strcmp(argv[i], "--ids"))
            ids = true;
        else if (!strcmp(argv[i], "--tokenizer") && i + 1 < argc)
            tok_path = argv[++i];
        else if (!strcmp(argv[i], "--json"))
            continue;
        else {
            fprintf(stderr, "ctx chat: unknown argument \"%s\"\n", argv[i]);
            chat_usage(stderr);
            return 2;
        }
    }
    if ((mode && strcmp(mode, "thinking") && strcmp(mode, "chat")) ||
        (effort && strcmp(effort, "max") && strcmp(effort, "high")) || (ids && !tok_path)) {
        chat_usage(stderr);
        return 2;
    }
    char *in;
    size_t len;
    struct ctx_err e = {0};
    if (ctx_cli_read_stdin(&in, &len) != 0) {
        fprintf(stderr, "ctx chat: reading stdin failed\n");
        return 1;
    }
    cJSON *req = ctx_json_parse(in, len, "stdin", &e);
    free(in);
    if (!req) {
        fprintf(stderr, "ctx chat: %s\n", e.msg);
        return 1;
    }
    /* Defaults: thinking mode, drop_thinking as in the reference; the request's fields next; the
     * flags last. */
    struct inf_dsml_opts o = {.mode = INF_DSML_THINKING, .drop_thinking = true, .no_bos = no_bos};
    if (cJSON_IsObject(req)) {
        if (mode)
            cJSON_DeleteItemFromObjectCaseSensitive(req, "thinking_mode");
        if (effort)
            cJSON_DeleteItemFromObjectCaseSensitive(req, "reasoning_effort");
        if (keep)
            cJSON_DeleteItemFromObjectCaseSensitive(req, "drop_thinking");
    }
    if (mode)
        o.mode = !strcmp(mode, "chat") ? INF_DSML_CHAT : INF_DSML_THINKING;
    if (effort)
        o.effort = !strcmp(effort, "max") ? INF_DSML_EFFORT_MAX : INF_DSML_EFFORT_HIGH;
    if (keep)
        o.drop_thinking = false;
    char *prompt;
    size_t pl, n_spans = 0;
    struct inf_text_span *spans = NULL;
    int rc = inf_dsml_encode_request_spans(req, &o, &prompt, &pl, ids ? &spans : NULL, ids ? &n_spans : NULL, &e);
    cJSON_Delete(req);
    if (rc) {
        fprintf(stderr, "ctx chat: %s\n", e.msg);
        return 1;
    }
    int status = 0;
    if (ids) {
        struct inf_tokenizer *t;
        int32_t *v;
        size_t n;
        /* Message text is literal: a "<｜User｜>" inside content stays text, not a turn. */
        if (inf_tokenizer_load_v4(tok_path, &t, &e) ||
            inf_tokenizer_encode_spans(t, prompt, pl, spans, n_spans, &v, &n, &e)) {
            fprintf(stderr, "ctx chat: %s\n", e.msg);
            status = 1;
        } else {
            putchar('[');
            for (size_t i = 0; i < n; i++)
                printf(i ? ",%d" : "%d", v[i]);
            puts("]");
            free(v);
            inf_tokenizer_free(t);
        }
    } else
        fwrite(prompt, 1, pl, stdout);
    free(spans);
    free(prompt);
    return status;
}

static const char *event_name(enum inf_dsml_event_type t)
{
    static const char *const names[] = {"reasoning_delta", "content_delta", "call_begin", "param_begin",
                                        "value_delta", "param_end", "call_end", "done", "error"};
    return names[t];
}

static cJSON *error_json(const struct inf_dsml_error *er)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "kind", inf_dsml_error_kind_name(er->kind));
    cJSON_AddStringToObject(o, "message", er->message);
    cJSON_AddNumberToObject(o, "offset", (double)er->offset);
    cJSON_AddNumberToObject(o, "call_index", er->call_index);
    if (er->tool[0])
        cJSON_AddStringToObject(o, "tool", er->tool);
    if (er->param[0])
        cJSON_AddStringToObject(o, "param", er->param);
    return o;
}

static int print_event(void *ud, const struct inf_dsml_event *ev)
{
    (void)ud;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "event", event_name(ev->type));
    if (ev->name)
        cJSON_AddStringToObject(o, "name", ev->name);
    if (ev->type == INF_DSML_EV_PARAM_BEGIN || ev->type == INF_DSML_EV_PARAM_END)
        cJSON_AddBoolToObject(o, "string", ev->is_string);
    if (ev->call_index >= 0)
        cJSON_AddNumberToObject(o, "call", ev->call_index);
    if (ev->text) {
        char *t = malloc(ev->len + 1);
        memcpy(t, ev->text, ev->len);
        t[ev->len] = 0;
        cJSON_AddStringToObject(o, "text", t);
        free(t);
    }
    if (ev->error)
        cJSON_AddItemToObject(o, "error", error_json(ev->error));
    char *s = cJSON_PrintUnformatted(o);
    puts(s);
    fflush(stdout);
    free(s);
    cJSON_Delete(o);
    return 0;
}

static int chat_parse(int argc, char **argv, const struct ctx_cli *cli)
{
    const char *mode = NULL, *tools_path = NULL;
    bool events = false, json = cli->json;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--mode") && i + 1 < argc)
            mode = argv[++i];
        else if (!strcmp(argv[i], "--tools") && i + 1 < argc)
            tools_path = argv[++i];
        else if (!strcmp(argv[i], "--events"))
            events = true;
        else if (!strcmp(argv[i], "--json"))
            json = true;
        else {
            fprintf(stderr, "ctx chat: unknown argument \"%s\"\n", argv[i]);
            chat_usage(stderr);
            return 2;
        }
    }
    if (!mode || (strcmp(mode, "thinking") && strcmp(mode, "chat"))) {
        fprintf(stderr, "ctx chat: parse needs --mode thinking|chat\n");
        chat_usage(stderr);
        return 2;
    }
    struct ctx_err e = {0};
    cJSON *tools = NULL;
    if (tools_path && !(tools = ctx_json_read_file(tools_path, 0, &e))) {
        fprintf(stderr, "ctx chat: %s\n", e.msg);
        return 1;
    }
    struct inf_dsml_parser_opts o = {.mode = !strcmp(mode, "chat") ? INF_DSML_CHAT : INF_DSML_THINKING,
                                     .tools = tools};
    struct inf_dsml_parser *p = inf_dsml_parser_new(&o, events ? print_event : NULL, NULL);
    cJSON_Delete(tools);
    if (!p) {
        fprintf(stderr, "ctx chat: out of memory\n");
        return 1;
    }
    /* Feed stdin as it arrives so that --events shows the stream. */
    char buf[4096];
    size_t r;
    int rc = 0;
    while (!rc && (r = fread(buf, 1, sizeof buf, stdin)) > 0)
        rc = inf_dsml_parser_feed(p, buf, r, &e);
    if (!rc)
        rc = inf_dsml_parser_finish(p, &e);
    int status = 0;
    if (rc) {
        const struct inf_dsml_error *er = inf_dsml_parser_error(p);
        fprintf(stderr, "ctx chat: %s\n", e.msg);
        if (json && er && !events) {
            cJSON *w = cJSON_CreateObject();
            cJSON_AddItemToObject(w, "error", error_json(er));
            char *s = cJSON_PrintUnformatted(w);
            puts(s);
            free(s);
            cJSON_Delete(w);
        }
        status = 1;
    } else if (!events) {
        cJSON *m = inf_dsml_parser_message(p);
        char *s = json ? cJSON_PrintUnformatted(m) : cJSON_Print(m);
        puts(s);
        free(s);
        cJSON_Delete(m);
    }
    inf_dsml_parser_free(p);
    return status;
}

int ctx_cmd_chat(int argc, char **argv, const struct ctx_cli *cli)
{
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        chat_usage(stdout);
        printf("\nctx chat [--repo PATH] [--session ID] [--chat] [--max-tokens N] [--json]\n"
               "  without encode/parse: a conversation with ctxd about the repository (see ctx chat --help)\n");
        return 0;
    }
    if (argc >= 2 && !strcmp(argv[1], "encode"))
        return chat_encode(argc, argv, cli);
    if (argc >= 2 && !strcmp(argv[1], "parse"))
        return chat_parse(argc, argv, cli);
    /* anything else: the interactive conversation (cli/cmd_session.c) */
    return ctx_chat_repl(argc, argv, cli);
}
