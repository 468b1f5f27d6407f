/* dataplane/main.c: lb-dataplane — flags, signals, workers, metrics, feed. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <ev.h>

#include "bshared.h"
#include "dp.h"
#include "fshared.h"
#include "handover.h"
#include "lb.pb-c.h"
#include "lb_cred.h"
#include "lb_err.h"
#include "lb_log.h"
#include "metrics_server.h"
#include "seal.h"
#include "snapshot.h"
#include "sync.h"
#include "tls_tickets.h"
#include "worker.h"

#define MAX_WORKERS 256
/* a successor that took the sockets has this long to say it is ready */
#define HANDOVER_READY_S 30.0
/* each message of the hand-over, both ways */
#define HANDOVER_IO_MS 10000

struct main_ctx {
    struct ev_loop *loop;
    struct dp dp;
    const char *snapshot_path;      /* --snapshot */
    const char *control;            /* --control */
    const char *state_dir;          /* --state-dir */
    const char *feed_key_path;      /* --feed-key; NULL: the feed is not sealed */
    char feed_key_cred[512];        /* or the systemd credential feed.key (lb_cred.h) */
    bool feed_insecure;             /* --feed-insecure */
    struct seal_keyring *feed_keys; /* read from <feed_key_path> at start and on SIGHUP */
    bool metrics_forced;            /* --metrics-listen given */
    bool metrics_off;               /* --metrics-listen off */
    struct sockaddr_storage metrics_listen;
    socklen_t metrics_listen_len;
    char node_id[256];
    unsigned n_workers;
    bool serving; /* workers run */
    bool log_level_forced;
    struct sync *sync;
    struct metrics_server *metrics;
    struct sockaddr_storage metrics_addr; /* where <metrics> listens */
    ev_signal sigterm;
    ev_signal sigint;
    ev_signal sighup;
    ev_timer drain_timer;
    ev_timer poll_timer;
    ev_timer watchdog;
    /* hand-over, the old side: */
    const char *handover_path; /* --handover-socket, or <state-dir>/handover.sock; NULL */
    char handover_default[PATH_MAX];
    bool handover_off; /* --handover-socket off */
    int ho_listen_fd;  /* listening on <handover_path>, or -1 */
    ino_t ho_ino;      /* its file, to unlink only our own at exit */
    ev_io ho_listen_io;
    int ho_conn_fd;     /* the successor being handed the sockets, or -1 */
    ev_io ho_conn_io;   /* ... its answer */
    ev_timer ho_timer;  /* ... its time to answer */
    pid_t ho_peer_pid;  /* ... its pid (SO_PEERCRED), the unit's next main pid */
    bool stop_seen;     /* a stop signal came while draining after a hand-over */
    bool reloading;     /* RELOADING=1 told to systemd; READY=1 ends it */
    ev_signal sigusr2;  /* starts a successor: our binary, --takeover */
    pid_t succ_pid;     /* the successor SIGUSR2 started, until it took over or died */
    int succ_pidfd;     /* ... its pidfd, or -1 */
    ev_io succ_io;      /* ... readable once it exited */
    char exe[PATH_MAX]; /* this binary's path at start (/proc/self/exe) */
    char **argv;        /* our arguments, for the successor */
    /* hand-over, the new side: */
    const char *takeover_path; /* --takeover */
    struct handover_state inherit;
    Lb__V1__HandoverRuntime *carry; /* its runtime state, until the workers run */
    void **carry_refs;              /* ... the breakers it set, held until then */
    size_t carry_limits;            /* ... the rate limits it set */
};

static void usage(FILE *out)
{
    fprintf(out,
            "usage: lb-dataplane (--control BASE | --snapshot FILE) [options]\n"
            "\n"
            "Serves HTTP traffic as the newest lb.v1.Snapshot describes it.\n"
            "\n"
            "  --control BASE      follow the control plane: ipc:///run/lb or tcp://HOST:PORT\n"
            "  --snapshot FILE     serve this binary lb.v1.Snapshot (SIGHUP reloads it)\n"
            "  --state-dir DIR     keep the last good snapshot here; serve it at start\n"
            "  --feed-key FILE     the feed is sealed with these keys (\"ID HEX64\" lines,\n"
            "                      mode 0600); SIGHUP re-reads it. Under systemd the\n"
            "                      credential feed.key (LoadCredential=) stands for it;\n"
            "                      a blank one is none\n"
            "  --feed-insecure     allow an unsealed tcp:// feed (snapshots in clear)\n"
            "  --bind-address IP   frontends the config binds to 0.0.0.0 (or ::, for an\n"
            "                      IPv6 IP) listen on IP on this host instead\n"
            "  --node-id ID        this data plane's name in reports (default: host name)\n"
            "  --workers N         worker threads (default: one per CPU)\n"
            "  --metrics-listen A  serve /metrics on ADDR:PORT, not the snapshot's address\n"
            "                      (\"off\": none); one per data plane on a host\n"
            "  --log-level LEVEL   debug, info, warn or error (default: the snapshot's)\n"
            "  --handover-socket P hand the listening sockets to a successor that connects\n"
            "                      here (default: STATE-DIR/handover.sock; \"off\": none);\n"
            "                      SIGUSR2 starts this binary again with --takeover P\n"
            "  --takeover P        start by taking the sockets, ticket keys and snapshot of\n"
            "                      the data plane listening on hand-over socket P\n"
            "  --help              this text\n"
            "  --version           the version\n");
}

/* ---- shutdown ---------------------------------------------------------------- */

/* Every worker looks at the process context again: a new snapshot, a drain
 * or a stop. */
static void workers_notify(struct main_ctx *m)
{
    for (unsigned i = 0; i < m->dp.n_workers; i++)
        worker_notify(&m->dp.workers[i]);
}

static void on_poll(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct main_ctx *m = t->data;
    for (unsigned i = 0; i < m->dp.n_workers; i++) {
        if (!atomic_load(&m->dp.workers[i].stopped))
            return;
    }
    ev_break(loop, EVBREAK_ALL);
}

static void on_drain_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct main_ctx *m = t->data;
    lb_log(LB_LOG_WARN, "drain_timeout", "drain time is up; closing the remaining connections");
    atomic_store(&m->dp.stopping, true);
    workers_notify(m);
}

static void handover_close(struct main_ctx *m);

/* Stops accepting, finishes what is in flight, then exits (within the
 * snapshot's drain time). */
static void begin_drain(struct main_ctx *m, const char *why)
{
    struct ev_loop *loop = m->loop;
    /* after a hand-over the successor is the unit's main process: its
     * manager must not see this one stopping */
    if (!atomic_load(&m->dp.handed_over))
        sd_notify(0, "STOPPING=1");
    struct snap *snap = dp_snapshot(&m->dp);
    double drain = snap ? snap->timeouts.drain / 1000.0 : 30.0;
    snap_unref(snap);
    lb_log(LB_LOG_INFO, "shutdown", "%s: draining for up to %.1f s", why, drain);
    handover_close(m);
    atomic_store(&m->dp.draining, true);
    workers_notify(m);
    if (atomic_load(&m->dp.handed_over)) {
        /* the successor accepts on this socket: closing our descriptor would
         * leave its epoll registration behind (epoll forgets a socket only
         * when its last descriptor anywhere closes) under a number another
         * thread may reuse; it closes at exit, after the workers */
        metrics_server_stop_accepting(m->metrics);
    } else {
        metrics_server_free(m->metrics);
        m->metrics = NULL;
    }
    sync_free(m->sync);
    m->sync = NULL;
    m->dp.sync = NULL;
    ev_timer_set(&m->drain_timer, drain, 0);
    ev_timer_start(loop, &m->drain_timer);
    ev_timer_start(loop, &m->poll_timer);
}

static void on_stop_signal(struct ev_loop *loop, ev_signal *s, int revents)
{
    struct main_ctx *m = s->data;
    if (atomic_load(&m->dp.draining) && atomic_load(&m->dp.handed_over) && !m->stop_seen) {
        /* systemctl stop or restart signals every process of the unit: the
         * one draining after a hand-over goes on draining (within the drain
         * time, which the unit's TimeoutStopSec= covers) */
        m->stop_seen = true;
        lb_log(LB_LOG_INFO, "shutdown", "signal %d: draining already, after the hand-over",
               s->signum);
        return;
    }
    if (atomic_load(&m->dp.draining)) {
        lb_log(LB_LOG_WARN, "shutdown_forced", "second signal: exiting at once");
        _exit(1);
    }
    char why[32];
    snprintf(why, sizeof(why), "signal %d", s->signum);
    begin_drain(m, why);
}

/* ---- applying snapshots ---------------------------------------------------------- */

/* Opens, moves or closes the metrics listener as <snap> says. */
static int metrics_follow(struct main_ctx *m, const struct snap *snap, struct lb_err *err)
{
    bool enabled = m->metrics_forced ? !m->metrics_off : snap->metrics_enabled;
    const struct sockaddr_storage *addr =
        m->metrics_forced ? &m->metrics_listen : &snap->metrics_addr;
    socklen_t len = m->metrics_forced ? m->metrics_listen_len : snap->metrics_addrlen;
    if (m->metrics != NULL && enabled && memcmp(&m->metrics_addr, addr, len) == 0)
        return LB_OK;
    metrics_server_free(m->metrics);
    m->metrics = NULL;
    memset(&m->metrics_addr, 0, sizeof(m->metrics_addr));
    if (!enabled)
        return LB_OK;
    int fd = -1; /* a takeover's metrics socket, used once */
    for (size_t i = 0; i < m->inherit.n_fds && fd < 0; i++) {
        if (m->inherit.fds[i].fd >= 0 && strcmp(m->inherit.fds[i].key, HANDOVER_METRICS_KEY) == 0) {
            fd = m->inherit.fds[i].fd;
            m->inherit.fds[i].fd = -1;
        }
    }
    m->metrics = metrics_server_new(m->loop, &m->dp, addr, len, fd, err);
    if (m->metrics == NULL)
        return err->code;
    memcpy(&m->metrics_addr, addr, len);
    return LB_OK;
}

/* A frontend that the new snapshot adds must be bindable, or the snapshot is
 * refused as a whole (the workers would otherwise disagree). */
static int check_new_frontends(const struct snap *cur, const struct snap *next, struct lb_err *err)
{
    for (uint32_t i = 0; i < next->n_frontends; i++) {
        const struct snap_frontend *f = &next->frontends[i];
        bool known = false;
        for (uint32_t j = 0; cur != NULL && j < cur->n_frontends && !known; j++)
            known = strcmp(cur->frontends[j].key, f->key) == 0;
        if (known)
            continue;
        int fd = socket(f->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int one = 1;
        if (fd >= 0) {
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
            setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
            if (f->addr.ss_family == AF_INET6)
                setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
        }
        if (fd < 0 || bind(fd, (const struct sockaddr *)&f->addr, f->addrlen) == -1) {
            int e = errno;
            if (fd >= 0)
                close(fd);
            return lb_err_set(err, LB_ESYS, e, "frontends[%u]: cannot bind %s (frontend %s)", i,
                              f->key, f->name);
        }
        close(fd);
    }
    return LB_OK;
}

static void stop_workers(struct main_ctx *m)
{
    atomic_store(&m->dp.stopping, true);
    workers_notify(m);
    for (unsigned i = 0; i < m->dp.n_workers; i++)
        worker_join(&m->dp.workers[i]);
    m->dp.n_workers = 0;
    atomic_store(&m->dp.stopping, false);
}

/* First snapshot: start the workers on it. */
static int start_serving(struct main_ctx *m, struct snap *snap, struct lb_err *err)
{
    int rc = metrics_follow(m, snap, err);
    m->dp.snap = snap;
    /* workers never take signals: the main loop does */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    for (unsigned i = 0; i < m->n_workers && rc == LB_OK; i++) {
        rc = worker_start(&m->dp.workers[i], &m->dp, i, snap, err);
        if (rc == LB_OK)
            m->dp.n_workers++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != LB_OK) {
        stop_workers(m);
        metrics_server_free(m->metrics);
        m->metrics = NULL;
        m->dp.snap = NULL;
        snap_unref(snap);
        return rc;
    }
    if (!m->log_level_forced)
        lb_log_set_level((enum lb_log_level)snap->log_level);
    for (uint32_t i = 0; i < snap->n_frontends; i++)
        lb_log(LB_LOG_INFO, "listening", "frontend %s on %s", snap->frontends[i].name,
               snap->frontends[i].key);
    m->serving = true;
    /* a successor is not the unit's main process yet: the old one says
     * MAINPID= and READY=1 for it once it answered ready */
    if (m->takeover_path == NULL)
        sd_notify(0, "READY=1\nSTATUS=serving");
    return LB_OK;
}

/* Makes <snap> (reference taken over) the one that serves. */
static int apply_snapshot(void *ctx, struct snap *snap, struct lb_err *err)
{
    struct main_ctx *m = ctx;
    if (atomic_load(&m->dp.draining)) {
        snap_unref(snap);
        return lb_err_set(err, LB_EINVAL, 0, "the data plane is shutting down");
    }
    if (!m->serving) {
        int rc = snapshot_bind_tls(snap, NULL, m->dp.tickets, err);
        if (rc == LB_OK)
            rc = fshared_registry_bind(m->dp.frontends, snap, err);
        if (rc != LB_OK) {
            snap_unref(snap);
            return rc;
        }
        if (m->carry != NULL) /* a takeover: the limiters exist, no worker serves yet */
            m->carry_limits =
                handover_runtime_limits(snap, m->carry, (uint64_t)(ev_time() * 1000.0));
        rc = start_serving(m, snap, err);
        if (rc != LB_OK)
            return rc;
    } else {
        struct snap *cur = dp_snapshot(&m->dp);
        int rc = check_new_frontends(cur, snap, err);
        if (rc == LB_OK)
            rc = snapshot_bind_tls(snap, cur, m->dp.tickets, err);
        snap_unref(cur);
        if (rc == LB_OK)
            rc = metrics_follow(m, snap, err);
        if (rc == LB_OK) /* last: what it binds is what the next snapshot meets */
            rc = fshared_registry_bind(m->dp.frontends, snap, err);
        if (rc != LB_OK) {
            snap_unref(snap);
            return rc;
        }
        if (!m->log_level_forced)
            lb_log_set_level((enum lb_log_level)snap->log_level);
        dp_swap(&m->dp, snap);
        workers_notify(m);
    }
    lb_log(LB_LOG_INFO, "snapshot_applied",
           "version %llu generation %llu: %u frontends, %u backends, %u workers",
           (unsigned long long)snap->version, (unsigned long long)snap->generation,
           snap->n_frontends, snap->n_backends, m->dp.n_workers);
    if (m->sync != NULL)
        sync_set_applied(m->sync, snap->version, snap->generation);
    return LB_OK;
}

/* Re-reads the feed key file; on any error the keys in use stay. */
static void reload_feed_keys(struct main_ctx *m)
{
    struct seal_keyring *kr = NULL;
    struct lb_err err = {0};
    if (seal_keyring_load(m->feed_key_path, &kr, &err) != LB_OK) {
        lb_log(LB_LOG_ERROR, "feed_key_reload_failed", "%s; the keys in use stay", err.msg);
        return;
    }
    sync_set_keys(m->sync, kr);
    seal_keyring_free(m->feed_keys);
    m->feed_keys = kr;
    lb_log(LB_LOG_INFO, "feed_key_reloaded", "%s: %zu keys, sealing with key id %u",
           m->feed_key_path, seal_keyring_count(kr), (unsigned)seal_keyring_seal_id(kr));
}

static void on_reload(struct ev_loop *loop, ev_signal *s, int revents)
{
    struct main_ctx *m = s->data;
    sd_notify(0, "RELOADING=1");
    if (m->sync != NULL && m->feed_key_path != NULL)
        reload_feed_keys(m);
    if (m->sync != NULL) {
        lb_log(LB_LOG_INFO, "reload", "asking the control plane for its current snapshot");
        sync_request(m->sync);
    }
    if (m->snapshot_path != NULL) {
        struct lb_err err = {0};
        struct snap *snap = NULL;
        if (snapshot_load_file(m->snapshot_path, &snap, &err) != LB_OK ||
            apply_snapshot(m, snap, &err) != LB_OK)
            lb_log(LB_LOG_ERROR, "snapshot_rejected", "%s: %s; the current snapshot keeps serving",
                   m->snapshot_path, err.msg);
    }
    sd_notify(0, "READY=1");
}

static void on_watchdog(struct ev_loop *loop, ev_timer *t, int revents)
{
    sd_notify(0, "WATCHDOG=1");
}

/* ---- hand-over: the old side ------------------------------------------------------ */

/* Forgets the successor SIGUSR2 started: it took over or it is gone. */
static void successor_unwatch(struct main_ctx *m)
{
    if (m->succ_pidfd >= 0) {
        ev_io_stop(m->loop, &m->succ_io);
        close(m->succ_pidfd);
    }
    m->succ_pidfd = -1;
    m->succ_pid = 0;
}

/* An upgrade that SIGUSR2 started did not happen: the unit, "reloading"
 * since, is running again with this process as its main one. */
static void upgrade_notify_failed(struct main_ctx *m, const char *why)
{
    if (!m->reloading)
        return;
    m->reloading = false;
    sd_notifyf(0, "READY=1\nSTATUS=serving; the last upgrade failed: %s", why);
}

/* Forgets the successor in progress (if any) and listens for the next. */
static void handover_conn_end(struct main_ctx *m)
{
    if (m->ho_conn_fd < 0)
        return;
    ev_io_stop(m->loop, &m->ho_conn_io);
    ev_timer_stop(m->loop, &m->ho_timer);
    close(m->ho_conn_fd);
    m->ho_conn_fd = -1;
    if (m->ho_listen_fd >= 0)
        ev_io_start(m->loop, &m->ho_listen_io);
}

/* Stops listening for successors. The file goes too, unless it is a
 * successor's by now. */
static void handover_close(struct main_ctx *m)
{
    handover_conn_end(m);
    if (m->ho_listen_fd < 0)
        return;
    ev_io_stop(m->loop, &m->ho_listen_io);
    close(m->ho_listen_fd);
    m->ho_listen_fd = -1;
    struct stat st;
    if (!atomic_load(&m->dp.handed_over) && stat(m->handover_path, &st) == 0 &&
        st.st_ino == m->ho_ino)
        unlink(m->handover_path);
}

/* What a successor gets: every listening socket, the ticket keys, the
 * snapshot serving now. */
static int handover_export(struct main_ctx *m, struct handover_state *st, uint64_t *version,
                           size_t carried[2], struct lb_err *err)
{
    memset(st, 0, sizeof(*st));
    int rc = dp_listeners_export(&m->dp, st, err);
    if (rc == LB_OK && m->metrics != NULL)
        rc = handover_state_add_fd(st, metrics_server_fd(m->metrics), HANDOVER_METRICS_KEY, err);
    if (rc == LB_OK) {
        st->tickets = malloc(TLS_TICKETS_EXPORT_LEN);
        if (st->tickets == NULL)
            return lb_err_set(err, LB_ENOMEM, 0, "out of memory for the hand-over");
        tls_tickets_export(m->dp.tickets, st->tickets);
        st->tickets_len = TLS_TICKETS_EXPORT_LEN;
    }
    struct snap *snap = dp_snapshot(&m->dp);
    if (rc == LB_OK && snap != NULL) {
        size_t len = lb__v1__snapshot__get_packed_size(snap->pb);
        st->snapshot = malloc(len ? len : 1);
        if (st->snapshot == NULL)
            rc = lb_err_set(err, LB_ENOMEM, 0, "out of memory for the hand-over");
        else
            st->snapshot_len = lb__v1__snapshot__pack(snap->pb, st->snapshot);
        *version = snap->version;
    }
    if (rc == LB_OK)
        rc = handover_runtime_export(m->dp.backends, snap, (uint64_t)(ev_time() * 1000.0),
                                     &st->runtime, &st->runtime_len, &carried[0], &carried[1], err);
    snap_unref(snap);
    return rc;
}

static void on_handover_accept(struct ev_loop *loop, ev_io *io, int revents)
{
    struct main_ctx *m = io->data;
    int c = accept4(m->ho_listen_fd, NULL, NULL, SOCK_CLOEXEC);
    if (c == -1)
        return;
    struct ucred cred;
    socklen_t cl = sizeof(cred);
    const char *refuse = NULL;
    if (getsockopt(c, SOL_SOCKET, SO_PEERCRED, &cred, &cl) != 0 ||
        (cred.uid != geteuid() && cred.uid != 0))
        refuse = "it runs as another user";
    else if (!m->serving)
        refuse = "this data plane has no snapshot yet";
    else if (atomic_load(&m->dp.draining))
        refuse = "this data plane is shutting down";
    else
        m->ho_peer_pid = cred.pid;
    if (refuse != NULL) {
        lb_log(LB_LOG_WARN, "handover_refused", "a successor connected; refused: %s", refuse);
        close(c);
        return;
    }
    struct lb_err err = {0};
    struct handover_state st;
    uint64_t version = 0;
    size_t carried[2] = {0, 0};
    int rc = handover_export(m, &st, &version, carried, &err);
    if (rc == LB_OK)
        rc = handover_send(c, &st, HANDOVER_IO_MS, &err);
    size_t n = st.n_fds;
    handover_state_deinit(&st);
    if (rc != LB_OK) {
        lb_log(LB_LOG_ERROR, "handover_failed", "%s; this data plane keeps serving", err.msg);
        upgrade_notify_failed(m, err.msg);
        close(c);
        return;
    }
    lb_log(LB_LOG_INFO, "handover_sent",
           "%zu listening sockets, the ticket keys, snapshot version %llu and the state of %zu "
           "circuit breakers and %zu global rate limits handed to a successor; waiting up to "
           "%.0f s for it to accept",
           n, (unsigned long long)version, carried[0], carried[1], HANDOVER_READY_S);
    m->ho_conn_fd = c;
    ev_io_stop(loop, &m->ho_listen_io); /* one successor at a time */
    ev_io_set(&m->ho_conn_io, c, EV_READ);
    ev_io_start(loop, &m->ho_conn_io);
    ev_timer_set(&m->ho_timer, HANDOVER_READY_S, 0);
    ev_timer_start(loop, &m->ho_timer);
}

static void on_handover_answer(struct ev_loop *loop, ev_io *io, int revents)
{
    struct main_ctx *m = io->data;
    struct lb_err err = {0};
    int rc = handover_read_answer(m->ho_conn_fd, &err);
    if (rc == LB_ENOTFOUND)
        return;
    if (rc != LB_OK) {
        lb_log(LB_LOG_ERROR, "handover_refused", "the successor %s; this data plane keeps serving",
               err.msg);
        upgrade_notify_failed(m, err.msg);
        handover_conn_end(m);
        return;
    }
    lb_log(LB_LOG_INFO, "handover_done",
           "the successor (pid %d) accepts on every socket; this data plane stops accepting",
           (int)m->ho_peer_pid);
    /* Under systemd (NotifyAccess=main) only the main process may speak for
     * the unit, so this one names its successor the main process, ends the
     * reload and pings the watchdog on its behalf in one message: the
     * successor's own pings count from here on, and systemd, which sees the
     * successor in the unit's cgroup, tracks it from now. */
    m->reloading = false;
    sd_notifyf(0, "MAINPID=%d\nREADY=1\nWATCHDOG=1\nSTATUS=serving (pid %d took over from pid %d)",
               (int)m->ho_peer_pid, (int)m->ho_peer_pid, (int)getpid());
    if (ev_is_active(&m->watchdog))
        ev_timer_stop(loop, &m->watchdog); /* not ours to ping any more */
    atomic_store(&m->dp.handed_over, true);
    successor_unwatch(m);
    begin_drain(m, "handed over");
}

static void on_handover_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct main_ctx *m = t->data;
    lb_log(LB_LOG_ERROR, "handover_refused",
           "the successor did not say it was ready within %.0f s; this data plane keeps serving",
           HANDOVER_READY_S);
    upgrade_notify_failed(m, "the successor did not say it was ready in time");
    handover_conn_end(m);
}

/* Listens on <m->handover_path>, replacing whatever file is there. */
static void handover_start(struct main_ctx *m)
{
    if (m->handover_path == NULL)
        return;
    struct lb_err err = {0};
    struct stat st;
    if (handover_listen(m->handover_path, &m->ho_listen_fd, &err) != LB_OK ||
        stat(m->handover_path, &st) != 0) {
        lb_log(LB_LOG_WARN, "handover_unavailable", "%s; no successor can take over", err.msg);
        if (m->ho_listen_fd >= 0)
            close(m->ho_listen_fd);
        m->ho_listen_fd = -1;
        return;
    }
    m->ho_ino = st.st_ino;
    ev_io_init(&m->ho_listen_io, on_handover_accept, m->ho_listen_fd, EV_READ);
    m->ho_listen_io.data = m;
    ev_io_start(m->loop, &m->ho_listen_io);
    lb_log(LB_LOG_INFO, "handover_listening", "a successor may take over through %s",
           m->handover_path);
}

/* The successor's pidfd is readable: it exited. Before it answered ready
 * that is a failed upgrade; its exit status is its parent's (systemd's) to
 * see, its reason in its own log. */
static void on_successor_exit(struct ev_loop *loop, ev_io *io, int revents)
{
    struct main_ctx *m = io->data;
    successor_unwatch(m);
    if (atomic_load(&m->dp.handed_over))
        return;
    upgrade_notify_failed(m, "the successor exited before it was ready (see its log)");
    lb_log(LB_LOG_ERROR, "successor_exited",
           "successor pid %d exited before it was ready (see its log); this data plane keeps "
           "serving",
           (int)m->succ_pid);
}

/* Our arguments for the successor: --takeover <handover_path> replaces any
 * --takeover. Returns a calloc'ed array (strings borrowed), or NULL. */
static char **successor_argv(const struct main_ctx *m)
{
    size_t n = 0;
    while (m->argv[n] != NULL)
        n++;
    char **argv = calloc(n + 3, sizeof(*argv));
    if (argv == NULL)
        return NULL;
    size_t k = 0;
    argv[k++] = (char *)m->exe;
    for (size_t i = 1; i < n; i++) {
        if (strcmp(m->argv[i], "--takeover") == 0) {
            i++; /* and its value */
            continue;
        }
        if (strncmp(m->argv[i], "--takeover=", 11) == 0)
            continue;
        argv[k++] = m->argv[i];
    }
    argv[k++] = "--takeover";
    argv[k++] = (char *)m->handover_path;
    argv[k] = NULL;
    return argv;
}

/* Our environment for the successor. systemd's WATCHDOG_PID names the
 * process it expects pings from: this one; the successor, which connects to
 * this process, keeps the watchdog when it names its peer (takeover_receive).
 * Without a watchdog of ours, WATCHDOG_* are left out. Returns a calloc'ed
 * array; <own> (caller's, freed after the fork) holds our entry. */
static char **successor_envp(const struct main_ctx *m, char own[32])
{
    size_t n = 0;
    while (environ[n] != NULL)
        n++;
    char **envp = calloc(n + 2, sizeof(*envp));
    if (envp == NULL)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        bool wd_pid = strncmp(environ[i], "WATCHDOG_PID=", 13) == 0;
        bool wd_usec = strncmp(environ[i], "WATCHDOG_USEC=", 14) == 0;
        if (!wd_pid && (!wd_usec || ev_is_active(&m->watchdog)))
            envp[k++] = environ[i];
    }
    if (ev_is_active(&m->watchdog)) {
        snprintf(own, 32, "WATCHDOG_PID=%ld", (long)getpid());
        envp[k++] = own;
    }
    envp[k] = NULL;
    return envp;
}

/* Starts <argv> with <envp> as a grandchild: the middle process exits at
 * once, so the successor is adopted by the init process or the nearest
 * subreaper — under systemd, the service manager itself, which then tracks
 * it as a main process of its own (with the exit status, and a stop that
 * waits for it) rather than as an alien one. Returns its pid, or -1 (errno
 * set). */
static pid_t successor_spawn(const char *exe, char **argv, char **envp)
{
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) == -1)
        return -1;
    pid_t mid = fork();
    if (mid == 0) {
        /* only async-signal-safe calls from here: the parent has threads */
        pid_t pid = fork();
        if (pid == 0) {
            sigset_t none;
            sigemptyset(&none);
            sigprocmask(SIG_SETMASK, &none, NULL);
            execve(exe, argv, envp);
            _exit(127);
        }
        ssize_t w = write(pfd[1], &pid, sizeof(pid));
        _exit(w == (ssize_t)sizeof(pid) ? 0 : 1);
    }
    int e = errno;
    close(pfd[1]);
    pid_t pid = -1;
    if (mid > 0) {
        while (waitpid(mid, NULL, 0) == -1 && errno == EINTR)
            ;
        ssize_t r;
        do
            r = read(pfd[0], &pid, sizeof(pid));
        while (r == -1 && errno == EINTR);
        e = r == (ssize_t)sizeof(pid) && pid > 0 ? 0 : EAGAIN;
        if (e != 0)
            pid = -1;
    }
    close(pfd[0]);
    errno = e;
    return pid;
}

/* SIGUSR2: starts the binary installed at our path (a new version, after
 * an upgrade) with our arguments and --takeover; it takes over, or fails
 * and this process goes on serving. */
static void on_upgrade_signal(struct ev_loop *loop, ev_signal *sig, int revents)
{
    struct main_ctx *m = sig->data;
    if (m->ho_listen_fd < 0 || atomic_load(&m->dp.draining)) {
        lb_log(LB_LOG_WARN, "upgrade_refused", "SIGUSR2: %s",
               atomic_load(&m->dp.draining)
                   ? "this data plane is shutting down"
                   : "no hand-over socket (--handover-socket or --state-dir)");
        return;
    }
    if (m->ho_conn_fd >= 0 || m->succ_pid > 0) {
        lb_log(LB_LOG_WARN, "upgrade_refused", "SIGUSR2: a successor is starting already");
        return;
    }
    char own[32];
    char **argv = successor_argv(m);
    char **envp = successor_envp(m, own);
    pid_t pid = argv && envp ? successor_spawn(m->exe, argv, envp) : -1;
    int e = argv && envp ? errno : ENOMEM;
    free(argv);
    free(envp);
    if (pid == -1) {
        lb_log(LB_LOG_ERROR, "upgrade_failed", "SIGUSR2: cannot start %s: %s", m->exe, strerror(e));
        return;
    }
    m->succ_pid = pid;
    m->succ_pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (m->succ_pidfd >= 0) { /* else: the hand-over socket and its timeout tell */
        ev_io_init(&m->succ_io, on_successor_exit, m->succ_pidfd, EV_READ);
        m->succ_io.data = m;
        ev_io_start(loop, &m->succ_io);
    }
    /* systemd shows the unit "reloading" until the successor is the main
     * process (MAINPID=, READY=1) or this one is again (READY=1) */
    m->reloading = true;
    sd_notifyf(0, "RELOADING=1\nSTATUS=upgrading: pid %d is taking over", (int)pid);
    lb_log(LB_LOG_INFO, "upgrade_started", "SIGUSR2: started %s (pid %d) to take over", m->exe,
           (int)pid);
}

/* ---- hand-over: the new side -------------------------------------------------------- */

/* systemd pings: once this process is the unit's main one, the watchdog is
 * ours to keep. The predecessor set WATCHDOG_PID to its own pid (see
 * successor_envp()), which sd_watchdog_enabled() refuses as not ours: when
 * it names the peer of <conn>, the watchdog is the one systemd set for it. */
static void takeover_watchdog(struct main_ctx *m, int conn)
{
    const char *wpid = getenv("WATCHDOG_PID");
    const char *wusec = getenv("WATCHDOG_USEC");
    struct ucred cred;
    socklen_t cl = sizeof(cred);
    if (ev_is_active(&m->watchdog) || wpid == NULL || wusec == NULL ||
        getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &cred, &cl) != 0)
        return;
    char *pend, *uend;
    long pid = strtol(wpid, &pend, 10);
    unsigned long long usec = strtoull(wusec, &uend, 10);
    if (pid != (long)cred.pid || *pend != '\0' || *uend != '\0' || usec == 0)
        return;
    ev_timer_init(&m->watchdog, on_watchdog, 0, (double)usec / 2e6);
    m->watchdog.data = m;
    ev_timer_again(m->loop, &m->watchdog);
}

/* Connects to the running data plane and receives its sockets (into
 * m->inherit, each given to a worker), ticket keys and snapshot. *conn
 * stays open for the answer. */
static int takeover_receive(struct main_ctx *m, int *conn, struct snap **snap, struct lb_err *err)
{
    int rc = handover_connect(m->takeover_path, HANDOVER_IO_MS, conn, err);
    if (rc == LB_OK)
        takeover_watchdog(m, *conn);
    if (rc == LB_OK)
        rc = handover_recv(*conn, &m->inherit, err);
    if (rc == LB_OK && m->inherit.tickets_len > 0)
        rc = tls_tickets_import(m->dp.tickets, m->inherit.tickets, m->inherit.tickets_len, err);
    if (rc == LB_OK && m->inherit.snapshot_len == 0)
        rc = lb_err_set(err, LB_EPROTO, 0, "the running data plane sent no snapshot");
    if (rc == LB_OK)
        rc = snapshot_decode(m->inherit.snapshot, m->inherit.snapshot_len, snap, err);
    if (rc == LB_OK && m->inherit.runtime_len > 0)
        rc = handover_runtime_decode(m->inherit.runtime, m->inherit.runtime_len, &m->carry, err);
    if (rc == LB_OK && m->carry != NULL) /* before any worker's view takes the backends */
        rc = handover_runtime_breakers(m->dp.backends, m->carry, (uint64_t)(ev_time() * 1000.0),
                                       &m->carry_refs, err);
    if (rc != LB_OK)
        return rc;
    /* every socket must be accepted on, or its queue is lost: the k-th of a
     * frontend goes to worker k mod n */
    for (size_t i = 0; i < m->inherit.n_fds; i++) {
        unsigned k = 0;
        for (size_t j = 0; j < i; j++)
            k += strcmp(m->inherit.fds[j].key, m->inherit.fds[i].key) == 0;
        m->inherit.fds[i].owner = (int)(k % m->n_workers);
    }
    return LB_OK;
}

/* ---- start-up ------------------------------------------------------------------ */

static unsigned default_workers(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1;
}

/* "127.0.0.1:9091" or "[::1]:9091" */
static int parse_listen(const char *text, struct sockaddr_storage *ss, socklen_t *len)
{
    char host[64];
    const char *colon = strrchr(text, ':');
    if (colon == NULL || colon == text || (size_t)(colon - text) >= sizeof(host))
        return -1;
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end != '\0' || port < 1 || port > 65535)
        return -1;
    size_t hl = (size_t)(colon - text);
    if (text[0] == '[') {
        if (hl < 3 || text[hl - 1] != ']')
            return -1;
        memcpy(host, text + 1, hl - 2);
        host[hl - 2] = '\0';
    } else {
        memcpy(host, text, hl);
        host[hl] = '\0';
    }
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
        *len = sizeof(*in4);
        return 0;
    }
    if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        *len = sizeof(*in6);
        return 0;
    }
    return -1;
}

/* One option of the command line (<opt> as getopt_long() returned it, its
 * value in optarg). Returns -1 to go on, else the exit status (message
 * printed). */
static int parse_option(struct main_ctx *m, int opt, char **argv, enum lb_log_level *level)
{
    switch (opt) {
    case 's':
        m->snapshot_path = optarg;
        return -1;
    case 'c':
        m->control = optarg;
        return -1;
    case 'd':
        m->state_dir = optarg;
        return -1;
    case 'k':
        m->feed_key_path = optarg;
        return -1;
    case 'i':
        m->feed_insecure = true;
        return -1;
    case 'H':
        m->handover_off = strcmp(optarg, "off") == 0;
        m->handover_path = m->handover_off ? NULL : optarg;
        return -1;
    case 'T':
        m->takeover_path = optarg;
        return -1;
    case 'B': {
        struct lb_err err = {0};
        if (snapshot_bind_address(optarg, &err) != LB_OK) {
            fprintf(stderr, "lb-dataplane: %s\n", err.msg);
            return 2;
        }
        return -1;
    }
    case 'n':
        if (optarg[0] == '\0' || strlen(optarg) >= sizeof(m->node_id)) {
            fprintf(stderr, "lb-dataplane: --node-id: must be 1..255 characters\n");
            return 2;
        }
        snprintf(m->node_id, sizeof(m->node_id), "%s", optarg);
        return -1;
    case 'w': {
        char *end;
        long n = strtol(optarg, &end, 10);
        if (*end != '\0' || n < 1 || n > MAX_WORKERS) {
            fprintf(stderr, "lb-dataplane: --workers: \"%s\" is not a number in 1..%d\n", optarg,
                    MAX_WORKERS);
            return 2;
        }
        m->n_workers = (unsigned)n;
        return -1;
    }
    case 'l':
        if (lb_log_level_parse(optarg, level) != 0) {
            fprintf(stderr, "lb-dataplane: --log-level: \"%s\" is not debug, info, warn or error\n",
                    optarg);
            return 2;
        }
        m->log_level_forced = true;
        return -1;
    case 'm':
        m->metrics_forced = true;
        if (strcmp(optarg, "off") == 0) {
            m->metrics_off = true;
        } else if (parse_listen(optarg, &m->metrics_listen, &m->metrics_listen_len) != 0) {
            fprintf(stderr,
                    "lb-dataplane: --metrics-listen: \"%s\" is not ADDR:PORT, [ADDR6]:PORT "
                    "or off\n",
                    optarg);
            return 2;
        }
        return -1;
    case 'h':
        usage(stdout);
        return 0;
    case 'V':
        printf("lb-dataplane %s\n", LB_VERSION);
        return 0;
    default:
        fprintf(stderr, "lb-dataplane: unknown option or missing value: %s (see --help)\n",
                argv[optind - 1]);
        return 2;
    }
    return -1;
}

/* What the options say together. Returns -1 when they hold, else 2 (message
 * printed). */
static int check_args(struct main_ctx *m, int argc, char **argv)
{
    if (optind < argc) {
        fprintf(stderr, "lb-dataplane: unexpected argument \"%s\"\n", argv[optind]);
        return 2;
    }
    if ((m->snapshot_path == NULL) == (m->control == NULL)) {
        fprintf(stderr, "lb-dataplane: give exactly one of --control BASE and --snapshot FILE "
                        "(see --help)\n");
        return 2;
    }
    if (m->control == NULL && (m->feed_key_path != NULL || m->feed_insecure)) {
        fprintf(stderr, "lb-dataplane: --feed-key and --feed-insecure go with --control\n");
        return 2;
    }
    if (m->control != NULL && m->feed_key_path == NULL && !m->feed_insecure &&
        lb_credential("feed.key", m->feed_key_cred, sizeof(m->feed_key_cred)))
        m->feed_key_path = m->feed_key_cred;
    if (m->handover_path == NULL && !m->handover_off && m->state_dir != NULL) {
        int n = snprintf(m->handover_default, sizeof(m->handover_default), "%s/handover.sock",
                         m->state_dir);
        if (n > 0 && (size_t)n < sizeof(m->handover_default))
            m->handover_path = m->handover_default;
    }
    struct sockaddr_un sun;
    if (m->handover_path != NULL && strlen(m->handover_path) >= sizeof(sun.sun_path)) {
        fprintf(stderr, "lb-dataplane: --handover-socket: \"%s\" is longer than %zu bytes\n",
                m->handover_path, sizeof(sun.sun_path) - 1);
        return 2;
    }
    return -1;
}

static int parse_args(struct main_ctx *m, int argc, char **argv, enum lb_log_level *level)
{
    static const struct option opts[] = {
        {"snapshot", required_argument, NULL, 's'},
        {"control", required_argument, NULL, 'c'},
        {"state-dir", required_argument, NULL, 'd'},
        {"node-id", required_argument, NULL, 'n'},
        {"workers", required_argument, NULL, 'w'},
        {"log-level", required_argument, NULL, 'l'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {"metrics-listen", required_argument, NULL, 'm'},
        {"feed-key", required_argument, NULL, 'k'},
        {"feed-insecure", no_argument, NULL, 'i'},
        {"handover-socket", required_argument, NULL, 'H'},
        {"takeover", required_argument, NULL, 'T'},
        {"bind-address", required_argument, NULL, 'B'},
        {NULL, 0, NULL, 0},
    };
    int opt;
    opterr = 0; /* one line of our own instead of getopt's */
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int rc = parse_option(m, opt, argv, level);
        if (rc >= 0)
            return rc;
    }
    return check_args(m, argc, argv);
}

/* The snapshot to serve before the control plane answers, if any. */
static struct snap *initial_snapshot(struct main_ctx *m, int *fatal)
{
    struct lb_err err = {0};
    struct snap *snap = NULL;
    *fatal = 0;
    if (m->snapshot_path != NULL) {
        if (snapshot_load_file(m->snapshot_path, &snap, &err) != LB_OK) {
            fprintf(stderr, "lb-dataplane: %s\n", err.msg);
            lb_log(LB_LOG_ERROR, "snapshot_rejected", "%s: %s", m->snapshot_path, err.msg);
            *fatal = 1;
        }
        return snap;
    }
    if (m->state_dir == NULL)
        return NULL;
    if (mkdir(m->state_dir, 0750) == -1 && errno != EEXIST)
        lb_log(LB_LOG_WARN, "state_dir_unusable", "cannot create --state-dir %s: %s", m->state_dir,
               strerror(errno));
    int rc = sync_load_cached(m->state_dir, &snap, &err);
    if (rc == LB_OK) {
        lb_log(LB_LOG_INFO, "snapshot_cached",
               "serving version %llu generation %llu from %s until the control plane answers",
               (unsigned long long)snap->version, (unsigned long long)snap->generation,
               m->state_dir);
        return snap;
    }
    if (rc != LB_ENOTFOUND)
        lb_log(LB_LOG_WARN, "snapshot_cache_unusable", "%s", err.msg);
    return NULL;
}

/* The feed's sealing policy and keys (--feed-key, --feed-insecure). Returns
 * 0, or 1 (message printed and logged); <insecure> says whether a tcp://
 * feed runs unsealed on purpose. */
static int main_feed(struct main_ctx *m, bool *insecure)
{
    struct lb_err err = {0};
    if (seal_feed_policy(m->control, m->feed_key_path != NULL, m->feed_insecure, insecure, &err) !=
            LB_OK ||
        (m->feed_key_path != NULL &&
         seal_keyring_load(m->feed_key_path, &m->feed_keys, &err) != LB_OK)) {
        fprintf(stderr, "lb-dataplane: %s\n", err.msg);
        lb_log(LB_LOG_ERROR, "startup_failed", "%s", err.msg);
        return 1;
    }
    if (*insecure)
        lb_log(LB_LOG_WARN, "feed_insecure",
               "--feed-insecure: the feed from %s is NOT sealed; anyone on the path reads every "
               "snapshot (TLS private keys included) and can feed this data plane its own",
               m->control);
    return 0;
}

/* The process context the workers share. Returns 0, or 1 (printed). */
static int main_core(struct main_ctx *m)
{
    pthread_mutex_init(&m->dp.lock, NULL);
    m->dp.workers = calloc(m->n_workers, sizeof(*m->dp.workers));
    if (m->dp.workers == NULL) {
        fprintf(stderr, "lb-dataplane: out of memory\n");
        return 1;
    }
    m->loop = ev_default_loop(EVFLAG_AUTO);
    m->dp.backends = bshared_registry_new(NULL);
    m->dp.frontends = fshared_registry_new(NULL);
    m->dp.controlled = m->control != NULL;
    retry_budget_init(&m->dp.budget, 0, 0, m->n_workers);
    m->dp.tickets = tls_tickets_new(NULL, NULL, NULL);
    if (m->dp.backends == NULL || m->dp.frontends == NULL || m->dp.tickets == NULL) {
        fprintf(stderr, "lb-dataplane: out of memory\n");
        return 1;
    }
    return 0;
}

/* Signals, the hand-over's watchers, the drain and watchdog timers. */
static void main_watchers(struct main_ctx *m, char **argv)
{
    /* signals are watched before anything listens: a SIGTERM that comes
     * right after the first connection must drain, not kill */
    ev_signal_init(&m->sigterm, on_stop_signal, SIGTERM);
    ev_signal_init(&m->sigint, on_stop_signal, SIGINT);
    ev_signal_init(&m->sighup, on_reload, SIGHUP);
    m->sigterm.data = m->sigint.data = m->sighup.data = m;
    ev_signal_start(m->loop, &m->sigterm);
    ev_signal_start(m->loop, &m->sigint);
    ev_signal_start(m->loop, &m->sighup);
    ev_signal_init(&m->sigusr2, on_upgrade_signal, SIGUSR2);
    m->sigusr2.data = m;
    ev_signal_start(m->loop, &m->sigusr2);
    ev_init(&m->ho_conn_io, on_handover_answer);
    m->ho_conn_io.data = m;
    ev_init(&m->ho_timer, on_handover_timeout);
    m->ho_timer.data = m;
    /* the path now, not at SIGUSR2: by then it may name a newer binary,
     * which is the point, while /proc/self/exe would name our own */
    ssize_t exe_len = readlink("/proc/self/exe", m->exe, sizeof(m->exe) - 1);
    if (exe_len > 0)
        m->exe[exe_len] = '\0';
    else
        snprintf(m->exe, sizeof(m->exe), "%s", argv[0]);
    ev_timer_init(&m->drain_timer, on_drain_timeout, 30, 0);
    m->drain_timer.data = m;
    ev_timer_init(&m->poll_timer, on_poll, 0.02, 0.02);
    m->poll_timer.data = m;
    uint64_t wd_usec = 0;
    if (sd_watchdog_enabled(0, &wd_usec) > 0 && wd_usec > 0) {
        ev_timer_init(&m->watchdog, on_watchdog, 0, (double)wd_usec / 2e6);
        m->watchdog.data = m;
        ev_timer_again(m->loop, &m->watchdog);
    }
}

/* The first snapshot, taken over (--takeover: *<ho_conn> is then the running
 * data plane, waiting for our answer) or loaded, applied: the workers start.
 * Returns LB_OK, or an error in <err> (*<fatal>: already reported). */
static int main_first_snapshot(struct main_ctx *m, int *ho_conn, int *fatal, struct snap **applied,
                               struct lb_err *err)
{
    struct snap *snap = NULL;
    int rc;
    if (m->takeover_path != NULL) {
        rc = takeover_receive(m, ho_conn, &snap, err);
        if (rc == LB_OK)
            lb_log(LB_LOG_INFO, "takeover_received",
                   "%zu listening sockets, the ticket keys and snapshot version %llu from %s",
                   m->inherit.n_fds, (unsigned long long)snap->version, m->takeover_path);
        else {
            char why[sizeof(err->msg)];
            snprintf(why, sizeof(why), "%s", err->msg);
            lb_err_set(err, err->code, 0, "takeover from %s: %s", m->takeover_path, why);
        }
        m->dp.inherit = &m->inherit;
    } else {
        snap = initial_snapshot(m, fatal);
        rc = *fatal ? LB_EINVAL : LB_OK;
    }
    if (rc == LB_OK && snap != NULL)
        rc = apply_snapshot(m, snap, err);
    else if (rc != LB_OK)
        snap_unref(snap);
    *applied = rc == LB_OK ? snap : NULL;
    m->dp.inherit = NULL;
    size_t unused = 0;
    for (size_t i = 0; i < m->inherit.n_fds; i++) /* the metrics socket may go unused */
        unused +=
            m->inherit.fds[i].fd >= 0 && strcmp(m->inherit.fds[i].key, HANDOVER_METRICS_KEY) != 0;
    if (rc == LB_OK && unused > 0)
        lb_log(LB_LOG_WARN, "takeover_unused",
               "%zu of the sockets taken over serve no frontend of the snapshot; closed", unused);
    handover_state_deinit(&m->inherit); /* closes what no worker took */
    if (m->carry != NULL) {
        if (rc == LB_OK)
            lb_log(LB_LOG_INFO, "takeover_runtime",
                   "carried over: %zu circuit breakers, %zu of %zu global rate limits",
                   m->carry->n_breakers, m->carry_limits, m->carry->n_limits);
        handover_runtime_release(m->dp.backends, m->carry_refs, m->carry->n_breakers);
        m->carry_refs = NULL;
        lb__v1__handover_runtime__free_unpacked(m->carry, NULL);
        m->carry = NULL;
    }
    if (rc != LB_OK && !*fatal) {
        fprintf(stderr, "lb-dataplane: %s\n", err->msg);
        lb_log(LB_LOG_ERROR, "startup_failed", "%s", err->msg);
    }
    return rc;
}

/* Follows the control plane (--control), from <snap> when one is served. */
static int main_sync(struct main_ctx *m, bool insecure, const struct snap *snap, struct lb_err *err)
{
    struct sync_config sc = {.base = m->control,
                             .node_id = m->node_id,
                             .state_dir = m->state_dir,
                             .keys = m->feed_keys,
                             .insecure = insecure};
    m->sync = sync_new(m->loop, &sc, &m->dp, apply_snapshot, m, err);
    m->dp.sync = m->sync;
    if (m->sync == NULL) {
        fprintf(stderr, "lb-dataplane: %s\n", err->msg);
        lb_log(LB_LOG_ERROR, "startup_failed", "%s", err->msg);
        return err->code ? err->code : LB_EINVAL;
    }
    if (m->serving) {
        sync_set_applied(m->sync, snap->version, snap->generation);
    } else {
        lb_log(LB_LOG_INFO, "waiting", "no snapshot yet: waiting for the control plane at %s",
               m->control);
        sd_notify(0, "STATUS=waiting for the control plane");
    }
    return LB_OK;
}

/* --takeover: tells the running data plane how it went (<rc>, <err>). The
 * old process stops accepting once it reads a success: say it only when
 * every socket has its accepting worker. Returns <rc>, or the failure to
 * answer. */
static int main_answer_takeover(int ho_conn, int rc, const struct lb_err *err)
{
    struct lb_err aerr = {0};
    if (handover_answer(ho_conn, rc == LB_OK ? NULL : err->msg, &aerr) != LB_OK && rc == LB_OK) {
        rc = aerr.code;
        fprintf(stderr, "lb-dataplane: takeover: %s; the old data plane keeps serving\n", aerr.msg);
        lb_log(LB_LOG_ERROR, "startup_failed", "takeover: %s; the old data plane keeps serving",
               aerr.msg);
    }
    close(ho_conn);
    if (rc == LB_OK)
        lb_log(LB_LOG_INFO, "takeover_done", "accepting on every socket taken over");
    return rc;
}

/* Releases what main() made, in the order their borrowers need. */
static void main_free(struct main_ctx *m)
{
    bshared_registry_free(m->dp.backends);
    metrics_server_free(m->metrics);
    sync_free(m->sync);
    m->dp.sync = NULL;
    seal_keyring_free(m->feed_keys); /* after the sync that borrowed it */
    snap_unref(m->dp.snap);          /* its TLS contexts hold references to the ticket keys */
    tls_tickets_unref(m->dp.tickets);
    fshared_registry_free(m->dp.frontends); /* after the snapshots bound to it */
    free(m->dp.workers);
    free(m->dp.listeners);
}

int main(int argc, char **argv)
{
    struct main_ctx m;
    memset(&m, 0, sizeof(m));
    m.n_workers = default_workers();
    m.ho_listen_fd = m.ho_conn_fd = m.succ_pidfd = -1;
    m.argv = argv;
    enum lb_log_level level = LB_LOG_INFO;
    int rc = parse_args(&m, argc, argv, &level);
    if (rc >= 0)
        return rc;
    if (m.node_id[0] == '\0' && gethostname(m.node_id, sizeof(m.node_id) - 1) != 0)
        snprintf(m.node_id, sizeof(m.node_id), "dataplane-%d", (int)getpid());

    lb_log_setup("lb-dataplane", STDOUT_FILENO, level);
    signal(SIGPIPE, SIG_IGN);
    bool insecure = false;
    if (main_feed(&m, &insecure) != 0 || main_core(&m) != 0)
        return 1;
    main_watchers(&m, argv);
    struct lb_err err = {0};
    int fatal = 0;
    int ho_conn = -1;
    struct snap *snap = NULL;
    rc = main_first_snapshot(&m, &ho_conn, &fatal, &snap, &err);
    if (rc == LB_OK && m.control != NULL)
        rc = main_sync(&m, insecure, snap, &err);
    if (ho_conn >= 0)
        rc = main_answer_takeover(ho_conn, rc, &err);
    if (rc != LB_OK) {
        stop_workers(&m);
        main_free(&m);
        return 1;
    }
    handover_start(&m);
    lb_log(LB_LOG_INFO, "started", "%u workers, node %s, %s %s", m.n_workers, m.node_id,
           m.control ? "control" : "snapshot", m.control ? m.control : m.snapshot_path);

    ev_run(m.loop, 0);

    handover_close(&m);
    for (unsigned i = 0; i < m.dp.n_workers; i++)
        worker_join(&m.dp.workers[i]);
    main_free(&m);
    pthread_mutex_destroy(&m.dp.lock);
    lb_log(LB_LOG_INFO, "stopped", "all connections closed");
    return 0;
}
