/* Runs the libFuzzer entries of tests/fuzz/fuzz_dsml.c and tests/fuzz/fuzz_tokenizer.c over a
 * corpus of hostile inputs, so that their invariants (which abort on violation) are exercised in
 * CI without libFuzzer: every parse.json completion cut at every length and with bytes flipped,
 * random sequences of DSML fragments, encoder requests, text with invalid UTF-8, and broken
 * tokenizer.json bodies. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../fuzz/fuzz_dsml.c"
#include "../fuzz/fuzz_tokenizer.c"
#include "json.h"

static uint64_t rng = 0x9E3779B97F4A7C15ull;

static uint32_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}

static const char *root(void)
{
    const char *r = getenv("CTX_SOURCE_ROOT");
    return r ? r : CTX_SOURCE_ROOT;
}

static cJSON *load(const char *rel)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", root(), rel);
    struct ctx_err e = {0};
    cJSON *v = ctx_json_read_file(p, 0, &e);
    if (!v)
        fail_msg("%s", e.msg);
    return v;
}

static int run_dsml(uint8_t mode, const char *text, size_t len)
{
    uint8_t *buf = malloc(len + 1);
    buf[0] = mode;
    memcpy(buf + 1, text, len);
    int rc = inf_fuzz_dsml_one(buf, len + 1);
    free(buf);
    return rc;
}

static void test_fuzz_dsml_corpus(void **state)
{
    (void)state;
    cJSON *vec = load("tests/fixtures/dsml/parse.json");
    size_t ok = 0, rejected = 0;
    for (const cJSON *c = vec->child; c; c = c->next) {
        const char *t = cJSON_GetObjectItem(c, "completion")->valuestring;
        size_t len = strlen(t);
        uint8_t mode = !strcmp(cJSON_GetObjectItem(c, "thinking_mode")->valuestring, "thinking");
        /* whole, with the tool list (0x80) and in odd chunk sizes */
        assert_int_equal(run_dsml(mode, t, len), 0);
        assert_int_equal(run_dsml((uint8_t)(mode | 0x80 | (5 << 1)), t, len), 0);
        /* every prefix: an unfinished completion is an error, except where only the optional
         * end of sentence after a tool-call block is missing */
        const char *tc_end = "</｜DSML｜tool_calls>";
        size_t te = strlen(tc_end);
        for (size_t k = 0; k < len; k += 1 + k / 64) {
            int rc = run_dsml((uint8_t)(mode | ((k % 7) << 1)), t, k);
            bool calls_done = k >= te && memcmp(t + k - te, tc_end, te) == 0;
            assert_true(rc == CTX_EFORMAT || (rc == 0 && calls_done));
            rejected += rc != 0;
        }
        /* flipped bytes */
        char *m = strdup(t);
        for (int r = 0; r < 20; r++) {
            size_t at = next_rand() % len;
            char old = m[at];
            m[at] = (char)(next_rand() & 0xFF);
            int rc = run_dsml((uint8_t)(next_rand() & 0xFF), m, len);
            assert_true(rc == 0 || rc == CTX_EFORMAT);
            ok += rc == 0;
            m[at] = old;
        }
        free(m);
    }
    cJSON_Delete(vec);
    /* Random sequences of the format's fragments, which reach every state and its errors. */
    static const char *frags[] = {
        "</think>", "<think>", "\n\n<｜DSML｜tool_calls", ">\n", "<｜DSML｜invoke", " name=\"f\">\n",
        "<｜DSML｜parameter", " name=\"p\" string=\"true\">", " name=\"q\" string=\"false\">", "1", "[1, {\"a\": 2}]",
        "</｜DSML｜parameter", "/｜DSML｜parameter", "</｜DSML｜invoke", "</｜DSML｜tool_calls>",
        "<｜end▁of▁sentence｜>", "<｜begin▁of▁sentence｜>", "｜DSML｜", "text ", "日本", "\xE6", "\n", "<", "\"",
    };
    size_t nf = sizeof frags / sizeof frags[0];
    char buf[2048];
    for (int r = 0; r < 3000; r++) {
        size_t l = 0;
        int parts = 1 + (int)(next_rand() % 24);
        for (int k = 0; k < parts; k++) {
            const char *f = frags[next_rand() % nf];
            size_t fl = strlen(f);
            if (l + fl >= sizeof buf)
                break;
            memcpy(buf + l, f, fl);
            l += fl;
        }
        int rc = run_dsml((uint8_t)(next_rand() & 0xFF), buf, l);
        assert_true(rc == 0 || rc == CTX_EFORMAT);
        ok += rc == 0;
    }
    /* Regressions found by libFuzzer: the verdict on an invoke head must not depend on where
     * the text is cut. */
    const char *regress[] = {
        "x\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke <｜DSML｜parameter name=\"p\" string=\"true\">v</｜DSML｜parameter>\n",
        "x\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke \xE6\x97",
    };
    for (size_t i = 0; i < sizeof regress / sizeof regress[0]; i++)
        for (uint8_t m = 0; m < 16; m++)
            assert_int_equal(run_dsml(m, regress[i], strlen(regress[i])), CTX_EFORMAT);
    /* A well-formed skeleton built from the same fragments must parse. */
    const char *good = "r</think>c\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"q\" "
                       "string=\"false\">[1, {\"a\": 2}]</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>";
    assert_int_equal(run_dsml(0x81, good, strlen(good)), 0);
    /* Deep JSON under string="false": rejected or accepted, but no stack overflow. */
    size_t depth = 100000;
    struct inf_buf deep = {0};
    inf_buf_puts(&deep, "\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"q\" "
                        "string=\"false\">");
    for (size_t i = 0; i < depth; i++)
        inf_buf_put(&deep, "[", 1);
    for (size_t i = 0; i < depth; i++)
        inf_buf_put(&deep, "]", 1);
    inf_buf_puts(&deep, "</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>");
    assert_false(deep.oom);
    assert_int_equal(run_dsml(0, deep.p, deep.len), CTX_EFORMAT);
    inf_buf_free(&deep);
    /* The encoder through the same entry: requests from encode.json, and broken ones. */
    cJSON *enc = load("tests/fixtures/dsml/encode.json");
    for (const cJSON *c = enc->child; c; c = c->next) {
        char *s = cJSON_PrintUnformatted(c);
        run_dsml(0, s, strlen(s));
        run_dsml(3, s, strlen(s) / 2);
        free(s);
    }
    cJSON_Delete(enc);
    const char *reqs[] = {
        "[{\"role\": \"tool\", \"content\": [1, {\"type\": \"image\"}, {\"type\": \"text\", \"text\": 5}]}]",
        "[{\"role\": \"assistant\", \"tool_calls\": [{\"function\": {\"name\": \"f\", \"arguments\": {\"a\": [1e999]}}}]}]",
        "[{\"role\": \"user\", \"task\": \"title\"}, {\"role\": \"assistant\"}]",
        "{\"messages\": [{\"role\": \"system\"}], \"tools\": [{\"function\": {\"name\": \"\\u0000\"}}]}",
        "[[], {}, null]",
    };
    for (size_t i = 0; i < sizeof reqs / sizeof reqs[0]; i++)
        run_dsml(1, reqs[i], strlen(reqs[i]));
    assert_true(ok > 0);
    assert_true(rejected > 1000);
}

static void test_fuzz_tokenizer_corpus(void **state)
{
    (void)state;
    /* Text through the real tokenizer (skipped without the npm fixture). */
    cJSON *corpus = load("tests/fixtures/tokenizer/corpus.json");
    uint8_t buf[8192];
    size_t exercised = 0;
    for (const cJSON *c = corpus->child; c; c = c->next) {
        const char *t = cJSON_GetObjectItem(c, "text")->valuestring;
        size_t len = strlen(t);
        if (len + 1 > sizeof buf)
            len = sizeof buf - 1;
        buf[0] = 0;
        memcpy(buf + 1, t, len);
        exercised += (size_t)inf_fuzz_tokenizer_one(buf, len + 1); /* cut mid-character too */
        for (int r = 0; r < 3 && len; r++) {
            buf[1 + next_rand() % len] = (uint8_t)next_rand();
            exercised += (size_t)inf_fuzz_tokenizer_one(buf, len + 1);
        }
    }
    cJSON_Delete(corpus);
    if (exercised == 0)
        skip();
}

static void test_fuzz_tokenizer_loader(void **state)
{
    (void)state;
    /* Tokenizer files: a tiny valid one, then broken variants and every truncation of it. */
    char tj[32768];
    size_t l = 0;
    l += (size_t)snprintf(tj + l, sizeof tj - l, "{\"model\": {\"type\": \"BPE\", \"vocab\": {");
    int n = 0;
    for (int b = 0; b < 256; b++) {
        bool keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        l += (size_t)snprintf(tj + l, sizeof tj - l, "%s\"\\u%04x\": %d", b ? ", " : "", keep ? b : 256 + n++, b);
    }
    l += (size_t)snprintf(tj + l, sizeof tj - l,
                          ", \"he\": 256, \"hel\": 257}, \"merges\": [\"h e\", \"he l\"]}, \"pre_tokenizer\": "
                          "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": "
                          "{\"Regex\": \"\\\\p{N}{1,3}\"}, \"behavior\": \"Isolated\", \"invert\": false}, "
                          "{\"type\": \"ByteLevel\", \"use_regex\": true}]}, \"added_tokens\": [{\"id\": 258, "
                          "\"content\": \"<x>\", \"special\": true}, {\"id\": 259, \"content\": \"o w\"}]}");
    uint8_t *in = malloc(l + 1);
    for (uint8_t mode = 1; mode <= 3; mode += 2) {
        in[0] = mode;
        memcpy(in + 1, tj, l);
        assert_int_equal(inf_fuzz_tokenizer_one(in, l + 1), 1);
        for (size_t cut = 0; cut < l; cut += 1 + cut / 16)
            inf_fuzz_tokenizer_one(in, cut + 1);
        for (int r = 0; r < 300; r++) {
            memcpy(in + 1, tj, l);
            for (int k = 0; k < 3; k++)
                in[1 + next_rand() % l] = (uint8_t)" {}[]\":,0123456789abc\\u-"[next_rand() % 25];
            inf_fuzz_tokenizer_one(in, l + 1);
        }
    }
    free(in);
    const char *broken[] = {
        "{\"model\": {\"vocab\": {\"a\": 2097151}, \"merges\": []}, \"pre_tokenizer\": {\"type\": \"ByteLevel\"}}",
        "{\"model\": {\"vocab\": {}, \"merges\": [\"a b c\", []]}, \"pre_tokenizer\": {\"type\": \"ByteLevel\"}}",
        ("{\"model\": {\"vocab\": {}, \"merges\": []}, \"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": "
         "{\"Regex\": \"(a+)+$\"}, \"behavior\": \"Isolated\"}}"),
        "{\"model\": {\"vocab\": {}, \"merges\": []}, \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": 7}}",
        "{\"model\": {\"vocab\": {}, \"merges\": []}, \"added_tokens\": [{\"id\": -1, \"content\": \"x\"}]}",
        "null", "", "{}",
    };
    for (size_t i = 0; i < sizeof broken / sizeof broken[0]; i++) {
        size_t bl = strlen(broken[i]);
        uint8_t *b = malloc(bl + 1);
        b[0] = 1;
        memcpy(b + 1, broken[i], bl);
        assert_int_equal(inf_fuzz_tokenizer_one(b, bl + 1), 1);
        free(b);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fuzz_dsml_corpus),
        cmocka_unit_test(test_fuzz_tokenizer_corpus),
        cmocka_unit_test(test_fuzz_tokenizer_loader),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    inf_tokenizer_free(fuzz_tok);
    return rc;
}
