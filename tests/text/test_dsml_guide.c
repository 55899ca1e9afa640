/* inference/text/dsml_guide: grammar-constrained DSML decoding, with the real ctx-small tokenizer
 * (models/ctx-small/tokenizer.json) and the agent's 12 real tool schemas.
 *  - the official vectors (tests/fixtures/dsml parse.json completions, encode.json prompts' tool-call
 *    blocks, DeepSeek's official pairs with their declared schemas) are accepted token by token:
 *    every actual token is allowed and is in the mask;
 *  - the malformed kinds the parser reports are refused at the byte where they go wrong;
 *  - 1000 seeded random-logit decodes under the mask, finished by the shortest legal text, always
 *    give completions that inf_dsml_parse accepts, with calls whose names, parameters, required
 *    parameters and value types follow the schemas; the mask equals allows() id by id;
 *  - the forced close of a block (the decoder's token cap) only where no value is cut;
 *  - the fuzz entry (tests/fuzz/fuzz_dsml_guide.c) over hostile inputs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsml.h"
#include "dsml_guide.h"
#include "json.h"
#include "sample.h"
#include "tokenizer.h"
#include "tools.h"

#include "../fuzz/fuzz_dsml_guide.c"

#define D "\xEF\xBD\x9C" "DSML" "\xEF\xBD\x9C"
#define EOS INF_DSML_EOS

static struct inf_tokenizer *tok;
static cJSON *agent_schemas;
static struct inf_dsml_guide *agent_guide;
static size_t vocab;
static uint8_t *mask;

static int setup(void **st)
{
    (void)st;
    const char *root = getenv("CTX_SOURCE_ROOT");
    char path[4096];
    snprintf(path, sizeof path, "%s/models/ctx-small/tokenizer.json", root ? root : ".");
    struct ctx_err e = {0};
    if (inf_tokenizer_load_v4(path, &tok, &e)) {
        fprintf(stderr, "%s\n", e.msg);
        return -1;
    }
    vocab = inf_tokenizer_vocab_size(tok);
    mask = malloc(vocab);
    agent_schemas = cJSON_Parse(agent_tools_schema_text());
    if (!mask || !agent_schemas || inf_dsml_guide_new(tok, agent_schemas, &agent_guide, &e)) {
        fprintf(stderr, "%s\n", e.msg);
        return -1;
    }
    return 0;
}

static int teardown(void **st)
{
    (void)st;
    inf_dsml_guide_free(agent_guide);
    cJSON_Delete(agent_schemas);
    inf_tokenizer_free(tok);
    free(mask);
    return 0;
}

static cJSON *load_fixture(const char *name)
{
    const char *root = getenv("CTX_SOURCE_ROOT");
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/fixtures/dsml/%s", root ? root : ".", name);
    struct ctx_err e = {0};
    cJSON *j = ctx_json_read_file(path, 64u << 20, &e);
    if (!j)
        fail_msg("%s: %s", path, e.msg);
    return j;
}

/* Feed `text` token by token (its own tokenization, control tokens included); every token must be
 * allowed and in the mask. Returns the state after it. */
static struct inf_dsml_guide_state accept_tokens(const struct inf_dsml_guide *g, enum inf_dsml_mode mode,
                                                 const char *text, const char *label)
{
    struct ctx_err e = {0};
    int32_t *ids = NULL;
    size_t n = 0;
    if (inf_tokenizer_encode(tok, text, strlen(text), &ids, &n, &e))
        fail_msg("%s: %s", label, e.msg);
    struct inf_dsml_guide_state s;
    inf_dsml_guide_start(g, mode, &s);
    for (size_t i = 0; i < n; i++) {
        size_t na = inf_dsml_guide_mask(g, &s, mask, vocab);
        if (!inf_dsml_guide_allows(g, &s, ids[i]) || !mask[ids[i]] || na == 0) {
            size_t bl = 0;
            const char *b = inf_tokenizer_id_bytes(tok, ids[i], &bl);
            fail_msg("%s: token %zu (id %d, \"%.*s\") refused", label, i, ids[i], (int)bl, b);
        }
        assert_int_equal(inf_dsml_guide_feed_token(g, &s, ids[i]), 0);
    }
    free(ids);
    return s;
}

/* The vector's tools with their declared types but no "required" (the vectors' calls are random
 * and leave required parameters out). */
static cJSON *tools_without_required(const cJSON *tools)
{
    cJSON *t = cJSON_Duplicate(tools, 1);
    cJSON *x;
    cJSON_ArrayForEach(x, t) {
        cJSON *fn = cJSON_GetObjectItemCaseSensitive(x, "function");
        cJSON *pa = cJSON_GetObjectItemCaseSensitive(fn ? fn : x, "parameters");
        cJSON_DeleteItemFromObjectCaseSensitive(pa, "required");
    }
    return t;
}

/* Tools inferred from a parsed message's calls: each argument's JSON type. */
static void add_inferred(cJSON *tools, const cJSON *msg)
{
    const cJSON *tc;
    cJSON_ArrayForEach(tc, cJSON_GetObjectItemCaseSensitive(msg, "tool_calls")) {
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(tc, "function");
        const char *name = cJSON_GetObjectItemCaseSensitive(fn, "name")->valuestring;
        cJSON *args = cJSON_Parse(cJSON_GetObjectItemCaseSensitive(fn, "arguments")->valuestring);
        assert_non_null(args);
        cJSON *tool = NULL, *x;
        cJSON_ArrayForEach(x, tools) if (!strcmp(cJSON_GetObjectItem(x, "name")->valuestring, name)) tool = x;
        if (!tool) {
            tool = cJSON_CreateObject();
            cJSON_AddStringToObject(tool, "name", name);
            cJSON_AddObjectToObject(cJSON_AddObjectToObject(tool, "parameters"), "properties");
            cJSON_AddItemToArray(tools, tool);
        }
        cJSON *props = cJSON_GetObjectItem(cJSON_GetObjectItem(tool, "parameters"), "properties");
        const cJSON *a;
        cJSON_ArrayForEach(a, args) {
            const char *ty = cJSON_IsString(a) ? "string" : cJSON_IsBool(a) ? "boolean" : cJSON_IsArray(a) ? "array"
                           : cJSON_IsObject(a) ? "object" : cJSON_IsNull(a) ? "null"
                           : a->valuedouble == floor(a->valuedouble) ? "integer" : "number";
            if (!cJSON_GetObjectItem(props, a->string))
                cJSON_AddStringToObject(cJSON_AddObjectToObject(props, a->string), "type", ty);
        }
        cJSON_Delete(args);
    }
}

static void test_parse_vectors(void **st)
{
    (void)st;
    cJSON *vec = load_fixture("parse.json");
    const cJSON *v;
    int n = 0, with_calls = 0;
    cJSON_ArrayForEach(v, vec) {
        const char *name = cJSON_GetObjectItem(v, "name")->valuestring;
        const char *completion = cJSON_GetObjectItem(v, "completion")->valuestring;
        const cJSON *msg = cJSON_GetObjectItem(v, "message");
        if (!msg)
            continue; /* a malformed vector: not a completion the guide must accept */
        enum inf_dsml_mode mode = !strcmp(cJSON_GetObjectItem(v, "thinking_mode")->valuestring, "thinking")
                                      ? INF_DSML_THINKING : INF_DSML_CHAT;
        cJSON *tools = cJSON_CreateArray();
        add_inferred(tools, msg);
        struct inf_dsml_guide *g = NULL;
        struct ctx_err e = {0};
        if (cJSON_GetArraySize(tools) == 0)
            cJSON_AddItemToArray(tools, cJSON_Parse("{\"name\": \"noop\"}"));
        assert_int_equal(inf_dsml_guide_new(tok, tools, &g, &e), 0);
        struct inf_dsml_guide_state s = accept_tokens(g, mode, completion, name);
        assert_true(inf_dsml_guide_closed(&s));
        with_calls += cJSON_GetArraySize(cJSON_GetObjectItem(msg, "tool_calls")) > 0;
        n++;
        inf_dsml_guide_free(g);
        cJSON_Delete(tools);
    }
    assert_int_equal(n, 38);
    assert_true(with_calls >= 10);
    cJSON_Delete(vec);
}

static void test_encode_vectors(void **st)
{
    (void)st;
    cJSON *vec = load_fixture("encode.json");
    const cJSON *v;
    int blocks = 0;
    cJSON_ArrayForEach(v, vec) {
        const char *prompt = cJSON_GetObjectItem(v, "prompt")->valuestring;
        const cJSON *sys = cJSON_GetArrayItem(cJSON_GetObjectItem(v, "messages"), 0);
        const cJSON *decl = cJSON_GetObjectItem(sys, "tools");
        if (!decl)
            continue;
        cJSON *tools = tools_without_required(decl);
        struct inf_dsml_guide *g = NULL;
        struct ctx_err e = {0};
        assert_int_equal(inf_dsml_guide_new(tok, tools, &g, &e), 0);
        static const char open[] = "\n\n<" D "tool_calls", close[] = "</" D "tool_calls>";
        for (const char *p = strstr(prompt, open); p; p = strstr(p + 1, open)) {
            const char *q = strstr(p, close);
            assert_non_null(q);
            size_t len = (size_t)(q - p) + strlen(close);
            if (strstr(p, "$TOOL_NAME") && strstr(p, "$TOOL_NAME") < q)
                continue; /* the template's own example in the ## Tools section */
            char *text = malloc(len + 2);
            text[0] = 'x';
            memcpy(text + 1, p, len);
            text[len + 1] = 0;
            struct inf_dsml_guide_state s = accept_tokens(g, INF_DSML_CHAT, text, cJSON_GetObjectItem(v, "name")->valuestring);
            assert_true(inf_dsml_guide_closed(&s));
            assert_false(inf_dsml_guide_in_block(&s));
            free(text);
            blocks++;
        }
        inf_dsml_guide_free(g);
        cJSON_Delete(tools);
    }
    assert_true(blocks >= 20);
    cJSON_Delete(vec);
}

/* DeepSeek's official pairs: their tools as declared (required parameters kept), the assistant
 * tool-call blocks of the rendered prompts. */
static void test_official_vectors(void **st)
{
    (void)st;
    int blocks = 0;
    for (int i = 1; i <= 4; i++) {
        char name[64];
        snprintf(name, sizeof name, "official/input_%d.json", i);
        cJSON *in = load_fixture(name);
        const cJSON *decl = cJSON_IsObject(in) ? cJSON_GetObjectItem(in, "tools") : NULL;
        for (const cJSON *m = cJSON_IsArray(in) ? in->child : NULL; m; m = m->next)
            if (cJSON_GetObjectItem(m, "tools"))
                decl = cJSON_GetObjectItem(m, "tools"); /* declared on a developer message */
        snprintf(name, sizeof name, "%s/tests/fixtures/dsml/official/output_%d.txt",
                 getenv("CTX_SOURCE_ROOT") ? getenv("CTX_SOURCE_ROOT") : ".", i);
        char *prompt = NULL;
        size_t plen = 0;
        struct ctx_err e = {0};
        assert_int_equal(ctx_read_file(name, 1 << 20, &prompt, &plen, &e), 0);
        if (decl) {
            struct inf_dsml_guide *g = NULL;
            assert_int_equal(inf_dsml_guide_new(tok, decl, &g, &e), 0);
            static const char open[] = "\n\n<" D "tool_calls", close[] = "</" D "tool_calls>";
            for (const char *p = strstr(prompt, open); p; p = strstr(p + 1, open)) {
                const char *q = strstr(p, close);
                assert_non_null(q);
                if (strstr(p, "$TOOL_NAME") && strstr(p, "$TOOL_NAME") < q)
                    continue;
                size_t len = (size_t)(q - p) + strlen(close);
                char *text = malloc(len + 2);
                text[0] = 'x';
                memcpy(text + 1, p, len);
                text[len + 1] = 0;
                struct inf_dsml_guide_state s = accept_tokens(g, INF_DSML_CHAT, text, name);
                assert_true(inf_dsml_guide_closed(&s));
                free(text);
                blocks++;
            }
            inf_dsml_guide_free(g);
        }
        free(prompt);
        cJSON_Delete(in);
    }
    assert_int_equal(blocks, 2);
}

/* ---- refusals -------------------------------------------------------------------------------- */

static const char test_tools[] =
    "[{\"type\": \"function\", \"function\": {\"name\": \"read_file\", \"parameters\": {\"type\": \"object\", "
    "\"properties\": {\"path\": {\"type\": \"string\"}, \"start_line\": {\"type\": \"integer\"}, "
    "\"ratio\": {\"type\": \"number\"}, \"flags\": {\"type\": \"array\"}, \"opts\": {\"type\": \"object\"}, "
    "\"all\": {\"type\": \"boolean\"}, \"any\": {}, \"maybe\": {\"type\": [\"integer\", \"null\"]}}, "
    "\"required\": [\"path\"]}}}, "
    "{\"type\": \"function\", \"function\": {\"name\": \"read\", \"parameters\": {\"properties\": {}}}}, "
    "{\"name\": \"git_status\"}]";

/* Bytes up to the first refusal: SIZE_MAX when all of `text` is accepted. */
static size_t refused_at(const struct inf_dsml_guide *g, enum inf_dsml_mode mode, const char *text)
{
    struct inf_dsml_guide_state s;
    inf_dsml_guide_start(g, mode, &s);
    for (size_t i = 0; text[i]; i++)
        if (inf_dsml_guide_feed(g, &s, text + i, 1))
            return i;
    return SIZE_MAX;
}

#define BLK "x\n\n<" D "tool_calls>\n"
#define INV(n) "<" D "invoke name=\"" n "\">\n"
#define PS(n, v) "<" D "parameter name=\"" n "\" string=\"true\">" v "</" D "parameter>\n"
#define PJ(n, v) "<" D "parameter name=\"" n "\" string=\"false\">" v "</" D "parameter>\n"
#define ENDI "</" D "invoke>\n"
#define ENDB "</" D "tool_calls>"

static void test_refusals(void **st)
{
    (void)st;
    cJSON *tools = cJSON_Parse(test_tools);
    struct inf_dsml_guide *g = NULL;
    struct ctx_err e = {0};
    assert_int_equal(inf_dsml_guide_new(tok, tools, &g, &e), 0);
    assert_int_equal(inf_dsml_guide_n_tools(g), 3);
    struct {
        const char *text;
        const char *bad; /* the refused byte begins the last occurrence of this in text; "": none */
        enum inf_dsml_mode mode;
        enum inf_dsml_error_kind parser; /* what inf_dsml_parse says about the whole text; NONE: not checked */
    } cases[] = {
        /* accepted whole, as a reference */
        {BLK INV("read_file") PS("path", "a.c") PJ("start_line", "12") ENDI ENDB, "", INF_DSML_CHAT, INF_DSML_ERR_NONE},
        /* unknown tool (prefix of a known one, then not) */
        {BLK "<" D "invoke name=\"read_fil\">\n", "\">\n", INF_DSML_CHAT, INF_DSML_ERR_NONE},
        {BLK INV("write_file"), "write_file", INF_DSML_CHAT, INF_DSML_ERR_NONE},
        /* unknown parameter */
        {BLK INV("read_file") PS("paths", "a"), "s\"", INF_DSML_CHAT, INF_DSML_ERR_NONE},
        /* duplicate parameter */
        {BLK INV("read_file") PS("path", "a") PS("path", "b"), "path\" string=\"true\">b", INF_DSML_CHAT,
         INF_DSML_ERR_NONE},
        /* bad JSON, by kind */
        {BLK INV("read_file") PS("path", "a") PJ("start_line", "12a"), "a</", INF_DSML_CHAT, INF_DSML_ERR_BAD_JSON},
        {BLK INV("read_file") PS("path", "a") PJ("start_line", "1.5"), ".5", INF_DSML_CHAT, INF_DSML_ERR_NONE},
        {BLK INV("read_file") PS("path", "a") PJ("ratio", "01"), "1</", INF_DSML_CHAT, INF_DSML_ERR_BAD_JSON},
        {BLK INV("read_file") PS("path", "a") PJ("ratio", "1."), "</", INF_DSML_CHAT, INF_DSML_ERR_BAD_JSON},
        {BLK INV("read_file") PS("path", "a") PJ("flags", "[1,]"), "]<", INF_DSML_CHAT, INF_DSML_ERR_BAD_JSON},
        {BLK INV("read_file") PS("path", "a") PJ("opts", "{\"a\" 1}"), "1}", INF_DSML_CHAT, INF_DSML_ERR_BAD_JSON},
        {BLK INV("read_file") PS("path", "a") PJ("all", "True"), "True", INF_DSML_CHAT, INF_DSML_ERR_BAD_JSON},
        {BLK INV("read_file") PS("path", "a") PJ("any", "NaN"), "NaN", INF_DSML_CHAT, INF_DSML_ERR_NONE},
        {BLK INV("read_file") PS("path", "a") PJ("any", ""), "</", INF_DSML_CHAT, INF_DSML_ERR_BAD_JSON},
        {BLK INV("read_file") PS("path", "a") PJ("any", "\"a\tb\""), "\tb", INF_DSML_CHAT, INF_DSML_ERR_BAD_JSON},
        {BLK INV("read_file") PS("path", "a") PJ("any", "\"a\\qb\""), "qb", INF_DSML_CHAT, INF_DSML_ERR_BAD_JSON},
        /* the closing tag inside a JSON string cuts the value short */
        {BLK INV("read_file") PS("path", "a") PJ("any", "\"</" D "parameter>\""), "r>\"", INF_DSML_CHAT,
         INF_DSML_ERR_BAD_JSON},
        /* wrong kind for the declared type */
        {BLK INV("read_file") PS("path", "a") PJ("all", "1"), "1</", INF_DSML_CHAT, INF_DSML_ERR_NONE},
        {BLK INV("read_file") PS("path", "a") PJ("maybe", "true"), "true", INF_DSML_CHAT, INF_DSML_ERR_NONE},
        {BLK INV("read_file") PS("start_line", "3"), "true\">3", INF_DSML_CHAT, INF_DSML_ERR_NONE},
        {BLK INV("read_file") PJ("path", "\"a\""), "false\">", INF_DSML_CHAT, INF_DSML_ERR_NONE},
        /* a required parameter missing when the invoke closes */
        {BLK INV("read_file") PJ("start_line", "3") ENDI, "/" D "invoke", INF_DSML_CHAT, INF_DSML_ERR_NONE},
        {BLK INV("read_file") ENDI, "/" D "invoke", INF_DSML_CHAT, INF_DSML_ERR_NONE},
        /* format: attribute syntax, missing newline, stray text */
        {BLK "<" D "invoke  name=\"read\">\n", " name=\"read", INF_DSML_CHAT, INF_DSML_ERR_NONE},
        {BLK INV("read_file") "<" D "parameter name=\"path\" string=\"yes\">", "yes", INF_DSML_CHAT, INF_DSML_ERR_NONE},
        {BLK INV("read") "</" D "invoke>" ENDB, ENDB, INF_DSML_CHAT, INF_DSML_ERR_FORMAT},
        {BLK INV("read") ENDI "hello", "hello", INF_DSML_CHAT, INF_DSML_ERR_FORMAT},
        /* an empty block: allowed by the parser, refused here (nothing to run) */
        {BLK ENDB, "/" D "tool_calls>", INF_DSML_CHAT, INF_DSML_ERR_NONE},
        /* the value's closing tag without '<' */
        {BLK INV("read_file") "<" D "parameter name=\"path\" string=\"true\">a/" D "parameter>", "r>",
         INF_DSML_CHAT, INF_DSML_ERR_FORMAT},
        /* special tokens in text */
        {"hello " D " there", "\x9C there", INF_DSML_CHAT, INF_DSML_ERR_SPECIAL_TOKEN},
        {"hello <think> there", "> there", INF_DSML_CHAT, INF_DSML_ERR_SPECIAL_TOKEN},
        {"hello </think> there", "> there", INF_DSML_CHAT, INF_DSML_ERR_SPECIAL_TOKEN},
        {"a<" D "tool_calls>", "\x9Ctool_calls", INF_DSML_CHAT, INF_DSML_ERR_SPECIAL_TOKEN},
        {"a\n\n<" D "tool_c!", "!", INF_DSML_CHAT, INF_DSML_ERR_SPECIAL_TOKEN},
        /* missing </think>: a block or the end inside the reasoning */
        {"hmm\n\n<" D "tool_calls>", "\x9Ctool_calls>", INF_DSML_THINKING, INF_DSML_ERR_MISSING_THINK_END},
        {"hmm" EOS, ">", INF_DSML_THINKING, INF_DSML_ERR_MISSING_THINK_END},
        /* trailing text */
        {BLK INV("read") ENDI ENDB "more", "more", INF_DSML_CHAT, INF_DSML_ERR_TRAILING},
        {"done" EOS "more", "more", INF_DSML_CHAT, INF_DSML_ERR_TRAILING},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t len = strlen(cases[i].text);
        size_t want = SIZE_MAX; /* the last occurrence of `bad` */
        for (const char *p = *cases[i].bad ? strstr(cases[i].text, cases[i].bad) : NULL; p;
             p = strstr(p + 1, cases[i].bad))
            want = (size_t)(p - cases[i].text);
        size_t got = refused_at(g, cases[i].mode, cases[i].text);
        if (got != want)
            fail_msg("case %zu: refused at %zu, want %zu (%s)", i, got, want, cases[i].text);
        if (cases[i].parser != INF_DSML_ERR_NONE) {
            cJSON *m = NULL;
            struct inf_dsml_error pe;
            struct inf_dsml_parser_opts po = {.mode = cases[i].mode};
            assert_int_equal(inf_dsml_parse(cases[i].text, len, &po, &m, &pe, &e), CTX_EFORMAT);
            if (pe.kind != cases[i].parser)
                fail_msg("case %zu: the parser says %s", i, inf_dsml_error_kind_name(pe.kind));
        }
    }
    /* the end-of-sentence id: only where the completion may end */
    int32_t eos = inf_tokenizer_token_id(tok, EOS);
    assert_true(eos >= 0);
    struct inf_dsml_guide_state s;
    inf_dsml_guide_start(g, INF_DSML_CHAT, &s);
    assert_true(inf_dsml_guide_allows(g, &s, eos));
    assert_int_equal(inf_dsml_guide_feed(g, &s, BLK INV("read_file") "<" D "parameter name=\"path\" string=\"true\">ab",
                                         strlen(BLK INV("read_file") "<" D "parameter name=\"path\" string=\"true\">ab")),
                     0);
    assert_true(inf_dsml_guide_in_block(&s));
    assert_false(inf_dsml_guide_allows(g, &s, eos));
    inf_dsml_guide_start(g, INF_DSML_THINKING, &s);
    assert_false(inf_dsml_guide_allows(g, &s, eos));
    /* after the block: the end of sentence only; after it: nothing */
    const char *done = BLK INV("read") ENDI ENDB;
    inf_dsml_guide_start(g, INF_DSML_CHAT, &s);
    assert_int_equal(inf_dsml_guide_feed(g, &s, done, strlen(done)), 0);
    assert_true(inf_dsml_guide_closed(&s));
    assert_true(inf_dsml_guide_mask(g, &s, mask, vocab) >= 1); /* the id, and tokens spelling its start */
    assert_int_equal(mask[eos], 1);
    assert_int_equal(mask[inf_tokenizer_token_id(tok, "Ġthe")], 0);
    assert_int_equal(inf_dsml_guide_feed_token(g, &s, eos), 0);
    assert_int_equal(inf_dsml_guide_mask(g, &s, mask, vocab), 0);
    /* no tools: a block cannot be opened */
    struct inf_dsml_guide *g0 = NULL;
    cJSON *none = cJSON_CreateArray();
    assert_int_equal(inf_dsml_guide_new(tok, none, &g0, &e), 0);
    assert_int_equal(refused_at(g0, INF_DSML_CHAT, "a\n\n<" D "tool_calls"), strlen("a\n\n<" D) - 1);
    assert_int_equal(refused_at(g0, INF_DSML_CHAT, "plain answer" EOS), SIZE_MAX);
    inf_dsml_guide_free(g0);
    cJSON_Delete(none);
    /* bad schemas are named */
    const char *bad[] = {"[{\"name\": \"a\\\"b\"}]", "[{\"name\": \"x\"}, {\"name\": \"x\"}]",
                         "[{\"name\": \"x\", \"parameters\": {\"properties\": {\"p\": {}}, \"required\": [\"q\"]}}]",
                         "[{\"description\": \"no name\"}]", "{\"name\": \"x\"}"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        cJSON *b = cJSON_Parse(bad[i]);
        struct inf_dsml_guide *gb = NULL;
        e = (struct ctx_err){0};
        assert_int_equal(inf_dsml_guide_new(tok, b, &gb, &e), CTX_EINVAL);
        assert_null(gb);
        assert_true(strlen(e.msg) > 10);
        cJSON_Delete(b);
    }
    inf_dsml_guide_free(g);
    cJSON_Delete(tools);
}

static void test_close_text(void **st)
{
    (void)st;
    cJSON *tools = cJSON_Parse(test_tools);
    struct inf_dsml_guide *g = NULL;
    struct ctx_err e = {0};
    assert_int_equal(inf_dsml_guide_new(tok, tools, &g, &e), 0);
    struct {
        const char *text;
        const char *close; /* NULL: cannot be closed */
    } cases[] = {
        {BLK INV("read_file") PS("path", "a.c"), "</" D "invoke>\n" ENDB},
        {BLK INV("read_file") PS("path", "a.c") "</" D "inv", "oke>\n" ENDB},
        {BLK INV("read_file") PS("path", "a.c") "<" D "para", NULL},
        {BLK INV("read_file") "<" D "parameter name=\"path\" string=\"true\">a.c", NULL}, /* mid-value */
        {BLK INV("read_file") PJ("start_line", "3"), NULL},                                 /* path missing */
        {BLK INV("read_file") PS("path", "a") "<" D "parameter name=\"flags\" string=\"false\">[1, 2] ",
         "</" D "parameter>\n</" D "invoke>\n" ENDB},
        {BLK INV("read_file") PS("path", "a") "<" D "parameter name=\"flags\" string=\"false\">[1, 2", NULL},
        {BLK INV("read_file") PS("path", "a") "<" D "parameter name=\"start_line\" string=\"false\">12", NULL},
        {BLK INV("git_status"), "</" D "invoke>\n" ENDB},
        {BLK INV("git_status") ENDI, ENDB},
        {BLK, NULL},
        {"just text", NULL},
        {BLK INV("read") ENDI ENDB, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct inf_dsml_guide_state s;
        inf_dsml_guide_start(g, INF_DSML_CHAT, &s);
        assert_int_equal(inf_dsml_guide_feed(g, &s, cases[i].text, strlen(cases[i].text)), 0);
        char buf[128];
        size_t n = 0;
        int rc = inf_dsml_guide_close_text(g, &s, buf, sizeof buf, &n);
        if (!cases[i].close) {
            if (rc != CTX_ENOTFOUND)
                fail_msg("case %zu: closed with \"%s\"", i, buf);
            continue;
        }
        if (rc)
            fail_msg("case %zu: not closed (%d)", i, rc);
        assert_string_equal(buf, cases[i].close);
        assert_int_equal(n, strlen(cases[i].close));
        /* the closed text parses */
        assert_int_equal(inf_dsml_guide_feed(g, &s, buf, n), 0);
        assert_true(inf_dsml_guide_closed(&s));
        size_t tl = strlen(cases[i].text);
        char *all = malloc(tl + n + 1);
        memcpy(all, cases[i].text, tl);
        memcpy(all + tl, buf, n + 1);
        cJSON *m = NULL;
        struct inf_dsml_parser_opts po = {.mode = INF_DSML_CHAT, .tools = tools};
        assert_int_equal(inf_dsml_parse(all, tl + n, &po, &m, NULL, &e), 0);
        assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(m, "tool_calls")), 1);
        cJSON_Delete(m);
        free(all);
    }
    /* cutting a string value where it stands: only through close_value_text, only with the
     * required parameters present, and delimiters begun inside the value do not swallow it */
    struct {
        const char *text, *tool;
        int rc;
    } cuts[] = {
        {BLK INV("read_file") "<" D "parameter name=\"path\" string=\"true\">a_0_0_0", "read_file", 0},
        {BLK INV("read_file") "<" D "parameter name=\"path\" string=\"true\">a</" D "param", "read_file", 0},
        {BLK INV("read_file") "<" D "parameter name=\"path\" string=\"true\">a/", "read_file", 0},
        {BLK INV("read_file") PJ("start_line", "3") "<" D "parameter name=\"flags\" string=\"false\">[1", "read_file",
         CTX_ENOTFOUND},
        {BLK INV("read_file") "<" D "parameter name=\"any\" string=\"true\">x", "read_file", CTX_ENOTFOUND},
        {BLK INV("read"), "read", 0},
        {BLK "<" D "invoke name=\"rea", NULL, CTX_ENOTFOUND},
        {"text", NULL, CTX_ENOTFOUND},
    };
    for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
        struct inf_dsml_guide_state s;
        inf_dsml_guide_start(g, INF_DSML_CHAT, &s);
        assert_int_equal(inf_dsml_guide_feed(g, &s, cuts[i].text, strlen(cuts[i].text)), 0);
        const char *tool = inf_dsml_guide_tool(g, &s);
        if (cuts[i].tool)
            assert_string_equal(tool, cuts[i].tool);
        else
            assert_null(tool);
        char buf[128];
        size_t n = 0;
        int rc = inf_dsml_guide_close_value_text(g, &s, buf, sizeof buf, &n);
        if (rc != cuts[i].rc)
            fail_msg("cut %zu: %d", i, rc);
        if (rc)
            continue;
        size_t tl = strlen(cuts[i].text);
        char *all = malloc(tl + n + 1);
        memcpy(all, cuts[i].text, tl);
        memcpy(all + tl, buf, n + 1);
        cJSON *m = NULL;
        struct inf_dsml_parser_opts po = {.mode = INF_DSML_CHAT, .tools = tools};
        assert_int_equal(inf_dsml_parse(all, tl + n, &po, &m, NULL, &e), 0);
        const cJSON *call = cJSON_GetArrayItem(cJSON_GetObjectItem(m, "tool_calls"), 0);
        assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(call, "function"), "name")->valuestring, cuts[i].tool);
        cJSON_Delete(m);
        free(all);
    }
    char small[8];
    size_t n;
    struct inf_dsml_guide_state s;
    inf_dsml_guide_start(g, INF_DSML_CHAT, &s);
    const char *t = BLK INV("git_status");
    assert_int_equal(inf_dsml_guide_feed(g, &s, t, strlen(t)), 0);
    assert_int_equal(inf_dsml_guide_close_text(g, &s, small, sizeof small, &n), CTX_ERANGE);
    inf_dsml_guide_free(g);
    cJSON_Delete(tools);
}

/* ---- random decoding under the mask ----------------------------------------------------------- */

static uint64_t rng(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

/* Finish a completion with the shortest legal text a simple greedy search finds: the closing
 * strings first, then the parameter and tool names, then single bytes. */
static int finish(const struct inf_dsml_guide *g, struct inf_dsml_guide_state *s, char *out, size_t cap, size_t *len)
{
    static const char *const text_end[] = {"</think>", EOS, NULL};
    static const char *const block_end[] = {
        "</" D "parameter>", "\n</" D "invoke>", "\n</" D "tool_calls>", "\n<" D "parameter name=\"",
        "\" string=\"true\">", "\" string=\"false\">", "\">", "\"", "]", "}", ":", "0", NULL,
    };
    for (int it = 0; it < 4000 && !inf_dsml_guide_closed(s); it++) {
        bool moved = false;
        for (const char *const *c = inf_dsml_guide_in_block(s) ? block_end : text_end; *c && !moved; c++) {
            struct inf_dsml_guide_state t = *s;
            size_t n = strlen(*c);
            if (*len + n < cap && inf_dsml_guide_feed(g, &t, *c, n) == 0) {
                *s = t;
                memcpy(out + *len, *c, n);
                *len += n;
                moved = true;
            }
        }
        for (int k = 0; k < 255 && !moved; k++) {
            struct inf_dsml_guide_state t = *s;
            char c = (char)(k < 223 ? 33 + k : 1 + (k - 223)); /* printable first, white space last */
            if (*len + 1 < cap && inf_dsml_guide_feed(g, &t, &c, 1) == 0) {
                *s = t;
                out[(*len)++] = c;
                moved = true;
            }
        }
        if (!moved)
            return -1;
    }
    out[*len] = 0;
    return inf_dsml_guide_closed(s) ? 0 : -1;
}

static const cJSON *schema_of(const char *name)
{
    const cJSON *t;
    cJSON_ArrayForEach(t, agent_schemas) {
        const cJSON *fn = cJSON_GetObjectItem(t, "function");
        if (!strcmp(cJSON_GetObjectItem(fn, "name")->valuestring, name))
            return cJSON_GetObjectItem(fn, "parameters");
    }
    return NULL;
}

static void check_calls(const cJSON *msg, size_t trial)
{
    const cJSON *tc;
    cJSON_ArrayForEach(tc, cJSON_GetObjectItem(msg, "tool_calls")) {
        const cJSON *fn = cJSON_GetObjectItem(tc, "function");
        const char *name = cJSON_GetObjectItem(fn, "name")->valuestring;
        const cJSON *params = schema_of(name);
        if (!params)
            fail_msg("trial %zu: unknown tool %s", trial, name);
        cJSON *args = cJSON_Parse(cJSON_GetObjectItem(fn, "arguments")->valuestring);
        assert_true(cJSON_IsObject(args));
        const cJSON *props = cJSON_GetObjectItem(params, "properties"), *a, *r;
        cJSON_ArrayForEach(a, args) {
            const cJSON *p = cJSON_GetObjectItem(props, a->string);
            if (!p)
                fail_msg("trial %zu: %s has no parameter %s", trial, name, a->string);
            const char *ty = cJSON_GetObjectItem(p, "type")->valuestring;
            bool ok = !strcmp(ty, "string") ? cJSON_IsString(a)
                      : !strcmp(ty, "integer") ? cJSON_IsNumber(a) && a->valuedouble == floor(a->valuedouble)
                      : !strcmp(ty, "boolean") ? cJSON_IsBool(a) : false;
            if (!ok)
                fail_msg("trial %zu: %s.%s is not a %s", trial, name, a->string, ty);
        }
        cJSON_ArrayForEach(r, cJSON_GetObjectItem(params, "required")) {
            if (!cJSON_GetObjectItem(args, r->valuestring))
                fail_msg("trial %zu: %s without its required %s", trial, name, r->valuestring);
        }
        cJSON_Delete(args);
    }
}

static void test_random_decode(void **st)
{
    (void)st;
    float *logits = malloc(vocab * sizeof *logits);
    size_t cap = 1 << 16;
    char *text = malloc(cap);
    size_t calls = 0, blocks = 0, compared = 0, lazy_checked = 0;
    for (size_t trial = 0; trial < 1000; trial++) {
        uint64_t x = 0x9E3779B97F4A7C15ull ^ (trial * 0x100000001B3ull + 1);
        enum inf_dsml_mode mode = trial % 4 == 3 ? INF_DSML_THINKING : INF_DSML_CHAT;
        struct inf_dsml_guide_state s;
        inf_dsml_guide_start(agent_guide, mode, &s);
        size_t len = 0;
        /* most trials open the block at once (random tokens rarely would) */
        const char *pre = trial % 8 == 7 ? "" : mode == INF_DSML_THINKING ? "hmm</think>\n\n<" D "tool_calls"
                                                                           : "\n\n<" D "tool_calls";
        assert_int_equal(inf_dsml_guide_feed(agent_guide, &s, pre, strlen(pre)), 0);
        memcpy(text, pre, strlen(pre));
        len = strlen(pre);
        size_t steps = 1 + rng(&x) % 48;
        for (size_t k = 0; k < steps && !inf_dsml_guide_closed(&s); k++) {
            size_t na = inf_dsml_guide_mask(agent_guide, &s, mask, vocab);
            assert_true(na > 0);
            if ((trial + k) % 37 == 0) { /* the mask is allows() id by id */
                for (size_t id = 0; id < vocab; id++)
                    if (mask[id] != inf_dsml_guide_allows(agent_guide, &s, (int32_t)id))
                        fail_msg("trial %zu: mask and allows() differ on id %zu", trial, id);
                compared++;
            }
            if ((trial + k) % 5 == 0) { /* ctxd's lazy greedy choice (the raw argmax when allowed, else the
                                          * masked one) is the masked argmax, on raw logits with ties */
                for (size_t id = 0; id < vocab; id++)
                    logits[id] = (float)(rng(&x) >> 60);
                int32_t raw = inf_argmax(logits, (int)vocab);
                int32_t lazy = inf_dsml_guide_allows(agent_guide, &s, raw) ? raw : -1;
                for (size_t id = 0; id < vocab; id++)
                    if (!mask[id])
                        logits[id] = -INFINITY;
                int32_t masked = inf_argmax(logits, (int)vocab);
                assert_int_equal(lazy < 0 ? masked : lazy, masked);
                lazy_checked++;
            }
            for (size_t id = 0; id < vocab; id++)
                logits[id] = mask[id] ? (float)(rng(&x) >> 11) * 0x1.0p-53f : -INFINITY;
            int32_t t = inf_argmax(logits, (int)vocab);
            assert_true(mask[t]);
            size_t bl = 0;
            const char *b = inf_tokenizer_id_bytes(tok, t, &bl);
            assert_int_equal(inf_dsml_guide_feed_token(agent_guide, &s, t), 0);
            assert_true(len + bl < cap / 2);
            memcpy(text + len, b, bl);
            len += bl;
        }
        if (finish(agent_guide, &s, text, cap, &len))
            fail_msg("trial %zu: no legal end found after \"%.*s\"", trial, (int)len, text);
        cJSON *m = NULL;
        struct inf_dsml_error pe = {0};
        struct ctx_err e = {0};
        struct inf_dsml_parser_opts po = {.mode = mode, .tools = agent_schemas};
        if (inf_dsml_parse(text, len, &po, &m, &pe, &e))
            fail_msg("trial %zu: the parser refused (%s): %.*s", trial, pe.message, (int)len, text);
        size_t nc = (size_t)cJSON_GetArraySize(cJSON_GetObjectItem(m, "tool_calls"));
        calls += nc;
        blocks += nc > 0;
        check_calls(m, trial);
        cJSON_Delete(m);
    }
    assert_true(blocks >= 870); /* every trial that opened a block closed it with calls */
    assert_true(calls >= blocks);
    assert_true(compared > 0);
    assert_true(lazy_checked > 0);
    free(text);
    free(logits);
}

static void test_fuzz_entry(void **st)
{
    (void)st;
    const char *inputs[] = {
        "",
        "\x00",
        "\x01hmm</think>answer" EOS,
        "\x02\n\n<" D "tool_calls>\n<" D "invoke name=\"read_file\">\n<" D "parameter name=\"path\" string=\"true\">a"
        "</" D "parameter>\n</" D "invoke>\n</" D "tool_calls>",
        "\x03" "\n\n<" D "tool_calls>\n<" D "invoke name=\"search\">\n<" D "parameter name=\"pattern\" string=\"true\">"
        "</" D "parameter>\n<" D "parameter name=\"max_results\" string=\"false\">-0</" D "parameter>\n</" D "invoke>\n"
        "</" D "tool_calls>" EOS,
        "\x05" "\n\n<" D "tool_calls>\n<" D "invoke name=\"git_diff\">\n<" D "parameter name=\"staged\" string=\"false\">"
        "tru</" D "parameter>",
        "\x07<<<<" D D "\n\n\n<" D "tool_calls" "\xff\xfe",
        "\x09" "\n\n<" D "tool_calls>\n<" D "invoke name=\"list_dir\">\n</" D "invoke>\n<" D "invoke name=\"run_tests\">\n"
        "</" D "invoke>\n</" D "tool_calls>",
        /* found by libFuzzer: a block followed by part of an end of sentence is not closed */
        "\x02" "\n\n<" D "tool_calls>\n<" D "invoke name=\"run_tests\">\n</" D "invoke>\n</" D "tool_calls>"
        "<\xEF\xBD\x9C" "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD",
    };
    for (size_t i = 0; i < sizeof inputs / sizeof *inputs; i++) {
        size_t n = i == 1 ? 1 : strlen(inputs[i]);
        assert_int_equal(inf_fuzz_dsml_guide_one((const uint8_t *)inputs[i], n), 0);
    }
    /* random bytes, and random cuts of a valid block */
    uint64_t x = 42;
    uint8_t buf[600];
    for (int k = 0; k < 300; k++) {
        size_t n = 1 + rng(&x) % sizeof buf;
        for (size_t i = 0; i < n; i++)
            buf[i] = (uint8_t)rng(&x);
        assert_int_equal(inf_fuzz_dsml_guide_one(buf, n), 0);
        size_t l3 = strlen(inputs[3]), cut = 1 + rng(&x) % l3;
        assert_int_equal(inf_fuzz_dsml_guide_one((const uint8_t *)inputs[3], cut), 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_vectors), cmocka_unit_test(test_encode_vectors),
        cmocka_unit_test(test_official_vectors), cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_close_text), cmocka_unit_test(test_random_decode), cmocka_unit_test(test_fuzz_entry),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
