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
 * `pro4`: V4-Pro's first four layers at Pro's shapes (hidden 7168, 128 heads of 512, q_lora 1536, 16
 * output groups, index top-k 1024, experts of 3072 top-6, real vocabulary; layers 0,1 HCA, 2 CSA, 3
 * HCA; 0-2 hash-routed as in Pro; no MTP) with Pro's 384 routed experts (--pro-experts N for fewer:
 * a decode step reads only the top-6, so the count changes only the gate's bf16 product (E x 7168),
 * which the extrapolation adds back at the measured bandwidth). --profile extrapolates
 * pro4 to Pro's 61 layers (31 HCA, 30 CSA; see pro_extrapolate) on one GPU (hypothetical: ~0.86 TB
 * of weights), 8 GPUs pipeline-parallel and 8 GPUs expert-parallel, with each layout's per-GPU memory
 * at that context; every such figure is an estimate, only the pro4 rows are measured.
 *
 * `--suffix N [--chunk C]` runs instead the prefill tables of sfx_main (below): the indexer alone, prefill
 * throughput at 4K / 128K / 500K, a full 500K prefill estimated from them, and N tokens prefilled after
 * each --ctx (default 131072,500000), chunks of C (default 4096: the CUDA accelerator's and ctxd's slice).
 *
 * --shards N (N > 1) adds, per model and context, the layer-split pipeline (kernels/multi.h): the model
 * over N shards (cuda_multi_plan's split; shard i on device i % the number of devices, the devices from
 * CTX_GPUS, default every visible one, as tests/kernels/test_multi.c) next to the same pipeline code
 * over 1 shard, both measured in this run: decode medians (direct and graph; the difference of the
 * graph steps is what the N - 1 boundary hops cost) and the prefill of the context as one pipelined
 * call (cuda_multi_prefill: chunks queued at once, shard i on chunk c while shard i-1 is on c+1). With
 * one device the shards share it (no speed-up to expect; the hop is a device-to-device copy). It also
 * prints the per-device memory of the full V4-Flash over 2 GPUs at 500K context, computed from the
 * config (cuda_multi_plan's split, weights as stored + the engine's concatenated copies + the
 * state as cuda_engine_new allocates it), not measured.
 *
 * --pdl both adds, per model and context, the decode step with Programmatic Dependent Launch off and on
 * (kernels/README.md "PDL"; cuda_pdl_set, the engine recaptures its graph at each change), direct and
 * graph, from the same random state of that position: the variants alternate in 2 rounds of steps/2
 * timed steps each (after one untimed step that captures), medians, and the ratio on / off.
 * --pdl on|off sets the switch for the whole run (default: on unless CTX_CUDA_PDL=0).
 * --attn-ab A,B[,...] adds, per model and context, the graph decode step with each of the decode
 * attention's CTX_CUDA_FUSE_ATTN bit sets A, B, ... (cuda_engine_attn_fuse; the engine recaptures its
 * graph at each change), in 4 alternating rounds from a fresh random state of the context each, so that
 * the sets are compared in one process and under the same drift; medians and each set's difference
 * from the first. With --ab-moe the sets are the MoE switches' (cuda_engine_moe_mode, kernels/engine.cu's
 * MOE_* bits) instead.
 *
 * CTX_BENCH_PROFILE_AT=P (with --suffix): only one chunk at position P (after a random state) inside
 * cudaProfilerStart/Stop, for `ncu --profile-from-start off` (tools/gpu/s20a.sh).
 *
 * `--full` measures V4-Flash's 43 layers instead (full_main, below): decode, the suffix and a 500K
 * prefill over the lent GPUs, with no extrapolation (two H200s hold it; one does not), in chunks of
 * --chunk C (16..16384; default 16384 there: ctxd's chunk with --backend cuda since 2026-12-01's
 * thirtieth session; 8192 from 2026-11-30's twenty-sixth, 4096 before).
 *
 *     bench-gpu-engine [--ctx N[,N...]] [--steps N] [--models mid,flash4,pro4] [--prefill-max N] [--profile]
 *                      [--pro-experts N] [--suffix N [--chunk C]] [--shards N] [--pdl both|on|off]
 *                      [--attn-ab A,B[,...] [--ab-moe]]
 *     bench-gpu-engine --full [--ctx N[,N...]] [--steps N] [--suffix N] [--prefill N] [--chunk C] [--layers N]
 *                      [--first-layer F] [--slice N]
 * (--slice N: the prefill again as calls of N tokens, -1 not; default ctxd's slices over several GPUs, 4 chunks a
 * GPU, and not on one; --layers N: only the first N layers, to check this mode where the whole model does not fit; --first-layer F:
 * from layer F on, so one GPU can measure each shard of a split it cannot hold, e.g. --first-layer 22 --layers 21
 * for the second of two) */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../bench.h"

#include "cuda_engine.h"
#include "floors.h"
#include "gemm.h"
#include "multi.h"
#include "weights.h"

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

static int profile, pro_experts = 384, shards = 1, ndevs, devs[64], pdl_both, nab, abits[8], ab_moe;
static char prof[32768], extra[8192], pextra[32768], shtab[16384], pdltab[8192], abtab[8192];
static int prof_len, extra_len, pextra_len, shtab_len, pdltab_len, abtab_len;
/* kernels/engine.cu's test and benchmark entry: the decode attention's ATTN_* bits (< 0: the default). */
void cuda_engine_attn_fuse(struct cuda_engine *g, int bits, int force);
void cuda_engine_moe_mode(struct cuda_engine *g, int mode); /* mode < 0: the default */
#define APPEND(buf, len, ...) (len += snprintf(buf + len, sizeof buf - (size_t)len, __VA_ARGS__))

/* ---- V4-Pro extrapolation (pro4 --profile). Every figure here is an estimate built from the pro4
 * layers' measured GPU time; the communication latencies are not measured anywhere in this run. */

/* NVLink figures, not measured (one H200 is lent): 900 GB/s per GPU (both directions, so 450 GB/s one
 * way) and a small-message latency of ~3-8 us per transfer or small collective, both from
 * shared/notes/engine-anchors.md section 4 (its "~3-8 us" small all-reduce assumption; DeepEP's
 * low-latency EP8 kernels, 77 / 114 us for a 128-token dispatch / combine, are a batch figure).
 * Rows are given at both ends of that range. */
#define NVL_GBPS 450.0
static const double nvl_lat_us[2] = {3.0, 8.0};

/* State bytes of one layer at ctx positions as cuda_engine_new allocates them (fp32: window ring,
 * compressor carries, compressed entries, CSA indexer keys + their carries). */
static double layer_state_bytes(const struct inf_config *c, int r, long long ctx)
{
    double d = c->head_dim, di = c->index_head_dim, b = 4.0 * c->sliding_window * d;
    if (r) {
        int coff = r == 4 ? 2 : 1;
        b += 2 * 4.0 * coff * r * coff * d + 4.0 * (double)(ctx / r + 1) * d;
        if (r == 4)
            b += 2 * 4.0 * 8 * 2 * di + 4.0 * (double)(ctx / 4 + 1) * di;
    }
    return b;
}

/* Mean over random tokens of the most routed experts any one GPU runs: k distinct experts of E drawn
 * uniformly, E/gpus consecutive experts per GPU (real routing is less even: an optimistic bound). */
static double ep_max_load(int E, int k, int gpus, int trials)
{
    unsigned long long s = 0x9e3779b97f4a7c15ull;
    double sum = 0;
    int per = E / gpus;
    for (int t = 0; t < trials; t++) {
        int sel[16], n = 0, cnt[64] = {0}, mx = 0;
        while (n < k) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            int x = (int)(s % (unsigned long long)E), dup = 0;
            for (int i = 0; i < n; i++)
                dup |= sel[i] == x;
            if (!dup)
                sel[n++] = x;
        }
        for (int i = 0; i < k; i++)
            if (++cnt[sel[i] / per] > mx)
                mx = cnt[sel[i] / per];
        sum += mx;
    }
    return sum / trials;
}

/* c4: the pro4 config; lm: GPU ms per token of each pro4 layer and (lm[L]) of the outside part;
 * exp_ms: the "moe experts" stage, GPU ms per token over the pro4 layers; graph: the measured
 * graph step. */
static void pro_extrapolate(const struct inf_config *c4, long long ctx, double graph, const double *lm, double exp_ms,
                            double bw)
{
    struct ctx_err e = {0};
    struct inf_config f;
    struct inf_memory_plan mp;
    if (inf_config_builtin("pro", &f, &e))
        return;
    f.num_nextn_predict_layers = 0;
    if (inf_memory_plan(&f, ctx, &mp, &e))
        return;
    int L4 = c4->num_hidden_layers, L = f.num_hidden_layers, G = 8, k = f.num_experts_per_tok;
    double t[2][2] = {{0}}, n[2][2] = {{0}}, sum4 = lm[L4]; /* [csa][hash] */
    for (int l = 0; l < L4; l++) {
        int csa = c4->compress_ratios[l] == 4, h = inf_config_is_hash_layer(c4, l);
        t[csa][h] += lm[l];
        n[csa][h] += 1;
        sum4 += lm[l];
    }
    if (!n[0][0] || !n[0][1] || !n[1][1])
        return;
    double hca_h = t[0][1] / n[0][1], csa_h = t[1][1] / n[1][1], hca = t[0][0] / n[0][0];
    /* Pro's 29 learned-routing CSA layers: the hash-routed CSA layer + the learned - hash routing
     * difference of the HCA layers (estimated; pro4 has no learned-routing CSA layer). */
    double csa = n[1][0] ? t[1][0] / n[1][0] : csa_h + (hca - hca_h);
    double D = f.hidden_size, I = f.moe_intermediate_size, V = f.vocab_size;
    /* the gate's bf16 rows that pro4 lacks (384 vs --pro-experts), read at the measured bandwidth */
    double gate_ms = (f.n_routed_experts - c4->n_routed_experts) * D * 2 / (bw * 1e9) * 1e3;
    double gpu = lm[L4];
    int cnt[2][2] = {{0}};
    for (int l = 0; l < L; l++) {
        int c = f.compress_ratios[l] == 4, h = inf_config_is_hash_layer(&f, l);
        cnt[c][h]++;
        gpu += (c ? (h ? csa_h : csa) : (h ? hca_h : hca)) + gate_ms;
    }
    double scale = graph / sum4; /* graph step / GPU sum of pro4: launch and profiling gaps */
    double step1 = gpu * scale;
    /* routed experts' share of the "moe experts" stage (the shared expert runs there too), by bytes:
     * 6 x 3 FP4 matrices + e8m0/32 against 3 FP8 matrices + 128x128 scales */
    double eb = 3 * D * I * (0.5 + 1.0 / 32), routed_b = k * eb, shared_b = f.n_shared_experts * 3 * D * I * (1 + 1.0 / 16384);
    double routed_ms = exp_ms / L4 * routed_b / (routed_b + shared_b) * scale;
    double mbar = ep_max_load(f.n_routed_experts, k, G, 200000);
    double fwb, fsb, fl1 = floor_ms(&f, ctx, bw, &fwb, &fsb);
    double ep_bytes = fwb + fsb - L * routed_b * (1 - mbar / k), flep = ep_bytes / (bw * 1e9) * 1e3;
    /* memory: weights by part from the inventory's totals, state in the engine's fp32 layout and packed */
    double wtot = (double)(mp.weight_bytes - mp.weight_bytes_mtp), emb = V * D * 2, head = V * D * 2;
    double rout_l = f.n_routed_experts * eb, other_l = (wtot - L * rout_l - emb - head) / L;
    double st[2] = {0}, pk[2] = {0}; /* [csa] per layer */
    st[0] = layer_state_bytes(&f, 128, ctx), st[1] = layer_state_bytes(&f, 4, ctx);
    pk[0] = (double)mp.hca_bytes, pk[1] = (double)mp.csa_bytes;
    double st_all = 0, pk_all = 0, pp_w = 0, pp_s = 0, pp_p = 0;
    for (int l = 0; l < L; l++) {
        int c = f.compress_ratios[l] == 4;
        st_all += st[c];
        pk_all += pk[c];
    }
    for (int g = 0, l0 = 0; g < G; g++) { /* contiguous split, 8 8 8 8 8 7 7 7 layers */
        int nl = L / G + (g < L % G);
        double w = nl * (other_l + rout_l) + (g == 0 ? emb : 0) + (g == G - 1 ? head : 0), s = 0, p = 0;
        for (int l = l0; l < l0 + nl; l++) {
            int c = f.compress_ratios[l] == 4;
            s += st[c];
            p += pk[c];
        }
        if (w + s > pp_w + pp_s) {
            pp_w = w;
            pp_s = s;
            pp_p = p;
        }
        l0 += nl;
    }
    double ep_w = L * other_l + emb + head + L * rout_l / G;
    APPEND(pextra, pextra_len,
           "\nExtrapolated to V4-Pro's 61 layers at context %lld (ESTIMATES, not measured as such; only the pro4 rows "
           "above are measurements). Per-layer GPU ms from pro4: HCA hash-routed %.3f (L0, L1), CSA hash-routed %.3f "
           "(L2), HCA learned %.3f (L3), CSA learned %.3f (%s), outside %.3f, + %.4f per layer for the gate rows of "
           "384 - %d experts at the copy bandwidth; Pro = 2 HCA-hash + 1 CSA-hash + %d CSA + %d HCA: %.3f GPU ms, "
           "x %.3f (pro4's graph step / its GPU sum) = %.2f ms. Routed experts per layer %.3f ms (the experts stage "
           "x its routed share by bytes, %.0f%%). Expert-parallel: 48 experts per GPU, attention, shared expert, "
           "embedding and head replicated; the busiest GPU runs %.3f of the 6 experts on average (uniform random "
           "routing, Monte Carlo; optimistic), so routed time x %.3f; + 2 all-to-alls per layer of %d bf16 values "
           "(dispatch + combine; with replicated attention one combine would do). Pipeline: 8 8 8 8 8 7 7 7 layers, "
           "one hop of the token's %d fp32 streams (%.0f KB) per boundary (7) + the sampled token back to GPU 0 = 8 "
           "hops. Latency per hop / all-to-all: %.0f or %.0f us + bytes at %.0f GB/s (shared/notes/engine-anchors.md "
           "section 4: NVLink 900 GB/s per GPU, ~3-8 us per small transfer). Memory at this context: weights as "
           "stored (no MTP), state in this engine's fp32 layout (packed layout of spec 5.3 in brackets); scratch "
           "and the rope tables not counted; an H200 holds 143771 MiB = 150.8 GB (nvidia-smi, KINDS.md).\n\n",
           ctx, hca_h, csa_h, hca, csa, n[1][0] ? "measured" : "CSA-hash + HCA learned - HCA-hash, estimated", lm[L4],
           gate_ms, c4->n_routed_experts, cnt[1][0], cnt[0][0], gpu, scale, step1, routed_ms,
           100 * routed_b / (routed_b + shared_b), mbar, mbar / k, (int)D, f.hc_mult * (int)D, f.hc_mult * D * 4 / 1e3,
           nvl_lat_us[0], nvl_lat_us[1], NVL_GBPS);
    APPEND(pextra, pextra_len,
           "| layout | ms/token | tok/s | floor ms | of floor | comm ms | comm share | weights GB/GPU | state GB/GPU "
           "[packed] | total GB/GPU (of 150.8) |\n|---|---|---|---|---|---|---|---|---|---|\n");
    APPEND(pextra, pextra_len, "| (a) 1 GPU, hypothetical (does not fit) | %.2f | %.1f | %.3f | %.1f%% | 0 | 0%% | %.1f | "
           "%.2f [%.2f] | %.1f |\n",
           step1, 1e3 / step1, fl1, 100 * fl1 / step1, wtot / 1e9, st_all / 1e9, pk_all / 1e9, (wtot + st_all) / 1e9);
    for (int i = 0; i < 2; i++) {
        double hop = (nvl_lat_us[i] + f.hc_mult * D * 4 / (NVL_GBPS * 1e3)) * 1e-3, comm = 8 * hop, ms = step1 + comm;
        APPEND(pextra, pextra_len,
               "| (b) 8 GPUs pipeline, %.0f us hop | %.2f | %.1f | %.3f | %.1f%% | %.3f | %.1f%% | %.1f | %.2f [%.2f] | "
               "%.1f |\n",
               nvl_lat_us[i], ms, 1e3 / ms, fl1, 100 * fl1 / ms, comm, 100 * comm / ms, pp_w / 1e9, pp_s / 1e9,
               pp_p / 1e9, (pp_w + pp_s) / 1e9);
    }
    for (int i = 0; i < 2; i++) {
        double a2a = (nvl_lat_us[i] + D * 2 / (NVL_GBPS * 1e3)) * 1e-3, comm = 2.0 * L * a2a;
        double ms = step1 - L * routed_ms * (1 - mbar / k) + comm;
        APPEND(pextra, pextra_len,
               "| (c) 8 GPUs expert-parallel, %.0f us all-to-all | %.2f | %.1f | %.3f | %.1f%% | %.3f | %.1f%% | %.1f | "
               "%.2f [%.2f] | %.1f |\n",
               nvl_lat_us[i], ms, 1e3 / ms, flep, 100 * flep / ms, comm, 100 * comm / ms, ep_w / 1e9, st_all / 1e9,
               pk_all / 1e9, (ep_w + st_all) / 1e9);
    }
}

/* Median host time of `steps` decode steps (ms). */
static int time_steps(struct cuda_engine *g, const int *tok, int steps, float *logits, double *dt, double *med,
                      struct ctx_err *e)
{
    for (int i = 0; i < steps; i++) {
        double a = bench_now();
        int rc = cuda_engine_decode(g, tok[i], logits, e);
        if (rc)
            return rc;
        dt[i] = bench_now() - a;
    }
    qsort(dt, (size_t)steps, sizeof(double), bench_cmp_double);
    *med = dt[steps / 2] * 1e3;
    return 0;
}

/* One round of an A/B: a fresh random state at ctx, one untimed step (it (re)captures the graph after
 * a switch changed), then per timed steps into dst[0..per) (ms each, host time). */
static int ab_round(struct cuda_engine *g, long long ctx, const int *dtok, int per, float *logits, double *tmp,
                    double *dst, struct ctx_err *e)
{
    double m;
    int rc = cuda_engine_state_fill_random(g, ctx, 1, e);
    if (!rc)
        rc = cuda_engine_decode(g, dtok[0], logits, e);
    if (!rc)
        rc = time_steps(g, dtok + 1, per, logits, tmp, &m, e);
    for (int i = 0; !rc && i < per; i++)
        dst[i] = tmp[i];
    return rc;
}

/* --pdl both: decode steps from a random state at ctx with PDL off and on, direct and graph (see the
 * top); appends a row to pdltab. Uses positions ctx .. ctx + steps/2 + 1 (the state is refilled before
 * each variant's round) and restores the switch and the graph setting. */
static int pdl_compare(const char *name, struct cuda_engine *g, long long ctx, int steps, const int *dtok,
                       float *logits, struct ctx_err *e)
{
    const int was = cuda_pdl_enabled(), per = steps / 2 > 0 ? steps / 2 : 1;
    double *dt[2][2], med[2][2], *tmp = malloc(sizeof(double) * (size_t)per);
    int rc = tmp ? 0 : ctx_err_set(e, CTX_ENOMEM, "out of memory");
    for (int v = 0; v < 2; v++)
        for (int gr = 0; gr < 2; gr++)
            if (!(dt[v][gr] = malloc(sizeof(double) * 2 * (size_t)per)))
                rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
    for (int round = 0; !rc && round < 2; round++)
        for (int gr = 0; !rc && gr < 2; gr++)
            for (int v = 0; !rc && v < 2; v++) {
                cuda_pdl_set(v);
                cuda_engine_use_graph(g, gr);
                rc = ab_round(g, ctx, dtok, per, logits, tmp, dt[v][gr] + round * per, e);
            }
    cuda_pdl_set(was);
    cuda_engine_use_graph(g, 1);
    if (!rc) {
        for (int v = 0; v < 2; v++)
            for (int gr = 0; gr < 2; gr++) {
                qsort(dt[v][gr], 2 * (size_t)per, sizeof(double), bench_cmp_double);
                med[v][gr] = dt[v][gr][per] * 1e3;
            }
        APPEND(pdltab, pdltab_len, "| %-7s | %6lld | %8.3f | %8.3f | %5.3f | %8.3f | %8.3f | %5.3f | %d |\n", name, ctx,
               med[0][0], med[1][0], med[1][0] / med[0][0], med[0][1], med[1][1], med[1][1] / med[0][1],
               cuda_engine_graph_state(g));
    }
    for (int v = 0; v < 2; v++)
        for (int gr = 0; gr < 2; gr++)
            free(dt[v][gr]);
    free(tmp);
    return rc;
}

/* --attn-ab: graph decode steps from a random state at ctx with each bit set of abits, in 4 alternating
 * rounds of steps/2 timed steps (each after a fresh state and one untimed step that recaptures);
 * appends a row to abtab and restores the default bits. */
static int attn_compare(const char *name, struct cuda_engine *g, long long ctx, int steps, const int *dtok,
                        float *logits, struct ctx_err *e)
{
    enum { ROUNDS = 4 };
    const int per = steps / 2 > 0 ? steps / 2 : 1;
    double *dt[8] = {0}, med[8], *tmp = malloc(sizeof(double) * (size_t)per);
    int rc = tmp ? 0 : ctx_err_set(e, CTX_ENOMEM, "out of memory");
    for (int v = 0; v < nab && !rc; v++)
        if (!(dt[v] = malloc(sizeof(double) * ROUNDS * (size_t)per)))
            rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
    cuda_engine_use_graph(g, 1);
    for (int round = 0; !rc && round < ROUNDS; round++)
        for (int v = 0; !rc && v < nab; v++) {
            if (ab_moe)
                cuda_engine_moe_mode(g, abits[v]);
            else
                cuda_engine_attn_fuse(g, abits[v], 0);
            rc = ab_round(g, ctx, dtok, per, logits, tmp, dt[v] + round * per, e);
        }
    cuda_engine_attn_fuse(g, -1, 0);
    cuda_engine_moe_mode(g, -1);
    if (!rc) {
        APPEND(abtab, abtab_len, "| %-7s | %6lld |", name, ctx);
        for (int v = 0; v < nab; v++) {
            qsort(dt[v], ROUNDS * (size_t)per, sizeof(double), bench_cmp_double);
            med[v] = dt[v][ROUNDS * per / 2] * 1e3;
            APPEND(abtab, abtab_len, " %8.4f |", med[v]);
        }
        for (int v = 1; v < nab; v++)
            APPEND(abtab, abtab_len, " %+8.4f |", med[v] - med[0]);
        APPEND(abtab, abtab_len, "\n");
    }
    for (int v = 0; v < nab; v++)
        free(dt[v]);
    free(tmp);
    return rc;
}

static int run_ctx(const char *name, const struct inf_config *c, struct cuda_engine *g, long long ctx, int steps,
                   long long prefill_max, const int *tok, double bw)
{
    struct ctx_err e = {0};
    float *logits = malloc(sizeof(float) * (size_t)c->vocab_size);
    double *dt = malloc(sizeof(double) * (size_t)steps);
    char pre[32];
    int rc;
    double p0 = bench_now();
    if (ctx <= prefill_max) {
        cuda_engine_reset(g);
        rc = cuda_engine_prefill(g, tok, (int)ctx, logits, &e);
        snprintf(pre, sizeof pre, "%.0f", (double)ctx / (bench_now() - p0));
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
    if (nab && (rc = attn_compare(name, g, ctx, steps, dtok, logits, &e))) {
        fprintf(stderr, "bench-gpu-engine: %s at %lld, --attn-ab: %s\n", name, ctx, e.msg);
        free(logits);
        free(dt);
        return 1;
    }
    if (pdl_both && (rc = pdl_compare(name, g, ctx, steps, dtok, logits, &e))) {
        fprintf(stderr, "bench-gpu-engine: %s at %lld, PDL off/on: %s\n", name, ctx, e.msg);
        free(logits);
        free(dt);
        return 1;
    }
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
        double *lmt = calloc((size_t)L + 1, sizeof(double)); /* per token */
        for (int l = 0; lmt && l <= L; l++)
            lmt[l] = lm[l] / np;
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
        if (lmt && !strcmp(name, "pro4"))
            pro_extrapolate(c, ctx, graph, lmt, ms[CUDA_PROF_MOE_EXPERTS] / np, bw);
        free(lmt);
        free(lm);
    }
    free(logits);
    free(dt);
    return rc ? 1 : 0;
}

/* ---- the layer-split pipeline (--shards) ---- */

static int time_steps_multi(struct cuda_multi *m, const int *tok, int steps, float *logits, double *dt, double *med,
                            struct ctx_err *e)
{
    for (int i = 0; i < steps; i++) {
        double a = bench_now();
        int rc = cuda_multi_decode(m, tok[i], logits, e);
        if (rc)
            return rc;
        dt[i] = bench_now() - a;
    }
    *med = bench_median(dt, steps) * 1e3;
    return 0;
}

/* The rows of one pipeline of n shards: per context, the prefill (pipelined; or a random state past
 * prefill_max) and the decode medians; *graph_ms[i] receives the graph step per context. */
static int run_shards(const char *name, const struct inf_config *c, const struct inf_weights *w,
                      const struct cuda_engine_opts *o, int n, const long long *ctxs, int nctx, int steps,
                      long long prefill_max, const int *tok, double *graph_ms)
{
    struct ctx_err e = {0};
    struct cuda_multi *m = NULL;
    int sd[64], split[64];
    for (int i = 0; i < n; i++)
        sd[i] = devs[i % ndevs];
    if (cuda_multi_plan(c, o->max_ctx, n, split, &e) || cuda_multi_new(w, o, sd, n, split, &m, &e)) {
        fprintf(stderr, "bench-gpu-engine: %s over %d shards: %s\n", name, n, e.msg);
        return 1;
    }
    char lay[160], mem[256];
    int ll = 0, ml = 0, seen[64] = {0};
    for (int i = 0; i < n; i++) {
        ll += snprintf(lay + ll, sizeof lay - (size_t)ll, "%s%d@%d", i ? "+" : "", split[i], sd[i]);
        if (seen[sd[i]]++)
            continue;
        size_t wb = 0, sb = 0;
        cuda_multi_memory(m, sd[i], &wb, &sb);
        ml += snprintf(mem + ml, sizeof mem - (size_t)ml, "%sGPU%d %.2f+%.2f", ml ? ", " : "", sd[i], wb / 1e9, sb / 1e9);
    }
    float *logits = malloc(sizeof(float) * (size_t)c->vocab_size);
    double *dt = malloc(sizeof(double) * (size_t)steps);
    int rc = 0;
    for (int k = 0; k < nctx && !rc; k++) {
        long long ctx = ctxs[k];
        char pre[32];
        double p0 = bench_now();
        if (ctx <= prefill_max) {
            cuda_multi_reset(m);
            rc = cuda_multi_prefill(m, tok, (int)ctx, 0, logits, &e);
            snprintf(pre, sizeof pre, "%.0f", (double)ctx / (bench_now() - p0));
        } else {
            rc = cuda_multi_state_fill_random(m, ctx, 1, &e);
            snprintf(pre, sizeof pre, "(filled)");
        }
        double direct = 0, graph = 0;
        const int *dtok = tok + ctx;
        cuda_multi_use_graph(m, 0);
        if (!rc)
            rc = time_steps_multi(m, dtok, steps, logits, dt, &direct, &e);
        cuda_multi_use_graph(m, 1);
        if (!rc) /* the first graph step captures */
            rc = cuda_multi_decode(m, dtok[steps], logits, &e);
        if (!rc)
            rc = time_steps_multi(m, dtok + steps + 1, steps, logits, dt, &graph, &e);
        if (rc) {
            fprintf(stderr, "bench-gpu-engine: %s over %d shards at %lld: %s\n", name, n, ctx, e.msg);
            break;
        }
        graph_ms[k] = graph;
        char hop[32] = "-";
        if (n > 1 && graph_ms[nctx + k] > 0)
            snprintf(hop, sizeof hop, "%+.3f", graph - graph_ms[nctx + k]);
        APPEND(shtab, shtab_len, "| %-7s | %6lld | %d | %s | %8.3f | %8.3f | %7.1f | %s | %8s | %d | %s |\n", name, ctx,
               n, lay, direct, graph, 1e3 / graph, hop, pre, cuda_multi_graph_state(m), mem);
    }
    free(logits);
    free(dt);
    cuda_multi_free(m);
    return rc ? 1 : 0;
}

/* Bytes of a tensor as stored, from the inventory. */
static double spec_bytes(const struct inf_tensor_spec *t)
{
    double b = (double)inf_dtype_size(t->dtype);
    for (int d = 0; d < t->ndim; d++)
        b *= (double)t->shape[d];
    return b;
}

static int ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

/* V4-Flash over `n` GPUs at context ctx, computed from the config (no device involved). */
static void flash_split_memory(int n, long long ctx)
{
    struct ctx_err e = {0};
    struct inf_config f;
    struct inf_tensor_spec *inv = NULL;
    int ni = 0, split[8];
    if (n > 8 || inf_config_builtin("flash", &f, &e) || inf_weights_inventory(&f, &inv, &ni, &e) ||
        cuda_multi_plan(&f, ctx, n, split, &e)) {
        fprintf(stderr, "bench-gpu-engine: flash split: %s\n", e.msg);
        free(inv);
        return;
    }
    /* what bind_layer concatenates into extra device copies (kernels/engine.cu) */
    static const char *const cat[] = {".attn.wq_a.weight", ".attn.wq_a.scale", ".attn.wkv.weight", ".attn.wkv.scale",
                                      ".ffn.shared_experts.w1.weight", ".ffn.shared_experts.w1.scale",
                                      ".ffn.shared_experts.w3.weight", ".ffn.shared_experts.w3.scale",
                                      ".attn.compressor.wkv.weight", ".attn.compressor.wgate.weight",
                                      ".attn.indexer.compressor.wkv.weight", ".attn.indexer.compressor.wgate.weight",
                                      ".attn.indexer.weights_proj.weight"};
    int L = f.num_hidden_layers;
    printf("\nV4-Flash (%d layers, MTP not loaded) over %d GPUs at context %lld, COMPUTED from the config, not "
           "measured: cuda_multi_plan's split (contiguous layers, the largest shard's weights + state smallest); "
           "weights as stored (FP4 experts, FP8 dense, BF16), the embedding on the first shard and the head on the "
           "last; + the copies the engine concatenates at upload (wq_a|wkv, shared w1|w3, the compressors' bf16 "
           "rows); state as cuda_engine_new allocates it (fp32 window rings, carries, compressed entries, indexer "
           "keys); scratch (~0.4 GB at max_chunk 256 and 500K: mostly the indexer's scores, 0.13 GB, and the rope tables, 0.26 GB) "
           "not counted. An H200 holds 143771 MiB = 150.8 GB.\n\n"
           "| GPU | layers | weights GB | concatenated copies GB | state GB | total GB | of 150.8 GB |\n"
           "|---|---|---|---|---|---|---|\n",
           L, n, ctx);
    for (int g = 0, l0 = 0; g < n; l0 += split[g], g++) {
        int l1 = l0 + split[g];
        double wb = 0, cb = 0, sb = 0;
        for (int i = 0; i < ni; i++) {
            const struct inf_tensor_spec *t = &inv[i];
            int l = t->layer;
            if (l >= L)
                continue;
            if (l < 0)
                l = !strcmp(t->name, "embed.weight") ? 0 : L - 1;
            if (l < l0 || l >= l1)
                continue;
            wb += spec_bytes(t);
            for (size_t j = 0; t->layer >= 0 && j < sizeof cat / sizeof cat[0]; j++)
                if (ends_with(t->name, cat[j]))
                    cb += spec_bytes(t);
        }
        for (int l = l0; l < l1; l++)
            sb += (double)cuda_engine_layer_state_bytes(&f, l, ctx);
        double tot = wb + cb + sb;
        printf("| %d | %d..%d (%d) | %.1f | %.1f | %.2f | %.1f | %.0f%% |\n", g, l0, l1 - 1, split[g], wb / 1e9,
               cb / 1e9, sb / 1e9, tot / 1e9, 100.0 * tot / 150.8e9);
    }
    free(inv);
}

static int run_model(const char *name, const long long *ctxs, int nctx, int steps, long long prefill_max, double bw)
{
    struct ctx_err e = {0};
    struct inf_config c;
    const char *base = !strcmp(name, "flash4") ? "flash" : !strcmp(name, "pro4") ? "pro" : name;
    if (inf_config_builtin(base, &c, &e)) {
        fprintf(stderr, "bench-gpu-engine: %s\n", e.msg);
        return 1;
    }
    if (!strcmp(name, "flash4") || !strcmp(name, "pro4")) { /* Flash's or Pro's first four layers */
        c.num_hidden_layers = 4;
        c.num_nextn_predict_layers = 0;
        if (c.num_hash_layers > 3)
            c.num_hash_layers = 3;
        if (!strcmp(name, "pro4")) /* --pro-experts (default 384, as Pro) */
            c.n_routed_experts = pro_experts;
        if (inf_config_validate(&c, name, &e)) {
            fprintf(stderr, "bench-gpu-engine: %s\n", e.msg);
            return 1;
        }
    }
    long long maxctx = 0;
    for (int i = 0; i < nctx; i++)
        maxctx = ctxs[i] > maxctx ? ctxs[i] : maxctx;
    struct inf_weights *w = NULL;
    struct cuda_engine *g = NULL;
    double t0 = bench_now();
    if (inf_weights_synthetic(&c, 1, &w, &e)) {
        fprintf(stderr, "bench-gpu-engine: %s: %s\n", name, e.msg);
        return 1;
    }
    double t1 = bench_now();
    struct cuda_engine_opts o = {.max_chunk = 256, .max_ctx = maxctx + 2 * steps + 16};
    if (cuda_engine_new(w, &o, &g, &e)) {
        fprintf(stderr, "bench-gpu-engine: %s: %s\n", name, e.msg);
        inf_weights_free(w);
        return 1;
    }
    double t2 = bench_now();
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
    size_t wb = 0;
    for (int i = 0; i < inf_weights_count(w); i++)
        wb += inf_weights_tensor(w, i)->nbytes;
    fprintf(stderr, "# %s: synthetic weights %.1f GB in %.1f s, upload + rope tables for %lld positions %.1f s\n", name,
            (double)wb / 1e9, t1 - t0, o.max_ctx, t2 - t1);
    cuda_engine_free(g);
    if (shards > 1) { /* the pipeline over 1 shard, then over `shards` (one engine's memory freed first) */
        double *gm = calloc((size_t)nctx * 2, sizeof(double));
        if (!gm || c.num_hidden_layers < shards) {
            fprintf(stderr, "bench-gpu-engine: %s: %d layers for %d shards\n", name, c.num_hidden_layers, shards);
            rc = 1;
        } else if (!(rc |= run_shards(name, &c, w, &o, 1, ctxs, nctx, steps, prefill_max, tok, gm + nctx))) {
            rc |= run_shards(name, &c, w, &o, shards, ctxs, nctx, steps, prefill_max, tok, gm);
        }
        free(gm);
    }
    free(tok);
    inf_weights_free(w);
    return rc;
}

/* ---- --suffix: prefill at long positions (issue 10's rows "500K-token prefill" and "suffix
 * re-prefill of 8K tokens at 500K"). All of it in these functions; main only dispatches.
 *
 * 1. The indexer on its own (cuda_engine_idx_scores, cuda_engine_topk) at Flash's shape (64 heads x
 *    128, top-512) over 125K entries (a 500K context) for S = 1 .. chunk queries: the one-thread-per-
 *    entry kernel against the tensor-core one (where the engine switches), and the top-k; the floor
 *    is the scores' FLOPs at the bf16 tensor-core peak (half the FP8 peak measured below).
 * 2. Prefill throughput at position P (4K, 128K, 500K): flash4 at a random state of P
 *    (cuda_engine_state_fill_random), one chunk of --chunk tokens, median of 3; then one profiled
 *    chunk (GPU time per stage and layer) extrapolated to Flash's 43 layers as the decode rows do.
 * 3. The suffix: --suffix tokens prefilled (in chunks) after a random state at each --ctx, median of
 *    3, with the indexer's share, and the 43-layer estimate.
 * 4. A full 500K prefill estimated from 2.: per-token 43-layer time interpolated linearly between the
 *    measured positions and integrated over 0..500K; 2 GPUs = the 22 + 21 layer split, whose two
 *    halves work on consecutive chunks at once (~2x the throughput; not measured: one GPU is lent).
 * Floors: FLOPs / the dense FP8 tensor-core rate measured in the same run (cuBLASLt 8192^3) for the
 * FP8 weight products, and / half of it (the bf16 rate) for the attention and indexer products. */
static double sfx_peak; /* measured dense FP8 TFLOP/s */
static char sfx_stages[8192]; /* the profiled runs' GPU time by stage, printed after the tables */
static int sfx_stages_len;

/* FLOPs of the token at position p in layer l (prefill): [0] FP8/FP4 weight products and the
 * bf16 ones beside them, [1] attention (q.k and p.v over its entries), [2] indexer scores. */
static void sfx_token_flops(const struct inf_config *c, int l, long long p, double f[3])
{
    double D = c->hidden_size, Lq = c->q_lora_rank, H = c->num_attention_heads, d = c->head_dim;
    double G = c->o_groups, R = c->o_lora_rank, Hi = c->index_n_heads, di = c->index_head_dim;
    double I = c->moe_intermediate_size, hc = c->hc_mult;
    int r = c->compress_ratios[l];
    double mac = D * Lq + Lq * H * d + D * d + H * d * R + G * R * D; /* wq_a, wq_b, wkv, wo_a, wo_b */
    if (r)
        mac += 2 * D * (r == 4 ? 2 : 1) * d; /* the compressor's wkv, wgate */
    if (r == 4)
        mac += Lq * Hi * di + D * Hi + 2 * D * 2 * di; /* indexer wq_b, weights_proj, its compressor */
    mac += D * c->n_routed_experts + 3 * D * I * (c->n_shared_experts + c->num_experts_per_tok);
    mac += 2 * hc * D * (2 * hc + hc * hc); /* the two mHC sites' mixes */
    long long win = p + 1 < c->sliding_window ? p + 1 : c->sliding_window;
    long long ne = r == 4 ? ((p + 1) / 4 < c->index_topk ? (p + 1) / 4 : c->index_topk) : r ? (p + 1) / r : 0;
    f[0] = 2 * mac;
    f[1] = 4 * H * d * (double)(win + ne);
    f[2] = r == 4 ? 2 * Hi * di * (double)((p + 1) / 4) : 0;
}
/* The compute floor (ms) of S tokens from position P through every layer of c. */
static double sfx_floor_ms(const struct inf_config *c, long long P, long long S)
{
    double t = 0, f[3];
    long long step = S > 64 ? S / 64 : 1; /* linear in p: a midpoint sum is exact enough */
    for (int l = 0; l < c->num_hidden_layers; l++)
        for (long long s = 0; s < S; s += step) {
            long long n = S - s < step ? S - s : step;
            sfx_token_flops(c, l, P + s + n / 2, f);
            t += (double)n * (f[0] / (sfx_peak * 1e12) + (f[1] + f[2]) / (sfx_peak * 0.5e12));
        }
    return t * 1e3;
}

/* The indexer alone: table 1. */
static int sfx_indexer_rows(int chunk)
{
    const int Hi = 64, di = 128, K = 512;
    const long long n = 125000, pos_last = 4 * n - 1;
    int Ss[8] = {1, 4, 16, 32, 64, 256, chunk, 0}, ns = chunk > 256 ? 7 : 6;
    struct ctx_err e = {0};
    int Smax = chunk > 256 ? chunk : 256;
    size_t nq = (size_t)Smax * Hi * di, ld = (size_t)n;
    float *h = malloc(sizeof(float) * (nq > (size_t)n * di ? nq : (size_t)n * di));
    float *d_q = NULL, *d_w = NULL, *d_k = NULL, *d_sc = NULL;
    long long *d_pos = NULL;
    int *d_sel = NULL;
    void *d_scr = NULL;
    int8_t *d_q8 = NULL, *d_k8 = NULL;
    uint32_t *d_qx = NULL, *d_kx = NULL;
    int rc = !h;
    static const float e2m1[8] = {0.f, .5f, 1.f, 1.5f, 2.f, 3.f, 4.f, 6.f};
    unsigned long long s = 99;
    for (size_t i = 0; h && i < (nq > (size_t)n * di ? nq : (size_t)n * di); i++) { /* FP4-QDQ'd-like values */
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        h[i] = e2m1[(s >> 40) & 7] * ((s >> 50) & 1 ? -0.25f : 0.25f);
    }
    rc = rc || cuda_malloc((void **)&d_q, sizeof(float) * nq, &e) ||
         cuda_malloc((void **)&d_w, sizeof(float) * (size_t)Smax * Hi, &e) ||
         cuda_malloc((void **)&d_k, sizeof(float) * (size_t)n * di, &e) ||
         cuda_malloc((void **)&d_sc, sizeof(float) * (size_t)Smax * ld, &e) ||
         cuda_malloc((void **)&d_pos, sizeof(long long), &e) ||
         cuda_malloc((void **)&d_sel, sizeof(int) * (size_t)Smax * K, &e) ||
         cuda_malloc(&d_scr, cuda_engine_topk_scratch(Smax, n, K), &e) || cuda_h2d(d_q, h, sizeof(float) * nq, &e) ||
         cuda_h2d(d_w, h, sizeof(float) * (size_t)Smax * Hi, &e) ||
         cuda_h2d(d_k, h, sizeof(float) * (size_t)n * di, &e) || cuda_malloc((void **)&d_q8, nq, &e) ||
         cuda_malloc((void **)&d_qx, sizeof(uint32_t) * (size_t)Smax * Hi, &e) ||
         cuda_malloc((void **)&d_k8, (size_t)n * di, &e) || cuda_malloc((void **)&d_kx, sizeof(uint32_t) * (size_t)n, &e) ||
         cuda_engine_idx_pack(d_q, (long long)Smax * Hi, di, 0, d_q8, d_qx, NULL, &e) ||
         cuda_engine_idx_pack(d_k, n, di, 0, d_k8, d_kx, NULL, &e) || cuda_sync(&e);
    if (rc) {
        fprintf(stderr, "bench-gpu-engine: indexer rows: %s\n", h ? e.msg : "out of memory");
        goto done;
    }
    printf("Indexer alone at Flash's shape (64 heads x 128 dims, top-512) over 125000 entries (a 500K context), S "
           "queries: scores one thread per entry (scalar) vs mma.sync bf16 (tensor cores; the engine uses them for "
           "S >= 4 until 2026-11-29's sixth session: k_idx_score_tc2) vs mma.sync s8 on the 8-bit form (integer: "
           "k_idx_score_i8, heads on the mma's rows, queries and keys packed beforehand, untimed) vs the same with the "
           "entries on the rows (i8e: k_idx_score_i8e, the engine's kernel for S >= 4 from the eighth to the fourteenth "
           "session) vs the same bits on warpgroup MMA (iwg: k_idx_score_iwg, the engine's since; for S < 4 all three "
           "are k_idx_score_i8d), then the top-k: k_topk_row (a block a query; the engine's from 32 queries up since the "
           "twentieth session) against the segmented k_topk_seg + k_topk_merge (below 9 queries both columns are the "
           "decode kernel, k_topk_fast); median of 3 (1 for scalar S >= 256), event-timed. Floor: the "
           "scores' FLOPs (2 x S x n x 64 x 128) at the bf16 tensor-core rate (half the FP8 rate measured above; the "
           "int8 rate is the FP8 one: the last two columns are i8e's and iwg's share of it)\n\n");
    printf("| S | scalar ms | tensor-core ms | integer ms | i8e ms | iwg ms | iwg vs i8e | row top-k ms | top-k ms/query | "
           "segmented top-k ms | row vs segmented | floor ms | integer of floor | i8e of the int8 rate | iwg of the "
           "int8 rate |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (int i = 0; i < ns && !rc; i++) {
        int S = Ss[i];
        long long pos0 = pos_last - S + 1;
        double t[7][3];
        rc = cuda_h2d(d_pos, &pos0, sizeof pos0, &e);
        for (int m = 0; m < 7 && !rc; m++) {
            int reps = m == 0 && S >= 256 ? 1 : 3;
            struct bench_events *ev = bench_events_new(reps);
            double ms[3];
            bench_spin(2.0);
            cuda_engine_idx_i8e_mode(m == 3 || m == 4 ? 2 : 0);
            cuda_engine_idx_wg_mode(m == 4 ? 2 : 0);
            cuda_engine_topk_row_mode(m == 6 ? 0 : 2);
            for (int r = 0; r < reps && !rc; r++) {
                bench_events_record(ev, r);
                rc = m < 2   ? cuda_engine_idx_scores(d_q, d_w, d_k, S, Hi, di, d_pos, n, d_sc, ld, m + 1, bench_stream(), &e)
                     : m < 5 ? cuda_engine_idx_scores_i8(d_q8, d_qx, d_w, d_k8, d_kx, S, Hi, di, d_pos, n, d_sc, ld,
                                                         bench_stream(), &e)
                             : cuda_engine_topk(d_sc, ld, d_pos, S, n, K, d_sel, d_scr, bench_stream(), &e);
            }
            bench_events_record(ev, reps);
            t[m][0] = bench_events_median(ev, ms);
            bench_events_free(ev);
            cuda_engine_idx_i8e_mode(-1);
            cuda_engine_idx_wg_mode(-1);
            cuda_engine_topk_row_mode(-1);
        }
        if (rc)
            break;
        double fl = 2.0 * S * (double)n * Hi * di / (sfx_peak * 0.5e12) * 1e3;
        printf("| %d | %.3f | %.3f | %.3f | %.3f | %.3f | %.2fx | %.3f | %.4f | %.3f | %.2fx | %.3f | %.1f%% | %.1f%% | "
               "%.1f%% |\n",
               S, t[0][0], t[1][0], t[2][0], t[3][0], t[4][0], t[3][0] / t[4][0], t[5][0], t[5][0] / S, t[6][0],
               t[6][0] / t[5][0], fl,
               100.0 * fl / t[2][0], 50.0 * fl / t[3][0], 50.0 * fl / t[4][0]);
        fflush(stdout);
    }
    /* k_topk_row's rank order, its 32-bit sort against the 64-bit bitonic (CTX_CUDA_TOPK_R16), on the
     * scores just made: a chunk of queries at positions from 0 to the end of a 500K context (the rows
     * then hold (P + s + 1) / 4 of them), three rounds alternating, medians */
    if (!rc) {
        const int S = Ss[ns - 1];
        const long long Ps[4] = {0, 32768, 131072, pos_last - S + 1};
        printf("\nPrefill top-k alone (k_topk_row, top-512, S = %d queries at positions P .. P + S - 1, the scores "
               "above): rank order by the 32-bit sort (topk_rank16, the engine's since 2026-12-01) against the "
               "64-bit bitonic of the block (CTX_CUDA_TOPK_R16=0); 3 rounds alternating, medians\n\n",
               S);
        printf("| P | entries a row | bitonic ms | 32-bit sort ms | ratio |\n|---|---|---|---|---|\n");
        for (int i = 0; i < 4 && !rc; i++) {
            double ms[2][3];
            rc = cuda_h2d(d_pos, &Ps[i], sizeof Ps[i], &e);
            cuda_engine_topk_row_mode(2);
            for (int r = 0; r < 3 && !rc; r++)
                for (int m = 0; m < 2 && !rc; m++) {
                    struct bench_events *ev = bench_events_new(1);
                    double one[1];
                    cuda_engine_topk_r16_mode(m);
                    bench_events_record(ev, 0);
                    rc = cuda_engine_topk(d_sc, ld, d_pos, S, n, K, d_sel, d_scr, bench_stream(), &e);
                    bench_events_record(ev, 1);
                    ms[m][r] = bench_events_median(ev, one);
                    bench_events_free(ev);
                }
            cuda_engine_topk_row_mode(-1);
            cuda_engine_topk_r16_mode(-1);
            if (rc)
                break;
            double md[2];
            for (int m = 0; m < 2; m++) {
                double a = ms[m][0], b = ms[m][1], c = ms[m][2];
                md[m] = a > b ? (b > c ? b : a > c ? c : a) : (a > c ? a : b > c ? c : b);
            }
            printf("| %lld | %lld .. %lld | %.3f | %.3f | %.2fx |\n", Ps[i], (Ps[i] + 1) / 4, (Ps[i] + S) / 4, md[0], md[1],
                   md[0] / md[1]);
            fflush(stdout);
        }
    }
    if (rc)
        fprintf(stderr, "bench-gpu-engine: indexer rows: %s\n", e.msg);
done:
    cuda_free(d_q8);
    cuda_free(d_qx);
    cuda_free(d_k8);
    cuda_free(d_kx);
    cuda_free(d_q);
    cuda_free(d_w);
    cuda_free(d_k);
    cuda_free(d_sc);
    cuda_free(d_pos);
    cuda_free(d_sel);
    cuda_free(d_scr);
    free(h);
    return rc ? 1 : 0;
}

/* The decode top-k (one query, K = 512) on its own: the segmented k_topk_seg + k_topk_merge against
 * the one-launch cluster k_topk_fast (kernels/engine.cu; CTX_CUDA_TOPK_FAST), each as 20 calls
 * captured in a CUDA graph (as a decode step runs them), replay median of 10 / 20; the two outputs
 * compared byte for byte. Scores: bf16 values (an indexer's) with ties. Printed with --profile and
 * --suffix. */
void cuda_engine_topk_mode(int fast); /* test and benchmark entry (kernels/engine.cu) */
struct topk_job {
    const float *sc;
    const long long *pos;
    int *sel;
    void *scr;
    long long n;
    size_t ld;
};
static void topk_launch(void *ud, int i)
{
    const struct topk_job *j = ud;
    struct ctx_err e = {0};
    (void)i;
    cuda_engine_topk(j->sc, j->ld, j->pos, 1, j->n, 512, j->sel, j->scr, bench_stream(), &e);
}
static int topk_decode_rows(void)
{
    static const long long ns[2] = {32768, 125000};
    const int K = 512;
    const long long nmax = 125000;
    struct ctx_err e = {0};
    float *h = malloc(sizeof(float) * (size_t)nmax);
    int *s0 = malloc(sizeof(int) * K), *s1 = malloc(sizeof(int) * K);
    float *d_sc = NULL;
    long long *d_pos = NULL;
    int *d_sel = NULL;
    void *d_scr = NULL;
    unsigned long long z = 7;
    for (long long i = 0; h && i < nmax; i++) { /* bf16 values of a bell-ish shape */
        z = z * 6364136223846793005ull + 1442695040888963407ull;
        float u = ((float)((z >> 40) & 0xfff) + (float)((z >> 52) & 0xfff)) * 0x1p-12f - 1.0f;
        uint32_t b;
        memcpy(&b, &u, 4);
        b = (b + 0x7fffu + ((b >> 16) & 1u)) & 0xffff0000u;
        memcpy(&h[i], &b, 4);
    }
    int rc = !h || !s0 || !s1 || cuda_malloc((void **)&d_sc, sizeof(float) * (size_t)nmax, &e) ||
             cuda_malloc((void **)&d_pos, sizeof(long long), &e) || cuda_malloc((void **)&d_sel, sizeof(int) * K, &e) ||
             cuda_malloc(&d_scr, cuda_engine_topk_scratch(1, nmax, K), &e) ||
             cuda_h2d(d_sc, h, sizeof(float) * (size_t)nmax, &e);
    if (!rc) {
        printf("\nDecode top-k alone (one query, top-512 of n indexer scores, bf16 values): segmented (k_topk_seg + "
               "k_topk_merge) vs one cluster launch (k_topk_fast, CTX_CUDA_TOPK_FAST), each call inside a CUDA graph "
               "of 20, median of 10 replays\n\n");
        printf("| n (context) | segmented ms | cluster ms | segmented / cluster | same bytes |\n|---|---|---|---|---|\n");
    }
    for (int i = 0; i < 2 && !rc; i++) {
        long long pos = 4 * ns[i] - 1;
        struct topk_job j = {d_sc, d_pos, d_sel, d_scr, ns[i], (size_t)nmax};
        double ms[2];
        rc = cuda_h2d(d_pos, &pos, sizeof pos, &e);
        for (int m = 0; m < 2 && !rc; m++) {
            cuda_engine_topk_mode(m);
            ms[m] = bench_graph_ms(topk_launch, &j, 20, 10);
            rc = ms[m] < 0 || cuda_engine_topk(d_sc, (size_t)nmax, d_pos, 1, ns[i], K, d_sel, d_scr, NULL, &e) ||
                 cuda_sync(&e) || cuda_d2h(m ? s1 : s0, d_sel, sizeof(int) * K, &e);
        }
        cuda_engine_topk_mode(-1);
        if (!rc)
            printf("| %lld (%lldK) | %.4f | %.4f | %.2fx | %s |\n", ns[i], ns[i] * 4 / 1000, ms[0], ms[1], ms[0] / ms[1],
                   memcmp(s0, s1, sizeof(int) * K) ? "NO" : "yes");
    }
    if (rc)
        fprintf(stderr, "bench-gpu-engine: top-k rows: %s\n", e.msg[0] ? e.msg : "failed (graph capture or memory)");
    cuda_free(d_sc);
    cuda_free(d_pos);
    cuda_free(d_sel);
    cuda_free(d_scr);
    free(h);
    free(s0);
    free(s1);
    return rc ? 1 : 0;
}

/* Prefill `S` tokens from a random state at P: wall ms (host, the call returns with the logits). */
static int sfx_prefill(struct cuda_engine *g, long long P, const int *tok, int S, float *logits, double *ms,
                       struct ctx_err *e)
{
    int rc = cuda_engine_state_fill_random(g, P, 7, e);
    if (rc)
        return rc;
    double a = bench_now();
    rc = cuda_engine_prefill(g, tok, S, logits, e);
    *ms = (bench_now() - a) * 1e3;
    return rc;
}
/* One profiled prefill of S tokens at P: GPU ms per stage and per layer (summed), and the 43-layer
 * GPU ms of the same work (outside + 2 swa + 21 csa + 20 hca from flash4's layers). */
static int sfx_profile(struct cuda_engine *g, const struct inf_config *c, const struct inf_config *full, long long P,
                       const int *tok, int S, float *logits, double st[CUDA_PROF_N], double *sum4, double *gpu43,
                       struct ctx_err *e)
{
    int L = c->num_hidden_layers;
    double lm[16] = {0}, ms;
    cuda_engine_profile_get(g, st, 1);
    cuda_engine_profile_layers(g, lm, 1);
    int rc = cuda_engine_profile(g, 1, e);
    if (!rc)
        rc = sfx_prefill(g, P, tok, S, logits, &ms, e);
    cuda_engine_profile(g, 0, e);
    cuda_engine_profile_get(g, st, 1);
    cuda_engine_profile_layers(g, lm, 1);
    if (rc)
        return rc;
    double t[3] = {0}, n[3] = {0};
    int cnt[3] = {0};
    *sum4 = lm[L];
    for (int l = 0; l < L; l++) {
        int k = c->compress_ratios[l] == 4 ? 1 : c->compress_ratios[l] ? 2 : 0;
        t[k] += lm[l];
        n[k] += 1;
        *sum4 += lm[l];
    }
    for (int l = 0; l < full->num_hidden_layers; l++)
        cnt[full->compress_ratios[l] == 4 ? 1 : full->compress_ratios[l] ? 2 : 0]++;
    *gpu43 = lm[L];
    for (int k = 0; k < 3; k++)
        *gpu43 += n[k] ? cnt[k] * t[k] / n[k] : 0;
    APPEND(sfx_stages, sfx_stages_len, "| %lld | %d |", P, S);
    for (int i = 0; i < CUDA_PROF_N; i++)
        APPEND(sfx_stages, sfx_stages_len, " %.1f (%.0f%%) |", st[i], 100.0 * st[i] / *sum4);
    APPEND(sfx_stages, sfx_stages_len, "\n");
    return 0;
}

static int sfx_run(const long long *ctxs, int nctx, int suffix, int chunk)
{
    struct ctx_err e = {0};
    struct inf_config c, full;
    if (inf_config_builtin("flash", &c, &e) || inf_config_builtin("flash", &full, &e)) {
        fprintf(stderr, "bench-gpu-engine: %s\n", e.msg);
        return 1;
    }
    full.num_nextn_predict_layers = 0;
    c.num_hidden_layers = 4;
    c.num_nextn_predict_layers = 0;
    if (c.num_hash_layers > 3)
        c.num_hash_layers = 3;
    static const long long tp[3] = {4096, 131072, 500000};
    long long maxctx = tp[2];
    for (int i = 0; i < nctx; i++)
        maxctx = ctxs[i] > maxctx ? ctxs[i] : maxctx;
    long long ntok = (suffix > chunk ? suffix : chunk) + 16;
    struct inf_weights *w = NULL;
    struct cuda_engine *g = NULL;
    if (inf_config_validate(&c, "flash4", &e) || inf_weights_synthetic(&c, 1, &w, &e)) {
        fprintf(stderr, "bench-gpu-engine: flash4: %s\n", e.msg);
        return 1;
    }
    struct cuda_engine_opts o = {.max_chunk = chunk, .max_ctx = maxctx + ntok};
    if (cuda_engine_new(w, &o, &g, &e)) {
        fprintf(stderr, "bench-gpu-engine: flash4: %s\n", e.msg);
        inf_weights_free(w);
        return 1;
    }
    int *tok = malloc(sizeof(int) * (size_t)ntok);
    float *logits = malloc(sizeof(float) * (size_t)c.vocab_size);
    unsigned long long s = 4242;
    for (long long i = 0; tok && i < ntok; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        tok[i] = 2 + (int)((s >> 33) % (unsigned long long)(c.vocab_size - 2));
    }
    int rc = !tok || !logits;
    const char *ncu_at = getenv("CTX_BENCH_PROFILE_AT");
    if (!rc && ncu_at) { /* one chunk at that position inside a profiler range, then nothing else */
        double ms;
        long long P = atoll(ncu_at);
        rc = sfx_prefill(g, P, tok, chunk, logits, &ms, &e); /* warm: the first call's lazy setup */
        bench_profiler(1);
        if (!rc)
            rc = sfx_prefill(g, P, tok, chunk, logits, &ms, &e);
        bench_profiler(0);
        printf("one chunk of %d tokens at %lld in the profiler's range: %.1f ms (%s)\n", chunk, P, ms,
               rc ? e.msg : "ok");
        free(tok);
        free(logits);
        cuda_engine_free(g);
        inf_weights_free(w);
        return rc ? 1 : 0;
    }
    double per_tok43[3] = {0}; /* 43-layer GPU ms per token at tp[] */
    if (!rc && cuda_engine_prefill_lt(g, -1, NULL, NULL)) { /* the prefill FP8 products' two paths, A/B */
        printf("\nPrefill FP8 products (wq_a|wkv, wq_b, the indexer's wq_b, wo_b, the shared expert): cuda_fp8_gemm "
               "(exact fp32 block partials) against cuBLASLt's block-scaled FP8 (the engine's default; "
               "CTX_CUDA_PREFILL_GEMM=exact for the other), flash4, one chunk of %d tokens after a random state of "
               "P, 3 alternating rounds, medians (wall ms)\n\n| position | exact ms | cuBLASLt ms | exact - cuBLASLt "
               "| exact / cuBLASLt |\n|---|---|---|---|---|\n", chunk);
        for (int i = 0; i < 3 && !rc; i++) {
            double te[3], tl[3];
            for (int r = 0; r < 3 && !rc; r++) {
                cuda_engine_prefill_lt(g, 0, NULL, NULL);
                rc = sfx_prefill(g, tp[i], tok, chunk, logits, &te[r], &e);
                cuda_engine_prefill_lt(g, 1, NULL, NULL);
                if (!rc)
                    rc = sfx_prefill(g, tp[i], tok, chunk, logits, &tl[r], &e);
            }
            if (rc)
                break;
            double me = bench_median(te, 3), ml = bench_median(tl, 3);
            printf("| %lld | %.1f | %.1f | %.1f | %.3fx |\n", tp[i], me, ml, me - ml, me / ml);
            fflush(stdout);
        }
        unsigned long long calls = 0, exact = 0;
        cuda_engine_prefill_lt(g, 1, &calls, &exact);
        printf("\n(%llu products ran on cuBLASLt, %llu calls it rejected ran the exact kernel)\n", calls, exact);
    }
    printf("\nPrefill throughput at position P, flash4 (V4-Flash's first 4 layers: swa, swa, csa, hca), one chunk of %d "
           "tokens after a random state of P, median of 3 (wall, host); 43 layers = that x (outside + 2 swa + 21 csa "
           "+ 20 hca GPU ms) / flash4's GPU ms from one profiled chunk (an estimate); floor = the chunk's FLOPs at the "
           "measured tensor-core rates (43 layers)\n\n",
           chunk);
    printf("| position | flash4 ms | flash4 tok/s | indexer share | 43-layer ms (est.) | 43-layer tok/s (est.) | floor ms "
           "| of floor |\n|---|---|---|---|---|---|---|---|\n");
    for (int i = 0; i < 3 && !rc; i++) {
        double t[3], st[CUDA_PROF_N], sum4, gpu43;
        for (int r = 0; r < 3 && !rc; r++)
            rc = sfx_prefill(g, tp[i], tok, chunk, logits, &t[r], &e);
        if (!rc)
            rc = sfx_profile(g, &c, &full, tp[i], tok, chunk, logits, st, &sum4, &gpu43, &e);
        if (rc)
            break;
        double med = bench_median(t, 3), est = med * gpu43 / sum4, fl = sfx_floor_ms(&full, tp[i], chunk);
        per_tok43[i] = est / chunk;
        printf("| %lld | %.1f | %.0f | %.1f%% | %.1f | %.0f | %.2f | %.1f%% |\n", tp[i], med, chunk / med * 1e3,
               100.0 * st[CUDA_PROF_INDEXER] / sum4, est, chunk / est * 1e3, fl, 100.0 * fl / est);
        fflush(stdout);
    }
    if (!rc) { /* the full 500K prefill: per-token time linear between the measured positions */
        double T = 0, F = sfx_floor_ms(&full, 0, tp[2]);
        long long prev = 0;
        double cprev = per_tok43[0];
        for (int i = 0; i < 3; i++) {
            T += 0.5 * (cprev + per_tok43[i]) * (double)(tp[i] - prev);
            prev = tp[i];
            cprev = per_tok43[i];
        }
        printf("\nFull 500000-token prefill, V4-Flash 43 layers (estimate from the rows above: per-token time "
               "interpolated linearly in position and integrated): 1 GPU %.1f s, 2 GPUs (layer split 22 + 21, the "
               "halves on consecutive chunks: ~2x) %.1f s; compute floor 1 GPU %.1f s, 2 GPUs %.1f s. Goal <= 12 s, "
               "milestone <= 30 s (2 GPUs)\n",
               T / 1e3, T / 2e3, F / 1e3, F / 2e3);
    }
    if (!rc && suffix > 0) {
        printf("\nSuffix re-prefill of %d tokens (chunks of %d) after a random state of the context, flash4, median of "
               "3 (wall); indexer = its share of one profiled run's GPU time; 43 layers as above (estimate)\n\n",
               suffix, chunk);
        printf("| context | flash4 s | indexer share | 43-layer s (est.) | 43-layer indexer s (est.) | floor s | of "
               "floor | goal |\n|---|---|---|---|---|---|---|---|\n");
    }
    for (int i = 0; !rc && suffix > 0 && i < nctx; i++) {
        double t[3], st[CUDA_PROF_N], sum4, gpu43;
        for (int r = 0; r < 3 && !rc; r++)
            rc = sfx_prefill(g, ctxs[i], tok, suffix, logits, &t[r], &e);
        if (!rc)
            rc = sfx_profile(g, &c, &full, ctxs[i], tok, suffix, logits, st, &sum4, &gpu43, &e);
        if (rc)
            break;
        double med = bench_median(t, 3), est = med * gpu43 / sum4, fl = sfx_floor_ms(&full, ctxs[i], suffix);
        int ncsa = 0;
        for (int l = 0; l < full.num_hidden_layers; l++)
            ncsa += full.compress_ratios[l] == 4;
        printf("| %lld | %.3f | %.1f%% | %.3f | %.3f | %.3f | %.1f%% | <= 0.5 s |\n", ctxs[i], med / 1e3,
               100.0 * st[CUDA_PROF_INDEXER] / sum4, est / 1e3, ncsa * st[CUDA_PROF_INDEXER] * (med / sum4) / 1e3,
               fl / 1e3, 100.0 * fl / est);
        fflush(stdout);
    }
    if (rc)
        fprintf(stderr, "bench-gpu-engine: suffix: %s\n", e.msg);
    if (sfx_stages_len) {
        printf("\nflash4 GPU ms by stage of the profiled runs above (share of the run's GPU time)\n\n| position | "
               "tokens |");
        for (int i = 0; i < CUDA_PROF_N; i++)
            printf(" %s |", cuda_engine_prof_names[i]);
        printf("\n|---|---|");
        for (int i = 0; i < CUDA_PROF_N; i++)
            printf("---|");
        printf("\n%s", sfx_stages);
    }
    free(tok);
    free(logits);
    cuda_engine_free(g);
    inf_weights_free(w);
    return rc ? 1 : 0;
}

/* --suffix N: the tables above (main parses; this runs them). */
static int sfx_main(const long long *ctxs, int nctx, int suffix, int chunk)
{
    if (getenv("CTX_BENCH_PROFILE_AT"))
        return sfx_run(ctxs, nctx, suffix, chunk);
    sfx_peak = bench_fp8_dense_tflops(8192, 10);
    printf("floor, compute: dense e4m3 cuBLASLt 8192^3, median of 10: %.0f TFLOP/s (bf16: half)\n\n", sfx_peak);
    if (sfx_peak <= 0)
        return 1;
    int rc = sfx_indexer_rows(chunk);
    if (getenv("CTX_BENCH_INDEXER_ONLY")) /* the indexer's tables only (device calls short of time) */
        return rc;
    rc |= topk_decode_rows();
    return sfx_run(ctxs, nctx, suffix, chunk) | rc;
}

/* ---- --full: V4-Flash's 43 layers measured, not extrapolated ----
 * The whole model (no MTP block) on synthetic weights (inf_weights_synthetic: ~156 GB of host memory)
 * over the devices of CTX_GPUS (default every visible one), one shard a device, cuda_multi_plan's
 * split, chunks of --chunk tokens (ctxd's chunk). Floors measured in this run: the copy
 * bandwidth (decode: the model's decode bytes at one GPU's bandwidth, since a layer split reads each
 * GPU's part in turn) and the dense FP8 rate (prefill: sfx_floor_ms, over the number of GPUs, since
 * the pipeline keeps every GPU on its own chunk). Rows:
 * 1. decode at each --ctx from a random state of that position: --steps direct and --steps graph
 *    steps, each waiting for its logits on the host; medians;
 * 2. the suffix: --suffix tokens (chunks of --chunk) after a random state of each --ctx above the
 *    suffix; median of 3, wall;
 * 3. the prefill of --prefill N tokens from position 0 as one cuda_multi_prefill (chunks queued at
 *    once, the shards pipelined): wall time until its logits are on the host, i.e. the time to the
 *    first token; the indexer's share from one chunk profiled (cuda_engine_profile on every shard) at
 *    the start, the middle and the end of that prompt, GPU time interpolated linearly in position. */
/* One chunk at P profiled: st[] the GPU ms by stage over every shard, shard_ms[i] shard i's sum; then
 * *wall_ms the median of 3 unprofiled chunks at P (cuda_multi_forward: the shards in turn). */
static int full_profile_chunk(struct cuda_multi *m, long long P, const int *tok, int chunk, float *logits,
                              double st[CUDA_PROF_N], double *shard_ms, double *wall_ms, struct ctx_err *e)
{
    int n = cuda_multi_shards(m), rc = cuda_multi_state_fill_random(m, P, 3, e);
    double tmp[CUDA_PROF_N], w[3];
    memset(st, 0, sizeof(double) * CUDA_PROF_N);
    for (int i = 0; !rc && i < n; i++) {
        cuda_engine_profile_get(cuda_multi_engine(m, i), tmp, 1);
        rc = cuda_engine_profile(cuda_multi_engine(m, i), 1, e);
    }
    if (!rc)
        rc = cuda_multi_forward(m, tok, chunk, logits, e);
    for (int i = 0; i < n; i++) {
        cuda_engine_profile(cuda_multi_engine(m, i), 0, e);
        cuda_engine_profile_get(cuda_multi_engine(m, i), tmp, 1);
        shard_ms[i] = 0;
        for (int k = 0; k < CUDA_PROF_N; k++) {
            st[k] += tmp[k];
            shard_ms[i] += tmp[k];
        }
    }
    for (int r = 0; r < 3 && !rc; r++) {
        rc = cuda_multi_state_fill_random(m, P, 3, e);
        double a = bench_now();
        if (!rc)
            rc = cuda_multi_forward(m, tok, chunk, logits, e);
        w[r] = (bench_now() - a) * 1e3;
    }
    *wall_ms = rc ? 0 : bench_median(w, 3);
    return rc;
}

static int full_main(const long long *ctxs, int nctx, int steps, long long prefill_n, int suffix, int chunk,
                     int layers, int first, long long slice)
{
    struct ctx_err e = {0};
    struct inf_config c;
    if (inf_config_builtin("flash", &c, &e)) {
        fprintf(stderr, "bench-gpu-engine: %s\n", e.msg);
        return 1;
    }
    c.num_nextn_predict_layers = 0;
    if (first >= c.num_hidden_layers) {
        fprintf(stderr, "bench-gpu-engine: --first-layer %d: V4-Flash has %d layers\n", first, c.num_hidden_layers);
        return 2;
    }
    if (first > 0) { /* --first-layer F: layers F.. as a model of their own (a later shard on one GPU): the
                      * same attention kinds in the same order, hash routing only where layer F + i < 3 */
        for (int l = first; l < c.num_hidden_layers; l++)
            c.compress_ratios[l - first] = c.compress_ratios[l];
        c.num_hidden_layers -= first;
        c.num_hash_layers = c.num_hash_layers > first ? c.num_hash_layers - first : 0;
    }
    if (layers > 0 && layers < c.num_hidden_layers) { /* --layers: the first N (a check of this mode on one GPU) */
        c.num_hidden_layers = layers;
        if (c.num_hash_layers > layers)
            c.num_hash_layers = layers;
    }
    if (first > 0 || layers > 0) {
        if (inf_config_validate(&c, "flash --layers", &e)) {
            fprintf(stderr, "bench-gpu-engine: %s\n", e.msg);
            return 1;
        }
    }
    double bw = bench_copy_gbps((size_t)1 << 30, 20);
    sfx_peak = bench_fp8_dense_tflops(8192, 10);
    printf("floors: device-to-device cudaMemcpy of 1 GiB, median of 20: %.0f GB/s (read + written); dense e4m3 "
           "cuBLASLt 8192^3, median of 10: %.0f TFLOP/s (bf16: half)\n\n",
           bw, sfx_peak);
    if (bw <= 0 || sfx_peak <= 0)
        return 1;
    long long maxctx = prefill_n;
    for (int i = 0; i < nctx; i++)
        maxctx = ctxs[i] > maxctx ? ctxs[i] : maxctx;
    long long ntok = maxctx + suffix + 2LL * steps + 64;
    int *tok = malloc(sizeof(int) * (size_t)ntok);
    float *logits = malloc(sizeof(float) * (size_t)c.vocab_size);
    double *dt = malloc(sizeof(double) * (size_t)(steps > 3 ? steps : 3));
    unsigned long long s = 4243;
    for (long long i = 0; tok && i < ntok; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        tok[i] = 2 + (int)((s >> 33) % (unsigned long long)(c.vocab_size - 2));
    }
    if (!tok || !logits || !dt) {
        fprintf(stderr, "bench-gpu-engine: out of memory\n");
        return 1;
    }
    tok[0] = c.bos_token_id;
    struct inf_weights *w = NULL;
    struct cuda_multi *m = NULL;
    int split[64], n = ndevs;
    double t0 = bench_now();
    if (inf_weights_synthetic(&c, 1, &w, &e)) {
        fprintf(stderr, "bench-gpu-engine: flash: %s\n", e.msg);
        return 1;
    }
    double t1 = bench_now();
    struct cuda_engine_opts o = {.max_chunk = chunk, .max_ctx = ntok};
    if (cuda_multi_plan(&c, o.max_ctx, n, split, &e) || cuda_multi_new(w, &o, devs, n, split, &m, &e)) {
        fprintf(stderr, "bench-gpu-engine: flash over %d GPUs: %s\n", n, e.msg);
        inf_weights_free(w);
        return 1;
    }
    double t2 = bench_now();
    size_t wtot = 0;
    for (int i = 0; i < inf_weights_count(w); i++)
        wtot += inf_weights_tensor(w, i)->nbytes;
    printf("V4-Flash, %s %d layers from layer %d (no MTP block), synthetic weights %.1f GB made in %.1f s, uploaded in %.1f s "
           "(max_ctx %lld, chunks of %d); layers and memory per GPU (cuda_multi_memory: weights + state/scratch GB):",
           layers > 0 || first > 0 ? "the" : "all", c.num_hidden_layers, first, (double)wtot / 1e9, t1 - t0, t2 - t1, o.max_ctx, chunk);
    for (int i = 0; i < n; i++) {
        size_t wb = 0, sb = 0;
        cuda_multi_memory(m, devs[i], &wb, &sb);
        printf(" GPU%d %d layers %.1f + %.1f", devs[i], split[i], wb / 1e9, sb / 1e9);
    }
    printf("\n\nDecode, measured: median of %d steps from a random state of the context (cuda_multi_state_fill_random), "
           "direct launches and replayed CUDA graphs (one a shard), each step waiting for its logits on the host; "
           "floor = the step's weights + state bytes / the copy bandwidth\n\n| context | GPUs | ms direct | ms graph | "
           "tok/s | GB read | floor ms | of floor |\n|---|---|---|---|---|---|---|---|\n",
           steps);
    int rc = 0;
    for (int k = 0; k < nctx && !rc; k++) {
        double direct = 0, graph = 0;
        const int *dtok = tok + 1;
        rc = cuda_multi_state_fill_random(m, ctxs[k], 1, &e);
        cuda_multi_use_graph(m, 0);
        if (!rc)
            rc = time_steps_multi(m, dtok, steps, logits, dt, &direct, &e);
        cuda_multi_use_graph(m, 1);
        if (!rc)
            rc = cuda_multi_decode(m, dtok[steps], logits, &e);
        if (!rc)
            rc = time_steps_multi(m, dtok + steps + 1, steps, logits, dt, &graph, &e);
        if (rc)
            break;
        double wb, sb, fl = floor_ms(&c, ctxs[k], bw, &wb, &sb);
        printf("| %lld | %d | %.3f | %.3f | %.1f | %.2f | %.3f | %.1f%% |\n", ctxs[k], n, direct, graph, 1e3 / graph,
               (wb + sb) / 1e9, fl, 100.0 * fl / graph);
        fflush(stdout);
    }
    if (!rc && suffix > 0) {
        printf("\nSuffix re-prefill, measured: %d tokens (one cuda_multi_prefill) after a random state of the "
               "context, median of 3, wall until the logits are on the host, in chunks of %d and in the chunks "
               "cuda_multi_prefill picks (chunk 0, as ctxd calls it: over several GPUs, when the call has under 2 "
               "chunks a GPU, the chunk that makes 2 a GPU); floor = its FLOPs at the dense FP8 rate / %d GPUs\n\n| context | s, chunks "
               "of %d | s, chunk 0 | floor s | of floor (chunk 0) | goal |\n|---|---|---|---|---|---|\n",
               suffix, chunk, n, chunk);
        for (int k = 0; k < nctx && !rc; k++) {
            if (ctxs[k] < suffix)
                continue;
            double med[2];
            for (int v = 0; v < 2 && !rc; v++) {
                for (int r = 0; r < 3 && !rc; r++) {
                    rc = cuda_multi_state_fill_random(m, ctxs[k], 5, &e);
                    double a = bench_now();
                    if (!rc)
                        rc = cuda_multi_prefill(m, tok + 1, suffix, v ? 0 : chunk, logits, &e);
                    dt[r] = (bench_now() - a) * 1e3;
                }
                med[v] = bench_median(dt, 3);
            }
            if (rc)
                break;
            double fl = sfx_floor_ms(&c, ctxs[k], suffix) / n;
            printf("| %lld | %.3f | %.3f | %.3f | %.1f%% | <= 0.5 s |\n", ctxs[k], med[0] / 1e3, med[1] / 1e3,
                   fl / 1e3, 100.0 * fl / med[1]);
            fflush(stdout);
        }
    }
    if (!rc && prefill_n > 0 && n > 1) { /* how the chunks are queued: one host thread, then one a shard */
        long long n_ab = prefill_n < 131072 ? prefill_n : 131072;
        double ab[2];
        for (int v = 0; v < 2 && !rc; v++) {
            cuda_multi_prefill_threads(v);
            cuda_multi_reset(m);
            double a = bench_now();
            rc = cuda_multi_prefill(m, tok, (int)n_ab, chunk, logits, &e);
            ab[v] = bench_now() - a;
        }
        cuda_multi_prefill_threads(-1);
        if (!rc)
            printf("\nPipelined prefill of %lld tokens from position 0 (cuda_multi_prefill_threads): chunks queued from "
                   "one host thread %.2f s, from one thread a shard %.2f s (%.2fx)\n",
                   n_ab, ab[0], ab[1], ab[0] / ab[1]);
    }
    if (!rc && prefill_n > 0) {
        cuda_multi_reset(m);
        double a = bench_now();
        rc = cuda_multi_prefill(m, tok, (int)prefill_n, chunk, logits, &e);
        double T = bench_now() - a, F = sfx_floor_ms(&c, 0, prefill_n) / 1e3 / n;
        long long at[3] = {0, (prefill_n / 2) / chunk * chunk, prefill_n - chunk};
        double st[3][CUDA_PROF_N], tot[3] = {0}, idx = 0, all = 0, shm[3][64], wall[3];
        for (int i = 0; i < 3 && !rc; i++) {
            if (at[i] < 0)
                at[i] = 0;
            rc = full_profile_chunk(m, at[i], tok, chunk, logits, st[i], shm[i], &wall[i], &e);
            for (int k = 0; k < CUDA_PROF_N; k++)
                tot[i] += st[i][k];
        }
        for (int i = 0; !rc && i < 2; i++) { /* trapezoids between the profiled positions */
            double len = (double)(at[i + 1] - at[i]);
            idx += 0.5 * (st[i][CUDA_PROF_INDEXER] + st[i + 1][CUDA_PROF_INDEXER]) * len;
            all += 0.5 * (tot[i] + tot[i + 1]) * len;
        }
        if (!rc) {
            printf("\nPrefill, measured: %lld tokens from position 0 in chunks of %d as one cuda_multi_prefill over %d "
                   "GPU(s) (chunks queued at once, shard i on chunk c while shard i-1 is on c+1), wall until the last "
                   "chunk's logits are on the host (time to first token); floor = its FLOPs at the dense FP8 rate / %d "
                   "GPUs. Indexer share: GPU time of one chunk profiled at positions %lld, %lld and %lld (every shard, "
                   "kernels back to back), interpolated linearly in position\n\n| tokens | GPUs | s | tok/s | indexer "
                   "share | floor s | of floor | goal | milestone |\n|---|---|---|---|---|---|---|---|---|\n"
                   "| %lld | %d | %.1f | %.0f | %.1f%% | %.1f | %.1f%% | <= 12 s | <= 30 s |\n",
                   prefill_n, chunk, n, n, at[0], at[1], at[2], prefill_n, n, T, prefill_n / T, 100.0 * idx / all, F,
                   100.0 * F / T);
            printf("\nGPU ms by stage of the profiled chunks (all shards); per shard its sum; wall = one unprofiled "
                   "chunk at that position through the shards in turn (cuda_multi_forward, median of 3)\n\n| position |");
            for (int k = 0; k < CUDA_PROF_N; k++)
                printf(" %s |", cuda_engine_prof_names[k]);
            printf(" sum |");
            for (int j = 0; j < n; j++)
                printf(" shard %d |", j);
            printf(" wall ms |\n|---|");
            for (int k = 0; k <= CUDA_PROF_N + n + 1; k++)
                printf("---|");
            for (int i = 0; i < 3; i++) {
                printf("\n| %lld |", at[i]);
                for (int k = 0; k < CUDA_PROF_N; k++)
                    printf(" %.1f |", st[i][k]);
                printf(" %.1f |", tot[i]);
                for (int j = 0; j < n; j++)
                    printf(" %.1f |", shm[i][j]);
                printf(" %.1f |", wall[i]);
            }
            printf("\n");
        }
    }
    /* The same prefill as ctxd runs it: calls of `slice` tokens (its slices: 4 chunks a GPU over several GPUs, one
     * chunk on one), each call's pipeline filled and drained on its own (ctxd checkpoints between them) */
    const long long sl = slice > 0 ? slice : n > 1 && slice == 0 ? 4LL * chunk * n : 0;
    if (!rc && prefill_n > 0 && sl > 0) {
        cuda_multi_reset(m);
        double a = bench_now();
        for (long long p = 0; p < prefill_n && !rc; p += sl) {
            const long long len = prefill_n - p < sl ? prefill_n - p : sl;
            rc = cuda_multi_prefill(m, tok + p, (int)len, chunk, p + len == prefill_n ? logits : NULL, &e);
        }
        double T = bench_now() - a;
        if (!rc)
            printf("\nThe same prefill in calls of %lld tokens (ctxd's slices%s), each waited for: %.1f s (%.0f tok/s)\n",
                   sl, slice > 0 ? ": --slice" : ", 4 chunks a GPU", T, prefill_n / T);
    }
    if (rc)
        fprintf(stderr, "bench-gpu-engine: flash over %d GPUs: %s\n", n, e.msg);
    cuda_multi_free(m);
    inf_weights_free(w);
    free(tok);
    free(logits);
    free(dt);
    return rc ? 1 : 0;
}

int main(int argc, char **argv)
{
    long long ctxs[16] = {4096};
    int nctx = 1, steps = 64;
    long long prefill_max = 16384;
    const char *models = "mid,flash4";
    int suffix = 0, chunk = 4096, ctx_given = 0; /* --suffix N [--chunk N]: sfx_main's tables instead */
    int full = 0, steps_given = 0, suffix_given = 0, layers = 0, first = 0; /* --full [--prefill N] [--layers N]
                                                                              [--first-layer F]: full_main */
    int chunk_given = 0;
    long long prefill_n = 500000, slice = 0; /* --full --slice N: the prefill again in calls of N (-1: not at all) */
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--ctx") && i + 1 < argc) {
            nctx = 0;
            ctx_given = 1;
            for (char *p = argv[++i]; *p && nctx < 16;) {
                ctxs[nctx++] = strtoll(p, &p, 10);
                if (*p == ',')
                    p++;
                else if (*p)
                    break;
            }
        } else if (!strcmp(argv[i], "--steps") && i + 1 < argc) {
            steps = atoi(argv[++i]);
            steps_given = 1;
        } else if (!strcmp(argv[i], "--models") && i + 1 < argc) {
            models = argv[++i];
        } else if (!strcmp(argv[i], "--prefill-max") && i + 1 < argc) {
            prefill_max = atoll(argv[++i]);
        } else if (!strcmp(argv[i], "--profile")) {
            profile = 1;
        } else if (!strcmp(argv[i], "--pro-experts") && i + 1 < argc) {
            pro_experts = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--suffix") && i + 1 < argc) {
            suffix = atoi(argv[++i]);
            suffix_given = 1;
        } else if (!strcmp(argv[i], "--full")) {
            full = 1;
        } else if (!strcmp(argv[i], "--prefill") && i + 1 < argc) {
            prefill_n = atoll(argv[++i]);
        } else if (!strcmp(argv[i], "--layers") && i + 1 < argc) {
            layers = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--first-layer") && i + 1 < argc) {
            first = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--slice") && i + 1 < argc) {
            slice = atoll(argv[++i]);
        } else if (!strcmp(argv[i], "--chunk") && i + 1 < argc) {
            chunk = atoi(argv[++i]);
            chunk_given = 1;
        } else if (!strcmp(argv[i], "--shards") && i + 1 < argc) {
            shards = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--ab-moe")) {
            ab_moe = 1;
        } else if (!strcmp(argv[i], "--attn-ab") && i + 1 < argc) {
            nab = 0;
            for (char *p = argv[++i]; *p && nab < 8;) {
                long v = strtol(p, &p, 10);
                if (v < 0 || v > 1023) {
                    fprintf(stderr, "bench-gpu-engine: --attn-ab: bit sets are 0..1023\n");
                    return 2;
                }
                abits[nab++] = (int)v;
                if (*p == ',')
                    p++;
                else if (*p)
                    break;
            }
            if (nab < 2) {
                fprintf(stderr, "bench-gpu-engine: --attn-ab needs at least two bit sets (A,B)\n");
                return 2;
            }
        } else if (!strcmp(argv[i], "--pdl") && i + 1 < argc &&
                   (!strcmp(argv[i + 1], "both") || !strcmp(argv[i + 1], "on") || !strcmp(argv[i + 1], "off"))) {
            const char *v = argv[++i];
            pdl_both = !strcmp(v, "both");
            if (!pdl_both)
                cuda_pdl_set(!strcmp(v, "on"));
        } else {
            fprintf(stderr, "usage: bench-gpu-engine [--ctx N[,N...]] [--steps N] [--models mid,flash4,pro4] "
                            "[--prefill-max N] [--profile] [--pro-experts N] [--suffix N [--chunk N]] [--shards N] "
                            "[--pdl both|on|off] [--attn-ab A,B[,...] [--ab-moe]] | --full [--ctx N,...] [--steps N] [--suffix N] "
                            "[--prefill N] [--chunk N] [--layers N] [--first-layer F] [--slice N]\n");
            return 2;
        }
    }
    if (cuda_device_count() < 1) {
        fprintf(stderr, "bench-gpu-engine: no CUDA device\n");
        return 77;
    }
    if (full) {
        if (!ctx_given) {
            ctxs[0] = 4096;
            ctxs[1] = 131072;
            ctxs[2] = 500000;
            nctx = 3;
        }
        if (!steps_given)
            steps = 32;
        if (!suffix_given)
            suffix = 8192;
        if (!chunk_given) /* ctxd's chunk with --backend cuda (and the accelerator's default) */
            chunk = 16384;
        if (steps < 1 || suffix < 0 || prefill_n < 0 || prefill_n > 1000000 || chunk < 16 || chunk > 16384 ||
            (prefill_n > 0 && prefill_n < chunk)) {
            fprintf(stderr, "bench-gpu-engine: --full: --steps must be positive, --suffix and --prefill at least 0 "
                            "(--prefill 0 or at least one chunk, at most 1000000), --chunk in 16..16384\n");
            return 2;
        }
        if (layers < 0 || first < 0 || slice < -1) {
            fprintf(stderr, "bench-gpu-engine: --full: --layers must be positive, --first-layer at least 0, --slice "
                            "positive or -1\n");
            return 2;
        }
        for (int i = 0; i < nctx; i++)
            if (ctxs[i] < 1 || ctxs[i] > 1000000) {
                fprintf(stderr, "bench-gpu-engine: --full: contexts must be in 1..1000000\n");
                return 2;
            }
    }
    if (!full && (suffix > 0 || chunk != 4096)) {
        if (suffix < 0 || chunk < 16 || chunk > 8192) {
            fprintf(stderr, "bench-gpu-engine: --suffix must be positive, --chunk in 16..8192\n");
            return 2;
        }
        if (!ctx_given) {
            ctxs[0] = 131072;
            ctxs[1] = 500000;
            nctx = 2;
        }
        return sfx_main(ctxs, nctx, suffix, chunk);
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
    if (shards < 1 || shards > 64) {
        fprintf(stderr, "bench-gpu-engine: --shards must be in 1..64\n");
        return 2;
    }
    { /* the pipeline's devices: CTX_GPUS (a comma list), default every visible device */
        int count = cuda_device_count();
        const char *env = getenv("CTX_GPUS");
        for (const char *p = env ? env : ""; *p && ndevs < 64;) {
            char *end = NULL;
            long d = strtol(p, &end, 10);
            if (end == p)
                break;
            if (d < 0 || d >= count) {
                fprintf(stderr, "bench-gpu-engine: CTX_GPUS names device %ld (%d devices)\n", d, count);
                return 2;
            }
            devs[ndevs++] = (int)d;
            p = *end == ',' ? end + 1 : end;
        }
        if (!ndevs)
            for (int d = 0; d < count && d < 64; d++)
                devs[ndevs++] = d;
    }
    if (full)
        return full_main(ctxs, nctx, steps, prefill_n, suffix, chunk, layers, first, slice);
    if (pro_experts < 8 || pro_experts > 384 || pro_experts % 8) { /* whole experts per GPU of 8 */
        fprintf(stderr, "bench-gpu-engine: --pro-experts must be a multiple of 8 in 8..384\n");
        return 2;
    }
    double bw = bench_copy_gbps((size_t)1 << 30, 20);
    printf("floor, bandwidth: device-to-device cudaMemcpy of 1 GiB, median of 20: %.0f GB/s (read + written)\n\n", bw);
    printf("Single-stream decode, CUDA engine, synthetic weights; median of %d steps as direct launches and %d as a "
           "replayed CUDA graph (tok/s and the floor ratio from the graph), after a prefill to the context (tok/s) or "
           "a random state of that position (filled); Programmatic Dependent Launch %s\n\n",
           steps, steps, cuda_pdl_enabled() ? "on" : "off");
    printf("| model | layers | context | ms direct | ms graph | tok/s | weights read MB | state read MB | floor ms | "
           "of floor | prefill tok/s | graph |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    char buf[256];
    snprintf(buf, sizeof buf, "%s", models);
    int rc = 0;
    for (char *sv = NULL, *m = strtok_r(buf, ",", &sv); m; m = strtok_r(NULL, ",", &sv))
        rc |= run_model(m, ctxs, nctx, steps, prefill_max, bw);
    if (pdl_both) {
        printf("\nProgrammatic Dependent Launch off vs on (kernels/README.md \"PDL\"), this run: decode steps from a "
               "random state of the context, median of %d steps per variant (2 alternating rounds; each round after "
               "a fresh state and one untimed step that recaptures the graph)\n\n",
               2 * (steps / 2 > 0 ? steps / 2 : 1));
        printf("| model | context | direct off ms | direct on ms | on / off | graph off ms | graph on ms | on / off | "
               "graph |\n|---|---|---|---|---|---|---|---|---|\n");
        fputs(pdltab, stdout);
    }
    if (nab) {
        printf("\nThe decode attention's bit sets (CTX_CUDA_FUSE_ATTN, kernels/engine.cu ATTN_*), this run: graph "
               "decode steps from a random state of the context, median of %d steps per set (4 alternating rounds; "
               "each round after a fresh state and one untimed step that recaptures the graph); ms, then each set "
               "minus the first\n\n| model | context |",
               4 * (steps / 2 > 0 ? steps / 2 : 1));
        for (int v = 0; v < nab; v++)
            printf(" bits %d |", abits[v]);
        for (int v = 1; v < nab; v++)
            printf(" %d - %d |", abits[v], abits[0]);
        printf("\n|---|---|");
        for (int v = 1; v < 2 * nab; v++)
            printf("---|");
        printf("\n");
        fputs(abtab, stdout);
    }
    fputs(prof, stdout);
    if (profile)
        rc |= topk_decode_rows();
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
    fputs(pextra, stdout);
    if (shards > 1) {
        printf("\nLayer-split pipeline (kernels/multi.h) over %d shards against the same code over 1 shard, this run; "
               "devices:", shards);
        for (int i = 0; i < ndevs; i++)
            printf(" %d", devs[i]);
        printf(" (shard i on device i %% %d%s). Decode: median of %d steps, direct and graph; hop ms = graph step of "
               "%d shards - graph step of 1 (the %d boundary hops: event waits, the streams' copy, one more graph "
               "launch per shard). Prefill: the context in one cuda_multi_prefill (chunks of 256 queued at once, "
               "shards pipelined). Layers: count@device per shard. Memory: GB of weights + state/scratch per device "
               "(cuda_multi_memory, measured)\n\n",
               ndevs, ndevs == 1 ? ": every shard on the one device, no speed-up possible" : "", steps, shards,
               shards - 1);
        printf("| model | context | shards | layers | ms direct | ms graph | tok/s | hop ms | prefill tok/s | graph | "
               "memory GB |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
        fputs(shtab, stdout);
        flash_split_memory(2, 500000);
    }
    return rc;
}
