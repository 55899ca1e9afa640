/* Integration: the tool grammar (ctxd --tool-grammar, daemon/agent_model.c over
 * inference/text/dsml_guide.h) with the real bundled model (models/ctx-small, sampled, not forced)
 * on a small repository. Strict: every step is decoded under the mask, no completion is malformed,
 * every call names a declared tool with its declared parameters and the required ones, with values
 * of the declared types. Off: the steps are decoded from the raw logits again (the old behaviour),
 * and say so. argv[1] = ctxd. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client.h"
#include "harness.h"
#include "json.h"
#include "tools.h"

#define MAX_TOKENS 600 /* completion tokens per run */

static const char *ctxd_bin;
static char dir[64], sock[128], repo[128], logpath[128];
static pid_t pid;
static int have_model;

static void start(const char *grammar)
{
    char cache[160], state[160];
    snprintf(cache, sizeof cache, "%s/kv", dir);
    snprintf(state, sizeof state, "%s/state", dir);
    char *const argv[] = {(char *)ctxd_bin, "--socket", sock, "--cache", cache, "--budget", "4096", "--threads", "2",
                          "--no-watch", "--state", state, "--approval-timeout-ms", "500", "--tool-grammar", (char *)grammar,
                          NULL};
    pid = dh_start(sock, logpath, argv);
    if (pid <= 0)
        fail_msg("ctxd did not start");
}

static void stop(void)
{
    dh_teardown(pid, "");
    pid = 0;
}

static int on_note(void *ud, const char *method, const cJSON *params)
{
    if (!strcmp(method, "agent.event"))
        cJSON_AddItemToArray(ud, cJSON_Duplicate(params, 1));
    return 0;
}

static cJSON *run(const char *prompt, bool thinking, cJSON *events)
{
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "path", repo);
    cJSON_AddStringToObject(p, "mode", "ask");
    cJSON_AddStringToObject(p, "prompt", prompt);
    cJSON_AddNumberToObject(p, "max_steps", 3);
    cJSON_AddNumberToObject(p, "max_tokens", MAX_TOKENS);
    cJSON_AddBoolToObject(p, "thinking", thinking);
    struct ctxd_client *c;
    struct ctx_err e = {0};
    assert_int_equal(ctxd_client_connect(sock, &c, &e), 0);
    cJSON *r = NULL;
    if (ctxd_client_call(c, "agent.run", p, on_note, events, 300000, &r, &e))
        fail_msg("agent.run: %s", e.msg);
    ctxd_client_close(c);
    return r;
}

static const cJSON *schema_params(const cJSON *schemas, const char *name)
{
    const cJSON *t;
    cJSON_ArrayForEach(t, schemas) {
        const cJSON *fn = cJSON_GetObjectItem(t, "function");
        if (!strcmp(cJSON_GetObjectItem(fn, "name")->valuestring, name))
            return cJSON_GetObjectItem(fn, "parameters");
    }
    return NULL;
}

static int check_call(const cJSON *schemas, const char *tool, const cJSON *args)
{
    const cJSON *params = schema_params(schemas, tool);
    if (!params || !cJSON_IsObject(args))
        return -1;
    const cJSON *props = cJSON_GetObjectItem(params, "properties"), *a;
    cJSON_ArrayForEach(a, args) {
        const cJSON *p = cJSON_GetObjectItem(props, a->string);
        if (!p)
            return -1;
        const char *ty = cJSON_GetObjectItem(p, "type")->valuestring;
        if ((!strcmp(ty, "string") && !cJSON_IsString(a)) || (!strcmp(ty, "boolean") && !cJSON_IsBool(a)) ||
            (!strcmp(ty, "integer") && !(cJSON_IsNumber(a) && a->valuedouble == floor(a->valuedouble))))
            return -1;
    }
    cJSON_ArrayForEach(a, cJSON_GetObjectItem(params, "required")) if (!cJSON_GetObjectItem(args, a->valuestring)) return -1;
    return 0;
}

static const char *const prompts[] = {
    "Where is the function add defined? Use the tools.",
    "Which file declares add, and what does it return? Read it.",
    "Search the repository for 'return' and list the files.",
    "List the src directory.",
    "Where is main defined?",
    "Find the references to add.",
    "What does src/main.c include?",
    "Show me the git status of the repository.",
};

struct tally {
    int steps, calls, malformed, cut_by_budget;
};

/* Every prompt in chat and in thinking mode. A completion cut by the run's token budget (the small
 * model sometimes repeats itself until then) is counted apart: the grammar cannot end a text the
 * budget cuts. With `strict`, every step must say so and every call must follow its schema. */
static struct tally run_all(const char *grammar, bool strict)
{
    struct tally t = {0};
    cJSON *schemas = cJSON_Parse(agent_tools_schema_text());
    for (size_t i = 0; i < 2 * sizeof prompts / sizeof *prompts; i++) {
        cJSON *events = cJSON_CreateArray();
        cJSON *r = run(prompts[i / 2], i % 2 == 1, events);
        int last = cJSON_GetObjectItem(r, "steps")->valueint;
        /* the run's budget ran out in its last step (the stop may then say step_limit as well) */
        bool budget = cJSON_GetObjectItem(cJSON_GetObjectItem(r, "usage"), "completion_tokens")->valueint >= MAX_TOKENS;
        const cJSON *st, *ev;
        cJSON_ArrayForEach(st, cJSON_GetObjectItem(cJSON_GetObjectItem(r, "usage"), "steps")) {
            assert_string_equal(cJSON_GetObjectItem(st, "tool_grammar")->valuestring, grammar);
            t.steps++;
        }
        cJSON_ArrayForEach(ev, events) {
            const char *kind = cJSON_GetObjectItem(ev, "kind")->valuestring;
            if (!strcmp(kind, "malformed")) {
                if (budget && cJSON_GetObjectItem(ev, "step")->valueint == last) {
                    t.cut_by_budget++;
                    continue;
                }
                t.malformed++;
                if (strict)
                    fail_msg("%s (%s mode): malformed under the strict grammar: %s", prompts[i / 2],
                             i % 2 ? "thinking" : "chat", cJSON_GetObjectItem(ev, "text")->valuestring);
            } else if (!strcmp(kind, "tool_call")) {
                const char *tool = cJSON_GetObjectItem(ev, "tool")->valuestring;
                if (strict && check_call(schemas, tool, cJSON_GetObjectItem(ev, "arguments")))
                    fail_msg("%s: a call of %s outside its schema", prompts[i / 2], tool);
                t.calls++;
            }
        }
        cJSON_Delete(r);
        cJSON_Delete(events);
    }
    cJSON_Delete(schemas);
    fprintf(stderr, "# %s: %d steps, %d tool calls, %d malformed, %d cut by the token budget\n", grammar, t.steps,
            t.calls, t.malformed, t.cut_by_budget);
    return t;
}

static void strict_blocks_always_parse(void **state)
{
    (void)state;
    if (!have_model)
        skip();
    start("strict");
    struct tally t = run_all("strict", true);
    assert_int_equal(t.malformed, 0);
    assert_true(t.calls >= 4); /* the model does call tools: the grammar was exercised */
    stop();
}

static void off_is_unmasked(void **state)
{
    (void)state;
    if (!have_model)
        skip();
    if (pid > 0)
        stop();
    start("off");
    struct tally t = run_all("off", false);
    assert_true(t.steps >= (int)(2 * sizeof prompts / sizeof *prompts));
    stop();
    /* a bad value is a usage error */
    char cmd[512];
    snprintf(cmd, sizeof cmd, "'%s' --tool-grammar loose --socket '%s/x.sock' >/dev/null 2>&1", ctxd_bin, dir);
    int rc = system(cmd);
    assert_true(WIFEXITED(rc) && WEXITSTATUS(rc) == 2);
}

static int group_setup(void **state)
{
    (void)state;
    /* the bundled model ($CTX_MODEL or the source tree's), with every shard its index names */
    char mdir[1024], idx[1100];
    if (getenv("CTX_MODEL"))
        snprintf(mdir, sizeof mdir, "%s", getenv("CTX_MODEL"));
    else
        snprintf(mdir, sizeof mdir, "%s/models/ctx-small", getenv("CTX_SOURCE_ROOT") ? getenv("CTX_SOURCE_ROOT") : ".");
    snprintf(idx, sizeof idx, "%s/model.safetensors.index.json", mdir);
    struct ctx_err e = {0};
    cJSON *ix = ctx_json_read_file(idx, 16u << 20, &e);
    have_model = ix != NULL;
    const cJSON *w, *map = cJSON_GetObjectItem(ix, "weight_map");
    cJSON_ArrayForEach(w, map) {
        char shard[2200];
        snprintf(shard, sizeof shard, "%s/%s", mdir, cJSON_IsString(w) ? w->valuestring : "");
        if (access(shard, R_OK) != 0)
            have_model = 0;
    }
    cJSON_Delete(ix);
    if (!have_model) {
        fprintf(stderr, "# no complete bundled model at %s: skipped\n", mdir);
        return 0;
    }
    if (dh_workdir("grammar", dir, sizeof dir))
        return -1;
    snprintf(sock, sizeof sock, "%s/ctxd.sock", dir);
    snprintf(repo, sizeof repo, "%s/repo", dir);
    snprintf(logpath, sizeof logpath, "%s/ctxd.log", dir);
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
    return have_model ? dh_teardown(0, dir) : 0;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return 2;
    ctxd_bin = argv[1];
    (void)dh_have_tokenizer; /* the bundled model brings its own tokenizer */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(strict_blocks_always_parse),
        cmocka_unit_test(off_is_unmasked),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
