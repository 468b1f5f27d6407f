/* controlplane/snapbuild.c: every submessage, string and byte buffer of the
 * snapshot is malloc'd here, so protobuf_c_message_free_unpacked() with the
 * default allocator releases a built snapshot exactly like an unpacked one. */
#include "snapbuild.h"

#include "config.h"
#include "lb_err.h"
#include "tlscheck.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static int nomem(struct lb_err *err)
{
    return lb_err_set(err, LB_ENOMEM, 0, "out of memory while building the snapshot");
}

/* A new message of type <desc>, initialised (malloc'd, so that
 * protobuf_c_message_free_unpacked() releases it); NULL on no memory. */
static void *new_msg(const ProtobufCMessageDescriptor *desc)
{
    void *m = malloc(desc->sizeof_message);
    if (m != NULL)
        protobuf_c_message_init(desc, m);
    return m;
}

/* A string field: malloc'd copy, or the shared empty default for "". */
static int set_str(char **field, const char *s)
{
    if (s == NULL || s[0] == '\0')
        return 0;
    char *d = strdup(s);
    if (d == NULL)
        return -1;
    *field = d;
    return 0;
}

/* Reads <file> (relative to <base_dir>) into <out>; a failure names <key>
 * ("backends[2].caFile") and the file. "" reads nothing. */
static int read_file(const char *base_dir, const char *key, const char *file,
                     ProtobufCBinaryData *out, struct lb_err *err)
{
    if (file == NULL || file[0] == '\0')
        return LB_OK;
    char path[4096];
    tlscheck_resolve(base_dir, file, path, sizeof(path));
    struct lb_err e = {0};
    int rc = tlscheck_read_file(path, &out->data, &out->len, &e);
    if (rc == LB_ENOMEM)
        return nomem(err);
    if (rc != LB_OK) {
        lb_err_set(err, rc, 0, "%s: %s", key, e.msg);
        if (err != NULL)
            err->sys_errno = e.sys_errno;
    }
    return rc;
}

/* Copies the <n> strings of <src> into a new array at *<dst>, counted in
 * *<dn> as they are copied (so that a failure frees what was); 0 or -1. */
static int copy_strv(char ***dst, size_t *dn, char *const *src, size_t n)
{
    if (n == 0)
        return 0;
    if ((*dst = calloc(n, sizeof(**dst))) == NULL)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (((*dst)[i] = strdup(src[i])) == NULL)
            return -1;
        *dn = i + 1;
    }
    return 0;
}

/* <where> names the certificate's config entry: "ssl", "ssl.certificates[1]". */
static int add_certificate(Lb__V1__Tls *tls, const char *base_dir, const char *where,
                           const char *cert_file, const char *key_file, char *const *sni,
                           size_t n_sni, struct lb_err *err)
{
    Lb__V1__Certificate *c = new_msg(&lb__v1__certificate__descriptor);
    if (c == NULL)
        return nomem(err);
    tls->certificates[tls->n_certificates++] = c;
    if (set_str(&c->name, cert_file) != 0)
        return nomem(err);
    char key[64];
    snprintf(key, sizeof(key), "%s.certFile", where);
    int rc = read_file(base_dir, key, cert_file, &c->cert_pem, err);
    snprintf(key, sizeof(key), "%s.keyFile", where);
    if (rc == LB_OK)
        rc = read_file(base_dir, key, key_file, &c->key_pem, err);
    if (rc != LB_OK)
        return rc;
    return copy_strv(&c->sni, &c->n_sni, sni, n_sni) != 0 ? nomem(err) : LB_OK;
}

/* ssl.verify -> ClientVerify; absent when every list is empty. Pins were
 * checked by the config parser; a bad one here is a config built in memory. */
static int build_verify(Lb__V1__Tls *tls, const struct config_ssl *ssl, struct lb_err *err)
{
    if (ssl->n_allowed_cn + ssl->n_allowed_san_dns + ssl->n_allowed_san_uri + ssl->n_spki_pins == 0)
        return LB_OK;
    Lb__V1__ClientVerify *v = new_msg(&lb__v1__client_verify__descriptor);
    if (v == NULL)
        return nomem(err);
    tls->verify = v;
    if (copy_strv(&v->allowed_cn, &v->n_allowed_cn, ssl->allowed_cn, ssl->n_allowed_cn) != 0 ||
        copy_strv(&v->allowed_san_dns, &v->n_allowed_san_dns, ssl->allowed_san_dns,
                  ssl->n_allowed_san_dns) != 0 ||
        copy_strv(&v->allowed_san_uri, &v->n_allowed_san_uri, ssl->allowed_san_uri,
                  ssl->n_allowed_san_uri) != 0)
        return nomem(err);
    if (ssl->n_spki_pins == 0)
        return LB_OK;
    v->spki_sha256_pins = calloc(ssl->n_spki_pins, sizeof(*v->spki_sha256_pins));
    if (v->spki_sha256_pins == NULL)
        return nomem(err);
    for (size_t i = 0; i < ssl->n_spki_pins; i++) {
        uint8_t *pin = malloc(32);
        if (pin == NULL)
            return nomem(err);
        v->spki_sha256_pins[i] = (ProtobufCBinaryData){.len = 32, .data = pin};
        v->n_spki_sha256_pins = i + 1;
        struct lb_err e;
        if (tlscheck_pin_parse(ssl->spki_pins[i], pin, &e) != LB_OK)
            return lb_err_set(err, LB_EINVAL, 0, "ssl.verify.spkiPins[%zu]: %s", i, e.msg);
    }
    return LB_OK;
}

static int build_tls(Lb__V1__Frontend *f, const struct config_ssl *ssl, const char *base_dir,
                     struct lb_err *err)
{
    Lb__V1__Tls *tls = new_msg(&lb__v1__tls__descriptor);
    if (tls == NULL)
        return nomem(err);
    f->tls = tls;
    size_t total = ssl->n_certificates + (ssl->cert_file[0] ? 1 : 0);
    tls->certificates = calloc(total ? total : 1, sizeof(*tls->certificates));
    if (tls->certificates == NULL)
        return nomem(err);
    int rc = LB_OK;
    if (ssl->cert_file[0])
        rc = add_certificate(tls, base_dir, "ssl", ssl->cert_file, ssl->key_file, NULL, 0, err);
    for (size_t i = 0; rc == LB_OK && i < ssl->n_certificates; i++) {
        const struct config_certificate *c = &ssl->certificates[i];
        char where[48];
        snprintf(where, sizeof(where), "ssl.certificates[%zu]", i);
        rc =
            add_certificate(tls, base_dir, where, c->cert_file, c->key_file, c->sni, c->n_sni, err);
    }
    if (rc != LB_OK)
        return rc;
    if ((rc = read_file(base_dir, "ssl.caFile", ssl->ca_file, &tls->ca_pem, err)) != LB_OK ||
        (rc = read_file(base_dir, "ssl.crlFile", ssl->crl_file, &tls->crl_pem, err)) != LB_OK)
        return rc;
    tls->client_auth = (Lb__V1__ClientAuth)ssl->client_auth;
    if (set_str(&tls->min_version, ssl->min_version) != 0 ||
        set_str(&tls->ciphers, ssl->ciphers) != 0 ||
        set_str(&tls->ciphersuites, ssl->ciphersuites) != 0 ||
        set_str(&tls->groups, ssl->groups) != 0)
        return nomem(err);
    tls->ticket_rotation_s = ssl->ticket_rotation_ms / 1000;
    return build_verify(tls, ssl, err);
}

static bool is_ip_literal(const char *host)
{
    unsigned char buf[16];
    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

/* IP literal for <b>'s host: itself, or the first getaddrinfo() answer. */
static int resolve(const struct config_backend *b, char *ip, size_t size, struct lb_err *err)
{
    if (is_ip_literal(b->host)) {
        snprintf(ip, size, "%s", b->host);
        return LB_OK;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(b->host, NULL, &hints, &res);
    if (rc != 0 || res == NULL)
        return lb_err_set(err, LB_EINVAL, rc == EAI_SYSTEM ? errno : 0,
                          "backend %s: host %s does not resolve: %s", b->id, b->host,
                          rc == EAI_SYSTEM ? "system error" : gai_strerror(rc));
    rc = getnameinfo(res->ai_addr, res->ai_addrlen, ip, (socklen_t)size, NULL, 0, NI_NUMERICHOST);
    freeaddrinfo(res);
    if (rc != 0)
        return lb_err_set(err, LB_EINVAL, 0, "backend %s: cannot format the address of %s: %s",
                          b->id, b->host, gai_strerror(rc));
    return LB_OK;
}

/* <i> is the backend's index in the config; callers usually pass health in
 * config order, which makes the lookup O(1) for 10,000 backends. */
static Lb__V1__Health health_of(const struct snapbuild_input *in, size_t i, const char *id)
{
    if (in->health != NULL && i < in->n_health && in->health[i].id != NULL &&
        strcmp(in->health[i].id, id) == 0)
        return in->health[i].health;
    for (i = 0; in->health != NULL && i < in->n_health; i++)
        if (in->health[i].id != NULL && strcmp(in->health[i].id, id) == 0)
            return in->health[i].health;
    return LB__V1__HEALTH__HEALTH_UNKNOWN;
}

static int build_backends(Lb__V1__Snapshot *s, const struct snapbuild_input *in, struct lb_err *err)
{
    const struct config *cfg = in->cfg;
    s->backends = calloc(cfg->n_backends ? cfg->n_backends : 1, sizeof(*s->backends));
    if (s->backends == NULL)
        return nomem(err);
    for (size_t i = 0; i < cfg->n_backends; i++) {
        const struct config_backend *cb = &cfg->backends[i];
        Lb__V1__Backend *b = new_msg(&lb__v1__backend__descriptor);
        if (b == NULL)
            return nomem(err);
        s->backends[s->n_backends++] = b;
        char ip[INET6_ADDRSTRLEN + 1];
        int rc = resolve(cb, ip, sizeof(ip), err);
        if (rc != LB_OK)
            return rc;
        if (set_str(&b->id, cb->id) != 0 || set_str(&b->host, ip) != 0 ||
            set_str(&b->url, cb->url) != 0)
            return nomem(err);
        b->port = cb->port;
        b->weight = cb->weight;
        /* Zero is the default in the snapshot: a default config gives the
         * bytes it gave before these fields existed. */
        b->max_connections = cb->max_connections;
        b->max_queue = cb->max_queue == CONFIG_DEFAULT_MAX_QUEUE ? 0 : cb->max_queue; /* 0 too */
        b->send_proxy = (uint32_t)cb->send_proxy;
        b->admin_state = cb->state == CONFIG_BACKEND_DRAINING ? LB__V1__ADMIN_STATE__ADMIN_DRAINING
                         : cb->state == CONFIG_BACKEND_DISABLED
                             ? LB__V1__ADMIN_STATE__ADMIN_DISABLED
                             : LB__V1__ADMIN_STATE__ADMIN_ACTIVE;
        b->health = health_of(in, i, cb->id);
        b->tls = cb->https;
        if (!cb->https)
            continue;
        if (cb->sni != NULL && cb->sni[0] != '\0') {
            if (set_str(&b->sni, cb->sni) != 0)
                return nomem(err);
        } else if (!is_ip_literal(cb->host) && set_str(&b->sni, cb->host) != 0) {
            return nomem(err);
        }
        char key[48];
        snprintf(key, sizeof(key), "backends[%zu].caFile", i);
        if ((rc = read_file(in->base_dir, key, cb->ca_file, &b->ca_pem, err)) != LB_OK)
            return rc;
    }
    return LB_OK;
}

static int build_frontends(Lb__V1__Snapshot *s, const struct snapbuild_input *in,
                           struct lb_err *err)
{
    const struct config *cfg = in->cfg;
    s->frontends = calloc(cfg->n_frontends ? cfg->n_frontends : 1, sizeof(*s->frontends));
    if (s->frontends == NULL)
        return nomem(err);
    for (size_t i = 0; i < cfg->n_frontends; i++) {
        const struct config_frontend *cf = &cfg->frontends[i];
        Lb__V1__Frontend *f = new_msg(&lb__v1__frontend__descriptor);
        if (f == NULL)
            return nomem(err);
        s->frontends[s->n_frontends++] = f;
        if (set_str(&f->name, cf->name) != 0 || set_str(&f->bind_address, cf->address) != 0 ||
            copy_strv(&f->proxy_from, &f->n_proxy_from, cf->proxy_from, cf->n_proxy_from) != 0)
            return nomem(err);
        f->port = cf->port;
        f->http2 = cf->http2;
        f->http2_cleartext = cf->http2_cleartext;
        f->http2_max_streams = cf->http2_max_streams;
        f->http2_window = cf->http2_window;
        f->http2_max_header_list = cf->http2_max_header_list;
        if (cf->tls) {
            if (!cfg->ssl.present)
                return lb_err_set(err, LB_EINVAL, 0,
                                  "frontend %s: TLS is on but the config has no ssl section",
                                  cf->name);
            int rc = build_tls(f, &cfg->ssl, in->base_dir, err);
            if (rc != LB_OK)
                return rc;
        }
    }
    return LB_OK;
}

/* The ratelimit section. LB_ENOMEM on no memory (<r> then holds what was
 * copied, freed with the snapshot). */
static int fill_ratelimit(Lb__V1__RateLimit *r, const struct config *cfg)
{
    r->enabled = cfg->ratelimit.enabled;
    r->rate = cfg->ratelimit.rate;
    r->burst = cfg->ratelimit.burst ? cfg->ratelimit.burst : cfg->ratelimit.rate;
    r->algorithm = cfg->ratelimit.algorithm == CONFIG_RL_SLIDING_WINDOW
                       ? LB__V1__RATE_LIMIT_ALGORITHM__SLIDING_WINDOW
                       : LB__V1__RATE_LIMIT_ALGORITHM__TOKEN_BUCKET;
    r->per_client = cfg->ratelimit.per_client;
    r->global = cfg->ratelimit.global;
    r->max_keys = cfg->ratelimit.max_keys;
    r->ipv4_prefix = cfg->ratelimit.ipv4_prefix;
    r->ipv6_prefix = cfg->ratelimit.ipv6_prefix;
    r->headers_on_allowed = cfg->ratelimit.headers_on_allowed;
    return copy_strv(&r->trusted_proxies, &r->n_trusted_proxies, cfg->ratelimit.trusted_proxies,
                     cfg->ratelimit.n_trusted_proxies) != 0
               ? LB_ENOMEM
               : LB_OK;
}

/* The retries section and, when it differs from the defaults, ejection.
 * LB_ENOMEM on no memory. */
static int fill_retries(Lb__V1__Snapshot *s, Lb__V1__Retries *rt, const struct config *cfg)
{
    /* Zero means "default" in the snapshot, so "no retries" (enabled: false
     * or max: 0) is the disabled flag. */
    const struct config_retries *cr = &cfg->retries;
    rt->disabled = !cr->enabled || cr->max == 0;
    rt->max_retries = cr->max;
    rt->budget_percent = cr->budget_percent;
    rt->budget_min = cr->budget_min;
    rt->backoff_base_ms = cr->backoff_base_ms;
    rt->backoff_cap_ms = cr->backoff_cap_ms;

    /* Only when it differs from the defaults (all zero in the snapshot). */
    const struct config_ejection *ce = &cfg->ejection;
    if (!ce->enabled || ce->probe_interval_ms != 1000 || ce->max_probe_interval_ms != 30000) {
        Lb__V1__Ejection *ej = new_msg(&lb__v1__ejection__descriptor);
        if (ej == NULL)
            return LB_ENOMEM;
        s->ejection = ej;
        ej->disabled = !ce->enabled;
        ej->probe_base_ms = ce->probe_interval_ms == 1000 ? 0 : ce->probe_interval_ms;
        ej->probe_max_ms = ce->max_probe_interval_ms == 30000 ? 0 : ce->max_probe_interval_ms;
    }
    return LB_OK;
}

static int build_sections(Lb__V1__Snapshot *s, const struct config *cfg, struct lb_err *err)
{
    /* Attached at once so that a failure below frees whatever was allocated. */
    if ((s->timeouts = new_msg(&lb__v1__timeouts__descriptor)) == NULL ||
        (s->limits = new_msg(&lb__v1__limits__descriptor)) == NULL ||
        (s->ratelimit = new_msg(&lb__v1__rate_limit__descriptor)) == NULL ||
        (s->circuit_breaker = new_msg(&lb__v1__circuit_breaker__descriptor)) == NULL ||
        (s->healthcheck = new_msg(&lb__v1__health_check__descriptor)) == NULL ||
        (s->logging = new_msg(&lb__v1__logging__descriptor)) == NULL ||
        (s->metrics = new_msg(&lb__v1__metrics__descriptor)) == NULL ||
        (s->balancing = new_msg(&lb__v1__balancing__descriptor)) == NULL ||
        (s->retries = new_msg(&lb__v1__retries__descriptor)) == NULL)
        return nomem(err);
    Lb__V1__Timeouts *t = s->timeouts;
    Lb__V1__Limits *l = s->limits;
    Lb__V1__RateLimit *r = s->ratelimit;
    Lb__V1__CircuitBreaker *cb = s->circuit_breaker;
    Lb__V1__HealthCheck *hc = s->healthcheck;
    Lb__V1__Logging *lg = s->logging;
    Lb__V1__Metrics *m = s->metrics;
    Lb__V1__Balancing *b = s->balancing;
    Lb__V1__Retries *rt = s->retries;

    t->client_header_ms = cfg->timeouts.client_header_ms;
    t->client_body_ms = cfg->timeouts.client_body_ms;
    t->keepalive_ms = cfg->timeouts.keep_alive_ms;
    t->upstream_connect_ms = cfg->timeouts.upstream_connect_ms;
    t->upstream_header_ms = cfg->timeouts.upstream_header_ms;
    t->upstream_idle_ms = cfg->timeouts.upstream_idle_ms;
    t->drain_ms = cfg->timeouts.drain_ms;
    t->queue_ms = cfg->timeouts.queue_ms == 5000 ? 0 : cfg->timeouts.queue_ms;
    t->tunnel_idle_ms = cfg->timeouts.tunnel_idle_ms;

    l->max_request_line = cfg->limits.max_request_line;
    l->max_header_bytes = cfg->limits.max_header_bytes;
    l->max_headers = cfg->limits.max_headers;
    l->max_connections = cfg->limits.max_connections;
    l->max_tunnels = cfg->limits.max_tunnels;

    if (fill_ratelimit(r, cfg) != LB_OK)
        return nomem(err);

    cb->enabled = cfg->circuitbreaker.enabled;
    cb->threshold = cfg->circuitbreaker.threshold;
    cb->timeout_ms = cfg->circuitbreaker.timeout_ms;
    cb->max_half_open = cfg->circuitbreaker.max_half_open;
    cb->max_timeout_ms = cfg->circuitbreaker.max_timeout_ms;
    cb->ignore_5xx = cfg->circuitbreaker.ignore_5xx;

    if (fill_retries(s, rt, cfg) != LB_OK)
        return nomem(err);

    hc->interval_ms = cfg->healthcheck.interval_ms;
    hc->timeout_ms = cfg->healthcheck.timeout_ms;
    hc->rise = cfg->healthcheck.rise;
    hc->fall = cfg->healthcheck.fall;
    hc->fail_open = cfg->healthcheck.fail_open;
    if (set_str(&hc->path, cfg->healthcheck.path) != 0)
        return nomem(err);

    static const Lb__V1__LogLevel levels[] = {
        [CONFIG_LOG_DEBUG] = LB__V1__LOG_LEVEL__LOG_DEBUG,
        [CONFIG_LOG_INFO] = LB__V1__LOG_LEVEL__LOG_INFO,
        [CONFIG_LOG_WARN] = LB__V1__LOG_LEVEL__LOG_WARN,
        [CONFIG_LOG_ERROR] = LB__V1__LOG_LEVEL__LOG_ERROR,
    };
    lg->level =
        (unsigned)cfg->logging.level < 4 ? levels[cfg->logging.level] : LB__V1__LOG_LEVEL__LOG_INFO;
    lg->access_log_off = !cfg->logging.access_log;

    m->enabled = cfg->metrics.enabled;
    m->port = cfg->metrics.port;
    if (set_str(&m->bind_address, cfg->metrics.address) != 0)
        return nomem(err);

    static const Lb__V1__Algorithm algs[] = {
        [CONFIG_BAL_ROUND_ROBIN] = LB__V1__ALGORITHM__ROUND_ROBIN,
        [CONFIG_BAL_WEIGHTED_ROUND_ROBIN] = LB__V1__ALGORITHM__WEIGHTED_ROUND_ROBIN,
        [CONFIG_BAL_LEAST_REQUEST] = LB__V1__ALGORITHM__LEAST_REQUEST,
    };
    b->algorithm = (unsigned)cfg->balancing.algorithm < 3 ? algs[cfg->balancing.algorithm]
                                                          : LB__V1__ALGORITHM__WEIGHTED_ROUND_ROBIN;
    b->slow_start_ms = cfg->balancing.slow_start_ms;
    return LB_OK;
}

int snapbuild_build(const struct snapbuild_input *in, Lb__V1__Snapshot **out, struct lb_err *err)
{
    Lb__V1__Snapshot *s = new_msg(&lb__v1__snapshot__descriptor);
    if (s == NULL)
        return nomem(err);
    s->config_version = in->config_version;
    s->generation = in->generation;
    s->created_unix_ms = in->now_unix_ms;
    int rc = build_frontends(s, in, err);
    if (rc == LB_OK)
        rc = build_backends(s, in, err);
    if (rc == LB_OK)
        rc = build_sections(s, in->cfg, err);
    if (rc != LB_OK) {
        snapbuild_free(s);
        return rc;
    }
    *out = s;
    return LB_OK;
}

int snapbuild_encode(const Lb__V1__Snapshot *snap, uint8_t **buf, size_t *len, struct lb_err *err)
{
    size_t size = lb__v1__snapshot__get_packed_size(snap);
    uint8_t *b = malloc(size ? size : 1);
    if (b == NULL)
        return nomem(err);
    *len = lb__v1__snapshot__pack(snap, b);
    *buf = b;
    return LB_OK;
}

void snapbuild_free(Lb__V1__Snapshot *snap)
{
    if (snap != NULL)
        protobuf_c_message_free_unpacked(&snap->base, NULL);
}
