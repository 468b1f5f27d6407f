/* dataplane/rewrite.h: the request head a backend gets (README "Proxying" and
 * "TLS").
 *
 * One pure function writes it from a parsed request: no worker, connection,
 * loop or global state, so that any client protocol can drive it and every
 * rule has a unit test. */
#ifndef LB_REWRITE_H
#define LB_REWRITE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http1.h"

#define REWRITE_NOSPACE (-1) /* the head does not fit in the caller's buffer */
#define REWRITE_ID_LEN  24   /* a generated request id: 24 lowercase hex digits */

/* What a TLS client proved with its certificate (see struct tls_peer). The
 * strings are NUL-terminated and borrowed for the call. */
struct rewrite_identity {
    bool verified;           /* the chain verified: "yes", else "no" */
    const char *subject;     /* RFC 2253 subject */
    const char *san_uri;     /* first SAN URI; "" sends no X-Client-Cert-Uri */
    const char *fingerprint; /* hex SHA-256 of the certificate */
};

/* One request to rewrite. Everything is borrowed for the call. */
struct rewrite_request {
    const struct http1_msg *msg;             /* a head http1_parse_request() accepted */
    const char *client_ip;                   /* the client's address, NUL-terminated */
    bool tls;                                /* came over TLS: X-Forwarded-Proto https */
    const struct rewrite_identity *identity; /* client certificate, or NULL for none */
    uint64_t now_ms;                         /* wall clock; its low 32 bits end a new id */
    uint64_t *rng;                           /* id generator state (xorshift64*, not 0);
                                              * advanced only when an id is generated */
    bool upgrade; /* a protocol upgrade to forward (exchange_start decided): the
                   * Upgrade field goes along, with "Connection: upgrade" */
};

/* An upper bound of the bytes rewrite_head() writes for <rq>: a buffer this
 * large always fits. Pure; any thread; hot path: never allocates. */
size_t rewrite_head_max(const struct rewrite_request *rq);

/* Writes the head to send upstream for <rq> into <out>[0..cap):
 * - the request line as received (HTTP/1.0 stays 1.0), but an absolute-form
 *   target goes in origin-form (RFC 9112 §3.2.1): "GET http://a/p?q" as
 *   "GET /p?q", "http://a?q" as "/?q", "http://a" as "/" ("*" for OPTIONS);
 * - for an absolute-form target, "Host: <its authority>" (RFC 9112 §3.2.2:
 *   it replaces the Host field, which is not sent);
 * - every field in order and as received, except hop-by-hop ones (marked
 *   HTTP1_HF_HOP by the parser: Connection, Keep-Alive, Proxy-Connection, TE,
 *   Upgrade, Trailer, Expect and every field a Connection header names),
 *   Content-Length, X-Forwarded-Proto, X-Forwarded-Host, and any
 *   X-Client-Cert-* field in any case, with '_' for '-' too (only lb says who
 *   the client is);
 * - X-Forwarded-For: the client's lines joined into one, at the first one's
 *   place, with ", <client_ip>" appended; "X-Forwarded-For: <client_ip>"
 *   after the fields when the client sent none;
 * - Content-Length with the parsed length for a LENGTH body (a chunked body
 *   keeps its Transfer-Encoding, which is never hop-by-hop);
 * - X-Forwarded-Proto: http or https;
 * - X-Client-Cert-Verified, -Subject, -Uri (when there is one) and -Sha256
 *   from <identity>, each control byte replaced by '?';
 * - X-Forwarded-Host with the Host value (the absolute-form target's
 *   authority, when it has one), when there is a non-empty one;
 * - X-Request-Id: the client's is kept (the last one, when it sent several);
 *   when it sent none, or an empty one, a new id is generated from <rng> and
 *   <now_ms> and added;
 * - "Connection: keep-alive" for an HTTP/1.0 request, so that the backend
 *   connection can be reused;
 * - with <upgrade>: the Upgrade field(s) as received and "Connection:
 *   upgrade" (the only Connection option that goes upstream);
 * - the empty line.
 * Returns the head's length, or REWRITE_NOSPACE when it does not fit in <cap>
 * bytes (<out> then holds garbage, <*rng> may have advanced). On success
 * <*req_id> is the request id used: a slice of the parsed request or of <out>,
 * valid as long as they are. Pure but for <*rng>; any thread; hot path: never
 * allocates, copies each byte once. */
int rewrite_head(const struct rewrite_request *rq, char *out, size_t cap,
                 struct http1_slice *req_id);

#endif
