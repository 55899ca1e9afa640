/* Integration: unsaved editor buffers in a real ctxd (buffer.update / buffer.close). The agent's
 * tools read a client's buffers instead of the disk (read_file, find_symbol), refuse to edit a
 * buffered file in ask mode, the resident prompt follows buffers through the live-edit path, a
 * disconnect drops a client's buffers, and bad params are refused. The bundled default model's
 * tokens are forced with --forced-completions (one daemon; the completions are consumed in the
 * order the tests run). argv[1] = ctxd. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
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

#define DISK "int add(int a, int b)\n{\n    return a - b;\n}\n"
#define UNSAVED "int add(int a, int b)\n{\n    return a + b; /* unsaved fix */\n}\n\nint only_in_buffer(void)\n{\n    return 7;\n}\n"

static const char *ctxd_bin;
static char dir[64], sock[128], repo[128], logpath[128], forced[128], mathc[192];
static pid_t pid;
static int have_tokenizer;

static const char *str(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItem(o, k);
    return cJSON_IsString(v) ? v->valuestring : "";
}

static int num(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItem(o, k);
    return cJSON_IsNumber(v) ? v->valueint : -1;
}

static struct ctxd_client *conn(void)
{
    struct ctxd_client *c;
    struct ctx_err e = {0};
    assert_int_equal(ctxd_client_connect(sock, &c, &e), 0);
    return c;
}

/* A call on connection c (NULL: a fresh one); *rc the result code, err the message. */
static cJSON *call_on(struct ctxd_client *c, const char *method, cJSON *params, ctxd_notify_fn fn, void *ud, int *rc,
                      char *err)
{
    struct ctxd_client *own = c ? NULL : conn();
    struct ctx_err e = {0};
    cJSON *r = NULL;
    *rc = ctxd_client_call(c ? c : own, method, params, fn, ud, 120000, &r, &e);
    if (err)
        snprintf(err, 512, "%s", e.msg);
    if (own)
        ctxd_client_close(own);
    return r;
}

static cJSON *buffer_update(struct ctxd_client *c, const char *path, const char *text, int version, int *rc, char *err)
{
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "path", path);
    cJSON_AddStringToObject(p, "text", text);
    cJSON_AddNumberToObject(p, "version", version);
    return call_on(c, "buffer.update", p, NULL, NULL, rc, err);
}

static cJSON *status(void)
{
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "path", repo);
    int rc;
    cJSON *s = call_on(NULL, "repo.status", p, NULL, NULL, &rc, NULL);
    assert_int_equal(rc, 0);
    return s;
}

/* Wait until the resident state is ready with at least `updates` updates applied, `buffers`
 * buffers and (tokens >= 0) that many prompt tokens; its status. */
static cJSON *wait_resident(int updates, int buffers, int tokens)
{
    for (int i = 0; i < 1500; i++) {
        cJSON *s = status();
        if (num(cJSON_GetObjectItem(s, "last_update"), "updates") >= updates && strcmp(str(s, "phase"), "ready") == 0 &&
            num(s, "pending_changes") == 0 && num(s, "buffers") == buffers && (tokens < 0 || num(s, "prompt_tokens") == tokens))
            return s;
        cJSON_Delete(s);
        usleep(20000);
    }
    fail_msg("the resident state did not reach %d updates, %d buffers, %d tokens", updates, buffers, tokens);
    return NULL;
}

static int tokens_disk; /* the prompt's tokens with the files as on disk */

struct seen {
    cJSON *events;
};

static int on_note(void *ud, const char *method, const cJSON *params)
{
    struct seen *sn = ud;
    if (strcmp(method, "agent.event") == 0)
        cJSON_AddItemToArray(sn->events, cJSON_Duplicate(params, 1));
    return 0;
}

static const cJSON *event(const struct seen *sn, const char *kind, const char *tool)
{
    const cJSON *ev;
    cJSON_ArrayForEach(ev, sn->events) {
        if (strcmp(str(ev, "kind"), kind) == 0 && (!tool || strcmp(str(ev, "tool"), tool) == 0))
            return ev;
    }
    return NULL;
}

/* agent.run on connection c (NULL: a fresh one), buffers_from > 0 names the buffers' connection. */
static cJSON *run(struct ctxd_client *c, const char *mode, const char *prompt, long buffers_from, struct seen *sn)
{
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "path", repo);
    cJSON_AddStringToObject(p, "mode", mode);
    cJSON_AddStringToObject(p, "prompt", prompt);
    if (buffers_from > 0)
        cJSON_AddNumberToObject(p, "buffers_from", (double)buffers_from);
    int rc;
    char err[512];
    cJSON *r = call_on(c, "agent.run", p, on_note, sn, &rc, err);
    if (rc)
        fail_msg("agent.run failed: %s", err);
    return r;
}

static char *slurp(const char *path)
{
    char *t = NULL;
    size_t n;
    struct ctx_err e = {0};
    return ctx_read_file(path, 1 << 20, &t, &n, &e) ? NULL : t;
}

static int group_setup(void **state)
{
    (void)state;
    have_tokenizer = dh_have_tokenizer();
    if (!have_tokenizer)
        return 0;
    if (dh_workdir("buffers", dir, sizeof dir))
        return -1;
    snprintf(sock, sizeof sock, "%s/ctxd.sock", dir);
    snprintf(repo, sizeof repo, "%s/repo", dir);
    snprintf(logpath, sizeof logpath, "%s/ctxd.log", dir);
    snprintf(forced, sizeof forced, "%s/forced.json", dir);
    snprintf(mathc, sizeof mathc, "%s/src/math.c", repo);
    test_sh("git init -q -b main '%s' && cd '%s' && git config user.email t@example.com && git config user.name T && "
       "mkdir -p src && printf '" DISK "' > src/math.c && printf 'int add(int a, int b);\\n' > src/math.h && "
       "git add -A && git commit -q -m one",
       repo, repo);
    /* the runs below, in order */
    static const char *const completions[] = {
        CALLS(INVOKE("read_file", PS("path", "src/math.c"))), FINAL("It adds."),
        CALLS(INVOKE("read_file", PS("path", "src/math.c"))), FINAL("Seen from the other connection."),
        CALLS(INVOKE("read_file", PS("path", "src/math.c"))), FINAL("The disk version."),
        CALLS(INVOKE("find_symbol", PS("name", "only_in_buffer"))), FINAL("Found it."),
        CALLS(INVOKE("edit_file", PS("path", "src/math.c") "\n" PS("old_string", "return 7;") "\n"
                                      PS("new_string", "return 8;"))),
        FINAL("I could not edit it."),
        CALLS(INVOKE("edit_file", PS("path", "src/math.c") "\n" PS("old_string", "return 7;") "\n"
                                      PS("new_string", "return 8;"))),
        FINAL("Suggested."), NULL};
    cJSON *arr = cJSON_CreateArray();
    for (const char *const *c = completions; *c; c++)
        cJSON_AddItemToArray(arr, cJSON_CreateString(*c));
    char *text = cJSON_PrintUnformatted(arr);
    FILE *f = fopen(forced, "w");
    if (!f)
        return -1;
    fputs(text, f);
    fclose(f);
    free(text);
    cJSON_Delete(arr);
    char *const argv[] = {(char *)ctxd_bin, "--socket", sock, "--no-cache", "--budget", "4096", "--threads", "2",
                          "--no-watch", "--debounce-ms", "50", "--state", dir, "--forced-completions", forced, NULL};
    pid = dh_start(sock, logpath, argv);
    if (pid <= 0)
        return -1;
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "path", repo);
    cJSON_AddBoolToObject(p, "wait", 1);
    int rc;
    cJSON *r = call_on(NULL, "repo.open", p, NULL, NULL, &rc, NULL);
    cJSON_Delete(r);
    return rc;
}

static int group_teardown(void **state)
{
    (void)state;
    return dh_teardown(pid, dir);
}

/* The tools of a run on the buffer's connection read the unsaved text; so does a run on another
 * connection that names it (buffers_from); a run of a third connection reads the disk. The
 * resident prompt follows the buffer (an update, more prompt tokens) and repo.status counts it. */
static void read_file_sees_buffer(void **state)
{
    (void)state;
    if (!have_tokenizer)
        skip();
    cJSON *s0 = status();
    int tokens0 = num(s0, "prompt_tokens"), updates0 = num(cJSON_GetObjectItem(s0, "last_update"), "updates");
    if (updates0 < 0)
        updates0 = 0;
    assert_int_equal(num(s0, "buffers"), 0);
    tokens_disk = tokens0;
    cJSON_Delete(s0);
    struct ctxd_client *ed = conn();
    int rc;
    char err[512];
    cJSON *u = buffer_update(ed, mathc, UNSAVED, 3, &rc, err);
    assert_int_equal(rc, 0);
    assert_string_equal(str(u, "path"), "src/math.c");
    assert_int_equal(num(u, "version"), 3);
    assert_int_equal(num(u, "buffers"), 1);
    assert_int_equal(num(u, "bytes"), (int)strlen(UNSAVED));
    long client = num(u, "client");
    assert_true(client > 0);
    cJSON_Delete(u);

    struct seen sn = {cJSON_CreateArray()};
    cJSON *r = run(ed, "ask", "What does add do?", 0, &sn);
    assert_string_equal(str(r, "stop"), "final");
    const cJSON *res = event(&sn, "tool_result", "read_file");
    assert_non_null(res);
    assert_non_null(strstr(str(res, "text"), "return a + b; /* unsaved fix */"));
    assert_null(strstr(str(res, "text"), "a - b"));
    cJSON_Delete(r);
    cJSON_Delete(sn.events);

    /* the resident prompt shows the buffer: an update happened and the prompt grew */
    cJSON *s1 = wait_resident(updates0 + 1, 1, -1);
    assert_true(num(s1, "prompt_tokens") > tokens0);
    cJSON_Delete(s1);

    sn.events = cJSON_CreateArray();
    r = run(NULL, "ask", "And from elsewhere?", client, &sn);
    assert_non_null(strstr(str(event(&sn, "tool_result", "read_file"), "text"), "unsaved fix"));
    cJSON_Delete(r);
    cJSON_Delete(sn.events);

    sn.events = cJSON_CreateArray();
    r = run(NULL, "ask", "And without the buffers?", 0, &sn);
    const char *t = str(event(&sn, "tool_result", "read_file"), "text");
    assert_non_null(strstr(t, "return a - b;"));
    assert_null(strstr(t, "unsaved"));
    cJSON_Delete(r);
    cJSON_Delete(sn.events);
    ctxd_client_close(ed);
}

/* find_symbol finds a definition that exists only in the buffer; an edit of the buffered file in
 * ask mode is refused (the disk is unchanged); suggest mode edits the buffer text and diffs
 * against it; buffer.close brings back the disk text; a disconnect drops the buffers. */
static void symbols_edits_close_disconnect(void **state)
{
    (void)state;
    if (!have_tokenizer)
        skip();
    /* the previous test's connection closed: its buffer is gone and the prompt is the disk's again */
    cJSON *s1 = wait_resident(0, 0, tokens_disk);
    int updates1 = num(cJSON_GetObjectItem(s1, "last_update"), "updates");
    cJSON_Delete(s1);

    struct ctxd_client *ed = conn();
    int rc;
    cJSON *u = buffer_update(ed, mathc, UNSAVED, 1, &rc, NULL);
    assert_int_equal(rc, 0);
    cJSON_Delete(u);
    struct seen sn = {cJSON_CreateArray()};
    cJSON *r = run(ed, "ask", "Where is only_in_buffer?", 0, &sn);
    const cJSON *res = event(&sn, "tool_result", "find_symbol");
    assert_non_null(res);
    assert_non_null(strstr(str(res, "text"), "src/math.c:6"));
    cJSON_Delete(r);
    cJSON_Delete(sn.events);

    sn.events = cJSON_CreateArray();
    r = run(ed, "ask", "Make it return 8.", 0, &sn);
    res = event(&sn, "tool_result", "edit_file");
    assert_non_null(res);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(res, "is_error")));
    assert_non_null(strstr(str(res, "text"), "unsaved changes"));
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(r, "changed")), 0);
    char *disk = slurp(mathc);
    assert_string_equal(disk, DISK);
    free(disk);
    cJSON_Delete(r);
    cJSON_Delete(sn.events);

    sn.events = cJSON_CreateArray();
    r = run(ed, "suggest", "Make it return 8.", 0, &sn);
    const char *diff = str(r, "diff");
    assert_non_null(strstr(diff, "-    return 7;\n+    return 8;\n"));
    assert_null(strstr(diff, "a - b")); /* against the buffer, not the disk */
    cJSON_Delete(r);
    cJSON_Delete(sn.events);

    /* buffer.close: the disk text again */
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "path", mathc);
    cJSON *c = call_on(ed, "buffer.close", p, NULL, NULL, &rc, NULL);
    assert_int_equal(rc, 0);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(c, "closed")));
    assert_int_equal(num(c, "buffers"), 0);
    cJSON_Delete(c);
    cJSON *s2 = wait_resident(updates1 + 2, 0, tokens_disk);
    int updates2 = num(cJSON_GetObjectItem(s2, "last_update"), "updates");
    cJSON_Delete(s2);
    p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "path", mathc);
    c = call_on(ed, "buffer.close", p, NULL, NULL, &rc, NULL);
    assert_int_equal(rc, 0);
    assert_true(cJSON_IsFalse(cJSON_GetObjectItem(c, "closed")));
    cJSON_Delete(c);

    /* a disconnect closes the client's buffers */
    u = buffer_update(ed, mathc, UNSAVED, 2, &rc, NULL);
    assert_int_equal(rc, 0);
    cJSON_Delete(u);
    cJSON *s3 = wait_resident(updates2 + 1, 1, -1);
    assert_true(num(s3, "prompt_tokens") > tokens_disk);
    cJSON_Delete(s3);
    ctxd_client_close(ed);
    cJSON *s4 = wait_resident(updates2 + 2, 0, tokens_disk);
    cJSON_Delete(s4);
}

static void expect_error(cJSON *params, const char *method, int code, const char *needle)
{
    int rc;
    char err[512];
    cJSON *r = call_on(NULL, method, params, NULL, NULL, &rc, err);
    if (rc != code || !strstr(err, needle))
        fail_msg("%s: got %d \"%s\", expected %d with \"%s\"", method, rc, err, code, needle);
    cJSON_Delete(r);
}

static void bad_params(void **state)
{
    (void)state;
    if (!have_tokenizer)
        skip();
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "path", mathc);
    expect_error(p, "buffer.update", CTX_EINVAL, "\"text\"");
    p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "path", "src/math.c");
    cJSON_AddStringToObject(p, "text", "x");
    expect_error(p, "buffer.update", CTX_EINVAL, "absolute");
    p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "path", mathc);
    cJSON_AddStringToObject(p, "text", "x");
    cJSON_AddStringToObject(p, "txet", "x");
    expect_error(p, "buffer.update", CTX_EINVAL, "txet");
    p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "path", mathc);
    cJSON_AddStringToObject(p, "text", "x");
    cJSON_AddStringToObject(p, "version", "1");
    expect_error(p, "buffer.update", CTX_EINVAL, "\"version\"");
    /* no open repository holds it: the error names the path */
    char other[160];
    snprintf(other, sizeof other, "%s/elsewhere.c", dir);
    p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "path", other);
    cJSON_AddStringToObject(p, "text", "x");
    expect_error(p, "buffer.update", CTX_ENOTFOUND, other);
    p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "path", other);
    expect_error(p, "buffer.close", CTX_ENOTFOUND, other);
    /* a directory, the .git folder, a missing directory */
    char path[200];
    snprintf(path, sizeof path, "%s/src", repo);
    p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "path", path);
    cJSON_AddStringToObject(p, "text", "x");
    expect_error(p, "buffer.update", CTX_EINVAL, "not a regular file");
    snprintf(path, sizeof path, "%s/.git/config", repo);
    p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "path", path);
    cJSON_AddStringToObject(p, "text", "x");
    expect_error(p, "buffer.update", CTX_EINVAL, ".git");
    snprintf(path, sizeof path, "%s/nodir/a.c", repo);
    p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "path", path);
    cJSON_AddStringToObject(p, "text", "x");
    expect_error(p, "buffer.update", CTX_ENOTFOUND, "nodir");
    /* over the repository's file size cap (1 MiB) */
    size_t big = (1u << 20) + 1;
    char *t = malloc(big + 1);
    memset(t, 'a', big);
    t[big] = 0;
    p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "path", mathc);
    cJSON_AddStringToObject(p, "text", t);
    free(t);
    expect_error(p, "buffer.update", CTX_ERANGE, "file size cap");
    /* not UTF-8 */
    p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "path", mathc);
    cJSON_AddStringToObject(p, "text", "ok\xC0\xAF");
    expect_error(p, "buffer.update", CTX_EINVAL, "UTF-8 at byte 2");
    /* an older version than the buffer's is refused; a new file (not on disk yet) is fine */
    struct ctxd_client *ed = conn();
    int rc;
    char err[512];
    cJSON *u = buffer_update(ed, mathc, "int x;\n", 5, &rc, err);
    assert_int_equal(rc, 0);
    cJSON_Delete(u);
    u = buffer_update(ed, mathc, "int y;\n", 4, &rc, err);
    assert_int_equal(rc, CTX_EINVAL);
    assert_non_null(strstr(err, "older"));
    snprintf(path, sizeof path, "%s/src/new.c", repo);
    u = buffer_update(ed, path, "int fresh;\n", 1, &rc, err);
    assert_int_equal(rc, 0);
    assert_string_equal(str(u, "path"), "src/new.c");
    assert_int_equal(num(u, "buffers"), 2);
    cJSON_Delete(u);
    ctxd_client_close(ed);
    p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "path", repo);
    cJSON_AddStringToObject(p, "prompt", "x");
    cJSON_AddNumberToObject(p, "buffers_from", 0);
    expect_error(p, "agent.run", CTX_EINVAL, "buffers_from");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: test_buffers CTXD\n");
        return 2;
    }
    ctxd_bin = argv[1];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(read_file_sees_buffer),
        cmocka_unit_test(symbols_edits_close_disconnect),
        cmocka_unit_test(bad_params),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
