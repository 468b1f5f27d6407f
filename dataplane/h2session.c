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
#include "h2session_int.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "exchange.h"
#include "h2req.h"
#include "lb_log.h"
#include "tls.h"
#include "upstream.h"
#include "view.h"

static void h2_run(struct h2conn *c);
static void h2_idle_trim(struct h2conn *c);
static void h2_close(struct h2conn *c);

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

/* ---- streams' timers ----------------------------------------------------------- */

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
        h2session__mark(st);
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
        st = h2session__stream_new(c, f->hd.stream_id, h2_stream_on_timer);
        if (st == NULL && !h2session__frontend_exists(c)) {
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
        return h2session__field_keep(st, name, nl, value, vl)
                   ? 0
                   : NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    /* a trailer section: forwarded where chunked framing carries it */
    if (!st->chunked || !st->x.live)
        return 0;
    if (!h2req_name_ok(name, nl) || !h2req_value_ok(value, vl))
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    bool ok = (st->trailers || h2session__req_append(st, "0\r\n", 3)) &&
              h2session__req_append(st, name, nl) && h2session__req_append(st, ": ", 2) &&
              h2session__req_append(st, value, vl) && h2session__req_append(st, "\r\n", 2);
    st->trailers = true;
    return ok ? 0 : NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
}

static int h2_on_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data,
                      size_t len, void *user)
{
    struct h2stream *st = nghttp2_session_get_stream_user_data(s, id);
    if (st == NULL)
        return 0;
    st->recv_payload += len;
    h2session__mark(st);
    if (st->has_cl && st->recv_payload > st->cl) {
        h2session__bad_length(st);
        return 0;
    }
    if (!st->x.live || st->x.req.done || len == 0) {
        h2session__give_window(st); /* nobody takes it: dropped */
        return 0;
    }
    bool ok = true;
    if (st->chunked) {
        char hdr[16];
        int n = snprintf(hdr, sizeof(hdr), "%zx\r\n", len);
        ok = h2session__req_room(st, (size_t)n + len + 2) &&
             h2session__req_append(st, hdr, (size_t)n) && h2session__req_append(st, data, len) &&
             h2session__req_append(st, "\r\n", 2);
    } else {
        ok = h2session__req_append(st, data, len);
    }
    if (!ok) {
        /* flow control bounds the payload: only tiny frames overflow */
        h2_calm(st->c, H2_ABUSE_EMPTY_DATA, "DATA frames too small for their framing");
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    return 0;
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
        h2session__start(st, end);
        h2session__mark(st);
    }
    if (end)
        h2session__request_end(st);
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
    h2session__stream_free(st);
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
        h2session__stream_step(st);
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
    if (phase != TP_IDLE)
        c->trim_due = false;
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
        /* between two batches of requests a connection is idle for a moment:
         * its frame buffers go back only once it stays idle a while (given
         * back at once, their pages came back with the next frame, page
         * faults that cost 11 % of the CPU at h2load -m 10) */
        c->trim_due = phase == TP_IDLE && c->fbuf_resident;
        if (c->trim_due && ms > H2_TRIM_IDLE_MS) {
            c->timer.repeat = H2_TRIM_IDLE_MS / 1000.0;
            c->idle_rest = (ms - H2_TRIM_IDLE_MS) / 1000.0;
        } else if (c->trim_due) {
            h2_idle_trim(c);
            c->trim_due = false;
        }
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
    if (c->tphase == TP_IDLE && c->trim_due) {
        c->trim_due = false;
        h2_idle_trim(c);
        c->timer.repeat = c->idle_rest;
        ev_timer_again(loop, t);
        return;
    }
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
        h2session__stream_free(st);
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
    worker_sessions_add(w, -1);
    c->free_next = w->h2_free;
    w->h2_free = c;
}

/* ---- nghttp2's memory ----------------------------------------------------------- */

/* nghttp2 allocates through these with the connection as <ud>. Its frame buffer
 * chunks (the only blocks of H2_FRAMEBUF_LEN) get pages of their own, so that
 * h2_idle_trim can hand them back to the kernel; its stream map table too, so
 * that it costs nothing until a stream is kept in it (calloc would zero it
 * through the heap); everything else is malloc. */
static int h2_fbuf_slot(struct h2conn *c, const void *p)
{
    for (int i = 0; i < H2_PAGED; i++)
        if (p != NULL && c->fbuf[i] == p)
            return i;
    return -1;
}

/* Maps <size> bytes (zeroed) in the first free slot of [from, to), or NULL. */
static void *h2_page_map(struct h2conn *c, int from, int to, size_t size)
{
    int i;
    for (i = from; i < to && c->fbuf[i] != NULL; i++)
        ;
    if (i == to)
        return NULL;
    long page = sysconf(_SC_PAGESIZE);
    size_t len = (size + (size_t)page - 1) / (size_t)page * (size_t)page;
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    c->fbuf[i] = p;
    c->fbuf_len[i] = len;
    return p;
}

static void *h2_fbuf_map(struct h2conn *c)
{
    void *p = h2_page_map(c, 0, H2_FRAMEBUFS, H2_FRAMEBUF_LEN);
    return p != NULL ? p : malloc(H2_FRAMEBUF_LEN);
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
    if (n != 0 && size == H2_MAPTAB_LEN / n && n * size == H2_MAPTAB_LEN) {
        void *p = h2_page_map(ud, H2_FRAMEBUFS, H2_PAGED, H2_MAPTAB_LEN);
        if (p != NULL)
            return p; /* fresh pages are zero */
    }
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
    /* closed streams are not kept for RFC 7540 priorities (deprecated by RFC
     * 9113): an idle connection holds no stream object */
    nghttp2_option_set_no_closed_streams(opt, 1);
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
    worker_sessions_add(w, 1);
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
