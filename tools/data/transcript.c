#include "transcript.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prompt.h"
#include "tools.h"

void data_transcript_free(struct data_transcript *t)
{
    agent_prompt_free(&t->prompt);
    free(t->question);
    free(t->answer);
    memset(t, 0, sizeof *t);
}

static char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *xasprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    return s;
}

static const char *const def_q[] = {
    "Where is `%s` defined?",
    "Where is %s defined?",
    "In which file is `%s` defined?",
    "Find the definition of `%s`.",
    "Which file and line define `%s`?",
    "where is %s defined",
    "Show me where `%s` is declared.",
    "I'm looking for the definition of %s. Where is it?",
};
static const char *const quote_q[] = {
    "Quote the line that defines `%s`.",
    "Show me the line where `%s` is defined.",
    "What does the definition of `%s` look like?",
    "Print the line that defines %s.",
};
static const char *const use_q[] = {
    "Where is `%s` used?",
    "Which places use `%s`?",
    "Find the references to `%s`.",
    "where is %s used",
    "Who calls or uses `%s`?",
};
static const char *const edit_q[] = {
    "Add the comment `%s %s` on its own line right above the line that defines `%s`.",
    "Put a comment line \"%s %s\" just above the definition of `%s`.",
};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static char *edit_comment_text(const struct data_task *t)
{
    return xasprintf("TODO: document %s", t->symbol);
}

char *data_task_question(const struct data_task *t)
{
    switch (t->kind) {
    case DATA_TASK_USES:
        return xasprintf(use_q[t->seed % NELEM(use_q)], t->symbol);
    case DATA_TASK_DEF_READ:
        if (t->quote)
            return xasprintf(quote_q[t->seed % NELEM(quote_q)], t->symbol);
        return xasprintf(def_q[t->seed % NELEM(def_q)], t->symbol);
    case DATA_TASK_EDIT: {
        char *c = edit_comment_text(t);
        char *q = c ? xasprintf(edit_q[t->seed % NELEM(edit_q)], t->comment, c, t->symbol) : NULL;
        free(c);
        return q;
    }
    default:
        return xasprintf(def_q[t->seed % NELEM(def_q)], t->symbol);
    }
}

cJSON *data_first_messages(const struct repo_layout *l, const char *question)
{
    cJSON *msgs = cJSON_CreateArray(), *sys = cJSON_CreateObject(), *user = cJSON_CreateObject();
    size_t len;
    char *content = agent_first_turn_content(l, question, &len);
    if (!msgs || !sys || !user || !content) {
        cJSON_Delete(msgs);
        cJSON_Delete(sys);
        cJSON_Delete(user);
        free(content);
        return NULL;
    }
    cJSON_AddStringToObject(sys, "role", "system");
    cJSON_AddStringToObject(sys, "content", DATA_SYSTEM);
    cJSON_AddItemToArray(msgs, sys);
    cJSON_AddStringToObject(user, "role", "user");
    cJSON_AddStringToObject(user, "content", content);
    cJSON_AddItemToArray(msgs, user);
    free(content);
    return msgs;
}

/* ---- the scripted model ---------------------------------------------------------------------- */

struct script {
    const struct data_task *task;
    struct data_transcript *out;
    int failed;       /* CTX_ENOTFOUND: the tools did not give the expected answer */
    char found_path[512];
    unsigned found_line;
    char quoted[512]; /* DATA_TASK_DEF_READ: the definition line as read_file showed it */
};

static cJSON *call_obj(const char *name, cJSON *args)
{
    cJSON *c = cJSON_CreateObject(), *f = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "type", "function");
    cJSON_AddStringToObject(f, "name", name);
    char *a = cJSON_PrintUnformatted(args);
    cJSON_AddStringToObject(f, "arguments", a ? a : "{}");
    free(a);
    cJSON_Delete(args);
    cJSON_AddItemToObject(c, "function", f);
    return c;
}

/* The content of the last tool message, or "". */
static const char *last_tool_result(const cJSON *messages)
{
    const char *r = "";
    const cJSON *m;
    cJSON_ArrayForEach(m, messages) {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(m, "content");
        if (cJSON_IsString(role) && strcmp(role->valuestring, "tool") == 0 && cJSON_IsString(c))
            r = c->valuestring;
    }
    return r;
}

static int count_assistant(const cJSON *messages)
{
    int n = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, messages) {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        if (cJSON_IsString(role) && strcmp(role->valuestring, "assistant") == 0)
            n++;
    }
    return n;
}

/* Whether the tool result names path and line as "path:line" (find_symbol, find_references,
 * search all print locations that way). */
static bool result_has_location(const char *res, const char *path, unsigned line)
{
    char needle[600];
    snprintf(needle, sizeof needle, "%s:%u", path, line);
    size_t nl = strlen(needle);
    for (const char *p = strstr(res, needle); p; p = strstr(p + 1, needle))
        if (p[nl] < '0' || p[nl] > '9')
            return true;
    return false;
}

/* Locations "path:line" in a find_references result, other than the definition, up to max. */
static size_t result_locations(const char *res, char (*locs)[600], size_t max)
{
    size_t n = 0;
    for (const char *line = res; *line && n < max;) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        /* "path:line: text" or "path:line:col..." */
        size_t i = 0;
        while (i < len && line[i] != ':' && line[i] != ' ')
            i++;
        if (i > 0 && i + 1 < len && line[i] == ':' && line[i + 1] >= '0' && line[i + 1] <= '9') {
            size_t j = i + 1;
            while (j < len && line[j] >= '0' && line[j] <= '9')
                j++;
            if (j - 0 < 600) {
                memcpy(locs[n], line, j);
                locs[n][j] = 0;
                bool dup = false;
                for (size_t k = 0; k < n; k++)
                    dup |= strcmp(locs[k], locs[n]) == 0;
                if (!dup)
                    n++;
            }
        }
        line = end ? end + 1 : line + len;
    }
    return n;
}

static const char *const reason_def[] = {
    "The user asks where %s is defined. find_symbol looks the name up in the repository's index of definitions.",
    "I need the definition of %s. The symbol index will give its file and line.",
    "Looking for the definition of %s; find_symbol finds definitions by name.",
};
static const char *const reason_search[] = {
    "The user asks where %s is defined. Searching the repository for the name shows the definition among the matches.",
    "I will search for %s and pick out the line that defines it.",
};
static const char *const reason_uses[] = {
    "The user wants the places that use %s. find_references lists them.",
    "Uses of %s: find_references gives every reference with its file and line.",
};
static const char *const reason_quote[] = {
    "The user wants the line that defines %s. find_symbol gives its file and line, then read_file shows it.",
};
static const char *const reason_edit[] = {
    "First I find where %s is defined, then I add the comment above that line with edit_file.",
};

/* The next assistant message of the script, or NULL (with s->failed set) when the tool output
 * does not support the answer. */
static cJSON *script_step(struct script *s, const cJSON *messages)
{
    const struct data_task *t = s->task;
    int step = count_assistant(messages);
    const char *res = last_tool_result(messages);
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "role", "assistant");
    cJSON *calls = NULL;
    char *reasoning = NULL, *content = NULL;
    uint64_t sd = t->seed >> 8;
    if (step == 0) {
        cJSON *args = cJSON_CreateObject();
        const char *tool = "find_symbol";
        if (t->kind == DATA_TASK_DEF_SEARCH) {
            tool = "search";
            /* a word-boundary pattern: what a careful user of the tool would write */
            char *pat = xasprintf("\\b%s\\b", t->symbol);
            cJSON_AddStringToObject(args, "pattern", pat);
            free(pat);
            reasoning = xasprintf(reason_search[sd % NELEM(reason_search)], t->symbol);
        } else if (t->kind == DATA_TASK_USES) {
            tool = "find_references";
            cJSON_AddStringToObject(args, "name", t->symbol);
            reasoning = xasprintf(reason_uses[sd % NELEM(reason_uses)], t->symbol);
        } else {
            cJSON_AddStringToObject(args, "name", t->symbol);
            reasoning = xasprintf((t->kind == DATA_TASK_EDIT                ? reason_edit[0]
                                   : t->kind == DATA_TASK_DEF_READ && t->quote ? reason_quote[0]
                                                                               : reason_def[sd % NELEM(reason_def)]),
                                  t->symbol);
        }
        calls = cJSON_CreateArray();
        cJSON_AddItemToArray(calls, call_obj(tool, args));
    } else if (step == 1) {
        if (t->kind != DATA_TASK_USES && !result_has_location(res, t->path, t->line)) {
            if (getenv("CTX_DATA_DEBUG"))
                fprintf(stderr, "ctx-data: %s:%u not in the result:\n%s\n", t->path, t->line, res);
            s->failed = CTX_ENOTFOUND;
            cJSON_Delete(m);
            return NULL;
        }
        switch (t->kind) {
        case DATA_TASK_DEF_FIND:
        case DATA_TASK_DEF_SEARCH:
            reasoning = xasprintf("The result shows the definition of %s at %s:%u.", t->symbol, t->path, t->line);
            content = xasprintf((sd & 1) ? "`%s` is defined in `%s` at line %u." : "`%s` is defined at `%s:%u`.",
                                t->symbol, t->path, t->line);
            break;
        case DATA_TASK_DEF_READ:
        case DATA_TASK_EDIT: {
            reasoning = xasprintf("%s is defined at %s:%u. Let me read the lines around it.", t->symbol, t->path,
                                  t->line);
            cJSON *args = cJSON_CreateObject();
            cJSON_AddStringToObject(args, "path", t->path);
            bool q = t->kind == DATA_TASK_DEF_READ && t->quote;
            cJSON_AddNumberToObject(args, "start_line", q ? (t->line > 1 ? t->line - 1 : 1) : t->line > 3 ? t->line - 3 : 1);
            cJSON_AddNumberToObject(args, "end_line", t->line + (q ? 1 : 8));
            calls = cJSON_CreateArray();
            cJSON_AddItemToArray(calls, call_obj("read_file", args));
            break;
        }
        case DATA_TASK_USES: {
            char locs[8][600];
            size_t n = result_locations(res, locs, 8);
            char def[600];
            snprintf(def, sizeof def, "%s:%u", t->path, t->line);
            size_t used = 0;
            char buf[4096];
            size_t bl = 0;
            for (size_t i = 0; i < n && used < 5; i++) {
                if (strcmp(locs[i], def) == 0)
                    continue;
                bl += (size_t)snprintf(buf + bl, sizeof buf - bl, "\n- `%s`", locs[i]);
                used++;
            }
            if (!used) {
                s->failed = CTX_ENOTFOUND;
                cJSON_Delete(m);
                return NULL;
            }
            reasoning = xasprintf("find_references listed the uses of %s.", t->symbol);
            content = xasprintf("`%s` (defined at `%s`) is used at:%s", t->symbol, def, buf);
            break;
        }
        default:
            break;
        }
    } else if (step == 2 && (t->kind == DATA_TASK_DEF_READ || t->kind == DATA_TASK_EDIT)) {
        /* read_file numbers lines as "%6u\t<text>" */
        char tag[32];
        snprintf(tag, sizeof tag, "%6u\t", t->line);
        const char *p = strstr(res, tag);
        if (!p || strncmp(res, "error:", 6) == 0) {
            s->failed = CTX_ENOTFOUND;
            cJSON_Delete(m);
            return NULL;
        }
        p += strlen(tag);
        size_t ll = strcspn(p, "\n");
        if (t->kind == DATA_TASK_DEF_READ) {
            if (ll > 200)
                ll = 200;
            reasoning = xasprintf("Line %u of %s is the definition.", t->line, t->path);
            content = xasprintf("`%s` is defined in `%s` at line %u:\n\n```\n%.*s\n```", t->symbol, t->path, t->line,
                                (int)ll, p);
        } else {
            /* the edit: insert the comment above the defining line, with its indentation */
            size_t ind = 0;
            while (ind < ll && (p[ind] == ' ' || p[ind] == '\t'))
                ind++;
            char *c = edit_comment_text(t);
            char *old = xasprintf("%.*s", (int)ll, p);
            char *new = xasprintf("%.*s%s %s\n%.*s", (int)ind, p, t->comment, c, (int)ll, p);
            cJSON *args = cJSON_CreateObject();
            cJSON_AddStringToObject(args, "path", t->path);
            cJSON_AddStringToObject(args, "old_string", old);
            cJSON_AddStringToObject(args, "new_string", new);
            free(c);
            free(old);
            free(new);
            reasoning = xasprintf("I replace line %u with the comment followed by the same line.", t->line);
            calls = cJSON_CreateArray();
            cJSON_AddItemToArray(calls, call_obj("edit_file", args));
        }
    } else if (step == 3 && t->kind == DATA_TASK_EDIT) {
        if (strncmp(res, "edited ", 7) != 0) {
            s->failed = CTX_ENOTFOUND;
            cJSON_Delete(m);
            return NULL;
        }
        char *c = edit_comment_text(t);
        reasoning = xasprintf("The edit was applied.");
        content = xasprintf("Added `%s %s` above the definition of `%s` in `%s` (now line %u).", t->comment, c,
                            t->symbol, t->path, t->line + 1);
        free(c);
    } else {
        s->failed = CTX_EINTERNAL;
        cJSON_Delete(m);
        return NULL;
    }
    cJSON_AddStringToObject(m, "reasoning_content", reasoning ? reasoning : "");
    cJSON_AddStringToObject(m, "content", content ? content : "");
    if (calls)
        cJSON_AddItemToObject(m, "tool_calls", calls);
    if (content && !calls) {
        free(s->out->answer);
        s->out->answer = strdup(content);
    }
    free(reasoning);
    free(content);
    return m;
}

static int script_complete(void *ud, const cJSON *messages, const cJSON *tools,
                           const struct agent_prompt *prompt, enum inf_dsml_mode mode, agent_emit_fn emit,
                           void *emit_ud, struct agent_model_usage *usage, struct ctx_err *e)
{
    struct script *s = ud;
    (void)usage;
    cJSON *m = script_step(s, messages);
    if (!m)
        return ctx_err_set(e, s->failed ? s->failed : CTX_ENOMEM, "the script has no answer");
    /* The canonical completion: the encoder's rendering with the message minus without it. */
    cJSON *with = cJSON_Duplicate(messages, 1);
    cJSON_AddItemToArray(with, m);
    char *a = NULL, *b = NULL;
    size_t al = 0, bl = 0;
    int rc = agent_loop_render(messages, tools, mode, &a, &al, e);
    if (!rc)
        rc = agent_loop_render(with, tools, mode, &b, &bl, e);
    cJSON_Delete(with);
    if (!rc && (bl < al || memcmp(a, b, al) != 0 || al != prompt->len || memcmp(a, prompt->text, al) != 0))
        rc = ctx_err_set(e, CTX_EINTERNAL, "the rendered assistant turn does not continue the prompt");
    if (!rc && s->out->ncomp >= NELEM(s->out->comp_off))
        rc = ctx_err_set(e, CTX_ERANGE, "too many steps");
    if (!rc) {
        s->out->comp_off[s->out->ncomp] = al;
        s->out->comp_len[s->out->ncomp] = bl - al;
        s->out->ncomp++;
        if (emit(emit_ud, b + al, bl - al))
            rc = ctx_err_set(e, CTX_ECANCELED, "cancelled");
    }
    free(a);
    free(b);
    return rc;
}

int data_transcript_run(struct agent_tools *tools, const struct repo_layout *l,
                        const struct data_task *task, struct data_transcript *out,
                        struct ctx_err *e)
{
    memset(out, 0, sizeof *out);
    out->question = data_task_question(task);
    if (!out->question)
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    cJSON *msgs = data_first_messages(l, out->question);
    if (!msgs)
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    struct script s = {.task = task, .out = out};
    struct agent_model model = {.ud = &s, .complete = script_complete};
    struct agent_loop_opts o = {.mode = INF_DSML_THINKING, .max_steps = 6};
    struct agent_loop_result r;
    memset(&r, 0, sizeof r);
    int rc = agent_loop_run(tools, &model, msgs, &o, &r, e);
    if (!rc && strcmp(r.stop, "final") != 0)
        rc = s.failed ? ctx_err_set(e, s.failed, "the tools did not give the expected answer")
                      : ctx_err_set(e, CTX_EINTERNAL, "the loop stopped with %s: %s", r.stop, r.error.msg);
    if (!rc && r.replay_mismatch)
        rc = ctx_err_set(e, CTX_EINTERNAL, "a completion is not canonical");
    if (!rc) {
        out->prompt = r.prompt;
        memset(&r.prompt, 0, sizeof r.prompt);
        out->tool_calls = r.tool_calls;
        /* the last completion must end the transcript */
        size_t k = out->ncomp - 1;
        if (out->comp_off[k] + out->comp_len[k] != out->prompt.len)
            rc = ctx_err_set(e, CTX_EINTERNAL, "the transcript does not end with the last completion");
    }
    agent_loop_result_free(&r);
    cJSON_Delete(msgs);
    if (rc)
        data_transcript_free(out);
    return rc;
}

int data_transcript_tokens(const struct inf_tokenizer *tok, const struct data_transcript *t,
                           int32_t **ids, uint8_t **mask, size_t *n, struct ctx_err *e)
{
    *ids = NULL;
    *mask = NULL;
    *n = 0;
    int32_t *v;
    size_t nv;
    int rc = inf_tokenizer_encode_spans(tok, t->prompt.text, t->prompt.len, t->prompt.spans, t->prompt.nspans,
                                        &v, &nv, e);
    if (rc)
        return rc;
    uint8_t *m = calloc(nv ? nv : 1, 1);
    if (!m) {
        free(v);
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    }
    size_t off = 0, c = 0, starts = 0, ends = 0;
    for (size_t i = 0; i < nv; i++) {
        size_t bl;
        if (!inf_tokenizer_id_bytes(tok, v[i], &bl)) {
            free(v);
            free(m);
            return ctx_err_set(e, CTX_EINTERNAL, "token %zu: unknown id %d", i, (int)v[i]);
        }
        while (c < t->ncomp && off >= t->comp_off[c] + t->comp_len[c])
            c++;
        if (c < t->ncomp && off == t->comp_off[c])
            starts++;
        if (c < t->ncomp && off >= t->comp_off[c])
            m[i] = 1;
        off += bl;
        if (c < t->ncomp && off == t->comp_off[c] + t->comp_len[c])
            ends++;
    }
    if (off != t->prompt.len || starts != t->ncomp || ends != t->ncomp) {
        free(v);
        free(m);
        return ctx_err_set(e, CTX_EINTERNAL,
                           "completions do not fall on token boundaries (%zu/%zu starts, %zu ends, %zu of %zu bytes)",
                           starts, t->ncomp, ends, off, t->prompt.len);
    }
    *ids = v;
    *mask = m;
    *n = nv;
    return 0;
}
