/* dataplane/exchange_end.c: how an exchange's attempts and the exchange
 * itself end — the attempt's outcome for the breaker and the effective
 * weight, answers of lb's own (through the owner's ops), the counters and
 * the access-log line. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dp.h"
#include "exchange.h"
#include "exchange_int.h"
#include "lb_log.h"
#include "upstream.h"
#include "worker_types.h"

static const struct snap_frontend *x_frontend(const struct exchange *x)
{
    return &x->view->snap->frontends[x->fe_index];
}

/* Counts the request in the metrics and ends its share of the retry budget. */
void exchange__count(struct exchange *x)
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
    metrics_request(&w->metrics, x->fe_stat, be_slot, x->h2 ? METRICS_H2 : METRICS_HTTP1, x->status,
                    dur_us);
    if (x->reject >= 0 && x->fe_stat < w->metrics.n_fe)
        METRIC_ADD(w->metrics.fe[x->fe_stat].rejected[x->reject], 1);
}

/* The access-log line: <backend> names it when no upstream is attached. */
void exchange__access_log(struct exchange *x, const char *backend, const char *why)
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
    lb_logbuf_cstr(w->log, "protocol",
                   x->h2             ? "HTTP/2.0"
                   : x->dechunk_resp ? "HTTP/1.0"
                                     : "HTTP/1.1");
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

void exchange__log(struct exchange *x, const char *backend, const char *why)
{
    exchange__count(x);
    exchange__access_log(x, backend, why);
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

/* Ends the attempt in progress on <be>: its breaker and effective weight learn
 * the outcome, a retry gives its budget slot back. */
void exchange__attempt_end(struct exchange *x, struct backend_rt *be, enum outcome o)
{
    const struct snap *s = x->view->snap;
    be->bal.active--;
    metrics_be_active(&x->w->metrics, be->stat_slot, false);
    if (o == OUT_OK)
        balancer_slot_on_success(&be->bal);
    else if (o == OUT_FAIL)
        balancer_slot_on_failure(&be->bal);
    if (x->bdec_valid && be->breaker != NULL) {
        /* an abandoned trial must still free its slot: it counts as failed */
        if (o != OUT_ABANDON || x->bdec == BREAKER_TRIAL)
            breaker_done(be->breaker, &s->breaker, (enum breaker_decision)x->bdec, o == OUT_OK,
                         exchange__now_ms(x));
    }
    x->bdec_valid = false;
    if (x->in_retry) {
        retry_budget_done(&x->w->dp->budget);
        x->in_retry = false;
    }
}

/* Detaches the upstream after a failure: it is closed, never pooled. */
void exchange__drop_upstream(struct exchange *x, enum outcome o)
{
    if (x->up == NULL)
        return;
    struct upstream *u = x->up;
    exchange__attempt_end(x, u->be, o);
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
        exchange__log(x, NULL, why);
        exchange__drop_upstream(x, o);
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
    exchange__log(x, be ? be->id : NULL, why);
    exchange__drop_upstream(x, o);
    buf_put(&w->bufs, x->uphead);
    x->uphead = NULL;
    x->live = false;
    x->progress = true;
}

/* Answers <status> ourselves without blaming the request's framing (429,
 * a busy 503): the client's connection may stay open for the next request.
 * <extra> holds header lines. */
void exchange__answer_local(struct exchange *x, unsigned status, const char *extra,
                            size_t extra_len, const char *why)
{
    x->status = (uint16_t)status;
    x->reject = reject_of(status);
    size_t n = x->ops->answer(x, status, extra, extra_len, false);
    if (lb_log_enabled(LB_LOG_DEBUG))
        lb_log(LB_LOG_DEBUG, "request_answered", "%u for %s %s from %s: %s", status, x->method,
               x->path, x->peer_ip, why);
    x->bytes_out += n;
    exchange__log(x, NULL, why);
    buf_put(&x->w->bufs, x->uphead);
    x->uphead = NULL;
    x->live = false;
    x->progress = true;
}

/* 503 with Retry-After: the backends are busy, not broken (queue full or
 * waited too long); the connection stays open when it can. */
void exchange__answer_busy(struct exchange *x, const char *why)
{
    static const char retry_after[] = "Retry-After: 1\r\n";
    lb_log(LB_LOG_WARN, "request_error", "503 for %s %s from %s: %s", x->method, x->path,
           x->peer_ip, why);
    exchange__answer_local(x, 503, retry_after, sizeof(retry_after) - 1, why);
}
