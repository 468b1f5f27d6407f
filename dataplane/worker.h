/* dataplane/worker.h: one thread, one libev loop, its listeners, connections,
 * upstream pools and counters. Everything here belongs to the worker's thread
 * unless a field says otherwise. */
#ifndef LB_WORKER_H
#define LB_WORKER_H

#include <ev.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "balancer.h"
#include "breaker.h"
#include "bshared.h"
#include "connq.h"
#include "http1.h"
#include "lb_map.h"
#include "metrics.h"
#include "retry.h"
#include "snapshot.h"

struct lb_err;
struct lb_logbuf;
struct conn;
struct upstream;
struct dp;
struct probe;

/* A fixed-size I/O buffer from the worker's pool. Bytes live in [start, end). */
struct buf {
    struct buf *next; /* free list link */
    uint32_t start;
    uint32_t end;
    uint32_t cap;
    char data[];
};

/* Per worker, per backend id: survives snapshot swaps while the id exists. */
struct backend_rt {
    char *id;
    uint32_t stat_slot;       /* index in the worker's metrics backend table */
    struct balancer_slot bal; /* smooth WRR state */
    struct upstream *idle;    /* keep-alive pool, most recently used first */
    uint32_t n_idle;
    uint32_t active;              /* requests in flight on this worker */
    struct bshared *sh;           /* shared by the workers (a registry reference), or NULL */
    struct breaker *breaker;      /* sh->breaker, or NULL */
    uint32_t max_conns;           /* the newest snapshot's limit, all workers (0: none) */
    uint32_t max_queue;           /* ... and queue length */
    uint8_t health;               /* as the newest snapshot says: enum snap_health */
    const void *tls_ctx;          /* the client context its pooled connections used */
    char tls_name[256];           /* ... and the name they verified */
    struct sockaddr_storage addr; /* from the newest snapshot naming it */
    socklen_t addrlen;
    char host_port[72];
    bool in_view; /* named by the worker's current view */
};

/* A worker's view of one snapshot: runtime state indexed like the snapshot. */
struct wview {
    struct snap *snap;
    struct backend_rt **be;       /* per snapshot backend */
    uint32_t *cand;               /* backends that may take new requests (admin active):
                                   * the balancer picks among these only */
    struct balancer_slot **slots; /* per candidate */
    struct balancer bal;
    uint16_t *fe_stat;  /* per snapshot frontend: metrics frontend slot */
    uint32_t refs;      /* connections using it, +1 while current */
    bool panic;         /* every active backend is down and the pool fails open */
    struct wview *next; /* retired views still referenced */
};

struct listener {
    struct worker *w;
    ev_io io;
    ev_timer pause; /* accepting again after running out of descriptors */
    double pause_s; /* the current pause; 0 after a successful accept */
    int fd;
    char key[80];      /* "address:port" */
    uint32_t fe_index; /* the frontend's index in the current view */
    bool seen;         /* mark during a swap */
    struct listener *next;
};

struct worker {
    struct dp *dp; /* the process (shared, read-only after start) */
    unsigned id;
    pthread_t thread;
    struct ev_loop *loop;  /* this thread's loop */
    ev_async wake;         /* another thread asks: new snapshot or shutdown */
    ev_timer tick;         /* 100 ms housekeeping: log flush, pool expiry */
    ev_prepare prep;       /* flush of the access log after each loop turn */
    struct wview *view;    /* current view */
    struct wview *retired; /* older views with connections still on them */
    struct listener *listeners;
    struct conn *conns; /* every open client connection */
    uint32_t n_conns;
    struct conn *free_conns;
    uint32_t n_free_conns;
    struct upstream *pool_new; /* every pooled upstream, newest first */
    struct upstream *pool_old; /* ... and its oldest end */
    struct buf *free_bufs;
    uint32_t n_free_bufs;
    struct lb_map be_map;              /* id -> struct backend_rt (keyed by its id) */
    struct http1_header *scratch_hdrs; /* parse scratch, sized for the view's limits */
    uint32_t scratch_cap;
    struct lb_logbuf *log;         /* access log buffer */
    struct metrics_worker metrics; /* this worker's counters */
    struct connq_inbox inbox;      /* grants of backend queues to this worker's requests */
    ev_async grants;               /* ... rings when one arrives */
    struct probe *probes;          /* ejected backends being probed (worker 0) */
    uint64_t rng;                  /* request id generator state */
    bool draining;                 /* shutdown: no accept, close idle connections */
    atomic_bool stopped;           /* set when the loop has exited */
};

/* Starts worker <id> of <dp> on its own thread with <snap> (borrowed).
 * Binds its listeners first, so errors reach the caller. */
int worker_start(struct worker *w, struct dp *dp, unsigned id, struct snap *snap,
                 struct lb_err *err);

/* Any thread: asks the worker to adopt dp's newest snapshot / to drain. */
void worker_notify(struct worker *w);

/* Joins the thread and frees everything. After worker_notify with shutdown. */
void worker_join(struct worker *w);

/* Bytes in <b> (NULL: 0). */
static inline uint32_t worker_buf_len(const struct buf *b)
{
    return b ? b->end - b->start : 0;
}

/* Worker thread: makes <io> (whose events are *<cur>) wait for <want>
 * (EV_READ, EV_WRITE, both, or 0: stopped), touching the loop only when that
 * changes. */
void worker_set_events(struct ev_loop *loop, ev_io *io, int *cur, int want);

/* Worker thread: takes and releases buffers of the pool. worker_buf_get()
 * returns a WORKER_BUF_SIZE buffer, or NULL on no memory; worker_buf_grow()
 * replaces <b> by a buffer of at least <cap> bytes holding the same bytes
 * (moved to its start), or returns NULL leaving <b> as it was. */
struct buf *worker_buf_get(struct worker *w);
struct buf *worker_buf_grow(struct worker *w, struct buf *b, uint32_t cap);
void worker_buf_put(struct worker *w, struct buf *b);

/* Worker thread: releases a view reference taken by a connection. */
void worker_view_unref(struct worker *w, struct wview *v);

/* Worker thread: a connection closed; the worker may finish draining. */
void worker_conn_closed(struct worker *w);

#define WORKER_BUF_SIZE (16u * 1024u)

#endif
