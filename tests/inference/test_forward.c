/* Fixture acceptance of the forward pass (tests/fixtures/v4-tiny-a/README.md, "What an engine must
 * match"): module-level checks on the recorded inputs of cases 2 and 3 (attention prefill and
 * decode rows, MoE, whole block, head, MTP) and end-to-end teacher-forced logits of all 7 cases
 * with one-chunk prefill. The measured figures are printed as TAP comments. Chunked prefill and
 * snapshots are in test_forward_state.c. */
#include "test_forward_common.h"

/* ---- attention on recorded inputs, cases 2 and 3 ---- */

static void test_attention(void **st)
{
    (void)st;
    struct ctx_err e = {0};
    int D = C->hidden_size;
    static const int cases[2] = {2, 3};
    for (int ci = 0; ci < 2; ci++) {
        int k = cases[ci], n, P;
        int *tok = case_tokens(k, &n, &P);
        for (int b = 0; b < C->num_hidden_layers; b++) {
            const struct inf_tensor *in = tget("case%d.block%d.attn_in", k, b);
            const float *ain = in->data, *ref = tget("case%d.block%d.attn_out", k, b)->data;
            int rows = (int)in->shape[0];
            float *out = malloc(sizeof(float) * (size_t)rows * D);
            struct inf_state *s;
            assert_int_equal(inf_state_new(C, &s, &e), 0);
            assert_int_equal(inf_model_attention(M, s, b, ain, P, 0, out, &e), 0);
            for (int r = P; r < rows; r++)
                assert_int_equal(inf_model_attention(M, s, b, ain + (size_t)r * D, 1, r, out + (size_t)r * D, &e), 0);
            double pr, pm, dr, dm;
            cmp(out, ref, (size_t)P * D, &pr, &pm);
            cmp(out + (size_t)P * D, ref + (size_t)P * D, (size_t)(rows - P) * D, &dr, &dm);
            printf("# attention case %d block %d (ratio %d): prefill rms %.4f max %.4f | decode rms %.4f max %.4f\n", k,
                   b, C->compress_ratios[b], pr, pm, dr, dm);
            assert_true(pr <= 0.025 && pm <= 0.08);
            assert_true(dr <= 0.025 && dm <= 0.08);
            inf_state_free(s);
            free(out);
        }
        free(tok);
    }
}

/* ---- MoE on recorded inputs ---- */

static void test_moe(void **st)
{
    (void)st;
    struct ctx_err e = {0};
    int D = C->hidden_size, n, P;
    int *tok = case_tokens(2, &n, &P);
    for (int b = 0; b < C->num_hidden_layers; b++) {
        const struct inf_tensor *in = tget("case2.block%d.ffn_in", b);
        const float *ref = tget("case2.block%d.ffn_out", b)->data;
        int rows = (int)in->shape[0];
        float *out = malloc(sizeof(float) * (size_t)rows * D);
        assert_int_equal(inf_model_moe(M, b, in->data, tok, rows, out, &e), 0);
        double r, mx;
        cmp(out, ref, (size_t)rows * D, &r, &mx);
        size_t same = 0;
        for (size_t i = 0; i < (size_t)rows * D; i++)
            same += out[i] == ref[i];
        printf("# moe case 2 block %d: rms %.6f max %.5f bitwise-equal %.1f%%\n", b, r, mx,
               100.0 * same / ((double)rows * D));
        assert_true(r <= 0.005 && mx <= 0.02);
        free(out);
    }
    free(tok);
}

/* ---- whole block, prefill, from the previous block's recorded output ---- */

static void test_block(void **st)
{
    (void)st;
    struct ctx_err e = {0};
    int D = C->hidden_size, hc = C->hc_mult, n, P;
    int *tok = case_tokens(2, &n, &P);
    size_t sz = (size_t)P * hc * D;
    float *Xb = malloc(sizeof(float) * sz);
    double rs[INF_MAX_LAYERS];
    const struct inf_tensor *emb = inf_weights_get(W, "embed.weight");
    for (int b = 0; b < C->num_hidden_layers; b++) {
        if (b == 0) {
            for (int s = 0; s < P; s++)
                for (int j = 0; j < hc; j++)
                    for (int i = 0; i < D; i++)
                        Xb[((size_t)s * hc + j) * D + i] =
                            inf_bf16_to_f32(((const uint16_t *)emb->data)[(size_t)tok[s] * D + i]);
        } else {
            memcpy(Xb, tget("case2.block%d.out", b - 1)->data, sizeof(float) * sz);
        }
        struct inf_state *s;
        assert_int_equal(inf_state_new(C, &s, &e), 0);
        assert_int_equal(inf_model_block(M, s, b, Xb, tok, P, 0, &e), 0);
        double r, mx;
        cmp(Xb, tget("case2.block%d.out", b)->data, sz, &r, &mx);
        rs[b] = r;
        printf("# block case 2 block %d: rms %.5f (max %.4f)\n", b, r, mx);
        assert_true(r <= 0.03);
        inf_state_free(s);
    }
    qsort(rs, (size_t)C->num_hidden_layers, sizeof(double), cmp_double);
    double med = rs[C->num_hidden_layers / 2];
    if (C->num_hidden_layers % 2 == 0)
        med = 0.5 * (rs[C->num_hidden_layers / 2 - 1] + rs[C->num_hidden_layers / 2]);
    printf("# block median rms %.5f\n", med);
    assert_true(med <= 0.01);
    free(Xb);
    free(tok);
}

/* ---- head and MTP ---- */

static void test_head(void **st)
{
    (void)st;
    struct ctx_err e = {0};
    int D = C->hidden_size, hc = C->hc_mult, V = C->vocab_size, n, P;
    int *tok = case_tokens(2, &n, &P);
    const float *b5 = tget("case2.block%d.out", C->num_hidden_layers - 1)->data;
    const float *fh = fget("case2.final_hidden"), *lg = fget("case2.logits");
    float *hidden = malloc(sizeof(float) * (size_t)D), *logits = malloc(sizeof(float) * (size_t)V);
    inf_model_final_hidden(M, b5 + (size_t)(P - 1) * hc * D, hidden);
    double r, mx;
    cmp(hidden, fh, (size_t)D, &r, &mx);
    printf("# head final_hidden rms %.6f\n", r);
    assert_true(r <= 0.003);
    inf_model_logits(M, fh, logits);
    double sig = sigma_of(lg, V), dm = 0;
    for (int i = 0; i < V; i++)
        dm = fmax(dm, fabs((double)logits[i] - lg[i]));
    printf("# head logits[0] from final_hidden: max abs %.3g sigma\n", dm / sig);
    assert_true(dm <= 1e-3 * sig);
    /* MTP on block5.out with the next tokens, positions 0.. */
    struct inf_state *s;
    assert_int_equal(inf_state_new(C, &s, &e), 0);
    assert_int_equal(inf_model_mtp(M, s, 0, b5, tok + 1, P, logits, &e), 0);
    const float *ml = fget("case2.mtp_logits");
    double d2 = 0;
    for (int i = 0; i < V; i++)
        d2 += ((double)logits[i] - ml[i]) * ((double)logits[i] - ml[i]);
    double msig = sigma_of(ml, V), mr = sqrt(d2 / V) / msig;
    printf("# mtp_logits rms %.4f sigma (top-1 %s)\n", mr, argmax(logits, V) == argmax(ml, V) ? "same" : "differs");
    assert_true(mr <= 0.03);
    inf_state_free(s);
    free(hidden);
    free(logits);
    free(tok);
}

static float *case_rows[7];
static int case_T[7];

static void test_end_to_end(void **st)
{
    (void)st;
    int V = C->vocab_size, total = 0, top1 = 0;
    double rr[256], worst = 0;
    for (int k = 0; k < 7; k++) {
        const struct inf_tensor *ref = tget("case%d.logits", k);
        int R = (int)ref->shape[0];
        case_rows[k] = malloc(sizeof(float) * (size_t)R * V);
        run_case(k, 0, case_rows[k], &case_T[k]);
        assert_int_equal(case_T[k] + 1, R);
        int agree = 0;
        double cw = 0;
        for (int r = 0; r < R; r++) {
            const float *a = case_rows[k] + (size_t)r * V, *b = (const float *)ref->data + (size_t)r * V;
            double d2 = 0;
            for (int i = 0; i < V; i++)
                d2 += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
            double x = sqrt(d2 / V) / sigma_of(b, V);
            rr[total++] = x;
            cw = fmax(cw, x);
            agree += argmax(a, V) == argmax(b, V);
        }
        top1 += agree;
        worst = fmax(worst, cw);
        printf("# e2e case %d: %d rows, worst rms/sigma %.3f, top-1 %d/%d\n", k, R, cw, agree, R);
    }
    qsort(rr, (size_t)total, sizeof(double), cmp_double);
    double med = total % 2 ? rr[total / 2] : 0.5 * (rr[total / 2 - 1] + rr[total / 2]);
    printf("# e2e all %d rows: rms/sigma median %.3f p90 %.3f max %.3f, top-1 %d/%d (%.0f%%)\n", total, med,
           rr[(int)(0.9 * (total - 1))], worst, top1, total, 100.0 * top1 / total);
    assert_true(worst <= 0.8);
    assert_true(med <= 0.3);
    assert_true(2 * top1 >= total);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_head),
        cmocka_unit_test(test_moe),
        cmocka_unit_test(test_attention),
        cmocka_unit_test(test_block),
        cmocka_unit_test(test_end_to_end),
    };
    int rc = cmocka_run_group_tests(tests, setup, teardown);
    for (int k = 0; k < 7; k++)
        free(case_rows[k]);
    return rc;
}
