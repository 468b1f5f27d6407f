/* dataplane/metrics_server.c: a deliberately small HTTP/1.1 server: one
 * request per connection, bounded in size and time. */
#include "metrics_server.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bshared.h"
#include "dp.h"
#include "http1.h"
#include "lb_err.h"
#include "lb_log.h"
#include "lb_prom.h"
#include "metrics.h"
#include "snapshot.h"
#include "sync.h"
#include "tls.h"
#include "worker.h"

#define REQ_MAX     8192
#define REQ_TIMEOUT 5.0
#define MAX_CLIENTS 64

struct mclient {
    struct metrics_server *srv;
    unsigned slot; /* index in srv->clients */
    int fd;
    ev_io io;
    ev_timer timer;
    char req[REQ_MAX];
    size_t req_len;
    char *resp;
    size_t resp_len;
    size_t resp_sent;
};

struct metrics_server {
    struct ev_loop *loop;
    struct dp *dp;
    int fd;
    ev_io io;
    ev_timer pause;                       /* accepting again after running out of descriptors */
    struct mclient *clients[MAX_CLIENTS]; /* the first n_clients are open */
    unsigned n_clients;
};

static void mclient_free(struct mclient *c)
{
    struct metrics_server *s = c->srv;
    ev_io_stop(s->loop, &c->io);
    ev_timer_stop(s->loop, &c->timer);
    close(c->fd);
    struct mclient *last = s->clients[--s->n_clients];
    s->clients[c->slot] = last;
    last->slot = c->slot;
    free(c->resp);
    free(c);
}

/* What the scrape read of one backend's shared state. */
struct be_row {
    bool found;
    int state;
    struct breaker_counters bc;
    uint64_t v[10]; /* ejected, ejections, conns, queued, timeouts, waited, wait_us,
                     * probed back, handed over, queue full */
};

/* The breaker families from the rows read for <snap>'s backends. */
static void render_breakers(struct lb_prom *p, const struct snap *snap, const struct be_row *rows)
{
    static const char *const to_names[3] = {"closed", "open", "half_open"};
    lb_prom_family(p, "lb_breaker_state", "gauge",
                   "Circuit breaker state: 0 closed, 1 open, 2 half-open.");
    for (uint32_t i = 0; i < snap->n_backends; i++) {
        struct lb_prom_label l = {"backend", snap->backends[i].id};
        if (rows[i].found)
            lb_prom_u64(p, "lb_breaker_state", &l, 1, (uint64_t)rows[i].state);
    }
    lb_prom_family(p, "lb_breaker_transitions_total", "counter",
                   "Circuit breaker transitions, by the state entered.");
    for (uint32_t i = 0; i < snap->n_backends; i++) {
        if (!rows[i].found)
            continue;
        uint64_t v[3] = {rows[i].bc.closed, rows[i].bc.opened, rows[i].bc.half_opened};
        for (int k = 0; k < 3; k++) {
            struct lb_prom_label l[2] = {{"backend", snap->backends[i].id}, {"to", to_names[k]}};
            lb_prom_u64(p, "lb_breaker_transitions_total", l, 2, v[k]);
        }
    }
    lb_prom_family(p, "lb_breaker_rejected_total", "counter",
                   "Requests a circuit breaker kept from a backend.");
    for (uint32_t i = 0; i < snap->n_backends; i++) {
        struct lb_prom_label l = {"backend", snap->backends[i].id};
        if (rows[i].found)
            lb_prom_u64(p, "lb_breaker_rejected_total", &l, 1, rows[i].bc.rejected);
    }
}

/* What the workers share per backend (breaker, ejection, connections and
 * queue), the retry budget and the pool's panic. */
static void render_resilience(struct lb_prom *p, struct dp *dp, const struct snap *snap)
{
    lb_prom_family(p, "lb_retry_budget_exhausted_total", "counter",
                   "Retries not sent because the retry budget was spent.");
    lb_prom_u64(p, "lb_retry_budget_exhausted_total", NULL, 0, retry_budget_exhausted(&dp->budget));
    if (snap == NULL)
        return;
    bool any_active = false, any_up = false;
    for (uint32_t i = 0; i < snap->n_backends; i++) {
        if (snap->backends[i].admin != SNAP_ADMIN_ACTIVE)
            continue;
        any_active = true;
        any_up = any_up || snap->backends[i].health != SNAP_HEALTH_DOWN;
    }
    lb_prom_family(p, "lb_pool_all_down", "gauge",
                   "1 when every active backend is down; lb_pool_fail_open tells what happens.");
    lb_prom_u64(p, "lb_pool_all_down", NULL, 0, any_active && !any_up ? 1 : 0);
    lb_prom_family(p, "lb_pool_fail_open", "gauge",
                   "1: with every backend down, traffic goes to all of them; 0: 503.");
    lb_prom_u64(p, "lb_pool_fail_open", NULL, 0, snap->fail_open ? 1 : 0);
    if (dp->backends == NULL)
        return;
    /* one registry look-up per backend, then one pass per family */
    struct be_row *rows = calloc(snap->n_backends ? snap->n_backends : 1, sizeof(*rows));
    if (rows == NULL) {
        p->oom = true;
        return;
    }
    uint64_t now_ms = (uint64_t)(ev_time() * 1000.0);
    for (uint32_t i = 0; i < snap->n_backends; i++) {
        struct bshared *sh = bshared_registry_find(dp->backends, snap->backends[i].id);
        if (sh == NULL)
            continue;
        rows[i].found = true;
        rows[i].state = (int)breaker_state(sh->breaker, now_ms);
        breaker_counters_read(sh->breaker, &rows[i].bc);
        rows[i].v[0] = eject_is_out(&sh->eject);
        rows[i].v[1] = eject_count(&sh->eject);
        rows[i].v[2] = atomic_load(&sh->q.conns);
        rows[i].v[3] = atomic_load(&sh->q.queued);
        rows[i].v[4] = atomic_load(&sh->q.timeouts);
        rows[i].v[5] = atomic_load(&sh->q.waited);
        rows[i].v[6] = atomic_load(&sh->q.wait_us);
        rows[i].v[7] = atomic_load(&sh->eject.probed_back);
        rows[i].v[8] = atomic_load(&sh->eject.handed_over);
        rows[i].v[9] = atomic_load(&sh->q.full);
        bshared_registry_release(dp->backends, sh);
    }
    static const struct {
        const char *name, *type, *help;
        int at; /* in be_row.v */
    } fam[] = {
        {"lb_backend_ejected", "gauge",
         "1 while the backend is out of rotation after failed connects (passive ejection).", 0},
        {"lb_backend_ejections_total", "counter", "Times the backend was ejected.", 1},
        {"lb_backend_connections", "gauge",
         "Upstream connections open or being set up to the backend, all workers.", 2},
        {"lb_backend_queue_length", "gauge",
         "Requests waiting for a connection to the backend (maxConnections reached).", 3},
        {"lb_backend_queue_timeouts_total", "counter",
         "Requests answered 503 after waiting in the backend's queue for timeouts.queue.", 4},
        {"lb_backend_queue_full_total", "counter",
         "Requests that found the backend's queue full (maxQueue).", 9},
    };
    for (size_t f = 0; f < sizeof(fam) / sizeof(fam[0]); f++) {
        lb_prom_family(p, fam[f].name, fam[f].type, fam[f].help);
        for (uint32_t i = 0; i < snap->n_backends; i++) {
            struct lb_prom_label l = {"backend", snap->backends[i].id};
            if (rows[i].found)
                lb_prom_u64(p, fam[f].name, &l, 1, rows[i].v[fam[f].at]);
        }
    }
    lb_prom_family(p, "lb_backend_ejection_ends_total", "counter",
                   "Ejections ended: by a probe that connected, or handed over to the health "
                   "checks (a snapshot marked the backend down).");
    for (uint32_t i = 0; i < snap->n_backends; i++) {
        if (!rows[i].found)
            continue;
        struct lb_prom_label l[2] = {{"backend", snap->backends[i].id}, {"how", "probe"}};
        lb_prom_u64(p, "lb_backend_ejection_ends_total", l, 2, rows[i].v[7]);
        l[1].value = "health";
        lb_prom_u64(p, "lb_backend_ejection_ends_total", l, 2, rows[i].v[8]);
    }
    lb_prom_family(p, "lb_backend_queue_wait_seconds", "summary",
                   "Time requests spent in the backend's queue before they got a connection.");
    for (uint32_t i = 0; i < snap->n_backends; i++) {
        struct lb_prom_label l = {"backend", snap->backends[i].id};
        if (!rows[i].found)
            continue;
        lb_prom_f64(p, "lb_backend_queue_wait_seconds_sum", &l, 1, rows[i].v[6] / 1e6);
        lb_prom_u64(p, "lb_backend_queue_wait_seconds_count", &l, 1, rows[i].v[5]);
    }
    if (snap->breaker.enabled)
        render_breakers(p, snap, rows);
    free(rows);
}

/* What the scrape read of one frontend's rate limiter and TLS context. */
struct fe_row {
    bool has_rl, has_tls;
    struct limiter_stats rl;
    struct tls_stats tls;
};

/* One read per frontend, then one pass per family: NULL (p->oom set) when
 * out of memory. */
static struct fe_row *read_frontends(struct lb_prom *p, const struct snap *snap)
{
    struct fe_row *rows = calloc(snap->n_frontends ? snap->n_frontends : 1, sizeof(*rows));
    if (rows == NULL) {
        p->oom = true;
        return NULL;
    }
    for (uint32_t i = 0; i < snap->n_frontends; i++) {
        rows[i].has_rl = fshared_limiter(snap->fshared, i) != NULL;
        if (rows[i].has_rl)
            limiter_stats(fshared_limiter(snap->fshared, i), &rows[i].rl);
        rows[i].has_tls = snap->tls != NULL && snap->tls[i] != NULL;
        if (rows[i].has_tls)
            tls_ctx_stats(snap->tls[i], &rows[i].tls);
    }
    return rows;
}

static void render_ratelimit(struct lb_prom *p, const struct snap *snap, const struct fe_row *rows)
{
    if (!snap->rl_cfg.enabled)
        return;
    lb_prom_family(p, "lb_ratelimit_requests_total", "counter",
                   "Requests the rate limiter let through or refused, by scope.");
    for (uint32_t i = 0; i < snap->n_frontends; i++) {
        if (!rows[i].has_rl)
            continue;
        const struct limiter_stats *st = &rows[i].rl;
        const char *fe = snap->frontends[i].name;
        struct {
            const char *scope, *result;
            uint64_t v;
            bool on;
        } by[4] = {
            {"client", "allowed", st->allowed_client, snap->rl_cfg.per_client},
            {"client", "limited", st->limited_client, snap->rl_cfg.per_client},
            {"global", "allowed", st->allowed_global, snap->rl_cfg.global},
            {"global", "limited", st->limited_global, snap->rl_cfg.global},
        };
        for (int k = 0; k < 4; k++) {
            if (!by[k].on)
                continue;
            struct lb_prom_label l[3] = {
                {"frontend", fe}, {"scope", by[k].scope}, {"result", by[k].result}};
            lb_prom_u64(p, "lb_ratelimit_requests_total", l, 3, by[k].v);
        }
    }
    lb_prom_family(p, "lb_ratelimit_keys", "gauge", "Client keys the rate limiter holds.");
    for (uint32_t i = 0; i < snap->n_frontends; i++) {
        struct lb_prom_label l = {"frontend", snap->frontends[i].name};
        if (rows[i].has_rl)
            lb_prom_u64(p, "lb_ratelimit_keys", &l, 1, rows[i].rl.keys);
    }
    lb_prom_family(p, "lb_ratelimit_evictions_total", "counter",
                   "Client keys dropped to stay within ratelimit.maxKeys (least recently used).");
    for (uint32_t i = 0; i < snap->n_frontends; i++) {
        struct lb_prom_label l = {"frontend", snap->frontends[i].name};
        if (rows[i].has_rl)
            lb_prom_u64(p, "lb_ratelimit_evictions_total", &l, 1, rows[i].rl.evictions);
    }
}

/* TLS counters belong to a context: a certificate reload starts new ones. */
static void render_tls(struct lb_prom *p, const struct snap *snap, const struct fe_row *rows)
{
    if (snap->tls == NULL)
        return;
    lb_prom_family(p, "lb_tls_handshakes_total", "counter",
                   "Completed TLS handshakes, by protocol version.");
    for (uint32_t i = 0; i < snap->n_frontends; i++) {
        for (int v = 0; rows[i].has_tls && v < TLS_VER_COUNT; v++) {
            struct lb_prom_label l[2] = {{"frontend", snap->frontends[i].name},
                                         {"version", tls_version_name((enum tls_version)v)}};
            lb_prom_u64(p, "lb_tls_handshakes_total", l, 2, rows[i].tls.handshakes[v]);
        }
    }
    lb_prom_family(p, "lb_tls_sessions_total", "counter",
                   "Completed TLS handshakes: full, or resumed from a ticket or the cache.");
    for (uint32_t i = 0; i < snap->n_frontends; i++) {
        if (!rows[i].has_tls)
            continue;
        struct lb_prom_label l[2] = {{"frontend", snap->frontends[i].name}, {"kind", "full"}};
        lb_prom_u64(p, "lb_tls_sessions_total", l, 2, rows[i].tls.full);
        l[1].value = "resumed";
        lb_prom_u64(p, "lb_tls_sessions_total", l, 2, rows[i].tls.resumed);
    }
    lb_prom_family(p, "lb_tls_handshake_errors_total", "counter",
                   "Failed TLS handshakes, by reason.");
    for (uint32_t i = 0; i < snap->n_frontends; i++) {
        for (int e = 0; rows[i].has_tls && e < TLS_ERR_COUNT; e++) {
            if (rows[i].tls.errors[e] == 0)
                continue;
            struct lb_prom_label l[2] = {{"frontend", snap->frontends[i].name},
                                         {"reason", tls_error_name((enum tls_error)e)}};
            lb_prom_u64(p, "lb_tls_handshake_errors_total", l, 2, rows[i].tls.errors[e]);
        }
    }
    lb_prom_family(p, "lb_tls_cert_not_after_seconds", "gauge",
                   "When each served certificate expires (unix seconds).");
    for (uint32_t i = 0; i < snap->n_frontends; i++) {
        for (size_t k = 0; rows[i].has_tls && k < tls_ctx_cert_count(snap->tls[i]); k++) {
            struct tls_cert_info ci;
            if (tls_ctx_cert_info(snap->tls[i], k, &ci) != 0)
                continue;
            struct lb_prom_label l[2] = {{"frontend", snap->frontends[i].name}, {"cert", ci.name}};
            lb_prom_u64(p, "lb_tls_cert_not_after_seconds", l, 2,
                        ci.not_after > 0 ? (uint64_t)ci.not_after : 0);
        }
    }
}

/* The frontends' rate limiters and TLS contexts, read once for both. */
static void render_frontends(struct lb_prom *p, const struct snap *snap)
{
    if (snap == NULL || (!snap->rl_cfg.enabled && snap->tls == NULL))
        return;
    struct fe_row *rows = read_frontends(p, snap);
    if (rows == NULL)
        return;
    render_ratelimit(p, snap, rows);
    render_tls(p, snap, rows);
    free(rows);
}

static void render_metrics(struct metrics_server *s, struct lb_prom *p)
{
    struct dp *dp = s->dp;
    struct snap *snap = dp_snapshot(dp);
    struct metrics_worker **ws = calloc(dp->n_workers, sizeof(*ws));
    struct metrics_backend_state *bs =
        calloc(snap && snap->n_backends ? snap->n_backends : 1, sizeof(*bs));
    if (ws == NULL || bs == NULL) {
        p->oom = true;
    } else {
        for (unsigned i = 0; i < dp->n_workers; i++)
            ws[i] = &dp->workers[i].metrics;
        uint32_t nb = snap ? snap->n_backends : 0;
        for (uint32_t i = 0; i < nb; i++) {
            bs[i].id = snap->backends[i].id;
            bs[i].up = snap_backend_is_eligible(&snap->backends[i]);
        }
        /* what every worker serves: a new snapshot counts once the last
         * worker has taken it */
        uint64_t gen = UINT64_MAX, version = 0;
        for (unsigned i = 0; i < dp->n_workers; i++) {
            uint64_t g = atomic_load(&dp->workers[i].served_generation);
            if (g < gen) {
                gen = g;
                version = atomic_load(&dp->workers[i].served_version);
            }
        }
        if (dp->n_workers == 0)
            gen = 0;
        metrics_render(p, ws, dp->n_workers, bs, nb, version, gen);
        render_resilience(p, dp, snap);
        render_frontends(p, snap);
        if (dp->sync != NULL)
            sync_prom(dp->sync, p);
    }
    free(ws);
    free(bs);
    snap_unref(snap);
}

static void mclient_respond(struct mclient *c, unsigned status, const char *ctype, const char *body,
                            size_t len)
{
    char head[256];
    int hl = snprintf(head, sizeof(head),
                      "HTTP/1.1 %u %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                      "Connection: close\r\n\r\n",
                      status, http1_reason(status), ctype, len);
    c->resp = malloc((size_t)hl + len);
    if (c->resp == NULL) {
        mclient_free(c);
        return;
    }
    memcpy(c->resp, head, (size_t)hl);
    memcpy(c->resp + hl, body, len);
    c->resp_len = (size_t)hl + len;
    ev_io_stop(c->srv->loop, &c->io);
    ev_io_set(&c->io, c->fd, EV_WRITE);
    ev_io_start(c->srv->loop, &c->io);
}

static void mclient_handle(struct mclient *c, const struct http1_msg *m)
{
    if (m->meth != HTTP1_M_GET && m->meth != HTTP1_M_HEAD) {
        const char *b = "only GET is served here\n";
        mclient_respond(c, 405, "text/plain", b, strlen(b));
        return;
    }
    if (http1_slice_eq(m->target, "/metrics")) {
        struct lb_prom p;
        lb_prom_init(&p);
        render_metrics(c->srv, &p);
        if (p.oom) {
            const char *b = "out of memory rendering metrics\n";
            mclient_respond(c, 500, "text/plain", b, strlen(b));
        } else {
            mclient_respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", p.buf,
                            m->meth == HTTP1_M_HEAD ? 0 : p.len);
        }
        lb_prom_deinit(&p);
        return;
    }
    if (http1_slice_eq(m->target, "/health")) {
        mclient_respond(c, 200, "text/plain", "ok\n", 3);
        return;
    }
    const char *b = "not found: try /metrics\n";
    mclient_respond(c, 404, "text/plain", b, strlen(b));
}

static void mclient_on_io(struct ev_loop *loop, ev_io *io, int revents)
{
    struct mclient *c = io->data;
    if (c->resp != NULL) {
        ssize_t n = write(c->fd, c->resp + c->resp_sent, c->resp_len - c->resp_sent);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        if (n <= 0) {
            mclient_free(c);
            return;
        }
        c->resp_sent += (size_t)n;
        if (c->resp_sent == c->resp_len)
            mclient_free(c);
        return;
    }
    ssize_t n = read(c->fd, c->req + c->req_len, sizeof(c->req) - c->req_len);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        mclient_free(c);
        return;
    }
    c->req_len += (size_t)n;
    struct http1_header hdrs[64];
    struct http1_msg m = {.headers = hdrs, .cap_headers = 64};
    struct http1_parser p;
    http1_parser_init(&p);
    struct http1_limits lim = {
        .max_request_line = 4096, .max_header_bytes = REQ_MAX - 1, .max_headers = 64};
    int rc = http1_parse_request(&p, c->req, c->req_len, &lim, &m);
    if (rc == HTTP1_INCOMPLETE && c->req_len < sizeof(c->req))
        return;
    if (rc < 0) {
        const char *b = "bad request\n";
        mclient_respond(c, rc == HTTP1_INVALID && m.error ? m.error : 431, "text/plain", b,
                        strlen(b));
        return;
    }
    mclient_handle(c, &m);
}

static void mclient_on_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    mclient_free(t->data);
}

static void server_on_resume(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct metrics_server *s = t->data;
    ev_io_start(loop, &s->io);
}

static void server_on_accept(struct ev_loop *loop, ev_io *io, int revents)
{
    struct metrics_server *s = io->data;
    for (int i = 0; i < 16; i++) {
        int fd = accept4(s->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd == -1 && errno == EINTR)
            continue;
        if (fd == -1) {
            /* out of descriptors or memory: the socket stays readable, so
             * pause instead of spinning */
            if (lb_errno_shortage(errno)) {
                ev_io_stop(loop, &s->io);
                ev_timer_set(&s->pause, 0.5, 0.);
                ev_timer_start(loop, &s->pause);
            }
            return;
        }
        struct mclient *c = s->n_clients < MAX_CLIENTS ? calloc(1, sizeof(*c)) : NULL;
        if (c == NULL) {
            close(fd);
            continue;
        }
        c->srv = s;
        c->fd = fd;
        ev_io_init(&c->io, mclient_on_io, fd, EV_READ);
        c->io.data = c;
        ev_timer_init(&c->timer, mclient_on_timeout, REQ_TIMEOUT, 0);
        c->timer.data = c;
        ev_io_start(loop, &c->io);
        ev_timer_start(loop, &c->timer);
        c->slot = s->n_clients++;
        s->clients[c->slot] = c;
    }
}

struct metrics_server *metrics_server_new(struct ev_loop *loop, struct dp *dp,
                                          const struct sockaddr_storage *addr, socklen_t len,
                                          int fd, struct lb_err *err)
{
    if (fd >= 0) {
        /* a hand-over's socket serves only if it is where we listen now */
        struct sockaddr_storage cur;
        socklen_t cur_len = sizeof(cur);
        if (getsockname(fd, (struct sockaddr *)&cur, &cur_len) != 0 || cur_len != len ||
            memcmp(&cur, addr, len) != 0) {
            close(fd);
            fd = -1;
        } else {
            fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        }
    }
    bool bound = fd >= 0;
    if (fd < 0)
        fd = socket(addr->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd == -1) {
        lb_err_set(err, LB_ESYS, errno, "metrics socket");
        return NULL;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if ((!bound && bind(fd, (const struct sockaddr *)addr, len) == -1) || listen(fd, 64) == -1) {
        lb_err_set(err, LB_ESYS, errno, "cannot listen on the metrics address");
        close(fd);
        return NULL;
    }
    struct metrics_server *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        close(fd);
        lb_err_set(err, LB_ENOMEM, 0, "out of memory");
        return NULL;
    }
    s->loop = loop;
    s->dp = dp;
    s->fd = fd;
    ev_io_init(&s->io, server_on_accept, fd, EV_READ);
    s->io.data = s;
    ev_timer_init(&s->pause, server_on_resume, 0., 0.);
    s->pause.data = s;
    ev_io_start(loop, &s->io);
    return s;
}

int metrics_server_fd(const struct metrics_server *s)
{
    return s->fd;
}

void metrics_server_stop_accepting(struct metrics_server *s)
{
    if (s == NULL)
        return;
    ev_io_stop(s->loop, &s->io);
    ev_timer_stop(s->loop, &s->pause);
}

void metrics_server_free(struct metrics_server *s)
{
    if (s == NULL)
        return;
    while (s->n_clients > 0)
        mclient_free(s->clients[0]);
    ev_io_stop(s->loop, &s->io);
    ev_timer_stop(s->loop, &s->pause);
    close(s->fd);
    free(s);
}
