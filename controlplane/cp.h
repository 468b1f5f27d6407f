/* controlplane/cp.h: the control plane's core. Owns the store, the active
 * config version and its parsed config, the snapshot generation, the encoded
 * snapshot being served and the publisher; records data plane reports.
 *
 * Every mutation runs: check If-Match -> build the new config (validated) ->
 * build the snapshot (reads TLS files, resolves backend names) -> store the
 * canonical YAML as a new version and bump the generation (one transaction)
 * -> encode -> hand it to the publisher. When a step fails nothing changes:
 * the active version, the snapshot served and the store stay as they were,
 * and <err> says why (LB_EINVAL invalid config or unresolvable host,
 * LB_ECONFLICT If-Match mismatch or duplicate backend, LB_ENOTFOUND unknown
 * backend or version, LB_ESTORE, LB_ESYS unreadable TLS file, LB_ENOMEM).
 *
 * Single-threaded: every function runs on the loop given to cp_new(). */
#ifndef LB_CP_H
#define LB_CP_H

#include "config.h"
#include "lb.pb-c.h"
#include "store.h"

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct lb_err;
struct publisher;
struct health;
struct history;
struct cp;
struct tlscheck_bundle;
struct seal_keyring;

struct cp_config {
    const char *db_path;      /* SQLite file; required */
    const char *bootstrap;    /* YAML imported as version 1 into an empty store; NULL = none */
    const char *config_dir;   /* relative TLS paths of API applies and stored versions;
                               * NULL = the bootstrap file's directory, else the cwd */
    const char *control_base; /* publisher base ("ipc:///run/lb", "tcp://..."); required */
    double republish_s;       /* publisher's periodic republish; 0 = its default */
    const struct seal_keyring *feed_keys; /* seals the feed (borrowed, see publisher.h);
                                           * NULL = unsealed */
    bool feed_insecure;                   /* unsealed tcp:// by choice (metrics only) */
    const char *feed_nodes;               /* "a,b": node ids allowed on the feed; NULL = any */
    /* Called once by cp_new() when the store is open, before the active
     * config is first served: registers a guard (cp_guard.h), e.g.
     * rollout_run.h's rollouts_attach(). A failure fails cp_new(). NULL =
     * no guard. */
    int (*attach)(struct cp *cp, struct ev_loop *loop, struct lb_err *err);
};

/* Who writes and under which condition. The new version of a write is
 * audited by <author> as "config.put" (cp_apply()), "backend.add",
 * "backend.update", "backend.remove", "backend.drain" or "rollback", with
 * the changes from the active config and the comment as detail. */
/* A backend write staged like `config apply --canary`: the edited config
 * goes to the canaries first (the guard's stage(), cp_guard.h). */
struct cp_canary {
    const char *nodes;     /* "a,b" or "P%" */
    int64_t bake_ms;       /* < 0: the default */
    double max_error_rate; /* < 0: the default */
};

struct cp_write {
    const char *author;             /* "uid:0", "token:ops", "bootstrap"; required */
    const char *comment;            /* NULL = "" */
    uint64_t expected_version;      /* If-Match; 0 = any */
    const struct cp_canary *canary; /* backend writes: staged; NULL = to every data plane */
};

/* Fields of a backend add or update; unset fields keep their value (update)
 * or take the default (add: weight 1, state active, id from the URL, no
 * caFile, no sni). */
struct cp_backend_change {
    const char *id;  /* add only; NULL = derived "<host>-<port>" */
    const char *url; /* add: required; update: NULL = keep */
    bool has_weight;
    uint32_t weight;
    bool has_state;
    enum config_backend_state state;
    const char *ca_file; /* https only: CA bundle verifying the backend, relative to the
                          * config directory; NULL = keep (update) or "" (add); "" = the
                          * system store */
    const char *sni;     /* https only: server name sent and verified; NULL = keep
                          * (update) or "" (add); "" = the URL's host when it is a name */
    bool has_max_connections;
    uint32_t max_connections; /* 0..1000000, 0 = unlimited (add default) */
    bool has_max_queue;
    uint32_t max_queue; /* 1..100000 (add default 1024) */
    bool has_send_proxy;
    enum config_send_proxy send_proxy; /* PROXY header on new connections (add default off) */
};

/* Opens the store at cfg->db_path, creates the publisher on <loop> and
 * publishes the active version (generation = stored + 1). With an empty store
 * and cfg->bootstrap, imports that file as version 1 (author "bootstrap",
 * TLS paths relative to its directory) first; with neither, starts without a
 * snapshot and logs a warning. Returns NULL and fills <err> on failure
 * (store cannot open, bootstrap invalid, publisher cannot bind). Caller owns
 * the result; release with cp_free(). */
struct cp *cp_new(struct ev_loop *loop, const struct cp_config *cfg, struct lb_err *err);

/* Stops the publisher, closes the store, frees everything. NULL is a no-op. */
void cp_free(struct cp *cp);

/* The active version (0 = none), the generation last published (0 = none),
 * the active config (NULL = none; borrowed, valid until the next mutation),
 * its content hash ("" when none). */
uint64_t cp_active_version(const struct cp *cp);
uint64_t cp_generation(const struct cp *cp);
const struct config *cp_config(const struct cp *cp);
const char *cp_config_hash(const struct cp *cp);

/* The encoded snapshot being served: LB_OK with borrowed <buf>/<len> (valid
 * until the next mutation), LB_ENOTFOUND when there is none. */
int cp_snapshot(const struct cp *cp, const uint8_t **buf, size_t *len);

/* The publisher (borrowed) for its counters. */
struct publisher *cp_publisher(const struct cp *cp);

/* Index of backend <id> in cp_config(), or -1. */
int cp_backend_find(const struct cp *cp, const char *id);

/* Number of config versions ever stored, in *<n>. */
int cp_versions_total(struct cp *cp, uint64_t *n, struct lb_err *err);

enum cp_format {
    CP_FORMAT_YAML = 0,
    CP_FORMAT_JSON,
};

/* Applies a whole config (<text>, <len> bytes). YAML messages name
 * "config.yaml:line:col". When the result equals the active config nothing is
 * created: *<unchanged> = true and *<version> = the active version. Otherwise
 * *<version> is the new version. When <diff> is not NULL it receives the
 * changes from the active config (caller frees with config_diff_free()). */
int cp_apply(struct cp *cp, const char *text, size_t len, enum cp_format fmt,
             const struct cp_write *w, uint64_t *version, bool *unchanged,
             struct config_diff **diff, struct lb_err *err);

/* Adds a backend at the end of the list. LB_ECONFLICT when its id or URL is
 * already used; LB_EINVAL naming the field when the config rules refuse it
 * (caFile or sni on an http:// backend, sni not a server name, caFile not
 * readable). Fills *<version> and the new backend's index in cp_config()
 * in *<index> (may be NULL). */
int cp_backend_add(struct cp *cp, const struct cp_backend_change *chg, const struct cp_write *w,
                   uint64_t *version, int *index, struct lb_err *err);

/* Changes weight, state, url, caFile, sni, maxConnections and/or maxQueue of
 * backend <id>. LB_ENOTFOUND
 * if unknown; LB_EINVAL as cp_backend_add() checks the result (a URL turned
 * http:// while caFile or sni stays set is refused: clear them with ""). */
int cp_backend_update(struct cp *cp, const char *id, const struct cp_backend_change *chg,
                      const struct cp_write *w, uint64_t *version, struct lb_err *err);

/* Removes backend <id> (the last one cannot go: LB_EINVAL). */
int cp_backend_remove(struct cp *cp, const char *id, const struct cp_write *w, uint64_t *version,
                      struct lb_err *err);

/* Sets backend <id>'s state to draining. */
int cp_backend_drain(struct cp *cp, const char *id, const struct cp_write *w, uint64_t *version,
                     struct lb_err *err);

/* Makes version <target>'s content active again as a new version.
 * LB_ENOTFOUND if <target> does not exist. */
int cp_rollback(struct cp *cp, uint64_t target, const struct cp_write *w, uint64_t *version,
                struct lb_err *err);

/* Store reads, as store.h documents them. */
int cp_versions_list(struct cp *cp, size_t limit, struct store_version **out, size_t *n,
                     struct lb_err *err);
int cp_version_get(struct cp *cp, uint64_t number, struct store_version **out, struct lb_err *err);
int cp_dataplanes(struct cp *cp, struct store_dataplane **out, size_t *n, struct lb_err *err);
int cp_audit_query(struct cp *cp, const struct store_audit_filter *f, struct store_audit **out,
                   size_t *n, struct lb_err *err);

/* Records an operation that changes no config (a key or tokens file
 * re-read) in the audit log, by <who>, at the active version; a failed
 * write is logged, and changes nothing else. */
void cp_audit_note(struct cp *cp, const char *who, const char *action, const char *detail);

/* Backend <id>'s health as the checker knows it now (state, last check,
 * last error; health_changed_unix_ms is 0): LB_OK with *<out> owned by the
 * caller (store_health_free()), LB_ENOTFOUND when <id> is not a backend of
 * the active config, LB_ENOMEM. */
int cp_health_get(struct cp *cp, const char *id, struct store_backend_health **out,
                  struct lb_err *err);

/* The health checker (borrowed) for its counts. It checks the backends of the
 * active config: every mutation re-syncs it; a state change is stored
 * (store_health_set() plus an audit row by "health") and published as a new
 * generation of the same config version before the loop next blocks. */
struct health *cp_health(const struct cp *cp);

/* The traffic history (borrowed) the data planes' reports fill, for
 * GET /api/v1/history. */
struct history *cp_history(const struct cp *cp);

/* Semantic diff from stored version <from> to <to>. LB_ENOTFOUND if either
 * does not exist. Caller frees *<out> with config_diff_free(). */
int cp_diff(struct cp *cp, uint64_t from, uint64_t to, struct config_diff **out,
            struct lb_err *err);

/* ---- TLS certificates ---------------------------------------------------
 * The TLS files of the active config (the ssl section when a frontend has
 * TLS, the caFile of every https:// backend) are read and validated as a
 * whole (tlscheck bundle) when a version becomes active and whenever
 * certwatch sees one change (debounced). A valid set with new contents is
 * published as a new generation of the same config version, with an audit
 * row "tls.reload" by "certwatch"; an invalid set is refused: the previous
 * bytes keep serving (also in snapshots built later for other changes, for
 * the same ssl section or the same backend and caFile), the error is logged,
 * counted and kept for the API until a reload succeeds. */
struct cp_tls_status {
    const struct tlscheck_bundle *bundle; /* serving now (borrowed); NULL = no TLS file */
    uint64_t reloads;                     /* successful reloads */
    uint64_t reload_errors;               /* refused sets */
    int64_t last_reload_ms;               /* 0 = never */
    uint64_t last_reload_generation;
    char last_reload[256]; /* "cert.pem changed, fingerprint ab12.. -> cd34.." */
    char last_error[160];  /* "" = none since the last success */
};

/* The TLS state, borrowed until the next mutation or reload. */
void cp_tls_status(const struct cp *cp, struct cp_tls_status *out);

/* Re-reads and validates every TLS file of the active config now (ssl
 * section, backend caFiles). LB_OK with *<reloaded> true and a new
 * generation when their contents changed and are all valid, false when
 * nothing changed (or there is no TLS file); LB_EINVAL or LB_ESYS when the
 * new files are refused (the message names the file, and the backend for a
 * caFile; the old ones keep serving), LB_ENOMEM, LB_ESTORE. A reload is
 * audited "tls.reload" by "certwatch". */
int cp_tls_reload(struct cp *cp, bool *reloaded, struct lb_err *err);

/* cp_tls_reload() on behalf of <who> ("uid:0", "token:ops"), the audit
 * row's who. LB_EINVAL when <who> is NULL or "". */
int cp_tls_reload_by(struct cp *cp, const char *who, bool *reloaded, struct lb_err *err);

/* ---- for the guard (cp_guard.h: the rollouts) ----------------------------- */

struct reports;

/* The data planes' latest reports (borrowed), for the rollout gates. */
const struct reports *cp_reports(const struct cp *cp);

/* What cp_backends_replace() changes, in this order. */
struct cp_replace {
    const char *const *remove; /* backend ids to remove */
    size_t n_remove;
    const char *const *activate; /* backend ids whose state becomes active */
    size_t n_activate;
    const struct cp_backend_change *add; /* backends to add as cp_backend_add() fills
                                          * them (id required) */
    size_t n_add;
};

/* One version changing several backends as <rp> says, audited as <action>
 * with the changes and the comment. LB_ENOTFOUND for an unknown id to remove
 * or activate, LB_ECONFLICT for an id or URL already used, LB_EINVAL as
 * cp_backend_add() or when no backend would be left. */
int cp_backends_replace(struct cp *cp, const struct cp_replace *rp, const struct cp_write *w,
                        const char *action, uint64_t *version, struct lb_err *err);

/* Test hook: the core's store (borrowed), e.g. for store__fail_after(). */
struct store *cp__store(struct cp *cp);

/* Publisher callback (publisher_report_fn, <ctx> = the cp): records the
 * report in the data plane table and keeps it in memory (breaker states,
 * counters for dynamic weights); a failure is logged. A backend the data
 * plane reports ejected (or whose ejection counter rose since its previous
 * report) that the health checks do not hold DOWN already is taken DOWN at
 * once as if `fall` checks had failed (health_mark_down(): `rise` passing
 * checks bring it back), logged once as "backend_ejected", and stored,
 * audited and published as any health change is. Reports still saying
 * ejected while it is DOWN change nothing. */
void cp_on_report(void *ctx, const Lb__V1__Report *report);

struct reports_node;
/* The process (pid, start time, binary version) behind data plane
 * <node_id>'s latest report; false if none came since this process started. */
bool cp_dataplane_process(const struct cp *cp, const char *node_id, struct reports_node *out);

/* ---- breaker state and dynamic weights ------------------------------------ */

/* Runtime view of one backend from the data planes' reports. */
struct cp_backend_runtime {
    const char *breaker;       /* "closed", "open" or "half_open": the worst over the data
                                * planes that reported in the last 10 s; "closed" if none */
    uint32_t breaker_open;     /* data planes reporting it open */
    uint64_t requests;         /* sums over those data planes (cumulative counters) */
    uint64_t errors;           /* 5xx, connect failures and timeouts */
    uint32_t effective_weight; /* the weight published now (dynamic or configured) */
    bool ejected;              /* a data plane that reported in the last 10 s has it ejected,
                                * or it is down since an ejection (until checks pass) */
    uint32_t ejected_by;       /* how many of them */
    uint64_t ejections;        /* sums over those data planes: cumulative ejections, */
    uint64_t connections;      /* upstream connections now, */
    uint64_t queued;           /* requests in its queue now, */
    uint64_t queue_timeouts;   /* cumulative queue timeouts (503s) */
};

/* Backend <index> of cp_config() as of <now_ms>; an index out of range gives
 * "closed" and zeros. */
void cp_backend_runtime(const struct cp *cp, size_t index, int64_t now_ms,
                        struct cp_backend_runtime *out);

/* One dynamic weights step (the core runs it every 10 s on its loop; tests
 * call it directly). With balancing.weights dynamic, the reported counters
 * since the previous step give each backend's error rate and mean latency
 * (reports_weights_next()); when a weight changes, one audit row
 * ("dynamic weights: demo-a 5 -> 4 (p=12.0ms, err=30.0%); ...", who
 * "dynamic-weights", action "weights") is written and the served snapshot is
 * published again as a new generation of the same config version: the
 * configured weights in the config do not change. With static weights it
 * only forgets dynamic state. *<changed> (may be NULL) counts the backends
 * whose weight changed. LB_OK or LB_ENOMEM. */
int cp_weights_step(struct cp *cp, int64_t now_ms, size_t *changed, struct lb_err *err);

/* Staged rollout (the guard drives these). cp_canary_hold():
 * the snapshot served now, as a new generation naming <nodes> in
 * except_nodes, becomes the publisher's held snapshot (what the other data
 * planes keep). cp_canary_promote(): the served snapshot again as a new
 * generation for every data plane (only_nodes cleared), nothing held.
 * cp_canary_release(): nothing held any more. */
int cp_canary_hold(struct cp *cp, const char *const *nodes, size_t n, struct lb_err *err);
int cp_canary_promote(struct cp *cp, struct lb_err *err);
void cp_canary_release(struct cp *cp);
/* cp_canary_hold() with the snapshot of stored version <version> (after a
 * restart of the control plane, which serves the canary version); its
 * parsed config is shown to <on_config> (may be NULL) first. */
int cp_canary_hold_version(struct cp *cp, uint64_t version, const char *const *nodes, size_t n,
                           void (*on_config)(void *ctx, const struct config *cfg), void *ctx,
                           struct lb_err *err);

#endif
