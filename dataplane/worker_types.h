/* dataplane/worker_types.h: the worker's state, types only. The modules a
 * worker runs (view, h1session, exchange, upstream, probe) read and write
 * these fields on the worker's thread; worker.h has the worker's functions.
 * Everything here belongs to the worker's thread unless a field says
 * otherwise. */
#ifndef LB_WORKER_TYPES_H
#define LB_WORKER_TYPES_H

#include <ev.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "balancer.h"
#include "breaker.h"
#include "bshared.h"
#include "buf.h"
#include "connq.h"
#include "dp.h"
#include "http1.h"
#include "lb_list.h"
#include "lb_map.h"
#include "lb_ref.h"
#include "metrics.h"
#include "retry.h"
#include "snapshot.h"

struct lb_logbuf;
struct h1session;
struct h2conn;
struct upstream;
struct dp;
struct probe;

/* Per worker, per backend id: survives snapshot swaps while the id exists. */
struct backend_rt {
    char *id;
    uint32_t stat_slot;       /* index in the worker's metrics backend table */
    struct balancer_slot bal; /* smooth WRR state */
    struct lb_list idle;      /* keep-alive pool (upstream.bpool), most recently used first */
    uint32_t n_idle;
    struct bshared *sh;           /* shared by the workers (a registry reference), or NULL */
    struct breaker *breaker;      /* sh->breaker, or NULL */
    uint32_t max_conns;           /* the newest snapshot's limit, all workers (0: none) */
    uint32_t max_queue;           /* ... and queue length */
    uint8_t health;               /* as the newest snapshot says: enum snap_health */
    const void *tls_ctx;          /* the client context its pooled connections used */
    char tls_name[256];           /* ... and the name they verified */
    uint8_t send_proxy;           /* the PROXY version its connections start with (0: none);
                                   * such pooled connections serve their client only */
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
    struct lb_ref ref;  /* connections using it, +1 while current */
    bool panic;         /* every active backend is down and the pool fails open */
    struct wview *next; /* retired views still referenced */
};

struct listener {
    struct worker *w;
    ev_io io;
    ev_timer pause;     /* accepting again after running out of descriptors, or after
                         * leaving new connections to a less loaded worker */
    double pause_s;     /* the current pause; 0 after a successful accept */
    int fd;             /* this worker's duplicate of the process's socket <shared> */
    int shared;         /* see dp_listeners_acquire */
    unsigned batch;     /* connections accepted per wake-up */
    bool balanced;      /* every worker accepts on the socket: the least loaded does */
    double defer_since; /* when this worker began leaving the queue to a less loaded one */
    char key[80];       /* "address:port" */
    uint32_t fe_index;  /* the frontend's index in the current view */
    bool seen;          /* mark during a swap */
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
    ev_check awake;        /* the loop's wait ended (the accept balance, dp.load) */
    struct wview *view;    /* current view */
    struct wview *retired; /* older views with connections still on them */
    struct listener *listeners;
    struct lb_list sessions; /* every open client connection (h1session.link) */
    uint32_t n_sessions;
    uint32_t n_tunnels; /* sessions that became Upgrade tunnels */
    struct h1session *free_sessions;
    uint32_t n_free_sessions;
    struct lb_list h2conns;    /* HTTP/2 client connections (also counted in n_sessions) */
    struct h2conn *h2_free;    /* closed ones, freed by h2session_free_list_trim() */
    struct lb_list h2_pending; /* HTTP/2 connections with woken streams (h2conn.pend) */
    uint32_t n_h2_streams;     /* open HTTP/2 streams on this worker */
    struct lb_list pool;       /* every pooled upstream (upstream.wpool), newest first */
    struct buf_pool bufs;
    uint32_t trim_ticks;               /* ticks since the buffer pool was last trimmed */
    uint32_t sessions_high;            /* the most n_sessions a tick saw since then */
    struct lb_map be_map;              /* id -> struct backend_rt (keyed by its id) */
    struct http1_header *scratch_hdrs; /* parse scratch, sized for the view's limits */
    uint32_t scratch_cap;
    struct lb_logbuf *log;              /* access log buffer */
    struct metrics_worker metrics;      /* this worker's counters */
    struct connq_inbox inbox;           /* grants of backend queues to this worker's requests */
    ev_async grants;                    /* ... rings when one arrives */
    struct probe *probes;               /* ejected backends being probed (worker 0) */
    uint64_t rng;                       /* request id generator state */
    bool draining;                      /* shutdown: no accept, close idle connections */
    double drain_idle_s;                /* draining after a hand-over: how long an idle keep-alive
                                         * connection waits for a last request (0: closed at once) */
    atomic_bool stopped;                /* set when the loop has exited */
    _Atomic uint64_t served_generation; /* the snapshot this worker's view serves */
    _Atomic uint64_t served_version;    /* ... and its config version */
    _Atomic uint64_t *load;             /* dp.load[id], see worker_publish */
    uint32_t awake_ms;                  /* when the loop's wait ended (ms, odd), 0 waiting */
};

/* The millisecond clock of awake_ms, from a loop's ev_now(). */
static inline uint32_t worker_clock_ms(double now)
{
    return (uint32_t)(uint64_t)(now * 1000);
}

/* Tells the other workers what <w> holds and since when its loop has run
 * callbacks (awake_ms; 0: it waits for events): dp.load[id], the accept
 * balance's view of the worker. */
static inline void worker_publish(struct worker *w)
{
    if (w->load != NULL && !w->draining)
        atomic_store_explicit(w->load, dp_load_pack(w->n_sessions, w->awake_ms),
                              memory_order_relaxed);
}

/* Counts <delta> connections opened (> 0) or closed. */
static inline void worker_sessions_add(struct worker *w, int delta)
{
    w->n_sessions = (uint32_t)((int64_t)w->n_sessions + delta);
    worker_publish(w);
}

#endif
