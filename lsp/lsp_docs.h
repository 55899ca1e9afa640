/* The open documents: the editor's unsaved buffers as ctx lsp holds them (overlays over the files
 * on disk), kept in step with textDocument/didOpen, didChange (full or incremental), didSave and
 * didClose. Functions take the notification's params as received and check every field, so a
 * malformed notification is refused with a message naming the field, never half-applied. */
#ifndef LSP_DOCS_H
#define LSP_DOCS_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdint.h>

#include "lsp_text.h"

struct lsp_doc {
    char *uri;
    char *language;
    int64_t version;   /* the editor's version of text */
    struct lsp_text text;
    bool dirty;        /* changed since opened or last saved */
    bool desync;       /* an edit was refused: the text no longer matches the editor's until the
                          next full-text change, save with text, or reopen */
};

struct lsp_docs {
    struct lsp_doc *v;
    size_t n, cap;
    enum lsp_encoding enc; /* negotiated position encoding */
};

void lsp_docs_free(struct lsp_docs *d);
struct lsp_doc *lsp_docs_find(const struct lsp_docs *d, const char *uri);

/* Each takes the notification's params. Errors: CTX_EINVAL for a missing or mistyped field (named),
 * CTX_ENOTFOUND for a document that is not open, CTX_EPROTO for a version that does not increase
 * (the change is refused and the document marked desync), CTX_ENOMEM. An incremental change on a
 * desync document is refused (CTX_EPROTO) since its ranges refer to text we do not have. */
int lsp_docs_open(struct lsp_docs *d, const cJSON *params, struct ctx_err *e);
int lsp_docs_change(struct lsp_docs *d, const cJSON *params, struct ctx_err *e);
int lsp_docs_save(struct lsp_docs *d, const cJSON *params, struct ctx_err *e);
int lsp_docs_close(struct lsp_docs *d, const cJSON *params, struct ctx_err *e);

/* A summary for status output: [{uri, languageId, version, bytes, lines, dirty, desync}]. */
cJSON *lsp_docs_summary(const struct lsp_docs *d);

#endif
