/* dataplane/transport.h: how a connection moves bytes. Plain sockets now; TLS
 * plugs in as another set of ops without touching the connection state
 * machine. Every call is non-blocking and belongs to the connection's thread. */
#ifndef LB_TRANSPORT_H
#define LB_TRANSPORT_H

#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

#define TRANSPORT_AGAIN      (-2) /* would block: wait for readability */
#define TRANSPORT_WANT_WRITE (-3) /* would block: wait for writability */
#define TRANSPORT_ERROR      (-1) /* failed; t->err holds errno */

struct transport;

struct transport_ops {
    /* Returns bytes read (> 0), 0 at end of stream, or a TRANSPORT_ code. */
    ssize_t (*read)(struct transport *t, void *buf, size_t len);
    /* Returns bytes written (>= 0) or a TRANSPORT_ code. */
    ssize_t (*writev)(struct transport *t, const struct iovec *iov, int iovcnt);
    /* Ends the sending direction (FIN for plain sockets). */
    void (*shutdown_write)(struct transport *t);
    /* Releases the transport's state; the fd is closed by the owner. */
    void (*release)(struct transport *t);
};

struct transport {
    const struct transport_ops *ops;
    int fd;
    int err;    /* errno of the last TRANSPORT_ERROR */
    void *impl; /* state of non-plain ops (TLS: its connection); plain ignores it */
};

/* Plain TCP: <t> becomes a transport over <fd>. */
void transport_plain_init(struct transport *t, int fd);

#endif
