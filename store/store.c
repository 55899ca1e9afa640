/* SQLite access for repository ingestion; see store.h. */
#include <ctype.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"

struct store_db {
    sqlite3 *db;
    char *path;
};

/* For the other files of store/ (sessions.c): the connection itself. */
sqlite3 *store_sqlite(struct store_db *db)
{
    return db->db;
}

const char *store_path(const struct store_db *db)
{
    return db->path;
}

static int sql_err(struct store_db *db, struct ctx_err *e, int rc, const char *what)
{
    int code = rc == SQLITE_NOMEM ? CTX_ENOMEM : (rc == SQLITE_BUSY || rc == SQLITE_LOCKED) ? CTX_EBUSY : CTX_EIO;
    return ctx_err_set(e, code, "%s: %s: %s", db->path, what, sqlite3_errmsg(db->db));
}

static int exec(struct store_db *db, const char *sql, const char *what, struct ctx_err *e)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db->db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        int r = ctx_err_set(e, rc == SQLITE_NOMEM ? CTX_ENOMEM : CTX_EIO, "%s: %s: %s", db->path, what,
                            msg ? msg : sqlite3_errstr(rc));
        sqlite3_free(msg);
        return r;
    }
    return 0;
}

int store_schema_version(struct store_db *db, int *version, struct ctx_err *e)
{
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(db->db, "PRAGMA user_version", -1, &st, NULL);
    if (rc) return sql_err(db, e, rc, "reading the schema version");
    rc = sqlite3_step(st);
    *version = rc == SQLITE_ROW ? sqlite3_column_int(st, 0) : 0;
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 0 : sql_err(db, e, rc, "reading the schema version");
}

static int migrate(struct store_db *db, int target, struct ctx_err *e)
{
    int v;
    int rc = store_schema_version(db, &v, e);
    if (rc) return rc;
    if (v > (int)store_migration_count)
        return ctx_err_set(e, CTX_EUNSUPPORTED, "%s: schema version %d is newer than this build knows (%zu)",
                           db->path, v, store_migration_count);
    for (size_t i = (size_t)v; i < store_migration_count && (int)i < target; i++) {
        const struct store_migration *m = &store_migrations[i];
        if ((rc = exec(db, "BEGIN IMMEDIATE", "starting a migration", e))) return rc;
        char what[160];
        snprintf(what, sizeof what, "migration %d (%s)", m->version, m->what);
        if ((rc = exec(db, m->sql, what, e))) {
            exec(db, "ROLLBACK", "rolling back", NULL);
            return rc;
        }
        char pragma[64];
        snprintf(pragma, sizeof pragma, "PRAGMA user_version = %d", m->version);
        if ((rc = exec(db, pragma, what, e)) || (rc = exec(db, "COMMIT", what, e))) {
            exec(db, "ROLLBACK", "rolling back", NULL);
            return rc;
        }
    }
    return 0;
}

int store_open_at(const char *path, int version, struct store_db **out, struct ctx_err *e)
{
    *out = NULL;
    struct store_db *db = calloc(1, sizeof *db);
    if (!db || !(db->path = strdup(path))) {
        free(db);
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    }
    int rc = sqlite3_open_v2(path, &db->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                             NULL);
    if (rc != SQLITE_OK) {
        rc = ctx_err_set(e, CTX_EIO, "opening database %s: %s", path,
                         db->db ? sqlite3_errmsg(db->db) : sqlite3_errstr(rc));
        store_close(db);
        return rc;
    }
    sqlite3_busy_timeout(db->db, 5000);
    if ((rc = exec(db, "PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL",
                   "setting pragmas", e)) ||
        (rc = migrate(db, version, e))) {
        store_close(db);
        return rc;
    }
    *out = db;
    return 0;
}

int store_open(const char *path, struct store_db **out, struct ctx_err *e)
{
    return store_open_at(path, (int)store_migration_count, out, e);
}

void store_close(struct store_db *db)
{
    if (!db) return;
    sqlite3_close_v2(db->db);
    free(db->path);
    free(db);
}

int store_begin(struct store_db *db, struct ctx_err *e) { return exec(db, "BEGIN IMMEDIATE", "begin", e); }
int store_commit(struct store_db *db, struct ctx_err *e) { return exec(db, "COMMIT", "commit", e); }
int store_rollback(struct store_db *db) { return exec(db, "ROLLBACK", "rollback", NULL); }

static int prep(struct store_db *db, const char *sql, sqlite3_stmt **st, struct ctx_err *e)
{
    int rc = sqlite3_prepare_v2(db->db, sql, -1, st, NULL);
    return rc == SQLITE_OK ? 0 : sql_err(db, e, rc, "preparing a statement");
}

int store_repo_id(struct store_db *db, const char *root, int64_t *id, struct ctx_err *e)
{
    sqlite3_stmt *st;
    int rc = prep(db, "INSERT INTO repos(root) VALUES(?1) ON CONFLICT(root) DO UPDATE SET root = root "
                      "RETURNING id", &st, e);
    if (rc) return rc;
    sqlite3_bind_text(st, 1, root, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) *id = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 0 : sql_err(db, e, rc, "registering a repository");
}

void store_ident_words(const char *name, size_t len, char *out)
{
    size_t k = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        bool sep = c == '_' || c == '-' || c == '.' || c == ':' || c == '$';
        if (sep) {
            if (k && out[k - 1] != ' ') out[k++] = ' ';
            continue;
        }
        /* A word starts at lower->Upper ("parseHttp") and at the last capital of a run followed by
         * a lower-case letter ("HTTPRequest" -> "http request"), and at a letter/digit switch. */
        if (k && out[k - 1] != ' ' && i > 0) {
            unsigned char p = (unsigned char)name[i - 1];
            unsigned char nx = i + 1 < len ? (unsigned char)name[i + 1] : 0;
            bool brk = (isupper(c) && islower(p)) || (isupper(c) && isupper(p) && islower(nx)) ||
                       (isdigit(c) && isalpha(p)) || (isalpha(c) && isdigit(p));
            if (brk) out[k++] = ' ';
        }
        out[k++] = (char)tolower(c);
    }
    while (k && out[k - 1] == ' ') k--;
    out[k] = 0;
}

static int file_id(struct store_db *db, int64_t repo, const char *path, int64_t *id, struct ctx_err *e)
{
    sqlite3_stmt *st;
    int rc = prep(db, "SELECT id FROM files WHERE repo = ?1 AND path = ?2", &st, e);
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, repo);
    sqlite3_bind_text(st, 2, path, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    *id = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_finalize(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : sql_err(db, e, rc, "looking up a file");
}

int store_file_put(struct store_db *db, int64_t repo, const struct store_file_row *f,
                   const struct store_symbol_row *syms, size_t nsyms, struct ctx_err *e)
{
    int64_t fid;
    int rc = file_id(db, repo, f->path, &fid, e);
    if (rc) return rc;
    sqlite3_stmt *st = NULL, *sd = NULL, *sr = NULL, *sf = NULL;
    char *words = NULL;
    size_t wcap = 0;
    if (fid) {
        /* Symbols and references go with the row (ON DELETE CASCADE; the trigger clears FTS). */
        if ((rc = prep(db, "DELETE FROM files WHERE id = ?1", &st, e))) return rc;
        sqlite3_bind_int64(st, 1, fid);
        rc = sqlite3_step(st);
        sqlite3_finalize(st);
        st = NULL;
        if (rc != SQLITE_DONE) return sql_err(db, e, rc, "replacing a file");
    }
    if ((rc = prep(db, "INSERT INTO files(repo, path, blob, size, churn, last_change, language, hash, status, skip) "
                       "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) RETURNING id", &st, e)))
        return rc;
    sqlite3_bind_int64(st, 1, repo);
    sqlite3_bind_text(st, 2, f->path, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, f->blob_id ? f->blob_id : "", -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, (sqlite3_int64)f->size);
    sqlite3_bind_int64(st, 5, f->churn);
    sqlite3_bind_int64(st, 6, f->last_change);
    sqlite3_bind_text(st, 7, f->language ? f->language : "", -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 8, (sqlite3_int64)f->hash);
    sqlite3_bind_text(st, 9, f->status ? f->status : "", -1, SQLITE_STATIC);
    if (f->skip) sqlite3_bind_text(st, 10, f->skip, -1, SQLITE_STATIC);
    else sqlite3_bind_null(st, 10);
    rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        rc = sql_err(db, e, rc, "inserting a file");
        goto out;
    }
    fid = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    st = NULL;
    if ((rc = prep(db, "INSERT INTO symbols(file, name, kind, line, col, end_line, end_col) "
                       "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)", &sd, e)) ||
        (rc = prep(db, "INSERT INTO refs(file, name, kind, line, col) VALUES(?1, ?2, ?3, ?4, ?5)", &sr, e)) ||
        (rc = prep(db, "INSERT INTO symbol_fts(rowid, name, words) VALUES(?1, ?2, ?3)", &sf, e)))
        goto out;
    for (size_t i = 0; i < nsyms; i++) {
        const struct store_symbol_row *y = &syms[i];
        sqlite3_stmt *s = y->is_def ? sd : sr;
        sqlite3_reset(s);
        sqlite3_bind_int64(s, 1, fid);
        sqlite3_bind_text(s, 2, y->name, (int)y->name_len, SQLITE_STATIC);
        sqlite3_bind_text(s, 3, y->kind, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 4, y->line);
        sqlite3_bind_int64(s, 5, y->col);
        if (y->is_def) {
            sqlite3_bind_int64(s, 6, y->end_line);
            sqlite3_bind_int64(s, 7, y->end_col);
        }
        rc = sqlite3_step(s);
        if (rc != SQLITE_DONE) {
            rc = sql_err(db, e, rc, "inserting a symbol");
            goto out;
        }
        if (!y->is_def) continue;
        if (2 * y->name_len + 1 > wcap) {
            wcap = 2 * y->name_len + 1;
            char *nw = realloc(words, wcap);
            if (!nw) {
                rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
                goto out;
            }
            words = nw;
        }
        store_ident_words(y->name, y->name_len, words);
        sqlite3_reset(sf);
        sqlite3_bind_int64(sf, 1, sqlite3_last_insert_rowid(db->db));
        sqlite3_bind_text(sf, 2, y->name, (int)y->name_len, SQLITE_STATIC);
        sqlite3_bind_text(sf, 3, words, -1, SQLITE_STATIC);
        rc = sqlite3_step(sf);
        if (rc != SQLITE_DONE) {
            rc = sql_err(db, e, rc, "indexing a symbol name");
            goto out;
        }
    }
    rc = 0;
out:
    free(words);
    sqlite3_finalize(st);
    sqlite3_finalize(sd);
    sqlite3_finalize(sr);
    sqlite3_finalize(sf);
    return rc;
}

int store_files_prune(struct store_db *db, int64_t repo, const char *const *keep, size_t nkeep,
                      struct ctx_err *e)
{
    sqlite3_stmt *st, *del;
    int rc = prep(db, "SELECT id, path FROM files WHERE repo = ?1", &st, e);
    if (rc) return rc;
    if ((rc = prep(db, "DELETE FROM files WHERE id = ?1", &del, e))) {
        sqlite3_finalize(st);
        return rc;
    }
    sqlite3_bind_int64(st, 1, repo);
    /* Collect first: deleting while the SELECT is open is allowed in SQLite but easy to misread. */
    int64_t *ids = NULL;
    size_t n = 0, cap = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *p = (const char *)sqlite3_column_text(st, 1);
        size_t lo = 0, hi = nkeep;
        bool found = false;
        while (lo < hi && p) {
            size_t mid = (lo + hi) / 2;
            int c = strcmp(keep[mid], p);
            if (c == 0) {
                found = true;
                break;
            }
            if (c < 0) lo = mid + 1;
            else hi = mid;
        }
        if (found) continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            int64_t *ni = realloc(ids, cap * sizeof *ni);
            if (!ni) {
                free(ids);
                sqlite3_finalize(st);
                sqlite3_finalize(del);
                return ctx_err_set(e, CTX_ENOMEM, "out of memory");
            }
            ids = ni;
        }
        ids[n++] = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        free(ids);
        sqlite3_finalize(del);
        return sql_err(db, e, rc, "listing files");
    }
    rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        sqlite3_reset(del);
        sqlite3_bind_int64(del, 1, ids[i]);
        int r = sqlite3_step(del);
        if (r != SQLITE_DONE) rc = sql_err(db, e, r, "pruning a file");
    }
    free(ids);
    sqlite3_finalize(del);
    return rc;
}

int store_file_count(struct store_db *db, int64_t repo, size_t *n, struct ctx_err *e)
{
    sqlite3_stmt *st;
    int rc = prep(db, "SELECT count(*) FROM files WHERE repo = ?1", &st, e);
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, repo);
    rc = sqlite3_step(st);
    *n = rc == SQLITE_ROW ? (size_t)sqlite3_column_int64(st, 0) : 0;
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 0 : sql_err(db, e, rc, "counting files");
}

int store_file_hash(struct store_db *db, int64_t repo, const char *path, uint64_t *hash, bool *found,
                    struct ctx_err *e)
{
    sqlite3_stmt *st;
    int rc = prep(db, "SELECT hash FROM files WHERE repo = ?1 AND path = ?2", &st, e);
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, repo);
    sqlite3_bind_text(st, 2, path, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    *found = rc == SQLITE_ROW;
    *hash = *found ? (uint64_t)sqlite3_column_int64(st, 0) : 0;
    sqlite3_finalize(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : sql_err(db, e, rc, "reading a file hash");
}

/* FTS5 query text from user words: each word becomes a quoted prefix term on either column, so
 * that no character of the user's text is FTS5 syntax. */
static char *fts_query(const char *q)
{
    size_t len = strlen(q);
    char *words = malloc(2 * len + 1);
    char *out = malloc(16 * len + 16);
    if (!words || !out) {
        free(words);
        free(out);
        return NULL;
    }
    store_ident_words(q, len, words);
    size_t k = 0;
    for (char *w = strtok(words, " "); w; w = strtok(NULL, " ")) {
        if (k) k += (size_t)sprintf(out + k, " AND ");
        out[k++] = '"';
        for (const char *c = w; *c; c++) {
            if (*c == '"') out[k++] = '"';
            out[k++] = *c;
        }
        k += (size_t)sprintf(out + k, "\" *");
    }
    out[k] = 0;
    free(words);
    if (k == 0) {
        free(out);
        return NULL;
    }
    return out;
}

int store_symbols_find(struct store_db *db, int64_t repo, const char *query, size_t limit,
                       int (*fn)(void *ud, const struct store_symbol_hit *h), void *ud,
                       struct ctx_err *e)
{
    char *fq = query && query[0] ? fts_query(query) : NULL;
    bool all = !fq;
    const char *sql_all =
        "SELECT f.path, s.name, s.kind, s.line, s.col, s.end_line, s.end_col,"
        " (SELECT count(*) FROM refs r JOIN files rf ON rf.id = r.file WHERE rf.repo = f.repo AND r.name = s.name)"
        " FROM symbols s JOIN files f ON f.id = s.file WHERE f.repo = ?1"
        " ORDER BY f.path, s.line, s.col";
    const char *sql_fts =
        "SELECT f.path, s.name, s.kind, s.line, s.col, s.end_line, s.end_col,"
        " (SELECT count(*) FROM refs r JOIN files rf ON rf.id = r.file WHERE rf.repo = f.repo AND r.name = s.name)"
        " FROM symbol_fts JOIN symbols s ON s.id = symbol_fts.rowid JOIN files f ON f.id = s.file"
        " WHERE symbol_fts MATCH ?2 AND f.repo = ?1"
        " ORDER BY (s.name = ?3) DESC, (s.name LIKE ?3 || '%') DESC, f.path, s.line, s.col";
    sqlite3_stmt *st;
    int rc = prep(db, all ? sql_all : sql_fts, &st, e);
    if (rc) {
        free(fq);
        return rc;
    }
    sqlite3_bind_int64(st, 1, repo);
    if (!all) {
        sqlite3_bind_text(st, 2, fq, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, query, -1, SQLITE_STATIC);
    }
    size_t n = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct store_symbol_hit h = {
            .path = (const char *)sqlite3_column_text(st, 0),
            .name = (const char *)sqlite3_column_text(st, 1),
            .kind = (const char *)sqlite3_column_text(st, 2),
            .line = (uint32_t)sqlite3_column_int64(st, 3),
            .col = (uint32_t)sqlite3_column_int64(st, 4),
            .end_line = (uint32_t)sqlite3_column_int64(st, 5),
            .end_col = (uint32_t)sqlite3_column_int64(st, 6),
            .nrefs = (uint32_t)sqlite3_column_int64(st, 7),
        };
        if (fn(ud, &h)) {
            rc = SQLITE_DONE;
            break;
        }
        if (limit && ++n >= limit) {
            rc = SQLITE_DONE;
            break;
        }
    }
    sqlite3_finalize(st);
    free(fq);
    return rc == SQLITE_DONE ? 0 : sql_err(db, e, rc, "searching symbols");
}

int store_churn_put(struct store_db *db, int64_t repo, const char *head, uint32_t walked, bool truncated,
                    struct ctx_err *e)
{
    sqlite3_stmt *st;
    int rc = prep(db, "UPDATE repos SET churn_head = ?2, churn_walked = ?3, churn_truncated = ?4 WHERE id = ?1",
                  &st, e);
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, repo);
    sqlite3_bind_text(st, 2, head, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, walked);
    sqlite3_bind_int(st, 4, truncated);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : sql_err(db, e, rc, "saving the churn head");
}

int store_churn_put_path(struct store_db *db, int64_t repo, const char *path, uint32_t commits,
                         int64_t last_change, struct ctx_err *e)
{
    sqlite3_stmt *st;
    int rc = prep(db, "INSERT OR REPLACE INTO churn(repo, path, commits, last_change) VALUES(?1, ?2, ?3, ?4)", &st, e);
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, repo);
    sqlite3_bind_text(st, 2, path, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, commits);
    sqlite3_bind_int64(st, 4, last_change);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : sql_err(db, e, rc, "saving churn");
}

int store_churn_get(struct store_db *db, int64_t repo, char head[41], uint32_t *walked, bool *truncated,
                    void (*fn)(void *ud, const char *path, uint32_t commits, int64_t last_change),
                    void *ud, struct ctx_err *e)
{
    sqlite3_stmt *st;
    head[0] = 0;
    *walked = 0;
    *truncated = false;
    int rc = prep(db, "SELECT churn_head, churn_walked, churn_truncated FROM repos WHERE id = ?1", &st, e);
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, repo);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const char *h = (const char *)sqlite3_column_text(st, 0);
        snprintf(head, 41, "%s", h ? h : "");
        *walked = (uint32_t)sqlite3_column_int64(st, 1);
        *truncated = sqlite3_column_int(st, 2) != 0;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return sql_err(db, e, rc, "reading the churn head");
    if ((rc = prep(db, "SELECT path, commits, last_change FROM churn WHERE repo = ?1 ORDER BY path", &st, e)))
        return rc;
    sqlite3_bind_int64(st, 1, repo);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        fn(ud, (const char *)sqlite3_column_text(st, 0), (uint32_t)sqlite3_column_int64(st, 1),
           sqlite3_column_int64(st, 2));
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : sql_err(db, e, rc, "reading churn");
}
