/* The agent's tools (issue 8): a registry with frozen schemas and their implementations, all
 * confined to one repository's working tree.
 *
 * Every tool call returns text for the model. A tool that fails in a way the model can fix (bad
 * path, no match, denied command) is not an error of the call: the result is marked is_error and
 * its text says what was wrong and what to do. agent_tools_call itself fails only when the
 * process cannot go on (out of memory). */
#ifndef AGENT_TOOLS_H
#define AGENT_TOOLS_H

#include <cjson/cJSON.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "err.h"

struct repo_snapshot;
struct agent_policy;
struct agent_undo;

enum agent_mode {
    AGENT_MODE_INTERACTIVE = 0, /* edits are applied to the working tree (and recorded for undo) */
    AGENT_MODE_REVIEW,          /* read-only tools only */
    AGENT_MODE_SUGGEST,         /* edits go to an in-memory overlay; agent_tools_overlay_diff */
};

const char *agent_mode_name(enum agent_mode m);

/* An 'ask' decision of the command policy: return true to allow `command`. Called on the thread
 * that runs the tool; the daemon forwards it to the client and waits. */
typedef bool (*agent_ask_fn)(void *ud, const char *command);

struct agent_tools_config {
    const char *root;            /* the repository's working directory */
    enum agent_mode mode;
    size_t max_output;           /* bytes of one tool result; 0: 32 KiB */
    size_t max_read_lines;       /* read_file lines per call; 0: 2000 */
    size_t max_search_results;   /* search matches per call; 0: 200 */
    int command_timeout_ms;      /* run_command / run_tests; 0: 120 s */
    struct repo_snapshot *snapshot;    /* borrowed; NULL: opened on the first symbol query */
    const struct agent_policy *policy; /* borrowed; NULL: agent_policy_default() */
    agent_ask_fn ask;            /* NULL: 'ask' decisions are refused */
    void *ask_ud;
    struct agent_undo *undo;     /* borrowed; NULL: changes are not recorded */
    const atomic_int *cancel;    /* borrowed; non-zero kills a running command; may be NULL */
};

struct agent_tools;

int agent_tools_new(const struct agent_tools_config *c, struct agent_tools **out, struct ctx_err *e);
void agent_tools_free(struct agent_tools *t);

/* The tool schemas, OpenAI function shape ([{type: "function", function: {name, description,
 * parameters}}]), the same in every mode and for every repository: they are part of the cached
 * prompt prefix, so they are a constant text (agent_tools_schema_text) parsed once. Modes refuse
 * tools at call time instead of hiding them, which would change the prefix. Owned by t. */
const cJSON *agent_tools_schemas(const struct agent_tools *t);
const char *agent_tools_schema_text(void);

/* Whether a tool only reads (allowed in review mode). */
bool agent_tool_is_read_only(const char *name);

struct agent_tool_result {
    char *text;     /* malloc'd, NUL-terminated; never NULL after success */
    size_t len;
    bool is_error;  /* the model should act on the message */
    bool changed;   /* the tool changed files (or the overlay) */
};

/* Run tool `name` with `args_json` (the call's arguments, a JSON object as the DSML parser
 * produces). Unknown tools, bad arguments and failed operations are is_error results. */
int agent_tools_call(struct agent_tools *t, const char *name, const char *args_json,
                     struct agent_tool_result *out, struct ctx_err *e);
void agent_tool_result_free(struct agent_tool_result *r);

/* The user's unsaved editor buffer of `rel` (repository-relative; ctxd's buffer.update). Every read
 * (read_file, search, edit_file's and apply_patch's old text) sees `text` instead of the working
 * tree's file, in every mode; suggest mode edits start from it and its diff is against it. In
 * interactive mode an edit of that path is refused, telling the model the user has unsaved changes
 * there: writing the file would make the disk and the editor diverge. Setting it again replaces it. */
int agent_tools_set_buffer(struct agent_tools *t, const char *rel, const char *text, size_t len,
                           struct ctx_err *e);

/* Suggest mode: the overlay as a unified diff against the working tree ("" when nothing changed),
 * paths as a/<path> b/<path>, new files from /dev/null, deleted ones to /dev/null. */
int agent_tools_overlay_diff(struct agent_tools *t, char **out, size_t *len, struct ctx_err *e);

/* Paths the tools changed since the last call (repository-relative, sorted); the caller refreshes
 * its snapshot/layout with them (repo_snapshot_refresh). *paths is a malloc'd array of malloc'd
 * strings; free with agent_tools_paths_free. */
int agent_tools_take_changed(struct agent_tools *t, char ***paths, size_t *n);
void agent_tools_paths_free(char **paths, size_t n);

/* ---- helpers the tools share, public because tests and the daemon use them ---------------- */

/* Resolve a model-given path inside root: rejects absolute paths, "..", NUL bytes, symlinks that
 * leave the root (checked with realpath on the longest existing prefix) and, when for_write, any
 * path under .git/ or .ctx/ (the repository's own agent configuration). *rel gets the normalized
 * repository-relative path ("" for the root itself; malloc'd). On failure the message is written
 * for the model. */
int agent_path_resolve(const char *root, const char *path, bool for_write, char **rel,
                       struct ctx_err *e);

/* Write a file atomically: a temporary file in the same directory, fsync, rename, fsync of the
 * directory. Missing parent directories are created. `mode` 0: 0644 (or the old file's mode). */
int agent_write_atomic(const char *abs_path, const char *data, size_t len, unsigned mode,
                       struct ctx_err *e);

#endif
