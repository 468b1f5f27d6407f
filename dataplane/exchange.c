/* dataplane/exchange.c: one proxied request and its response. */
#include "exchange.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "dp.h"
#include "exchange_int.h"
#include "lb_err.h"
#include "lb_log.h"
#include "rewrite.h"
#include "tls.h"
#include "upstream.h"
#include "worker_types.h"

static bool x_upgrade_wanted(const struct http1_msg *m);

static void slice_copy(char *dst, size_t cap, struct http1_slice s)
{
    size_t n = s.p == NULL ? 0 : s.len < cap - 1 ? s.len : cap - 1;
    if (n > 0)
        memcpy(dst, s.p, n);
    dst[n] = '\0';
}

/* Writes the rewritten request head for the backend into x->uphead. */
static bool build_upstream_head(struct exchange *x, const struct http1_msg *m)
{
    struct worker *w = x->w;
    struct rewrite_request rq = {.msg = m,
                                 .client_ip = x->peer_ip,
                                 .tls = x->tls_tr != NULL,
                                 .upgrade = x->upgrade,
                                 .now_ms = exchange__now_ms(x),
                                 .rng = &w->rng};
    const struct tls_peer *p = x->tls_tr != NULL ? tls_peer_identity(x->tls_tr) : NULL;
    struct rewrite_identity id;
    if (p != NULL) {
        id = (struct rewrite_identity){p->verified, p->subject, p->san_uri, p->fingerprint};
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
    /* the head stays until the answer starts (a retry sends it again): a
     * few hundred bytes should not hold a whole pool buffer that long */
    x->uphead = buf_fit(&w->bufs, b);
    x->uphead_sent = 0;
    return true;
}

/* The frontend's rate limits: false after answering 429. The RateLimit
 * header lines for the response are kept in the exchange. */
static bool x_rate_limit(struct exchange *x, const struct http1_msg *m)
{
    const struct snap *s = x->view->snap;
    x->rl_len = 0;
    struct limiter *rl = fshared_limiter(s->fshared, x->fe_index);
    if (rl == NULL)
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
    bool ok =
        limiter_check(rl, (const struct sockaddr *)x->peer, xff, xff_len, exchange__now_ms(x), &v);
    x->rl_len = (uint8_t)limiter_headers(&v, x->rl_hdr, sizeof(x->rl_hdr));
    if (!ok)
        exchange__answer_local(x, 429, x->rl_hdr, x->rl_len, "rate limited");
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
        exchange__answer_busy(x, "too many open tunnels (limits.maxTunnels)");
        return;
    }
    if (!build_upstream_head(x, m)) {
        exchange_fail(x, 431, "request head does not fit in memory");
        return;
    }
    exchange__attach_upstream(x);
}

/* Whether request <m> asks for a protocol switch lb forwards: an HTTP/1.1
 * request with "Connection: upgrade", an Upgrade field naming protocols none
 * of which is h2c (HTTP/2 is lb's to speak with the client, never tunnelled:
 * a list that offers it is not forwarded at all, lest the backend pick it),
 * and no body. Any other Upgrade is dropped as hop-by-hop. */
static bool x_upgrade_wanted(const struct http1_msg *m)
{
    const uint32_t both = HTTP1_MF_UPGRADE | HTTP1_MF_CONN_UPGRADE;
    if ((m->flags & both) != both || m->minor != 1 || m->meth == HTTP1_M_CONNECT ||
        (m->framing != HTTP1_BODY_NONE &&
         !(m->framing == HTTP1_BODY_LENGTH && m->content_length == 0)))
        return false;
    bool named = false;
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
            if (n == 3 && strncasecmp(name, "h2c", 3) == 0)
                return false;
            named = named || n > 0;
            while (p < end && *p != ',')
                p++;
        }
    }
    return named;
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
                     exchange__now_ms(x));
    x->bdec_valid = false;
    if (x->in_retry) {
        retry_budget_done(&w->dp->budget);
        x->in_retry = false;
    }
    exchange__count(x);
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
            exchange__may_retry(x, METRICS_RETRY_5XX)) {
            struct backend_rt *be = u->be;
            lb_log(LB_LOG_WARN, "upstream_5xx", "backend %s answered %u to %s %s: retrying", be->id,
                   m.status, x->method, x->path);
            exchange__drop_upstream(x, x->view->snap->breaker_ignore_5xx ? OUT_OK : OUT_FAIL);
            exchange__try_again(x, be, METRICS_RETRY_5XX);
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
        exchange__upstream_failed(x, why[0] ? why : "TLS handshake with the backend failed");
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
        exchange__upstream_failed(x, why[0] ? why : "TLS handshake with the backend failed");
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
    exchange__log(x, NULL, NULL);
    exchange__drop_upstream(x, OUT_FAIL);
    x->live = false;
    x->progress = true;
    x->ops->abort(x);
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
    exchange__upstream_failed(x, strerror(soerr));
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
        exchange__upstream_failed(x, x->up->got_bytes ? "backend closed mid response head"
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
        exchange__log(x, NULL, NULL);
        exchange__drop_upstream(x, OUT_FAIL);
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
    exchange__log(x, NULL, NULL);
    bool reusable = u->keepalive && !u->wr_failed && x->req.done && x->resp.done &&
                    x->resp.framing != HTTP1_BODY_CLOSE && !u->ep.eof;
    bool failed = x->status >= 500 && !x->view->snap->breaker_ignore_5xx;
    exchange__attempt_end(x, u->be, failed ? OUT_FAIL : OUT_OK);
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
        if (exchange__may_retry(x, METRICS_RETRY_TIMEOUT)) {
            lb_log(LB_LOG_WARN, "upstream_timeout", "backend %s did not answer in time: retrying",
                   be->id);
            exchange__drop_upstream(x, OUT_FAIL);
            if (!exchange__try_again(x, be, METRICS_RETRY_TIMEOUT))
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
        exchange__upstream_failed(x, "connect timed out");
        return false;
    case TP_RESPONSE:
        x_response_timeout(x);
        return false;
    case TP_BACKOFF:
        exchange__backoff_over(x);
        return false;
    case TP_QUEUE:
        exchange__leave_queue(x, true);
        exchange__answer_busy(x,
                              "waited too long for a connection to the backend (timeouts.queue)");
        return false;
    case TP_CLIENT:
        if (!x->resp_head_done && !out_pending) {
            exchange_fail(x, 408, "client body too slow");
            return false;
        }
        x->status = x->status ? x->status : 408;
        exchange__log(x, NULL, NULL);
        exchange__drop_upstream(x, OUT_ABANDON);
        x->live = false;
        return true;
    case TP_UPSTREAM:
        if (x->up)
            METRIC_ADD(x->w->metrics.be[x->up->be->stat_slot]->timeouts, 1);
        lb_log(LB_LOG_WARN, "upstream_idle_timeout", "backend %s stalled mid response",
               x->up ? x->up->be->id : "-");
        exchange__log(x, NULL, NULL);
        exchange__drop_upstream(x, OUT_FAIL);
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
    exchange__drop_upstream(x, OUT_ABANDON);
    if (status != 0) {
        x->status = (uint16_t)status;
        exchange__log(x, NULL, NULL);
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
    exchange__access_log(x, NULL, why);
    u->be->bal.active--;
    metrics_be_active(&w->metrics, u->be->stat_slot, false);
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
        exchange__log(x, NULL, NULL);
    if (x->qwait)
        exchange__leave_queue(x, false);
    exchange__drop_upstream(x, OUT_ABANDON);
    buf_put(&x->w->bufs, x->uphead);
    x->uphead = NULL;
    x->live = false;
}
