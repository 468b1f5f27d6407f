/* dataplane/snapshot.h: decode, validate and hold the runtime view of an
 * lb.v1.Snapshot. The single entry point for every source of configuration
 * (a file today, the control plane's feed later). */
#ifndef LB_SNAPSHOT_H
#define LB_SNAPSHOT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "breaker.h"
#include "connq.h"
#include "eject.h"
#include "fshared.h"
#include "http1.h"
#include "lb_ref.h"
#include "limiter.h"

struct lb_err;
struct tls_client_ctx;
struct tls_ctx;
struct tls_tickets;
struct Lb__V1__Snapshot;

#define SNAP_MAX_FRONTENDS 64
#define SNAP_MAX_BACKENDS  100000
#define SNAP_MAX_ID        128

enum snap_admin {
    SNAP_ADMIN_ACTIVE = 0,
    SNAP_ADMIN_DRAINING = 1,
    SNAP_ADMIN_DISABLED = 2,
};

enum snap_health {
    SNAP_HEALTH_UNKNOWN = 0,
    SNAP_HEALTH_UP = 1,
    SNAP_HEALTH_DOWN = 2,
};

enum snap_algorithm {
    SNAP_ALGO_ROUND_ROBIN = 0,
    SNAP_ALGO_WEIGHTED = 1,
    SNAP_ALGO_LEAST_REQUEST = 2,
};

#define SNAP_MAX_PROXY_FROM 64 /* a frontend's proxy_from entries */

struct snap_frontend {
    const char *name; /* unique */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    uint16_t port;
    bool tls;                        /* HTTPS: its context is in snap.tls[] */
    char key[80];                    /* "address:port": a listener's identity across snapshots */
    uint32_t n_proxy_from;           /* 0: no PROXY protocol */
    struct limiter_cidr *proxy_from; /* sources that must send a PROXY header */
    bool http2;                      /* TLS: ALPN offers h2 */
    bool http2_cleartext;            /* plain: prior-knowledge h2c */
    uint32_t h2_max_streams;         /* concurrent streams per connection */
    uint32_t h2_window;              /* initial stream window (bytes) */
    uint32_t h2_max_header_list;     /* decoded header list (bytes) */
};

struct snap_backend {
    const char *id; /* unique, stable across snapshots */
    const char *url;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    char host_port[72];       /* "127.0.0.1:9001" or "[::1]:9001", for Host and logs */
    uint32_t weight;          /* 1..1000 */
    uint8_t admin;            /* enum snap_admin */
    uint8_t health;           /* enum snap_health */
    bool tls;                 /* https://: its client context is in snap.be_tls[] */
    const char *sni;          /* server name to send ("" none) */
    char verify_name[256];    /* name (or IP literal) the certificate must match */
    uint32_t max_connections; /* per data plane; 0: no limit */
    uint32_t max_queue;       /* waiters at most when at the limit */
    uint8_t send_proxy;       /* PROXY header on new connections: 0 none, 1 v1, 2 v2 */
};

struct snap_timeouts { /* milliseconds, defaults filled in */
    uint32_t client_header;
    uint32_t client_body;
    uint32_t keepalive;
    uint32_t upstream_connect;
    uint32_t upstream_header;
    uint32_t upstream_idle;
    uint32_t drain;
    uint32_t pool_idle;
    uint32_t queue;       /* longest wait in a backend's queue */
    uint32_t tunnel_idle; /* an Upgrade tunnel with no byte either way */
};

/* An immutable runtime view. Shared by all threads; reference counted. */
struct snap {
    struct lb_ref ref;
    uint64_t version;
    uint64_t generation;
    struct snap_frontend *frontends;
    uint32_t n_frontends;
    struct snap_backend *backends;
    uint32_t n_backends;
    struct snap_timeouts timeouts;
    struct http1_limits limits;
    uint32_t max_connections; /* per worker */
    uint32_t pool_max_idle;   /* per backend per worker */
    uint32_t max_tunnels;     /* open Upgrade tunnels per worker */
    uint8_t algorithm;        /* enum snap_algorithm */
    uint32_t slow_start_ms;   /* ramp of an added or recovered backend; 0: none */
    bool fail_open;           /* every backend down: send to all (else 503) */
    struct breaker_config breaker;
    struct eject_config eject; /* .controlled is the process's, not the snapshot's */
    bool breaker_ignore_5xx;   /* only connect errors and timeouts open it */
    uint32_t max_retries;      /* per request, on other backends */
    bool retry_5xx;            /* idempotent requests retried after 502/503/504/timeout */
    uint32_t retry_budget_percent;
    uint32_t retry_budget_min;
    uint32_t backoff_base_ms;
    uint32_t backoff_cap_ms;
    int log_level; /* enum lb_log_level */
    bool access_log;
    bool metrics_enabled;
    struct sockaddr_storage metrics_addr;
    socklen_t metrics_addrlen;
    struct limiter_config rl_cfg; /* validated ratelimit section */
    /* the frontends' runtime state (rate limiters) is not part of the snapshot:
     * this is where the registry resolved them for it, set once by
     * fshared_registry_bind() before publishing, released with the snapshot;
     * fshared_limiter() reads it */
    struct fshared_binding *fshared;
    struct tls_ctx **tls; /* per frontend, NULL for plain HTTP; set by snapshot_bind_tls */
    struct tls_client_ctx **be_tls; /* per backend, NULL for http://; set by snapshot_bind_tls */
    struct Lb__V1__Snapshot *pb;    /* the decoded message; strings point into it */
};

/* Decodes and validates <len> bytes of a binary lb.v1.Snapshot. On success
 * stores a view with one reference in *out and returns LB_OK; otherwise returns
 * LB_EINVAL (or LB_ENOMEM) with a message naming the offending field, e.g.
 * "backends[2].weight: 0 is out of range (1..1000)". Any thread. */
int snapshot_decode(const uint8_t *buf, size_t len, struct snap **out, struct lb_err *err);

/* This host's listening address (--bind-address <addr>, an IPv4 or IPv6
 * address): a frontend the snapshot binds to the wildcard of that family
 * (0.0.0.0 or ::) listens on <addr> instead, so one fleet-wide config serves
 * hosts that must listen on one interface. Once, before the first decode
 * and before any thread starts. Returns LB_OK, or LB_EINVAL. */
int snapshot_bind_address(const char *addr, struct lb_err *err);

/* Reads <path> and decodes it as above. */
int snapshot_load_file(const char *path, struct snap **out, struct lb_err *err);

/* Builds the TLS context of every HTTPS frontend of <s> before it is
 * published, keeping <old>'s context for a frontend of the same name whose TLS
 * settings are byte for byte the same (a new generation that changed only
 * health does not rebuild certificates, and resumption goes on). <tickets> is
 * the process's session-ticket key store. Main thread. Returns LB_OK, or
 * LB_EINVAL naming the field ("frontends[1].tls.certificates[0].key_pem: ...")
 * or LB_ENOMEM; <s> is then unusable. */
int snapshot_bind_tls(struct snap *s, const struct snap *old, struct tls_tickets *tickets,
                      struct lb_err *err);

/* Reference counting; any thread. snap_unref(NULL) is a no-op. */
struct snap *snap_ref(struct snap *s);
void snap_unref(struct snap *s);

/* Index of the backend whose id is <id>, or -1. */
int snap_backend_find(const struct snap *s, const char *id);

/* True when the backend may take new requests (active, not known down). */
bool snap_backend_is_eligible(const struct snap_backend *b);

#endif
