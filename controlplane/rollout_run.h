/* controlplane/rollout_run.h: runs rollouts (rollout.h) on the control
 * plane's loop, as the core's guard (cp_guard.h). At most one rollout is
 * active (running or paused) at a time; it owns the backends: every other
 * config write is refused with LB_ECONFLICT naming it until it ends (abort
 * rolls it back).
 *
 * Every transition is one store transaction together with the config
 * version it makes (store_rollout_attach()); a failed write changes nothing
 * and is tried again on the next tick. On start the newest rollout is
 * loaded; an active one resumes in its phase, its wait (health, bake,
 * interval) starting again so that the gates see fresh reports only. A
 * stored row that does not decode is logged ("rollout_unreadable") and left
 * alone.
 *
 * Single-threaded: the cp's loop. */
#ifndef LB_ROLLOUT_RUN_H
#define LB_ROLLOUT_RUN_H

#include "rollout.h"

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cp;
struct lb_err;
struct lb_prom;
struct rollouts;

#define ROLLOUTS_TICK_S 0.1 /* how often an active rollout looks at health and reports */

/* The control plane's cp_config.attach (cp_guard.h): creates the engine of
 * <cp>, resumes the newest rollout if it is active and registers the
 * engine as <cp>'s guard, which cp_free() frees. LB_ESTORE, LB_ENOMEM,
 * LB_ECONFLICT (<cp> has a guard already) with <err> filled. */
int rollouts_attach(struct cp *cp, struct ev_loop *loop, struct lb_err *err);

/* The engine attached to <cp> (borrowed), NULL when none. The functions
 * below take NULL as an engine with no rollout: the reads find none, the
 * writes are refused with LB_ENOTFOUND. */
struct rollouts *rollouts_of(const struct cp *cp);

/* What POST /api/v1/rollouts asks for. */
struct rollout_request {
    const char *const *add_urls; /* <n_add> URLs */
    const char *const *add_ids;  /* NULL or <n_add> ids (NULL or "" = "<host>-<port>") */
    size_t n_add;
    const char *const *remove; /* <n_remove> backend ids; none = every active backend of the
                                * config that is not being added */
    size_t n_remove;
    uint32_t batch;            /* 0 = 1 */
    int64_t interval_ms;       /* < 0 = ROLLOUT_DEFAULT_INTVL */
    int64_t bake_ms;           /* < 0 = ROLLOUT_DEFAULT_BAKE */
    int64_t health_timeout_ms; /* <= 0 = max(30 s, 10 x healthcheck.interval) */
    double max_error_rate;     /* < 0 = ROLLOUT_DEFAULT_RATE */
    const char *author;        /* required */
    const char *comment;       /* NULL = "" */
};

/* Starts a rollout: checks it against the active config (the backends to
 * remove exist, the new URLs and ids are not in use), stores it (status
 * running, phase add) and runs its first step on the next tick.
 * LB_EINVAL with the reason, LB_ECONFLICT when a rollout is active already,
 * LB_ESTORE. Fills *<id>. */
int rollouts_start(struct rollouts *ro, const struct rollout_request *rq, uint64_t *id,
                   struct lb_err *err);

enum rollouts_op {
    ROLLOUTS_PAUSE,
    ROLLOUTS_RESUME,
    ROLLOUTS_ABORT, /* rolls back to the pre-rollout version */
    ROLLOUTS_UNDO,  /* after success: rolls back to the pre-rollout version */
};

/* <op> on rollout <id> on behalf of <who>: LB_OK, LB_ENOTFOUND (no such
 * rollout), LB_ECONFLICT (the op does not fit its status, or another
 * rollout is active for an undo), LB_ESTORE (nothing changed). */
int rollouts_control(struct rollouts *ro, uint64_t id, enum rollouts_op op, const char *who,
                     struct lb_err *err);

/* One look at rollout health and reports at <now_ms> (the loop's timer
 * does it every ROLLOUTS_TICK_S; tests call it directly). */
void rollouts_tick(struct rollouts *ro, int64_t now_ms);

/* A rollout as the API shows it. */
struct rollout_view {
    struct rollout_spec spec;
    struct rollout_state state;
    struct rollout_figures fig; /* the last gate check (the active rollout only) */
    uint32_t n_steps;
    int64_t next_in_ms;      /* until the phase's wait ends; -1 when none */
    uint64_t last_version;   /* newest version it made, 0 = none */
    int64_t updated_unix_ms; /* its last stored transition */
};

/* Rollout <id> into *<v> (the caller's memory: it is large). LB_ENOTFOUND,
 * LB_ESTORE, LB_EINVAL (a stored row that does not decode). */
int rollouts_get(struct rollouts *ro, uint64_t id, int64_t now_ms, struct rollout_view *v,
                 struct lb_err *err);

/* The ids of at most <max> rollouts, newest first, in <ids>; *<n> gets the
 * count. */
int rollouts_ids(struct rollouts *ro, uint64_t *ids, size_t max, size_t *n, struct lb_err *err);

/* The id of the newest rollout in memory (the active one if any), 0 = none. */
uint64_t rollouts_current(const struct rollouts *ro);

/* Appends lb_cp_rollout_* to <p>. */
void rollouts_metrics(const struct rollouts *ro, struct lb_prom *p);

/* ---- staged config rollout (canary; rollout_canary.h) ---------------------- */

/* What POST /api/v1/config/canary asks for. */
struct canary_request {
    const char *text; /* the config, <len> bytes, YAML or JSON (<json>) */
    size_t len;
    bool json;
    const char *nodes;     /* "a,b" or "P%" (rollout_canary_pick()) */
    int64_t bake_ms;       /* < 0 = ROLLOUT_DEFAULT_BAKE */
    double max_error_rate; /* < 0 = ROLLOUT_DEFAULT_RATE */
    const char *author;    /* required */
    const char *comment;   /* NULL = "" */
};

/* Stores the config as a new version served to the canaries only (the
 * others keep the snapshot they have) and starts the bake. *<version> gets
 * the new version. LB_EINVAL (the config or the request), LB_ECONFLICT (a
 * rollout or canary is active, or the config is the active one), LB_ESTORE. */
int rollouts_canary_start(struct rollouts *ro, const struct canary_request *rq, uint64_t *version,
                          struct lb_err *err);

/* Ends the canary now by rolling back, on behalf of <who>. LB_ENOTFOUND when
 * none is baking. */
int rollouts_canary_abort(struct rollouts *ro, const char *who, struct lb_err *err);

/* The staged rollout as the API shows it. */
struct canary_view {
    bool any;    /* a canary ever ran since the control plane started */
    bool active; /* baking now */
    uint64_t id; /* the canary's version */
    uint64_t pre_version;
    uint64_t final_version; /* promotion or rollback version, 0 = none yet */
    const char *status;     /* "waiting_ack", "baking", "promoted", "failed", "aborted" */
    const char *reason;     /* "" unless failed */
    size_t n_nodes;
    const char *const *nodes;
    int64_t bake_ms, started_ms, acked_ms, ended_ms;
    double max_error_rate, figure, limit;
    uint64_t canary_requests, canary_errors, rest_requests, rest_errors;
};

void rollouts_canary_get(const struct rollouts *ro, struct canary_view *v);

/* Why data plane <node> serves what it serves, in <buf>: "canary of version
 * 7", "stable". */
const char *rollouts_canary_role(const struct rollouts *ro, const char *node, char *buf,
                                 size_t size);

#endif
