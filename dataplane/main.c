/* dataplane/main.c: lb-dataplane — signals, workers, metrics, feed: the wiring of
 * the command line (args.h), the snapshots and the hand-over (upgrade.h). */
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ev.h>

#include "args.h"
#include "bshared.h"
#include "dp.h"
#include "fshared.h"
#include "lb_err.h"
#include "lb_log.h"
#include "lb_sdnotify.h"
#include "metrics_server.h"
#include "seal.h"
#include "snapshot.h"
#include "sync.h"
#include "tls_tickets.h"
#include "upgrade.h"
#include "worker.h"

struct main_ctx {
    struct ev_loop *loop;
    struct dp dp;
    struct args a;                  /* the command line */
    struct seal_keyring *feed_keys; /* read from <a.feed_key_path> at start and on SIGHUP */
    bool serving;                   /* workers run */
    struct sync *sync;
    struct metrics_server *metrics;
    struct sockaddr_storage metrics_addr; /* where <metrics> listens */
    ev_signal sigterm;
    ev_signal sigint;
    ev_signal sighup;
    ev_timer drain_timer;
    ev_timer poll_timer;
    bool stop_seen;    /* a stop signal came while draining after a hand-over */
    struct upgrade up; /* the hand-over to a successor, or from a predecessor */
};

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

/* Stops accepting, finishes what is in flight, then exits (within the
 * snapshot's drain time). */
static void begin_drain(struct main_ctx *m, const char *why)
{
    struct ev_loop *loop = m->loop;
    /* after a hand-over the successor is the unit's main process: its
     * manager must not see this one stopping */
    if (!atomic_load(&m->dp.handed_over))
        lb_sd_notify("STOPPING=1");
    struct snap *snap = dp_snapshot(&m->dp);
    double drain = snap ? snap->timeouts.drain / 1000.0 : 30.0;
    snap_unref(snap);
    lb_log(LB_LOG_INFO, "shutdown", "%s: draining for up to %.1f s", why, drain);
    upgrade_close(&m->up);
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

/* The successor accepts on every socket (upgrade.h). */
static void on_handed_over(void *ctx)
{
    begin_drain(ctx, "handed over");
}

/* ---- applying snapshots ---------------------------------------------------------- */

/* Opens, moves or closes the metrics listener as <snap> says. */
static int metrics_follow(struct main_ctx *m, const struct snap *snap, struct lb_err *err)
{
    bool enabled = m->a.metrics_forced ? !m->a.metrics_off : snap->metrics_enabled;
    const struct sockaddr_storage *addr =
        m->a.metrics_forced ? &m->a.metrics_listen : &snap->metrics_addr;
    socklen_t len = m->a.metrics_forced ? m->a.metrics_listen_len : snap->metrics_addrlen;
    if (m->metrics != NULL && enabled && memcmp(&m->metrics_addr, addr, len) == 0)
        return LB_OK;
    metrics_server_free(m->metrics);
    m->metrics = NULL;
    memset(&m->metrics_addr, 0, sizeof(m->metrics_addr));
    if (!enabled)
        return LB_OK;
    int fd = upgrade_take_fd(&m->up, HANDOVER_METRICS_KEY); /* a takeover's, used once */
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
        struct lb_err why = {0};
        int fd = dp_socket_bound(f, &why);
        if (fd < 0) {
            lb_err_set(err, why.code, 0, "frontends[%u]: %s", i, why.msg);
            if (err != NULL)
                err->sys_errno = why.sys_errno;
            return why.code;
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
    for (unsigned i = 0; i < m->a.n_workers && rc == LB_OK; i++) {
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
    if (!m->a.log_level_forced)
        lb_log_set_level((enum lb_log_level)snap->log_level);
    for (uint32_t i = 0; i < snap->n_frontends; i++)
        lb_log(LB_LOG_INFO, "listening", "frontend %s on %s", snap->frontends[i].name,
               snap->frontends[i].key);
    m->serving = true;
    /* a successor is not the unit's main process yet: the old one says
     * MAINPID= and READY=1 for it once it answered ready */
    if (m->a.takeover_path == NULL)
        lb_sd_notify("READY=1\nSTATUS=serving");
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
        upgrade_takeover_limits(&m->up, snap);
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
        if (!m->a.log_level_forced)
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
    if (seal_keyring_load(m->a.feed_key_path, &kr, &err) != LB_OK) {
        lb_log(LB_LOG_ERROR, "feed_key_reload_failed", "%s; the keys in use stay", err.msg);
        return;
    }
    sync_set_keys(m->sync, kr);
    seal_keyring_free(m->feed_keys);
    m->feed_keys = kr;
    lb_log(LB_LOG_INFO, "feed_key_reloaded", "%s: %zu keys, sealing with key id %u",
           m->a.feed_key_path, seal_keyring_count(kr), (unsigned)seal_keyring_seal_id(kr));
}

static void on_reload(struct ev_loop *loop, ev_signal *s, int revents)
{
    struct main_ctx *m = s->data;
    lb_sd_notify("RELOADING=1");
    if (m->sync != NULL && m->a.feed_key_path != NULL)
        reload_feed_keys(m);
    if (m->sync != NULL) {
        lb_log(LB_LOG_INFO, "reload", "asking the control plane for its current snapshot");
        sync_request(m->sync);
    }
    if (m->a.snapshot_path != NULL) {
        struct lb_err err = {0};
        struct snap *snap = NULL;
        if (snapshot_load_file(m->a.snapshot_path, &snap, &err) != LB_OK ||
            apply_snapshot(m, snap, &err) != LB_OK)
            lb_log(LB_LOG_ERROR, "snapshot_rejected", "%s: %s; the current snapshot keeps serving",
                   m->a.snapshot_path, err.msg);
    }
    lb_sd_notify("READY=1");
}

/* ---- start-up ------------------------------------------------------------------ */

/* The snapshot to serve before the control plane answers, if any. */
static struct snap *initial_snapshot(struct main_ctx *m, int *fatal)
{
    struct lb_err err = {0};
    struct snap *snap = NULL;
    *fatal = 0;
    if (m->a.snapshot_path != NULL) {
        if (snapshot_load_file(m->a.snapshot_path, &snap, &err) != LB_OK) {
            fprintf(stderr, "lb-dataplane: %s\n", err.msg);
            lb_log(LB_LOG_ERROR, "snapshot_rejected", "%s: %s", m->a.snapshot_path, err.msg);
            *fatal = 1;
        }
        return snap;
    }
    if (m->a.state_dir == NULL)
        return NULL;
    if (mkdir(m->a.state_dir, 0750) == -1 && errno != EEXIST)
        lb_log(LB_LOG_WARN, "state_dir_unusable", "cannot create --state-dir %s: %s",
               m->a.state_dir, strerror(errno));
    int rc = sync_load_cached(m->a.state_dir, &snap, &err);
    if (rc == LB_OK) {
        lb_log(LB_LOG_INFO, "snapshot_cached",
               "serving version %llu generation %llu from %s until the control plane answers",
               (unsigned long long)snap->version, (unsigned long long)snap->generation,
               m->a.state_dir);
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
    if (seal_feed_policy(m->a.control, m->a.feed_key_path != NULL, m->a.feed_insecure, insecure,
                         &err) != LB_OK ||
        (m->a.feed_key_path != NULL &&
         seal_keyring_load(m->a.feed_key_path, &m->feed_keys, &err) != LB_OK)) {
        fprintf(stderr, "lb-dataplane: %s\n", err.msg);
        lb_log(LB_LOG_ERROR, "startup_failed", "%s", err.msg);
        return 1;
    }
    if (*insecure)
        lb_log(LB_LOG_WARN, "feed_insecure",
               "--feed-insecure: the feed from %s is NOT sealed; anyone on the path reads every "
               "snapshot (TLS private keys included) and can feed this data plane its own",
               m->a.control);
    return 0;
}

/* The process context the workers share. Returns 0, or 1 (printed). */
static int main_core(struct main_ctx *m)
{
    pthread_mutex_init(&m->dp.lock, NULL);
    m->dp.workers = calloc(m->a.n_workers, sizeof(*m->dp.workers));
    m->dp.n_planned = m->a.n_workers;
    m->dp.load = malloc(m->a.n_workers * sizeof(*m->dp.load));
    for (unsigned i = 0; m->dp.load != NULL && i < m->a.n_workers; i++)
        atomic_init(&m->dp.load[i], DP_LOAD_OUT);
    if (m->dp.workers == NULL || m->dp.load == NULL) {
        fprintf(stderr, "lb-dataplane: out of memory\n");
        return 1;
    }
    /* signals come through a signalfd the loop reads, blocked in every
     * thread, rather than through a handler: nothing runs asynchronously,
     * and under TSan, whose deferred delivery of handled signals lost a
     * SIGTERM now and then (the main loop idle in epoll_wait, nothing
     * pending), none is lost */
    m->loop = ev_default_loop(EVFLAG_AUTO | EVFLAG_SIGNALFD);
    m->dp.backends = bshared_registry_new(NULL);
    m->dp.frontends = fshared_registry_new(NULL);
    m->dp.controlled = m->a.control != NULL;
    retry_budget_init(&m->dp.budget, 0, 0, m->a.n_workers);
    m->dp.tickets = tls_tickets_new(NULL, NULL, NULL);
    if (m->dp.backends == NULL || m->dp.frontends == NULL || m->dp.tickets == NULL) {
        fprintf(stderr, "lb-dataplane: out of memory\n");
        return 1;
    }
    return 0;
}

/* Signals, the hand-over, the drain timers. */
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
    upgrade_init(&m->up, m->loop, &m->dp, &m->metrics, argv, m->a.handover_path, m->a.takeover_path,
                 on_handed_over, m);
    ev_timer_init(&m->drain_timer, on_drain_timeout, 30, 0);
    m->drain_timer.data = m;
    ev_timer_init(&m->poll_timer, on_poll, 0.02, 0.02);
    m->poll_timer.data = m;
}

/* The first snapshot, taken over (--takeover: *<ho_conn> is then the running
 * data plane, waiting for our answer) or loaded, applied: the workers start.
 * Returns LB_OK, or an error in <err> (*<fatal>: already reported). */
static int main_first_snapshot(struct main_ctx *m, int *ho_conn, int *fatal, struct snap **applied,
                               struct lb_err *err)
{
    struct snap *snap = NULL;
    int rc;
    if (m->a.takeover_path != NULL) {
        rc = upgrade_takeover(&m->up, ho_conn, &snap, err);
    } else {
        snap = initial_snapshot(m, fatal);
        rc = *fatal ? LB_EINVAL : LB_OK;
    }
    if (rc == LB_OK && snap != NULL)
        rc = apply_snapshot(m, snap, err);
    else if (rc != LB_OK)
        snap_unref(snap);
    *applied = rc == LB_OK ? snap : NULL;
    upgrade_takeover_end(&m->up, rc == LB_OK);
    if (rc != LB_OK && !*fatal) {
        fprintf(stderr, "lb-dataplane: %s\n", err->msg);
        lb_log(LB_LOG_ERROR, "startup_failed", "%s", err->msg);
    }
    return rc;
}

/* Follows the control plane (--control), from <snap> when one is served. */
static int main_sync(struct main_ctx *m, bool insecure, const struct snap *snap, struct lb_err *err)
{
    struct sync_config sc = {.base = m->a.control,
                             .node_id = m->a.node_id,
                             .state_dir = m->a.state_dir,
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
               m->a.control);
        lb_sd_notify("STATUS=waiting for the control plane");
    }
    return LB_OK;
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
    free(m->dp.load);
    free(m->dp.listeners);
}

/* glibc's per-thread cache keeps up to 7 freed chunks of every size up to
 * 1 KiB. A TLS handshake makes hundreds of OpenSSL allocations, and the chunks
 * they leave in that cache lie scattered over the worker arenas: each keeps
 * its page resident after a burst, so that RSS stayed ~1.25x idle (measured:
 * 1.12x with the cache limited to chunks of 256 bytes, with no more CPU per
 * request or handshake). Tunables are read only when a program starts, so the
 * process sets them and runs its own file again, once, before anything else
 * (by its path rather than /proc/self/exe, which would name the process
 * "exe"); an operator's own GLIBC_TUNABLES (even empty) is left alone, and a
 * failed exec runs on untuned. */
#define MALLOC_TUNABLES "glibc.malloc.tcache_max=256"

static void malloc_tune(char **argv)
{
    if (getenv("GLIBC_TUNABLES") != NULL)
        return;
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe));
    if (n <= 0 || (size_t)n >= sizeof(exe)) {
        fprintf(stderr, "lb-dataplane: malloc left untuned: /proc/self/exe: %s\n",
                n < 0 ? strerror(errno) : "path too long");
        return;
    }
    if (setenv("GLIBC_TUNABLES", MALLOC_TUNABLES, 1) != 0)
        return;
    exe[n] = '\0';
    execv(exe, argv);
    fprintf(stderr, "lb-dataplane: malloc left untuned: exec %s: %s\n", exe, strerror(errno));
    unsetenv("GLIBC_TUNABLES");
}

int main(int argc, char **argv)
{
    malloc_tune(argv);
    struct main_ctx m;
    memset(&m, 0, sizeof(m));
    int rc = args_parse(&m.a, argc, argv);
    if (rc >= 0)
        return rc;
    if (m.a.node_id[0] == '\0' && gethostname(m.a.node_id, sizeof(m.a.node_id) - 1) != 0)
        snprintf(m.a.node_id, sizeof(m.a.node_id), "dataplane-%d", (int)getpid());

    lb_log_setup("lb-dataplane", STDOUT_FILENO, m.a.log_level);
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
    if (rc == LB_OK && m.a.control != NULL)
        rc = main_sync(&m, insecure, snap, &err);
    if (ho_conn >= 0)
        rc = upgrade_takeover_answer(ho_conn, rc, &err);
    if (rc != LB_OK) {
        stop_workers(&m);
        main_free(&m);
        return 1;
    }
    upgrade_listen(&m.up);
    lb_log(LB_LOG_INFO, "started", "%u workers, node %s, %s %s", m.a.n_workers, m.a.node_id,
           m.a.control ? "control" : "snapshot", m.a.control ? m.a.control : m.a.snapshot_path);

    ev_run(m.loop, 0);

    upgrade_close(&m.up);
    for (unsigned i = 0; i < m.dp.n_workers; i++)
        worker_join(&m.dp.workers[i]);
    main_free(&m);
    pthread_mutex_destroy(&m.dp.lock);
    lb_log(LB_LOG_INFO, "stopped", "all connections closed");
    return 0;
}
