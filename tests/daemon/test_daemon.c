/* Integration: a real ctxd on a temporary socket, driven over raw sockets and through the real ctx.
 * argv[1] = path to ctxd, argv[2] = path to ctx. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ctx_config.h"
#include "client.h"
#include "json.h"

static const char *ctxd_bin, *ctx_bin;

struct env {
    char dir[64];
    char sock[100];
    char log[128];
    pid_t pid;
};

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int raw_connect(const char *path)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    snprintf(sun.sun_path, sizeof sun.sun_path, "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&sun, sizeof sun) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Start ctxd in the foreground on e->sock with extra args; wait until it accepts. */
static pid_t start_ctxd(struct env *e, const char *extra1, const char *extra2)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(e->log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd >= 0) {
            dup2(fd, 2);
            dup2(fd, 1);
        }
        execl(ctxd_bin, ctxd_bin, "--socket", e->sock, "--log-level", "debug", extra1, extra2, (char *)NULL);
        _exit(127);
    }
    long long deadline = now_ms() + 10000;
    while (now_ms() < deadline) {
        int fd = raw_connect(e->sock);
        if (fd >= 0) {
            close(fd);
            return pid;
        }
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid)
            fail_msg("ctxd exited early with status %d", st);
        usleep(10000);
    }
    fail_msg("ctxd did not listen on %s within 10 s", e->sock);
    return -1;
}

static int wait_exit(pid_t pid, int ms)
{
    long long deadline = now_ms() + ms;
    int st;
    while (now_ms() < deadline) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        usleep(10000);
    }
    return -1;
}

static int setup(void **state)
{
    struct env *e = calloc(1, sizeof *e);
    snprintf(e->dir, sizeof e->dir, "/tmp/ctxd-test-XXXXXX");
    if (!mkdtemp(e->dir))
        return -1;
    snprintf(e->sock, sizeof e->sock, "%s/run/ctxd.sock", e->dir);
    snprintf(e->log, sizeof e->log, "%s/ctxd.log", e->dir);
    *state = e;
    return 0;
}

static int teardown(void **state)
{
    struct env *e = *state;
    if (e->pid > 0) {
        kill(e->pid, SIGKILL);
        waitpid(e->pid, NULL, 0);
    }
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", e->dir);
    if (system(cmd) != 0)
        return -1;
    free(e);
    return 0;
}

static const char *read_log(struct env *e)
{
    static char buf[1 << 16];
    FILE *f = fopen(e->log, "r");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f)
        fclose(f);
    buf[n] = 0;
    return buf;
}

static void send_str(int fd, const char *s)
{
    size_t n = strlen(s);
    assert_int_equal(write(fd, s, n), (ssize_t)n);
}

/* Read one line (up to 1 MiB) within 5 s; returns parsed JSON. */
static cJSON *read_msg(int fd)
{
    static char buf[1 << 20];
    size_t n = 0;
    long long deadline = now_ms() + 5000;
    while (n < sizeof buf - 1) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int left = (int)(deadline - now_ms());
        if (left <= 0 || poll(&p, 1, left) <= 0)
            fail_msg("no reply within 5 s");
        ssize_t r = read(fd, buf + n, 1); /* byte by byte: never read past the line */
        if (r <= 0)
            fail_msg("connection closed while waiting for a reply");
        if (buf[n] == '\n')
            break;
        n++;
    }
    struct ctx_err err = {0};
    cJSON *v = ctx_json_parse(buf, n, "reply", &err);
    if (!v)
        fail_msg("unparsable reply: %s", err.msg);
    return v;
}

static int err_code(const cJSON *reply)
{
    const cJSON *err = cJSON_GetObjectItem(reply, "error");
    assert_non_null(err);
    return cJSON_GetObjectItem(err, "code")->valueint;
}

static void expect_ping_ok(int fd, int id)
{
    char req[128];
    snprintf(req, sizeof req, "{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"daemon.ping\"}\n", id);
    send_str(fd, req);
    cJSON *r = read_msg(fd);
    assert_int_equal(cJSON_GetObjectItem(r, "id")->valueint, id);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(cJSON_GetObjectItem(r, "result"), "pong")));
    cJSON_Delete(r);
}

static void ping_and_status(void **state)
{
    struct env *e = *state;
    e->pid = start_ctxd(e, NULL, NULL);
    struct stat st;
    assert_int_equal(stat(e->sock, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    char dir[128];
    snprintf(dir, sizeof dir, "%s/run", e->dir);
    assert_int_equal(stat(dir, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);

    struct ctxd_client *c;
    struct ctx_err err = {0};
    assert_int_equal(ctxd_client_connect(e->sock, &c, &err), 0);
    cJSON *params = cJSON_CreateObject();
    cJSON_AddStringToObject(params, "echo", "hello");
    cJSON *r;
    assert_int_equal(ctxd_client_call(c, "daemon.ping", params, NULL, NULL, 5000, &r, &err), 0);
    assert_string_equal(cJSON_GetObjectItem(r, "echo")->valuestring, "hello");
    assert_int_equal(cJSON_GetObjectItem(r, "protocol")->valueint, 1);
    cJSON_Delete(r);
    assert_int_equal(ctxd_client_call(c, "daemon.status", NULL, NULL, NULL, 5000, &r, &err), 0);
    assert_int_equal(cJSON_GetObjectItem(r, "pid")->valueint, e->pid);
    assert_string_equal(cJSON_GetObjectItem(r, "socket")->valuestring, e->sock);
    assert_int_equal(cJSON_GetObjectItem(r, "connections")->valueint, 1);
    assert_int_equal(cJSON_GetObjectItem(r, "requests")->valueint, 1);
    cJSON_Delete(r);
    /* errors come back as codes the caller can act on */
    assert_int_equal(ctxd_client_call(c, "no.such", NULL, NULL, NULL, 5000, &r, &err), CTX_ENOTFOUND);
    assert_int_equal(ctxd_client_rpc_code(c), -32601);
    assert_string_equal(err.msg, "method not found: no.such");
    ctxd_client_close(c);
}

static void bad_input_keeps_connection(void **state)
{
    struct env *e = *state;
    e->pid = start_ctxd(e, NULL, NULL);
    int fd = raw_connect(e->sock);
    assert_true(fd >= 0);
    cJSON *r;

    send_str(fd, "{not json\n");
    r = read_msg(fd);
    assert_int_equal(err_code(r), -32700);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(r, "id")));
    cJSON_Delete(r);
    expect_ping_ok(fd, 1);

    send_str(fd, "{\"jsonrpc\":\"2.0\",\"id\":\"x\",\"method\":\"nope\"}\n");
    r = read_msg(fd);
    assert_int_equal(err_code(r), -32601);
    assert_string_equal(cJSON_GetObjectItem(r, "id")->valuestring, "x");
    cJSON_Delete(r);

    send_str(fd, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"daemon.ping\",\"params\":{\"bogus\":1}}\n");
    r = read_msg(fd);
    assert_int_equal(err_code(r), -32602);
    assert_non_null(strstr(cJSON_GetObjectItem(cJSON_GetObjectItem(r, "error"), "message")->valuestring, "bogus"));
    cJSON_Delete(r);

    send_str(fd, "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"daemon.shutdown\",\"params\":{\"reason\":5}}\n");
    r = read_msg(fd);
    assert_int_equal(err_code(r), -32602);
    cJSON_Delete(r);

    send_str(fd, "{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"daemon.ping\",\"params\":7}\n");
    r = read_msg(fd);
    assert_int_equal(err_code(r), -32600);
    assert_int_equal(cJSON_GetObjectItem(r, "id")->valueint, 4);
    cJSON_Delete(r);

    send_str(fd, "{\"id\":5,\"method\":\"daemon.ping\"}\n");
    r = read_msg(fd);
    assert_int_equal(err_code(r), -32600);
    cJSON_Delete(r);

    send_str(fd, "\"just a string\"\n");
    r = read_msg(fd);
    assert_int_equal(err_code(r), -32600);
    cJSON_Delete(r);

    /* a notification gets no reply: the next line is the ping's */
    send_str(fd, "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\"}\n");
    expect_ping_ok(fd, 6);

    /* batch: replies for the requests only, in order */
    send_str(fd, "[{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"daemon.ping\"},"
                 "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\"},"
                 "{\"jsonrpc\":\"2.0\",\"id\":8,\"method\":\"nope\"}, 42]\n");
    r = read_msg(fd);
    assert_true(cJSON_IsArray(r));
    assert_int_equal(cJSON_GetArraySize(r), 3);
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(r, 0), "id")->valueint, 7);
    assert_int_equal(err_code(cJSON_GetArrayItem(r, 1)), -32601);
    assert_int_equal(err_code(cJSON_GetArrayItem(r, 2)), -32600);
    cJSON_Delete(r);

    send_str(fd, "[]\n");
    r = read_msg(fd);
    assert_int_equal(err_code(r), -32600);
    cJSON_Delete(r);

    /* blank lines are ignored; CRLF is accepted */
    send_str(fd, "\n\r\n");
    send_str(fd, "{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"daemon.ping\"}\r\n");
    r = read_msg(fd);
    assert_int_equal(cJSON_GetObjectItem(r, "id")->valueint, 9);
    cJSON_Delete(r);
    expect_ping_ok(fd, 10);
    close(fd);
}

static void overlong_line(void **state)
{
    struct env *e = *state;
    e->pid = start_ctxd(e, "--max-line", "4096");
    int fd = raw_connect(e->sock);
    assert_true(fd >= 0);
    /* 20000 bytes in several writes, then the newline */
    char chunk[5000];
    memset(chunk, 'a', sizeof chunk);
    for (int i = 0; i < 4; i++)
        assert_int_equal(write(fd, chunk, sizeof chunk), (ssize_t)sizeof chunk);
    cJSON *r = read_msg(fd);
    assert_int_equal(err_code(r), -32001);
    assert_non_null(strstr(cJSON_GetObjectItem(cJSON_GetObjectItem(r, "error"), "message")->valuestring, "4096"));
    cJSON_Delete(r);
    send_str(fd, "\n");
    expect_ping_ok(fd, 1);
    close(fd);
}

static void two_clients_and_vanishing_ones(void **state)
{
    struct env *e = *state;
    e->pid = start_ctxd(e, NULL, NULL);
    int a = raw_connect(e->sock), b = raw_connect(e->sock);
    assert_true(a >= 0 && b >= 0);
    send_str(a, "{\"jsonrpc\":\"2.0\",\"id\":1,");   /* half a request */
    expect_ping_ok(b, 2);
    send_str(a, "\"method\":\"daemon.ping\"}\n");
    cJSON *r = read_msg(a);
    assert_int_equal(cJSON_GetObjectItem(r, "id")->valueint, 1);
    cJSON_Delete(r);

    /* clients that leave mid-request or without reading their reply */
    for (int i = 0; i < 50; i++) {
        int v = raw_connect(e->sock);
        assert_true(v >= 0);
        if (i % 2)
            send_str(v, "{\"jsonrpc\":\"2.0\",\"id\":1,\"meth");
        else
            send_str(v, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"daemon.status\"}\n");
        close(v);
    }
    expect_ping_ok(a, 3);
    expect_ping_ok(b, 4);
    /* the departed are forgotten */
    long long deadline = now_ms() + 5000;
    int conns = -1;
    while (now_ms() < deadline) {
        send_str(b, "{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"daemon.status\"}\n");
        r = read_msg(b);
        conns = cJSON_GetObjectItem(cJSON_GetObjectItem(r, "result"), "connections")->valueint;
        cJSON_Delete(r);
        if (conns == 2)
            break;
        usleep(20000);
    }
    assert_int_equal(conns, 2);
    close(a);
    close(b);
    assert_int_equal(waitpid(e->pid, NULL, WNOHANG), 0); /* still alive */
}

struct hammer {
    const char *sock;
    int ok;
};

static void *hammer_thread(void *arg)
{
    struct hammer *h = arg;
    struct ctxd_client *c;
    struct ctx_err err = {0};
    if (ctxd_client_connect(h->sock, &c, &err) != 0)
        return NULL;
    for (int i = 0; i < 50; i++) {
        cJSON *params = cJSON_CreateObject();
        cJSON_AddNumberToObject(params, "echo", i);
        cJSON *r;
        if (ctxd_client_call(c, "daemon.ping", params, NULL, NULL, 10000, &r, &err) != 0)
            break;
        if (cJSON_GetObjectItem(r, "echo")->valueint == i)
            h->ok++;
        cJSON_Delete(r);
    }
    ctxd_client_close(c);
    return NULL;
}

static void sixty_four_clients_at_once(void **state)
{
    struct env *e = *state;
    e->pid = start_ctxd(e, NULL, NULL);
    pthread_t th[64];
    struct hammer h[64];
    for (int i = 0; i < 64; i++) {
        h[i] = (struct hammer){.sock = e->sock};
        assert_int_equal(pthread_create(&th[i], NULL, hammer_thread, &h[i]), 0);
    }
    int total = 0;
    for (int i = 0; i < 64; i++) {
        pthread_join(th[i], NULL);
        total += h[i].ok;
    }
    assert_int_equal(total, 64 * 50);
}

static void slow_reader_is_dropped_alone(void **state)
{
    struct env *e = *state;
    e->pid = start_ctxd(e, "--max-queue", "1048576");
    int slow = raw_connect(e->sock), good = raw_connect(e->sock);
    assert_true(slow >= 0 && good >= 0);
    /* 100 KB echoes, never read: far more than 1 MiB of replies pile up */
    size_t n = 100000;
    char *req = malloc(n + 100);
    int len = sprintf(req, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"daemon.ping\",\"params\":{\"echo\":\"");
    memset(req + len, 'x', n);
    len += (int)n;
    len += sprintf(req + len, "\"}}\n");
    int sent = 0;
    for (int i = 0; i < 200; i++) {
        struct pollfd p = {.fd = slow, .events = POLLOUT};
        if (poll(&p, 1, 2000) <= 0 || (p.revents & (POLLERR | POLLHUP)))
            break;
        if (write(slow, req, (size_t)len) != len)
            break;
        sent++;
    }
    free(req);
    assert_true(sent > 10);
    expect_ping_ok(good, 1);
    /* the slow client was disconnected: draining its socket ends in EOF */
    char buf[65536];
    long long deadline = now_ms() + 10000;
    ssize_t r = 1;
    while (r > 0 && now_ms() < deadline) {
        struct pollfd p = {.fd = slow, .events = POLLIN};
        if (poll(&p, 1, 1000) <= 0)
            continue;
        r = read(slow, buf, sizeof buf);
    }
    assert_true(r <= 0);
    expect_ping_ok(good, 2);
    close(slow);
    close(good);
    assert_non_null(strstr(read_log(e), "dropping the client"));
}

static void shutdown_request(void **state)
{
    struct env *e = *state;
    e->pid = start_ctxd(e, NULL, NULL);
    int other = raw_connect(e->sock);
    int fd = raw_connect(e->sock);
    send_str(fd, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"daemon.shutdown\"}\n");
    cJSON *r = read_msg(fd);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(cJSON_GetObjectItem(r, "result"), "ok")));
    cJSON_Delete(r);
    assert_int_equal(wait_exit(e->pid, 10000), 0);
    e->pid = 0;
    assert_int_equal(access(e->sock, F_OK), -1);
    close(fd);
    close(other);
}

static void sigterm_exits_cleanly(void **state)
{
    struct env *e = *state;
    e->pid = start_ctxd(e, NULL, NULL);
    kill(e->pid, SIGTERM);
    assert_int_equal(wait_exit(e->pid, 10000), 0);
    e->pid = 0;
    assert_int_equal(access(e->sock, F_OK), -1);
}

static void stale_socket_is_replaced(void **state)
{
    struct env *e = *state;
    char dir[128];
    snprintf(dir, sizeof dir, "%s/run", e->dir);
    mkdir(dir, 0700);
    /* a socket file whose server died (SIGKILL leaves exactly this) */
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    snprintf(sun.sun_path, sizeof sun.sun_path, "%s", e->sock);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sun, sizeof sun), 0);
    close(fd);
    assert_int_equal(raw_connect(e->sock), -1);
    e->pid = start_ctxd(e, NULL, NULL);
    fd = raw_connect(e->sock);
    expect_ping_ok(fd, 1);
    close(fd);
    /* and after a SIGKILL the next start recovers too */
    kill(e->pid, SIGKILL);
    waitpid(e->pid, NULL, 0);
    assert_int_equal(access(e->sock, F_OK), 0);
    e->pid = start_ctxd(e, NULL, NULL);
    fd = raw_connect(e->sock);
    expect_ping_ok(fd, 2);
    close(fd);
}

static int run_capture(const char *const argv[], char *out, size_t cap, char *errout, size_t ecap)
{
    int po[2], pe[2];
    assert_int_equal(pipe(po), 0);
    assert_int_equal(pipe(pe), 0);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(po[1], 1);
        dup2(pe[1], 2);
        close(po[0]);
        close(pe[0]);
        close(po[1]);
        close(pe[1]);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(po[1]);
    close(pe[1]);
    size_t n = 0, m = 0;
    struct pollfd p[2] = {{.fd = po[0], .events = POLLIN}, {.fd = pe[0], .events = POLLIN}};
    int open_fds = 2;
    while (open_fds) {
        if (poll(p, 2, 15000) <= 0)
            break;
        for (int i = 0; i < 2; i++) {
            if (p[i].fd < 0 || !(p[i].revents & (POLLIN | POLLHUP)))
                continue;
            char *dst = i ? errout : out;
            size_t *len = i ? &m : &n;
            size_t c = i ? ecap : cap;
            ssize_t r = read(p[i].fd, dst + *len, c - 1 - *len);
            if (r <= 0) {
                close(p[i].fd);
                p[i].fd = -1;
                open_fds--;
            } else {
                *len += (size_t)r;
            }
        }
    }
    out[n] = 0;
    errout[m] = 0;
    int st;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* --backend cuda: bad --gpus / --max-ctx / --prefill-gemm are usage errors naming the option; without the CUDA
 * backend built, a clear error at start (nothing listens). */
static void cuda_backend_options(void **state)
{
    struct env *e = *state;
    char out[4096], err[4096];
    const char *bad_gpus[] = {ctxd_bin, "--socket", e->sock, "--backend", "cuda", "--gpus", "0,x", NULL};
    assert_int_equal(run_capture(bad_gpus, out, sizeof out, err, sizeof err), 2);
    assert_non_null(strstr(err, "--gpus wants a list of device numbers"));
    const char *bad_ctx[] = {ctxd_bin, "--socket", e->sock, "--backend", "cuda", "--max-ctx", "12", NULL};
    assert_int_equal(run_capture(bad_ctx, out, sizeof out, err, sizeof err), 2);
    assert_non_null(strstr(err, "--max-ctx wants a number of tokens >= 256"));
    const char *lonely[] = {ctxd_bin, "--socket", e->sock, "--gpus", "1", NULL};
    assert_int_equal(run_capture(lonely, out, sizeof out, err, sizeof err), 2);
    assert_non_null(strstr(err, "--gpus, --max-ctx and --prefill-gemm go with --backend cuda"));
    const char *lonely_pg[] = {ctxd_bin, "--socket", e->sock, "--prefill-gemm", "exact", NULL};
    assert_int_equal(run_capture(lonely_pg, out, sizeof out, err, sizeof err), 2);
    assert_non_null(strstr(err, "--prefill-gemm go with --backend cuda"));
    const char *bad_pg[] = {ctxd_bin, "--socket", e->sock, "--backend", "cuda", "--prefill-gemm", "fastest", NULL};
    assert_int_equal(run_capture(bad_pg, out, sizeof out, err, sizeof err), 2);
    assert_non_null(strstr(err, "--prefill-gemm is fast or exact, not \"fastest\""));
    const char *bad_be[] = {ctxd_bin, "--socket", e->sock, "--backend", "tpu", NULL};
    assert_int_equal(run_capture(bad_be, out, sizeof out, err, sizeof err), 2);
    assert_non_null(strstr(err, "--backend is local, cuda or openai"));
#if !HAVE_CUDA
    const char *nocuda[] = {ctxd_bin, "--socket", e->sock, "--backend", "cuda", NULL};
    assert_int_equal(run_capture(nocuda, out, sizeof out, err, sizeof err), 1);
    assert_non_null(strstr(err, "built without the CUDA backend"));
#endif
}

static void second_instance_refused(void **state)
{
    struct env *e = *state;
    e->pid = start_ctxd(e, NULL, NULL);
    char out[4096], err[4096];
    const char *argv[] = {ctxd_bin, "--socket", e->sock, NULL};
    assert_int_equal(run_capture(argv, out, sizeof out, err, sizeof err), 1);
    assert_non_null(strstr(err, "already serving"));
    char pid[32];
    snprintf(pid, sizeof pid, "pid %d", e->pid);
    assert_non_null(strstr(err, pid));
    int fd = raw_connect(e->sock);
    expect_ping_ok(fd, 1);
    close(fd);
    /* --daemon reports the same through the starting process */
    const char *argv2[] = {ctxd_bin, "--daemon", "--socket", e->sock, NULL};
    assert_int_equal(run_capture(argv2, out, sizeof out, err, sizeof err), 1);
    assert_non_null(strstr(err, "already serving"));
}

static void non_socket_file_is_not_clobbered(void **state)
{
    struct env *e = *state;
    char dir[128];
    snprintf(dir, sizeof dir, "%s/run", e->dir);
    mkdir(dir, 0700);
    FILE *f = fopen(e->sock, "w");
    fputs("precious", f);
    fclose(f);
    char out[4096], err[4096];
    const char *argv[] = {ctxd_bin, "--socket", e->sock, NULL};
    assert_int_equal(run_capture(argv, out, sizeof out, err, sizeof err), 1);
    assert_non_null(strstr(err, "is not a socket"));
    f = fopen(e->sock, "r");
    char buf[16] = {0};
    assert_non_null(fgets(buf, sizeof buf, f));
    fclose(f);
    assert_string_equal(buf, "precious");
}

static void ctx_autostarts_and_stops(void **state)
{
    struct env *e = *state;
    char out[8192], err[4096];
    const char *status[] = {ctx_bin, "--socket", e->sock, "--ctxd", ctxd_bin, "status", "--json", NULL};
    assert_int_equal(run_capture(status, out, sizeof out, err, sizeof err), 0);
    struct ctx_err pe = {0};
    cJSON *r = ctx_json_parse(out, strlen(out), "ctx status output", &pe);
    assert_non_null(r);
    int pid = cJSON_GetObjectItem(r, "pid")->valueint;
    assert_true(pid > 0);
    assert_string_equal(cJSON_GetObjectItem(r, "socket")->valuestring, e->sock);
    cJSON_Delete(r);
    assert_int_equal(kill(pid, 0), 0);
    /* the daemon's log went beside the socket */
    char log[256];
    snprintf(log, sizeof log, "%s/run/ctxd.log", e->dir);
    assert_int_equal(access(log, F_OK), 0);

    /* a second status reuses the same daemon */
    assert_int_equal(run_capture(status, out, sizeof out, err, sizeof err), 0);
    r = ctx_json_parse(out, strlen(out), "ctx status output", &pe);
    assert_int_equal(cJSON_GetObjectItem(r, "pid")->valueint, pid);
    cJSON_Delete(r);

    const char *human[] = {ctx_bin, "--socket", e->sock, "status", NULL};
    assert_int_equal(run_capture(human, out, sizeof out, err, sizeof err), 0);
    assert_non_null(strstr(out, "socket    "));

    const char *ping[] = {ctx_bin, "--json", "--socket", e->sock, "ping", NULL};
    assert_int_equal(run_capture(ping, out, sizeof out, err, sizeof err), 0);
    assert_non_null(strstr(out, "\"pong\":true"));

    const char *stop[] = {ctx_bin, "--socket", e->sock, "stop", "--json", NULL};
    assert_int_equal(run_capture(stop, out, sizeof out, err, sizeof err), 0);
    char expect[64];
    snprintf(expect, sizeof expect, "{\"stopped\":true,\"pid\":%d}", pid);
    assert_non_null(strstr(out, expect));
    assert_int_equal(access(e->sock, F_OK), -1);
    long long deadline = now_ms() + 5000;
    while (kill(pid, 0) == 0 && now_ms() < deadline)
        usleep(10000);
    assert_int_equal(kill(pid, 0), -1);
    /* stopping again is not an error */
    assert_int_equal(run_capture(stop, out, sizeof out, err, sizeof err), 0);
    assert_non_null(strstr(out, "\"running\":false"));

    /* usage errors exit 2 and say what is wrong */
    const char *bad[] = {ctx_bin, "--socket", e->sock, "status", "--bogus", NULL};
    assert_int_equal(run_capture(bad, out, sizeof out, err, sizeof err), 2);
    assert_non_null(strstr(err, "--bogus"));
    const char *unknown[] = {ctx_bin, "frobnicate", NULL};
    assert_int_equal(run_capture(unknown, out, sizeof out, err, sizeof err), 2);
    assert_non_null(strstr(err, "unknown command \"frobnicate\""));
}

static void ctx_reports_unstartable_daemon(void **state)
{
    struct env *e = *state;
    char out[4096], err[4096];
    const char *status[] = {ctx_bin, "--socket", e->sock, "--ctxd", "/nonexistent/ctxd", "status", NULL};
    assert_int_equal(run_capture(status, out, sizeof out, err, sizeof err), 1);
    assert_non_null(strstr(err, "/nonexistent/ctxd"));
}

/* $CTXD_FLAGS reaches an automatically started ctxd: a bad option there is reported by ctx. */
static void ctx_autostart_flags(void **state)
{
    struct env *e = *state;
    char out[4096], err[4096];
    const char *status[] = {ctx_bin, "--socket", e->sock, "--ctxd", ctxd_bin, "--json", "status", NULL};
    setenv("CTXD_FLAGS", " --no-cache\t--backend   bogus ", 1);
    int rc = run_capture(status, out, sizeof out, err, sizeof err);
    unsetenv("CTXD_FLAGS");
    assert_int_equal(rc, 1);
    assert_non_null(strstr(err, "--backend is local, cuda or openai, not \"bogus\""));
    setenv("CTXD_FLAGS", "--no-cache --budget 4096", 1);
    rc = run_capture(status, out, sizeof out, err, sizeof err);
    unsetenv("CTXD_FLAGS");
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "\"backend\":\"cpu\""));
    const char *stop[] = {ctx_bin, "--socket", e->sock, "stop", NULL};
    assert_int_equal(run_capture(stop, out, sizeof out, err, sizeof err), 0);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: test_daemon CTXD CTX\n");
        return 2;
    }
    ctxd_bin = argv[1];
    ctx_bin = argv[2];
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(ping_and_status, setup, teardown),
        cmocka_unit_test_setup_teardown(bad_input_keeps_connection, setup, teardown),
        cmocka_unit_test_setup_teardown(overlong_line, setup, teardown),
        cmocka_unit_test_setup_teardown(two_clients_and_vanishing_ones, setup, teardown),
        cmocka_unit_test_setup_teardown(sixty_four_clients_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(slow_reader_is_dropped_alone, setup, teardown),
        cmocka_unit_test_setup_teardown(shutdown_request, setup, teardown),
        cmocka_unit_test_setup_teardown(sigterm_exits_cleanly, setup, teardown),
        cmocka_unit_test_setup_teardown(stale_socket_is_replaced, setup, teardown),
        cmocka_unit_test_setup_teardown(second_instance_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(cuda_backend_options, setup, teardown),
        cmocka_unit_test_setup_teardown(non_socket_file_is_not_clobbered, setup, teardown),
        cmocka_unit_test_setup_teardown(ctx_autostarts_and_stops, setup, teardown),
        cmocka_unit_test_setup_teardown(ctx_reports_unstartable_daemon, setup, teardown),
        cmocka_unit_test_setup_teardown(ctx_autostart_flags, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
