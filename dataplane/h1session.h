/* dataplane/h1session.h: an HTTP/1.1 client connection (the session).
 *
 * A session reads request heads one after the other on one connection
 * (keep-alive, pipelined bytes kept for the next), answers what is wrong
 * with them itself (4xx, then a close), and hands each good one to an
 * exchange (exchange.h), for which it writes the response in HTTP/1.1:
 * status line, fields, 100 Continue, interim answers, chunked or dechunked
 * framing for HTTP/1.0 clients, and the keep-alive decision. An idle
 * keep-alive connection holds no buffer. Worker thread only. */
#ifndef LB_H1SESSION_H
#define LB_H1SESSION_H

#include <stdint.h>
#include <sys/socket.h>

struct worker;

/* Takes ownership of accepted socket <fd> from <peer> on frontend
 * <fe_index> of the worker's current view. Never fails loudly: on no memory
 * the socket is closed. */
void h1session_accept(struct worker *w, int fd, const struct sockaddr_storage *peer,
                      uint32_t fe_index);

/* After a snapshot swap: idle keep-alive connections move to the newest view
 * at once (and those whose frontend is gone close), so older views and the
 * backend state only they name can be released. */
void h1session_views_refresh(struct worker *w);

/* Shutdown: idle connections close now (after a hand-over, when
 * w->drain_idle_s > 0: once idle that long, a request that comes meanwhile
 * being answered with Connection: close); busy ones close after their
 * current response. */
void h1session_drain_all(struct worker *w);

/* Worker exit: closes every connection at once. */
void h1session_close_all(struct worker *w);

/* Housekeeping (never from inside a connection's callback): frees closed
 * connection objects beyond <keep>. */
void h1session_free_list_trim(struct worker *w, uint32_t keep);

#endif
