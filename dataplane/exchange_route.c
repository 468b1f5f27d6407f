/* dataplane/exchange_route.c: where an exchange goes — the backend choice
 * (balancer, health, ejection, breaker), the backend's connection limit and
 * queue, connects and their failures, and the retry rule's decisions with
 * backoff and the retry budget. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dp.h"
#include "exchange.h"
#include "exchange_int.h"
#include "lb_err.h"
#include "lb_log.h"
#include "upstream.h"
#include "worker_types.h"

void exchange__on_upstream_ready(void *owner)
{
    struct exchange *x = owner;
    x->ops->wake(x);
}

/* The balancer's filter over the view's candidates (active backends): not
 * known down (unless the pool fails open), not tried by this request, and
 * its breaker lets requests through. */
static bool backend_ok(void *ctx, uint32_t k)
{
    struct exchange *x = ctx;
    const struct wview *v = x->view;
    uint32_t i = v->cand[k];
    const struct snap_backend *b = &v->snap->backends[i];
    if (b->health == SNAP_HEALTH_DOWN && !v->panic)
        return false;
    if (v->be[i]->sh != NULL && eject_blocks(&v->be[i]->sh->eject, v->snap->generation))
        return false;
    for (unsigned t = 0; t < x->tries; t++) {
        if (x->tried[t] == (int32_t)i)
            return false;
    }
    const struct breaker *br = v->be[i]->breaker;
    return br == NULL || !v->snap->breaker.enabled ||
           breaker_is_available(v->be[i]->breaker, &v->snap->breaker, exchange__now_ms(x));
}

/* Why no backend may take the request, for the 503's log line. */
static const char *no_backend_reason(struct exchange *x)
{
    const struct wview *v = x->view;
    uint32_t n_down = 0, n_open = 0, n_out = 0;
    for (uint32_t k = 0; k < v->bal.n; k++) {
        uint32_t i = v->cand[k];
        if (v->snap->backends[i].health == SNAP_HEALTH_DOWN && !v->panic)
            n_down++;
        else if (v->be[i]->sh != NULL && eject_blocks(&v->be[i]->sh->eject, v->snap->generation))
            n_out++;
        else if (v->be[i]->breaker != NULL && v->snap->breaker.enabled &&
                 !breaker_is_available(v->be[i]->breaker, &v->snap->breaker, exchange__now_ms(x)))
            n_open++;
    }
    if (v->bal.n == 0)
        return "no backend is active";
    if (n_down == v->bal.n)
        return "every backend is down (healthcheck.failOpen is off)";
    if (n_out == v->bal.n)
        return "every backend is ejected: connects to each of them failed";
    if (n_open == v->bal.n)
        return "every backend's circuit breaker is open";
    if (n_down + n_open + n_out == v->bal.n)
        return "every backend is down, ejected or has its circuit breaker open";
    return "no backend may take the request";
}

static void x_bind_upstream(struct exchange *x, struct upstream *u, int index)
{
    upstream_attach(u, exchange__on_upstream_ready, x);
    x->up = u;
    x->be_index = index;
}

/* A new upstream connection could not be made for want of local resources
 * (lb_errno_shortage): not the backend's fault, so no breaker or failure
 * count. A retry after its backoff may find a pooled connection or a free
 * descriptor; else 503. */
static void x_connect_short(struct exchange *x, struct backend_rt *be, int errnum)
{
    lb_log(LB_LOG_WARN, "upstream_connect_local", "backend %s: %s", be->id, strerror(errnum));
    exchange__attempt_end(x, be, OUT_ABANDON);
    if (exchange__try_again(x, be, METRICS_RETRY_CONNECT))
        return;
    exchange_fail(x, 503,
                  errnum == EADDRNOTAVAIL ? "out of local ports"
                                          : "out of file descriptors or memory");
}

/* A connect to <be> failed (refused, reset or timed out: the backend's
 * doing): it leaves rotation for every worker at once, and the requests in
 * its queue go elsewhere. Only the thread that ejects it logs. */
static void x_eject(struct exchange *x, struct backend_rt *be, const char *why)
{
    if (be->sh == NULL)
        return;
    struct eject_config ec = x->view->snap->eject;
    ec.controlled = x->w->dp->controlled;
    uint64_t now_ms = exchange__now_ms(x);
    if (!eject_on_connect_failure(&be->sh->eject, &ec, now_ms))
        return;
    bshared_registry_note_ejected(x->w->dp->backends, 1);
    connq_flush(&be->sh->q, now_ms);
    if (ec.controlled)
        lb_log(LB_LOG_WARN, "backend_ejected",
               "backend %s (%s): %s; out of rotation in every worker until the health checks "
               "take it over",
               be->id, be->host_port, why);
    else
        lb_log(LB_LOG_WARN, "backend_ejected",
               "backend %s (%s): %s; out of rotation in every worker, probed in %u ms", be->id,
               be->host_port, why, eject_backoff_ms(&be->sh->eject));
}

/* What the retry rule (retry_decide) says about the request after failure
 * <f>. */
static enum retry_action x_retry_action(const struct exchange *x, enum retry_failure f)
{
    const struct snap *s = x->view->snap;
    const struct upstream *u = x->up;
    struct retry_state st = {
        .method = x->meth,
        .body_complete = x->req.done,
        .body_sent = x->body_sent > 0,
        .head_kept = x->uphead != NULL,
        .answer_started =
            x->resp_head_done || (f == RETRY_FAIL_POOLED && u != NULL && u->got_bytes),
        .seen_retries = s->retry_5xx,
        .draining = x->w->draining,
        .tries = x->tries,
        .max_retries = s->max_retries,
    };
    return retry_decide(f, &st);
}

/* Whether another backend is there to take the request. */
static bool x_has_elsewhere(struct exchange *x)
{
    for (uint32_t k = 0; k < x->view->bal.n; k++) {
        if (backend_ok(x, k))
            return true;
    }
    return false;
}

/* The connect of the attempt in progress on <be> failed (the attempt is
 * still counted, no upstream is attached). Nothing reached a backend, so the
 * request, whatever its method, goes to another backend at once: no backoff,
 * no retry budget. <eject>: a TCP failure, the backend leaves rotation (a
 * failed TLS handshake leaves it in). With nowhere else to go: 503 (502
 * after a failed handshake). */
static void x_connect_failed(struct exchange *x, struct backend_rt *be, const char *why, bool eject)
{
    struct worker *w = x->w;
    METRIC_ADD(w->metrics.be[be->stat_slot]->connect_failures, 1);
    lb_log(LB_LOG_WARN, "upstream_connect_failed", "backend %s (%s): %s", be->id, be->host_port,
           why);
    exchange__attempt_end(x, be, OUT_FAIL);
    if (eject)
        x_eject(x, be, why);
    if (x_retry_action(x, RETRY_FAIL_CONNECT) != RETRY_NOW || !x_has_elsewhere(x)) {
        /* unreachable backends are unavailable; one that failed its TLS
         * handshake answered, wrongly: a bad gateway */
        if (eject)
            exchange_fail(x, 503, "no backend could be reached");
        else
            exchange_fail(x, 502, why);
        return;
    }
    METRIC_ADD(w->metrics.be[be->stat_slot]->retries[METRICS_RETRY_CONNECT], 1);
    x->uphead_sent = 0;
    x->progress = true;
    exchange__attach_upstream(x);
}

/* Who a new connection to <be> is for, when its PROXY header must say. */
static const struct upstream_client *x_client(struct exchange *x, const struct backend_rt *be,
                                              struct upstream_client *cl)
{
    if (be->send_proxy == 0)
        return NULL;
    cl->src = x->peer;
    cl->dst = x->ops->local(x);
    return cl;
}

/* Opens a new connection to backend <i> (<be>), whose slot the request holds,
 * for the attempt in progress, and binds it. */
static void x_connect_new(struct exchange *x, struct backend_rt *be, int i)
{
    const struct snap *s = x->view->snap;
    int errnum = 0;
    struct upstream_client cl;
    struct upstream *u = upstream_connect(
        x->w, be, &s->backends[i], s->be_tls ? s->be_tls[i] : NULL, x_client(x, be, &cl), &errnum);
    if (u != NULL) {
        x_bind_upstream(x, u, i);
        return;
    }
    upstream_slot_release(x->w, be);
    if (lb_errno_shortage(errnum))
        x_connect_short(x, be, errnum);
    else
        x_connect_failed(x, be, strerror(errnum), true);
}

/* Leaves the queue of backend x->q_index: the attempt ends as abandoned and
 * a slot granted meanwhile goes back. */
void exchange__leave_queue(struct exchange *x, bool timed_out)
{
    struct backend_rt *be = x->view->be[x->q_index];
    if (connq_cancel(x->qw, timed_out) == CONNQ_SLOT)
        upstream_slot_release(x->w, be);
    free(x->qw);
    x->qw = NULL;
    x->qwait = false;
    exchange__attempt_end(x, be, OUT_ABANDON);
}

/* Picks a backend not tried yet and attaches an upstream connection, a
 * pooled one or a new one (waiting in the backend's queue when it is at its
 * connection limit). Answers the client itself when no backend can take the
 * request. */
void exchange__attach_upstream(struct exchange *x)
{
    struct worker *w = x->w;
    struct wview *v = x->view;
    const struct snap *s = v->snap;
    uint64_t now_ms = exchange__now_ms(x);
    bool full = false;
    for (;;) {
        int k = x->tries < RETRY_MAX_TRIES ? balancer_pick_at(&v->bal, now_ms, backend_ok, x) : -1;
        if (k < 0) {
            if (full)
                exchange__answer_busy(x, "every backend that could take it has a full queue");
            else if (x->tries == 0)
                exchange_fail(x, 503, no_backend_reason(x));
            else
                exchange_fail(x, 503, "no other backend could take the request");
            return;
        }
        int i = (int)v->cand[k];
        x->tried[x->tries++] = i;
        struct backend_rt *be = v->be[i];
        enum breaker_decision d = BREAKER_PASS;
        if (s->breaker.enabled && be->breaker != NULL) {
            d = breaker_allow(be->breaker, &s->breaker, now_ms);
            if (d == BREAKER_REJECT)
                continue; /* lost a race for the last trial slot */
        }
        x->bdec = (uint8_t)d;
        x->bdec_valid = true;
        be->bal.active++; /* the attempt counts from here to exchange__attempt_end() */
        metrics_be_active(&w->metrics, be->stat_slot, true);
        struct upstream *u = upstream_pool_take(w, be, x->peer, x->req.done);
        if (u != NULL) {
            x_bind_upstream(x, u, i);
            return;
        }
        if (be->sh != NULL) {
            /* a waiter only where there is a limit to wait for (not on the
             * request path of a backend without one) */
            struct connq_waiter *qw = be->max_conns ? calloc(1, sizeof(*qw)) : NULL;
            if (qw != NULL)
                qw->owner = x;
            enum connq_result r = be->max_conns && qw == NULL
                                      ? CONNQ_FULL
                                      : connq_acquire(&be->sh->q, be->max_conns, be->max_queue, qw,
                                                      &w->inbox, now_ms);
            if (r != CONNQ_QUEUED)
                free(qw);
            if (r == CONNQ_FULL) {
                exchange__attempt_end(x, be, OUT_ABANDON);
                full = true;
                continue;
            }
            if (r == CONNQ_QUEUED) {
                x->qw = qw;
                x->qwait = true;
                x->q_index = i;
                x->rearm = true; /* the queue's timer starts */
                x->progress = true;
                return;
            }
        }
        x_connect_new(x, be, i);
        return;
    }
}

void exchange_on_grant(struct connq_waiter *cw)
{
    struct exchange *x = cw->owner;
    uint8_t grant = cw->grant;
    free(cw);
    x->qw = NULL;
    struct backend_rt *be = x->view->be[x->q_index];
    x->qwait = false;
    if (grant == CONNQ_SLOT) {
        x_connect_new(x, be, x->q_index);
    } else {
        /* ejected or out of rotation while it waited: somewhere else, at once */
        exchange__attempt_end(x, be, OUT_ABANDON);
        if (x->tries < RETRY_MAX_TRIES && x_has_elsewhere(x))
            exchange__attach_upstream(x);
        else
            exchange_fail(x, 503, "its backend left rotation while it waited");
    }
    x->rearm = true;
    x->progress = true;
    x->ops->wake(x);
}

/* Whether a retry after a backoff may follow a failed attempt that may have
 * reached its backend (a reset, a timeout, a 502/503/504) or found no local
 * resources (<reason> METRICS_RETRY_CONNECT): retry_decide() says so and
 * another backend is there. Connect failures never come here
 * (x_connect_failed). */
bool exchange__may_retry(struct exchange *x, int reason)
{
    enum retry_failure f = reason == METRICS_RETRY_5XX       ? RETRY_FAIL_5XX
                           : reason == METRICS_RETRY_TIMEOUT ? RETRY_FAIL_TIMEOUT
                           : reason == METRICS_RETRY_RESET   ? RETRY_FAIL_RESET
                                                             : RETRY_FAIL_LOCAL;
    return x_retry_action(x, f) == RETRY_BACKOFF && x_has_elsewhere(x);
}

/* How long a retry that found the budget spent waits before it looks
 * again: a retry in flight holds its room for a backoff and one attempt, so
 * room comes back about every backoff base; jittered (half to all of it) so
 * that the waiters do not all look at once. */
static uint32_t x_budget_poll_ms(struct exchange *x)
{
    uint32_t base = x->view->snap->backoff_base_ms;
    return base / 2 + retry_backoff_ms(1, base - base / 2, base - base / 2, &x->w->rng);
}

/* After a failed attempt on <failed> (already detached): schedules another
 * on a different backend after a backoff with jitter, within the data
 * plane's retry budget. A retry that finds the budget spent waits for room,
 * looking again every backoff base (jittered) for up to RETRY_BUDGET_WAITS
 * backoff caps (a burst of failures, such as every request in flight on a
 * backend that died, drains through the budget as its retries end, instead
 * of failing), then gives up. Returns false when policy says no. */
bool exchange__try_again(struct exchange *x, struct backend_rt *failed, int reason)
{
    struct worker *w = x->w;
    const struct snap *s = x->view->snap;
    if (!exchange__may_retry(x, reason))
        return false;
    METRIC_ADD(w->metrics.be[failed->stat_slot]->retries[reason], 1);
    x->budget_waited_ms = 0;
    x->in_retry = retry_budget_try(&w->dp->budget);
    uint32_t ms = x->in_retry
                      ? retry_backoff_ms(x->tries, s->backoff_base_ms, s->backoff_cap_ms, &w->rng)
                      : x_budget_poll_ms(x);
    x->backoff_s = ms / 1000.0;
    x->retry_wait = true;
    x->uphead_sent = 0;
    x->rearm = true; /* the backoff's timer starts */
    x->progress = true;
    return true;
}

/* The backoff before a retry is over: the retry goes, or waits again for
 * room in the budget, or fails. */
void exchange__backoff_over(struct exchange *x)
{
    x->retry_wait = false;
    if (!x->in_retry) {
        x->in_retry = retry_budget_try(&x->w->dp->budget);
        if (!x->in_retry) {
            const struct snap *s = x->view->snap;
            x->budget_waited_ms += (uint32_t)(x->backoff_s * 1000.0 + 0.5);
            if (x->budget_waited_ms < RETRY_BUDGET_WAITS * s->backoff_cap_ms && !x->w->draining &&
                x_has_elsewhere(x)) {
                x->retry_wait = true;
                x->backoff_s = x_budget_poll_ms(x) / 1000.0;
                x->rearm = true;
                return;
            }
            exchange_fail(x, 502, "the backend failed and the retry budget is spent");
            return;
        }
    }
    exchange__attach_upstream(x);
}

/* The upstream failed or closed before a response head: retry or answer. */
void exchange__upstream_failed(struct exchange *x, const char *why)
{
    struct worker *w = x->w;
    char reason[200]; /* <why> may live in the upstream freed below */
    snprintf(reason, sizeof(reason), "%s", why);
    why = reason;
    struct upstream *u = x->up;
    struct backend_rt *be = u->be;
    /* a TLS handshake that failed sent nothing of the request: like a connect */
    bool connected = u->connected && (!u->tls || u->tls_done);
    if (u->reused && x_retry_action(x, RETRY_FAIL_POOLED) == RETRY_REPLAY) {
        /* the backend closed an idle pooled connection as we used it: the
         * same attempt goes on over a fresh connection (in the same slot of
         * the backend's count) with the same bytes */
        x->up = NULL;
        upstream_detach(u);
        upstream_close(u);
        int errnum = 0;
        const struct snap *snap = x->view->snap;
        struct upstream_client cl;
        struct upstream *nu = upstream_connect(w, be, &snap->backends[x->be_index],
                                               snap->be_tls ? snap->be_tls[x->be_index] : NULL,
                                               x_client(x, be, &cl), &errnum);
        if (nu != NULL) {
            upstream_attach(nu, exchange__on_upstream_ready, x);
            x->up = nu;
            x->uphead_sent = 0;
            x->progress = true;
            return;
        }
        upstream_slot_release(w, be);
        if (lb_errno_shortage(errnum))
            x_connect_short(x, be, errnum);
        else
            x_connect_failed(x, be, strerror(errnum), true);
        return;
    }
    if (!connected) {
        /* nothing reached the backend: a refused, reset or timed-out connect
         * ejects it; a failed TLS handshake does not (it answered) */
        bool tcp = !u->connected;
        x->up = NULL;
        upstream_detach(u);
        upstream_free(u);
        x_connect_failed(x, be, why, tcp);
        return;
    }
    lb_log(LB_LOG_WARN, "upstream_failed", "backend %s (%s): %s", be->id, be->host_port, why);
    exchange__drop_upstream(x, OUT_FAIL);
    if (!exchange__try_again(x, be, METRICS_RETRY_RESET))
        exchange_fail(x, 502, why);
}
