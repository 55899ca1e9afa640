/* Repositories held resident; see repos.h.
 *
 * Ownership: the loop thread owns struct repo. While a job of the repository is queued or runs
 * (r->job != NULL), the engine thread owns r->st and r->ready_snap; the loop reads them only in
 * the job's done() callback. Ingestion results are handed over in the work's after-callback. */
#include "repos.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dsml.h"
#include "engine.h"
#include "kv.h"
#include "kv_state.h"
#include "log.h"
#include "accel.h"
#include "model.h"
#include "openai.h"
#include "pool.h"
#include "prompt.h"
#include "rpc.h"
#include "sample.h"
#include "scheduler.h"
#include "state.h"
#include "tokenizer.h"
#include "tools.h"
#include "undo.h"
#include "watch.h"

#define DEFAULT_SYSTEM                                                                               \
    "You are ctxd, an assistant that answers questions about the git repository below. Its files " \
    "are quoted in full or as outlines; answer from them, name files and lines, and say so when "   \
    "the repository does not contain the answer. When the user asks for a change or you need "      \
    "more than the quoted text, use the tools: they read, search and edit the current working "     \
    "tree and run commands in it."

enum phase { PH_INGESTING, PH_PREFILLING, PH_READY, PH_FAILED, PH_UPDATING };
static const char *const phase_names[] = {"ingesting", "prefilling", "ready", "failed", "updating"};

struct repo;

struct waiter {
    struct ctxd_call *call;
    uint64_t client;
    struct waiter *next;
};

struct ask {
    struct repo *r;
    struct ctxd_call *call;
    uint64_t client;
    cJSON *turns;             /* the conversation after the system message; turns[0] is the
                               * first user message with the raw request as its content */
    char session[40];         /* session id, or "" for a one-shot question */
    ctxd_ask_hook hook;       /* told about a completed answer (sessions store it) */
    void *hook_ud;
    char *raw;                /* the text the model emitted (local engine), for exact replay */
    size_t raw_len, raw_cap;
    int max_tokens;
    int top_logprobs;         /* 0: none */
    cJSON *logprobs;          /* per generated token, when top_logprobs > 0 */
    struct inf_sampler_opts sampling;
    enum inf_dsml_mode mode;
    struct ask *next;
    /* results, written on the engine thread, read in done() */
    cJSON *message;
    const char *finish;       /* "stop", "length", "cancelled", "malformed" */
    char malformed[600];
    size_t prompt_tokens, cached_tokens, generated;
    double ttft_ms, decode_tok_s, prompt_tok_s;
    uint64_t t_submit;
    /* a job of another module (the agent) on the resident state instead of a plain answer */
    const struct ctxd_repo_job *ext;
    void *ext_ud;
    struct ctxd_repo_view view;
    int ext_started;
    uint64_t buffers_from;    /* whose unsaved buffers the job sees */
    struct ctxd_buffer *bufcopy; /* the view's buffers (copies taken when the job starts) */
    size_t n_bufcopy;
};

/* An unsaved editor buffer (buffer.update) of one client connection. */
struct rbuf {
    uint64_t client;
    char *abs;                /* the file's absolute path (realpath of its directory + name) */
    char *text;
    size_t len;
    long long version;
    struct rbuf *next;
};

struct repo {
    struct ctxd_repos *rs;
    struct repo *next;
    int id;
    char *req_path;           /* realpath of the path first asked for */
    char *root;               /* the work tree, once ingested */
    char *name;
    enum phase phase;
    char error[CTX_ERR_MSG_MAX];
    size_t budget;
    /* ingestion */
    uv_work_t work;
    int work_rc;
    struct ctx_err work_err;
    struct repo_snapshot *snap;
    struct repo_layout *layout;
    struct agent_prefix prefix;
    double ingest_ms;
    /* engine */
    struct ctxd_job *job;     /* the queued or running job, or NULL */
    struct ask *running_ask;  /* the question that job answers, if it is one */
    struct inf_state *st;
    struct inf_snapshot *ready_snap;
    size_t resident;          /* tokens in st, as last reported */
    size_t restored;          /* of which restored from the KV cache */
    size_t computed;          /* prefill tokens computed since the repository was opened */
    char restore_note[CTX_ERR_MSG_MAX + 64]; /* why the cache could not be used, if it could not */
    int64_t lineage;          /* the KV lineage checkpoints of this prefill go to, 0 none yet, -1 off */
    size_t prefill_restored, prefill_computed; /* engine thread's counts */
    double prefill_tok_s;
    uint64_t prefill_t0;
    struct waiter *waiters;   /* repo.open calls waiting for ready */
    struct ask *asks;         /* questions waiting for ready or for the engine */
    /* live updates: the working tree is watched once the repository is resident */
    struct ctxd_watch *watch;
    char **pending;           /* changed paths not yet applied */
    size_t n_pending;
    int rescan;               /* the watcher overflowed: re-inventory everything */
    char **applying;          /* the batch the update work is applying */
    size_t n_applying;
    int applying_rescan;
    size_t first_token;       /* of the last update: first prompt token that changed */
    unsigned updates;         /* updates applied since the repository was opened */
    double update_ms;
    /* overlay path: edits whose re-prefill would be long are shown after the repository block
     * (their current text) until the repository is idle, then re-based */
    char **deferred;          /* paths in the overlay, to apply at the re-base */
    size_t n_deferred;
    char *overlay;            /* the text put between the repository and the request, or NULL */
    int overlay_refresh;      /* the running work only refreshes the snapshot for the overlay */
    int rebase_now;           /* apply deferred paths by the re-prefill path, whatever their cost */
    uv_timer_t idle_timer;
    int idle_timer_init;
    unsigned rebases;
    struct agent_undo *undo;  /* the agent's undo records (engine thread, inside agent jobs) */
    size_t ext_nfiles;        /* snap->nfiles when an agent job started: its tools refresh the
                               * snapshot from their own thread, so status reads this meanwhile */
    /* unsaved editor buffers: newest first, so the first one of a path is the text the resident
     * prompt shows (whichever client updated it last) */
    struct rbuf *bufs;
    char **buf_dirty;         /* repository-relative paths whose buffer changed, waiting for the
                               * debounce before they take the live-edit path */
    size_t n_buf_dirty;
    struct ctxd_buffer *ubufs; /* copies of the shown buffers that the update work applies */
    size_t n_ubufs;
};

struct ctxd_repos {
    struct ctxd *d;
    struct ctxd_repos_opts o;
    struct store_kv *kv;      /* engine thread's connection (opened by the first prefill) */
    int kv_tried;
    struct store_kv *kv_loop; /* the loop thread's connection (cache.status / cache.clear) */
    char *system;
    cJSON *tools;             /* the agent's tool schemas: part of every resident prefix */
    struct ctx_pool *pool;    /* ingestion's parsing threads */
    struct repo *list;
    int next_id;
    int closing;
    uv_timer_t buf_timer;     /* debounce of buffer edits (all repositories) */
    int buf_timer_init;
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- status ------------------------------------------------------------------------------- */

static cJSON *repo_status_json(const struct repo *r)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "id", r->id);
    cJSON_AddStringToObject(o, "root", r->root ? r->root : r->req_path);
    if (r->name)
        cJSON_AddStringToObject(o, "name", r->name);
    cJSON_AddStringToObject(o, "phase", phase_names[r->phase]);
    if (r->phase == PH_FAILED)
        cJSON_AddStringToObject(o, "error", r->error);
    /* while ingesting or updating, a pool thread writes the snapshot, the layout and the prefix:
     * those fields are left out until it is done */
    int busy = r->phase == PH_INGESTING || r->phase == PH_UPDATING;
    if (r->snap && !busy) {
        cJSON_AddStringToObject(o, "head", r->snap->head);
        if (r->snap->branch)
            cJSON_AddStringToObject(o, "branch", r->snap->branch);
        int ext = r->running_ask && r->running_ask->ext;
        cJSON_AddNumberToObject(o, "files", (double)(ext ? r->ext_nfiles : r->snap->nfiles));
    }
    if (r->layout && !busy) {
        cJSON *f = cJSON_AddObjectToObject(o, "layout");
        cJSON_AddNumberToObject(f, "full", (double)r->layout->n_full);
        cJSON_AddNumberToObject(f, "outline", (double)r->layout->n_outline);
        cJSON_AddNumberToObject(f, "omitted", (double)r->layout->n_omitted);
        cJSON_AddNumberToObject(f, "skipped", (double)r->layout->n_skipped);
        cJSON_AddNumberToObject(f, "budget", (double)r->layout->budget);
        cJSON_AddNumberToObject(o, "prompt_tokens", (double)r->prefix.n);
        cJSON_AddNumberToObject(o, "ingest_ms", r->ingest_ms);
    }
    cJSON_AddNumberToObject(o, "resident_tokens", (double)r->resident);
    cJSON_AddNumberToObject(o, "restored_tokens", (double)r->restored);
    cJSON_AddNumberToObject(o, "computed_tokens", (double)r->computed);
    if (r->restore_note[0])
        cJSON_AddStringToObject(o, "cache_note", r->restore_note);
    cJSON_AddBoolToObject(o, "watching", r->watch != NULL);
    if (r->updates) {
        cJSON *u = cJSON_AddObjectToObject(o, "last_update");
        cJSON_AddNumberToObject(u, "updates", r->updates);
        cJSON_AddNumberToObject(u, "first_changed_token", (double)r->first_token);
        cJSON_AddNumberToObject(u, "ingest_ms", r->update_ms);
    }
    cJSON_AddNumberToObject(o, "pending_changes", (double)r->n_pending);
    cJSON_AddNumberToObject(o, "overlay_files", (double)r->n_deferred);
    cJSON_AddNumberToObject(o, "rebases", r->rebases);
    size_t nb = 0;
    for (const struct rbuf *b = r->bufs; b; b = b->next)
        nb++;
    cJSON_AddNumberToObject(o, "buffers", (double)nb);
    if (r->prefill_tok_s > 0)
        cJSON_AddNumberToObject(o, "prefill_tokens_per_s", r->prefill_tok_s);
    return o;
}

void ctxd_repos_status(struct ctxd *d, cJSON *status)
{
    cJSON *arr = cJSON_AddArrayToObject(status, "repos");
    if (!d->repos)
        return;
    for (struct repo *r = d->repos->list; r; r = r->next)
        cJSON_AddItemToArray(arr, repo_status_json(r));
    cJSON *m = cJSON_AddObjectToObject(status, "model");
    cJSON_AddStringToObject(m, "source", ctxd_engine_describe(d->engine));
    cJSON_AddBoolToObject(m, "loaded", ctxd_engine_loaded(d->engine));
    cJSON_AddBoolToObject(m, "noise", ctxd_engine_is_noise(d->engine));
    const char *dev = ctxd_engine_device(d->engine);
    cJSON_AddStringToObject(m, "backend", ctxd_engine_backend(d->engine));
    const char *spec = ctxd_engine_loaded(d->engine) ? ctxd_engine_spec_state(d->engine) : NULL;
    if (spec) /* speculative decoding with the MTP block (ctxd --spec / --no-spec; on by default with cuda) */
        cJSON_AddStringToObject(m, "speculative", spec);
    if (dev)
        cJSON_AddStringToObject(m, "device", dev);
}

/* ---- waiting calls ------------------------------------------------------------------------ */

static void fail_waiters(struct repo *r, const struct ctx_err *e)
{
    while (r->waiters) {
        struct waiter *w = r->waiters;
        r->waiters = w->next;
        ctxd_call_fail_err(w->call, e);
        free(w);
    }
}

static void free_buffer_copies(struct ctxd_buffer *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(v[i].path);
        free(v[i].text);
    }
    free(v);
}

static void free_ask(struct ask *a)
{
    if (a->ext && a->ext->release)
        a->ext->release(a->ext_ud);
    free_buffer_copies(a->bufcopy, a->n_bufcopy);
    for (size_t i = 0; i < a->view.n_changed; i++)
        free(a->view.changed[i]);
    free(a->view.changed);
    cJSON_Delete(a->logprobs);
    cJSON_Delete(a->message);
    cJSON_Delete(a->turns);
    free(a->raw);
    free(a);
}

static void fail_asks(struct repo *r, const struct ctx_err *e)
{
    while (r->asks) {
        struct ask *a = r->asks;
        r->asks = a->next;
        ctxd_call_fail_err(a->call, e);
        free_ask(a);
    }
}

static void notify_progress(struct repo *r)
{
    for (struct waiter *w = r->waiters; w; w = w->next) {
        cJSON *p = cJSON_CreateObject();
        /* while ingesting (or updating), a pool thread writes the snapshot and the prefix */
        int busy = r->phase == PH_INGESTING || r->phase == PH_UPDATING;
        cJSON_AddStringToObject(p, "phase", phase_names[r->phase]);
        cJSON_AddNumberToObject(p, "done", (double)r->resident);
        cJSON_AddNumberToObject(p, "total", busy ? 0 : (double)r->prefix.n);
        if (r->snap && !busy)
            cJSON_AddNumberToObject(p, "files", (double)r->snap->nfiles);
        if (r->prefill_tok_s > 0) {
            cJSON_AddNumberToObject(p, "tokens_per_s", r->prefill_tok_s);
            cJSON_AddNumberToObject(p, "eta_s", (double)(r->prefix.n - r->resident) / r->prefill_tok_s);
        }
        ctxd_call_notify(w->call, "repo.progress", p);
    }
}

static void start_next(struct repo *r);
static void free_repo(struct repo *r);
static void copy_buffers(struct repo *r, uint64_t client, struct ctxd_buffer **out, size_t *n);
static void flush_buffers(struct repo *r);
static void apply_buffers(struct repo *r, int all);
static void buf_touch(struct repo *r, const char *abs);
static void start_watch(struct repo *r);
static void maybe_update(struct repo *r);
static void arm_idle(struct repo *r);

/* ---- prefill on the engine thread --------------------------------------------------------- */

struct progress_msg {
    struct repo *r;
    size_t resident, restored, computed;
    double tok_s;
    char note[CTX_ERR_MSG_MAX + 64];
};

static void on_progress(void *ud)
{
    struct progress_msg *m = ud;
    m->r->resident = m->resident;
    m->r->restored = m->restored;
    m->r->computed = m->computed;
    m->r->prefill_tok_s = m->tok_s;
    if (m->note[0])
        snprintf(m->r->restore_note, sizeof m->r->restore_note, "%s", m->note);
    notify_progress(m->r);
    free(m);
}

static int checkpoint(struct repo *r, struct ctx_err *e)
{
    struct store_kv *kv = r->rs->kv;
    struct inf_state *st = r->st;
    /* on a GPU the host copy lags: bring it up to date (only the entries it lacks are copied) */
    int sync_rc = inf_state_sync(st, e);
    if (sync_rc)
        return sync_rc;
    int ns = store_kv_state_n_streams(st);
    struct store_kv_stream *sv = calloc((size_t)ns, sizeof *sv);
    struct store_kv_state_src *src = calloc((size_t)ns, sizeof *src);
    uint8_t *b = NULL;
    size_t blen = 0;
    if (!sv || !src) {
        free(sv);
        free(src);
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    }
    store_kv_state_streams(st, sv, src);
    int rc = inf_state_boundary(st, &b, &blen, e);
    struct store_kv_hash h;
    store_kv_prefix_hash(ctxd_engine_key(r->rs->d->engine), r->prefix.tokens, (size_t)st->pos, &h);
    if (!rc && !r->lineage)
        rc = store_kv_lineage_new(kv, ctxd_engine_key(r->rs->d->engine), ns, &r->lineage, e);
    if (!rc)
        rc = store_kv_put(kv, r->lineage, (uint64_t)st->pos, &h, b, blen, sv, ns, e);
    free(b);
    free(sv);
    free(src);
    if (!rc) {
        uint64_t freed = 0;
        struct ctx_err ee = {0};
        if (store_kv_evict(kv, r->rs->o.cache_budget, r->lineage, &freed, &ee))
            CTX_WARN("kv cache eviction: %s", ee.msg);
        else if (freed)
            CTX_INFO("kv cache: evicted %llu bytes to stay within %llu", (unsigned long long)freed,
                     r->rs->o.cache_budget);
    }
    return rc;
}

/* A checkpoint straight to the accelerator's device (inference/accel.h's inf_accel_restore_packed):
 * the packed streams as stored read into the accelerator's host buffers (inf_accel_host_alloc), uploaded and unpacked
 * there; the host copy is refilled from the same buffers in the background (inf_accel_fill_host). */
static int restore_to_device(struct store_kv *kv, const struct store_kv_ckpt *c, struct inf_state *st,
                             struct inf_accel *a, int *store_failed, struct ctx_err *e)
{
    *store_failed = 0;
    void **bufs = calloc((size_t)c->n_streams + 1, sizeof *bufs);
    long long *counts = calloc((size_t)st->n_layers + 1, sizeof *counts);
    int rc = bufs && counts ? 0 : ctx_err_set(e, CTX_ENOMEM, "out of memory");
    for (int k = 0; !rc && k < c->n_streams; k++)
        if (!(bufs[k] = inf_accel_host_alloc(a, (size_t)c->stream_len[k])))
            rc = ctx_err_set(e, CTX_ENOMEM, "no host memory for stream %d (%llu bytes)", k,
                             (unsigned long long)c->stream_len[k]);
    if (!rc && (rc = store_kv_state_read_packed(kv, c, st, bufs, counts, e)))
        *store_failed = 1; /* the checkpoint itself (a corrupt one is dropped by now) */
    if (!rc)
        rc = inf_accel_restore_packed(a, st, counts, (const void *const *)bufs, e);
    if (!rc) {
        /* the host copy refilled from the same buffers in the background (they go with it): the
         * first checkpoint then downloads only what the device computed after the restore */
        struct ctx_err fe = {0};
        if (inf_accel_fill_host(a, st, counts, bufs, c->n_streams, &fe))
            CTX_WARN("kv cache: no background fill of the host copy (its first sync downloads it all): %s", fe.msg);
        for (int k = 0; k < c->n_streams; k++)
            bufs[k] = NULL;
    }
    for (int k = 0; bufs && k < c->n_streams; k++)
        inf_accel_host_free(a, bufs[k]);
    free(bufs);
    free(counts);
    return rc;
}

/* First slice of a prefill: the longest cached prefix, restored, or an empty state. A cache that
 * fails (corruption, a missing file) is reported and the prefix recomputed: never wrong state.
 * With an accelerator that takes checkpoints packed (ctxd --backend cuda) the state goes straight
 * to the device (and, should that fail, through the host arrays); else into the host arrays,
 * uploaded whole by the next forward. */
static void start_from_cache(struct repo *r, struct progress_msg *note)
{
    struct ctxd_repos *rs = r->rs;
    if (!rs->kv_tried && rs->o.cache_dir) {
        rs->kv_tried = 1;
        struct ctx_err e = {0};
        if (store_kv_open(rs->o.cache_dir, &rs->kv, &e)) {
            CTX_WARN("kv cache disabled: %s", e.msg);
            snprintf(note->note, sizeof note->note, "cache disabled: %s", e.msg);
        }
    }
    r->lineage = 0;
    if (!rs->kv)
        return;
    struct store_kv_ckpt c;
    int found = 0;
    struct ctx_err e = {0};
    if (store_kv_lookup_tokens(rs->kv, ctxd_engine_key(rs->d->engine), r->prefix.tokens, r->prefix.n, &c, &found,
                               &e)) {
        CTX_WARN("kv cache lookup failed: %s", e.msg);
        snprintf(note->note, sizeof note->note, "lookup failed: %s", e.msg);
        return;
    }
    if (!found)
        return;
    struct inf_model *m = ctxd_engine_model(rs->d->engine);
    struct inf_accel *acc = m ? inf_model_accel(m) : NULL;
    int packed = inf_accel_can_restore_packed(acc);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int store_failed = 0;
    int rrc = packed ? restore_to_device(rs->kv, &c, r->st, acc, &store_failed, &e)
                     : store_kv_state_restore(rs->kv, &c, r->st, &e);
    if (rrc && packed && !store_failed) { /* no memory, a device error: the host path may still work (not
                                             * when the checkpoint failed: the store has dropped it) */
        CTX_WARN("kv cache: packed restore of checkpoint %lld of %s failed, restoring on the host: %s",
                 (long long)c.id, r->root, e.msg);
        inf_state_reset(r->st);
        packed = 0;
        e = (struct ctx_err){0};
        rrc = store_kv_state_restore(rs->kv, &c, r->st, &e);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    if (rrc) {
        CTX_WARN("kv cache: checkpoint %lld of %s unusable, recomputing: %s", (long long)c.id, r->root, e.msg);
        snprintf(note->note, sizeof note->note, "checkpoint unusable, recomputed: %s", e.msg);
        inf_state_reset(r->st);
        store_kv_ckpt_clear(&c);
        return;
    }
    r->prefill_restored = (size_t)c.pos;
    /* Further checkpoints go to a fork that shares what came before (other prompts may continue
     * the same checkpoint differently). */
    if (c.pos < r->prefix.n && store_kv_fork(rs->kv, &c, &r->lineage, &e)) {
        CTX_WARN("kv cache fork failed: %s", e.msg);
        r->lineage = -1; /* no more checkpoints for this prefill */
    }
    CTX_INFO("%s: restored %llu of %zu prefix tokens from the kv cache in %.3f s (%s)", r->root,
             (unsigned long long)c.pos, r->prefix.n, secs,
             packed ? "packed, straight to the accelerator's device" : "into the host state");
    store_kv_ckpt_clear(&c);
}

static int prefill_run(struct ctxd_job_ctx *ctx, void *ud)
{
    struct repo *r = ud;
    struct ctxd_engine *g = r->rs->d->engine;
    struct ctx_err e = {0};
    if (ctxd_engine_load(g, &e))
        return ctxd_job_fail(ctx, e.code, "%s", e.msg);
    struct inf_model *m = ctxd_engine_model(g);
    struct progress_msg *pm = calloc(1, sizeof *pm);
    if (!r->st) {
        if (inf_state_new(inf_model_config(m), &r->st, &e)) {
            free(pm);
            return ctxd_job_fail(ctx, e.code, "%s", e.msg);
        }
        r->prefill_restored = 0;
        r->prefill_computed = 0;
        struct progress_msg dummy = {0};
        start_from_cache(r, pm ? pm : &dummy);
    }
    size_t n = r->prefix.n, pos = (size_t)r->st->pos;
    if (pos < n) {
        size_t chunk = (size_t)r->rs->o.chunk;
        if (chunk > n - pos)
            chunk = n - pos;
        struct inf_forward_opts fo = {0};
        if (inf_model_forward(m, r->st, (const int *)r->prefix.tokens + pos, (int)chunk, &fo, &e)) {
            free(pm);
            return ctxd_job_fail(ctx, e.code, "prefill at token %zu: %s", pos, e.msg);
        }
        r->prefill_computed += chunk;
        size_t every = (size_t)r->rs->o.checkpoint_every;
        /* a shutdown (or a cancelled prefill) keeps what was computed: a checkpoint where it stops */
        int boundary = pos + chunk == n || ((pos + chunk) % 128 == 0 && (pos + chunk) / every > pos / every) ||
                       (ctxd_job_cancelled(ctx) && (pos + chunk) % 128 == 0);
        pos += chunk;
        if (boundary && r->rs->kv && r->lineage >= 0 && checkpoint(r, &e)) {
            CTX_WARN("kv cache: checkpoint at %zu of %s failed: %s", pos, r->root, e.msg);
            r->lineage = -1;
        }
    }
    if (pm) {
        double secs = (double)(now_ms() - r->prefill_t0) / 1000.0;
        pm->r = r;
        pm->resident = pos;
        pm->restored = r->prefill_restored;
        pm->computed = r->prefill_computed;
        pm->tok_s = secs > 0 ? (double)r->prefill_computed / secs : 0;
        ctxd_job_post(ctx, on_progress, pm);
    }
    if (pos < n)
        return CTXD_JOB_YIELD;
    inf_snapshot_free(r->ready_snap);
    r->ready_snap = NULL;
    if (inf_state_snapshot(r->st, &r->ready_snap, &e))
        return ctxd_job_fail(ctx, e.code, "%s", e.msg);
    return CTXD_JOB_DONE;
}

static void prefill_done(void *ud, int status, const char *message)
{
    struct repo *r = ud;
    r->job = NULL;
    if (r->rs->closing)
        return;
    struct ctx_err e = {0};
    if (status) {
        r->phase = PH_FAILED;
        snprintf(r->error, sizeof r->error, "%s", message);
        ctx_err_set(&e, status, "%s: %s", r->root ? r->root : r->req_path, message);
        CTX_ERROR("prefill of %s failed: %s", r->root, message);
        fail_waiters(r, &e);
        fail_asks(r, &e);
        return;
    }
    r->phase = PH_READY;
    CTX_INFO("%s is resident: %zu tokens (%.0f tokens/s)", r->root, r->resident, r->prefill_tok_s);
    start_watch(r);
    while (r->waiters) {
        struct waiter *w = r->waiters;
        r->waiters = w->next;
        ctxd_call_reply(w->call, repo_status_json(r));
        free(w);
    }
    start_next(r);
    maybe_update(r);
}

static const struct ctxd_job_ops prefill_ops = {prefill_run, prefill_done};

/* ---- questions on the engine thread ------------------------------------------------------- */

struct delta_msg {
    struct ask *a;
    const char *kind;
    char *text;
};

static void on_delta(void *ud)
{
    struct delta_msg *m = ud;
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "kind", m->kind);
    cJSON_AddStringToObject(p, "text", m->text);
    ctxd_call_notify(m->a->call, "ask.delta", p);
    free(m->text);
    free(m);
}

struct parse_ctx {
    struct ask *a;
    struct ctxd_job_ctx *job;
};

static void on_tool_note(void *ud)
{
    struct delta_msg *m = ud;
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "name", m->kind);
    if (m->text) {
        cJSON *args = cJSON_Parse(m->text);
        cJSON_AddItemToObject(p, "arguments", args ? args : cJSON_CreateString(m->text));
    }
    ctxd_call_notify(m->a->call, m->text ? "ask.tool_call" : "ask.tool_call_begin", p);
    free(m->text);
    free((char *)m->kind);
    free(m);
}

static int on_event(void *ud, const struct inf_dsml_event *ev)
{
    struct parse_ctx *pc = ud;
    const char *kind = NULL;
    if ((ev->type == INF_DSML_EV_CALL_BEGIN || ev->type == INF_DSML_EV_CALL_END) && ev->name) {
        /* the model called a tool: shown as it happens (running tools is the agent's, issue 8) */
        struct delta_msg *m = calloc(1, sizeof *m);
        if (!m)
            return 0;
        m->a = pc->a;
        m->kind = strdup(ev->name);
        if (ev->type == INF_DSML_EV_CALL_END) {
            m->text = malloc(ev->len + 1);
            if (m->text) {
                memcpy(m->text, ev->text, ev->len);
                m->text[ev->len] = 0;
            }
        }
        ctxd_job_post(pc->job, on_tool_note, m);
        return 0;
    }
    if (ev->type == INF_DSML_EV_REASONING_DELTA)
        kind = "reasoning";
    else if (ev->type == INF_DSML_EV_CONTENT_DELTA)
        kind = "content";
    if (!kind || !ev->len)
        return 0;
    struct delta_msg *m = malloc(sizeof *m);
    char *t = malloc(ev->len + 1);
    if (!m || !t) {
        free(m);
        free(t);
        return 0;
    }
    memcpy(t, ev->text, ev->len);
    t[ev->len] = 0;
    m->a = pc->a;
    m->kind = kind;
    m->text = t;
    ctxd_job_post(pc->job, on_delta, m);
    return 0;
}

/* The turn after the resident prefix, rendered by the DSML encoder as part of the whole
 * conversation so that it is exactly what the format says (tests/agent/test_prompt.c checks that
 * the prefix is a byte prefix of that rendering). */
/* [system, user(repository + first request), ...the rest of the conversation] */
static cJSON *conversation(struct repo *r, struct ask *a, struct ctx_err *e)
{
    cJSON *msgs = cJSON_CreateArray(), *sys = cJSON_CreateObject();
    if (!msgs || !sys) {
        cJSON_Delete(msgs);
        cJSON_Delete(sys);
        ctx_err_set(e, CTX_ENOMEM, "out of memory");
        return NULL;
    }
    cJSON_AddStringToObject(sys, "role", "system");
    cJSON_AddStringToObject(sys, "content", r->rs->system);
    cJSON_AddItemToArray(msgs, sys);
    int i = 0;
    const cJSON *t;
    cJSON_ArrayForEach(t, a->turns) {
        cJSON *m = cJSON_Duplicate(t, 1);
        if (!m) {
            cJSON_Delete(msgs);
            ctx_err_set(e, CTX_ENOMEM, "out of memory");
            return NULL;
        }
        if (i++ == 0) {
            const cJSON *c = cJSON_GetObjectItemCaseSensitive(t, "content");
            size_t clen;
            char *content = agent_first_turn_content_overlay(r->layout, r->overlay,
                                                             cJSON_IsString(c) ? c->valuestring : "", &clen);
            if (!content) {
                cJSON_Delete(m);
                cJSON_Delete(msgs);
                ctx_err_set(e, CTX_ENOMEM, "out of memory");
                return NULL;
            }
            cJSON_ReplaceItemInObjectCaseSensitive(m, "content", cJSON_CreateString(content));
            free(content);
        }
        cJSON_AddItemToArray(msgs, m);
    }
    return msgs;
}

/* The turn after the resident prefix, rendered by the DSML encoder as part of the whole
 * conversation so that it is exactly what the format says (tests/agent/test_prompt.c checks that
 * the prefix is a byte prefix of that rendering). */
static int turn_suffix(struct repo *r, struct ask *a, char **out, size_t *len, struct inf_text_span **spans,
                       size_t *n_spans, struct ctx_err *e)
{
    cJSON *msgs = conversation(r, a, e);
    if (!msgs)
        return e->code;
    /* The tools are declared as in the resident prefix (the encoder then keeps reasoning). */
    struct inf_dsml_opts o = {.mode = a->mode, .drop_thinking = true};
    char *full;
    size_t flen, ns = 0;
    struct inf_text_span *sp = NULL;
    int rc = inf_dsml_encode_spans(msgs, r->rs->tools, &o, &full, &flen, &sp, &ns, e);
    cJSON_Delete(msgs);
    if (rc)
        return rc;
    size_t plen;
    char *ptext = agent_prefix_text(&r->prefix, r->layout, &plen);
    if (!ptext || flen < plen || memcmp(full, ptext, plen) != 0) {
        free(ptext);
        free(full);
        free(sp);
        return ctx_err_set(e, CTX_EINTERNAL, "the rendered turn does not continue the resident prefix");
    }
    free(ptext);
    *len = flen - plen;
    memmove(full, full + plen, *len + 1);
    *out = full;
    /* The spans of message text (where control tokens must stay text), moved to the suffix. */
    size_t k = 0;
    for (size_t i = 0; i < ns; i++) {
        size_t b = sp[i].off, end = sp[i].off + sp[i].len;
        if (end <= plen)
            continue;
        if (b < plen)
            b = plen;
        sp[k].off = b - plen;
        sp[k].len = end - b;
        k++;
    }
    *spans = sp;
    *n_spans = k;
    return 0;
}

static void raw_append(struct ask *a, const char *p, size_t n)
{
    if (a->raw_len + n + 1 > a->raw_cap) {
        size_t cap = a->raw_cap ? a->raw_cap * 2 : 256;
        while (cap < a->raw_len + n + 1)
            cap *= 2;
        char *nr = realloc(a->raw, cap);
        if (!nr)
            return;
        a->raw = nr;
        a->raw_cap = cap;
    }
    memcpy(a->raw + a->raw_len, p, n);
    a->raw_len += n;
    a->raw[a->raw_len] = 0;
}

/* log-softmax of the raw logits: the chosen token's and the best K, as OpenAI's logprobs. */
static void add_logprobs(struct ask *a, const float *logits, int n, int32_t chosen)
{
    if (!a->logprobs && !(a->logprobs = cJSON_CreateArray()))
        return;
    float mx = logits[inf_argmax(logits, n)];
    double z = 0;
    for (int i = 0; i < n; i++)
        z += exp((double)logits[i] - mx);
    double lz = log(z) + mx;
    int k = a->top_logprobs, top[32], m = 0;
    for (int i = 0; i < n; i++) { /* insertion into a small sorted list: k <= 20 */
        if (m == k && logits[i] <= logits[top[m - 1]])
            continue;
        int j = m < k ? m++ : m - 1;
        while (j > 0 && logits[top[j - 1]] < logits[i])
            top[j] = top[j - 1], j--;
        top[j] = i;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "token", chosen);
    cJSON_AddNumberToObject(o, "logprob", (double)logits[chosen] - lz);
    cJSON *arr = cJSON_AddArrayToObject(o, "top");
    for (int j = 0; j < m; j++) {
        cJSON *p = cJSON_CreateArray();
        cJSON_AddItemToArray(p, cJSON_CreateNumber(top[j]));
        cJSON_AddItemToArray(p, cJSON_CreateNumber((double)logits[top[j]] - lz));
        cJSON_AddItemToArray(arr, p);
    }
    cJSON_AddItemToArray(a->logprobs, o);
}

static int remote_ask_run(struct ctxd_job_ctx *ctx, struct ask *a);

static int ask_run(struct ctxd_job_ctx *ctx, void *ud)
{
    struct ask *a = ud;
    struct repo *r = a->r;
    struct ctxd_engine *g = r->rs->d->engine;
    if (ctxd_engine_remote(g))
        return remote_ask_run(ctx, a);
    const struct inf_tokenizer *tok = ctxd_engine_tokenizer(g);
    struct inf_model *m = ctxd_engine_model(g);
    const struct inf_config *c = inf_model_config(m);
    struct ctx_err e = {0};
    char *suffix = NULL;
    size_t slen = 0;
    int32_t *ids = NULL;
    size_t nids = 0;
    float *logits = NULL;
    struct inf_sampler *smp = NULL;
    struct inf_detok *dt = NULL;
    struct inf_dsml_parser *parser = NULL;
    char *piece = NULL;
    struct inf_text_span *spans = NULL;
    size_t n_spans = 0;
    int rc = turn_suffix(r, a, &suffix, &slen, &spans, &n_spans, &e);
    if (!rc)
        rc = inf_tokenizer_encode_spans(tok, suffix, slen, spans, n_spans, &ids, &nids, &e);
    free(spans);
    if (!rc && !(logits = malloc(sizeof(float) * (size_t)c->vocab_size)))
        rc = ctx_err_set(&e, CTX_ENOMEM, "out of memory");
    if (!rc)
        rc = inf_sampler_new(&a->sampling, c->vocab_size, &smp, &e);
    if (!rc && !(dt = inf_detok_new(tok)))
        rc = ctx_err_set(&e, CTX_ENOMEM, "out of memory");
    struct parse_ctx pc = {a, ctx};
    struct inf_dsml_parser_opts po = {.mode = a->mode};
    if (!rc && !(parser = inf_dsml_parser_new(&po, on_event, &pc)))
        rc = ctx_err_set(&e, CTX_ENOMEM, "out of memory");
    size_t cap = dt ? inf_detok_max_chunk(dt) : 0;
    if (!rc && !(piece = malloc(cap + 1)))
        rc = ctx_err_set(&e, CTX_ENOMEM, "out of memory");
    a->prompt_tokens = r->prefix.n + nids;
    a->cached_tokens = r->prefix.n;
    uint64_t t0 = now_ms(), t_first = 0;
    if (!rc) {
        struct inf_forward_opts fo = {.logits = logits};
        rc = inf_model_forward(m, r->st, (const int *)ids, (int)nids, &fo, &e);
    }
    double prompt_ms = (double)(now_ms() - t0);
    a->prompt_tok_s = prompt_ms > 0 ? (double)nids * 1000.0 / prompt_ms : 0;
    int eos = ctxd_engine_eos(g);
    a->finish = "length";
    while (!rc && a->generated < (size_t)a->max_tokens) {
        if (ctxd_job_cancelled(ctx)) {
            a->finish = "cancelled";
            break;
        }
        int32_t t = inf_sample(smp, logits);
        if (a->top_logprobs)
            add_logprobs(a, logits, c->vocab_size, t);
        a->generated++;
        if (a->generated == 1) {
            t_first = now_ms();
            a->ttft_ms = (double)(t_first - a->t_submit);
        }
        size_t n = 0;
        if (inf_detok_push(dt, t, piece, cap, &n) == 0 && n) {
            raw_append(a, piece, n);
            struct ctx_err pe = {0};
            if (inf_dsml_parser_feed(parser, piece, n, &pe) == CTX_EFORMAT) {
                a->finish = "malformed";
                snprintf(a->malformed, sizeof a->malformed, "%s", pe.msg);
                break;
            }
        }
        if (t == eos) {
            a->finish = "stop";
            break;
        }
        struct inf_forward_opts fo = {.logits = logits};
        rc = inf_model_forward(m, r->st, &t, 1, &fo, &e);
    }
    if (!rc && strcmp(a->finish, "stop") == 0) {
        struct ctx_err pe = {0};
        if (inf_dsml_parser_finish(parser, &pe) == CTX_EFORMAT) {
            a->finish = "malformed";
            snprintf(a->malformed, sizeof a->malformed, "%s", pe.msg);
        }
    }
    if (t_first && a->generated > 1) {
        double secs = (double)(now_ms() - t_first) / 1000.0;
        a->decode_tok_s = secs > 0 ? (double)(a->generated - 1) / secs : 0;
    }
    if (parser)
        a->message = inf_dsml_parser_message(parser);
    /* Back to the resident prefix, bit for bit, for the next question. */
    struct ctx_err te = {0};
    int trc = inf_state_truncate(r->st, r->ready_snap, &te);
    inf_dsml_parser_free(parser);
    inf_detok_free(dt);
    inf_sampler_free(smp);
    free(piece);
    free(logits);
    free(ids);
    free(suffix);
    if (rc)
        return ctxd_job_fail(ctx, rc, "%s", e.msg);
    if (trc)
        return ctxd_job_fail(ctx, trc, "restoring the resident state: %s", te.msg);
    return CTXD_JOB_DONE;
}

static void ask_done(void *ud, int status, const char *message)
{
    struct ask *a = ud;
    struct repo *r = a->r;
    r->job = NULL;
    r->running_ask = NULL;
    if (status == CTX_ECANCELED && !r->rs->closing) {
        /* cancelled while queued, or the engine stopped it: the state was restored (or never
         * touched), the reply goes nowhere if the client left */
        a->finish = "cancelled";
        status = 0;
    }
    if (status) {
        struct ctx_err e = {0};
        ctx_err_set(&e, status, "%s", message);
        ctxd_call_fail_err(a->call, &e);
    } else {
        /* sessions store the turn before the message moves into the reply */
        if (a->hook && strcmp(a->finish, "cancelled") != 0)
            a->hook(a->hook_ud, a->session, cJSON_GetArrayItem(a->turns, cJSON_GetArraySize(a->turns) - 1), a->message,
                    a->raw, a->finish);
        cJSON *res = cJSON_CreateObject();
        cJSON_AddItemToObject(res, "message", a->message ? a->message : cJSON_CreateNull());
        a->message = NULL;
        cJSON_AddStringToObject(res, "finish_reason", a->finish);
        if (a->logprobs) {
            cJSON_AddItemToObject(res, "logprobs", a->logprobs);
            a->logprobs = NULL;
        }
        if (a->malformed[0])
            cJSON_AddStringToObject(res, "malformed", a->malformed);
        cJSON *u = cJSON_AddObjectToObject(res, "usage");
        cJSON_AddNumberToObject(u, "prompt_tokens", (double)a->prompt_tokens);
        cJSON_AddNumberToObject(u, "cached_tokens", (double)a->cached_tokens);
        cJSON_AddNumberToObject(u, "generated_tokens", (double)a->generated);
        cJSON_AddNumberToObject(u, "time_to_first_token_ms", a->ttft_ms);
        cJSON_AddNumberToObject(u, "tokens_per_s", a->decode_tok_s);
        cJSON_AddNumberToObject(u, "prompt_tokens_per_s", a->prompt_tok_s);
        if (a->session[0])
            cJSON_AddStringToObject(res, "session", a->session);
        cJSON_AddStringToObject(res, "model", ctxd_engine_describe(r->rs->d->engine));
        cJSON_AddBoolToObject(res, "noise", ctxd_engine_is_noise(r->rs->d->engine));
        ctxd_call_reply(a->call, res);
    }
    free_ask(a);
    if (!r->rs->closing) {
        start_next(r);
        maybe_update(r);
    }
}

/* The remote backend: the same conversation as messages; deltas come from the server's stream. */
static int remote_event(void *ud, const struct agent_openai_event *ev, struct ctx_err *e)
{
    (void)e;
    struct parse_ctx *pc = ud;
    const char *kind = ev->kind == AGENT_OPENAI_EV_REASONING ? "reasoning"
                       : ev->kind == AGENT_OPENAI_EV_CONTENT ? "content" : NULL;
    if (!kind || !ev->len)
        return 0;
    struct delta_msg *m = malloc(sizeof *m);
    char *t = strdup(ev->text);
    if (!m || !t) {
        free(m);
        free(t);
        return 0;
    }
    m->a = pc->a;
    m->kind = kind;
    m->text = t;
    ctxd_job_post(pc->job, on_delta, m);
    return 0;
}

static int remote_ask_run(struct ctxd_job_ctx *ctx, struct ask *a)
{
    struct repo *r = a->r;
    struct agent_openai *remote = ctxd_engine_remote(r->rs->d->engine);
    struct ctx_err e = {0};
    cJSON *msgs = conversation(r, a, &e);
    if (!msgs)
        return ctxd_job_fail(ctx, e.code, "%s", e.msg);
    struct parse_ctx pc = {a, ctx};
    struct agent_openai_result res = {0};
    int rc = agent_openai_chat(remote, msgs, NULL, remote_event, &pc, ctxd_job_cancel_flag(ctx), &res, &e);
    cJSON_Delete(msgs);
    if (rc == CTX_ECANCELED) {
        a->finish = "cancelled";
        agent_openai_result_free(&res);
        return CTXD_JOB_DONE;
    }
    if (rc) {
        agent_openai_result_free(&res);
        return ctxd_job_fail(ctx, rc, "%s", e.msg);
    }
    a->message = res.message;
    res.message = NULL;
    a->finish = strcmp(res.finish_reason, "length") == 0 ? "length" : "stop";
    a->prompt_tokens = res.usage.reported ? (size_t)res.usage.prompt_tokens : r->prefix.n;
    a->cached_tokens = res.usage.reported && res.usage.cached_tokens >= 0 ? (size_t)res.usage.cached_tokens : 0;
    a->generated = res.usage.reported ? (size_t)res.usage.completion_tokens : 0;
    a->ttft_ms = res.usage.ttft_ms;
    if (res.usage.total_ms > res.usage.ttft_ms && a->generated > 1)
        a->decode_tok_s = (double)(a->generated - 1) * 1000.0 / (res.usage.total_ms - res.usage.ttft_ms);
    agent_openai_result_free(&res);
    return CTXD_JOB_DONE;
}

static const struct ctxd_job_ops ask_ops = {ask_run, ask_done};

/* ---- jobs of other modules (the agent) on the resident state ------------------------------ */

static void on_change(void *ud, const char *const *paths, size_t n);

static int ext_run(struct ctxd_job_ctx *ctx, void *ud)
{
    struct ask *a = ud;
    struct repo *r = a->r;
    struct ctxd_repo_view *v = &a->view;
    struct ctx_err e = {0};
    if (!a->ext_started) {
        /* set once: the job may read the view from a thread of its own between slices */
        a->ext_started = 1;
        if (!r->undo && agent_undo_open(r->root, &r->undo, &e))
            CTX_WARN("%s: the agent's changes cannot be recorded for undo: %s", r->root, e.msg);
        v->root = r->root;
        v->snap = r->snap;
        v->layout = r->layout;
        v->prefix = &r->prefix;
        v->overlay = r->overlay;
        v->system = r->rs->system;
        v->tools = r->rs->tools;
        v->engine = r->rs->d->engine;
        v->st = r->st;
        v->ready = r->ready_snap;
        v->undo = r->undo;
    }
    int rc = a->ext->run(ctx, v, a->ext_ud);
    if (rc != CTXD_JOB_YIELD && r->st && r->ready_snap) {
        /* Back to the resident prefix, bit for bit, whatever the job left in the state. */
        struct ctx_err te = {0};
        if (inf_state_truncate(r->st, r->ready_snap, &te) && rc >= 0)
            return ctxd_job_fail(ctx, CTX_EINTERNAL, "restoring the resident state: %s", te.msg);
    }
    return rc;
}

static void ext_done(void *ud, int status, const char *message)
{
    struct ask *a = ud;
    struct repo *r = a->r;
    r->job = NULL;
    r->running_ask = NULL;
    a->ext->done(a->ext_ud, status, message);
    /* The files the job changed go through the live-edit path, like the user's own edits. */
    if (!r->rs->closing && a->view.n_changed)
        on_change(r, (const char *const *)a->view.changed, a->view.n_changed);
    free_ask(a);
    if (!r->rs->closing) {
        start_next(r);
        maybe_update(r);
    }
}

/* A job of another module may hold resources between slices (the agent's thread): once started it
 * always runs to its end, a cancellation included. */
static const struct ctxd_job_ops ext_ops = {ext_run, ext_done, 1};

/* Give the engine the repository's next question, if it is ready and idle. */
static void start_next(struct repo *r)
{
    if (r->phase != PH_READY || r->job || !r->asks)
        return;
    struct ask *a = r->asks;
    r->asks = a->next;
    a->next = NULL;
    struct ctx_err e = {0};
    r->running_ask = a;
    if (a->ext && r->snap)
        r->ext_nfiles = r->snap->nfiles;
    if (a->ext) {
        copy_buffers(r, a->buffers_from, &a->bufcopy, &a->n_bufcopy);
        a->view.buffers = a->bufcopy;
        a->view.n_buffers = a->n_bufcopy;
    }
    if (ctxd_sched_submit(r->rs->d->sched, CTXD_PRIO_INTERACTIVE, a->client, a->ext ? &ext_ops : &ask_ops, a, &r->job,
                          &e)) {
        r->running_ask = NULL;
        ctxd_call_fail_err(a->call, &e);
        free_ask(a);
        start_next(r);
    }
}

/* ---- ingestion on the libuv thread pool --------------------------------------------------- */

static int count_tokens(void *ud, const char *text, size_t len, size_t *n)
{
    struct ctx_err e = {0};
    return inf_tokenizer_count_flags(ud, text, len, INF_TOK_LITERAL, n, &e); /* as agent/prompt.c encodes */
}

static void ingest_work(uv_work_t *w)
{
    struct repo *r = w->data;
    struct ctxd_repos *rs = r->rs;
    const struct inf_tokenizer *tok = ctxd_engine_tokenizer(rs->d->engine);
    uint64_t t0 = now_ms();
    struct repo_options ro;
    repo_options_default(&ro);
    ro.pool = rs->pool;
    struct ctx_err *e = &r->work_err;
    r->work_rc = repo_snapshot_open(r->req_path, &ro, NULL, &r->snap, e);
    if (r->work_rc)
        return;
    struct repo_layout_options lo;
    repo_layout_options_default(&lo);
    lo.budget = r->budget;
    lo.count_tokens = count_tokens;
    lo.count_ud = (void *)tok;
    lo.count_thread_safe = true;
    lo.pool = rs->pool;
    r->work_rc = repo_layout_build(r->snap, &lo, &r->layout, e);
    if (r->work_rc)
        return;
    struct agent_prefix_opts po = {.system = rs->system, .tools = rs->tools, .mode = INF_DSML_THINKING};
    r->work_rc = agent_prefix_build(tok, &po, r->layout, &r->prefix, e);
    r->ingest_ms = (double)(now_ms() - t0);
}

static void ingest_after(uv_work_t *w, int status)
{
    struct repo *r = w->data;
    if (r->rs->closing)
        return;
    if (status || r->work_rc) {
        r->phase = PH_FAILED;
        if (status)
            ctx_err_set(&r->work_err, CTX_ECANCELED, "ingestion was cancelled");
        snprintf(r->error, sizeof r->error, "%s", r->work_err.msg);
        CTX_ERROR("ingesting %s failed: %s", r->req_path, r->error);
        fail_waiters(r, &r->work_err);
        fail_asks(r, &r->work_err);
        return;
    }
    free(r->root);
    r->root = strdup(r->snap->workdir);
    size_t rl = strlen(r->root);
    if (rl > 1 && r->root[rl - 1] == '/')
        r->root[rl - 1] = 0;
    r->name = strdup(r->snap->name);
    r->phase = PH_PREFILLING;
    /* buffers sent while it was ingesting (the work tree was not known yet): applied once it is
     * resident */
    for (struct rbuf *b = r->bufs; b; b = b->next)
        buf_touch(r, b->abs);
    flush_buffers(r);
    r->prefill_t0 = now_ms();
    CTX_INFO("ingested %s: %zu files, %zu prompt tokens in %.0f ms", r->root, r->snap->nfiles, r->prefix.n,
             r->ingest_ms);
    notify_progress(r);
    if (ctxd_engine_remote(r->rs->d->engine)) {
        /* a remote backend keeps its own cache: nothing to prefill here */
        prefill_done(r, 0, "");
        return;
    }
    struct ctx_err e = {0};
    if (ctxd_sched_submit(r->rs->d->sched, CTXD_PRIO_BACKGROUND, 0, &prefill_ops, r, &r->job, &e)) {
        r->phase = PH_FAILED;
        snprintf(r->error, sizeof r->error, "%s", e.msg);
        fail_waiters(r, &e);
        fail_asks(r, &e);
    }
}

/* ---- live updates ------------------------------------------------------------------------- */

/* Directories that are build outputs or dependency trees nearly everywhere: not watched (the
 * inventory decides about their files when it re-reads them anyway). */
static int watch_skip(void *ud, const char *rel, int is_dir)
{
    (void)ud;
    if (!is_dir)
        return 0;
    const char *base = strrchr(rel, '/');
    base = base ? base + 1 : rel;
    static const char *const names[] = {"node_modules", "__pycache__", ".venv", "target", "dist", ".cache", NULL};
    for (int i = 0; names[i]; i++)
        if (strcmp(base, names[i]) == 0)
            return 1;
    return strcmp(base, "build") == 0 || strncmp(base, "build-", 6) == 0;
}

static void on_change(void *ud, const char *const *paths, size_t n)
{
    struct repo *r = ud;
    for (size_t i = 0; i < n; i++) {
        /* "" is the watcher's overflow; a new HEAD (branch switch) or index (staging, commits)
         * changes statuses and churn order: both take a new inventory */
        if (!paths[i][0] || strncmp(paths[i], ".git/", 5) == 0) {
            r->rescan = 1;
            continue;
        }
        int dup = 0;
        for (size_t j = 0; j < r->n_pending && !dup; j++)
            dup = strcmp(r->pending[j], paths[i]) == 0;
        if (dup)
            continue;
        char **np = realloc(r->pending, (r->n_pending + 1) * sizeof *np);
        char *c = strdup(paths[i]);
        if (!np || !c) {
            free(c);
            if (np)
                r->pending = np;
            r->rescan = 1;
            continue;
        }
        r->pending = np;
        r->pending[r->n_pending++] = c;
    }
    CTX_DEBUG("%s: %zu changed paths pending", r->root, r->n_pending);
    maybe_update(r);
}

static void start_watch(struct repo *r)
{
    if (r->watch || r->rs->o.no_watch)
        return;
    struct ctxd_watch_opts wo = {.root = r->root, .debounce_ms = r->rs->o.debounce_ms,
                                 .skip = watch_skip, .on_change = on_change, .ud = r};
    struct ctx_err e = {0};
    if (ctxd_watch_new(r->rs->d->loop, &wo, &r->watch, &e))
        CTX_WARN("not watching %s: %s", r->root, e.msg);
}

static int count_tokens(void *ud, const char *text, size_t len, size_t *n);

/* Thread pool: apply the batch to the snapshot, the layout and the prefix tokens. */
static void update_work(uv_work_t *w)
{
    struct repo *r = w->data;
    struct ctxd_repos *rs = r->rs;
    const struct inf_tokenizer *tok = ctxd_engine_tokenizer(rs->d->engine);
    uint64_t t0 = now_ms();
    struct ctx_err *e = &r->work_err;
    struct repo_layout_options lo;
    repo_layout_options_default(&lo);
    lo.budget = r->budget;
    lo.count_tokens = count_tokens;
    lo.count_ud = (void *)tok;
    lo.count_thread_safe = true;
    lo.pool = rs->pool;
    if (r->overlay_refresh) {
        /* the overlay path: only the files' current text is needed; the layout stays resident */
        r->work_rc = repo_snapshot_refresh(r->snap, (const char *const *)r->applying, r->n_applying, e);
        if (!r->work_rc)
            apply_buffers(r, 0);
        r->update_ms = (double)(now_ms() - t0);
        return;
    }
    size_t old_n = r->prefix.n;
    if (r->applying_rescan) {
        /* too many changes to list: a new inventory and layout */
        struct repo_options ro;
        repo_options_default(&ro);
        ro.pool = rs->pool;
        struct repo_snapshot *snap = NULL;
        struct repo_layout *layout = NULL;
        struct agent_prefix prefix;
        struct agent_prefix_opts po = {.system = rs->system, .tools = rs->tools, .mode = INF_DSML_THINKING};
        r->work_rc = repo_snapshot_open(r->root, &ro, NULL, &snap, e);
        if (!r->work_rc) {
            struct repo_snapshot *old = r->snap;
            r->snap = snap; /* the unsaved buffers replace their files' text in the new inventory */
            apply_buffers(r, 1);
            r->snap = old;
        }
        if (!r->work_rc)
            r->work_rc = repo_layout_build(snap, &lo, &layout, e);
        if (!r->work_rc)
            r->work_rc = agent_prefix_build(tok, &po, layout, &prefix, e);
        if (r->work_rc) {
            repo_layout_free(layout);
            repo_snapshot_free(snap);
            return;
        }
        size_t k = 0;
        while (k < old_n && k < prefix.n && prefix.tokens[k] == r->prefix.tokens[k])
            k++;
        repo_layout_free(r->layout);
        repo_snapshot_free(r->snap);
        agent_prefix_free(&r->prefix);
        r->snap = snap;
        r->layout = layout;
        r->prefix = prefix;
        r->first_token = k == old_n && k == prefix.n ? prefix.n : k;
    } else {
        size_t first_seg = 0;
        r->work_rc = repo_snapshot_refresh(r->snap, (const char *const *)r->applying, r->n_applying, e);
        if (!r->work_rc)
            apply_buffers(r, 0);
        if (!r->work_rc)
            r->work_rc = repo_layout_update(r->layout, r->snap, &lo, (const char *const *)r->applying,
                                            r->n_applying, &first_seg, e);
        if (!r->work_rc && r->layout->over_budget) {
            /* the edit pushed it over budget: lay it out again (outlines move) */
            struct repo_layout *nl = NULL;
            r->work_rc = repo_layout_build(r->snap, &lo, &nl, e);
            if (!r->work_rc) {
                repo_layout_free(r->layout);
                r->layout = nl;
                first_seg = 0;
            }
        }
        if (!r->work_rc)
            r->work_rc = agent_prefix_update(&r->prefix, tok, r->layout, first_seg, &r->first_token, e);
    }
    r->update_ms = (double)(now_ms() - t0);
}

static void build_overlay(struct repo *r)
{
    size_t cap = 256, n = 0;
    char *o = malloc(cap);
    static const char head[] = "Files changed since the repository above was read; their current text replaces "
                               "the versions above:\n";
    if (!o)
        return;
    memcpy(o, head, sizeof head - 1);
    n = sizeof head - 1;
    for (size_t i = 0; i < r->n_deferred; i++) {
        const struct repo_file *f = repo_snapshot_find(r->snap, r->deferred[i]);
        const char *text = f && f->text ? f->text : NULL;
        size_t tl = text ? f->len : 0, need = strlen(r->deferred[i]) + tl + 64;
        if (n + need + 1 > cap) {
            while (n + need + 1 > cap)
                cap *= 2;
            char *no = realloc(o, cap);
            if (!no) {
                free(o);
                return;
            }
            o = no;
        }
        if (text) {
            n += (size_t)sprintf(o + n, "File: %s\n", r->deferred[i]);
            memcpy(o + n, text, tl);
            n += tl;
            if (tl && text[tl - 1] != '\n')
                o[n++] = '\n';
        } else {
            n += (size_t)sprintf(o + n, "%s: %s\n", f ? "Not shown" : "Deleted", r->deferred[i]);
        }
    }
    o[n] = 0;
    free(r->overlay);
    r->overlay = o;
}

static void on_idle(uv_timer_t *t)
{
    struct repo *r = t->data;
    if (!r->n_deferred || r->rs->closing)
        return;
    if (r->phase != PH_READY || r->job || r->asks) {
        uv_timer_start(&r->idle_timer, on_idle, (uint64_t)r->rs->o.rebase_idle_ms, 0); /* not idle yet */
        return;
    }
    CTX_INFO("%s: idle, re-basing %zu overlaid files", r->root, r->n_deferred);
    for (size_t i = 0; i < r->n_deferred; i++) {
        char **np = realloc(r->pending, (r->n_pending + 1) * sizeof *np);
        if (!np)
            break;
        r->pending = np;
        r->pending[r->n_pending++] = strdup(r->deferred[i]);
    }
    r->rebase_now = 1;
    maybe_update(r);
}

static void arm_idle(struct repo *r)
{
    if (!r->n_deferred)
        return;
    if (!r->idle_timer_init) {
        uv_timer_init(r->rs->d->loop, &r->idle_timer);
        r->idle_timer.data = r;
        r->idle_timer_init = 1;
    }
    uv_timer_start(&r->idle_timer, on_idle, (uint64_t)r->rs->o.rebase_idle_ms, 0);
}

static void clear_overlay(struct repo *r)
{
    for (size_t i = 0; i < r->n_deferred; i++)
        free(r->deferred[i]);
    free(r->deferred);
    r->deferred = NULL;
    r->n_deferred = 0;
    free(r->overlay);
    r->overlay = NULL;
}

static void update_after(uv_work_t *w, int status)
{
    struct repo *r = w->data;
    int overlay = r->overlay_refresh;
    r->overlay_refresh = 0;
    free_buffer_copies(r->ubufs, r->n_ubufs);
    r->ubufs = NULL;
    r->n_ubufs = 0;
    if (overlay && !status && !r->work_rc && !r->rs->closing) {
        /* keep the resident state; the edited files go after the repository block */
        for (size_t i = 0; i < r->n_applying; i++) {
            int dup = 0;
            for (size_t j = 0; j < r->n_deferred && !dup; j++)
                dup = strcmp(r->deferred[j], r->applying[i]) == 0;
            char **nd = dup ? NULL : realloc(r->deferred, (r->n_deferred + 1) * sizeof *nd);
            if (nd) {
                r->deferred = nd;
                r->deferred[r->n_deferred++] = r->applying[i];
                r->applying[i] = NULL;
            }
        }
        build_overlay(r);
        CTX_INFO("%s: %zu edited files overlaid after the repository; re-base when idle", r->root, r->n_deferred);
        arm_idle(r);
    }
    for (size_t i = 0; i < r->n_applying; i++)
        free(r->applying[i]);
    free(r->applying);
    r->applying = NULL;
    r->n_applying = 0;
    if (r->rs->closing)
        return;
    if (overlay && !status && !r->work_rc) {
        r->phase = PH_READY;
        start_next(r);
        maybe_update(r);
        return;
    }
    if (!status && !r->work_rc && r->n_deferred) {
        /* the re-prefill path applied the overlaid files too */
        clear_overlay(r);
        r->rebases++;
    }
    if (status || r->work_rc) {
        /* The old resident state still matches the old prompt; keep serving it and say why. */
        CTX_ERROR("updating %s failed: %s", r->root, status ? "cancelled" : r->work_err.msg);
        snprintf(r->restore_note, sizeof r->restore_note, "update failed: %s",
                 status ? "cancelled" : r->work_err.msg);
        r->phase = PH_READY;
        start_next(r);
        return;
    }
    r->updates++;
    if (r->first_token >= r->prefix.n && (size_t)r->resident == r->prefix.n) {
        CTX_INFO("%s: the change does not alter the prompt", r->root);
        r->phase = PH_READY;
        start_next(r);
        maybe_update(r);
        return;
    }
    if (ctxd_engine_remote(r->rs->d->engine)) {
        r->phase = PH_READY;
        start_next(r);
        maybe_update(r);
        return;
    }
    CTX_INFO("%s: prompt changed from token %zu of %zu; re-prefilling from the last checkpoint before it",
             r->root, r->first_token, r->prefix.n);
    /* The state goes back to the longest cached prefix of the new prompt (the checkpoint before
     * the first change) and the rest is prefilled in the background. */
    inf_state_free(r->st);
    r->st = NULL;
    inf_snapshot_free(r->ready_snap);
    r->ready_snap = NULL;
    r->resident = 0;
    r->phase = PH_PREFILLING;
    r->prefill_t0 = now_ms();
    struct ctx_err e = {0};
    if (ctxd_sched_submit(r->rs->d->sched, CTXD_PRIO_BACKGROUND, 0, &prefill_ops, r, &r->job, &e)) {
        r->phase = PH_FAILED;
        snprintf(r->error, sizeof r->error, "%s", e.msg);
        fail_waiters(r, &e);
        fail_asks(r, &e);
    }
}

/* Apply pending changes when the repository is resident and no engine job holds it. Questions
 * that arrive meanwhile wait for the updated state. */
/* Tokens a re-prefill for these changed paths would recompute, from the resident layout: from the
 * first segment of a changed file to the end (files not in the layout yet go at the end). */
static size_t recompute_estimate(struct repo *r, char **paths, size_t n)
{
    size_t first = SIZE_MAX;
    const struct repo_layout *l = r->layout;
    for (size_t i = 0; i < n; i++) {
        size_t lo = 0, hi = l->nreport;
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            int c = strcmp(l->report[mid].path, paths[i]);
            if (c == 0) {
                lo = mid;
                break;
            }
            if (c < 0)
                lo = mid + 1;
            else
                hi = mid;
        }
        if (lo < l->nreport && strcmp(l->report[lo].path, paths[i]) == 0 && l->report[lo].segment != SIZE_MAX &&
            l->report[lo].segment < first)
            first = l->report[lo].segment;
    }
    if (first == SIZE_MAX || 1 + first >= r->prefix.nparts)
        return 0;
    return r->prefix.n - r->prefix.part_start[1 + first];
}

static void maybe_update(struct repo *r)
{
    if (r->phase != PH_READY || r->job || (!r->n_pending && !r->rescan) || r->rs->closing)
        return;
    /* Overlay path: a long re-prefill is deferred while the repository is in use. */
    size_t threshold = (size_t)r->rs->o.overlay_threshold;
    int overlay = !r->rebase_now && threshold && !r->rescan && r->ready_snap &&
                  !ctxd_engine_remote(r->rs->d->engine) && recompute_estimate(r, r->pending, r->n_pending) > threshold;
    r->rebase_now = 0;
    if (!overlay && r->n_deferred) {
        /* a re-prefill is happening anyway: it takes the overlaid files along */
        for (size_t i = 0; i < r->n_deferred; i++) {
            char **np = realloc(r->pending, (r->n_pending + 1) * sizeof *np);
            if (!np)
                break;
            r->pending = np;
            r->pending[r->n_pending++] = strdup(r->deferred[i]);
        }
    }
    r->overlay_refresh = overlay;
    copy_buffers(r, 0, &r->ubufs, &r->n_ubufs);
    r->applying = r->pending;
    r->n_applying = r->n_pending;
    r->applying_rescan = r->rescan;
    r->pending = NULL;
    r->n_pending = 0;
    r->rescan = 0;
    r->phase = PH_UPDATING;
    r->work.data = r;
    int urc = uv_queue_work(r->rs->d->loop, &r->work, update_work, update_after);
    if (urc) {
        CTX_ERROR("queueing an update of %s: %s", r->root, uv_strerror(urc));
        r->pending = r->applying;
        r->n_pending = r->n_applying;
        r->rescan = r->applying_rescan;
        r->applying = NULL;
        r->n_applying = 0;
        r->phase = PH_READY;
        free_buffer_copies(r->ubufs, r->n_ubufs);
        r->ubufs = NULL;
        r->n_ubufs = 0;
    }
}

/* ---- methods ------------------------------------------------------------------------------ */

static struct repo *find_repo(struct ctxd_repos *rs, const char *real)
{
    for (struct repo *r = rs->list; r; r = r->next) {
        if (strcmp(r->req_path, real) == 0)
            return r;
        if (r->root) {
            size_t n = strlen(r->root);
            if (strncmp(real, r->root, n) == 0 && (real[n] == 0 || real[n] == '/'))
                return r;
        }
    }
    return NULL;
}

static int path_param(struct ctxd_call *call, const cJSON *params, char *real)
{
    const cJSON *p = params ? cJSON_GetObjectItemCaseSensitive(params, "path") : NULL;
    if (!cJSON_IsString(p)) {
        ctxd_call_fail(call, CTXD_RPC_INVALID_PARAMS, "\"path\" (a string) is required", NULL);
        return -1;
    }
    if (!realpath(p->valuestring, real)) {
        char msg[PATH_MAX + 64];
        snprintf(msg, sizeof msg, "path %s: %s", p->valuestring, strerror(errno));
        cJSON *data = cJSON_CreateObject();
        cJSON_AddStringToObject(data, "code", "ENOTFOUND");
        ctxd_call_fail(call, CTXD_RPC_FAILED, msg, data);
        return -1;
    }
    return 0;
}


/* The repository at `real`, opened (ingestion started) if it is not yet. */
static struct repo *open_repo(struct ctxd_repos *rs, const char *real, size_t budget, struct ctx_err *e)
{
    if (ctxd_engine_load_tokenizer(rs->d->engine, e))
        return NULL;
    struct repo *r = find_repo(rs, real);
    if (r && r->phase != PH_FAILED)
        return r;
    if (r) { /* a failed one is retried */
        struct repo **pp = &rs->list;
        while (*pp != r)
            pp = &(*pp)->next;
        *pp = r->next;
        free_repo(r);
        free(r);
    }
    r = calloc(1, sizeof *r);
    if (!r || !(r->req_path = strdup(real))) {
        free(r);
        ctx_err_set(e, CTX_ENOMEM, "out of memory");
        return NULL;
    }
    r->rs = rs;
    r->id = ++rs->next_id;
    r->budget = budget ? budget : rs->o.budget;
    r->phase = PH_INGESTING;
    r->work.data = r;
    r->next = rs->list;
    rs->list = r;
    int urc = uv_queue_work(rs->d->loop, &r->work, ingest_work, ingest_after);
    if (urc) {
        r->phase = PH_FAILED;
        snprintf(r->error, sizeof r->error, "queueing ingestion: %s", uv_strerror(urc));
    }
    CTX_INFO("opening %s", real);
    return r;
}

static int int_param(struct ctxd_call *call, const cJSON *params, const char *name, long long lo, long long hi,
                     long long *v)
{
    const cJSON *p = params ? cJSON_GetObjectItemCaseSensitive(params, name) : NULL;
    if (!p)
        return 0;
    if (!cJSON_IsNumber(p) || p->valuedouble != floor(p->valuedouble) || p->valuedouble < (double)lo ||
        p->valuedouble > (double)hi) {
        char msg[160];
        snprintf(msg, sizeof msg, "\"%s\" must be an integer in [%lld, %lld]", name, lo, hi);
        ctxd_call_fail(call, CTXD_RPC_INVALID_PARAMS, msg, NULL);
        return -1;
    }
    *v = (long long)p->valuedouble;
    return 0;
}

static void m_open(struct ctxd_call *call, const cJSON *params, void *ud)
{
    struct ctxd_repos *rs = ud;
    static const char *const allowed[] = {"path", "wait", "budget", NULL};
    char real[PATH_MAX];
    long long budget = 0;
    if (ctxd_call_check_params(call, params, allowed) || path_param(call, params, real) ||
        int_param(call, params, "budget", 1024, REPO_BUDGET_MAX, &budget))
        return;
    const cJSON *wait = cJSON_GetObjectItemCaseSensitive(params, "wait");
    if (wait && !cJSON_IsBool(wait)) {
        ctxd_call_fail(call, CTXD_RPC_INVALID_PARAMS, "\"wait\" must be true or false", NULL);
        return;
    }
    struct ctx_err e = {0};
    struct repo *r = open_repo(rs, real, (size_t)budget, &e);
    if (!r) {
        ctxd_call_fail_err(call, &e);
        return;
    }
    if (!cJSON_IsTrue(wait) || r->phase == PH_READY || r->phase == PH_FAILED) {
        ctxd_call_reply(call, repo_status_json(r));
        return;
    }
    struct waiter *w = calloc(1, sizeof *w);
    if (!w) {
        ctx_err_set(&e, CTX_ENOMEM, "out of memory");
        ctxd_call_fail_err(call, &e);
        return;
    }
    w->call = call;
    w->client = ctxd_call_client_id(call);
    w->next = r->waiters;
    r->waiters = w;
    notify_progress(r);
}

static void m_status(struct ctxd_call *call, const cJSON *params, void *ud)
{
    struct ctxd_repos *rs = ud;
    static const char *const allowed[] = {"path", NULL};
    char real[PATH_MAX];
    if (ctxd_call_check_params(call, params, allowed) || path_param(call, params, real))
        return;
    struct repo *r = find_repo(rs, real);
    if (!r) {
        char msg[PATH_MAX + 64];
        snprintf(msg, sizeof msg, "%s is not open (repo.open opens it)", real);
        cJSON *data = cJSON_CreateObject();
        cJSON_AddStringToObject(data, "code", "ENOTFOUND");
        ctxd_call_fail(call, CTXD_RPC_FAILED, msg, data);
        return;
    }
    ctxd_call_reply(call, repo_status_json(r));
}

static void free_repo(struct repo *r)
{
    agent_undo_free(r->undo);
    r->undo = NULL;
    ctxd_watch_free(r->watch);
    repo_layout_free(r->layout);
    repo_snapshot_free(r->snap);
    agent_prefix_free(&r->prefix);
    inf_state_free(r->st);
    inf_snapshot_free(r->ready_snap);
    for (size_t i = 0; i < r->n_pending; i++)
        free(r->pending[i]);
    free(r->pending);
    clear_overlay(r);
    while (r->bufs) {
        struct rbuf *b = r->bufs;
        r->bufs = b->next;
        free(b->abs);
        free(b->text);
        free(b);
    }
    for (size_t i = 0; i < r->n_buf_dirty; i++)
        free(r->buf_dirty[i]);
    free(r->buf_dirty);
    free_buffer_copies(r->ubufs, r->n_ubufs);
    free(r->req_path);
    free(r->root);
    free(r->name);
}

static void on_repo_closed(uv_handle_t *h)
{
    free(h->data);
}

/* repo.close: forget a repository that is idle (its KV checkpoints stay on disk). */
static void m_close(struct ctxd_call *call, const cJSON *params, void *ud)
{
    struct ctxd_repos *rs = ud;
    static const char *const allowed[] = {"path", NULL};
    char real[PATH_MAX];
    if (ctxd_call_check_params(call, params, allowed) || path_param(call, params, real))
        return;
    struct repo *r = find_repo(rs, real);
    struct ctx_err e = {0};
    if (!r) {
        ctx_err_set(&e, CTX_ENOTFOUND, "%s is not open", real);
        ctxd_call_fail_err(call, &e);
        return;
    }
    if (r->job || r->asks || r->waiters || r->phase == PH_INGESTING || r->phase == PH_UPDATING) {
        ctx_err_set(&e, CTX_EBUSY, "%s is %s; close it when it is idle", r->root ? r->root : r->req_path,
                    r->job || r->asks ? "answering or prefilling" : phase_names[r->phase]);
        ctxd_call_fail_err(call, &e);
        return;
    }
    struct repo **pp = &rs->list;
    while (*pp != r)
        pp = &(*pp)->next;
    *pp = r->next;
    cJSON *res = cJSON_CreateObject();
    cJSON_AddStringToObject(res, "root", r->root ? r->root : r->req_path);
    cJSON_AddBoolToObject(res, "closed", 1);
    CTX_INFO("closed %s", r->root ? r->root : r->req_path);
    int timer = r->idle_timer_init;
    r->idle_timer_init = 0;
    free_repo(r);
    if (timer) { /* the timer handle lives in r: free r once libuv has let go of it */
        r->idle_timer.data = r;
        uv_close((uv_handle_t *)&r->idle_timer, on_repo_closed);
    } else {
        free(r);
    }
    ctxd_call_reply(call, res);
}

static void m_list(struct ctxd_call *call, const cJSON *params, void *ud)
{
    struct ctxd_repos *rs = ud;
    static const char *const none[] = {NULL};
    if (ctxd_call_check_params(call, params, none))
        return;
    cJSON *res = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(res, "repos");
    for (struct repo *r = rs->list; r; r = r->next)
        cJSON_AddItemToArray(arr, repo_status_json(r));
    ctxd_call_reply(call, res);
}

/* The sampling and output options shared by repo.ask and session.send; fails the call on a bad
 * value. */
static int ask_options(struct ctxd_call *call, const cJSON *params, struct ctxd_ask_opts *o)
{
    long long max_tokens = 512, seed = 0, top_lp = 0;
    if (int_param(call, params, "max_tokens", 1, 65536, &max_tokens) ||
        int_param(call, params, "top_logprobs", 0, 20, &top_lp) ||
        int_param(call, params, "seed", 0, 9007199254740991LL, &seed))
        return -1;
    const cJSON *tp = cJSON_GetObjectItemCaseSensitive(params, "temperature");
    const cJSON *pp = cJSON_GetObjectItemCaseSensitive(params, "top_p");
    if ((tp && (!cJSON_IsNumber(tp) || tp->valuedouble < 0 || tp->valuedouble > 10)) ||
        (pp && (!cJSON_IsNumber(pp) || pp->valuedouble <= 0 || pp->valuedouble > 1))) {
        ctxd_call_fail(call, CTXD_RPC_INVALID_PARAMS, "\"temperature\" must be in [0, 10] and \"top_p\" in (0, 1]",
                       NULL);
        return -1;
    }
    o->max_tokens = (int)max_tokens;
    o->top_logprobs = (int)top_lp;
    o->seed = (unsigned long long)seed;
    o->temperature = tp ? (float)tp->valuedouble : 0.f;
    o->top_p = pp ? (float)pp->valuedouble : 1.f;
    return 0;
}

int ctxd_repos_ask(struct ctxd *d, struct ctxd_call *call, const char *real_path, cJSON *turns,
                   const struct ctxd_ask_opts *o, const char *session, ctxd_ask_hook hook, void *hook_ud,
                   struct ctx_err *e)
{
    struct ctxd_repos *rs = d->repos;
    struct repo *r = open_repo(rs, real_path, 0, e);
    struct ask *a = r ? calloc(1, sizeof *a) : NULL;
    if (!r || !a) {
        cJSON_Delete(turns);
        free(a);
        return e->code ? e->code : ctx_err_set(e, CTX_ENOMEM, "out of memory");
    }
    a->turns = turns;
    a->r = r;
    a->call = call;
    a->client = ctxd_call_client_id(call);
    a->max_tokens = o->max_tokens;
    a->top_logprobs = o->top_logprobs;
    a->sampling.temperature = o->temperature;
    a->sampling.top_p = o->top_p;
    a->sampling.seed = o->seed;
    a->mode = o->chat_mode ? INF_DSML_CHAT : INF_DSML_THINKING;
    a->hook = hook;
    a->hook_ud = hook_ud;
    if (session)
        snprintf(a->session, sizeof a->session, "%s", session);
    a->t_submit = now_ms();
    struct ask **tail = &r->asks;
    while (*tail)
        tail = &(*tail)->next;
    *tail = a;
    arm_idle(r); /* in use: the re-base waits */
    flush_buffers(r); /* the question sees the editor's latest text */
    if (r->phase == PH_FAILED) {
        struct ctx_err fe = {0};
        ctx_err_set(&fe, CTX_EIO, "%s", r->error);
        fail_asks(r, &fe);
        return 0; /* answered */
    }
    start_next(r);
    return 0;
}

int ctxd_repos_submit(struct ctxd *d, struct ctxd_call *call, const char *real_path, const struct ctxd_repo_job *ops,
                      void *ud, const char *session, uint64_t buffers_from, struct ctx_err *e)
{
    struct ctxd_repos *rs = d->repos;
    struct repo *r = open_repo(rs, real_path, 0, e);
    if (!r)
        return e->code;
    struct ask *a = calloc(1, sizeof *a);
    if (!a)
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    a->r = r;
    a->call = call;
    a->client = ctxd_call_client_id(call);
    a->ext = ops;
    a->ext_ud = ud;
    a->finish = "cancelled";
    a->buffers_from = buffers_from ? buffers_from : a->client;
    if (session)
        snprintf(a->session, sizeof a->session, "%s", session);
    a->t_submit = now_ms();
    struct ask **tail = &r->asks;
    while (*tail)
        tail = &(*tail)->next;
    *tail = a;
    arm_idle(r);
    flush_buffers(r); /* the job's snapshot (find_symbol, the prompt) has the editor's latest text */
    if (r->phase == PH_FAILED) {
        struct ctx_err fe = {0};
        ctx_err_set(&fe, CTX_EIO, "%s", r->error);
        fail_asks(r, &fe);
        return 0;
    }
    start_next(r);
    return 0;
}

int ctxd_repos_agent_busy(struct ctxd *d, const char *real_path)
{
    struct repo *r = d->repos ? find_repo(d->repos, real_path) : NULL;
    if (!r)
        return 0;
    if (r->running_ask && r->running_ask->ext)
        return 1;
    for (struct ask *a = r->asks; a; a = a->next)
        if (a->ext)
            return 1;
    return 0;
}

int ctxd_repos_cancel_job(struct ctxd *d, const void *ud)
{
    for (struct repo *r = d->repos ? d->repos->list : NULL; r; r = r->next) {
        for (struct ask **ap = &r->asks; *ap; ap = &(*ap)->next) {
            struct ask *a = *ap;
            if (a->ext && a->ext_ud == ud) {
                *ap = a->next;
                a->ext->done(a->ext_ud, CTX_ECANCELED, "cancelled before it ran");
                free_ask(a);
                return 1;
            }
        }
        if (r->job && r->running_ask && r->running_ask->ext && r->running_ask->ext_ud == ud) {
            ctxd_sched_cancel(d->sched, r->job);
            return 1;
        }
    }
    return 0;
}

void ctxd_repos_changed(struct ctxd *d, const char *real_path, const char *const *paths, size_t n)
{
    struct repo *r = d->repos ? find_repo(d->repos, real_path) : NULL;
    if (r && n && !d->repos->closing && r->phase != PH_INGESTING && r->phase != PH_FAILED)
        on_change(r, paths, n);
}

static void m_ask(struct ctxd_call *call, const cJSON *params, void *ud)
{
    struct ctxd_repos *rs = ud;
    static const char *const allowed[] = {"path", "question", "max_tokens", "temperature", "top_p",
                                          "seed", "mode", "top_logprobs", NULL};
    char real[PATH_MAX];
    struct ctxd_ask_opts o = {0};
    if (ctxd_call_check_params(call, params, allowed) || path_param(call, params, real) || ask_options(call, params, &o))
        return;
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(params, "question");
    if (!cJSON_IsString(q) || !q->valuestring[0]) {
        ctxd_call_fail(call, CTXD_RPC_INVALID_PARAMS, "\"question\" (a non-empty string) is required", NULL);
        return;
    }
    const cJSON *mode = cJSON_GetObjectItemCaseSensitive(params, "mode");
    if (mode && (!cJSON_IsString(mode) ||
                 (strcmp(mode->valuestring, "thinking") && strcmp(mode->valuestring, "chat")))) {
        ctxd_call_fail(call, CTXD_RPC_INVALID_PARAMS, "\"mode\" must be \"thinking\" or \"chat\"", NULL);
        return;
    }
    o.chat_mode = mode && strcmp(mode->valuestring, "chat") == 0;
    cJSON *turns = cJSON_CreateArray(), *turn = cJSON_CreateObject();
    struct ctx_err e = {0};
    if (!turns || !turn) {
        cJSON_Delete(turns);
        cJSON_Delete(turn);
        ctx_err_set(&e, CTX_ENOMEM, "out of memory");
        ctxd_call_fail_err(call, &e);
        return;
    }
    cJSON_AddStringToObject(turn, "role", "user");
    cJSON_AddStringToObject(turn, "content", q->valuestring);
    cJSON_AddItemToArray(turns, turn);
    if (ctxd_repos_ask(rs->d, call, real, turns, &o, NULL, NULL, NULL, &e))
        ctxd_call_fail_err(call, &e);
}

int ctxd_repos_open(struct ctxd *d, const char *real_path, struct ctx_err *e)
{
    return open_repo(d->repos, real_path, 0, e) ? 0 : e->code;
}

int ctxd_repos_cancel_session(struct ctxd *d, const char *session)
{
    int n = 0;
    for (struct repo *r = d->repos ? d->repos->list : NULL; r; r = r->next) {
        struct ask **ap = &r->asks;
        while (*ap) {
            struct ask *a = *ap;
            if (strcmp(a->session, session) == 0) {
                *ap = a->next;
                ctxd_call_fail(a->call, CTXD_RPC_CANCELLED, "cancelled", NULL);
                free_ask(a);
                n++;
            } else {
                ap = &a->next;
            }
        }
        if (r->job && r->running_ask && strcmp(r->running_ask->session, session) == 0) {
            ctxd_sched_cancel(d->sched, r->job);
            n++;
        }
    }
    return n;
}

int ctxd_repos_ask_options(struct ctxd_call *call, const cJSON *params, struct ctxd_ask_opts *o)
{
    return ask_options(call, params, o);
}

static int loop_kv(struct ctxd_call *call, struct ctxd_repos *rs)
{
    if (!rs->o.cache_dir) {
        ctxd_call_fail(call, CTXD_RPC_FAILED, "ctxd runs without a KV cache (--no-cache)", NULL);
        return -1;
    }
    struct ctx_err e = {0};
    if (!rs->kv_loop && store_kv_open(rs->o.cache_dir, &rs->kv_loop, &e)) {
        ctxd_call_fail_err(call, &e);
        return -1;
    }
    return 0;
}

static void m_cache_status(struct ctxd_call *call, const cJSON *params, void *ud)
{
    struct ctxd_repos *rs = ud;
    static const char *const none[] = {NULL};
    if (ctxd_call_check_params(call, params, none) || loop_kv(call, rs))
        return;
    struct store_kv_stats st;
    struct ctx_err e = {0};
    if (store_kv_stats(rs->kv_loop, &st, &e)) {
        ctxd_call_fail_err(call, &e);
        return;
    }
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "dir", rs->o.cache_dir);
    cJSON_AddNumberToObject(r, "lineages", (double)st.lineages);
    cJSON_AddNumberToObject(r, "checkpoints", (double)st.checkpoints);
    cJSON_AddNumberToObject(r, "bytes", (double)st.bytes);
    cJSON_AddNumberToObject(r, "budget_bytes", (double)rs->o.cache_budget);
    cJSON_AddNumberToObject(r, "hits", (double)st.hits);
    cJSON_AddNumberToObject(r, "misses", (double)st.misses);
    cJSON_AddNumberToObject(r, "hit_ratio", st.hits + st.misses ? (double)st.hits / (double)(st.hits + st.misses) : 0);
    cJSON_AddNumberToObject(r, "checkpoint_every", rs->o.checkpoint_every);
    ctxd_call_reply(call, r);
}

static void m_cache_clear(struct ctxd_call *call, const cJSON *params, void *ud)
{
    struct ctxd_repos *rs = ud;
    static const char *const none[] = {NULL};
    if (ctxd_call_check_params(call, params, none) || loop_kv(call, rs))
        return;
    struct store_kv_stats st;
    struct ctx_err e = {0};
    if (store_kv_stats(rs->kv_loop, &st, &e) || store_kv_clear(rs->kv_loop, &e)) {
        ctxd_call_fail_err(call, &e);
        return;
    }
    cJSON *r = cJSON_CreateObject();
    cJSON_AddNumberToObject(r, "freed_bytes", (double)st.bytes);
    cJSON_AddNumberToObject(r, "lineages", (double)st.lineages);
    ctxd_call_reply(call, r);
}

/* ---- unsaved editor buffers (buffer.update, buffer.close) ---------------------------------- */

/* The path of `abs` inside the repository's work tree, or NULL (not inside, or not ingested yet). */
static const char *buf_rel(const struct repo *r, const char *abs)
{
    if (!r->root)
        return NULL;
    size_t n = strlen(r->root);
    return strncmp(abs, r->root, n) == 0 && abs[n] == '/' && abs[n + 1] ? abs + n + 1 : NULL;
}

/* Copies of the buffers of `client` (0: the one shown per path, i.e. the newest of any client). */
static void copy_buffers(struct repo *r, uint64_t client, struct ctxd_buffer **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    size_t cap = 0;
    for (const struct rbuf *b = r->bufs; b; b = b->next) {
        const char *rel = buf_rel(r, b->abs);
        if (!rel || (client && b->client != client))
            continue;
        int dup = 0;
        for (size_t i = 0; i < *n && !dup; i++)
            dup = strcmp((*out)[i].path, rel) == 0;
        if (dup) /* an older buffer of the same file (another client): the newest is shown */
            continue;
        if (*n == cap) {
            struct ctxd_buffer *nv = realloc(*out, (cap = cap ? cap * 2 : 4) * sizeof *nv);
            if (!nv)
                return; /* out of memory: fewer buffers, the files on disk show instead */
            *out = nv;
        }
        struct ctxd_buffer *c = &(*out)[*n];
        c->path = strdup(rel);
        c->text = malloc(b->len + 1);
        c->len = b->len;
        if (!c->path || !c->text) {
            free(c->path);
            free(c->text);
            return;
        }
        memcpy(c->text, b->text, b->len + 1);
        (*n)++;
    }
}

/* Pool thread (inside the update work): the shown buffers replace the text of their files in the
 * snapshot just refreshed from disk (all of them after a new inventory, else the applied paths),
 * so the layout and the prefix show what the editor holds. A file the inventory skips (ignored,
 * binary, deleted) stays as the inventory says. */
static void apply_buffers(struct repo *r, int all)
{
    for (size_t i = 0; i < r->n_ubufs; i++) {
        const struct ctxd_buffer *ub = &r->ubufs[i];
        int hit = all;
        for (size_t j = 0; j < r->n_applying && !hit; j++)
            hit = r->applying[j] && strcmp(r->applying[j], ub->path) == 0;
        struct repo_file *f = hit ? repo_snapshot_find(r->snap, ub->path) : NULL;
        if (!f || f->skip != REPO_SKIP_NONE)
            continue;
        char *t = malloc(ub->len + 1);
        if (!t)
            continue;
        memcpy(t, ub->text, ub->len + 1);
        enum repo_lang lang = repo_lang_detect(f->path, t, ub->len);
        struct repo_symbol *syms = NULL;
        size_t ns = 0;
        bool se = false;
        struct ctx_err e = {0};
        /* slot 0: nothing else uses this snapshot's symbolizer while the update work runs */
        int rc = repo_symbols_extract(r->snap->symbolizer, 0, lang, t, ub->len, &syms, &ns, &se, &e);
        if (rc == CTX_EUNSUPPORTED)
            rc = repo_symbols_extract(r->snap->symbolizer, 0, REPO_LANG_NONE, t, ub->len, &syms, &ns, &se, &e);
        if (rc) {
            CTX_WARN("%s: the unsaved buffer of %s is not shown: %s", r->root, ub->path, e.msg);
            free(t);
            free(syms);
            continue;
        }
        free(f->text);
        free(f->syms);
        f->text = t;
        f->len = ub->len;
        f->size = ub->len;
        f->hash = repo_hash64(t, ub->len);
        f->lang = lang;
        f->not_utf8 = false;
        f->syms = syms;
        f->nsyms = ns;
        f->ndefs = 0;
        for (size_t k = 0; k < ns; k++)
            f->ndefs += syms[k].is_def;
        f->syntax_errors = se;
        r->snap->ranked = false;
    }
}

/* Buffer edits whose debounce ran out (or that a question or job needs now) take the live-edit
 * path, as changed files do. */
static void flush_buffers(struct repo *r)
{
    if (!r->n_buf_dirty || !r->root || r->rs->closing || r->phase == PH_INGESTING || r->phase == PH_FAILED)
        return;
    char **v = r->buf_dirty;
    size_t n = r->n_buf_dirty;
    r->buf_dirty = NULL;
    r->n_buf_dirty = 0;
    on_change(r, (const char *const *)v, n);
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static void on_buf_timer(uv_timer_t *t)
{
    struct ctxd_repos *rs = t->data;
    for (struct repo *r = rs->list; r; r = r->next)
        flush_buffers(r);
}

/* `abs` changed its shown text: after the debounce it goes through the live-edit path. */
static void buf_touch(struct repo *r, const char *abs)
{
    struct ctxd_repos *rs = r->rs;
    const char *rel = buf_rel(r, abs);
    if (rel) {
        int dup = 0;
        for (size_t i = 0; i < r->n_buf_dirty && !dup; i++)
            dup = strcmp(r->buf_dirty[i], rel) == 0;
        char **nv = dup ? NULL : realloc(r->buf_dirty, (r->n_buf_dirty + 1) * sizeof *nv);
        if (nv) {
            r->buf_dirty = nv;
            if ((nv[r->n_buf_dirty] = strdup(rel)))
                r->n_buf_dirty++;
        }
    }
    if (rs->closing)
        return;
    if (!rs->buf_timer_init) {
        uv_timer_init(rs->d->loop, &rs->buf_timer);
        rs->buf_timer.data = rs;
        rs->buf_timer_init = 1;
    }
    int ms = rs->o.debounce_ms > 0 ? rs->o.debounce_ms : 200;
    uv_timer_start(&rs->buf_timer, on_buf_timer, (uint64_t)ms, 0);
}

static void drop_client_buffers(struct repo *r, uint64_t client)
{
    struct rbuf **bp = &r->bufs;
    while (*bp) {
        struct rbuf *b = *bp;
        if (b->client == client) {
            *bp = b->next;
            buf_touch(r, b->abs);
            free(b->abs);
            free(b->text);
            free(b);
        } else {
            bp = &b->next;
        }
    }
}

/* Offset of the first byte that is not valid UTF-8 (overlong forms and surrogates included), or
 * len when all of it is. */
static size_t utf8_invalid_at(const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        unsigned c = s[i], cp, min;
        size_t n;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF)
            n = 1, cp = c & 0x1F, min = 0x80;
        else if ((c & 0xF0) == 0xE0)
            n = 2, cp = c & 0x0F, min = 0x800;
        else if (c >= 0xF0 && c <= 0xF4)
            n = 3, cp = c & 0x07, min = 0x10000;
        else
            return i;
        if (len - i <= n)
            return i;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return i;
            cp = (cp << 6) | (s[i + k] & 0x3Fu);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return i;
        i += n + 1;
    }
    return len;
}

static void fail_code(struct ctxd_call *call, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fail_code(struct ctxd_call *call, int code, const char *fmt, ...)
{
    struct ctx_err e = {0};
    char msg[CTX_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    ctx_err_set(&e, code, "%s", msg);
    ctxd_call_fail_err(call, &e);
}

/* The buffer's file (it need not exist yet: its directory must) and the open repository holding
 * it; fails the call otherwise. */
static struct repo *buffer_target(struct ctxd_call *call, struct ctxd_repos *rs, const cJSON *params, char *abs)
{
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(params, "path");
    if (!cJSON_IsString(p) || p->valuestring[0] != '/') {
        ctxd_call_fail(call, CTXD_RPC_INVALID_PARAMS, "\"path\" (an absolute file path) is required", NULL);
        return NULL;
    }
    const char *path = p->valuestring;
    if (!realpath(path, abs)) {
        /* a file the editor has not saved yet: its directory must exist */
        char dir[PATH_MAX];
        const char *slash = strrchr(path, '/');
        size_t dl = (size_t)(slash - path);
        if (errno != ENOENT || dl >= sizeof dir || !slash[1]) {
            fail_code(call, CTX_ENOTFOUND, "buffer path %s: %s", path, strerror(errno));
            return NULL;
        }
        memcpy(dir, path, dl);
        dir[dl ? dl : 1] = 0;
        if (!dl)
            dir[0] = '/';
        char rdir[PATH_MAX];
        if (!realpath(dir, rdir) || strlen(rdir) + strlen(slash) >= PATH_MAX) {
            fail_code(call, CTX_ENOTFOUND, "buffer path %s: %s", path, strerror(errno ? errno : ENAMETOOLONG));
            return NULL;
        }
        size_t rl = strcmp(rdir, "/") ? strlen(rdir) : 0, sl = strlen(slash);
        memcpy(abs, rdir, rl);
        memcpy(abs + rl, slash, sl + 1);
    }
    struct stat st;
    if (stat(abs, &st) == 0 && !S_ISREG(st.st_mode)) {
        fail_code(call, CTX_EINVAL, "buffer path %s is not a regular file", path);
        return NULL;
    }
    for (struct repo *r = rs->list; r; r = r->next) {
        const char *root = r->root ? r->root : r->req_path;
        size_t n = strlen(root);
        if (r->phase == PH_FAILED || strncmp(abs, root, n) != 0 || abs[n] != '/')
            continue;
        const char *rel = abs + n + 1;
        if (strcmp(rel, ".git") == 0 || strncmp(rel, ".git/", 5) == 0) {
            fail_code(call, CTX_EINVAL, "buffer path %s is inside the repository's .git directory", path);
            return NULL;
        }
        return r;
    }
    fail_code(call, CTX_ENOTFOUND, "no open repository contains %s (repo.open opens one)", path);
    return NULL;
}

static size_t client_buffers(const struct repo *r, uint64_t client)
{
    size_t n = 0;
    for (const struct rbuf *b = r->bufs; b; b = b->next)
        n += b->client == client;
    return n;
}

/* Buffers one connection may hold in one repository (each at most the file size cap). */
#define MAX_BUFFERS 256

static void m_buffer_update(struct ctxd_call *call, const cJSON *params, void *ud)
{
    struct ctxd_repos *rs = ud;
    static const char *const allowed[] = {"path", "text", "version", NULL};
    char abs[PATH_MAX];
    long long version = 0;
    if (ctxd_call_check_params(call, params, allowed) ||
        int_param(call, params, "version", -9007199254740991LL, 9007199254740991LL, &version))
        return;
    const cJSON *text = cJSON_GetObjectItemCaseSensitive(params, "text");
    if (!cJSON_IsString(text)) {
        ctxd_call_fail(call, CTXD_RPC_INVALID_PARAMS, "\"text\" (the buffer's full text, a string) is required", NULL);
        return;
    }
    struct repo *r = buffer_target(call, rs, params, abs);
    if (!r)
        return;
    size_t len = strlen(text->valuestring);
    struct repo_options ro;
    repo_options_default(&ro);
    /* the update work may be rewriting the snapshot: its options are the defaults it was opened with */
    uint64_t cap = ro.max_file_size;
    if (len > cap) {
        fail_code(call, CTX_ERANGE,
                  "the buffer of %s is %zu bytes, over the repository's file size cap of %llu bytes "
                  "(such a file is left out of the repository)",
                  abs, len, (unsigned long long)cap);
        return;
    }
    size_t bad = utf8_invalid_at((const unsigned char *)text->valuestring, len);
    if (bad < len) {
        char msg[PATH_MAX + 96];
        snprintf(msg, sizeof msg, "\"text\" of %s is not valid UTF-8 at byte %zu", abs, bad);
        ctxd_call_fail(call, CTXD_RPC_INVALID_PARAMS, msg, NULL);
        return;
    }
    uint64_t client = ctxd_call_client_id(call);
    struct rbuf *shown = r->bufs; /* the buffer of this file the prompt shows now */
    while (shown && strcmp(shown->abs, abs) != 0)
        shown = shown->next;
    struct rbuf **bp = &r->bufs, *b = NULL;
    while (*bp && !((*bp)->client == client && strcmp((*bp)->abs, abs) == 0))
        bp = &(*bp)->next;
    if (*bp) {
        b = *bp;
        if (cJSON_GetObjectItemCaseSensitive(params, "version") && version < b->version) {
            char msg[PATH_MAX + 128];
            snprintf(msg, sizeof msg, "\"version\" %lld of %s is older than the buffer's %lld", version, abs,
                     b->version);
            ctxd_call_fail(call, CTXD_RPC_INVALID_PARAMS, msg, NULL);
            return;
        }
        *bp = b->next; /* to the front: the newest buffer of a file is the one shown */
    } else if (client_buffers(r, client) >= MAX_BUFFERS) {
        fail_code(call, CTX_EBUSY, "this connection already holds %d unsaved buffers in %s; close some first",
                  MAX_BUFFERS, r->root ? r->root : r->req_path);
        return;
    }
    int same = b && b == shown && b->len == len && memcmp(b->text, text->valuestring, len) == 0;
    char *t = malloc(len + 1);
    if (!t || (!b && !(b = calloc(1, sizeof *b))) || (!b->abs && !(b->abs = strdup(abs)))) {
        free(t);
        if (b) {
            if (b->abs)
                buf_touch(r, b->abs); /* dropped: the file shows its disk text again */
            free(b->abs);
            free(b->text);
            free(b);
        }
        fail_code(call, CTX_ENOMEM, "out of memory");
        return;
    }
    memcpy(t, text->valuestring, len + 1);
    free(b->text);
    b->text = t;
    b->len = len;
    b->client = client;
    b->version = version;
    b->next = r->bufs;
    r->bufs = b;
    if (!same) /* the text shown already: nothing to re-lay out */
        buf_touch(r, abs);
    cJSON *res = cJSON_CreateObject();
    cJSON_AddStringToObject(res, "root", r->root ? r->root : r->req_path);
    const char *rel = buf_rel(r, abs);
    cJSON_AddStringToObject(res, "path", rel ? rel : abs);
    cJSON_AddNumberToObject(res, "version", (double)version);
    cJSON_AddNumberToObject(res, "bytes", (double)len);
    cJSON_AddNumberToObject(res, "client", (double)client);
    cJSON_AddNumberToObject(res, "buffers", (double)client_buffers(r, client));
    ctxd_call_reply(call, res);
}

static void m_buffer_close(struct ctxd_call *call, const cJSON *params, void *ud)
{
    struct ctxd_repos *rs = ud;
    static const char *const allowed[] = {"path", NULL};
    char abs[PATH_MAX];
    if (ctxd_call_check_params(call, params, allowed))
        return;
    struct repo *r = buffer_target(call, rs, params, abs);
    if (!r)
        return;
    uint64_t client = ctxd_call_client_id(call);
    int closed = 0;
    for (struct rbuf **bp = &r->bufs; *bp; bp = &(*bp)->next) {
        struct rbuf *b = *bp;
        if (b->client == client && strcmp(b->abs, abs) == 0) {
            *bp = b->next;
            buf_touch(r, abs); /* the file shows its disk text again (or another client's buffer) */
            free(b->abs);
            free(b->text);
            free(b);
            closed = 1;
            break;
        }
    }
    cJSON *res = cJSON_CreateObject();
    cJSON_AddStringToObject(res, "root", r->root ? r->root : r->req_path);
    const char *rel = buf_rel(r, abs);
    cJSON_AddStringToObject(res, "path", rel ? rel : abs);
    cJSON_AddBoolToObject(res, "closed", closed);
    cJSON_AddNumberToObject(res, "buffers", (double)client_buffers(r, client));
    ctxd_call_reply(call, res);
}

/* A client left: drop its waiting calls and questions; the scheduler cancels its running job. */
static void on_disconnect(void *ud, uint64_t client)
{
    struct ctxd *d = ud;
    if (!d->repos)
        return;
    for (struct repo *r = d->repos->list; r; r = r->next) {
        struct waiter **wp = &r->waiters;
        while (*wp) {
            struct waiter *w = *wp;
            if (w->client == client) {
                *wp = w->next;
                ctxd_call_fail(w->call, CTXD_RPC_CANCELLED, "client disconnected", NULL);
                free(w);
            } else {
                wp = &w->next;
            }
        }
        struct ask **ap = &r->asks;
        while (*ap) {
            struct ask *a = *ap;
            if (a->client == client) {
                *ap = a->next;
                ctxd_call_fail(a->call, CTXD_RPC_CANCELLED, "client disconnected", NULL);
                free_ask(a);
            } else {
                ap = &a->next;
            }
        }
        drop_client_buffers(r, client); /* as if it had closed them */
    }
    ctxd_sched_cancel_client(d->sched, client);
}

static int preload_run(struct ctxd_job_ctx *ctx, void *ud)
{
    struct ctxd_repos *rs = ud;
    struct ctx_err e = {0};
    if (ctxd_engine_load(rs->d->engine, &e))
        return ctxd_job_fail(ctx, e.code, "%s", e.msg);
    return CTXD_JOB_DONE;
}

static void preload_done(void *ud, int status, const char *message)
{
    (void)ud;
    if (status && status != CTX_ECANCELED)
        CTX_ERROR("%s", message);
    else if (!status)
        CTX_INFO("model loaded");
}

static const struct ctxd_job_ops preload_ops = {preload_run, preload_done};

int ctxd_repos_preload(struct ctxd *d, struct ctx_err *e)
{
    struct ctxd_repos *rs = d->repos;
    int rc = ctxd_engine_load_tokenizer(d->engine, e);
    if (!rc)
        rc = ctxd_sched_submit(d->sched, CTXD_PRIO_BACKGROUND, 0, &preload_ops, rs, NULL, e);
    return rc;
}

int ctxd_repos_init(struct ctxd *d, const struct ctxd_repos_opts *o, struct ctx_err *e)
{
    struct ctxd_repos *rs = calloc(1, sizeof *rs);
    if (!rs)
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    rs->d = d;
    rs->o = *o;
    if (!rs->o.budget)
        rs->o.budget = REPO_BUDGET_DEFAULT;
    /* Slices end at multiples of 128 so that checkpoints can sit there. */
    rs->o.chunk = rs->o.chunk <= 0 ? 256 : (rs->o.chunk + 127) / 128 * 128;
    rs->o.checkpoint_every = rs->o.checkpoint_every <= 0 ? 4096 : (rs->o.checkpoint_every + 127) / 128 * 128;
    if (!rs->o.cache_budget)
        rs->o.cache_budget = 20ull << 30;
    if (rs->o.overlay_threshold < 0)
        rs->o.overlay_threshold = 0;
    else if (!rs->o.overlay_threshold)
        rs->o.overlay_threshold = 8192;
    if (rs->o.rebase_idle_ms <= 0)
        rs->o.rebase_idle_ms = 30000;
    rs->system = strdup(o->system ? o->system : DEFAULT_SYSTEM);
    rs->tools = cJSON_Parse(agent_tools_schema_text());
    rs->pool = ctx_pool_new(0, e);
    if (!rs->system || !rs->pool || !rs->tools) {
        free(rs->system);
        cJSON_Delete(rs->tools);
        ctx_pool_free(rs->pool);
        free(rs);
        return e && e->code ? e->code : ctx_err_set(e, CTX_ENOMEM, "out of memory");
    }
    d->repos = rs;
    ctxd_server_on_disconnect(d->server, on_disconnect, d);
    int rc = ctxd_server_register(d->server, "repo.open", m_open, rs);
    if (!rc)
        rc = ctxd_server_register(d->server, "repo.status", m_status, rs);
    if (!rc)
        rc = ctxd_server_register(d->server, "repo.list", m_list, rs);
    if (!rc)
        rc = ctxd_server_register(d->server, "repo.close", m_close, rs);
    if (!rc)
        rc = ctxd_server_register(d->server, "repo.ask", m_ask, rs);
    if (!rc)
        rc = ctxd_server_register(d->server, "buffer.update", m_buffer_update, rs);
    if (!rc)
        rc = ctxd_server_register(d->server, "buffer.close", m_buffer_close, rs);
    if (!rc)
        rc = ctxd_server_register(d->server, "cache.status", m_cache_status, rs);
    if (!rc)
        rc = ctxd_server_register(d->server, "cache.clear", m_cache_clear, rs);
    return rc ? ctx_err_set(e, rc, "registering repo methods") : 0;
}

void ctxd_repos_free(struct ctxd *d)
{
    struct ctxd_repos *rs = d->repos;
    if (!rs)
        return;
    rs->closing = 1;
    if (rs->buf_timer_init) {
        uv_close((uv_handle_t *)&rs->buf_timer, NULL);
        rs->buf_timer_init = 0;
    }
    struct ctx_err e = {0};
    ctx_err_set(&e, CTX_ECANCELED, "ctxd is shutting down");
    for (struct repo *r = rs->list; r; r = r->next) {
        fail_waiters(r, &e);
        fail_asks(r, &e);
        ctxd_watch_free(r->watch); /* its handles close as the loop runs down */
        r->watch = NULL;
        if (r->idle_timer_init) {
            uv_close((uv_handle_t *)&r->idle_timer, NULL);
            r->idle_timer_init = 0;
        }
    }
}

/* After the scheduler has stopped (no job holds a repository) and the loop has run dry. */
void ctxd_repos_release(struct ctxd *d)
{
    struct ctxd_repos *rs = d->repos;
    if (!rs)
        return;
    int busy = 0;
    while (rs->list) {
        struct repo *r = rs->list;
        rs->list = r->next;
        if (r->phase == PH_INGESTING || r->phase == PH_UPDATING) {
            busy = 1; /* a pool thread may still be ingesting it; the process is exiting */
            continue;
        }
        free_repo(r);
        free(r);
    }
    if (!busy)
        ctx_pool_free(rs->pool);
    store_kv_close(rs->kv);
    store_kv_close(rs->kv_loop);
    free(rs->system);
    cJSON_Delete(rs->tools);
    free(rs);
    d->repos = NULL;
}
