/* The agent's model in ctxd; see agent_model.h.
 *
 * Local engine: the loop hands over the exact prompt text of the conversation (agent/loop.h:
 * prompt(k+1) starts with prompt(k) + the raw completion of step k). The state already holds the
 * resident prefix and, after a step, everything up to the last token fed; `held` is the text it
 * covers. Each step tokenizes only what follows `held` (with the literal spans, so file text and
 * tool results cannot spell control tokens), prefills it and decodes. A prompt that does not
 * continue `held` (not expected; the loop guarantees the prefix property) goes back to the
 * resident prefix rather than computing on a wrong state. */
#include "agent_model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dsml.h"
#include "dsml_guide.h"
#include "fim.h"
#include "engine.h"
#include "json.h"
#include "log.h"
#include "model.h"
#include "openai.h"
#include "sample.h"
#include "spec.h"
#include "scheduler.h"
#include "state.h"
#include "tokenizer.h"
#include "tools.h"

/* ---- forced completions ------------------------------------------------------------------- */

struct ctxd_forced {
    char **v;
    size_t n, next;
};

int ctxd_forced_load(const char *path, struct ctxd_forced **out, struct ctx_err *e)
{
    *out = NULL;
    int rc = 0;
    cJSON *j = ctx_json_read_file(path, 64u << 20, e);
    if (!j)
        return e->code ? e->code : ctx_err_set(e, CTX_EIO, "%s: cannot be read", path);
    if (!cJSON_IsArray(j)) {
        cJSON_Delete(j);
        return ctx_err_set(e, CTX_EFORMAT, "%s: the forced completions must be a JSON array of strings", path);
    }
    struct ctxd_forced *f = calloc(1, sizeof *f);
    size_t n = (size_t)cJSON_GetArraySize(j);
    if (!f || !(f->v = calloc(n ? n : 1, sizeof *f->v))) {
        free(f);
        cJSON_Delete(j);
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    }
    const cJSON *s;
    cJSON_ArrayForEach(s, j) {
        if (!cJSON_IsString(s)) {
            rc = ctx_err_set(e, CTX_EFORMAT, "%s: element %zu is not a string", path, f->n);
            break;
        }
        if (!(f->v[f->n] = strdup(s->valuestring))) {
            rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
            break;
        }
        f->n++;
    }
    cJSON_Delete(j);
    if (rc) {
        ctxd_forced_free(f);
        return rc;
    }
    *out = f;
    return 0;
}

void ctxd_forced_free(struct ctxd_forced *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < f->n; i++)
        free(f->v[i]);
    free(f->v);
    free(f);
}

const char *ctxd_forced_next(struct ctxd_forced *f)
{
    return f && f->next < f->n ? f->v[f->next++] : NULL;
}

size_t ctxd_forced_left(const struct ctxd_forced *f)
{
    return f ? f->n - f->next : 0;
}

/* ---- tool grammar ------------------------------------------------------------------------- */

const char *ctxd_tool_grammar_name(enum ctxd_tool_grammar g)
{
    return g == CTXD_TOOL_GRAMMAR_OFF ? "off" : "strict";
}

int ctxd_tool_grammar_parse(const char *s, enum ctxd_tool_grammar *out)
{
    if (s && !strcmp(s, "strict"))
        *out = CTXD_TOOL_GRAMMAR_STRICT;
    else if (s && !strcmp(s, "off"))
        *out = CTXD_TOOL_GRAMMAR_OFF;
    else
        return CTX_EINVAL;
    return 0;
}

/* ---- local engine ------------------------------------------------------------------------- */

static int held_append(struct ctxd_agent_model *m, const char *p, size_t n)
{
    if (m->held_len + n + 1 > m->held_cap) {
        size_t cap = m->held_cap ? m->held_cap : 4096;
        while (cap < m->held_len + n + 1)
            cap *= 2;
        char *h = realloc(m->held, cap);
        if (!h)
            return CTX_ENOMEM;
        m->held = h;
        m->held_cap = cap;
    }
    memcpy(m->held + m->held_len, p, n);
    m->held_len += n;
    m->held[m->held_len] = 0;
    return 0;
}

static cJSON *add_step(struct ctxd_agent_model *m, size_t prompt, size_t cached, size_t completion, bool forced)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    cJSON_AddNumberToObject(o, "prompt_tokens", (double)prompt);
    cJSON_AddNumberToObject(o, "cached_tokens", (double)cached);
    cJSON_AddNumberToObject(o, "completion_tokens", (double)completion);
    cJSON_AddBoolToObject(o, "forced", forced);
    cJSON_AddItemToArray(m->steps, o);
    return o;
}

/* The end of a tool-call block: the model is done with this step (its end-of-sentence token is
 * optional there, and the loop adds it to the transcript). */
static const char CALLS_END[] = "</" INF_DSML_TOKEN "tool_calls>";

/* One step of the local engine, run in pieces on the engine thread (engine_call): the prefill of
 * the new text, then decoding a few tokens per piece, so other jobs get the engine in between. */
struct lstep {
    struct ctxd_agent_model *m;
    const struct agent_prompt *prompt;
    const cJSON *tools;
    enum inf_dsml_mode mode;
    /* the tool grammar (STRICT, sampled steps): the completion's state, the tokens of the open
     * block, and the closing tags forced at the block cap */
    bool guided, guide_started;
    struct inf_dsml_guide_state gs;
    size_t btok;
    int32_t *cids;
    size_t nc, ci;
    int32_t think_end;
    const char *capped; /* NULL, "closed" or "cut" */
    /* degenerate loops (ctxd_fim_loop_cut on the step's text since text_start): in the reasoning
     * "</think>" is forced once, in the answer the end of sentence; NULL, "think_closed", "ended" or
     * "think_closed,ended" */
    size_t text_start;
    bool loop_restart;
    const char *loop;
    agent_emit_fn emit;
    void *emit_ud;
    struct ctx_err *e;
    int phase; /* 0 prefill, 1 decoding */
    int32_t *ids, *fids;
    size_t nids, nf, fi, gen, budget, cached, tail_len;
    const char *forced;
    float *logits;
    struct inf_sampler *smp;
    struct inf_detok *dt;
    char *piece;
    size_t cap;
    char tail[sizeof CALLS_END];
};

#define DECODE_PIECE 16 /* tokens per engine slice */

static int lstep_prefill(struct lstep *s)
{
    struct ctxd_agent_model *m = s->m;
    const struct agent_prompt *prompt = s->prompt;
    struct ctx_err *e = s->e;
    struct ctxd_engine *g = m->o.engine;
    const struct inf_tokenizer *tok = ctxd_engine_tokenizer(g);
    struct inf_model *model = ctxd_engine_model(g);
    if (!tok || !model || !m->o.st || !m->o.ready)
        return ctx_err_set(e, CTX_EINTERNAL, "the local engine is not loaded");
    const struct inf_config *c = inf_model_config(model);
    int rc = 0;
    if (!m->spec_tried && ctxd_engine_spec(g)) {
        m->spec_tried = true;
        struct ctx_err se = {0};
        if (inf_spec_new(model, m->o.st, &m->spec, &se))
            CTX_WARN("agent: speculative decoding is off: %s", se.msg);
    }
    if (m->spec && (rc = inf_spec_settle(m->spec, e)))
        return rc;
    if (!m->held_valid || prompt->len < m->held_len || memcmp(prompt->text, m->held, m->held_len) != 0) {
        if (m->held_valid)
            m->restarts++;
        if ((rc = inf_state_truncate(m->o.st, m->o.ready, e)))
            return rc;
        m->held_len = 0;
        if (prompt->len < m->o.prefix_len || memcmp(prompt->text, m->o.prefix_text, m->o.prefix_len) != 0)
            return ctx_err_set(e, CTX_EINTERNAL, "the agent's prompt does not continue the resident prefix");
        if (held_append(m, m->o.prefix_text, m->o.prefix_len))
            return ctx_err_set(e, CTX_ENOMEM, "out of memory");
        m->held_valid = true;
    }
    size_t base = m->held_len;
    const char *suffix = prompt->text + base;
    size_t slen = prompt->len - base;
    /* The literal spans that fall into the new text, moved to its offsets. */
    struct inf_text_span *sp = malloc((prompt->nspans ? prompt->nspans : 1) * sizeof *sp);
    if (!sp)
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    size_t ns = 0;
    for (size_t i = 0; i < prompt->nspans; i++) {
        size_t b = prompt->spans[i].off, end = b + prompt->spans[i].len;
        if (end <= base)
            continue;
        if (b < base)
            b = base;
        sp[ns].off = b - base;
        sp[ns].len = end - b;
        ns++;
    }
    s->cached = (size_t)m->o.st->pos;
    rc = inf_tokenizer_encode_spans(tok, suffix, slen, sp, ns, &s->ids, &s->nids, e);
    free(sp);
    if (!rc && !s->nids)
        rc = ctx_err_set(e, CTX_EINTERNAL, "the agent's prompt adds nothing to the state");
    s->forced = rc ? NULL : ctxd_forced_next(m->o.forced);
    /* The model's own text: control tokens are control tokens, as it would produce them. */
    if (s->forced)
        rc = inf_tokenizer_encode(tok, s->forced, strlen(s->forced), &s->fids, &s->nf, e);
    if (!rc && !(s->logits = malloc(sizeof(float) * (size_t)c->vocab_size)))
        rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
    struct inf_sampler_opts so = {.temperature = m->o.temperature, .top_p = m->o.top_p, .seed = m->o.seed};
    if (!rc && !s->forced)
        rc = inf_sampler_new(&so, c->vocab_size, &s->smp, e);
    if (!rc && !s->forced && m->o.tool_grammar == CTXD_TOOL_GRAMMAR_STRICT && s->tools) {
        /* the tools are the same on every step (they are part of the resident prefix) */
        if (!m->guide && (rc = inf_dsml_guide_new(tok, s->tools, &m->guide, e)) == 0 &&
            !(m->allow = malloc((size_t)c->vocab_size)))
            rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
        if (!rc) {
            inf_dsml_guide_start(m->guide, s->mode, &s->gs);
            s->guided = s->guide_started = true;
            s->think_end = inf_tokenizer_token_id(tok, INF_DSML_THINK_END);
        }
    }
    if (!rc && !(s->dt = inf_detok_new(tok)))
        rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
    s->cap = s->dt ? inf_detok_max_chunk(s->dt) : 0;
    if (!rc && !(s->piece = malloc(s->cap + 1)))
        rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
    if (!rc) {
        if (m->spec) {
            rc = inf_spec_prefill(m->spec, (const int *)s->ids, (int)s->nids, s->logits, e);
        } else {
            struct inf_forward_opts fo = {.logits = s->logits};
            rc = inf_model_forward(model, m->o.st, (const int *)s->ids, (int)s->nids, &fo, e);
        }
        if (rc)
            m->held_valid = false;
        else if (held_append(m, suffix, slen))
            rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
    }
    size_t max = m->o.max_tokens ? m->o.max_tokens : 8192;
    s->budget = max > m->used ? max - m->used : 0;
    return rc;
}

/* The next token is t, whatever the model says (the queue of forced tokens, shared with the
 * closing tags of a capped block, which is empty when this is called). 0 or -1 (out of memory). */
static int force_token(struct lstep *s, int32_t t)
{
    int32_t *c = malloc(sizeof *c);
    if (!c)
        return -1;
    free(s->cids);
    c[0] = t;
    s->cids = c;
    s->nc = 1;
    s->ci = 0;
    return 0;
}

/* Draws before the guided decoder masks the whole vocabulary (sampled steps; greedy tries once). */
#define LAZY_DRAWS 4

/* The next token from s->logits: with a draft in the state, verified against it (the same
 * distribution, inf_sample_draft), else a plain draw. */
static int32_t choose(struct lstep *s, struct ctxd_agent_model *m)
{
    return m->spec ? inf_sample_draft(s->smp, s->logits, inf_spec_pending(m->spec), NULL)
                   : inf_sample(s->smp, s->logits);
}

/* Up to DECODE_PIECE tokens: 1 when there is more to do, 0 when the step is over, or an error. */
static int lstep_decode(struct lstep *s)
{
    struct ctxd_agent_model *m = s->m;
    struct ctx_err *e = s->e;
    struct ctxd_engine *g = m->o.engine;
    struct inf_model *model = ctxd_engine_model(g);
    int eos = ctxd_engine_eos(g);
    if (s->gen == 0 && !s->text_start)
        s->text_start = m->held_len;
    /* A piece ends after DECODE_PIECE tokens, or with speculative decoding at the first token after
     * that which leaves no draft in the state (up to twice as many): the settle between pieces then
     * drops none. */
    for (int k = 0;; k++) {
        if (k >= DECODE_PIECE && (!m->spec || inf_spec_pending(m->spec) < 0 || k >= 2 * DECODE_PIECE))
            break;
        if (s->gen >= s->budget)
            return 0;
        if (ctxd_job_cancelled(m->o.job))
            return ctx_err_set(e, CTX_ECANCELED, "cancelled");
        int32_t t;
        if (s->forced) {
            if (s->fi == s->nf)
                return 0; /* the forced completion is over */
            t = s->fids[s->fi++];
        } else if (s->ci < s->nc) {
            t = s->cids[s->ci++]; /* the closing tags of a capped block */
        } else {
            if (s->guided) {
                const struct inf_config *c = inf_model_config(model);
                /* The end of sentence inside the reasoning would be malformed (no </think>): its
                 * probability goes to "</think>", the nearest legal way to stop reasoning, instead
                 * of to whatever came next (which lets a model that wanted to stop ramble on). */
                if (inf_dsml_guide_in_reasoning(&s->gs) && eos >= 0 && s->think_end >= 0 &&
                    eos < c->vocab_size && s->think_end < c->vocab_size) {
                    float a = s->logits[s->think_end], b = s->logits[eos];
                    if (!isnan(a) && !isnan(b) && b > -INFINITY)
                        s->logits[s->think_end] = fmaxf(a, b) + log1pf(expf(-fabsf(a - b)));
                }
                /* Lazily: the unmasked choice, kept when the grammar allows it, which is the masked
                 * choice exactly (greedy: the argmax over the allowed ids is the overall argmax when
                 * that one is allowed; sampled: draws from the logits until one is allowed is a draw
                 * from the masked distribution, by rejection, as long as no top-p cut applies: the cut
                 * of the masked distribution is not the masked cut). The whole mask (~0.3 ms over V4's
                 * 129,280 ids in text, bench/dsml_guide) only when LAZY_DRAWS draws were refused. */
                t = -1;
                const int lazy = m->o.temperature == 0 ? 1 : m->o.top_p > 0 && m->o.top_p < 1 ? 0 : LAZY_DRAWS;
                for (int k = 0; k < lazy && t < 0; k++) {
                    int32_t x = choose(s, m);
                    if (inf_dsml_guide_allows(m->guide, &s->gs, x))
                        t = x;
                }
                if (t < 0) {
                    size_t na = inf_dsml_guide_mask(m->guide, &s->gs, m->allow, (size_t)c->vocab_size);
                    if (na == 0)
                        return 0; /* the completion is over: nothing may follow */
                    for (int i = 0; i < c->vocab_size; i++)
                        if (!m->allow[i])
                            s->logits[i] = -INFINITY;
                    t = choose(s, m);
                }
            } else {
                t = choose(s, m);
            }
        }
        if (s->guided && inf_dsml_guide_feed_token(m->guide, &s->gs, t)) {
            /* not expected (the mask allowed t, and forced closing tags are legal): go on unguided
             * rather than stall */
            CTX_WARN("agent: token %d left the tool grammar; the rest of the step is not masked", (int)t);
            s->guided = false;
        }
        s->gen++;
        size_t n = 0;
        if (inf_detok_push(s->dt, t, s->piece, s->cap, &n))
            n = 0;
        if (t == eos) {
            /* not fed: the next prompt starts with its text, which tokenizes back to it */
            if (n && s->emit(s->emit_ud, s->piece, n))
                return ctx_err_set(e, CTX_ECANCELED, "cancelled");
            return 0;
        }
        int rc;
        if (m->spec) {
            rc = inf_spec_next(m->spec, t, s->logits, e);
        } else {
            struct inf_forward_opts fo = {.logits = s->logits};
            rc = inf_model_forward(model, m->o.st, &t, 1, &fo, e);
        }
        if (rc) {
            m->held_valid = false;
            return rc;
        }
        if (n && held_append(m, s->piece, n))
            return ctx_err_set(e, CTX_ENOMEM, "out of memory");
        if (n && s->emit(s->emit_ud, s->piece, n))
            return ctx_err_set(e, CTX_ECANCELED, "cancelled");
        /* the last bytes emitted, to see the end of a tool-call block */
        for (size_t i = 0; i < n; i++) {
            if (s->tail_len == sizeof s->tail - 1) {
                memmove(s->tail, s->tail + 1, s->tail_len - 1);
                s->tail_len--;
            }
            s->tail[s->tail_len++] = s->piece[i];
        }
        if (s->tail_len == sizeof CALLS_END - 1 && memcmp(s->tail, CALLS_END, s->tail_len) == 0)
            return 0;
        /* A small model's greedy decoding can fall into a loop ("_3_3_3_3..."), which would run to the
         * token budget: in the reasoning "</think>" is forced (once), in the answer the end of sentence
         * (the step ends as a final answer; the loop stays visible in it).
         * Inside a tool-call block the block cap below applies instead. */
        if (s->loop_restart && s->ci >= s->nc) { /* the forced "</think>" is in: look at the answer only */
            s->text_start = m->held_len;
            s->loop_restart = false;
        }
        if (n && s->guided && (!s->loop || s->loop[0] == 't') && !inf_dsml_guide_in_block(&s->gs) &&
            s->ci >= s->nc && m->held_len > s->text_start) {
            size_t len = m->held_len - s->text_start;
            if (ctxd_fim_loop_cut(m->held + s->text_start, len) < len) {
                if (!s->loop && inf_dsml_guide_in_reasoning(&s->gs) && s->think_end >= 0) {
                    if (force_token(s, s->think_end))
                        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
                    s->loop = "think_closed";
                    s->loop_restart = true;
                    CTX_WARN("agent: the reasoning repeats itself; closed by force");
                } else if (!inf_dsml_guide_in_reasoning(&s->gs) && eos >= 0) {
                    /* the answer ends here, as a final answer (the end of sentence, forced) */
                    if (force_token(s, eos))
                        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
                    s->loop = s->loop ? "think_closed,ended" : "ended";
                    CTX_WARN("agent: the answer repeats itself; ended by force");
                }
            }
        }
        if (s->guided && inf_dsml_guide_in_block(&s->gs) && !s->capped &&
            ++s->btok >= (m->o.block_cap ? m->o.block_cap : CTXD_BLOCK_CAP_DEFAULT)) {
            m->blocks_capped++;
            char close[128];
            size_t cl = 0;
            const struct inf_tokenizer *tok = ctxd_engine_tokenizer(g);
            struct ctx_err ce = {0};
            /* A read-only tool's runaway argument (a degenerate repetition, typically) may be cut:
             * the call then runs and its result tells the model what it asked for. Never a value
             * that would be written. */
            const char *tool = inf_dsml_guide_tool(m->guide, &s->gs);
            bool cut_ok = tool && agent_tool_is_read_only(tool);
            int crc = inf_dsml_guide_close_text(m->guide, &s->gs, close, sizeof close, &cl);
            const char *how = "closed";
            if (crc == CTX_ENOTFOUND && cut_ok) {
                crc = inf_dsml_guide_close_value_text(m->guide, &s->gs, close, sizeof close, &cl);
                how = "value_cut";
            }
            if (crc == 0 && inf_tokenizer_encode(tok, close, cl, &s->cids, &s->nc, &ce) == 0) {
                s->capped = how;
                CTX_WARN("agent: a tool-call block reached %zu tokens; closed by force%s", s->btok,
                         how[0] == 'v' ? " (a read-only tool's value cut short)" : "");
            } else {
                s->capped = "cut";
                CTX_WARN("agent: a tool-call block reached %zu tokens inside a name or value; the step ends there",
                         s->btok);
                return 0;
            }
        }
    }
    return 1;
}

static int lstep_work(void *arg)
{
    struct lstep *s = arg;
    if (s->phase == 0) {
        int rc = lstep_prefill(s);
        if (rc)
            return rc < 0 ? rc : CTX_EINTERNAL;
        s->phase = 1;
        return 1;
    }
    int rc = lstep_decode(s);
    /* Between pieces other jobs may use the engine, and after the step the state must hold exactly
     * its text: a draft still in it goes. */
    struct ctxd_agent_model *m = s->m;
    if (m->spec && inf_spec_pending(m->spec) >= 0) {
        struct ctx_err se = {0};
        int src = inf_spec_settle(m->spec, &se);
        if (src) {
            m->held_valid = false;
            if (rc >= 0 && rc <= 1) {
                *s->e = se;
                rc = src;
            }
        }
    }
    return rc;
}

static int local_complete(void *ud, const cJSON *messages, const cJSON *tools, const struct agent_prompt *prompt,
                          enum inf_dsml_mode mode, agent_emit_fn emit, void *emit_ud, struct agent_model_usage *usage,
                          struct ctx_err *e)
{
    (void)messages;
    struct ctxd_agent_model *m = ud;
    struct lstep s = {.m = m, .prompt = prompt, .tools = tools, .mode = mode, .emit = emit, .emit_ud = emit_ud,
                      .e = e};
    int rc;
    struct inf_spec_stats sp0 = {0}, sp1 = {0};
    if (m->spec)
        inf_spec_stats(m->spec, &sp0);
    if (m->o.engine_call) {
        rc = m->o.engine_call(m->o.engine_ud, lstep_work, &s);
    } else {
        while ((rc = lstep_work(&s)) == 1) {
        }
    }
    if (!rc && s.dt) {
        /* bytes of an unfinished character: emitted as U+FFFD, but the state does not match them */
        size_t n = 0;
        if (inf_detok_finish(s.dt, s.piece, s.cap, &n) == 0 && n) {
            m->held_valid = false;
            if (emit(emit_ud, s.piece, n))
                rc = ctx_err_set(e, CTX_ECANCELED, "cancelled");
        }
    }
    if (rc == CTX_ECANCELED)
        m->held_valid = false; /* the loop stops; nothing continues this state */
    m->used += s.gen;
    usage->prompt_tokens = s.nids;
    usage->completion_tokens = s.gen;
    cJSON *rec = add_step(m, s.nids, s.cached, s.gen, s.forced != NULL);
    if (rec) {
        cJSON_AddStringToObject(rec, "tool_grammar", s.forced ? "forced" : s.guide_started ? "strict" : "off");
        if (s.capped)
            cJSON_AddStringToObject(rec, "block_cap", s.capped);
        if (s.loop)
            cJSON_AddStringToObject(rec, "loop", s.loop);
        if (m->spec) { /* this step's speculative decoding: two-token forwards, drafts kept, one-token forwards */
            inf_spec_stats(m->spec, &sp1);
            cJSON_AddNumberToObject(rec, "drafted", (double)(sp1.drafted - sp0.drafted));
            cJSON_AddNumberToObject(rec, "accepted", (double)(sp1.accepted - sp0.accepted));
            cJSON_AddNumberToObject(rec, "plain_forwards", (double)(sp1.plain - sp0.plain));
        }
    }
    free(s.cids);
    inf_detok_free(s.dt);
    inf_sampler_free(s.smp);
    free(s.piece);
    free(s.logits);
    free(s.ids);
    free(s.fids);
    return rc;
}

/* ---- remote backend ----------------------------------------------------------------------- */

struct remote_stream {
    agent_emit_fn emit;
    void *emit_ud;
    enum inf_dsml_mode mode;
    bool think_closed;
    char *out;          /* what was emitted */
    size_t len, cap;
};

static int rs_emit(struct remote_stream *s, const char *p, size_t n)
{
    if (!n)
        return 0;
    if (s->len + n + 1 > s->cap) {
        size_t cap = s->cap ? s->cap : 1024;
        while (cap < s->len + n + 1)
            cap *= 2;
        char *o = realloc(s->out, cap);
        if (!o)
            return CTX_ENOMEM;
        s->out = o;
        s->cap = cap;
    }
    memcpy(s->out + s->len, p, n);
    s->len += n;
    s->out[s->len] = 0;
    return s->emit(s->emit_ud, p, n) ? CTX_ECANCELED : 0;
}

static int remote_event(void *ud, const struct agent_openai_event *ev, struct ctx_err *e)
{
    struct remote_stream *s = ud;
    int rc = 0;
    if (ev->kind == AGENT_OPENAI_EV_REASONING && s->mode == INF_DSML_THINKING && !s->think_closed)
        rc = rs_emit(s, ev->text, ev->len);
    else if (ev->kind == AGENT_OPENAI_EV_CONTENT) {
        if (s->mode == INF_DSML_THINKING && !s->think_closed) {
            s->think_closed = true;
            rc = rs_emit(s, INF_DSML_THINK_END, strlen(INF_DSML_THINK_END));
        }
        if (!rc)
            rc = rs_emit(s, ev->text, ev->len);
    }
    if (rc)
        return ctx_err_set(e, rc, rc == CTX_ECANCELED ? "cancelled" : "out of memory");
    return 0;
}

/* The DSML text of an assistant message: the encoder's rendering of [user, message] after that
 * of [user]. */
static int render_assistant(const cJSON *msg, enum inf_dsml_mode mode, char **out, size_t *len, struct ctx_err *e)
{
    cJSON *a = cJSON_CreateArray(), *u = cJSON_CreateObject();
    if (!a || !u || !cJSON_AddStringToObject(u, "role", "user") || !cJSON_AddStringToObject(u, "content", "")) {
        cJSON_Delete(a);
        cJSON_Delete(u);
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    }
    cJSON_AddItemToArray(a, u);
    struct inf_dsml_opts o = {.mode = mode, .drop_thinking = false};
    char *t1 = NULL, *t2 = NULL;
    size_t l1 = 0, l2 = 0;
    int rc = inf_dsml_encode(a, NULL, &o, &t1, &l1, e);
    if (!rc) {
        cJSON *m = cJSON_Duplicate(msg, 1);
        if (!m)
            rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
        else {
            cJSON_AddItemToArray(a, m);
            rc = inf_dsml_encode(a, NULL, &o, &t2, &l2, e);
        }
    }
    cJSON_Delete(a);
    if (!rc && (l2 < l1 || memcmp(t1, t2, l1) != 0))
        rc = ctx_err_set(e, CTX_EINTERNAL, "the assistant's rendering does not continue the prompt");
    if (!rc) {
        *len = l2 - l1;
        memmove(t2, t2 + l1, *len + 1);
        *out = t2;
        t2 = NULL;
    }
    free(t1);
    free(t2);
    return rc;
}

static int remote_complete(void *ud, const cJSON *messages, const cJSON *tools, const struct agent_prompt *prompt,
                           enum inf_dsml_mode mode, agent_emit_fn emit, void *emit_ud,
                           struct agent_model_usage *usage, struct ctx_err *e)
{
    (void)prompt;
    struct ctxd_agent_model *m = ud;
    struct agent_openai *remote = ctxd_engine_remote(m->o.engine);
    struct remote_stream s = {.emit = emit, .emit_ud = emit_ud, .mode = mode};
    struct agent_openai_result res = {0};
    int rc = agent_openai_chat(remote, messages, tools, remote_event, &s, ctxd_job_cancel_flag(m->o.job), &res, e);
    if (!rc && res.message) {
        /* The rest of the canonical text: the tool-call block and the end of sentence. */
        char *full = NULL;
        size_t flen = 0;
        rc = render_assistant(res.message, mode, &full, &flen, e);
        if (!rc) {
            size_t from = s.len;
            if (flen < s.len || memcmp(full, s.out ? s.out : "", s.len) != 0) {
                /* what streamed is not the canonical text (it cannot be taken back): add the calls */
                static const char calls[] = "\n\n<" INF_DSML_TOKEN "tool_calls>";
                char *at = strstr(full, calls);
                from = at ? (size_t)(at - full) : flen;
            }
            rc = rs_emit(&s, full + from, flen - from);
            if (rc)
                ctx_err_set(e, rc, rc == CTX_ECANCELED ? "cancelled" : "out of memory");
        }
        free(full);
    }
    if (res.usage.reported) {
        usage->prompt_tokens = (size_t)res.usage.prompt_tokens;
        usage->completion_tokens = (size_t)res.usage.completion_tokens;
        m->used += (size_t)res.usage.completion_tokens;
        add_step(m, (size_t)res.usage.prompt_tokens,
                 res.usage.cached_tokens > 0 ? (size_t)res.usage.cached_tokens : 0,
                 (size_t)res.usage.completion_tokens, false);
    }
    agent_openai_result_free(&res);
    free(s.out);
    return rc;
}

int ctxd_agent_model_init(struct ctxd_agent_model *m, const struct ctxd_agent_model_opts *o, struct ctx_err *e)
{
    memset(m, 0, sizeof *m);
    m->o = *o;
    if (!(m->steps = cJSON_CreateArray()))
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    m->model.ud = m;
    m->model.complete = ctxd_engine_remote(o->engine) ? remote_complete : local_complete;
    return 0;
}

void ctxd_agent_model_fini(struct ctxd_agent_model *m)
{
    free(m->held);
    cJSON_Delete(m->steps);
    inf_dsml_guide_free(m->guide);
    free(m->allow);
    inf_spec_free(m->spec);
    memset(m, 0, sizeof *m);
}
