/* dataplane/exchange_int.h: what the exchange's three files share, each
 * using only those after it: exchange.c (the request and its response,
 * driving), exchange_route.c (where it goes, retries), exchange_end.c (how
 * attempts and exchanges end: answers, counters, the log line). Not for
 * other modules. */
#ifndef LB_EXCHANGE_INT_H
#define LB_EXCHANGE_INT_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "exchange.h"
#include "worker_types.h"

/* How an attempt on a backend ended, for its breaker and effective weight. */
enum outcome {
    OUT_OK = 0,
    OUT_FAIL,    /* connect error, timeout, broken response, 5xx as policy counts it */
    OUT_ABANDON, /* the client went away or broke the request: not the backend's doing */
};

#define RETRY_BUDGET_WAITS                                                                         \
    3 /* a retry waits for room in the budget up to this many                                      \
       * backoff caps, looking again every backoff base */

static inline uint64_t exchange__now_ms(const struct exchange *x)
{
    return (uint64_t)(ev_now(x->w->loop) * 1000.0);
}

/* exchange_end.c: how attempts and exchanges end */

/* Counts the request (metrics, its share of the retry budget). */
void exchange__count(struct exchange *x);

/* The access-log line; <backend> names it when no upstream is attached. */
void exchange__access_log(struct exchange *x, const char *backend, const char *why);

/* Both of the above. */
void exchange__log(struct exchange *x, const char *backend, const char *why);

/* Ends the attempt in progress on <be> (counted from its pick): its breaker
 * and effective weight learn <o>, a retry gives its budget slot back. */
void exchange__attempt_end(struct exchange *x, struct backend_rt *be, enum outcome o);

/* Ends the attempt and closes its upstream (never pooled), if there is one. */
void exchange__drop_upstream(struct exchange *x, enum outcome o);

/* Answers <status> (header lines <extra>) without blaming the request: the
 * connection may stay open. */
void exchange__answer_local(struct exchange *x, unsigned status, const char *extra,
                            size_t extra_len, const char *why);

/* 503 with Retry-After: busy, not broken; the connection may stay open. */
void exchange__answer_busy(struct exchange *x, const char *why);

/* exchange_route.c: where it goes, retries (uses exchange_end.c only) */

/* The upstream callback: wakes the owner. */
void exchange__on_upstream_ready(void *owner);

/* Picks a backend not tried yet and attaches a pooled or new connection to
 * it (or waits in its queue); answers itself when none can take it. */
void exchange__attach_upstream(struct exchange *x);

/* Whether a failure of kind <reason> (METRICS_RETRY_*) that may have reached
 * the backend is retried after a backoff, elsewhere. */
bool exchange__may_retry(struct exchange *x, int reason);

/* Schedules that retry (after the failed attempt on <failed> ended); false
 * when the rule says no. */
bool exchange__try_again(struct exchange *x, struct backend_rt *failed, int reason);

/* The upstream failed or closed before a response head: a replay on a fresh
 * connection, another backend, or an answer. */
void exchange__upstream_failed(struct exchange *x, const char *why);

/* Leaves the backend's queue (<timed_out>: counted as a queue timeout). */
void exchange__leave_queue(struct exchange *x, bool timed_out);

/* The backoff before a retry is over. */
void exchange__backoff_over(struct exchange *x);

#endif
