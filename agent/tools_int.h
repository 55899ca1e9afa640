/* Internals shared by the tool implementations (tools.c, tools_exec.c). Not for other modules. */
#ifndef AGENT_TOOLS_INT_H
#define AGENT_TOOLS_INT_H

#include <git2.h>

#include "buf.h"
#include "tools.h"

struct ov_entry {
    char *path;     /* repository-relative */
    char *data;     /* NULL: deleted in the overlay */
    size_t len;
};

struct agent_tools {
    struct agent_tools_config c;
    char *root;     /* realpath, no trailing '/' */
    cJSON *schemas;
    git_repository *repo;
    struct repo_snapshot *own_snap;
    struct repo_ignore *ctxignore; /* the repository's .ctxignore, or NULL */
    struct ov_entry *ov;
    size_t nov;
    struct ov_entry *bufs; /* the user's unsaved editor buffers (agent_tools_set_buffer) */
    size_t nbufs;
    char **changed;
    size_t nchanged;
};


/* Finish a result: cap at max_output with a note, move into *out. Returns CTX_ENOMEM on oom. */
int tools_finish(struct agent_tools *t, struct ctx_buf *b, bool is_error, bool changed,
                 struct agent_tool_result *out, struct ctx_err *e);
/* An is_error result with a formatted message. */
int tools_fail(struct agent_tools *t, struct agent_tool_result *out, struct ctx_err *e,
               const char *fmt, ...) __attribute__((format(printf, 4, 5)));

char *tools_abs(const struct agent_tools *t, const char *rel);

int tool_run_command(struct agent_tools *t, const cJSON *a, struct agent_tool_result *out, struct ctx_err *e);
int tool_run_tests(struct agent_tools *t, const cJSON *a, struct agent_tool_result *out, struct ctx_err *e);
int tool_git_status(struct agent_tools *t, const cJSON *a, struct agent_tool_result *out, struct ctx_err *e);
int tool_git_diff(struct agent_tools *t, const cJSON *a, struct agent_tool_result *out, struct ctx_err *e);
int tool_find_symbol(struct agent_tools *t, const cJSON *a, struct agent_tool_result *out, struct ctx_err *e);
int tool_find_references(struct agent_tools *t, const cJSON *a, struct agent_tool_result *out, struct ctx_err *e);

/* Argument getters: return false after filling an is_error result naming the argument. */
bool arg_str(struct agent_tools *t, const cJSON *a, const char *name, bool required, const char **v,
             struct agent_tool_result *out, int *rc, struct ctx_err *e);
bool arg_int(struct agent_tools *t, const cJSON *a, const char *name, long long def, long long lo,
             long long hi, long long *v, struct agent_tool_result *out, int *rc, struct ctx_err *e);
bool arg_bool(struct agent_tools *t, const cJSON *a, const char *name, bool def, bool *v,
              struct agent_tool_result *out, int *rc, struct ctx_err *e);

#endif
