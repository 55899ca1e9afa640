/* fim.complete: the pure stop/trim functions with exact offsets, then a real ctxd with the bundled
 * default model (models/ctx-small): result shape, budget trimming at line boundaries, determinism,
 * stop strings, cancellation (fim.cancel, supersession, disconnect) and bad params. A 28M-parameter
 * model's words are not a contract, so these tests assert mechanics, not words. argv[1] = ctxd. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client.h"
#include "fim.h"
#include "harness.h"
#include "json.h"

static const char *ctxd_bin, *ctx_bin;
static char dir[32], sock[96], logpath[96];
static pid_t pid;

/* ---- pure pieces ---- */

static int count_bytes(void *ud, const char *text, size_t len, size_t *n)
{
    (void)ud;
    (void)text;
    *n = len; /* one "token" per byte: exact expectations */
    return 0;
}

static void cut_at_stops_and_blank_lines(void **state)
{
    (void)state;
    const char *why = NULL;
    const char *stops[] = {"END", "}"};
    assert_int_equal(ctxd_fim_cut("abc", 3, stops, 2, &why), 3);
    assert_null(why);
    assert_int_equal(ctxd_fim_cut("a + b;}\nx", 9, stops, 2, &why), 6);
    assert_string_equal(why, "stop_string");
    /* the earliest of several stops wins, whatever their order in the list */
    assert_int_equal(ctxd_fim_cut("xxENDyy}", 8, stops, 2, &why), 2);
    /* a blank line (spaces, tabs and CR allowed) cuts before its first newline */
    assert_int_equal(ctxd_fim_cut("a;\n\nb", 5, NULL, 0, &why), 2);
    assert_string_equal(why, "blank_line");
    assert_int_equal(ctxd_fim_cut("a;\r\n \t\r\nb", 9, NULL, 0, &why), 3);
    assert_string_equal(why, "blank_line");
    /* a single newline, or a trailing one still open, is not a blank line yet */
    assert_int_equal(ctxd_fim_cut("a;\n  b;\n  ", 10, NULL, 0, &why), 10);
    assert_null(why);
    /* a stop before the blank line wins */
    assert_int_equal(ctxd_fim_cut("a}\n\n", 4, stops, 2, &why), 1);
    assert_string_equal(why, "stop_string");
}

/* Degenerate loops: inside a line the line goes, repeated lines stay once, short or legit text stays. */
static void loops_are_cut(void **state)
{
    (void)state;
    char t[1024];
    /* "0, " 40 times inside the second line: back to that line's start */
    int n = snprintf(t, sizeof t, "x = 1;\n\tf(a, b");
    for (int i = 0; i < 40; i++)
        n += snprintf(t + n, sizeof t - (size_t)n, ", 0");
    assert_int_equal(ctxd_fim_loop_cut(t, (size_t)n), 7);
    /* the same line 12 times after a first one: the first and one copy are kept */
    n = snprintf(t, sizeof t, "int a;\n");
    for (int i = 0; i < 12; i++)
        n += snprintf(t + n, sizeof t - (size_t)n, "    x++;\n");
    assert_int_equal(ctxd_fim_loop_cut(t, (size_t)n), 7 + 9);
    /* the loop begins mid-line (the previous line ends like the unit): still one whole copy kept */
    n = snprintf(t, sizeof t, "{\n");
    for (int i = 0; i < 20; i++)
        n += snprintf(t + n, sizeof t - (size_t)n, "  a();\n");
    size_t keep = ctxd_fim_loop_cut(t, (size_t)n);
    assert_true(keep >= 2 && keep <= 2 + 7 && t[keep - 1] == '\n');
    /* a run under 96 bytes is not a loop (a short zero initialiser is code) */
    n = snprintf(t, sizeof t, "int z[8] = {0, 0, 0, 0, 0, 0, 0, 0};\n");
    assert_int_equal(ctxd_fim_loop_cut(t, (size_t)n), (size_t)n);
    /* varied text is left alone; degenerate sizes too */
    const char *code = "static int add(int a, int b)\n{\n    return a + b;\n}\n\nint main(void) { return add(1, 2); }\n";
    assert_int_equal(ctxd_fim_loop_cut(code, strlen(code)), strlen(code));
    assert_int_equal(ctxd_fim_loop_cut("", 0), 0);
    memset(t, 'a', 200);
    assert_int_equal(ctxd_fim_loop_cut(t, 200), 0); /* one character forever: nothing kept */
}

static void trim_at_line_boundaries(void **state)
{
    (void)state;
    const char *p = "one\ntwo\nthree\nfour"; /* lines start at 0, 4, 8, 14 */
    size_t len = strlen(p), start, tok, end;
    assert_int_equal(ctxd_fim_trim_prefix(p, len, 100, count_bytes, NULL, &start, &tok), 0);
    assert_int_equal(start, 0);
    assert_int_equal(tok, len);
    assert_int_equal(ctxd_fim_trim_prefix(p, len, 10, count_bytes, NULL, &start, &tok), 0);
    assert_int_equal(start, 8); /* "three\nfour": 10 bytes */
    assert_int_equal(tok, 10);
    assert_int_equal(ctxd_fim_trim_prefix(p, len, 9, count_bytes, NULL, &start, &tok), 0);
    assert_int_equal(start, 14); /* "four" */
    /* the cursor's line alone is too long: its end is kept, cut at a character boundary */
    const char *u = "x\nab\xc3\xa9\xc3\xa9"; /* "abéé": é is 2 bytes */
    assert_int_equal(ctxd_fim_trim_prefix(u, strlen(u), 3, count_bytes, NULL, &start, &tok), 0);
    assert_int_equal(start, 6); /* never inside é: the last é (2 bytes) */
    assert_int_equal(tok, 2);
    /* prefix ending in a newline: the empty line start is not taken while a line fits */
    const char *nl = "aaaa\nbb\n";
    assert_int_equal(ctxd_fim_trim_prefix(nl, 8, 3, count_bytes, NULL, &start, &tok), 0);
    assert_int_equal(start, 5);
    /* suffix: the head up to a line end */
    const char *s = ";\n}\nint next(void)\n";
    size_t slen = strlen(s);
    assert_int_equal(ctxd_fim_trim_suffix(s, slen, 5, count_bytes, NULL, &end, &tok), 0);
    assert_int_equal(end, 4); /* ";\n}\n" */
    assert_int_equal(tok, 4);
    assert_int_equal(ctxd_fim_trim_suffix(s, slen, 3, count_bytes, NULL, &end, &tok), 0);
    assert_int_equal(end, 2);
    const char *ls = "\xc3\xa9\xc3\xa9xyz\nq";
    assert_int_equal(ctxd_fim_trim_suffix(ls, strlen(ls), 3, count_bytes, NULL, &end, &tok), 0);
    assert_int_equal(end, 2); /* "é", not half of the second */
    assert_int_equal(ctxd_fim_trim_suffix(ls, strlen(ls), 1, count_bytes, NULL, &end, &tok), 0);
    assert_int_equal(end, 0);
    assert_int_equal(tok, 0);
}

/* ---- the daemon ---- */

static int group_setup(void **state)
{
    (void)state;
    if (!dh_have_tokenizer())
        return 0;
    snprintf(dir, sizeof dir, "/tmp/ctxd-fim-XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    snprintf(sock, sizeof sock, "%s/ctxd.sock", dir);
    snprintf(logpath, sizeof logpath, "%s/ctxd.log", dir);
    char *const argv[] = {(char *)ctxd_bin, "--socket", sock, "--threads", "2", "--no-cache", NULL};
    pid = dh_start(sock, logpath, argv);
    return pid > 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    return dh_teardown(pid, dir);
}

static cJSON *call(const char *method, cJSON *params, int *rc, char *err)
{
    struct ctxd_client *c;
    struct ctx_err e = {0};
    assert_int_equal(ctxd_client_connect(sock, &c, &e), 0);
    cJSON *r = NULL;
    *rc = ctxd_client_call(c, method, params, NULL, NULL, 120000, &r, &e);
    if (err)
        snprintf(err, 512, "%s", e.msg);
    if (*rc)
        *rc = ctxd_client_rpc_code(c) ? ctxd_client_rpc_code(c) : *rc;
    ctxd_client_close(c);
    return r;
}

static cJSON *fim_params(const char *prefix, const char *suffix, int max_tokens)
{
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "file", "math.c");
    cJSON_AddStringToObject(p, "prefix", prefix);
    cJSON_AddStringToObject(p, "suffix", suffix);
    cJSON_AddNumberToObject(p, "max_tokens", max_tokens);
    return p;
}

static const char *str(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItem(o, k);
    assert_true(cJSON_IsString(v));
    return v->valuestring;
}

static int num(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItem(o, k);
    assert_true(cJSON_IsNumber(v));
    return v->valueint;
}

static void result_shape_and_determinism(void **state)
{
    (void)state;
    if (!pid)
        skip();
    int rc;
    cJSON *r = call("fim.complete", fim_params("int add(int a, int b)\n{\n    return ", ";\n}\n", 8), &rc, NULL);
    assert_int_equal(rc, 0);
    int tokens = num(r, "tokens");
    assert_true(tokens >= 1 && tokens <= 8);
    const char *finish = str(r, "finish_reason");
    assert_true(strcmp(finish, "length") == 0 || strcmp(finish, "stop") == 0);
    if (strcmp(finish, "length") == 0) {
        assert_int_equal(tokens, 8);
        assert_true(cJSON_IsNull(cJSON_GetObjectItem(r, "stopped_by")));
    }
    /* BOS, fim begin, hole and end around the two pieces, nothing trimmed */
    assert_int_equal(num(r, "prompt_tokens"), num(r, "prefix_tokens") + num(r, "suffix_tokens") + 4);
    assert_true(num(r, "prefix_tokens") > 5 && num(r, "suffix_tokens") >= 2);
    assert_int_equal(num(r, "prefix_start"), 0);
    assert_int_equal(num(r, "suffix_end"), 4); /* ";\n}\n" whole */
    assert_false(cJSON_IsTrue(cJSON_GetObjectItem(r, "noise")));
    { /* as JSON: a newline in the text would end the TAP comment line */
        char *q = cJSON_PrintUnformatted(cJSON_GetObjectItem(r, "text"));
        printf("# fim text: %s\n", q ? q : "?");
        free(q);
    }
    /* greedy decoding on a fresh state: the same request gives the same text */
    cJSON *r2 = call("fim.complete", fim_params("int add(int a, int b)\n{\n    return ", ";\n}\n", 8), &rc, NULL);
    assert_int_equal(rc, 0);
    assert_string_equal(str(r, "text"), str(r2, "text"));
    assert_int_equal(num(r2, "tokens"), tokens);
    cJSON_Delete(r2);
    cJSON_Delete(r);
    /* sampling with a seed repeats exactly */
    char t1[4096] = "";
    for (int i = 0; i < 2; i++) {
        cJSON *p = fim_params("def twice(x):\n    ", "\n", 12);
        cJSON_AddNumberToObject(p, "temperature", 1.0);
        cJSON_AddNumberToObject(p, "seed", 7);
        r = call("fim.complete", p, &rc, NULL);
        assert_int_equal(rc, 0);
        if (i == 0)
            snprintf(t1, sizeof t1, "%s", str(r, "text"));
        else
            assert_string_equal(str(r, "text"), t1);
        cJSON_Delete(r);
    }
}

/* Greedy text T without stops; then a stop string taken from inside T cuts it exactly there. */
static void stop_strings_cut_exactly(void **state)
{
    (void)state;
    if (!pid)
        skip();
    int rc;
    cJSON *r = call("fim.complete", fim_params("static int counter = ", ";\n", 24), &rc, NULL);
    assert_int_equal(rc, 0);
    const char *t = str(r, "text");
    size_t n = strlen(t);
    if (n < 4) {
        cJSON_Delete(r);
        skip(); /* the noise model ended at once: nothing to cut */
    }
    /* a stop of one character boundary to the next, from the middle of the text */
    size_t a = n / 2;
    while (a > 0 && ((unsigned char)t[a] & 0xC0) == 0x80)
        a--;
    size_t b = a + 1;
    while (b < n && ((unsigned char)t[b] & 0xC0) == 0x80)
        b++;
    char stop[8] = {0};
    memcpy(stop, t + a, b - a);
    size_t first = (size_t)(strstr(t, stop) - t);
    cJSON *p = fim_params("static int counter = ", ";\n", 24);
    cJSON *sa = cJSON_AddArrayToObject(p, "stop");
    cJSON_AddItemToArray(sa, cJSON_CreateString(stop));
    cJSON *r2 = call("fim.complete", p, &rc, NULL);
    assert_int_equal(rc, 0);
    assert_string_equal(str(r2, "finish_reason"), "stop");
    assert_string_equal(str(r2, "stopped_by"), "stop_string");
    assert_int_equal(strlen(str(r2, "text")), first);
    assert_memory_equal(str(r2, "text"), t, first);
    assert_true(num(r2, "tokens") <= num(r, "tokens"));
    cJSON_Delete(r2);
    cJSON_Delete(r);
}

static void budget_trims_at_line_boundaries(void **state)
{
    (void)state;
    if (!pid)
        skip();
    size_t cap = 1 << 16, pl = 0, sl = 0;
    char *prefix = malloc(cap), *suffix = malloc(cap);
    for (int i = 0; i < 300; i++)
        pl += (size_t)snprintf(prefix + pl, cap - pl, "int value_%d = %d;\n", i, i * 7);
    pl += (size_t)snprintf(prefix + pl, cap - pl, "int total = ");
    sl += (size_t)snprintf(suffix + sl, cap - sl, ";\n");
    for (int i = 0; i < 200; i++)
        sl += (size_t)snprintf(suffix + sl, cap - sl, "int after_%d = %d;\n", i, i);
    cJSON *p = fim_params(prefix, suffix, 4);
    cJSON_AddNumberToObject(p, "budget", 128);
    int rc;
    cJSON *r = call("fim.complete", p, &rc, NULL);
    assert_int_equal(rc, 0);
    int ps = num(r, "prefix_start"), se = num(r, "suffix_end");
    assert_true(ps > 0 && (size_t)ps < pl);
    assert_int_equal(prefix[ps - 1], '\n');        /* cut at a line start */
    assert_true(se > 2 && (size_t)se < sl);
    assert_int_equal(suffix[se - 1], '\n');        /* cut at a line end */
    assert_true(num(r, "suffix_tokens") <= (128 - 4) / 4);
    assert_true(num(r, "prompt_tokens") <= 128);
    /* one more line would not have fitted: the kept prefix is as long as the budget allows */
    assert_true(num(r, "prompt_tokens") > 128 - 20);
    assert_int_equal(num(r, "prompt_tokens"), num(r, "prefix_tokens") + num(r, "suffix_tokens") + 4);
    cJSON_Delete(r);
    free(prefix);
    free(suffix);
}

static void bad_params_name_the_field(void **state)
{
    (void)state;
    if (!pid)
        skip();
    struct {
        const char *json, *field;
    } cases[] = {
        {"{\"file\":\"a.c\"}", "prefix"},
        {"{\"prefix\":\"x\"}", "file"},
        {"{\"file\":\"a.c\",\"prefix\":7}", "prefix"},
        {"{\"file\":\"a.c\",\"prefix\":\"x\",\"max_tokens\":0}", "max_tokens"},
        {"{\"file\":\"a.c\",\"prefix\":\"x\",\"max_tokens\":2.5}", "max_tokens"},
        {"{\"file\":\"a.c\",\"prefix\":\"x\",\"budget\":3}", "budget"},
        {"{\"file\":\"a.c\",\"prefix\":\"x\",\"stop\":\"}\"}", "stop"},
        {"{\"file\":\"a.c\",\"prefix\":\"x\",\"stop\":[\"\"]}", "stop"},
        {"{\"file\":\"a.c\",\"prefix\":\"x\",\"temperature\":-1}", "temperature"},
        {"{\"file\":\"a.c\",\"prefix\":\"x\",\"path\":1}", "path"},
        {"{\"file\":\"a.c\",\"prefix\":\"x\",\"prefx\":\"y\"}", "prefx"},
        {"[1]", "params"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char err[512] = "";
        int rc;
        cJSON *r = call("fim.complete", cJSON_Parse(cases[i].json), &rc, err);
        assert_null(r);
        assert_int_equal(rc, -32602);
        if (!strstr(err, cases[i].field))
            fail_msg("%s: \"%s\" does not name %s", cases[i].json, err, cases[i].field);
    }
    /* the daemon is fine afterwards */
    int rc;
    cJSON *r = call("fim.complete", fim_params("x = ", "", 2), &rc, NULL);
    assert_int_equal(rc, 0);
    cJSON_Delete(r);
}

/* ---- a raw connection for pipelined requests ---- */

static int raw_connect(void)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", sock);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

static void raw_send(int fd, const char *s)
{
    size_t n = strlen(s);
    assert_int_equal(write(fd, s, n), (ssize_t)n);
}

/* Read replies until one with each of the ids 1..n has come; replies[i] gets id i+1. */
static void raw_replies(int fd, cJSON **replies, int n)
{
    static char buf[1 << 20];
    size_t len = 0;
    int got = 0;
    while (got < n) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        assert_int_equal(poll(&p, 1, 120000), 1);
        ssize_t r = read(fd, buf + len, sizeof buf - len - 1);
        assert_true(r > 0);
        len += (size_t)r;
        char *nl;
        while ((nl = memchr(buf, '\n', len))) {
            *nl = 0;
            cJSON *m = cJSON_Parse(buf);
            const cJSON *id = cJSON_GetObjectItem(m, "id");
            if (cJSON_IsNumber(id) && id->valueint >= 1 && id->valueint <= n && !replies[id->valueint - 1]) {
                replies[id->valueint - 1] = m;
                got++;
            } else {
                cJSON_Delete(m);
            }
            len -= (size_t)(nl + 1 - buf);
            memmove(buf, nl + 1, len);
        }
    }
}

static int error_code(const cJSON *reply)
{
    const cJSON *e = cJSON_GetObjectItem(reply, "error");
    return e ? cJSON_GetObjectItem(e, "code")->valueint : 0;
}

#define LONG_FIM "{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"fim.complete\",\"params\":{\"file\":\"a.c\"," \
                 "\"prefix\":\"int main(void)\\n{\\n\",\"max_tokens\":1024,\"loop_stop\":false}}\n"

static void cancel_and_supersede(void **state)
{
    (void)state;
    if (!pid)
        skip();
    /* fim.cancel right behind a long completion on the same connection */
    int fd = raw_connect();
    char line[512];
    snprintf(line, sizeof line, LONG_FIM, 1);
    raw_send(fd, line);
    raw_send(fd, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"fim.cancel\"}\n");
    cJSON *rep[3] = {0};
    raw_replies(fd, rep, 2);
    assert_int_equal(error_code(rep[0]), -32003);
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(rep[1], "result"), "cancelled")->valueint, 1);
    cJSON_Delete(rep[0]);
    cJSON_Delete(rep[1]);
    /* nothing left to cancel */
    rep[0] = rep[1] = NULL;
    raw_send(fd, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"fim.cancel\",\"params\":{}}\n");
    raw_replies(fd, rep, 1);
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(rep[0], "result"), "cancelled")->valueint, 0);
    cJSON_Delete(rep[0]);
    /* a newer completion supersedes the older one */
    rep[0] = NULL;
    snprintf(line, sizeof line, LONG_FIM, 1);
    raw_send(fd, line);
    raw_send(fd, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"fim.complete\",\"params\":{\"file\":\"a.c\","
                 "\"prefix\":\"x = \",\"max_tokens\":3}}\n");
    raw_replies(fd, rep, 2);
    assert_int_equal(error_code(rep[0]), -32003);
    const cJSON *data = cJSON_GetObjectItem(cJSON_GetObjectItem(rep[0], "error"), "data");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(data, "superseded")));
    const cJSON *res = cJSON_GetObjectItem(rep[1], "result");
    assert_non_null(res);
    assert_true(num(res, "tokens") >= 1 && num(res, "tokens") <= 3);
    cJSON_Delete(rep[0]);
    cJSON_Delete(rep[1]);
    close(fd);
}

static void a_client_that_leaves_mid_request(void **state)
{
    (void)state;
    if (!pid)
        skip();
    for (int i = 0; i < 3; i++) {
        int fd = raw_connect();
        char line[512];
        snprintf(line, sizeof line, LONG_FIM, 1);
        raw_send(fd, line);
        usleep(20000 * (useconds_t)i); /* queued, just started, decoding */
        close(fd);
    }
    /* the engine is free again and answers the next client */
    int rc;
    cJSON *r = call("fim.complete", fim_params("y = ", ";\n", 3), &rc, NULL);
    assert_int_equal(rc, 0);
    assert_true(num(r, "tokens") >= 1);
    cJSON_Delete(r);
    r = call("daemon.status", NULL, &rc, NULL);
    assert_int_equal(rc, 0);
    assert_int_equal(num(r, "connections"), 1);
    cJSON_Delete(r);
}

/* `ctx complete FILE LINE:COL` splits the file at the cursor and makes the same request: its
 * result equals fim.complete's on the same prefix and suffix; a bad cursor is a usage error. */
static int run_ctx(const char *args, char *out, size_t cap)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s --socket %s %s 2>/dev/null", ctx_bin, sock, args);
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    size_t n = fread(out, 1, cap - 1, f);
    out[n] = 0;
    int st = pclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void ctx_complete_is_the_same_request(void **state)
{
    (void)state;
    if (!pid || !ctx_bin)
        skip();
    char file[128], args[512], out[8192];
    snprintf(file, sizeof file, "%s/add.c", dir);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fputs("int add(int a, int b)\n{\n    return ;\n}\n", f);
    fclose(f);
    snprintf(args, sizeof args, "complete %s 3:12 --max-tokens 8 --json", file);
    assert_int_equal(run_ctx(args, out, sizeof out), 0);
    cJSON *viacli = cJSON_Parse(out);
    assert_non_null(viacli);
    int rc;
    cJSON *r = call("fim.complete", fim_params("int add(int a, int b)\n{\n    return ", ";\n}\n", 8), &rc, NULL);
    assert_int_equal(rc, 0);
    assert_string_equal(str(viacli, "text"), str(r, "text"));
    assert_int_equal(num(viacli, "prefix_tokens"), num(r, "prefix_tokens"));
    assert_int_equal(num(viacli, "suffix_tokens"), num(r, "suffix_tokens"));
    cJSON_Delete(r);
    cJSON_Delete(viacli);
    snprintf(args, sizeof args, "complete %s 9:1", file);
    assert_int_equal(run_ctx(args, out, sizeof out), 2);
    snprintf(args, sizeof args, "complete %s 3", file);
    assert_int_equal(run_ctx(args, out, sizeof out), 2);
    snprintf(args, sizeof args, "complete %s/missing.c 1:1", dir);
    assert_int_equal(run_ctx(args, out, sizeof out), 1);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return 2;
    ctxd_bin = argv[1];
    ctx_bin = argc > 2 ? argv[2] : NULL;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(cut_at_stops_and_blank_lines),
        cmocka_unit_test(loops_are_cut),
        cmocka_unit_test(trim_at_line_boundaries),
        cmocka_unit_test(result_shape_and_determinism),
        cmocka_unit_test(stop_strings_cut_exactly),
        cmocka_unit_test(budget_trims_at_line_boundaries),
        cmocka_unit_test(bad_params_name_the_field),
        cmocka_unit_test(cancel_and_supersede),
        cmocka_unit_test(a_client_that_leaves_mid_request),
        cmocka_unit_test(ctx_complete_is_the_same_request),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
