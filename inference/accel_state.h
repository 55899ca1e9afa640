/* Internal to inference/: the hooks through which state.c keeps a state bound to an accelerator
 * consistent (accel.h states the rules). */
#ifndef INF_ACCEL_STATE_H
#define INF_ACCEL_STATE_H

#include "accel.h"

/* For a bound state: take a device mark (*acc NULL when not bound, *mark NULL when the device could
 * not take one: the snapshot then works through the host copy), and either sync its host copy or,
 * for a dirty state whose accelerator has download_boundary, leave it lagging (*lagging = 1): the
 * caller then takes the snapshot's backbone boundary through inf_accel_boundary_hook. */
int inf_accel_snapshot_hook(struct inf_state *st, struct inf_accel **acc, void **mark, unsigned long long *gen,
                            int *lagging, struct ctx_err *e);
/* The device's position, backbone rings and carries into view (a state of st's config whose arrays
 * are the snapshot's); the position must be st's. */
int inf_accel_boundary_hook(struct inf_state *st, struct inf_state *view, struct ctx_err *e);
void inf_accel_mark_release(struct inf_accel *a, void *mark);
/* Before truncating st's host copy to a snapshot: rewind the device too when the snapshot's mark
 * is still valid (*device_done = 1; `lacks`: the host copy holds fewer entries than the snapshot
 * counts in some layer, so st stays dirty), else make the device forget st, after a sync when
 * `lacks` (the device holds the entries the host copy needs). An error (the sync's) leaves st as
 * it was, bound. */
int inf_accel_truncate_hook(struct inf_state *st, struct inf_accel *acc, const void *mark, unsigned long long gen,
                            int lacks, int *device_done, struct ctx_err *e);
/* Whether st's host arrays lag behind its device copy (reading them now would be wrong). */
int inf_accel_state_lags(const struct inf_state *st);
/* Wait for a background fill of st's host copy (inf_accel_fill_host), if one is running: before the
 * host's entries or counts are read or changed (state.c's truncate). */
void inf_accel_settle_hook(struct inf_state *st);
/* st's host copy is being replaced or freed: the device forgets it, nothing copied back. */
void inf_accel_forget_hook(struct inf_state *st);

#endif
