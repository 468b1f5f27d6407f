/* dataplane/upgrade.h: replacing a running lb-dataplane with a new one
 * without losing a connection, and the systemd notifications that go with
 * it (handover.h is the wire protocol).
 *
 * The old side listens on the hand-over socket. SIGUSR2 starts the binary
 * installed at our path (a new version, after an upgrade) with our arguments
 * and --takeover, as a grandchild so that the service manager adopts it. A
 * successor that connects (the same user, or root) gets every listening
 * socket, the ticket keys, the snapshot and the runtime state; once it
 * answers ready, this side names it the unit's main process (MAINPID=,
 * READY=1), hands it the watchdog, and drains. Any failure leaves this side
 * serving, and the unit, "reloading" since the SIGUSR2, running again.
 *
 * The new side (--takeover) connects, receives all that, starts its workers
 * on the sockets, and answers.
 *
 * Everything here runs on the main thread, in the main loop. */
#ifndef LB_UPGRADE_H
#define LB_UPGRADE_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <ev.h>

#include "handover.h"

struct dp;
struct lb_err;
struct metrics_server;
struct snap;

/* The successor accepts on every socket: the caller drains and exits. */
typedef void (*upgrade_handed_over_fn)(void *ctx);

struct upgrade {
    struct ev_loop *loop;                  /* the main loop */
    struct dp *dp;                         /* what a successor gets; its workers run once
                                            * dp->n_workers > 0 */
    struct metrics_server *const *metrics; /* the caller's metrics listener (or NULL
                                            * there): its socket goes too */
    upgrade_handed_over_fn on_handed_over;
    void *ctx;         /* ... its argument */
    ev_timer watchdog; /* pings systemd's watchdog while it is this process's */
    /* the old side: */
    const char *path;   /* the hand-over socket, or NULL: none */
    int listen_fd;      /* listening on <path>, or -1 */
    ino_t ino;          /* its file, to unlink only our own at exit */
    ev_io listen_io;    /* ... a successor connects */
    int conn_fd;        /* the successor being handed the sockets, or -1 */
    ev_io conn_io;      /* ... its answer */
    ev_timer timer;     /* ... its time to answer */
    pid_t peer_pid;     /* ... its pid (SO_PEERCRED), the unit's next main pid */
    bool reloading;     /* RELOADING=1 told to systemd; READY=1 ends it */
    ev_signal sigusr2;  /* starts a successor: our binary, --takeover */
    pid_t succ_pid;     /* the successor SIGUSR2 started, until it took over or died */
    int succ_pidfd;     /* ... its pidfd, or -1 */
    ev_io succ_io;      /* ... readable once it exited */
    char exe[PATH_MAX]; /* this binary's path at start (/proc/self/exe) */
    char **argv;        /* our arguments, for the successor */
    /* the new side: */
    const char *takeover_path;             /* --takeover, or NULL */
    struct handover_state inherit;         /* what came, until the workers took it */
    struct Lb__V1__HandoverRuntime *carry; /* its runtime state, until the workers run */
    void **carry_refs;                     /* ... the breakers it set, held until then */
    size_t carry_limits;                   /* ... the rate limits it set */
};

/* Sets up <u> (the caller's memory) on <loop>, borrowing <dp>, <metrics>,
 * <argv>, <path> (NULL: no hand-over socket) and <takeover_path> (NULL: not a
 * successor) for as long as <u> lives: watches SIGUSR2, notes this binary's
 * path (not at SIGUSR2, by when it may name a newer one, which is the point),
 * and pings systemd's watchdog when it asks for that. Listens on nothing
 * yet (upgrade_listen()). */
void upgrade_init(struct upgrade *u, struct ev_loop *loop, struct dp *dp,
                  struct metrics_server *const *metrics, char **argv, const char *path,
                  const char *takeover_path, upgrade_handed_over_fn on_handed_over, void *ctx);

/* Listens on <u->path>, replacing whatever file is there; logs why a
 * successor cannot take over when that fails. */
void upgrade_listen(struct upgrade *u);

/* Stops listening for successors (and forgets one in progress). The file
 * goes too, unless it is a successor's by now. */
void upgrade_close(struct upgrade *u);

/* --takeover: connects to the running data plane and receives its sockets
 * (every worker accepts on each; see dp_listeners_acquire), ticket keys (into
 * u->dp->tickets), runtime state (the breakers set in u->dp->backends) and
 * snapshot (*<snap>, the caller's). Keeps systemd's watchdog when it was
 * handed on. *<conn> stays open for upgrade_takeover_answer(). Returns
 * LB_OK, LB_ESYS or LB_EPROTO; then or else, upgrade_takeover_end() follows. */
int upgrade_takeover(struct upgrade *u, int *conn, struct snap **snap, struct lb_err *err);

/* The socket taken over under <key> (the caller's from now), or -1. */
int upgrade_take_fd(struct upgrade *u, const char *key);

/* Sets the global rate-limit state that came with a takeover on <snap>,
 * bound but not served yet. No-op when none came. */
void upgrade_takeover_limits(struct upgrade *u, const struct snap *snap);

/* The workers run (<ok>) or will not: closes the sockets that came and no
 * one took (logging them when <ok>) and lets go of the runtime state. */
void upgrade_takeover_end(struct upgrade *u, bool ok);

/* Tells the running data plane over <conn> (closed here) how the takeover
 * went (<rc>, <err>). It stops accepting once it reads a success: say it
 * only when every socket has its accepting worker. Returns <rc>, or the
 * failure to answer (printed and logged). */
int upgrade_takeover_answer(int conn, int rc, const struct lb_err *err);

#endif
