/* What the agent returns, turned into what an editor applies: a unified diff into an LSP
 * WorkspaceEdit (TextEdits against the editor's current buffer, in its position encoding;
 * CreateFile / DeleteFile for added and removed files), review findings into diagnostics, and
 * file URIs to and from paths. Pure functions: the caller supplies the current text of each file
 * (the open buffer, else the file on disk), so they are unit-tested apart from the server. */
#ifndef LSP_EDIT_H
#define LSP_EDIT_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "lsp_text.h"

/* "file:///a%20b/c.c" -> "/a b/c.c" (malloc'd). CTX_EINVAL for another scheme, a host other than
 * empty or "localhost", or a bad %-escape. */
int lsp_uri_to_path(const char *uri, char **path, struct ctx_err *e);
/* "/a b/c.c" -> "file:///a%20b/c.c" (malloc'd; NULL when out of memory). Unreserved characters and
 * "/" stay, everything else is %-escaped, as VS Code writes them. */
char *lsp_path_to_uri(const char *path);

/* The current text of the file at an absolute path: the open buffer (version >= 0) or the file on
 * disk (version -1). Return 0, CTX_ENOTFOUND when the file does not exist, or another CTX_E* code.
 * *text stays owned by the callee until the conversion returns. */
typedef int (*lsp_lookup_fn)(void *ud, const char *path, const char **text, size_t *len, int64_t *version,
                             struct ctx_err *e);

/* A git-style unified diff (paths "a/x" / "b/x" or bare, relative to root; "/dev/null" for created
 * and deleted files) -> a WorkspaceEdit {"documentChanges": [...]}: per changed file one
 * TextDocumentEdit (version: the buffer's, or null) whose TextEdits cover only what changed (common
 * leading and trailing text of each changed block is left alone, so columns are exact in `enc`);
 * new lines take the line ending the file already uses (CRLF stays CRLF). Hunks are located at
 * their line numbers, else at the one place their old lines occur (a buffer edited since the diff
 * was made); otherwise CTX_EFORMAT names the file and hunk. Created files: CreateFile then a
 * TextDocumentEdit inserting their text; deleted files: DeleteFile. */
int lsp_diff_to_edit(const char *diff, size_t len, const char *root, lsp_lookup_fn lookup, void *ud,
                     enum lsp_encoding enc, cJSON **edit, struct ctx_err *e);

/* Review findings [{"file","line","end_line"?,"severity","message","replacement"?}] (lines 1-based,
 * file relative to root or absolute) -> {uri: [Diagnostic...]} with ranges over whole lines (the
 * end at the end of end_line's text, in `enc`), severity error 1, warning 2, info 3, anything else
 * 4 (hint), source "ctx", and data.replacement when given. Every file in `uris` (an array of URIs
 * that were reviewed) gets an entry, empty when clean, so stale diagnostics are cleared. A finding
 * without a usable file or line is skipped. */
int lsp_findings_to_diagnostics(const cJSON *findings, const char *root, const cJSON *uris, lsp_lookup_fn lookup,
                                void *ud, enum lsp_encoding enc, cJSON **out, struct ctx_err *e);

#endif
