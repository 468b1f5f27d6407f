/* dataplane/h1session.c: the HTTP/1.1 client session.
 *
 * One function, h1_run(), moves a connection as far as it can go each time
 * its socket (or its exchange's upstream socket) is ready: read a head, hand
 * it to the exchange, feed the exchange the request body, write the response
 * it produces, then the next request. Sockets are read and written
 * speculatively (until EAGAIN) and watched only for what is blocked. */
#include "h1session.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "endpoint.h"
#include "exchange.h"
#include "h2session.h"
#include "lb_err.h"
#include "lb_log.h"
#include "limiter.h"
#include "proxyproto.h"
#include "tls.h"
#include "tunnel.h"
#include "upstream.h"
#include "view.h"
#include "worker_types.h"

enum h1_state {
    CS_IDLE = 0, /* keep-alive: no request, no buffer */
    CS_PPHDR,    /* waiting for the PROXY protocol header (before a TLS handshake) */
    CS_HEAD,     /* reading a request head */
    CS_PROXY,    /* a request is being proxied by the exchange */
    CS_LINGER,   /* answered and closed for writing; reading what is left */
    CS_REPLY,    /* sending an answer of our own; then the next request */
    CS_TUNNEL,   /* a backend switched protocols (101): bytes both ways */
};

struct h1session {
    struct worker *w;
    struct lb_list link;         /* in the worker's sessions */
    struct h1session *free_next; /* in its free list, once closed */
    struct endpoint ep;          /* ep.in: client bytes */
    ev_timer timer;
    uint8_t tphase; /* enum timer_phase the timer runs for */
    uint8_t state;
    uint8_t minor;       /* HTTP/1.<minor> of the request in progress */
    bool progress;       /* the current run moved something */
    bool shut;           /* our sending side is closed */
    bool tls_pending;    /* no application byte read yet: the handshake may be running */
    bool closing;        /* close once the current response is out */
    bool drain_wait;     /* CS_IDLE in a drain: one more request may come within
                          * <drain_cap> seconds */
    bool fresh;          /* accepted, no request byte yet */
    double drain_cap;    /* drain_wait: w->drain_idle_s (after a hand-over) or, for a
                          * fresh connection, the client head timeout */
    bool resp_keepalive; /* the response in progress leaves the connection open */
    bool pp_listed;      /* CS_PPHDR: the source is listed, a header must come */
    bool local_known;    /* <local> is filled in */
    bool h2_checked;     /* whether the connection speaks HTTP/2 was decided */
    uint16_t pp_have;    /* CS_PPHDR: bytes of a header taken so far, in <pp> */
    uint8_t *pp;         /* ... (a header that came in pieces), or NULL */
    char peer_ip[INET6_ADDRSTRLEN];
    struct sockaddr_storage peer;
    struct sockaddr_storage local; /* the address the client reached */
    struct buf *out;               /* our bytes to the client: response head, 100, answers */
    struct http1_parser parser;
    struct exchange x; /* the request in progress; x.view is the session's view */
    struct tunnel tun; /* CS_TUNNEL: the client and x.up's endpoint */
    uint64_t tun_in;   /* tunnel bytes counted in the metrics so far, each way */
    uint64_t tun_out;
};

static void h1_run(struct h1session *c);
static void h1_close(struct h1session *c);
static bool h1_maybe_h2(struct h1session *c, bool first_tls);
static bool h1_follow_view(struct h1session *c);

static struct h1session *h1_of(struct exchange *x)
{
    return (struct h1session *)((char *)x - offsetof(struct h1session, x));
}

static const struct snap_frontend *h1_frontend(const struct h1session *c)
{
    return &c->x.view->snap->frontends[c->x.fe_index];
}

static void h1_set_view(struct h1session *c, struct wview *v, uint32_t fe_index)
{
    c->x.view = v;
    c->x.fe_index = fe_index;
    c->x.fe_stat = v->fe_stat[fe_index];
}

/* ---- what the exchange asks of its session -------------------------------------- */

static void h1_on_wake(struct exchange *x)
{
    struct h1session *c = h1_of(x);
    if (c->ep.tr.fd >= 0)
        h1_run(c);
}

/* The response head in HTTP/1.1 (an HTTP/1.0 client gets 1.1 with its body
 * dechunked and the connection closed after it, or kept alive by name). */
static bool h1_on_head(struct exchange *x, const struct http1_msg *m, bool interim)
{
    struct h1session *c = h1_of(x);
    struct worker *w = c->w;
    if (interim && c->minor != 1)
        return true;                               /* an HTTP/1.0 client knows no interim answers */
    bool switching = !interim && m->status == 101; /* an Upgrade the exchange forwards */
    if (!interim)
        c->resp_keepalive = x->keepalive && !c->closing && !w->draining &&
                            m->framing != HTTP1_BODY_CLOSE && !x->resp.dechunk;
    size_t need = 128 + LIMITER_HEADERS_MAX + m->reason.len;
    for (uint32_t i = 0; i < m->n_headers; i++)
        need += m->headers[i].name.len + m->headers[i].value.len + 4;
    if (c->out == NULL)
        c->out = buf_get(&w->bufs);
    if (c->out == NULL)
        return false;
    buf_compact(c->out);
    if (c->out->cap - c->out->end < need) {
        struct buf *g = buf_grow(&w->bufs, c->out, (uint32_t)(need + buf_len(c->out)));
        if (g == NULL)
            return false;
        c->out = g;
    }
    struct buf *b = c->out;
    char line[64];
    int n = snprintf(line, sizeof(line), "HTTP/1.1 %u ", m->status);
    buf_append(b, line, (size_t)n);
    if (m->reason.len > 0)
        buf_append(b, m->reason.p, m->reason.len);
    else
        buf_appends(b, http1_reason(m->status));
    buf_appends(b, "\r\n");
    for (uint32_t i = 0; i < m->n_headers; i++) {
        const struct http1_header *h = &m->headers[i];
        if ((h->flags & HTTP1_HF_HOP) && !(switching && h->id == HTTP1_H_UPGRADE))
            continue;
        if (x->resp.dechunk && h->id == HTTP1_H_TRANSFER_ENCODING)
            continue;
        buf_append(b, h->name.p, h->name.len);
        buf_appends(b, ": ");
        buf_append(b, h->value.p, h->value.len);
        buf_appends(b, "\r\n");
    }
    if ((m->flags & HTTP1_MF_CL_CANONICAL) && m->framing == HTTP1_BODY_LENGTH) {
        n = snprintf(line, sizeof(line), "Content-Length: %llu\r\n",
                     (unsigned long long)m->content_length);
        buf_append(b, line, (size_t)n);
    }
    if (switching) {
        buf_appends(b, "Connection: upgrade\r\n");
    } else if (!interim) {
        buf_append(b, x->rl_hdr, x->rl_len);
        if (!c->resp_keepalive)
            buf_appends(b, "Connection: close\r\n");
        else if (c->minor == 0)
            buf_appends(b, "Connection: keep-alive\r\n");
    }
    return buf_appends(b, "\r\n");
}

/* An answer of ours: a short text body. <close> (an error): the connection
 * closes after it, lingering so that the answer is not lost to a reset while
 * the client still sends. Else it stays open for the next request when
 * nothing of this one is left unread and the client keeps it alive. */
static size_t h1_on_answer(struct exchange *x, unsigned status, const char *extra, size_t extra_len,
                           bool close)
{
    struct h1session *c = h1_of(x);
    struct worker *w = c->w;
    bool keep = !close && x->keepalive && x->req.done && !c->closing && !w->draining;
    c->progress = true;
    if (c->out == NULL)
        c->out = buf_get(&w->bufs);
    if (c->out == NULL) {
        c->closing = true;
        c->state = CS_LINGER;
        return 0;
    }
    if (close)
        c->out->start = c->out->end = 0; /* what was queued (a 100) is moot */
    else
        buf_compact(c->out);
    const char *reason = http1_reason(status);
    char body[96];
    int bl = snprintf(body, sizeof(body), "%u %s\n", status, reason);
    char head[160];
    int hl = snprintf(head, sizeof(head),
                      "HTTP/1.1 %u %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n",
                      status, reason, bl);
    uint32_t before = buf_len(c->out);
    buf_append(c->out, head, (size_t)hl);
    if (extra_len > 0)
        buf_append(c->out, extra, extra_len);
    if (!keep)
        buf_appends(c->out, "Connection: close\r\n");
    else if (c->minor == 0)
        buf_appends(c->out, "Connection: keep-alive\r\n");
    buf_appends(c->out, "\r\n");
    if (x->meth != HTTP1_M_HEAD)
        buf_append(c->out, body, (size_t)bl);
    c->closing = !keep;
    c->state = close ? CS_LINGER : CS_REPLY;
    return buf_len(c->out) - before;
}

static void h1_on_abort(struct exchange *x)
{
    struct h1session *c = h1_of(x);
    c->closing = true;
    c->state = CS_LINGER;
    c->progress = true;
}

static bool h1_on_continue(struct exchange *x)
{
    struct h1session *c = h1_of(x);
    if (c->out == NULL)
        c->out = buf_get(&c->w->bufs);
    return c->out && buf_appends(c->out, "HTTP/1.1 100 Continue\r\n\r\n");
}

static const struct sockaddr_storage *h1_on_local(struct exchange *x)
{
    struct h1session *c = h1_of(x);
    return endpoint_local(&c->ep, &c->local, &c->local_known);
}

static const struct exchange_ops h1_exchange_ops = {
    .wake = h1_on_wake,
    .head = h1_on_head,
    .answer = h1_on_answer,
    .abort = h1_on_abort,
    .send_continue = h1_on_continue,
    .local = h1_on_local,
};

/* ---- request heads ------------------------------------------------------------- */

static void h1_parse_head(struct h1session *c)
{
    struct worker *w = c->w;
    if (!h1_follow_view(c)) {
        exchange_fail(&c->x, 503, "the frontend was removed");
        return;
    }
    const struct snap *s = c->x.view->snap;
    struct buf *in = c->ep.in;
    struct http1_msg m;
    memset(&m, 0, sizeof(m));
    m.headers = w->scratch_hdrs;
    m.cap_headers = w->scratch_cap;
    int n = http1_parse_request(&c->parser, in->data + in->start, buf_len(in), &s->limits, &m);
    if (n == HTTP1_INCOMPLETE) {
        if (c->ep.eof) {
            if (buf_len(in) > 0)
                exchange_fail(&c->x, 400, "connection closed in the middle of a request head");
            else
                c->closing = true;
        } else if (in->end == in->cap) {
            buf_compact(in);
            if (in->end == in->cap) {
                struct buf *g = buf_grow(&w->bufs, in, s->limits.max_header_bytes + 2048);
                if (g == NULL)
                    exchange_fail(&c->x, 431, "request head does not fit in memory");
                else
                    c->ep.in = g;
            }
        }
        return;
    }
    if (n == HTTP1_INVALID) {
        exchange_note_request(&c->x, &m);
        exchange_fail(&c->x, m.error ? m.error : 400,
                      m.error_reason ? m.error_reason : "malformed request");
        return;
    }
    c->minor = m.minor;
    c->resp_keepalive = false;
    in->start += (uint32_t)n;
    c->x.dechunk_resp = m.minor == 0;
    c->state = CS_PROXY;
    c->progress = true;
    exchange_start(&c->x, &m, (uint32_t)n);
    /* a request without a body, alone in the buffer: the buffer is not
     * needed again before the next request (read into a fresh one) */
    if (c->state == CS_PROXY && c->x.req.done && c->ep.in != NULL && buf_len(c->ep.in) == 0) {
        buf_put(&w->bufs, c->ep.in);
        c->ep.in = NULL;
    }
}

/* ---- between requests ------------------------------------------------------------- */

/* Moves a connection between requests onto the worker's newest view, so that
 * no request starts on a snapshot that has been replaced (the runtime state of
 * backends it names may be gone). Returns false, marking the connection for
 * closing, when the new snapshot no longer has its frontend. */
static bool h1_follow_view(struct h1session *c)
{
    struct worker *w = c->w;
    struct wview *nv = w->view;
    if (c->x.view == nv)
        return true;
    const char *fe_key = h1_frontend(c)->key;
    uint32_t i = 0;
    while (i < nv->snap->n_frontends && strcmp(nv->snap->frontends[i].key, fe_key) != 0)
        i++;
    if (i == nv->snap->n_frontends) {
        c->closing = true;
        return false;
    }
    struct wview *old = c->x.view;
    h1_set_view(c, view_ref(nv), i);
    view_unref(w, old);
    return true;
}

static void h1_set_idle(struct h1session *c)
{
    struct worker *w = c->w;
    if (c->ep.in && buf_len(c->ep.in) == 0) {
        buf_put(&w->bufs, c->ep.in);
        c->ep.in = NULL;
    }
    if (c->out && buf_len(c->out) == 0) {
        buf_put(&w->bufs, c->out);
        c->out = NULL;
    }
    c->state = c->ep.in ? CS_HEAD : CS_IDLE;
    http1_parser_init(&c->parser);
    exchange_reset(&c->x, ev_now(w->loop));
    h1_follow_view(c);
}

/* Both directions of the exchange are complete. */
static void h1_finish(struct h1session *c)
{
    struct worker *w = c->w;
    exchange_finish(&c->x);
    if (!c->resp_keepalive || !c->x.req.done || c->closing || w->draining) {
        c->closing = true;
        c->state = CS_LINGER;
        return;
    }
    h1_set_idle(c);
}

/* ---- I/O steps ---------------------------------------------------------------------- */

/* Reads client bytes into ep.in when the socket may have some. */
static void h1_read(struct h1session *c)
{
    struct worker *w = c->w;
    if (!c->ep.readable || c->ep.eof)
        return;
    bool first_tls = c->tls_pending;
    ssize_t n = endpoint_read(&c->ep, &w->bufs);
    if (n > 0 && !c->h2_checked && h1_maybe_h2(c, first_tls))
        return;
    if (n > 0) {
        if (c->state == CS_IDLE) {
            c->state = CS_HEAD;
            c->x.t_start = ev_now(w->loop);
        }
        c->fresh = false;
        c->tls_pending = false;
        METRIC_ADD(w->metrics.fe[c->x.fe_stat].bytes_in, (uint64_t)n);
        c->progress = true;
    } else if (n == 0) {
        c->progress = true;
    } else if (n == TRANSPORT_ERROR) {
        c->closing = true;
        c->drain_wait = false;
        c->progress = true;
    } else if (n == ENDPOINT_NOMEM) {
        c->closing = true;
        c->state = CS_LINGER;
    }
}

/* Sends our pending bytes and response body bytes to the client. */
static void h1_write(struct h1session *c)
{
    struct worker *w = c->w;
    struct exchange *x = &c->x;
    struct iovec iov[2];
    int cnt = 0;
    uint32_t out_left = buf_len(c->out);
    if (out_left) {
        iov[cnt].iov_base = c->out->data + c->out->start;
        iov[cnt++].iov_len = out_left;
    }
    if (c->state == CS_PROXY) {
        int r = exchange_resp_body(x, &iov[cnt]);
        if (r < 0)
            return;
        cnt += r;
    }
    if (cnt == 0)
        return;
    ssize_t n = endpoint_writev(&c->ep, iov, cnt);
    if (n == TRANSPORT_WANT_WRITE || n == TRANSPORT_AGAIN)
        return; /* AGAIN: TLS, the record layer needs to read first */
    if (n < 0) {
        c->closing = true;
        c->ep.eof = true;
        exchange_abandon(x, 0);
        c->state = CS_LINGER;
        buf_put(&w->bufs, c->out);
        c->out = NULL;
        return;
    }
    c->progress = true;
    METRIC_ADD(w->metrics.fe[x->fe_stat].bytes_out, (uint64_t)n);
    uint32_t o = (uint32_t)n < out_left ? (uint32_t)n : out_left;
    if (out_left) {
        c->out->start += o;
        /* the head is out: the body goes from the backend's buffer, and a
         * slow client's connection should not hold this one meanwhile */
        if (buf_len(c->out) == 0) {
            buf_put(&w->bufs, c->out);
            c->out = NULL;
        }
    }
    uint32_t body = (uint32_t)n - o;
    x->bytes_out += (uint64_t)n;
    if (body)
        exchange_resp_sent(x, body);
}

/* The request body needs bytes from the client: read them; a client gone
 * before its body ended abandons the exchange. */
static void h1_read_body(struct h1session *c)
{
    struct exchange *x = &c->x;
    if (x->req.done || c->ep.eof ||
        (c->ep.in != NULL && buf_len(c->ep.in) != 0 && x->req.ready != 0))
        return;
    h1_read(c);
    if (c->ep.eof && !x->req.done) {
        c->closing = true;
        exchange_abandon(x, 499);
        c->state = CS_LINGER;
    }
}

static void h1_step_proxy(struct h1session *c)
{
    struct exchange *x = &c->x;
    if (x->up == NULL)
        return; /* waiting: a backoff, a queue */
    exchange_send(x);
    if (c->state != CS_PROXY || x->up == NULL || !x->up->connected)
        return;
    h1_read_body(c);
    if (c->state != CS_PROXY)
        return;
    exchange_receive(x);
    if (c->state != CS_PROXY || x->up == NULL)
        return;
    if (x->tunnel) {
        c->state = CS_TUNNEL;
        tunnel_init(&c->tun, &c->ep, &x->up->ep);
        c->progress = true;
        return;
    }
    if (!x->resp_head_done) {
        if (buf_len(c->out))
            h1_write(c); /* 100 Continue or interim responses */
        return;
    }
    h1_write(c);
    if (c->state != CS_PROXY || x->up == NULL)
        return;
    if (exchange_resp_complete(x) && buf_len(c->out) == 0) {
        if (!x->req.done)
            c->closing = true;
        h1_finish(c);
    }
}

/* The 101 goes out first, then bytes move both ways until both directions
 * ended or one failed. */
static void h1_step_tunnel(struct h1session *c)
{
    struct worker *w = c->w;
    struct exchange *x = &c->x;
    if (buf_len(c->out)) {
        h1_write(c);
        if (c->ep.tr.fd < 0 || c->state != CS_TUNNEL || buf_len(c->out))
            return;
    }
    enum tunnel_state st = tunnel_pump(&c->tun, &w->bufs);
    struct metrics_fe *fm = &w->metrics.fe[x->fe_stat];
    METRIC_ADD(fm->tunnel_bytes_in, c->tun.a_to_b - c->tun_in);
    METRIC_ADD(fm->tunnel_bytes_out, c->tun.b_to_a - c->tun_out);
    c->tun_in = c->tun.a_to_b;
    c->tun_out = c->tun.b_to_a;
    c->progress = c->progress || c->tun.progress;
    if (st == TUNNEL_OPEN)
        return;
    x->bytes_in += c->tun.a_to_b;
    x->bytes_out += c->tun.b_to_a;
    exchange_tunnel_end(x, st == TUNNEL_ERROR ? c->tun.error : NULL);
    h1_close(c);
}

/* Ends the tunnel of <c> (if it is one) with <why> in its log line. */
static void h1_tunnel_stop(struct h1session *c, const char *why)
{
    if (c->state != CS_TUNNEL)
        return;
    c->x.bytes_in += c->tun.a_to_b;
    c->x.bytes_out += c->tun.b_to_a;
    exchange_tunnel_end(&c->x, why);
}

static void h1_step_linger(struct h1session *c)
{
    if (buf_len(c->out)) {
        h1_write(c);
        if (c->ep.tr.fd < 0 || buf_len(c->out))
            return;
    }
    if (!c->shut) {
        c->ep.tr.ops->shutdown_write(&c->ep.tr);
        c->shut = true;
        c->tphase = TP_NONE; /* the linger time starts now */
        c->progress = true;
    }
    /* discard what the client still sends, until it closes or time runs out */
    char sink[4096];
    for (int i = 0; i < 16 && !c->ep.eof; i++) {
        ssize_t n = c->ep.tr.ops->read(&c->ep.tr, sink, sizeof(sink));
        if (n > 0)
            continue;
        if (n == TRANSPORT_AGAIN || n == TRANSPORT_WANT_WRITE) {
            c->ep.readable = false;
            return;
        }
        c->ep.eof = true;
    }
    if (c->ep.eof)
        h1_close(c);
}

/* ---- the PROXY protocol header ------------------------------------------------------ */

static void h1_peer_name(struct h1session *c, const struct sockaddr_storage *peer);

/* True when <b>[0..len) starts like a PROXY header (v1 "PROXY " or the v2
 * signature) as far as it goes, with enough of it to be sure. */
static bool pp_signature(const uint8_t *b, size_t len)
{
    static const uint8_t v2[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                   0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
    return (len >= 6 && memcmp(b, "PROXY ", 6) == 0) || (len >= 12 && memcmp(b, v2, 12) == 0);
}

/* The header phase ends with <result>: counted; false when the connection
 * closed. */
static bool h1_pp_end(struct h1session *c, enum metrics_proxy result, const char *why)
{
    struct worker *w = c->w;
    if (result != METRICS_PROXY_N)
        METRIC_ADD(w->metrics.fe[c->x.fe_stat].proxy[result], 1);
    free(c->pp);
    c->pp = NULL;
    c->pp_have = 0;
    if (why != NULL) {
        lb_log(LB_LOG_WARN, "proxy_protocol_refused", "frontend %s: connection from %s: %s",
               h1_frontend(c)->name, c->peer_ip, why);
        h1_close(c);
        return false;
    }
    c->state = CS_IDLE;
    c->ep.readable = true;
    c->progress = true;
    return true;
}

/* Takes <n> bytes off the socket (bytes a peek saw there). */
static bool pp_consume(int fd, uint8_t *to, size_t n)
{
    ssize_t r;
    do
        r = recv(fd, to, n, MSG_DONTWAIT);
    while (r < 0 && errno == EINTR);
    return r == (ssize_t)n;
}

/* A header parsed: the client it names becomes the connection's peer. */
static void h1_pp_take(struct h1session *c, const struct proxy_hdr *h)
{
    if (h->local) {
        h1_pp_end(c, METRICS_PROXY_LOCAL, NULL);
        return;
    }
    h1_peer_name(c, &h->src);
    c->local = h->dst;
    c->local_known = true;
    h1_pp_end(c, METRICS_PROXY_ACCEPTED, NULL);
}

/* Reads the PROXY header a listed source must send first, without taking a
 * byte past it off the socket (a TLS handshake or the request follows), and
 * looks at what an unlisted source sends first: a header there is a forgery. */
static void h1_step_pphdr(struct h1session *c)
{
    if (!c->ep.readable)
        return;
    int fd = c->ep.tr.fd;
    uint8_t b[PROXY_V2_MAX];
    size_t have = c->pp_have;
    if (have)
        memcpy(b, c->pp, have);
    ssize_t n;
    do
        n = recv(fd, b + have, sizeof(b) - have, MSG_PEEK | MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        c->ep.readable = false;
        return;
    }
    if (n <= 0) {
        /* a close before any byte is nothing to count (an L4 balancer's
         * health check connects and closes) */
        bool partial = c->pp_listed && have > 0;
        h1_pp_end(c, partial ? METRICS_PROXY_MISSING : METRICS_PROXY_N,
                  partial ? "closed before a whole PROXY header" : NULL);
        if (c->ep.tr.fd >= 0)
            h1_close(c);
        return;
    }
    size_t len = have + (size_t)n;
    if (!c->pp_listed) {
        if (pp_signature(b, len))
            h1_pp_end(c, METRICS_PROXY_UNTRUSTED,
                      "a PROXY header from a source not in proxyProtocolFrom");
        else
            h1_pp_end(c, METRICS_PROXY_N, NULL);
        return;
    }
    struct proxy_hdr h;
    const char *why = NULL;
    int r = proxy_parse(b, len, &h, &why);
    if (r == PROXY_INVALID) {
        h1_pp_end(c, METRICS_PROXY_MALFORMED, why);
        return;
    }
    if (r == PROXY_INCOMPLETE) {
        /* every byte so far belongs to the header: take them, wait for more */
        if (c->pp == NULL && (c->pp = malloc(PROXY_V2_MAX)) == NULL) {
            h1_pp_end(c, METRICS_PROXY_MISSING, "no memory for a PROXY header");
            return;
        }
        if (!pp_consume(fd, c->pp + have, (size_t)n)) {
            h1_pp_end(c, METRICS_PROXY_MISSING, "reading the PROXY header failed");
            return;
        }
        c->pp_have = (uint16_t)len;
        c->ep.readable = false;
        c->progress = true;
        return;
    }
    if ((size_t)r > have && !pp_consume(fd, b, (size_t)r - have)) {
        h1_pp_end(c, METRICS_PROXY_MISSING, "reading the PROXY header failed");
        return;
    }
    h1_pp_take(c, &h);
}

/* ---- the driver --------------------------------------------------------------------- */

static uint8_t h1_timer_phase(const struct h1session *c)
{
    switch (c->state) {
    case CS_IDLE:
        return c->tls_pending ? TP_HEAD : TP_IDLE; /* a handshake has the head's time */
    case CS_HEAD:
    case CS_PPHDR:
        return TP_HEAD;
    case CS_LINGER:
        return TP_LINGER;
    case CS_REPLY:
        return TP_CLIENT;
    case CS_TUNNEL:
        return TP_TUNNEL;
    default:
        return exchange_wait(&c->x, buf_len(c->out) != 0);
    }
}

/* Makes the session wait for what it needs next; <moved>: the run that ends
 * here moved something (an idle timer starts over). */
static void h1_arm(struct h1session *c, bool moved)
{
    struct exchange *x = &c->x;
    if (c->state == CS_PROXY) {
        /* a run cut short by its round limit may have read bytes it has not
         * looked at: what is ready decides what to wait for */
        exchange_check_bodies(x);
    }
    if (x->rearm) {
        x->rearm = false;
        c->tphase = TP_NONE;
    }
    uint8_t phase = h1_timer_phase(c);
    /* the head timer counts from the request's first byte and never extends */
    if (phase != c->tphase ||
        (moved && phase != TP_HEAD && phase != TP_LINGER && phase != TP_QUEUE)) {
        c->tphase = phase;
        c->timer.repeat = exchange_wait_seconds(&c->x, phase);
        if (c->drain_wait && phase == TP_IDLE && c->timer.repeat > c->drain_cap)
            c->timer.repeat = c->drain_cap;
        ev_timer_again(c->w->loop, &c->timer);
    }

    if (c->state == CS_TUNNEL && buf_len(c->out) == 0) {
        tunnel_arm(c->w->loop, &c->tun);
        return;
    }
    int want = 0;
    switch (c->state) {
    case CS_IDLE:
    case CS_HEAD:
    case CS_PPHDR:
        want = EV_READ;
        break;
    case CS_TUNNEL:
        want = EV_WRITE; /* the 101 first */
        break;
    case CS_LINGER:
        want = buf_len(c->out) ? EV_WRITE : EV_READ;
        break;
    case CS_REPLY:
        want = EV_WRITE;
        break;
    default:
        if (buf_len(c->out) || x->resp.ready)
            want |= EV_WRITE;
        /* more request body is wanted while there is room for it; an
         * input buffer emptied by a read that found nothing went back to
         * the pool (NULL), which is room too */
        if (x->up && !x->req.done && !c->ep.eof && x->req.ready == 0 &&
            (c->ep.in == NULL || buf_len(c->ep.in) < c->ep.in->cap))
            want |= EV_READ;
        break;
    }
    endpoint_arm(c->w->loop, &c->ep, want);
    if (c->state == CS_PROXY)
        exchange_arm(x);
}

static void h1_run(struct h1session *c)
{
    bool moved = false;
    for (int rounds = 0; rounds < 64; rounds++) {
        c->progress = false;
        c->x.progress = false;
        switch (c->state) {
        case CS_IDLE:
            if ((c->closing || c->w->draining) && !c->drain_wait) {
                h1_close(c);
                return;
            }
            h1_read(c);
            if (c->ep.eof && c->state == CS_IDLE) {
                h1_close(c);
                return;
            }
            break;
        case CS_HEAD:
            h1_read(c);
            if (c->state == CS_HEAD && buf_len(c->ep.in))
                h1_parse_head(c);
            if (c->state == CS_HEAD && buf_len(c->ep.in) == 0 && (c->ep.eof || c->closing)) {
                h1_close(c);
                return;
            }
            break;
        case CS_PPHDR:
            if (c->w->draining) {
                h1_close(c);
                return;
            }
            h1_step_pphdr(c);
            break;
        case CS_PROXY:
            h1_step_proxy(c);
            break;
        case CS_LINGER:
            h1_step_linger(c);
            break;
        case CS_TUNNEL:
            h1_step_tunnel(c);
            break;
        case CS_REPLY:
            h1_write(c);
            if (c->ep.tr.fd >= 0 && c->state == CS_REPLY && buf_len(c->out) == 0) {
                if (c->closing)
                    c->state = CS_LINGER;
                else
                    h1_set_idle(c);
                c->progress = true;
            }
            break;
        }
        if (c->ep.tr.fd < 0)
            return;
        if (!c->progress && !c->x.progress)
            break;
        moved = true;
    }
    h1_arm(c, moved);
}

/* ---- watchers ------------------------------------------------------------------------ */

static void h1_on_io(struct ev_loop *loop, ev_io *io, int revents)
{
    struct h1session *c = io->data;
    endpoint_on_events(&c->ep, revents);
    h1_run(c);
}

static void h1_on_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct h1session *c = t->data;
    switch (c->tphase) {
    case TP_IDLE:
    case TP_LINGER:
    case TP_NONE:
        h1_close(c);
        return;
    case TP_TUNNEL:
        h1_tunnel_stop(c, "no byte either way for timeouts.tunnelIdle");
        h1_close(c);
        return;
    case TP_HEAD:
        if (c->state == CS_PPHDR) {
            h1_pp_end(c, c->pp_listed ? METRICS_PROXY_MISSING : METRICS_PROXY_N,
                      c->pp_listed ? "no whole PROXY header within timeouts.clientHeader" : NULL);
            h1_close(c);
            return;
        }
        if (c->tls_pending) {
            tls_transport_note_timeout(&c->ep.tr);
            h1_close(c);
            return;
        }
        exchange_fail(&c->x, 408, "client sent its request head too slowly");
        break;
    default:
        if (c->state != CS_PROXY) {
            h1_close(c); /* an answer of ours that the client does not read */
            return;
        }
        if (exchange_on_timeout(&c->x, c->tphase, buf_len(c->out) != 0)) {
            h1_close(c);
            return;
        }
        break;
    }
    c->tphase = TP_NONE;
    h1_run(c);
}

/* ---- life cycle ------------------------------------------------------------------------ */

static void h1_close(struct h1session *c)
{
    struct worker *w = c->w;
    if (c->ep.tr.fd < 0)
        return;
    exchange_close(&c->x);
    ev_timer_stop(w->loop, &c->timer);
    endpoint_close(w->loop, &c->ep, &w->bufs);
    buf_put(&w->bufs, c->out);
    c->out = NULL;
    free(c->pp);
    c->pp = NULL;
    METRIC_ADD(w->metrics.fe[c->x.fe_stat].closed, 1);
    view_unref(w, c->x.view);
    c->x.view = NULL;
    lb_list_del(&c->link);
    worker_sessions_add(w, -1);
    /* the object stays readable (fd -1) until the worker's housekeeping
     * trims the free list, so callers up the stack may still test it */
    c->free_next = w->free_sessions;
    w->free_sessions = c;
    w->n_free_sessions++;
}

static void h1_peer_name(struct h1session *c, const struct sockaddr_storage *peer)
{
    c->peer = *peer;
    if (peer->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)peer;
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr))
            inet_ntop(AF_INET, &in6->sin6_addr.s6_addr[12], c->peer_ip, sizeof(c->peer_ip));
        else
            inet_ntop(AF_INET6, &in6->sin6_addr, c->peer_ip, sizeof(c->peer_ip));
    } else {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)peer)->sin_addr, c->peer_ip,
                  sizeof(c->peer_ip));
    }
}

/* A zeroed session from the free list or the heap, or NULL. */
static struct h1session *h1_alloc(struct worker *w)
{
    struct h1session *c = w->free_sessions;
    if (c == NULL)
        return calloc(1, sizeof(*c));
    w->free_sessions = c->free_next;
    w->n_free_sessions--;
    memset(c, 0, sizeof(*c));
    return c;
}

void h1session_accept(struct worker *w, int fd, const struct sockaddr_storage *peer,
                      uint32_t fe_index)
{
    struct wview *v = w->view;
    uint16_t fe_stat = v->fe_stat[fe_index];
    METRIC_ADD(w->metrics.fe[fe_stat].accepted, 1);
    if (w->n_sessions >= v->snap->max_connections) {
        METRIC_ADD(w->metrics.fe[fe_stat].rejected[REJECT_CONN_LIMIT], 1);
        METRIC_ADD(w->metrics.fe[fe_stat].closed, 1);
        close(fd);
        return;
    }
    struct h1session *c = h1_alloc(w);
    if (c == NULL) {
        METRIC_ADD(w->metrics.fe[fe_stat].closed, 1);
        close(fd);
        return;
    }
    c->w = w;
    struct tls_ctx *tls = v->snap->tls ? v->snap->tls[fe_index] : NULL;
    if (tls != NULL) {
        if (tls_transport_init(&c->ep.tr, fd, tls, NULL) != LB_OK) {
            METRIC_ADD(w->metrics.fe[fe_stat].closed, 1);
            close(fd);
            c->free_next = w->free_sessions;
            w->free_sessions = c;
            w->n_free_sessions++;
            return;
        }
        c->tls_pending = true;
        c->x.tls_tr = &c->ep.tr;
    } else {
        transport_plain_init(&c->ep.tr, fd);
    }
    exchange_init(&c->x, &h1_exchange_ops, w);
    h1_set_view(c, view_ref(v), fe_index);
    h1_peer_name(c, peer);
    c->x.peer = &c->peer;
    c->x.peer_ip = c->peer_ip;
    c->x.req_in = &c->ep.in;
    c->ep.readable = true; /* data often arrives with the connection */
    endpoint_init(&c->ep, h1_on_io, c);
    ev_init(&c->timer, h1_on_timer);
    c->timer.data = c;
    lb_list_add(&w->sessions, &c->link);
    worker_sessions_add(w, 1);
    c->state = CS_IDLE;
    c->fresh = true;
    const struct snap_frontend *sf = &v->snap->frontends[fe_index];
    if (sf->n_proxy_from > 0) {
        c->state = CS_PPHDR;
        c->pp_listed =
            limiter_cidr_match(sf->proxy_from, sf->n_proxy_from, (const struct sockaddr *)peer);
    }
    c->x.t_start = ev_now(w->loop);
    h1_run(c);
}

/* The connection speaks HTTP/2 (ALPN h2, or the prior-knowledge preface on
 * a frontend with http2Cleartext): an HTTP/2 session takes its socket,
 * transport and bytes, and this session ends without closing them. */
static bool h1_maybe_h2(struct h1session *c, bool first_tls)
{
    struct worker *w = c->w;
    const struct snap_frontend *sf = h1_frontend(c);
    bool h2 = false;
    if (first_tls) {
        h2 = sf->http2 && tls_transport_alpn_h2(&c->ep.tr);
    } else if (c->x.tls_tr == NULL && sf->http2_cleartext) {
        uint32_t len = buf_len(c->ep.in);
        if (len < 3 && !c->ep.eof)
            return false; /* "PRI" or not: wait for a few more bytes */
        size_t cmp = len < H2_PREFACE_LEN ? len : H2_PREFACE_LEN;
        h2 = memcmp(c->ep.in->data + c->ep.in->start, H2_PREFACE, cmp) == 0;
    }
    c->h2_checked = true;
    if (!h2)
        return false;
    if (!h1_follow_view(c)) {
        h1_close(c);
        return true;
    }
    endpoint_set_events(w->loop, &c->ep, 0);
    ev_timer_stop(w->loop, &c->timer);
    struct sockaddr_storage peer = c->peer;
    h2session_take(w, &c->ep, &peer, c->local_known ? &c->local : NULL, c->x.fe_index);
    buf_put(&w->bufs, c->out);
    c->out = NULL;
    free(c->pp);
    c->pp = NULL;
    view_unref(w, c->x.view);
    c->x.view = NULL;
    lb_list_del(&c->link);
    worker_sessions_add(w, -1);
    c->free_next = w->free_sessions;
    w->free_sessions = c;
    w->n_free_sessions++;
    return true;
}

static struct h1session *of_link(struct lb_list *l)
{
    return LB_LIST_ENTRY(l, struct h1session, link);
}

void h1session_drain_all(struct worker *w)
{
    for (struct lb_list *l = w->sessions.next, *next; l != &w->sessions; l = next) {
        next = l->next;
        struct h1session *c = of_link(l);
        c->closing = true;
        if (c->state == CS_IDLE && (w->drain_idle_s > 0 || c->fresh)) {
            /* after a hand-over: a request already on its way is answered
             * (with Connection: close) rather than met with a reset; a
             * connection accepted a moment ago has not sent its first
             * request yet, and its client would not retry on a close: it
             * gets the head timeout (the drain timer still bounds it) */
            c->drain_wait = true;
            c->tphase = TP_IDLE;
            double keepalive = exchange_wait_seconds(&c->x, TP_IDLE);
            c->drain_cap = c->fresh ? exchange_wait_seconds(&c->x, TP_HEAD) : w->drain_idle_s;
            c->timer.repeat = keepalive < c->drain_cap ? keepalive : c->drain_cap;
            ev_timer_again(w->loop, &c->timer);
            continue;
        }
        if (c->state == CS_IDLE || c->state == CS_PPHDR)
            h1_close(c);
    }
    if (w->n_tunnels > 0)
        lb_log(LB_LOG_INFO, "drain_tunnels",
               "worker %u: %u tunnels stay open until they end or the drain time is up", w->id,
               w->n_tunnels);
}

void h1session_close_all(struct worker *w)
{
    while (!lb_list_empty(&w->sessions)) {
        struct h1session *c = of_link(w->sessions.next);
        h1_tunnel_stop(c, "closed at shutdown (the drain time ran out)");
        h1_close(c);
    }
}

void h1session_free_list_trim(struct worker *w, uint32_t keep)
{
    while (w->n_free_sessions > keep) {
        struct h1session *c = w->free_sessions;
        w->free_sessions = c->free_next;
        w->n_free_sessions--;
        free(c);
    }
}

void h1session_views_refresh(struct worker *w)
{
    for (struct lb_list *l = w->sessions.next, *next; l != &w->sessions; l = next) {
        next = l->next;
        struct h1session *c = of_link(l);
        if (c->state == CS_IDLE && !h1_follow_view(c))
            h1_close(c);
    }
}
