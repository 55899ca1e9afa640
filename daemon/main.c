/* ctxd: the daemon. One libuv loop thread for all I/O; methods register on the server. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "args.h"
#include "client.h"
#include "ctx_config.h"
#include "ctxd.h"
#include "engine.h"
#include "fim.h"
#include "agentd.h"
#include "repos.h"
#include "scheduler.h"
#include "sessions.h"
#include "log.h"
#include "rpc.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: ctxd [options]\n"
            "  --socket PATH      Unix socket (default $CTXD_SOCKET, $XDG_RUNTIME_DIR/ctxd/ctxd.sock,\n"
            "                     or /tmp/ctxd-UID/ctxd.sock)\n"
            "  --daemon           detach; the starting process exits once the socket listens\n"
            "  --log FILE         log file (default: stderr; with --daemon, ctxd.log beside the socket)\n"
            "  --log-level LEVEL  debug, info, warn or error (default info)\n"
            "  --max-line BYTES   longest request line accepted (default %zu)\n"
            "  --max-queue BYTES  unread reply bytes one client may hold before it is dropped\n"
            "                     (default 64 MiB)\n"
            "model:\n"
            "  --model DIR        an official DeepSeek V4 checkpoint (config.json, shards, tokenizer.json);\n"
            "                     default: the bundled trained model ctx-small ($CTX_MODEL, else\n"
            "                     " CTX_DATADIR "/models/ctx-small, else the source tree's)\n"
            "  --synthetic NAME   seeded random weights of a built-in config (tiny, mid, flash, pro) or\n"
            "                     of a config.json, with the bundled DeepSeek tokenizer (answers are noise)\n"
            "  --seed N           seed of synthetic weights (default 0)\n"
            "  --tokenizer FILE   tokenizer.json (default: the checkpoint's, else the bundled one)\n"
            "  --threads N        engine threads (default: one per CPU)\n"
            "  --preload          load the model at start rather than on the first request\n"
            "  --backend cuda [--gpus 0,1] [--max-ctx TOKENS]\n"
            "                     run the model on GPUs (a -Dcuda build): one layer-split shard per\n"
            "                     listed device (default 0), caches sized for --max-ctx positions\n"
            "                     (default: the prompt budget + 40960, room for questions and steps)\n"
            "  --prefill-gemm fast|exact  with --backend cuda: prefill's dense products on cuBLASLt and\n"
            "                     the routed experts on FP8 warpgroup MMAs (fast, the default: FP8\n"
            "                     tensor-core sums inside each 128-wide K block, as DeepSeek's FP8 GEMMs)\n"
            "                     or on the exact kernels (the CPU engine's fp32 block partials; prefill\n"
            "                     20-45%% slower); sets CTX_CUDA_PREFILL_GEMM\n"
            "  --spec, --no-spec  speculative decoding with the checkpoint's MTP block: each step feeds\n"
            "                     the chosen token and the MTP's draft of the next as one forward, and\n"
            "                     an accepted draft costs no forward of its own (the same tokens: greedy\n"
            "                     ids, sampled distributions). On by default with --backend cuda (the\n"
            "                     MTP block goes on the last GPU), off on the CPU engine, where a\n"
            "                     two-token forward costs two (--spec there: for tests)\n"
            "  --backend openai --url URL [--remote-model NAME] [--api-key-env VAR]\n"
            "                     answer through a remote OpenAI-compatible endpoint (DeepSeek's API\n"
            "                     shape) instead of the local engine\n",
            CTXD_MAX_LINE_DEFAULT);
    /* (two strings: C17 compilers need not take one over 4095 bytes) */
    fprintf(f,
            "repositories:\n"
            "  --budget TOKENS    prompt budget of a repository (default 500000)\n"
            "  --chunk TOKENS     prefill tokens per engine slice (default 256, 16384 with --backend cuda,\n"
            "                     where it is also the GPU engine's chunk (8192, then 4096, where the\n"
            "                     GPUs lack the room), and a slice 4 chunks a GPU with several --gpus,\n"
            "                     pipelined over them; a multiple of 128)\n"
            "KV cache (the resident state on disk):\n"
            "  --cache DIR        default $XDG_CACHE_HOME/ctxd/kv or ~/.cache/ctxd/kv\n"
            "  --no-cache         keep the resident state in memory only\n"
            "  --state DIR        sessions database (default $XDG_STATE_HOME/ctxd or ~/.local/state/ctxd)\n"
            "  --cache-budget BYTES  disk budget; least recently used lineages go first (default 20 GiB)\n"
            "  --checkpoint-every TOKENS  tokens between checkpoints (default 4096)\n"
            "  --no-watch         do not follow edits in the working trees\n"
            "  --debounce-ms MS   quiet time before edits are applied (default 200)\n"
            "  --overlay-threshold TOKENS  an edit whose re-prefill would recompute more tokens is shown\n"
            "                     after the repository until it is idle (default 8192; 0: never)\n"
            "  --rebase-idle-ms MS  idle time before such edits are re-based (default 30000)\n"
            "agent:\n"
            "  --policy FILE      the agent's command policy (JSON: allow/ask/deny patterns; default:\n"
            "                     ask for every command, deny destructive ones, no sandbox = deny)\n"
            "  --approval-timeout-ms MS  an unanswered 'ask' approval is refused after this (default 300000)\n"
            "  --tool-grammar strict|off  mask the local model's tokens so tool-call blocks always parse\n"
            "                     (declared tools and parameters, valid JSON, closed blocks; default strict)\n"
            "  --forced-completions FILE  TESTS ONLY: a JSON array of completion texts the agent's model\n"
            "                     is made to produce, in order across requests (each token still runs\n"
            "                     through the engine as if sampled)\n"
            "  --version, --help\n");
}

static void on_exit_timer(uv_timer_t *t)
{
    /* Clients that never drain their sockets must not keep ctxd alive after shutdown. */
    uv_stop(t->loop);
}

void ctxd_begin_shutdown(struct ctxd *d, const char *reason)
{
    if (d->shutting_down)
        return;
    d->shutting_down = 1;
    snprintf(d->shutdown_reason, sizeof d->shutdown_reason, "%s", reason);
    CTX_INFO("shutting down: %s", reason);
    ctxd_repos_free(d);
    ctxd_sched_cancel_all(d->sched);
    ctxd_server_shutdown(d->server);
    uv_signal_stop(&d->sigterm);
    uv_signal_stop(&d->sigint);
    uv_close((uv_handle_t *)&d->sigterm, NULL);
    uv_close((uv_handle_t *)&d->sigint, NULL);
    uv_timer_start(&d->exit_timer, on_exit_timer, 5000, 0);
    uv_unref((uv_handle_t *)&d->exit_timer);
}

static void close_handle(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void on_signal(uv_signal_t *h, int signum)
{
    ctxd_begin_shutdown(h->data, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

int main(int argc, char **argv)
{
    const char *socket_opt = NULL, *log_path = NULL, *prefill_gemm = NULL;
    int daemonize = 0, level = CTX_LOG_INFO;
    size_t max_line = 0, max_queue = 0;
    struct ctxd_engine_opts eo = {0};
    struct ctxd_repos_opts ro = {0};
    struct ctxd_agent_opts ao = {0};
    const char *cache_dir = NULL, *state_dir = NULL;
    int no_cache = 0, preload = 0, remote = 0;
    static const struct option opts[] = {
        {"socket", required_argument, 0, 's'}, {"daemon", no_argument, 0, 'd'},
        {"log", required_argument, 0, 'l'},    {"log-level", required_argument, 0, 'L'},
        {"max-line", required_argument, 0, 'm'}, {"max-queue", required_argument, 0, 'q'},
        {"version", no_argument, 0, 'V'},
        {"model", required_argument, 0, 'M'},  {"synthetic", required_argument, 0, 'S'},
        {"seed", required_argument, 0, 'e'},   {"tokenizer", required_argument, 0, 'T'},
        {"threads", required_argument, 0, 't'}, {"budget", required_argument, 0, 'b'},
        {"chunk", required_argument, 0, 'c'},   {"cache", required_argument, 0, 'C'},
        {"no-cache", no_argument, 0, 'N'},     {"state", required_argument, 0, 'Z'},     {"cache-budget", required_argument, 0, 'B'},
        {"checkpoint-every", required_argument, 0, 'k'},
        {"no-watch", no_argument, 0, 'W'},     {"preload", no_argument, 0, 'P'},
        {"overlay-threshold", required_argument, 0, 'O'}, {"rebase-idle-ms", required_argument, 0, 'I'},
        {"backend", required_argument, 0, 'K'}, {"url", required_argument, 0, 'U'},
        {"gpus", required_argument, 0, 'g'}, {"max-ctx", required_argument, 0, 'X'},
        {"prefill-gemm", required_argument, 0, 'p'}, {"spec", no_argument, 0, 'x'}, {"no-spec", no_argument, 0, 0x101},
        {"remote-model", required_argument, 0, 'R'}, {"api-key-env", required_argument, 0, 'A'},     {"debounce-ms", required_argument, 0, 'D'},
        {"policy", required_argument, 0, 'y'}, {"forced-completions", required_argument, 0, 'F'},
        {"approval-timeout-ms", required_argument, 0, 'a'}, {"tool-grammar", required_argument, 0, 'G'},
        {"help", no_argument, 0, 'h'},         {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 's': socket_opt = optarg; break;
        case 'x': eo.spec = 1; break;
        case 0x101: eo.spec = -1; break;
        case 'd': daemonize = 1; break;
        case 'l': log_path = optarg; break;
        case 'L':
            level = ctx_log_level_parse(optarg);
            if (level < 0) {
                fprintf(stderr, "ctxd: unknown log level \"%s\"\n", optarg);
                return 2;
            }
            break;
        case 'm':
        case 'q': {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(optarg, &end, 10);
            if (errno || *end || v < 1024) {
                fprintf(stderr, "ctxd: --%s must be a number of bytes >= 1024\n",
                        ch == 'm' ? "max-line" : "max-queue");
                return 2;
            }
            *(ch == 'm' ? &max_line : &max_queue) = (size_t)v;
            break;
        }
        case 'M': eo.model_dir = optarg; break;
        case 'C': cache_dir = optarg; break;
        case 'N': no_cache = 1; break;
        case 'Z': state_dir = optarg; break;
        case 'W': ro.no_watch = 1; break;
        case 'y': ao.policy_path = optarg; break;
        case 'F': ao.forced_path = optarg; break;
        case 'G':
            if (strcmp(optarg, "strict") && strcmp(optarg, "off")) {
                fprintf(stderr, "ctxd: --tool-grammar is strict or off, not \"%s\"\n", optarg);
                return 2;
            }
            ao.tool_grammar = strcmp(optarg, "off") == 0;
            break;
        case 'a': {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(optarg, &end, 10);
            if (errno || *end || !optarg[0] || v < 1 || v > 86400000) {
                fprintf(stderr, "ctxd: bad number \"%s\"\n", optarg);
                return 2;
            }
            ao.approval_timeout_ms = (int)v;
            break;
        }
        case 'P': preload = 1; break;
        case 'K':
            if (strcmp(optarg, "local") && strcmp(optarg, "openai") && strcmp(optarg, "cuda")) {
                fprintf(stderr, "ctxd: --backend is local, cuda or openai, not \"%s\"\n", optarg);
                return 2;
            }
            remote = strcmp(optarg, "openai") == 0;
            eo.cuda = strcmp(optarg, "cuda") == 0;
            break;
        case 'g': {
            struct ctx_err ge = {0};
            if (ctx_parse_int_list(optarg, 0, 255, eo.gpus, (int)(sizeof eo.gpus / sizeof eo.gpus[0]), &eo.n_gpus,
                                   &ge)) {
                fprintf(stderr, "ctxd: --gpus wants a list of device numbers like 0,1 (at most 16), not \"%s\": %s\n",
                        optarg, ge.msg);
                return 2;
            }
            break;
        }
        case 'X': {
            char *end;
            errno = 0;
            long long v = strtoll(optarg, &end, 10);
            if (end == optarg || *end || errno || v < 256) {
                fprintf(stderr, "ctxd: --max-ctx wants a number of tokens >= 256, not \"%s\"\n", optarg);
                return 2;
            }
            eo.max_ctx = v;
            break;
        }
        case 'p':
            if (strcmp(optarg, "fast") && strcmp(optarg, "exact")) {
                fprintf(stderr, "ctxd: --prefill-gemm is fast or exact, not \"%s\"\n", optarg);
                return 2;
            }
            prefill_gemm = optarg;
            break;
        case 'U': eo.remote_url = optarg; break;
        case 'R': eo.remote_model = optarg; break;
        case 'A': eo.api_key_env = optarg; break;
        case 'O':
            if (strcmp(optarg, "0") == 0) {
                ro.overlay_threshold = -1;
                break;
            }
            /* fall through */
        case 'I':
        case 'B':
        case 'D':
        case 'k': {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(optarg, &end, 10);
            if (errno || *end || !optarg[0] || v < 1) {
                fprintf(stderr, "ctxd: bad number \"%s\"\n", optarg);
                return 2;
            }
            if (ch == 'O')
                ro.overlay_threshold = v > 100000000 ? 100000000 : (int)v;
            else if (ch == 'I')
                ro.rebase_idle_ms = v > 86400000 ? 86400000 : (int)v;
            else if (ch == 'B')
                ro.cache_budget = v;
            else if (ch == 'D')
                ro.debounce_ms = v > 60000 ? 60000 : (int)v;
            else
                ro.checkpoint_every = v > 100000000 ? 100000000 : (int)v;
            break;
        }
        case 'S': eo.synthetic = optarg; break;
        case 'T': eo.tokenizer = optarg; break;
        case 'e':
        case 't':
        case 'b':
        case 'c': {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(optarg, &end, 10);
            if (errno || *end || !optarg[0] || (ch != 'e' && (v < 1 || v > 100000000))) {
                fprintf(stderr, "ctxd: bad number \"%s\"\n", optarg);
                return 2;
            }
            if (ch == 'e')
                eo.seed = v;
            else if (ch == 't')
                eo.threads = (int)v;
            else if (ch == 'b')
                ro.budget = (size_t)v;
            else
                ro.chunk = (int)v;
            break;
        }
        case 'V': printf("ctxd %s\n", CTX_VERSION); return 0;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if ((eo.n_gpus || eo.max_ctx || prefill_gemm) && !eo.cuda) {
        fprintf(stderr, "ctxd: --gpus, --max-ctx and --prefill-gemm go with --backend cuda\n");
        return 2;
    }
    /* read by the CUDA engine when it is created (kernels/cuda_engine.h cuda_engine_prefill_lt) */
    if (prefill_gemm && setenv("CTX_CUDA_PREFILL_GEMM", strcmp(prefill_gemm, "exact") ? "lt" : "exact", 1)) {
        fprintf(stderr, "ctxd: setenv: %s\n", strerror(errno));
        return 1;
    }
    /* the device caches hold the prompt budget plus room for questions and agent steps */
    if (eo.cuda && !eo.max_ctx)
        eo.max_ctx = (long long)(ro.budget ? ro.budget : 500000) + 40960;
    /* a GPU wants long prefill slices (the routed experts' grouped GEMM reads every expert's weights
     * once a slice: about the same time for 256 tokens as for 2048; a 500K prefill in slices of 4096
     * is ~7% faster than in slices of 2048, in chunks of 8192 ~6% faster than in 4096 over two H200s,
     * 33.2 against 35.3 s, and in chunks of 16384 ~4% faster than in 8192 on each shard of that split,
     * ~4% in these slices over both, modelled: bench/gpu/README.md); 16384 takes ~10 GB a GPU more
     * scratch than 8192 on V4-Flash at 540K, so where the GPUs refuse it the engine loads with 8192,
     * then 4096, instead (chunk_fallback) */
    if (eo.cuda && !ro.chunk) {
        ro.chunk = 16384;
        eo.chunk_fallback = 4096;
    }
    if (eo.cuda) { /* the engine's chunk; one GPU takes it as the slice, a longer one would only be split */
        eo.max_chunk = (int)ro.chunk;
        /* Over several GPUs a slice is 4 chunks a GPU: cuda_multi_prefill pipelines one call's chunks over
         * the layer split (GPU i on chunk c while GPU i-1 is on c+1), so a one-chunk slice keeps one GPU
         * busy at a time. V4-Flash's 500K prefill over two H200s: 45.8 s pipelined against ~90 s of GPU
         * time in turn (bench/gpu/results/2026-11-30-s20); 8 chunks a slice leave a bubble of ~1 in 9. */
        if (eo.n_gpus > 1) {
            long long slice = (long long)ro.chunk * 4 * eo.n_gpus;
            ro.chunk = slice > 100000000 ? 100000000 : (int)slice;
        }
    }
    if (remote && eo.spec) {
        fprintf(stderr, "ctxd: --spec and --no-spec go with the local engine (--backend local or cuda)\n");
        return 2;
    }
    if (remote != (eo.remote_url != NULL)) {
        fprintf(stderr, "ctxd: --backend openai and --url go together\n");
        return 2;
    }
    if (optind < argc) {
        fprintf(stderr, "ctxd: unexpected argument \"%s\"\n", argv[optind]);
        return 2;
    }

    /* SIGTERM/SIGINT wait until the loop handles them: a signal that arrives while the daemon is
     * starting (it already listens) must mean an orderly exit, not death by the default action.
     * Threads started meanwhile inherit the mask, so the loop thread receives them. */
    sigset_t term;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    sigaddset(&term, SIGINT);
    sigprocmask(SIG_BLOCK, &term, NULL);

    char sock[256];
    struct ctx_err e = {0};
    if (socket_opt) {
        if (snprintf(sock, sizeof sock, "%s", socket_opt) >= (int)sizeof sock) {
            fprintf(stderr, "ctxd: socket path too long\n");
            return 2;
        }
    } else if (ctxd_default_socket(sock, sizeof sock, &e) != 0) {
        fprintf(stderr, "ctxd: %s\n", e.msg);
        return 1;
    }

    /* --daemon: the first process waits on a pipe until the child listens or reports failure. */
    int ready_fd = -1;
    if (daemonize) {
        int p[2];
        if (pipe(p) != 0) {
            perror("ctxd: pipe");
            return 1;
        }
        pid_t pid = fork();
        if (pid < 0) {
            perror("ctxd: fork");
            return 1;
        }
        if (pid > 0) {
            close(p[1]);
            char msg[512];
            ssize_t n = 0, r;
            while ((r = read(p[0], msg + n, sizeof msg - 1 - (size_t)n)) > 0 || (r < 0 && errno == EINTR))
                if (r > 0)
                    n += r;
            msg[n] = 0;
            if (n >= 2 && strncmp(msg, "ok", 2) == 0)
                return 0;
            fprintf(stderr, "%s\n", n ? msg : "ctxd: the daemon exited before it was ready");
            return 1;
        }
        close(p[0]);
        ready_fd = p[1];
        /* A daemon must not keep its starter's pipes or files open (a caller waiting for EOF on
         * our stdout would wait forever). */
        for (int fd = 3; fd < 1024; fd++)
            if (fd != ready_fd)
                close(fd);
        setsid();
        signal(SIGHUP, SIG_IGN);
        if (chdir("/") != 0) { /* never keep a repository's directory busy */
        }
    }

    FILE *logf = NULL;
    char default_log[300];
    if (!log_path && daemonize) {
        snprintf(default_log, sizeof default_log, "%s", sock);
        char *slash = strrchr(default_log, '/');
        if (slash)
            snprintf(slash + 1, sizeof default_log - (size_t)(slash + 1 - default_log), "ctxd.log");
        else
            snprintf(default_log, sizeof default_log, "ctxd.log");
        log_path = default_log;
    }
    char cache_buf[PATH_MAX];
    if (!no_cache) {
        if (!cache_dir) {
            const char *x = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
            if (x && x[0])
                snprintf(cache_buf, sizeof cache_buf, "%s/ctxd/kv", x);
            else
                snprintf(cache_buf, sizeof cache_buf, "%s/.cache/ctxd/kv", home && home[0] ? home : "/tmp");
            /* the parent folders; store_kv_open makes the last one */
            char parent[PATH_MAX];
            snprintf(parent, sizeof parent, "%s", cache_buf);
            for (char *p = parent + 1; *p; p++)
                if (*p == '/') {
                    *p = 0;
                    mkdir(parent, 0700);
                    *p = '/';
                }
            cache_dir = cache_buf;
        }
        ro.cache_dir = cache_dir;
    }
    char state_buf[PATH_MAX];
    if (!state_dir) {
        const char *x = getenv("XDG_STATE_HOME"), *home = getenv("HOME");
        if (x && x[0])
            snprintf(state_buf, sizeof state_buf, "%s/ctxd", x);
        else
            snprintf(state_buf, sizeof state_buf, "%s/.local/state/ctxd", home && home[0] ? home : "/tmp");
        state_dir = state_buf;
    }
    struct ctxd d = {0};
    uv_loop_t loop;
    uv_loop_init(&loop);
    d.loop = &loop;

    struct ctxd_server_opts so = {.socket_path = sock, .max_line = max_line, .max_write_queue = max_queue};
    int rc = ctxd_engine_new(&eo, &d.engine, &e);
    if (rc == 0)
        rc = ctxd_server_new(&loop, &so, &d.server, &e);
    if (rc == 0)
        rc = ctxd_sched_new(&loop, NULL, &d.sched, &e);
    if (rc == 0)
        rc = ctxd_repos_init(&d, &ro, &e);
    if (rc == 0)
        rc = ctxd_agent_init(&d, &ao, &e);
    if (rc == 0)
        rc = ctxd_sessions_init(&d, state_dir, &e);
    if (rc == 0 && preload)
        rc = ctxd_repos_preload(&d, &e);
    if (rc == 0 && log_path) {
        logf = fopen(log_path, "a");
        if (!logf) {
            rc = ctx_err_errno(&e, CTX_EIO, errno, "opening log file %s", log_path);
        }
    }
    if (rc != 0) {
        if (ready_fd >= 0) {
            dprintf(ready_fd, "ctxd: %s\n", e.msg);
            close(ready_fd);
        } else {
            fprintf(stderr, "ctxd: %s\n", e.msg);
        }
        ctxd_repos_free(&d);
        if (d.server)
            ctxd_server_shutdown(d.server);
        ctxd_sched_free(d.sched);
        uv_run(&loop, UV_RUN_DEFAULT);
        ctxd_repos_release(&d);
        ctxd_agent_free(&d);
        ctxd_sessions_free(&d);
        ctxd_server_free(d.server);
        ctxd_engine_free(d.engine);
        uv_loop_close(&loop);
        return 1;
    }
    ctx_log_init(logf, (enum ctx_log_level)level);
    d.started = time(NULL);
    d.started_ms = uv_now(&loop);
    ctxd_methods_daemon(&d);
    ctxd_fim_init(&d);

    signal(SIGPIPE, SIG_IGN);
    uv_signal_init(&loop, &d.sigterm);
    uv_signal_init(&loop, &d.sigint);
    d.sigterm.data = d.sigint.data = &d;
    uv_signal_start(&d.sigterm, on_signal, SIGTERM);
    uv_signal_start(&d.sigint, on_signal, SIGINT);
    sigprocmask(SIG_UNBLOCK, &term, NULL);
    uv_timer_init(&loop, &d.exit_timer);

    CTX_INFO("ctxd %s listening on %s (pid %ld)", CTX_VERSION, sock, (long)getpid());
    if (ready_fd >= 0) {
        int devnull = open("/dev/null", O_RDWR);
        if (devnull >= 0) {
            dup2(devnull, 0);
            dup2(devnull, 1);
            if (logf)
                dup2(fileno(logf), 2);
            close(devnull);
        }
        if (write(ready_fd, "ok\n", 3) != 3) {
            /* the starter went away; carry on */
        }
        close(ready_fd);
    }

    uv_run(&loop, UV_RUN_DEFAULT);
    /* Stop the engine (a running job sees its cancellation), deliver what is left, close whatever
     * remains (the exit timer, clients that never drained) and free. */
    ctxd_sched_free(d.sched);
    uv_walk(&loop, close_handle, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    ctxd_repos_release(&d);
    ctxd_agent_free(&d);
    ctxd_sessions_free(&d);
    CTX_INFO("ctxd stopped (%s)", d.shutdown_reason[0] ? d.shutdown_reason : "loop ended");
    ctxd_server_free(d.server);
    ctxd_engine_free(d.engine);
    if (logf)
        fclose(logf);
    return 0;
}
