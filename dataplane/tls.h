/* dataplane/tls.h: TLS termination (OpenSSL 3) behind the transport interface.
 *
 * A struct tls_ctx is built per TLS frontend from the snapshot's Tls message,
 * off the hot path; it is immutable, refcounted and shared by every worker.
 * tls_transport_init() then turns an accepted socket into a transport whose
 * first read/writev calls run the server handshake.
 *
 * What a context does:
 *  - TLS 1.2 and 1.3 (min_version "TLSv1.2" default or "TLSv1.3"), no
 *    renegotiation, no compression, server cipher preference; ciphers default
 *    to ECDHE with AES-GCM or ChaCha20-Poly1305, groups to X25519:P-256:P-384.
 *  - ALPN: selects "http/1.1" when offered; a client offering only other
 *    protocols (h2 alone) is refused with a no_application_protocol alert;
 *    a client offering no ALPN is served.
 *  - SNI: among certificates[], exact names first (the certificate's SAN DNS
 *    names, its CN when it has none, and its extra sni[] names; case does not
 *    matter), then wildcards ("*.example.com" matches exactly one label).
 *    Every certificate carrying the best-matching name is installed, one per
 *    key type (RSA and ECDSA for one name: OpenSSL picks by the client's
 *    signature algorithms). No SNI or no match: certificates[0].
 *  - Client certificates by client_auth: 0 none; 1 requested, never
 *    verified; 2 required, never verified; 3 verified when given; 4 required
 *    and verified against ca_pem (with crl_pem, the leaf is checked against
 *    the CRLs). ca_pem's subjects are sent as the acceptable CA list.
 *  - ClientVerify, applied to every presented client certificate (all modes
 *    but 0): when spki_sha256_pins is non-empty, the SHA-256 of the
 *    certificate's SubjectPublicKeyInfo must be one of them; when any of
 *    allowed_cn / allowed_san_dns / allowed_san_uri is non-empty, the subject
 *    CN, one SAN DNS name or one SAN URI must appear in its list (exact,
 *    case-sensitive). Failing either aborts the handshake with an alert.
 *    A client without certificate is governed by client_auth alone.
 *  - Resumption: stateless tickets encrypted with the shared tls_tickets
 *    store (keys rotate every ticket_rotation_s, default 3600; the previous
 *    key still decrypts for one period), and the OpenSSL server session cache
 *    of the context (session ids, TLS 1.2 clients without tickets). Sessions
 *    are bound to a SHA-256 of the whole Tls message: a reload with the same
 *    config resumes, a changed config or another frontend does not.
 *
 * The client side (TLS to backends): a struct tls_client_ctx per backend's
 * TLS settings, refcounted and shared by every worker, and
 * tls_client_transport_init() over a connected or connecting socket. It
 * offers TLS 1.2 and 1.3 (OpenSSL's default suites), ALPN "http/1.1", no
 * renegotiation, always verifies the server's chain and name, and resumes
 * sessions from a cache inside the context.
 */
#ifndef LB_TLS_H
#define LB_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lb.pb-c.h"
#include "transport.h"

struct lb_err;
struct tls_client_ctx;
struct tls_ctx;
struct tls_tickets;

/* Handshake versions counted per context. */
enum tls_version {
    TLS_VER_12 = 0,
    TLS_VER_13,
    TLS_VER_COUNT,
};

/* Why a handshake failed; tls_error_name() gives the metric label. */
enum tls_error {
    TLS_ERR_PROTOCOL = 0,     /* "protocol": malformed or unexpected messages */
    TLS_ERR_VERSION,          /* "version": no common protocol version */
    TLS_ERR_NO_SHARED_CIPHER, /* "no_shared_cipher": no common suite or group */
    TLS_ERR_ALPN,             /* "alpn": ALPN offered without http/1.1 */
    TLS_ERR_NO_CLIENT_CERT,   /* "no_client_cert": client_auth 2/4 and none given */
    TLS_ERR_VERIFY_FAILED,    /* "verify_failed": chain does not verify */
    TLS_ERR_CERT_EXPIRED,     /* "cert_expired": client certificate out of its validity */
    TLS_ERR_CERT_REVOKED,     /* "cert_revoked": listed in crl_pem */
    TLS_ERR_PIN_MISMATCH,     /* "pin_mismatch": SPKI not among the pins */
    TLS_ERR_IDENTITY,         /* "identity_not_allowed": CN/SAN not in the allow-lists */
    TLS_ERR_PEER_ALERT,       /* "peer_alert": the client aborted with an alert */
    TLS_ERR_PLAIN_HTTP,       /* "plain_http": cleartext HTTP sent to a TLS port */
    TLS_ERR_EOF,              /* "eof": the client closed during the handshake */
    TLS_ERR_IO,               /* "io": a socket error */
    TLS_ERR_TIMEOUT,          /* "timeout": see tls_transport_note_timeout() */
    TLS_ERR_INCOMPLETE,       /* "incomplete": released mid-handshake otherwise */
    TLS_ERR_COUNT,
};

/* Counters of one context (server or client), summed over every worker (relaxed atomics: each
 * value is exact, the set is not a snapshot taken at one instant). */
struct tls_stats {
    uint64_t handshakes[TLS_VER_COUNT]; /* completed handshakes by version */
    uint64_t full;                      /* completed without resumption */
    uint64_t resumed;                   /* completed by ticket or session id */
    uint64_t errors[TLS_ERR_COUNT];     /* failed handshakes by reason */
};

/* One certificate of a context, for the expiry metric. */
struct tls_cert_info {
    const char *name;  /* Certificate.name, or "certificates[i]" when empty;
                          valid while the context lives */
    int64_t not_after; /* unix seconds */
};

/* What the client proved, for the headers sent to backends. Strings are
 * NUL-terminated and truncated to their arrays; "" when absent. */
struct tls_peer {
    bool has_cert;        /* the client presented a certificate */
    bool verified;        /* ... and its chain verified (client_auth 3 or 4) */
    bool resumed;         /* the session was resumed */
    const char *version;  /* "TLSv1.2" or "TLSv1.3" (static storage) */
    char subject[512];    /* RFC 2253 subject of the client certificate */
    char san_uri[512];    /* its first SAN URI (a SPIFFE id, say) */
    char fingerprint[65]; /* lowercase hex SHA-256 of its DER */
    char sni[256];        /* server name the client asked for */
};

/* Builds a context from <cfg> (PEM bytes in memory). <tickets> is the
 * process's key store (the context keeps a reference); NULL gives the context
 * a private store, so its tickets survive no reload. Validates every field;
 * on failure returns NULL and fills <err> (LB_EINVAL naming the field, e.g.
 * "tls.certificates[1].key_pem: the key does not match the certificate";
 * LB_ENOMEM). The caller holds one reference. Any thread, never a worker's
 * hot path (parses keys, builds stores). */
struct tls_ctx *tls_ctx_new(const Lb__V1__Tls *cfg, struct tls_tickets *tickets,
                            struct lb_err *err);

/* Takes one more reference; returns <ctx>. Any thread. */
struct tls_ctx *tls_ctx_ref(struct tls_ctx *ctx);

/* Drops a reference; the last one frees the context. Transports hold their
 * own references, so a context may be unreffed while connections still use
 * it. NULL is a no-op. Any thread. */
void tls_ctx_unref(struct tls_ctx *ctx);

/* Copies the context's counters into <out>. Any thread. */
void tls_ctx_stats(struct tls_ctx *ctx, struct tls_stats *out);

/* <ctx>, new and not yet handed to any connection, counts from now on into
 * the counters of <from> (which it replaces), so a frontend's handshake
 * counters stay monotonic across certificate reloads; connections still on
 * <from> count there too. */
void tls_ctx_continue_counters(struct tls_ctx *ctx, const struct tls_ctx *from);

/* Number of certificates (= cfg->n_certificates). */
size_t tls_ctx_cert_count(const struct tls_ctx *ctx);

/* Fills <out> for certificate <i> (< tls_ctx_cert_count()). Returns LB_OK
 * or LB_EINVAL when <i> is out of range. Any thread. */
int tls_ctx_cert_info(const struct tls_ctx *ctx, size_t i, struct tls_cert_info *out);

/* Metric labels: "TLSv1.2"/"TLSv1.3" and the names listed at enum tls_error;
 * "unknown" out of range. */
const char *tls_version_name(enum tls_version v);
const char *tls_error_name(enum tls_error e);

/* Makes <t> a server-side TLS transport over the non-blocking socket <fd>,
 * keeping a reference to <ctx> until release. Uses t->impl. Returns LB_OK,
 * or LB_ENOMEM (filling <err>) and leaves <t> unusable; the fd stays the
 * caller's either way.
 *
 * Behaviour of the ops (all on the connection's thread):
 *  - read/writev first complete the handshake. TRANSPORT_AGAIN means wait
 *    until the socket is readable, TRANSPORT_WANT_WRITE until it is writable,
 *    whichever call returned it: a read may need writability and a writev
 *    readability.
 *  - read returns up to <len> decrypted bytes, 0 after the client's
 *    close_notify, TRANSPORT_ERROR on failure: t->err is EPROTO for TLS
 *    errors (failed handshake included), ECONNABORTED when the peer closed
 *    TCP without close_notify (a truncation attack cannot be told apart from
 *    a sloppy client, so it is an error for the read side), or the errno.
 *    When read fills <len> entirely, OpenSSL may hold more decrypted bytes
 *    the socket no longer signals: read again before waiting.
 *  - writev returns bytes taken (> 0, possibly fewer than offered), 0 for
 *    empty input, or a TRANSPORT_ code. Small leading iovecs are coalesced
 *    into one record. After TRANSPORT_AGAIN/WANT_WRITE the next writev must
 *    start with the same unsent bytes and offer at least as many (the data
 *    may have moved); offering fewer fails with t->err EINVAL.
 *  - shutdown_write sends close_notify (once, best effort, never blocks) and
 *    then FIN if the alert left; before the handshake ends just FIN.
 *  - release frees the SSL and drops the context reference; a handshake
 *    still in progress is counted as "timeout" or "incomplete". */
int tls_transport_init(struct transport *t, int fd, struct tls_ctx *ctx, struct lb_err *err);

/* ALPN of the contexts made by tls_ctx_new(): "h2" is offered before
 * "http/1.1" when <on> (set before the context is shared). */
void tls_ctx_set_alpn_h2(struct tls_ctx *ctx, bool on);
bool tls_ctx_alpn_h2(const struct tls_ctx *ctx);

/* True once the handshake of TLS transport <t> selected ALPN "h2". */
bool tls_transport_alpn_h2(struct transport *t);

/* Advances the handshake of TLS transport <t> without reading data. Returns
 * 1 once it is complete (also on later calls), TRANSPORT_AGAIN,
 * TRANSPORT_WANT_WRITE or TRANSPORT_ERROR (failed: counted once, t->err set). */
ssize_t tls_transport_handshake(struct transport *t);

/* Marks that the caller gives up on the handshake of <t> because it took too
 * long: the release that follows counts reason "timeout". No-op once the
 * handshake ended. */
void tls_transport_note_timeout(struct transport *t);

/* Fills <out> once the handshake of TLS transport <t> completed. Returns
 * LB_OK, or LB_EINVAL before (or after a failed) handshake, LB_ENOMEM.
 * Allocates a little: call once per connection, not per request. */
int tls_peer_info(struct transport *t, struct tls_peer *out);

/* What tls_peer_info() says of <t> when its client presented a certificate,
 * made on the first call and kept for the connection's life (the certificate
 * cannot change: no renegotiation, no post-handshake authentication), so
 * that a request on a kept-alive connection costs no certificate parsing.
 * NULL without a client certificate (no allocation then), before the
 * handshake completed, or on no memory. */
const struct tls_peer *tls_peer_identity(struct transport *t);

/* Why TLS transport <t> (server or client side) failed, in one sentence for
 * logs: "certificate verify failed: hostname mismatch", "certificate verify
 * failed: unable to get local issuer certificate", "handshake failed: tlsv1
 * alert unknown ca", "handshake failed: the peer closed the connection"...
 * Set by the failing handshake, read or writev; "" while nothing failed.
 * Valid until the next call on <t> or its release. Connection's thread. */
const char *tls_transport_error(struct transport *t);

/* ---- client side --------------------------------------------------------- */

/* Builds a client context for one backend's TLS settings. The server must
 * present a chain that verifies against <ca_pem> (<ca_len> bytes of PEM
 * certificates, one or more; <ca_len> 0 = the system store: OpenSSL's
 * default paths, /etc/ssl/certs on Debian, overridable with SSL_CERT_FILE /
 * SSL_CERT_DIR). TLS 1.2 minimum, ALPN http/1.1, no renegotiation.
 * Sessions: the context keeps up to 16 resumable sessions, one per
 * (sni, verify_name) pair, the least recently stored evicted first; a
 * reconnect with the same pair offers the stored session (TLS 1.2 session
 * id or ticket, TLS 1.3 ticket), so resumption never skips the name check
 * of another name. Returns NULL and fills <err> on failure: LB_EINVAL with
 * a message starting "ca_pem: " (the caller prefixes "backends[i]."),
 * LB_ENOMEM. The caller holds one reference. Any thread, off the hot path
 * (parses certificates). */
struct tls_client_ctx *tls_client_ctx_new(const uint8_t *ca_pem, size_t ca_len, struct lb_err *err);

/* Takes one more reference; returns <ctx>. Any thread. */
struct tls_client_ctx *tls_client_ctx_ref(struct tls_client_ctx *ctx);

/* Drops a reference; the last one frees the context and its sessions.
 * Transports hold their own references. NULL is a no-op. Any thread. */
void tls_client_ctx_unref(struct tls_client_ctx *ctx);

/* Copies the client context's counters into <out>: handshakes by version,
 * full/resumed, errors by reason (a server certificate that does not verify
 * or does not match the name counts "verify_failed", an expired one
 * "cert_expired", a server alert "peer_alert", a reset "io", a close "eof";
 * "alpn", "no_client_cert", "pin_mismatch", "identity_not_allowed" and
 * "plain_http" stay 0). Any thread. */
void tls_client_ctx_stats(struct tls_client_ctx *ctx, struct tls_stats *out);

/* Makes <t> a client-side TLS transport over the non-blocking socket <fd>,
 * connected or still connecting, keeping a reference to <ctx> until release.
 * <sni> (NULL or "" = none; an IP literal is never sent, per RFC 6066) is
 * the server name sent in the ClientHello. <verify_name> is what the server
 * certificate must match: a host name (SAN DNS names, wildcards on one
 * whole label; CN only without SAN DNS names) or an IPv4/IPv6 literal
 * without brackets (SAN IP addresses); NULL or "" = <sni>. Both are borrowed
 * for the call, at most 255 printable characters without spaces.
 * Returns LB_OK, or LB_EINVAL ("sni: ..." / "verify_name: ...", also when
 * both are empty: verification is never skipped) or LB_ENOMEM, filling
 * <err> and leaving <t> unusable; the fd stays the caller's either way.
 * Any thread; the transport then belongs to the connection's thread.
 *
 * The ops behave as listed at tls_transport_init(), with the roles swapped:
 * the first read/writev (or tls_transport_handshake()) sends the
 * ClientHello; a server certificate that does not verify fails the
 * handshake with TRANSPORT_ERROR, t->err EPROTO, the reason in
 * tls_transport_error(). read returns 0 after the server's close_notify.
 * tls_transport_note_timeout() and tls_peer_info() work as on the server
 * side (tls_peer_info() then describes the server: its certificate, the
 * SNI sent, "verified" true once the handshake succeeded). */
int tls_client_transport_init(struct transport *t, int fd, struct tls_client_ctx *ctx,
                              const char *sni, const char *verify_name, struct lb_err *err);

#endif
