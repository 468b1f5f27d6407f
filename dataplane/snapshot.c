/* dataplane/snapshot.c */
#include "snapshot.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lb.pb-c.h"
#include "lb_err.h"
#include "lb_log.h"
#include "lb_map.h"
#include "tls.h"

#define MAX_SNAPSHOT_BYTES (256u << 20)

static uint32_t or_default(uint32_t v, uint32_t def)
{
    return v != 0 ? v : def;
}

/* Parses an IPv4/IPv6 literal with <port> into <ss>. */
static bool parse_addr(const char *text, uint16_t port, struct sockaddr_storage *ss, socklen_t *len)
{
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, text, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons(port);
        *len = sizeof(*in4);
        return true;
    }
    if (inet_pton(AF_INET6, text, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(port);
        *len = sizeof(*in6);
        return true;
    }
    return false;
}

/* --bind-address: where this host's wildcard frontends listen (see
 * snapshot_bind_address()); set once before any snapshot is decoded. */
static struct sockaddr_storage bind_override;
static bool bind_override_set;

int snapshot_bind_address(const char *addr, struct lb_err *err)
{
    socklen_t len;
    if (!parse_addr(addr, 0, &bind_override, &len))
        return lb_err_set(err, LB_EINVAL, 0, "--bind-address: \"%s\" is not an IP address", addr);
    bind_override_set = true;
    return LB_OK;
}

/* A wildcard frontend address of the override's family takes the override's
 * address; the port stays. */
static void apply_bind_override(struct sockaddr_storage *ss)
{
    if (!bind_override_set || ss->ss_family != bind_override.ss_family)
        return;
    if (ss->ss_family == AF_INET) {
        struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
        if (in4->sin_addr.s_addr == htonl(INADDR_ANY))
            in4->sin_addr = ((const struct sockaddr_in *)&bind_override)->sin_addr;
    } else {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
        if (IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr))
            in6->sin6_addr = ((const struct sockaddr_in6 *)&bind_override)->sin6_addr;
    }
}

static void format_host_port(char *dst, size_t cap, const struct sockaddr_storage *ss)
{
    char ip[INET6_ADDRSTRLEN];
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
        snprintf(dst, cap, "[%s]:%u", ip, ntohs(in6->sin6_port));
    } else {
        const struct sockaddr_in *in4 = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &in4->sin_addr, ip, sizeof(ip));
        snprintf(dst, cap, "%s:%u", ip, ntohs(in4->sin_port));
    }
}

/* The sources a frontend takes PROXY headers from. */
static int build_proxy_from(struct snap_frontend *sf, const Lb__V1__Frontend *f, size_t i,
                            struct lb_err *err)
{
    if (f->n_proxy_from == 0)
        return LB_OK;
    if (f->n_proxy_from > SNAP_MAX_PROXY_FROM)
        return lb_err_set(err, LB_EINVAL, 0, "frontends[%zu].proxy_from: %zu entries (at most %d)",
                          i, f->n_proxy_from, SNAP_MAX_PROXY_FROM);
    sf->proxy_from = calloc(f->n_proxy_from, sizeof(*sf->proxy_from));
    if (sf->proxy_from == NULL)
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory decoding the snapshot");
    sf->n_proxy_from = (uint32_t)f->n_proxy_from;
    for (size_t k = 0; k < f->n_proxy_from; k++) {
        const char *c = f->proxy_from[k];
        if (c == NULL || !limiter_cidr_parse(c, &sf->proxy_from[k]))
            return lb_err_set(err, LB_EINVAL, 0,
                              "frontends[%zu].proxy_from[%zu]: \"%.64s\" is not a CIDR", i, k,
                              c ? c : "");
    }
    return LB_OK;
}

static bool id_is_valid(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n >= SNAP_MAX_ID)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)id[i];
        if (ch <= 0x20 || ch >= 0x7f || ch == '"' || ch == '\\')
            return false;
    }
    return true;
}

/* The frontend's HTTP/2 settings, defaults filled in. */
static int build_http2(struct snap_frontend *sf, const Lb__V1__Frontend *f, size_t i,
                       struct lb_err *err)
{
    sf->http2 = f->http2 && f->tls != NULL;
    sf->http2_cleartext = f->http2_cleartext && f->tls == NULL;
    sf->h2_max_streams = or_default(f->http2_max_streams, 100);
    sf->h2_window = or_default(f->http2_window, 65535);
    sf->h2_max_header_list = or_default(f->http2_max_header_list, 32768);
    if (sf->h2_max_streams > 1000)
        return lb_err_set(err, LB_EINVAL, 0,
                          "frontends[%zu].http2_max_streams: %u is out of range (1..1000)", i,
                          sf->h2_max_streams);
    if (sf->h2_window < 16384 || sf->h2_window > 16777216)
        return lb_err_set(err, LB_EINVAL, 0,
                          "frontends[%zu].http2_window: %u is out of range (16384..16777216)", i,
                          sf->h2_window);
    if (sf->h2_max_header_list < 1024 || sf->h2_max_header_list > 1048576)
        return lb_err_set(err, LB_EINVAL, 0,
                          "frontends[%zu].http2_max_header_list: %u is out of range "
                          "(1024..1048576)",
                          i, sf->h2_max_header_list);
    return LB_OK;
}

static int build_frontends(struct snap *s, const Lb__V1__Snapshot *pb, struct lb_err *err)
{
    if (pb->n_frontends == 0)
        return lb_err_set(err, LB_EINVAL, 0, "frontends: at least one frontend is required");
    if (pb->n_frontends > SNAP_MAX_FRONTENDS)
        return lb_err_set(err, LB_EINVAL, 0, "frontends: %zu frontends, at most %d",
                          pb->n_frontends, SNAP_MAX_FRONTENDS);
    s->frontends = calloc(pb->n_frontends, sizeof(*s->frontends));
    if (s->frontends == NULL)
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory decoding the snapshot");
    s->n_frontends = (uint32_t)pb->n_frontends;
    for (size_t i = 0; i < pb->n_frontends; i++) {
        const Lb__V1__Frontend *f = pb->frontends[i];
        struct snap_frontend *sf = &s->frontends[i];
        if (f->name == NULL || !id_is_valid(f->name))
            return lb_err_set(err, LB_EINVAL, 0,
                              "frontends[%zu].name: must be 1..%d printable characters", i,
                              SNAP_MAX_ID - 1);
        if (f->port == 0 || f->port > 65535)
            return lb_err_set(err, LB_EINVAL, 0,
                              "frontends[%zu].port: %u is out of range (1..65535)", i, f->port);
        const char *bind = (f->bind_address && f->bind_address[0]) ? f->bind_address : "0.0.0.0";
        if (!parse_addr(bind, (uint16_t)f->port, &sf->addr, &sf->addrlen))
            return lb_err_set(err, LB_EINVAL, 0,
                              "frontends[%zu].bind_address: \"%s\" is not an IP address", i, bind);
        apply_bind_override(&sf->addr);
        sf->name = f->name;
        sf->port = (uint16_t)f->port;
        sf->tls = f->tls != NULL;
        format_host_port(sf->key, sizeof(sf->key), &sf->addr);
        if (build_proxy_from(sf, f, i, err) != LB_OK)
            return err->code;
        if (build_http2(sf, f, i, err) != LB_OK)
            return err->code;
        for (size_t j = 0; j < i; j++) {
            if (strcmp(s->frontends[j].name, sf->name) == 0)
                return lb_err_set(err, LB_EINVAL, 0, "frontends[%zu].name: \"%s\" is used twice", i,
                                  sf->name);
            if (strcmp(s->frontends[j].key, sf->key) == 0)
                return lb_err_set(err, LB_EINVAL, 0, "frontends[%zu]: %s is bound twice", i,
                                  sf->key);
        }
    }
    return LB_OK;
}

/* Backend ids are found by hashing, so a 10,000-backend snapshot is checked in
 * linear time. */
static int check_unique_ids(const struct snap *s, struct lb_err *err)
{
    struct lb_map ids;
    lb_map_init(&ids, NULL, NULL);
    if (!lb_map_reserve(&ids, s->n_backends))
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory decoding the snapshot");
    int rc = LB_OK;
    for (uint32_t i = 0; i < s->n_backends && rc == LB_OK; i++) {
        const struct snap_backend *b = &s->backends[i];
        if (lb_map_add(&ids, b->id, (void *)b, NULL) == LB_MAP_EXISTS)
            rc = lb_err_set(err, LB_EINVAL, 0, "backends[%u].id: \"%s\" is used twice", i, b->id);
    }
    lb_map_deinit(&ids);
    return rc;
}

static int build_backends(struct snap *s, const Lb__V1__Snapshot *pb, struct lb_err *err)
{
    if (pb->n_backends > SNAP_MAX_BACKENDS)
        return lb_err_set(err, LB_EINVAL, 0, "backends: %zu backends, at most %d", pb->n_backends,
                          SNAP_MAX_BACKENDS);
    if (pb->n_backends == 0)
        return LB_OK;
    s->backends = calloc(pb->n_backends, sizeof(*s->backends));
    if (s->backends == NULL)
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory decoding the snapshot");
    s->n_backends = (uint32_t)pb->n_backends;
    for (size_t i = 0; i < pb->n_backends; i++) {
        const Lb__V1__Backend *b = pb->backends[i];
        struct snap_backend *sb = &s->backends[i];
        if (b->id == NULL || !id_is_valid(b->id))
            return lb_err_set(err, LB_EINVAL, 0,
                              "backends[%zu].id: must be 1..%d printable characters without spaces",
                              i, SNAP_MAX_ID - 1);
        if (b->port == 0 || b->port > 65535)
            return lb_err_set(err, LB_EINVAL, 0,
                              "backends[%zu].port: %u is out of range (1..65535)", i, b->port);
        if (b->host == NULL || !parse_addr(b->host, (uint16_t)b->port, &sb->addr, &sb->addrlen))
            return lb_err_set(err, LB_EINVAL, 0,
                              "backends[%zu].host: \"%s\" is not an IP address (names are "
                              "resolved by the control plane)",
                              i, b->host ? b->host : "");
        uint32_t weight = or_default(b->weight, 1);
        if (weight > 1000)
            return lb_err_set(err, LB_EINVAL, 0,
                              "backends[%zu].weight: %u is out of range (1..1000)", i, weight);
        if (b->admin_state > LB__V1__ADMIN_STATE__ADMIN_DISABLED)
            return lb_err_set(err, LB_EINVAL, 0, "backends[%zu].admin_state: unknown value %d", i,
                              (int)b->admin_state);
        if (b->health > LB__V1__HEALTH__HEALTH_DOWN)
            return lb_err_set(err, LB_EINVAL, 0, "backends[%zu].health: unknown value %d", i,
                              (int)b->health);
        sb->tls = b->tls;
        sb->sni = b->sni ? b->sni : "";
        if (b->tls) {
            /* the certificate must name what the operator wrote: the SNI
             * name when there is one, else the address itself */
            if (sb->sni[0] != '\0')
                snprintf(sb->verify_name, sizeof(sb->verify_name), "%s", sb->sni);
            else
                snprintf(sb->verify_name, sizeof(sb->verify_name), "%s", b->host);
            if (strlen(sb->sni) >= sizeof(sb->verify_name))
                return lb_err_set(err, LB_EINVAL, 0, "backends[%zu].sni: longer than 255 bytes", i);
        }
        sb->id = b->id;
        sb->url = (b->url && b->url[0]) ? b->url : b->id;
        sb->weight = weight;
        sb->admin = (uint8_t)b->admin_state;
        sb->health = (uint8_t)b->health;
        sb->max_connections = b->max_connections;
        sb->max_queue = or_default(b->max_queue, CONNQ_DEFAULT_MAX_QUEUE);
        if (b->send_proxy > 2)
            return lb_err_set(err, LB_EINVAL, 0,
                              "backends[%zu].send_proxy: %u is not 0 (none), 1 or 2", i,
                              b->send_proxy);
        sb->send_proxy = (uint8_t)b->send_proxy;
        if (sb->max_connections > 1000000 || sb->max_queue > 100000)
            return lb_err_set(err, LB_EINVAL, 0,
                              "backends[%zu]: max_connections %u or max_queue %u is out of range "
                              "(0..1000000, 1..100000)",
                              i, sb->max_connections, sb->max_queue);
        format_host_port(sb->host_port, sizeof(sb->host_port), &sb->addr);
    }
    return check_unique_ids(s, err);
}

/* The circuit breaker and retry settings, validated. */
static int build_resilience(struct snap *s, const Lb__V1__Snapshot *pb, struct lb_err *err)
{
    const Lb__V1__CircuitBreaker *cb = pb->circuit_breaker;
    s->breaker.enabled = cb != NULL && cb->enabled;
    s->breaker.threshold = or_default(cb ? cb->threshold : 0, 5);
    s->breaker.timeout_ms = or_default(cb ? cb->timeout_ms : 0, 30000);
    s->breaker.max_half_open = or_default(cb ? cb->max_half_open : 0, 3);
    s->breaker.max_timeout_ms = or_default(cb ? cb->max_timeout_ms : 0, 300000);
    s->breaker_ignore_5xx = cb != NULL && cb->ignore_5xx;
    if (s->breaker.threshold > 10000)
        return lb_err_set(err, LB_EINVAL, 0,
                          "circuit_breaker.threshold: %u is out of range (1..10000)",
                          s->breaker.threshold);
    if (s->breaker.max_half_open > 10000)
        return lb_err_set(err, LB_EINVAL, 0,
                          "circuit_breaker.max_half_open: %u is out of range (1..10000)",
                          s->breaker.max_half_open);
    if (s->breaker.max_timeout_ms < s->breaker.timeout_ms)
        s->breaker.max_timeout_ms = s->breaker.timeout_ms;

    const Lb__V1__Retries *rt = pb->retries;
    bool retries_off = rt != NULL && rt->disabled;
    s->max_retries = retries_off ? 1 : or_default(rt ? rt->max_retries : 0, 2);
    s->retry_5xx = !retries_off;
    if (s->max_retries > 5)
        return lb_err_set(err, LB_EINVAL, 0, "retries.max_retries: %u is out of range (0..5)",
                          s->max_retries);
    s->retry_budget_percent = or_default(rt ? rt->budget_percent : 0, 20);
    s->retry_budget_min = or_default(rt ? rt->budget_min : 0, 3);
    s->backoff_base_ms = or_default(rt ? rt->backoff_base_ms : 0, 25);
    s->backoff_cap_ms = or_default(rt ? rt->backoff_cap_ms : 0, 250);
    if (s->retry_budget_percent > 100)
        return lb_err_set(err, LB_EINVAL, 0, "retries.budget_percent: %u is out of range (0..100)",
                          s->retry_budget_percent);
    if (s->backoff_cap_ms < s->backoff_base_ms)
        s->backoff_cap_ms = s->backoff_base_ms;
    return LB_OK;
}

static int build_settings(struct snap *s, const Lb__V1__Snapshot *pb, struct lb_err *err)
{
    const Lb__V1__Timeouts *t = pb->timeouts;
    s->timeouts.client_header = or_default(t ? t->client_header_ms : 0, 10000);
    s->timeouts.client_body = or_default(t ? t->client_body_ms : 0, 30000);
    s->timeouts.keepalive = or_default(t ? t->keepalive_ms : 0, 60000);
    s->timeouts.upstream_connect = or_default(t ? t->upstream_connect_ms : 0, 3000);
    s->timeouts.upstream_header = or_default(t ? t->upstream_header_ms : 0, 30000);
    s->timeouts.upstream_idle = or_default(t ? t->upstream_idle_ms : 0, 60000);
    s->timeouts.drain = or_default(t ? t->drain_ms : 0, 30000);
    s->timeouts.pool_idle = or_default(t ? t->pool_idle_ms : 0, 30000);
    s->timeouts.queue = or_default(t ? t->queue_ms : 0, CONNQ_DEFAULT_TIMEOUT_MS);
    s->timeouts.tunnel_idle = or_default(t ? t->tunnel_idle_ms : 0, 3600000);

    const Lb__V1__Ejection *ej = pb->ejection;
    s->eject.enabled = ej == NULL || !ej->disabled;
    s->eject.probe_base_ms = or_default(ej ? ej->probe_base_ms : 0, EJECT_DEFAULT_PROBE_BASE_MS);
    s->eject.probe_max_ms = or_default(ej ? ej->probe_max_ms : 0, EJECT_DEFAULT_PROBE_MAX_MS);
    if (s->eject.probe_max_ms < s->eject.probe_base_ms)
        s->eject.probe_max_ms = s->eject.probe_base_ms;

    const Lb__V1__Limits *l = pb->limits;
    s->limits.max_request_line = or_default(l ? l->max_request_line : 0, 8192);
    s->limits.max_header_bytes = or_default(l ? l->max_header_bytes : 0, 32768);
    s->limits.max_headers = or_default(l ? l->max_headers : 0, 100);
    s->max_connections = or_default(l ? l->max_connections : 0, 10000);
    s->pool_max_idle = or_default(l ? l->pool_max_idle : 0, 64);
    s->max_tunnels = or_default(l ? l->max_tunnels : 0, 10000);
    if (s->limits.max_request_line < 64 || s->limits.max_request_line > (1u << 20))
        return lb_err_set(err, LB_EINVAL, 0,
                          "limits.max_request_line: %u is out of range (64..1048576)",
                          s->limits.max_request_line);
    if (s->limits.max_header_bytes < s->limits.max_request_line ||
        s->limits.max_header_bytes > (1u << 20))
        return lb_err_set(err, LB_EINVAL, 0,
                          "limits.max_header_bytes: %u must be between max_request_line (%u) and "
                          "1048576",
                          s->limits.max_header_bytes, s->limits.max_request_line);
    if (s->limits.max_headers > 10000)
        return lb_err_set(err, LB_EINVAL, 0, "limits.max_headers: %u is out of range (1..10000)",
                          s->limits.max_headers);

    s->algorithm = SNAP_ALGO_ROUND_ROBIN;
    if (pb->balancing != NULL) {
        if (pb->balancing->algorithm > LB__V1__ALGORITHM__LEAST_REQUEST)
            return lb_err_set(err, LB_EINVAL, 0, "balancing.algorithm: unknown value %d",
                              (int)pb->balancing->algorithm);
        s->algorithm = (uint8_t)pb->balancing->algorithm;
        s->slow_start_ms = pb->balancing->slow_start_ms;
        if (s->slow_start_ms > 3600000)
            return lb_err_set(err, LB_EINVAL, 0,
                              "balancing.slow_start_ms: %u is out of range (0..3600000)",
                              s->slow_start_ms);
    }
    s->fail_open = pb->healthcheck == NULL || pb->healthcheck->fail_open;

    int rc = build_resilience(s, pb, err);
    if (rc != LB_OK)
        return rc;

    s->log_level = LB_LOG_INFO;
    s->access_log = true;
    if (pb->logging != NULL) {
        switch (pb->logging->level) {
        case LB__V1__LOG_LEVEL__LOG_INFO:
            s->log_level = LB_LOG_INFO;
            break;
        case LB__V1__LOG_LEVEL__LOG_DEBUG:
            s->log_level = LB_LOG_DEBUG;
            break;
        case LB__V1__LOG_LEVEL__LOG_WARN:
            s->log_level = LB_LOG_WARN;
            break;
        case LB__V1__LOG_LEVEL__LOG_ERROR:
            s->log_level = LB_LOG_ERROR;
            break;
        default:
            return lb_err_set(err, LB_EINVAL, 0, "logging.level: unknown value %d",
                              (int)pb->logging->level);
        }
        s->access_log = !pb->logging->access_log_off;
    }

    if (pb->metrics != NULL && pb->metrics->enabled) {
        const Lb__V1__Metrics *m = pb->metrics;
        if (m->port == 0 || m->port > 65535)
            return lb_err_set(err, LB_EINVAL, 0, "metrics.port: %u is out of range (1..65535)",
                              m->port);
        const char *bind = (m->bind_address && m->bind_address[0]) ? m->bind_address : "127.0.0.1";
        if (!parse_addr(bind, (uint16_t)m->port, &s->metrics_addr, &s->metrics_addrlen))
            return lb_err_set(err, LB_EINVAL, 0,
                              "metrics.bind_address: \"%s\" is not an IP address", bind);
        s->metrics_enabled = true;
        for (uint32_t i = 0; i < s->n_frontends; i++) {
            if (s->frontends[i].port == m->port)
                return lb_err_set(err, LB_EINVAL, 0, "metrics.port: %u is also frontends[%u].port",
                                  m->port, i);
        }
    }
    return limiter_config_from_pb(&s->rl_cfg, pb->ratelimit, err);
}

/* Two Tls messages are the same settings when they pack to the same bytes. */
static bool tls_same(const Lb__V1__Tls *a, const Lb__V1__Tls *b)
{
    size_t la = lb__v1__tls__get_packed_size(a), lb = lb__v1__tls__get_packed_size(b);
    if (la != lb)
        return false;
    uint8_t *pa = malloc(la ? la : 1), *pb = malloc(lb ? lb : 1);
    bool same = pa != NULL && pb != NULL;
    if (same) {
        lb__v1__tls__pack(a, pa);
        lb__v1__tls__pack(b, pb);
        same = memcmp(pa, pb, la) == 0;
    }
    free(pa);
    free(pb);
    return same;
}

/* Client contexts for https:// backends, kept from <old> for the same id and CA. */
static int bind_backend_tls(struct snap *s, const struct snap *old, struct lb_err *err)
{
    bool any = false;
    for (uint32_t i = 0; i < s->n_backends; i++)
        any = any || s->backends[i].tls;
    if (!any)
        return LB_OK;
    s->be_tls = calloc(s->n_backends, sizeof(*s->be_tls));
    if (s->be_tls == NULL)
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory for backend TLS contexts");
    for (uint32_t i = 0; i < s->n_backends; i++) {
        if (!s->backends[i].tls)
            continue;
        const ProtobufCBinaryData *ca = &s->pb->backends[i]->ca_pem;
        int j = old != NULL && old->be_tls != NULL ? snap_backend_find(old, s->backends[i].id) : -1;
        if (j >= 0 && old->be_tls[j] != NULL) {
            const ProtobufCBinaryData *oca = &old->pb->backends[j]->ca_pem;
            if (oca->len == ca->len &&
                (ca->len == 0 || memcmp(oca->data, ca->data, ca->len) == 0)) {
                s->be_tls[i] = tls_client_ctx_ref(old->be_tls[j]);
                continue;
            }
        }
        struct lb_err e = {0};
        s->be_tls[i] = tls_client_ctx_new(ca->data, ca->len, &e);
        if (s->be_tls[i] == NULL)
            return lb_err_set(err, e.code ? e.code : LB_EINVAL, 0, "backends[%u].%s", i, e.msg);
    }
    return LB_OK;
}

int snapshot_bind_tls(struct snap *s, const struct snap *old, struct tls_tickets *tickets,
                      struct lb_err *err)
{
    int brc = bind_backend_tls(s, old, err);
    if (brc != LB_OK)
        return brc;
    bool any = false;
    for (uint32_t i = 0; i < s->n_frontends; i++)
        any = any || s->frontends[i].tls;
    if (!any)
        return LB_OK;
    s->tls = calloc(s->n_frontends, sizeof(*s->tls));
    if (s->tls == NULL)
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory for TLS contexts");
    for (uint32_t i = 0; i < s->n_frontends; i++) {
        if (!s->frontends[i].tls)
            continue;
        const Lb__V1__Tls *cfg = s->pb->frontends[i]->tls;
        /* the same frontend before: its context when nothing changed, else
         * a new one that carries on its counters */
        struct tls_ctx *prev = NULL;
        const Lb__V1__Tls *prev_cfg = NULL;
        for (uint32_t j = 0; old != NULL && old->tls != NULL && j < old->n_frontends; j++) {
            if (old->tls[j] != NULL && strcmp(old->frontends[j].name, s->frontends[i].name) == 0) {
                prev = old->tls[j];
                prev_cfg = old->pb->frontends[j]->tls;
                break;
            }
        }
        if (prev != NULL && tls_same(prev_cfg, cfg) &&
            tls_ctx_alpn_h2(prev) == s->frontends[i].http2) {
            s->tls[i] = tls_ctx_ref(prev);
            continue;
        }
        struct lb_err e = {0};
        s->tls[i] = tls_ctx_new(cfg, tickets, &e);
        if (s->tls[i] == NULL)
            return lb_err_set(err, e.code ? e.code : LB_EINVAL, 0, "frontends[%u].%s", i, e.msg);
        tls_ctx_set_alpn_h2(s->tls[i], s->frontends[i].http2);
        if (prev != NULL)
            tls_ctx_continue_counters(s->tls[i], prev);
    }
    return LB_OK;
}

static void snap_free(struct snap *s)
{
    if (s == NULL)
        return;
    for (uint32_t i = 0; s->tls != NULL && i < s->n_frontends; i++) {
        if (s->tls[i] != NULL)
            tls_ctx_unref(s->tls[i]);
    }
    free(s->tls);
    for (uint32_t i = 0; s->be_tls != NULL && i < s->n_backends; i++)
        tls_client_ctx_unref(s->be_tls[i]);
    free(s->be_tls);
    fshared_binding_release(s->fshared);
    for (uint32_t i = 0; s->frontends != NULL && i < s->n_frontends; i++)
        free(s->frontends[i].proxy_from);
    free(s->frontends);
    free(s->backends);
    if (s->pb != NULL)
        lb__v1__snapshot__free_unpacked(s->pb, NULL);
    free(s);
}

int snapshot_decode(const uint8_t *buf, size_t len, struct snap **out, struct lb_err *err)
{
    *out = NULL;
    Lb__V1__Snapshot *pb = lb__v1__snapshot__unpack(NULL, len, buf);
    if (pb == NULL)
        return lb_err_set(err, LB_EINVAL, 0,
                          "snapshot: %zu bytes are not a valid lb.v1.Snapshot message", len);
    struct snap *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        lb__v1__snapshot__free_unpacked(pb, NULL);
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory decoding the snapshot");
    }
    s->pb = pb;
    s->version = pb->config_version;
    s->generation = pb->generation;
    lb_ref_init(&s->ref);
    int rc = build_frontends(s, pb, err);
    if (rc == LB_OK)
        rc = build_backends(s, pb, err);
    if (rc == LB_OK)
        rc = build_settings(s, pb, err);
    if (rc != LB_OK) {
        snap_free(s);
        return rc;
    }
    *out = s;
    return LB_OK;
}

int snapshot_load_file(const char *path, struct snap **out, struct lb_err *err)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd == -1)
        return lb_err_set(err, LB_ESYS, errno, "cannot open snapshot %s", path);
    struct stat st;
    if (fstat(fd, &st) == -1) {
        int e = errno;
        close(fd);
        return lb_err_set(err, LB_ESYS, e, "cannot stat snapshot %s", path);
    }
    if (st.st_size <= 0 || (uint64_t)st.st_size > MAX_SNAPSHOT_BYTES) {
        close(fd);
        return lb_err_set(err, LB_EINVAL, 0, "snapshot %s: size %lld is out of range", path,
                          (long long)st.st_size);
    }
    size_t size = (size_t)st.st_size;
    uint8_t *buf = malloc(size);
    if (buf == NULL) {
        close(fd);
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory reading snapshot %s", path);
    }
    size_t got = 0;
    while (got < size) {
        ssize_t n = read(fd, buf + got, size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int e = n < 0 ? errno : 0;
            free(buf);
            close(fd);
            return lb_err_set(err, e ? LB_ESYS : LB_EINVAL, e, "cannot read snapshot %s", path);
        }
        got += (size_t)n;
    }
    close(fd);
    int rc = snapshot_decode(buf, size, out, err);
    free(buf);
    return rc;
}

struct snap *snap_ref(struct snap *s)
{
    if (s != NULL)
        lb_ref_get(&s->ref);
    return s;
}

void snap_unref(struct snap *s)
{
    if (s != NULL && lb_ref_put(&s->ref))
        snap_free(s);
}

int snap_backend_find(const struct snap *s, const char *id)
{
    for (uint32_t i = 0; i < s->n_backends; i++) {
        if (strcmp(s->backends[i].id, id) == 0)
            return (int)i;
    }
    return -1;
}

bool snap_backend_is_eligible(const struct snap_backend *b)
{
    return b->admin == SNAP_ADMIN_ACTIVE && b->health != SNAP_HEALTH_DOWN;
}
