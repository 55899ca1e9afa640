/* fim.complete (fim.h): parameters are checked on the loop thread; trimming, the prompt and the
 * decode run on the engine thread as an interactive job on a state of its own, so the resident
 * repositories' states are never touched and no return to a prefix is needed afterwards. */
#include "fim.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "log.h"
#include "model.h"
#include "rpc.h"
#include "sample.h"
#include "spec.h"
#include "scheduler.h"
#include "state.h"
#include "tokenizer.h"

#define FIM_MAX_TOKENS_DEFAULT 64
#define FIM_MAX_TOKENS_MAX 1024
#define FIM_BUDGET_DEFAULT 2048
#define FIM_BUDGET_MIN 16
#define FIM_BUDGET_MAX 65536
#define FIM_MAX_STOPS 16
#define FIM_STOP_MAX_BYTES 256

struct fim_req {
    struct fim_req *next;
    struct ctxd *d;
    struct ctxd_call *call;
    uint64_t client;
    struct ctxd_job *job;
    int superseded;
    char *file, *prefix, *suffix;
    size_t prefix_len, suffix_len;
    char *stops[FIM_MAX_STOPS];
    size_t n_stops;
    bool loop_stop; /* end a degenerate loop (ctxd_fim_loop_cut) */
    int max_tokens;
    size_t budget;
    struct inf_sampler_opts sampling;
    /* results, written on the engine thread, read in done() */
    char *text;
    size_t len, cap;
    int tokens;
    const char *finish, *stopped_by;
    size_t prompt_tokens, prefix_tokens, suffix_tokens, prefix_start, suffix_end;
    bool spec;                   /* decoded speculatively (ctxd --spec): drafted / accepted below */
    long long drafted, accepted;
};

/* The requests queued or running, on the loop thread (for supersession and fim.cancel). */
static struct fim_req *active;

/* ---- pure pieces ---- */

size_t ctxd_fim_cut(const char *text, size_t len, const char *const *stops, size_t n_stops, const char **why)
{
    size_t cut = len;
    *why = NULL;
    for (size_t i = 0; i < n_stops; i++) {
        size_t sl = strlen(stops[i]);
        for (size_t p = 0; sl && p + sl <= len && p < cut; p++)
            if (memcmp(text + p, stops[i], sl) == 0) {
                cut = p;
                *why = "stop_string";
                break;
            }
    }
    for (size_t p = 0; p < len && p < cut; p++) {
        if (text[p] != '\n')
            continue;
        size_t q = p + 1;
        while (q < len && (text[q] == ' ' || text[q] == '\t' || text[q] == '\r'))
            q++;
        if (q < len && text[q] == '\n') {
            cut = p;
            *why = "blank_line";
            break;
        }
    }
    return cut;
}

size_t ctxd_fim_loop_cut(const char *text, size_t len)
{
    for (size_t p = 1; p <= FIM_LOOP_MAX_PERIOD && 4 * p <= len; p++) {
        /* the longest suffix with period p: text[k] == text[k + p] for every k in it */
        size_t i = len - p;
        while (i > 0 && text[i - 1] == text[i - 1 + p])
            i--;
        size_t run = len - i;
        if (run < 4 * p || run < FIM_LOOP_MIN_BYTES)
            continue;
        if (!memchr(text + i, '\n', p)) {
            /* a loop inside a line: drop the whole line it starts in */
            while (i > 0 && text[i - 1] != '\n')
                i--;
            return i;
        }
        /* repeated lines: keep the first line that lies wholly in the region, once */
        size_t ls = i;
        if (ls > 0 && text[ls - 1] != '\n')
            ls = (size_t)((const char *)memchr(text + ls, '\n', len - ls) - text) + 1;
        const char *nl = memchr(text + ls, '\n', len - ls);
        return nl ? (size_t)(nl - text) + 1 : ls;
    }
    return len;
}

static int fits(const char *t, size_t n, size_t budget, ctxd_fim_count_fn count, void *ud, int *ok, size_t *tokens)
{
    size_t c = 0;
    int rc = count(ud, t, n, &c);
    if (rc)
        return rc;
    *ok = c <= budget;
    if (*ok)
        *tokens = c;
    return 0;
}

/* The next UTF-8 character boundary at or after b. */
static size_t char_up(const char *t, size_t len, size_t b)
{
    while (b < len && ((unsigned char)t[b] & 0xC0) == 0x80)
        b++;
    return b;
}

static size_t char_down(const char *t, size_t b)
{
    while (b > 0 && ((unsigned char)t[b] & 0xC0) == 0x80)
        b--;
    return b;
}

/* Offsets just after each '\n' of text, ascending (malloc'd; *n may be 0). */
static int line_ends(const char *text, size_t len, size_t **out, size_t *n)
{
    size_t cap = 64, *v = malloc(cap * sizeof *v);
    *n = 0;
    if (!v)
        return CTX_ENOMEM;
    for (const char *p = memchr(text, '\n', len); p; p = memchr(p + 1, '\n', len - (size_t)(p + 1 - text))) {
        if (*n == cap) {
            size_t *g = realloc(v, (cap *= 2) * sizeof *v);
            if (!g) {
                free(v);
                return CTX_ENOMEM;
            }
            v = g;
        }
        v[(*n)++] = (size_t)(p - text) + 1;
        if ((size_t)(p + 1 - text) >= len)
            break;
    }
    *out = v;
    return 0;
}

int ctxd_fim_trim_prefix(const char *text, size_t len, size_t budget, ctxd_fim_count_fn count, void *ud,
                         size_t *start, size_t *tokens)
{
    int ok = 0, rc = fits(text, len, budget, count, ud, &ok, tokens);
    *start = 0;
    if (rc || ok)
        return rc;
    size_t *ls = NULL, n = 0;
    if ((rc = line_ends(text, len, &ls, &n)))
        return rc;
    /* The smallest line start whose tail text[s..len) fits: token counts shrink as s moves right.
     * A tail that is empty while the cursor's line is not does not count: part of that line is
     * worth more than nothing. */
    size_t cand = n && ls[n - 1] == len ? n - 1 : n;
    size_t lo = 0, hi = cand, best_tok = 0;
    int found = 0;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2, t = 0;
        if ((rc = fits(text + ls[mid], len - ls[mid], budget, count, ud, &ok, &t))) {
            free(ls);
            return rc;
        }
        if (ok) {
            found = 1;
            best_tok = t;
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    if (found) {
        *start = ls[lo];
        *tokens = best_tok;
        free(ls);
        return 0;
    }
    /* Even the cursor's line does not fit: keep its end, cut at a character boundary. */
    lo = cand ? ls[cand - 1] : 0;
    hi = len;
    free(ls);
    best_tok = 0;
    while (lo < hi) {
        size_t mid = char_up(text, len, lo + (hi - lo) / 2), t = 0;
        if (mid >= hi)
            break;
        if ((rc = fits(text + mid, len - mid, budget, count, ud, &ok, &t)))
            return rc;
        if (ok) {
            hi = mid;
            best_tok = t;
        } else {
            lo = mid + 1;
        }
    }
    *start = hi;
    *tokens = hi < len ? best_tok : 0;
    return 0;
}

int ctxd_fim_trim_suffix(const char *text, size_t len, size_t budget, ctxd_fim_count_fn count, void *ud,
                         size_t *end, size_t *tokens)
{
    int ok = 0, rc = fits(text, len, budget, count, ud, &ok, tokens);
    *end = len;
    if (rc || ok)
        return rc;
    size_t *le = NULL, n = 0;
    if ((rc = line_ends(text, len, &le, &n)))
        return rc;
    /* The largest line end whose head text[0..e) fits. */
    size_t lo = 0, hi = n, best_tok = 0;
    int found = 0;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2, t = 0;
        if ((rc = fits(text, le[mid], budget, count, ud, &ok, &t))) {
            free(le);
            return rc;
        }
        if (ok) {
            found = 1;
            best_tok = t;
            *end = le[mid];
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    size_t first = n ? le[0] : len;
    free(le);
    if (found) {
        *tokens = best_tok;
        return 0;
    }
    /* The cursor's line alone is too long: keep its start, cut at a character boundary. The
     * largest fitting cut lies in [0, first). */
    lo = 0;
    hi = first;
    best_tok = 0;
    while (lo < hi) {
        size_t mid = char_down(text, lo + (hi - lo + 1) / 2), t = 0;
        if (mid <= lo)
            break;
        if ((rc = fits(text, mid, budget, count, ud, &ok, &t)))
            return rc;
        if (ok) {
            lo = mid;
            best_tok = t;
        } else {
            hi = mid - 1;
        }
    }
    *end = lo;
    *tokens = lo ? best_tok : 0;
    return 0;
}

/* ---- the job ---- */

static void free_req(struct fim_req *q)
{
    free(q->file);
    free(q->prefix);
    free(q->suffix);
    for (size_t i = 0; i < q->n_stops; i++)
        free(q->stops[i]);
    free(q->text);
    free(q);
}

static int count_literal(void *ud, const char *text, size_t len, size_t *n)
{
    struct ctx_err e = {0};
    /* Editor text is untrusted: special-token strings in it are ordinary text. */
    return inf_tokenizer_count_flags(ud, text, len, INF_TOK_LITERAL, n, &e);
}

static int append_text(struct fim_req *q, const char *p, size_t n)
{
    if (q->len + n + 1 > q->cap) {
        size_t cap = q->cap ? q->cap * 2 : 256;
        while (cap < q->len + n + 1)
            cap *= 2;
        char *g = realloc(q->text, cap);
        if (!g)
            return CTX_ENOMEM;
        q->text = g;
        q->cap = cap;
    }
    memcpy(q->text + q->len, p, n);
    q->len += n;
    q->text[q->len] = 0;
    return 0;
}

static int special_id(const struct inf_tokenizer *tok, const char *name, int32_t *id, struct ctx_err *e)
{
    *id = inf_tokenizer_token_id(tok, name);
    return *id < 0 ? ctx_err_set(e, CTX_EFORMAT, "the tokenizer has no %s token", name) : 0;
}

/* BOS <｜fim▁begin｜> prefix <｜fim▁hole｜> suffix <｜fim▁end｜>, the prefix and suffix trimmed to the
 * budget around the cursor (the suffix gets at most a quarter of it). */
static int build_prompt(struct fim_req *q, const struct inf_tokenizer *tok, int32_t **ids, size_t *n, int32_t *end_id,
                        struct ctx_err *e)
{
    int32_t bos, begin, hole;
    int rc = special_id(tok, "<｜begin▁of▁sentence｜>", &bos, e);
    if (!rc)
        rc = special_id(tok, "<｜fim▁begin｜>", &begin, e);
    if (!rc)
        rc = special_id(tok, "<｜fim▁hole｜>", &hole, e);
    if (!rc)
        rc = special_id(tok, "<｜fim▁end｜>", end_id, e);
    if (rc)
        return rc;
    size_t avail = q->budget - 4, sfx_budget = avail / 4, stok = 0, ptok = 0;
    rc = ctxd_fim_trim_suffix(q->suffix, q->suffix_len, sfx_budget, count_literal, (void *)tok, &q->suffix_end, &stok);
    if (rc)
        return ctx_err_set(e, rc, "suffix: %s", rc == CTX_ENOMEM ? "out of memory" : "not valid UTF-8 text");
    rc = ctxd_fim_trim_prefix(q->prefix, q->prefix_len, avail - stok, count_literal, (void *)tok, &q->prefix_start,
                              &ptok);
    if (rc)
        return ctx_err_set(e, rc, "prefix: %s", rc == CTX_ENOMEM ? "out of memory" : "not valid UTF-8 text");
    int32_t *pi = NULL, *si = NULL;
    size_t pn = 0, sn = 0;
    rc = inf_tokenizer_encode_flags(tok, q->prefix + q->prefix_start, q->prefix_len - q->prefix_start, INF_TOK_LITERAL,
                                    &pi, &pn, e);
    if (!rc)
        rc = inf_tokenizer_encode_flags(tok, q->suffix, q->suffix_end, INF_TOK_LITERAL, &si, &sn, e);
    int32_t *v = rc ? NULL : malloc((pn + sn + 4) * sizeof *v);
    if (!rc && !v)
        rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
    if (!rc) {
        size_t k = 0;
        v[k++] = bos;
        v[k++] = begin;
        memcpy(v + k, pi, pn * sizeof *v);
        k += pn;
        v[k++] = hole;
        memcpy(v + k, si, sn * sizeof *v);
        k += sn;
        v[k++] = *end_id;
        *ids = v;
        *n = k;
        q->prefix_tokens = pn;
        q->suffix_tokens = sn;
        q->prompt_tokens = k;
    }
    free(pi);
    free(si);
    return rc;
}

static int fim_run(struct ctxd_job_ctx *ctx, void *ud)
{
    struct fim_req *q = ud;
    struct ctxd_engine *g = q->d->engine;
    struct ctx_err e = {0};
    if (ctxd_engine_remote(g))
        return ctxd_job_fail(ctx, CTX_EUNSUPPORTED, "fim.complete needs the local engine (ctxd runs --backend openai)");
    if (ctxd_engine_load(g, &e))
        return ctxd_job_fail(ctx, e.code, "%s", e.msg);
    const struct inf_tokenizer *tok = ctxd_engine_tokenizer(g);
    struct inf_model *m = ctxd_engine_model(g);
    const struct inf_config *c = inf_model_config(m);
    int32_t *ids = NULL, fim_end = -1;
    size_t nids = 0;
    float *logits = NULL;
    struct inf_state *st = NULL;
    struct inf_sampler *smp = NULL;
    struct inf_detok *dt = NULL;
    char *piece = NULL;
    int rc = build_prompt(q, tok, &ids, &nids, &fim_end, &e);
    if (!rc && !(logits = malloc(sizeof(float) * (size_t)c->vocab_size)))
        rc = ctx_err_set(&e, CTX_ENOMEM, "out of memory");
    if (!rc)
        rc = inf_state_new(c, &st, &e);
    if (!rc)
        rc = inf_sampler_new(&q->sampling, c->vocab_size, &smp, &e);
    if (!rc && !(dt = inf_detok_new(tok)))
        rc = ctx_err_set(&e, CTX_ENOMEM, "out of memory");
    size_t cap = dt ? inf_detok_max_chunk(dt) : 0;
    if (!rc && !(piece = malloc(cap + 1)))
        rc = ctx_err_set(&e, CTX_ENOMEM, "out of memory");
    /* --spec: the MTP block's drafts verified by two-token forwards (inference/spec.h); the state is
     * this request's alone and goes at the end, so a draft left in it needs no settle */
    struct inf_spec *sp = NULL;
    if (!rc && ctxd_engine_spec(g)) {
        struct ctx_err se = {0};
        if (inf_spec_new(m, st, &sp, &se))
            CTX_WARN("fim: speculative decoding is off: %s", se.msg);
    }
    int cancelled = 0;
    if (!rc && !(cancelled = ctxd_job_cancelled(ctx))) {
        struct inf_forward_opts fo = {.logits = logits};
        rc = sp ? inf_spec_prefill(sp, (const int *)ids, (int)nids, logits, &e)
                : inf_model_forward(m, st, (const int *)ids, (int)nids, &fo, &e);
    }
    int eos = ctxd_engine_eos(g), eot = inf_tokenizer_token_id(tok, "<|EOT|>");
    const char *const *stops = (const char *const *)q->stops;
    q->finish = "length";
    while (!rc && !cancelled && q->tokens < q->max_tokens) {
        if ((cancelled = ctxd_job_cancelled(ctx)))
            break;
        int32_t t = sp ? inf_sample_draft(smp, logits, inf_spec_pending(sp), NULL) : inf_sample(smp, logits);
        q->tokens++;
        if (t == eos || t == fim_end || t == eot) {
            q->finish = "stop";
            q->stopped_by = "end_token";
            break;
        }
        size_t n = 0;
        if (inf_detok_push(dt, t, piece, cap, &n) == 0 && n) {
            if (append_text(q, piece, n)) {
                rc = ctx_err_set(&e, CTX_ENOMEM, "out of memory");
                break;
            }
            const char *why = NULL;
            size_t keep = ctxd_fim_cut(q->text, q->len, stops, q->n_stops, &why);
            if (!why && q->loop_stop && (keep = ctxd_fim_loop_cut(q->text, q->len)) < q->len)
                why = "loop";
            if (why) {
                q->len = keep;
                q->text[keep] = 0;
                q->finish = "stop";
                q->stopped_by = why;
                break;
            }
        }
        if (q->tokens == q->max_tokens)
            break; /* no forward pass for a token nobody will read */
        struct inf_forward_opts fo = {.logits = logits};
        rc = sp ? inf_spec_next(sp, t, logits, &e) : inf_model_forward(m, st, &t, 1, &fo, &e);
    }
    if (sp) {
        struct inf_spec_stats ss;
        inf_spec_stats(sp, &ss);
        q->spec = true;
        q->drafted = ss.drafted;
        q->accepted = ss.accepted;
        inf_spec_free(sp);
    }
    if (!rc && !cancelled && strcmp(q->finish, "length") == 0) {
        size_t n = 0; /* a character left unfinished by the budget comes out as U+FFFD */
        if (inf_detok_finish(dt, piece, cap, &n) == 0 && n && append_text(q, piece, n))
            rc = ctx_err_set(&e, CTX_ENOMEM, "out of memory");
    }
    inf_detok_free(dt);
    inf_sampler_free(smp);
    inf_state_free(st);
    free(piece);
    free(logits);
    free(ids);
    if (rc)
        return ctxd_job_fail(ctx, rc, "%s", e.msg);
    if (cancelled)
        return ctxd_job_fail(ctx, CTX_ECANCELED, "cancelled");
    return CTXD_JOB_DONE;
}

static void unlink_req(struct fim_req *q)
{
    for (struct fim_req **pp = &active; *pp; pp = &(*pp)->next)
        if (*pp == q) {
            *pp = q->next;
            return;
        }
}

static void fim_done(void *ud, int status, const char *message)
{
    struct fim_req *q = ud;
    unlink_req(q);
    if (status == CTX_ECANCELED) {
        cJSON *data = cJSON_CreateObject();
        cJSON_AddStringToObject(data, "code", "ECANCELED");
        if (q->superseded)
            cJSON_AddBoolToObject(data, "superseded", true);
        ctxd_call_fail(q->call, CTXD_RPC_CANCELLED,
                       q->superseded ? "superseded by a newer fim.complete" : "cancelled", data);
    } else if (status) {
        struct ctx_err e = {0};
        ctx_err_set(&e, status, "fim.complete: %s", message);
        ctxd_call_fail_err(q->call, &e);
    } else {
        cJSON *r = cJSON_CreateObject();
        cJSON_AddStringToObject(r, "text", q->text ? q->text : "");
        cJSON_AddNumberToObject(r, "tokens", q->tokens);
        cJSON_AddStringToObject(r, "finish_reason", q->finish);
        if (q->stopped_by)
            cJSON_AddStringToObject(r, "stopped_by", q->stopped_by);
        else
            cJSON_AddNullToObject(r, "stopped_by");
        cJSON_AddNumberToObject(r, "prompt_tokens", (double)q->prompt_tokens);
        if (q->spec) {
            cJSON_AddNumberToObject(r, "drafted", (double)q->drafted);
            cJSON_AddNumberToObject(r, "accepted", (double)q->accepted);
        }
        cJSON_AddNumberToObject(r, "prefix_tokens", (double)q->prefix_tokens);
        cJSON_AddNumberToObject(r, "suffix_tokens", (double)q->suffix_tokens);
        cJSON_AddNumberToObject(r, "prefix_start", (double)q->prefix_start);
        cJSON_AddNumberToObject(r, "suffix_end", (double)q->suffix_end);
        cJSON_AddStringToObject(r, "model", ctxd_engine_describe(q->d->engine));
        cJSON_AddBoolToObject(r, "noise", ctxd_engine_is_noise(q->d->engine));
        ctxd_call_reply(q->call, r);
    }
    free_req(q);
}

static const struct ctxd_job_ops fim_ops = {fim_run, fim_done};

/* ---- methods ---- */

static int bad(struct ctxd_call *call, const char *msg)
{
    ctxd_call_fail(call, CTXD_RPC_INVALID_PARAMS, msg, NULL);
    return -1;
}

static int int_field(struct ctxd_call *call, const cJSON *params, const char *name, long long lo, long long hi,
                     long long *v)
{
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(params, name);
    if (!p)
        return 0;
    if (!cJSON_IsNumber(p) || p->valuedouble != floor(p->valuedouble) || p->valuedouble < (double)lo ||
        p->valuedouble > (double)hi) {
        char msg[160];
        snprintf(msg, sizeof msg, "\"%s\" must be an integer in [%lld, %lld]", name, lo, hi);
        return bad(call, msg);
    }
    *v = (long long)p->valuedouble;
    return 0;
}

static int string_field(struct ctxd_call *call, const cJSON *params, const char *name, bool required, char **out,
                        size_t *len)
{
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(params, name);
    if (!p && !required)
        return 0;
    if (!cJSON_IsString(p)) {
        char msg[96];
        snprintf(msg, sizeof msg, "\"%s\" (a string) is required", name);
        return bad(call, msg);
    }
    *out = strdup(p->valuestring);
    if (len)
        *len = strlen(p->valuestring);
    return *out ? 0 : bad(call, "out of memory");
}

static int parse(struct ctxd_call *call, const cJSON *params, struct fim_req *q)
{
    static const char *const allowed[] = {"path", "file",  "prefix", "suffix",    "max_tokens", "stop",
                                          "budget", "temperature", "top_p", "seed", "loop_stop", NULL};
    if (ctxd_call_check_params(call, params, allowed))
        return -1;
    if (!cJSON_IsObject(params))
        return bad(call, "params must be an object with \"file\" and \"prefix\"");
    const cJSON *path = cJSON_GetObjectItemCaseSensitive(params, "path");
    if (path && !cJSON_IsString(path))
        return bad(call, "\"path\" must be a string (the repository directory)");
    long long max_tokens = FIM_MAX_TOKENS_DEFAULT, budget = FIM_BUDGET_DEFAULT, seed = 0;
    if (string_field(call, params, "file", true, &q->file, NULL) ||
        string_field(call, params, "prefix", true, &q->prefix, &q->prefix_len) ||
        string_field(call, params, "suffix", false, &q->suffix, &q->suffix_len) ||
        int_field(call, params, "max_tokens", 1, FIM_MAX_TOKENS_MAX, &max_tokens) ||
        int_field(call, params, "budget", FIM_BUDGET_MIN, FIM_BUDGET_MAX, &budget) ||
        int_field(call, params, "seed", 0, 9007199254740991LL, &seed))
        return -1;
    if (!q->suffix && !(q->suffix = strdup("")))
        return bad(call, "out of memory");
    const cJSON *tp = cJSON_GetObjectItemCaseSensitive(params, "temperature");
    const cJSON *pp = cJSON_GetObjectItemCaseSensitive(params, "top_p");
    if (tp && (!cJSON_IsNumber(tp) || tp->valuedouble < 0 || tp->valuedouble > 10))
        return bad(call, "\"temperature\" must be a number in [0, 10]");
    if (pp && (!cJSON_IsNumber(pp) || pp->valuedouble <= 0 || pp->valuedouble > 1))
        return bad(call, "\"top_p\" must be a number in (0, 1]");
    const cJSON *loop = cJSON_GetObjectItemCaseSensitive(params, "loop_stop");
    if (loop && !cJSON_IsBool(loop))
        return bad(call, "\"loop_stop\" must be true or false");
    q->loop_stop = !loop || cJSON_IsTrue(loop);
    const cJSON *stop = cJSON_GetObjectItemCaseSensitive(params, "stop");
    if (stop) {
        if (!cJSON_IsArray(stop) || cJSON_GetArraySize(stop) > FIM_MAX_STOPS)
            return bad(call, "\"stop\" must be an array of at most 16 strings");
        const cJSON *it;
        cJSON_ArrayForEach(it, stop)
        {
            if (!cJSON_IsString(it) || !it->valuestring[0] || strlen(it->valuestring) > FIM_STOP_MAX_BYTES)
                return bad(call, "\"stop\" must hold non-empty strings of at most 256 bytes");
            if (!(q->stops[q->n_stops++] = strdup(it->valuestring)))
                return bad(call, "out of memory");
        }
    }
    q->max_tokens = (int)max_tokens;
    q->budget = (size_t)budget;
    q->sampling.temperature = tp ? (float)tp->valuedouble : 0.f;
    q->sampling.top_p = pp ? (float)pp->valuedouble : 1.f;
    q->sampling.seed = (unsigned long long)seed;
    return 0;
}

/* Cancel the client's queued or running completions (their replies say so). */
static int cancel_client(struct ctxd *d, uint64_t client, int superseded)
{
    int n = 0;
    for (struct fim_req *q = active; q; q = q->next)
        if (q->client == client && q->job && !q->superseded) {
            q->superseded = superseded;
            ctxd_sched_cancel(d->sched, q->job);
            q->job = NULL; /* cancelled once; done() still comes */
            n++;
        }
    return n;
}

static void m_complete(struct ctxd_call *call, const cJSON *params, void *ud)
{
    struct ctxd *d = ud;
    struct fim_req *q = calloc(1, sizeof *q);
    if (!q) {
        ctxd_call_fail(call, CTXD_RPC_INTERNAL_ERROR, "out of memory", NULL);
        return;
    }
    if (parse(call, params, q)) {
        free_req(q);
        return;
    }
    q->d = d;
    q->call = call;
    q->client = ctxd_call_client_id(call);
    struct ctx_err e = {0};
    if (ctxd_engine_load_tokenizer(d->engine, &e)) {
        ctxd_call_fail_err(call, &e);
        free_req(q);
        return;
    }
    /* What the user typed since makes an older completion worthless. */
    cancel_client(d, q->client, 1);
    if (ctxd_sched_submit(d->sched, CTXD_PRIO_INTERACTIVE, q->client, &fim_ops, q, &q->job, &e)) {
        ctxd_call_fail_err(call, &e);
        free_req(q);
        return;
    }
    q->next = active;
    active = q;
}

static void m_cancel(struct ctxd_call *call, const cJSON *params, void *ud)
{
    static const char *const allowed[] = {NULL};
    if (ctxd_call_check_params(call, params, allowed))
        return;
    cJSON *r = cJSON_CreateObject();
    cJSON_AddNumberToObject(r, "cancelled", cancel_client(ud, ctxd_call_client_id(call), 0));
    ctxd_call_reply(call, r);
}

int ctxd_fim_init(struct ctxd *d)
{
    int rc = ctxd_server_register(d->server, "fim.complete", m_complete, d);
    if (!rc)
        rc = ctxd_server_register(d->server, "fim.cancel", m_cancel, d);
    return rc;
}
