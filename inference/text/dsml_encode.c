/* DSML prompt encoder: encoding_dsv4.py's encode_messages (spec §7.2) in C. The steps are the
 * reference's, in its order: merge tool messages into user turns as content blocks, sort tool
 * results into the order of the preceding assistant's calls, switch drop_thinking off if any
 * message declares tools, drop earlier reasoning (thinking mode), then render each message.
 * Byte-exact on tests/fixtures/dsml/ (official pairs and encode.json). */
#include "dsml.h"

#include <stdlib.h>
#include <string.h>

#include "pyjson.h"

/* Fixed text, copied from encoding_dsv4.py (via tests/fixtures/dsml/strings.json, which the
 * tests compare against these). */
static const char TOOLS_HEAD[] =
    "## Tools\n"
    "\n"
    "You have access to a set of tools to help answer the user's question. You can invoke tools by writing a \"<｜DSML｜tool_calls>\" block like the following:\n"
    "\n"
    "<｜DSML｜tool_calls>\n"
    "<｜DSML｜invoke name=\"$TOOL_NAME\">\n"
    "<｜DSML｜parameter name=\"$PARAMETER_NAME\" string=\"true|false\">$PARAMETER_VALUE</｜DSML｜parameter>\n"
    "...\n"
    "</｜DSML｜invoke>\n"
    "<｜DSML｜invoke name=\"$TOOL_NAME2\">\n"
    "...\n"
    "</｜DSML｜invoke>\n"
    "</｜DSML｜tool_calls>\n"
    "\n"
    "String parameters should be specified as is and set `string=\"true\"`. For all other types (numbers, booleans, arrays, objects), pass the value in JSON format and set `string=\"false\"`.\n"
    "\n"
    "If thinking_mode is enabled (triggered by <think>), you MUST output your complete reasoning inside <think>...</think> BEFORE any tool calls or final response.\n"
    "\n"
    "Otherwise, output directly after </think> with tool calls or final response.\n"
    "\n"
    "### Available Tool Schemas\n"
    "\n";

static const char TOOLS_TAIL[] =
    "\n"
    "\n"
    "You MUST strictly follow the above defined tool name and parameter schemas to invoke tool calls.\n";

static const char EFFORT_MAX[] =
    "Reasoning Effort: Absolute maximum with no shortcuts permitted.\n"
    "You MUST be very thorough in your thinking and comprehensively decompose the problem to resolve the root cause, rigorously stress-testing your logic against all potential paths, edge cases, and adversarial scenarios.\n"
    "Explicitly write out your entire deliberation process, documenting every intermediate step, considered alternative, and rejected hypothesis to ensure absolutely no assumption is left unchecked.\n"
    "\n";

const char *inf_dsml_tools_head(void);
const char *inf_dsml_tools_tail(void);
const char *inf_dsml_effort_max(void);
const char *inf_dsml_tools_head(void) { return TOOLS_HEAD; }
const char *inf_dsml_tools_tail(void) { return TOOLS_TAIL; }
const char *inf_dsml_effort_max(void) { return EFFORT_MAX; }

enum role { R_SYSTEM, R_USER, R_ASSISTANT, R_TOOL, R_REMINDER, R_DEVELOPER };

static const char *const role_names[] = {"system", "user", "assistant", "tool", "latest_reminder",
                                         "developer"};

static const struct {
    const char *name, *token;
} tasks[] = {
    {"action", "<｜action｜>"}, {"query", "<｜query｜>"}, {"authority", "<｜authority｜>"},
    {"domain", "<｜domain｜>"}, {"title", "<｜title｜>"},   {"read_url", "<｜read_url｜>"},
};

struct block {
    bool tool_result;
    const char *text;      /* text block */
    const cJSON *content;  /* tool_result: string or array of {type, text} */
    const char *use_id;
};

struct msg {
    enum role role;
    size_t src;            /* index in the caller's array, for error messages */
    const char *content;   /* NULL: absent or null */
    const char *reasoning;
    const cJSON *tools;    /* non-empty array or NULL */
    const cJSON *response_format;
    const cJSON *tool_calls; /* non-empty array or NULL */
    const char *task;
    bool wo_eos;
    bool user_blocks;      /* a merged user turn (content_blocks) */
    struct block *blocks;
    size_t n_blocks, cap_blocks;
    bool dropped_reasoning;
};

static const char *str_field(const cJSON *m, const char *f)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(m, f);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int add_block(struct msg *m, struct block b)
{
    if (m->n_blocks == m->cap_blocks) {
        size_t cap = m->cap_blocks ? m->cap_blocks * 2 : 4;
        struct block *nb = realloc(m->blocks, cap * sizeof *nb);
        if (!nb)
            return CTX_ENOMEM;
        m->blocks = nb;
        m->cap_blocks = cap;
    }
    m->blocks[m->n_blocks++] = b;
    return 0;
}

static void free_msgs(struct msg *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i].blocks);
    free(v);
}

/* The prompt being built and, when asked for, the spans of it that came from the caller. */
struct enc {
    struct inf_buf b;
    bool want_spans;
    bool oom;
    struct inf_text_span *spans;
    size_t n_spans, cap_spans;
};

/* Record [start, current end) as caller text. */
static void mark(struct enc *x, size_t start)
{
    if (!x->want_spans || x->b.len <= start)
        return;
    if (x->n_spans && x->spans[x->n_spans - 1].off + x->spans[x->n_spans - 1].len == start) {
        x->spans[x->n_spans - 1].len += x->b.len - start; /* adjacent: one span */
        return;
    }
    if (x->n_spans == x->cap_spans) {
        size_t cap = x->cap_spans ? x->cap_spans * 2 : 16;
        struct inf_text_span *ns = realloc(x->spans, cap * sizeof *ns);
        if (!ns) {
            x->oom = true;
            return;
        }
        x->spans = ns;
        x->cap_spans = cap;
    }
    x->spans[x->n_spans++] = (struct inf_text_span){start, x->b.len - start};
}

/* Append caller text. */
static void put_lit(struct enc *x, const char *s)
{
    size_t start = x->b.len;
    inf_buf_puts(&x->b, s);
    mark(x, start);
}

/* Reads one caller message into *m, checking types the template relies on. */
static int read_msg(const cJSON *j, size_t i, struct msg *m, struct ctx_err *e)
{
    memset(m, 0, sizeof *m);
    m->src = i;
    if (!cJSON_IsObject(j))
        return ctx_err_set(e, CTX_EINVAL, "messages[%zu] is not an object", i);
    const char *role = str_field(j, "role");
    if (!role)
        return ctx_err_set(e, CTX_EINVAL, "messages[%zu].role is missing or not a string", i);
    size_t r;
    for (r = 0; r < sizeof role_names / sizeof role_names[0]; r++)
        if (!strcmp(role, role_names[r]))
            break;
    if (r == sizeof role_names / sizeof role_names[0])
        return ctx_err_set(e, CTX_EINVAL, "messages[%zu].role \"%s\" is not one of system, user, "
                                          "assistant, tool, latest_reminder, developer", i, role);
    m->role = (enum role)r;
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(j, "content");
    if (c && !cJSON_IsNull(c) && !cJSON_IsString(c) && !(m->role == R_TOOL && cJSON_IsArray(c)))
        return ctx_err_set(e, CTX_EINVAL, "messages[%zu].content must be a string", i);
    m->content = cJSON_IsString(c) ? c->valuestring : NULL;
    const cJSON *rc = cJSON_GetObjectItemCaseSensitive(j, "reasoning_content");
    if (rc && !cJSON_IsNull(rc) && !cJSON_IsString(rc))
        return ctx_err_set(e, CTX_EINVAL, "messages[%zu].reasoning_content must be a string", i);
    m->reasoning = cJSON_IsString(rc) ? rc->valuestring : NULL;
    const cJSON *tools = cJSON_GetObjectItemCaseSensitive(j, "tools");
    if (tools && !cJSON_IsNull(tools) && !cJSON_IsArray(tools))
        return ctx_err_set(e, CTX_EINVAL, "messages[%zu].tools must be an array", i);
    m->tools = cJSON_GetArraySize(tools) > 0 ? tools : NULL;
    const cJSON *tc = cJSON_GetObjectItemCaseSensitive(j, "tool_calls");
    if (tc && !cJSON_IsNull(tc) && !cJSON_IsArray(tc))
        return ctx_err_set(e, CTX_EINVAL, "messages[%zu].tool_calls must be an array", i);
    m->tool_calls = cJSON_GetArraySize(tc) > 0 ? tc : NULL;
    const cJSON *rf = cJSON_GetObjectItemCaseSensitive(j, "response_format");
    m->response_format = rf && !cJSON_IsNull(rf) && !(cJSON_IsObject(rf) && !rf->child) &&
                                 !(cJSON_IsString(rf) && !rf->valuestring[0]) && !cJSON_IsFalse(rf)
                             ? rf
                             : NULL;
    const cJSON *task = cJSON_GetObjectItemCaseSensitive(j, "task");
    if (task && !cJSON_IsNull(task)) {
        if (!cJSON_IsString(task))
            return ctx_err_set(e, CTX_EINVAL, "messages[%zu].task must be a string", i);
        size_t k;
        for (k = 0; k < sizeof tasks / sizeof tasks[0]; k++)
            if (!strcmp(task->valuestring, tasks[k].name))
                break;
        if (k == sizeof tasks / sizeof tasks[0])
            return ctx_err_set(e, CTX_EINVAL, "messages[%zu].task \"%s\" is not one of action, "
                                              "query, authority, domain, title, read_url", i,
                               task->valuestring);
        m->task = tasks[k].name;
    }
    m->wo_eos = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "wo_eos"));
    return 0;
}

static const char *task_token(const char *task)
{
    for (size_t k = 0; k < sizeof tasks / sizeof tasks[0]; k++)
        if (!strcmp(task, tasks[k].name))
            return tasks[k].token;
    return "";
}

static void render_tools(struct enc *x, const cJSON *tools, size_t src, int *rc, struct ctx_err *e)
{
    struct inf_buf *b = &x->b;
    inf_buf_puts(b, TOOLS_HEAD);
    size_t k = 0;
    for (const cJSON *t = tools->child; t; t = t->next, k++) {
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(t, "function");
        if (!fn) {
            *rc = ctx_err_set(e, CTX_EINVAL, "messages[%zu].tools[%zu].function is missing", src, k);
            return;
        }
        if (k)
            inf_buf_puts(b, "\n");
        size_t start = b->len;
        inf_py_dump_cjson(b, fn);
        mark(x, start);
    }
    inf_buf_puts(b, TOOLS_TAIL);
}

static void render_response_format(struct enc *x, const cJSON *rf)
{
    inf_buf_puts(&x->b, "\n\n## Response Format:\n\nYou MUST strictly adhere to the following schema to reply:\n");
    size_t start = x->b.len;
    inf_py_dump_cjson(&x->b, rf);
    mark(x, start);
}

static int render_call(struct enc *x, const cJSON *tc, size_t src, size_t k, struct ctx_err *e)
{
    struct inf_buf *b = &x->b;
    const cJSON *fn = cJSON_GetObjectItemCaseSensitive(tc, "function");
    const char *name = fn ? str_field(fn, "name") : NULL;
    if (!name)
        return ctx_err_set(e, CTX_EINVAL, "messages[%zu].tool_calls[%zu].function.name is missing", src, k);
    inf_buf_puts(b, "<" INF_DSML_TOKEN "invoke name=\"");
    put_lit(x, name);
    inf_buf_puts(b, "\">\n");
    const cJSON *args = cJSON_GetObjectItemCaseSensitive(fn, "arguments");
    if (cJSON_IsString(args)) {
        struct inf_py_member *m;
        size_t n, at;
        int r = inf_py_object_members(args->valuestring, strlen(args->valuestring), &m, &n, &at);
        if (r == -2)
            return ctx_err_set(e, CTX_EINVAL, "messages[%zu].tool_calls[%zu].function.arguments is "
                                              "JSON but not an object", src, k);
        if (r == 0) {
            for (size_t i = 0; i < n; i++) {
                if (i)
                    inf_buf_puts(b, "\n");
                inf_buf_puts(b, "<" INF_DSML_TOKEN "parameter name=\"");
                size_t start = b->len;
                inf_buf_put(b, m[i].key, m[i].key_len);
                mark(x, start);
                inf_buf_puts(b, m[i].is_string ? "\" string=\"true\">" : "\" string=\"false\">");
                start = b->len;
                inf_buf_put(b, m[i].value, m[i].value_len);
                mark(x, start);
                inf_buf_puts(b, "</" INF_DSML_TOKEN "parameter>");
            }
            inf_py_members_free(m, n);
        } else {
            /* Not JSON: the reference passes the raw text as one string parameter. */
            inf_buf_puts(b, "<" INF_DSML_TOKEN "parameter name=\"arguments\" string=\"true\">");
            put_lit(x, args->valuestring);
            inf_buf_puts(b, "</" INF_DSML_TOKEN "parameter>");
        }
    } else {
        /* Arguments given as an object (not a string): one non-string parameter, as the
         * reference's fallback does. */
        inf_buf_puts(b, "<" INF_DSML_TOKEN "parameter name=\"arguments\" string=\"false\">");
        size_t start = b->len;
        inf_py_dump_cjson(b, args);
        mark(x, start);
        inf_buf_puts(b, "</" INF_DSML_TOKEN "parameter>");
    }
    inf_buf_puts(b, "\n</" INF_DSML_TOKEN "invoke>");
    return 0;
}

static void render_tool_result(struct enc *x, const cJSON *content)
{
    struct inf_buf *b = &x->b;
    inf_buf_puts(b, "<tool_result>");
    if (cJSON_IsString(content)) {
        put_lit(x, content->valuestring);
    } else if (cJSON_IsArray(content)) {
        bool first = true;
        for (const cJSON *c = content->child; c; c = c->next) {
            if (!first)
                inf_buf_puts(b, "\n\n");
            first = false;
            const char *type = str_field(c, "type");
            if (type && !strcmp(type, "text")) {
                const char *t = str_field(c, "text");
                put_lit(x, t ? t : "");
            } else {
                inf_buf_puts(b, "[Unsupported ");
                put_lit(x, type ? type : "None");
                inf_buf_puts(b, "]");
            }
        }
    } else if (content && !cJSON_IsNull(content)) {
        size_t start = b->len;
        inf_py_dump_cjson(b, content);
        mark(x, start);
    }
    inf_buf_puts(b, "</tool_result>");
}

static int render(struct enc *x, const struct msg *ms, size_t n, size_t idx, const struct inf_dsml_opts *o,
                  bool drop, struct ctx_err *e)
{
    struct inf_buf *b = &x->b;
    const struct msg *m = &ms[idx];
    bool thinking = o->mode == INF_DSML_THINKING;
    long last_user = -1;
    for (size_t i = n; i-- > 0;)
        if (ms[i].role == R_USER || ms[i].role == R_DEVELOPER) {
            last_user = (long)i;
            break;
        }
    int rc = 0;
    if (idx == 0 && thinking && o->effort == INF_DSML_EFFORT_MAX)
        inf_buf_puts(b, EFFORT_MAX);
    switch (m->role) {
    case R_SYSTEM:
        put_lit(x, m->content ? m->content : "");
        if (m->tools) {
            inf_buf_puts(b, "\n\n");
            render_tools(x, m->tools, m->src, &rc, e);
        }
        if (m->response_format)
            render_response_format(x, m->response_format);
        break;
    case R_DEVELOPER:
        if (!m->content || !m->content[0])
            return ctx_err_set(e, CTX_EINVAL, "messages[%zu].content: a developer message needs content", m->src);
        inf_buf_puts(b, INF_DSML_USER);
        put_lit(x, m->content);
        if (m->tools) {
            inf_buf_puts(b, "\n\n");
            render_tools(x, m->tools, m->src, &rc, e);
        }
        if (m->response_format)
            render_response_format(x, m->response_format);
        break;
    case R_USER:
        inf_buf_puts(b, INF_DSML_USER);
        if (m->user_blocks && m->n_blocks) {
            for (size_t k = 0; k < m->n_blocks; k++) {
                if (k)
                    inf_buf_puts(b, "\n\n");
                if (m->blocks[k].tool_result)
                    render_tool_result(x, m->blocks[k].content);
                else
                    put_lit(x, m->blocks[k].text ? m->blocks[k].text : "");
            }
        } else
            put_lit(x, m->content ? m->content : "");
        break;
    case R_REMINDER:
        if (!m->content)
            return ctx_err_set(e, CTX_EINVAL, "messages[%zu].content: a latest_reminder message needs content", m->src);
        inf_buf_puts(b, INF_DSML_LATEST_REMINDER);
        put_lit(x, m->content);
        break;
    case R_TOOL:
        return ctx_err_set(e, CTX_EINTERNAL, "messages[%zu]: tool message left after merging", m->src);
    case R_ASSISTANT: {
        bool prev_task = idx > 0 && ms[idx - 1].task;
        if (thinking && !prev_task && (!drop || (long)idx > last_user)) {
            put_lit(x, m->reasoning && !m->dropped_reasoning ? m->reasoning : "");
            inf_buf_puts(b, INF_DSML_THINK_END);
        }
        put_lit(x, m->content ? m->content : "");
        if (m->tool_calls) {
            inf_buf_puts(b, "\n\n<" INF_DSML_TOKEN "tool_calls>\n");
            size_t k = 0;
            for (const cJSON *tc = m->tool_calls->child; tc; tc = tc->next, k++) {
                if (k)
                    inf_buf_puts(b, "\n");
                if ((rc = render_call(x, tc, m->src, k, e)))
                    return rc;
            }
            inf_buf_puts(b, "\n</" INF_DSML_TOKEN "tool_calls>");
        }
        if (!m->wo_eos)
            inf_buf_puts(b, INF_DSML_EOS);
        break;
    }
    }
    if (rc)
        return rc;
    if (idx + 1 < n && ms[idx + 1].role != R_ASSISTANT && ms[idx + 1].role != R_REMINDER)
        return 0;
    if (m->task) {
        if (strcmp(m->task, "action") != 0) {
            inf_buf_puts(b, task_token(m->task));
        } else {
            inf_buf_puts(b, INF_DSML_ASSISTANT);
            inf_buf_puts(b, thinking ? INF_DSML_THINK_START : INF_DSML_THINK_END);
            inf_buf_puts(b, task_token(m->task));
        }
    } else if (m->role == R_USER || m->role == R_DEVELOPER) {
        inf_buf_puts(b, INF_DSML_ASSISTANT);
        if (thinking && (!drop || (long)idx >= last_user))
            inf_buf_puts(b, INF_DSML_THINK_START);
        else
            inf_buf_puts(b, INF_DSML_THINK_END);
    }
    return 0;
}

static const char *call_id(const cJSON *tc)
{
    const char *id = str_field(tc, "id");
    if (id && id[0])
        return id;
    const cJSON *fn = cJSON_GetObjectItemCaseSensitive(tc, "function");
    id = fn ? str_field(fn, "id") : NULL;
    return id ? id : "";
}

/* sort_tool_results_by_call_order: a stable sort of each merged user turn's tool results by the
 * position of their call id in the latest assistant's tool_calls (unknown ids count as 0). */
static int sort_results(struct msg *ms, size_t n)
{
    const cJSON *order = NULL;
    for (size_t i = 0; i < n; i++) {
        struct msg *m = &ms[i];
        if (m->role == R_ASSISTANT && m->tool_calls) {
            order = m->tool_calls;
            continue;
        }
        if (m->role != R_USER || !m->user_blocks || !order)
            continue;
        size_t nt = 0;
        for (size_t k = 0; k < m->n_blocks; k++)
            nt += m->blocks[k].tool_result;
        if (nt < 2)
            continue;
        struct block *tb = malloc(nt * sizeof *tb);
        int *key = malloc(nt * sizeof *key);
        if (!tb || !key) {
            free(tb);
            free(key);
            return CTX_ENOMEM;
        }
        size_t j = 0;
        for (size_t k = 0; k < m->n_blocks; k++) {
            if (!m->blocks[k].tool_result)
                continue;
            tb[j] = m->blocks[k];
            key[j] = 0;
            int pos = 0;
            bool any = false;
            for (const cJSON *tc = order->child; tc; tc = tc->next, pos++) {
                const char *id = call_id(tc);
                if (id[0]) {
                    any = true;
                    if (!strcmp(id, tb[j].use_id))
                        key[j] = pos; /* a repeated id keeps its last position, as a dict does */
                }
            }
            if (!any) { /* no ids at all: the reference leaves the order alone */
                free(tb);
                free(key);
                goto next;
            }
            j++;
        }
        for (size_t a = 1; a < nt; a++) { /* insertion sort: stable, and nt is small */
            struct block vb = tb[a];
            int vk = key[a];
            size_t c = a;
            while (c > 0 && key[c - 1] > vk) {
                tb[c] = tb[c - 1];
                key[c] = key[c - 1];
                c--;
            }
            tb[c] = vb;
            key[c] = vk;
        }
        j = 0;
        for (size_t k = 0; k < m->n_blocks; k++)
            if (m->blocks[k].tool_result)
                m->blocks[k] = tb[j++];
        free(tb);
        free(key);
    next:;
    }
    return 0;
}

int inf_dsml_encode(const cJSON *messages, const cJSON *tools, const struct inf_dsml_opts *o,
                    char **prompt, size_t *len, struct ctx_err *e)
{
    return inf_dsml_encode_spans(messages, tools, o, prompt, len, NULL, NULL, e);
}

int inf_dsml_encode_spans(const cJSON *messages, const cJSON *tools, const struct inf_dsml_opts *o,
                          char **prompt, size_t *len, struct inf_text_span **spans, size_t *n_spans,
                          struct ctx_err *e)
{
    *prompt = NULL;
    *len = 0;
    if (spans) {
        *spans = NULL;
        *n_spans = 0;
    }
    if (!cJSON_IsArray(messages))
        return ctx_err_set(e, CTX_EINVAL, "messages must be an array");
    size_t n_in = (size_t)cJSON_GetArraySize(messages);
    struct msg *ms = calloc(n_in + 2, sizeof *ms);
    if (!ms)
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    size_t n = 0;
    int rc = 0;
    size_t i = 0;
    bool tools_placed = !(tools && cJSON_GetArraySize(tools) > 0);
    for (const cJSON *j = messages->child; j; j = j->next, i++) {
        struct msg m;
        if ((rc = read_msg(j, i, &m, e)))
            goto out;
        if (!tools_placed) {
            if (i == 0 && m.role == R_SYSTEM) {
                m.tools = tools;
            } else {
                memset(&ms[n], 0, sizeof ms[n]);
                ms[n].role = R_SYSTEM;
                ms[n].tools = tools;
                n++;
            }
            tools_placed = true;
        }
        struct msg *last = n ? &ms[n - 1] : NULL;
        if (m.role == R_TOOL) {
            const cJSON *c = cJSON_GetObjectItemCaseSensitive(j, "content");
            const char *use = str_field(j, "tool_call_id");
            struct block bl = {true, NULL, c, use ? use : ""};
            if (!(last && last->role == R_USER && last->user_blocks)) {
                memset(&ms[n], 0, sizeof ms[n]);
                ms[n].role = R_USER;
                ms[n].src = i;
                ms[n].user_blocks = true;
                last = &ms[n++];
            }
            if ((rc = add_block(last, bl)))
                goto oom;
        } else if (m.role == R_USER) {
            struct block bl = {false, m.content ? m.content : "", NULL, NULL};
            if (!(last && last->role == R_USER && last->user_blocks && !last->task)) {
                struct msg nm = {0};
                nm.role = R_USER;
                nm.src = i;
                nm.content = m.content;
                nm.task = m.task;
                nm.wo_eos = m.wo_eos;
                nm.user_blocks = true;
                ms[n] = nm;
                last = &ms[n++];
            }
            if ((rc = add_block(last, bl)))
                goto oom;
        } else {
            ms[n++] = m;
        }
        /* ms grows by at most one entry per message plus the tools' system message. */
    }
    if (!tools_placed) { /* no messages at all: the tools still make a system turn */
        memset(&ms[n], 0, sizeof ms[n]);
        ms[n].role = R_SYSTEM;
        ms[n].tools = tools;
        n++;
    }
    if ((rc = sort_results(ms, n)))
        goto oom;

    bool thinking = o->mode == INF_DSML_THINKING;
    bool drop = o->drop_thinking;
    for (size_t k = 0; k < n; k++)
        if (ms[k].tools)
            drop = false;
    if (thinking && drop) {
        /* _drop_thinking_messages: before the last user turn, assistants lose their reasoning
         * and roles outside the kept set (developer) are left out entirely. */
        long last_user = -1;
        for (size_t k = n; k-- > 0;)
            if (ms[k].role == R_USER || ms[k].role == R_DEVELOPER) {
                last_user = (long)k;
                break;
            }
        size_t w = 0;
        for (size_t k = 0; k < n; k++) {
            struct msg m = ms[k];
            bool keep = m.role == R_USER || m.role == R_SYSTEM || m.role == R_TOOL ||
                        m.role == R_REMINDER || (long)k >= last_user;
            if (!keep && m.role == R_ASSISTANT) {
                m.dropped_reasoning = true;
                keep = true;
            }
            if (keep)
                ms[w++] = m;
            else
                free(m.blocks);
        }
        n = w;
    }
    struct enc x = {.want_spans = spans != NULL};
    if (!o->no_bos)
        inf_buf_puts(&x.b, INF_DSML_BOS);
    for (size_t k = 0; k < n; k++)
        if ((rc = render(&x, ms, n, k, o, drop, e))) {
            inf_buf_free(&x.b);
            free(x.spans);
            goto out;
        }
    if (x.b.oom || x.oom) {
        inf_buf_free(&x.b);
        free(x.spans);
        goto oom;
    }
    if (!x.b.p)
        x.b.p = calloc(1, 1);
    *prompt = x.b.p;
    *len = x.b.len;
    if (spans) {
        *spans = x.spans;
        *n_spans = x.n_spans;
    }
    goto out;
oom:
    rc = ctx_err_set(e, CTX_ENOMEM, "dsml encode: out of memory");
out:
    free_msgs(ms, n);
    return rc;
}

int inf_dsml_encode_request(const cJSON *req, const struct inf_dsml_opts *defaults, char **prompt,
                            size_t *len, struct ctx_err *e)
{
    return inf_dsml_encode_request_spans(req, defaults, prompt, len, NULL, NULL, e);
}

int inf_dsml_encode_request_spans(const cJSON *req, const struct inf_dsml_opts *defaults, char **prompt,
                                  size_t *len, struct inf_text_span **spans, size_t *n_spans,
                                  struct ctx_err *e)
{
    struct inf_dsml_opts o = *defaults;
    const cJSON *messages = req, *tools = NULL;
    if (cJSON_IsObject(req)) {
        messages = cJSON_GetObjectItemCaseSensitive(req, "messages");
        tools = cJSON_GetObjectItemCaseSensitive(req, "tools");
        if (tools && !cJSON_IsArray(tools) && !cJSON_IsNull(tools))
            return ctx_err_set(e, CTX_EINVAL, "request.tools must be an array");
        const char *mode = str_field(req, "thinking_mode");
        if (mode) {
            if (!strcmp(mode, "thinking"))
                o.mode = INF_DSML_THINKING;
            else if (!strcmp(mode, "chat"))
                o.mode = INF_DSML_CHAT;
            else
                return ctx_err_set(e, CTX_EINVAL, "request.thinking_mode \"%s\" is not thinking or chat", mode);
        }
        const cJSON *eff = cJSON_GetObjectItemCaseSensitive(req, "reasoning_effort");
        if (cJSON_IsString(eff)) {
            if (!strcmp(eff->valuestring, "max"))
                o.effort = INF_DSML_EFFORT_MAX;
            else if (!strcmp(eff->valuestring, "high"))
                o.effort = INF_DSML_EFFORT_HIGH;
            else
                return ctx_err_set(e, CTX_EINVAL, "request.reasoning_effort \"%s\" is not max or high",
                                   eff->valuestring);
        } else if (cJSON_IsNull(eff))
            o.effort = INF_DSML_EFFORT_NONE;
        const cJSON *dt = cJSON_GetObjectItemCaseSensitive(req, "drop_thinking");
        if (cJSON_IsBool(dt))
            o.drop_thinking = cJSON_IsTrue(dt);
    }
    if (!cJSON_IsArray(messages))
        return ctx_err_set(e, CTX_EINVAL, "request.messages is missing or not an array");
    return inf_dsml_encode_spans(messages, cJSON_IsArray(tools) ? tools : NULL, &o, prompt, len, spans,
                                 n_spans, e);
}
