/* config.json → struct inf_config. Two spellings are accepted: the Hugging Face root config
 * (hidden_size, num_hidden_layers, rope_scaling{...}) and the reference code's ModelArgs names
 * (dim, n_layers, rope_factor, ...; spec §2.2), told apart by which of hidden_size / dim is present.
 * Every field is read with its type checked, then inf_config_validate checks ranges and the
 * cross-field constraints the loader and the forward pass rely on. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "json.h"

/* The largest config.json we read: real ones are ~2 KB. */
#define CONFIG_MAX_BYTES ((size_t)1 << 20)

static int get_int(const cJSON *j, const char *field, bool required, long long def, long long lo,
                   long long hi, long long *out, const char *what, struct ctx_err *e)
{
    int64_t v;
    int rc = ctx_json_get_int(j, field, required, def, &v, what, e);
    if (rc)
        return rc;
    if (v < lo || v > hi)
        return ctx_err_set(e, CTX_EINVAL, "%s.%s = %lld is out of range [%lld, %lld]", what, field,
                           (long long)v, lo, hi);
    *out = v;
    return 0;
}

static int get_i(const cJSON *j, const char *field, bool required, int def, int lo, int hi, int *out,
                 const char *what, struct ctx_err *e)
{
    long long v = 0;
    int rc = get_int(j, field, required, def, lo, hi, &v, what, e);
    if (rc == 0)
        *out = (int)v;
    return rc;
}

static int get_pos_double(const cJSON *j, const char *field, bool required, double def, double *out,
                          const char *what, struct ctx_err *e)
{
    int rc = ctx_json_get_double(j, field, required, def, out, what, e);
    if (rc)
        return rc;
    if (!isfinite(*out) || *out <= 0)
        return ctx_err_set(e, CTX_EINVAL, "%s.%s = %g must be a positive finite number", what, field, *out);
    return 0;
}

static int parse_score(const char *s, enum inf_score_func *out)
{
    if (!strcmp(s, "softmax"))
        *out = INF_SCORE_SOFTMAX;
    else if (!strcmp(s, "sigmoid"))
        *out = INF_SCORE_SIGMOID;
    else if (!strcmp(s, "sqrtsoftplus"))
        *out = INF_SCORE_SQRTSOFTPLUS;
    else
        return -1;
    return 0;
}

static int parse_ratios(const cJSON *j, const char *what, struct inf_config *c, struct ctx_err *e)
{
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(j, "compress_ratios");
    if (!r)
        return ctx_err_set(e, CTX_EINVAL, "%s.compress_ratios is missing", what);
    if (!cJSON_IsArray(r))
        return ctx_err_set(e, CTX_EINVAL, "%s.compress_ratios must be an array", what);
    int n = cJSON_GetArraySize(r);
    int want = c->num_hidden_layers + c->num_nextn_predict_layers;
    if (n != want)
        return ctx_err_set(e, CTX_EINVAL,
                           "%s.compress_ratios has %d entries; expected %d (%d layers + %d MTP layers)",
                           what, n, want, c->num_hidden_layers, c->num_nextn_predict_layers);
    int i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, r)
    {
        if (!cJSON_IsNumber(it) || it->valuedouble != floor(it->valuedouble))
            return ctx_err_set(e, CTX_EINVAL, "%s.compress_ratios[%d] must be an integer", what, i);
        c->compress_ratios[i++] = (int)it->valuedouble;
    }
    return 0;
}

/* quantization_config (HF) must describe the one format this engine implements. */
static int check_quant(const cJSON *j, const char *what, struct ctx_err *e)
{
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(j, "quantization_config");
    if (!q)
        return 0;
    char ctx[256];
    snprintf(ctx, sizeof ctx, "%s.quantization_config", what);
    const char *s;
    int rc;
    if ((rc = ctx_json_get_string(q, "quant_method", false, "fp8", &s, ctx, e)))
        return rc;
    if (strcmp(s, "fp8"))
        return ctx_err_set(e, CTX_EUNSUPPORTED, "%s.quant_method \"%s\" is not supported (only fp8)", ctx, s);
    if ((rc = ctx_json_get_string(q, "fmt", false, "e4m3", &s, ctx, e)))
        return rc;
    if (strcmp(s, "e4m3"))
        return ctx_err_set(e, CTX_EUNSUPPORTED, "%s.fmt \"%s\" is not supported (only e4m3)", ctx, s);
    if ((rc = ctx_json_get_string(q, "scale_fmt", false, "ue8m0", &s, ctx, e)))
        return rc;
    if (strcmp(s, "ue8m0"))
        return ctx_err_set(e, CTX_EUNSUPPORTED, "%s.scale_fmt \"%s\" is not supported (only ue8m0)", ctx, s);
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(q, "weight_block_size");
    if (b) {
        if (!cJSON_IsArray(b) || cJSON_GetArraySize(b) != 2 || !cJSON_IsNumber(cJSON_GetArrayItem(b, 0)) ||
            !cJSON_IsNumber(cJSON_GetArrayItem(b, 1)) || cJSON_GetArrayItem(b, 0)->valuedouble != 128 ||
            cJSON_GetArrayItem(b, 1)->valuedouble != 128)
            return ctx_err_set(e, CTX_EUNSUPPORTED, "%s.weight_block_size must be [128, 128]", ctx);
    }
    return 0;
}

static int parse_hf(const cJSON *j, const char *what, struct inf_config *c, struct ctx_err *e)
{
    int rc;
    const int BIG = 1 << 30;
#define I(field, lo, hi) \
    if ((rc = get_i(j, #field, true, 0, lo, hi, &c->field, what, e))) return rc
#define IO(field, def, lo, hi) \
    if ((rc = get_i(j, #field, false, def, lo, hi, &c->field, what, e))) return rc
    I(vocab_size, 1, BIG);
    I(hidden_size, 1, BIG);
    I(num_hidden_layers, 1, INF_MAX_LAYERS);
    I(num_hash_layers, 0, INF_MAX_LAYERS);
    I(num_attention_heads, 1, BIG);
    I(head_dim, 1, BIG);
    I(qk_rope_head_dim, 0, BIG);
    I(q_lora_rank, 1, BIG);
    I(o_groups, 1, BIG);
    I(o_lora_rank, 1, BIG);
    I(n_routed_experts, 1, 1 << 16);
    I(n_shared_experts, 0, 64);
    I(num_experts_per_tok, 1, 1 << 16);
    I(moe_intermediate_size, 1, BIG);
    I(sliding_window, 1, BIG);
    I(index_n_heads, 1, BIG);
    I(index_head_dim, 1, BIG);
    I(index_topk, 1, BIG);
    I(hc_mult, 1, 64);
    I(hc_sinkhorn_iters, 1, 1 << 16);
    IO(num_nextn_predict_layers, 0, 0, 8);
    IO(bos_token_id, 0, 0, BIG);
    IO(eos_token_id, 1, 0, BIG);
#undef I
#undef IO
    long long nkv;
    if ((rc = get_int(j, "num_key_value_heads", false, 1, 0, BIG, &nkv, what, e)))
        return rc;
    if (nkv != 1)
        return ctx_err_set(e, CTX_EUNSUPPORTED, "%s.num_key_value_heads = %lld; DeepSeek V4 has exactly 1",
                           what, nkv);
    if ((rc = get_pos_double(j, "rms_norm_eps", true, 0, &c->rms_norm_eps, what, e)) ||
        (rc = get_pos_double(j, "hc_eps", true, 0, &c->hc_eps, what, e)) ||
        (rc = get_pos_double(j, "routed_scaling_factor", true, 0, &c->routed_scaling_factor, what, e)) ||
        (rc = get_pos_double(j, "swiglu_limit", true, 0, &c->swiglu_limit, what, e)) ||
        (rc = get_pos_double(j, "rope_theta", true, 0, &c->rope_theta, what, e)) ||
        (rc = get_pos_double(j, "compress_rope_theta", true, 0, &c->compress_rope_theta, what, e)))
        return rc;
    bool norm_topk;
    if ((rc = ctx_json_get_bool(j, "norm_topk_prob", false, true, &norm_topk, what, e)))
        return rc;
    c->norm_topk_prob = norm_topk;

    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(j, "rope_scaling");
    if (!rs)
        return ctx_err_set(e, CTX_EINVAL, "%s.rope_scaling is missing", what);
    if (!cJSON_IsObject(rs))
        return ctx_err_set(e, CTX_EINVAL, "%s.rope_scaling must be an object", what);
    char ctx[256];
    snprintf(ctx, sizeof ctx, "%s.rope_scaling", what);
    const char *type = NULL, *rtype = NULL;
    if ((rc = ctx_json_get_string(rs, "type", false, NULL, &type, ctx, e)) ||
        (rc = ctx_json_get_string(rs, "rope_type", false, NULL, &rtype, ctx, e)))
        return rc;
    if (!type)
        type = rtype;
    if (!type)
        return ctx_err_set(e, CTX_EINVAL, "%s.type is missing", ctx);
    if (strcmp(type, "yarn"))
        return ctx_err_set(e, CTX_EUNSUPPORTED, "%s.type \"%s\" is not supported (only yarn)", ctx, type);
    if ((rc = get_pos_double(rs, "factor", true, 0, &c->rope_factor, ctx, e)) ||
        (rc = get_pos_double(rs, "beta_fast", true, 0, &c->beta_fast, ctx, e)) ||
        (rc = get_pos_double(rs, "beta_slow", true, 0, &c->beta_slow, ctx, e)) ||
        (rc = get_int(rs, "original_max_position_embeddings", true, 0, 1, 1LL << 40,
                      &c->original_max_position_embeddings, ctx, e)))
        return rc;
    if ((rc = get_int(j, "max_position_embeddings", false,
                      (long long)(c->original_max_position_embeddings * c->rope_factor), 1, 1LL << 50,
                      &c->max_position_embeddings, what, e)))
        return rc;

    const char *sf;
    if ((rc = ctx_json_get_string(j, "scoring_func", true, NULL, &sf, what, e)))
        return rc;
    if (parse_score(sf, &c->scoring_func))
        return ctx_err_set(e, CTX_EINVAL, "%s.scoring_func \"%s\" is not one of softmax, sigmoid, sqrtsoftplus",
                           what, sf);
    const char *tm;
    if ((rc = ctx_json_get_string(j, "topk_method", false, "noaux_tc", &tm, what, e)))
        return rc;
    if (strcmp(tm, "noaux_tc"))
        return ctx_err_set(e, CTX_EUNSUPPORTED, "%s.topk_method \"%s\" is not supported (only noaux_tc)", what, tm);
    /* The initial Flash revision has no expert_dtype: its experts are FP4 (spec §2.1). */
    const char *ed;
    if ((rc = ctx_json_get_string(j, "expert_dtype", false, "fp4", &ed, what, e)))
        return rc;
    if (!strcmp(ed, "fp4"))
        c->expert_dtype = INF_EXPERT_FP4;
    else if (!strcmp(ed, "fp8"))
        c->expert_dtype = INF_EXPERT_FP8;
    else
        return ctx_err_set(e, CTX_EINVAL, "%s.expert_dtype \"%s\" is not fp4 or fp8", what, ed);
    bool tie;
    if ((rc = ctx_json_get_bool(j, "tie_word_embeddings", false, false, &tie, what, e)))
        return rc;
    if (tie)
        return ctx_err_set(e, CTX_EUNSUPPORTED, "%s.tie_word_embeddings is true; V4 stores head separately", what);
    if ((rc = check_quant(j, what, e)))
        return rc;
    return parse_ratios(j, what, c, e);
}

/* The reference's inference/config.json (ModelArgs). Defaults are ModelArgs' own for the fields
 * the official file leaves out (norm_eps, hc_eps, n_mtp_layers, bos/eos). */
static int parse_ref(const cJSON *j, const char *what, struct inf_config *c, struct ctx_err *e)
{
    int rc;
    const int BIG = 1 << 30;
#define R(field, name, lo, hi) \
    if ((rc = get_i(j, name, true, 0, lo, hi, &c->field, what, e))) return rc
#define RO(field, name, def, lo, hi) \
    if ((rc = get_i(j, name, false, def, lo, hi, &c->field, what, e))) return rc
    R(vocab_size, "vocab_size", 1, BIG);
    R(hidden_size, "dim", 1, BIG);
    R(num_hidden_layers, "n_layers", 1, INF_MAX_LAYERS);
    R(num_hash_layers, "n_hash_layers", 0, INF_MAX_LAYERS);
    R(num_attention_heads, "n_heads", 1, BIG);
    R(head_dim, "head_dim", 1, BIG);
    R(qk_rope_head_dim, "rope_head_dim", 0, BIG);
    R(q_lora_rank, "q_lora_rank", 1, BIG);
    R(o_groups, "o_groups", 1, BIG);
    R(o_lora_rank, "o_lora_rank", 1, BIG);
    R(n_routed_experts, "n_routed_experts", 1, 1 << 16);
    R(n_shared_experts, "n_shared_experts", 0, 64);
    R(num_experts_per_tok, "n_activated_experts", 1, 1 << 16);
    R(moe_intermediate_size, "moe_inter_dim", 1, BIG);
    R(sliding_window, "window_size", 1, BIG);
    R(index_n_heads, "index_n_heads", 1, BIG);
    R(index_head_dim, "index_head_dim", 1, BIG);
    R(index_topk, "index_topk", 1, BIG);
    R(hc_mult, "hc_mult", 1, 64);
    R(hc_sinkhorn_iters, "hc_sinkhorn_iters", 1, 1 << 16);
    RO(num_nextn_predict_layers, "n_mtp_layers", 1, 0, 8);
    RO(bos_token_id, "bos_token_id", 0, 0, BIG);
    RO(eos_token_id, "eos_token_id", 1, 0, BIG);
#undef R
#undef RO
    if ((rc = get_pos_double(j, "norm_eps", false, 1e-6, &c->rms_norm_eps, what, e)) ||
        (rc = get_pos_double(j, "hc_eps", false, 1e-6, &c->hc_eps, what, e)) ||
        (rc = get_pos_double(j, "route_scale", true, 0, &c->routed_scaling_factor, what, e)) ||
        (rc = get_pos_double(j, "swiglu_limit", true, 0, &c->swiglu_limit, what, e)) ||
        (rc = get_pos_double(j, "rope_theta", true, 0, &c->rope_theta, what, e)) ||
        (rc = get_pos_double(j, "compress_rope_theta", true, 0, &c->compress_rope_theta, what, e)) ||
        (rc = get_pos_double(j, "rope_factor", true, 0, &c->rope_factor, what, e)) ||
        (rc = get_pos_double(j, "beta_fast", true, 0, &c->beta_fast, what, e)) ||
        (rc = get_pos_double(j, "beta_slow", true, 0, &c->beta_slow, what, e)) ||
        (rc = get_int(j, "original_seq_len", true, 0, 1, 1LL << 40, &c->original_max_position_embeddings,
                      what, e)))
        return rc;
    c->max_position_embeddings = (long long)(c->original_max_position_embeddings * c->rope_factor);
    c->norm_topk_prob = 1;
    const char *sf;
    if ((rc = ctx_json_get_string(j, "score_func", true, NULL, &sf, what, e)))
        return rc;
    if (parse_score(sf, &c->scoring_func))
        return ctx_err_set(e, CTX_EINVAL, "%s.score_func \"%s\" is not one of softmax, sigmoid, sqrtsoftplus",
                           what, sf);
    const char *s;
    if ((rc = ctx_json_get_string(j, "dtype", false, "fp8", &s, what, e)))
        return rc;
    if (strcmp(s, "fp8"))
        return ctx_err_set(e, CTX_EUNSUPPORTED, "%s.dtype \"%s\" is not supported (only fp8)", what, s);
    if ((rc = ctx_json_get_string(j, "scale_fmt", false, "ue8m0", &s, what, e)))
        return rc;
    if (strcmp(s, "ue8m0"))
        return ctx_err_set(e, CTX_EUNSUPPORTED, "%s.scale_fmt \"%s\" is not supported (only ue8m0)", what, s);
    if ((rc = ctx_json_get_string(j, "expert_dtype", false, "fp4", &s, what, e)))
        return rc;
    if (!strcmp(s, "fp4"))
        c->expert_dtype = INF_EXPERT_FP4;
    else if (!strcmp(s, "fp8"))
        c->expert_dtype = INF_EXPERT_FP8;
    else
        return ctx_err_set(e, CTX_EINVAL, "%s.expert_dtype \"%s\" is not fp4 or fp8", what, s);
    return parse_ratios(j, what, c, e);
}

int inf_config_from_json(const cJSON *j, const char *what, struct inf_config *c, struct ctx_err *e)
{
    if (!what)
        what = "config";
    if (!cJSON_IsObject(j))
        return ctx_err_set(e, CTX_EINVAL, "%s must be a JSON object", what);
    struct inf_config t;
    memset(&t, 0, sizeof t);
    int rc;
    if (cJSON_GetObjectItemCaseSensitive(j, "hidden_size")) {
        const char *mt;
        if ((rc = ctx_json_get_string(j, "model_type", false, "deepseek_v4", &mt, what, e)))
            return rc;
        if (strcmp(mt, "deepseek_v4"))
            return ctx_err_set(e, CTX_EUNSUPPORTED, "%s.model_type \"%s\" is not deepseek_v4", what, mt);
        rc = parse_hf(j, what, &t, e);
    } else if (cJSON_GetObjectItemCaseSensitive(j, "dim")) {
        rc = parse_ref(j, what, &t, e);
    } else {
        return ctx_err_set(e, CTX_EINVAL, "%s.hidden_size is missing (nor is it a reference config with dim)",
                           what);
    }
    if (rc)
        return rc;
    if ((rc = inf_config_validate(&t, what, e)))
        return rc;
    *c = t;
    return 0;
}

int inf_config_load(const char *path, struct inf_config *c, struct ctx_err *e)
{
    cJSON *j = ctx_json_read_file(path, CONFIG_MAX_BYTES, e);
    if (!j)
        return e ? e->code : CTX_EFORMAT;
    int rc = inf_config_from_json(j, path, c, e);
    cJSON_Delete(j);
    return rc;
}

static int is_pow2(long long v)
{
    return v > 0 && (v & (v - 1)) == 0;
}

int inf_config_validate(const struct inf_config *c, const char *what, struct ctx_err *e)
{
    if (!what)
        what = "config";
#define NEED(cond, ...) \
    do { if (!(cond)) return ctx_err_set(e, CTX_EINVAL, __VA_ARGS__); } while (0)
    NEED(c->vocab_size >= 2, "%s: vocab_size %d must be at least 2", what, c->vocab_size);
    NEED(c->num_hidden_layers >= 1 && c->num_hidden_layers <= INF_MAX_LAYERS,
         "%s: num_hidden_layers %d is out of range [1, %d]", what, c->num_hidden_layers, INF_MAX_LAYERS);
    NEED(c->num_nextn_predict_layers >= 0 && c->num_nextn_predict_layers <= 8,
         "%s: num_nextn_predict_layers %d is out of range [0, 8]", what, c->num_nextn_predict_layers);
    NEED(c->num_hash_layers >= 0 && c->num_hash_layers <= c->num_hidden_layers,
         "%s: num_hash_layers %d exceeds num_hidden_layers %d", what, c->num_hash_layers, c->num_hidden_layers);
    /* Every FP8/FP4 product quantises its input in 1×128 blocks along K, so every K must be a
     * multiple of 128; FP4 experts also pack pairs and scale blocks of 32. */
    NEED(c->hidden_size % 128 == 0, "%s: hidden_size %d must be a multiple of 128", what, c->hidden_size);
    NEED(c->q_lora_rank % 128 == 0, "%s: q_lora_rank %d must be a multiple of 128", what, c->q_lora_rank);
    NEED(c->moe_intermediate_size % 128 == 0, "%s: moe_intermediate_size %d must be a multiple of 128", what,
         c->moe_intermediate_size);
    NEED(c->num_attention_heads % c->o_groups == 0, "%s: num_attention_heads %d is not a multiple of o_groups %d",
         what, c->num_attention_heads, c->o_groups);
    NEED((long long)c->num_attention_heads * c->head_dim / c->o_groups % 128 == 0,
         "%s: num_attention_heads*head_dim/o_groups must be a multiple of 128", what);
    NEED((long long)c->o_groups * c->o_lora_rank % 128 == 0, "%s: o_groups*o_lora_rank must be a multiple of 128",
         what);
    NEED(c->qk_rope_head_dim % 2 == 0 && c->qk_rope_head_dim <= c->head_dim,
         "%s: qk_rope_head_dim %d must be even and at most head_dim %d", what, c->qk_rope_head_dim, c->head_dim);
    /* KV QDQ works on the non-RoPE dims in blocks of 64. */
    NEED((c->head_dim - c->qk_rope_head_dim) % 64 == 0, "%s: head_dim - qk_rope_head_dim (%d) must be a multiple of 64",
         what, c->head_dim - c->qk_rope_head_dim);
    /* The indexer's Hadamard needs a power of two; its FP4 QDQ works in blocks of 32; its head is
     * [nope | rope] with the model's rope width. */
    NEED(is_pow2(c->index_head_dim) && c->index_head_dim >= 32 && c->index_head_dim >= c->qk_rope_head_dim,
         "%s: index_head_dim %d must be a power of two >= 32 and >= qk_rope_head_dim", what, c->index_head_dim);
    NEED(c->num_experts_per_tok <= c->n_routed_experts, "%s: num_experts_per_tok %d exceeds n_routed_experts %d",
         what, c->num_experts_per_tok, c->n_routed_experts);
    NEED(c->n_shared_experts >= 0 && c->n_shared_experts <= 64, "%s: n_shared_experts %d out of range", what,
         c->n_shared_experts);
    NEED(c->hc_mult >= 1 && c->hc_mult <= 64, "%s: hc_mult %d out of range [1, 64]", what, c->hc_mult);
    NEED(c->hc_sinkhorn_iters >= 1, "%s: hc_sinkhorn_iters must be positive", what);
    NEED(c->sliding_window >= 1, "%s: sliding_window must be positive", what);
    NEED(c->index_topk >= 1, "%s: index_topk must be positive", what);
    NEED(c->bos_token_id >= 0 && c->bos_token_id < c->vocab_size, "%s: bos_token_id %d is not below vocab_size",
         what, c->bos_token_id);
    NEED(c->eos_token_id >= 0 && c->eos_token_id < c->vocab_size, "%s: eos_token_id %d is not below vocab_size",
         what, c->eos_token_id);
    NEED(c->rms_norm_eps > 0 && c->hc_eps > 0 && c->routed_scaling_factor > 0 && c->swiglu_limit > 0 &&
             c->rope_theta > 0 && c->compress_rope_theta > 0 && c->rope_factor > 0 && c->beta_fast > 0 &&
             c->beta_slow > 0 && c->original_max_position_embeddings > 0,
         "%s: eps, scaling, theta and rope_scaling values must be positive", what);
    NEED(c->scoring_func == INF_SCORE_SOFTMAX || c->scoring_func == INF_SCORE_SIGMOID ||
             c->scoring_func == INF_SCORE_SQRTSOFTPLUS, "%s: bad scoring_func", what);
    NEED(c->expert_dtype == INF_EXPERT_FP4 || c->expert_dtype == INF_EXPERT_FP8, "%s: bad expert_dtype", what);
    for (int i = 0; i < c->num_hidden_layers + c->num_nextn_predict_layers; i++) {
        int r = c->compress_ratios[i];
        NEED(r == 0 || r == 4 || r == 128, "%s: compress_ratios[%d] = %d; only 0 (sliding), 4 (CSA) and 128 (HCA) exist",
             what, i, r);
    }
    /* Both compressors keep 2×head_dim (CSA, overlap) or head_dim wide projections; the indexer's
     * compressor needs index_head_dim ≥ the rope part too (checked above). */
#undef NEED
    return 0;
}

/* ---- built-in configurations ---- */

static void base_common(struct inf_config *c)
{
    memset(c, 0, sizeof *c);
    c->vocab_size = 129280;
    c->head_dim = 512;
    c->qk_rope_head_dim = 64;
    c->n_shared_experts = 1;
    c->num_experts_per_tok = 6;
    c->sliding_window = 128;
    c->index_n_heads = 64;
    c->index_head_dim = 128;
    c->hc_mult = 4;
    c->hc_sinkhorn_iters = 20;
    c->num_nextn_predict_layers = 1;
    c->num_hash_layers = 3;
    c->bos_token_id = 0;
    c->eos_token_id = 1;
    c->rms_norm_eps = 1e-6;
    c->hc_eps = 1e-6;
    c->swiglu_limit = 10.0;
    c->rope_theta = 10000;
    c->compress_rope_theta = 160000;
    c->rope_factor = 16;
    c->beta_fast = 32;
    c->beta_slow = 1;
    c->original_max_position_embeddings = 65536;
    c->max_position_embeddings = 1048576;
    c->scoring_func = INF_SCORE_SQRTSOFTPLUS;
    c->expert_dtype = INF_EXPERT_FP4;
    c->norm_topk_prob = 1;
}

static void cfg_tiny(struct inf_config *c)
{
    static const int r[] = {0, 4, 128, 4, 128, 0, 0};
    base_common(c);
    c->vocab_size = 1024;
    c->hidden_size = 256;
    c->num_hidden_layers = 6;
    c->num_hash_layers = 2;
    c->num_attention_heads = 4;
    c->q_lora_rank = 128;
    c->o_groups = 2;
    c->o_lora_rank = 128;
    c->n_routed_experts = 8;
    c->num_experts_per_tok = 2;
    c->moe_intermediate_size = 256;
    c->index_n_heads = 4;
    c->index_topk = 16;
    c->routed_scaling_factor = 1.5;
    memcpy(c->compress_ratios, r, sizeof r);
}

static void cfg_mid(struct inf_config *c)
{
    base_common(c);
    c->hidden_size = 2048;
    c->num_hidden_layers = 12;
    c->num_attention_heads = 16;
    c->q_lora_rank = 512;
    c->o_groups = 4;
    c->o_lora_rank = 512;
    c->n_routed_experts = 64;
    c->moe_intermediate_size = 1024;
    c->index_n_heads = 16;
    c->index_topk = 256;
    c->routed_scaling_factor = 1.5;
    /* Flash's schedule pattern: two sliding layers, then CSA/HCA alternating; MTP sliding. */
    for (int i = 0; i < 12; i++)
        c->compress_ratios[i] = i < 2 ? 0 : (i % 2 == 0 ? 4 : 128);
    c->compress_ratios[12] = 0;
}

static void cfg_flash(struct inf_config *c)
{
    base_common(c);
    c->hidden_size = 4096;
    c->num_hidden_layers = 43;
    c->num_attention_heads = 64;
    c->q_lora_rank = 1024;
    c->o_groups = 8;
    c->o_lora_rank = 1024;
    c->n_routed_experts = 256;
    c->moe_intermediate_size = 2048;
    c->index_topk = 512;
    c->routed_scaling_factor = 1.5;
    for (int i = 0; i < 43; i++)
        c->compress_ratios[i] = i < 2 ? 0 : (i % 2 == 0 ? 4 : 128);
    c->compress_ratios[43] = 0;
}

static void cfg_pro(struct inf_config *c)
{
    base_common(c);
    c->hidden_size = 7168;
    c->num_hidden_layers = 61;
    c->num_attention_heads = 128;
    c->q_lora_rank = 1536;
    c->o_groups = 16;
    c->o_lora_rank = 1024;
    c->n_routed_experts = 384;
    c->moe_intermediate_size = 3072;
    c->index_topk = 1024;
    c->routed_scaling_factor = 2.5;
    for (int i = 0; i < 61; i++)
        c->compress_ratios[i] = i < 2 ? 128 : (i % 2 == 0 ? 4 : 128);
    c->compress_ratios[61] = 0;
}

static const char *const builtin_names[] = {"tiny", "mid", "flash", "pro", "flash-base", "pro-base", NULL};

const char *const *inf_config_builtin_names(void)
{
    return builtin_names;
}

int inf_config_builtin(const char *name, struct inf_config *c, struct ctx_err *e)
{
    if (!strcmp(name, "tiny"))
        cfg_tiny(c);
    else if (!strcmp(name, "mid"))
        cfg_mid(c);
    else if (!strcmp(name, "flash") || !strcmp(name, "flash-base"))
        cfg_flash(c);
    else if (!strcmp(name, "pro") || !strcmp(name, "pro-base"))
        cfg_pro(c);
    else
        return ctx_err_set(e, CTX_ENOTFOUND,
                           "no built-in config named \"%s\" (tiny, mid, flash, pro, flash-base, pro-base)", name);
    if (strstr(name, "-base"))
        c->expert_dtype = INF_EXPERT_FP8;
    return inf_config_validate(c, name, e);
}

int inf_config_resolve(const char *name_or_path, struct inf_config *c, struct ctx_err *e)
{
    for (int i = 0; builtin_names[i]; i++)
        if (!strcmp(name_or_path, builtin_names[i]))
            return inf_config_builtin(name_or_path, c, e);
    struct stat st;
    if (stat(name_or_path, &st) != 0)
        return ctx_err_set(e, CTX_ENOTFOUND,
                           "\"%s\" is neither a built-in config (tiny, mid, flash, pro, flash-base, pro-base) "
                           "nor a readable file or directory", name_or_path);
    if (S_ISDIR(st.st_mode)) {
        char p[4096];
        snprintf(p, sizeof p, "%s/config.json", name_or_path);
        return inf_config_load(p, c, e);
    }
    return inf_config_load(name_or_path, c, e);
}
