/* The daemon's shared state, passed to method handlers as their user data. */
#ifndef CTXD_CTXD_H
#define CTXD_CTXD_H

#include <time.h>
#include <uv.h>

#include "server.h"

struct ctxd_sched;
struct ctxd_engine;
struct ctxd_repos;

struct ctxd {
    uv_loop_t *loop;
    struct ctxd_server *server;
    struct ctxd_sched *sched;
    struct ctxd_engine *engine;
    struct ctxd_repos *repos;
    void *sessions;        /* struct ctxd_sessions, daemon/sessions.c */
    void *agent;           /* struct ctxd_agent, daemon/agent.c */
    uv_signal_t sigterm, sigint;
    uv_timer_t exit_timer;
    time_t started;        /* wall clock, for status */
    uint64_t started_ms;   /* loop clock */
    int shutting_down;
    char shutdown_reason[128];
};

/* Registers daemon.ping, daemon.status and daemon.shutdown. */
int ctxd_methods_daemon(struct ctxd *d);
/* Begin an orderly exit: finish writing replies, close clients, stop the loop. */
void ctxd_begin_shutdown(struct ctxd *d, const char *reason);

#endif
