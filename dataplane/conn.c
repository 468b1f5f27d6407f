/* dataplane/conn.c: the client connection state machine and its upstream.
 *
 * One function, conn_run(), moves a connection as far as it can go each time
 * one of its sockets is ready: read the head, pick a backend, send the request,
 * stream the body, read the response, stream it back. Sockets are read and
 * written speculatively (until EAGAIN) and watched only for what is blocked. */
#include "conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dp.h"
#include "lb_err.h"
#include "lb_log.h"
#include "rewrite.h"
#include "tls.h"
#include "transport.h"
#include "upstream.h"
#include "worker.h"

enum conn_state {
    CS_IDLE = 0, /* keep-alive: no request, no buffer */
    CS_HEAD,     /* reading a request head */
    CS_PROXY,    /* a request is being proxied */
    CS_LINGER,   /* answered and closed for writing; reading what is left */
    CS_REPLY,    /* sending an answer of our own; then the next request */
};

enum timer_phase {
    TP_NONE = 0,
    TP_IDLE,
    TP_HEAD,
    TP_CLIENT, /* waiting on the client: body bytes, or reading our output */
    TP_CONNECT,
    TP_RESPONSE,
    TP_UPSTREAM, /* waiting on the backend's body bytes */
    TP_LINGER,
    TP_BACKOFF, /* before a retry */
    TP_QUEUE,   /* waiting in a backend's queue for a connection slot */
};

/* How an attempt on a backend ended, for its breaker and effective weight. */
enum outcome {
    OUT_OK = 0,
    OUT_FAIL,    /* connect error, timeout, broken response, 5xx as policy counts it */
    OUT_ABANDON, /* the client went away or broke the request: not the backend's doing */
};

#define LINGER_SECONDS     2.0
#define RETRY_BUDGET_WAITS 3 /* backoffs a retry waits for room in the budget */

/* How one message body moves from a buffer to the other side. */
struct stream {
    uint8_t framing; /* enum http1_framing */
    bool dechunk;    /* forward chunk payload only */
    bool done;
    uint32_t ready; /* bytes at the buffer's start that may be written */
    uint64_t remaining;
    struct http1_chunked ch;
};

struct conn {
    struct worker *w;
    struct conn *prev;
    struct conn *next;
    struct transport tr;
    ev_io io;
    int events;
    ev_timer timer;
    uint8_t tphase;
    uint8_t state;
    bool readable;
    bool rd_eof;
    bool progress;
    bool shut;        /* our sending side is closed */
    bool tls;         /* HTTPS */
    bool tls_pending; /* no application byte read yet: the handshake may be running */
    bool rd_on_write; /* the transport's read waits for writability (TLS) */
    bool wr_on_read;  /* the transport's write waits for readability (TLS) */
    bool closing;     /* close once the current response is out */
    struct wview *view;
    uint32_t fe_index;
    uint16_t fe_stat;
    char peer_ip[INET6_ADDRSTRLEN];
    struct sockaddr_storage peer;
    struct buf *in;  /* client bytes */
    struct buf *out; /* our bytes to the client: response head, 100, error */
    struct http1_parser parser;

    /* the request in progress */
    uint8_t meth;
    uint8_t minor;
    bool keepalive;
    bool need_100;
    struct stream req;
    struct buf *uphead; /* rewritten request head, kept for a replay */
    uint32_t uphead_sent;
    uint64_t body_sent;
    double t_start;
    uint64_t bytes_in;
    uint64_t bytes_out;
    char method[16];
    char path[256];
    char req_id[40];
    int reject;     /* enum metrics_reject of an answer of ours, or -1 */
    uint8_t rl_len; /* RateLimit header lines for the response, in <rl_hdr> */
    char rl_hdr[LIMITER_HEADERS_MAX];

    /* where it goes */
    struct upstream *up;
    int be_index;
    uint8_t tries;
    int32_t tried[RETRY_MAX_TRIES]; /* backend indexes of the attempts */
    uint8_t bdec;                   /* enum breaker_decision of the attempt in progress */
    bool bdec_valid;
    bool in_retry;        /* the attempt in progress holds a retry budget slot */
    bool retry_wait;      /* waiting the backoff before the next attempt */
    bool counted;         /* counted in the data plane's requests in flight */
    uint8_t budget_waits; /* backoffs waited for room in the retry budget */
    bool qwait;           /* waiting in the queue of backend <q_index> (counted in its active) */
    int32_t q_index;
    struct connq_waiter *qw; /* while it waits (qwait) */
    double backoff_s;

    /* the response */
    uint16_t status;
    bool resp_head_done;
    bool resp_keepalive;
    struct stream resp;
};

static void conn_run(struct conn *c);
static void conn_close(struct conn *c);
static bool conn_follow_view(struct conn *c);
static void conn_upstream_failed(struct conn *c, const char *why);

static void conn_on_upstream_ready(void *owner)
{
    conn_run(owner);
}

/* ---- small helpers -------------------------------------------------------- */

/* Makes room at the end of <b> by moving its bytes to the start. */
static void buf_compact(struct buf *b)
{
    if (b->start == b->end) {
        b->start = b->end = 0;
    } else if (b->start > 0 && b->end == b->cap) {
        memmove(b->data, b->data + b->start, b->end - b->start);
        b->end -= b->start;
        b->start = 0;
    }
}

static bool buf_append(struct buf *b, const char *p, size_t n)
{
    if (b->cap - b->end < n)
        return false;
    memcpy(b->data + b->end, p, n);
    b->end += (uint32_t)n;
    return true;
}

static bool buf_appends(struct buf *b, const char *s)
{
    return buf_append(b, s, strlen(s));
}

static void slice_copy(char *dst, size_t cap, struct http1_slice s)
{
    size_t n = s.p == NULL ? 0 : s.len < cap - 1 ? s.len : cap - 1;
    if (n > 0)
        memcpy(dst, s.p, n);
    dst[n] = '\0';
}

static const struct snap_frontend *conn_frontend(const struct conn *c)
{
    return &c->view->snap->frontends[c->fe_index];
}

/* ---- body streams ------------------------------------------------------ */

static void stream_init(struct stream *s, uint8_t framing, uint64_t length, bool dechunk)
{
    memset(s, 0, sizeof(*s));
    s->framing = framing;
    s->remaining = length;
    s->dechunk = dechunk;
    http1_chunked_init(&s->ch);
    s->done = framing == HTTP1_BODY_NONE || (framing == HTTP1_BODY_LENGTH && length == 0);
}

/* Works out how many bytes at b->start may be forwarded. -1: malformed. */
static int stream_prepare(struct stream *s, struct buf *b)
{
    if (s->done) {
        s->ready = 0;
        return 0;
    }
    uint32_t avail = worker_buf_len(b);
    switch (s->framing) {
    case HTTP1_BODY_LENGTH:
        s->ready = avail < s->remaining ? avail : (uint32_t)s->remaining;
        return 0;
    case HTTP1_BODY_CLOSE:
        s->ready = avail;
        return 0;
    case HTTP1_BODY_CHUNKED:
        if (s->dechunk) {
            while (s->ready == 0 && !s->ch.done && b->start < b->end) {
                const char *d;
                size_t dl;
                int n = http1_chunked_feed(&s->ch, b->data + b->start, b->end - b->start, &d, &dl);
                if (n < 0)
                    return -1;
                if (n == 0)
                    break;
                if (dl > 0)
                    s->ready = (uint32_t)n;
                else
                    b->start += (uint32_t)n;
            }
        } else {
            while (!s->ch.done && b->start + s->ready < b->end) {
                const char *d;
                size_t dl;
                uint32_t at = b->start + s->ready;
                int n = http1_chunked_feed(&s->ch, b->data + at, b->end - at, &d, &dl);
                if (n < 0)
                    return -1;
                if (n == 0)
                    break;
                s->ready += (uint32_t)n;
            }
        }
        if (s->ch.done && s->ready == 0)
            s->done = true;
        return 0;
    default:
        s->done = true;
        return 0;
    }
}

static void stream_consumed(struct stream *s, struct buf *b, uint32_t n)
{
    b->start += n;
    s->ready -= n;
    if (s->framing == HTTP1_BODY_LENGTH) {
        s->remaining -= n;
        if (s->remaining == 0)
            s->done = true;
    } else if (s->framing == HTTP1_BODY_CHUNKED && s->ch.done && s->ready == 0) {
        s->done = true;
    }
}

/* ---- upstream connections ------------------------------------------------- */

/* ---- access log and counters ------------------------------------------- */

static void conn_log_request(struct conn *c, const char *backend, const char *why)
{
    struct worker *w = c->w;
    if (c->counted) {
        retry_budget_request_finished(&w->dp->budget, w->id);
        c->counted = false;
    }
    if (c->in_retry && c->up == NULL) {
        /* answered between attempts: the retry it held is over */
        retry_budget_done(&w->dp->budget);
        c->in_retry = false;
    }
    double dur = ev_now(w->loop) - c->t_start;
    if (dur < 0)
        dur = 0;
    uint64_t dur_us = (uint64_t)(dur * 1e6);
    struct backend_rt *be = c->up ? c->up->be : NULL;
    uint32_t be_slot = be ? be->stat_slot : UINT32_MAX;
    metrics_request(&w->metrics, c->fe_stat, be_slot, c->status, dur_us);
    if (c->reject >= 0 && c->fe_stat < w->metrics.n_fe)
        METRIC_ADD(w->metrics.fe[c->fe_stat].rejected[c->reject], 1);
    if (!c->view->snap->access_log || w->log == NULL)
        return;
    if (!lb_logbuf_begin(w->log, LB_LOG_INFO, "access"))
        return;
    lb_logbuf_cstr(w->log, "frontend", conn_frontend(c)->name);
    lb_logbuf_cstr(w->log, "client", c->peer_ip);
    lb_logbuf_cstr(w->log, "method", c->method);
    lb_logbuf_cstr(w->log, "path", c->path);
    lb_logbuf_uint(w->log, "status", c->status);
    lb_logbuf_uint(w->log, "bytes_in", c->bytes_in);
    lb_logbuf_uint(w->log, "bytes_out", c->bytes_out);
    lb_logbuf_double(w->log, "duration_ms", dur * 1000.0, 3);
    lb_logbuf_cstr(w->log, "backend", backend ? backend : (be ? be->id : NULL));
    lb_logbuf_cstr(w->log, "request_id", c->req_id[0] ? c->req_id : NULL);
    if (why != NULL)
        lb_logbuf_cstr(w->log, "error", why);
    lb_logbuf_end(w->log);
}

/* ---- answers of our own ------------------------------------------------- */

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

static uint64_t conn_now_ms(const struct conn *c)
{
    return (uint64_t)(ev_now(c->w->loop) * 1000.0);
}

/* Ends the attempt in progress on <be>: its breaker and effective weight learn
 * the outcome, a retry gives its budget slot back. */
static void conn_attempt_end(struct conn *c, struct backend_rt *be, enum outcome o)
{
    const struct snap *s = c->view->snap;
    be->active--;
    be->bal.active--;
    if (o == OUT_OK)
        balancer_slot_on_success(&be->bal);
    else if (o == OUT_FAIL)
        balancer_slot_on_failure(&be->bal);
    if (c->bdec_valid && be->breaker != NULL) {
        /* an abandoned trial must still free its slot: it counts as failed */
        if (o != OUT_ABANDON || c->bdec == BREAKER_TRIAL)
            breaker_done(be->breaker, &s->breaker, (enum breaker_decision)c->bdec, o == OUT_OK,
                         conn_now_ms(c));
    }
    c->bdec_valid = false;
    if (c->in_retry) {
        retry_budget_done(&c->w->dp->budget);
        c->in_retry = false;
    }
}

/* Detaches the upstream after a failure: it is closed, never pooled. */
static void conn_drop_upstream(struct conn *c, enum outcome o)
{
    if (c->up == NULL)
        return;
    struct upstream *u = c->up;
    conn_attempt_end(c, u->be, o);
    c->up = NULL;
    upstream_detach(u);
    upstream_free(u);
}

/* Answers <status> with a short body and closes after it (lingering, so the
 * answer is not lost to a reset while the client is still sending). */
static void conn_answer_error(struct conn *c, unsigned status, const char *why)
{
    struct worker *w = c->w;
    struct backend_rt *be = c->up ? c->up->be : NULL;
    if (c->resp_head_done) {
        /* the response has begun: all that is left to say is a close */
        lb_log(LB_LOG_WARN, "request_aborted", "%s %s from %s: %s", c->method, c->path, c->peer_ip,
               why);
        conn_log_request(c, NULL, why);
        conn_drop_upstream(c, status == 502 || status == 504 ? OUT_FAIL : OUT_ABANDON);
        c->closing = true;
        c->state = CS_LINGER;
        c->progress = true;
        return;
    }
    c->status = (uint16_t)status;
    c->reject = reject_of(status);
    if (c->out == NULL)
        c->out = worker_buf_get(w);
    if (c->out != NULL) {
        c->out->start = c->out->end = 0;
        char head[256];
        const char *reason = http1_reason(status);
        char body[200];
        int bl = snprintf(body, sizeof(body), "%u %s\n", status, reason);
        int hl = snprintf(head, sizeof(head),
                          "HTTP/1.1 %u %s\r\nContent-Type: text/plain\r\nContent-Length: "
                          "%d\r\nConnection: close\r\n\r\n",
                          status, reason, bl);
        buf_append(c->out, head, (size_t)hl);
        if (c->meth != HTTP1_M_HEAD)
            buf_append(c->out, body, (size_t)bl);
    }
    if (status >= 500 || lb_log_enabled(LB_LOG_DEBUG))
        lb_log(status >= 500 ? LB_LOG_WARN : LB_LOG_DEBUG, "request_error",
               "%u for %s %s from %s%s%s: %s", status, c->method[0] ? c->method : "-",
               c->path[0] ? c->path : "-", c->peer_ip, be ? " via " : "", be ? be->id : "", why);
    c->bytes_out += worker_buf_len(c->out);
    conn_log_request(c, be ? be->id : NULL, why);
    conn_drop_upstream(c, status == 502 || status == 504 ? OUT_FAIL : OUT_ABANDON);
    if (c->uphead) {
        worker_buf_put(w, c->uphead);
        c->uphead = NULL;
    }
    c->state = CS_LINGER;
    c->closing = true;
    c->progress = true;
}

/* Answers <status> ourselves without blaming the request's framing (429):
 * the connection stays open for the next request when nothing of this one is
 * left unread and the client keeps it alive. <extra> holds header lines. */
static void conn_answer_local(struct conn *c, unsigned status, const char *extra, size_t extra_len,
                              const char *why)
{
    struct worker *w = c->w;
    bool keep = c->keepalive && c->req.done && !c->closing && !w->draining;
    c->status = (uint16_t)status;
    c->reject = reject_of(status);
    if (c->out == NULL)
        c->out = worker_buf_get(w);
    if (c->out == NULL) {
        conn_answer_error(c, 503, "no memory for an answer");
        return;
    }
    buf_compact(c->out);
    const char *reason = http1_reason(status);
    char body[96];
    int bl = snprintf(body, sizeof(body), "%u %s\n", status, reason);
    char head[160];
    int hl = snprintf(head, sizeof(head),
                      "HTTP/1.1 %u %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n",
                      status, reason, bl);
    buf_append(c->out, head, (size_t)hl);
    buf_append(c->out, extra, extra_len);
    if (!keep)
        buf_appends(c->out, "Connection: close\r\n");
    else if (c->minor == 0)
        buf_appends(c->out, "Connection: keep-alive\r\n");
    buf_appends(c->out, "\r\n");
    if (c->meth != HTTP1_M_HEAD)
        buf_append(c->out, body, (size_t)bl);
    if (lb_log_enabled(LB_LOG_DEBUG))
        lb_log(LB_LOG_DEBUG, "request_answered", "%u for %s %s from %s: %s", status, c->method,
               c->path, c->peer_ip, why);
    c->bytes_out += worker_buf_len(c->out);
    conn_log_request(c, NULL, why);
    if (c->uphead) {
        worker_buf_put(w, c->uphead);
        c->uphead = NULL;
    }
    c->closing = !keep;
    c->state = CS_REPLY;
    c->progress = true;
}

/* ---- the request -------------------------------------------------------- */

/* The balancer's filter over the view's candidates (active backends): not
 * known down (unless the pool fails open), not tried by this request, and
 * its breaker lets requests through. */
static bool backend_ok(void *ctx, uint32_t k)
{
    struct conn *c = ctx;
    const struct wview *v = c->view;
    uint32_t i = v->cand[k];
    const struct snap_backend *b = &v->snap->backends[i];
    if (b->health == SNAP_HEALTH_DOWN && !v->panic)
        return false;
    if (v->be[i]->sh != NULL && eject_blocks(&v->be[i]->sh->eject, v->snap->generation))
        return false;
    for (unsigned t = 0; t < c->tries; t++) {
        if (c->tried[t] == (int32_t)i)
            return false;
    }
    const struct breaker *br = v->be[i]->breaker;
    return br == NULL || !v->snap->breaker.enabled ||
           breaker_is_available(v->be[i]->breaker, &v->snap->breaker, conn_now_ms(c));
}

/* Why no backend may take the request, for the 503's log line. */
static const char *no_backend_reason(struct conn *c)
{
    const struct wview *v = c->view;
    uint32_t n_down = 0, n_open = 0, n_out = 0;
    for (uint32_t k = 0; k < v->bal.n; k++) {
        uint32_t i = v->cand[k];
        if (v->snap->backends[i].health == SNAP_HEALTH_DOWN && !v->panic)
            n_down++;
        else if (v->be[i]->sh != NULL && eject_blocks(&v->be[i]->sh->eject, v->snap->generation))
            n_out++;
        else if (v->be[i]->breaker != NULL && v->snap->breaker.enabled &&
                 !breaker_is_available(v->be[i]->breaker, &v->snap->breaker, conn_now_ms(c)))
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

/* Writes the rewritten request head for the backend into c->uphead. */
static bool build_upstream_head(struct conn *c, const struct http1_msg *m)
{
    struct worker *w = c->w;
    struct rewrite_request rq = {
        .msg = m, .client_ip = c->peer_ip, .tls = c->tls, .now_ms = conn_now_ms(c), .rng = &w->rng};
    struct tls_peer p;
    struct rewrite_identity id;
    if (c->tls && tls_peer_info(&c->tr, &p) == LB_OK && p.has_cert) {
        id = (struct rewrite_identity){p.verified, p.subject, p.san_uri, p.fingerprint};
        rq.identity = &id;
    }
    struct buf *b = worker_buf_get(w);
    if (b == NULL)
        return false;
    struct http1_slice req_id;
    int n = rewrite_head(&rq, b->data, b->cap, &req_id);
    if (n == REWRITE_NOSPACE) {
        /* rare: a head near the limits is written again into a bigger buffer */
        struct buf *g = worker_buf_grow(w, b, (uint32_t)rewrite_head_max(&rq));
        if (g != NULL) {
            b = g;
            n = rewrite_head(&rq, b->data, b->cap, &req_id);
        }
    }
    if (n == REWRITE_NOSPACE) {
        worker_buf_put(w, b);
        return false;
    }
    b->start = 0;
    b->end = (uint32_t)n;
    slice_copy(c->req_id, sizeof(c->req_id), req_id);
    c->uphead = b;
    c->uphead_sent = 0;
    return true;
}

static void conn_bind_upstream(struct conn *c, struct upstream *u, int index)
{
    upstream_attach(u, conn_on_upstream_ready, c);
    u->be->active++;
    u->be->bal.active++;
    c->up = u;
    c->be_index = index;
}

static bool conn_try_again(struct conn *c, struct backend_rt *failed, int reason);
static void conn_attach_upstream(struct conn *c);

/* A new upstream connection could not be made for want of local resources
 * (lb_errno_shortage): not the backend's fault, so no breaker or failure
 * count. A retry after its backoff may find a pooled connection or a free
 * descriptor; else 503. */
static void conn_connect_short(struct conn *c, struct backend_rt *be, int errnum)
{
    lb_log(LB_LOG_WARN, "upstream_connect_local", "backend %s: %s", be->id, strerror(errnum));
    conn_attempt_end(c, be, OUT_ABANDON);
    if (conn_try_again(c, be, METRICS_RETRY_CONNECT))
        return;
    conn_answer_error(c, 503,
                      errnum == EADDRNOTAVAIL ? "out of local ports"
                                              : "out of file descriptors or memory");
}

/* A connect to <be> failed (refused, reset or timed out: the backend's
 * doing): it leaves rotation for every worker at once, and the requests in
 * its queue go elsewhere. Only the thread that ejects it logs. */
static void conn_eject(struct conn *c, struct backend_rt *be, const char *why)
{
    if (be->sh == NULL)
        return;
    struct eject_config ec = c->view->snap->eject;
    ec.controlled = c->w->dp->controlled;
    uint64_t now_ms = conn_now_ms(c);
    if (!eject_on_connect_failure(&be->sh->eject, &ec, now_ms))
        return;
    bshared_registry_note_ejected(c->w->dp->backends, 1);
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
static enum retry_action conn_retry_action(const struct conn *c, enum retry_failure f)
{
    const struct snap *s = c->view->snap;
    const struct upstream *u = c->up;
    struct retry_state st = {
        .method = c->meth,
        .body_complete = c->req.done,
        .body_sent = c->body_sent > 0,
        .head_kept = c->uphead != NULL,
        .answer_started =
            c->resp_head_done || (f == RETRY_FAIL_POOLED && u != NULL && u->got_bytes),
        .seen_retries = s->retry_5xx,
        .draining = c->w->draining,
        .tries = c->tries,
        .max_retries = s->max_retries,
    };
    return retry_decide(f, &st);
}

/* Whether another backend is there to take the request. */
static bool conn_has_elsewhere(struct conn *c)
{
    for (uint32_t k = 0; k < c->view->bal.n; k++) {
        if (backend_ok(c, k))
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
static void conn_connect_failed(struct conn *c, struct backend_rt *be, const char *why, bool eject)
{
    struct worker *w = c->w;
    METRIC_ADD(w->metrics.be[be->stat_slot]->connect_failures, 1);
    lb_log(LB_LOG_WARN, "upstream_connect_failed", "backend %s (%s): %s", be->id, be->host_port,
           why);
    conn_attempt_end(c, be, OUT_FAIL);
    if (eject)
        conn_eject(c, be, why);
    if (conn_retry_action(c, RETRY_FAIL_CONNECT) != RETRY_NOW || !conn_has_elsewhere(c)) {
        /* unreachable backends are unavailable; one that failed its TLS
         * handshake answered, wrongly: a bad gateway */
        if (eject)
            conn_answer_error(c, 503, "no backend could be reached");
        else
            conn_answer_error(c, 502, why);
        return;
    }
    METRIC_ADD(w->metrics.be[be->stat_slot]->retries[METRICS_RETRY_CONNECT], 1);
    c->uphead_sent = 0;
    c->progress = true;
    conn_attach_upstream(c);
}

/* Opens a new connection to backend <i> (<be>), whose slot the request holds,
 * for the attempt in progress, and binds it. */
static void conn_connect_new(struct conn *c, struct backend_rt *be, int i)
{
    const struct snap *s = c->view->snap;
    int errnum = 0;
    struct upstream *u =
        upstream_connect(c->w, be, &s->backends[i], s->be_tls ? s->be_tls[i] : NULL, &errnum);
    if (u != NULL) {
        conn_bind_upstream(c, u, i);
        return;
    }
    upstream_slot_release(c->w, be);
    be->active++;
    be->bal.active++;
    if (lb_errno_shortage(errnum))
        conn_connect_short(c, be, errnum);
    else
        conn_connect_failed(c, be, strerror(errnum), true);
}

/* 503 with Retry-After: the backends are busy, not broken (queue full or
 * waited too long); the connection stays open when it can. */
static void conn_answer_busy(struct conn *c, const char *why)
{
    static const char retry_after[] = "Retry-After: 1\r\n";
    lb_log(LB_LOG_WARN, "request_error", "503 for %s %s from %s: %s", c->method, c->path,
           c->peer_ip, why);
    conn_answer_local(c, 503, retry_after, sizeof(retry_after) - 1, why);
}

/* Leaves the queue of backend c->q_index: the attempt ends as abandoned and
 * a slot granted meanwhile goes back. */
static void conn_leave_queue(struct conn *c, bool timed_out)
{
    struct backend_rt *be = c->view->be[c->q_index];
    if (connq_cancel(c->qw, timed_out) == CONNQ_SLOT)
        upstream_slot_release(c->w, be);
    free(c->qw);
    c->qw = NULL;
    c->qwait = false;
    be->bal.active++; /* conn_attempt_end() takes both counts back */
    conn_attempt_end(c, be, OUT_ABANDON);
}

/* Picks a backend not tried yet and attaches an upstream connection, a
 * pooled one or a new one (waiting in the backend's queue when it is at its
 * connection limit). Answers the client itself when no backend can take the
 * request. */
static void conn_attach_upstream(struct conn *c)
{
    struct worker *w = c->w;
    struct wview *v = c->view;
    const struct snap *s = v->snap;
    uint64_t now_ms = conn_now_ms(c);
    bool full = false;
    for (;;) {
        int k = c->tries < RETRY_MAX_TRIES ? balancer_pick_at(&v->bal, now_ms, backend_ok, c) : -1;
        if (k < 0) {
            if (full)
                conn_answer_busy(c, "every backend that could take it has a full queue");
            else if (c->tries == 0)
                conn_answer_error(c, 503, no_backend_reason(c));
            else
                conn_answer_error(c, 503, "no other backend could take the request");
            return;
        }
        int i = (int)v->cand[k];
        c->tried[c->tries++] = i;
        struct backend_rt *be = v->be[i];
        enum breaker_decision d = BREAKER_PASS;
        if (s->breaker.enabled && be->breaker != NULL) {
            d = breaker_allow(be->breaker, &s->breaker, now_ms);
            if (d == BREAKER_REJECT)
                continue; /* lost a race for the last trial slot */
        }
        c->bdec = (uint8_t)d;
        c->bdec_valid = true;
        struct upstream *u = upstream_pool_take(w, be, c->req.done);
        if (u != NULL) {
            conn_bind_upstream(c, u, i);
            return;
        }
        if (be->sh != NULL) {
            /* a waiter only where there is a limit to wait for (not on the
             * request path of a backend without one) */
            struct connq_waiter *qw = be->max_conns ? calloc(1, sizeof(*qw)) : NULL;
            if (qw != NULL)
                qw->owner = c;
            enum connq_result r = be->max_conns && qw == NULL
                                      ? CONNQ_FULL
                                      : connq_acquire(&be->sh->q, be->max_conns, be->max_queue, qw,
                                                      &w->inbox, now_ms);
            if (r != CONNQ_QUEUED)
                free(qw);
            if (r == CONNQ_FULL) {
                be->active++;
                be->bal.active++;
                conn_attempt_end(c, be, OUT_ABANDON);
                full = true;
                continue;
            }
            if (r == CONNQ_QUEUED) {
                /* counted as active so that its state stays while it waits */
                be->active++;
                c->qw = qw;
                c->qwait = true;
                c->q_index = i;
                c->tphase = TP_NONE; /* arm the queue timer */
                c->progress = true;
                return;
            }
        }
        conn_connect_new(c, be, i);
        return;
    }
}

void conn_on_grant(struct connq_waiter *cw)
{
    struct conn *c = cw->owner;
    uint8_t grant = cw->grant;
    free(cw);
    c->qw = NULL;
    struct backend_rt *be = c->view->be[c->q_index];
    c->qwait = false;
    be->active--;
    if (grant == CONNQ_SLOT) {
        conn_connect_new(c, be, c->q_index);
    } else {
        /* ejected or out of rotation while it waited: somewhere else, at once */
        be->active++;
        be->bal.active++;
        conn_attempt_end(c, be, OUT_ABANDON);
        if (c->tries < RETRY_MAX_TRIES && conn_has_elsewhere(c))
            conn_attach_upstream(c);
        else
            conn_answer_error(c, 503, "its backend left rotation while it waited");
    }
    if (c->tr.fd >= 0) {
        c->tphase = TP_NONE;
        c->progress = true;
        conn_run(c);
    }
}

/* ---- retries -------------------------------------------------------------- */

/* Whether a retry after a backoff may follow a failed attempt that may have
 * reached its backend (a reset, a timeout, a 502/503/504) or found no local
 * resources (<reason> METRICS_RETRY_CONNECT): retry_decide() says so and
 * another backend is there. Connect failures never come here
 * (conn_connect_failed). */
static bool conn_may_retry(struct conn *c, int reason)
{
    enum retry_failure f = reason == METRICS_RETRY_5XX       ? RETRY_FAIL_5XX
                           : reason == METRICS_RETRY_TIMEOUT ? RETRY_FAIL_TIMEOUT
                           : reason == METRICS_RETRY_RESET   ? RETRY_FAIL_RESET
                                                             : RETRY_FAIL_LOCAL;
    return conn_retry_action(c, f) == RETRY_BACKOFF && conn_has_elsewhere(c);
}

/* After a failed attempt on <failed> (already detached): schedules another
 * on a different backend after a backoff with jitter, within the data
 * plane's retry budget. A retry that finds the budget spent waits for room,
 * a backoff at a time up to RETRY_BUDGET_WAITS times (a burst of failures,
 * such as every request in flight on a backend that died, drains through it
 * instead of failing), then gives up. Returns false when policy says no. */
static bool conn_try_again(struct conn *c, struct backend_rt *failed, int reason)
{
    struct worker *w = c->w;
    const struct snap *s = c->view->snap;
    if (!conn_may_retry(c, reason))
        return false;
    METRIC_ADD(w->metrics.be[failed->stat_slot]->retries[reason], 1);
    c->budget_waits = 0;
    c->in_retry = retry_budget_try(&w->dp->budget);
    uint32_t ms = retry_backoff_ms(c->tries, s->backoff_base_ms, s->backoff_cap_ms, &w->rng);
    if (!c->in_retry)
        ms = s->backoff_cap_ms; /* waiting for room in the budget */
    c->backoff_s = ms / 1000.0;
    c->retry_wait = true;
    c->uphead_sent = 0;
    c->tphase = TP_NONE; /* arm the backoff timer */
    c->progress = true;
    return true;
}

/* The backoff before a retry is over: the retry goes, or waits again for
 * room in the budget, or fails. */
static void conn_backoff_over(struct conn *c)
{
    c->retry_wait = false;
    if (!c->in_retry) {
        c->in_retry = retry_budget_try(&c->w->dp->budget);
        if (!c->in_retry) {
            if (++c->budget_waits < RETRY_BUDGET_WAITS && !c->w->draining &&
                conn_has_elsewhere(c)) {
                c->retry_wait = true;
                c->backoff_s = c->view->snap->backoff_cap_ms / 1000.0;
                c->tphase = TP_NONE;
                return;
            }
            conn_answer_error(c, 502, "the backend failed and the retry budget is spent");
            return;
        }
    }
    conn_attach_upstream(c);
}

/* The frontend's rate limits: false after answering 429. The RateLimit
 * header lines for the response are kept in the connection. */
static bool conn_rate_limit(struct conn *c, const struct http1_msg *m)
{
    const struct snap *s = c->view->snap;
    c->rl_len = 0;
    if (s->rl == NULL || s->rl[c->fe_index] == NULL)
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
    bool ok = limiter_check(s->rl[c->fe_index]->l, (const struct sockaddr *)&c->peer, xff, xff_len,
                            conn_now_ms(c), &v);
    c->rl_len = (uint8_t)limiter_headers(&v, c->rl_hdr, sizeof(c->rl_hdr));
    if (!ok)
        conn_answer_local(c, 429, c->rl_hdr, c->rl_len, "rate limited");
    return ok;
}

/* A parsed head: checks, rewrites and starts proxying it. */
static void conn_start_request(struct conn *c, const struct http1_msg *m, int head_len)
{
    c->meth = m->meth;
    c->minor = m->minor;
    c->keepalive = (m->flags & HTTP1_MF_KEEP_ALIVE) && !c->closing && !c->w->draining;
    slice_copy(c->method, sizeof(c->method), m->method);
    slice_copy(c->path, sizeof(c->path), m->target);
    c->in->start += (uint32_t)head_len;
    c->bytes_in += (uint64_t)head_len;
    stream_init(&c->req, m->framing, m->content_length, false);
    retry_budget_request_started(&c->w->dp->budget, c->w->id);
    c->counted = true;
    memset(&c->resp, 0, sizeof(c->resp));
    c->resp_head_done = false;
    c->resp_keepalive = false;
    c->need_100 = (m->flags & HTTP1_MF_EXPECT_CONTINUE) && !c->req.done;
    c->state = CS_PROXY;
    c->progress = true;
    /* body bytes that came with the head are checked before any backend
     * sees the request: a malformed chunk there is refused outright */
    if (stream_prepare(&c->req, c->in) < 0) {
        conn_answer_error(c, 400, "malformed chunked request body");
        return;
    }
    if (!conn_rate_limit(c, m))
        return;
    if (!build_upstream_head(c, m)) {
        conn_answer_error(c, 431, "request head does not fit in memory");
        return;
    }
    conn_attach_upstream(c);
}

static void conn_parse_head(struct conn *c)
{
    struct worker *w = c->w;
    if (!conn_follow_view(c)) {
        conn_answer_error(c, 503, "the frontend was removed");
        return;
    }
    const struct snap *s = c->view->snap;
    struct http1_msg m;
    memset(&m, 0, sizeof(m));
    m.headers = w->scratch_hdrs;
    m.cap_headers = w->scratch_cap;
    int n = http1_parse_request(&c->parser, c->in->data + c->in->start, worker_buf_len(c->in),
                                &s->limits, &m);
    if (n == HTTP1_INCOMPLETE) {
        if (c->rd_eof) {
            if (worker_buf_len(c->in) > 0)
                conn_answer_error(c, 400, "connection closed in the middle of a request head");
            else
                c->closing = true;
        } else if (c->in->end == c->in->cap) {
            buf_compact(c->in);
            if (c->in->end == c->in->cap) {
                struct buf *g = worker_buf_grow(w, c->in, s->limits.max_header_bytes + 2048);
                if (g == NULL)
                    conn_answer_error(c, 431, "request head does not fit in memory");
                else
                    c->in = g;
            }
        }
        return;
    }
    if (n == HTTP1_INVALID) {
        slice_copy(c->method, sizeof(c->method), m.method);
        slice_copy(c->path, sizeof(c->path), m.target);
        conn_answer_error(c, m.error ? m.error : 400,
                          m.error_reason ? m.error_reason : "malformed request");
        return;
    }
    conn_start_request(c, &m, n);
}

/* ---- the response ------------------------------------------------------- */

static bool build_client_head(struct conn *c, const struct http1_msg *m, bool interim)
{
    struct worker *w = c->w;
    size_t need = 128 + LIMITER_HEADERS_MAX + m->reason.len;
    for (uint32_t i = 0; i < m->n_headers; i++)
        need += m->headers[i].name.len + m->headers[i].value.len + 4;
    if (c->out == NULL)
        c->out = worker_buf_get(w);
    if (c->out == NULL)
        return false;
    buf_compact(c->out);
    if (c->out->cap - c->out->end < need) {
        struct buf *g = worker_buf_grow(w, c->out, (uint32_t)(need + worker_buf_len(c->out)));
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
        if (h->flags & HTTP1_HF_HOP)
            continue;
        if (c->resp.dechunk && h->id == HTTP1_H_TRANSFER_ENCODING)
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
    if (!interim) {
        buf_append(b, c->rl_hdr, c->rl_len);
        if (!c->resp_keepalive)
            buf_appends(b, "Connection: close\r\n");
        else if (c->minor == 0)
            buf_appends(b, "Connection: keep-alive\r\n");
    }
    return buf_appends(b, "\r\n");
}

static void conn_parse_response(struct conn *c)
{
    struct worker *w = c->w;
    struct upstream *u = c->up;
    const struct snap *s = c->view->snap;
    for (;;) {
        struct http1_msg m;
        memset(&m, 0, sizeof(m));
        m.headers = w->scratch_hdrs;
        m.cap_headers = w->scratch_cap;
        int n = http1_parse_response(&u->parser, u->in->data + u->in->start, worker_buf_len(u->in),
                                     &s->limits, c->meth, &m);
        if (n == HTTP1_INCOMPLETE) {
            if (u->in->end == u->in->cap) {
                buf_compact(u->in);
                if (u->in->end == u->in->cap) {
                    struct buf *g = worker_buf_grow(w, u->in, s->limits.max_header_bytes + 2048);
                    if (g == NULL || worker_buf_len(u->in) > s->limits.max_header_bytes) {
                        if (g != NULL)
                            u->in = g;
                        conn_answer_error(c, 502, "response head too large");
                        return;
                    }
                    u->in = g;
                }
            }
            return;
        }
        if (n == HTTP1_INVALID) {
            conn_answer_error(c, 502, m.error_reason ? m.error_reason : "malformed response");
            return;
        }
        if (m.status >= 100 && m.status < 200) {
            if (m.status == 101) {
                conn_answer_error(c, 502, "backend switched protocols unasked");
                return;
            }
            /* we answer 100 ourselves; other interim answers pass to 1.1 clients */
            if (m.status != 100 && c->minor == 1 && !build_client_head(c, &m, true)) {
                conn_answer_error(c, 502, "no memory for the response head");
                return;
            }
            u->in->start += (uint32_t)n;
            http1_parser_init(&u->parser);
            continue;
        }
        if ((m.status == 502 || m.status == 503 || m.status == 504) &&
            conn_may_retry(c, METRICS_RETRY_5XX)) {
            struct backend_rt *be = u->be;
            lb_log(LB_LOG_WARN, "upstream_5xx", "backend %s answered %u to %s %s: retrying", be->id,
                   m.status, c->method, c->path);
            conn_drop_upstream(c, c->view->snap->breaker_ignore_5xx ? OUT_OK : OUT_FAIL);
            conn_try_again(c, be, METRICS_RETRY_5XX);
            return;
        }
        c->status = m.status;
        c->need_100 = false;
        bool dechunk = m.framing == HTTP1_BODY_CHUNKED && c->minor == 0;
        stream_init(&c->resp, m.framing, m.content_length, dechunk);
        c->resp_keepalive = c->keepalive && !c->closing && !c->w->draining &&
                            m.framing != HTTP1_BODY_CLOSE && !dechunk;
        u->in->start += (uint32_t)n;
        u->keepalive = (m.flags & HTTP1_MF_KEEP_ALIVE) != 0;
        c->resp_head_done = true;
        c->resp.ready = 0;
        if (!build_client_head(c, &m, false)) {
            conn_answer_error(c, 502, "no memory for the response head");
            return;
        }
        if (c->uphead && c->uphead_sent == worker_buf_len(c->uphead)) {
            worker_buf_put(w, c->uphead);
            c->uphead = NULL;
        }
        return;
    }
}

/* ---- finishing ---------------------------------------------------------- */

/* Moves a connection between requests onto the worker's newest view, so that
 * no request starts on a snapshot that has been replaced (the runtime state of
 * backends it names may be gone). Returns false, marking the connection for
 * closing, when the new snapshot no longer has its frontend. */
static bool conn_follow_view(struct conn *c)
{
    struct worker *w = c->w;
    struct wview *nv = w->view;
    if (c->view == nv)
        return true;
    const char *fe_key = conn_frontend(c)->key;
    uint32_t i = 0;
    while (i < nv->snap->n_frontends && strcmp(nv->snap->frontends[i].key, fe_key) != 0)
        i++;
    if (i == nv->snap->n_frontends) {
        c->closing = true;
        return false;
    }
    nv->refs++;
    worker_view_unref(w, c->view);
    c->view = nv;
    c->fe_index = i;
    c->fe_stat = nv->fe_stat[i];
    return true;
}

static void conn_set_idle(struct conn *c)
{
    struct worker *w = c->w;
    if (c->in && worker_buf_len(c->in) == 0) {
        worker_buf_put(w, c->in);
        c->in = NULL;
    }
    if (c->out && worker_buf_len(c->out) == 0) {
        worker_buf_put(w, c->out);
        c->out = NULL;
    }
    c->state = c->in ? CS_HEAD : CS_IDLE;
    http1_parser_init(&c->parser);
    c->meth = HTTP1_M_OTHER;
    c->method[0] = c->path[0] = c->req_id[0] = '\0';
    c->bytes_in = c->bytes_out = 0;
    c->status = 0;
    c->reject = -1;
    c->tries = 0;
    c->resp_head_done = false;
    c->body_sent = 0;
    c->t_start = ev_now(w->loop);
    conn_follow_view(c);
}

/* Both directions of the exchange are complete. */
static void conn_finish(struct conn *c)
{
    struct worker *w = c->w;
    struct upstream *u = c->up;
    conn_log_request(c, NULL, NULL);
    bool reusable = u->keepalive && !u->wr_failed && c->req.done && c->resp.done &&
                    c->resp.framing != HTTP1_BODY_CLOSE && !u->eof;
    bool failed = c->status >= 500 && !c->view->snap->breaker_ignore_5xx;
    conn_attempt_end(c, u->be, failed ? OUT_FAIL : OUT_OK);
    c->up = NULL;
    upstream_release(w, u, reusable);
    if (c->uphead) {
        worker_buf_put(w, c->uphead);
        c->uphead = NULL;
    }
    if (!c->resp_keepalive || !c->req.done || c->closing || w->draining) {
        c->closing = true;
        c->state = CS_LINGER;
        return;
    }
    conn_set_idle(c);
}

/* ---- I/O steps ------------------------------------------------------------ */

/* Reads client bytes into c->in when the socket may have some. */
static void conn_read_client(struct conn *c)
{
    struct worker *w = c->w;
    if (!c->readable || c->rd_eof)
        return;
    if (c->in == NULL) {
        c->in = worker_buf_get(w);
        if (c->in == NULL) {
            c->closing = true;
            c->state = CS_LINGER;
            return;
        }
    }
    buf_compact(c->in);
    if (c->in->end == c->in->cap)
        return;
    size_t room = c->in->cap - c->in->end;
    ssize_t n = c->tr.ops->read(&c->tr, c->in->data + c->in->end, room);
    if (n > 0) {
        if (c->state == CS_IDLE) {
            c->state = CS_HEAD;
            c->t_start = ev_now(w->loop);
        }
        c->in->end += (uint32_t)n;
        c->tls_pending = false;
        METRIC_ADD(w->metrics.fe[c->fe_stat].bytes_in, (uint64_t)n);
        c->progress = true;
        if ((size_t)n < room)
            c->readable = false; /* short read: the socket is drained */
    } else if (n == 0) {
        c->rd_eof = true;
        c->progress = true;
    } else if (n == TRANSPORT_AGAIN) {
        c->readable = false;
    } else if (n == TRANSPORT_WANT_WRITE) {
        c->readable = false;
        c->rd_on_write = true;
    } else {
        c->rd_eof = true;
        c->closing = true;
        c->progress = true;
    }
}

/* Sends the request head and body bytes to the backend. */
static void conn_write_upstream(struct conn *c)
{
    struct upstream *u = c->up;
    if (u == NULL || !u->connected || u->wr_failed)
        return;
    struct iovec iov[2];
    int cnt = 0;
    uint32_t head_left = c->uphead ? worker_buf_len(c->uphead) - c->uphead_sent : 0;
    if (head_left) {
        iov[cnt].iov_base = c->uphead->data + c->uphead->start + c->uphead_sent;
        iov[cnt++].iov_len = head_left;
    }
    if (!c->req.done && c->in) {
        if (stream_prepare(&c->req, c->in) < 0) {
            conn_answer_error(c, 400, "malformed chunked request body");
            return;
        }
        if (c->req.ready && !c->need_100) {
            iov[cnt].iov_base = c->in->data + c->in->start;
            iov[cnt++].iov_len = c->req.ready;
        }
    }
    if (cnt == 0)
        return;
    ssize_t n = u->tr.ops->writev(&u->tr, iov, cnt);
    if (n == TRANSPORT_WANT_WRITE)
        return;
    if (n == TRANSPORT_AGAIN) {
        u->wr_on_read = true; /* TLS: the handshake waits for the backend */
        return;
    }
    if (n < 0 && u->tls && !u->tls_done) {
        const char *why = tls_transport_error(&u->tr);
        conn_upstream_failed(c, why[0] ? why : "TLS handshake with the backend failed");
        return;
    }
    if (n < 0) {
        /* keep reading: the backend may have answered before it closed */
        u->wr_failed = true;
        c->progress = true;
        return;
    }
    u->tls_done = true;
    c->progress = true;
    uint32_t h = (uint32_t)n < head_left ? (uint32_t)n : head_left;
    c->uphead_sent += h;
    uint32_t body = (uint32_t)n - h;
    if (body) {
        stream_consumed(&c->req, c->in, body);
        c->body_sent += body;
        c->bytes_in += body;
    }
}

static void conn_read_upstream(struct conn *c)
{
    struct worker *w = c->w;
    struct upstream *u = c->up;
    if (u == NULL || !u->connected || !u->readable || u->eof)
        return;
    if (u->in == NULL) {
        u->in = worker_buf_get(w);
        if (u->in == NULL) {
            conn_answer_error(c, 502, "no memory for the response");
            return;
        }
    }
    buf_compact(u->in);
    if (u->in->end == u->in->cap)
        return;
    size_t room = u->in->cap - u->in->end;
    ssize_t n = u->tr.ops->read(&u->tr, u->in->data + u->in->end, room);
    if (n == TRANSPORT_ERROR && u->tls && !u->tls_done) {
        const char *why = tls_transport_error(&u->tr);
        conn_upstream_failed(c, why[0] ? why : "TLS handshake with the backend failed");
        return;
    }
    if (n == TRANSPORT_WANT_WRITE) {
        u->readable = false;
        u->rd_on_write = true;
        return;
    }
    if (n > 0) {
        u->in->end += (uint32_t)n;
        u->tls_done = true;
        u->got_bytes = true;
        c->progress = true;
        if ((size_t)n < room)
            u->readable = false;
    } else if (n == 0 || n == TRANSPORT_ERROR) {
        u->eof = true;
        u->readable = false;
        c->progress = true;
    } else {
        u->readable = false;
    }
}

/* A backend's chunked body does not parse: a 502 while the client has had
 * nothing of the response (its head waits in c->out), else only a close. */
static void conn_bad_upstream_body(struct conn *c)
{
    lb_log(LB_LOG_WARN, "upstream_bad_body", "malformed chunked body from backend %s",
           c->up->be->id);
    if (c->bytes_out == 0) {
        c->resp_head_done = false;
        conn_answer_error(c, 502, "malformed chunked body from the backend");
        return;
    }
    conn_log_request(c, NULL, NULL);
    conn_drop_upstream(c, OUT_FAIL);
    c->closing = true;
    c->state = CS_LINGER;
    c->progress = true;
}

/* Sends our pending bytes and response body bytes to the client. */
static void conn_write_client(struct conn *c)
{
    struct worker *w = c->w;
    struct iovec iov[2];
    int cnt = 0;
    uint32_t out_left = worker_buf_len(c->out);
    if (out_left) {
        iov[cnt].iov_base = c->out->data + c->out->start;
        iov[cnt++].iov_len = out_left;
    }
    struct upstream *u = c->up;
    if (u && c->resp_head_done && !c->resp.done && u->in) {
        if (stream_prepare(&c->resp, u->in) < 0) {
            conn_bad_upstream_body(c);
            return;
        }
        if (c->resp.ready) {
            iov[cnt].iov_base = u->in->data + u->in->start;
            iov[cnt++].iov_len = c->resp.ready;
        }
    }
    if (cnt == 0)
        return;
    ssize_t n = c->tr.ops->writev(&c->tr, iov, cnt);
    if (n == TRANSPORT_WANT_WRITE)
        return;
    if (n == TRANSPORT_AGAIN) {
        c->wr_on_read = true; /* TLS: the record layer needs to read first */
        return;
    }
    c->wr_on_read = false;
    if (n < 0) {
        c->closing = true;
        c->rd_eof = true;
        conn_drop_upstream(c, OUT_ABANDON);
        c->state = CS_LINGER;
        c->out->start = c->out->end = 0;
        return;
    }
    c->progress = true;
    METRIC_ADD(w->metrics.fe[c->fe_stat].bytes_out, (uint64_t)n);
    uint32_t o = (uint32_t)n < out_left ? (uint32_t)n : out_left;
    c->out->start += o;
    uint32_t body = (uint32_t)n - o;
    c->bytes_out += (uint64_t)n;
    if (body)
        stream_consumed(&c->resp, u->in, body);
}

/* The upstream failed or closed before a response head: retry or answer. */
static void conn_upstream_failed(struct conn *c, const char *why)
{
    struct worker *w = c->w;
    char reason[200]; /* <why> may live in the upstream freed below */
    snprintf(reason, sizeof(reason), "%s", why);
    why = reason;
    struct upstream *u = c->up;
    struct backend_rt *be = u->be;
    /* a TLS handshake that failed sent nothing of the request: like a connect */
    bool connected = u->connected && (!u->tls || u->tls_done);
    if (u->reused && conn_retry_action(c, RETRY_FAIL_POOLED) == RETRY_REPLAY) {
        /* the backend closed an idle pooled connection as we used it: the
         * same attempt goes on over a fresh connection (in the same slot of
         * the backend's count) with the same bytes */
        c->up = NULL;
        upstream_detach(u);
        upstream_close(u);
        int errnum = 0;
        const struct snap *snap = c->view->snap;
        struct upstream *nu =
            upstream_connect(w, be, &snap->backends[c->be_index],
                             snap->be_tls ? snap->be_tls[c->be_index] : NULL, &errnum);
        if (nu != NULL) {
            upstream_attach(nu, conn_on_upstream_ready, c);
            c->up = nu;
            c->uphead_sent = 0;
            c->progress = true;
            return;
        }
        upstream_slot_release(w, be);
        if (lb_errno_shortage(errnum))
            conn_connect_short(c, be, errnum);
        else
            conn_connect_failed(c, be, strerror(errnum), true);
        return;
    }
    if (!connected) {
        /* nothing reached the backend: a refused, reset or timed-out connect
         * ejects it; a failed TLS handshake does not (it answered) */
        bool tcp = !u->connected;
        c->up = NULL;
        upstream_detach(u);
        upstream_free(u);
        conn_connect_failed(c, be, why, tcp);
        return;
    }
    lb_log(LB_LOG_WARN, "upstream_failed", "backend %s (%s): %s", be->id, be->host_port, why);
    conn_drop_upstream(c, OUT_FAIL);
    if (!conn_try_again(c, be, METRICS_RETRY_RESET))
        conn_answer_error(c, 502, why);
}

static void conn_check_connect(struct conn *c)
{
    struct upstream *u = c->up;
    if (u == NULL || u->connected || !u->writable)
        return;
    int soerr = 0;
    socklen_t len = sizeof(soerr);
    if (getsockopt(u->tr.fd, SOL_SOCKET, SO_ERROR, &soerr, &len) == -1)
        soerr = errno;
    if (soerr == 0) {
        /* still in progress unless the socket became writable */
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        if (getpeername(u->tr.fd, (struct sockaddr *)&ss, &sl) == 0) {
            u->connected = true;
            c->progress = true;
        }
        return;
    }
    c->progress = true;
    conn_upstream_failed(c, strerror(soerr));
}

/* ---- the driver ------------------------------------------------------------ */

static uint8_t conn_timer_phase(const struct conn *c)
{
    switch (c->state) {
    case CS_IDLE:
        return c->tls_pending ? TP_HEAD : TP_IDLE; /* a handshake has the head's time */
    case CS_HEAD:
        return TP_HEAD;
    case CS_LINGER:
        return TP_LINGER;
    default:
        break;
    }
    if (c->up == NULL)
        return c->retry_wait ? TP_BACKOFF : c->qwait ? TP_QUEUE : TP_CLIENT;
    if (!c->up->connected)
        return TP_CONNECT;
    if (!c->resp_head_done)
        return (!c->req.done && c->req.ready == 0 && !c->need_100) ? TP_CLIENT : TP_RESPONSE;
    if (worker_buf_len(c->out) || c->resp.ready)
        return TP_CLIENT;
    return TP_UPSTREAM;
}

static double phase_seconds(const struct conn *c, uint8_t phase)
{
    const struct snap_timeouts *t = &c->view->snap->timeouts;
    switch (phase) {
    case TP_IDLE:
        return t->keepalive / 1000.0;
    case TP_HEAD:
        return t->client_header / 1000.0;
    case TP_CLIENT:
        return t->client_body / 1000.0;
    case TP_CONNECT:
        return t->upstream_connect / 1000.0;
    case TP_RESPONSE:
        return t->upstream_header / 1000.0;
    case TP_UPSTREAM:
        return t->upstream_idle / 1000.0;
    case TP_LINGER:
        return LINGER_SECONDS;
    case TP_BACKOFF:
        return c->backoff_s > 0.001 ? c->backoff_s : 0.001;
    case TP_QUEUE:
        return t->queue / 1000.0;
    default:
        return 0;
    }
}

static void conn_arm(struct conn *c)
{
    struct ev_loop *loop = c->w->loop;
    if (c->state == CS_PROXY && c->up != NULL) {
        /* a run cut short by its round limit may have read bytes it has not
         * looked at: what is ready decides what to wait for */
        if (!c->req.done && c->in != NULL && stream_prepare(&c->req, c->in) < 0) {
            conn_answer_error(c, 400, "malformed chunked request body");
        } else if (c->resp_head_done && !c->resp.done && c->up->in != NULL &&
                   stream_prepare(&c->resp, c->up->in) < 0) {
            conn_bad_upstream_body(c);
        }
    }
    uint8_t phase = conn_timer_phase(c);
    /* the head timer counts from the request's first byte and never extends */
    if (phase != c->tphase ||
        (c->progress && phase != TP_HEAD && phase != TP_LINGER && phase != TP_QUEUE)) {
        c->tphase = phase;
        c->timer.repeat = phase_seconds(c, phase);
        ev_timer_again(loop, &c->timer);
    }

    int want = 0;
    switch (c->state) {
    case CS_IDLE:
    case CS_HEAD:
        want = EV_READ;
        break;
    case CS_LINGER:
        want = worker_buf_len(c->out) ? EV_WRITE : EV_READ;
        break;
    case CS_REPLY:
        want = EV_WRITE;
        break;
    default:
        if (worker_buf_len(c->out) || c->resp.ready)
            want |= EV_WRITE;
        if (c->up && !c->req.done && c->in && worker_buf_len(c->in) < c->in->cap && !c->rd_eof &&
            c->req.ready == 0)
            want |= EV_READ;
        break;
    }
    /* Reading stays armed while the socket is not known to hold bytes, even
     * when they are not wanted now: most clients send nothing until they
     * have their answer, so this saves two epoll_ctl calls per request. If
     * bytes do come, the next run sees them and disarms. Level-triggered:
     * a socket left readable fires again at once, so a run cut short by its
     * round limit resumes on the next loop turn. */
    if (!(want & EV_READ) && (c->events & EV_READ) && !c->readable && !c->rd_eof)
        want |= EV_READ;
    if (c->rd_on_write)
        want |= EV_WRITE;
    if (c->wr_on_read && (want & EV_WRITE))
        want = (want & ~EV_WRITE) | EV_READ;
    worker_set_events(loop, &c->io, &c->events, want);

    struct upstream *u = c->up;
    if (u != NULL) {
        int uw = 0;
        if (!u->connected)
            uw = EV_WRITE;
        else {
            uint32_t head_left = c->uphead ? worker_buf_len(c->uphead) - c->uphead_sent : 0;
            if (!u->wr_failed && (head_left || (c->req.ready && !c->need_100)))
                uw |= EV_WRITE;
            if (!u->eof && !c->resp.done && (u->in == NULL || worker_buf_len(u->in) < u->in->cap))
                uw |= EV_READ;
            if (u->rd_on_write)
                uw |= EV_WRITE;
            if (u->wr_on_read)
                uw = (uw & ~EV_WRITE) | EV_READ;
            else if ((u->events & EV_READ) && !u->readable && !u->eof)
                uw |= EV_READ; /* as for the client: disarm only when bytes wait */
        }
        worker_set_events(loop, &u->io, &u->events, uw);
    }
}

static void conn_step_proxy(struct conn *c)
{
    struct upstream *u = c->up;
    if (u == NULL)
        return;
    conn_check_connect(c);
    if (c->state != CS_PROXY || c->up == NULL || !c->up->connected)
        return;
    u = c->up;

    if (!c->req.done && c->need_100 && c->uphead && c->uphead_sent == worker_buf_len(c->uphead)) {
        if (c->out == NULL)
            c->out = worker_buf_get(c->w);
        if (c->out && buf_appends(c->out, "HTTP/1.1 100 Continue\r\n\r\n"))
            c->need_100 = false;
    }
    conn_write_upstream(c);
    if (c->state != CS_PROXY)
        return;
    if (!c->req.done && !c->rd_eof &&
        (c->in == NULL || worker_buf_len(c->in) == 0 || c->req.ready == 0)) {
        conn_read_client(c);
        if (c->rd_eof && !c->req.done) {
            /* the client went away before its body ended */
            c->closing = true;
            conn_drop_upstream(c, OUT_ABANDON);
            c->status = 499;
            conn_log_request(c, NULL, NULL);
            c->state = CS_LINGER;
            return;
        }
    }
    conn_read_upstream(c);
    if (c->state != CS_PROXY || c->up == NULL)
        return;
    u = c->up; /* a failed handshake may have replaced it */
    if (!c->resp_head_done) {
        if (u->in && worker_buf_len(u->in))
            conn_parse_response(c);
        if (c->state != CS_PROXY)
            return;
        if (!c->resp_head_done && u->eof) {
            conn_upstream_failed(c, u->got_bytes ? "backend closed mid response head"
                                                 : "backend closed the connection");
            return;
        }
    }
    if (c->resp_head_done) {
        conn_write_client(c);
        if (c->state != CS_PROXY || c->up == NULL)
            return;
        if (c->resp.framing == HTTP1_BODY_CLOSE && u->eof && worker_buf_len(u->in) == 0)
            c->resp.done = true;
        if (!c->resp.done && u->eof && worker_buf_len(u->in) == 0 && c->resp.ready == 0) {
            lb_log(LB_LOG_WARN, "upstream_truncated", "backend %s closed mid response body",
                   u->be->id);
            c->closing = true;
            conn_log_request(c, NULL, NULL);
            conn_drop_upstream(c, OUT_FAIL);
            c->state = CS_LINGER;
            return;
        }
        if (c->resp.done && worker_buf_len(c->out) == 0) {
            if (!c->req.done)
                c->closing = true;
            conn_finish(c);
        }
    } else if (worker_buf_len(c->out)) {
        conn_write_client(c); /* 100 Continue or interim responses */
    }
}

static void conn_step_linger(struct conn *c)
{
    if (worker_buf_len(c->out)) {
        conn_write_client(c);
        if (c->tr.fd < 0 || worker_buf_len(c->out))
            return;
    }
    if (!c->shut) {
        c->tr.ops->shutdown_write(&c->tr);
        c->shut = true;
        c->tphase = TP_NONE; /* the linger time starts now */
        c->progress = true;
    }
    /* discard what the client still sends, until it closes or time runs out */
    char sink[4096];
    for (int i = 0; i < 16 && !c->rd_eof; i++) {
        ssize_t n = c->tr.ops->read(&c->tr, sink, sizeof(sink));
        if (n > 0)
            continue;
        if (n == TRANSPORT_AGAIN || n == TRANSPORT_WANT_WRITE) {
            c->readable = false;
            return;
        }
        c->rd_eof = true;
    }
    if (c->rd_eof)
        conn_close(c);
}

static void conn_run(struct conn *c)
{
    for (int rounds = 0; rounds < 64; rounds++) {
        c->progress = false;
        switch (c->state) {
        case CS_IDLE:
            if (c->closing || c->w->draining) {
                conn_close(c);
                return;
            }
            conn_read_client(c);
            if (c->rd_eof && c->state == CS_IDLE) {
                conn_close(c);
                return;
            }
            break;
        case CS_HEAD:
            conn_read_client(c);
            if (c->state == CS_HEAD && worker_buf_len(c->in))
                conn_parse_head(c);
            if (c->state == CS_HEAD && worker_buf_len(c->in) == 0 && (c->rd_eof || c->closing)) {
                conn_close(c);
                return;
            }
            break;
        case CS_PROXY:
            conn_step_proxy(c);
            break;
        case CS_LINGER:
            conn_step_linger(c);
            break;
        case CS_REPLY:
            conn_write_client(c);
            if (c->tr.fd >= 0 && c->state == CS_REPLY && worker_buf_len(c->out) == 0) {
                if (c->closing) {
                    c->state = CS_LINGER;
                } else {
                    conn_set_idle(c);
                }
                c->progress = true;
            }
            break;
        }
        if (c->tr.fd < 0)
            return;
        if (!c->progress)
            break;
    }
    conn_arm(c);
}

/* ---- watchers ------------------------------------------------------------ */

static void conn_on_io(struct ev_loop *loop, ev_io *io, int revents)
{
    struct conn *c = io->data;
    if (revents & EV_READ)
        c->readable = true;
    if ((revents & EV_WRITE) && c->rd_on_write) {
        c->rd_on_write = false;
        c->readable = true; /* the read that waited for writability goes again */
    }
    conn_run(c);
}

static void conn_on_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct conn *c = t->data;
    switch (c->tphase) {
    case TP_IDLE:
    case TP_LINGER:
        conn_close(c);
        return;
    case TP_HEAD:
        if (c->tls_pending) {
            tls_transport_note_timeout(&c->tr);
            conn_close(c);
            return;
        }
        conn_answer_error(c, 408, "client sent its request head too slowly");
        break;
    case TP_CONNECT:
        conn_upstream_failed(c, "connect timed out");
        break;
    case TP_RESPONSE:
        if (c->up != NULL) {
            struct backend_rt *be = c->up->be;
            METRIC_ADD(c->w->metrics.be[be->stat_slot]->timeouts, 1);
            if (conn_may_retry(c, METRICS_RETRY_TIMEOUT)) {
                lb_log(LB_LOG_WARN, "upstream_timeout",
                       "backend %s did not answer in time: retrying", be->id);
                conn_drop_upstream(c, OUT_FAIL);
                if (conn_try_again(c, be, METRICS_RETRY_TIMEOUT))
                    break;
                conn_answer_error(c, 504, "backend did not answer in time (retry budget spent)");
                break;
            }
        }
        conn_answer_error(c, 504, "backend did not answer in time");
        break;
    case TP_BACKOFF:
        conn_backoff_over(c);
        break;
    case TP_QUEUE:
        conn_leave_queue(c, true);
        conn_answer_busy(c, "waited too long for a connection to the backend (timeouts.queue)");
        break;
    case TP_CLIENT:
        if (!c->resp_head_done && worker_buf_len(c->out) == 0) {
            conn_answer_error(c, 408, "client body too slow");
        } else {
            c->status = c->status ? c->status : 408;
            conn_log_request(c, NULL, NULL);
            conn_drop_upstream(c, OUT_ABANDON);
            conn_close(c);
            return;
        }
        break;
    case TP_UPSTREAM:
        if (c->up)
            METRIC_ADD(c->w->metrics.be[c->up->be->stat_slot]->timeouts, 1);
        lb_log(LB_LOG_WARN, "upstream_idle_timeout", "backend %s stalled mid response",
               c->up ? c->up->be->id : "-");
        conn_log_request(c, NULL, NULL);
        conn_drop_upstream(c, OUT_FAIL);
        conn_close(c);
        return;
    default:
        conn_close(c);
        return;
    }
    c->tphase = TP_NONE;
    conn_run(c);
}

/* ---- life cycle ------------------------------------------------------------- */

static void conn_close(struct conn *c)
{
    struct worker *w = c->w;
    if (c->tr.fd < 0)
        return;
    if ((c->up != NULL || c->qwait || c->retry_wait) && c->status == 0)
        c->status = 499; /* closed with a request in flight */
    if (c->counted)
        conn_log_request(c, NULL, NULL);
    if (c->qwait)
        conn_leave_queue(c, false);
    conn_drop_upstream(c, OUT_ABANDON);
    worker_set_events(w->loop, &c->io, &c->events, 0);
    ev_timer_stop(w->loop, &c->timer);
    c->tr.ops->release(&c->tr);
    close(c->tr.fd);
    c->tr.fd = -1;
    if (c->in)
        worker_buf_put(w, c->in);
    if (c->out)
        worker_buf_put(w, c->out);
    if (c->uphead)
        worker_buf_put(w, c->uphead);
    c->in = c->out = c->uphead = NULL;
    METRIC_ADD(w->metrics.fe[c->fe_stat].closed, 1);
    worker_view_unref(w, c->view);
    c->view = NULL;
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    w->n_conns--;
    /* the object stays readable (fd -1) until the worker's housekeeping
     * trims the free list, so callers up the stack may still test it */
    c->next = w->free_conns;
    w->free_conns = c;
    w->n_free_conns++;
    worker_conn_closed(w);
}

void conn_accept(struct worker *w, int fd, const struct sockaddr_storage *peer, uint32_t fe_index)
{
    struct wview *v = w->view;
    uint16_t fe_stat = v->fe_stat[fe_index];
    METRIC_ADD(w->metrics.fe[fe_stat].accepted, 1);
    if (w->n_conns >= v->snap->max_connections) {
        METRIC_ADD(w->metrics.fe[fe_stat].rejected[REJECT_CONN_LIMIT], 1);
        METRIC_ADD(w->metrics.fe[fe_stat].closed, 1);
        close(fd);
        return;
    }
    struct conn *c = w->free_conns;
    if (c != NULL) {
        w->free_conns = c->next;
        w->n_free_conns--;
        memset(c, 0, sizeof(*c));
    } else {
        c = calloc(1, sizeof(*c));
    }
    if (c == NULL) {
        METRIC_ADD(w->metrics.fe[fe_stat].closed, 1);
        close(fd);
        return;
    }
    c->w = w;
    struct tls_ctx *tls = v->snap->tls ? v->snap->tls[fe_index] : NULL;
    if (tls != NULL) {
        if (tls_transport_init(&c->tr, fd, tls, NULL) != LB_OK) {
            METRIC_ADD(w->metrics.fe[fe_stat].closed, 1);
            close(fd);
            c->next = w->free_conns;
            w->free_conns = c;
            w->n_free_conns++;
            return;
        }
        c->tls = true;
        c->tls_pending = true;
    } else {
        transport_plain_init(&c->tr, fd);
    }
    c->view = v;
    v->refs++;
    c->fe_index = fe_index;
    c->fe_stat = fe_stat;
    c->reject = -1;
    c->peer = *peer;
    c->readable = true; /* data often arrives with the connection */
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
    ev_io_init(&c->io, conn_on_io, fd, 0);
    c->io.data = c;
    ev_init(&c->timer, conn_on_timer);
    c->timer.data = c;
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    w->n_conns++;
    c->state = CS_IDLE;
    c->t_start = ev_now(w->loop);
    conn_run(c);
}

void conn_drain_all(struct worker *w)
{
    struct conn *c = w->conns;
    while (c != NULL) {
        struct conn *next = c->next;
        c->closing = true;
        if (c->state == CS_IDLE)
            conn_close(c);
        c = next;
    }
}

void conn_close_all(struct worker *w)
{
    while (w->conns != NULL)
        conn_close(w->conns);
}

void conn_free_list_trim(struct worker *w, uint32_t keep)
{
    while (w->n_free_conns > keep) {
        struct conn *c = w->free_conns;
        w->free_conns = c->next;
        w->n_free_conns--;
        free(c);
    }
}

void conn_views_refresh(struct worker *w)
{
    struct conn *c = w->conns;
    while (c != NULL) {
        struct conn *next = c->next;
        if (c->state == CS_IDLE && !conn_follow_view(c))
            conn_close(c);
        c = next;
    }
}
