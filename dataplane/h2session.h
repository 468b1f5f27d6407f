/* dataplane/h2session.h: an HTTP/2 client connection (RFC 9113) on
 * libnghttp2.
 *
 * nghttp2 does the framing, HPACK, flow-control bookkeeping and the
 * protocol's own validation; this module feeds it the client's bytes,
 * writes what it produces through the connection's transport, and makes
 * every request stream one exchange (exchange.h), exactly as h1session makes
 * every HTTP/1 request one: the stream's header list becomes an HTTP/1.1
 * head (h2req.h) parsed by the strict HTTP/1 parser, DATA feeds the
 * exchange's request body, and the exchange's response goes out as HEADERS
 * and DATA. Windows are given back only as request bytes reach the backend,
 * so a slow backend holds back its own stream, never the connection.
 *
 * Each connection is policed for the known HTTP/2 attacks (rapid reset,
 * CONTINUATION and control-frame floods, empty DATA, oversized header
 * lists, streams beyond the limits, readers that stop reading): an abusive
 * one gets GOAWAY ENHANCE_YOUR_CALM and is closed, counted in
 * lb_http2_abuse_total. Worker thread only. */
#ifndef LB_H2SESSION_H
#define LB_H2SESSION_H

#include <stdint.h>
#include <sys/socket.h>

struct endpoint;
struct worker;

/* The client preface's first bytes (prior-knowledge h2c starts with them). */
#define H2_PREFACE     "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define H2_PREFACE_LEN 24

/* Takes over client connection <ep> (its transport, socket and the bytes it
 * read, which start with the client preface) from an HTTP/1 session: <ep> is
 * left without socket or buffer. <peer> is the client (after any PROXY
 * header), <local> the address it reached or NULL, <fe_index> its frontend
 * in the worker's current view. On failure (no memory) the connection is
 * closed. */
void h2session_take(struct worker *w, struct endpoint *ep, const struct sockaddr_storage *peer,
                    const struct sockaddr_storage *local, uint32_t fe_index);

/* Shutdown: every connection gets GOAWAY naming the last stream it took;
 * streams in flight finish, then the connection closes. */
void h2session_drain_all(struct worker *w);

/* Worker exit: closes every connection at once. */
void h2session_close_all(struct worker *w);

/* Once per loop turn (before the loop polls again): runs the connections
 * whose streams were woken by their backends since the last turn. */
void h2session_run_pending(struct worker *w);

/* Housekeeping (never from inside a connection's callback): frees closed
 * connection objects. */
void h2session_free_list_trim(struct worker *w);

#endif
