/* ctx lsp: the Language Server on stdio (lsp/server.h). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"
#include "lsp_server.h"

static const char usage[] =
    "usage: ctx [--socket PATH] [--ctxd PATH] lsp [--stdio] [--max-message BYTES]\n"
    "Serve the Language Server Protocol on stdin/stdout for an editor. ctxd is started on demand.\n"
    "  --stdio              accepted for clients that pass it (stdio is the only transport)\n"
    "  --max-message BYTES  largest message accepted (default 64 MiB)\n";

int ctx_cmd_lsp(int argc, char **argv, const struct ctx_cli *cli)
{
    struct lsp_options opt = {.socket_path = cli->socket_path, .ctxd_path = cli->ctxd_path};
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--stdio") == 0) {
            continue;
        } else if (strcmp(argv[i], "--max-message") == 0 && i + 1 < argc) {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(argv[++i], &end, 10);
            if (errno || *end || v < 1024 || v > ((unsigned long long)1 << 30)) {
                fprintf(stderr, "ctx lsp: --max-message must be a byte count from 1024 to 1 GiB\n");
                return 2;
            }
            opt.max_message = (size_t)v;
        } else if (strcmp(argv[i], "--help") == 0) {
            fputs(usage, stdout);
            return 0;
        } else {
            fprintf(stderr, "ctx lsp: unexpected argument \"%s\"\n%s", argv[i], usage);
            return 2;
        }
    }
    /* The protocol owns stdin and stdout. Keep private copies and point fds 0 and 1 elsewhere, so
     * that nothing else — a stray printf, or a ctxd started on demand, which inherits them —
     * can corrupt the stream or hold the editor's pipes open. */
    int in = fcntl(0, F_DUPFD_CLOEXEC, 3), out = fcntl(1, F_DUPFD_CLOEXEC, 3);
    int devnull = open("/dev/null", O_RDONLY);
    if (in < 0 || out < 0 || devnull < 0) {
        fprintf(stderr, "ctx lsp: cannot set up stdio: %s\n", strerror(errno));
        return 1;
    }
    dup2(devnull, 0);
    dup2(2, 1);
    close(devnull);
    signal(SIGPIPE, SIG_IGN); /* a closed editor pipe is a write error, not a kill */
    int rc = lsp_server_run(in, out, &opt);
    close(in);
    close(out);
    return rc;
}
