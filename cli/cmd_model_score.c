/* ctx model score: teacher-forced scoring with the in-process engine (no daemon).
 *   ctx model score DIR|--synthetic NAME [--seed N] --input FILE --out FILE [--dump-blocks FILE]
 *                   [--chunk N] [--threads N] [--backend cpu|cuda [--gpus LIST]]
 * FILE is JSON {"tokens":[ids...],"prefill":N}: the engine prefills tokens[0..N) (in chunks of
 * --chunk tokens, default one chunk), then feeds the rest one at a time. --out receives
 * little-endian float32 logits: one full-vocabulary row for the prefill's last position and one per
 * fed token. stdout gets {"argmax":[...]} (one per row). --dump-blocks writes a safetensors file
 * with block{i}.out, F32 [N, hc_mult, hidden]: the residual streams after block i for every prefill
 * position. Output files are written atomically. --backend cuda (a -Dcuda build) runs the forward on
 * GPUs (kernels/cuda_accel.h: one layer-split shard per listed device, default 0); --dump-blocks
 * still runs on the CPU (the per-block hook). */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "commands.h"
#include "config.h"
#include "json.h"
#include "model.h"
#include "safetensors.h"
#include "state.h"
#include "tokens_json.h"
#include "weights.h"
#include "accel.h"
#include "args.h"
#include "ctx_config.h"
#if HAVE_CUDA
#include "cuda_accel.h"
#endif

static void score_usage(FILE *f)
{
    fprintf(f, "usage: ctx model score DIR|--synthetic NAME [--seed N] --input FILE --out FILE\n"
               "                       [--dump-blocks FILE] [--chunk N] [--threads N]\n"
               "  --input FILE        JSON {\"tokens\":[ids...],\"prefill\":N}\n"
               "  --out FILE          float32 logits rows: prefill's last position, then one per fed token\n"
               "  --dump-blocks FILE  safetensors of block{i}.out [N, hc_mult, hidden] for the prefill\n"
               "  --chunk N           prefill chunk size (default: the whole prefill at once)\n"
               "  --threads N         worker threads (default: one per CPU)\n"
               "  --backend cpu|cuda  where the forward runs (cuda: a -Dcuda build; default cpu)\n"
               "  --gpus LIST         CUDA devices, one layer-split shard each (default 0)\n");
}

struct dump {
    int P, hc, D, n_layers;
    float **blocks; /* [layer][P][hc][D] */
};

static void dump_hook(void *ud, int layer, const float *X, int S, long long pos0)
{
    struct dump *d = ud;
    size_t row = (size_t)d->hc * d->D;
    for (int s = 0; s < S; s++)
        if (pos0 + s < d->P)
            memcpy(d->blocks[layer] + (size_t)(pos0 + s) * row, X + (size_t)s * row, sizeof(float) * row);
}

/* Write buf to path through a temporary file in the same directory, fsync, rename. */
static int write_atomic(const char *path, const void *buf, size_t len, struct ctx_err *e)
{
    size_t pl = strlen(path);
    char *tmp = malloc(pl + 16);
    if (!tmp)
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    snprintf(tmp, pl + 16, "%s.tmpXXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        int rc = ctx_err_errno(e, CTX_EIO, errno, "%s: cannot create a temporary file", path);
        free(tmp);
        return rc;
    }
    mode_t um = umask(0); /* mkstemp creates 0600; give the file the usual 0666 & ~umask */
    umask(um);
    if (fchmod(fd, 0666 & ~um)) {
        int rc = ctx_err_errno(e, CTX_EIO, errno, "%s: cannot set the file mode", tmp);
        close(fd);
        unlink(tmp);
        free(tmp);
        return rc;
    }
    const uint8_t *p = buf;
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, p + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            int rc = ctx_err_errno(e, CTX_EIO, errno, "%s: write failed", tmp);
            close(fd);
            unlink(tmp);
            free(tmp);
            return rc;
        }
        off += (size_t)w;
    }
    if (fsync(fd) || close(fd) || rename(tmp, path)) {
        int rc = ctx_err_errno(e, CTX_EIO, errno, "%s: cannot complete the write", path);
        unlink(tmp);
        free(tmp);
        return rc;
    }
    free(tmp);
    return 0;
}


int ctx_model_score(int argc, char **argv, const struct ctx_cli *cli)
{
    (void)cli;
    const char *dir = NULL, *synth = NULL, *input = NULL, *outp = NULL, *dumpp = NULL;
    long long seed = 1, chunk = 0, threads = 0;
    int cuda = 0, gpus[16], n_gpus = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            score_usage(stdout);
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
        } else if (!strcmp(a, "--out") && i + 1 < argc) {
            outp = argv[++i];
        } else if (!strcmp(a, "--dump-blocks") && i + 1 < argc) {
            dumpp = argv[++i];
        } else if (!strcmp(a, "--chunk") && i + 1 < argc) {
            if (ctx_parse_ll(argv[++i], 1, 1 << 24, &chunk)) {
                fprintf(stderr, "ctx model: --chunk \"%s\" is not a positive number\n", argv[i]);
                return 2;
            }
        } else if (!strcmp(a, "--threads") && i + 1 < argc) {
            if (ctx_parse_ll(argv[++i], 1, 4096, &threads)) {
                fprintf(stderr, "ctx model: --threads \"%s\" is not a positive number\n", argv[i]);
                return 2;
            }
        } else if (!strcmp(a, "--backend") && i + 1 < argc) {
            const char *b = argv[++i];
            if (strcmp(b, "cpu") && strcmp(b, "cuda")) {
                fprintf(stderr, "ctx model: --backend is cpu or cuda, not \"%s\"\n", b);
                return 2;
            }
            cuda = !strcmp(b, "cuda");
        } else if (!strcmp(a, "--gpus") && i + 1 < argc) {
            struct ctx_err ge = {0};
            if (ctx_parse_int_list(argv[++i], 0, 255, gpus, 16, &n_gpus, &ge)) {
                fprintf(stderr, "ctx model: --gpus wants device numbers like 0,1 (at most 16), not \"%s\": %s\n",
                        argv[i], ge.msg);
                return 2;
            }
        } else if (a[0] != '-' && !dir) {
            dir = a;
        } else {
            fprintf(stderr, "ctx model: score: unexpected argument \"%s\"\n", a);
            score_usage(stderr);
            return 2;
        }
    }
    if (n_gpus && !cuda) {
        fprintf(stderr, "ctx model: --gpus goes with --backend cuda\n");
        return 2;
    }
#if !HAVE_CUDA
    if (cuda) {
        fprintf(stderr, "ctx model: --backend cuda: this ctx was built without the CUDA backend (meson -Dcuda=enabled)\n");
        return 2;
    }
#endif
    if (!!dir == !!synth || !input || !outp) {
        fprintf(stderr, "ctx model: score needs DIR or --synthetic NAME, --input and --out\n");
        score_usage(stderr);
        return 2;
    }
    struct ctx_err e = {0};
    struct inf_weights *w = NULL;
    struct inf_model *m = NULL;
    struct inf_state *st = NULL;
    struct inf_accel *acc = NULL;
    int *tokens = NULL, n = 0, P = 0, status = 1;
    float *logits = NULL;
    struct dump d = {0};
    if (dir) {
        if (inf_weights_open(dir, &w, &e))
            goto fail;
    } else {
        struct inf_config c;
        if (inf_config_resolve(synth, &c, &e) || inf_weights_synthetic(&c, (unsigned long long)seed, &w, &e))
            goto fail;
    }
    const struct inf_config *c = inf_weights_config(w);
    if (inf_tokens_json_read(input, c->vocab_size, &tokens, &n, &P, &e))
        goto fail;
    if (inf_model_new(w, NULL, (int)threads, &m, &e) || inf_state_new(c, &st, &e))
        goto fail;
#if HAVE_CUDA
    if (cuda) {
        struct cuda_accel_opts co = {.devices = n_gpus ? gpus : NULL, .n_devices = n_gpus, .max_ctx = n + 64,
                                     .max_chunk = (int)chunk}; /* 0: the accelerator's default; too large: refused */
        if (cuda_accel_new(w, &co, &acc, &e))
            goto fail;
        inf_model_set_accel(m, acc);
    }
#else
    (void)gpus;
#endif
    int V = c->vocab_size, R = 1 + (n - P);
    logits = malloc(sizeof(float) * (size_t)R * V);
    if (!logits) {
        ctx_err_set(&e, CTX_ENOMEM, "out of memory for %d logits rows", R);
        goto fail;
    }
    struct inf_forward_opts o = {0};
    if (dumpp) {
        d.P = P;
        d.hc = c->hc_mult;
        d.D = c->hidden_size;
        d.n_layers = c->num_hidden_layers;
        d.blocks = calloc((size_t)d.n_layers, sizeof(float *));
        for (int l = 0; d.blocks && l < d.n_layers; l++)
            if (!(d.blocks[l] = malloc(sizeof(float) * (size_t)P * d.hc * d.D))) {
                ctx_err_set(&e, CTX_ENOMEM, "out of memory for --dump-blocks");
                goto fail;
            }
        if (!d.blocks) {
            ctx_err_set(&e, CTX_ENOMEM, "out of memory for --dump-blocks");
            goto fail;
        }
        o.hook = dump_hook;
        o.hook_ud = &d;
    }
    int step = chunk > 0 ? (int)chunk : P;
    for (int p = 0; p < P; p += step) {
        int S = P - p < step ? P - p : step;
        o.logits = p + S == P ? logits : NULL;
        if (inf_model_forward(m, st, tokens + p, S, &o, &e))
            goto fail;
    }
    o.hook = NULL;
    for (int j = 0; P + j < n; j++) {
        o.logits = logits + (size_t)(1 + j) * V;
        if (inf_model_forward(m, st, tokens + P + j, 1, &o, &e))
            goto fail;
    }
    /* float32 rows, little-endian (the host order on every supported machine; checked here) */
    {
        uint32_t probe = 1;
        if (*(uint8_t *)&probe != 1) {
            ctx_err_set(&e, CTX_EUNSUPPORTED, "big-endian hosts are not supported");
            goto fail;
        }
    }
    if (write_atomic(outp, logits, sizeof(float) * (size_t)R * V, &e))
        goto fail;
    if (dumpp) {
        struct inf_tensor *ts = calloc((size_t)d.n_layers, sizeof *ts);
        char (*names)[32] = calloc((size_t)d.n_layers, 32);
        if (!ts || !names) {
            free(ts);
            free(names);
            ctx_err_set(&e, CTX_ENOMEM, "out of memory");
            goto fail;
        }
        for (int l = 0; l < d.n_layers; l++) {
            snprintf(names[l], 32, "block%d.out", l);
            ts[l] = (struct inf_tensor){names[l], INF_DT_F32, 3, {P, d.hc, d.D, 0}, d.blocks[l],
                                        sizeof(float) * (size_t)P * d.hc * d.D};
        }
        int rc = inf_st_write(dumpp, ts, d.n_layers, &e);
        free(ts);
        free(names);
        if (rc)
            goto fail;
    }
    printf("{\"argmax\":[");
    for (int r = 0; r < R; r++) {
        const float *row = logits + (size_t)r * V;
        int b = 0;
        for (int i = 1; i < V; i++)
            if (row[i] > row[b])
                b = i;
        printf(r ? ",%d" : "%d", b);
    }
    printf("]}\n");
    status = 0;
fail:
    if (status)
        fprintf(stderr, "ctx model: score: %s\n", e.msg[0] ? e.msg : "failed");
    for (int l = 0; d.blocks && l < d.n_layers; l++)
        free(d.blocks[l]);
    free(d.blocks);
    free(logits);
    free(tokens);
    inf_state_free(st);
    inf_model_free(m);
    inf_accel_free(acc);
    inf_weights_free(w);
    return status;
}
