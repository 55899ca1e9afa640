/* Watching a working tree for changes (Linux inotify through libuv; recursive by watching every
 * directory). Changes are debounced: after `debounce_ms` without events, on_change receives the
 * sorted, de-duplicated paths relative to the root. A created directory is watched from then on and
 * reported itself (its contents may predate the watch). The special path "" means "too many
 * changes to list; rescan everything". .git is not entered, but .git/HEAD and .git/index are
 * reported, so that branch switches and staging are seen. */
#ifndef CTXD_WATCH_H
#define CTXD_WATCH_H

#include <stddef.h>
#include <uv.h>

#include "err.h"

struct ctxd_watch;

struct ctxd_watch_opts {
    const char *root;
    int debounce_ms;          /* 0: 200 */
    size_t max_dirs;          /* 0: 65536; more is an error naming the limit */
    size_t max_pending;       /* 0: 100000 distinct paths, then collapsed to "" */
    /* Optional: non-zero to neither watch (directories) nor report (files) this path. */
    int (*skip)(void *ud, const char *relpath, int is_dir);
    void (*on_change)(void *ud, const char *const *paths, size_t n);
    void *ud;
};

int ctxd_watch_new(uv_loop_t *loop, const struct ctxd_watch_opts *opts, struct ctxd_watch **out,
                   struct ctx_err *e);
/* Stops watching; memory is released as the loop closes the handles. */
void ctxd_watch_free(struct ctxd_watch *w);
size_t ctxd_watch_dir_count(const struct ctxd_watch *w);

#endif
