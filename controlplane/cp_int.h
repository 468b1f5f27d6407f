/* controlplane/cp_int.h: the core's state and the steps its parts share:
 * cp.c (start, stop, reads, the one path of every mutation), cp_snap.c (the
 * snapshot served), cp_tls.c (its TLS files), cp_health.c (the checker's
 * verdicts) and cp_runtime.c (data plane reports, dynamic weights). Not for
 * other modules: they use cp.h.
 *
 * The parts depend one way: cp.c -> cp_runtime.c, cp_health.c, cp_tls.c ->
 * cp_snap.c. Single-threaded, as cp.h. */
#ifndef LB_CP_INT_H
#define LB_CP_INT_H

#include "cp.h"

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct certwatch;
struct cp_guard_ops;
struct reports;
struct health_result;

struct cp {
    struct ev_loop *loop;  /* the control plane's loop */
    struct store *store;   /* owned */
    struct publisher *pub; /* owned */
    char *config_dir;      /* base of relative TLS paths for applies and stored versions */
    uint64_t version;      /* active version, 0 = none */
    uint64_t generation;   /* generation of <snap>, 0 = none */
    struct config *cfg;    /* parsed active version, NULL = none */
    char hash[65];         /* config_hash(cfg), "" = none */
    uint8_t *snap;         /* encoded snapshot being served, NULL = none */
    size_t snap_len;
    struct health *health; /* owned: active checks of cfg's backends */
    ev_timer health_pub;   /* armed by a health change: one new generation per loop turn */
    struct cp_health_change *pending; /* changes not yet stored, <n_pending> of <cap_pending> */
    size_t n_pending, cap_pending;
    struct certwatch *certwatch; /* owned: the files of cfg's ssl section */
    struct tlscheck_bundle *tls; /* validated files being served, NULL = none */
    char *tls_base;              /* base directory of cfg's relative ssl paths */
    struct cp_tls_status tls_st; /* counters and last outcomes for the API */
    struct reports *reports;     /* owned: the data planes' latest reports */
    struct history *history;     /* owned: 15 minutes of their traffic, for the dashboard */
    ev_timer weights_timer;      /* every CP_WEIGHTS_STEP_S: one dynamic weights step */
    struct cp_dyn *dyn;          /* dynamic weights differing from the configured ones, */
    size_t n_dyn;                /* sorted by id; empty unless balancing.weights: dynamic */
    /* what holds the config for a while (cp_guard.h; the rollouts): */
    const struct cp_guard_ops *guard; /* NULL = none */
    void *guard_ctx;                  /* owned (guard->free) */
};

/* A backend's dynamic weight, valid while its configured weight is <configured>. */
struct cp_dyn {
    char *id;
    uint32_t configured;
    uint32_t weight;
};

#define CP_WEIGHTS_STEP_S 10.0

/* A verdict change waiting for the store (strings owned). */
struct cp_health_change {
    char *id;
    enum store_health health;
    char *error;
    int64_t now_ms;
    char *detail;
};

/* ---- cp_snap.c: the snapshot served ---------------------------------------- */

/* Wall-clock time in ms since the epoch. */
int64_t cp__now_ms(void);

/* Orders struct cp_dyn by id (bsearch, qsort). */
int cp__dyn_cmp(const void *a, const void *b);

/* The weight to publish for <b> under <cfg>: its dynamic weight while
 * balancing.weights is dynamic and its configured weight has not changed
 * since, else the configured weight. */
uint32_t cp__weight_of(const struct cp *cp, const struct config *cfg,
                       const struct config_backend *b);

/* Snapshot of <cfg> with the checker's current health (a backend it does not
 * know yet is UNKNOWN) and the dynamic weights; version and generation are
 * set once the store has handed them out. Caller frees with snapbuild_free(). */
int cp__build_snapshot(struct cp *cp, const struct config *cfg, const char *base_dir,
                       Lb__V1__Snapshot **out, struct lb_err *err);

/* Reserves a buffer large enough for <snap> with any version and generation,
 * so that nothing can fail between the store write and the publish. */
int cp__reserve_encoding(Lb__V1__Snapshot *snap, uint8_t **buf, struct lb_err *err);

/* Makes <buf> (generation <generation>) the snapshot served and publishes
 * it. Takes <buf>; NULL leaves no snapshot. */
void cp__serve(struct cp *cp, uint64_t generation, uint8_t *buf, size_t len);

/* The served snapshot decoded into *<out> (caller patches it, then hands it
 * to cp__repack()); LB_ENOMEM when it cannot be decoded. */
int cp__served_decode(const struct cp *cp, Lb__V1__Snapshot **out, struct lb_err *err);

/* Encodes <snap> (taken: a cp__served_decode() result, patched) as a new
 * generation of the active version, dated now: *<buf> (caller owns, for
 * cp__serve()), *<len>, *<gen>. On failure nothing is left to free. */
int cp__repack(struct cp *cp, Lb__V1__Snapshot *snap, uint8_t **buf, size_t *len, uint64_t *gen,
               struct lb_err *err);

/* The data planes a snapshot built now is for alone (the guard's
 * only_nodes): *<n> = 0 and NULL = every one. */
const char *const *cp__only_nodes(const struct cp *cp, size_t *n);

/* Makes <snap> (taken: a decoded snapshot of version <version>) the
 * publisher's held snapshot, for every data plane but <nodes>, as a new
 * generation (cp_canary_hold()). */
int cp__hold(struct cp *cp, Lb__V1__Snapshot *snap, uint64_t version, const char *const *nodes,
             size_t n, struct lb_err *err);

/* Serves the served snapshot again with every backend's current health and
 * weight as a new generation of the same config version (runtime state).
 * Patching the encoded snapshot avoids resolving names and reading TLS files
 * again. A failure is logged. */
void cp__publish_runtime(struct cp *cp);

/* ---- cp_tls.c: the TLS files of the active config ------------------------------ */

/* True when <cfg> has TLS files to read: a TLS frontend's ssl section or
 * the caFile of an https:// backend. */
bool cp__has_tls_files(const struct config *cfg);

/* Makes <snap> (built from <cfg> by reading the files) carry validated bytes:
 * the files as they are when they pass the checks, else the bytes served so
 * far for the same files. *<out> receives the bundle to serve (caller owns;
 * NULL without TLS files). Fails only when nothing valid exists. */
int cp__tls_adopt(struct cp *cp, const struct config *cfg, const char *base_dir,
                  Lb__V1__Snapshot *snap, struct tlscheck_bundle **out, struct lb_err *err);

/* After cp->cfg became active: serve <b> (taken) and watch its files. */
void cp__tls_install(struct cp *cp, struct tlscheck_bundle *b, const char *base_dir);

/* Records a successful reload, published as generation <gen>, for the API:
 * <what> says what changed. */
void cp__tls_reloaded(struct cp *cp, uint64_t gen, const char *what);

/* cp_tls_reload_by() while a snapshot is served: re-reads the files and,
 * when they changed and are valid, publishes them as a new generation,
 * audited "tls.reload" by <who>. */
int cp__tls_reload_served(struct cp *cp, const char *who, bool *reloaded, struct lb_err *err);

/* ---- cp_health.c: the checker's verdicts ---------------------------------------- */

/* Points the checker at the backends of the active config, at the addresses
 * <snap> resolved (backends in the config's order), so that no check ever
 * calls the resolver. A failure keeps the previous targets and is logged. */
void cp__health_resync(struct cp *cp, const Lb__V1__Snapshot *snap);

/* Stores the pending changes with their audit rows in one transaction. */
void cp__health_flush(struct cp *cp);

/* health_result_fn of the checker (<ctx> = the cp): a change is persisted,
 * audited, logged and published (cp->health_pub) before the loop next blocks. */
void cp__on_health(void *ctx, const struct health_result *r);

/* cp->health_pub's callback. */
void cp__on_health_pub(struct ev_loop *loop, ev_timer *w, int revents);

/* ---- cp_runtime.c: data plane reports and dynamic weights ------------------------ */

/* Forgets every dynamic weight. */
void cp__dyn_clear(struct cp *cp);

/* cp->weights_timer's callback: one cp_weights_step(). */
void cp__on_weights_timer(struct ev_loop *loop, ev_timer *w, int revents);

#endif
