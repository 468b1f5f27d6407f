/* dataplane/metrics.c */
#include "metrics.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lb_log.h"
#include "lb_prom.h"

#define NO_BACKEND UINT32_MAX

int metrics_worker_init(struct metrics_worker *m)
{
    memset(m, 0, sizeof(*m));
    lb_map_init(&m->be_index, NULL, NULL);
    if (pthread_mutex_init(&m->lock, NULL) != 0)
        return -1;
    m->cap_pairs = 64;
    m->pairs = calloc(m->cap_pairs, sizeof(*m->pairs));
    if (m->pairs == NULL) {
        pthread_mutex_destroy(&m->lock);
        return -1;
    }
    for (uint32_t i = 0; i < m->cap_pairs; i++)
        m->pairs[i].fe = UINT16_MAX;
    return 0;
}

void metrics_worker_deinit(struct metrics_worker *m)
{
    for (uint32_t i = 0; i < m->n_be; i++)
        free(m->be[i]);
    free(m->be);
    lb_map_deinit(&m->be_index);
    free(m->be_free);
    free(m->pairs);
    pthread_mutex_destroy(&m->lock);
}

int metrics_fe_slot(struct metrics_worker *m, const char *name)
{
    for (uint32_t i = 0; i < m->n_fe; i++) {
        if (strcmp(m->fe[i].name, name) == 0)
            return (int)i;
    }
    if (m->n_fe == METRICS_MAX_FE)
        return -1;
    pthread_mutex_lock(&m->lock);
    struct metrics_fe *f = &m->fe[m->n_fe];
    snprintf(f->name, sizeof(f->name), "%s", name);
    int slot = (int)m->n_fe++;
    pthread_mutex_unlock(&m->lock);
    return slot;
}

static uint32_t pair_hash(uint16_t fe, uint32_t be);

int metrics_be_slot(struct metrics_worker *m, const char *id)
{
    uintptr_t known = (uintptr_t)lb_map_get(&m->be_index, id);
    if (known != 0)
        return (int)(known - 1);
    struct metrics_be *b = NULL;
    pthread_mutex_lock(&m->lock);
    if (!lb_map_reserve(&m->be_index, lb_map_count(&m->be_index) + 1))
        goto fail;
    int slot;
    if (m->n_be_free > 0) {
        slot = (int)m->be_free[--m->n_be_free];
        b = m->be[slot];
        memset(b, 0, sizeof(*b));
    } else {
        if (m->n_be == m->cap_be) {
            uint32_t cap = m->cap_be ? m->cap_be * 2 : 16;
            struct metrics_be **nb = realloc(m->be, cap * sizeof(*nb));
            if (nb == NULL)
                goto fail;
            m->be = nb;
            m->cap_be = cap;
        }
        b = calloc(1, sizeof(*b));
        if (b == NULL)
            goto fail;
        slot = (int)m->n_be;
        m->be[m->n_be++] = b;
    }
    snprintf(b->id, sizeof(b->id), "%s", id);
    /* cannot fail for memory after the reserve above */
    lb_map_add(&m->be_index, b->id, (void *)(uintptr_t)(slot + 1), NULL);
    pthread_mutex_unlock(&m->lock);
    return slot;
fail:
    pthread_mutex_unlock(&m->lock);
    return -1;
}

void metrics_be_release(struct metrics_worker *m, const uint32_t *slots, uint32_t n)
{
    if (n == 0)
        return;
    pthread_mutex_lock(&m->lock);
    uint32_t *nf = realloc(m->be_free, (m->n_be_free + n) * sizeof(*nf));
    if (nf == NULL) {
        pthread_mutex_unlock(&m->lock);
        return; /* the series stay: better than a wrong count */
    }
    m->be_free = nf;
    for (uint32_t k = 0; k < n; k++) {
        struct metrics_be *b = m->be[slots[k]];
        lb_map_del(&m->be_index, b->id); /* before the key changes */
        b->id[0] = '\0';
        m->be_free[m->n_be_free++] = slots[k];
    }
    /* drop the label pairs of released backends: rebuild in place */
    struct metrics_pair *old = m->pairs;
    uint32_t cap = m->cap_pairs;
    struct metrics_pair *np = calloc(cap, sizeof(*np));
    if (np != NULL) {
        for (uint32_t i = 0; i < cap; i++)
            np[i].fe = UINT16_MAX;
        uint32_t kept = 0;
        for (uint32_t i = 0; i < cap; i++) {
            const struct metrics_pair *o = &old[i];
            if (o->fe == UINT16_MAX ||
                (o->be != NO_BACKEND && o->be < m->n_be && m->be[o->be]->id[0] == '\0'))
                continue;
            uint32_t at = pair_hash(o->fe, o->be) & (cap - 1);
            while (np[at].fe != UINT16_MAX)
                at = (at + 1) & (cap - 1);
            np[at].fe = o->fe;
            np[at].be = o->be;
            for (int c = 0; c < METRICS_PAIR_N; c++)
                atomic_init(&np[at].by_class[c], METRIC_GET(o->by_class[c]));
            kept++;
        }
        m->pairs = np;
        m->n_pairs = kept;
        free(old);
    }
    pthread_mutex_unlock(&m->lock);
}

static uint32_t pair_hash(uint16_t fe, uint32_t be)
{
    uint64_t k = ((uint64_t)fe << 32) | be;
    k *= 0x9e3779b97f4a7c15ull;
    return (uint32_t)(k >> 32);
}

static struct metrics_pair *pair_find(struct metrics_pair *pairs, uint32_t cap, uint16_t fe,
                                      uint32_t be)
{
    uint32_t at = pair_hash(fe, be) & (cap - 1);
    for (;;) {
        struct metrics_pair *p = &pairs[at];
        if (p->fe == UINT16_MAX || (p->fe == fe && p->be == be))
            return p;
        at = (at + 1) & (cap - 1);
    }
}

static bool pairs_grow(struct metrics_worker *m)
{
    uint32_t cap = m->cap_pairs * 2;
    struct metrics_pair *np = calloc(cap, sizeof(*np));
    if (np == NULL)
        return false;
    for (uint32_t i = 0; i < cap; i++)
        np[i].fe = UINT16_MAX;
    for (uint32_t i = 0; i < m->cap_pairs; i++) {
        struct metrics_pair *o = &m->pairs[i];
        if (o->fe == UINT16_MAX)
            continue;
        struct metrics_pair *n = pair_find(np, cap, o->fe, o->be);
        n->fe = o->fe;
        n->be = o->be;
        for (int c = 0; c < METRICS_PAIR_N; c++)
            atomic_init(&n->by_class[c], METRIC_GET(o->by_class[c]));
    }
    free(m->pairs);
    m->pairs = np;
    m->cap_pairs = cap;
    return true;
}

unsigned metrics_class(unsigned status)
{
    if (status >= 100 && status < 600)
        return status / 100 - 1;
    return 5;
}

void metrics_request(struct metrics_worker *m, uint16_t fe, uint32_t be, enum metrics_proto proto,
                     unsigned status, uint64_t duration_us)
{
    struct metrics_pair *p = pair_find(m->pairs, m->cap_pairs, fe, be);
    if (p->fe == UINT16_MAX) {
        pthread_mutex_lock(&m->lock);
        if ((m->n_pairs + 1) * 4 > m->cap_pairs * 3 && pairs_grow(m))
            p = pair_find(m->pairs, m->cap_pairs, fe, be);
        if (p->fe == UINT16_MAX && (m->n_pairs + 1) < m->cap_pairs) {
            p->fe = fe;
            p->be = be;
            m->n_pairs++;
        }
        pthread_mutex_unlock(&m->lock);
        if (p->fe != fe || p->be != be)
            return;
    }
    if ((unsigned)proto >= METRICS_PROTOS)
        proto = METRICS_HTTP1;
    METRIC_ADD(p->by_class[(unsigned)proto * METRICS_CLASSES + metrics_class(status)], 1);
    double secs = (double)duration_us / 1e6;
    size_t b = lb_prom_bucket(lb_prom_latency_bounds, lb_prom_latency_nbounds, secs);
    if (b > METRICS_NBUCKETS)
        b = METRICS_NBUCKETS;
    if (fe < m->n_fe) {
        struct metrics_fe *f = &m->fe[fe];
        METRIC_ADD(f->hist[b], 1);
        METRIC_ADD(f->duration_us, duration_us);
    }
    if (be != NO_BACKEND && be < m->n_be) {
        METRIC_ADD(m->be[be]->requests, 1);
        METRIC_ADD(m->be[be]->hist[b], 1);
        METRIC_ADD(m->be[be]->duration_us, duration_us);
        if (status >= 500)
            METRIC_ADD(m->be[be]->errors, 1);
    }
}

/* ---- rendering ----------------------------------------------------------- */

/* Rows start with their label value: render_rows() reads it there. */
struct agg_fe {
    const char *name;
    uint64_t accepted, accept_pauses, closed, bytes_in, bytes_out, duration_us;
    uint64_t tunnels_opened, tunnels_closed, tunnel_bytes_in, tunnel_bytes_out;
    uint64_t open;         /* accepted - closed, set by render_fe() */
    uint64_t tunnels_open; /* tunnels_opened - tunnels_closed, likewise */
    uint64_t rejected[REJECT_N];
    uint64_t proxy[METRICS_PROXY_N];
    uint64_t hist[METRICS_NBUCKETS + 1];
    uint64_t h2_conns, h2_streams;
    uint64_t h2_abuse[H2_ABUSE_N];
};

struct agg_pair {
    const char *fe;
    const char *be;
    uint64_t by_class[METRICS_PAIR_N];
};

struct agg_be {
    const char *id; /* NULL: merged into an earlier row */
    uint64_t requests, errors, connect_failures, timeouts;
    uint64_t retries[METRICS_RETRY_N];
    uint64_t duration_us;
    uint64_t hist[METRICS_NBUCKETS + 1];
    uint64_t active;
};

static int cmp_pair(const void *a, const void *b)
{
    const struct agg_pair *x = a, *y = b;
    int c = strcmp(x->fe, y->fe);
    return c ? c : strcmp(x->be, y->be);
}

static int cmp_be(const void *a, const void *b)
{
    const struct agg_be *x = a, *y = b;
    return strcmp(x->id, y->id);
}

static const char *const reject_names[REJECT_N] = {
    "bad_request",     "uri_too_long",     "header_too_large", "expectation_failed",
    "not_implemented", "version",          "client_timeout",   "no_backend",
    "upstream_failed", "upstream_timeout", "connection_limit", "rate_limited",
};

static const char *const h2_abuse_names[H2_ABUSE_N] = {
    "rapid_reset", "continuation",  "header_list", "settings", "ping",
    "priority",    "window_update", "empty_data",  "streams",  "slow_reader",
};

static const char *const proxy_names[METRICS_PROXY_N] = {
    "accepted", "local", "missing", "malformed", "untrusted",
};

static const char *const proto_names[METRICS_PROTOS] = {"http/1.1", "h2"};
static const char *const class_names[METRICS_CLASSES] = {"1xx", "2xx", "3xx",
                                                         "4xx", "5xx", "other"};

/* A family with one value per row: the uint64_t at offset <at> of the row. */
struct row_family {
    const char *name, *type, *help;
    size_t at;
};

/* Renders each of <fams> over <n> rows of <size> bytes at <rows>, one sample
 * a row labelled <label> with the string the row starts with; rows whose
 * string is NULL are skipped. */
static void render_rows(struct lb_prom *p, const struct row_family *fams, size_t n_fams,
                        const char *label, const void *rows, size_t n, size_t size)
{
    for (size_t f = 0; f < n_fams; f++) {
        lb_prom_family(p, fams[f].name, fams[f].type, fams[f].help);
        for (size_t i = 0; i < n; i++) {
            const char *row = (const char *)rows + i * size;
            struct lb_prom_label l = {label, *(const char *const *)row};
            if (l.value != NULL)
                lb_prom_u64(p, fams[f].name, &l, 1, *(const uint64_t *)(row + fams[f].at));
        }
    }
}

static void render_fe(struct lb_prom *p, struct agg_fe *fe, unsigned n_fe)
{
    static const struct row_family fams[] = {
        {"lb_connections_accepted_total", "counter", "Client connections accepted.",
         offsetof(struct agg_fe, accepted)},
        {"lb_accept_pauses_total", "counter",
         "Times accepting stopped for a while: the process ran out of file "
         "descriptors or memory.",
         offsetof(struct agg_fe, accept_pauses)},
        {"lb_connections_open", "gauge", "Client connections open now.",
         offsetof(struct agg_fe, open)},
        {"lb_received_bytes_total", "counter", "Bytes received from clients.",
         offsetof(struct agg_fe, bytes_in)},
        {"lb_sent_bytes_total", "counter", "Bytes sent to clients.",
         offsetof(struct agg_fe, bytes_out)},
        {"lb_tunnels_total", "counter",
         "Upgrade requests (WebSocket) a backend switched to a tunnel with 101.",
         offsetof(struct agg_fe, tunnels_opened)},
        {"lb_tunnels_open", "gauge", "Upgrade tunnels open now.",
         offsetof(struct agg_fe, tunnels_open)},
        {"lb_tunnel_received_bytes_total", "counter", "Bytes clients sent through Upgrade tunnels.",
         offsetof(struct agg_fe, tunnel_bytes_in)},
        {"lb_tunnel_sent_bytes_total", "counter",
         "Bytes backends sent to clients through Upgrade tunnels.",
         offsetof(struct agg_fe, tunnel_bytes_out)},
        {"lb_http2_connections_total", "counter", "Client connections that spoke HTTP/2.",
         offsetof(struct agg_fe, h2_conns)},
        {"lb_http2_streams_total", "counter",
         "HTTP/2 streams that carried a request (the HTTP/2 share of the requests).",
         offsetof(struct agg_fe, h2_streams)},
    };
    for (unsigned i = 0; i < n_fe; i++) {
        fe[i].open = fe[i].accepted >= fe[i].closed ? fe[i].accepted - fe[i].closed : 0;
        fe[i].tunnels_open = fe[i].tunnels_opened >= fe[i].tunnels_closed
                                 ? fe[i].tunnels_opened - fe[i].tunnels_closed
                                 : 0;
    }
    render_rows(p, fams, sizeof(fams) / sizeof(fams[0]), "frontend", fe, n_fe, sizeof(*fe));
    lb_prom_family(p, "lb_requests_rejected_total", "counter",
                   "Requests answered by the data plane itself, by reason.");
    for (unsigned i = 0; i < n_fe; i++) {
        for (int r = 0; r < REJECT_N; r++) {
            struct lb_prom_label l[2] = {{"frontend", fe[i].name}, {"reason", reject_names[r]}};
            lb_prom_u64(p, "lb_requests_rejected_total", l, 2, fe[i].rejected[r]);
        }
    }
    lb_prom_family(p, "lb_proxy_protocol_total", "counter",
                   "Client connections on frontends that take PROXY protocol headers, by what "
                   "their header was.");
    for (unsigned i = 0; i < n_fe; i++) {
        for (int r = 0; r < METRICS_PROXY_N; r++) {
            struct lb_prom_label l[2] = {{"frontend", fe[i].name}, {"result", proxy_names[r]}};
            lb_prom_u64(p, "lb_proxy_protocol_total", l, 2, fe[i].proxy[r]);
        }
    }
    lb_prom_family(p, "lb_http2_abuse_total", "counter",
                   "HTTP/2 connections calmed (GOAWAY ENHANCE_YOUR_CALM) or streams refused, by "
                   "attack class.");
    for (unsigned i = 0; i < n_fe; i++) {
        for (int r = 0; r < H2_ABUSE_N; r++) {
            struct lb_prom_label l[2] = {{"frontend", fe[i].name}, {"kind", h2_abuse_names[r]}};
            lb_prom_u64(p, "lb_http2_abuse_total", l, 2, fe[i].h2_abuse[r]);
        }
    }
    lb_prom_family(p, "lb_http_request_duration_seconds", "histogram",
                   "Time from the first byte of a request to the last byte of its response.");
    for (unsigned i = 0; i < n_fe; i++) {
        struct lb_prom_label l = {"frontend", fe[i].name};
        size_t nb =
            lb_prom_latency_nbounds < METRICS_NBUCKETS ? lb_prom_latency_nbounds : METRICS_NBUCKETS;
        uint64_t counts[METRICS_NBUCKETS + 1];
        memcpy(counts, fe[i].hist, sizeof(uint64_t) * nb);
        counts[nb] = 0;
        for (size_t b = nb; b <= METRICS_NBUCKETS; b++)
            counts[nb] += fe[i].hist[b];
        lb_prom_histogram(p, "lb_http_request_duration_seconds", &l, 1, lb_prom_latency_bounds, nb,
                          counts, (double)fe[i].duration_us / 1e6);
    }
}

/* lb_worker_connections: what each worker holds, so that an uneven spread
 * shows. The workers' locks are held. */
static void render_workers(struct lb_prom *p, struct metrics_worker *const *workers, unsigned n)
{
    lb_prom_family(p, "lb_worker_connections", "gauge",
                   "Client connections each worker thread holds now (a TLS frontend's new "
                   "connections go to the worker holding the fewest).");
    for (unsigned w = 0; w < n; w++) {
        uint64_t open = 0;
        for (uint32_t i = 0; i < workers[w]->n_fe; i++) {
            uint64_t a = METRIC_GET(workers[w]->fe[i].accepted);
            uint64_t c = METRIC_GET(workers[w]->fe[i].closed);
            open += a >= c ? a - c : 0;
        }
        char id[16];
        snprintf(id, sizeof(id), "%u", w);
        struct lb_prom_label l = {"worker", id};
        lb_prom_u64(p, "lb_worker_connections", &l, 1, open);
    }
}

/* lb_http_requests_total from the workers' (frontend, backend) pairs,
 * merged. */
static void render_pairs(struct lb_prom *p, struct agg_pair *pairs, size_t n_pairs)
{
    qsort(pairs, n_pairs, sizeof(*pairs), cmp_pair);
    lb_prom_family(p, "lb_http_requests_total", "counter",
                   "Requests answered, by frontend, backend, the protocol the client spoke "
                   "and status class.");
    for (size_t i = 0; i < n_pairs;) {
        size_t j = i + 1;
        while (j < n_pairs && cmp_pair(&pairs[i], &pairs[j]) == 0) {
            for (int c = 0; c < METRICS_PAIR_N; c++)
                pairs[i].by_class[c] += pairs[j].by_class[c];
            j++;
        }
        for (int c = 0; c < METRICS_PAIR_N; c++) {
            if (pairs[i].by_class[c] == 0)
                continue;
            struct lb_prom_label l[4] = {{"frontend", pairs[i].fe},
                                         {"backend", pairs[i].be},
                                         {"protocol", proto_names[c / METRICS_CLASSES]},
                                         {"code", class_names[c % METRICS_CLASSES]}};
            lb_prom_u64(p, "lb_http_requests_total", l, 4, pairs[i].by_class[c]);
        }
        i = j;
    }
}

/* lb_backend_request_duration_seconds: the latency of the requests each
 * backend answered (the dashboard's and Grafana's p50/p99 per backend). */
static void render_be_latency(struct lb_prom *p, const struct agg_be *bes, size_t n_bes)
{
    lb_prom_family(p, "lb_backend_request_duration_seconds", "histogram",
                   "Time from the first byte of a request to the last byte of its response, by "
                   "the backend that answered it.");
    size_t nb =
        lb_prom_latency_nbounds < METRICS_NBUCKETS ? lb_prom_latency_nbounds : METRICS_NBUCKETS;
    for (size_t i = 0; i < n_bes; i++) {
        if (bes[i].id == NULL)
            continue;
        struct lb_prom_label l = {"backend", bes[i].id};
        uint64_t counts[METRICS_NBUCKETS + 1];
        memcpy(counts, bes[i].hist, sizeof(uint64_t) * nb);
        counts[nb] = 0;
        for (size_t b = nb; b <= METRICS_NBUCKETS; b++)
            counts[nb] += bes[i].hist[b];
        lb_prom_histogram(p, "lb_backend_request_duration_seconds", &l, 1, lb_prom_latency_bounds,
                          nb, counts, (double)bes[i].duration_us / 1e6);
    }
}

/* The per-backend families from the workers' rows, merged by id. */
static void render_bes(struct lb_prom *p, struct agg_be *bes, size_t n_bes)
{
    qsort(bes, n_bes, sizeof(*bes), cmp_be);
    for (size_t i = 0; i < n_bes;) {
        size_t j = i + 1;
        while (j < n_bes && strcmp(bes[i].id, bes[j].id) == 0) {
            bes[i].requests += bes[j].requests;
            bes[i].errors += bes[j].errors;
            bes[i].connect_failures += bes[j].connect_failures;
            bes[i].timeouts += bes[j].timeouts;
            for (int r = 0; r < METRICS_RETRY_N; r++)
                bes[i].retries[r] += bes[j].retries[r];
            bes[i].duration_us += bes[j].duration_us;
            bes[i].active += bes[j].active;
            for (int b = 0; b <= METRICS_NBUCKETS; b++)
                bes[i].hist[b] += bes[j].hist[b];
            bes[j].id = NULL;
            j++;
        }
        i = j;
    }
    static const struct row_family fams[] = {
        {"lb_backend_connect_failures_total", "counter", "Failed connection attempts to a backend.",
         offsetof(struct agg_be, connect_failures)},
        {"lb_backend_timeouts_total", "counter", "Requests whose backend timed out.",
         offsetof(struct agg_be, timeouts)},
        {"lb_backend_requests_in_flight", "gauge",
         "Requests (and Upgrade tunnels) sent to the backend and not finished yet.",
         offsetof(struct agg_be, active)},
    };
    render_rows(p, fams, sizeof(fams) / sizeof(fams[0]), "backend", bes, n_bes, sizeof(*bes));

    render_be_latency(p, bes, n_bes);

    static const char *const retry_names[METRICS_RETRY_N] = {"connect", "5xx", "timeout", "reset"};
    lb_prom_family(p, "lb_retries_total", "counter",
                   "Requests sent again to another backend after a failure on this one.");
    for (size_t i = 0; i < n_bes; i++) {
        if (bes[i].id == NULL)
            continue;
        for (int r = 0; r < METRICS_RETRY_N; r++) {
            struct lb_prom_label l[2] = {{"backend", bes[i].id}, {"reason", retry_names[r]}};
            lb_prom_u64(p, "lb_retries_total", l, 2, bes[i].retries[r]);
        }
    }
}

void metrics_render(struct lb_prom *p, struct metrics_worker *const *workers, unsigned n,
                    const struct metrics_backend_state *backends, uint32_t n_backends,
                    uint64_t config_version, uint64_t generation)
{
    for (unsigned w = 0; w < n; w++)
        pthread_mutex_lock(&workers[w]->lock);

    size_t max_pairs = 0, max_be = 0;
    for (unsigned w = 0; w < n; w++) {
        max_pairs += workers[w]->n_pairs;
        max_be += workers[w]->n_be;
    }
    struct agg_fe *fe = calloc(METRICS_MAX_FE, sizeof(*fe));
    struct agg_pair *pairs = calloc(max_pairs + 1, sizeof(*pairs));
    struct agg_be *bes = calloc(max_be + 1, sizeof(*bes));
    if (fe == NULL || pairs == NULL || bes == NULL) {
        p->oom = true;
        goto out;
    }
    unsigned n_fe = 0;
    size_t n_pairs = 0, n_bes = 0;
    for (unsigned w = 0; w < n; w++) {
        const struct metrics_worker *m = workers[w];
        for (uint32_t i = 0; i < m->n_fe; i++) {
            const struct metrics_fe *f = &m->fe[i];
            unsigned k = 0;
            while (k < n_fe && strcmp(fe[k].name, f->name) != 0)
                k++;
            if (k == n_fe) {
                if (n_fe == METRICS_MAX_FE)
                    continue;
                fe[n_fe++].name = f->name;
            }
            fe[k].accepted += METRIC_GET(f->accepted);
            fe[k].accept_pauses += METRIC_GET(f->accept_pauses);
            fe[k].closed += METRIC_GET(f->closed);
            fe[k].bytes_in += METRIC_GET(f->bytes_in);
            fe[k].bytes_out += METRIC_GET(f->bytes_out);
            fe[k].tunnels_opened += METRIC_GET(f->tunnels_opened);
            fe[k].tunnels_closed += METRIC_GET(f->tunnels_closed);
            fe[k].tunnel_bytes_in += METRIC_GET(f->tunnel_bytes_in);
            fe[k].tunnel_bytes_out += METRIC_GET(f->tunnel_bytes_out);
            fe[k].duration_us += METRIC_GET(f->duration_us);
            for (int r = 0; r < REJECT_N; r++)
                fe[k].rejected[r] += METRIC_GET(f->rejected[r]);
            for (int r = 0; r < METRICS_PROXY_N; r++)
                fe[k].proxy[r] += METRIC_GET(f->proxy[r]);
            fe[k].h2_conns += METRIC_GET(f->h2_conns);
            fe[k].h2_streams += METRIC_GET(f->h2_streams);
            for (int r = 0; r < H2_ABUSE_N; r++)
                fe[k].h2_abuse[r] += METRIC_GET(f->h2_abuse[r]);
            for (int b = 0; b <= METRICS_NBUCKETS; b++)
                fe[k].hist[b] += METRIC_GET(f->hist[b]);
        }
        for (uint32_t i = 0; i < m->cap_pairs; i++) {
            const struct metrics_pair *mp = &m->pairs[i];
            if (mp->fe == UINT16_MAX || mp->fe >= m->n_fe)
                continue;
            struct agg_pair *a = &pairs[n_pairs++];
            a->fe = m->fe[mp->fe].name;
            a->be = (mp->be != NO_BACKEND && mp->be < m->n_be) ? m->be[mp->be]->id : "";
            for (int c = 0; c < METRICS_PAIR_N; c++)
                a->by_class[c] = METRIC_GET(mp->by_class[c]);
        }
        for (uint32_t i = 0; i < m->n_be; i++) {
            if (m->be[i]->id[0] == '\0')
                continue;
            struct agg_be *a = &bes[n_bes++];
            a->id = m->be[i]->id;
            a->requests = METRIC_GET(m->be[i]->requests);
            a->errors = METRIC_GET(m->be[i]->errors);
            a->connect_failures = METRIC_GET(m->be[i]->connect_failures);
            a->timeouts = METRIC_GET(m->be[i]->timeouts);
            for (int r = 0; r < METRICS_RETRY_N; r++)
                a->retries[r] = METRIC_GET(m->be[i]->retries[r]);
            a->duration_us = METRIC_GET(m->be[i]->duration_us);
            a->active = METRIC_GET(m->be[i]->active);
            for (int b = 0; b <= METRICS_NBUCKETS; b++)
                a->hist[b] = METRIC_GET(m->be[i]->hist[b]);
        }
    }

    lb_prom_family(p, "lb_config_version", "gauge", "Config version of the applied snapshot.");
    lb_prom_u64(p, "lb_config_version", NULL, 0, config_version);
    lb_prom_family(p, "lb_snapshot_generation", "gauge", "Generation of the applied snapshot.");
    lb_prom_u64(p, "lb_snapshot_generation", NULL, 0, generation);
    lb_prom_family(p, "lb_log_lines_dropped_total", "counter",
                   "Log lines dropped because standard output would block.");
    lb_prom_u64(p, "lb_log_lines_dropped_total", NULL, 0, lb_log_dropped());

    render_fe(p, fe, n_fe);
    render_workers(p, workers, n);

    render_pairs(p, pairs, n_pairs);
    render_bes(p, bes, n_bes);

    lb_prom_family(p, "lb_backend_up", "gauge",
                   "1 when the backend may take traffic (active and not known down).");
    for (uint32_t i = 0; i < n_backends; i++) {
        struct lb_prom_label l = {"backend", backends[i].id};
        lb_prom_u64(p, "lb_backend_up", &l, 1, backends[i].up ? 1 : 0);
    }
out:
    for (unsigned w = n; w-- > 0;)
        pthread_mutex_unlock(&workers[w]->lock);
    free(fe);
    free(pairs);
    free(bes);
}

void metrics_backend_totals(struct metrics_worker *const *workers, unsigned n,
                            const char *const *ids, uint32_t n_ids, struct metrics_be_totals *out)
{
    memset(out, 0, sizeof(*out) * n_ids);
    if (n_ids == 0)
        return;
    struct lb_map by_id;
    lb_map_init(&by_id, NULL, NULL);
    if (!lb_map_reserve(&by_id, n_ids))
        return;
    for (uint32_t i = 0; i < n_ids; i++)
        lb_map_add(&by_id, ids[i], &out[i], NULL);
    for (unsigned w = 0; w < n; w++) {
        struct metrics_worker *m = workers[w];
        pthread_mutex_lock(&m->lock);
        for (uint32_t b = 0; b < m->n_be; b++) {
            const struct metrics_be *be = m->be[b];
            struct metrics_be_totals *t = lb_map_get(&by_id, be->id);
            if (t == NULL)
                continue;
            t->requests += METRIC_GET(be->requests);
            t->errors += METRIC_GET(be->errors);
            t->connect_failures += METRIC_GET(be->connect_failures);
            t->timeouts += METRIC_GET(be->timeouts);
            t->duration_us += METRIC_GET(be->duration_us);
            t->active += METRIC_GET(be->active);
            for (int k = 0; k <= METRICS_NBUCKETS; k++)
                t->hist[k] += METRIC_GET(be->hist[k]);
        }
        pthread_mutex_unlock(&m->lock);
    }
    lb_map_deinit(&by_id);
}
