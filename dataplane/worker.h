/* dataplane/worker.h: one thread, one libev loop, its listeners, connections,
 * upstream pools and counters (the state is in worker_types.h). */
#ifndef LB_WORKER_H
#define LB_WORKER_H

#include "worker_types.h"

struct lb_err;

/* Starts worker <id> of <dp> on its own thread with <snap> (borrowed).
 * Binds its listeners first, so errors reach the caller. */
int worker_start(struct worker *w, struct dp *dp, unsigned id, struct snap *snap,
                 struct lb_err *err);

/* Any thread: asks the worker to adopt dp's newest snapshot / to drain. */
void worker_notify(struct worker *w);

/* Joins the thread and frees everything. After worker_notify with shutdown. */
void worker_join(struct worker *w);

#endif
