/* ctx hook install|uninstall|status|run: the git pre-commit hook (issue 9; cli/README.md,
 * "Pre-commit hook").
 *
 * install writes <hooks dir>/pre-commit (core.hooksPath honoured through `git rev-parse
 * --git-path hooks`), a small sh script that runs a chained earlier hook (kept as
 * pre-commit.ctx-backup by --force) and then `ctx hook run`. run reviews the staged changes with
 * `ctx review --staged --fail-on LEVEL` in a child process bounded by a deadline: a review that
 * cannot finish in time (no daemon, a slow engine, a daemon that never answers) gives up with a
 * message and lets the commit through unless ctx.hookStrict is true, so a broken model never
 * makes committing impossible. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "client.h"
#include "commands.h"
#include "util.h"

/* The line that marks a hook as ctx's own (install rewrites it, uninstall removes it). */
#define HOOK_MARK "# ctx-hook: installed by `ctx hook install`"
#define BACKUP_NAME "pre-commit.ctx-backup"
#define DEFAULT_TIMEOUT_S 120.0

static void usage(FILE *f)
{
    fprintf(f, "usage: ctx hook install [--force] | uninstall | status [--json] | run [--timeout SECONDS] "
               "[--fail-on error|warning|info|never]\n"
               "  install    write .git/hooks/pre-commit (or core.hooksPath's) running `ctx hook run`;\n"
               "             --force keeps an existing foreign hook as " BACKUP_NAME " and runs it first\n"
               "  uninstall  remove ctx's hook (restoring a kept foreign hook)\n"
               "  status     where the hook lives, whether it is ctx's, the settings in effect\n"
               "  run        review the staged changes: exit 1 (commit blocked) on findings at or above\n"
               "             git config ctx.failOn (default error); gives up after ctx.hookTimeout or\n"
               "             CTX_HOOK_TIMEOUT seconds (default 120) with exit 0 unless ctx.hookStrict;\n"
               "             SKIP=ctx or CTX_HOOK=0 skips it\n");
}

/* ---- git ---- */

/* Run `git ARGS...` and return its first output line (malloc'd, newline removed), or NULL when git
 * fails or prints nothing (an unset config key). */
static char *git_line(const char *const *args)
{
    int fd[2];
    if (pipe(fd) != 0)
        return NULL;
    pid_t pid = fork();
    if (pid < 0) {
        close(fd[0]);
        close(fd[1]);
        return NULL;
    }
    if (pid == 0) {
        dup2(fd[1], 1);
        close(fd[0]);
        close(fd[1]);
        int dn = open("/dev/null", O_WRONLY);
        if (dn >= 0)
            dup2(dn, 2);
        const char *argv[16] = {"git"};
        size_t n = 1;
        for (; args[n - 1] && n < 15; n++)
            argv[n] = args[n - 1];
        argv[n] = NULL;
        execvp("git", (char **)argv);
        _exit(127);
    }
    close(fd[1]);
    char buf[PATH_MAX + 64];
    size_t len = 0;
    ssize_t r;
    while ((r = read(fd[0], buf + len, sizeof buf - 1 - len)) > 0 || (r < 0 && errno == EINTR))
        if (r > 0)
            len += (size_t)r;
    close(fd[0]);
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        return NULL;
    buf[len] = 0;
    buf[strcspn(buf, "\n")] = 0;
    if (!buf[0])
        return NULL;
    return strdup(buf);
}

static char *git_config(const char *key, const char *type)
{
    if (type) {
        const char *a[] = {"config", type, "--get", key, NULL};
        return git_line(a);
    }
    const char *a[] = {"config", "--get", key, NULL};
    return git_line(a);
}

/* The directory git runs hooks from: core.hooksPath when set, else <git dir>/hooks (also right
 * for worktrees and submodules, whose git dir is elsewhere). */
static char *hooks_dir(void)
{
    const char *a[] = {"rev-parse", "--path-format=absolute", "--git-path", "hooks", NULL};
    return git_line(a);
}

/* ---- files ---- */

static char *read_small(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = malloc(65537);
    size_t n = buf ? fread(buf, 1, 65536, f) : 0;
    fclose(f);
    if (buf)
        buf[n] = 0;
    return buf;
}

static bool is_ours(const char *path)
{
    char *s = read_small(path);
    bool ours = s && strstr(s, HOOK_MARK) != NULL;
    free(s);
    return ours;
}

static bool exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

/* Write text to path atomically (temp file in the same directory, fsync, rename), mode 0755. */
static int write_hook(const char *path, const char *text)
{
    char tmp[PATH_MAX + 64];
    snprintf(tmp, sizeof tmp, "%s.ctx-tmpXXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0)
        return -1;
    size_t len = strlen(text), off = 0;
    while (off < len) {
        ssize_t w = write(fd, text + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            close(fd);
            unlink(tmp);
            return -1;
        }
        off += (size_t)w;
    }
    if (fchmod(fd, 0755) != 0 || fsync(fd) != 0 || close(fd) != 0 || rename(tmp, path) != 0) {
        int saved = errno;
        unlink(tmp);
        errno = saved;
        return -1;
    }
    return 0;
}

/* The script. The absolute path of this ctx is recorded (hooks run with git's PATH, which may not
 * have it); `ctx` on PATH is the fallback when that binary moved. */
static char *hook_text(void)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0)
        snprintf(self, sizeof self, "ctx");
    else
        self[n] = 0;
    /* Single-quote the path for sh. */
    char q[2 * PATH_MAX + 8];
    size_t o = 0;
    q[o++] = '\'';
    for (const char *c = self; *c && o < sizeof q - 6; c++) {
        if (*c == '\'') {
            memcpy(q + o, "'\\''", 4);
            o += 4;
        } else {
            q[o++] = *c;
        }
    }
    q[o++] = '\'';
    q[o] = 0;
    char *s = NULL;
    if (asprintf(&s,
                 "#!/bin/sh\n"
                 HOOK_MARK "; remove it with `ctx hook uninstall`.\n"
                 "# Reviews the staged changes with ctx before each commit; see `ctx hook --help`.\n"
                 "# Skip once: SKIP=ctx git commit ... (or CTX_HOOK=0, or git commit --no-verify).\n"
                 "hookdir=$(dirname \"$0\")\n"
                 "if [ -x \"$hookdir/" BACKUP_NAME "\" ]; then\n"
                 "    \"$hookdir/" BACKUP_NAME "\" \"$@\" || exit $?\n"
                 "fi\n"
                 "ctx=%s\n"
                 "[ -x \"$ctx\" ] || ctx=ctx\n"
                 "exec \"$ctx\" hook run\n",
                 q) < 0)
        return NULL;
    return s;
}

static int paths(char **dir, char *hook, size_t hcap, char *backup, size_t bcap)
{
    *dir = hooks_dir();
    if (!*dir) {
        fprintf(stderr, "ctx hook: not inside a git repository (git rev-parse --git-path hooks failed)\n");
        return 1;
    }
    snprintf(hook, hcap, "%s/pre-commit", *dir);
    snprintf(backup, bcap, "%s/" BACKUP_NAME, *dir);
    return 0;
}

static int mkdir_p(const char *dir)
{
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s", dir);
    for (char *c = p + 1; *c; c++) {
        if (*c != '/')
            continue;
        *c = 0;
        if (mkdir(p, 0755) != 0 && errno != EEXIST)
            return -1;
        *c = '/';
    }
    if (mkdir(p, 0755) != 0 && errno != EEXIST)
        return -1;
    return 0;
}

static int hook_install(int argc, char **argv)
{
    bool force = false;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--force") == 0 || strcmp(argv[i], "-f") == 0) {
            force = true;
        } else {
            fprintf(stderr, "ctx hook: install: unknown option \"%s\"\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    char *dir, hook[PATH_MAX + 32], backup[PATH_MAX + 32];
    if (paths(&dir, hook, sizeof hook, backup, sizeof backup))
        return 1;
    int rc = 1;
    char *text = hook_text();
    char *cur = NULL;
    if (!text) {
        fprintf(stderr, "ctx hook: out of memory\n");
        goto out;
    }
    if (mkdir_p(dir) != 0) {
        fprintf(stderr, "ctx hook: cannot create %s: %s\n", dir, strerror(errno));
        goto out;
    }
    if (exists(hook) && !is_ours(hook)) {
        if (!force) {
            fprintf(stderr,
                    "ctx hook: %s exists and is not ctx's; not overwritten. Use `ctx hook install --force` to keep "
                    "it as %s and run it before ctx's review.\n",
                    hook, BACKUP_NAME);
            goto out;
        }
        if (exists(backup)) {
            fprintf(stderr, "ctx hook: %s exists already; move it away first (it would be lost)\n", backup);
            goto out;
        }
        if (rename(hook, backup) != 0) {
            fprintf(stderr, "ctx hook: cannot rename %s to %s: %s\n", hook, backup, strerror(errno));
            goto out;
        }
        printf("kept the existing hook as %s (it runs first)\n", backup);
    }
    cur = read_small(hook);
    if (cur && strcmp(cur, text) == 0) {
        printf("ctx's pre-commit hook is already installed in %s\n", hook);
        rc = 0;
        goto out;
    }
    if (write_hook(hook, text) != 0) {
        fprintf(stderr, "ctx hook: cannot write %s: %s\n", hook, strerror(errno));
        goto out;
    }
    printf("installed %s: commits run `ctx review --staged` (skip one with SKIP=ctx)\n", hook);
    rc = 0;
out:
    free(cur);
    free(text);
    free(dir);
    return rc;
}

static int hook_uninstall(int argc)
{
    if (argc > 2) {
        usage(stderr);
        return 2;
    }
    char *dir, hook[PATH_MAX + 32], backup[PATH_MAX + 32];
    if (paths(&dir, hook, sizeof hook, backup, sizeof backup))
        return 1;
    int rc = 1;
    if (!exists(hook)) {
        printf("no pre-commit hook in %s: nothing to do\n", dir);
        rc = 0;
    } else if (!is_ours(hook)) {
        fprintf(stderr, "ctx hook: %s is not ctx's hook; left alone\n", hook);
    } else if (unlink(hook) != 0) {
        fprintf(stderr, "ctx hook: cannot remove %s: %s\n", hook, strerror(errno));
    } else {
        rc = 0;
        if (exists(backup)) {
            if (rename(backup, hook) != 0) {
                fprintf(stderr, "ctx hook: removed ctx's hook but cannot restore %s: %s\n", backup, strerror(errno));
                rc = 1;
            } else {
                printf("removed ctx's hook; restored the previous hook from %s\n", BACKUP_NAME);
            }
        } else {
            printf("removed %s\n", hook);
        }
    }
    free(dir);
    return rc;
}

/* ---- settings ---- */

struct settings {
    char fail_on[16];
    double timeout_s;
    const char *timeout_from; /* "default", "ctx.hookTimeout", "CTX_HOOK_TIMEOUT", "--timeout" */
    bool strict;
};

static bool valid_level(const char *s)
{
    return !strcmp(s, "error") || !strcmp(s, "warning") || !strcmp(s, "info") || !strcmp(s, "never");
}

static int parse_timeout(const char *s, const char *from, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    while (*end == ' ')
        end++;
    if (end == s || *end || errno || !(v > 0) || !isfinite(v) || v > 86400) {
        fprintf(stderr, "ctx hook: %s is \"%s\": expected a number of seconds (0 < t <= 86400)\n", from, s);
        return 2;
    }
    *out = v;
    return 0;
}

/* Precedence: the command line, then the environment, then git config, then the defaults. */
static int load_settings(struct settings *st, const char *opt_fail_on, const char *opt_timeout)
{
    snprintf(st->fail_on, sizeof st->fail_on, "error");
    st->timeout_s = DEFAULT_TIMEOUT_S;
    st->timeout_from = "default";
    st->strict = false;
    char *v = git_config("ctx.failOn", NULL);
    const char *fo = opt_fail_on ? opt_fail_on : v;
    if (fo) {
        if (!valid_level(fo)) {
            fprintf(stderr, "ctx hook: %s is \"%s\": expected error, warning, info or never\n",
                    opt_fail_on ? "--fail-on" : "git config ctx.failOn", fo);
            free(v);
            return 2;
        }
        snprintf(st->fail_on, sizeof st->fail_on, "%s", fo);
    }
    free(v);
    const char *env = getenv("CTX_HOOK_TIMEOUT");
    v = git_config("ctx.hookTimeout", NULL);
    int rc = 0;
    if (opt_timeout) {
        rc = parse_timeout(opt_timeout, "--timeout", &st->timeout_s);
        st->timeout_from = "--timeout";
    } else if (env && env[0]) {
        rc = parse_timeout(env, "CTX_HOOK_TIMEOUT", &st->timeout_s);
        st->timeout_from = "CTX_HOOK_TIMEOUT";
    } else if (v) {
        rc = parse_timeout(v, "git config ctx.hookTimeout", &st->timeout_s);
        st->timeout_from = "ctx.hookTimeout";
    }
    free(v);
    if (rc)
        return rc;
    v = git_config("ctx.hookStrict", "--bool");
    st->strict = v && strcmp(v, "true") == 0;
    free(v);
    return 0;
}

static int hook_status(int argc, char **argv, const struct ctx_cli *cli)
{
    bool json = cli->json || ctx_cli_has_flag(argc, argv, "--json");
    char *dir, hook[PATH_MAX + 32], backup[PATH_MAX + 32];
    if (paths(&dir, hook, sizeof hook, backup, sizeof backup))
        return 1;
    struct settings st;
    int rc = load_settings(&st, NULL, NULL);
    if (rc) {
        free(dir);
        return rc;
    }
    const char *state = !exists(hook) ? "absent" : is_ours(hook) ? "installed" : "foreign";
    bool chained = exists(backup);
    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "hook", hook);
        cJSON_AddStringToObject(o, "state", state);
        cJSON_AddBoolToObject(o, "chained", chained);
        cJSON_AddStringToObject(o, "fail_on", st.fail_on);
        cJSON_AddNumberToObject(o, "timeout_s", st.timeout_s);
        cJSON_AddStringToObject(o, "timeout_from", st.timeout_from);
        cJSON_AddBoolToObject(o, "strict", st.strict);
        ctx_cli_print_json(o);
        cJSON_Delete(o);
    } else {
        printf("hook:     %s (%s%s)\n", hook,
               !strcmp(state, "installed") ? "ctx's hook" : !strcmp(state, "foreign") ? "another tool's hook" : "none",
               chained ? ", chained to " BACKUP_NAME : "");
        printf("fail on:  %s\n", st.fail_on);
        printf("timeout:  %g s (%s)\n", st.timeout_s, st.timeout_from);
        printf("strict:   %s\n", st.strict ? "yes (a review that cannot finish blocks the commit)"
                                           : "no (a review that cannot finish lets the commit through)");
    }
    free(dir);
    return 0;
}

/* ---- run ---- */

static bool skip_requested(const char **why)
{
    const char *skip = getenv("SKIP"); /* the pre-commit framework's list of hook ids to skip */
    if (skip) {
        const char *p = skip;
        while (*p) {
            while (*p == ',' || *p == ' ')
                p++;
            size_t n = strcspn(p, ", ");
            if (n == 3 && strncmp(p, "ctx", 3) == 0) {
                *why = "SKIP=ctx";
                return true;
            }
            p += n;
        }
    }
    const char *h = getenv("CTX_HOOK");
    if (h && (!strcmp(h, "0") || !strcasecmp(h, "false") || !strcasecmp(h, "no") || !strcasecmp(h, "off"))) {
        *why = "CTX_HOOK=0";
        return true;
    }
    return false;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The review child: make sure a daemon runs (starting one when needed, like every ctx command),
 * then become `ctx review --staged --fail-on LEVEL`. Exit 3 when no daemon can be had. */
static void run_child(const struct ctx_cli *cli, const char *fail_on)
{
    struct ctxd_client *c = NULL;
    struct ctx_err e = {0};
    if (ctxd_client_connect_or_spawn(cli->ctxd_path, cli->socket_path, &c, &e) != 0) {
        fprintf(stderr, "ctx hook: cannot reach or start ctxd: %s\n", e.msg);
        _exit(3);
    }
    ctxd_client_close(c);
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0)
        snprintf(self, sizeof self, "ctx");
    else
        self[n] = 0;
    char *argv[] = {self, "--socket", (char *)cli->socket_path, "--ctxd", (char *)cli->ctxd_path, "review",
                    "--staged", "--fail-on", (char *)fail_on, NULL};
    execvp(self, argv);
    fprintf(stderr, "ctx hook: cannot run %s: %s\n", self, strerror(errno));
    _exit(3);
}

static int give_up(const struct settings *st, const char *what)
{
    if (st->strict) {
        fprintf(stderr, "ctx hook: %s; commit blocked because ctx.hookStrict is true (SKIP=ctx to commit anyway)\n",
                what);
        return 1;
    }
    fprintf(stderr, "ctx hook: %s; commit allowed without a review (set ctx.hookStrict=true to block instead)\n",
            what);
    return 0;
}

static int hook_run(int argc, char **argv, const struct ctx_cli *cli)
{
    const char *opt_timeout = NULL, *opt_fail_on = NULL;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc) {
            opt_timeout = argv[++i];
        } else if (strcmp(argv[i], "--fail-on") == 0 && i + 1 < argc) {
            opt_fail_on = argv[++i];
        } else {
            fprintf(stderr, "ctx hook: run: unknown option \"%s\"\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    const char *why;
    if (skip_requested(&why)) {
        fprintf(stderr, "ctx hook: review skipped (%s)\n", why);
        return 0;
    }
    struct settings st;
    int rc = load_settings(&st, opt_fail_on, opt_timeout);
    if (rc)
        return rc;
    if (!strcmp(st.fail_on, "never"))
        fprintf(stderr, "ctx hook: ctx.failOn is never: findings are reported, the commit is not blocked\n");
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "ctx hook: fork: %s\n", strerror(errno));
        return give_up(&st, "the review could not be started");
    }
    if (pid == 0) {
        /* Own process group, so the deadline can stop the review and anything it started (a
         * daemon it spawns leaves the group by itself: ctxd --daemon detaches). */
        setpgid(0, 0);
        run_child(cli, st.fail_on);
    }
    setpgid(pid, pid);
    double deadline = now_s() + st.timeout_s;
    int status = 0;
    for (;;) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid)
            break;
        if (w < 0 && errno != EINTR) {
            fprintf(stderr, "ctx hook: waitpid: %s\n", strerror(errno));
            return give_up(&st, "the review was lost");
        }
        if (now_s() >= deadline) {
            kill(-pid, SIGTERM);
            double grace = now_s() + 2;
            while (waitpid(pid, &status, WNOHANG) == 0 && now_s() < grace)
                nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
            kill(-pid, SIGKILL);
            waitpid(pid, &status, 0);
            char msg[160];
            snprintf(msg, sizeof msg, "the review did not finish within %g s (%s)", st.timeout_s,
                     !strcmp(st.timeout_from, "default") ? "default; set git config ctx.hookTimeout"
                                                         : st.timeout_from);
            return give_up(&st, msg);
        }
        nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
    }
    if (!WIFEXITED(status)) {
        char msg[64];
        snprintf(msg, sizeof msg, "the review was killed by signal %d", WIFSIGNALED(status) ? WTERMSIG(status) : 0);
        return give_up(&st, msg);
    }
    switch (WEXITSTATUS(status)) {
    case 0: return 0;
    case 1:
        fprintf(stderr,
                "ctx hook: commit blocked: findings at or above \"%s\" (git config ctx.failOn). Fix them, or commit "
                "anyway with SKIP=ctx git commit ... / git commit --no-verify\n",
                st.fail_on);
        return 1;
    default: {
        char msg[96];
        snprintf(msg, sizeof msg, "the review failed (ctx review exited %d)", WEXITSTATUS(status));
        return give_up(&st, msg);
    }
    }
}

int ctx_cmd_hook(int argc, char **argv, const struct ctx_cli *cli)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "install"))
        return hook_install(argc, argv);
    if (!strcmp(argv[1], "uninstall"))
        return hook_uninstall(argc);
    if (!strcmp(argv[1], "status"))
        return hook_status(argc, argv, cli);
    if (!strcmp(argv[1], "run"))
        return hook_run(argc, argv, cli);
    fprintf(stderr, "ctx hook: unknown subcommand \"%s\"\n", argv[1]);
    usage(stderr);
    return 2;
}
