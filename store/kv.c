#include "kv.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "pool.h"

/* The index has its own schema version, independent of the repository tables: the cache can be
 * wiped or moved as one directory. */
#define KV_SCHEMA 1

static const char kv_schema_sql[] =
    "CREATE TABLE lineages ("
    "  id INTEGER PRIMARY KEY,"
    "  model_key TEXT NOT NULL,"
    "  n_streams INTEGER NOT NULL,"
    "  parent INTEGER,"               /* forked from this lineage ... */
    "  parent_pos INTEGER,"           /* ... at this checkpoint position */
    "  last_used INTEGER NOT NULL,"   /* logical clock for LRU */
    "  bytes INTEGER NOT NULL DEFAULT 0,"
    "  last_pos INTEGER NOT NULL DEFAULT 0"
    ");"
    /* bytes [0, len) of a forked lineage's stream come from its parent */
    "CREATE TABLE bases (lineage INTEGER NOT NULL, stream INTEGER NOT NULL, len INTEGER NOT NULL,"
    "  PRIMARY KEY (lineage, stream)) WITHOUT ROWID;"
    /* stream bytes this lineage wrote: [off, off+len) of the logical stream, with their checksum */
    "CREATE TABLE segments (lineage INTEGER NOT NULL, stream INTEGER NOT NULL, off INTEGER NOT NULL,"
    "  len INTEGER NOT NULL, xxh INTEGER NOT NULL, PRIMARY KEY (lineage, stream, off)) WITHOUT ROWID;"
    "CREATE TABLE checkpoints (id INTEGER PRIMARY KEY, lineage INTEGER NOT NULL, pos INTEGER NOT NULL,"
    "  chain BLOB NOT NULL, boundary_len INTEGER NOT NULL, boundary_xxh INTEGER NOT NULL,"
    "  UNIQUE (lineage, pos));"
    "CREATE INDEX checkpoints_chain ON checkpoints(chain);"
    "CREATE TABLE ckpt_streams (ckpt INTEGER NOT NULL, stream INTEGER NOT NULL, len INTEGER NOT NULL,"
    "  PRIMARY KEY (ckpt, stream)) WITHOUT ROWID;"
    "CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;"
    "INSERT INTO counters VALUES ('clock', 0), ('hits', 0), ('misses', 0);";

struct store_kv {
    sqlite3 *db;
    char *dir;
};

/* ---- small helpers ------------------------------------------------------------------------ */

static int db_err(struct store_kv *kv, struct ctx_err *e, const char *what)
{
    int rc = sqlite3_errcode(kv->db);
    int code = rc == SQLITE_NOMEM ? CTX_ENOMEM : (rc == SQLITE_BUSY || rc == SQLITE_LOCKED) ? CTX_EBUSY
                                                                                           : CTX_EIO;
    return ctx_err_set(e, code, "kv cache %s/kv.db: %s: %s", kv->dir, what, sqlite3_errmsg(kv->db));
}

static int exec(struct store_kv *kv, const char *sql, struct ctx_err *e)
{
    if (sqlite3_exec(kv->db, sql, NULL, NULL, NULL) != SQLITE_OK)
        return db_err(kv, e, sql);
    return 0;
}

static sqlite3_stmt *prep(struct store_kv *kv, const char *sql, struct ctx_err *e)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(kv->db, sql, -1, &st, NULL) != SQLITE_OK) {
        db_err(kv, e, sql);
        return NULL;
    }
    return st;
}

/* Run a statement that returns at most one integer. *found (optional) says whether a row came. */
static int query_i64(struct store_kv *kv, const char *sql, int64_t a, int64_t b, int64_t *out, int *found,
                     struct ctx_err *e)
{
    sqlite3_stmt *st = prep(kv, sql, e);
    if (!st)
        return e ? e->code : CTX_EIO;
    sqlite3_bind_int64(st, 1, a);
    if (sqlite3_bind_parameter_count(st) >= 2)
        sqlite3_bind_int64(st, 2, b);
    int rc = sqlite3_step(st);
    if (found)
        *found = rc == SQLITE_ROW;
    if (rc == SQLITE_ROW)
        *out = sqlite3_column_int64(st, 0);
    else if (rc != SQLITE_DONE) {
        sqlite3_finalize(st);
        return db_err(kv, e, sql);
    }
    sqlite3_finalize(st);
    return 0;
}

static int exec_i64(struct store_kv *kv, const char *sql, int64_t a, int64_t b, struct ctx_err *e)
{
    sqlite3_stmt *st = prep(kv, sql, e);
    if (!st)
        return e ? e->code : CTX_EIO;
    sqlite3_bind_int64(st, 1, a);
    if (sqlite3_bind_parameter_count(st) >= 2)
        sqlite3_bind_int64(st, 2, b);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : db_err(kv, e, sql);
}

static int tick(struct store_kv *kv, int64_t *now, struct ctx_err *e)
{
    int rc = exec(kv, "UPDATE counters SET value = value + 1 WHERE name = 'clock'", e);
    if (!rc)
        rc = query_i64(kv, "SELECT value FROM counters WHERE name = 'clock' AND ?1 = ?1", 0, 0, now, NULL, e);
    return rc;
}

static void lineage_dir(const struct store_kv *kv, int64_t lineage, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/L%" PRId64, kv->dir, lineage);
}

static void stream_path(const struct store_kv *kv, int64_t lineage, int k, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/L%" PRId64 "/s%d.bin", kv->dir, lineage, k);
}

static void boundary_path(const struct store_kv *kv, int64_t lineage, uint64_t pos, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/L%" PRId64 "/c%" PRIu64 ".bin", kv->dir, lineage, pos);
}

static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

static int write_full(int fd, const void *buf, size_t n, off_t off)
{
    const char *p = buf;
    while (n) {
        ssize_t w = pwrite(fd, p, n, off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
        off += w;
    }
    return 0;
}

/* Returns bytes read; fewer than n means the file is short. -1 on error. */
static ssize_t read_full(int fd, void *buf, size_t n, off_t off)
{
    char *p = buf;
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, p + got, n - got, off + (off_t)got);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

static void rm_tree(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *de;
    char p[PATH_MAX];
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.' && (!de->d_name[1] || (de->d_name[1] == '.' && !de->d_name[2])))
            continue;
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

/* ---- open / close ------------------------------------------------------------------------- */

/* Lineage directories without an index row are left over from a crash between commit and file
 * removal (or before the first commit of a new lineage): remove them. */
static void sweep_orphans(struct store_kv *kv)
{
    DIR *d = opendir(kv->dir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] != 'L')
            continue;
        char *end;
        long long id = strtoll(de->d_name + 1, &end, 10);
        if (*end || id <= 0)
            continue;
        int64_t one;
        int found = 0;
        if (query_i64(kv, "SELECT 1 FROM lineages WHERE id = ?1", id, 0, &one, &found, NULL) == 0 && !found) {
            char p[PATH_MAX];
            lineage_dir(kv, id, p, sizeof p);
            rm_tree(p);
        }
    }
    closedir(d);
}

int store_kv_open(const char *dir, struct store_kv **out, struct ctx_err *e)
{
    *out = NULL;
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return ctx_err_errno(e, CTX_EIO, errno, "creating kv cache directory %s", dir);
    struct store_kv *kv = calloc(1, sizeof *kv);
    if (!kv || !(kv->dir = strdup(dir))) {
        free(kv);
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    }
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/kv.db", dir);
    if (sqlite3_open_v2(path, &kv->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK) {
        int rc = ctx_err_set(e, CTX_EIO, "opening %s: %s", path, kv->db ? sqlite3_errmsg(kv->db) : "out of memory");
        store_kv_close(kv);
        return rc;
    }
    sqlite3_busy_timeout(kv->db, 5000);
    int64_t version = 0;
    int rc = exec(kv, "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL", e);
    if (!rc)
        rc = query_i64(kv, "PRAGMA user_version", 0, 0, &version, NULL, e);
    if (!rc && version > KV_SCHEMA)
        rc = ctx_err_set(e, CTX_EUNSUPPORTED, "%s has kv schema %" PRId64 ", newer than this build's %d",
                         path, version, KV_SCHEMA);
    if (!rc && version == 0) {
        rc = exec(kv, "BEGIN IMMEDIATE", e);
        if (!rc)
            rc = exec(kv, kv_schema_sql, e);
        if (!rc)
            rc = exec(kv, "PRAGMA user_version = 1; COMMIT", e);
        if (rc)
            sqlite3_exec(kv->db, "ROLLBACK", NULL, NULL, NULL);
    }
    if (rc) {
        store_kv_close(kv);
        return rc;
    }
    sweep_orphans(kv);
    *out = kv;
    return 0;
}

void store_kv_close(struct store_kv *kv)
{
    if (!kv)
        return;
    sqlite3_close(kv->db);
    free(kv->dir);
    free(kv);
}

/* ---- keys --------------------------------------------------------------------------------- */

/* chain step: H(previous hash || little-endian ids of up to one block) */
static XXH128_hash_t chain_step(XXH128_hash_t h, const int32_t *tokens, size_t n)
{
    uint8_t buf[16 + 4 * STORE_KV_BLOCK];
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, h);
    memcpy(buf, c.digest, 16);
    for (size_t i = 0; i < n; i++) {
        uint32_t t = (uint32_t)tokens[i];
        buf[16 + 4 * i] = (uint8_t)t;
        buf[17 + 4 * i] = (uint8_t)(t >> 8);
        buf[18 + 4 * i] = (uint8_t)(t >> 16);
        buf[19 + 4 * i] = (uint8_t)(t >> 24);
    }
    return XXH3_128bits(buf, 16 + 4 * n);
}

static void to_hash(XXH128_hash_t h, struct store_kv_hash *out)
{
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, h);
    memcpy(out->b, c.digest, 16);
}

void store_kv_chain(const char *model_key, const int32_t *tokens, size_t n, struct store_kv_hash *out)
{
    XXH128_hash_t h = XXH3_128bits(model_key, strlen(model_key));
    for (size_t b = 0; b < n / STORE_KV_BLOCK; b++) {
        h = chain_step(h, tokens + b * STORE_KV_BLOCK, STORE_KV_BLOCK);
        to_hash(h, &out[b]);
    }
}

void store_kv_prefix_hash(const char *model_key, const int32_t *tokens, size_t n, struct store_kv_hash *out)
{
    XXH128_hash_t h = XXH3_128bits(model_key, strlen(model_key));
    size_t full = n / STORE_KV_BLOCK;
    for (size_t b = 0; b < full; b++)
        h = chain_step(h, tokens + b * STORE_KV_BLOCK, STORE_KV_BLOCK);
    if (n % STORE_KV_BLOCK)
        h = chain_step(h, tokens + full * STORE_KV_BLOCK, n % STORE_KV_BLOCK);
    to_hash(h, out);
}

/* ---- lineages ----------------------------------------------------------------------------- */

int store_kv_lineage_new(struct store_kv *kv, const char *model_key, int n_streams, int64_t *lineage,
                         struct ctx_err *e)
{
    if (n_streams < 0 || n_streams > STORE_KV_MAX_STREAMS)
        return ctx_err_set(e, CTX_EINVAL, "kv cache: %d streams is outside 0..%d", n_streams,
                           STORE_KV_MAX_STREAMS);
    int64_t now;
    int rc = tick(kv, &now, e);
    if (rc)
        return rc;
    sqlite3_stmt *st = prep(kv, "INSERT INTO lineages (model_key, n_streams, last_used) VALUES (?1, ?2, ?3)", e);
    if (!st)
        return e ? e->code : CTX_EIO;
    sqlite3_bind_text(st, 1, model_key, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(st, 2, n_streams);
    sqlite3_bind_int64(st, 3, now);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return db_err(kv, e, "creating a lineage");
    *lineage = sqlite3_last_insert_rowid(kv->db);
    char d[PATH_MAX];
    lineage_dir(kv, *lineage, d, sizeof d);
    if (mkdir(d, 0700) != 0 && errno != EEXIST) {
        int er = errno;
        exec_i64(kv, "DELETE FROM lineages WHERE id = ?1", *lineage, 0, NULL);
        return ctx_err_errno(e, CTX_EIO, er, "creating %s", d);
    }
    fsync_dir(kv->dir);
    return 0;
}

/* The logical length of a lineage's stream: the end of its last segment, else its base. */
static int stream_head(struct store_kv *kv, int64_t lineage, int k, uint64_t *len, struct ctx_err *e)
{
    int64_t v = 0;
    int found = 0;
    int rc = query_i64(kv, "SELECT off + len FROM segments WHERE lineage = ?1 AND stream = ?2 "
                           "ORDER BY off DESC LIMIT 1", lineage, k, &v, &found, e);
    if (rc)
        return rc;
    if (!found) {
        v = 0;
        rc = query_i64(kv, "SELECT len FROM bases WHERE lineage = ?1 AND stream = ?2", lineage, k, &v, NULL, e);
    }
    *len = (uint64_t)v;
    return rc;
}

static int stream_base(struct store_kv *kv, int64_t lineage, int k, uint64_t *base, struct ctx_err *e)
{
    int64_t v = 0;
    int rc = query_i64(kv, "SELECT len FROM bases WHERE lineage = ?1 AND stream = ?2", lineage, k, &v, NULL, e);
    *base = (uint64_t)v;
    return rc;
}

/* Bytes [from, len) of a produced stream (store_kv_stream.fill) through a bounce buffer, written
 * at file offset at; their checksum (the same XXH3 as of the bytes in one piece) into *xxh. */
#define FILL_CHUNK ((size_t)4 << 20)
static int put_filled(const struct store_kv_stream *s, uint64_t from, int fd, off_t at, uint64_t *xxh,
                      const char *path, struct ctx_err *e)
{
    *xxh = 0;
    if (from == s->len)
        return 0;
    char *buf = malloc(FILL_CHUNK);
    XXH3_state_t *h = XXH3_createState();
    int rc = 0;
    if (!buf || !h || XXH3_64bits_reset(h) != XXH_OK)
        rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
    for (uint64_t off = from; !rc && off < s->len;) {
        size_t n = s->len - off < FILL_CHUNK ? (size_t)(s->len - off) : FILL_CHUNK;
        if ((rc = s->fill(s->ud, off, n, buf, e)))
            break;
        if (write_full(fd, buf, n, at + (off_t)(off - from)) != 0) {
            rc = ctx_err_errno(e, CTX_EIO, errno, "writing %s", path);
            break;
        }
        XXH3_64bits_update(h, buf, n);
        off += n;
    }
    if (!rc)
        *xxh = XXH3_64bits_digest(h);
    XXH3_freeState(h);
    free(buf);
    return rc;
}

/* One stream's step of store_kv_put: its new bytes [old, len) written at their logical place in its
 * file, their checksum, then the file cut at len (bytes a crash left past the last committed segment
 * are overwritten or dropped) and fsynced. */
struct put_stream {
    const struct store_kv_stream *s;
    uint64_t old, base, xxh;
    char path[PATH_MAX];
    int rc;
    struct ctx_err err;
};

static void put_stream_run(void *ud, size_t i, int tid)
{
    (void)tid;
    struct put_stream *p = ((struct put_stream **)ud)[i];
    const struct store_kv_stream *s = p->s;
    int fd = open(p->path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        p->rc = ctx_err_errno(&p->err, CTX_EIO, errno, "opening %s", p->path);
        return;
    }
    uint64_t add = s->len - p->old;
    if (s->fill) {
        p->rc = put_filled(s, p->old, fd, (off_t)(p->old - p->base), &p->xxh, p->path, &p->err);
    } else {
        const char *src = (const char *)s->data + p->old;
        if (add && write_full(fd, src, (size_t)add, (off_t)(p->old - p->base)) != 0)
            p->rc = ctx_err_errno(&p->err, CTX_EIO, errno, "writing %s", p->path);
        p->xxh = add ? XXH3_64bits(src, (size_t)add) : 0;
    }
    if (!p->rc && (ftruncate(fd, (off_t)(s->len - p->base)) != 0 || fsync(fd) != 0))
        p->rc = ctx_err_errno(&p->err, CTX_EIO, errno, "writing %s", p->path);
    close(fd);
}

static int by_bytes_desc(const void *a, const void *b)
{
    const struct put_stream *x = *(struct put_stream *const *)a, *y = *(struct put_stream *const *)b;
    uint64_t nx = x->s->len - x->old, ny = y->s->len - y->old;
    return nx < ny ? 1 : nx > ny ? -1 : (x < y ? -1 : x > y);
}

/* Every stream's put_stream_run, the largest first, on up to PUT_THREADS threads (inline when no pool
 * can be had); the error of the first failing stream in stream order. Producers (store_kv_stream.fill)
 * run on those threads, several at once for different streams. */
#define PUT_THREADS 8
static _Atomic int put_threads_forced; /* store_kv_put_threads; 0: the default */

void store_kv_put_threads(int n) { put_threads_forced = n < 0 ? 0 : n; }

static int put_streams(struct put_stream *ps, int n, struct ctx_err *e)
{
    struct put_stream **order = malloc(((size_t)n + 1) * sizeof *order);
    if (!order)
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    for (int k = 0; k < n; k++)
        order[k] = &ps[k];
    qsort(order, (size_t)n, sizeof *order, by_bytes_desc);
    int nt = ctx_cpu_count();
    nt = nt > PUT_THREADS ? PUT_THREADS : nt < 2 ? 2 : nt; /* packing is CPU work; the fsyncs overlap too */
    if (put_threads_forced > 0)
        nt = put_threads_forced;
    struct ctx_err pe = {0};
    struct ctx_pool *pool = n > 1 && nt > 1 ? ctx_pool_new(nt, &pe) : NULL; /* NULL: inline */
    if (pool)
        ctx_pool_for(pool, (size_t)n, 1, put_stream_run, order);
    else
        for (int k = 0; k < n; k++)
            put_stream_run(order, (size_t)k, 0);
    ctx_pool_free(pool);
    free(order);
    for (int k = 0; k < n; k++)
        if (ps[k].rc) {
            if (e)
                *e = ps[k].err;
            return ps[k].rc;
        }
    return 0;
}

int store_kv_put(struct store_kv *kv, int64_t lineage, uint64_t pos, const struct store_kv_hash *chain,
                 const void *boundary, size_t boundary_len, const struct store_kv_stream *streams,
                 int n_streams, struct ctx_err *e)
{
    int64_t ns = 0, last = 0;
    int found = 0;
    int rc = query_i64(kv, "SELECT n_streams FROM lineages WHERE id = ?1", lineage, 0, &ns, &found, e);
    if (rc)
        return rc;
    if (!found)
        return ctx_err_set(e, CTX_ENOTFOUND, "kv cache: no lineage %" PRId64, lineage);
    if (ns != n_streams)
        return ctx_err_set(e, CTX_EINVAL, "kv cache: lineage %" PRId64 " has %" PRId64 " streams, not %d",
                           lineage, ns, n_streams);
    if (pos == 0)
        return ctx_err_set(e, CTX_EINVAL, "kv cache: a checkpoint at position 0 holds nothing");
    rc = query_i64(kv, "SELECT last_pos FROM lineages WHERE id = ?1", lineage, 0, &last, NULL, e);
    if (rc)
        return rc;
    if ((int64_t)pos <= last)
        return ctx_err_set(e, CTX_EINVAL, "kv cache: checkpoint at %" PRIu64 " is not past lineage %" PRId64
                           "'s last checkpoint at %" PRId64, pos, lineage, last);

    /* 1. stream bytes beyond what the lineage holds, fsynced: where each stream stands (the index,
     * on this thread), then the streams' files on up to PUT_THREADS threads (a produced stream packs
     * its bytes as it goes, which sets the pace: a 131K-token slice of V4-Flash is ~0.46 GB packed) */
    uint64_t *old = calloc((size_t)n_streams + 1, sizeof *old);
    uint64_t *xxh = calloc((size_t)n_streams + 1, sizeof *xxh);
    struct put_stream *ps = calloc((size_t)n_streams + 1, sizeof *ps);
    if (!old || !xxh || !ps) {
        free(old);
        free(xxh);
        free(ps);
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    }
    uint64_t written = 0;
    for (int k = 0; k < n_streams && !rc; k++) {
        uint64_t base;
        rc = stream_head(kv, lineage, k, &old[k], e);
        if (!rc)
            rc = stream_base(kv, lineage, k, &base, e);
        if (rc)
            break;
        if (streams[k].len < old[k]) {
            rc = ctx_err_set(e, CTX_EINVAL, "kv cache: stream %d of lineage %" PRId64 " shrank from %" PRIu64
                             " to %" PRIu64 " bytes; streams are append-only", k, lineage, old[k], streams[k].len);
            break;
        }
        ps[k] = (struct put_stream){.s = &streams[k], .old = old[k], .base = base};
        stream_path(kv, lineage, k, ps[k].path, sizeof ps[k].path);
        written += streams[k].len - old[k];
    }
    if (!rc)
        rc = put_streams(ps, n_streams, e);
    for (int k = 0; k < n_streams && !rc; k++)
        xxh[k] = ps[k].xxh;
    free(ps);

    /* 2. the boundary file, atomically */
    char bp[PATH_MAX], tmp[PATH_MAX + 8];
    boundary_path(kv, lineage, pos, bp, sizeof bp);
    snprintf(tmp, sizeof tmp, "%s.tmp", bp);
    if (!rc) {
        int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0 || write_full(fd, boundary, boundary_len, 0) != 0 || fsync(fd) != 0) {
            rc = ctx_err_errno(e, CTX_EIO, errno, "writing %s", tmp);
            unlink(tmp);
        } else if (rename(tmp, bp) != 0) {
            rc = ctx_err_errno(e, CTX_EIO, errno, "renaming %s", tmp);
            unlink(tmp);
        }
        if (fd >= 0)
            close(fd);
        char d[PATH_MAX];
        lineage_dir(kv, lineage, d, sizeof d);
        if (!rc)
            fsync_dir(d);
    }

    /* 3. the rows, in one transaction: only now does the checkpoint exist */
    int64_t now = 0;
    if (!rc)
        rc = exec(kv, "BEGIN IMMEDIATE", e);
    if (!rc)
        rc = tick(kv, &now, e);
    sqlite3_stmt *seg = NULL, *ck = NULL, *cs = NULL;
    if (!rc) {
        seg = prep(kv, "INSERT INTO segments VALUES (?1, ?2, ?3, ?4, ?5)", e);
        ck = prep(kv, "INSERT INTO checkpoints (lineage, pos, chain, boundary_len, boundary_xxh) "
                      "VALUES (?1, ?2, ?3, ?4, ?5)", e);
        cs = prep(kv, "INSERT INTO ckpt_streams VALUES (?1, ?2, ?3)", e);
        if (!seg || !ck || !cs)
            rc = e ? e->code : CTX_EIO;
    }
    for (int k = 0; k < n_streams && !rc; k++) {
        if (streams[k].len == old[k])
            continue;
        sqlite3_reset(seg);
        sqlite3_bind_int64(seg, 1, lineage);
        sqlite3_bind_int(seg, 2, k);
        sqlite3_bind_int64(seg, 3, (int64_t)old[k]);
        sqlite3_bind_int64(seg, 4, (int64_t)(streams[k].len - old[k]));
        sqlite3_bind_int64(seg, 5, (int64_t)xxh[k]);
        if (sqlite3_step(seg) != SQLITE_DONE)
            rc = db_err(kv, e, "recording a segment");
    }
    int64_t ckid = 0;
    if (!rc) {
        sqlite3_bind_int64(ck, 1, lineage);
        sqlite3_bind_int64(ck, 2, (int64_t)pos);
        sqlite3_bind_blob(ck, 3, chain->b, 16, SQLITE_TRANSIENT);
        sqlite3_bind_int64(ck, 4, (int64_t)boundary_len);
        sqlite3_bind_int64(ck, 5, (int64_t)XXH3_64bits(boundary, boundary_len));
        if (sqlite3_step(ck) != SQLITE_DONE)
            rc = db_err(kv, e, "recording a checkpoint");
        ckid = sqlite3_last_insert_rowid(kv->db);
    }
    for (int k = 0; k < n_streams && !rc; k++) {
        sqlite3_reset(cs);
        sqlite3_bind_int64(cs, 1, ckid);
        sqlite3_bind_int(cs, 2, k);
        sqlite3_bind_int64(cs, 3, (int64_t)streams[k].len);
        if (sqlite3_step(cs) != SQLITE_DONE)
            rc = db_err(kv, e, "recording checkpoint streams");
    }
    sqlite3_finalize(seg);
    sqlite3_finalize(ck);
    sqlite3_finalize(cs);
    if (!rc) {
        sqlite3_stmt *up = prep(kv, "UPDATE lineages SET bytes = bytes + ?2, last_pos = ?3, last_used = ?4 "
                                    "WHERE id = ?1", e);
        if (!up)
            rc = e ? e->code : CTX_EIO;
        else {
            sqlite3_bind_int64(up, 1, lineage);
            sqlite3_bind_int64(up, 2, (int64_t)(written + boundary_len));
            sqlite3_bind_int64(up, 3, (int64_t)pos);
            sqlite3_bind_int64(up, 4, now);
            if (sqlite3_step(up) != SQLITE_DONE)
                rc = db_err(kv, e, "updating the lineage");
            sqlite3_finalize(up);
        }
    }
    if (!rc)
        rc = exec(kv, "COMMIT", e);
    if (rc) {
        sqlite3_exec(kv->db, "ROLLBACK", NULL, NULL, NULL);
        unlink(bp);
    }
    free(old);
    free(xxh);
    return rc;
}

/* ---- reading ------------------------------------------------------------------------------ */

void store_kv_ckpt_clear(struct store_kv_ckpt *c)
{
    free(c->stream_len);
    memset(c, 0, sizeof *c);
}

static int load_ckpt(struct store_kv *kv, int64_t id, struct store_kv_ckpt *c, struct ctx_err *e)
{
    memset(c, 0, sizeof *c);
    sqlite3_stmt *st = prep(kv, "SELECT c.lineage, c.pos, c.boundary_len, l.n_streams FROM checkpoints c "
                                "JOIN lineages l ON l.id = c.lineage WHERE c.id = ?1", e);
    if (!st)
        return e ? e->code : CTX_EIO;
    sqlite3_bind_int64(st, 1, id);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        sqlite3_finalize(st);
        return rc == SQLITE_DONE ? ctx_err_set(e, CTX_ENOTFOUND, "kv cache: no checkpoint %" PRId64, id)
                                 : db_err(kv, e, "reading a checkpoint");
    }
    c->id = id;
    c->lineage = sqlite3_column_int64(st, 0);
    c->pos = (uint64_t)sqlite3_column_int64(st, 1);
    c->boundary_len = (size_t)sqlite3_column_int64(st, 2);
    c->n_streams = sqlite3_column_int(st, 3);
    sqlite3_finalize(st);
    c->stream_len = calloc((size_t)c->n_streams + 1, sizeof *c->stream_len);
    if (!c->stream_len)
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    st = prep(kv, "SELECT stream, len FROM ckpt_streams WHERE ckpt = ?1", e);
    if (!st) {
        store_kv_ckpt_clear(c);
        return e ? e->code : CTX_EIO;
    }
    sqlite3_bind_int64(st, 1, id);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int k = sqlite3_column_int(st, 0);
        if (k >= 0 && k < c->n_streams)
            c->stream_len[k] = (uint64_t)sqlite3_column_int64(st, 1);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        store_kv_ckpt_clear(c);
        return db_err(kv, e, "reading checkpoint streams");
    }
    return 0;
}

int store_kv_get(struct store_kv *kv, int64_t lineage, uint64_t pos, struct store_kv_ckpt *out,
                 struct ctx_err *e)
{
    int64_t id = 0;
    int found = 0;
    int rc = query_i64(kv, "SELECT id FROM checkpoints WHERE lineage = ?1 AND pos = ?2", lineage,
                       (int64_t)pos, &id, &found, e);
    if (rc)
        return rc;
    if (!found)
        return ctx_err_set(e, CTX_ENOTFOUND, "kv cache: lineage %" PRId64 " has no checkpoint at %" PRIu64,
                           lineage, pos);
    return load_ckpt(kv, id, out, e);
}

/* Try candidates (hash, pos) in order; the first that is stored wins. */
static int lookup_candidates(struct store_kv *kv, const char *model_key, const struct store_kv_hash *exact,
                             uint64_t exact_pos, const struct store_kv_hash *chain, size_t n_blocks,
                             struct store_kv_ckpt *out, int *found, struct ctx_err *e)
{
    *found = 0;
    memset(out, 0, sizeof *out);
    sqlite3_stmt *st = prep(kv, "SELECT c.id, c.lineage FROM checkpoints c JOIN lineages l ON l.id = c.lineage "
                                "WHERE c.chain = ?1 AND c.pos = ?2 AND l.model_key = ?3 "
                                "ORDER BY l.last_used DESC LIMIT 1", e);
    if (!st)
        return e ? e->code : CTX_EIO;
    int64_t id = 0, lineage = 0;
    for (size_t k = n_blocks + (exact ? 1 : 0); k-- > 0 && !*found;) {
        /* k == n_blocks is the exact candidate, tried first; then blocks from the last */
        const struct store_kv_hash *h = k == n_blocks ? exact : &chain[k];
        uint64_t pos = k == n_blocks ? exact_pos : (uint64_t)(k + 1) * STORE_KV_BLOCK;
        sqlite3_reset(st);
        sqlite3_bind_blob(st, 1, h->b, 16, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, (int64_t)pos);
        sqlite3_bind_text(st, 3, model_key, -1, SQLITE_STATIC);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            *found = 1;
            id = sqlite3_column_int64(st, 0);
            lineage = sqlite3_column_int64(st, 1);
        } else if (rc != SQLITE_DONE) {
            sqlite3_finalize(st);
            return db_err(kv, e, "looking up a prefix");
        }
    }
    sqlite3_finalize(st);
    int rc = exec(kv, *found ? "UPDATE counters SET value = value + 1 WHERE name = 'hits'"
                             : "UPDATE counters SET value = value + 1 WHERE name = 'misses'", e);
    if (rc || !*found)
        return rc;
    int64_t now;
    rc = tick(kv, &now, e);
    if (!rc)
        rc = exec_i64(kv, "UPDATE lineages SET last_used = ?2 WHERE id = ?1", lineage, now, e);
    if (!rc)
        rc = load_ckpt(kv, id, out, e);
    if (rc)
        *found = 0;
    return rc;
}

int store_kv_lookup(struct store_kv *kv, const char *model_key, const struct store_kv_hash *chain,
                    size_t n_blocks, struct store_kv_ckpt *out, int *found, struct ctx_err *e)
{
    return lookup_candidates(kv, model_key, NULL, 0, chain, n_blocks, out, found, e);
}

int store_kv_lookup_tokens(struct store_kv *kv, const char *model_key, const int32_t *tokens, size_t n,
                           struct store_kv_ckpt *out, int *found, struct ctx_err *e)
{
    size_t nb = n / STORE_KV_BLOCK;
    struct store_kv_hash *chain = malloc((nb + 1) * sizeof *chain);
    if (!chain)
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    store_kv_chain(model_key, tokens, n, chain);
    struct store_kv_hash exact;
    store_kv_prefix_hash(model_key, tokens, n, &exact);
    /* with n a multiple of 128 the exact candidate is the last block: try it once */
    int rc = n % STORE_KV_BLOCK ? lookup_candidates(kv, model_key, &exact, n, chain, nb, out, found, e)
                                : lookup_candidates(kv, model_key, NULL, 0, chain, nb, out, found, e);
    free(chain);
    return rc;
}

static int drop_tree(struct store_kv *kv, int64_t lineage, struct ctx_err *e);

/* Data that fails verification: drop its lineage (and what was forked from it) and say why. */
static int corrupt(struct store_kv *kv, int64_t lineage, struct ctx_err *e, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int corrupt(struct store_kv *kv, int64_t lineage, struct ctx_err *e, const char *fmt, ...)
{
    char msg[CTX_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    struct ctx_err ignored = {0};
    drop_tree(kv, lineage, &ignored);
    return ctx_err_set(e, CTX_EFORMAT, "kv cache: %s; dropped lineage %" PRId64 " (it will be recomputed)",
                       msg, lineage);
}

int store_kv_read_boundary(struct store_kv *kv, const struct store_kv_ckpt *c, void *buf,
                           struct ctx_err *e)
{
    int64_t want = 0;
    int found = 0;
    int rc = query_i64(kv, "SELECT boundary_xxh FROM checkpoints WHERE id = ?1 AND ?2 = ?2", c->id, 0, &want,
                       &found, e);
    if (rc)
        return rc;
    if (!found)
        return ctx_err_set(e, CTX_ENOTFOUND, "kv cache: checkpoint %" PRId64 " is gone", c->id);
    char p[PATH_MAX];
    boundary_path(kv, c->lineage, c->pos, p, sizeof p);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return corrupt(kv, c->lineage, e, "%s is missing", p);
    struct stat st;
    ssize_t got = fstat(fd, &st) == 0 && (size_t)st.st_size == c->boundary_len
                      ? read_full(fd, buf, c->boundary_len, 0) : -2;
    close(fd);
    if (got != (ssize_t)c->boundary_len)
        return corrupt(kv, c->lineage, e, "%s is %s (expected %zu bytes)", p,
                       got == -2 ? "the wrong size" : "short", c->boundary_len);
    if (XXH3_64bits(buf, c->boundary_len) != (uint64_t)want)
        return corrupt(kv, c->lineage, e, "%s fails its checksum", p);
    return 0;
}

/* Reading streams: the SQLite work (which segments, in which files) is done first on the caller's
 * thread and gives a plan of segment reads; the reads and their checksums then run on several
 * threads (a 500K-token V4-Flash checkpoint is ~1.8 GB in 86 streams: one thread reads it at
 * ~1.2 GB/s from the page cache, the disks we measured want several reads in flight), and the
 * first failing segment in plan order is reported and drops its lineage, as a sequential read
 * would. */
struct seg_read {
    int file;            /* index into the plan's files */
    uint64_t file_off, n, xxh;
    uint64_t stream_off; /* where the bytes go: dst = buf + stream_off */
    char *dst;
    ssize_t got;         /* filled by the read: bytes read, -1 on error */
    int sum_ok;
};
struct seg_file {
    int fd;
    int64_t lineage;
    uint64_t base; /* stream offset of the file's first byte */
    char *path;
};
struct read_plan {
    struct seg_read *r;
    size_t n, cap;
    struct seg_file *f;
    size_t nf, fcap;
};

static void plan_free(struct read_plan *pl)
{
    for (size_t i = 0; i < pl->nf; i++) {
        close(pl->f[i].fd);
        free(pl->f[i].path);
    }
    free(pl->f);
    free(pl->r);
    *pl = (struct read_plan){0};
}

/* Plan buf[0, len) of lineage's logical stream k, recursing into the parent for the base. */
static int plan_stream_of(struct store_kv *kv, struct read_plan *pl, int64_t lineage, int k, uint64_t len, char *buf,
                          struct ctx_err *e)
{
    uint64_t base;
    int rc = stream_base(kv, lineage, k, &base, e);
    if (rc)
        return rc;
    if (base > len)
        base = len; /* not reached: a checkpoint is never shorter than its lineage's base */
    if (base) {
        int64_t parent = 0;
        int found = 0;
        rc = query_i64(kv, "SELECT parent FROM lineages WHERE id = ?1 AND ?2 = ?2", lineage, 0, &parent, &found, e);
        if (rc)
            return rc;
        if (!found || !parent)
            return corrupt(kv, lineage, e, "lineage %" PRId64 " has a base but no parent", lineage);
        rc = plan_stream_of(kv, pl, parent, k, base, buf, e);
        if (rc)
            return rc;
    }
    if (len == base)
        return 0;
    char p[PATH_MAX];
    stream_path(kv, lineage, k, p, sizeof p);
    if (pl->nf == pl->fcap) {
        size_t cap = pl->fcap ? 2 * pl->fcap : 16;
        struct seg_file *f = realloc(pl->f, cap * sizeof *f);
        if (!f)
            return ctx_err_set(e, CTX_ENOMEM, "out of memory");
        pl->f = f;
        pl->fcap = cap;
    }
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return corrupt(kv, lineage, e, "%s is missing", p);
    char *path = strdup(p);
    if (!path) {
        close(fd);
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    }
    int file = (int)pl->nf++;
    pl->f[file] = (struct seg_file){fd, lineage, base, path};
    sqlite3_stmt *st = prep(kv, "SELECT off, len, xxh FROM segments WHERE lineage = ?1 AND stream = ?2 "
                                "AND off < ?3 ORDER BY off", e);
    if (!st)
        return e ? e->code : CTX_EIO;
    sqlite3_bind_int64(st, 1, lineage);
    sqlite3_bind_int(st, 2, k);
    sqlite3_bind_int64(st, 3, (int64_t)len);
    uint64_t at = base;
    while (!rc && sqlite3_step(st) == SQLITE_ROW) {
        uint64_t off = (uint64_t)sqlite3_column_int64(st, 0), n = (uint64_t)sqlite3_column_int64(st, 1);
        uint64_t want = (uint64_t)sqlite3_column_int64(st, 2);
        if (off != at || off + n > len) {
            rc = corrupt(kv, lineage, e, "segments of %s do not tile [%" PRIu64 ", %" PRIu64 ")", p, base, len);
            break;
        }
        if (pl->n == pl->cap) {
            size_t cap = pl->cap ? 2 * pl->cap : 64;
            struct seg_read *r = realloc(pl->r, cap * sizeof *r);
            if (!r) {
                rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
                break;
            }
            pl->r = r;
            pl->cap = cap;
        }
        pl->r[pl->n++] = (struct seg_read){file, off - base, n, want, off, buf + off, 0, 0};
        at = off + n;
    }
    sqlite3_finalize(st);
    if (!rc && at != len)
        rc = corrupt(kv, lineage, e, "%s holds %" PRIu64 " of the %" PRIu64 " bytes recorded", p, at - base, len - base);
    return rc;
}

/* Reads of more than this are split, so that one long segment spreads over the threads too. */
#define READ_PIECE ((uint64_t)16 << 20)
#define READ_THREADS 8

struct piece {
    size_t seg;
    uint64_t from, n;
};
struct plan_run {
    struct read_plan *pl;
    struct piece *pc;
    ssize_t *got; /* per piece */
};

static void read_piece(void *ud, size_t i, int tid)
{
    (void)tid;
    struct plan_run *pr = ud;
    const struct piece *pc = &pr->pc[i];
    const struct seg_read *r = &pr->pl->r[pc->seg];
    pr->got[i] = read_full(pr->pl->f[r->file].fd, r->dst + pc->from, (size_t)pc->n, (off_t)(r->file_off + pc->from));
}

static void sum_seg(void *ud, size_t i, int tid)
{
    (void)tid;
    struct seg_read *r = &((struct read_plan *)ud)->r[i];
    r->sum_ok = r->got == (ssize_t)r->n && XXH3_64bits(r->dst, (size_t)r->n) == r->xxh;
}

/* Run the plan's reads (in pieces, on up to READ_THREADS threads), then the checksums; report the
 * first failing segment in plan order. */
static int plan_run(struct store_kv *kv, struct read_plan *pl, struct ctx_err *e)
{
    size_t np = 0;
    for (size_t i = 0; i < pl->n; i++)
        np += (size_t)((pl->r[i].n + READ_PIECE - 1) / READ_PIECE);
    struct piece *pc = np ? malloc(np * sizeof *pc) : NULL;
    ssize_t *got = np ? malloc(np * sizeof *got) : NULL;
    if (np && (!pc || !got)) {
        free(pc);
        free(got);
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    }
    np = 0;
    for (size_t i = 0; i < pl->n; i++)
        for (uint64_t from = 0; from < pl->r[i].n; from += READ_PIECE)
            pc[np++] = (struct piece){i, from, pl->r[i].n - from < READ_PIECE ? pl->r[i].n - from : READ_PIECE};
    int nt = ctx_cpu_count();
    nt = nt > READ_THREADS ? READ_THREADS : nt < 2 ? 2 : nt; /* reads wait on the disk, not the CPU */
    struct ctx_err pe = {0};
    struct ctx_pool *pool = np > 1 ? ctx_pool_new(nt, &pe) : NULL; /* NULL: inline */
    struct plan_run pr = {pl, pc, got};
    if (pool)
        ctx_pool_for(pool, np, 1, read_piece, &pr);
    else
        for (size_t i = 0; i < np; i++)
            read_piece(&pr, i, 0);
    /* a segment's bytes read: the sum of its pieces, short at the first short piece */
    size_t q = 0;
    for (size_t i = 0; i < pl->n; i++) {
        struct seg_read *r = &pl->r[i];
        r->got = 0;
        for (uint64_t from = 0; from < r->n; from += READ_PIECE, q++) {
            if (r->got < 0 || r->got != (ssize_t)from)
                continue; /* an earlier piece was short or failed */
            r->got = got[q] < 0 ? -1 : r->got + got[q];
        }
    }
    if (pool)
        ctx_pool_for(pool, pl->n, 1, sum_seg, pl);
    else
        for (size_t i = 0; i < pl->n; i++)
            sum_seg(pl, i, 0);
    ctx_pool_free(pool);
    free(pc);
    free(got);
    for (size_t i = 0; i < pl->n; i++) {
        const struct seg_read *r = &pl->r[i];
        const struct seg_file *f = &pl->f[r->file];
        if (r->got != (ssize_t)r->n)
            return corrupt(kv, f->lineage, e, "%s is truncated at byte %" PRIu64, f->path,
                           r->stream_off - f->base + (r->got > 0 ? (uint64_t)r->got : 0));
        if (!r->sum_ok)
            return corrupt(kv, f->lineage, e, "%s bytes [%" PRIu64 ", %" PRIu64 ") fail their checksum", f->path,
                           r->stream_off - f->base, r->stream_off - f->base + r->n);
    }
    return 0;
}

int store_kv_read_streams(struct store_kv *kv, const struct store_kv_ckpt *c, void *const *bufs, struct ctx_err *e)
{
    struct read_plan pl = {0};
    int rc = 0;
    for (int k = 0; k < c->n_streams && !rc; k++)
        if (bufs[k] && c->stream_len[k])
            rc = plan_stream_of(kv, &pl, c->lineage, k, c->stream_len[k], bufs[k], e);
    if (!rc)
        rc = plan_run(kv, &pl, e);
    plan_free(&pl);
    return rc;
}

int store_kv_read_stream(struct store_kv *kv, const struct store_kv_ckpt *c, int stream, void *buf,
                         struct ctx_err *e)
{
    if (stream < 0 || stream >= c->n_streams)
        return ctx_err_set(e, CTX_EINVAL, "kv cache: stream %d outside 0..%d", stream, c->n_streams - 1);
    struct read_plan pl = {0};
    int rc = plan_stream_of(kv, &pl, c->lineage, stream, c->stream_len[stream], buf, e);
    if (!rc)
        rc = plan_run(kv, &pl, e);
    plan_free(&pl);
    return rc;
}

/* ---- forks, eviction, statistics ---------------------------------------------------------- */

int store_kv_fork(struct store_kv *kv, const struct store_kv_ckpt *c, int64_t *lineage, struct ctx_err *e)
{
    char key[1024];
    sqlite3_stmt *st = prep(kv, "SELECT model_key FROM lineages WHERE id = ?1", e);
    if (!st)
        return e ? e->code : CTX_EIO;
    sqlite3_bind_int64(st, 1, c->lineage);
    if (sqlite3_step(st) != SQLITE_ROW) {
        sqlite3_finalize(st);
        return ctx_err_set(e, CTX_ENOTFOUND, "kv cache: no lineage %" PRId64, c->lineage);
    }
    snprintf(key, sizeof key, "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    int rc = store_kv_lineage_new(kv, key, c->n_streams, lineage, e);
    if (rc)
        return rc;
    rc = exec(kv, "BEGIN IMMEDIATE", e);
    if (!rc)
        rc = exec_i64(kv, "UPDATE lineages SET parent = ?2 WHERE id = ?1", *lineage, c->lineage, e);
    if (!rc)
        rc = exec_i64(kv, "UPDATE lineages SET parent_pos = ?2, last_pos = ?2 WHERE id = ?1", *lineage,
                      (int64_t)c->pos, e);
    for (int k = 0; k < c->n_streams && !rc; k++) {
        st = prep(kv, "INSERT INTO bases VALUES (?1, ?2, ?3)", e);
        if (!st) {
            rc = e ? e->code : CTX_EIO;
            break;
        }
        sqlite3_bind_int64(st, 1, *lineage);
        sqlite3_bind_int(st, 2, k);
        sqlite3_bind_int64(st, 3, (int64_t)c->stream_len[k]);
        if (sqlite3_step(st) != SQLITE_DONE)
            rc = db_err(kv, e, "recording a fork's base");
        sqlite3_finalize(st);
    }
    if (!rc)
        rc = exec(kv, "COMMIT", e);
    if (rc) {
        sqlite3_exec(kv->db, "ROLLBACK", NULL, NULL, NULL);
        struct ctx_err ignored = {0};
        drop_tree(kv, *lineage, &ignored);
    }
    return rc;
}

/* Collect lineage and all its descendants (breadth first) into a malloc'd list. */
static int collect_tree(struct store_kv *kv, int64_t root, int64_t **list, size_t *n, struct ctx_err *e)
{
    size_t cap = 16;
    *list = malloc(cap * sizeof **list);
    if (!*list)
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    (*list)[0] = root;
    *n = 1;
    sqlite3_stmt *st = prep(kv, "SELECT id FROM lineages WHERE parent = ?1", e);
    if (!st)
        return e ? e->code : CTX_EIO;
    for (size_t i = 0; i < *n; i++) {
        sqlite3_reset(st);
        sqlite3_bind_int64(st, 1, (*list)[i]);
        while (sqlite3_step(st) == SQLITE_ROW) {
            if (*n == cap) {
                int64_t *nl = realloc(*list, 2 * cap * sizeof *nl);
                if (!nl) {
                    sqlite3_finalize(st);
                    return ctx_err_set(e, CTX_ENOMEM, "out of memory");
                }
                *list = nl;
                cap *= 2;
            }
            (*list)[(*n)++] = sqlite3_column_int64(st, 0);
        }
    }
    sqlite3_finalize(st);
    return 0;
}

static int drop_tree(struct store_kv *kv, int64_t lineage, struct ctx_err *e)
{
    int64_t *list = NULL;
    size_t n = 0;
    int rc = collect_tree(kv, lineage, &list, &n, e);
    if (!rc)
        rc = exec(kv, "BEGIN IMMEDIATE", e);
    static const char *const dels[] = {
        "DELETE FROM ckpt_streams WHERE ckpt IN (SELECT id FROM checkpoints WHERE lineage = ?1) AND ?2 = ?2",
        "DELETE FROM checkpoints WHERE lineage = ?1 AND ?2 = ?2",
        "DELETE FROM segments WHERE lineage = ?1 AND ?2 = ?2",
        "DELETE FROM bases WHERE lineage = ?1 AND ?2 = ?2",
        "DELETE FROM lineages WHERE id = ?1 AND ?2 = ?2",
    };
    for (size_t i = 0; i < n && !rc; i++)
        for (size_t d = 0; d < sizeof dels / sizeof dels[0] && !rc; d++)
            rc = exec_i64(kv, dels[d], list[i], 0, e);
    if (!rc)
        rc = exec(kv, "COMMIT", e);
    if (rc) {
        sqlite3_exec(kv->db, "ROLLBACK", NULL, NULL, NULL);
    } else {
        /* Files go after the commit; a crash in between leaves orphans that open() sweeps. */
        for (size_t i = 0; i < n; i++) {
            char d[PATH_MAX];
            lineage_dir(kv, list[i], d, sizeof d);
            rm_tree(d);
        }
    }
    free(list);
    return rc;
}

int store_kv_drop(struct store_kv *kv, int64_t lineage, struct ctx_err *e)
{
    return drop_tree(kv, lineage, e);
}

int store_kv_evict(struct store_kv *kv, uint64_t budget, int64_t keep, uint64_t *freed, struct ctx_err *e)
{
    *freed = 0;
    for (;;) {
        int64_t total = 0;
        int rc = query_i64(kv, "SELECT coalesce(sum(bytes), 0) FROM lineages WHERE ?1 = ?1", 0, 0, &total, NULL, e);
        if (rc)
            return rc;
        if ((uint64_t)total <= budget)
            return 0;
        /* keep and its ancestors are protected: its data reads through them */
        int64_t victim = 0;
        int found = 0;
        rc = query_i64(kv,
                       "WITH RECURSIVE anc(id) AS (SELECT ?1 UNION SELECT l.parent FROM lineages l "
                       "JOIN anc ON l.id = anc.id WHERE l.parent IS NOT NULL) "
                       "SELECT id FROM lineages WHERE id NOT IN (SELECT id FROM anc) AND ?2 = ?2 "
                       "ORDER BY last_used LIMIT 1",
                       keep, 0, &victim, &found, e);
        if (rc)
            return rc;
        if (!found)
            return 0; /* only protected data is left */
        int64_t *list = NULL;
        size_t n = 0;
        rc = collect_tree(kv, victim, &list, &n, e);
        int64_t bytes = 0;
        for (size_t i = 0; i < n && !rc; i++) {
            int64_t b = 0;
            rc = query_i64(kv, "SELECT bytes FROM lineages WHERE id = ?1 AND ?2 = ?2", list[i], 0, &b, NULL, e);
            bytes += b;
        }
        int protected = 0;
        for (size_t i = 0; i < n && keep; i++)
            protected |= list[i] == keep;
        free(list);
        if (rc)
            return rc;
        if (protected)
            return 0; /* cannot happen: keep's ancestors are excluded */
        rc = drop_tree(kv, victim, e);
        if (rc)
            return rc;
        *freed += (uint64_t)bytes;
    }
}

int store_kv_stats(struct store_kv *kv, struct store_kv_stats *s, struct ctx_err *e)
{
    memset(s, 0, sizeof *s);
    int64_t v = 0;
    int rc = query_i64(kv, "SELECT count(*) FROM lineages WHERE ?1 = ?1", 0, 0, &v, NULL, e);
    s->lineages = (uint64_t)v;
    if (!rc)
        rc = query_i64(kv, "SELECT count(*) FROM checkpoints WHERE ?1 = ?1", 0, 0, &v, NULL, e);
    s->checkpoints = (uint64_t)v;
    if (!rc)
        rc = query_i64(kv, "SELECT coalesce(sum(bytes), 0) FROM lineages WHERE ?1 = ?1", 0, 0, &v, NULL, e);
    s->bytes = (uint64_t)v;
    if (!rc)
        rc = query_i64(kv, "SELECT value FROM counters WHERE name = 'hits' AND ?1 = ?1", 0, 0, &v, NULL, e);
    s->hits = (uint64_t)v;
    if (!rc)
        rc = query_i64(kv, "SELECT value FROM counters WHERE name = 'misses' AND ?1 = ?1", 0, 0, &v, NULL, e);
    s->misses = (uint64_t)v;
    return rc;
}

int store_kv_clear(struct store_kv *kv, struct ctx_err *e)
{
    for (;;) {
        int64_t root = 0;
        int found = 0;
        int rc = query_i64(kv, "SELECT id FROM lineages WHERE parent IS NULL AND ?1 = ?1 LIMIT 1", 0, 0, &root,
                           &found, e);
        if (rc)
            return rc;
        if (!found)
            break;
        rc = drop_tree(kv, root, e);
        if (rc)
            return rc;
    }
    return exec(kv, "UPDATE counters SET value = 0 WHERE name IN ('hits', 'misses')", e);
}
