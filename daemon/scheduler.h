/* The engine scheduler: model work runs on one engine thread, one job at a time, taken from a
 * priority queue (interactive decode > completion > background prefill). Long jobs run in slices
 * (run() returns CTXD_JOB_YIELD) so that a waiting interactive job gets the engine between two
 * slices; within a priority, clients are served round-robin. Queues are bounded: a full queue
 * refuses with CTX_EBUSY. Everything a job reports (progress, streamed text, completion) is
 * delivered on the loop thread, in the order the job posted it. */
#ifndef CTXD_SCHEDULER_H
#define CTXD_SCHEDULER_H

#include <stdatomic.h>
#include <stdint.h>
#include <uv.h>

#include "err.h"

enum ctxd_prio { CTXD_PRIO_INTERACTIVE = 0, CTXD_PRIO_COMPLETION = 1, CTXD_PRIO_BACKGROUND = 2 };
#define CTXD_PRIO_COUNT 3

#define CTXD_JOB_DONE 0
#define CTXD_JOB_YIELD 1 /* run() did one slice; call it again later */

struct ctxd_sched;
struct ctxd_job;     /* owned by the scheduler until done() has run */
struct ctxd_job_ctx; /* what run() sees on the engine thread */

struct ctxd_job_ops {
    /* Engine thread. Returns CTXD_JOB_DONE, CTXD_JOB_YIELD or a negative CTX_E* code (with a
     * message set through ctxd_job_fail). Should check ctxd_job_cancelled() at least once per
     * decode step. */
    int (*run)(struct ctxd_job_ctx *ctx, void *ud);
    /* Loop thread, exactly once: status is 0, a negative code (CTX_ECANCELED when cancelled
     * before or while running) and the message. */
    void (*done)(void *ud, int status, const char *message);
    /* Non-zero: once run() has been called, a cancellation never drops the job from the queue
     * (nor does shutdown): run() is called again, sees ctxd_job_cancelled() and must then finish
     * (a YIELD from a call that began cancelled counts as finishing; one from a call cancelled
     * while it ran is queued again, as it may not have seen the flag). For jobs that own resources
     * between slices (the agent's thread) and must release them before done(). */
    int finish_when_cancelled;
};

struct ctxd_sched_opts {
    int max_queued;   /* per priority; 0: 64 */
};

int ctxd_sched_new(uv_loop_t *loop, const struct ctxd_sched_opts *opts, struct ctxd_sched **out,
                   struct ctx_err *e);
/* Cancels everything queued or running (their done() runs with CTX_ECANCELED), stops the engine
 * thread and frees. Call on the loop thread; done() callbacks run inside this call; the loop must
 * run once more afterwards to release the handle. Outstanding jobs keep the loop alive, so a
 * shutdown cancels them first (ctxd_sched_cancel_all). */
void ctxd_sched_free(struct ctxd_sched *s);

/* Queue a job. `client` identifies the requester for round-robin fairness. *out (optional) is a
 * handle valid until done() has run. CTX_EBUSY when the priority's queue is full. */
int ctxd_sched_submit(struct ctxd_sched *s, enum ctxd_prio prio, uint64_t client,
                      const struct ctxd_job_ops *ops, void *ud, struct ctxd_job **out,
                      struct ctx_err *e);
/* Loop thread. A queued job is dropped at once (done() with CTX_ECANCELED, from the loop, not
 * inside this call); a running one sees ctxd_job_cancelled() become true. */
void ctxd_sched_cancel(struct ctxd_sched *s, struct ctxd_job *job);
/* Cancel everything queued or running (shutdown). */
void ctxd_sched_cancel_all(struct ctxd_sched *s);
/* Cancel every job of a client (it disconnected). */
void ctxd_sched_cancel_client(struct ctxd_sched *s, uint64_t client);

struct ctxd_sched_stats {
    int queued[CTXD_PRIO_COUNT];
    int running;               /* 0 or 1 */
    uint64_t completed, cancelled, failed, slices;
};
void ctxd_sched_stats(struct ctxd_sched *s, struct ctxd_sched_stats *st);

/* ---- engine-thread side ---- */
int ctxd_job_cancelled(const struct ctxd_job_ctx *ctx);
/* The flag itself, for libraries that poll an atomic_int (the remote backend). */
const atomic_int *ctxd_job_cancel_flag(const struct ctxd_job_ctx *ctx);
/* Run fn(ud) on the loop thread, after everything this job posted before (streaming output). */
int ctxd_job_post(struct ctxd_job_ctx *ctx, void (*fn)(void *ud), void *ud);
/* Set the failure message returned with a negative code. */
int ctxd_job_fail(struct ctxd_job_ctx *ctx, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
