/* dataplane/probe.h: without a control plane, worker 0 probes each ejected
 * backend by TCP when its back-off is over (eject_probe_claim); a connect
 * that succeeds brings it back for every worker. Worker thread only. */
#ifndef LB_PROBE_H
#define LB_PROBE_H

#include "worker_types.h"

/* Each tick: starts the probes that are due (worker 0 only; a no-op
 * elsewhere, while draining, or with nothing ejected). */
void probes_run(struct worker *w);

/* Worker exit: stops and frees the probes in flight. */
void probes_free(struct worker *w);

#endif
