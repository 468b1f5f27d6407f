/* dataplane/metrics.h: per-worker counters, summed at scrape time.
 *
 * Each counter has one writer, its worker thread, which bumps it with a
 * relaxed load and store (plain moves on x86, no locked instruction); the
 * scraper reads them with relaxed loads. Tables that grow (new frontends,
 * backends, label pairs) change only under the worker's <lock>, which the
 * scraper holds while it reads. */
#ifndef LB_METRICS_H
#define LB_METRICS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "lb_map.h"

struct lb_prom;

#define METRIC_ADD(field, n)                                                                       \
    atomic_store_explicit(&(field), atomic_load_explicit(&(field), memory_order_relaxed) + (n),    \
                          memory_order_relaxed)
#define METRIC_GET(field) atomic_load_explicit(&(field), memory_order_relaxed)

typedef _Atomic uint64_t metric_t;

/* Why a request was answered by the data plane itself. */
enum metrics_reject {
    REJECT_BAD_REQUEST = 0,  /* 400 */
    REJECT_URI_TOO_LONG,     /* 414 */
    REJECT_HEADER_TOO_LARGE, /* 431 */
    REJECT_EXPECTATION,      /* 417 */
    REJECT_NOT_IMPLEMENTED,  /* 501 */
    REJECT_VERSION,          /* 505 */
    REJECT_CLIENT_TIMEOUT,   /* 408 */
    REJECT_NO_BACKEND,       /* 503 */
    REJECT_UPSTREAM_FAILED,  /* 502 */
    REJECT_UPSTREAM_TIMEOUT, /* 504 */
    REJECT_CONN_LIMIT,       /* connection refused: max_connections */
    REJECT_RATE_LIMITED,     /* 429 */
    REJECT_N,
};

/* What became of a connection's PROXY protocol header (frontends that take
 * them). */
enum metrics_proxy {
    METRICS_PROXY_ACCEPTED = 0, /* from a listed source: the client it names is used */
    METRICS_PROXY_LOCAL,        /* from a listed source, naming no client (v2 LOCAL, UNKNOWN) */
    METRICS_PROXY_MISSING,      /* a listed source timed out, or closed after part of a
                                 * header (a close before any byte is not counted) */
    METRICS_PROXY_MALFORMED,    /* a listed source sent something else: closed */
    METRICS_PROXY_UNTRUSTED,    /* a header from a source not listed: closed */
    METRICS_PROXY_N,
};

/* Why a request went to another backend. */
enum metrics_retry {
    METRICS_RETRY_CONNECT = 0, /* the connection failed: nothing was sent */
    METRICS_RETRY_5XX,         /* 502, 503 or 504 to an idempotent request */
    METRICS_RETRY_TIMEOUT,     /* no response head in time */
    METRICS_RETRY_RESET,       /* closed before answering */
    METRICS_RETRY_N,
};

/* Why an HTTP/2 connection was calmed (GOAWAY ENHANCE_YOUR_CALM) or a
 * stream refused: the attack classes h2session polices. */
enum metrics_h2_abuse {
    H2_ABUSE_RAPID_RESET = 0, /* streams reset by the client, beyond the rate */
    H2_ABUSE_CONTINUATION,    /* CONTINUATION frames beyond the count per header block */
    H2_ABUSE_HEADER_LIST,     /* a decoded header list over http2MaxHeaderListSize */
    H2_ABUSE_SETTINGS,        /* SETTINGS frames beyond the rate */
    H2_ABUSE_PING,            /* PING frames beyond the rate */
    H2_ABUSE_PRIORITY,        /* PRIORITY frames beyond the rate */
    H2_ABUSE_WINDOW_UPDATE,   /* WINDOW_UPDATE frames beyond the rate */
    H2_ABUSE_EMPTY_DATA,      /* DATA frames without payload or end, beyond the rate */
    H2_ABUSE_STREAMS,         /* streams refused: the worker's limit */
    H2_ABUSE_SLOW_READER,     /* our output to the client stayed full too long */
    H2_ABUSE_N,
};

#define METRICS_MAX_FE   64
#define METRICS_NBUCKETS 14
#define METRICS_CLASSES  6                                  /* 1xx..5xx, other */
#define METRICS_PAIR_N   (METRICS_PROTOS * METRICS_CLASSES) /* counters of a pair */

struct metrics_fe {
    char name[128];
    metric_t accepted;
    metric_t accept_pauses; /* out of descriptors or memory: accepting paused */
    metric_t closed;
    metric_t bytes_in;
    metric_t bytes_out;
    metric_t tunnels_opened;   /* Upgrade requests a backend switched (101) */
    metric_t tunnels_closed;   /* ... and those of them over */
    metric_t tunnel_bytes_in;  /* bytes clients sent through tunnels */
    metric_t tunnel_bytes_out; /* bytes backends sent through tunnels */
    metric_t rejected[REJECT_N];
    metric_t proxy[METRICS_PROXY_N]; /* PROXY protocol headers, by outcome */
    metric_t h2_conns;               /* connections that spoke HTTP/2 */
    metric_t h2_streams;             /* HTTP/2 streams that carried a request */
    metric_t h2_abuse[H2_ABUSE_N];   /* HTTP/2 connections calmed, by attack class */
    metric_t hist[METRICS_NBUCKETS + 1];
    metric_t duration_us; /* sum */
};

struct metrics_be {
    char id[128];
    metric_t requests;
    metric_t errors; /* 5xx answered by or for it */
    metric_t connect_failures;
    metric_t timeouts;
    metric_t retries[METRICS_RETRY_N];   /* retries after a failure here, by reason */
    metric_t hist[METRICS_NBUCKETS + 1]; /* latency, lb_prom_latency_bounds buckets */
    metric_t duration_us;                /* latency sum */
    metric_t active; /* attempts (and tunnels) in flight now: up and down by its worker */
};

/* The protocol a client spoke (the protocol label of lb_http_requests_total). */
enum metrics_proto {
    METRICS_HTTP1 = 0, /* "http/1.1" */
    METRICS_H2,        /* "h2" */
    METRICS_PROTOS,
};

/* One (frontend, backend) pair's requests by protocol and status class:
 * by_class[proto * METRICS_CLASSES + class]. */
struct metrics_pair {
    uint16_t fe;
    uint32_t be; /* UINT32_MAX: answered without a backend */
    metric_t by_class[METRICS_PAIR_N];
};

struct metrics_worker {
    pthread_mutex_t lock;
    struct metrics_fe fe[METRICS_MAX_FE];
    uint32_t n_fe;
    struct metrics_be **be; /* by slot; grows; a released slot has an empty id */
    uint32_t n_be;          /* slots in use or released */
    uint32_t cap_be;
    struct lb_map be_index; /* id (in be[slot]) -> slot + 1, as a pointer */
    uint32_t *be_free;      /* released slots, reused first */
    uint32_t n_be_free;
    struct metrics_pair *pairs; /* open addressing on (fe, be) */
    uint32_t cap_pairs;
    uint32_t n_pairs;
};

int metrics_worker_init(struct metrics_worker *m);
void metrics_worker_deinit(struct metrics_worker *m);

/* Worker thread: the slot of frontend <name>, created when new (under lock).
 * Returns -1 when METRICS_MAX_FE slots are used. */
int metrics_fe_slot(struct metrics_worker *m, const char *name);

/* Worker thread: the slot of backend <id>, created when new (under lock).
 * O(1) expected. Returns -1 on no memory. */
int metrics_be_slot(struct metrics_worker *m, const char *id);

/* Worker thread: the backends in <slots> are gone (removed from the config and
 * idle): their series leave /metrics and the slots are reused. One pass over
 * the label pairs for the whole batch. */
void metrics_be_release(struct metrics_worker *m, const uint32_t *slots, uint32_t n);

/* Worker thread: counts one finished request, which the client sent in
 * <proto>. <be> is a backend slot or UINT32_MAX. Allocates only the first
 * time a (fe, be) pair is seen. */
void metrics_request(struct metrics_worker *m, uint16_t fe, uint32_t be, enum metrics_proto proto,
                     unsigned status, uint64_t duration_us);

/* Scrape: the Prometheus text of all <n> workers' counters summed, plus the
 * process gauges given by the caller, appended to <p>. Takes every worker's
 * lock in turn. Any thread. */
struct metrics_backend_state {
    const char *id;
    bool up;
};
void metrics_render(struct lb_prom *p, struct metrics_worker *const *workers, unsigned n,
                    const struct metrics_backend_state *backends, uint32_t n_backends,
                    uint64_t config_version, uint64_t generation);

/* The status class index of <status> (0 for 1xx .. 4 for 5xx, 5 otherwise). */
unsigned metrics_class(unsigned status);

/* Per-backend totals over all workers, for the reports to the control plane. */
struct metrics_be_totals {
    uint64_t requests;
    uint64_t errors;
    uint64_t connect_failures;
    uint64_t timeouts;
    uint64_t duration_us;                /* latency sum */
    uint64_t hist[METRICS_NBUCKETS + 1]; /* latency histogram, lb_prom_latency_bounds */
    uint64_t active;                     /* in flight now */
};

/* Worker thread: one more (<up>) or one fewer request in flight to the
 * backend in <slot> (UINT32_MAX or a slot not in use: nothing). A slot is
 * released only once its backend has nothing in flight. */
static inline void metrics_be_active(struct metrics_worker *m, uint32_t slot, bool up)
{
    if (slot < m->n_be)
        METRIC_ADD(m->be[slot]->active, up ? 1 : (uint64_t)-1);
}

/* Fills out[i] with the sums for backend ids[i] (zeros for an id no worker
 * has seen). Takes every worker's lock in turn. Any thread. */
void metrics_backend_totals(struct metrics_worker *const *workers, unsigned n,
                            const char *const *ids, uint32_t n_ids, struct metrics_be_totals *out);
#endif
