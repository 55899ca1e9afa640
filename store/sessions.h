/* Conversations kept by the daemon, so that they survive restarts (issue 7). A session belongs to a
 * repository; its messages are stored in the DSML vectors' shape (role, content,
 * reasoning_content, tool_calls, ...) as JSON, in order, with the exact text the model emitted
 * (`raw`) where there is one, so a resumed conversation re-renders byte for byte. The store does
 * not interpret the messages. */
#ifndef STORE_SESSIONS_H
#define STORE_SESSIONS_H

#include <cjson/cJSON.h>
#include <stdint.h>

#include "store.h"

#define STORE_SESSION_ID_LEN 16 /* hex characters */

/* A new session; id receives STORE_SESSION_ID_LEN hex characters and a NUL. */
int store_session_create(struct store_db *db, const char *repo_root, const char *mode, char *id,
                         struct ctx_err *e);
/* Append one message (copied as JSON text). The first user message also becomes the title. */
int store_session_append(struct store_db *db, const char *id, const cJSON *message, const char *raw,
                         struct ctx_err *e);
/* Drop the messages from seq `from` on (a cancelled turn's user message, say). */
int store_session_truncate(struct store_db *db, const char *id, int from, struct ctx_err *e);
/* {"id", "repo_root", "mode", "title", "created", "updated", "messages": [...]} or CTX_ENOTFOUND. */
int store_session_get(struct store_db *db, const char *id, cJSON **out, struct ctx_err *e);
/* [{"id", "repo_root", "mode", "title", "created", "updated", "n_messages"}], newest first;
 * repo_root NULL lists all. */
int store_session_list(struct store_db *db, const char *repo_root, cJSON **out, struct ctx_err *e);
int store_session_delete(struct store_db *db, const char *id, struct ctx_err *e);

#endif
