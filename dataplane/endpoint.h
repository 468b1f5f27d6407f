/* dataplane/endpoint.h: one side of a connection (the client's or a
 * backend's): its transport, its watcher, the bytes read from it, and the
 * waits TLS adds to plain sockets (a read that needs the socket writable, a
 * write that needs it readable). The same code serves both sides; what is
 * read means something only to the session or exchange that owns the
 * endpoint. Worker thread only.
 *
 * Sockets are read and written speculatively, until the kernel says
 * EAGAIN, and watched only for what is blocked: <readable> stays true until
 * a short read or EAGAIN, so a run reads without waiting for the loop. */
#ifndef LB_ENDPOINT_H
#define LB_ENDPOINT_H

#include <ev.h>
#include <stdbool.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "buf.h"
#include "transport.h"

#define ENDPOINT_FULL  (-10) /* endpoint_read: <in> has no room */
#define ENDPOINT_NOMEM (-11) /* endpoint_read: no buffer to read into */

/* The watcher's callback (libev's ev_io callback). */
typedef void (*endpoint_io_fn)(struct ev_loop *loop, ev_io *io, int revents);

struct endpoint {
    struct transport tr;
    ev_io io;
    int events;       /* what <io> waits for now (0: stopped) */
    struct buf *in;   /* bytes read and not consumed; NULL while there are none */
    bool readable;    /* the socket may hold bytes */
    bool writable;    /* the socket was seen writable (a connect in progress ended) */
    bool eof;         /* no more bytes: end of stream, or a read failed */
    bool rd_on_write; /* the transport's read waits for writability (TLS) */
    bool wr_on_read;  /* the transport's write waits for readability (TLS) */
    uint8_t pre_len;  /* bytes of <pre> still to send before the transport's first */
    uint8_t *pre;     /* raw bytes (a PROXY header) that go out first; NULL when none */
};

/* Sets up <ep> over <fd> (transport already made by the caller in ep->tr)
 * with <cb> called on readiness (its data pointer is <owner>). Nothing is
 * watched until endpoint_arm(). */
void endpoint_init(struct endpoint *ep, endpoint_io_fn cb, void *owner);

/* The address <ep>'s peer reached (getsockname() of its socket; zeroes
 * when that fails), asked once: *<known> says whether <addr> holds it
 * already (a PROXY header may have filled it in). */
const struct sockaddr_storage *endpoint_local(const struct endpoint *ep,
                                              struct sockaddr_storage *addr, bool *known);

/* Notes what the loop saw (<revents> of the watcher) before the owner runs:
 * readability lets a read go (and a TLS write that waited for it), a TLS read
 * that waited for writability goes again. */
static inline void endpoint_on_events(struct endpoint *ep, int revents)
{
    if (revents & EV_READ) {
        ep->readable = true;
        ep->wr_on_read = false;
    }
    if (revents & EV_WRITE) {
        ep->writable = true;
        if (ep->rd_on_write) {
            ep->rd_on_write = false;
            ep->readable = true;
        }
    }
}

/* Makes the <len> (1..255) bytes at <bytes> go out on the socket, raw,
 * before anything the transport sends or receives (a PROXY protocol header
 * goes before a TLS ClientHello). Returns false on no memory. */
bool endpoint_preamble(struct endpoint *ep, const uint8_t *bytes, size_t len);

/* Reads what fits into ep->in (taken from <pool> when NULL). Returns the
 * bytes read (> 0; a short read clears <readable>), 0 at the end of the
 * stream (sets <eof>), TRANSPORT_AGAIN (nothing now), TRANSPORT_WANT_WRITE
 * (TLS: waits for writability), TRANSPORT_ERROR (sets <eof>; tr.err says
 * why), ENDPOINT_FULL or ENDPOINT_NOMEM. */
ssize_t endpoint_read(struct endpoint *ep, struct buf_pool *pool);

/* Writes <iov>. Returns the bytes written (>= 0), TRANSPORT_WANT_WRITE (the
 * socket is full), TRANSPORT_AGAIN (TLS: the write waits for readability;
 * <wr_on_read> set) or TRANSPORT_ERROR. */
ssize_t endpoint_writev(struct endpoint *ep, const struct iovec *iov, int cnt);

/* Makes the watcher wait for <want> (EV_READ, EV_WRITE, both, or 0), as
 * adjusted here: reading stays armed while the socket is not known to hold
 * bytes (most peers send nothing until answered, which saves two epoll_ctl
 * calls per request; the loop is level-triggered, so bytes that come are seen
 * at once and the next arming disarms), a read waiting for writability waits
 * for that, and a write waiting for readability waits for that instead. */
void endpoint_arm(struct ev_loop *loop, struct endpoint *ep, int want);

/* Makes the watcher wait for exactly <want>, touching the loop only when it
 * changes. */
void endpoint_set_events(struct ev_loop *loop, struct endpoint *ep, int want);

/* Stops the watcher, releases the transport, closes the socket (fd -1) and
 * gives the input buffer back to <pool>. */
void endpoint_close(struct ev_loop *loop, struct endpoint *ep, struct buf_pool *pool);

#endif
