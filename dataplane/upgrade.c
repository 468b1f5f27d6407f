/* dataplane/upgrade.c: the hand-over's two sides as processes: the old one's
 * socket, SIGUSR2 and systemd notifications, the new one's takeover. */
#include "upgrade.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dp.h"
#include "lb.pb-c.h"
#include "lb_err.h"
#include "lb_log.h"
#include "lb_sdnotify.h"
#include "metrics_server.h"
#include "snapshot.h"
#include "tls_tickets.h"

/* a successor that took the sockets has this long to say it is ready */
#define HANDOVER_READY_S 30.0
/* each message of the hand-over, both ways */
#define HANDOVER_IO_MS 10000

static void on_watchdog(struct ev_loop *loop, ev_timer *t, int revents)
{
    lb_sd_notify("WATCHDOG=1");
}

/* ---- hand-over: the old side ------------------------------------------------------ */

/* Forgets the successor SIGUSR2 started: it took over or it is gone. */
static void successor_unwatch(struct upgrade *u)
{
    if (u->succ_pidfd >= 0) {
        ev_io_stop(u->loop, &u->succ_io);
        close(u->succ_pidfd);
    }
    u->succ_pidfd = -1;
    u->succ_pid = 0;
}

/* An upgrade that SIGUSR2 started did not happen: the unit, "reloading"
 * since, is running again with this process as its main one. */
static void upgrade_notify_failed(struct upgrade *u, const char *why)
{
    if (!u->reloading)
        return;
    u->reloading = false;
    lb_sd_notifyf("READY=1\nSTATUS=serving; the last upgrade failed: %s", why);
}

/* Forgets the successor in progress (if any) and listens for the next. */
static void handover_conn_end(struct upgrade *u)
{
    if (u->conn_fd < 0)
        return;
    ev_io_stop(u->loop, &u->conn_io);
    ev_timer_stop(u->loop, &u->timer);
    close(u->conn_fd);
    u->conn_fd = -1;
    if (u->listen_fd >= 0)
        ev_io_start(u->loop, &u->listen_io);
}

void upgrade_close(struct upgrade *u)
{
    handover_conn_end(u);
    if (u->listen_fd < 0)
        return;
    ev_io_stop(u->loop, &u->listen_io);
    close(u->listen_fd);
    u->listen_fd = -1;
    struct stat st;
    if (!atomic_load(&u->dp->handed_over) && stat(u->path, &st) == 0 && st.st_ino == u->ino)
        unlink(u->path);
}

/* What a successor gets: every listening socket, the ticket keys, the
 * snapshot serving now. */
static int handover_export(struct upgrade *u, struct handover_state *st, uint64_t *version,
                           size_t carried[2], struct lb_err *err)
{
    memset(st, 0, sizeof(*st));
    int rc = dp_listeners_export(u->dp, st, err);
    if (rc == LB_OK && *u->metrics != NULL)
        rc = handover_state_add_fd(st, metrics_server_fd(*u->metrics), HANDOVER_METRICS_KEY, err);
    if (rc == LB_OK) {
        st->tickets = malloc(TLS_TICKETS_EXPORT_LEN);
        if (st->tickets == NULL)
            return lb_err_set(err, LB_ENOMEM, 0, "out of memory for the hand-over");
        tls_tickets_export(u->dp->tickets, st->tickets);
        st->tickets_len = TLS_TICKETS_EXPORT_LEN;
    }
    struct snap *snap = dp_snapshot(u->dp);
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
        rc = handover_runtime_export(u->dp->backends, snap, (uint64_t)(ev_time() * 1000.0),
                                     &st->runtime, &st->runtime_len, &carried[0], &carried[1], err);
    snap_unref(snap);
    return rc;
}

static void on_handover_accept(struct ev_loop *loop, ev_io *io, int revents)
{
    struct upgrade *u = io->data;
    int c = accept4(u->listen_fd, NULL, NULL, SOCK_CLOEXEC);
    if (c == -1)
        return;
    struct ucred cred;
    socklen_t cl = sizeof(cred);
    const char *refuse = NULL;
    if (getsockopt(c, SOL_SOCKET, SO_PEERCRED, &cred, &cl) != 0 ||
        (cred.uid != geteuid() && cred.uid != 0))
        refuse = "it runs as another user";
    else if (u->dp->n_workers == 0)
        refuse = "this data plane has no snapshot yet";
    else if (atomic_load(&u->dp->draining))
        refuse = "this data plane is shutting down";
    else
        u->peer_pid = cred.pid;
    if (refuse != NULL) {
        lb_log(LB_LOG_WARN, "handover_refused", "a successor connected; refused: %s", refuse);
        close(c);
        return;
    }
    struct lb_err err = {0};
    struct handover_state st;
    uint64_t version = 0;
    size_t carried[2] = {0, 0};
    int rc = handover_export(u, &st, &version, carried, &err);
    if (rc == LB_OK)
        rc = handover_send(c, &st, HANDOVER_IO_MS, &err);
    size_t n = st.n_fds;
    handover_state_deinit(&st);
    if (rc != LB_OK) {
        lb_log(LB_LOG_ERROR, "handover_failed", "%s; this data plane keeps serving", err.msg);
        upgrade_notify_failed(u, err.msg);
        close(c);
        return;
    }
    lb_log(LB_LOG_INFO, "handover_sent",
           "%zu listening sockets, the ticket keys, snapshot version %llu and the state of %zu "
           "circuit breakers and %zu global rate limits handed to a successor; waiting up to "
           "%.0f s for it to accept",
           n, (unsigned long long)version, carried[0], carried[1], HANDOVER_READY_S);
    u->conn_fd = c;
    ev_io_stop(loop, &u->listen_io); /* one successor at a time */
    ev_io_set(&u->conn_io, c, EV_READ);
    ev_io_start(loop, &u->conn_io);
    ev_timer_set(&u->timer, HANDOVER_READY_S, 0);
    ev_timer_start(loop, &u->timer);
}

static void on_handover_answer(struct ev_loop *loop, ev_io *io, int revents)
{
    struct upgrade *u = io->data;
    struct lb_err err = {0};
    int rc = handover_read_answer(u->conn_fd, &err);
    if (rc == LB_ENOTFOUND)
        return;
    if (rc != LB_OK) {
        lb_log(LB_LOG_ERROR, "handover_refused", "the successor %s; this data plane keeps serving",
               err.msg);
        upgrade_notify_failed(u, err.msg);
        handover_conn_end(u);
        return;
    }
    lb_log(LB_LOG_INFO, "handover_done",
           "the successor (pid %d) accepts on every socket; this data plane stops accepting",
           (int)u->peer_pid);
    /* Under systemd (NotifyAccess=main) only the main process may speak for
     * the unit, so this one names its successor the main process, ends the
     * reload and pings the watchdog on its behalf in one message: the
     * successor's own pings count from here on, and systemd, which sees the
     * successor in the unit's cgroup, tracks it from now. */
    u->reloading = false;
    lb_sd_notifyf("MAINPID=%d\nREADY=1\nWATCHDOG=1\nSTATUS=serving (pid %d took over from pid %d)",
                  (int)u->peer_pid, (int)u->peer_pid, (int)getpid());
    if (ev_is_active(&u->watchdog))
        ev_timer_stop(loop, &u->watchdog); /* not ours to ping any more */
    atomic_store(&u->dp->handed_over, true);
    successor_unwatch(u);
    u->on_handed_over(u->ctx);
}

static void on_handover_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct upgrade *u = t->data;
    lb_log(LB_LOG_ERROR, "handover_refused",
           "the successor did not say it was ready within %.0f s; this data plane keeps serving",
           HANDOVER_READY_S);
    upgrade_notify_failed(u, "the successor did not say it was ready in time");
    handover_conn_end(u);
}

void upgrade_listen(struct upgrade *u)
{
    if (u->path == NULL)
        return;
    struct lb_err err = {0};
    struct stat st;
    if (handover_listen(u->path, &u->listen_fd, &err) != LB_OK || stat(u->path, &st) != 0) {
        lb_log(LB_LOG_WARN, "handover_unavailable", "%s; no successor can take over", err.msg);
        if (u->listen_fd >= 0)
            close(u->listen_fd);
        u->listen_fd = -1;
        return;
    }
    u->ino = st.st_ino;
    ev_io_init(&u->listen_io, on_handover_accept, u->listen_fd, EV_READ);
    u->listen_io.data = u;
    ev_io_start(u->loop, &u->listen_io);
    lb_log(LB_LOG_INFO, "handover_listening", "a successor may take over through %s", u->path);
}

/* The successor's pidfd is readable: it exited. Before it answered ready
 * that is a failed upgrade; its exit status is its parent's (systemd's) to
 * see, its reason in its own log. */
static void on_successor_exit(struct ev_loop *loop, ev_io *io, int revents)
{
    struct upgrade *u = io->data;
    successor_unwatch(u);
    if (atomic_load(&u->dp->handed_over))
        return;
    upgrade_notify_failed(u, "the successor exited before it was ready (see its log)");
    lb_log(LB_LOG_ERROR, "successor_exited",
           "successor pid %d exited before it was ready (see its log); this data plane keeps "
           "serving",
           (int)u->succ_pid);
}

/* Our arguments for the successor: --takeover <handover_path> replaces any
 * --takeover. Returns a calloc'ed array (strings borrowed), or NULL. */
static char **successor_argv(const struct upgrade *u)
{
    size_t n = 0;
    while (u->argv[n] != NULL)
        n++;
    char **argv = calloc(n + 3, sizeof(*argv));
    if (argv == NULL)
        return NULL;
    size_t k = 0;
    argv[k++] = (char *)u->exe;
    for (size_t i = 1; i < n; i++) {
        if (strcmp(u->argv[i], "--takeover") == 0) {
            i++; /* and its value */
            continue;
        }
        if (strncmp(u->argv[i], "--takeover=", 11) == 0)
            continue;
        argv[k++] = u->argv[i];
    }
    argv[k++] = "--takeover";
    argv[k++] = (char *)u->path;
    argv[k] = NULL;
    return argv;
}

/* Our environment for the successor. systemd's WATCHDOG_PID names the
 * process it expects pings from: this one; the successor, which connects to
 * this process, keeps the watchdog when it names its peer (takeover_receive).
 * Without a watchdog of ours, WATCHDOG_* are left out. Returns a calloc'ed
 * array; <own> (caller's, freed after the fork) holds our entry. */
static char **successor_envp(const struct upgrade *u, char own[32])
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
        if (!wd_pid && (!wd_usec || ev_is_active(&u->watchdog)))
            envp[k++] = environ[i];
    }
    if (ev_is_active(&u->watchdog)) {
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
    struct upgrade *u = sig->data;
    if (u->listen_fd < 0 || atomic_load(&u->dp->draining)) {
        lb_log(LB_LOG_WARN, "upgrade_refused", "SIGUSR2: %s",
               atomic_load(&u->dp->draining)
                   ? "this data plane is shutting down"
                   : "no hand-over socket (--handover-socket or --state-dir)");
        return;
    }
    if (u->conn_fd >= 0 || u->succ_pid > 0) {
        lb_log(LB_LOG_WARN, "upgrade_refused", "SIGUSR2: a successor is starting already");
        return;
    }
    char own[32];
    char **argv = successor_argv(u);
    char **envp = successor_envp(u, own);
    pid_t pid = argv && envp ? successor_spawn(u->exe, argv, envp) : -1;
    int e = argv && envp ? errno : ENOMEM;
    free(argv);
    free(envp);
    if (pid == -1) {
        lb_log(LB_LOG_ERROR, "upgrade_failed", "SIGUSR2: cannot start %s: %s", u->exe, strerror(e));
        return;
    }
    u->succ_pid = pid;
    u->succ_pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (u->succ_pidfd >= 0) { /* else: the hand-over socket and its timeout tell */
        ev_io_init(&u->succ_io, on_successor_exit, u->succ_pidfd, EV_READ);
        u->succ_io.data = u;
        ev_io_start(loop, &u->succ_io);
    }
    /* systemd shows the unit "reloading" until the successor is the main
     * process (MAINPID=, READY=1) or this one is again (READY=1) */
    u->reloading = true;
    lb_sd_notifyf("RELOADING=1\nSTATUS=upgrading: pid %d is taking over", (int)pid);
    lb_log(LB_LOG_INFO, "upgrade_started", "SIGUSR2: started %s (pid %d) to take over", u->exe,
           (int)pid);
}

/* ---- hand-over: the new side -------------------------------------------------------- */

/* systemd pings: once this process is the unit's main one, the watchdog is
 * ours to keep. The predecessor set WATCHDOG_PID to its own pid (see
 * successor_envp()), which lb_sd_watchdog_usec() refuses as not ours: when
 * it names the peer of <conn>, the watchdog is the one systemd set for it. */
static void takeover_watchdog(struct upgrade *u, int conn)
{
    const char *wpid = getenv("WATCHDOG_PID");
    const char *wusec = getenv("WATCHDOG_USEC");
    struct ucred cred;
    socklen_t cl = sizeof(cred);
    if (ev_is_active(&u->watchdog) || wpid == NULL || wusec == NULL ||
        getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &cred, &cl) != 0)
        return;
    char *pend, *uend;
    long pid = strtol(wpid, &pend, 10);
    unsigned long long usec = strtoull(wusec, &uend, 10);
    if (pid != (long)cred.pid || *pend != '\0' || *uend != '\0' || usec == 0)
        return;
    ev_timer_init(&u->watchdog, on_watchdog, 0, (double)usec / 2e6);
    u->watchdog.data = u;
    ev_timer_again(u->loop, &u->watchdog);
}

/* Connects to the running data plane and receives its sockets (into
 * u->inherit, each given to a worker), ticket keys and snapshot. *conn
 * stays open for the answer. */
static int takeover_receive(struct upgrade *u, int *conn, struct snap **snap, struct lb_err *err)
{
    int rc = handover_connect(u->takeover_path, HANDOVER_IO_MS, conn, err);
    if (rc == LB_OK)
        takeover_watchdog(u, *conn);
    if (rc == LB_OK)
        rc = handover_recv(*conn, &u->inherit, err);
    if (rc == LB_OK && u->inherit.tickets_len > 0)
        rc = tls_tickets_import(u->dp->tickets, u->inherit.tickets, u->inherit.tickets_len, err);
    if (rc == LB_OK && u->inherit.snapshot_len == 0)
        rc = lb_err_set(err, LB_EPROTO, 0, "the running data plane sent no snapshot");
    if (rc == LB_OK)
        rc = snapshot_decode(u->inherit.snapshot, u->inherit.snapshot_len, snap, err);
    if (rc == LB_OK && u->inherit.runtime_len > 0)
        rc = handover_runtime_decode(u->inherit.runtime, u->inherit.runtime_len, &u->carry, err);
    if (rc == LB_OK && u->carry != NULL) /* before any worker's view takes the backends */
        rc = handover_runtime_breakers(u->dp->backends, u->carry, (uint64_t)(ev_time() * 1000.0),
                                       &u->carry_refs, err);
    return rc;
}

int upgrade_takeover(struct upgrade *u, int *conn, struct snap **snap, struct lb_err *err)
{
    int rc = takeover_receive(u, conn, snap, err);
    if (rc == LB_OK)
        lb_log(LB_LOG_INFO, "takeover_received",
               "%zu listening sockets, the ticket keys and snapshot version %llu from %s",
               u->inherit.n_fds, (unsigned long long)(*snap)->version, u->takeover_path);
    else {
        char why[sizeof(err->msg)];
        snprintf(why, sizeof(why), "%s", err->msg);
        lb_err_set(err, err->code, 0, "takeover from %s: %s", u->takeover_path, why);
    }
    u->dp->inherit = &u->inherit;
    return rc;
}

int upgrade_take_fd(struct upgrade *u, const char *key)
{
    for (size_t i = 0; i < u->inherit.n_fds; i++) {
        if (u->inherit.fds[i].fd >= 0 && strcmp(u->inherit.fds[i].key, key) == 0) {
            int fd = u->inherit.fds[i].fd;
            u->inherit.fds[i].fd = -1;
            return fd;
        }
    }
    return -1;
}

void upgrade_takeover_limits(struct upgrade *u, const struct snap *snap)
{
    if (u->carry != NULL) /* a takeover: the limiters exist, no worker serves yet */
        u->carry_limits = handover_runtime_limits(snap, u->carry, (uint64_t)(ev_time() * 1000.0));
}

void upgrade_takeover_end(struct upgrade *u, bool ok)
{
    u->dp->inherit = NULL;
    size_t unused = 0;
    for (size_t i = 0; i < u->inherit.n_fds; i++) /* the metrics socket may go unused */
        unused +=
            u->inherit.fds[i].fd >= 0 && strcmp(u->inherit.fds[i].key, HANDOVER_METRICS_KEY) != 0;
    if (ok && unused > 0)
        lb_log(LB_LOG_WARN, "takeover_unused",
               "%zu of the sockets taken over serve no frontend of the snapshot; closed", unused);
    handover_state_deinit(&u->inherit); /* closes what no worker took */
    if (u->carry != NULL) {
        if (ok)
            lb_log(LB_LOG_INFO, "takeover_runtime",
                   "carried over: %zu circuit breakers, %zu of %zu global rate limits",
                   u->carry->n_breakers, u->carry_limits, u->carry->n_limits);
        handover_runtime_release(u->dp->backends, u->carry_refs, u->carry->n_breakers);
        u->carry_refs = NULL;
        lb__v1__handover_runtime__free_unpacked(u->carry, NULL);
        u->carry = NULL;
    }
}

int upgrade_takeover_answer(int conn, int rc, const struct lb_err *err)
{
    struct lb_err aerr = {0};
    if (handover_answer(conn, rc == LB_OK ? NULL : err->msg, &aerr) != LB_OK && rc == LB_OK) {
        rc = aerr.code;
        fprintf(stderr, "lb-dataplane: takeover: %s; the old data plane keeps serving\n", aerr.msg);
        lb_log(LB_LOG_ERROR, "startup_failed", "takeover: %s; the old data plane keeps serving",
               aerr.msg);
    }
    close(conn);
    if (rc == LB_OK)
        lb_log(LB_LOG_INFO, "takeover_done", "accepting on every socket taken over");
    return rc;
}

/* ---- both sides ----------------------------------------------------------------- */

void upgrade_init(struct upgrade *u, struct ev_loop *loop, struct dp *dp,
                  struct metrics_server *const *metrics, char **argv, const char *path,
                  const char *takeover_path, upgrade_handed_over_fn on_handed_over, void *ctx)
{
    *u = (struct upgrade){.loop = loop,
                          .dp = dp,
                          .metrics = metrics,
                          .on_handed_over = on_handed_over,
                          .ctx = ctx,
                          .path = path,
                          .listen_fd = -1,
                          .conn_fd = -1,
                          .succ_pidfd = -1,
                          .argv = argv,
                          .takeover_path = takeover_path};
    ev_signal_init(&u->sigusr2, on_upgrade_signal, SIGUSR2);
    u->sigusr2.data = u;
    ev_signal_start(loop, &u->sigusr2);
    ev_init(&u->conn_io, on_handover_answer);
    u->conn_io.data = u;
    ev_init(&u->timer, on_handover_timeout);
    u->timer.data = u;
    ssize_t exe_len = readlink("/proc/self/exe", u->exe, sizeof(u->exe) - 1);
    if (exe_len > 0)
        u->exe[exe_len] = '\0';
    else
        snprintf(u->exe, sizeof(u->exe), "%s", argv[0]);
    uint64_t wd_usec = 0;
    if (lb_sd_watchdog_usec(&wd_usec)) {
        ev_timer_init(&u->watchdog, on_watchdog, 0, (double)wd_usec / 2e6);
        u->watchdog.data = u;
        ev_timer_again(loop, &u->watchdog);
    }
}
