/* Integration: session.* on a real ctxd — conversations grow, persist across a restart and resume,
 * can be cancelled (nothing half-stored) and deleted. argv[1] = ctxd. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client.h"
#include "harness.h"
#include "json.h"

static const char *ctxd_bin, *ctx_bin;
static char dir[64], sock[128], repo[128], state[128], logpath[128];
static pid_t pid;
static int have_tokenizer;

static void start(void)
{
    char *const argv[] = {(char *)ctxd_bin, "--socket", sock, "--state", state, "--no-cache", "--budget", "4096",
                          "--threads", "2", "--no-watch", NULL};
    pid = dh_start(sock, logpath, argv);
    if (pid > 0)
        return;
    fail_msg("ctxd did not start");
}

static void stop(void) { assert_true(dh_stop(&pid) == 0); }

static cJSON *call(const char *method, cJSON *params, int *rc, char *err)
{
    struct ctxd_client *c;
    struct ctx_err e = {0};
    assert_int_equal(ctxd_client_connect(sock, &c, &e), 0);
    cJSON *r = NULL;
    *rc = ctxd_client_call(c, method, params, NULL, NULL, 120000, &r, &e);
    if (err)
        snprintf(err, 512, "%s", e.msg);
    ctxd_client_close(c);
    return r;
}

static cJSON *send_msg(const char *id, const char *text, int max_tokens, int *rc)
{
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "id", id);
    cJSON_AddStringToObject(p, "message", text);
    cJSON_AddNumberToObject(p, "max_tokens", max_tokens);
    return call("session.send", p, rc, NULL);
}

static int group_setup(void **state_)
{
    (void)state_;
    have_tokenizer = dh_have_tokenizer();
    if (!have_tokenizer)
        return 0;
    if (dh_workdir("sess", dir, sizeof dir))
        return -1;
    snprintf(sock, sizeof sock, "%s/ctxd.sock", dir);
    snprintf(repo, sizeof repo, "%s/repo", dir);
    snprintf(state, sizeof state, "%s/state", dir);
    snprintf(logpath, sizeof logpath, "%s/ctxd.log", dir);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "git init -q %s && cd %s && git config user.email t@example.com && git config user.name T"
             " && mkdir -p src && printf 'int add(int a, int b)\\n{\\n    return a + b;\\n}\\n' > src/math.c"
             " && git add -A && git commit -q -m x", repo, repo);
    return system(cmd) == 0 ? 0 : -1;
}

static int group_teardown(void **state_)
{
    (void)state_;
    return dh_teardown(pid, dir);
}

static void conversations_persist_and_resume(void **state_)
{
    (void)state_;
    if (!have_tokenizer)
        skip();
    start();
    int rc;
    char err[512];
    cJSON *p = cJSON_CreateObject();
    char sub[160];
    snprintf(sub, sizeof sub, "%s/src", repo);
    cJSON_AddStringToObject(p, "path", sub);
    cJSON_AddStringToObject(p, "mode", "chat");
    cJSON *s = call("session.create", p, &rc, err);
    assert_int_equal(rc, 0);
    char id[64];
    snprintf(id, sizeof id, "%s", cJSON_GetObjectItem(s, "id")->valuestring);
    assert_string_equal(cJSON_GetObjectItem(s, "repo_root")->valuestring, repo);
    cJSON_Delete(s);

    cJSON *r1 = send_msg(id, "Where is add defined?", 6, &rc);
    assert_int_equal(rc, 0);
    assert_string_equal(cJSON_GetObjectItem(r1, "session")->valuestring, id);
    int p1 = cJSON_GetObjectItem(cJSON_GetObjectItem(r1, "usage"), "prompt_tokens")->valueint;
    cJSON *r2 = send_msg(id, "And what does it return?", 6, &rc);
    assert_int_equal(rc, 0);
    int p2 = cJSON_GetObjectItem(cJSON_GetObjectItem(r2, "usage"), "prompt_tokens")->valueint;
    assert_true(p2 > p1 + 6); /* the second turn carries the first */
    cJSON_Delete(r1);
    cJSON_Delete(r2);

    p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "id", id);
    s = call("session.get", p, &rc, err);
    assert_int_equal(rc, 0);
    cJSON *ms = cJSON_GetObjectItem(s, "messages");
    assert_int_equal(cJSON_GetArraySize(ms), 4);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(ms, 0), "content")->valuestring, "Where is add defined?");
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(ms, 1), "role")->valuestring, "assistant");
    assert_true(cJSON_IsString(cJSON_GetArrayItem(cJSON_GetObjectItem(s, "raw"), 1)));
    assert_string_equal(cJSON_GetObjectItem(s, "title")->valuestring, "Where is add defined?");
    cJSON_Delete(s);
    stop();

    /* after a restart the session is listed and continues */
    start();
    p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "path", repo);
    s = call("session.list", p, &rc, err);
    assert_int_equal(rc, 0);
    cJSON *l = cJSON_GetObjectItem(s, "sessions");
    assert_int_equal(cJSON_GetArraySize(l), 1);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(l, 0), "id")->valuestring, id);
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(l, 0), "n_messages")->valueint, 4);
    cJSON_Delete(s);
    cJSON *r3 = send_msg(id, "Thanks.", 4, &rc);
    assert_int_equal(rc, 0);
    int p3 = cJSON_GetObjectItem(cJSON_GetObjectItem(r3, "usage"), "prompt_tokens")->valueint;
    assert_true(p3 > p2);
    cJSON_Delete(r3);

    /* errors */
    assert_null(send_msg("feedfacefeedface", "x", 4, &rc));
    assert_int_equal(rc, CTX_ENOTFOUND);
    p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "id", id);
    assert_null(call("session.send", p, &rc, err));
    assert_int_equal(rc, CTX_EINVAL);
    assert_non_null(strstr(err, "message"));
    p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "path", "/");
    assert_null(call("session.create", p, &rc, err));
    assert_int_equal(rc, CTX_ENOTFOUND);
    assert_non_null(strstr(err, "not inside a git repository"));

    /* delete */
    p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "id", id);
    s = call("session.delete", p, &rc, err);
    assert_int_equal(rc, 0);
    cJSON_Delete(s);
    p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "id", id);
    assert_null(call("session.get", p, &rc, err));
    assert_int_equal(rc, CTX_ENOTFOUND);
    stop();
}

/* Run a shell pipeline; return its stdout (static buffer). */
static const char *shout(const char *fmt, ...)
{
    static char out[1 << 16];
    char cmd[4096], path[160];
    snprintf(path, sizeof path, "%s/out.txt", dir);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    snprintf(cmd + n, sizeof cmd - (size_t)n, " > '%s' 2>/dev/null", path);
    if (system(cmd) != 0)
        fail_msg("command failed: %s", cmd);
    FILE *f = fopen(path, "r");
    size_t k = fread(out, 1, sizeof out - 1, f);
    fclose(f);
    out[k] = 0;
    return out;
}

static void the_cli_drives_sessions(void **state_)
{
    (void)state_;
    if (!have_tokenizer)
        skip();
    start();
    /* ctx init and ctx ask through the real ctx */
    const char *o = shout("'%s' --socket '%s' --json init '%s' | tail -n 1", ctx_bin, sock, repo);
    assert_non_null(strstr(o, "\"phase\":\"ready\""));
    o = shout("'%s' --socket '%s' --json ask --no-tools --repo '%s' --max-tokens 3 'Where is add?' | tail -n 1",
              ctx_bin, sock, repo);
    assert_non_null(strstr(o, "\"finish_reason\""));
    /* ctx ask runs the agent: 3 tokens of budget end it after its first step */
    o = shout("'%s' --socket '%s' --json ask --repo '%s' --max-tokens 3 'Where is add?' | tail -n 1", ctx_bin, sock,
              repo);
    assert_non_null(strstr(o, "\"stop\":\"token_budget\""));
    assert_non_null(strstr(o, "\"steps\":1"));
    /* a conversation: the first line creates the session, /sessions lists it */
    o = shout("printf 'Where is add defined?\\n/sessions\\n/quit\\n' | '%s' --socket '%s' chat --repo '%s' --json "
              "--max-tokens 3", ctx_bin, sock, repo);
    const char *idp = strstr(o, "{\"id\":\"");
    assert_non_null(idp);
    char id[17];
    memcpy(id, idp + 7, 16);
    id[16] = 0;
    assert_non_null(strstr(o, "\"session\":\""));
    assert_non_null(strstr(o, "\"n_messages\":2"));
    /* resume it: the history is there and grows */
    o = shout("printf 'And sub?\\n' | '%s' --socket '%s' resume %s --json --max-tokens 3", ctx_bin, sock, id);
    assert_non_null(strstr(o, id));
    o = shout("'%s' --socket '%s' sessions --repo '%s' --json", ctx_bin, sock, repo);
    assert_non_null(strstr(o, id));
    assert_non_null(strstr(o, "\"n_messages\":4"));
    /* the human listing names it too */
    o = shout("'%s' --socket '%s' sessions", ctx_bin, sock);
    assert_non_null(strstr(o, id));
    assert_non_null(strstr(o, "Where is add defined?"));
    /* repo.close: an idle repository is forgotten; status says so */
    o = shout("'%s' --socket '%s' --json status", ctx_bin, sock);
    assert_non_null(strstr(o, "\"repos\":[{"));
    stop();
}

int main(int argc, char **argv)
{
    if (argc < 3)
        return 2;
    ctxd_bin = argv[1];
    ctx_bin = argv[2];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(conversations_persist_and_resume),
        cmocka_unit_test(the_cli_drives_sessions),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
