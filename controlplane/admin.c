/* controlplane/admin.c: the admin API server (see admin.h). */
#include "admin.h"

#include "config.h"
#include "cp.h"
#include "health.h"
#include "http1.h"
#include "lb_err.h"
#include "lb_log.h"
#include "lb_prom.h"
#include "publisher.h"
#include "store.h"
#include "tlscheck.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <jansson.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

struct token {
    char *name;
    char *secret;
    bool rw;
};

/* One (method, status) pair of lb_cp_api_requests_total. */
struct api_count {
    const char *method;
    unsigned status;
    uint64_t n;
};

#define API_COUNT_MAX  96
#define ADMIN_LINGER_S 2.0 /* bound on discarding input after a final answer */

struct conn {
    struct admin *a;
    struct conn *prev, *next;
    int fd;
    bool tcp;      /* came through the TCP listener: needs a token */
    long uid;      /* peer uid on the unix socket, -1 on TCP */
    ev_io rio;     /* readable */
    ev_io wio;     /* writable while output is pending */
    ev_timer idle; /* ADMIN_TIMEOUT_S without progress closes */
    char *in;      /* received bytes not consumed yet */
    size_t in_len, in_cap;
    char *out; /* response bytes */
    size_t out_len, out_off;
    bool close_after;   /* close once <out> is written */
    bool continue_sent; /* "100 Continue" sent for the current request */
    bool lingering;     /* answered and shut down for writing: discard input until EOF */
    struct http1_parser parser;
};

struct admin {
    struct ev_loop *loop;
    struct cp *cp;         /* borrowed */
    int unix_fd, tcp_fd;   /* -1 = none */
    ev_io unix_io, tcp_io; /* accept watchers */
    ev_timer accept_pause; /* accepting again after running out of descriptors */
    char *unix_path;       /* the socket file we created */
    dev_t unix_dev;        /* identity of that file, so admin_free removes only ours */
    ino_t unix_ino;
    uint16_t tcp_port;
    struct token *tokens;
    size_t n_tokens;
    struct conn *conns; /* open connections */
    size_t n_conns;
    struct api_count counts[API_COUNT_MAX];
    size_t n_counts;
};

/* What one request is about, for the handlers. */
struct req {
    struct conn *c;
    const struct http1_msg *msg;
    const char *body;
    size_t body_len;
    char author[80];
    const char *method; /* "GET", ... or "OTHER" */
};

static const struct http1_limits limits = {
    .max_request_line = 8192,
    .max_header_bytes = ADMIN_HEAD_MAX,
    .max_headers = ADMIN_MAX_HEADERS,
};

/* ---- responses -------------------------------------------------------------- */

static void count_request(struct admin *a, const char *method, unsigned status)
{
    for (size_t i = 0; i < a->n_counts; i++) {
        if (a->counts[i].status == status && strcmp(a->counts[i].method, method) == 0) {
            a->counts[i].n++;
            return;
        }
    }
    if (a->n_counts < API_COUNT_MAX)
        a->counts[a->n_counts++] = (struct api_count){method, status, 1};
}

static void conn_close(struct conn *c);
static void conn_flush(struct conn *c);

/* Queues one complete response; <extra> holds more header lines ("X: y\r\n"). */
static void respond(struct req *r, unsigned status, const char *ctype, const char *body, size_t len,
                    const char *extra)
{
    struct conn *c = r->c;
    count_request(c->a, r->method, status);
    char head[512];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %u %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Cache-Control: no-store\r\n%s%s\r\n",
                     status, http1_reason(status), ctype, len, extra ? extra : "",
                     c->close_after ? "Connection: close\r\n" : "");
    if (n < 0 || (size_t)n >= sizeof(head)) {
        c->close_after = true;
        return;
    }
    size_t need = c->out_len + (size_t)n + len;
    char *o = realloc(c->out, need ? need : 1);
    if (o == NULL) {
        c->close_after = true;
        return;
    }
    c->out = o;
    memcpy(c->out + c->out_len, head, (size_t)n);
    if (len)
        memcpy(c->out + c->out_len + (size_t)n, body, len);
    c->out_len = need;
}

/* Serialises <j> (taken) as the body. */
static void respond_json(struct req *r, unsigned status, json_t *j)
{
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (text == NULL) {
        static const char oom[] =
            "{\"error\":{\"code\":\"internal\",\"message\":\"out of memory\"}}";
        respond(r, 500, "application/json", oom, sizeof(oom) - 1, NULL);
        return;
    }
    size_t len = strlen(text);
    text[len] = '\n';
    respond(r, status, "application/json", text, len + 1, NULL);
    free(text);
}

static void respond_error_x(struct req *r, unsigned status, const char *code, const char *extra,
                            const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void respond_error_x(struct req *r, unsigned status, const char *code, const char *extra,
                            const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    json_t *j = json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", msg);
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (text == NULL) {
        respond(r, 500, "application/json", "{}", 2, NULL);
        return;
    }
    size_t len = strlen(text);
    text[len] = '\n';
    respond(r, status, "application/json", text, len + 1, extra);
    free(text);
}

#define respond_error(r, status, code, ...) respond_error_x(r, status, code, NULL, __VA_ARGS__)

/* Maps a core error to the API's status and code. */
static void respond_lb_err(struct req *r, const struct lb_err *e)
{
    switch (e->code) {
    case LB_EINVAL:
    case LB_ESYS: /* an unreadable TLS file named by the config */
        respond_error(r, 400, "invalid_config", "%s", e->msg);
        break;
    case LB_ECONFLICT:
        respond_error(r, 409, "conflict", "%s", e->msg);
        break;
    case LB_ENOTFOUND:
        respond_error(r, 404, "not_found", "%s", e->msg);
        break;
    case LB_ESTORE:
        respond_error(r, 500, "store_failed", "%s", e->msg);
        break;
    default:
        respond_error(r, 500, "internal", "%s", e->msg[0] ? e->msg : "internal error");
        break;
    }
}

/* ---- request helpers ----------------------------------------------------------- */

static const struct http1_header *find_header(const struct http1_msg *m, const char *name)
{
    for (uint32_t i = 0; i < m->n_headers; i++)
        if (http1_slice_eq(m->headers[i].name, name))
            return &m->headers[i];
    return NULL;
}

static bool slice_prefix(struct http1_slice s, const char *lit)
{
    size_t n = strlen(lit);
    return s.len >= n && strncasecmp(s.p, lit, n) == 0;
}

/* Parses a plain decimal uint64 (1..) from [p, p+len). */
static bool parse_u64(const char *p, size_t len, uint64_t *out)
{
    if (len == 0 || len > 19)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (p[i] < '0' || p[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(p[i] - '0');
    }
    *out = v;
    return true;
}

/* Reads If-Match into <w>; false (and an answer queued) when malformed. */
static bool read_if_match(struct req *r, uint64_t *expected)
{
    *expected = 0;
    const struct http1_header *h = find_header(r->msg, "If-Match");
    if (h == NULL)
        return true;
    const char *p = h->value.p;
    size_t len = h->value.len;
    if (len >= 2 && p[0] == '"' && p[len - 1] == '"') {
        p++;
        len -= 2;
    }
    if (!parse_u64(p, len, expected) || *expected == 0) {
        respond_error(r, 400, "invalid_request", "If-Match must be a config version number");
        return false;
    }
    return true;
}

/* The comment of a write: <json_comment> when the body is JSON (may be
 * NULL), else X-Lb-Comment. Copied into <buf>. False (answered) when too long. */
static bool read_comment(struct req *r, const json_t *body, char *buf, size_t size)
{
    buf[0] = '\0';
    if (body != NULL) {
        const json_t *cm = json_object_get(body, "comment");
        if (cm == NULL || json_is_null(cm))
            return true;
        if (!json_is_string(cm)) {
            respond_error(r, 400, "invalid_request", "comment must be a string");
            return false;
        }
        if (json_string_length(cm) > ADMIN_COMMENT_MAX) {
            respond_error(r, 400, "invalid_request", "comment is longer than %d bytes",
                          ADMIN_COMMENT_MAX);
            return false;
        }
        snprintf(buf, size, "%s", json_string_value(cm));
        return true;
    }
    const struct http1_header *h = find_header(r->msg, "X-Lb-Comment");
    if (h == NULL)
        return true;
    if (h->value.len > ADMIN_COMMENT_MAX) {
        respond_error(r, 400, "invalid_request", "X-Lb-Comment is longer than %d bytes",
                      ADMIN_COMMENT_MAX);
        return false;
    }
    snprintf(buf, size, "%.*s", (int)h->value.len, h->value.p);
    return true;
}

/* Parses the body as a JSON object; NULL (answered) when it is not one. */
static json_t *read_json_body(struct req *r)
{
    json_error_t je;
    json_t *j = json_loadb(r->body, r->body_len, JSON_REJECT_DUPLICATES, &je);
    if (j == NULL) {
        respond_error(r, 400, "invalid_json", "%d:%d: %s", je.line, je.column, je.text);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        respond_error(r, 400, "invalid_json", "the body must be a JSON object");
        return NULL;
    }
    return j;
}

/* Refuses members other than <allowed> (NULL-terminated); true when fine. */
static bool only_keys(struct req *r, json_t *obj, const char *const *allowed)
{
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v)
    {
        bool ok = false;
        for (size_t i = 0; allowed[i] && !ok; i++)
            ok = strcmp(allowed[i], key) == 0;
        if (!ok) {
            respond_error(r, 400, "invalid_request", "unknown field \"%s\"", key);
            return false;
        }
    }
    return true;
}

/* Value of query parameter <key> in <query> (not decoded), length in <len>. */
static const char *query_get(const char *query, size_t qlen, const char *key, size_t *len)
{
    size_t klen = strlen(key);
    const char *p = query, *end = query + qlen;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp ? amp : end;
        if ((size_t)(stop - p) > klen && strncmp(p, key, klen) == 0 && p[klen] == '=') {
            *len = (size_t)(stop - p - (ptrdiff_t)klen - 1);
            return p + klen + 1;
        }
        p = stop + 1;
    }
    return NULL;
}

/* ---- JSON views ---------------------------------------------------------------- */

/* Most changes listed in the answer of POST /api/v1/config. */
#define ADMIN_MAX_CHANGES 1000

static int64_t admin_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static json_t *backend_json(struct cp *cp, const struct config_backend *b)
{
    struct store_backend_health *h = NULL;
    const char *health = "unknown";
    json_t *last_check = json_null(), *last_error = json_null();
    if (cp_health_get(cp, b->id, &h, NULL) == LB_OK) {
        health = h->health == STORE_HEALTH_UP     ? "up"
                 : h->health == STORE_HEALTH_DOWN ? "down"
                                                  : "unknown";
        if (h->last_check_unix_ms > 0)
            last_check = json_integer(h->last_check_unix_ms);
        if (h->last_error[0])
            last_error = json_string(h->last_error);
        store_health_free(h);
    }
    /* <b> is an element of cp_config()'s backends; the reports are keyed by its index. */
    struct cp_backend_runtime rt;
    cp_backend_runtime(cp, (size_t)(b - cp_config(cp)->backends), admin_now_ms(), &rt);
    json_t *j =
        json_pack("{s:s,s:s,s:I,s:s,s:s,s:o,s:o,s:s,s:I,s:I,s:I}", "id", b->id, "url", b->url,
                  "weight", (json_int_t)b->weight, "state", config_backend_state_name(b->state),
                  "health", health, "last_check_ms", last_check, "last_error", last_error,
                  "breaker", rt.breaker, "requests", (json_int_t)rt.requests, "errors",
                  (json_int_t)rt.errors, "effective_weight", (json_int_t)rt.effective_weight);
    /* The limits as configured, the rest from the data planes that reported
     * in the last 10 s: ejected by any of them, the others summed. */
    if (j != NULL &&
        (json_object_set_new(j, "maxConnections", json_integer(b->max_connections)) != 0 ||
         json_object_set_new(
             j, "maxQueue", json_integer(b->max_queue ? b->max_queue : CONFIG_DEFAULT_MAX_QUEUE)) !=
             0 ||
         json_object_set_new(j, "ejected", json_boolean(rt.ejected)) != 0 ||
         json_object_set_new(j, "ejectedBy", json_integer(rt.ejected_by)) != 0 ||
         json_object_set_new(j, "ejections", json_integer((json_int_t)rt.ejections)) != 0 ||
         json_object_set_new(j, "connections", json_integer((json_int_t)rt.connections)) != 0 ||
         json_object_set_new(j, "queued", json_integer((json_int_t)rt.queued)) != 0 ||
         json_object_set_new(j, "queueTimeouts", json_integer((json_int_t)rt.queue_timeouts)) !=
             0)) {
        json_decref(j);
        j = NULL;
    }
    /* As written in the config ("" = the system store, the URL's host); an
     * http:// backend has neither. */
    if (j != NULL && b->https &&
        (json_object_set_new(j, "caFile", json_string(b->ca_file ? b->ca_file : "")) != 0 ||
         json_object_set_new(j, "sni", json_string(b->sni ? b->sni : "")) != 0)) {
        json_decref(j);
        j = NULL;
    }
    return j;
}

static json_t *version_json(const struct store_version *v, uint64_t active, bool content)
{
    json_t *j = json_pack("{s:I,s:I,s:s,s:s,s:s,s:b}", "version", (json_int_t)v->number,
                          "created_ms", (json_int_t)v->created_unix_ms, "author", v->author,
                          "comment", v->comment, "hash", v->hash, "active", v->number == active);
    if (j != NULL && content)
        json_object_set_new(j, "content", json_string(v->content));
    return j;
}

/* JSON text made by config.c, parsed back to embed it. */
static json_t *embed(char *text)
{
    if (text == NULL)
        return NULL;
    json_t *j = json_loads(text, 0, NULL);
    free(text);
    return j;
}

/* ---- handlers ------------------------------------------------------------------- */

static void h_health(struct req *r)
{
    struct cp *cp = r->c->a->cp;
    respond_json(r, 200,
                 json_pack("{s:s,s:I,s:I}", "status", "ok", "active_version",
                           (json_int_t)cp_active_version(cp), "generation",
                           (json_int_t)cp_generation(cp)));
}

static void h_metrics(struct req *r)
{
    struct admin *a = r->c->a;
    struct cp *cp = a->cp;
    struct publisher *pub = cp_publisher(cp);
    uint64_t total = 0;
    struct store_dataplane *dps = NULL;
    size_t n = 0;
    struct lb_err e = {0};
    if (cp_versions_total(cp, &total, &e) != LB_OK || cp_dataplanes(cp, &dps, &n, &e) != LB_OK) {
        respond_lb_err(r, &e);
        return;
    }
    struct lb_prom p;
    lb_prom_init(&p);
    lb_prom_family(&p, "lb_cp_config_version", "gauge", "Active config version (0 = none).");
    lb_prom_u64(&p, "lb_cp_config_version", NULL, 0, cp_active_version(cp));
    lb_prom_family(&p, "lb_cp_snapshot_generation", "gauge",
                   "Generation of the snapshot being published (0 = none).");
    lb_prom_u64(&p, "lb_cp_snapshot_generation", NULL, 0, cp_generation(cp));
    lb_prom_family(&p, "lb_cp_config_versions_total", "counter", "Config versions ever stored.");
    lb_prom_u64(&p, "lb_cp_config_versions_total", NULL, 0, total);
    lb_prom_family(&p, "lb_cp_publishes_total", "counter",
                   "Snapshot publications, republishes included.");
    lb_prom_u64(&p, "lb_cp_publishes_total", NULL, 0, pub ? publisher_publishes(pub) : 0);
    lb_prom_family(&p, "lb_cp_dataplanes", "gauge", "Data planes that ever reported.");
    lb_prom_u64(&p, "lb_cp_dataplanes", NULL, 0, n);
    lb_prom_family(&p, "lb_cp_dataplane_lag_generations", "gauge",
                   "Generations the data plane is behind the published one.");
    uint64_t gen = cp_generation(cp);
    for (size_t i = 0; i < n; i++) {
        struct lb_prom_label l = {"node", dps[i].node_id};
        lb_prom_u64(&p, "lb_cp_dataplane_lag_generations", &l, 1,
                    gen > dps[i].applied_generation ? gen - dps[i].applied_generation : 0);
    }
    lb_prom_family(&p, "lb_cp_dataplane_last_seen_seconds", "gauge",
                   "Unix time of the data plane's last report, in seconds.");
    for (size_t i = 0; i < n; i++) {
        struct lb_prom_label l = {"node", dps[i].node_id};
        lb_prom_f64(&p, "lb_cp_dataplane_last_seen_seconds", &l, 1,
                    (double)dps[i].last_report_unix_ms / 1000.0);
    }
    store_dataplanes_free(dps, n);
    struct health_counts hc;
    health_counts_get(cp_health(cp), &hc);
    lb_prom_family(&p, "lb_cp_backends_up", "gauge", "Checked backends whose health is up.");
    lb_prom_u64(&p, "lb_cp_backends_up", NULL, 0, hc.up);
    lb_prom_family(&p, "lb_cp_backends_down", "gauge", "Checked backends whose health is down.");
    lb_prom_u64(&p, "lb_cp_backends_down", NULL, 0, hc.down);
    lb_prom_family(&p, "lb_cp_health_checks_total", "counter",
                   "Active health checks: finished (pass, fail), or skipped because the "
                   "control plane ran out of descriptors, memory or ports.");
    struct lb_prom_label pass = {"result", "pass"}, fail = {"result", "fail"},
                         skip = {"result", "skipped"};
    lb_prom_u64(&p, "lb_cp_health_checks_total", &pass, 1, hc.passes);
    lb_prom_u64(&p, "lb_cp_health_checks_total", &fail, 1, hc.fails);
    lb_prom_u64(&p, "lb_cp_health_checks_total", &skip, 1, hc.skips);
    lb_prom_family(&p, "lb_cp_pool_all_down", "gauge",
                   "1 when every checked backend is down, else 0.");
    lb_prom_u64(&p, "lb_cp_pool_all_down", NULL, 0, health_pool_all_down(cp_health(cp)) ? 1 : 0);
    lb_prom_family(&p, "lb_cp_backend_breaker_open", "gauge",
                   "Data planes reporting the backend's circuit breaker open (last 10 s).");
    const struct config *bcfg = cp_config(cp);
    int64_t bnow = admin_now_ms();
    for (size_t i = 0; bcfg != NULL && i < bcfg->n_backends; i++) {
        struct cp_backend_runtime rt;
        cp_backend_runtime(cp, i, bnow, &rt);
        struct lb_prom_label l = {"backend", bcfg->backends[i].id};
        lb_prom_u64(&p, "lb_cp_backend_breaker_open", &l, 1, rt.breaker_open);
    }
    lb_prom_family(&p, "lb_cp_backend_ejected", "gauge",
                   "1 when a data plane that reported in the last 10 s has the backend "
                   "ejected after failed connects, else 0.");
    for (size_t i = 0; bcfg != NULL && i < bcfg->n_backends; i++) {
        struct cp_backend_runtime rt;
        cp_backend_runtime(cp, i, bnow, &rt);
        struct lb_prom_label l = {"backend", bcfg->backends[i].id};
        lb_prom_u64(&p, "lb_cp_backend_ejected", &l, 1, rt.ejected ? 1 : 0);
    }
    struct cp_tls_status tls;
    cp_tls_status(cp, &tls);
    lb_prom_family(&p, "lb_cp_tls_cert_not_after_seconds", "gauge",
                   "Unix time at which each served certificate expires.");
    for (size_t i = 0; tls.bundle != NULL && i < tls.bundle->n_certs; i++) {
        struct lb_prom_label l = {"cert", tls.bundle->certs[i].cert->name};
        lb_prom_f64(&p, "lb_cp_tls_cert_not_after_seconds", &l, 1,
                    (double)tls.bundle->certs[i].info.not_after_ms / 1000.0);
    }
    lb_prom_family(&p, "lb_cp_tls_backend_ca_not_after_seconds", "gauge",
                   "Unix time at which the first certificate of each backend's caFile expires.");
    for (size_t i = 0; tls.bundle != NULL && i < tls.bundle->n_backend_cas; i++) {
        const struct tlscheck_backend_ca *ca = &tls.bundle->backend_cas[i];
        struct lb_prom_label l[2] = {{"backend", ca->backend}, {"file", ca->file.name}};
        lb_prom_f64(&p, "lb_cp_tls_backend_ca_not_after_seconds", l, 2,
                    (double)ca->info.not_after_ms / 1000.0);
    }
    lb_prom_family(&p, "lb_cp_tls_reloads_total", "counter",
                   "Certificate file changes published as a new generation.");
    lb_prom_u64(&p, "lb_cp_tls_reloads_total", NULL, 0, tls.reloads);
    lb_prom_family(&p, "lb_cp_tls_reload_errors_total", "counter",
                   "Changed certificate files refused by validation.");
    lb_prom_u64(&p, "lb_cp_tls_reload_errors_total", NULL, 0, tls.reload_errors);
    /* The scrape being answered is counted once answered, in the next one. */
    lb_prom_family(&p, "lb_cp_api_requests_total", "counter", "Admin API requests answered.");
    for (size_t i = 0; i < a->n_counts; i++) {
        char code[8];
        snprintf(code, sizeof(code), "%u", a->counts[i].status);
        struct lb_prom_label l[2] = {{"method", a->counts[i].method}, {"code", code}};
        lb_prom_u64(&p, "lb_cp_api_requests_total", l, 2, a->counts[i].n);
    }
    if (p.oom) {
        lb_prom_deinit(&p);
        respond_error(r, 500, "internal", "out of memory");
        return;
    }
    respond(r, 200, "text/plain; version=0.0.4; charset=utf-8", p.buf, p.len, NULL);
    lb_prom_deinit(&p);
}

/* GET /api/v1/tls -> {"certificates": [{"name", "frontend", "subject", "sans",
 * "fingerprint_sha256", "not_before", "not_after" (ms), "expires_in_days",
 * "status": "ok|expiring|expired"}] (each served certificate for each TLS
 * frontend), "backend_cas": [{"backend", "file", "subject", "not_before",
 * "not_after" (ms), "expires_in_days", "fingerprint_sha256", "status"}] (the
 * caFile of each https:// backend naming one, described by its first
 * certificate), "reloads", "reload_errors", "last_reload": null | {"at_ms",
 * "generation", "detail"}, "last_error": null | "..."} */
static void h_tls_get(struct req *r)
{
    struct cp *cp = r->c->a->cp;
    const struct config *cfg = cp_config(cp);
    struct cp_tls_status st;
    cp_tls_status(cp, &st);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    json_t *certs = json_array();
    for (size_t f = 0; cfg != NULL && st.bundle != NULL && f < cfg->n_frontends; f++) {
        if (!cfg->frontends[f].tls)
            continue;
        for (size_t i = 0; i < st.bundle->n_certs; i++) {
            const struct tlscheck_bundle_cert *c = &st.bundle->certs[i];
            json_t *sans = json_array();
            for (size_t k = 0; k < c->info.n_sans; k++)
                json_array_append_new(sans, json_string(c->info.sans[k]));
            int64_t left = c->info.not_after_ms - now;
            json_array_append_new(
                certs, json_pack("{s:s,s:s,s:s,s:o,s:s,s:I,s:I,s:I,s:s}", "name", c->cert->name,
                                 "frontend", cfg->frontends[f].name, "subject", c->info.subject,
                                 "sans", sans, "fingerprint_sha256", c->info.fingerprint,
                                 "not_before", (json_int_t)c->info.not_before_ms, "not_after",
                                 (json_int_t)c->info.not_after_ms, "expires_in_days",
                                 (json_int_t)(left > 0 ? left / 86400000 : 0), "status",
                                 tlscheck_status_name(tlscheck_status_at(&c->info, now))));
        }
    }
    json_t *cas = json_array();
    for (size_t i = 0; st.bundle != NULL && i < st.bundle->n_backend_cas; i++) {
        const struct tlscheck_backend_ca *ca = &st.bundle->backend_cas[i];
        int64_t left = ca->info.not_after_ms - now;
        json_array_append_new(
            cas, json_pack("{s:s,s:s,s:s,s:I,s:I,s:I,s:s,s:s}", "backend", ca->backend, "file",
                           ca->file.name, "subject", ca->info.subject, "not_before",
                           (json_int_t)ca->info.not_before_ms, "not_after",
                           (json_int_t)ca->info.not_after_ms, "expires_in_days",
                           (json_int_t)(left > 0 ? left / 86400000 : 0), "fingerprint_sha256",
                           ca->info.fingerprint, "status",
                           tlscheck_status_name(tlscheck_status_at(&ca->info, now))));
    }
    json_t *last =
        st.last_reload_ms == 0
            ? json_null()
            : json_pack("{s:I,s:I,s:s}", "at_ms", (json_int_t)st.last_reload_ms, "generation",
                        (json_int_t)st.last_reload_generation, "detail", st.last_reload);
    respond_json(r, 200,
                 json_pack("{s:o,s:o,s:I,s:I,s:o,s:o}", "certificates", certs, "backend_cas", cas,
                           "reloads", (json_int_t)st.reloads, "reload_errors",
                           (json_int_t)st.reload_errors, "last_reload", last, "last_error",
                           st.last_error[0] ? json_string(st.last_error) : json_null()));
}

/* POST /api/v1/tls/reload -> 200 {"reloaded": bool, "generation": N, "error": null};
 * refused files -> 400 invalid_config with the reason. */
static void h_tls_reload(struct req *r)
{
    struct cp *cp = r->c->a->cp;
    bool reloaded = false;
    struct lb_err e = {0};
    if (cp_tls_reload(cp, &reloaded, &e) != LB_OK) {
        respond_lb_err(r, &e);
        return;
    }
    respond_json(r, 200,
                 json_pack("{s:b,s:I,s:n}", "reloaded", reloaded, "generation",
                           (json_int_t)cp_generation(cp), "error"));
}

static void h_backends_list(struct req *r)
{
    struct cp *cp = r->c->a->cp;
    const struct config *cfg = cp_config(cp);
    json_t *arr = json_array();
    for (size_t i = 0; cfg != NULL && arr != NULL && i < cfg->n_backends; i++)
        json_array_append_new(arr, backend_json(cp, &cfg->backends[i]));
    respond_json(
        r, 200,
        json_pack("{s:I,s:o}", "version", (json_int_t)cp_active_version(cp), "backends", arr));
}

static void respond_backend(struct req *r, unsigned status, const char *id)
{
    struct cp *cp = r->c->a->cp;
    int i = cp_backend_find(cp, id);
    if (i < 0) {
        respond_error(r, 404, "not_found", "no backend has id \"%s\"", id);
        return;
    }
    respond_json(r, status,
                 json_pack("{s:I,s:o}", "version", (json_int_t)cp_active_version(cp), "backend",
                           backend_json(cp, &cp_config(cp)->backends[i])));
}

/* String member <key> of <body> into <*out> (borrowed from <body>; left
 * alone when absent); false when answered. */
static bool read_str_field(struct req *r, json_t *body, const char *key, const char **out)
{
    json_t *v = json_object_get(body, key);
    if (v == NULL)
        return true;
    if (!json_is_string(v)) {
        respond_error(r, 400, "invalid_request", "%s must be a string", key);
        return false;
    }
    *out = json_string_value(v);
    return true;
}

/* Integer member <key> of <body> in <min>..<max> into <*out>, <*has> set;
 * left alone when absent; false when answered (the config's message). */
static bool read_uint_field(struct req *r, json_t *body, const char *key, uint32_t min,
                            uint32_t max, bool *has, uint32_t *out)
{
    json_t *v = json_object_get(body, key);
    if (v == NULL)
        return true;
    if (!json_is_integer(v)) {
        respond_error(r, 400, "invalid_request", "%s must be an integer", key);
        return false;
    }
    json_int_t n = json_integer_value(v);
    if (n < (json_int_t)min || n > (json_int_t)max) {
        respond_error(r, 400, "invalid_config", "%s: %lld is out of range (%u..%u)", key,
                      (long long)n, min, max);
        return false;
    }
    *has = true;
    *out = (uint32_t)n;
    return true;
}

/* Reads weight/state/url/caFile/sni/maxConnections/maxQueue of a backend
 * body into <chg>; false when answered. caFile and sni are checked by the core with the config's
 * rules (https only, a server name, a readable file). */
static bool read_backend_fields(struct req *r, json_t *body, struct cp_backend_change *chg)
{
    json_t *v;
    if (!read_str_field(r, body, "url", &chg->url) ||
        !read_str_field(r, body, "caFile", &chg->ca_file) ||
        !read_str_field(r, body, "sni", &chg->sni) ||
        !read_uint_field(r, body, "maxConnections", 0, 1000000, &chg->has_max_connections,
                         &chg->max_connections) ||
        !read_uint_field(r, body, "maxQueue", 1, 100000, &chg->has_max_queue, &chg->max_queue))
        return false;
    if ((v = json_object_get(body, "weight")) != NULL) {
        if (!json_is_integer(v)) {
            respond_error(r, 400, "invalid_request", "weight must be an integer");
            return false;
        }
        json_int_t w = json_integer_value(v);
        if (w < 1 || w > 1000) {
            respond_error(r, 400, "invalid_config", "weight: %lld is out of range (1..1000)",
                          (long long)w);
            return false;
        }
        chg->has_weight = true;
        chg->weight = (uint32_t)w;
    }
    if ((v = json_object_get(body, "state")) != NULL) {
        const char *s = json_is_string(v) ? json_string_value(v) : "";
        static const enum config_backend_state states[] = {
            CONFIG_BACKEND_ACTIVE, CONFIG_BACKEND_DRAINING, CONFIG_BACKEND_DISABLED};
        bool found = false;
        for (size_t i = 0; i < 3 && !found; i++) {
            if (strcmp(s, config_backend_state_name(states[i])) == 0) {
                chg->has_state = true;
                chg->state = states[i];
                found = true;
            }
        }
        if (!found) {
            respond_error(r, 400, "invalid_config",
                          "state must be \"active\", \"draining\" or \"disabled\"");
            return false;
        }
    }
    return true;
}

/* Common start of a write: If-Match, optional JSON body, comment, author. */
static bool write_start(struct req *r, bool json_body, json_t **body, struct cp_write *w,
                        char *comment, size_t size)
{
    *body = NULL;
    if (!read_if_match(r, &w->expected_version))
        return false;
    if (json_body && (*body = read_json_body(r)) == NULL)
        return false;
    if (!read_comment(r, *body, comment, size)) {
        json_decref(*body);
        *body = NULL;
        return false;
    }
    w->author = r->author;
    w->comment = comment;
    return true;
}

static void h_backends_add(struct req *r)
{
    static const char *const keys[] = {"url", "weight",         "id",       "state",   "caFile",
                                       "sni", "maxConnections", "maxQueue", "comment", NULL};
    json_t *body;
    struct cp_write w = {0};
    char comment[ADMIN_COMMENT_MAX + 1];
    if (!write_start(r, true, &body, &w, comment, sizeof(comment)))
        return;
    struct cp_backend_change chg = {0};
    json_t *id = json_object_get(body, "id");
    if (!only_keys(r, body, keys) || !read_backend_fields(r, body, &chg))
        goto out;
    if (chg.url == NULL) {
        respond_error(r, 400, "invalid_config", "url is required");
        goto out;
    }
    if (id != NULL && !json_is_string(id)) {
        respond_error(r, 400, "invalid_request", "id must be a string");
        goto out;
    }
    chg.id = id ? json_string_value(id) : NULL;
    uint64_t version = 0;
    int index = -1;
    struct lb_err e = {0};
    if (cp_backend_add(r->c->a->cp, &chg, &w, &version, &index, &e) != LB_OK) {
        respond_lb_err(r, &e);
        goto out;
    }
    respond_backend(r, 201, cp_config(r->c->a->cp)->backends[index].id);
out:
    json_decref(body);
}

static void h_backend_update(struct req *r, const char *id)
{
    static const char *const keys[] = {
        "url", "weight", "state", "caFile", "sni", "maxConnections", "maxQueue", "comment", NULL};
    json_t *body;
    struct cp_write w = {0};
    char comment[ADMIN_COMMENT_MAX + 1];
    if (!write_start(r, true, &body, &w, comment, sizeof(comment)))
        return;
    struct cp_backend_change chg = {0};
    if (only_keys(r, body, keys) && read_backend_fields(r, body, &chg)) {
        uint64_t version = 0;
        struct lb_err e = {0};
        if (cp_backend_update(r->c->a->cp, id, &chg, &w, &version, &e) != LB_OK)
            respond_lb_err(r, &e);
        else
            respond_backend(r, 200, id);
    }
    json_decref(body);
}

/* DELETE and drain take an optional JSON body (for its comment). */
static bool optional_json(struct req *r)
{
    return r->body_len > 0;
}

static void h_backend_delete(struct req *r, const char *id)
{
    json_t *body;
    struct cp_write w = {0};
    char comment[ADMIN_COMMENT_MAX + 1];
    if (!write_start(r, optional_json(r), &body, &w, comment, sizeof(comment)))
        return;
    uint64_t version = 0;
    struct lb_err e = {0};
    if (cp_backend_remove(r->c->a->cp, id, &w, &version, &e) != LB_OK)
        respond_lb_err(r, &e);
    else
        respond_json(r, 200, json_pack("{s:I}", "version", (json_int_t)version));
    json_decref(body);
}

static void h_backend_drain(struct req *r, const char *id)
{
    json_t *body;
    struct cp_write w = {0};
    char comment[ADMIN_COMMENT_MAX + 1];
    if (!write_start(r, optional_json(r), &body, &w, comment, sizeof(comment)))
        return;
    uint64_t version = 0;
    struct lb_err e = {0};
    if (cp_backend_drain(r->c->a->cp, id, &w, &version, &e) != LB_OK)
        respond_lb_err(r, &e);
    else
        respond_backend(r, 200, id);
    json_decref(body);
}

static void h_config_get(struct req *r)
{
    struct cp *cp = r->c->a->cp;
    const struct config *cfg = cp_config(cp);
    if (cfg == NULL) {
        respond_error(r, 404, "not_found", "no config is active yet");
        return;
    }
    const struct http1_header *acc = find_header(r->msg, "Accept");
    struct lb_err e = {0};
    if (acc != NULL &&
        (slice_prefix(acc->value, "application/yaml") || slice_prefix(acc->value, "text/yaml") ||
         slice_prefix(acc->value, "application/x-yaml"))) {
        size_t len = 0;
        char *yaml = config_export_yaml(cfg, &len, &e);
        if (yaml == NULL) {
            respond_lb_err(r, &e);
            return;
        }
        respond(r, 200, "application/yaml", yaml, len, NULL);
        free(yaml);
        return;
    }
    json_t *c = embed(config_export_json(cfg, &e));
    respond_json(r, 200,
                 json_pack("{s:I,s:s,s:o}", "version", (json_int_t)cp_active_version(cp), "hash",
                           cp_config_hash(cp), "config", c));
}

static void h_config_post(struct req *r)
{
    json_t *none;
    struct cp_write w = {0};
    char comment[ADMIN_COMMENT_MAX + 1];
    if (!write_start(r, false, &none, &w, comment, sizeof(comment)))
        return;
    const struct http1_header *ct = find_header(r->msg, "Content-Type");
    enum cp_format fmt =
        ct && slice_prefix(ct->value, "application/json") ? CP_FORMAT_JSON : CP_FORMAT_YAML;
    struct cp *cp = r->c->a->cp;
    uint64_t version = 0;
    bool unchanged = false;
    struct config_diff *d = NULL;
    struct lb_err e = {0};
    if (cp_apply(cp, r->body, r->body_len, fmt, &w, &version, &unchanged, &d, &e) != LB_OK) {
        respond_lb_err(r, &e);
        return;
    }
    if (unchanged) {
        respond_json(
            r, 200,
            json_pack("{s:I,s:[],s:b}", "version", (json_int_t)version, "changes", "unchanged", 1));
        return;
    }
    /* A 10,000-backend apply would list every backend: the reply keeps the
     * first ADMIN_MAX_CHANGES and says how many there were (GET
     * /api/v1/config/diff gives them all). */
    size_t total = d->n;
    d->n = total > ADMIN_MAX_CHANGES ? ADMIN_MAX_CHANGES : total;
    json_t *changes = embed(config_diff_json(d));
    d->n = total;
    config_diff_free(d);
    json_t *body = json_pack("{s:I,s:o}", "version", (json_int_t)version, "changes",
                             changes ? changes : json_array());
    if (body != NULL && total > ADMIN_MAX_CHANGES) {
        json_object_set_new(body, "changes_truncated", json_true());
        json_object_set_new(body, "changes_total", json_integer((json_int_t)total));
    }
    respond_json(r, 201, body);
}

static void h_versions_list(struct req *r, const char *query, size_t qlen)
{
    uint64_t limit = 50;
    size_t len;
    const char *v = query_get(query, qlen, "limit", &len);
    if (v != NULL && (!parse_u64(v, len, &limit) || limit == 0 || limit > 100000)) {
        respond_error(r, 400, "invalid_request", "limit must be a number in 1..100000");
        return;
    }
    struct cp *cp = r->c->a->cp;
    struct store_version *vs = NULL;
    size_t n = 0;
    struct lb_err e = {0};
    if (cp_versions_list(cp, (size_t)limit, &vs, &n, &e) != LB_OK) {
        respond_lb_err(r, &e);
        return;
    }
    json_t *arr = json_array();
    for (size_t i = 0; arr != NULL && i < n; i++)
        json_array_append_new(arr, version_json(&vs[i], cp_active_version(cp), false));
    store_versions_free(vs, n);
    respond_json(
        r, 200,
        json_pack("{s:I,s:o}", "active", (json_int_t)cp_active_version(cp), "versions", arr));
}

static void h_version_get(struct req *r, const char *seg)
{
    uint64_t n;
    if (!parse_u64(seg, strlen(seg), &n) || n == 0) {
        respond_error(r, 404, "not_found", "no config version \"%s\"", seg);
        return;
    }
    struct cp *cp = r->c->a->cp;
    struct store_version *v = NULL;
    struct lb_err e = {0};
    if (cp_version_get(cp, n, &v, &e) != LB_OK) {
        respond_lb_err(r, &e);
        return;
    }
    respond_json(r, 200, version_json(v, cp_active_version(cp), true));
    store_version_free(v);
}

static void h_diff(struct req *r, const char *query, size_t qlen)
{
    uint64_t from = 0, to = 0;
    size_t lf = 0, lt = 0;
    const char *f = query_get(query, qlen, "from", &lf);
    const char *t = query_get(query, qlen, "to", &lt);
    if (f == NULL || t == NULL || !parse_u64(f, lf, &from) || !parse_u64(t, lt, &to) || from == 0 ||
        to == 0) {
        respond_error(r, 400, "invalid_request", "from and to must be config version numbers");
        return;
    }
    struct config_diff *d = NULL;
    struct lb_err e = {0};
    if (cp_diff(r->c->a->cp, from, to, &d, &e) != LB_OK) {
        respond_lb_err(r, &e);
        return;
    }
    json_t *changes = embed(config_diff_json(d));
    char *text = config_diff_text(d);
    config_diff_free(d);
    respond_json(r, 200,
                 json_pack("{s:I,s:I,s:o,s:s}", "from", (json_int_t)from, "to", (json_int_t)to,
                           "changes", changes ? changes : json_array(), "text", text ? text : ""));
    free(text);
}

static void h_rollback(struct req *r)
{
    static const char *const keys[] = {"version", "comment", NULL};
    json_t *body;
    struct cp_write w = {0};
    char comment[ADMIN_COMMENT_MAX + 1];
    if (!write_start(r, true, &body, &w, comment, sizeof(comment)))
        return;
    json_t *v = json_object_get(body, "version");
    if (!only_keys(r, body, keys))
        goto out;
    if (!json_is_integer(v) || json_integer_value(v) < 1) {
        respond_error(r, 400, "invalid_request", "version must be a config version number");
        goto out;
    }
    uint64_t target = (uint64_t)json_integer_value(v), version = 0;
    struct lb_err e = {0};
    if (cp_rollback(r->c->a->cp, target, &w, &version, &e) != LB_OK)
        respond_lb_err(r, &e);
    else
        respond_json(r, 201,
                     json_pack("{s:I,s:I}", "version", (json_int_t)version, "rolled_back_to",
                               (json_int_t)target));
out:
    json_decref(body);
}

static void h_dataplanes(struct req *r)
{
    struct cp *cp = r->c->a->cp;
    struct store_dataplane *dps = NULL;
    size_t n = 0;
    struct lb_err e = {0};
    if (cp_dataplanes(cp, &dps, &n, &e) != LB_OK) {
        respond_lb_err(r, &e);
        return;
    }
    uint64_t gen = cp_generation(cp);
    json_t *arr = json_array();
    for (size_t i = 0; arr != NULL && i < n; i++) {
        const struct store_dataplane *d = &dps[i];
        json_array_append_new(
            arr, json_pack("{s:s,s:I,s:I,s:I,s:I,s:o,s:b}", "node_id", d->node_id,
                           "applied_version", (json_int_t)d->applied_version, "applied_generation",
                           (json_int_t)d->applied_generation, "last_seen_ms",
                           (json_int_t)d->last_report_unix_ms, "rejected_generation",
                           (json_int_t)d->rejected_generation, "rejection_reason",
                           d->rejection_reason[0] ? json_string(d->rejection_reason) : json_null(),
                           "in_sync", gen != 0 && d->applied_generation == gen));
    }
    store_dataplanes_free(dps, n);
    respond_json(r, 200,
                 json_pack("{s:I,s:I,s:o}", "version", (json_int_t)cp_active_version(cp),
                           "generation", (json_int_t)gen, "dataplanes", arr));
}

/* ---- routing --------------------------------------------------------------------- */

enum {
    M_GET = 1,
    M_POST = 2,
    M_PUT = 4,
    M_DELETE = 8
};

static void method_not_allowed(struct req *r, unsigned allowed)
{
    static const char *const names[] = {"GET", "POST", "PUT", "DELETE"};
    char list[64] = "";
    for (int i = 0; i < 4; i++) {
        if (allowed & (1u << i)) {
            if (list[0])
                strcat(list, ", ");
            strcat(list, names[i]);
        }
    }
    char header[96];
    snprintf(header, sizeof(header), "Allow: %s\r\n", list);
    respond_error_x(r, 405, "method_not_allowed", header, "%s is not allowed here; use %s",
                    r->method, list);
}

/* Checks the method against <allowed>; answers 405 when it does not match. */
static bool allow(struct req *r, unsigned allowed, unsigned m)
{
    if (m & allowed)
        return true;
    method_not_allowed(r, allowed);
    return false;
}

static void route(struct req *r)
{
    const struct http1_msg *msg = r->msg;
    unsigned m = msg->meth == HTTP1_M_GET      ? M_GET
                 : msg->meth == HTTP1_M_POST   ? M_POST
                 : msg->meth == HTTP1_M_PUT    ? M_PUT
                 : msg->meth == HTTP1_M_DELETE ? M_DELETE
                                               : 0;
    char path[512];
    const char *q = memchr(msg->target.p, '?', msg->target.len);
    size_t plen = q ? (size_t)(q - msg->target.p) : msg->target.len;
    const char *query = q ? q + 1 : "";
    size_t qlen = q ? msg->target.len - plen - 1 : 0;
    if (plen >= sizeof(path)) {
        respond_error(r, 404, "not_found", "no such route");
        return;
    }
    memcpy(path, msg->target.p, plen);
    path[plen] = '\0';

    if (strcmp(path, "/health") == 0) {
        if (allow(r, M_GET, m))
            h_health(r);
    } else if (strcmp(path, "/metrics") == 0) {
        if (allow(r, M_GET, m))
            h_metrics(r);
    } else if (strcmp(path, "/api/v1/backends") == 0) {
        if (allow(r, M_GET | M_POST, m))
            m == M_GET ? h_backends_list(r) : h_backends_add(r);
    } else if (strncmp(path, "/api/v1/backends/", 17) == 0 && path[17] != '\0') {
        char *id = path + 17;
        char *slash = strchr(id, '/');
        if (slash != NULL && strcmp(slash, "/drain") == 0) {
            *slash = '\0';
            if (allow(r, M_POST, m))
                h_backend_drain(r, id);
        } else if (slash != NULL) {
            respond_error(r, 404, "not_found", "no such route");
        } else if (allow(r, M_GET | M_PUT | M_DELETE, m)) {
            if (m == M_GET)
                respond_backend(r, 200, id);
            else if (m == M_PUT)
                h_backend_update(r, id);
            else
                h_backend_delete(r, id);
        }
    } else if (strcmp(path, "/api/v1/config") == 0) {
        if (allow(r, M_GET | M_POST, m))
            m == M_GET ? h_config_get(r) : h_config_post(r);
    } else if (strcmp(path, "/api/v1/config/versions") == 0) {
        if (allow(r, M_GET, m))
            h_versions_list(r, query, qlen);
    } else if (strncmp(path, "/api/v1/config/versions/", 24) == 0 && path[24] != '\0' &&
               strchr(path + 24, '/') == NULL) {
        if (allow(r, M_GET, m))
            h_version_get(r, path + 24);
    } else if (strcmp(path, "/api/v1/config/diff") == 0) {
        if (allow(r, M_GET, m))
            h_diff(r, query, qlen);
    } else if (strcmp(path, "/api/v1/config/rollback") == 0) {
        if (allow(r, M_POST, m))
            h_rollback(r);
    } else if (strcmp(path, "/api/v1/dataplanes") == 0) {
        if (allow(r, M_GET, m))
            h_dataplanes(r);
    } else if (strcmp(path, "/api/v1/tls") == 0) {
        if (allow(r, M_GET, m))
            h_tls_get(r);
    } else if (strcmp(path, "/api/v1/tls/reload") == 0) {
        if (allow(r, M_POST, m))
            h_tls_reload(r);
    } else {
        respond_error(r, 404, "not_found", "no such route: %s", path);
    }
}

static const struct token *find_token(const struct admin *a, struct http1_slice secret)
{
    const struct token *found = NULL;
    for (size_t i = 0; i < a->n_tokens; i++) {
        const struct token *t = &a->tokens[i];
        /* Constant-time over the secret so that timing reveals no prefix. */
        if (strlen(t->secret) == secret.len && CRYPTO_memcmp(t->secret, secret.p, secret.len) == 0)
            found = t;
    }
    return found;
}

/* Identity and permission; false when answered (401/403). */
static bool authorise(struct req *r)
{
    struct conn *c = r->c;
    if (!c->tcp) {
        snprintf(r->author, sizeof(r->author), "uid:%ld", c->uid);
        return true;
    }
    /* liveness probes (orchestrators, load balancers) carry no token */
    const struct http1_slice *target = &r->msg->target;
    if (r->msg->meth == HTTP1_M_GET && target->len == 7 && memcmp(target->p, "/health", 7) == 0) {
        snprintf(r->author, sizeof(r->author), "anonymous");
        return true;
    }
    const struct http1_header *h = find_header(r->msg, "Authorization");
    const struct token *t = NULL;
    if (h != NULL && h->value.len > 7 && strncasecmp(h->value.p, "Bearer ", 7) == 0) {
        struct http1_slice s = {h->value.p + 7, h->value.len - 7};
        while (s.len > 0 && s.p[0] == ' ') {
            s.p++;
            s.len--;
        }
        t = find_token(c->a, s);
    }
    if (t == NULL) {
        respond_error_x(r, 401, "unauthorized", "WWW-Authenticate: Bearer\r\n",
                        "a valid bearer token is required");
        return false;
    }
    if (!t->rw && r->msg->meth != HTTP1_M_GET) {
        respond_error(r, 403, "forbidden", "token \"%s\" is read-only", t->name);
        return false;
    }
    snprintf(r->author, sizeof(r->author), "token:%s", t->name);
    return true;
}

static const char *method_name(uint8_t meth)
{
    switch (meth) {
    case HTTP1_M_GET:
        return "GET";
    case HTTP1_M_POST:
        return "POST";
    case HTTP1_M_PUT:
        return "PUT";
    case HTTP1_M_DELETE:
        return "DELETE";
    case HTTP1_M_HEAD:
        return "HEAD";
    default:
        return "OTHER";
    }
}

/* ---- connections ------------------------------------------------------------------ */

static void conn_close(struct conn *c)
{
    struct admin *a = c->a;
    ev_io_stop(a->loop, &c->rio);
    ev_io_stop(a->loop, &c->wio);
    ev_timer_stop(a->loop, &c->idle);
    close(c->fd);
    if (c->prev)
        c->prev->next = c->next;
    else
        a->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    a->n_conns--;
    free(c->in);
    free(c->out);
    free(c);
}

/* Answers a request refused before routing (bad head, too large). */
static void refuse(struct conn *c, unsigned status, const char *code, const char *msg)
{
    struct http1_msg dummy = {0};
    struct req r = {.c = c, .msg = &dummy, .method = "OTHER"};
    c->close_after = true;
    respond_error(&r, status, code, "%s", msg);
    c->in_len = 0;
}

static bool ensure_in(struct conn *c, size_t need)
{
    if (c->in_cap >= need)
        return true;
    size_t cap = c->in_cap ? c->in_cap : 4096;
    while (cap < need)
        cap *= 2;
    char *n = realloc(c->in, cap);
    if (n == NULL)
        return false;
    c->in = n;
    c->in_cap = cap;
    return true;
}

/* Handles every complete request in <in>; stops at an incomplete one, or
 * when the connection is to close. */
static void conn_process(struct conn *c)
{
    while (!c->close_after && c->in_len > 0) {
        struct http1_header hdrs[ADMIN_MAX_HEADERS];
        struct http1_msg msg = {.headers = hdrs, .cap_headers = ADMIN_MAX_HEADERS};
        int n = http1_parse_request(&c->parser, c->in, c->in_len, &limits, &msg);
        if (n == HTTP1_INCOMPLETE)
            return;
        if (n == HTTP1_INVALID) {
            refuse(c, msg.error ? msg.error : 400, "invalid_request",
                   msg.error_reason ? msg.error_reason : "malformed request");
            return;
        }
        if (msg.framing == HTTP1_BODY_CHUNKED) {
            refuse(c, 411, "invalid_request",
                   "chunked request bodies are not supported; send Content-Length");
            return;
        }
        uint64_t cl = msg.framing == HTTP1_BODY_LENGTH ? msg.content_length : 0;
        if (cl > ADMIN_BODY_MAX) {
            refuse(c, 413, "too_large", "the body is over 4 MiB");
            return;
        }
        size_t total = (size_t)n + (size_t)cl;
        if (c->in_len < total) {
            if ((msg.flags & HTTP1_MF_EXPECT_CONTINUE) && !c->continue_sent) {
                static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
                char *o = realloc(c->out, c->out_len + sizeof(cont) - 1);
                if (o == NULL) {
                    refuse(c, 500, "internal", "out of memory");
                    return;
                }
                c->out = o;
                memcpy(c->out + c->out_len, cont, sizeof(cont) - 1);
                c->out_len += sizeof(cont) - 1;
                c->continue_sent = true;
            }
            if (!ensure_in(c, total))
                refuse(c, 500, "internal", "out of memory");
            return;
        }
        /* The head is parsed again here: a buffer grown since its first parse
         * would leave the slices pointing at freed memory. */
        http1_parser_init(&c->parser);
        msg = (struct http1_msg){.headers = hdrs, .cap_headers = ADMIN_MAX_HEADERS};
        if (http1_parse_request(&c->parser, c->in, c->in_len, &limits, &msg) != n) {
            refuse(c, 500, "internal", "request head changed");
            return;
        }
        if (!(msg.flags & HTTP1_MF_KEEP_ALIVE))
            c->close_after = true;
        struct req r = {.c = c,
                        .msg = &msg,
                        .body = c->in + n,
                        .body_len = (size_t)cl,
                        .method = method_name(msg.meth)};
        if (authorise(&r))
            route(&r);
        memmove(c->in, c->in + total, c->in_len - total);
        c->in_len -= total;
        http1_parser_init(&c->parser);
        c->continue_sent = false;
    }
}

static void conn_flush(struct conn *c)
{
    struct ev_loop *loop = c->a->loop;
    while (c->out_off < c->out_len) {
        ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            ev_io_stop(loop, &c->rio);
            ev_io_start(loop, &c->wio);
            return;
        }
        if (w <= 0) {
            conn_close(c);
            return;
        }
        c->out_off += (size_t)w;
        ev_timer_again(loop, &c->idle);
    }
    free(c->out);
    c->out = NULL;
    c->out_len = c->out_off = 0;
    ev_io_stop(loop, &c->wio);
    if (c->close_after) {
        /* Closing with unread input would reset the connection and could
         * destroy the answer before the client reads it (413 while the body
         * is still arriving): shut down writing, then discard until EOF. */
        if (shutdown(c->fd, SHUT_WR) != 0) {
            conn_close(c);
            return;
        }
        c->lingering = true;
        c->in_len = 0;
        c->idle.repeat = ADMIN_LINGER_S;
        ev_timer_again(loop, &c->idle);
    }
    ev_io_start(loop, &c->rio);
}

/* Runs the requests buffered, then writes what they produced. */
static void conn_step(struct conn *c)
{
    conn_process(c);
    if (c->out_len > 0 || c->close_after)
        conn_flush(c);
}

static void conn_on_readable(struct ev_loop *loop, ev_io *w, int revents)
{
    struct conn *c = w->data;
    if (c->lingering) {
        char sink[4096];
        ssize_t n = recv(c->fd, sink, sizeof(sink), 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
            conn_close(c);
        return;
    }
    size_t want = c->in_len + 4096;
    if (want < c->in_cap)
        want = c->in_cap;
    /* Bounded: a head is at most ADMIN_HEAD_MAX, a body ADMIN_BODY_MAX. */
    if (!ensure_in(c, want)) {
        conn_close(c);
        return;
    }
    ssize_t n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (n <= 0) {
        conn_close(c);
        return;
    }
    c->in_len += (size_t)n;
    ev_timer_again(loop, &c->idle);
    conn_step(c);
}

static void conn_on_writable(struct ev_loop *loop, ev_io *w, int revents)
{
    struct conn *c = w->data;
    conn_flush(c);
}

static void conn_on_idle(struct ev_loop *loop, ev_timer *w, int revents)
{
    conn_close(w->data);
}

static void on_accept_resume(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct admin *a = t->data;
    ev_io_start(loop, &a->unix_io);
    if (a->tcp_fd >= 0)
        ev_io_start(loop, &a->tcp_io);
}

static void accept_one(struct admin *a, int lfd, bool tcp)
{
    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
        /* out of descriptors or memory: the listener stays readable, so
         * pause instead of spinning */
        if (lb_errno_shortage(errno)) {
            lb_log(LB_LOG_WARN, "admin_accept_paused", "accept: %s; accepting again in 500 ms",
                   strerror(errno));
            ev_io_stop(a->loop, &a->unix_io);
            if (a->tcp_fd >= 0)
                ev_io_stop(a->loop, &a->tcp_io);
            ev_timer_set(&a->accept_pause, 0.5, 0.);
            ev_timer_start(a->loop, &a->accept_pause);
        }
        return;
    }
    if (a->n_conns >= ADMIN_MAX_CONNS) {
        lb_log(LB_LOG_WARN, "admin_busy", "%d admin connections open; refusing one",
               ADMIN_MAX_CONNS);
        close(fd);
        return;
    }
    struct conn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        close(fd);
        return;
    }
    c->a = a;
    c->fd = fd;
    c->tcp = tcp;
    c->uid = -1;
    if (!tcp) {
        struct ucred cred;
        socklen_t len = sizeof(cred);
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0)
            c->uid = (long)cred.uid;
    }
    http1_parser_init(&c->parser);
    ev_io_init(&c->rio, conn_on_readable, fd, EV_READ);
    ev_io_init(&c->wio, conn_on_writable, fd, EV_WRITE);
    ev_init(&c->idle, conn_on_idle);
    c->idle.repeat = ADMIN_TIMEOUT_S;
    c->rio.data = c->wio.data = c->idle.data = c;
    c->next = a->conns;
    if (a->conns)
        a->conns->prev = c;
    a->conns = c;
    a->n_conns++;
    ev_io_start(a->loop, &c->rio);
    ev_timer_again(a->loop, &c->idle);
}

static void on_accept_unix(struct ev_loop *loop, ev_io *w, int revents)
{
    struct admin *a = w->data;
    accept_one(a, a->unix_fd, false);
}

static void on_accept_tcp(struct ev_loop *loop, ev_io *w, int revents)
{
    struct admin *a = w->data;
    accept_one(a, a->tcp_fd, true);
}

/* ---- set-up ------------------------------------------------------------------------ */

static int load_tokens(struct admin *a, const char *path, struct lb_err *err)
{
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return lb_err_set(err, LB_ESYS, errno, "admin tokens file %s", path);
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || (st.st_mode & (S_IROTH | S_IWOTH))) {
        fclose(f);
        return lb_err_set(err, LB_EINVAL, 0,
                          "admin tokens file %s is world-readable or -writable; chmod o-rwx it",
                          path);
    }
    char line[1024];
    int lineno = 0, rc = LB_OK;
    while (rc == LB_OK && fgets(line, sizeof(line), f) != NULL) {
        lineno++;
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        char name[128], secret[512], mode[8], extra[2];
        int k = sscanf(line, "%127s %511s %7s %1s", name, secret, mode, extra);
        if (k <= 0)
            continue;
        if (k != 3 || (strcmp(mode, "rw") != 0 && strcmp(mode, "ro") != 0)) {
            rc = lb_err_set(err, LB_EINVAL, 0,
                            "admin tokens file %s:%d: want \"<name> <token> rw|ro\"", path, lineno);
            break;
        }
        struct token *nt = realloc(a->tokens, (a->n_tokens + 1) * sizeof(*nt));
        if (nt == NULL) {
            rc = lb_err_set(err, LB_ENOMEM, 0, "out of memory");
            break;
        }
        a->tokens = nt;
        struct token *t = &nt[a->n_tokens];
        t->name = strdup(name);
        t->secret = strdup(secret);
        t->rw = strcmp(mode, "rw") == 0;
        a->n_tokens++;
        if (t->name == NULL || t->secret == NULL)
            rc = lb_err_set(err, LB_ENOMEM, 0, "out of memory");
    }
    fclose(f);
    if (rc == LB_OK && a->n_tokens == 0)
        rc = lb_err_set(err, LB_EINVAL, 0, "admin tokens file %s holds no token", path);
    return rc;
}

static int bind_unix(struct admin *a, const char *path, struct lb_err *err)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path))
        return lb_err_set(err, LB_EINVAL, 0, "admin socket path %s is too long", path);
    strcpy(sa.sun_path, path);
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode))
            return lb_err_set(err, LB_EINVAL, 0, "admin socket %s exists and is not a socket",
                              path);
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (probe < 0)
            return lb_err_set(err, LB_ESYS, errno, "socket");
        int live = connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0;
        close(probe);
        if (live)
            return lb_err_set(err, LB_EINVAL, 0, "admin socket %s is in use by another process",
                              path);
        unlink(path);
    }
    a->unix_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (a->unix_fd < 0)
        return lb_err_set(err, LB_ESYS, errno, "socket");
    if (bind(a->unix_fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
        return lb_err_set(err, LB_ESYS, errno, "bind %s", path);
    if ((a->unix_path = strdup(path)) == NULL)
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory");
    if (chmod(path, 0660) != 0 || stat(path, &st) != 0)
        return lb_err_set(err, LB_ESYS, errno, "chmod %s", path);
    a->unix_dev = st.st_dev;
    a->unix_ino = st.st_ino;
    if (listen(a->unix_fd, 64) != 0)
        return lb_err_set(err, LB_ESYS, errno, "listen %s", path);
    return LB_OK;
}

static int bind_tcp(struct admin *a, const char *addr, struct lb_err *err)
{
    char host[128];
    const char *colon = strrchr(addr, ':');
    if (colon == NULL || colon == addr || (size_t)(colon - addr) >= sizeof(host))
        return lb_err_set(err, LB_EINVAL, 0, "admin listen address %s is not ADDR:PORT", addr);
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    char *h = host;
    size_t hl = strlen(h);
    if (h[0] == '[' && hl > 2 && h[hl - 1] == ']') {
        h[hl - 1] = '\0';
        h++;
    }
    uint64_t port;
    if (!parse_u64(colon + 1, strlen(colon + 1), &port) || port > 65535)
        return lb_err_set(err, LB_EINVAL, 0, "admin listen address %s has a bad port", addr);
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE};
    struct addrinfo *res = NULL;
    if (getaddrinfo(h, colon + 1, &hints, &res) != 0 || res == NULL)
        return lb_err_set(err, LB_EINVAL, 0, "admin listen address %s needs an IP literal", addr);
    int rc = LB_OK;
    a->tcp_fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (a->tcp_fd < 0)
        rc = lb_err_set(err, LB_ESYS, errno, "socket");
    else if (setsockopt(a->tcp_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
             bind(a->tcp_fd, res->ai_addr, res->ai_addrlen) != 0 || listen(a->tcp_fd, 64) != 0)
        rc = lb_err_set(err, LB_ESYS, errno, "bind %s", addr);
    freeaddrinfo(res);
    if (rc != LB_OK)
        return rc;
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getsockname(a->tcp_fd, (struct sockaddr *)&ss, &len) != 0)
        return lb_err_set(err, LB_ESYS, errno, "getsockname %s", addr);
    a->tcp_port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                 : ((struct sockaddr_in *)&ss)->sin_port);
    return LB_OK;
}

struct admin *admin_new(struct ev_loop *loop, struct cp *cp, const struct admin_config *cfg,
                        struct lb_err *err)
{
    if (cfg == NULL || cfg->unix_path == NULL || cp == NULL) {
        lb_err_set(err, LB_EINVAL, 0, "admin: a unix socket path and a core are required");
        return NULL;
    }
    if (cfg->tcp_listen != NULL && cfg->tokens_file == NULL) {
        lb_err_set(err, LB_EINVAL, 0, "--admin-listen needs --admin-tokens FILE");
        return NULL;
    }
    struct admin *a = calloc(1, sizeof(*a));
    if (a == NULL) {
        lb_err_set(err, LB_ENOMEM, 0, "out of memory");
        return NULL;
    }
    a->loop = loop;
    a->cp = cp;
    a->unix_fd = a->tcp_fd = -1;
    if ((cfg->tcp_listen != NULL && load_tokens(a, cfg->tokens_file, err) != LB_OK) ||
        bind_unix(a, cfg->unix_path, err) != LB_OK ||
        (cfg->tcp_listen != NULL && bind_tcp(a, cfg->tcp_listen, err) != LB_OK)) {
        admin_free(a);
        return NULL;
    }
    ev_timer_init(&a->accept_pause, on_accept_resume, 0., 0.);
    a->accept_pause.data = a;
    ev_io_init(&a->unix_io, on_accept_unix, a->unix_fd, EV_READ);
    a->unix_io.data = a;
    ev_io_start(loop, &a->unix_io);
    if (a->tcp_fd >= 0) {
        ev_io_init(&a->tcp_io, on_accept_tcp, a->tcp_fd, EV_READ);
        a->tcp_io.data = a;
        ev_io_start(loop, &a->tcp_io);
    }
    return a;
}

uint16_t admin_tcp_port(const struct admin *a)
{
    return a->tcp_port;
}

void admin_free(struct admin *a)
{
    if (a == NULL)
        return;
    while (a->conns != NULL)
        conn_close(a->conns);
    if (a->loop != NULL)
        ev_timer_stop(a->loop, &a->accept_pause);
    if (a->unix_fd >= 0) {
        ev_io_stop(a->loop, &a->unix_io);
        close(a->unix_fd);
    }
    if (a->tcp_fd >= 0) {
        ev_io_stop(a->loop, &a->tcp_io);
        close(a->tcp_fd);
    }
    struct stat st;
    if (a->unix_path != NULL && stat(a->unix_path, &st) == 0 && st.st_dev == a->unix_dev &&
        st.st_ino == a->unix_ino)
        unlink(a->unix_path);
    free(a->unix_path);
    for (size_t i = 0; i < a->n_tokens; i++) {
        free(a->tokens[i].name);
        free(a->tokens[i].secret);
    }
    free(a->tokens);
    free(a);
}
