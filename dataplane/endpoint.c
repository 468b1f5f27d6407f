/* dataplane/endpoint.c: reads, writes and waits of one side of a connection. */
#include "endpoint.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

void endpoint_init(struct endpoint *ep, endpoint_io_fn cb, void *owner)
{
    ev_io_init(&ep->io, cb, ep->tr.fd, 0);
    ep->io.data = owner;
    ep->events = 0;
}

const struct sockaddr_storage *endpoint_local(const struct endpoint *ep,
                                              struct sockaddr_storage *addr, bool *known)
{
    if (!*known) {
        socklen_t len = sizeof(*addr);
        if (getsockname(ep->tr.fd, (struct sockaddr *)addr, &len) != 0)
            memset(addr, 0, sizeof(*addr));
        *known = true;
    }
    return addr;
}

bool endpoint_preamble(struct endpoint *ep, const uint8_t *bytes, size_t len)
{
    free(ep->pre);
    ep->pre = malloc(len);
    if (ep->pre == NULL)
        return false;
    memcpy(ep->pre, bytes, len);
    ep->pre_len = (uint8_t)len;
    return true;
}

/* Sends what is left of the preamble: 0 once it is all out, else a
 * TRANSPORT_ code (the caller waits for writability or fails). */
static ssize_t pre_flush(struct endpoint *ep)
{
    uint8_t *p = ep->pre;
    ssize_t n;
    do
        n = send(ep->tr.fd, p, ep->pre_len, MSG_NOSIGNAL | MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return TRANSPORT_WANT_WRITE;
        ep->tr.err = errno;
        return TRANSPORT_ERROR;
    }
    if ((size_t)n < ep->pre_len) {
        memmove(p, p + n, ep->pre_len - (size_t)n);
        ep->pre_len = (uint8_t)(ep->pre_len - (size_t)n);
        return TRANSPORT_WANT_WRITE;
    }
    free(p);
    ep->pre = NULL;
    ep->pre_len = 0;
    return 0;
}

ssize_t endpoint_read(struct endpoint *ep, struct buf_pool *pool)
{
    if (ep->pre != NULL) {
        ssize_t r = pre_flush(ep);
        if (r != 0) {
            ep->readable = false;
            if (r == TRANSPORT_WANT_WRITE)
                ep->rd_on_write = true;
            else
                ep->eof = true;
            return r;
        }
    }
    if (ep->in == NULL && (ep->in = buf_get(pool)) == NULL)
        return ENDPOINT_NOMEM;
    struct buf *b = ep->in;
    buf_compact(b);
    size_t room = b->cap - b->end;
    if (room == 0)
        return ENDPOINT_FULL;
    ssize_t n = ep->tr.ops->read(&ep->tr, b->data + b->end, room);
    if (n > 0) {
        b->end += (uint32_t)n;
        if ((size_t)n < room)
            ep->readable = false; /* short read: the socket is drained */
    } else if (n == 0 || n == TRANSPORT_ERROR) {
        ep->eof = true;
        ep->readable = false;
    } else {
        ep->readable = false;
        if (n == TRANSPORT_WANT_WRITE)
            ep->rd_on_write = true;
    }
    if (n <= 0 && b->start == b->end) {
        /* nothing came: an idle connection holds no buffer */
        buf_put(pool, b);
        ep->in = NULL;
    }
    return n;
}

ssize_t endpoint_writev(struct endpoint *ep, const struct iovec *iov, int cnt)
{
    if (ep->pre != NULL) {
        ssize_t r = pre_flush(ep);
        if (r != 0)
            return r;
    }
    ssize_t n = ep->tr.ops->writev(&ep->tr, iov, cnt);
    if (n == TRANSPORT_AGAIN)
        ep->wr_on_read = true;
    else if (n != TRANSPORT_WANT_WRITE)
        ep->wr_on_read = false;
    return n;
}

void endpoint_set_events(struct ev_loop *loop, struct endpoint *ep, int want)
{
    if (ep->events == want)
        return;
    if (ep->events != 0)
        ev_io_stop(loop, &ep->io);
    if (want != 0) {
        ev_io_modify(&ep->io, want);
        ev_io_start(loop, &ep->io);
    }
    ep->events = want;
}

void endpoint_arm(struct ev_loop *loop, struct endpoint *ep, int want)
{
    if (!(want & EV_READ) && (ep->events & EV_READ) && !ep->readable && !ep->eof)
        want |= EV_READ;
    if (ep->rd_on_write)
        want |= EV_WRITE;
    if (ep->wr_on_read && (want & EV_WRITE))
        want = (want & ~EV_WRITE) | EV_READ;
    endpoint_set_events(loop, ep, want);
}

void endpoint_close(struct ev_loop *loop, struct endpoint *ep, struct buf_pool *pool)
{
    endpoint_set_events(loop, ep, 0);
    if (ep->tr.fd >= 0) {
        ep->tr.ops->release(&ep->tr);
        close(ep->tr.fd);
        ep->tr.fd = -1;
    }
    buf_put(pool, ep->in);
    ep->in = NULL;
    free(ep->pre);
    ep->pre = NULL;
    ep->pre_len = 0;
}
