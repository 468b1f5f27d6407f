/* dataplane/metrics_server.h: the Prometheus endpoint on the metrics port.
 * Runs on the main thread's loop; answers GET /metrics and GET /health. */
#ifndef LB_METRICS_SERVER_H
#define LB_METRICS_SERVER_H

#include <ev.h>
#include <sys/socket.h>

struct dp;
struct lb_err;
struct metrics_server;

/* Listens on <addr> and serves <dp>'s counters. <fd>: a hand-over's
 * listening socket (taken over: used if it is bound to <addr>, else closed),
 * or -1 to open one. NULL and <err> on failure. */
struct metrics_server *metrics_server_new(struct ev_loop *loop, struct dp *dp,
                                          const struct sockaddr_storage *addr, socklen_t len,
                                          int fd, struct lb_err *err);

/* The listening socket, for a hand-over (main thread). */
int metrics_server_fd(const struct metrics_server *m);

/* After a hand-over: accepts no more (the successor does, on the same
 * socket), answers the scrapes in progress, keeps the socket open until
 * metrics_server_free(). NULL is a no-op. */
void metrics_server_stop_accepting(struct metrics_server *m);
void metrics_server_free(struct metrics_server *m);

#endif
