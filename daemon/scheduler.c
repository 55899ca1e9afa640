#include "scheduler.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum job_state { JOB_QUEUED, JOB_RUNNING, JOB_FINISHED };

struct ctxd_job {
    struct ctxd_job_ops ops;
    void *ud;
    enum ctxd_prio prio;
    uint64_t client;
    enum job_state state;
    int started;      /* run() has been called */
    atomic_int cancelled;
    int status;
    char msg[CTX_ERR_MSG_MAX];
    struct ctxd_job *next;
    struct ctxd_sched *s;
};

struct msg {
    struct msg *next;
    void (*fn)(void *);
    void *ud;
    struct ctxd_job *done; /* non-NULL: deliver this job's completion */
};

struct client_tick {
    uint64_t client, tick;
};

#define MAX_CLIENT_TICKS 1024

struct ctxd_sched {
    uv_loop_t *loop;
    uv_async_t async;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cv;
    int stop;
    int max_queued;
    struct ctxd_job *queue[CTXD_PRIO_COUNT];
    int queued[CTXD_PRIO_COUNT];
    struct ctxd_job *running;
    struct msg *msgs, *msgs_tail;
    struct client_tick ticks[MAX_CLIENT_TICKS];
    int n_ticks;
    uint64_t tick;
    uint64_t completed, cancelled, failed, slices;
    int outstanding;          /* loop thread: submitted jobs whose done() has not run */
};

/* Caller holds the lock. */
static void push_msg(struct ctxd_sched *s, struct msg *m)
{
    m->next = NULL;
    if (s->msgs_tail)
        s->msgs_tail->next = m;
    else
        s->msgs = m;
    s->msgs_tail = m;
}

static int finish_locked(struct ctxd_sched *s, struct ctxd_job *j, int status)
{
    struct msg *m = calloc(1, sizeof *m);
    if (!m)
        return CTX_ENOMEM;
    j->state = JOB_FINISHED;
    j->status = status;
    if (status == CTX_ECANCELED && !j->msg[0])
        snprintf(j->msg, sizeof j->msg, "cancelled");
    m->done = j;
    push_msg(s, m);
    return 0;
}

static uint64_t *client_tick(struct ctxd_sched *s, uint64_t client)
{
    for (int i = 0; i < s->n_ticks; i++)
        if (s->ticks[i].client == client)
            return &s->ticks[i].tick;
    return NULL;
}

static void served(struct ctxd_sched *s, uint64_t client)
{
    uint64_t *t = client_tick(s, client);
    if (!t) {
        int slot = s->n_ticks;
        if (slot == MAX_CLIENT_TICKS) { /* forget the client served longest ago */
            slot = 0;
            for (int i = 1; i < s->n_ticks; i++)
                if (s->ticks[i].tick < s->ticks[slot].tick)
                    slot = i;
        } else {
            s->n_ticks++;
        }
        s->ticks[slot].client = client;
        t = &s->ticks[slot].tick;
    }
    *t = ++s->tick;
}

/* The highest priority with work; within it the job (first in queue order) of the client that
 * was served longest ago. Caller holds the lock. */
static struct ctxd_job *pick(struct ctxd_sched *s)
{
    for (int p = 0; p < CTXD_PRIO_COUNT; p++) {
        struct ctxd_job *best = NULL, *best_prev = NULL, *prev = NULL;
        uint64_t best_tick = UINT64_MAX;
        for (struct ctxd_job *j = s->queue[p]; j; prev = j, j = j->next) {
            uint64_t *t = client_tick(s, j->client);
            uint64_t tick = t ? *t : 0;
            if (tick < best_tick) {
                best = j;
                best_prev = prev;
                best_tick = tick;
            }
        }
        if (best) {
            if (best_prev)
                best_prev->next = best->next;
            else
                s->queue[p] = best->next;
            best->next = NULL;
            s->queued[p]--;
            return best;
        }
    }
    return NULL;
}

static void enqueue(struct ctxd_sched *s, struct ctxd_job *j)
{
    struct ctxd_job **pp = &s->queue[j->prio];
    while (*pp)
        pp = &(*pp)->next;
    *pp = j;
    j->next = NULL;
    j->state = JOB_QUEUED;
    s->queued[j->prio]++;
}

/* A started job that must see its cancellation (finish_when_cancelled): never dropped. */
static int sticky(const struct ctxd_job *j)
{
    return j->ops.finish_when_cancelled && j->started;
}

/* Cancel a queued job: dropped (done() with CTX_ECANCELED), or, when sticky, left queued to run
 * once more. Returns whether it was dropped. Caller holds the lock and has unlinked nothing. */
static int cancel_queued_locked(struct ctxd_sched *s, struct ctxd_job *j)
{
    atomic_store(&j->cancelled, 1);
    if (sticky(j)) {
        pthread_cond_signal(&s->cv);
        return 0;
    }
    finish_locked(s, j, CTX_ECANCELED);
    return 1;
}

static int any_queued(const struct ctxd_sched *s)
{
    for (int p = 0; p < CTXD_PRIO_COUNT; p++)
        if (s->queue[p])
            return 1;
    return 0;
}

static void *engine_thread(void *arg)
{
    struct ctxd_sched *s = arg;
    pthread_mutex_lock(&s->lock);
    /* after stop, only sticky jobs are left in the queues: they run once more to finish */
    while (!s->stop || any_queued(s)) {
        struct ctxd_job *j = pick(s);
        if (!j) {
            pthread_cond_wait(&s->cv, &s->lock);
            continue;
        }
        j->state = JOB_RUNNING;
        s->running = j;
        served(s, j->client);
        int must_run = sticky(j);
        j->started = 1;
        const int cancelled_before = atomic_load(&j->cancelled);
        pthread_mutex_unlock(&s->lock);

        int rc = cancelled_before && !must_run ? CTX_ECANCELED : j->ops.run((struct ctxd_job_ctx *)j, j->ud);

        pthread_mutex_lock(&s->lock);
        s->running = NULL;
        s->slices++;
        /* A sticky job cancelled while this slice ran may have yielded without seeing it (it looked
         * before the flag was set): it runs once more to see it, as when cancelled between slices.
         * Finishing it here would call done() while it still holds what it must release (the agent's
         * thread, which went on to post its events after the reply). */
        const int late = sticky(j) && !cancelled_before && atomic_load(&j->cancelled);
        if (rc == CTXD_JOB_YIELD && ((!atomic_load(&j->cancelled) && !s->stop) || late)) {
            enqueue(s, j);
            continue;
        }
        if (rc == CTXD_JOB_YIELD || (rc == 0 && atomic_load(&j->cancelled)))
            rc = CTX_ECANCELED;
        if (rc > 0)
            rc = CTX_EINTERNAL;
        finish_locked(s, j, rc);
        uv_async_send(&s->async);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* Loop thread: deliver posted work and completions in order. */
static void drain(struct ctxd_sched *s)
{
    pthread_mutex_lock(&s->lock);
    struct msg *m = s->msgs;
    s->msgs = s->msgs_tail = NULL;
    pthread_mutex_unlock(&s->lock);
    while (m) {
        struct msg *next = m->next;
        if (m->done) {
            struct ctxd_job *j = m->done;
            if (j->status == 0)
                s->completed++;
            else if (j->status == CTX_ECANCELED)
                s->cancelled++;
            else
                s->failed++;
            j->ops.done(j->ud, j->status, j->msg);
            free(j);
            if (--s->outstanding == 0 && !uv_is_closing((uv_handle_t *)&s->async))
                uv_unref((uv_handle_t *)&s->async);
        } else {
            m->fn(m->ud);
        }
        free(m);
        m = next;
    }
}

static void on_async(uv_async_t *a)
{
    drain(a->data);
}

int ctxd_sched_new(uv_loop_t *loop, const struct ctxd_sched_opts *opts, struct ctxd_sched **out,
                   struct ctx_err *e)
{
    *out = NULL;
    struct ctxd_sched *s = calloc(1, sizeof *s);
    if (!s)
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    s->loop = loop;
    s->max_queued = opts && opts->max_queued > 0 ? opts->max_queued : 64;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cv, NULL);
    uv_async_init(loop, &s->async, on_async);
    s->async.data = s;
    /* Only outstanding jobs keep the loop alive (see submit and drain). */
    uv_unref((uv_handle_t *)&s->async);
    int rc = pthread_create(&s->thread, NULL, engine_thread, s);
    if (rc != 0) {
        uv_close((uv_handle_t *)&s->async, NULL);
        uv_run(loop, UV_RUN_NOWAIT);
        pthread_mutex_destroy(&s->lock);
        pthread_cond_destroy(&s->cv);
        free(s);
        return ctx_err_errno(e, CTX_EIO, rc, "starting the engine thread");
    }
    *out = s;
    return 0;
}

static void on_async_closed(uv_handle_t *h)
{
    free(h->data);
}

void ctxd_sched_free(struct ctxd_sched *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->lock);
    s->stop = 1;
    for (int p = 0; p < CTXD_PRIO_COUNT; p++) {
        struct ctxd_job **pp = &s->queue[p];
        while (*pp) {
            struct ctxd_job *j = *pp;
            if (sticky(j)) {
                atomic_store(&j->cancelled, 1);
                pp = &j->next;
                continue;
            }
            *pp = j->next;
            s->queued[p]--;
            atomic_store(&j->cancelled, 1);
            finish_locked(s, j, CTX_ECANCELED);
        }
    }
    if (s->running)
        atomic_store(&s->running->cancelled, 1);
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->lock);
    pthread_join(s->thread, NULL);
    /* The running job (if any) finished as cancelled; deliver everything now. */
    drain(s);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->cv);
    s->async.data = s;
    uv_close((uv_handle_t *)&s->async, on_async_closed);
}

int ctxd_sched_submit(struct ctxd_sched *s, enum ctxd_prio prio, uint64_t client,
                      const struct ctxd_job_ops *ops, void *ud, struct ctxd_job **out,
                      struct ctx_err *e)
{
    if ((unsigned)prio >= CTXD_PRIO_COUNT || !ops || !ops->run || !ops->done)
        return ctx_err_set(e, CTX_EINVAL, "invalid job");
    struct ctxd_job *j = calloc(1, sizeof *j);
    if (!j)
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    j->ops = *ops;
    j->ud = ud;
    j->prio = prio;
    j->client = client;
    j->s = s;
    pthread_mutex_lock(&s->lock);
    if (s->stop || s->queued[prio] >= s->max_queued) {
        int stopping = s->stop;
        pthread_mutex_unlock(&s->lock);
        free(j);
        if (stopping)
            return ctx_err_set(e, CTX_ECANCELED, "the engine is shutting down");
        static const char *names[] = {"interactive", "completion", "background"};
        return ctx_err_set(e, CTX_EBUSY, "the engine's %s queue is full (%d jobs waiting)",
                           names[prio], s->max_queued);
    }
    enqueue(s, j);
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->lock);
    if (s->outstanding++ == 0)
        uv_ref((uv_handle_t *)&s->async);
    if (out)
        *out = j;
    return 0;
}

static int unqueue_locked(struct ctxd_sched *s, struct ctxd_job *j)
{
    struct ctxd_job **pp = &s->queue[j->prio];
    while (*pp && *pp != j)
        pp = &(*pp)->next;
    if (!*pp)
        return 0;
    *pp = j->next;
    s->queued[j->prio]--;
    return 1;
}

void ctxd_sched_cancel(struct ctxd_sched *s, struct ctxd_job *j)
{
    pthread_mutex_lock(&s->lock);
    if (j->state == JOB_QUEUED && sticky(j)) {
        cancel_queued_locked(s, j);
    } else if (j->state == JOB_QUEUED && unqueue_locked(s, j)) {
        atomic_store(&j->cancelled, 1);
        finish_locked(s, j, CTX_ECANCELED);
        uv_async_send(&s->async);
    } else if (j->state == JOB_RUNNING) {
        atomic_store(&j->cancelled, 1);
    }
    pthread_mutex_unlock(&s->lock);
}

void ctxd_sched_cancel_client(struct ctxd_sched *s, uint64_t client)
{
    pthread_mutex_lock(&s->lock);
    for (int p = 0; p < CTXD_PRIO_COUNT; p++) {
        struct ctxd_job **pp = &s->queue[p];
        while (*pp) {
            struct ctxd_job *j = *pp;
            if (j->client == client && !sticky(j)) {
                *pp = j->next;
                s->queued[p]--;
                cancel_queued_locked(s, j);
            } else {
                if (j->client == client)
                    cancel_queued_locked(s, j); /* stays queued: runs once more */
                pp = &j->next;
            }
        }
    }
    if (s->running && s->running->client == client)
        atomic_store(&s->running->cancelled, 1);
    uv_async_send(&s->async);
    pthread_mutex_unlock(&s->lock);
}

void ctxd_sched_cancel_all(struct ctxd_sched *s)
{
    pthread_mutex_lock(&s->lock);
    for (int p = 0; p < CTXD_PRIO_COUNT; p++) {
        struct ctxd_job **pp = &s->queue[p];
        while (*pp) {
            struct ctxd_job *j = *pp;
            if (sticky(j)) {
                cancel_queued_locked(s, j);
                pp = &j->next;
                continue;
            }
            *pp = j->next;
            s->queued[p]--;
            cancel_queued_locked(s, j);
        }
    }
    if (s->running)
        atomic_store(&s->running->cancelled, 1);
    uv_async_send(&s->async);
    pthread_mutex_unlock(&s->lock);
}

void ctxd_sched_stats(struct ctxd_sched *s, struct ctxd_sched_stats *st)
{
    pthread_mutex_lock(&s->lock);
    for (int p = 0; p < CTXD_PRIO_COUNT; p++)
        st->queued[p] = s->queued[p];
    st->running = s->running != NULL;
    st->slices = s->slices;
    pthread_mutex_unlock(&s->lock);
    st->completed = s->completed; /* loop-thread counters */
    st->cancelled = s->cancelled;
    st->failed = s->failed;
}

int ctxd_job_cancelled(const struct ctxd_job_ctx *ctx)
{
    return atomic_load(&((const struct ctxd_job *)ctx)->cancelled);
}

const atomic_int *ctxd_job_cancel_flag(const struct ctxd_job_ctx *ctx)
{
    return &((const struct ctxd_job *)ctx)->cancelled;
}

int ctxd_job_post(struct ctxd_job_ctx *ctx, void (*fn)(void *ud), void *ud)
{
    struct ctxd_job *j = (struct ctxd_job *)ctx;
    struct msg *m = calloc(1, sizeof *m);
    if (!m)
        return CTX_ENOMEM;
    m->fn = fn;
    m->ud = ud;
    pthread_mutex_lock(&j->s->lock);
    push_msg(j->s, m);
    pthread_mutex_unlock(&j->s->lock);
    uv_async_send(&j->s->async);
    return 0;
}

int ctxd_job_fail(struct ctxd_job_ctx *ctx, int code, const char *fmt, ...)
{
    struct ctxd_job *j = (struct ctxd_job *)ctx;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(j->msg, sizeof j->msg, fmt, ap);
    va_end(ap);
    return code;
}
