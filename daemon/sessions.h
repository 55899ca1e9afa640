/* session.*: conversations over a repository, persisted in SQLite (store/sessions.h) so that they
 * resume after a restart. Each send renders the whole conversation after the resident prefix. */
#ifndef CTXD_SESSIONS_H
#define CTXD_SESSIONS_H

#include "ctxd.h"

/* state_dir: where ctxd.db lives (created if needed). */
int ctxd_sessions_init(struct ctxd *d, const char *state_dir, struct ctx_err *e);
void ctxd_sessions_free(struct ctxd *d);

#endif
