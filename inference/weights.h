/* DeepSeek V4 weights: official checkpoints (config.json + model.safetensors.index.json + shards,
 * or one model.safetensors), memory-mapped with no copies, every tensor checked against the config
 * (spec §3.3); or seeded synthetic weights of any config in the same storage formats, in memory.
 *
 * Storage formats (spec §3.2), as the forward pass sees them through struct inf_tensor:
 *   FP8 matrix  [out,in] F8_E4M3 + "<name minus .weight>.scale" [ceil(out/128),ceil(in/128)] F8_E8M0
 *   FP4 expert  [out,in/2] I8 (two E2M1 codes per byte, low nibble = even K index)
 *               + scale [out,in/32] F8_E8M0
 *   BF16 / F32 vectors and matrices, tid2eid [vocab, k] I64. */
#ifndef INF_WEIGHTS_H
#define INF_WEIGHTS_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "err.h"

enum inf_dtype { INF_DT_F32, INF_DT_BF16, INF_DT_F8_E4M3, INF_DT_F8_E8M0, INF_DT_I8, INF_DT_I32, INF_DT_I64 };
#define INF_DT_COUNT 7

struct inf_tensor {
    const char *name;
    enum inf_dtype dtype;
    int ndim;
    long long shape[4];
    const void *data;   /* mmapped or owned by the weights / file object */
    size_t nbytes;
};

struct inf_weights; /* opaque: owns mmaps / synthetic buffers */

/* Open a checkpoint directory: config.json (falls back to inference/config.json), then
 * model.safetensors.index.json with its shards, or a single model.safetensors. Checks every tensor
 * against the config: a missing, extra, misshaped or mistyped tensor is CTX_EFORMAT naming the file
 * and tensor; a missing file CTX_ENOTFOUND; a truncated shard CTX_EFORMAT. */
int inf_weights_open(const char *dir, struct inf_weights **out, struct ctx_err *e);

/* Seeded deterministic random weights for config c, same formats and the same tensor inventory as
 * a checkpoint (MTP included), in memory. The bytes depend only on (config, seed) — not on the
 * thread count — and mimic the fixture's statistics: power-of-two E8M0 scales chosen so that codes
 * use the FP8/FP4 range (FP8 tile codes ~N(0, 80), FP4 codes of a Gaussian with rms ~1.9), norm
 * weights near 1, mHC mixing biased towards keeping each stream. Uses a pool of one thread per CPU. */
int inf_weights_synthetic(const struct inf_config *c, unsigned long long seed, struct inf_weights **out,
                          struct ctx_err *e);
struct ctx_pool;
/* The same with the caller's pool (NULL: run on the calling thread only). */
int inf_weights_synthetic_ex(const struct inf_config *c, unsigned long long seed, struct ctx_pool *pool,
                             struct inf_weights **out, struct ctx_err *e);

const struct inf_config *inf_weights_config(const struct inf_weights *w);
/* Number of MTP blocks whose tensors are loaded: config's num_nextn_predict_layers, or 0 when the
 * checkpoint carries no mtp.* tensors at all (allowed: MTP is optional for scoring). */
int inf_weights_mtp_layers(const struct inf_weights *w);
/* Where the weights came from: the checkpoint directory, or "synthetic:<seed>". */
const char *inf_weights_source(const struct inf_weights *w);
const struct inf_tensor *inf_weights_get(const struct inf_weights *w, const char *name); /* NULL if absent */
/* printf-style name lookup, e.g. inf_weights_getf(w, "layers.%d.attn.wq_a.weight", i). NULL if absent. */
const struct inf_tensor *inf_weights_getf(const struct inf_weights *w, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
int inf_weights_count(const struct inf_weights *w);
const struct inf_tensor *inf_weights_tensor(const struct inf_weights *w, int i); /* sorted by name */
void inf_weights_free(struct inf_weights *w);

/* Helpers over dtypes. */
const char *inf_dtype_name(enum inf_dtype d);        /* the safetensors string, e.g. "F8_E4M3" */
int inf_dtype_from_name(const char *s, enum inf_dtype *out); /* 0, or CTX_EFORMAT if unknown */
size_t inf_dtype_size(enum inf_dtype d);             /* bytes per stored element */
long long inf_tensor_numel(const struct inf_tensor *t);

/* The expected tensor inventory of a config (spec §3.3), in a fixed order (top level, then layers,
 * then mtp). Used by the loader, the synthetic generator and the parameter count. `logical_numel`
 * counts FP4 elements individually (twice the I8 byte count). */
struct inf_tensor_spec {
    char name[96];
    enum inf_dtype dtype;
    int ndim;
    long long shape[4];
    int layer;            /* -1 top level; 0..L-1 backbone; L..L+M-1 mtp */
    int expert;           /* routed expert index, or -1 */
    long long logical_numel;
};
/* Fills *out (malloc'd, caller frees) and *n. */
int inf_weights_inventory(const struct inf_config *c, struct inf_tensor_spec **out, int *n, struct ctx_err *e);

/* Parameter counts (spec §2.4): logical elements (an FP4 byte holds 2) of every learned tensor; the
 * E8M0 scales and the tid2eid tables are not counted. This reproduces the audited V4-Flash/Pro
 * figures exactly (Flash backbone 284,332,240,471; active 13,799,632,471). */
struct inf_param_count {
    long long total;            /* backbone + MTP */
    long long backbone;         /* without MTP */
    long long mtp;              /* MTP blocks */
    long long active;           /* activated per token, backbone, incl. embedding and head */
    long long active_no_embed;  /* same without the input-embedding table (the model card's figure) */
    long long active_mtp;       /* active incl. the MTP blocks */
    long long routed_expert;    /* one routed expert (w1+w2+w3 and their scales) */
};
int inf_params_count(const struct inf_config *c, struct inf_param_count *p, struct ctx_err *e);

/* Memory plan: weight bytes as stored, the bytes one decode step must read, and the per-sequence
 * state at a context length (spec §6.1, §6.4). KV figures are given for the packed format a
 * bit-exact cache can use (main entry: (d-r) E4M3 + r BF16 + (d-r)/64 E8M0 scales padded to 8 bytes;
 * indexer key: di/2 FP4 bytes + di/32 E8M0 scales) and for plain BF16 entries. */
struct inf_memory_plan {
    long long context;
    long long weight_bytes_by_dtype[INF_DT_COUNT];
    long long weight_bytes;       /* all stored tensors (MTP included) */
    long long weight_bytes_mtp;   /* of which MTP */
    long long decode_read_bytes;  /* backbone weights one decode step reads: all but the embedding
                                   * table and the unselected routed experts (+1 embedding row) */
    int n_sliding, n_csa, n_hca, n_mtp; /* layer counts by kind (backbone) and MTP blocks */
    /* per-entry bytes */
    int main_entry_packed, main_entry_bf16, index_entry_fp4, index_entry_bf16;
    /* per layer at `context` tokens, packed format (BF16 in the _bf16 fields) */
    long long window_bytes, window_bytes_bf16;           /* every layer: min(context, W) entries */
    long long csa_bytes, csa_bytes_bf16;                 /* CSA layer: window + ctx/4 main + ctx/4 index */
    long long hca_bytes, hca_bytes_bf16;                 /* HCA layer: window + ctx/128 main */
    long long carry_csa, carry_hca;                      /* FP32 compressor carry state per layer */
    long long kv_total, kv_total_bf16;                   /* all layers incl. MTP, carry excluded */
    long long carry_total;                               /* all layers' carry state */
    double kv_bytes_per_token, kv_bytes_per_token_bf16;  /* kv_total / context */
};
int inf_memory_plan(const struct inf_config *c, long long context, struct inf_memory_plan *m, struct ctx_err *e);

#endif
