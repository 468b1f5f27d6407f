/* dataplane/h2session.c: the HTTP/2 client session.
 *
 * One connection: nghttp2 reads the client's bytes (h2_read) and calls back
 * per frame, header and DATA chunk; streams it touched are stepped (their
 * exchanges send head and body upstream and read the response); then what
 * nghttp2 has to say goes out (h2_flush), pulling response bodies through a
 * data provider. An exchange's upstream socket wakes its stream alone.
 * Nothing here calls into nghttp2's receive or send from inside one of its
 * callbacks, and nothing is freed under a caller: streams are freed by
 * nghttp2's stream-close callback (never up the stack of their own code),
 * connections by the worker's housekeeping. */
#include "h2session.h"

#include <arpa/inet.h>
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "endpoint.h"
#include "exchange.h"
#include "h2req.h"
#include "lb_log.h"
#include "tls.h"
#include "upstream.h"
#include "view.h"
#include "worker_types.h"

#define H2_OUT_SOFT        (64u * 1024u) /* output held before we stop producing and reading */
#define H2_WINDOW_S        10.0          /* abuse counters count over this window */
#define H2_MAX_RST         200           /* RST_STREAM from the client per window */
#define H2_MAX_SETTINGS    100           /* SETTINGS (not ACK) per window */
#define H2_MAX_PING        100           /* PING (not ACK) per window */
#define H2_MAX_PRIORITY    1000          /* PRIORITY per window */
#define H2_MAX_SMALL_WU    1000          /* WINDOW_UPDATE under 1 KiB per window */
#define H2_MAX_EMPTY       100           /* DATA without payload or END_STREAM per window */
#define H2_MAX_CONT        8             /* CONTINUATION frames per header block */
#define H2_FIELDS_STACK    64
#define H2_TRAILERS_MAX    4096 /* trailer section bytes of a response kept for HEADERS */
#define H2_CONN_WINDOW_MAX (64u * 1024u * 1024u)
/* nghttp2's frame buffer chunk (NGHTTP2_FRAMEBUF_CHUNKLEN: frame header, pad
 * length, a full 16 KiB payload): a session keeps one for its whole life */
#define H2_FRAMEBUF_LEN 16394
#define H2_FRAMEBUFS    6 /* chunks mapped per connection; more go to malloc */

enum h2_count {
    H2C_RST = 0,
    H2C_SETTINGS,
    H2C_PING,
    H2C_PRIORITY,
    H2C_SMALL_WU,
    H2C_EMPTY,
    H2C_DATA_SENT, /* not a limit: DATA frames we sent, which small updates answer */
    H2C_N,
};

struct h2stream;

struct h2conn {
    struct worker *w;
    struct lb_list link;      /* in w->h2conns */
    struct lb_list pend;      /* in w->h2_pending: a stream was woken */
    struct h2conn *free_next; /* in w->h2_free once closed */
    struct endpoint ep;       /* ep.in: client bytes not yet given to nghttp2 */
    ev_timer timer;           /* preface, idle, slow reader */
    uint8_t tphase;           /* enum timer_phase of <timer> */
    nghttp2_session *s;
    struct buf *out;        /* bytes nghttp2 produced, not yet written */
    struct lb_list streams; /* struct h2stream.link */
    struct lb_list dirty;   /* struct h2stream.dlink */
    uint32_t n_streams;
    char fe_key[80]; /* the frontend, by key, across snapshots */
    uint16_t fe_stat;
    uint32_t max_header_list;
    uint32_t window;
    bool tls;
    bool in_run;   /* inside h2_run: a wake only marks its stream */
    bool moved;    /* the current round moved bytes */
    bool fatal;    /* close now (I/O failed, nghttp2 failed) */
    bool calmed;   /* GOAWAY ENHANCE_YOUR_CALM queued */
    bool draining; /* GOAWAY NO_ERROR queued */
    bool got_frame;
    bool local_known;
    uint8_t n_cont; /* CONTINUATION frames of the header block being read */
    double win_start;
    uint32_t counts[H2C_N];
    char peer_ip[INET6_ADDRSTRLEN];
    struct sockaddr_storage peer;
    struct sockaddr_storage local;
    /* nghttp2's frame buffers, mapped on their own pages: dead between frames,
     * so an idle connection gives their pages back (MADV_DONTNEED) */
    void *fbuf[H2_FRAMEBUFS];
    size_t fbuf_len[H2_FRAMEBUFS];
    bool fbuf_resident; /* a frame was produced since the pages were given back */
};

struct h2stream {
    struct h2conn *c;
    struct lb_list link;  /* in c->streams */
    struct lb_list dlink; /* in c->dirty: touched, to be stepped */
    int32_t id;
    ev_timer timer;
    uint8_t tphase;
    bool started;      /* the exchange was started (or answered) */
    bool chunked;      /* we frame the request's DATA in chunks */
    bool trailers;     /* a trailer section was begun in <reqbuf> */
    bool end_req;      /* the client's side of the stream ended */
    bool deferred;     /* the data provider waits for bytes */
    bool resp_sent;    /* a response (or answer) was submitted */
    bool aborted;      /* the exchange gave up on a begun response */
    bool in_read;      /* inside the data provider */
    bool oversize;     /* the header list went over the limit */
    bool has_cl;       /* the request has a content-length: <cl> */
    bool resp_chunked; /* the response body comes chunked: h2_dechunk() takes the framing off */
    uint8_t rc_state;  /* enum h2_rc */
    uint16_t tr_len;   /* bytes in <tr> */
    uint64_t rc_left;  /* chunk bytes still to come */
    char *tr;          /* the response's trailer section (raw lines), or NULL */
    uint64_t cl;
    struct buf *hdrs; /* decoded fields while the head is read: len-prefixed pairs */
    uint32_t n_fields;
    uint32_t hdr_bytes;
    struct buf *reqbuf; /* request body for the exchange (x.req_in) */
    uint64_t recv_payload;
    uint64_t consumed;
    uint64_t sent_seen;
    uint32_t ans_len, ans_off;
    char ans[96]; /* an answer of ours: its body */
    struct exchange x;
};

static void h2_run(struct h2conn *c);
static void h2_idle_trim(struct h2conn *c);
static void nv_set(nghttp2_nv *nv, const char *name, size_t nl, const char *value, size_t vl);
static void h2_close(struct h2conn *c);
static void h2_stream_step(struct h2stream *st);

static struct h2stream *st_of(struct exchange *x)
{
    return (struct h2stream *)((char *)x - offsetof(struct h2stream, x));
}

/* Stream <st> moved or may move: h2_step_dirty() steps it. */
static void h2_mark(struct h2stream *st)
{
    if (!lb_list_linked(&st->dlink))
        lb_list_add_tail(&st->c->dirty, &st->dlink);
}

static double h2_now(const struct h2conn *c)
{
    return ev_now(c->w->loop);
}

/* ---- abuse ------------------------------------------------------------------ */

static void h2_calm(struct h2conn *c, enum metrics_h2_abuse kind, const char *what)
{
    if (c->calmed)
        return;
    c->calmed = true;
    METRIC_ADD(c->w->metrics.fe[c->fe_stat].h2_abuse[kind], 1);
    lb_log(LB_LOG_WARN, "http2_abuse", "connection from %s: %s: GOAWAY ENHANCE_YOUR_CALM",
           c->peer_ip, what);
    nghttp2_session_terminate_session(c->s, NGHTTP2_ENHANCE_YOUR_CALM);
}

/* Counts one frame of kind <k>; false (and the connection calmed) past <max>
 * in the current window. */
static bool h2_count(struct h2conn *c, enum h2_count k, uint32_t max)
{
    double now = h2_now(c);
    if (now - c->win_start >= H2_WINDOW_S) {
        c->win_start = now;
        memset(c->counts, 0, sizeof(c->counts));
    }
    if (++c->counts[k] <= max)
        return true;
    static const struct {
        enum metrics_h2_abuse kind;
        const char *what;
    } map[H2C_N] = {
        [H2C_RST] = {H2_ABUSE_RAPID_RESET, "too many streams reset (rapid reset)"},
        [H2C_SETTINGS] = {H2_ABUSE_SETTINGS, "SETTINGS flood"},
        [H2C_PING] = {H2_ABUSE_PING, "PING flood"},
        [H2C_PRIORITY] = {H2_ABUSE_PRIORITY, "PRIORITY flood"},
        [H2C_SMALL_WU] = {H2_ABUSE_WINDOW_UPDATE, "WINDOW_UPDATE flood"},
        [H2C_EMPTY] = {H2_ABUSE_EMPTY_DATA, "empty DATA flood"},
    };
    h2_calm(c, map[k].kind, map[k].what);
    return false;
}

/* ---- the request ------------------------------------------------------------ */

/* Gives the client window back for request bytes that reached the backend
 * (or were dropped): nghttp2 sends WINDOW_UPDATE for the stream and the
 * connection. Framing bytes of ours are counted as payload, never more than
 * the payload received. */
static void h2_give_window(struct h2stream *st)
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
static bool h2_req_room(struct h2stream *st, size_t n)
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

static bool h2_req_append(struct h2stream *st, const void *p, size_t n)
{
    if (!h2_req_room(st, n))
        return false;
    return buf_append(st->reqbuf, p, n);
}

/* Keeps one decoded field for the head: 4-byte lengths, then the bytes. */
static bool h2_field_keep(struct h2stream *st, const uint8_t *name, size_t nl, const uint8_t *value,
                          size_t vl)
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
static void h2_start(struct h2stream *st, bool end_stream)
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
        h2_mark(st); /* room upstream: its socket is armed again */
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
    h2_mark(st);
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

static void h2_stream_on_timer(struct ev_loop *loop, ev_timer *t, int revents);

static void h2_stream_free(struct h2stream *st)
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

static bool h2_frontend_exists(const struct h2conn *c)
{
    return h2_frontend_index(c, NULL);
}

/* A new request stream on the worker's newest view, or NULL (refused). */
static struct h2stream *h2_stream_new(struct h2conn *c, int32_t id)
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
    ev_init(&st->timer, h2_stream_on_timer);
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

static void h2_stream_step(struct h2stream *st)
{
    struct h2conn *c = st->c;
    struct exchange *x = &st->x;
    bool moved = false;
    for (int round = 0; round < 16 && x->live; round++) {
        x->progress = false;
        if (x->up == NULL)
            break; /* a backoff, a queue */
        exchange_send(x);
        h2_give_window(st);
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
    h2_give_window(st);
    h2_stream_arm(st, moved);
}

static void h2_stream_on_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct h2stream *st = t->data;
    struct h2conn *c = st->c;
    uint8_t phase = st->tphase;
    st->tphase = TP_NONE;
    if (phase == TP_HEAD) {
        nghttp2_submit_rst_stream(c->s, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_CANCEL);
    } else if (st->x.live && exchange_on_timeout(&st->x, phase, false)) {
        nghttp2_submit_rst_stream(c->s, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_CANCEL);
    } else {
        h2_mark(st);
    }
    h2_run(c);
}

/* ---- nghttp2 callbacks ------------------------------------------------------- */

static int h2_on_begin_frame(nghttp2_session *s, const nghttp2_frame_hd *hd, void *user)
{
    struct h2conn *c = user;
    if (hd->type == NGHTTP2_HEADERS) {
        c->n_cont = 0;
    } else if (hd->type == NGHTTP2_CONTINUATION && ++c->n_cont > H2_MAX_CONT) {
        h2_calm(c, H2_ABUSE_CONTINUATION, "CONTINUATION flood");
    }
    return 0;
}

static int h2_on_begin_headers(nghttp2_session *s, const nghttp2_frame *f, void *user)
{
    struct h2conn *c = user;
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    struct worker *w = c->w;
    uint32_t cap = w->view->snap->max_connections;
    struct h2stream *st = NULL;
    if (w->n_h2_streams >= cap) {
        METRIC_ADD(w->metrics.fe[c->fe_stat].h2_abuse[H2_ABUSE_STREAMS], 1);
    } else if (!c->draining && !w->draining) {
        st = h2_stream_new(c, f->hd.stream_id);
        if (st == NULL && !h2_frontend_exists(c)) {
            /* a new snapshot removed the frontend: no new stream here */
            c->draining = true;
            nghttp2_submit_goaway(s, NGHTTP2_FLAG_NONE,
                                  f->hd.stream_id > 2 ? f->hd.stream_id - 2 : 0, NGHTTP2_NO_ERROR,
                                  NULL, 0);
        }
    }
    if (st == NULL) {
        nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, f->hd.stream_id, NGHTTP2_REFUSED_STREAM);
        return 0;
    }
    nghttp2_session_set_stream_user_data(s, f->hd.stream_id, st);
    return 0;
}

static int h2_on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nl,
                        const uint8_t *value, size_t vl, uint8_t flags, void *user)
{
    struct h2conn *c = user;
    struct h2stream *st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
    if (st == NULL || f->hd.type != NGHTTP2_HEADERS || st->oversize)
        return 0;
    st->hdr_bytes += (uint32_t)(nl + vl + 32);
    if (st->hdr_bytes > c->max_header_list) {
        st->oversize = true;
        h2_calm(c, H2_ABUSE_HEADER_LIST, "header list over http2MaxHeaderListSize");
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    if (f->headers.cat == NGHTTP2_HCAT_REQUEST)
        return h2_field_keep(st, name, nl, value, vl) ? 0 : NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    /* a trailer section: forwarded where chunked framing carries it */
    if (!st->chunked || !st->x.live)
        return 0;
    if (!h2req_name_ok(name, nl) || !h2req_value_ok(value, vl))
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    bool ok = (st->trailers || h2_req_append(st, "0\r\n", 3)) && h2_req_append(st, name, nl) &&
              h2_req_append(st, ": ", 2) && h2_req_append(st, value, vl) &&
              h2_req_append(st, "\r\n", 2);
    st->trailers = true;
    return ok ? 0 : NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
}

/* DATA disagrees with content-length (RFC 9113 §8.1.1): a stream error,
 * and the backend, which was promised <cl> bytes, never gets more. */
static void h2_bad_length(struct h2stream *st)
{
    struct exchange *x = &st->x;
    if (x->live)
        exchange_abandon(x, 400);
    if (!st->resp_sent)
        METRIC_ADD(st->c->w->metrics.fe[x->fe_stat].rejected[REJECT_BAD_REQUEST], 1);
    st->resp_sent = true;
    nghttp2_submit_rst_stream(st->c->s, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_PROTOCOL_ERROR);
    h2_give_window(st);
}

static int h2_on_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data,
                      size_t len, void *user)
{
    struct h2stream *st = nghttp2_session_get_stream_user_data(s, id);
    if (st == NULL)
        return 0;
    st->recv_payload += len;
    h2_mark(st);
    if (st->has_cl && st->recv_payload > st->cl) {
        h2_bad_length(st);
        return 0;
    }
    if (!st->x.live || st->x.req.done || len == 0) {
        h2_give_window(st); /* nobody takes it: dropped */
        return 0;
    }
    bool ok = true;
    if (st->chunked) {
        char hdr[16];
        int n = snprintf(hdr, sizeof(hdr), "%zx\r\n", len);
        ok = h2_req_room(st, (size_t)n + len + 2) && h2_req_append(st, hdr, (size_t)n) &&
             h2_req_append(st, data, len) && h2_req_append(st, "\r\n", 2);
    } else {
        ok = h2_req_append(st, data, len);
    }
    if (!ok) {
        /* flow control bounds the payload: only tiny frames overflow */
        h2_calm(st->c, H2_ABUSE_EMPTY_DATA, "DATA frames too small for their framing");
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    return 0;
}

/* The client's side of a stream ended (END_STREAM). */
static void h2_request_end(struct h2stream *st)
{
    st->end_req = true;
    h2_mark(st);
    if (st->has_cl && st->recv_payload != st->cl) {
        h2_bad_length(st);
        return;
    }
    if (!st->chunked || !st->x.live)
        return;
    const char *tail = st->trailers ? "\r\n" : "0\r\n\r\n";
    if (!h2_req_append(st, tail, strlen(tail)))
        nghttp2_submit_rst_stream(st->c->s, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
}

/* Control frames: counted against the flood limits. */
static void h2_count_frame(struct h2conn *c, const nghttp2_frame *f)
{
    switch (f->hd.type) {
    case NGHTTP2_RST_STREAM:
        h2_count(c, H2C_RST, H2_MAX_RST);
        break;
    case NGHTTP2_SETTINGS:
        if (!(f->hd.flags & NGHTTP2_FLAG_ACK))
            h2_count(c, H2C_SETTINGS, H2_MAX_SETTINGS);
        break;
    case NGHTTP2_PING:
        if (!(f->hd.flags & NGHTTP2_FLAG_ACK))
            h2_count(c, H2C_PING, H2_MAX_PING);
        break;
    case NGHTTP2_PRIORITY:
        h2_count(c, H2C_PRIORITY, H2_MAX_PRIORITY);
        break;
    case NGHTTP2_WINDOW_UPDATE:
        /* a client may acknowledge each DATA frame of ours on the stream and
         * the connection (python-h2 does): those are not a flood */
        if (f->window_update.window_size_increment < 1024)
            h2_count(c, H2C_SMALL_WU, H2_MAX_SMALL_WU + 2 * c->counts[H2C_DATA_SENT]);
        break;
    case NGHTTP2_DATA:
        if (f->hd.length == 0 && !(f->hd.flags & NGHTTP2_FLAG_END_STREAM))
            h2_count(c, H2C_EMPTY, H2_MAX_EMPTY);
        break;
    default:
        break;
    }
}

static int h2_on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *user)
{
    struct h2conn *c = user;
    c->got_frame = true;
    c->moved = true;
    h2_count_frame(c, f);
    if (f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA)
        return 0;
    struct h2stream *st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
    if (st == NULL)
        return 0;
    bool end = (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST && !st->started) {
        h2_start(st, end);
        h2_mark(st);
    }
    if (end)
        h2_request_end(st);
    return 0;
}

static int h2_on_frame_send(nghttp2_session *s, const nghttp2_frame *f, void *user)
{
    struct h2conn *c = user;
    if (f->hd.type == NGHTTP2_DATA && c->counts[H2C_DATA_SENT] < UINT32_MAX / 4)
        c->counts[H2C_DATA_SENT]++;
    if ((f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA) ||
        !(f->hd.flags & NGHTTP2_FLAG_END_STREAM))
        return 0;
    /* our response is complete while the client still sends its body: it
     * may stop (RFC 9113 §8.1) */
    if (!nghttp2_session_get_stream_remote_close(s, f->hd.stream_id))
        nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, f->hd.stream_id, NGHTTP2_NO_ERROR);
    return 0;
}

static int h2_on_stream_close(nghttp2_session *s, int32_t id, uint32_t error, void *user)
{
    struct h2stream *st = nghttp2_session_get_stream_user_data(s, id);
    if (st == NULL)
        return 0;
    nghttp2_session_set_stream_user_data(s, id, NULL);
    h2_stream_free(st);
    return 0;
}

/* ---- the connection ----------------------------------------------------------- */

static void h2_read(struct h2conn *c)
{
    struct worker *w = c->w;
    for (int i = 0; i < 16 && !c->fatal; i++) {
        struct buf *in = c->ep.in;
        if (buf_len(in) > 0) {
            ssize_t r =
                nghttp2_session_mem_recv(c->s, (const uint8_t *)in->data + in->start, buf_len(in));
            if (r < 0) {
                if (r == NGHTTP2_ERR_FLOODED)
                    h2_calm(c, H2_ABUSE_SETTINGS, "acknowledgements not read (flood)");
                lb_log(LB_LOG_DEBUG, "http2_error", "connection from %s: %s", c->peer_ip,
                       nghttp2_strerror((int)r));
                c->fatal = true;
                return;
            }
            in->start += (uint32_t)r;
            c->moved = true;
        }
        if (in != NULL && buf_len(in) == 0) {
            buf_put(&w->bufs, in);
            c->ep.in = NULL;
        }
        if (!c->ep.readable || c->ep.eof || buf_len(c->out) >= H2_OUT_SOFT ||
            !nghttp2_session_want_read(c->s))
            return;
        ssize_t n = endpoint_read(&c->ep, &w->bufs);
        if (n > 0) {
            METRIC_ADD(w->metrics.fe[c->fe_stat].bytes_in, (uint64_t)n);
        } else if (n == 0 || n == TRANSPORT_ERROR || n == ENDPOINT_NOMEM) {
            c->ep.eof = true;
            return;
        } else {
            return;
        }
    }
}

/* Steps the streams callbacks touched. */
static void h2_step_dirty(struct h2conn *c)
{
    /* a stream stepped may be marked again (its wake): once more at most */
    for (uint32_t i = 0; i < 2 * c->n_streams + 16 && !lb_list_empty(&c->dirty); i++) {
        struct h2stream *st = LB_LIST_ENTRY(c->dirty.next, struct h2stream, dlink);
        lb_list_del(&st->dlink);
        h2_stream_step(st);
    }
}

static bool h2_out_room(struct h2conn *c, size_t n)
{
    struct worker *w = c->w;
    if (c->out == NULL && (c->out = buf_get(&w->bufs)) == NULL)
        return false;
    buf_compact(c->out);
    if (c->out->cap - c->out->end >= n)
        return true;
    struct buf *g = buf_grow(&w->bufs, c->out, (uint32_t)(buf_len(c->out) + n + 1024));
    if (g == NULL)
        return false;
    c->out = g;
    return true;
}

static void h2_flush(struct h2conn *c)
{
    struct worker *w = c->w;
    for (int i = 0; i < 64 && !c->fatal; i++) {
        while (buf_len(c->out) < H2_OUT_SOFT) {
            const uint8_t *data;
            ssize_t n = nghttp2_session_mem_send(c->s, &data);
            if (n < 0) {
                c->fatal = true;
                return;
            }
            if (n == 0)
                break;
            c->fbuf_resident = true;
            if (!h2_out_room(c, (size_t)n)) {
                c->fatal = true;
                return;
            }
            buf_append(c->out, (const char *)data, (size_t)n);
        }
        if (buf_len(c->out) == 0)
            break;
        struct iovec iov = {c->out->data + c->out->start, buf_len(c->out)};
        ssize_t n = endpoint_writev(&c->ep, &iov, 1);
        if (n == TRANSPORT_WANT_WRITE || n == TRANSPORT_AGAIN)
            break;
        if (n < 0) {
            c->fatal = true;
            return;
        }
        c->out->start += (uint32_t)n;
        c->moved = true;
        METRIC_ADD(w->metrics.fe[c->fe_stat].bytes_out, (uint64_t)n);
        if ((size_t)n < iov.iov_len)
            break;
    }
    if (c->out != NULL && buf_len(c->out) == 0) {
        buf_put(&w->bufs, c->out);
        c->out = NULL;
    }
}

static void h2_arm(struct h2conn *c, bool moved)
{
    uint8_t phase = !c->got_frame          ? TP_HEAD
                    : buf_len(c->out) != 0 ? TP_CLIENT
                    : c->n_streams == 0    ? TP_IDLE
                                           : TP_NONE;
    if (phase == TP_IDLE)
        h2_idle_trim(c);
    if (phase == TP_NONE) {
        ev_timer_stop(c->w->loop, &c->timer);
        c->tphase = TP_NONE;
    } else if (phase != c->tphase || (moved && phase != TP_HEAD)) {
        const struct snap_timeouts *t = &c->w->view->snap->timeouts;
        uint32_t ms = phase == TP_HEAD   ? t->client_header
                      : phase == TP_IDLE ? t->keepalive
                                         : t->client_body;
        c->tphase = phase;
        c->timer.repeat = ms / 1000.0;
        ev_timer_again(c->w->loop, &c->timer);
    }
    int want = 0;
    if (!c->ep.eof && buf_len(c->out) < H2_OUT_SOFT)
        want |= EV_READ;
    if (buf_len(c->out) != 0)
        want |= EV_WRITE;
    endpoint_arm(c->w->loop, &c->ep, want);
}

static bool h2_over(struct h2conn *c)
{
    if (c->fatal || c->ep.tr.fd < 0)
        return true;
    if (c->ep.eof && (buf_len(c->out) == 0 || c->calmed))
        return true;
    return !nghttp2_session_want_read(c->s) && !nghttp2_session_want_write(c->s) &&
           buf_len(c->out) == 0;
}

static void h2_run(struct h2conn *c)
{
    bool moved = false;
    c->in_run = true;
    for (int round = 0; round < 16; round++) {
        c->moved = false;
        h2_read(c);
        h2_step_dirty(c);
        h2_flush(c);
        if (c->fatal || !c->moved)
            break;
        moved = true;
    }
    /* what the last round left: armed, and any output queued */
    h2_step_dirty(c);
    h2_flush(c);
    c->in_run = false;
    if (h2_over(c)) {
        h2_close(c);
        return;
    }
    h2_arm(c, moved);
}

static void h2_on_io(struct ev_loop *loop, ev_io *io, int revents)
{
    struct h2conn *c = io->data;
    endpoint_on_events(&c->ep, revents);
    h2_run(c);
}

static void h2_on_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct h2conn *c = t->data;
    if (c->tphase == TP_CLIENT) {
        METRIC_ADD(c->w->metrics.fe[c->fe_stat].h2_abuse[H2_ABUSE_SLOW_READER], 1);
        lb_log(LB_LOG_WARN, "http2_abuse", "connection from %s: does not read: closed", c->peer_ip);
    } else if (c->tphase == TP_IDLE) {
        /* idle past timeouts.keepalive: say so before closing */
        nghttp2_submit_goaway(c->s, NGHTTP2_FLAG_NONE,
                              nghttp2_session_get_last_proc_stream_id(c->s), NGHTTP2_NO_ERROR, NULL,
                              0);
        h2_flush(c);
    }
    h2_close(c);
}

static void h2_close(struct h2conn *c)
{
    struct worker *w = c->w;
    if (c->ep.tr.fd < 0)
        return;
    while (!lb_list_empty(&c->streams)) {
        struct h2stream *st = LB_LIST_ENTRY(c->streams.next, struct h2stream, link);
        nghttp2_session_set_stream_user_data(c->s, st->id, NULL);
        h2_stream_free(st);
    }
    nghttp2_session_del(c->s);
    c->s = NULL;
    ev_timer_stop(w->loop, &c->timer);
    endpoint_close(w->loop, &c->ep, &w->bufs);
    buf_put(&w->bufs, c->out);
    c->out = NULL;
    METRIC_ADD(w->metrics.fe[c->fe_stat].closed, 1);
    lb_list_del(&c->link);
    if (lb_list_linked(&c->pend))
        lb_list_del(&c->pend);
    w->n_sessions--;
    c->free_next = w->h2_free;
    w->h2_free = c;
}

/* ---- nghttp2's memory ----------------------------------------------------------- */

/* nghttp2 allocates through these with the connection as <ud>. Its frame buffer
 * chunks (the only blocks of H2_FRAMEBUF_LEN) get pages of their own, so that
 * h2_idle_trim can hand them back to the kernel; everything else is malloc. */
static int h2_fbuf_slot(struct h2conn *c, const void *p)
{
    for (int i = 0; i < H2_FRAMEBUFS; i++)
        if (p != NULL && c->fbuf[i] == p)
            return i;
    return -1;
}

static void *h2_fbuf_map(struct h2conn *c)
{
    int i;
    for (i = 0; i < H2_FRAMEBUFS && c->fbuf[i] != NULL; i++)
        ;
    if (i == H2_FRAMEBUFS)
        return malloc(H2_FRAMEBUF_LEN);
    long page = sysconf(_SC_PAGESIZE);
    size_t len = (H2_FRAMEBUF_LEN + (size_t)page - 1) / (size_t)page * (size_t)page;
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return malloc(H2_FRAMEBUF_LEN);
    c->fbuf[i] = p;
    c->fbuf_len[i] = len;
    return p;
}

static void *h2_mem_malloc(size_t size, void *ud)
{
    return size == H2_FRAMEBUF_LEN ? h2_fbuf_map(ud) : malloc(size);
}

static void h2_mem_free(void *p, void *ud)
{
    struct h2conn *c = ud;
    int i = h2_fbuf_slot(c, p);
    if (i < 0) {
        free(p);
        return;
    }
    munmap(c->fbuf[i], c->fbuf_len[i]);
    c->fbuf[i] = NULL;
}

static void *h2_mem_calloc(size_t n, size_t size, void *ud)
{
    (void)ud;
    return calloc(n, size);
}

static void *h2_mem_realloc(void *p, size_t size, void *ud)
{
    struct h2conn *c = ud;
    int i = h2_fbuf_slot(c, p);
    if (p == NULL && size == H2_FRAMEBUF_LEN)
        return h2_fbuf_map(c);
    if (i < 0)
        return realloc(p, size);
    if (size <= c->fbuf_len[i])
        return p;
    void *q = malloc(size);
    if (q == NULL)
        return NULL;
    memcpy(q, p, c->fbuf_len[i]);
    h2_mem_free(p, c);
    return q;
}

/* An idle connection (no stream, nothing queued, nghttp2 has nothing to send):
 * the frame buffers hold no live byte, their pages go back to the kernel and
 * come back zeroed when the next frame is written. */
static void h2_idle_trim(struct h2conn *c)
{
    if (!c->fbuf_resident || c->n_streams != 0 || buf_len(c->out) != 0 ||
        nghttp2_session_want_write(c->s))
        return;
    for (int i = 0; i < H2_FRAMEBUFS; i++)
        if (c->fbuf[i] != NULL)
            madvise(c->fbuf[i], c->fbuf_len[i], MADV_DONTNEED);
    c->fbuf_resident = false;
}

/* ---- set-up ------------------------------------------------------------------- */

static nghttp2_session *h2_session_new(struct h2conn *c, const struct snap_frontend *sf)
{
    nghttp2_session_callbacks *cb;
    nghttp2_option *opt;
    nghttp2_session *s = NULL;
    if (nghttp2_session_callbacks_new(&cb) != 0)
        return NULL;
    if (nghttp2_option_new(&opt) != 0) {
        nghttp2_session_callbacks_del(cb);
        return NULL;
    }
    nghttp2_session_callbacks_set_on_begin_frame_callback(cb, h2_on_begin_frame);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, h2_on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, h2_on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, h2_on_data);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, h2_on_frame_recv);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, h2_on_frame_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, h2_on_stream_close);
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_max_outbound_ack(opt, 1000);
    nghttp2_option_set_max_settings(opt, 32);
    nghttp2_option_set_max_continuations(opt, H2_MAX_CONT * 2);
    /* ours counts first (and names the kind); nghttp2's is the backstop */
    nghttp2_option_set_stream_reset_rate_limit(opt, H2_MAX_RST * 2, H2_MAX_RST / 5);
    nghttp2_option_set_max_deflate_dynamic_table_size(opt, 4096);
    nghttp2_mem mem = {c, h2_mem_malloc, h2_mem_free, h2_mem_calloc, h2_mem_realloc};
    if (nghttp2_session_server_new3(&s, cb, c, opt, &mem) != 0)
        s = NULL;
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cb);
    if (s == NULL)
        return NULL;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, sf->h2_max_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, sf->h2_window},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, sf->h2_max_header_list},
    };
    uint64_t conn_window = (uint64_t)sf->h2_max_streams * sf->h2_window;
    if (conn_window > H2_CONN_WINDOW_MAX)
        conn_window = H2_CONN_WINDOW_MAX;
    if (nghttp2_submit_settings(s, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0])) != 0 ||
        nghttp2_session_set_local_window_size(s, NGHTTP2_FLAG_NONE, 0, (int32_t)conn_window) != 0) {
        nghttp2_session_del(s);
        return NULL;
    }
    return s;
}

static void h2_peer_name(struct h2conn *c, const struct sockaddr_storage *peer)
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

void h2session_take(struct worker *w, struct endpoint *ep, const struct sockaddr_storage *peer,
                    const struct sockaddr_storage *local, uint32_t fe_index)
{
    const struct snap_frontend *sf = &w->view->snap->frontends[fe_index];
    uint16_t fe_stat = w->view->fe_stat[fe_index];
    struct h2conn *c = calloc(1, sizeof(*c));
    if (c != NULL)
        c->s = h2_session_new(c, sf);
    if (c == NULL || c->s == NULL) {
        free(c);
        METRIC_ADD(w->metrics.fe[fe_stat].closed, 1);
        endpoint_close(w->loop, ep, &w->bufs);
        return;
    }
    c->w = w;
    c->ep = *ep;
    ep->tr.fd = -1;
    ep->tr.impl = NULL;
    ep->in = NULL;
    ep->pre = NULL;
    ep->events = 0;
    endpoint_init(&c->ep, h2_on_io, c);
    c->ep.readable = true;
    c->tls = sf->tls;
    snprintf(c->fe_key, sizeof(c->fe_key), "%s", sf->key);
    c->fe_stat = fe_stat;
    c->window = sf->h2_window;
    c->max_header_list = sf->h2_max_header_list;
    h2_peer_name(c, peer);
    if (local != NULL) {
        c->local = *local;
        c->local_known = true;
    }
    c->win_start = ev_now(w->loop);
    lb_list_init(&c->streams);
    lb_list_init(&c->dirty);
    lb_list_init(&c->pend);
    ev_init(&c->timer, h2_on_timer);
    c->timer.data = c;
    lb_list_add(&w->h2conns, &c->link);
    w->n_sessions++;
    METRIC_ADD(w->metrics.fe[fe_stat].h2_conns, 1);
    if (w->draining)
        nghttp2_submit_goaway(c->s, NGHTTP2_FLAG_NONE, 0, NGHTTP2_NO_ERROR, NULL, 0);
    h2_run(c);
}

void h2session_drain_all(struct worker *w)
{
    for (struct lb_list *l = w->h2conns.next, *next; l != &w->h2conns; l = next) {
        next = l->next;
        struct h2conn *c = LB_LIST_ENTRY(l, struct h2conn, link);
        if (c->draining)
            continue;
        c->draining = true;
        nghttp2_submit_goaway(c->s, NGHTTP2_FLAG_NONE,
                              nghttp2_session_get_last_proc_stream_id(c->s), NGHTTP2_NO_ERROR, NULL,
                              0);
        h2_run(c);
    }
}

void h2session_close_all(struct worker *w)
{
    while (!lb_list_empty(&w->h2conns))
        h2_close(LB_LIST_ENTRY(w->h2conns.next, struct h2conn, link));
}

void h2session_run_pending(struct worker *w)
{
    for (int i = 0; i < 100000 && !lb_list_empty(&w->h2_pending); i++) {
        struct h2conn *c = LB_LIST_ENTRY(w->h2_pending.next, struct h2conn, pend);
        lb_list_del(&c->pend);
        h2_run(c);
    }
}

void h2session_free_list_trim(struct worker *w)
{
    while (w->h2_free != NULL) {
        struct h2conn *c = w->h2_free;
        w->h2_free = c->free_next;
        free(c);
    }
}
