/* bench/store: what a KV-cache checkpoint costs the daemon, on a V4-Flash-shaped state (43 layers:
 * 2 sliding, 21 CSA, 20 HCA; 584-byte entries and 68-byte indexer keys packed, spec §5.3).
 *
 *   bench_store [--tokens N] [--runs R] [--dir DIR]
 *
 * ctxd checkpoints after each prefill slice (daemon/repos.c's checkpoint(): the state's new entries
 * packed and written by store_kv_put, fsynced, then the index row), on the engine thread, so the
 * engine waits for it; with --backend cuda over two GPUs a slice is 131072 tokens (the default
 * --tokens). Rows, medians of --runs (default 3), each put into a fresh lineage of a fresh store:
 * - the packing alone, one thread: the plain packers (inf_kvpack_*_ref: each value rounded by
 *   quant.c and multiplied back) and the fast ones (codes read off the bits), GB/s of packed bytes;
 * - store_kv_put of the slice on one thread and on the default threads (store_kv_put_threads);
 * - the floor: the same number of bytes written to one file in 4 MiB writes from memory and fsynced
 *   (the disk's own pace, measured in the same run), and each put's ratio to it.
 * The entries are random codes in the QDQ's form (each block's largest code in (224, 448] for FP8,
 * 4 or 6 for FP4, random power-of-two scales), so every block packs at its first scale, as the
 * engine's do. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../bench.h"

#include "config.h"
#include "kv.h"
#include "kv_state.h"
#include "kvpack.h"
#include "state.h"

static uint64_t rs = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void)
{
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return (uint32_t)(rs >> 11);
}

/* One compressed entry / indexer key in the QDQ's form, through the unpackers (their values pack).
 */
static void make_entry(const struct inf_config *c, float *v)
{
    int nope = c->head_dim - c->qk_rope_head_dim, nb = nope / 64;
    uint8_t pk[1024] = {0};
    for (int i = 0; i < nope; i++) {
        uint8_t q = (uint8_t)rnd();
        pk[i] = (q & 0x78) == 0x78 ? (uint8_t)(q & 0xf7)
                                   : q; /* no NaN, nothing above the block's top */
    }
    for (int b = 0; b < nb; b++) {
        pk[64 * b + (int)(rnd() % 64)] =
            (uint8_t)((0x75 + rnd() % 10) | (rnd() & 0x80)); /* 240 .. 448 */
        pk[nope + b] = (uint8_t)(112 + rnd() % 16);
    }
    uint8_t *rope = pk + nope + (nb + 7) / 8 * 8;
    for (int i = 0; i < c->qk_rope_head_dim; i++) {
        rope[2 * i] = (uint8_t)rnd();
        rope[2 * i + 1] = (uint8_t)(rnd() & 0xbf); /* the exponent's top bit clear: finite */
    }
    inf_kvunpack_entry(c, pk, v);
}

static void make_ikey(const struct inf_config *c, float *v)
{
    int di = c->index_head_dim;
    uint8_t pk[256] = {0};
    for (int i = 0; i < di / 2; i++)
        pk[i] = (uint8_t)rnd();
    for (int b = 0; b < di / 32; b++) {
        pk[16 * b] = (uint8_t)((pk[16 * b] & 0xf0) | (6 + rnd() % 2) | (rnd() & 8)); /* 4 or 6 */
        pk[di / 2 + b] = (uint8_t)(120 + rnd() % 10);
    }
    inf_kvunpack_ikey(c, pk, v);
}

static int fill_state(struct inf_state *st, long long ntok)
{
    const struct inf_config *c = &st->cfg;
    struct ctx_err e = {0};
    for (int l = 0; l < st->n_layers; l++) {
        struct inf_layer_state *ls = &st->layers[l];
        if (!ls->ratio)
            continue;
        long long n = ntok / ls->ratio;
        if (inf_state_reserve(st, l, n, &e)) {
            fprintf(stderr, "bench_store: %s\n", e.msg);
            return -1;
        }
        for (long long j = 0; j < n; j++) { /* 4096 distinct entries a layer, repeated */
            float *v = ls->cache + j * c->head_dim,
                  *w = ls->icache ? ls->icache + j * c->index_head_dim : NULL;
            if (j < 4096) {
                make_entry(c, v);
                if (ls->ratio == 4)
                    make_ikey(c, w);
            } else {
                memcpy(v, ls->cache + (j % 4096) * c->head_dim,
                       sizeof(float) * (size_t)c->head_dim);
                if (ls->ratio == 4)
                    memcpy(w, ls->icache + (j % 4096) * c->index_head_dim,
                           sizeof(float) * (size_t)c->index_head_dim);
            }
        }
        ls->n_cache = n;
    }
    st->pos = ntok;
    return 0;
}

/* Every entry packed once, one thread; the packed bytes; -1 when some entry does not pack. */
static long long pack_all(const struct inf_state *st, int ref)
{
    const struct inf_config *c = &st->cfg;
    uint8_t out[1024];
    long long bytes = 0;
    for (int l = 0; l < st->n_layers; l++) {
        const struct inf_layer_state *ls = &st->layers[l];
        for (long long j = 0; j < ls->n_cache; j++) {
            const float *v = ls->cache + j * c->head_dim;
            if ((ref ? inf_kvpack_entry_ref(c, v, out) : inf_kvpack_entry(c, v, out)) != -1)
                return -1;
            bytes += (long long)inf_kvpack_entry_bytes(c);
            if (ls->ratio == 4) {
                const float *w = ls->icache + j * c->index_head_dim;
                if ((ref ? inf_kvpack_ikey_ref(c, w, out) : inf_kvpack_ikey(c, w, out)) != -1)
                    return -1;
                bytes += (long long)inf_kvpack_ikey_bytes(c);
            }
        }
    }
    return bytes;
}

/* One checkpoint of the whole state into a fresh store under dir; seconds, or < 0 on error. */
static double put_once(const struct inf_state *st, const char *dir, int run)
{
    char d[512], cmd[600];
    snprintf(d, sizeof d, "%s/run%d", dir, run);
    struct ctx_err e = {0};
    struct store_kv *kv;
    if (store_kv_open(d, &kv, &e)) {
        fprintf(stderr, "bench_store: %s\n", e.msg);
        return -1;
    }
    int ns = store_kv_state_n_streams(st);
    struct store_kv_stream *sv = calloc((size_t)ns, sizeof *sv);
    struct store_kv_state_src *src = calloc((size_t)ns, sizeof *src);
    int32_t *tok = calloc((size_t)st->pos, sizeof *tok);
    uint8_t *b = NULL;
    size_t blen = 0;
    int64_t lin = 0;
    store_kv_state_streams(st, sv, src);
    double t0 = bench_now();
    int rc = inf_state_boundary(st, &b, &blen, &e);
    struct store_kv_hash h;
    store_kv_prefix_hash("bench", tok, (size_t)st->pos, &h);
    if (!rc)
        rc = store_kv_lineage_new(kv, "bench", ns, &lin, &e);
    if (!rc)
        rc = store_kv_put(kv, lin, (uint64_t)st->pos, &h, b, blen, sv, ns, &e);
    double t = bench_now() - t0;
    if (rc)
        fprintf(stderr, "bench_store: put: %s\n", e.msg);
    free(b);
    free(sv);
    free(src);
    free(tok);
    store_kv_close(kv);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", d);
    if (system(cmd) != 0)
        fprintf(stderr, "bench_store: could not remove %s\n", d);
    return rc ? -1 : t;
}

/* The disk's pace: bytes written to one file from memory in 4 MiB writes, then fsync. */
static double write_floor(const char *dir, long long bytes)
{
    char p[512];
    snprintf(p, sizeof p, "%s/floor.bin", dir);
    size_t piece = (size_t)4 << 20;
    char *buf = malloc(piece);
    for (size_t i = 0; i < piece; i++)
        buf[i] = (char)rnd();
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        return -1;
    double t0 = bench_now();
    for (long long off = 0; off < bytes;) {
        size_t n = bytes - off < (long long)piece ? (size_t)(bytes - off) : piece;
        if (pwrite(fd, buf, n, (off_t)off) != (ssize_t)n) {
            close(fd);
            return -1;
        }
        off += (long long)n;
    }
    int ok = fsync(fd) == 0;
    double t = bench_now() - t0;
    close(fd);
    unlink(p);
    free(buf);
    return ok ? t : -1;
}

int main(int argc, char **argv)
{
    long long ntok = 131072;
    int runs = 3;
    const char *dir = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--tokens") && i + 1 < argc)
            ntok = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--runs") && i + 1 < argc)
            runs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--dir") && i + 1 < argc)
            dir = argv[++i];
        else {
            fprintf(stderr, "usage: bench_store [--tokens N] [--runs R] [--dir DIR]\n");
            return 2;
        }
    }
    if (ntok < 128 || runs < 1 || runs > 50) {
        fprintf(stderr, "bench_store: --tokens >= 128, --runs 1..50\n");
        return 2;
    }
    char tmp[] = "/tmp/bench-store-XXXXXX";
    if (!dir && !(dir = mkdtemp(tmp))) {
        perror("bench_store: mkdtemp");
        return 1;
    }
    struct ctx_err e = {0};
    struct inf_config c;
    struct inf_state *st;
    if (inf_config_builtin("flash", &c, &e)) {
        fprintf(stderr, "bench_store: %s\n", e.msg);
        return 1;
    }
    c.num_nextn_predict_layers = 0;
    if (inf_state_new(&c, &st, &e) || fill_state(st, ntok)) {
        fprintf(stderr, "bench_store: %s\n", e.msg);
        return 1;
    }
    double tr[50], tf[50], p1[50], pn[50], fl[50];
    long long bytes = 0;
    for (int r = 0; r < runs; r++) {
        double t0 = bench_now();
        long long b0 = pack_all(st, 1);
        tr[r] = bench_now() - t0;
        t0 = bench_now();
        long long b1 = pack_all(st, 0);
        tf[r] = bench_now() - t0;
        if (b0 < 0 || b1 != b0) {
            fprintf(stderr, "bench_store: an entry did not pack\n");
            return 1;
        }
        bytes = b1;
        store_kv_put_threads(1);
        p1[r] = put_once(st, dir, 2 * r);
        store_kv_put_threads(0);
        pn[r] = put_once(st, dir, 2 * r + 1);
        fl[r] = write_floor(dir, bytes);
        if (p1[r] < 0 || pn[r] < 0 || fl[r] < 0)
            return 1;
    }
    double mr = bench_median(tr, runs), mf = bench_median(tf, runs), m1 = bench_median(p1, runs),
           mn = bench_median(pn, runs), mfl = bench_median(fl, runs);
    double gb = (double)bytes / 1e9;
    printf("KV-cache checkpoint of a V4-Flash-shaped state, %lld tokens (%.3f GB packed), medians "
           "of %d; floor = "
           "the same bytes written to one file from memory and fsynced, in the same run: %.3f s "
           "(%.2f GB/s)\n\n",
           ntok, gb, runs, mfl, gb / mfl);
    printf("| step | s | GB/s | of floor |\n|---|---|---|---|\n");
    printf("| pack, plain form (inf_kvpack_*_ref), 1 thread | %.3f | %.2f | |\n", mr, gb / mr);
    printf("| pack, fast form (inf_kvpack_*), 1 thread | %.3f | %.2f | |\n", mf, gb / mf);
    printf("| store_kv_put (pack + write + fsync + index), 1 thread | %.3f | %.2f | %.0f%% |\n", m1,
           gb / m1, 100.0 * mfl / m1);
    printf("| store_kv_put, default threads (min(CPUs, 8)) | %.3f | %.2f | %.0f%% |\n", mn, gb / mn,
           100.0 * mfl / mn);
    printf("\nfast / plain packing: %.2fx; put on the default threads / on one: %.2fx\n", mr / mf,
           m1 / mn);
    inf_state_free(st);
    if (dir == tmp)
        rmdir(tmp);
    return 0;
}
