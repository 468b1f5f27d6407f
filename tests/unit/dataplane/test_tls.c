/* tests/unit/dataplane/test_tls.c: TLS contexts and the TLS transport,
 * against an OpenSSL client over socketpairs. Certificates are made once per
 * run by tls/make-certs.sh (openssl CLI) in a temp dir. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "lb_err.h"
#include "tls.h"
#include "tls_tickets.h"

/* ---- certificates ------------------------------------------------------- */

static struct {
    char *ca, *crl;
    char *srv_rsa, *srv_rsa_key, *srv_ec, *srv_ec_key;
    char *client, *client_key, *revoked, *revoked_key, *expired, *expired_key;
    char *wrongca, *wrongca_key, *other_key;
    char *pin; /* 32 bytes */
} pem;

static char certdir[256];

static char *slurp(const char *name, size_t *len_out)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", certdir, name);
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "test_tls: cannot open %s\n", path);
        exit(1);
    }
    char *buf = malloc(65536);
    size_t n = fread(buf, 1, 65535, f);
    fclose(f);
    buf[n] = '\0';
    if (len_out)
        *len_out = n;
    return buf;
}

static void rm_tree(const char *dir)
{
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "test_tls: could not remove %s\n", dir);
}

static void certs_make(void)
{
    /* ctest sets LB_SOURCE_DIR; by hand, the script sits next to this file */
    const char *src = getenv("LB_SOURCE_DIR");
    char script[512];
    if (src) {
        snprintf(script, sizeof(script), "%s/tests/unit/dataplane/tls/make-certs.sh", src);
    } else {
        snprintf(script, sizeof(script), "%s", __FILE__);
        char *slash = strrchr(script, '/');
        size_t at = slash ? (size_t)(slash + 1 - script) : 0;
        snprintf(script + at, sizeof(script) - at, "tls/make-certs.sh");
    }
    snprintf(certdir, sizeof(certdir), "/tmp/lb-test-tls-XXXXXX");
    if (mkdtemp(certdir) == NULL) {
        perror("mkdtemp");
        exit(1);
    }
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "sh '%s' '%s'", script, certdir);
    if (system(cmd) != 0) {
        fprintf(stderr, "test_tls: %s failed (see %s/log.txt)\n", script, certdir);
        exit(1);
    }
    pem.ca = slurp("ca.pem", NULL);
    pem.crl = slurp("crl.pem", NULL);
    pem.srv_rsa = slurp("srv-rsa.pem", NULL);
    pem.srv_rsa_key = slurp("srv-rsa.key", NULL);
    pem.srv_ec = slurp("srv-ec.pem", NULL);
    pem.srv_ec_key = slurp("srv-ec.key", NULL);
    pem.client = slurp("client.pem", NULL);
    pem.client_key = slurp("client.key", NULL);
    pem.revoked = slurp("revoked.pem", NULL);
    pem.revoked_key = slurp("revoked.key", NULL);
    pem.expired = slurp("expired.pem", NULL);
    pem.expired_key = slurp("expired.key", NULL);
    pem.wrongca = slurp("wrongca.pem", NULL);
    pem.wrongca_key = slurp("wrongca.key", NULL);
    pem.other_key = slurp("other.key", NULL);
    size_t n = 0;
    pem.pin = slurp("client.pin", &n);
    if (n != 32) {
        fprintf(stderr, "test_tls: client.pin has %zu bytes\n", n);
        exit(1);
    }
    rm_tree(certdir);
}

static void certs_free(void)
{
    char **all[] = {&pem.ca,      &pem.crl,         &pem.srv_rsa,   &pem.srv_rsa_key,
                    &pem.srv_ec,  &pem.srv_ec_key,  &pem.client,    &pem.client_key,
                    &pem.revoked, &pem.revoked_key, &pem.expired,   &pem.expired_key,
                    &pem.wrongca, &pem.wrongca_key, &pem.other_key, &pem.pin};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        free(*all[i]);
}

/* ---- configurations (no allocation: everything points at pem.*) -------- */

struct cfg {
    Lb__V1__Tls tls;
    Lb__V1__Certificate certs[4];
    Lb__V1__Certificate *certp[4];
    char *sni[4][2];
    Lb__V1__ClientVerify verify;
    char *cn[2], *dns[2], *uri[2];
    ProtobufCBinaryData pins[2];
};

static ProtobufCBinaryData bin(const char *s)
{
    return (ProtobufCBinaryData){s ? strlen(s) : 0, (uint8_t *)s};
}

static void cfg_add(struct cfg *c, const char *name, const char *cert, const char *key)
{
    size_t i = c->tls.n_certificates++;
    lb__v1__certificate__init(&c->certs[i]);
    c->certs[i].name = (char *)name;
    c->certs[i].cert_pem = bin(cert);
    c->certs[i].key_pem = bin(key);
    c->certs[i].sni = c->sni[i];
    c->certp[i] = &c->certs[i];
}

/* certificates[0] RSA a.example.com; [1] ECDSA b.example.com, *.b.example.com
 * and the extra name extra.test. */
static void cfg_init(struct cfg *c)
{
    memset(c, 0, sizeof(*c));
    lb__v1__tls__init(&c->tls);
    c->tls.certificates = c->certp;
    cfg_add(c, "rsa-a", pem.srv_rsa, pem.srv_rsa_key);
    cfg_add(c, "", pem.srv_ec, pem.srv_ec_key);
    c->sni[1][0] = "extra.test";
    c->certs[1].n_sni = 1;
    lb__v1__client_verify__init(&c->verify);
    c->verify.allowed_cn = c->cn;
    c->verify.allowed_san_dns = c->dns;
    c->verify.allowed_san_uri = c->uri;
    c->verify.spki_sha256_pins = c->pins;
}

static void cfg_mtls(struct cfg *c, Lb__V1__ClientAuth mode)
{
    c->tls.client_auth = mode;
    c->tls.ca_pem = bin(pem.ca);
}

static struct tls_ctx *ctx_ok(struct cfg *c, struct tls_tickets *k)
{
    struct lb_err err = {0};
    struct tls_ctx *ctx = tls_ctx_new(&c->tls, k, &err);
    ck_assert_msg(ctx != NULL, "tls_ctx_new: %s", err.msg);
    return ctx;
}

static void ctx_refused(struct cfg *c, const char *msg_part)
{
    struct lb_err err = {0};
    struct tls_ctx *ctx = tls_ctx_new(&c->tls, NULL, &err);
    ck_assert_ptr_null(ctx);
    ck_assert_int_eq(err.code, LB_EINVAL);
    ck_assert_msg(strstr(err.msg, msg_part) != NULL, "message \"%s\" lacks \"%s\"", err.msg,
                  msg_part);
    ck_assert_int_eq((int)ERR_peek_error(), 0);
}

/* ---- the client side ----------------------------------------------------- */

struct copts {
    int max_version; /* 0: any */
    const char *cert, *key;
    const char *alpn; /* wire format, NULL: none */
    size_t alpn_len;
    bool no_ticket;
};

static SSL_CTX *client_ctx(const struct copts *o)
{
    SSL_CTX *c = SSL_CTX_new(TLS_client_method());
    ck_assert_ptr_nonnull(c);
    SSL_CTX_set_verify(c, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_mode(c, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
    if (o && o->max_version)
        SSL_CTX_set_max_proto_version(c, o->max_version);
    if (o && o->no_ticket)
        SSL_CTX_set_options(c, SSL_OP_NO_TICKET);
    if (o && o->cert) {
        BIO *b = BIO_new_mem_buf(o->cert, -1);
        X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
        BIO_free(b);
        b = BIO_new_mem_buf(o->key, -1);
        EVP_PKEY *k = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
        BIO_free(b);
        ck_assert(x != NULL && k != NULL);
        ck_assert_int_eq(SSL_CTX_use_certificate(c, x), 1);
        ck_assert_int_eq(SSL_CTX_use_PrivateKey(c, k), 1);
        X509_free(x);
        EVP_PKEY_free(k);
    }
    if (o && o->alpn)
        SSL_CTX_set_alpn_protos(c, (const unsigned char *)o->alpn, (unsigned)o->alpn_len);
    return c;
}

struct pair {
    int sv[2]; /* [0] server (transport), [1] client (SSL) */
    struct transport t;
    SSL *cl;
    int srv; /* handshake: 1 done, -1 failed, 0 pending */
    int cli;
};

static void pair_open(struct pair *p, struct tls_ctx *ctx, SSL_CTX *cctx, const char *sni,
                      SSL_SESSION *sess)
{
    memset(p, 0, sizeof(*p));
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, p->sv), 0);
    struct lb_err err = {0};
    ck_assert_int_eq(tls_transport_init(&p->t, p->sv[0], ctx, &err), LB_OK);
    p->cl = SSL_new(cctx);
    ck_assert_ptr_nonnull(p->cl);
    SSL_set_fd(p->cl, p->sv[1]);
    SSL_set_connect_state(p->cl);
    if (sni)
        SSL_set_tlsext_host_name(p->cl, sni);
    if (sess)
        SSL_set_session(p->cl, sess);
}

/* The client closes cleanly (OpenSSL forgets sessions of connections that
 * end without close_notify), then both sides go. */
static void pair_close(struct pair *p)
{
    if (p->cli == 1)
        SSL_shutdown(p->cl);
    p->t.ops->release(&p->t);
    SSL_free(p->cl);
    close(p->sv[0]);
    close(p->sv[1]);
    ERR_clear_error();
}

/* Runs both handshakes to their end; returns the server's outcome. */
static int pair_handshake(struct pair *p)
{
    for (int i = 0; i < 400 && !(p->srv && p->cli); i++) {
        if (!p->cli) {
            ERR_clear_error();
            int r = SSL_do_handshake(p->cl);
            if (r == 1)
                p->cli = 1;
            else if (SSL_get_error(p->cl, r) != SSL_ERROR_WANT_READ &&
                     SSL_get_error(p->cl, r) != SSL_ERROR_WANT_WRITE)
                p->cli = -1;
        }
        if (!p->srv) {
            ssize_t r = tls_transport_handshake(&p->t);
            if (r == 1)
                p->srv = 1;
            else if (r == TRANSPORT_ERROR)
                p->srv = -1;
            else
                ck_assert(r == TRANSPORT_AGAIN || r == TRANSPORT_WANT_WRITE);
        }
    }
    ERR_clear_error();
    ck_assert_msg(p->srv != 0, "server handshake did not end");
    return p->srv;
}

/* Server sends one byte, the client reads it (and with it any TLS 1.3
 * session tickets); returns the client's session. */
static SSL_SESSION *pair_ticket(struct pair *p)
{
    struct iovec iov = {.iov_base = "x", .iov_len = 1};
    ck_assert_int_eq(p->t.ops->writev(&p->t, &iov, 1), 1);
    char c = 0;
    size_t n = 0;
    for (int i = 0; i < 100 && n == 0; i++)
        SSL_read_ex(p->cl, &c, 1, &n);
    ck_assert_int_eq(n, 1);
    ck_assert_int_eq(c, 'x');
    SSL_SESSION *s = SSL_get1_session(p->cl);
    ck_assert_ptr_nonnull(s);
    ck_assert(SSL_SESSION_is_resumable(s));
    return s;
}

static uint64_t nerr(struct tls_ctx *ctx, enum tls_error e)
{
    struct tls_stats st;
    tls_ctx_stats(ctx, &st);
    return st.errors[e];
}

static uint64_t nerr_total(struct tls_ctx *ctx)
{
    struct tls_stats st;
    tls_ctx_stats(ctx, &st);
    uint64_t n = 0;
    for (int i = 0; i < TLS_ERR_COUNT; i++)
        n += st.errors[i];
    return n;
}

/* One handshake with a fresh client; returns the server outcome and, when
 * <peer> is given and the handshake succeeded, the peer info. */
static int connect_once(struct tls_ctx *ctx, const struct copts *o, const char *sni,
                        struct tls_peer *peer)
{
    SSL_CTX *cctx = client_ctx(o);
    struct pair p;
    pair_open(&p, ctx, cctx, sni, NULL);
    int r = pair_handshake(&p);
    if (r == 1 && peer) {
        ck_assert_int_eq(tls_peer_info(&p.t, peer), LB_OK);
        /* with a client certificate: kept for the connection, made once,
         * the same answer; without one: nothing */
        const struct tls_peer *kept = tls_peer_identity(&p.t);
        if (peer->has_cert) {
            ck_assert_ptr_nonnull(kept);
            ck_assert_ptr_eq(tls_peer_identity(&p.t), kept);
            ck_assert(memcmp(kept, peer, sizeof(*peer)) == 0);
        } else {
            ck_assert_ptr_null(kept);
        }
    }
    pair_close(&p);
    SSL_CTX_free(cctx);
    return r;
}

/* ---- configuration ------------------------------------------------------- */

START_TEST(config_valid_and_cert_info)
{
    struct cfg c;
    cfg_init(&c);
    struct tls_ctx *ctx = ctx_ok(&c, NULL);
    ck_assert_uint_eq(tls_ctx_cert_count(ctx), 2);
    struct tls_cert_info ci;
    ck_assert_int_eq(tls_ctx_cert_info(ctx, 0, &ci), LB_OK);
    ck_assert_str_eq(ci.name, "rsa-a");
    /* made with -days 30 */
    int64_t now = (int64_t)time(NULL);
    ck_assert(ci.not_after > now + 29 * 86400 && ci.not_after < now + 31 * 86400);
    ck_assert_int_eq(tls_ctx_cert_info(ctx, 1, &ci), LB_OK);
    ck_assert_str_eq(ci.name, "certificates[1]");
    ck_assert_int_eq(tls_ctx_cert_info(ctx, 2, &ci), LB_EINVAL);
    ck_assert_str_eq(tls_error_name(TLS_ERR_PIN_MISMATCH), "pin_mismatch");
    ck_assert_str_eq(tls_error_name(TLS_ERR_COUNT), "unknown");
    ck_assert_str_eq(tls_version_name(TLS_VER_13), "TLSv1.3");
    ck_assert_ptr_eq(tls_ctx_ref(ctx), ctx);
    tls_ctx_unref(ctx);
    tls_ctx_unref(ctx);
    tls_ctx_unref(NULL);
}
END_TEST

START_TEST(config_key_mismatch)
{
    struct cfg c;
    cfg_init(&c);
    c.certs[1].key_pem = bin(pem.other_key);
    ctx_refused(&c, "tls.certificates[1].key_pem: the key does not match the certificate");
    cfg_init(&c);
    c.certs[0].key_pem = bin(pem.srv_ec_key); /* a key of the other type */
    ctx_refused(&c, "tls.certificates[0].key_pem: the key does not match the certificate");
}
END_TEST

START_TEST(config_garbage_pem)
{
    struct cfg c;
    cfg_init(&c);
    c.certs[1].cert_pem = bin("-----BEGIN CERTIFICATE-----\nnot base64 at all\n"
                              "-----END CERTIFICATE-----\n");
    ctx_refused(&c, "tls.certificates[1].cert_pem:");
    cfg_init(&c);
    c.certs[0].cert_pem = bin("hello");
    ctx_refused(&c, "tls.certificates[0].cert_pem:");
    cfg_init(&c);
    c.certs[1].key_pem = bin("garbage");
    ctx_refused(&c, "tls.certificates[1].key_pem:");
    cfg_init(&c);
    c.certs[0].key_pem = bin("");
    ctx_refused(&c, "tls.certificates[0].key_pem: empty");
    cfg_init(&c);
    cfg_mtls(&c, LB__V1__CLIENT_AUTH__CLIENT_AUTH_REQUIRE_AND_VERIFY);
    c.tls.ca_pem = bin("junk");
    ctx_refused(&c, "tls.ca_pem:");
    cfg_init(&c);
    cfg_mtls(&c, LB__V1__CLIENT_AUTH__CLIENT_AUTH_REQUIRE_AND_VERIFY);
    c.tls.crl_pem = bin("junk");
    ctx_refused(&c, "tls.crl_pem:");
}
END_TEST

START_TEST(config_other_fields)
{
    struct cfg c;
    cfg_init(&c);
    c.tls.n_certificates = 0;
    ctx_refused(&c, "tls.certificates: at least one");
    cfg_init(&c);
    c.tls.min_version = "TLSv1.1";
    ctx_refused(&c, "tls.min_version:");
    cfg_init(&c);
    c.tls.ciphers = "NOPE-CIPHER";
    ctx_refused(&c, "tls.ciphers:");
    cfg_init(&c);
    c.tls.ciphersuites = "TLS_NOPE";
    ctx_refused(&c, "tls.ciphersuites:");
    cfg_init(&c);
    c.tls.groups = "P-1";
    ctx_refused(&c, "tls.groups:");
    cfg_init(&c);
    c.tls.client_auth = LB__V1__CLIENT_AUTH__CLIENT_AUTH_VERIFY_IF_GIVEN;
    ctx_refused(&c, "tls.ca_pem: required");
    cfg_init(&c);
    c.tls.client_auth = (Lb__V1__ClientAuth)7;
    ctx_refused(&c, "tls.client_auth:");
    cfg_init(&c);
    c.tls.verify = &c.verify;
    c.pins[0] = bin("short");
    c.verify.n_spki_sha256_pins = 1;
    ctx_refused(&c, "tls.verify.spki_sha256_pins[0]: must be 32 bytes");
    cfg_init(&c);
    c.sni[0][0] = "";
    c.certs[0].n_sni = 1;
    ctx_refused(&c, "tls.certificates[0].sni[0]: empty");
}
END_TEST

/* ---- versions, ALPN ------------------------------------------------------ */

START_TEST(version_12_and_13)
{
    struct cfg c;
    cfg_init(&c);
    struct tls_ctx *ctx = ctx_ok(&c, NULL);
    struct tls_peer peer;
    struct copts o12 = {.max_version = TLS1_2_VERSION};
    ck_assert_int_eq(connect_once(ctx, &o12, NULL, &peer), 1);
    ck_assert_str_eq(peer.version, "TLSv1.2");
    ck_assert(!peer.has_cert && !peer.resumed);
    ck_assert_int_eq(connect_once(ctx, NULL, NULL, &peer), 1);
    ck_assert_str_eq(peer.version, "TLSv1.3");
    struct tls_stats st;
    tls_ctx_stats(ctx, &st);
    ck_assert_uint_eq(st.handshakes[TLS_VER_12], 1);
    ck_assert_uint_eq(st.handshakes[TLS_VER_13], 1);
    ck_assert_uint_eq(st.full, 2);
    ck_assert_uint_eq(st.resumed, 0);
    ck_assert_uint_eq(nerr_total(ctx), 0);
    tls_ctx_unref(ctx);
}
END_TEST

START_TEST(min_version_13_refuses_12)
{
    struct cfg c;
    cfg_init(&c);
    c.tls.min_version = "TLSv1.3";
    struct tls_ctx *ctx = ctx_ok(&c, NULL);
    struct copts o12 = {.max_version = TLS1_2_VERSION};
    ck_assert_int_eq(connect_once(ctx, &o12, NULL, NULL), -1);
    ck_assert_uint_eq(nerr(ctx, TLS_ERR_VERSION), 1);
    ck_assert_int_eq(connect_once(ctx, NULL, NULL, NULL), 1);
    tls_ctx_unref(ctx);
}
END_TEST

START_TEST(alpn_selects_http11_refuses_h2_only)
{
    struct cfg c;
    cfg_init(&c);
    struct tls_ctx *ctx = ctx_ok(&c, NULL);
    struct copts both = {.alpn = "\x02h2\x08http/1.1", .alpn_len = 12};
    SSL_CTX *cctx = client_ctx(&both);
    struct pair p;
    pair_open(&p, ctx, cctx, NULL, NULL);
    ck_assert_int_eq(pair_handshake(&p), 1);
    const unsigned char *sel = NULL;
    unsigned len = 0;
    SSL_get0_alpn_selected(p.cl, &sel, &len);
    ck_assert_uint_eq(len, 8);
    ck_assert(memcmp(sel, "http/1.1", 8) == 0);
    pair_close(&p);
    SSL_CTX_free(cctx);

    struct copts h2 = {.alpn = "\x02h2", .alpn_len = 3};
    ck_assert_int_eq(connect_once(ctx, &h2, NULL, NULL), -1);
    ck_assert_uint_eq(nerr(ctx, TLS_ERR_ALPN), 1);
    tls_ctx_unref(ctx);
}
END_TEST

START_TEST(plain_http_is_refused)
{
    struct cfg c;
    cfg_init(&c);
    struct tls_ctx *ctx = ctx_ok(&c, NULL);
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    struct transport t;
    ck_assert_int_eq(tls_transport_init(&t, sv[0], ctx, NULL), LB_OK);
    const char req[] = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    ck_assert_int_eq(write(sv[1], req, sizeof(req) - 1), (ssize_t)sizeof(req) - 1);
    char buf[64];
    ck_assert_int_eq(t.ops->read(&t, buf, sizeof(buf)), TRANSPORT_ERROR);
    ck_assert_int_eq(t.err, EPROTO);
    ck_assert_int_eq(t.ops->read(&t, buf, sizeof(buf)), TRANSPORT_ERROR);
    ck_assert_int_eq(tls_peer_info(&t, &(struct tls_peer){0}), LB_EINVAL);
    ck_assert_ptr_null(tls_peer_identity(&t));
    t.ops->release(&t);
    close(sv[0]);
    close(sv[1]);
    ck_assert_uint_eq(nerr(ctx, TLS_ERR_PLAIN_HTTP), 1);
    ck_assert_uint_eq(nerr_total(ctx), 1); /* counted once */
    tls_ctx_unref(ctx);
}
END_TEST

/* ---- SNI ----------------------------------------------------------------- */

/* Connects with <sni> and returns the served certificate's CN and key type. */
static void served(struct tls_ctx *ctx, const char *sni, int max_version, char *cn, size_t cap,
                   int *key_type)
{
    struct copts o = {.max_version = max_version};
    SSL_CTX *cctx = client_ctx(&o);
    struct pair p;
    pair_open(&p, ctx, cctx, sni, NULL);
    ck_assert_int_eq(pair_handshake(&p), 1);
    X509 *x = SSL_get0_peer_certificate(p.cl);
    ck_assert_ptr_nonnull(x);
    X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, (int)cap);
    *key_type = EVP_PKEY_get_base_id(X509_get0_pubkey(x));
    struct tls_peer peer;
    ck_assert_int_eq(tls_peer_info(&p.t, &peer), LB_OK);
    ck_assert_str_eq(peer.sni, sni ? sni : "");
    pair_close(&p);
    SSL_CTX_free(cctx);
}

START_TEST(sni_picks_certificate)
{
    struct cfg c;
    cfg_init(&c);
    struct tls_ctx *ctx = ctx_ok(&c, NULL);
    static const struct {
        const char *sni;
        const char *cn;
        int type;
    } cases[] = {
        {"a.example.com", "a.example.com", EVP_PKEY_RSA},
        {"b.example.com", "b.example.com", EVP_PKEY_EC},
        {"B.Example.COM", "b.example.com", EVP_PKEY_EC},
        {"x.b.example.com", "b.example.com", EVP_PKEY_EC},    /* wildcard */
        {"x.y.b.example.com", "a.example.com", EVP_PKEY_RSA}, /* one label only */
        {"extra.test", "b.example.com", EVP_PKEY_EC},         /* extra sni name */
        {"unknown.test", "a.example.com", EVP_PKEY_RSA},      /* default */
        {NULL, "a.example.com", EVP_PKEY_RSA},                /* no SNI: default */
    };
    for (int v = 0; v < 2; v++) {
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
            char cn[128] = "";
            int type = 0;
            served(ctx, cases[i].sni, v ? TLS1_2_VERSION : 0, cn, sizeof(cn), &type);
            ck_assert_msg(strcmp(cn, cases[i].cn) == 0, "sni %s: served %s", cases[i].sni, cn);
            ck_assert_int_eq(type, cases[i].type);
        }
    }
    tls_ctx_unref(ctx);
}
END_TEST

START_TEST(sni_default_is_first_certificate)
{
    struct cfg c;
    memset(&c, 0, sizeof(c));
    lb__v1__tls__init(&c.tls);
    c.tls.certificates = c.certp;
    cfg_add(&c, "ec", pem.srv_ec, pem.srv_ec_key);
    cfg_add(&c, "rsa", pem.srv_rsa, pem.srv_rsa_key);
    struct tls_ctx *ctx = ctx_ok(&c, NULL);
    char cn[128] = "";
    int type = 0;
    served(ctx, "nothing.test", 0, cn, sizeof(cn), &type);
    ck_assert_str_eq(cn, "b.example.com");
    ck_assert_int_eq(type, EVP_PKEY_EC);
    served(ctx, "a.example.com", 0, cn, sizeof(cn), &type);
    ck_assert_str_eq(cn, "a.example.com");
    ck_assert_int_eq(type, EVP_PKEY_RSA);
    tls_ctx_unref(ctx);
}
END_TEST

/* ---- client_auth --------------------------------------------------------- */

static const struct copts no_cert = {0};

static struct copts with(const char *cert, const char *key, int max_version)
{
    return (struct copts){.cert = cert, .key = key, .max_version = max_version};
}

START_TEST(client_auth_none)
{
    struct cfg c;
    cfg_init(&c);
    struct tls_ctx *ctx = ctx_ok(&c, NULL);
    struct copts o = with(pem.client, pem.client_key, 0);
    struct tls_peer peer;
    ck_assert_int_eq(connect_once(ctx, &o, NULL, &peer), 1);
    ck_assert(!peer.has_cert); /* never asked for */
    tls_ctx_unref(ctx);
}
END_TEST

START_TEST(client_auth_request)
{
    for (int v = 0; v < 2; v++) {
        int mv = v ? TLS1_2_VERSION : 0;
        struct cfg c;
        cfg_init(&c);
        c.tls.client_auth = LB__V1__CLIENT_AUTH__CLIENT_AUTH_REQUEST;
        struct tls_ctx *ctx = ctx_ok(&c, NULL);
        struct tls_peer peer;
        struct copts o = no_cert;
        o.max_version = mv;
        ck_assert_int_eq(connect_once(ctx, &o, NULL, &peer), 1);
        ck_assert(!peer.has_cert);
        o = with(pem.wrongca, pem.wrongca_key, mv);
        ck_assert_int_eq(connect_once(ctx, &o, NULL, &peer), 1);
        ck_assert(peer.has_cert && !peer.verified);
        ck_assert_str_eq(peer.subject, "CN=client1");
        ck_assert_uint_eq(nerr_total(ctx), 0);
        tls_ctx_unref(ctx);
    }
}
END_TEST

START_TEST(client_auth_require_any)
{
    for (int v = 0; v < 2; v++) {
        int mv = v ? TLS1_2_VERSION : 0;
        struct cfg c;
        cfg_init(&c);
        c.tls.client_auth = LB__V1__CLIENT_AUTH__CLIENT_AUTH_REQUIRE_ANY;
        struct tls_ctx *ctx = ctx_ok(&c, NULL);
        struct copts o = no_cert;
        o.max_version = mv;
        ck_assert_int_eq(connect_once(ctx, &o, NULL, NULL), -1);
        ck_assert_uint_eq(nerr(ctx, TLS_ERR_NO_CLIENT_CERT), 1);
        struct tls_peer peer;
        o = with(pem.expired, pem.expired_key, mv); /* not checked at all */
        ck_assert_int_eq(connect_once(ctx, &o, NULL, &peer), 1);
        ck_assert(peer.has_cert && !peer.verified);
        ck_assert_str_eq(peer.subject, "CN=expired");
        tls_ctx_unref(ctx);
    }
}
END_TEST

START_TEST(client_auth_verify_if_given)
{
    for (int v = 0; v < 2; v++) {
        int mv = v ? TLS1_2_VERSION : 0;
        struct cfg c;
        cfg_init(&c);
        cfg_mtls(&c, LB__V1__CLIENT_AUTH__CLIENT_AUTH_VERIFY_IF_GIVEN);
        struct tls_ctx *ctx = ctx_ok(&c, NULL);
        struct tls_peer peer;
        struct copts o = no_cert;
        o.max_version = mv;
        ck_assert_int_eq(connect_once(ctx, &o, NULL, &peer), 1);
        ck_assert(!peer.has_cert && !peer.verified);
        o = with(pem.client, pem.client_key, mv);
        ck_assert_int_eq(connect_once(ctx, &o, NULL, &peer), 1);
        ck_assert(peer.has_cert && peer.verified);
        o = with(pem.wrongca, pem.wrongca_key, mv);
        ck_assert_int_eq(connect_once(ctx, &o, NULL, NULL), -1);
        ck_assert_uint_eq(nerr(ctx, TLS_ERR_VERIFY_FAILED), 1);
        tls_ctx_unref(ctx);
    }
}
END_TEST

START_TEST(client_auth_require_and_verify)
{
    for (int v = 0; v < 2; v++) {
        int mv = v ? TLS1_2_VERSION : 0;
        struct cfg c;
        cfg_init(&c);
        cfg_mtls(&c, LB__V1__CLIENT_AUTH__CLIENT_AUTH_REQUIRE_AND_VERIFY);
        struct tls_ctx *ctx = ctx_ok(&c, NULL);
        struct copts o = no_cert;
        o.max_version = mv;
        ck_assert_int_eq(connect_once(ctx, &o, NULL, NULL), -1);
        ck_assert_uint_eq(nerr(ctx, TLS_ERR_NO_CLIENT_CERT), 1);
        o = with(pem.wrongca, pem.wrongca_key, mv);
        ck_assert_int_eq(connect_once(ctx, &o, NULL, NULL), -1);
        ck_assert_uint_eq(nerr(ctx, TLS_ERR_VERIFY_FAILED), 1);
        o = with(pem.expired, pem.expired_key, mv);
        ck_assert_int_eq(connect_once(ctx, &o, NULL, NULL), -1);
        ck_assert_uint_eq(nerr(ctx, TLS_ERR_CERT_EXPIRED), 1);
        /* no CRL configured: the revoked certificate passes */
        o = with(pem.revoked, pem.revoked_key, mv);
        ck_assert_int_eq(connect_once(ctx, &o, NULL, NULL), 1);

        struct tls_peer peer;
        o = with(pem.client, pem.client_key, mv);
        ck_assert_int_eq(connect_once(ctx, &o, "a.example.com", &peer), 1);
        ck_assert(peer.has_cert && peer.verified);
        ck_assert_str_eq(peer.subject, "CN=client1");
        ck_assert_str_eq(peer.san_uri, "spiffe://example.org/ns/default/sa/client1");
        ck_assert_str_eq(peer.sni, "a.example.com");
        ck_assert_str_eq(peer.version, v ? "TLSv1.2" : "TLSv1.3");
        /* the fingerprint is SHA-256 of the certificate's DER */
        BIO *b = BIO_new_mem_buf(pem.client, -1);
        X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
        BIO_free(b);
        unsigned char md[32];
        unsigned mdlen = 0;
        X509_digest(x, EVP_sha256(), md, &mdlen);
        X509_free(x);
        char hex[65];
        for (int i = 0; i < 32; i++)
            snprintf(hex + 2 * i, 3, "%02x", md[i]);
        ck_assert_str_eq(peer.fingerprint, hex);
        tls_ctx_unref(ctx);
    }
}
END_TEST

START_TEST(crl_refuses_revoked)
{
    struct cfg c;
    cfg_init(&c);
    cfg_mtls(&c, LB__V1__CLIENT_AUTH__CLIENT_AUTH_REQUIRE_AND_VERIFY);
    c.tls.crl_pem = bin(pem.crl);
    struct tls_ctx *ctx = ctx_ok(&c, NULL);
    struct copts o = with(pem.revoked, pem.revoked_key, 0);
    ck_assert_int_eq(connect_once(ctx, &o, NULL, NULL), -1);
    ck_assert_uint_eq(nerr(ctx, TLS_ERR_CERT_REVOKED), 1);
    o = with(pem.client, pem.client_key, 0);
    ck_assert_int_eq(connect_once(ctx, &o, NULL, NULL), 1);
    tls_ctx_unref(ctx);
}
END_TEST

/* ---- pins and allow-lists ------------------------------------------------ */

static char bad_pin[32];

START_TEST(pins_accept_and_refuse)
{
    struct cfg c;
    cfg_init(&c);
    cfg_mtls(&c, LB__V1__CLIENT_AUTH__CLIENT_AUTH_REQUIRE_AND_VERIFY);
    c.tls.verify = &c.verify;
    memset(bad_pin, 0xaa, sizeof(bad_pin));
    c.pins[0] = (ProtobufCBinaryData){32, (uint8_t *)bad_pin};
    c.pins[1] = (ProtobufCBinaryData){32, (uint8_t *)pem.pin};
    c.verify.n_spki_sha256_pins = 2;
    struct tls_ctx *ctx = ctx_ok(&c, NULL);
    struct copts o = with(pem.client, pem.client_key, 0);
    ck_assert_int_eq(connect_once(ctx, &o, NULL, NULL), 1);
    o = with(pem.revoked, pem.revoked_key, TLS1_2_VERSION); /* valid chain, other key */
    ck_assert_int_eq(connect_once(ctx, &o, NULL, NULL), -1);
    ck_assert_uint_eq(nerr(ctx, TLS_ERR_PIN_MISMATCH), 1);
    tls_ctx_unref(ctx);

    /* only the wrong pin: the good client is refused too, and in mode 2 a
     * pin is the only thing that counts */
    c.verify.n_spki_sha256_pins = 1;
    c.tls.client_auth = LB__V1__CLIENT_AUTH__CLIENT_AUTH_REQUIRE_ANY;
    ctx = ctx_ok(&c, NULL);
    o = with(pem.client, pem.client_key, 0);
    ck_assert_int_eq(connect_once(ctx, &o, NULL, NULL), -1);
    ck_assert_uint_eq(nerr(ctx, TLS_ERR_PIN_MISMATCH), 1);
    tls_ctx_unref(ctx);
}
END_TEST

START_TEST(allow_lists_accept_and_refuse)
{
    struct cfg c;
    cfg_init(&c);
    cfg_mtls(&c, LB__V1__CLIENT_AUTH__CLIENT_AUTH_REQUIRE_AND_VERIFY);
    c.tls.verify = &c.verify;
    struct copts good = with(pem.client, pem.client_key, 0);
    struct copts other = with(pem.revoked, pem.revoked_key, 0);

    c.uri[0] = "spiffe://example.org/ns/default/sa/client1";
    c.verify.n_allowed_san_uri = 1;
    struct tls_ctx *ctx = ctx_ok(&c, NULL);
    ck_assert_int_eq(connect_once(ctx, &good, NULL, NULL), 1);
    ck_assert_int_eq(connect_once(ctx, &other, NULL, NULL), -1);
    ck_assert_uint_eq(nerr(ctx, TLS_ERR_IDENTITY), 1);
    tls_ctx_unref(ctx);

    c.uri[0] = "spiffe://example.org/ns/default/sa/someone-else";
    ctx = ctx_ok(&c, NULL);
    ck_assert_int_eq(connect_once(ctx, &good, NULL, NULL), -1);
    ck_assert_uint_eq(nerr(ctx, TLS_ERR_IDENTITY), 1);
    tls_ctx_unref(ctx);

    /* any list may admit: CN of the other client, DNS of the good one */
    c.cn[0] = "revoked";
    c.verify.n_allowed_cn = 1;
    c.dns[0] = "client1.example.org";
    c.verify.n_allowed_san_dns = 1;
    ctx = ctx_ok(&c, NULL);
    ck_assert_int_eq(connect_once(ctx, &good, NULL, NULL), 1);
    ck_assert_int_eq(connect_once(ctx, &other, NULL, NULL), 1);
    tls_ctx_unref(ctx);

    c.cn[0] = "client1";
    c.verify.n_allowed_san_dns = 0;
    c.verify.n_allowed_san_uri = 0;
    ctx = ctx_ok(&c, NULL);
    ck_assert_int_eq(connect_once(ctx, &good, NULL, NULL), 1);
    ck_assert_int_eq(connect_once(ctx, &other, NULL, NULL), -1);
    ck_assert_uint_eq(nerr(ctx, TLS_ERR_IDENTITY), 1);
    tls_ctx_unref(ctx);
}
END_TEST

/* ---- resumption ---------------------------------------------------------- */

/* First a full handshake, then one offering its session: is it resumed? */
static SSL_SESSION *full_handshake(struct tls_ctx *ctx, SSL_CTX *cctx)
{
    struct pair p;
    pair_open(&p, ctx, cctx, "a.example.com", NULL);
    ck_assert_int_eq(pair_handshake(&p), 1);
    ck_assert(!SSL_session_reused(p.cl));
    SSL_SESSION *s = pair_ticket(&p);
    p.t.ops->shutdown_write(&p.t);
    pair_close(&p);
    return s;
}

/* Offers a copy of <s>: an OpenSSL client uses a TLS 1.3 session once. */
static bool resumes(struct tls_ctx *ctx, SSL_CTX *cctx, SSL_SESSION *s, SSL_SESSION **next)
{
    SSL_SESSION *copy = SSL_SESSION_dup(s);
    ck_assert(SSL_SESSION_is_resumable(copy));
    struct pair p;
    pair_open(&p, ctx, cctx, "a.example.com", copy);
    SSL_SESSION_free(copy);
    ck_assert_int_eq(pair_handshake(&p), 1);
    bool reused = SSL_session_reused(p.cl);
    struct tls_peer peer;
    ck_assert_int_eq(tls_peer_info(&p.t, &peer), LB_OK);
    ck_assert(peer.resumed == reused);
    if (next)
        *next = pair_ticket(&p);
    pair_close(&p);
    return reused;
}

START_TEST(resume_same_context)
{
    struct copts opts[3] = {
        {0}, {.max_version = TLS1_2_VERSION}, {.max_version = TLS1_2_VERSION, .no_ticket = true}};
    for (int i = 0; i < 3; i++) {
        struct cfg c;
        cfg_init(&c);
        struct tls_ctx *ctx = ctx_ok(&c, NULL);
        SSL_CTX *cctx = client_ctx(&opts[i]);
        SSL_SESSION *s = full_handshake(ctx, cctx);
        ck_assert_msg(resumes(ctx, cctx, s, NULL), "variant %d not resumed", i);
        struct tls_stats st;
        tls_ctx_stats(ctx, &st);
        ck_assert_uint_eq(st.full, 1);
        ck_assert_uint_eq(st.resumed, 1);
        SSL_SESSION_free(s);
        SSL_CTX_free(cctx);
        tls_ctx_unref(ctx);
    }
}
END_TEST

START_TEST(resume_mtls_keeps_identity)
{
    struct cfg c;
    cfg_init(&c);
    cfg_mtls(&c, LB__V1__CLIENT_AUTH__CLIENT_AUTH_REQUIRE_AND_VERIFY);
    struct tls_ctx *ctx = ctx_ok(&c, NULL);
    struct copts o = with(pem.client, pem.client_key, 0);
    SSL_CTX *cctx = client_ctx(&o);
    SSL_SESSION *s = full_handshake(ctx, cctx);
    struct pair p;
    pair_open(&p, ctx, cctx, "a.example.com", s);
    ck_assert_int_eq(pair_handshake(&p), 1);
    ck_assert(SSL_session_reused(p.cl));
    struct tls_peer peer;
    ck_assert_int_eq(tls_peer_info(&p.t, &peer), LB_OK);
    ck_assert(peer.resumed && peer.has_cert && peer.verified);
    ck_assert_str_eq(peer.san_uri, "spiffe://example.org/ns/default/sa/client1");
    pair_close(&p);
    SSL_SESSION_free(s);
    SSL_CTX_free(cctx);
    tls_ctx_unref(ctx);
}
END_TEST

START_TEST(resume_across_reload_with_shared_keys)
{
    for (int v = 0; v < 2; v++) {
        struct copts o = {.max_version = v ? TLS1_2_VERSION : 0};
        struct tls_tickets *keys = tls_tickets_new(NULL, NULL, NULL);
        struct cfg c;
        cfg_init(&c);
        struct tls_ctx *old = ctx_ok(&c, keys);
        SSL_CTX *cctx = client_ctx(&o);
        SSL_SESSION *s = full_handshake(old, cctx);
        tls_ctx_unref(old); /* the reload */
        struct tls_ctx *fresh = ctx_ok(&c, keys);
        ck_assert(resumes(fresh, cctx, s, NULL));
        tls_ctx_unref(fresh);

        /* the same config with its own key store cannot read the ticket */
        struct tls_ctx *alone = ctx_ok(&c, NULL);
        ck_assert(!resumes(alone, cctx, s, NULL));
        tls_ctx_unref(alone);

        /* another config on the same keys: the session is not for it */
        c.tls.ciphers = "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES256-GCM-SHA384";
        struct tls_ctx *other = ctx_ok(&c, keys);
        ck_assert(!resumes(other, cctx, s, NULL));
        tls_ctx_unref(other);

        SSL_SESSION_free(s);
        SSL_CTX_free(cctx);
        tls_tickets_unref(keys);
    }
}
END_TEST

static bool same_ticket(SSL_SESSION *a, SSL_SESSION *b)
{
    const unsigned char *ta, *tb;
    size_t la, lb;
    SSL_SESSION_get0_ticket(a, &ta, &la);
    SSL_SESSION_get0_ticket(b, &tb, &lb);
    return la == lb && memcmp(ta, tb, la) == 0;
}

/* Each resumed TLS 1.3 handshake hands out a fresh ticket, so a client that
 * uses every ticket once keeps resuming; TLS 1.2 tickets stay reusable. */
START_TEST(resume_chain_gets_fresh_tickets)
{
    for (int v = 0; v < 2; v++) {
        struct copts o = {.max_version = v ? TLS1_2_VERSION : 0};
        struct cfg c;
        cfg_init(&c);
        struct tls_ctx *ctx = ctx_ok(&c, NULL);
        SSL_CTX *cctx = client_ctx(&o);
        SSL_SESSION *s = full_handshake(ctx, cctx);
        for (int i = 0; i < 3; i++) {
            SSL_SESSION *next = NULL;
            ck_assert_msg(resumes(ctx, cctx, s, &next), "v%d: hop %d not resumed", v, i);
            ck_assert_msg(v == 1 || !same_ticket(s, next), "hop %d: no fresh ticket", i);
            SSL_SESSION_free(s);
            s = next;
        }
        struct tls_stats st;
        tls_ctx_stats(ctx, &st);
        ck_assert_uint_eq(st.full, 1);
        ck_assert_uint_eq(st.resumed, 3);
        SSL_SESSION_free(s);
        SSL_CTX_free(cctx);
        tls_ctx_unref(ctx);
    }
}
END_TEST

/* A context that replaces another counts on from its counters, and the old
 * one's remaining connections count into the same ones. */
START_TEST(counters_continue_across_contexts)
{
    struct cfg c;
    cfg_init(&c);
    struct tls_ctx *old = ctx_ok(&c, NULL);
    ck_assert_int_eq(connect_once(old, NULL, "a.example.com", NULL), 1);
    struct tls_ctx *fresh = ctx_ok(&c, NULL);
    tls_ctx_continue_counters(fresh, old);
    ck_assert_int_eq(connect_once(fresh, NULL, "a.example.com", NULL), 1);
    ck_assert_int_eq(connect_once(old, NULL, "a.example.com", NULL), 1);
    tls_ctx_unref(old);
    ck_assert_int_eq(connect_once(fresh, NULL, "a.example.com", NULL), 1);
    struct tls_stats st;
    tls_ctx_stats(fresh, &st);
    ck_assert_uint_eq(st.full, 4);
    ck_assert_uint_eq(st.handshakes[TLS_VER_13], 4);
    tls_ctx_continue_counters(fresh, fresh);
    tls_ctx_stats(fresh, &st);
    ck_assert_uint_eq(st.full, 4);
    tls_ctx_unref(fresh);
}
END_TEST

static uint64_t fake_clock(void *arg)
{
    return *(uint64_t *)arg;
}

START_TEST(ticket_keys_rotate)
{
    uint64_t now = 1000;
    struct tls_tickets *keys = tls_tickets_new(fake_clock, &now, NULL);
    struct cfg c;
    cfg_init(&c);
    c.tls.ticket_rotation_s = 100;
    struct tls_ctx *ctx = ctx_ok(&c, keys);
    tls_tickets_unref(keys); /* the context keeps it */
    SSL_CTX *cctx = client_ctx(NULL);
    SSL_SESSION *s1 = full_handshake(ctx, cctx); /* key 1 made at 1000 */
    ck_assert_uint_eq(tls_tickets_generation(keys), 1);
    now = 1099;
    ck_assert(resumes(ctx, cctx, s1, NULL));
    ck_assert_uint_eq(tls_tickets_generation(keys), 1);
    now = 1150; /* key 1 only decrypts now; the new ticket uses key 2 */
    SSL_SESSION *s2 = NULL;
    ck_assert(resumes(ctx, cctx, s1, &s2));
    ck_assert_uint_eq(tls_tickets_generation(keys), 2);
    now = 1160; /* key 1 is the previous key now and still decrypts */
    ck_assert(resumes(ctx, cctx, s1, NULL));
    ck_assert_uint_eq(tls_tickets_generation(keys), 2);
    now = 1200; /* key 1 is two periods old */
    ck_assert(!resumes(ctx, cctx, s1, NULL));
    ck_assert(resumes(ctx, cctx, s2, NULL));
    now = 1349; /* key 2 (made at 1150) still decrypts */
    ck_assert(resumes(ctx, cctx, s2, NULL));
    now = 1351;
    SSL_SESSION *s3 = NULL;
    ck_assert(!resumes(ctx, cctx, s2, &s3));
    SSL_SESSION_free(s1);
    SSL_SESSION_free(s2);
    SSL_SESSION_free(s3);
    SSL_CTX_free(cctx);
    tls_ctx_unref(ctx);
}
END_TEST

/* A process that takes over (dataplane/handover.h) imports the keys of the
 * one it replaces: tickets issued before resume after, with the keys' ages
 * kept on the new store's clock. */
START_TEST(ticket_keys_move_to_another_store)
{
    uint64_t now_a = 1000, now_b = 50000;
    struct tls_tickets *a = tls_tickets_new(fake_clock, &now_a, NULL);
    struct tls_tickets *b = tls_tickets_new(fake_clock, &now_b, NULL);
    struct cfg c;
    cfg_init(&c);
    c.tls.ticket_rotation_s = 100;
    struct tls_ctx *ctx_a = ctx_ok(&c, a);
    struct tls_ctx *ctx_b = ctx_ok(&c, b);
    SSL_CTX *cctx = client_ctx(NULL);
    SSL_SESSION *s1 = full_handshake(ctx_a, cctx);
    ck_assert(!resumes(ctx_b, cctx, s1, NULL)); /* b has keys of its own */
    now_a = 1040;
    uint8_t blob[TLS_TICKETS_EXPORT_LEN];
    tls_tickets_export(a, blob);
    struct lb_err err = {0};
    ck_assert_int_eq(tls_tickets_import(b, blob, sizeof(blob) - 1, &err), LB_EINVAL);
    ck_assert_int_eq(tls_tickets_import(b, blob, sizeof(blob), &err), LB_OK);
    ck_assert_uint_eq(tls_tickets_generation(b), tls_tickets_generation(a));
    ck_assert(resumes(ctx_b, cctx, s1, NULL));
    now_b += 59; /* the key is 99 s old: still current */
    ck_assert(resumes(ctx_b, cctx, s1, NULL));
    ck_assert_uint_eq(tls_tickets_generation(b), 1);
    now_b += 2; /* 101 s: the next ticket needs a new key */
    SSL_SESSION *s2 = NULL;
    ck_assert(resumes(ctx_b, cctx, s1, &s2));
    ck_assert_uint_eq(tls_tickets_generation(b), 2);
    SSL_SESSION_free(s1);
    SSL_SESSION_free(s2);
    SSL_CTX_free(cctx);
    tls_ctx_unref(ctx_a);
    tls_ctx_unref(ctx_b);
    tls_tickets_unref(a);
    tls_tickets_unref(b);
}
END_TEST

/* ---- data ---------------------------------------------------------------- */

#define MIB (1u << 20)

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

START_TEST(data_round_trip_1mib)
{
    for (int v = 0; v < 2; v++) {
        struct cfg c;
        cfg_init(&c);
        struct tls_ctx *ctx = ctx_ok(&c, NULL);
        struct copts o = {.max_version = v ? TLS1_2_VERSION : 0};
        SSL_CTX *cctx = client_ctx(&o);
        struct pair p;
        pair_open(&p, ctx, cctx, NULL, NULL);
        unsigned char *up = malloc(MIB), *down = malloc(MIB);
        unsigned char *got_up = malloc(MIB), *got_down = malloc(MIB);
        for (size_t i = 0; i < MIB; i++) {
            up[i] = (unsigned char)(i * 7 + 1);
            down[i] = (unsigned char)(i * 13 + 5);
        }
        size_t sent_up = 0, recv_up = 0, sent_down = 0, recv_down = 0;
        int srv_writes = 0;
        double deadline = now_s() + 20;
        /* the server's handshake runs inside read and writev */
        for (long it = 0; it < 2000000 && now_s() < deadline; it++) {
            if (recv_up == MIB && recv_down == MIB)
                break;
            size_t n = 0;
            if (sent_up < MIB) {
                ERR_clear_error();
                size_t chunk = MIB - sent_up < 50000 ? MIB - sent_up : 50000;
                if (SSL_write_ex(p.cl, up + sent_up, chunk, &n) == 1)
                    sent_up += n;
            }
            if (recv_up < MIB) {
                ssize_t r = p.t.ops->read(&p.t, got_up + recv_up, 20000);
                ck_assert_msg(r > 0 || r == TRANSPORT_AGAIN || r == TRANSPORT_WANT_WRITE,
                              "server read %zd err %d", r, p.t.err);
                if (r > 0)
                    recv_up += (size_t)r;
            }
            if (sent_down < MIB) {
                /* a small piece, a middle one, then the rest: coalescing */
                size_t left = MIB - sent_down;
                size_t a = left < 37 ? left : 37;
                size_t b = left - a < 3000 ? left - a : 3000;
                struct iovec iov[3] = {{down + sent_down, a},
                                       {down + sent_down + a, b},
                                       {down + sent_down + a + b, left - a - b}};
                ssize_t r = p.t.ops->writev(&p.t, iov, 3);
                ck_assert_msg(r >= 0 || r == TRANSPORT_AGAIN || r == TRANSPORT_WANT_WRITE,
                              "server writev %zd err %d", r, p.t.err);
                if (r > 0) {
                    sent_down += (size_t)r;
                    srv_writes++;
                }
            }
            if (recv_down < MIB) {
                ERR_clear_error();
                if (SSL_read_ex(p.cl, got_down + recv_down, MIB - recv_down, &n) == 1)
                    recv_down += n;
            }
        }
        ck_assert_uint_eq(recv_up, MIB);
        ck_assert_uint_eq(recv_down, MIB);
        ck_assert(memcmp(up, got_up, MIB) == 0);
        ck_assert(memcmp(down, got_down, MIB) == 0);
        ck_assert_int_gt(srv_writes, 0);

        /* close_notify from the client: the server reads 0 */
        ck_assert_int_ge(SSL_shutdown(p.cl), 0);
        char buf[16];
        ck_assert_int_eq(p.t.ops->read(&p.t, buf, sizeof(buf)), 0);
        /* and the server's close_notify reaches the client */
        p.t.ops->shutdown_write(&p.t);
        size_t n = 0;
        ck_assert_int_eq(SSL_read_ex(p.cl, buf, sizeof(buf), &n), 0);
        ck_assert_int_eq(SSL_get_error(p.cl, 0), SSL_ERROR_ZERO_RETURN);
        pair_close(&p);
        free(up);
        free(down);
        free(got_up);
        free(got_down);
        SSL_CTX_free(cctx);
        tls_ctx_unref(ctx);
    }
}
END_TEST

START_TEST(eof_without_close_notify_is_error)
{
    struct cfg c;
    cfg_init(&c);
    struct tls_ctx *ctx = ctx_ok(&c, NULL);
    SSL_CTX *cctx = client_ctx(NULL);
    struct pair p;
    pair_open(&p, ctx, cctx, NULL, NULL);
    ck_assert_int_eq(pair_handshake(&p), 1);
    ck_assert_int_eq(SSL_write(p.cl, "hi", 2), 2);
    char buf[16];
    ssize_t r = TRANSPORT_AGAIN;
    for (int i = 0; i < 10 && r == TRANSPORT_AGAIN; i++)
        r = p.t.ops->read(&p.t, buf, sizeof(buf));
    ck_assert_int_eq(r, 2);
    shutdown(p.sv[1], SHUT_WR); /* TCP-style FIN, no close_notify */
    ck_assert_int_eq(p.t.ops->read(&p.t, buf, sizeof(buf)), TRANSPORT_ERROR);
    ck_assert_int_eq(p.t.err, ECONNABORTED);
    pair_close(&p);
    SSL_CTX_free(cctx);
    tls_ctx_unref(ctx);
}
END_TEST

START_TEST(handshake_eof_and_abandoned)
{
    struct cfg c;
    cfg_init(&c);
    struct tls_ctx *ctx = ctx_ok(&c, NULL);
    SSL_CTX *cctx = client_ctx(NULL);
    for (int k = 0; k < 3; k++) {
        struct pair p;
        pair_open(&p, ctx, cctx, NULL, NULL);
        ERR_clear_error();
        ck_assert_int_eq(SSL_do_handshake(p.cl), -1); /* ClientHello sent */
        char buf[16];
        ck_assert_int_eq(p.t.ops->read(&p.t, buf, sizeof(buf)), TRANSPORT_AGAIN);
        if (k == 0) {
            tls_transport_note_timeout(&p.t);
        } else if (k == 2) {
            close(p.sv[1]);
            p.sv[1] = -1;
            ck_assert_int_eq(p.t.ops->read(&p.t, buf, sizeof(buf)), TRANSPORT_ERROR);
        }
        pair_close(&p);
    }
    ck_assert_uint_eq(nerr(ctx, TLS_ERR_TIMEOUT), 1);
    ck_assert_uint_eq(nerr(ctx, TLS_ERR_INCOMPLETE), 1);
    ck_assert_uint_eq(nerr(ctx, TLS_ERR_EOF) + nerr(ctx, TLS_ERR_IO), 1);
    ck_assert_uint_eq(nerr_total(ctx), 3);
    SSL_CTX_free(cctx);
    tls_ctx_unref(ctx);
}
END_TEST

START_TEST(writev_retry_must_offer_the_pending_bytes)
{
    struct cfg c;
    cfg_init(&c);
    struct tls_ctx *ctx = ctx_ok(&c, NULL);
    SSL_CTX *cctx = client_ctx(NULL);
    struct pair p;
    pair_open(&p, ctx, cctx, NULL, NULL);
    ck_assert_int_eq(pair_handshake(&p), 1);
    static unsigned char big[1 << 16];
    memset(big, 'z', sizeof(big));
    struct iovec iov = {big, sizeof(big)};
    ssize_t r = 0;
    for (int i = 0; i < 1000 && r >= 0; i++)
        r = p.t.ops->writev(&p.t, &iov, 1);
    ck_assert_int_eq(r, TRANSPORT_WANT_WRITE); /* the client never reads */
    iov.iov_len = 10;
    ck_assert_int_eq(p.t.ops->writev(&p.t, &iov, 1), TRANSPORT_ERROR);
    ck_assert_int_eq(p.t.err, EINVAL);
    iov.iov_len = sizeof(big);
    ck_assert_int_eq(p.t.ops->writev(&p.t, &iov, 1), TRANSPORT_WANT_WRITE);
    pair_close(&p);
    SSL_CTX_free(cctx);
    tls_ctx_unref(ctx);
}
END_TEST

static int records_in;

static void count_records(int write_p, int version, int content_type, const void *buf, size_t len,
                          SSL *ssl, void *arg)
{
    const unsigned char *h = buf;
    if (!write_p && content_type == SSL3_RT_HEADER && len >= 1 && h[0] == SSL3_RT_APPLICATION_DATA)
        records_in++;
}

START_TEST(writev_coalesces_small_iovecs)
{
    for (int v = 0; v < 2; v++) {
        struct cfg c;
        cfg_init(&c);
        struct tls_ctx *ctx = ctx_ok(&c, NULL);
        struct copts o = {.max_version = v ? TLS1_2_VERSION : 0};
        SSL_CTX *cctx = client_ctx(&o);
        struct pair p;
        pair_open(&p, ctx, cctx, NULL, NULL);
        ck_assert_int_eq(pair_handshake(&p), 1);
        char buf[64];
        size_t n = 0;
        ERR_clear_error();
        SSL_read_ex(p.cl, buf, sizeof(buf), &n); /* TLS 1.3 tickets */
        SSL_set_msg_callback(p.cl, count_records);
        records_in = 0;
        struct iovec iov[4] = {
            {"HTTP/1.1 200 OK\r\n", 17}, {"a: b\r\n\r\n", 8}, {"x", 1}, {"yz", 2}};
        ck_assert_int_eq(p.t.ops->writev(&p.t, iov, 4), 28);
        size_t got = 0;
        for (int i = 0; i < 10 && got < 28; i++)
            if (SSL_read_ex(p.cl, buf + got, sizeof(buf) - got, &n) == 1)
                got += n;
        ck_assert_uint_eq(got, 28);
        ck_assert(memcmp(buf, "HTTP/1.1 200 OK\r\na: b\r\n\r\nxyz", 28) == 0);
        ck_assert_int_eq(records_in, 1);
        pair_close(&p);
        SSL_CTX_free(cctx);
        tls_ctx_unref(ctx);
    }
}
END_TEST

static Suite *tls_suite(void)
{
    Suite *s = suite_create("tls");
    struct {
        const char *name;
        const TTest *tests[8];
    } cases[] = {
        {"config",
         {config_valid_and_cert_info, config_key_mismatch, config_garbage_pem,
          config_other_fields}},
        {"versions",
         {version_12_and_13, min_version_13_refuses_12, alpn_selects_http11_refuses_h2_only,
          plain_http_is_refused}},
        {"sni", {sni_picks_certificate, sni_default_is_first_certificate}},
        {"client_auth",
         {client_auth_none, client_auth_request, client_auth_require_any,
          client_auth_verify_if_given, client_auth_require_and_verify, crl_refuses_revoked}},
        {"verify", {pins_accept_and_refuse, allow_lists_accept_and_refuse}},
        {"resume",
         {resume_same_context, resume_chain_gets_fresh_tickets, counters_continue_across_contexts,
          resume_mtls_keeps_identity, resume_across_reload_with_shared_keys, ticket_keys_rotate,
          ticket_keys_move_to_another_store}},
        {"data",
         {data_round_trip_1mib, eof_without_close_notify_is_error, handshake_eof_and_abandoned,
          writev_retry_must_offer_the_pending_bytes, writev_coalesces_small_iovecs}},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_set_timeout(tc, 120);
        for (size_t j = 0; j < 8 && cases[i].tests[j]; j++)
            tcase_add_test(tc, cases[i].tests[j]);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    certs_make();
    SRunner *sr = srunner_create(tls_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    certs_free();
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
