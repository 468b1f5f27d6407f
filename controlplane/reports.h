/* controlplane/reports.h: what the data planes report, kept in memory. The
 * latest report of each data plane gives every backend's breaker state and
 * counters; marks taken every weight step turn the cumulative counters into
 * per-window deltas for dynamic weights (reports_weights_next(), a pure
 * function).
 *
 * Single-threaded: the control plane's loop. */
#ifndef LB_REPORTS_H
#define LB_REPORTS_H

#include "lb.pb-c.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct lb_err;
struct reports;

/* A data plane whose last report is older than this no longer counts. */
#define REPORTS_FRESH_MS 10000
/* A data plane silent this long is forgotten. */
#define REPORTS_FORGET_MS 300000

/* An empty table; NULL on no memory. Release with reports_free(). */
struct reports *reports_new(void);

/* NULL is a no-op. */
void reports_free(struct reports *r);

/* Records <rep> (borrowed) as data plane rep->node_id's latest report,
 * received at <now_ms>; forgets data planes silent for REPORTS_FORGET_MS.
 * A report without node id is ignored. LB_OK or LB_ENOMEM (the previous
 * report of that data plane is kept). */
int reports_add(struct reports *r, const Lb__V1__Report *rep, int64_t now_ms, struct lb_err *err);

/* The process behind data plane <node_id>'s latest report. */
struct reports_node {
    uint32_t pid;
    int64_t started_unix_ms;
    char binary_version[32]; /* "" if the data plane sent none */
    char host[64];           /* its host name, "" if it sent none */
    char listeners[256];     /* its listening addresses, comma-separated (cut short) */
};

/* Fills <out> from <node_id>'s latest report; false (zeroes) if none is
 * held (since the control plane started, or after REPORTS_FORGET_MS). */
bool reports_node_get(const struct reports *r, const char *node_id, struct reports_node *out);

/* Backend <id> over the data planes that reported within REPORTS_FRESH_MS
 * of <now_ms>. */
struct reports_backend {
    Lb__V1__BreakerState breaker; /* the worst: open > half open > closed; closed if none */
    uint32_t open;                /* data planes reporting it open */
    uint64_t requests;            /* sums of the cumulative counters */
    uint64_t errors;
    bool ejected;            /* at least one data plane has it ejected */
    uint32_t ejected_by;     /* data planes reporting it ejected */
    uint64_t ejections;      /* sum of the cumulative ejection counters */
    uint64_t connections;    /* sums of the current upstream connections ... */
    uint64_t queued;         /* ... and requests waiting in its queue */
    uint64_t queue_timeouts; /* sum of the cumulative queue timeouts */
};

void reports_backend_get(const struct reports *r, const char *id, int64_t now_ms,
                         struct reports_backend *out);

/* Called with each backend id of a data plane's latest report that says the
 * backend is ejected or whose ejection counter rose since that data plane's
 * previous report (a data plane that restarted counts from zero; the first
 * report of one never seen only by its ejected flag). <id> and <node_id> are
 * borrowed for the call, which must not call reports_add(). */
typedef void (*reports_ejected_fn)(void *ctx, const char *id, const char *node_id);

/* Calls <fn> as above for data plane <node_id>'s latest report; nothing when
 * it is not known. */
void reports_ejected_each(const struct reports *r, const char *node_id, reports_ejected_fn fn,
                          void *ctx);

/* Backend <id>'s counters since the last reports_mark(), summed over the
 * fresh data planes (a data plane that restarted counts from zero; one first
 * seen after the mark counts everything it reported). */
struct reports_window {
    uint64_t requests;
    uint64_t errors; /* 5xx, connect failures and timeouts */
    uint64_t latency_sum_us;
};

void reports_window_get(const struct reports *r, const char *id, int64_t now_ms,
                        struct reports_window *out);

/* Starts a new window: the current counters of every data plane become the
 * base of the next reports_window_get(). */
void reports_mark(struct reports *r);

/* One fresh data plane's cumulative counters for one backend. */
struct reports_sample {
    const char *node_id;     /* borrowed for the call */
    int64_t started_unix_ms; /* of that data plane */
    uint64_t boot_id;        /* of that data plane */
    int64_t received_ms;     /* when its latest report arrived */
    uint64_t requests;
    uint64_t errors; /* 5xx, connect failures and timeouts */
};

typedef void (*reports_sample_fn)(void *ctx, const struct reports_sample *s);

/* Calls <fn> for each data plane that reported within REPORTS_FRESH_MS of
 * <now_ms> and knows backend <id>. */
void reports_samples_each(const struct reports *r, const char *id, int64_t now_ms,
                          reports_sample_fn fn, void *ctx);

/* ---- dynamic weights -------------------------------------------------------- */

/* Fewer requests than this in a window: the backend keeps its weight. */
#define REPORTS_MIN_REQUESTS 20

struct reports_weight_in {
    uint32_t configured; /* the weight in the config, >= 1 */
    uint32_t current;    /* the weight published now */
    struct reports_window w;
};

/* One step of dynamic weights for <n> backends: out[i] for in[i]. A backend
 * with at least REPORTS_MIN_REQUESTS requests in its window gets a target:
 * the configured weight scaled down by its error rate (50 % errors or more:
 * the floor) and by how much its mean latency exceeds 1.5 times the pool's
 * (the mean over the backends with enough requests; needs two of them); a
 * healthy backend's target is its configured weight. The weight then moves
 * towards the target by at most a quarter of the configured weight (at least
 * 1) and never below the floor, a tenth of the configured weight (at least
 * 1). Backends with too few requests keep their current weight. Pure. */
void reports_weights_next(const struct reports_weight_in *in, size_t n, uint32_t *out);

#endif
