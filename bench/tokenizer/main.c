/* bench_tokenizer: single-threaded encode throughput of inf_tokenizer on a corpus of documents,
 * and, given the peer's result file from tools/tokenizer/bench_hf.py (Hugging Face `tokenizers`
 * on the same tokenizer.json and the same documents, one thread), the ratio to it and whether the
 * ids are identical. Also reports count-only speed and a multi-threaded aggregate.
 *
 * usage: bench_tokenizer --tokenizer tokenizer.json --corpus corpus.bin [--v4] [--reps N]
 *                        [--threads N] [--peer peer.json]
 * corpus.bin: records <uint32 LE length><bytes> (tools/tokenizer/bench_corpus.py). */
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../bench.h"

#include "err.h"
#include "json.h"
#include "pool.h"
#include "tokenizer.h"

struct doc {
    const char *p;
    size_t n;
};

/* FNV-1a over the ids as little-endian int32, the same digest bench_hf.py computes. */
static uint64_t fnv_ids(uint64_t h, const int32_t *ids, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t v = (uint32_t)ids[i];
        for (int k = 0; k < 4; k++) {
            h ^= (v >> (8 * k)) & 0xFF;
            h *= 0x100000001b3ull;
        }
    }
    return h;
}

struct mt_job {
    const struct inf_tokenizer *t;
    const struct doc *docs;
    size_t n_docs;
    int tid, nthreads;
    size_t ids;
    int rc;
};

static void *mt_worker(void *arg)
{
    struct mt_job *j = arg;
    struct ctx_err e = {0};
    for (size_t i = (size_t)j->tid; i < j->n_docs; i += (size_t)j->nthreads) {
        int32_t *ids;
        size_t n;
        if ((j->rc = inf_tokenizer_encode(j->t, j->docs[i].p, j->docs[i].n, &ids, &n, &e)))
            return NULL;
        j->ids += n;
        free(ids);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    const char *tok_path = NULL, *corpus_path = NULL, *peer_path = NULL;
    bool v4 = false;
    int reps = 5, threads = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--tokenizer") && i + 1 < argc)
            tok_path = argv[++i];
        else if (!strcmp(argv[i], "--corpus") && i + 1 < argc)
            corpus_path = argv[++i];
        else if (!strcmp(argv[i], "--peer") && i + 1 < argc)
            peer_path = argv[++i];
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--v4"))
            v4 = true;
        else {
            fprintf(stderr, "usage: %s --tokenizer FILE --corpus FILE [--v4] [--reps N] "
                            "[--threads N] [--peer FILE]\n", argv[0]);
            return 2;
        }
    }
    if (!tok_path || !corpus_path || reps < 1) {
        fprintf(stderr, "bench_tokenizer: --tokenizer and --corpus are required\n");
        return 2;
    }
    struct ctx_err e = {0};
    char *buf;
    size_t len;
    if (ctx_read_file(corpus_path, (size_t)4 << 30, &buf, &len, &e)) {
        fprintf(stderr, "bench_tokenizer: %s\n", e.msg);
        return 1;
    }
    size_t cap = 1024, n_docs = 0, bytes = 0;
    struct doc *docs = malloc(cap * sizeof *docs);
    for (size_t off = 0; off + 4 <= len;) {
        uint32_t n = (uint32_t)(unsigned char)buf[off] | (uint32_t)(unsigned char)buf[off + 1] << 8 |
                     (uint32_t)(unsigned char)buf[off + 2] << 16 | (uint32_t)(unsigned char)buf[off + 3] << 24;
        off += 4;
        if (n > len - off) {
            fprintf(stderr, "bench_tokenizer: %s: record at byte %zu runs past the end\n", corpus_path, off - 4);
            return 1;
        }
        if (n_docs == cap)
            docs = realloc(docs, (cap *= 2) * sizeof *docs);
        docs[n_docs++] = (struct doc){buf + off, n};
        bytes += n;
        off += n;
    }

    double t0 = bench_now();
    struct inf_tokenizer *t;
    int rc = v4 ? inf_tokenizer_load_v4(tok_path, &t, &e) : inf_tokenizer_load(tok_path, &t, &e);
    if (rc) {
        fprintf(stderr, "bench_tokenizer: %s\n", e.msg);
        return 1;
    }
    double load_s = bench_now() - t0;

    double *enc = calloc((size_t)reps, sizeof *enc), *cnt = calloc((size_t)reps, sizeof *cnt);
    size_t total_ids = 0;
    uint64_t digest = 0;
    for (int r = 0; r < reps; r++) {
        uint64_t h = 0xcbf29ce484222325ull;
        size_t tot = 0;
        double a = bench_now();
        for (size_t i = 0; i < n_docs; i++) {
            int32_t *ids;
            size_t n;
            if (inf_tokenizer_encode(t, docs[i].p, docs[i].n, &ids, &n, &e)) {
                fprintf(stderr, "bench_tokenizer: document %zu: %s\n", i, e.msg);
                return 1;
            }
            h = fnv_ids(h, ids, n);
            tot += n;
            free(ids);
        }
        enc[r] = bench_now() - a;
        total_ids = tot;
        digest = h;
        a = bench_now();
        size_t c = 0;
        for (size_t i = 0; i < n_docs; i++) {
            size_t n;
            if (inf_tokenizer_count(t, docs[i].p, docs[i].n, &n, &e)) {
                fprintf(stderr, "bench_tokenizer: document %zu: %s\n", i, e.msg);
                return 1;
            }
            c += n;
        }
        cnt[r] = bench_now() - a;
        if (c != tot) {
            fprintf(stderr, "bench_tokenizer: count %zu != encode %zu\n", c, tot);
            return 1;
        }
    }
    double enc_s = bench_median(enc, reps), cnt_s = bench_median(cnt, reps);

    if (threads <= 0) {
        threads = ctx_cpu_count();
    }
    pthread_t *th = calloc((size_t)threads, sizeof *th);
    struct mt_job *jobs = calloc((size_t)threads, sizeof *jobs);
    double a = bench_now();
    for (int i = 0; i < threads; i++) {
        jobs[i] = (struct mt_job){t, docs, n_docs, i, threads, 0, 0};
        pthread_create(&th[i], NULL, mt_worker, &jobs[i]);
    }
    size_t mt_ids = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(th[i], NULL);
        mt_ids += jobs[i].ids;
        if (jobs[i].rc) {
            fprintf(stderr, "bench_tokenizer: thread %d failed (%d)\n", i, jobs[i].rc);
            return 1;
        }
    }
    double mt_s = bench_now() - a;

    double mb = (double)bytes / 1e6;
    printf("corpus: %zu documents, %.2f MB, %zu ids (%.2f bytes/id); load %.3f s; %d reps\n", n_docs,
           mb, total_ids, (double)bytes / (double)(total_ids ? total_ids : 1), load_s, reps);
    printf("ids digest (FNV-1a over int32 LE): %016llx\n", (unsigned long long)digest);
    printf("%-34s %12s %10s\n", "what", "median s", "MB/s");
    printf("%-34s %12.4f %10.2f\n", "ctx encode, 1 thread", enc_s, mb / enc_s);
    printf("%-34s %12.4f %10.2f\n", "ctx count, 1 thread", cnt_s, mb / cnt_s);
    char label[64];
    snprintf(label, sizeof label, "ctx encode, %d threads (1 run)", threads);
    printf("%-34s %12.4f %10.2f\n", label, mt_s, mb / mt_s);
    if (mt_ids != total_ids) {
        fprintf(stderr, "bench_tokenizer: threaded run gave %zu ids, single %zu\n", mt_ids, total_ids);
        return 1;
    }
    int status = 0;
    if (peer_path) {
        cJSON *peer = ctx_json_read_file(peer_path, 0, &e);
        if (!peer) {
            fprintf(stderr, "bench_tokenizer: %s\n", e.msg);
            return 1;
        }
        double peer_s = 0, peer_ids = 0;
        const char *peer_digest = "", *peer_name = "peer";
        cJSON *v;
        if ((v = cJSON_GetObjectItem(peer, "median_s")) && cJSON_IsNumber(v))
            peer_s = v->valuedouble;
        if ((v = cJSON_GetObjectItem(peer, "ids")) && cJSON_IsNumber(v))
            peer_ids = v->valuedouble;
        if ((v = cJSON_GetObjectItem(peer, "digest")) && cJSON_IsString(v))
            peer_digest = v->valuestring;
        if ((v = cJSON_GetObjectItem(peer, "name")) && cJSON_IsString(v))
            peer_name = v->valuestring;
        char mine[32];
        snprintf(mine, sizeof mine, "%016llx", (unsigned long long)digest);
        bool same = (size_t)peer_ids == total_ids && strcmp(mine, peer_digest) == 0;
        printf("%-34s %12.4f %10.2f\n", peer_name, peer_s, peer_s > 0 ? mb / peer_s : 0.0);
        printf("ratio ctx/peer (1 thread, encode): %.2fx; ids identical: %s (%zu vs %.0f)\n",
               peer_s > 0 ? peer_s / enc_s : 0.0, same ? "yes" : "NO", total_ids, peer_ids);
        if (!same)
            status = 1;
        cJSON_Delete(peer);
    }
    inf_tokenizer_free(t);
    free(docs);
    free(buf);
    free(enc);
    free(cnt);
    free(th);
    free(jobs);
    return status;
}
