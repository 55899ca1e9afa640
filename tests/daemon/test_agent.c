/* Integration: the agent end to end in a real ctxd (agent.run / agent.answer / agent.cancel /
 * agent.undo and the ctx commands over them). The bundled default model's choice of tokens is
 * forced with --forced-completions (teacher forcing: every forced token still runs through the
 * engine's forward pass), so the loop, the DSML parser, the tools, the tokenizer and the engine
 * are the real ones. argv[1] = ctxd, argv[2] = ctx. */
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
#include <sys/stat.h>
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
#define PJ(name, v) "<" D "parameter name=\"" name "\" string=\"false\">" v "</" D "parameter>"
#define FINAL(text) "</think>" text EOS

static const char *ctxd_bin, *ctx_bin;
static char dir[64], sock[128], repo[128], logpath[128], forced[128], policy[128];
static pid_t pid;
static int have_tokenizer;

/* A fresh repository (the same content every time) and a ctxd forced to produce `completions`. */
static void start(const char *const *completions)
{
    test_sh("rm -rf '%s' && git init -q -b main '%s' && cd '%s' && git config user.email t@example.com && "
       "git config user.name T && mkdir -p src && "
       "printf 'int add(int a, int b)\\n{\\n    return a - b;\\n}\\n' > src/math.c && "
       "printf 'int add(int a, int b);\\n' > src/math.h && git add -A && git commit -q -m one",
       repo, repo, repo);
    cJSON *arr = cJSON_CreateArray();
    for (const char *const *c = completions; *c; c++)
        cJSON_AddItemToArray(arr, cJSON_CreateString(*c));
    char *text = cJSON_PrintUnformatted(arr);
    FILE *f = fopen(forced, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    free(text);
    cJSON_Delete(arr);
    /* every test's repository is the same: after the first, the prefix comes from the KV cache */
    char cache[160];
    snprintf(cache, sizeof cache, "%s/kv", dir);
    char *const argv[] = {(char *)ctxd_bin, "--socket", sock, "--cache", cache, "--checkpoint-every", "256",
                          "--budget", "4096", "--threads", "2",
                          "--no-watch", "--state", dir, "--forced-completions", forced, "--policy", policy,
                          "--approval-timeout-ms", "20000", NULL};
    pid = dh_start(sock, logpath, argv);
    if (pid <= 0)
        fail_msg("ctxd did not start");
}

static void stop(void) { assert_true(dh_stop(&pid) == 0); }

/* What the notifications of one agent.run showed. */
struct seen {
    cJSON *events;        /* the agent.event params, in order */
    int approvals;
    int answers[4];       /* 1 allow, 0 refuse, -1 cancel the run instead */
    int run;
    const char *other_repo; /* asked about while the first approval waits */
    int other_ok;
};

static cJSON *call(const char *method, cJSON *params, struct seen *sn, int *rc, char *err);

static int on_note(void *ud, const char *method, const cJSON *params)
{
    struct seen *sn = ud;
    const cJSON *run = cJSON_GetObjectItem(params, "run");
    if (cJSON_IsNumber(run))
        sn->run = run->valueint;
    if (strcmp(method, "agent.event") == 0) {
        cJSON_AddItemToArray(sn->events, cJSON_Duplicate(params, 1));
    } else if (strcmp(method, "agent.approve") == 0) {
        int k = sn->approvals++;
        int rc;
        if (sn->other_repo && k == 0) {
            /* the engine is not held while the agent waits: another repository's question runs */
            struct ctxd_client *c;
            struct ctx_err e = {0};
            assert_int_equal(ctxd_client_connect(sock, &c, &e), 0);
            cJSON *q = cJSON_CreateObject(), *a = NULL;
            cJSON_AddStringToObject(q, "path", sn->other_repo);
            cJSON_AddStringToObject(q, "question", "What is in it?");
            cJSON_AddNumberToObject(q, "max_tokens", 2);
            sn->other_ok = ctxd_client_call(c, "repo.ask", q, NULL, NULL, 15000, &a, &e) == 0;
            if (!sn->other_ok)
                fprintf(stderr, "repo.ask during the approval: %s\n", e.msg);
            cJSON_Delete(a);
            ctxd_client_close(c);
        }
        cJSON *p = cJSON_CreateObject(), *r;
        /* answered on a second connection: the first one is waiting for the run's reply */
        if (sn->answers[k] < 0) {
            cJSON_AddNumberToObject(p, "run", sn->run);
            r = call("agent.cancel", p, NULL, &rc, NULL);
            assert_int_equal(cJSON_GetObjectItem(r, "cancelled")->valueint, 1);
        } else {
            cJSON_AddNumberToObject(p, "approval", cJSON_GetObjectItem(params, "approval")->valuedouble);
            cJSON_AddBoolToObject(p, "allow", sn->answers[k]);
            r = call("agent.answer", p, NULL, &rc, NULL);
        }
        assert_int_equal(rc, 0);
        cJSON_Delete(r);
    }
    return 0;
}

static cJSON *call(const char *method, cJSON *params, struct seen *sn, int *rc, char *err)
{
    struct ctxd_client *c;
    struct ctx_err e = {0};
    assert_int_equal(ctxd_client_connect(sock, &c, &e), 0);
    cJSON *r = NULL;
    *rc = ctxd_client_call(c, method, params, sn ? on_note : NULL, sn, 120000, &r, &e);
    if (err)
        snprintf(err, 512, "%s", e.msg);
    ctxd_client_close(c);
    return r;
}

static cJSON *run(const char *mode, const char *prompt, int max_steps, struct seen *sn)
{
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "path", repo);
    cJSON_AddStringToObject(p, "mode", mode);
    if (prompt)
        cJSON_AddStringToObject(p, "prompt", prompt);
    if (max_steps)
        cJSON_AddNumberToObject(p, "max_steps", max_steps);
    int rc;
    char err[512];
    cJSON *r = call("agent.run", p, sn, &rc, err);
    if (rc)
        fail_msg("agent.run failed: %s", err);
    return r;
}

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

/* The first event of `kind` (and tool, if given). */
static const cJSON *event(const struct seen *sn, const char *kind, const char *tool, int nth)
{
    const cJSON *ev;
    cJSON_ArrayForEach(ev, sn->events) {
        if (strcmp(str(ev, "kind"), kind) == 0 && (!tool || strcmp(str(ev, "tool"), tool) == 0) && nth-- == 0)
            return ev;
    }
    return NULL;
}

static char *slurp(const char *path)
{
    char *t = NULL;
    size_t n;
    struct ctx_err e = {0};
    return ctx_read_file(path, 1 << 20, &t, &n, &e) ? NULL : t;
}

/* Run a command; its exit status, with stdout in out (static). */
static int shrun(char **out, const char *fmt, ...)
{
    static char buf[1 << 16];
    char cmd[4096], path[160];
    snprintf(path, sizeof path, "%s/out.txt", dir);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    snprintf(cmd + n, sizeof cmd - (size_t)n, " > '%s' 2>>'%s/cli.log'", path, dir);
    int st = system(cmd);
    FILE *f = fopen(path, "r");
    size_t k = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f)
        fclose(f);
    buf[k] = 0;
    *out = buf;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int group_setup(void **state)
{
    (void)state;
    have_tokenizer = dh_have_tokenizer();
    if (!have_tokenizer)
        return 0;
    if (dh_workdir("agent", dir, sizeof dir))
        return -1;
    snprintf(sock, sizeof sock, "%s/ctxd.sock", dir);
    snprintf(repo, sizeof repo, "%s/repo", dir);
    snprintf(logpath, sizeof logpath, "%s/ctxd.log", dir);
    snprintf(forced, sizeof forced, "%s/forced.json", dir);
    snprintf(policy, sizeof policy, "%s/policy.json", dir);
    /* 'echo' asks the client, 'rm' is denied; without namespaces the client is asked too */
    FILE *f = fopen(policy, "w");
    if (!f)
        return -1;
    fputs("{\"allow\": [], \"ask\": [\"echo *\"], \"deny\": [\"rm *\"], \"default\": \"deny\", \"fallback\": \"ask\"}\n",
          f);
    fclose(f);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    return dh_teardown(pid, dir);
}

/* A forced find_symbol call runs for real and its result goes back; the second step prefills only
 * what came after the first step's tokens (the state held them), and the final answer returns. */
static void tool_call_then_answer(void **state)
{
    (void)state;
    if (!have_tokenizer)
        skip();
    static const char *const c[] = {CALLS(INVOKE("find_symbol", PS("name", "add"))),
                                    FINAL("add is defined in src/math.c, line 1."), NULL};
    start(c);
    struct seen sn = {.events = cJSON_CreateArray()};
    cJSON *r = run("ask", "Where is add defined?", 0, &sn);
    assert_string_equal(str(r, "stop"), "final");
    assert_string_equal(str(r, "answer"), "add is defined in src/math.c, line 1.");
    assert_int_equal(num(r, "steps"), 2);
    const cJSON *tc = cJSON_GetArrayItem(cJSON_GetObjectItem(r, "tool_calls"), 0);
    assert_string_equal(str(tc, "tool"), "find_symbol");
    assert_string_equal(str(cJSON_GetObjectItem(tc, "arguments"), "name"), "add");
    assert_true(cJSON_IsFalse(cJSON_GetObjectItem(tc, "is_error")));
    /* the tool's real result, as events */
    const cJSON *res = event(&sn, "tool_result", "find_symbol", 0);
    assert_non_null(res);
    assert_non_null(strstr(str(res, "text"), "src/math.c:1: function add"));
    assert_non_null(event(&sn, "tool_call", "find_symbol", 0));
    assert_non_null(event(&sn, "step", NULL, 1));
    assert_int_equal(num(event(&sn, "step", NULL, 0), "request"), 1); /* the request's id */
    /* usage: step 2 continues the state of step 1 without re-reading anything */
    const cJSON *u = cJSON_GetObjectItem(r, "usage");
    const cJSON *steps = cJSON_GetObjectItem(u, "steps");
    assert_int_equal(cJSON_GetArraySize(steps), 2);
    const cJSON *s1 = cJSON_GetArrayItem(steps, 0), *s2 = cJSON_GetArrayItem(steps, 1);
    int resident = num(u, "resident_tokens");
    assert_true(resident > 500);
    assert_int_equal(num(s1, "cached_tokens"), resident);
    /* the forced call ends with its block (no end-of-sentence): every token of it was fed */
    assert_int_equal(num(s2, "cached_tokens"),
                     num(s1, "cached_tokens") + num(s1, "prompt_tokens") + num(s1, "completion_tokens"));
    /* step 2's prompt: end-of-sentence, the tool result turn and the assistant tag only */
    assert_true(num(s2, "prompt_tokens") > 5 && num(s2, "prompt_tokens") < 80);
    assert_int_equal(num(u, "prompt_tokens"), num(s1, "prompt_tokens") + num(s2, "prompt_tokens"));
    assert_int_equal(num(u, "restarts"), 0);
    assert_int_equal(num(r, "replay_mismatch"), 0);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(s1, "forced")));
    cJSON_Delete(r);
    cJSON_Delete(sn.events);
    stop();
}

/* Edits land on disk, are recorded, follow into the resident state, and ctx undo restores them
 * (a created file is removed). */
static void edit_then_undo(void **state)
{
    (void)state;
    if (!have_tokenizer)
        skip();
    static const char *const c[] = {
        CALLS(INVOKE("edit_file", PS("path", "src/math.c") "\n" PS("old_string", "a - b") "\n" PS("new_string", "a + b"))
                  "\n" INVOKE("write_file", PS("path", "src/new.c") "\n" PS("content", "int one(void) { return 1; }\n"))),
        FINAL("Fixed add and added one()."), NULL};
    start(c);
    struct seen sn = {.events = cJSON_CreateArray()};
    cJSON *r = run("ask", "Fix add.", 0, &sn);
    assert_string_equal(str(r, "stop"), "final");
    const cJSON *ch = cJSON_GetObjectItem(r, "changed");
    assert_int_equal(cJSON_GetArraySize(ch), 2);
    assert_string_equal(cJSON_GetArrayItem(ch, 0)->valuestring, "src/math.c");
    assert_string_equal(cJSON_GetArrayItem(ch, 1)->valuestring, "src/new.c");
    assert_int_equal(num(r, "undo"), 1);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(event(&sn, "tool_result", "edit_file", 0), "changed")));
    char path[256];
    snprintf(path, sizeof path, "%s/src/math.c", repo);
    char *t = slurp(path);
    assert_string_equal(t, "int add(int a, int b)\n{\n    return a + b;\n}\n");
    free(t);
    snprintf(path, sizeof path, "%s/src/new.c", repo);
    t = slurp(path);
    assert_string_equal(t, "int one(void) { return 1; }\n");
    free(t);
    cJSON_Delete(r);
    /* the resident state follows the agent's edits (live-edit path) */
    int updates = 0;
    for (int i = 0; i < 300 && updates < 1; i++) {
        cJSON *p = cJSON_CreateObject();
        cJSON_AddStringToObject(p, "path", repo);
        int rc;
        cJSON *s = call("repo.status", p, NULL, &rc, NULL);
        updates = num(cJSON_GetObjectItem(s, "last_update"), "updates");
        cJSON_Delete(s);
        if (updates < 1)
            usleep(20000);
    }
    assert_true(updates >= 1);
    /* a file changed after the agent's turn: undo refuses and names it, --force restores anyway */
    char *out;
    test_sh("cd '%s' && printf '// mine\\n' >> src/math.c", repo);
    assert_int_equal(shrun(&out, "('%s' --socket '%s' undo --repo '%s' 2>&1)", ctx_bin, sock, repo), 1);
    assert_non_null(strstr(out, "src/math.c"));
    assert_non_null(strstr(out, "ctx undo: "));
    assert_int_equal(shrun(&out, "'%s' --socket '%s' --ctxd '%s' --json undo --force --repo '%s'", ctx_bin, sock,
                           ctxd_bin, repo), 0);
    assert_non_null(strstr(out, "\"restored\":[\"src/math.c\",\"src/new.c\"]"));
    assert_non_null(strstr(out, "\"seq\":1"));
    snprintf(path, sizeof path, "%s/src/math.c", repo);
    t = slurp(path);
    assert_string_equal(t, "int add(int a, int b)\n{\n    return a - b;\n}\n");
    free(t);
    snprintf(path, sizeof path, "%s/src/new.c", repo);
    assert_int_not_equal(access(path, F_OK), 0);
    /* nothing more to undo: an error, exit 1 */
    assert_int_equal(shrun(&out, "'%s' --socket '%s' undo --repo '%s'", ctx_bin, sock, repo), 1);
    cJSON_Delete(sn.events);
    stop();
}

#define FINDINGS "```findings\n[{\"file\": \"src/math.c\", \"line\": 3, \"severity\": \"warning\", " \
                 "\"message\": \"add subtracts\", \"replacement\": \"    return a + b;\\n\"}]\n```"

/* Review: findings in the result (an answer without them is handed back once), and ctx review's
 * exit codes by --fail-on. */
static void review_findings(void **state)
{
    (void)state;
    if (!have_tokenizer)
        skip();
    static const char *const c[] = {FINAL("Looks wrong to me."), FINAL("One finding:\n" FINDINGS),
                                    FINAL(FINDINGS), FINAL(FINDINGS), NULL};
    start(c);
    test_sh("cd '%s' && printf '// note\\n' >> src/math.c", repo);
    struct seen sn = {.events = cJSON_CreateArray()};
    cJSON *r = run("review", NULL, 0, &sn);
    assert_string_equal(str(r, "stop"), "final");
    assert_int_equal(num(r, "steps"), 2);
    assert_non_null(strstr(str(event(&sn, "malformed", NULL, 0), "text"), "findings"));
    const cJSON *f = cJSON_GetArrayItem(cJSON_GetObjectItem(r, "findings"), 0);
    assert_string_equal(str(f, "file"), "src/math.c");
    assert_int_equal(num(f, "line"), 3);
    assert_string_equal(str(f, "severity"), "warning");
    assert_string_equal(str(f, "message"), "add subtracts");
    assert_string_equal(str(f, "replacement"), "    return a + b;\n");
    assert_null(cJSON_GetObjectItem(r, "findings_error"));
    cJSON_Delete(r);
    cJSON_Delete(sn.events);
    char *out;
    assert_int_equal(shrun(&out, "'%s' --socket '%s' review --repo '%s' --format json --fail-on warning", ctx_bin,
                           sock, repo), 1);
    assert_non_null(strstr(out, "add subtracts"));
    cJSON *arr = cJSON_Parse(out);
    assert_int_equal(cJSON_GetArraySize(arr), 1);
    cJSON_Delete(arr);
    assert_int_equal(shrun(&out, "'%s' --socket '%s' review --repo '%s' --format json --fail-on never", ctx_bin,
                           sock, repo), 0);
    assert_non_null(strstr(out, "add subtracts"));
    assert_int_equal(shrun(&out, "'%s' --socket '%s' review --repo '%s' --fail-on bogus", ctx_bin, sock, repo), 2);
    stop();
}

/* Suggest: edits go to the overlay; the result is a diff git accepts; the file is unchanged. */
static void suggest_diff(void **state)
{
    (void)state;
    if (!have_tokenizer)
        skip();
    static const char *const c[] = {
        CALLS(INVOKE("edit_file", PS("path", "src/math.c") "\n" PS("old_string", "a - b") "\n" PS("new_string", "a + b"))),
        FINAL("add adds now."), NULL};
    start(c);
    struct seen sn = {.events = cJSON_CreateArray()};
    cJSON *r = run("suggest", "Make add add.", 0, &sn);
    assert_string_equal(str(r, "stop"), "final");
    const char *diff = str(r, "diff");
    assert_non_null(strstr(diff, "--- a/src/math.c\n+++ b/src/math.c\n"));
    assert_non_null(strstr(diff, "\n-    return a - b;\n+    return a + b;\n"));
    assert_null(cJSON_GetObjectItem(r, "changed"));
    char path[256];
    snprintf(path, sizeof path, "%s/src/math.c", repo);
    char *t = slurp(path);
    assert_string_equal(t, "int add(int a, int b)\n{\n    return a - b;\n}\n");
    free(t);
    snprintf(path, sizeof path, "%s/fix.diff", dir);
    FILE *f = fopen(path, "w");
    fputs(diff, f);
    fclose(f);
    test_sh("cd '%s' && git apply --check '%s'", repo, path);
    cJSON_Delete(r);
    cJSON_Delete(sn.events);
    stop();
}

/* A malformed completion: the malformed event, nothing of it runs, the loop goes on; and the step
 * limit. */
static void malformed_and_step_limit(void **state)
{
    (void)state;
    if (!have_tokenizer)
        skip();
    static const char *const c[] = {
        "</think>\n\n<" D "tool_calls>\n" INVOKE("write_file", PS("path", "x.txt") "\n" PS("content", "no")) "\n<" D
        "invoke name=\"read_file\">" EOS,
        FINAL("Sorry."),
        CALLS(INVOKE("list_dir", PS("path", "."))), CALLS(INVOKE("list_dir", PS("path", "src"))), NULL};
    start(c);
    struct seen sn = {.events = cJSON_CreateArray()};
    cJSON *r = run("ask", "Write x.", 0, &sn);
    assert_string_equal(str(r, "stop"), "final");
    assert_int_equal(num(r, "malformed"), 1);
    assert_int_equal(num(r, "steps"), 2);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(r, "tool_calls")), 0);
    assert_non_null(strstr(str(event(&sn, "malformed", NULL, 0), "text"), "tool-call block"));
    char path[256];
    snprintf(path, sizeof path, "%s/x.txt", repo);
    assert_int_not_equal(access(path, F_OK), 0);
    assert_string_equal(str(r, "answer"), "Sorry.");
    cJSON_Delete(r);
    cJSON_Delete(sn.events);
    sn.events = cJSON_CreateArray();
    r = run("ask", "List.", 2, &sn);
    assert_string_equal(str(r, "stop"), "step_limit");
    assert_int_equal(num(r, "steps"), 2);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(r, "tool_calls")), 2);
    assert_non_null(strstr(str(event(&sn, "tool_result", "list_dir", 1), "text"), "math.c"));
    cJSON_Delete(r);
    cJSON_Delete(sn.events);
    stop();
}

/* Commands: 'ask' approved and refused through agent.answer, 'deny' refused without asking; then a
 * run cancelled while it waits for an approval. */
static void approvals_denials_cancel(void **state)
{
    (void)state;
    if (!have_tokenizer)
        skip();
    static const char *const c[] = {CALLS(INVOKE("run_command", PS("command", "echo approved-run"))),
                                    CALLS(INVOKE("run_command", PS("command", "echo refused-run"))),
                                    CALLS(INVOKE("run_command", PS("command", "rm -rf src"))),
                                    FINAL("Done."),
                                    CALLS(INVOKE("run_command", PS("command", "echo never"))),
                                    FINAL("not reached"), NULL};
    start(c);
    /* a second repository, resident before the run */
    char other[160];
    snprintf(other, sizeof other, "%s/other", dir);
    test_sh("rm -rf '%s' && cp -r '%s' '%s'", other, repo, other);
    cJSON *op = cJSON_CreateObject();
    cJSON_AddStringToObject(op, "path", other);
    cJSON_AddBoolToObject(op, "wait", 1);
    int orc;
    cJSON_Delete(call("repo.open", op, NULL, &orc, NULL));
    assert_int_equal(orc, 0);
    struct seen sn = {.events = cJSON_CreateArray(), .answers = {1, 0}, .other_repo = other};
    cJSON *r = run("ask", "Run things.", 0, &sn);
    assert_string_equal(str(r, "stop"), "final");
    assert_int_equal(sn.approvals, 2);
    assert_true(sn.other_ok);
    const cJSON *ok = event(&sn, "tool_result", "run_command", 0);
    assert_true(cJSON_IsFalse(cJSON_GetObjectItem(ok, "is_error")));
    assert_non_null(strstr(str(ok, "text"), "approved-run"));
    const cJSON *no = event(&sn, "tool_result", "run_command", 1);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(no, "is_error")));
    assert_non_null(strstr(str(no, "text"), "declined"));
    const cJSON *deny = event(&sn, "tool_result", "run_command", 2);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(deny, "is_error")));
    assert_non_null(strstr(str(deny, "text"), "policy denies"));
    char path[256];
    snprintf(path, sizeof path, "%s/src/math.c", repo);
    assert_int_equal(access(path, F_OK), 0);
    cJSON_Delete(r);
    cJSON_Delete(sn.events);
    /* cancelled while waiting for the approval: refused, and the run stops */
    struct seen sc = {.events = cJSON_CreateArray(), .answers = {-1}};
    r = run("ask", "Run one more.", 0, &sc);
    assert_string_equal(str(r, "stop"), "cancelled");
    assert_int_equal(sc.approvals, 1);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(event(&sc, "tool_result", "run_command", 0), "is_error")));
    assert_null(event(&sc, "step", NULL, 1));
    cJSON_Delete(r);
    cJSON_Delete(sc.events);
    /* bad parameters */
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "path", repo);
    cJSON_AddStringToObject(p, "mode", "explain");
    int rc;
    char err[512];
    assert_null(call("agent.run", p, NULL, &rc, err));
    assert_int_equal(rc, CTX_EINVAL);
    assert_non_null(strstr(err, "mode"));
    p = cJSON_CreateObject();
    cJSON_AddNumberToObject(p, "approval", 999);
    cJSON_AddBoolToObject(p, "allow", 1);
    assert_null(call("agent.answer", p, NULL, &rc, err));
    assert_int_equal(rc, CTX_ENOTFOUND);
    stop();
}

/* session.send runs the agent: tools in a conversation, the turn stored with the model's exact
 * text, and the next turn continues it. */
static void session_turns_use_the_agent(void **state)
{
    (void)state;
    if (!have_tokenizer)
        skip();
    static const char *const c[] = {CALLS(INVOKE("find_symbol", PS("name", "add"))), FINAL("In src/math.c."),
                                    FINAL("It returns a - b."), FINAL("Yes."), NULL};
    start(c);
    int rc;
    char err[512];
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "path", repo);
    cJSON *s = call("session.create", p, NULL, &rc, err);
    assert_int_equal(rc, 0);
    char id[64];
    snprintf(id, sizeof id, "%s", str(s, "id"));
    cJSON_Delete(s);
    struct seen sn = {.events = cJSON_CreateArray()};
    p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "id", id);
    cJSON_AddStringToObject(p, "message", "Where is add?");
    cJSON *r1 = call("session.send", p, &sn, &rc, err);
    assert_int_equal(rc, 0);
    assert_string_equal(str(r1, "finish_reason"), "stop");
    assert_string_equal(str(cJSON_GetObjectItem(r1, "message"), "content"), "In src/math.c.");
    assert_string_equal(str(r1, "session"), id);
    assert_string_equal(str(cJSON_GetArrayItem(cJSON_GetObjectItem(r1, "tool_calls"), 0), "tool"), "find_symbol");
    assert_non_null(strstr(str(event(&sn, "tool_result", "find_symbol", 0), "text"), "src/math.c:1"));
    p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "id", id);
    cJSON_AddStringToObject(p, "message", "What does it return?");
    cJSON *r2 = call("session.send", p, NULL, &rc, err);
    assert_int_equal(rc, 0);
    assert_string_equal(str(cJSON_GetObjectItem(r2, "message"), "content"), "It returns a - b.");
    /* the second turn's context holds the first turn, tool result included */
    assert_true(num(cJSON_GetObjectItem(r2, "usage"), "prompt_tokens") >
                num(cJSON_GetObjectItem(r1, "usage"), "prompt_tokens") + 5);
    assert_int_equal(num(cJSON_GetObjectItem(r2, "usage"), "restarts"), 0);
    p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "id", id);
    s = call("session.get", p, NULL, &rc, err);
    assert_int_equal(rc, 0);
    const cJSON *ms = cJSON_GetObjectItem(s, "messages"), *raws = cJSON_GetObjectItem(s, "raw");
    static const char *const roles[] = {"user", "assistant", "tool", "assistant", "user", "assistant"};
    assert_int_equal(cJSON_GetArraySize(ms), 6);
    for (int i = 0; i < 6; i++)
        assert_string_equal(str(cJSON_GetArrayItem(ms, i), "role"), roles[i]);
    assert_string_equal(str(cJSON_GetArrayItem(ms, 0), "content"), "Where is add?");
    assert_string_equal(cJSON_GetArrayItem(raws, 1)->valuestring, c[0]);
    assert_string_equal(cJSON_GetArrayItem(raws, 5)->valuestring, c[2]);
    assert_true(cJSON_IsNull(cJSON_GetArrayItem(raws, 2)));
    cJSON_Delete(s);
    /* agent.run continues the same conversation with {"session"} */
    p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "session", id);
    cJSON_AddStringToObject(p, "prompt", "Is that a bug?");
    cJSON *r3 = call("agent.run", p, NULL, &rc, err);
    assert_int_equal(rc, 0);
    assert_string_equal(str(r3, "answer"), "Yes.");
    assert_string_equal(str(r3, "session"), id);
    assert_int_equal(num(cJSON_GetObjectItem(r3, "usage"), "restarts"), 0);
    cJSON_Delete(r3);
    p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "id", id);
    s = call("session.get", p, NULL, &rc, err);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(s, "messages")), 8);
    assert_string_equal(str(cJSON_GetArrayItem(cJSON_GetObjectItem(s, "messages"), 6), "content"), "Is that a bug?");
    cJSON_Delete(s);
    cJSON_Delete(r1);
    cJSON_Delete(r2);
    cJSON_Delete(sn.events);
    stop();
}

int main(int argc, char **argv)
{
    if (argc < 3)
        return 2;
    ctxd_bin = argv[1];
    ctx_bin = argv[2];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(tool_call_then_answer),  cmocka_unit_test(edit_then_undo),
        cmocka_unit_test(review_findings),        cmocka_unit_test(suggest_diff),
        cmocka_unit_test(malformed_and_step_limit), cmocka_unit_test(approvals_denials_cancel),
        cmocka_unit_test(session_turns_use_the_agent),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
