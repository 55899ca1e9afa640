/* session.*: conversations over a repository, persisted in SQLite (store/sessions.h) so that they
 * resume after a restart. Each send renders the whole conversation after the resident prefix. */
#ifndef CTXD_SESSIONS_H
#define CTXD_SESSIONS_H

#include <stddef.h>

#include <cjson/cJSON.h>

#include "ctxd.h"

/* state_dir: where ctxd.db lives (created if needed). */
int ctxd_sessions_init(struct ctxd *d, const char *state_dir, struct ctx_err *e);
void ctxd_sessions_free(struct ctxd *d);

/* agent.run {"session"}: the session's messages and raw texts (new cJSON trees for the caller),
 * its repository and whether it is in chat mode. */
int ctxd_sessions_load(struct ctxd *d, const char *id, cJSON **messages, cJSON **raws, char *root,
                       size_t root_cap, int *chat, struct ctx_err *e);
/* Store a completed agent turn (agentd.h's ctxd_agent_store_fn; ud is the struct ctxd). */
void ctxd_sessions_store_turn(void *ud, const char *session, const cJSON *messages, const cJSON *raws);

#endif
