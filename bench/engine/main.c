/* bench_engine: prefill and decode speed of the CPU engine, resident memory, and decode's ratio to
 * this machine's memory-bandwidth floor measured in the same run.
 *
 *   bench_engine [--threads N] [--reps N] [--prefill N] [--decode N] [--models tiny-a,mid]
 *                [--fixture DIR] [--bw-mib N]
 *
 * Models: "tiny-a" is the checkpoint in tests/fixtures/v4-tiny-a (loaded from disk, mmapped);
 * any other name is a built-in synthetic config (inf_config_builtin: tiny, mid, flash, ...) drawn
 * with seed 1. The floor: the bytes one decode step must read (every weight the step uses, as
 * stored: all dense tensors, the head, one embedding row, and the routed experts' share top-k/E of
 * the expert tensors, plus the window KV it attends in bf16) divided by the sustained read
 * bandwidth of all threads over a buffer much larger than the caches. Ratio = floor time / measured
 * step time (1.0 = at the bandwidth floor). All figures are medians over the repetitions. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../bench.h"

#include "config.h"
#include "cpu/kernels.h"
#include "ctx_config.h"
#include "model.h"
#include "pool.h"
#include "state.h"
#include "weights.h"

/* VmRSS or VmHWM of this process, in bytes. */
static long long proc_status(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long long v = -1;
    size_t kl = strlen(key);
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, key, kl) && line[kl] == ':')
            v = atoll(line + kl + 1) * 1024;
    if (f)
        fclose(f);
    return v;
}

/* ---- sustained read bandwidth ---- */

struct bw_job {
    const uint64_t *buf;
    size_t n; /* words */
    uint64_t sink[256];
};

static void bw_task(void *ud, int tid, int nt)
{
    struct bw_job *j = ud;
    size_t a = j->n * (size_t)tid / (size_t)nt, b = j->n * (size_t)(tid + 1) / (size_t)nt;
    uint64_t x0 = 0, x1 = 0, x2 = 0, x3 = 0;
    for (size_t i = a; i + 4 <= b; i += 4) {
        x0 ^= j->buf[i];
        x1 ^= j->buf[i + 1];
        x2 ^= j->buf[i + 2];
        x3 ^= j->buf[i + 3];
    }
    j->sink[tid % 256] = x0 ^ x1 ^ x2 ^ x3;
}

static void fill_task(void *ud, int tid, int nt)
{
    struct bw_job *j = ud;
    uint64_t *w = (uint64_t *)(uintptr_t)j->buf;
    size_t a = j->n * (size_t)tid / (size_t)nt, b = j->n * (size_t)(tid + 1) / (size_t)nt;
    for (size_t i = a; i < b; i++)
        w[i] = i * 0x9e3779b97f4a7c15ull;
}

static double measure_bw(struct ctx_pool *pool, size_t mib, int reps)
{
    struct bw_job j = {0};
    j.n = mib * 1024 * 1024 / 8;
    j.buf = malloc(j.n * 8);
    if (!j.buf)
        return 0;
    ctx_pool_run(pool, fill_task, &j); /* first touch by the readers' threads */
    double gbs[32];
    if (reps > 32)
        reps = 32;
    ctx_pool_run(pool, bw_task, &j); /* warm-up */
    for (int r = 0; r < reps; r++) {
        double t0 = bench_now();
        ctx_pool_run(pool, bw_task, &j);
        gbs[r] = (double)j.n * 8 / (bench_now() - t0) / 1e9;
    }
    free((void *)(uintptr_t)j.buf);
    return bench_median(gbs, reps);
}

/* ---- bytes one decode step reads ---- */

static double decode_bytes(const struct inf_weights *w, long long ctx_len)
{
    const struct inf_config *c = inf_weights_config(w);
    double bytes = 0;
    double share = (double)c->num_experts_per_tok / c->n_routed_experts;
    for (int i = 0; i < inf_weights_count(w); i++) {
        const struct inf_tensor *t = inf_weights_tensor(w, i);
        if (!strcmp(t->name, "embed.weight"))
            bytes += (double)c->hidden_size * 2;
        else if (strstr(t->name, ".ffn.experts."))
            bytes += (double)t->nbytes * share;
        else if (strstr(t->name, "tid2eid"))
            bytes += (double)c->num_experts_per_tok * 8;
        else if (!strncmp(t->name, "mtp.", 4))
            continue; /* decode of the backbone does not run the MTP block */
        else
            bytes += (double)t->nbytes;
    }
    /* window KV attended, bf16: min(ctx, window) entries of head_dim per layer */
    long long win = ctx_len < c->sliding_window ? ctx_len : c->sliding_window;
    bytes += (double)c->num_hidden_layers * win * c->head_dim * 2;
    return bytes;
}

/* ---- one model ---- */

struct result {
    double prefill_tps, decode_tps, decode_ms, floor_ms, ratio;
    double rss_mib, hwm_mib, weights_mib;
};

static int run_model(const char *name, const char *fixture, int threads, int reps, int P, int T, double bw,
                     struct result *res)
{
    struct ctx_err e = {0};
    struct inf_weights *w = NULL;
    struct inf_model *m = NULL;
    double t0 = bench_now();
    if (!strcmp(name, "tiny-a")) {
        if (inf_weights_open(fixture, &w, &e)) {
            fprintf(stderr, "bench_engine: %s: %s\n", name, e.msg);
            return -1;
        }
    } else {
        struct inf_config c;
        if (inf_config_builtin(name, &c, &e) || inf_weights_synthetic(&c, 1, &w, &e)) {
            fprintf(stderr, "bench_engine: %s: %s\n", name, e.msg);
            return -1;
        }
    }
    double load_s = bench_now() - t0;
    if (inf_model_new(w, NULL, threads, &m, &e)) {
        fprintf(stderr, "bench_engine: %s: %s\n", name, e.msg);
        inf_weights_free(w);
        return -1;
    }
    const struct inf_config *c = inf_weights_config(w);
    double wbytes = 0;
    for (int i = 0; i < inf_weights_count(w); i++)
        wbytes += (double)inf_weights_tensor(w, i)->nbytes;
    int *tok = malloc(sizeof(int) * (size_t)(P + T));
    uint64_t x = 88172645463325252ull;
    for (int i = 0; i < P + T; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        tok[i] = i == 0 ? c->bos_token_id : 2 + (int)(x % (uint64_t)(c->vocab_size - 2));
    }
    float *logits = malloc(sizeof(float) * (size_t)c->vocab_size);
    double pre[64], dec[4096];
    int nd = 0;
    if (reps > 64)
        reps = 64;
    struct inf_cpu_prof prof;
    double stage[INF_PROF_N];
    for (int r = 0; r < reps; r++) {
        struct inf_state *st;
        if (inf_state_new(c, &st, &e)) {
            fprintf(stderr, "bench_engine: %s\n", e.msg);
            return -1;
        }
        struct inf_forward_opts o = {.logits = logits};
        double a = bench_now();
        if (inf_model_forward(m, st, tok, P, &o, &e)) {
            fprintf(stderr, "bench_engine: %s\n", e.msg);
            return -1;
        }
        pre[r] = P / (bench_now() - a);
        inf_cpu_prof_get(&prof, 1);
        inf_model_prof_get(stage, 1);
        for (int j = 0; j < T && nd < 4096; j++) {
            a = bench_now();
            if (inf_model_forward(m, st, tok + P + j, 1, &o, &e)) {
                fprintf(stderr, "bench_engine: %s\n", e.msg);
                return -1;
            }
            dec[nd++] = bench_now() - a;
        }
        inf_state_free(st);
    }
    inf_cpu_prof_get(&prof, 1);
    inf_model_prof_get(stage, 1);
    if (getenv("CTX_ENGINE_PROFILE")) {
        double dsum = 0;
        for (int i = nd - T; i < nd; i++)
            dsum += dec[i];
        printf("# %s decode stages (last rep, mean per step %.2f ms): attention %.2f, moe %.2f, mHC %.2f, head %.2f ms\n",
               name, dsum * 1e3 / T, stage[INF_PROF_ATTN] * 1e3 / T, stage[INF_PROF_MOE] * 1e3 / T,
               stage[INF_PROF_HC] * 1e3 / T, stage[INF_PROF_HEAD] * 1e3 / T);
        static const char *kn[5] = {"fp8", "fp4", "fp8dq", "bf16", "f32"};
        double tot = 0;
        for (int i = 0; i < 5; i++)
            tot += prof.seconds[i];
        printf("# %s decode profile (last rep, per step): products %.2f ms of %.2f ms:", name, tot * 1e3 / T,
               bench_median(dec, nd) * 1e3);
        for (int i = 0; i < 5; i++)
            if (prof.calls[i])
                printf(" %s %.2f ms (%lld calls, %.1f GB/s)", kn[i], prof.seconds[i] * 1e3 / T, prof.calls[i] / T,
                       prof.bytes[i] / prof.seconds[i] / 1e9);
        printf("\n");
    }
    res->prefill_tps = bench_median(pre, reps);
    res->decode_ms = bench_median(dec, nd) * 1e3;
    res->decode_tps = 1e3 / res->decode_ms;
    res->floor_ms = decode_bytes(w, P + T / 2) / (bw * 1e9) * 1e3;
    res->ratio = res->floor_ms / res->decode_ms;
    res->rss_mib = proc_status("VmRSS") / 1048576.0;
    res->hwm_mib = proc_status("VmHWM") / 1048576.0;
    res->weights_mib = wbytes / 1048576.0;
    printf("# %s: %d layers, hidden %d, %d experts top-%d, weights %.1f MiB, loaded in %.2f s, decode reads %.1f MiB"
           "/step\n",
           name, c->num_hidden_layers, c->hidden_size, c->n_routed_experts, c->num_experts_per_tok,
           res->weights_mib, load_s, decode_bytes(w, P + T / 2) / 1048576.0);
    free(tok);
    free(logits);
    inf_model_free(m);
    inf_weights_free(w);
    return 0;
}

int main(int argc, char **argv)
{
    int threads = 0, reps = 3, P = 256, T = 16;
    size_t bw_mib = 1024;
    const char *models = "tiny-a,mid";
    char fixture[4096];
    const char *root = getenv("CTX_SOURCE_ROOT");
    snprintf(fixture, sizeof fixture, "%s/tests/fixtures/v4-tiny-a", root ? root : CTX_SOURCE_ROOT);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(a, "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(a, "--prefill") && i + 1 < argc)
            P = atoi(argv[++i]);
        else if (!strcmp(a, "--decode") && i + 1 < argc)
            T = atoi(argv[++i]);
        else if (!strcmp(a, "--models") && i + 1 < argc)
            models = argv[++i];
        else if (!strcmp(a, "--fixture") && i + 1 < argc)
            snprintf(fixture, sizeof fixture, "%s", argv[++i]);
        else if (!strcmp(a, "--bw-mib") && i + 1 < argc)
            bw_mib = (size_t)atoll(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_engine [--threads N] [--reps N] [--prefill N] [--decode N] "
                            "[--models tiny-a,mid] [--fixture DIR] [--bw-mib N]\n");
            return 2;
        }
    }
    if (reps < 1 || P < 1 || T < 1) {
        fprintf(stderr, "bench_engine: --reps, --prefill and --decode must be positive\n");
        return 2;
    }
    struct ctx_err e = {0};
    struct ctx_pool *pool = ctx_pool_new(threads, &e);
    if (!pool) {
        fprintf(stderr, "bench_engine: %s\n", e.msg);
        return 1;
    }
    int nt = ctx_pool_size(pool);
    double bw = measure_bw(pool, bw_mib, 5);
    ctx_pool_free(pool);
    printf("# threads %d, sustained read bandwidth %.1f GB/s (%zu MiB buffer, median of 5)\n", nt, bw, bw_mib);
    printf("%-8s %12s %12s %10s %10s %8s %10s %10s\n", "model", "prefill t/s", "decode t/s", "decode ms",
           "floor ms", "ratio", "RSS MiB", "peak MiB");
    char list[1024];
    snprintf(list, sizeof list, "%s", models);
    int status = 0;
    for (char *save = NULL, *name = strtok_r(list, ",", &save); name; name = strtok_r(NULL, ",", &save)) {
        struct result r;
        if (run_model(name, fixture, threads, reps, P, T, bw, &r)) {
            status = 1;
            continue;
        }
        printf("%-8s %12.1f %12.2f %10.2f %10.3f %8.3f %10.1f %10.1f\n", name, r.prefill_tps, r.decode_tps,
               r.decode_ms, r.floor_ms, r.ratio, r.rss_mib, r.hwm_mib);
        fflush(stdout);
    }
    return status;
}
