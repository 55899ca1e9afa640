/* ctx model: the engine's model-level commands, run in-process (no daemon). `score` lives in
 * cmd_model_score.c; this file dispatches to it and implements `info`:
 *   ctx model info DIR|--synthetic NAME_OR_CONFIG [--seed N] [--context N] [--generate] [--json]
 * prints the config summary, the layer schedule, total/active parameters and the memory plan. With
 * DIR the checkpoint is opened and every tensor checked against the config; with --synthetic only
 * the config is needed, unless --generate builds the synthetic weights (timed, with a checksum that
 * identifies the bytes for a seed). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "commands.h"
#include "config.h"
#include "json.h"
#include "pool.h"
#include "weights.h"

static void model_usage(FILE *f)
{
    fprintf(f,
            "usage: ctx model info DIR|--synthetic NAME_OR_CONFIG [--seed N] [--context N] [--generate] [--json]\n"
            "       ctx model score ... (ctx model score --help)\n"
            "       ctx model generate ... (ctx model generate --help; a -Dcuda build)\n"
            "  DIR             a DeepSeek V4 checkpoint (config.json + safetensors); every tensor is checked\n"
            "  --synthetic X   a built-in config (tiny, mid, flash, pro, flash-base, pro-base) or a config.json\n"
            "  --seed N        seed of the synthetic weights (default 1)\n"
            "  --context N     context length for the KV plan (default 1048576)\n"
            "  --generate      build the synthetic weights in memory; report time and checksum\n");
}

static const char *score_name(enum inf_score_func s)
{
    return s == INF_SCORE_SOFTMAX ? "softmax" : s == INF_SCORE_SIGMOID ? "sigmoid" : "sqrtsoftplus";
}

static const char *kind_name(int ratio)
{
    return ratio == 4 ? "CSA" : ratio == 128 ? "HCA" : "sliding";
}

static void human(char *buf, size_t n, double b)
{
    const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int i = 0;
    while (b >= 1024 && i < 4) {
        b /= 1024;
        i++;
    }
    snprintf(buf, n, i ? "%.2f %s" : "%.0f %s", b, u[i]);
}

static void count_str(char *buf, size_t n, long long v)
{
    if (v >= 1000000000LL)
        snprintf(buf, n, "%lld (%.2fB)", v, v / 1e9);
    else
        snprintf(buf, n, "%lld (%.2fM)", v, v / 1e6);
}

/* An FNV-style hash over every tensor's name and bytes (8 at a time), in name order: it identifies
 * a synthetic draw. */
static uint64_t weights_checksum(const struct inf_weights *w)
{
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < inf_weights_count(w); i++) {
        const struct inf_tensor *t = inf_weights_tensor(w, i);
        for (const char *p = t->name; *p; p++)
            h = (h ^ (unsigned char)*p) * 1099511628211ull;
        const uint8_t *d = t->data;
        size_t k = 0;
        for (; k + 8 <= t->nbytes; k += 8) { /* 8 bytes a step: the weights can be many GiB */
            uint64_t v;
            memcpy(&v, d + k, 8);
            h = (h ^ v) * 1099511628211ull;
            h ^= h >> 29;
        }
        for (; k < t->nbytes; k++)
            h = (h ^ d[k]) * 1099511628211ull;
    }
    return h;
}

static cJSON *config_json(const struct inf_config *c)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "vocab_size", c->vocab_size);
    cJSON_AddNumberToObject(j, "hidden_size", c->hidden_size);
    cJSON_AddNumberToObject(j, "num_hidden_layers", c->num_hidden_layers);
    cJSON_AddNumberToObject(j, "num_nextn_predict_layers", c->num_nextn_predict_layers);
    cJSON_AddNumberToObject(j, "num_hash_layers", c->num_hash_layers);
    cJSON_AddNumberToObject(j, "num_attention_heads", c->num_attention_heads);
    cJSON_AddNumberToObject(j, "head_dim", c->head_dim);
    cJSON_AddNumberToObject(j, "qk_rope_head_dim", c->qk_rope_head_dim);
    cJSON_AddNumberToObject(j, "q_lora_rank", c->q_lora_rank);
    cJSON_AddNumberToObject(j, "o_groups", c->o_groups);
    cJSON_AddNumberToObject(j, "o_lora_rank", c->o_lora_rank);
    cJSON_AddNumberToObject(j, "n_routed_experts", c->n_routed_experts);
    cJSON_AddNumberToObject(j, "n_shared_experts", c->n_shared_experts);
    cJSON_AddNumberToObject(j, "num_experts_per_tok", c->num_experts_per_tok);
    cJSON_AddNumberToObject(j, "moe_intermediate_size", c->moe_intermediate_size);
    cJSON_AddStringToObject(j, "expert_dtype", c->expert_dtype == INF_EXPERT_FP4 ? "fp4" : "fp8");
    cJSON_AddStringToObject(j, "scoring_func", score_name(c->scoring_func));
    cJSON_AddNumberToObject(j, "routed_scaling_factor", c->routed_scaling_factor);
    cJSON_AddNumberToObject(j, "swiglu_limit", c->swiglu_limit);
    cJSON_AddNumberToObject(j, "sliding_window", c->sliding_window);
    cJSON_AddNumberToObject(j, "index_n_heads", c->index_n_heads);
    cJSON_AddNumberToObject(j, "index_head_dim", c->index_head_dim);
    cJSON_AddNumberToObject(j, "index_topk", c->index_topk);
    cJSON_AddNumberToObject(j, "hc_mult", c->hc_mult);
    cJSON_AddNumberToObject(j, "hc_sinkhorn_iters", c->hc_sinkhorn_iters);
    cJSON_AddNumberToObject(j, "rope_theta", c->rope_theta);
    cJSON_AddNumberToObject(j, "compress_rope_theta", c->compress_rope_theta);
    cJSON_AddNumberToObject(j, "rope_factor", c->rope_factor);
    cJSON_AddNumberToObject(j, "original_max_position_embeddings", (double)c->original_max_position_embeddings);
    cJSON_AddNumberToObject(j, "rms_norm_eps", c->rms_norm_eps);
    cJSON_AddNumberToObject(j, "hc_eps", c->hc_eps);
    cJSON_AddNumberToObject(j, "bos_token_id", c->bos_token_id);
    cJSON_AddNumberToObject(j, "eos_token_id", c->eos_token_id);
    return j;
}

static int model_info(int argc, char **argv, const struct ctx_cli *cli)
{
    const char *dir = NULL, *synth = NULL;
    unsigned long long seed = 1;
    long long context = 1048576;
    bool json = cli->json, generate = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        char *end;
        if (!strcmp(a, "--json"))
            json = true;
        else if (!strcmp(a, "--generate"))
            generate = true;
        else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            model_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--synthetic") && i + 1 < argc)
            synth = argv[++i];
        else if (!strcmp(a, "--seed") && i + 1 < argc) {
            seed = strtoull(argv[++i], &end, 0);
            if (*end || !*argv[i]) {
                fprintf(stderr, "ctx model: --seed \"%s\" is not a number\n", argv[i]);
                return 2;
            }
        } else if (!strcmp(a, "--context") && i + 1 < argc) {
            context = strtoll(argv[++i], &end, 0);
            if (*end || !*argv[i] || context < 0) {
                fprintf(stderr, "ctx model: --context \"%s\" is not a non-negative number\n", argv[i]);
                return 2;
            }
        } else if (a[0] != '-' && !dir)
            dir = a;
        else {
            fprintf(stderr, "ctx model: unexpected argument \"%s\"\n", a);
            model_usage(stderr);
            return 2;
        }
    }
    if (!!dir == !!synth || (generate && !synth)) {
        model_usage(stderr);
        return 2;
    }
    struct ctx_err e = {0};
    struct inf_config cfg;
    struct inf_weights *w = NULL;
    char source[4200];
    double gen_s = 0;
    if (dir) {
        if (inf_weights_open(dir, &w, &e)) {
            fprintf(stderr, "ctx model: %s\n", e.msg);
            return 1;
        }
        cfg = *inf_weights_config(w);
        snprintf(source, sizeof source, "%s", dir);
    } else {
        if (inf_config_resolve(synth, &cfg, &e)) {
            fprintf(stderr, "ctx model: %s\n", e.msg);
            return 1;
        }
        snprintf(source, sizeof source, "synthetic %s, seed %llu", synth, seed);
        if (generate) {
            struct timespec t0, t1;
            clock_gettime(CLOCK_MONOTONIC, &t0);
            if (inf_weights_synthetic(&cfg, seed, &w, &e)) {
                fprintf(stderr, "ctx model: %s\n", e.msg);
                return 1;
            }
            clock_gettime(CLOCK_MONOTONIC, &t1);
            gen_s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
        }
    }
    struct inf_param_count pc;
    struct inf_memory_plan mp;
    if (inf_params_count(&cfg, &pc, &e) || inf_memory_plan(&cfg, context, &mp, &e)) {
        fprintf(stderr, "ctx model: %s\n", e.msg);
        inf_weights_free(w);
        return 1;
    }
    const int L = cfg.num_hidden_layers, M = cfg.num_nextn_predict_layers;
    int mtp_loaded = w ? inf_weights_mtp_layers(w) : M;
    uint64_t sum = (w && generate) ? weights_checksum(w) : 0;

    if (json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "source", source);
        cJSON_AddItemToObject(j, "config", config_json(&cfg));
        cJSON *sch = cJSON_AddArrayToObject(j, "layers");
        for (int i = 0; i < L + M; i++) {
            cJSON *l = cJSON_CreateObject();
            cJSON_AddStringToObject(l, "name", i < L ? "layer" : "mtp");
            cJSON_AddNumberToObject(l, "index", i < L ? i : i - L);
            cJSON_AddStringToObject(l, "attention", kind_name(cfg.compress_ratios[i]));
            cJSON_AddNumberToObject(l, "compress_ratio", cfg.compress_ratios[i]);
            cJSON_AddStringToObject(l, "routing", inf_config_is_hash_layer(&cfg, i) ? "hash" : "learned");
            cJSON_AddItemToArray(sch, l);
        }
        cJSON *p = cJSON_AddObjectToObject(j, "parameters");
        cJSON_AddNumberToObject(p, "total", (double)pc.total);
        cJSON_AddNumberToObject(p, "backbone", (double)pc.backbone);
        cJSON_AddNumberToObject(p, "mtp", (double)pc.mtp);
        cJSON_AddNumberToObject(p, "active", (double)pc.active);
        cJSON_AddNumberToObject(p, "active_without_embedding", (double)pc.active_no_embed);
        cJSON_AddNumberToObject(p, "active_with_mtp", (double)pc.active_mtp);
        cJSON_AddNumberToObject(p, "routed_expert", (double)pc.routed_expert);
        cJSON *m = cJSON_AddObjectToObject(j, "memory");
        cJSON *bd = cJSON_AddObjectToObject(m, "weight_bytes_by_dtype");
        for (int d = 0; d < INF_DT_COUNT; d++)
            if (mp.weight_bytes_by_dtype[d])
                cJSON_AddNumberToObject(bd, inf_dtype_name((enum inf_dtype)d), (double)mp.weight_bytes_by_dtype[d]);
        cJSON_AddNumberToObject(m, "weight_bytes", (double)mp.weight_bytes);
        cJSON_AddNumberToObject(m, "weight_bytes_mtp", (double)mp.weight_bytes_mtp);
        cJSON_AddNumberToObject(m, "decode_read_bytes", (double)mp.decode_read_bytes);
        cJSON_AddNumberToObject(m, "context", (double)mp.context);
        cJSON_AddNumberToObject(m, "main_entry_bytes_packed", mp.main_entry_packed);
        cJSON_AddNumberToObject(m, "main_entry_bytes_bf16", mp.main_entry_bf16);
        cJSON_AddNumberToObject(m, "index_entry_bytes_fp4", mp.index_entry_fp4);
        cJSON_AddNumberToObject(m, "index_entry_bytes_bf16", mp.index_entry_bf16);
        cJSON_AddNumberToObject(m, "kv_bytes_sliding_layer", (double)mp.window_bytes);
        cJSON_AddNumberToObject(m, "kv_bytes_csa_layer", (double)mp.csa_bytes);
        cJSON_AddNumberToObject(m, "kv_bytes_hca_layer", (double)mp.hca_bytes);
        cJSON_AddNumberToObject(m, "kv_bytes_sliding_layer_bf16", (double)mp.window_bytes_bf16);
        cJSON_AddNumberToObject(m, "kv_bytes_csa_layer_bf16", (double)mp.csa_bytes_bf16);
        cJSON_AddNumberToObject(m, "kv_bytes_hca_layer_bf16", (double)mp.hca_bytes_bf16);
        cJSON_AddNumberToObject(m, "carry_bytes_csa_layer", (double)mp.carry_csa);
        cJSON_AddNumberToObject(m, "carry_bytes_hca_layer", (double)mp.carry_hca);
        cJSON_AddNumberToObject(m, "kv_bytes_total", (double)mp.kv_total);
        cJSON_AddNumberToObject(m, "kv_bytes_total_bf16", (double)mp.kv_total_bf16);
        cJSON_AddNumberToObject(m, "carry_bytes_total", (double)mp.carry_total);
        cJSON_AddNumberToObject(m, "kv_bytes_per_token", mp.kv_bytes_per_token);
        cJSON_AddNumberToObject(m, "kv_bytes_per_token_bf16", mp.kv_bytes_per_token_bf16);
        if (w) {
            cJSON *lw = cJSON_AddObjectToObject(j, "weights");
            cJSON_AddNumberToObject(lw, "tensors", inf_weights_count(w));
            cJSON_AddNumberToObject(lw, "mtp_layers_loaded", mtp_loaded);
            if (generate) {
                char hex[20];
                snprintf(hex, sizeof hex, "%016" PRIx64, sum);
                cJSON_AddStringToObject(lw, "checksum_fnv1a64", hex);
                cJSON_AddNumberToObject(lw, "generate_seconds", gen_s);
            }
        }
        char *s = cJSON_PrintUnformatted(j);
        if (s)
            puts(s);
        free(s);
        cJSON_Delete(j);
        inf_weights_free(w);
        return 0;
    }

    char a[64], b[64], c2[64];
    printf("model      %s\n", source);
    printf("shape      vocab %d, hidden %d, %d layers + %d MTP, %d heads x %d (rope %d), q_lora %d, "
           "o_groups %d x %d\n",
           cfg.vocab_size, cfg.hidden_size, L, M, cfg.num_attention_heads, cfg.head_dim, cfg.qk_rope_head_dim,
           cfg.q_lora_rank, cfg.o_groups, cfg.o_lora_rank);
    printf("moe        %d routed experts (%s) + %d shared, top-%d, intermediate %d, %s, route scale %g, "
           "swiglu limit %g, %d hash layers\n",
           cfg.n_routed_experts, cfg.expert_dtype == INF_EXPERT_FP4 ? "FP4" : "FP8", cfg.n_shared_experts,
           cfg.num_experts_per_tok, cfg.moe_intermediate_size, score_name(cfg.scoring_func),
           cfg.routed_scaling_factor, cfg.swiglu_limit, cfg.num_hash_layers);
    printf("attention  window %d, indexer %d heads x %d top-%d, mHC %d streams (%d Sinkhorn iterations)\n",
           cfg.sliding_window, cfg.index_n_heads, cfg.index_head_dim, cfg.index_topk, cfg.hc_mult,
           cfg.hc_sinkhorn_iters);
    printf("rope       theta %g (sliding, MTP); compressed layers theta %g, YaRN factor %g (original %lld, "
           "beta %g/%g)\n",
           cfg.rope_theta, cfg.compress_rope_theta, cfg.rope_factor, cfg.original_max_position_embeddings,
           cfg.beta_fast, cfg.beta_slow);
    printf("schedule   %d sliding, %d CSA, %d HCA layers; %d MTP block(s)\n", mp.n_sliding, mp.n_csa, mp.n_hca,
           mp.n_mtp);
    for (int i = 0; i < L + M; i++) {
        if (i < L)
            printf("  layer %-3d %-8s %s\n", i, kind_name(cfg.compress_ratios[i]),
                   inf_config_is_hash_layer(&cfg, i) ? "hash routing" : "learned routing");
        else
            printf("  mtp.%-5d %-8s %s\n", i - L, kind_name(cfg.compress_ratios[i]), "learned routing");
    }
    count_str(a, sizeof a, pc.total);
    count_str(b, sizeof b, pc.backbone);
    count_str(c2, sizeof c2, pc.mtp);
    printf("params     total %s = backbone %s + MTP %s\n", a, b, c2);
    count_str(a, sizeof a, pc.active);
    count_str(b, sizeof b, pc.active_no_embed);
    count_str(c2, sizeof c2, pc.active_mtp);
    printf("active     %s per token (without the embedding table %s; with MTP %s)\n", a, b, c2);
    human(a, sizeof a, (double)mp.weight_bytes);
    human(b, sizeof b, (double)mp.weight_bytes_mtp);
    printf("weights    %s stored (MTP %s):", a, b);
    for (int d = 0; d < INF_DT_COUNT; d++)
        if (mp.weight_bytes_by_dtype[d]) {
            human(a, sizeof a, (double)mp.weight_bytes_by_dtype[d]);
            printf(" %s %s;", inf_dtype_name((enum inf_dtype)d), a);
        }
    printf("\n");
    human(a, sizeof a, (double)mp.decode_read_bytes);
    printf("decode     %s of weights read per token (backbone, selected experts only)\n", a);
    printf("kv plan    at context %lld; packed entries %d B main + %d B indexer (BF16: %d + %d)\n", mp.context,
           mp.main_entry_packed, mp.index_entry_fp4, mp.main_entry_bf16, mp.index_entry_bf16);
    human(a, sizeof a, (double)mp.window_bytes);
    human(b, sizeof b, (double)mp.window_bytes_bf16);
    printf("  sliding layer  %s (BF16 %s)\n", a, b);
    human(a, sizeof a, (double)mp.csa_bytes);
    human(b, sizeof b, (double)mp.csa_bytes_bf16);
    human(c2, sizeof c2, (double)mp.carry_csa);
    printf("  CSA layer      %s (BF16 %s) + carry %s\n", a, b, c2);
    human(a, sizeof a, (double)mp.hca_bytes);
    human(b, sizeof b, (double)mp.hca_bytes_bf16);
    human(c2, sizeof c2, (double)mp.carry_hca);
    printf("  HCA layer      %s (BF16 %s) + carry %s\n", a, b, c2);
    human(a, sizeof a, (double)mp.kv_total);
    human(b, sizeof b, (double)mp.kv_total_bf16);
    human(c2, sizeof c2, (double)mp.carry_total);
    printf("  all layers     %s (BF16 %s) + carry %s; %.0f B per token (BF16 %.0f B)\n", a, b, c2,
           mp.kv_bytes_per_token, mp.kv_bytes_per_token_bf16);
    if (w) {
        printf("loaded     %d tensors, %d MTP block(s)\n", inf_weights_count(w), mtp_loaded);
        if (generate)
            printf("generated  in %.2f s, checksum %016" PRIx64 "\n", gen_s, sum);
    }
    inf_weights_free(w);
    return 0;
}

int ctx_cmd_model(int argc, char **argv, const struct ctx_cli *cli)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        model_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "info"))
        return model_info(argc - 1, argv + 1, cli);
    if (!strcmp(argv[1], "score"))
        return ctx_model_score(argc - 1, argv + 1, cli);
    if (!strcmp(argv[1], "generate"))
        return ctx_model_generate(argc - 1, argv + 1, cli);
    fprintf(stderr, "ctx model: unknown subcommand \"%s\"\n", argv[1]);
    model_usage(stderr);
    return 2;
}
