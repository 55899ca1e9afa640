/* common/: error messages, JSON helpers, the thread pool, argument lists. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "args.h"
#include "err.h"
#include "json.h"
#include "pool.h"

static void err_set_and_prefix(void **state)
{
    (void)state;
    struct ctx_err e = {0};
    assert_int_equal(ctx_err_set(&e, CTX_EFORMAT, "tensor %s at byte %d", "head.weight", 42), CTX_EFORMAT);
    assert_string_equal(e.msg, "tensor head.weight at byte 42");
    assert_int_equal(ctx_err_prefix(&e, "loading %s: ", "x.safetensors"), CTX_EFORMAT);
    assert_string_equal(e.msg, "loading x.safetensors: tensor head.weight at byte 42");
    assert_int_equal(ctx_err_errno(&e, CTX_EIO, 2, "opening %s", "f"), CTX_EIO);
    assert_string_equal(e.msg, "opening f: No such file or directory");
    assert_string_equal(ctx_code_name(CTX_EBUSY), "EBUSY");
    assert_string_equal(ctx_code_name(12345), "EUNKNOWN");
    assert_int_equal(ctx_err_set(NULL, CTX_EINVAL, "ignored"), CTX_EINVAL);
}

static void err_truncation_is_marked(void **state)
{
    (void)state;
    struct ctx_err e = {0};
    char big[2000];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = 0;
    ctx_err_set(&e, CTX_EINVAL, "%s", big);
    size_t n = strlen(e.msg);
    assert_int_equal(n, CTX_ERR_MSG_MAX - 1);
    assert_string_equal(e.msg + n - 3, "...");
}

static void json_parse_errors_name_offset(void **state)
{
    (void)state;
    struct ctx_err e = {0};
    const char *bad = "{\"a\": 1,, }";
    assert_null(ctx_json_parse(bad, strlen(bad), "config.json", &e));
    assert_int_equal(e.code, CTX_EFORMAT);
    assert_non_null(strstr(e.msg, "config.json: invalid JSON near byte 9"));
    const char *trail = "{\"a\": 1} x";
    assert_null(ctx_json_parse(trail, strlen(trail), "req", &e));
    assert_non_null(strstr(e.msg, "unexpected data after the JSON value at byte 9"));
    const char *ok = "  {\"a\": 1}\n";
    cJSON *v = ctx_json_parse(ok, strlen(ok), "req", &e);
    assert_non_null(v);
    cJSON_Delete(v);
}

static void json_getters(void **state)
{
    (void)state;
    struct ctx_err e = {0};
    const char *txt = "{\"s\":\"x\",\"i\":7,\"f\":1.5,\"b\":true,\"n\":null}";
    cJSON *o = ctx_json_parse(txt, strlen(txt), "t", &e);
    assert_non_null(o);
    const char *s;
    int64_t i;
    double d;
    bool b;
    assert_int_equal(ctx_json_get_string(o, "s", true, NULL, &s, "cfg", &e), 0);
    assert_string_equal(s, "x");
    assert_int_equal(ctx_json_get_int(o, "i", true, 0, &i, "cfg", &e), 0);
    assert_int_equal(i, 7);
    assert_int_equal(ctx_json_get_int(o, "f", true, 0, &i, "cfg", &e), CTX_EINVAL);
    assert_string_equal(e.msg, "cfg.f must be an integer");
    assert_int_equal(ctx_json_get_double(o, "f", true, 0, &d, "cfg", &e), 0);
    assert_true(d == 1.5);
    assert_int_equal(ctx_json_get_bool(o, "b", true, false, &b, "cfg", &e), 0);
    assert_true(b);
    assert_int_equal(ctx_json_get_string(o, "missing", true, NULL, &s, "cfg", &e), CTX_EINVAL);
    assert_string_equal(e.msg, "cfg.missing is missing");
    assert_int_equal(ctx_json_get_string(o, "missing", false, "dflt", &s, "cfg", &e), 0);
    assert_string_equal(s, "dflt");
    assert_int_equal(ctx_json_get_string(o, "i", true, NULL, &s, "cfg", &e), CTX_EINVAL);
    assert_string_equal(e.msg, "cfg.i must be a string");
    assert_int_equal(ctx_json_get_bool(o, "n", false, false, &b, "cfg", &e), CTX_EINVAL);
    cJSON_Delete(o);
}

static void read_file_limits(void **state)
{
    (void)state;
    char path[] = "/tmp/ctx-test-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "0123456789", 10), 10);
    close(fd);
    struct ctx_err e = {0};
    char *buf;
    size_t n;
    assert_int_equal(ctx_read_file(path, 0, &buf, &n, &e), 0);
    assert_int_equal(n, 10);
    assert_string_equal(buf, "0123456789");
    free(buf);
    assert_int_equal(ctx_read_file(path, 5, &buf, &n, &e), CTX_ERANGE);
    assert_non_null(strstr(e.msg, "over the limit of 5"));
    unlink(path);
    assert_int_equal(ctx_read_file(path, 0, &buf, &n, &e), CTX_ENOTFOUND);
    assert_int_equal(ctx_read_file("/tmp", 0, &buf, &n, &e), CTX_EINVAL);
}

struct sum {
    atomic_ullong total;
    atomic_int seen[4096];
    atomic_int max_tid;
};

static void add_i(void *ud, size_t i, int tid)
{
    struct sum *s = ud;
    atomic_fetch_add(&s->total, i);
    atomic_fetch_add(&s->seen[i], 1);
    int m = atomic_load(&s->max_tid);
    while (tid > m && !atomic_compare_exchange_weak(&s->max_tid, &m, tid))
        ;
}

static void each_thread(void *ud, int tid, int n)
{
    atomic_int *hits = ud;
    assert_true(tid >= 0 && tid < n);
    atomic_fetch_add(&hits[tid], 1);
}

static void pool_runs_every_index_once(void **state)
{
    (void)state;
    struct ctx_err e = {0};
    for (int nt = 1; nt <= 4; nt++) {
        struct ctx_pool *p = ctx_pool_new(nt, &e);
        assert_non_null(p);
        assert_int_equal(ctx_pool_size(p), nt);
        for (int round = 0; round < 200; round++) {
            struct sum *s = calloc(1, sizeof *s);
            size_t n = 1 + (size_t)(round * 37) % 4000;
            ctx_pool_for(p, n, 1 + (size_t)round % 7, add_i, s);
            assert_int_equal(atomic_load(&s->total), (unsigned long long)n * (n - 1) / 2);
            for (size_t i = 0; i < n; i++)
                assert_int_equal(atomic_load(&s->seen[i]), 1);
            assert_true(atomic_load(&s->max_tid) < nt);
            free(s);
        }
        atomic_int hits[8] = {0};
        ctx_pool_run(p, each_thread, hits);
        for (int t = 0; t < nt; t++)
            assert_int_equal(atomic_load(&hits[t]), 1);
        ctx_pool_free(p);
    }
    assert_null(ctx_pool_new(100000, &e));
    assert_int_equal(e.code, CTX_EINVAL);
    assert_true(ctx_cpu_count() >= 1);
}

int ctx_fuzz_int_list_one(const uint8_t *data, size_t size); /* tests/fuzz/fuzz_int_list.c */

/* "0,1" style lists: values, the errors naming the item, and the fuzz entry over hostile inputs. */
static void int_lists(void **state)
{
    (void)state;
    int out[4], n = -1;
    struct ctx_err e = {0};
    assert_int_equal(ctx_parse_int_list("0,1", 0, 255, out, 4, &n, &e), 0);
    assert_int_equal(n, 2);
    assert_int_equal(out[0], 0);
    assert_int_equal(out[1], 1);
    assert_int_equal(ctx_parse_int_list("7", 0, 255, out, 4, &n, &e), 0);
    assert_int_equal(n, 1);
    assert_int_equal(out[0], 7);
    static const struct {
        const char *s, *msg;
    } bad[] = {
        {"", "empty list"},           {"0,x", "item 2 is not a number"}, {"1,", "item 2 is not a number"},
        {",1", "item 1 is not a number"}, {"0,256", "item 2 is outside 0..255"}, {"-1", "item 1 is outside 0..255"},
        {"99999999999999999999", "item 1 is outside 0..255"}, {"1,2,3,4,5", "more than 4 items"},
        {"1;2", "item 1 is not a number"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        n = -1;
        assert_int_equal(ctx_parse_int_list(bad[i].s, 0, 255, out, 4, &n, &e), CTX_EINVAL);
        assert_int_equal(n, 0);
        assert_string_equal(e.msg, bad[i].msg);
    }
    long long v = -7;
    assert_int_equal(ctx_parse_ll("42", 0, 100, &v), 0);
    assert_int_equal(v, 42);
    assert_int_equal(ctx_parse_ll("0x10", 0, 100, &v), 0);
    assert_int_equal(v, 16);
    static const char *const badll[] = {"", "101", "-1", "4x", "99999999999999999999999", " "};
    for (size_t i = 0; i < sizeof badll / sizeof badll[0]; i++) {
        v = -7;
        assert_int_equal(ctx_parse_ll(badll[i], 0, 100, &v), -1);
        assert_int_equal(v, -7);
    }
    static const char *const hostile[] = {"", ",", ",,,", "0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0", "255,256", " 1, 2",
                                          "+3", "0x10", "1\n2", "\xff\xfe", "00000000000000000000000000001"};
    for (size_t i = 0; i < sizeof hostile / sizeof hostile[0]; i++)
        assert_int_equal(ctx_fuzz_int_list_one((const uint8_t *)hostile[i], strlen(hostile[i])), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(err_set_and_prefix),
        cmocka_unit_test(err_truncation_is_marked),
        cmocka_unit_test(json_parse_errors_name_offset),
        cmocka_unit_test(json_getters),
        cmocka_unit_test(read_file_limits),
        cmocka_unit_test(pool_runs_every_index_once),
        cmocka_unit_test(int_lists),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
