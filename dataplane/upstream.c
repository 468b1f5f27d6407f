/* dataplane/upstream.c: backend connections and their keep-alive pools. */
#include "upstream.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lb_err.h"
#include "proxyproto.h"
#include "tls.h"
#include "worker_types.h"

void upstream_attach(struct upstream *u, upstream_ready_fn fn, void *owner)
{
    u->on_ready = fn;
    u->owner = owner;
}

void upstream_detach(struct upstream *u)
{
    u->on_ready = NULL;
    u->owner = NULL;
}

static struct upstream *of_bpool(struct lb_list *l)
{
    return LB_LIST_ENTRY(l, struct upstream, bpool);
}

static struct upstream *of_wpool(struct lb_list *l)
{
    return LB_LIST_ENTRY(l, struct upstream, wpool);
}

static void pool_unlink(struct upstream *u)
{
    lb_list_del(&u->bpool);
    lb_list_del(&u->wpool);
    u->be->n_idle--;
}

void upstream_close(struct upstream *u)
{
    struct worker *w = u->w;
    endpoint_close(w->loop, &u->ep, &w->bufs);
    free(u);
}

void upstream_slot_release(struct worker *w, struct backend_rt *be)
{
    if (be->sh != NULL)
        connq_release(&be->sh->q, be->max_conns, (uint64_t)(ev_now(w->loop) * 1000.0));
}

void upstream_free(struct upstream *u)
{
    struct worker *w = u->w;
    struct backend_rt *be = u->be;
    upstream_close(u);
    upstream_slot_release(w, be);
}

void upstream_pool_free(struct worker *w, struct backend_rt *be)
{
    while (!lb_list_empty(&be->idle)) {
        struct upstream *u = of_bpool(be->idle.next);
        pool_unlink(u);
        upstream_free(u);
    }
}

void upstream_pool_yield(struct worker *w)
{
    for (struct lb_list *l = w->pool.next, *next; l != &w->pool; l = next) {
        next = l->next;
        struct upstream *u = of_wpool(l);
        struct backend_rt *be = u->be;
        if (be->sh != NULL && atomic_load_explicit(&be->sh->q.queued, memory_order_relaxed)) {
            pool_unlink(u);
            upstream_free(u);
        }
    }
}

void upstream_pool_expire(struct worker *w, double now)
{
    double limit = w->view ? w->view->snap->timeouts.pool_idle / 1000.0 : 30.0;
    while (!lb_list_empty(&w->pool)) {
        struct upstream *u = of_wpool(w->pool.prev); /* the oldest */
        if (now - u->idle_since < limit)
            break;
        pool_unlink(u);
        upstream_free(u);
    }
}

/* A pooled connection is usable when the peer has neither closed it nor sent
 * anything unasked. Pooled sockets stay watched for reading, so a close seen
 * by the loop has freed them already; this check closes the remaining race
 * for requests that could not be replayed on a fresh connection. */
static bool pooled_is_alive(struct upstream *u)
{
    char c;
    ssize_t n = recv(u->ep.tr.fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

/* Same address and port. */
static bool same_client(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        return false;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a->ss_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
        return x->sin6_port == y->sin6_port &&
               memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
    }
    return false;
}

/* The pooled connection a request from <client> may take: the most recently
 * used, or with PROXY headers the newest one made for that client. */
static struct upstream *pool_pick(struct backend_rt *be, const struct sockaddr_storage *client)
{
    if (be->send_proxy == 0)
        return of_bpool(be->idle.next);
    for (struct lb_list *l = be->idle.next; l != &be->idle; l = l->next) {
        struct upstream *u = of_bpool(l);
        if (client != NULL && same_client(&u->client, client))
            return u;
    }
    return NULL;
}

struct upstream *upstream_pool_take(struct worker *w, struct backend_rt *be,
                                    const struct sockaddr_storage *client, bool replayable)
{
    struct upstream *u;
    while (!lb_list_empty(&be->idle) && (u = pool_pick(be, client)) != NULL) {
        pool_unlink(u);
        if (replayable || pooled_is_alive(u)) {
            u->reused = true;
            return u;
        }
        upstream_free(u);
    }
    return NULL;
}

void upstream_release(struct worker *w, struct upstream *u, bool reusable)
{
    upstream_detach(u);
    struct backend_rt *be = u->be;
    struct wview *v = w->view;
    uint32_t max_idle = v ? v->snap->pool_max_idle : 0;
    /* a socket not known to be drained may hold bytes nobody asked for */
    /* requests queued for the backend (in any worker) get the slot instead */
    bool wanted = be->sh != NULL && atomic_load_explicit(&be->sh->q.queued, memory_order_relaxed);
    if (!reusable || u->ep.readable || w->draining || !be->in_view || be->n_idle >= max_idle ||
        buf_len(u->ep.in) || wanted) {
        upstream_free(u);
        return;
    }
    buf_put(&w->bufs, u->ep.in);
    u->ep.in = NULL;
    u->idle_since = ev_now(w->loop);
    u->got_bytes = false;
    /* watched while pooled: readiness means the backend closed it */
    endpoint_set_events(w->loop, &u->ep, EV_READ);
    lb_list_add(&be->idle, &u->bpool);
    lb_list_add(&w->pool, &u->wpool);
    be->n_idle++;
}

static void upstream_on_io(struct ev_loop *loop, ev_io *io, int revents)
{
    struct upstream *u = io->data;
    endpoint_on_events(&u->ep, revents);
    if (u->on_ready != NULL) {
        u->on_ready(u->owner);
    } else {
        /* pooled: a close, or bytes nobody asked for; either way it is done */
        pool_unlink(u);
        upstream_free(u);
    }
}

/* The PROXY header of <version> for <cl> goes first on <u>. */
static bool proxy_start(struct upstream *u, uint8_t version, const struct upstream_client *cl)
{
    static const struct sockaddr_storage none;
    const struct sockaddr_storage *src = cl && cl->src ? cl->src : &none;
    const struct sockaddr_storage *dst = cl && cl->dst ? cl->dst : &none;
    uint8_t hdr[PROXY_WRITE_MAX];
    size_t n = proxy_write(version, src, dst, hdr);
    u->client = *src;
    return endpoint_preamble(&u->ep, hdr, n);
}

struct upstream *upstream_connect(struct worker *w, struct backend_rt *be,
                                  const struct snap_backend *sb, struct tls_client_ctx *tls,
                                  const struct upstream_client *cl, int *errnum)
{
    int fd = socket(be->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd == -1) {
        *errnum = errno;
        return NULL;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    bool connected = false;
    if (connect(fd, (const struct sockaddr *)&be->addr, be->addrlen) == 0) {
        connected = true;
    } else if (errno != EINPROGRESS) {
        *errnum = errno;
        close(fd);
        return NULL;
    }
    struct upstream *u = calloc(1, sizeof(*u));
    if (u == NULL) {
        *errnum = ENOMEM;
        close(fd);
        return NULL;
    }
    u->w = w;
    u->be = be;
    lb_list_init(&u->bpool);
    lb_list_init(&u->wpool);
    u->connected = connected;
    if (tls != NULL) {
        if (tls_client_transport_init(&u->ep.tr, fd, tls, sb->sni, sb->verify_name, NULL) !=
            LB_OK) {
            *errnum = ENOMEM;
            close(fd);
            free(u);
            return NULL;
        }
        u->tls = true;
    } else {
        transport_plain_init(&u->ep.tr, fd);
    }
    endpoint_init(&u->ep, upstream_on_io, u);
    if (be->send_proxy != 0 && !proxy_start(u, be->send_proxy, cl)) {
        *errnum = ENOMEM;
        u->ep.tr.ops->release(&u->ep.tr);
        close(fd);
        free(u);
        return NULL;
    }
    return u;
}
