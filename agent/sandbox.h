/* Commands the agent runs: a policy (allow / ask / deny patterns) and a runner with a timeout, an
 * output cap, a scrubbed environment and, where the kernel allows it, a namespace sandbox.
 *
 * Sandbox (Linux): the command runs as pid 1's child of new user, mount, network and PID
 * namespaces. Every mount is remounted read-only, the repository is bind-mounted writable again,
 * its .git/ and .ctx/ read-only, /tmp is a fresh tmpfs (when the repository is not under /tmp),
 * and there is no network (a new network namespace has only a down loopback). A second, nested
 * user + mount namespace is entered before exec so that those mounts are locked: the command,
 * although root in its namespace, cannot remount them writable or unmount them. RLIMIT_NPROC (as a
 * per-namespace count, so it holds for root inside the namespace; the kernel exempts only a daemon
 * whose real uid is 0), RLIMIT_FSIZE and RLIMIT_CORE bound fork bombs and runaway files; the
 * timeout kills the PID namespace, so no descendant survives.
 *
 * When namespaces are unavailable (agent_sandbox_probe fails: seccomp, a container without
 * user namespaces, sysctl off) the policy's `fallback` decides: "deny" (default) refuses every
 * command with a message saying why, "ask" asks the caller for each command, "allow" runs them in a
 * new process group with the same limits but no filesystem or network isolation. */
#ifndef AGENT_SANDBOX_H
#define AGENT_SANDBOX_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "err.h"

enum agent_decision { AGENT_ALLOW = 0, AGENT_ASK, AGENT_DENY };

const char *agent_decision_name(enum agent_decision d);

/* A policy file (JSON):
 *   {"allow": ["make *", "ls*"], "ask": ["git *"], "deny": ["curl *", "rm -rf *"],
 *    "default": "ask", "fallback": "deny"}
 * Patterns are fnmatch(3) globs over the whole command line; deny wins over ask, ask over allow;
 * a command matching none gets `default` ("ask" when absent). Unknown fields are errors (a typo must
 * not silently weaken the policy). */
struct agent_policy;

int agent_policy_parse(const char *json, size_t len, struct agent_policy **out, struct ctx_err *e);
int agent_policy_load(const char *path, struct agent_policy **out, struct ctx_err *e);
/* The policy used when none is given: default ask, fallback deny, a deny list of obvious
 * destructive commands. A static object; never freed. */
const struct agent_policy *agent_policy_default(void);
void agent_policy_free(struct agent_policy *p);

/* The decision for a command, and the pattern that decided it (NULL for the default). */
enum agent_decision agent_policy_decide(const struct agent_policy *p, const char *command,
                                        const char **pattern);
enum agent_decision agent_policy_fallback(const struct agent_policy *p);

/* Whether namespaces work here (cached after the first call). On false, *why says why. */
bool agent_sandbox_probe(char *why, size_t why_len);

struct agent_run_opts {
    const char *root;        /* working directory, made writable inside the sandbox */
    int timeout_ms;          /* 0: 120 s */
    size_t max_output;       /* bytes of stdout+stderr kept; 0: 64 KiB (the rest is drained) */
    bool sandbox;            /* use namespaces (fails with CTX_EUNSUPPORTED if unavailable) */
    unsigned max_procs;      /* RLIMIT_NPROC; 0: 256 */
    unsigned long max_file_bytes; /* RLIMIT_FSIZE; 0: 1 GiB */
    const char *const *env;  /* extra NAME=value entries over the scrubbed base; NULL-terminated */
    const atomic_int *cancel; /* non-zero: kill the command now (checked every 20 ms); may be NULL */
};

struct agent_run_result {
    int exit_code;           /* -1 when killed by a signal */
    int signal;              /* the signal, or 0 */
    bool timed_out;
    bool cancelled;          /* killed because *cancel became non-zero */
    bool truncated;          /* output was over max_output */
    size_t total_output;     /* bytes the command wrote in all */
    char *output;            /* stdout and stderr interleaved, at most max_output bytes */
    size_t output_len;
    bool sandboxed;
};

/* Run `/bin/sh -c command` in opts->root. Returns 0 when it ran (whatever its exit status), or a
 * CTX_E* code when it could not be started. */
int agent_run(const char *command, const struct agent_run_opts *o, struct agent_run_result *r,
              struct ctx_err *e);
void agent_run_result_free(struct agent_run_result *r);

#endif
