/* agent.*: the agent (agent/loop.h with the repository tools) run by ctxd on a repository's
 * resident state. Methods agent.run, agent.answer, agent.cancel, agent.undo (PROTOCOL.md). */
#ifndef CTXD_AGENTD_H
#define CTXD_AGENTD_H

#include "ctxd.h"

struct ctxd_agent_opts {
    const char *policy_path;     /* command policy JSON; NULL: agent_policy_default() */
    const char *forced_path;     /* tests only: JSON array of completions to force, in order */
    int approval_timeout_ms;     /* an 'ask' approval not answered by then is refused; 0: 300000 */
    int tool_grammar;            /* enum ctxd_tool_grammar (agent_model.h): 0 strict (default), 1 off */
};

struct ctxd_ask_opts;

/* Told on the loop thread when a session turn has completed (not when it was cancelled or
 * failed): the messages it added — the user's message first (its text as sent), then the
 * assistant's and the tools' — and `raws`, parallel to them: the exact text the model emitted for
 * each assistant message, null for the others. */
typedef void (*ctxd_agent_store_fn)(void *ud, const char *session, const cJSON *messages, const cJSON *raws);

/* session.send through the agent (ask mode, tools): `history` (the session's messages, the first
 * being the user's first request as sent) and `raws` (parallel; taken, like history) are replayed
 * exactly (agent_loop_replay_prompt) and `text` is the new turn. Streams ask.delta (reasoning,
 * content) and agent.event notifications; replies in repo.ask's shape plus the agent's fields. */
int ctxd_agent_session_send(struct ctxd *d, struct ctxd_call *call, const char *root, cJSON *history, cJSON *raws,
                            const char *text, const struct ctxd_ask_opts *o, const char *session,
                            ctxd_agent_store_fn store, void *store_ud, struct ctx_err *e);

/* After ctxd_repos_init. Registers the methods. */
int ctxd_agent_init(struct ctxd *d, const struct ctxd_agent_opts *o, struct ctx_err *e);
/* After the scheduler has stopped. */
void ctxd_agent_free(struct ctxd *d);

#endif
