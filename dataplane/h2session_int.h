/* dataplane/h2session_int.h: what the two halves of the HTTP/2 session
 * share: h2session.c (the connection: nghttp2's session and callbacks, I/O
 * through the transport, nghttp2's memory, abuse limits, drain) and
 * h2stream.c (each stream's exchange: the request translated to HTTP/1.1,
 * the response given to nghttp2). Not for other modules: they use
 * h2session.h.
 *
 * The halves depend one way: h2session.c -> h2stream.c. Worker thread only. */
#ifndef LB_H2SESSION_INT_H
#define LB_H2SESSION_INT_H

#include "h2session.h"

#include <arpa/inet.h>
#include <ev.h>
#include <nghttp2/nghttp2.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "endpoint.h"
#include "exchange.h"
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
#define H2_FRAMEBUFS    6   /* chunks mapped per connection; more go to malloc */
#define H2_TRIM_IDLE_MS 250 /* idle this long, a connection gives their pages back */
/* nghttp2's stream map table (1.52: 256 buckets of 16 bytes, calloc'd at
 * session start): mapped in the slot after the frame buffers', so that a
 * connection that never had a stream never touches its page */
#define H2_MAPTAB_LEN 4096
#define H2_PAGED      (H2_FRAMEBUFS + 1)

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
    void *fbuf[H2_PAGED]; /* [H2_FRAMEBUFS]: the stream map table */
    size_t fbuf_len[H2_PAGED];
    bool fbuf_resident; /* a frame was produced since the pages were given back */
    bool trim_due;      /* TP_IDLE: the timer first gives them back (H2_TRIM_IDLE_MS) */
    double idle_rest;   /* ... then waits this much more of timeouts.keepalive */
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

static inline double h2_now(const struct h2conn *c)
{
    return ev_now(c->w->loop);
}

/* The connection's handler of a stream's timer (it runs the connection). */
typedef void h2session_timer_fn(struct ev_loop *loop, ev_timer *t, int revents);

/* Stream <st> moved or may move: the connection steps it in its run. */
void h2session__mark(struct h2stream *st);

/* Gives the client window back for request bytes that reached the backend
 * (or were dropped). */
void h2session__give_window(struct h2stream *st);

/* Room for <n> more bytes in the stream's request buffer, within what flow
 * control lets the client send; false when over it or out of memory. */
bool h2session__req_room(struct h2stream *st, size_t n);

/* Appends <n> bytes of <p> to the stream's request buffer; false as
 * h2session__req_room(). */
bool h2session__req_append(struct h2stream *st, const void *p, size_t n);

/* Keeps one decoded request field for the head; false without memory. */
bool h2session__field_keep(struct h2stream *st, const uint8_t *name, size_t nl,
                           const uint8_t *value, size_t vl);

/* The request's header list is complete (<end_stream>: and its body):
 * starts the exchange, or answers or resets the stream. */
void h2session__start(struct h2stream *st, bool end_stream);

/* A new request stream of <c> on the worker's newest view, its head timer
 * running <on_timer>; NULL when the frontend is gone or without memory.
 * Freed by h2session__stream_free(). */
struct h2stream *h2session__stream_new(struct h2conn *c, int32_t id, h2session_timer_fn *on_timer);

/* Whether the worker's newest view still has <c>'s frontend. */
bool h2session__frontend_exists(const struct h2conn *c);

/* Closes the stream's exchange and frees it (never under its own code:
 * from nghttp2's stream-close callback or the connection's close). */
void h2session__stream_free(struct h2stream *st);

/* Drives the stream's exchange as far as it goes now, re-arms its timer. */
void h2session__stream_step(struct h2stream *st);

/* DATA disagrees with content-length: a stream error. */
void h2session__bad_length(struct h2stream *st);

/* The client's side of the stream ended (END_STREAM). */
void h2session__request_end(struct h2stream *st);

#endif
