/* controlplane/history.h: a bounded in-memory history of the traffic the
 * data planes report, for the dashboard's Traffic and Overview pages
 * (GET /api/v1/history).
 *
 * Time is cut into HISTORY_STEP_MS steps; the last HISTORY_SLOTS of them
 * (15 minutes) are kept in a ring per backend: requests, errors (5xx,
 * connect failures, timeouts), latency sum and a latency histogram (the
 * buckets of lb_prom_latency_bounds), summed over the data planes. Each
 * report adds the difference between a data plane's cumulative counters and
 * its previous report (a data plane's first report, or the first after it
 * restarted or after HISTORY_FORGET_MS of silence, sets the base only). Per data plane, the
 * difference of its two latest reports is kept too (the "now" of the Overview per data plane).
 *
 * Memory: HISTORY_SERIES_BYTES per backend with traffic history (at most
 * HISTORY_MAX_BACKENDS; more are not recorded), plus per data plane and
 * backend one struct history_last (about 320 bytes). 14.2 KiB per backend
 * (180 slots of 80 bytes), 7.1 MiB at most.
 *
 * Single-threaded: the control plane's loop. */
#ifndef LB_HISTORY_H
#define LB_HISTORY_H

#include "lb.pb-c.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct lb_err;
struct history;

#define HISTORY_STEP_MS      5000
#define HISTORY_SLOTS        180 /* 15 minutes */
#define HISTORY_NBUCKETS     15  /* lb_prom_latency_bounds' 14, then +Inf */
#define HISTORY_MAX_BACKENDS 512
#define HISTORY_MAX_NODES    64
#define HISTORY_NOW_STEPS    6 /* the aggregated "now": the last 30 s */
/* A data plane's in-flight count adds to the "now" while its last report is
 * this recent. */
#define HISTORY_FRESH_MS 10000
/* A data plane silent this long is forgotten (its base included). */
#define HISTORY_FORGET_MS 300000

/* One step of one backend. */
struct history_slot {
    uint32_t requests, errors;
    uint64_t latency_us;
    uint32_t hist[HISTORY_NBUCKETS];
};

#define HISTORY_SERIES_BYTES (HISTORY_SLOTS * sizeof(struct history_slot) + 128)

/* An empty history; NULL on no memory. Release with history_free(). */
struct history *history_new(void);

/* NULL is a no-op. */
void history_free(struct history *h);

/* Adds data plane rep->node_id's report <rep> (borrowed), received at
 * <now_ms>. A report without node id, or from a data plane beyond
 * HISTORY_MAX_NODES, is ignored. LB_OK, or LB_ENOMEM (the report is not
 * recorded; the history stays consistent). */
int history_add(struct history *h, const Lb__V1__Report *rep, int64_t now_ms, struct lb_err *err);

/* The history as of <now_ms> as JSON (caller owns it; NULL on no memory):
 * {"step_ms", "slots", "now_ms", "start_ms" (the oldest slot's start),
 *  "backends": [{"id", "now": {"rps", "err_rate", "p50_ms", "p99_ms", "in_flight"},
 *                "rps": [...], "err_rate": [...], "p50_ms": [...], "p99_ms": [...]}],
 *  "dataplanes": [{"node_id", "last_ms", "pid", "started_ms", "binary_version",
 *                  "backends": [{"id", "rps", "err_rate",
 *                  "p50_ms", "p99_ms", "breaker", "effective_weight",
 *                  "connections", "queued", "in_flight", "ejected"}]}]}
 * Arrays run oldest first, one element per step; null where no report
 * arrived in that step; quantiles null without requests. Without <series>
 * the arrays are left out (the Overview's poll). Backends sorted by id. */
json_t *history_json(const struct history *h, int64_t now_ms, bool series);

/* The <q> quantile (0..1) in ms of histogram <hist> over
 * lb_prom_latency_bounds, interpolated inside the bucket; -1 when empty.
 * Pure. */
double history_quantile_ms(const uint64_t *hist, double q);

#endif
