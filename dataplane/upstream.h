/* dataplane/upstream.h: connections to backends and their keep-alive pools.
 *
 * An upstream is one connection to one backend, plain or TLS. While it carries
 * an exchange it belongs to that exchange's owner, which it wakes when its
 * socket is ready; between exchanges it waits in two pools: its backend's
 * (most recently used first, what a request takes) and its worker's (oldest
 * last, what expiry walks). A pooled socket stays watched for reading: a close
 * or unasked bytes free it at once. Every new connection holds a slot in its
 * backend's connection count (connq); freeing one gives the slot back.
 *
 * A backend that wants the PROXY protocol gets a header naming the client on
 * each new connection; such a connection then speaks for that client only,
 * so the pool hands it to requests from the same client address and port
 * (in practice: the same client connection's next requests). Worker thread
 * only. */
#ifndef LB_UPSTREAM_H
#define LB_UPSTREAM_H

#include <ev.h>
#include <stdbool.h>
#include <sys/socket.h>

#include "endpoint.h"
#include "http1.h"
#include "lb_list.h"

struct backend_rt;
struct snap_backend;
struct tls_client_ctx;
struct worker;

/* Called when the socket of an attached upstream is ready. */
typedef void (*upstream_ready_fn)(void *owner);

struct upstream {
    struct worker *w;
    struct backend_rt *be;
    upstream_ready_fn on_ready; /* NULL while pooled */
    void *owner;                /* ... its argument */
    struct endpoint ep;         /* ep.in: response bytes */
    struct http1_parser parser;
    double idle_since;
    bool connected;
    bool reused;    /* came from the pool */
    bool keepalive; /* the backend keeps the connection after this response */
    bool wr_failed;
    bool got_bytes;
    bool tls;                       /* https:// backend */
    bool tls_done;                  /* a byte went through: the handshake is over */
    struct lb_list bpool;           /* in its backend's pool (most recently used first) */
    struct lb_list wpool;           /* in its worker's pool (newest first) */
    struct sockaddr_storage client; /* the client its PROXY header named (be->send_proxy) */
};

/* Who a connection is for: the client's address and the address it reached
 * (what a PROXY header says). */
struct upstream_client {
    const struct sockaddr_storage *src;
    const struct sockaddr_storage *dst;
};

/* Opens a new connection to <be>, over TLS with <tls> (verifying <sb>'s
 * name) when <tls> is not NULL, starting with a PROXY header for <cl> when
 * be->send_proxy says so. The caller holds a slot of the backend's count
 * for it. Returns NULL and sets *errnum on failure (the slot stays the
 * caller's). */
struct upstream *upstream_connect(struct worker *w, struct backend_rt *be,
                                  const struct snap_backend *sb, struct tls_client_ctx *tls,
                                  const struct upstream_client *cl, int *errnum);

/* Takes a pooled connection to <be> (one made for <client> when the backend
 * gets PROXY headers), or NULL. Unless <replayable> (the request could go
 * again on a fresh connection), a connection the backend closed or wrote on
 * is freed rather than returned. */
struct upstream *upstream_pool_take(struct worker *w, struct backend_rt *be,
                                    const struct sockaddr_storage *client, bool replayable);

/* <u> wakes <fn>(<owner>) when ready; upstream_detach() stops that. */
void upstream_attach(struct upstream *u, upstream_ready_fn fn, void *owner);
void upstream_detach(struct upstream *u);

/* After a complete exchange: <u> is detached and goes back to the pool when
 * <reusable> and the pool wants it, else is freed. */
void upstream_release(struct worker *w, struct upstream *u, bool reusable);

/* Closes and frees <u> (detached, not pooled); its slot of the backend's
 * count stays taken, for a connection that replaces it. */
void upstream_close(struct upstream *u);

/* Closes and frees <u> (detached, not pooled); its slot goes back, maybe to
 * a queued request. */
void upstream_free(struct upstream *u);

/* A slot of <be>'s count taken for a connection never made goes back. */
void upstream_slot_release(struct worker *w, struct backend_rt *be);

/* Frees <be>'s pool (worker exit, backend removed or changed). */
void upstream_pool_free(struct worker *w, struct backend_rt *be);

/* Housekeeping: frees pooled connections idle past the limit at <now>
 * (INFINITY frees them all). */
void upstream_pool_expire(struct worker *w, double now);

/* Housekeeping: frees pooled connections to backends whose queue has
 * requests waiting (in any worker), so their slots go to them. */
void upstream_pool_yield(struct worker *w);

#endif
