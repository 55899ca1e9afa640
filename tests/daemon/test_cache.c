/* Integration (issue 6): the resident state survives daemon restarts through the KV cache with zero
 * prefix tokens recomputed, an edit recomputes only from the checkpoint before it, and corrupted
 * cache files fall back to recomputation with the same answers. argv[1] = ctxd. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client.h"
#include "harness.h"
#include "json.h"

static const char *ctxd_bin;
static char dir[64], sock[128], repo[128], cache[128], logpath[128];
static pid_t pid;
static int have_tokenizer;
static const char *extra1 = NULL, *extra2 = NULL, *extra3 = NULL, *extra4 = NULL;

static void start(void)
{
    char *const argv[] = {(char *)ctxd_bin, "--socket", sock, "--cache", cache, "--budget", "8192", "--chunk", "128",
                          "--checkpoint-every", "128", "--threads", "2", "--debounce-ms", "50", (char *)extra1,
                          (char *)extra2, (char *)extra3, (char *)extra4, NULL};
    pid = dh_start(sock, logpath, argv);
    if (pid > 0)
        return;
    fail_msg("ctxd did not start");
}

static void stop(void) { assert_true(dh_stop(&pid) == 0); }

static cJSON *call(const char *method, cJSON *params, int *rc)
{
    struct ctxd_client *c;
    struct ctx_err e = {0};
    assert_int_equal(ctxd_client_connect(sock, &c, &e), 0);
    cJSON *r = NULL;
    *rc = ctxd_client_call(c, method, params, NULL, NULL, 300000, &r, &e);
    if (*rc)
        fprintf(stderr, "# %s: %s\n", method, e.msg);
    ctxd_client_close(c);
    return r;
}

static cJSON *open_repo(void)
{
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "path", repo);
    cJSON_AddBoolToObject(p, "wait", true);
    int rc;
    cJSON *r = call("repo.open", p, &rc);
    assert_int_equal(rc, 0);
    assert_string_equal(cJSON_GetObjectItem(r, "phase")->valuestring, "ready");
    return r;
}

static char *ask(void)
{
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "path", repo);
    cJSON_AddStringToObject(p, "question", "Which function multiplies?");
    cJSON_AddNumberToObject(p, "max_tokens", 6);
    cJSON_AddNumberToObject(p, "top_logprobs", 5);
    int rc;
    cJSON *r = call("repo.ask", p, &rc);
    assert_int_equal(rc, 0);
    /* the message and the log-probabilities of every step: equal logits, to printing precision */
    cJSON *keep = cJSON_CreateObject();
    cJSON_AddItemToObject(keep, "message", cJSON_DetachItemFromObject(r, "message"));
    cJSON_AddItemToObject(keep, "logprobs", cJSON_DetachItemFromObject(r, "logprobs"));
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(keep, "logprobs")), 6);
    char *s = cJSON_PrintUnformatted(keep);
    cJSON_Delete(keep);
    cJSON_Delete(r);
    return s;
}

static int num(const cJSON *o, const char *k)
{
    return cJSON_GetObjectItem(o, k)->valueint;
}

static int group_setup(void **state)
{
    (void)state;
    have_tokenizer = dh_have_tokenizer();
    if (!have_tokenizer)
        return 0;
    if (dh_workdir("cache", dir, sizeof dir))
        return -1;
    snprintf(sock, sizeof sock, "%s/ctxd.sock", dir);
    snprintf(repo, sizeof repo, "%s/repo", dir);
    snprintf(cache, sizeof cache, "%s/kv", dir);
    snprintf(logpath, sizeof logpath, "%s/ctxd.log", dir);
    /* twelve small C files, committed at increasing dates so their order is fixed */
    char cmd[4096];
    int n = snprintf(cmd, sizeof cmd, "git init -q %s && cd %s && git config user.email t@example.com && "
                     "git config user.name T", repo, repo);
    for (int i = 0; i < 12; i++)
        n += snprintf(cmd + n, sizeof cmd - (size_t)n,
                      " && printf 'int op%d(int a, int b)\\n{\\n    /* operation number %d */\\n    return a %c b + %d;\\n}\\n' > f%02d.c"
                      " && git add f%02d.c && GIT_COMMITTER_DATE='2020-01-%02dT00:00:00' git commit -q --date 2020-01-%02dT00:00:00 -m f%d",
                      i, i, "+-*/"[i % 4], i, i, i, i + 1, i + 1, i);
    if (system(cmd) != 0)
        return -1;
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    return dh_teardown(pid, dir);
}

static void restart_edit_corrupt(void **state)
{
    (void)state;
    if (!have_tokenizer)
        skip();
    /* 1. cold: everything computed and checkpointed */
    start();
    cJSON *s = open_repo();
    int prompt = num(s, "prompt_tokens");
    assert_true(prompt > 600);
    assert_int_equal(num(s, "computed_tokens"), prompt);
    assert_int_equal(num(s, "restored_tokens"), 0);
    cJSON_Delete(s);
    char *cold = ask();
    int rc;
    cJSON *cs = call("cache.status", NULL, &rc);
    assert_int_equal(rc, 0);
    assert_true(num(cs, "checkpoints") >= prompt / 128);
    assert_true(num(cs, "bytes") > 0);
    cJSON_Delete(cs);
    stop();

    /* 2. restart: the whole prefix comes back from disk, nothing is recomputed, same logits */
    start();
    s = open_repo();
    assert_int_equal(num(s, "prompt_tokens"), prompt);
    assert_int_equal(num(s, "restored_tokens"), prompt);
    assert_int_equal(num(s, "computed_tokens"), 0);
    cJSON_Delete(s);
    char *warm = ask();
    assert_string_equal(cold, warm);
    cs = call("cache.status", NULL, &rc);
    assert_true(num(cs, "hits") >= 1);
    cJSON_Delete(cs);
    stop();

    /* 3. edit one of the recently changed files: working-tree changes go last, so only the suffix
     * from the checkpoint before its old place is recomputed */
    test_sh("cd %s && printf 'int op10(int a, int b)\\n{\\n    return a * b * 10;\\n}\\n' > f10.c", repo);
    start();
    s = open_repo();
    int prompt2 = num(s, "prompt_tokens"), restored = num(s, "restored_tokens"), computed = num(s, "computed_tokens");
    printf("# after an edit: %d prompt tokens, %d restored, %d recomputed\n", prompt2, restored, computed);
    assert_int_equal(restored + computed, prompt2);
    assert_true(restored > 0);
    assert_true(computed < prompt2 / 3);
    cJSON_Delete(s);
    char *edited = ask();
    stop();

    /* 4. corrupt every stream file: the restart recomputes (and says why) and answers the same */
    DIR *d = opendir(cache);
    struct dirent *de;
    int corrupted = 0;
    while ((de = readdir(d))) {
        if (de->d_name[0] != 'L')
            continue;
        char sub[400];
        snprintf(sub, sizeof sub, "%s/%s", cache, de->d_name);
        DIR *ld = opendir(sub);
        struct dirent *fe;
        while (ld && (fe = readdir(ld))) {
            if (fe->d_name[0] != 's')
                continue;
            char f[700];
            snprintf(f, sizeof f, "%s/%s", sub, fe->d_name);
            FILE *fp = fopen(f, "r+b");
            if (fp && fseek(fp, 8, SEEK_SET) == 0) {
                int ch = fgetc(fp);
                fseek(fp, 8, SEEK_SET);
                fputc(ch ^ 0x5a, fp);
                corrupted++;
            }
            if (fp)
                fclose(fp);
        }
        if (ld)
            closedir(ld);
    }
    closedir(d);
    assert_true(corrupted > 0);
    start();
    s = open_repo();
    assert_int_equal(num(s, "restored_tokens") + num(s, "computed_tokens"), prompt2);
    assert_true(num(s, "computed_tokens") > 0);
    const cJSON *note = cJSON_GetObjectItem(s, "cache_note");
    assert_non_null(note);
    assert_non_null(strstr(note->valuestring, "checksum"));
    cJSON_Delete(s);
    char *recomputed = ask();
    assert_string_equal(edited, recomputed);

    /* 5. clear */
    cs = call("cache.clear", NULL, &rc);
    assert_int_equal(rc, 0);
    assert_true(num(cs, "freed_bytes") > 0);
    cJSON_Delete(cs);
    cs = call("cache.status", NULL, &rc);
    assert_int_equal(num(cs, "lineages"), 0);
    cJSON_Delete(cs);
    stop();
    free(cold);
    free(warm);
    free(edited);
    free(recomputed);
}

static cJSON *status(void)
{
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "path", repo);
    int rc;
    cJSON *r = call("repo.status", p, &rc);
    assert_int_equal(rc, 0);
    return r;
}

/* Wait until the repository has applied `updates` updates and is ready again. */
static cJSON *wait_updates(int updates)
{
    for (int i = 0; i < 600; i++) {
        cJSON *s = status();
        const cJSON *u = cJSON_GetObjectItem(s, "last_update");
        if (u && num(u, "updates") >= updates && strcmp(cJSON_GetObjectItem(s, "phase")->valuestring, "ready") == 0 &&
            num(s, "pending_changes") == 0)
            return s;
        cJSON_Delete(s);
        usleep(100000);
    }
    fail_msg("the repository did not pick up the change within 60 s");
    return NULL;
}

static void live_edits_are_followed(void **state)
{
    (void)state;
    if (!have_tokenizer)
        skip();
    test_sh("cd %s && git checkout -q -- . && git clean -qfd", repo);
    start();
    cJSON *s = open_repo();
    int prompt = num(s, "prompt_tokens");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(s, "watching")));
    cJSON_Delete(s);
    /* an edit while ctxd runs: it re-lays out, goes back to the checkpoint before the change and
     * prefills only the rest */
    test_sh("cd %s && printf 'int op11(int a, int b)\\n{\\n    return (a + b) * 11;\\n}\\n' > f11.c", repo);
    s = wait_updates(1);
    int prompt2 = num(s, "prompt_tokens"), restored = num(s, "restored_tokens"), computed = num(s, "computed_tokens");
    int first = num(cJSON_GetObjectItem(s, "last_update"), "first_changed_token");
    printf("# live edit: prompt %d -> %d tokens, first change at token %d, %d restored, %d recomputed\n", prompt,
           prompt2, first, restored, computed);
    assert_true(first > 0 && first < prompt2);
    assert_int_equal(restored + computed, prompt2);
    assert_true(restored <= first);
    assert_true(first - restored < 128 + 128); /* from the checkpoint before the change */
    assert_int_equal(num(s, "resident_tokens"), prompt2);
    cJSON_Delete(s);
    char *a = ask();
    /* a new file appears at the end */
    test_sh("cd %s && printf 'int extra(void) { return 42; }\\n' > zz_new.c", repo);
    s = wait_updates(2);
    assert_true(num(s, "prompt_tokens") > prompt2);
    assert_int_equal(num(s, "files"), 13);
    cJSON_Delete(s);
    /* the answer for the new prompt comes from the updated state */
    char *b = ask();
    assert_string_not_equal(a, b);
    free(a);
    free(b);
    stop();
}

static int ask_prompt_tokens(int *cached)
{
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "path", repo);
    cJSON_AddStringToObject(p, "question", "Which function multiplies?");
    cJSON_AddNumberToObject(p, "max_tokens", 2);
    int rc;
    cJSON *r = call("repo.ask", p, &rc);
    assert_int_equal(rc, 0);
    cJSON *u = cJSON_GetObjectItem(r, "usage");
    int n = num(u, "prompt_tokens");
    *cached = num(u, "cached_tokens");
    cJSON_Delete(r);
    return n;
}

static void long_edits_are_overlaid_then_rebased(void **state)
{
    (void)state;
    if (!have_tokenizer)
        skip();
    test_sh("cd %s && git checkout -q -- . && git clean -qfd", repo);
    extra1 = "--overlay-threshold";
    extra2 = "64";
    extra3 = "--rebase-idle-ms";
    extra4 = "1500";
    start();
    cJSON *s = open_repo();
    int prompt = num(s, "prompt_tokens"), computed = num(s, "computed_tokens");
    cJSON_Delete(s);
    int cached;
    int before = ask_prompt_tokens(&cached);
    assert_int_equal(cached, prompt);
    /* an edit to the first file: a re-prefill would recompute nearly everything */
    test_sh("cd %s && printf 'int op0(int a, int b)\\n{\\n    return a + b + 1000;\\n}\\n' > f00.c", repo);
    int overlaid = 0;
    for (int i = 0; i < 200 && !overlaid; i++) {
        s = status();
        overlaid = num(s, "overlay_files") == 1;
        if (overlaid) {
            /* the resident state is untouched: nothing was recomputed */
            assert_int_equal(num(s, "prompt_tokens"), prompt);
            assert_int_equal(num(s, "computed_tokens"), computed);
            assert_string_equal(cJSON_GetObjectItem(s, "phase")->valuestring, "ready");
        }
        cJSON_Delete(s);
        if (!overlaid)
            usleep(20000);
    }
    assert_true(overlaid);
    /* questions now carry the edited file after the repository block, and still hit the prefix */
    int with_overlay = ask_prompt_tokens(&cached);
    assert_int_equal(cached, prompt);
    assert_true(with_overlay > before + 20);
    /* once idle, the edit is re-based: the prompt changes and the overlay goes */
    int rebased = 0;
    for (int i = 0; i < 600 && !rebased; i++) {
        s = status();
        rebased = num(s, "rebases") >= 1 && num(s, "overlay_files") == 0 &&
                  strcmp(cJSON_GetObjectItem(s, "phase")->valuestring, "ready") == 0;
        if (rebased) {
            assert_int_equal(num(s, "restored_tokens") + num(s, "computed_tokens"), num(s, "prompt_tokens"));
            printf("# overlay: %d -> %d prompt tokens per question; re-based after idle: %d restored, %d recomputed\n",
                   before, with_overlay, num(s, "restored_tokens"), num(s, "computed_tokens"));
        }
        cJSON_Delete(s);
        if (!rebased)
            usleep(100000);
    }
    assert_true(rebased);
    int after = ask_prompt_tokens(&cached);
    assert_true(after < with_overlay);
    stop();
    extra1 = extra2 = extra3 = extra4 = NULL;
}

static void sigterm_checkpoints_a_prefill(void **state)
{
    (void)state;
    if (!have_tokenizer)
        skip();
    test_sh("cd %s && git checkout -q -- . && git clean -qfd", repo);
    struct ctx_err e = {0};
    /* a fresh cache, checkpoints far apart: only the shutdown's checkpoint can save the work */
    test_sh("rm -rf '%s'", cache);
    extra1 = "--checkpoint-every";
    extra2 = "1000000";
    start();
    struct ctxd_client *c;
    assert_int_equal(ctxd_client_connect(sock, &c, &e), 0);
    cJSON *p = cJSON_CreateObject(), *r = NULL;
    cJSON_AddStringToObject(p, "path", repo);
    assert_int_equal(ctxd_client_call(c, "repo.open", p, NULL, NULL, 10000, &r, &e), 0);
    cJSON_Delete(r);
    ctxd_client_close(c);
    /* wait until part of the prefix is resident, then SIGTERM */
    int resident = 0, prompt = 0;
    for (int i = 0; i < 600 && resident < 256; i++) {
        cJSON *s = status();
        resident = num(s, "resident_tokens");
        prompt = cJSON_GetObjectItem(s, "prompt_tokens") ? num(s, "prompt_tokens") : 0;
        cJSON_Delete(s);
        usleep(10000);
    }
    assert_true(resident >= 256);
    stop();
    extra1 = extra2 = NULL;
    start();
    cJSON *s = open_repo();
    printf("# SIGTERM at %d of %d tokens; the restart restored %d\n", resident, prompt, num(s, "restored_tokens"));
    assert_true(num(s, "restored_tokens") >= 256);
    assert_true(num(s, "restored_tokens") >= resident - 128 || num(s, "restored_tokens") == num(s, "prompt_tokens"));
    cJSON_Delete(s);
    stop();
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return 2;
    ctxd_bin = argv[1];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(restart_edit_corrupt),
        cmocka_unit_test(live_edits_are_followed),
        cmocka_unit_test(long_edits_are_overlaid_then_rebased),
        cmocka_unit_test(sigterm_checkpoints_a_prefill),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
