/* store/: migrations (fresh, stepwise, refusing a newer schema), files with symbols and references,
 * replacement and pruning, FTS5 search over symbol names, the churn cache, identifier words. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "store.h"

static char dbpath[256];

/* The database and its WAL companions: a stale -wal beside a new file would be replayed into it. */
static void rm_db(void)
{
    char p[300];
    unlink(dbpath);
    snprintf(p, sizeof p, "%s-wal", dbpath);
    unlink(p);
    snprintf(p, sizeof p, "%s-shm", dbpath);
    unlink(p);
}

static struct store_db *open_db(void)
{
    struct store_db *db = NULL;
    struct ctx_err e = {0};
    int rc = store_open(dbpath, &db, &e);
    if (rc) fprintf(stderr, "# %s\n", e.msg);
    assert_int_equal(rc, 0);
    return db;
}

static void test_migrations(void **state)
{
    (void)state;
    assert_true(store_migration_count >= 1);
    for (size_t i = 0; i < store_migration_count; i++) assert_int_equal(store_migrations[i].version, (int)i + 1);
    struct store_db *db = NULL;
    struct ctx_err e = {0};
    assert_int_equal(store_open_at(dbpath, 0, &db, &e), 0);
    int v = -1;
    assert_int_equal(store_schema_version(db, &v, &e), 0);
    assert_int_equal(v, 0);
    store_close(db);
    db = open_db();
    assert_int_equal(store_schema_version(db, &v, &e), 0);
    assert_int_equal(v, (int)store_migration_count);
    store_close(db);
    /* Re-opening an up-to-date database runs nothing and keeps the data. */
    db = open_db();
    store_close(db);

    /* A database from a newer build is refused, not damaged. */
    sqlite3 *raw;
    assert_int_equal(sqlite3_open(dbpath, &raw), SQLITE_OK);
    char sql[64];
    snprintf(sql, sizeof sql, "PRAGMA user_version = %zu", store_migration_count + 1);
    assert_int_equal(sqlite3_exec(raw, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(raw);
    assert_int_equal(store_open(dbpath, &db, &e), CTX_EUNSUPPORTED);
    assert_non_null(strstr(e.msg, "newer"));
    rm_db();
}

struct hits {
    char buf[4096];
    size_t n;
};

static int collect(void *ud, const struct store_symbol_hit *h)
{
    struct hits *x = ud;
    size_t k = strlen(x->buf);
    snprintf(x->buf + k, sizeof x->buf - k, "%s:%u %s %s refs=%u\n", h->path, h->line + 1, h->kind, h->name, h->nrefs);
    x->n++;
    return 0;
}

static void put(struct store_db *db, int64_t repo, const char *path, uint64_t hash, const char *const *names,
                const char *const *kinds, const bool *defs, size_t n)
{
    struct store_symbol_row rows[16];
    for (size_t i = 0; i < n; i++)
        rows[i] = (struct store_symbol_row){names[i], strlen(names[i]), kinds[i], defs[i], (uint32_t)i, 0,
                                            (uint32_t)i, (uint32_t)strlen(names[i])};
    struct store_file_row f = {path, "0123456789012345678901234567890123456789", 100, 3, 1700000000, "c", hash,
                               "modified", NULL};
    struct ctx_err e = {0};
    int rc = store_file_put(db, repo, &f, rows, n, &e);
    if (rc) fprintf(stderr, "# %s\n", e.msg);
    assert_int_equal(rc, 0);
}

static void test_files_and_search(void **state)
{
    (void)state;
    struct store_db *db = open_db();
    struct ctx_err e = {0};
    int64_t repo = 0, repo2 = 0;
    assert_int_equal(store_repo_id(db, "/r/one/", &repo, &e), 0);
    assert_int_equal(store_repo_id(db, "/r/two/", &repo2, &e), 0);
    int64_t again = 0;
    assert_int_equal(store_repo_id(db, "/r/one/", &again, &e), 0);
    assert_int_equal(again, repo);
    assert_true(repo2 != repo);

    assert_int_equal(store_begin(db, &e), 0);
    const char *n1[] = {"store_open", "parseHTTPRequest", "store_open", "helper"};
    const char *k1[] = {"function", "function", "call", "function"};
    const bool d1[] = {true, true, false, true};
    put(db, repo, "a.c", 1, n1, k1, d1, 4);
    const char *n2[] = {"openFile", "store_open", "store_open"};
    const char *k2[] = {"method", "call", "call"};
    const bool d2[] = {true, false, false};
    put(db, repo, "b.c", 2, n2, k2, d2, 3);
    const char *n3[] = {"store_open"};
    const char *k3[] = {"function"};
    const bool d3[] = {true};
    put(db, repo2, "other.c", 3, n3, k3, d3, 1);
    assert_int_equal(store_commit(db, &e), 0);

    struct hits h = {0};
    assert_int_equal(store_symbols_find(db, repo, "open", 0, collect, &h, &e), 0);
    /* "open" is a word prefix of store_open and openFile; exact and name-prefix matches sort first. */
    assert_string_equal(h.buf, "b.c:1 method openFile refs=0\na.c:1 function store_open refs=3\n");
    memset(&h, 0, sizeof h);
    assert_int_equal(store_symbols_find(db, repo, "http req", 0, collect, &h, &e), 0);
    assert_string_equal(h.buf, "a.c:2 function parseHTTPRequest refs=0\n");
    memset(&h, 0, sizeof h);
    assert_int_equal(store_symbols_find(db, repo, "store_open", 0, collect, &h, &e), 0);
    assert_string_equal(h.buf, "a.c:1 function store_open refs=3\n");
    memset(&h, 0, sizeof h);
    /* FTS syntax in the query is just text. */
    assert_int_equal(store_symbols_find(db, repo, "\"* OR NEAR(", 0, collect, &h, &e), 0);
    assert_int_equal(h.n, 0);
    memset(&h, 0, sizeof h);
    assert_int_equal(store_symbols_find(db, repo, NULL, 2, collect, &h, &e), 0);
    assert_string_equal(h.buf, "a.c:1 function store_open refs=3\na.c:2 function parseHTTPRequest refs=0\n");

    /* Replacing a file replaces its symbols and their index entries. */
    const char *n4[] = {"fresh_name"};
    put(db, repo, "a.c", 9, n4, k3, d3, 1);
    memset(&h, 0, sizeof h);
    assert_int_equal(store_symbols_find(db, repo, "store", 0, collect, &h, &e), 0);
    assert_int_equal(h.n, 0);
    memset(&h, 0, sizeof h);
    assert_int_equal(store_symbols_find(db, repo, "fresh", 0, collect, &h, &e), 0);
    assert_string_equal(h.buf, "a.c:1 function fresh_name refs=0\n");
    uint64_t hash = 0;
    bool found = false;
    assert_int_equal(store_file_hash(db, repo, "a.c", &hash, &found, &e), 0);
    assert_true(found);
    assert_int_equal(hash, 9);

    /* Pruning removes files not in the kept list, with their symbols. */
    const char *keep[] = {"b.c"};
    assert_int_equal(store_files_prune(db, repo, keep, 1, &e), 0);
    size_t n = 0;
    assert_int_equal(store_file_count(db, repo, &n, &e), 0);
    assert_int_equal(n, 1);
    memset(&h, 0, sizeof h);
    assert_int_equal(store_symbols_find(db, repo, "fresh", 0, collect, &h, &e), 0);
    assert_int_equal(h.n, 0);
    assert_int_equal(store_file_count(db, repo2, &n, &e), 0);
    assert_int_equal(n, 1);
    store_close(db);
    rm_db();
}

struct churn_seen {
    char buf[512];
};

static void on_churn(void *ud, const char *path, uint32_t commits, int64_t last)
{
    struct churn_seen *c = ud;
    size_t k = strlen(c->buf);
    snprintf(c->buf + k, sizeof c->buf - k, "%s %u %lld\n", path, commits, (long long)last);
}

static void test_churn(void **state)
{
    (void)state;
    struct store_db *db = open_db();
    struct ctx_err e = {0};
    int64_t repo;
    assert_int_equal(store_repo_id(db, "/r/c/", &repo, &e), 0);
    char head[41];
    uint32_t walked = 9;
    bool trunc = true;
    struct churn_seen seen = {0};
    assert_int_equal(store_churn_get(db, repo, head, &walked, &trunc, on_churn, &seen, &e), 0);
    assert_string_equal(head, "");
    assert_int_equal(walked, 0);
    assert_false(trunc);
    const char *h = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    assert_int_equal(store_churn_put(db, repo, h, 12, true, &e), 0);
    assert_int_equal(store_churn_put_path(db, repo, "z.c", 3, 1700000000, &e), 0);
    assert_int_equal(store_churn_put_path(db, repo, "a.c", 1, 1600000000, &e), 0);
    assert_int_equal(store_churn_put_path(db, repo, "z.c", 4, 1700000100, &e), 0);
    assert_int_equal(store_churn_get(db, repo, head, &walked, &trunc, on_churn, &seen, &e), 0);
    assert_string_equal(head, h);
    assert_int_equal(walked, 12);
    assert_true(trunc);
    assert_string_equal(seen.buf, "a.c 1 1600000000\nz.c 4 1700000100\n");
    store_close(db);
    rm_db();
}

static void test_words(void **state)
{
    (void)state;
    char out[128];
    store_ident_words("parseHTTPRequest_v2", 19, out);
    assert_string_equal(out, "parse http request v 2");
    store_ident_words("__init__", 8, out);
    assert_string_equal(out, "init");
    store_ident_words("XMLHttpRequest", 14, out);
    assert_string_equal(out, "xml http request");
    store_ident_words("", 0, out);
    assert_string_equal(out, "");
}

static int setup(void **state)
{
    (void)state;
    snprintf(dbpath, sizeof dbpath, "/tmp/ctx-store-test-%d.db", (int)getpid());
    rm_db();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    rm_db();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_migrations), cmocka_unit_test(test_files_and_search),
        cmocka_unit_test(test_churn), cmocka_unit_test(test_words),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
