/* Command policy and the sandboxed runner (sandbox.h). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "sandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/capability.h>
#include <linux/securebits.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "json.h"

/* ---- policy ------------------------------------------------------------------------------ */

struct agent_policy {
    char **allow, **ask, **deny;
    size_t nallow, nask, ndeny;
    enum agent_decision def, fallback;
};

static char *default_deny[] = {
    "rm -rf /", "rm -rf /*", "rm -rf ~*", "*mkfs*", "*dd if=*of=/dev/*", "*:(){*", "sudo *",
    "su *", "*shutdown*", "*reboot*", "git push*", "git reset --hard*", "git clean *",
};

static const struct agent_policy default_policy = {
    .deny = default_deny,
    .ndeny = sizeof default_deny / sizeof default_deny[0],
    .def = AGENT_ASK,
    .fallback = AGENT_DENY,
};

const struct agent_policy *agent_policy_default(void) { return &default_policy; }

const char *agent_decision_name(enum agent_decision d)
{
    switch (d) {
    case AGENT_ALLOW: return "allow";
    case AGENT_ASK: return "ask";
    case AGENT_DENY: return "deny";
    }
    return "?";
}

static int decision_of(const char *s, enum agent_decision *d)
{
    if (!strcmp(s, "allow"))
        *d = AGENT_ALLOW;
    else if (!strcmp(s, "ask"))
        *d = AGENT_ASK;
    else if (!strcmp(s, "deny"))
        *d = AGENT_DENY;
    else
        return -1;
    return 0;
}

static int load_list(const cJSON *j, const char *field, char ***out, size_t *n, struct ctx_err *e)
{
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(j, field);
    if (!a)
        return 0;
    if (!cJSON_IsArray(a))
        return ctx_err_set(e, CTX_EINVAL, "policy: \"%s\" must be an array of strings", field);
    size_t k = (size_t)cJSON_GetArraySize(a), i = 0;
    if (!(*out = calloc(k ? k : 1, sizeof **out)))
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    for (const cJSON *it = a->child; it; it = it->next, i++) {
        if (!cJSON_IsString(it))
            return ctx_err_set(e, CTX_EINVAL, "policy: %s[%zu] must be a string", field, i);
        if (!((*out)[i] = strdup(it->valuestring)))
            return ctx_err_set(e, CTX_ENOMEM, "out of memory");
        *n = i + 1;
    }
    return 0;
}

int agent_policy_parse(const char *json, size_t len, struct agent_policy **out, struct ctx_err *e)
{
    *out = NULL;
    cJSON *j = ctx_json_parse(json, len, "policy", e);
    if (!j)
        return e ? (e->code ? e->code : CTX_EFORMAT) : CTX_EFORMAT;
    int rc = 0;
    struct agent_policy *p = calloc(1, sizeof *p);
    if (!p) {
        cJSON_Delete(j);
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    }
    p->def = AGENT_ASK;
    p->fallback = AGENT_DENY;
    if (!cJSON_IsObject(j))
        rc = ctx_err_set(e, CTX_EINVAL, "policy: the top level must be an object");
    for (const cJSON *it = j->child; !rc && it; it = it->next) {
        const char *k = it->string;
        if (!strcmp(k, "allow") || !strcmp(k, "ask") || !strcmp(k, "deny"))
            continue;
        if (!strcmp(k, "default") || !strcmp(k, "fallback")) {
            enum agent_decision d;
            if (!cJSON_IsString(it) || decision_of(it->valuestring, &d))
                rc = ctx_err_set(e, CTX_EINVAL, "policy: \"%s\" must be \"allow\", \"ask\" or \"deny\"", k);
            else if (!strcmp(k, "default"))
                p->def = d;
            else
                p->fallback = d;
            continue;
        }
        rc = ctx_err_set(e, CTX_EINVAL, "policy: unknown field \"%s\" (allowed: allow, ask, deny, "
                                        "default, fallback)", k);
    }
    if (!rc)
        rc = load_list(j, "allow", &p->allow, &p->nallow, e);
    if (!rc)
        rc = load_list(j, "ask", &p->ask, &p->nask, e);
    if (!rc)
        rc = load_list(j, "deny", &p->deny, &p->ndeny, e);
    cJSON_Delete(j);
    if (rc) {
        agent_policy_free(p);
        return rc;
    }
    *out = p;
    return 0;
}

int agent_policy_load(const char *path, struct agent_policy **out, struct ctx_err *e)
{
    char *buf;
    size_t len;
    int rc = ctx_read_file(path, 1 << 20, &buf, &len, e);
    if (rc)
        return rc;
    rc = agent_policy_parse(buf, len, out, e);
    free(buf);
    if (rc)
        ctx_err_prefix(e, "%s", path);
    return rc;
}

static void free_list(char **l, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(l[i]);
    free(l);
}

void agent_policy_free(struct agent_policy *p)
{
    if (!p || p == &default_policy)
        return;
    free_list(p->allow, p->nallow);
    free_list(p->ask, p->nask);
    free_list(p->deny, p->ndeny);
    free(p);
}

static const char *match_any(char *const *l, size_t n, const char *cmd)
{
    for (size_t i = 0; i < n; i++)
        if (fnmatch(l[i], cmd, 0) == 0)
            return l[i];
    return NULL;
}

enum agent_decision agent_policy_decide(const struct agent_policy *p, const char *command,
                                        const char **pattern)
{
    const char *m;
    if (!p)
        p = &default_policy;
    if (pattern)
        *pattern = NULL;
    /* Leading white space would let " rm -rf /" slip past "rm -rf /"; compare trimmed. */
    while (*command == ' ' || *command == '\t' || *command == '\n')
        command++;
    if ((m = match_any(p->deny, p->ndeny, command))) {
        if (pattern)
            *pattern = m;
        return AGENT_DENY;
    }
    if ((m = match_any(p->ask, p->nask, command))) {
        if (pattern)
            *pattern = m;
        return AGENT_ASK;
    }
    if ((m = match_any(p->allow, p->nallow, command))) {
        if (pattern)
            *pattern = m;
        return AGENT_ALLOW;
    }
    return p->def;
}

enum agent_decision agent_policy_fallback(const struct agent_policy *p)
{
    return (p ? p : &default_policy)->fallback;
}

/* ---- namespaces -------------------------------------------------------------------------- */

#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif
#ifndef MOUNT_ATTR_RDONLY
#define MOUNT_ATTR_RDONLY 0x00000001
struct mount_attr {
    uint64_t attr_set, attr_clr, propagation, userns_fd;
};
#endif
#ifndef AT_RECURSIVE
#define AT_RECURSIVE 0x8000
#endif

static int set_ro(const char *path, bool ro)
{
    struct mount_attr a = {0};
    if (ro)
        a.attr_set = MOUNT_ATTR_RDONLY;
    else
        a.attr_clr = MOUNT_ATTR_RDONLY;
    return (int)syscall(SYS_mount_setattr, AT_FDCWD, path, AT_RECURSIVE, &a, sizeof a);
}

static int write_str(const char *path, const char *s)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = write(fd, s, strlen(s));
    close(fd);
    return n == (ssize_t)strlen(s) ? 0 : -1;
}

/* Enter a user namespace (plus `extra` namespaces) mapping our ids to `inside`. */
static int enter_userns(int extra, uid_t inside_uid, gid_t inside_gid)
{
    uid_t uid = getuid();
    gid_t gid = getgid();
    if (unshare(CLONE_NEWUSER | extra) != 0)
        return -1;
    char m[64];
    if (write_str("/proc/self/setgroups", "deny") != 0)
        return -1;
    snprintf(m, sizeof m, "%u %u 1\n", (unsigned)inside_uid, (unsigned)uid);
    if (write_str("/proc/self/uid_map", m) != 0)
        return -1;
    snprintf(m, sizeof m, "%u %u 1\n", (unsigned)inside_gid, (unsigned)gid);
    if (write_str("/proc/self/gid_map", m) != 0)
        return -1;
    return 0;
}

static bool is_dir(const char *p)
{
    struct stat st;
    return lstat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* In the child: build the mount view. Returns a short static reason on failure. */
static const char *setup_mounts(const char *root)
{
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
        return "making mounts private";
    if (mount(root, root, NULL, MS_BIND | MS_REC, NULL) != 0)
        return "bind-mounting the repository";
    if (set_ro("/", true) != 0)
        return "remounting / read-only (mount_setattr)";
    if (set_ro(root, false) != 0)
        return "remounting the repository writable";
    /* /proc stays writable until the nested namespace's id maps are written (lock_down makes it
     * read-only again, and the command has no capability left to undo that). */
    if (access("/proc/self/uid_map", F_OK) == 0 && set_ro("/proc", false) != 0)
        return "keeping /proc writable for the id maps";
    char p[4096];
    const char *ro_dirs[] = {".git", ".ctx"};
    for (size_t i = 0; i < 2; i++) {
        snprintf(p, sizeof p, "%s/%s", root, ro_dirs[i]);
        if (!is_dir(p))
            continue;
        if (mount(p, p, NULL, MS_BIND | MS_REC, NULL) != 0 || set_ro(p, true) != 0)
            return "protecting .git/.ctx";
    }
    size_t rl = strlen(root);
    bool under_tmp = !strncmp(root, "/tmp", 4) && (rl == 4 || root[4] == '/');
    if (!under_tmp && is_dir("/tmp") &&
        mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "size=268435456,mode=1777") != 0)
        return "mounting a private /tmp";
    return NULL;
}

/* After the nested namespace: /proc read-only, then no capabilities at all, for good (securebits
 * locked so that exec as uid 0 does not give them back), and no new privileges. */
static int lock_down(void)
{
    if (access("/proc/self/uid_map", F_OK) == 0 && set_ro("/proc", true) != 0)
        return -1;
    for (int c = 0; c < 64; c++)
        if (prctl(PR_CAPBSET_DROP, c, 0, 0, 0) != 0 && errno != EINVAL)
            return -1;
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
    if (prctl(PR_SET_SECUREBITS, SECBIT_KEEP_CAPS_LOCKED | SECBIT_NO_SETUID_FIXUP |
                                     SECBIT_NO_SETUID_FIXUP_LOCKED | SECBIT_NOROOT |
                                     SECBIT_NOROOT_LOCKED, 0, 0, 0) != 0)
        return -1;
    struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct d[2];
    memset(d, 0, sizeof d);
    if (syscall(SYS_capset, &h, d) != 0)
        return -1;
    return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
}

bool agent_sandbox_probe(char *why, size_t why_len)
{
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) != 0) {
        snprintf(why, why_len, "pipe: %s", strerror(errno));
        return false;
    }
    pid_t pid = fork();
    if (pid < 0) {
        close(pfd[0]);
        close(pfd[1]);
        snprintf(why, why_len, "fork: %s", strerror(errno));
        return false;
    }
    if (pid == 0) {
        close(pfd[0]);
        char msg[256] = "";
        char tmp[] = "/";
        const char *step = NULL;
        if (enter_userns(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID, 0, 0) != 0)
            step = "unshare(user, mount, net, pid namespaces)";
        else if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
            step = "making mounts private";
        else if (set_ro(tmp, true) != 0)
            step = "mount_setattr";
        else if (access("/proc/self/uid_map", F_OK) == 0 && set_ro("/proc", false) != 0)
            step = "keeping /proc writable";
        else if (enter_userns(CLONE_NEWNS, 0, 0) != 0)
            step = "nested user namespace";
        else if (lock_down() != 0)
            step = "dropping capabilities";
        if (step) {
            snprintf(msg, sizeof msg, "%s: %s", step, strerror(errno));
            ssize_t w = write(pfd[1], msg, strlen(msg));
            (void)w;
            _exit(1);
        }
        _exit(0);
    }
    close(pfd[1]);
    char buf[256];
    ssize_t n = read(pfd[0], buf, sizeof buf - 1);
    close(pfd[0]);
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
        return true;
    buf[n > 0 ? n : 0] = 0;
    snprintf(why, why_len, "%s", n > 0 ? buf : "the probe process failed");
    return false;
}

/* ---- runner ------------------------------------------------------------------------------ */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static char **build_env(const char *root, const char *const *extra)
{
    size_t n = 0;
    while (extra && extra[n])
        n++;
    char **env = calloc(n + 9, sizeof *env);
    if (!env)
        return NULL;
    size_t k = 0;
    env[k++] = strdup("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    size_t hl = strlen(root) + 6;
    if ((env[k] = malloc(hl)))
        snprintf(env[k], hl, "HOME=%s", root);
    k++;
    env[k++] = strdup("LANG=C.UTF-8");
    env[k++] = strdup("LC_ALL=C.UTF-8");
    env[k++] = strdup("TERM=dumb");
    env[k++] = strdup("TMPDIR=/tmp");
    env[k++] = strdup("CTX_AGENT=1");
    for (size_t i = 0; i < n; i++)
        env[k++] = strdup(extra[i]);
    for (size_t i = 0; i < k; i++)
        if (!env[i]) {
            for (size_t j = 0; j < k; j++)
                free(env[j]);
            free(env);
            return NULL;
        }
    return env;
}

static void child_limits(const struct agent_run_opts *o)
{
    struct rlimit rl;
    rl.rlim_cur = rl.rlim_max = o->max_procs ? o->max_procs : 256;
    setrlimit(RLIMIT_NPROC, &rl);
    rl.rlim_cur = rl.rlim_max = o->max_file_bytes ? o->max_file_bytes : (1ul << 30);
    setrlimit(RLIMIT_FSIZE, &rl);
    rl.rlim_cur = rl.rlim_max = 0;
    setrlimit(RLIMIT_CORE, &rl);
}

static void child_fail(int fd, const char *what)
{
    char msg[512];
    int n = snprintf(msg, sizeof msg, "ctx sandbox: %s: %s\n", what, strerror(errno));
    ssize_t w = write(fd, msg, (size_t)n);
    (void)w;
    _exit(126);
}

/* The process that becomes the command: stdio, limits, exec. */
static void exec_command(const char *command, const struct agent_run_opts *o, int out_fd, char **env)
{
    int nul = open("/dev/null", O_RDONLY);
    if (nul >= 0) {
        dup2(nul, 0);
        close(nul);
    }
    dup2(out_fd, 1);
    dup2(out_fd, 2);
    if (chdir(o->root) != 0)
        child_fail(2, "chdir to the repository");
    for (int s = 1; s < 32; s++)
        signal(s, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    char *argv[] = {"sh", "-c", (char *)command, NULL};
    execve("/bin/sh", argv, env);
    child_fail(2, "exec /bin/sh");
}

/* The kernel exempts real uid 0 from RLIMIT_NPROC, so for a daemon running as root the process
 * bound comes from a pids cgroup (v1 controller, or v2 where the root delegates pids), named after
 * the sandbox's first process and removed by agent_run once the command is over. Without one, the
 * timeout and the PID namespace's teardown are the bound (as the README says). */
static void pids_cgroup_dir(pid_t pid, char *buf, size_t cap)
{
    if (access("/sys/fs/cgroup/pids/cgroup.procs", F_OK) == 0)
        snprintf(buf, cap, "/sys/fs/cgroup/pids/ctxd-sandbox-%ld", (long)pid);
    else
        snprintf(buf, cap, "/sys/fs/cgroup/ctxd-sandbox-%ld", (long)pid);
}

static void write_small(const char *dir, const char *file, const char *text)
{
    char p[160];
    snprintf(p, sizeof p, "%s/%s", dir, file);
    int fd = open(p, O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t w = write(fd, text, strlen(text));
        (void)w;
        close(fd);
    }
}

static void child_pids_cgroup(const struct agent_run_opts *o)
{
    if (geteuid() != 0)
        return; /* RLIMIT_NPROC does it */
    char dir[128], max[32];
    pids_cgroup_dir(getpid(), dir, sizeof dir);
    if (mkdir(dir, 0700) != 0)
        return;
    snprintf(max, sizeof max, "%lu", (unsigned long)(o->max_procs ? o->max_procs : 256));
    write_small(dir, "pids.max", max);
    write_small(dir, "cgroup.procs", "0");
}

static void remove_pids_cgroup(pid_t pid)
{
    char dir[128];
    pids_cgroup_dir(pid, dir, sizeof dir);
    /* the processes may take a moment to be reaped after the namespace ends */
    for (int i = 0; i < 200 && rmdir(dir) != 0 && errno == EBUSY; i++)
        usleep(10000);
}

static void sandbox_child(const char *command, const struct agent_run_opts *o, int out_fd, char **env)
{
    /* Limits first: a new user namespace records the creator's RLIMIT_NPROC as its own bound. */
    child_limits(o);
    child_pids_cgroup(o);
    if (enter_userns(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID, 0, 0) != 0)
        child_fail(out_fd, "entering user/mount/net/pid namespaces");
    const char *why = setup_mounts(o->root);
    if (why)
        child_fail(out_fd, why);
    /* Nested namespaces lock the mounts above: they cannot be remounted writable or unmounted. */
    if (enter_userns(CLONE_NEWNS, 0, 0) != 0)
        child_fail(out_fd, "locking mounts in a nested user namespace");
    if (lock_down() != 0)
        child_fail(out_fd, "dropping capabilities");
    int spipe[2];
    if (pipe2(spipe, O_CLOEXEC) != 0)
        child_fail(out_fd, "pipe");
    pid_t g = fork(); /* pid 1 of the new PID namespace: its death kills every descendant */
    if (g < 0)
        child_fail(out_fd, "fork");
    if (g == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
        close(spipe[0]);
        /* pid 1 ignores signals it has no handler for, so the command runs as its child (signals
         * work as usual) while pid 1 reaps orphans and passes the command's wait status on. */
        pid_t k = fork();
        if (k < 0)
            child_fail(out_fd, "fork");
        if (k == 0)
            exec_command(command, o, out_fd, env);
        close(out_fd);
        int kst = 0;
        for (;;) {
            pid_t w = waitpid(-1, &kst, 0);
            if (w == k)
                break;
            if (w < 0 && errno != EINTR)
                _exit(126);
        }
        ssize_t wn = write(spipe[1], &kst, sizeof kst);
        (void)wn;
        _exit(0); /* the namespace ends here: every other process in it is killed */
    }
    close(out_fd);
    close(spipe[1]);
    int st = 0, gst;
    ssize_t rn = read(spipe[0], &st, sizeof st);
    while (waitpid(g, &gst, 0) < 0) {
        if (errno != EINTR)
            _exit(126);
    }
    if (rn != (ssize_t)sizeof st)
        st = gst;
    if (WIFSIGNALED(st)) {
        signal(WTERMSIG(st), SIG_DFL);
        raise(WTERMSIG(st));
        _exit(128 + WTERMSIG(st));
    }
    _exit(WEXITSTATUS(st));
}

int agent_run(const char *command, const struct agent_run_opts *o, struct agent_run_result *r,
              struct ctx_err *e)
{
    memset(r, 0, sizeof *r);
    r->exit_code = -1;
    size_t cap = o->max_output ? o->max_output : 64 * 1024;
    int timeout = o->timeout_ms > 0 ? o->timeout_ms : 120000;
    if (!(r->output = malloc(cap + 1)))
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    char **env = build_env(o->root, o->env);
    if (!env) {
        agent_run_result_free(r);
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    }
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) != 0) {
        for (char **p = env; *p; p++)
            free(*p);
        free(env);
        agent_run_result_free(r);
        return ctx_err_errno(e, CTX_EIO, errno, "pipe");
    }
    pid_t pid = fork();
    if (pid == 0) {
        setpgid(0, 0);
        close(pfd[0]);
        if (o->sandbox) {
            sandbox_child(command, o, pfd[1], env);
        } else {
            child_limits(o);
            prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
            exec_command(command, o, pfd[1], env);
        }
        _exit(127);
    }
    int fork_errno = errno;
    for (char **p = env; *p; p++)
        free(*p);
    free(env);
    close(pfd[1]);
    if (pid < 0) {
        close(pfd[0]);
        agent_run_result_free(r);
        return ctx_err_errno(e, CTX_EIO, fork_errno, "fork");
    }
    setpgid(pid, pid); /* also in the child: whichever runs first */
    r->sandboxed = o->sandbox;
    uint64_t deadline = now_ms() + (uint64_t)timeout, drain_until = 0;
    bool eof = false, exited = false;
    int st = 0;
    char buf[65536];
    while (!eof) {
        uint64_t t = now_ms();
        if (!exited && !r->cancelled && o->cancel && atomic_load(o->cancel)) {
            kill(-pid, SIGKILL);
            kill(pid, SIGKILL);
            r->cancelled = true;
            deadline = UINT64_MAX;
        }
        if (!exited && t >= deadline) {
            kill(-pid, SIGKILL);
            kill(pid, SIGKILL);
            r->timed_out = true;
            deadline = UINT64_MAX;
        }
        if (!exited && waitpid(pid, &st, WNOHANG) == pid) {
            exited = true;
            /* Whatever is left in the group (unsandboxed background jobs) goes with it. */
            kill(-pid, SIGKILL);
            /* Sandboxed, every process that can hold the pipe is in the dying PID namespace:
             * wait for the EOF that says they are all gone. Unsandboxed, a process that left the
             * group may keep it open for ever: give it half a second. */
            drain_until = now_ms() + (o->sandbox ? 10000 : 500);
        }
        if (exited && now_ms() >= drain_until)
            break; /* a descendant that left the group still holds the pipe: stop reading */
        struct pollfd pf = {.fd = pfd[0], .events = POLLIN};
        int wait = exited ? 50 : 20;
        int pr = poll(&pf, 1, wait);
        if (pr < 0 && errno != EINTR)
            break;
        if (pr > 0) {
            ssize_t n = read(pfd[0], buf, sizeof buf);
            if (n == 0) {
                eof = true;
            } else if (n > 0) {
                size_t keep = r->output_len < cap ? cap - r->output_len : 0;
                if (keep > (size_t)n)
                    keep = (size_t)n;
                memcpy(r->output + r->output_len, buf, keep);
                r->output_len += keep;
                r->total_output += (size_t)n;
                if (keep < (size_t)n)
                    r->truncated = true;
            }
        }
    }
    close(pfd[0]);
    if (!exited) {
        if (!r->timed_out) {
            /* EOF before exit: the command closed its output; wait for it under the deadline. */
            while (now_ms() < deadline && waitpid(pid, &st, WNOHANG) == 0)
                usleep(2000);
            if (waitpid(pid, &st, WNOHANG) == 0) {
                kill(-pid, SIGKILL);
                kill(pid, SIGKILL);
                r->timed_out = true;
            }
        }
        if (r->timed_out)
            while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
                ;
        kill(-pid, SIGKILL);
    }
    r->output[r->output_len] = 0;
    if (o->sandbox && geteuid() == 0)
        remove_pids_cgroup(pid);
    if (WIFEXITED(st)) {
        r->exit_code = WEXITSTATUS(st);
    } else if (WIFSIGNALED(st)) {
        r->signal = WTERMSIG(st);
    }
    return 0;
}

void agent_run_result_free(struct agent_run_result *r)
{
    if (!r)
        return;
    free(r->output);
    r->output = NULL;
}
