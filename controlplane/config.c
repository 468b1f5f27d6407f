/* controlplane/config.c: YAML/JSON -> node tree -> validated struct config, and
 * back. Both parsers produce the same small tree so that one decoder holds
 * every rule; the exporters and the diff work from the canonical tree built
 * from a struct config, so that what is compared is exactly what is stored. */
#include "config.h"

#include "lb_err.h"
#include "tlscheck.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yaml.h>

#define MAX_DEPTH 32
#define MAX_NODES 100000
#define MAX_ID    64
/* The data plane's limit (LIMITER_MAX_TRUSTED). */
#define CONFIG_MAX_TRUSTED_PROXIES 64

/* ---- node tree ---------------------------------------------------------- */

enum cn_kind {
    CN_SCALAR,
    CN_MAP,
    CN_SEQ,
};

/* Scalar types: YAML plain scalars stay untyped (CT_PLAIN) until a field
 * decides what it needs; quoted YAML and JSON strings are CT_STRING. */
enum cn_type {
    CT_PLAIN,
    CT_STRING,
    CT_INT,
    CT_REAL,
    CT_BOOL,
    CT_NULL,
};

struct cnode {
    enum cn_kind kind;
    enum cn_type type;
    char *s;              /* scalar text */
    int line, col;        /* 1-based; 0 when the node has no source position */
    struct cnode **items; /* sequence items, or key, value, key, value... */
    size_t n, cap;        /* n counts entries in items[] */
    bool broken;          /* a put() into this mapping failed (no memory) */
};

static void cn_free(struct cnode *n)
{
    if (n == NULL)
        return;
    for (size_t i = 0; i < n->n; i++)
        cn_free(n->items[i]);
    free(n->items);
    free(n->s);
    free(n);
}

static struct cnode *cn_new(enum cn_kind kind)
{
    struct cnode *n = calloc(1, sizeof(*n));
    if (n != NULL)
        n->kind = kind;
    return n;
}

static struct cnode *cn_scalar(enum cn_type type, const char *s)
{
    struct cnode *n = cn_new(CN_SCALAR);
    if (n == NULL)
        return NULL;
    n->type = type;
    n->s = strdup(s);
    if (n->s == NULL) {
        free(n);
        return NULL;
    }
    return n;
}

/* Appends <child> (taken, even on failure). */
static int cn_push(struct cnode *n, struct cnode *child)
{
    if (child == NULL)
        return -1;
    if (n->n == n->cap) {
        size_t cap = n->cap ? n->cap * 2 : 8;
        struct cnode **items = realloc(n->items, cap * sizeof(*items));
        if (items == NULL) {
            cn_free(child);
            return -1;
        }
        n->items = items;
        n->cap = cap;
    }
    n->items[n->n++] = child;
    return 0;
}

static size_t cn_map_len(const struct cnode *n)
{
    return n->n / 2;
}

static const struct cnode *cn_key(const struct cnode *n, size_t i)
{
    return n->items[2 * i];
}

static const struct cnode *cn_val(const struct cnode *n, size_t i)
{
    return n->items[2 * i + 1];
}

static const struct cnode *cn_get(const struct cnode *map, const char *key)
{
    if (map == NULL || map->kind != CN_MAP)
        return NULL;
    for (size_t i = 0; i < cn_map_len(map); i++)
        if (cn_key(map, i)->kind == CN_SCALAR && strcmp(cn_key(map, i)->s, key) == 0)
            return cn_val(map, i);
    return NULL;
}

/* Builders for the canonical tree; a NULL map makes them no-ops so that a
 * chain of calls needs one check at the end. */
static int put(struct cnode *map, const char *key, struct cnode *val)
{
    if (map == NULL) {
        cn_free(val);
        return -1;
    }
    if (val == NULL || cn_push(map, cn_scalar(CT_STRING, key)) != 0) {
        cn_free(val);
        map->broken = true;
        return -1;
    }
    if (cn_push(map, val) != 0) {
        map->broken = true;
        return -1;
    }
    return 0;
}

static int put_str(struct cnode *map, const char *key, const char *v)
{
    return put(map, key, cn_scalar(CT_STRING, v ? v : ""));
}

static int put_uint(struct cnode *map, const char *key, uint64_t v)
{
    char buf[32];
    snprintf(buf, sizeof(buf), "%llu", (unsigned long long)v);
    return put(map, key, cn_scalar(CT_INT, buf));
}

static int put_bool(struct cnode *map, const char *key, bool v)
{
    return put(map, key, cn_scalar(CT_BOOL, v ? "true" : "false"));
}

static int put_dur(struct cnode *map, const char *key, uint32_t ms)
{
    char buf[32];
    return put(map, key, cn_scalar(CT_STRING, config_duration_format(ms, buf, sizeof(buf))));
}

static int put_strv(struct cnode *map, const char *key, char *const *v, size_t n)
{
    struct cnode *seq = cn_new(CN_SEQ);
    for (size_t i = 0; seq && i < n; i++)
        if (cn_push(seq, cn_scalar(CT_STRING, v[i] ? v[i] : "")) != 0) {
            cn_free(seq);
            seq = NULL;
        }
    return put(map, key, seq);
}

/* ---- names ---------------------------------------------------------------- */

static const char *const backend_states[] = {"active", "draining", "disabled", NULL};
static const char *const hc_types[] = {"http", "tcp", NULL};
static const char *const rl_algorithms[] = {"token_bucket", "sliding_window", NULL};
static const char *const bal_algorithms[] = {"round_robin", "weighted_round_robin", "least_request",
                                             NULL};
static const char *const weights_names[] = {"static", "dynamic", NULL};
static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};
static const char *const log_formats[] = {"json", NULL};
static const char *const tls_versions[] = {"TLSv1.2", "TLSv1.3", NULL};

const char *config_backend_state_name(enum config_backend_state s)
{
    return (unsigned)s < 3 ? backend_states[s] : "active";
}

const char *config_balancing_algorithm_name(enum config_balancing_algorithm a)
{
    return (unsigned)a < 3 ? bal_algorithms[a] : "weighted_round_robin";
}

/* ---- durations ------------------------------------------------------------ */

const char *config_weights_name(enum config_weights w)
{
    return (unsigned)w < 2 ? weights_names[w] : "?";
}

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

/* ---- defaults, free, dup -------------------------------------------------- */

static char *dup_or(const char *s, bool *ok)
{
    char *d = strdup(s ? s : "");
    if (d == NULL)
        *ok = false;
    return d;
}

static void free_strv(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* Copies the <n> strings of <src> into *<dst> (NULL when n is 0) and counts
 * them in *<dn>; clears *<ok> on no memory. */
static void dup_strv(char *const *src, size_t n, char ***dst, size_t *dn, bool *ok)
{
    *dst = NULL;
    *dn = 0;
    if (n == 0)
        return;
    *dst = calloc(n, sizeof(**dst));
    if (*dst == NULL) {
        *ok = false;
        return;
    }
    for (size_t i = 0; i < n; i++, (*dn)++)
        (*dst)[i] = dup_or(src[i], ok);
}

static void free_certificate(struct config_certificate *c)
{
    free(c->cert_file);
    free(c->key_file);
    for (size_t i = 0; i < c->n_sni; i++)
        free(c->sni[i]);
    free(c->sni);
}

static void free_contents(struct config *cfg)
{
    for (size_t i = 0; i < cfg->n_frontends; i++) {
        free(cfg->frontends[i].name);
        free(cfg->frontends[i].address);
    }
    free(cfg->frontends);
    for (size_t i = 0; i < cfg->n_backends; i++) {
        free(cfg->backends[i].id);
        free(cfg->backends[i].url);
        free(cfg->backends[i].host);
        free(cfg->backends[i].ca_file);
        free(cfg->backends[i].sni);
    }
    free(cfg->backends);
    free(cfg->healthcheck.path);
    free(cfg->healthcheck.host);
    struct config_ssl *ssl = &cfg->ssl;
    free(ssl->cert_file);
    free(ssl->key_file);
    free(ssl->ca_file);
    free(ssl->crl_file);
    free(ssl->min_version);
    free(ssl->ciphers);
    free(ssl->ciphersuites);
    free(ssl->groups);
    for (size_t i = 0; i < ssl->n_certificates; i++)
        free_certificate(&ssl->certificates[i]);
    free(ssl->certificates);
    free_strv(ssl->allowed_cn, ssl->n_allowed_cn);
    free_strv(ssl->allowed_san_dns, ssl->n_allowed_san_dns);
    free_strv(ssl->allowed_san_uri, ssl->n_allowed_san_uri);
    free_strv(ssl->spki_pins, ssl->n_spki_pins);
    for (size_t i = 0; i < cfg->ratelimit.n_trusted_proxies; i++)
        free(cfg->ratelimit.trusted_proxies[i]);
    free(cfg->ratelimit.trusted_proxies);
    free(cfg->logging.format);
    free(cfg->metrics.address);
}

void config_free(struct config *cfg)
{
    if (cfg == NULL)
        return;
    free_contents(cfg);
    free(cfg);
}

struct config *config_new_default(void)
{
    struct config *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    bool ok = true;
    c->healthcheck = (struct config_healthcheck){
        .interval_ms = 10000,
        .timeout_ms = 2000,
        .path = dup_or("/health", &ok),
        .rise = 2,
        .fall = 3,
        .type = CONFIG_HC_HTTP,
        .expected_status = 0,
        .host = dup_or("", &ok),
        .fail_open = true,
    };
    c->ssl = (struct config_ssl){
        .cert_file = dup_or("", &ok),
        .key_file = dup_or("", &ok),
        .ca_file = dup_or("", &ok),
        .crl_file = dup_or("", &ok),
        .min_version = dup_or("TLSv1.2", &ok),
        .ciphers = dup_or("", &ok),
        .ciphersuites = dup_or("", &ok),
        .groups = dup_or("", &ok),
        .ticket_rotation_ms = 3600000,
    };
    c->ratelimit = (struct config_ratelimit){
        .algorithm = CONFIG_RL_TOKEN_BUCKET,
        .per_client = true,
        .ipv4_prefix = 32,
        .ipv6_prefix = 128,
        .max_keys = 100000,
        .headers_on_allowed = true,
    };
    c->circuitbreaker = (struct config_circuitbreaker){
        .threshold = 5,
        .timeout_ms = 30000,
        .max_half_open = 3,
        .max_timeout_ms = 300000,
    };
    c->retries = (struct config_retries){
        .enabled = true,
        .max = 2,
        .budget_percent = 20,
        .budget_min = 3,
        .backoff_base_ms = 25,
        .backoff_cap_ms = 250,
    };
    c->ejection = (struct config_ejection){
        .enabled = true,
        .probe_interval_ms = 1000,
        .max_probe_interval_ms = 30000,
    };
    c->balancing.algorithm = CONFIG_BAL_WEIGHTED_ROUND_ROBIN;
    c->balancing.slow_start_ms = 30000;
    c->timeouts = (struct config_timeouts){
        .client_header_ms = 10000,
        .client_body_ms = 30000,
        .keep_alive_ms = 60000,
        .upstream_connect_ms = 3000,
        .upstream_header_ms = 30000,
        .upstream_idle_ms = 60000,
        .drain_ms = 30000,
        .queue_ms = 5000,
    };
    c->limits = (struct config_limits){
        .max_request_line = 8192,
        .max_header_bytes = 32768,
        .max_headers = 100,
        .max_connections = 10000,
    };
    c->logging = (struct config_logging){
        .level = CONFIG_LOG_INFO,
        .format = dup_or("json", &ok),
        .access_log = true,
    };
    c->metrics = (struct config_metrics){.address = dup_or("127.0.0.1", &ok), .port = 9090};
    if (!ok) {
        config_free(c);
        return NULL;
    }
    return c;
}

struct config *config_dup(const struct config *src)
{
    struct config *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    bool ok = true;
    *c = *src;
    c->frontends = NULL;
    c->n_frontends = 0;
    c->backends = NULL;
    c->n_backends = 0;
    c->ssl.certificates = NULL;
    c->ssl.n_certificates = 0;
    c->ratelimit.trusted_proxies = NULL;
    c->ratelimit.n_trusted_proxies = 0;
    c->healthcheck.path = dup_or(src->healthcheck.path, &ok);
    c->healthcheck.host = dup_or(src->healthcheck.host, &ok);
    c->ssl.cert_file = dup_or(src->ssl.cert_file, &ok);
    c->ssl.key_file = dup_or(src->ssl.key_file, &ok);
    c->ssl.ca_file = dup_or(src->ssl.ca_file, &ok);
    c->ssl.crl_file = dup_or(src->ssl.crl_file, &ok);
    c->ssl.min_version = dup_or(src->ssl.min_version, &ok);
    c->ssl.ciphers = dup_or(src->ssl.ciphers, &ok);
    c->ssl.ciphersuites = dup_or(src->ssl.ciphersuites, &ok);
    c->ssl.groups = dup_or(src->ssl.groups, &ok);
    dup_strv(src->ssl.allowed_cn, src->ssl.n_allowed_cn, &c->ssl.allowed_cn, &c->ssl.n_allowed_cn,
             &ok);
    dup_strv(src->ssl.allowed_san_dns, src->ssl.n_allowed_san_dns, &c->ssl.allowed_san_dns,
             &c->ssl.n_allowed_san_dns, &ok);
    dup_strv(src->ssl.allowed_san_uri, src->ssl.n_allowed_san_uri, &c->ssl.allowed_san_uri,
             &c->ssl.n_allowed_san_uri, &ok);
    dup_strv(src->ssl.spki_pins, src->ssl.n_spki_pins, &c->ssl.spki_pins, &c->ssl.n_spki_pins, &ok);
    c->logging.format = dup_or(src->logging.format, &ok);
    c->metrics.address = dup_or(src->metrics.address, &ok);
    if (src->ratelimit.n_trusted_proxies) {
        size_t n = src->ratelimit.n_trusted_proxies;
        c->ratelimit.trusted_proxies = calloc(n, sizeof(*c->ratelimit.trusted_proxies));
        ok = ok && c->ratelimit.trusted_proxies != NULL;
        for (size_t i = 0; c->ratelimit.trusted_proxies && i < n;
             i++, c->ratelimit.n_trusted_proxies++)
            c->ratelimit.trusted_proxies[i] = dup_or(src->ratelimit.trusted_proxies[i], &ok);
    }
    if (src->n_frontends) {
        c->frontends = calloc(src->n_frontends, sizeof(*c->frontends));
        ok = ok && c->frontends != NULL;
        for (size_t i = 0; c->frontends && i < src->n_frontends; i++, c->n_frontends++) {
            c->frontends[i] = src->frontends[i];
            c->frontends[i].name = dup_or(src->frontends[i].name, &ok);
            c->frontends[i].address = dup_or(src->frontends[i].address, &ok);
        }
    }
    if (src->n_backends) {
        c->backends = calloc(src->n_backends, sizeof(*c->backends));
        ok = ok && c->backends != NULL;
        for (size_t i = 0; c->backends && i < src->n_backends; i++, c->n_backends++) {
            c->backends[i] = src->backends[i];
            c->backends[i].id = dup_or(src->backends[i].id, &ok);
            c->backends[i].url = dup_or(src->backends[i].url, &ok);
            c->backends[i].host = dup_or(src->backends[i].host, &ok);
            c->backends[i].ca_file = dup_or(src->backends[i].ca_file, &ok);
            c->backends[i].sni = dup_or(src->backends[i].sni, &ok);
        }
    }
    if (src->ssl.n_certificates) {
        c->ssl.certificates = calloc(src->ssl.n_certificates, sizeof(*c->ssl.certificates));
        ok = ok && c->ssl.certificates != NULL;
        for (size_t i = 0; c->ssl.certificates && i < src->ssl.n_certificates;
             i++, c->ssl.n_certificates++) {
            const struct config_certificate *s = &src->ssl.certificates[i];
            struct config_certificate *d = &c->ssl.certificates[i];
            d->cert_file = dup_or(s->cert_file, &ok);
            d->key_file = dup_or(s->key_file, &ok);
            if (s->n_sni) {
                d->sni = calloc(s->n_sni, sizeof(*d->sni));
                ok = ok && d->sni != NULL;
                for (size_t j = 0; d->sni && j < s->n_sni; j++, d->n_sni++)
                    d->sni[j] = dup_or(s->sni[j], &ok);
            }
        }
    }
    if (!ok) {
        config_free(c);
        return NULL;
    }
    return c;
}

/* ---- decoder: tree -> config, with every validation rule ------------------ */

struct dec {
    const char *name;     /* file name for messages, or NULL (JSON, in memory) */
    const char *base_dir; /* for relative ssl paths; NULL = cwd */
    struct lb_err *err;
    struct config *cfg;
    bool ssl_present;
    bool check_tls; /* read the ssl files and check them as tlscheck does */
    int64_t now_ms; /* for the certificate dates when check_tls */
};

__attribute__((format(printf, 4, 5))) static int derr(struct dec *d, const struct cnode *n,
                                                      const char *path, const char *fmt, ...)
{
    char reason[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    const char *sep = path[0] ? ": " : "";
    if (n != NULL && n->line > 0)
        lb_err_set(d->err, LB_EINVAL, 0, "%s:%d:%d: %s%s%s", d->name ? d->name : "config", n->line,
                   n->col, path, sep, reason);
    else if (d->name != NULL)
        lb_err_set(d->err, LB_EINVAL, 0, "%s: %s%s%s", d->name, path, sep, reason);
    else
        lb_err_set(d->err, LB_EINVAL, 0, "%s%s%s", path, sep, reason);
    return LB_EINVAL;
}

static int nomem(struct dec *d)
{
    return lb_err_set(d->err, LB_ENOMEM, 0, "out of memory while reading the config");
}

static const char *describe(const struct cnode *n)
{
    if (n->kind == CN_MAP)
        return "a mapping";
    if (n->kind == CN_SEQ)
        return "a list";
    switch (n->type) {
    case CT_NULL:
        return "nothing";
    case CT_BOOL:
        return "true/false";
    case CT_INT:
    case CT_REAL:
        return "a number";
    case CT_STRING:
        return "a string";
    case CT_PLAIN:
        break;
    }
    return "a plain value";
}

static bool is_null(const struct cnode *n)
{
    if (n->kind != CN_SCALAR)
        return false;
    if (n->type == CT_NULL)
        return true;
    return n->type == CT_PLAIN &&
           (n->s[0] == '\0' || strcmp(n->s, "~") == 0 || strcmp(n->s, "null") == 0 ||
            strcmp(n->s, "Null") == 0 || strcmp(n->s, "NULL") == 0);
}

static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 40 || lb > 40)
        return SIZE_MAX;
    size_t row[41];
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t cost =
                tolower((unsigned char)a[i - 1]) == tolower((unsigned char)b[j - 1]) ? 0 : 1;
            size_t best = diag + cost;
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/* Checks that <n> is a mapping whose keys are all in <known>, unique. */
static int check_map(struct dec *d, const struct cnode *n, const char *path,
                     const char *const *known)
{
    if (n->kind != CN_MAP)
        return derr(d, n, path, "expected a mapping, got %s", describe(n));
    for (size_t i = 0; i < cn_map_len(n); i++) {
        const struct cnode *k = cn_key(n, i);
        if (k->kind != CN_SCALAR)
            return derr(d, k, path, "keys must be plain names, not %s", describe(k));
        for (size_t j = 0; j < i; j++)
            if (strcmp(cn_key(n, j)->s, k->s) == 0)
                return derr(d, k, path, "key \"%s\" appears twice", k->s);
        const char *best = NULL;
        size_t best_dist = SIZE_MAX;
        bool found = false;
        for (size_t j = 0; known[j]; j++) {
            if (strcmp(known[j], k->s) == 0) {
                found = true;
                break;
            }
            size_t dist = edit_distance(k->s, known[j]);
            if (dist < best_dist) {
                best_dist = dist;
                best = known[j];
            }
        }
        if (found)
            continue;
        size_t limit = strlen(k->s) / 3 > 2 ? strlen(k->s) / 3 : 2;
        if (best != NULL && best_dist <= limit)
            return derr(d, k, path, "unknown key \"%s\" (did you mean \"%s\"?)", k->s, best);
        return derr(d, k, path, "unknown key \"%s\"", k->s);
    }
    return LB_OK;
}

static void child_path(char *buf, size_t size, const char *path, const char *key)
{
    snprintf(buf, size, "%s%s%s", path, path[0] ? "." : "", key);
}

static bool parse_int_text(const char *s, long long *out)
{
    const char *p = s;
    if (*p == '+' || *p == '-')
        p++;
    if (!isdigit((unsigned char)*p))
        return false;
    for (const char *q = p; *q; q++)
        if (!isdigit((unsigned char)*q))
            return false;
    errno = 0;
    long long v = strtoll(s, NULL, 10);
    if (errno == ERANGE)
        v = s[0] == '-' ? LLONG_MIN : LLONG_MAX;
    *out = v;
    return true;
}

static int get_uint(struct dec *d, const struct cnode *map, const char *path, const char *key,
                    uint32_t min, uint32_t max, uint32_t *out)
{
    const struct cnode *n = cn_get(map, key);
    if (n == NULL)
        return LB_OK;
    char p[160];
    child_path(p, sizeof(p), path, key);
    long long v;
    if (n->kind != CN_SCALAR || !(n->type == CT_PLAIN || n->type == CT_INT) ||
        !parse_int_text(n->s, &v))
        return derr(d, n, p, "expected a whole number, got %s", describe(n));
    if (v < (long long)min || v > (long long)max)
        return derr(d, n, p, "%s is out of range (%u..%u)", n->s, min, max);
    *out = (uint32_t)v;
    return LB_OK;
}

static int get_bool(struct dec *d, const struct cnode *map, const char *path, const char *key,
                    bool *out)
{
    const struct cnode *n = cn_get(map, key);
    if (n == NULL)
        return LB_OK;
    char p[160];
    child_path(p, sizeof(p), path, key);
    if (n->kind == CN_SCALAR && (n->type == CT_PLAIN || n->type == CT_BOOL)) {
        if (strcmp(n->s, "true") == 0 || strcmp(n->s, "True") == 0 || strcmp(n->s, "TRUE") == 0) {
            *out = true;
            return LB_OK;
        }
        if (strcmp(n->s, "false") == 0 || strcmp(n->s, "False") == 0 ||
            strcmp(n->s, "FALSE") == 0) {
            *out = false;
            return LB_OK;
        }
    }
    return derr(d, n, p, "expected true or false, got %s", describe(n));
}

/* Replaces *<out> with a copy of the string at <key>. */
static int get_str(struct dec *d, const struct cnode *map, const char *path, const char *key,
                   char **out, const struct cnode **where)
{
    const struct cnode *n = cn_get(map, key);
    if (where != NULL)
        *where = n;
    if (n == NULL)
        return LB_OK;
    char p[160];
    child_path(p, sizeof(p), path, key);
    if (n->kind != CN_SCALAR || !(n->type == CT_STRING || n->type == CT_PLAIN) || is_null(n))
        return derr(d, n, p, "expected a string, got %s", describe(n));
    char *s = strdup(n->s);
    if (s == NULL)
        return nomem(d);
    free(*out);
    *out = s;
    return LB_OK;
}

static int get_dur(struct dec *d, const struct cnode *map, const char *path, const char *key,
                   uint32_t min_ms, uint32_t *out)
{
    const struct cnode *n = cn_get(map, key);
    if (n == NULL)
        return LB_OK;
    char p[160];
    child_path(p, sizeof(p), path, key);
    if (n->kind != CN_SCALAR || !(n->type == CT_STRING || n->type == CT_PLAIN || n->type == CT_INT))
        return derr(d, n, p, "expected a duration such as \"10s\", got %s", describe(n));
    struct lb_err e;
    uint32_t ms;
    if (config_duration_parse(n->s, &ms, &e) != LB_OK)
        return derr(d, n, p, "%s", e.msg);
    if (ms < min_ms) {
        char buf[32];
        return derr(d, n, p, "%s is too short (at least %s)", n->s,
                    config_duration_format(min_ms, buf, sizeof(buf)));
    }
    *out = ms;
    return LB_OK;
}

/* get_dur() with an upper bound <max_ms> as well. */
static int get_dur_max(struct dec *d, const struct cnode *map, const char *path, const char *key,
                       uint32_t min_ms, uint32_t max_ms, uint32_t *out)
{
    uint32_t ms = *out;
    int rc = get_dur(d, map, path, key, min_ms, &ms);
    if (rc != LB_OK)
        return rc;
    if (ms > max_ms) {
        char p[160], buf[32];
        child_path(p, sizeof(p), path, key);
        const struct cnode *n = cn_get(map, key);
        return derr(d, n, p, "%s is too long (at most %s)", n->s,
                    config_duration_format(max_ms, buf, sizeof(buf)));
    }
    *out = ms;
    return LB_OK;
}

static int get_enum(struct dec *d, const struct cnode *map, const char *path, const char *key,
                    const char *const *names, const char *what, unsigned *out)
{
    char *s = NULL;
    const struct cnode *n;
    int rc = get_str(d, map, path, key, &s, &n);
    if (rc != LB_OK || n == NULL)
        return rc;
    for (unsigned i = 0; names[i]; i++) {
        if (strcmp(names[i], s) == 0) {
            *out = i;
            free(s);
            return LB_OK;
        }
    }
    char list[120] = "";
    size_t off = 0;
    for (unsigned i = 0; names[i] && off < sizeof(list); i++)
        off += (size_t)snprintf(list + off, sizeof(list) - off, "%s%s",
                                i == 0 ? "" : (names[i + 1] ? ", " : " or "), names[i]);
    char p[160];
    child_path(p, sizeof(p), path, key);
    rc = derr(d, n, p, "unknown %s \"%s\" (expected %s)", what, s, list);
    free(s);
    return rc;
}

/* With check_tls (configs being applied): <file> can be opened. Stored
 * versions skip it, so a file gone missing never stops a start. */
static int check_file(struct dec *d, const struct cnode *n, const char *path, const char *key,
                      const char *file)
{
    if (!d->check_tls || file[0] == '\0')
        return LB_OK;
    char full[4096];
    tlscheck_resolve(d->base_dir, file, full, sizeof(full));
    int fd = open(full, O_RDONLY | O_CLOEXEC);
    if (fd == -1) {
        char p[160];
        child_path(p, sizeof(p), path, key);
        return derr(d, n, p, "cannot read \"%s\": %s", full, strerror(errno));
    }
    close(fd);
    return LB_OK;
}

static bool valid_ip(const char *s)
{
    unsigned char buf[16];
    return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

static bool valid_id(const char *s)
{
    size_t len = strlen(s);
    if (len == 0 || len > MAX_ID)
        return false;
    for (const char *p = s; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_' && *p != '.' && *p != ':')
            return false;
    return true;
}

/* A DNS name as sent in SNI: 1..253 letters, digits, '-', '_' and '.', not
 * an IP literal (RFC 6066 forbids those in server_name). */
static bool valid_server_name(const char *s)
{
    size_t len = strlen(s);
    if (len == 0 || len > 253 || valid_ip(s))
        return false;
    for (const char *p = s; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_' && *p != '.')
            return false;
    return true;
}

/* Splits a backend URL. Fills <reason> and returns false when it is not
 * http[s]://host[:port][/]. */
static bool parse_url(const char *url, bool *https, char **host, uint32_t *port, char *reason,
                      size_t rsize)
{
    const char *p = strstr(url, "://");
    if (p == NULL) {
        snprintf(reason, rsize, "\"%s\" is not a URL (expected http://host:port)", url);
        return false;
    }
    size_t slen = (size_t)(p - url);
    if (slen == 4 && strncasecmp(url, "http", 4) == 0) {
        *https = false;
    } else if (slen == 5 && strncasecmp(url, "https", 5) == 0) {
        *https = true;
    } else {
        snprintf(reason, rsize, "scheme \"%.*s\" is not supported (use http or https)",
                 (int)(slen > 20 ? 20 : slen), url);
        return false;
    }
    p += 3;
    const char *end = p + strcspn(p, "/?#");
    if (memchr(p, '@', (size_t)(end - p)) != NULL) {
        snprintf(reason, rsize, "a backend URL cannot carry user information");
        return false;
    }
    const char *hs = p, *he;
    if (*p == '[') {
        he = memchr(p, ']', (size_t)(end - p));
        if (he == NULL) {
            snprintf(reason, rsize, "\"%s\" has an unclosed IPv6 bracket", url);
            return false;
        }
        hs = p + 1;
        p = he + 1;
    } else {
        he = p;
        while (he < end && *he != ':')
            he++;
        p = he;
    }
    if (he == hs) {
        snprintf(reason, rsize, "\"%s\" has no host", url);
        return false;
    }
    char hbuf[256];
    size_t hlen = (size_t)(he - hs);
    if (hlen >= sizeof(hbuf)) {
        snprintf(reason, rsize, "the host name is too long");
        return false;
    }
    memcpy(hbuf, hs, hlen);
    hbuf[hlen] = '\0';
    if (hs != url && hs[-1] == '[') {
        unsigned char a6[16];
        if (inet_pton(AF_INET6, hbuf, a6) != 1) {
            snprintf(reason, rsize, "\"%.64s\" is not an IPv6 address", hbuf);
            return false;
        }
    } else {
        for (size_t i = 0; i < hlen; i++) {
            if (!isalnum((unsigned char)hbuf[i]) && hbuf[i] != '-' && hbuf[i] != '.' &&
                hbuf[i] != '_') {
                snprintf(reason, rsize, "host \"%.64s\" contains an invalid character", hbuf);
                return false;
            }
        }
    }
    uint32_t pt = *https ? 443 : 80;
    if (p < end && *p == ':') {
        p++;
        long v = 0;
        const char *ds = p;
        while (p < end && isdigit((unsigned char)*p) && v <= 65535)
            v = v * 10 + (*p++ - '0');
        if (p == ds || p != end || v < 1 || v > 65535) {
            snprintf(reason, rsize, "the port in \"%s\" must be a number in 1..65535", url);
            return false;
        }
        pt = (uint32_t)v;
    }
    if (p != end) {
        snprintf(reason, rsize, "\"%s\" has an unexpected character after the host", url);
        return false;
    }
    if (*end != '\0' && strcmp(end, "/") != 0) {
        snprintf(reason, rsize, "a backend URL cannot have a path, query or fragment");
        return false;
    }
    for (size_t i = 0; i < hlen; i++)
        hbuf[i] = (char)tolower((unsigned char)hbuf[i]);
    *host = strdup(hbuf);
    if (*host == NULL) {
        snprintf(reason, rsize, "out of memory");
        return false;
    }
    *port = pt;
    return true;
}

static int decode_seq_start(struct dec *d, const struct cnode *n, const char *path)
{
    if (n->kind != CN_SEQ)
        return derr(d, n, path, "expected a list, got %s", describe(n));
    return LB_OK;
}

static int decode_frontends(struct dec *d, const struct cnode *n)
{
    static const char *const keys[] = {"name", "address", "port", "tls", NULL};
    struct config *cfg = d->cfg;
    int rc = decode_seq_start(d, n, "frontends");
    if (rc != LB_OK)
        return rc;
    if (n->n == 0)
        return derr(d, n, "frontends", "the list is empty; at least one frontend is needed");
    cfg->frontends = calloc(n->n, sizeof(*cfg->frontends));
    if (cfg->frontends == NULL)
        return nomem(d);
    for (size_t i = 0; i < n->n; i++) {
        const struct cnode *it = n->items[i];
        struct config_frontend *f = &cfg->frontends[i];
        cfg->n_frontends = i + 1;
        char path[64], p[96];
        snprintf(path, sizeof(path), "frontends[%zu]", i);
        const struct cnode *name_n, *addr_n;
        if ((rc = check_map(d, it, path, keys)) != LB_OK ||
            (rc = get_str(d, it, path, "name", &f->name, &name_n)) != LB_OK ||
            (rc = get_str(d, it, path, "address", &f->address, &addr_n)) != LB_OK ||
            (rc = get_uint(d, it, path, "port", 1, 65535, &f->port)) != LB_OK ||
            (rc = get_bool(d, it, path, "tls", &f->tls)) != LB_OK)
            return rc;
        const struct cnode *port_n = cn_get(it, "port");
        if (port_n == NULL)
            return derr(d, it, path, "port is required");
        if (f->name == NULL) {
            char buf[32];
            snprintf(buf, sizeof(buf), "http-%u", f->port);
            if ((f->name = strdup(buf)) == NULL)
                return nomem(d);
        } else if (!valid_id(f->name)) {
            child_path(p, sizeof(p), path, "name");
            return derr(d, name_n, p,
                        "\"%s\" is not a valid name (1..64 letters, digits, '-', '_', '.', ':')",
                        f->name);
        }
        if (f->address == NULL) {
            if ((f->address = strdup("0.0.0.0")) == NULL)
                return nomem(d);
        } else if (!valid_ip(f->address)) {
            child_path(p, sizeof(p), path, "address");
            return derr(d, addr_n, p, "\"%s\" is not an IPv4 or IPv6 address", f->address);
        }
        if (f->tls && !d->ssl_present) {
            child_path(p, sizeof(p), path, "tls");
            return derr(d, cn_get(it, "tls"), p,
                        "a TLS frontend needs the ssl section with certFile and keyFile");
        }
        for (size_t j = 0; j < i; j++) {
            const struct config_frontend *o = &cfg->frontends[j];
            if (o->port == f->port && strcmp(o->address, f->address) == 0) {
                child_path(p, sizeof(p), path, "port");
                return derr(d, port_n, p, "port %u on %s is already used by frontends[%zu]",
                            f->port, f->address, j);
            }
            if (strcmp(o->name, f->name) == 0) {
                child_path(p, sizeof(p), path, "name");
                return derr(d, name_n ? name_n : it, p,
                            "name \"%s\" is already used by frontends[%zu]", f->name, j);
            }
        }
    }
    return LB_OK;
}

/* Open-addressing index of backends (slot = index + 1, 0 = empty) so that
 * duplicate ids and servers are found in linear time: a 10,000-backend config
 * spent most of its apply in the pairwise comparison. */
struct bindex {
    size_t *slots;
    size_t mask;
};

static uint64_t hash_bytes(uint64_t h, const void *p, size_t len)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < len; i++)
        h = (h ^ c[i]) * 1099511628211ull;
    return h;
}

static uint64_t hash_str(const char *s)
{
    return hash_bytes(14695981039346656037ull, s, strlen(s));
}

static uint64_t hash_server(const struct config_backend *b)
{
    uint64_t h = hash_str(b->host);
    h = hash_bytes(h, &b->port, sizeof(b->port));
    return hash_bytes(h, &b->https, sizeof(b->https));
}

static bool same_server(const struct config_backend *a, const struct config_backend *b)
{
    return a->https == b->https && a->port == b->port && strcmp(a->host, b->host) == 0;
}

static int bindex_init(struct bindex *x, size_t n)
{
    size_t cap = 16;
    while (cap < 2 * n)
        cap *= 2;
    x->slots = calloc(cap, sizeof(*x->slots));
    x->mask = cap - 1;
    return x->slots ? 0 : -1;
}

/* Index of an entry equal to backends[i] (by id when <by_id>, else by server),
 * or SIZE_MAX after inserting i. */
static size_t bindex_put(struct bindex *x, const struct config_backend *bs, size_t i, bool by_id)
{
    uint64_t h = by_id ? hash_str(bs[i].id) : hash_server(&bs[i]);
    for (size_t at = (size_t)h & x->mask;; at = (at + 1) & x->mask) {
        size_t s = x->slots[at];
        if (s == 0) {
            x->slots[at] = i + 1;
            return SIZE_MAX;
        }
        const struct config_backend *o = &bs[s - 1];
        if (by_id ? strcmp(o->id, bs[i].id) == 0 : same_server(o, &bs[i]))
            return s - 1;
    }
}

static int check_pem(struct dec *d, const struct cnode *n, const char *path, const char *key,
                     const char *file, bool crl);

static int decode_backend(struct dec *d, const struct cnode *it, size_t i, struct bindex *by_id,
                          struct bindex *by_server)
{
    static const char *const keys[] = {
        "id", "url", "weight", "state", "caFile", "sni", "maxConnections", "maxQueue", NULL};
    struct config *cfg = d->cfg;
    int rc;
    struct config_backend *b = &cfg->backends[i];
    cfg->n_backends = i + 1;
    b->weight = 1;
    b->max_queue = CONFIG_DEFAULT_MAX_QUEUE;
    char path[64], p[96];
    snprintf(path, sizeof(path), "backends[%zu]", i);
    const struct cnode *id_n, *url_n, *ca_n, *sni_n;
    unsigned st = 0;
    if ((rc = check_map(d, it, path, keys)) != LB_OK ||
        (rc = get_str(d, it, path, "url", &b->url, &url_n)) != LB_OK ||
        (rc = get_str(d, it, path, "id", &b->id, &id_n)) != LB_OK ||
        (rc = get_str(d, it, path, "caFile", &b->ca_file, &ca_n)) != LB_OK ||
        (rc = get_str(d, it, path, "sni", &b->sni, &sni_n)) != LB_OK ||
        (rc = get_uint(d, it, path, "weight", 1, 1000, &b->weight)) != LB_OK ||
        (rc = get_uint(d, it, path, "maxConnections", 0, 1000000, &b->max_connections)) != LB_OK ||
        (rc = get_uint(d, it, path, "maxQueue", 1, 100000, &b->max_queue)) != LB_OK ||
        (rc = get_enum(d, it, path, "state", backend_states, "state", &st)) != LB_OK)
        return rc;
    b->state = (enum config_backend_state)st;
    if (b->url == NULL)
        return derr(d, it, path, "url is required");
    char reason[128];
    child_path(p, sizeof(p), path, "url");
    if (!parse_url(b->url, &b->https, &b->host, &b->port, reason, sizeof(reason)))
        return derr(d, url_n, p, "%s", reason);
    if ((b->ca_file == NULL && (b->ca_file = strdup("")) == NULL) ||
        (b->sni == NULL && (b->sni = strdup("")) == NULL))
        return nomem(d);
    if (!b->https && (ca_n != NULL || sni_n != NULL)) {
        const char *key = ca_n != NULL ? "caFile" : "sni";
        child_path(p, sizeof(p), path, key);
        return derr(d, ca_n != NULL ? ca_n : sni_n, p, "%s applies only to https:// backends", key);
    }
    if (b->sni[0] != '\0' && !valid_server_name(b->sni)) {
        child_path(p, sizeof(p), path, "sni");
        return derr(d, sni_n, p, "\"%.64s\" is not a server name", b->sni);
    }
    if ((rc = check_file(d, ca_n, path, "caFile", b->ca_file)) != LB_OK ||
        (rc = check_pem(d, ca_n, path, "caFile", b->ca_file, false)) != LB_OK)
        return rc;
    if (b->id == NULL) {
        char buf[300];
        snprintf(buf, sizeof(buf), "%s-%u", b->host, b->port);
        if ((b->id = strdup(buf)) == NULL)
            return nomem(d);
        if (!valid_id(b->id))
            return derr(d, url_n, p, "the id derived from the URL (\"%.64s\") is too long; set id",
                        b->id);
    } else if (!valid_id(b->id)) {
        child_path(p, sizeof(p), path, "id");
        return derr(d, id_n, p,
                    "\"%s\" is not a valid id (1..64 letters, digits, '-', '_', '.', ':')", b->id);
    }
    size_t j = bindex_put(by_server, cfg->backends, i, false);
    if (j != SIZE_MAX) {
        child_path(p, sizeof(p), path, "url");
        return derr(d, url_n, p, "%s is the same server as backends[%zu]", b->url, j);
    }
    if ((j = bindex_put(by_id, cfg->backends, i, true)) != SIZE_MAX) {
        if (id_n != NULL) {
            child_path(p, sizeof(p), path, "id");
            return derr(d, id_n, p, "id \"%s\" is already used by backends[%zu]", b->id, j);
        }
        child_path(p, sizeof(p), path, "url");
        return derr(d, url_n, p, "id \"%s\" is already used by backends[%zu]; set id", b->id, j);
    }
    return LB_OK;
}

static int decode_backends(struct dec *d, const struct cnode *n)
{
    struct config *cfg = d->cfg;
    int rc = decode_seq_start(d, n, "backends");
    if (rc != LB_OK)
        return rc;
    if (n->n == 0)
        return derr(d, n, "backends", "the list is empty; at least one backend is needed");
    cfg->backends = calloc(n->n, sizeof(*cfg->backends));
    if (cfg->backends == NULL)
        return nomem(d);
    struct bindex by_id, by_server;
    if (bindex_init(&by_id, n->n) != 0 || bindex_init(&by_server, n->n) != 0) {
        free(by_id.slots);
        return nomem(d);
    }
    rc = LB_OK;
    for (size_t i = 0; i < n->n && rc == LB_OK; i++)
        rc = decode_backend(d, n->items[i], i, &by_id, &by_server);
    free(by_id.slots);
    free(by_server.slots);
    return rc;
}

static int decode_healthcheck(struct dec *d, const struct cnode *n)
{
    static const char *const keys[] = {"interval", "timeout",        "path", "rise",     "fall",
                                       "type",     "expectedStatus", "host", "failOpen", NULL};
    struct config_healthcheck *h = &d->cfg->healthcheck;
    const char *path = "healthcheck";
    const struct cnode *path_n;
    unsigned type = 0;
    int rc;
    if ((rc = check_map(d, n, path, keys)) != LB_OK ||
        (rc = get_dur(d, n, path, "interval", 1, &h->interval_ms)) != LB_OK ||
        (rc = get_dur(d, n, path, "timeout", 1, &h->timeout_ms)) != LB_OK ||
        (rc = get_str(d, n, path, "path", &h->path, &path_n)) != LB_OK ||
        (rc = get_uint(d, n, path, "rise", 1, 100, &h->rise)) != LB_OK ||
        (rc = get_uint(d, n, path, "fall", 1, 100, &h->fall)) != LB_OK ||
        (rc = get_enum(d, n, path, "type", hc_types, "type", &type)) != LB_OK ||
        (rc = get_uint(d, n, path, "expectedStatus", 0, 599, &h->expected_status)) != LB_OK ||
        (rc = get_str(d, n, path, "host", &h->host, NULL)) != LB_OK ||
        (rc = get_bool(d, n, path, "failOpen", &h->fail_open)) != LB_OK)
        return rc;
    h->type = (enum config_hc_type)type;
    if (h->expected_status != 0 && h->expected_status < 100)
        return derr(d, cn_get(n, "expectedStatus"), "healthcheck.expectedStatus",
                    "%u is out of range (0 for any 2xx or 3xx, else 100..599)", h->expected_status);
    if (h->path[0] != '/')
        return derr(d, path_n, "healthcheck.path", "\"%s\" must start with '/'", h->path);
    if (h->timeout_ms > h->interval_ms) {
        const struct cnode *t = cn_get(n, "timeout");
        char a[32], b[32];
        return derr(d, t ? t : n, "healthcheck.timeout", "%s must not exceed the interval %s",
                    config_duration_format(h->timeout_ms, a, sizeof(a)),
                    config_duration_format(h->interval_ms, b, sizeof(b)));
    }
    return LB_OK;
}

/* With check_tls: the certificate at <cert_n> and the key at <key_n> (keys
 * <path>.certFile and <path>.keyFile) form a valid pair at now_ms; an error
 * points at the node of the file at fault. */
static int check_pair(struct dec *d, const char *path, const struct cnode *cert_n,
                      const struct cnode *key_n, const char *cert_file, const char *key_file)
{
    if (!d->check_tls || cert_file[0] == '\0')
        return LB_OK;
    char cert_label[96], key_label[96], cert_path[4096], key_path[4096], ca_path[4096];
    child_path(cert_label, sizeof(cert_label), path, "certFile");
    child_path(key_label, sizeof(key_label), path, "keyFile");
    tlscheck_resolve(d->base_dir, cert_file, cert_path, sizeof(cert_path));
    tlscheck_resolve(d->base_dir, key_file, key_path, sizeof(key_path));
    const char *ca_file = d->cfg->ssl.ca_file;
    uint8_t *cert = NULL, *key = NULL, *ca = NULL;
    size_t cert_len = 0, key_len = 0, ca_len = 0;
    struct lb_err e = {0};
    int rc;
    if ((rc = tlscheck_read_file(cert_path, &cert, &cert_len, &e)) != LB_OK) {
        rc = rc == LB_ENOMEM ? nomem(d) : derr(d, cert_n, cert_label, "%s", e.msg);
        goto out;
    }
    if ((rc = tlscheck_read_file(key_path, &key, &key_len, &e)) != LB_OK) {
        rc = rc == LB_ENOMEM ? nomem(d) : derr(d, key_n, key_label, "%s", e.msg);
        goto out;
    }
    if (ca_file[0] != '\0') {
        tlscheck_resolve(d->base_dir, ca_file, ca_path, sizeof(ca_path));
        if ((rc = tlscheck_read_file(ca_path, &ca, &ca_len, &e)) != LB_OK) {
            rc = rc == LB_ENOMEM ? nomem(d) : derr(d, NULL, "ssl.caFile", "%s", e.msg);
            goto out;
        }
    }
    struct tlscheck_pair_in in = {
        .cert_label = cert_label,
        .cert_path = cert_path,
        .cert_pem = cert,
        .cert_len = cert_len,
        .key_label = key_label,
        .key_path = key_path,
        .key_pem = key,
        .key_len = key_len,
        .ca_pem = ca,
        .ca_len = ca_len,
        .now_ms = d->now_ms,
    };
    enum tlscheck_fault fault = TLSCHECK_FAULT_CERT;
    if ((rc = tlscheck_pair(&in, NULL, &fault, &e)) == LB_ENOMEM)
        rc = nomem(d);
    else if (rc != LB_OK && fault == TLSCHECK_FAULT_KEY)
        rc = derr(d, key_n, key_label, "%s", e.msg);
    else if (rc != LB_OK)
        rc = derr(d, cert_n, cert_label, "%s", e.msg);
out:
    free(cert);
    free(key);
    free(ca);
    return rc;
}

/* With check_tls: <file> at <n> (key <path>.<key>) parses as CA
 * certificates, or as CRLs when <crl>. */
static int check_pem(struct dec *d, const struct cnode *n, const char *path, const char *key,
                     const char *file, bool crl)
{
    if (!d->check_tls || file[0] == '\0')
        return LB_OK;
    char label[96], full[4096];
    child_path(label, sizeof(label), path, key);
    tlscheck_resolve(d->base_dir, file, full, sizeof(full));
    uint8_t *pem = NULL;
    size_t len = 0;
    struct lb_err e = {0};
    int rc = tlscheck_read_file(full, &pem, &len, &e);
    if (rc == LB_OK)
        rc = crl ? tlscheck_crl(full, pem, len, &e) : tlscheck_ca(full, pem, len, &e);
    free(pem);
    if (rc == LB_ENOMEM)
        return nomem(d);
    return rc == LB_OK ? LB_OK : derr(d, n, label, "%s", e.msg);
}

static int decode_certificates(struct dec *d, const struct cnode *n)
{
    static const char *const keys[] = {"certFile", "keyFile", "sni", NULL};
    struct config_ssl *ssl = &d->cfg->ssl;
    int rc = decode_seq_start(d, n, "ssl.certificates");
    if (rc != LB_OK || n->n == 0)
        return rc;
    ssl->certificates = calloc(n->n, sizeof(*ssl->certificates));
    if (ssl->certificates == NULL)
        return nomem(d);
    for (size_t i = 0; i < n->n; i++) {
        const struct cnode *it = n->items[i];
        struct config_certificate *c = &ssl->certificates[i];
        ssl->n_certificates = i + 1;
        char path[64], p[96];
        snprintf(path, sizeof(path), "ssl.certificates[%zu]", i);
        const struct cnode *cert_n, *key_n;
        if ((rc = check_map(d, it, path, keys)) != LB_OK ||
            (rc = get_str(d, it, path, "certFile", &c->cert_file, &cert_n)) != LB_OK ||
            (rc = get_str(d, it, path, "keyFile", &c->key_file, &key_n)) != LB_OK)
            return rc;
        if (c->cert_file == NULL || c->cert_file[0] == '\0')
            return derr(d, it, path, "certFile is required");
        if (c->key_file == NULL || c->key_file[0] == '\0')
            return derr(d, it, path, "keyFile is required");
        if ((rc = check_file(d, cert_n, path, "certFile", c->cert_file)) != LB_OK ||
            (rc = check_file(d, key_n, path, "keyFile", c->key_file)) != LB_OK ||
            (rc = check_pair(d, path, cert_n, key_n, c->cert_file, c->key_file)) != LB_OK)
            return rc;
        const struct cnode *sni = cn_get(it, "sni");
        if (sni == NULL)
            continue;
        child_path(p, sizeof(p), path, "sni");
        if ((rc = decode_seq_start(d, sni, p)) != LB_OK)
            return rc;
        if (sni->n == 0)
            continue;
        c->sni = calloc(sni->n, sizeof(*c->sni));
        if (c->sni == NULL)
            return nomem(d);
        for (size_t j = 0; j < sni->n; j++) {
            const struct cnode *s = sni->items[j];
            char q[128];
            snprintf(q, sizeof(q), "%s[%zu]", p, j);
            if (s->kind != CN_SCALAR || !(s->type == CT_STRING || s->type == CT_PLAIN) ||
                is_null(s))
                return derr(d, s, q, "expected a server name, got %s", describe(s));
            if ((c->sni[j] = strdup(s->s)) == NULL)
                return nomem(d);
            c->n_sni = j + 1;
        }
    }
    return LB_OK;
}

/* A list of non-empty strings at <n> (NULL or null = empty) into *<out>;
 * <pins> checks each as an SPKI pin. */
static int decode_strv(struct dec *d, const struct cnode *n, const char *path, bool pins,
                       char ***out, size_t *count)
{
    if (n == NULL || is_null(n))
        return LB_OK;
    int rc = decode_seq_start(d, n, path);
    if (rc != LB_OK || n->n == 0)
        return rc;
    if ((*out = calloc(n->n, sizeof(**out))) == NULL)
        return nomem(d);
    for (size_t i = 0; i < n->n; i++) {
        const struct cnode *it = n->items[i];
        char p[128];
        snprintf(p, sizeof(p), "%s[%zu]", path, i);
        if (it->kind != CN_SCALAR || !(it->type == CT_STRING || it->type == CT_PLAIN) ||
            is_null(it) || it->s[0] == '\0')
            return derr(d, it, p, "expected a non-empty string, got %s",
                        it->kind == CN_SCALAR && it->s[0] == '\0' ? "\"\"" : describe(it));
        uint8_t pin[32];
        struct lb_err e;
        if (pins && tlscheck_pin_parse(it->s, pin, &e) != LB_OK)
            return derr(d, it, p, "%s", e.msg);
        if (((*out)[i] = strdup(it->s)) == NULL)
            return nomem(d);
        *count = i + 1;
    }
    return LB_OK;
}

static int decode_verify(struct dec *d, const struct cnode *n)
{
    static const char *const keys[] = {"allowedCN", "allowedSanDNS", "allowedSanURI", "spkiPins",
                                       NULL};
    struct config_ssl *ssl = &d->cfg->ssl;
    int rc;
    if ((rc = check_map(d, n, "ssl.verify", keys)) != LB_OK ||
        (rc = decode_strv(d, cn_get(n, "allowedCN"), "ssl.verify.allowedCN", false,
                          &ssl->allowed_cn, &ssl->n_allowed_cn)) != LB_OK ||
        (rc = decode_strv(d, cn_get(n, "allowedSanDNS"), "ssl.verify.allowedSanDNS", false,
                          &ssl->allowed_san_dns, &ssl->n_allowed_san_dns)) != LB_OK ||
        (rc = decode_strv(d, cn_get(n, "allowedSanURI"), "ssl.verify.allowedSanURI", false,
                          &ssl->allowed_san_uri, &ssl->n_allowed_san_uri)) != LB_OK ||
        (rc = decode_strv(d, cn_get(n, "spkiPins"), "ssl.verify.spkiPins", true, &ssl->spki_pins,
                          &ssl->n_spki_pins)) != LB_OK)
        return rc;
    return LB_OK;
}

static int decode_ssl(struct dec *d, const struct cnode *n)
{
    static const char *const keys[] = {"certFile",   "keyFile",    "caFile",         "crlFile",
                                       "clientAuth", "minVersion", "ciphers",        "ciphersuites",
                                       "groups",     "verify",     "ticketRotation", "certificates",
                                       NULL};
    struct config_ssl *ssl = &d->cfg->ssl;
    const char *path = "ssl";
    const struct cnode *cert_n, *key_n, *ca_n, *crl_n;
    unsigned ver = 0;
    int rc;
    if ((rc = check_map(d, n, path, keys)) != LB_OK ||
        (rc = get_str(d, n, path, "certFile", &ssl->cert_file, &cert_n)) != LB_OK ||
        (rc = get_str(d, n, path, "keyFile", &ssl->key_file, &key_n)) != LB_OK ||
        (rc = get_str(d, n, path, "caFile", &ssl->ca_file, &ca_n)) != LB_OK ||
        (rc = get_str(d, n, path, "crlFile", &ssl->crl_file, &crl_n)) != LB_OK ||
        (rc = get_uint(d, n, path, "clientAuth", 0, 4, &ssl->client_auth)) != LB_OK ||
        (rc = get_enum(d, n, path, "minVersion", tls_versions, "TLS version", &ver)) != LB_OK ||
        (rc = get_str(d, n, path, "ciphers", &ssl->ciphers, NULL)) != LB_OK ||
        (rc = get_str(d, n, path, "ciphersuites", &ssl->ciphersuites, NULL)) != LB_OK ||
        (rc = get_str(d, n, path, "groups", &ssl->groups, NULL)) != LB_OK ||
        (rc = get_dur(d, n, path, "ticketRotation", 1000, &ssl->ticket_rotation_ms)) != LB_OK)
        return rc;
    const struct cnode *verify = cn_get(n, "verify");
    if (verify != NULL && !is_null(verify) && (rc = decode_verify(d, verify)) != LB_OK)
        return rc;
    ssl->present = true;
    free(ssl->min_version);
    if ((ssl->min_version = strdup(tls_versions[ver])) == NULL)
        return nomem(d);
    const struct cnode *certs = cn_get(n, "certificates");
    if (certs != NULL && (rc = decode_certificates(d, certs)) != LB_OK)
        return rc;
    if (ssl->cert_file[0] != '\0' && ssl->key_file[0] == '\0')
        return derr(d, n, path, "keyFile is required with certFile");
    if (ssl->key_file[0] != '\0' && ssl->cert_file[0] == '\0')
        return derr(d, n, path, "certFile is required with keyFile");
    if (ssl->cert_file[0] == '\0' && ssl->n_certificates == 0)
        return derr(d, n, path, "certFile and keyFile (or certificates) are required");
    if (ssl->client_auth >= 3 && ssl->ca_file[0] == '\0')
        return derr(d, cn_get(n, "clientAuth"), "ssl.clientAuth",
                    "%u verifies client certificates and needs caFile", ssl->client_auth);
    if ((rc = check_file(d, cert_n, path, "certFile", ssl->cert_file)) != LB_OK ||
        (rc = check_file(d, key_n, path, "keyFile", ssl->key_file)) != LB_OK ||
        (rc = check_file(d, ca_n, path, "caFile", ssl->ca_file)) != LB_OK ||
        (rc = check_file(d, crl_n, path, "crlFile", ssl->crl_file)) != LB_OK ||
        (rc = check_pem(d, ca_n, path, "caFile", ssl->ca_file, false)) != LB_OK ||
        (rc = check_pem(d, crl_n, path, "crlFile", ssl->crl_file, true)) != LB_OK ||
        (rc = check_pair(d, path, cert_n, key_n, ssl->cert_file, ssl->key_file)) != LB_OK)
        return rc;
    return LB_OK;
}

/* "10.0.0.0/8", "192.0.2.1", "2001:db8::/32": an address with an optional
 * prefix length no longer than the family's. */
static bool valid_cidr(const char *s)
{
    char addr[INET6_ADDRSTRLEN + 1];
    const char *slash = strchr(s, '/');
    size_t alen = slash ? (size_t)(slash - s) : strlen(s);
    if (alen == 0 || alen >= sizeof(addr))
        return false;
    memcpy(addr, s, alen);
    addr[alen] = '\0';
    unsigned char buf[16];
    unsigned max;
    if (inet_pton(AF_INET, addr, buf) == 1)
        max = 32;
    else if (inet_pton(AF_INET6, addr, buf) == 1)
        max = 128;
    else
        return false;
    if (slash == NULL)
        return true;
    const char *p = slash + 1;
    if (*p == '\0' || strlen(p) > 3)
        return false;
    unsigned bits = 0;
    for (; *p; p++) {
        if (!isdigit((unsigned char)*p))
            return false;
        bits = bits * 10 + (unsigned)(*p - '0');
    }
    return bits <= max;
}

static int decode_trusted_proxies(struct dec *d, const struct cnode *n)
{
    struct config_ratelimit *r = &d->cfg->ratelimit;
    const char *path = "ratelimit.trustedProxies";
    int rc = decode_seq_start(d, n, path);
    if (rc != LB_OK || n->n == 0)
        return rc;
    if (n->n > CONFIG_MAX_TRUSTED_PROXIES)
        return derr(d, n, path, "%zu entries, at most %d", n->n, CONFIG_MAX_TRUSTED_PROXIES);
    r->trusted_proxies = calloc(n->n, sizeof(*r->trusted_proxies));
    if (r->trusted_proxies == NULL)
        return nomem(d);
    for (size_t i = 0; i < n->n; i++) {
        const struct cnode *it = n->items[i];
        char p[64];
        snprintf(p, sizeof(p), "%s[%zu]", path, i);
        if (it->kind != CN_SCALAR || !(it->type == CT_STRING || it->type == CT_PLAIN) ||
            is_null(it))
            return derr(d, it, p, "expected a CIDR such as \"10.0.0.0/8\", got %s", describe(it));
        if (!valid_cidr(it->s))
            return derr(d, it, p, "\"%.64s\" is not a CIDR (address[/bits])", it->s);
        if ((r->trusted_proxies[i] = strdup(it->s)) == NULL)
            return nomem(d);
        r->n_trusted_proxies = i + 1;
    }
    return LB_OK;
}

static int decode_ratelimit(struct dec *d, const struct cnode *n)
{
    static const char *const keys[] = {
        "enabled",    "rate",       "burst",   "algorithm",      "perClient",        "global",
        "ipv4Prefix", "ipv6Prefix", "maxKeys", "trustedProxies", "headersOnAllowed", NULL};
    struct config_ratelimit *r = &d->cfg->ratelimit;
    const char *path = "ratelimit";
    unsigned alg = 0;
    int rc;
    const struct cnode *tp;
    if ((rc = check_map(d, n, path, keys)) != LB_OK ||
        (rc = get_bool(d, n, path, "enabled", &r->enabled)) != LB_OK ||
        (rc = get_uint(d, n, path, "rate", 0, 10000000, &r->rate)) != LB_OK ||
        (rc = get_uint(d, n, path, "burst", 0, 10000000, &r->burst)) != LB_OK ||
        (rc = get_enum(d, n, path, "algorithm", rl_algorithms, "algorithm", &alg)) != LB_OK ||
        (rc = get_bool(d, n, path, "perClient", &r->per_client)) != LB_OK ||
        (rc = get_bool(d, n, path, "global", &r->global)) != LB_OK ||
        (rc = get_uint(d, n, path, "ipv4Prefix", 1, 32, &r->ipv4_prefix)) != LB_OK ||
        (rc = get_uint(d, n, path, "ipv6Prefix", 1, 128, &r->ipv6_prefix)) != LB_OK ||
        (rc = get_uint(d, n, path, "maxKeys", 1, 100000000, &r->max_keys)) != LB_OK ||
        (rc = get_bool(d, n, path, "headersOnAllowed", &r->headers_on_allowed)) != LB_OK)
        return rc;
    if ((tp = cn_get(n, "trustedProxies")) != NULL && !is_null(tp) &&
        (rc = decode_trusted_proxies(d, tp)) != LB_OK)
        return rc;
    r->algorithm = (enum config_rl_algorithm)alg;
    if (r->enabled && r->rate == 0) {
        const struct cnode *rn = cn_get(n, "rate");
        return derr(d, rn ? rn : n, "ratelimit.rate",
                    "must be at least 1 when the rate limit is enabled");
    }
    if (r->enabled && !r->per_client && !r->global)
        return derr(d, n, path, "an enabled rate limit needs perClient or global");
    return LB_OK;
}

static int decode_circuitbreaker(struct dec *d, const struct cnode *n)
{
    static const char *const keys[] = {"enabled",    "threshold", "timeout", "maxHalfOpen",
                                       "maxTimeout", "ignore5xx", NULL};
    struct config_circuitbreaker *c = &d->cfg->circuitbreaker;
    const char *path = "circuitbreaker";
    int rc;
    c->enabled = true;
    if ((rc = check_map(d, n, path, keys)) != LB_OK ||
        (rc = get_bool(d, n, path, "enabled", &c->enabled)) != LB_OK ||
        (rc = get_uint(d, n, path, "threshold", 1, 1000, &c->threshold)) != LB_OK ||
        (rc = get_dur(d, n, path, "timeout", 1, &c->timeout_ms)) != LB_OK ||
        (rc = get_uint(d, n, path, "maxHalfOpen", 1, 1000, &c->max_half_open)) != LB_OK ||
        (rc = get_dur(d, n, path, "maxTimeout", 1, &c->max_timeout_ms)) != LB_OK ||
        (rc = get_bool(d, n, path, "ignore5xx", &c->ignore_5xx)) != LB_OK)
        return rc;
    if (c->max_timeout_ms < c->timeout_ms) {
        const struct cnode *t = cn_get(n, "maxTimeout");
        char a[32], b[32];
        return derr(d, t ? t : n, "circuitbreaker.maxTimeout", "%s is below the timeout %s",
                    config_duration_format(c->max_timeout_ms, a, sizeof(a)),
                    config_duration_format(c->timeout_ms, b, sizeof(b)));
    }
    return LB_OK;
}

static int decode_retries(struct dec *d, const struct cnode *n)
{
    static const char *const keys[] = {
        "enabled", "max", "budgetPercent", "budgetMin", "backoffBase", "backoffCap", NULL};
    struct config_retries *r = &d->cfg->retries;
    const char *path = "retries";
    int rc;
    if ((rc = check_map(d, n, path, keys)) != LB_OK ||
        (rc = get_bool(d, n, path, "enabled", &r->enabled)) != LB_OK ||
        (rc = get_uint(d, n, path, "max", 0, 5, &r->max)) != LB_OK ||
        (rc = get_uint(d, n, path, "budgetPercent", 1, 100, &r->budget_percent)) != LB_OK ||
        (rc = get_uint(d, n, path, "budgetMin", 1, 1000, &r->budget_min)) != LB_OK ||
        (rc = get_dur(d, n, path, "backoffBase", 1, &r->backoff_base_ms)) != LB_OK ||
        (rc = get_dur(d, n, path, "backoffCap", 1, &r->backoff_cap_ms)) != LB_OK)
        return rc;
    if (r->backoff_cap_ms < r->backoff_base_ms) {
        const struct cnode *c = cn_get(n, "backoffCap");
        char a[32], b[32];
        return derr(d, c ? c : n, "retries.backoffCap", "%s is below backoffBase %s",
                    config_duration_format(r->backoff_cap_ms, a, sizeof(a)),
                    config_duration_format(r->backoff_base_ms, b, sizeof(b)));
    }
    return LB_OK;
}

static int decode_ejection(struct dec *d, const struct cnode *n)
{
    static const char *const keys[] = {"enabled", "probeInterval", "maxProbeInterval", NULL};
    struct config_ejection *e = &d->cfg->ejection;
    const char *path = "ejection";
    int rc;
    if ((rc = check_map(d, n, path, keys)) != LB_OK ||
        (rc = get_bool(d, n, path, "enabled", &e->enabled)) != LB_OK ||
        (rc = get_dur_max(d, n, path, "probeInterval", 10, 3600000, &e->probe_interval_ms)) !=
            LB_OK ||
        (rc = get_dur_max(d, n, path, "maxProbeInterval", 10, 3600000,
                          &e->max_probe_interval_ms)) != LB_OK)
        return rc;
    if (e->max_probe_interval_ms < e->probe_interval_ms) {
        const struct cnode *c = cn_get(n, "maxProbeInterval");
        char a[32], b[32];
        return derr(d, c ? c : n, "ejection.maxProbeInterval", "%s is below probeInterval %s",
                    config_duration_format(e->max_probe_interval_ms, a, sizeof(a)),
                    config_duration_format(e->probe_interval_ms, b, sizeof(b)));
    }
    return LB_OK;
}

static int decode_balancing(struct dec *d, const struct cnode *n)
{
    static const char *const keys[] = {"algorithm", "slowStart", "weights", NULL};
    struct config_balancing *b = &d->cfg->balancing;
    unsigned alg = b->algorithm, weights = b->weights;
    int rc;
    if ((rc = check_map(d, n, "balancing", keys)) != LB_OK ||
        (rc = get_enum(d, n, "balancing", "algorithm", bal_algorithms, "algorithm", &alg)) !=
            LB_OK ||
        (rc = get_dur(d, n, "balancing", "slowStart", 0, &b->slow_start_ms)) != LB_OK ||
        (rc = get_enum(d, n, "balancing", "weights", weights_names, "weights", &weights)) != LB_OK)
        return rc;
    if (b->slow_start_ms > 3600000) {
        char a[32];
        return derr(d, cn_get(n, "slowStart"), "balancing.slowStart", "%s is over 1h",
                    config_duration_format(b->slow_start_ms, a, sizeof(a)));
    }
    b->algorithm = (enum config_balancing_algorithm)alg;
    b->weights = (enum config_weights)weights;
    return LB_OK;
}

static int decode_timeouts(struct dec *d, const struct cnode *n)
{
    static const char *const keys[] = {"clientHeader",    "clientBody",     "keepAlive",
                                       "upstreamConnect", "upstreamHeader", "upstreamIdle",
                                       "drain",           "queue",          NULL};
    struct config_timeouts *t = &d->cfg->timeouts;
    const char *path = "timeouts";
    int rc;
    if ((rc = check_map(d, n, path, keys)) != LB_OK ||
        (rc = get_dur(d, n, path, "clientHeader", 1, &t->client_header_ms)) != LB_OK ||
        (rc = get_dur(d, n, path, "clientBody", 1, &t->client_body_ms)) != LB_OK ||
        (rc = get_dur(d, n, path, "keepAlive", 1, &t->keep_alive_ms)) != LB_OK ||
        (rc = get_dur(d, n, path, "upstreamConnect", 1, &t->upstream_connect_ms)) != LB_OK ||
        (rc = get_dur(d, n, path, "upstreamHeader", 1, &t->upstream_header_ms)) != LB_OK ||
        (rc = get_dur(d, n, path, "upstreamIdle", 1, &t->upstream_idle_ms)) != LB_OK ||
        (rc = get_dur(d, n, path, "drain", 1, &t->drain_ms)) != LB_OK ||
        (rc = get_dur_max(d, n, path, "queue", 1, 600000, &t->queue_ms)) != LB_OK)
        return rc;
    return LB_OK;
}

static int decode_limits(struct dec *d, const struct cnode *n)
{
    static const char *const keys[] = {"maxRequestLine", "maxHeaderBytes", "maxHeaders",
                                       "maxConnections", NULL};
    struct config_limits *l = &d->cfg->limits;
    const char *path = "limits";
    int rc;
    if ((rc = check_map(d, n, path, keys)) != LB_OK ||
        (rc = get_uint(d, n, path, "maxRequestLine", 64, 1048576, &l->max_request_line)) != LB_OK ||
        (rc = get_uint(d, n, path, "maxHeaderBytes", 256, 16777216, &l->max_header_bytes)) !=
            LB_OK ||
        (rc = get_uint(d, n, path, "maxHeaders", 1, 10000, &l->max_headers)) != LB_OK ||
        (rc = get_uint(d, n, path, "maxConnections", 1, 1000000, &l->max_connections)) != LB_OK)
        return rc;
    if (l->max_request_line > l->max_header_bytes) {
        const struct cnode *m = cn_get(n, "maxRequestLine");
        return derr(d, m ? m : n, "limits.maxRequestLine",
                    "%u is larger than maxHeaderBytes (%u), which includes the request line",
                    l->max_request_line, l->max_header_bytes);
    }
    return LB_OK;
}

static int decode_logging(struct dec *d, const struct cnode *n)
{
    static const char *const keys[] = {"level", "format", "accessLog", NULL};
    struct config_logging *l = &d->cfg->logging;
    unsigned level = l->level, format = 0;
    int rc;
    if ((rc = check_map(d, n, "logging", keys)) != LB_OK ||
        (rc = get_enum(d, n, "logging", "level", log_levels, "level", &level)) != LB_OK ||
        (rc = get_enum(d, n, "logging", "format", log_formats, "format", &format)) != LB_OK ||
        (rc = get_bool(d, n, "logging", "accessLog", &l->access_log)) != LB_OK)
        return rc;
    l->level = (enum config_log_level)level;
    return LB_OK;
}

static int decode_metrics(struct dec *d, const struct cnode *n)
{
    static const char *const keys[] = {"enabled", "address", "port", NULL};
    struct config_metrics *m = &d->cfg->metrics;
    const struct cnode *addr_n;
    int rc;
    if ((rc = check_map(d, n, "metrics", keys)) != LB_OK ||
        (rc = get_bool(d, n, "metrics", "enabled", &m->enabled)) != LB_OK ||
        (rc = get_str(d, n, "metrics", "address", &m->address, &addr_n)) != LB_OK ||
        (rc = get_uint(d, n, "metrics", "port", 1, 65535, &m->port)) != LB_OK)
        return rc;
    if (!valid_ip(m->address))
        return derr(d, addr_n, "metrics.address", "\"%s\" is not an IPv4 or IPv6 address",
                    m->address);
    return LB_OK;
}

static int decode(struct dec *d, const struct cnode *root, struct config **out)
{
    static const char *const keys[] = {
        "frontends", "backends", "healthcheck", "ssl",     "ratelimit", "circuitbreaker", "retries",
        "balancing", "timeouts", "limits",      "logging", "metrics",   "ejection",       NULL};
    d->cfg = config_new_default();
    if (d->cfg == NULL)
        return nomem(d);
    int rc = check_map(d, root, "", keys);
    const struct cnode *n;
    /* ssl first: frontends need to know whether it exists. */
    if (rc == LB_OK && (n = cn_get(root, "ssl")) != NULL && !is_null(n)) {
        d->ssl_present = true;
        rc = decode_ssl(d, n);
    }
    if (rc == LB_OK) {
        if ((n = cn_get(root, "frontends")) == NULL || is_null(n))
            rc = derr(d, root, "", "frontends is required (a list of listeners)");
        else
            rc = decode_frontends(d, n);
    }
    if (rc == LB_OK) {
        if ((n = cn_get(root, "backends")) == NULL || is_null(n))
            rc = derr(d, root, "", "backends is required (a list of servers)");
        else
            rc = decode_backends(d, n);
    }
    static const struct {
        const char *key;
        int (*fn)(struct dec *, const struct cnode *);
    } sections[] = {
        {"healthcheck", decode_healthcheck},
        {"ratelimit", decode_ratelimit},
        {"circuitbreaker", decode_circuitbreaker},
        {"retries", decode_retries},
        {"ejection", decode_ejection},
        {"balancing", decode_balancing},
        {"timeouts", decode_timeouts},
        {"limits", decode_limits},
        {"logging", decode_logging},
        {"metrics", decode_metrics},
    };
    for (size_t i = 0; rc == LB_OK && i < sizeof(sections) / sizeof(sections[0]); i++)
        if ((n = cn_get(root, sections[i].key)) != NULL && !is_null(n))
            rc = sections[i].fn(d, n);
    if (rc != LB_OK) {
        config_free(d->cfg);
        d->cfg = NULL;
        return rc;
    }
    *out = d->cfg;
    return LB_OK;
}

/* ---- YAML -> tree ----------------------------------------------------------- */

struct yconv {
    yaml_document_t *doc;
    size_t count;
};

static struct cnode *from_yaml(struct yconv *y, yaml_node_t *yn, int depth, const char **why)
{
    if (depth > MAX_DEPTH) {
        *why = "the document is nested too deeply";
        return NULL;
    }
    if (++y->count > MAX_NODES) {
        *why = "the document has too many nodes";
        return NULL;
    }
    struct cnode *n = NULL;
    switch (yn->type) {
    case YAML_SCALAR_NODE:
        n = cn_new(CN_SCALAR);
        if (n == NULL)
            break;
        n->type = yn->data.scalar.style == YAML_PLAIN_SCALAR_STYLE ? CT_PLAIN : CT_STRING;
        n->s = strndup((const char *)yn->data.scalar.value, yn->data.scalar.length);
        if (n->s == NULL || strlen(n->s) != yn->data.scalar.length) {
            if (n->s != NULL)
                *why = "a value contains a NUL character";
            cn_free(n);
            n = NULL;
        }
        break;
    case YAML_SEQUENCE_NODE:
        n = cn_new(CN_SEQ);
        for (yaml_node_item_t *it = yn->data.sequence.items.start;
             n != NULL && it < yn->data.sequence.items.top; it++) {
            struct cnode *c = from_yaml(y, yaml_document_get_node(y->doc, *it), depth + 1, why);
            if (cn_push(n, c) != 0) {
                cn_free(n);
                n = NULL;
            }
        }
        break;
    case YAML_MAPPING_NODE:
        n = cn_new(CN_MAP);
        for (yaml_node_pair_t *pr = yn->data.mapping.pairs.start;
             n != NULL && pr < yn->data.mapping.pairs.top; pr++) {
            struct cnode *k = from_yaml(y, yaml_document_get_node(y->doc, pr->key), depth + 1, why);
            if (cn_push(n, k) != 0) {
                cn_free(n);
                n = NULL;
                break;
            }
            struct cnode *v =
                from_yaml(y, yaml_document_get_node(y->doc, pr->value), depth + 1, why);
            if (cn_push(n, v) != 0) {
                cn_free(n);
                n = NULL;
            }
        }
        break;
    case YAML_NO_NODE:
        *why = "the document has an empty node";
        break;
    }
    if (n != NULL) {
        n->line = (int)yn->start_mark.line + 1;
        n->col = (int)yn->start_mark.column + 1;
    }
    return n;
}

static int parse_yaml(const char *yaml, size_t len, const char *name, struct dec *d,
                      struct config **out, struct lb_err *err);

int config_parse_yaml(const char *yaml, size_t len, const char *name, const char *base_dir,
                      struct config **out, struct lb_err *err)
{
    struct dec d = {.base_dir = base_dir, .err = err};
    return parse_yaml(yaml, len, name, &d, out, err);
}

static int parse_yaml(const char *yaml, size_t len, const char *name, struct dec *d,
                      struct config **out, struct lb_err *err)
{
    if (name == NULL)
        name = "config";
    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser))
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory while reading the config");
    yaml_parser_set_input_string(&parser, (const unsigned char *)yaml, len);
    if (!yaml_parser_load(&parser, &doc)) {
        int rc = lb_err_set(err, LB_EINVAL, 0, "%s:%zu:%zu: YAML syntax error: %s%s%s", name,
                            parser.problem_mark.line + 1, parser.problem_mark.column + 1,
                            parser.problem ? parser.problem : "unreadable input",
                            parser.context ? " " : "", parser.context ? parser.context : "");
        yaml_parser_delete(&parser);
        return rc;
    }
    yaml_parser_delete(&parser);
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root == NULL) {
        yaml_document_delete(&doc);
        return lb_err_set(err, LB_EINVAL, 0, "%s:1:1: the config is empty", name);
    }
    struct yconv y = {.doc = &doc};
    const char *why = NULL;
    struct cnode *tree = from_yaml(&y, root, 0, &why);
    yaml_document_delete(&doc);
    if (tree == NULL) {
        if (why != NULL)
            return lb_err_set(err, LB_EINVAL, 0, "%s: %s", name, why);
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory while reading the config");
    }
    d->name = name;
    int rc = decode(d, tree, out);
    cn_free(tree);
    return rc;
}

int config_load_yaml(const char *path, const char *base_dir, struct config **out,
                     struct lb_err *err)
{
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return lb_err_set(err, LB_ESYS, errno, "cannot open %s", path);
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            cap = cap ? cap * 2 : 16384;
            char *nb = cap <= (64u << 20) ? realloc(buf, cap) : NULL;
            if (nb == NULL) {
                free(buf);
                fclose(f);
                return lb_err_set(err, LB_EINVAL, 0, "%s is too large for memory", path);
            }
            buf = nb;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0)
            break;
    }
    int rerr = ferror(f) ? errno : 0;
    fclose(f);
    if (rerr != 0) {
        free(buf);
        return lb_err_set(err, LB_ESYS, rerr, "cannot read %s", path);
    }
    const char *slash = strrchr(path, '/');
    const char *name = slash ? slash + 1 : path;
    char dir[4096];
    if (base_dir == NULL && slash != NULL) {
        snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
        base_dir = slash == path ? "/" : dir;
    }
    int rc = config_parse_yaml(buf, len, name, base_dir, out, err);
    free(buf);
    return rc;
}

/* ---- JSON -> tree ---------------------------------------------------------- */

static struct cnode *from_json(json_t *j, int depth, size_t *count)
{
    if (depth > MAX_DEPTH || ++*count > MAX_NODES)
        return NULL;
    struct cnode *n = NULL;
    char buf[64];
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        n = cn_new(CN_MAP);
        const char *key;
        json_t *v;
        json_object_foreach(j, key, v)
        {
            if (n == NULL)
                break;
            if (cn_push(n, cn_scalar(CT_STRING, key)) != 0 ||
                cn_push(n, from_json(v, depth + 1, count)) != 0) {
                cn_free(n);
                n = NULL;
            }
        }
        break;
    }
    case JSON_ARRAY: {
        n = cn_new(CN_SEQ);
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v)
        {
            if (n == NULL)
                break;
            if (cn_push(n, from_json(v, depth + 1, count)) != 0) {
                cn_free(n);
                n = NULL;
            }
        }
        break;
    }
    case JSON_STRING:
        n = cn_new(CN_SCALAR);
        if (n != NULL) {
            n->type = CT_STRING;
            n->s = strndup(json_string_value(j), json_string_length(j));
            if (n->s == NULL || strlen(n->s) != json_string_length(j)) {
                cn_free(n);
                n = NULL;
            }
        }
        break;
    case JSON_INTEGER:
        snprintf(buf, sizeof(buf), "%" JSON_INTEGER_FORMAT, json_integer_value(j));
        n = cn_scalar(CT_INT, buf);
        break;
    case JSON_REAL:
        snprintf(buf, sizeof(buf), "%g", json_real_value(j));
        n = cn_scalar(CT_REAL, buf);
        break;
    case JSON_TRUE:
        n = cn_scalar(CT_BOOL, "true");
        break;
    case JSON_FALSE:
        n = cn_scalar(CT_BOOL, "false");
        break;
    case JSON_NULL:
        n = cn_scalar(CT_NULL, "null");
        break;
    }
    return n;
}

static int parse_json(const char *json, size_t len, struct dec *d, struct config **out,
                      struct lb_err *err);

int config_parse_json(const char *json, size_t len, const char *base_dir, struct config **out,
                      struct lb_err *err)
{
    struct dec d = {.base_dir = base_dir, .err = err};
    return parse_json(json, len, &d, out, err);
}

int config_parse_checked(const char *text, size_t len, bool json, const char *name,
                         const char *base_dir, int64_t now_ms, struct config **out,
                         struct lb_err *err)
{
    struct dec d = {.base_dir = base_dir, .err = err, .check_tls = true, .now_ms = now_ms};
    if (json)
        return parse_json(text, len, &d, out, err);
    return parse_yaml(text, len, name ? name : "config", &d, out, err);
}

static int parse_json(const char *json, size_t len, struct dec *d, struct config **out,
                      struct lb_err *err)
{
    json_error_t je;
    json_t *j = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
    if (j == NULL)
        return lb_err_set(err, LB_EINVAL, 0, "JSON syntax error at %d:%d: %s", je.line, je.column,
                          je.text);
    size_t count = 0;
    struct cnode *tree = from_json(j, 0, &count);
    json_decref(j);
    if (tree == NULL) {
        if (count > MAX_NODES || count == 0)
            return lb_err_set(err, LB_EINVAL, 0, "the JSON config is too large or too deep");
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory while reading the config");
    }
    int rc = decode(d, tree, out);
    cn_free(tree);
    return rc;
}

/* ---- config -> canonical tree ---------------------------------------------- */

static bool ejection_is_set(const struct config_ejection *e)
{
    return !e->enabled || e->probe_interval_ms != 1000 || e->max_probe_interval_ms != 30000;
}

static struct cnode *to_tree(const struct config *c)
{
    struct cnode *root = cn_new(CN_MAP);
    struct cnode *fs = cn_new(CN_SEQ);
    for (size_t i = 0; fs && i < c->n_frontends; i++) {
        const struct config_frontend *f = &c->frontends[i];
        struct cnode *m = cn_new(CN_MAP);
        if (f->name && f->name[0])
            put_str(m, "name", f->name);
        put_str(m, "address", f->address && f->address[0] ? f->address : "0.0.0.0");
        put_uint(m, "port", f->port);
        put_bool(m, "tls", f->tls);
        if (m == NULL || cn_push(fs, m) != 0) {
            cn_free(fs);
            fs = NULL;
        }
    }
    put(root, "frontends", fs);
    struct cnode *bs = cn_new(CN_SEQ);
    for (size_t i = 0; bs && i < c->n_backends; i++) {
        const struct config_backend *b = &c->backends[i];
        struct cnode *m = cn_new(CN_MAP);
        if (b->id && b->id[0])
            put_str(m, "id", b->id);
        put_str(m, "url", b->url);
        put_uint(m, "weight", b->weight);
        put_str(m, "state", config_backend_state_name(b->state));
        /* Only when set, so that the hash of a config without them stays the
         * one it had before these keys existed. */
        if (b->ca_file && b->ca_file[0])
            put_str(m, "caFile", b->ca_file);
        if (b->sni && b->sni[0])
            put_str(m, "sni", b->sni);
        if (b->max_connections != 0)
            put_uint(m, "maxConnections", b->max_connections);
        if (b->max_queue != CONFIG_DEFAULT_MAX_QUEUE && b->max_queue != 0)
            put_uint(m, "maxQueue", b->max_queue);
        if (m == NULL || cn_push(bs, m) != 0) {
            cn_free(bs);
            bs = NULL;
        }
    }
    put(root, "backends", bs);

    const struct config_healthcheck *h = &c->healthcheck;
    struct cnode *m = cn_new(CN_MAP);
    put_dur(m, "interval", h->interval_ms);
    put_dur(m, "timeout", h->timeout_ms);
    put_str(m, "path", h->path);
    put_uint(m, "rise", h->rise);
    put_uint(m, "fall", h->fall);
    put_str(m, "type", (unsigned)h->type < 2 ? hc_types[h->type] : "?");
    put_uint(m, "expectedStatus", h->expected_status);
    put_str(m, "host", h->host);
    put_bool(m, "failOpen", h->fail_open);
    put(root, "healthcheck", m);

    if (c->ssl.present) {
        const struct config_ssl *s = &c->ssl;
        m = cn_new(CN_MAP);
        put_str(m, "certFile", s->cert_file);
        put_str(m, "keyFile", s->key_file);
        put_str(m, "caFile", s->ca_file);
        put_str(m, "crlFile", s->crl_file);
        put_uint(m, "clientAuth", s->client_auth);
        put_str(m, "minVersion", s->min_version);
        put_str(m, "ciphers", s->ciphers);
        put_str(m, "ciphersuites", s->ciphersuites);
        put_str(m, "groups", s->groups);
        struct cnode *vm = cn_new(CN_MAP);
        put_strv(vm, "allowedCN", s->allowed_cn, s->n_allowed_cn);
        put_strv(vm, "allowedSanDNS", s->allowed_san_dns, s->n_allowed_san_dns);
        put_strv(vm, "allowedSanURI", s->allowed_san_uri, s->n_allowed_san_uri);
        put_strv(vm, "spkiPins", s->spki_pins, s->n_spki_pins);
        put(m, "verify", vm);
        put_dur(m, "ticketRotation", s->ticket_rotation_ms);
        struct cnode *certs = cn_new(CN_SEQ);
        for (size_t i = 0; certs && i < s->n_certificates; i++) {
            const struct config_certificate *ce = &s->certificates[i];
            struct cnode *cm = cn_new(CN_MAP);
            put_str(cm, "certFile", ce->cert_file);
            put_str(cm, "keyFile", ce->key_file);
            struct cnode *sni = cn_new(CN_SEQ);
            for (size_t j = 0; sni && j < ce->n_sni; j++)
                if (cn_push(sni, cn_scalar(CT_STRING, ce->sni[j] ? ce->sni[j] : "")) != 0) {
                    cn_free(sni);
                    sni = NULL;
                }
            put(cm, "sni", sni);
            if (cm == NULL || cn_push(certs, cm) != 0) {
                cn_free(certs);
                certs = NULL;
            }
        }
        put(m, "certificates", certs);
        put(root, "ssl", m);
    }

    const struct config_ratelimit *r = &c->ratelimit;
    m = cn_new(CN_MAP);
    put_bool(m, "enabled", r->enabled);
    put_uint(m, "rate", r->rate);
    put_uint(m, "burst", r->burst);
    put_str(m, "algorithm", (unsigned)r->algorithm < 2 ? rl_algorithms[r->algorithm] : "?");
    put_bool(m, "perClient", r->per_client);
    put_bool(m, "global", r->global);
    put_uint(m, "ipv4Prefix", r->ipv4_prefix);
    put_uint(m, "ipv6Prefix", r->ipv6_prefix);
    put_uint(m, "maxKeys", r->max_keys);
    struct cnode *tps = cn_new(CN_SEQ);
    for (size_t i = 0; tps && i < r->n_trusted_proxies; i++)
        if (cn_push(tps, cn_scalar(CT_STRING,
                                   r->trusted_proxies[i] ? r->trusted_proxies[i] : "")) != 0) {
            cn_free(tps);
            tps = NULL;
        }
    put(m, "trustedProxies", tps);
    put_bool(m, "headersOnAllowed", r->headers_on_allowed);
    put(root, "ratelimit", m);

    const struct config_circuitbreaker *cb = &c->circuitbreaker;
    m = cn_new(CN_MAP);
    put_bool(m, "enabled", cb->enabled);
    put_uint(m, "threshold", cb->threshold);
    put_dur(m, "timeout", cb->timeout_ms);
    put_uint(m, "maxHalfOpen", cb->max_half_open);
    put_dur(m, "maxTimeout", cb->max_timeout_ms);
    put_bool(m, "ignore5xx", cb->ignore_5xx);
    put(root, "circuitbreaker", m);

    const struct config_retries *rt = &c->retries;
    m = cn_new(CN_MAP);
    put_bool(m, "enabled", rt->enabled);
    put_uint(m, "max", rt->max);
    put_uint(m, "budgetPercent", rt->budget_percent);
    put_uint(m, "budgetMin", rt->budget_min);
    put_dur(m, "backoffBase", rt->backoff_base_ms);
    put_dur(m, "backoffCap", rt->backoff_cap_ms);
    put(root, "retries", m);

    /* Like the optional keys: only when it differs from the defaults, so that
     * existing versions keep their hash. */
    const struct config_ejection *ej = &c->ejection;
    if (ejection_is_set(ej)) {
        m = cn_new(CN_MAP);
        put_bool(m, "enabled", ej->enabled);
        put_dur(m, "probeInterval", ej->probe_interval_ms);
        put_dur(m, "maxProbeInterval", ej->max_probe_interval_ms);
        put(root, "ejection", m);
    }

    m = cn_new(CN_MAP);
    put_str(m, "algorithm", config_balancing_algorithm_name(c->balancing.algorithm));
    put_dur(m, "slowStart", c->balancing.slow_start_ms);
    put_str(m, "weights", config_weights_name(c->balancing.weights));
    put(root, "balancing", m);

    const struct config_timeouts *t = &c->timeouts;
    m = cn_new(CN_MAP);
    put_dur(m, "clientHeader", t->client_header_ms);
    put_dur(m, "clientBody", t->client_body_ms);
    put_dur(m, "keepAlive", t->keep_alive_ms);
    put_dur(m, "upstreamConnect", t->upstream_connect_ms);
    put_dur(m, "upstreamHeader", t->upstream_header_ms);
    put_dur(m, "upstreamIdle", t->upstream_idle_ms);
    put_dur(m, "drain", t->drain_ms);
    if (t->queue_ms != 5000)
        put_dur(m, "queue", t->queue_ms);
    put(root, "timeouts", m);

    const struct config_limits *l = &c->limits;
    m = cn_new(CN_MAP);
    put_uint(m, "maxRequestLine", l->max_request_line);
    put_uint(m, "maxHeaderBytes", l->max_header_bytes);
    put_uint(m, "maxHeaders", l->max_headers);
    put_uint(m, "maxConnections", l->max_connections);
    put(root, "limits", m);

    m = cn_new(CN_MAP);
    put_str(m, "level", (unsigned)c->logging.level < 4 ? log_levels[c->logging.level] : "?");
    put_str(m, "format", c->logging.format);
    put_bool(m, "accessLog", c->logging.access_log);
    put(root, "logging", m);

    m = cn_new(CN_MAP);
    put_bool(m, "enabled", c->metrics.enabled);
    put_str(m, "address", c->metrics.address);
    put_uint(m, "port", c->metrics.port);
    if (put(root, "metrics", m) != 0) {
        cn_free(root);
        return NULL;
    }
    return root;
}

/* Every put() above failed silently; the tree is whole only when each entry
 * is present. */
static bool tree_complete(const struct cnode *n)
{
    if (n->kind == CN_SCALAR)
        return n->s != NULL;
    if (n->broken || (n->kind == CN_MAP && n->n % 2 != 0))
        return false;
    for (size_t i = 0; i < n->n; i++)
        if (n->items[i] == NULL || !tree_complete(n->items[i]))
            return false;
    return true;
}

static struct cnode *canonical(const struct config *c)
{
    struct cnode *t = to_tree(c);
    size_t want = (c->ssl.present ? 24 : 22) + (ejection_is_set(&c->ejection) ? 2 : 0);
    if (t != NULL && (t->n != want || !tree_complete(t))) {
        cn_free(t);
        t = NULL;
    }
    return t;
}

int config_validate(const struct config *cfg, const char *base_dir, struct lb_err *err)
{
    struct cnode *t = canonical(cfg);
    if (t == NULL)
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory while validating the config");
    struct dec d = {.base_dir = base_dir, .err = err};
    struct config *tmp = NULL;
    int rc = decode(&d, t, &tmp);
    cn_free(t);
    config_free(tmp);
    return rc;
}

/* ---- tree -> YAML / JSON ------------------------------------------------------ */

struct outbuf {
    char *p;
    size_t len, cap;
    bool failed;
};

static int outbuf_write(void *data, unsigned char *buffer, size_t size)
{
    struct outbuf *o = data;
    if (o->len + size + 1 > o->cap) {
        size_t cap = o->cap ? o->cap : 4096;
        while (cap < o->len + size + 1)
            cap *= 2;
        char *np = realloc(o->p, cap);
        if (np == NULL) {
            o->failed = true;
            return 0;
        }
        o->p = np;
        o->cap = cap;
    }
    memcpy(o->p + o->len, buffer, size);
    o->len += size;
    o->p[o->len] = '\0';
    return 1;
}

static int emit_node(yaml_emitter_t *em, const struct cnode *n)
{
    yaml_event_t ev;
    switch (n->kind) {
    case CN_SCALAR: {
        bool quoted = n->type == CT_STRING;
        if (!yaml_scalar_event_initialize(
                &ev, NULL, NULL, (yaml_char_t *)n->s, (int)strlen(n->s), !quoted, quoted,
                quoted ? YAML_DOUBLE_QUOTED_SCALAR_STYLE : YAML_PLAIN_SCALAR_STYLE))
            return -1;
        return yaml_emitter_emit(em, &ev) ? 0 : -1;
    }
    case CN_MAP:
        if (!yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1, YAML_BLOCK_MAPPING_STYLE) ||
            !yaml_emitter_emit(em, &ev))
            return -1;
        for (size_t i = 0; i < cn_map_len(n); i++) {
            const struct cnode *k = cn_key(n, i);
            if (!yaml_scalar_event_initialize(&ev, NULL, NULL, (yaml_char_t *)k->s,
                                              (int)strlen(k->s), 1, 0, YAML_PLAIN_SCALAR_STYLE) ||
                !yaml_emitter_emit(em, &ev) || emit_node(em, cn_val(n, i)) != 0)
                return -1;
        }
        if (!yaml_mapping_end_event_initialize(&ev))
            return -1;
        return yaml_emitter_emit(em, &ev) ? 0 : -1;
    case CN_SEQ:
        if (!yaml_sequence_start_event_initialize(
                &ev, NULL, NULL, 1, n->n ? YAML_BLOCK_SEQUENCE_STYLE : YAML_FLOW_SEQUENCE_STYLE) ||
            !yaml_emitter_emit(em, &ev))
            return -1;
        for (size_t i = 0; i < n->n; i++)
            if (emit_node(em, n->items[i]) != 0)
                return -1;
        if (!yaml_sequence_end_event_initialize(&ev))
            return -1;
        return yaml_emitter_emit(em, &ev) ? 0 : -1;
    }
    return -1;
}

static char *tree_to_yaml(const struct cnode *t, size_t *len)
{
    yaml_emitter_t em;
    yaml_event_t ev;
    struct outbuf o = {0};
    if (!yaml_emitter_initialize(&em))
        return NULL;
    yaml_emitter_set_output(&em, outbuf_write, &o);
    yaml_emitter_set_unicode(&em, 1);
    yaml_emitter_set_width(&em, -1);
    yaml_emitter_set_indent(&em, 2);
    bool ok = yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING) &&
              yaml_emitter_emit(&em, &ev) &&
              yaml_document_start_event_initialize(&ev, NULL, NULL, NULL, 1) &&
              yaml_emitter_emit(&em, &ev) && emit_node(&em, t) == 0 &&
              yaml_document_end_event_initialize(&ev, 1) && yaml_emitter_emit(&em, &ev) &&
              yaml_stream_end_event_initialize(&ev) && yaml_emitter_emit(&em, &ev) &&
              yaml_emitter_flush(&em);
    yaml_emitter_delete(&em);
    if (!ok || o.failed || o.p == NULL) {
        free(o.p);
        return NULL;
    }
    if (len != NULL)
        *len = o.len;
    return o.p;
}

char *config_export_yaml(const struct config *cfg, size_t *len, struct lb_err *err)
{
    struct cnode *t = canonical(cfg);
    char *s = t ? tree_to_yaml(t, len) : NULL;
    cn_free(t);
    if (s == NULL)
        lb_err_set(err, LB_ENOMEM, 0, "out of memory while exporting the config");
    return s;
}

static json_t *tree_to_json(const struct cnode *n)
{
    json_t *j = NULL;
    switch (n->kind) {
    case CN_SCALAR:
        if (n->type == CT_INT)
            j = json_integer(strtoll(n->s, NULL, 10));
        else if (n->type == CT_BOOL)
            j = json_boolean(strcmp(n->s, "true") == 0);
        else
            j = json_string(n->s);
        break;
    case CN_MAP:
        j = json_object();
        for (size_t i = 0; j && i < cn_map_len(n); i++)
            if (json_object_set_new(j, cn_key(n, i)->s, tree_to_json(cn_val(n, i))) != 0) {
                json_decref(j);
                j = NULL;
            }
        break;
    case CN_SEQ:
        j = json_array();
        for (size_t i = 0; j && i < n->n; i++)
            if (json_array_append_new(j, tree_to_json(n->items[i])) != 0) {
                json_decref(j);
                j = NULL;
            }
        break;
    }
    return j;
}

char *config_export_json(const struct config *cfg, struct lb_err *err)
{
    struct cnode *t = canonical(cfg);
    json_t *j = t ? tree_to_json(t) : NULL;
    cn_free(t);
    char *s = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(j);
    if (s == NULL)
        lb_err_set(err, LB_ENOMEM, 0, "out of memory while exporting the config");
    return s;
}

int config_hash_yaml(const char *yaml, size_t len, char hex[65], struct lb_err *err)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (!EVP_Digest(yaml, len, md, &mdlen, EVP_sha256(), NULL) || mdlen != 32)
        return lb_err_set(err, LB_ENOMEM, 0, "SHA-256 of the config failed");
    for (unsigned i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    return LB_OK;
}

int config_hash(const struct config *cfg, char hex[65], struct lb_err *err)
{
    size_t len;
    char *y = config_export_yaml(cfg, &len, err);
    if (y == NULL)
        return LB_ENOMEM;
    int rc = config_hash_yaml(y, len, hex, err);
    free(y);
    return rc;
}

bool config_equal(const struct config *a, const struct config *b)
{
    char *ya = config_export_yaml(a, NULL, NULL);
    char *yb = config_export_yaml(b, NULL, NULL);
    bool eq = ya != NULL && yb != NULL && strcmp(ya, yb) == 0;
    free(ya);
    free(yb);
    return eq;
}

/* ---- diff ---------------------------------------------------------------------- */

struct diff_builder {
    struct config_diff *d;
    size_t cap;
    bool failed;
};

static void diff_add(struct diff_builder *b, enum config_change_kind kind, const char *path,
                     const char *subject, const char *field, const char *old_value,
                     const char *new_value)
{
    if (b->failed)
        return;
    if (b->d->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 8;
        struct config_change *nc = realloc(b->d->changes, cap * sizeof(*nc));
        if (nc == NULL) {
            b->failed = true;
            return;
        }
        b->d->changes = nc;
        b->cap = cap;
    }
    struct config_change *c = &b->d->changes[b->d->n++];
    *c = (struct config_change){.kind = kind};
    c->path = strdup(path);
    c->subject = subject ? strdup(subject) : NULL;
    c->field = field ? strdup(field) : NULL;
    c->old_value = old_value ? strdup(old_value) : NULL;
    c->new_value = new_value ? strdup(new_value) : NULL;
    if (c->path == NULL || (subject && !c->subject) || (field && !c->field) ||
        (old_value && !c->old_value) || (new_value && !c->new_value))
        b->failed = true;
}

/* Scalars print as their text; lists and mappings as compact JSON. */
static char *render(const struct cnode *n)
{
    if (n->kind == CN_SCALAR)
        return strdup(n->s[0] ? n->s : "\"\"");
    json_t *j = tree_to_json(n);
    char *s = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(j);
    return s;
}

/* Keys the export leaves out when they hold their default (so that versions
 * written before they existed keep their hash): the side without one reads as
 * this text. <section> is the top-level key ("backends" for every backend). */
static const struct optional_key {
    const char *section, *key, *value;
} optional_keys[] = {
    {"backends", "caFile", ""},          {"backends", "sni", ""},
    {"backends", "maxConnections", "0"}, {"backends", "maxQueue", "1024"},
    {"timeouts", "queue", "5s"},         {"ejection", "enabled", "true"},
    {"ejection", "probeInterval", "1s"}, {"ejection", "maxProbeInterval", "30s"},
};

static const char *optional_default(const char *section, const char *key)
{
    for (size_t i = 0; i < sizeof(optional_keys) / sizeof(optional_keys[0]); i++)
        if (strcmp(optional_keys[i].section, section) == 0 &&
            strcmp(optional_keys[i].key, key) == 0)
            return optional_keys[i].value;
    return "";
}

/* <section> is the top-level key <a> and <c> come from. */
static void diff_maps(struct diff_builder *b, const struct cnode *a, const struct cnode *c,
                      const char *section, const char *path, const char *subject)
{
    for (size_t i = 0; i < cn_map_len(a) + cn_map_len(c); i++) {
        bool left = i < cn_map_len(a);
        const char *key = left ? cn_key(a, i)->s : cn_key(c, i - cn_map_len(a))->s;
        if (!left && cn_get(a, key) != NULL)
            continue;
        const struct cnode *va = cn_get(a, key), *vc = cn_get(c, key);
        char p[256], field[256];
        snprintf(p, sizeof(p), "%s.%s", path, key);
        snprintf(field, sizeof(field), "%s", subject ? key : p);
        struct cnode none = {
            .kind = CN_SCALAR, .type = CT_STRING, .s = (char *)optional_default(section, key)};
        char *ra = render(va ? va : &none), *rc = render(vc ? vc : &none);
        if (ra == NULL || rc == NULL)
            b->failed = true;
        else if (strcmp(ra, rc) != 0)
            diff_add(b, CONFIG_CHANGE_CHANGED, p, subject, field, ra, rc);
        free(ra);
        free(rc);
    }
}

/* The items of a list by their <key> value (slot = index + 1, 0 = empty):
 * two 10,000-backend configs compared pairwise took most of an apply. */
struct item_index {
    const struct cnode *seq;
    const char *key;
    size_t *slots;
    size_t mask;
};

static const char *item_name(const struct item_index *x, size_t i)
{
    return cn_get(x->seq->items[i], x->key)->s;
}

static int item_index_init(struct item_index *x, const struct cnode *seq, const char *key)
{
    size_t cap = 16;
    while (cap < 2 * seq->n)
        cap *= 2;
    *x = (struct item_index){.seq = seq, .key = key, .mask = cap - 1};
    if ((x->slots = calloc(cap, sizeof(*x->slots))) == NULL)
        return -1;
    for (size_t i = 0; i < seq->n; i++) {
        size_t at = (size_t)hash_str(item_name(x, i)) & x->mask;
        while (x->slots[at] != 0)
            at = (at + 1) & x->mask;
        x->slots[at] = i + 1;
    }
    return 0;
}

static const struct cnode *find_item(const struct item_index *x, const char *val)
{
    for (size_t at = (size_t)hash_str(val) & x->mask; x->slots[at] != 0; at = (at + 1) & x->mask)
        if (strcmp(item_name(x, x->slots[at] - 1), val) == 0)
            return x->seq->items[x->slots[at] - 1];
    return NULL;
}

static void item_summary(const struct cnode *it, bool backend, char *buf, size_t size)
{
    if (backend)
        snprintf(buf, size, "%s, weight %s", cn_get(it, "url")->s, cn_get(it, "weight")->s);
    else
        snprintf(buf, size, "%s:%s%s", cn_get(it, "address")->s, cn_get(it, "port")->s,
                 strcmp(cn_get(it, "tls")->s, "true") == 0 ? ", tls" : "");
}

static void diff_lists(struct diff_builder *b, const struct cnode *a, const struct cnode *c,
                       const char *list, const char *key, const char *noun, bool backend)
{
    char path[256], subject[256], summary[600];
    struct item_index xa, xc;
    if (item_index_init(&xa, a, key) != 0) {
        b->failed = true;
        return;
    }
    if (item_index_init(&xc, c, key) != 0) {
        free(xa.slots);
        b->failed = true;
        return;
    }
    for (size_t i = 0; i < a->n; i++) {
        const char *id = cn_get(a->items[i], key)->s;
        const struct cnode *other = find_item(&xc, id);
        snprintf(path, sizeof(path), "%s[%s]", list, id);
        snprintf(subject, sizeof(subject), "%s %s", noun, id);
        if (other == NULL) {
            item_summary(a->items[i], backend, summary, sizeof(summary));
            diff_add(b, CONFIG_CHANGE_REMOVED, path, subject, NULL, summary, NULL);
        } else {
            diff_maps(b, a->items[i], other, list, path, subject);
        }
    }
    for (size_t i = 0; i < c->n; i++) {
        const char *id = cn_get(c->items[i], key)->s;
        if (find_item(&xa, id) != NULL)
            continue;
        snprintf(path, sizeof(path), "%s[%s]", list, id);
        snprintf(subject, sizeof(subject), "%s %s", noun, id);
        item_summary(c->items[i], backend, summary, sizeof(summary));
        diff_add(b, CONFIG_CHANGE_ADDED, path, subject, NULL, NULL, summary);
    }
    free(xa.slots);
    free(xc.slots);
}

struct config_diff *config_diff_new(const struct config *a, const struct config *b,
                                    struct lb_err *err)
{
    struct diff_builder bd = {.d = calloc(1, sizeof(struct config_diff))};
    struct cnode *ta = canonical(a), *tb = canonical(b);
    if (bd.d == NULL || ta == NULL || tb == NULL) {
        bd.failed = true;
        goto out;
    }
    /* Items without a name or id cannot be matched; canonical trees of parsed
     * configs always have them. */
    const struct cnode *fa = cn_get(ta, "frontends"), *fb = cn_get(tb, "frontends");
    const struct cnode *ba = cn_get(ta, "backends"), *bb = cn_get(tb, "backends");
    for (size_t i = 0; i < fa->n; i++)
        bd.failed |= cn_get(fa->items[i], "name") == NULL;
    for (size_t i = 0; i < fb->n; i++)
        bd.failed |= cn_get(fb->items[i], "name") == NULL;
    for (size_t i = 0; i < ba->n; i++)
        bd.failed |= cn_get(ba->items[i], "id") == NULL;
    for (size_t i = 0; i < bb->n; i++)
        bd.failed |= cn_get(bb->items[i], "id") == NULL;
    if (bd.failed) {
        lb_err_set(err, LB_EINVAL, 0, "every frontend needs a name and every backend an id");
        config_diff_free(bd.d);
        bd.d = NULL;
        cn_free(ta);
        cn_free(tb);
        return NULL;
    }
    diff_lists(&bd, fa, fb, "frontends", "name", "frontend", false);
    diff_lists(&bd, ba, bb, "backends", "id", "backend", true);
    /* A section left out for holding its defaults (ejection) compares key by
     * key against an empty map, whose keys read as their defaults. */
    static const struct cnode empty = {.kind = CN_MAP};
    for (size_t i = 0; i < cn_map_len(ta); i++) {
        const char *key = cn_key(ta, i)->s;
        if (strcmp(key, "frontends") == 0 || strcmp(key, "backends") == 0)
            continue;
        const struct cnode *sb = cn_get(tb, key);
        if (sb == NULL && strcmp(key, "ejection") == 0)
            diff_maps(&bd, cn_val(ta, i), &empty, key, key, NULL);
        else if (sb == NULL)
            diff_add(&bd, CONFIG_CHANGE_REMOVED, key, key, NULL, NULL, NULL);
        else
            diff_maps(&bd, cn_val(ta, i), sb, key, key, NULL);
    }
    for (size_t i = 0; i < cn_map_len(tb); i++) {
        const char *key = cn_key(tb, i)->s;
        if (cn_get(ta, key) == NULL && strcmp(key, "ejection") == 0)
            diff_maps(&bd, &empty, cn_val(tb, i), key, key, NULL);
        else if (cn_get(ta, key) == NULL)
            diff_add(&bd, CONFIG_CHANGE_ADDED, key, key, NULL, NULL, NULL);
    }
out:
    cn_free(ta);
    cn_free(tb);
    if (bd.failed) {
        config_diff_free(bd.d);
        lb_err_set(err, LB_ENOMEM, 0, "out of memory while comparing configs");
        return NULL;
    }
    return bd.d;
}

void config_diff_free(struct config_diff *d)
{
    if (d == NULL)
        return;
    for (size_t i = 0; i < d->n; i++) {
        free(d->changes[i].path);
        free(d->changes[i].subject);
        free(d->changes[i].field);
        free(d->changes[i].old_value);
        free(d->changes[i].new_value);
    }
    free(d->changes);
    free(d);
}

char *config_diff_text(const struct config_diff *d)
{
    struct outbuf o = {0};
    outbuf_write(&o, (unsigned char *)"", 0);
    for (size_t i = 0; i < d->n && !o.failed; i++) {
        const struct config_change *c = &d->changes[i];
        char *line = NULL;
        int n = -1;
        if (c->kind == CONFIG_CHANGE_CHANGED && c->subject)
            n = asprintf(&line, "%s: %s %s -> %s\n", c->subject, c->field, c->old_value,
                         c->new_value);
        else if (c->kind == CONFIG_CHANGE_CHANGED)
            n = asprintf(&line, "%s: %s -> %s\n", c->field, c->old_value, c->new_value);
        else if (c->kind == CONFIG_CHANGE_ADDED && c->new_value)
            n = asprintf(&line, "%s added (%s)\n", c->subject, c->new_value);
        else
            n = asprintf(&line, "%s %s\n", c->subject,
                         c->kind == CONFIG_CHANGE_ADDED ? "added" : "removed");
        if (n < 0) {
            o.failed = true;
            break;
        }
        outbuf_write(&o, (unsigned char *)line, (size_t)n);
        free(line);
    }
    if (o.failed) {
        free(o.p);
        return NULL;
    }
    return o.p;
}

static json_t *json_str_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

char *config_diff_json(const struct config_diff *d)
{
    static const char *const kinds[] = {"added", "removed", "changed"};
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < d->n; i++) {
        const struct config_change *c = &d->changes[i];
        json_t *o =
            json_pack("{s:s, s:s, s:o, s:o, s:o, s:o}", "kind", kinds[c->kind], "path", c->path,
                      "subject", json_str_or_null(c->subject), "field", json_str_or_null(c->field),
                      "old", json_str_or_null(c->old_value), "new", json_str_or_null(c->new_value));
        if (json_array_append_new(arr, o) != 0) {
            json_decref(arr);
            arr = NULL;
        }
    }
    char *s = arr ? json_dumps(arr, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(arr);
    return s;
}
