/* A fixed pool of worker threads for data-parallel loops (the engine's matrix products, ingestion).
 * The calling thread takes part in every loop, so a pool of 1 runs everything inline. One loop runs
 * at a time per pool; callers from several threads are serialised. */
#ifndef CTX_POOL_H
#define CTX_POOL_H

#include <stddef.h>

#include "err.h"

struct ctx_pool;

/* nthreads <= 0: one per online CPU. */
struct ctx_pool *ctx_pool_new(int nthreads, struct ctx_err *e);
void ctx_pool_free(struct ctx_pool *p);
int ctx_pool_size(const struct ctx_pool *p);

/* fn(ud, i, tid) for every i in [0, n), spread dynamically in chunks of `grain` (>=1) indices;
 * tid is in [0, ctx_pool_size). Returns when every call has returned. */
void ctx_pool_for(struct ctx_pool *p, size_t n, size_t grain,
                  void (*fn)(void *ud, size_t i, int tid), void *ud);

/* fn(ud, tid, nthreads) once on each thread: for static partitions. */
void ctx_pool_run(struct ctx_pool *p, void (*fn)(void *ud, int tid, int nthreads), void *ud);

/* Number of online CPUs (at least 1). */
int ctx_cpu_count(void);

#endif
