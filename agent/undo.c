/* Per-turn undo records as git blobs + manifests (undo.h). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "undo.h"

#include <dirent.h>
#include <errno.h>
#include <git2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "json.h"
#include "tools.h"

struct undo_entry {
    char *path;
    bool existed;
    git_oid before;
    unsigned mode;
};

struct agent_undo {
    git_repository *repo;
    char *root;   /* ends without '/' */
    char *dir;    /* <git dir>/ctx-undo */
    bool open_turn;
    char *label;
    struct undo_entry *ents;
    size_t n;
};

static int git_fail(struct ctx_err *e, const char *what)
{
    const git_error *g = git_error_last();
    return ctx_err_set(e, CTX_EIO, "%s: %s", what, g && g->message ? g->message : "libgit2 error");
}

int agent_undo_open(const char *root, struct agent_undo **out, struct ctx_err *e)
{
    *out = NULL;
    git_libgit2_init();
    struct agent_undo *u = calloc(1, sizeof *u);
    if (!u) {
        git_libgit2_shutdown();
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    }
    if (git_repository_open_ext(&u->repo, root, GIT_REPOSITORY_OPEN_NO_SEARCH, NULL) != 0) {
        int rc = git_fail(e, root);
        free(u);
        git_libgit2_shutdown();
        return rc;
    }
    char *r = realpath(root, NULL);
    const char *gd = git_repository_path(u->repo);
    size_t dl = strlen(gd) + 16;
    u->root = r;
    if (r && (u->dir = malloc(dl)))
        snprintf(u->dir, dl, "%sctx-undo", gd);
    if (!u->root || !u->dir) {
        agent_undo_free(u);
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    }
    *out = u;
    return 0;
}

static void clear_turn(struct agent_undo *u)
{
    for (size_t i = 0; i < u->n; i++)
        free(u->ents[i].path);
    free(u->ents);
    u->ents = NULL;
    u->n = 0;
    free(u->label);
    u->label = NULL;
    u->open_turn = false;
}

void agent_undo_free(struct agent_undo *u)
{
    if (!u)
        return;
    if (u->open_turn && u->repo) {
        struct ctx_err e = {0};
        unsigned seq;
        agent_undo_commit(u, &seq, &e);
    }
    clear_turn(u);
    git_repository_free(u->repo);
    free(u->root);
    free(u->dir);
    free(u);
    git_libgit2_shutdown();
}

int agent_undo_begin(struct agent_undo *u, const char *label, struct ctx_err *e)
{
    if (u->open_turn) {
        unsigned seq;
        int rc = agent_undo_commit(u, &seq, e);
        if (rc)
            return rc;
    }
    u->open_turn = true;
    if (label && !(u->label = strdup(label)))
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    return 0;
}

static char *abs_of(const struct agent_undo *u, const char *rel)
{
    size_t l = strlen(u->root) + strlen(rel) + 2;
    char *p = malloc(l);
    if (p)
        snprintf(p, l, "%s/%s", u->root, rel);
    return p;
}

int agent_undo_record(struct agent_undo *u, const char *rel, struct ctx_err *e)
{
    if (!u->open_turn) {
        int rc = agent_undo_begin(u, NULL, e);
        if (rc)
            return rc;
    }
    for (size_t i = 0; i < u->n; i++)
        if (!strcmp(u->ents[i].path, rel))
            return 0;
    struct undo_entry *ne = realloc(u->ents, (u->n + 1) * sizeof *ne);
    if (!ne)
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    u->ents = ne;
    struct undo_entry *en = &u->ents[u->n];
    memset(en, 0, sizeof *en);
    char *abs = abs_of(u, rel);
    if (!abs || !(en->path = strdup(rel))) {
        free(abs);
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    }
    struct stat st;
    if (lstat(abs, &st) == 0 && S_ISREG(st.st_mode)) {
        char *buf;
        size_t len;
        int rc = ctx_read_file(abs, (size_t)st.st_size + 1, &buf, &len, e);
        if (rc) {
            free(abs);
            free(en->path);
            return rc;
        }
        int g = git_blob_create_from_buffer(&en->before, u->repo, buf, len);
        free(buf);
        if (g) {
            free(abs);
            free(en->path);
            return git_fail(e, "saving the file for undo");
        }
        en->existed = true;
        en->mode = st.st_mode & 07777;
    }
    free(abs);
    u->n++;
    return 0;
}

/* Hash of the file's current content as a blob; *exists false when absent. */
static int current_oid(struct agent_undo *u, const char *rel, git_oid *oid, bool *exists,
                       struct ctx_err *e)
{
    char *abs = abs_of(u, rel);
    if (!abs)
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    struct stat st;
    *exists = lstat(abs, &st) == 0;
    if (!*exists) {
        free(abs);
        return 0;
    }
    char *buf;
    size_t len;
    int rc = ctx_read_file(abs, (size_t)st.st_size + 1, &buf, &len, e);
    free(abs);
    if (rc)
        return rc;
    int g = git_odb_hash(oid, buf, len, GIT_OBJECT_BLOB);
    free(buf);
    return g ? git_fail(e, "hashing") : 0;
}

static unsigned next_seq(const char *dir)
{
    unsigned best = 0;
    DIR *d = opendir(dir);
    if (!d)
        return 1;
    struct dirent *de;
    while ((de = readdir(d))) {
        unsigned v;
        char tail[8];
        if (sscanf(de->d_name, "%u.%7s", &v, tail) == 2 && !strcmp(tail, "json") && v > best)
            best = v;
    }
    closedir(d);
    return best + 1;
}

int agent_undo_commit(struct agent_undo *u, unsigned *seq, struct ctx_err *e)
{
    *seq = 0;
    if (!u->open_turn || !u->n) {
        clear_turn(u);
        return 0;
    }
    cJSON *m = cJSON_CreateObject();
    cJSON *arr = m ? cJSON_AddArrayToObject(m, "entries") : NULL;
    if (!arr) {
        cJSON_Delete(m);
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    }
    cJSON_AddStringToObject(m, "label", u->label ? u->label : "");
    cJSON_AddNumberToObject(m, "time", (double)time(NULL));
    int rc = 0;
    for (size_t i = 0; !rc && i < u->n; i++) {
        struct undo_entry *en = &u->ents[i];
        cJSON *o = cJSON_CreateObject();
        char hex[GIT_OID_HEXSZ + 1];
        cJSON_AddStringToObject(o, "path", en->path);
        if (en->existed) {
            git_oid_tostr(hex, sizeof hex, &en->before);
            cJSON_AddStringToObject(o, "before", hex);
            cJSON_AddNumberToObject(o, "mode", en->mode);
        } else {
            cJSON_AddNullToObject(o, "before");
        }
        git_oid after;
        bool exists;
        rc = current_oid(u, en->path, &after, &exists, e);
        if (!rc && exists) {
            git_oid_tostr(hex, sizeof hex, &after);
            cJSON_AddStringToObject(o, "after", hex);
        } else if (!rc) {
            cJSON_AddNullToObject(o, "after");
        }
        cJSON_AddItemToArray(arr, o);
    }
    char *text = rc ? NULL : cJSON_Print(m);
    cJSON_Delete(m);
    if (!rc && !text)
        rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
    if (!rc && mkdir(u->dir, 0700) != 0 && errno != EEXIST)
        rc = ctx_err_errno(e, CTX_EIO, errno, "%s", u->dir);
    if (!rc) {
        unsigned s = next_seq(u->dir);
        char path[4096];
        snprintf(path, sizeof path, "%s/%u.json", u->dir, s);
        rc = agent_write_atomic(path, text, strlen(text), 0600, e);
        if (!rc)
            *seq = s;
    }
    free(text);
    clear_turn(u);
    return rc;
}

static int newest(struct agent_undo *u, unsigned *seq)
{
    unsigned n = next_seq(u->dir);
    *seq = n - 1;
    return n > 1 ? 0 : CTX_ENOTFOUND;
}

int agent_undo_last(struct agent_undo *u, bool force, cJSON **restored, struct ctx_err *e)
{
    if (restored)
        *restored = NULL;
    if (u->open_turn) {
        unsigned s;
        int rc = agent_undo_commit(u, &s, e);
        if (rc)
            return rc;
    }
    unsigned seq;
    if (newest(u, &seq))
        return ctx_err_set(e, CTX_ENOTFOUND, "nothing to undo: no agent changes are recorded");
    char path[4096];
    snprintf(path, sizeof path, "%s/%u.json", u->dir, seq);
    cJSON *m = ctx_json_read_file(path, 64u << 20, e);
    if (!m)
        return e && e->code ? e->code : CTX_EIO;
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(m, "entries");
    int rc = 0;
    char busy[1024] = "";
    size_t bl = 0;
    /* First check that nothing changed after the turn. */
    for (const cJSON *it = arr ? arr->child : NULL; !rc && it; it = it->next) {
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(it, "path");
        const cJSON *after = cJSON_GetObjectItemCaseSensitive(it, "after");
        if (!cJSON_IsString(p)) {
            rc = ctx_err_set(e, CTX_EFORMAT, "%s: an entry without a path", path);
            break;
        }
        git_oid cur, want;
        bool exists;
        rc = current_oid(u, p->valuestring, &cur, &exists, e);
        if (rc)
            break;
        bool same = cJSON_IsString(after) ? exists && git_oid_fromstr(&want, after->valuestring) == 0 &&
                                                git_oid_equal(&cur, &want)
                                          : !exists;
        if (!same && bl < sizeof busy - 1)
            bl += (size_t)snprintf(busy + bl, sizeof busy - bl, "%s%s", bl ? ", " : "", p->valuestring);
    }
    if (!rc && bl && !force)
        rc = ctx_err_set(e, CTX_EBUSY, "changed after the agent's turn %u: %s (undo with force to "
                         "discard those changes)", seq, busy);
    cJSON *out = rc ? NULL : cJSON_CreateArray();
    for (const cJSON *it = arr ? arr->child : NULL; !rc && it; it = it->next) {
        const char *rel = cJSON_GetObjectItemCaseSensitive(it, "path")->valuestring;
        const cJSON *before = cJSON_GetObjectItemCaseSensitive(it, "before");
        char *abs = abs_of(u, rel);
        if (!abs) {
            rc = ctx_err_set(e, CTX_ENOMEM, "out of memory");
            break;
        }
        const char *action;
        if (cJSON_IsString(before)) {
            git_oid oid;
            git_blob *b = NULL;
            if (git_oid_fromstr(&oid, before->valuestring) || git_blob_lookup(&b, u->repo, &oid)) {
                rc = git_fail(e, "the saved content is gone from the object database");
                free(abs);
                break;
            }
            int mode = 0644;
            const cJSON *mj = cJSON_GetObjectItemCaseSensitive(it, "mode");
            if (cJSON_IsNumber(mj))
                mode = mj->valueint;
            rc = agent_write_atomic(abs, git_blob_rawcontent(b), (size_t)git_blob_rawsize(b),
                                    (unsigned)mode, e);
            git_blob_free(b);
            action = "restored";
        } else {
            if (unlink(abs) != 0 && errno != ENOENT)
                rc = ctx_err_errno(e, CTX_EIO, errno, "removing %s", rel);
            action = "removed";
        }
        free(abs);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "path", rel);
        cJSON_AddStringToObject(o, "action", action);
        cJSON_AddItemToArray(out, o);
    }
    cJSON_Delete(m);
    if (!rc && unlink(path) != 0)
        rc = ctx_err_errno(e, CTX_EIO, errno, "%s", path);
    if (rc) {
        cJSON_Delete(out);
        return rc;
    }
    if (restored)
        *restored = out;
    else
        cJSON_Delete(out);
    return 0;
}

int agent_undo_list(struct agent_undo *u, cJSON **out, struct ctx_err *e)
{
    *out = cJSON_CreateArray();
    if (!*out)
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    unsigned top = next_seq(u->dir);
    for (unsigned s = top; s-- > 1;) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%u.json", u->dir, s);
        if (access(path, R_OK) != 0)
            continue;
        struct ctx_err le = {0};
        cJSON *m = ctx_json_read_file(path, 64u << 20, &le);
        if (!m)
            continue;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "seq", s);
        const cJSON *l = cJSON_GetObjectItemCaseSensitive(m, "label");
        cJSON_AddStringToObject(o, "label", cJSON_IsString(l) ? l->valuestring : "");
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(m, "time");
        cJSON_AddNumberToObject(o, "time", cJSON_IsNumber(t) ? t->valuedouble : 0);
        cJSON *ps = cJSON_AddArrayToObject(o, "paths");
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(m, "entries");
        for (const cJSON *it = arr ? arr->child : NULL; it; it = it->next) {
            const cJSON *p = cJSON_GetObjectItemCaseSensitive(it, "path");
            if (cJSON_IsString(p))
                cJSON_AddItemToArray(ps, cJSON_CreateString(p->valuestring));
        }
        cJSON_AddItemToArray(*out, o);
        cJSON_Delete(m);
    }
    return 0;
}
