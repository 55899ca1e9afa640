/* bench-gpu-spec: single-stream greedy decoding with the MTP block's drafts (speculative decoding,
 * kernels/cuda_engine.h cuda_engine_generate) against plain one-token steps, issue 10's decode rows.
 *
 * Model: flash4 (V4-Flash's first four layers at Flash's shapes: swa, swa, csa, hca) plus its MTP
 * block, synthetic FP4/FP8 weights. At each context: a random state of (context - 128), then a prompt
 * of 128 tokens (the MTP window's) and N generated tokens, timed end to end on the host (every step
 * waits for its tokens, as a server's would); per token = (time for N - time for 1) / (N - 1), median
 * of 3 runs. Runs: plain (the decode graph), and speculative with every draft right (the plain run's
 * tokens forced as drafts: acceptance 1), every draft wrong (acceptance 0) and the MTP's own drafts
 * (synthetic weights: whatever they accept). Each speculative run must give the plain run's tokens.
 *
 * The acceptance of real weights cannot be measured with synthetic ones, so the table gives tok/s
 * as a function of it: a step costs t_acc when its draft is accepted (2 tokens) and t_rej when not
 * (1), so tok/s(p) = (1 + p) / (p t_acc + (1 - p) t_rej). For V4-Flash's 43 layers the step's
 * forward parts are scaled as bench-gpu-engine scales a step (the profiled GPU time of outside + 2 swa
 * + 21 csa + 20 hca over flash4's, separately for the one-token step and the two-token forward);
 * the MTP block (one layer and the head in either model) and the host's share are taken as measured.
 *
 * With --shards N (N GPUs, CTX_GPUS or every visible one; shard i on the i-th mod their count) the
 * same generations then run over the layer split (cuda_multi_generate: flash4's layers over N shards,
 * the MTP block on the last), after the one engine is freed, and the 43-layer rows over N GPUs add
 * what the split costs a step in flash4 (the hops) to the one-GPU rows.
 *
 * With --accel the same model then runs as ctxd runs it: through the accelerator (kernels/cuda_accel.h
 * with opts.mtp) and inference/spec.h, the host choosing every token from the full logits (ctxd's
 * sampler and grammar masks need them; the engine's own loop above takes device argmaxes). After a
 * 4096-token prompt: plain one-token forwards + a host argmax, then speculative steps with a caller
 * that keeps the pending draft with probability p (else refuses it), so the acceptance is set
 * exactly; per token and its host overhead against the engine's own loop at 4096; with --shards N
 * also over the layer split on N GPUs (cuda_accel over N devices, as ctxd --gpus runs it).
 *
 * --full measures V4-Flash's 43 layers and MTP block instead, over every visible GPU, through the
 * accelerator (full_rows, below; two H200s hold them).
 *
 *     bench-gpu-spec [--ctx N[,N...]] [--tokens N] [--shards N] [--accel]
 *     bench-gpu-spec --full [--ctx N[,N...]] [--tokens N] */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../bench.h"

#include "accel.h"
#include "cuda_accel.h"
#include "cuda_engine.h"
#include "gemm.h"
#include "model.h"
#include "multi.h"
#include "sample.h"
#include "spec.h"
#include "weights.h"

#define PROMPT 128
#define RUNS 3

struct run {
    double tok_ms; /* per generated token after the first */
    struct cuda_engine_gen_stats st;
    int same; /* the plain run's tokens */
};

/* What generates: one engine, or (mp) the layer-split pipeline over --shards GPUs. */
struct tgt {
    struct cuda_engine *g;
    struct cuda_multi *m;
};

/* One generation of `want` tokens after a random state of ctx - PROMPT and the prompt: wall seconds. */
static int gen_once(const struct tgt *t, long long ctx, const int *prompt, int want, int spec, int *out,
                    struct cuda_engine_gen_stats *st, double *sec, struct ctx_err *e)
{
    int n = 0, rc = t->m ? cuda_multi_state_fill_random(t->m, ctx - PROMPT, 7, e)
                         : cuda_engine_state_fill_random(t->g, ctx - PROMPT, 7, e);
    struct cuda_engine_gen_opts o = {.max_tokens = want, .spec = spec};
    double t0 = bench_now();
    if (!rc)
        rc = t->m ? cuda_multi_generate(t->m, prompt, PROMPT, &o, out, &n, st, e)
                  : cuda_engine_generate(t->g, prompt, PROMPT, &o, out, &n, st, e);
    *sec = bench_now() - t0;
    if (!rc && n != want)
        rc = 1;
    return rc;
}

/* A run of N tokens (and of 1, the prompt's share): the median per-token time of RUNS. */
static int gen_run(const struct tgt *g, long long ctx, const int *prompt, int N, int spec, const int *ref, int *out,
                   struct run *r, struct ctx_err *e)
{
    double per[RUNS];
    r->same = 1;
    for (int k = 0; k < RUNS; k++) {
        double t1, tn;
        struct cuda_engine_gen_stats s1;
        int rc = gen_once(g, ctx, prompt, 1, spec, out, &s1, &t1, e);
        if (!rc)
            rc = gen_once(g, ctx, prompt, N, spec, out, &r->st, &tn, e);
        if (rc)
            return rc;
        per[k] = (tn - t1) / (N - 1) * 1e3;
        if (ref && memcmp(out, ref, sizeof(int) * (size_t)N))
            r->same = 0;
    }
    r->tok_ms = bench_median(per, RUNS);
    return 0;
}

/* Medians of one-token steps, two-token forwards (rewound after each) and MTP calls of 1 and 2 rows,
 * at the engine's position (ms, wall). */
static int parts(struct cuda_engine *g, const int *tok, double *step, double *verify, double *mtp1,
                 double *mtp2, struct ctx_err *e)
{
    enum { K = 24 };
    double a[K], b[K], c1[K], c2[K];
    int am[2], d = 0, rc = 0;
    struct cuda_engine_mark *m = NULL;
    if ((rc = cuda_engine_mark(g, &m, e)))
        return rc;
    for (int i = 0; i < K && !rc; i++) {
        double t0 = bench_now();
        rc = cuda_engine_forward_rows(g, tok + (i % 64), 1, 1, NULL, am, e);
        double t1 = bench_now();
        if (!rc)
            rc = cuda_engine_mtp(g, 0, tok + (i % 64) + 1, 1, NULL, &d, e);
        double t2 = bench_now();
        a[i] = (t1 - t0) * 1e3;
        c1[i] = (t2 - t1) * 1e3;
    }
    for (int i = 0; i < K && !rc; i++) {
        if ((rc = cuda_engine_rewind(g, m, e)))
            break;
        double t0 = bench_now();
        rc = cuda_engine_forward_rows(g, tok + (i % 64), 2, 2, NULL, am, e);
        double t1 = bench_now();
        if (!rc)
            rc = cuda_engine_mtp(g, 0, tok + (i % 64) + 1, 2, NULL, &d, e);
        double t2 = bench_now();
        b[i] = (t1 - t0) * 1e3;
        c2[i] = (t2 - t1) * 1e3;
    }
    if (!rc)
        rc = cuda_engine_rewind(g, m, e);
    cuda_engine_mark_free(m);
    if (!rc) {
        *step = bench_median(a, K);
        *verify = bench_median(b, K);
        *mtp1 = bench_median(c1, K);
        *mtp2 = bench_median(c2, K);
    }
    return rc;
}

/* GPU time of V4-Flash's 43 layers over flash4's for S-token forwards (profiled, kernels back to back):
 * (outside + 2 swa + 21 csa + 20 hca) / (outside + flash4's four); stage_ms: flash4's GPU ms a forward
 * by stage. */
static int scale43(struct cuda_engine *g, const struct inf_config *c, const int *tok, int S, double *ratio,
                   double *stage_ms, struct ctx_err *e)
{
    enum { NP = 6 };
    int L = c->num_hidden_layers, am[2], rc;
    double ms[CUDA_PROF_N], lm[16] = {0};
    struct cuda_engine_mark *m = NULL;
    if ((rc = cuda_engine_mark(g, &m, e)))
        return rc;
    if ((rc = cuda_engine_profile(g, 1, e)))
        goto out;
    cuda_engine_profile_get(g, ms, 1);
    cuda_engine_profile_layers(g, lm, 1);
    for (int i = 0; i < NP && !rc; i++)
        if (!(rc = cuda_engine_forward_rows(g, tok + i, S, S, NULL, am, e)))
            rc = cuda_engine_rewind(g, m, e);
    cuda_engine_profile(g, 0, e);
    cuda_engine_profile_layers(g, lm, 1);
    cuda_engine_profile_get(g, ms, 1);
    for (int i = 0; i < CUDA_PROF_N; i++)
        stage_ms[i] = ms[i] / NP;
    if (!rc) {
        struct inf_config full;
        if ((rc = inf_config_builtin("flash", &full, e)))
            goto out;
        double t[3] = {0}, n[3] = {0}, four = lm[L];
        for (int l = 0; l < L; l++) {
            int k = c->compress_ratios[l] == 4 ? 1 : c->compress_ratios[l] ? 2 : 0;
            t[k] += lm[l];
            n[k] += 1;
            four += lm[l];
        }
        int cnt[3] = {0};
        for (int l = 0; l < full.num_hidden_layers; l++)
            cnt[full.compress_ratios[l] == 4 ? 1 : full.compress_ratios[l] ? 2 : 0]++;
        if (!n[0] || !n[1] || !n[2] || four <= 0) {
            rc = 1;
            goto out;
        }
        *ratio = (lm[L] + cnt[0] * t[0] / n[0] + cnt[1] * t[1] / n[1] + cnt[2] * t[2] / n[2]) / four;
    }
out:
    cuda_engine_mark_free(m);
    return rc;
}

static double tps(double p, double acc, double rej) { return 1e3 * (1 + p) / (p * acc + (1 - p) * rej); }

/* One timed run of a decoding policy from the state as it stands (the caller resets or rewinds it): the nt
 * tokens of `tail` (spec.h's prefill when p >= 0, which feeds the MTP window), then N tokens, each the
 * argmax of the last logits or, speculative, the pending draft kept with probability p (else refused, so
 * p is the acceptance); *ms per token; the run's draft counts are added to *tot. */
static int policy_run(struct inf_model *M, struct inf_state *st, const int *tail, int nt, int N, double p, int r,
                      float *lg, int V, double *ms, struct inf_spec_stats *tot, struct ctx_err *e)
{
    struct inf_spec *sp = NULL;
    int rc = p >= 0 ? inf_spec_new(M, st, &sp, e) : 0;
    struct inf_forward_opts fo = {.logits = lg};
    if (!rc)
        rc = sp ? inf_spec_prefill(sp, tail, nt, lg, e) : inf_model_forward(M, st, tail, nt, &fo, e);
    unsigned long long u = 777 + (unsigned long long)r;
    double t0 = bench_now();
    for (int i = 0; !rc && i < N; i++) {
        int t = inf_argmax(lg, V);
        if (sp) {
            int pend = inf_spec_pending(sp);
            u = u * 6364136223846793005ull + 1442695040888963407ull;
            double x = (double)(u >> 11) * 0x1.0p-53;
            if (pend >= 0)
                t = x < p ? pend : (pend + 1) % V;
            rc = inf_spec_next(sp, t, lg, e);
        } else {
            rc = inf_model_forward(M, st, &t, 1, &fo, e);
        }
    }
    *ms = (bench_now() - t0) * 1e3 / N;
    if (sp && !rc) {
        struct inf_spec_stats a;
        inf_spec_stats(sp, &a);
        tot->drafted += a.drafted;
        tot->accepted += a.accepted;
        rc = inf_spec_settle(sp, e);
    }
    inf_spec_free(sp);
    return rc;
}

/* --accel: decode through cuda_accel + inference/spec.h as ctxd does. plain_ms: the engine's own plain
 * loop at 4096 from the rows above (for the overhead column). */
#define ACC_PROMPT 4096
static int accel_rows(const struct inf_weights *w, int N, double engine_plain_ms, int shards, struct ctx_err *e)
{
    const struct inf_config *c = inf_weights_config(w);
    const int V = c->vocab_size;
    int dv[16], nd = cuda_device_count();
    for (int i = 0; i < shards; i++)
        dv[i] = i % nd;
    struct cuda_accel_opts co = {.devices = dv, .n_devices = shards, .max_ctx = ACC_PROMPT + N + 64, .max_chunk = 4096,
                                 .mtp = 1};
    struct inf_model *M = NULL;
    struct inf_accel *A = NULL;
    struct inf_state *st = NULL;
    int rc = inf_model_new(w, NULL, 1, &M, e);
    if (!rc)
        rc = cuda_accel_new(w, &co, &A, e);
    if (!rc)
        rc = inf_state_new(c, &st, e);
    if (rc) {
        inf_model_free(M);
        return rc;
    }
    inf_model_set_accel(M, A);
    int *prompt = malloc(sizeof(int) * ACC_PROMPT);
    float *lg = malloc(sizeof(float) * (size_t)V);
    unsigned long long s = 12345;
    for (int i = 0; i < ACC_PROMPT; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        prompt[i] = 2 + (int)((s >> 33) % (unsigned long long)(V - 2));
    }
    printf("\nThrough the accelerator as ctxd runs it (%s; inference/spec.h; the host "
           "chooses every token from the full logits: a plain step copies one row of %d logits, a speculative one two), "
           "flash4 + MTP, after a %d-token prompt, %d tokens, ms per token (wall, median of %d); the caller keeps the "
           "pending draft with probability p (else refuses it), so p is the acceptance\n\n",
           cuda_accel_describe(A), V, ACC_PROMPT, N, RUNS);
    printf("| path | ms/token | tok/s | drafts verified | kept | host overhead vs the engine's loop ms/step |\n"
           "|---|---|---|---|---|---|\n");
    const double ps[] = {-1, 0, 0.5, 0.8, 0.9, 1.0}; /* -1: plain forwards */
    for (size_t pi = 0; !rc && pi < sizeof ps / sizeof *ps; pi++) {
        double ms[RUNS];
        struct inf_spec_stats tot = {0};
        for (int r = 0; !rc && r < RUNS; r++) {
            inf_state_reset(st);
            rc = policy_run(M, st, prompt, ACC_PROMPT, N, ps[pi], r, lg, V, &ms[r], &tot, e);
        }
        if (rc)
            break;
        double m = bench_median(ms, RUNS);
        char path[64];
        if (ps[pi] < 0)
            snprintf(path, sizeof path, "plain (one-token forwards)");
        else
            snprintf(path, sizeof path, "speculative, p = %.1f", ps[pi]);
        /* a plain step is one forward; a speculative step's cost per token is spread over 1 + p tokens */
        if (ps[pi] < 0 && engine_plain_ms > 0 && shards == 1)
            printf("| %s | %.3f | %.1f | | | %+.3f |\n", path, m, 1e3 / m, m - engine_plain_ms);
        else if (ps[pi] < 0)
            printf("| %s | %.3f | %.1f | | | %s |\n", path, m, 1e3 / m, shards > 1 ? "" : "(no 4096 row above)");
        else
            printf("| %s | %.3f | %.1f | %lld | %lld | |\n", path, m, 1e3 / m, tot.drafted / RUNS, tot.accepted / RUNS);
    }
    inf_state_free(st);
    inf_model_free(M);
    inf_accel_free(A);
    free(prompt);
    free(lg);
    return rc;
}

/* --full: V4-Flash's 43 layers and its MTP block on synthetic weights over every visible GPU (one shard
 * a device, the MTP block on the last), as ctxd runs them: cuda_accel + inference/spec.h, the host
 * choosing each token from the full logits. At each context the prompt is prefilled once (a real
 * pipelined prefill of ctx - 128 tokens), snapshotted, and every run goes back to that snapshot
 * (device marks) and feeds the last 128 tokens (spec.h's prefill: the MTP window's rows) before its N
 * tokens; policies as accel_rows (plain forwards, then a caller keeping each draft with probability p).
 * Measured, not extrapolated. */
static int full_rows(const long long *ctxs, int nctx, int N, struct ctx_err *e)
{
    struct inf_config c;
    int rc = inf_config_builtin("flash", &c, e);
    if (rc)
        return rc;
    if (c.num_nextn_predict_layers < 1)
        return ctx_err_set(e, CTX_EINVAL, "the flash config has no MTP block");
    c.num_nextn_predict_layers = 1;
    long long maxctx = 0;
    for (int i = 0; i < nctx; i++)
        maxctx = ctxs[i] > maxctx ? ctxs[i] : maxctx;
    const int V = c.vocab_size, nd = cuda_device_count();
    int dv[16];
    for (int i = 0; i < nd && i < 16; i++)
        dv[i] = i;
    struct inf_weights *w = NULL;
    double t0 = bench_now();
    if ((rc = inf_weights_synthetic(&c, 1, &w, e)))
        return rc;
    double t1 = bench_now();
    struct cuda_accel_opts co = {.devices = dv, .n_devices = nd < 16 ? nd : 16, .max_ctx = maxctx + N + 64,
                                 .max_chunk = 4096, .mtp = 1};
    struct inf_model *M = NULL;
    struct inf_accel *A = NULL;
    struct inf_state *st = NULL;
    struct inf_snapshot *snap = NULL;
    int *prompt = malloc(sizeof(int) * (size_t)maxctx);
    float *lg = malloc(sizeof(float) * (size_t)V);
    if (!prompt || !lg)
        rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
    if (!rc)
        rc = inf_model_new(w, NULL, 1, &M, e);
    if (!rc)
        rc = cuda_accel_new(w, &co, &A, e);
    if (!rc)
        rc = inf_state_new(&c, &st, e);
    if (!rc) {
        inf_model_set_accel(M, A);
        unsigned long long s = 4244;
        prompt[0] = c.bos_token_id;
        for (long long i = 1; i < maxctx; i++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            prompt[i] = 2 + (int)((s >> 33) % (unsigned long long)(V - 2));
        }
        printf("# V4-Flash %d layers + MTP: synthetic weights %.1f s, accelerator %.1f s: %s\n\n", c.num_hidden_layers,
               t1 - t0, bench_now() - t1, cuda_accel_describe(A));
        printf("V4-Flash's %d layers and its MTP block, measured through the accelerator as ctxd runs them "
               "(inference/spec.h; the host chooses every token from the full logits), synthetic weights: at each "
               "context a prefill of context - %d tokens (once), then per run the state back to it and the last %d "
               "tokens, then %d tokens; ms per token (wall, median of %d); the caller keeps the pending draft with "
               "probability p (else refuses it), so p is the acceptance\n\n",
               c.num_hidden_layers, PROMPT, PROMPT, N, RUNS);
        printf("| context | path | ms/token | tok/s | drafts verified | kept |\n|---|---|---|---|---|---|\n");
    }
    const double ps[] = {-1, 0, 0.5, 0.8, 0.9, 1.0}; /* -1: plain forwards */
    for (int ci = 0; !rc && ci < nctx; ci++) {
        long long ctx = ctxs[ci], P0 = ctx - PROMPT;
        struct inf_forward_opts fo0 = {0};
        inf_state_reset(st);
        double a = bench_now();
        rc = inf_model_forward(M, st, prompt, (int)P0, &fo0, e);
        double pre = bench_now() - a;
        inf_snapshot_free(snap);
        snap = NULL;
        if (!rc)
            rc = inf_state_snapshot(st, &snap, e);
        if (!rc)
            printf("| %lld | (prefill of %lld tokens: %.2f s, %.0f tok/s) | | | | |\n", ctx, P0, pre, P0 / pre);
        for (size_t pi = 0; !rc && pi < sizeof ps / sizeof *ps; pi++) {
            double ms[RUNS];
            struct inf_spec_stats tot = {0};
            for (int r = 0; !rc && r < RUNS; r++)
                if (!(rc = inf_state_truncate(st, snap, e)))
                    rc = policy_run(M, st, prompt + P0, PROMPT, N, ps[pi], r, lg, V, &ms[r], &tot, e);
            if (rc)
                break;
            double m = bench_median(ms, RUNS);
            if (ps[pi] < 0)
                printf("| %lld | plain (one-token forwards) | %.3f | %.1f | | |\n", ctx, m, 1e3 / m);
            else
                printf("| %lld | speculative, p = %.1f | %.3f | %.1f | %lld | %lld |\n", ctx, ps[pi], m, 1e3 / m,
                       tot.drafted / RUNS, tot.accepted / RUNS);
            fflush(stdout);
        }
    }
    inf_snapshot_free(snap);
    inf_state_free(st);
    inf_model_free(M);
    inf_accel_free(A);
    inf_weights_free(w);
    free(prompt);
    free(lg);
    return rc;
}

int main(int argc, char **argv)
{
    long long ctxs[8] = {4096, 131072};
    int nctx = 2, N = 64, shards = 1, accel = 0, full = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--ctx") && i + 1 < argc) {
            nctx = 0;
            for (char *p = argv[++i]; *p && nctx < 8;) {
                ctxs[nctx++] = strtoll(p, &p, 10);
                if (*p == ',')
                    p++;
                else if (*p)
                    break;
            }
        } else if (!strcmp(argv[i], "--tokens") && i + 1 < argc) {
            N = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--shards") && i + 1 < argc) {
            shards = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--accel")) {
            accel = 1;
        } else if (!strcmp(argv[i], "--full")) {
            full = 1;
        } else {
            fprintf(stderr, "usage: bench-gpu-spec [--ctx N[,N...]] [--tokens N] [--shards N] [--accel] | --full [--ctx "
                            "N[,N...]] [--tokens N]\n");
            return 2;
        }
    }
    if (N < 8 || N > 4096 || shards < 1 || shards > 4) {
        fprintf(stderr, "bench-gpu-spec: --tokens must be in 8..4096, --shards in 1..4\n");
        return 2;
    }
    long long maxctx = 0;
    for (int i = 0; i < nctx; i++) {
        if (ctxs[i] < PROMPT + 64) {
            fprintf(stderr, "bench-gpu-spec: contexts must be at least %d\n", PROMPT + 64);
            return 2;
        }
        maxctx = ctxs[i] > maxctx ? ctxs[i] : maxctx;
    }
    if (cuda_device_count() < 1) {
        fprintf(stderr, "bench-gpu-spec: no CUDA device\n");
        return 77;
    }
    struct ctx_err e = {0};
    if (full) {
        int frc = full_rows(ctxs, nctx, N, &e);
        if (frc)
            fprintf(stderr, "bench-gpu-spec: --full: %s\n", e.msg);
        return frc ? 1 : 0;
    }
    struct inf_config c;
    struct inf_weights *w = NULL;
    struct cuda_engine *g = NULL;
    if (inf_config_builtin("flash", &c, &e))
        goto fail;
    c.num_hidden_layers = 4; /* flash4, and the MTP block after it (sliding window, learned routing) */
    c.num_hash_layers = 3;
    c.num_nextn_predict_layers = 1;
    c.compress_ratios[4] = 0;
    double t0 = bench_now();
    if (inf_config_validate(&c, "flash4+mtp", &e) || inf_weights_synthetic(&c, 1, &w, &e))
        goto fail;
    struct cuda_engine_opts o = {.max_chunk = 256, .max_ctx = maxctx + N + 64, .mtp = 1};
    if (cuda_engine_new(w, &o, &g, &e))
        goto fail;
    printf("# flash4 + MTP: synthetic weights and upload %.1f s\n\n", bench_now() - t0);
    int V = c.vocab_size, rc = 0;
    int *prompt = malloc(sizeof(int) * (PROMPT + 64)), *ref = malloc(sizeof(int) * (size_t)N);
    int *out = malloc(sizeof(int) * (size_t)N), *wrong = malloc(sizeof(int) * (size_t)N);
    unsigned long long s = 99;
    for (int i = 0; i < PROMPT + 64; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        prompt[i] = 2 + (int)((s >> 33) % (unsigned long long)(V - 2));
    }
    printf("Greedy generation, flash4 + its MTP block, synthetic weights: a prompt of %d tokens after a random state, "
           "then %d tokens; ms per generated token (wall, each step waiting for its tokens; median of %d), plain "
           "one-token steps against speculative decoding (one MTP draft a step, verified by a two-token forward)\n\n",
           PROMPT, N, RUNS);
    printf("| context | plain ms/token | spec, drafts all right | all wrong | the MTP's drafts (accepted) | same tokens "
           "| step ms | 2-token forward ms | MTP 1 / 2 rows ms |\n");
    printf("|---|---|---|---|---|---|---|---|---|\n");
    char tab43[4096], stages[4096];
    int len43 = 0, lens = 0;
    double one[8][6]; /* per context, one GPU: plain, right and wrong ms a token; plain43, acc43, rej43 */
    const struct tgt t1g = {g, NULL};
    for (int ci = 0; ci < nctx && !rc; ci++) {
        long long ctx = ctxs[ci];
        struct run plain, right, bad, mtp;
        cuda_engine_spec_force(g, NULL, 0);
        if ((rc = gen_run(&t1g, ctx, prompt, N, 0, NULL, ref, &plain, &e)))
            break;
        for (int i = 0; i < N; i++)
            wrong[i] = (ref[i] + 1) % V;
        cuda_engine_spec_force(g, ref, N);
        if ((rc = gen_run(&t1g, ctx, prompt, N, 1, ref, out, &right, &e)))
            break;
        cuda_engine_spec_force(g, wrong, N);
        if ((rc = gen_run(&t1g, ctx, prompt, N, 1, ref, out, &bad, &e)))
            break;
        cuda_engine_spec_force(g, NULL, 0);
        if ((rc = gen_run(&t1g, ctx, prompt, N, 1, ref, out, &mtp, &e)))
            break;
        /* the parts and the 43-layer scale at the context */
        double step, ver, m1, m2, r1, r2, st1[CUDA_PROF_N], st2[CUDA_PROF_N];
        if ((rc = cuda_engine_state_fill_random(g, ctx - PROMPT, 7, &e)) ||
            (rc = cuda_engine_forward(g, prompt, PROMPT, NULL, &e)) ||
            (rc = parts(g, prompt, &step, &ver, &m1, &m2, &e)) || (rc = scale43(g, &c, prompt, 1, &r1, st1, &e)) ||
            (rc = scale43(g, &c, prompt, 2, &r2, st2, &e)))
            break;
        double t1 = 0, t2 = 0;
        lens += snprintf(stages + lens, sizeof stages - (size_t)lens, "| %lld |", ctx);
        for (int i = 0; i < CUDA_PROF_N; i++) {
            lens += snprintf(stages + lens, sizeof stages - (size_t)lens, " %.3f / %.3f |", st1[i], st2[i]);
            t1 += st1[i];
            t2 += st2[i];
        }
        lens += snprintf(stages + lens, sizeof stages - (size_t)lens, " %.3f / %.3f |\n", t1, t2);
        const double acc4 = right.tok_ms * 2, rej4 = bad.tok_ms; /* ms a step: 2 tokens / 1 token */
        printf("| %lld | %.3f | %.3f | %.3f | %.3f (%lld of %lld) | %s | %.3f | %.3f | %.3f / %.3f |\n", ctx,
               plain.tok_ms, right.tok_ms, bad.tok_ms, mtp.tok_ms, mtp.st.accepted, mtp.st.drafted,
               right.same && bad.same && mtp.same ? "yes" : "NO", step, ver, m1, m2);
        /* 43 layers: the forwards scaled, the MTP and the rest as measured */
        const double step43 = step * r1, ver43 = ver * r2;
        const double acc43 = acc4 + (ver43 - ver);
        const double rej43 = rej4 + (ver43 - ver);
        const double plain43 = plain.tok_ms + (step43 - step);
        const double row[6] = {plain.tok_ms, right.tok_ms, bad.tok_ms, plain43, acc43, rej43};
        memcpy(one[ci], row, sizeof row);
        len43 += snprintf(tab43 + len43, sizeof tab43 - (size_t)len43,
                          "| %lld | %.2f | %.1f | %.2f | %.2f | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f |\n", ctx,
                          plain43, 1e3 / plain43, acc43, rej43, tps(0, acc43, rej43), tps(0.5, acc43, rej43),
                          tps(0.7, acc43, rej43), tps(0.8, acc43, rej43), tps(0.9, acc43, rej43),
                          tps(1, acc43, rej43));
        if (!right.same || !bad.same || !mtp.same)
            rc = 1;
    }
    if (!rc) {
        printf("\nV4-Flash's 43 layers on one GPU (estimate: the forwards scaled by their profiled 43 / 4 layer ratio, "
               "the MTP block and the host's share as measured): ms a step with the draft accepted (2 tokens) and "
               "rejected (1), and tok/s at acceptance p = (1 + p) / (p acc + (1 - p) rej)\n\n");
        printf("| context | plain ms/token | plain tok/s | spec step accepted ms | rejected ms | tok/s p=0 | p=0.5 | p=0.7 "
               "| p=0.8 | p=0.9 | p=1 |\n|---|---|---|---|---|---|---|---|---|---|---|\n%s",
               tab43);
        printf("\nflash4 GPU ms a forward by stage (profiled: kernels back to back), one token / two tokens\n\n| context |");
        for (int i = 0; i < CUDA_PROF_N; i++)
            printf(" %s |", cuda_engine_prof_names[i]);
        printf(" sum |\n|---|");
        for (int i = 0; i <= CUDA_PROF_N; i++)
            printf("---|");
        printf("\n%s", stages);
    }
    if (!rc && shards > 1) { /* the layer split: flash4 over `shards` GPUs, the one engine freed first */
        cuda_engine_free(g);
        g = NULL;
        int dv[16], nd = cuda_device_count(), L = c.num_hidden_layers;
        for (int i = 0; i < shards; i++)
            dv[i] = i % nd;
        struct cuda_multi *m = NULL;
        if ((rc = cuda_multi_new(w, &o, dv, shards, NULL, &m, &e)))
            goto done;
        struct cuda_engine *last = cuda_multi_engine(m, shards - 1);
        const struct tgt tm = {NULL, m};
        printf("\nThe same over %d shards of flash4's %d layers on %d GPU%s (cuda_multi_generate, the MTP block on the last): "
               "ms a generated token, and the split's cost a step against one GPU (the hops)\n\n",
               shards, L, nd < shards ? nd : shards, (nd < shards ? nd : shards) > 1 ? "s" : "");
        printf("| context | plain ms/token | spec, drafts all right | all wrong | same tokens | split cost a plain step ms | "
               "an accepted step | a rejected step |\n|---|---|---|---|---|---|---|---|\n");
        char tabm[4096];
        int lenm = 0;
        for (int ci = 0; ci < nctx && !rc; ci++) {
            long long ctx = ctxs[ci];
            struct run plain, right, bad;
            cuda_engine_spec_force(last, NULL, 0);
            if ((rc = gen_run(&tm, ctx, prompt, N, 0, NULL, ref, &plain, &e)))
                break;
            /* the pipeline's plain tokens are one engine's (test_multi): the same forced drafts */
            for (int i = 0; i < N; i++)
                wrong[i] = (ref[i] + 1) % V;
            cuda_engine_spec_force(last, ref, N);
            if ((rc = gen_run(&tm, ctx, prompt, N, 1, ref, out, &right, &e)))
                break;
            cuda_engine_spec_force(last, wrong, N);
            if ((rc = gen_run(&tm, ctx, prompt, N, 1, ref, out, &bad, &e)))
                break;
            cuda_engine_spec_force(last, NULL, 0);
            const double dp = plain.tok_ms - one[ci][0], da = 2 * (right.tok_ms - one[ci][1]),
                         dr = bad.tok_ms - one[ci][2];
            printf("| %lld | %.3f | %.3f | %.3f | %s | %+.3f | %+.3f | %+.3f |\n", ctx, plain.tok_ms, right.tok_ms,
                   bad.tok_ms, right.same && bad.same ? "yes" : "NO", dp, da, dr);
            const double p43 = one[ci][3] + dp, a43 = one[ci][4] + da, r43 = one[ci][5] + dr;
            lenm += snprintf(tabm + lenm, sizeof tabm - (size_t)lenm,
                             "| %lld | %.2f | %.1f | %.2f | %.2f | %.1f | %.1f | %.1f | %.1f |\n", ctx, p43, 1e3 / p43,
                             a43, r43, tps(0.7, a43, r43), tps(0.8, a43, r43), tps(0.9, a43, r43), tps(1, a43, r43));
            if (!right.same || !bad.same)
                rc = 1;
        }
        if (!rc)
            printf("\nV4-Flash's 43 layers over %d GPUs (estimate: the one-GPU rows above plus the split's cost a step)\n\n"
                   "| context | plain ms/token | plain tok/s | spec step accepted ms | rejected ms | tok/s p=0.7 | p=0.8 | "
                   "p=0.9 | p=1 |\n|---|---|---|---|---|---|---|---|---|\n%s",
                   shards, tabm);
        cuda_multi_free(m);
    }
    if (!rc && accel) { /* the one engine goes first: the accelerator uploads the weights again */
        double ep = -1;
        for (int ci = 0; ci < nctx; ci++)
            if (ctxs[ci] == 4096)
                ep = one[ci][0];
        cuda_engine_free(g);
        g = NULL;
        rc = accel_rows(w, N, ep, 1, &e);
        if (!rc && shards > 1)
            rc = accel_rows(w, N, ep, shards, &e);
    }
done:
    free(prompt);
    free(ref);
    free(out);
    free(wrong);
    if (rc) {
        fprintf(stderr, "bench-gpu-spec: %s\n", e.msg[0] ? e.msg : "speculative tokens differ from the plain run's");
        cuda_engine_free(g);
        inf_weights_free(w);
        return 1;
    }
    cuda_engine_free(g);
    inf_weights_free(w);
    return 0;
fail:
    fprintf(stderr, "bench-gpu-spec: %s\n", e.msg);
    cuda_engine_free(g);
    inf_weights_free(w);
    return 1;
}
