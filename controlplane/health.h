/* controlplane/health.h: active health checks of the backends on the control
 * plane's loop, with rise/fall hysteresis.
 *
 * Every checked backend has a libev timer firing every interval with a
 * +-10 % jitter (the first check falls anywhere in the first interval). A
 * check is an HTTP GET of the configured path (non-blocking connect, request,
 * status line; the whole check bounded by the timeout) or a TCP connect. At
 * most one check per backend is in flight: a timer firing while one is still
 * running is skipped. Addresses are IP literals resolved beforehand (the
 * snapshot's), so a check never calls the resolver.
 *
 * Single-threaded: every function runs on the loop given to health_new(),
 * and the result callback is called from that loop. */
#ifndef LB_HEALTH_H
#define LB_HEALTH_H

#include "config.h"
#include "store.h"

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct lb_err;
struct health;

#define HEALTH_ERROR_MAX 128 /* bytes of a last_error, NUL included */

/* ---- the rise/fall state machine (pure) ----------------------------------- */

/* One backend's verdict and the run of equal results behind it. */
struct health_fsm {
    enum store_health state; /* starts STORE_HEALTH_UNKNOWN */
    uint32_t passes;         /* consecutive passes (0 after a failure) */
    uint32_t fails;          /* consecutive failures (0 after a pass) */
};

/* Sets <f> to UNKNOWN with no history. */
void health_fsm_init(struct health_fsm *f);

/* Feeds one check result. The state becomes DOWN after <fall> consecutive
 * failures and UP after <rise> consecutive passes (0 counts as 1); anything
 * shorter changes nothing, so a lost probe or a flapping backend never flips
 * it. Returns true when the state changed (UNKNOWN -> UP counts). */
bool health_fsm_feed(struct health_fsm *f, bool pass, uint32_t rise, uint32_t fall);

/* Takes <f> down at once, as if <fall> checks had failed in a row (0 counts
 * as 1): the passes restart from zero, so <rise> passes are needed to be UP
 * again. Returns true when the state changed; a DOWN state is left as it is
 * (its runs included). */
bool health_fsm_force_down(struct health_fsm *f, uint32_t fall);

/* ---- the checker -------------------------------------------------------------- */

/* How to check; applies to every target. */
struct health_settings {
    uint32_t interval_ms;     /* between checks; 0 = 10000 */
    uint32_t timeout_ms;      /* bounds a whole check; 0 or above interval = interval */
    uint32_t rise;            /* passes to become UP; 0 = 2 */
    uint32_t fall;            /* failures to become DOWN; 0 = 3 */
    enum config_hc_type type; /* CONFIG_HC_HTTP or CONFIG_HC_TCP */
    uint32_t expected_status; /* 0 (the config default): any 2xx or 3xx passes;
                               * else exactly this status */
    const char *path;         /* request target; NULL or "" = "/health" */
    const char *host;         /* Host header; NULL or "" = the target's host_header */
};

/* One backend to check. Strings are copied. */
struct health_target {
    const char *id;          /* backend id, unique in a sync */
    const char *addr;        /* IPv4 or IPv6 literal to connect to */
    uint16_t port;           /* 1..65535 */
    const char *host_header; /* "host:port" as configured (name, not the address) */
    bool tcp_only;           /* https backends: the check is a TCP connect */
    bool disabled;           /* kept (state, last check) but not checked */
    uint8_t send_proxy;      /* the backend wants a PROXY header first (1: v1, 2: v2): an
                              * HTTP check starts with one naming no client */
};

/* One check's outcome, handed to the result callback. Borrowed for the call. */
struct health_result {
    const char *id;
    bool pass;
    const char *error;           /* "" on a pass, else "connect refused", "status 500", ... */
    enum store_health old_state; /* before this result */
    enum store_health state;     /* after it */
    bool changed;                /* old_state != state */
    int64_t now_unix_ms;         /* when the check ended */
};

/* Called after every check. It must not call health_sync() or health_free();
 * it may read the checker. */
typedef void (*health_result_fn)(void *ctx, const struct health_result *r);

/* What the checker knows of one backend. */
struct health_status {
    enum store_health state;
    int64_t last_check_unix_ms;        /* 0 = never checked */
    char last_error[HEALTH_ERROR_MAX]; /* "" when the last check passed or none ran */
    bool disabled;
    bool ejected; /* down since a data plane ejected it (health_mark_down), until up again */
    uint32_t passes, fails; /* the current runs of passes and failures (rise/fall progress) */
};

/* Counts over the targets of the last sync. */
struct health_counts {
    size_t up, down, unknown; /* checked (not disabled) targets by state */
    size_t disabled;
    uint64_t passes, fails; /* checks ever finished, by result */
    uint64_t skips;         /* checks not run: out of descriptors, memory or ports */
};

/* A checker with no targets on <loop>; <on_result> (may be NULL) gets <ctx>.
 * Returns NULL and fills <err> on no memory. Caller owns the result; release
 * with health_free(). */
struct health *health_new(struct ev_loop *loop, health_result_fn on_result, void *ctx,
                          struct lb_err *err);

/* Cancels every check in flight (closing its socket), stops every timer and
 * frees <h>. NULL is a no-op. */
void health_free(struct health *h);

/* Makes <targets> (<n> of them) the set checked with <s>. A target whose id
 * was known keeps its state and last check; when its address, port or the
 * settings changed its in-flight check is cancelled, its runs of results
 * restart and its next check is rescheduled within the (new) interval. New
 * ids start UNKNOWN; ids no longer listed are dropped (in-flight check
 * cancelled). Disabled targets are kept without checks. LB_OK, or LB_EINVAL
 * (an address that is not an IP literal, a duplicate id) / LB_ENOMEM with
 * nothing changed. */
int health_sync(struct health *h, const struct health_settings *s,
                const struct health_target *targets, size_t n, struct lb_err *err);

/* Fills <out> for backend <id>. LB_OK, or LB_ENOTFOUND when <id> is not a
 * target. */
int health_status_get(const struct health *h, const char *id, struct health_status *out);

/* The state of <id>; STORE_HEALTH_UNKNOWN when it is not a target. */
enum store_health health_state(const struct health *h, const char *id);

/* Backend <id> was seen failing by someone else (a data plane ejected it):
 * unless it is already DOWN, it becomes DOWN as if <fall> checks had failed
 * (health_fsm_force_down()), its last error becomes <reason>, and the result
 * callback is called as for a check that changed the state (pass false,
 * error <reason>, the current time). Checks go on as scheduled; <rise>
 * passing ones bring it back. Returns true when the state changed; false
 * when it was DOWN already, is disabled (not checked) or is not a target. */
bool health_mark_down(struct health *h, const char *id, const char *reason);

void health_counts_get(const struct health *h, struct health_counts *out);

/* True when at least one target is checked and every checked one is DOWN. */
bool health_pool_all_down(const struct health *h);

#endif
