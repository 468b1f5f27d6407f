/* tests/unit/controlplane/test_snapbuild.c */
#include "config.h"
#include "lb_err.h"
#include "snapbuild.h"

#include <check.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

/* PEM files are made at run time: the repository ignores *.pem. */
static void setup(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/lb-test-snapbuild-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    write_file("cert.pem", "-----BEGIN CERTIFICATE-----\nleaf\n");
    write_file("key.pem", "-----BEGIN PRIVATE KEY-----\nk\n");
    write_file("ca.pem", "-----BEGIN CERTIFICATE-----\nca\n");
    write_file("api.pem", "api cert");
    write_file("api.key", "api key");
}

static void teardown(void)
{
    nftw(tmpdir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

static const char *const full_yaml =
    "frontends:\n"
    "  - {name: web, address: 127.0.0.1, port: 8080, proxyProtocolFrom: [\"10.0.0.0/8\"]}\n"
    "  - {name: secure, port: 8443, tls: true}\n"
    "backends:\n"
    "  - {id: a, url: \"http://127.0.0.1:9001\", weight: 5, sendProxy: v2}\n"
    "  - {id: b, url: \"https://[::1]:9443\", weight: 3, state: draining}\n"
    "  - {id: c, url: \"http://localhost:9003\", state: disabled}\n"
    "healthcheck: {interval: 2s, timeout: 500ms, path: /hz, rise: 4, fall: 5, failOpen: false}\n"
    "ssl:\n"
    "  certFile: cert.pem\n"
    "  keyFile: key.pem\n"
    "  caFile: ca.pem\n"
    "  clientAuth: 4\n"
    "  minVersion: TLSv1.3\n"
    "  certificates:\n"
    "    - {certFile: api.pem, keyFile: api.key, sni: [api.example.com]}\n"
    "ratelimit: {enabled: true, rate: 100, algorithm: sliding_window, global: true,\n"
    "            ipv4Prefix: 24, ipv6Prefix: 56, maxKeys: 77, headersOnAllowed: false,\n"
    "            trustedProxies: [\"10.0.0.0/8\", \"::1\"]}\n"
    "circuitbreaker: {threshold: 7, timeout: 1m, maxHalfOpen: 2, maxTimeout: 10m,\n"
    "                 ignore5xx: true}\n"
    "retries: {max: 4, budgetPercent: 30, budgetMin: 5, backoffBase: 10ms, backoffCap: 1s}\n"
    "balancing: {algorithm: least_request, slowStart: 1m30s}\n"
    "timeouts: {clientHeader: 5s, clientBody: 6s, keepAlive: 7s, upstreamConnect: 1s500ms,\n"
    "           upstreamHeader: 9s, upstreamIdle: 1h, drain: 2m,\n"
    "           tunnelIdle: 2h}\n"
    "limits: {maxRequestLine: 4096, maxHeaderBytes: 16384, maxHeaders: 50, maxConnections: 99,\n"
    "         maxTunnels: 500}\n"
    "logging: {level: debug, accessLog: false}\n"
    "metrics: {enabled: true, address: 127.0.0.2, port: 9100}\n";

static struct config *parse(const char *yaml)
{
    struct config *c = NULL;
    struct lb_err err = {0};
    ck_assert_msg(config_parse_yaml(yaml, strlen(yaml), "t.yaml", tmpdir, &c, &err) == LB_OK, "%s",
                  err.msg);
    return c;
}

static Lb__V1__Snapshot *build(const struct config *cfg)
{
    static const struct snapbuild_health health[] = {
        {"a", LB__V1__HEALTH__HEALTH_UP},
        {"b", LB__V1__HEALTH__HEALTH_DOWN},
    };
    struct snapbuild_input in = {.cfg = cfg,
                                 .config_version = 7,
                                 .generation = 42,
                                 .now_unix_ms = 1700000000000LL,
                                 .health = health,
                                 .n_health = 2,
                                 .base_dir = tmpdir};
    Lb__V1__Snapshot *s = NULL;
    struct lb_err err = {0};
    ck_assert_msg(snapbuild_build(&in, &s, &err) == LB_OK, "%s", err.msg);
    return s;
}

static bool bytes_eq(ProtobufCBinaryData b, const char *s)
{
    return b.len == strlen(s) && memcmp(b.data, s, b.len) == 0;
}

static void check_snapshot(const Lb__V1__Snapshot *s)
{
    ck_assert_uint_eq(s->config_version, 7);
    ck_assert_uint_eq(s->generation, 42);
    ck_assert_int_eq(s->created_unix_ms, 1700000000000LL);

    ck_assert_uint_eq(s->n_frontends, 2);
    ck_assert_str_eq(s->frontends[0]->name, "web");
    ck_assert_str_eq(s->frontends[0]->bind_address, "127.0.0.1");
    ck_assert_uint_eq(s->frontends[0]->port, 8080);
    ck_assert_ptr_null(s->frontends[0]->tls);
    ck_assert_uint_eq(s->frontends[0]->n_proxy_from, 1);
    ck_assert_str_eq(s->frontends[0]->proxy_from[0], "10.0.0.0/8");
    ck_assert_uint_eq(s->frontends[1]->n_proxy_from, 0);
    ck_assert_uint_eq(s->backends[0]->send_proxy, 2);
    ck_assert_uint_eq(s->backends[1]->send_proxy, 0);
    const Lb__V1__Tls *tls = s->frontends[1]->tls;
    ck_assert_ptr_nonnull(tls);
    ck_assert_str_eq(s->frontends[1]->bind_address, "0.0.0.0");
    ck_assert_uint_eq(tls->n_certificates, 2);
    ck_assert_str_eq(tls->certificates[0]->name, "cert.pem");
    ck_assert(bytes_eq(tls->certificates[0]->cert_pem, "-----BEGIN CERTIFICATE-----\nleaf\n"));
    ck_assert(bytes_eq(tls->certificates[0]->key_pem, "-----BEGIN PRIVATE KEY-----\nk\n"));
    ck_assert_uint_eq(tls->certificates[0]->n_sni, 0);
    ck_assert(bytes_eq(tls->certificates[1]->cert_pem, "api cert"));
    ck_assert(bytes_eq(tls->certificates[1]->key_pem, "api key"));
    ck_assert_uint_eq(tls->certificates[1]->n_sni, 1);
    ck_assert_str_eq(tls->certificates[1]->sni[0], "api.example.com");
    ck_assert(bytes_eq(tls->ca_pem, "-----BEGIN CERTIFICATE-----\nca\n"));
    ck_assert_uint_eq(tls->crl_pem.len, 0);
    ck_assert_int_eq(tls->client_auth, LB__V1__CLIENT_AUTH__CLIENT_AUTH_REQUIRE_AND_VERIFY);
    ck_assert_str_eq(tls->min_version, "TLSv1.3");

    ck_assert_uint_eq(s->n_backends, 3);
    ck_assert_str_eq(s->backends[0]->id, "a");
    ck_assert_str_eq(s->backends[0]->host, "127.0.0.1");
    ck_assert_uint_eq(s->backends[0]->port, 9001);
    ck_assert_uint_eq(s->backends[0]->weight, 5);
    ck_assert_int_eq(s->backends[0]->admin_state, LB__V1__ADMIN_STATE__ADMIN_ACTIVE);
    ck_assert_int_eq(s->backends[0]->health, LB__V1__HEALTH__HEALTH_UP);
    ck_assert(!s->backends[0]->tls);
    ck_assert_str_eq(s->backends[0]->url, "http://127.0.0.1:9001");
    ck_assert_str_eq(s->backends[1]->host, "::1");
    ck_assert(s->backends[1]->tls);
    ck_assert_str_eq(s->backends[1]->sni, "");
    ck_assert_uint_eq(s->backends[1]->weight, 3);
    ck_assert_int_eq(s->backends[1]->admin_state, LB__V1__ADMIN_STATE__ADMIN_DRAINING);
    ck_assert_int_eq(s->backends[1]->health, LB__V1__HEALTH__HEALTH_DOWN);
    /* "localhost" is resolved to a literal here, never by the data plane. */
    ck_assert_msg(strcmp(s->backends[2]->host, "127.0.0.1") == 0 ||
                      strcmp(s->backends[2]->host, "::1") == 0,
                  "%s", s->backends[2]->host);
    ck_assert_str_eq(s->backends[2]->url, "http://localhost:9003");
    ck_assert_int_eq(s->backends[2]->admin_state, LB__V1__ADMIN_STATE__ADMIN_DISABLED);
    ck_assert_int_eq(s->backends[2]->health, LB__V1__HEALTH__HEALTH_UNKNOWN);
    ck_assert_uint_eq(s->backends[2]->weight, 1);

    ck_assert_uint_eq(s->timeouts->client_header_ms, 5000);
    ck_assert_uint_eq(s->timeouts->client_body_ms, 6000);
    ck_assert_uint_eq(s->timeouts->keepalive_ms, 7000);
    ck_assert_uint_eq(s->timeouts->upstream_connect_ms, 1500);
    ck_assert_uint_eq(s->timeouts->upstream_header_ms, 9000);
    ck_assert_uint_eq(s->timeouts->upstream_idle_ms, 3600000);
    ck_assert_uint_eq(s->timeouts->drain_ms, 120000);
    ck_assert_uint_eq(s->limits->max_request_line, 4096);
    ck_assert_uint_eq(s->limits->max_header_bytes, 16384);
    ck_assert_uint_eq(s->limits->max_headers, 50);
    ck_assert_uint_eq(s->limits->max_connections, 99);
    ck_assert_uint_eq(s->limits->max_tunnels, 500);
    ck_assert_uint_eq(s->timeouts->tunnel_idle_ms, 7200000);
    ck_assert(s->ratelimit->enabled);
    ck_assert_uint_eq(s->ratelimit->rate, 100);
    ck_assert_uint_eq(s->ratelimit->burst, 100); /* burst 0 = rate */
    ck_assert_int_eq(s->ratelimit->algorithm, LB__V1__RATE_LIMIT_ALGORITHM__SLIDING_WINDOW);
    ck_assert(s->ratelimit->global);
    ck_assert(s->ratelimit->per_client);
    ck_assert_uint_eq(s->ratelimit->max_keys, 77);
    ck_assert_uint_eq(s->ratelimit->ipv4_prefix, 24);
    ck_assert_uint_eq(s->ratelimit->ipv6_prefix, 56);
    ck_assert(!s->ratelimit->headers_on_allowed);
    ck_assert_uint_eq(s->ratelimit->n_trusted_proxies, 2);
    ck_assert_str_eq(s->ratelimit->trusted_proxies[0], "10.0.0.0/8");
    ck_assert_str_eq(s->ratelimit->trusted_proxies[1], "::1");
    ck_assert(s->circuit_breaker->ignore_5xx);
    ck_assert_ptr_nonnull(s->retries);
    ck_assert(!s->retries->disabled);
    ck_assert_uint_eq(s->retries->max_retries, 4);
    ck_assert_uint_eq(s->retries->budget_percent, 30);
    ck_assert_uint_eq(s->retries->budget_min, 5);
    ck_assert_uint_eq(s->retries->backoff_base_ms, 10);
    ck_assert_uint_eq(s->retries->backoff_cap_ms, 1000);
    ck_assert(s->circuit_breaker->enabled);
    ck_assert_uint_eq(s->circuit_breaker->threshold, 7);
    ck_assert_uint_eq(s->circuit_breaker->timeout_ms, 60000);
    ck_assert_uint_eq(s->circuit_breaker->max_half_open, 2);
    ck_assert_uint_eq(s->circuit_breaker->max_timeout_ms, 600000);
    ck_assert_uint_eq(s->healthcheck->interval_ms, 2000);
    ck_assert_uint_eq(s->healthcheck->timeout_ms, 500);
    ck_assert_str_eq(s->healthcheck->path, "/hz");
    ck_assert_uint_eq(s->healthcheck->rise, 4);
    ck_assert_uint_eq(s->healthcheck->fall, 5);
    ck_assert(!s->healthcheck->fail_open);
    ck_assert_int_eq(s->logging->level, LB__V1__LOG_LEVEL__LOG_DEBUG);
    ck_assert(s->logging->access_log_off);
    ck_assert(s->metrics->enabled);
    ck_assert_str_eq(s->metrics->bind_address, "127.0.0.2");
    ck_assert_uint_eq(s->metrics->port, 9100);
    ck_assert_int_eq(s->balancing->algorithm, LB__V1__ALGORITHM__LEAST_REQUEST);
    ck_assert_uint_eq(s->balancing->slow_start_ms, 90000);
}

START_TEST(fields_from_config)
{
    struct config *cfg = parse(full_yaml);
    Lb__V1__Snapshot *s = build(cfg);
    check_snapshot(s);
    snapbuild_free(s);
    config_free(cfg);
}
END_TEST

START_TEST(encode_decode_round_trip)
{
    struct config *cfg = parse(full_yaml);
    Lb__V1__Snapshot *s = build(cfg);
    uint8_t *buf = NULL;
    size_t len = 0;
    ck_assert_int_eq(snapbuild_encode(s, &buf, &len, NULL), LB_OK);
    ck_assert_uint_gt(len, 100);
    Lb__V1__Snapshot *d = lb__v1__snapshot__unpack(NULL, len, buf);
    ck_assert_ptr_nonnull(d);
    check_snapshot(d);
    /* Re-encoding the decoded message gives the same bytes. */
    uint8_t *buf2 = NULL;
    size_t len2 = 0;
    ck_assert_int_eq(snapbuild_encode(d, &buf2, &len2, NULL), LB_OK);
    ck_assert_uint_eq(len, len2);
    ck_assert_mem_eq(buf, buf2, len);
    free(buf);
    free(buf2);
    lb__v1__snapshot__free_unpacked(d, NULL);
    snapbuild_free(s);
    config_free(cfg);
}
END_TEST

START_TEST(seed_defaults)
{
    struct config *cfg = parse("frontends:\n  - port: 8080\n"
                               "backends:\n  - url: \"http://10.1.2.3:9001\"\n    weight: 5\n"
                               "circuitbreaker:\n  threshold: 5\n");
    Lb__V1__Snapshot *s = build(cfg);
    ck_assert_str_eq(s->frontends[0]->name, "http-8080");
    ck_assert_str_eq(s->backends[0]->id, "10.1.2.3-9001");
    ck_assert_int_eq(s->backends[0]->health, LB__V1__HEALTH__HEALTH_UNKNOWN);
    ck_assert_int_eq(s->balancing->algorithm, LB__V1__ALGORITHM__WEIGHTED_ROUND_ROBIN);
    ck_assert_uint_eq(s->timeouts->keepalive_ms, 60000);
    ck_assert_uint_eq(s->circuit_breaker->timeout_ms, 30000);
    ck_assert(s->circuit_breaker->enabled);
    ck_assert(!s->ratelimit->enabled);
    ck_assert(s->ratelimit->per_client);
    ck_assert(!s->ratelimit->global);
    ck_assert_uint_eq(s->ratelimit->ipv4_prefix, 32);
    ck_assert_uint_eq(s->ratelimit->ipv6_prefix, 128);
    ck_assert_uint_eq(s->ratelimit->n_trusted_proxies, 0);
    ck_assert(s->ratelimit->headers_on_allowed);
    ck_assert(!s->circuit_breaker->ignore_5xx);
    ck_assert_uint_eq(s->balancing->slow_start_ms, 30000);
    ck_assert(!s->retries->disabled);
    ck_assert_uint_eq(s->retries->max_retries, 2);
    ck_assert_uint_eq(s->retries->budget_percent, 20);
    ck_assert_uint_eq(s->retries->budget_min, 3);
    ck_assert_uint_eq(s->retries->backoff_base_ms, 25);
    ck_assert_uint_eq(s->retries->backoff_cap_ms, 250);
    ck_assert_int_eq(s->logging->level, LB__V1__LOG_LEVEL__LOG_INFO);
    ck_assert(!s->logging->access_log_off);
    snapbuild_free(s);
    config_free(cfg);
}
END_TEST

/* Zero means "default" in the snapshot: no retries travel as the disabled
 * flag, whether the section says enabled: false or max: 0. */
START_TEST(retries_off)
{
    static const char *const offs[] = {"retries: {enabled: false}\n", "retries: {max: 0}\n"};
    for (int i = 0; i < 2; i++) {
        char yaml[256];
        snprintf(yaml, sizeof(yaml),
                 "frontends:\n  - port: 8080\n"
                 "backends:\n  - url: \"http://10.1.2.3:9001\"\n%s",
                 offs[i]);
        struct config *cfg = parse(yaml);
        Lb__V1__Snapshot *s = build(cfg);
        ck_assert_msg(s->retries->disabled, "case %d", i);
        snapbuild_free(s);
        config_free(cfg);
    }
}
END_TEST

/* Defaults travel as zero (and no ejection section), so that a data plane
 * older than these fields sees what it saw before. */
START_TEST(limits_and_ejection_mapped)
{
    struct config *cfg = parse("frontends:\n  - port: 8080\n"
                               "backends:\n"
                               "  - {url: \"http://10.1.2.3:9001\", maxConnections: 64, "
                               "maxQueue: 10}\n"
                               "  - url: \"http://10.1.2.3:9002\"\n"
                               "timeouts: {queue: 750ms}\n"
                               "ejection: {probeInterval: 200ms, maxProbeInterval: 5s}\n");
    Lb__V1__Snapshot *s = build(cfg);
    ck_assert_uint_eq(s->backends[0]->max_connections, 64);
    ck_assert_uint_eq(s->backends[0]->max_queue, 10);
    ck_assert_uint_eq(s->backends[1]->max_connections, 0);
    ck_assert_uint_eq(s->backends[1]->max_queue, 0);
    ck_assert_uint_eq(s->timeouts->queue_ms, 750);
    ck_assert_ptr_nonnull(s->ejection);
    ck_assert(!s->ejection->disabled);
    ck_assert_uint_eq(s->ejection->probe_base_ms, 200);
    ck_assert_uint_eq(s->ejection->probe_max_ms, 5000);
    snapbuild_free(s);
    config_free(cfg);

    cfg = parse("frontends:\n  - port: 8080\n"
                "backends:\n  - url: \"http://10.1.2.3:9001\"\n");
    s = build(cfg);
    ck_assert_uint_eq(s->backends[0]->max_queue, 0);
    ck_assert_uint_eq(s->timeouts->queue_ms, 0);
    ck_assert_ptr_null(s->ejection);
    snapbuild_free(s);
    config_free(cfg);

    cfg = parse("frontends:\n  - port: 8080\n"
                "backends:\n  - url: \"http://10.1.2.3:9001\"\n"
                "ejection: {enabled: false}\n");
    s = build(cfg);
    ck_assert_ptr_nonnull(s->ejection);
    ck_assert(s->ejection->disabled);
    ck_assert_uint_eq(s->ejection->probe_base_ms, 0);
    ck_assert_uint_eq(s->ejection->probe_max_ms, 0);
    snapbuild_free(s);
    config_free(cfg);
}
END_TEST

START_TEST(unresolvable_host)
{
    struct config *cfg = parse("frontends:\n  - port: 8080\n"
                               "backends:\n  - {id: ok, url: \"http://127.0.0.1:1\"}\n"
                               "  - {id: ghost, url: \"http://no-such-host.invalid:80\"}\n");
    struct snapbuild_input in = {.cfg = cfg, .base_dir = tmpdir};
    Lb__V1__Snapshot *s = NULL;
    struct lb_err err = {0};
    ck_assert_int_eq(snapbuild_build(&in, &s, &err), LB_EINVAL);
    ck_assert_ptr_null(s);
    ck_assert_msg(strncmp(err.msg, "backend ghost: host no-such-host.invalid does not resolve",
                          strlen("backend ghost: host no-such-host.invalid does not resolve")) == 0,
                  "%s", err.msg);
    config_free(cfg);
}
END_TEST

START_TEST(unreadable_tls_file)
{
    struct config *cfg = parse(full_yaml);
    char path[512];
    snprintf(path, sizeof(path), "%s/api.key", tmpdir);
    ck_assert_int_eq(unlink(path), 0); /* removed after validation */
    struct snapbuild_input in = {.cfg = cfg, .base_dir = tmpdir};
    Lb__V1__Snapshot *s = NULL;
    struct lb_err err = {0};
    ck_assert_int_eq(snapbuild_build(&in, &s, &err), LB_ESYS);
    ck_assert_ptr_null(s);
    ck_assert_msg(strstr(err.msg, path) != NULL, "%s", err.msg);
    ck_assert_msg(strstr(err.msg, "No such file") != NULL, "%s", err.msg);
    ck_assert_msg(strstr(err.msg, ".keyFile: cannot read ") != NULL, "%s", err.msg);
    config_free(cfg);
}
END_TEST

START_TEST(tls_keys_mapped)
{
    /* The same pin twice: hex and base64 of bytes 0x00..0x1f. */
    struct config *cfg =
        parse("frontends:\n  - {port: 8443, tls: true}\n"
              "backends:\n  - url: \"http://127.0.0.1:1\"\n"
              "ssl:\n  certFile: cert.pem\n  keyFile: key.pem\n"
              "  ciphersuites: TLS_AES_256_GCM_SHA384\n  groups: X25519:P-384\n"
              "  ticketRotation: 2m30s\n"
              "  verify:\n    allowedCN: [client-a, client-b]\n"
              "    allowedSanDNS: [a.example]\n    allowedSanURI: [\"spiffe://lb/a\"]\n"
              "    spkiPins:\n"
              "      - 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n"
              "      - \"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"\n");
    Lb__V1__Snapshot *s = build(cfg);
    const Lb__V1__Tls *t = s->frontends[0]->tls;
    ck_assert_ptr_nonnull(t);
    ck_assert_str_eq(t->ciphersuites, "TLS_AES_256_GCM_SHA384");
    ck_assert_str_eq(t->groups, "X25519:P-384");
    ck_assert_uint_eq(t->ticket_rotation_s, 150);
    ck_assert_ptr_nonnull(t->verify);
    ck_assert_uint_eq(t->verify->n_allowed_cn, 2);
    ck_assert_str_eq(t->verify->allowed_cn[1], "client-b");
    ck_assert_uint_eq(t->verify->n_allowed_san_dns, 1);
    ck_assert_str_eq(t->verify->allowed_san_dns[0], "a.example");
    ck_assert_uint_eq(t->verify->n_allowed_san_uri, 1);
    ck_assert_str_eq(t->verify->allowed_san_uri[0], "spiffe://lb/a");
    ck_assert_uint_eq(t->verify->n_spki_sha256_pins, 2);
    for (size_t p = 0; p < 2; p++) {
        ck_assert_uint_eq(t->verify->spki_sha256_pins[p].len, 32);
        for (unsigned i = 0; i < 32; i++)
            ck_assert_uint_eq(t->verify->spki_sha256_pins[p].data[i], i);
    }
    snapbuild_free(s);
    config_free(cfg);
}
END_TEST

START_TEST(tls_defaults_mapped)
{
    struct config *cfg = parse("frontends:\n  - {port: 8443, tls: true}\n"
                               "backends:\n  - url: \"http://127.0.0.1:1\"\n"
                               "ssl: {certFile: cert.pem, keyFile: key.pem}\n");
    Lb__V1__Snapshot *s = build(cfg);
    const Lb__V1__Tls *t = s->frontends[0]->tls;
    ck_assert_str_eq(t->ciphersuites, "");
    ck_assert_str_eq(t->groups, "");
    ck_assert_uint_eq(t->ticket_rotation_s, 3600);
    ck_assert_ptr_null(t->verify); /* nothing to check beyond the chain */
    snapbuild_free(s);
    config_free(cfg);
}
END_TEST

START_TEST(backend_tls_mapped)
{
    struct config *cfg =
        parse("frontends:\n  - port: 8080\n"
              "backends:\n"
              "  - {id: named, url: \"https://localhost:9443\", caFile: ca.pem}\n"
              "  - {id: ip, url: \"https://127.0.0.1:9444\"}\n"
              "  - {id: ipsni, url: \"https://[::1]:9445\", sni: api.internal, caFile: ca.pem}\n"
              "  - {id: override, url: \"https://localhost:9446\", sni: other.example}\n"
              "  - {id: plain, url: \"http://localhost:9001\"}\n");
    Lb__V1__Snapshot *s = build(cfg);
    ck_assert_uint_eq(s->n_backends, 5);
    ck_assert(s->backends[0]->tls);
    ck_assert_str_eq(s->backends[0]->sni, "localhost"); /* the URL's host name */
    ck_assert(bytes_eq(s->backends[0]->ca_pem, "-----BEGIN CERTIFICATE-----\nca\n"));
    ck_assert(s->backends[1]->tls);
    ck_assert_str_eq(s->backends[1]->sni, ""); /* no SNI for an IP literal */
    ck_assert_uint_eq(s->backends[1]->ca_pem.len, 0);
    ck_assert_str_eq(s->backends[2]->sni, "api.internal");
    ck_assert(bytes_eq(s->backends[2]->ca_pem, "-----BEGIN CERTIFICATE-----\nca\n"));
    ck_assert_str_eq(s->backends[3]->sni, "other.example");
    ck_assert(!s->backends[4]->tls);
    ck_assert_str_eq(s->backends[4]->sni, "");
    /* What the data plane gets survives the wire. */
    uint8_t *buf;
    size_t len;
    ck_assert_int_eq(snapbuild_encode(s, &buf, &len, NULL), LB_OK);
    Lb__V1__Snapshot *d = lb__v1__snapshot__unpack(NULL, len, buf);
    ck_assert_ptr_nonnull(d);
    ck_assert_str_eq(d->backends[2]->sni, "api.internal");
    ck_assert(bytes_eq(d->backends[2]->ca_pem, "-----BEGIN CERTIFICATE-----\nca\n"));
    lb__v1__snapshot__free_unpacked(d, NULL);
    free(buf);
    snapbuild_free(s);
    config_free(cfg);
}
END_TEST

START_TEST(backend_ca_removed)
{
    struct config *cfg =
        parse("frontends:\n  - port: 8080\n"
              "backends:\n  - {url: \"https://localhost:9443\", caFile: ca.pem}\n");
    char path[512];
    snprintf(path, sizeof(path), "%s/ca.pem", tmpdir);
    ck_assert_int_eq(unlink(path), 0); /* removed after validation */
    struct snapbuild_input in = {.cfg = cfg, .base_dir = tmpdir};
    Lb__V1__Snapshot *s = NULL;
    struct lb_err err = {0};
    ck_assert_int_eq(snapbuild_build(&in, &s, &err), LB_ESYS);
    ck_assert_ptr_null(s);
    ck_assert_msg(strncmp(err.msg, "backends[0].caFile: cannot read ", 32) == 0, "%s", err.msg);
    ck_assert_msg(strstr(err.msg, path) != NULL, "%s", err.msg);
    config_free(cfg);
}
END_TEST

static Suite *snapbuild_suite(void)
{
    Suite *s = suite_create("snapbuild");
    TCase *tc = tcase_create("build");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, fields_from_config);
    tcase_add_test(tc, encode_decode_round_trip);
    tcase_add_test(tc, seed_defaults);
    tcase_add_test(tc, retries_off);
    tcase_add_test(tc, limits_and_ejection_mapped);
    tcase_add_test(tc, tls_keys_mapped);
    tcase_add_test(tc, tls_defaults_mapped);
    tcase_add_test(tc, backend_tls_mapped);
    suite_add_tcase(s, tc);
    tc = tcase_create("errors");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, unresolvable_host);
    tcase_add_test(tc, unreadable_tls_file);
    tcase_add_test(tc, backend_ca_removed);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(snapbuild_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
