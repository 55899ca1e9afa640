/* OpenAI-compatible chat completions over libcurl; see openai.h for the contract. */
#include "openai.h"

#include <curl/curl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ctx_config.h"
#include "json.h"
#include "sse.h"

/* A hostile or broken server must not make the assembled message grow without bound. */
#define MAX_MESSAGE_BYTES ((size_t)256 << 20)
#define MAX_TOOL_CALLS 256
#define MAX_ERROR_BODY ((size_t)64 << 10)
#define POLL_MS 20

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static char *xstrdup(const char *s)
{
    return s ? strdup(s) : NULL;
}

/* A printable excerpt of untrusted bytes for error messages (cap >= 8). */
static void excerpt(const char *s, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char tmp[8];
        size_t k;
        if (c >= 0x20 && c != 0x7f) {
            tmp[0] = (char)c;
            k = 1;
        } else {
            k = (size_t)snprintf(tmp, sizeof tmp, "\\x%02x", c);
        }
        if (o + k + 4 > cap) { /* room for "..." and the NUL is always kept */
            memcpy(out + o, "...", 3);
            o += 3;
            break;
        }
        memcpy(out + o, tmp, k);
        o += k;
    }
    out[o] = '\0';
}

/* ======================================================================== request builder == */

static const char *map_role(const char *role)
{
    static const char *const same[] = {"system", "user", "assistant", "tool"};
    for (size_t i = 0; i < sizeof same / sizeof same[0]; i++)
        if (strcmp(role, same[i]) == 0)
            return same[i];
    /* The DSML template renders both as user turns; OpenAI-compatible servers know neither. */
    if (strcmp(role, "latest_reminder") == 0 || strcmp(role, "developer") == 0)
        return "user";
    return NULL;
}

/* A tool for the request: {type: function, function: {...}}; bare function objects are wrapped. */
static cJSON *tool_item(const cJSON *t, size_t i, struct ctx_err *e)
{
    if (!cJSON_IsObject(t)) {
        ctx_err_set(e, CTX_EINVAL, "tools[%zu] is not an object", i);
        return NULL;
    }
    const cJSON *fn = cJSON_GetObjectItemCaseSensitive(t, "function");
    const cJSON *src = cJSON_IsObject(fn) ? fn : t;
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(src, "name");
    if (!cJSON_IsString(name) || !name->valuestring[0]) {
        ctx_err_set(e, CTX_EINVAL, "tools[%zu].function.name is missing or not a string", i);
        return NULL;
    }
    cJSON *out = cJSON_CreateObject();
    cJSON *f = cJSON_Duplicate(src, true);
    if (!out || !f || !cJSON_AddStringToObject(out, "type", "function")) {
        cJSON_Delete(out);
        cJSON_Delete(f);
        ctx_err_set(e, CTX_ENOMEM, "tools[%zu]: out of memory", i);
        return NULL;
    }
    cJSON_AddItemToObject(out, "function", f);
    return out;
}

static int add_tools(cJSON *body, const cJSON *tools, const char *where, struct ctx_err *e)
{
    if (!cJSON_IsArray(tools))
        return ctx_err_set(e, CTX_EINVAL, "%s is not an array", where);
    if (cJSON_GetArraySize(tools) == 0)
        return 0; /* OpenAI rejects an empty tools array */
    cJSON *arr = cJSON_AddArrayToObject(body, "tools");
    if (!arr)
        return ctx_err_set(e, CTX_ENOMEM, "tools: out of memory");
    size_t i = 0;
    for (const cJSON *t = tools->child; t; t = t->next, i++) {
        cJSON *it = tool_item(t, i, e);
        if (!it)
            return ctx_err_prefix(e, "%s: ", where);
        cJSON_AddItemToArray(arr, it);
    }
    return 0;
}

/* Ids of the preceding assistant's tool calls still waiting for a result (for tool messages
 * that carry no tool_call_id, as the local DSML parser produces them). */
struct pending_ids {
    char ids[MAX_TOOL_CALLS][48];
    size_t n, next;
};

static cJSON *copy_tool_calls(const cJSON *calls, size_t mi, struct pending_ids *pend,
                              struct ctx_err *e)
{
    cJSON *arr = cJSON_CreateArray();
    if (!arr)
        goto oom;
    pend->n = pend->next = 0;
    size_t ci = 0;
    for (const cJSON *c = calls->child; c; c = c->next, ci++) {
        if (!cJSON_IsObject(c)) {
            ctx_err_set(e, CTX_EINVAL, "messages[%zu].tool_calls[%zu] is not an object", mi, ci);
            goto fail;
        }
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(c, "function");
        const cJSON *name =
            cJSON_IsObject(fn) ? cJSON_GetObjectItemCaseSensitive(fn, "name") : NULL;
        if (!cJSON_IsString(name) || !name->valuestring[0]) {
            ctx_err_set(e, CTX_EINVAL,
                        "messages[%zu].tool_calls[%zu].function.name is missing or not a string",
                        mi, ci);
            goto fail;
        }
        const cJSON *args = cJSON_GetObjectItemCaseSensitive(fn, "arguments");
        char *args_text = NULL;
        if (cJSON_IsString(args)) {
            args_text = strdup(args->valuestring);
        } else if (!args || cJSON_IsNull(args)) {
            args_text = strdup("{}");
        } else if (cJSON_IsObject(args)) {
            args_text = cJSON_PrintUnformatted(args); /* the API wants a JSON string */
        } else {
            ctx_err_set(e, CTX_EINVAL,
                        "messages[%zu].tool_calls[%zu].function.arguments is neither a string nor "
                        "an object",
                        mi, ci);
            goto fail;
        }
        if (!args_text)
            goto oom;
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(c, "id");
        char idbuf[48];
        if (cJSON_IsString(id) && id->valuestring[0])
            snprintf(idbuf, sizeof idbuf, "%s", id->valuestring);
        else
            snprintf(idbuf, sizeof idbuf, "call_%zu_%zu", mi, ci);
        cJSON *o = cJSON_CreateObject();
        cJSON *f = cJSON_CreateObject();
        if (!o || !f) {
            cJSON_Delete(o);
            cJSON_Delete(f);
            free(args_text);
            goto oom;
        }
        cJSON_AddItemToArray(arr, o);
        cJSON_AddItemToObject(
            o, "id",
            cJSON_CreateString(cJSON_IsString(id) && id->valuestring[0] ? id->valuestring : idbuf));
        cJSON_AddStringToObject(o, "type", "function");
        cJSON_AddItemToObject(o, "function", f);
        cJSON_AddStringToObject(f, "name", name->valuestring);
        cJSON *a = cJSON_AddStringToObject(f, "arguments", args_text);
        free(args_text);
        if (!a)
            goto oom;
        if (pend->n < MAX_TOOL_CALLS)
            snprintf(pend->ids[pend->n++], sizeof pend->ids[0], "%s", idbuf);
    }
    return arr;
oom:
    ctx_err_set(e, CTX_ENOMEM, "messages[%zu].tool_calls: out of memory", mi);
fail:
    cJSON_Delete(arr);
    return NULL;
}

cJSON *agent_openai_request_body(const struct agent_openai_config *cfg, const cJSON *messages,
                                 const cJSON *tools, struct ctx_err *e)
{
    if (!cfg || !cfg->model || !cfg->model[0]) {
        ctx_err_set(e, CTX_EINVAL, "no model name configured");
        return NULL;
    }
    if (!cJSON_IsArray(messages) || cJSON_GetArraySize(messages) == 0) {
        ctx_err_set(e, CTX_EINVAL, "messages is not a non-empty array");
        return NULL;
    }
    cJSON *body = cJSON_CreateObject();
    if (!body || !cJSON_AddStringToObject(body, "model", cfg->model))
        goto oom;
    cJSON *out = cJSON_AddArrayToObject(body, "messages");
    if (!out)
        goto oom;
    const cJSON *system_tools = NULL;
    struct pending_ids *pend = calloc(1, sizeof *pend);
    if (!pend)
        goto oom;
    size_t mi = 0;
    for (const cJSON *m = messages->child; m; m = m->next, mi++) {
        if (!cJSON_IsObject(m)) {
            ctx_err_set(e, CTX_EINVAL, "messages[%zu] is not an object", mi);
            goto fail_pend;
        }
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        if (!cJSON_IsString(role)) {
            ctx_err_set(e, CTX_EINVAL, "messages[%zu].role is missing or not a string", mi);
            goto fail_pend;
        }
        const char *r = map_role(role->valuestring);
        if (!r) {
            ctx_err_set(e, CTX_EINVAL,
                        "messages[%zu].role \"%.40s\" is not system, user, assistant, tool, "
                        "developer or latest_reminder",
                        mi, role->valuestring);
            goto fail_pend;
        }
        cJSON *o = cJSON_CreateObject();
        if (!o)
            goto oom_pend;
        cJSON_AddItemToArray(out, o);
        if (!cJSON_AddStringToObject(o, "role", r))
            goto oom_pend;
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
        cJSON *cc;
        if (!content || cJSON_IsNull(content))
            cc = cJSON_CreateString("");
        else if (cJSON_IsString(content) || cJSON_IsArray(content)) /* arrays: multi-part content */
            cc = cJSON_Duplicate(content, true);
        else {
            ctx_err_set(e, CTX_EINVAL, "messages[%zu].content is neither a string nor an array",
                        mi);
            goto fail_pend;
        }
        if (!cc)
            goto oom_pend;
        cJSON_AddItemToObject(o, "content", cc);
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(m, "name");
        if (cJSON_IsString(name) && strcmp(r, "tool") != 0)
            cJSON_AddStringToObject(o, "name", name->valuestring);

        if (strcmp(r, "system") == 0) {
            const cJSON *t = cJSON_GetObjectItemCaseSensitive(m, "tools");
            if (t && !system_tools)
                system_tools = t;
        } else if (strcmp(r, "assistant") == 0) {
            const cJSON *calls = cJSON_GetObjectItemCaseSensitive(m, "tool_calls");
            bool made_calls = false;
            if (calls && !cJSON_IsNull(calls)) {
                if (!cJSON_IsArray(calls)) {
                    ctx_err_set(e, CTX_EINVAL, "messages[%zu].tool_calls is not an array", mi);
                    goto fail_pend;
                }
                if (cJSON_GetArraySize(calls) > 0) { /* OpenAI rejects an empty tool_calls array */
                    cJSON *tc = copy_tool_calls(calls, mi, pend, e);
                    if (!tc)
                        goto fail_pend;
                    cJSON_AddItemToObject(o, "tool_calls", tc);
                    made_calls = true;
                }
            }
            const cJSON *rc = cJSON_GetObjectItemCaseSensitive(m, "reasoning_content");
            bool send = cfg->reasoning_back == AGENT_OPENAI_REASONING_ALWAYS ||
                        (cfg->reasoning_back == AGENT_OPENAI_REASONING_TOOL_TURNS && made_calls);
            if (send && cJSON_IsString(rc) && rc->valuestring[0] &&
                !cJSON_AddStringToObject(o, "reasoning_content", rc->valuestring))
                goto oom_pend;
        } else if (strcmp(r, "tool") == 0) {
            const cJSON *id = cJSON_GetObjectItemCaseSensitive(m, "tool_call_id");
            const char *idv = NULL;
            if (cJSON_IsString(id) && id->valuestring[0]) {
                idv = id->valuestring;
            } else if (pend->next < pend->n) {
                idv = pend->ids[pend->next++];
            } else {
                ctx_err_set(
                    e, CTX_EINVAL,
                    "messages[%zu] (role tool) has no tool_call_id and no earlier tool call "
                    "is left for it to answer",
                    mi);
                goto fail_pend;
            }
            if (!cJSON_AddStringToObject(o, "tool_call_id", idv))
                goto oom_pend;
        }
    }
    free(pend);
    pend = NULL;
    if (tools) {
        if (add_tools(body, tools, "tools", e))
            goto fail;
    } else if (system_tools) {
        if (add_tools(body, system_tools, "system message tools", e))
            goto fail;
    }
    if (!cJSON_AddTrueToObject(body, "stream"))
        goto oom;
    cJSON *so = cJSON_AddObjectToObject(body, "stream_options");
    if (!so || !cJSON_AddTrueToObject(so, "include_usage"))
        goto oom;
    if (cfg->thinking) {
        cJSON *th = cJSON_AddObjectToObject(body, "thinking");
        if (!th || !cJSON_AddStringToObject(th, "type", cfg->thinking))
            goto oom;
    }
    if (cfg->reasoning_effort &&
        !cJSON_AddStringToObject(body, "reasoning_effort", cfg->reasoning_effort))
        goto oom;
    if (cfg->max_tokens > 0 &&
        !cJSON_AddNumberToObject(body, "max_tokens", (double)cfg->max_tokens))
        goto oom;
    if (cfg->extra_body) {
        if (!cJSON_IsObject(cfg->extra_body)) {
            ctx_err_set(e, CTX_EINVAL, "extra_body is not a JSON object");
            goto fail;
        }
        for (const cJSON *it = cfg->extra_body->child; it; it = it->next) {
            cJSON *d = cJSON_Duplicate(it, true);
            if (!d)
                goto oom;
            if (cJSON_GetObjectItemCaseSensitive(body, it->string))
                cJSON_ReplaceItemInObjectCaseSensitive(body, it->string, d);
            else
                cJSON_AddItemToObject(body, it->string, d);
        }
    }
    return body;
oom_pend:
    ctx_err_set(e, CTX_ENOMEM, "building the request: out of memory");
fail_pend:
    free(pend);
    cJSON_Delete(body);
    return NULL;
oom:
    ctx_err_set(e, CTX_ENOMEM, "building the request: out of memory");
fail:
    cJSON_Delete(body);
    return NULL;
}

/* ======================================================================= stream assembler == */

struct sbuf {
    char *p;
    size_t len, cap;
};

static int sbuf_add(struct sbuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 256;
        while (nc < b->len + n + 1)
            nc *= 2;
        char *np = realloc(b->p, nc);
        if (!np)
            return CTX_ENOMEM;
        b->p = np;
        b->cap = nc;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

static const char *sbuf_str(const struct sbuf *b)
{
    return b->p ? b->p : "";
}

struct tool_call {
    long index; /* the server's index */
    char *id;
    char *name;
    struct sbuf args;
    bool begun;
};

struct agent_openai_stream {
    int (*on_event)(void *ud, const struct agent_openai_event *ev, struct ctx_err *e);
    void *ud;
    uint64_t t0_ns;
    struct sbuf content, reasoning;
    struct tool_call *calls;
    size_t ncalls;
    size_t total; /* bytes assembled, bounded by MAX_MESSAGE_BYTES */
    char finish_reason[32];
    bool saw_finish, saw_done, ended;
    struct agent_openai_usage usage;
};

struct agent_openai_stream *agent_openai_stream_new(
    int (*on_event)(void *ud, const struct agent_openai_event *ev, struct ctx_err *e), void *ud,
    uint64_t t0_ns)
{
    struct agent_openai_stream *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->on_event = on_event;
    s->ud = ud;
    s->t0_ns = t0_ns ? t0_ns : now_ns();
    s->usage.cached_tokens = -1;
    s->usage.reasoning_tokens = -1;
    s->usage.ttft_ms = -1;
    return s;
}

void agent_openai_stream_free(struct agent_openai_stream *s)
{
    if (!s)
        return;
    free(s->content.p);
    free(s->reasoning.p);
    for (size_t i = 0; i < s->ncalls; i++) {
        free(s->calls[i].id);
        free(s->calls[i].name);
        free(s->calls[i].args.p);
    }
    free(s->calls);
    free(s);
}

static int emit(struct agent_openai_stream *s, const struct agent_openai_event *ev,
                struct ctx_err *e)
{
    return s->on_event ? s->on_event(s->ud, ev, e) : 0;
}

static void first_delta(struct agent_openai_stream *s)
{
    if (s->usage.ttft_ms < 0)
        s->usage.ttft_ms = (double)(now_ns() - s->t0_ns) / 1e6;
}

static int grow_total(struct agent_openai_stream *s, size_t n, uint64_t offset, struct ctx_err *e)
{
    if (n > MAX_MESSAGE_BYTES - s->total)
        return ctx_err_set(e, CTX_ERANGE,
                           "stream event at byte offset %" PRIu64
                           ": the answer grew past %zu bytes",
                           offset, MAX_MESSAGE_BYTES);
    s->total += n;
    return 0;
}

static int text_delta(struct agent_openai_stream *s, struct sbuf *b, enum agent_openai_event_kind k,
                      const char *t, uint64_t offset, struct ctx_err *e)
{
    size_t n = strlen(t);
    if (n == 0)
        return 0;
    int rc = grow_total(s, n, offset, e);
    if (rc)
        return rc;
    if (sbuf_add(b, t, n))
        return ctx_err_set(e, CTX_ENOMEM, "assembling the answer: out of memory");
    first_delta(s);
    struct agent_openai_event ev = {.kind = k, .text = t, .len = n};
    return emit(s, &ev, e);
}

static int64_t num_field(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, name) : NULL;
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0) || v->valuedouble > 9.0e15)
        return -1;
    return (int64_t)v->valuedouble;
}

static void take_usage(struct agent_openai_stream *s, const cJSON *u)
{
    struct agent_openai_usage *us = &s->usage;
    us->reported = true;
    int64_t v = num_field(u, "prompt_tokens");
    us->prompt_tokens = v < 0 ? 0 : v;
    v = num_field(u, "completion_tokens");
    us->completion_tokens = v < 0 ? 0 : v;
    /* DeepSeek reports hits at the top level, OpenAI (and vLLM, llama.cpp) under details */
    v = num_field(u, "prompt_cache_hit_tokens");
    if (v < 0)
        v = num_field(cJSON_GetObjectItemCaseSensitive(u, "prompt_tokens_details"),
                      "cached_tokens");
    us->cached_tokens = v;
    us->reasoning_tokens = num_field(
        cJSON_GetObjectItemCaseSensitive(u, "completion_tokens_details"), "reasoning_tokens");
}

static struct tool_call *find_call(struct agent_openai_stream *s, long index, const char *id,
                                   bool has_index)
{
    for (size_t i = 0; i < s->ncalls; i++) {
        if (has_index
                ? s->calls[i].index == index
                : (id ? s->calls[i].id && strcmp(s->calls[i].id, id) == 0 : i + 1 == s->ncalls))
            return &s->calls[i];
    }
    return NULL;
}

static int tool_delta(struct agent_openai_stream *s, const cJSON *tc, size_t k, uint64_t offset,
                      struct ctx_err *e)
{
    if (!cJSON_IsObject(tc))
        return ctx_err_set(
            e, CTX_EPROTO,
            "stream event at byte offset %" PRIu64 ": tool_calls[%zu] is not an object", offset, k);
    const cJSON *jidx = cJSON_GetObjectItemCaseSensitive(tc, "index");
    const cJSON *jid = cJSON_GetObjectItemCaseSensitive(tc, "id");
    const cJSON *fn = cJSON_GetObjectItemCaseSensitive(tc, "function");
    const cJSON *jname = cJSON_IsObject(fn) ? cJSON_GetObjectItemCaseSensitive(fn, "name") : NULL;
    const cJSON *jargs =
        cJSON_IsObject(fn) ? cJSON_GetObjectItemCaseSensitive(fn, "arguments") : NULL;
    bool has_index = jidx && !cJSON_IsNull(jidx);
    long index = 0;
    if (has_index) {
        if (!cJSON_IsNumber(jidx) || !(jidx->valuedouble >= 0) || jidx->valuedouble > 1e6 ||
            jidx->valuedouble != (double)(long)jidx->valuedouble)
            return ctx_err_set(e, CTX_EPROTO,
                               "stream event at byte offset %" PRIu64
                               ": tool_calls[%zu].index is not a small non-negative integer",
                               offset, k);
        index = (long)jidx->valuedouble;
    }
    const char *id = cJSON_IsString(jid) && jid->valuestring[0] ? jid->valuestring : NULL;
    if (fn && !cJSON_IsObject(fn) && !cJSON_IsNull(fn))
        return ctx_err_set(e, CTX_EPROTO,
                           "stream event at byte offset %" PRIu64
                           ": tool_calls[%zu].function is not an object",
                           offset, k);
    if (jname && !cJSON_IsString(jname) && !cJSON_IsNull(jname))
        return ctx_err_set(e, CTX_EPROTO,
                           "stream event at byte offset %" PRIu64
                           ": tool_calls[%zu].function.name is not a string",
                           offset, k);
    struct tool_call *c = find_call(s, index, id, has_index);
    if (!c) {
        if (s->ncalls >= MAX_TOOL_CALLS)
            return ctx_err_set(e, CTX_ERANGE,
                               "stream event at byte offset %" PRIu64 ": more than %d tool calls",
                               offset, MAX_TOOL_CALLS);
        struct tool_call *nc = realloc(s->calls, (s->ncalls + 1) * sizeof *nc);
        if (!nc)
            return ctx_err_set(e, CTX_ENOMEM, "assembling tool calls: out of memory");
        s->calls = nc;
        c = &s->calls[s->ncalls];
        memset(c, 0, sizeof *c);
        long maxi = -1;
        for (size_t i = 0; i < s->ncalls; i++)
            if (s->calls[i].index > maxi)
                maxi = s->calls[i].index;
        c->index = has_index ? index : maxi + 1;
        s->ncalls++;
    }
    int pos = (int)(c - s->calls);
    if (id && !c->id) {
        if (!(c->id = strdup(id)))
            return ctx_err_set(e, CTX_ENOMEM, "assembling tool calls: out of memory");
        int rc = grow_total(s, strlen(id), offset, e);
        if (rc)
            return rc;
    }
    if (cJSON_IsString(jname) && jname->valuestring[0] && !c->name) {
        int rc = grow_total(s, strlen(jname->valuestring), offset, e);
        if (rc)
            return rc;
        if (!(c->name = strdup(jname->valuestring)))
            return ctx_err_set(e, CTX_ENOMEM, "assembling tool calls: out of memory");
    }
    const char *delta = NULL;
    char *printed = NULL;
    if (cJSON_IsString(jargs)) {
        delta = jargs->valuestring;
    } else if (cJSON_IsObject(jargs)) { /* some servers send parsed arguments when not streaming */
        if (!(printed = cJSON_PrintUnformatted(jargs)))
            return ctx_err_set(e, CTX_ENOMEM, "assembling tool calls: out of memory");
        delta = printed;
    } else if (jargs && !cJSON_IsNull(jargs)) {
        return ctx_err_set(e, CTX_EPROTO,
                           "stream event at byte offset %" PRIu64
                           ": tool_calls[%zu].function.arguments is not a string",
                           offset, k);
    }
    size_t dn = delta ? strlen(delta) : 0;
    size_t before = c->args.len;
    int rc = 0;
    if (dn) {
        rc = grow_total(s, dn, offset, e);
        if (!rc && sbuf_add(&c->args, delta, dn))
            rc = ctx_err_set(e, CTX_ENOMEM, "assembling tool calls: out of memory");
    }
    free(printed);
    if (rc)
        return rc;
    if (!c->begun && c->name) {
        /* Announce the call once its name is known; arguments that came earlier follow at once. */
        c->begun = true;
        first_delta(s);
        struct agent_openai_event ev = {.kind = AGENT_OPENAI_EV_TOOL_BEGIN,
                                        .index = pos,
                                        .id = c->id ? c->id : "",
                                        .name = c->name};
        if ((rc = emit(s, &ev, e)))
            return rc;
        if (c->args.len) {
            struct agent_openai_event ea = {.kind = AGENT_OPENAI_EV_TOOL_ARGS,
                                            .index = pos,
                                            .text = c->args.p,
                                            .len = c->args.len,
                                            .id = ev.id,
                                            .name = c->name};
            return emit(s, &ea, e);
        }
    } else if (c->begun && dn) {
        c = &s->calls[pos];
        struct agent_openai_event ea = {.kind = AGENT_OPENAI_EV_TOOL_ARGS,
                                        .index = pos,
                                        .text = c->args.p + before,
                                        .len = dn,
                                        .id = c->id ? c->id : "",
                                        .name = c->name};
        return emit(s, &ea, e);
    }
    return 0;
}

/* The human-readable message of an error object or value. */
static void error_json_text(const cJSON *v, char *out, size_t cap)
{
    const cJSON *err = cJSON_IsObject(v) ? cJSON_GetObjectItemCaseSensitive(v, "error") : NULL;
    const cJSON *o = cJSON_IsObject(err) ? err : v;
    if (cJSON_IsString(err)) {
        snprintf(out, cap, "%s", err->valuestring);
        return;
    }
    const cJSON *msg = cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, "message") : NULL;
    if (!cJSON_IsString(msg) && cJSON_IsObject(o))
        msg = cJSON_GetObjectItemCaseSensitive(o, "detail");
    if (cJSON_IsString(msg)) {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(o, "type");
        const cJSON *code = cJSON_GetObjectItemCaseSensitive(o, "code");
        if (cJSON_IsString(type) && type->valuestring[0])
            snprintf(out, cap, "%s (%s)", msg->valuestring, type->valuestring);
        else if (cJSON_IsString(code) && code->valuestring[0])
            snprintf(out, cap, "%s (%s)", msg->valuestring, code->valuestring);
        else
            snprintf(out, cap, "%s", msg->valuestring);
        return;
    }
    char *p = cJSON_PrintUnformatted(v);
    excerpt(p ? p : "", p ? strlen(p) : 0, out, cap);
    free(p);
}

int agent_openai_stream_data(struct agent_openai_stream *s, const char *json, size_t len,
                             uint64_t offset, struct ctx_err *e)
{
    if (s->saw_done || s->ended)
        return 0;
    struct ctx_err pe = {0};
    cJSON *root = ctx_json_parse(json, len, "its data", &pe);
    if (!root) {
        char ex[96];
        excerpt(json, len, ex, sizeof ex);
        return ctx_err_set(e, CTX_EPROTO,
                           "stream event at byte offset %" PRIu64 " is not valid JSON (%s): %s",
                           offset, pe.msg, ex);
    }
    int rc = 0;
    char ebuf[300];
    if (!cJSON_IsObject(root)) {
        char ex[96];
        excerpt(json, len, ex, sizeof ex);
        rc = ctx_err_set(e, CTX_EPROTO,
                         "stream event at byte offset %" PRIu64 " is not a JSON object: %s", offset,
                         ex);
        goto out;
    }
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(root, "error");
    if (err && !cJSON_IsNull(err)) {
        error_json_text(root, ebuf, sizeof ebuf);
        rc =
            ctx_err_set(e, CTX_EPROTO,
                        "the server reported an error in the stream at byte offset %" PRIu64 ": %s",
                        offset, ebuf);
        goto out;
    }
    const cJSON *choices = cJSON_GetObjectItemCaseSensitive(root, "choices");
    if (choices && !cJSON_IsNull(choices) && !cJSON_IsArray(choices)) {
        rc =
            ctx_err_set(e, CTX_EPROTO,
                        "stream event at byte offset %" PRIu64 ": choices is not an array", offset);
        goto out;
    }
    size_t ci = 0;
    for (const cJSON *ch = choices ? choices->child : NULL; ch; ch = ch->next, ci++) {
        if (!cJSON_IsObject(ch)) {
            rc = ctx_err_set(e, CTX_EPROTO,
                             "stream event at byte offset %" PRIu64
                             ": choices[%zu] is not an object",
                             offset, ci);
            goto out;
        }
        const cJSON *idx = cJSON_GetObjectItemCaseSensitive(ch, "index");
        if (cJSON_IsNumber(idx) && idx->valuedouble != 0)
            continue; /* we ask for one choice (n = 1); others are not ours */
        const char *field = "delta";
        const cJSON *d = cJSON_GetObjectItemCaseSensitive(ch, "delta");
        if (!d) { /* a non-streamed chat.completion */
            field = "message";
            d = cJSON_GetObjectItemCaseSensitive(ch, "message");
        }
        if (d && !cJSON_IsNull(d)) {
            if (!cJSON_IsObject(d)) {
                rc = ctx_err_set(e, CTX_EPROTO,
                                 "stream event at byte offset %" PRIu64
                                 ": choices[%zu].%s is not an object",
                                 offset, ci, field);
                goto out;
            }
            /* DeepSeek: reasoning_content; vLLM, OpenRouter, Ollama: reasoning */
            const char *rnames[] = {"reasoning_content", "reasoning", "content"};
            for (int f = 0; f < 3; f++) {
                const cJSON *t = cJSON_GetObjectItemCaseSensitive(d, rnames[f]);
                if (!t || cJSON_IsNull(t))
                    continue;
                if (!cJSON_IsString(t)) {
                    rc = ctx_err_set(e, CTX_EPROTO,
                                     "stream event at byte offset %" PRIu64
                                     ": choices[%zu].%s.%s is not a string",
                                     offset, ci, field, rnames[f]);
                    goto out;
                }
                if (f == 1 && cJSON_GetObjectItemCaseSensitive(d, "reasoning_content"))
                    continue; /* both present: the same text twice */
                rc = text_delta(s, f == 2 ? &s->content : &s->reasoning,
                                f == 2 ? AGENT_OPENAI_EV_CONTENT : AGENT_OPENAI_EV_REASONING,
                                t->valuestring, offset, e);
                if (rc)
                    goto out;
            }
            const cJSON *tcs = cJSON_GetObjectItemCaseSensitive(d, "tool_calls");
            if (tcs && !cJSON_IsNull(tcs)) {
                if (!cJSON_IsArray(tcs)) {
                    rc = ctx_err_set(e, CTX_EPROTO,
                                     "stream event at byte offset %" PRIu64
                                     ": choices[%zu].%s.tool_calls is not an array",
                                     offset, ci, field);
                    goto out;
                }
                size_t k = 0;
                for (const cJSON *tc = tcs->child; tc; tc = tc->next, k++)
                    if ((rc = tool_delta(s, tc, k, offset, e)))
                        goto out;
            }
        }
        const cJSON *fr = cJSON_GetObjectItemCaseSensitive(ch, "finish_reason");
        if (cJSON_IsString(fr) && fr->valuestring[0]) {
            snprintf(s->finish_reason, sizeof s->finish_reason, "%s", fr->valuestring);
            s->saw_finish = true;
        }
    }
    const cJSON *u = cJSON_GetObjectItemCaseSensitive(root, "usage");
    if (cJSON_IsObject(u))
        take_usage(s, u);
out:
    cJSON_Delete(root);
    return rc;
}

void agent_openai_stream_done(struct agent_openai_stream *s)
{
    s->saw_done = true;
}

bool agent_openai_stream_saw_done(const struct agent_openai_stream *s)
{
    return s->saw_done;
}

int agent_openai_stream_end(struct agent_openai_stream *s, struct ctx_err *e)
{
    if (s->ended)
        return ctx_err_set(e, CTX_EINTERNAL, "agent_openai_stream_end called twice");
    s->ended = true;
    if (!s->saw_finish && !s->saw_done)
        return ctx_err_set(
            e, CTX_EPROTO,
            "the stream ended before the answer was finished (no finish_reason and no "
            "[DONE]; %zu content bytes, %zu reasoning bytes, %zu tool calls so far)",
            s->content.len, s->reasoning.len, s->ncalls);
    for (size_t i = 0; i < s->ncalls; i++) {
        struct tool_call *c = &s->calls[i];
        if (!c->name)
            return ctx_err_set(e, CTX_EPROTO,
                               "tool call %zu (id %s) never received a function name", i,
                               c->id ? c->id : "none");
        struct agent_openai_event ev = {.kind = AGENT_OPENAI_EV_TOOL_END,
                                        .index = (int)i,
                                        .id = c->id ? c->id : "",
                                        .name = c->name,
                                        .text = sbuf_str(&c->args),
                                        .len = c->args.len};
        int rc = emit(s, &ev, e);
        if (rc)
            return rc;
    }
    s->usage.total_ms = (double)(now_ns() - s->t0_ns) / 1e6;
    struct agent_openai_event ev = {.kind = AGENT_OPENAI_EV_DONE,
                                    .finish_reason = s->finish_reason,
                                    .usage = &s->usage,
                                    .text = "",
                                    .id = "",
                                    .name = ""};
    return emit(s, &ev, e);
}

cJSON *agent_openai_stream_message(const struct agent_openai_stream *s)
{
    cJSON *m = cJSON_CreateObject();
    if (!m)
        return NULL;
    cJSON_AddStringToObject(m, "role", "assistant");
    cJSON_AddStringToObject(m, "content", sbuf_str(&s->content));
    cJSON_AddStringToObject(m, "reasoning_content", sbuf_str(&s->reasoning));
    cJSON *arr = cJSON_AddArrayToObject(m, "tool_calls");
    for (size_t i = 0; arr && i < s->ncalls; i++) {
        const struct tool_call *c = &s->calls[i];
        cJSON *o = cJSON_CreateObject();
        cJSON *f = cJSON_CreateObject();
        if (!o || !f) {
            cJSON_Delete(o);
            cJSON_Delete(f);
            cJSON_Delete(m);
            return NULL;
        }
        char idbuf[32];
        snprintf(idbuf, sizeof idbuf, "call_%zu", i); /* servers always send ids; just in case */
        cJSON_AddStringToObject(o, "id", c->id ? c->id : idbuf);
        cJSON_AddStringToObject(o, "type", "function");
        cJSON_AddStringToObject(f, "name", c->name ? c->name : "");
        cJSON_AddStringToObject(f, "arguments", sbuf_str(&c->args));
        cJSON_AddItemToObject(o, "function", f);
        cJSON_AddItemToArray(arr, o);
    }
    /* cJSON's add functions fail silently on allocation failure: check the result is whole */
    if (!arr || cJSON_GetArraySize(m) != 4 || (size_t)cJSON_GetArraySize(arr) != s->ncalls) {
        cJSON_Delete(m);
        return NULL;
    }
    return m;
}

const char *agent_openai_stream_finish_reason(const struct agent_openai_stream *s)
{
    return s->finish_reason;
}

const struct agent_openai_usage *agent_openai_stream_usage(const struct agent_openai_stream *s)
{
    return &s->usage;
}

/* ============================================================================ error bodies == */

void agent_openai_error_text(const char *body, size_t len, char *out, size_t cap)
{
    if (cap == 0)
        return;
    out[0] = '\0';
    size_t a = 0;
    while (a < len && (body[a] == ' ' || body[a] == '\n' || body[a] == '\r' || body[a] == '\t'))
        a++;
    if (a == len) {
        snprintf(out, cap, "(empty body)");
        return;
    }
    cJSON *v = cJSON_ParseWithLength(body + a, len - a);
    if (v && (cJSON_IsObject(v) || cJSON_IsString(v))) {
        if (cJSON_IsString(v))
            snprintf(out, cap, "%s", v->valuestring);
        else
            error_json_text(v, out, cap);
        cJSON_Delete(v);
        return;
    }
    cJSON_Delete(v);
    size_t b = len;
    while (b > a && (body[b - 1] == ' ' || body[b - 1] == '\n' || body[b - 1] == '\r'))
        b--;
    excerpt(body + a, b - a, out, cap < 300 ? cap : 300);
}

int agent_openai_status_code(long status)
{
    switch (status) {
    case 400:
    case 422: return CTX_EINVAL;
    case 401:
    case 403: return CTX_EDENIED;
    case 404: return CTX_ENOTFOUND;
    case 408:
    case 504: return CTX_ETIMEDOUT;
    case 413: return CTX_ERANGE;
    case 429:
    case 503: return CTX_EBUSY;
    default: return status >= 500 && status < 600 ? CTX_EIO : CTX_EPROTO;
    }
}

/* ============================================================================ HTTP client == */

struct agent_openai {
    struct agent_openai_config cfg; /* strings below are owned copies */
    char *url;                      /* the full chat-completions URL */
    char *url_shown;                /* the same without query string or user info, for messages */
    char *model, *thinking, *effort, *key_env;
    cJSON *extra;
    char *auth; /* "Authorization: Bearer …": wiped on free */
    CURL *easy;
    CURLM *multi;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_init(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static char *build_url(const char *base)
{
    static const char suffix[] = "/chat/completions";
    const char *q = strpbrk(base, "?#");
    size_t path_end = q ? (size_t)(q - base) : strlen(base);
    size_t n = path_end;
    while (n > 0 && base[n - 1] == '/')
        n--;
    bool has = n >= sizeof suffix - 1 &&
               memcmp(base + n - (sizeof suffix - 1), suffix, sizeof suffix - 1) == 0;
    size_t total = n + (has ? 0 : sizeof suffix - 1) + strlen(base + path_end) + 1;
    char *u = malloc(total);
    if (!u)
        return NULL;
    memcpy(u, base, n);
    size_t o = n;
    if (!has) {
        memcpy(u + o, suffix, sizeof suffix - 1);
        o += sizeof suffix - 1;
    }
    strcpy(u + o, base + path_end);
    return u;
}

/* scheme://host[:port]/path, with user info and query removed: keys sometimes travel there. */
static char *shown_url(const char *url)
{
    char *s = strdup(url);
    if (!s)
        return NULL;
    char *q = strpbrk(s, "?#");
    if (q)
        *q = '\0';
    char *hs = strstr(s, "://");
    if (hs) {
        hs += 3;
        char *slash = strchr(hs, '/');
        char *at = strchr(hs, '@');
        if (at && (!slash || at < slash))
            memmove(hs, at + 1, strlen(at + 1) + 1);
    }
    return s;
}

struct agent_openai *agent_openai_new(const struct agent_openai_config *cfg, struct ctx_err *e)
{
    if (!cfg || !cfg->url || !cfg->url[0]) {
        ctx_err_set(e, CTX_EINVAL, "no URL configured for the OpenAI-compatible backend");
        return NULL;
    }
    if (strncmp(cfg->url, "http://", 7) != 0 && strncmp(cfg->url, "https://", 8) != 0) {
        char ex[80];
        excerpt(cfg->url, strlen(cfg->url), ex, sizeof ex);
        ctx_err_set(e, CTX_EINVAL, "URL \"%s\" does not start with http:// or https://", ex);
        return NULL;
    }
    if (!cfg->model || !cfg->model[0]) {
        ctx_err_set(e, CTX_EINVAL, "no model name configured for the OpenAI-compatible backend");
        return NULL;
    }
    if (cfg->extra_body && !cJSON_IsObject(cfg->extra_body)) {
        ctx_err_set(e, CTX_EINVAL, "extra_body is not a JSON object");
        return NULL;
    }
    const char *key = NULL;
    if (cfg->api_key_env) {
        key = getenv(cfg->api_key_env);
        if (!key || !key[0]) {
            ctx_err_set(e, CTX_EINVAL, "environment variable %s (the API key) is %s",
                        cfg->api_key_env, key ? "empty" : "not set");
            return NULL;
        }
        for (const char *k = key; *k; k++)
            if ((unsigned char)*k < 0x20 || *k == 0x7f) {
                /* a newline would let the value inject headers */
                ctx_err_set(e, CTX_EINVAL,
                            "environment variable %s (the API key) contains control characters",
                            cfg->api_key_env);
                return NULL;
            }
    }
    pthread_once(&curl_once, curl_init);
    if (curl_init_rc != CURLE_OK) {
        ctx_err_set(e, CTX_EIO, "libcurl initialisation failed: %s",
                    curl_easy_strerror(curl_init_rc));
        return NULL;
    }
    struct agent_openai *c = calloc(1, sizeof *c);
    if (!c)
        goto oom;
    c->cfg = *cfg;
    c->url = build_url(cfg->url);
    c->url_shown = c->url ? shown_url(c->url) : NULL;
    c->model = xstrdup(cfg->model);
    c->thinking = xstrdup(cfg->thinking);
    c->effort = xstrdup(cfg->reasoning_effort);
    c->key_env = xstrdup(cfg->api_key_env);
    c->extra = cfg->extra_body ? cJSON_Duplicate(cfg->extra_body, true) : NULL;
    if (!c->url || !c->url_shown || !c->model || (cfg->thinking && !c->thinking) ||
        (cfg->reasoning_effort && !c->effort) || (cfg->api_key_env && !c->key_env) ||
        (cfg->extra_body && !c->extra))
        goto oom;
    c->cfg.url = c->url;
    c->cfg.model = c->model;
    c->cfg.thinking = c->thinking;
    c->cfg.reasoning_effort = c->effort;
    c->cfg.api_key_env = c->key_env;
    c->cfg.extra_body = c->extra;
    if (!c->cfg.connect_timeout_ms)
        c->cfg.connect_timeout_ms = 10000;
    if (!c->cfg.idle_timeout_ms)
        c->cfg.idle_timeout_ms = 300000;
    if (!c->cfg.max_event_bytes)
        c->cfg.max_event_bytes = AGENT_SSE_DEFAULT_MAX_EVENT;
    if (key) {
        size_t n = strlen("Authorization: Bearer ") + strlen(key) + 1;
        if (!(c->auth = malloc(n)))
            goto oom;
        snprintf(c->auth, n, "Authorization: Bearer %s", key);
    }
    c->easy = curl_easy_init();
    c->multi = curl_multi_init();
    if (!c->easy || !c->multi) {
        agent_openai_free(c);
        ctx_err_set(e, CTX_EIO, "libcurl: cannot create a transfer handle");
        return NULL;
    }
    return c;
oom:
    agent_openai_free(c);
    ctx_err_set(e, CTX_ENOMEM, "creating the OpenAI-compatible client: out of memory");
    return NULL;
}

void agent_openai_free(struct agent_openai *c)
{
    if (!c)
        return;
    if (c->multi)
        curl_multi_cleanup(c->multi);
    if (c->easy)
        curl_easy_cleanup(c->easy);
    if (c->auth) {
        volatile char *p = c->auth; /* do not leave the key in freed memory */
        while (*p)
            *p++ = 0;
        free(c->auth);
    }
    free(c->url);
    free(c->url_shown);
    free(c->model);
    free(c->thinking);
    free(c->effort);
    free(c->key_env);
    cJSON_Delete(c->extra);
    free(c);
}

const char *agent_openai_url(const struct agent_openai *c)
{
    return c->url_shown;
}

enum body_mode { MODE_UNKNOWN, MODE_SSE, MODE_JSON, MODE_ERROR };

struct xfer {
    struct agent_openai *c;
    struct agent_openai_stream *stream;
    struct agent_sse sse;
    enum body_mode mode;
    char ctype[64];   /* the response's Content-Type, for messages about a mislabelled body */
    struct sbuf body; /* MODE_JSON: the whole body; MODE_ERROR: its first MAX_ERROR_BODY bytes */
    long status;
    const atomic_int *cancel;
    int (*on_event)(void *ud, const struct agent_openai_event *ev, struct ctx_err *e);
    void *ud;
    uint64_t last_rx_ns; /* last sign of life: response bytes or upload progress */
    curl_off_t last_ul;
    uint64_t rx_bytes;
    long retry_after_s; /* from a Retry-After header; -1 when none */
    int abort_code;     /* why we stopped the transfer: filled with err */
    struct ctx_err err;
};

static bool cancelled(const struct xfer *x)
{
    return x->cancel && atomic_load(x->cancel);
}

static int relay_event(void *ud, const struct agent_openai_event *ev, struct ctx_err *e)
{
    struct xfer *x = ud;
    if (cancelled(x))
        return ctx_err_set(e, CTX_ECANCELED, "request to %s cancelled", x->c->url_shown);
    return x->on_event ? x->on_event(x->ud, ev, e) : 0;
}

static int on_sse(void *ud, const struct agent_sse_event *ev, struct ctx_err *e)
{
    struct xfer *x = ud;
    if (agent_openai_stream_saw_done(x->stream))
        return 0;
    if (ev->done) {
        agent_openai_stream_done(x->stream);
        return 0;
    }
    if (strcmp(ev->event, "error") == 0) {
        char msg[300];
        agent_openai_error_text(ev->data, ev->data_len, msg, sizeof msg);
        return ctx_err_set(e, CTX_EPROTO,
                           "the server sent an error event at byte offset %" PRIu64 ": %s",
                           ev->offset, msg);
    }
    return agent_openai_stream_data(x->stream, ev->data, ev->data_len, ev->offset, e);
}

static size_t on_write(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct xfer *x = ud;
    size_t n = size * nmemb;
    x->last_rx_ns = now_ns();
    x->rx_bytes += n;
    if (cancelled(x)) {
        x->abort_code =
            ctx_err_set(&x->err, CTX_ECANCELED, "request to %s cancelled", x->c->url_shown);
        return CURL_WRITEFUNC_ERROR;
    }
    if (x->mode == MODE_UNKNOWN) {
        curl_easy_getinfo(x->c->easy, CURLINFO_RESPONSE_CODE, &x->status);
        const char *ct = NULL;
        curl_easy_getinfo(x->c->easy, CURLINFO_CONTENT_TYPE, &ct);
        snprintf(x->ctype, sizeof x->ctype, "%s", ct ? ct : "");
        if (x->status < 200 || x->status >= 300)
            x->mode = MODE_ERROR;
        else if (ct && strncasecmp(ct, "application/json", 16) == 0)
            x->mode = MODE_JSON; /* the server ignored "stream": true */
        else
            x->mode = MODE_SSE; /* text/event-stream, or a server that mislabels it */
    }
    int rc = 0;
    switch (x->mode) {
    case MODE_SSE: rc = agent_sse_feed(&x->sse, ptr, n, on_sse, x, &x->err); break;
    case MODE_JSON:
        if (x->body.len + n > x->c->cfg.max_event_bytes)
            rc = ctx_err_set(&x->err, CTX_ERANGE,
                             "response body from %s is larger than the limit of %zu bytes",
                             x->c->url_shown, x->c->cfg.max_event_bytes);
        else if (sbuf_add(&x->body, ptr, n))
            rc = ctx_err_set(&x->err, CTX_ENOMEM, "response body: out of memory");
        break;
    case MODE_ERROR:
        if (x->body.len < MAX_ERROR_BODY) {
            size_t take = n < MAX_ERROR_BODY - x->body.len ? n : MAX_ERROR_BODY - x->body.len;
            if (sbuf_add(&x->body, ptr, take))
                rc = ctx_err_set(&x->err, CTX_ENOMEM, "error body: out of memory");
        }
        break;
    case MODE_UNKNOWN: break;
    }
    if (rc) {
        x->abort_code = rc;
        return CURL_WRITEFUNC_ERROR;
    }
    return n;
}

/* A body that was not labelled text/event-stream and did not parse as one: say so, since the
 * likely cause is a proxy or a wrong URL rather than a broken stream. */
static void note_ctype(const struct xfer *x, int rc, struct ctx_err *e)
{
    if (!e || rc != CTX_EPROTO || x->mode != MODE_SSE ||
        strncasecmp(x->ctype, "text/event-stream", 17) == 0)
        return;
    size_t l = strlen(e->msg);
    snprintf(e->msg + l, sizeof e->msg - l,
             " (the response's Content-Type was %s, not text/event-stream)",
             x->ctype[0] ? x->ctype : "missing");
}

static int check_abort(struct xfer *x)
{
    if (x->abort_code)
        return 1;
    if (cancelled(x)) {
        x->abort_code =
            ctx_err_set(&x->err, CTX_ECANCELED, "request to %s cancelled", x->c->url_shown);
        return 1;
    }
    uint64_t idle = now_ns() - x->last_rx_ns;
    if (idle > (uint64_t)x->c->cfg.idle_timeout_ms * 1000000u) {
        x->abort_code =
            ctx_err_set(&x->err, CTX_ETIMEDOUT,
                        "no data from %s for %ld ms (idle timeout; %" PRIu64 " bytes had arrived)",
                        x->c->url_shown, x->c->cfg.idle_timeout_ms, x->rx_bytes);
        return 1;
    }
    return 0;
}

static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    struct xfer *x = ud;
    (void)dltotal;
    (void)dlnow;
    (void)ultotal;
    if (ulnow != x->last_ul) { /* a large prompt still uploading is not an idle server */
        x->last_ul = ulnow;
        x->last_rx_ns = now_ns();
    }
    return check_abort(x);
}

static size_t on_header(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct xfer *x = ud;
    size_t n = size * nmemb;
    x->last_rx_ns = now_ns();
    /* Rate limits (429, 503) say when to come back; only the delay-seconds form is read. */
    static const char name[] = "retry-after:";
    if (n > sizeof name && strncasecmp(ptr, name, sizeof name - 1) == 0) {
        long v = 0;
        size_t i = sizeof name - 1;
        while (i < n && ptr[i] == ' ')
            i++;
        size_t digits = 0;
        while (i < n && ptr[i] >= '0' && ptr[i] <= '9' && digits < 9) {
            v = v * 10 + (ptr[i++] - '0');
            digits++;
        }
        if (digits)
            x->retry_after_s = v;
    }
    return n;
}

static int curl_fail(struct xfer *x, CURLcode cc, const char *errbuf, struct ctx_err *e)
{
    const char *detail = errbuf[0] ? errbuf : curl_easy_strerror(cc);
    switch (cc) {
    case CURLE_OPERATION_TIMEDOUT:
        return ctx_err_set(e, CTX_ETIMEDOUT, "connecting to %s timed out after %ld ms: %s",
                           x->c->url_shown, x->c->cfg.connect_timeout_ms, detail);
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        return ctx_err_set(e, CTX_EIO, "cannot connect to %s: %s", x->c->url_shown, detail);
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CACERT_BADFILE:
        return ctx_err_set(e, CTX_EIO, "TLS with %s failed: %s", x->c->url_shown, detail);
    default:
        return ctx_err_set(e, CTX_EIO,
                           "request to %s failed after %" PRIu64 " bytes of response: %s",
                           x->c->url_shown, x->rx_bytes, detail);
    }
}

int agent_openai_chat(struct agent_openai *c, const cJSON *messages, const cJSON *tools,
                      int (*on_event)(void *ud, const struct agent_openai_event *ev,
                                      struct ctx_err *e),
                      void *ud, const atomic_int *cancel, struct agent_openai_result *out,
                      struct ctx_err *e)
{
    memset(out, 0, sizeof *out);
    out->usage.cached_tokens = out->usage.reasoning_tokens = -1;
    out->usage.ttft_ms = -1;
    out->retry_after_s = -1;
    uint64_t t0 = now_ns();
    cJSON *body = agent_openai_request_body(&c->cfg, messages, tools, e);
    if (!body)
        return e ? e->code : CTX_EINVAL;
    char *text = cJSON_PrintUnformatted(body);
    cJSON_Delete(body);
    if (!text)
        return ctx_err_set(e, CTX_ENOMEM, "printing the request: out of memory");

    struct xfer *x = calloc(1, sizeof *x);
    struct curl_slist *hdr = NULL;
    int rc = 0;
    if (!x) {
        free(text);
        return ctx_err_set(e, CTX_ENOMEM, "request state: out of memory");
    }
    x->c = c;
    x->cancel = cancel;
    x->on_event = on_event;
    x->ud = ud;
    x->last_rx_ns = t0;
    x->retry_after_s = -1;
    agent_sse_init(&x->sse, c->cfg.max_event_bytes);
    x->stream = agent_openai_stream_new(relay_event, x, t0);
    const char *fixed[] = {"Content-Type: application/json", "Accept: text/event-stream",
                           "Expect:" /* no 100-continue round trip before the body */};
    for (size_t i = 0; i < 3; i++) {
        struct curl_slist *n = curl_slist_append(hdr, fixed[i]);
        if (!n)
            goto oom;
        hdr = n;
    }
    if (c->auth) {
        struct curl_slist *n = curl_slist_append(hdr, c->auth);
        if (!n)
            goto oom;
        hdr = n;
    }
    if (!x->stream)
        goto oom;

    char errbuf[CURL_ERROR_SIZE] = "";
    CURL *h = c->easy;
    curl_easy_reset(h); /* keeps the connection cache, so the next request reuses the connection */
    curl_easy_setopt(h, CURLOPT_URL, c->url);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L); /* the daemon is multi-threaded */
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, text);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(text));
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "ctxd/" CTX_VERSION);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, x);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, c->cfg.connect_timeout_ms);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);

    CURLMcode mc = curl_multi_add_handle(c->multi, h);
    if (mc != CURLM_OK) {
        rc = ctx_err_set(e, CTX_EIO, "libcurl: %s", curl_multi_strerror(mc));
        goto done;
    }
    /* The multi interface lets us wake every POLL_MS to look at the cancel flag and the idle
     * clock even when the server is silent (curl's own progress callback may slow to 1 Hz). */
    CURLcode result = CURLE_OK;
    bool finished = false;
    while (!finished) {
        int running = 0;
        mc = curl_multi_perform(c->multi, &running);
        if (mc != CURLM_OK) {
            rc = ctx_err_set(e, CTX_EIO, "libcurl: %s", curl_multi_strerror(mc));
            break;
        }
        int left;
        CURLMsg *msg;
        while ((msg = curl_multi_info_read(c->multi, &left)))
            if (msg->msg == CURLMSG_DONE && msg->easy_handle == h) {
                result = msg->data.result;
                finished = true;
            }
        if (finished)
            break;
        if (check_abort(x))
            break;
        mc = curl_multi_poll(c->multi, NULL, 0, POLL_MS, NULL);
        if (mc != CURLM_OK) {
            rc = ctx_err_set(e, CTX_EIO, "libcurl: %s", curl_multi_strerror(mc));
            break;
        }
    }
    curl_multi_remove_handle(c->multi, h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &out->http_status);
    if (rc)
        goto done;
    if (x->abort_code) {
        rc = x->abort_code;
        if (e)
            *e = x->err;
        if (rc == CTX_EPROTO || rc == CTX_ERANGE)
            ctx_err_prefix(e, "stream from %s: ", c->url_shown);
        note_ctype(x, rc, e);
        goto done;
    }
    if (result != CURLE_OK) {
        rc = curl_fail(x, result, errbuf, e);
        goto done;
    }
    long status = out->http_status;
    if (status < 200 || status >= 300) {
        char msg[400];
        agent_openai_error_text(x->body.p ? x->body.p : "", x->body.len, msg, sizeof msg);
        out->retry_after_s = x->retry_after_s;
        if (x->retry_after_s >= 0)
            rc = ctx_err_set(e, agent_openai_status_code(status),
                             "HTTP %ld from %s: %s (retry after %ld s)", status, c->url_shown, msg,
                             x->retry_after_s);
        else
            rc = ctx_err_set(e, agent_openai_status_code(status), "HTTP %ld from %s: %s", status,
                             c->url_shown, msg);
        goto done;
    }
    if (x->mode == MODE_JSON) {
        rc = agent_openai_stream_data(x->stream, x->body.p ? x->body.p : "", x->body.len, 0, e);
        if (rc == 0)
            agent_openai_stream_done(x->stream);
    } else if (!agent_openai_stream_saw_done(x->stream)) {
        rc = agent_sse_finish(&x->sse, e);
    }
    if (rc == 0)
        rc = agent_openai_stream_end(x->stream, e);
    if (rc) {
        if (rc == CTX_EPROTO || rc == CTX_ERANGE)
            ctx_err_prefix(e, "stream from %s: ", c->url_shown);
        note_ctype(x, rc, e);
        goto done;
    }
    out->message = agent_openai_stream_message(x->stream);
    if (!out->message) {
        rc = ctx_err_set(e, CTX_ENOMEM, "assembling the answer: out of memory");
        goto done;
    }
    snprintf(out->finish_reason, sizeof out->finish_reason, "%s",
             agent_openai_stream_finish_reason(x->stream));
    out->usage = *agent_openai_stream_usage(x->stream);
    goto done;
oom:
    rc = ctx_err_set(e, CTX_ENOMEM, "request state: out of memory");
done:
    if (rc && x->stream) {
        /* what had arrived is still worth reporting (ttft, usage) */
        out->usage = *agent_openai_stream_usage(x->stream);
    }
    curl_easy_setopt(h = c->easy, CURLOPT_ERRORBUFFER, NULL);
    curl_slist_free_all(hdr);
    agent_sse_free(&x->sse);
    agent_openai_stream_free(x->stream);
    free(x->body.p);
    free(x);
    free(text);
    return rc;
}

void agent_openai_result_free(struct agent_openai_result *r)
{
    if (!r)
        return;
    cJSON_Delete(r->message);
    r->message = NULL;
}
