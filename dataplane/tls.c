/* dataplane/tls.c: OpenSSL 3 server and client contexts and the TLS transport. */
#include "tls.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <arpa/inet.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "lb_err.h"
#include "lb_ref.h"
#include "tls_tickets.h"

/* Mozilla "intermediate" TLS 1.2 suites without the DHE ones. */
#define TLS_DEFAULT_CIPHERS                                                                        \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"     \
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
#define TLS_DEFAULT_GROUPS     "X25519:P-256:P-384"
#define TLS_DEFAULT_ROTATION_S 3600
#define TLS_SESSION_CACHE_SIZE 20480
#define TLS_RECORD             16384 /* largest plaintext per record */
#define TLS_MAX_KEY_TYPES      4     /* certificates installed for one name */
#define TLS_CLIENT_SESSIONS    16    /* resumable sessions kept per client context */
#define TLS_NAME_MAX           255   /* longest SNI or verified name accepted */
#define TLS_WHY_LEN            160   /* tls_transport_error() text, as lb_err.msg */

struct tls_cert {
    char *name;             /* Certificate.name or "certificates[i]" */
    X509 *leaf;             /* owned */
    EVP_PKEY *key;          /* owned */
    STACK_OF(X509) * chain; /* owned, may be empty */
    int key_type;           /* EVP_PKEY_get_base_id() */
    int64_t not_after;      /* unix seconds */
};

struct tls_name {
    char *name;    /* lowercase; a wildcard keeps its suffix with the dot: ".example.com" */
    size_t cert;   /* index into certs */
    bool wildcard; /* was "*.<suffix>" */
};

struct tls_strlist {
    char **v;
    size_t n;
};

/* Handshake counters of a server or client context: relaxed atomics, bumped
 * by every worker. A server context's are shared, by reference, with the
 * context that replaces it, so a frontend's counters survive reloads. */
struct tls_counters {
    struct lb_ref ref; /* server contexts only */
    _Atomic uint64_t handshakes[TLS_VER_COUNT];
    _Atomic uint64_t full;
    _Atomic uint64_t resumed;
    _Atomic uint64_t errors[TLS_ERR_COUNT];
};

struct tls_ctx {
    struct lb_ref ref;
    SSL_CTX *ssl;                /* owned; its app data points back here */
    struct tls_tickets *tickets; /* one reference */
    uint32_t rotation_s;         /* ticket key period */
    int client_auth;             /* Lb__V1__ClientAuth */
    struct tls_cert *certs;      /* certs[0] is the default */
    size_t n_certs;
    struct tls_name *names; /* in certificate order */
    size_t n_names;
    struct tls_strlist allow_cn, allow_dns, allow_uri;
    unsigned char (*pins)[SHA256_DIGEST_LENGTH];
    size_t n_pins;
    struct tls_counters *cnt; /* one reference */
};

/* A session the client side may resume, per (SNI, verified name). */
struct tls_client_session {
    char *key;         /* "<sni> <verify_name>"; NULL: free slot */
    SSL_SESSION *sess; /* one reference */
    uint64_t stamp;    /* tls_client_ctx.clock at the last store, for eviction */
};

struct tls_client_ctx {
    struct lb_ref ref;
    SSL_CTX *ssl;         /* owned */
    pthread_mutex_t lock; /* guards sessions and clock: every worker stores and looks up */
    struct tls_client_session sessions[TLS_CLIENT_SESSIONS];
    uint64_t clock;
    struct tls_counters cnt;
};

enum conn_state {
    CONN_HANDSHAKE = 0,
    CONN_OPEN,
    CONN_FAILED,
};

/* One TLS connection; t->impl points here. Belongs to the connection's thread. */
struct tls_conn {
    SSL *ssl;                    /* owned; app data points here */
    struct tls_ctx *ctx;         /* server side: one reference; NULL on the client side */
    struct tls_client_ctx *cctx; /* client side: one reference; NULL on the server side */
    struct tls_counters *cnt;    /* the counters of ctx or cctx */
    char *skey;                  /* client side: session cache key, owned */
    char why[TLS_WHY_LEN];       /* tls_transport_error(): "" until something failed */
    enum conn_state state;
    int reason;      /* enum tls_error a callback chose, or -1 */
    bool timed_out;  /* tls_transport_note_timeout() was called */
    bool broken;     /* a fatal error after the handshake */
    bool shut;       /* shutdown_write ran */
    size_t wpending; /* plaintext bytes of a record OpenSSL still has to send */
};

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
    return (unsigned)e < TLS_ERR_COUNT ? error_names[e] : "unknown";
}

const char *tls_version_name(enum tls_version v)
{
    switch (v) {
    case TLS_VER_12:
        return "TLSv1.2";
    case TLS_VER_13:
        return "TLSv1.3";
    default:
        return "unknown";
    }
}

static void count(_Atomic uint64_t *c)
{
    atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

/* ---- building a context ------------------------------------------------ */

/* Keys come from memory and must never prompt: encrypted keys are refused. */
static int no_password(char *buf, int size, int rwflag, void *u)
{
    return 0;
}

/* The last OpenSSL reason, to end an error message; empties the queue. */
static const char *ssl_reason(void)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    ERR_clear_error();
    return r ? r : "invalid data";
}

static BIO *pem_bio(const ProtobufCBinaryData *pem)
{
    if (pem->len > INT_MAX)
        return NULL;
    return BIO_new_mem_buf(pem->data, (int)pem->len);
}

static bool is_pem_end(void)
{
    unsigned long e = ERR_peek_last_error();
    if (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE) {
        ERR_clear_error();
        return true;
    }
    return false;
}

static char *lower_dup(const char *s, size_t len)
{
    char *d = malloc(len + 1);
    if (d == NULL)
        return NULL;
    for (size_t i = 0; i < len; i++)
        d[i] = (char)tolower((unsigned char)s[i]);
    d[len] = '\0';
    return d;
}

static int names_add(struct tls_ctx *ctx, size_t cert, const char *name, size_t len)
{
    if (len && name[len - 1] == '.')
        len--;
    if (len == 0 || memchr(name, '\0', len) != NULL)
        return LB_OK; /* nothing a client could send */
    bool wild = len > 2 && name[0] == '*' && name[1] == '.';
    struct tls_name *n = realloc(ctx->names, (ctx->n_names + 1) * sizeof(*n));
    if (n == NULL)
        return LB_ENOMEM;
    ctx->names = n;
    n = &ctx->names[ctx->n_names];
    n->name = wild ? lower_dup(name + 1, len - 1) : lower_dup(name, len);
    if (n->name == NULL)
        return LB_ENOMEM;
    n->cert = cert;
    n->wildcard = wild;
    ctx->n_names++;
    return LB_OK;
}

/* The names a certificate answers to: SAN DNS names, else its CN. */
static int names_from_cert(struct tls_ctx *ctx, size_t idx, X509 *x)
{
    int rc = LB_OK;
    bool any_dns = false;
    GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    for (int i = 0; rc == LB_OK && i < sk_GENERAL_NAME_num(gens); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        if (g->type != GEN_DNS)
            continue;
        any_dns = true;
        rc = names_add(ctx, idx, (const char *)ASN1_STRING_get0_data(g->d.dNSName),
                       (size_t)ASN1_STRING_length(g->d.dNSName));
    }
    GENERAL_NAMES_free(gens);
    if (rc != LB_OK || any_dns)
        return rc;
    const X509_NAME *subj = X509_get_subject_name(x);
    int pos = X509_NAME_get_index_by_NID(subj, NID_commonName, -1);
    if (pos < 0)
        return LB_OK;
    unsigned char *cn = NULL;
    int len = ASN1_STRING_to_UTF8(&cn, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, pos)));
    if (len < 0)
        return LB_OK;
    rc = names_add(ctx, idx, (const char *)cn, (size_t)len);
    OPENSSL_free(cn);
    return rc;
}

static int64_t asn1_time_unix(const ASN1_TIME *t)
{
    struct tm tm;
    if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1)
        return 0;
    return (int64_t)timegm(&tm);
}

static int load_cert(struct tls_ctx *ctx, size_t i, const Lb__V1__Certificate *cfg,
                     struct lb_err *err)
{
    struct tls_cert *c = &ctx->certs[i];
    if (cfg->name && cfg->name[0])
        c->name = strdup(cfg->name);
    else if (asprintf(&c->name, "certificates[%zu]", i) < 0)
        c->name = NULL;
    if (c->name == NULL)
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory loading tls.certificates[%zu]", i);

    if (cfg->cert_pem.len == 0)
        return lb_err_set(err, LB_EINVAL, 0, "tls.certificates[%zu].cert_pem: empty", i);
    BIO *b = pem_bio(&cfg->cert_pem);
    if (b == NULL)
        return lb_err_set(err, LB_EINVAL, 0, "tls.certificates[%zu].cert_pem: too large", i);
    c->leaf = PEM_read_bio_X509(b, NULL, no_password, NULL);
    c->chain = sk_X509_new_null();
    if (c->leaf != NULL && c->chain != NULL) {
        for (;;) {
            X509 *x = PEM_read_bio_X509(b, NULL, no_password, NULL);
            if (x == NULL)
                break;
            if (!sk_X509_push(c->chain, x)) {
                X509_free(x);
                BIO_free(b);
                return lb_err_set(err, LB_ENOMEM, 0, "out of memory loading tls.certificates");
            }
        }
    }
    BIO_free(b);
    if (c->chain == NULL)
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory loading tls.certificates");
    if (c->leaf == NULL || !is_pem_end())
        return lb_err_set(err, LB_EINVAL, 0,
                          "tls.certificates[%zu].cert_pem: not a PEM certificate chain (%s)", i,
                          ssl_reason());

    if (cfg->key_pem.len == 0)
        return lb_err_set(err, LB_EINVAL, 0, "tls.certificates[%zu].key_pem: empty", i);
    b = pem_bio(&cfg->key_pem);
    if (b == NULL)
        return lb_err_set(err, LB_EINVAL, 0, "tls.certificates[%zu].key_pem: too large", i);
    c->key = PEM_read_bio_PrivateKey(b, NULL, no_password, NULL);
    BIO_free(b);
    if (c->key == NULL)
        return lb_err_set(err, LB_EINVAL, 0,
                          "tls.certificates[%zu].key_pem: not an unencrypted PEM private key (%s)",
                          i, ssl_reason());
    if (X509_check_private_key(c->leaf, c->key) != 1) {
        ERR_clear_error();
        return lb_err_set(err, LB_EINVAL, 0,
                          "tls.certificates[%zu].key_pem: the key does not match the certificate",
                          i);
    }
    c->key_type = EVP_PKEY_get_base_id(c->key);
    c->not_after = asn1_time_unix(X509_get0_notAfter(c->leaf));

    if (names_from_cert(ctx, i, c->leaf) != LB_OK)
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory loading tls.certificates");
    for (size_t j = 0; j < cfg->n_sni; j++) {
        const char *s = cfg->sni[j];
        if (s == NULL || s[0] == '\0')
            return lb_err_set(err, LB_EINVAL, 0, "tls.certificates[%zu].sni[%zu]: empty name", i,
                              j);
        if (names_add(ctx, i, s, strlen(s)) != LB_OK)
            return lb_err_set(err, LB_ENOMEM, 0, "out of memory loading tls.certificates");
    }
    return LB_OK;
}

static int strlist_copy(struct tls_strlist *l, char **v, size_t n)
{
    if (n == 0)
        return LB_OK;
    l->v = calloc(n, sizeof(*l->v));
    if (l->v == NULL)
        return LB_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        l->v[i] = strdup(v[i] ? v[i] : "");
        if (l->v[i] == NULL)
            return LB_ENOMEM;
        l->n++;
    }
    return LB_OK;
}

static void strlist_free(struct tls_strlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
}

static int load_verify(struct tls_ctx *ctx, const Lb__V1__ClientVerify *v, struct lb_err *err)
{
    if (v == NULL)
        return LB_OK;
    if (strlist_copy(&ctx->allow_cn, v->allowed_cn, v->n_allowed_cn) != LB_OK ||
        strlist_copy(&ctx->allow_dns, v->allowed_san_dns, v->n_allowed_san_dns) != LB_OK ||
        strlist_copy(&ctx->allow_uri, v->allowed_san_uri, v->n_allowed_san_uri) != LB_OK)
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory loading tls.verify");
    if (v->n_spki_sha256_pins == 0)
        return LB_OK;
    ctx->pins = calloc(v->n_spki_sha256_pins, sizeof(*ctx->pins));
    if (ctx->pins == NULL)
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory loading tls.verify");
    for (size_t i = 0; i < v->n_spki_sha256_pins; i++) {
        if (v->spki_sha256_pins[i].len != SHA256_DIGEST_LENGTH)
            return lb_err_set(err, LB_EINVAL, 0,
                              "tls.verify.spki_sha256_pins[%zu]: must be 32 bytes, got %zu", i,
                              v->spki_sha256_pins[i].len);
        memcpy(ctx->pins[i], v->spki_sha256_pins[i].data, SHA256_DIGEST_LENGTH);
        ctx->n_pins++;
    }
    return LB_OK;
}

/* The CA bundle becomes the verification store and the acceptable-CA list. */
static int load_client_ca(struct tls_ctx *ctx, const Lb__V1__Tls *cfg, struct lb_err *err)
{
    X509_STORE *store = SSL_CTX_get_cert_store(ctx->ssl);
    BIO *b = pem_bio(&cfg->ca_pem);
    STACK_OF(X509_NAME) *names = sk_X509_NAME_new_null();
    int added = 0;
    int rc = LB_OK;
    if (b == NULL || names == NULL) {
        rc = lb_err_set(err, LB_ENOMEM, 0, "out of memory loading tls.ca_pem");
        goto out;
    }
    for (;;) {
        X509 *x = PEM_read_bio_X509(b, NULL, no_password, NULL);
        if (x == NULL)
            break;
        X509_NAME *n = X509_NAME_dup(X509_get_subject_name(x));
        bool ok = X509_STORE_add_cert(store, x) == 1 && n != NULL && sk_X509_NAME_push(names, n);
        X509_free(x);
        if (!ok) {
            X509_NAME_free(n);
            rc = lb_err_set(err, LB_EINVAL, 0, "tls.ca_pem: certificate %d refused (%s)", added + 1,
                            ssl_reason());
            goto out;
        }
        added++;
    }
    if (added == 0 || !is_pem_end()) {
        rc = lb_err_set(err, LB_EINVAL, 0, "tls.ca_pem: not a PEM certificate bundle (%s)",
                        ssl_reason());
        goto out;
    }
    SSL_CTX_set_client_CA_list(ctx->ssl, names);
    names = NULL;

    if (cfg->crl_pem.len) {
        BIO_free(b);
        b = pem_bio(&cfg->crl_pem);
        if (b == NULL) {
            rc = lb_err_set(err, LB_ENOMEM, 0, "out of memory loading tls.crl_pem");
            goto out;
        }
        int crls = 0;
        for (;;) {
            X509_CRL *crl = PEM_read_bio_X509_CRL(b, NULL, no_password, NULL);
            if (crl == NULL)
                break;
            int ok = X509_STORE_add_crl(store, crl);
            X509_CRL_free(crl);
            if (ok != 1) {
                rc = lb_err_set(err, LB_EINVAL, 0, "tls.crl_pem: CRL %d refused (%s)", crls + 1,
                                ssl_reason());
                goto out;
            }
            crls++;
        }
        if (crls == 0 || !is_pem_end()) {
            rc =
                lb_err_set(err, LB_EINVAL, 0, "tls.crl_pem: not a PEM CRL list (%s)", ssl_reason());
            goto out;
        }
        /* the leaf only: intermediates often come without a CRL of their own */
        X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK);
    }
out:
    sk_X509_NAME_pop_free(names, X509_NAME_free);
    BIO_free(b);
    return rc;
}

/* ---- handshake callbacks (any worker thread; ctx is read-only) --------- */

static void conn_mark(SSL *ssl, enum tls_error reason)
{
    struct tls_conn *c = SSL_get_app_data(ssl);
    if (c != NULL && c->reason < 0)
        c->reason = (int)reason;
}

static int on_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg)
{
    static const unsigned char ours[] = "\x08http/1.1";
    unsigned char *sel = NULL;
    if (SSL_select_next_proto(&sel, outlen, ours, sizeof(ours) - 1, in, inlen) ==
        OPENSSL_NPN_NEGOTIATED) {
        *out = sel;
        return SSL_TLSEXT_ERR_OK;
    }
    conn_mark(ssl, TLS_ERR_ALPN);
    return SSL_TLSEXT_ERR_ALERT_FATAL;
}

static bool cert_listed(const size_t *list, size_t n, int key_type, const struct tls_ctx *ctx)
{
    for (size_t i = 0; i < n; i++)
        if (ctx->certs[list[i]].key_type == key_type)
            return true;
    return false;
}

/* Picks the certificates for the client's server name (before OpenSSL
 * chooses among key types by signature algorithms). */
static int on_cert(SSL *ssl, void *arg)
{
    const struct tls_ctx *ctx = arg;
    const char *sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (sni == NULL || ctx->n_certs == 1)
        return 1;
    size_t len = strlen(sni);
    if (len && sni[len - 1] == '.')
        len--;
    char host[256];
    if (len == 0 || len >= sizeof(host))
        return 1;
    for (size_t i = 0; i < len; i++)
        host[i] = (char)tolower((unsigned char)sni[i]);
    host[len] = '\0';

    size_t pick[TLS_MAX_KEY_TYPES];
    size_t n = 0;
    for (size_t i = 0; i < ctx->n_names && n < TLS_MAX_KEY_TYPES; i++) {
        const struct tls_name *nm = &ctx->names[i];
        if (!nm->wildcard && strcmp(nm->name, host) == 0 &&
            !cert_listed(pick, n, ctx->certs[nm->cert].key_type, ctx))
            pick[n++] = nm->cert;
    }
    const char *dot = strchr(host, '.');
    if (n == 0 && dot != NULL && dot != host) {
        for (size_t i = 0; i < ctx->n_names && n < TLS_MAX_KEY_TYPES; i++) {
            const struct tls_name *nm = &ctx->names[i];
            if (nm->wildcard && strcmp(nm->name, dot) == 0 &&
                !cert_listed(pick, n, ctx->certs[nm->cert].key_type, ctx))
                pick[n++] = nm->cert;
        }
    }
    if (n == 0)
        return 1;
    SSL_certs_clear(ssl);
    for (size_t i = 0; i < n; i++) {
        const struct tls_cert *c = &ctx->certs[pick[i]];
        if (SSL_use_cert_and_key(ssl, c->leaf, c->key, c->chain, 1) != 1)
            return 0;
    }
    return 1;
}

static bool str_in(const struct tls_strlist *l, const unsigned char *s, int len)
{
    for (size_t i = 0; i < l->n; i++)
        if (len >= 0 && strlen(l->v[i]) == (size_t)len && memcmp(l->v[i], s, (size_t)len) == 0)
            return true;
    return false;
}

static bool identity_allowed(const struct tls_ctx *ctx, X509 *x)
{
    if (ctx->allow_cn.n == 0 && ctx->allow_dns.n == 0 && ctx->allow_uri.n == 0)
        return true;
    const X509_NAME *subj = X509_get_subject_name(x);
    for (int pos = -1; ctx->allow_cn.n;) {
        pos = X509_NAME_get_index_by_NID(subj, NID_commonName, pos);
        if (pos < 0)
            break;
        const ASN1_STRING *cn = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, pos));
        unsigned char *u = NULL;
        int len = ASN1_STRING_to_UTF8(&u, cn);
        bool hit = len >= 0 && str_in(&ctx->allow_cn, u, len);
        OPENSSL_free(u);
        if (hit)
            return true;
    }
    bool hit = false;
    GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    for (int i = 0; !hit && i < sk_GENERAL_NAME_num(gens); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        if (g->type == GEN_DNS)
            hit = str_in(&ctx->allow_dns, ASN1_STRING_get0_data(g->d.dNSName),
                         ASN1_STRING_length(g->d.dNSName));
        else if (g->type == GEN_URI)
            hit = str_in(&ctx->allow_uri, ASN1_STRING_get0_data(g->d.uniformResourceIdentifier),
                         ASN1_STRING_length(g->d.uniformResourceIdentifier));
    }
    GENERAL_NAMES_free(gens);
    return hit;
}

static bool pin_allowed(const struct tls_ctx *ctx, X509 *x)
{
    if (ctx->n_pins == 0)
        return true;
    unsigned char *der = NULL;
    int len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(x), &der);
    if (len <= 0)
        return false;
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256(der, (size_t)len, md);
    OPENSSL_free(der);
    for (size_t i = 0; i < ctx->n_pins; i++)
        if (memcmp(ctx->pins[i], md, sizeof(md)) == 0)
            return true;
    return false;
}

/* Replaces OpenSSL's chain check for client certificates: the chain only
 * for client_auth 3/4, then pins and allow-lists for every mode. Runs once
 * per presented certificate; 0 aborts the handshake with an alert. */
static int on_verify(X509_STORE_CTX *xs, void *arg)
{
    const struct tls_ctx *ctx = arg;
    SSL *ssl = X509_STORE_CTX_get_ex_data(xs, SSL_get_ex_data_X509_STORE_CTX_idx());
    X509 *leaf = X509_STORE_CTX_get0_cert(xs);
    if (leaf == NULL)
        return 0;
    if (ctx->client_auth >= LB__V1__CLIENT_AUTH__CLIENT_AUTH_VERIFY_IF_GIVEN &&
        X509_verify_cert(xs) != 1) {
        int e = X509_STORE_CTX_get_error(xs);
        if (e == X509_V_ERR_CERT_HAS_EXPIRED || e == X509_V_ERR_CERT_NOT_YET_VALID)
            conn_mark(ssl, TLS_ERR_CERT_EXPIRED);
        else if (e == X509_V_ERR_CERT_REVOKED)
            conn_mark(ssl, TLS_ERR_CERT_REVOKED);
        else
            conn_mark(ssl, TLS_ERR_VERIFY_FAILED);
        return 0;
    }
    if (!pin_allowed(ctx, leaf)) {
        conn_mark(ssl, TLS_ERR_PIN_MISMATCH);
        X509_STORE_CTX_set_error(xs, X509_V_ERR_APPLICATION_VERIFICATION);
        return 0;
    }
    if (!identity_allowed(ctx, leaf)) {
        conn_mark(ssl, TLS_ERR_IDENTITY);
        X509_STORE_CTX_set_error(xs, X509_V_ERR_APPLICATION_VERIFICATION);
        return 0;
    }
    return 1;
}

static int on_ticket(SSL *ssl, unsigned char *name, unsigned char *iv, EVP_CIPHER_CTX *cctx,
                     EVP_MAC_CTX *hctx, int enc)
{
    struct tls_ctx *ctx = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    int rc = tls_tickets__step(ctx->tickets, ctx->rotation_s, name, iv, cctx, hctx, enc);
    /* A TLS 1.3 client uses a ticket once (RFC 8446, C.4), so a resumed
     * handshake must hand out a fresh one or the client's next connection
     * is a full handshake; OpenSSL only sends it when asked to renew. */
    if (!enc && rc == 1 && SSL_version(ssl) == TLS1_3_VERSION)
        rc = 2;
    return rc;
}

/* ---- context life ------------------------------------------------------ */

static void counters_unref(struct tls_counters *c)
{
    if (c != NULL && lb_ref_put(&c->ref))
        free(c);
}

static void ctx_free(struct tls_ctx *ctx)
{
    counters_unref(ctx->cnt);
    SSL_CTX_free(ctx->ssl);
    tls_tickets_unref(ctx->tickets);
    for (size_t i = 0; i < ctx->n_certs; i++) {
        struct tls_cert *c = &ctx->certs[i];
        free(c->name);
        X509_free(c->leaf);
        EVP_PKEY_free(c->key);
        sk_X509_pop_free(c->chain, X509_free);
    }
    free(ctx->certs);
    for (size_t i = 0; i < ctx->n_names; i++)
        free(ctx->names[i].name);
    free(ctx->names);
    strlist_free(&ctx->allow_cn);
    strlist_free(&ctx->allow_dns);
    strlist_free(&ctx->allow_uri);
    free(ctx->pins);
    free(ctx);
}

/* Sessions are bound to the whole configuration: what a resumed session
 * proved about the client must still hold under the current rules. */
static int session_context(SSL_CTX *s, const Lb__V1__Tls *cfg)
{
    size_t len = lb__v1__tls__get_packed_size(cfg);
    uint8_t *buf = malloc(len ? len : 1);
    if (buf == NULL)
        return LB_ENOMEM;
    lb__v1__tls__pack(cfg, buf);
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256(buf, len, md);
    free(buf);
    return SSL_CTX_set_session_id_context(s, md, sizeof(md)) == 1 ? LB_OK : LB_ENOMEM;
}

static int configure(struct tls_ctx *ctx, const Lb__V1__Tls *cfg, struct lb_err *err)
{
    SSL_CTX *s = ctx->ssl;
    const char *mv = cfg->min_version ? cfg->min_version : "";
    int min;
    if (mv[0] == '\0' || strcmp(mv, "TLSv1.2") == 0)
        min = TLS1_2_VERSION;
    else if (strcmp(mv, "TLSv1.3") == 0)
        min = TLS1_3_VERSION;
    else
        return lb_err_set(err, LB_EINVAL, 0,
                          "tls.min_version: \"%.40s\" is neither TLSv1.2 nor TLSv1.3", mv);
    if (SSL_CTX_set_min_proto_version(s, min) != 1)
        return lb_err_set(err, LB_EINVAL, 0, "tls.min_version: refused (%s)", ssl_reason());
    SSL_CTX_set_options(s, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                               SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_mode(s, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                            SSL_MODE_RELEASE_BUFFERS | SSL_MODE_NO_AUTO_CHAIN);
    /* one read() takes a whole flight or several records, not 5 bytes of
     * header then the rest; one ticket per handshake is what clients use */
    SSL_CTX_set_read_ahead(s, 1);
    SSL_CTX_set_num_tickets(s, 1);

    const char *ciphers = cfg->ciphers && cfg->ciphers[0] ? cfg->ciphers : TLS_DEFAULT_CIPHERS;
    if (SSL_CTX_set_cipher_list(s, ciphers) != 1)
        return lb_err_set(err, LB_EINVAL, 0, "tls.ciphers: no usable cipher (%s)", ssl_reason());
    if (cfg->ciphersuites && cfg->ciphersuites[0] &&
        SSL_CTX_set_ciphersuites(s, cfg->ciphersuites) != 1)
        return lb_err_set(err, LB_EINVAL, 0, "tls.ciphersuites: invalid list (%s)", ssl_reason());
    const char *groups = cfg->groups && cfg->groups[0] ? cfg->groups : TLS_DEFAULT_GROUPS;
    if (SSL_CTX_set1_groups_list(s, groups) != 1)
        return lb_err_set(err, LB_EINVAL, 0, "tls.groups: invalid list (%s)", ssl_reason());

    SSL_CTX_set_alpn_select_cb(s, on_alpn, ctx);
    SSL_CTX_set_cert_cb(s, on_cert, ctx);
    const struct tls_cert *def = &ctx->certs[0];
    if (SSL_CTX_use_cert_and_key(s, def->leaf, def->key, def->chain, 1) != 1)
        return lb_err_set(err, LB_EINVAL, 0, "tls.certificates[0]: refused by OpenSSL (%s)",
                          ssl_reason());

    if (session_context(s, cfg) != LB_OK)
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory setting the TLS session context");
    SSL_CTX_set_session_cache_mode(s, SSL_SESS_CACHE_SERVER | SSL_SESS_CACHE_NO_AUTO_CLEAR);
    SSL_CTX_sess_set_cache_size(s, TLS_SESSION_CACHE_SIZE);
    SSL_CTX_set_timeout(s, (long)ctx->rotation_s);
    SSL_CTX_set_tlsext_ticket_key_evp_cb(s, on_ticket);

    ctx->client_auth = (int)cfg->client_auth;
    if (ctx->client_auth < 0 ||
        ctx->client_auth > LB__V1__CLIENT_AUTH__CLIENT_AUTH_REQUIRE_AND_VERIFY)
        return lb_err_set(err, LB_EINVAL, 0, "tls.client_auth: unknown value %d", ctx->client_auth);
    bool verifies = ctx->client_auth >= LB__V1__CLIENT_AUTH__CLIENT_AUTH_VERIFY_IF_GIVEN;
    if (verifies && cfg->ca_pem.len == 0)
        return lb_err_set(err, LB_EINVAL, 0,
                          "tls.ca_pem: required when client_auth verifies certificates");
    if (cfg->crl_pem.len && cfg->ca_pem.len == 0)
        return lb_err_set(err, LB_EINVAL, 0, "tls.crl_pem: needs tls.ca_pem");
    if (ctx->client_auth == LB__V1__CLIENT_AUTH__CLIENT_AUTH_NONE) {
        SSL_CTX_set_verify(s, SSL_VERIFY_NONE, NULL);
        return LB_OK;
    }
    if (cfg->ca_pem.len) {
        int rc = load_client_ca(ctx, cfg, err);
        if (rc != LB_OK)
            return rc;
    }
    int mode = SSL_VERIFY_PEER | SSL_VERIFY_CLIENT_ONCE;
    if (ctx->client_auth == LB__V1__CLIENT_AUTH__CLIENT_AUTH_REQUIRE_ANY ||
        ctx->client_auth == LB__V1__CLIENT_AUTH__CLIENT_AUTH_REQUIRE_AND_VERIFY)
        mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    SSL_CTX_set_verify(s, mode, NULL);
    SSL_CTX_set_cert_verify_callback(s, on_verify, ctx);
    return LB_OK;
}

struct tls_ctx *tls_ctx_new(const Lb__V1__Tls *cfg, struct tls_tickets *tickets, struct lb_err *err)
{
    if (cfg == NULL || cfg->n_certificates == 0) {
        lb_err_set(err, LB_EINVAL, 0, "tls.certificates: at least one certificate is required");
        return NULL;
    }
    struct tls_ctx *ctx = calloc(1, sizeof(*ctx));
    if (ctx == NULL) {
        lb_err_set(err, LB_ENOMEM, 0, "out of memory for a TLS context");
        return NULL;
    }
    lb_ref_init(&ctx->ref);
    ctx->rotation_s = cfg->ticket_rotation_s ? cfg->ticket_rotation_s : TLS_DEFAULT_ROTATION_S;
    ERR_clear_error();
    ctx->cnt = calloc(1, sizeof(*ctx->cnt));
    if (ctx->cnt != NULL)
        lb_ref_init(&ctx->cnt->ref);
    ctx->tickets = tickets ? tls_tickets_ref(tickets) : tls_tickets_new(NULL, NULL, err);
    ctx->certs = calloc(cfg->n_certificates, sizeof(*ctx->certs));
    if (ctx->cnt == NULL || ctx->tickets == NULL || ctx->certs == NULL) {
        lb_err_set(err, LB_ENOMEM, 0, "out of memory for a TLS context");
        goto fail;
    }
    for (size_t i = 0; i < cfg->n_certificates; i++) {
        ctx->n_certs = i + 1;
        if (cfg->certificates[i] == NULL) {
            lb_err_set(err, LB_EINVAL, 0, "tls.certificates[%zu]: missing", i);
            goto fail;
        }
        if (load_cert(ctx, i, cfg->certificates[i], err) != LB_OK)
            goto fail;
    }
    if (load_verify(ctx, cfg->verify, err) != LB_OK)
        goto fail;
    ctx->ssl = SSL_CTX_new(TLS_server_method());
    if (ctx->ssl == NULL) {
        lb_err_set(err, LB_ENOMEM, 0, "SSL_CTX_new failed (%s)", ssl_reason());
        goto fail;
    }
    SSL_CTX_set_app_data(ctx->ssl, ctx);
    if (configure(ctx, cfg, err) != LB_OK)
        goto fail;
    ERR_clear_error();
    return ctx;
fail:
    ERR_clear_error();
    ctx_free(ctx);
    return NULL;
}

struct tls_ctx *tls_ctx_ref(struct tls_ctx *ctx)
{
    lb_ref_get(&ctx->ref);
    return ctx;
}

void tls_ctx_unref(struct tls_ctx *ctx)
{
    if (ctx == NULL || !lb_ref_put(&ctx->ref))
        return;
    ctx_free(ctx);
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

void tls_ctx_continue_counters(struct tls_ctx *ctx, const struct tls_ctx *from)
{
    if (ctx->cnt == from->cnt)
        return;
    lb_ref_get(&from->cnt->ref);
    counters_unref(ctx->cnt);
    ctx->cnt = from->cnt;
}

size_t tls_ctx_cert_count(const struct tls_ctx *ctx)
{
    return ctx->n_certs;
}

int tls_ctx_cert_info(const struct tls_ctx *ctx, size_t i, struct tls_cert_info *out)
{
    if (i >= ctx->n_certs)
        return LB_EINVAL;
    out->name = ctx->certs[i].name;
    out->not_after = ctx->certs[i].not_after;
    return LB_OK;
}

/* ---- client contexts ---------------------------------------------------- */

/* Keeps OpenSSL's verdict and notes why it failed; the first error ends the
 * handshake with an alert. */
static int client_on_verify(int ok, X509_STORE_CTX *xs)
{
    if (ok)
        return 1;
    SSL *ssl = X509_STORE_CTX_get_ex_data(xs, SSL_get_ex_data_X509_STORE_CTX_idx());
    int e = X509_STORE_CTX_get_error(xs);
    if (e == X509_V_ERR_CERT_HAS_EXPIRED || e == X509_V_ERR_CERT_NOT_YET_VALID)
        conn_mark(ssl, TLS_ERR_CERT_EXPIRED);
    else if (e == X509_V_ERR_CERT_REVOKED)
        conn_mark(ssl, TLS_ERR_CERT_REVOKED);
    else
        conn_mark(ssl, TLS_ERR_VERIFY_FAILED);
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
static void client_resume(struct tls_client_ctx *cc, SSL *ssl, const char *key)
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
                              ssl_reason());
        return LB_OK;
    }
    if (len > INT_MAX)
        return lb_err_set(err, LB_EINVAL, 0, "ca_pem: too large");
    BIO *b = BIO_new_mem_buf(pem, (int)len);
    if (b == NULL)
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory loading ca_pem");
    X509_STORE *store = SSL_CTX_get_cert_store(s);
    int added = 0;
    int rc = LB_OK;
    for (;;) {
        X509 *x = PEM_read_bio_X509(b, NULL, no_password, NULL);
        if (x == NULL)
            break;
        int ok = X509_STORE_add_cert(store, x);
        X509_free(x);
        if (ok != 1) {
            rc = lb_err_set(err, LB_EINVAL, 0, "ca_pem: certificate %d refused (%s)", added + 1,
                            ssl_reason());
            break;
        }
        added++;
    }
    if (rc == LB_OK && (added == 0 || !is_pem_end()))
        rc = lb_err_set(err, LB_EINVAL, 0, "ca_pem: not a PEM certificate bundle (%s)",
                        ssl_reason());
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

struct tls_client_ctx *tls_client_ctx_new(const uint8_t *ca_pem, size_t ca_len, struct lb_err *err)
{
    static const unsigned char alpn[] = "\x08http/1.1";
    struct tls_client_ctx *cc = calloc(1, sizeof(*cc));
    if (cc == NULL) {
        lb_err_set(err, LB_ENOMEM, 0, "out of memory for a TLS client context");
        return NULL;
    }
    lb_ref_init(&cc->ref);
    if (pthread_mutex_init(&cc->lock, NULL) != 0) {
        free(cc);
        lb_err_set(err, LB_ENOMEM, 0, "out of memory for a TLS client context");
        return NULL;
    }
    ERR_clear_error();
    SSL_CTX *s = SSL_CTX_new(TLS_client_method());
    cc->ssl = s;
    if (s == NULL) {
        lb_err_set(err, LB_ENOMEM, 0, "SSL_CTX_new failed (%s)", ssl_reason());
        goto fail;
    }
    if (SSL_CTX_set_min_proto_version(s, TLS1_2_VERSION) != 1 ||
        SSL_CTX_set_alpn_protos(s, alpn, sizeof(alpn) - 1) != 0) {
        lb_err_set(err, LB_ENOMEM, 0, "out of memory configuring a TLS client context (%s)",
                   ssl_reason());
        goto fail;
    }
    SSL_CTX_set_options(s, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(s, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                            SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_read_ahead(s, 1);
    SSL_CTX_set_verify(s, SSL_VERIFY_PEER, client_on_verify);
    /* our own cache keyed by name: OpenSSL's internal one is for servers */
    SSL_CTX_set_session_cache_mode(s, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(s, client_on_session);
    if (client_load_ca(s, ca_pem, ca_len, err) != LB_OK)
        goto fail;
    ERR_clear_error();
    return cc;
fail:
    ERR_clear_error();
    client_ctx_free(cc);
    return NULL;
}

struct tls_client_ctx *tls_client_ctx_ref(struct tls_client_ctx *ctx)
{
    lb_ref_get(&ctx->ref);
    return ctx;
}

void tls_client_ctx_unref(struct tls_client_ctx *ctx)
{
    if (ctx == NULL || !lb_ref_put(&ctx->ref))
        return;
    client_ctx_free(ctx);
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
    c->state = CONN_FAILED;
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
    if (c->state == CONN_OPEN)
        return 1;
    if (c->state == CONN_FAILED) {
        t->err = EPROTO;
        return TRANSPORT_ERROR;
    }
    ERR_clear_error();
    errno = 0;
    int r = SSL_do_handshake(c->ssl);
    int sys = errno;
    if (r == 1) {
        c->state = CONN_OPEN;
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
    if (c != NULL && c->state == CONN_HANDSHAKE)
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
    if (c->state == CONN_OPEN && !c->broken) {
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
    if (c->state == CONN_HANDSHAKE)
        conn_fail(c, c->timed_out ? TLS_ERR_TIMEOUT : TLS_ERR_INCOMPLETE);
    else if (c->state == CONN_OPEN && !c->broken)
        /* closed without an error: keep the session in the cache */
        SSL_set_shutdown(c->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    SSL_free(c->ssl);
    ERR_clear_error();
    tls_ctx_unref(c->ctx);
    tls_client_ctx_unref(c->cctx);
    free(c->skey);
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
                        ssl_reason());
        goto fail;
    }
    if (!ip) {
        X509_VERIFY_PARAM_set_hostflags(vp, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        if (X509_VERIFY_PARAM_set1_host(vp, name, 0) != 1) {
            rc = lb_err_set(err, LB_EINVAL, 0, "verify_name: \"%.40s\" refused (%s)", name,
                            ssl_reason());
            goto fail;
        }
    }
    /* RFC 6066: SNI carries host names only, never address literals */
    if (sni[0] && !is_ip_literal(sni) && SSL_set_tlsext_host_name(c->ssl, sni) != 1) {
        rc = lb_err_set(err, LB_EINVAL, 0, "sni: \"%.40s\" refused (%s)", sni, ssl_reason());
        goto fail;
    }
    client_resume(ctx, c->ssl, c->skey);
    return LB_OK;
fail:
    c->state = CONN_FAILED; /* not a handshake: counts nothing */
    tls_release(t);
    ERR_clear_error();
    return rc;
}

const char *tls_transport_error(struct transport *t)
{
    struct tls_conn *c = t->impl;
    return c != NULL ? c->why : "";
}

static void copy_asn1(char *dst, size_t cap, const ASN1_STRING *s)
{
    size_t len = (size_t)ASN1_STRING_length(s);
    if (len >= cap)
        len = cap - 1;
    memcpy(dst, ASN1_STRING_get0_data(s), len);
    dst[len] = '\0';
}

int tls_peer_info(struct transport *t, struct tls_peer *out)
{
    struct tls_conn *c = t->impl;
    memset(out, 0, sizeof(*out));
    if (c == NULL || c->state != CONN_OPEN)
        return LB_EINVAL;
    SSL *ssl = c->ssl;
    out->version = SSL_version(ssl) == TLS1_3_VERSION ? "TLSv1.3" : "TLSv1.2";
    out->resumed = SSL_session_reused(ssl);
    const char *sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (sni != NULL)
        snprintf(out->sni, sizeof(out->sni), "%s", sni);
    X509 *x = SSL_get0_peer_certificate(ssl);
    if (x == NULL)
        return LB_OK;
    out->has_cert = true;
    bool verifies =
        c->cctx != NULL || c->ctx->client_auth >= LB__V1__CLIENT_AUTH__CLIENT_AUTH_VERIFY_IF_GIVEN;
    out->verified = verifies && SSL_get_verify_result(ssl) == X509_V_OK;

    BIO *b = BIO_new(BIO_s_mem());
    if (b == NULL)
        return LB_ENOMEM;
    if (X509_NAME_print_ex(b, X509_get_subject_name(x), 0, XN_FLAG_RFC2253) >= 0) {
        int n = BIO_read(b, out->subject, (int)sizeof(out->subject) - 1);
        out->subject[n > 0 ? n : 0] = '\0';
    }
    BIO_free(b);

    GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    for (int i = 0; i < sk_GENERAL_NAME_num(gens); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        if (g->type == GEN_URI) {
            copy_asn1(out->san_uri, sizeof(out->san_uri), g->d.uniformResourceIdentifier);
            break;
        }
    }
    GENERAL_NAMES_free(gens);

    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (X509_digest(x, EVP_sha256(), md, &mdlen) == 1) {
        static const char hex[] = "0123456789abcdef";
        for (unsigned int i = 0; i < mdlen && 2 * i + 2 < sizeof(out->fingerprint); i++) {
            out->fingerprint[2 * i] = hex[md[i] >> 4];
            out->fingerprint[2 * i + 1] = hex[md[i] & 15];
        }
    }
    ERR_clear_error();
    return LB_OK;
}
