/* Speculative decoding (inference/spec.h) on the v4-tiny-a fixture, whose checkpoint has an MTP
 * block: whatever the caller chooses (the MTP's drafts kept or not, greedy or forced tokens), every
 * step's logits must be bit-identical to a plain decode fed the same tokens, the position must
 * follow the tokens given, and settle must leave exactly them. Run on the CPU engine and through an
 * accelerator whose "device" is a second CPU model with its own state (a test double of the CUDA
 * engine's spec ops: a two-token forward keeping its rows' streams, a drop back to a snapshot taken
 * between the two tokens, the MTP block on the kept rows), so CI checks the accelerator's path and
 * its bookkeeping (binding, position, the epoch that tells kept rows from another state's);
 * tests/kernels/test_accel.c runs the same on the CUDA engine. */
#include "test_forward_common.h"

#include "accel.h"
#include "sample.h"
#include "spec.h"

#define NTOK 40

/* ---- the device double */
struct dev {
    struct inf_model *m;  /* the device's engine (CPU, no accelerator) */
    struct inf_state *st; /* the device state */
    float *rows;          /* the last forward's output streams [S][hc][D] */
    int S;                /* its rows */
    long long p0;         /* its first position */
    struct inf_snapshot *snap;
    float *mlog;
    long long forwards, spec_forwards, drops, drafts;
};

static int dev_forward(void *ud, const int *t, int S, float *logits, struct ctx_err *e)
{
    struct dev *d = ud;
    float *rows = realloc(d->rows, sizeof(float) * (size_t)S * C->hc_mult * C->hidden_size);
    if (!rows)
        return ctx_err_set(e, CTX_ENOMEM, "oom");
    d->rows = rows;
    d->p0 = d->st->pos;
    d->S = 0;
    struct inf_forward_opts o = {.logits = logits, .streams = rows};
    int rc = inf_model_forward(d->m, d->st, t, S, &o, e);
    if (!rc)
        d->S = S;
    d->forwards++;
    return rc;
}
/* Uploads copy the whole state through its serialisation (exact). */
static int dev_upload(void *ud, const struct inf_state *st, struct ctx_err *e)
{
    struct dev *d = ud;
    uint8_t *buf = NULL;
    size_t len = 0;
    struct inf_state *n = NULL;
    int rc = inf_state_serialize(st, &buf, &len, e);
    if (!rc)
        rc = inf_state_deserialize(C, buf, len, &n, e);
    free(buf);
    if (rc)
        return rc;
    inf_snapshot_free(d->snap);
    d->snap = NULL;
    inf_state_free(d->st);
    d->st = n;
    d->S = 0;
    return 0;
}
/* The device state into st whole. */
static int dev_download(void *ud, struct inf_state *st, struct ctx_err *e)
{
    return state_assign(st, ((struct dev *)ud)->st, e);
}
static int dev_mark(void *ud, void **out, struct ctx_err *e)
{
    return inf_state_snapshot(((struct dev *)ud)->st, (struct inf_snapshot **)out, e);
}
static int dev_rewind(void *ud, const void *mark, struct ctx_err *e)
{
    struct dev *d = ud;
    d->S = 0;
    return inf_state_truncate(d->st, mark, e);
}
static void dev_mark_free(void *ud, void *mark)
{
    (void)ud;
    inf_snapshot_free(mark);
}
static void dev_destroy(void *ud) { (void)ud; }
static int dev_spec_forward(void *ud, const int *t, float *logits, float *logits1, struct ctx_err *e)
{
    struct dev *d = ud;
    size_t row = (size_t)C->hc_mult * C->hidden_size;
    float *rows = realloc(d->rows, sizeof(float) * 2 * row);
    if (!rows)
        return ctx_err_set(e, CTX_ENOMEM, "oom");
    d->rows = rows;
    d->p0 = d->st->pos;
    d->S = 0;
    inf_snapshot_free(d->snap);
    d->snap = NULL;
    struct inf_forward_opts o0 = {.logits = logits, .streams = rows};
    struct inf_forward_opts o1 = {.logits = logits1, .streams = rows + row};
    int rc = inf_model_forward(d->m, d->st, t, 1, &o0, e);
    if (!rc)
        rc = inf_state_snapshot(d->st, &d->snap, e);
    if (!rc)
        rc = inf_model_forward(d->m, d->st, t + 1, 1, &o1, e);
    if (!rc)
        d->S = 2;
    d->spec_forwards++;
    return rc;
}
static int dev_spec_drop(void *ud, struct ctx_err *e)
{
    struct dev *d = ud;
    if (!d->snap || d->S != 2)
        return ctx_err_set(e, CTX_EINVAL, "no two-token forward to drop");
    int rc = inf_state_truncate(d->st, d->snap, e);
    inf_snapshot_free(d->snap);
    d->snap = NULL;
    d->S = 1; /* the first row stays */
    d->drops++;
    return rc;
}
static int dev_spec_draft(void *ud, int row0, const int *next, int S, int *draft, struct ctx_err *e)
{
    struct dev *d = ud;
    if (row0 < 0 || S < 1 || row0 + S > d->S)
        return ctx_err_set(e, CTX_EINVAL, "rows [%d, %d) of a forward of %d", row0, row0 + S, d->S);
    d->st->mtp_pos = d->p0 + row0;
    int rc = inf_model_mtp(d->m, d->st, 0, d->rows + (size_t)row0 * C->hc_mult * C->hidden_size, next, S, d->mlog, e);
    d->S = 0; /* used up, as the engine's */
    if (!rc)
        *draft = inf_argmax(d->mlog, C->vocab_size);
    d->drafts++;
    return rc;
}

static struct dev D;
static struct inf_accel *A;
static struct inf_model *MA; /* the model with the accelerator attached */

static int make_accel(int with_spec)
{
    struct ctx_err e = {0};
    memset(&D, 0, sizeof D);
    if (inf_model_new(W, NULL, 0, &D.m, &e) || inf_state_new(C, &D.st, &e) || inf_model_new(W, NULL, 0, &MA, &e) ||
        !(D.mlog = malloc(sizeof(float) * (size_t)C->vocab_size)))
        return -1;
    struct inf_accel_ops ops = {.name = "double", .forward = dev_forward, .max_chunk = 0, .upload = dev_upload,
                                .download_tail = dev_download, .mark = dev_mark, .rewind = dev_rewind,
                                .mark_free = dev_mark_free, .destroy = dev_destroy};
    if (with_spec) {
        ops.spec_forward = dev_spec_forward;
        ops.spec_drop = dev_spec_drop;
        ops.spec_draft = dev_spec_draft;
    }
    if (!(A = inf_accel_new(&ops, &D)))
        return -1;
    inf_model_set_accel(MA, A);
    return 0;
}

static void free_accel(void)
{
    inf_accel_free(A);
    A = NULL;
    inf_model_free(MA);
    MA = NULL;
    inf_model_free(D.m);
    inf_state_free(D.st);
    inf_snapshot_free(D.snap);
    free(D.rows);
    free(D.mlog);
    memset(&D, 0, sizeof D);
}

static int setup_all(void **st) { return setup(st); }
static int teardown_all(void **st) { return teardown(st); }

static const int PROMPT[] = {0, 17, 300, 45, 911, 2, 77, 650, 13, 13, 400, 5};
#define NP ((int)(sizeof PROMPT / sizeof PROMPT[0]))

/* How the caller chooses token i after logits lg with draft `pend` in the state (-1: none). */
enum policy { GREEDY, TAKE_DRAFTS, MIXED };
static int choose(enum policy p, int i, const float *lg, int pend)
{
    int g = inf_argmax(lg, C->vocab_size);
    switch (p) {
    case GREEDY:
        return g;
    case TAKE_DRAFTS: /* every draft kept (as a forced completion that happens to match) */
        return pend >= 0 ? pend : g;
    case MIXED: /* kept, then a token other than the draft, in turn */
    default:
        if (pend < 0)
            return g;
        return i % 3 == 1 ? (pend + 1 + i) % C->vocab_size : pend;
    }
}

/* The run under test on model m (CPU or accelerator), the reference a plain CPU decode of the same
 * tokens: the same logits bits at every step, the same position; settle leaves the tokens. */
static void run_policy(struct inf_model *m, enum policy p, struct inf_spec_stats *out)
{
    struct ctx_err e = {0};
    struct inf_state *s, *r;
    struct inf_spec *sp;
    assert_int_equal(inf_state_new(C, &s, &e), 0);
    assert_int_equal(inf_state_new(C, &r, &e), 0);
    assert_int_equal(inf_spec_new(m, s, &sp, &e), 0);
    float *lg = malloc(sizeof(float) * (size_t)C->vocab_size), *lr = malloc(sizeof(float) * (size_t)C->vocab_size);
    assert_non_null(lg);
    assert_non_null(lr);
    struct inf_forward_opts fo = {.logits = lr};
    assert_int_equal(inf_spec_prefill(sp, PROMPT, NP, lg, &e), 0);
    assert_int_equal(inf_model_forward(M, r, PROMPT, NP, &fo, &e), 0);
    assert_memory_equal(lg, lr, sizeof(float) * (size_t)C->vocab_size);
    int given = NP;
    for (int i = 0; i < NTOK; i++) {
        int t = choose(p, i, lg, inf_spec_pending(sp));
        assert_int_equal(inf_spec_next(sp, t, lg, &e), 0);
        given++;
        assert_int_equal(inf_model_forward(M, r, &t, 1, &fo, &e), 0);
        assert_memory_equal(lg, lr, sizeof(float) * (size_t)C->vocab_size);
        assert_int_equal(s->pos, given + (inf_spec_pending(sp) >= 0));
        if (i == NTOK / 2) { /* a settle in the middle: the next token then drafts from the kept row */
            assert_int_equal(inf_spec_settle(sp, &e), 0);
            assert_int_equal(inf_spec_pending(sp), -1);
            assert_int_equal(s->pos, given);
        }
    }
    assert_int_equal(inf_spec_settle(sp, &e), 0);
    assert_int_equal(s->pos, given);
    /* the state holds exactly the tokens: the same logits as the plain one's for one more */
    int t = 5;
    struct inf_forward_opts fs = {.logits = lg};
    assert_int_equal(inf_model_forward(m, s, &t, 1, &fs, &e), 0);
    assert_int_equal(inf_model_forward(M, r, &t, 1, &fo, &e), 0);
    assert_memory_equal(lg, lr, sizeof(float) * (size_t)C->vocab_size);
    inf_spec_stats(sp, out);
    /* bad input changes nothing */
    assert_int_equal(inf_spec_next(sp, C->vocab_size, lg, &e), CTX_EINVAL);
    assert_int_equal(inf_spec_next(sp, -1, lg, &e), CTX_EINVAL);
    assert_int_equal(inf_spec_prefill(sp, PROMPT, 0, lg, &e), CTX_EINVAL);
    assert_int_equal(s->pos, given + 1);
    inf_spec_free(sp);
    inf_state_free(s);
    inf_state_free(r);
    free(lg);
    free(lr);
}

static void check_counts(enum policy p, const struct inf_spec_stats *st)
{
    /* every token after the first is a two-token forward or a kept draft, but the first after the
     * prefill and the settle in the middle (which keeps the row: it drafts) */
    assert_true(st->drafted > 0);
    assert_true(st->drafted + st->accepted + st->plain == NTOK);
    if (p == TAKE_DRAFTS)
        assert_true(st->accepted >= NTOK / 2 - 2);
    if (p == MIXED)
        assert_true(st->accepted > 0 && st->accepted < st->drafted);
}

static void cpu_greedy(void **state)
{
    (void)state;
    struct inf_spec_stats st;
    run_policy(M, GREEDY, &st);
    check_counts(GREEDY, &st);
}

static void cpu_take_drafts(void **state)
{
    (void)state;
    struct inf_spec_stats st;
    run_policy(M, TAKE_DRAFTS, &st);
    check_counts(TAKE_DRAFTS, &st);
    assert_int_equal(st.plain, 0); /* the prefill's rows draft the first */
}

static void cpu_mixed(void **state)
{
    (void)state;
    struct inf_spec_stats st;
    run_policy(M, MIXED, &st);
    check_counts(MIXED, &st);
}

static void accel_policies(void **state)
{
    (void)state;
    for (int p = GREEDY; p <= MIXED; p++) {
        assert_int_equal(make_accel(1), 0);
        struct inf_spec_stats st;
        run_policy(MA, (enum policy)p, &st);
        check_counts((enum policy)p, &st);
        /* on the device: each draft a spec forward there, each rejected one a drop */
        assert_int_equal(D.spec_forwards, st.drafted);
        assert_true(D.drops >= st.drafted - st.accepted - 1);
        assert_int_equal(D.drafts, st.drafted);
        free_accel();
    }
}

/* The device's rows are the decoder's only while nothing else ran there: after another state's
 * forward (a swap: the decoder's state leaves and comes back) and after a rewind at the same
 * position (the epoch moves), the next token is a plain step, and the logits stay right. */
static void accel_rows_taken(void **state)
{
    (void)state;
    assert_int_equal(make_accel(1), 0);
    struct ctx_err e = {0};
    struct inf_state *s, *r, *o;
    struct inf_spec *sp;
    assert_int_equal(inf_state_new(C, &s, &e), 0);
    assert_int_equal(inf_state_new(C, &r, &e), 0);
    assert_int_equal(inf_state_new(C, &o, &e), 0);
    assert_int_equal(inf_spec_new(MA, s, &sp, &e), 0);
    float lg[1024], lr[1024], lo[1024];
    assert_true(C->vocab_size <= 1024);
    struct inf_forward_opts fo = {.logits = lr}, oo = {.logits = lo};
    assert_int_equal(inf_spec_prefill(sp, PROMPT, NP, lg, &e), 0);
    assert_int_equal(inf_model_forward(M, r, PROMPT, NP, &fo, &e), 0);
    struct inf_spec_stats a, b;
    for (int round = 0; round < 3; round++) {
        /* two greedy tokens: the second drafts from the first's rows */
        for (int i = 0; i < 2; i++) {
            int t = inf_argmax(lg, C->vocab_size);
            inf_spec_stats(sp, &a);
            assert_int_equal(inf_spec_next(sp, t, lg, &e), 0);
            inf_spec_stats(sp, &b);
            assert_int_equal(inf_model_forward(M, r, &t, 1, &fo, &e), 0);
            assert_memory_equal(lg, lr, sizeof(float) * (size_t)C->vocab_size);
            /* the first after a disturbance is plain (round 0: the prefill's rows draft it) */
            if (i == 0 && round > 0)
                assert_int_equal(b.plain - a.plain, 1);
            else
                assert_int_equal(b.plain - a.plain, 0);
        }
        assert_int_equal(inf_spec_settle(sp, &e), 0);
        if (round == 0) { /* another state's forward: s is synced and leaves, then comes back */
            int ot[3] = {1, 2, 3};
            assert_int_equal(inf_model_forward(MA, o, ot, 3, &oo, &e), 0);
            assert_null(s->accel);
        } else { /* a snapshot and a truncate to it: a rewind at the same position */
            struct inf_snapshot *sn;
            long long pos = s->pos;
            unsigned long long ep = inf_accel_epoch(A);
            assert_int_equal(inf_state_snapshot(s, &sn, &e), 0);
            assert_int_equal(inf_state_truncate(s, sn, &e), 0);
            inf_snapshot_free(sn);
            assert_int_equal(s->pos, pos);
            assert_true(inf_accel_epoch(A) > ep);
        }
    }
    inf_spec_free(sp);
    inf_state_free(s);
    inf_state_free(r);
    inf_state_free(o);
    free_accel();
}

/* Refused, naming why: an accelerator without the spec ops, a checkpoint without an MTP block. */
static void refusals(void **state)
{
    (void)state;
    struct ctx_err e = {0};
    struct inf_state *s;
    struct inf_spec *sp = NULL;
    assert_int_equal(inf_state_new(C, &s, &e), 0);
    assert_int_equal(make_accel(0), 0);
    assert_int_equal(inf_spec_new(MA, s, &sp, &e), CTX_EUNSUPPORTED);
    assert_null(sp);
    assert_non_null(strstr(e.msg, "without the MTP block"));
    free_accel();
    inf_state_free(s);
    struct inf_config c = *C;
    c.num_nextn_predict_layers = 0;
    c.compress_ratios[c.num_hidden_layers] = 0;
    struct inf_weights *w;
    struct inf_model *m;
    assert_int_equal(inf_weights_synthetic(&c, 1, &w, &e), 0);
    assert_int_equal(inf_model_new(w, NULL, 1, &m, &e), 0);
    assert_int_equal(inf_state_new(&c, &s, &e), 0);
    assert_int_equal(inf_spec_new(m, s, &sp, &e), CTX_EUNSUPPORTED);
    assert_non_null(strstr(e.msg, "no MTP block"));
    inf_state_free(s);
    inf_model_free(m);
    inf_weights_free(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(cpu_greedy),     cmocka_unit_test(cpu_take_drafts), cmocka_unit_test(cpu_mixed),
        cmocka_unit_test(accel_policies), cmocka_unit_test(accel_rows_taken), cmocka_unit_test(refusals),
    };
    return cmocka_run_group_tests(tests, setup_all, teardown_all);
}
