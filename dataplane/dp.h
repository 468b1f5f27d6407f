/* dataplane/dp.h: the data-plane process context shared by its threads, and
 * the newest snapshot they adopt. */
#ifndef LB_DP_H
#define LB_DP_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "retry.h"

struct bshared_registry;
struct handover_state;
struct lb_err;
struct fshared_registry;
struct tls_tickets;
struct snap;
struct sync;
struct worker;

struct snap_frontend;

/* One listening socket of the process. The workers that accept on it (see
 * dp_listeners_acquire) each do through a duplicate of their own. */
struct dp_listener {
    int fd;        /* the process's own descriptor (what a hand-over passes on) */
    unsigned refs; /* workers holding a duplicate */
    int holder;    /* a plain frontend's: the one worker accepting on it; -1 all */
    char key[80];  /* the frontend's "address:port" */
};

struct dp {
    pthread_mutex_t lock; /* guards <snap> and <listeners> */
    struct snap *snap;    /* newest valid snapshot; workers adopt it */
    atomic_bool draining; /* graceful shutdown requested */
    atomic_bool stopping; /* drain time is up: close everything */
    unsigned n_workers;
    unsigned n_planned; /* workers the process starts (n_workers counts the running) */
    struct worker *workers;
    _Atomic uint64_t *load;             /* per planned worker, dp_load_pack(); DP_LOAD_OUT while
                                         * it does not accept. NULL: no balance */
    struct bshared_registry *backends;  /* per backend id, shared by the workers */
    struct fshared_registry *frontends; /* per frontend name; bound into each snapshot */
    struct retry_budget budget;         /* retries in flight, all workers */
    bool controlled;                    /* fed by a control plane (--control) */
    struct tls_tickets *tickets;        /* session-ticket keys, shared by TLS frontends */
    struct sync *sync;                  /* main thread only: the feed (for /metrics), or NULL */
    struct dp_listener *listeners;      /* the listening sockets (under <lock>) */
    size_t n_listeners, cap_listeners;
    atomic_bool handed_over;        /* the drain follows a hand-over: idle keep-alive
                                     * connections get a last request (DP_HANDOVER_IDLE_S) */
    struct handover_state *inherit; /* main thread, while the workers start: the sockets
                                     * a takeover brought; NULL otherwise */
};

/* How long, in a drain after a hand-over, an idle keep-alive connection
 * stays open for one more request (answered with Connection: close) before
 * it is closed: a client that sent its next request just as the drain began
 * gets an answer instead of a reset. */
#define DP_HANDOVER_IDLE_S 1.0

/* Any thread: a new reference to the newest snapshot. */
struct snap *dp_snapshot(struct dp *dp);

/* Any thread: makes <s> (reference taken over) the newest snapshot and drops
 * the previous one's reference. The caller tells the workers (worker_notify). */
void dp_swap(struct dp *dp, struct snap *s);

/* The accept balance of the sockets every worker accepts on: each worker
 * publishes in dp.load how many connections it holds and since when its
 * loop has run callbacks (awake_ms, a millisecond clock made odd; 0 while it
 * waits for events). */
#define DP_LOAD_OUT UINT64_MAX

static inline uint64_t dp_load_pack(uint32_t sessions, uint32_t awake_ms)
{
    return (uint64_t)sessions << 32 | awake_ms;
}

/* Any thread: the fewest connections a worker other than <self> that
 * accepts holds, counting <busy_extra> more for one that woke more than
 * <busy_ms> before <now_ms> (busy, or not given the processor); UINT32_MAX
 * when there is none (or no dp.load). */
uint32_t dp_load_least(struct dp *dp, unsigned self, uint32_t now_ms, uint32_t busy_ms,
                       uint32_t busy_extra);

/* A socket for frontend <fe> with the options every listener has
 * (SO_REUSEADDR, SO_REUSEPORT, IPV6_V6ONLY, TCP_NODELAY), bound to its
 * address but not listening: what a listener starts from, and how a new
 * snapshot's frontends are checked before it is taken. -1 with <err> set. */
int dp_socket_bound(const struct snap_frontend *fe, struct lb_err *err);

/* Any thread: a descriptor of worker <worker>'s own (a duplicate) for each
 * listening socket of frontend <fe> it accepts on, in <fds> (room for
 * <max>), with the process's descriptor of the same socket in <shared> (to
 * give back with dp_listener_release). The first worker to ask adopts the
 * sockets a takeover brought for the frontend (all of them: each one's queue
 * must be accepted on). A TLS frontend has one socket that every worker
 * accepts on: a connection waits in one queue for the first worker free to
 * take it, and no handshake waits behind another worker's batch. A plain
 * frontend has one per worker (SO_REUSEPORT: no worker woken for a
 * connection another takes); a takeover's are dealt round robin, and a
 * worker left without one binds its own. Returns how many, or -1 with <err>
 * set (nothing taken). */
int dp_listeners_acquire(struct dp *dp, const struct snap_frontend *fe, unsigned worker, int *fds,
                         int *shared, size_t max, struct lb_err *err);

void dp_listener_release(struct dp *dp, int shared);

/* Main thread: appends a duplicate of every recorded listening socket to
 * <st> (the duplicates stay valid whatever the workers close meanwhile).
 * Returns LB_OK, LB_ESYS or LB_ENOMEM. */
int dp_listeners_export(struct dp *dp, struct handover_state *st, struct lb_err *err);

#endif
