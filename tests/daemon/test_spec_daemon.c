/* Integration: ctxd --spec (speculative decoding with the MTP block, inference/spec.h) in the agent's
 * steps, on seeded random weights with an MTP block (--synthetic tiny, the CPU engine) and a small
 * repository. A greedy run with --spec must give what the same daemon gives without it: the same
 * answer, the same tool calls, the same token counts; its steps report the drafts they verified
 * (usage.steps[].drafted / accepted / plain_forwards), which a plain daemon's steps do not carry. A
 * teacher-forced run (--forced-completions: every token through the engine, drafts verified
 * against the forced ones) likewise. The bundled model has no MTP block: --spec there is off, with
 * a warning, and answers as before. Completions (fim.complete) likewise: the plain text, "drafted" /
 * "accepted" in the result. argv[1] = ctxd. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client.h"
#include "harness.h"
#include "json.h"

#define D "\xEF\xBD\x9C" "DSML" "\xEF\xBD\x9C" /* ｜DSML｜ */
#define EOS "<\xEF\xBD\x9C" "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>"
#define CALLS(x) "</think>\n\n<" D "tool_calls>\n" x "\n</" D "tool_calls>"
#define INVOKE(name, params) "<" D "invoke name=\"" name "\">\n" params "\n</" D "invoke>"
#define PS(name, v) "<" D "parameter name=\"" name "\" string=\"true\">" v "</" D "parameter>"
#define FINAL(text) "</think>" text EOS

static const char *ctxd_bin;
static char dir[64], sock[128], repo[128], logpath[128], forced[160];
static pid_t pid;

static void start(int spec, const char *model, const char *forced_file)
{
    char cache[160], state[160];
    snprintf(cache, sizeof cache, "%s/kv%d", dir, spec);
    snprintf(state, sizeof state, "%s/state%d", dir, spec);
    char *argv[32];
    int n = 0;
    argv[n++] = (char *)ctxd_bin;
    const char *fixed[] = {"--socket", sock, "--cache", cache, "--budget", "4096", "--threads", "2", "--no-watch",
                           "--state", state};
    for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++)
        argv[n++] = (char *)fixed[i];
    if (model) {
        argv[n++] = "--synthetic";
        argv[n++] = (char *)model;
    }
    if (forced_file) {
        argv[n++] = "--forced-completions";
        argv[n++] = (char *)forced_file;
    }
    argv[n++] = spec ? "--spec" : "--no-spec";
    argv[n] = NULL;
    pid = dh_start(sock, logpath, argv);
    if (pid <= 0)
        fail_msg("ctxd did not start");
}

static void stop(void) { assert_true(dh_stop(&pid) == 0); }

/* One call on a fresh connection (params taken); its result. */
static cJSON *call(const char *method, cJSON *params)
{
    struct ctxd_client *c;
    struct ctx_err e = {0};
    assert_int_equal(ctxd_client_connect(sock, &c, &e), 0);
    cJSON *r = NULL;
    if (ctxd_client_call(c, method, params, NULL, NULL, 300000, &r, &e))
        fail_msg("%s: %s", method, e.msg);
    ctxd_client_close(c);
    return r;
}

/* agent.run's parameters: an ask of at most 2 steps */
static cJSON *run_params(const char *prompt, int max_tokens)
{
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "path", repo);
    cJSON_AddStringToObject(p, "mode", "ask");
    cJSON_AddStringToObject(p, "prompt", prompt);
    cJSON_AddNumberToObject(p, "max_steps", 2);
    cJSON_AddNumberToObject(p, "max_tokens", max_tokens);
    return p;
}

static cJSON *run(const char *prompt, int max_tokens)
{
    return call("agent.run", run_params(prompt, max_tokens));
}

static const char *str(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItem(o, k);
    return cJSON_IsString(v) ? v->valuestring : "";
}

static long num(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItem(o, k);
    return cJSON_IsNumber(v) ? (long)v->valuedouble : -1;
}

/* daemon.status's model.speculative ("" when absent). */
static char *status_spec(void)
{
    cJSON *r = call("daemon.status", NULL);
    char *v = strdup(str(cJSON_GetObjectItem(r, "model"), "speculative"));
    cJSON_Delete(r);
    return v;
}

/* Whether the daemons' log (the first MiB) holds `what`. */
/* How often `what` is in the daemon's log (appended to by every start of the run). */
static int log_count(const char *what)
{
    FILE *f = fopen(logpath, "r");
    assert_non_null(f);
    char *log = malloc((1 << 20) + 1);
    size_t n = fread(log, 1, 1 << 20, f);
    log[n] = 0;
    fclose(f);
    int k = 0;
    for (const char *p = strstr(log, what); p; p = strstr(p + 1, what))
        k++;
    free(log);
    return k;
}

static bool log_has(const char *what) { return log_count(what) > 0; }

/* The two runs agree on what the model produced; the spec run's steps carry the draft counts. */
static void same_run(const cJSON *plain, const cJSON *spec, int expect_drafts)
{
    assert_string_equal(str(plain, "stop"), str(spec, "stop"));
    assert_string_equal(str(plain, "answer"), str(spec, "answer"));
    assert_int_equal(num(plain, "steps"), num(spec, "steps"));
    char *a = cJSON_PrintUnformatted(cJSON_GetObjectItem(plain, "tool_calls"));
    char *b = cJSON_PrintUnformatted(cJSON_GetObjectItem(spec, "tool_calls"));
    assert_string_equal(a, b);
    free(a);
    free(b);
    const cJSON *up = cJSON_GetObjectItem(plain, "usage"), *us = cJSON_GetObjectItem(spec, "usage");
    assert_int_equal(num(up, "completion_tokens"), num(us, "completion_tokens"));
    assert_true(num(us, "completion_tokens") > 0);
    const cJSON *sp = cJSON_GetObjectItem(up, "steps"), *ss = cJSON_GetObjectItem(us, "steps");
    assert_int_equal(cJSON_GetArraySize(sp), cJSON_GetArraySize(ss));
    long drafted = 0, accepted = 0;
    for (int i = 0; i < cJSON_GetArraySize(ss); i++) {
        const cJSON *p = cJSON_GetArrayItem(sp, i), *s = cJSON_GetArrayItem(ss, i);
        assert_int_equal(num(p, "completion_tokens"), num(s, "completion_tokens"));
        assert_null(cJSON_GetObjectItem(p, "drafted"));
        long d = num(s, "drafted"), a2 = num(s, "accepted"), pf = num(s, "plain_forwards");
        if (expect_drafts) {
            assert_true(d >= 0 && a2 >= 0 && a2 <= d && pf >= 0);
            /* each token fed is a two-token forward's first, a kept draft or a plain forward; the
             * last token of a step (an end of sentence, or where the budget cut) is not fed */
            assert_true(d + a2 + pf <= num(s, "completion_tokens"));
            assert_true(d + a2 + pf + 1 >= num(s, "completion_tokens"));
            drafted += d;
            accepted += a2;
        } else {
            assert_null(cJSON_GetObjectItem(s, "drafted"));
        }
    }
    if (expect_drafts)
        assert_true(drafted > 0);
    fprintf(stderr, "# %ld completion tokens, %ld drafts verified, %ld accepted\n", num(us, "completion_tokens"),
            drafted, accepted);
}

static const char *const prompts[] = {
    "Where is the function add defined?",
    "What does main return?",
};

static void greedy_same_answers(void **state)
{
    (void)state;
    if (!dir[0]) { /* (cmocka's skip() reads as a failure to scripts/test's count: say why and pass) */
        fprintf(stderr, "# no bundled tokenizer (scripts/setup installs it): nothing to run\n");
        return;
    }
    cJSON *plain[2], *spec[2];
    start(0, "tiny", NULL);
    for (int i = 0; i < 2; i++)
        plain[i] = run(prompts[i], 96);
    char *st0 = status_spec();
    stop();
    assert_string_equal(st0, "off"); /* --no-spec */
    free(st0);
    start(1, "tiny", NULL);
    for (int i = 0; i < 2; i++)
        spec[i] = run(prompts[i], 96);
    char *st1 = status_spec();
    stop();
    assert_string_equal(st1, "on");
    free(st1);
    for (int i = 0; i < 2; i++) {
        same_run(plain[i], spec[i], 1);
        cJSON_Delete(plain[i]);
        cJSON_Delete(spec[i]);
    }
}

static void forced_same_answers(void **state)
{
    (void)state;
    if (!dir[0]) { /* (cmocka's skip() reads as a failure to scripts/test's count: say why and pass) */
        fprintf(stderr, "# no bundled tokenizer (scripts/setup installs it): nothing to run\n");
        return;
    }
    /* a tool call, then a final answer: the forced tokens go through the engine, drafts verified
     * against them (random weights: mostly rejected) */
    cJSON *arr = cJSON_CreateArray();
    cJSON_AddItemToArray(arr, cJSON_CreateString(CALLS(INVOKE("read_file", PS("path", "src/math.c")))));
    cJSON_AddItemToArray(arr, cJSON_CreateString(FINAL("add is defined in src/math.c.")));
    char *text = cJSON_PrintUnformatted(arr);
    FILE *f = fopen(forced, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    free(text);
    cJSON_Delete(arr);
    cJSON *plain, *spec;
    start(0, "tiny", forced);
    plain = run(prompts[0], 400);
    stop();
    start(1, "tiny", forced);
    spec = run(prompts[0], 400);
    stop();
    same_run(plain, spec, 1);
    assert_string_equal(str(spec, "answer"), "add is defined in src/math.c.");
    cJSON_Delete(plain);
    cJSON_Delete(spec);
}

static const char *const fim_prefixes[] = {
    "int add(int a, int b)\n{\n    return ", "static int sub(int a, int b) { return ", "#include <stdio.h>\nint main(void) {",
    "/* sum */\nint sum(const int *v, int n)\n{\n    int s = 0;\n", "x = ", "def f(x):\n    return ",
};

static cJSON *fim(int k, double temperature, int seed)
{
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "file", "math.c");
    cJSON_AddStringToObject(p, "prefix", fim_prefixes[k]);
    cJSON_AddStringToObject(p, "suffix", ";\n}\n");
    cJSON_AddNumberToObject(p, "max_tokens", 40);
    cJSON_AddBoolToObject(p, "loop_stop", false);
    if (temperature > 0) {
        cJSON_AddNumberToObject(p, "temperature", temperature);
        cJSON_AddNumberToObject(p, "seed", seed);
    }
    return call("fim.complete", p);
}

/* Completions (fim.complete) decode speculatively too: greedy, the plain daemon's text; sampled with
 * a seed, the same text again on a second request (its own distribution, drawn differently). */
static void fim_same_text(void **state)
{
    (void)state;
    if (!dir[0]) { /* (cmocka's skip() reads as a failure to scripts/test's count: say why and pass) */
        fprintf(stderr, "# no bundled tokenizer (scripts/setup installs it): nothing to run\n");
        return;
    }
    /* random weights: the first prefix whose greedy completion runs a few tokens (not cut at once by
     * a blank line, which completions stop at) */
    start(0, "tiny", NULL);
    cJSON *plain = NULL;
    int k = 0;
    for (; k < (int)(sizeof fim_prefixes / sizeof *fim_prefixes); k++) {
        cJSON_Delete(plain);
        plain = fim(k, 0, 0);
        if (num(plain, "tokens") >= 4)
            break;
    }
    stop();
    assert_true(num(plain, "tokens") >= 4);
    start(1, "tiny", NULL);
    cJSON *spec = fim(k, 0, 0), *s1 = fim(k, 0.8, 5), *s2 = fim(k, 0.8, 5);
    stop();
    assert_string_equal(str(plain, "text"), str(spec, "text"));
    assert_int_equal(num(plain, "tokens"), num(spec, "tokens"));
    assert_null(cJSON_GetObjectItem(plain, "drafted"));
    assert_true(num(spec, "drafted") > 0);
    assert_true(num(spec, "accepted") >= 0 && num(spec, "accepted") <= num(spec, "drafted"));
    assert_string_equal(str(s1, "text"), str(s2, "text"));
    assert_true(num(s1, "drafted") >= 0 && num(s1, "drafted") == num(s2, "drafted"));
    fprintf(stderr, "# fim: %ld tokens, %ld drafts verified, %ld accepted\n", num(spec, "tokens"), num(spec, "drafted"),
            num(spec, "accepted"));
    cJSON_Delete(plain);
    cJSON_Delete(spec);
    cJSON_Delete(s1);
    cJSON_Delete(s2);
}

/* The bundled model has no MTP block: --spec is off (said in the log), the steps plain. */
static void no_mtp_block(void **state)
{
    (void)state;
    const char *root = getenv("CTX_SOURCE_ROOT") ? getenv("CTX_SOURCE_ROOT") : ".";
    char idx[1024];
    snprintf(idx, sizeof idx, "%s/models/ctx-small/model.safetensors.index.json", root);
    if (!dir[0] || (getenv("CTX_MODEL") == NULL && access(idx, R_OK) != 0)) {
        fprintf(stderr, "# no bundled model here: the no-MTP case not run\n");
        return;
    }
    start(1, NULL, NULL);
    cJSON *r = run(prompts[0], 24);
    char *sv = status_spec();
    stop();
    assert_string_equal(sv, "off (no MTP block)");
    free(sv);
    const cJSON *st;
    cJSON_ArrayForEach(st, cJSON_GetObjectItem(cJSON_GetObjectItem(r, "usage"), "steps"))
        assert_null(cJSON_GetObjectItem(st, "drafted"));
    cJSON_Delete(r);
    assert_true(log_has("speculative decoding is off: the checkpoint has no MTP block"));
}

/* Whether this run is against ctxd --backend cuda (CTX_TEST_CTXD_FLAGS on the GPU machine); says which
 * case is left out when not. */
static bool on_cuda(const char *what)
{
    const char *fl = getenv("CTX_TEST_CTXD_FLAGS");
    if (dir[0] && fl && strstr(fl, "cuda"))
        return true;
    fprintf(stderr, "# %s run against ctxd --backend cuda only (the GPU machine)\n", what);
    return false;
}

/* The CUDA cases' ctxd: the tiny synthetic model, its cache and state in dir/kv<tag> and dir/state<tag>;
 * argv[14], argv[15] left free (NULL) for one more option. */
struct cuda_ctxd {
    char cache[160], st[160];
    char *argv[17];
};
static void cuda_ctxd_init(struct cuda_ctxd *d, const char *tag)
{
    snprintf(d->cache, sizeof d->cache, "%s/kv%s", dir, tag);
    snprintf(d->st, sizeof d->st, "%s/state%s", dir, tag);
    char *argv[] = {(char *)ctxd_bin, "--socket", sock, "--cache", d->cache, "--budget", "4096", "--threads", "2",
                    "--no-watch", "--state", d->st, "--synthetic", "tiny", NULL, NULL, NULL};
    memcpy(d->argv, argv, sizeof argv);
}

/* With --backend cuda (the GPU machine: CTX_TEST_CTXD_FLAGS) speculative decoding is the default, and
 * GPUs that cannot take the MTP block too (CTX_TEST_CUDA_NO_MTP) leave it off, the model loaded
 * without it, answering as a plain daemon. */
static void cuda_default_and_fallback(void **state)
{
    (void)state;
    if (!on_cuda("the CUDA default and its fallback"))
        return;
    struct cuda_ctxd d;
    cuda_ctxd_init(&d, "d");
    char **argv = d.argv;
    pid = dh_start(sock, logpath, argv);
    assert_true(pid > 0);
    cJSON *a = run(prompts[0], 48);
    char *on = status_spec();
    stop();
    assert_string_equal(on, "on");
    free(on);
    setenv("CTX_TEST_CUDA_NO_MTP", "1", 1);
    pid = dh_start(sock, logpath, argv);
    unsetenv("CTX_TEST_CUDA_NO_MTP");
    assert_true(pid > 0);
    cJSON *b = run(prompts[0], 48);
    char *off = status_spec();
    /* the MTP block went first, down to the smallest chunk; without it the default chunk again */
    cJSON *r = call("daemon.status", NULL);
    assert_non_null(strstr(str(cJSON_GetObjectItem(r, "model"), "device"), ", chunk 16384"));
    cJSON_Delete(r);
    stop();
    assert_string_equal(off, "off");
    free(off);
    assert_string_equal(str(a, "answer"), str(b, "answer"));
    assert_int_equal(num(cJSON_GetObjectItem(a, "usage"), "completion_tokens"),
                     num(cJSON_GetObjectItem(b, "usage"), "completion_tokens"));
    cJSON_Delete(a);
    cJSON_Delete(b);
    assert_true(log_has("speculative decoding is off: the GPUs did not take the MTP block too"));
}

/* With --backend cuda the GPU engine prefills in chunks of 16384 by default; GPUs that cannot take that
 * chunk's scratch (CTX_TEST_CUDA_MAX_CHUNK=8192) leave the model loaded with chunks of 8192, and GPUs that
 * cannot take that either (=4096) with chunks of 4096, answering the same; a chunk the user asked for
 * (--chunk) is not replaced. */
static void cuda_chunk_fallback(void **state)
{
    (void)state;
    if (!on_cuda("the CUDA chunk and its fallback"))
        return;
    struct cuda_ctxd d;
    cuda_ctxd_init(&d, "c");
    char **argv = d.argv;
    static const char *const limit[3] = {NULL, "8192", "4096"}, *const want[3] = {", chunk 16384", ", chunk 8192",
                                                                                   ", chunk 4096"};
    cJSON *runs[3];
    const char *const refused16 = "prefill chunk 16384: the GPUs did not take it",
                      *const refused8 = "prefill chunk 8192: the GPUs did not take it";
    for (int v = 0; v < 3; v++) {
        int n16 = log_count(refused16), n8 = log_count(refused8);
        if (limit[v])
            setenv("CTX_TEST_CUDA_MAX_CHUNK", limit[v], 1);
        pid = dh_start(sock, logpath, argv);
        unsetenv("CTX_TEST_CUDA_MAX_CHUNK");
        assert_true(pid > 0);
        runs[v] = run(prompts[0], 48);
        cJSON *r = call("daemon.status", NULL);
        const char *dev = str(cJSON_GetObjectItem(r, "model"), "device");
        assert_non_null(strstr(dev, want[v]));
        cJSON_Delete(r);
        /* this start's refusals: 16384 by the second and third, 8192 by the third only */
        assert_int_equal(log_count(refused16) - n16, v > 0);
        assert_int_equal(log_count(refused8) - n8, v == 2);
        stop();
    }
    assert_string_equal(str(runs[0], "answer"), str(runs[1], "answer"));
    assert_string_equal(str(runs[0], "answer"), str(runs[2], "answer"));
    for (int v = 0; v < 3; v++)
        cJSON_Delete(runs[v]);
    /* --chunk 8192 asked for: refused chunks are an error, not a quiet fallback */
    argv[14] = "--chunk";
    argv[15] = "8192";
    setenv("CTX_TEST_CUDA_MAX_CHUNK", "4096", 1);
    pid = dh_start(sock, logpath, argv);
    unsetenv("CTX_TEST_CUDA_MAX_CHUNK");
    assert_true(pid > 0);
    struct ctxd_client *c;
    struct ctx_err e = {0};
    assert_int_equal(ctxd_client_connect(sock, &c, &e), 0);
    cJSON *r = NULL;
    assert_int_not_equal(ctxd_client_call(c, "agent.run", run_params(prompts[0], 8), NULL, NULL, 300000, &r, &e), 0);
    ctxd_client_close(c);
    cJSON_Delete(r);
    assert_non_null(strstr(e.msg, "no room for chunks of 8192"));
    stop();
}

/* --spec with a remote backend is a usage error. */
static void remote_refused(void **state)
{
    (void)state;
    if (!dir[0]) { /* (cmocka's skip() reads as a failure to scripts/test's count: say why and pass) */
        fprintf(stderr, "# no bundled tokenizer (scripts/setup installs it): nothing to run\n");
        return;
    }
    char cmd[512];
    snprintf(cmd, sizeof cmd, "'%s' --spec --backend openai --url http://127.0.0.1:9 --socket '%s/x.sock' 2>&1",
             ctxd_bin, dir);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char out[512] = {0};
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = 0;
    int rc = pclose(p);
    assert_true(WIFEXITED(rc) && WEXITSTATUS(rc) == 2);
    assert_non_null(strstr(out, "--spec and --no-spec go with the local engine"));
}

static int group_setup(void **state)
{
    (void)state;
    if (!dh_have_tokenizer())
        return 0;
    if (dh_workdir("spec", dir, sizeof dir))
        return -1;
    snprintf(sock, sizeof sock, "%s/ctxd.sock", dir);
    snprintf(repo, sizeof repo, "%s/repo", dir);
    snprintf(logpath, sizeof logpath, "%s/ctxd.log", dir);
    snprintf(forced, sizeof forced, "%s/forced.json", dir);
    test_sh("rm -rf '%s' && " DH_GIT_INIT " && mkdir -p src && "
            "printf 'int add(int a, int b)\\n{\\n    return a + b;\\n}\\n' > src/math.c && "
            "printf 'int add(int a, int b);\\n' > src/math.h && "
            "printf '#include \"math.h\"\\nint main(void) { return add(1, 2) - 3; }\\n' > src/main.c && "
            "git add -A && git commit -q -m one",
            repo, repo, repo);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    if (pid > 0)
        stop();
    return dir[0] ? dh_teardown(0, dir) : 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: test_spec_daemon CTXD\n");
        return 2;
    }
    ctxd_bin = argv[1];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(greedy_same_answers),
        cmocka_unit_test(forced_same_answers),
        cmocka_unit_test(fim_same_text),
        cmocka_unit_test(no_mtp_block),
        cmocka_unit_test(cuda_default_and_fallback),
        cmocka_unit_test(cuda_chunk_fallback),
        cmocka_unit_test(remote_refused),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
