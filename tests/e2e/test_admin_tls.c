/* tests/e2e/test_admin_tls.c: lbctl against the control plane's HTTPS admin
 * listener (--admin-cert/--admin-key/--admin-client-ca): with a bearer
 * token and with client certificates mapped to rw and ro, the options and
 * their environment variables; a CA that did not issue the server's
 * certificate, a client certificate of another CA and plain http:// all end
 * with exit 3; the audit names each write's caller (token:NAME, cert:NAME);
 * SIGHUP re-reads the certificate and the tokens file (audited; a bad file
 * keeps the tokens in use). */
#include "e2e.h"

#include <check.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define LBCTL    LB_BUILD_DIR "/lbctl"
#define MAX_ARGS 24

/* Runs lbctl --url <scheme>://127.0.0.1:<admin port> with <env> and the
 * NULL-terminated <args>; "certs/..." and "*.token" arguments are taken
 * relative to the world's dir. */
static int lbctl(struct e2e_cp *w, struct e2e_cmd *r, const char *scheme, const char *const *env,
                 const char *const *args)
{
    static char paths[MAX_ARGS][256];
    char url[64];
    snprintf(url, sizeof url, "%s://127.0.0.1:%u", scheme, e2e_cp_admin_port(w));
    char *argv[MAX_ARGS + 4] = {LBCTL, "--url", url};
    size_t n = 3;
    for (size_t i = 0; args[i] != NULL; i++) {
        ck_assert(n < MAX_ARGS);
        if (strncmp(args[i], "certs/", 6) == 0 || strstr(args[i], ".token") != NULL) {
            e2e_cp_path(w, args[i], paths[i], sizeof paths[i]);
            argv[n++] = paths[i];
        } else {
            argv[n++] = (char *)args[i];
        }
    }
    argv[n] = NULL;
    return e2e_cmd_run(argv, env, r);
}

/* GET /metrics over the admin unix socket; caller frees. */
static char *admin_metrics(struct e2e_cp *w)
{
    char path[256];
    e2e_cp_path(w, "run/admin.sock", path, sizeof path);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    ck_assert(strlen(path) < sizeof sa.sun_path);
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    static const char req[] = "GET /metrics HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n";
    ck_assert_int_eq(send(fd, req, sizeof req - 1, MSG_NOSIGNAL), (ssize_t)sizeof req - 1);
    size_t cap = 1 << 20, len = 0;
    char *buf = malloc(cap + 1);
    ck_assert_ptr_nonnull(buf);
    for (int i = 0; i < 10000 && len < cap; i++) {
        ssize_t n = recv(fd, buf + len, cap - len, 0);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    buf[len] = '\0';
    close(fd);
    return buf;
}

/* Polls the control plane's log until a line holds <needle>. */
static bool cp_log_has(struct e2e_cp *w, const char *needle)
{
    char path[256], line[4096];
    e2e_cp_path(w, "cp.log", path, sizeof path);
    uint64_t deadline = e2e_now_ms() + e2e_timeout_ms();
    do {
        FILE *f = fopen(path, "r");
        bool found = false;
        while (f != NULL && !found && fgets(line, sizeof line, f) != NULL)
            found = strstr(line, needle) != NULL;
        if (f != NULL)
            fclose(f);
        if (found)
            return true;
        e2e_poll_pause(20);
    } while (e2e_now_ms() < deadline);
    return false;
}

#define ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})

static void expect_exit(struct e2e_cmd *r, int st, int want, const char *err_part)
{
    ck_assert_msg(st == want, "exit %d, want %d; stderr: %s", st, want, r->err);
    if (err_part != NULL)
        ck_assert_msg(strstr(r->err, err_part) != NULL, "stderr lacks \"%s\": %s", err_part,
                      r->err);
    e2e_cmd_free(r);
}

START_TEST(lbctl_over_https)
{
    struct e2e_cp_opts o = {.backends = 2, .dataplanes = 0, .admin_tcp = true, .admin_tls = true};
    struct e2e_cp *w = e2e_cp_start(&o);
    struct e2e_cmd r;

    /* bearer tokens */
    int st = lbctl(w, &r, "https", NULL,
                   ARGS("--ca", "certs/ca.pem", "--token-file", "ro.token", "backends", "list"));
    ck_assert_msg(st == 0 && strstr(r.out, "b1") != NULL, "exit %d %s %s", st, r.out, r.err);
    e2e_cmd_free(&r);
    st = lbctl(w, &r, "https", NULL,
               ARGS("--ca", "certs/ca.pem", "--token-file", "ro.token", "backends", "update", "b0",
                    "--weight", "2"));
    expect_exit(&r, st, 1, "forbidden");
    st = lbctl(w, &r, "https", NULL,
               ARGS("--ca", "certs/ca.pem", "--token-file", "rw.token", "backends", "update", "b0",
                    "--weight", "2"));
    expect_exit(&r, st, 0, NULL);

    /* client certificates: client1.example.org is rw, viewer1.example.org ro */
    st = lbctl(w, &r, "https", NULL,
               ARGS("--ca", "certs/ca.pem", "--cert", "certs/client.pem", "--key",
                    "certs/client.key", "backends", "drain", "b1"));
    expect_exit(&r, st, 0, NULL);
    st = lbctl(w, &r, "https", NULL,
               ARGS("--ca", "certs/ca.pem", "--cert", "certs/viewer.pem", "--key",
                    "certs/viewer.key", "backends", "list"));
    ck_assert_msg(st == 0 && strstr(r.out, "draining") != NULL, "exit %d %s %s", st, r.out, r.err);
    e2e_cmd_free(&r);
    st = lbctl(w, &r, "https", NULL,
               ARGS("--ca", "certs/ca.pem", "--cert", "certs/viewer.pem", "--key",
                    "certs/viewer.key", "backends", "update", "b0", "--weight", "3"));
    expect_exit(&r, st, 1, "certificate \"viewer1.example.org\" is read-only");

    /* the same through $LB_CA_FILE, $LB_CERT_FILE, $LB_KEY_FILE */
    char ca[300], cert[300], key[300], p[256];
    e2e_cp_path(w, "certs/ca.pem", p, sizeof p);
    snprintf(ca, sizeof ca, "LB_CA_FILE=%s", p);
    e2e_cp_path(w, "certs/client.pem", p, sizeof p);
    snprintf(cert, sizeof cert, "LB_CERT_FILE=%s", p);
    e2e_cp_path(w, "certs/client.key", p, sizeof p);
    snprintf(key, sizeof key, "LB_KEY_FILE=%s", p);
    st = lbctl(w, &r, "https", (const char *const[]){ca, cert, key, NULL},
               ARGS("backends", "update", "b0", "--weight", "4"));
    expect_exit(&r, st, 0, NULL);

    /* the audit names the callers of the writes made over HTTPS */
    st = e2e_cp_lbctl(w, &r, "audit", "--who", "token:admin", NULL);
    ck_assert_msg(st == 0 && strstr(r.out, "backend.update") != NULL, "exit %d %s %s", st, r.out,
                  r.err);
    e2e_cmd_free(&r);
    st = e2e_cp_lbctl(w, &r, "--json", "audit", "--who", "cert:client1.example.org", NULL);
    ck_assert_msg(st == 0, "exit %d %s", st, r.err);
    ck_assert_msg(strstr(r.out, "backend.drain") != NULL && strstr(r.out, "backend.update") &&
                      strstr(r.out, "cert:client1.example.org") != NULL &&
                      strstr(r.out, "token:admin") == NULL,
                  "%s", r.out);
    e2e_cmd_free(&r);
    st = e2e_cp_lbctl(w, &r, "audit", "--who", "cert:viewer1.example.org", NULL);
    ck_assert_msg(st == 0 && strstr(r.out, "backend.") == NULL, "exit %d %s", st, r.out);
    e2e_cmd_free(&r);

    /* usage */
    st = lbctl(w, &r, "https", NULL,
               ARGS("--ca", "certs/ca.pem", "--cert", "certs/client.pem", "status"));
    expect_exit(&r, st, 2, "--cert and --key go together");
    st = lbctl(w, &r, "http", NULL, ARGS("--ca", "certs/ca.pem", "status"));
    expect_exit(&r, st, 2, "go with an https:// --url");
    e2e_cp_stop(w);
}
END_TEST

START_TEST(refused_connections_exit_3)
{
    struct e2e_cp_opts o = {.backends = 1, .dataplanes = 0, .admin_tcp = true, .admin_tls = true};
    struct e2e_cp *w = e2e_cp_start(&o);
    struct e2e_cmd r;
    char want[200];
    snprintf(want, sizeof want, "lbctl: cannot reach the control plane at https://127.0.0.1:%u: ",
             e2e_cp_admin_port(w));

    /* a CA that did not issue the server's certificate */
    int st = lbctl(w, &r, "https", NULL,
                   ARGS("--ca", "certs/ca2.pem", "--token-file", "rw.token", "status"));
    ck_assert_msg(strncmp(r.err, want, strlen(want)) == 0, "%s", r.err);
    expect_exit(&r, st, 3, "TLS: the server's certificate is not trusted");
    /* no --ca: the system's CAs do not know the test CA either */
    st = lbctl(w, &r, "https", NULL, ARGS("--token-file", "rw.token", "status"));
    expect_exit(&r, st, 3, "not trusted");
    /* a client certificate of another CA */
    st = lbctl(w, &r, "https", NULL,
               ARGS("--ca", "certs/ca.pem", "--cert", "certs/wrongca.pem", "--key",
                    "certs/wrongca.key", "status"));
    expect_exit(&r, st, 3, want);
    /* a key that does not match the certificate: lbctl's own error */
    st = lbctl(w, &r, "https", NULL,
               ARGS("--ca", "certs/ca.pem", "--cert", "certs/client.pem", "--key",
                    "certs/other.key", "status"));
    expect_exit(&r, st, 3, "TLS");
    /* plain HTTP to the HTTPS port */
    st = lbctl(w, &r, "http", NULL, ARGS("--token-file", "rw.token", "status"));
    expect_exit(&r, st, 3, "cannot reach the control plane at http://");
    /* (usually "it closed without answering (an HTTPS listener? use https://)",
     * a reset when the request arrives after the server closed) */

    /* counted: other CA (server side), plain HTTP; the others failed in lbctl
     * or were refused by lbctl after the server's side was done */
    st = lbctl(w, &r, "https", NULL,
               ARGS("--ca", "certs/ca.pem", "--token-file", "ro.token", "--json", "status"));
    expect_exit(&r, st, 0, NULL);
    char *m = admin_metrics(w);
    ck_assert_ptr_nonnull(m);
    long failures = -1;
    const char *at = strstr(m, "\nlb_cp_api_tls_handshake_failures_total ");
    if (at != NULL)
        failures = strtol(at + strlen("\nlb_cp_api_tls_handshake_failures_total "), NULL, 10);
    ck_assert_msg(failures >= 2, "failures %ld", failures);
    free(m);

    /* a flood of refused handshakes is counted in full and logged at most
     * 20 times a minute */
    for (int i = 0; i < 40; i++) {
        struct e2e_resp pr;
        if (e2e_request(e2e_cp_admin_port(w), "GET", "/", NULL, NULL, 0, &pr) == 0)
            e2e_resp_free(&pr);
    }
    m = admin_metrics(w);
    at = strstr(m, "\nlb_cp_api_tls_handshake_failures_total ");
    ck_assert_ptr_nonnull(at);
    ck_assert_int_ge(strtol(at + strlen("\nlb_cp_api_tls_handshake_failures_total "), NULL, 10),
                     failures + 40);
    free(m);
    char path[256], line[4096];
    e2e_cp_path(w, "cp.log", path, sizeof path);
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    unsigned logged = 0;
    while (fgets(line, sizeof line, f) != NULL)
        logged += strstr(line, "\"admin_tls_handshake_failed\"") != NULL;
    fclose(f);
    ck_assert_msg(logged >= 10 && logged <= 20, "%u lines", logged);

    /* SIGHUP re-reads the admin certificate; lbctl goes on working */
    ck_assert_int_eq(kill(e2e_cp_controlplane_pid(w), SIGHUP), 0);
    ck_assert(cp_log_has(w, "\"admin_tls_reloaded\""));
    st = lbctl(w, &r, "https", NULL,
               ARGS("--ca", "certs/ca.pem", "--token-file", "ro.token", "status"));
    expect_exit(&r, st, 0, NULL);
    e2e_cp_stop(w);
}
END_TEST

/* Replaces the world's tokens file with <text> at <mode>, atomically. */
static void write_tokens(struct e2e_cp *w, const char *text, mode_t mode)
{
    char path[256], tmp[264];
    e2e_cp_path(w, "tokens", path, sizeof path);
    snprintf(tmp, sizeof tmp, "%s.new", path);
    FILE *f = fopen(tmp, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    ck_assert_int_eq(fclose(f), 0);
    ck_assert_int_eq(chmod(tmp, mode), 0);
    ck_assert_int_eq(rename(tmp, path), 0);
}

/* The status of GET <path> on the admin TCP port with bearer <token>. */
static int api_status(struct e2e_cp *w, const char *path, const char *token, char **body)
{
    char hdr[128];
    snprintf(hdr, sizeof hdr, "Authorization: Bearer %s\r\n", token);
    struct e2e_resp r;
    ck_assert_int_eq(e2e_request(e2e_cp_admin_port(w), "GET", path, hdr, NULL, 0, &r), 0);
    int st = r.status;
    if (body != NULL)
        *body = strdup(r.body != NULL ? r.body : "");
    e2e_resp_free(&r);
    return st;
}

START_TEST(sighup_rereads_tokens)
{
    struct e2e_cp_opts o = {.backends = 1, .dataplanes = 0, .admin_tcp = true};
    struct e2e_cp *w = e2e_cp_start(&o);
    ck_assert_int_eq(api_status(w, "/api/v1/backends", "rw-7f3a9c1e5b", NULL), 200);
    /* a new token for admin, the viewer's stays */
    write_tokens(w, "admin rw-5e1b7c9d3f rw\nviewer ro-2d8e4b6a0c ro\n", 0600);
    ck_assert_int_eq(kill(e2e_cp_controlplane_pid(w), SIGHUP), 0);
    ck_assert(cp_log_has(w, "\"admin_tokens_reloaded\""));
    ck_assert_int_eq(api_status(w, "/api/v1/backends", "rw-7f3a9c1e5b", NULL), 401);
    ck_assert_int_eq(api_status(w, "/api/v1/backends", "rw-5e1b7c9d3f", NULL), 200);
    ck_assert_int_eq(api_status(w, "/api/v1/backends", "ro-2d8e4b6a0c", NULL), 200);
    /* a file others may read is refused, and the tokens in use stay */
    write_tokens(w, "admin rw-0000000000 rw\n", 0644);
    ck_assert_int_eq(kill(e2e_cp_controlplane_pid(w), SIGHUP), 0);
    ck_assert(cp_log_has(w, "\"admin_tokens_reload_failed\""));
    ck_assert_int_eq(api_status(w, "/api/v1/backends", "rw-5e1b7c9d3f", NULL), 200);
    ck_assert_int_eq(api_status(w, "/api/v1/backends", "rw-0000000000", NULL), 401);
    /* the re-read is in the audit log, by the signal, without a token */
    char *body = NULL;
    ck_assert_int_eq(
        api_status(w, "/api/v1/audit?action=admin.tokens_reload", "ro-2d8e4b6a0c", &body), 200);
    ck_assert_msg(strstr(body, "signal:SIGHUP") != NULL && strstr(body, "rw-5e1b") == NULL, "%s",
                  body);
    free(body);
    char path[256];
    e2e_cp_path(w, "cp.log", path, sizeof path);
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    char line[4096];
    while (fgets(line, sizeof line, f) != NULL)
        ck_assert_msg(strstr(line, "rw-5e1b7c9d3f") == NULL &&
                          strstr(line, "rw-0000000000") == NULL,
                      "a token in the log: %s", line);
    fclose(f);
    e2e_cp_stop(w);
}
END_TEST

static Suite *admin_tls_suite(void)
{
    Suite *s = suite_create("admin_tls");
    TCase *tc = e2e_tcase("lbctl_https");
    tcase_add_test(tc, lbctl_over_https);
    suite_add_tcase(s, tc);
    tc = e2e_tcase("refused");
    tcase_add_test(tc, refused_connections_exit_3);
    suite_add_tcase(s, tc);
    tc = e2e_tcase("tokens");
    tcase_add_test(tc, sighup_rereads_tokens);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return e2e_run(admin_tls_suite());
}
