/* dataplane/view.h: a worker's view of one snapshot, and the per-backend
 * runtime state (struct backend_rt) it indexes, kept by backend id across
 * snapshots while the id exists or something still uses it. Worker thread
 * only. */
#ifndef LB_VIEW_H
#define LB_VIEW_H

#include <stdbool.h>

#include "worker_types.h"

struct lb_err;

/* Builds <w>'s view of <s> (a reference taken), with runtime state for every
 * active backend (made when new). One reference, the caller's. NULL and
 * <err> filled on no memory or too many frontend names. */
struct wview *view_build(struct worker *w, struct snap *s, struct lb_err *err);

/* Frees <v> at once, whatever its count (start-up failures, worker exit). */
void view_free(struct wview *v);

/* A connection (or the worker) takes / drops a reference to <v>. The last
 * drop of a retired view frees it, and the backend state no view names any
 * more goes with the last retired view. */
static inline struct wview *view_ref(struct wview *v)
{
    lb_ref_get(&v->ref);
    return v;
}
void view_unref(struct worker *w, struct wview *v);

/* Frees the runtime state of backends no view names and nothing uses
 * (<all>: every one, at worker exit). */
void view_sweep(struct worker *w, bool all);

#endif
