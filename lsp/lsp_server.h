/* ctx lsp: a Language Server on a pair of file descriptors (stdio in production, pipes in tests).
 * Single-threaded: it reads whatever input is available, queues the parsed messages, applies every
 * $/cancelRequest in the batch first, then handles the rest in order — so a request cancelled
 * before its turn is answered RequestCancelled and never runs. It reaches ctxd only through the
 * blocking client library (daemon/client.h), starting it on demand. */
#ifndef LSP_SERVER_H
#define LSP_SERVER_H

#include <stddef.h>

/* LSP error codes beyond JSON-RPC's. */
enum lsp_code {
    LSP_SERVER_NOT_INITIALIZED = -32002,
    LSP_REQUEST_FAILED = -32803,
    LSP_SERVER_CANCELLED = -32802,
    LSP_REQUEST_CANCELLED = -32800,
};

struct lsp_options {
    const char *socket_path;  /* ctxd's socket */
    const char *ctxd_path;    /* the ctxd binary to start on demand */
    size_t max_message;       /* largest body accepted (0: LSP_MAX_BODY_DEFAULT) */
    int daemon_timeout_ms;    /* for one daemon call (0: 30 s) */
};

/* Serve until `exit` or end of input. Returns the process exit status the spec asks for: 0 after
 * shutdown then exit, 1 otherwise (exit without shutdown, input closed, output broken). */
int lsp_server_run(int in_fd, int out_fd, const struct lsp_options *opt);

#endif
