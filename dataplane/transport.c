/* dataplane/transport.c: plain sockets. */
#include "transport.h"

#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

static ssize_t plain_read(struct transport *t, void *buf, size_t len)
{
    for (;;) {
        ssize_t n = read(t->fd, buf, len);
        if (n >= 0)
            return n;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return TRANSPORT_AGAIN;
        t->err = errno;
        return TRANSPORT_ERROR;
    }
}

static ssize_t plain_writev(struct transport *t, const struct iovec *iov, int iovcnt)
{
    for (;;) {
        ssize_t n = writev(t->fd, iov, iovcnt);
        if (n >= 0)
            return n;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return TRANSPORT_WANT_WRITE;
        t->err = errno;
        return TRANSPORT_ERROR;
    }
}

static void plain_shutdown_write(struct transport *t)
{
    shutdown(t->fd, SHUT_WR);
}

static void plain_release(struct transport *t)
{
    (void)t;
}

static const struct transport_ops plain_ops = {
    .read = plain_read,
    .writev = plain_writev,
    .shutdown_write = plain_shutdown_write,
    .release = plain_release,
};

void transport_plain_init(struct transport *t, int fd)
{
    t->ops = &plain_ops;
    t->fd = fd;
    t->err = 0;
}
