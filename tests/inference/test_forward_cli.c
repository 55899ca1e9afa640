/* `ctx model score` end to end (suite integration: it runs the ctx binary, argv[1]). On case 2 of the
 * v4-tiny-a fixture with a chunked prefill: the logits file is byte-identical to the in-process
 * forward pass, stdout's argmax matches it, --dump-blocks holds block{i}.out [64, 4, 256] equal to
 * the streams the forward pass produces; bad inputs exit 1 (2 for usage) and leave no output file. */
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ctx_config.h"
#include "test_forward_common.h"

static const char *CTX;
static char dir[256];

/* Run argv with stdout captured into out (up to cap bytes); returns the exit status. */
static int run(char *const *argv, char *out, size_t cap)
{
    int fd[2];
    if (pipe(fd))
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fd[1], 1);
        close(fd[0]);
        close(fd[1]);
        execv(argv[0], argv);
        _exit(127);
    }
    close(fd[1]);
    size_t n = 0;
    ssize_t r;
    while ((r = read(fd[0], out + n, cap - 1 - n)) > 0)
        n += (size_t)r;
    out[n] = 0;
    close(fd[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

struct streams {
    float *b[INF_MAX_LAYERS];
    int P;
};
static void keep(void *ud, int layer, const float *Xs, int S, long long pos0)
{
    struct streams *k = ud;
    size_t row = (size_t)C->hc_mult * C->hidden_size;
    memcpy(k->b[layer] + (size_t)pos0 * row, Xs, sizeof(float) * row * (size_t)S);
}

static void test_score(void **st)
{
    (void)st;
    struct ctx_err e = {0};
    int n, P, V = C->vocab_size, chunk = 7;
    int *tok = case_tokens(2, &n, &P);
    char in[300], outp[300], blocks[300], buf[8192], path[1024];
    snprintf(in, sizeof in, "%s/in.json", dir);
    snprintf(outp, sizeof outp, "%s/logits.f32", dir);
    snprintf(blocks, sizeof blocks, "%s/blocks.safetensors", dir);
    FILE *f = fopen(in, "w");
    assert_non_null(f);
    fprintf(f, "{\"tokens\":[");
    for (int i = 0; i < n; i++)
        fprintf(f, i ? ",%d" : "%d", tok[i]);
    fprintf(f, "],\"prefill\":%d}", P);
    fclose(f);
    const char *root = getenv("CTX_SOURCE_ROOT");
    snprintf(path, sizeof path, "%s/tests/fixtures/v4-tiny-a", root ? root : ".");
    char *argv[] = {(char *)CTX, "model", "score", path, "--input", in, "--out", outp, "--dump-blocks", blocks,
                    "--chunk", "7", "--threads", "2", NULL};
    assert_int_equal(run(argv, buf, sizeof buf), 0);
    /* the same computation in process */
    struct streams k = {.P = P};
    size_t row = (size_t)C->hc_mult * C->hidden_size;
    for (int l = 0; l < C->num_hidden_layers; l++)
        k.b[l] = malloc(sizeof(float) * row * (size_t)P);
    float *want = malloc(sizeof(float) * (size_t)(1 + n - P) * V);
    struct inf_state *s;
    assert_int_equal(inf_state_new(C, &s, &e), 0);
    for (int p = 0; p < P; p += chunk) {
        int S = P - p < chunk ? P - p : chunk;
        struct inf_forward_opts o = {.logits = p + S == P ? want : NULL, .hook = keep, .hook_ud = &k};
        assert_int_equal(inf_model_forward(M, s, tok + p, S, &o, &e), 0);
    }
    for (int j = 0; P + j < n; j++) {
        struct inf_forward_opts o = {.logits = want + (size_t)(1 + j) * V};
        assert_int_equal(inf_model_forward(M, s, tok + P + j, 1, &o, &e), 0);
    }
    /* the logits file */
    size_t bytes = sizeof(float) * (size_t)(1 + n - P) * V;
    float *got = malloc(bytes + 4);
    f = fopen(outp, "rb");
    assert_non_null(f);
    assert_int_equal(fread(got, 1, bytes + 4, f), bytes);
    fclose(f);
    assert_memory_equal(got, want, bytes);
    /* stdout */
    char expect[8192];
    size_t off = (size_t)snprintf(expect, sizeof expect, "{\"argmax\":[");
    for (int r = 0; r <= n - P; r++)
        off += (size_t)snprintf(expect + off, sizeof expect - off, r ? ",%d" : "%d", argmax(want + (size_t)r * V, V));
    snprintf(expect + off, sizeof expect - off, "]}\n");
    assert_string_equal(buf, expect);
    /* the block dump */
    struct inf_st_file *bf;
    assert_int_equal(inf_st_open(blocks, &bf, &e), 0);
    assert_int_equal(inf_st_count(bf), C->num_hidden_layers);
    for (int l = 0; l < C->num_hidden_layers; l++) {
        char name[32];
        snprintf(name, sizeof name, "block%d.out", l);
        const struct inf_tensor *t = inf_st_find(bf, name);
        assert_non_null(t);
        assert_int_equal(t->dtype, INF_DT_F32);
        assert_int_equal(t->ndim, 3);
        assert_true(t->shape[0] == P && t->shape[1] == C->hc_mult && t->shape[2] == C->hidden_size);
        assert_memory_equal(t->data, k.b[l], sizeof(float) * row * (size_t)P);
        free(k.b[l]);
    }
    inf_st_close(bf);
    printf("# ctx model score: %d logits rows byte-identical to the in-process forward, %d block dumps equal\n",
           1 + n - P, C->num_hidden_layers);
    /* failures: no output file is left behind */
    unlink(outp);
    f = fopen(in, "w");
    fprintf(f, "{\"tokens\":[0,5,7],\"prefill\":4}");
    fclose(f);
    char *bad[] = {(char *)CTX, "model", "score", path, "--input", in, "--out", outp, NULL};
    assert_int_equal(run(bad, buf, sizeof buf), 1);
    struct stat sb;
    assert_int_not_equal(stat(outp, &sb), 0);
    f = fopen(in, "w");
    fprintf(f, "{\"tokens\":[0,5,99999],\"prefill\":1}");
    fclose(f);
    assert_int_equal(run(bad, buf, sizeof buf), 1);
    char *usage[] = {(char *)CTX, "model", "score", path, "--out", outp, NULL};
    assert_int_equal(run(usage, buf, sizeof buf), 2);
    char *chunk0[] = {(char *)CTX, "model", "score", path, "--input", in, "--out", outp, "--chunk", "0", NULL};
    assert_int_equal(run(chunk0, buf, sizeof buf), 2);
    char *badbe[] = {(char *)CTX, "model", "score", path, "--input", in, "--out", outp, "--backend", "tpu", NULL};
    assert_int_equal(run(badbe, buf, sizeof buf), 2);
    char *gpus[] = {(char *)CTX, "model", "score", path, "--input", in, "--out", outp, "--gpus", "0", NULL};
    assert_int_equal(run(gpus, buf, sizeof buf), 2); /* --gpus without --backend cuda */
    assert_int_not_equal(stat(outp, &sb), 0);
    unlink(in);
    unlink(blocks);
    inf_state_free(s);
    free(got);
    free(want);
    free(tok);
}

/* ctx model generate: usage and input errors exit 2 / 1; a valid run needs the CUDA engine: exit 2 without
 * it in the build, 1 without a device, else the JSON of the run (the speculative run's tokens the plain
 * run's: tests/kernels/test_engine.c part "spec" checks the engine behind it on the GPU). */
static void test_generate(void **st)
{
    (void)st;
    char in[300], path[1024], buf[16384], plain[16384];
    snprintf(in, sizeof in, "%s/gen.json", dir);
    snprintf(path, sizeof path, "%s/tests/fixtures/v4-tiny-a", getenv("CTX_SOURCE_ROOT") ? getenv("CTX_SOURCE_ROOT") : ".");
    FILE *f = fopen(in, "w");
    assert_non_null(f);
    fprintf(f, "{\"tokens\":[0,5,7,9,11]}");
    fclose(f);
    char *noin[] = {(char *)CTX, "model", "generate", path, NULL};
    assert_int_equal(run(noin, buf, sizeof buf), 2);
    char *zero[] = {(char *)CTX, "model", "generate", path, "--input", in, "--max-tokens", "0", NULL};
    assert_int_equal(run(zero, buf, sizeof buf), 2);
    char *stop[] = {(char *)CTX, "model", "generate", path, "--input", in, "--stop", "x", NULL};
    assert_int_equal(run(stop, buf, sizeof buf), 2);
    char *two[] = {(char *)CTX, "model", "generate", path, "--synthetic", "tiny", "--input", in, NULL};
    assert_int_equal(run(two, buf, sizeof buf), 2);
    char *gpus[] = {(char *)CTX, "model", "generate", path, "--input", in, "--gpus", "0,x", NULL};
    assert_int_equal(run(gpus, buf, sizeof buf), 2);
    char *ok[] = {(char *)CTX, "model", "generate", path, "--input", in, "--max-tokens", "24", "--json", NULL};
    char *spec[] = {(char *)CTX, "model", "generate", path, "--input", in, "--max-tokens", "24", "--spec", "--json", NULL};
    int rc = run(ok, plain, sizeof plain);
#if HAVE_CUDA
    assert_true(rc == 0 || rc == 1); /* 1: no CUDA device here */
    if (rc == 0) {
        assert_non_null(strstr(plain, "\"generated\":"));
        assert_int_equal(run(spec, buf, sizeof buf), 0);
        /* the same tokens: the arrays up to their closing bracket */
        const char *a = strchr(plain, ']'), *b = strchr(buf, ']');
        assert_non_null(a);
        assert_non_null(b);
        assert_int_equal(a - plain, b - buf);
        assert_memory_equal(plain, buf, (size_t)(a - plain));
        printf("# ctx model generate on the GPU: plain and --spec give the same tokens\n");
    } else {
        printf("# ctx model generate: no CUDA device here (exit 1)\n");
    }
#else
    assert_int_equal(rc, 2); /* built without the CUDA engine */
    (void)spec;
#endif
    /* a bare array (what ctx tokenize prints) is a prompt too */
    f = fopen(in, "w");
    fprintf(f, "[0,5,7,9,11]");
    fclose(f);
    rc = run(ok, buf, sizeof buf);
#if HAVE_CUDA
    assert_true(rc == 0 || rc == 1);
    if (rc == 0) /* the same prompt: the same tokens */
        assert_memory_equal(plain, buf, (size_t)(strchr(plain, ']') - plain));
#else
    assert_int_equal(rc, 2);
#endif
    /* an empty prompt: exit 1 (2 where the build refuses first) */
    f = fopen(in, "w");
    fprintf(f, "{\"tokens\":[]}");
    fclose(f);
    rc = run(ok, buf, sizeof buf);
    assert_true(HAVE_CUDA ? rc == 1 : rc == 2);
    unlink(in);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: test_forward_cli PATH_TO_CTX\n");
        return 2;
    }
    CTX = argv[1];
    snprintf(dir, sizeof dir, "/tmp/ctx-test-forward-cli-XXXXXX");
    if (!mkdtemp(dir))
        return 1;
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_score), cmocka_unit_test(test_generate)};
    int rc = cmocka_run_group_tests(tests, setup, teardown);
    rmdir(dir);
    return rc;
}
