/* tests/unit/controlplane/test_tlscheck.c: certificates are made at run time
 * with the openssl CLI (the repository ignores *.pem): a CA, an
 * intermediate, RSA and ECDSA leaves, a key that matches nothing, a CRL. */
#include "config.h"
#include "lb_err.h"
#include "tlscheck.h"

#include <check.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char dir[256];

static int64_t now_ms(void)
{
    return (int64_t)time(NULL) * 1000;
}

static void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void sh(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    char full[2400];
    snprintf(full, sizeof(full), "cd %s && (%s) >/dev/null 2>&1", dir, cmd);
    if (system(full) != 0) {
        fprintf(stderr, "command failed: %s\n", cmd);
        exit(1);
    }
}

static void write_file(const char *name, const char *content)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (f == NULL || fputs(content, f) < 0 || fclose(f) != 0)
        exit(1);
}

static void make_certs(void)
{
    snprintf(dir, sizeof(dir), "/tmp/lb-test-tlscheck-XXXXXX");
    if (mkdtemp(dir) == NULL)
        exit(1);
    write_file("ca.ext", "basicConstraints=critical,CA:true\nkeyUsage=keyCertSign,cRLSign\n");
    write_file("leaf.ext", "subjectAltName=DNS:www.example.test,DNS:example.test,"
                           "URI:spiffe://t/web,IP:127.0.0.1\n");
    write_file("ca.cnf", "[ca]\ndefault_ca=d\n[d]\ndatabase=index.txt\ncrlnumber=crlnumber\n"
                         "default_md=sha256\ndefault_crl_days=30\n");
    write_file("index.txt", "");
    write_file("crlnumber", "01\n");
    sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 30 "
       "-subj /CN=Test-CA");
    sh("openssl req -newkey rsa:2048 -nodes -keyout int.key -out int.csr -subj /CN=Test-Int && "
       "openssl x509 -req -in int.csr -CA ca.pem -CAkey ca.key -set_serial 2 -days 30 "
       "-extfile ca.ext -out int.pem");
    sh("openssl req -newkey rsa:2048 -nodes -keyout leaf.key -out leaf.csr "
       "-subj /CN=www.example.test && openssl x509 -req -in leaf.csr -CA int.pem -CAkey int.key "
       "-set_serial 3 -days 400 -extfile leaf.ext -out leaf.pem");
    sh("cat leaf.pem int.pem > chain.pem && cat int.pem leaf.pem > reversed.pem");
    /* Signed by the CA directly; and by an impostor CA with the same name. */
    sh("openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -set_serial 4 -days 400 "
       "-extfile leaf.ext -out direct.pem");
    sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout fake.key -out fake.pem -days 30 "
       "-subj /CN=Test-CA && openssl x509 -req -in leaf.csr -CA fake.pem -CAkey fake.key "
       "-set_serial 5 -days 400 -extfile leaf.ext -out forged.pem");
    sh("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ec.key "
       "-out ec.pem -days 10 -subj /CN=ec.test -addext subjectAltName=DNS:ec.test");
    sh("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out other.key");
    sh("openssl ca -gencrl -keyfile ca.key -cert ca.pem -out crl.pem -config ca.cnf");
    write_file("garbage.pem", "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n"
                              "-----END CERTIFICATE-----\n");
    write_file("empty.pem", "nothing here\n");
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

struct file {
    uint8_t *data;
    size_t len;
    char path[512];
};

static struct file load(const char *name)
{
    struct file f = {0};
    snprintf(f.path, sizeof(f.path), "%s/%s", dir, name);
    struct lb_err e = {0};
    ck_assert_msg(tlscheck_read_file(f.path, &f.data, &f.len, &e) == LB_OK, "%s", e.msg);
    return f;
}

/* tlscheck_pair() on files <cert> and <key> (and <ca> unless NULL) at <at>. */
static int pair(const char *cert, const char *key, const char *ca, int64_t at,
                struct tlscheck_cert_info *info, enum tlscheck_fault *fault, struct lb_err *e)
{
    struct file c = load(cert), k = load(key), a = {0};
    if (ca != NULL)
        a = load(ca);
    struct tlscheck_pair_in in = {
        .cert_label = "ssl.certFile",
        .cert_path = c.path,
        .cert_pem = c.data,
        .cert_len = c.len,
        .key_label = "ssl.keyFile",
        .key_path = k.path,
        .key_pem = k.data,
        .key_len = k.len,
        .ca_pem = a.data,
        .ca_len = a.len,
        .now_ms = at,
    };
    int rc = tlscheck_pair(&in, info, fault, e);
    free(c.data);
    free(k.data);
    free(a.data);
    return rc;
}

START_TEST(rsa_chain_matches)
{
    struct tlscheck_cert_info info;
    struct lb_err e = {0};
    ck_assert_msg(pair("chain.pem", "leaf.key", NULL, now_ms(), &info, NULL, &e) == LB_OK, "%s",
                  e.msg);
    ck_assert_str_eq(info.subject, "CN=www.example.test");
    ck_assert_uint_eq(info.n_sans, 4);
    ck_assert_str_eq(info.sans[0], "DNS:www.example.test");
    ck_assert_str_eq(info.sans[1], "DNS:example.test");
    ck_assert_str_eq(info.sans[2], "URI:spiffe://t/web");
    ck_assert_str_eq(info.sans[3], "IP:127.0.0.1");
    ck_assert_uint_eq(strlen(info.fingerprint), 64);
    ck_assert(info.not_after_ms > now_ms() + 390LL * 86400 * 1000);
    ck_assert_int_eq(tlscheck_status_at(&info, now_ms()), TLSCHECK_OK);
    /* The fingerprint is the SHA-256 of the DER, as openssl prints it. */
    char cmd[700], line[256] = "";
    snprintf(cmd, sizeof(cmd),
             "openssl x509 -in %s/leaf.pem -noout -fingerprint -sha256 | cut -d= -f2 | "
             "tr -d ':\\n' | tr A-F a-f",
             dir);
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    ck_assert_ptr_nonnull(fgets(line, sizeof(line), p));
    pclose(p);
    ck_assert_str_eq(info.fingerprint, line);
}
END_TEST

START_TEST(ecdsa_matches_and_is_expiring)
{
    struct tlscheck_cert_info info;
    struct lb_err e = {0};
    ck_assert_msg(pair("ec.pem", "ec.key", NULL, now_ms(), &info, NULL, &e) == LB_OK, "%s", e.msg);
    ck_assert_str_eq(info.subject, "CN=ec.test");
    ck_assert_int_eq(tlscheck_status_at(&info, now_ms()), TLSCHECK_EXPIRING);
    ck_assert_str_eq(tlscheck_status_name(TLSCHECK_EXPIRING), "expiring");
}
END_TEST

START_TEST(key_mismatch_names_both_files)
{
    struct lb_err e = {0};
    enum tlscheck_fault fault = TLSCHECK_FAULT_CERT;
    ck_assert_int_eq(pair("leaf.pem", "other.key", NULL, now_ms(), NULL, &fault, &e), LB_EINVAL);
    ck_assert_int_eq(fault, TLSCHECK_FAULT_KEY);
    ck_assert_msg(strstr(e.msg, "other.key does not match ssl.certFile") != NULL, "%s", e.msg);
    ck_assert_msg(strstr(e.msg, "leaf.pem") != NULL, "%s", e.msg);
    /* Key types differ: an ECDSA key for an RSA certificate. */
    ck_assert_int_eq(pair("leaf.pem", "ec.key", NULL, now_ms(), NULL, &fault, &e), LB_EINVAL);
    ck_assert_int_eq(fault, TLSCHECK_FAULT_KEY);
}
END_TEST

START_TEST(expired_and_not_yet_valid)
{
    struct lb_err e = {0};
    enum tlscheck_fault fault = TLSCHECK_FAULT_KEY;
    int64_t later = now_ms() + 11LL * 86400 * 1000; /* ec.pem lives 10 days */
    ck_assert_int_eq(pair("ec.pem", "ec.key", NULL, later, NULL, &fault, &e), LB_EINVAL);
    ck_assert_int_eq(fault, TLSCHECK_FAULT_CERT);
    ck_assert_msg(strstr(e.msg, "ec.pem expired on ") != NULL, "%s", e.msg);
    int64_t before = now_ms() - 2LL * 86400 * 1000;
    ck_assert_int_eq(pair("ec.pem", "ec.key", NULL, before, NULL, &fault, &e), LB_EINVAL);
    ck_assert_msg(strstr(e.msg, "is not valid before") != NULL, "%s", e.msg);
    struct tlscheck_cert_info info;
    ck_assert_int_eq(pair("ec.pem", "ec.key", NULL, now_ms(), &info, NULL, &e), LB_OK);
    ck_assert_int_eq(tlscheck_status_at(&info, later), TLSCHECK_EXPIRED);
}
END_TEST

START_TEST(chain_out_of_order)
{
    struct lb_err e = {0};
    /* The key matches the first certificate; reversed.pem starts with the
     * intermediate, so its key is int.key. */
    ck_assert_int_eq(pair("reversed.pem", "int.key", NULL, now_ms(), NULL, NULL, &e), LB_EINVAL);
    ck_assert_msg(strstr(e.msg, "certificate 1 is not issued by certificate 2") != NULL, "%s",
                  e.msg);
    ck_assert_int_eq(pair("reversed.pem", "leaf.key", NULL, now_ms(), NULL, NULL, &e), LB_EINVAL);
}
END_TEST

START_TEST(chain_against_ca)
{
    struct lb_err e = {0};
    ck_assert_msg(pair("chain.pem", "leaf.key", "ca.pem", now_ms(), NULL, NULL, &e) == LB_OK, "%s",
                  e.msg);
    ck_assert_msg(pair("direct.pem", "leaf.key", "ca.pem", now_ms(), NULL, NULL, &e) == LB_OK, "%s",
                  e.msg);
    /* Claims Test-CA as issuer, signed by another key. */
    ck_assert_int_eq(pair("forged.pem", "leaf.key", "ca.pem", now_ms(), NULL, NULL, &e), LB_EINVAL);
    ck_assert_msg(strstr(e.msg, "does not verify against caFile") != NULL, "%s", e.msg);
    /* A CA that did not issue it is not consulted. */
    ck_assert_int_eq(pair("ec.pem", "ec.key", "ca.pem", now_ms(), NULL, NULL, &e), LB_OK);
}
END_TEST

START_TEST(garbage_pem)
{
    struct lb_err e = {0};
    enum tlscheck_fault fault = TLSCHECK_FAULT_KEY;
    ck_assert_int_eq(pair("garbage.pem", "leaf.key", NULL, now_ms(), NULL, &fault, &e), LB_EINVAL);
    ck_assert_int_eq(fault, TLSCHECK_FAULT_CERT);
    ck_assert_msg(strstr(e.msg, "garbage.pem holds a PEM block that is not a valid certificate"),
                  "%s", e.msg);
    ck_assert_int_eq(pair("empty.pem", "leaf.key", NULL, now_ms(), NULL, &fault, &e), LB_EINVAL);
    ck_assert_msg(strstr(e.msg, "holds no PEM certificate") != NULL, "%s", e.msg);
    ck_assert_int_eq(pair("leaf.pem", "garbage.pem", NULL, now_ms(), NULL, &fault, &e), LB_EINVAL);
    ck_assert_int_eq(fault, TLSCHECK_FAULT_KEY);
    struct file g = load("garbage.pem"), c = load("crl.pem"), ca = load("ca.pem");
    ck_assert_int_eq(tlscheck_ca(g.path, g.data, g.len, &e), LB_EINVAL);
    ck_assert_int_eq(tlscheck_ca(ca.path, ca.data, ca.len, &e), LB_OK);
    ck_assert_msg(tlscheck_crl(c.path, c.data, c.len, &e) == LB_OK, "%s", e.msg);
    ck_assert_int_eq(tlscheck_crl(ca.path, ca.data, ca.len, &e), LB_EINVAL);
    ck_assert_int_eq(tlscheck_crl(g.path, g.data, g.len, &e), LB_EINVAL);
    free(g.data);
    free(c.data);
    free(ca.data);
    struct tlscheck_cert_info info;
    ck_assert_int_eq(tlscheck_cert_info("x", (const uint8_t *)"junk", 4, &info, &e), LB_EINVAL);
}
END_TEST

START_TEST(pins)
{
    uint8_t pin[32], want[32];
    for (int i = 0; i < 32; i++)
        want[i] = (uint8_t)i;
    struct lb_err e = {0};
    ck_assert_int_eq(
        tlscheck_pin_parse("000102030405060708090a0b0c0d0e0f101112131415161718191A1B1C1D1E1F", pin,
                           &e),
        LB_OK);
    ck_assert_mem_eq(pin, want, 32);
    memset(pin, 0, sizeof(pin));
    ck_assert_int_eq(tlscheck_pin_parse("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", pin, &e),
                     LB_OK);
    ck_assert_mem_eq(pin, want, 32);
    ck_assert_int_eq(tlscheck_pin_parse("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8", pin, &e),
                     LB_EINVAL);
    ck_assert_int_eq(tlscheck_pin_parse("0001", pin, &e), LB_EINVAL);
    ck_assert_msg(strstr(e.msg, "is not a SHA-256 pin") != NULL, "%s", e.msg);
    ck_assert_int_eq(
        tlscheck_pin_parse("zz0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f", pin,
                           &e),
        LB_EINVAL);
    /* 32 bytes of SHA-1 size would be 28 base64 characters: refused. */
    ck_assert_int_eq(tlscheck_pin_parse("AAECAwQFBgcICQoLDA0ODxAREhM=", pin, &e), LB_EINVAL);
}
END_TEST

static struct config *ssl_config(const char *ssl_yaml)
{
    char yaml[2048];
    snprintf(yaml, sizeof(yaml),
             "frontends: [{name: web, port: 8443, tls: true}]\n"
             "backends: [{url: \"http://127.0.0.1:9001\"}]\n"
             "ssl:\n%s",
             ssl_yaml);
    struct config *cfg = NULL;
    struct lb_err e = {0};
    ck_assert_msg(config_parse_yaml(yaml, strlen(yaml), "t.yaml", dir, &cfg, &e) == LB_OK, "%s",
                  e.msg);
    return cfg;
}

START_TEST(bundle_load_patch_and_compare)
{
    struct config *cfg = ssl_config("  certFile: chain.pem\n  keyFile: leaf.key\n"
                                    "  caFile: ca.pem\n  crlFile: crl.pem\n"
                                    "  certificates: [{certFile: ec.pem, keyFile: ec.key}]\n");
    struct tlscheck_bundle *a = NULL, *b = NULL;
    struct lb_err e = {0};
    ck_assert_msg(tlscheck_bundle_load(&cfg->ssl, dir, now_ms(), &a, &e) == LB_OK, "%s", e.msg);
    ck_assert_uint_eq(a->n_files, 6);
    ck_assert_uint_eq(a->n_certs, 2);
    ck_assert_str_eq(a->certs[0].info.subject, "CN=www.example.test");
    ck_assert_str_eq(a->certs[1].info.subject, "CN=ec.test");
    ck_assert_ptr_eq(tlscheck_bundle_file(a, "crl.pem"), a->crl);
    ck_assert_ptr_null(tlscheck_bundle_file(a, "nope.pem"));
    ck_assert_int_eq(tlscheck_bundle_load(&cfg->ssl, dir, now_ms(), &b, &e), LB_OK);
    ck_assert(tlscheck_bundle_same(a, b));
    tlscheck_bundle_free(b);

    /* A snapshot whose frontend carries other bytes gets the bundle's. */
    Lb__V1__Snapshot snap = LB__V1__SNAPSHOT__INIT;
    Lb__V1__Frontend fe = LB__V1__FRONTEND__INIT, plain = LB__V1__FRONTEND__INIT;
    Lb__V1__Tls tls = LB__V1__TLS__INIT;
    Lb__V1__Certificate c0 = LB__V1__CERTIFICATE__INIT, c1 = LB__V1__CERTIFICATE__INIT;
    Lb__V1__Certificate *certs[] = {&c0, &c1};
    Lb__V1__Frontend *fes[] = {&plain, &fe};
    c0.cert_pem.data = (uint8_t *)strdup("old");
    c0.cert_pem.len = 3;
    tls.certificates = certs;
    tls.n_certificates = 2;
    fe.tls = &tls;
    fe.name = "web";
    snap.frontends = fes;
    snap.n_frontends = 2;
    ck_assert_int_eq(tlscheck_bundle_patch(a, &snap, &e), LB_OK);
    ck_assert_uint_eq(c0.cert_pem.len, a->certs[0].cert->len);
    ck_assert_mem_eq(c0.cert_pem.data, a->certs[0].cert->data, c0.cert_pem.len);
    ck_assert_mem_eq(c1.key_pem.data, a->certs[1].key->data, c1.key_pem.len);
    ck_assert_uint_eq(tls.crl_pem.len, a->crl->len);
    ck_assert_ptr_null(plain.tls);
    free(c0.cert_pem.data);
    free(c0.key_pem.data);
    free(c1.cert_pem.data);
    free(c1.key_pem.data);
    free(tls.ca_pem.data);
    free(tls.crl_pem.data);
    tls.n_certificates = 1;
    ck_assert_int_eq(tlscheck_bundle_patch(a, &snap, &e), LB_EINVAL);

    /* The same file names with other contents differ. */
    sh("cp ec.pem ec-saved.pem && cp leaf.pem ec.pem");
    b = NULL;
    ck_assert_int_eq(tlscheck_bundle_load(&cfg->ssl, dir, now_ms(), &b, &e), LB_EINVAL);
    ck_assert_msg(strstr(e.msg, "ec.key does not match ssl.certificates[0].certFile") != NULL, "%s",
                  e.msg);
    sh("mv ec-saved.pem ec.pem");
    tlscheck_bundle_free(a);
    config_free(cfg);
}
END_TEST

START_TEST(bundle_refuses_a_broken_crl)
{
    struct config *cfg =
        ssl_config("  certFile: leaf.pem\n  keyFile: leaf.key\n  crlFile: garbage.pem\n");
    struct tlscheck_bundle *b = NULL;
    struct lb_err e = {0};
    ck_assert_int_eq(tlscheck_bundle_load(&cfg->ssl, dir, now_ms(), &b, &e), LB_EINVAL);
    ck_assert_msg(strstr(e.msg, "garbage.pem holds no PEM CRL") != NULL, "%s", e.msg);
    ck_assert_ptr_null(b);
    config_free(cfg);
}
END_TEST

START_TEST(bundle_backend_cas)
{
    /* No TLS frontend: a bundle with no files, to which backend CAs go. */
    struct tlscheck_bundle *a = NULL, *b = NULL;
    struct lb_err e = {0};
    ck_assert_int_eq(tlscheck_bundle_load(NULL, dir, now_ms(), &a, &e), LB_OK);
    ck_assert_uint_eq(a->n_files, 0);
    ck_assert_uint_eq(a->n_certs, 0);
    ck_assert_msg(tlscheck_bundle_add_backend_ca(a, "api", "ca.pem", dir, &e) == LB_OK, "%s",
                  e.msg);
    ck_assert_uint_eq(a->n_backend_cas, 1);
    const struct tlscheck_backend_ca *ca = tlscheck_bundle_backend_ca(a, "api");
    ck_assert_ptr_nonnull(ca);
    ck_assert_str_eq(ca->backend, "api");
    ck_assert_str_eq(ca->file.name, "ca.pem");
    ck_assert_str_eq(ca->info.subject, "CN=Test-CA");
    ck_assert_uint_eq(strlen(ca->info.fingerprint), 64);
    ck_assert_ptr_null(tlscheck_bundle_backend_ca(a, "web"));
    ck_assert_ptr_null(tlscheck_bundle_backend_ca(NULL, "api"));

    /* A broken or missing file names the backend and the file; the bundle
     * keeps what it had. */
    ck_assert_int_eq(tlscheck_bundle_add_backend_ca(a, "web", "garbage.pem", dir, &e), LB_EINVAL);
    char want[600];
    snprintf(want, sizeof(want),
             "backend web caFile: %s/garbage.pem holds a PEM block that is not a valid "
             "certificate",
             dir);
    ck_assert_str_eq(e.msg, want);
    ck_assert_int_eq(tlscheck_bundle_add_backend_ca(a, "web", "empty.pem", dir, &e), LB_EINVAL);
    ck_assert_msg(strstr(e.msg, "backend web caFile: ") == e.msg &&
                      strstr(e.msg, "empty.pem holds no PEM certificate") != NULL,
                  "%s", e.msg);
    ck_assert_int_eq(tlscheck_bundle_add_backend_ca(a, "web", "nope.pem", dir, &e), LB_ESYS);
    ck_assert_msg(strstr(e.msg, "backend web caFile: cannot read ") == e.msg, "%s", e.msg);
    ck_assert_uint_eq(a->n_backend_cas, 1);

    /* Same backends, files and contents compare equal; a copy too. */
    ck_assert_int_eq(tlscheck_bundle_load(NULL, dir, now_ms(), &b, &e), LB_OK);
    ck_assert(!tlscheck_bundle_same(a, b));
    ck_assert_int_eq(tlscheck_bundle_copy_backend_ca(b, ca, &e), LB_OK);
    ck_assert(tlscheck_bundle_same(a, b));
    ck_assert_ptr_ne(b->backend_cas[0].file.data, ca->file.data);
    ck_assert_uint_eq(b->backend_cas[0].file.len, ca->file.len);
    ck_assert_mem_eq(b->backend_cas[0].file.data, ca->file.data, ca->file.len);
    ck_assert_str_eq(b->backend_cas[0].info.fingerprint, ca->info.fingerprint);
    tlscheck_bundle_free(b);
    b = NULL;
    /* Another backend for the same file, or another file: not the same. */
    ck_assert_int_eq(tlscheck_bundle_load(NULL, dir, now_ms(), &b, &e), LB_OK);
    ck_assert_int_eq(tlscheck_bundle_add_backend_ca(b, "web", "ca.pem", dir, &e), LB_OK);
    ck_assert(!tlscheck_bundle_same(a, b));
    tlscheck_bundle_free(b);
    b = NULL;
    ck_assert_int_eq(tlscheck_bundle_load(NULL, dir, now_ms(), &b, &e), LB_OK);
    ck_assert_int_eq(tlscheck_bundle_add_backend_ca(b, "api", "fake.pem", dir, &e), LB_OK);
    ck_assert(!tlscheck_bundle_same(a, b));
    tlscheck_bundle_free(b);

    /* Patching: the https:// backend with a CA gets the bundle's bytes, one
     * without keeps none, a CA the bundle does not hold is refused. */
    Lb__V1__Snapshot snap = LB__V1__SNAPSHOT__INIT;
    Lb__V1__Backend api = LB__V1__BACKEND__INIT, sys = LB__V1__BACKEND__INIT;
    Lb__V1__Backend *bes[] = {&sys, &api};
    api.id = "api";
    api.tls = true;
    api.ca_pem.data = (uint8_t *)strdup("old");
    api.ca_pem.len = 3;
    sys.id = "sys";
    sys.tls = true;
    snap.backends = bes;
    snap.n_backends = 2;
    ck_assert_int_eq(tlscheck_bundle_patch(a, &snap, &e), LB_OK);
    ck_assert_uint_eq(api.ca_pem.len, ca->file.len);
    ck_assert_mem_eq(api.ca_pem.data, ca->file.data, ca->file.len);
    ck_assert_uint_eq(sys.ca_pem.len, 0);
    sys.ca_pem.data = (uint8_t *)strdup("stray");
    sys.ca_pem.len = 5;
    ck_assert_int_eq(tlscheck_bundle_patch(a, &snap, &e), LB_EINVAL);
    ck_assert_msg(strstr(e.msg, "backend sys carries a CA") != NULL, "%s", e.msg);
    ck_assert_mem_eq(api.ca_pem.data, ca->file.data, ca->file.len);
    free(api.ca_pem.data);
    free(sys.ca_pem.data);
    tlscheck_bundle_free(a);
}
END_TEST

START_TEST(bundle_copy_ssl)
{
    struct config *cfg = ssl_config("  certFile: chain.pem\n  keyFile: leaf.key\n"
                                    "  caFile: ca.pem\n"
                                    "  certificates: [{certFile: ec.pem, keyFile: ec.key}]\n");
    struct tlscheck_bundle *a = NULL, *b = NULL;
    struct lb_err e = {0};
    ck_assert_msg(tlscheck_bundle_load(&cfg->ssl, dir, now_ms(), &a, &e) == LB_OK, "%s", e.msg);
    ck_assert_int_eq(tlscheck_bundle_add_backend_ca(a, "api", "ca.pem", dir, &e), LB_OK);
    ck_assert_int_eq(tlscheck_bundle_copy_ssl(a, &b, &e), LB_OK);
    /* The ssl part only, pointing into the copy's own files. */
    ck_assert_uint_eq(b->n_backend_cas, 0);
    ck_assert_uint_eq(b->n_files, a->n_files);
    ck_assert_uint_eq(b->n_certs, 2);
    for (size_t i = 0; i < b->n_certs; i++) {
        ck_assert(b->certs[i].cert >= b->files && b->certs[i].cert < b->files + b->n_files);
        ck_assert(b->certs[i].key >= b->files && b->certs[i].key < b->files + b->n_files);
        ck_assert_str_eq(b->certs[i].cert->name, a->certs[i].cert->name);
        ck_assert_str_eq(b->certs[i].info.fingerprint, a->certs[i].info.fingerprint);
    }
    ck_assert_ptr_eq(b->ca, tlscheck_bundle_file(b, "ca.pem"));
    ck_assert_ptr_null(b->crl);
    ck_assert_ptr_ne(b->ca->data, a->ca->data);
    ck_assert_mem_eq(b->ca->data, a->ca->data, a->ca->len);
    ck_assert_int_eq(tlscheck_bundle_copy_backend_ca(b, &a->backend_cas[0], &e), LB_OK);
    ck_assert(tlscheck_bundle_same(a, b));
    tlscheck_bundle_free(a);
    tlscheck_bundle_free(b);
    config_free(cfg);
}
END_TEST

static Suite *tlscheck_suite(void)
{
    Suite *s = suite_create("tlscheck");
    TCase *tc = tcase_create("pairs");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, rsa_chain_matches);
    tcase_add_test(tc, ecdsa_matches_and_is_expiring);
    tcase_add_test(tc, key_mismatch_names_both_files);
    tcase_add_test(tc, expired_and_not_yet_valid);
    tcase_add_test(tc, chain_out_of_order);
    tcase_add_test(tc, chain_against_ca);
    tcase_add_test(tc, garbage_pem);
    suite_add_tcase(s, tc);
    tc = tcase_create("pins");
    tcase_add_test(tc, pins);
    suite_add_tcase(s, tc);
    tc = tcase_create("bundles");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, bundle_load_patch_and_compare);
    tcase_add_test(tc, bundle_refuses_a_broken_crl);
    tcase_add_test(tc, bundle_backend_cas);
    tcase_add_test(tc, bundle_copy_ssl);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    make_certs();
    SRunner *sr = srunner_create(tlscheck_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
