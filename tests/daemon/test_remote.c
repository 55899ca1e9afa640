/* Integration: ctxd --backend openai answers through a remote OpenAI-compatible endpoint — here an
 * HTTP server on 127.0.0.1 inside the test that streams a DeepSeek-shaped answer. argv[1] = ctxd. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client.h"
#include "harness.h"
#include "json.h"

static const char *ctxd_bin;
static char dir[64], sock[128], repo[128], logpath[128];
static pid_t pid;
static int have_tokenizer, lfd, port;
static char request[1 << 20];
static size_t request_len;

static const char *const stream =
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\","
    "\"reasoning_content\":\"Looking at math.c\"}}]}\n\n"
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":"
    "\"add is defined in math.c, line 1.\"}}]}\n\n"
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},"
    "\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":300,\"completion_tokens\":12,"
    "\"prompt_cache_hit_tokens\":256,\"prompt_cache_miss_tokens\":44}}\n\n"
    "data: [DONE]\n\n";

/* One request: read headers and body, record them, stream the answer, close. */
static void *serve(void *arg)
{
    (void)arg;
    int c = accept(lfd, NULL, NULL);
    if (c < 0)
        return NULL;
    size_t n = 0, need = 0;
    for (;;) {
        ssize_t r = read(c, request + n, sizeof request - 1 - n);
        if (r <= 0)
            break;
        n += (size_t)r;
        request[n] = 0;
        char *end = strstr(request, "\r\n\r\n");
        if (end && !need) {
            char *cl = strcasestr(request, "content-length:");
            need = (size_t)(end + 4 - request) + (cl ? strtoul(cl + 15, NULL, 10) : 0);
        }
        if (need && n >= need)
            break;
    }
    request_len = n;
    char head[256];
    snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n");
    if (write(c, head, strlen(head)) < 0 || write(c, stream, strlen(stream)) < 0)
        perror("write");
    close(c);
    return NULL;
}

/* The agent through the endpoint: a tool call first, then the answer. */
static const char *const agent_streams[] = {
    "data: {\"id\":\"c2\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"reasoning_content\":"
    "\"Find it.\"}}]}\n\n"
    "data: {\"id\":\"c2\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_x\","
    "\"type\":\"function\",\"function\":{\"name\":\"find_symbol\",\"arguments\":\"\"}}]}}]}\n\n"
    "data: {\"id\":\"c2\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":"
    "{\"arguments\":\"{\\\"name\\\": \\\"add\\\"}\"}}]}}]}\n\n"
    "data: {\"id\":\"c2\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}],"
    "\"usage\":{\"prompt_tokens\":320,\"completion_tokens\":9}}\n\n"
    "data: [DONE]\n\n",
    "data: {\"id\":\"c3\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":"
    "\"add is in math.c.\"}}]}\n\n"
    "data: {\"id\":\"c3\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],"
    "\"usage\":{\"prompt_tokens\":360,\"completion_tokens\":6}}\n\n"
    "data: [DONE]\n\n",
};

/* Answer len(agent_streams) requests in turn, keeping the last request. */
static void *serve_agent(void *arg)
{
    (void)arg;
    for (size_t k = 0; k < sizeof agent_streams / sizeof agent_streams[0]; k++) {
        int c = accept(lfd, NULL, NULL);
        if (c < 0)
            return NULL;
        size_t n = 0, need = 0;
        for (;;) {
            ssize_t r = read(c, request + n, sizeof request - 1 - n);
            if (r <= 0)
                break;
            n += (size_t)r;
            request[n] = 0;
            char *end = strstr(request, "\r\n\r\n");
            if (end && !need) {
                char *cl = strcasestr(request, "content-length:");
                need = (size_t)(end + 4 - request) + (cl ? strtoul(cl + 15, NULL, 10) : 0);
            }
            if (need && n >= need)
                break;
        }
        request_len = n;
        static const char head[] = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n";
        if (write(c, head, strlen(head)) < 0 || write(c, agent_streams[k], strlen(agent_streams[k])) < 0)
            perror("write");
        close(c);
    }
    return NULL;
}

static int group_setup(void **state)
{
    (void)state;
    have_tokenizer = dh_have_tokenizer();
    if (!have_tokenizer)
        return 0;
    if (dh_workdir("remote", dir, sizeof dir))
        return -1;
    snprintf(sock, sizeof sock, "%s/ctxd.sock", dir);
    snprintf(repo, sizeof repo, "%s/repo", dir);
    snprintf(logpath, sizeof logpath, "%s/ctxd.log", dir);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "git init -q %s && cd %s && git config user.email t@example.com && git config user.name T"
             " && printf 'int add(int a, int b)\\n{\\n    return a + b;\\n}\\n' > math.c && git add -A && git commit -q -m x",
             repo, repo);
    if (system(cmd) != 0)
        return -1;
    lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (bind(lfd, (struct sockaddr *)&a, sizeof a) || listen(lfd, 4) || getsockname(lfd, (struct sockaddr *)&a, &al))
        return -1;
    port = ntohs(a.sin_port);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1", port);
    setenv("TEST_API_KEY", "sekret-key", 1); /* ctxd reads the key from the variable it is told */
    char *const argv[] = {(char *)ctxd_bin, "--socket", sock, "--no-cache", "--budget", "4096", "--backend", "openai",
                          "--url", url, "--remote-model", "deepseek-v4-flash", "--api-key-env", "TEST_API_KEY", NULL};
    pid = dh_start(sock, logpath, argv);
    return pid > 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    if (lfd > 0)
        close(lfd);
    return dh_teardown(pid, dir);
}

struct notes {
    char reasoning[256], content[256];
};

static int on_note(void *ud, const char *method, const cJSON *params)
{
    struct notes *n = ud;
    if (strcmp(method, "ask.delta") == 0) {
        const char *k = cJSON_GetObjectItem(params, "kind")->valuestring;
        char *dst = strcmp(k, "reasoning") == 0 ? n->reasoning : n->content;
        strncat(dst, cJSON_GetObjectItem(params, "text")->valuestring, 255 - strlen(dst));
    }
    return 0;
}

static void answers_through_the_remote_endpoint(void **state)
{
    (void)state;
    if (!have_tokenizer)
        skip();
    pthread_t th;
    pthread_create(&th, NULL, serve, NULL);
    struct ctxd_client *c;
    struct ctx_err e = {0};
    assert_int_equal(ctxd_client_connect(sock, &c, &e), 0);
    cJSON *p = cJSON_CreateObject(), *r = NULL;
    cJSON_AddStringToObject(p, "path", repo);
    cJSON_AddBoolToObject(p, "wait", true);
    assert_int_equal(ctxd_client_call(c, "repo.open", p, NULL, NULL, 60000, &r, &e), 0);
    assert_string_equal(cJSON_GetObjectItem(r, "phase")->valuestring, "ready");
    assert_int_equal(cJSON_GetObjectItem(r, "resident_tokens")->valueint, 0); /* nothing prefilled locally */
    cJSON_Delete(r);
    p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "path", repo);
    cJSON_AddStringToObject(p, "question", "Where is add defined?");
    struct notes n = {{0}, {0}};
    int rc = ctxd_client_call(c, "repo.ask", p, on_note, &n, 60000, &r, &e);
    if (rc)
        fail_msg("repo.ask: %s", e.msg);
    pthread_join(th, NULL);
    assert_string_equal(n.reasoning, "Looking at math.c");
    assert_string_equal(n.content, "add is defined in math.c, line 1.");
    cJSON *m = cJSON_GetObjectItem(r, "message");
    assert_string_equal(cJSON_GetObjectItem(m, "content")->valuestring, "add is defined in math.c, line 1.");
    assert_string_equal(cJSON_GetObjectItem(r, "finish_reason")->valuestring, "stop");
    cJSON *u = cJSON_GetObjectItem(r, "usage");
    assert_int_equal(cJSON_GetObjectItem(u, "prompt_tokens")->valueint, 300);
    assert_int_equal(cJSON_GetObjectItem(u, "cached_tokens")->valueint, 256);
    assert_int_equal(cJSON_GetObjectItem(u, "generated_tokens")->valueint, 12);
    assert_false(cJSON_IsTrue(cJSON_GetObjectItem(r, "noise")));
    assert_non_null(strstr(cJSON_GetObjectItem(r, "model")->valuestring, "deepseek-v4-flash"));
    cJSON_Delete(r);
    ctxd_client_close(c);
    /* what the endpoint received: the repository in the first user turn, the question, streaming, the key */
    assert_non_null(strstr(request, "POST /v1/chat/completions"));
    assert_non_null(strstr(request, "Bearer sekret-key"));
    assert_non_null(strstr(request, "File: math.c"));
    assert_non_null(strstr(request, "Request: Where is add defined?"));
    assert_non_null(strstr(request, "\"stream\":true"));
    assert_non_null(strstr(request, "\"model\":\"deepseek-v4-flash\""));
}

static int on_agent_note(void *ud, const char *method, const cJSON *params)
{
    cJSON *events = ud;
    if (strcmp(method, "agent.event") == 0)
        cJSON_AddItemToArray(events, cJSON_Duplicate(params, 1));
    return 0;
}

/* agent.run on the remote backend: messages and tools go to the endpoint, its tool call runs here,
 * the result goes back in the next request, the answer ends the run. */
static void the_agent_through_the_remote_endpoint(void **state)
{
    (void)state;
    if (!have_tokenizer)
        skip();
    pthread_t th;
    pthread_create(&th, NULL, serve_agent, NULL);
    struct ctxd_client *c;
    struct ctx_err e = {0};
    assert_int_equal(ctxd_client_connect(sock, &c, &e), 0);
    cJSON *p = cJSON_CreateObject(), *r = NULL, *events = cJSON_CreateArray();
    cJSON_AddStringToObject(p, "path", repo);
    cJSON_AddStringToObject(p, "prompt", "Where is add?");
    int rc = ctxd_client_call(c, "agent.run", p, on_agent_note, events, 60000, &r, &e);
    if (rc)
        fail_msg("agent.run: %s", e.msg);
    pthread_join(th, NULL);
    ctxd_client_close(c);
    assert_string_equal(cJSON_GetObjectItem(r, "stop")->valuestring, "final");
    assert_string_equal(cJSON_GetObjectItem(r, "answer")->valuestring, "add is in math.c.");
    assert_int_equal(cJSON_GetObjectItem(r, "steps")->valueint, 2);
    cJSON *tc = cJSON_GetArrayItem(cJSON_GetObjectItem(r, "tool_calls"), 0);
    assert_string_equal(cJSON_GetObjectItem(tc, "tool")->valuestring, "find_symbol");
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(tc, "arguments"), "name")->valuestring, "add");
    assert_true(cJSON_IsFalse(cJSON_GetObjectItem(tc, "is_error")));
    cJSON *u = cJSON_GetObjectItem(r, "usage");
    assert_int_equal(cJSON_GetObjectItem(u, "prompt_tokens")->valueint, 680);
    assert_int_equal(cJSON_GetObjectItem(u, "completion_tokens")->valueint, 15);
    assert_int_equal(cJSON_GetObjectItem(r, "malformed")->valueint, 0);
    /* the streamed reasoning, then the tool's real result */
    const cJSON *ev;
    int saw_reasoning = 0, saw_result = 0;
    cJSON_ArrayForEach(ev, events) {
        const char *k = cJSON_GetObjectItem(ev, "kind")->valuestring;
        const cJSON *t = cJSON_GetObjectItem(ev, "text");
        saw_reasoning |= strcmp(k, "reasoning") == 0 && strstr(t->valuestring, "Find it.") != NULL;
        saw_result |= strcmp(k, "tool_result") == 0 && strstr(t->valuestring, "math.c:1: function add") != NULL;
    }
    assert_true(saw_reasoning);
    assert_true(saw_result);
    /* the second request carried the call and its result, with the tools declared */
    assert_non_null(strstr(request, "\"tools\":[{\"type\":\"function\""));
    assert_non_null(strstr(request, "\"name\":\"find_symbol\""));
    assert_non_null(strstr(request, "\"role\":\"tool\""));
    assert_non_null(strstr(request, "math.c:1: function add"));
    cJSON_Delete(events);
    cJSON_Delete(r);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return 2;
    ctxd_bin = argv[1];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(answers_through_the_remote_endpoint),
        cmocka_unit_test(the_agent_through_the_remote_endpoint),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
