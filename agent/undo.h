/* Undo of the agent's file changes, one record per agent turn.
 *
 * Before the first change to a path in a turn, its content is stored as a git blob object (libgit2,
 * in the repository's own object database: content-addressed, so unchanged text costs nothing and
 * large repositories do not get copies) and the path's mode noted; a path that did not exist is
 * noted as absent. At the end of the turn a manifest (JSON: path, before blob or null, mode, after
 * blob or null) is written atomically to <git dir>/ctx-undo/<seq>.json. Undo restores every path
 * of the newest manifest: rewrites it from its blob, removes files the agent created, restores
 * files it deleted; then deletes the manifest, so repeated undo walks back turn by turn.
 *
 * Safety: undo refuses (CTX_EBUSY, naming the paths) when a file changed after the agent's turn
 * (its current content is not the recorded "after"), unless forced: the user's own later edits are
 * never thrown away silently. Blobs are unreferenced objects: `git gc --prune=now` would delete
 * them; ordinary gc keeps them for two weeks (gc.pruneExpire). */
#ifndef AGENT_UNDO_H
#define AGENT_UNDO_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>

#include "err.h"

struct agent_undo;

int agent_undo_open(const char *root, struct agent_undo **out, struct ctx_err *e);
void agent_undo_free(struct agent_undo *u);

/* Start a turn (a label for the listing, e.g. the request). A turn left open is committed by the
 * next begin or by free. */
int agent_undo_begin(struct agent_undo *u, const char *label, struct ctx_err *e);
/* Call before changing `rel` (repository-relative): saves its current state the first time in
 * this turn. Starts a turn if none is open. */
int agent_undo_record(struct agent_undo *u, const char *rel, struct ctx_err *e);
/* End the turn: writes the manifest if anything was recorded. *seq gets its number (0 if none). */
int agent_undo_commit(struct agent_undo *u, unsigned *seq, struct ctx_err *e);

/* Undo the newest recorded turn. *restored (may be NULL) gets a cJSON array of
 * {path, action: "restored"|"removed"}. CTX_ENOTFOUND when there is nothing to undo. */
int agent_undo_last(struct agent_undo *u, bool force, cJSON **restored, struct ctx_err *e);

/* The recorded turns, newest first: [{seq, label, time, paths: [...]}]. */
int agent_undo_list(struct agent_undo *u, cJSON **out, struct ctx_err *e);

#endif
