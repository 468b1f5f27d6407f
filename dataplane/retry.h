/* dataplane/retry.h: when to retry a request on another backend.
 *
 * Backoff with full jitter, a per-worker retry budget that keeps retries from
 * multiplying the load on a failing fleet, and the RFC 9110 idempotency rule.
 * A budget belongs to one worker thread; only its exhausted counter may be
 * read from another thread (the metrics scraper). */
#ifndef LB_RETRY_H
#define LB_RETRY_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define RETRY_BACKOFF_BASE_MS 25
#define RETRY_BACKOFF_CAP_MS  250
#define RETRY_BUDGET_MIN      3  /* retries in flight always allowed */
#define RETRY_BUDGET_PERCENT  20 /* of the active requests */

/* The delay before retry number <attempt> (1 for the first retry; 0 counts as
 * 1): uniform in [0, min(<cap_ms>, <base_ms> * 2^(attempt-1))] ("full jitter").
 * <rng> is the caller's xorshift64 state, advanced here; a zero state is
 * seeded with a fixed constant. Any thread (for its own <rng>); pure but for
 * <rng>. */
uint32_t retry_backoff_ms(uint32_t attempt, uint32_t base_ms, uint32_t cap_ms, uint64_t *rng);

/* Per-worker retry budget: at most max(<min>, <percent> % of the active
 * requests) retries in flight. Fields are the module's; read them only
 * through the functions below. */
struct retry_budget {
    uint32_t min;               /* retries in flight always allowed */
    uint32_t percent;           /* of active requests */
    uint32_t active;            /* client requests in flight */
    uint32_t retries;           /* retries in flight */
    _Atomic uint64_t exhausted; /* retries refused; one writer, read by the scraper */
};

/* Initializes <b> in the caller's memory; zero <min> or <percent> take
 * RETRY_BUDGET_MIN / RETRY_BUDGET_PERCENT. Nothing to deinit. Worker thread. */
void retry_budget_init(struct retry_budget *b, uint32_t min, uint32_t percent);

/* A client request starts / finishes (once per client request, whatever the
 * number of attempts). Finishing more than started is ignored. Worker thread. */
void retry_budget_request_started(struct retry_budget *b);
void retry_budget_request_finished(struct retry_budget *b);

/* Asks to send one retry. True: the retry counts as in flight until
 * retry_budget_done(). False: the budget is exhausted (counted); answer with
 * the error at hand. Worker thread; never allocates. */
bool retry_budget_try(struct retry_budget *b);

/* The retry that retry_budget_try() allowed has ended (any outcome). Worker
 * thread. */
void retry_budget_done(struct retry_budget *b);

/* Retries allowed in flight right now: max(min, percent % of active). */
uint32_t retry_budget_limit(const struct retry_budget *b);

/* Retries refused so far. Any thread. */
uint64_t retry_budget_exhausted(struct retry_budget *b);

/* True for the methods RFC 9110 section 9.2.2 calls idempotent: GET, HEAD,
 * OPTIONS, TRACE, PUT, DELETE. <method> is an enum http1_method value (the
 * parser's http1_request.meth); HTTP1_M_OTHER and anything unknown is not. */
bool retry_is_idempotent(uint8_t method);

#endif
