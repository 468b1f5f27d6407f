/* dataplane/retry.h: when to retry a request on another backend.
 *
 * Backoff with full jitter, a retry budget for the whole data plane that
 * keeps retries from multiplying the load on a failing fleet, and the RFC 9110
 * idempotency rule. */
#ifndef LB_RETRY_H
#define LB_RETRY_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define RETRY_BACKOFF_BASE_MS 25
#define RETRY_BACKOFF_CAP_MS  250
#define RETRY_BUDGET_MIN      3  /* retries in flight always allowed */
#define RETRY_BUDGET_PERCENT  20 /* of the active requests */
#define RETRY_MAX_TRIES       6  /* attempts per request, the first one included */

/* How an attempt failed. */
enum retry_failure {
    RETRY_FAIL_CONNECT = 0, /* the connect or the TLS handshake failed: nothing was sent */
    RETRY_FAIL_POOLED,      /* a reused keep-alive connection closed before any answer */
    RETRY_FAIL_LOCAL,       /* no connection for want of local descriptors, memory, ports */
    RETRY_FAIL_RESET,       /* closed or reset before the response head: maybe seen */
    RETRY_FAIL_TIMEOUT,     /* no response head in time: maybe seen */
    RETRY_FAIL_5XX,         /* answered 502, 503 or 504 */
};

/* What to do about it. */
enum retry_action {
    RETRY_NONE = 0, /* answer with the error at hand */
    RETRY_NOW,      /* another backend at once, outside the budget: it never reached one */
    RETRY_REPLAY,   /* the same backend over a fresh connection, the same bytes */
    RETRY_BACKOFF,  /* another backend after a backoff, within the budget */
};

/* What the decision needs to know of the request. */
struct retry_state {
    uint8_t method;       /* enum http1_method */
    bool body_complete;   /* the whole request body is in hand (none, or read to its end) */
    bool body_sent;       /* body bytes went to a backend (they are not kept) */
    bool head_kept;       /* the rewritten head is there to send again */
    bool answer_started;  /* response bytes went to the client (for RETRY_FAIL_POOLED:
                           * came back at all) */
    bool seen_retries;    /* policy: retries of requests a backend may have seen are on */
    bool draining;        /* the data plane is shutting down */
    uint32_t tries;       /* attempts so far, the failed one included */
    uint32_t max_retries; /* retries of requests a backend may have seen */
};

/* The retry rule, in one place: a request that never reached a backend
 * (connect failed) goes elsewhere at once, whatever its method; a pooled
 * connection closed under it is replayed on a fresh one when nothing came back
 * and no body byte left; one a backend may have seen goes again only when it
 * is idempotent, its body is complete and was not streamed, within
 * <max_retries>; nothing goes again once RETRY_MAX_TRIES attempts were made or
 * the data plane is draining. Whether another backend is there to take it is
 * the caller's check. Pure; any thread. */
enum retry_action retry_decide(enum retry_failure f, const struct retry_state *st);

/* The delay before retry number <attempt> (1 for the first retry; 0 counts as
 * 1): uniform in [0, min(<cap_ms>, <base_ms> * 2^(attempt-1))] ("full jitter").
 * <rng> is the caller's xorshift64 state, advanced here; a zero state is
 * seeded with a fixed constant. Any thread (for its own <rng>); pure but for
 * <rng>. */
uint32_t retry_backoff_ms(uint32_t attempt, uint32_t base_ms, uint32_t cap_ms, uint64_t *rng);

/* The data plane's retry budget, shared by its workers: at most
 * max(<min>, <percent> % of the client requests in flight in the whole
 * process) retries in flight. Each worker counts its requests in a slot of
 * its own (its own cache line, one writer: no locked instruction on the
 * request path); retries are taken and given back with one atomic. It limits
 * retries of requests a backend may have seen (after a reset, a timeout or a
 * 502/503/504): a request whose connect failed never reached a backend and
 * goes elsewhere outside the budget. Fields are the module's. */
#define RETRY_BUDGET_SLOTS 64

struct retry_budget_slot {
    _Atomic uint32_t active; /* client requests in flight on this slot's worker */
    char pad[60];
};

struct retry_budget {
    _Atomic uint32_t min;       /* retries in flight always allowed */
    _Atomic uint32_t percent;   /* of active requests */
    _Atomic uint32_t retries;   /* retries in flight, all workers */
    _Atomic uint64_t exhausted; /* retries refused */
    uint32_t n_slots;
    bool exclusive; /* one worker per slot: counting is a plain load and store */
    struct retry_budget_slot slot[RETRY_BUDGET_SLOTS];
};

/* Initializes <b> in the caller's memory for <n_slots> workers (1..
 * RETRY_BUDGET_SLOTS; more workers share slots, still correctly); zero <min>
 * or <percent> take RETRY_BUDGET_MIN / RETRY_BUDGET_PERCENT. Nothing to
 * deinit. Before any worker runs. */
void retry_budget_init(struct retry_budget *b, uint32_t min, uint32_t percent, uint32_t n_slots);

/* New limits from a snapshot (zero: the defaults); the counts carry on. Any
 * thread. */
void retry_budget_configure(struct retry_budget *b, uint32_t min, uint32_t percent);

/* A client request starts / finishes on worker <slot> (once per client
 * request, whatever the number of attempts). Finishing more than started is
 * ignored. The worker's thread; no contended atomic. */
void retry_budget_request_started(struct retry_budget *b, uint32_t slot);
void retry_budget_request_finished(struct retry_budget *b, uint32_t slot);

/* Asks to send one retry. True: the retry counts as in flight until
 * retry_budget_done(). False: the budget is exhausted (counted); answer with
 * the error at hand. Any thread; never allocates. */
bool retry_budget_try(struct retry_budget *b);

/* The retry that retry_budget_try() allowed has ended (any outcome). Any
 * thread. */
void retry_budget_done(struct retry_budget *b);

/* Retries allowed in flight right now: max(min, percent % of active). */
uint32_t retry_budget_limit(struct retry_budget *b);

/* True when retry_budget_try() would refuse now (nothing is counted). */
bool retry_budget_is_spent(struct retry_budget *b);

/* Retries refused so far. Any thread. */
uint64_t retry_budget_exhausted(struct retry_budget *b);

/* True for the methods RFC 9110 section 9.2.2 calls idempotent: GET, HEAD,
 * OPTIONS, TRACE, PUT, DELETE. <method> is an enum http1_method value (the
 * parser's http1_request.meth); HTTP1_M_OTHER and anything unknown is not. */
bool retry_is_idempotent(uint8_t method);

#endif
