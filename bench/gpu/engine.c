/* bench-gpu-engine: single-stream decode of the CUDA forward pass (kernels/cuda_engine.h) on
 * synthetic weights, against the HBM floor measured in the same run.
 *
 * Models: the built-in `mid` config, and `flash4`: V4-Flash's first four layers at Flash's shapes
 * (hidden 4096, 64 heads of 512, 256 experts top-6, real vocabulary; layers 0,1 sliding, 2 CSA with
 * its indexer, 3 HCA; no MTP). One engine per model, sized for the largest context asked for; for
 * each context: a real prefill when the context is at most --prefill-max (its tok/s is printed), else
 * cuda_engine_state_fill_random (the state of that position with random entries: the same bytes to
 * read, so the same decode cost, without a long prefill), then `steps` decode steps as direct
 * launches and `steps` as a replayed CUDA graph, each timed on the host (each returns with its
 * logits on the host); medians.
 *
 * Floor: bytes one decode step must read / measured bandwidth. Bytes = the weights the step reads
 * as stored (inf_memory_plan's decode_read_bytes: every dense tensor, the head, the top-k routed
 * experts, one embedding row) + the state it reads as this engine stores it (fp32: the window of
 * every layer, the indexer keys and the top-k selected entries of CSA layers, every entry of HCA
 * layers). Bandwidth = device-to-device cudaMemcpy of 1 GiB, bytes read + written per second.
 *
 * --profile adds, per model and context, the GPU time of each stage and of each layer of a decode
 * step (cuda_engine_profile: launches queued back to back). For flash4 it then extrapolates to the
 * 43 layers of V4-Flash (2 sliding, 21 CSA, 20 HCA): GPU ms of the full stack = the outside part
 * (embedding, hc_head, head) + 2 x the sliding layers' mean + 21 x the CSA layer + 20 x the HCA
 * layer, and the measured graph step scaled by (full-stack GPU ms / flash4 GPU ms); its floor from
 * the full Flash config the same way. Flash does not fit one H200 (~160 GB of weights): the one-GPU
 * figure is what the kernels would do if it did; two GPUs split the layers (22 + 21, the streams of
 * one token cross NVLink once, 128 KB), which at batch 1 costs the same per token plus that hop.
 *
 *     bench-gpu-engine [--ctx N[,N...]] [--steps N] [--models mid,flash4] [--prefill-max N] [--profile] */
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

static double floor_ms(const struct inf_config *c, long long ctx, double bw, double *wbytes, double *sbytes)
{
    struct ctx_err e = {0};
    struct inf_memory_plan mp;
    *wbytes = inf_memory_plan(c, ctx, &mp, &e) ? 0 : (double)mp.decode_read_bytes;
    *sbytes = state_read_bytes(c, ctx);
    return (*wbytes + *sbytes) / (bw * 1e9) * 1e3;
}

static int profile;
static char prof[32768], extra[8192];
static int prof_len, extra_len;
#define APPEND(buf, len, ...) (len += snprintf(buf + len, sizeof buf - (size_t)len, __VA_ARGS__))

/* Median host time of `steps` decode steps (ms). */
static int time_steps(struct cuda_engine *g, const int *tok, int steps, float *logits, double *dt, double *med,
                      struct ctx_err *e)
{
    for (int i = 0; i < steps; i++) {
        double a = now_s();
        int rc = cuda_engine_decode(g, tok[i], logits, e);
        if (rc)
            return rc;
        dt[i] = now_s() - a;
    }
    qsort(dt, (size_t)steps, sizeof(double), cmp_d);
    *med = dt[steps / 2] * 1e3;
    return 0;
}

static int run_ctx(const char *name, const struct inf_config *c, struct cuda_engine *g, long long ctx, int steps,
                   long long prefill_max, const int *tok, double bw)
{
    struct ctx_err e = {0};
    float *logits = malloc(sizeof(float) * (size_t)c->vocab_size);
    double *dt = malloc(sizeof(double) * (size_t)steps);
    char pre[32];
    int rc;
    double p0 = now_s();
    if (ctx <= prefill_max) {
        cuda_engine_reset(g);
        rc = cuda_engine_prefill(g, tok, (int)ctx, logits, &e);
        snprintf(pre, sizeof pre, "%.0f", (double)ctx / (now_s() - p0));
    } else {
        rc = cuda_engine_state_fill_random(g, ctx, 1, &e);
        snprintf(pre, sizeof pre, "(filled)");
    }
    double direct = 0, graph = 0;
    const int *dtok = tok + ctx;
    cuda_engine_use_graph(g, 0);
    if (!rc)
        rc = time_steps(g, dtok, steps, logits, dt, &direct, &e);
    cuda_engine_use_graph(g, 1);
    if (!rc) /* the first graph step captures */
        rc = cuda_engine_decode(g, dtok[steps], logits, &e);
    if (!rc)
        rc = time_steps(g, dtok + steps + 1, steps, logits, dt, &graph, &e);
    if (rc) {
        fprintf(stderr, "bench-gpu-engine: %s at %lld: %s\n", name, ctx, e.msg);
        free(logits);
        free(dt);
        return 1;
    }
    double wb, sb, fl = floor_ms(c, ctx, bw, &wb, &sb);
    printf("| %-7s | %2d | %6lld | %8.3f | %8.3f | %7.1f | %8.1f | %7.1f | %7.3f | %6.1f%% | %8s | %d |\n", name,
           c->num_hidden_layers, ctx, direct, graph, 1e3 / graph, wb / 1e6, sb / 1e6, fl, 100.0 * fl / graph, pre,
           cuda_engine_graph_state(g));
    fflush(stdout);
    if (profile && !cuda_engine_profile(g, 1, &e)) {
        int np = 8, L = c->num_hidden_layers;
        double ms[CUDA_PROF_N], sum = 0, *lm = calloc((size_t)L + 1, sizeof(double));
        cuda_engine_profile_get(g, ms, 1);
        cuda_engine_profile_layers(g, lm, 1);
        for (int i = 0; !rc && i < np; i++)
            rc = cuda_engine_decode(g, dtok[i], logits, &e);
        cuda_engine_profile(g, 0, &e);
        cuda_engine_profile_get(g, ms, 1);
        cuda_engine_profile_layers(g, lm, 1);
        for (int i = 0; i < CUDA_PROF_N; i++)
            sum += ms[i] / np;
        APPEND(prof, prof_len,
               "\nDecode GPU time by stage, %s at context %lld (kernels back to back; the graph step takes %.3f ms): "
               "%.3f ms\n\n| stage | ms/token | share |\n|---|---|---|\n",
               name, ctx, graph, sum);
        for (int i = 0; i < CUDA_PROF_N; i++)
            APPEND(prof, prof_len, "| %s | %.3f | %.1f%% |\n", cuda_engine_prof_names[i], ms[i] / np,
                   100.0 * ms[i] / np / sum);
        APPEND(prof, prof_len, "\nby layer (ms/token):");
        for (int l = 0; l < L; l++)
            APPEND(prof, prof_len, " L%d(%s) %.3f", l,
                   c->compress_ratios[l] == 4 ? "csa" : c->compress_ratios[l] ? "hca" : "swa", lm[l] / np);
        APPEND(prof, prof_len, " outside %.3f\n", lm[L] / np);
        if (!strcmp(name, "flash4")) { /* extrapolation to V4-Flash's 43 layers */
            double t[3] = {0}, n[3] = {0};
            for (int l = 0; l < L; l++) {
                int k = c->compress_ratios[l] == 4 ? 1 : c->compress_ratios[l] ? 2 : 0;
                t[k] += lm[l] / np;
                n[k] += 1;
            }
            struct inf_config full;
            if (n[0] && n[1] && n[2] && !inf_config_builtin("flash", &full, &e)) {
                full.num_nextn_predict_layers = 0;
                double layers4 = 0, out = lm[L] / np;
                for (int l = 0; l < L; l++)
                    layers4 += lm[l] / np;
                int cnt[3] = {0};
                for (int l = 0; l < full.num_hidden_layers; l++)
                    cnt[full.compress_ratios[l] == 4 ? 1 : full.compress_ratios[l] ? 2 : 0]++;
                double gpu43 = out + cnt[0] * t[0] / n[0] + cnt[1] * t[1] / n[1] + cnt[2] * t[2] / n[2];
                double step43 = graph * gpu43 / (out + layers4);
                double fwb, fsb, ffl = floor_ms(&full, ctx, bw, &fwb, &fsb);
                APPEND(extra, extra_len,
                       "| %7lld | %.3f | %.3f | %.3f | %.3f | %7.2f | %6.1f | %6.1f | %7.3f | %6.1f%% | %6.1f |\n", ctx,
                       t[0] / n[0], t[1] / n[1], t[2] / n[2], out, step43, 1e3 / step43, 1e3 / (step43 + 0.01),
                       ffl, 100.0 * ffl / step43, (fwb + fsb) / 1e9);
            }
        }
        free(lm);
    }
    free(logits);
    free(dt);
    return rc ? 1 : 0;
}

static int run_model(const char *name, const long long *ctxs, int nctx, int steps, long long prefill_max, double bw)
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
    long long maxctx = 0;
    for (int i = 0; i < nctx; i++)
        maxctx = ctxs[i] > maxctx ? ctxs[i] : maxctx;
    struct inf_weights *w = NULL;
    struct cuda_engine *g = NULL;
    double t0 = now_s();
    if (inf_weights_synthetic(&c, 1, &w, &e)) {
        fprintf(stderr, "bench-gpu-engine: %s: %s\n", name, e.msg);
        return 1;
    }
    double t1 = now_s();
    struct cuda_engine_opts o = {.max_chunk = 256, .max_ctx = maxctx + 2 * steps + 16};
    if (cuda_engine_new(w, &o, &g, &e)) {
        fprintf(stderr, "bench-gpu-engine: %s: %s\n", name, e.msg);
        inf_weights_free(w);
        return 1;
    }
    double t2 = now_s();
    int *tok = malloc(sizeof(int) * (size_t)(maxctx + 2 * steps + 16));
    unsigned long long s = 12345;
    tok[0] = c.bos_token_id;
    for (long long i = 1; i < maxctx + 2 * steps + 16; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        tok[i] = 2 + (int)((s >> 33) % (unsigned long long)(c.vocab_size - 2));
    }
    int rc = 0;
    for (int i = 0; i < nctx; i++)
        rc |= run_ctx(name, &c, g, ctxs[i], steps, prefill_max, tok, bw);
    fprintf(stderr, "# %s: synthetic weights %.1f s, upload + rope tables for %lld positions %.1f s\n", name, t1 - t0,
            o.max_ctx, t2 - t1);
    free(tok);
    cuda_engine_free(g);
    inf_weights_free(w);
    return rc;
}

int main(int argc, char **argv)
{
    long long ctxs[16] = {4096};
    int nctx = 1, steps = 64;
    long long prefill_max = 16384;
    const char *models = "mid,flash4";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--ctx") && i + 1 < argc) {
            nctx = 0;
            for (char *p = argv[++i]; *p && nctx < 16;) {
                ctxs[nctx++] = strtoll(p, &p, 10);
                if (*p == ',')
                    p++;
                else if (*p)
                    break;
            }
        } else if (!strcmp(argv[i], "--steps") && i + 1 < argc) {
            steps = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--models") && i + 1 < argc) {
            models = argv[++i];
        } else if (!strcmp(argv[i], "--prefill-max") && i + 1 < argc) {
            prefill_max = atoll(argv[++i]);
        } else if (!strcmp(argv[i], "--profile")) {
            profile = 1;
        } else {
            fprintf(stderr, "usage: bench-gpu-engine [--ctx N[,N...]] [--steps N] [--models mid,flash4] "
                            "[--prefill-max N] [--profile]\n");
            return 2;
        }
    }
    if (cuda_device_count() < 1) {
        fprintf(stderr, "bench-gpu-engine: no CUDA device\n");
        return 77;
    }
    for (int i = 0; i < nctx; i++)
        if (ctxs[i] < 1) {
            fprintf(stderr, "bench-gpu-engine: contexts must be positive\n");
            return 2;
        }
    if (steps < 1) {
        fprintf(stderr, "bench-gpu-engine: --steps must be positive\n");
        return 2;
    }
    double bw = bench_copy_gbps((size_t)1 << 30, 20);
    printf("floor, bandwidth: device-to-device cudaMemcpy of 1 GiB, median of 20: %.0f GB/s (read + written)\n\n", bw);
    printf("Single-stream decode, CUDA engine, synthetic weights; median of %d steps as direct launches and %d as a "
           "replayed CUDA graph (tok/s and the floor ratio from the graph), after a prefill to the context (tok/s) or "
           "a random state of that position (filled)\n\n",
           steps, steps);
    printf("| model | layers | context | ms direct | ms graph | tok/s | weights read MB | state read MB | floor ms | "
           "of floor | prefill tok/s | graph |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    char buf[256];
    snprintf(buf, sizeof buf, "%s", models);
    int rc = 0;
    for (char *sv = NULL, *m = strtok_r(buf, ",", &sv); m; m = strtok_r(NULL, ",", &sv))
        rc |= run_model(m, ctxs, nctx, steps, prefill_max, bw);
    fputs(prof, stdout);
    if (extra_len) {
        printf("\nExtrapolated to V4-Flash's 43 layers (2 sliding, 21 CSA, 20 HCA) from the flash4 layers' GPU time "
               "above (not measured as such): step = graph step x (outside + 2 swa + 21 csa + 20 hca) / flash4's GPU "
               "sum; 2 GPUs = layers split 22 + 21, +0.01 ms for the one NVLink hop of a token's streams (estimated). "
               "Floor: the full model's decode bytes / the copy bandwidth above (one GPU's bandwidth: a layer split "
               "reads each GPU's half in turn)\n\n");
        printf("| context | swa ms | csa ms | hca ms | outside ms | 43-layer ms/token | tok/s 1 GPU | tok/s 2 GPUs "
               "(layer split) | floor ms | of floor | GB read |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
        fputs(extra, stdout);
    }
    return rc;
}
