/* controlplane/admin_tls.c: HTTPS on the admin TCP listener: the server
 * context (checked at start), non-blocking handshakes and encrypted I/O for
 * admin.c's loop, and the identity of a verified client certificate (its
 * subject CN and DNS subjectAltNames, mapped to a role by the tokens file's
 * "cert:<name>" lines); SIGHUP reloads go through admin_tls_reload(). */
#include "admin_int.h"

#include "lb_assert.h"
#include "lb_err.h"
#include "lb_log.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The reason of the last OpenSSL error, for one-line messages. */
static const char *ssl_reason(void)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    return r ? r : "unknown error";
}

/* Whether <path> (given as <flag>) can be opened; else <err> says why, as
 * OpenSSL only says "system lib". */
static bool readable(const char *flag, const char *path, struct lb_err *err)
{
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        lb_err_set(err, LB_EINVAL, errno, "%s %s", flag, path); /* adds strerror */
        return false;
    }
    fclose(f);
    return true;
}

/* A server context for <cert>, <key> and <ca> (may be NULL); NULL and
 * <err> filled when one cannot be loaded. */
static SSL_CTX *ctx_new(const char *cert, const char *key, const char *ca, struct lb_err *err)
{
    if (!readable("--admin-cert", cert, err) || !readable("--admin-key", key, err) ||
        (ca != NULL && !readable("--admin-client-ca", ca, err)))
        return NULL;
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        lb_err_set(err, LB_ENOMEM, 0, "cannot create a TLS context: %s", ssl_reason());
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 SSL_OP_NO_COMPRESSION | SSL_OP_NO_TICKET);
    /* an lbctl call is one short connection: resumption would only keep
     * session state around */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(ctx, 0);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL") != 1)
        lb_err_set(err, LB_EINVAL, 0, "admin TLS ciphers: %s", ssl_reason());
    else if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1)
        lb_err_set(err, LB_EINVAL, 0, "--admin-cert %s: %s", cert, ssl_reason());
    else if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1)
        lb_err_set(err, LB_EINVAL, 0, "--admin-key %s: %s", key, ssl_reason());
    else if (SSL_CTX_check_private_key(ctx) != 1)
        lb_err_set(err, LB_EINVAL, 0, "--admin-key %s does not match --admin-cert %s", key, cert);
    else if (ca == NULL)
        return ctx;
    else {
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(ca);
        if (names != NULL && SSL_CTX_load_verify_locations(ctx, ca, NULL) == 1) {
            SSL_CTX_set_client_CA_list(ctx, names);
            /* asked for, not required: a client without one uses a bearer token */
            SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
            SSL_CTX_set_verify_depth(ctx, 4);
            return ctx;
        }
        sk_X509_NAME_pop_free(names, X509_NAME_free);
        lb_err_set(err, LB_EINVAL, 0, "--admin-client-ca %s: %s", ca,
                   ERR_peek_last_error() ? ssl_reason() : "no certificate in it");
    }
    SSL_CTX_free(ctx);
    return NULL;
}

int admin__tls_setup(struct admin *a, const struct admin_config *cfg, struct lb_err *err)
{
    if ((a->tls_cert = strdup(cfg->tls_cert)) == NULL ||
        (a->tls_key = strdup(cfg->tls_key)) == NULL ||
        (cfg->tls_client_ca != NULL && (a->tls_ca = strdup(cfg->tls_client_ca)) == NULL))
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory");
    a->client_ca = a->tls_ca != NULL;
    a->ssl_ctx = ctx_new(a->tls_cert, a->tls_key, a->tls_ca, err);
    return a->ssl_ctx != NULL ? LB_OK : err ? err->code : LB_EINVAL;
}

int admin_tls_reload(struct admin *a, struct lb_err *err)
{
    if (a->ssl_ctx == NULL)
        return LB_OK;
    SSL_CTX *ctx = ctx_new(a->tls_cert, a->tls_key, a->tls_ca, err);
    if (ctx == NULL)
        return err ? err->code : LB_EINVAL;
    /* open connections hold a reference to the old context */
    SSL_CTX_free(a->ssl_ctx);
    a->ssl_ctx = ctx;
    return LB_OK;
}

bool admin_has_tls(const struct admin *a)
{
    return a->ssl_ctx != NULL;
}

void admin__tls_free(struct admin *a)
{
    SSL_CTX_free(a->ssl_ctx);
    a->ssl_ctx = NULL;
    free(a->tls_cert);
    free(a->tls_key);
    free(a->tls_ca);
}

bool admin__tls_accept(struct conn *c)
{
    c->ssl = SSL_new(c->a->ssl_ctx);
    if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1) {
        SSL_free(c->ssl);
        c->ssl = NULL;
        return false;
    }
    SSL_set_accept_state(c->ssl);
    c->handshaking = true;
    return true;
}

/* The text of <s> when it is printable ASCII without NULs (a name to
 * compare and to show in the audit), else false. */
static bool asn1_name(const ASN1_STRING *s, char *out, size_t size)
{
    int len = ASN1_STRING_length(s);
    const unsigned char *p = ASN1_STRING_get0_data(s);
    if (len <= 0 || (size_t)len >= size)
        return false;
    for (int i = 0; i < len; i++)
        if (p[i] < 0x21 || p[i] > 0x7e)
            return false;
    memcpy(out, p, (size_t)len);
    out[len] = '\0';
    return true;
}

/* Fills c->cert_subject (the CN, else the first DNS name) and c->cert_role
 * (the first tokens-file line, in file order, that names the CN or a DNS
 * subjectAltName) from the verified client certificate. */
static void cert_identity(struct conn *c)
{
    const struct admin *a = c->a;
    if (!a->client_ca)
        return;
    X509 *x = SSL_get1_peer_certificate(c->ssl);
    if (x == NULL)
        return;
    if (SSL_get_verify_result(c->ssl) != X509_V_OK) {
        X509_free(x);
        return;
    }
    char names[9][sizeof(c->cert_subject)];
    size_t n = 0;
    X509_NAME *subj = X509_get_subject_name(x);
    int at = subj ? X509_NAME_get_index_by_NID(subj, NID_commonName, -1) : -1;
    if (at >= 0 && asn1_name(X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, at)), names[n],
                             sizeof(names[n])))
        n++;
    GENERAL_NAMES *sans = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    for (int i = 0; sans != NULL && i < sk_GENERAL_NAME_num(sans) && n < 9; i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
        if (g->type == GEN_DNS && asn1_name(g->d.dNSName, names[n], sizeof(names[n])))
            n++;
    }
    GENERAL_NAMES_free(sans);
    X509_free(x);
    if (n == 0) {
        snprintf(c->cert_subject, sizeof(c->cert_subject), "(no name)");
        return;
    }
    snprintf(c->cert_subject, sizeof(c->cert_subject), "%s", names[0]);
    for (size_t i = 0; i < a->n_tokens && c->cert_role == NULL; i++) {
        const struct token *t = &a->tokens[i];
        for (size_t k = 0; t->cert && k < n && c->cert_role == NULL; k++)
            if (strcasecmp(t->name, names[k]) == 0)
                c->cert_role = t;
    }
}

static void handshake_failed(struct conn *c, int ssl_error)
{
    unsigned long e = ERR_peek_last_error();
    if (ssl_error == SSL_ERROR_SYSCALL && e == 0) {
        /* closed or reset before the handshake ended: port probes do this */
        lb_log(LB_LOG_DEBUG, "admin_tls_closed", "%s: closed during the TLS handshake", c->peer);
        return;
    }
    struct admin *a = c->a;
    a->tls_handshake_failures++;
    double now = ev_now(a->loop);
    if (now - a->hs_log_since >= ADMIN_HS_LOG_WINDOW_S) {
        if (a->hs_unlogged > 0)
            lb_log(LB_LOG_WARN, "admin_tls_handshake_failures_unlogged",
                   "%u more refused TLS handshakes in %.0f s were not logged one by one (see "
                   "lb_cp_api_tls_handshake_failures_total)",
                   a->hs_unlogged, ADMIN_HS_LOG_WINDOW_S);
        a->hs_log_since = now;
        a->hs_logged = 0;
        a->hs_unlogged = 0;
    }
    if (a->hs_logged >= ADMIN_HS_LOG_MAX) {
        a->hs_unlogged++;
        return;
    }
    a->hs_logged++;
    if (ERR_GET_REASON(e) == SSL_R_HTTP_REQUEST)
        lb_log(LB_LOG_INFO, "admin_tls_handshake_failed",
               "%s: plain HTTP sent to the TLS admin port; closed", c->peer);
    else
        lb_log(LB_LOG_INFO, "admin_tls_handshake_failed", "%s: TLS handshake failed: %s", c->peer,
               ssl_reason());
}

/* Maps SSL_get_error() for a call that returned <rc> <= 0. */
static enum admin_io io_result(struct conn *c, int rc)
{
    int e = SSL_get_error(c->ssl, rc);
    switch (e) {
    case SSL_ERROR_WANT_READ:
        return ADMIN_IO_WANT_READ;
    case SSL_ERROR_WANT_WRITE:
        return ADMIN_IO_WANT_WRITE;
    case SSL_ERROR_ZERO_RETURN:
        return ADMIN_IO_EOF;
    default:
        if (c->handshaking)
            handshake_failed(c, e);
        return ADMIN_IO_FAILED;
    }
}

enum admin_io admin__tls_handshake(struct conn *c)
{
    LB_ASSERT(c->ssl != NULL && c->handshaking);
    ERR_clear_error();
    int rc = SSL_do_handshake(c->ssl);
    if (rc != 1)
        return io_result(c, rc);
    c->handshaking = false;
    c->a->tls_handshakes++;
    cert_identity(c);
    lb_log(LB_LOG_DEBUG, "admin_tls_handshake", "%s: %s %s%s%s", c->peer, SSL_get_version(c->ssl),
           SSL_get_cipher_name(c->ssl), c->cert_subject[0] ? ", client certificate " : "",
           c->cert_subject);
    return ADMIN_IO_DONE;
}

enum admin_io admin__tls_read(struct conn *c, char *buf, size_t len, size_t *n)
{
    ERR_clear_error();
    int rc = SSL_read_ex(c->ssl, buf, len, n);
    return rc == 1 ? ADMIN_IO_DONE : io_result(c, rc);
}

enum admin_io admin__tls_write(struct conn *c, const char *buf, size_t len, size_t *n)
{
    ERR_clear_error();
    int rc = SSL_write_ex(c->ssl, buf, len, n);
    return rc == 1 ? ADMIN_IO_DONE : io_result(c, rc);
}

void admin__tls_timed_out(struct conn *c)
{
    c->a->tls_handshake_failures++;
    lb_log(LB_LOG_INFO, "admin_tls_handshake_timeout",
           "%s: TLS handshake not done within %.1f s; closed", c->peer, c->a->handshake_s);
}

void admin__tls_close(struct conn *c, bool notify)
{
    if (c->ssl == NULL)
        return;
    if (notify && !c->handshaking) {
        ERR_clear_error();
        SSL_shutdown(c->ssl); /* close_notify, best effort: the socket is non-blocking */
    }
    SSL_free(c->ssl);
    c->ssl = NULL;
    ERR_clear_error();
}
