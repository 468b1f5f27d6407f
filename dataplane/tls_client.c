/* dataplane/tls_client.c: client contexts for TLS to backends: the trusted
 * CAs, the server-certificate verdict, and the cache of resumable sessions
 * keyed by (SNI, verified name) that every worker shares. */
#include "tls_int.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>

#include "lb_err.h"

/* Keeps OpenSSL's verdict and notes why it failed; the first error ends the
 * handshake with an alert. */
static int client_on_verify(int ok, X509_STORE_CTX *xs)
{
    if (ok)
        return 1;
    tls__mark_chain_error(xs);
    return 0;
}

static void session_slot_clear(struct tls_client_session *s)
{
    free(s->key);
    SSL_SESSION_free(s->sess);
    memset(s, 0, sizeof(*s));
}

/* OpenSSL hands over a new resumable session (after a TLS 1.2 handshake, on
 * each TLS 1.3 NewSessionTicket): it replaces the one of the same key, or
 * the least recently stored. Returning 1 keeps OpenSSL's reference. */
static int client_on_session(SSL *ssl, SSL_SESSION *sess)
{
    struct tls_conn *c = SSL_get_app_data(ssl);
    if (c == NULL || c->cctx == NULL || c->skey == NULL)
        return 0;
    struct tls_client_ctx *cc = c->cctx;
    pthread_mutex_lock(&cc->lock);
    struct tls_client_session *slot = NULL;
    struct tls_client_session *oldest = &cc->sessions[0];
    for (size_t i = 0; i < TLS_CLIENT_SESSIONS; i++) {
        struct tls_client_session *s = &cc->sessions[i];
        if (s->key != NULL && strcmp(s->key, c->skey) == 0) {
            slot = s;
            break;
        }
        if (s->stamp < oldest->stamp)
            oldest = s;
    }
    if (slot == NULL) {
        char *key = strdup(c->skey);
        if (key == NULL) {
            pthread_mutex_unlock(&cc->lock);
            return 0;
        }
        slot = oldest;
        session_slot_clear(slot);
        slot->key = key;
    }
    SSL_SESSION_free(slot->sess);
    slot->sess = sess;
    slot->stamp = ++cc->clock;
    pthread_mutex_unlock(&cc->lock);
    return 1;
}

/* Offers the stored session of <key> on <ssl>, dropping it when it can no
 * longer resume (expired, or marked bad after a failed connection). */
void tls__client_resume(struct tls_client_ctx *cc, SSL *ssl, const char *key)
{
    pthread_mutex_lock(&cc->lock);
    for (size_t i = 0; i < TLS_CLIENT_SESSIONS; i++) {
        struct tls_client_session *s = &cc->sessions[i];
        if (s->key == NULL || strcmp(s->key, key) != 0)
            continue;
        long now = (long)time(NULL);
        if (SSL_SESSION_is_resumable(s->sess) &&
            SSL_SESSION_get_time(s->sess) + SSL_SESSION_get_timeout(s->sess) > now)
            SSL_set_session(ssl, s->sess);
        else
            session_slot_clear(s);
        break;
    }
    pthread_mutex_unlock(&cc->lock);
    ERR_clear_error();
}

static int client_load_ca(SSL_CTX *s, const uint8_t *pem, size_t len, struct lb_err *err)
{
    if (len == 0) {
        if (SSL_CTX_set_default_verify_paths(s) != 1)
            return lb_err_set(err, LB_EINVAL, 0,
                              "ca_pem: empty and the system store cannot be loaded (%s)",
                              tls__ssl_reason());
        return LB_OK;
    }
    if (len > INT_MAX)
        return lb_err_set(err, LB_EINVAL, 0, "ca_pem: too large");
    BIO *b = tls__pem_bio(pem, len);
    if (b == NULL)
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory loading ca_pem");
    int rc = tls__ca_bundle_load(SSL_CTX_get_cert_store(s), b, NULL, "ca_pem", err);
    BIO_free(b);
    return rc;
}

static void client_ctx_free(struct tls_client_ctx *cc)
{
    for (size_t i = 0; i < TLS_CLIENT_SESSIONS; i++)
        session_slot_clear(&cc->sessions[i]);
    SSL_CTX_free(cc->ssl);
    pthread_mutex_destroy(&cc->lock);
    free(cc);
}

TLS_REF_FUNCS(tls_client_ctx, client_ctx_free)

/* TLS 1.2 minimum, ALPN http/1.1, verification always on, and our cache. */
static int client_ctx_configure(struct tls_client_ctx *cc, const uint8_t *ca_pem, size_t ca_len,
                                struct lb_err *err)
{
    static const unsigned char alpn[] = "\x08http/1.1";
    SSL_CTX *s = SSL_CTX_new(TLS_client_method());
    cc->ssl = s;
    if (s == NULL)
        return lb_err_set(err, LB_ENOMEM, 0, "SSL_CTX_new failed (%s)", tls__ssl_reason());
    if (SSL_CTX_set_min_proto_version(s, TLS1_2_VERSION) != 1 ||
        SSL_CTX_set_alpn_protos(s, alpn, sizeof(alpn) - 1) != 0)
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory configuring a TLS client context (%s)",
                          tls__ssl_reason());
    SSL_CTX_set_options(s, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(s, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                            SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_read_ahead(s, 1);
    SSL_CTX_set_verify(s, SSL_VERIFY_PEER, client_on_verify);
    /* our own cache keyed by name: OpenSSL's internal one is for servers */
    SSL_CTX_set_session_cache_mode(s, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(s, client_on_session);
    return client_load_ca(s, ca_pem, ca_len, err);
}

struct tls_client_ctx *tls_client_ctx_new(const uint8_t *ca_pem, size_t ca_len, struct lb_err *err)
{
    struct tls_client_ctx *cc = calloc(1, sizeof(*cc));
    if (cc == NULL || pthread_mutex_init(&cc->lock, NULL) != 0) {
        free(cc);
        lb_err_set(err, LB_ENOMEM, 0, "out of memory for a TLS client context");
        return NULL;
    }
    lb_ref_init(&cc->ref);
    ERR_clear_error();
    if (client_ctx_configure(cc, ca_pem, ca_len, err) != LB_OK) {
        client_ctx_free(cc);
        cc = NULL;
    }
    ERR_clear_error();
    return cc;
}
