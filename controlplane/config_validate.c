/* controlplane/config_validate.c: the rules between keys, checked after
 * decoding (and for configs built in memory, without a round trip through
 * text): derived names and ids, URLs, duplicates, https-only keys, ordered
 * durations, and with check_tls the ssl files themselves. */
#include "config_int.h"

#include "lb_err.h"
#include "lb_hash.h"
#include "lb_map.h"
#include "tlscheck.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define MAX_ID 64
/* The data plane's limit (LIMITER_MAX_TRUSTED). */
#define CONFIG_MAX_TRUSTED_PROXIES 64
#define CONFIG_MAX_PROXY_FROM      64 /* as the data plane's SNAP_MAX_PROXY_FROM */

/* The node at <path> ("backends[3].url") in the decoded tree; without
 * <exact>, the nearest parent that exists. NULL without a tree. */
static const struct cnode *node_at(const struct cfg_check *v, const char *path, bool exact)
{
    const struct cnode *n = v->root;
    const char *p = path;
    while (n != NULL && *p != '\0') {
        const struct cnode *next = NULL;
        size_t len = strcspn(p, ".[");
        if (len > 0) {
            char key[128];
            snprintf(key, sizeof(key), "%.*s", (int)len, p);
            next = config__cn_get(n, key);
            p += len;
        } else if (*p == '[') {
            char *end;
            unsigned long i = strtoul(p + 1, &end, 10);
            next = n->kind == CN_SEQ && i < n->n ? n->items[i] : NULL;
            p = *end == ']' ? end + 1 : end;
        }
        if (*p == '.')
            p++;
        if (next == NULL)
            return exact ? NULL : n;
        n = next;
    }
    return n;
}

/* An error for key <path>, positioned at its node (or its nearest parent). */
__attribute__((format(printf, 3, 4))) static int fail(const struct cfg_check *v, const char *path,
                                                      const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = config__verr_at(v, node_at(v, path, false), path, fmt, ap);
    va_end(ap);
    return rc;
}

/* Whether key <path> was written: present in the source, or non-empty in a
 * config built in memory (whose export leaves empty optional keys out). */
static bool is_set(const struct cfg_check *v, const char *path, const char *value)
{
    return v->root ? node_at(v, path, true) != NULL : value[0] != '\0';
}

static void child_path(char *buf, size_t size, const char *path, const char *key)
{
    snprintf(buf, size, "%s%s%s", path, path[0] ? "." : "", key);
}

/* ---- files (only with check_tls: configs being applied) ------------------------ */

/* <file> at key <path> can be opened. Stored versions skip it, so that a
 * file gone missing never stops a start. */
static int check_file(const struct cfg_check *v, const char *path, const char *file)
{
    if (!v->check_tls || file[0] == '\0')
        return LB_OK;
    char full[4096];
    tlscheck_resolve(v->base_dir, file, full, sizeof(full));
    int fd = open(full, O_RDONLY | O_CLOEXEC);
    if (fd == -1)
        return fail(v, path, "cannot read \"%s\": %s", full, strerror(errno));
    close(fd);
    return LB_OK;
}

/* With check_tls: the files at keys <path>.certFile and <path>.keyFile form
 * a valid pair at now_ms; an error points at the key of the file at fault. */
static int check_pair(const struct cfg_check *v, const struct config *cfg, const char *path,
                      const char *cert_file, const char *key_file)
{
    if (!v->check_tls || cert_file[0] == '\0')
        return LB_OK;
    char cert_label[96], key_label[96], cert_path[4096], key_path[4096], ca_path[4096];
    child_path(cert_label, sizeof(cert_label), path, "certFile");
    child_path(key_label, sizeof(key_label), path, "keyFile");
    tlscheck_resolve(v->base_dir, cert_file, cert_path, sizeof(cert_path));
    tlscheck_resolve(v->base_dir, key_file, key_path, sizeof(key_path));
    const char *ca_file = cfg->ssl.ca_file;
    uint8_t *cert = NULL, *key = NULL, *ca = NULL;
    size_t cert_len = 0, key_len = 0, ca_len = 0;
    struct lb_err e = {0};
    int rc;
    if ((rc = tlscheck_read_file(cert_path, &cert, &cert_len, &e)) != LB_OK) {
        rc = rc == LB_ENOMEM ? config__nomem(v) : fail(v, cert_label, "%s", e.msg);
        goto out;
    }
    if ((rc = tlscheck_read_file(key_path, &key, &key_len, &e)) != LB_OK) {
        rc = rc == LB_ENOMEM ? config__nomem(v) : fail(v, key_label, "%s", e.msg);
        goto out;
    }
    if (ca_file[0] != '\0') {
        tlscheck_resolve(v->base_dir, ca_file, ca_path, sizeof(ca_path));
        if ((rc = tlscheck_read_file(ca_path, &ca, &ca_len, &e)) != LB_OK) {
            rc = rc == LB_ENOMEM ? config__nomem(v)
                                 : config__err_at(v, NULL, "ssl.caFile", "%s", e.msg);
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
        .now_ms = v->now_ms,
    };
    enum tlscheck_fault fault = TLSCHECK_FAULT_CERT;
    if ((rc = tlscheck_pair(&in, NULL, &fault, &e)) == LB_ENOMEM)
        rc = config__nomem(v);
    else if (rc != LB_OK && fault == TLSCHECK_FAULT_KEY)
        rc = fail(v, key_label, "%s", e.msg);
    else if (rc != LB_OK)
        rc = fail(v, cert_label, "%s", e.msg);
out:
    free(cert);
    free(key);
    free(ca);
    return rc;
}

/* With check_tls: <file> at key <label> parses as CA certificates, or as
 * CRLs when <crl>. */
static int check_pem(const struct cfg_check *v, const char *label, const char *file, bool crl)
{
    if (!v->check_tls || file[0] == '\0')
        return LB_OK;
    char full[4096];
    tlscheck_resolve(v->base_dir, file, full, sizeof(full));
    uint8_t *pem = NULL;
    size_t len = 0;
    struct lb_err e = {0};
    int rc = tlscheck_read_file(full, &pem, &len, &e);
    if (rc == LB_OK)
        rc = crl ? tlscheck_crl(full, pem, len, &e) : tlscheck_ca(full, pem, len, &e);
    free(pem);
    if (rc == LB_ENOMEM)
        return config__nomem(v);
    return rc == LB_OK ? LB_OK : fail(v, label, "%s", e.msg);
}

/* ---- values ------------------------------------------------------------------- */

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

/* ---- sections ------------------------------------------------------------------ */

static int check_ssl(const struct cfg_check *v, const struct config *cfg)
{
    const struct config_ssl *ssl = &cfg->ssl;
    char path[64], p[96];
    int rc;
    if (!ssl->present)
        return LB_OK;
    for (size_t i = 0; i < ssl->n_spki_pins; i++) {
        uint8_t pin[32];
        struct lb_err e;
        snprintf(p, sizeof(p), "ssl.verify.spkiPins[%zu]", i);
        if (tlscheck_pin_parse(ssl->spki_pins[i], pin, &e) != LB_OK)
            return fail(v, p, "%s", e.msg);
    }
    for (size_t i = 0; i < ssl->n_certificates; i++) {
        const struct config_certificate *c = &ssl->certificates[i];
        char q[96];
        snprintf(path, sizeof(path), "ssl.certificates[%zu]", i);
        if (c->cert_file[0] == '\0')
            return fail(v, path, "certFile is required");
        if (c->key_file[0] == '\0')
            return fail(v, path, "keyFile is required");
        child_path(p, sizeof(p), path, "certFile");
        child_path(q, sizeof(q), path, "keyFile");
        if ((rc = check_file(v, p, c->cert_file)) != LB_OK ||
            (rc = check_file(v, q, c->key_file)) != LB_OK ||
            (rc = check_pair(v, cfg, path, c->cert_file, c->key_file)) != LB_OK)
            return rc;
    }
    if (ssl->cert_file[0] != '\0' && ssl->key_file[0] == '\0')
        return fail(v, "ssl", "keyFile is required with certFile");
    if (ssl->key_file[0] != '\0' && ssl->cert_file[0] == '\0')
        return fail(v, "ssl", "certFile is required with keyFile");
    if (ssl->cert_file[0] == '\0' && ssl->n_certificates == 0)
        return fail(v, "ssl", "certFile and keyFile (or certificates) are required");
    if (ssl->client_auth >= 3 && ssl->ca_file[0] == '\0')
        return fail(v, "ssl.clientAuth", "%u verifies client certificates and needs caFile",
                    ssl->client_auth);
    if ((rc = check_file(v, "ssl.certFile", ssl->cert_file)) != LB_OK ||
        (rc = check_file(v, "ssl.keyFile", ssl->key_file)) != LB_OK ||
        (rc = check_file(v, "ssl.caFile", ssl->ca_file)) != LB_OK ||
        (rc = check_file(v, "ssl.crlFile", ssl->crl_file)) != LB_OK ||
        (rc = check_pem(v, "ssl.caFile", ssl->ca_file, false)) != LB_OK ||
        (rc = check_pem(v, "ssl.crlFile", ssl->crl_file, true)) != LB_OK ||
        (rc = check_pair(v, cfg, "ssl", ssl->cert_file, ssl->key_file)) != LB_OK)
        return rc;
    return LB_OK;
}

/* Derives an absent name as "http-<port>". */
static int check_frontends(const struct cfg_check *v, struct config *cfg)
{
    char path[64], p[96];
    for (size_t i = 0; i < cfg->n_frontends; i++) {
        struct config_frontend *f = &cfg->frontends[i];
        snprintf(path, sizeof(path), "frontends[%zu]", i);
        if (f->name == NULL) {
            char buf[32];
            snprintf(buf, sizeof(buf), "http-%u", f->port);
            if ((f->name = strdup(buf)) == NULL)
                return config__nomem(v);
        } else if (!valid_id(f->name)) {
            child_path(p, sizeof(p), path, "name");
            return fail(v, p,
                        "\"%s\" is not a valid name (1..64 letters, digits, '-', '_', '.', ':')",
                        f->name);
        }
        if (!valid_ip(f->address)) {
            child_path(p, sizeof(p), path, "address");
            return fail(v, p, "\"%s\" is not an IPv4 or IPv6 address", f->address);
        }
        if (f->n_proxy_from > CONFIG_MAX_PROXY_FROM) {
            child_path(p, sizeof(p), path, "proxyProtocolFrom");
            return fail(v, p, "%zu entries, at most %d", f->n_proxy_from, CONFIG_MAX_PROXY_FROM);
        }
        for (size_t k = 0; k < f->n_proxy_from; k++) {
            char q[128];
            snprintf(q, sizeof(q), "%s.proxyProtocolFrom[%zu]", path, k);
            if (!valid_cidr(f->proxy_from[k]))
                return fail(v, q, "\"%.64s\" is not a CIDR (address[/bits])", f->proxy_from[k]);
        }
        if (f->tls && f->http2_cleartext) {
            child_path(p, sizeof(p), path, "http2Cleartext");
            return fail(v, p,
                        "is for plain frontends; a TLS frontend offers HTTP/2 by ALPN (http2)");
        }
        if (f->tls && !cfg->ssl.present) {
            child_path(p, sizeof(p), path, "tls");
            return fail(v, p, "a TLS frontend needs the ssl section with certFile and keyFile");
        }
        for (size_t j = 0; j < i; j++) {
            const struct config_frontend *o = &cfg->frontends[j];
            if (o->port == f->port && strcmp(o->address, f->address) == 0) {
                child_path(p, sizeof(p), path, "port");
                return fail(v, p, "port %u on %s is already used by frontends[%zu]", f->port,
                            f->address, j);
            }
            if (strcmp(o->name, f->name) == 0) {
                child_path(p, sizeof(p), path, "name");
                return fail(v, p, "name \"%s\" is already used by frontends[%zu]", f->name, j);
            }
        }
    }
    return LB_OK;
}

/* Indexes of backends by id and by server, so that duplicates are found in
 * linear time: a 10,000-backend config spent most of its apply in the pairwise
 * comparison. */
struct bindex {
    struct lb_map by_id;     /* id -> struct config_backend */
    struct lb_map by_server; /* (host, port, https) -> struct config_backend */
};

static uint64_t hash_server(const void *key)
{
    const struct config_backend *b = key;
    uint64_t h = lb_hash_fnv1a_str(b->host);
    h = lb_hash_fnv1a_more(h, &b->port, sizeof(b->port));
    return lb_hash_fnv1a_more(h, &b->https, sizeof(b->https));
}

static bool same_server(const void *x, const void *y)
{
    const struct config_backend *a = x, *b = y;
    return a->https == b->https && a->port == b->port && strcmp(a->host, b->host) == 0;
}

/* Index of an entry equal to backends[i] in <m>, or SIZE_MAX after adding i
 * (under <key>: its id, or itself for the server index). */
static size_t bindex_put(struct lb_map *m, const void *key, const struct config_backend *bs,
                         size_t i)
{
    void *was = NULL;
    if (lb_map_add(m, key, (void *)&bs[i], &was) != LB_MAP_EXISTS)
        return SIZE_MAX; /* room was reserved: never LB_MAP_NOMEM */
    return (size_t)((const struct config_backend *)was - bs);
}

/* Sets host, port and https from the url and derives an absent id as
 * "<host>-<port>". */
static int check_backend(const struct cfg_check *v, struct config *cfg, size_t i, struct bindex *x)
{
    struct config_backend *b = &cfg->backends[i];
    char path[64], p[96], reason[128];
    snprintf(path, sizeof(path), "backends[%zu]", i);
    child_path(p, sizeof(p), path, "url");
    free(b->host);
    b->host = NULL;
    if (!parse_url(b->url, &b->https, &b->host, &b->port, reason, sizeof(reason)))
        return fail(v, p, "%s", reason);
    char ca_path[96], sni_path[96];
    child_path(ca_path, sizeof(ca_path), path, "caFile");
    child_path(sni_path, sizeof(sni_path), path, "sni");
    bool ca_set = is_set(v, ca_path, b->ca_file), sni_set = is_set(v, sni_path, b->sni);
    if (!b->https && (ca_set || sni_set))
        return fail(v, ca_set ? ca_path : sni_path, "%s applies only to https:// backends",
                    ca_set ? "caFile" : "sni");
    if (b->sni[0] != '\0' && !valid_server_name(b->sni))
        return fail(v, sni_path, "\"%.64s\" is not a server name", b->sni);
    int rc;
    if ((rc = check_file(v, ca_path, b->ca_file)) != LB_OK ||
        (rc = check_pem(v, ca_path, b->ca_file, false)) != LB_OK)
        return rc;
    bool derived = b->id == NULL;
    if (derived) {
        char buf[300];
        snprintf(buf, sizeof(buf), "%s-%u", b->host, b->port);
        if ((b->id = strdup(buf)) == NULL)
            return config__nomem(v);
        if (!valid_id(b->id))
            return fail(v, p, "the id derived from the URL (\"%.64s\") is too long; set id", b->id);
    } else if (!valid_id(b->id)) {
        child_path(p, sizeof(p), path, "id");
        return fail(v, p, "\"%s\" is not a valid id (1..64 letters, digits, '-', '_', '.', ':')",
                    b->id);
    }
    size_t j = bindex_put(&x->by_server, b, cfg->backends, i);
    if (j != SIZE_MAX)
        return fail(v, p, "%s is the same server as backends[%zu]", b->url, j);
    if ((j = bindex_put(&x->by_id, b->id, cfg->backends, i)) == SIZE_MAX)
        return LB_OK;
    if (derived)
        return fail(v, p, "id \"%s\" is already used by backends[%zu]; set id", b->id, j);
    child_path(p, sizeof(p), path, "id");
    return fail(v, p, "id \"%s\" is already used by backends[%zu]", b->id, j);
}

static int check_backends(const struct cfg_check *v, struct config *cfg)
{
    struct bindex x;
    lb_map_init(&x.by_id, NULL, NULL);
    lb_map_init(&x.by_server, hash_server, same_server);
    int rc = LB_OK;
    if (cfg->n_backends > UINT32_MAX / 2 || !lb_map_reserve(&x.by_id, (uint32_t)cfg->n_backends) ||
        !lb_map_reserve(&x.by_server, (uint32_t)cfg->n_backends))
        rc = config__nomem(v);
    for (size_t i = 0; i < cfg->n_backends && rc == LB_OK; i++)
        rc = check_backend(v, cfg, i, &x);
    lb_map_deinit(&x.by_id);
    lb_map_deinit(&x.by_server);
    return rc;
}

static int check_ratelimit(const struct cfg_check *v, const struct config_ratelimit *r)
{
    if (r->n_trusted_proxies > CONFIG_MAX_TRUSTED_PROXIES)
        return fail(v, "ratelimit.trustedProxies", "%zu entries, at most %d", r->n_trusted_proxies,
                    CONFIG_MAX_TRUSTED_PROXIES);
    for (size_t i = 0; i < r->n_trusted_proxies; i++) {
        char p[64];
        snprintf(p, sizeof(p), "ratelimit.trustedProxies[%zu]", i);
        if (!valid_cidr(r->trusted_proxies[i]))
            return fail(v, p, "\"%.64s\" is not a CIDR (address[/bits])", r->trusted_proxies[i]);
    }
    if (r->enabled && r->rate == 0)
        return fail(v, "ratelimit.rate", "must be at least 1 when the rate limit is enabled");
    if (r->enabled && !r->per_client && !r->global)
        return fail(v, "ratelimit", "an enabled rate limit needs perClient or global");
    return LB_OK;
}

/* <later> (key <path>) must not be below <earlier>: "<later> is below <what>". */
static int check_order(const struct cfg_check *v, const char *path, uint32_t later,
                       uint32_t earlier, const char *what)
{
    char a[32], b[32];
    if (later >= earlier)
        return LB_OK;
    return fail(v, path, "%s is below %s %s", config_duration_format(later, a, sizeof(a)), what,
                config_duration_format(earlier, b, sizeof(b)));
}

/* The sections' rules, in the order of their keys. */
static int check_sections(const struct cfg_check *v, const struct config *cfg)
{
    const struct config_healthcheck *h = &cfg->healthcheck;
    char a[32], b[32];
    int rc;
    if (h->expected_status != 0 && h->expected_status < 100)
        return fail(v, "healthcheck.expectedStatus",
                    "%u is out of range (0 for any 2xx or 3xx, else 100..599)", h->expected_status);
    if (h->path[0] != '/')
        return fail(v, "healthcheck.path", "\"%s\" must start with '/'", h->path);
    if (h->timeout_ms > h->interval_ms)
        return fail(v, "healthcheck.timeout", "%s must not exceed the interval %s",
                    config_duration_format(h->timeout_ms, a, sizeof(a)),
                    config_duration_format(h->interval_ms, b, sizeof(b)));
    if ((rc = check_ratelimit(v, &cfg->ratelimit)) != LB_OK ||
        (rc = check_order(v, "circuitbreaker.maxTimeout", cfg->circuitbreaker.max_timeout_ms,
                          cfg->circuitbreaker.timeout_ms, "the timeout")) != LB_OK ||
        (rc = check_order(v, "retries.backoffCap", cfg->retries.backoff_cap_ms,
                          cfg->retries.backoff_base_ms, "backoffBase")) != LB_OK ||
        (rc = check_order(v, "ejection.maxProbeInterval", cfg->ejection.max_probe_interval_ms,
                          cfg->ejection.probe_interval_ms, "probeInterval")) != LB_OK)
        return rc;
    if (cfg->balancing.slow_start_ms > 3600000)
        return fail(v, "balancing.slowStart", "%s is over 1h",
                    config_duration_format(cfg->balancing.slow_start_ms, a, sizeof(a)));
    const struct config_limits *l = &cfg->limits;
    if (l->max_request_line > l->max_header_bytes)
        return fail(v, "limits.maxRequestLine",
                    "%u is larger than maxHeaderBytes (%u), which includes the request line",
                    l->max_request_line, l->max_header_bytes);
    if (!valid_ip(cfg->metrics.address))
        return fail(v, "metrics.address", "\"%s\" is not an IPv4 or IPv6 address",
                    cfg->metrics.address);
    return LB_OK;
}

/* ---- a config built in memory ---------------------------------------------------- */

/* Each value against its row, as decoding checks it, with its canonical text. */
static int check_values(const struct cfg_check *v, const void *base, const char *prefix,
                        const char *path)
{
    char p[160], sub[128], buf[32], list[120];
    int rc = LB_OK;
    for (const struct cfg_key *k = config__next_child(prefix, NULL); k && rc == LB_OK;
         k = config__next_child(prefix, k)) {
        if (k->flags & CFG_HIDDEN)
            continue;
        child_path(p, sizeof(p), path, config__key_name(k));
        const void *f = config__cfield(base, k);
        uint32_t x = k->type == CFG_UINT || k->type == CFG_DURATION ? *(const uint32_t *)f : 0;
        const char *text = k->type == CFG_LIST || k->type == CFG_STRLIST || k->type == CFG_SECTION
                               ? ""
                               : config__scalar_text(base, k, buf, sizeof(buf));
        if (k->type == CFG_SECTION && (!(k->flags & CFG_OMIT_UNMARKED) || *(const bool *)f)) {
            rc = check_values(v, base, k->path, p);
        } else if (k->type == CFG_LIST) {
            config__child_prefix(k, sub, sizeof(sub));
            size_t n = *(const size_t *)((const char *)base + k->n_at);
            if (n == 0 && (k->flags & CFG_REQUIRED))
                rc = fail(v, p, "the list is empty; at least one %s is needed", k->what);
            for (size_t i = 0; i < n && rc == LB_OK; i++) {
                char q[192];
                snprintf(q, sizeof(q), "%s[%zu]", p, i);
                rc = check_values(v, *(char *const *)f + i * k->size, sub, q);
            }
        } else if (k->type == CFG_STRLIST && (k->flags & CFG_NONEMPTY)) {
            size_t n = *(const size_t *)((const char *)base + k->n_at);
            for (size_t i = 0; i < n && rc == LB_OK; i++) {
                char q[192];
                snprintf(q, sizeof(q), "%s[%zu]", p, i);
                if ((*(char **const *)f)[i][0] == '\0')
                    rc = fail(v, q, "expected %s, got \"\"", k->what);
            }
        } else if (k->type == CFG_UINT && (x < k->min || x > k->max)) {
            rc = fail(v, p, "%s is out of range (%u..%u)", text, k->min, k->max);
        } else if (k->type == CFG_DURATION && x < k->min) {
            rc = fail(v, p, "%s is too short (at least %s)", text,
                      config_duration_format(k->min, list, sizeof(list)));
        } else if (k->type == CFG_DURATION && k->max != 0 && x > k->max) {
            rc = fail(v, p, "%s is too long (at most %s)", text,
                      config_duration_format(k->max, list, sizeof(list)));
        } else if (k->choices != NULL) {
            bool known = false;
            for (size_t i = 0; k->choices[i] && !known; i++)
                known = strcmp(k->choices[i], text) == 0;
            config__choice_list(k->choices, list, sizeof(list));
            if (!known)
                rc = fail(v, p, "unknown %s \"%s\" (expected %s)",
                          k->what ? k->what : config__key_name(k), text, list);
        }
    }
    return rc;
}

/* What the export of a config built in memory leaves out or fills in, so
 * that it reads as its parsed export would: NULL strings "", empty derived
 * keys absent, empty or zero values with a default set to it, a section
 * not marked present back to its defaults. */
static bool fill_unset(void *base, const char *prefix)
{
    bool ok = true;
    char sub[128];
    CONFIG_EACH_CHILD(k, prefix)
    {
        void *f = config__field(base, k);
        if (k->type == CFG_SECTION && (k->flags & CFG_OMIT_UNMARKED) && !*(bool *)f) {
            config__free_fields(base, k->path);
            ok &= config__set_defaults(base, k->path) == 0;
        } else if (k->type == CFG_SECTION) {
            ok &= fill_unset(base, k->path);
        } else if (k->type == CFG_LIST) {
            config__child_prefix(k, sub, sizeof(sub));
            for (size_t i = 0; i < *(size_t *)((char *)base + k->n_at); i++)
                ok &= fill_unset(*(char **)f + i * k->size, sub);
        } else if (k->type == CFG_STR && !(k->flags & CFG_HIDDEN)) {
            char **s = f;
            bool empty = *s == NULL || (*s)[0] == '\0';
            const char *want = NULL;
            if (empty && (k->flags & CFG_EMPTY_DEFAULT))
                want = k->def;
            else if (*s == NULL && !(k->flags & CFG_DERIVED))
                want = "";
            if (empty && (k->flags & CFG_DERIVED)) {
                free(*s);
                *s = NULL;
            } else if (want != NULL) {
                free(*s);
                ok &= (*s = strdup(want)) != NULL;
            }
        } else if (k->type == CFG_UINT && (k->flags & CFG_ZERO_DEFAULT) && *(uint32_t *)f == 0) {
            *(uint32_t *)f = (uint32_t)strtoul(k->def, NULL, 10);
        }
    }
    return ok;
}

int config__check(const struct cfg_check *v, struct config *cfg)
{
    int rc;
    if (v->root == NULL && (rc = check_values(v, cfg, "", "")) != LB_OK)
        return rc;
    if ((rc = check_ssl(v, cfg)) != LB_OK || (rc = check_frontends(v, cfg)) != LB_OK ||
        (rc = check_backends(v, cfg)) != LB_OK || (rc = check_sections(v, cfg)) != LB_OK)
        return rc;
    return LB_OK;
}

int config_normalize(struct config *cfg, const char *base_dir, struct lb_err *err)
{
    struct cfg_check v = {.base_dir = base_dir, .err = err};
    if (!fill_unset(cfg, ""))
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory while validating the config");
    return config__check(&v, cfg);
}

int config_validate(const struct config *cfg, const char *base_dir, struct lb_err *err)
{
    struct config *copy = config_dup(cfg);
    if (copy == NULL)
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory while validating the config");
    int rc = config_normalize(copy, base_dir, err);
    config_free(copy);
    return rc;
}
