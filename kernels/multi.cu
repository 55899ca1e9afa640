// The layer-split pipeline over several CUDA engines; see multi.h. Everything here is host code: the
// shards are cuda_engine instances over layer ranges, the boundary transfers and events are the
// engine's pipeline io (cuda_engine_forward_async), and this file owns the boundary buffers, the
// events and the order of the calls.
#include <cuda_runtime.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include <stdlib.h>
#include <string.h>

#include "cuda_gen.h"
#include "gemm.h" // cuda_device_count
#include "multi.h"

// Boundary k (1 <= k < n) sits between shard k-1 and shard k: two buffers on shard k's device (chunk
// c uses slot c % 2), `ready[slot]` recorded by shard k-1 once it has written the buffer (an event of
// its device), `freed[slot]` recorded by shard k once it has copied the buffer into its streams (an
// event of shard k's device).
struct boundary {
    float *buf[2];
    cudaEvent_t ready[2], freed[2];
    int peer; // peer access between the two devices is on (else the runtime stages through the host)
};

struct cuda_multi {
    struct inf_config c;
    int n, smax;
    long long max_ctx;
    int *dev;
    struct cuda_engine **g;
    struct boundary *b; // [n]: b[0] unused
    unsigned long long tick; // forward calls so far: the boundary slot of the next one is tick % 2
};

static int cu(struct ctx_err *e, cudaError_t rc, const char *what)
{
    if (rc == cudaSuccess)
        return 0;
    // out of device memory is CTX_ENOMEM, so that a caller can retry smaller (ctxd's chunk fallback)
    return ctx_err_set(e, rc == cudaErrorMemoryAllocation ? CTX_ENOMEM : CTX_EIO, "cuda multi: %s: %s", what,
                       cudaGetErrorString(rc));
}

// Restores the caller's current device when a function returns.
struct dev_restore {
    int prev;
    dev_restore() : prev(-1)
    {
        if (cudaGetDevice(&prev) != cudaSuccess)
            prev = -1;
    }
    ~dev_restore()
    {
        if (prev >= 0)
            cudaSetDevice(prev);
    }
};

extern "C" int cuda_multi_plan(const struct inf_config *c, long long max_ctx, int n, int *split, struct ctx_err *e)
{
    int L = c->num_hidden_layers;
    if (n < 1 || n > L)
        return ctx_err_set(e, CTX_EINVAL, "cuda multi: %d shards for %d layers (1..%d)", n, L, L);
    struct inf_tensor_spec *inv = NULL;
    int ni = 0, rc;
    if ((rc = inf_weights_inventory(c, &inv, &ni, e)))
        return rc;
    double *cost = (double *)calloc((size_t)L, sizeof(double)), *pre = (double *)calloc((size_t)L + 1, sizeof(double));
    double *best = (double *)malloc(sizeof(double) * (size_t)(n + 1) * (L + 1));
    int *cut = (int *)malloc(sizeof(int) * (size_t)(n + 1) * (L + 1));
    if (!cost || !pre || !best || !cut) {
        free(inv);
        free(cost);
        free(pre);
        free(best);
        free(cut);
        return ctx_err_set(e, CTX_ENOMEM, "cuda multi: out of memory");
    }
    for (int i = 0; i < ni; i++) {
        const struct inf_tensor_spec *t = &inv[i];
        if (t->layer >= L) // MTP: not part of the engine
            continue;
        double bytes = (double)inf_dtype_size(t->dtype);
        for (int d = 0; d < t->ndim; d++)
            bytes *= (double)t->shape[d];
        int l = t->layer >= 0 ? t->layer : !strcmp(t->name, "embed.weight") ? 0 : L - 1;
        cost[l] += bytes;
    }
    for (int l = 0; l < L; l++)
        pre[l + 1] = pre[l] + cost[l] + (double)cuda_engine_layer_state_bytes(c, l, max_ctx);
    // best[k][j]: the smallest largest shard of layers [0, j) in k shards; cut[k][j]: its last shard's start
#define B(k, j) best[(size_t)(k) * (L + 1) + (j)]
#define C(k, j) cut[(size_t)(k) * (L + 1) + (j)]
    for (int j = 0; j <= L; j++)
        B(1, j) = pre[j], C(1, j) = 0;
    for (int k = 2; k <= n; k++)
        for (int j = k; j <= L; j++) {
            B(k, j) = -1;
            for (int i = k - 1; i < j; i++) {
                double m = B(k - 1, i) > pre[j] - pre[i] ? B(k - 1, i) : pre[j] - pre[i];
                if (B(k, j) < 0 || m < B(k, j))
                    B(k, j) = m, C(k, j) = i;
            }
        }
    for (int k = n, j = L; k >= 1; k--) {
        int i = C(k, j);
        split[k - 1] = j - i;
        j = i;
    }
#undef B
#undef C
    free(inv);
    free(cost);
    free(pre);
    free(best);
    free(cut);
    return 0;
}

extern "C" void cuda_multi_free(struct cuda_multi *m)
{
    if (!m)
        return;
    dev_restore dr;
    for (int i = 0; m->g && i < m->n; i++)
        cuda_engine_free(m->g[i]); // synchronises its stream first: nothing below is in use after
    for (int k = 1; m->b && k < m->n; k++) {
        struct boundary *b = &m->b[k];
        for (int s = 0; s < 2; s++) {
            if (b->buf[s]) {
                cudaSetDevice(m->dev[k]);
                cudaFree(b->buf[s]);
            }
            if (b->freed[s]) {
                cudaSetDevice(m->dev[k]);
                cudaEventDestroy(b->freed[s]);
            }
            if (b->ready[s]) {
                cudaSetDevice(m->dev[k - 1]);
                cudaEventDestroy(b->ready[s]);
            }
        }
    }
    free(m->b);
    free(m->g);
    free(m->dev);
    free(m);
}

// Peer access from device `from` (current) to `to`, enabled once per process and pair: a second
// pipeline over the same pair would get cudaErrorPeerAccessAlreadyEnabled, which the runtime keeps as the
// last error (and compute-sanitizer reports); that code is still taken as success when two threads race.
static int peer_enable(int from, int to, struct ctx_err *e)
{
    static std::mutex mu;
    static unsigned char done[64][64];
    std::lock_guard<std::mutex> lock(mu);
    if (from < 64 && to < 64 && done[from][to])
        return 0;
    cudaError_t pe = cudaDeviceEnablePeerAccess(to, 0);
    if (pe == cudaErrorPeerAccessAlreadyEnabled) { // enabled outside this engine: fine
        cudaGetLastError();
        pe = cudaSuccess;
    }
    int rc = cu(e, pe, "cudaDeviceEnablePeerAccess");
    if (!rc && from < 64 && to < 64)
        done[from][to] = 1;
    return rc;
}

extern "C" int cuda_multi_new(const struct inf_weights *w, const struct cuda_engine_opts *o, const int *devices, int n,
                              const int *split, struct cuda_multi **out, struct ctx_err *e)
{
    *out = NULL;
    const struct inf_config *c = inf_weights_config(w);
    int L = c->num_hidden_layers, ndev = cuda_device_count();
    if (n < 1 || !devices)
        return ctx_err_set(e, CTX_EINVAL, "cuda multi: %d shards%s (at least 1, each with a device)", n,
                           devices ? "" : " and no device list");
    if (ndev < 1)
        return ctx_err_set(e, CTX_EUNSUPPORTED, "cuda multi: no CUDA device");
    for (int i = 0; i < n; i++)
        if (devices[i] < 0 || devices[i] >= ndev)
            return ctx_err_set(e, CTX_EINVAL, "cuda multi: devices[%d] = %d does not exist (%d devices)", i, devices[i],
                               ndev);
    if (n > L)
        return ctx_err_set(e, CTX_EINVAL, "cuda multi: %d shards for %d layers", n, L);
    struct cuda_engine_opts so;
    memset(&so, 0, sizeof so);
    if (o) {
        so.max_chunk = o->max_chunk;
        so.max_ctx = o->max_ctx;
    }
    // cuda_engine_new's defaults, needed here for the boundary buffers and the plan
    int smax = so.max_chunk > 0 ? so.max_chunk : 256;
    long long max_ctx = so.max_ctx > 0 ? so.max_ctx : 8192;
    int *cnt = (int *)malloc(sizeof(int) * (size_t)n);
    if (!cnt)
        return ctx_err_set(e, CTX_ENOMEM, "cuda multi: out of memory");
    int rc = 0;
    if (split) {
        long long sum = 0;
        for (int i = 0; i < n && !rc; i++) {
            if (split[i] < 1)
                rc = ctx_err_set(e, CTX_EINVAL, "cuda multi: split[%d] = %d (every shard needs a layer)", i, split[i]);
            sum += split[i];
            cnt[i] = split[i];
        }
        if (!rc && sum != L)
            rc = ctx_err_set(e, CTX_EINVAL, "cuda multi: the split covers %lld layers, the model has %d", sum, L);
    } else {
        rc = cuda_multi_plan(c, max_ctx, n, cnt, e);
    }
    if (rc) {
        free(cnt);
        return rc;
    }
    dev_restore dr;
    struct cuda_multi *m = (struct cuda_multi *)calloc(1, sizeof *m);
    if (m) {
        m->dev = (int *)malloc(sizeof(int) * (size_t)n);
        m->g = (struct cuda_engine **)calloc((size_t)n, sizeof *m->g);
        m->b = (struct boundary *)calloc((size_t)n, sizeof *m->b);
    }
    if (!m || !m->dev || !m->g || !m->b) {
        free(cnt);
        if (m) {
            free(m->dev);
            free(m->g);
            free(m->b);
            free(m);
        }
        return ctx_err_set(e, CTX_ENOMEM, "cuda multi: out of memory");
    }
    m->c = *c;
    m->n = n;
    m->smax = smax;
    m->max_ctx = max_ctx;
    memcpy(m->dev, devices, sizeof(int) * (size_t)n);
    for (int i = 0, l0 = 0; i < n && !rc; l0 += cnt[i], i++) {
        so.device = devices[i];
        so.layer_begin = l0;
        so.layer_end = l0 + cnt[i];
        so.mtp = o && o->mtp && i + 1 == n; // the MTP block follows the last layer: the last shard's
        if ((rc = cuda_engine_new(w, &so, &m->g[i], e)))
            ctx_err_prefix(e, "shard %d (device %d, layers %d..%d): ", i, devices[i], l0, l0 + cnt[i] - 1);
    }
    free(cnt);
    size_t xbytes = sizeof(float) * (size_t)smax * c->hc_mult * c->hidden_size;
    for (int k = 1; k < n && !rc; k++) {
        struct boundary *b = &m->b[k];
        int from = devices[k - 1], to = devices[k];
        if (from != to) { // the sender writes into the receiver's memory
            int can = 0;
            if ((rc = cu(e, cudaDeviceCanAccessPeer(&can, from, to), "cudaDeviceCanAccessPeer")))
                break;
            if (can) {
                if ((rc = cu(e, cudaSetDevice(from), "cudaSetDevice")))
                    break;
                if ((rc = peer_enable(from, to, e)))
                    break;
                b->peer = 1;
            }
        }
        if ((rc = cu(e, cudaSetDevice(to), "cudaSetDevice")))
            break;
        for (int s = 0; s < 2 && !rc; s++)
            if (!(rc = cu(e, cudaMalloc((void **)&b->buf[s], xbytes), "cudaMalloc(boundary buffer)")))
                rc = cu(e, cudaEventCreateWithFlags(&b->freed[s], cudaEventDisableTiming), "cudaEventCreate");
        if (!rc && !(rc = cu(e, cudaSetDevice(from), "cudaSetDevice")))
            for (int s = 0; s < 2 && !rc; s++)
                rc = cu(e, cudaEventCreateWithFlags(&b->ready[s], cudaEventDisableTiming), "cudaEventCreate");
    }
    if (rc) {
        cuda_multi_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

extern "C" void cuda_multi_reset(struct cuda_multi *m)
{
    for (int i = 0; i < m->n; i++)
        cuda_engine_reset(m->g[i]);
}

extern "C" long long cuda_multi_pos(const struct cuda_multi *m) { return cuda_engine_pos(m->g[m->n - 1]); }

extern "C" int cuda_multi_shards(const struct cuda_multi *m) { return m->n; }

extern "C" struct cuda_engine *cuda_multi_engine(const struct cuda_multi *m, int i)
{
    return i >= 0 && i < m->n ? m->g[i] : NULL;
}

extern "C" void cuda_multi_memory(const struct cuda_multi *m, int device, size_t *weight_bytes, size_t *state_bytes)
{
    size_t wsum = 0, ssum = 0;
    for (int i = 0; i < m->n; i++)
        if (m->dev[i] == device) {
            size_t wb = 0, sb = 0;
            cuda_engine_memory(m->g[i], &wb, &sb);
            wsum += wb;
            ssum += sb;
        }
    for (int k = 1; k < m->n; k++) // the boundary buffers live on the receiving shard's device
        if (m->dev[k] == device)
            ssum += 2 * sizeof(float) * (size_t)m->smax * m->c.hc_mult * m->c.hidden_size;
    if (weight_bytes)
        *weight_bytes = wsum;
    if (state_bytes)
        *state_bytes = ssum;
}

extern "C" void cuda_multi_use_graph(struct cuda_multi *m, int on)
{
    for (int i = 0; i < m->n; i++)
        cuda_engine_use_graph(m->g[i], on);
}

extern "C" int cuda_multi_graph_state(const struct cuda_multi *m)
{
    int all = 1;
    for (int i = 0; i < m->n; i++) {
        int s = cuda_engine_graph_state(m->g[i]);
        if (s < 0)
            return -1;
        all &= s == 1;
    }
    return all;
}

// Shard i's pipeline io for a chunk in boundary slot `slot`.
static void shard_io(const struct cuda_multi *m, int i, int slot, struct cuda_engine_io *io)
{
    memset(io, 0, sizeof *io);
    if (i > 0) {
        struct boundary *b = &m->b[i];
        io->x_in = b->buf[slot];
        io->x_in_dev = m->dev[i];
        io->in_ready = b->ready[slot];
        io->in_free = b->freed[slot];
    }
    if (i + 1 < m->n) {
        struct boundary *b = &m->b[i + 1];
        io->x_out = b->buf[slot];
        io->x_out_dev = m->dev[i + 1];
        io->out_free = b->freed[slot];
        io->out_ready = b->ready[slot];
    }
}

// Queues one chunk on every shard, in shard order (the events order the devices). rows > 0: the
// argmax of the last shard's last `rows` rows instead of the logits (cuda_gen.h); undo: a speculative
// step's two tokens (every shard saves its layers' undo record).
// Shard i's part of one chunk in boundary slot `slot` (errors prefixed with the shard).
static int queue_shard(struct cuda_multi *m, int i, int slot, const int *tokens, int S, int want_logits, int rows,
                       int undo, struct ctx_err *e)
{
    struct cuda_engine_io io;
    shard_io(m, i, slot, &io);
    const int last = i + 1 == m->n;
    int rc = rows || undo ? cuda_engine_forward_async_rows(m->g[i], tokens, S, &io, last ? rows : 0, undo, e)
                          : cuda_engine_forward_async(m->g[i], tokens, S, &io, want_logits && last, e);
    if (rc)
        ctx_err_prefix(e, "shard %d: ", i);
    return rc;
}

static int queue_chunk_rows(struct cuda_multi *m, const int *tokens, int S, int want_logits, int rows, int undo,
                            struct ctx_err *e)
{
    int slot = (int)(m->tick++ % 2), rc = 0;
    for (int i = 0; i < m->n && !rc; i++)
        rc = queue_shard(m, i, slot, tokens, S, want_logits, rows, undo, e);
    return rc;
}

static int queue_chunk(struct cuda_multi *m, const int *tokens, int S, int want_logits, struct ctx_err *e)
{
    return queue_chunk_rows(m, tokens, S, want_logits, 0, 0, e);
}

// Waits for every shard (the last one's logits into `logits` when wanted).
static int finish(struct cuda_multi *m, float *logits, struct ctx_err *e)
{
    int rc = 0;
    for (int i = m->n - 1; i >= 0 && !rc; i--)
        if ((rc = cuda_engine_finish(m->g[i], i + 1 == m->n ? logits : NULL, e)))
            ctx_err_prefix(e, "shard %d: ", i);
    return rc;
}

extern "C" int cuda_multi_forward(struct cuda_multi *m, const int *tokens, int S, float *logits, struct ctx_err *e)
{
    // shard 0 checks the arguments before anything is queued, and every shard would check them alike
    int rc = queue_chunk(m, tokens, S, logits != NULL, e);
    if (!rc)
        rc = finish(m, logits, e);
    return rc;
}

// A prefill's chunks queued by one host thread per shard. One thread queuing every shard in turn
// leaves a GPU idle: each chunk is ~55 launches a layer (over a thousand a shard), more than a stream
// takes before cudaLaunchKernel blocks the host, so the host waits on one shard's queue while the other
// runs dry (V4-Flash's 500K prefill over two H200s: 58 s against the 45 s of its shards' GPU time).
// Thread i queues chunk c only after thread i - 1 has queued it (shard i's wait for the boundary's
// `ready` event then names the record of chunk c) and after thread i + 1 has queued chunk c - 2 (shard
// i's wait for `freed` of the slot then names shard i + 1's read of chunk c - 2, and its own `ready`
// record of chunk c comes after shard i + 1's wait for chunk c - 2's): the same event order as the
// one-thread loop, so the same results. CTX_CUDA_MULTI_THREADS=0 (read once) keeps the one-thread loop.
struct prefill_run {
    struct cuda_multi *m;
    const int *tokens;
    int n, chunk, nchunks;
    float *logits;
    unsigned long long tick0;
    std::mutex mu;
    std::condition_variable cv;
    std::vector<int> queued; // chunks each shard has queued
    int failed = 0, rc = 0;
    struct ctx_err err;
};

static void prefill_shard(struct prefill_run *r, int i)
{
    struct cuda_multi *m = r->m;
    for (int c = 0; c < r->nchunks; c++) {
        {
            std::unique_lock<std::mutex> lk(r->mu);
            r->cv.wait(lk, [&] {
                return r->failed || ((i == 0 || r->queued[i - 1] > c) && (i + 1 == m->n || r->queued[i + 1] >= c - 1));
            });
            if (r->failed)
                return;
        }
        int p = c * r->chunk, S = r->n - p < r->chunk ? r->n - p : r->chunk;
        struct ctx_err e;
        memset(&e, 0, sizeof e);
        int rc = queue_shard(m, i, (int)((r->tick0 + (unsigned long long)c) % 2), r->tokens + p, S,
                             r->logits && p + S == r->n, 0, 0, &e);
        {
            std::lock_guard<std::mutex> lk(r->mu);
            if (rc && !r->failed) {
                r->failed = 1;
                r->rc = rc;
                r->err = e;
            } else if (!rc) {
                r->queued[i] = c + 1;
            }
        }
        r->cv.notify_all();
        if (rc)
            return;
    }
}

static std::atomic<int> threads_forced{-1}; // cuda_multi_prefill_threads

static int prefill_threads(void)
{
    static int on = -1;
    static std::once_flag once;
    int f = threads_forced.load();
    if (f >= 0)
        return f;
    std::call_once(once, [] {
        const char *v = getenv("CTX_CUDA_MULTI_THREADS");
        on = !(v && !strcmp(v, "0"));
    });
    return on;
}

extern "C" void cuda_multi_prefill_threads(int on) { threads_forced.store(on < 0 ? -1 : on != 0); }

extern "C" int cuda_multi_prefill(struct cuda_multi *m, const int *tokens, int n, int chunk, float *logits,
                                  struct ctx_err *e)
{
    if (n <= 0)
        return ctx_err_set(e, CTX_EINVAL, "cuda multi: empty prefill");
    long long pos = cuda_multi_pos(m);
    if (pos + n > m->max_ctx)
        return ctx_err_set(e, CTX_ERANGE, "cuda multi: position %lld + %d beyond the context of %lld", pos, n,
                           m->max_ctx);
    for (int s = 0; s < n; s++) // checked whole first: a bad token changes nothing
        if (tokens[s] < 0 || tokens[s] >= m->c.vocab_size)
            return ctx_err_set(e, CTX_EINVAL, "cuda multi: token %d at offset %d outside the vocabulary", tokens[s], s);
    if (chunk > m->smax)
        chunk = m->smax;
    if (chunk <= 0) {
        chunk = m->smax;
        // under 2 chunks a shard: the chunk that makes 2 a shard (a multiple of 128), so that the shards
        // overlap; it depends on n, not on max_chunk (half of it did before, and an engine of 8192-token
        // chunks re-prefilled an 8K suffix in 2 chunks instead of 4: 1.105 s at 500K against 1.025)
        if (m->n > 1 && (n + chunk - 1) / chunk < 2 * m->n && m->smax > 128) {
            const long long per = ((long long)n + 2LL * m->n - 1) / (2LL * m->n);
            const long long c128 = (per + 127) / 128 * 128; // n >= 1: at least 128
            chunk = c128 < m->smax ? (int)c128 : m->smax;
        }
    }
    int rc = 0, nchunks = (n + chunk - 1) / chunk;
    int threaded = 0;
    if (m->n > 1 && nchunks > 1 && prefill_threads()) {
        // Shards 1.. on new threads, shard 0 on this one. None queues anything before shard 0 has, so
        // when a thread cannot be made nothing is queued yet and the one-thread loop takes over.
        struct prefill_run r;
        r.m = m;
        r.tokens = tokens;
        r.n = n;
        r.chunk = chunk;
        r.nchunks = nchunks;
        r.logits = logits;
        r.tick0 = m->tick;
        r.queued.assign((size_t)m->n, 0);
        memset(&r.err, 0, sizeof r.err);
        std::vector<std::thread> th;
        try {
            for (int i = 1; i < m->n; i++)
                th.emplace_back(prefill_shard, &r, i);
            threaded = 1;
        } catch (...) {
            std::lock_guard<std::mutex> lk(r.mu);
            r.failed = 1;
        }
        r.cv.notify_all();
        if (threaded)
            prefill_shard(&r, 0);
        for (auto &t : th)
            t.join();
        if (threaded) {
            m->tick += (unsigned long long)nchunks;
            if ((rc = r.rc))
                *e = r.err;
        }
    }
    for (int p = 0; !threaded && p < n && !rc; p += chunk) {
        int S = n - p < chunk ? n - p : chunk;
        rc = queue_chunk(m, tokens + p, S, logits && p + S == n, e);
    }
    struct ctx_err fe;
    memset(&fe, 0, sizeof fe);
    int frc = finish(m, rc ? NULL : logits, rc ? &fe : e); // even after an error: nothing stays queued
    return rc ? rc : frc;
}

// f(engine) on every shard in order (each engine waits for its own queued work first); the first
// error is returned, prefixed with its shard.
template <class F> static int each_shard(struct cuda_multi *m, struct ctx_err *e, F f)
{
    for (int i = 0; i < m->n; i++) {
        int rc = f(m->g[i]);
        if (rc) {
            ctx_err_prefix(e, "shard %d: ", i);
            return rc;
        }
    }
    return 0;
}

extern "C" int cuda_multi_state_download(struct cuda_multi *m, struct inf_state *st, struct ctx_err *e)
{
    return each_shard(m, e, [&](struct cuda_engine *g) { return cuda_engine_state_download(g, st, e); });
}

// A host state the pipeline can take: the same layer shapes, a position within the context.
static int check_host_state(const struct cuda_multi *m, const struct inf_state *st, struct ctx_err *e)
{
    const struct inf_config *a = &m->c, *b = &st->cfg;
    if (a->num_hidden_layers != b->num_hidden_layers || a->head_dim != b->head_dim ||
        a->sliding_window != b->sliding_window || a->index_head_dim != b->index_head_dim ||
        memcmp(a->compress_ratios, b->compress_ratios, sizeof(int) * (size_t)a->num_hidden_layers))
        return ctx_err_set(e, CTX_EINVAL, "cuda multi: the host state's config has another shape");
    if (st->pos < 0 || st->pos > m->max_ctx)
        return ctx_err_set(e, CTX_ERANGE, "cuda multi: state at position %lld beyond the context of %lld", st->pos,
                           m->max_ctx);
    return 0;
}

// The whole state (upto NULL) or each layer's entries [0, upto[l]) with the rest taken as on the devices
// (cuda_engine_state_upload_prefix); checked whole before any shard is written.
static int upload_shards(struct cuda_multi *m, const struct inf_state *st, const long long *upto, struct ctx_err *e)
{
    const struct inf_config *a = &m->c;
    int rc = check_host_state(m, st, e);
    if (rc)
        return rc;
    for (int l = 0; l < a->num_hidden_layers; l++) {
        if (st->layers[l].ratio && st->layers[l].n_cache != st->pos / st->layers[l].ratio)
            return ctx_err_set(e, CTX_EINVAL, "cuda multi: layer %d holds %lld compressed entries at position %lld", l,
                               st->layers[l].n_cache, st->pos);
        if (upto && upto[l] < 0)
            return ctx_err_set(e, CTX_EINVAL, "cuda multi: layer %d: %lld leading entries to upload", l, upto[l]);
    }
    return each_shard(m, e, [&](struct cuda_engine *g) {
        return upto ? cuda_engine_state_upload_prefix(g, st, upto, e) : cuda_engine_state_upload(g, st, e);
    });
}

extern "C" int cuda_multi_state_upload(struct cuda_multi *m, const struct inf_state *st, struct ctx_err *e)
{
    return upload_shards(m, st, NULL, e);
}

extern "C" int cuda_multi_state_upload_prefix(struct cuda_multi *m, const struct inf_state *st, const long long *upto,
                                              struct ctx_err *e)
{
    return upload_shards(m, st, upto, e);
}

// A checkpoint's packed streams (cuda_engine_state_upload_packed) on every shard, each its layers;
// the counts checked against the position for all layers before any shard is written.
extern "C" int cuda_multi_state_upload_packed(struct cuda_multi *m, const struct inf_state *st, const long long *counts,
                                              const void *const *streams, struct ctx_err *e)
{
    const struct inf_config *a = &m->c;
    int rc = check_host_state(m, st, e);
    if (rc)
        return rc;
    for (int l = 0; l < a->num_hidden_layers; l++) {
        int r = a->compress_ratios[l];
        if (counts[l] != (r ? st->pos / r : 0))
            return ctx_err_set(e, CTX_EINVAL, "cuda multi: layer %d: %lld packed entries at position %lld", l,
                               counts[l], st->pos);
    }
    return each_shard(m, e, [&](struct cuda_engine *g) {
        return cuda_engine_state_upload_packed(g, st, counts, streams, e);
    });
}

extern "C" int cuda_multi_state_fill_random(struct cuda_multi *m, long long pos, unsigned long long seed,
                                            struct ctx_err *e)
{
    return each_shard(m, e, [&](struct cuda_engine *g) { return cuda_engine_state_fill_random(g, pos, seed, e); });
}

extern "C" int cuda_multi_state_download_tail(struct cuda_multi *m, struct inf_state *st, struct ctx_err *e)
{
    return each_shard(m, e, [&](struct cuda_engine *g) { return cuda_engine_state_download_tail(g, st, e); });
}

extern "C" int cuda_multi_state_download_boundary(struct cuda_multi *m, struct inf_state *st, struct ctx_err *e)
{
    return each_shard(m, e, [&](struct cuda_engine *g) { return cuda_engine_state_download_boundary(g, st, e); });
}

// ---- marks: one engine mark per shard

struct cuda_multi_mark {
    struct cuda_multi *m;
    int n;
    struct cuda_engine_mark **sh; // [n]
};

extern "C" void cuda_multi_mark_free(struct cuda_multi_mark *mk)
{
    if (!mk)
        return;
    for (int i = 0; mk->sh && i < mk->n; i++)
        cuda_engine_mark_free(mk->sh[i]);
    free(mk->sh);
    free(mk);
}

extern "C" int cuda_multi_mark(struct cuda_multi *m, struct cuda_multi_mark **out, struct ctx_err *e)
{
    *out = NULL;
    struct cuda_multi_mark *mk = (struct cuda_multi_mark *)calloc(1, sizeof *mk);
    if (mk)
        mk->sh = (struct cuda_engine_mark **)calloc((size_t)m->n, sizeof *mk->sh);
    if (!mk || !mk->sh) {
        free(mk);
        return ctx_err_set(e, CTX_ENOMEM, "cuda multi: out of memory for a mark");
    }
    mk->n = m->n;
    for (int i = 0; i < m->n; i++) {
        int rc = cuda_engine_mark(m->g[i], &mk->sh[i], e);
        if (rc) {
            ctx_err_prefix(e, "shard %d: ", i);
            cuda_multi_mark_free(mk);
            return rc;
        }
    }
    mk->m = m;
    *out = mk;
    return 0;
}

extern "C" int cuda_multi_rewind(struct cuda_multi *m, const struct cuda_multi_mark *mk, struct ctx_err *e)
{
    if (!mk || mk->m != m || mk->n != m->n)
        return ctx_err_set(e, CTX_EINVAL, "cuda multi: the mark belongs to another pipeline");
    int rc;
    for (int i = 0; i < m->n; i++) // checked whole first: a refused mark changes no shard
        if ((rc = cuda_engine_mark_check(m->g[i], mk->sh[i], e))) {
            ctx_err_prefix(e, "shard %d: ", i);
            return rc;
        }
    for (int i = 0; i < m->n; i++)
        if ((rc = cuda_engine_rewind(m->g[i], mk->sh[i], e))) {
            ctx_err_prefix(e, "shard %d: ", i);
            return rc;
        }
    return 0;
}

extern "C" long long cuda_multi_mark_pos(const struct cuda_multi_mark *mk)
{
    return cuda_engine_mark_pos(mk->sh[mk->n - 1]);
}

// ---- greedy generation (cuda_gen.h's loop over the pipeline: every shard runs each forward, the last
// one's argmax and MTP block decide)

static long long mg_pos(void *ud) { return cuda_multi_pos((struct cuda_multi *)ud); }
static int mg_prefill(void *ud, const int *tokens, int S, struct ctx_err *e)
{
    struct cuda_multi *m = (struct cuda_multi *)ud;
    return cuda_multi_prefill(m, tokens, S, m->smax, NULL, e);
}
// One chunk with the last shard's rows (and the undo record), waited for.
static int forward_rows(struct cuda_multi *m, const int *tokens, int S, int rows, int undo, struct ctx_err *e)
{
    int rc = queue_chunk_rows(m, tokens, S, 0, rows, undo, e);
    struct ctx_err fe;
    memset(&fe, 0, sizeof fe);
    int frc = finish(m, NULL, rc ? &fe : e); // even after an error: nothing stays queued
    return rc ? rc : frc;
}
static int mg_forward(void *ud, const int *tokens, int S, int rows, int undo, int *amax, struct ctx_err *e)
{
    struct cuda_multi *m = (struct cuda_multi *)ud;
    int rc = forward_rows(m, tokens, S, rows, undo, e);
    return rc || !rows ? rc : cuda_engine_argmax_rows(m->g[m->n - 1], amax, rows, e);
}
static int mg_drop(void *ud, struct ctx_err *e)
{
    struct cuda_multi *m = (struct cuda_multi *)ud;
    return each_shard(m, e, [&](struct cuda_engine *g) { return cuda_engine_drop_last(g, e); });
}
static int mg_mtp(void *ud, int row0, const int *next, int S, int *draft, struct ctx_err *e)
{
    struct cuda_multi *m = (struct cuda_multi *)ud;
    return cuda_engine_mtp(m->g[m->n - 1], row0, next, S, NULL, draft, e);
}

// ---- the speculative steps for callers that choose tokens themselves (multi.h; cuda_accel's spec ops)

extern "C" int cuda_multi_has_mtp(const struct cuda_multi *m) { return cuda_engine_has_mtp(m->g[m->n - 1]); }

extern "C" int cuda_multi_forward_spec(struct cuda_multi *m, const int *tokens, float *logits0, float *logits1,
                                       struct ctx_err *e)
{
    if (!cuda_multi_has_mtp(m))
        return ctx_err_set(e, CTX_EINVAL, "cuda multi: a speculative step needs the MTP block (opts.mtp)");
    int rc = forward_rows(m, tokens, 2, 2, 1, e);
    float *rows[2] = {logits0, logits1};
    return rc ? rc : cuda_engine_logits_rows(m->g[m->n - 1], rows, 2, e);
}

extern "C" int cuda_multi_drop_last(struct cuda_multi *m, struct ctx_err *e) { return mg_drop(m, e); }

extern "C" int cuda_multi_draft(struct cuda_multi *m, int row0, const int *next, int S, int *draft, struct ctx_err *e)
{
    return mg_mtp(m, row0, next, S, draft, e);
}

extern "C" int cuda_multi_generate(struct cuda_multi *m, const int *prompt, int n, const struct cuda_engine_gen_opts *o,
                                   int *out, int *n_out, struct cuda_engine_gen_stats *stats, struct ctx_err *e)
{
    struct cuda_engine *last = m->g[m->n - 1];
    struct cuda_gen_ops ops;
    memset(&ops, 0, sizeof ops);
    ops.ud = m;
    ops.smax = m->smax;
    ops.window = m->c.sliding_window;
    ops.vocab = m->c.vocab_size;
    ops.has_mtp = cuda_multi_has_mtp(m);
    ops.pos = mg_pos;
    ops.max_ctx = m->max_ctx;
    ops.prefill = mg_prefill;
    ops.forward = mg_forward;
    ops.drop_last = mg_drop;
    ops.mtp = mg_mtp;
    cuda_engine_spec_forced(last, &ops.force, &ops.nforce);
    return cuda_gen_run(&ops, prompt, n, o, out, n_out, stats, e);
}
