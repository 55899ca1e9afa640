/* Test helper: build git repositories with the git CLI in a fresh temporary folder. Each test
 * program includes this once. Commit dates are fixed so that churn and layouts are reproducible. */
#ifndef TESTS_REPO_GITREPO_H
#define TESTS_REPO_GITREPO_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char tr_root[512];

/* A private HOME and fixed identity so that the user's git config cannot change the results. */
static int tr_init(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(tr_root, sizeof tr_root, "%s/ctx-repo-test-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    if (!mkdtemp(tr_root)) return -1;
    setenv("HOME", tr_root, 1);
    setenv("GIT_CONFIG_NOSYSTEM", "1", 1);
    setenv("GIT_AUTHOR_NAME", "Test", 1);
    setenv("GIT_AUTHOR_EMAIL", "t@example.com", 1);
    setenv("GIT_COMMITTER_NAME", "Test", 1);
    setenv("GIT_COMMITTER_EMAIL", "t@example.com", 1);
    unsetenv("GIT_DIR");
    unsetenv("GIT_WORK_TREE");
    char cfg[700];
    snprintf(cfg, sizeof cfg,
             "git config --global init.defaultBranch main && git config --global protocol.file.allow always"
             " && git config --global core.autocrlf false");
    return system(cfg) == 0 ? 0 : -1;
}

static void tr_cleanup(void)
{
    if (!tr_root[0]) return;
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "chown -R %u %s 2>/dev/null; rm -rf '%s'", (unsigned)geteuid(), tr_root, tr_root);
    if (system(cmd) != 0) fprintf(stderr, "# could not remove %s\n", tr_root);
}

/* Run a shell command in directory `dir` under tr_root ("" for tr_root itself); fails the test
 * program on error. */
static void tr_sh(const char *dir, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void tr_sh(const char *dir, const char *fmt, ...)
{
    char body[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(body, sizeof body, fmt, ap);
    va_end(ap);
    char cmd[8192 + 1200];
    snprintf(cmd, sizeof cmd, "set -e; mkdir -p '%s/%s'; cd '%s/%s'; %s", tr_root, dir, tr_root, dir, body);
    int rc = system(cmd);
    if (rc != 0) {
        fprintf(stderr, "# command failed (%d): %s\n", rc, body);
        exit(1);
    }
}

/* Write a file (creating folders) under tr_root/dir. */
static void tr_write(const char *dir, const char *path, const char *data, size_t len)
{
    char full[1200];
    snprintf(full, sizeof full, "%s/%s/%s", tr_root, dir, path);
    for (char *p = full + strlen(tr_root) + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            mkdir(full, 0755);
            *p = '/';
        }
    FILE *f = fopen(full, "wb");
    if (!f || fwrite(data, 1, len, f) != len || fclose(f) != 0) {
        fprintf(stderr, "# cannot write %s\n", full);
        exit(1);
    }
}

static void tr_puts(const char *dir, const char *path, const char *text) { tr_write(dir, path, text, strlen(text)); }

/* Commit everything staged with a fixed date (seconds since the epoch). */
static void tr_commit(const char *dir, long when, const char *msg)
{
    tr_sh(dir, "GIT_AUTHOR_DATE='%ld +0000' GIT_COMMITTER_DATE='%ld +0000' git commit -q -m '%s'", when, when, msg);
}

static char *tr_path(const char *dir)
{
    static char buf[4][1024];
    static int k;
    k = (k + 1) & 3;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tr_root, dir);
    return buf[k];
}

#endif
