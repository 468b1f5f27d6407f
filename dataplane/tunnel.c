/* dataplane/tunnel.c: moving bytes both ways after a protocol switch. */
#include "tunnel.h"

#include <string.h>

#define TUNNEL_ROUNDS 16 /* reads and writes per direction per pump, at most */

void tunnel_init(struct tunnel *t, struct endpoint *a, struct endpoint *b)
{
    memset(t, 0, sizeof(*t));
    t->a = a;
    t->b = b;
}

/* One direction: <from>'s input buffer to <to>. <shut> is <to>'s sending
 * direction, closed once <from> ended and its bytes are out. Returns false on
 * an error. */
static bool pump_one(struct tunnel *t, struct endpoint *from, struct endpoint *to, bool *shut,
                     uint64_t *count, struct buf_pool *pool)
{
    for (int i = 0; i < TUNNEL_ROUNDS && !*shut; i++) {
        uint32_t len = buf_len(from->in);
        if (len > 0) {
            struct iovec iov = {from->in->data + from->in->start, len};
            ssize_t n = endpoint_writev(to, &iov, 1);
            if (n == TRANSPORT_WANT_WRITE || n == TRANSPORT_AGAIN)
                return true;
            if (n < 0) {
                t->error = "write failed";
                return false;
            }
            from->in->start += (uint32_t)n;
            *count += (uint64_t)n;
            t->progress = true;
            if ((uint32_t)n < len)
                return true;
            continue;
        }
        if (from->eof) {
            to->tr.ops->shutdown_write(&to->tr);
            *shut = true;
            t->progress = true;
            return true;
        }
        if (!from->readable)
            return true;
        ssize_t n = endpoint_read(from, pool);
        if (n == ENDPOINT_NOMEM) {
            t->error = "no memory for a buffer";
            return false;
        }
        if (n == TRANSPORT_ERROR) {
            t->error = "read failed";
            return false;
        }
        if (n >= 0)
            t->progress = true; /* bytes, or the end of the stream */
        else
            return true;
    }
    return true;
}

enum tunnel_state tunnel_pump(struct tunnel *t, struct buf_pool *pool)
{
    t->progress = false;
    if (!pump_one(t, t->a, t->b, &t->b_shut, &t->a_to_b, pool) ||
        !pump_one(t, t->b, t->a, &t->a_shut, &t->b_to_a, pool))
        return TUNNEL_ERROR;
    /* an idle connection holds no buffer */
    if (buf_len(t->a->in) == 0 && t->a->in != NULL) {
        buf_put(pool, t->a->in);
        t->a->in = NULL;
    }
    if (buf_len(t->b->in) == 0 && t->b->in != NULL) {
        buf_put(pool, t->b->in);
        t->b->in = NULL;
    }
    return t->a_shut && t->b_shut ? TUNNEL_DONE : TUNNEL_OPEN;
}

/* What <ep> waits for: reading while its direction is open and its buffer
 * has room, writing while the other side's bytes wait for it. */
static int tunnel_want(const struct endpoint *ep, bool dir_open, const struct endpoint *other,
                       bool other_dir_open)
{
    int want = 0;
    if (dir_open && !ep->eof && (ep->in == NULL || ep->in->end < ep->in->cap || ep->in->start > 0))
        want |= EV_READ;
    if (other_dir_open && buf_len(other->in) > 0)
        want |= EV_WRITE;
    return want;
}

void tunnel_arm(struct ev_loop *loop, struct tunnel *t)
{
    endpoint_arm(loop, t->a, tunnel_want(t->a, !t->b_shut, t->b, !t->a_shut));
    endpoint_arm(loop, t->b, tunnel_want(t->b, !t->a_shut, t->a, !t->b_shut));
}
