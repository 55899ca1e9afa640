/* ctx model generate: greedy generation on GPUs with the in-process CUDA engine (no daemon), plain
 * or speculative with the checkpoint's MTP block (kernels/cuda_engine.h cuda_engine_generate; over
 * several GPUs the layer split of kernels/multi.h, cuda_multi_generate, as V4-Flash needs on H200s).
 *   ctx model generate DIR|--synthetic NAME [--seed N] --input FILE [--max-tokens N] [--spec]
 *                      [--stop ID[,ID...]] [--chunk N] [--gpus LIST] [--json]
 * FILE is JSON {"tokens":[ids...]} or a bare array of ids (the prompt, as `ctx tokenize` prints it). Prints the
 * generated ids and the run's figures: prompt and decode seconds, decode tok/s, and with --spec the
 * drafts verified and accepted (the acceptance that sets the speed-up; speculative and plain runs give
 * the same tokens). Needs a -Dcuda build and a GPU. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "config.h"
#include "args.h"
#include "ctx_config.h"
#include "err.h"
#include "tokens_json.h"
#include "weights.h"
#if HAVE_CUDA
#include "cuda_engine.h"
#include "multi.h"
#endif

static void generate_usage(FILE *f)
{
    fprintf(f, "usage: ctx model generate DIR|--synthetic NAME [--seed N] --input FILE [--max-tokens N] [--spec]\n"
               "                          [--stop ID[,ID...]] [--chunk N] [--gpus LIST] [--json]\n"
               "  --input FILE      the prompt: JSON [ids...] (ctx tokenize's) or {\"tokens\":[ids...]}\n"
               "  --max-tokens N    tokens to generate (default 128)\n"
               "  --spec            speculative decoding with the checkpoint's MTP block (the same tokens)\n"
               "  --stop LIST       token ids that end the output (kept in it; default: the config's eos)\n"
               "  --chunk N         prompt chunk size (default 4096)\n"
               "  --gpus LIST       CUDA devices, one layer-split shard each (default 0)\n"
               "  --json            one JSON object on stdout\n");
}


int ctx_model_generate(int argc, char **argv, const struct ctx_cli *cli)
{
    const char *dir = NULL, *synth = NULL, *input = NULL;
    long long seed = 1, max_tokens = 128, chunk = 4096;
    int spec = 0, json = cli && cli->json, stop[64], nstop = -1, gpus[16] = {0}, n_gpus = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            generate_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--synthetic") && i + 1 < argc) {
            synth = argv[++i];
        } else if (!strcmp(a, "--seed") && i + 1 < argc) {
            if (ctx_parse_ll(argv[++i], 0, INT64_MAX, &seed)) {
                fprintf(stderr, "ctx model: --seed \"%s\" is not a number\n", argv[i]);
                return 2;
            }
        } else if (!strcmp(a, "--input") && i + 1 < argc) {
            input = argv[++i];
        } else if (!strcmp(a, "--max-tokens") && i + 1 < argc) {
            if (ctx_parse_ll(argv[++i], 1, 1 << 20, &max_tokens)) {
                fprintf(stderr, "ctx model: --max-tokens \"%s\" is not a number in 1..1048576\n", argv[i]);
                return 2;
            }
        } else if (!strcmp(a, "--chunk") && i + 1 < argc) {
            if (ctx_parse_ll(argv[++i], 1, 1 << 24, &chunk)) {
                fprintf(stderr, "ctx model: --chunk \"%s\" is not a positive number\n", argv[i]);
                return 2;
            }
        } else if (!strcmp(a, "--gpus") && i + 1 < argc) {
            struct ctx_err ge = {0};
            if (ctx_parse_int_list(argv[++i], 0, 255, gpus, 16, &n_gpus, &ge)) {
                fprintf(stderr, "ctx model: --gpus wants device numbers like 0,1 (at most 16), not \"%s\": %s\n",
                        argv[i], ge.msg);
                return 2;
            }
        } else if (!strcmp(a, "--stop") && i + 1 < argc) {
            struct ctx_err pe = {0};
            if (ctx_parse_int_list(argv[++i], 0, INT32_MAX, stop, 64, &nstop, &pe)) {
                fprintf(stderr, "ctx model: --stop wants token ids like 1,2 (at most 64), not \"%s\": %s\n", argv[i],
                        pe.msg);
                return 2;
            }
        } else if (!strcmp(a, "--spec")) {
            spec = 1;
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else if (a[0] != '-' && !dir) {
            dir = a;
        } else {
            fprintf(stderr, "ctx model: generate: unexpected argument \"%s\"\n", a);
            generate_usage(stderr);
            return 2;
        }
    }
    if (!!dir == !!synth || !input) {
        fprintf(stderr, "ctx model: generate needs DIR or --synthetic NAME, and --input\n");
        generate_usage(stderr);
        return 2;
    }
#if !HAVE_CUDA
    (void)seed, (void)max_tokens, (void)chunk, (void)gpus, (void)n_gpus, (void)spec, (void)json, (void)stop,
        (void)nstop;
    fprintf(stderr, "ctx model: generate runs on the CUDA engine: this ctx was built without it (meson -Dcuda=enabled)\n");
    return 2;
#else
    struct ctx_err e = {0};
    struct inf_weights *w = NULL;
    struct cuda_engine *g = NULL;
    struct cuda_multi *mg = NULL;
    int *tokens = NULL, *out = NULL, n = 0, n_out = 0, status = 1;
    if (dir) {
        if (inf_weights_open(dir, &w, &e))
            goto fail;
    } else {
        struct inf_config c;
        if (inf_config_resolve(synth, &c, &e) || inf_weights_synthetic(&c, (unsigned long long)seed, &w, &e))
            goto fail;
    }
    const struct inf_config *c = inf_weights_config(w);
    if (inf_tokens_json_read(input, c->vocab_size, &tokens, &n, NULL, &e))
        goto fail;
    if (nstop < 0) { /* default: the end of sentence */
        stop[0] = c->eos_token_id;
        nstop = c->eos_token_id >= 0 ? 1 : 0;
    }
    for (int i = 0; i < nstop; i++)
        if (stop[i] >= c->vocab_size) {
            ctx_err_set(&e, CTX_EINVAL, "--stop: token %d is not below the vocabulary size %d", stop[i], c->vocab_size);
            goto fail;
        }
    struct cuda_engine_opts o = {.max_chunk = (int)chunk, .max_ctx = n + max_tokens + 8, .device = gpus[0],
                                 .mtp = spec};
    if (n_gpus > 1 ? cuda_multi_new(w, &o, gpus, n_gpus, NULL, &mg, &e) : cuda_engine_new(w, &o, &g, &e))
        goto fail;
    out = malloc(sizeof(int) * (size_t)max_tokens);
    if (!out) {
        ctx_err_set(&e, CTX_ENOMEM, "out of memory");
        goto fail;
    }
    struct cuda_engine_gen_opts go = {.max_tokens = (int)max_tokens, .spec = spec, .stop = stop, .nstop = nstop};
    struct cuda_engine_gen_stats st;
    if (mg ? cuda_multi_generate(mg, tokens, n, &go, out, &n_out, &st, &e)
           : cuda_engine_generate(g, tokens, n, &go, out, &n_out, &st, &e))
        goto fail;
    const double tps = n_out > 1 && st.decode_s > 0 ? (n_out - 1) / st.decode_s : 0;
    const double acc = st.drafted ? (double)st.accepted / (double)st.drafted : 0;
    if (json) {
        printf("{\"tokens\":[");
        for (int i = 0; i < n_out; i++)
            printf(i ? ",%d" : "%d", out[i]);
        printf("],\"prompt_tokens\":%d,\"generated\":%d,\"stopped\":%s,\"spec\":%s,\"prefill_s\":%.6f,\"decode_s\":%.6f,"
               "\"decode_tok_s\":%.2f,\"forwards\":%lld,\"drafted\":%lld,\"accepted\":%lld,\"acceptance\":%.4f,"
               "\"mtp_calls\":%lld,\"undone\":%lld}\n",
               n, n_out, n_out < max_tokens ? "true" : "false", spec ? "true" : "false", st.prefill_s, st.decode_s, tps,
               st.forwards, st.drafted, st.accepted, acc, st.mtp_calls, st.undos);
    } else {
        printf("tokens:");
        for (int i = 0; i < n_out; i++)
            printf(" %d", out[i]);
        printf("\n%d generated after a prompt of %d%s: prompt %.3f s, decode %.3f s (%.1f tok/s)", n_out, n,
               n_out < max_tokens ? " (stopped)" : "", st.prefill_s, st.decode_s, tps);
        if (spec)
            printf(", %lld of %lld drafts accepted (%.1f%%)", st.accepted, st.drafted, 100.0 * acc);
        printf("\n");
    }
    status = 0;
fail:
    if (status)
        fprintf(stderr, "ctx model: generate: %s\n", e.msg[0] ? e.msg : "failed");
    free(out);
    free(tokens);
    cuda_engine_free(g);
    cuda_multi_free(mg);
    inf_weights_free(w);
    return status;
#endif
}
