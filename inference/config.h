/* DeepSeek V4 model configuration: the root Hugging Face config.json (or the reference code's
 * inference/config.json ModelArgs names, spec §2.2) parsed into one validated struct. Every field
 * the engine needs is checked for presence, type and range; the error names the file and field. */
#ifndef INF_CONFIG_H
#define INF_CONFIG_H

#include <cjson/cJSON.h>

#include "err.h"

#define INF_MAX_LAYERS 128

enum inf_score_func { INF_SCORE_SOFTMAX, INF_SCORE_SIGMOID, INF_SCORE_SQRTSOFTPLUS };
enum inf_expert_dtype { INF_EXPERT_FP4, INF_EXPERT_FP8 };

struct inf_config {
    int vocab_size, hidden_size, num_hidden_layers, num_hash_layers, num_attention_heads, head_dim,
        qk_rope_head_dim, q_lora_rank, o_groups, o_lora_rank, n_routed_experts, n_shared_experts,
        num_experts_per_tok, moe_intermediate_size, sliding_window, index_n_heads, index_head_dim,
        index_topk, hc_mult, hc_sinkhorn_iters, num_nextn_predict_layers, bos_token_id, eos_token_id;
    double rms_norm_eps, hc_eps, routed_scaling_factor, swiglu_limit, rope_theta, compress_rope_theta;
    double rope_factor, beta_fast, beta_slow;
    long long original_max_position_embeddings;
    int compress_ratios[INF_MAX_LAYERS + 8]; /* num_hidden_layers + num_nextn_predict_layers entries */
    enum inf_score_func scoring_func;
    enum inf_expert_dtype expert_dtype;
    /* Extensions (E1): */
    int norm_topk_prob;                 /* 1: renormalise the selected routing weights */
    long long max_position_embeddings;  /* informational; original_max_position_embeddings × factor */
};

/* Parse a config.json file (root HF names or reference ModelArgs names). */
int inf_config_load(const char *path, struct inf_config *c, struct ctx_err *e);
/* Same from a parsed object; `what` names the source in messages (a path or "synthetic:mid"). */
int inf_config_from_json(const cJSON *j, const char *what, struct inf_config *c, struct ctx_err *e);

/* Cross-field checks (divisibility, ranges, schedule); inf_config_load/from_json call it. Callers
 * that build a struct by hand (tests, built-in configs) call it too. */
int inf_config_validate(const struct inf_config *c, const char *what, struct ctx_err *e);

/* Built-in configurations for benchmarks and synthetic weights: "tiny" (the shape of the
 * tests/fixtures/v4-tiny-a fixture), "mid" (hidden 2048, 12 layers, 64 experts top-6),
 * "flash" (V4-Flash, spec §2.1), "pro" (V4-Pro), plus "flash-base"/"pro-base" (FP8 experts).
 * Returns CTX_ENOTFOUND for an unknown name. */
int inf_config_builtin(const char *name, struct inf_config *c, struct ctx_err *e);
/* The names accepted by inf_config_builtin, NULL-terminated. */
const char *const *inf_config_builtin_names(void);
/* A built-in name, or else a path to a config.json. */
int inf_config_resolve(const char *name_or_path, struct inf_config *c, struct ctx_err *e);

/* Layer classes (spec §2.3). */
enum inf_layer_kind { INF_LAYER_SLIDING = 0, INF_LAYER_CSA = 4, INF_LAYER_HCA = 128 };
/* compress_ratios[layer] (layer may be an MTP index >= num_hidden_layers). */
static inline int inf_config_ratio(const struct inf_config *c, int layer) { return c->compress_ratios[layer]; }
/* 1 if layer routes by tid2eid (hash layer); MTP blocks never do. */
static inline int inf_config_is_hash_layer(const struct inf_config *c, int layer)
{
    return layer < c->num_hash_layers && layer < c->num_hidden_layers;
}

#endif
