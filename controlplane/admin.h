/* controlplane/admin.h: the admin API server (HTTP/1.1 + JSON, contract in
 * the admin API v1 document: /health, /metrics, /api/v1/...).
 *
 * Listens on a unix socket (mode 0660; the caller's identity is its peer
 * uid, author "uid:<n>", full access) and optionally on TCP, where every
 * request needs "Authorization: Bearer <token>" from the tokens file (author
 * "token:<name>"; an "ro" token may only GET) or, with a client CA, a client
 * certificate whose name the tokens file maps to a role (author
 * "cert:<name>"). The TCP listener speaks TLS (1.2 or later) unless
 * insecure_http is set, which only a loopback address may use; a TLS
 * handshake not done within the handshake timeout closes the connection.
 * Requests are parsed by the
 * project's HTTP/1 parser (proto/http1.h); keep-alive and pipelining are
 * supported; heads are capped at ADMIN_HEAD_MAX bytes (431), bodies at
 * ADMIN_BODY_MAX (413, then the connection closes); bodies need a
 * Content-Length (a chunked request body is answered 411 and the connection
 * closes); "Expect: 100-continue" is honoured. A connection idle for
 * ADMIN_TIMEOUT_S seconds is closed; above ADMIN_MAX_CONNS connections new
 * ones are closed at once. Every response carries Content-Length.
 *
 * Single-threaded: everything runs on the loop given to admin_new(), the
 * core's loop. */
#ifndef LB_ADMIN_H
#define LB_ADMIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ev_loop;
struct cp;
struct lb_err;
struct admin;

#define ADMIN_HEAD_MAX    (16 * 1024)
#define ADMIN_BODY_MAX    (4 * 1024 * 1024)
#define ADMIN_TIMEOUT_S   30.0
#define ADMIN_MAX_CONNS   256
#define ADMIN_MAX_HEADERS 64
#define ADMIN_COMMENT_MAX 500

/* Default bound on a TLS handshake on the TCP listener. */
#define ADMIN_TLS_HANDSHAKE_S 10.0

/* A TCP source with ADMIN_AUTH_FAILS failed authentications (401) within
 * ADMIN_AUTH_WINDOW_S seconds gets 429 until the window ends. */
#define ADMIN_AUTH_FAILS    10
#define ADMIN_AUTH_WINDOW_S 60

struct admin_config {
    const char *unix_path;      /* required; a stale socket file there is replaced */
    const char *tcp_listen;     /* "ADDR:PORT" ("127.0.0.1:9180", "[::1]:9180"); NULL = none.
                                 * Port 0 picks a free port (see admin_tcp_port()). */
    const char *tokens_file;    /* required with tcp_listen: lines "<name> <token> <rw|ro>",
                                 * and, with tls_client_ca, "cert:<name> - <rw|ro>" (a client
                                 * certificate whose subject CN or a DNS subjectAltName is
                                 * <name>; the first matching line counts); '#' comments;
                                 * refused when its group or others may access it */
    const char *tls_cert;       /* PEM certificate (chain) of the TCP listener, which then
                                 * speaks TLS; required with tcp_listen unless insecure_http */
    const char *tls_key;        /* PEM private key of tls_cert; required with it */
    const char *tls_client_ca;  /* NULL, or PEM CAs: a client may present a certificate they
                                 * issued (one they did not issue fails the handshake);
                                 * without one, bearer tokens still work */
    bool insecure_http;         /* plain HTTP on TCP instead of TLS: only on 127.0.0.0/8 or ::1 */
    double handshake_timeout_s; /* bound on a TLS handshake; 0 = ADMIN_TLS_HANDSHAKE_S */
};

/* Reads the tokens file, binds the listeners and starts serving <cp> on
 * <loop>. <cp> is borrowed and must outlive the server. Returns NULL and
 * fills <err> on failure: LB_EINVAL (bad address, tcp_listen without tokens
 * file, malformed or world-readable tokens file, a live socket or a
 * non-socket at unix_path, tcp_listen with neither tls_cert nor
 * insecure_http, insecure_http on an address that is not loopback, a TLS
 * certificate, key or CA that cannot be loaded, a key that does not match
 * the certificate), LB_ESYS (socket, bind, listen, file read), LB_ENOMEM. Caller owns the result;
 * release with admin_free(). */
struct admin *admin_new(struct ev_loop *loop, struct cp *cp, const struct admin_config *cfg,
                        struct lb_err *err);

/* The bound TCP port, 0 when there is no TCP listener. */
uint16_t admin_tcp_port(const struct admin *a);

/* Whether the TCP listener speaks TLS. */
bool admin_has_tls(const struct admin *a);

/* Re-reads the tokens file (SIGHUP): new requests are checked against the
 * new lines at once, an open mTLS connection keeps the role its
 * certificate's name has in the new file (none if gone). On any error the
 * tokens in use stay. Returns LB_OK with the line count in *<count>, or the
 * error naming the file and line (never a token). */
int admin_tokens_reload(struct admin *a, size_t *count, struct lb_err *err);

/* True when the admin API has a tokens file (a TCP listener). */
bool admin_has_tokens(const struct admin *a);

/* Re-reads the TLS certificate, key and client CA files given to
 * admin_new(): new connections use them, open ones finish with the old.
 * Returns LB_OK (also without a TLS listener), or LB_EINVAL / LB_ENOMEM with
 * <err> filled as admin_new() would; the files in use then stay. */
int admin_tls_reload(struct admin *a, struct lb_err *err);

/* Closes every connection and listener and removes the unix socket file it
 * created. NULL is a no-op. */
void admin_free(struct admin *a);

#endif
