/* libFuzzer target: the DSML completion parser (inference/text/dsml_parse.c) and the Python-json
 * layer under it, on arbitrary bytes. The first byte picks the mode and a chunk size; the rest is
 * the completion. Invariants checked (abort on violation):
 *   - streaming in chunks and parsing in one piece agree: same success, same error kind and
 *     offset, same final message;
 *   - exactly one of DONE or ERROR fires, and nothing after it;
 *   - on success every call's arguments are valid JSON whose re-serialisation is stable.
 * The same bytes, if they are a JSON array, also go through the prompt encoder (no crash, a
 * prompt that starts with BOS). tests/text/test_dsml_fuzz.c runs this entry on hostile inputs. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dsml.h"
#include "pyjson.h"

struct fuzz_dsml_state {
    int terminal; /* DONE or ERROR seen */
    int after_terminal;
};

static int fuzz_dsml_cb(void *ud, const struct inf_dsml_event *ev)
{
    struct fuzz_dsml_state *s = ud;
    if (s->terminal)
        s->after_terminal++;
    if (ev->type == INF_DSML_EV_DONE || ev->type == INF_DSML_EV_ERROR)
        s->terminal++;
    if ((ev->type == INF_DSML_EV_CONTENT_DELTA || ev->type == INF_DSML_EV_REASONING_DELTA ||
         ev->type == INF_DSML_EV_VALUE_DELTA) && (!ev->text || ev->len == 0))
        abort();
    return 0;
}

/* Returns 0 when the completion parsed, CTX_EFORMAT when it was rejected. */
int inf_fuzz_dsml_one(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    enum inf_dsml_mode mode = (data[0] & 1) ? INF_DSML_THINKING : INF_DSML_CHAT;
    size_t step = (size_t)(data[0] >> 1) + 1;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    const char *tools_json = "[{\"name\": \"read_file\"}, {\"name\": \"search\"}, {\"name\": \"edit_file\"}, {\"name\": \"f\"}]";
    cJSON *tools = (data[0] & 0x80) ? cJSON_Parse(tools_json) : NULL;
    struct inf_dsml_parser_opts o = {.mode = mode, .tools = tools};

    cJSON *whole = NULL;
    struct inf_dsml_error werr;
    struct ctx_err e = {0};
    int rc_whole = inf_dsml_parse(text, len, &o, &whole, &werr, &e);

    struct fuzz_dsml_state st = {0};
    struct inf_dsml_parser *p = inf_dsml_parser_new(&o, fuzz_dsml_cb, &st);
    if (!p)
        abort();
    int rc = 0;
    for (size_t i = 0; i < len && !rc; i += step)
        rc = inf_dsml_parser_feed(p, text + i, i + step > len ? len - i : step, &e);
    if (!rc)
        rc = inf_dsml_parser_finish(p, &e);
    if (rc != rc_whole || st.terminal != 1 || st.after_terminal)
        abort();
    if (rc) {
        const struct inf_dsml_error *er = inf_dsml_parser_error(p);
        if (!er || er->kind != werr.kind || er->offset != werr.offset || er->offset > len || !er->message[0])
            abort();
    } else {
        cJSON *m = inf_dsml_parser_message(p);
        if (!m || !cJSON_Compare(m, whole, 1))
            abort();
        const cJSON *calls = cJSON_GetObjectItemCaseSensitive(m, "tool_calls");
        for (const cJSON *c = calls ? calls->child : NULL; c; c = c->next) {
            const cJSON *fn = cJSON_GetObjectItemCaseSensitive(c, "function");
            const cJSON *args = cJSON_GetObjectItemCaseSensitive(fn, "arguments");
            struct inf_buf a = {0}, b = {0};
            size_t at;
            if (!cJSON_IsString(args) ||
                inf_py_reserialize(args->valuestring, strlen(args->valuestring), &a, &at) != 0 ||
                inf_py_reserialize(a.p, a.len, &b, &at) != 0 || a.len != b.len || memcmp(a.p, b.p, a.len))
                abort();
            inf_buf_free(&a);
            inf_buf_free(&b);
        }
        cJSON_Delete(m);
    }
    inf_dsml_parser_free(p);
    cJSON_Delete(whole);
    cJSON_Delete(tools);

    /* The encoder on the same bytes, when they happen to be a request. */
    cJSON *req = cJSON_ParseWithLength(text, len);
    if (req) {
        struct inf_dsml_opts eo = {.mode = mode, .drop_thinking = (data[0] & 2) != 0};
        char *prompt = NULL;
        size_t pl = 0;
        if (inf_dsml_encode_request(req, &eo, &prompt, &pl, &e) == 0 &&
            (pl < sizeof INF_DSML_BOS - 1 || memcmp(prompt, INF_DSML_BOS, sizeof INF_DSML_BOS - 1)))
            abort();
        free(prompt);
        cJSON_Delete(req);
    }
    return rc;
}

#ifdef CTX_FUZZ_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    inf_fuzz_dsml_one(data, size);
    return 0;
}
#endif
