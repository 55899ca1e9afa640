/* The model as the daemon holds it: tokenizer (loaded at start, used from any thread), weights
 * and model (loaded on the engine thread by the first job that needs them), and what identifies
 * them for the KV cache. The weights come from an official checkpoint directory (--model), the
 * bundled trained model models/ctx-small (the default: $CTX_MODEL, else the installed copy, else the
 * source tree's), or a synthetic config (--synthetic: seeded random weights, whose answers are noise,
 * and status says so). */
#ifndef CTXD_ENGINE_H
#define CTXD_ENGINE_H

#include <stdbool.h>
#include <stddef.h>

#include "err.h"

struct inf_model;
struct inf_tokenizer;

struct ctxd_engine_opts {
    const char *model_dir;       /* official checkpoint directory, or NULL */
    const char *synthetic;       /* built-in config name or config.json path, or NULL */
    unsigned long long seed;     /* synthetic weights */
    const char *tokenizer;       /* tokenizer.json; NULL: the checkpoint's, else the bundled V3+V4 */
    int threads;                 /* 0: one per CPU */
    /* --backend openai: questions go to a remote OpenAI-compatible endpoint (DeepSeek's API shape)
     * instead of the local engine; the tokenizer still measures the prompt. */
    const char *remote_url;
    const char *remote_model;    /* default "deepseek-chat" */
    const char *api_key_env;     /* environment variable holding the API key, or NULL */
    /* --backend cuda: the forward pass on GPUs (kernels/cuda_accel.h; needs a -Dcuda build): one
     * layer-split shard per listed device, caches sized for max_ctx positions. */
    bool cuda;
    int gpus[16];
    int n_gpus;                  /* 0: device 0 */
    long long max_ctx;           /* <= 0: 540672 (ctxd passes --budget + 40960) */
    int max_chunk;               /* tokens a device call (prefill chunk); <= 0: the accelerator's (16384);
                                  * ctxd passes its prefill slice (--chunk) */
    int chunk_fallback;          /* > 0: when the GPUs refuse max_chunk's scratch, retry with half of it,
                                  * and so on down to this chunk (ctxd's default chunk, not one the user
                                  * asked for) */
    /* speculative decoding with the checkpoint's MTP block (inference/spec.h): 1 --spec (on wherever
     * the checkpoint has the block), -1 --no-spec, 0 the default: on with cuda (the block uploaded to
     * the last device, cuda_accel_opts.mtp), off on the CPU engine (a two-token forward costs two) */
    int spec;
};

struct ctxd_engine;

/* Checks options only: the tokenizer and the weights are loaded when first needed. */
int ctxd_engine_new(const struct ctxd_engine_opts *o, struct ctxd_engine **out, struct ctx_err *e);
void ctxd_engine_free(struct ctxd_engine *g);

/* Loop thread, before the first ingestion: load the tokenizer (about 0.1 s). Retried after a
 * failure. The tokenizer is immutable afterwards and used from any thread. */
int ctxd_engine_load_tokenizer(struct ctxd_engine *g, struct ctx_err *e);
/* Engine thread: load the weights and build the model once; later calls return the first result. */
int ctxd_engine_load(struct ctxd_engine *g, struct ctx_err *e);

/* NULL until ctxd_engine_load_tokenizer succeeded. */
const struct inf_tokenizer *ctxd_engine_tokenizer(const struct ctxd_engine *g);
struct inf_model *ctxd_engine_model(struct ctxd_engine *g);   /* NULL until loaded */
bool ctxd_engine_loaded(const struct ctxd_engine *g);
/* The GPU accelerator once loaded with --backend cuda ("cuda: 1 x NVIDIA H200 (devices 0), ..."),
 * else NULL. */
const char *ctxd_engine_device(const struct ctxd_engine *g);
/* Once loaded: whether agent steps and completions decode speculatively (opts.spec, and the
 * checkpoint has an MTP block, which a cuda backend holds on its device). */
bool ctxd_engine_spec(const struct ctxd_engine *g);
/* For status, once loaded: "on", "off" or "off (no MTP block)" (asked for or by default, the
 * checkpoint has none); NULL before loading and for a remote backend. */
const char *ctxd_engine_spec_state(const struct ctxd_engine *g);
/* "cpu", "cuda" or "openai": where answers are computed. */
const char *ctxd_engine_backend(const struct ctxd_engine *g);
/* "checkpoint:/path", "bundled:/path" or "synthetic:mid:seed=1 (random weights: ...)". */
const char *ctxd_engine_describe(const struct ctxd_engine *g);
/* Identity for the KV cache: changes whenever the weights could. */
const char *ctxd_engine_key(const struct ctxd_engine *g);
/* Synthetic weights: random, noise answers. */
bool ctxd_engine_is_noise(const struct ctxd_engine *g);
int ctxd_engine_eos(const struct ctxd_engine *g);
/* The remote backend, or NULL for the local engine. Used on the engine thread only. */
struct agent_openai *ctxd_engine_remote(const struct ctxd_engine *g);

#endif
