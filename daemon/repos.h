/* Repositories held resident: ingestion (libuv thread pool), background prefill of the resident
 * prefix on the engine thread (sliced, so interactive work gets in between), and one-shot
 * questions answered from the resident state (repo.ask). Methods: repo.open, repo.status,
 * repo.list, repo.ask. */
#ifndef CTXD_REPOS_H
#define CTXD_REPOS_H

#include <stddef.h>

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
