/* dataplane/args.h: lb-dataplane's command line: the options, what each
 * accepts, what they say together, and --help. */
#ifndef LB_ARGS_H
#define LB_ARGS_H

#include <limits.h>
#include <stdbool.h>
#include <sys/socket.h>

#include "lb_log.h"

#define ARGS_MAX_WORKERS 256

/* What the command line asked for. Strings are borrowed from argv. */
struct args {
    const char *snapshot_path; /* --snapshot */
    const char *control;       /* --control */
    const char *state_dir;     /* --state-dir */
    const char *feed_key_path; /* --feed-key, <feed_key_cred>, or NULL: the feed is not sealed */
    char feed_key_cred[512];   /* the systemd credential feed.key (lb_cred.h), when no --feed-key */
    bool feed_insecure;        /* --feed-insecure */
    bool metrics_forced;       /* --metrics-listen given */
    bool metrics_off;          /* --metrics-listen off */
    struct sockaddr_storage metrics_listen; /* --metrics-listen ADDR:PORT */
    socklen_t metrics_listen_len;
    char node_id[256];               /* --node-id; empty: not given */
    unsigned n_workers;              /* --workers, or one per CPU */
    enum lb_log_level log_level;     /* --log-level, or LB_LOG_INFO */
    bool log_level_forced;           /* --log-level given: the snapshot's does not apply */
    const char *handover_path;       /* --handover-socket, or <state-dir>/handover.sock; NULL */
    char handover_default[PATH_MAX]; /* ... the latter's storage */
    bool handover_off;               /* --handover-socket off */
    const char *takeover_path;       /* --takeover */
};

/* Reads <argv> (with getopt_long(), which may move its operands last) into
 * *<a>, zeroed first. --bind-address takes
 * effect at once (snapshot_bind_address()); a missing --feed-key under
 * --control is the systemd credential feed.key when there is one. Returns -1
 * when the process goes on; else its exit status: 0 after --help or
 * --version (printed on stdout), 2 for a bad command line (one line on
 * stderr naming the option and what it accepts). Main thread, before any
 * other thread runs (getopt's state is global). */
int args_parse(struct args *a, int argc, char **argv);

#endif
