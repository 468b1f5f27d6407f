/* dataplane/tls_peer.c: what a TLS peer proved (tls_peer_info): version,
 * resumption, SNI and the client certificate's identity. */
#include "tls_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "lb_err.h"

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
    if (c == NULL || c->state != TLS_CONN_OPEN)
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

const struct tls_peer *tls_peer_identity(struct transport *t)
{
    struct tls_conn *c = t->impl;
    if (c == NULL || c->state != TLS_CONN_OPEN)
        return NULL;
    if (c->peer == NULL) {
        if (SSL_get0_peer_certificate(c->ssl) == NULL)
            return NULL;
        struct tls_peer *p = malloc(sizeof(*p));
        if (p == NULL || tls_peer_info(t, p) != LB_OK) {
            free(p);
            return NULL;
        }
        c->peer = p;
    }
    return c->peer;
}
