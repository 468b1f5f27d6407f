/* dataplane/breaker.h: circuit breaker per backend (closed -> open -> half-open).
 *
 * One breaker per backend id, shared by every worker thread through the
 * process-wide backend registry (bshared.h), so its state survives snapshot
 * swaps. All functions
 * taking a breaker may be called from any thread at the same time: the states
 * a request start sees most (closed, open before its time is up) are read with
 * atomics; transitions and the half-open trial slots take the breaker's own
 * mutex. Nothing here allocates or logs but the registry.
 *
 * closed:    requests pass; <threshold> consecutive failures open it.
 * open:      requests are rejected for the current open time (first <timeout_ms>).
 * half-open: once the open time is up, at most <max_half_open> trial requests
 *            run at once; <max_half_open> successful trials close it (the open
 *            time goes back to <timeout_ms>), one failed trial opens it again
 *            with the open time doubled, capped at <max_timeout_ms>. */
#ifndef LB_BREAKER_H
#define LB_BREAKER_H

#include <stdbool.h>
#include <stdint.h>

struct lb_err;
struct breaker;

/* Defaults for zero fields, as lb.proto's CircuitBreaker documents them. */
#define BREAKER_DEFAULT_THRESHOLD      5
#define BREAKER_DEFAULT_TIMEOUT_MS     30000
#define BREAKER_DEFAULT_MAX_HALF_OPEN  3
#define BREAKER_DEFAULT_MAX_TIMEOUT_MS 300000

/* The policy, passed on every call so that a new snapshot applies at once.
 * A zero field takes the default above; a <max_timeout_ms> below the
 * (defaulted) <timeout_ms> counts as <timeout_ms>. */
struct breaker_config {
    bool enabled; /* false: every request passes and outcomes are ignored */
    uint32_t threshold;
    uint32_t timeout_ms;
    uint32_t max_half_open;
    uint32_t max_timeout_ms;
};

/* Values match lb.proto's BreakerState. */
enum breaker_state {
    BREAKER_STATE_CLOSED = 0,
    BREAKER_STATE_OPEN = 1,
    BREAKER_STATE_HALF_OPEN = 2,
};

/* What breaker_allow() decided for one request. */
enum breaker_decision {
    BREAKER_PASS = 0,  /* closed (or disabled): send it; report with breaker_done() */
    BREAKER_TRIAL = 1, /* half-open trial: send it; breaker_done() MUST follow */
    BREAKER_REJECT = 2 /* open or no free trial slot: do not send (503 or another backend) */
};

/* Cumulative counters, for metrics. */
struct breaker_counters {
    uint64_t opened;      /* transitions to open (from closed or half-open) */
    uint64_t half_opened; /* transitions to half-open */
    uint64_t closed;      /* transitions from half-open to closed */
    uint64_t rejected;    /* requests answered BREAKER_REJECT */
};

/* Creates a closed breaker with no counts. Returns NULL and fills <err> on no
 * memory. Caller owns the result; release with breaker_free(). */
struct breaker *breaker_new(struct lb_err *err);

/* Frees <b> (NULL: no-op). No other thread may still use it. */
void breaker_free(struct breaker *b);

/* At the start of a request to this backend at <now_ms>: PASS, TRIAL or REJECT
 * (see enum breaker_decision). An open breaker whose open time is up becomes
 * half-open here and hands out a trial slot. Any thread. Hot path: lock-free
 * when closed or open, never allocates. */
enum breaker_decision breaker_allow(struct breaker *b, const struct breaker_config *c,
                                    uint64_t now_ms);

/* At the end of a request that breaker_allow() answered <d> (REJECT: no-op),
 * with its outcome <success> at <now_ms>. Every TRIAL must be followed by
 * exactly one breaker_done() (also when the request is abandoned: report a
 * failure), or its slot stays taken. A PASS that ends after the breaker left
 * closed changes nothing but the consecutive-failure count. Trials still in
 * flight when the breaker re-opens keep their slot until they are done; their
 * outcome counts only if the breaker is half-open again by then.
 * Any thread; never allocates. */
void breaker_done(struct breaker *b, const struct breaker_config *c, enum breaker_decision d,
                  bool success, uint64_t now_ms);

/* True when a request at <now_ms> would not be rejected: disabled, closed,
 * half-open with a free trial slot, or open with its time up. Takes no trial
 * slot (for the balancer's eligibility check; breaker_allow() decides). Any
 * thread; lock-free. */
bool breaker_is_available(struct breaker *b, const struct breaker_config *c, uint64_t now_ms);

/* The state at <now_ms> as lb.proto's BreakerState: an open breaker whose time
 * is up reports half-open. Any thread; lock-free. */
enum breaker_state breaker_state(struct breaker *b, uint64_t now_ms);

/* The open time the next (re-)opening would use now, in ms: 0 while closed
 * with no opening yet in this cycle. For tests and logs. Any thread. */
uint32_t breaker_open_time_ms(struct breaker *b);

/* Copies the counters into <out>. Any thread; each value is read atomically. */
void breaker_counters_read(struct breaker *b, struct breaker_counters *out);

/* A breaker's state as it passes to a successor process (hand-over), with
 * times relative to the moment of export. Half-open goes as open with no
 * time left: the successor hands out its own trials (the old process's
 * trials end there). */
struct breaker_carry {
    uint8_t state;         /* BREAKER_STATE_CLOSED or BREAKER_STATE_OPEN */
    uint32_t failures;     /* consecutive failures while closed */
    uint32_t open_ms;      /* the open time in force (doubles on a failed trial) */
    uint32_t open_left_ms; /* open: ms until half-open */
};

/* Reads <b> at <now_ms> into <out>. Any thread. */
void breaker_export(struct breaker *b, uint64_t now_ms, struct breaker_carry *out);

/* Sets <b> (no trial in flight) to <in> as of <now_ms>; a state other than
 * closed or open is taken as closed. Counters do not move. Any thread. */
void breaker_import(struct breaker *b, const struct breaker_carry *in, uint64_t now_ms);

#endif
