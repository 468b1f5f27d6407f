/* dataplane/tls_verify.c: what a client certificate must be beyond its chain
 * (SPKI pins, CN/SAN allow-lists), why a chain failed, and the peer identity
 * a finished handshake hands to the proxy (subject, SAN URI, fingerprint). */
#include "tls_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "lb_err.h"

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

int tls__verify_load(struct tls_ctx *ctx, const Lb__V1__ClientVerify *v, struct lb_err *err)
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

void tls__verify_free(struct tls_ctx *ctx)
{
    strlist_free(&ctx->allow_cn);
    strlist_free(&ctx->allow_dns);
    strlist_free(&ctx->allow_uri);
    free(ctx->pins);
}

void tls__mark_chain_error(X509_STORE_CTX *xs)
{
    SSL *ssl = X509_STORE_CTX_get_ex_data(xs, SSL_get_ex_data_X509_STORE_CTX_idx());
    int e = X509_STORE_CTX_get_error(xs);
    if (e == X509_V_ERR_CERT_HAS_EXPIRED || e == X509_V_ERR_CERT_NOT_YET_VALID)
        tls__conn_mark(ssl, TLS_ERR_CERT_EXPIRED);
    else if (e == X509_V_ERR_CERT_REVOKED)
        tls__conn_mark(ssl, TLS_ERR_CERT_REVOKED);
    else
        tls__conn_mark(ssl, TLS_ERR_VERIFY_FAILED);
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
int tls__on_verify(X509_STORE_CTX *xs, void *arg)
{
    const struct tls_ctx *ctx = arg;
    SSL *ssl = X509_STORE_CTX_get_ex_data(xs, SSL_get_ex_data_X509_STORE_CTX_idx());
    X509 *leaf = X509_STORE_CTX_get0_cert(xs);
    if (leaf == NULL)
        return 0;
    if (ctx->client_auth >= LB__V1__CLIENT_AUTH__CLIENT_AUTH_VERIFY_IF_GIVEN &&
        X509_verify_cert(xs) != 1) {
        tls__mark_chain_error(xs);
        return 0;
    }
    if (!pin_allowed(ctx, leaf)) {
        tls__conn_mark(ssl, TLS_ERR_PIN_MISMATCH);
        X509_STORE_CTX_set_error(xs, X509_V_ERR_APPLICATION_VERIFICATION);
        return 0;
    }
    if (!identity_allowed(ctx, leaf)) {
        tls__conn_mark(ssl, TLS_ERR_IDENTITY);
        X509_STORE_CTX_set_error(xs, X509_V_ERR_APPLICATION_VERIFICATION);
        return 0;
    }
    return 1;
}
