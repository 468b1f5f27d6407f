/* dataplane/transport.c: plain sockets. */
#include "transport.h"

#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

/* What a read or write that returned <n> tells: the count, <blocked> when
 * the socket would block, or TRANSPORT_ERROR (errno kept in t->err). */
static ssize_t plain_result(struct transport *t, ssize_t n, ssize_t blocked)
{
    if (n >= 0)
        return n;
    if (errno == EAGAIN || errno == EWOULDBLOCK)
        return blocked;
    t->err = errno;
    return TRANSPORT_ERROR;
}

static ssize_t plain_read(struct transport *t, void *buf, size_t len)
{
    ssize_t n;
    do
        n = read(t->fd, buf, len);
    while (n < 0 && errno == EINTR);
    return plain_result(t, n, TRANSPORT_AGAIN);
}

static ssize_t plain_writev(struct transport *t, const struct iovec *iov, int iovcnt)
{
    ssize_t n;
    do
        n = writev(t->fd, iov, iovcnt);
    while (n < 0 && errno == EINTR);
    return plain_result(t, n, TRANSPORT_WANT_WRITE);
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
