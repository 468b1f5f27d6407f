/* controlplane/rollout.h: the rolling backend update as a pure state
 * machine. A rollout replaces the old backends <remove> by the new ones
 * <add> in steps of <batch>: each step adds up to <batch> new backends on
 * standby (one config version: state draining, so they are health-checked
 * but take no request), waits until every one of them is healthy, makes
 * them active (one config version), lets them serve traffic for <bake>,
 * checks the gates, removes up to <batch> old backends (one config version;
 * requests in flight finish on the snapshot they started with), then waits
 * <interval>. A failed gate, an abort or an undo rolls the config back to
 * <pre_version> as a new version.
 *
 * Nothing here reads a clock, the store or the reports: rollout_next() takes
 * the time, the health of the new backends and their counters as input and
 * says which write to make; the caller makes it and, only once it is stored,
 * takes the next state (a failed write changes nothing). rollout_run.c drives
 * it on the control plane's loop. Single-threaded. */
#ifndef LB_ROLLOUT_H
#define LB_ROLLOUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct lb_err;

#define ROLLOUT_MAX_BACKENDS  64   /* per list (add, remove) */
#define ROLLOUT_ID_MAX        64   /* a backend id, with its NUL */
#define ROLLOUT_URL_MAX       256  /* a backend URL, with its NUL */
#define ROLLOUT_MIN_REQUESTS  10   /* a gate waits for this many requests ... */
#define ROLLOUT_BAKE_STRETCH  3    /* ... for at most this many bakes, then decides */
#define ROLLOUT_DEFAULT_RATE  0.05 /* --max-error-rate */
#define ROLLOUT_DEFAULT_BAKE  30000
#define ROLLOUT_DEFAULT_INTVL 10000

/* What the rollout asked for as a whole. */
enum rollout_status {
    ROLLOUT_RUNNING = 0,
    ROLLOUT_PAUSED,
    ROLLOUT_SUCCEEDED,
    ROLLOUT_FAILED,  /* a gate tripped: rolled back */
    ROLLOUT_ABORTED, /* abort asked for: rolled back */
    ROLLOUT_UNDONE,  /* undo after success: rolled back */
};

/* Where a running step is. */
enum rollout_phase {
    ROLLOUT_ADD = 0,      /* the step's new backends are to be added (on standby) */
    ROLLOUT_WAIT_HEALTHY, /* added; waiting for their health checks to pass */
    ROLLOUT_BAKE,         /* healthy and active; serving traffic for the bake */
    ROLLOUT_REMOVE,       /* gates passed; the step's old backends are to be removed */
    ROLLOUT_INTERVAL,     /* removed; waiting before the next step */
    ROLLOUT_END,          /* nothing left to do (see the status) */
};

/* Everything fixed when the rollout starts. */
struct rollout_spec {
    uint64_t id;
    size_t n_add, n_remove;
    char add_url[ROLLOUT_MAX_BACKENDS][ROLLOUT_URL_MAX];
    char add_id[ROLLOUT_MAX_BACKENDS][ROLLOUT_ID_MAX];
    char remove_id[ROLLOUT_MAX_BACKENDS][ROLLOUT_ID_MAX];
    uint32_t batch;            /* >= 1 */
    int64_t interval_ms;       /* >= 0 */
    int64_t bake_ms;           /* >= 0 */
    int64_t health_timeout_ms; /* > 0: a new backend not healthy this long fails the step */
    double max_error_rate;     /* 0..1 */
    uint64_t pre_version;      /* the config active before the rollout */
    char author[80];           /* who started it */
    char comment[256];         /* "" = none */
};

/* Which gate failed. */
enum rollout_gate {
    ROLLOUT_GATE_NONE = 0,
    ROLLOUT_GATE_HEALTH,     /* figure: seconds not healthy; limit: the bound */
    ROLLOUT_GATE_ERROR_RATE, /* figure: the new backend's rate; limit: see rollout_gate_eval() */
    ROLLOUT_GATE_CAPACITY,   /* figure: healthy backends left; limit: old count - batch */
};

/* The state that moves; a value (copy it to try a transition). */
struct rollout_state {
    enum rollout_status status;
    enum rollout_phase phase;
    uint32_t step;                /* 0-based step being run; n_steps once ended */
    int64_t phase_since_ms;       /* when the phase (or its current wait) began */
    int64_t down_since_ms;        /* BAKE: since when a new backend is not up; 0 = all up */
    int64_t started_ms;           /* when the rollout started */
    int64_t ended_ms;             /* 0 while not ended */
    uint64_t last_version;        /* the newest config version the rollout made */
    uint64_t final_version;       /* the version its rollback made, 0 = none */
    uint32_t steps_done;          /* steps whose old backends are removed */
    enum rollout_gate gate;       /* what failed, NONE while nothing did */
    double figure, limit;         /* of the failed gate */
    char backend[ROLLOUT_ID_MAX]; /* the backend that tripped it, "" = none */
    char reason[200];             /* one line for logs and lbctl: "" while nothing failed */
};

/* Figures of the last gate check, for status and metrics (not stored). */
struct rollout_figures {
    bool valid;            /* a bake window has figures */
    double new_rate;       /* worst new backend of the step */
    double old_rate;       /* the old backends together */
    double limit;          /* the rate the new ones must not exceed */
    uint64_t new_requests; /* of that worst backend */
    uint64_t old_requests;
    char backend[ROLLOUT_ID_MAX];
};

/* What the caller must do for a transition. */
enum rollout_action {
    ROLLOUT_ACT_NONE = 0, /* nothing to write */
    ROLLOUT_ACT_STATE,    /* store the next state alone */
    ROLLOUT_ACT_ADD,      /* a version adding the step's new backends on standby, with the
                           * next state */
    ROLLOUT_ACT_ACTIVATE, /* a version making them active, with the next state */
    ROLLOUT_ACT_REMOVE,   /* a version removing the step's old backends, with the next state */
    ROLLOUT_ACT_ROLLBACK, /* a version with the content of pre_version, with the next state */
};

/* A new backend's health as the checker knows it. */
enum rollout_health {
    ROLLOUT_HEALTH_UNKNOWN = 0,
    ROLLOUT_HEALTH_UP,
    ROLLOUT_HEALTH_DOWN,
};

/* Counters of a bake window (see rollout_window_delta()). */
struct rollout_counts {
    uint64_t requests;
    uint64_t errors; /* 5xx + connect failures + timeouts */
};

/* What rollout_next() sees at <now_ms>. */
struct rollout_input {
    int64_t now_ms;
    const enum rollout_health *health;   /* the step's new backends, in order */
    const struct rollout_counts *window; /* their counters since the bake began */
    struct rollout_counts old_window;    /* the old backends still in the config, summed */
    uint32_t healthy_after_remove;       /* healthy backends left once the step's old ones go */
    int64_t reported_ms; /* the oldest of the latest reports of the data planes counting the
                          * step's new backends: the window ends there; 0 = none */
};

/* Checks <s> (borrowed) and fills its derived fields: an id for every new
 * backend without one ("<host>-<port>" is the core's rule; here "" stays ""
 * and the caller fills it). LB_EINVAL naming the field: nothing to add or
 * remove, more than ROLLOUT_MAX_BACKENDS, batch 0, a negative duration, a
 * rate outside 0..1, a backend both added and removed. */
int rollout_spec_check(const struct rollout_spec *s, struct lb_err *err);

/* Steps of <s>: max(ceil(n_add / batch), ceil(n_remove / batch)). */
uint32_t rollout_steps(const struct rollout_spec *s);

/* Indices [*first, *first + *n) of add_id (when <add>) or remove_id in step <step>. */
void rollout_batch(const struct rollout_spec *s, uint32_t step, bool add, size_t *first, size_t *n);

/* A fresh state: RUNNING, step 0, phase ADD, at <now_ms>. */
void rollout_state_init(struct rollout_state *st, int64_t now_ms);

/* The next state of (<s>, <cur>) given <in>, in *<next>, and the write that
 * carries it. Pure. A PAUSED or ended rollout never moves here. */
enum rollout_action rollout_next(const struct rollout_spec *s, const struct rollout_state *cur,
                                 const struct rollout_input *in, struct rollout_state *next,
                                 struct rollout_figures *fig);

/* Operator requests. Each fills *<next> from <cur> and returns the write to
 * make, or ROLLOUT_ACT_NONE with LB_ECONFLICT in <err> when the request does
 * not fit the status (pause of a paused one, undo of a running one, ...).
 * Resuming restarts the phase's wait at <now_ms>, so that the gates are
 * checked from fresh reports. */
enum rollout_action rollout_pause(const struct rollout_state *cur, int64_t now_ms,
                                  struct rollout_state *next, struct lb_err *err);
enum rollout_action rollout_resume(const struct rollout_state *cur, int64_t now_ms,
                                   struct rollout_state *next, struct lb_err *err);
enum rollout_action rollout_abort(const struct rollout_state *cur, int64_t now_ms,
                                  struct rollout_state *next, struct lb_err *err);
enum rollout_action rollout_undo(const struct rollout_state *cur, int64_t now_ms,
                                 struct rollout_state *next, struct lb_err *err);

/* The control plane restarted at <now_ms>: a wait (health, bake, interval)
 * starts again, so that gates are checked from reports received from now on.
 * Returns whether <st> changed. */
bool rollout_resume_after_restart(struct rollout_state *st, int64_t now_ms);

/* ---- gate arithmetic ---------------------------------------------------- */

/* One data plane's cumulative counters for one backend. */
struct rollout_sample {
    char node_id[64];
    int64_t started_unix_ms; /* a change means the data plane restarted */
    uint64_t boot_id;        /* as is a change of this */
    uint64_t requests, errors;
    int64_t received_ms; /* when this data plane's latest report arrived */
};

/* The counters of a window: for each sample of <cur> (the fresh data
 * planes now), what it counted since the sample of the same data plane in
 * <base> (the window's start). A data plane that restarted since (another
 * started_unix_ms or boot_id) or that is not in <base> counts from zero;
 * a counter that went backwards counts from zero. Summed over <cur>. Pure. */
struct rollout_counts rollout_window_delta(const struct rollout_sample *base, size_t n_base,
                                           const struct rollout_sample *cur, size_t n_cur);

/* The error rate of <c>: errors / requests, 0 when requests is 0. */
double rollout_rate(struct rollout_counts c);

/* The gate's verdict for one new backend. */
enum rollout_verdict {
    ROLLOUT_WAIT = 0, /* too few requests yet */
    ROLLOUT_PASS,
    ROLLOUT_FAIL,
};

/* The error-rate gate for a new backend's window <nw> against the old
 * backends' <ow>: the limit is max(<max_rate>, old rate + <max_rate>)
 * (errors all the backends share do not fail a step; a new backend worse
 * than the old ones by more than the margin does). <waited_ms> is the time
 * since the bake began, <covered_ms> how much of it the reports cover (the
 * data planes report every second). WAIT until both reach <bake_ms> and
 * the window holds ROLLOUT_MIN_REQUESTS requests, but at most until
 * <waited_ms> reaches ROLLOUT_BAKE_STRETCH bakes: then decided on what there
 * is (no request at all passes: the health gate already did). *<limit> (may
 * be NULL) gets the limit. Pure. */
enum rollout_verdict rollout_gate_eval(struct rollout_counts nw, struct rollout_counts ow,
                                       double max_rate, int64_t covered_ms, int64_t waited_ms,
                                       int64_t bake_ms, double *limit);

/* ---- names and the stored form ------------------------------------------ */

const char *rollout_status_name(enum rollout_status s);
const char *rollout_phase_name(enum rollout_phase p);
const char *rollout_gate_name(enum rollout_gate g);
bool rollout_is_active(enum rollout_status s); /* RUNNING or PAUSED */

/* JSON text of <s> / <st> (caller frees), NULL on no memory. */
char *rollout_spec_encode(const struct rollout_spec *s);
char *rollout_state_encode(const struct rollout_state *st);

/* Parses what the encoders wrote; LB_EINVAL naming the member otherwise. */
int rollout_spec_decode(const char *text, struct rollout_spec *s, struct lb_err *err);
int rollout_state_decode(const char *text, struct rollout_state *st, struct lb_err *err);

/* ---- staged config rollout (canary) --------------------------------------- */

#define ROLLOUT_CANARY_MAX    32    /* canary data planes at most */
#define ROLLOUT_NODE_MAX      64    /* a node id, with its NUL */
#define ROLLOUT_CANARY_ACK_MS 30000 /* a canary not applying the version this long fails */

/* The canaries named by <spec> among the data planes <known> (<n_known> node
 * ids, any order): "a,b" (each must be known), or "P%" with P in 1..100 (the
 * first ceil(n_known * P / 100) of the known ids sorted, at least one).
 * Fills <out> (sorted for a percentage, as given otherwise) and *<n_out>.
 * LB_EINVAL with the reason: empty, a bad percentage, an unknown or repeated
 * node, more than ROLLOUT_CANARY_MAX, no data plane known. Pure. */
int rollout_canary_pick(const char *spec, const char *const *known, size_t n_known,
                        char (*out)[ROLLOUT_NODE_MAX], size_t *n_out, struct lb_err *err);

/* What rollout_canary_eval() sees. */
struct rollout_canary_input {
    int64_t now_ms;
    int64_t started_ms;  /* when the canary version was published */
    int64_t acked_ms;    /* when every canary had applied it; 0 = not yet */
    int64_t reported_ms; /* the oldest of the canaries' latest reports; 0 = none */
    int64_t bake_ms;
    int64_t ack_timeout_ms;
    double max_rate;
    size_t n;                           /* canaries */
    const char *const *nodes;           /* their ids */
    const bool *acked;                  /* applied the canary generation (or a newer one) */
    const char *const *rejected;        /* NULL, or why it refused the canary generation (NACK) */
    struct rollout_counts canary, rest; /* counters since <acked_ms>: canaries, the others */
};

/* The canary gate: FAIL at once on a NACK (a canary refused the snapshot)
 * or when a canary has not applied it within <ack_timeout_ms>; WAIT until
 * all applied and the error-rate gate (rollout_gate_eval(): canaries
 * against the rest of the fleet, over the bake since every canary applied)
 * decides. <why> gets one line for a FAIL; *<figure> and *<limit> (either may be NULL)
 * the gate's figures. Pure. */
enum rollout_verdict rollout_canary_eval(const struct rollout_canary_input *in, char *why,
                                         size_t why_len, double *figure, double *limit);

#endif
