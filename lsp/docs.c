#include "lsp_docs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

/* LSP integers and uintegers are 32-bit. */
#define LSP_UINT_MAX 2147483647LL

static void doc_free(struct lsp_doc *doc)
{
    free(doc->uri);
    free(doc->language);
    lsp_text_free(&doc->text);
}

void lsp_docs_free(struct lsp_docs *d)
{
    for (size_t i = 0; i < d->n; i++)
        doc_free(&d->v[i]);
    free(d->v);
    d->v = NULL;
    d->n = d->cap = 0;
}

struct lsp_doc *lsp_docs_find(const struct lsp_docs *d, const char *uri)
{
    for (size_t i = 0; i < d->n; i++)
        if (strcmp(d->v[i].uri, uri) == 0)
            return &d->v[i];
    return NULL;
}

static const cJSON *get_object(const cJSON *o, const char *field, const char *ctx, struct ctx_err *e)
{
    const cJSON *v = cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, field) : NULL;
    if (!cJSON_IsObject(v)) {
        ctx_err_set(e, CTX_EINVAL, "%s.%s must be an object", ctx, field);
        return NULL;
    }
    return v;
}

static int get_text_document(const cJSON *params, const char *ctx, bool want_version, const char **uri,
                             int64_t *version, struct ctx_err *e)
{
    if (!cJSON_IsObject(params))
        return ctx_err_set(e, CTX_EINVAL, "%s: params must be an object", ctx);
    char name[64];
    snprintf(name, sizeof name, "%s.textDocument", ctx);
    const cJSON *td = get_object(params, "textDocument", ctx, e);
    if (!td)
        return CTX_EINVAL;
    int rc = ctx_json_get_string(td, "uri", true, NULL, uri, name, e);
    if (rc)
        return rc;
    if (!want_version)
        return 0;
    rc = ctx_json_get_int(td, "version", true, 0, version, name, e);
    if (rc)
        return rc;
    if (*version < -LSP_UINT_MAX - 1 || *version > LSP_UINT_MAX)
        return ctx_err_set(e, CTX_EINVAL, "%s.version %lld is not a 32-bit integer", name, (long long)*version);
    return 0;
}

/* The length of a JSON string's text. cJSON strings are NUL-terminated, so text with U+0000 in it
 * ends there; LSP clients do not send NUL in source text. */
static size_t str_len(const char *s)
{
    return strlen(s);
}

int lsp_docs_open(struct lsp_docs *d, const cJSON *params, struct ctx_err *e)
{
    const char *uri, *lang, *text;
    int64_t version;
    int rc = get_text_document(params, "didOpen", true, &uri, &version, e);
    if (rc)
        return rc;
    const cJSON *td = cJSON_GetObjectItemCaseSensitive(params, "textDocument");
    if ((rc = ctx_json_get_string(td, "languageId", false, "", &lang, "didOpen.textDocument", e)) ||
        (rc = ctx_json_get_string(td, "text", true, NULL, &text, "didOpen.textDocument", e)))
        return rc;
    struct lsp_doc doc = {0};
    doc.uri = strdup(uri);
    doc.language = strdup(lang);
    doc.version = version;
    if (!doc.uri || !doc.language || lsp_text_set(&doc.text, text, str_len(text), e)) {
        doc_free(&doc);
        return ctx_err_set(e, CTX_ENOMEM, "didOpen %s: out of memory", uri);
    }
    /* Opening an open document is a client bug; the newest text wins. */
    struct lsp_doc *old = lsp_docs_find(d, uri);
    if (old) {
        doc_free(old);
        *old = doc;
        return 0;
    }
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 16;
        struct lsp_doc *v = realloc(d->v, cap * sizeof *v);
        if (!v) {
            doc_free(&doc);
            return ctx_err_set(e, CTX_ENOMEM, "didOpen %s: out of memory", uri);
        }
        d->v = v;
        d->cap = cap;
    }
    d->v[d->n++] = doc;
    return 0;
}

static int get_pos(const cJSON *range, const char *field, struct lsp_pos *p, const char *ctx, struct ctx_err *e)
{
    const cJSON *o = get_object(range, field, ctx, e);
    if (!o)
        return CTX_EINVAL;
    char name[96];
    snprintf(name, sizeof name, "%s.%s", ctx, field);
    int64_t line, ch;
    int rc;
    if ((rc = ctx_json_get_int(o, "line", true, 0, &line, name, e)) ||
        (rc = ctx_json_get_int(o, "character", true, 0, &ch, name, e)))
        return rc;
    if (line < 0 || line > LSP_UINT_MAX || ch < 0 || ch > LSP_UINT_MAX)
        return ctx_err_set(e, CTX_EINVAL, "%s: line %lld, character %lld out of range 0..2^31-1", name,
                           (long long)line, (long long)ch);
    p->line = (uint32_t)line;
    p->character = (uint32_t)ch;
    return 0;
}

/* One change: {text} replaces everything, {range, text} edits. Fields are checked before anything
 * is applied (the caller checks the whole array first). */
struct change {
    bool full;
    struct lsp_pos start, end;
    const char *text;
};

static int read_change(const cJSON *c, size_t i, struct change *out, struct ctx_err *e)
{
    char name[64];
    snprintf(name, sizeof name, "didChange.contentChanges[%zu]", i);
    if (!cJSON_IsObject(c))
        return ctx_err_set(e, CTX_EINVAL, "%s must be an object", name);
    int rc = ctx_json_get_string(c, "text", true, NULL, &out->text, name, e);
    if (rc)
        return rc;
    const cJSON *range = cJSON_GetObjectItemCaseSensitive(c, "range");
    out->full = range == NULL;
    if (out->full)
        return 0;
    char rname[80];
    snprintf(rname, sizeof rname, "%s.range", name);
    if (!cJSON_IsObject(range))
        return ctx_err_set(e, CTX_EINVAL, "%s must be an object", rname);
    if ((rc = get_pos(range, "start", &out->start, rname, e)) || (rc = get_pos(range, "end", &out->end, rname, e)))
        return rc;
    if (out->start.line > out->end.line ||
        (out->start.line == out->end.line && out->start.character > out->end.character))
        return ctx_err_set(e, CTX_EINVAL, "%s: start %u:%u comes after end %u:%u", rname, out->start.line,
                           out->start.character, out->end.line, out->end.character);
    return 0;
}

int lsp_docs_change(struct lsp_docs *d, const cJSON *params, struct ctx_err *e)
{
    const char *uri;
    int64_t version;
    int rc = get_text_document(params, "didChange", true, &uri, &version, e);
    if (rc)
        return rc;
    const cJSON *changes = cJSON_GetObjectItemCaseSensitive(params, "contentChanges");
    if (!cJSON_IsArray(changes))
        return ctx_err_set(e, CTX_EINVAL, "didChange.contentChanges must be an array");
    size_t n = (size_t)cJSON_GetArraySize(changes);
    struct change *cv = calloc(n ? n : 1, sizeof *cv);
    if (!cv)
        return ctx_err_set(e, CTX_ENOMEM, "didChange: out of memory");
    size_t i = 0, last_full = SIZE_MAX;
    for (const cJSON *c = changes->child; c; c = c->next, i++) {
        if ((rc = read_change(c, i, &cv[i], e)))
            goto out;
        if (cv[i].full)
            last_full = i;
    }
    struct lsp_doc *doc = lsp_docs_find(d, uri);
    if (!doc) {
        rc = ctx_err_set(e, CTX_ENOTFOUND, "didChange for %s, which is not open", uri);
        goto out;
    }
    if (version <= doc->version) {
        doc->desync = true;
        rc = ctx_err_set(e, CTX_EPROTO, "didChange for %s: version %lld does not follow %lld; change refused",
                         uri, (long long)version, (long long)doc->version);
        goto out;
    }
    /* Ranges refer to the text after the previous change, which a desync document lacks; only a
     * full replacement brings it back. */
    size_t first = 0;
    if (doc->desync) {
        if (last_full == SIZE_MAX) {
            doc->version = version;
            rc = ctx_err_set(e, CTX_EPROTO,
                             "didChange for %s: incremental change to a document out of step; "
                             "waiting for its full text", uri);
            goto out;
        }
        first = last_full;
    }
    /* Apply to a copy so that a failure leaves the document as it was. */
    struct lsp_text t = {0};
    if ((rc = lsp_text_set(&t, doc->text.data ? doc->text.data : "", doc->text.len, e)))
        goto out;
    for (i = first; i < n; i++) {
        if (cv[i].full)
            rc = lsp_text_set(&t, cv[i].text, str_len(cv[i].text), e);
        else
            rc = lsp_text_edit(&t, cv[i].start, cv[i].end, cv[i].text, str_len(cv[i].text), d->enc, e);
        if (rc) {
            lsp_text_free(&t);
            ctx_err_prefix(e, "didChange for %s, change %zu", uri, i);
            goto out;
        }
    }
    lsp_text_free(&doc->text);
    doc->text = t;
    doc->version = version;
    doc->dirty = true;
    doc->desync = false;
out:
    free(cv);
    return rc;
}

int lsp_docs_save(struct lsp_docs *d, const cJSON *params, struct ctx_err *e)
{
    const char *uri, *text;
    int rc = get_text_document(params, "didSave", false, &uri, NULL, e);
    if (rc || (rc = ctx_json_get_string(params, "text", false, NULL, &text, "didSave", e)))
        return rc;
    struct lsp_doc *doc = lsp_docs_find(d, uri);
    if (!doc)
        return ctx_err_set(e, CTX_ENOTFOUND, "didSave for %s, which is not open", uri);
    /* We ask for the text on save: it is what is now on disk, and it resynchronises the buffer. */
    if (text) {
        if ((rc = lsp_text_set(&doc->text, text, str_len(text), e)))
            return rc;
        doc->desync = false;
    }
    doc->dirty = false;
    return 0;
}

int lsp_docs_close(struct lsp_docs *d, const cJSON *params, struct ctx_err *e)
{
    const char *uri;
    int rc = get_text_document(params, "didClose", false, &uri, NULL, e);
    if (rc)
        return rc;
    struct lsp_doc *doc = lsp_docs_find(d, uri);
    if (!doc)
        return ctx_err_set(e, CTX_ENOTFOUND, "didClose for %s, which is not open", uri);
    doc_free(doc);
    size_t i = (size_t)(doc - d->v);
    memmove(&d->v[i], &d->v[i + 1], (d->n - i - 1) * sizeof *d->v);
    d->n--;
    return 0;
}

cJSON *lsp_docs_summary(const struct lsp_docs *d)
{
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; a && i < d->n; i++) {
        const struct lsp_doc *doc = &d->v[i];
        cJSON *o = cJSON_CreateObject();
        if (!o)
            break;
        cJSON_AddStringToObject(o, "uri", doc->uri);
        cJSON_AddStringToObject(o, "languageId", doc->language);
        cJSON_AddNumberToObject(o, "version", (double)doc->version);
        cJSON_AddNumberToObject(o, "bytes", (double)doc->text.len);
        cJSON_AddNumberToObject(o, "lines", (double)lsp_text_lines(doc->text.data, doc->text.len));
        cJSON_AddBoolToObject(o, "dirty", doc->dirty);
        cJSON_AddBoolToObject(o, "desync", doc->desync);
        cJSON_AddItemToArray(a, o);
    }
    return a;
}
