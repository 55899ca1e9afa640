/* agent.* methods; see agentd.h and PROTOCOL.md.
 *
 * An agent.run is a job on the repository's resident state (repos.h: ctxd_repos_submit), so it
 * waits for the repository to be resident and owns it while it runs: no re-prefill or question
 * interleaves with its steps. On the engine thread it runs agent_loop_run with the repository
 * tools (agent/tools.h) and the model of agent_model.c; events go to the client as agent.event
 * notifications through ctxd_job_post (in order, before the reply). A command the policy says to
 * ask about blocks the engine thread until agent.answer, a timeout, the client's disconnect or a
 * cancellation (the last three refuse). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "agentd.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agent_model.h"
#include "engine.h"
#include "log.h"
#include "loop.h"
#include "prompt.h"
#include "repo.h"
#include "repos.h"
#include "review.h"
#include "rpc.h"
#include "sandbox.h"
#include "scheduler.h"
#include "sessions.h"
#include "tools.h"
#include "undo.h"

#define REVIEW_RETRIES 2 /* findings that do not parse are handed back this many times */

struct approval {
    unsigned n;
    int state; /* 0 waiting, 1 allowed, 2 refused */
    struct approval *next;
};

struct areq;

struct ctxd_agent {
    struct ctxd *d;
    struct agent_policy *policy; /* NULL: the default */
    struct ctxd_forced *forced;
    int approval_timeout_ms;
    int tool_grammar;            /* enum ctxd_tool_grammar */
    pthread_mutex_t mu;          /* approvals: engine thread waits, loop thread answers */
    pthread_cond_t cv;
    struct approval *approvals;
    unsigned next_approval;
    unsigned next_run;
    struct areq *running;        /* submitted runs (loop thread), for agent.cancel */
};

struct areq {
    struct ctxd_agent *ag;
    struct ctxd_call *call;
    struct areq *next;           /* in ag->running */
    unsigned run;
    cJSON *req_id;
    enum agent_mode mode;
    bool thinking, staged;
    char *prompt, *log, *range;
    cJSON *files;
    int max_steps;
    size_t max_tokens;
    char path[PATH_MAX];
    struct ctxd_job_ctx *job;    /* engine thread, while running */
    cJSON *tool_calls;           /* [{tool, arguments, is_error}] */
    char *last_args;
    cJSON *result;               /* built on the engine thread, replied by done() */
    /* session.send: the stored conversation, the store hook, the sampling options */
    bool session_shape;
    char session[40];
    cJSON *history, *hist_raws;
    ctxd_agent_store_fn store;
    void *store_ud;
    cJSON *new_msgs, *new_raws;  /* what the turn added, for the store hook */
    float temperature, top_p;
    unsigned long long seed;
    /* the agent's thread and the engine work it hands to the engine thread */
    struct ctxd_repo_view *view;
    pthread_t thread;
    bool thread_started, thread_done;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int (*work)(void *arg);
    void *work_arg;
    int work_state; /* 0 none, 1 waiting for the engine, 2 done */
    int work_rc;
    int rc;         /* the run's outcome */
    struct ctx_err err;
};

/* The protocol's names of the modes ("ask" is agent/'s AGENT_MODE_INTERACTIVE). */
static const char *mode_name(enum agent_mode m)
{
    return m == AGENT_MODE_REVIEW ? "review" : m == AGENT_MODE_SUGGEST ? "suggest" : "ask";
}

static struct ctxd_agent *A(struct ctxd *d)
{
    return d->agent;
}

/* ---- events (engine thread -> loop thread) ------------------------------------------------ */

struct note {
    struct areq *q;
    const char *method;
    cJSON *params;
};

static void on_note(void *ud)
{
    struct note *n = ud;
    ctxd_call_notify(n->q->call, n->method, n->params);
    free(n);
}

static void post_note(struct areq *q, const char *method, cJSON *params)
{
    struct note *n = malloc(sizeof *n);
    if (!n || !params) {
        free(n);
        cJSON_Delete(params);
        return;
    }
    cJSON_AddNumberToObject(params, "run", q->run);
    if (q->req_id)
        cJSON_AddItemToObject(params, "request", cJSON_Duplicate(q->req_id, 1));
    n->q = q;
    n->method = method;
    n->params = params;
    if (ctxd_job_post(q->job, on_note, n)) {
        cJSON_Delete(params);
        free(n);
    }
}

static const char *const kind_names[] = {"reasoning", "content", "tool_call", "tool_result", "malformed", "step"};

static void on_event(void *ud, const struct agent_event *ev)
{
    struct areq *q = ud;
    cJSON *p = cJSON_CreateObject();
    if (!p)
        return;
    cJSON_AddStringToObject(p, "kind", kind_names[ev->kind]);
    cJSON_AddNumberToObject(p, "step", ev->step);
    if (ev->text) {
        char *t = strndup(ev->text, ev->len);
        cJSON_AddStringToObject(p, "text", t ? t : "");
        free(t);
    }
    if (ev->tool)
        cJSON_AddStringToObject(p, "tool", ev->tool);
    if (ev->arguments) {
        cJSON *a = cJSON_Parse(ev->arguments);
        cJSON_AddItemToObject(p, "arguments", a ? a : cJSON_CreateString(ev->arguments));
        free(q->last_args);
        q->last_args = strdup(ev->arguments);
    }
    if (ev->kind == AGENT_EV_TOOL_RESULT) {
        cJSON_AddBoolToObject(p, "is_error", ev->is_error);
        cJSON_AddBoolToObject(p, "changed", ev->changed);
        cJSON *c = cJSON_CreateObject();
        if (c) {
            cJSON_AddStringToObject(c, "tool", ev->tool ? ev->tool : "");
            cJSON *a = q->last_args ? cJSON_Parse(q->last_args) : NULL;
            cJSON_AddItemToObject(c, "arguments", a ? a : cJSON_CreateObject());
            cJSON_AddBoolToObject(c, "is_error", ev->is_error);
            cJSON_AddItemToArray(q->tool_calls, c);
        }
        free(q->last_args);
        q->last_args = NULL;
    }
    if (q->session_shape && (ev->kind == AGENT_EV_REASONING || ev->kind == AGENT_EV_CONTENT) && ev->len) {
        /* the streaming shape repo.ask and session.send clients know */
        cJSON *d = cJSON_CreateObject();
        char *t = strndup(ev->text, ev->len);
        if (d && t) {
            cJSON_AddStringToObject(d, "kind", ev->kind == AGENT_EV_REASONING ? "reasoning" : "content");
            cJSON_AddStringToObject(d, "text", t);
            struct note *n = malloc(sizeof *n);
            if (n) {
                n->q = q;
                n->method = "ask.delta";
                n->params = d;
                d = NULL;
                if (ctxd_job_post(q->job, on_note, n)) {
                    cJSON_Delete(n->params);
                    free(n);
                }
            }
        }
        free(t);
        cJSON_Delete(d);
    }
    post_note(q, "agent.event", p);
}

/* ---- approvals ---------------------------------------------------------------------------- */

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Engine thread: the policy says 'ask'. The client that made the request is asked; the thread
 * waits for agent.answer, polling the job's cancellation (a disconnect cancels the job). */
static bool ask_client(void *ud, const char *command)
{
    struct areq *q = ud;
    struct ctxd_agent *ag = q->ag;
    struct approval *ap = calloc(1, sizeof *ap);
    if (!ap)
        return false;
    pthread_mutex_lock(&ag->mu);
    ap->n = ++ag->next_approval;
    ap->next = ag->approvals;
    ag->approvals = ap;
    pthread_mutex_unlock(&ag->mu);
    cJSON *p = cJSON_CreateObject();
    if (p) {
        cJSON_AddNumberToObject(p, "approval", ap->n);
        cJSON_AddStringToObject(p, "command", command);
        cJSON_AddNumberToObject(p, "timeout_ms", ag->approval_timeout_ms);
    }
    post_note(q, "agent.approve", p);
    uint64_t deadline = mono_ms() + (uint64_t)ag->approval_timeout_ms;
    pthread_mutex_lock(&ag->mu);
    while (ap->state == 0 && !ctxd_job_cancelled(q->job) && mono_ms() < deadline) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 50 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&ag->cv, &ag->mu, &ts);
    }
    bool allow = ap->state == 1;
    for (struct approval **pp = &ag->approvals; *pp; pp = &(*pp)->next)
        if (*pp == ap) {
            *pp = ap->next;
            break;
        }
    pthread_mutex_unlock(&ag->mu);
    CTX_INFO("agent: command %s %s (approval %u)", command, allow ? "approved" : "refused", ap->n);
    free(ap);
    return allow;
}

/* ---- the job ------------------------------------------------------------------------------ */

/* Agent thread: have work(arg) run on the engine thread until it returns other than 1. */
static int engine_call(void *ud, int (*work)(void *arg), void *arg)
{
    struct areq *q = ud;
    pthread_mutex_lock(&q->mu);
    q->work = work;
    q->work_arg = arg;
    q->work_state = 1;
    pthread_cond_broadcast(&q->cv);
    while (q->work_state != 2)
        pthread_cond_wait(&q->cv, &q->mu);
    q->work_state = 0;
    int rc = q->work_rc;
    pthread_mutex_unlock(&q->mu);
    return rc;
}

static char *cat(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *s = malloc(la + lb + 1);
    if (s) {
        memcpy(s, a, la);
        memcpy(s + la, b, lb + 1);
    }
    return s;
}

/* Append to a malloc'd string (s is freed; NULL on OOM). */
static char *append(char *s, const char *t)
{
    if (!s)
        return NULL;
    char *r = cat(s, t);
    free(s);
    return r;
}

/* The request text of the first user turn, by mode. */
static char *request_text(struct areq *q, const char *root, struct ctx_err *e)
{
    if (q->mode == AGENT_MODE_INTERACTIVE)
        return strdup(q->prompt ? q->prompt : "");
    if (q->mode == AGENT_MODE_REVIEW) {
        char *s = strdup("Review ");
        if (cJSON_GetArraySize(q->files) > 0) {
            s = append(s, "these files of the repository:");
            const cJSON *f;
            cJSON_ArrayForEach(f, q->files) {
                s = append(s, "\n- ");
                s = append(s, f->valuestring);
            }
            s = append(s, "\n");
        } else {
            char *diff = NULL;
            size_t dl = 0;
            int rc = agent_review_diff(root, q->staged, q->range, &diff, &dl, e);
            if (rc) {
                free(s);
                return NULL;
            }
            s = append(s, q->range ? "the changes of the commit range " : q->staged ? "the staged changes" : "the uncommitted changes");
            if (q->range)
                s = append(s, q->range);
            s = append(s, dl ? ":\n\n```diff\n" : ": there are none (an empty diff).\n");
            if (dl) {
                s = append(s, diff);
                s = append(s, dl && diff[dl - 1] != '\n' ? "\n```\n" : "```\n");
            }
            free(diff);
        }
        if (q->prompt && q->prompt[0]) {
            s = append(s, "\nThe user adds: ");
            s = append(s, q->prompt);
            s = append(s, "\n");
        }
        s = append(s, "\n");
        s = append(s, agent_review_instructions());
        return s;
    }
    /* suggest */
    char *s = strdup("");
    if (q->prompt && q->prompt[0]) {
        s = append(s, q->prompt);
        s = append(s, "\n\n");
    }
    if (q->log && q->log[0]) {
        s = append(s, "This test log shows a failure; find the cause and fix it:\n\n```\n");
        s = append(s, q->log);
        s = append(s, q->log[strlen(q->log) - 1] == '\n' ? "```\n\n" : "\n```\n\n");
    }
    s = append(s, "Make the change with the editing tools. Your edits are collected as a diff for the user "
                  "to apply; the files on disk do not change.");
    return s;
}

static cJSON *first_messages(const struct ctxd_repo_view *v, const char *request, struct ctx_err *e)
{
    size_t clen;
    char *content = agent_first_turn_content_overlay(v->layout, v->overlay, request, &clen);
    cJSON *msgs = cJSON_CreateArray(), *sys = cJSON_CreateObject(), *user = cJSON_CreateObject();
    if (!content || !msgs || !sys || !user || !cJSON_AddStringToObject(sys, "role", "system") ||
        !cJSON_AddStringToObject(sys, "content", v->system) || !cJSON_AddStringToObject(user, "role", "user") ||
        !cJSON_AddStringToObject(user, "content", content)) {
        free(content);
        cJSON_Delete(msgs);
        cJSON_Delete(sys);
        cJSON_Delete(user);
        ctx_err_set(e, CTX_ENOMEM, "out of memory");
        return NULL;
    }
    free(content);
    cJSON_AddItemToArray(msgs, sys);
    cJSON_AddItemToArray(msgs, user);
    return msgs;
}

/* The run, on the agent's own thread: tools and approvals block only this thread; model work goes
 * to the engine thread in pieces (engine_call). Sets q->rc / q->err. */
static void agent_body(struct areq *q)
{
    struct ctxd_job_ctx *ctx = q->job;
    struct ctxd_repo_view *v = q->view;
    struct ctxd_agent *ag = q->ag;
    struct ctx_err e = {0};
    struct agent_tools *tools = NULL;
    cJSON *msgs = NULL;
    char *ptext = NULL;
    size_t plen = 0;
    struct ctxd_agent_model am = {0};
    struct agent_loop_result res = {0};
    int rc = 0;
    char *request = request_text(q, v->root, &e);
    if (!request)
        rc = e.code ? e.code : ctx_err_set(&e, CTX_ENOMEM, "out of memory");
    struct agent_tools_config tc = {.root = v->root, .mode = q->mode, .snapshot = v->snap,
                                    .policy = ag->policy, .ask = ask_client, .ask_ud = q,
                                    .undo = q->mode == AGENT_MODE_INTERACTIVE ? v->undo : NULL,
                                    .cancel = ctxd_job_cancel_flag(ctx)};
    if (!rc)
        rc = agent_tools_new(&tc, &tools, &e);
    /* the requesting editor's unsaved buffers: the tools read them instead of the disk */
    for (size_t i = 0; !rc && i < v->n_buffers; i++)
        rc = agent_tools_set_buffer(tools, v->buffers[i].path, v->buffers[i].text, v->buffers[i].len, &e);
    const cJSON *h0 = cJSON_GetArrayItem(q->history, 0);
    const cJSON *h0c = cJSON_GetObjectItemCaseSensitive(h0, "content");
    size_t nhist = (size_t)cJSON_GetArraySize(q->history);
    if (!rc && !(msgs = first_messages(v, nhist && cJSON_IsString(h0c) ? h0c->valuestring : request, &e)))
        rc = e.code;
    /* A session's earlier turns, replayed exactly (the model's own text byte for byte), then the
     * new user message. */
    struct agent_prompt resume = {0};
    bool have_resume = false;
    size_t covered = 0;
    if (!rc && nhist) {
        const cJSON *h = h0->next;
        for (; h && !rc; h = h->next) {
            cJSON *c = cJSON_Duplicate(h, 1);
            if (!c)
                rc = ctx_err_set(&e, CTX_ENOMEM, "out of memory");
            else
                cJSON_AddItemToArray(msgs, c);
        }
        cJSON *raws = cJSON_CreateArray();
        if (!rc && raws) {
            cJSON_AddItemToArray(raws, cJSON_CreateNull()); /* the system message */
            for (int i = 0; i < (int)nhist; i++) {
                const cJSON *rw = cJSON_GetArrayItem(q->hist_raws, i);
                cJSON_AddItemToArray(raws, cJSON_IsString(rw) ? cJSON_CreateString(rw->valuestring) : cJSON_CreateNull());
            }
            bool exact = false;
            rc = agent_loop_replay_prompt(msgs, raws, v->tools, q->thinking ? INF_DSML_THINKING : INF_DSML_CHAT,
                                          &resume, &exact, &e);
            have_resume = !rc;
            covered = (size_t)cJSON_GetArraySize(msgs);
            if (!rc && !exact)
                CTX_WARN("session %s: its history could not be replayed exactly; rendered canonically", q->session);
        }
        cJSON_Delete(raws);
        cJSON *u = cJSON_CreateObject();
        if (!rc && (!u || !cJSON_AddStringToObject(u, "role", "user") ||
                    !cJSON_AddStringToObject(u, "content", request)))
            rc = ctx_err_set(&e, CTX_ENOMEM, "out of memory");
        if (!rc) {
            cJSON_AddItemToArray(msgs, u);
            u = NULL;
        }
        cJSON_Delete(u);
    }
    size_t first_new = nhist ? 1 + nhist : 1;
    if (!rc && v->st && !(ptext = agent_prefix_text(v->prefix, v->layout, &plen)))
        rc = ctx_err_set(&e, CTX_ENOMEM, "out of memory");
    struct ctxd_agent_model_opts mo = {.engine = v->engine, .job = ctx, .st = v->st, .ready = v->ready,
                                       .prefix_text = ptext, .prefix_len = plen, .forced = ag->forced,
                                       .max_tokens = q->max_tokens, .temperature = q->temperature,
                                       .top_p = q->top_p, .seed = q->seed, .engine_call = engine_call,
                                       .engine_ud = q, .tool_grammar = (enum ctxd_tool_grammar)ag->tool_grammar};
    if (!rc)
        rc = ctxd_agent_model_init(&am, &mo, &e);
    bool undo_open = false;
    if (!rc && tc.undo) {
        struct ctx_err ue = {0};
        if (agent_undo_begin(tc.undo, q->prompt ? q->prompt : "agent", &ue))
            CTX_WARN("agent undo: %s", ue.msg);
        else
            undo_open = true;
    }
    struct agent_loop_opts lo = {.mode = q->thinking ? INF_DSML_THINKING : INF_DSML_CHAT,
                                 .max_steps = q->max_steps, .token_budget = q->max_tokens,
                                 .cancel = ctxd_job_cancel_flag(ctx), .on_event = on_event, .ud = q,
                                 .resume = have_resume ? &resume : NULL, .resume_messages = covered};
    int steps = 0, retries = 0;
    size_t prompt_tokens = 0, completion_tokens = 0, ntool_calls = 0, nmalformed = 0;
    struct agent_findings findings = {0};
    bool have_findings = false;
    char findings_error[CTX_ERR_MSG_MAX] = "";
    if (!rc) {
        rc = agent_loop_run(tools, &am.model, msgs, &lo, &res, &e);
        for (;;) {
            steps += res.steps;
            prompt_tokens += res.prompt_tokens;
            completion_tokens += res.completion_tokens;
            ntool_calls += res.tool_calls;
            nmalformed += res.malformed;
            if (rc || q->mode != AGENT_MODE_REVIEW || strcmp(res.stop, "final") != 0)
                break;
            struct ctx_err fe = {0};
            agent_findings_free(&findings);
            if (agent_review_parse(res.final_text, strlen(res.final_text), &findings, &fe) == 0) {
                have_findings = true;
                findings_error[0] = 0;
                break;
            }
            snprintf(findings_error, sizeof findings_error, "%s", fe.msg);
            if (retries++ >= REVIEW_RETRIES || (q->max_steps > 0 && steps >= q->max_steps))
                break;
            /* Hand the parser's message back and let the model answer again, continuing the same
             * transcript (the engine state follows it without re-reading anything). */
            char text[CTX_ERR_MSG_MAX + 256];
            snprintf(text, sizeof text,
                     "Your findings could not be read: %s. Answer again with exactly one ```findings block "
                     "holding the JSON array, as the instructions say.", fe.msg);
            size_t covered = (size_t)cJSON_GetArraySize(msgs);
            cJSON *um = cJSON_CreateObject();
            cJSON_AddStringToObject(um, "role", "user");
            cJSON_AddStringToObject(um, "content", text);
            cJSON_AddItemToArray(msgs, um);
            struct agent_event mev = {.kind = AGENT_EV_MALFORMED, .step = steps, .text = text, .len = strlen(text)};
            on_event(q, &mev);
            struct agent_loop_result prev = res;
            struct agent_loop_opts lo2 = lo;
            lo2.resume = &prev.prompt;
            lo2.resume_messages = covered;
            if (q->max_steps > 0)
                lo2.max_steps = q->max_steps - steps;
            if (q->max_tokens)
                lo2.token_budget = q->max_tokens > completion_tokens ? q->max_tokens - completion_tokens : 1;
            rc = agent_loop_run(tools, &am.model, msgs, &lo2, &res, &e);
            agent_loop_result_free(&prev);
        }
    }
    unsigned seq = 0;
    if (undo_open) {
        struct ctx_err ue = {0};
        if (agent_undo_commit(tc.undo, &seq, &ue))
            CTX_WARN("agent undo: %s", ue.msg);
    }
    if (!rc && q->store) {
        q->new_msgs = cJSON_CreateArray();
        q->new_raws = cJSON_CreateArray();
        size_t i = 0;
        int k = 0;
        for (const cJSON *m = msgs->child; m && q->new_msgs && q->new_raws; m = m->next, i++) {
            if (i < first_new)
                continue;
            cJSON *c = cJSON_Duplicate(m, 1);
            if (i == first_new && c) /* the user's text as sent, not with the repository around it */
                cJSON_ReplaceItemInObjectCaseSensitive(c, "content", cJSON_CreateString(request));
            cJSON_AddItemToArray(q->new_msgs, c);
            const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
            const cJSON *raw = cJSON_IsString(role) && strcmp(role->valuestring, "assistant") == 0
                                   ? cJSON_GetArrayItem(res.raw, k++) : NULL;
            cJSON_AddItemToArray(q->new_raws, cJSON_IsString(raw) ? cJSON_CreateString(raw->valuestring)
                                                                  : cJSON_CreateNull());
        }
        /* A note the loop added after a malformed reply that the model never got to answer (the
         * run stopped) is not kept: the next turn starts with the user's next message. */
        int nn = cJSON_GetArraySize(q->new_msgs);
        const cJSON *lr = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(q->new_msgs, nn - 1), "role");
        if (nn > 1 && cJSON_IsString(lr) && strcmp(lr->valuestring, "user") == 0) {
            cJSON_DeleteItemFromArray(q->new_msgs, nn - 1);
            cJSON_DeleteItemFromArray(q->new_raws, nn - 1);
        }
    }
    char *diff = NULL;
    size_t dlen = 0;
    if (!rc && q->mode == AGENT_MODE_SUGGEST)
        rc = agent_tools_overlay_diff(tools, &diff, &dlen, &e);
    if (tools && q->mode == AGENT_MODE_INTERACTIVE) {
        /* handed to repos.c, which applies them to the resident state after done() */
        agent_tools_take_changed(tools, &v->changed, &v->n_changed);
    }
    if (!rc) {
        cJSON *r = cJSON_CreateObject();
        cJSON_AddStringToObject(r, "stop", res.stop ? res.stop : "error");
        cJSON_AddStringToObject(r, "mode", mode_name(q->mode));
        cJSON_AddStringToObject(r, "root", v->root);
        cJSON_AddStringToObject(r, "answer", res.final_text ? res.final_text : "");
        if (res.final_reasoning && res.final_reasoning[0])
            cJSON_AddStringToObject(r, "reasoning", res.final_reasoning);
        cJSON_AddNumberToObject(r, "steps", steps);
        cJSON_AddItemToObject(r, "tool_calls", q->tool_calls);
        q->tool_calls = NULL;
        cJSON_AddNumberToObject(r, "malformed", (double)nmalformed);
        if (res.stop && strcmp(res.stop, "error") == 0)
            cJSON_AddStringToObject(r, "error", res.error.msg);
        if (q->mode == AGENT_MODE_INTERACTIVE) {
            cJSON *ch = cJSON_AddArrayToObject(r, "changed");
            for (size_t i = 0; i < v->n_changed; i++)
                cJSON_AddItemToArray(ch, cJSON_CreateString(v->changed[i]));
            if (seq)
                cJSON_AddNumberToObject(r, "undo", seq);
            else
                cJSON_AddNullToObject(r, "undo");
        }
        if (q->mode == AGENT_MODE_REVIEW) {
            cJSON_AddItemToObject(r, "findings", have_findings ? agent_findings_json(&findings) : cJSON_CreateArray());
            if (findings_error[0])
                cJSON_AddStringToObject(r, "findings_error", findings_error);
        }
        if (q->mode == AGENT_MODE_SUGGEST)
            cJSON_AddStringToObject(r, "diff", diff ? diff : "");
        cJSON *u = cJSON_AddObjectToObject(r, "usage");
        cJSON_AddNumberToObject(u, "prompt_tokens", (double)prompt_tokens);
        cJSON_AddNumberToObject(u, "completion_tokens", (double)completion_tokens);
        if (v->prefix)
            cJSON_AddNumberToObject(u, "resident_tokens", (double)v->prefix->n);
        cJSON_AddNumberToObject(u, "restarts", (double)am.restarts);
        cJSON_AddItemToObject(u, "steps", am.steps);
        am.steps = NULL;
        cJSON_AddNumberToObject(r, "replay_mismatch", (double)res.replay_mismatch);
        if (q->session[0])
            cJSON_AddStringToObject(r, "session", q->session);
        cJSON_AddStringToObject(r, "model", ctxd_engine_describe(v->engine));
        cJSON_AddBoolToObject(r, "noise", ctxd_engine_is_noise(v->engine));
        if (q->session_shape) {
            /* repo.ask's shape: the final message, a finish reason, the context the answer saw */
            const cJSON *last = cJSON_GetArrayItem(msgs, cJSON_GetArraySize(msgs) - 1);
            const cJSON *role = cJSON_GetObjectItemCaseSensitive(last, "role");
            cJSON *msg = cJSON_CreateObject();
            cJSON_AddStringToObject(msg, "role", "assistant");
            cJSON_AddStringToObject(msg, "content", res.final_text ? res.final_text : "");
            cJSON_AddStringToObject(msg, "reasoning_content", res.final_reasoning ? res.final_reasoning : "");
            if (cJSON_IsString(role) && strcmp(role->valuestring, "assistant") == 0 && !res.final_text[0]) {
                const cJSON *c = cJSON_GetObjectItemCaseSensitive(last, "content");
                if (cJSON_IsString(c))
                    cJSON_ReplaceItemInObjectCaseSensitive(msg, "content", cJSON_CreateString(c->valuestring));
            }
            cJSON_AddItemToObject(r, "message", msg);
            const char *stop = res.stop ? res.stop : "error";
            cJSON_AddStringToObject(r, "finish_reason", strcmp(stop, "final") == 0          ? "stop"
                                                        : strcmp(stop, "token_budget") == 0 ? "length"
                                                                                             : stop);
            const cJSON *st = cJSON_GetArrayItem(cJSON_GetObjectItem(u, "steps"), cJSON_GetArraySize(cJSON_GetObjectItem(u, "steps")) - 1);
            const cJSON *sc = cJSON_GetObjectItem(st, "cached_tokens"), *sp = cJSON_GetObjectItem(st, "prompt_tokens");
            double ctx_tokens = cJSON_IsNumber(sc) && cJSON_IsNumber(sp) ? sc->valuedouble + sp->valuedouble
                                                                          : (double)prompt_tokens;
            cJSON_ReplaceItemInObjectCaseSensitive(u, "prompt_tokens", cJSON_CreateNumber(ctx_tokens));
            cJSON_AddNumberToObject(u, "new_prompt_tokens", (double)prompt_tokens);
            cJSON_AddNumberToObject(u, "cached_tokens", v->prefix ? (double)v->prefix->n : 0);
            cJSON_AddNumberToObject(u, "generated_tokens", (double)completion_tokens);
        }
        q->result = r;
    }
    (void)ntool_calls;
    agent_findings_free(&findings);
    free(diff);
    agent_loop_result_free(&res);
    agent_prompt_free(&resume);
    ctxd_agent_model_fini(&am);
    cJSON_Delete(msgs);
    free(ptext);
    free(request);
    agent_tools_free(tools);
    q->rc = rc;
    if (rc)
        q->err = e;
}

static void *agent_main(void *arg)
{
    struct areq *q = arg;
    agent_body(q);
    pthread_mutex_lock(&q->mu);
    q->thread_done = true;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

/* Engine thread, one slice: start the agent's thread the first time, then run the model work it
 * asks for (one piece per slice), and return to the scheduler between pieces and while the
 * thread runs tools or waits for an approval, so that other jobs (questions about other
 * repositories, completions) are not held up. The repository stays owned by this job throughout.
 * The job is never dropped once started (finish_when_cancelled): a cancellation is seen here,
 * the thread stops at its next check and is joined before done(). */
static int job_run(struct ctxd_job_ctx *ctx, struct ctxd_repo_view *v, void *ud)
{
    struct areq *q = ud;
    if (!q->thread_started) {
        q->job = ctx;
        q->view = v;
        if (pthread_create(&q->thread, NULL, agent_main, q))
            return ctxd_job_fail(ctx, CTX_EIO, "cannot start the agent's thread");
        q->thread_started = true;
    }
    uint64_t idle_until = mono_ms() + 10;
    pthread_mutex_lock(&q->mu);
    for (;;) {
        if (q->work_state == 1) {
            int (*w)(void *) = q->work;
            void *a = q->work_arg;
            pthread_mutex_unlock(&q->mu);
            int r = w(a);
            pthread_mutex_lock(&q->mu);
            if (r != 1) {
                q->work_rc = r;
                q->work_state = 2;
                pthread_cond_broadcast(&q->cv);
            }
            if (!ctxd_job_cancelled(ctx)) {
                pthread_mutex_unlock(&q->mu);
                return CTXD_JOB_YIELD;
            }
            continue;
        }
        if (q->thread_done) {
            pthread_mutex_unlock(&q->mu);
            pthread_join(q->thread, NULL);
            q->thread_started = false;
            if (q->rc)
                return ctxd_job_fail(ctx, q->rc, "%s", q->err.msg);
            return CTXD_JOB_DONE;
        }
        /* cancelled: stay until the thread has stopped (it polls the same flag) */
        if (!ctxd_job_cancelled(ctx) && mono_ms() >= idle_until) {
            pthread_mutex_unlock(&q->mu);
            return CTXD_JOB_YIELD;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 5 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&q->cv, &q->mu, &ts);
    }
}

static void job_done(void *ud, int status, const char *message)
{
    struct areq *q = ud;
    if (q->result) {
        const cJSON *stop = cJSON_GetObjectItemCaseSensitive(q->result, "stop");
        if (q->store && q->new_msgs && cJSON_IsString(stop) && strcmp(stop->valuestring, "cancelled") != 0 &&
            strcmp(stop->valuestring, "error") != 0)
            q->store(q->store_ud, q->session, q->new_msgs, q->new_raws);
        ctxd_call_reply(q->call, q->result);
        q->result = NULL;
        return;
    }
    if (status == CTX_ECANCELED) {
        cJSON *r = cJSON_CreateObject();
        cJSON_AddStringToObject(r, "stop", "cancelled");
        cJSON_AddStringToObject(r, "mode", mode_name(q->mode));
        cJSON_AddStringToObject(r, "answer", "");
        cJSON_AddNumberToObject(r, "steps", 0);
        cJSON_AddItemToObject(r, "tool_calls", cJSON_CreateArray());
        cJSON *u = cJSON_AddObjectToObject(r, "usage");
        cJSON_AddNumberToObject(u, "prompt_tokens", 0);
        cJSON_AddNumberToObject(u, "completion_tokens", 0);
        ctxd_call_reply(q->call, r);
        return;
    }
    struct ctx_err e = {0};
    ctx_err_set(&e, status ? status : CTX_EINTERNAL, "%s", message && message[0] ? message : "the agent failed");
    ctxd_call_fail_err(q->call, &e);
}

static void areq_free(struct areq *q)
{
    if (!q)
        return;
    cJSON_Delete(q->req_id);
    cJSON_Delete(q->files);
    cJSON_Delete(q->tool_calls);
    cJSON_Delete(q->result);
    cJSON_Delete(q->history);
    cJSON_Delete(q->hist_raws);
    cJSON_Delete(q->new_msgs);
    cJSON_Delete(q->new_raws);
    free(q->last_args);
    free(q->prompt);
    free(q->log);
    free(q->range);
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->cv);
    free(q);
}

static void job_release(void *ud)
{
    struct areq *q = ud;
    struct ctxd_agent *ag = q->ag;
    for (struct areq **pp = &ag->running; *pp; pp = &(*pp)->next)
        if (*pp == q) {
            *pp = q->next;
            break;
        }
    areq_free(q);
}

static const struct ctxd_repo_job job_ops = {job_run, job_done, job_release};

static struct areq *areq_new(struct ctxd_agent *ag, struct ctxd_call *call)
{
    struct areq *q = calloc(1, sizeof *q);
    if (!q)
        return NULL;
    q->ag = ag;
    q->call = call;
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cv, NULL);
    return q;
}

/* ---- methods ------------------------------------------------------------------------------ */

static void fail_param(struct ctxd_call *call, const char *msg)
{
    ctxd_call_fail(call, CTXD_RPC_INVALID_PARAMS, msg, NULL);
}

static int get_real(struct ctxd_call *call, const cJSON *params, char *real)
{
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(params, "path");
    if (!cJSON_IsString(p)) {
        fail_param(call, "\"path\" (a string) is required");
        return -1;
    }
    if (!realpath(p->valuestring, real)) {
        struct ctx_err e = {0};
        ctx_err_set(&e, CTX_ENOTFOUND, "path %s: %s", p->valuestring, strerror(errno));
        ctxd_call_fail_err(call, &e);
        return -1;
    }
    return 0;
}

static int opt_string(struct ctxd_call *call, const cJSON *params, const char *name, char **out)
{
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(params, name);
    if (!p || cJSON_IsNull(p))
        return 0;
    if (!cJSON_IsString(p)) {
        char msg[96];
        snprintf(msg, sizeof msg, "\"%s\" must be a string", name);
        fail_param(call, msg);
        return -1;
    }
    *out = strdup(p->valuestring);
    return 0;
}

static int opt_bool(struct ctxd_call *call, const cJSON *params, const char *name, bool *out)
{
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(params, name);
    if (!p)
        return 0;
    if (!cJSON_IsBool(p)) {
        char msg[96];
        snprintf(msg, sizeof msg, "\"%s\" must be true or false", name);
        fail_param(call, msg);
        return -1;
    }
    *out = cJSON_IsTrue(p);
    return 0;
}

static int opt_int(struct ctxd_call *call, const cJSON *params, const char *name, long long lo, long long hi,
                   long long *out)
{
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(params, name);
    if (!p)
        return 0;
    if (!cJSON_IsNumber(p) || p->valuedouble != floor(p->valuedouble) || p->valuedouble < (double)lo ||
        p->valuedouble > (double)hi) {
        char msg[128];
        snprintf(msg, sizeof msg, "\"%s\" must be an integer in [%lld, %lld]", name, lo, hi);
        fail_param(call, msg);
        return -1;
    }
    *out = (long long)p->valuedouble;
    return 0;
}

static void m_run(struct ctxd_call *call, const cJSON *params, void *ud)
{
    struct ctxd_agent *ag = ud;
    static const char *const allowed[] = {"path", "prompt", "mode", "session", "max_steps", "max_tokens", "staged",
                                          "range", "files", "log", "thinking", "buffers_from", NULL};
    if (ctxd_call_check_params(call, params, allowed))
        return;
    /* whose unsaved editor buffers the tools see: by default this connection's; an editor server
     * that runs each request on a connection of its own names the connection holding them */
    long long bfrom = 0;
    const cJSON *bf = cJSON_GetObjectItemCaseSensitive(params, "buffers_from");
    if (bf && (!cJSON_IsNumber(bf) || bf->valuedouble < 1 || bf->valuedouble > 9007199254740991.0 ||
               bf->valuedouble != (double)(long long)bf->valuedouble)) {
        fail_param(call, "\"buffers_from\" must be a client id (buffer.update's \"client\")");
        return;
    }
    if (bf)
        bfrom = (long long)bf->valuedouble;
    uint64_t buffers_from = (uint64_t)bfrom;
    struct areq *q = areq_new(ag, call);
    if (!q) {
        ctxd_call_fail(call, CTXD_RPC_INTERNAL_ERROR, "out of memory", NULL);
        return;
    }
    q->thinking = true;
    long long max_steps = 25, max_tokens = 16384;
    char *mode = NULL, *session = NULL;
    if (opt_string(call, params, "session", &session)) {
        areq_free(q);
        return;
    }
    if (session) {
        /* a follow-up turn of a stored conversation: its repository, mode and exact transcript */
        struct ctx_err se = {0};
        int chat = 0;
        snprintf(q->session, sizeof q->session, "%s", session);
        int src = ctxd_sessions_load(ag->d, session, &q->history, &q->hist_raws, q->path, sizeof q->path, &chat, &se);
        free(session);
        if (src) {
            ctxd_call_fail_err(call, &se);
            areq_free(q);
            return;
        }
        q->thinking = !chat;
        q->store = ctxd_sessions_store_turn;
        q->store_ud = ag->d;
    }
    if ((!q->session[0] && get_real(call, params, q->path)) || opt_string(call, params, "prompt", &q->prompt) ||
        opt_string(call, params, "mode", &mode) || opt_string(call, params, "range", &q->range) ||
        opt_string(call, params, "log", &q->log) || opt_bool(call, params, "staged", &q->staged) ||
        opt_bool(call, params, "thinking", &q->thinking) ||
        opt_int(call, params, "max_steps", 1, 1000, &max_steps) ||
        opt_int(call, params, "max_tokens", 1, 1 << 24, &max_tokens)) {
        free(mode);
        areq_free(q);
        return;
    }
    q->max_steps = (int)max_steps;
    q->max_tokens = (size_t)max_tokens;
    const char *err = NULL;
    if (!mode || strcmp(mode, "ask") == 0)
        q->mode = AGENT_MODE_INTERACTIVE;
    else if (strcmp(mode, "review") == 0)
        q->mode = AGENT_MODE_REVIEW;
    else if (strcmp(mode, "suggest") == 0)
        q->mode = AGENT_MODE_SUGGEST;
    else
        err = "\"mode\" must be \"ask\", \"review\" or \"suggest\"";
    free(mode);
    const cJSON *files = cJSON_GetObjectItemCaseSensitive(params, "files");
    if (!err && files) {
        const cJSON *f;
        if (!cJSON_IsArray(files))
            err = "\"files\" must be an array of paths";
        cJSON_ArrayForEach(f, files) {
            if (!cJSON_IsString(f) || !f->valuestring[0])
                err = "\"files\" must be an array of paths";
        }
        if (!err)
            q->files = cJSON_Duplicate(files, 1);
    }
    if (!err && q->session[0] && q->mode != AGENT_MODE_INTERACTIVE)
        err = "\"session\" continues a conversation in ask mode only";
    if (!err && q->mode == AGENT_MODE_INTERACTIVE && (!q->prompt || !q->prompt[0]))
        err = "\"prompt\" (a non-empty string) is required in ask mode";
    if (!err && q->mode == AGENT_MODE_SUGGEST && (!q->prompt || !q->prompt[0]) && (!q->log || !q->log[0]))
        err = "suggest needs \"prompt\" (an instruction) or \"log\" (a failing test log)";
    if (!err && q->mode != AGENT_MODE_REVIEW && (q->staged || q->range || q->files))
        err = "\"staged\", \"range\" and \"files\" are for review mode";
    if (!err && q->staged && q->range)
        err = "\"staged\" and \"range\" exclude each other";
    if (err) {
        fail_param(call, err);
        areq_free(q);
        return;
    }
    const cJSON *id = ctxd_call_id(call);
    q->req_id = id ? cJSON_Duplicate(id, 1) : NULL;
    q->run = ++ag->next_run;
    if (!(q->tool_calls = cJSON_CreateArray())) {
        areq_free(q);
        ctxd_call_fail(call, CTXD_RPC_INTERNAL_ERROR, "out of memory", NULL);
        return;
    }
    struct ctx_err e = {0};
    q->next = ag->running;
    ag->running = q;
    if (ctxd_repos_submit(ag->d, call, q->path, &job_ops, q, q->session[0] ? q->session : NULL, buffers_from, &e)) {
        ag->running = q->next;
        areq_free(q);
        ctxd_call_fail_err(call, &e);
    }
}

int ctxd_agent_session_send(struct ctxd *d, struct ctxd_call *call, const char *root, cJSON *history, cJSON *raws,
                            const char *text, const struct ctxd_ask_opts *o, const char *session,
                            ctxd_agent_store_fn store, void *store_ud, struct ctx_err *e)
{
    struct ctxd_agent *ag = A(d);
    struct areq *q = areq_new(ag, call);
    if (!q || !(q->prompt = strdup(text)) || !(q->tool_calls = cJSON_CreateArray())) {
        areq_free(q);
        cJSON_Delete(history);
        cJSON_Delete(raws);
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    }
    q->ag = ag;
    q->call = call;
    q->mode = AGENT_MODE_INTERACTIVE;
    q->session_shape = true;
    snprintf(q->session, sizeof q->session, "%s", session);
    snprintf(q->path, sizeof q->path, "%s", root);
    q->history = history;
    q->hist_raws = raws;
    q->store = store;
    q->store_ud = store_ud;
    q->thinking = !o->chat_mode;
    q->max_steps = 25;
    q->max_tokens = (size_t)o->max_tokens;
    q->temperature = o->temperature;
    q->top_p = o->top_p;
    q->seed = o->seed;
    const cJSON *id = ctxd_call_id(call);
    q->req_id = id ? cJSON_Duplicate(id, 1) : NULL;
    q->run = ++ag->next_run;
    q->next = ag->running;
    ag->running = q;
    int rc = ctxd_repos_submit(d, call, root, &job_ops, q, session, 0, e);
    if (rc) {
        ag->running = q->next;
        areq_free(q);
    }
    return rc;
}

static void m_answer(struct ctxd_call *call, const cJSON *params, void *ud)
{
    struct ctxd_agent *ag = ud;
    static const char *const allowed[] = {"approval", "allow", NULL};
    long long n = 0;
    bool allow = false;
    if (ctxd_call_check_params(call, params, allowed) || opt_int(call, params, "approval", 1, UINT_MAX, &n) ||
        opt_bool(call, params, "allow", &allow))
        return;
    if (!n || !cJSON_GetObjectItemCaseSensitive(params, "allow")) {
        fail_param(call, "\"approval\" (the number of an agent.approve) and \"allow\" are required");
        return;
    }
    int found = 0;
    pthread_mutex_lock(&ag->mu);
    for (struct approval *a = ag->approvals; a; a = a->next)
        if (a->n == (unsigned)n && a->state == 0) {
            a->state = allow ? 1 : 2;
            found = 1;
        }
    pthread_cond_broadcast(&ag->cv);
    pthread_mutex_unlock(&ag->mu);
    if (!found) {
        struct ctx_err e = {0};
        ctx_err_set(&e, CTX_ENOTFOUND, "no approval %lld is waiting (answered, timed out or cancelled)", n);
        ctxd_call_fail_err(call, &e);
        return;
    }
    cJSON *r = cJSON_CreateObject();
    cJSON_AddNumberToObject(r, "approval", (double)n);
    cJSON_AddBoolToObject(r, "allow", allow);
    ctxd_call_reply(call, r);
}

static void m_cancel(struct ctxd_call *call, const cJSON *params, void *ud)
{
    struct ctxd_agent *ag = ud;
    static const char *const allowed[] = {"run", NULL};
    long long run = 0;
    if (ctxd_call_check_params(call, params, allowed) || opt_int(call, params, "run", 1, UINT_MAX, &run))
        return;
    if (!run) {
        fail_param(call, "\"run\" (the number in the run's agent.event notifications) is required");
        return;
    }
    int n = 0;
    for (struct areq *q = ag->running; q; q = q->next)
        if (q->run == (unsigned)run) {
            n = ctxd_repos_cancel_job(ag->d, q);
            break;
        }
    cJSON *r = cJSON_CreateObject();
    cJSON_AddNumberToObject(r, "cancelled", n);
    ctxd_call_reply(call, r);
}

static void m_undo(struct ctxd_call *call, const cJSON *params, void *ud)
{
    struct ctxd_agent *ag = ud;
    static const char *const allowed[] = {"path", "force", NULL};
    char real[PATH_MAX], root[PATH_MAX];
    bool force = false;
    if (ctxd_call_check_params(call, params, allowed) || get_real(call, params, real) ||
        opt_bool(call, params, "force", &force))
        return;
    struct ctx_err e = {0};
    if (repo_work_tree(real, root, sizeof root, &e)) {
        ctxd_call_fail_err(call, &e);
        return;
    }
    if (ctxd_repos_agent_busy(ag->d, root)) {
        ctx_err_set(&e, CTX_EBUSY, "the agent is working on %s; undo once it has finished", root);
        ctxd_call_fail_err(call, &e);
        return;
    }
    struct agent_undo *u = NULL;
    cJSON *list = NULL, *restored = NULL;
    int rc = agent_undo_open(root, &u, &e);
    if (!rc)
        rc = agent_undo_list(u, &list, &e);
    unsigned seq = 0;
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(list, 0), "seq");
    if (cJSON_IsNumber(s))
        seq = (unsigned)s->valuedouble;
    if (!rc)
        rc = agent_undo_last(u, force, &restored, &e);
    agent_undo_free(u);
    cJSON_Delete(list);
    if (rc) {
        cJSON_Delete(restored);
        ctxd_call_fail_err(call, &e);
        return;
    }
    cJSON *r = cJSON_CreateObject(), *paths = cJSON_AddArrayToObject(r, "restored");
    size_t n = (size_t)cJSON_GetArraySize(restored), k = 0;
    const char **pv = calloc(n ? n : 1, sizeof *pv);
    const cJSON *it;
    cJSON_ArrayForEach(it, restored) {
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(it, "path");
        if (cJSON_IsString(p)) {
            cJSON_AddItemToArray(paths, cJSON_CreateString(p->valuestring));
            if (pv)
                pv[k++] = p->valuestring;
        }
    }
    cJSON_AddNumberToObject(r, "seq", seq);
    cJSON_AddStringToObject(r, "root", root);
    if (pv)
        ctxd_repos_changed(ag->d, root, pv, k);
    free(pv);
    cJSON_AddItemToObject(r, "actions", restored);
    ctxd_call_reply(call, r);
}

int ctxd_agent_init(struct ctxd *d, const struct ctxd_agent_opts *o, struct ctx_err *e)
{
    struct ctxd_agent *ag = calloc(1, sizeof *ag);
    if (!ag)
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    ag->d = d;
    ag->approval_timeout_ms = o->approval_timeout_ms > 0 ? o->approval_timeout_ms : 300000;
    ag->tool_grammar = o->tool_grammar;
    pthread_mutex_init(&ag->mu, NULL);
    pthread_cond_init(&ag->cv, NULL);
    d->agent = ag;
    int rc = 0;
    if (o->policy_path && (rc = agent_policy_load(o->policy_path, &ag->policy, e)))
        ctx_err_prefix(e, "--policy %s", o->policy_path);
    if (!rc && o->forced_path) {
        rc = ctxd_forced_load(o->forced_path, &ag->forced, e);
        if (!rc)
            CTX_WARN("--forced-completions: %zu completions will be forced (for tests)", ctxd_forced_left(ag->forced));
    }
    if (!rc)
        rc = ctxd_server_register(d->server, "agent.run", m_run, ag);
    if (!rc)
        rc = ctxd_server_register(d->server, "agent.answer", m_answer, ag);
    if (!rc)
        rc = ctxd_server_register(d->server, "agent.cancel", m_cancel, ag);
    if (!rc)
        rc = ctxd_server_register(d->server, "agent.undo", m_undo, ag);
    if (rc && !e->code)
        ctx_err_set(e, rc, "registering agent methods");
    return rc;
}

void ctxd_agent_free(struct ctxd *d)
{
    struct ctxd_agent *ag = A(d);
    if (!ag)
        return;
    agent_policy_free(ag->policy);
    ctxd_forced_free(ag->forced);
    pthread_mutex_destroy(&ag->mu);
    pthread_cond_destroy(&ag->cv);
    free(ag);
    d->agent = NULL;
}
