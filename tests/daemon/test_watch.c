/* daemon/watch.c on a real directory tree with real inotify events. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "watch.h"

struct rec {
    char batches[16][1024]; /* each batch: paths joined by ',' */
    int n;
};

static void on_change(void *ud, const char *const *paths, size_t n)
{
    struct rec *r = ud;
    if (r->n >= 16)
        return;
    char *b = r->batches[r->n++];
    b[0] = 0;
    for (size_t i = 0; i < n; i++) {
        if (i)
            strncat(b, ",", 1023 - strlen(b));
        strncat(b, paths[i], 1023 - strlen(b));
    }
}

static int skip_node_modules(void *ud, const char *rel, int is_dir)
{
    (void)ud;
    (void)is_dir;
    return strncmp(rel, "node_modules", 12) == 0;
}

struct env {
    char root[64];
    uv_loop_t loop;
    struct rec rec;
    struct ctxd_watch *w;
};

static void sh(const char *root, const char *cmd)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "cd '%s' && %s", root, cmd);
    assert_int_equal(system(buf), 0);
}

/* Run the loop until a batch arrives (or 3 s pass). */
static void wait_batch(struct env *e, int n)
{
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (e->rec.n < n) {
        uv_run(&e->loop, UV_RUN_NOWAIT);
        usleep(2000);
        clock_gettime(CLOCK_MONOTONIC, &t);
        if (t.tv_sec - t0.tv_sec > 3)
            break;
    }
    assert_int_equal(e->rec.n, n);
}

static int setup(void **state)
{
    struct env *e = calloc(1, sizeof *e);
    snprintf(e->root, sizeof e->root, "/tmp/ctxd-watch-XXXXXX");
    if (!mkdtemp(e->root))
        return -1;
    sh(e->root, "mkdir -p src/a .git/refs node_modules/x && echo 1 > src/a/f.c && echo ref > .git/HEAD");
    uv_loop_init(&e->loop);
    struct ctxd_watch_opts o = {.root = e->root, .debounce_ms = 50, .skip = skip_node_modules,
                                .on_change = on_change, .ud = &e->rec};
    struct ctx_err err = {0};
    if (ctxd_watch_new(&e->loop, &o, &e->w, &err) != 0) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    *state = e;
    return 0;
}

static int teardown(void **state)
{
    struct env *e = *state;
    ctxd_watch_free(e->w);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(&e->loop);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", e->root);
    if (system(cmd) != 0 || rc != 0)
        return -1;
    free(e);
    return 0;
}

static void edits_are_debounced_and_sorted(void **state)
{
    struct env *e = *state;
    /* root, src, src/a and .git: node_modules is skipped */
    assert_int_equal(ctxd_watch_dir_count(e->w), 4);
    sh(e->root, "echo 2 >> src/a/f.c; echo 3 >> src/a/f.c; echo x > b.txt; echo 4 >> src/a/f.c");
    wait_batch(e, 1);
    assert_string_equal(e->rec.batches[0], "b.txt,src/a/f.c");
}

static void new_directories_are_watched(void **state)
{
    struct env *e = *state;
    sh(e->root, "mkdir -p src/new");
    wait_batch(e, 1);
    assert_string_equal(e->rec.batches[0], "src/new");
    assert_int_equal(ctxd_watch_dir_count(e->w), 5);
    sh(e->root, "echo hi > src/new/g.py");
    wait_batch(e, 2);
    assert_string_equal(e->rec.batches[1], "src/new/g.py");
}

static void skipped_and_git_internals(void **state)
{
    struct env *e = *state;
    sh(e->root, "echo 1 > node_modules/x/y.js; echo 1 > .git/refs/r; echo other > .git/HEAD; echo i > .git/index");
    wait_batch(e, 1);
    assert_string_equal(e->rec.batches[0], ".git/HEAD,.git/index");
}

static void removed_directories_stop_being_watched(void **state)
{
    struct env *e = *state;
    sh(e->root, "rm -rf src/a");
    wait_batch(e, 1);
    assert_non_null(strstr(e->rec.batches[0], "src/a"));
    assert_int_equal(ctxd_watch_dir_count(e->w), 3);
    sh(e->root, "mkdir src/a && echo z > src/a/h.c");
    wait_batch(e, 2);
    assert_int_equal(ctxd_watch_dir_count(e->w), 4);
}

static void bad_roots_are_errors(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct rec r = {0};
    struct ctxd_watch *w;
    struct ctx_err err = {0};
    struct ctxd_watch_opts o = {.root = "/nonexistent/ctxd", .on_change = on_change, .ud = &r};
    assert_int_equal(ctxd_watch_new(&loop, &o, &w, &err), CTX_ENOTFOUND);
    assert_non_null(strstr(err.msg, "/nonexistent/ctxd"));
    o.root = "/etc/hostname";
    assert_int_equal(ctxd_watch_new(&loop, &o, &w, &err), CTX_EINVAL);
    assert_non_null(strstr(err.msg, "is not a directory"));
    /* a directory limit that is too small is reported, not silently partial */
    char root[] = "/tmp/ctxd-watch-XXXXXX";
    assert_non_null(mkdtemp(root));
    sh(root, "mkdir -p a b c");
    o.root = root;
    o.max_dirs = 2;
    assert_int_equal(ctxd_watch_new(&loop, &o, &w, &err), CTX_ERANGE);
    assert_non_null(strstr(err.msg, "more than 2 directories"));
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    char cmd[64];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(edits_are_debounced_and_sorted, setup, teardown),
        cmocka_unit_test_setup_teardown(new_directories_are_watched, setup, teardown),
        cmocka_unit_test_setup_teardown(skipped_and_git_internals, setup, teardown),
        cmocka_unit_test_setup_teardown(removed_directories_stop_being_watched, setup, teardown),
        cmocka_unit_test(bad_roots_are_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
