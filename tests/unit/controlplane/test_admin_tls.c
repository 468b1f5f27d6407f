/* tests/unit/controlplane/test_admin_tls.c: the admin API's HTTPS listener
 * on 127.0.0.1 (free port): bearer tokens over TLS, client certificates
 * mapped to roles, what the handshake refuses (plain HTTP, a certificate
 * of another CA, silence past the handshake timeout) and the flags refused
 * at start. The certificates are made once by
 * tests/unit/dataplane/tls/make-certs.sh, plus a "viewer" client
 * certificate; the server runs on a libev loop in a second thread and the
 * test is a blocking OpenSSL client with socket timeouts. */
#include "admin.h"
#include "cp.h"
#include "lb_err.h"
#include "lb_log.h"

#include <arpa/inet.h>
#include <check.h>
#include <ev.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define RW_TOKEN "rw-secret-0123456789"
#define RO_TOKEN "ro-secret-9876543210"

static char certs[64]; /* made once per run, in the parent */
static char tmpdir[64];
static char sock_path[100];
static char tokens_path[320];
static char db[320];
static char base[320];
static char boot[320];

static struct ev_loop *loop;
static struct cp *core;
static struct admin *adm;
static ev_async stop_async;
static pthread_t loop_thread;
static uint16_t tcp_port;

static const char *const boot_yaml = "frontends:\n"
                                     "  - {name: web, address: 127.0.0.1, port: 8080}\n"
                                     "backends:\n"
                                     "  - {id: a, url: \"http://127.0.0.1:9001\", weight: 5}\n";

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void write_file(const char *path, const char *content, mode_t mode)
{
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(content, f);
    fclose(f);
    ck_assert_int_eq(chmod(path, mode), 0);
}

/* <certs>/<name> into <out>. */
static const char *cert_path(const char *name, char *out, size_t size)
{
    snprintf(out, size, "%s/%s", certs, name);
    return out;
}

/* ---- certificates (once, unchecked fixture) ------------------------------------- */

/* Runs in main(), outside any test: failures are reported, not asserted. */
static bool certs_make(void)
{
    snprintf(certs, sizeof(certs), "/tmp/lb-test-admintls-XXXXXX");
    if (mkdtemp(certs) == NULL) {
        perror("mkdtemp");
        return false;
    }
    /* ctest sets LB_SOURCE_DIR; by hand, run from the source root */
    const char *src = getenv("LB_SOURCE_DIR");
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "sh %s/tests/unit/dataplane/tls/make-certs.sh %s", src ? src : ".",
             certs);
    if (system(cmd) != 0) {
        fprintf(stderr, "%s failed (see %s/log.txt)\n", cmd, certs);
        return false;
    }
    /* a second client certificate of the same CA, for the "ro" role */
    snprintf(cmd, sizeof(cmd),
             "cd %s && openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 "
             "-keyout viewer.key -out viewer.csr -subj /CN=viewer1 >>log.txt 2>&1 && "
             "printf 'basicConstraints=CA:FALSE\\nextendedKeyUsage=clientAuth\\n"
             "subjectAltName=DNS:viewer1.example.org\\n' >viewer.ext && "
             "openssl x509 -req -in viewer.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
             "-days 30 -extfile viewer.ext -out viewer.pem >>log.txt 2>&1",
             certs);
    if (system(cmd) != 0) {
        fprintf(stderr, "the viewer certificate: see %s/log.txt\n", certs);
        return false;
    }
    return true;
}

static void certs_remove(void)
{
    nftw(certs, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* ---- the server ------------------------------------------------------------------ */

static void on_stop(struct ev_loop *l, ev_async *w, int revents)
{
    ev_break(l, EVBREAK_ALL);
}

static void *run_loop(void *arg)
{
    ev_run(loop, 0);
    return NULL;
}

static void paths(void)
{
    lb_log_setup("test_admin_tls", open("/dev/null", O_WRONLY | O_CLOEXEC), LB_LOG_ERROR);
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/lb-test-admin-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    snprintf(sock_path, sizeof(sock_path), "%s/admin.sock", tmpdir);
    snprintf(tokens_path, sizeof(tokens_path), "%s/tokens", tmpdir);
    snprintf(db, sizeof(db), "%s/lb.db", tmpdir);
    snprintf(base, sizeof(base), "ipc://%s", tmpdir);
    snprintf(boot, sizeof(boot), "%s/config.yaml", tmpdir);
    write_file(boot, boot_yaml, 0600);
    /* client1 has CN client1 and DNS client1.example.org; the DNS name maps */
    write_file(tokens_path,
               "ops " RW_TOKEN " rw\n"
               "viewer " RO_TOKEN " ro\n"
               "cert:client1.example.org - rw\n"
               "cert:viewer1 - ro   # by CN\n",
               0600);
    loop = ev_loop_new(EVFLAG_AUTO);
    ck_assert_ptr_nonnull(loop);
    struct cp_config cc = {.db_path = db, .bootstrap = boot, .control_base = base};
    struct lb_err err = {0};
    core = cp_new(loop, &cc, &err);
    ck_assert_msg(core != NULL, "cp_new: %s", err.msg);
}

static void setup(void)
{
    paths();
    char cert[128], key[128], ca[128];
    struct admin_config ac = {
        .unix_path = sock_path,
        .tcp_listen = "127.0.0.1:0",
        .tokens_file = tokens_path,
        .tls_cert = cert_path("srv-ip.pem", cert, sizeof(cert)),
        .tls_key = cert_path("srv-ip.key", key, sizeof(key)),
        .tls_client_ca = cert_path("ca.pem", ca, sizeof(ca)),
        .handshake_timeout_s = 0.5,
    };
    struct lb_err err = {0};
    adm = admin_new(loop, core, &ac, &err);
    ck_assert_msg(adm != NULL, "admin_new: %s", err.msg);
    tcp_port = admin_tcp_port(adm);
    ck_assert_uint_gt(tcp_port, 0);
    ev_async_init(&stop_async, on_stop);
    ev_async_start(loop, &stop_async);
    ck_assert_int_eq(pthread_create(&loop_thread, NULL, run_loop, NULL), 0);
}

static void teardown(void)
{
    ev_async_send(loop, &stop_async);
    pthread_join(loop_thread, NULL);
    admin_free(adm);
    cp_free(core);
    ev_loop_destroy(loop);
    nftw(tmpdir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

static void bare_setup(void)
{
    paths();
}

static void bare_teardown(void)
{
    cp_free(core);
    ev_loop_destroy(loop);
    nftw(tmpdir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* ---- the client ------------------------------------------------------------------ */

static int connect_tcp(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(tcp_port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    return fd;
}

struct resp {
    int status;       /* 0: no HTTP answer */
    char *raw;        /* whole response */
    const char *body; /* into raw */
    json_t *json;     /* parsed body, or NULL */
};

static void resp_free(struct resp *r)
{
    free(r->raw);
    json_decref(r->json);
}

/* What a client presents and accepts. */
struct client {
    const char *cert;  /* client certificate in <certs>, or NULL */
    const char *token; /* bearer token, or NULL */
    int max_version;   /* 0, or TLS1_2_VERSION to see handshake refusals directly */
};

enum {
    HANDSHAKE_FAILED = -1
};

/* One request over HTTPS on a fresh connection ("Connection: close"),
 * verifying the server against ca.pem and 127.0.0.1. Returns 0 with <out>
 * filled (status 0 when the server closed without answering), or
 * HANDSHAKE_FAILED. */
static int https(const struct client *cl, const char *method, const char *path, const char *body,
                 struct resp *out)
{
    char p1[128], p2[128];
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    ck_assert_ptr_nonnull(ctx);
    ck_assert_int_eq(SSL_CTX_load_verify_locations(ctx, cert_path("ca.pem", p1, sizeof(p1)), NULL),
                     1);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (cl->max_version)
        SSL_CTX_set_max_proto_version(ctx, cl->max_version);
    if (cl->cert != NULL) {
        snprintf(p1, sizeof(p1), "%s/%s.pem", certs, cl->cert);
        snprintf(p2, sizeof(p2), "%s/%s.key", certs, cl->cert);
        ck_assert_int_eq(SSL_CTX_use_certificate_file(ctx, p1, SSL_FILETYPE_PEM), 1);
        ck_assert_int_eq(SSL_CTX_use_PrivateKey_file(ctx, p2, SSL_FILETYPE_PEM), 1);
    }
    int fd = connect_tcp();
    SSL *ssl = SSL_new(ctx);
    ck_assert_ptr_nonnull(ssl);
    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), "127.0.0.1");
    SSL_set_fd(ssl, fd);
    *out = (struct resp){0};
    int rc = 0;
    if (SSL_connect(ssl) != 1) {
        rc = HANDSHAKE_FAILED;
        goto done;
    }
    size_t blen = body ? strlen(body) : 0;
    char auth[128] = "";
    if (cl->token)
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s\r\n", cl->token);
    char *head = NULL;
    ck_assert_int_gt(asprintf(&head,
                              "%s %s HTTP/1.1\r\nHost: lb\r\n%sContent-Length: %zu\r\n"
                              "Connection: close\r\n\r\n%s",
                              method, path, auth, blen, body ? body : ""),
                     0);
    size_t n = 0;
    int w = SSL_write_ex(ssl, head, strlen(head), &n);
    free(head);
    size_t cap = 1 << 20, len = 0;
    out->raw = malloc(cap + 1);
    for (int i = 0; w == 1 && i < 10000 && len < cap; i++) {
        if (SSL_read_ex(ssl, out->raw + len, cap - len, &n) != 1)
            break;
        len += n;
    }
    out->raw[len] = '\0';
    if (sscanf(out->raw, "HTTP/1.1 %d", &out->status) != 1) {
        out->status = 0;
    } else {
        const char *sep = strstr(out->raw, "\r\n\r\n");
        ck_assert_ptr_nonnull(sep);
        out->body = sep + 4;
        out->json = json_loads(out->body, 0, NULL);
    }
done:
    ERR_clear_error();
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    close(fd);
    return rc;
}

/* GET <path> over the unix socket: the body (caller frees). */
static char *unix_get(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    memcpy(sa.sun_path, sock_path, strlen(sock_path) + 1);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    char req[256];
    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n", path);
    ck_assert_int_eq(send(fd, req, strlen(req), MSG_NOSIGNAL), (ssize_t)strlen(req));
    size_t cap = 1 << 20, len = 0;
    char *buf = malloc(cap + 1);
    for (int i = 0; i < 10000 && len < cap; i++) {
        ssize_t r = recv(fd, buf + len, cap - len, 0);
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    buf[len] = '\0';
    close(fd);
    return buf;
}

static void expect_metric(const char *line)
{
    char *m = unix_get("/metrics");
    ck_assert_msg(strstr(m, line) != NULL, "no \"%s\" in /metrics", line);
    free(m);
}

static const char *error_code(const struct resp *r)
{
    json_t *e = json_object_get(r->json, "error");
    const char *code = json_string_value(json_object_get(e, "code"));
    return code ? code : "";
}

/* The author of the newest config version. */
static void expect_last_author(const char *want)
{
    struct client c = {.token = RO_TOKEN};
    struct resp r;
    ck_assert_int_eq(https(&c, "GET", "/api/v1/config/versions", NULL, &r), 0);
    ck_assert_int_eq(r.status, 200);
    json_t *v = json_array_get(json_object_get(r.json, "versions"), 0);
    ck_assert_str_eq(json_string_value(json_object_get(v, "author")), want);
    resp_free(&r);
}

/* ---- tests ----------------------------------------------------------------------- */

START_TEST(token_over_https)
{
    struct client c = {.token = RW_TOKEN};
    struct resp r;
    ck_assert_int_eq(https(&c, "GET", "/api/v1/backends", NULL, &r), 0);
    ck_assert_msg(r.status == 200, "%d %s", r.status, r.raw);
    resp_free(&r);
    ck_assert_int_eq(https(&c, "PUT", "/api/v1/backends/a", "{\"weight\": 2}", &r), 0);
    ck_assert_msg(r.status == 200, "%d %s", r.status, r.raw);
    resp_free(&r);
    expect_last_author("token:ops");

    /* a wrong token is refused as on plain TCP; /health needs none */
    c.token = "wrong";
    ck_assert_int_eq(https(&c, "GET", "/api/v1/backends", NULL, &r), 0);
    ck_assert_int_eq(r.status, 401);
    resp_free(&r);
    c.token = NULL;
    ck_assert_int_eq(https(&c, "GET", "/health", NULL, &r), 0);
    ck_assert_int_eq(r.status, 200);
    resp_free(&r);
    /* TLS 1.2 too */
    c = (struct client){.token = RO_TOKEN, .max_version = TLS1_2_VERSION};
    ck_assert_int_eq(https(&c, "GET", "/api/v1/backends", NULL, &r), 0);
    ck_assert_int_eq(r.status, 200);
    resp_free(&r);
    expect_metric("\nlb_cp_api_tls_handshakes_total 6\n");
    expect_metric("\nlb_cp_api_tls_handshake_failures_total 0\n");
}
END_TEST

START_TEST(plain_http_refused)
{
    int fd = connect_tcp();
    static const char req[] = "GET /health HTTP/1.1\r\nHost: lb\r\n\r\n";
    ck_assert_int_eq(send(fd, req, sizeof(req) - 1, MSG_NOSIGNAL), (ssize_t)sizeof(req) - 1);
    char buf[512];
    size_t len = 0;
    for (int i = 0; i < 100 && len < sizeof(buf) - 1; i++) {
        ssize_t n = recv(fd, buf + len, sizeof(buf) - 1 - len, 0);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    buf[len] = '\0';
    close(fd);
    /* closed without an HTTP answer (at most a TLS alert) */
    ck_assert_msg(strncmp(buf, "HTTP/", 5) != 0, "answered: %s", buf);
    expect_metric("\nlb_cp_api_tls_handshake_failures_total 1\n");
}
END_TEST

START_TEST(client_certificate_roles)
{
    struct resp r;
    /* client1.example.org: rw */
    struct client c = {.cert = "client"};
    ck_assert_int_eq(https(&c, "PUT", "/api/v1/backends/a", "{\"weight\": 3}", &r), 0);
    ck_assert_msg(r.status == 200, "%d %s", r.status, r.raw);
    resp_free(&r);
    expect_last_author("cert:client1.example.org");

    /* viewer1: ro, reads but cannot write */
    c.cert = "viewer";
    ck_assert_int_eq(https(&c, "GET", "/api/v1/backends", NULL, &r), 0);
    ck_assert_msg(r.status == 200, "%d %s", r.status, r.raw);
    resp_free(&r);
    ck_assert_int_eq(https(&c, "PUT", "/api/v1/backends/a", "{\"weight\": 4}", &r), 0);
    ck_assert_msg(r.status == 403, "%d %s", r.status, r.raw);
    ck_assert_str_eq(error_code(&r), "forbidden");
    ck_assert_ptr_nonnull(strstr(r.body, "certificate \\\"viewer1\\\" is read-only"));
    resp_free(&r);

    /* a certificate of the CA that no line maps: 403 */
    c.cert = "revoked";
    ck_assert_int_eq(https(&c, "GET", "/api/v1/backends", NULL, &r), 0);
    ck_assert_msg(r.status == 403, "%d %s", r.status, r.raw);
    ck_assert_ptr_nonnull(strstr(r.body, "maps to no role"));
    resp_free(&r);

    /* with a token as well, the token decides */
    c = (struct client){.cert = "viewer", .token = RW_TOKEN};
    ck_assert_int_eq(https(&c, "PUT", "/api/v1/backends/a", "{\"weight\": 5}", &r), 0);
    ck_assert_msg(r.status == 200, "%d %s", r.status, r.raw);
    resp_free(&r);
    expect_last_author("token:ops");
    c = (struct client){.cert = "client", .token = "wrong"};
    ck_assert_int_eq(https(&c, "GET", "/api/v1/backends", NULL, &r), 0);
    ck_assert_int_eq(r.status, 401);
    resp_free(&r);
}
END_TEST

START_TEST(other_ca_refused)
{
    struct resp r;
    /* TLS 1.2: the server's refusal ends the handshake itself */
    struct client c = {.cert = "wrongca", .token = RW_TOKEN, .max_version = TLS1_2_VERSION};
    ck_assert_int_eq(https(&c, "GET", "/api/v1/backends", NULL, &r), HANDSHAKE_FAILED);
    resp_free(&r);
    /* TLS 1.3: the client finishes first, then gets the alert, no answer */
    c.max_version = 0;
    int rc = https(&c, "GET", "/api/v1/backends", NULL, &r);
    ck_assert(rc == HANDSHAKE_FAILED || r.status == 0);
    resp_free(&r);
    /* an expired certificate of the right CA likewise */
    c = (struct client){.cert = "expired", .token = RW_TOKEN, .max_version = TLS1_2_VERSION};
    ck_assert_int_eq(https(&c, "GET", "/api/v1/backends", NULL, &r), HANDSHAKE_FAILED);
    resp_free(&r);
    expect_metric("\nlb_cp_api_tls_handshake_failures_total 3\n");
}
END_TEST

START_TEST(handshake_timeout)
{
    int fd = connect_tcp();
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    char c;
    ssize_t n = recv(fd, &c, 1, 0); /* nothing sent: the server gives up after 0.5 s */
    clock_gettime(CLOCK_MONOTONIC, &t1);
    close(fd);
    ck_assert_int_eq(n, 0);
    double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    ck_assert_msg(s >= 0.4 && s < 4.0, "closed after %.2f s", s);
    expect_metric("\nlb_cp_api_tls_handshake_failures_total 1\n");
}
END_TEST

/* admin_new() with <ac> fails; its message holds <part>. */
static void expect_refused(const struct admin_config *ac, const char *part)
{
    struct lb_err err = {0};
    struct admin *a = admin_new(loop, core, ac, &err);
    ck_assert_msg(a == NULL, "started; want \"%s\"", part);
    ck_assert_int_eq(err.code, LB_EINVAL);
    ck_assert_msg(strstr(err.msg, part) != NULL, "\"%s\" lacks \"%s\"", err.msg, part);
}

START_TEST(refusals_at_start)
{
    char cert[128], key[128], ca[128], other[128];
    cert_path("srv-ip.pem", cert, sizeof(cert));
    cert_path("srv-ip.key", key, sizeof(key));
    cert_path("ca.pem", ca, sizeof(ca));
    cert_path("other.key", other, sizeof(other));
    struct admin_config ac = {
        .unix_path = sock_path, .tcp_listen = "127.0.0.1:0", .tokens_file = tokens_path};
    /* TCP needs TLS, or the insecure flag */
    expect_refused(&ac, "give --admin-cert FILE and --admin-key FILE");
    ac.tls_cert = cert;
    expect_refused(&ac, "--admin-cert and --admin-key go together");
    ac.tls_key = other;
    expect_refused(&ac, "does not match --admin-cert");
    ac.tls_key = "/nonexistent.key";
    expect_refused(&ac, "--admin-key /nonexistent.key: No such file or directory");
    ac.tls_key = key;
    ac.tls_cert = "/nonexistent.pem";
    expect_refused(&ac, "--admin-cert /nonexistent.pem");
    ac.tls_cert = cert;
    ac.tls_client_ca = "/nonexistent-ca.pem";
    expect_refused(&ac, "--admin-client-ca /nonexistent-ca.pem");
    ac.tls_client_ca = ca;
    ac.insecure_http = true;
    expect_refused(&ac, "not both");

    /* plain HTTP only on loopback */
    struct admin_config plain = {.unix_path = sock_path,
                                 .tcp_listen = "0.0.0.0:0",
                                 .tokens_file = tokens_path,
                                 .insecure_http = true};
    expect_refused(&plain, "loopback address only, not 0.0.0.0:0; use --admin-cert");
    plain.tcp_listen = "[::]:0";
    expect_refused(&plain, "loopback address only");
    plain.tcp_listen = "127.0.0.2:0";
    struct lb_err err = {0};
    struct admin *a = admin_new(loop, core, &plain, &err);
    ck_assert_msg(a != NULL, "%s", err.msg);
    admin_free(a);

    /* the TLS flags without a TCP listener */
    struct admin_config nolisten = {.unix_path = sock_path, .tls_cert = cert, .tls_key = key};
    expect_refused(&nolisten, "go with --admin-listen");

    /* a malformed certificate line */
    write_file(tokens_path, "cert:x secret rw\n", 0600);
    ac.insecure_http = false;
    expect_refused(&ac, "a certificate line is");
    /* certificate lines alone are enough */
    write_file(tokens_path, "cert:client1 - ro\n", 0600);
    a = admin_new(loop, core, &ac, &err);
    ck_assert_msg(a != NULL, "%s", err.msg);
    admin_free(a);
}
END_TEST

/* The loop thread of a server made by the test itself. */
static void loop_start(void)
{
    ev_async_init(&stop_async, on_stop);
    ev_async_start(loop, &stop_async);
    ck_assert_int_eq(pthread_create(&loop_thread, NULL, run_loop, NULL), 0);
}

static void loop_stop(void)
{
    ev_async_send(loop, &stop_async);
    pthread_join(loop_thread, NULL);
    ev_async_stop(loop, &stop_async);
}

/* Copies <certs>/<from> to <to>. */
static void copy_file(const char *from, const char *to)
{
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "cp %s/%s %s", certs, from, to);
    ck_assert_int_eq(system(cmd), 0);
}

/* SIGHUP's admin_tls_reload(): a key that does not match keeps the files in
 * use; a good pair is served to the next connections. */
START_TEST(reload)
{
    char cert[400], key[400], ca[128];
    snprintf(cert, sizeof(cert), "%s/admin.pem", tmpdir);
    snprintf(key, sizeof(key), "%s/admin.key", tmpdir);
    copy_file("srv-ip.pem", cert);
    copy_file("srv-ip.key", key);
    struct admin_config ac = {.unix_path = sock_path,
                              .tcp_listen = "127.0.0.1:0",
                              .tokens_file = tokens_path,
                              .tls_cert = cert,
                              .tls_key = key,
                              .tls_client_ca = cert_path("ca.pem", ca, sizeof(ca))};
    struct lb_err err = {0};
    adm = admin_new(loop, core, &ac, &err);
    ck_assert_msg(adm != NULL, "%s", err.msg);
    ck_assert(admin_has_tls(adm));
    tcp_port = admin_tcp_port(adm);
    loop_start();
    struct client c = {.token = RO_TOKEN};
    struct resp r;
    ck_assert_int_eq(https(&c, "GET", "/api/v1/backends", NULL, &r), 0);
    ck_assert_int_eq(r.status, 200);
    resp_free(&r);

    loop_stop();
    copy_file("other.key", key);
    ck_assert_int_eq(admin_tls_reload(adm, &err), LB_EINVAL);
    ck_assert_msg(strstr(err.msg, "does not match") != NULL, "%s", err.msg);
    loop_start();
    ck_assert_int_eq(https(&c, "GET", "/api/v1/backends", NULL, &r), 0);
    ck_assert_int_eq(r.status, 200);
    resp_free(&r);

    /* srv-rsa is for a.example.com: the client, expecting 127.0.0.1, now
     * refuses the server */
    loop_stop();
    copy_file("srv-rsa.pem", cert);
    copy_file("srv-rsa.key", key);
    ck_assert_int_eq(admin_tls_reload(adm, &err), LB_OK);
    loop_start();
    ck_assert_int_eq(https(&c, "GET", "/api/v1/backends", NULL, &r), HANDSHAKE_FAILED);
    resp_free(&r);
    loop_stop();
    admin_free(adm);
}
END_TEST

static Suite *admin_tls_suite(void)
{
    Suite *s = suite_create("admin_tls");
    struct {
        const char *name;
        const TTest *test;
    } cases[] = {
        {"token", token_over_https},
        {"plain_http", plain_http_refused},
        {"client_certs", client_certificate_roles},
        {"other_ca", other_ca_refused},
        {"handshake_timeout", handshake_timeout},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, cases[i].test);
        suite_add_tcase(s, tc);
    }
    TCase *tc = tcase_create("refusals");
    tcase_add_checked_fixture(tc, bare_setup, bare_teardown);
    tcase_add_test(tc, refusals_at_start);
    suite_add_tcase(s, tc);
    tc = tcase_create("reload");
    tcase_add_checked_fixture(tc, bare_setup, bare_teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, reload);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    if (!certs_make())
        return EXIT_FAILURE;
    SRunner *sr = srunner_create(admin_tls_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    certs_remove();
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
