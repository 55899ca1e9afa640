#include "kv_state.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kvpack.h"

/* Bytes [off, off + n) of a packed stream (store_kv_stream.fill): the entries they cover packed,
 * the first and last possibly in part. */
static int fill_packed(void *ud, uint64_t off, size_t n, void *dst, struct ctx_err *e)
{
    const struct store_kv_state_src *src = ud;
    const struct inf_config *c = &src->st->cfg;
    const struct inf_layer_state *l = &src->st->layers[src->layer];
    int ikey = src->ikey;
    size_t eb = ikey ? inf_kvpack_ikey_bytes(c) : inf_kvpack_entry_bytes(c);
    size_t width = (size_t)(ikey ? c->index_head_dim : c->head_dim);
    const float *base = ikey ? l->icache : l->cache;
    uint8_t tmp[4096];
    uint8_t *d = dst;
    for (uint64_t at = off; at < off + n;) {
        uint64_t ent = at / eb, in = at - ent * eb;
        const float *v = base + ent * width;
        int bad = ikey ? inf_kvpack_ikey(c, v, tmp) : inf_kvpack_entry(c, v, tmp);
        if (bad >= 0)
            return ctx_err_set(e, CTX_EFORMAT,
                               "kv cache: layer %d %s %llu, dims from %d, is not %s: the state cannot be stored "
                               "losslessly", src->layer, ikey ? "indexer key" : "compressed entry",
                               (unsigned long long)ent, bad,
                               ikey ? "FP4 blocks (spec 5.3)" : "FP8 blocks + bf16 rope dims (spec 5.3)");
        size_t take = eb - (size_t)in;
        if (take > off + n - at)
            take = (size_t)(off + n - at);
        memcpy(d + (at - off), tmp + in, take);
        at += take;
    }
    return 0;
}

/* Entries packed in the last bytes of x (count n, eb bytes each) back to floats of `width`, in place.
 * Entry i's output [W i, W (i+1)) (W = width * 4) never reaches the packed bytes of an entry j > i (they
 * start at n (W - eb) + eb j), so a forward pass is safe, each entry through a local copy. In parallel:
 * in waves, each wave the longest run of the entries left whose outputs all end before the run's own
 * packed bytes begin (a fraction (W - eb) / W of what is left: 71% for V4's entries), split over threads;
 * a short remainder runs on one. */
struct unpack_job {
    const struct inf_config *c;
    float *x;
    const uint8_t *packed;
    uint64_t a, b;
    size_t eb, width;
    int ikey;
};

static void *unpack_range(void *ud)
{
    const struct unpack_job *j = ud;
    uint8_t tmp[4096];
    for (uint64_t i = j->a; i < j->b; i++) {
        memcpy(tmp, j->packed + i * j->eb, j->eb);
        if (j->ikey)
            inf_kvunpack_ikey(j->c, tmp, j->x + i * j->width);
        else
            inf_kvunpack_entry(j->c, tmp, j->x + i * j->width);
    }
    return NULL;
}

#define UNPACK_THREADS 8
static void unpack_in_place(const struct inf_config *c, float *x, uint64_t n, size_t eb, size_t width, int ikey)
{
    const uint8_t *packed = (const uint8_t *)(void *)x + n * (width * 4 - eb);
    uint64_t W = width * 4, done = 0;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    int nt = ncpu < 1 ? 1 : ncpu > UNPACK_THREADS ? UNPACK_THREADS : (int)ncpu;
    while (done < n) {
        /* a wave: entries [done, done + m) with done*W + m*W <= n*(W-eb) + done*eb (outputs end before
         * the wave's packed bytes begin) */
        uint64_t room = n * (W - eb) - done * (W - eb), m = room / W;
        if (m > n - done)
            m = n - done;
        if (m < 1024 || nt == 1) { /* small: the rest in one forward pass */
            struct unpack_job j = {c, x, packed, done, n, eb, width, ikey};
            unpack_range(&j);
            return;
        }
        struct unpack_job jobs[UNPACK_THREADS];
        pthread_t th[UNPACK_THREADS];
        int started[UNPACK_THREADS] = {0};
        for (int t = 0; t < nt; t++) {
            jobs[t] = (struct unpack_job){c, x, packed, done + m * (uint64_t)t / (uint64_t)nt,
                                          done + m * (uint64_t)(t + 1) / (uint64_t)nt, eb, width, ikey};
            started[t] = t > 0 && pthread_create(&th[t], NULL, unpack_range, &jobs[t]) == 0;
        }
        unpack_range(&jobs[0]);
        for (int t = 1; t < nt; t++) {
            if (started[t])
                pthread_join(th[t], NULL);
            else
                unpack_range(&jobs[t]); /* no thread: this one does it */
        }
        done += m;
    }
}

/* KV streams of a state: per layer, its compressed entries and (CSA) its indexer keys. */
int store_kv_state_n_streams(const struct inf_state *st)
{
    return 2 * st->n_layers;
}

void store_kv_state_streams(const struct inf_state *st, struct store_kv_stream *sv, struct store_kv_state_src *src)
{
    for (int i = 0; i < st->n_layers; i++) {
        const struct inf_layer_state *l = &st->layers[i];
        src[2 * i] = (struct store_kv_state_src){st, i, 0};
        src[2 * i + 1] = (struct store_kv_state_src){st, i, 1};
        sv[2 * i] = (struct store_kv_stream){.len = (uint64_t)l->n_cache * inf_kvpack_entry_bytes(&st->cfg),
                                             .fill = fill_packed, .ud = &src[2 * i]};
        sv[2 * i + 1] = (struct store_kv_stream){
            .len = l->ratio == 4 ? (uint64_t)l->n_cache * inf_kvpack_ikey_bytes(&st->cfg) : 0,
            .fill = fill_packed, .ud = &src[2 * i + 1]};
    }
}

/* The entries each layer's streams hold, checked against the model's layer kinds and sizes. */
static int stream_counts(const struct store_kv_ckpt *c, const struct inf_state *st, long long *counts,
                         struct ctx_err *e)
{
    if (c->n_streams != store_kv_state_n_streams(st))
        return ctx_err_set(e, CTX_EFORMAT, "checkpoint has %d streams, the model needs %d", c->n_streams,
                           store_kv_state_n_streams(st));
    uint64_t row = inf_kvpack_entry_bytes(&st->cfg), irow = inf_kvpack_ikey_bytes(&st->cfg);
    for (int i = 0; i < st->n_layers; i++) {
        const struct inf_layer_state *l = &st->layers[i];
        uint64_t len = c->stream_len[2 * i], ilen = c->stream_len[2 * i + 1];
        if (len % row)
            return ctx_err_set(e, CTX_EFORMAT, "checkpoint stream %d is not a whole number of entries", 2 * i);
        long long n = (long long)(len / row);
        if ((!l->ratio && n) || (l->ratio == 4 && ilen != (uint64_t)n * irow) || (l->ratio != 4 && ilen))
            return ctx_err_set(e, CTX_EFORMAT, "checkpoint streams of layer %d do not fit the model", i);
        counts[i] = n;
    }
    return 0;
}

static int read_boundary(struct store_kv *kv, const struct store_kv_ckpt *c, struct inf_state *st,
                         const long long *counts, struct ctx_err *e)
{
    uint8_t *b = malloc(c->boundary_len + 1);
    if (!b)
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    int rc = store_kv_read_boundary(kv, c, b, e);
    if (!rc)
        rc = counts ? inf_state_restore_boundary_counts(st, b, c->boundary_len, counts, e)
                    : inf_state_restore_boundary(st, b, c->boundary_len, e);
    free(b);
    if (!rc && (uint64_t)st->pos != c->pos)
        rc = ctx_err_set(e, CTX_EFORMAT, "checkpoint at %llu restored a state at %lld", (unsigned long long)c->pos,
                         st->pos);
    return rc;
}

/* Bring st to the checkpoint c: its caches from the streams, then its boundary. */
int store_kv_state_restore(struct store_kv *kv, const struct store_kv_ckpt *c, struct inf_state *st, struct ctx_err *e)
{
    long long *counts = calloc((size_t)st->n_layers + 1, sizeof *counts);
    if (!counts)
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    int rc = stream_counts(c, st, counts, e);
    uint64_t row = inf_kvpack_entry_bytes(&st->cfg), irow = inf_kvpack_ikey_bytes(&st->cfg);
    size_t hd = (size_t)st->cfg.head_dim, di = (size_t)st->cfg.index_head_dim;
    /* each stream read into the end of its float buffer (all streams at once: store_kv_read_streams
     * reads on several threads), then unpacked forward in place */
    void **bufs = rc ? NULL : calloc((size_t)c->n_streams + 1, sizeof *bufs);
    if (!rc && !bufs)
        rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
    for (int i = 0; i < st->n_layers && !rc; i++) {
        struct inf_layer_state *l = &st->layers[i];
        long long n = counts[i];
        l->n_cache = 0;
        if (n && (rc = inf_state_reserve(st, i, n, e)))
            break;
        if (n)
            bufs[2 * i] = (uint8_t *)l->cache + (uint64_t)n * (hd * 4 - row);
        if (n && l->ratio == 4)
            bufs[2 * i + 1] = (uint8_t *)l->icache + (uint64_t)n * (di * 4 - irow);
    }
    if (!rc)
        rc = store_kv_read_streams(kv, c, bufs, e);
    for (int i = 0; i < st->n_layers && !rc; i++) {
        struct inf_layer_state *l = &st->layers[i];
        long long n = counts[i];
        if (n)
            unpack_in_place(&st->cfg, l->cache, (uint64_t)n, row, hd, 0);
        if (n && l->ratio == 4)
            unpack_in_place(&st->cfg, l->icache, (uint64_t)n, irow, di, 1);
        l->n_cache = n;
    }
    free(bufs);
    if (!rc)
        rc = read_boundary(kv, c, st, NULL, e);
    free(counts);
    return rc;
}

int store_kv_state_read_packed(struct store_kv *kv, const struct store_kv_ckpt *c, struct inf_state *st, void *const *bufs,
                               long long *counts, struct ctx_err *e)
{
    int rc = stream_counts(c, st, counts, e);
    if (!rc)
        rc = store_kv_read_streams(kv, c, bufs, e);
    return rc ? rc : read_boundary(kv, c, st, counts, e);
}
