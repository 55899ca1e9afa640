/* Integration: a real ctxd with the bundled default model (models/ctx-small, its tokenizer) makes
 * a real git repository resident and answers from it. argv[1] = ctxd. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include "harness.h"
#include "json.h"

static const char *ctxd_bin;
static char dir[64], sock[128], repo[128], logpath[128];
static pid_t pid;

static int group_setup(void **state)
{
    (void)state;
    if (!dh_have_tokenizer())
        return 0; /* no tokenizer: every test skips */
    if (dh_workdir("res", dir, sizeof dir))
        return -1;
    snprintf(sock, sizeof sock, "%s/ctxd.sock", dir);
    snprintf(repo, sizeof repo, "%s/repo", dir);
    snprintf(logpath, sizeof logpath, "%s/ctxd.log", dir);
    test_sh("git init -q %s && cd %s && git config user.email t@example.com && git config user.name T"
       " && printf 'int add(int a, int b)\\n{\\n    return a + b;\\n}\\n' > math.c"
       " && printf 'from math import add\\n\\ndef twice(x):\\n    return add(x, x)\\n' > use.py"
       " && mkdir -p docs && printf 'The add function adds.\\n' > docs/README"
       " && git add -A && git commit -q -m init", repo, repo);
    char *const argv[] = {(char *)ctxd_bin, "--socket", sock, "--budget", "4096", "--chunk", "64", "--threads", "2",
                          NULL};
    pid = dh_start(sock, logpath, argv);
    return pid > 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    return dh_teardown(pid, dir);
}

struct notes {
    int progress, deltas;
    double last_done, total;
    char text[65536];
    size_t len;
    int stop_after;     /* stop waiting after this many deltas (0: never) */
};

static int on_note(void *ud, const char *method, const cJSON *params)
{
    struct notes *n = ud;
    if (strcmp(method, "repo.progress") == 0) {
        n->progress++;
        const cJSON *d = cJSON_GetObjectItem(params, "done"), *t = cJSON_GetObjectItem(params, "total");
        if (cJSON_IsNumber(d))
            n->last_done = d->valuedouble;
        if (cJSON_IsNumber(t))
            n->total = t->valuedouble;
    } else if (strcmp(method, "ask.delta") == 0) {
        n->deltas++;
        const char *t = cJSON_GetObjectItem(params, "text")->valuestring;
        size_t l = strlen(t);
        if (n->len + l < sizeof n->text) {
            memcpy(n->text + n->len, t, l);
            n->len += l;
            n->text[n->len] = 0;
        }
        if (n->stop_after && n->deltas >= n->stop_after)
            return 1;
    }
    return 0;
}

static cJSON *call(const char *method, cJSON *params, struct notes *n, int *rc, char *err)
{
    struct ctxd_client *c;
    struct ctx_err e = {0};
    struct notes scratch = {0};
    if (!n)
        n = &scratch;
    assert_int_equal(ctxd_client_connect(sock, &c, &e), 0);
    cJSON *r = NULL;
    *rc = ctxd_client_call(c, method, params, on_note, n, 120000, &r, &e);
    if (err)
        snprintf(err, 512, "%s", e.msg);
    ctxd_client_close(c);
    return r;
}

static cJSON *ask_params(const char *q, int max_tokens)
{
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "path", repo);
    cJSON_AddStringToObject(p, "question", q);
    cJSON_AddNumberToObject(p, "max_tokens", max_tokens);
    return p;
}

static void open_makes_it_resident(void **state)
{
    (void)state;
    if (!pid)
        skip();
    struct notes n = {0};
    cJSON *p = cJSON_CreateObject();
    char sub[160];
    snprintf(sub, sizeof sub, "%s/docs", repo); /* any path inside the repository */
    cJSON_AddStringToObject(p, "path", sub);
    cJSON_AddBoolToObject(p, "wait", true);
    int rc;
    cJSON *r = call("repo.open", p, &n, &rc, NULL);
    assert_int_equal(rc, 0);
    assert_string_equal(cJSON_GetObjectItem(r, "phase")->valuestring, "ready");
    assert_string_equal(cJSON_GetObjectItem(r, "root")->valuestring, repo);
    assert_int_equal(cJSON_GetObjectItem(r, "files")->valueint, 3);
    int prompt = cJSON_GetObjectItem(r, "prompt_tokens")->valueint;
    assert_true(prompt > 100);
    assert_int_equal(cJSON_GetObjectItem(r, "resident_tokens")->valueint, prompt);
    assert_true(n.progress >= 2); /* the prefill reported as it went (64-token slices) */
    assert_true(n.last_done == prompt && n.total == prompt);
    cJSON_Delete(r);
    /* status and list agree; daemon.status names the model and says it is noise */
    p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "path", repo);
    r = call("repo.status", p, NULL, &rc, NULL);
    assert_int_equal(rc, 0);
    assert_int_equal(cJSON_GetObjectItem(r, "resident_tokens")->valueint, prompt);
    cJSON_Delete(r);
    r = call("daemon.status", NULL, NULL, &rc, NULL);
    cJSON *model = cJSON_GetObjectItem(r, "model");
    /* no --model: the bundled trained model (models/ctx-small), not random weights */
    assert_false(cJSON_IsTrue(cJSON_GetObjectItem(model, "noise")));
    assert_true(strncmp(cJSON_GetObjectItem(model, "source")->valuestring, "bundled:", 8) == 0);
    assert_non_null(strstr(cJSON_GetObjectItem(model, "source")->valuestring, "models/ctx-small"));
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(model, "loaded")));
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(r, "repos")), 1);
    cJSON_Delete(r);
}

static void answers_stream_and_repeat_exactly(void **state)
{
    (void)state;
    if (!pid)
        skip();
    struct notes a = {0}, b = {0};
    int rc;
    cJSON *r1 = call("repo.ask", ask_params("Where is add defined?", 16), &a, &rc, NULL);
    assert_int_equal(rc, 0);
    cJSON *r2 = call("repo.ask", ask_params("Where is add defined?", 16), &b, &rc, NULL);
    assert_int_equal(rc, 0);
    /* greedy from the same resident state: the same answer, token for token */
    cJSON *m1 = cJSON_GetObjectItem(r1, "message"), *m2 = cJSON_GetObjectItem(r2, "message");
    char *s1 = cJSON_PrintUnformatted(m1), *s2 = cJSON_PrintUnformatted(m2);
    assert_string_equal(s1, s2);
    /* the streamed deltas are the message */
    const char *rc1 = cJSON_GetObjectItem(m1, "reasoning_content")->valuestring;
    const char *c1 = cJSON_GetObjectItem(m1, "content")->valuestring;
    assert_true(strlen(rc1) + strlen(c1) == a.len);
    assert_true(a.deltas > 0);
    cJSON *u = cJSON_GetObjectItem(r1, "usage");
    int cached = cJSON_GetObjectItem(u, "cached_tokens")->valueint;
    int prompt = cJSON_GetObjectItem(u, "prompt_tokens")->valueint;
    assert_true(cached > 100 && prompt > cached);
    const char *fin = cJSON_GetObjectItem(r1, "finish_reason")->valuestring;
    assert_true(strcmp(fin, "length") == 0 || strcmp(fin, "stop") == 0 || strcmp(fin, "malformed") == 0);
    if (strcmp(fin, "length") == 0)
        assert_int_equal(cJSON_GetObjectItem(u, "generated_tokens")->valueint, 16);
    assert_false(cJSON_IsTrue(cJSON_GetObjectItem(r1, "noise")));
    printf("# answer: %d prompt tokens, %d resident, %d generated, first token %.0f ms, %.1f tokens/s\n", prompt,
           cached, cJSON_GetObjectItem(u, "generated_tokens")->valueint,
           cJSON_GetObjectItem(u, "time_to_first_token_ms")->valuedouble,
           cJSON_GetObjectItem(u, "tokens_per_s")->valuedouble);
    free(s1);
    free(s2);
    cJSON_Delete(r1);
    cJSON_Delete(r2);
}

static void a_client_that_leaves_cancels_and_restores(void **state)
{
    (void)state;
    if (!pid)
        skip();
    struct notes ref = {0};
    int rc;
    cJSON *want = call("repo.ask", ask_params("What does twice do?", 8), &ref, &rc, NULL);
    assert_int_equal(rc, 0);
    /* a long answer abandoned after two deltas */
    struct notes gone = {.stop_after = 2};
    cJSON *r = call("repo.ask", ask_params("What does twice do?", 5000), &gone, &rc, NULL);
    assert_int_equal(rc, CTX_ECANCELED);
    assert_null(r);
    /* the engine let go of it and the resident state is as before: same answer again */
    struct notes again = {0};
    cJSON *got = call("repo.ask", ask_params("What does twice do?", 8), &again, &rc, NULL);
    assert_int_equal(rc, 0);
    char *a = cJSON_PrintUnformatted(cJSON_GetObjectItem(want, "message"));
    char *b = cJSON_PrintUnformatted(cJSON_GetObjectItem(got, "message"));
    assert_string_equal(a, b);
    free(a);
    free(b);
    cJSON_Delete(want);
    cJSON_Delete(got);
}

static void bad_requests(void **state)
{
    (void)state;
    if (!pid)
        skip();
    int rc;
    char err[512];
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "path", "/nonexistent/ctxd/repo");
    assert_null(call("repo.open", p, NULL, &rc, err));
    assert_int_equal(rc, CTX_ENOTFOUND);
    assert_non_null(strstr(err, "/nonexistent/ctxd/repo"));
    /* not a git repository: the failure names it */
    p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "path", dir);
    cJSON_AddBoolToObject(p, "wait", true);
    assert_null(call("repo.open", p, NULL, &rc, err));
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(err, dir));
    p = ask_params("q", 0);
    assert_null(call("repo.ask", p, NULL, &rc, err));
    assert_int_equal(rc, CTX_EINVAL);
    assert_non_null(strstr(err, "max_tokens"));
    p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "path", repo);
    assert_null(call("repo.ask", p, NULL, &rc, err));
    assert_non_null(strstr(err, "question"));
    p = ask_params("q", 4);
    cJSON_AddStringToObject(p, "mode", "loud");
    assert_null(call("repo.ask", p, NULL, &rc, err));
    assert_non_null(strstr(err, "mode"));
    p = ask_params("q", 4);
    cJSON_AddNumberToObject(p, "bogus", 1);
    assert_null(call("repo.ask", p, NULL, &rc, err));
    assert_non_null(strstr(err, "bogus"));
    p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "path", "/tmp");
    assert_null(call("repo.status", p, NULL, &rc, err));
    assert_int_equal(rc, CTX_ENOTFOUND);
    assert_non_null(strstr(err, "not open"));
}

static void close_forgets_an_idle_repository(void **state)
{
    (void)state;
    if (!pid)
        skip();
    int rc;
    char err[512];
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "path", repo);
    cJSON *r = call("repo.close", p, NULL, &rc, err);
    assert_int_equal(rc, 0);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(r, "closed")));
    cJSON_Delete(r);
    p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "path", repo);
    assert_null(call("repo.status", p, NULL, &rc, err));
    assert_int_equal(rc, CTX_ENOTFOUND);
    p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "path", repo);
    assert_null(call("repo.close", p, NULL, &rc, err));
    assert_int_equal(rc, CTX_ENOTFOUND);
    /* and it opens again */
    p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "path", repo);
    cJSON_AddBoolToObject(p, "wait", true);
    r = call("repo.open", p, NULL, &rc, err);
    assert_int_equal(rc, 0);
    assert_string_equal(cJSON_GetObjectItem(r, "phase")->valuestring, "ready");
    cJSON_Delete(r);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return 2;
    ctxd_bin = argv[1];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(open_makes_it_resident),
        cmocka_unit_test(answers_stream_and_repeat_exactly),
        cmocka_unit_test(a_client_that_leaves_cancels_and_restores),
        cmocka_unit_test(bad_requests),
        cmocka_unit_test(close_forgets_an_idle_repository),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
