#include "sessions.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "json.h"

static int fail(struct store_db *db, struct ctx_err *e, const char *what)
{
    sqlite3 *s = store_sqlite(db);
    int rc = sqlite3_errcode(s);
    int code = rc == SQLITE_NOMEM ? CTX_ENOMEM : (rc == SQLITE_BUSY || rc == SQLITE_LOCKED) ? CTX_EBUSY : CTX_EIO;
    return ctx_err_set(e, code, "%s: %s: %s", store_path(db), what, sqlite3_errmsg(s));
}

static sqlite3_stmt *prep(struct store_db *db, const char *sql, struct ctx_err *e)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(store_sqlite(db), sql, -1, &st, NULL) != SQLITE_OK) {
        fail(db, e, sql);
        return NULL;
    }
    return st;
}

/* Session ids: 64 random bits from the kernel, as hex. */
static int new_id(char *id, struct ctx_err *e)
{
    unsigned char b[STORE_SESSION_ID_LEN / 2];
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, b, sizeof b) : -1;
    if (fd >= 0)
        close(fd);
    if (n != (ssize_t)sizeof b)
        return ctx_err_set(e, CTX_EIO, "reading /dev/urandom for a session id");
    for (size_t i = 0; i < sizeof b; i++)
        snprintf(id + 2 * i, 3, "%02x", b[i]);
    return 0;
}

int store_session_create(struct store_db *db, const char *repo_root, const char *mode, char *id,
                         struct ctx_err *e)
{
    int rc = new_id(id, e);
    if (rc)
        return rc;
    sqlite3_stmt *st = prep(db, "INSERT INTO sessions (id, repo_root, mode, created, updated) VALUES (?1, ?2, ?3, ?4, ?4)", e);
    if (!st)
        return e ? e->code : CTX_EIO;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, repo_root, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, mode, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, (int64_t)time(NULL));
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : fail(db, e, "creating a session");
}

int store_session_append(struct store_db *db, const char *id, const cJSON *message, const char *raw,
                         struct ctx_err *e)
{
    char *text = cJSON_PrintUnformatted(message);
    if (!text)
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    int rc = store_begin(db, e);
    sqlite3_stmt *st = NULL;
    if (!rc) {
        st = prep(db, "SELECT 1 FROM sessions WHERE id = ?1", e);
        rc = st ? 0 : (e ? e->code : CTX_EIO);
        if (!rc) {
            sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
            if (sqlite3_step(st) != SQLITE_ROW)
                rc = ctx_err_set(e, CTX_ENOTFOUND, "no session %s", id);
            sqlite3_finalize(st);
            st = NULL;
        }
    }
    if (!rc) {
        st = prep(db, "INSERT INTO messages (session, seq, message, raw, created) "
                      "SELECT ?1, coalesce(max(seq) + 1, 0), ?2, ?3, ?4 FROM messages WHERE session = ?1", e);
        rc = st ? 0 : (e ? e->code : CTX_EIO);
    }
    if (!rc) {
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, text, -1, SQLITE_STATIC);
        if (raw)
            sqlite3_bind_text(st, 3, raw, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 4, (int64_t)time(NULL));
        if (sqlite3_step(st) != SQLITE_DONE)
            rc = fail(db, e, "appending a message");
        sqlite3_finalize(st);
        st = NULL;
    }
    if (!rc) {
        /* the first user message names the session */
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(message, "role");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(message, "content");
        st = prep(db, cJSON_IsString(role) && !strcmp(role->valuestring, "user") && cJSON_IsString(content)
                          ? "UPDATE sessions SET updated = ?2, title = CASE WHEN title = '' THEN substr(?3, 1, 80) "
                            "ELSE title END WHERE id = ?1"
                          : "UPDATE sessions SET updated = ?2 WHERE id = ?1 AND ?3 IS NULL",
                  e);
        rc = st ? 0 : (e ? e->code : CTX_EIO);
        if (!rc) {
            sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
            sqlite3_bind_int64(st, 2, (int64_t)time(NULL));
            if (cJSON_IsString(role) && !strcmp(role->valuestring, "user") && cJSON_IsString(content))
                sqlite3_bind_text(st, 3, content->valuestring, -1, SQLITE_STATIC);
            if (sqlite3_step(st) != SQLITE_DONE)
                rc = fail(db, e, "updating a session");
            else if (sqlite3_changes(store_sqlite(db)) == 0)
                rc = ctx_err_set(e, CTX_ENOTFOUND, "no session %s", id);
            sqlite3_finalize(st);
        }
    }
    if (!rc)
        rc = store_commit(db, e);
    else
        store_rollback(db);
    free(text);
    return rc;
}

int store_session_truncate(struct store_db *db, const char *id, int from, struct ctx_err *e)
{
    sqlite3_stmt *st = prep(db, "DELETE FROM messages WHERE session = ?1 AND seq >= ?2", e);
    if (!st)
        return e ? e->code : CTX_EIO;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, from);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : fail(db, e, "truncating a session");
}

static cJSON *session_row(sqlite3_stmt *st)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", (const char *)sqlite3_column_text(st, 0));
    cJSON_AddStringToObject(o, "repo_root", (const char *)sqlite3_column_text(st, 1));
    cJSON_AddStringToObject(o, "mode", (const char *)sqlite3_column_text(st, 2));
    cJSON_AddStringToObject(o, "title", (const char *)sqlite3_column_text(st, 3));
    cJSON_AddNumberToObject(o, "created", (double)sqlite3_column_int64(st, 4));
    cJSON_AddNumberToObject(o, "updated", (double)sqlite3_column_int64(st, 5));
    return o;
}

int store_session_get(struct store_db *db, const char *id, cJSON **out, struct ctx_err *e)
{
    *out = NULL;
    sqlite3_stmt *st = prep(db, "SELECT id, repo_root, mode, title, created, updated FROM sessions WHERE id = ?1", e);
    if (!st)
        return e ? e->code : CTX_EIO;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        sqlite3_finalize(st);
        return rc == SQLITE_DONE ? ctx_err_set(e, CTX_ENOTFOUND, "no session %s", id) : fail(db, e, "reading a session");
    }
    cJSON *o = session_row(st);
    sqlite3_finalize(st);
    cJSON *msgs = cJSON_AddArrayToObject(o, "messages");
    cJSON *raws = cJSON_AddArrayToObject(o, "raw");
    st = prep(db, "SELECT message, raw FROM messages WHERE session = ?1 ORDER BY seq", e);
    if (!st) {
        cJSON_Delete(o);
        return e ? e->code : CTX_EIO;
    }
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *m = (const char *)sqlite3_column_text(st, 0);
        struct ctx_err pe = {0};
        cJSON *msg = ctx_json_parse(m, strlen(m), "stored message", &pe);
        if (!msg) {
            sqlite3_finalize(st);
            cJSON_Delete(o);
            return ctx_err_set(e, CTX_EFORMAT, "session %s: %s", id, pe.msg);
        }
        cJSON_AddItemToArray(msgs, msg);
        const char *raw = (const char *)sqlite3_column_text(st, 1);
        cJSON_AddItemToArray(raws, raw ? cJSON_CreateString(raw) : cJSON_CreateNull());
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        cJSON_Delete(o);
        return fail(db, e, "reading messages");
    }
    *out = o;
    return 0;
}

int store_session_list(struct store_db *db, const char *repo_root, cJSON **out, struct ctx_err *e)
{
    *out = NULL;
    sqlite3_stmt *st = prep(db, "SELECT s.id, s.repo_root, s.mode, s.title, s.created, s.updated, "
                                "(SELECT count(*) FROM messages m WHERE m.session = s.id) FROM sessions s "
                                "WHERE ?1 IS NULL OR s.repo_root = ?1 ORDER BY s.updated DESC, s.id", e);
    if (!st)
        return e ? e->code : CTX_EIO;
    if (repo_root)
        sqlite3_bind_text(st, 1, repo_root, -1, SQLITE_STATIC);
    cJSON *arr = cJSON_CreateArray();
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        cJSON *o = session_row(st);
        cJSON_AddNumberToObject(o, "n_messages", sqlite3_column_int(st, 6));
        cJSON_AddItemToArray(arr, o);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        cJSON_Delete(arr);
        return fail(db, e, "listing sessions");
    }
    *out = arr;
    return 0;
}

int store_session_delete(struct store_db *db, const char *id, struct ctx_err *e)
{
    sqlite3_stmt *st = prep(db, "DELETE FROM sessions WHERE id = ?1", e);
    if (!st)
        return e ? e->code : CTX_EIO;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return fail(db, e, "deleting a session");
    return sqlite3_changes(store_sqlite(db)) ? 0 : ctx_err_set(e, CTX_ENOTFOUND, "no session %s", id);
}
