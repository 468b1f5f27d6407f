/* tests/unit/dataplane/test_tls_client.c: the client side of the TLS
 * transport (TLS to backends) against an OpenSSL server over socketpairs.
 * Certificates are made once per run by tls/make-certs.sh (openssl CLI). */
#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#include "lb_err.h"
#include "tls.h"

/* ---- certificates ------------------------------------------------------- */

static struct {
    char *ca, *ca2, *srv_rsa, *srv_rsa_key, *srv_ip, *srv_ip_key;
} pem;

static char certdir[256];

static char *slurp(const char *name)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", certdir, name);
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "test_tls_client: cannot open %s\n", path);
        exit(1);
    }
    char *buf = malloc(65536);
    size_t n = fread(buf, 1, 65535, f);
    fclose(f);
    buf[n] = '\0';
    return buf;
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
    snprintf(certdir, sizeof(certdir), "/tmp/lb-test-tls-client-XXXXXX");
    if (mkdtemp(certdir) == NULL) {
        perror("mkdtemp");
        exit(1);
    }
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "sh '%s' '%s'", script, certdir);
    if (system(cmd) != 0) {
        fprintf(stderr, "test_tls_client: %s failed (see %s/log.txt)\n", script, certdir);
        exit(1);
    }
    pem.ca = slurp("ca.pem");
    pem.ca2 = slurp("ca2.pem");
    pem.srv_rsa = slurp("srv-rsa.pem");
    pem.srv_rsa_key = slurp("srv-rsa.key");
    pem.srv_ip = slurp("srv-ip.pem");
    pem.srv_ip_key = slurp("srv-ip.key");
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", certdir);
    if (system(cmd) != 0)
        fprintf(stderr, "test_tls_client: could not remove %s\n", certdir);
}

static void certs_free(void)
{
    free(pem.ca);
    free(pem.ca2);
    free(pem.srv_rsa);
    free(pem.srv_rsa_key);
    free(pem.srv_ip);
    free(pem.srv_ip_key);
}

/* ---- the server (plain OpenSSL) ------------------------------------------ */

static int on_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg)
{
    static const unsigned char ours[] = "\x08http/1.1";
    unsigned char *sel = NULL;
    if (SSL_select_next_proto(&sel, outlen, ours, sizeof(ours) - 1, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

/* A server answering with <cert>; <max_version> 0 = any. */
static SSL_CTX *server_ctx(const char *cert, const char *key, int max_version)
{
    SSL_CTX *s = SSL_CTX_new(TLS_server_method());
    ck_assert_ptr_nonnull(s);
    BIO *b = BIO_new_mem_buf(cert, -1);
    X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
    BIO_free(b);
    b = BIO_new_mem_buf(key, -1);
    EVP_PKEY *k = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
    BIO_free(b);
    ck_assert(x != NULL && k != NULL);
    ck_assert_int_eq(SSL_CTX_use_certificate(s, x), 1);
    ck_assert_int_eq(SSL_CTX_use_PrivateKey(s, k), 1);
    X509_free(x);
    EVP_PKEY_free(k);
    SSL_CTX_set_mode(s, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_session_id_context(s, (const unsigned char *)"test", 4);
    SSL_CTX_set_alpn_select_cb(s, on_alpn, NULL);
    if (max_version)
        SSL_CTX_set_max_proto_version(s, max_version);
    return s;
}

struct pair {
    int sv[2]; /* [0] client (transport), [1] server (SSL) */
    struct transport t;
    SSL *srv;
    int cli_hs; /* handshake: 1 done, -1 failed, 0 pending */
    int srv_hs;
};

static void pair_open(struct pair *p, struct tls_client_ctx *cc, SSL_CTX *sctx, const char *sni,
                      const char *verify_name)
{
    memset(p, 0, sizeof(*p));
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, p->sv), 0);
    struct lb_err err = {0};
    ck_assert_msg(tls_client_transport_init(&p->t, p->sv[0], cc, sni, verify_name, &err) == LB_OK,
                  "tls_client_transport_init: %s", err.msg);
    p->srv = SSL_new(sctx);
    ck_assert_ptr_nonnull(p->srv);
    SSL_set_fd(p->srv, p->sv[1]);
    SSL_set_accept_state(p->srv);
}

static void pair_close(struct pair *p)
{
    p->t.ops->release(&p->t);
    SSL_free(p->srv);
    close(p->sv[0]);
    close(p->sv[1]);
    ERR_clear_error();
}

/* Runs both handshakes to their end; returns the client's outcome. */
static int pair_handshake(struct pair *p)
{
    for (int i = 0; i < 400 && !(p->cli_hs && p->srv_hs); i++) {
        if (!p->cli_hs) {
            ssize_t r = tls_transport_handshake(&p->t);
            if (r == 1)
                p->cli_hs = 1;
            else if (r == TRANSPORT_ERROR)
                p->cli_hs = -1;
            else
                ck_assert(r == TRANSPORT_AGAIN || r == TRANSPORT_WANT_WRITE);
        }
        if (!p->srv_hs) {
            ERR_clear_error();
            int r = SSL_do_handshake(p->srv);
            if (r == 1)
                p->srv_hs = 1;
            else if (SSL_get_error(p->srv, r) != SSL_ERROR_WANT_READ &&
                     SSL_get_error(p->srv, r) != SSL_ERROR_WANT_WRITE)
                p->srv_hs = -1;
        }
    }
    ERR_clear_error();
    ck_assert_msg(p->cli_hs != 0, "client handshake did not end");
    return p->cli_hs;
}

/* The server sends one byte the client reads (and with it any TLS 1.3
 * tickets), then the client closes cleanly and the server sees it. */
static void pair_finish(struct pair *p)
{
    size_t n = 0;
    ck_assert_int_eq(SSL_write_ex(p->srv, "x", 1, &n), 1);
    char c = 0;
    ssize_t r = TRANSPORT_AGAIN;
    for (int i = 0; i < 100 && r == TRANSPORT_AGAIN; i++)
        r = p->t.ops->read(&p->t, &c, 1);
    ck_assert_int_eq(r, 1);
    ck_assert_int_eq(c, 'x');
    p->t.ops->shutdown_write(&p->t);
    ERR_clear_error();
    ck_assert_int_eq(SSL_read_ex(p->srv, &c, 1, &n), 0);
    ck_assert_int_eq(SSL_get_error(p->srv, 0), SSL_ERROR_ZERO_RETURN);
    SSL_shutdown(p->srv);
    /* the client reads the server's close_notify: end of stream */
    r = TRANSPORT_AGAIN;
    for (int i = 0; i < 100 && r == TRANSPORT_AGAIN; i++)
        r = p->t.ops->read(&p->t, &c, 1);
    ck_assert_int_eq(r, 0);
}

static struct tls_client_ctx *cctx_ok(const char *ca)
{
    struct lb_err err = {0};
    struct tls_client_ctx *cc = tls_client_ctx_new((const uint8_t *)ca, ca ? strlen(ca) : 0, &err);
    ck_assert_msg(cc != NULL, "tls_client_ctx_new: %s", err.msg);
    return cc;
}

static struct tls_stats stats(struct tls_client_ctx *cc)
{
    struct tls_stats st;
    tls_client_ctx_stats(cc, &st);
    return st;
}

/* Connects with <sni>/<verify_name> to a server using <cert>; expects the
 * client handshake to fail with a reason containing <why>. */
static void expect_refused(struct tls_client_ctx *cc, const char *cert, const char *key,
                           const char *sni, const char *verify_name, const char *why)
{
    SSL_CTX *s = server_ctx(cert, key, 0);
    struct pair p;
    pair_open(&p, cc, s, sni, verify_name);
    ck_assert_int_eq(pair_handshake(&p), -1);
    ck_assert_int_eq(p.t.err, EPROTO);
    const char *e = tls_transport_error(&p.t);
    ck_assert_msg(strstr(e, why) != NULL, "reason \"%s\" lacks \"%s\"", e, why);
    /* the connection stays failed */
    char c;
    ck_assert_int_eq(p.t.ops->read(&p.t, &c, 1), TRANSPORT_ERROR);
    struct iovec iov = {.iov_base = "x", .iov_len = 1};
    ck_assert_int_eq(p.t.ops->writev(&p.t, &iov, 1), TRANSPORT_ERROR);
    /* and the server learned why through the alert */
    ck_assert_int_eq(p.srv_hs, -1);
    pair_close(&p);
    SSL_CTX_free(s);
}

/* ---- contexts ------------------------------------------------------------ */

START_TEST(ctx_refuses_bad_ca)
{
    struct lb_err err = {0};
    const char *junk = "not a certificate";
    ck_assert_ptr_null(tls_client_ctx_new((const uint8_t *)junk, strlen(junk), &err));
    ck_assert_int_eq(err.code, LB_EINVAL);
    ck_assert_msg(strncmp(err.msg, "ca_pem: ", 8) == 0, "message \"%s\"", err.msg);

    /* a good certificate followed by garbage is refused as a whole */
    size_t n = strlen(pem.ca);
    char *mixed = malloc(n + 40);
    snprintf(mixed, n + 40, "%s-----BEGIN CERTIFICATE-----\nxx\n", pem.ca);
    memset(&err, 0, sizeof(err));
    ck_assert_ptr_null(tls_client_ctx_new((const uint8_t *)mixed, strlen(mixed), &err));
    ck_assert_int_eq(err.code, LB_EINVAL);
    ck_assert_msg(strncmp(err.msg, "ca_pem: ", 8) == 0, "message \"%s\"", err.msg);
    free(mixed);
    ck_assert_int_eq((int)ERR_peek_error(), 0);
}
END_TEST

START_TEST(transport_refuses_bad_names)
{
    struct tls_client_ctx *cc = cctx_ok(pem.ca);
    struct transport t;
    struct lb_err err = {0};
    ck_assert_int_eq(tls_client_transport_init(&t, 0, cc, NULL, NULL, &err), LB_EINVAL);
    ck_assert_msg(strncmp(err.msg, "verify_name: ", 13) == 0, "message \"%s\"", err.msg);
    ck_assert_int_eq(tls_client_transport_init(&t, 0, cc, "", "", &err), LB_EINVAL);
    ck_assert_int_eq(tls_client_transport_init(&t, 0, cc, "a b", NULL, &err), LB_EINVAL);
    ck_assert_msg(strncmp(err.msg, "sni: ", 5) == 0, "message \"%s\"", err.msg);
    ck_assert_int_eq(tls_client_transport_init(&t, 0, cc, "a.example.com", "x\ny", &err),
                     LB_EINVAL);
    ck_assert_msg(strncmp(err.msg, "verify_name: ", 13) == 0, "message \"%s\"", err.msg);
    struct tls_stats st = stats(cc);
    ck_assert_uint_eq(st.full + st.resumed, 0);
    for (int i = 0; i < TLS_ERR_COUNT; i++)
        ck_assert_uint_eq(st.errors[i], 0);
    tls_client_ctx_unref(cc);
}
END_TEST

START_TEST(ctx_refcount)
{
    struct tls_client_ctx *cc = cctx_ok(pem.ca);
    ck_assert_ptr_eq(tls_client_ctx_ref(cc), cc);
    tls_client_ctx_unref(cc);
    /* a transport keeps the context alive after the caller's last unref */
    SSL_CTX *s = server_ctx(pem.srv_rsa, pem.srv_rsa_key, 0);
    struct pair p;
    pair_open(&p, cc, s, "a.example.com", NULL);
    tls_client_ctx_unref(cc);
    ck_assert_int_eq(pair_handshake(&p), 1);
    pair_finish(&p);
    pair_close(&p);
    SSL_CTX_free(s);
    tls_client_ctx_unref(NULL);
}
END_TEST

/* ---- verification -------------------------------------------------------- */

START_TEST(handshake_right_ca_and_name)
{
    struct tls_client_ctx *cc = cctx_ok(pem.ca);
    SSL_CTX *s = server_ctx(pem.srv_rsa, pem.srv_rsa_key, 0);
    struct pair p;
    pair_open(&p, cc, s, "a.example.com", "a.example.com");
    ck_assert_str_eq(tls_transport_error(&p.t), "");
    ck_assert_int_eq(pair_handshake(&p), 1);
    ck_assert_int_eq(p.srv_hs, 1);
    ck_assert_str_eq(tls_transport_error(&p.t), "");

    /* ALPN http/1.1 offered and taken */
    const unsigned char *alpn = NULL;
    unsigned int alpn_len = 0;
    SSL_get0_alpn_selected(p.srv, &alpn, &alpn_len);
    ck_assert_uint_eq(alpn_len, 8);
    ck_assert(memcmp(alpn, "http/1.1", 8) == 0);

    struct tls_peer peer;
    ck_assert_int_eq(tls_peer_info(&p.t, &peer), LB_OK);
    ck_assert(peer.has_cert);
    ck_assert(peer.verified);
    ck_assert(!peer.resumed);
    ck_assert_str_eq(peer.version, "TLSv1.3");
    ck_assert_str_eq(peer.sni, "a.example.com");
    ck_assert_str_eq(peer.subject, "CN=a.example.com");
    ck_assert_uint_eq(strlen(peer.fingerprint), 64);

    pair_finish(&p);
    pair_close(&p);
    struct tls_stats st = stats(cc);
    ck_assert_uint_eq(st.handshakes[TLS_VER_13], 1);
    ck_assert_uint_eq(st.full, 1);
    ck_assert_uint_eq(st.resumed, 0);
    SSL_CTX_free(s);
    tls_client_ctx_unref(cc);
}
END_TEST

START_TEST(handshake_tls12)
{
    struct tls_client_ctx *cc = cctx_ok(pem.ca);
    SSL_CTX *s = server_ctx(pem.srv_rsa, pem.srv_rsa_key, TLS1_2_VERSION);
    struct pair p;
    pair_open(&p, cc, s, "a.example.com", NULL);
    ck_assert_int_eq(pair_handshake(&p), 1);
    pair_finish(&p);
    pair_close(&p);
    ck_assert_uint_eq(stats(cc).handshakes[TLS_VER_12], 1);
    SSL_CTX_free(s);
    tls_client_ctx_unref(cc);
}
END_TEST

START_TEST(wrong_ca_fails)
{
    struct tls_client_ctx *cc = cctx_ok(pem.ca2);
    expect_refused(cc, pem.srv_rsa, pem.srv_rsa_key, "a.example.com", NULL,
                   "certificate verify failed: unable to get local issuer certificate");
    struct tls_stats st = stats(cc);
    ck_assert_uint_eq(st.errors[TLS_ERR_VERIFY_FAILED], 1);
    ck_assert_uint_eq(st.full + st.resumed, 0);
    tls_client_ctx_unref(cc);
}
END_TEST

START_TEST(system_store_does_not_trust_test_ca)
{
    /* empty ca_pem means the system store, never "no verification" */
    struct tls_client_ctx *cc = cctx_ok(NULL);
    expect_refused(cc, pem.srv_rsa, pem.srv_rsa_key, "a.example.com", NULL,
                   "certificate verify failed: ");
    ck_assert_uint_eq(stats(cc).errors[TLS_ERR_VERIFY_FAILED], 1);
    tls_client_ctx_unref(cc);
}
END_TEST

START_TEST(hostname_mismatch_fails)
{
    struct tls_client_ctx *cc = cctx_ok(pem.ca);
    /* verify_name wins over sni */
    expect_refused(cc, pem.srv_rsa, pem.srv_rsa_key, "a.example.com", "c.example.com",
                   "certificate verify failed: hostname mismatch");
    /* no partial wildcard, no suffix match */
    expect_refused(cc, pem.srv_rsa, pem.srv_rsa_key, "x.a.example.com", NULL, "hostname mismatch");
    ck_assert_uint_eq(stats(cc).errors[TLS_ERR_VERIFY_FAILED], 2);
    tls_client_ctx_unref(cc);
}
END_TEST

START_TEST(ip_literal_verified)
{
    struct tls_client_ctx *cc = cctx_ok(pem.ca);
    const char *ips[] = {"127.0.0.1", "::1"};
    for (size_t i = 0; i < 2; i++) {
        SSL_CTX *s = server_ctx(pem.srv_ip, pem.srv_ip_key, 0);
        struct pair p;
        /* an address given as sni is checked but never sent */
        pair_open(&p, cc, s, ips[i], NULL);
        ck_assert_msg(pair_handshake(&p) == 1, "%s: %s", ips[i], tls_transport_error(&p.t));
        ck_assert_ptr_null(SSL_get_servername(p.srv, TLSEXT_NAMETYPE_host_name));
        pair_finish(&p);
        pair_close(&p);
        SSL_CTX_free(s);
    }
    expect_refused(cc, pem.srv_ip, pem.srv_ip_key, NULL, "127.0.0.2",
                   "certificate verify failed: IP address mismatch");
    expect_refused(cc, pem.srv_rsa, pem.srv_rsa_key, NULL, "127.0.0.1", "IP address mismatch");
    /* a certificate for an address does not answer a host name */
    expect_refused(cc, pem.srv_ip, pem.srv_ip_key, "localhost", NULL, "hostname mismatch");
    tls_client_ctx_unref(cc);
}
END_TEST

/* ---- SNI ------------------------------------------------------------------ */

START_TEST(sni_received)
{
    struct tls_client_ctx *cc = cctx_ok(pem.ca);
    SSL_CTX *s = server_ctx(pem.srv_rsa, pem.srv_rsa_key, 0);
    struct pair p;
    pair_open(&p, cc, s, "a.example.com", NULL);
    ck_assert_int_eq(pair_handshake(&p), 1);
    const char *got = SSL_get_servername(p.srv, TLSEXT_NAMETYPE_host_name);
    ck_assert_ptr_nonnull(got);
    ck_assert_str_eq(got, "a.example.com");
    pair_finish(&p);
    pair_close(&p);

    /* no sni: none sent, the name check still runs on verify_name */
    pair_open(&p, cc, s, "", "a.example.com");
    ck_assert_int_eq(pair_handshake(&p), 1);
    ck_assert_ptr_null(SSL_get_servername(p.srv, TLSEXT_NAMETYPE_host_name));
    pair_finish(&p);
    pair_close(&p);
    SSL_CTX_free(s);
    tls_client_ctx_unref(cc);
}
END_TEST

/* ---- data ----------------------------------------------------------------- */

#define MIB (1024 * 1024)

static unsigned char pattern(size_t i, unsigned seed)
{
    return (unsigned char)((i * 31 + (i >> 9) + seed) & 0xff);
}

START_TEST(one_mib_both_ways)
{
    struct tls_client_ctx *cc = cctx_ok(pem.ca);
    SSL_CTX *s = server_ctx(pem.srv_rsa, pem.srv_rsa_key, _i ? TLS1_2_VERSION : 0);
    struct pair p;
    pair_open(&p, cc, s, "a.example.com", NULL);
    ck_assert_int_eq(pair_handshake(&p), 1);

    unsigned char *up = malloc(MIB), *down = malloc(MIB), *buf = malloc(65536);
    for (size_t i = 0; i < MIB; i++) {
        up[i] = pattern(i, 1);
        down[i] = pattern(i, 2);
    }
    size_t sent_up = 0, got_up = 0, sent_down = 0, got_down = 0;
    for (int it = 0; it < 200000 && (got_up < MIB || got_down < MIB); it++) {
        if (sent_up < MIB) {
            /* two iovecs, the first small: exercises coalescing and partials */
            size_t len = MIB - sent_up < 70000 ? MIB - sent_up : 70000;
            size_t first = len < 100 ? len : 100;
            struct iovec iov[2] = {{up + sent_up, first}, {up + sent_up + first, len - first}};
            ssize_t r = p.t.ops->writev(&p.t, iov, len > first ? 2 : 1);
            if (r > 0)
                sent_up += (size_t)r;
            else
                ck_assert_msg(r == TRANSPORT_AGAIN || r == TRANSPORT_WANT_WRITE, "writev %zd: %s",
                              r, tls_transport_error(&p.t));
        }
        size_t n = 0;
        if (got_up < MIB && SSL_read_ex(p.srv, buf, 65536, &n) == 1) {
            ck_assert_msg(memcmp(buf, up + got_up, n) == 0, "upstream bytes differ after %zu",
                          got_up);
            got_up += n;
        }
        if (sent_down < MIB) {
            size_t len = MIB - sent_down < 65536 ? MIB - sent_down : 65536;
            if (SSL_write_ex(p.srv, down + sent_down, len, &n) == 1)
                sent_down += n;
        }
        for (int k = 0; k < 8 && got_down < MIB; k++) {
            ssize_t r = p.t.ops->read(&p.t, buf, 65536);
            if (r == TRANSPORT_AGAIN || r == TRANSPORT_WANT_WRITE)
                break;
            ck_assert_msg(r > 0, "read %zd: %s", r, tls_transport_error(&p.t));
            ck_assert_msg(memcmp(buf, down + got_down, (size_t)r) == 0,
                          "downstream bytes differ after %zu", got_down);
            got_down += (size_t)r;
        }
        ERR_clear_error();
    }
    ck_assert_uint_eq(got_up, MIB);
    ck_assert_uint_eq(got_down, MIB);
    free(up);
    free(down);
    free(buf);
    pair_finish(&p);
    pair_close(&p);
    SSL_CTX_free(s);
    tls_client_ctx_unref(cc);
}
END_TEST

/* ---- resumption ----------------------------------------------------------- */

/* One full connection, then a second with the same context resumes; _i
 * selects TLS 1.3 (tickets) or TLS 1.2 (tickets), or TLS 1.2 without
 * tickets (session ids). */
START_TEST(second_connection_resumes)
{
    int maxv = _i == 0 ? 0 : TLS1_2_VERSION;
    struct tls_client_ctx *cc = cctx_ok(pem.ca);
    SSL_CTX *s = server_ctx(pem.srv_rsa, pem.srv_rsa_key, maxv);
    if (_i == 2)
        SSL_CTX_set_options(s, SSL_OP_NO_TICKET);
    struct pair p;
    pair_open(&p, cc, s, "a.example.com", NULL);
    ck_assert_int_eq(pair_handshake(&p), 1);
    ck_assert(!SSL_session_reused(p.srv));
    pair_finish(&p);
    pair_close(&p);

    pair_open(&p, cc, s, "a.example.com", NULL);
    ck_assert_int_eq(pair_handshake(&p), 1);
    ck_assert(SSL_session_reused(p.srv));
    struct tls_peer peer;
    ck_assert_int_eq(tls_peer_info(&p.t, &peer), LB_OK);
    ck_assert(peer.resumed);
    ck_assert(peer.verified);
    ck_assert_str_eq(peer.subject, "CN=a.example.com");
    pair_finish(&p);
    pair_close(&p);

    /* another verified name has its own cache entry: a full handshake */
    pair_open(&p, cc, s, "", "a.example.com");
    ck_assert_int_eq(pair_handshake(&p), 1);
    ck_assert(!SSL_session_reused(p.srv));
    pair_finish(&p);
    pair_close(&p);

    struct tls_stats st = stats(cc);
    ck_assert_uint_eq(st.full, 2);
    ck_assert_uint_eq(st.resumed, 1);
    SSL_CTX_free(s);
    tls_client_ctx_unref(cc);
}
END_TEST

START_TEST(failed_connection_drops_session)
{
    /* TLS 1.2: the cached session itself is what a resumption offers */
    struct tls_client_ctx *cc = cctx_ok(pem.ca);
    SSL_CTX *s = server_ctx(pem.srv_rsa, pem.srv_rsa_key, TLS1_2_VERSION);
    SSL_CTX_set_options(s, SSL_OP_NO_TICKET);
    struct pair p;
    pair_open(&p, cc, s, "a.example.com", NULL);
    ck_assert_int_eq(pair_handshake(&p), 1);
    pair_finish(&p);
    pair_close(&p);

    /* resumed, then the server resets mid-stream */
    pair_open(&p, cc, s, "a.example.com", NULL);
    ck_assert_int_eq(pair_handshake(&p), 1);
    ck_assert(SSL_session_reused(p.srv));
    ck_assert_int_eq(write(p.sv[1], "\x17\x03\x03\x00\x05garbage", 12), 12);
    char c;
    ck_assert_int_eq(p.t.ops->read(&p.t, &c, 1), TRANSPORT_ERROR);
    ck_assert_str_ne(tls_transport_error(&p.t), "");
    pair_close(&p);

    pair_open(&p, cc, s, "a.example.com", NULL);
    ck_assert_int_eq(pair_handshake(&p), 1);
    ck_assert(!SSL_session_reused(p.srv));
    pair_finish(&p);
    pair_close(&p);
    SSL_CTX_free(s);
    tls_client_ctx_unref(cc);
}
END_TEST

START_TEST(timeout_and_incomplete_counted)
{
    struct tls_client_ctx *cc = cctx_ok(pem.ca);
    SSL_CTX *s = server_ctx(pem.srv_rsa, pem.srv_rsa_key, 0);
    struct pair p;
    pair_open(&p, cc, s, "a.example.com", NULL);
    ck_assert_int_eq(tls_transport_handshake(&p.t), TRANSPORT_AGAIN); /* ClientHello out */
    tls_transport_note_timeout(&p.t);
    pair_close(&p);
    pair_open(&p, cc, s, "a.example.com", NULL);
    pair_close(&p);
    struct tls_stats st = stats(cc);
    ck_assert_uint_eq(st.errors[TLS_ERR_TIMEOUT], 1);
    ck_assert_uint_eq(st.errors[TLS_ERR_INCOMPLETE], 1);
    SSL_CTX_free(s);
    tls_client_ctx_unref(cc);
}
END_TEST

static Suite *tls_client_suite(void)
{
    Suite *s = suite_create("tls_client");
    TCase *tc = tcase_create("ctx");
    tcase_add_test(tc, ctx_refuses_bad_ca);
    tcase_add_test(tc, transport_refuses_bad_names);
    tcase_add_test(tc, ctx_refcount);
    suite_add_tcase(s, tc);

    tc = tcase_create("verify");
    tcase_add_test(tc, handshake_right_ca_and_name);
    tcase_add_test(tc, handshake_tls12);
    tcase_add_test(tc, wrong_ca_fails);
    tcase_add_test(tc, system_store_does_not_trust_test_ca);
    tcase_add_test(tc, hostname_mismatch_fails);
    tcase_add_test(tc, ip_literal_verified);
    suite_add_tcase(s, tc);

    tc = tcase_create("sni");
    tcase_add_test(tc, sni_received);
    suite_add_tcase(s, tc);

    tc = tcase_create("data");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, one_mib_both_ways, 0, 2);
    suite_add_tcase(s, tc);

    tc = tcase_create("resumption");
    tcase_add_loop_test(tc, second_connection_resumes, 0, 3);
    tcase_add_test(tc, failed_connection_drops_session);
    tcase_add_test(tc, timeout_and_incomplete_counted);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    certs_make();
    SRunner *sr = srunner_create(tls_client_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    certs_free();
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
