/* Streaming DSML completion parser; see dsml.h for the contract.
 *
 * A state machine over the decoded text. Each state has a small set of delimiters; a piece of
 * text is acted on only once it is certain: the earliest complete delimiter wins, and text that
 * could still become a delimiter (a suffix that is a prefix of one) is held back until more text
 * arrives. On valid completions the result equals encoding_dsv4.py's
 * parse_message_from_completion_text (tests/fixtures/dsml/parse.json); everything the reference
 * would raise on, and a few things it would let through (invalid JSON under string="false",
 * unknown tools), become an inf_dsml_error. */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsml.h"
#include "pyjson.h"

#define TC_START "\n\n<" INF_DSML_TOKEN "tool_calls"
#define TC_END "</" INF_DSML_TOKEN "tool_calls>"
#define INVOKE_OPEN "<" INF_DSML_TOKEN "invoke"
#define INVOKE_CLOSE "</" INF_DSML_TOKEN "invoke"
#define PARAM_OPEN "<" INF_DSML_TOKEN "parameter"
#define PARAM_CLOSE "/" INF_DSML_TOKEN "parameter"
#define PARAM_CLOSE_LT "</" INF_DSML_TOKEN "parameter"

/* The longest head (invoke name or parameter header) accepted before it is called malformed:
 * a runaway header would otherwise hold back text forever. */
#define MAX_HEAD (64 * 1024)

enum state {
    S_REASONING,
    S_CONTENT,
    S_TC_SEP,      /* after <｜DSML｜tool_calls or </｜DSML｜invoke: ">\n" then invoke or end */
    S_INVOKE_HEAD, /* ` name="X">\n` up to <｜DSML｜parameter or </｜DSML｜invoke */
    S_PARAM_HEAD,  /* ` name="P" string="true|false">` */
    S_PARAM_VALUE, /* raw value up to </｜DSML｜parameter */
    S_PARAM_SEP,   /* ">\n" then parameter or </｜DSML｜invoke */
    S_AFTER_TC,    /* only the end of sentence may follow */
    S_END,         /* after the end of sentence: nothing may follow */
    S_FAILED,
};

enum pat_id {
    P_THINK_END, P_TC_START, P_EOS, P_BOS, P_THINK_START, P_DSML, P_PARAM_CLOSE, P_PARAM_CLOSE_LT,
};

struct pat {
    const char *s;
    size_t n;
    enum pat_id id;
};

#define PAT(str, id) {str, sizeof(str) - 1, id}

static const struct pat reasoning_pats[] = {
    PAT(INF_DSML_THINK_END, P_THINK_END), PAT(TC_START, P_TC_START), PAT(INF_DSML_EOS, P_EOS),
    PAT(INF_DSML_BOS, P_BOS), PAT(INF_DSML_THINK_START, P_THINK_START), PAT(INF_DSML_TOKEN, P_DSML),
};
static const struct pat content_pats[] = {
    PAT(INF_DSML_EOS, P_EOS), PAT(TC_START, P_TC_START), PAT(INF_DSML_BOS, P_BOS),
    PAT(INF_DSML_THINK_START, P_THINK_START), PAT(INF_DSML_THINK_END, P_THINK_END),
    PAT(INF_DSML_TOKEN, P_DSML),
};
static const struct pat value_pats[] = {
    PAT(PARAM_CLOSE_LT, P_PARAM_CLOSE_LT), PAT(PARAM_CLOSE, P_PARAM_CLOSE),
};

struct call {
    char *name;
    struct inf_buf args; /* the arguments JSON object being built */
    char **params;       /* names seen, for the duplicate check */
    size_t n_params;
};

struct inf_dsml_parser {
    enum inf_dsml_mode mode;
    inf_dsml_callback cb;
    void *ud;
    char **tools;
    size_t n_tools;
    bool check_tools;
    enum state st;
    struct inf_buf pend; /* text not acted on yet */
    size_t pend_off;     /* offset of pend[0] in the completion */
    struct inf_buf reasoning, content;
    struct call *calls;
    size_t n_calls, cap_calls;
    char *param;         /* the open parameter's name */
    bool param_string;
    struct inf_buf value;
    bool done;
    bool canceled;
    struct inf_dsml_error err;
};

struct inf_dsml_parser *inf_dsml_parser_new(const struct inf_dsml_parser_opts *o,
                                            inf_dsml_callback cb, void *ud)
{
    struct inf_dsml_parser *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->mode = o ? o->mode : INF_DSML_CHAT;
    p->cb = cb;
    p->ud = ud;
    p->st = p->mode == INF_DSML_THINKING ? S_REASONING : S_CONTENT;
    if (o && cJSON_IsArray(o->tools)) {
        p->check_tools = true;
        size_t n = (size_t)cJSON_GetArraySize(o->tools);
        p->tools = calloc(n + 1, sizeof *p->tools);
        if (!p->tools) {
            free(p);
            return NULL;
        }
        for (const cJSON *t = o->tools->child; t; t = t->next) {
            const cJSON *fn = cJSON_GetObjectItemCaseSensitive(t, "function");
            const cJSON *nm = cJSON_GetObjectItemCaseSensitive(fn ? fn : t, "name");
            if (cJSON_IsString(nm) && (p->tools[p->n_tools] = strdup(nm->valuestring)))
                p->n_tools++;
        }
    }
    return p;
}

void inf_dsml_parser_free(struct inf_dsml_parser *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->n_tools; i++)
        free(p->tools[i]);
    free(p->tools);
    for (size_t i = 0; i < p->n_calls; i++) {
        free(p->calls[i].name);
        inf_buf_free(&p->calls[i].args);
        for (size_t k = 0; k < p->calls[i].n_params; k++)
            free(p->calls[i].params[k]);
        free(p->calls[i].params);
    }
    free(p->calls);
    free(p->param);
    inf_buf_free(&p->pend);
    inf_buf_free(&p->reasoning);
    inf_buf_free(&p->content);
    inf_buf_free(&p->value);
    free(p);
}

const char *inf_dsml_error_kind_name(enum inf_dsml_error_kind kind)
{
    switch (kind) {
    case INF_DSML_ERR_NONE: return "none";
    case INF_DSML_ERR_MISSING_THINK_END: return "missing_think_end";
    case INF_DSML_ERR_UNCLOSED: return "unclosed";
    case INF_DSML_ERR_FORMAT: return "format";
    case INF_DSML_ERR_BAD_JSON: return "bad_json";
    case INF_DSML_ERR_DUPLICATE_PARAM: return "duplicate_param";
    case INF_DSML_ERR_UNKNOWN_TOOL: return "unknown_tool";
    case INF_DSML_ERR_SPECIAL_TOKEN: return "special_token";
    case INF_DSML_ERR_TRAILING: return "trailing";
    }
    return "unknown";
}

const struct inf_dsml_error *inf_dsml_parser_error(const struct inf_dsml_parser *p)
{
    return p->err.kind != INF_DSML_ERR_NONE ? &p->err : NULL;
}

static int emit(struct inf_dsml_parser *p, struct inf_dsml_event ev)
{
    if (p->canceled)
        return CTX_ECANCELED;
    if (p->cb && p->cb(p->ud, &ev)) {
        p->canceled = true;
        return CTX_ECANCELED;
    }
    return 0;
}

static struct call *cur_call(struct inf_dsml_parser *p)
{
    return p->n_calls ? &p->calls[p->n_calls - 1] : NULL;
}

/* Record the error, fire its event and stop the machine. `at` is relative to pend. */
static int fail(struct inf_dsml_parser *p, enum inf_dsml_error_kind kind, size_t at, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(struct inf_dsml_parser *p, enum inf_dsml_error_kind kind, size_t at, const char *fmt, ...)
{
    struct inf_dsml_error *er = &p->err;
    er->kind = kind;
    er->offset = p->pend_off + at;
    bool in_call = p->st == S_TC_SEP || p->st == S_INVOKE_HEAD || p->st == S_PARAM_HEAD ||
                   p->st == S_PARAM_VALUE || p->st == S_PARAM_SEP;
    er->call_index = in_call ? (int)p->n_calls - (p->st == S_TC_SEP || p->st == S_INVOKE_HEAD ? 0 : 1) : -1;
    struct call *c = cur_call(p);
    er->tool[0] = er->param[0] = 0;
    if (c && (p->st == S_PARAM_HEAD || p->st == S_PARAM_VALUE || p->st == S_PARAM_SEP))
        snprintf(er->tool, sizeof er->tool, "%s", c->name);
    if (p->param && p->st == S_PARAM_VALUE)
        snprintf(er->param, sizeof er->param, "%s", p->param);
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(er->message, sizeof er->message, "%s (at byte %zu of the completion)", msg, er->offset);
    p->st = S_FAILED;
    struct inf_dsml_event ev = {.type = INF_DSML_EV_ERROR, .error = er, .call_index = er->call_index};
    emit(p, ev);
    return CTX_EFORMAT;
}

/* memmem, kept local so that the file needs nothing beyond C17. */
static const char *find(const char *h, size_t hn, const char *nd, size_t nn)
{
    if (nn == 0)
        return h;
    for (const char *q = h; hn >= nn && (q = memchr(q, nd[0], hn - nn + 1 - (size_t)(q - h))) != NULL; q++)
        if (memcmp(q, nd, nn) == 0)
            return q;
    return NULL;
}

/* Drop n bytes from the front of pend. */
static void consume(struct inf_dsml_parser *p, size_t n)
{
    memmove(p->pend.p, p->pend.p + n, p->pend.len - n);
    p->pend.len -= n;
    p->pend_off += n;
    if (p->pend.p)
        p->pend.p[p->pend.len] = 0;
}

/* Earliest complete delimiter (*full, *which) and earliest start of a suffix that could still
 * grow into one (*partial); SIZE_MAX where none. */
static void scan(const char *s, size_t n, const struct pat *pats, size_t np, size_t *full,
                 const struct pat **which, size_t *partial)
{
    *full = SIZE_MAX;
    *which = NULL;
    *partial = SIZE_MAX;
    for (size_t i = 0; i < np; i++) {
        const char *hit = n >= pats[i].n ? find(s, n, pats[i].s, pats[i].n) : NULL;
        if (hit) {
            size_t at = (size_t)(hit - s);
            if (at < *full || (at == *full && pats[i].n > (*which)->n)) {
                *full = at;
                *which = &pats[i];
            }
        }
        size_t k = pats[i].n - 1 < n ? pats[i].n - 1 : n;
        for (; k > 0; k--)
            if (memcmp(s + n - k, pats[i].s, k) == 0) {
                if (n - k < *partial)
                    *partial = n - k;
                break;
            }
    }
}

/* The longest prefix of s[0..want) that does not end inside a UTF-8 character. */
static size_t char_boundary(const char *s, size_t want)
{
    size_t i = want, k = 0;
    while (i > 0 && k < 3 && ((unsigned char)s[i - 1] & 0xC0) == 0x80) {
        i--;
        k++;
    }
    if (i == 0)
        return want;
    unsigned char c = (unsigned char)s[i - 1];
    size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    return need > k + 1 ? i - 1 : want;
}

static int delta(struct inf_dsml_parser *p, enum inf_dsml_event_type type, size_t n)
{
    if (n == 0)
        return 0;
    struct inf_buf *dst = type == INF_DSML_EV_REASONING_DELTA ? &p->reasoning
                          : type == INF_DSML_EV_CONTENT_DELTA ? &p->content
                                                              : &p->value;
    inf_buf_put(dst, p->pend.p, n);
    struct inf_dsml_event ev = {.type = type, .text = p->pend.p, .len = n, .call_index = -1};
    if (type == INF_DSML_EV_VALUE_DELTA) {
        ev.name = p->param;
        ev.is_string = p->param_string;
        ev.call_index = (int)p->n_calls - 1;
    }
    int rc = emit(p, ev);
    consume(p, n);
    return rc;
}

/* Text states: returns 1 when more input is needed, 0 to go on, <0 on error. */
static int text_state(struct inf_dsml_parser *p, bool final)
{
    bool reasoning = p->st == S_REASONING;
    const struct pat *pats = reasoning ? reasoning_pats : content_pats;
    size_t np = reasoning ? sizeof reasoning_pats / sizeof reasoning_pats[0]
                          : sizeof content_pats / sizeof content_pats[0];
    enum inf_dsml_event_type type = reasoning ? INF_DSML_EV_REASONING_DELTA : INF_DSML_EV_CONTENT_DELTA;
    size_t full, partial;
    const struct pat *w;
    scan(p->pend.p, p->pend.len, pats, np, &full, &w, &partial);
    if (full != SIZE_MAX && (partial == SIZE_MAX || partial >= full || final)) {
        int rc = delta(p, type, full);
        if (rc)
            return rc;
        switch (w->id) {
        case P_THINK_END: /* only a delimiter in reasoning; content_pats lists it as forbidden */
            if (reasoning) {
                consume(p, w->n);
                p->st = S_CONTENT;
                return 0;
            }
            break;
        case P_TC_START:
            if (reasoning)
                return fail(p, INF_DSML_ERR_MISSING_THINK_END, 0,
                            "tool calls began inside the reasoning: </think> must come first");
            consume(p, w->n);
            p->st = S_TC_SEP;
            return 0;
        case P_EOS:
            if (reasoning)
                return fail(p, INF_DSML_ERR_MISSING_THINK_END, 0,
                            "the completion ended inside the reasoning: no </think>");
            consume(p, w->n);
            p->st = S_END;
            return 0;
        default:
            break;
        }
        return fail(p, INF_DSML_ERR_SPECIAL_TOKEN, 0, "unexpected special token '%s' in the %s", w->s,
                    reasoning ? "reasoning" : "content");
    }
    size_t out = partial == SIZE_MAX ? p->pend.len : partial;
    if (final)
        out = p->pend.len;
    else
        out = char_boundary(p->pend.p, out);
    int rc = delta(p, type, out);
    return rc ? rc : 1;
}

/* ">\n" followed by one of two tags. Returns 1 (need more), 0 (matched; *which is 0 or 1), <0. */
static int sep_state(struct inf_dsml_parser *p, const char *a, const char *b, int *which,
                     const char *where)
{
    char ta[64], tb[64];
    snprintf(ta, sizeof ta, ">\n%s", a);
    snprintf(tb, sizeof tb, ">\n%s", b);
    size_t la = strlen(ta), lb = strlen(tb), n = p->pend.len;
    if (n >= la && memcmp(p->pend.p, ta, la) == 0) {
        consume(p, la);
        *which = 0;
        return 0;
    }
    if (n >= lb && memcmp(p->pend.p, tb, lb) == 0) {
        consume(p, lb);
        *which = 1;
        return 0;
    }
    if ((n < la && memcmp(p->pend.p, ta, n) == 0) || (n < lb && memcmp(p->pend.p, tb, n) == 0))
        return 1;
    return fail(p, INF_DSML_ERR_FORMAT, 0, "%s: expected '>' and a newline, then '%s' or '%s'", where,
                a, b);
}

static int json_key(struct inf_buf *b, const char *s)
{
    inf_py_dump_string(b, s, strlen(s));
    return 0;
}

static int end_call(struct inf_dsml_parser *p)
{
    struct call *c = cur_call(p);
    inf_buf_puts(&c->args, "}");
    if (c->args.oom)
        return fail(p, INF_DSML_ERR_FORMAT, 0, "out of memory");
    struct inf_dsml_event ev = {.type = INF_DSML_EV_CALL_END, .name = c->name, .text = c->args.p,
                                .len = c->args.len, .call_index = (int)p->n_calls - 1};
    p->st = S_TC_SEP;
    return emit(p, ev);
}

static int invoke_head(struct inf_dsml_parser *p)
{
    static const struct pat pats[] = {{PARAM_OPEN, sizeof PARAM_OPEN - 1, 0},
                                      {INVOKE_CLOSE, sizeof INVOKE_CLOSE - 1, 1}};
    size_t full, partial;
    const struct pat *w;
    const char *s = p->pend.p;
    size_t n = p->pend.len;
    scan(s, n, pats, 2, &full, &w, &partial);
    /* Judge only text that cannot be the start of the closing tag, so that the verdict is the
     * same however the completion is cut. */
    size_t upto = full != SIZE_MAX ? full : partial != SIZE_MAX ? partial : n;
    /* ^\s*name="(.*?)">\n$ */
    size_t i = 0;
    while (i < upto && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r' || s[i] == '\f' ||
                        s[i] == '\v'))
        i++;
    const char *lead = "name=\"";
    size_t k = 0;
    while (k < 6 && i + k < upto && s[i + k] == lead[k])
        k++;
    if (k < 6 && i + k < upto)
        return fail(p, INF_DSML_ERR_FORMAT, i, "invoke: expected name=\"TOOL\">");
    /* A head must end within MAX_HEAD bytes: decided on the text, not on how it arrives. */
    if (full == SIZE_MAX ? n >= MAX_HEAD : full + w->n > MAX_HEAD)
        return fail(p, INF_DSML_ERR_FORMAT, 0, "invoke: no end of the name within %d bytes", MAX_HEAD);
    if (full == SIZE_MAX)
        return 1;
    if (k < 6 || upto < i + 6 + 3 || memcmp(s + upto - 3, "\">\n", 3) != 0)
        return fail(p, INF_DSML_ERR_FORMAT, 0, "invoke: expected name=\"TOOL\"> and a newline");
    size_t nl = upto - 3 - (i + 6);
    struct call c = {0};
    c.name = malloc(nl + 1);
    if (!c.name)
        return fail(p, INF_DSML_ERR_FORMAT, 0, "out of memory");
    memcpy(c.name, s + i + 6, nl);
    c.name[nl] = 0;
    if (p->check_tools) {
        bool known = false;
        for (size_t t = 0; t < p->n_tools && !known; t++)
            known = strcmp(p->tools[t], c.name) == 0;
        if (!known) {
            int rc = fail(p, INF_DSML_ERR_UNKNOWN_TOOL, i, "unknown tool \"%s\"", c.name);
            snprintf(p->err.tool, sizeof p->err.tool, "%s", c.name);
            free(c.name);
            return rc;
        }
    }
    if (p->n_calls == p->cap_calls) {
        size_t cap = p->cap_calls ? p->cap_calls * 2 : 4;
        struct call *nc = realloc(p->calls, cap * sizeof *nc);
        if (!nc) {
            free(c.name);
            return fail(p, INF_DSML_ERR_FORMAT, 0, "out of memory");
        }
        p->calls = nc;
        p->cap_calls = cap;
    }
    inf_buf_puts(&c.args, "{");
    p->calls[p->n_calls++] = c;
    consume(p, full + w->n);
    struct inf_dsml_event ev = {.type = INF_DSML_EV_CALL_BEGIN, .name = c.name,
                                .call_index = (int)p->n_calls - 1};
    int rc = emit(p, ev);
    if (rc)
        return rc;
    if (w->id == 0) {
        p->st = S_PARAM_HEAD;
        return 0;
    }
    return end_call(p);
}

static int param_head(struct inf_dsml_parser *p)
{
    const char *s = p->pend.p;
    size_t n = p->pend.len;
    const char *lead = " name=\"";
    size_t k = 0;
    while (k < 7 && k < n && s[k] == lead[k])
        k++;
    if (k < 7 && k < n)
        return fail(p, INF_DSML_ERR_FORMAT, k, "parameter: expected name=\"NAME\" string=\"true|false\">");
    if (k < 7)
        return 1;
    const char *t1 = "\" string=\"true\">", *t2 = "\" string=\"false\">";
    const char *h1 = find(s + 7, n - 7, t1, strlen(t1)), *h2 = find(s + 7, n - 7, t2, strlen(t2));
    const char *close = find(s, n, PARAM_CLOSE, sizeof PARAM_CLOSE - 1);
    const char *h = h1 && (!h2 || h1 < h2) ? h1 : h2;
    if (close && (!h || close < h))
        return fail(p, INF_DSML_ERR_FORMAT, (size_t)(close - s),
                    "parameter: the value ended before string=\"true\" or string=\"false\">");
    bool is_string = h && h == h1;
    size_t head_end = h ? (size_t)(h - s) + (is_string ? strlen(t1) : strlen(t2)) : 0;
    if (h ? head_end > MAX_HEAD : n >= MAX_HEAD)
        return fail(p, INF_DSML_ERR_FORMAT, 0, "parameter: no end of the header within %d bytes", MAX_HEAD);
    if (!h)
        return 1;
    size_t nl = (size_t)(h - (s + 7));
    char *name = malloc(nl + 1);
    if (!name)
        return fail(p, INF_DSML_ERR_FORMAT, 0, "out of memory");
    memcpy(name, s + 7, nl);
    name[nl] = 0;
    struct call *c = cur_call(p);
    for (size_t i = 0; i < c->n_params; i++)
        if (!strcmp(c->params[i], name)) {
            int rc = fail(p, INF_DSML_ERR_DUPLICATE_PARAM, 0, "duplicate parameter \"%s\" in a call of \"%s\"",
                          name, c->name);
            snprintf(p->err.param, sizeof p->err.param, "%s", name);
            free(name);
            return rc;
        }
    char **np = realloc(c->params, (c->n_params + 1) * sizeof *np);
    if (!np) {
        free(name);
        return fail(p, INF_DSML_ERR_FORMAT, 0, "out of memory");
    }
    c->params = np;
    c->params[c->n_params++] = strdup(name);
    free(p->param);
    p->param = name;
    p->param_string = is_string;
    p->value.len = 0;
    consume(p, head_end);
    p->st = S_PARAM_VALUE;
    struct inf_dsml_event ev = {.type = INF_DSML_EV_PARAM_BEGIN, .name = p->param, .is_string = is_string,
                                .call_index = (int)p->n_calls - 1};
    return emit(p, ev);
}

static int param_value(struct inf_dsml_parser *p)
{
    size_t full, partial;
    const struct pat *w;
    scan(p->pend.p, p->pend.len, value_pats, 2, &full, &w, &partial);
    if (full == SIZE_MAX || (partial != SIZE_MAX && partial < full)) {
        size_t out = partial == SIZE_MAX ? p->pend.len : partial;
        int rc = delta(p, INF_DSML_EV_VALUE_DELTA, char_boundary(p->pend.p, out));
        return rc ? rc : 1;
    }
    if (w->id == P_PARAM_CLOSE)
        return fail(p, INF_DSML_ERR_FORMAT, full, "parameter \"%s\": '/%sparameter' without '<'", p->param,
                    INF_DSML_TOKEN);
    int rc = delta(p, INF_DSML_EV_VALUE_DELTA, full);
    if (rc)
        return rc;
    consume(p, w->n);
    struct call *c = cur_call(p);
    const char *v = p->value.p ? p->value.p : "";
    if (!p->param_string) {
        struct inf_buf tmp = {0};
        size_t at = 0;
        if (inf_py_reserialize(v, p->value.len, &tmp, &at) != 0) {
            inf_buf_free(&tmp);
            p->st = S_PARAM_VALUE;
            return fail(p, INF_DSML_ERR_BAD_JSON, 0,
                        "parameter \"%s\" of \"%s\" has string=\"false\" but its value is not valid JSON "
                        "(byte %zu of the value)", p->param, c->name, at);
        }
        inf_buf_free(&tmp);
    }
    if (c->n_params > 1)
        inf_buf_puts(&c->args, ", ");
    json_key(&c->args, p->param);
    inf_buf_puts(&c->args, ": ");
    if (p->param_string)
        inf_py_dump_string(&c->args, v, p->value.len);
    else
        inf_buf_put(&c->args, v, p->value.len); /* verbatim, as the reference keeps it */
    struct inf_dsml_event ev = {.type = INF_DSML_EV_PARAM_END, .name = p->param, .is_string = p->param_string,
                                .text = v, .len = p->value.len, .call_index = (int)p->n_calls - 1};
    p->st = S_PARAM_SEP;
    return emit(p, ev);
}

static int step(struct inf_dsml_parser *p, bool final)
{
    int which;
    int rc;
    switch (p->st) {
    case S_REASONING:
    case S_CONTENT:
        return text_state(p, final);
    case S_TC_SEP:
        if ((rc = sep_state(p, INVOKE_OPEN, TC_END, &which, "tool calls")))
            return rc;
        p->st = which == 0 ? S_INVOKE_HEAD : S_AFTER_TC;
        return 0;
    case S_INVOKE_HEAD:
        return invoke_head(p);
    case S_PARAM_HEAD:
        return param_head(p);
    case S_PARAM_VALUE:
        return param_value(p);
    case S_PARAM_SEP:
        if ((rc = sep_state(p, PARAM_OPEN, INVOKE_CLOSE, &which, "parameter")))
            return rc;
        if (which == 0) {
            p->st = S_PARAM_HEAD;
            return 0;
        }
        return end_call(p);
    case S_AFTER_TC: {
        size_t le = sizeof INF_DSML_EOS - 1, n = p->pend.len;
        if (n >= le && memcmp(p->pend.p, INF_DSML_EOS, le) == 0) {
            consume(p, le);
            p->st = S_END;
            return 0;
        }
        if (n == 0 || memcmp(p->pend.p, INF_DSML_EOS, n < le ? n : le) == 0)
            return 1;
        return fail(p, INF_DSML_ERR_TRAILING, 0, "unexpected text after the tool calls");
    }
    case S_END:
        if (p->pend.len)
            return fail(p, INF_DSML_ERR_TRAILING, 0, "unexpected text after the end of sentence");
        return 1;
    case S_FAILED:
        return CTX_EFORMAT;
    }
    return 1;
}

static int run(struct inf_dsml_parser *p, bool final, struct ctx_err *e)
{
    for (;;) {
        int rc = step(p, final);
        if (rc == 1)
            return 0;
        if (rc == CTX_ECANCELED)
            return ctx_err_set(e, CTX_ECANCELED, "dsml parse: stopped by the callback");
        if (rc < 0)
            return ctx_err_set(e, CTX_EFORMAT, "dsml parse: %s", p->err.message);
    }
}

int inf_dsml_parser_feed(struct inf_dsml_parser *p, const char *text, size_t len, struct ctx_err *e)
{
    if (p->st == S_FAILED)
        return ctx_err_set(e, CTX_EFORMAT, "dsml parse: %s", p->err.message);
    if (p->canceled)
        return ctx_err_set(e, CTX_ECANCELED, "dsml parse: stopped by the callback");
    if (p->done)
        return ctx_err_set(e, CTX_EINVAL, "dsml parse: text fed after finish");
    inf_buf_put(&p->pend, text, len);
    if (p->pend.oom)
        return ctx_err_set(e, CTX_ENOMEM, "dsml parse: out of memory");
    return run(p, false, e);
}

int inf_dsml_parser_finish(struct inf_dsml_parser *p, struct ctx_err *e)
{
    if (p->st == S_FAILED)
        return ctx_err_set(e, CTX_EFORMAT, "dsml parse: %s", p->err.message);
    if (p->done)
        return 0;
    int rc = run(p, true, e);
    if (rc)
        return rc;
    p->done = true;
    switch (p->st) {
    case S_END:
        break;
    case S_AFTER_TC:
        if (p->pend.len) {
            fail(p, INF_DSML_ERR_UNCLOSED, 0, "the text ended inside the end-of-sentence token");
            return ctx_err_set(e, CTX_EFORMAT, "dsml parse: %s", p->err.message);
        }
        break;
    case S_REASONING:
        fail(p, INF_DSML_ERR_MISSING_THINK_END, 0, "the completion ended inside the reasoning: no </think>");
        return ctx_err_set(e, CTX_EFORMAT, "dsml parse: %s", p->err.message);
    case S_CONTENT:
        fail(p, INF_DSML_ERR_UNCLOSED, 0, "the completion ended without the end-of-sentence token");
        return ctx_err_set(e, CTX_EFORMAT, "dsml parse: %s", p->err.message);
    default: {
        struct call *c = cur_call(p);
        bool named = p->st != S_TC_SEP && p->st != S_INVOKE_HEAD && c;
        fail(p, INF_DSML_ERR_UNCLOSED, 0, "the completion ended inside a tool-call block%s%s%s",
             named ? " (call of \"" : "", named ? c->name : "", named ? "\")" : "");
        return ctx_err_set(e, CTX_EFORMAT, "dsml parse: %s", p->err.message);
    }
    }
    struct inf_dsml_event ev = {.type = INF_DSML_EV_DONE, .call_index = -1};
    if (emit(p, ev))
        return ctx_err_set(e, CTX_ECANCELED, "dsml parse: stopped by the callback");
    return 0;
}

cJSON *inf_dsml_parser_message(const struct inf_dsml_parser *p)
{
    cJSON *m = cJSON_CreateObject();
    if (!m)
        return NULL;
    bool ok = cJSON_AddStringToObject(m, "role", "assistant") &&
              cJSON_AddStringToObject(m, "content", p->content.p ? p->content.p : "") &&
              cJSON_AddStringToObject(m, "reasoning_content", p->reasoning.p ? p->reasoning.p : "");
    cJSON *calls = ok ? cJSON_AddArrayToObject(m, "tool_calls") : NULL;
    ok = ok && calls;
    for (size_t i = 0; ok && i < p->n_calls; i++) {
        /* Only finished calls: a call still open has no complete arguments yet. */
        if (i + 1 == p->n_calls && !(p->st == S_TC_SEP || p->st == S_AFTER_TC || p->st == S_END))
            break;
        cJSON *tc = cJSON_CreateObject(), *fn = cJSON_CreateObject();
        if (!tc || !fn) {
            cJSON_Delete(tc);
            cJSON_Delete(fn);
            ok = false;
            break;
        }
        cJSON_AddItemToArray(calls, tc);
        ok = cJSON_AddStringToObject(tc, "type", "function") && (cJSON_AddItemToObject(tc, "function", fn), 1) &&
             cJSON_AddStringToObject(fn, "name", p->calls[i].name) &&
             cJSON_AddStringToObject(fn, "arguments", p->calls[i].args.p ? p->calls[i].args.p : "{}");
    }
    if (!ok) {
        cJSON_Delete(m);
        return NULL;
    }
    return m;
}

int inf_dsml_parse(const char *text, size_t len, const struct inf_dsml_parser_opts *o, cJSON **message,
                   struct inf_dsml_error *err, struct ctx_err *e)
{
    *message = NULL;
    if (err)
        memset(err, 0, sizeof *err);
    struct inf_dsml_parser *p = inf_dsml_parser_new(o, NULL, NULL);
    if (!p)
        return ctx_err_set(e, CTX_ENOMEM, "dsml parse: out of memory");
    int rc = inf_dsml_parser_feed(p, text, len, e);
    if (!rc)
        rc = inf_dsml_parser_finish(p, e);
    if (rc) {
        if (err && p->err.kind)
            *err = p->err;
    } else if (!(*message = inf_dsml_parser_message(p)))
        rc = ctx_err_set(e, CTX_ENOMEM, "dsml parse: out of memory");
    inf_dsml_parser_free(p);
    return rc;
}
