/* Speculative decoding with the MTP block; see spec.h. */
#include "spec.h"

#include <stdlib.h>
#include <string.h>

#include "accel.h"
#include "sample.h"

struct inf_spec {
    struct inf_model *m;
    struct inf_state *st;
    struct inf_accel *a; /* the device's spec ops, or NULL: the CPU */
    int vocab, window;
    size_t row;          /* floats of one row's streams (hc * D) */
    int pending;         /* the draft the state holds beyond the tokens given, or -1 */
    float *lg2;          /* [vocab] the logits after the pending draft */
    float *mlog;         /* [vocab] the MTP block's logits (CPU) */
    /* The rows the next draft comes from: rows [0, nrows) of the last forward, of positions rpos..;
     * next[i] the token after row i, the last one's being the coming token. */
    int nrows;
    long long rpos;
    int *next;           /* [window] */
    float *X;            /* CPU: the last forward's streams, [window][hc][D] */
    /* the rows are still there while the state is where the last call left it (and, on a device,
     * no other call has run since: the epoch) */
    long long exp_pos;
    unsigned long long epoch;
    struct inf_snapshot *snap; /* CPU: the state before the pending draft */
    struct inf_spec_stats stats;
};

int inf_spec_new(struct inf_model *m, struct inf_state *st, struct inf_spec **out, struct ctx_err *e)
{
    *out = NULL;
    const struct inf_config *c = inf_model_config(m);
    if (inf_model_mtp_blocks(m) < 1)
        return ctx_err_set(e, CTX_EUNSUPPORTED, "speculative decoding: the checkpoint has no MTP block");
    struct inf_accel *a = inf_model_accel(m);
    if (a && !inf_accel_can_spec(a))
        return ctx_err_set(e, CTX_EUNSUPPORTED,
                           "speculative decoding: the accelerator %s runs without the MTP block", inf_accel_name(a));
    struct inf_spec *sp = calloc(1, sizeof *sp);
    if (!sp)
        return ctx_err_set(e, CTX_ENOMEM, "speculative decoding: out of memory");
    sp->m = m;
    sp->st = st;
    sp->a = a;
    sp->vocab = c->vocab_size;
    sp->window = c->sliding_window > 0 ? c->sliding_window : 1;
    sp->row = (size_t)c->hc_mult * c->hidden_size;
    sp->pending = -1;
    int ok = (sp->lg2 = malloc(sizeof(float) * (size_t)sp->vocab)) != NULL &&
             (sp->next = malloc(sizeof(int) * (size_t)sp->window)) != NULL;
    if (ok && !a)
        ok = (sp->mlog = malloc(sizeof(float) * (size_t)sp->vocab)) != NULL &&
             (sp->X = malloc(sizeof(float) * sp->row * (size_t)(sp->window > 2 ? sp->window : 2))) != NULL;
    if (!ok) {
        inf_spec_free(sp);
        return ctx_err_set(e, CTX_ENOMEM, "speculative decoding: out of memory");
    }
    *out = sp;
    return 0;
}

void inf_spec_free(struct inf_spec *sp)
{
    if (!sp)
        return;
    inf_snapshot_free(sp->snap);
    free(sp->lg2);
    free(sp->mlog);
    free(sp->next);
    free(sp->X);
    free(sp);
}

int inf_spec_pending(const struct inf_spec *sp) { return sp->pending; }

void inf_spec_stats(const struct inf_spec *sp, struct inf_spec_stats *out) { *out = sp->stats; }

/* The last n positions' rows are the MTP's next input, and the state is where this decoder left it. */
static void keep_rows(struct inf_spec *sp, int n)
{
    sp->nrows = n;
    sp->rpos = sp->st->pos - n;
    sp->exp_pos = sp->st->pos;
    if (sp->a)
        sp->epoch = inf_accel_epoch(sp->a);
}

static int rows_valid(const struct inf_spec *sp)
{
    if (sp->nrows <= 0 || sp->st->pos != sp->exp_pos)
        return 0;
    return !sp->a || (sp->st->accel == sp->a && inf_accel_epoch(sp->a) == sp->epoch);
}

/* One forward of S tokens, logits of the last; on the CPU the streams of its rows into X (the rows
 * are then rows 0.. of X). */
static int forward(struct inf_spec *sp, const int *tokens, int S, float *logits, float *X, struct ctx_err *e)
{
    struct inf_forward_opts fo = {.logits = logits, .streams = sp->a ? NULL : X};
    return inf_model_forward(sp->m, sp->st, tokens, S, &fo, e);
}

static int drop_draft(struct inf_spec *sp, struct ctx_err *e)
{
    int rc = sp->a ? inf_accel_spec_drop(sp->a, sp->st, e) : inf_state_truncate(sp->st, sp->snap, e);
    inf_snapshot_free(sp->snap);
    sp->snap = NULL;
    sp->pending = -1;
    if (rc) {
        sp->nrows = 0;
        return rc;
    }
    keep_rows(sp, 1); /* the token before the draft: row 0 of the two-token forward */
    return 0;
}

int inf_spec_settle(struct inf_spec *sp, struct ctx_err *e)
{
    return sp->pending >= 0 ? drop_draft(sp, e) : 0;
}

int inf_spec_prefill(struct inf_spec *sp, const int *tokens, int n, float *logits, struct ctx_err *e)
{
    int rc = inf_spec_settle(sp, e);
    if (rc)
        return rc;
    if (n <= 0)
        return ctx_err_set(e, CTX_EINVAL, "speculative decoding: an empty prefill");
    sp->nrows = 0;
    int tail = n < sp->window ? n : sp->window;
    if (n > tail && (rc = forward(sp, tokens, n - tail, NULL, NULL, e)))
        return rc;
    if ((rc = forward(sp, tokens + n - tail, tail, logits, sp->X, e)))
        return rc;
    for (int i = 0; i + 1 < tail; i++)
        sp->next[i] = tokens[n - tail + i + 1];
    keep_rows(sp, tail);
    return 0;
}

/* The MTP block's draft from the rows (next[] complete); the rows are used up. */
static int draft(struct inf_spec *sp, int *d, struct ctx_err *e)
{
    int rc, S = sp->nrows;
    sp->nrows = 0;
    if (sp->a)
        return inf_accel_spec_draft(sp->a, sp->st, 0, sp->next, S, d, e);
    sp->st->mtp_pos = sp->rpos; /* positions the MTP skipped leave stale window entries: acceptance only */
    rc = inf_model_mtp(sp->m, sp->st, 0, sp->X, sp->next, S, sp->mlog, e);
    if (!rc)
        *d = inf_argmax(sp->mlog, sp->vocab);
    return rc;
}

int inf_spec_next(struct inf_spec *sp, int t, float *logits, struct ctx_err *e)
{
    int rc;
    if (t < 0 || t >= sp->vocab)
        return ctx_err_set(e, CTX_EINVAL, "speculative decoding: token %d outside the vocabulary", t);
    if (sp->pending >= 0) {
        if (t == sp->pending) { /* the draft is the token: its logits are here, no forward */
            sp->stats.accepted++;
            sp->pending = -1;
            inf_snapshot_free(sp->snap);
            sp->snap = NULL;
            memcpy(logits, sp->lg2, sizeof(float) * (size_t)sp->vocab);
            keep_rows(sp, 2); /* t and the draft: next[0] is the draft, next[1] comes with the next call */
            return 0;
        }
        if ((rc = drop_draft(sp, e)))
            return rc;
    }
    int d = -1;
    if (rows_valid(sp)) {
        sp->next[sp->nrows - 1] = t;
        struct ctx_err de = {0};
        rc = draft(sp, &d, &de);
        if (rc == CTX_EINVAL)
            d = -1; /* the rows went (another call on the device): a plain step */
        else if (rc) {
            *e = de;
            return rc;
        }
    }
    sp->nrows = 0;
    if (d < 0) { /* a plain step; its row drafts next time */
        if ((rc = forward(sp, &t, 1, logits, sp->X, e)))
            return rc;
        sp->stats.plain++;
        keep_rows(sp, 1);
        return 0;
    }
    int two[2] = {t, d};
    if (sp->a) {
        if ((rc = inf_accel_spec_forward(sp->a, sp->st, two, logits, sp->lg2, e)))
            return rc;
    } else { /* two one-token forwards with a snapshot between them (the same bits as one chunk) */
        if ((rc = forward(sp, &t, 1, logits, sp->X, e)) || (rc = inf_state_snapshot(sp->st, &sp->snap, e)) ||
            (rc = forward(sp, &d, 1, sp->lg2, sp->X + sp->row, e))) {
            inf_snapshot_free(sp->snap);
            sp->snap = NULL;
            return rc;
        }
    }
    sp->stats.drafted++;
    sp->pending = d;
    sp->next[0] = d;
    keep_rows(sp, 2);
    return 0;
}
