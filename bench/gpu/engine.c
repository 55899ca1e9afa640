/* bench-gpu-engine: single-stream decode of the CUDA forward pass (kernels/cuda_engine.h) on
 * synthetic weights, against the HBM floor measured in the same run.
 *
 * Rows: the built-in `mid` config, and a V4-Flash-shaped stack of 4 layers (Flash's hidden size,
 * heads, 256 experts top-6, real vocabulary; layers 0,1 sliding, 2 CSA, 3 HCA as Flash's first four;
 * no MTP). For each: prefill to the context, then `steps` decode steps timed one by one on the host
 * (each returns with its logits on the host); median.
 *
 * Floor: bytes one decode step must read / measured bandwidth. Bytes = the weights the step reads
 * as stored (inf_memory_plan's decode_read_bytes: every dense tensor, the head, the top-k routed
 * experts, one embedding row) + the state it reads as this engine stores it (fp32: the window of
 * every layer, the indexer keys and the top-k selected entries of CSA layers, every entry of HCA
 * layers). Bandwidth = device-to-device cudaMemcpy of 1 GiB, bytes read + written per second.
 *
 * --profile adds, per model, the GPU time of each stage of a decode step (cuda_engine_profile).
 *
 *     bench-gpu-engine [--ctx N] [--steps N] [--models mid,flash4] [--profile] */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cuda_engine.h"
#include "floors.h"
#include "gemm.h"
#include "weights.h"

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}
static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* State bytes one decode step at position ctx reads in this engine's fp32 layout. */
static double state_read_bytes(const struct inf_config *c, long long ctx)
{
    double b = 0;
    long long win = ctx < c->sliding_window ? ctx : c->sliding_window;
    for (int l = 0; l < c->num_hidden_layers; l++) {
        int r = c->compress_ratios[l];
        b += 4.0 * (double)win * c->head_dim;
        if (r == 4) {
            long long n = ctx / 4, k = n < c->index_topk ? n : c->index_topk;
            b += 4.0 * (double)n * c->index_head_dim + 4.0 * (double)k * c->head_dim;
        } else if (r) {
            b += 4.0 * (double)(ctx / r) * c->head_dim;
        }
    }
    return b;
}

static int profile;
static char prof[8192];
static int prof_len;

static int run_model(const char *name, long long ctx, int steps, double bw)
{
    struct ctx_err e = {0};
    struct inf_config c;
    const char *base = strcmp(name, "flash4") ? name : "flash";
    if (inf_config_builtin(base, &c, &e)) {
        fprintf(stderr, "bench-gpu-engine: %s\n", e.msg);
        return 1;
    }
    if (!strcmp(name, "flash4")) { /* Flash's first four layers */
        c.num_hidden_layers = 4;
        c.num_nextn_predict_layers = 0;
        if (c.num_hash_layers > 3)
            c.num_hash_layers = 3;
        if (inf_config_validate(&c, "flash4", &e)) {
            fprintf(stderr, "bench-gpu-engine: %s\n", e.msg);
            return 1;
        }
    }
    struct inf_weights *w = NULL;
    struct cuda_engine *g = NULL;
    double t0 = now_s();
    if (inf_weights_synthetic(&c, 1, &w, &e)) {
        fprintf(stderr, "bench-gpu-engine: %s: %s\n", name, e.msg);
        return 1;
    }
    double t1 = now_s();
    struct cuda_engine_opts o = {.max_chunk = 256, .max_ctx = ctx + steps + 8};
    if (cuda_engine_new(w, &o, &g, &e)) {
        fprintf(stderr, "bench-gpu-engine: %s: %s\n", name, e.msg);
        inf_weights_free(w);
        return 1;
    }
    double t2 = now_s();
    int n = (int)ctx + steps;
    int *tok = malloc(sizeof(int) * (size_t)n);
    unsigned long long s = 12345;
    tok[0] = c.bos_token_id;
    for (int i = 1; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        tok[i] = 2 + (int)((s >> 33) % (unsigned long long)(c.vocab_size - 2));
    }
    float *logits = malloc(sizeof(float) * (size_t)c.vocab_size);
    double *dt = malloc(sizeof(double) * (size_t)steps);
    double p0 = now_s();
    int rc = cuda_engine_prefill(g, tok, (int)ctx, logits, &e);
    double p1 = now_s();
    for (int i = 0; !rc && i < steps; i++) {
        double a = now_s();
        rc = cuda_engine_decode(g, tok[ctx + i], logits, &e);
        dt[i] = now_s() - a;
    }
    if (rc) {
        fprintf(stderr, "bench-gpu-engine: %s: %s\n", name, e.msg);
    } else {
        qsort(dt, (size_t)steps, sizeof(double), cmp_d);
        double med = dt[steps / 2];
        struct inf_memory_plan mp;
        double wbytes = 0;
        if (!inf_memory_plan(&c, ctx, &mp, &e))
            wbytes = (double)mp.decode_read_bytes;
        double sbytes = state_read_bytes(&c, ctx), floor_s = (wbytes + sbytes) / (bw * 1e9);
        printf("| %-7s | %2d | %6lld | %8.2f | %7.1f | %8.1f | %7.1f | %7.3f | %6.1f%% | %6.0f |\n", name,
               c.num_hidden_layers, ctx, med * 1e3, 1.0 / med, wbytes / 1e6, sbytes / 1e6, floor_s * 1e3,
               100.0 * floor_s / med, ctx / (p1 - p0));
        fprintf(stderr, "# %s: synthetic weights %.1f s, upload %.1f s, decode min %.2f ms max %.2f ms\n", name,
                t1 - t0, t2 - t1, dt[0] * 1e3, dt[steps - 1] * 1e3);
        if (profile && !cuda_engine_profile(g, 1, &e)) {
            /* GPU time by stage of a few more decode steps, launches queued back to back */
            double ms[CUDA_PROF_N], sum = 0;
            int np = 8;
            cuda_engine_profile_get(g, ms, 1);
            for (int i = 0; !rc && i < np; i++)
                rc = cuda_engine_decode(g, tok[ctx + i % steps], logits, &e);
            cuda_engine_profile(g, 0, &e);
            cuda_engine_profile_get(g, ms, 1);
            for (int i = 0; i < CUDA_PROF_N; i++)
                sum += ms[i] / np;
            prof_len += snprintf(prof + prof_len, sizeof prof - (size_t)prof_len,
                                 "\nDecode GPU time by stage, %s at context %lld (kernels back to back; the rest of the "
                                 "%.2f ms step is launch overhead): %.3f ms\n\n| stage | ms/token | share |\n|---|---|---|\n",
                                 name, ctx, med * 1e3, sum);
            for (int i = 0; i < CUDA_PROF_N; i++)
                prof_len += snprintf(prof + prof_len, sizeof prof - (size_t)prof_len, "| %s | %.3f | %.1f%% |\n",
                                     cuda_engine_prof_names[i], ms[i] / np, 100.0 * ms[i] / np / sum);
        }
    }
    free(dt);
    free(logits);
    free(tok);
    cuda_engine_free(g);
    inf_weights_free(w);
    return rc ? 1 : 0;
}

int main(int argc, char **argv)
{
    long long ctx = 4096;
    int steps = 64;
    const char *models = "mid,flash4";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--ctx") && i + 1 < argc)
            ctx = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc)
            steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--models") && i + 1 < argc)
            models = argv[++i];
        else if (!strcmp(argv[i], "--profile"))
            profile = 1;
        else {
            fprintf(stderr, "usage: bench-gpu-engine [--ctx N] [--steps N] [--models mid,flash4] [--profile]\n");
            return 2;
        }
    }
    if (cuda_device_count() < 1) {
        fprintf(stderr, "bench-gpu-engine: no CUDA device\n");
        return 77;
    }
    if (ctx < 1 || steps < 1) {
        fprintf(stderr, "bench-gpu-engine: --ctx and --steps must be positive\n");
        return 2;
    }
    double bw = bench_copy_gbps((size_t)1 << 30, 20);
    printf("floor, bandwidth: device-to-device cudaMemcpy of 1 GiB, median of 20: %.0f GB/s (read + written)\n\n", bw);
    printf("Single-stream decode, CUDA engine (first step: simple kernels, no CUDA graph), synthetic weights; "
           "median of %d steps after a prefill to the context\n\n",
           steps);
    printf("| model | layers | context | ms/token | tok/s | weights read MB | state read MB | floor ms | of floor | "
           "prefill tok/s |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|\n");
    char buf[256];
    snprintf(buf, sizeof buf, "%s", models);
    int rc = 0;
    for (char *sv = NULL, *m = strtok_r(buf, ",", &sv); m; m = strtok_r(NULL, ",", &sv))
        rc |= run_model(m, ctx, steps, bw);
    fputs(prof, stdout);
    return rc;
}
