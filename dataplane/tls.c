/* dataplane/tls.c: the per-connection TLS transport (handshake, reads and
 * writes with their want-read/want-write turns, close_notify, failure
 * reasons and counters) over the contexts of tls_ctx.c and tls_client.c. */
#include "tls_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <arpa/inet.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "lb_err.h"

#define TLS_RECORD   16384 /* largest plaintext per record */
#define TLS_NAME_MAX 255   /* longest SNI or verified name accepted */

static const char *const error_names[TLS_ERR_COUNT] = {
    [TLS_ERR_PROTOCOL] = "protocol",
    [TLS_ERR_VERSION] = "version",
    [TLS_ERR_NO_SHARED_CIPHER] = "no_shared_cipher",
    [TLS_ERR_ALPN] = "alpn",
    [TLS_ERR_NO_CLIENT_CERT] = "no_client_cert",
    [TLS_ERR_VERIFY_FAILED] = "verify_failed",
    [TLS_ERR_CERT_EXPIRED] = "cert_expired",
    [TLS_ERR_CERT_REVOKED] = "cert_revoked",
    [TLS_ERR_PIN_MISMATCH] = "pin_mismatch",
    [TLS_ERR_IDENTITY] = "identity_not_allowed",
    [TLS_ERR_PEER_ALERT] = "peer_alert",
    [TLS_ERR_PLAIN_HTTP] = "plain_http",
    [TLS_ERR_EOF] = "eof",
    [TLS_ERR_IO] = "io",
    [TLS_ERR_TIMEOUT] = "timeout",
    [TLS_ERR_INCOMPLETE] = "incomplete",
};

const char *tls_error_name(enum tls_error e)
{
    return LB_ENUM_NAME(error_names, e, "unknown");
}

const char *tls_version_name(enum tls_version v)
{
    static const char *const names[TLS_VER_COUNT] = {
        [TLS_VER_12] = "TLSv1.2",
        [TLS_VER_13] = "TLSv1.3",
    };
    return LB_ENUM_NAME(names, v, "unknown");
}

static void count(_Atomic uint64_t *c)
{
    atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

static void counters_get(struct tls_counters *c, struct tls_stats *out)
{
    for (int i = 0; i < TLS_VER_COUNT; i++)
        out->handshakes[i] = atomic_load_explicit(&c->handshakes[i], memory_order_relaxed);
    out->full = atomic_load_explicit(&c->full, memory_order_relaxed);
    out->resumed = atomic_load_explicit(&c->resumed, memory_order_relaxed);
    for (int i = 0; i < TLS_ERR_COUNT; i++)
        out->errors[i] = atomic_load_explicit(&c->errors[i], memory_order_relaxed);
}

void tls_ctx_stats(struct tls_ctx *ctx, struct tls_stats *out)
{
    counters_get(ctx->cnt, out);
}

void tls_client_ctx_stats(struct tls_client_ctx *ctx, struct tls_stats *out)
{
    counters_get(&ctx->cnt, out);
}

/* ---- the transport ----------------------------------------------------- */

static enum tls_error classify(const struct tls_conn *c, int ssl_error, int sys_errno)
{
    if (c->reason >= 0)
        return (enum tls_error)c->reason;
    if (ssl_error == SSL_ERROR_SYSCALL)
        return sys_errno ? TLS_ERR_IO : TLS_ERR_EOF;
    if (ssl_error == SSL_ERROR_ZERO_RETURN)
        return TLS_ERR_EOF;
    unsigned long e = ERR_peek_last_error();
    if (ERR_GET_LIB(e) != ERR_LIB_SSL)
        return TLS_ERR_PROTOCOL;
    int r = ERR_GET_REASON(e);
    switch (r) {
    case SSL_R_UNEXPECTED_EOF_WHILE_READING:
        return TLS_ERR_EOF;
    case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
        return TLS_ERR_NO_CLIENT_CERT;
    case SSL_R_UNSUPPORTED_PROTOCOL:
    case SSL_R_WRONG_VERSION_NUMBER:
    case SSL_R_VERSION_TOO_LOW:
    case SSL_R_VERSION_TOO_HIGH:
    case SSL_R_NO_PROTOCOLS_AVAILABLE:
        return TLS_ERR_VERSION;
    case SSL_R_NO_SHARED_CIPHER:
    case SSL_R_NO_SHARED_GROUPS:
    case SSL_R_NO_SUITABLE_SIGNATURE_ALGORITHM:
    case SSL_R_NO_SHARED_SIGNATURE_ALGORITHMS:
        return TLS_ERR_NO_SHARED_CIPHER;
    case SSL_R_HTTP_REQUEST:
    case SSL_R_HTTPS_PROXY_REQUEST:
        return TLS_ERR_PLAIN_HTTP;
    case SSL_R_CERTIFICATE_VERIFY_FAILED:
        return TLS_ERR_VERIFY_FAILED;
    default:
        if (r >= SSL_AD_REASON_OFFSET && r < SSL_AD_REASON_OFFSET + 256)
            return TLS_ERR_PEER_ALERT;
        return TLS_ERR_PROTOCOL;
    }
}

static void conn_fail(struct tls_conn *c, enum tls_error reason)
{
    c->state = TLS_CONN_FAILED;
    count(&c->cnt->errors[reason]);
}

/* The failure of a handshake in words, for logs: read before the OpenSSL
 * error queue is cleared. */
static void describe(struct tls_conn *c, enum tls_error reason, int ssl_error, int sys)
{
    long v = SSL_get_verify_result(c->ssl);
    if (reason == TLS_ERR_PIN_MISMATCH || reason == TLS_ERR_IDENTITY) {
        snprintf(c->why, sizeof(c->why), "client certificate refused: %s", tls_error_name(reason));
        return;
    }
    if (v != X509_V_OK) {
        snprintf(c->why, sizeof(c->why), "certificate verify failed: %s",
                 X509_verify_cert_error_string(v));
        return;
    }
    if (ssl_error == SSL_ERROR_SYSCALL || ssl_error == SSL_ERROR_ZERO_RETURN) {
        if (sys)
            snprintf(c->why, sizeof(c->why), "handshake failed: %s", strerror(sys));
        else
            snprintf(c->why, sizeof(c->why), "handshake failed: the peer closed the connection");
        return;
    }
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    snprintf(c->why, sizeof(c->why), "handshake failed: %s", r ? r : tls_error_name(reason));
}

ssize_t tls_transport_handshake(struct transport *t)
{
    struct tls_conn *c = t->impl;
    if (c->state == TLS_CONN_OPEN)
        return 1;
    if (c->state == TLS_CONN_FAILED) {
        t->err = EPROTO;
        return TRANSPORT_ERROR;
    }
    ERR_clear_error();
    errno = 0;
    int r = SSL_do_handshake(c->ssl);
    int sys = errno;
    if (r == 1) {
        c->state = TLS_CONN_OPEN;
        int v = SSL_version(c->ssl) == TLS1_3_VERSION ? TLS_VER_13 : TLS_VER_12;
        count(&c->cnt->handshakes[v]);
        count(SSL_session_reused(c->ssl) ? &c->cnt->resumed : &c->cnt->full);
        return 1;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ)
        return TRANSPORT_AGAIN;
    if (e == SSL_ERROR_WANT_WRITE)
        return TRANSPORT_WANT_WRITE;
    enum tls_error reason = classify(c, e, sys);
    conn_fail(c, reason);
    describe(c, reason, e, sys);
    ERR_clear_error();
    t->err = e == SSL_ERROR_SYSCALL && sys ? sys : EPROTO;
    return TRANSPORT_ERROR;
}

void tls_transport_note_timeout(struct transport *t)
{
    struct tls_conn *c = t->impl;
    if (c != NULL && c->state == TLS_CONN_HANDSHAKE)
        c->timed_out = true;
}

/* Maps a failed SSL_read_ex/SSL_write_ex after the handshake. */
static ssize_t io_error(struct transport *t, struct tls_conn *c, int r, int sys)
{
    int e = SSL_get_error(c->ssl, r);
    ssize_t rc = TRANSPORT_ERROR;
    switch (e) {
    case SSL_ERROR_WANT_READ:
        rc = TRANSPORT_AGAIN;
        break;
    case SSL_ERROR_WANT_WRITE:
        rc = TRANSPORT_WANT_WRITE;
        break;
    case SSL_ERROR_ZERO_RETURN:
        rc = 0;
        break;
    case SSL_ERROR_SYSCALL:
        t->err = sys ? sys : ECONNABORTED;
        c->broken = true;
        snprintf(c->why, sizeof(c->why), "%s",
                 sys ? strerror(sys) : "the peer closed the connection without close_notify");
        break;
    default: {
        unsigned long err = ERR_peek_last_error();
        t->err = ERR_GET_LIB(err) == ERR_LIB_SSL &&
                         ERR_GET_REASON(err) == SSL_R_UNEXPECTED_EOF_WHILE_READING
                     ? ECONNABORTED
                     : EPROTO;
        c->broken = true;
        const char *why = err ? ERR_reason_error_string(err) : NULL;
        snprintf(c->why, sizeof(c->why), "%s", why ? why : "TLS protocol error");
        break;
    }
    }
    ERR_clear_error();
    return rc;
}

static ssize_t tls_read(struct transport *t, void *buf, size_t len)
{
    struct tls_conn *c = t->impl;
    ssize_t h = tls_transport_handshake(t);
    if (h != 1)
        return h;
    if (len == 0) {
        t->err = EINVAL;
        return TRANSPORT_ERROR;
    }
    /* With read-ahead OpenSSL may hold whole records the socket no longer
     * shows to epoll: take everything it has, so that a short read still
     * means "drained" to the caller. */
    size_t total = 0;
    while (total < len) {
        ERR_clear_error();
        errno = 0;
        size_t n = 0;
        int r = SSL_read_ex(c->ssl, (unsigned char *)buf + total, len - total, &n);
        int sys = errno;
        if (r != 1)
            return total > 0 ? (ssize_t)total : io_error(t, c, r, sys);
        total += n;
        if (!SSL_has_pending(c->ssl))
            break;
    }
    return (ssize_t)total;
}

/* Copies up to TLS_RECORD bytes starting at iov[i] + off into <dst>. */
static size_t gather(unsigned char *dst, const struct iovec *iov, int iovcnt, int i, size_t off)
{
    size_t n = 0;
    for (; i < iovcnt && n < TLS_RECORD; i++, off = 0) {
        size_t take = iov[i].iov_len - off;
        if (take > TLS_RECORD - n)
            take = TLS_RECORD - n;
        memcpy(dst + n, (const unsigned char *)iov[i].iov_base + off, take);
        n += take;
    }
    return n;
}

static ssize_t tls_writev(struct transport *t, const struct iovec *iov, int iovcnt)
{
    struct tls_conn *c = t->impl;
    ssize_t h = tls_transport_handshake(t);
    if (h != 1)
        return h;
    size_t total = 0;
    for (int i = 0; i < iovcnt; i++)
        total += iov[i].iov_len;
    if (total == 0)
        return 0;
    if (total < c->wpending) {
        /* OpenSSL holds a record built from more bytes than are offered now */
        t->err = EINVAL;
        return TRANSPORT_ERROR;
    }
    unsigned char tmp[TLS_RECORD];
    size_t done = 0;
    size_t off = 0;
    int i = 0;
    while (i < iovcnt) {
        size_t left = iov[i].iov_len - off;
        if (left == 0) {
            i++;
            off = 0;
            continue;
        }
        const unsigned char *p = (const unsigned char *)iov[i].iov_base + off;
        size_t n = left;
        if (left < TLS_RECORD && done + left < total) {
            /* a small piece followed by more: one record instead of several;
             * the same input gives the same bytes, so a retry stays valid */
            n = gather(tmp, iov, iovcnt, i, off);
            p = tmp;
        }
        ERR_clear_error();
        errno = 0;
        size_t w = 0;
        int r = SSL_write_ex(c->ssl, p, n, &w);
        int sys = errno;
        if (r != 1) {
            int e = SSL_get_error(c->ssl, r);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                c->wpending = n < TLS_RECORD ? n : TLS_RECORD;
            if (done > 0 && (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)) {
                ERR_clear_error();
                return (ssize_t)done;
            }
            ssize_t rc = io_error(t, c, r, sys);
            if (rc == 0) { /* the client closed: writing is over */
                t->err = EPIPE;
                rc = TRANSPORT_ERROR;
            }
            return done > 0 && rc == TRANSPORT_ERROR ? (ssize_t)done : rc;
        }
        c->wpending = 0;
        done += w;
        /* advance over w bytes */
        while (w > 0 && i < iovcnt) {
            size_t l = iov[i].iov_len - off;
            if (w < l) {
                off += w;
                w = 0;
            } else {
                w -= l;
                i++;
                off = 0;
            }
        }
    }
    return (ssize_t)done;
}

static void tls_shutdown_write(struct transport *t)
{
    struct tls_conn *c = t->impl;
    if (c == NULL || c->shut)
        return;
    c->shut = true;
    if (c->state == TLS_CONN_OPEN && !c->broken) {
        ERR_clear_error();
        int r = SSL_shutdown(c->ssl);
        ERR_clear_error();
        if (r < 0)
            return; /* close_notify still queued: a FIN now would truncate it */
    }
    shutdown(t->fd, SHUT_WR);
}

static void tls_release(struct transport *t)
{
    struct tls_conn *c = t->impl;
    if (c == NULL)
        return;
    if (c->state == TLS_CONN_HANDSHAKE)
        conn_fail(c, c->timed_out ? TLS_ERR_TIMEOUT : TLS_ERR_INCOMPLETE);
    else if (c->state == TLS_CONN_OPEN && !c->broken)
        /* closed without an error: keep the session in the cache */
        SSL_set_shutdown(c->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    SSL_free(c->ssl);
    ERR_clear_error();
    tls_ctx_unref(c->ctx);
    tls_client_ctx_unref(c->cctx);
    free(c->skey);
    free(c->peer);
    free(c);
    t->impl = NULL;
}

static const struct transport_ops tls_ops = {
    .read = tls_read,
    .writev = tls_writev,
    .shutdown_write = tls_shutdown_write,
    .release = tls_release,
};

/* A connection on <ssl_ctx> over <fd>, not yet attached to <t>. */
static struct tls_conn *conn_new(struct transport *t, int fd, SSL_CTX *ssl_ctx)
{
    t->ops = &tls_ops;
    t->fd = fd;
    t->err = 0;
    t->impl = NULL;
    struct tls_conn *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->reason = -1;
    ERR_clear_error();
    c->ssl = SSL_new(ssl_ctx);
    if (c->ssl == NULL || SSL_set_fd(c->ssl, fd) != 1) {
        SSL_free(c->ssl);
        free(c);
        ERR_clear_error();
        return NULL;
    }
    SSL_set_app_data(c->ssl, c);
    return c;
}

int tls_transport_init(struct transport *t, int fd, struct tls_ctx *ctx, struct lb_err *err)
{
    struct tls_conn *c = conn_new(t, fd, ctx->ssl);
    if (c == NULL)
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory for a TLS connection");
    SSL_set_accept_state(c->ssl);
    c->ctx = tls_ctx_ref(ctx);
    c->cnt = ctx->cnt;
    t->impl = c;
    return LB_OK;
}

/* A host name or address as sent on the wire: printable ASCII, no spaces. */
static bool name_ok(const char *s)
{
    size_t len = strlen(s);
    if (len > TLS_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] <= ' ' || (unsigned char)s[i] >= 0x7f)
            return false;
    return true;
}

static bool is_ip_literal(const char *s)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

int tls_client_transport_init(struct transport *t, int fd, struct tls_client_ctx *ctx,
                              const char *sni, const char *verify_name, struct lb_err *err)
{
    t->impl = NULL;
    sni = sni ? sni : "";
    const char *name = verify_name && verify_name[0] ? verify_name : sni;
    if (!name_ok(sni))
        return lb_err_set(err, LB_EINVAL, 0, "sni: \"%.40s\" is not a host name", sni);
    if (name[0] == '\0')
        return lb_err_set(err, LB_EINVAL, 0, "verify_name: required when sni is empty");
    if (!name_ok(name))
        return lb_err_set(err, LB_EINVAL, 0, "verify_name: \"%.40s\" is not a host name", name);
    struct tls_conn *c = conn_new(t, fd, ctx->ssl);
    if (c == NULL)
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory for a TLS connection");
    SSL_set_connect_state(c->ssl);
    c->cctx = tls_client_ctx_ref(ctx);
    c->cnt = &ctx->cnt;
    t->impl = c;
    int rc = LB_OK;
    if (asprintf(&c->skey, "%s %s", sni, name) < 0) {
        c->skey = NULL;
        rc = lb_err_set(err, LB_ENOMEM, 0, "out of memory for a TLS connection");
        goto fail;
    }
    X509_VERIFY_PARAM *vp = SSL_get0_param(c->ssl);
    bool ip = is_ip_literal(name);
    if (ip && X509_VERIFY_PARAM_set1_ip_asc(vp, name) != 1) {
        rc = lb_err_set(err, LB_EINVAL, 0, "verify_name: \"%.40s\" refused (%s)", name,
                        tls__ssl_reason());
        goto fail;
    }
    if (!ip) {
        X509_VERIFY_PARAM_set_hostflags(vp, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        if (X509_VERIFY_PARAM_set1_host(vp, name, 0) != 1) {
            rc = lb_err_set(err, LB_EINVAL, 0, "verify_name: \"%.40s\" refused (%s)", name,
                            tls__ssl_reason());
            goto fail;
        }
    }
    /* RFC 6066: SNI carries host names only, never address literals */
    if (sni[0] && !is_ip_literal(sni) && SSL_set_tlsext_host_name(c->ssl, sni) != 1) {
        rc = lb_err_set(err, LB_EINVAL, 0, "sni: \"%.40s\" refused (%s)", sni, tls__ssl_reason());
        goto fail;
    }
    tls__client_resume(ctx, c->ssl, c->skey);
    return LB_OK;
fail:
    c->state = TLS_CONN_FAILED; /* not a handshake: counts nothing */
    tls_release(t);
    ERR_clear_error();
    return rc;
}

const char *tls_transport_error(struct transport *t)
{
    struct tls_conn *c = t->impl;
    return c != NULL ? c->why : "";
}
