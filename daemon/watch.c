#include "watch.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct wdir {
    uv_fs_event_t h;
    struct ctxd_watch *w;
    char *rel;      /* "" for the root */
    int is_git;     /* the .git directory: only HEAD and index are reported */
    int closed;
};

struct ctxd_watch {
    uv_loop_t *loop;
    char *root;
    struct ctxd_watch_opts o;
    struct wdir **dirs;
    size_t n_dirs, cap_dirs, live_dirs;
    uv_timer_t timer;
    char **pending;
    size_t n_pending, cap_pending;
    int overflow;
    int freeing;
    int handles;    /* open libuv handles; the struct is freed when it reaches 0 while freeing */
};

static void maybe_release(struct ctxd_watch *w)
{
    if (!w->freeing || w->handles > 0)
        return;
    for (size_t i = 0; i < w->n_dirs; i++) {
        free(w->dirs[i]->rel);
        free(w->dirs[i]);
    }
    for (size_t i = 0; i < w->n_pending; i++)
        free(w->pending[i]);
    free(w->pending);
    free(w->dirs);
    free(w->root);
    free(w);
}

static void on_handle_closed(uv_handle_t *h)
{
    struct ctxd_watch *w = h->data;
    w->handles--;
    maybe_release(w);
}

static char *join(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *s = malloc(la + lb + 2);
    if (!s)
        return NULL;
    memcpy(s, a, la);
    size_t n = la;
    if (la && lb)
        s[n++] = '/';
    memcpy(s + n, b, lb);
    s[n + lb] = 0;
    return s;
}

static void add_pending(struct ctxd_watch *w, const char *rel)
{
    if (w->overflow)
        return;
    if (w->n_pending >= w->o.max_pending) {
        w->overflow = 1;
        return;
    }
    if (w->n_pending == w->cap_pending) {
        size_t cap = w->cap_pending ? w->cap_pending * 2 : 64;
        char **p = realloc(w->pending, cap * sizeof *p);
        if (!p) {
            w->overflow = 1;
            return;
        }
        w->pending = p;
        w->cap_pending = cap;
    }
    char *c = strdup(rel);
    if (!c) {
        w->overflow = 1;
        return;
    }
    w->pending[w->n_pending++] = c;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void on_timer(uv_timer_t *t)
{
    struct ctxd_watch *w = t->data;
    if (w->freeing)
        return;
    if (w->overflow) {
        for (size_t i = 0; i < w->n_pending; i++)
            free(w->pending[i]);
        w->n_pending = 0;
        w->overflow = 0;
        const char *all[] = {""};
        w->o.on_change(w->o.ud, all, 1);
        return;
    }
    if (!w->n_pending)
        return;
    qsort(w->pending, w->n_pending, sizeof *w->pending, cmp_str);
    size_t n = 0;
    for (size_t i = 0; i < w->n_pending; i++) {
        if (n && strcmp(w->pending[n - 1], w->pending[i]) == 0)
            free(w->pending[i]);
        else
            w->pending[n++] = w->pending[i];
    }
    /* Hand over the batch, then free it (the callback must copy what it keeps). */
    char **batch = w->pending;
    w->pending = NULL;
    w->n_pending = w->cap_pending = 0;
    w->o.on_change(w->o.ud, (const char *const *)batch, n);
    for (size_t i = 0; i < n; i++)
        free(batch[i]);
    free(batch);
}

static void close_dir(struct wdir *d)
{
    if (d->closed)
        return;
    d->closed = 1;
    d->w->live_dirs--;
    d->h.data = d->w; /* on_handle_closed wants the watch */
    uv_close((uv_handle_t *)&d->h, on_handle_closed);
}

static int watch_tree(struct ctxd_watch *w, const char *rel, struct ctx_err *e);

static void on_fs_event(uv_fs_event_t *h, const char *filename, int events, int status)
{
    struct wdir *d = h->data;
    struct ctxd_watch *w = d->w;
    (void)events;
    if (w->freeing || d->closed)
        return;
    if (status < 0) {
        add_pending(w, d->rel);
    } else if (d->is_git) {
        if (filename && (strcmp(filename, "HEAD") == 0 || strcmp(filename, "index") == 0)) {
            char *rel = join(".git", filename);
            if (rel)
                add_pending(w, rel);
            free(rel);
        } else {
            return;
        }
    } else {
        char *rel = filename ? join(d->rel, filename) : strdup(d->rel);
        if (!rel)
            return;
        char *abs = join(w->root, rel);
        struct stat st;
        int exists = abs && lstat(abs, &st) == 0;
        int is_dir = exists && S_ISDIR(st.st_mode);
        free(abs);
        if (strcmp(rel, ".git") == 0 || (w->o.skip && w->o.skip(w->o.ud, rel, is_dir))) {
            free(rel);
            return;
        }
        if (is_dir && filename) {
            int watched = 0;
            for (size_t i = 0; i < w->n_dirs; i++)
                if (!w->dirs[i]->closed && strcmp(w->dirs[i]->rel, rel) == 0)
                    watched = 1;
            if (!watched) {
                struct ctx_err ignored = {0};
                if (watch_tree(w, rel, &ignored) != 0)
                    w->overflow = 1; /* could not watch it: make the consumer rescan */
            }
        }
        /* A directory that is gone: stop watching it and everything below. */
        if (!exists) {
            size_t len = strlen(rel);
            for (size_t i = 0; i < w->n_dirs; i++) {
                struct wdir *x = w->dirs[i];
                if (!x->closed && strncmp(x->rel, rel, len) == 0 &&
                    (x->rel[len] == 0 || x->rel[len] == '/'))
                    close_dir(x);
            }
        }
        add_pending(w, rel);
        free(rel);
    }
    uv_timer_start(&w->timer, on_timer, (uint64_t)w->o.debounce_ms, 0);
}

static int add_dir(struct ctxd_watch *w, const char *rel, int is_git, struct ctx_err *e)
{
    if (w->live_dirs >= w->o.max_dirs)
        return ctx_err_set(e, CTX_ERANGE,
                           "%s has more than %zu directories to watch; exclude some in .ctxignore",
                           w->root, w->o.max_dirs);
    if (w->n_dirs == w->cap_dirs) {
        size_t cap = w->cap_dirs ? w->cap_dirs * 2 : 64;
        struct wdir **nd = realloc(w->dirs, cap * sizeof *nd);
        if (!nd)
            return ctx_err_set(e, CTX_ENOMEM, "out of memory");
        w->dirs = nd;
        w->cap_dirs = cap;
    }
    struct wdir *d = calloc(1, sizeof *d);
    char *abs = join(w->root, rel);
    if (!d || !abs) {
        free(d);
        free(abs);
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    }
    d->rel = strdup(rel);
    d->w = w;
    d->is_git = is_git;
    uv_fs_event_init(w->loop, &d->h);
    d->h.data = d;
    w->dirs[w->n_dirs++] = d;
    w->handles++;
    w->live_dirs++;
    int rc = uv_fs_event_start(&d->h, on_fs_event, abs, 0);
    if (rc != 0) {
        close_dir(d);
        if (rc == UV_ENOSPC)
            ctx_err_set(e, CTX_ERANGE, "inotify watch limit reached at %s "
                        "(raise fs.inotify.max_user_watches or exclude directories in .ctxignore)", abs);
        else
            ctx_err_set(e, CTX_EIO, "watching %s: %s", abs, uv_strerror(rc));
        free(abs);
        return e ? e->code : CTX_EIO;
    }
    free(abs);
    return 0;
}

static int watch_tree(struct ctxd_watch *w, const char *rel, struct ctx_err *e)
{
    int rc = add_dir(w, rel, 0, e);
    if (rc)
        return rc;
    char *abs = join(w->root, rel);
    if (!abs)
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    DIR *dir = opendir(abs);
    free(abs);
    if (!dir)
        return 0; /* vanished meanwhile: its parent reports it */
    struct dirent *de;
    while ((de = readdir(dir))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        char *child = join(rel, de->d_name);
        if (!child) {
            closedir(dir);
            return ctx_err_set(e, CTX_ENOMEM, "out of memory");
        }
        char *cabs = join(w->root, child);
        struct stat st;
        int is_dir = cabs && lstat(cabs, &st) == 0 && S_ISDIR(st.st_mode); /* symlinks: not followed */
        free(cabs);
        if (is_dir) {
            if (strcmp(child, ".git") == 0)
                rc = add_dir(w, ".git", 1, e);
            else if (!(w->o.skip && w->o.skip(w->o.ud, child, 1)))
                rc = watch_tree(w, child, e);
        }
        free(child);
        if (rc) {
            closedir(dir);
            return rc;
        }
    }
    closedir(dir);
    return 0;
}

int ctxd_watch_new(uv_loop_t *loop, const struct ctxd_watch_opts *opts, struct ctxd_watch **out,
                   struct ctx_err *e)
{
    *out = NULL;
    if (!opts->root || !opts->on_change)
        return ctx_err_set(e, CTX_EINVAL, "a watch needs a root and an on_change callback");
    struct stat st;
    if (stat(opts->root, &st) != 0)
        return ctx_err_errno(e, CTX_ENOTFOUND, errno, "watching %s", opts->root);
    if (!S_ISDIR(st.st_mode))
        return ctx_err_set(e, CTX_EINVAL, "%s is not a directory", opts->root);
    struct ctxd_watch *w = calloc(1, sizeof *w);
    if (!w)
        return ctx_err_set(e, CTX_ENOMEM, "out of memory");
    w->loop = loop;
    w->o = *opts;
    if (w->o.debounce_ms <= 0)
        w->o.debounce_ms = 200;
    if (!w->o.max_dirs)
        w->o.max_dirs = 65536;
    if (!w->o.max_pending)
        w->o.max_pending = 100000;
    w->root = strdup(opts->root);
    size_t rl = w->root ? strlen(w->root) : 0;
    while (rl > 1 && w->root[rl - 1] == '/')
        w->root[--rl] = 0;
    uv_timer_init(loop, &w->timer);
    w->timer.data = w;
    w->handles++;
    int rc = w->root ? watch_tree(w, "", e) : ctx_err_set(e, CTX_ENOMEM, "out of memory");
    if (rc) {
        ctxd_watch_free(w);
        return rc;
    }
    *out = w;
    return 0;
}

void ctxd_watch_free(struct ctxd_watch *w)
{
    if (!w || w->freeing)
        return;
    w->freeing = 1;
    for (size_t i = 0; i < w->n_dirs; i++)
        close_dir(w->dirs[i]);
    uv_close((uv_handle_t *)&w->timer, on_handle_closed);
}

size_t ctxd_watch_dir_count(const struct ctxd_watch *w)
{
    return w->live_dirs;
}
