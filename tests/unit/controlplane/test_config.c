/* tests/unit/controlplane/test_config.c */
#include "config.h"
#include "lb_err.h"

#include <check.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char tmpdir[256];

static void write_file(const char *name, const char *content)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(content, f);
    fclose(f);
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

/* PEM files are created at run time: the repository ignores *.pem. */
static void setup(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/lb-test-config-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    write_file("cert.pem", "cert\n");
    write_file("key.pem", "key\n");
    write_file("ca.pem", "ca\n");
    write_file("b.pem", "other cert\n");
}

static void teardown(void)
{
    nftw(tmpdir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

static char *read_fixture(const char *name)
{
    const char *src = getenv("LB_SOURCE_DIR");
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", src ? src : ".", name);
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    static char buf[65536];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    return strdup(buf);
}

static struct config *parse_ok(const char *yaml)
{
    struct config *c = NULL;
    struct lb_err err = {0};
    int rc = config_parse_yaml(yaml, strlen(yaml), "config.yaml", tmpdir, &c, &err);
    ck_assert_msg(rc == LB_OK, "parse failed: %s", err.msg);
    return c;
}

static struct config *seed(void)
{
    char *y = read_fixture("tests/unit/controlplane/fixtures/seed.yaml");
    struct config *c = parse_ok(y);
    free(y);
    return c;
}

#define MINIMAL "frontends:\n  - port: 8080\nbackends:\n  - url: \"http://a:1\"\n"

START_TEST(seed_parses)
{
    struct config *c = seed();
    ck_assert_uint_eq(c->n_frontends, 2);
    ck_assert_uint_eq(c->frontends[0].port, 8080);
    ck_assert_str_eq(c->frontends[0].name, "http-8080");
    ck_assert_uint_eq(c->frontends[1].port, 8443);
    ck_assert(!c->frontends[1].tls); /* the comment does not make it TLS */
    ck_assert_uint_eq(c->n_backends, 2);
    ck_assert_str_eq(c->backends[0].id, "backend1-9001");
    ck_assert_str_eq(c->backends[0].host, "backend1");
    ck_assert_uint_eq(c->backends[0].port, 9001);
    ck_assert_uint_eq(c->backends[0].weight, 5);
    ck_assert_uint_eq(c->backends[1].weight, 3);
    ck_assert_uint_eq(c->healthcheck.interval_ms, 10000);
    ck_assert_uint_eq(c->healthcheck.timeout_ms, 2000);
    ck_assert_str_eq(c->healthcheck.path, "/health");
    ck_assert(c->ssl.present);
    ck_assert_str_eq(c->ssl.cert_file, "cert.pem");
    ck_assert_str_eq(c->ssl.ca_file, "ca.pem");
    ck_assert_uint_eq(c->ssl.client_auth, 4);
    ck_assert(c->ratelimit.enabled);
    ck_assert_uint_eq(c->ratelimit.rate, 100);
    ck_assert_uint_eq(c->ratelimit.burst, 50);
    ck_assert_int_eq(c->ratelimit.algorithm, CONFIG_RL_TOKEN_BUCKET);
    ck_assert(c->circuitbreaker.enabled);
    ck_assert_uint_eq(c->circuitbreaker.threshold, 5);
    ck_assert_uint_eq(c->circuitbreaker.timeout_ms, 30000);
    ck_assert_uint_eq(c->circuitbreaker.max_half_open, 3);
    ck_assert_int_eq(c->logging.level, CONFIG_LOG_INFO);
    ck_assert_str_eq(c->logging.format, "json");
    ck_assert(c->metrics.enabled);
    ck_assert_uint_eq(c->metrics.port, 9090);
    config_free(c);
}
END_TEST

START_TEST(deploy_example_validates)
{
    const char *src = getenv("LB_SOURCE_DIR");
    char path[1024];
    snprintf(path, sizeof(path), "%s/deploy/config.yaml", src ? src : ".");
    struct config *c = NULL;
    struct lb_err err = {0};
    ck_assert_msg(config_load_yaml(path, NULL, &c, &err) == LB_OK, "%s", err.msg);
    ck_assert_uint_eq(c->n_frontends, 1);
    ck_assert_str_eq(c->frontends[0].name, "web");
    ck_assert_str_eq(c->frontends[0].address, "127.0.0.1");
    ck_assert_uint_eq(c->n_backends, 3);
    ck_assert_str_eq(c->backends[2].id, "demo-c");
    ck_assert_uint_eq(c->backends[1].weight, 3);
    ck_assert(!c->ratelimit.enabled);
    ck_assert(!c->ssl.present);
    config_free(c);
}
END_TEST

START_TEST(defaults_filled)
{
    struct config *c = parse_ok(MINIMAL);
    ck_assert_str_eq(c->frontends[0].name, "http-8080");
    ck_assert_str_eq(c->frontends[0].address, "0.0.0.0");
    ck_assert(!c->frontends[0].tls);
    ck_assert_str_eq(c->backends[0].id, "a-1");
    ck_assert_uint_eq(c->backends[0].weight, 1);
    ck_assert_int_eq(c->backends[0].state, CONFIG_BACKEND_ACTIVE);
    ck_assert(!c->backends[0].https);
    ck_assert_uint_eq(c->healthcheck.rise, 2);
    ck_assert_uint_eq(c->healthcheck.fall, 3);
    ck_assert_int_eq(c->healthcheck.type, CONFIG_HC_HTTP);
    ck_assert_uint_eq(c->healthcheck.expected_status, 0); /* any 2xx or 3xx */
    ck_assert(c->healthcheck.fail_open);
    ck_assert(!c->ssl.present);
    ck_assert(!c->ratelimit.enabled);
    ck_assert(c->ratelimit.per_client);
    ck_assert(!c->ratelimit.global);
    ck_assert_uint_eq(c->ratelimit.ipv4_prefix, 32);
    ck_assert_uint_eq(c->ratelimit.ipv6_prefix, 128);
    ck_assert_uint_eq(c->ratelimit.max_keys, 100000);
    ck_assert_uint_eq(c->ratelimit.n_trusted_proxies, 0);
    ck_assert(c->ratelimit.headers_on_allowed);
    ck_assert(!c->circuitbreaker.enabled);
    ck_assert_uint_eq(c->circuitbreaker.max_timeout_ms, 300000);
    ck_assert(!c->circuitbreaker.ignore_5xx);
    ck_assert(c->retries.enabled);
    ck_assert_uint_eq(c->retries.max, 2);
    ck_assert_uint_eq(c->retries.budget_percent, 20);
    ck_assert_uint_eq(c->retries.budget_min, 3);
    ck_assert_uint_eq(c->retries.backoff_base_ms, 25);
    ck_assert_uint_eq(c->retries.backoff_cap_ms, 250);
    ck_assert_int_eq(c->balancing.algorithm, CONFIG_BAL_WEIGHTED_ROUND_ROBIN);
    ck_assert_uint_eq(c->balancing.slow_start_ms, 30000);
    ck_assert_int_eq(c->balancing.weights, CONFIG_WEIGHTS_STATIC);
    ck_assert_uint_eq(c->timeouts.client_header_ms, 10000);
    ck_assert_uint_eq(c->timeouts.upstream_connect_ms, 3000);
    ck_assert_uint_eq(c->timeouts.drain_ms, 30000);
    ck_assert_uint_eq(c->limits.max_request_line, 8192);
    ck_assert_uint_eq(c->limits.max_headers, 100);
    ck_assert(c->logging.access_log);
    ck_assert_str_eq(c->metrics.address, "127.0.0.1");
    ck_assert(!c->metrics.enabled);
    config_free(c);
}
END_TEST

START_TEST(extended_keys)
{
    struct config *c = parse_ok("frontends:\n"
                                "  - {name: web, address: \"::1\", port: 443, tls: true}\n"
                                "  - {port: 443, address: 127.0.0.1}\n"
                                "backends:\n"
                                "  - {url: \"https://[::1]:8443/\", state: draining}\n"
                                "  - {url: \"http://Example.COM\", id: ex, weight: 1000}\n"
                                "ssl:\n"
                                "  certFile: cert.pem\n"
                                "  keyFile: key.pem\n"
                                "  minVersion: TLSv1.3\n"
                                "  certificates:\n"
                                "    - {certFile: b.pem, keyFile: key.pem, sni: [a.example, "
                                "b.example]}\n"
                                "balancing: {algorithm: least_request, slowStart: 1m30s}\n"
                                "timeouts: {upstreamConnect: 500ms}\n"
                                "healthcheck: {type: tcp, failOpen: false}\n");
    ck_assert(c->frontends[0].tls);
    ck_assert_str_eq(c->frontends[0].address, "::1");
    ck_assert_str_eq(c->backends[0].host, "::1");
    ck_assert_uint_eq(c->backends[0].port, 8443);
    ck_assert(c->backends[0].https);
    ck_assert_str_eq(c->backends[0].id, "::1-8443");
    ck_assert_int_eq(c->backends[0].state, CONFIG_BACKEND_DRAINING);
    ck_assert_str_eq(c->backends[1].host, "example.com");
    ck_assert_uint_eq(c->backends[1].port, 80);
    ck_assert_str_eq(c->ssl.min_version, "TLSv1.3");
    ck_assert_uint_eq(c->ssl.n_certificates, 1);
    ck_assert_uint_eq(c->ssl.certificates[0].n_sni, 2);
    ck_assert_str_eq(c->ssl.certificates[0].sni[1], "b.example");
    ck_assert_int_eq(c->balancing.algorithm, CONFIG_BAL_LEAST_REQUEST);
    ck_assert_uint_eq(c->balancing.slow_start_ms, 90000);
    ck_assert_uint_eq(c->timeouts.upstream_connect_ms, 500);
    ck_assert_int_eq(c->healthcheck.type, CONFIG_HC_TCP);
    ck_assert(!c->healthcheck.fail_open);
    config_free(c);
}
END_TEST

START_TEST(resilience_keys)
{
    struct config *c = parse_ok(MINIMAL "circuitbreaker:\n  threshold: 7\n"
                                        "  ignore5xx: true\n  maxTimeout: 2m\n"
                                        "retries:\n  max: 4\n  budgetPercent: 50\n"
                                        "  budgetMin: 1\n  backoffBase: 10ms\n  backoffCap: 1s\n"
                                        "balancing: {weights: dynamic, slowStart: 0s}\n"
                                        "ratelimit:\n  enabled: true\n  rate: 10\n"
                                        "  perClient: false\n  global: true\n"
                                        "  ipv4Prefix: 24\n  ipv6Prefix: 64\n  maxKeys: 5\n"
                                        "  trustedProxies: [\"10.0.0.0/8\", \"::1\", "
                                        "\"192.0.2.7\", \"2001:db8::/32\"]\n"
                                        "  headersOnAllowed: false\n"
                                        "healthcheck: {expectedStatus: 204}\n");
    /* A present section without `enabled` is on. */
    ck_assert(c->circuitbreaker.enabled);
    ck_assert_uint_eq(c->circuitbreaker.threshold, 7);
    ck_assert(c->circuitbreaker.ignore_5xx);
    ck_assert_uint_eq(c->circuitbreaker.max_timeout_ms, 120000);
    ck_assert(c->retries.enabled);
    ck_assert_uint_eq(c->retries.max, 4);
    ck_assert_uint_eq(c->retries.budget_percent, 50);
    ck_assert_uint_eq(c->retries.budget_min, 1);
    ck_assert_uint_eq(c->retries.backoff_base_ms, 10);
    ck_assert_uint_eq(c->retries.backoff_cap_ms, 1000);
    ck_assert_int_eq(c->balancing.weights, CONFIG_WEIGHTS_DYNAMIC);
    ck_assert_uint_eq(c->balancing.slow_start_ms, 0);
    ck_assert(!c->ratelimit.per_client);
    ck_assert(c->ratelimit.global);
    ck_assert_uint_eq(c->ratelimit.ipv4_prefix, 24);
    ck_assert_uint_eq(c->ratelimit.ipv6_prefix, 64);
    ck_assert_uint_eq(c->ratelimit.n_trusted_proxies, 4);
    ck_assert_str_eq(c->ratelimit.trusted_proxies[1], "::1");
    ck_assert_str_eq(c->ratelimit.trusted_proxies[3], "2001:db8::/32");
    ck_assert(!c->ratelimit.headers_on_allowed);
    ck_assert_uint_eq(c->healthcheck.expected_status, 204);

    /* Every new key survives YAML and JSON round trips. */
    char *y = config_export_yaml(c, NULL, NULL);
    ck_assert_ptr_nonnull(strstr(y, "  ignore5xx: true\n"));
    ck_assert_ptr_nonnull(strstr(y, "retries:\n  enabled: true\n  max: 4\n"));
    ck_assert_ptr_nonnull(strstr(y, "  weights: \"dynamic\"\n"));
    ck_assert_ptr_nonnull(strstr(y, "  - \"10.0.0.0/8\"\n"));
    struct config *b = parse_ok(y);
    ck_assert(config_equal(c, b));
    ck_assert_uint_eq(b->ratelimit.n_trusted_proxies, 4);
    char *j = config_export_json(c, NULL);
    ck_assert_ptr_nonnull(strstr(j, "\"trustedProxies\":[\"10.0.0.0/8\",\"::1\""));
    struct config *d = NULL;
    struct lb_err err = {0};
    ck_assert_msg(config_parse_json(j, strlen(j), tmpdir, &d, &err) == LB_OK, "%s", err.msg);
    ck_assert(config_equal(c, d));
    /* A deep copy owns its proxies. */
    struct config *e = config_dup(c);
    ck_assert(config_equal(c, e));
    ck_assert_ptr_ne(e->ratelimit.trusted_proxies[0], c->ratelimit.trusted_proxies[0]);
    free(y);
    free(j);
    config_free(b);
    config_free(d);
    config_free(e);

    /* enabled: false turns a present section off; max 0 keeps retries on but none */
    struct config *off = parse_ok(MINIMAL "circuitbreaker: {enabled: false}\n"
                                          "retries: {enabled: false, max: 0}\n");
    ck_assert(!off->circuitbreaker.enabled);
    ck_assert(!off->retries.enabled);
    ck_assert_uint_eq(off->retries.max, 0);
    config_free(off);
    config_free(c);
}
END_TEST

START_TEST(diff_new_keys)
{
    struct config *a = parse_ok(MINIMAL);
    struct config *b = parse_ok(MINIMAL "retries: {max: 3}\n"
                                        "circuitbreaker: {ignore5xx: true}\n"
                                        "balancing: {weights: dynamic}\n"
                                        "ratelimit: {trustedProxies: [\"10.0.0.0/8\"], "
                                        "ipv4Prefix: 24}\n");
    struct config_diff *d = config_diff_new(a, b, NULL);
    ck_assert_ptr_nonnull(d);
    char *text = config_diff_text(d);
    ck_assert_ptr_nonnull(strstr(text, "retries.max: 2 -> 3\n"));
    ck_assert_ptr_nonnull(strstr(text, "circuitbreaker.enabled: false -> true\n"));
    ck_assert_ptr_nonnull(strstr(text, "circuitbreaker.ignore5xx: false -> true\n"));
    ck_assert_ptr_nonnull(strstr(text, "balancing.weights: static -> dynamic\n"));
    ck_assert_ptr_nonnull(strstr(text, "ratelimit.ipv4Prefix: 32 -> 24\n"));
    ck_assert_ptr_nonnull(strstr(text, "ratelimit.trustedProxies: [] -> [\"10.0.0.0/8\"]\n"));
    free(text);
    config_diff_free(d);
    config_free(a);
    config_free(b);
}
END_TEST

START_TEST(limits_and_ejection_defaults)
{
    struct config *c = parse_ok(MINIMAL);
    ck_assert_uint_eq(c->backends[0].max_connections, 0);
    ck_assert_uint_eq(c->backends[0].max_queue, 1024);
    ck_assert_uint_eq(c->timeouts.queue_ms, 5000);
    ck_assert_uint_eq(c->timeouts.tunnel_idle_ms, 3600000);
    ck_assert_uint_eq(c->limits.max_tunnels, 10000);
    ck_assert(c->ejection.enabled);
    ck_assert_uint_eq(c->ejection.probe_interval_ms, 1000);
    ck_assert_uint_eq(c->ejection.max_probe_interval_ms, 30000);
    /* Defaults are left out of the export: a config written before these
     * keys existed keeps its hash. */
    char *y = config_export_yaml(c, NULL, NULL);
    ck_assert_ptr_null(strstr(y, "maxQueue"));
    ck_assert_ptr_null(strstr(y, "maxConnections: 0"));
    ck_assert_ptr_null(strstr(y, "ejection"));
    ck_assert_ptr_null(strstr(y, "  queue:"));
    ck_assert_ptr_null(strstr(y, "tunnelIdle"));
    ck_assert_ptr_null(strstr(y, "maxTunnels"));
    free(y);
    config_free(c);
}
END_TEST

#define LIMITS_YAML                                                                                \
    "frontends:\n  - port: 8080\n"                                                                 \
    "backends:\n  - {url: \"http://a:1\", maxConnections: 50, maxQueue: 200}\n"                    \
    "  - url: \"http://b:1\"\n"                                                                    \
    "timeouts: {queue: 2s, tunnelIdle: 10m}\n"                                                     \
    "limits: {maxTunnels: 64}\n"                                                                   \
    "ejection:\n  enabled: false\n  probeInterval: 500ms\n  maxProbeInterval: 1m\n"

START_TEST(limits_and_ejection_round_trip)
{
    struct config *a = parse_ok(LIMITS_YAML);
    ck_assert_uint_eq(a->backends[0].max_connections, 50);
    ck_assert_uint_eq(a->backends[0].max_queue, 200);
    ck_assert_uint_eq(a->backends[1].max_connections, 0);
    ck_assert_uint_eq(a->backends[1].max_queue, 1024);
    ck_assert_uint_eq(a->timeouts.queue_ms, 2000);
    ck_assert_uint_eq(a->timeouts.tunnel_idle_ms, 600000);
    ck_assert_uint_eq(a->limits.max_tunnels, 64);
    ck_assert(!a->ejection.enabled);
    ck_assert_uint_eq(a->ejection.probe_interval_ms, 500);
    ck_assert_uint_eq(a->ejection.max_probe_interval_ms, 60000);
    char *y1 = config_export_yaml(a, NULL, NULL);
    ck_assert_ptr_nonnull(strstr(y1, "  maxConnections: 50\n  maxQueue: 200\n"));
    ck_assert_ptr_nonnull(strstr(y1, "  queue: \"2s\"\n  tunnelIdle: \"10m\"\n"));
    ck_assert_ptr_nonnull(strstr(y1, "  maxTunnels: 64\n"));
    ck_assert_ptr_nonnull(strstr(y1, "ejection:\n  enabled: false\n  probeInterval: \"500ms\"\n"
                                     "  maxProbeInterval: \"1m\"\n"));
    struct config *b = parse_ok(y1);
    ck_assert(config_equal(a, b));
    char *y2 = config_export_yaml(b, NULL, NULL);
    ck_assert_str_eq(y1, y2);
    char *j = config_export_json(a, NULL);
    struct config *c = NULL;
    struct lb_err err = {0};
    ck_assert_msg(config_parse_json(j, strlen(j), tmpdir, &c, &err) == LB_OK, "%s", err.msg);
    ck_assert(config_equal(a, c));
    struct config *d = config_dup(a);
    ck_assert(config_equal(a, d));
    ck_assert_int_eq(config_validate(d, tmpdir, &err), LB_OK);
    /* In-memory edits are validated like parsed ones. */
    d->backends[0].max_queue = 100001;
    ck_assert_int_eq(config_validate(d, tmpdir, &err), LB_EINVAL);
    ck_assert_ptr_nonnull(
        strstr(err.msg, "backends[0].maxQueue: 100001 is out of range (1..100000)"));
    /* 0 in memory (a backend built field by field) is the default. */
    d->backends[0].max_queue = 0;
    ck_assert_int_eq(config_validate(d, tmpdir, &err), LB_OK);
    char h1[65], h2[65];
    ck_assert_int_eq(config_hash(a, h1, NULL), LB_OK);
    ck_assert_int_eq(config_hash(b, h2, NULL), LB_OK);
    ck_assert_str_eq(h1, h2);
    free(y1);
    free(y2);
    free(j);
    config_free(a);
    config_free(b);
    config_free(c);
    config_free(d);
}
END_TEST

START_TEST(limits_and_ejection_diff)
{
    struct config *a = parse_ok(MINIMAL);
    struct config *b = parse_ok(LIMITS_YAML);
    struct config_diff *d = config_diff_new(a, b, NULL);
    ck_assert_ptr_nonnull(d);
    char *text = config_diff_text(d);
    ck_assert_ptr_nonnull(strstr(text, "backend a-1: maxConnections 0 -> 50\n"));
    ck_assert_ptr_nonnull(strstr(text, "backend a-1: maxQueue 1024 -> 200\n"));
    ck_assert_ptr_nonnull(strstr(text, "timeouts.queue: 5s -> 2s\n"));
    ck_assert_ptr_nonnull(strstr(text, "timeouts.tunnelIdle: 1h -> 10m\n"));
    ck_assert_ptr_nonnull(strstr(text, "limits.maxTunnels: 10000 -> 64\n"));
    ck_assert_ptr_nonnull(strstr(text, "ejection.enabled: true -> false\n"));
    ck_assert_ptr_nonnull(strstr(text, "ejection.probeInterval: 1s -> 500ms\n"));
    ck_assert_ptr_nonnull(strstr(text, "ejection.maxProbeInterval: 30s -> 1m\n"));
    ck_assert_ptr_null(strstr(text, "ejection added"));
    free(text);
    config_diff_free(d);
    /* And back: the defaults reappear as the new values. */
    d = config_diff_new(b, a, NULL);
    text = config_diff_text(d);
    ck_assert_ptr_nonnull(strstr(text, "backend a-1: maxConnections 50 -> 0\n"));
    ck_assert_ptr_nonnull(strstr(text, "ejection.enabled: false -> true\n"));
    ck_assert_ptr_null(strstr(text, "ejection removed"));
    char *json = config_diff_json(d);
    ck_assert_ptr_nonnull(strstr(json, "\"path\":\"backends[a-1].maxQueue\""));
    ck_assert_ptr_nonnull(strstr(json, "\"path\":\"ejection.maxProbeInterval\""));
    free(json);
    free(text);
    config_diff_free(d);
    config_free(a);
    config_free(b);
}
END_TEST

#define BE  "backends:\n  - url: \"http://a:1\"\n"
#define FE  "frontends:\n  - port: 8080\n"
#define FEB "frontends:\n  - port: 8080\nbackends:\n"
#define SSL "ssl:\n  certFile: cert.pem\n  keyFile: key.pem\n"
#define FEB_TLS_BACKENDS                                                                           \
    "backends:\n  - {url: \"https://api.local:8443\", caFile: ca.pem, sni: api.example}\n"
#define TLS_FE  "frontends:\n  - {port: 8443, tls: true}\n"
#define PIN_HEX "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
#define PIN_B64 "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
#define TLS_KEYS                                                                                   \
    "ssl:\n  certFile: cert.pem\n  keyFile: key.pem\n"                                             \
    "  ciphersuites: TLS_AES_128_GCM_SHA256\n  groups: X25519\n  ticketRotation: 10m\n"            \
    "  verify:\n    allowedCN: [client-a]\n    allowedSanDNS: [a.example, b.example]\n"            \
    "    allowedSanURI: [\"spiffe://lb/a\"]\n    spkiPins: [" PIN_HEX ", \"" PIN_B64 "\"]\n"

START_TEST(tls_keys_defaults)
{
    struct config *c = parse_ok(TLS_FE BE "ssl: {certFile: cert.pem, keyFile: key.pem}\n");
    ck_assert_str_eq(c->ssl.ciphersuites, "");
    ck_assert_str_eq(c->ssl.groups, "");
    ck_assert_uint_eq(c->ssl.ticket_rotation_ms, 3600000);
    ck_assert_uint_eq(c->ssl.n_allowed_cn, 0);
    ck_assert_uint_eq(c->ssl.n_allowed_san_dns, 0);
    ck_assert_uint_eq(c->ssl.n_allowed_san_uri, 0);
    ck_assert_uint_eq(c->ssl.n_spki_pins, 0);
    ck_assert_str_eq(c->backends[0].ca_file, "");
    ck_assert_str_eq(c->backends[0].sni, "");
    char *y = config_export_yaml(c, NULL, NULL);
    ck_assert_ptr_nonnull(strstr(y, "  ticketRotation: \"1h\"\n"));
    ck_assert_ptr_nonnull(strstr(y, "    spkiPins: []\n"));
    /* An unset caFile/sni is not exported: older configs keep their hash. */
    ck_assert_ptr_nonnull(strstr(y, "  state: \"active\"\nhealthcheck:\n"));
    ck_assert_ptr_null(strstr(y, "sni:"));
    free(y);
    config_free(c);
}
END_TEST

START_TEST(tls_keys_parsed)
{
    struct config *c = parse_ok(TLS_FE BE TLS_KEYS);
    ck_assert_str_eq(c->ssl.ciphersuites, "TLS_AES_128_GCM_SHA256");
    ck_assert_str_eq(c->ssl.groups, "X25519");
    ck_assert_uint_eq(c->ssl.ticket_rotation_ms, 600000);
    ck_assert_uint_eq(c->ssl.n_allowed_cn, 1);
    ck_assert_str_eq(c->ssl.allowed_cn[0], "client-a");
    ck_assert_uint_eq(c->ssl.n_allowed_san_dns, 2);
    ck_assert_str_eq(c->ssl.allowed_san_dns[1], "b.example");
    ck_assert_uint_eq(c->ssl.n_allowed_san_uri, 1);
    ck_assert_str_eq(c->ssl.allowed_san_uri[0], "spiffe://lb/a");
    ck_assert_uint_eq(c->ssl.n_spki_pins, 2);
    ck_assert_str_eq(c->ssl.spki_pins[0], PIN_HEX);
    ck_assert_str_eq(c->ssl.spki_pins[1], PIN_B64);
    config_free(c);
}
END_TEST

START_TEST(backend_tls_keys)
{
    struct config *c = parse_ok(FEB "  - {url: \"https://api.local:8443\", caFile: ca.pem, "
                                    "sni: api.example}\n"
                                    "  - url: \"https://10.0.0.1\"\n");
    ck_assert(c->backends[0].https);
    ck_assert_str_eq(c->backends[0].ca_file, "ca.pem");
    ck_assert_str_eq(c->backends[0].sni, "api.example");
    ck_assert_str_eq(c->backends[1].ca_file, "");
    ck_assert_str_eq(c->backends[1].sni, "");
    config_free(c);
}
END_TEST

/* Every new key survives YAML and JSON exports, config_dup and config_validate. */
START_TEST(tls_keys_round_trip)
{
    struct config *a = parse_ok(TLS_FE FEB_TLS_BACKENDS TLS_KEYS);
    char *y1 = config_export_yaml(a, NULL, NULL);
    ck_assert_ptr_nonnull(strstr(y1, "  ciphersuites: \"TLS_AES_128_GCM_SHA256\"\n"));
    ck_assert_ptr_nonnull(strstr(y1, "  ticketRotation: \"10m\"\n"));
    ck_assert_ptr_nonnull(
        strstr(y1, "  state: \"active\"\n  caFile: \"ca.pem\"\n  sni: \"api.example\"\n"));
    struct config *b = parse_ok(y1);
    ck_assert(config_equal(a, b));
    char *y2 = config_export_yaml(b, NULL, NULL);
    ck_assert_str_eq(y1, y2);
    char *j = config_export_json(a, NULL);
    ck_assert_ptr_nonnull(strstr(j, "\"verify\":{\"allowedCN\":[\"client-a\"]"));
    struct config *c = NULL;
    struct lb_err err = {0};
    ck_assert_msg(config_parse_json(j, strlen(j), tmpdir, &c, &err) == LB_OK, "%s", err.msg);
    ck_assert(config_equal(a, c));
    ck_assert_str_eq(c->ssl.spki_pins[1], PIN_B64);
    ck_assert_str_eq(c->backends[0].sni, "api.example");
    struct config *d = config_dup(a);
    ck_assert(config_equal(a, d));
    ck_assert_str_eq(d->ssl.allowed_san_dns[1], "b.example");
    ck_assert_int_eq(config_validate(d, tmpdir, &err), LB_OK);
    free(y1);
    free(y2);
    free(j);
    config_free(a);
    config_free(b);
    config_free(c);
    config_free(d);
}
END_TEST

START_TEST(tls_keys_diff)
{
    struct config *a = parse_ok(TLS_FE BE "ssl: {certFile: cert.pem, keyFile: key.pem}\n");
    struct config *b = parse_ok(TLS_FE "backends:\n  - {url: \"http://a:1\"}\n"
                                       "  - {id: s, url: \"https://s:1\", caFile: ca.pem}\n"
                                       "ssl: {certFile: cert.pem, keyFile: key.pem, "
                                       "ticketRotation: 2h, verify: {allowedCN: [x]}}\n");
    struct config *c = parse_ok(TLS_FE "backends:\n  - {url: \"http://a:1\"}\n"
                                       "  - {id: s, url: \"https://s:1\", sni: s.example}\n"
                                       "ssl: {certFile: cert.pem, keyFile: key.pem, "
                                       "ticketRotation: 2h, verify: {allowedCN: [x]}}\n");
    struct config_diff *d = config_diff_new(a, b, NULL);
    char *text = config_diff_text(d);
    ck_assert_msg(strstr(text, "ssl.ticketRotation: 1h -> 2h\n") != NULL, "%s", text);
    ck_assert_msg(strstr(text, "ssl.verify: {\"allowedCN\":[]") != NULL, "%s", text);
    free(text);
    config_diff_free(d);
    /* A key present on one side only reads as "" on the other. */
    d = config_diff_new(b, c, NULL);
    text = config_diff_text(d);
    ck_assert_str_eq(text, "backend s: caFile ca.pem -> \"\"\nbackend s: sni \"\" -> s.example\n");
    free(text);
    config_diff_free(d);
    config_free(a);
    config_free(b);
    config_free(c);
}
END_TEST

/* Real key pairs for the apply-time checks, made with the openssl CLI. */
static void make_pair(const char *cert, const char *key)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd),
             "cd %s && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
             "-keyout %s -out %s -days 30 -subj /CN=t.test >/dev/null 2>&1",
             tmpdir, key, cert);
    ck_assert_int_eq(system(cmd), 0);
}

static int parse_checked(const char *text, bool json, struct lb_err *err)
{
    struct config *c = NULL;
    int rc = config_parse_checked(text, strlen(text), json, "config.yaml", tmpdir,
                                  (int64_t)time(NULL) * 1000, &c, err);
    config_free(c);
    return rc;
}

START_TEST(checked_parse_names_the_line)
{
    make_pair("real.pem", "real.key");
    make_pair("other.pem", "other.key");
    struct lb_err err = {0};
    ck_assert_msg(parse_checked(TLS_FE BE "ssl:\n  certFile: real.pem\n  keyFile: real.key\n",
                                false, &err) == LB_OK,
                  "%s", err.msg);
    /* The key of another certificate: the error points at keyFile. */
    const char *bad = TLS_FE BE "ssl:\n  certFile: real.pem\n  keyFile: other.key\n";
    ck_assert_int_eq(parse_checked(bad, false, &err), LB_EINVAL);
    ck_assert_msg(strncmp(err.msg, "config.yaml:7:12: ssl.keyFile: ", 31) == 0, "%s", err.msg);
    ck_assert_msg(strstr(err.msg, "other.key does not match ssl.certFile") != NULL, "%s", err.msg);
    /* The plain parse (stored versions) does not read the contents. */
    config_free(parse_ok(bad));
    /* Not a certificate: the error points at certFile. */
    ck_assert_int_eq(
        parse_checked(TLS_FE BE "ssl:\n  certFile: cert.pem\n  keyFile: real.key\n", false, &err),
        LB_EINVAL);
    ck_assert_msg(strncmp(err.msg, "config.yaml:6:13: ssl.certFile: ", 32) == 0, "%s", err.msg);
    /* SNI certificates are checked the same way. */
    ck_assert_int_eq(parse_checked(TLS_FE BE "ssl:\n  certificates:\n"
                                             "    - certFile: other.pem\n"
                                             "      keyFile: real.key\n",
                                   false, &err),
                     LB_EINVAL);
    ck_assert_msg(strncmp(err.msg, "config.yaml:8:16: ssl.certificates[0].keyFile: ", 47) == 0,
                  "%s", err.msg);
    /* A caFile that is no CA bundle. */
    ck_assert_int_eq(parse_checked(TLS_FE BE "ssl:\n  certFile: real.pem\n  keyFile: real.key\n"
                                             "  caFile: key.pem\n",
                                   false, &err),
                     LB_EINVAL);
    ck_assert_msg(strncmp(err.msg, "config.yaml:8:11: ssl.caFile: ", 30) == 0, "%s", err.msg);
    /* A backend's caFile too: a readable file that holds no certificate. */
    ck_assert_int_eq(parse_checked("frontends:\n  - port: 8080\nbackends:\n"
                                   "  - {url: \"https://b.test\", caFile: real.key}\n",
                                   false, &err),
                     LB_EINVAL);
    ck_assert_msg(strncmp(err.msg, "config.yaml:4:37: backends[0].caFile: ", 38) == 0, "%s",
                  err.msg);
    ck_assert_int_eq(parse_checked("frontends:\n  - port: 8080\nbackends:\n"
                                   "  - {url: \"https://b.test\", caFile: real.pem}\n",
                                   false, &err),
                     LB_OK);
    /* Files that cannot be read, named at their line; a stored version with
     * them still parses, so that a file gone missing never stops a start. */
    const char *missing[][2] = {
        {TLS_FE BE "ssl:\n  certFile: missing.pem\n  keyFile: real.key\n",
         "config.yaml:6:13: ssl.certFile: cannot read"},
        {TLS_FE BE "ssl:\n  certFile: real.pem\n  keyFile: real.key\n  caFile: nope.pem\n",
         "config.yaml:8:11: ssl.caFile: cannot read"},
        {"frontends:\n  - port: 8080\nbackends:\n  - url: \"https://a:1\"\n    caFile: nope.pem\n",
         "config.yaml:5:13: backends[0].caFile: cannot read"},
    };
    for (size_t i = 0; i < sizeof(missing) / sizeof(missing[0]); i++) {
        ck_assert_int_eq(parse_checked(missing[i][0], false, &err), LB_EINVAL);
        ck_assert_msg(strncmp(err.msg, missing[i][1], strlen(missing[i][1])) == 0, "%s", err.msg);
        config_free(parse_ok(missing[i][0]));
    }
    /* JSON names the path. */
    const char *json = "{\"frontends\":[{\"port\":8443,\"tls\":true}],"
                       "\"backends\":[{\"url\":\"http://a:1\"}],"
                       "\"ssl\":{\"certFile\":\"real.pem\",\"keyFile\":\"other.key\"}}";
    ck_assert_int_eq(parse_checked(json, true, &err), LB_EINVAL);
    ck_assert_msg(strncmp(err.msg, "ssl.keyFile: ", 13) == 0, "%s", err.msg);
}
END_TEST

/* The duplicate checks and the diff index thousands of backends: a
 * duplicate far down the list is still found, and the diff pairs items by id
 * whatever their order. */
START_TEST(many_backends)
{
    enum {
        N = 3000
    };
    size_t cap = 64 + (size_t)N * 64;
    char *y = malloc(cap), *z = malloc(cap);
    size_t off = (size_t)snprintf(y, cap, "frontends:\n  - port: 8080\nbackends:\n");
    size_t zoff = (size_t)snprintf(z, cap, "frontends:\n  - port: 8080\nbackends:\n");
    for (int i = 0; i < N; i++) {
        off +=
            (size_t)snprintf(y + off, cap - off, "  - {id: b%d, url: \"http://10.0.%d.%d:80\"}\n",
                             i, i / 250, i % 250);
        /* reversed order, one weight changed */
        int k = N - 1 - i;
        zoff += (size_t)snprintf(z + zoff, cap - zoff,
                                 "  - {id: b%d, url: \"http://10.0.%d.%d:80\", weight: %d}\n", k,
                                 k / 250, k % 250, k == 1234 ? 9 : 1);
    }
    struct config *a = parse_ok(y), *b = parse_ok(z);
    struct config_diff *d = config_diff_new(a, b, NULL);
    ck_assert_uint_eq(d->n, 1);
    ck_assert_str_eq(d->changes[0].path, "backends[b1234].weight");
    config_diff_free(d);
    config_free(a);
    config_free(b);

    /* the same server at the very end */
    snprintf(y + off, cap - off, "  - {id: last, url: \"http://10.0.0.7:80\"}\n");
    struct config *c = NULL;
    struct lb_err err = {0};
    ck_assert_int_eq(config_parse_yaml(y, strlen(y), "config.yaml", tmpdir, &c, &err), LB_EINVAL);
    ck_assert_msg(strstr(err.msg, "is the same server as backends[7]") != NULL, "%s", err.msg);
    /* the same id at the very end */
    snprintf(y + off, cap - off, "  - {id: b2999, url: \"http://10.1.0.7:80\"}\n");
    ck_assert_int_eq(config_parse_yaml(y, strlen(y), "config.yaml", tmpdir, &c, &err), LB_EINVAL);
    ck_assert_msg(strstr(err.msg, "id \"b2999\" is already used by backends[2999]") != NULL, "%s",
                  err.msg);
    free(y);
    free(z);
}
END_TEST

struct bad {
    const char *yaml;
    const char *where; /* "line:col" */
    const char *what;  /* message fragment */
};

static const struct bad bad_cases[] = {
    {"frontends: [\n" BE, "3:3", "YAML syntax error"},
    {"frontends:\n  - port: 8080\n   bad: x\n" BE, "3:4", "YAML syntax error"},
    {FEB "  - url: \"http://a:1\"\n    wieght: 5\n", "5:5",
     "backends[0]: unknown key \"wieght\" (did you mean \"weight\"?)"},
    {FE BE "metric:\n  port: 1\n", "5:1", "unknown key \"metric\" (did you mean \"metrics\"?)"},
    {FE BE "zzzzzz: 1\n", "5:1", "unknown key \"zzzzzz\""},
    {FEB "  - url: \"http://a:1\"\n    weight: 1001\n", "5:13",
     "backends[0].weight: 1001 is out of range (1..1000)"},
    {FEB "  - url: \"http://a:1\"\n  - url: \"http://b:1\"\n    weight: 0\n", "6:13",
     "backends[1].weight: 0 is out of range (1..1000)"},
    {FEB "  - url: \"http://a:1\"\n    weight: \"5\"\n", "5:13",
     "backends[0].weight: expected a whole number, got a string"},
    {FEB "  - url: \"http://a:1\"\n    weight: [1]\n", "5:13",
     "expected a whole number, got a list"},
    {FEB "  - url: \"ftp://a:1\"\n", "4:10", "backends[0].url: scheme \"ftp\" is not supported"},
    {FEB "  - url: \"http://:80\"\n", "4:10", "has no host"},
    {FEB "  - url: \"http://a:70000\"\n", "4:10", "must be a number in 1..65535"},
    {FEB "  - url: \"http://a:1/api\"\n", "4:10", "cannot have a path"},
    {FEB "  - url: backend\n", "4:10", "is not a URL"},
    {FEB "  - weight: 2\n", "4:5", "backends[0]: url is required"},
    {"frontends:\n  - port: 8080\n  - port: 8080\n" BE, "3:11",
     "frontends[1].port: port 8080 on 0.0.0.0 is already used by frontends[0]"},
    {"frontends:\n  - port: 80\n  - {port: 81, name: http-80}\n" BE, "3:22",
     "name \"http-80\" is already used"},
    {"frontends:\n  - port: 0\n" BE, "2:11", "0 is out of range (1..65535)"},
    {"frontends:\n  - port: 80\n    address: localhost\n" BE, "3:14",
     "\"localhost\" is not an IPv4 or IPv6 address"},
    {FEB "  - url: \"http://a:1\"\n    id: x\n  - url: \"http://b:1\"\n    id: x\n", "7:9",
     "backends[1].id: id \"x\" is already used by backends[0]"},
    {FEB "  - url: \"http://a:1\"\n  - url: \"http://A:1/\"\n", "5:10",
     "is the same server as backends[0]"},
    {FE BE "healthcheck:\n  interval: 10\n", "6:13", "10 has no unit; add one"},
    {FE BE "healthcheck:\n  interval: \"10x\"\n", "6:13", "unknown or missing unit"},
    {FE BE "healthcheck:\n  timeout: 1m\n", "6:12", "1m must not exceed the interval 10s"},
    {FE BE "ssl:\n  certFile: cert.pem\n  keyFile: key.pem\n  clientAuth: 7\n", "8:15",
     "ssl.clientAuth: 7 is out of range (0..4)"},
    {"frontends:\n  - port: 443\n    tls: true\n" BE, "3:10",
     "frontends[0].tls: a TLS frontend needs the ssl section"},
    {FE BE "ssl:\n  certFile: cert.pem\n", "6:3", "keyFile is required with certFile"},
    {FE BE "balancing:\n  algorithm: random\n", "6:14",
     "unknown algorithm \"random\" (expected round_robin, weighted_round_robin or least_request)"},
    {FE BE "ratelimit:\n  algorithm: leaky\n", "6:14", "unknown algorithm \"leaky\""},
    {FE BE "logging:\n  level: verbose\n", "6:10", "unknown level \"verbose\""},
    {FE BE "logging:\n  format: text\n", "6:11", "unknown format \"text\" (expected json)"},
    {FE BE "ratelimit:\n  enabled: true\n  rate: 0\n", "7:9",
     "ratelimit.rate: must be at least 1 when the rate limit is enabled"},
    {FE BE "ratelimit:\n  enabled: yes\n", "6:12", "expected true or false"},
    {"frontends: []\n" BE, "1:12", "frontends: the list is empty"},
    {FE "backends: []\n", "3:11", "backends: the list is empty"},
    {FE, "1:1", "backends is required"},
    {"- 1\n", "1:1", "expected a mapping, got a list"},
    {FE BE "frontends:\n  - port: 1\n", "5:1", "key \"frontends\" appears twice"},
    {FE BE "healthcheck:\n  expectedStatus: 42\n", "6:19",
     "healthcheck.expectedStatus: 42 is out of range (0 for any 2xx or 3xx, else 100..599)"},
    {FE BE "healthcheck:\n  expectedStatus: 600\n", "6:19", "600 is out of range (0..599)"},
    {FE BE "circuitbreaker:\n  ignore5xx: maybe\n", "6:14",
     "circuitbreaker.ignore5xx: expected true or false"},
    {FE BE "retries:\n  max: 6\n", "6:8", "retries.max: 6 is out of range (0..5)"},
    {FE BE "retries:\n  budgetPercent: 0\n", "6:18", "retries.budgetPercent: 0 is out of range"},
    {FE BE "retries:\n  budgetMin: 0\n", "6:14", "retries.budgetMin: 0 is out of range"},
    {FE BE "retries:\n  backoffBase: 0s\n", "6:16", "retries.backoffBase: 0s is too short"},
    {FE BE "retries:\n  backoffBase: 1s\n  backoffCap: 100ms\n", "7:15",
     "retries.backoffCap: 100ms is below backoffBase 1s"},
    {FE BE "retries:\n  maks: 1\n", "6:3", "unknown key \"maks\" (did you mean \"max\"?)"},
    {FE BE "balancing:\n  weights: adaptive\n", "6:12",
     "unknown weights \"adaptive\" (expected static or dynamic)"},
    {FE BE "balancing:\n  slowStart: 2h\n", "6:14", "balancing.slowStart: 2h is over 1h"},
    {FE BE "ratelimit:\n  ipv4Prefix: 33\n", "6:15", "ratelimit.ipv4Prefix: 33 is out of range"},
    {FE BE "ratelimit:\n  ipv6Prefix: 0\n", "6:15", "ratelimit.ipv6Prefix: 0 is out of range"},
    {FE BE "ratelimit:\n  trustedProxies:\n    - \"10.0.0.0/8\"\n    - \"10.0.0.0/33\"\n", "8:7",
     "ratelimit.trustedProxies[1]: \"10.0.0.0/33\" is not a CIDR"},
    {FE BE "ratelimit:\n  trustedProxies: [\"::1/129\"]\n", "6:20", "is not a CIDR"},
    {FE BE "ratelimit:\n  trustedProxies: [\"proxy.local\"]\n", "6:20", "is not a CIDR"},
    {FE BE "ratelimit:\n  trustedProxies: [\"10.0.0.0/\"]\n", "6:20", "is not a CIDR"},
    {FE BE "ratelimit:\n  trustedProxies: [[1]]\n", "6:20", "expected a CIDR"},
    {FE BE "ratelimit:\n  trustedProxies: \"10.0.0.0/8\"\n", "6:19",
     "ratelimit.trustedProxies: expected a list"},
    {FE BE "ratelimit:\n  headersOnAllowed: 1\n", "6:21", "expected true or false"},
    {FE BE SSL "  verify:\n    spkiPins: [\"abcd\"]\n", "9:16", "ssl.verify.spkiPins[0]: "},
    {FE BE SSL "  verify:\n    spkiPins:\n      - " PIN_HEX "\n      - " PIN_HEX "0\n", "11:9",
     "ssl.verify.spkiPins[1]: "},
    {FE BE SSL "  verify:\n    allowedCn: [x]\n", "9:5",
     "ssl.verify: unknown key \"allowedCn\" (did you mean \"allowedCN\"?)"},
    {FE BE SSL "  verify:\n    allowedSanDNS: [\"\"]\n", "9:21",
     "ssl.verify.allowedSanDNS[0]: expected a non-empty string"},
    {FE BE SSL "  verify:\n    allowedSanURI: x\n", "9:20",
     "ssl.verify.allowedSanURI: expected a list"},
    {FE BE SSL "  ticketRotation: 500ms\n", "8:19",
     "ssl.ticketRotation: 500ms is too short (at least 1s)"},
    {FE BE SSL "  ticketRotation: 10\n", "8:19", "ssl.ticketRotation: 10 has no unit"},
    {FE BE "timeouts:\n  tunnelIdle: 500ms\n", "6:15",
     "timeouts.tunnelIdle: 500ms is too short (at least 1s)"},
    {FE BE "timeouts:\n  tunnelIdle: 25h\n", "6:15",
     "timeouts.tunnelIdle: 25h is too long (at most 24h)"},
    {"frontends:\n  - port: 8080\n    proxyProtocolFrom: [\"10.0.0.0/8\", \"10.1/8\"]\n" BE, "3:39",
     "frontends[0].proxyProtocolFrom[1]: \"10.1/8\" is not a CIDR"},
    {"frontends:\n  - {port: 8443, tls: true, http2Cleartext: true}\n" BE SSL, "2:45",
     "frontends[0].http2Cleartext: is for plain frontends; a TLS frontend offers HTTP/2 by ALPN "
     "(http2)"},
    {"frontends:\n  - {port: 8080, http2MaxConcurrentStreams: 0}\n" BE, "2:45",
     "frontends[0].http2MaxConcurrentStreams: 0 is out of range (1..1000)"},
    {"frontends:\n  - {port: 8080, http2InitialWindowSize: 100}\n" BE, "2:42",
     "frontends[0].http2InitialWindowSize: 100 is out of range (16384..16777216)"},
    {FEB "  - {url: \"http://a:1\", sendProxy: v3}\n", "4:36",
     "unknown sendProxy \"v3\" (expected off, v1 or v2)"},
    {FE BE "limits:\n  maxTunnels: 0\n", "6:15",
     "limits.maxTunnels: 0 is out of range (1..1000000)"},
    {FEB "  - url: \"http://a:1\"\n    caFile: ca.pem\n", "5:13",
     "backends[0].caFile: caFile applies only to https:// backends"},
    {FEB "  - url: \"http://a:1\"\n    sni: a.example\n", "5:10",
     "backends[0].sni: sni applies only to https:// backends"},
    {FEB "  - url: \"https://a:1\"\n    sni: 10.0.0.1\n", "5:10",
     "backends[0].sni: \"10.0.0.1\" is not a server name"},
    {FEB "  - url: \"http://a:1\"\n    maxConnections: 1000001\n", "5:21",
     "backends[0].maxConnections: 1000001 is out of range (0..1000000)"},
    {FEB "  - url: \"http://a:1\"\n    maxConnections: -1\n", "5:21",
     "backends[0].maxConnections: -1 is out of range (0..1000000)"},
    {FEB "  - url: \"http://a:1\"\n    maxQueue: 0\n", "5:15",
     "backends[0].maxQueue: 0 is out of range (1..100000)"},
    {FEB "  - url: \"http://a:1\"\n    maxQeue: 5\n", "5:5",
     "backends[0]: unknown key \"maxQeue\" (did you mean \"maxQueue\"?)"},
    {FE BE "timeouts:\n  queue: 0s\n", "6:10", "timeouts.queue: 0s is too short (at least 1ms)"},
    {FE BE "timeouts:\n  queue: 11m\n", "6:10", "timeouts.queue: 11m is too long (at most 10m)"},
    {FE BE "ejection:\n  enabled: sometimes\n", "6:12", "ejection.enabled: expected true or false"},
    {FE BE "ejection:\n  probeInterval: 5ms\n", "6:18",
     "ejection.probeInterval: 5ms is too short (at least 10ms)"},
    {FE BE "ejection:\n  probeInterval: 5s\n  maxProbeInterval: 2s\n", "7:21",
     "ejection.maxProbeInterval: 2s is below probeInterval 5s"},
    {FE BE "ejection:\n  probeInterval: 1m\n", "6:3",
     "ejection.maxProbeInterval: 30s is below probeInterval 1m"},
    {FE BE "ejection:\n  maxProbeInterval: 2h\n", "6:21",
     "ejection.maxProbeInterval: 2h is too long (at most 1h)"},
    {FE BE "ejection:\n  probeIntervall: 1s\n", "6:3",
     "ejection: unknown key \"probeIntervall\" (did you mean \"probeInterval\"?)"},
    {FE BE "ratelimit:\n  enabled: true\n", "6:3",
     "ratelimit.rate: must be at least 1 when the rate limit is enabled"},
};

START_TEST(bad_config)
{
    const struct bad *b = &bad_cases[_i];
    struct config *c = NULL;
    struct lb_err err = {0};
    int rc = config_parse_yaml(b->yaml, strlen(b->yaml), "config.yaml", tmpdir, &c, &err);
    ck_assert_msg(rc == LB_EINVAL, "case %d accepted", _i);
    ck_assert_ptr_null(c);
    char prefix[64];
    snprintf(prefix, sizeof(prefix), "config.yaml:%s: ", b->where);
    ck_assert_msg(strncmp(err.msg, prefix, strlen(prefix)) == 0, "case %d: want %s, got \"%s\"", _i,
                  prefix, err.msg);
    ck_assert_msg(strstr(err.msg, b->what) != NULL, "case %d: want \"%s\" in \"%s\"", _i, b->what,
                  err.msg);
}
END_TEST

START_TEST(same_port_other_address_ok)
{
    struct config *c = parse_ok("frontends:\n  - {port: 80, address: 127.0.0.1}\n"
                                "  - {port: 80, address: 127.0.0.2, name: b}\n" BE);
    ck_assert_uint_eq(c->n_frontends, 2);
    config_free(c);
}
END_TEST

START_TEST(durations)
{
    static const struct {
        const char *text;
        uint32_t ms;
    } ok[] = {{"10s", 10000},   {"500ms", 500}, {"1m", 60000},         {"1h", 3600000},
              {"1m30s", 90000}, {"0s", 0},      {"1h2m3s4ms", 3723004}};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        uint32_t ms = 1;
        struct lb_err err = {0};
        ck_assert_msg(config_duration_parse(ok[i].text, &ms, &err) == LB_OK, "%s: %s", ok[i].text,
                      err.msg);
        ck_assert_uint_eq(ms, ok[i].ms);
        char buf[32];
        uint32_t back;
        ck_assert_int_eq(
            config_duration_parse(config_duration_format(ms, buf, sizeof(buf)), &back, NULL),
            LB_OK);
        ck_assert_uint_eq(back, ms);
    }
    static const char *const bad[] = {"",    "10",   "s",     "10x",          "1.5s",
                                      "-1s", "10 s", "1200h", "99999999999ms"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint32_t ms;
        ck_assert_msg(config_duration_parse(bad[i], &ms, NULL) == LB_EINVAL, "%s accepted", bad[i]);
    }
    struct lb_err err = {0};
    uint32_t ms;
    config_duration_parse("30", &ms, &err);
    ck_assert_str_eq(err.msg, "30 has no unit; add one, as in \"30s\" or \"30ms\"");
    char buf[32];
    ck_assert_str_eq(config_duration_format(90000, buf, sizeof(buf)), "1m30s");
    ck_assert_str_eq(config_duration_format(1500, buf, sizeof(buf)), "1s500ms");
    ck_assert_str_eq(config_duration_format(0, buf, sizeof(buf)), "0s");
    ck_assert_str_eq(config_duration_format(7200000, buf, sizeof(buf)), "2h");
}
END_TEST

START_TEST(yaml_round_trip)
{
    struct config *a = seed();
    size_t len1, len2;
    char *y1 = config_export_yaml(a, &len1, NULL);
    ck_assert_ptr_nonnull(y1);
    ck_assert_uint_eq(strlen(y1), len1);
    struct config *b = parse_ok(y1);
    ck_assert(config_equal(a, b));
    char *y2 = config_export_yaml(b, &len2, NULL);
    ck_assert_str_eq(y1, y2);
    /* Canonical form: every key with defaults, strings quoted. */
    ck_assert_ptr_nonnull(strstr(y1, "- name: \"http-8080\"\n"));
    ck_assert_ptr_nonnull(strstr(y1, "- id: \"backend1-9001\"\n"));
    ck_assert_ptr_nonnull(strstr(y1, "  interval: \"10s\"\n"));
    ck_assert_ptr_nonnull(strstr(y1, "  weight: 5\n"));
    ck_assert_ptr_nonnull(strstr(y1, "  algorithm: \"weighted_round_robin\"\n"));
    ck_assert_ptr_nonnull(strstr(y1, "  maxTimeout: \"5m\"\n"));
    ck_assert_ptr_nonnull(strstr(y1, "  certificates: []\n"));
    free(y1);
    free(y2);
    config_free(a);
    config_free(b);
}
END_TEST

START_TEST(yaml_round_trip_everything)
{
    struct config *a = parse_ok("frontends:\n  - {name: web, port: 443, tls: true}\n"
                                "backends:\n  - {url: \"https://[::1]:8443\", state: disabled}\n"
                                "ssl:\n  certificates:\n"
                                "    - {certFile: b.pem, keyFile: key.pem, sni: [x.example]}\n"
                                "healthcheck: {host: \"svc \\\"q\\\"\", path: \"/h?x=1: 2\"}\n"
                                "balancing: {algorithm: round_robin, slowStart: 1s500ms}\n");
    char *y1 = config_export_yaml(a, NULL, NULL);
    struct config *b = parse_ok(y1);
    ck_assert(config_equal(a, b));
    ck_assert_str_eq(b->healthcheck.host, "svc \"q\"");
    ck_assert_str_eq(b->healthcheck.path, "/h?x=1: 2");
    ck_assert_str_eq(b->ssl.certificates[0].sni[0], "x.example");
    ck_assert_uint_eq(b->balancing.slow_start_ms, 1500);
    char *y2 = config_export_yaml(b, NULL, NULL);
    ck_assert_str_eq(y1, y2);
    free(y1);
    free(y2);
    config_free(a);
    config_free(b);
}
END_TEST

START_TEST(proxy_protocol_keys)
{
    struct config *d = parse_ok(MINIMAL);
    ck_assert_uint_eq(d->frontends[0].n_proxy_from, 0);
    ck_assert_int_eq(d->backends[0].send_proxy, CONFIG_SEND_PROXY_OFF);
    char *y0 = config_export_yaml(d, NULL, NULL);
    ck_assert_ptr_null(strstr(y0, "proxyProtocolFrom"));
    ck_assert_ptr_null(strstr(y0, "sendProxy"));
    free(y0);
    struct config *a =
        parse_ok("frontends:\n  - port: 8080\n    proxyProtocolFrom: [\"10.0.0.0/8\", \"::1\"]\n"
                 "backends:\n  - {url: \"http://a:1\", sendProxy: v2}\n"
                 "  - {url: \"http://b:1\", sendProxy: v1}\n");
    ck_assert_uint_eq(a->frontends[0].n_proxy_from, 2);
    ck_assert_str_eq(a->frontends[0].proxy_from[1], "::1");
    ck_assert_int_eq(a->backends[0].send_proxy, CONFIG_SEND_PROXY_V2);
    ck_assert_int_eq(a->backends[1].send_proxy, CONFIG_SEND_PROXY_V1);
    char *y1 = config_export_yaml(a, NULL, NULL);
    ck_assert_msg(strstr(y1, "sendProxy: \"v2\"") != NULL, "%s", y1);
    struct config *b = parse_ok(y1);
    ck_assert(config_equal(a, b));
    struct config_diff *df = config_diff_new(d, a, NULL);
    char *text = config_diff_text(df);
    ck_assert_msg(strstr(text, "backend a-1: sendProxy off -> v2\n") != NULL &&
                      strstr(text, "frontend http-8080: proxyProtocolFrom [] -> "
                                   "[\"10.0.0.0/8\",\"::1\"]\n") != NULL,
                  "%s", text);
    free(text);
    config_diff_free(df);
    free(y1);
    config_free(a);
    config_free(b);
    config_free(d);
}
END_TEST

START_TEST(http2_keys)
{
    struct config *d = parse_ok(MINIMAL);
    ck_assert(d->frontends[0].http2);
    ck_assert(!d->frontends[0].http2_cleartext);
    ck_assert_uint_eq(d->frontends[0].http2_max_streams, 100);
    ck_assert_uint_eq(d->frontends[0].http2_window, 65535);
    ck_assert_uint_eq(d->frontends[0].http2_max_header_list, 32768);
    char *y0 = config_export_yaml(d, NULL, NULL);
    ck_assert_ptr_null(strstr(y0, "http2")); /* defaults leave old hashes alone */
    free(y0);
    struct config *a = parse_ok("frontends:\n  - port: 8080\n    http2Cleartext: true\n"
                                "    http2MaxConcurrentStreams: 7\n" BE);
    ck_assert(a->frontends[0].http2_cleartext);
    ck_assert_uint_eq(a->frontends[0].http2_max_streams, 7);
    char *y1 = config_export_yaml(a, NULL, NULL);
    struct config *b = parse_ok(y1);
    ck_assert(config_equal(a, b));
    free(y1);
    config_free(a);
    config_free(b);
    config_free(d);
}
END_TEST

START_TEST(json_round_trip)
{
    struct config *a = seed();
    char *j = config_export_json(a, NULL);
    ck_assert_ptr_nonnull(j);
    ck_assert_ptr_nonnull(strstr(j, "\"weight\":5"));
    ck_assert_ptr_nonnull(strstr(j, "\"interval\":\"10s\""));
    struct config *b = NULL;
    struct lb_err err = {0};
    ck_assert_msg(config_parse_json(j, strlen(j), tmpdir, &b, &err) == LB_OK, "%s", err.msg);
    ck_assert(config_equal(a, b));
    free(j);
    config_free(a);
    config_free(b);
}
END_TEST

START_TEST(json_errors)
{
    static const struct {
        const char *json;
        const char *msg;
    } cases[] = {
        {"{\"frontends\":[{\"port\":8080}],\"backends\":[{\"url\":\"http://"
         "a:1\",\"weight\":1001}]}",
         "backends[0].weight: 1001 is out of range (1..1000)"},
        {"{\"frontends\":[{\"port\":\"8080\"}],\"backends\":[{\"url\":\"http://a:1\"}]}",
         "frontends[0].port: expected a whole number, got a string"},
        {"{\"frontends\":[{\"port\":8080}],\"backends\":[{\"url\":\"http://a:1\"}],"
         "\"healthcheck\":{\"interval\":10}}",
         "healthcheck.interval: 10 has no unit"},
        {"{\"frontends\":[{\"port\":8080}],\"backends\":[{\"url\":\"http://a:1\"}],"
         "\"logging\":{\"levle\":\"info\"}}",
         "logging: unknown key \"levle\" (did you mean \"level\"?)"},
        {"{\"frontends\":[{\"port\":8080}],\"backends\":[{\"url\":\"http://a:1\",\"id\":5}]}",
         "backends[0].id: expected a string, got a number"},
        {"{\"frontends\":[{\"port\":8080,\"tls\":\"yes\"}],\"backends\":[{\"url\":\"http://"
         "a:1\"}]}",
         "frontends[0].tls: expected true or false, got a string"},
        {"{\"frontends\": [", "JSON syntax error at 1:"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct config *c = NULL;
        struct lb_err err = {0};
        ck_assert_int_eq(config_parse_json(cases[i].json, strlen(cases[i].json), tmpdir, &c, &err),
                         LB_EINVAL);
        ck_assert_msg(strncmp(err.msg, cases[i].msg, strlen(cases[i].msg)) == 0,
                      "case %zu: want \"%s\", got \"%s\"", i, cases[i].msg, err.msg);
    }
}
END_TEST

START_TEST(validate_in_memory)
{
    struct config *a = seed();
    struct lb_err err = {0};
    ck_assert_int_eq(config_validate(a, tmpdir, &err), LB_OK);
    struct config *b = config_dup(a);
    ck_assert(config_equal(a, b));
    b->backends[1].weight = 0;
    ck_assert(!config_equal(a, b));
    ck_assert_int_eq(config_validate(b, tmpdir, &err), LB_EINVAL);
    ck_assert_str_eq(err.msg, "backends[1].weight: 0 is out of range (1..1000)");
    config_free(a);
    config_free(b);
}
END_TEST

START_TEST(hash_is_content)
{
    struct config *a = seed();
    struct config *b = config_dup(a);
    char ha[65], hb[65];
    ck_assert_int_eq(config_hash(a, ha, NULL), LB_OK);
    ck_assert_int_eq(config_hash(b, hb, NULL), LB_OK);
    ck_assert_uint_eq(strlen(ha), 64);
    ck_assert_str_eq(ha, hb);
    b->ratelimit.rate = 200;
    ck_assert_int_eq(config_hash(b, hb, NULL), LB_OK);
    ck_assert_str_ne(ha, hb);
    config_free(a);
    config_free(b);
}
END_TEST

START_TEST(diff_cases)
{
    struct config *a = parse_ok("frontends:\n  - port: 8080\n  - {port: 8081, name: web}\n"
                                "backends:\n"
                                "  - {id: api-1, url: \"http://10.0.0.1:80\", weight: 5}\n"
                                "  - {id: api-2, url: \"http://10.0.0.2:80\"}\n"
                                "ratelimit: {rate: 100}\n"
                                "ssl: {certFile: cert.pem, keyFile: key.pem}\n");
    struct config *b = parse_ok("frontends:\n  - {port: 8082, name: web}\n"
                                "backends:\n"
                                "  - {id: api-1, url: \"http://10.0.0.1:80\", weight: 3}\n"
                                "  - {id: api-2, url: \"http://10.0.0.2:80\"}\n"
                                "  - {id: b3, url: \"http://10.0.0.3:80\"}\n"
                                "ratelimit: {rate: 200}\n"
                                "ssl: {certFile: b.pem, keyFile: key.pem}\n");
    struct config_diff *d = config_diff_new(a, b, NULL);
    ck_assert_ptr_nonnull(d);
    char *text = config_diff_text(d);
    ck_assert_str_eq(text, "frontend http-8080 removed\n"
                           "frontend web: port 8081 -> 8082\n"
                           "backend api-1: weight 5 -> 3\n"
                           "backend b3 added (http://10.0.0.3:80, weight 1)\n"
                           "ssl.certFile: cert.pem -> b.pem\n"
                           "ratelimit.rate: 100 -> 200\n");
    ck_assert_uint_eq(d->n, 6);
    ck_assert_int_eq(d->changes[2].kind, CONFIG_CHANGE_CHANGED);
    ck_assert_str_eq(d->changes[2].path, "backends[api-1].weight");
    ck_assert_str_eq(d->changes[2].old_value, "5");
    ck_assert_str_eq(d->changes[2].new_value, "3");
    ck_assert_int_eq(d->changes[3].kind, CONFIG_CHANGE_ADDED);
    ck_assert_int_eq(d->changes[0].kind, CONFIG_CHANGE_REMOVED);
    char *json = config_diff_json(d);
    ck_assert_ptr_nonnull(strstr(json, "{\"kind\":\"changed\",\"path\":\"ratelimit.rate\","
                                       "\"subject\":null,\"field\":\"ratelimit.rate\","
                                       "\"old\":\"100\",\"new\":\"200\"}"));
    ck_assert_ptr_nonnull(strstr(json, "{\"kind\":\"added\",\"path\":\"backends[b3]\""));
    free(json);
    free(text);
    config_diff_free(d);

    /* Equal configs: empty diff; removing the ssl section is one change. */
    d = config_diff_new(a, a, NULL);
    ck_assert_uint_eq(d->n, 0);
    text = config_diff_text(d);
    ck_assert_str_eq(text, "");
    free(text);
    config_diff_free(d);
    b->ssl.present = false;
    d = config_diff_new(a, b, NULL);
    text = config_diff_text(d);
    ck_assert_ptr_nonnull(strstr(text, "\nssl removed\n"));
    free(text);
    config_diff_free(d);
    config_free(a);
    config_free(b);
}
END_TEST

/* The defaults of a new config are the ones decoding fills in: against a
 * parsed minimal config only the frontend and the backend differ. */
START_TEST(new_default_matches_decoded_defaults)
{
    struct config *a = config_new_default();
    struct config *b = parse_ok(MINIMAL);
    struct config_diff *d = config_diff_new(a, b, NULL);
    ck_assert_ptr_nonnull(d);
    char *text = config_diff_text(d);
    ck_assert_str_eq(text, "frontend http-8080 added (0.0.0.0:8080)\n"
                           "backend a-1 added (http://a:1, weight 1)\n");
    free(text);
    config_diff_free(d);
    config_free(a);
    config_free(b);
}
END_TEST

/* An edit made in memory is completed and checked without a round trip
 * through text, and reads as its parsed export does. */
START_TEST(normalize_completes_an_edit)
{
    struct config *a = parse_ok(MINIMAL);
    struct config_backend *nb = realloc(a->backends, 2 * sizeof(*nb));
    ck_assert_ptr_nonnull(nb);
    a->backends = nb;
    memset(&nb[1], 0, sizeof(nb[1]));
    a->n_backends = 2;
    nb[1].url = strdup("https://B.example:8443/");
    nb[1].weight = 4;
    free(a->frontends[0].name);
    a->frontends[0].name = strdup("");
    struct lb_err err = {0};
    ck_assert_int_eq(config_validate(a, tmpdir, &err), LB_OK);
    ck_assert_msg(config_normalize(a, tmpdir, &err) == LB_OK, "%s", err.msg);
    ck_assert_str_eq(a->frontends[0].name, "http-8080");
    ck_assert_str_eq(a->backends[1].id, "b.example-8443");
    ck_assert_str_eq(a->backends[1].host, "b.example");
    ck_assert_uint_eq(a->backends[1].port, 8443);
    ck_assert(a->backends[1].https);
    ck_assert_uint_eq(a->backends[1].max_queue, CONFIG_DEFAULT_MAX_QUEUE);
    ck_assert_str_eq(a->backends[1].ca_file, "");
    char *y = config_export_yaml(a, NULL, NULL);
    struct config *b = parse_ok(y);
    ck_assert(config_equal(a, b));
    ck_assert_str_eq(b->backends[1].id, a->backends[1].id);
    free(y);
    config_free(b);

    /* rules between keys, with the messages the parsers give */
    b = config_dup(a);
    free(b->backends[0].sni);
    b->backends[0].sni = strdup("x.example");
    ck_assert_int_eq(config_validate(b, tmpdir, &err), LB_EINVAL);
    ck_assert_str_eq(err.msg, "backends[0].sni: sni applies only to https:// backends");
    ck_assert_int_eq(config_normalize(b, tmpdir, &err), LB_EINVAL);
    config_free(b);
    b = config_dup(a);
    free(b->backends[1].url);
    b->backends[1].url = strdup("ftp://x");
    ck_assert_int_eq(config_normalize(b, tmpdir, &err), LB_EINVAL);
    ck_assert_str_eq(err.msg,
                     "backends[1].url: scheme \"ftp\" is not supported (use http or https)");
    config_free(b);
    b = config_dup(a);
    b->n_backends = 0;
    ck_assert_int_eq(config_validate(b, tmpdir, &err), LB_EINVAL);
    ck_assert_str_eq(err.msg, "backends: the list is empty; at least one backend is needed");
    b->n_backends = a->n_backends;
    config_free(b);
    b = config_dup(a);
    b->timeouts.queue_ms = 0;
    ck_assert_int_eq(config_validate(b, tmpdir, &err), LB_EINVAL);
    ck_assert_str_eq(err.msg, "timeouts.queue: 0s is too short (at least 1ms)");
    config_free(b);
    config_free(a);
}
END_TEST

static Suite *config_suite(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("parse");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, seed_parses);
    tcase_add_test(tc, deploy_example_validates);
    tcase_add_test(tc, defaults_filled);
    tcase_add_test(tc, extended_keys);
    tcase_add_test(tc, resilience_keys);
    tcase_add_test(tc, many_backends);
    tcase_add_test(tc, same_port_other_address_ok);
    tcase_add_test(tc, tls_keys_defaults);
    tcase_add_test(tc, tls_keys_parsed);
    tcase_add_test(tc, backend_tls_keys);
    tcase_add_test(tc, limits_and_ejection_defaults);
    tcase_add_test(tc, new_default_matches_decoded_defaults);
    suite_add_tcase(s, tc);
    tc = tcase_create("errors");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_loop_test(tc, bad_config, 0, (int)(sizeof(bad_cases) / sizeof(bad_cases[0])));
    tcase_add_test(tc, json_errors);
    tcase_add_test(tc, checked_parse_names_the_line);
    tcase_add_test(tc, validate_in_memory);
    tcase_add_test(tc, normalize_completes_an_edit);
    suite_add_tcase(s, tc);
    tc = tcase_create("durations");
    tcase_add_test(tc, durations);
    suite_add_tcase(s, tc);
    tc = tcase_create("export");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, yaml_round_trip);
    tcase_add_test(tc, yaml_round_trip_everything);
    tcase_add_test(tc, json_round_trip);
    tcase_add_test(tc, proxy_protocol_keys);
    tcase_add_test(tc, http2_keys);
    tcase_add_test(tc, hash_is_content);
    tcase_add_test(tc, tls_keys_round_trip);
    tcase_add_test(tc, limits_and_ejection_round_trip);
    suite_add_tcase(s, tc);
    tc = tcase_create("diff");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, diff_cases);
    tcase_add_test(tc, diff_new_keys);
    tcase_add_test(tc, limits_and_ejection_diff);
    tcase_add_test(tc, tls_keys_diff);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(config_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
