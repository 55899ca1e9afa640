/* Repositories held resident: ingestion (libuv thread pool), background prefill of the resident
 * prefix on the engine thread (sliced, so interactive work gets in between), and one-shot
 * questions answered from the resident state (repo.ask). Methods: repo.open, repo.status,
 * repo.list, repo.ask. */
#ifndef CTXD_REPOS_H
#define CTXD_REPOS_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "ctxd.h"

struct ctxd_repos_opts {
    size_t budget;        /* prompt token budget of a repository (default 500000) */
    int chunk;            /* prefill tokens per engine slice (default 256) */
    const char *system;   /* system prompt; NULL: the built-in one */
    const char *cache_dir;        /* KV cache directory; NULL: no persistent cache */
    unsigned long long cache_budget; /* bytes (0: 20 GiB) */
    int checkpoint_every; /* tokens between checkpoints, a multiple of 128 (default 4096) */
    int no_watch;         /* do not watch working trees for changes */
    int debounce_ms;      /* quiet time before changes are applied (default 200) */
    int overlay_threshold; /* re-prefills longer than this many tokens are deferred: the edited
                            * files go after the repository block until it is idle (default 8192;
                            * 0 never defers) */
    int rebase_idle_ms;   /* idle time before deferred edits are re-based (default 30000) */
};

int ctxd_repos_init(struct ctxd *d, const struct ctxd_repos_opts *o, struct ctx_err *e);
struct ctxd_ask_opts {
    int max_tokens;
    float temperature, top_p;
    unsigned long long seed;
    int top_logprobs;
    int chat_mode;            /* 0: thinking */
};

/* Told (loop thread) about an answer that completed: the final message and the exact text the
 * model emitted (NULL for a remote backend). */
typedef void (*ctxd_ask_hook)(void *ud, const char *session, const cJSON *user, const cJSON *message,
                              const char *raw, const char *finish);

/* Parse the shared options of repo.ask / session.send; -1 after failing the call. */
int ctxd_repos_ask_options(struct ctxd_call *call, const cJSON *params, struct ctxd_ask_opts *o);

/* Queue a conversation (turns: the messages after the system message, the first being the user's
 * first request; taken) for the repository containing real_path, opening it if needed. Deltas
 * stream to call as ask.delta notifications and the reply comes when the answer is done. */
int ctxd_repos_ask(struct ctxd *d, struct ctxd_call *call, const char *real_path, cJSON *turns,
                   const struct ctxd_ask_opts *o, const char *session, ctxd_ask_hook hook, void *hook_ud,
                   struct ctx_err *e);

/* Open (start ingesting and prefilling) the repository containing real_path, if it is not open. */
int ctxd_repos_open(struct ctxd *d, const char *real_path, struct ctx_err *e);
/* Cancel the queued or running answer of a session; returns how many were cancelled. */
int ctxd_repos_cancel_session(struct ctxd *d, const char *session);

/* ---- jobs of other modules on a resident repository (the agent, daemon/agent.c) ----------- */

struct ctxd_engine;
struct ctxd_job_ctx;
struct repo_snapshot;
struct repo_layout;
struct agent_prefix;
struct agent_undo;
struct inf_state;
struct inf_snapshot;

/* An unsaved editor buffer (buffer.update) as a job sees it: a copy, owned by repos.c. */
struct ctxd_buffer {
    char *path;   /* repository-relative */
    char *text;   /* valid UTF-8, NUL-terminated */
    size_t len;
};

/* What a job sees on the engine thread while it owns the repository. Everything is borrowed and
 * valid during run() only. */
struct ctxd_repo_view {
    const char *root;                  /* the work tree */
    struct repo_snapshot *snap;        /* the tools borrow it (refreshed in place with their edits) */
    const struct repo_layout *layout;
    const struct agent_prefix *prefix; /* the resident prefix (tools declared) */
    const char *overlay;               /* edited files shown after the repository block, or NULL */
    const char *system;
    const cJSON *tools;                /* the tool schemas declared in the prefix */
    struct ctxd_engine *engine;
    struct inf_state *st;              /* holds the prefix; NULL for a remote backend. The job may
                                        * extend it: it is returned to `ready` after run() */
    const struct inf_snapshot *ready;
    struct agent_undo *undo;           /* the repository's undo records; NULL if unavailable */
    /* the unsaved editor buffers of the client named by ctxd_repos_submit's buffers_from, as they
     * were when the job started (the tools read them instead of the files on disk) */
    const struct ctxd_buffer *buffers;
    size_t n_buffers;
    /* out: repository-relative paths the job changed on disk (malloc'd array of malloc'd
     * strings, freed by repos.c); the resident state follows them after done(). */
    char **changed;
    size_t n_changed;
};

struct ctxd_repo_job {
    /* Engine thread: as ctxd_job_ops.run (CTXD_JOB_DONE, CTXD_JOB_YIELD between slices, or a
     * negative code via ctxd_job_fail); the repository stays the job's between slices. Once it
     * has run, the job is not dropped when cancelled: run() is called again and must finish. */
    int (*run)(struct ctxd_job_ctx *ctx, struct ctxd_repo_view *v, void *ud);
    /* Loop thread, when the job ran or was cancelled: reply to the call. */
    void (*done)(void *ud, int status, const char *message);
    /* Loop thread, exactly once after a successful submit (after done, or after repos.c failed
     * the call because the repository could not be made resident / the client left). */
    void (*release)(void *ud);
};

/* Queue a job on the repository containing real_path (opened if needed), after the questions
 * already queued, once the repository is resident. The view's buffers are those of client
 * `buffers_from` (0: the call's own connection). Buffer edits still waiting for their debounce
 * are applied to the resident state first. On failure nothing was taken. */
int ctxd_repos_submit(struct ctxd *d, struct ctxd_call *call, const char *real_path,
                      const struct ctxd_repo_job *ops, void *ud, const char *session, uint64_t buffers_from,
                      struct ctx_err *e);
/* Whether an agent job of that repository is queued or running. */
int ctxd_repos_agent_busy(struct ctxd *d, const char *real_path);
/* Cancel the job submitted with `ud`: a queued one is dropped (done() with CTX_ECANCELED), a
 * running one sees its cancellation. 1 if found. */
int ctxd_repos_cancel_job(struct ctxd *d, const void *ud);
/* Files changed outside a job (agent.undo): the resident state follows them. */
void ctxd_repos_changed(struct ctxd *d, const char *real_path, const char *const *paths, size_t n);

/* Load the tokenizer now and the model on the engine thread in the background (--preload). */
int ctxd_repos_preload(struct ctxd *d, struct ctx_err *e);
/* Before the scheduler is freed: fail waiting calls, forget repositories. */
void ctxd_repos_free(struct ctxd *d);
/* After the scheduler has been freed and the loop has run dry: release the repositories. */
void ctxd_repos_release(struct ctxd *d);
/* Methods cache.status and cache.clear (a connection of the loop thread's own). */
/* Add the repositories to daemon.status's result. */
void ctxd_repos_status(struct ctxd *d, cJSON *status);

#endif
