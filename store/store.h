/* Persistence in SQLite: a versioned schema (an append-only list of migrations) and the tables of
 * repository ingestion: repositories, files, symbols (definitions), references, churn, with FTS5
 * over symbol names. The store knows nothing of repo/ or the model: callers pass plain rows.
 *
 * One struct store_db per thread (SQLite connections are not shared across threads); WAL mode. */
#ifndef STORE_STORE_H
#define STORE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

struct store_db; /* opaque */

/* One schema step. Migrations run in order inside a transaction each; PRAGMA user_version holds the
 * number applied. To change the schema, append an entry to store_migrations (store/schema.c);
 * never edit an applied one. */
struct store_migration {
    int version;     /* 1, 2, 3 ... (= index + 1) */
    const char *what;
    const char *sql;
};

extern const struct store_migration store_migrations[];
extern const size_t store_migration_count;

/* Open (creating) the database at path (":memory:" works) and migrate it to the latest version.
 * A database newer than this build is refused with CTX_EUNSUPPORTED. */
int store_open(const char *path, struct store_db **out, struct ctx_err *e);
void store_close(struct store_db *db);
/* The SQLite connection, for the other parts of store/ (sessions.c); not for other modules. */
struct sqlite3;
struct sqlite3 *store_sqlite(struct store_db *db);
const char *store_path(const struct store_db *db);

/* Open without migrating beyond `version` (tests of the migration chain). */
int store_open_at(const char *path, int version, struct store_db **out, struct ctx_err *e);
int store_schema_version(struct store_db *db, int *version, struct ctx_err *e);

int store_begin(struct store_db *db, struct ctx_err *e);
int store_commit(struct store_db *db, struct ctx_err *e);
int store_rollback(struct store_db *db);

/* The id of the repository at `root` (its working directory), created when absent. */
int store_repo_id(struct store_db *db, const char *root, int64_t *id, struct ctx_err *e);

struct store_file_row {
    const char *path;
    const char *blob_id;   /* hex */
    uint64_t size;
    uint32_t churn;        /* commits touching the path */
    int64_t last_change;   /* Unix seconds */
    const char *language;
    uint64_t hash;         /* of the text */
    const char *status;    /* "modified", "untracked", ... */
    const char *skip;      /* NULL or "binary", "vendored", ... */
};

struct store_symbol_row {
    const char *name;      /* not NUL-terminated: name_len bytes */
    size_t name_len;
    const char *kind;      /* "function", "call", ... */
    bool is_def;
    uint32_t line, col, end_line, end_col; /* 0-based */
};

/* Replace the file's row and all of its symbols and references. */
int store_file_put(struct store_db *db, int64_t repo, const struct store_file_row *f,
                   const struct store_symbol_row *syms, size_t nsyms, struct ctx_err *e);
/* Remove files of `repo` whose path is not in the sorted list `keep` (after a re-inventory). */
int store_files_prune(struct store_db *db, int64_t repo, const char *const *keep, size_t nkeep,
                      struct ctx_err *e);
int store_file_count(struct store_db *db, int64_t repo, size_t *n, struct ctx_err *e);
/* The stored text hash of a file; *found false when absent. */
int store_file_hash(struct store_db *db, int64_t repo, const char *path, uint64_t *hash, bool *found,
                    struct ctx_err *e);

/* A definition found by name. Strings are valid during the callback only. */
struct store_symbol_hit {
    const char *path;
    const char *name;
    const char *kind;
    uint32_t line, col, end_line, end_col;
    uint32_t nrefs;        /* references to this name across the repository */
};

/* Definitions whose name matches `query` through FTS5: each word of the query is a prefix of the
 * name or of one of its words (snake_case and camelCase split), e.g. "open" finds store_open and
 * openFile. NULL or "" lists every definition. Ordered by exactness, then path and line. At most
 * `limit` hits (0: no limit). fn returns non-zero to stop. */
int store_symbols_find(struct store_db *db, int64_t repo, const char *query, size_t limit,
                       int (*fn)(void *ud, const struct store_symbol_hit *h), void *ud,
                       struct ctx_err *e);

/* Churn cache: per-path counts and the commit they are up to date with. */
int store_churn_put(struct store_db *db, int64_t repo, const char *head, uint32_t walked, bool truncated,
                    struct ctx_err *e);
int store_churn_put_path(struct store_db *db, int64_t repo, const char *path, uint32_t commits,
                         int64_t last_change, struct ctx_err *e);
/* head is "" (with *walked 0) when nothing is cached. fn gets every cached path. */
int store_churn_get(struct store_db *db, int64_t repo, char head[41], uint32_t *walked, bool *truncated,
                    void (*fn)(void *ud, const char *path, uint32_t commits, int64_t last_change),
                    void *ud, struct ctx_err *e);

/* Split an identifier into lower-case words ("parseHTTPRequest_v2" -> "parse http request v2"),
 * the text FTS5 indexes beside the name. out has room for 2*len+1 bytes. */
void store_ident_words(const char *name, size_t len, char *out);

#endif
