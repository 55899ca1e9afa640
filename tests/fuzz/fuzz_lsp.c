/* libFuzzer target: ctx lsp's input path without the pipes — Content-Length framing (small limits so
 * that the overlong paths are reached, the input fed in three pieces so that headers and bodies
 * straddle reads), JSON parsing, the document store on whatever params arrive, and the position
 * arithmetic on every text seen (offset/position round trips must agree). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "lsp_docs.h"
#include "lsp_framing.h"
#include "lsp_text.h"

struct fuzz_state {
    struct lsp_docs docs;
    int broken; /* an invariant failed */
};

static void check_text(struct fuzz_state *st, const char *t, size_t len)
{
    for (int enc = LSP_ENC_UTF16; enc <= LSP_ENC_UTF32; enc++) {
        /* the first and last 48 offsets: bounded so that the fuzzer stays fast on big bodies */
        for (size_t o = 0; o <= len; o = (o == 47 && len > 96) ? len - 48 : o + 1) {
            struct lsp_pos p = lsp_text_position(t, len, o, (enum lsp_encoding)enc);
            size_t back = lsp_text_offset(t, len, p, (enum lsp_encoding)enc);
            struct lsp_pos p2 = lsp_text_position(t, len, back, (enum lsp_encoding)enc);
            if (back > o || p2.line != p.line || p2.character != p.character)
                st->broken = 1;
        }
        struct lsp_pos far = {UINT32_MAX, UINT32_MAX};
        if (lsp_text_offset(t, len, far, (enum lsp_encoding)enc) != len)
            st->broken = 1;
    }
}

static int on_message(void *ud, char *body, size_t len)
{
    struct fuzz_state *st = ud;
    struct ctx_err e = {0};
    cJSON *msg = ctx_json_parse(body, len, "message", &e);
    if (!msg)
        return 0;
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(msg, "method");
    const cJSON *params = cJSON_GetObjectItemCaseSensitive(msg, "params");
    if (cJSON_IsString(m)) {
        if (strcmp(m->valuestring, "textDocument/didOpen") == 0)
            lsp_docs_open(&st->docs, params, &e);
        else if (strcmp(m->valuestring, "textDocument/didChange") == 0)
            lsp_docs_change(&st->docs, params, &e);
        else if (strcmp(m->valuestring, "textDocument/didSave") == 0)
            lsp_docs_save(&st->docs, params, &e);
        else if (strcmp(m->valuestring, "textDocument/didClose") == 0)
            lsp_docs_close(&st->docs, params, &e);
    }
    cJSON_Delete(msg);
    for (size_t i = 0; i < st->docs.n; i++) {
        const struct lsp_doc *d = &st->docs.v[i];
        if (d->text.len && (!d->text.data || d->text.data[d->text.len] != 0))
            st->broken = 1;
        check_text(st, d->text.data ? d->text.data : "", d->text.len);
    }
    check_text(st, body, len);
    return 0;
}

static int on_error(void *ud, const struct ctx_err *e)
{
    struct fuzz_state *st = ud;
    if (!e->msg[0] || (e->code != CTX_EFORMAT && e->code != CTX_ERANGE))
        st->broken = 1;
    return 0;
}

/* Returns 0, or -1 when an invariant broke (the fuzzer then traps). */
int lsp_fuzz_one(const uint8_t *data, size_t size)
{
    struct fuzz_state st = {0};
    /* the first byte picks the encoding, as a client's initialize would */
    if (size)
        st.docs.enc = (enum lsp_encoding)(data[0] % 3);
    struct lsp_framer f;
    lsp_framer_init(&f, 256, 4096);
    struct lsp_framer_cb cb = {.on_message = on_message, .on_error = on_error, .ud = &st};
    size_t a = size / 3, b = 2 * size / 3;
    int rc = lsp_framer_feed(&f, (const char *)data, a, &cb);
    if (rc == 0)
        rc = lsp_framer_feed(&f, (const char *)data + a, b - a, &cb);
    if (rc == 0)
        rc = lsp_framer_feed(&f, (const char *)data + b, size - b, &cb);
    if (f.len > 4096 + 256 + 1)
        st.broken = 1;
    lsp_framer_free(&f);
    lsp_docs_free(&st.docs);
    return st.broken || rc < 0 ? -1 : 0;
}

#ifdef CTX_FUZZ_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (lsp_fuzz_one(data, size) != 0)
        __builtin_trap();
    return 0;
}
#endif
