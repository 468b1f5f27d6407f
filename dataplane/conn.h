/* dataplane/conn.h: one client connection and the request it is proxying.
 *
 * A connection reads a request head, picks a backend, sends the rewritten head
 * and streams the body upstream, then streams the response back, with
 * back-pressure both ways (a full buffer stops reading its source). An idle
 * keep-alive connection holds no buffer. Worker thread only. */
#ifndef LB_CONN_H
#define LB_CONN_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

struct worker;
struct wview;

/* Takes ownership of accepted socket <fd> from <peer> on frontend
 * <fe_index> of the worker's current view. Never fails loudly: on no memory
 * the socket is closed. */
void conn_accept(struct worker *w, int fd, const struct sockaddr_storage *peer, uint32_t fe_index);

/* After a snapshot swap: idle keep-alive connections move to the newest view
 * at once (and those whose frontend is gone close), so older views and the
 * backend state only they name can be released. */
void conn_views_refresh(struct worker *w);

/* Shutdown: idle connections close now; busy ones close after their
 * current response. */
void conn_drain_all(struct worker *w);

/* Worker exit: closes every connection at once. */
void conn_close_all(struct worker *w);

/* The queued request owning <cw> got its grant (connq_inbox_pop()): it
 * connects, or goes to another backend. Worker thread. */
struct connq_waiter;
void conn_on_grant(struct connq_waiter *cw);

/* Housekeeping (never from inside a connection's callback): frees closed
 * connection objects beyond <keep>. */
void conn_free_list_trim(struct worker *w, uint32_t keep);

#endif
