/* tools/data (issue 12): the trained tokenizer (models/ctx-small/tokenizer.json), the BPE trainer,
 * and the transcripts: real tool calls, canonical DSML, byte-identical prompts, exact masks. */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "bpe.h"
#include "ctx_config.h"
#include "dsml.h"
#include "json.h"
#include "loop.h"
#include "repo.h"
#include "tokenizer.h"
#include "tools.h"
#include "transcript.h"

static const char *src_root(void)
{
    const char *r = getenv("CTX_SOURCE_ROOT");
    return r ? r : CTX_SOURCE_ROOT;
}

static struct inf_tokenizer *load_small(void)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/models/ctx-small/tokenizer.json", src_root());
    struct inf_tokenizer *t = NULL;
    struct ctx_err e = {0};
    int rc = inf_tokenizer_load(path, &t, &e);
    if (rc)
        fprintf(stderr, "# %s\n", e.msg);
    assert_int_equal(rc, 0);
    return t;
}

/* ---- tokenizer ---------------------------------------------------------------------------- */

static void test_special_tokens_single_ids(void **state)
{
    (void)state;
    struct inf_tokenizer *t = load_small();
    assert_int_equal(inf_tokenizer_vocab_size(t), 8192);
    const struct data_special *sp;
    size_t n = data_special_tokens(&sp);
    assert_int_equal(n, 3 + 37);
    for (size_t i = 0; i < n; i++) {
        int32_t want = i < 3 ? (int32_t)i : (int32_t)(8192 - (n - 3) + (i - 3));
        assert_int_equal(inf_tokenizer_token_id(t, sp[i].content), want);
        int32_t *ids;
        size_t k;
        struct ctx_err e = {0};
        assert_int_equal(inf_tokenizer_encode(t, sp[i].content, strlen(sp[i].content), &ids, &k, &e), 0);
        assert_int_equal(k, 1);
        assert_int_equal(ids[0], want);
        free(ids);
        /* literal: the same string is text, several ordinary tokens */
        assert_int_equal(inf_tokenizer_encode_flags(t, sp[i].content, strlen(sp[i].content), INF_TOK_LITERAL, &ids,
                                                    &k, &e),
                         0);
        assert_true(k > 1);
        for (size_t j = 0; j < k; j++)
            assert_true(ids[j] >= 3 && ids[j] < 8192 - 37);
        free(ids);
    }
    /* the strings of the spec, at V4's positions in our order */
    assert_int_equal(inf_tokenizer_token_id(t, "<｜begin▁of▁sentence｜>"), 0);
    assert_int_equal(inf_tokenizer_token_id(t, "<｜end▁of▁sentence｜>"), 1);
    assert_int_equal(inf_tokenizer_token_id(t, "<｜fim▁hole｜>"), 8155);
    assert_int_equal(inf_tokenizer_token_id(t, "<｜User｜>"), 8158);
    assert_int_equal(inf_tokenizer_token_id(t, "<｜Assistant｜>"), 8159);
    assert_int_equal(inf_tokenizer_token_id(t, "<think>"), 8170);
    assert_int_equal(inf_tokenizer_token_id(t, "</think>"), 8171);
    assert_int_equal(inf_tokenizer_token_id(t, "｜DSML｜"), 8172);
    assert_int_equal(inf_tokenizer_token_id(t, "<｜end_of_query｜>"), 8191);
    /* byte tokens as V3: '!' is id 3 */
    assert_int_equal(inf_tokenizer_token_id(t, "!"), 3);
    /* the V4 loader (what ctx chat / ctx repo use) loads it as written: nothing beyond 8192 */
    char path[4096];
    snprintf(path, sizeof path, "%s/models/ctx-small/tokenizer.json", src_root());
    struct inf_tokenizer *t4;
    struct ctx_err e = {0};
    assert_int_equal(inf_tokenizer_load_v4(path, &t4, &e), 0);
    assert_int_equal(inf_tokenizer_vocab_size(t4), 8192);
    const char *s = "int x;<｜User｜>q<｜Assistant｜><think>r</think>ok<｜end▁of▁sentence｜>";
    int32_t *a, *b;
    size_t na, nb;
    assert_int_equal(inf_tokenizer_encode(t, s, strlen(s), &a, &na, &e), 0);
    assert_int_equal(inf_tokenizer_encode(t4, s, strlen(s), &b, &nb, &e), 0);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, na * sizeof *a);
    free(a);
    free(b);
    inf_tokenizer_free(t4);
    inf_tokenizer_free(t);
}

static size_t total_bytes, total_tokens, n_files;

static void roundtrip(const struct inf_tokenizer *t, const char *text, size_t len)
{
    if (inf_utf8_invalid_at(text, len))
        return;
    int32_t *ids;
    size_t n;
    struct ctx_err e = {0};
    assert_int_equal(inf_tokenizer_encode_flags(t, text, len, INF_TOK_LITERAL, &ids, &n, &e), 0);
    char *back;
    size_t bl;
    assert_int_equal(inf_tokenizer_decode(t, ids, n, &back, &bl, &e), 0);
    assert_int_equal(bl, len);
    assert_memory_equal(back, text, len);
    /* counting agrees with encoding (the layout budgets with count) */
    size_t c;
    assert_int_equal(inf_tokenizer_count_flags(t, text, len, INF_TOK_LITERAL, &c, &e), 0);
    assert_int_equal(c, n);
    total_bytes += len;
    total_tokens += n;
    n_files++;
    free(ids);
    free(back);
}

static void walk(const struct inf_tokenizer *t, const char *dir, int depth)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.' || !strcmp(de->d_name, "node_modules"))
            continue;
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        struct stat st;
        if (lstat(p, &st))
            continue;
        if (S_ISDIR(st.st_mode) && depth > 0) {
            walk(t, p, depth - 1);
        } else if (S_ISREG(st.st_mode) && st.st_size < (1 << 20)) {
            const char *x = strrchr(de->d_name, '.');
            if (!x || !(strcmp(x, ".c") == 0 || strcmp(x, ".h") == 0 || strcmp(x, ".md") == 0 ||
                        strcmp(x, ".py") == 0 || strcmp(x, ".sh") == 0 || strcmp(x, ".json") == 0 ||
                        strcmp(x, ".lua") == 0 || strcmp(x, ".ts") == 0))
                continue;
            char *buf;
            size_t len;
            struct ctx_err e = {0};
            if (ctx_read_file(p, 1 << 20, &buf, &len, &e) == 0) {
                roundtrip(t, buf, len);
                free(buf);
            }
        }
    }
    closedir(d);
}

/* Every source file of this repository's main folders and the tokenizer fixture's nasty texts
 * (CJK, emoji, digit runs, CRLF, control-token look-alikes) decode back to their bytes. */
static void test_roundtrip_corpus(void **state)
{
    (void)state;
    struct inf_tokenizer *t = load_small();
    static const char *const dirs[] = {"inference", "agent", "repo", "daemon", "tools", "tests/text", "editors/nvim"};
    char p[4096];
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", src_root(), dirs[i]);
        walk(t, p, 2);
    }
    snprintf(p, sizeof p, "%s/tests/fixtures/tokenizer/corpus.json", src_root());
    struct ctx_err e = {0};
    cJSON *corpus = ctx_json_read_file(p, 64 << 20, &e);
    assert_non_null(corpus);
    size_t nt = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, corpus) {
        const cJSON *text = cJSON_IsString(it) ? it : cJSON_GetObjectItemCaseSensitive(it, "text");
        if (cJSON_IsString(text)) {
            roundtrip(t, text->valuestring, strlen(text->valuestring));
            nt++;
        }
    }
    cJSON_Delete(corpus);
    assert_true(nt >= 100);
    assert_true(n_files > 200);
    /* a code tokenizer: well under one token per two bytes on C and Markdown */
    double bpt = (double)total_bytes / (double)total_tokens;
    fprintf(stderr, "# %zu files, %zu bytes, %zu tokens, %.2f bytes/token\n", n_files, total_bytes, total_tokens, bpt);
    assert_true(bpt > 2.5);
    inf_tokenizer_free(t);
}

struct pieces {
    char buf[256];
    size_t len, n;
    size_t ends[32];
};

static int piece_cb(void *ud, const char *p, size_t n)
{
    struct pieces *ps = ud;
    memcpy(ps->buf + ps->len, p, n);
    ps->len += n;
    if (ps->n < 32)
        ps->ends[ps->n++] = ps->len;
    return 0;
}

static int stop_cb(void *ud, const char *p, size_t n)
{
    (void)ud;
    (void)p;
    (void)n;
    return CTX_ERANGE;
}

static void test_pretokenize(void **state)
{
    (void)state;
    struct inf_tokenizer *pre;
    struct ctx_err e = {0};
    assert_int_equal(data_pretokenizer_new(&pre, &e), 0);
    struct pieces ps = {0};
    const char *text = "hello world 12345\n\tx<｜User｜>";
    assert_int_equal(inf_tokenizer_pretokenize(pre, text, strlen(text), piece_cb, &ps, &e), 0);
    assert_int_equal(ps.len, strlen(text));
    assert_memory_equal(ps.buf, text, ps.len);
    /* "hello" " world" " " "123" "45" "\n\t"? digits split in threes first, as V3 */
    assert_int_equal(ps.ends[0], 5);
    assert_int_equal(ps.ends[1], 11);
    assert_int_equal(ps.ends[2], 12);
    assert_int_equal(ps.ends[3], 15);
    assert_int_equal(ps.ends[4], 17);
    /* a callback's refusal stops the walk with its code */
    assert_int_equal(inf_tokenizer_pretokenize(pre, text, strlen(text), stop_cb, NULL, &e), CTX_ERANGE);
    /* invalid UTF-8 names the offset */
    assert_int_equal(inf_tokenizer_pretokenize(pre, "ab\xff", 3, piece_cb, &ps, &e), CTX_EINVAL);
    assert_non_null(strstr(e.msg, "byte 2"));
    inf_tokenizer_free(pre);
}

/* Train on a small text, write, load: merges learnt from the text make it shorter, and it round-trips. */
static void test_bpe_train_small(void **state)
{
    (void)state;
    struct inf_tokenizer *pre;
    struct ctx_err e = {0};
    assert_int_equal(data_pretokenizer_new(&pre, &e), 0);
    struct data_bpe *b = data_bpe_new();
    const char *text = "static int counter_value = 0;\nstatic int counter_next(void) { return counter_value++; }\n"
                       "static int counter_reset(void) { counter_value = 0; return 0; }\n";
    for (int i = 0; i < 20; i++)
        assert_int_equal(data_bpe_add_text(b, pre, text, strlen(text), &e), 0);
    size_t vocab = 3 + 256 + 37 + 40;
    assert_int_equal(data_bpe_train(b, vocab, &e), 0);
    assert_int_equal(data_bpe_n_merges(b), 40);
    char dir[] = "/tmp/ctx-data-test-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    assert_int_equal(data_bpe_write(b, vocab, path, &e), 0);
    /* too small a vocabulary for the merges is an error, not a silent truncation */
    assert_int_equal(data_bpe_write(b, vocab + 1, path, &e), CTX_EINVAL);
    struct inf_tokenizer *t;
    assert_int_equal(inf_tokenizer_load(path, &t, &e), 0);
    assert_int_equal(inf_tokenizer_vocab_size(t), vocab);
    int32_t *ids;
    size_t n;
    assert_int_equal(inf_tokenizer_encode(t, text, strlen(text), &ids, &n, &e), 0);
    assert_true(n < strlen(text) / 2);
    /* "counter" is frequent enough to be learnt whole (with its leading space) */
    assert_true(inf_tokenizer_token_id(t, "Ġcounter") >= 259 || inf_tokenizer_token_id(t, "counter") >= 259);
    char *back;
    size_t bl;
    assert_int_equal(inf_tokenizer_decode(t, ids, n, &back, &bl, &e), 0);
    assert_int_equal(bl, strlen(text));
    assert_memory_equal(back, text, bl);
    free(back);
    free(ids);
    inf_tokenizer_free(t);
    unlink(path);
    rmdir(dir);
    data_bpe_free(b);
    inf_tokenizer_free(pre);
}

/* ---- transcripts -------------------------------------------------------------------------- */

struct fixture {
    char dir[64];
    struct repo_snapshot *snap;
    struct repo_layout *lay;
    struct inf_tokenizer *tok;
};

static const char lib_c[] = "#include \"lib.h\"\n"
                            "\n"
                            "int scale_value(int a, int b)\n"
                            "{\n"
                            "    return a * b;\n"
                            "}\n";
static const char main_c[] = "#include <stdio.h>\n"
                             "#include \"lib.h\"\n"
                             "\n"
                             "int main(void)\n"
                             "{\n"
                             "    printf(\"%d\\n\", scale_value(6, 7)); /* <｜User｜> stays text */\n"
                             "    return 0;\n"
                             "}\n";
static const char lib_h[] = "int scale_value(int a, int b);\n";

static int count_literal(void *ud, const char *text, size_t len, size_t *n)
{
    struct ctx_err e = {0};
    return inf_tokenizer_count_flags(ud, text, len, INF_TOK_LITERAL, n, &e);
}

static void put(const char *dir, const char *name, const char *text)
{
    char p[256];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int setup_repo(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/ctx-data-repo-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    put(f->dir, "lib.c", lib_c);
    put(f->dir, "lib.h", lib_h);
    put(f->dir, "main.c", main_c);
    char cmd[512];
    snprintf(cmd, sizeof cmd,
             "cd %s && git init -q && git add -A && git -c user.name=t -c user.email=t@t commit -qm x", f->dir);
    if (system(cmd))
        return -1;
    f->tok = load_small();
    struct repo_options ro;
    repo_options_default(&ro);
    struct ctx_err e = {0};
    if (repo_snapshot_open(f->dir, &ro, NULL, &f->snap, &e))
        return -1;
    struct repo_layout_options lo;
    repo_layout_options_default(&lo);
    lo.budget = DATA_BUDGET;
    lo.count_tokens = count_literal;
    lo.count_ud = f->tok;
    if (repo_layout_build(f->snap, &lo, &f->lay, &e))
        return -1;
    *state = f;
    return 0;
}

static int teardown_repo(void **state)
{
    struct fixture *f = *state;
    repo_layout_free(f->lay);
    repo_snapshot_free(f->snap);
    inf_tokenizer_free(f->tok);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
    if (system(cmd))
        return -1;
    free(f);
    return 0;
}

static void run_task(struct fixture *f, const struct data_task *task, struct data_transcript *tr)
{
    struct agent_tools *tools;
    struct ctx_err e = {0};
    struct agent_tools_config tc = {.root = f->snap->workdir, .mode = AGENT_MODE_SUGGEST, .snapshot = f->snap};
    assert_int_equal(agent_tools_new(&tc, &tools, &e), 0);
    int rc = data_transcript_run(tools, f->lay, task, tr, &e);
    if (rc)
        fprintf(stderr, "# %s\n", e.msg);
    assert_int_equal(rc, 0);
    agent_tools_free(tools);
}

/* The first completion parses back to the expected call; the prompt before it is exactly
 * agent_loop_render_prompt of [system, user]; the mask covers exactly the completions' bytes. */
static void check_transcript(struct fixture *f, const struct data_transcript *tr, const char *tool,
                             const char *args_json)
{
    struct ctx_err e = {0};
    /* the prompt part, text and spans */
    cJSON *msgs = data_first_messages(f->lay, tr->question);
    assert_non_null(msgs);
    cJSON *schemas = cJSON_Parse(agent_tools_schema_text());
    struct agent_prompt p0;
    assert_int_equal(agent_loop_render_prompt(msgs, schemas, INF_DSML_THINKING, &p0, &e), 0);
    assert_int_equal(p0.len, tr->comp_off[0]);
    assert_memory_equal(p0.text, tr->prompt.text, p0.len);
    assert_true(p0.len > 7 && memcmp(p0.text + p0.len - 7, "<think>", 7) == 0);
    assert_non_null(strstr(p0.text, DATA_SYSTEM));
    assert_non_null(strstr(p0.text, "## Tools"));
    for (size_t i = 0; i < p0.nspans; i++) {
        assert_int_equal(p0.spans[i].off, tr->prompt.spans[i].off);
        if (p0.spans[i].off + p0.spans[i].len <= p0.len)
            assert_int_equal(p0.spans[i].len, tr->prompt.spans[i].len);
    }
    agent_prompt_free(&p0);
    cJSON_Delete(msgs);
    /* the completion parses, with the declared tools, to the expected call */
    struct inf_dsml_parser_opts po = {.mode = INF_DSML_THINKING, .tools = schemas};
    cJSON *m = NULL;
    struct inf_dsml_error de;
    assert_int_equal(inf_dsml_parse(tr->prompt.text + tr->comp_off[0], tr->comp_len[0], &po, &m, &de, &e), 0);
    const cJSON *calls = cJSON_GetObjectItemCaseSensitive(m, "tool_calls");
    assert_int_equal(cJSON_GetArraySize(calls), 1);
    const cJSON *fn = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(calls, 0), "function");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(fn, "name")->valuestring, tool);
    cJSON *got = cJSON_Parse(cJSON_GetObjectItemCaseSensitive(fn, "arguments")->valuestring);
    cJSON *want = cJSON_Parse(args_json);
    assert_true(cJSON_Compare(got, want, 1));
    cJSON_Delete(got);
    cJSON_Delete(want);
    cJSON_Delete(m);
    /* every completion parses; the last one is the final answer and ends the transcript */
    for (size_t k = 0; k < tr->ncomp; k++) {
        assert_int_equal(inf_dsml_parse(tr->prompt.text + tr->comp_off[k], tr->comp_len[k], &po, &m, &de, &e), 0);
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(m, "tool_calls");
        assert_int_equal(cJSON_GetArraySize(c) > 0, k + 1 < tr->ncomp);
        cJSON_Delete(m);
        const char *end = tr->prompt.text + tr->comp_off[k] + tr->comp_len[k];
        assert_memory_equal(end - strlen(INF_DSML_EOS), INF_DSML_EOS, strlen(INF_DSML_EOS));
    }
    assert_int_equal(tr->comp_off[tr->ncomp - 1] + tr->comp_len[tr->ncomp - 1], tr->prompt.len);
    cJSON_Delete(schemas);
    /* the mask: masked tokens' bytes are exactly the completions, in order */
    int32_t *ids;
    uint8_t *mask;
    size_t n;
    assert_int_equal(data_transcript_tokens(f->tok, tr, &ids, &mask, &n, &e), 0);
    size_t want_len = 0;
    for (size_t k = 0; k < tr->ncomp; k++)
        want_len += tr->comp_len[k];
    char *wantb = malloc(want_len), *gotb = malloc(want_len + 64);
    size_t w = 0, gl = 0;
    for (size_t k = 0; k < tr->ncomp; k++) {
        memcpy(wantb + w, tr->prompt.text + tr->comp_off[k], tr->comp_len[k]);
        w += tr->comp_len[k];
    }
    size_t eos_masked = 0, off = 0;
    for (size_t i = 0; i < n; i++) {
        size_t bl;
        const char *b = inf_tokenizer_id_bytes(f->tok, ids[i], &bl);
        bool inside = false;
        for (size_t k = 0; k < tr->ncomp; k++)
            inside |= off >= tr->comp_off[k] && off < tr->comp_off[k] + tr->comp_len[k];
        assert_int_equal(mask[i], inside);
        if (mask[i]) {
            assert_true(gl + bl <= want_len);
            memcpy(gotb + gl, b, bl);
            gl += bl;
            eos_masked += ids[i] == 1;
        }
        off += bl;
    }
    assert_int_equal(gl, want_len);
    assert_memory_equal(gotb, wantb, want_len);
    assert_int_equal(eos_masked, tr->ncomp); /* each completion's end token is trained */
    /* the whole transcript tokenizes with the file's "<｜User｜>" as text: one User token per turn */
    size_t users = 0;
    for (size_t i = 0; i < n; i++)
        users += ids[i] == inf_tokenizer_token_id(f->tok, "<｜User｜>");
    assert_int_equal(users, tr->ncomp); /* the first turn + one tool-result turn per call step */
    free(wantb);
    free(gotb);
    free(ids);
    free(mask);
}

static void test_transcript_definition(void **state)
{
    struct fixture *f = *state;
    struct data_task task = {.kind = DATA_TASK_DEF_FIND, .symbol = "scale_value", .path = "lib.c", .line = 3,
                             .comment = "//", .seed = 0};
    struct data_transcript tr;
    run_task(f, &task, &tr);
    assert_int_equal(tr.ncomp, 2);
    assert_int_equal(tr.tool_calls, 1);
    assert_string_equal(tr.question, "Where is `scale_value` defined?");
    assert_non_null(strstr(tr.answer, "lib.c"));
    assert_non_null(strstr(tr.answer, "3"));
    check_transcript(f, &tr, "find_symbol", "{\"name\":\"scale_value\"}");
    /* the real tool result is in the transcript */
    assert_non_null(strstr(tr.prompt.text, "<tool_result>"));
    assert_non_null(strstr(tr.prompt.text, "lib.c:3"));
    data_transcript_free(&tr);
}

static void test_transcript_search_and_uses(void **state)
{
    struct fixture *f = *state;
    struct data_task task = {.kind = DATA_TASK_DEF_SEARCH, .symbol = "scale_value", .path = "lib.c", .line = 3,
                             .comment = "//", .seed = 2};
    struct data_transcript tr;
    run_task(f, &task, &tr);
    check_transcript(f, &tr, "search", "{\"pattern\":\"\\\\bscale_value\\\\b\"}");
    data_transcript_free(&tr);
    task.kind = DATA_TASK_USES;
    run_task(f, &task, &tr);
    check_transcript(f, &tr, "find_references", "{\"name\":\"scale_value\"}");
    assert_non_null(strstr(tr.answer, "main.c:6"));
    data_transcript_free(&tr);
}

static void test_transcript_read_and_edit(void **state)
{
    struct fixture *f = *state;
    struct data_task task = {.kind = DATA_TASK_DEF_READ, .symbol = "scale_value", .path = "lib.c", .line = 3,
                             .comment = "//", .seed = 0};
    struct data_transcript tr;
    run_task(f, &task, &tr);
    assert_int_equal(tr.ncomp, 3);
    assert_non_null(strstr(tr.answer, "int scale_value(int a, int b)"));
    check_transcript(f, &tr, "find_symbol", "{\"name\":\"scale_value\"}");
    data_transcript_free(&tr);
    /* the quoting variant: its own question, and read_file over the definition line +-1 only */
    task.quote = true;
    run_task(f, &task, &tr);
    assert_string_equal(tr.question, "Quote the line that defines `scale_value`.");
    assert_int_equal(tr.ncomp, 3);
    assert_non_null(strstr(tr.answer, "int scale_value(int a, int b)"));
    assert_non_null(strstr(tr.answer, "lib.c"));
    check_transcript(f, &tr, "find_symbol", "{\"name\":\"scale_value\"}");
    {
        struct ctx_err e = {0};
        cJSON *schemas = cJSON_Parse(agent_tools_schema_text());
        struct inf_dsml_parser_opts po = {.mode = INF_DSML_THINKING, .tools = schemas};
        struct inf_dsml_error de;
        cJSON *m = NULL;
        assert_int_equal(inf_dsml_parse(tr.prompt.text + tr.comp_off[1], tr.comp_len[1], &po, &m, &de, &e), 0);
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(m, "tool_calls"), 0), "function");
        assert_string_equal(cJSON_GetObjectItemCaseSensitive(fn, "name")->valuestring, "read_file");
        cJSON *got = cJSON_Parse(cJSON_GetObjectItemCaseSensitive(fn, "arguments")->valuestring);
        cJSON *want = cJSON_Parse("{\"path\":\"lib.c\",\"start_line\":2,\"end_line\":4}");
        assert_true(cJSON_Compare(got, want, 1));
        cJSON_Delete(got);
        cJSON_Delete(want);
        cJSON_Delete(m);
        cJSON_Delete(schemas);
    }
    data_transcript_free(&tr);
    task.quote = false;
    task.kind = DATA_TASK_EDIT;
    run_task(f, &task, &tr);
    assert_int_equal(tr.ncomp, 4);
    assert_int_equal(tr.tool_calls, 3);
    assert_non_null(strstr(tr.prompt.text, "edit_file"));
    assert_non_null(strstr(tr.prompt.text, "edited lib.c"));
    check_transcript(f, &tr, "find_symbol", "{\"name\":\"scale_value\"}");
    data_transcript_free(&tr);
    /* suggest mode: the file on disk is unchanged */
    char p[256], *buf;
    size_t len;
    struct ctx_err e = {0};
    snprintf(p, sizeof p, "%s/lib.c", f->dir);
    assert_int_equal(ctx_read_file(p, 1 << 20, &buf, &len, &e), 0);
    assert_int_equal(len, strlen(lib_c));
    assert_memory_equal(buf, lib_c, len);
    free(buf);
}

/* A wrong expectation (the tools do not show it) drops the task instead of training on a lie. */
static void test_transcript_wrong_expectation(void **state)
{
    struct fixture *f = *state;
    struct data_task task = {.kind = DATA_TASK_DEF_FIND, .symbol = "scale_value", .path = "main.c", .line = 4,
                             .comment = "//", .seed = 0};
    struct agent_tools *tools;
    struct ctx_err e = {0};
    struct agent_tools_config tc = {.root = f->snap->workdir, .mode = AGENT_MODE_SUGGEST, .snapshot = f->snap};
    assert_int_equal(agent_tools_new(&tc, &tools, &e), 0);
    struct data_transcript tr;
    assert_int_equal(data_transcript_run(tools, f->lay, &task, &tr, &e), CTX_ENOTFOUND);
    agent_tools_free(tools);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_special_tokens_single_ids),
        cmocka_unit_test(test_roundtrip_corpus),
        cmocka_unit_test(test_pretokenize),
        cmocka_unit_test(test_bpe_train_small),
        cmocka_unit_test_setup_teardown(test_transcript_definition, setup_repo, teardown_repo),
        cmocka_unit_test_setup_teardown(test_transcript_search_and_uses, setup_repo, teardown_repo),
        cmocka_unit_test_setup_teardown(test_transcript_read_and_edit, setup_repo, teardown_repo),
        cmocka_unit_test_setup_teardown(test_transcript_wrong_expectation, setup_repo, teardown_repo),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
