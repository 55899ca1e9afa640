/* The accelerator binding; see accel.h. One state at a time lives on the device; `gen` counts
 * uploads, so a device mark is usable only while the device has held the same state since the mark
 * was taken (same gen, same bound state). */
#include "accel.h"
#include "accel_state.h"

#include <stdlib.h>

struct inf_accel {
    struct inf_accel_ops ops;
    void *ud;
    struct inf_state *bound; /* the state on the device, or NULL */
    int dirty;               /* bound's host arrays lag behind the device */
    unsigned long long gen;  /* uploads so far */
    long long live_marks;
    struct inf_accel_stats st;
};

struct inf_accel *inf_accel_new(const struct inf_accel_ops *ops, void *ud)
{
    struct inf_accel *a = calloc(1, sizeof *a);
    if (!a)
        return NULL;
    a->ops = *ops;
    a->ud = ud;
    return a;
}

void inf_accel_free(struct inf_accel *a)
{
    if (!a)
        return;
    if (a->bound)
        a->bound->accel = NULL;
    if (a->ops.destroy)
        a->ops.destroy(a->ud);
    free(a);
}

const char *inf_accel_name(const struct inf_accel *a) { return a->ops.name; }
void *inf_accel_ud(const struct inf_accel *a) { return a->ud; }

void inf_accel_stats(const struct inf_accel *a, struct inf_accel_stats *out) { *out = a->st; }

int inf_state_sync(struct inf_state *st, struct ctx_err *e)
{
    struct inf_accel *a = st->accel;
    if (!a || a->bound != st || !a->dirty)
        return 0;
    int rc = a->ops.download_tail(a->ud, st, e);
    if (rc)
        return ctx_err_prefix(e, "accelerator %s: bringing the state's host copy up to date: ", a->ops.name);
    a->dirty = 0;
    a->st.downloads++;
    return 0;
}

/* The device forgets st without copying anything back (its host copy is about to be replaced). */
static void drop(struct inf_state *st)
{
    struct inf_accel *a = st->accel;
    if (a && a->bound == st) {
        a->bound = NULL;
        a->dirty = 0;
    }
    st->accel = NULL;
}

int inf_state_unbind(struct inf_state *st, struct ctx_err *e)
{
    int rc = inf_state_sync(st, e);
    if (!rc)
        drop(st);
    return rc;
}

static int bind(struct inf_accel *a, struct inf_state *st, struct ctx_err *e)
{
    if (a->bound == st)
        return 0;
    if (a->bound) {
        int rc = inf_state_unbind(a->bound, e);
        if (rc)
            return rc;
    }
    if (st->accel) /* bound to another accelerator: its device copy is left behind */
        if (inf_state_unbind(st, e))
            return e->code;
    a->gen++; /* every mark taken before is of another device state now */
    int rc = a->ops.upload(a->ud, st, e);
    if (rc)
        return ctx_err_prefix(e, "accelerator %s: uploading the state at position %lld: ", a->ops.name, st->pos);
    a->st.uploads++;
    a->bound = st;
    a->dirty = 0;
    st->accel = a;
    return 0;
}

int inf_accel_forward(struct inf_accel *a, struct inf_state *st, const int *tokens, int S, float *logits,
                      struct ctx_err *e)
{
    int rc = bind(a, st, e);
    int step = a->ops.max_chunk > 0 ? a->ops.max_chunk : S;
    for (int off = 0; !rc && off < S; off += step) {
        int n = S - off < step ? S - off : step;
        a->dirty = 1;
        rc = a->ops.forward(a->ud, tokens + off, n, off + n == S ? logits : NULL, e);
        if (rc)
            ctx_err_prefix(e, "accelerator %s: forward of %d tokens at position %lld: ", a->ops.name, n, st->pos);
        else {
            st->pos += n;
            a->st.forwards++;
        }
    }
    if (rc && a->bound == st) {
        /* The device state is whatever the failed call left: keep the host copy of what completed
         * if it can still be read back, and make the next forward upload it again. */
        struct ctx_err de = {0};
        if (a->ops.download_tail(a->ud, st, &de) == 0)
            a->st.downloads++;
        drop(st);
    }
    return rc;
}

/* ---- the hooks of state.c ---- */

int inf_accel_snapshot_hook(struct inf_state *st, struct inf_accel **acc, void **mark, unsigned long long *gen,
                            struct ctx_err *e)
{
    *acc = NULL;
    *mark = NULL;
    *gen = 0;
    struct inf_accel *a = st->accel;
    if (!a || a->bound != st)
        return 0;
    int rc = inf_state_sync(st, e);
    if (rc)
        return rc;
    /* without a mark the snapshot still works, through the host copy */
    struct ctx_err me = {0};
    if (a->ops.mark(a->ud, mark, &me)) {
        *mark = NULL;
        return 0;
    }
    *acc = a;
    *gen = a->gen;
    a->live_marks++;
    return 0;
}

void inf_accel_mark_release(struct inf_accel *a, void *mark)
{
    if (!a || !mark)
        return;
    a->ops.mark_free(a->ud, mark);
    a->live_marks--;
}

int inf_accel_truncate_hook(struct inf_state *st, struct inf_accel *acc, const void *mark, unsigned long long gen,
                            int *device_done, struct ctx_err *e)
{
    (void)e; /* nothing here fails: a refused rewind falls back to the host copy */
    *device_done = 0;
    struct inf_accel *a = st->accel;
    if (!a || a->bound != st)
        return 0;
    if (acc == a && mark && gen == a->gen) {
        struct ctx_err re = {0};
        if (a->ops.rewind(a->ud, mark, &re) == 0) {
            a->dirty = 0; /* the caller truncates the host copy to the same snapshot */
            a->st.rewinds++;
            *device_done = 1;
            return 0;
        }
        /* refused (the device went back behind the mark since, say) or failed: the host copy below
         * is the state either way */
    }
    /* The device no longer holds the state the snapshot was taken from: the host copy is truncated
     * and uploaded at the next forward. */
    drop(st);
    a->st.host_truncates++;
    return 0;
}

void inf_accel_forget_hook(struct inf_state *st) { drop(st); }

int inf_accel_state_lags(const struct inf_state *st)
{
    return st->accel && st->accel->bound == st && st->accel->dirty;
}
