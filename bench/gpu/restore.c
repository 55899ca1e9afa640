/* bench-gpu-restore: restoring a V4 sequence state to the GPU (issue 10's restore rows), plus the
 * CUDA-engine side of bench/gpu/side_by_side.py.
 *
 *   bench-gpu-restore bench [--ctx N] [--reps N] [--disk-reps N] [--dir DIR]
 *       A V4-Flash-shaped state at N tokens (default 500000): Flash's 43-layer schedule (2 sliding,
 *       21 CSA, 20 HCA; head_dim 512, indexer keys 128, window 128), no MTP. The state's size
 *       depends only on those fields, so the engine is created with that schedule and small
 *       synthetic weights (hidden 256, 8 experts, vocabulary 1024): its device state is exactly
 *       Flash's, while a real Flash (~150 GB of weights) would not fit one GPU. Rows:
 *         - upload through cuda_engine_state_upload from pinned host memory (the inf_state buffers
 *           registered with cudaHostRegister), and from the same buffers pageable;
 *         - restore from disk through the daemon's own checkpoint store (store/kv.h: streams +
 *           boundary, XXH3-verified reads) into a registered inf_state, then the upload; cold (page
 *           cache dropped, residency checked with mincore) and warm;
 *       floors measured in the same run: pinned host-to-device cudaMemcpy of 1 GiB (peak), and the
 *       disk's sequential O_DIRECT read of the checkpoint's own files (one thread, 16 MiB reads; an
 *       8-thread figure beside it). The "ctxd path" rows time what ctxd --backend cuda runs
 *       (daemon/repos.c's start_from_cache): a fresh inf_state, inf_accel_host_alloc'd buffers (malloc: the CUDA accel pins
 *       nothing, kernels/cuda_accel.c says why), store_kv_state_read_packed, inf_accel_restore_packed (a cuda_accel: upload, unpack,
 *       bind), the buffers handed to inf_accel_fill_host (the host copy refilled from them in the
 *       background); cold and warm; then the snapshot after it (ctxd's ready snapshot: a device
 *       mark and the rings, carries and position downloaded, no entry) and the first inf_state_sync
 *       after that (it waits for the fill, then downloads only newer entries), and
 *       ctxd's host path without the packed op (store_kv_state_restore into a fresh, unregistered
 *       state, then the upload). The uploaded state is downloaded back and compared byte for byte,
 *       and the state restored from disk is compared with the one saved.
 *   bench-gpu-restore roundtrip [--ctx N] [--dir DIR] [--model DIR|tiny|flash43s]
 *       Restore + one decode step gives the logits of the state that was saved: prefill N tokens,
 *       download the state, decode one token (reference logits); dirty the device state, upload
 *       the saved state from pinned memory, decode the same token; then the same through the disk
 *       store (cold). Logits must be bit-identical (the engine is deterministic).
 *   bench-gpu-restore logits --model DIR --tokens FILE --out FILE [--reps N]
 *       Teacher-forced logits of the CUDA engine for side_by_side.py: FILE holds int32 nseq, then
 *       per sequence P, T, tokens[P+T]; the output is float32 rows (prefill's last position, then
 *       one per decode step) of every sequence; timings are one JSON line on stdout.
 *   bench-gpu-restore slices [--tokens N] [--slice S] [--chunk C] [--model M] [--reserve] [--dir DIR]
 *       ctxd's prefill slices with their host work (cmd_slices says what is timed): per slice the forward,
 *       the new entries downloaded into the host copy, the KV-cache checkpoint.
 *   bench-gpu-restore write-ckpt --config NAME --seed S --out DIR
 *       Synthetic weights (inf_weights_synthetic) written in the official format: config.json
 *       (the Hugging Face root names of the released configs) + model.safetensors. Runs without a GPU.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <cuda_runtime_api.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "../bench.h"

#include "accel.h"
#include "cuda_accel.h"
#include "cuda_engine.h"
#include "gemm.h"
#include "kv.h"
#include "kv_state.h"
#include "kvpack.h"
#include "pool.h"
#include "safetensors.h"
#include "state.h"
#include "weights.h"

static int fail(const char *what, const struct ctx_err *e)
{
    fprintf(stderr, "bench-gpu-restore: %s: %s\n", what, e->msg);
    return 1;
}
static int cuda_ok(cudaError_t r, const char *what)
{
    if (r == cudaSuccess)
        return 1;
    fprintf(stderr, "bench-gpu-restore: %s: %s\n", what, cudaGetErrorString(r));
    return 0;
}

/* ---- configs ------------------------------------------------------------------------------- */

/* V4-Flash's state shape (43 layers, its schedule, head_dim, indexer dim, window) with small weights. */
static int flash_state_config(struct inf_config *c, struct ctx_err *e)
{
    int rc = inf_config_builtin("flash", c, e);
    if (rc)
        return rc;
    c->vocab_size = 1024;
    c->hidden_size = 256;
    c->num_attention_heads = 4;
    c->q_lora_rank = 128;
    c->o_groups = 2;
    c->o_lora_rank = 128;
    c->n_routed_experts = 8;
    c->num_experts_per_tok = 2;
    c->moe_intermediate_size = 256;
    c->index_n_heads = 4;
    c->num_nextn_predict_layers = 0;
    return inf_config_validate(c, "flash43s (Flash state shape, small weights)", e);
}

/* A model by name: a checkpoint directory, "flash43s", or a built-in config (synthetic, seed 1). */
static int open_model(const char *spec, struct inf_weights **w, struct ctx_err *e)
{
    struct stat sb;
    if (stat(spec, &sb) == 0 && S_ISDIR(sb.st_mode))
        return inf_weights_open(spec, w, e);
    struct inf_config c;
    int rc = !strcmp(spec, "flash43s") ? flash_state_config(&c, e) : inf_config_builtin(spec, &c, e);
    return rc ? rc : inf_weights_synthetic(&c, 1, w, e);
}

/* ---- state bytes, synthetic states, pinning -------------------------------------------------- */

static size_t ring_bytes(const struct inf_config *c) { return sizeof(float) * (size_t)c->sliding_window * c->head_dim; }
static size_t carry_bytes(const struct inf_config *c, int r)
{
    int coff = r == 4 ? 2 : 1;
    return r ? sizeof(float) * (size_t)coff * r * coff * c->head_dim : 0;
}
static size_t icarry_bytes(const struct inf_config *c, int r)
{
    return r == 4 ? sizeof(float) * 16 * (size_t)c->index_head_dim : 0;
}

/* Bytes cuda_engine_state_upload moves for a state at pos (backbone layers, this engine's fp32
 * layout). */
static double upload_bytes(const struct inf_config *c, long long pos)
{
    double b = 0;
    for (int l = 0; l < c->num_hidden_layers; l++) {
        int r = c->compress_ratios[l];
        long long n = r ? pos / r : 0;
        b += (double)ring_bytes(c) + 2.0 * (double)carry_bytes(c, r) + 2.0 * (double)icarry_bytes(c, r);
        b += 4.0 * (double)n * c->head_dim + (r == 4 ? 4.0 * (double)n * c->index_head_dim : 0);
    }
    return b;
}

/* The same caches in the packed representation of spec §5.3 (inference/README: main entry
 * (d-r) E4M3 + r BF16 + (d-r)/64 E8M0 padded to 8 bytes = 584 B, indexer entry 68 B), plus rings
 * and carries as they are: what a packed checkpoint would move. */
static double packed_bytes(const struct inf_config *c, long long pos)
{
    int d = c->head_dim, r = c->qk_rope_head_dim, di = c->index_head_dim;
    double main_e = (double)(((d - r) + 2 * r + (d - r) / 64 + 7) / 8 * 8), idx_e = di / 2.0 + di / 32.0;
    double b = 0;
    for (int l = 0; l < c->num_hidden_layers; l++) {
        int k = c->compress_ratios[l];
        long long n = k ? pos / k : 0;
        b += (double)ring_bytes(c) + 2.0 * (double)carry_bytes(c, k) + 2.0 * (double)icarry_bytes(c, k);
        b += (double)n * main_e + (k == 4 ? (double)n * idx_e : 0);
    }
    return b;
}

static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* What the values stand for: the KV store keeps compressed entries and indexer keys packed
 * (store/kv_state.h), which takes exactly the values the engine stores there, so the synthetic state
 * holds such values: entries with 3-bit mantissas over 12 binades (FP8 blocks, spec §5.3), indexer
 * keys e2m1 codes times 2^-3 (FP4 blocks); rings and carries any bf16-exact value. */
enum fill_kind { FILL_ANY, FILL_ENTRY, FILL_IKEY };
struct fill_job {
    float *p;
    size_t n;
    uint64_t seed;
    enum fill_kind kind;
};
#define FILL_GRAIN ((size_t)1 << 20)
static void fill_chunk(void *ud, size_t i, int tid)
{
    (void)tid;
    const struct fill_job *j = ud;
    size_t a = i * FILL_GRAIN, b = a + FILL_GRAIN < j->n ? a + FILL_GRAIN : j->n;
    for (size_t k = a; k < b; k++) {
        /* bf16-exact values of magnitude 2^-7..2^4: finite, like the stored entries */
        uint32_t h = (uint32_t)mix64(j->seed ^ (uint64_t)k);
        uint32_t bits = ((h & 0x8000u) << 16) | ((uint32_t)(120 + (h >> 16) % 12) << 23) |
                        ((h & (j->kind == FILL_ENTRY ? 0x70u : 0x7fu)) << 16);
        if (j->kind == FILL_IKEY) {
            static const float e2m1[8] = {0.5f, 1.f, 1.5f, 2.f, 3.f, 4.f, 6.f, 0.f};
            float v = e2m1[h & 7] * 0.125f * ((h & 8) ? -1.f : 1.f);
            memcpy(&bits, &v, sizeof bits);
        }
        memcpy(&j->p[k], &bits, sizeof(float));
    }
}
static void fill_floats(struct ctx_pool *pool, float *p, size_t n, uint64_t seed, enum fill_kind kind)
{
    struct fill_job j = {p, n, seed, kind};
    ctx_pool_for(pool, (n + FILL_GRAIN - 1) / FILL_GRAIN, 1, fill_chunk, &j);
}

/* A state at pos with every cache, ring and carry filled with seeded values. */
static int synthetic_state(const struct inf_config *c, long long pos, uint64_t seed, struct ctx_pool *pool,
                           struct inf_state **out, struct ctx_err *e)
{
    struct inf_state *st;
    int rc = inf_state_new(c, &st, e);
    if (rc)
        return rc;
    for (int l = 0; l < c->num_hidden_layers; l++) {
        struct inf_layer_state *L = &st->layers[l];
        long long n = L->ratio ? pos / L->ratio : 0;
        if (n && (rc = inf_state_reserve(st, l, n, e))) {
            inf_state_free(st);
            return rc;
        }
        L->n_cache = n;
        uint64_t s = seed * 1000003u + (uint64_t)l * 16;
        fill_floats(pool, L->ring, ring_bytes(c) / 4, s + 1, FILL_ANY);
        if (L->ratio) {
            fill_floats(pool, L->c_kv, carry_bytes(c, L->ratio) / 4, s + 2, FILL_ANY);
            fill_floats(pool, L->c_sc, carry_bytes(c, L->ratio) / 4, s + 3, FILL_ANY);
        }
        if (L->ratio == 4) {
            fill_floats(pool, L->ic_kv, icarry_bytes(c, 4) / 4, s + 4, FILL_ANY);
            fill_floats(pool, L->ic_sc, icarry_bytes(c, 4) / 4, s + 5, FILL_ANY);
            fill_floats(pool, L->icache, (size_t)n * c->index_head_dim, s + 6, FILL_IKEY);
        }
        if (n)
            fill_floats(pool, L->cache, (size_t)n * c->head_dim, s + 7, FILL_ENTRY);
    }
    st->pos = pos;
    *out = st;
    return 0;
}

/* Make the bulk host buffers of a state (window rings, compressed entries, indexer keys)
 * page-locked with cudaHostRegister, or pageable again. A daemon keeps its state buffers for the
 * life of a repository, so pinning them is a one-time cost. The carries (a few KB each, from the
 * heap) stay pageable: small heap blocks share pages, which CUDA registers only once. Returns the
 * bytes registered, or -1 on an error other than an overlap with a registered page. */
static double pin_state(struct inf_state *st, int on)
{
    const struct inf_config *c = &st->cfg;
    double got = 0;
    for (int l = 0; l < c->num_hidden_layers; l++) {
        struct inf_layer_state *L = &st->layers[l];
        void *p[3] = {L->ring, L->cache, L->icache};
        size_t n[3] = {ring_bytes(c), sizeof(float) * (size_t)L->cap_cache * c->head_dim,
                       L->ratio == 4 ? sizeof(float) * (size_t)L->cap_cache * c->index_head_dim : 0};
        for (int k = 0; k < 3; k++) {
            if (!p[k] || !n[k])
                continue;
            cudaError_t r = on ? cudaHostRegister(p[k], n[k], cudaHostRegisterDefault) : cudaHostUnregister(p[k]);
            if (r == cudaSuccess) {
                got += (double)n[k];
            } else if (r == cudaErrorHostMemoryAlreadyRegistered || r == cudaErrorHostMemoryNotRegistered) {
                cudaGetLastError(); /* a page shared with a registered neighbour: this one stays pageable */
            } else {
                cuda_ok(r, on ? "cudaHostRegister" : "cudaHostUnregister");
                return -1;
            }
        }
    }
    return got;
}

/* Byte comparison of two states' backbone content; returns the first differing layer or -1. */
static int state_diff(const struct inf_state *a, const struct inf_state *b)
{
    const struct inf_config *c = &a->cfg;
    if (a->pos != b->pos)
        return INT32_MAX;
    for (int l = 0; l < c->num_hidden_layers; l++) {
        const struct inf_layer_state *x = &a->layers[l], *y = &b->layers[l];
        size_t cb = carry_bytes(c, x->ratio), ib = icarry_bytes(c, x->ratio);
        if (x->n_cache != y->n_cache || memcmp(x->ring, y->ring, ring_bytes(c)) ||
            (cb && (memcmp(x->c_kv, y->c_kv, cb) || memcmp(x->c_sc, y->c_sc, cb))) ||
            (ib && (memcmp(x->ic_kv, y->ic_kv, ib) || memcmp(x->ic_sc, y->ic_sc, ib))) ||
            (x->n_cache && memcmp(x->cache, y->cache, sizeof(float) * (size_t)x->n_cache * c->head_dim)) ||
            (x->n_cache && x->ratio == 4 &&
             memcmp(x->icache, y->icache, sizeof(float) * (size_t)x->n_cache * c->index_head_dim)))
            return l;
    }
    return -1;
}

/* ---- the disk path: the daemon's checkpoint store ------------------------------------------- */

static const char *MODEL_KEY = "bench-gpu-restore";

/* Save st as one checkpoint of a new lineage (what daemon/repos.c's checkpoint() writes). */
static int store_save(struct store_kv *kv, const struct inf_state *st, struct store_kv_ckpt *ck, struct ctx_err *e)
{
    int ns = 2 * st->n_layers, rc;
    struct store_kv_stream *sv = calloc((size_t)ns, sizeof *sv);
    int32_t *tok = calloc((size_t)st->pos + 1, sizeof *tok);
    uint8_t *b = NULL;
    size_t blen = 0;
    int64_t lineage = 0;
    if (!sv || !tok) {
        free(sv);
        free(tok);
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    }
    struct store_kv_state_src *src = calloc((size_t)ns, sizeof *src);
    if (!src) {
        free(sv);
        free(tok);
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    }
    store_kv_state_streams(st, sv, src);
    struct store_kv_hash h;
    store_kv_prefix_hash(MODEL_KEY, tok, (size_t)st->pos, &h);
    if (!(rc = inf_state_boundary(st, &b, &blen, e)) && !(rc = store_kv_lineage_new(kv, MODEL_KEY, ns, &lineage, e)) &&
        !(rc = store_kv_put(kv, lineage, (uint64_t)st->pos, &h, b, blen, sv, ns, e)))
        rc = store_kv_get(kv, lineage, (uint64_t)st->pos, ck, e);
    free(b);
    free(sv);
    free(src);
    free(tok);
    return rc;
}

/* Files under the cache directory (nftw has no user pointer: one walk at a time). */
struct file_list {
    char **path;
    long long *size;
    int n, cap;
};
static struct file_list *g_walk;
static int walk_cb(const char *p, const struct stat *sb, int flag, struct FTW *f)
{
    (void)f;
    if (flag != FTW_F || !S_ISREG(sb->st_mode))
        return 0;
    struct file_list *L = g_walk;
    if (L->n == L->cap) {
        int cap = L->cap ? 2 * L->cap : 64;
        char **np = realloc(L->path, sizeof(char *) * (size_t)cap);
        long long *ns = realloc(L->size, sizeof(long long) * (size_t)cap);
        if (!np || !ns) {
            free(np ? np : L->path);
            L->path = NULL;
            return 1;
        }
        L->path = np;
        L->size = ns;
        L->cap = cap;
    }
    L->path[L->n] = strdup(p);
    L->size[L->n++] = (long long)sb->st_size;
    return 0;
}
static void list_files(const char *dir, struct file_list *L)
{
    memset(L, 0, sizeof *L);
    g_walk = L;
    nftw(dir, walk_cb, 16, FTW_PHYS);
    g_walk = NULL;
}
static void free_files(struct file_list *L)
{
    for (int i = 0; i < L->n; i++)
        free(L->path[i]);
    free(L->path);
    free(L->size);
}

/* Evict the files from the page cache: drop_caches where allowed (root), and POSIX_FADV_DONTNEED on
 * every file in any case. Returns the fraction of the files' pages still resident (mincore). */
static int dropped_by_proc;
static double drop_cache(const char *dir)
{
    struct file_list L;
    sync();
    FILE *f = fopen("/proc/sys/vm/drop_caches", "w");
    dropped_by_proc = f && fputs("3\n", f) >= 0;
    if (f && fclose(f))
        dropped_by_proc = 0;
    list_files(dir, &L);
    double res = 0, tot = 0;
    long pg = sysconf(_SC_PAGESIZE);
    for (int i = 0; i < L.n; i++) {
        int fd = open(L.path[i], O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        fdatasync(fd);
        posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        size_t sz = (size_t)L.size[i], np = (sz + (size_t)pg - 1) / (size_t)pg;
        void *m = sz ? mmap(NULL, sz, PROT_READ, MAP_SHARED, fd, 0) : MAP_FAILED;
        unsigned char *v = np ? malloc(np) : NULL;
        if (m != MAP_FAILED && v && mincore(m, sz, v) == 0) {
            for (size_t k = 0; k < np; k++)
                res += v[k] & 1;
            tot += (double)np;
        }
        free(v);
        if (m != MAP_FAILED)
            munmap(m, sz);
        close(fd);
    }
    free_files(&L);
    return tot > 0 ? res / tot : 0;
}

/* Sequential reads of the files (16 MiB requests, O_DIRECT unless `direct` is 0), by `nth` threads
 * taking 16 MiB pieces in file order: the disk's floor for reading the checkpoint. Returns GB/s, 0
 * on error. */
#define DIO_BLOCK ((size_t)16 << 20)
struct dio {
    struct file_list *L;
    long long *first; /* first piece index of each file */
    long long npieces;
    atomic_llong next;
    atomic_llong bytes;
    int direct, err;
};
static void *dio_worker(void *ud)
{
    struct dio *d = ud;
    void *buf = NULL;
    if (posix_memalign(&buf, 4096, DIO_BLOCK)) {
        d->err = ENOMEM;
        return NULL;
    }
    int cur = -1, fd = -1;
    for (;;) {
        long long k = atomic_fetch_add(&d->next, 1);
        if (k >= d->npieces)
            break;
        int f = 0;
        while (f + 1 < d->L->n && d->first[f + 1] <= k)
            f++;
        if (f != cur) {
            if (fd >= 0)
                close(fd);
            fd = open(d->L->path[f], O_RDONLY | O_CLOEXEC | (d->direct ? O_DIRECT : 0));
            cur = f;
            if (fd < 0) {
                d->err = errno;
                break;
            }
        }
        off_t off = (off_t)((k - d->first[f]) * (long long)DIO_BLOCK);
        ssize_t got = pread(fd, buf, DIO_BLOCK, off);
        if (got < 0) {
            d->err = errno;
            break;
        }
        atomic_fetch_add(&d->bytes, (long long)got);
    }
    if (fd >= 0)
        close(fd);
    free(buf);
    return NULL;
}
static double direct_read_gbps(const char *dir, int nth, int direct, double *bytes_out)
{
    struct file_list L;
    list_files(dir, &L);
    struct dio d = {.L = &L, .direct = direct};
    d.first = calloc((size_t)L.n + 1, sizeof(long long));
    for (int i = 0; i < L.n; i++)
        d.first[i + 1] = d.first[i] + (L.size[i] + (long long)DIO_BLOCK - 1) / (long long)DIO_BLOCK;
    d.npieces = L.n ? d.first[L.n] : 0;
    atomic_init(&d.next, 0);
    atomic_init(&d.bytes, 0);
    pthread_t th[64];
    if (nth > 64)
        nth = 64;
    double t0 = bench_now();
    for (int i = 0; i < nth; i++)
        pthread_create(&th[i], NULL, dio_worker, &d);
    for (int i = 0; i < nth; i++)
        pthread_join(th[i], NULL);
    double t = bench_now() - t0;
    free(d.first);
    free_files(&L);
    if (d.err) {
        fprintf(stderr, "bench-gpu-restore: %s read: %s\n", direct ? "O_DIRECT" : "buffered", strerror(d.err));
        return 0;
    }
    *bytes_out = (double)atomic_load(&d.bytes);
    return *bytes_out / t / 1e9;
}

/* Peak pinned host-to-device bandwidth: cudaMemcpy of `bytes` from cudaHostAlloc memory, median. */
static double h2d_peak_gbps(size_t bytes, int iters)
{
    void *h = NULL, *d = NULL;
    cudaEvent_t a, b;
    double *ms = calloc((size_t)iters, sizeof *ms), r = 0;
    if (!cuda_ok(cudaHostAlloc(&h, bytes, cudaHostAllocDefault), "cudaHostAlloc") ||
        !cuda_ok(cudaMalloc(&d, bytes), "cudaMalloc"))
        goto out;
    memset(h, 1, bytes);
    cudaEventCreate(&a);
    cudaEventCreate(&b);
    for (int i = -2; i < iters; i++) {
        cudaEventRecord(a, 0);
        cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice);
        cudaEventRecord(b, 0);
        cudaEventSynchronize(b);
        float t;
        cudaEventElapsedTime(&t, a, b);
        if (i >= 0)
            ms[i] = t;
    }
    r = (double)bytes / (bench_median(ms, iters) * 1e-3) / 1e9;
    cudaEventDestroy(a);
    cudaEventDestroy(b);
out:
    cudaFreeHost(h);
    cudaFree(d);
    free(ms);
    return r;
}

static int time_upload(struct cuda_engine *g, const struct inf_state *st, int reps, double *med, double *mn)
{
    struct ctx_err e = {0};
    double *t = calloc((size_t)reps, sizeof *t);
    for (int i = 0; i < reps; i++) {
        double a = bench_now();
        if (cuda_engine_state_upload(g, st, &e)) {
            free(t);
            return fail("upload", &e);
        }
        t[i] = bench_now() - a;
    }
    *med = bench_median(t, reps);
    *mn = t[0];
    free(t);
    return 0;
}

/* ---- bench ------------------------------------------------------------------------------------ */

static int cmd_bench(int argc, char **argv)
{
    long long ctx = 500000;
    int reps = 10, disk_reps = 3;
    const char *dir = "/tmp/bench-gpu-restore";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--ctx") && i + 1 < argc)
            ctx = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--disk-reps") && i + 1 < argc)
            disk_reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--dir") && i + 1 < argc)
            dir = argv[++i];
        else {
            fprintf(stderr, "usage: bench-gpu-restore bench [--ctx N] [--reps N] [--disk-reps N] [--dir DIR]\n");
            return 2;
        }
    }
    if (ctx < 1 || reps < 1 || disk_reps < 1) {
        fprintf(stderr, "bench-gpu-restore: --ctx, --reps and --disk-reps must be positive\n");
        return 2;
    }
    struct ctx_err e = {0};
    struct inf_config c;
    if (flash_state_config(&c, &e))
        return fail("config", &e);
    struct ctx_pool *pool = ctx_pool_new(0, &e);
    if (!pool)
        return fail("pool", &e);
    struct inf_weights *w = NULL;
    struct cuda_engine *g = NULL;
    struct inf_state *s0 = NULL, *s1 = NULL;
    struct store_kv *kv = NULL;
    struct store_kv_ckpt ck = {0};
    int rc = 1;
    double t0 = bench_now();
    if (inf_weights_synthetic(&c, 1, &w, &e)) {
        fail("weights", &e);
        goto out;
    }
    struct cuda_engine_opts o = {.max_chunk = 16, .max_ctx = ctx + 16};
    if (cuda_engine_new(w, &o, &g, &e)) {
        fail("engine", &e);
        goto out;
    }
    size_t wb = 0, sb = 0;
    cuda_engine_memory(g, &wb, &sb);
    double t1 = bench_now();
    if (synthetic_state(&c, ctx, 7, pool, &s0, &e) || inf_state_new(&c, &s1, &e)) {
        fail("host state", &e);
        goto out;
    }
    for (int l = 0; l < c.num_hidden_layers; l++)
        if (s0->layers[l].n_cache && inf_state_reserve(s1, l, s0->layers[l].n_cache, &e)) {
            fail("host state", &e);
            goto out;
        }
    double t2 = bench_now();
    double pinned0 = pin_state(s0, 1), pinned1 = pin_state(s1, 1);
    if (pinned0 < 0 || pinned1 < 0)
        goto out;
    double t3 = bench_now();
    double ub = upload_bytes(&c, ctx), pb = packed_bytes(&c, ctx);
    int ncsa = 0, nhca = 0;
    for (int l = 0; l < c.num_hidden_layers; l++)
        ncsa += c.compress_ratios[l] == 4, nhca += c.compress_ratios[l] == 128;
    fprintf(stderr, "# engine (weights %.1f MB, device state+scratch %.1f MB) %.1f s; host state %.1f s; "
                    "cudaHostRegister of both states %.1f s (%.3f GB of the first pinned)\n",
            wb / 1e6, sb / 1e6, t1 - t0, t2 - t1, t3 - t2, pinned0 / 1e9);

    double peak = h2d_peak_gbps((size_t)1 << 30, 10);
    printf("state: V4-Flash shape at %lld tokens: %d layers (%d sliding, %d CSA, %d HCA), window %d, head_dim %d, "
           "indexer keys %d; %lld CSA entries and %lld HCA entries per layer\n",
           ctx, c.num_hidden_layers, c.num_hidden_layers - ncsa - nhca, ncsa, nhca, c.sliding_window, c.head_dim,
           c.index_head_dim, ctx / 4, ctx / 128);
    printf("bytes: this engine's layout (fp32 entries, rings, carries): %.0f (%.3f GB); packed entries of spec "
           "5.3 (584 B + 68 B indexer): %.0f (%.3f GB)\n",
           ub, ub / 1e9, pb, pb / 1e9);
    printf("pinned: %.3f GB registered with cudaHostRegister (the allocated capacity of the rings, entry and "
           "indexer-key buffers; the carries, a few KB per layer, stay pageable)\n",
           pinned0 / 1e9);
    printf("floor, pinned host-to-device: cudaMemcpy of 1 GiB from cudaHostAlloc memory, median of 10: %.1f GB/s\n\n",
           peak);

    /* (a) pinned and pageable uploads */
    double med_pin, first_pin, med_pg, first_pg;
    if (time_upload(g, s0, reps, &med_pin, &first_pin))
        goto out;
    /* the device holds what was sent: download it back and compare */
    if (cuda_engine_state_download(g, s1, &e)) {
        fail("download", &e);
        goto out;
    }
    int diff = state_diff(s0, s1);
    if (pin_state(s0, 0) < 0)
        goto out;
    int preps = reps < 3 ? reps : 3;
    if (time_upload(g, s0, preps, &med_pg, &first_pg))
        goto out;
    if (pin_state(s0, 1) < 0)
        goto out;
    double floor_pin = ub / (peak * 1e9);
    printf("| restore of %lld tokens | bytes GB | median s | GB/s | floor s | of floor | goal s |\n", ctx);
    printf("|---|---|---|---|---|---|---|\n");
    printf("| pinned host -> GPU, cuda_engine_state_upload (median of %d) | %.3f | %.4f | %.1f | %.4f | %.0f%% | 0.1 |\n",
           reps, ub / 1e9, med_pin, ub / med_pin / 1e9, floor_pin, 100 * floor_pin / med_pin);
    printf("| pageable host -> GPU, same call, buffers not registered (median of %d) | %.3f | %.4f | %.1f | %.4f | "
           "%.0f%% | |\n",
           preps, ub / 1e9, med_pg, ub / med_pg / 1e9, floor_pin, 100 * floor_pin / med_pg);
    fflush(stdout);
    fprintf(stderr, "# upload -> download round trip of the %lld-token state: %s\n", ctx,
            diff < 0 ? "bit-identical" : "DIFFERS");
    if (diff >= 0) {
        fprintf(stderr, "bench-gpu-restore: downloaded state differs from the uploaded one at layer %d\n", diff);
        goto out;
    }

    /* (b) disk: the daemon's checkpoint store. s1 is cleared first, so that the comparison with s0
     * afterwards shows what the restore brought back. */
    inf_state_reset(s1);
    for (int l = 0; l < c.num_hidden_layers; l++) {
        struct inf_layer_state *L = &s1->layers[l];
        if (L->cap_cache)
            memset(L->cache, 0, sizeof(float) * (size_t)L->cap_cache * c.head_dim);
        if (L->cap_cache && L->ratio == 4)
            memset(L->icache, 0, sizeof(float) * (size_t)L->cap_cache * c.index_head_dim);
    }
    mkdir(dir, 0755);
    if (store_kv_open(dir, &kv, &e) || store_kv_clear(kv, &e)) {
        fail("kv store", &e);
        goto out;
    }
    double w0 = bench_now();
    if (store_save(kv, s0, &ck, &e)) {
        fail("checkpoint write", &e);
        goto out;
    }
    double wt = bench_now() - w0;
    struct file_list fl;
    list_files(dir, &fl);
    double disk_bytes = 0;
    for (int i = 0; i < fl.n; i++)
        disk_bytes += (double)fl.size[i];
    free_files(&fl);
    fprintf(stderr, "# checkpoint written through store_kv_put: %.3f GB in %.1f s (%.2f GB/s, fsynced)\n",
            disk_bytes / 1e9, wt, disk_bytes / wt / 1e9);

    /* the disk's floor first: O_DIRECT reads of the same files, cold (buffered reads where the file
     * system refuses O_DIRECT, said so) */
    double dbytes = 0, seq[8] = {0}, par[8] = {0};
    int nr = disk_reps < 8 ? disk_reps : 8, direct = 1;
    for (int i = 0; i < nr; i++) {
        drop_cache(dir);
        seq[i] = direct_read_gbps(dir, 1, direct, &dbytes);
        if (seq[i] <= 0 && direct) {
            direct = 0, i--;
            continue;
        }
        drop_cache(dir);
        par[i] = direct_read_gbps(dir, 8, direct, &dbytes);
    }
    double seq_bw = bench_median(seq, nr), par_bw = bench_median(par, nr), best_bw = seq_bw > par_bw ? seq_bw : par_bw;
    printf("floor, disk: %s sequential reads (16 MiB) of the checkpoint's %.3f GB, cold, median of %d: %.2f GB/s one "
           "thread, %.2f GB/s 8 threads (the floor uses the better)\n\n",
           direct ? "O_DIRECT" : "buffered (O_DIRECT refused)", dbytes / 1e9, nr, seq_bw, par_bw);
    /* reading is the bottleneck and the upload could overlap it: the floor is the read at the
     * disk's best sequential bandwidth */
    double floor_disk = disk_bytes / (best_bw * 1e9);

    double *tr = calloc((size_t)disk_reps, sizeof(double)), *tu = calloc((size_t)disk_reps, sizeof(double));
    double *tt = calloc((size_t)disk_reps, sizeof(double)), resid = 0;
    for (int i = 0; i < disk_reps; i++) {
        resid += drop_cache(dir) / disk_reps;
        double a = bench_now();
        if (store_kv_state_restore(kv, &ck, s1, &e)) {
            fail("restore", &e);
            goto out;
        }
        double b = bench_now();
        if (cuda_engine_state_upload(g, s1, &e)) {
            fail("upload", &e);
            goto out;
        }
        double d = bench_now();
        tr[i] = b - a, tu[i] = d - b, tt[i] = d - a;
        fprintf(stderr, "# cold restore %d: read %.3f s, upload %.4f s\n", i, tr[i], tu[i]);
    }
    diff = state_diff(s0, s1);
    double cold_r = bench_median(tr, disk_reps), cold_u = bench_median(tu, disk_reps), cold_t = bench_median(tt, disk_reps);
    printf("| disk (cold) -> pinned host -> GPU: store/kv read + XXH3 check + upload (median of %d) | %.3f | %.3f | "
           "%.2f | %.3f | %.0f%% | 1 |\n",
           disk_reps, disk_bytes / 1e9, cold_t, disk_bytes / cold_t / 1e9, floor_disk, 100 * floor_disk / cold_t);
    printf("|   of which the store read (cold) | | %.3f | %.2f | %.3f | %.0f%% | |\n", cold_r, disk_bytes / cold_r / 1e9,
           floor_disk, 100 * floor_disk / cold_r);
    printf("|   of which the upload | | %.4f | %.1f | %.4f | %.0f%% | |\n", cold_u, ub / cold_u / 1e9, floor_pin,
           100 * floor_pin / cold_u);
    /* warm: the same with the files in the page cache */
    for (int i = 0; i < disk_reps; i++) {
        double a = bench_now();
        if (store_kv_state_restore(kv, &ck, s1, &e)) {
            fail("restore", &e);
            goto out;
        }
        double b = bench_now();
        if (cuda_engine_state_upload(g, s1, &e)) {
            fail("upload", &e);
            goto out;
        }
        double d = bench_now();
        tr[i] = b - a, tu[i] = d - b, tt[i] = d - a;
    }
    double warm_r = bench_median(tr, disk_reps), warm_t = bench_median(tt, disk_reps);
    printf("| disk (warm, page cache) -> GPU, same path (median of %d) | %.3f | %.3f | %.2f | | | |\n", disk_reps,
           disk_bytes / 1e9, warm_t, disk_bytes / warm_t / 1e9);
    printf("|   of which the store read (warm) | | %.3f | %.2f | | | |\n", warm_r, disk_bytes / warm_r / 1e9);
    printf("| packed entries at the disk floor (computed) | %.3f | | | %.3f | | 1 |\n", pb / 1e9,
           pb / (best_bw * 1e9));

    /* (c) the GPU's restore path: the packed streams read as stored into pinned buffers
     * (store_kv_state_read_packed), uploaded packed and unpacked on the device
     * (cuda_engine_state_upload_packed); cold from disk, then from the pinned buffers alone */
    {
        int ns = ck.n_streams;
        void **bufs = calloc((size_t)ns, sizeof *bufs);
        long long *counts = calloc((size_t)c.num_hidden_layers, sizeof *counts);
        struct inf_state *sb = NULL;
        double pk_bytes = 0;
        int ok = bufs && counts && !inf_state_new(&c, &sb, &e);
        for (int k = 0; ok && k < ns; k++) {
            pk_bytes += (double)ck.stream_len[k];
            ok = cuda_ok(cudaHostAlloc(&bufs[k], ck.stream_len[k] + 1, cudaHostAllocDefault), "cudaHostAlloc");
        }
        for (int i = 0; ok && i < disk_reps; i++) {
            (void)drop_cache(dir); /* cold: as the rows above */
            double a = bench_now();
            if (store_kv_state_read_packed(kv, &ck, sb, bufs, counts, &e)) {
                fail("packed read", &e);
                ok = 0;
                break;
            }
            double b = bench_now();
            if (cuda_engine_state_upload_packed(g, sb, counts, (const void *const *)bufs, &e)) {
                fail("packed upload", &e);
                ok = 0;
                break;
            }
            double d = bench_now();
            tr[i] = b - a, tu[i] = d - b, tt[i] = d - a;
            fprintf(stderr, "# cold packed restore %d: read %.3f s, upload + unpack %.4f s\n", i, tr[i], tu[i]);
        }
        double *tp = calloc((size_t)reps, sizeof(double));
        for (int i = 0; ok && i < reps; i++) {
            double a = bench_now();
            if (cuda_engine_state_upload_packed(g, sb, counts, (const void *const *)bufs, &e)) {
                fail("packed upload", &e);
                ok = 0;
                break;
            }
            tp[i] = bench_now() - a;
        }
        int pdiff = 0;
        if (ok && cuda_engine_state_download(g, s1, &e)) {
            fail("download", &e);
            ok = 0;
        }
        if (ok)
            pdiff = state_diff(s0, s1);
        if (ok) {
            double pc_r = bench_median(tr, disk_reps), pc_u = bench_median(tu, disk_reps), pc_t = bench_median(tt, disk_reps);
            double pp = bench_median(tp, reps), floor_pp = pk_bytes / (peak * 1e9), floor_pd = pk_bytes / (best_bw * 1e9);
            printf("| pinned packed host -> GPU, cuda_engine_state_upload_packed (unpacked on the device; median of %d) "
                   "| %.3f | %.4f | %.1f | %.4f | %.0f%% | 0.1 |\n",
                   reps, pk_bytes / 1e9, pp, pk_bytes / pp / 1e9, floor_pp, 100 * floor_pp / pp);
            printf("| disk (cold) -> pinned packed -> GPU: store_kv_state_read_packed + upload_packed (median of %d) | "
                   "%.3f | %.3f | %.2f | %.3f | %.0f%% | 1 |\n",
                   disk_reps, pk_bytes / 1e9, pc_t, pk_bytes / pc_t / 1e9, floor_pd, 100 * floor_pd / pc_t);
            printf("|   of which the store read (cold) | | %.3f | %.2f | %.3f | %.0f%% | |\n", pc_r, pk_bytes / pc_r / 1e9,
                   floor_pd, 100 * floor_pd / pc_r);
            printf("|   of which the upload + unpack | | %.4f | %.1f | %.4f | %.0f%% | |\n", pc_u, pk_bytes / pc_u / 1e9,
                   floor_pp, 100 * floor_pp / pc_u);
            printf("packed restore (disk -> pinned packed -> GPU) downloaded back vs the saved state: %s\n",
                   pdiff < 0 ? "bit-identical" : "DIFFERS");
            if (pdiff >= 0)
                diff = pdiff;
        }
        free(tp);
        for (int k = 0; bufs && k < ns; k++)
            if (bufs[k])
                cudaFreeHost(bufs[k]);
        free(bufs);
        free(counts);
        inf_state_free(sb);
        if (!ok)
            goto out;
    }
    /* (d) the ctxd path (daemon/repos.c's start_from_cache with --backend cuda): a fresh inf_state,
     * buffers from the accelerator (inf_accel_host_alloc: malloc for the CUDA accel), the packed read, the
     * accelerator's restore (inf_accel_restore_packed: upload + unpack + bind), the buffers handed to
     * inf_accel_fill_host; cold and warm. Then the snapshot ctxd takes right after it (the boundary
     * only, the host copy left lagging) and what the first sync costs right after (it waits for the
     * background fill), and ctxd's host path without the packed op for comparison: a
     * fresh inf_state (not registered), store_kv_state_restore, the whole upload from pageable memory. */
    {
        struct inf_accel *A = NULL;
        struct cuda_accel_opts co = {.max_ctx = ctx + 16, .max_chunk = 16};
        if (cuda_accel_new(w, &co, &A, &e)) {
            fail("accelerator", &e);
            goto out;
        }
        int ns = ck.n_streams, ok = 1, xdiff = 0;
        double pk_bytes = 0;
        for (int k = 0; k < ns; k++)
            pk_bytes += (double)ck.stream_len[k];
        void **bufs = calloc((size_t)ns, sizeof *bufs);
        long long *counts = calloc((size_t)(c.num_hidden_layers + c.num_nextn_predict_layers) + 1, sizeof *counts);
        double *ta = calloc((size_t)disk_reps, sizeof(double)), *tw = calloc((size_t)disk_reps, sizeof(double));
        double *ts = calloc((size_t)disk_reps, sizeof(double)), *th = calloc((size_t)disk_reps, sizeof(double));
        double *thr = calloc((size_t)disk_reps, sizeof(double)), *tsn = calloc((size_t)disk_reps, sizeof(double));
        struct inf_state *sx = NULL;
        ok = bufs && counts && ta && tw && ts && th && thr && tsn;
        int snap_entries = 0; /* snapshots after the restore that downloaded entries (must stay 0) */
        for (int i = 0; ok && i < 2 * disk_reps; i++) {
            int cold = i < disk_reps;
            if (cold)
                (void)drop_cache(dir);
            inf_state_free(sx);
            sx = NULL;
            double a = bench_now();
            if (inf_state_new(&c, &sx, &e)) {
                fail("state", &e);
                ok = 0;
                break;
            }
            for (int k = 0; ok && k < ns; k++)
                if (!(bufs[k] = inf_accel_host_alloc(A, (size_t)ck.stream_len[k]))) {
                    fprintf(stderr, "bench-gpu-restore: inf_accel_host_alloc of %llu bytes failed\n",
                            (unsigned long long)ck.stream_len[k]);
                    ok = 0;
                }
            double b = bench_now();
            if (ok && store_kv_state_read_packed(kv, &ck, sx, bufs, counts, &e)) {
                fail("packed read", &e);
                ok = 0;
            }
            double d = bench_now();
            if (ok && inf_accel_restore_packed(A, sx, counts, (const void *const *)bufs, &e)) {
                fail("inf_accel_restore_packed", &e);
                ok = 0;
            }
            /* ctxd then hands the buffers to the background fill of the host copy (they are its
             * now: freed when it ends, or stopped early by the next round's inf_state_free) */
            if (ok && inf_accel_fill_host(A, sx, counts, bufs, ns, &e)) {
                fail("inf_accel_fill_host", &e);
                ok = 0;
            }
            double f = bench_now();
            for (int k = 0; k < ns; k++)
                bufs[k] = NULL;
            double g2 = bench_now();
            if (!ok)
                break;
            if (!cold) {
                tw[i - disk_reps] = g2 - a;
                continue;
            }
            ta[i] = (b - a) + (g2 - f), tr[i] = d - b, tu[i] = f - d, tt[i] = g2 - a;
            /* ctxd's "ready" snapshot (daemon/repos.c, after the prefill): a device mark and the
             * boundary from the device, the host copy left lagging (no entry downloaded) */
            struct inf_accel_stats as0, as1;
            inf_accel_stats(A, &as0);
            struct inf_snapshot *sn = NULL;
            double s = bench_now();
            if (inf_state_snapshot(sx, &sn, &e)) {
                fail("inf_state_snapshot", &e);
                ok = 0;
                break;
            }
            tsn[i] = bench_now() - s;
            inf_snapshot_free(sn);
            inf_accel_stats(A, &as1);
            snap_entries += as1.downloads != as0.downloads;
            s = bench_now();
            if (inf_state_sync(sx, &e)) {
                fail("inf_state_sync", &e);
                ok = 0;
                break;
            }
            ts[i] = bench_now() - s;
            if (i == 0)
                xdiff = state_diff(s0, sx);
            fprintf(stderr,
                    "# ctxd path, cold %d: alloc+free %.3f s, read %.3f s, restore %.4f s; snapshot after %.4f s, "
                    "sync after %.3f s\n",
                    i, ta[i], tr[i], tu[i], tsn[i], ts[i]);
        }
        inf_state_free(sx);
        for (int i = 0; ok && i < disk_reps; i++) {
            (void)drop_cache(dir);
            struct inf_state *sh = NULL;
            double a = bench_now();
            if (inf_state_new(&c, &sh, &e) || store_kv_state_restore(kv, &ck, sh, &e)) {
                fail("host restore", &e);
                ok = 0;
            }
            double b = bench_now();
            if (ok && cuda_engine_state_upload(g, sh, &e)) {
                fail("upload", &e);
                ok = 0;
            }
            th[i] = bench_now() - a, thr[i] = b - a;
            inf_state_free(sh);
        }
        if (ok) {
            double x_t = bench_median(tt, disk_reps), x_a = bench_median(ta, disk_reps), x_r = bench_median(tr, disk_reps);
            double x_u = bench_median(tu, disk_reps), x_w = bench_median(tw, disk_reps), x_s = bench_median(ts, disk_reps);
            double x_sn = bench_median(tsn, disk_reps), mb = (double)cuda_engine_mark_bytes(&c, 0, 0);
            double h_t = bench_median(th, disk_reps), h_r = bench_median(thr, disk_reps);
            double floor_pp = pk_bytes / (peak * 1e9), floor_d2h = ub / (peak * 1e9);
            printf("| ctxd path, disk (cold) -> inf_accel_host_alloc (pageable) -> store_kv_state_read_packed -> "
                   "inf_accel_restore_packed (median of %d) | %.3f | %.3f | %.2f | %.3f | %.0f%% | 1 |\n",
                   disk_reps, pk_bytes / 1e9, x_t, pk_bytes / x_t / 1e9, floor_disk, 100 * floor_disk / x_t);
            printf("|   of which fresh inf_state + inf_accel_host_alloc of the streams + inf_accel_fill_host's start | | %.3f | | | | |\n", x_a);
            printf("|   of which the store read (cold) | | %.3f | %.2f | %.3f | %.0f%% | |\n", x_r, pk_bytes / x_r / 1e9,
                   floor_disk, 100 * floor_disk / x_r);
            printf("|   of which inf_accel_restore_packed (upload + unpack + bind) | | %.4f | %.1f | %.4f | %.0f%% | |\n",
                   x_u, pk_bytes / x_u / 1e9, floor_pp, 100 * floor_pp / x_u);
            printf("| ctxd path, disk (warm, page cache), same steps (median of %d) | %.3f | %.3f | %.2f | | | |\n",
                   disk_reps, pk_bytes / 1e9, x_w, pk_bytes / x_w / 1e9);
            printf("| snapshot after it: inf_state_snapshot (ctxd's ready snapshot: device mark + rings, carries and "
                   "position downloaded, no entry; median of %d) | %.4f | %.4f | %.2f | %.5f | %.0f%% | |\n",
                   disk_reps, mb / 1e9, x_sn, mb / x_sn / 1e9, mb / (peak * 1e9), 100 * mb / (peak * 1e9) / x_sn);
            printf("| first inf_state_sync right after it: waits for the background fill of the host copy "
                   "(inf_accel_fill_host: the %.3f GB unpacked on the host from the read buffers), then downloads "
                   "only newer entries (none here; what the first checkpoint pays at the latest; median of %d) | "
                   "%.3f | %.3f | %.1f | %.4f | %.0f%% | |\n",
                   ub / 1e9, disk_reps, ub / 1e9, x_s, ub / x_s / 1e9, floor_d2h, 100 * floor_d2h / x_s);
            printf("| ctxd host path (no packed op), disk (cold) -> store_kv_state_restore into a fresh inf_state -> "
                   "cuda_engine_state_upload, pageable (median of %d) | %.3f | %.3f | %.2f | %.3f | %.0f%% | 1 |\n",
                   disk_reps, disk_bytes / 1e9, h_t, disk_bytes / h_t / 1e9, floor_disk, 100 * floor_disk / h_t);
            printf("|   of which the fresh state + store_kv_state_restore (cold) | | %.3f | %.2f | %.3f | %.0f%% | |\n",
                   h_r, disk_bytes / h_r / 1e9, floor_disk, 100 * floor_disk / h_r);
            printf("ctxd path vs ctxd host path: %.2fx faster to a usable device state\n", h_t / x_t);
            printf("ctxd path to a ready repository (restore + snapshot): %.3f s (restore + a sync, its host copy "
                   "complete: %.3f s); snapshots that downloaded entries: %d of %d\n",
                   x_t + x_sn, x_t + x_s, snap_entries, disk_reps);
            printf("ctxd path (inf_accel_restore_packed, then inf_state_sync) vs the saved state: %s\n",
                   xdiff < 0 ? "bit-identical" : "DIFFERS");
            if (xdiff >= 0)
                diff = xdiff;
        }
        free(bufs);
        free(counts);
        free(ta);
        free(tw);
        free(ts);
        free(tsn);
        free(th);
        free(thr);
        inf_accel_free(A);
        if (!ok)
            goto out;
    }
    printf("\npage cache before each cold read: %s + POSIX_FADV_DONTNEED; resident pages measured by mincore: "
           "%.2f%%\n",
           dropped_by_proc ? "drop_caches (3) written" : "drop_caches NOT allowed", 100 * resid);
    printf("restored-from-disk state vs the saved one: %s\n", diff < 0 ? "bit-identical" : "DIFFERS");
    free(tr);
    free(tu);
    free(tt);
    rc = diff < 0 ? 0 : 1;
out:
    if (s0)
        pin_state(s0, 0);
    if (s1)
        pin_state(s1, 0);
    store_kv_ckpt_clear(&ck);
    if (kv) {
        struct ctx_err e2 = {0};
        store_kv_clear(kv, &e2);
        store_kv_close(kv);
    }
    inf_state_free(s0);
    inf_state_free(s1);
    cuda_engine_free(g);
    inf_weights_free(w);
    ctx_pool_free(pool);
    return rc;
}

/* ---- roundtrip ----------------------------------------------------------------------------- */

static void tokens_of(int *tok, int n, int vocab, unsigned long long seed)
{
    tok[0] = 0;
    for (int i = 1; i < n; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        tok[i] = 2 + (int)((seed >> 33) % (unsigned long long)(vocab - 2));
    }
}

static int logits_cmp(const char *what, const float *a, const float *b, int n)
{
    double mx = 0;
    for (int i = 0; i < n; i++)
        mx = fmax(mx, fabs((double)a[i] - (double)b[i]));
    int same = !memcmp(a, b, sizeof(float) * (size_t)n);
    printf("| %s | %s | %.3g |\n", what, same ? "yes" : "NO", mx);
    return same ? 0 : 1;
}

static int cmd_roundtrip(int argc, char **argv)
{
    long long ctx = 1029;
    const char *dir = "/tmp/bench-gpu-restore-rt", *model = "tiny";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--ctx") && i + 1 < argc)
            ctx = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--dir") && i + 1 < argc)
            dir = argv[++i];
        else if (!strcmp(argv[i], "--model") && i + 1 < argc)
            model = argv[++i];
        else {
            fprintf(stderr, "usage: bench-gpu-restore roundtrip [--ctx N] [--dir DIR] [--model DIR|NAME|flash43s]\n");
            return 2;
        }
    }
    if (ctx < 1 || ctx > 1 << 20) {
        fprintf(stderr, "bench-gpu-restore: --ctx must be in 1..2^20\n");
        return 2;
    }
    struct ctx_err e = {0};
    struct inf_weights *w = NULL;
    struct cuda_engine *g = NULL;
    struct inf_state *sa = NULL, *sb = NULL;
    struct store_kv *kv = NULL;
    struct store_kv_ckpt ck = {0};
    int rc = 1, n = (int)ctx;
    if (open_model(model, &w, &e))
        return fail(model, &e);
    const struct inf_config *c = inf_weights_config(w);
    int V = c->vocab_size;
    int *tok = malloc(sizeof(int) * (size_t)(n + 1)), *other = malloc(sizeof(int) * (size_t)(n + 1));
    float *l0 = malloc(sizeof(float) * (size_t)V), *l1 = malloc(sizeof(float) * (size_t)V);
    tokens_of(tok, n + 1, V, 11);
    tokens_of(other, n + 1, V, 99);
    struct cuda_engine_opts o = {.max_chunk = 128, .max_ctx = ctx + 8};
    if (cuda_engine_new(w, &o, &g, &e) || inf_state_new(c, &sa, &e) || inf_state_new(c, &sb, &e)) {
        fail("engine", &e);
        goto out;
    }
    /* the saved state and the reference: the decode step that follows it */
    if (cuda_engine_prefill(g, tok, n, NULL, &e) || cuda_engine_state_download(g, sa, &e) ||
        cuda_engine_decode(g, tok[n], l0, &e)) {
        fail("prefill", &e);
        goto out;
    }
    printf("Round trip, %s (%d layers), state saved at position %lld; decode of one token after the restore vs "
           "after the saved state\n\n| path | logits bit-identical | max abs diff |\n|---|---|---|\n",
           model, c->num_hidden_layers, ctx);
    /* (a) pinned host memory: dirty the device state first */
    int bad = 0;
    if (pin_state(sa, 1) < 0)
        goto out;
    cuda_engine_reset(g);
    if (cuda_engine_prefill(g, other, n / 2 + 1, NULL, &e) || cuda_engine_state_upload(g, sa, &e) ||
        cuda_engine_decode(g, tok[n], l1, &e)) {
        fail("pinned restore", &e);
        goto out;
    }
    bad |= logits_cmp("pinned host -> cuda_engine_state_upload", l0, l1, V);
    /* (b) disk, cold, through the checkpoint store, into another state */
    mkdir(dir, 0755);
    if (store_kv_open(dir, &kv, &e) || store_kv_clear(kv, &e) || store_save(kv, sa, &ck, &e)) {
        fail("checkpoint write", &e);
        goto out;
    }
    double resid = drop_cache(dir);
    cuda_engine_reset(g);
    if (cuda_engine_prefill(g, other, n / 3 + 1, NULL, &e) || store_kv_state_restore(kv, &ck, sb, &e) ||
        cuda_engine_state_upload(g, sb, &e) || cuda_engine_decode(g, tok[n], l1, &e)) {
        fail("disk restore", &e);
        goto out;
    }
    char what[128];
    snprintf(what, sizeof what, "disk (store/kv, cold: %.1f%% resident) -> cuda_engine_state_upload", 100 * resid);
    bad |= logits_cmp(what, l0, l1, V);
    rc = bad;
out:
    if (sa)
        pin_state(sa, 0);
    store_kv_ckpt_clear(&ck);
    if (kv) {
        struct ctx_err e2 = {0};
        store_kv_clear(kv, &e2);
        store_kv_close(kv);
    }
    free(tok);
    free(other);
    free(l0);
    free(l1);
    inf_state_free(sa);
    inf_state_free(sb);
    cuda_engine_free(g);
    inf_weights_free(w);
    return rc;
}

/* ---- logits (side_by_side.py) --------------------------------------------------------------- */

static int read_i32s(const char *path, int32_t **out, long *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    *out = malloc((size_t)sz + 4);
    *n = sz / 4;
    size_t got = fread(*out, 4, (size_t)*n, f);
    fclose(f);
    return got == (size_t)*n ? 0 : -1;
}

static int cmd_logits(int argc, char **argv)
{
    const char *model = NULL, *tokf = NULL, *outf = NULL;
    int reps = 3;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc)
            model = argv[++i];
        else if (!strcmp(argv[i], "--tokens") && i + 1 < argc)
            tokf = argv[++i];
        else if (!strcmp(argv[i], "--out") && i + 1 < argc)
            outf = argv[++i];
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else
            model = NULL, i = argc;
    }
    if (!model || !tokf || !outf || reps < 1) {
        fprintf(stderr, "usage: bench-gpu-restore logits --model DIR --tokens FILE --out FILE [--reps N]\n");
        return 2;
    }
    int32_t *tv = NULL;
    long nt = 0;
    if (read_i32s(tokf, &tv, &nt) || nt < 1) {
        fprintf(stderr, "bench-gpu-restore: cannot read %s\n", tokf);
        return 1;
    }
    /* validate the sequence table before anything is allocated for it */
    int nseq = tv[0];
    long at = 1, maxlen = 0;
    for (int s = 0; s < nseq; s++) {
        if (at + 2 > nt || tv[at] < 1 || tv[at + 1] < 0 || at + 2 + tv[at] + tv[at + 1] > nt) {
            fprintf(stderr, "bench-gpu-restore: %s: sequence %d is truncated or malformed\n", tokf, s);
            free(tv);
            return 1;
        }
        long len = tv[at] + tv[at + 1];
        maxlen = len > maxlen ? len : maxlen;
        at += 2 + len;
    }
    struct ctx_err e = {0};
    struct inf_weights *w = NULL;
    struct cuda_engine *g = NULL;
    double t0 = bench_now();
    if (open_model(model, &w, &e)) {
        free(tv);
        return fail(model, &e);
    }
    const struct inf_config *c = inf_weights_config(w);
    double t1 = bench_now();
    struct cuda_engine_opts o = {.max_chunk = 256, .max_ctx = maxlen + 8};
    if (cuda_engine_new(w, &o, &g, &e)) {
        inf_weights_free(w);
        free(tv);
        return fail("engine", &e);
    }
    double t2 = bench_now();
    FILE *fo = fopen(outf, "wb");
    int V = c->vocab_size, rc = fo ? 0 : 1;
    float *lg = malloc(sizeof(float) * (size_t)V * (size_t)(maxlen + 1));
    float *prev = malloc(sizeof(float) * (size_t)V * (size_t)(maxlen + 1));
    double *dt = malloc(sizeof(double) * (size_t)(maxlen + 1) * (size_t)reps), *pt = malloc(sizeof(double) * (size_t)reps);
    printf("{\"model\": \"%s\", \"load_s\": %.3f, \"engine_new_s\": %.3f, \"seqs\": [", model, t1 - t0, t2 - t1);
    at = 1;
    for (int s = 0; !rc && s < nseq; s++) {
        int P = tv[at], T = tv[at + 1];
        const int *tok = tv + at + 2;
        int det = 1, nd = 0;
        for (int r = 0; !rc && r < reps; r++) {
            cuda_engine_reset(g);
            double a = bench_now();
            rc = cuda_engine_prefill(g, tok, P, lg, &e);
            pt[r] = bench_now() - a;
            for (int j = 0; !rc && j < T; j++) {
                double b = bench_now();
                rc = cuda_engine_decode(g, tok[P + j], lg + (size_t)(j + 1) * V, &e);
                dt[nd++] = bench_now() - b;
            }
            /* every repetition must give the same bits (the engine is deterministic) */
            if (!rc && r && memcmp(prev, lg, sizeof(float) * (size_t)V * (size_t)(T + 1)))
                det = 0;
            memcpy(prev, lg, sizeof(float) * (size_t)V * (size_t)(T + 1));
        }
        if (rc) {
            fail("forward", &e);
            break;
        }
        if (fwrite(lg, sizeof(float), (size_t)V * (size_t)(T + 1), fo) != (size_t)V * (size_t)(T + 1))
            rc = 1;
        double pmed = bench_median(pt, reps), dmed = nd ? bench_median(dt, nd) : 0;
        printf("%s{\"P\": %d, \"T\": %d, \"prefill_s\": %.6f, \"decode_s\": %.6f, \"reps\": %d, \"deterministic\": %s}",
               s ? ", " : "", P, T, pmed, dmed, reps, det ? "true" : "false");
        at += 2 + P + T;
    }
    printf("]}\n");
    if (fo && fclose(fo))
        rc = 1;
    free(prev);
    free(lg);
    free(dt);
    free(pt);
    free(tv);
    cuda_engine_free(g);
    inf_weights_free(w);
    return rc;
}

/* ---- write-ckpt -------------------------------------------------------------------------------- */

/* A float field written with a decimal point: transformers' strict config classes reject 10 for a
 * float field (swiglu_limit, attention_dropout), as the released configs never write it so. */
static void add_float(cJSON *j, const char *name, double v)
{
    char b[64];
    snprintf(b, sizeof b, "%.17g", v);
    if (!strpbrk(b, ".eEn"))
        strcat(b, ".0");
    cJSON_AddRawToObject(j, name, b);
}

/* config.json with the root names of the released configs (the keys and number types of
 * tests/fixtures/v4-tiny-a). */
static cJSON *config_json(const struct inf_config *c)
{
    cJSON *j = cJSON_CreateObject(), *a;
    const char *arch[] = {"DeepseekV4ForCausalLM"};
    cJSON_AddItemToObject(j, "architectures", cJSON_CreateStringArray(arch, 1));
    cJSON_AddBoolToObject(j, "attention_bias", 0);
    add_float(j, "attention_dropout", 0);
    cJSON_AddNumberToObject(j, "bos_token_id", c->bos_token_id);
    cJSON_AddNumberToObject(j, "eos_token_id", c->eos_token_id);
    cJSON_AddStringToObject(j, "expert_dtype", c->expert_dtype == INF_EXPERT_FP4 ? "fp4" : "fp8");
    add_float(j, "hc_eps", c->hc_eps);
    cJSON_AddNumberToObject(j, "hc_mult", c->hc_mult);
    cJSON_AddNumberToObject(j, "hc_sinkhorn_iters", c->hc_sinkhorn_iters);
    cJSON_AddNumberToObject(j, "head_dim", c->head_dim);
    cJSON_AddStringToObject(j, "hidden_act", "silu");
    cJSON_AddNumberToObject(j, "hidden_size", c->hidden_size);
    cJSON_AddNumberToObject(j, "index_head_dim", c->index_head_dim);
    cJSON_AddNumberToObject(j, "index_n_heads", c->index_n_heads);
    cJSON_AddNumberToObject(j, "index_topk", c->index_topk);
    add_float(j, "initializer_range", 0.02);
    cJSON_AddNumberToObject(j, "max_position_embeddings", (double)c->max_position_embeddings);
    cJSON_AddStringToObject(j, "model_type", "deepseek_v4");
    cJSON_AddNumberToObject(j, "moe_intermediate_size", c->moe_intermediate_size);
    cJSON_AddNumberToObject(j, "n_routed_experts", c->n_routed_experts);
    cJSON_AddNumberToObject(j, "n_shared_experts", c->n_shared_experts);
    cJSON_AddBoolToObject(j, "norm_topk_prob", c->norm_topk_prob);
    cJSON_AddNumberToObject(j, "num_attention_heads", c->num_attention_heads);
    cJSON_AddNumberToObject(j, "num_experts_per_tok", c->num_experts_per_tok);
    cJSON_AddNumberToObject(j, "num_hidden_layers", c->num_hidden_layers);
    cJSON_AddNumberToObject(j, "num_hash_layers", c->num_hash_layers);
    cJSON_AddNumberToObject(j, "num_key_value_heads", 1);
    cJSON_AddNumberToObject(j, "num_nextn_predict_layers", c->num_nextn_predict_layers);
    cJSON_AddNumberToObject(j, "o_groups", c->o_groups);
    cJSON_AddNumberToObject(j, "o_lora_rank", c->o_lora_rank);
    cJSON_AddNumberToObject(j, "q_lora_rank", c->q_lora_rank);
    cJSON_AddNumberToObject(j, "qk_rope_head_dim", c->qk_rope_head_dim);
    cJSON_AddItemToObject(j, "quantization_config", a = cJSON_CreateObject());
    cJSON_AddStringToObject(a, "activation_scheme", "dynamic");
    cJSON_AddStringToObject(a, "fmt", "e4m3");
    cJSON_AddStringToObject(a, "quant_method", "fp8");
    cJSON_AddStringToObject(a, "scale_fmt", "ue8m0");
    const int blk[] = {128, 128};
    cJSON_AddItemToObject(a, "weight_block_size", cJSON_CreateIntArray(blk, 2));
    add_float(j, "rms_norm_eps", c->rms_norm_eps);
    cJSON_AddItemToObject(j, "rope_scaling", a = cJSON_CreateObject());
    cJSON_AddNumberToObject(a, "beta_fast", c->beta_fast);
    cJSON_AddNumberToObject(a, "beta_slow", c->beta_slow);
    cJSON_AddNumberToObject(a, "factor", c->rope_factor);
    cJSON_AddNumberToObject(a, "original_max_position_embeddings", (double)c->original_max_position_embeddings);
    cJSON_AddStringToObject(a, "type", "yarn");
    cJSON_AddNumberToObject(j, "rope_theta", c->rope_theta);
    add_float(j, "routed_scaling_factor", c->routed_scaling_factor);
    const char *sf = c->scoring_func == INF_SCORE_SQRTSOFTPLUS ? "sqrtsoftplus"
                     : c->scoring_func == INF_SCORE_SIGMOID    ? "sigmoid"
                                                               : "softmax";
    cJSON_AddStringToObject(j, "scoring_func", sf);
    cJSON_AddNumberToObject(j, "sliding_window", c->sliding_window);
    add_float(j, "swiglu_limit", c->swiglu_limit);
    cJSON_AddBoolToObject(j, "tie_word_embeddings", 0);
    cJSON_AddStringToObject(j, "topk_method", "noaux_tc");
    cJSON_AddStringToObject(j, "torch_dtype", "bfloat16");
    cJSON_AddBoolToObject(j, "use_cache", 1);
    cJSON_AddNumberToObject(j, "vocab_size", c->vocab_size);
    cJSON_AddNumberToObject(j, "compress_rope_theta", c->compress_rope_theta);
    cJSON_AddItemToObject(j, "compress_ratios",
                          cJSON_CreateIntArray(c->compress_ratios, c->num_hidden_layers + c->num_nextn_predict_layers));
    return j;
}

static int write_atomic(const char *path, const char *text, struct ctx_err *e)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return ctx_err_errno(e, CTX_EIO, errno, "%s", tmp);
    int bad = fputs(text, f) < 0;
    bad |= fflush(f) != 0 || fsync(fileno(f)) != 0;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, path))
        return ctx_err_errno(e, CTX_EIO, errno, "%s", path);
    return 0;
}

static int cmd_write_ckpt(int argc, char **argv)
{
    const char *name = NULL, *out = NULL;
    unsigned long long seed = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--config") && i + 1 < argc)
            name = argv[++i];
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc)
            seed = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--out") && i + 1 < argc)
            out = argv[++i];
        else
            name = NULL, i = argc;
    }
    if (!name || !out) {
        fprintf(stderr, "usage: bench-gpu-restore write-ckpt --config NAME|flash43s|CONFIG.json --seed S --out DIR\n");
        return 2;
    }
    struct ctx_err e = {0};
    struct inf_config c;
    if (!strcmp(name, "flash43s") ? flash_state_config(&c, &e) : inf_config_resolve(name, &c, &e))
        return fail(name, &e);
    struct inf_weights *w = NULL;
    double t0 = bench_now();
    if (inf_weights_synthetic(&c, seed, &w, &e))
        return fail("weights", &e);
    double t1 = bench_now();
    int n = inf_weights_count(w);
    struct inf_tensor *t = malloc(sizeof *t * (size_t)n);
    size_t bytes = 0;
    for (int i = 0; i < n; i++)
        t[i] = *inf_weights_tensor(w, i), bytes += t[i].nbytes;
    mkdir(out, 0755);
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", out);
    int rc = inf_st_write(path, t, n, &e);
    cJSON *j = config_json(&c);
    char *txt = cJSON_Print(j);
    snprintf(path, sizeof path, "%s/config.json", out);
    if (!rc)
        rc = txt ? write_atomic(path, txt, &e) : ctx_err_set(&e, CTX_ENOMEM, "out of memory");
    cJSON_free(txt);
    cJSON_Delete(j);
    free(t);
    inf_weights_free(w);
    if (rc)
        return fail(out, &e);
    fprintf(stderr, "# %s seed %llu: %d tensors, %.1f MB, synthetic %.1f s, written %.1f s\n", name, seed, n,
            bytes / 1e6, t1 - t0, bench_now() - t1);
    return 0;
}

/* ---- slices: ctxd's prefill slices with their checkpoints ------------------------------------ */

/* What a prefill slice of ctxd --backend cuda costs beside its GPU work (daemon/repos.c's prefill_run
 * and checkpoint()): the slice's forward, then inf_state_sync (the CUDA accelerator's
 * cuda_engine_state_download_tail: the new entries as floats into the host copy, pageable and grown
 * by inf_state_reserve), then the checkpoint (inf_state_boundary + store_kv_put: the new entries
 * packed and written), each timed on the host. The model's weights are small (flash43s: Flash's state,
 * hidden 256), so the forward's time is not Flash's; the download and the checkpoint move Flash's
 * bytes. --reserve gives the host copy room for every token first (no growth during the prefill). */
/* The host copy's entries as floats (*fp32) and as the KV cache packs them (*packed), in bytes. */
static void host_entry_bytes(const struct inf_state *st, double *fp32, double *packed)
{
    const struct inf_config *c = &st->cfg;
    *fp32 = *packed = 0;
    for (int l = 0; l < st->n_layers; l++) {
        const struct inf_layer_state *ls = &st->layers[l];
        double n = (double)ls->n_cache, ik = ls->ratio == 4;
        *fp32 += n * 4 * (c->head_dim + ik * c->index_head_dim);
        *packed += n * ((double)inf_kvpack_entry_bytes(c) + ik * (double)inf_kvpack_ikey_bytes(c));
    }
}

static int cmd_slices(int argc, char **argv)
{
    long long tokens = 500000;
    int slice = 131072, chunk = 16384, reserve = 0;
    const char *dir = "/tmp/bench-gpu-restore-sl", *model = "flash43s";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--tokens") && i + 1 < argc)
            tokens = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--slice") && i + 1 < argc)
            slice = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--chunk") && i + 1 < argc)
            chunk = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--dir") && i + 1 < argc)
            dir = argv[++i];
        else if (!strcmp(argv[i], "--model") && i + 1 < argc)
            model = argv[++i];
        else if (!strcmp(argv[i], "--reserve"))
            reserve = 1;
        else {
            fprintf(stderr, "usage: bench-gpu-restore slices [--tokens N] [--slice S] [--chunk C] [--dir DIR] "
                            "[--model DIR|NAME|flash43s] [--reserve]\n");
            return 2;
        }
    }
    if (tokens < 128 || tokens > 1 << 20 || slice < 128 || chunk < 1 || chunk > slice) {
        fprintf(stderr, "bench-gpu-restore: --tokens 128..2^20, --slice >= 128, --chunk 1..slice\n");
        return 2;
    }
    struct ctx_err e = {0};
    struct inf_weights *w = NULL;
    struct cuda_engine *g = NULL;
    struct inf_state *st = NULL;
    struct store_kv *kv = NULL;
    int rc = 1;
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        return 1;
    if (open_model(model, &w, &e))
        return fail(model, &e);
    const struct inf_config *c = inf_weights_config(w);
    int *tok = malloc(sizeof(int) * (size_t)tokens);
    int32_t *tok32 = malloc(sizeof(int32_t) * (size_t)tokens);
    tokens_of(tok, (int)tokens, c->vocab_size, 5);
    for (long long i = 0; i < tokens; i++)
        tok32[i] = tok[i];
    struct cuda_engine_opts o = {.max_chunk = chunk, .max_ctx = tokens + 8};
    int ns = 0;
    int64_t lineage = 0;
    double sum[3] = {0, 0, 0}, gbd = 0, gbp = 0;
    if (cuda_engine_new(w, &o, &g, &e) || inf_state_new(c, &st, &e) || store_kv_open(dir, &kv, &e)) {
        fail("engine", &e);
        goto out;
    }
    ns = store_kv_state_n_streams(st);
    if (store_kv_lineage_new(kv, MODEL_KEY, ns, &lineage, &e)) {
        fail("store", &e);
        goto out;
    }
    for (int l = 0; reserve && l < st->n_layers; l++)
        if (st->layers[l].ratio && inf_state_reserve(st, l, tokens / st->layers[l].ratio, &e)) {
            fail("reserve", &e);
            goto out;
        }
    printf("ctxd's prefill slices with their checkpoints: %s, %lld tokens in slices of %d (chunks of %d), host copy %s; "
           "seconds on the host\n\n| slice end | forward s | download s | GB down (fp32) | checkpoint s | GB packed |\n"
           "|---|---|---|---|---|---|\n",
           model, tokens, slice, chunk, reserve ? "reserved for every token first" : "grown as ctxd's is");
    for (long long pos = 0; pos < tokens;) {
        int n = tokens - pos < slice ? (int)(tokens - pos) : slice;
        double f0, p0, f1, p1;
        host_entry_bytes(st, &f0, &p0);
        double t0 = bench_now();
        if (cuda_engine_prefill(g, tok + pos, n, NULL, &e) || !cuda_ok(cudaDeviceSynchronize(), "prefill")) {
            fail("prefill", &e);
            goto out;
        }
        double t1 = bench_now();
        if (cuda_engine_state_download_tail(g, st, &e)) {
            fail("download", &e);
            goto out;
        }
        double t2 = bench_now();
        pos += n;
        struct store_kv_stream *sv = calloc((size_t)ns, sizeof *sv);
        struct store_kv_state_src *src = calloc((size_t)ns, sizeof *src);
        uint8_t *b = NULL;
        size_t blen = 0;
        struct store_kv_hash h;
        store_kv_state_streams(st, sv, src);
        store_kv_prefix_hash(MODEL_KEY, tok32, (size_t)pos, &h);
        int prc = inf_state_boundary(st, &b, &blen, &e);
        if (!prc)
            prc = store_kv_put(kv, lineage, (uint64_t)pos, &h, b, blen, sv, ns, &e);
        double t3 = bench_now();
        free(b);
        free(sv);
        free(src);
        if (prc) {
            fail("checkpoint", &e);
            goto out;
        }
        host_entry_bytes(st, &f1, &p1);
        double gd = (f1 - f0) / 1e9, gp = (p1 - p0) / 1e9;
        printf("| %lld | %.3f | %.3f | %.3f | %.3f | %.3f |\n", pos, t1 - t0, t2 - t1, gd, t3 - t2, gp);
        sum[0] += t1 - t0;
        sum[1] += t2 - t1;
        sum[2] += t3 - t2;
        gbd += gd;
        gbp += gp;
    }
    printf("| all | %.3f | %.3f | %.3f | %.3f | %.3f |\n", sum[0], sum[1], gbd, sum[2], gbp);
    rc = 0;
out:
    store_kv_close(kv);
    inf_state_free(st);
    cuda_engine_free(g);
    inf_weights_free(w);
    free(tok);
    free(tok32);
    if (system(cmd) != 0)
        rc = 1;
    return rc;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0); /* rows survive a timeout of the device script */
    const char *cmd = argc > 1 ? argv[1] : "";
    if (!strcmp(cmd, "write-ckpt"))
        return cmd_write_ckpt(argc - 1, argv + 1);
    int (*fn)(int, char **) = !strcmp(cmd, "bench")       ? cmd_bench
                              : !strcmp(cmd, "roundtrip") ? cmd_roundtrip
                              : !strcmp(cmd, "logits")    ? cmd_logits
                              : !strcmp(cmd, "slices")    ? cmd_slices
                                                          : NULL;
    if (!fn) {
        fprintf(stderr, "usage: bench-gpu-restore bench|roundtrip|logits|slices|write-ckpt ... (see restore.c)\n");
        return 2;
    }
    if (cuda_device_count() < 1) {
        fprintf(stderr, "bench-gpu-restore: no CUDA device\n");
        return 77;
    }
    return fn(argc - 1, argv + 1);
}
