#include "pool.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

/* Workers spin briefly on the generation counter before sleeping: a decode step issues hundreds of
 * small loops, and a condition-variable wake-up per loop would cost more than the loop itself. */
#define SPIN_ITERS 20000

struct ctx_pool {
    int n;                      /* threads including the caller */
    pthread_t *threads;
    pthread_mutex_t lock;       /* guards the sleep/wake handshake */
    pthread_cond_t wake;
    pthread_cond_t done_cv;
    pthread_mutex_t call_lock;  /* serialises callers */
    atomic_uint gen;            /* bumped per loop */
    atomic_int pending;         /* workers not yet finished with the current loop */
    atomic_size_t next;
    atomic_int stop;
    /* the current loop */
    size_t count, grain;
    void (*for_fn)(void *, size_t, int);
    void (*run_fn)(void *, int, int);
    void *ud;
};

struct worker_arg {
    struct ctx_pool *p;
    int tid;
};

int ctx_cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

static void do_work(struct ctx_pool *p, int tid)
{
    if (p->run_fn) {
        p->run_fn(p->ud, tid, p->n);
        return;
    }
    for (;;) {
        size_t i0 = atomic_fetch_add(&p->next, p->grain);
        if (i0 >= p->count)
            break;
        size_t i1 = i0 + p->grain < p->count ? i0 + p->grain : p->count;
        for (size_t i = i0; i < i1; i++)
            p->for_fn(p->ud, i, tid);
    }
}

static void *worker(void *arg)
{
    struct worker_arg wa = *(struct worker_arg *)arg;
    free(arg);
    struct ctx_pool *p = wa.p;
    unsigned seen = 0;
    for (;;) {
        unsigned g;
        int spins = 0;
        while ((g = atomic_load(&p->gen)) == seen && spins < SPIN_ITERS) {
            spins++;
            if ((spins & 63) == 0)
                sched_yield();
        }
        if (g == seen) {
            pthread_mutex_lock(&p->lock);
            while ((g = atomic_load(&p->gen)) == seen && !atomic_load(&p->stop))
                pthread_cond_wait(&p->wake, &p->lock);
            pthread_mutex_unlock(&p->lock);
        }
        if (atomic_load(&p->stop))
            return NULL;
        seen = g;
        do_work(p, wa.tid);
        if (atomic_fetch_sub(&p->pending, 1) == 1) {
            pthread_mutex_lock(&p->lock);
            pthread_cond_signal(&p->done_cv);
            pthread_mutex_unlock(&p->lock);
        }
    }
}

struct ctx_pool *ctx_pool_new(int nthreads, struct ctx_err *e)
{
    if (nthreads <= 0)
        nthreads = ctx_cpu_count();
    if (nthreads > 1024) {
        ctx_err_set(e, CTX_EINVAL, "thread count %d is over the limit of 1024", nthreads);
        return NULL;
    }
    struct ctx_pool *p = calloc(1, sizeof *p);
    if (!p) {
        ctx_err_set(e, CTX_ENOMEM, "out of memory for the thread pool");
        return NULL;
    }
    p->n = nthreads;
    pthread_mutex_init(&p->lock, NULL);
    pthread_mutex_init(&p->call_lock, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done_cv, NULL);
    p->threads = calloc((size_t)nthreads, sizeof *p->threads);
    if (!p->threads) {
        ctx_err_set(e, CTX_ENOMEM, "out of memory for the thread pool");
        free(p);
        return NULL;
    }
    for (int t = 1; t < nthreads; t++) {
        struct worker_arg *wa = malloc(sizeof *wa);
        if (wa) {
            wa->p = p;
            wa->tid = t;
        }
        int rc = wa ? pthread_create(&p->threads[t], NULL, worker, wa) : ENOMEM;
        if (rc != 0) {
            free(wa);
            p->n = t; /* free() joins the threads started so far */
            ctx_pool_free(p);
            ctx_err_errno(e, CTX_EIO, rc, "starting worker thread %d of %d", t, nthreads);
            return NULL;
        }
    }
    return p;
}

void ctx_pool_free(struct ctx_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    atomic_store(&p->stop, 1);
    atomic_fetch_add(&p->gen, 1);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    for (int t = 1; t < p->n; t++)
        pthread_join(p->threads[t], NULL);
    pthread_mutex_destroy(&p->lock);
    pthread_mutex_destroy(&p->call_lock);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->done_cv);
    free(p->threads);
    free(p);
}

int ctx_pool_size(const struct ctx_pool *p)
{
    return p ? p->n : 1;
}

static void dispatch(struct ctx_pool *p)
{
    if (p->n == 1) {
        do_work(p, 0);
        return;
    }
    atomic_store(&p->pending, p->n - 1);
    pthread_mutex_lock(&p->lock);
    atomic_fetch_add(&p->gen, 1);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    do_work(p, 0);
    int spins = 0;
    while (atomic_load(&p->pending) > 0 && spins < SPIN_ITERS) {
        spins++;
        if ((spins & 63) == 0)
            sched_yield();
    }
    if (atomic_load(&p->pending) > 0) {
        pthread_mutex_lock(&p->lock);
        while (atomic_load(&p->pending) > 0)
            pthread_cond_wait(&p->done_cv, &p->lock);
        pthread_mutex_unlock(&p->lock);
    }
}

void ctx_pool_for(struct ctx_pool *p, size_t n, size_t grain,
                  void (*fn)(void *ud, size_t i, int tid), void *ud)
{
    if (n == 0)
        return;
    if (grain == 0)
        grain = 1;
    if (!p || p->n == 1 || n <= grain) {
        for (size_t i = 0; i < n; i++)
            fn(ud, i, 0);
        return;
    }
    pthread_mutex_lock(&p->call_lock);
    p->count = n;
    p->grain = grain;
    p->for_fn = fn;
    p->run_fn = NULL;
    p->ud = ud;
    atomic_store(&p->next, 0);
    dispatch(p);
    pthread_mutex_unlock(&p->call_lock);
}

void ctx_pool_run(struct ctx_pool *p, void (*fn)(void *ud, int tid, int nthreads), void *ud)
{
    if (!p || p->n == 1) {
        fn(ud, 0, 1);
        return;
    }
    pthread_mutex_lock(&p->call_lock);
    p->for_fn = NULL;
    p->run_fn = fn;
    p->ud = ud;
    dispatch(p);
    pthread_mutex_unlock(&p->call_lock);
}
