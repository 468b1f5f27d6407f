/* dataplane/tls_ctx.c: server contexts, built off the hot path from a
 * frontend's Tls message: certificates and the SNI names they answer to,
 * protocol settings, client CAs and CRLs, session tickets; then the SNI and
 * ALPN callbacks that use them, reference counts and the counters carried
 * across reloads. */
#include "tls_int.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "lb_err.h"
#include "tls_tickets.h"

/* Mozilla "intermediate" TLS 1.2 suites without the DHE ones. */
#define TLS_DEFAULT_CIPHERS                                                                        \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"     \
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
#define TLS_DEFAULT_GROUPS     "X25519:P-256:P-384"
#define TLS_DEFAULT_ROTATION_S 3600
#define TLS_SESSION_CACHE_SIZE 20480
#define TLS_MAX_KEY_TYPES      4 /* certificates installed for one name */

/* ---- certificates and their names ------------------------------------- */

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
    BIO *b = tls__pem_bio(cfg->cert_pem.data, cfg->cert_pem.len);
    if (b == NULL)
        return lb_err_set(err, LB_EINVAL, 0, "tls.certificates[%zu].cert_pem: too large", i);
    c->leaf = PEM_read_bio_X509(b, NULL, tls__no_password, NULL);
    c->chain = sk_X509_new_null();
    if (c->leaf != NULL && c->chain != NULL) {
        for (;;) {
            X509 *x = PEM_read_bio_X509(b, NULL, tls__no_password, NULL);
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
    if (c->leaf == NULL || !tls__is_pem_end())
        return lb_err_set(err, LB_EINVAL, 0,
                          "tls.certificates[%zu].cert_pem: not a PEM certificate chain (%s)", i,
                          tls__ssl_reason());

    if (cfg->key_pem.len == 0)
        return lb_err_set(err, LB_EINVAL, 0, "tls.certificates[%zu].key_pem: empty", i);
    b = tls__pem_bio(cfg->key_pem.data, cfg->key_pem.len);
    if (b == NULL)
        return lb_err_set(err, LB_EINVAL, 0, "tls.certificates[%zu].key_pem: too large", i);
    c->key = PEM_read_bio_PrivateKey(b, NULL, tls__no_password, NULL);
    BIO_free(b);
    if (c->key == NULL)
        return lb_err_set(err, LB_EINVAL, 0,
                          "tls.certificates[%zu].key_pem: not an unencrypted PEM private key (%s)",
                          i, tls__ssl_reason());
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

/* The CRLs join the verification store; only the leaf is checked. */
static int load_client_crl(X509_STORE *store, const ProtobufCBinaryData *pem, struct lb_err *err)
{
    BIO *b = tls__pem_bio(pem->data, pem->len);
    if (b == NULL)
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory loading tls.crl_pem");
    int crls = 0;
    int rc = LB_OK;
    for (;;) {
        X509_CRL *crl = PEM_read_bio_X509_CRL(b, NULL, tls__no_password, NULL);
        if (crl == NULL)
            break;
        int ok = X509_STORE_add_crl(store, crl);
        X509_CRL_free(crl);
        if (ok != 1) {
            rc = lb_err_set(err, LB_EINVAL, 0, "tls.crl_pem: CRL %d refused (%s)", crls + 1,
                            tls__ssl_reason());
            break;
        }
        crls++;
    }
    if (rc == LB_OK && (crls == 0 || !tls__is_pem_end()))
        rc = lb_err_set(err, LB_EINVAL, 0, "tls.crl_pem: not a PEM CRL list (%s)",
                        tls__ssl_reason());
    BIO_free(b);
    /* the leaf only: intermediates often come without a CRL of their own */
    if (rc == LB_OK)
        X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK);
    return rc;
}

/* The CA bundle becomes the verification store and the acceptable-CA list. */
static int load_client_ca(struct tls_ctx *ctx, const Lb__V1__Tls *cfg, struct lb_err *err)
{
    X509_STORE *store = SSL_CTX_get_cert_store(ctx->ssl);
    BIO *b = tls__pem_bio(cfg->ca_pem.data, cfg->ca_pem.len);
    STACK_OF(X509_NAME) *names = sk_X509_NAME_new_null();
    int rc;
    if (b == NULL || names == NULL)
        rc = lb_err_set(err, LB_ENOMEM, 0, "out of memory loading tls.ca_pem");
    else
        rc = tls__ca_bundle_load(store, b, names, "tls.ca_pem", err);
    BIO_free(b);
    if (rc != LB_OK) {
        sk_X509_NAME_pop_free(names, X509_NAME_free);
        return rc;
    }
    SSL_CTX_set_client_CA_list(ctx->ssl, names);
    return cfg->crl_pem.len ? load_client_crl(store, &cfg->crl_pem, err) : LB_OK;
}

/* ---- handshake callbacks (any worker thread; ctx is read-only) --------- */

static int on_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg)
{
    static const unsigned char ours[] = "\x08http/1.1";
    static const unsigned char with_h2[] = "\x02h2\x08http/1.1";
    const struct tls_ctx *ctx = arg;
    const unsigned char *list = ctx->alpn_h2 ? with_h2 : ours;
    unsigned int list_len = ctx->alpn_h2 ? sizeof(with_h2) - 1 : sizeof(ours) - 1;
    unsigned char *sel = NULL;
    /* the server's order wins: h2 when the client offers it */
    if (SSL_select_next_proto(&sel, outlen, list, list_len, in, inlen) == OPENSSL_NPN_NEGOTIATED) {
        *out = sel;
        return SSL_TLSEXT_ERR_OK;
    }
    tls__conn_mark(ssl, TLS_ERR_ALPN);
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
    tls__verify_free(ctx);
    free(ctx);
}

TLS_REF_FUNCS(tls_ctx, ctx_free)

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
        return lb_err_set(err, LB_EINVAL, 0, "tls.min_version: refused (%s)", tls__ssl_reason());
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
        return lb_err_set(err, LB_EINVAL, 0, "tls.ciphers: no usable cipher (%s)",
                          tls__ssl_reason());
    if (cfg->ciphersuites && cfg->ciphersuites[0] &&
        SSL_CTX_set_ciphersuites(s, cfg->ciphersuites) != 1)
        return lb_err_set(err, LB_EINVAL, 0, "tls.ciphersuites: invalid list (%s)",
                          tls__ssl_reason());
    const char *groups = cfg->groups && cfg->groups[0] ? cfg->groups : TLS_DEFAULT_GROUPS;
    if (SSL_CTX_set1_groups_list(s, groups) != 1)
        return lb_err_set(err, LB_EINVAL, 0, "tls.groups: invalid list (%s)", tls__ssl_reason());

    SSL_CTX_set_alpn_select_cb(s, on_alpn, ctx);
    SSL_CTX_set_cert_cb(s, on_cert, ctx);
    const struct tls_cert *def = &ctx->certs[0];
    if (SSL_CTX_use_cert_and_key(s, def->leaf, def->key, def->chain, 1) != 1)
        return lb_err_set(err, LB_EINVAL, 0, "tls.certificates[0]: refused by OpenSSL (%s)",
                          tls__ssl_reason());

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
    SSL_CTX_set_cert_verify_callback(s, tls__on_verify, ctx);
    return LB_OK;
}

/* Fills the zeroed <ctx> from <cfg>; on failure <ctx> holds what was built
 * so far, for ctx_free(). */
static int ctx_build(struct tls_ctx *ctx, const Lb__V1__Tls *cfg, struct tls_tickets *tickets,
                     struct lb_err *err)
{
    lb_ref_init(&ctx->ref);
    if (cfg == NULL || cfg->n_certificates == 0)
        return lb_err_set(err, LB_EINVAL, 0,
                          "tls.certificates: at least one certificate is required");
    ctx->rotation_s = cfg->ticket_rotation_s ? cfg->ticket_rotation_s : TLS_DEFAULT_ROTATION_S;
    ctx->cnt = calloc(1, sizeof(*ctx->cnt));
    if (ctx->cnt != NULL)
        lb_ref_init(&ctx->cnt->ref);
    ctx->tickets = tickets ? tls_tickets_ref(tickets) : tls_tickets_new(NULL, NULL, err);
    ctx->certs = calloc(cfg->n_certificates, sizeof(*ctx->certs));
    if (ctx->cnt == NULL || ctx->tickets == NULL || ctx->certs == NULL)
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory for a TLS context");
    for (size_t i = 0; i < cfg->n_certificates; i++) {
        ctx->n_certs = i + 1;
        if (cfg->certificates[i] == NULL)
            return lb_err_set(err, LB_EINVAL, 0, "tls.certificates[%zu]: missing", i);
        int rc = load_cert(ctx, i, cfg->certificates[i], err);
        if (rc != LB_OK)
            return rc;
    }
    int rc = tls__verify_load(ctx, cfg->verify, err);
    if (rc != LB_OK)
        return rc;
    ctx->ssl = SSL_CTX_new(TLS_server_method());
    if (ctx->ssl == NULL)
        return lb_err_set(err, LB_ENOMEM, 0, "SSL_CTX_new failed (%s)", tls__ssl_reason());
    SSL_CTX_set_app_data(ctx->ssl, ctx);
    return configure(ctx, cfg, err);
}

struct tls_ctx *tls_ctx_new(const Lb__V1__Tls *cfg, struct tls_tickets *tickets, struct lb_err *err)
{
    struct tls_ctx *ctx = calloc(1, sizeof(*ctx));
    if (ctx == NULL) {
        lb_err_set(err, LB_ENOMEM, 0, "out of memory for a TLS context");
        return NULL;
    }
    ERR_clear_error();
    if (ctx_build(ctx, cfg, tickets, err) != LB_OK) {
        ctx_free(ctx);
        ctx = NULL;
    }
    ERR_clear_error();
    return ctx;
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

void tls_ctx_set_alpn_h2(struct tls_ctx *ctx, bool on)
{
    ctx->alpn_h2 = on;
}

bool tls_ctx_alpn_h2(const struct tls_ctx *ctx)
{
    return ctx->alpn_h2;
}

bool tls_transport_alpn_h2(struct transport *t)
{
    struct tls_conn *c = t->impl;
    const unsigned char *p = NULL;
    unsigned int len = 0;
    if (c == NULL || c->ssl == NULL)
        return false;
    SSL_get0_alpn_selected(c->ssl, &p, &len);
    return len == 2 && p[0] == 'h' && p[1] == '2';
}
