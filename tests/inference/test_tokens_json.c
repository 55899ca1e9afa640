/* inference/tokens_json.h: the token files of ctx model score / generate, good and hostile, through the
 * fuzz target's entry (tests/fuzz/fuzz_tokens_json.c) and directly for the values and messages. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tokens_json.h"

int ctx_fuzz_tokens_json_one(const uint8_t *data, size_t size);

static int fz(char form, const char *s)
{
    size_t n = strlen(s);
    uint8_t *b = malloc(n + 1);
    b[0] = (uint8_t)form;
    memcpy(b + 1, s, n);
    int rc = ctx_fuzz_tokens_json_one(b, n + 1);
    free(b);
    return rc;
}

static void test_values(void **st)
{
    (void)st;
    struct ctx_err e = {0};
    int *t = NULL, n = 0, p = 0;
    const char *a = "{\"tokens\":[3,4,5],\"prefill\":2}";
    assert_int_equal(inf_tokens_json_parse(a, strlen(a), "a", 10, &t, &n, &p, &e), 0);
    assert_int_equal(n, 3);
    assert_int_equal(p, 2);
    assert_int_equal(t[0], 3);
    assert_int_equal(t[2], 5);
    free(t);
    const char *b = "[7, 8]"; /* a prompt as ctx tokenize prints it */
    assert_int_equal(inf_tokens_json_parse(b, strlen(b), "b", 10, &t, &n, NULL, &e), 0);
    assert_int_equal(n, 2);
    assert_int_equal(t[1], 8);
    free(t);
    t = NULL;
    assert_int_equal(inf_tokens_json_parse(b, strlen(b), "b", 10, &t, &n, &p, &e), CTX_EFORMAT); /* score wants the object */
    assert_null(t);
    const char *c = "{\"tokens\":[1,2,10]}";
    assert_int_equal(inf_tokens_json_parse(c, strlen(c), "c", 10, &t, &n, NULL, &e), CTX_EINVAL);
    assert_non_null(strstr(e.msg, "tokens[2]"));
    const char *d = "{\"tokens\":[1,2],\"prefill\":3}";
    assert_int_equal(inf_tokens_json_parse(d, strlen(d), "d", 10, &t, &n, &p, &e), CTX_EINVAL);
    assert_non_null(strstr(e.msg, "prefill"));
    assert_int_equal(inf_tokens_json_parse("[]", 2, "e", 10, &t, &n, NULL, &e), CTX_EINVAL);
    assert_non_null(strstr(e.msg, "empty"));
    assert_int_equal(inf_tokens_json_parse("{\"tokens\":[1.5]}", 16, "f", 10, &t, &n, NULL, &e), CTX_EINVAL);
    assert_int_not_equal(inf_tokens_json_parse("{\"tokens\":[1", 12, "g", 10, &t, &n, NULL, &e), 0);
    assert_non_null(strstr(e.msg, "g"));
}

static void test_hostile(void **st)
{
    (void)st;
    static const char *in[] = {"", "[", "[]", "[-1]", "[1e300]", "[1e-300]", "[\"3\"]", "[null]", "[[1]]",
                               "{\"tokens\":{}}", "{\"tokens\":[1],\"prefill\":\"1\"}", "{\"tokens\":[1],\"prefill\":1e20}",
                               "{\"tokens\":[1],\"prefill\":0}", "{\"tokens\":[999,1000]}", "[2147483648]", "[NaN]",
                               "{\"tokens\":[1,2,3],\"prefill\":3,\"extra\":[1]}", "\"[1]\"", "7", "{}", "[0,0,0,0]"};
    for (size_t i = 0; i < sizeof in / sizeof in[0]; i++) {
        assert_int_equal(fz(0, in[i]), 0);
        assert_int_equal(fz(1, in[i]), 0);
    }
    /* random bytes around the valid forms */
    uint64_t s = 0x9e3779b97f4a7c15ull;
    for (int k = 0; k < 2000; k++) {
        uint8_t b[48];
        size_t n = 1 + (size_t)(k % 47);
        for (size_t i = 0; i < n; i++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            static const char al[] = "[]{},:0123456789-.e\"tokensprefill ";
            b[i] = (uint8_t)al[(s >> 33) % (sizeof al - 1)];
        }
        b[0] = (uint8_t)(k & 1);
        assert_int_equal(ctx_fuzz_tokens_json_one(b, n), 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_values), cmocka_unit_test(test_hostile)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
