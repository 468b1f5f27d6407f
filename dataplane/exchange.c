/* dataplane/exchange.c: one proxied request and its response. */
#include "exchange.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "dp.h"
#include "lb_err.h"
#include "lb_log.h"
#include "rewrite.h"
#include "tls.h"
#include "upstream.h"
#include "worker_types.h"

/* How an attempt on a backend ended, for its breaker and effective weight. */
enum outcome {
    OUT_OK = 0,
    OUT_FAIL,    /* connect error, timeout, broken response, 5xx as policy counts it */
    OUT_ABANDON, /* the client went away or broke the request: not the backend's doing */
};

#define RETRY_BUDGET_WAITS 3 /* backoffs a retry waits for room in the budget */

static void x_attach_upstream(struct exchange *x);
static bool x_try_again(struct exchange *x, struct backend_rt *failed, int reason);
static void x_upstream_failed(struct exchange *x, const char *why);
static bool x_upgrade_wanted(const struct http1_msg *m);

static void x_on_upstream_ready(void *owner)
{
    struct exchange *x = owner;
    x->ops->wake(x);
}

static void slice_copy(char *dst, size_t cap, struct http1_slice s)
{
    size_t n = s.p == NULL ? 0 : s.len < cap - 1 ? s.len : cap - 1;
    if (n > 0)
        memcpy(dst, s.p, n);
    dst[n] = '\0';
}

static const struct snap_frontend *x_frontend(const struct exchange *x)
{
    return &x->view->snap->frontends[x->fe_index];
}

/* Counts the request in the metrics and ends its share of the retry budget. */
static void x_count(struct exchange *x)
{
    struct worker *w = x->w;
    if (x->counted) {
        retry_budget_request_finished(&w->dp->budget, w->id);
        x->counted = false;
    }
    if (x->in_retry && x->up == NULL) {
        /* answered between attempts: the retry it held is over */
        retry_budget_done(&w->dp->budget);
        x->in_retry = false;
    }
    double dur = ev_now(w->loop) - x->t_start;
    if (dur < 0)
        dur = 0;
    uint64_t dur_us = (uint64_t)(dur * 1e6);
    struct backend_rt *be = x->up ? x->up->be : NULL;
    uint32_t be_slot = be ? be->stat_slot : UINT32_MAX;
    metrics_request(&w->metrics, x->fe_stat, be_slot, x->status, dur_us);
    if (x->reject >= 0 && x->fe_stat < w->metrics.n_fe)
        METRIC_ADD(w->metrics.fe[x->fe_stat].rejected[x->reject], 1);
}

/* The access-log line: <backend> names it when no upstream is attached. */
static void x_access_log(struct exchange *x, const char *backend, const char *why)
{
    struct worker *w = x->w;
    if (!x->view->snap->access_log || w->log == NULL)
        return;
    double dur = ev_now(w->loop) - x->t_start;
    if (dur < 0)
        dur = 0;
    struct backend_rt *be = x->up ? x->up->be : NULL;
    if (!lb_logbuf_begin(w->log, LB_LOG_INFO, "access"))
        return;
    lb_logbuf_cstr(w->log, "frontend", x_frontend(x)->name);
    lb_logbuf_cstr(w->log, "client", x->peer_ip);
    lb_logbuf_cstr(w->log, "method", x->method);
    lb_logbuf_cstr(w->log, "path", x->path);
    lb_logbuf_uint(w->log, "status", x->status);
    lb_logbuf_uint(w->log, "bytes_in", x->bytes_in);
    lb_logbuf_uint(w->log, "bytes_out", x->bytes_out);
    lb_logbuf_double(w->log, "duration_ms", dur * 1000.0, 3);
    lb_logbuf_cstr(w->log, "backend", backend ? backend : (be ? be->id : NULL));
    lb_logbuf_cstr(w->log, "request_id", x->req_id[0] ? x->req_id : NULL);
    if (why != NULL)
        lb_logbuf_cstr(w->log, "error", why);
    lb_logbuf_end(w->log);
}

static void x_log(struct exchange *x, const char *backend, const char *why)
{
    x_count(x);
    x_access_log(x, backend, why);
}

static int reject_of(unsigned status)
{
    switch (status) {
    case 400:
        return REJECT_BAD_REQUEST;
    case 408:
        return REJECT_CLIENT_TIMEOUT;
    case 414:
        return REJECT_URI_TOO_LONG;
    case 417:
        return REJECT_EXPECTATION;
    case 431:
        return REJECT_HEADER_TOO_LARGE;
    case 501:
        return REJECT_NOT_IMPLEMENTED;
    case 502:
        return REJECT_UPSTREAM_FAILED;
    case 503:
        return REJECT_NO_BACKEND;
    case 504:
        return REJECT_UPSTREAM_TIMEOUT;
    case 429:
        return REJECT_RATE_LIMITED;
    case 505:
        return REJECT_VERSION;
    default:
        return REJECT_BAD_REQUEST;
    }
}

static uint64_t x_now_ms(const struct exchange *x)
{
    return (uint64_t)(ev_now(x->w->loop) * 1000.0);
}

/* Ends the attempt in progress on <be>: its breaker and effective weight learn
 * the outcome, a retry gives its budget slot back. */
static void x_attempt_end(struct exchange *x, struct backend_rt *be, enum outcome o)
{
    const struct snap *s = x->view->snap;
    be->bal.active--;
    if (o == OUT_OK)
        balancer_slot_on_success(&be->bal);
    else if (o == OUT_FAIL)
        balancer_slot_on_failure(&be->bal);
    if (x->bdec_valid && be->breaker != NULL) {
        /* an abandoned trial must still free its slot: it counts as failed */
        if (o != OUT_ABANDON || x->bdec == BREAKER_TRIAL)
            breaker_done(be->breaker, &s->breaker, (enum breaker_decision)x->bdec, o == OUT_OK,
                         x_now_ms(x));
    }
    x->bdec_valid = false;
    if (x->in_retry) {
        retry_budget_done(&x->w->dp->budget);
        x->in_retry = false;
    }
}

/* Detaches the upstream after a failure: it is closed, never pooled. */
static void x_drop_upstream(struct exchange *x, enum outcome o)
{
    if (x->up == NULL)
        return;
    struct upstream *u = x->up;
    x_attempt_end(x, u->be, o);
    x->up = NULL;
    upstream_detach(u);
    upstream_free(u);
}

/* Answers <status> with a short body and closes after it (the owner lingers,
 * so the answer is not lost to a reset while the client is still sending). */
void exchange_fail(struct exchange *x, unsigned status, const char *why)
{
    struct worker *w = x->w;
    struct backend_rt *be = x->up ? x->up->be : NULL;
    enum outcome o = status == 502 || status == 504 ? OUT_FAIL : OUT_ABANDON;
    if (x->resp_head_done) {
        /* the response has begun: all that is left to say is a close */
        lb_log(LB_LOG_WARN, "request_aborted", "%s %s from %s: %s", x->method, x->path, x->peer_ip,
               why);
        x_log(x, NULL, why);
        x_drop_upstream(x, o);
        x->live = false;
        x->progress = true;
        x->ops->abort(x);
        return;
    }
    x->status = (uint16_t)status;
    x->reject = reject_of(status);
    size_t n = x->ops->answer(x, status, NULL, 0, true);
    if (status >= 500 || lb_log_enabled(LB_LOG_DEBUG))
        lb_log(status >= 500 ? LB_LOG_WARN : LB_LOG_DEBUG, "request_error",
               "%u for %s %s from %s%s%s: %s", status, x->method[0] ? x->method : "-",
               x->path[0] ? x->path : "-", x->peer_ip, be ? " via " : "", be ? be->id : "", why);
    x->bytes_out += n;
    x_log(x, be ? be->id : NULL, why);
    x_drop_upstream(x, o);
    buf_put(&w->bufs, x->uphead);
    x->uphead = NULL;
    x->live = false;
    x->progress = true;
}

/* Answers <status> ourselves without blaming the request's framing (429,
 * a busy 503): the client's connection may stay open for the next request.
 * <extra> holds header lines. */
static void x_answer_local(struct exchange *x, unsigned status, const char *extra, size_t extra_len,
                           const char *why)
{
    x->status = (uint16_t)status;
    x->reject = reject_of(status);
    size_t n = x->ops->answer(x, status, extra, extra_len, false);
    if (lb_log_enabled(LB_LOG_DEBUG))
        lb_log(LB_LOG_DEBUG, "request_answered", "%u for %s %s from %s: %s", status, x->method,
               x->path, x->peer_ip, why);
    x->bytes_out += n;
    x_log(x, NULL, why);
    buf_put(&x->w->bufs, x->uphead);
    x->uphead = NULL;
    x->live = false;
    x->progress = true;
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
           breaker_is_available(v->be[i]->breaker, &v->snap->breaker, x_now_ms(x));
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
                 !breaker_is_available(v->be[i]->breaker, &v->snap->breaker, x_now_ms(x)))
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

/* Writes the rewritten request head for the backend into x->uphead. */
static bool build_upstream_head(struct exchange *x, const struct http1_msg *m)
{
    struct worker *w = x->w;
    struct rewrite_request rq = {.msg = m,
                                 .client_ip = x->peer_ip,
                                 .tls = x->tls_tr != NULL,
                                 .upgrade = x->upgrade,
                                 .now_ms = x_now_ms(x),
                                 .rng = &w->rng};
    struct tls_peer p;
    struct rewrite_identity id;
    if (x->tls_tr != NULL && tls_peer_info(x->tls_tr, &p) == LB_OK && p.has_cert) {
        id = (struct rewrite_identity){p.verified, p.subject, p.san_uri, p.fingerprint};
        rq.identity = &id;
    }
    struct buf *b = buf_get(&w->bufs);
    if (b == NULL)
        return false;
    struct http1_slice req_id;
    int n = rewrite_head(&rq, b->data, b->cap, &req_id);
    if (n == REWRITE_NOSPACE) {
        /* rare: a head near the limits is written again into a bigger buffer */
        struct buf *g = buf_grow(&w->bufs, b, (uint32_t)rewrite_head_max(&rq));
        if (g != NULL) {
            b = g;
            n = rewrite_head(&rq, b->data, b->cap, &req_id);
        }
    }
    if (n == REWRITE_NOSPACE) {
        buf_put(&w->bufs, b);
        return false;
    }
    b->start = 0;
    b->end = (uint32_t)n;
    slice_copy(x->req_id, sizeof(x->req_id), req_id);
    x->uphead = b;
    x->uphead_sent = 0;
    return true;
}

static void x_bind_upstream(struct exchange *x, struct upstream *u, int index)
{
    upstream_attach(u, x_on_upstream_ready, x);
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
    x_attempt_end(x, be, OUT_ABANDON);
    if (x_try_again(x, be, METRICS_RETRY_CONNECT))
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
    uint64_t now_ms = x_now_ms(x);
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
    x_attempt_end(x, be, OUT_FAIL);
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
    x_attach_upstream(x);
}

/* Opens a new connection to backend <i> (<be>), whose slot the request holds,
 * for the attempt in progress, and binds it. */
static void x_connect_new(struct exchange *x, struct backend_rt *be, int i)
{
    const struct snap *s = x->view->snap;
    int errnum = 0;
    struct upstream *u =
        upstream_connect(x->w, be, &s->backends[i], s->be_tls ? s->be_tls[i] : NULL, &errnum);
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

/* 503 with Retry-After: the backends are busy, not broken (queue full or
 * waited too long); the connection stays open when it can. */
static void x_answer_busy(struct exchange *x, const char *why)
{
    static const char retry_after[] = "Retry-After: 1\r\n";
    lb_log(LB_LOG_WARN, "request_error", "503 for %s %s from %s: %s", x->method, x->path,
           x->peer_ip, why);
    x_answer_local(x, 503, retry_after, sizeof(retry_after) - 1, why);
}

/* Leaves the queue of backend x->q_index: the attempt ends as abandoned and
 * a slot granted meanwhile goes back. */
static void x_leave_queue(struct exchange *x, bool timed_out)
{
    struct backend_rt *be = x->view->be[x->q_index];
    if (connq_cancel(x->qw, timed_out) == CONNQ_SLOT)
        upstream_slot_release(x->w, be);
    free(x->qw);
    x->qw = NULL;
    x->qwait = false;
    x_attempt_end(x, be, OUT_ABANDON);
}

/* Picks a backend not tried yet and attaches an upstream connection, a
 * pooled one or a new one (waiting in the backend's queue when it is at its
 * connection limit). Answers the client itself when no backend can take the
 * request. */
static void x_attach_upstream(struct exchange *x)
{
    struct worker *w = x->w;
    struct wview *v = x->view;
    const struct snap *s = v->snap;
    uint64_t now_ms = x_now_ms(x);
    bool full = false;
    for (;;) {
        int k = x->tries < RETRY_MAX_TRIES ? balancer_pick_at(&v->bal, now_ms, backend_ok, x) : -1;
        if (k < 0) {
            if (full)
                x_answer_busy(x, "every backend that could take it has a full queue");
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
        be->bal.active++; /* the attempt counts from here to x_attempt_end() */
        struct upstream *u = upstream_pool_take(w, be, x->req.done);
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
                x_attempt_end(x, be, OUT_ABANDON);
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
        x_attempt_end(x, be, OUT_ABANDON);
        if (x->tries < RETRY_MAX_TRIES && x_has_elsewhere(x))
            x_attach_upstream(x);
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
static bool x_may_retry(struct exchange *x, int reason)
{
    enum retry_failure f = reason == METRICS_RETRY_5XX       ? RETRY_FAIL_5XX
                           : reason == METRICS_RETRY_TIMEOUT ? RETRY_FAIL_TIMEOUT
                           : reason == METRICS_RETRY_RESET   ? RETRY_FAIL_RESET
                                                             : RETRY_FAIL_LOCAL;
    return x_retry_action(x, f) == RETRY_BACKOFF && x_has_elsewhere(x);
}

/* After a failed attempt on <failed> (already detached): schedules another
 * on a different backend after a backoff with jitter, within the data
 * plane's retry budget. A retry that finds the budget spent waits for room,
 * a backoff at a time up to RETRY_BUDGET_WAITS times (a burst of failures,
 * such as every request in flight on a backend that died, drains through it
 * instead of failing), then gives up. Returns false when policy says no. */
static bool x_try_again(struct exchange *x, struct backend_rt *failed, int reason)
{
    struct worker *w = x->w;
    const struct snap *s = x->view->snap;
    if (!x_may_retry(x, reason))
        return false;
    METRIC_ADD(w->metrics.be[failed->stat_slot]->retries[reason], 1);
    x->budget_waits = 0;
    x->in_retry = retry_budget_try(&w->dp->budget);
    uint32_t ms = retry_backoff_ms(x->tries, s->backoff_base_ms, s->backoff_cap_ms, &w->rng);
    if (!x->in_retry)
        ms = s->backoff_cap_ms; /* waiting for room in the budget */
    x->backoff_s = ms / 1000.0;
    x->retry_wait = true;
    x->uphead_sent = 0;
    x->rearm = true; /* the backoff's timer starts */
    x->progress = true;
    return true;
}

/* The backoff before a retry is over: the retry goes, or waits again for
 * room in the budget, or fails. */
static void x_backoff_over(struct exchange *x)
{
    x->retry_wait = false;
    if (!x->in_retry) {
        x->in_retry = retry_budget_try(&x->w->dp->budget);
        if (!x->in_retry) {
            if (++x->budget_waits < RETRY_BUDGET_WAITS && !x->w->draining && x_has_elsewhere(x)) {
                x->retry_wait = true;
                x->backoff_s = x->view->snap->backoff_cap_ms / 1000.0;
                x->rearm = true;
                return;
            }
            exchange_fail(x, 502, "the backend failed and the retry budget is spent");
            return;
        }
    }
    x_attach_upstream(x);
}

/* The frontend's rate limits: false after answering 429. The RateLimit
 * header lines for the response are kept in the exchange. */
static bool x_rate_limit(struct exchange *x, const struct http1_msg *m)
{
    const struct snap *s = x->view->snap;
    x->rl_len = 0;
    if (s->rl == NULL || s->rl[x->fe_index] == NULL)
        return true;
    const char *xff = NULL;
    size_t xff_len = 0;
    for (uint32_t i = m->n_headers; i-- > 0;) {
        if (m->headers[i].id == HTTP1_H_X_FORWARDED_FOR) {
            xff = m->headers[i].value.p; /* the last line holds the nearest hops */
            xff_len = m->headers[i].value.len;
            break;
        }
    }
    struct limiter_verdict v;
    bool ok = limiter_check(s->rl[x->fe_index]->l, (const struct sockaddr *)x->peer, xff, xff_len,
                            x_now_ms(x), &v);
    x->rl_len = (uint8_t)limiter_headers(&v, x->rl_hdr, sizeof(x->rl_hdr));
    if (!ok)
        x_answer_local(x, 429, x->rl_hdr, x->rl_len, "rate limited");
    return ok;
}

void exchange_start(struct exchange *x, const struct http1_msg *m, uint32_t head_len)
{
    x->meth = m->meth;
    x->keepalive = (m->flags & HTTP1_MF_KEEP_ALIVE) && !x->w->draining;
    slice_copy(x->method, sizeof(x->method), m->method);
    slice_copy(x->path, sizeof(x->path), m->target);
    x->bytes_in += head_len;
    body_init(&x->req, m->framing, m->content_length, false);
    retry_budget_request_started(&x->w->dp->budget, x->w->id);
    x->counted = true;
    memset(&x->resp, 0, sizeof(x->resp));
    x->resp_head_done = false;
    x->need_100 = (m->flags & HTTP1_MF_EXPECT_CONTINUE) && !x->req.done;
    x->live = true;
    x->progress = true;
    /* body bytes that came with the head are checked before any backend
     * sees the request: a malformed chunk there is refused outright */
    if (body_prepare(&x->req, *x->req_in) < 0) {
        exchange_fail(x, 400, "malformed chunked request body");
        return;
    }
    if (!x_rate_limit(x, m))
        return;
    x->upgrade = x_upgrade_wanted(m);
    if (x->upgrade && x->w->n_tunnels >= x->view->snap->max_tunnels) {
        x_answer_busy(x, "too many open tunnels (limits.maxTunnels)");
        return;
    }
    if (!build_upstream_head(x, m)) {
        exchange_fail(x, 431, "request head does not fit in memory");
        return;
    }
    x_attach_upstream(x);
}

/* Whether request <m> asks for a protocol switch lb forwards: an HTTP/1.1
 * request with "Connection: upgrade", an Upgrade field naming a protocol
 * other than h2c (HTTP/2 is lb's to speak with the client, never tunnelled),
 * and no body. Any other Upgrade is dropped as hop-by-hop. */
static bool x_upgrade_wanted(const struct http1_msg *m)
{
    const uint32_t both = HTTP1_MF_UPGRADE | HTTP1_MF_CONN_UPGRADE;
    if ((m->flags & both) != both || m->minor != 1 || m->meth == HTTP1_M_CONNECT ||
        (m->framing != HTTP1_BODY_NONE &&
         !(m->framing == HTTP1_BODY_LENGTH && m->content_length == 0)))
        return false;
    for (uint32_t i = 0; i < m->n_headers; i++) {
        if (m->headers[i].id != HTTP1_H_UPGRADE)
            continue;
        const char *p = m->headers[i].value.p, *end = p + m->headers[i].value.len;
        while (p < end) {
            while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
                p++;
            const char *name = p;
            while (p < end && *p != '/' && *p != ',' && *p != ' ' && *p != '\t')
                p++;
            size_t n = (size_t)(p - name);
            if (n > 0 && !(n == 3 && strncasecmp(name, "h2c", 3) == 0))
                return true;
            while (p < end && *p != ',')
                p++;
        }
    }
    return false;
}

void exchange_note_request(struct exchange *x, const struct http1_msg *m)
{
    slice_copy(x->method, sizeof(x->method), m->method);
    slice_copy(x->path, sizeof(x->path), m->target);
}

/* ---- the response ---------------------------------------------------------- */

/* The backend switched protocols (101) for an Upgrade request: the owner
 * sends the 101 on and turns the connection into a tunnel. The attempt was a
 * success for the breaker and the effective weight, and the request leaves
 * the retry budget's count (it is answered); the backend keeps counting it in
 * flight, which keeps its runtime state, until exchange_tunnel_end(). */
static void x_switch(struct exchange *x, const struct http1_msg *m, int head_len)
{
    struct worker *w = x->w;
    struct upstream *u = x->up;
    x->status = 101;
    x->need_100 = false;
    if (!x->ops->head(x, m, false)) {
        exchange_fail(x, 502, "no memory for the response head");
        return;
    }
    x->resp_head_done = true;
    u->ep.in->start += (uint32_t)head_len;
    buf_put(&w->bufs, x->uphead);
    x->uphead = NULL;
    balancer_slot_on_success(&u->be->bal);
    if (x->bdec_valid && u->be->breaker != NULL)
        breaker_done(u->be->breaker, &x->view->snap->breaker, (enum breaker_decision)x->bdec, true,
                     x_now_ms(x));
    x->bdec_valid = false;
    if (x->in_retry) {
        retry_budget_done(&w->dp->budget);
        x->in_retry = false;
    }
    x_count(x);
    x->tunnel = true;
    w->n_tunnels++;
    METRIC_ADD(w->metrics.fe[x->fe_stat].tunnels_opened, 1);
}

static void x_parse_response(struct exchange *x)
{
    struct worker *w = x->w;
    struct upstream *u = x->up;
    const struct snap *s = x->view->snap;
    for (;;) {
        struct http1_msg m;
        memset(&m, 0, sizeof(m));
        m.headers = w->scratch_hdrs;
        m.cap_headers = w->scratch_cap;
        int n = http1_parse_response(&u->parser, u->ep.in->data + u->ep.in->start,
                                     buf_len(u->ep.in), &s->limits, x->meth, &m);
        if (n == HTTP1_INCOMPLETE) {
            if (u->ep.in->end == u->ep.in->cap) {
                buf_compact(u->ep.in);
                if (u->ep.in->end == u->ep.in->cap) {
                    struct buf *g = buf_grow(&w->bufs, u->ep.in, s->limits.max_header_bytes + 2048);
                    if (g == NULL || buf_len(u->ep.in) > s->limits.max_header_bytes) {
                        if (g != NULL)
                            u->ep.in = g;
                        exchange_fail(x, 502, "response head too large");
                        return;
                    }
                    u->ep.in = g;
                }
            }
            return;
        }
        if (n == HTTP1_INVALID) {
            exchange_fail(x, 502, m.error_reason ? m.error_reason : "malformed response");
            return;
        }
        if (m.status >= 100 && m.status < 200) {
            if (m.status == 101) {
                if (x->upgrade)
                    x_switch(x, &m, n);
                else
                    exchange_fail(x, 502, "backend switched protocols unasked");
                return;
            }
            /* we answer 100 ourselves; the owner passes other interim answers on
             * where its protocol can carry them */
            if (m.status != 100 && !x->ops->head(x, &m, true)) {
                exchange_fail(x, 502, "no memory for the response head");
                return;
            }
            u->ep.in->start += (uint32_t)n;
            http1_parser_init(&u->parser);
            continue;
        }
        if ((m.status == 502 || m.status == 503 || m.status == 504) &&
            x_may_retry(x, METRICS_RETRY_5XX)) {
            struct backend_rt *be = u->be;
            lb_log(LB_LOG_WARN, "upstream_5xx", "backend %s answered %u to %s %s: retrying", be->id,
                   m.status, x->method, x->path);
            x_drop_upstream(x, x->view->snap->breaker_ignore_5xx ? OUT_OK : OUT_FAIL);
            x_try_again(x, be, METRICS_RETRY_5XX);
            return;
        }
        x->status = m.status;
        x->need_100 = false;
        bool dechunk = m.framing == HTTP1_BODY_CHUNKED && x->dechunk_resp;
        body_init(&x->resp, m.framing, m.content_length, dechunk);
        u->ep.in->start += (uint32_t)n;
        u->keepalive = (m.flags & HTTP1_MF_KEEP_ALIVE) != 0;
        x->resp_head_done = true;
        x->resp.ready = 0;
        if (!x->ops->head(x, &m, false)) {
            exchange_fail(x, 502, "no memory for the response head");
            return;
        }
        if (x->uphead && x->uphead_sent == buf_len(x->uphead)) {
            buf_put(&w->bufs, x->uphead);
            x->uphead = NULL;
        }
        return;
    }
}

/* Sends the request head and body bytes to the backend. */
static void x_write_upstream(struct exchange *x)
{
    struct upstream *u = x->up;
    if (u == NULL || !u->connected || u->wr_failed)
        return;
    struct iovec iov[2];
    int cnt = 0;
    uint32_t head_left = x->uphead ? buf_len(x->uphead) - x->uphead_sent : 0;
    if (head_left) {
        iov[cnt].iov_base = x->uphead->data + x->uphead->start + x->uphead_sent;
        iov[cnt++].iov_len = head_left;
    }
    struct buf *in = *x->req_in;
    if (!x->req.done && in) {
        if (body_prepare(&x->req, in) < 0) {
            exchange_fail(x, 400, "malformed chunked request body");
            return;
        }
        if (x->req.ready && !x->need_100) {
            iov[cnt].iov_base = in->data + in->start;
            iov[cnt++].iov_len = x->req.ready;
        }
    }
    if (cnt == 0)
        return;
    ssize_t n = endpoint_writev(&u->ep, iov, cnt);
    if (n == TRANSPORT_WANT_WRITE || n == TRANSPORT_AGAIN)
        return; /* TLS: AGAIN, the handshake waits for the backend */
    if (n < 0 && u->tls && !u->tls_done) {
        const char *why = tls_transport_error(&u->ep.tr);
        x_upstream_failed(x, why[0] ? why : "TLS handshake with the backend failed");
        return;
    }
    if (n < 0) {
        /* keep reading: the backend may have answered before it closed */
        u->wr_failed = true;
        x->progress = true;
        return;
    }
    u->tls_done = true;
    x->progress = true;
    uint32_t h = (uint32_t)n < head_left ? (uint32_t)n : head_left;
    x->uphead_sent += h;
    uint32_t body = (uint32_t)n - h;
    if (body) {
        body_consumed(&x->req, in, body);
        x->body_sent += body;
        x->bytes_in += body;
    }
}

static void x_read_upstream(struct exchange *x)
{
    struct upstream *u = x->up;
    if (u == NULL || !u->connected || !u->ep.readable || u->ep.eof)
        return;
    ssize_t n = endpoint_read(&u->ep, &x->w->bufs);
    if (n == ENDPOINT_NOMEM) {
        exchange_fail(x, 502, "no memory for the response");
    } else if (n == TRANSPORT_ERROR && u->tls && !u->tls_done) {
        const char *why = tls_transport_error(&u->ep.tr);
        x_upstream_failed(x, why[0] ? why : "TLS handshake with the backend failed");
    } else if (n > 0) {
        u->tls_done = true;
        u->got_bytes = true;
        x->progress = true;
    } else if (n == 0 || n == TRANSPORT_ERROR) {
        x->progress = true;
    }
}

/* A backend's chunked body does not parse: a 502 while the client has had
 * nothing of the response (its head waits in the owner's output), else only
 * a close. */
static void x_bad_upstream_body(struct exchange *x)
{
    lb_log(LB_LOG_WARN, "upstream_bad_body", "malformed chunked body from backend %s",
           x->up->be->id);
    if (x->bytes_out == 0) {
        x->resp_head_done = false;
        exchange_fail(x, 502, "malformed chunked body from the backend");
        return;
    }
    x_log(x, NULL, NULL);
    x_drop_upstream(x, OUT_FAIL);
    x->live = false;
    x->progress = true;
    x->ops->abort(x);
}

/* The upstream failed or closed before a response head: retry or answer. */
static void x_upstream_failed(struct exchange *x, const char *why)
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
        struct upstream *nu =
            upstream_connect(w, be, &snap->backends[x->be_index],
                             snap->be_tls ? snap->be_tls[x->be_index] : NULL, &errnum);
        if (nu != NULL) {
            upstream_attach(nu, x_on_upstream_ready, x);
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
    x_drop_upstream(x, OUT_FAIL);
    if (!x_try_again(x, be, METRICS_RETRY_RESET))
        exchange_fail(x, 502, why);
}

static void x_check_connect(struct exchange *x)
{
    struct upstream *u = x->up;
    if (u == NULL || u->connected || !u->ep.writable)
        return;
    int soerr = 0;
    socklen_t len = sizeof(soerr);
    if (getsockopt(u->ep.tr.fd, SOL_SOCKET, SO_ERROR, &soerr, &len) == -1)
        soerr = errno;
    if (soerr == 0) {
        /* still in progress unless the socket became writable */
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        if (getpeername(u->ep.tr.fd, (struct sockaddr *)&ss, &sl) == 0) {
            u->connected = true;
            x->progress = true;
        }
        return;
    }
    x->progress = true;
    x_upstream_failed(x, strerror(soerr));
}

/* ---- driving it ------------------------------------------------------------- */

void exchange_init(struct exchange *x, const struct exchange_ops *ops, struct worker *w)
{
    x->ops = ops;
    x->w = w;
    x->reject = -1;
}

void exchange_reset(struct exchange *x, double now)
{
    x->upgrade = false;
    x->tunnel = false;
    x->meth = HTTP1_M_OTHER;
    x->method[0] = x->path[0] = x->req_id[0] = '\0';
    x->bytes_in = x->bytes_out = 0;
    x->status = 0;
    x->reject = -1;
    x->tries = 0;
    x->resp_head_done = false;
    x->body_sent = 0;
    x->t_start = now;
}

void exchange_send(struct exchange *x)
{
    x_check_connect(x);
    if (!x->live || x->up == NULL || !x->up->connected)
        return;
    if (!x->req.done && x->need_100 && x->uphead && x->uphead_sent == buf_len(x->uphead) &&
        x->ops->send_continue(x))
        x->need_100 = false;
    x_write_upstream(x);
}

void exchange_receive(struct exchange *x)
{
    x_read_upstream(x);
    if (!x->live || x->up == NULL || x->resp_head_done)
        return;
    struct upstream *u = x->up; /* a failed handshake may have replaced it */
    if (buf_len(u->ep.in))
        x_parse_response(x);
    if (x->live && !x->resp_head_done && x->up != NULL && x->up->ep.eof)
        x_upstream_failed(x, x->up->got_bytes ? "backend closed mid response head"
                                              : "backend closed the connection");
}

int exchange_resp_body(struct exchange *x, struct iovec *iov)
{
    struct upstream *u = x->up;
    if (u == NULL || !x->resp_head_done || x->resp.done || u->ep.in == NULL)
        return 0;
    if (body_prepare(&x->resp, u->ep.in) < 0) {
        x_bad_upstream_body(x);
        return -1;
    }
    if (x->resp.ready == 0)
        return 0;
    iov->iov_base = u->ep.in->data + u->ep.in->start;
    iov->iov_len = x->resp.ready;
    return 1;
}

void exchange_resp_sent(struct exchange *x, uint32_t n)
{
    body_consumed(&x->resp, x->up->ep.in, n);
}

bool exchange_resp_complete(struct exchange *x)
{
    struct upstream *u = x->up;
    bool drained = u->ep.eof && buf_len(u->ep.in) == 0;
    if (x->resp.framing == HTTP1_BODY_CLOSE && drained)
        x->resp.done = true;
    if (!x->resp.done && drained && x->resp.ready == 0) {
        lb_log(LB_LOG_WARN, "upstream_truncated", "backend %s closed mid response body", u->be->id);
        x_log(x, NULL, NULL);
        x_drop_upstream(x, OUT_FAIL);
        x->live = false;
        x->ops->abort(x);
        return false;
    }
    return x->resp.done;
}

void exchange_finish(struct exchange *x)
{
    struct worker *w = x->w;
    struct upstream *u = x->up;
    x_log(x, NULL, NULL);
    bool reusable = u->keepalive && !u->wr_failed && x->req.done && x->resp.done &&
                    x->resp.framing != HTTP1_BODY_CLOSE && !u->ep.eof;
    bool failed = x->status >= 500 && !x->view->snap->breaker_ignore_5xx;
    x_attempt_end(x, u->be, failed ? OUT_FAIL : OUT_OK);
    x->up = NULL;
    upstream_release(w, u, reusable);
    buf_put(&w->bufs, x->uphead);
    x->uphead = NULL;
    x->live = false;
}

void exchange_check_bodies(struct exchange *x)
{
    if (!x->live || x->up == NULL)
        return;
    if (!x->req.done && *x->req_in != NULL && body_prepare(&x->req, *x->req_in) < 0)
        exchange_fail(x, 400, "malformed chunked request body");
    else if (x->resp_head_done && !x->resp.done && x->up->ep.in != NULL &&
             body_prepare(&x->resp, x->up->ep.in) < 0)
        x_bad_upstream_body(x);
}

uint8_t exchange_wait(const struct exchange *x, bool out_pending)
{
    const struct upstream *u = x->up;
    if (u == NULL)
        return x->retry_wait ? TP_BACKOFF : x->qwait ? TP_QUEUE : TP_CLIENT;
    if (!u->connected)
        return TP_CONNECT;
    if (!x->resp_head_done)
        return (!x->req.done && x->req.ready == 0 && !x->need_100) ? TP_CLIENT : TP_RESPONSE;
    if (out_pending || x->resp.ready)
        return TP_CLIENT;
    return TP_UPSTREAM;
}

double exchange_wait_seconds(const struct exchange *x, uint8_t phase)
{
    const struct snap_timeouts *t = &x->view->snap->timeouts;
    switch (phase) {
    case TP_IDLE:
        return t->keepalive / 1000.0;
    case TP_HEAD:
        return t->client_header / 1000.0;
    case TP_LINGER:
        return TP_LINGER_SECONDS;
    case TP_CLIENT:
        return t->client_body / 1000.0;
    case TP_CONNECT:
        return t->upstream_connect / 1000.0;
    case TP_RESPONSE:
        return t->upstream_header / 1000.0;
    case TP_UPSTREAM:
        return t->upstream_idle / 1000.0;
    case TP_BACKOFF:
        return x->backoff_s > 0.001 ? x->backoff_s : 0.001;
    case TP_QUEUE:
        return t->queue / 1000.0;
    case TP_TUNNEL:
        return t->tunnel_idle / 1000.0;
    default:
        return 0;
    }
}

void exchange_arm(struct exchange *x)
{
    struct upstream *u = x->up;
    if (u == NULL)
        return;
    if (!u->connected) {
        endpoint_set_events(x->w->loop, &u->ep, EV_WRITE);
        return;
    }
    int want = 0;
    uint32_t head_left = x->uphead ? buf_len(x->uphead) - x->uphead_sent : 0;
    if (!u->wr_failed && (head_left || (x->req.ready && !x->need_100)))
        want |= EV_WRITE;
    if (!u->ep.eof && !x->resp.done && (u->ep.in == NULL || buf_len(u->ep.in) < u->ep.in->cap))
        want |= EV_READ;
    endpoint_arm(x->w->loop, &u->ep, want);
}

/* The backend did not answer in time: a retry elsewhere when the rule allows,
 * else 504. */
static void x_response_timeout(struct exchange *x)
{
    if (x->up != NULL) {
        struct backend_rt *be = x->up->be;
        METRIC_ADD(x->w->metrics.be[be->stat_slot]->timeouts, 1);
        if (x_may_retry(x, METRICS_RETRY_TIMEOUT)) {
            lb_log(LB_LOG_WARN, "upstream_timeout", "backend %s did not answer in time: retrying",
                   be->id);
            x_drop_upstream(x, OUT_FAIL);
            if (!x_try_again(x, be, METRICS_RETRY_TIMEOUT))
                exchange_fail(x, 504, "backend did not answer in time (retry budget spent)");
            return;
        }
    }
    exchange_fail(x, 504, "backend did not answer in time");
}

bool exchange_on_timeout(struct exchange *x, uint8_t phase, bool out_pending)
{
    switch (phase) {
    case TP_CONNECT:
        x_upstream_failed(x, "connect timed out");
        return false;
    case TP_RESPONSE:
        x_response_timeout(x);
        return false;
    case TP_BACKOFF:
        x_backoff_over(x);
        return false;
    case TP_QUEUE:
        x_leave_queue(x, true);
        x_answer_busy(x, "waited too long for a connection to the backend (timeouts.queue)");
        return false;
    case TP_CLIENT:
        if (!x->resp_head_done && !out_pending) {
            exchange_fail(x, 408, "client body too slow");
            return false;
        }
        x->status = x->status ? x->status : 408;
        x_log(x, NULL, NULL);
        x_drop_upstream(x, OUT_ABANDON);
        x->live = false;
        return true;
    case TP_UPSTREAM:
        if (x->up)
            METRIC_ADD(x->w->metrics.be[x->up->be->stat_slot]->timeouts, 1);
        lb_log(LB_LOG_WARN, "upstream_idle_timeout", "backend %s stalled mid response",
               x->up ? x->up->be->id : "-");
        x_log(x, NULL, NULL);
        x_drop_upstream(x, OUT_FAIL);
        x->live = false;
        return true;
    default:
        return true;
    }
}

void exchange_abandon(struct exchange *x, unsigned status)
{
    if (x->tunnel) {
        exchange_tunnel_end(x, "the client connection failed");
        return;
    }
    x_drop_upstream(x, OUT_ABANDON);
    if (status != 0) {
        x->status = (uint16_t)status;
        x_log(x, NULL, NULL);
    }
    x->live = false;
}

void exchange_tunnel_end(struct exchange *x, const char *why)
{
    struct worker *w = x->w;
    struct upstream *u = x->up;
    if (!x->tunnel)
        return;
    x->tunnel = false;
    x_access_log(x, NULL, why);
    u->be->bal.active--;
    x->up = NULL;
    upstream_detach(u);
    upstream_free(u);
    w->n_tunnels--;
    METRIC_ADD(w->metrics.fe[x->fe_stat].tunnels_closed, 1);
    x->live = false;
}

void exchange_close(struct exchange *x)
{
    if (x->tunnel) {
        exchange_tunnel_end(x, NULL);
        return;
    }
    if ((x->up != NULL || x->qwait || x->retry_wait) && x->status == 0)
        x->status = 499; /* closed with a request in flight */
    if (x->counted)
        x_log(x, NULL, NULL);
    if (x->qwait)
        x_leave_queue(x, false);
    x_drop_upstream(x, OUT_ABANDON);
    buf_put(&x->w->bufs, x->uphead);
    x->uphead = NULL;
    x->live = false;
}
