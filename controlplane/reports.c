/* controlplane/reports.c: per data plane, the backends of its latest report
 * sorted by id (binary search: listing 10,000 backends stays O(n log n)),
 * each with the counters of the last mark. */
#include "reports.h"

#include "lb_err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct rb {
    char *id;
    Lb__V1__BreakerState breaker;
    uint64_t requests, errors, latency_sum_us; /* cumulative, as reported */
    bool marked;                               /* the base below is set */
    uint64_t base_requests, base_errors, base_latency_us;
    bool ejected;                 /* as reported */
    uint64_t ejections;           /* cumulative, as reported */
    uint32_t connections, queued; /* now, as reported */
    uint64_t queue_timeouts;      /* cumulative, as reported */
    bool ejected_news;            /* ejected, or ejections rose since the previous report */
};

struct rdp {
    char *node_id;
    int64_t last_ms;         /* when its latest report arrived */
    int64_t started_unix_ms; /* a change means a restart: counters began again */
    uint32_t pid;            /* the reporting process (a hand-over changes it) */
    char binary_version[32]; /* its lb-dataplane version, "" if it sent none */
    char host[64];           /* its host name */
    char listeners[256];     /* where it listens, comma-separated */
    uint64_t boot_id;        /* of its latest report */
    struct rb *b;            /* sorted by id */
    size_t n;
};

struct reports {
    struct rdp *dps;
    size_t n, cap;
};

struct reports *reports_new(void)
{
    return calloc(1, sizeof(struct reports));
}

static void rdp_clear(struct rdp *d)
{
    for (size_t i = 0; i < d->n; i++)
        free(d->b[i].id);
    free(d->b);
    free(d->node_id);
}

void reports_free(struct reports *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < r->n; i++)
        rdp_clear(&r->dps[i]);
    free(r->dps);
    free(r);
}

static int rb_cmp(const void *a, const void *b)
{
    return strcmp(((const struct rb *)a)->id, ((const struct rb *)b)->id);
}

static const struct rb *rb_find(const struct rdp *d, const char *id)
{
    struct rb key = {.id = (char *)id};
    return d->n ? bsearch(&key, d->b, d->n, sizeof(*d->b), rb_cmp) : NULL;
}

static uint64_t errors_of(const Lb__V1__BackendReport *br)
{
    return br->errors + br->connect_failures + br->timeouts;
}

int reports_add(struct reports *r, const Lb__V1__Report *rep, int64_t now_ms, struct lb_err *err)
{
    if (rep->node_id == NULL || rep->node_id[0] == '\0')
        return LB_OK;
    size_t k = 0;
    while (k < r->n) {
        if (now_ms - r->dps[k].last_ms > REPORTS_FORGET_MS &&
            strcmp(r->dps[k].node_id, rep->node_id) != 0) {
            rdp_clear(&r->dps[k]);
            r->dps[k] = r->dps[--r->n];
            continue;
        }
        k++;
    }
    struct rdp *d = NULL;
    for (size_t i = 0; i < r->n && d == NULL; i++)
        if (strcmp(r->dps[i].node_id, rep->node_id) == 0)
            d = &r->dps[i];
    struct rb *nb = calloc(rep->n_backends ? rep->n_backends : 1, sizeof(*nb));
    size_t n = 0;
    for (; nb != NULL && n < rep->n_backends; n++) {
        const Lb__V1__BackendReport *br = rep->backends[n];
        if ((nb[n].id = strdup(br->id ? br->id : "")) == NULL)
            break;
        nb[n].breaker = br->breaker;
        nb[n].requests = br->requests;
        nb[n].errors = errors_of(br);
        nb[n].latency_sum_us = br->latency_sum_us;
        nb[n].ejected = br->ejected;
        nb[n].ejections = br->ejections;
        nb[n].connections = br->connections;
        nb[n].queued = br->queued;
        nb[n].queue_timeouts = br->queue_timeouts;
    }
    if (d == NULL && nb != NULL && n == rep->n_backends && r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 4;
        struct rdp *p = realloc(r->dps, cap * sizeof(*p));
        if (p != NULL) {
            r->dps = p;
            r->cap = cap;
        }
    }
    char *node = d == NULL ? strdup(rep->node_id) : NULL;
    if (nb == NULL || n != rep->n_backends || (d == NULL && (r->n == r->cap || node == NULL))) {
        for (size_t i = 0; nb != NULL && i < n; i++)
            free(nb[i].id);
        free(nb);
        free(node);
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory for the report of %s", rep->node_id);
    }
    qsort(nb, n, sizeof(*nb), rb_cmp);
    bool first = d == NULL;
    if (d == NULL) {
        d = &r->dps[r->n++];
        *d = (struct rdp){.node_id = node, .started_unix_ms = rep->started_unix_ms};
    }
    /* The marks carry over by id; after a restart the base is zero. */
    bool restarted = d->started_unix_ms != rep->started_unix_ms;
    for (size_t i = 0; i < n; i++) {
        const struct rb *old = rb_find(d, nb[i].id);
        uint64_t before = restarted || old == NULL ? 0 : old->ejections;
        nb[i].ejected_news = nb[i].ejected || (!first && nb[i].ejections > before);
        if (old == NULL || !old->marked)
            continue;
        nb[i].marked = true;
        if (!restarted) {
            nb[i].base_requests = old->base_requests;
            nb[i].base_errors = old->base_errors;
            nb[i].base_latency_us = old->base_latency_us;
        }
    }
    for (size_t i = 0; i < d->n; i++)
        free(d->b[i].id);
    free(d->b);
    d->b = nb;
    d->n = n;
    d->last_ms = now_ms;
    d->started_unix_ms = rep->started_unix_ms;
    d->pid = rep->pid;
    snprintf(d->binary_version, sizeof(d->binary_version), "%s",
             rep->binary_version ? rep->binary_version : "");
    d->boot_id = rep->boot_id;
    snprintf(d->host, sizeof(d->host), "%s", rep->host ? rep->host : "");
    size_t at = 0;
    d->listeners[0] = '\0';
    for (size_t i = 0; i < rep->n_listeners && at < sizeof(d->listeners); i++) {
        int w = snprintf(d->listeners + at, sizeof(d->listeners) - at, "%s%s", i ? "," : "",
                         rep->listeners[i] ? rep->listeners[i] : "");
        if (w < 0)
            break;
        at += (size_t)w;
    }
    return LB_OK;
}

bool reports_node_get(const struct reports *r, const char *node_id, struct reports_node *out)
{
    memset(out, 0, sizeof(*out));
    for (size_t i = 0; node_id != NULL && i < r->n; i++) {
        const struct rdp *d = &r->dps[i];
        if (strcmp(d->node_id, node_id) != 0)
            continue;
        out->pid = d->pid;
        out->started_unix_ms = d->started_unix_ms;
        snprintf(out->binary_version, sizeof(out->binary_version), "%s", d->binary_version);
        snprintf(out->host, sizeof(out->host), "%s", d->host);
        snprintf(out->listeners, sizeof(out->listeners), "%s", d->listeners);
        return true;
    }
    return false;
}

static bool fresh(const struct rdp *d, int64_t now_ms)
{
    return now_ms - d->last_ms <= REPORTS_FRESH_MS;
}

/* Backend <id> in the next data plane from *<i> on that reported in the
 * last REPORTS_FRESH_MS and knows it; *<i> moves past it. NULL when none is
 * left. */
static const struct rb *next_fresh(const struct reports *r, size_t *i, const char *id,
                                   int64_t now_ms)
{
    while (*i < r->n) {
        const struct rdp *d = &r->dps[(*i)++];
        const struct rb *b = fresh(d, now_ms) ? rb_find(d, id) : NULL;
        if (b != NULL)
            return b;
    }
    return NULL;
}

static int severity(Lb__V1__BreakerState s)
{
    return s == LB__V1__BREAKER_STATE__BREAKER_OPEN        ? 2
           : s == LB__V1__BREAKER_STATE__BREAKER_HALF_OPEN ? 1
                                                           : 0;
}

void reports_backend_get(const struct reports *r, const char *id, int64_t now_ms,
                         struct reports_backend *out)
{
    *out = (struct reports_backend){.breaker = LB__V1__BREAKER_STATE__BREAKER_CLOSED};
    const struct rb *b;
    for (size_t i = 0; (b = next_fresh(r, &i, id, now_ms)) != NULL;) {
        if (severity(b->breaker) > severity(out->breaker))
            out->breaker = b->breaker;
        if (b->breaker == LB__V1__BREAKER_STATE__BREAKER_OPEN)
            out->open++;
        out->requests += b->requests;
        out->errors += b->errors;
        if (b->ejected) {
            out->ejected = true;
            out->ejected_by++;
        }
        out->ejections += b->ejections;
        out->connections += b->connections;
        out->queued += b->queued;
        out->queue_timeouts += b->queue_timeouts;
    }
}

void reports_ejected_each(const struct reports *r, const char *node_id, reports_ejected_fn fn,
                          void *ctx)
{
    for (size_t i = 0; i < r->n; i++) {
        const struct rdp *d = &r->dps[i];
        if (strcmp(d->node_id, node_id) != 0)
            continue;
        for (size_t j = 0; j < d->n; j++)
            if (d->b[j].ejected_news)
                fn(ctx, d->b[j].id, d->node_id);
        return;
    }
}

static uint64_t delta(uint64_t now, uint64_t base)
{
    return now >= base ? now - base : now;
}

void reports_window_get(const struct reports *r, const char *id, int64_t now_ms,
                        struct reports_window *out)
{
    *out = (struct reports_window){0};
    const struct rb *b;
    for (size_t i = 0; (b = next_fresh(r, &i, id, now_ms)) != NULL;) {
        out->requests += delta(b->requests, b->marked ? b->base_requests : 0);
        out->errors += delta(b->errors, b->marked ? b->base_errors : 0);
        out->latency_sum_us += delta(b->latency_sum_us, b->marked ? b->base_latency_us : 0);
    }
}

void reports_mark(struct reports *r)
{
    for (size_t i = 0; i < r->n; i++)
        for (size_t j = 0; j < r->dps[i].n; j++) {
            struct rb *b = &r->dps[i].b[j];
            b->marked = true;
            b->base_requests = b->requests;
            b->base_errors = b->errors;
            b->base_latency_us = b->latency_sum_us;
        }
}

void reports_samples_each(const struct reports *r, const char *id, int64_t now_ms,
                          reports_sample_fn fn, void *ctx)
{
    for (size_t i = 0; i < r->n; i++) {
        const struct rdp *d = &r->dps[i];
        const struct rb *b = fresh(d, now_ms) ? rb_find(d, id) : NULL;
        if (b == NULL)
            continue;
        const struct reports_sample s = {.node_id = d->node_id,
                                         .started_unix_ms = d->started_unix_ms,
                                         .boot_id = d->boot_id,
                                         .received_ms = d->last_ms,
                                         .requests = b->requests,
                                         .errors = b->errors};
        fn(ctx, &s);
    }
}

/* ---- dynamic weights -------------------------------------------------------- */

static bool enough(const struct reports_weight_in *in)
{
    return in->w.requests >= REPORTS_MIN_REQUESTS;
}

void reports_weights_next(const struct reports_weight_in *in, size_t n, uint32_t *out)
{
    uint64_t pool_req = 0, pool_lat = 0;
    size_t eligible = 0;
    for (size_t i = 0; i < n; i++)
        if (enough(&in[i])) {
            pool_req += in[i].w.requests;
            pool_lat += in[i].w.latency_sum_us;
            eligible++;
        }
    double pool_mean = pool_req ? (double)pool_lat / (double)pool_req : 0.0;
    for (size_t i = 0; i < n; i++) {
        uint32_t cfg = in[i].configured ? in[i].configured : 1;
        uint32_t cur = in[i].current ? in[i].current : cfg;
        if (!enough(&in[i])) {
            out[i] = cur;
            continue;
        }
        double err_rate = (double)in[i].w.errors / (double)in[i].w.requests;
        double factor = 1.0 - (err_rate >= 0.5 ? 1.0 : err_rate * 2.0);
        double mean = (double)in[i].w.latency_sum_us / (double)in[i].w.requests;
        if (eligible >= 2 && pool_mean > 0.0 && mean > 1.5 * pool_mean) {
            double lat_factor = 1.5 * pool_mean / mean;
            if (lat_factor < factor)
                factor = lat_factor;
        }
        uint32_t floor_w = cfg / 10 ? cfg / 10 : 1;
        uint32_t step = cfg / 4 ? cfg / 4 : 1;
        double t = (double)cfg * factor + 0.5;
        uint32_t target = t < (double)floor_w ? floor_w : (uint32_t)t;
        if (target > cfg)
            target = cfg;
        uint32_t next = cur;
        if (target < cur)
            next = cur - target > step ? cur - step : target;
        else if (target > cur)
            next = target - cur > step ? cur + step : target;
        if (next < floor_w)
            next = floor_w;
        if (next > cfg)
            next = cfg;
        out[i] = next;
    }
}
