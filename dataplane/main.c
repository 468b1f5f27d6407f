/* dataplane/main.c: lb-dataplane — flags, signals, workers, metrics. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <ev.h>

#include "dp.h"
#include "lb_err.h"
#include "lb_log.h"
#include "metrics_server.h"
#include "snapshot.h"
#include "worker.h"

#define MAX_WORKERS 256

struct main_ctx {
    struct ev_loop *loop;
    struct dp dp;
    const char *snapshot_path;
    struct metrics_server *metrics;
    ev_signal sigterm;
    ev_signal sigint;
    ev_signal sighup;
    ev_timer drain_timer;
    ev_timer poll_timer;
    ev_timer watchdog;
    bool log_level_forced;
};

static void usage(FILE *out)
{
    fprintf(out, "usage: lb-dataplane --snapshot FILE [options]\n"
                 "\n"
                 "Serves HTTP traffic as an lb.v1.Snapshot describes it.\n"
                 "\n"
                 "  --snapshot FILE     binary lb.v1.Snapshot to serve (SIGHUP reloads it)\n"
                 "  --workers N         worker threads (default: one per CPU)\n"
                 "  --log-level LEVEL   debug, info, warn or error (default: the snapshot's)\n"
                 "  --help              this text\n"
                 "  --version           the version\n");
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
    for (unsigned i = 0; i < m->dp.n_workers; i++)
        worker_notify(&m->dp.workers[i]);
}

static void on_stop_signal(struct ev_loop *loop, ev_signal *s, int revents)
{
    struct main_ctx *m = s->data;
    if (atomic_load(&m->dp.draining)) {
        lb_log(LB_LOG_WARN, "shutdown_forced", "second signal: exiting at once");
        _exit(1);
    }
    sd_notify(0, "STOPPING=1");
    struct snap *snap = dp_snapshot(&m->dp);
    double drain = snap ? snap->timeouts.drain / 1000.0 : 30.0;
    snap_unref(snap);
    lb_log(LB_LOG_INFO, "shutdown", "signal %d: draining for up to %.1f s", s->signum, drain);
    atomic_store(&m->dp.draining, true);
    for (unsigned i = 0; i < m->dp.n_workers; i++)
        worker_notify(&m->dp.workers[i]);
    if (m->metrics != NULL) {
        metrics_server_free(m->metrics);
        m->metrics = NULL;
    }
    ev_timer_set(&m->drain_timer, drain, 0);
    ev_timer_start(loop, &m->drain_timer);
    ev_timer_start(loop, &m->poll_timer);
}

static void on_reload(struct ev_loop *loop, ev_signal *s, int revents)
{
    struct main_ctx *m = s->data;
    struct lb_err err = {0};
    struct snap *snap = NULL;
    sd_notify(0, "RELOADING=1");
    if (snapshot_load_file(m->snapshot_path, &snap, &err) != LB_OK) {
        lb_log(LB_LOG_ERROR, "snapshot_rejected", "%s: %s; the current snapshot keeps serving",
               m->snapshot_path, err.msg);
    } else {
        if (!m->log_level_forced)
            lb_log_set_level((enum lb_log_level)snap->log_level);
        lb_log(LB_LOG_INFO, "snapshot_applied", "version %llu generation %llu from %s",
               (unsigned long long)snap->version, (unsigned long long)snap->generation,
               m->snapshot_path);
        dp_publish(&m->dp, snap);
    }
    sd_notify(0, "READY=1");
}

static void on_watchdog(struct ev_loop *loop, ev_timer *t, int revents)
{
    sd_notify(0, "WATCHDOG=1");
}

static unsigned default_workers(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"snapshot", required_argument, NULL, 's'},  {"workers", required_argument, NULL, 'w'},
        {"log-level", required_argument, NULL, 'l'}, {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},         {NULL, 0, NULL, 0},
    };
    struct main_ctx m;
    memset(&m, 0, sizeof(m));
    unsigned n_workers = default_workers();
    enum lb_log_level level = LB_LOG_INFO;
    int opt;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 's':
            m.snapshot_path = optarg;
            break;
        case 'w': {
            char *end;
            long n = strtol(optarg, &end, 10);
            if (*end != '\0' || n < 1 || n > MAX_WORKERS) {
                fprintf(stderr, "lb-dataplane: --workers: \"%s\" is not a number in 1..%d\n",
                        optarg, MAX_WORKERS);
                return 2;
            }
            n_workers = (unsigned)n;
            break;
        }
        case 'l':
            if (lb_log_level_parse(optarg, &level) != 0) {
                fprintf(stderr,
                        "lb-dataplane: --log-level: \"%s\" is not debug, info, warn or error\n",
                        optarg);
                return 2;
            }
            m.log_level_forced = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("lb-dataplane %s\n", LB_VERSION);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc || m.snapshot_path == NULL) {
        fprintf(stderr, "lb-dataplane: %s\n",
                optind < argc ? "unexpected argument" : "--snapshot FILE is required");
        usage(stderr);
        return 2;
    }

    lb_log_setup("lb-dataplane", STDOUT_FILENO, level);
    signal(SIGPIPE, SIG_IGN);

    struct lb_err err = {0};
    struct snap *snap = NULL;
    if (snapshot_load_file(m.snapshot_path, &snap, &err) != LB_OK) {
        fprintf(stderr, "lb-dataplane: %s\n", err.msg);
        lb_log(LB_LOG_ERROR, "snapshot_rejected", "%s: %s", m.snapshot_path, err.msg);
        return 1;
    }
    if (!m.log_level_forced)
        lb_log_set_level((enum lb_log_level)snap->log_level);

    pthread_mutex_init(&m.dp.lock, NULL);
    m.dp.snap = snap;
    m.dp.workers = calloc(n_workers, sizeof(*m.dp.workers));
    if (m.dp.workers == NULL) {
        fprintf(stderr, "lb-dataplane: out of memory\n");
        return 1;
    }

    /* workers never take signals: the main loop does */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int rc = LB_OK;
    for (unsigned i = 0; i < n_workers && rc == LB_OK; i++) {
        rc = worker_start(&m.dp.workers[i], &m.dp, i, snap, &err);
        if (rc == LB_OK)
            m.dp.n_workers++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);

    m.loop = ev_default_loop(EVFLAG_AUTO);
    if (rc == LB_OK && snap->metrics_enabled) {
        m.metrics =
            metrics_server_new(m.loop, &m.dp, &snap->metrics_addr, snap->metrics_addrlen, &err);
        if (m.metrics == NULL)
            rc = err.code;
    }
    if (rc != LB_OK) {
        fprintf(stderr, "lb-dataplane: %s\n", err.msg);
        lb_log(LB_LOG_ERROR, "startup_failed", "%s", err.msg);
        atomic_store(&m.dp.stopping, true);
        for (unsigned i = 0; i < m.dp.n_workers; i++) {
            worker_notify(&m.dp.workers[i]);
            worker_join(&m.dp.workers[i]);
        }
        free(m.dp.workers);
        snap_unref(m.dp.snap);
        return 1;
    }

    ev_signal_init(&m.sigterm, on_stop_signal, SIGTERM);
    ev_signal_init(&m.sigint, on_stop_signal, SIGINT);
    ev_signal_init(&m.sighup, on_reload, SIGHUP);
    m.sigterm.data = m.sigint.data = m.sighup.data = &m;
    ev_signal_start(m.loop, &m.sigterm);
    ev_signal_start(m.loop, &m.sigint);
    ev_signal_start(m.loop, &m.sighup);
    ev_timer_init(&m.drain_timer, on_drain_timeout, 30, 0);
    m.drain_timer.data = &m;
    ev_timer_init(&m.poll_timer, on_poll, 0.02, 0.02);
    m.poll_timer.data = &m;
    uint64_t wd_usec = 0;
    if (sd_watchdog_enabled(0, &wd_usec) > 0 && wd_usec > 0) {
        ev_timer_init(&m.watchdog, on_watchdog, 0, wd_usec / 2e6);
        m.watchdog.data = &m;
        ev_timer_again(m.loop, &m.watchdog);
    }

    for (uint32_t i = 0; i < snap->n_frontends; i++)
        lb_log(LB_LOG_INFO, "listening", "frontend %s on %s", snap->frontends[i].name,
               snap->frontends[i].key);
    lb_log(LB_LOG_INFO, "started",
           "version %llu generation %llu, %u workers, %u backends, metrics %s",
           (unsigned long long)snap->version, (unsigned long long)snap->generation, n_workers,
           snap->n_backends, snap->metrics_enabled ? "on" : "off");
    sd_notify(0, "READY=1");

    ev_run(m.loop, 0);

    for (unsigned i = 0; i < m.dp.n_workers; i++)
        worker_join(&m.dp.workers[i]);
    metrics_server_free(m.metrics);
    free(m.dp.workers);
    snap_unref(m.dp.snap);
    pthread_mutex_destroy(&m.dp.lock);
    lb_log(LB_LOG_INFO, "stopped", "all connections closed");
    ev_loop_destroy(m.loop);
    return 0;
}
