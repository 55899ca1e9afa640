/* agent/openai.c against a real HTTP server on 127.0.0.1 (an ephemeral port) that runs in a
 * thread of this test: it records each request and streams canned responses — a DeepSeek-style
 * reasoning + tool-call stream cut at awkward places, a plain stream, a 401 with a JSON body, a
 * stall, a malformed data line, a slow stream for cancellation, and more. Also the request
 * builder and the stream assembler on their own. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "json.h"
#include "openai.h"

/* ============================================================================ the server == */

struct scenario {
    const char *name; /* the first path segment that selects it */
    int status;
    const char *ctype;
    bool chunked;  /* Transfer-Encoding: chunked (else close-delimited) */
    char **pieces; /* body pieces, each sent on its own (an HTTP chunk when chunked) */
    size_t npieces;
    int delay_ms;       /* pause before each piece */
    bool stall;         /* after the pieces, keep the connection open and silent */
    const char *header; /* one extra response header line, or NULL */
};

#define MAX_SCEN 16
#define MAX_CONN 64

struct server {
    int lfd;
    int port;
    pthread_t thread;
    atomic_int stop;
    pthread_mutex_t mu;
    char *last_head; /* request line and headers */
    char *last_body;
    int requests;
    struct scenario scen[MAX_SCEN];
    size_t nscen;
    pthread_t conns[MAX_CONN];
    size_t nconns;
};

struct conn {
    struct server *s;
    int fd;
};

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static bool send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

static void *conn_main(void *arg)
{
    struct conn *c = arg;
    struct server *s = c->s;
    int fd = c->fd;
    free(c);
    size_t cap = 1 << 20, len = 0;
    char *buf = malloc(cap + 1);
    char *hend = NULL;
    while (!hend && len < cap) {
        ssize_t r = recv(fd, buf + len, cap - len, 0);
        if (r <= 0)
            goto out;
        len += (size_t)r;
        buf[len] = '\0';
        hend = strstr(buf, "\r\n\r\n");
    }
    if (!hend)
        goto out;
    size_t head_len = (size_t)(hend - buf) + 4;
    size_t clen = 0;
    const char *cl = strcasestr(buf, "\r\nContent-Length:");
    if (cl && cl < hend)
        clen = strtoul(cl + 17, NULL, 10);
    while (len < head_len + clen && len < cap) {
        ssize_t r = recv(fd, buf + len, cap - len, 0);
        if (r <= 0)
            goto out;
        len += (size_t)r;
    }
    buf[len] = '\0';
    char path[256] = "";
    sscanf(buf, "POST %255s", path);
    pthread_mutex_lock(&s->mu);
    free(s->last_head);
    free(s->last_body);
    s->last_head = strndup(buf, head_len);
    s->last_body = strndup(buf + head_len, clen);
    s->requests++;
    pthread_mutex_unlock(&s->mu);

    const struct scenario *sc = NULL;
    for (size_t i = 0; i < s->nscen; i++) {
        size_t n = strlen(s->scen[i].name);
        if (path[0] == '/' && strncmp(path + 1, s->scen[i].name, n) == 0 && path[1 + n] == '/')
            sc = &s->scen[i];
    }
    char head[512];
    if (!sc) {
        const char *b = "{\"error\":{\"message\":\"no such scenario\"}}";
        int hn = snprintf(head, sizeof head,
                          "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n"
                          "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                          strlen(b), b);
        send_all(fd, head, (size_t)hn);
        goto out;
    }
    size_t total = 0;
    for (size_t i = 0; i < sc->npieces; i++)
        total += strlen(sc->pieces[i]);
    int hn = snprintf(head, sizeof head, "HTTP/1.1 %d X\r\nContent-Type: %s\r\n%s%s", sc->status,
                      sc->ctype, sc->header ? sc->header : "", sc->header ? "\r\n" : "");
    if (sc->chunked)
        hn += snprintf(head + hn, sizeof head - (size_t)hn, "Transfer-Encoding: chunked\r\n");
    else if (!sc->stall && sc->delay_ms == 0)
        hn += snprintf(head + hn, sizeof head - (size_t)hn, "Content-Length: %zu\r\n", total);
    hn += snprintf(head + hn, sizeof head - (size_t)hn, "Connection: close\r\n\r\n");
    if (!send_all(fd, head, (size_t)hn))
        goto out;
    for (size_t i = 0; i < sc->npieces && !atomic_load(&s->stop); i++) {
        if (sc->delay_ms)
            sleep_ms(sc->delay_ms);
        const char *p = sc->pieces[i];
        size_t n = strlen(p);
        if (sc->chunked) {
            char ch[32];
            int k = snprintf(ch, sizeof ch, "%zx\r\n", n);
            if (!send_all(fd, ch, (size_t)k) || !send_all(fd, p, n) || !send_all(fd, "\r\n", 2))
                goto out;
        } else if (!send_all(fd, p, n)) {
            goto out;
        }
    }
    if (sc->stall) {
        /* silent until the client gives up (it closes: recv returns 0) or the test ends */
        for (int waited = 0; waited < 20000 && !atomic_load(&s->stop); waited += 20) {
            struct pollfd pf = {fd, POLLIN, 0};
            if (poll(&pf, 1, 20) > 0) {
                char tmp[64];
                if (recv(fd, tmp, sizeof tmp, 0) <= 0)
                    break;
            }
        }
        goto out;
    }
    if (sc->chunked)
        send_all(fd, "0\r\n\r\n", 5);
out:
    free(buf);
    close(fd);
    return NULL;
}

static void *server_main(void *arg)
{
    struct server *s = arg;
    while (!atomic_load(&s->stop)) {
        struct pollfd pf = {s->lfd, POLLIN, 0};
        if (poll(&pf, 1, 20) <= 0)
            continue;
        int fd = accept(s->lfd, NULL, NULL);
        if (fd < 0)
            continue;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct conn *c = malloc(sizeof *c);
        c->s = s;
        c->fd = fd;
        if (s->nconns < MAX_CONN && pthread_create(&s->conns[s->nconns], NULL, conn_main, c) == 0)
            s->nconns++;
        else {
            close(fd);
            free(c);
        }
    }
    return NULL;
}

/* Loopback only: the server binds 127.0.0.1 and an ephemeral port. */
static void server_start(struct server *s)
{
    s->lfd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(s->lfd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(s->lfd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(s->lfd, 16), 0);
    socklen_t al = sizeof a;
    assert_int_equal(getsockname(s->lfd, (struct sockaddr *)&a, &al), 0);
    s->port = ntohs(a.sin_port);
    pthread_mutex_init(&s->mu, NULL);
    atomic_store(&s->stop, 0);
    assert_int_equal(pthread_create(&s->thread, NULL, server_main, s), 0);
}

static void server_stop(struct server *s)
{
    atomic_store(&s->stop, 1);
    pthread_join(s->thread, NULL);
    for (size_t i = 0; i < s->nconns; i++)
        pthread_join(s->conns[i], NULL);
    close(s->lfd);
    free(s->last_head);
    free(s->last_body);
    pthread_mutex_destroy(&s->mu);
}

/* Cut text into pieces of cycling awkward sizes. */
static void cut(struct scenario *sc, const char *text, const size_t *sizes, size_t nsizes)
{
    size_t n = strlen(text), at = 0, k = 0;
    sc->pieces = calloc(n + 1, sizeof *sc->pieces);
    while (at < n) {
        size_t take = sizes ? sizes[k++ % nsizes] : n;
        if (take > n - at)
            take = n - at;
        sc->pieces[sc->npieces++] = strndup(text + at, take);
        at += take;
    }
}

static struct scenario *add_scen(struct server *s, const char *name, int status, const char *ctype,
                                 bool chunked)
{
    assert_true(s->nscen < MAX_SCEN);
    struct scenario *sc = &s->scen[s->nscen++];
    memset(sc, 0, sizeof *sc);
    sc->name = name;
    sc->status = status;
    sc->ctype = ctype;
    sc->chunked = chunked;
    return sc;
}

/* ======================================================================= canned responses == */

#define CHUNK_HEAD                                                                                 \
    "{\"id\":\"5e1c\",\"object\":\"chat.completion.chunk\",\"created\":1764300000,"                \
    "\"model\":\"deepseek-v4-flash\",\"system_fingerprint\":\"fp_v4\",\"choices\":[{\"index\":0,"

/* DeepSeek's shape: a keep-alive comment, reasoning_content deltas (one cut inside "λ"), a
 * content delta, two tool calls whose arguments arrive in pieces, usage with cache hits in the
 * last chunk, CRLF line ends. */
static const char deepseek_stream[] =
    ": keep-alive\r\n\r\n"
    "data: " CHUNK_HEAD
    "\"delta\":{\"role\":\"assistant\",\"content\":null,\"reasoning_content\":\"\"},"
    "\"logprobs\":null,\"finish_reason\":null}]}\r\n\r\n"
    "data: " CHUNK_HEAD "\"delta\":{\"content\":null,\"reasoning_content\":\"Let me look\"},"
    "\"logprobs\":null,\"finish_reason\":null}]}\r\n\r\n"
    "data: " CHUNK_HEAD
    "\"delta\":{\"content\":null,\"reasoning_content\":\" at main.c \xE2\x80\x94 \xCE\xBB\\n\"},"
    "\"logprobs\":null,\"finish_reason\":null}]}\r\n\r\n"
    "data: " CHUNK_HEAD "\"delta\":{\"content\":\"I'll search.\",\"reasoning_content\":null},"
    "\"logprobs\":null,\"finish_reason\":null}]}\r\n\r\n"
    "data: " CHUNK_HEAD
    "\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_00_abc\",\"type\":\"function\","
    "\"function\":{\"name\":\"search\",\"arguments\":\"\"}}]},\"logprobs\":null,\"finish_reason\":"
    "null}]}\r\n\r\n"
    "data: " CHUNK_HEAD "\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{"
    "\\\"pattern\\\": \"}}]},"
    "\"logprobs\":null,\"finish_reason\":null}]}\r\n\r\n"
    "data: " CHUNK_HEAD
    "\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\\\"a|b\\\"}\"}}]},"
    "\"logprobs\":null,\"finish_reason\":null}]}\r\n\r\n"
    ": keep-alive\r\n\r\n"
    "data: " CHUNK_HEAD
    "\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"call_01_def\",\"type\":\"function\","
    "\"function\":{\"name\":\"read_file\",\"arguments\":\"{\\\"path\\\":\\\"main.c\\\"}\"}}]},"
    "\"logprobs\":null,\"finish_reason\":null}]}\r\n\r\n"
    "data: " CHUNK_HEAD "\"delta\":{\"content\":\"\",\"reasoning_content\":null},\"logprobs\":null,"
    "\"finish_reason\":\"tool_calls\"}],\"usage\":{\"prompt_tokens\":1200,\"completion_tokens\":40,"
    "\"total_tokens\":1240,\"prompt_tokens_details\":{\"cached_tokens\":1024},"
    "\"completion_tokens_details\":{\"reasoning_tokens\":25},"
    "\"prompt_cache_hit_tokens\":1024,\"prompt_cache_miss_tokens\":176}}\r\n\r\n"
    "data: [DONE]\r\n\r\n";

/* OpenAI's shape: LF only, usage in a separate chunk with empty choices. */
static const char plain_stream[] =
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":"
    "{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n"
    "data: "
    "{\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"},\"finish_reason\":"
    "null}]}\n\n"
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\", "
    "world\"},\"finish_reason\":null}]}\n\n"
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n"
    "data: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":50,\"completion_tokens\":3,"
    "\"total_tokens\":53,\"prompt_tokens_details\":{\"cached_tokens\":32}}}\n\n"
    "data: [DONE]\n\n";

static const char err401_body[] =
    "{\"error\":{\"message\":\"Authentication Fails, Your api key: ****-123 is invalid\","
    "\"type\":\"authentication_error\",\"param\":null,\"code\":\"invalid_request_error\"}}";

static const char malformed_stream[] =
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ok\"},\"finish_reason\":null}]}\n\n"
    "data: {\"choices\": [{\"index\":0,\"delta\":{\"content\":oops}}]}\n\n"
    "data: [DONE]\n\n";

static const char truncated_stream[] =
    "data: "
    "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"partial\"},\"finish_reason\":null}]}\n\n";

/* A server that ignored "stream": true and answered with one chat.completion. */
static const char json_completion[] = "{\"id\":\"x\",\"object\":\"chat.completion\",\"choices\":[{"
                                      "\"index\":0,\"message\":{\"role\":\"assistant\","
                                      "\"content\":\"Done.\",\"reasoning_content\":\"Think.\","
                                      "\"tool_calls\":[{\"id\":\"t1\",\"type\":\"function\","
                                      "\"function\":{\"name\":\"search\",\"arguments\":\"{"
                                      "\\\"pattern\\\":\\\"x\\\"}\"}},{\"id\":\"t2\","
                                      "\"type\":\"function\",\"function\":{\"name\":\"list\","
                                      "\"arguments\":\"{}\"}}]},\"finish_reason\":\"tool_calls\"}],"
                                      "\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":4}}";

static const char midstream_error[] =
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"},\"finish_reason\":null}]}\n\n"
    "data: {\"error\":{\"message\":\"Model overloaded\",\"type\":\"server_error\"}}\n\n";

#define SLOW_DELTAS 150

static struct server srv;

static int group_setup(void **state)
{
    (void)state;
    static const size_t awkward[] = {1, 7, 3, 13, 2, 29, 5, 64, 1, 1, 11};
    struct scenario *sc = add_scen(&srv, "ds", 200, "text/event-stream; charset=utf-8", true);
    cut(sc, deepseek_stream, awkward, sizeof awkward / sizeof awkward[0]);
    sc->delay_ms = 0;
    sc = add_scen(&srv, "plain", 200, "text/event-stream", false);
    static const size_t lines[] = {40, 40, 40};
    cut(sc, plain_stream, lines, 3);
    sc->delay_ms = 1;
    sc = add_scen(&srv, "v401", 401, "application/json", false);
    cut(sc, err401_body, NULL, 0);
    sc = add_scen(&srv, "v429", 429, "application/json", false);
    cut(sc, "{\"error\":{\"message\":\"Rate limit reached\",\"type\":\"rate_limit_error\"}}", NULL,
        0);
    sc->header = "Retry-After: 20";
    sc = add_scen(&srv, "v500", 500, "text/html", false);
    cut(sc, "<html><body>Internal Server Error</body></html>\n", NULL, 0);
    sc = add_scen(&srv, "stall", 200, "text/event-stream", true);
    cut(sc,
        "data: " CHUNK_HEAD
        "\"delta\":{\"reasoning_content\":\"Thinking\"},\"finish_reason\":null}]}\n\n",
        NULL, 0);
    sc->stall = true;
    sc = add_scen(&srv, "silent", 200, "text/event-stream", true);
    sc->stall = true;
    sc = add_scen(&srv, "bad", 200, "text/event-stream", true);
    static const size_t halves[] = {50, 50};
    cut(sc, malformed_stream, halves, 2);
    sc = add_scen(&srv, "html", 200, "text/html", false);
    cut(sc, "<html>Please log in to the proxy</html>\n", NULL, 0);
    sc = add_scen(&srv, "trunc", 200, "text/event-stream", false);

    cut(sc, truncated_stream, NULL, 0);
    sc = add_scen(&srv, "json", 200, "application/json", false);
    cut(sc, json_completion, NULL, 0);
    sc = add_scen(&srv, "midErr", 200, "text/event-stream", true);
    cut(sc, midstream_error, NULL, 0);
    sc = add_scen(&srv, "big", 200, "text/event-stream", true);
    char *big = malloc(2100);
    memcpy(big, "data: \"", 7);
    memset(big + 7, 'z', 2000);
    memcpy(big + 2007, "\"\n\n", 4);
    cut(sc, big, NULL, 0);
    free(big);
    sc = add_scen(&srv, "slow", 200, "text/event-stream", true);
    sc->pieces = calloc(SLOW_DELTAS + 2, sizeof *sc->pieces);
    for (int i = 0; i < SLOW_DELTAS; i++) {
        char tmp[160];
        snprintf(tmp, sizeof tmp,
                 "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"t%d "
                 "\"},\"finish_reason\":null}]}\n\n",
                 i);
        sc->pieces[sc->npieces++] = strdup(tmp);
    }
    sc->pieces[sc->npieces++] = strdup(
        "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: "
        "[DONE]\n\n");
    sc->delay_ms = 20;
    server_start(&srv);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    server_stop(&srv);
    for (size_t i = 0; i < srv.nscen; i++) {
        for (size_t k = 0; k < srv.scen[i].npieces; k++)
            free(srv.scen[i].pieces[k]);
        free(srv.scen[i].pieces);
    }
    return 0;
}

static char *last_head(void)
{
    pthread_mutex_lock(&srv.mu);
    char *h = srv.last_head ? strdup(srv.last_head) : NULL;
    pthread_mutex_unlock(&srv.mu);
    return h;
}

static cJSON *last_body(void)
{
    pthread_mutex_lock(&srv.mu);
    cJSON *b = srv.last_body ? cJSON_Parse(srv.last_body) : NULL;
    pthread_mutex_unlock(&srv.mu);
    return b;
}

/* ============================================================================ the client == */

struct events {
    char log[256][200];
    int n;
    int cancel_after_content; /* set the flag after this many content events */
    atomic_int *cancel;
    int contents;
    struct agent_openai_usage usage;
};

static int on_event(void *ud, const struct agent_openai_event *ev, struct ctx_err *e)
{
    struct events *x = ud;
    (void)e;
    assert_true(x->n < 256);
    assert_int_equal(strlen(ev->text ? ev->text : ""), ev->len);
    char *l = x->log[x->n++];
    switch (ev->kind) {
    case AGENT_OPENAI_EV_REASONING: snprintf(l, 200, "reasoning:%s", ev->text); break;
    case AGENT_OPENAI_EV_CONTENT:
        snprintf(l, 200, "content:%s", ev->text);
        if (++x->contents == x->cancel_after_content && x->cancel)
            atomic_store(x->cancel, 1);
        break;
    case AGENT_OPENAI_EV_TOOL_BEGIN:
        snprintf(l, 200, "begin:%d:%s:%s", ev->index, ev->id, ev->name);
        break;
    case AGENT_OPENAI_EV_TOOL_ARGS: snprintf(l, 200, "args:%d:%s", ev->index, ev->text); break;
    case AGENT_OPENAI_EV_TOOL_END:
        snprintf(l, 200, "end:%d:%s:%s:%s", ev->index, ev->id, ev->name, ev->text);
        break;
    case AGENT_OPENAI_EV_DONE:
        snprintf(l, 200, "done:%s", ev->finish_reason);
        x->usage = *ev->usage;
        break;
    }
    return 0;
}

static struct agent_openai *client(const char *scenario, const char *key_env, long idle_ms)
{
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/%s/", srv.port, scenario);
    struct agent_openai_config cfg = {
        .url = url,
        .model = "deepseek-v4-flash",
        .api_key_env = key_env,
        .idle_timeout_ms = idle_ms,
        .connect_timeout_ms = 2000,
    };
    struct ctx_err e = {0};
    struct agent_openai *c = agent_openai_new(&cfg, &e);
    if (!c)
        fail_msg("agent_openai_new: %s", e.msg);
    return c;
}

static cJSON *parse(const char *s)
{
    cJSON *v = cJSON_Parse(s);
    if (!v)
        fail_msg("test JSON does not parse: %s", s);
    return v;
}

/* The conversation sent in the DeepSeek test: DSML-shaped, with tools on the system message, an
 * earlier tool-call turn (its reasoning must go back), an earlier plain turn (its reasoning must
 * not), a tool result and a latest_reminder. */
static const char conversation[] =
    "[{\"role\":\"system\",\"content\":\"You are "
    "ctxd.\",\"tools\":[{\"type\":\"function\",\"function\":"
    "{\"name\":\"search\",\"description\":\"Regex search\",\"parameters\":{\"type\":\"object\","
    "\"properties\":{\"pattern\":{\"type\":\"string\"}},\"required\":[\"pattern\"]}}},"
    "{\"name\":\"read_file\",\"parameters\":{\"type\":\"object\",\"properties\":{\"path\":{"
    "\"type\":\"string\"}}}}]},"
    "{\"role\":\"user\",\"content\":\"Hi\"},"
    "{\"role\":\"assistant\",\"content\":\"Hello!\",\"reasoning_content\":\"greet\",\"tool_calls\":"
    "[]},"
    "{\"role\":\"user\",\"content\":\"Where is main?\"},"
    "{\"role\":\"assistant\",\"content\":\"\",\"reasoning_content\":\"I should "
    "grep.\",\"tool_calls\":"
    "[{\"id\":\"call_9\",\"type\":\"function\",\"function\":{\"name\":\"search\",\"arguments\":\"{"
    "\\\"pattern\\\": \\\"main\\\"}\"}}]},"
    "{\"role\":\"tool\",\"tool_call_id\":\"call_9\",\"content\":\"main.c:3: int main(void)\"},"
    "{\"role\":\"latest_reminder\",\"content\":\"Unsaved: main.c\"}]";

static const char expected_request[] =
    "{\"model\":\"deepseek-v4-flash\",\"messages\":["
    "{\"role\":\"system\",\"content\":\"You are ctxd.\"},"
    "{\"role\":\"user\",\"content\":\"Hi\"},"
    "{\"role\":\"assistant\",\"content\":\"Hello!\"},"
    "{\"role\":\"user\",\"content\":\"Where is main?\"},"
    "{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{\"id\":\"call_9\",\"type\":"
    "\"function\","
    "\"function\":{\"name\":\"search\",\"arguments\":\"{\\\"pattern\\\": \\\"main\\\"}\"}}],"
    "\"reasoning_content\":\"I should grep.\"},"
    "{\"role\":\"tool\",\"content\":\"main.c:3: int main(void)\",\"tool_call_id\":\"call_9\"},"
    "{\"role\":\"user\",\"content\":\"Unsaved: main.c\"}],"
    "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"search\",\"description\":\"Regex "
    "search\","
    "\"parameters\":{\"type\":\"object\",\"properties\":{\"pattern\":{\"type\":\"string\"}},"
    "\"required\":[\"pattern\"]}}},"
    "{\"type\":\"function\",\"function\":{\"name\":\"read_file\",\"parameters\":{\"type\":"
    "\"object\","
    "\"properties\":{\"path\":{\"type\":\"string\"}}}}}],"
    "\"stream\":true,\"stream_options\":{\"include_usage\":true}}";

static void deepseek_reasoning_and_tool_calls(void **state)
{
    (void)state;
    setenv("CTX_TEST_DEEPSEEK_KEY", "sk-test-123", 1);
    struct agent_openai *c = client("ds", "CTX_TEST_DEEPSEEK_KEY", 5000);
    char want_url[128];
    snprintf(want_url, sizeof want_url, "http://127.0.0.1:%d/ds/chat/completions", srv.port);
    assert_string_equal(agent_openai_url(c), want_url);
    cJSON *msgs = parse(conversation);
    struct events ev = {0};
    struct agent_openai_result res;
    struct ctx_err e = {0};
    int rc = agent_openai_chat(c, msgs, NULL, on_event, &ev, NULL, &res, &e);
    if (rc)
        fail_msg("chat: %s", e.msg);
    static const char *const want[] = {
        "reasoning:Let me look",
        "reasoning: at main.c \xE2\x80\x94 \xCE\xBB\n",
        "content:I'll search.",
        "begin:0:call_00_abc:search",
        "args:0:{\"pattern\": ",
        "args:0:\"a|b\"}",
        "begin:1:call_01_def:read_file",
        "args:1:{\"path\":\"main.c\"}",
        "end:0:call_00_abc:search:{\"pattern\": \"a|b\"}",
        "end:1:call_01_def:read_file:{\"path\":\"main.c\"}",
        "done:tool_calls",
    };
    assert_int_equal(ev.n, sizeof want / sizeof want[0]);
    for (int i = 0; i < ev.n; i++)
        assert_string_equal(ev.log[i], want[i]);
    /* usage: DeepSeek's cache-hit field */
    assert_true(res.usage.reported);
    assert_int_equal(res.usage.prompt_tokens, 1200);
    assert_int_equal(res.usage.cached_tokens, 1024);
    assert_int_equal(res.usage.completion_tokens, 40);
    assert_int_equal(res.usage.reasoning_tokens, 25);
    assert_true(res.usage.ttft_ms >= 0 && res.usage.ttft_ms <= res.usage.total_ms);
    assert_int_equal(ev.usage.prompt_tokens, 1200);
    assert_string_equal(res.finish_reason, "tool_calls");
    assert_int_equal(res.http_status, 200);
    /* the assembled message, in the DSML vectors' shape */
    cJSON *want_msg = parse(
        "{\"role\":\"assistant\",\"content\":\"I'll search.\",\"reasoning_content\":\"Let me look "
        "at main.c "
        "\xE2\x80\x94 "
        "\xCE\xBB\\n\",\"tool_calls\":[{\"id\":\"call_00_abc\",\"type\":\"function\",\"function\":"
        "{\"name\":\"search\",\"arguments\":\"{\\\"pattern\\\": "
        "\\\"a|b\\\"}\"}},{\"id\":\"call_01_def\","
        "\"type\":\"function\",\"function\":{\"name\":\"read_file\",\"arguments\":\"{\\\"path\\\":"
        "\\\"main.c\\\"}\"}}]}");
    if (!cJSON_Compare(res.message, want_msg, true)) {
        char *got = cJSON_PrintUnformatted(res.message);
        fail_msg("message: %s", got);
    }
    cJSON_Delete(want_msg);
    /* the request as the server received it */
    char *head = last_head();
    assert_non_null(head);
    assert_non_null(strstr(head, "POST /ds/chat/completions HTTP/1.1\r\n"));
    assert_non_null(strstr(head, "\r\nAuthorization: Bearer sk-test-123\r\n"));
    assert_non_null(strstr(head, "\r\nContent-Type: application/json\r\n"));
    assert_non_null(strstr(head, "\r\nAccept: text/event-stream\r\n"));
    assert_null(strcasestr(head, "\r\nExpect:"));
    free(head);
    cJSON *body = last_body();
    cJSON *want_body = parse(expected_request);
    if (!cJSON_Compare(body, want_body, true)) {
        char *got = cJSON_PrintUnformatted(body);
        fail_msg("request body: %s", got);
    }
    cJSON_Delete(want_body);
    cJSON_Delete(body);

    /* The next turn: the answer and its two tool results go back; the answer made tool calls,
     * so its reasoning_content travels with it. (Served by the plain scenario on the same port:
     * only the path differs.) */
    cJSON_AddItemToArray(msgs, res.message);
    res.message = NULL;
    cJSON_AddItemToArray(
        msgs, parse("{\"role\":\"tool\",\"tool_call_id\":\"call_00_abc\",\"content\":\"x.c:1\"}"));
    cJSON_AddItemToArray(
        msgs, parse("{\"role\":\"tool\",\"tool_call_id\":\"call_01_def\",\"content\":\"int x;\"}"));
    agent_openai_free(c);
    c = client("plain", "CTX_TEST_DEEPSEEK_KEY", 5000);
    memset(&ev, 0, sizeof ev);
    rc = agent_openai_chat(c, msgs, NULL, on_event, &ev, NULL, &res, &e);
    if (rc)
        fail_msg("second chat: %s", e.msg);
    body = last_body();
    cJSON *sent = cJSON_GetObjectItem(body, "messages");
    assert_int_equal(cJSON_GetArraySize(sent), 10);
    cJSON *turn = cJSON_GetArrayItem(sent, 7);
    cJSON *want_turn =
        parse("{\"role\":\"assistant\",\"content\":\"I'll "
              "search.\",\"tool_calls\":[{\"id\":\"call_00_abc\",\"type\":\"function\","
              "\"function\":{\"name\":\"search\",\"arguments\":\"{\\\"pattern\\\": "
              "\\\"a|b\\\"}\"}},{\"id\":\"call_01_def\","
              "\"type\":\"function\",\"function\":{\"name\":\"read_file\",\"arguments\":\"{"
              "\\\"path\\\":\\\"main.c\\\"}\"}}],"
              "\"reasoning_content\":\"Let me look at main.c \xE2\x80\x94 \xCE\xBB\\n\"}");
    if (!cJSON_Compare(turn, want_turn, true)) {
        char *got = cJSON_PrintUnformatted(turn);
        fail_msg("carried-back turn: %s", got);
    }
    assert_string_equal(
        cJSON_GetObjectItem(cJSON_GetArrayItem(sent, 8), "tool_call_id")->valuestring,
        "call_00_abc");
    assert_string_equal(
        cJSON_GetObjectItem(cJSON_GetArrayItem(sent, 9), "tool_call_id")->valuestring,
        "call_01_def");
    cJSON_Delete(want_turn);
    cJSON_Delete(body);
    agent_openai_result_free(&res);
    cJSON_Delete(msgs);
    agent_openai_free(c);
}

static void plain_content_stream(void **state)
{
    (void)state;
    struct agent_openai *c = client("plain", NULL, 5000);
    cJSON *msgs = parse("[{\"role\":\"user\",\"content\":\"Say hello\"}]");
    struct events ev = {0};
    struct agent_openai_result res;
    struct ctx_err e = {0};
    int rc = agent_openai_chat(c, msgs, NULL, on_event, &ev, NULL, &res, &e);
    if (rc)
        fail_msg("chat: %s", e.msg);
    assert_int_equal(ev.n, 3);
    assert_string_equal(ev.log[0], "content:Hello");
    assert_string_equal(ev.log[1], "content:, world");
    assert_string_equal(ev.log[2], "done:stop");
    assert_int_equal(res.usage.prompt_tokens, 50);
    assert_int_equal(res.usage.cached_tokens,
                     32); /* OpenAI's prompt_tokens_details.cached_tokens */
    assert_int_equal(res.usage.completion_tokens, 3);
    assert_int_equal(res.usage.reasoning_tokens, -1);
    char *m = cJSON_PrintUnformatted(res.message);
    assert_string_equal(m, "{\"role\":\"assistant\",\"content\":\"Hello, "
                           "world\",\"reasoning_content\":\"\",\"tool_calls\":[]}");
    free(m);
    /* no key configured: no Authorization header; no tools: no tools field */
    char *head = last_head();
    assert_null(strcasestr(head, "\r\nAuthorization:"));
    free(head);
    cJSON *body = last_body();
    char *b = cJSON_PrintUnformatted(body);
    assert_string_equal(b, "{\"model\":\"deepseek-v4-flash\",\"messages\":[{\"role\":\"user\","
                           "\"content\":\"Say hello\"}],"
                           "\"stream\":true,\"stream_options\":{\"include_usage\":true}}");
    free(b);
    cJSON_Delete(body);
    agent_openai_result_free(&res);
    cJSON_Delete(msgs);
    agent_openai_free(c);
}

static void http_401_with_json_error(void **state)
{
    (void)state;
    setenv("CTX_TEST_BAD_KEY", "sk-wrong-123", 1);
    struct agent_openai *c = client("v401", "CTX_TEST_BAD_KEY", 5000);
    cJSON *msgs = parse("[{\"role\":\"user\",\"content\":\"hi\"}]");
    struct events ev = {0};
    struct agent_openai_result res;
    struct ctx_err e = {0};
    assert_int_equal(agent_openai_chat(c, msgs, NULL, on_event, &ev, NULL, &res, &e), CTX_EDENIED);
    char want[300];
    snprintf(want, sizeof want,
             "HTTP 401 from http://127.0.0.1:%d/v401/chat/completions: Authentication Fails, Your "
             "api key: "
             "****-123 is invalid (authentication_error)",
             srv.port);
    assert_string_equal(e.msg, want);
    assert_null(strstr(e.msg, "sk-wrong-123")); /* the key itself never shows */
    assert_int_equal(res.http_status, 401);
    assert_int_equal(res.retry_after_s, -1);
    assert_null(res.message);
    assert_int_equal(ev.n, 0);
    agent_openai_free(c);

    /* a rate limit that says when to come back */
    c = client("v429", NULL, 5000);
    assert_int_equal(agent_openai_chat(c, msgs, NULL, on_event, &ev, NULL, &res, &e), CTX_EBUSY);
    snprintf(want, sizeof want,
             "HTTP 429 from http://127.0.0.1:%d/v429/chat/completions: Rate limit reached "
             "(rate_limit_error) "
             "(retry after 20 s)",
             srv.port);
    assert_string_equal(e.msg, want);
    assert_int_equal(res.retry_after_s, 20);
    agent_openai_free(c);

    /* a 500 with an HTML body */
    c = client("v500", NULL, 5000);
    assert_int_equal(agent_openai_chat(c, msgs, NULL, on_event, &ev, NULL, &res, &e), CTX_EIO);
    snprintf(want, sizeof want,
             "HTTP 500 from http://127.0.0.1:%d/v500/chat/completions: <html><body>Internal Server "
             "Error</body></html>",
             srv.port);
    assert_string_equal(e.msg, want);
    agent_openai_free(c);

    /* an unknown path: 404 */
    c = client("nowhere", NULL, 5000);
    assert_int_equal(agent_openai_chat(c, msgs, NULL, on_event, &ev, NULL, &res, &e),
                     CTX_ENOTFOUND);
    assert_non_null(strstr(e.msg, "/nowhere/chat/completions: no such scenario"));
    agent_openai_free(c);
    cJSON_Delete(msgs);
}

static void idle_timeout(void **state)
{
    (void)state;
    struct agent_openai *c = client("stall", NULL, 1000);
    cJSON *msgs = parse("[{\"role\":\"user\",\"content\":\"hi\"}]");
    struct events ev = {0};
    struct agent_openai_result res;
    struct ctx_err e = {0};
    assert_int_equal(agent_openai_chat(c, msgs, NULL, on_event, &ev, NULL, &res, &e),
                     CTX_ETIMEDOUT);
    char want[200];
    snprintf(want, sizeof want,
             "no data from http://127.0.0.1:%d/stall/chat/completions for 1000 ms (idle timeout; ",
             srv.port);
    assert_memory_equal(e.msg, want, strlen(want));
    assert_non_null(strstr(e.msg, " bytes had arrived)"));
    assert_int_equal(ev.n, 1);
    assert_string_equal(ev.log[0], "reasoning:Thinking");
    assert_null(res.message);
    assert_true(res.usage.ttft_ms >= 0); /* what had arrived is reported */
    cJSON_Delete(msgs);
    agent_openai_free(c);
}

static void malformed_data_line(void **state)
{
    (void)state;
    struct agent_openai *c = client("bad", NULL, 5000);
    cJSON *msgs = parse("[{\"role\":\"user\",\"content\":\"hi\"}]");
    struct events ev = {0};
    struct agent_openai_result res;
    struct ctx_err e = {0};
    assert_int_equal(agent_openai_chat(c, msgs, NULL, on_event, &ev, NULL, &res, &e), CTX_EPROTO);
    char want[400];
    snprintf(want, sizeof want,
             "stream from http://127.0.0.1:%d/bad/chat/completions: stream event at byte offset 79 "
             "is not "
             "valid JSON (its data: invalid JSON near byte 43): "
             "{\"choices\": [{\"index\":0,\"delta\":{\"content\":oops}}]}",
             srv.port);
    assert_string_equal(e.msg, want);
    assert_int_equal(ev.n, 1);
    assert_string_equal(ev.log[0], "content:ok");
    agent_openai_free(c);

    /* the connection closes before any finish_reason */
    c = client("trunc", NULL, 5000);
    memset(&ev, 0, sizeof ev);
    assert_int_equal(agent_openai_chat(c, msgs, NULL, on_event, &ev, NULL, &res, &e), CTX_EPROTO);
    snprintf(want, sizeof want,
             "stream from http://127.0.0.1:%d/trunc/chat/completions: the stream ended before the "
             "answer was "
             "finished (no finish_reason and no [DONE]; 7 content bytes, 0 reasoning bytes, 0 tool "
             "calls so far)",
             srv.port);
    assert_string_equal(e.msg, want);
    agent_openai_free(c);

    /* a 200 that is not a stream at all (a proxy's page) */
    c = client("html", NULL, 5000);
    memset(&ev, 0, sizeof ev);
    assert_int_equal(agent_openai_chat(c, msgs, NULL, on_event, &ev, NULL, &res, &e), CTX_EPROTO);
    snprintf(
        want, sizeof want,
        "stream from http://127.0.0.1:%d/html/chat/completions: the stream ended before the answer "
        "was finished (no finish_reason and no [DONE]; 0 content bytes, 0 reasoning bytes, 0 tool "
        "calls so far) (the response's Content-Type was text/html, not text/event-stream)",
        srv.port);
    assert_string_equal(e.msg, want);
    agent_openai_free(c);

    /* an error object in the middle of the stream */
    c = client("midErr", NULL, 5000);
    memset(&ev, 0, sizeof ev);
    assert_int_equal(agent_openai_chat(c, msgs, NULL, on_event, &ev, NULL, &res, &e), CTX_EPROTO);
    snprintf(want, sizeof want,
             "stream from http://127.0.0.1:%d/midErr/chat/completions: the server reported an "
             "error in the "
             "stream at byte offset 78: Model overloaded (server_error)",
             srv.port);
    assert_string_equal(e.msg, want);
    agent_openai_free(c);
    cJSON_Delete(msgs);
}

static void event_size_limit(void **state)
{
    (void)state;
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/big", srv.port);
    struct agent_openai_config cfg = {.url = url, .model = "m", .max_event_bytes = 256};
    struct ctx_err e = {0};
    struct agent_openai *c = agent_openai_new(&cfg, &e);
    assert_non_null(c);
    cJSON *msgs = parse("[{\"role\":\"user\",\"content\":\"hi\"}]");
    struct agent_openai_result res;
    assert_int_equal(agent_openai_chat(c, msgs, NULL, NULL, NULL, NULL, &res, &e), CTX_ERANGE);
    char want[300];
    snprintf(want, sizeof want,
             "stream from http://127.0.0.1:%d/big/chat/completions: SSE line starting at byte "
             "offset 0 is "
             "longer than the limit of 256 bytes",
             srv.port);
    assert_string_equal(e.msg, want);
    cJSON_Delete(msgs);
    agent_openai_free(c);
}

static void non_streamed_json_answer(void **state)
{
    (void)state;
    struct agent_openai *c = client("json", NULL, 5000);
    cJSON *msgs = parse("[{\"role\":\"user\",\"content\":\"hi\"}]");
    struct events ev = {0};
    struct agent_openai_result res;
    struct ctx_err e = {0};
    int rc = agent_openai_chat(c, msgs, NULL, on_event, &ev, NULL, &res, &e);
    if (rc)
        fail_msg("chat: %s", e.msg);
    static const char *const want[] = {
        "reasoning:Think.",
        "content:Done.",
        "begin:0:t1:search",
        "args:0:{\"pattern\":\"x\"}",
        "begin:1:t2:list",
        "args:1:{}",
        "end:0:t1:search:{\"pattern\":\"x\"}",
        "end:1:t2:list:{}",
        "done:tool_calls",
    };
    assert_int_equal(ev.n, sizeof want / sizeof want[0]);
    for (int i = 0; i < ev.n; i++)
        assert_string_equal(ev.log[i], want[i]);
    assert_int_equal(res.usage.prompt_tokens, 9);
    assert_int_equal(res.usage.cached_tokens, -1);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(res.message, "tool_calls")), 2);
    agent_openai_result_free(&res);
    cJSON_Delete(msgs);
    agent_openai_free(c);
}

static void cancel_from_the_event_callback(void **state)
{
    (void)state;
    struct agent_openai *c = client("slow", NULL, 5000);
    cJSON *msgs = parse("[{\"role\":\"user\",\"content\":\"count\"}]");
    atomic_int cancel = 0;
    struct events ev = {.cancel_after_content = 3, .cancel = &cancel};
    struct agent_openai_result res;
    struct ctx_err e = {0};
    assert_int_equal(agent_openai_chat(c, msgs, NULL, on_event, &ev, &cancel, &res, &e),
                     CTX_ECANCELED);
    char want[200];
    snprintf(want, sizeof want, "request to http://127.0.0.1:%d/slow/chat/completions cancelled",
             srv.port);
    assert_string_equal(e.msg, want);
    /* nothing after the flag was set: exactly the three deltas, no done */
    assert_int_equal(ev.n, 3);
    assert_string_equal(ev.log[2], "content:t2 ");
    assert_null(res.message);
    cJSON_Delete(msgs);
    agent_openai_free(c);
}

struct canceller {
    atomic_int *flag;
    int after_ms;
};

static void *cancel_later(void *arg)
{
    struct canceller *k = arg;
    sleep_ms(k->after_ms);
    atomic_store(k->flag, 1);
    return NULL;
}

static void cancel_while_the_server_is_silent(void **state)
{
    (void)state;
    /* no byte ever arrives, so only the client's own polling can notice the flag */
    struct agent_openai *c = client("silent", NULL, 20000);
    cJSON *msgs = parse("[{\"role\":\"user\",\"content\":\"hi\"}]");
    atomic_int cancel = 0;
    struct canceller k = {&cancel, 100};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, cancel_later, &k), 0);
    struct events ev = {0};
    struct agent_openai_result res;
    struct ctx_err e = {0};
    assert_int_equal(agent_openai_chat(c, msgs, NULL, on_event, &ev, &cancel, &res, &e),
                     CTX_ECANCELED);
    pthread_join(th, NULL);
    assert_int_equal(ev.n, 0);
    assert_int_equal(res.http_status, 200);
    agent_openai_free(c);
    cJSON_Delete(msgs);
}

static void connection_refused(void **state)
{
    (void)state;
    /* a port that was just free on loopback */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t al = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &al);
    close(fd);
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1", ntohs(a.sin_port));
    struct agent_openai_config cfg = {.url = url, .model = "m"};
    struct ctx_err e = {0};
    struct agent_openai *c = agent_openai_new(&cfg, &e);
    assert_non_null(c);
    cJSON *msgs = parse("[{\"role\":\"user\",\"content\":\"hi\"}]");
    struct agent_openai_result res;
    assert_int_equal(agent_openai_chat(c, msgs, NULL, NULL, NULL, NULL, &res, &e), CTX_EIO);
    char want[200];
    snprintf(want, sizeof want,
             "cannot connect to http://127.0.0.1:%d/v1/chat/completions: ", ntohs(a.sin_port));
    assert_memory_equal(e.msg, want, strlen(want));
    assert_int_equal(res.http_status, 0);
    cJSON_Delete(msgs);
    agent_openai_free(c);
}

static void connect_timeout(void **state)
{
    (void)state;
    /* A loopback listener that never accepts, its accept queue filled: the kernel drops further
     * SYNs, so a connect hangs until the client's connect timeout. */
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(lfd, 0), 0);
    socklen_t al = sizeof a;
    getsockname(lfd, (struct sockaddr *)&a, &al);
    int fill[4];
    for (int i = 0; i < 4; i++) {
        fill[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        connect(fill[i], (struct sockaddr *)&a, sizeof a);
    }
    sleep_ms(50);
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1", ntohs(a.sin_port));
    struct agent_openai_config cfg = {.url = url, .model = "m", .connect_timeout_ms = 300};
    struct ctx_err e = {0};
    struct agent_openai *c = agent_openai_new(&cfg, &e);
    assert_non_null(c);
    cJSON *msgs = parse("[{\"role\":\"user\",\"content\":\"hi\"}]");
    struct agent_openai_result res;
    assert_int_equal(agent_openai_chat(c, msgs, NULL, NULL, NULL, NULL, &res, &e), CTX_ETIMEDOUT);
    char want[200];
    snprintf(want, sizeof want,
             "connecting to http://127.0.0.1:%d/v1/chat/completions timed out after 300 ms: ",
             ntohs(a.sin_port));
    assert_memory_equal(e.msg, want, strlen(want));
    cJSON_Delete(msgs);
    agent_openai_free(c);
    for (int i = 0; i < 4; i++)
        close(fill[i]);
    close(lfd);
}

static void client_config_errors(void **state)
{
    (void)state;
    struct ctx_err e = {0};
    unsetenv("CTX_TEST_UNSET_KEY");
    struct agent_openai_config cfg = {
        .url = "http://127.0.0.1:1/v1", .model = "m", .api_key_env = "CTX_TEST_UNSET_KEY"};
    assert_null(agent_openai_new(&cfg, &e));
    assert_int_equal(e.code, CTX_EINVAL);
    assert_string_equal(e.msg, "environment variable CTX_TEST_UNSET_KEY (the API key) is not set");
    setenv("CTX_TEST_UNSET_KEY", "", 1);
    assert_null(agent_openai_new(&cfg, &e));
    assert_string_equal(e.msg, "environment variable CTX_TEST_UNSET_KEY (the API key) is empty");
    setenv("CTX_TEST_UNSET_KEY", "abc\r\nX-Evil: 1", 1);
    assert_null(agent_openai_new(&cfg, &e));
    assert_string_equal(
        e.msg, "environment variable CTX_TEST_UNSET_KEY (the API key) contains control characters");
    unsetenv("CTX_TEST_UNSET_KEY");
    cfg.api_key_env = NULL;
    cfg.url = "ftp://127.0.0.1/x";
    assert_null(agent_openai_new(&cfg, &e));
    assert_string_equal(e.msg, "URL \"ftp://127.0.0.1/x\" does not start with http:// or https://");
    cfg.url = "http://127.0.0.1:1";
    cfg.model = NULL;
    assert_null(agent_openai_new(&cfg, &e));
    assert_string_equal(e.msg, "no model name configured for the OpenAI-compatible backend");
    /* URL forms: base, base with slash, full path, query kept but not shown */
    cfg.model = "m";
    static const char *const forms[][2] = {
        {"http://127.0.0.1:1", "http://127.0.0.1:1/chat/completions"},
        {"http://127.0.0.1:1/v1/", "http://127.0.0.1:1/v1/chat/completions"},
        {"http://127.0.0.1:1/v1/chat/completions", "http://127.0.0.1:1/v1/chat/completions"},
        {"http://user:pw@127.0.0.1:1/v1?key=secret", "http://127.0.0.1:1/v1/chat/completions"},
    };
    for (size_t i = 0; i < 4; i++) {
        cfg.url = forms[i][0];
        struct agent_openai *c = agent_openai_new(&cfg, &e);
        assert_non_null(c);
        assert_string_equal(agent_openai_url(c), forms[i][1]);
        agent_openai_free(c);
    }
}

/* ======================================================================= builder, assembler == */

static void request_builder_rules(void **state)
{
    (void)state;
    struct ctx_err e = {0};
    cJSON *extra = parse("{\"temperature\":0.2,\"stream\":true}");
    struct agent_openai_config cfg = {.model = "deepseek-v4-pro",
                                      .thinking = "enabled",
                                      .reasoning_effort = "max",
                                      .max_tokens = 4096,
                                      .extra_body = extra};
    /* calls without ids (the local DSML parser's shape) get ids, and results without
     * tool_call_id answer them in order; developer becomes user; bare tools are wrapped */
    cJSON *msgs = parse(
        "[{\"role\":\"developer\",\"content\":\"d\"},"
        "{\"role\":\"assistant\",\"content\":null,\"reasoning_content\":\"r\",\"tool_calls\":["
        "{\"type\":\"function\",\"function\":{\"name\":\"a\",\"arguments\":{\"x\":1}}},"
        "{\"type\":\"function\",\"function\":{\"name\":\"b\"}}]},"
        "{\"role\":\"tool\",\"content\":\"ra\"},{\"role\":\"tool\",\"content\":\"rb\"}]");
    cJSON *tools = parse("[{\"name\":\"a\",\"parameters\":{}}]");
    cJSON *b = agent_openai_request_body(&cfg, msgs, tools, &e);
    assert_non_null(b);
    char *s = cJSON_PrintUnformatted(b);
    assert_string_equal(
        s, "{\"model\":\"deepseek-v4-pro\",\"messages\":[{\"role\":\"user\",\"content\":\"d\"},"
           "{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{\"id\":\"call_1_0\",\"type\":"
           "\"function\","
           "\"function\":{\"name\":\"a\",\"arguments\":\"{\\\"x\\\":1}\"}},{\"id\":\"call_1_1\","
           "\"type\":\"function\","
           "\"function\":{\"name\":\"b\",\"arguments\":\"{}\"}}],\"reasoning_content\":\"r\"},"
           "{\"role\":\"tool\",\"content\":\"ra\",\"tool_call_id\":\"call_1_0\"},"
           "{\"role\":\"tool\",\"content\":\"rb\",\"tool_call_id\":\"call_1_1\"}],"
           "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"a\",\"parameters\":{}}}],"
           "\"stream\":true,\"stream_options\":{\"include_usage\":true},\"thinking\":{\"type\":"
           "\"enabled\"},"
           "\"reasoning_effort\":\"max\",\"max_tokens\":4096,\"temperature\":0.2}");
    free(s);
    cJSON_Delete(b);
    /* reasoning never goes back when configured so */
    cfg.reasoning_back = AGENT_OPENAI_REASONING_NEVER;
    b = agent_openai_request_body(&cfg, msgs, tools, &e);
    assert_null(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(b, "messages"), 1),
                                    "reasoning_content"));
    cJSON_Delete(b);
    cJSON_Delete(msgs);
    cJSON_Delete(tools);
    cJSON_Delete(extra);
    cfg.extra_body = NULL;

    static const struct {
        const char *msgs;
        const char *err;
    } bad[] = {
        {"[]", "messages is not a non-empty array"},
        {"{}", "messages is not a non-empty array"},
        {"[1]", "messages[0] is not an object"},
        {"[{\"content\":\"x\"}]", "messages[0].role is missing or not a string"},
        {"[{\"role\":\"wizard\",\"content\":\"x\"}]",
         "messages[0].role \"wizard\" is not system, user, assistant, tool, developer or "
         "latest_reminder"},
        {"[{\"role\":\"user\",\"content\":5}]",
         "messages[0].content is neither a string nor an array"},
        {"[{\"role\":\"user\",\"content\":\"x\"},{\"role\":\"tool\",\"content\":\"r\"}]",
         "messages[1] (role tool) has no tool_call_id and no earlier tool call is left for it to "
         "answer"},
        {"[{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{\"function\":{\"arguments\":"
         "\"{}\"}}]}]",
         "messages[0].tool_calls[0].function.name is missing or not a string"},
        {"[{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":{}}]",
         "messages[0].tool_calls is not an array"},
        {"[{\"role\":\"system\",\"content\":\"s\",\"tools\":[{\"description\":\"no name\"}]}]",
         "system message tools: tools[0].function.name is missing or not a string"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cJSON *m = parse(bad[i].msgs);
        assert_null(agent_openai_request_body(&cfg, m, NULL, &e));
        assert_int_equal(e.code, CTX_EINVAL);
        assert_string_equal(e.msg, bad[i].err);
        cJSON_Delete(m);
    }
}

static void assembler_edge_cases(void **state)
{
    (void)state;
    struct events ev = {0};
    struct ctx_err e = {0};
    struct agent_openai_stream *s = agent_openai_stream_new(on_event, &ev, 0);
    /* arguments before the name (buffered until the name arrives), a call without index (by id),
     * `reasoning` instead of reasoning_content, choices other than 0 ignored */
    static const char *const chunks[] = {
        "{\"choices\":[{\"index\":0,\"delta\":{\"reasoning\":\"hm\"}}]}",
        "{\"choices\":[{\"index\":1,\"delta\":{\"content\":\"other choice\"}}]}",
        "{\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{"
        "\"arguments\":\"{\\\"a\\\"\"}}]}}]}",
        "{\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c0\","
        "\"function\":{\"name\":\"f\",\"arguments\":\":1}\"}}]}}]}",
        "{\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"id\":\"c1\",\"function\":{"
        "\"name\":\"g\",\"arguments\":\"{}\"}}]}}]}",
        "{\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}",
    };
    for (size_t i = 0; i < sizeof chunks / sizeof chunks[0]; i++)
        assert_int_equal(agent_openai_stream_data(s, chunks[i], strlen(chunks[i]), i * 100, &e), 0);
    assert_int_equal(agent_openai_stream_end(s, &e), 0);
    static const char *const want[] = {
        "reasoning:hm", "begin:0:c0:f",         "args:0:{\"a\":1}", "begin:1:c1:g",
        "args:1:{}",    "end:0:c0:f:{\"a\":1}", "end:1:c1:g:{}",    "done:tool_calls",
    };
    assert_int_equal(ev.n, sizeof want / sizeof want[0]);
    for (int i = 0; i < ev.n; i++)
        assert_string_equal(ev.log[i], want[i]);
    assert_false(ev.usage.reported);
    assert_int_equal(agent_openai_stream_end(s, &e), CTX_EINTERNAL);
    agent_openai_stream_free(s);

    /* error-body reading */
    char out[128];
    agent_openai_error_text("{\"error\":\"plain string\"}", 24, out, sizeof out);
    assert_string_equal(out, "plain string");
    agent_openai_error_text("{\"detail\":\"Not Found\"}", 22, out, sizeof out);
    assert_string_equal(out, "Not Found");
    agent_openai_error_text("{\"error\":{\"message\":\"m\",\"code\":\"c\"}}", 36, out, sizeof out);
    assert_string_equal(out, "m (c)");
    agent_openai_error_text("  \n", 3, out, sizeof out);
    assert_string_equal(out, "(empty body)");
    agent_openai_error_text("bad\x01gateway\n", 12, out, sizeof out);
    assert_string_equal(out, "bad\\x01gateway");
    assert_int_equal(agent_openai_status_code(429), CTX_EBUSY);
    assert_int_equal(agent_openai_status_code(400), CTX_EINVAL);
    assert_int_equal(agent_openai_status_code(502), CTX_EIO);
    assert_int_equal(agent_openai_status_code(302), CTX_EPROTO);
}

int main(void)
{
    /* Loopback traffic must not go through a proxy from the environment. */
    unsetenv("http_proxy");
    unsetenv("HTTP_PROXY");
    unsetenv("all_proxy");
    unsetenv("ALL_PROXY");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(request_builder_rules),
        cmocka_unit_test(assembler_edge_cases),
        cmocka_unit_test(client_config_errors),
        cmocka_unit_test(deepseek_reasoning_and_tool_calls),
        cmocka_unit_test(plain_content_stream),
        cmocka_unit_test(http_401_with_json_error),
        cmocka_unit_test(idle_timeout),
        cmocka_unit_test(malformed_data_line),
        cmocka_unit_test(event_size_limit),
        cmocka_unit_test(non_streamed_json_answer),
        cmocka_unit_test(cancel_from_the_event_callback),
        cmocka_unit_test(cancel_while_the_server_is_silent),
        cmocka_unit_test(connection_refused),
        cmocka_unit_test(connect_timeout),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
