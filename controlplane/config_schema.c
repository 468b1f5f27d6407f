/* controlplane/config_schema.c: every key of the config, once, and the walks
 * that need nothing but the table: defaults, copy, free, names, durations. */
#include "config_int.h"

#include "lb_err.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Enums are read and written through unsigned *. */
_Static_assert(sizeof(enum config_backend_state) == sizeof(unsigned), "enum size");
_Static_assert(sizeof(enum config_hc_type) == sizeof(unsigned), "enum size");
_Static_assert(sizeof(enum config_rl_algorithm) == sizeof(unsigned), "enum size");
_Static_assert(sizeof(enum config_balancing_algorithm) == sizeof(unsigned), "enum size");
_Static_assert(sizeof(enum config_weights) == sizeof(unsigned), "enum size");
_Static_assert(sizeof(enum config_log_level) == sizeof(unsigned), "enum size");

static const char *const backend_states[] = {"active", "draining", "disabled", NULL};
static const char *const send_proxy_names[] = {"off", "v1", "v2", NULL};
static const char *const hc_types[] = {"http", "tcp", NULL};
static const char *const rl_algorithms[] = {"token_bucket", "sliding_window", NULL};
static const char *const bal_algorithms[] = {"round_robin", "weighted_round_robin", "least_request",
                                             NULL};
static const char *const weights_names[] = {"static", "dynamic", NULL};
static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};
static const char *const log_formats[] = {"json", NULL};
static const char *const tls_versions[] = {"TLSv1.2", "TLSv1.3", NULL};

#define FE(f)  CFG_IN(struct config_frontend, f)
#define BE(f)  CFG_IN(struct config_backend, f)
#define CRT(f) CFG_IN(struct config_certificate, f)
#define MS_1H  3600000

/* Table order is the canonical export order (changing it changes every
 * stored version's hash) and the order "did you mean" proposes keys in.
 * A row: path, type, default text, then min/max (numbers, durations in ms)
 * or .choices, where the value lives (CFG_AT in struct config, FE/BE/CRT in
 * a list item), and flags (enum cfg_flag). */
const struct cfg_key config__keys[] = {
    {"frontends", CFG_LIST, .what = "frontend", .help = " (a list of listeners)",
     CFG_VEC(frontends, n_frontends), .size = sizeof(struct config_frontend),
     .flags = CFG_REQUIRED | CFG_NULL_ABSENT},
    {"frontends[].name", CFG_STR, NULL, FE(name), .flags = CFG_DERIVED | CFG_ID},
    {"frontends[].address", CFG_STR, "0.0.0.0", FE(address), .flags = CFG_EMPTY_DEFAULT},
    {"frontends[].port", CFG_UINT, "0", 1, 65535, FE(port), .flags = CFG_REQUIRED},
    {"frontends[].tls", CFG_BOOL, "false", FE(tls)},
    {"frontends[].proxyProtocolFrom", CFG_STRLIST, .what = "a CIDR such as \"10.0.0.0/8\"",
     CFG_VEC_IN(struct config_frontend, proxy_from, n_proxy_from),
     .flags = CFG_NULL_ABSENT | CFG_OMIT_DEFAULT},
    {"frontends[].http2", CFG_BOOL, "true", FE(http2), .flags = CFG_OMIT_DEFAULT},
    {"frontends[].http2Cleartext", CFG_BOOL, "false", FE(http2_cleartext),
     .flags = CFG_OMIT_DEFAULT},
    {"frontends[].http2MaxConcurrentStreams", CFG_UINT, "100", 1, 1000, FE(http2_max_streams),
     .flags = CFG_OMIT_DEFAULT | CFG_ZERO_DEFAULT},
    {"frontends[].http2InitialWindowSize", CFG_UINT, "65535", 16384, 16777216, FE(http2_window),
     .flags = CFG_OMIT_DEFAULT | CFG_ZERO_DEFAULT},
    {"frontends[].http2MaxHeaderListSize", CFG_UINT, "32768", 1024, 1048576,
     FE(http2_max_header_list), .flags = CFG_OMIT_DEFAULT | CFG_ZERO_DEFAULT},

    {"backends", CFG_LIST, .what = "backend", .help = " (a list of servers)",
     CFG_VEC(backends, n_backends), .size = sizeof(struct config_backend),
     .flags = CFG_REQUIRED | CFG_NULL_ABSENT},
    {"backends[].id", CFG_STR, NULL, BE(id), .flags = CFG_DERIVED | CFG_ID},
    {"backends[].url", CFG_STR, NULL, BE(url), .flags = CFG_REQUIRED},
    {"backends[].weight", CFG_UINT, "1", 1, 1000, BE(weight)},
    {"backends[].state", CFG_ENUM, "active", .choices = backend_states, BE(state)},
    {"backends[].caFile", CFG_STR, "", BE(ca_file), .flags = CFG_OMIT_DEFAULT},
    {"backends[].sni", CFG_STR, "", BE(sni), .flags = CFG_OMIT_DEFAULT},
    {"backends[].maxConnections", CFG_UINT, "0", 0, 1000000, BE(max_connections),
     .flags = CFG_OMIT_DEFAULT},
    {"backends[].maxQueue", CFG_UINT, "1024", 1, 100000, BE(max_queue),
     .flags = CFG_OMIT_DEFAULT | CFG_ZERO_DEFAULT},
    {"backends[].sendProxy", CFG_ENUM, "off", .choices = send_proxy_names, BE(send_proxy),
     .flags = CFG_OMIT_DEFAULT},
    {"backends[].host", CFG_STR, NULL, BE(host), .flags = CFG_HIDDEN},

    {"healthcheck", CFG_SECTION, .flags = CFG_NULL_ABSENT},
    {"healthcheck.interval", CFG_DURATION, "10s", 1, 0, CFG_AT(healthcheck.interval_ms)},
    {"healthcheck.timeout", CFG_DURATION, "2s", 1, 0, CFG_AT(healthcheck.timeout_ms)},
    {"healthcheck.path", CFG_STR, "/health", CFG_AT(healthcheck.path)},
    {"healthcheck.rise", CFG_UINT, "2", 1, 100, CFG_AT(healthcheck.rise)},
    {"healthcheck.fall", CFG_UINT, "3", 1, 100, CFG_AT(healthcheck.fall)},
    {"healthcheck.type", CFG_ENUM, "http", .choices = hc_types, CFG_AT(healthcheck.type)},
    {"healthcheck.expectedStatus", CFG_UINT, "0", 0, 599, CFG_AT(healthcheck.expected_status)},
    {"healthcheck.host", CFG_STR, "", CFG_AT(healthcheck.host)},
    {"healthcheck.failOpen", CFG_BOOL, "true", CFG_AT(healthcheck.fail_open)},

    {"ssl", CFG_SECTION, CFG_AT(ssl.present),
     .flags = CFG_NULL_ABSENT | CFG_MARK | CFG_OMIT_UNMARKED},
    {"ssl.certFile", CFG_STR, "", CFG_AT(ssl.cert_file)},
    {"ssl.keyFile", CFG_STR, "", CFG_AT(ssl.key_file)},
    {"ssl.caFile", CFG_STR, "", CFG_AT(ssl.ca_file)},
    {"ssl.crlFile", CFG_STR, "", CFG_AT(ssl.crl_file)},
    {"ssl.clientAuth", CFG_UINT, "0", 0, 4, CFG_AT(ssl.client_auth)},
    {"ssl.minVersion", CFG_STR, "TLSv1.2", .choices = tls_versions, .what = "TLS version",
     CFG_AT(ssl.min_version)},
    {"ssl.ciphers", CFG_STR, "", CFG_AT(ssl.ciphers)},
    {"ssl.ciphersuites", CFG_STR, "", CFG_AT(ssl.ciphersuites)},
    {"ssl.groups", CFG_STR, "", CFG_AT(ssl.groups)},
    {"ssl.verify", CFG_SECTION, .flags = CFG_NULL_ABSENT},
    {"ssl.verify.allowedCN", CFG_STRLIST, .what = "a non-empty string",
     CFG_VEC(ssl.allowed_cn, ssl.n_allowed_cn), .flags = CFG_NULL_ABSENT | CFG_NONEMPTY},
    {"ssl.verify.allowedSanDNS", CFG_STRLIST, .what = "a non-empty string",
     CFG_VEC(ssl.allowed_san_dns, ssl.n_allowed_san_dns), .flags = CFG_NULL_ABSENT | CFG_NONEMPTY},
    {"ssl.verify.allowedSanURI", CFG_STRLIST, .what = "a non-empty string",
     CFG_VEC(ssl.allowed_san_uri, ssl.n_allowed_san_uri), .flags = CFG_NULL_ABSENT | CFG_NONEMPTY},
    {"ssl.verify.spkiPins", CFG_STRLIST, .what = "a non-empty string",
     CFG_VEC(ssl.spki_pins, ssl.n_spki_pins), .flags = CFG_NULL_ABSENT | CFG_NONEMPTY},
    {"ssl.ticketRotation", CFG_DURATION, "1h", 1000, 0, CFG_AT(ssl.ticket_rotation_ms)},
    {"ssl.certificates", CFG_LIST, CFG_VEC(ssl.certificates, ssl.n_certificates),
     .size = sizeof(struct config_certificate)},
    {"ssl.certificates[].certFile", CFG_STR, "", CRT(cert_file)},
    {"ssl.certificates[].keyFile", CFG_STR, "", CRT(key_file)},
    {"ssl.certificates[].sni", CFG_STRLIST, .what = "a server name",
     CFG_VEC_IN(struct config_certificate, sni, n_sni)},

    {"ratelimit", CFG_SECTION, .flags = CFG_NULL_ABSENT},
    {"ratelimit.enabled", CFG_BOOL, "false", CFG_AT(ratelimit.enabled)},
    {"ratelimit.rate", CFG_UINT, "0", 0, 10000000, CFG_AT(ratelimit.rate)},
    {"ratelimit.burst", CFG_UINT, "0", 0, 10000000, CFG_AT(ratelimit.burst)},
    {"ratelimit.algorithm", CFG_ENUM, "token_bucket", .choices = rl_algorithms,
     CFG_AT(ratelimit.algorithm)},
    {"ratelimit.perClient", CFG_BOOL, "true", CFG_AT(ratelimit.per_client)},
    {"ratelimit.global", CFG_BOOL, "false", CFG_AT(ratelimit.global)},
    {"ratelimit.ipv4Prefix", CFG_UINT, "32", 1, 32, CFG_AT(ratelimit.ipv4_prefix)},
    {"ratelimit.ipv6Prefix", CFG_UINT, "128", 1, 128, CFG_AT(ratelimit.ipv6_prefix)},
    {"ratelimit.maxKeys", CFG_UINT, "100000", 1, 100000000, CFG_AT(ratelimit.max_keys)},
    {"ratelimit.trustedProxies", CFG_STRLIST, .what = "a CIDR such as \"10.0.0.0/8\"",
     CFG_VEC(ratelimit.trusted_proxies, ratelimit.n_trusted_proxies), .flags = CFG_NULL_ABSENT},
    {"ratelimit.headersOnAllowed", CFG_BOOL, "true", CFG_AT(ratelimit.headers_on_allowed)},

    /* enabled reads true once the section is written */
    {"circuitbreaker", CFG_SECTION, CFG_AT(circuitbreaker.enabled),
     .flags = CFG_NULL_ABSENT | CFG_MARK},
    {"circuitbreaker.enabled", CFG_BOOL, "false", CFG_AT(circuitbreaker.enabled)},
    {"circuitbreaker.threshold", CFG_UINT, "5", 1, 1000, CFG_AT(circuitbreaker.threshold)},
    {"circuitbreaker.timeout", CFG_DURATION, "30s", 1, 0, CFG_AT(circuitbreaker.timeout_ms)},
    {"circuitbreaker.maxHalfOpen", CFG_UINT, "3", 1, 1000, CFG_AT(circuitbreaker.max_half_open)},
    {"circuitbreaker.maxTimeout", CFG_DURATION, "5m", 1, 0, CFG_AT(circuitbreaker.max_timeout_ms)},
    {"circuitbreaker.ignore5xx", CFG_BOOL, "false", CFG_AT(circuitbreaker.ignore_5xx)},

    {"retries", CFG_SECTION, .flags = CFG_NULL_ABSENT},
    {"retries.enabled", CFG_BOOL, "true", CFG_AT(retries.enabled)},
    {"retries.max", CFG_UINT, "2", 0, 5, CFG_AT(retries.max)},
    {"retries.budgetPercent", CFG_UINT, "20", 1, 100, CFG_AT(retries.budget_percent)},
    {"retries.budgetMin", CFG_UINT, "3", 1, 1000, CFG_AT(retries.budget_min)},
    {"retries.backoffBase", CFG_DURATION, "25ms", 1, 0, CFG_AT(retries.backoff_base_ms)},
    {"retries.backoffCap", CFG_DURATION, "250ms", 1, 0, CFG_AT(retries.backoff_cap_ms)},

    {"ejection", CFG_SECTION, .flags = CFG_NULL_ABSENT | CFG_OMIT_DEFAULT},
    {"ejection.enabled", CFG_BOOL, "true", CFG_AT(ejection.enabled)},
    {"ejection.probeInterval", CFG_DURATION, "1s", 10, MS_1H, CFG_AT(ejection.probe_interval_ms)},
    {"ejection.maxProbeInterval", CFG_DURATION, "30s", 10, MS_1H,
     CFG_AT(ejection.max_probe_interval_ms)},

    {"balancing", CFG_SECTION, .flags = CFG_NULL_ABSENT},
    {"balancing.algorithm", CFG_ENUM, "weighted_round_robin", .choices = bal_algorithms,
     CFG_AT(balancing.algorithm)},
    {"balancing.slowStart", CFG_DURATION, "30s", 0, 0, CFG_AT(balancing.slow_start_ms)},
    {"balancing.weights", CFG_ENUM, "static", .choices = weights_names, CFG_AT(balancing.weights)},

    {"timeouts", CFG_SECTION, .flags = CFG_NULL_ABSENT},
    {"timeouts.clientHeader", CFG_DURATION, "10s", 1, 0, CFG_AT(timeouts.client_header_ms)},
    {"timeouts.clientBody", CFG_DURATION, "30s", 1, 0, CFG_AT(timeouts.client_body_ms)},
    {"timeouts.keepAlive", CFG_DURATION, "1m", 1, 0, CFG_AT(timeouts.keep_alive_ms)},
    {"timeouts.upstreamConnect", CFG_DURATION, "3s", 1, 0, CFG_AT(timeouts.upstream_connect_ms)},
    {"timeouts.upstreamHeader", CFG_DURATION, "30s", 1, 0, CFG_AT(timeouts.upstream_header_ms)},
    {"timeouts.upstreamIdle", CFG_DURATION, "1m", 1, 0, CFG_AT(timeouts.upstream_idle_ms)},
    {"timeouts.drain", CFG_DURATION, "30s", 1, 0, CFG_AT(timeouts.drain_ms)},
    {"timeouts.queue", CFG_DURATION, "5s", 1, 600000, CFG_AT(timeouts.queue_ms),
     .flags = CFG_OMIT_DEFAULT},
    {"timeouts.tunnelIdle", CFG_DURATION, "1h", 1000, 24 * MS_1H, CFG_AT(timeouts.tunnel_idle_ms),
     .flags = CFG_OMIT_DEFAULT},

    {"limits", CFG_SECTION, .flags = CFG_NULL_ABSENT},
    {"limits.maxRequestLine", CFG_UINT, "8192", 64, 1048576, CFG_AT(limits.max_request_line)},
    {"limits.maxHeaderBytes", CFG_UINT, "32768", 256, 16777216, CFG_AT(limits.max_header_bytes)},
    {"limits.maxHeaders", CFG_UINT, "100", 1, 10000, CFG_AT(limits.max_headers)},
    {"limits.maxConnections", CFG_UINT, "10000", 1, 1000000, CFG_AT(limits.max_connections)},
    {"limits.maxTunnels", CFG_UINT, "10000", 1, 1000000, CFG_AT(limits.max_tunnels),
     .flags = CFG_OMIT_DEFAULT},

    {"logging", CFG_SECTION, .flags = CFG_NULL_ABSENT},
    {"logging.level", CFG_ENUM, "info", .choices = log_levels, CFG_AT(logging.level)},
    {"logging.format", CFG_STR, "json", .choices = log_formats, CFG_AT(logging.format)},
    {"logging.accessLog", CFG_BOOL, "true", CFG_AT(logging.access_log)},

    {"metrics", CFG_SECTION, .flags = CFG_NULL_ABSENT},
    {"metrics.enabled", CFG_BOOL, "false", CFG_AT(metrics.enabled)},
    {"metrics.address", CFG_STR, "127.0.0.1", CFG_AT(metrics.address)},
    {"metrics.port", CFG_UINT, "9090", 1, 65535, CFG_AT(metrics.port)},
};

const size_t config__n_keys = sizeof(config__keys) / sizeof(config__keys[0]);

/* ---- walking the table ------------------------------------------------------- */

const char *config__key_name(const struct cfg_key *k)
{
    const char *dot = strrchr(k->path, '.');
    return dot ? dot + 1 : k->path;
}

static bool is_child(const char *path, const char *prefix, size_t plen)
{
    if (plen == 0)
        return strchr(path, '.') == NULL;
    return strncmp(path, prefix, plen) == 0 && path[plen] == '.' &&
           strchr(path + plen + 1, '.') == NULL;
}

const struct cfg_key *config__next_child(const char *prefix, const struct cfg_key *prev)
{
    size_t plen = strlen(prefix);
    const struct cfg_key *end = config__keys + config__n_keys;
    for (const struct cfg_key *k = prev ? prev + 1 : config__keys; k < end; k++)
        if (is_child(k->path, prefix, plen))
            return k;
    return NULL;
}

const struct cfg_key *config__key(const char *path)
{
    for (size_t i = 0; i < config__n_keys; i++)
        if (strcmp(config__keys[i].path, path) == 0)
            return &config__keys[i];
    return NULL;
}

void config__child_prefix(const struct cfg_key *k, char *buf, size_t size)
{
    snprintf(buf, size, "%s%s", k->path, k->type == CFG_LIST ? "[]" : "");
}

void *config__field(void *base, const struct cfg_key *k)
{
    return (char *)base + k->at;
}

const void *config__cfield(const void *base, const struct cfg_key *k)
{
    return (const char *)base + k->at;
}

static size_t *count_of(void *base, const struct cfg_key *k)
{
    return (size_t *)((char *)base + k->n_at);
}

static size_t ccount_of(const void *base, const struct cfg_key *k)
{
    return *(const size_t *)((const char *)base + k->n_at);
}

static unsigned choice_index(const char *const *choices, const char *s)
{
    for (unsigned i = 0; choices[i]; i++)
        if (strcmp(choices[i], s) == 0)
            return i;
    return 0;
}

static unsigned n_choices(const char *const *choices)
{
    unsigned n = 0;
    while (choices[n])
        n++;
    return n;
}

void config__choice_list(const char *const *choices, char *buf, size_t size)
{
    size_t off = 0;
    buf[0] = '\0';
    for (unsigned i = 0; choices[i] && off < size; i++)
        off += (size_t)snprintf(buf + off, size - off, "%s%s",
                                i == 0 ? "" : (choices[i + 1] ? ", " : " or "), choices[i]);
}

/* The default of scalar <k> as a number (uint, bool, duration, enum). */
static uint32_t default_num(const struct cfg_key *k)
{
    uint32_t v = 0;
    switch (k->type) {
    case CFG_UINT:
        return (uint32_t)strtoul(k->def, NULL, 10);
    case CFG_BOOL:
        return strcmp(k->def, "true") == 0;
    case CFG_DURATION:
        config_duration_parse(k->def, &v, NULL);
        return v;
    case CFG_ENUM:
        return choice_index(k->choices, k->def);
    default:
        return 0;
    }
}

/* ---- defaults, free, copy, comparison ------------------------------------------- */

static int set_default(void *base, const struct cfg_key *k)
{
    void *f = config__field(base, k);
    switch (k->type) {
    case CFG_SECTION: {
        char prefix[128];
        config__child_prefix(k, prefix, sizeof(prefix));
        return config__set_defaults(base, prefix);
    }
    case CFG_LIST:
    case CFG_STRLIST:
        *(void **)f = NULL;
        *count_of(base, k) = 0;
        return 0;
    case CFG_UINT:
    case CFG_DURATION:
    case CFG_ENUM:
        *(uint32_t *)f = default_num(k);
        return 0;
    case CFG_BOOL:
        *(bool *)f = default_num(k) != 0;
        return 0;
    case CFG_STR:
        *(char **)f = k->def ? strdup(k->def) : NULL;
        return k->def && *(char **)f == NULL ? -1 : 0;
    }
    return 0;
}

int config__set_defaults(void *base, const char *prefix)
{
    int rc = 0;
    CONFIG_EACH_CHILD(k, prefix)
    {
        if (set_default(base, k) != 0)
            rc = -1;
    }
    return rc;
}

static void free_strv(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

void config__free_fields(void *base, const char *prefix)
{
    char sub[128];
    CONFIG_EACH_CHILD(k, prefix)
    {
        void *f = config__field(base, k);
        if (k->type == CFG_SECTION) {
            config__child_prefix(k, sub, sizeof(sub));
            config__free_fields(base, sub);
        } else if (k->type == CFG_LIST) {
            config__child_prefix(k, sub, sizeof(sub));
            char *items = *(char **)f;
            for (size_t i = 0; i < *count_of(base, k); i++)
                config__free_fields(items + i * k->size, sub);
            free(items);
            *(void **)f = NULL;
            *count_of(base, k) = 0;
        } else if (k->type == CFG_STRLIST) {
            free_strv(*(char ***)f, *count_of(base, k));
            *(void **)f = NULL;
            *count_of(base, k) = 0;
        } else if (k->type == CFG_STR) {
            free(*(char **)f);
            *(char **)f = NULL;
        }
    }
}

/* Replaces every pointer under <prefix> in <base> (a shallow copy) with a
 * deep copy; NULL strings become "". Never stops half-way, so that the
 * result can be freed whatever failed; false on no memory. */
static bool dup_fields(void *base, const char *prefix)
{
    bool ok = true;
    char sub[128];
    CONFIG_EACH_CHILD(k, prefix)
    {
        void *f = config__field(base, k);
        if (k->type == CFG_SECTION) {
            config__child_prefix(k, sub, sizeof(sub));
            ok &= dup_fields(base, sub);
        } else if (k->type == CFG_STR) {
            const char *s = *(char **)f;
            ok &= (*(char **)f = strdup(s ? s : "")) != NULL;
        } else if (k->type == CFG_LIST || k->type == CFG_STRLIST) {
            size_t n = *count_of(base, k), size = k->type == CFG_LIST ? k->size : sizeof(char *);
            const char *src = *(char **)f;
            char *copy = n ? malloc(n * size) : NULL;
            *(char **)f = copy;
            if (copy == NULL) {
                ok &= n == 0;
                *count_of(base, k) = 0;
                continue;
            }
            memcpy(copy, src, n * size);
            config__child_prefix(k, sub, sizeof(sub));
            for (size_t i = 0; i < n; i++) {
                if (k->type == CFG_LIST) {
                    ok &= dup_fields(copy + i * size, sub);
                } else {
                    const char *s = ((char **)copy)[i];
                    ok &= (((char **)copy)[i] = strdup(s ? s : "")) != NULL;
                }
            }
        }
    }
    return ok;
}

bool config__field_is_default(const void *base, const struct cfg_key *k)
{
    const void *f = config__cfield(base, k);
    switch (k->type) {
    case CFG_UINT:
    case CFG_DURATION:
    case CFG_ENUM: {
        uint32_t v = *(const uint32_t *)f;
        return v == default_num(k) || ((k->flags & CFG_ZERO_DEFAULT) && v == 0);
    }
    case CFG_BOOL:
        return *(const bool *)f == (default_num(k) != 0);
    case CFG_STR: {
        const char *s = *(char *const *)f;
        return strcmp(s ? s : "", k->def ? k->def : "") == 0;
    }
    case CFG_LIST:
    case CFG_STRLIST:
        return ccount_of(base, k) == 0;
    case CFG_SECTION: {
        char prefix[128];
        config__child_prefix(k, prefix, sizeof(prefix));
        return config__is_default(base, prefix);
    }
    }
    return false;
}

bool config__is_default(const void *base, const char *prefix)
{
    CONFIG_EACH_CHILD(k, prefix)
    {
        if (!(k->flags & CFG_HIDDEN) && !config__field_is_default(base, k))
            return false;
    }
    return true;
}

const char *config__scalar_text(const void *base, const struct cfg_key *k, char *buf, size_t size)
{
    const void *f = config__cfield(base, k);
    uint32_t v = k->type == CFG_BOOL ? *(const bool *)f : 0;
    if (k->type == CFG_UINT || k->type == CFG_DURATION || k->type == CFG_ENUM)
        v = *(const uint32_t *)f;
    switch (k->type) {
    case CFG_UINT:
        snprintf(buf, size, "%u", v);
        return buf;
    case CFG_BOOL:
        return v ? "true" : "false";
    case CFG_DURATION:
        return config_duration_format(v, buf, size);
    case CFG_ENUM:
        return v < n_choices(k->choices) ? k->choices[v] : "?";
    case CFG_STR: {
        const char *s = *(char *const *)f;
        return s ? s : "";
    }
    default:
        return "";
    }
}

void config_free(struct config *cfg)
{
    if (cfg == NULL)
        return;
    config__free_fields(cfg, "");
    free(cfg);
}

struct config *config_new_default(void)
{
    struct config *c = calloc(1, sizeof(*c));
    if (c != NULL && config__set_defaults(c, "") != 0) {
        config_free(c);
        return NULL;
    }
    return c;
}

struct config *config_dup(const struct config *src)
{
    struct config *c = malloc(sizeof(*c));
    if (c == NULL)
        return NULL;
    *c = *src;
    if (!dup_fields(c, "")) {
        config_free(c);
        return NULL;
    }
    return c;
}

/* ---- names --------------------------------------------------------------------- */

const char *config_backend_state_name(enum config_backend_state s)
{
    return (unsigned)s < 3 ? backend_states[s] : "active";
}

const char *config_send_proxy_name(enum config_send_proxy v)
{
    return (unsigned)v < 3 ? send_proxy_names[v] : "off";
}

const char *config_balancing_algorithm_name(enum config_balancing_algorithm a)
{
    return (unsigned)a < 3 ? bal_algorithms[a] : "weighted_round_robin";
}

const char *config_weights_name(enum config_weights w)
{
    return (unsigned)w < 2 ? weights_names[w] : "?";
}

/* ---- durations ----------------------------------------------------------------- */

int config_duration_parse(const char *text, uint32_t *ms, struct lb_err *err)
{
    const char *p = text;
    uint64_t total = 0;
    if (*p == '\0')
        return lb_err_set(err, LB_EINVAL, 0, "an empty duration is not valid");
    bool digits_only = true;
    for (const char *q = p; *q; q++)
        if (!isdigit((unsigned char)*q))
            digits_only = false;
    if (digits_only)
        return lb_err_set(err, LB_EINVAL, 0, "%s has no unit; add one, as in \"%ss\" or \"%sms\"",
                          text, text, text);
    while (*p) {
        if (!isdigit((unsigned char)*p))
            return lb_err_set(err, LB_EINVAL, 0,
                              "\"%s\" is not a duration (expected forms like 10s, 500ms, 1m30s)",
                              text);
        uint64_t v = 0;
        while (isdigit((unsigned char)*p)) {
            v = v * 10 + (uint64_t)(*p - '0');
            if (v > UINT32_MAX)
                return lb_err_set(err, LB_EINVAL, 0, "duration \"%s\" is too long", text);
            p++;
        }
        uint64_t unit;
        if (strncmp(p, "ms", 2) == 0) {
            unit = 1;
            p += 2;
        } else if (*p == 's') {
            unit = 1000;
            p++;
        } else if (*p == 'm') {
            unit = 60000;
            p++;
        } else if (*p == 'h') {
            unit = 3600000;
            p++;
        } else {
            return lb_err_set(err, LB_EINVAL, 0,
                              "\"%s\" has an unknown or missing unit (use ms, s, m or h)", text);
        }
        total += v * unit;
        if (total > UINT32_MAX)
            return lb_err_set(err, LB_EINVAL, 0, "duration \"%s\" is too long (at most 49 days)",
                              text);
    }
    *ms = (uint32_t)total;
    return LB_OK;
}

char *config_duration_format(uint32_t ms, char *buf, size_t size)
{
    if (ms == 0) {
        snprintf(buf, size, "0s");
        return buf;
    }
    uint32_t h = ms / 3600000, m = ms / 60000 % 60, s = ms / 1000 % 60, r = ms % 1000;
    size_t off = 0;
    buf[0] = '\0';
    if (h)
        off += (size_t)snprintf(buf + off, size - off, "%uh", h);
    if (m && off < size)
        off += (size_t)snprintf(buf + off, size - off, "%um", m);
    if (s && off < size)
        off += (size_t)snprintf(buf + off, size - off, "%us", s);
    if (r && off < size)
        snprintf(buf + off, size - off, "%ums", r);
    return buf;
}
