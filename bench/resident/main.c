/* bench/resident: what the resident KV cache buys. For one repository prompt on the CPU engine and
 * the bundled default model: time to first token cold (ingest + prefill + first token), after a
 * daemon restart (restored from the KV cache), and after a one-file edit near the end of the
 * prompt (restored up to the checkpoint before it, the rest prefilled), with their ratios.
 *
 *   bench_resident CTXD [--repo PATH] [--include DIRS] [--budget TOKENS] [--runs N]
 *
 * The repository (default: this one) is cloned into a temporary folder, so that the edit never
 * touches the original, and narrowed by a .ctxignore to the top-level folders in --include
 * (comma-separated; default "common,store,scripts", about 30K tokens: what the CPU engine prefills
 * in a few minutes with the default model; "" keeps everything). Cold runs once; the restored and
 * edited cases are medians over --runs (default 3). The edit rewrites the most recently committed
 * file of the selection, which sits near the end of the prompt (files go stable -> volatile). */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../bench.h"

#include "client.h"
#include "ctx_config.h"
#include "json.h"

static const char *ctxd_bin;
static char dir[64], sock[128], cache[128], repo[128];
static pid_t pid;
static int budget = 40000;

static int sh(const char *cmd)
{
    int rc = system(cmd);
    if (rc != 0)
        fprintf(stderr, "bench_resident: command failed: %s\n", cmd);
    return rc;
}

static int start(void)
{
    char b[32];
    snprintf(b, sizeof b, "%d", budget);
    pid = fork();
    if (pid == 0) {
        int fd = open("/dev/null", O_WRONLY);
        dup2(fd, 2);
        execl(ctxd_bin, ctxd_bin, "--socket", sock, "--cache", cache, "--budget", b, "--no-watch",
              "--checkpoint-every", "1024", "--preload", (char *)NULL);
        _exit(127);
    }
    /* ready when the model is loaded: a deployment loads it once at start (--preload), so the
     * times below are the repository's, not the weights' */
    for (int i = 0; i < 3000; i++) {
        struct ctxd_client *c;
        struct ctx_err e = {0};
        if (ctxd_client_connect(sock, &c, &e) == 0) {
            cJSON *r = NULL;
            int loaded = 0;
            if (ctxd_client_call(c, "daemon.status", NULL, NULL, NULL, 5000, &r, &e) == 0)
                loaded = cJSON_IsTrue(cJSON_GetObjectItem(cJSON_GetObjectItem(r, "model"), "loaded"));
            cJSON_Delete(r);
            ctxd_client_close(c);
            if (loaded)
                return 0;
        }
        usleep(10000);
    }
    return -1;
}

static void stop(void)
{
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
}

struct first {
    double t0, first;
};

static int on_note(void *ud, const char *method, const cJSON *params)
{
    (void)params;
    struct first *f = ud;
    if (!f->first && strcmp(method, "ask.delta") == 0)
        f->first = bench_now() - f->t0;
    return 0;
}

/* open (wait) + ask for one token; returns seconds to the first token, or -1 */
static double ttft(int *prompt, int *restored, int *computed)
{
    struct ctxd_client *c;
    struct ctx_err e = {0};
    if (ctxd_client_connect(sock, &c, &e))
        return -1;
    struct first f = {bench_now(), 0};
    cJSON *p = cJSON_CreateObject(), *r = NULL;
    cJSON_AddStringToObject(p, "path", repo);
    cJSON_AddBoolToObject(p, "wait", 1);
    if (ctxd_client_call(c, "repo.open", p, NULL, NULL, 0, &r, &e)) {
        fprintf(stderr, "bench_resident: repo.open: %s\n", e.msg);
        ctxd_client_close(c);
        return -1;
    }
    *prompt = cJSON_GetObjectItem(r, "prompt_tokens")->valueint;
    *restored = cJSON_GetObjectItem(r, "restored_tokens")->valueint;
    *computed = cJSON_GetObjectItem(r, "computed_tokens")->valueint;
    cJSON_Delete(r);
    p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "path", repo);
    cJSON_AddStringToObject(p, "question", "Which file defines the entry point?");
    cJSON_AddNumberToObject(p, "max_tokens", 1);
    int rc = ctxd_client_call(c, "repo.ask", p, on_note, &f, 0, &r, &e);
    double t = bench_now() - f.t0;
    ctxd_client_close(c);
    cJSON_Delete(r);
    if (rc) {
        fprintf(stderr, "bench_resident: repo.ask: %s\n", e.msg);
        return -1;
    }
    return f.first ? f.first : t;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_resident CTXD [--repo PATH] [--budget TOKENS] [--runs N]\n");
        return 2;
    }
    ctxd_bin = argv[1];
    const char *src = CTX_SOURCE_ROOT, *include = "common,store,scripts";
    int runs = 3;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--repo") && i + 1 < argc)
            src = argv[++i];
        else if (!strcmp(argv[i], "--budget") && i + 1 < argc)
            budget = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--include") && i + 1 < argc)
            include = argv[++i];
        else if (!strcmp(argv[i], "--runs") && i + 1 < argc)
            runs = atoi(argv[++i]);
        else {
            fprintf(stderr, "bench_resident: unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    if (runs < 1 || runs > 20)
        runs = 3;
    snprintf(dir, sizeof dir, "/tmp/ctx-bench-res-XXXXXX");
    if (!mkdtemp(dir))
        return 1;
    snprintf(sock, sizeof sock, "%s/ctxd.sock", dir);
    snprintf(cache, sizeof cache, "%s/kv", dir);
    snprintf(repo, sizeof repo, "%s/repo", dir);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "git clone -q '%s' '%s'", src, repo);
    if (sh(cmd))
        return 1;
    if (include[0]) {
        /* only the chosen top-level folders: everything else is ignored */
        char ign[1024] = "/*\n";
        char inc[512];
        snprintf(inc, sizeof inc, "%s", include);
        for (char *t = strtok(inc, ","); t; t = strtok(NULL, ","))
            snprintf(ign + strlen(ign), sizeof ign - strlen(ign), "!/%s/\n", t);
        char path[256];
        snprintf(path, sizeof path, "%s/.ctxignore", repo);
        FILE *f = fopen(path, "w");
        if (!f || fputs(ign, f) < 0 || fclose(f))
            return 1;
        snprintf(cmd, sizeof cmd, "cd '%s' && git add .ctxignore && git -c user.email=b@x -c user.name=bench "
                 "commit -q -m ctxignore", repo);
        if (sh(cmd))
            return 1;
    }
    /* the file to edit: the most recently committed one in the selection */
    char target[512] = "";
    snprintf(cmd, sizeof cmd, "cd '%s' && git log --format= --name-only --diff-filter=AM -- %s | grep -v '^$' | "
             "grep -v '^\\.ctxignore$' | head -n 1", repo, include[0] ? "" : ".");
    if (include[0]) {
        char inc[512], dirs[600] = "";
        snprintf(inc, sizeof inc, "%s", include);
        for (char *t = strtok(inc, ","); t; t = strtok(NULL, ","))
            snprintf(dirs + strlen(dirs), sizeof dirs - strlen(dirs), "'%s' ", t);
        snprintf(cmd, sizeof cmd, "cd '%s' && git log --format= --name-only --diff-filter=AM -- %s | grep -v '^$' | "
                 "head -n 1", repo, dirs);
    }
    FILE *pf = popen(cmd, "r");
    if (!pf || !fgets(target, sizeof target, pf)) {
        fprintf(stderr, "bench_resident: no file to edit\n");
        return 1;
    }
    pclose(pf);
    target[strcspn(target, "\n")] = 0;
    double cold = 0, warm[20], edit[20];
    int prompt = 0, restored = 0, computed = 0, w_prompt = 0, w_restored = 0, w_computed = 0, e_prompt = 0,
        e_restored = 0, e_computed = 0;
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", cache);
    if (sh(cmd) || start())
        return 1;
    cold = ttft(&prompt, &restored, &computed);
    stop();
    for (int r = 0; r < runs; r++) {
        snprintf(cmd, sizeof cmd, "cd '%s' && git checkout -q -- .", repo);
        if (sh(cmd) || start())
            return 1;
        warm[r] = ttft(&w_prompt, &w_restored, &w_computed);
        stop();
        /* the edit: one more line in the target file */
        snprintf(cmd, sizeof cmd, "cd '%s' && printf '\\n/* edited %d */\\n' >> '%s'", repo, r, target);
        if (sh(cmd) || start())
            return 1;
        edit[r] = ttft(&e_prompt, &e_restored, &e_computed);
        stop();
        if (cold < 0 || warm[r] < 0 || edit[r] < 0)
            return 1;
    }
    double mc = cold, mw = bench_median(warm, runs), me = bench_median(edit, runs);
    printf("bench/resident: %s narrowed to {%s} (%d prompt tokens, budget %d), bundled default model, "
           "cold once, others median of %d; edited %s\n", src, include, prompt, budget, runs, target);
    printf("%-30s %10s %10s %10s %10s %10s\n", "case", "TTFT s", "prompt", "restored", "computed", "cold/this");
    printf("%-30s %10.3f %10d %10d %10d %10.1f\n", "cold (ingest + prefill)", mc, prompt, restored, computed, 1.0);
    printf("%-30s %10.3f %10d %10d %10d %10.1f\n", "restart, restored from disk", mw, w_prompt, w_restored,
           w_computed, mc / mw);
    printf("%-30s %10.3f %10d %10d %10d %10.1f\n", "one-file edit near the end", me, e_prompt, e_restored,
           e_computed, mc / me);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    sh(cmd);
    return 0;
}
