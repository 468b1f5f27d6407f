/* dataplane/h2stream.c: an HTTP/2 stream's exchange (see h2session_int.h).
 *
 * The request side: the decoded header list becomes the HTTP/1.1 head the
 * exchange starts with (h2req.h), DATA and trailers feed its request body and
 * the client's window is given back as bytes reach the backend. The response
 * side: the exchange's head goes out as HEADERS, its body through an nghttp2
 * data provider (chunked framing taken off, trailers kept for a HEADERS frame
 * of their own), our own answers likewise. Nothing here runs the connection:
 * a stream that moved is marked, and h2session.c steps it. */
#include "h2session_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exchange.h"
#include "h2req.h"
#include "lb_log.h"
#include "upstream.h"
#include "view.h"

static void nv_set(nghttp2_nv *nv, const char *name, size_t nl, const char *value, size_t vl);

static struct h2stream *st_of(struct exchange *x)
{
    return (struct h2stream *)((char *)x - offsetof(struct h2stream, x));
}

/* Stream <st> moved or may move: h2_step_dirty() steps it. */
void h2session__mark(struct h2stream *st)
{
    if (!lb_list_linked(&st->dlink))
        lb_list_add_tail(&st->c->dirty, &st->dlink);
}

/* ---- the request ------------------------------------------------------------ */

/* Gives the client window back for request bytes that reached the backend
 * (or were dropped): nghttp2 sends WINDOW_UPDATE for the stream and the
 * connection. Framing bytes of ours are counted as payload, never more than
 * the payload received. */
void h2session__give_window(struct h2stream *st)
{
    struct h2conn *c = st->c;
    uint64_t sent = st->x.body_sent;
    uint64_t delta = sent - st->sent_seen;
    st->sent_seen = sent;
    uint64_t owe = st->recv_payload - st->consumed;
    bool drop = st->started && (!st->x.live || st->x.req.done);
    uint64_t give = drop ? owe : delta < owe ? delta : owe;
    if (give == 0)
        return;
    st->consumed += give;
    nghttp2_session_consume(c->s, st->id, (size_t)give);
    if (drop && st->reqbuf != NULL && !st->x.live) {
        buf_put(&c->w->bufs, st->reqbuf);
        st->reqbuf = NULL;
    }
}

/* Room for <n> more bytes at the end of the stream's request buffer, within
 * what flow control lets the client send (plus slack for chunk framing). */
bool h2session__req_room(struct h2stream *st, size_t n)
{
    struct h2conn *c = st->c;
    if (st->reqbuf == NULL && (st->reqbuf = buf_get(&c->w->bufs)) == NULL)
        return false;
    struct buf *b = st->reqbuf;
    if (b->cap - b->end >= n)
        return true;
    if (b->start > 0) {
        memmove(b->data, b->data + b->start, b->end - b->start);
        b->end -= b->start;
        b->start = 0;
    }
    if (b->cap - b->end >= n)
        return true;
    uint32_t limit = c->window + c->window / 2 + 4096;
    size_t need = (size_t)buf_len(b) + n;
    if (need > limit)
        return false;
    uint32_t cap = b->cap * 2 > need ? b->cap * 2 : (uint32_t)need;
    if (cap > limit)
        cap = limit;
    struct buf *g = buf_grow(&c->w->bufs, b, cap);
    if (g == NULL)
        return false;
    st->reqbuf = g;
    return true;
}

bool h2session__req_append(struct h2stream *st, const void *p, size_t n)
{
    if (!h2session__req_room(st, n))
        return false;
    return buf_append(st->reqbuf, p, n);
}

/* Keeps one decoded field for the head: 4-byte lengths, then the bytes. */
bool h2session__field_keep(struct h2stream *st, const uint8_t *name, size_t nl,
                           const uint8_t *value, size_t vl)
{
    struct worker *w = st->c->w;
    size_t need = 8 + nl + vl;
    if (st->hdrs == NULL && (st->hdrs = buf_get(&w->bufs)) == NULL)
        return false;
    if (st->hdrs->cap - st->hdrs->end < need) {
        struct buf *g = buf_grow(&w->bufs, st->hdrs, (uint32_t)(st->hdrs->end + need + 1024));
        if (g == NULL)
            return false;
        st->hdrs = g;
    }
    uint32_t l[2] = {(uint32_t)nl, (uint32_t)vl};
    buf_append(st->hdrs, (const char *)l, sizeof(l));
    buf_append(st->hdrs, (const char *)name, nl);
    buf_append(st->hdrs, (const char *)value, vl);
    st->n_fields++;
    return true;
}

/* The header list of the request is complete: it becomes the HTTP/1.1 head
 * the exchange starts with, parsed by the strict parser. */
void h2session__start(struct h2stream *st, bool end_stream)
{
    struct h2conn *c = st->c;
    struct worker *w = c->w;
    struct exchange *x = &st->x;
    struct h2req_field stack[H2_FIELDS_STACK];
    struct h2req_field *f = st->n_fields <= H2_FIELDS_STACK ? stack : NULL;
    st->started = true;
    if (f == NULL && (f = calloc(st->n_fields, sizeof(*f))) == NULL) {
        exchange_fail(x, 503, "no memory for the request head");
        return;
    }
    const char *p = st->hdrs ? st->hdrs->data : NULL;
    for (uint32_t i = 0, off = 0; i < st->n_fields; i++) {
        uint32_t l[2];
        memcpy(l, p + off, sizeof(l));
        f[i] = (struct h2req_field){(const uint8_t *)p + off + 8, l[0],
                                    (const uint8_t *)p + off + 8 + l[0], l[1]};
        off += 8 + l[0] + l[1];
    }
    struct buf *head = buf_get(&w->bufs);
    if (head != NULL && head->cap < st->hdr_bytes + 512) {
        struct buf *g = buf_grow(&w->bufs, head, st->hdr_bytes + 512);
        if (g == NULL)
            buf_put(&w->bufs, head);
        head = g;
    }
    const char *why = NULL;
    int n =
        head ? h2req_render(f, st->n_fields, end_stream, head->data, head->cap, &st->chunked, &why)
             : H2REQ_NOSPACE;
    if (f != stack)
        free(f);
    buf_put(&w->bufs, st->hdrs);
    st->hdrs = NULL;
    if (n == H2REQ_MALFORMED) {
        /* RFC 9113 §8.1.1: malformed is a stream error */
        buf_put(&w->bufs, head);
        METRIC_ADD(w->metrics.fe[x->fe_stat].rejected[REJECT_BAD_REQUEST], 1);
        lb_log(LB_LOG_DEBUG, "http2_malformed", "stream %d from %s: %s", st->id, c->peer_ip, why);
        st->resp_sent = true;
        nghttp2_submit_rst_stream(c->s, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_PROTOCOL_ERROR);
        return;
    }
    if (n < 0) {
        buf_put(&w->bufs, head);
        exchange_fail(x, n == H2REQ_CONNECT ? 501 : 431,
                      why ? why : "no memory for the request head");
        return;
    }
    struct http1_parser parser;
    http1_parser_init(&parser);
    struct http1_msg m;
    memset(&m, 0, sizeof(m));
    m.headers = w->scratch_hdrs;
    m.cap_headers = w->scratch_cap;
    int r = http1_parse_request(&parser, head->data, (size_t)n, &x->view->snap->limits, &m);
    if (r != n) {
        exchange_note_request(x, &m);
        exchange_fail(x, m.error ? m.error : 400,
                      m.error_reason ? m.error_reason : "malformed request");
    } else {
        if (!end_stream && st->reqbuf == NULL)
            st->reqbuf = buf_get(&w->bufs);
        METRIC_ADD(w->metrics.fe[x->fe_stat].h2_streams, 1);
        st->has_cl = m.framing == HTTP1_BODY_LENGTH;
        st->cl = m.content_length;
        exchange_start(x, &m, (uint32_t)n);
    }
    buf_put(&w->bufs, head);
}

/* ---- what the exchange asks of its stream ------------------------------------ */

static ssize_t h2_read_answer(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len,
                              uint32_t *flags, nghttp2_data_source *src, void *user)
{
    struct h2stream *st = src->ptr;
    size_t n = st->ans_len - st->ans_off;
    if (n > len)
        n = len;
    memcpy(buf, st->ans + st->ans_off, n);
    st->ans_off += (uint32_t)n;
    if (st->ans_off == st->ans_len)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

/* Where h2_dechunk() is in a chunked response body (already checked by
 * the exchange: the framing here is well formed). */
enum h2_rc {
    RC_SIZE = 0, /* chunk size digits */
    RC_EXT,      /* a chunk extension, to the end of the line */
    RC_DATA,     /* chunk data */
    RC_DATA_END, /* the CRLF after it */
    RC_TRAILER,  /* the trailer section, to its empty line */
    RC_DONE,
};

static int hexval(uint8_t ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    ch |= 0x20;
    return ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

/* In RC_TRAILER, a line feed ends the section when its line is empty (a
 * carriage return at a line's start is not kept). */
static bool h2_line_start(const struct h2stream *st)
{
    return st->tr_len == 0 || st->tr[st->tr_len - 1] == '\n';
}

/* Takes chunked framing off <p>[0..n): payload goes to <out> (<room>
 * bytes, *copied of them filled), trailer lines into st->tr. Returns the
 * bytes of <p> consumed. */
static size_t h2_dechunk(struct h2stream *st, const uint8_t *p, size_t n, uint8_t *out, size_t room,
                         size_t *copied)
{
    size_t i = 0;
    *copied = 0;
    while (i < n && st->rc_state != RC_DONE) {
        uint8_t ch = p[i];
        switch (st->rc_state) {
        case RC_SIZE:
        case RC_EXT:
            i++;
            if (ch == '\n')
                st->rc_state = st->rc_left ? RC_DATA : RC_TRAILER;
            else if (st->rc_state == RC_SIZE && hexval(ch) >= 0)
                st->rc_left = st->rc_left * 16 + (uint64_t)hexval(ch);
            else if (ch != '\r')
                st->rc_state = RC_EXT;
            break;
        case RC_DATA: {
            size_t m = n - i < st->rc_left ? n - i : (size_t)st->rc_left;
            if (m > room - *copied)
                m = room - *copied;
            if (m == 0)
                return i;
            memcpy(out + *copied, p + i, m);
            *copied += m;
            i += m;
            st->rc_left -= m;
            if (st->rc_left == 0)
                st->rc_state = RC_DATA_END;
            break;
        }
        case RC_DATA_END:
            i++;
            if (ch == '\n')
                st->rc_state = RC_SIZE;
            break;
        default: /* RC_TRAILER */
            i++;
            if (ch == '\n' && h2_line_start(st)) {
                st->rc_state = RC_DONE;
                break;
            }
            if (ch == '\r' && h2_line_start(st))
                break;
            if (st->tr == NULL && (st->tr = malloc(H2_TRAILERS_MAX)) == NULL)
                break;
            if (st->tr_len < H2_TRAILERS_MAX)
                st->tr[st->tr_len++] = (char)ch;
            break;
        }
    }
    return i;
}

/* The backend's trailer section, once its body ended, as a trailing
 * HEADERS frame: names lowercased, fields HTTP/2 cannot carry dropped. */
static bool h2_send_trailers(struct h2stream *st)
{
    nghttp2_nv nv[32];
    size_t n = 0;
    char *p = st->tr, *end = st->tr + st->tr_len;
    while (p < end && n < 32) {
        char *eol = memchr(p, '\n', (size_t)(end - p));
        if (eol == NULL)
            break;
        char *line_end = eol > p && eol[-1] == '\r' ? eol - 1 : eol;
        char *colon = memchr(p, ':', (size_t)(line_end - p));
        if (colon != NULL) {
            for (char *q = p; q < colon; q++)
                *q = (char)(*q >= 'A' && *q <= 'Z' ? *q + 32 : *q);
            char *v = colon + 1, *ve = line_end;
            while (v < ve && (*v == ' ' || *v == '\t'))
                v++;
            while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            if (h2req_name_ok((const uint8_t *)p, (size_t)(colon - p)) &&
                h2req_value_ok((const uint8_t *)v, (size_t)(ve - v)))
                nv_set(&nv[n++], p, (size_t)(colon - p), v, (size_t)(ve - v));
        }
        p = eol + 1;
    }
    return n > 0 && nghttp2_submit_trailer(st->c->s, st->id, nv, n) == 0;
}

/* The response body, pulled by nghttp2 as the client's windows allow. */
static ssize_t h2_read_body(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len,
                            uint32_t *flags, nghttp2_data_source *src, void *user)
{
    struct h2stream *st = src->ptr;
    struct exchange *x = &st->x;
    if (!x->live || x->up == NULL || st->aborted)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    st->in_read = true;
    size_t done = 0;
    while (done < len) {
        struct iovec iov;
        int r = exchange_resp_body(x, &iov);
        if (r < 0 || st->aborted) {
            st->in_read = false;
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        }
        if (r == 0)
            break;
        size_t n, copied;
        if (st->resp_chunked) {
            n = h2_dechunk(st, iov.iov_base, iov.iov_len, buf + done, len - done, &copied);
            if (n == 0)
                break; /* <buf> is full */
        } else {
            n = copied = iov.iov_len < len - done ? iov.iov_len : len - done;
            memcpy(buf + done, iov.iov_base, n);
        }
        exchange_resp_sent(x, (uint32_t)n);
        done += copied;
    }
    x->bytes_out += done;
    if (done > 0)
        h2session__mark(st); /* room upstream: its socket is armed again */
    bool complete = exchange_resp_complete(x);
    st->in_read = false;
    if (!x->live || st->aborted)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    if (complete) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        if (st->tr_len > 0 && h2_send_trailers(st))
            *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
        exchange_finish(x);
        return (ssize_t)done;
    }
    if (done == 0) {
        st->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    return (ssize_t)done;
}

static void h2_on_wake(struct exchange *x)
{
    struct h2stream *st = st_of(x);
    struct h2conn *c = st->c;
    if (c->ep.tr.fd < 0)
        return;
    h2session__mark(st);
    /* run once per loop turn, after every socket that is ready was seen:
     * the responses of many streams leave in one write (one TLS record) */
    if (!c->in_run && !lb_list_linked(&c->pend))
        lb_list_add(&c->w->h2_pending, &c->pend);
}

static void nv_set(nghttp2_nv *nv, const char *name, size_t nl, const char *value, size_t vl)
{
    nv->name = (uint8_t *)name;
    nv->namelen = nl;
    nv->value = (uint8_t *)value;
    nv->valuelen = vl;
    nv->flags = NGHTTP2_NV_FLAG_NONE;
}

/* Header lines "Name: value\r\n" (RateLimit, Retry-After) as fields, names
 * lowercased in place in <lines>. Returns how many were added. */
static size_t nv_lines(nghttp2_nv *nv, size_t room, char *lines, size_t len)
{
    size_t n = 0;
    char *p = lines, *end = lines + len;
    while (p < end && n < room) {
        char *eol = memchr(p, '\r', (size_t)(end - p));
        char *colon = memchr(p, ':', (size_t)(end - p));
        if (eol == NULL || colon == NULL || colon > eol)
            break;
        for (char *q = p; q < colon; q++)
            *q = (char)(*q >= 'A' && *q <= 'Z' ? *q + 32 : *q);
        char *v = colon + 1;
        while (v < eol && *v == ' ')
            v++;
        nv_set(&nv[n++], p, (size_t)(colon - p), v, (size_t)(eol - v));
        p = eol + 2;
    }
    return n;
}

static bool h2_skip_field(const struct http1_header *h)
{
    if (h->flags & HTTP1_HF_HOP)
        return true;
    switch (h->id) {
    case HTTP1_H_CONNECTION:
    case HTTP1_H_KEEP_ALIVE:
    case HTTP1_H_PROXY_CONNECTION:
    case HTTP1_H_TRANSFER_ENCODING:
    case HTTP1_H_UPGRADE:
    case HTTP1_H_TE:
    case HTTP1_H_TRAILER:
        return true;
    default:
        return false;
    }
}

/* The response head as HEADERS: names lowercased in place (the head's bytes
 * are consumed right after), connection-specific fields dropped, a body
 * provider unless the response has none. */
static bool h2_on_head(struct exchange *x, const struct http1_msg *m, bool interim)
{
    struct h2stream *st = st_of(x);
    struct h2conn *c = st->c;
    size_t cap = m->n_headers + 4 + 8;
    nghttp2_nv *nv = malloc(cap * sizeof(*nv));
    if (nv == NULL)
        return false;
    char status[4], cl[24], rl[LIMITER_HEADERS_MAX];
    snprintf(status, sizeof(status), "%03u", m->status % 1000);
    size_t n = 0;
    nv_set(&nv[n++], ":status", 7, status, 3);
    for (uint32_t i = 0; i < m->n_headers; i++) {
        const struct http1_header *h = &m->headers[i];
        if (h2_skip_field(h))
            continue;
        char *name = (char *)h->name.p;
        for (size_t k = 0; k < h->name.len; k++)
            name[k] = (char)(name[k] >= 'A' && name[k] <= 'Z' ? name[k] + 32 : name[k]);
        nv_set(&nv[n++], name, h->name.len, h->value.p, h->value.len);
    }
    int rv;
    if (interim) {
        rv = nghttp2_submit_headers(c->s, NGHTTP2_FLAG_NONE, st->id, NULL, nv, n, NULL);
    } else {
        if ((m->flags & HTTP1_MF_CL_CANONICAL) && m->framing == HTTP1_BODY_LENGTH) {
            int k = snprintf(cl, sizeof(cl), "%llu", (unsigned long long)m->content_length);
            nv_set(&nv[n++], "content-length", 14, cl, (size_t)k);
        }
        memcpy(rl, x->rl_hdr, x->rl_len);
        n += nv_lines(nv + n, cap - n, rl, x->rl_len);
        st->resp_chunked = m->framing == HTTP1_BODY_CHUNKED;
        nghttp2_data_provider prd = {.source.ptr = st, .read_callback = h2_read_body};
        rv = nghttp2_submit_response(c->s, st->id, nv, n, x->resp.done ? NULL : &prd);
        st->resp_sent = true;
    }
    free(nv);
    c->moved = true;
    return rv == 0;
}

static size_t h2_on_answer(struct exchange *x, unsigned status, const char *extra, size_t extra_len,
                           bool close)
{
    struct h2stream *st = st_of(x);
    struct h2conn *c = st->c;
    if (st->resp_sent) {
        nghttp2_submit_rst_stream(c->s, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
        return 0;
    }
    int bl = snprintf(st->ans, sizeof(st->ans), "%u %s\n", status, http1_reason(status));
    st->ans_len = (uint32_t)bl;
    st->ans_off = 0;
    char sts[4], cl[16], lines[LIMITER_HEADERS_MAX + 128];
    snprintf(sts, sizeof(sts), "%03u", status % 1000);
    int cll = snprintf(cl, sizeof(cl), "%d", bl);
    nghttp2_nv nv[16];
    size_t n = 0;
    nv_set(&nv[n++], ":status", 7, sts, 3);
    nv_set(&nv[n++], "content-type", 12, "text/plain", 10);
    nv_set(&nv[n++], "content-length", 14, cl, (size_t)cll);
    if (extra_len > sizeof(lines))
        extra_len = sizeof(lines);
    memcpy(lines, extra, extra_len);
    n += nv_lines(nv + n, 16 - n, lines, extra_len);
    nghttp2_data_provider prd = {.source.ptr = st, .read_callback = h2_read_answer};
    nghttp2_submit_response(c->s, st->id, nv, n, x->meth == HTTP1_M_HEAD ? NULL : &prd);
    st->resp_sent = true;
    c->moved = true;
    return (size_t)bl + 64 + extra_len;
}

static void h2_on_abort(struct exchange *x)
{
    struct h2stream *st = st_of(x);
    st->aborted = true;
    if (!st->in_read)
        nghttp2_submit_rst_stream(st->c->s, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
}

static bool h2_on_continue(struct exchange *x)
{
    struct h2stream *st = st_of(x);
    nghttp2_nv nv;
    nv_set(&nv, ":status", 7, "100", 3);
    return nghttp2_submit_headers(st->c->s, NGHTTP2_FLAG_NONE, st->id, NULL, &nv, 1, NULL) == 0;
}

static const struct sockaddr_storage *h2_on_local(struct exchange *x)
{
    struct h2conn *c = st_of(x)->c;
    return endpoint_local(&c->ep, &c->local, &c->local_known);
}

static const struct exchange_ops h2_exchange_ops = {
    .wake = h2_on_wake,
    .head = h2_on_head,
    .answer = h2_on_answer,
    .abort = h2_on_abort,
    .send_continue = h2_on_continue,
    .local = h2_on_local,
};

/* ---- streams ---------------------------------------------------------------- */

void h2session__stream_free(struct h2stream *st)
{
    struct h2conn *c = st->c;
    struct worker *w = c->w;
    exchange_close(&st->x);
    ev_timer_stop(w->loop, &st->timer);
    buf_put(&w->bufs, st->hdrs);
    buf_put(&w->bufs, st->reqbuf);
    free(st->tr);
    view_unref(w, st->x.view);
    lb_list_del(&st->link);
    if (lb_list_linked(&st->dlink))
        lb_list_del(&st->dlink);
    c->n_streams--;
    w->n_h2_streams--;
    free(st);
}

/* Whether the worker's newest view still has the connection's frontend;
 * <index> (may be NULL) gets its index there. */
static bool h2_frontend_index(const struct h2conn *c, uint32_t *index)
{
    const struct snap *s = c->w->view->snap;
    for (uint32_t i = 0; i < s->n_frontends; i++) {
        if (strcmp(s->frontends[i].key, c->fe_key) == 0) {
            if (index != NULL)
                *index = i;
            return true;
        }
    }
    return false;
}

bool h2session__frontend_exists(const struct h2conn *c)
{
    return h2_frontend_index(c, NULL);
}

struct h2stream *h2session__stream_new(struct h2conn *c, int32_t id, h2session_timer_fn *on_timer)
{
    struct worker *w = c->w;
    struct wview *v = w->view;
    uint32_t i = 0;
    if (!h2_frontend_index(c, &i))
        return NULL;
    struct h2stream *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return NULL;
    st->c = c;
    st->id = id;
    lb_list_init(&st->dlink);
    exchange_init(&st->x, &h2_exchange_ops, w);
    st->x.view = view_ref(v);
    st->x.fe_index = i;
    st->x.fe_stat = v->fe_stat[i];
    st->x.peer = &c->peer;
    st->x.peer_ip = c->peer_ip;
    st->x.tls_tr = c->tls ? &c->ep.tr : NULL;
    st->x.req_in = &st->reqbuf;
    st->x.dechunk_resp = false; /* chunked framing comes off here, trailers kept */
    st->x.h2 = true;
    st->x.keepalive = true;
    st->x.t_start = h2_now(c);
    ev_init(&st->timer, on_timer);
    st->timer.data = st;
    st->tphase = TP_HEAD;
    st->timer.repeat = exchange_wait_seconds(&st->x, TP_HEAD);
    ev_timer_again(w->loop, &st->timer);
    lb_list_add(&c->streams, &st->link);
    c->n_streams++;
    w->n_h2_streams++;
    return st;
}

static void h2_stream_arm(struct h2stream *st, bool moved)
{
    struct exchange *x = &st->x;
    if (!st->started)
        return; /* the head timer runs */
    uint8_t phase = x->live ? exchange_wait(x, false) : TP_NONE;
    if (x->rearm) {
        x->rearm = false;
        st->tphase = TP_NONE;
    }
    if (phase == TP_NONE) {
        ev_timer_stop(st->c->w->loop, &st->timer);
        st->tphase = TP_NONE;
        return;
    }
    if (phase != st->tphase || (moved && phase != TP_QUEUE)) {
        st->tphase = phase;
        st->timer.repeat = exchange_wait_seconds(x, phase);
        ev_timer_again(st->c->w->loop, &st->timer);
    }
    exchange_arm(x);
}

void h2session__stream_step(struct h2stream *st)
{
    struct h2conn *c = st->c;
    struct exchange *x = &st->x;
    bool moved = false;
    for (int round = 0; round < 16 && x->live; round++) {
        x->progress = false;
        if (x->up == NULL)
            break; /* a backoff, a queue */
        exchange_send(x);
        h2session__give_window(st);
        if (!x->live || x->up == NULL || !x->up->connected)
            break;
        exchange_receive(x);
        if (!x->live || x->up == NULL)
            break;
        if (x->resp_head_done && x->resp.done && !st->deferred) {
            exchange_finish(x); /* a response without a body, all sent as HEADERS */
            break;
        }
        if (st->deferred) {
            st->deferred = false;
            nghttp2_session_resume_data(c->s, st->id);
            c->moved = true;
        }
        if (!x->progress)
            break;
        moved = true;
    }
    if (x->live)
        exchange_check_bodies(x);
    h2session__give_window(st);
    h2_stream_arm(st, moved);
}

/* DATA disagrees with content-length (RFC 9113 §8.1.1): a stream error,
 * and the backend, which was promised <cl> bytes, never gets more. */
void h2session__bad_length(struct h2stream *st)
{
    struct exchange *x = &st->x;
    if (x->live)
        exchange_abandon(x, 400);
    if (!st->resp_sent)
        METRIC_ADD(st->c->w->metrics.fe[x->fe_stat].rejected[REJECT_BAD_REQUEST], 1);
    st->resp_sent = true;
    nghttp2_submit_rst_stream(st->c->s, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_PROTOCOL_ERROR);
    h2session__give_window(st);
}

/* The client's side of a stream ended (END_STREAM). */
void h2session__request_end(struct h2stream *st)
{
    st->end_req = true;
    h2session__mark(st);
    if (st->has_cl && st->recv_payload != st->cl) {
        h2session__bad_length(st);
        return;
    }
    if (!st->chunked || !st->x.live)
        return;
    const char *tail = st->trailers ? "\r\n" : "0\r\n\r\n";
    if (!h2session__req_append(st, tail, strlen(tail)))
        nghttp2_submit_rst_stream(st->c->s, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
}
