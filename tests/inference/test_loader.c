/* The loader: scalar decoders, config parsing, the safetensors reader/writer, the tensor inventory,
 * the v4-tiny-a fixture (decoded values checked against an independent decode of the raw bytes),
 * synthetic weights, and one deliberately broken checkpoint per failure mode. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "ctx_config.h"
#include "json.h"
#include "pool.h"
#include "quant.h"
#include "safetensors.h"
#include "weights.h"

/* The libFuzzer target's entry (its LLVMFuzzerTestOneInput is compiled only under CTX_FUZZ_MAIN), so
 * that the nasty-input test below runs exactly what the fuzzer runs. */
#include "../fuzz/fuzz_safetensors.c"

static char fixture[4096];

static const char *fx(const char *name)
{
    static char buf[4][4200];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", fixture, name);
    return buf[k];
}

/* ---------------------------------------------------------------- helpers */

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

struct tmpdir {
    char path[256];
};

static void td_make(struct tmpdir *t)
{
    const char *base = getenv("TMPDIR");
    snprintf(t->path, sizeof t->path, "%s/ctx-loader-XXXXXX", base && *base ? base : "/tmp");
    assert_non_null(mkdtemp(t->path));
}

static void td_free(struct tmpdir *t)
{
    nftw(t->path, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static const char *td_file(const struct tmpdir *t, const char *name)
{
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", t->path, name);
    return buf[k];
}

static void write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static char *read_all(const char *path, size_t *n)
{
    char *buf;
    struct ctx_err e = {0};
    assert_int_equal(ctx_read_file(path, 0, &buf, n, &e), 0);
    return buf;
}

static const char *const fixture_files[] = {"config.json", "model.safetensors.index.json",
                                            "model-00001-of-00002.safetensors",
                                            "model-00002-of-00002.safetensors"};

/* A checkpoint dir whose files are symlinks to the fixture's, except those named in `skip`. */
static void td_checkpoint(struct tmpdir *t, const char *skip1, const char *skip2)
{
    td_make(t);
    for (size_t i = 0; i < sizeof fixture_files / sizeof *fixture_files; i++) {
        const char *f = fixture_files[i];
        if ((skip1 && !strcmp(f, skip1)) || (skip2 && !strcmp(f, skip2)))
            continue;
        assert_int_equal(symlink(fx(f), td_file(t, f)), 0);
    }
}

/* Rewrite a fixture shard into dir with edits: drop `drop`, and for tensor `edit` apply a new dtype
 * / shape (same byte size), and append `extra` (a small F32 tensor) when given. */
static void rewrite_shard(const char *src, const char *dst, const char *drop, const char *edit, int new_dtype,
                          int ndim, long long d0, long long d1, const char *extra)
{
    struct inf_st_file *f;
    struct ctx_err e = {0};
    assert_int_equal(inf_st_open(src, &f, &e), 0);
    int n = inf_st_count(f);
    struct inf_tensor *t = calloc((size_t)n + 1, sizeof *t);
    assert_non_null(t);
    int m = 0;
    for (int i = 0; i < n; i++) {
        const struct inf_tensor *x = inf_st_tensor(f, i);
        if (drop && !strcmp(x->name, drop))
            continue;
        t[m] = *x;
        if (edit && !strcmp(x->name, edit)) {
            if (new_dtype >= 0)
                t[m].dtype = (enum inf_dtype)new_dtype;
            if (ndim > 0) {
                t[m].ndim = ndim;
                t[m].shape[0] = d0;
                t[m].shape[1] = d1;
            }
        }
        m++;
    }
    static const float extra_data[4] = {1, 2, 3, 4};
    if (extra) {
        t[m].name = extra;
        t[m].dtype = INF_DT_F32;
        t[m].ndim = 1;
        t[m].shape[0] = 4;
        t[m].data = extra_data;
        t[m].nbytes = sizeof extra_data;
        m++;
    }
    int rc = inf_st_write(dst, t, m, &e);
    if (rc)
        fail_msg("inf_st_write: %s", e.msg);
    free(t);
    inf_st_close(f);
}

/* Rewrite the index with `tensor` removed, or (when `file` is given) mapped to `file`. */
static void rewrite_index(const char *dst, const char *tensor, const char *file)
{
    struct ctx_err e = {0};
    cJSON *j = ctx_json_read_file(fx("model.safetensors.index.json"), 0, &e);
    assert_non_null(j);
    cJSON *wm = cJSON_GetObjectItemCaseSensitive(j, "weight_map");
    if (file) {
        if (cJSON_GetObjectItemCaseSensitive(wm, tensor))
            cJSON_ReplaceItemInObjectCaseSensitive(wm, tensor, cJSON_CreateString(file));
        else
            cJSON_AddStringToObject(wm, tensor, file);
    } else {
        cJSON_DeleteItemFromObjectCaseSensitive(wm, tensor);
    }
    char *s = cJSON_Print(j);
    write_file(dst, s, strlen(s));
    free(s);
    cJSON_Delete(j);
}

static void expect_open_fails(const char *dir, int code, const char *needle1, const char *needle2)
{
    struct inf_weights *w = NULL;
    struct ctx_err e = {0};
    int rc = inf_weights_open(dir, &w, &e);
    if (rc != code)
        fail_msg("expected %s, got %s: %s", ctx_code_name(code), ctx_code_name(rc), e.msg);
    assert_null(w);
    if (needle1 && !strstr(e.msg, needle1))
        fail_msg("message \"%s\" does not name \"%s\"", e.msg, needle1);
    if (needle2 && !strstr(e.msg, needle2))
        fail_msg("message \"%s\" does not name \"%s\"", e.msg, needle2);
}

/* ---------------------------------------------------------------- quant */

/* An independent E4M3 decode by bit fields, in double. */
static double e4m3_ref(uint8_t b)
{
    int s = b >> 7, e = (b >> 3) & 15, m = b & 7;
    if (e == 15 && m == 7)
        return NAN;
    double v = e ? (1 + m / 8.0) * pow(2, e - 7) : m / 8.0 * pow(2, -6);
    return s ? -v : v;
}

static void test_quant_decoders(void **state)
{
    (void)state;
    for (int b = 0; b < 256; b++) {
        double r = e4m3_ref((uint8_t)b);
        float v = inf_e4m3_to_f32((uint8_t)b);
        if (isnan(r)) {
            assert_true(isnan(v) && isnan(inf_e4m3_table[b]));
        } else {
            assert_true((double)v == r);
            assert_true(inf_e4m3_table[b] == v);
            assert_int_equal(signbit(v) != 0, signbit(inf_e4m3_table[b]) != 0);
            /* the encoder inverts the decoder on every finite code (±0 keep their sign) */
            assert_int_equal(inf_f32_to_e4m3(v), b);
        }
        float s = inf_e8m0_to_f32((uint8_t)b);
        if (b == 255)
            assert_true(isnan(s) && isnan(inf_e8m0_table[b]));
        else {
            assert_true((double)s == pow(2, b - 127));
            assert_true(inf_e8m0_table[b] == s);
        }
    }
    assert_true(inf_e4m3_to_f32(0x7e) == 448.0f);
    assert_true(inf_e4m3_to_f32(0xfe) == -448.0f);
    assert_true(inf_e4m3_to_f32(0x01) == ldexpf(1, -9));
    assert_true(inf_e4m3_to_f32(0x08) == ldexpf(1, -6));
    assert_true(inf_e4m3_to_f32(0x38) == 1.0f);
    assert_true(inf_e8m0_to_f32(127) == 1.0f);
    assert_true(inf_e8m0_to_f32(0) == ldexpf(1, -127));
    /* e4m3 encoder: RNE between 1 and 1.125, saturation, tiny values */
    assert_int_equal(inf_f32_to_e4m3(1.0625f), 0x38);   /* tie → even mantissa (1.0) */
    assert_int_equal(inf_f32_to_e4m3(1.1875f), 0x3a);   /* tie between 1.125 and 1.25 → 1.25 */
    assert_int_equal(inf_f32_to_e4m3(1000.0f), 0x7e);
    assert_int_equal(inf_f32_to_e4m3(-1000.0f), 0xfe);
    assert_int_equal(inf_f32_to_e4m3(ldexpf(1, -11)), 0x00); /* 2^-11 < half of 2^-9 */
    /* e2m1: table, nibble masking, encoder RNE */
    static const float e2m1[8] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6};
    for (int c = 0; c < 16; c++) {
        float v = inf_e2m1_to_f32((uint8_t)c);
        assert_true(v == (c & 8 ? -e2m1[c & 7] : e2m1[c & 7]));
        assert_true(inf_e2m1_to_f32((uint8_t)(c | 0xf0)) == v); /* only the low nibble counts */
        assert_int_equal(inf_f32_to_e2m1(v), c);
    }
    assert_int_equal(inf_f32_to_e2m1(0.25f), 0);  /* tie → 0 */
    assert_int_equal(inf_f32_to_e2m1(0.75f), 2);  /* tie → 1.0 */
    assert_int_equal(inf_f32_to_e2m1(2.5f), 4);   /* tie → 2 */
    assert_int_equal(inf_f32_to_e2m1(5.0f), 6);   /* tie → 4 */
    assert_int_equal(inf_f32_to_e2m1(100.0f), 7);
    assert_int_equal(inf_f32_to_e2m1(-3.2f), 8 | 5);
    /* bf16 RNE */
    assert_int_equal(inf_f32_to_bf16(1.0f), 0x3f80);
    assert_int_equal(inf_f32_to_bf16(1.0f + ldexpf(1, -8)), 0x3f80);                 /* tie → even */
    assert_int_equal(inf_f32_to_bf16(1.0f + 3 * ldexpf(1, -8)), 0x3f82);             /* tie → even (up) */
    assert_int_equal(inf_f32_to_bf16(1.0f + ldexpf(1, -8) + ldexpf(1, -20)), 0x3f81); /* above the tie */
    assert_int_equal(inf_f32_to_bf16(-2.0f), 0xc000);
    assert_int_equal(inf_f32_to_bf16(INFINITY), 0x7f80);
    assert_int_equal(inf_f32_to_bf16(3.4028235e38f), 0x7f80); /* rounds up past the largest bf16 */
    assert_true(isnan(inf_bf16_to_f32(inf_f32_to_bf16(NAN))));
    assert_true(inf_bf16_to_f32(0x3de2) == 0.1103515625f);
    assert_true(inf_bf16_round(3.14159265f) == 3.140625f);
    for (uint32_t h = 0; h < 0x10000; h += 7) {
        float f = inf_bf16_to_f32((uint16_t)h);
        if (!isnan(f))
            assert_int_equal(inf_f32_to_bf16(f), h);
    }
}

/* ---------------------------------------------------------------- config */

static void assert_config_equal(const struct inf_config *a, const struct inf_config *b)
{
#define F(x) assert_true(a->x == b->x)
    F(vocab_size); F(hidden_size); F(num_hidden_layers); F(num_hash_layers); F(num_attention_heads);
    F(head_dim); F(qk_rope_head_dim); F(q_lora_rank); F(o_groups); F(o_lora_rank); F(n_routed_experts);
    F(n_shared_experts); F(num_experts_per_tok); F(moe_intermediate_size); F(sliding_window);
    F(index_n_heads); F(index_head_dim); F(index_topk); F(hc_mult); F(hc_sinkhorn_iters);
    F(num_nextn_predict_layers); F(bos_token_id); F(eos_token_id); F(rms_norm_eps); F(hc_eps);
    F(routed_scaling_factor); F(swiglu_limit); F(rope_theta); F(compress_rope_theta); F(rope_factor);
    F(beta_fast); F(beta_slow); F(original_max_position_embeddings); F(scoring_func); F(expert_dtype);
    F(norm_topk_prob); F(max_position_embeddings);
#undef F
    assert_memory_equal(a->compress_ratios, b->compress_ratios,
                        sizeof(int) * (size_t)(a->num_hidden_layers + a->num_nextn_predict_layers));
}

static void test_config_fixture(void **state)
{
    (void)state;
    struct inf_config c, b;
    struct ctx_err e = {0};
    assert_int_equal(inf_config_load(fx("config.json"), &c, &e), 0);
    assert_int_equal(c.vocab_size, 1024);
    assert_int_equal(c.hidden_size, 256);
    assert_int_equal(c.num_hidden_layers, 6);
    assert_int_equal(c.num_hash_layers, 2);
    assert_int_equal(c.num_attention_heads, 4);
    assert_int_equal(c.head_dim, 512);
    assert_int_equal(c.qk_rope_head_dim, 64);
    assert_int_equal(c.q_lora_rank, 128);
    assert_int_equal(c.o_groups, 2);
    assert_int_equal(c.o_lora_rank, 128);
    assert_int_equal(c.n_routed_experts, 8);
    assert_int_equal(c.num_experts_per_tok, 2);
    assert_int_equal(c.moe_intermediate_size, 256);
    assert_int_equal(c.index_n_heads, 4);
    assert_int_equal(c.index_topk, 16);
    assert_int_equal(c.num_nextn_predict_layers, 1);
    assert_int_equal(c.scoring_func, INF_SCORE_SQRTSOFTPLUS);
    assert_int_equal(c.expert_dtype, INF_EXPERT_FP4);
    assert_true(c.routed_scaling_factor == 1.5 && c.swiglu_limit == 10.0 && c.rope_factor == 16);
    assert_true(c.rope_theta == 10000 && c.compress_rope_theta == 160000 && c.rms_norm_eps == 1e-6);
    assert_int_equal(c.original_max_position_embeddings, 65536);
    static const int ratios[7] = {0, 4, 128, 4, 128, 0, 0};
    assert_memory_equal(c.compress_ratios, ratios, sizeof ratios);
    /* the built-in "tiny" is the fixture's config */
    assert_int_equal(inf_config_builtin("tiny", &b, &e), 0);
    assert_config_equal(&b, &c);
    assert_int_equal(inf_config_builtin("nonesuch", &b, &e), CTX_ENOTFOUND);
    assert_non_null(strstr(e.msg, "nonesuch"));
}

/* The reference's inference/config.json (V4-Flash, as published) parses to the built-in "flash". */
static void test_config_reference_names(void **state)
{
    (void)state;
    static const char *ref =
        "{\"vocab_size\": 129280, \"dim\": 4096, \"moe_inter_dim\": 2048, \"n_layers\": 43, \"n_hash_layers\": 3,"
        " \"n_heads\": 64, \"n_routed_experts\": 256, \"n_shared_experts\": 1, \"n_activated_experts\": 6,"
        " \"score_func\": \"sqrtsoftplus\", \"route_scale\": 1.5, \"swiglu_limit\": 10.0, \"q_lora_rank\": 1024,"
        " \"head_dim\": 512, \"rope_head_dim\": 64, \"o_groups\": 8, \"o_lora_rank\": 1024, \"window_size\": 128,"
        " \"original_seq_len\": 65536, \"rope_theta\": 10000, \"rope_factor\": 16, \"beta_fast\": 32,"
        " \"beta_slow\": 1, \"index_n_heads\": 64, \"index_head_dim\": 128, \"index_topk\": 512, \"hc_mult\": 4,"
        " \"hc_sinkhorn_iters\": 20, \"dtype\": \"fp8\", \"scale_fmt\": \"ue8m0\", \"expert_dtype\": \"fp4\","
        " \"compress_rope_theta\": 160000, \"compress_ratios\": [0, 0, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4,"
        " 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4,"
        " 128, 4, 128, 4, 0]}";
    struct ctx_err e = {0};
    cJSON *j = ctx_json_parse(ref, strlen(ref), "ref", &e);
    assert_non_null(j);
    struct inf_config c, f;
    int rc = inf_config_from_json(j, "inference/config.json", &c, &e);
    if (rc)
        fail_msg("%s", e.msg);
    cJSON_Delete(j);
    assert_int_equal(inf_config_builtin("flash", &f, &e), 0);
    assert_config_equal(&c, &f);
}

static void config_expect(const char *json, int code, const char *needle)
{
    struct tmpdir t;
    td_make(&t);
    const char *p = td_file(&t, "config.json");
    write_file(p, json, strlen(json));
    struct inf_config c;
    struct ctx_err e = {0};
    int rc = inf_config_load(p, &c, &e);
    if (rc != code)
        fail_msg("expected %s, got %s: %s", ctx_code_name(code), ctx_code_name(rc), e.msg);
    if (!strstr(e.msg, needle))
        fail_msg("message \"%s\" does not name \"%s\"", e.msg, needle);
    assert_non_null(strstr(e.msg, "config.json"));
    td_free(&t);
}

/* The fixture's config with `field` replaced by `value` (NULL: removed). */
static char *config_with(const char *field, const char *value)
{
    struct ctx_err e = {0};
    cJSON *j = ctx_json_read_file(fx("config.json"), 0, &e);
    assert_non_null(j);
    cJSON_DeleteItemFromObjectCaseSensitive(j, field);
    if (value) {
        cJSON *v = cJSON_Parse(value);
        assert_non_null(v);
        cJSON_AddItemToObject(j, field, v);
    }
    char *s = cJSON_Print(j);
    cJSON_Delete(j);
    return s;
}

static void test_config_errors(void **state)
{
    (void)state;
    config_expect("{ \"hidden_size\": 256, oops }", CTX_EFORMAT, "invalid JSON");
    config_expect("[1, 2]", CTX_EINVAL, "object");
    struct {
        const char *field, *value;
        int code;
        const char *needle;
    } cases[] = {
        {"num_attention_heads", NULL, CTX_EINVAL, "num_attention_heads is missing"},
        {"vocab_size", "\"1024\"", CTX_EINVAL, "vocab_size must be a number"},
        {"hidden_size", "256.5", CTX_EINVAL, "hidden_size must be an integer"},
        {"hidden_size", "200", CTX_EINVAL, "hidden_size 200"},
        {"o_groups", "3", CTX_EINVAL, "o_groups"},
        {"num_experts_per_tok", "9", CTX_EINVAL, "num_experts_per_tok"},
        {"compress_ratios", "[0, 4, 128]", CTX_EINVAL, "compress_ratios has 3 entries"},
        {"compress_ratios", "[0, 4, 128, 4, 128, 0, 5]", CTX_EINVAL, "compress_ratios[6] = 5"},
        {"compress_ratios", "\"x\"", CTX_EINVAL, "compress_ratios must be an array"},
        {"scoring_func", "\"relu\"", CTX_EINVAL, "scoring_func"},
        {"expert_dtype", "\"fp16\"", CTX_EINVAL, "expert_dtype"},
        {"rope_scaling", NULL, CTX_EINVAL, "rope_scaling is missing"},
        {"rope_scaling", "{\"type\": \"yarn\", \"factor\": 16, \"beta_fast\": 32, \"beta_slow\": 1}", CTX_EINVAL,
         "original_max_position_embeddings is missing"},
        {"rms_norm_eps", "-1", CTX_EINVAL, "rms_norm_eps"},
        {"num_key_value_heads", "2", CTX_EUNSUPPORTED, "num_key_value_heads"},
        {"model_type", "\"llama\"", CTX_EUNSUPPORTED, "model_type"},
        {"quantization_config", "{\"quant_method\": \"fp8\", \"fmt\": \"e5m2\"}", CTX_EUNSUPPORTED, "fmt"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *s = config_with(cases[i].field, cases[i].value);
        config_expect(s, cases[i].code, cases[i].needle);
        free(s);
    }
}

/* ---------------------------------------------------------------- inventory and counts */

static void census(const struct inf_config *c, int *n, long long by_dt[INF_DT_COUNT])
{
    struct inf_tensor_spec *inv;
    struct ctx_err e = {0};
    assert_int_equal(inf_weights_inventory(c, &inv, n, &e), 0);
    memset(by_dt, 0, sizeof(long long) * INF_DT_COUNT);
    for (int i = 0; i < *n; i++)
        by_dt[inv[i].dtype]++;
    free(inv);
}

/* The inventory reproduces the audited V4 checkpoints (spec §2.4, §3.2): tensor counts, dtype
 * census, parameter counts and payload bytes. */
static void test_inventory_real_models(void **state)
{
    (void)state;
    struct inf_config c;
    struct ctx_err e = {0};
    int n;
    long long dt[INF_DT_COUNT];
    assert_int_equal(inf_config_builtin("flash", &c, &e), 0);
    census(&c, &n, dt);
    assert_int_equal(n, 69187);
    assert_int_equal(dt[INF_DT_BF16], 433);
    assert_int_equal(dt[INF_DT_F32], 417);
    assert_int_equal(dt[INF_DT_F8_E4M3], 375);
    assert_int_equal(dt[INF_DT_F8_E8M0], 34167);
    assert_int_equal(dt[INF_DT_I64], 3);
    assert_int_equal(dt[INF_DT_I8], 33792);
    struct inf_param_count p;
    assert_int_equal(inf_params_count(&c, &p, &e), 0);
    assert_int_equal(p.backbone, 284332240471LL);
    assert_int_equal(p.mtp, 6610048891LL);
    assert_int_equal(p.total, 290942289362LL);
    assert_int_equal(p.active, 13799632471LL);
    assert_int_equal(p.active_no_embed, 13270101591LL);
    assert_int_equal(p.active_mtp, 14118225362LL);
    struct inf_memory_plan m;
    assert_int_equal(inf_memory_plan(&c, 1048576, &m, &e), 0);
    assert_int_equal(m.weight_bytes, 159609485896LL);
    assert_int_equal(m.main_entry_packed, 584);
    assert_int_equal(m.index_entry_fp4, 68);
    assert_int_equal(m.n_sliding, 2);
    assert_int_equal(m.n_csa, 21);
    assert_int_equal(m.n_hca, 20);
    assert_int_equal(m.carry_csa, 80 * 1024);
    assert_int_equal(m.carry_hca, 512 * 1024);

    assert_int_equal(inf_config_builtin("pro", &c, &e), 0);
    census(&c, &n, dt);
    assert_int_equal(n, 145116);
    assert_int_equal(dt[INF_DT_BF16], 619);
    assert_int_equal(dt[INF_DT_F32], 590);
    assert_int_equal(dt[INF_DT_F8_E4M3], 528);
    assert_int_equal(dt[INF_DT_F8_E8M0], 71952);
    assert_int_equal(dt[INF_DT_I64], 3);
    assert_int_equal(dt[INF_DT_I8], 71424);
    assert_int_equal(inf_params_count(&c, &p, &e), 0);
    assert_int_equal(p.backbone, 1572997201763LL);
    assert_int_equal(p.mtp, 25840145979LL);
    assert_int_equal(p.active, 49779081059LL);
    assert_int_equal(p.active_mtp, 50648438174LL);
    assert_int_equal(inf_memory_plan(&c, 1048576, &m, &e), 0);
    assert_int_equal(m.weight_bytes, 864704792696LL);
    /* all-BF16 KV at 1M: 9.62 GiB (spec §6.4, matching vLLM) */
    assert_true(fabs((double)m.kv_total_bf16 / (1 << 30) - 9.62) < 0.01);
    assert_int_equal(m.n_hca, 31);
    assert_int_equal(m.n_csa, 30);

    /* Base checkpoints: FP8 experts with 128×128 scales */
    assert_int_equal(inf_config_builtin("flash-base", &c, &e), 0);
    census(&c, &n, dt);
    assert_int_equal(dt[INF_DT_I8], 0);
    assert_int_equal(dt[INF_DT_F8_E4M3], 375 + 33792);
}

/* ---------------------------------------------------------------- the fixture */

static void test_fixture_loads(void **state)
{
    (void)state;
    struct inf_weights *w;
    struct ctx_err e = {0};
    int rc = inf_weights_open(fixture, &w, &e);
    if (rc)
        fail_msg("%s", e.msg);
    assert_int_equal(inf_weights_count(w), 585);
    assert_int_equal(inf_weights_mtp_layers(w), 1);
    assert_int_equal(inf_weights_config(w)->hidden_size, 256);
    long long dt[INF_DT_COUNT] = {0};
    long long bytes = 0;
    for (int i = 0; i < inf_weights_count(w); i++) {
        const struct inf_tensor *t = inf_weights_tensor(w, i);
        dt[t->dtype]++;
        bytes += (long long)t->nbytes;
        if (i)
            assert_true(strcmp(inf_weights_tensor(w, i - 1)->name, t->name) < 0);
        assert_ptr_equal(inf_weights_get(w, t->name), t);
        /* data is aligned for its element type */
        assert_int_equal((uintptr_t)t->data % inf_dtype_size(t->dtype), 0);
    }
    assert_int_equal(dt[INF_DT_F8_E4M3], 60);
    assert_int_equal(dt[INF_DT_F8_E8M0], 228);
    assert_int_equal(dt[INF_DT_I8], 168);
    assert_int_equal(dt[INF_DT_BF16], 61);
    assert_int_equal(dt[INF_DT_F32], 66);
    assert_int_equal(dt[INF_DT_I64], 2);
    assert_int_equal(bytes, 19546566); /* the index's metadata.total_size */
    assert_null(inf_weights_get(w, "layers.0.attn.nonesuch"));
    assert_null(inf_weights_get(w, "layers.2.ffn.gate.tid2eid")); /* layer 2 routes by score */
    assert_non_null(inf_weights_getf(w, "layers.%d.ffn.gate.bias", 2));
    assert_null(inf_weights_get(w, "layers.0.attn.compressor.ape")); /* sliding-only layer */
    const struct inf_tensor *t = inf_weights_getf(w, "layers.%d.attn.indexer.wq_b.weight", 3);
    assert_non_null(t);
    assert_int_equal(t->shape[0], 512);
    assert_int_equal(t->shape[1], 128);
    /* wo_a: [o_groups*o_lora_rank, heads*head_dim/o_groups] */
    t = inf_weights_get(w, "layers.0.attn.wo_a.weight");
    assert_int_equal(t->dtype, INF_DT_F8_E4M3);
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->shape[0], 256);
    assert_int_equal(t->shape[1], 1024);
    inf_weights_free(w);
}

/* The mapped bytes are the file's bytes: compare with an independent read at the offset the header
 * gives (parsed here with cJSON, not with the loader). */
static void check_raw(const struct inf_weights *w, const char *file, const char *name)
{
    size_t n;
    char *buf = read_all(fx(file), &n);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--)
        hl = hl << 8 | (uint8_t)buf[i];
    cJSON *h = cJSON_ParseWithLength(buf + 8, (size_t)hl);
    assert_non_null(h);
    cJSON *o = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(h, name), "data_offsets");
    assert_non_null(o);
    size_t b0 = (size_t)cJSON_GetArrayItem(o, 0)->valuedouble, b1 = (size_t)cJSON_GetArrayItem(o, 1)->valuedouble;
    const struct inf_tensor *t = inf_weights_get(w, name);
    assert_non_null(t);
    assert_int_equal(t->nbytes, b1 - b0);
    assert_memory_equal(t->data, buf + 8 + hl + b0, b1 - b0);
    cJSON_Delete(h);
    free(buf);
}

static float fp8_at(const struct inf_weights *w, const char *mat, long long r, long long c)
{
    char nm[128];
    snprintf(nm, sizeof nm, "%s.weight", mat);
    const struct inf_tensor *t = inf_weights_get(w, nm);
    snprintf(nm, sizeof nm, "%s.scale", mat);
    const struct inf_tensor *s = inf_weights_get(w, nm);
    uint8_t q = ((const uint8_t *)t->data)[r * t->shape[1] + c];
    uint8_t sc = ((const uint8_t *)s->data)[(r / 128) * s->shape[1] + c / 128];
    return inf_e4m3_to_f32(q) * inf_e8m0_to_f32(sc);
}

static float fp4_at(const struct inf_weights *w, const char *mat, long long r, long long k)
{
    char nm[128];
    snprintf(nm, sizeof nm, "%s.weight", mat);
    const struct inf_tensor *t = inf_weights_get(w, nm);
    snprintf(nm, sizeof nm, "%s.scale", mat);
    const struct inf_tensor *s = inf_weights_get(w, nm);
    uint8_t byte = ((const uint8_t *)t->data)[r * t->shape[1] + k / 2];
    uint8_t nib = k % 2 ? byte >> 4 : byte & 15; /* low nibble = even K */
    return inf_e2m1_to_f32(nib) * inf_e8m0_to_f32(((const uint8_t *)s->data)[r * s->shape[1] + k / 32]);
}

static void test_fixture_decode_exact(void **state)
{
    (void)state;
    struct inf_weights *w;
    struct ctx_err e = {0};
    assert_int_equal(inf_weights_open(fixture, &w, &e), 0);
    check_raw(w, "model-00001-of-00002.safetensors", "layers.0.attn.wq_a.weight");
    check_raw(w, "model-00001-of-00002.safetensors", "layers.1.ffn.gate.tid2eid");
    check_raw(w, "model-00002-of-00002.safetensors", "hc_head_scale");
    check_raw(w, "model-00002-of-00002.safetensors", "mtp.0.ffn.experts.7.w2.scale");
    /* Values from an independent (numpy) decode of the raw fixture bytes. */
    const uint8_t *wq = inf_weights_get(w, "layers.0.attn.wq_a.weight")->data;
    assert_int_equal(wq[0], 0xf2);
    assert_int_equal(wq[1], 0x62);
    assert_true(fp8_at(w, "layers.0.attn.wq_a", 0, 0) == -0.078125f);
    assert_true(fp8_at(w, "layers.0.attn.wq_a", 0, 1) == 0.01953125f);
    assert_true(fp8_at(w, "layers.0.attn.wq_a", 0, 2) == 0.015625f);
    assert_true(fp8_at(w, "layers.0.attn.wq_a", 0, 3) == -0.03515625f);
    assert_true(fp8_at(w, "layers.0.attn.wq_a", 5, 200) == -0.1015625f); /* second tile: scale 2^-9 */
    assert_true(fp8_at(w, "layers.0.attn.wo_a", 130, 700) == 0.0146484375f);
    /* FP4: row 0 bytes 0x99 0x10 with scale 2^-2: K order is low nibble first */
    assert_true(fp4_at(w, "layers.0.ffn.experts.0.w1", 0, 0) == -0.125f);
    assert_true(fp4_at(w, "layers.0.ffn.experts.0.w1", 0, 1) == -0.125f);
    assert_true(fp4_at(w, "layers.0.ffn.experts.0.w1", 0, 2) == 0.0f);
    assert_true(fp4_at(w, "layers.0.ffn.experts.0.w1", 0, 3) == 0.125f);
    assert_true(fp4_at(w, "layers.0.ffn.experts.0.w1", 7, 37) == 0.5f); /* odd K, second scale block */
    /* wo_a dequantised to bf16 is exact (the reference does it at load) */
    const struct inf_tensor *woa = inf_weights_get(w, "layers.3.attn.wo_a.weight");
    for (long long r = 0; r < woa->shape[0]; r += 3)
        for (long long c = 0; c < woa->shape[1]; c += 5) {
            float v = fp8_at(w, "layers.3.attn.wo_a", r, c);
            assert_true(inf_bf16_round(v) == v);
        }
    /* tid2eid */
    const int64_t *t0 = inf_weights_get(w, "layers.0.ffn.gate.tid2eid")->data;
    const int64_t *t1 = inf_weights_get(w, "layers.1.ffn.gate.tid2eid")->data;
    static const int64_t r0[6] = {1, 6, 0, 3, 5, 0}, r1[6] = {4, 6, 6, 7, 7, 4};
    assert_memory_equal(t0, r0, sizeof r0);
    assert_memory_equal(t1, r1, sizeof r1);
    assert_int_equal(t0[2046], 2);
    assert_int_equal(t0[2047], 3);
    assert_int_equal(t1[2046], 7);
    assert_int_equal(t1[2047], 3);
    for (int i = 0; i < 2048; i += 2) { /* two distinct experts in range per token */
        assert_true(t0[i] >= 0 && t0[i] < 8 && t0[i + 1] >= 0 && t0[i + 1] < 8 && t0[i] != t0[i + 1]);
    }
    /* bf16 and f32 as stored */
    const uint16_t *emb = inf_weights_get(w, "embed.weight")->data;
    assert_int_equal(emb[0], 0x3de2);
    assert_int_equal(emb[1], 0xbe0a);
    const float *hs = inf_weights_get(w, "hc_head_scale")->data;
    uint32_t bits;
    memcpy(&bits, hs, 4);
    assert_int_equal(bits, 0x3f043934);
    inf_weights_free(w);
}

/* ---------------------------------------------------------------- synthetic */

static void test_synthetic(void **state)
{
    (void)state;
    struct inf_config c;
    struct ctx_err e = {0};
    assert_int_equal(inf_config_builtin("tiny", &c, &e), 0);
    struct ctx_pool *p2 = ctx_pool_new(2, &e);
    assert_non_null(p2);
    struct inf_weights *a, *b, *d, *f;
    assert_int_equal(inf_weights_synthetic_ex(&c, 7, NULL, &a, &e), 0);
    assert_int_equal(inf_weights_synthetic_ex(&c, 7, p2, &b, &e), 0);
    assert_int_equal(inf_weights_synthetic_ex(&c, 8, p2, &d, &e), 0);
    assert_int_equal(inf_weights_open(fixture, &f, &e), 0);
    ctx_pool_free(p2);
    /* same inventory as the fixture checkpoint */
    assert_int_equal(inf_weights_count(a), inf_weights_count(f));
    int differ = 0;
    for (int i = 0; i < inf_weights_count(a); i++) {
        const struct inf_tensor *x = inf_weights_tensor(a, i), *y = inf_weights_tensor(b, i),
                                *z = inf_weights_tensor(d, i), *r = inf_weights_tensor(f, i);
        assert_string_equal(x->name, r->name);
        assert_int_equal(x->dtype, r->dtype);
        assert_int_equal(x->ndim, r->ndim);
        assert_memory_equal(x->shape, r->shape, sizeof x->shape[0] * (size_t)x->ndim);
        assert_int_equal(x->nbytes, r->nbytes);
        /* deterministic per seed, whatever the thread count */
        assert_memory_equal(x->data, y->data, x->nbytes);
        differ += memcmp(x->data, z->data, x->nbytes) != 0;
        /* healthy codes: no NaN encodings anywhere */
        const uint8_t *q = x->data;
        if (x->dtype == INF_DT_F8_E4M3)
            for (size_t k = 0; k < x->nbytes; k++)
                assert_true((q[k] & 0x7f) != 0x7f);
        if (x->dtype == INF_DT_F8_E8M0)
            for (size_t k = 0; k < x->nbytes; k++)
                assert_true(q[k] != 0xff);
        if (x->dtype == INF_DT_BF16 || x->dtype == INF_DT_F32) {
            long long n = inf_tensor_numel(x);
            for (long long k = 0; k < n; k++) {
                float v = x->dtype == INF_DT_F32 ? ((const float *)x->data)[k]
                                                 : inf_bf16_to_f32(((const uint16_t *)x->data)[k]);
                assert_true(isfinite(v));
            }
        }
    }
    assert_true(differ > inf_weights_count(a) * 9 / 10);
    /* statistics like the fixture's: FP4 gate weights rms ~3.64/sqrt(D), FP8 scales within a few
     * exponents of the fixture's, tid2eid rows of distinct experts, norm weights near 1 */
    double ss = 0;
    for (long long r = 0; r < 256; r++)
        for (long long k = 0; k < 256; k++) {
            float v = fp4_at(a, "layers.2.ffn.experts.3.w1", r, k);
            ss += (double)v * v;
        }
    double rms = sqrt(ss / 65536), want = 3.64 / 16;
    if (rms < want * 0.7 || rms > want * 1.4)
        fail_msg("FP4 w1 rms %g, expected about %g", rms, want);
    ss = 0;
    for (long long r = 0; r < 128; r++)
        for (long long k = 0; k < 256; k++) {
            float v = fp8_at(a, "layers.0.attn.wq_a", r, k);
            ss += (double)v * v;
        }
    rms = sqrt(ss / (128 * 256));
    want = 1.3 / 16;
    if (rms < want * 0.5 || rms > want * 2.0)
        fail_msg("FP8 wq_a rms %g, expected about %g", rms, want);
    const uint8_t *sc = inf_weights_get(a, "layers.0.attn.wq_a.scale")->data;
    for (int k = 0; k < 2; k++)
        assert_true(sc[k] >= 127 - 14 && sc[k] <= 127 - 7); /* the fixture's 2^-14 … 2^-7 */
    const int64_t *tid = inf_weights_get(a, "layers.1.ffn.gate.tid2eid")->data;
    for (int i = 0; i < 1024; i++)
        assert_true(tid[2 * i] != tid[2 * i + 1] && tid[2 * i] >= 0 && tid[2 * i] < 8 && tid[2 * i + 1] >= 0 &&
                    tid[2 * i + 1] < 8);
    const uint16_t *nw = inf_weights_get(a, "norm.weight")->data;
    for (int i = 0; i < 256; i++) {
        float v = inf_bf16_to_f32(nw[i]);
        assert_true(v >= 0.74f && v <= 1.26f);
    }
    inf_weights_free(a);
    inf_weights_free(b);
    inf_weights_free(d);
    inf_weights_free(f);

    /* a config with FP8 experts and no MTP builds too */
    c.expert_dtype = INF_EXPERT_FP8;
    c.num_nextn_predict_layers = 0;
    assert_int_equal(inf_weights_synthetic_ex(&c, 1, NULL, &a, &e), 0);
    const struct inf_tensor *x = inf_weights_get(a, "layers.0.ffn.experts.0.w2.weight");
    assert_int_equal(x->dtype, INF_DT_F8_E4M3);
    assert_int_equal(x->shape[0], 256);
    assert_int_equal(x->shape[1], 256);
    x = inf_weights_get(a, "layers.0.ffn.experts.0.w2.scale");
    assert_int_equal(x->shape[0], 2);
    assert_int_equal(x->shape[1], 2);
    assert_null(inf_weights_get(a, "mtp.0.e_proj.weight"));
    inf_weights_free(a);
}

/* ---------------------------------------------------------------- safetensors writer/reader */

static void test_st_roundtrip(void **state)
{
    (void)state;
    struct tmpdir t;
    td_make(&t);
    static const float f[6] = {1, -2, 3.5f, 0, 1e-30f, 7};
    static const uint16_t h[3] = {0x3f80, 0xc000, 0x0001};
    static const int64_t q[2] = {-5, 1LL << 40};
    struct inf_tensor ts[4] = {
        {.name = "a", .dtype = INF_DT_F32, .ndim = 2, .shape = {2, 3}, .data = f, .nbytes = sizeof f},
        {.name = "b \"quoted\"", .dtype = INF_DT_BF16, .ndim = 1, .shape = {3}, .data = h, .nbytes = sizeof h},
        {.name = "scalar", .dtype = INF_DT_I64, .ndim = 0, .data = q, .nbytes = 8},
        {.name = "empty", .dtype = INF_DT_I8, .ndim = 2, .shape = {0, 4}, .data = NULL, .nbytes = 0},
    };
    struct ctx_err e = {0};
    const char *p = td_file(&t, "x.safetensors");
    assert_int_equal(inf_st_write(p, ts, 4, &e), 0);
    struct inf_st_file *sf;
    assert_int_equal(inf_st_open(p, &sf, &e), 0);
    assert_int_equal(inf_st_count(sf), 4);
    const struct inf_tensor *x = inf_st_find(sf, "a");
    assert_non_null(x);
    assert_int_equal(x->ndim, 2);
    assert_int_equal(x->shape[1], 3);
    assert_memory_equal(x->data, f, sizeof f);
    x = inf_st_find(sf, "b \"quoted\"");
    assert_non_null(x);
    assert_memory_equal(x->data, h, sizeof h);
    x = inf_st_find(sf, "scalar");
    assert_int_equal(x->ndim, 0);
    assert_memory_equal(x->data, q, 8);
    x = inf_st_find(sf, "empty");
    assert_int_equal(x->nbytes, 0);
    assert_null(inf_st_find(sf, "nonesuch"));
    inf_st_close(sf);
    /* the data section starts 8-aligned, and no temp file is left behind */
    size_t n;
    char *buf = read_all(p, &n);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--)
        hl = hl << 8 | (uint8_t)buf[i];
    assert_int_equal((8 + hl) % 8, 0);
    free(buf);
    int files = 0;
    struct stat st;
    char tmpname[600];
    snprintf(tmpname, sizeof tmpname, "%s.tmp", p);
    files += stat(tmpname, &st) == 0;
    assert_int_equal(files, 0);
    /* invalid input is refused before anything is written */
    ts[0].nbytes = 8;
    assert_int_equal(inf_st_write(td_file(&t, "y.safetensors"), ts, 1, &e), CTX_EINVAL);
    assert_non_null(strstr(e.msg, "tensor a"));
    assert_int_not_equal(stat(td_file(&t, "y.safetensors"), &st), 0);
    ts[0].nbytes = sizeof f;
    ts[1].name = "a";
    assert_int_equal(inf_st_write(td_file(&t, "y.safetensors"), ts, 2, &e), CTX_EINVAL);
    /* a missing file */
    assert_int_equal(inf_st_open(td_file(&t, "nope.safetensors"), &sf, &e), CTX_ENOTFOUND);
    assert_non_null(strstr(e.msg, "nope.safetensors"));
    td_free(&t);
}

/* A file made of an 8-byte length, a header text and `data_len` zero bytes. */
static void write_st_raw(const char *path, uint64_t claimed_len, const char *hdr, size_t data_len)
{
    size_t hl = strlen(hdr);
    size_t n = 8 + hl + data_len;
    uint8_t *b = calloc(1, n);
    assert_non_null(b);
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(claimed_len >> (8 * i));
    memcpy(b + 8, hdr, hl);
    write_file(path, b, n);
    free(b);
}

static void st_expect(const char *hdr, size_t data_len, int code, const char *needle)
{
    struct tmpdir t;
    td_make(&t);
    const char *p = td_file(&t, "bad.safetensors");
    write_st_raw(p, strlen(hdr), hdr, data_len);
    struct inf_st_file *f = NULL;
    struct ctx_err e = {0};
    int rc = inf_st_open(p, &f, &e);
    if (rc != code)
        fail_msg("header %s: expected %s, got %s: %s", hdr, ctx_code_name(code), ctx_code_name(rc), e.msg);
    if (code) {
        assert_null(f);
        assert_non_null(strstr(e.msg, "bad.safetensors"));
        if (needle && !strstr(e.msg, needle))
            fail_msg("message \"%s\" does not name \"%s\"", e.msg, needle);
    }
    inf_st_close(f);
    td_free(&t);
}

static void test_st_header_errors(void **state)
{
    (void)state;
    st_expect("{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, 0, NULL);
    st_expect("{\"t\":{\"dtype\":\"F8_E5M2\",\"shape\":[2],\"data_offsets\":[0,2]}}", 2, CTX_EFORMAT,
              "unknown dtype \"F8_E5M2\"");
    st_expect("{\"t\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 12, CTX_EFORMAT, "tensor t");
    st_expect("{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, CTX_EFORMAT, "truncated");
    st_expect("{\"a\":{\"dtype\":\"I8\",\"shape\":[4],\"data_offsets\":[0,4]},"
              "\"b\":{\"dtype\":\"I8\",\"shape\":[4],\"data_offsets\":[2,6]}}", 6, CTX_EFORMAT, "overlap");
    st_expect("{\"t\":{\"dtype\":\"I8\",\"shape\":[-1],\"data_offsets\":[0,1]}}", 1, CTX_EFORMAT, "shape[0]");
    st_expect("{\"t\":{\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[1,0]}}", 1, CTX_EFORMAT, "tensor t");
    st_expect("{\"t\":{\"dtype\":\"I8\",\"shape\":[1]}}", 1, CTX_EFORMAT, "data_offsets");
    st_expect("{\"t\":{\"dtype\":\"I8\",\"shape\":[1,1,1,1,1],\"data_offsets\":[0,1]}}", 1, CTX_EFORMAT,
              "dimensions");
    st_expect("{\"t\":{\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[0,1]}, \"t\":{\"dtype\":\"I8\","
              "\"shape\":[1],\"data_offsets\":[1,2]}}", 2, CTX_EFORMAT, "twice");
    st_expect("{\"t\": [1, 2", 0, CTX_EFORMAT, "invalid JSON");
    st_expect("[]", 0, CTX_EFORMAT, NULL);
    st_expect("{\"__metadata__\": {\"format\": 5}}", 0, CTX_EFORMAT, "__metadata__");
    /* oversized header length, and one longer than the file */
    struct tmpdir t;
    td_make(&t);
    struct inf_st_file *f = NULL;
    struct ctx_err e = {0};
    write_st_raw(td_file(&t, "big.safetensors"), (uint64_t)200 << 20, "{}", 0);
    assert_int_equal(inf_st_open(td_file(&t, "big.safetensors"), &f, &e), CTX_ERANGE);
    assert_non_null(strstr(e.msg, "big.safetensors"));
    assert_non_null(strstr(e.msg, "limit"));
    write_st_raw(td_file(&t, "long.safetensors"), 1000, "{}", 0);
    assert_int_equal(inf_st_open(td_file(&t, "long.safetensors"), &f, &e), CTX_EFORMAT);
    assert_non_null(strstr(e.msg, "truncated"));
    write_file(td_file(&t, "short.safetensors"), "abc", 3);
    assert_int_equal(inf_st_open(td_file(&t, "short.safetensors"), &f, &e), CTX_EFORMAT);
    write_file(td_file(&t, "empty.safetensors"), "", 0);
    assert_int_equal(inf_st_open(td_file(&t, "empty.safetensors"), &f, &e), CTX_EFORMAT);
    assert_null(f);
    td_free(&t);
}

/* The fuzz target's entry over hostile inputs: no crash, no leak, sensible codes. */
static void test_st_nasty_inputs(void **state)
{
    (void)state;
    static const char *hdrs[] = {
        "",
        "{",
        "{}",
        "{\"\":{\"dtype\":\"I8\",\"shape\":[0],\"data_offsets\":[0,0]}}",
        "{\"a\":1}",
        "{\"a\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,1]}}",
        "{\"a\":{\"dtype\":\"I8\",\"shape\":\"x\",\"data_offsets\":[0,1]}}",
        "{\"a\":{\"dtype\":\"I8\",\"shape\":[1.5],\"data_offsets\":[0,1]}}",
        "{\"a\":{\"dtype\":\"I8\",\"shape\":[1e300],\"data_offsets\":[0,1]}}",
        "{\"a\":{\"dtype\":\"I64\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,8]}}",
        "{\"a\":{\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[0,18446744073709551615]}}",
        "{\"a\":{\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[-1,0]}}",
        "{\"a\":{\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[0,1,2]}}",
        "{\"a\":{\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":{}}}",
        "{\"a\\u0000b\":{\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[0,1]}}",
        "{\"a\":{\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[0,1]}}   \0\0 ", /* NULs kept below */
        "{\"a\":{\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[0,1]}} trailing",
        "{\"__metadata__\":[]}",
        "{\"a\":{\"dtype\":\"BF16\",\"shape\":[],\"data_offsets\":[0,2]}}",
        ("{\"a\":{\"dtype\":\"I8\",\"shape\":[0],\"data_offsets\":[1,1]},\"b\":{\"dtype\":\"I8\",\"shape\":[2],"
         "\"data_offsets\":[0,2]}}"),
        "\xff\xfe{}",
    };
    for (size_t i = 0; i < sizeof hdrs / sizeof *hdrs; i++) {
        size_t hl = strlen(hdrs[i]);
        if (i == 15)
            hl += 3; /* keep the two embedded NULs and the space after them */
        size_t n = 8 + hl + 16;
        uint8_t *b = calloc(1, n);
        assert_non_null(b);
        b[0] = (uint8_t)hl;
        memcpy(b + 8, hdrs[i], hl);
        struct inf_tensor *t = NULL;
        int nt = -1;
        struct ctx_err e = {0};
        int rc = inf_st_parse_bytes(b, n, "nasty", &t, &nt, &e);
        assert_int_equal(inf_fuzz_safetensors_one(b, n), rc);
        if (rc) {
            assert_null(t);
            assert_int_equal(nt, 0);
            assert_true(rc == CTX_EFORMAT || rc == CTX_ERANGE);
            assert_non_null(strstr(e.msg, "nasty"));
        } else {
            for (int k = 0; k < nt; k++)
                assert_true((const uint8_t *)t[k].data >= b + 8 + hl &&
                            (const uint8_t *)t[k].data + t[k].nbytes <= b + n);
        }
        inf_st_free_tensors(t, nt > 0 ? nt : 0);
        free(b);
    }
    /* deep nesting is rejected, not recursed into without bound */
    size_t depth = 100000;
    uint8_t *b = malloc(8 + depth);
    assert_non_null(b);
    memset(b, 0, 8);
    b[0] = (uint8_t)depth;
    b[1] = (uint8_t)(depth >> 8);
    b[2] = (uint8_t)(depth >> 16);
    b[8] = '{';
    b[9] = '"';
    b[10] = 'a';
    b[11] = '"';
    b[12] = ':';
    memset(b + 13, '[', depth - 5);
    struct inf_tensor *t = NULL;
    int nt = 0;
    struct ctx_err e = {0};
    assert_int_equal(inf_st_parse_bytes(b, 8 + depth, "deep", &t, &nt, &e), CTX_EFORMAT);
    assert_int_equal(inf_fuzz_safetensors_one(b, 8 + depth), CTX_EFORMAT);
    free(b);
    /* every prefix of a valid file parses or fails cleanly */
    size_t n;
    char *f = read_all(fx("model-00002-of-00002.safetensors"), &n);
    for (size_t cut = 0; cut < 40000; cut += 997) {
        int rc = inf_st_parse_bytes((const uint8_t *)f, cut, "prefix", &t, &nt, &e);
        assert_true(rc == CTX_EFORMAT);
        assert_int_equal(inf_fuzz_safetensors_one((const uint8_t *)f, cut), CTX_EFORMAT);
    }
    assert_int_equal(inf_fuzz_safetensors_one((const uint8_t *)f, n), 0);
    assert_int_equal(inf_st_parse_bytes((const uint8_t *)f, n, "whole", &t, &nt, &e), 0);
    assert_int_equal(nt, 338);
    inf_st_free_tensors(t, nt);
    free(f);
}

/* ---------------------------------------------------------------- broken checkpoints */

static void test_broken_missing_tensor(void **state)
{
    (void)state;
    struct tmpdir t;
    td_checkpoint(&t, "model-00002-of-00002.safetensors", "model.safetensors.index.json");
    rewrite_shard(fx("model-00002-of-00002.safetensors"), td_file(&t, "model-00002-of-00002.safetensors"),
                  "norm.weight", NULL, -1, 0, 0, 0, NULL);
    rewrite_index(td_file(&t, "model.safetensors.index.json"), "norm.weight", NULL);
    expect_open_fails(t.path, CTX_EFORMAT, "missing tensor norm.weight", "model.safetensors.index.json");
    td_free(&t);
}

static void test_broken_index_points_at_missing(void **state)
{
    (void)state;
    struct tmpdir t;
    td_checkpoint(&t, "model-00001-of-00002.safetensors", NULL);
    rewrite_shard(fx("model-00001-of-00002.safetensors"), td_file(&t, "model-00001-of-00002.safetensors"),
                  "layers.1.attn.wkv.scale", NULL, -1, 0, 0, 0, NULL);
    expect_open_fails(t.path, CTX_EFORMAT, "missing tensor layers.1.attn.wkv.scale",
                      "model-00001-of-00002.safetensors");
    td_free(&t);
}

static void test_broken_extra_tensor(void **state)
{
    (void)state;
    struct tmpdir t;
    /* in a shard and the index */
    td_checkpoint(&t, "model-00001-of-00002.safetensors", "model.safetensors.index.json");
    rewrite_shard(fx("model-00001-of-00002.safetensors"), td_file(&t, "model-00001-of-00002.safetensors"), NULL,
                  NULL, -1, 0, 0, 0, "layers.0.attn.bogus");
    rewrite_index(td_file(&t, "model.safetensors.index.json"), "layers.0.attn.bogus",
                  "model-00001-of-00002.safetensors");
    expect_open_fails(t.path, CTX_EFORMAT, "unexpected tensor layers.0.attn.bogus", NULL);
    td_free(&t);
    /* in a shard only */
    td_checkpoint(&t, "model-00001-of-00002.safetensors", NULL);
    rewrite_shard(fx("model-00001-of-00002.safetensors"), td_file(&t, "model-00001-of-00002.safetensors"), NULL,
                  NULL, -1, 0, 0, 0, "layers.9.extra");
    expect_open_fails(t.path, CTX_EFORMAT, "unexpected tensor layers.9.extra", "model-00001-of-00002.safetensors");
    td_free(&t);
    /* a tensor of the inventory present in a shard the index does not map it to */
    td_checkpoint(&t, "model-00002-of-00002.safetensors", NULL);
    rewrite_shard(fx("model-00002-of-00002.safetensors"), td_file(&t, "model-00002-of-00002.safetensors"), NULL,
                  NULL, -1, 0, 0, 0, "layers.0.attn.attn_sink");
    expect_open_fails(t.path, CTX_EFORMAT, "layers.0.attn.attn_sink", "model-00002-of-00002.safetensors");
    td_free(&t);
}

static void test_broken_shape_and_dtype(void **state)
{
    (void)state;
    struct tmpdir t;
    td_checkpoint(&t, "model-00001-of-00002.safetensors", NULL);
    rewrite_shard(fx("model-00001-of-00002.safetensors"), td_file(&t, "model-00001-of-00002.safetensors"), NULL,
                  "embed.weight", -1, 2, 512, 512, NULL);
    expect_open_fails(t.path, CTX_EFORMAT, "tensor embed.weight has shape [512, 512]", "[1024, 256]");
    td_free(&t);
    td_checkpoint(&t, "model-00001-of-00002.safetensors", NULL);
    rewrite_shard(fx("model-00001-of-00002.safetensors"), td_file(&t, "model-00001-of-00002.safetensors"), NULL,
                  "layers.2.attn.attn_sink", INF_DT_I32, 0, 0, 0, NULL);
    expect_open_fails(t.path, CTX_EFORMAT, "tensor layers.2.attn.attn_sink has dtype I32", "F32");
    td_free(&t);
    /* FP4 experts stored as FP8 bytes of the same size: the dtype check catches it */
    td_checkpoint(&t, "model-00001-of-00002.safetensors", NULL);
    rewrite_shard(fx("model-00001-of-00002.safetensors"), td_file(&t, "model-00001-of-00002.safetensors"), NULL,
                  "layers.0.ffn.experts.3.w2.weight", INF_DT_F8_E4M3, 0, 0, 0, NULL);
    expect_open_fails(t.path, CTX_EFORMAT, "layers.0.ffn.experts.3.w2.weight", "I8");
    td_free(&t);
}

static void test_broken_truncated_shard(void **state)
{
    (void)state;
    struct tmpdir t;
    td_checkpoint(&t, "model-00002-of-00002.safetensors", NULL);
    size_t n;
    char *b = read_all(fx("model-00002-of-00002.safetensors"), &n);
    write_file(td_file(&t, "model-00002-of-00002.safetensors"), b, n - 1000);
    free(b);
    expect_open_fails(t.path, CTX_EFORMAT, "model-00002-of-00002.safetensors", "truncated");
    /* the message names the tensor that runs past the end */
    struct ctx_err e = {0};
    struct inf_weights *w;
    inf_weights_open(t.path, &w, &e);
    assert_non_null(strstr(e.msg, "tensor mtp.0."));
    td_free(&t);
}

static void test_broken_headers(void **state)
{
    (void)state;
    struct tmpdir t;
    td_checkpoint(&t, "model-00001-of-00002.safetensors", NULL);
    write_st_raw(td_file(&t, "model-00001-of-00002.safetensors"), (uint64_t)150 << 20, "{}", 0);
    expect_open_fails(t.path, CTX_ERANGE, "model-00001-of-00002.safetensors", "header length");
    write_st_raw(td_file(&t, "model-00001-of-00002.safetensors"), 11, "{\"embed\": [", 0);
    expect_open_fails(t.path, CTX_EFORMAT, "model-00001-of-00002.safetensors", "invalid JSON");
    td_free(&t);
}

static void test_broken_config(void **state)
{
    (void)state;
    struct tmpdir t;
    td_checkpoint(&t, "config.json", NULL);
    write_file(td_file(&t, "config.json"), "{\"hidden_size\": 256,", 20);
    expect_open_fails(t.path, CTX_EFORMAT, "config.json", "JSON");
    char *s = config_with("hidden_size", "\"256\"");
    write_file(td_file(&t, "config.json"), s, strlen(s));
    free(s);
    expect_open_fails(t.path, CTX_EINVAL, "config.json", "hidden_size");
    /* a config for another shape: every tensor is then the wrong shape */
    s = config_with("hidden_size", "384");
    write_file(td_file(&t, "config.json"), s, strlen(s));
    free(s);
    expect_open_fails(t.path, CTX_EFORMAT, "has shape", NULL);
    remove(td_file(&t, "config.json"));
    expect_open_fails(t.path, CTX_ENOTFOUND, "config.json", NULL);
    td_free(&t);
}

static void test_broken_index(void **state)
{
    (void)state;
    struct tmpdir t;
    /* a shard the index lists is absent */
    td_checkpoint(&t, "model.safetensors.index.json", NULL);
    rewrite_index(td_file(&t, "model.safetensors.index.json"), "head.weight", "model-00003-of-00003.safetensors");
    expect_open_fails(t.path, CTX_ENOTFOUND, "model-00003-of-00003.safetensors", "does not exist");
    /* the index maps a tensor to the wrong shard */
    rewrite_index(td_file(&t, "model.safetensors.index.json"), "head.weight", "model-00001-of-00002.safetensors");
    expect_open_fails(t.path, CTX_EFORMAT, "head.weight", "model-00002-of-00002.safetensors");
    /* shard names cannot leave the directory */
    rewrite_index(td_file(&t, "model.safetensors.index.json"), "head.weight", "../model-00002-of-00002.safetensors");
    expect_open_fails(t.path, CTX_EFORMAT, "weight_map.head.weight", NULL);
    /* malformed index */
    write_file(td_file(&t, "model.safetensors.index.json"), "{\"weight_map\": 3}", 17);
    expect_open_fails(t.path, CTX_EFORMAT, "weight_map", NULL);
    write_file(td_file(&t, "model.safetensors.index.json"), "{\"weight_map\": {", 16);
    expect_open_fails(t.path, CTX_EFORMAT, "model.safetensors.index.json", NULL);
    /* a shard is absent */
    td_free(&t);
    td_checkpoint(&t, "model-00002-of-00002.safetensors", NULL);
    expect_open_fails(t.path, CTX_ENOTFOUND, "model-00002-of-00002.safetensors", NULL);
    td_free(&t);
    /* no weights at all */
    td_make(&t);
    assert_int_equal(symlink(fx("config.json"), td_file(&t, "config.json")), 0);
    expect_open_fails(t.path, CTX_ENOTFOUND, "model.safetensors", NULL);
    td_free(&t);
}

/* One model.safetensors without an index, and a checkpoint without MTP tensors, both load. */
static void test_single_file_and_no_mtp(void **state)
{
    (void)state;
    struct inf_weights *w, *w2;
    struct ctx_err e = {0};
    assert_int_equal(inf_weights_open(fixture, &w, &e), 0);
    struct tmpdir t;
    td_make(&t);
    assert_int_equal(symlink(fx("config.json"), td_file(&t, "config.json")), 0);
    int n = inf_weights_count(w);
    struct inf_tensor *ts = malloc((size_t)n * sizeof *ts);
    assert_non_null(ts);
    for (int i = 0; i < n; i++)
        ts[i] = *inf_weights_tensor(w, i);
    assert_int_equal(inf_st_write(td_file(&t, "model.safetensors"), ts, n, &e), 0);
    int rc = inf_weights_open(t.path, &w2, &e);
    if (rc)
        fail_msg("%s", e.msg);
    assert_int_equal(inf_weights_count(w2), 585);
    for (int i = 0; i < n; i++) {
        const struct inf_tensor *a = inf_weights_tensor(w, i), *b = inf_weights_tensor(w2, i);
        assert_string_equal(a->name, b->name);
        assert_memory_equal(a->data, b->data, a->nbytes);
    }
    inf_weights_free(w2);
    /* without MTP */
    int m = 0;
    for (int i = 0; i < n; i++)
        if (strncmp(inf_weights_tensor(w, i)->name, "mtp.", 4))
            ts[m++] = *inf_weights_tensor(w, i);
    assert_int_equal(inf_st_write(td_file(&t, "model.safetensors"), ts, m, &e), 0);
    assert_int_equal(inf_weights_open(t.path, &w2, &e), 0);
    assert_int_equal(inf_weights_mtp_layers(w2), 0);
    assert_int_equal(inf_weights_count(w2), m);
    assert_null(inf_weights_get(w2, "mtp.0.e_proj.weight"));
    inf_weights_free(w2);
    /* but a partial MTP block is an error naming what is missing */
    ts[m++] = *inf_weights_get(w, "mtp.0.e_proj.weight");
    assert_int_equal(inf_st_write(td_file(&t, "model.safetensors"), ts, m, &e), 0);
    expect_open_fails(t.path, CTX_EFORMAT, "missing tensor mtp.0.", "model.safetensors");
    free(ts);
    inf_weights_free(w);
    td_free(&t);
}

int main(void)
{
    const char *root = getenv("CTX_SOURCE_ROOT");
    snprintf(fixture, sizeof fixture, "%s/tests/fixtures/v4-tiny-a", root && *root ? root : CTX_SOURCE_ROOT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quant_decoders),
        cmocka_unit_test(test_config_fixture),
        cmocka_unit_test(test_config_reference_names),
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_inventory_real_models),
        cmocka_unit_test(test_fixture_loads),
        cmocka_unit_test(test_fixture_decode_exact),
        cmocka_unit_test(test_synthetic),
        cmocka_unit_test(test_st_roundtrip),
        cmocka_unit_test(test_st_header_errors),
        cmocka_unit_test(test_st_nasty_inputs),
        cmocka_unit_test(test_broken_missing_tensor),
        cmocka_unit_test(test_broken_index_points_at_missing),
        cmocka_unit_test(test_broken_extra_tensor),
        cmocka_unit_test(test_broken_shape_and_dtype),
        cmocka_unit_test(test_broken_truncated_shard),
        cmocka_unit_test(test_broken_headers),
        cmocka_unit_test(test_broken_config),
        cmocka_unit_test(test_broken_index),
        cmocka_unit_test(test_single_file_and_no_mtp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
