/* tests/e2e/test_tls_cp.c: TLS in the control plane. A config with a
 * `tls: true` frontend is applied; replacing the certificate file publishes
 * a new generation of the same version with the new fingerprint; a corrupt
 * replacement is refused (`lbctl tls reload` exits 1 with the reason) and the
 * old certificate stays listed; a config whose key does not match is refused
 * by name. An https:// backend added with `lbctl backends add --ca-file
 * --sni` is reached over verified TLS, and its caFile is reloaded when it
 * changes on disk. Certificates are made by the openssl CLI in the world's
 * dir. */
#include "e2e.h"

#include <check.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void sh(struct e2e_cp *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void sh(struct e2e_cp *w, const char *fmt, ...)
{
    char dir[512], cmd[2048], full[2700];
    e2e_cp_path(w, "", dir, sizeof(dir));
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    snprintf(full, sizeof(full), "cd %s && (%s) >/dev/null 2>&1", dir, cmd);
    ck_assert_msg(system(full) == 0, "failed: %s", cmd);
}

/* SHA-256 fingerprint of <name> in the world dir, lowercase hex. */
static void fingerprint(struct e2e_cp *w, const char *name, char out[65])
{
    char path[512], cmd[800];
    e2e_cp_path(w, name, path, sizeof(path));
    snprintf(cmd, sizeof(cmd),
             "openssl x509 -in %s -noout -fingerprint -sha256 | cut -d= -f2 | tr -d ':\\n' | "
             "tr A-F a-f",
             path);
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    ck_assert_ptr_nonnull(fgets(out, 65, p));
    pclose(p);
    ck_assert_uint_eq(strlen(out), 64);
}

/* `lbctl --json tls list` output (caller frees). */
static char *tls_list(struct e2e_cp *w)
{
    struct e2e_cmd r;
    ck_assert_int_eq(e2e_cp_lbctl(w, &r, "--json", "tls", "list", NULL), 0);
    char *out = strdup(r.out);
    e2e_cmd_free(&r);
    return out;
}

START_TEST(reload_publishes_and_refuses)
{
    struct e2e_cp_opts o = {.backends = 1};
    struct e2e_cp *w = e2e_cp_start(&o);
    sh(w, "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 30 "
          "-subj /CN=e2e-CA && "
          "openssl req -newkey rsa:2048 -nodes -keyout key.pem -out leaf.csr -subj /CN=web.test && "
          "printf 'subjectAltName=DNS:web.test\\n' > leaf.ext && "
          "openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -set_serial 1 -days 90 "
          "-extfile leaf.ext -out cert.pem && "
          "openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -set_serial 2 -days 90 "
          "-extfile leaf.ext -out cert2.pem && "
          "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out other.key");
    char fp1[65], fp2[65];
    fingerprint(w, "cert.pem", fp1);
    fingerprint(w, "cert2.pem", fp2);

    /* no health change publishes a generation while the test counts them:
     * the first check is spread over the interval */
    e2e_cp_write_tls_config(w, "tls.yaml", "key.pem", "healthcheck: {interval: 10m}\n");
    char path[600];
    e2e_cp_path(w, "tls.yaml", path, sizeof(path));
    struct e2e_cmd r;
    ck_assert_msg(e2e_cp_lbctl(w, &r, "config", "apply", path, NULL) == 0, "%s", r.err);
    e2e_cmd_free(&r);
    long version = 0, gen = 0;
    ck_assert_int_ge(e2e_cp_dataplanes(w, NULL, 0, &version, &gen), 0);
    char *list = tls_list(w);
    ck_assert_msg(strstr(list, fp1) != NULL, "%s", list);
    ck_assert_ptr_nonnull(strstr(list, "\"frontend\": \"web-tls\""));
    ck_assert_ptr_nonnull(strstr(list, "\"subject\": \"CN=web.test\""));
    ck_assert_ptr_nonnull(strstr(list, "\"status\": \"ok\""));
    free(list);
    ck_assert_int_eq(e2e_cp_lbctl(w, &r, "tls", "list", NULL), 0);
    ck_assert_ptr_nonnull(strstr(r.out, "FINGERPRINT"));
    char short_fp[17];
    snprintf(short_fp, sizeof(short_fp), "%.16s", fp1);
    ck_assert_msg(strstr(r.out, short_fp) != NULL, "%s", r.out);
    e2e_cmd_free(&r);

    /* Replaced by rename, as certificate tools do: a new generation. */
    sh(w, "cp cert2.pem cert.new && mv cert.new cert.pem");
    uint64_t deadline = e2e_now_ms() + e2e_timeout_ms();
    bool seen = false;
    while (!seen && e2e_now_ms() < deadline) {
        list = tls_list(w);
        seen = strstr(list, fp2) != NULL;
        free(list);
        if (!seen)
            e2e_poll_pause(50);
    }
    ck_assert_msg(seen, "the new certificate was not picked up");
    long version2 = 0, gen2 = 0;
    ck_assert_int_ge(e2e_cp_dataplanes(w, NULL, 0, &version2, &gen2), 0);
    ck_assert_int_eq(version2, version);
    ck_assert_int_gt(gen2, gen);
    /* Nothing changed since: reloading is a no-op. */
    ck_assert_int_eq(e2e_cp_lbctl(w, &r, "tls", "reload", NULL), 0);
    ck_assert_ptr_nonnull(strstr(r.out, "unchanged"));
    e2e_cmd_free(&r);

    /* A corrupt replacement is refused; the previous certificate stays. */
    sh(w, "printf -- '-----BEGIN CERTIFICATE-----\\nbm9wZQ==\\n-----END CERTIFICATE-----\\n' "
          "> cert.new && mv cert.new cert.pem");
    ck_assert_int_eq(e2e_cp_lbctl(w, &r, "tls", "reload", NULL), 1);
    ck_assert_msg(strstr(r.err, "cert.pem holds a PEM block that is not a valid certificate"), "%s",
                  r.err);
    e2e_cmd_free(&r);
    list = tls_list(w);
    ck_assert_msg(strstr(list, fp2) != NULL, "%s", list);
    ck_assert_ptr_nonnull(strstr(list, "\"last_error\": \"/"));
    free(list);
    long gen3 = 0;
    ck_assert_int_ge(e2e_cp_dataplanes(w, NULL, 0, NULL, &gen3), 0);
    ck_assert_int_eq(gen3, gen2);

    /* A config whose key does not match its certificate is refused. */
    sh(w, "cp cert2.pem cert.pem");
    e2e_cp_write_tls_config(w, "bad.yaml", "other.key", "healthcheck: {interval: 10m}\n");
    e2e_cp_path(w, "bad.yaml", path, sizeof(path));
    ck_assert_int_eq(e2e_cp_lbctl(w, &r, "config", "apply", path, NULL), 1);
    ck_assert_msg(strstr(r.err, "other.key does not match ssl.certFile") != NULL, "%s", r.err);
    /* The message names the line and column of the key at fault. */
    ck_assert_msg(strstr(r.err, "config.yaml:7:12: ssl.keyFile: ") != NULL, "%s", r.err);
    e2e_cmd_free(&r);
    e2e_cp_stop(w);
}
END_TEST

/* One GET / through <w>'s frontend on a new connection: the status (-1 when
 * nothing came back), the body in <body>. */
static int front_get(struct e2e_cp *w, char *body, size_t bodysz)
{
    struct e2e_resp r;
    if (e2e_request(e2e_cp_frontend_port(w), "GET", "/", NULL, NULL, 0, &r) != 0)
        return -1;
    int st = r.status;
    snprintf(body, bodysz, "%s", r.body ? r.body : "");
    e2e_resp_free(&r);
    return st;
}

/* Polls front_get() until it answers <status>, at most e2e_timeout_ms(). */
static bool front_answers(struct e2e_cp *w, int status, char *body, size_t bodysz)
{
    uint64_t deadline = e2e_now_ms() + e2e_timeout_ms();
    while (front_get(w, body, bodysz) != status) {
        if (e2e_now_ms() >= deadline)
            return false;
        e2e_poll_pause(50);
    }
    return true;
}

/* World <tls> serves its backend b0 on an HTTPS frontend (certificate for
 * backend.test from its own CA); world <w> adds that frontend as an https://
 * backend with --ca-file and --sni and loses its own b0, so every answer it
 * gives came through verified TLS. */
/* Serves <tls>'s backend b0 on a TLS frontend with the cert.pem and key.pem
 * the caller made in its directory; returns the frontend's port. */
static unsigned serve_over_tls(struct e2e_cp *tls)
{
    char dir[512], path[600];
    e2e_cp_path(tls, "", dir, sizeof(dir));
    e2e_cp_path(tls, "tls.yaml", path, sizeof(path));
    unsigned port = e2e_free_port();
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f,
            "frontends:\n"
            "  - {name: web-tls, address: 127.0.0.1, port: %u, tls: true}\n"
            "backends:\n"
            "  - {id: b0, url: \"%s\"}\n"
            "metrics: {enabled: false}\n"
            "ssl:\n"
            "  certFile: %s/cert.pem\n"
            "  keyFile: %s/key.pem\n",
            port, e2e_cp_backend_url(tls, 0), dir, dir);
    ck_assert_int_eq(fclose(f), 0);
    struct e2e_cmd r;
    ck_assert_msg(e2e_cp_lbctl(tls, &r, "config", "apply", path, NULL) == 0, "%s", r.err);
    e2e_cmd_free(&r);
    ck_assert_int_gt(e2e_cp_wait_in_sync(tls, 1, NULL), 0);
    return port;
}

START_TEST(https_backend_added_by_lbctl)
{
    struct e2e_cp_opts o = {.backends = 1, .dataplanes = 1};
    struct e2e_cp *tls = e2e_cp_start(&o);
    sh(tls, "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key "
            "-out ca.pem -days 30 -subj /CN=e2e-CA && "
            "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout key.pem "
            "-out leaf.csr -subj /CN=backend.test && "
            "printf 'subjectAltName=DNS:backend.test\\n' > leaf.ext && "
            "openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -set_serial 1 -days 30 "
            "-extfile leaf.ext -out cert.pem");
    char ca[600];
    e2e_cp_path(tls, "ca.pem", ca, sizeof(ca));
    unsigned tls_port = serve_over_tls(tls);
    struct e2e_cmd r;

    struct e2e_cp *w = e2e_cp_start(&o);
    char url[64];
    snprintf(url, sizeof(url), "https://127.0.0.1:%u", tls_port);
    ck_assert_msg(e2e_cp_lbctl(w, &r, "backends", "add", url, "--id", "secure", "--ca-file", ca,
                               "--sni", "backend.test", NULL) == 0,
                  "%s", r.err);
    ck_assert_msg(strstr(r.out, "added backend secure") != NULL, "%s", r.out);
    e2e_cmd_free(&r);
    ck_assert_int_eq(e2e_cp_lbctl(w, &r, "--json", "backends", "list", NULL), 0);
    char want[700];
    snprintf(want, sizeof(want), "\"caFile\": \"%s\"", ca);
    ck_assert_msg(strstr(r.out, want) != NULL, "%s", r.out);
    ck_assert_msg(strstr(r.out, "\"sni\": \"backend.test\"") != NULL, "%s", r.out);
    e2e_cmd_free(&r);
    ck_assert_msg(e2e_cp_lbctl(w, &r, "backends", "remove", "b0", NULL) == 0, "%s", r.err);
    e2e_cmd_free(&r);
    ck_assert_int_gt(e2e_cp_wait_in_sync(w, 1, NULL), 0);

    long before = e2e_cp_backend_stat(tls, 0, "requests");
    char body[64];
    ck_assert_msg(front_answers(w, 200, body, sizeof(body)), "no answer through TLS");
    ck_assert_str_eq(body, "b0");
    for (int i = 0; i < 5; i++) {
        ck_assert_int_eq(front_get(w, body, sizeof(body)), 200);
        ck_assert_str_eq(body, "b0");
    }
    ck_assert_int_ge(e2e_cp_backend_stat(tls, 0, "requests"), before + 6);

    /* A name the certificate does not carry: the handshake is refused. */
    ck_assert_msg(
        e2e_cp_lbctl(w, &r, "backends", "update", "secure", "--sni", "wrong.test", NULL) == 0, "%s",
        r.err);
    e2e_cmd_free(&r);
    ck_assert_int_gt(e2e_cp_wait_in_sync(w, 1, NULL), 0);
    ck_assert_msg(front_answers(w, 502, body, sizeof(body)), "a wrong name was not refused");

    /* The config's rules come back as lbctl's one-line error. */
    ck_assert_int_eq(
        e2e_cp_lbctl(w, &r, "backends", "add", "http://127.0.0.1:1", "--sni", "x.test", NULL), 1);
    ck_assert_msg(strstr(r.err, "sni applies only to https:// backends") != NULL, "%s", r.err);
    e2e_cmd_free(&r);
    ck_assert_int_eq(e2e_cp_lbctl(w, &r, "backends", "update", "secure", "--ca-file",
                                  "/nonexistent/ca.pem", NULL),
                     1);
    ck_assert_msg(strstr(r.err, "backends[0].caFile: cannot read /nonexistent/ca.pem") != NULL,
                  "%s", r.err);
    e2e_cmd_free(&r);
    e2e_cp_stop(w);
    e2e_cp_stop(tls);
}
END_TEST

/* `lbctl --json tls list` of <w> holds <needle>, polled up to e2e_timeout_ms(). */
static bool tls_list_has(struct e2e_cp *w, const char *needle)
{
    uint64_t deadline = e2e_now_ms() + e2e_timeout_ms();
    for (;;) {
        char *list = tls_list(w);
        bool seen = strstr(list, needle) != NULL;
        free(list);
        if (seen || e2e_now_ms() >= deadline)
            return seen;
        e2e_poll_pause(50);
    }
}

/* World <tls> serves b0 over HTTPS with a certificate from CA 1; world <w>
 * reaches it as the https:// backend "secure" whose caFile (in w's dir)
 * holds CA 1. The upstream moves to a certificate from CA 2: w's handshakes
 * fail (502) until CA 2 is written into the caFile, which w's control plane
 * notices and publishes without a config change. A corrupt caFile is then
 * refused by `lbctl tls reload` and CA 2 keeps serving. */
START_TEST(backend_ca_file_reloads)
{
    struct e2e_cp_opts o = {.backends = 1, .dataplanes = 1};
    struct e2e_cp *tls = e2e_cp_start(&o);
    sh(tls, "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key "
            "-out ca.pem -days 30 -subj /CN=e2e-CA && "
            "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca2.key "
            "-out ca2.pem -days 30 -subj /CN=e2e-CA-2 && "
            "printf 'subjectAltName=DNS:backend.test\\n' > leaf.ext && "
            "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout key.pem "
            "-out leaf.csr -subj /CN=backend.test && "
            "openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -set_serial 1 -days 30 "
            "-extfile leaf.ext -out cert.pem && "
            "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout key2.pem "
            "-out leaf2.csr -subj /CN=backend.test && "
            "openssl x509 -req -in leaf2.csr -CA ca2.pem -CAkey ca2.key -set_serial 2 -days 30 "
            "-extfile leaf.ext -out cert2.pem");
    char tca[600], tca2[600];
    e2e_cp_path(tls, "ca.pem", tca, sizeof(tca));
    e2e_cp_path(tls, "ca2.pem", tca2, sizeof(tca2));
    unsigned tls_port = serve_over_tls(tls);
    struct e2e_cmd r;

    struct e2e_cp *w = e2e_cp_start(&o);
    sh(w, "cp %s upstream-ca.pem", tca);
    char ca[600], url[64];
    e2e_cp_path(w, "upstream-ca.pem", ca, sizeof(ca));
    snprintf(url, sizeof(url), "https://127.0.0.1:%u", tls_port);
    ck_assert_msg(e2e_cp_lbctl(w, &r, "backends", "add", url, "--id", "secure", "--ca-file", ca,
                               "--sni", "backend.test", NULL) == 0,
                  "%s", r.err);
    e2e_cmd_free(&r);
    ck_assert_msg(e2e_cp_lbctl(w, &r, "backends", "remove", "b0", NULL) == 0, "%s", r.err);
    e2e_cmd_free(&r);
    ck_assert_int_gt(e2e_cp_wait_in_sync(w, 1, NULL), 0);
    char body[64];
    ck_assert_msg(front_answers(w, 200, body, sizeof(body)), "no answer through TLS");
    ck_assert_str_eq(body, "b0");
    ck_assert_msg(tls_list_has(w, "\"subject\": \"CN=e2e-CA\""), "CA 1 not listed");
    ck_assert_int_eq(e2e_cp_lbctl(w, &r, "tls", "list", NULL), 0);
    ck_assert_msg(strstr(r.out, "no certificates: no frontend") != NULL, "%s", r.out);
    ck_assert_msg(strstr(r.out, "BACKEND") != NULL && strstr(r.out, "secure") != NULL &&
                      strstr(r.out, "CN=e2e-CA") != NULL,
                  "%s", r.out);
    e2e_cmd_free(&r);

    /* The upstream moves to CA 2's certificate. Its data plane restarts
     * meanwhile, so that no pooled keep-alive connection of w's (handshaken
     * under the old certificate) outlives the change. */
    ck_assert_int_eq(e2e_cp_dataplane_stop(tls, 0), 0);
    sh(tls, "cp cert2.pem cert.new && cp key2.pem key.new && mv key.new key.pem && "
            "mv cert.new cert.pem");
    ck_assert_msg(e2e_cp_lbctl(tls, &r, "tls", "reload", NULL) == 0, "%s", r.err);
    e2e_cmd_free(&r);
    char fp2[65];
    fingerprint(tls, "cert2.pem", fp2);
    ck_assert_msg(tls_list_has(tls, fp2), "the upstream's new certificate is not served");
    e2e_cp_dataplane_start(tls, 0);
    ck_assert_int_gt(e2e_cp_wait_in_sync(tls, 1, NULL), 0);
    ck_assert_msg(front_answers(w, 502, body, sizeof(body)), "CA 1 accepted CA 2's certificate");
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(front_get(w, body, sizeof(body)), 502);
    long version = 0, gen = 0;
    ck_assert_int_ge(e2e_cp_dataplanes(w, NULL, 0, &version, &gen), 0);

    /* CA 2 renamed over the caFile: watched, published, handshakes verify. */
    sh(w, "cp %s ca.new && mv ca.new upstream-ca.pem", tca2);
    ck_assert_msg(front_answers(w, 200, body, sizeof(body)), "CA 2 was not picked up");
    ck_assert_str_eq(body, "b0");
    long version2 = 0, gen2 = 0;
    ck_assert_int_ge(e2e_cp_dataplanes(w, NULL, 0, &version2, &gen2), 0);
    ck_assert_int_eq(version2, version);
    ck_assert_int_gt(gen2, gen);
    char *list = tls_list(w);
    ck_assert_msg(strstr(list, "\"subject\": \"CN=e2e-CA-2\"") != NULL, "%s", list);
    ck_assert_msg(strstr(list, "upstream-ca.pem of backend secure changed") != NULL, "%s", list);
    free(list);

    /* A corrupt caFile is refused, naming the file and the backend; CA 2
     * keeps serving. */
    sh(w, "printf -- '-----BEGIN CERTIFICATE-----\\nbm9wZQ==\\n-----END CERTIFICATE-----\\n' "
          "> ca.new && mv ca.new upstream-ca.pem");
    ck_assert_int_eq(e2e_cp_lbctl(w, &r, "tls", "reload", NULL), 1);
    char want[700];
    snprintf(want, sizeof(want),
             "backend secure caFile: %s holds a PEM block that is not a valid certificate", ca);
    ck_assert_msg(strstr(r.err, want) != NULL, "%s", r.err);
    e2e_cmd_free(&r);
    long gen3 = 0;
    ck_assert_int_ge(e2e_cp_dataplanes(w, NULL, 0, NULL, &gen3), 0);
    ck_assert_int_eq(gen3, gen2);
    for (int i = 0; i < 5; i++) {
        ck_assert_int_eq(front_get(w, body, sizeof(body)), 200);
        ck_assert_str_eq(body, "b0");
    }
    list = tls_list(w);
    ck_assert_msg(strstr(list, "\"subject\": \"CN=e2e-CA-2\"") != NULL, "%s", list);
    ck_assert_msg(strstr(list, "\"last_error\": \"backend secure caFile: ") != NULL, "%s", list);
    free(list);
    e2e_cp_stop(w);
    e2e_cp_stop(tls);
}
END_TEST

static Suite *tls_cp_suite(void)
{
    Suite *s = suite_create("tls_cp");
    TCase *tc = e2e_tcase("reload");
    tcase_add_test(tc, reload_publishes_and_refuses);
    suite_add_tcase(s, tc);
    tc = e2e_tcase("https_backend");
    tcase_add_test(tc, https_backend_added_by_lbctl);
    suite_add_tcase(s, tc);
    tc = e2e_tcase("backend_ca_reload");
    tcase_add_test(tc, backend_ca_file_reloads);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return e2e_run(tls_cp_suite());
}
