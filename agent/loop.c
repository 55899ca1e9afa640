/* The agent loop (loop.h). */
#include "loop.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int agent_loop_render(const cJSON *messages, const cJSON *tools, enum inf_dsml_mode mode,
                      char **prompt, size_t *len, struct ctx_err *e)
{
    struct inf_dsml_opts o = {.mode = mode, .drop_thinking = false};
    return inf_dsml_encode(messages, tools, &o, prompt, len, e);
}

int agent_loop_render_prompt(const cJSON *messages, const cJSON *tools, enum inf_dsml_mode mode,
                             struct agent_prompt *out, struct ctx_err *e)
{
    memset(out, 0, sizeof *out);
    struct inf_dsml_opts o = {.mode = mode, .drop_thinking = false};
    return inf_dsml_encode_spans(messages, tools, &o, &out->text, &out->len, &out->spans,
                                 &out->nspans, e);
}

void agent_prompt_free(struct agent_prompt *p)
{
    if (!p)
        return;
    free(p->text);
    free(p->spans);
    memset(p, 0, sizeof *p);
}

/* Append text, and the spans of `from` at or after byte `skip`, shifted to where they land. */
static int prompt_append(struct agent_prompt *p, const char *text, size_t len,
                         const struct agent_prompt *from, size_t skip)
{
    char *nt = realloc(p->text, p->len + len + 1);
    if (!nt)
        return CTX_ENOMEM;
    p->text = nt;
    size_t base = p->len;
    memcpy(nt + p->len, text, len);
    p->len += len;
    nt[p->len] = 0;
    if (!from)
        return 0;
    size_t add = 0;
    for (size_t i = 0; i < from->nspans; i++)
        add += from->spans[i].off + from->spans[i].len > skip;
    if (!add)
        return 0;
    struct inf_text_span *ns = realloc(p->spans, (p->nspans + add) * sizeof *ns);
    if (!ns)
        return CTX_ENOMEM;
    p->spans = ns;
    for (size_t i = 0; i < from->nspans; i++) {
        size_t off = from->spans[i].off, end = off + from->spans[i].len;
        if (end <= skip)
            continue;
        if (off < skip)
            off = skip; /* not expected: the cut is template text */
        ns[p->nspans].off = base + off - skip;
        ns[p->nspans].len = end - off;
        p->nspans++;
    }
    return 0;
}

struct step {
    const struct agent_loop_opts *o;
    int n;
    char *raw;
    size_t len, cap;
    bool oom;
    struct inf_dsml_parser *parser;
    bool malformed;
};

static void emit_event(const struct agent_loop_opts *o, const struct agent_event *ev)
{
    if (o->on_event)
        o->on_event(o->ud, ev);
}

static bool cancelled(const struct agent_loop_opts *o)
{
    return o->cancel && atomic_load(o->cancel);
}

static int on_parse(void *ud, const struct inf_dsml_event *ev)
{
    struct step *s = ud;
    if (ev->type == INF_DSML_EV_REASONING_DELTA || ev->type == INF_DSML_EV_CONTENT_DELTA) {
        struct agent_event a = {.kind = ev->type == INF_DSML_EV_REASONING_DELTA ? AGENT_EV_REASONING
                                                                                 : AGENT_EV_CONTENT,
                                .step = s->n, .text = ev->text, .len = ev->len};
        emit_event(s->o, &a);
    }
    return 0;
}

static int on_text(void *ud, const char *text, size_t len)
{
    struct step *s = ud;
    if (cancelled(s->o))
        return 1;
    if (s->len + len + 1 > s->cap) {
        size_t c = s->cap ? s->cap : 4096;
        while (c < s->len + len + 1)
            c *= 2;
        char *p = realloc(s->raw, c);
        if (!p) {
            s->oom = true;
            return 1;
        }
        s->raw = p;
        s->cap = c;
    }
    memcpy(s->raw + s->len, text, len);
    s->len += len;
    s->raw[s->len] = 0;
    if (!s->malformed) {
        struct ctx_err pe = {0};
        if (inf_dsml_parser_feed(s->parser, text, len, &pe) == CTX_EFORMAT)
            s->malformed = true; /* keep collecting the raw text; the error is handed back */
    }
    return 0;
}

static char *dup_str(const cJSON *o, const char *k)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, k);
    return strdup(cJSON_IsString(j) ? j->valuestring : "");
}

void agent_loop_result_free(struct agent_loop_result *r)
{
    if (!r)
        return;
    free(r->final_text);
    free(r->final_reasoning);
    agent_prompt_free(&r->prompt);
    cJSON_Delete(r->raw);
    memset(r, 0, sizeof *r);
}

/* Exact replay bookkeeping: `p` is what the model sees, `canon` the encoder's rendering of the
 * messages it was built from. */
struct replay {
    struct agent_prompt p;
    char *canon;
    size_t clen;
};

static bool starts_with(const char *s, size_t n, const char *p, size_t pn)
{
    return n >= pn && memcmp(s, p, pn) == 0;
}

/* After a step: `asst` is the rendering with the assistant message appended, `after` with
 * everything the step appended. The prompt grows by raw (+ EOS if missing) and the encoder's
 * rendering of what follows the assistant message (with its literal spans). Takes ownership of
 * after. */
static int replay_step(struct replay *rp, const char *asst, size_t alen, struct agent_prompt *after,
                       const char *raw, size_t rlen, struct agent_loop_result *r, struct ctx_err *e)
{
    static const char eos[] = INF_DSML_EOS;
    size_t el = sizeof eos - 1;
    bool has_eos = rlen >= el && !memcmp(raw + rlen - el, eos, el);
    r->replay_checked++;
    int rc = 0;
    bool prefix = starts_with(asst, alen, rp->canon, rp->clen) &&
                  starts_with(after->text, after->len, asst, alen);
    if (prefix) {
        size_t span = alen - rp->clen;
        bool same = span == rlen + (has_eos ? 0 : el) && !memcmp(asst + rp->clen, raw, rlen) &&
                    (has_eos || !memcmp(asst + rp->clen + rlen, eos, el));
        if (!same)
            r->replay_mismatch++;
        /* The model's own text is not a literal span: it tokenizes as the model produced it. */
        rc = prompt_append(&rp->p, raw, rlen, NULL, 0);
        if (!rc && !has_eos)
            rc = prompt_append(&rp->p, eos, el, NULL, 0);
        if (!rc)
            rc = prompt_append(&rp->p, after->text + alen, after->len - alen, after, alen);
    } else {
        /* Not expected with tools declared (drop_thinking off): restart from the canonical text. */
        r->replay_mismatch++;
        r->replay_rerendered++;
        agent_prompt_free(&rp->p);
        rc = prompt_append(&rp->p, after->text, after->len, after, 0);
    }
    free(rp->canon);
    rp->canon = after->text;
    rp->clen = after->len;
    free(after->spans);
    memset(after, 0, sizeof *after);
    return rc ? ctx_err_set(e, CTX_ENOMEM, "out of memory") : 0;
}

/* Render the messages after the assistant message (index `ai`) was appended, and after the rest. */
static int render_pair(const cJSON *messages, const cJSON *tools, enum inf_dsml_mode mode, cJSON *asst_msg,
                       char **asst, size_t *alen, struct agent_prompt *after, struct ctx_err *e)
{
    /* The assistant-only rendering: detach what follows it for a moment. */
    cJSON *tmp = cJSON_CreateArray();
    if (!tmp)
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    for (const cJSON *m = messages->child; m; m = m->next) {
        cJSON *ref = cJSON_CreateObjectReference(m->child);
        if (!ref) {
            cJSON_Delete(tmp);
            return ctx_err_set(e, CTX_ENOMEM, "out of memory");
        }
        cJSON_AddItemToArray(tmp, ref);
        if (m == asst_msg)
            break;
    }
    int rc = agent_loop_render(tmp, tools, mode, asst, alen, e);
    cJSON_Delete(tmp);
    if (!rc && (rc = agent_loop_render_prompt(messages, tools, mode, after, e))) {
        free(*asst);
        *asst = NULL;
    }
    return rc;
}

/* A new array of references to messages[0..n-1]. */
static cJSON *first_n(const cJSON *messages, size_t n)
{
    cJSON *tmp = cJSON_CreateArray();
    size_t i = 0;
    for (const cJSON *m = messages->child; tmp && m && i < n; m = m->next, i++) {
        cJSON *ref = cJSON_CreateObjectReference(m->child);
        if (!ref) {
            cJSON_Delete(tmp);
            return NULL;
        }
        cJSON_AddItemToArray(tmp, ref);
    }
    return tmp;
}

int agent_loop_replay_prompt(const cJSON *messages, const cJSON *raws, const cJSON *tools, enum inf_dsml_mode mode,
                             struct agent_prompt *out, bool *exact, struct ctx_err *e)
{
    static const char eos[] = INF_DSML_EOS;
    size_t el = sizeof eos - 1;
    memset(out, 0, sizeof *out);
    *exact = true;
    char *prev = NULL; /* the canonical text `out` stands for so far */
    size_t done = 0, a = 0;
    int rc = 0;
    for (const cJSON *m = messages->child; !rc && m; m = m->next, a++) {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        const cJSON *raw = cJSON_GetArrayItem(raws, (int)a);
        if (!a || !cJSON_IsString(role) || strcmp(role->valuestring, "assistant") != 0 || !cJSON_IsString(raw))
            continue;
        /* the prompt the model continued, and the canonical rendering with its answer */
        cJSON *before_m = first_n(messages, a), *with_m = first_n(messages, a + 1);
        struct agent_prompt before = {0};
        char *with = NULL;
        size_t wl = 0;
        if (!before_m || !with_m)
            rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
        if (!rc)
            rc = agent_loop_render_prompt(before_m, tools, mode, &before, e);
        if (!rc)
            rc = agent_loop_render(with_m, tools, mode, &with, &wl, e);
        cJSON_Delete(before_m);
        cJSON_Delete(with_m);
        if (!rc && (!starts_with(before.text, before.len, prev ? prev : "", done) ||
                    !starts_with(with, wl, before.text, before.len))) {
            *exact = false; /* the encoder broke the prefix property: canonical from here */
        } else if (!rc) {
            const char *r = raw->valuestring;
            size_t rl = strlen(r);
            if (prompt_append(out, before.text + done, before.len - done, &before, done) ||
                prompt_append(out, r, rl, NULL, 0) ||
                ((rl < el || memcmp(r + rl - el, eos, el) != 0) && prompt_append(out, eos, el, NULL, 0)))
                rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
            free(prev);
            prev = with;
            with = NULL;
            done = wl;
        }
        agent_prompt_free(&before);
        free(with);
        if (!*exact)
            break;
    }
    struct agent_prompt all = {0};
    if (!rc)
        rc = agent_loop_render_prompt(messages, tools, mode, &all, e);
    if (!rc && *exact && !starts_with(all.text, all.len, prev ? prev : "", done))
        *exact = false;
    if (!rc && !*exact) {
        agent_prompt_free(out);
        done = 0;
    }
    if (!rc && prompt_append(out, all.text + done, all.len - done, &all, done))
        rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
    agent_prompt_free(&all);
    free(prev);
    if (rc)
        agent_prompt_free(out);
    return rc;
}

int agent_loop_run(struct agent_tools *tools, const struct agent_model *model, cJSON *messages,
                   const struct agent_loop_opts *o, struct agent_loop_result *r, struct ctx_err *e)
{
    memset(r, 0, sizeof *r);
    if (!tools || !model || !model->complete || !cJSON_IsArray(messages) || !o)
        return ctx_err_set(e, CTX_EINVAL, "agent loop: tools, a model, options and a messages array are needed");
    if (!(r->raw = cJSON_CreateArray()))
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    const cJSON *schemas = agent_tools_schemas(tools);
    int max_steps = o->max_steps > 0 ? o->max_steps : 25;
    r->stop = "step_limit";
    struct replay rp = {0};
    struct agent_prompt full;
    int rc = agent_loop_render_prompt(messages, schemas, o->mode, &full, e);
    char *old = NULL;
    size_t olen = 0;
    if (!rc && o->resume) {
        /* The earlier messages' canonical rendering must be a prefix of the whole one; what
         * follows it is appended to the exact earlier transcript. */
        cJSON *tmp = cJSON_CreateArray();
        size_t i = 0;
        for (const cJSON *m = messages->child; tmp && m && i < o->resume_messages; m = m->next, i++)
            if (!cJSON_AddItemToArray(tmp, cJSON_CreateObjectReference(m->child)))
                break;
        if (!tmp || i < o->resume_messages)
            rc = tmp ? ctx_err_set(e, CTX_EINVAL, "resume_messages (%zu) is more than the messages (%zu)",
                                   o->resume_messages, i)
                     : ctx_err_set(e, CTX_ENOMEM, "out of memory");
        else
            rc = agent_loop_render(tmp, schemas, o->mode, &old, &olen, e);
        cJSON_Delete(tmp);
    }
    if (!rc) {
        int arc;
        if (old && starts_with(full.text, full.len, old, olen)) {
            arc = prompt_append(&rp.p, o->resume->text, o->resume->len, o->resume, 0);
            if (!arc)
                arc = prompt_append(&rp.p, full.text + olen, full.len - olen, &full, olen);
        } else {
            if (old)
                r->replay_rerendered++;
            arc = prompt_append(&rp.p, full.text, full.len, &full, 0);
        }
        if (arc)
            rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
        rp.canon = full.text;
        rp.clen = full.len;
        full.text = NULL;
    }
    agent_prompt_free(&full);
    free(old);
    for (int stepn = 1; !rc && stepn <= max_steps; stepn++) {
        if (cancelled(o)) {
            r->stop = "cancelled";
            break;
        }
        if (o->token_budget && r->completion_tokens >= o->token_budget) {
            r->stop = "token_budget";
            break;
        }
        r->steps = stepn;
        struct agent_event sev = {.kind = AGENT_EV_STEP, .step = stepn};
        emit_event(o, &sev);
        struct step s = {.o = o, .n = stepn};
        struct inf_dsml_parser_opts po = {.mode = o->mode};
        if (!(s.parser = inf_dsml_parser_new(&po, on_parse, &s))) {
            rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
            break;
        }
        struct agent_model_usage u = {0};
        struct ctx_err me = {0};
        int mrc = model->complete(model->ud, messages, schemas, &rp.p, o->mode, on_text, &s, &u, &me);
        const char *raw = s.raw ? s.raw : "";
        if (s.oom || !cJSON_AddItemToArray(r->raw, cJSON_CreateString(raw))) {
            inf_dsml_parser_free(s.parser);
            free(s.raw);
            rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
            break;
        }
        r->completion_tokens += u.completion_tokens ? u.completion_tokens : (s.len + 3) / 4;
        r->prompt_tokens += u.prompt_tokens;
        if (mrc == CTX_ECANCELED || cancelled(o) || mrc) {
            inf_dsml_parser_free(s.parser);
            free(s.raw);
            if (mrc == CTX_ECANCELED || cancelled(o)) {
                r->stop = "cancelled";
            } else {
                r->stop = "error";
                r->error = me;
                r->error.code = mrc;
            }
            break;
        }
        struct ctx_err pe = {0};
        if (!s.malformed && inf_dsml_parser_finish(s.parser, &pe) == CTX_EFORMAT)
            s.malformed = true;
        cJSON *msg = inf_dsml_parser_message(s.parser);
        const struct inf_dsml_error *perr = inf_dsml_parser_error(s.parser);
        char perrmsg[600];
        snprintf(perrmsg, sizeof perrmsg, "%s", perr ? perr->message : "");
        inf_dsml_parser_free(s.parser);
        if (!msg) {
            free(s.raw);
            rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
            break;
        }
        cJSON *calls = cJSON_GetObjectItemCaseSensitive(msg, "tool_calls");
        size_t ncalls = s.malformed ? 0 : (size_t)cJSON_GetArraySize(calls);
        if (!ncalls)
            cJSON_DeleteItemFromObjectCaseSensitive(msg, "tool_calls");
        /* Ids tie results to calls; the encoder orders results by them (ids are not rendered). */
        size_t k = 0;
        for (cJSON *c = ncalls ? calls->child : NULL; c; c = c->next, k++) {
            char id[48];
            snprintf(id, sizeof id, "call_%d_%zu", stepn, k);
            cJSON_DeleteItemFromObjectCaseSensitive(c, "id");
            cJSON_AddStringToObject(c, "id", id);
        }
        cJSON_AddItemToArray(messages, msg);
        bool final = false;
        if (s.malformed) {
            /* Keep what was said, drop calls that were not run, and tell the model why. */
            r->malformed++;
            char text[1024];
            snprintf(text, sizeof text, "Your last reply could not be parsed, so none of its tool "
                     "calls ran: %s. Write the tool calls again as a complete "
                     "<" INF_DSML_TOKEN "tool_calls> block exactly as the tool format describes, "
                     "or give your final answer.", perrmsg);
            cJSON *um = cJSON_CreateObject();
            if (!um || !cJSON_AddStringToObject(um, "role", "user") ||
                !cJSON_AddStringToObject(um, "content", text)) {
                cJSON_Delete(um);
                free(s.raw);
                rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
                break;
            }
            cJSON_AddItemToArray(messages, um);
            struct agent_event ev = {.kind = AGENT_EV_MALFORMED, .step = stepn, .text = perrmsg,
                                     .len = strlen(perrmsg)};
            emit_event(o, &ev);
        } else if (!ncalls) {
            final = true;
            r->final_text = dup_str(msg, "content");
            r->final_reasoning = dup_str(msg, "reasoning_content");
            if (!r->final_text || !r->final_reasoning)
                rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
        }
        k = 0;
        for (cJSON *c = ncalls ? calls->child : NULL; !rc && c; c = c->next, k++) {
            const cJSON *fn = cJSON_GetObjectItemCaseSensitive(c, "function");
            const cJSON *nm = cJSON_GetObjectItemCaseSensitive(fn, "name");
            const cJSON *ar = cJSON_GetObjectItemCaseSensitive(fn, "arguments");
            const char *name = cJSON_IsString(nm) ? nm->valuestring : "";
            const char *args = cJSON_IsString(ar) ? ar->valuestring : "{}";
            const char *id = cJSON_GetObjectItemCaseSensitive(c, "id")->valuestring;
            struct agent_tool_result tr = {0};
            if (cancelled(o)) {
                /* Every call still gets a result, so the transcript stays well-formed. */
                tr.text = strdup("error: cancelled by the user before this call ran");
                tr.is_error = true;
                if (!tr.text)
                    rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
                else
                    tr.len = strlen(tr.text);
            } else {
                struct agent_event ce = {.kind = AGENT_EV_TOOL_CALL, .step = stepn, .tool = name,
                                         .arguments = args, .call_id = id};
                emit_event(o, &ce);
                rc = agent_tools_call(tools, name, args, &tr, e);
                r->tool_calls++;
            }
            if (rc)
                break;
            struct agent_event re = {.kind = AGENT_EV_TOOL_RESULT, .step = stepn, .tool = name,
                                     .text = tr.text, .len = tr.len, .call_id = id,
                                     .is_error = tr.is_error, .changed = tr.changed};
            emit_event(o, &re);
            cJSON *tm = cJSON_CreateObject();
            if (!tm || !cJSON_AddStringToObject(tm, "role", "tool") ||
                !cJSON_AddStringToObject(tm, "tool_call_id", id) ||
                !cJSON_AddStringToObject(tm, "content", tr.text)) {
                cJSON_Delete(tm);
                agent_tool_result_free(&tr);
                rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
                break;
            }
            cJSON_AddItemToArray(messages, tm);
            agent_tool_result_free(&tr);
        }
        if (!rc) {
            char *asst = NULL;
            size_t alen = 0;
            struct agent_prompt after = {0};
            rc = render_pair(messages, schemas, o->mode, msg, &asst, &alen, &after, e);
            if (!rc)
                rc = replay_step(&rp, asst, alen, &after, raw, s.len, r, e);
            agent_prompt_free(&after);
            free(asst);
        }
        free(s.raw);
        if (rc)
            break;
        if (final) {
            r->stop = "final";
            break;
        }
        if (cancelled(o)) {
            r->stop = "cancelled";
            break;
        }
    }
    free(rp.canon);
    r->prompt = rp.p;
    if (!r->final_text)
        r->final_text = strdup("");
    if (!r->final_reasoning)
        r->final_reasoning = strdup("");
    if (rc) {
        r->stop = "error";
        r->error = e ? *e : (struct ctx_err){0};
        r->error.code = rc;
        if (rc == CTX_ENOMEM || rc == CTX_EINVAL)
            return rc;
    }
    return 0;
}
