/* tests/e2e/test_tls_cp.c: TLS in the control plane. A config with a
 * `tls: true` frontend is applied; replacing the certificate file publishes
 * a new generation of the same version with the new fingerprint; a corrupt
 * replacement is refused (`lbctl tls reload` exits 1 with the reason) and the
 * old certificate stays listed; a config whose key does not match is refused
 * by name. Certificates are made by the openssl CLI in the world's dir. */
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

static void write_config(struct e2e_cp *w, const char *name, const char *key)
{
    char dir[512], path[600];
    e2e_cp_path(w, "", dir, sizeof(dir));
    e2e_cp_path(w, name, path, sizeof(path));
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f,
            "frontends:\n"
            "  - {name: web-tls, address: 127.0.0.1, port: %u, tls: true}\n"
            "backends:\n"
            "  - {id: b0, url: \"%s\"}\n"
            "ssl:\n"
            "  certFile: %s/cert.pem\n"
            "  keyFile: %s/%s\n",
            e2e_free_port(), e2e_cp_backend_url(w, 0), dir, dir, key);
    ck_assert_int_eq(fclose(f), 0);
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

    write_config(w, "tls.yaml", "key.pem");
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
            e2e_sleep_ms(50);
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
    write_config(w, "bad.yaml", "other.key");
    e2e_cp_path(w, "bad.yaml", path, sizeof(path));
    ck_assert_int_eq(e2e_cp_lbctl(w, &r, "config", "apply", path, NULL), 1);
    ck_assert_msg(strstr(r.err, "other.key does not match ssl.certFile") != NULL, "%s", r.err);
    /* The message names the line and column of the key at fault. */
    ck_assert_msg(strstr(r.err, "config.yaml:7:12: ssl.keyFile: ") != NULL, "%s", r.err);
    e2e_cmd_free(&r);
    e2e_cp_stop(w);
}
END_TEST

static Suite *tls_cp_suite(void)
{
    Suite *s = suite_create("tls_cp");
    TCase *tc = e2e_tcase("reload");
    tcase_add_test(tc, reload_publishes_and_refuses);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return e2e_run(tls_cp_suite());
}
