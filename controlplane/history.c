/* controlplane/history.c: the traffic history ring (see history.h). Slots
 * are claimed per step for every series at once: slot_step[i] says which
 * step slot i holds, and a slot is cleared in every series when a new step
 * claims it. */
#include "history.h"

#include "lb_err.h"
#include "lb_prom.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct series {
    char *id;
    int64_t last_step; /* the newest step with traffic counted here */
    struct history_slot slot[HISTORY_SLOTS];
};

/* A data plane's latest cumulative counters of one backend, and the
 * difference to its previous report. */
struct history_last {
    char *id;
    uint64_t requests, errors, latency_us;
    uint64_t hist[HISTORY_NBUCKETS];
    uint64_t d_requests, d_errors; /* since the previous report */
    uint64_t d_hist[HISTORY_NBUCKETS];
    int64_t d_ms; /* between the two reports; 0 = only one so far */
    Lb__V1__BreakerState breaker;
    uint32_t effective_weight, connections, queued;
    uint32_t active; /* requests in flight, as reported */
    bool ejected;
};

struct node {
    char *node_id;
    char binary_version[32]; /* as reported */
    uint32_t pid;
    int64_t started_unix_ms;
    int64_t last_ms;
    struct history_last *b;
    size_t n;
};

struct history {
    int64_t slot_step[HISTORY_SLOTS]; /* the step slot i holds, -1 = none */
    struct series **s;                /* sorted by id */
    size_t n_s;
    struct node nodes[HISTORY_MAX_NODES];
    size_t n_nodes;
};

struct history *history_new(void)
{
    struct history *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return NULL;
    for (size_t i = 0; i < HISTORY_SLOTS; i++)
        h->slot_step[i] = -1;
    return h;
}

static void node_clear(struct node *n)
{
    for (size_t i = 0; i < n->n; i++)
        free(n->b[i].id);
    free(n->b);
    free(n->node_id);
    *n = (struct node){0};
}

void history_free(struct history *h)
{
    if (h == NULL)
        return;
    for (size_t i = 0; i < h->n_s; i++) {
        free(h->s[i]->id);
        free(h->s[i]);
    }
    free(h->s);
    for (size_t i = 0; i < h->n_nodes; i++)
        node_clear(&h->nodes[i]);
    free(h);
}

/* The slot of <step>, cleared in every series when it held an older step. */
static size_t claim(struct history *h, int64_t step)
{
    size_t i = (size_t)(step % HISTORY_SLOTS);
    if (h->slot_step[i] != step) {
        for (size_t k = 0; k < h->n_s; k++)
            memset(&h->s[k]->slot[i], 0, sizeof(h->s[k]->slot[i]));
        h->slot_step[i] = step;
    }
    return i;
}

/* Forgets series without traffic for a whole ring. */
static void drop_stale_series(struct history *h, int64_t step)
{
    size_t k = 0;
    for (size_t i = 0; i < h->n_s; i++) {
        if (step - h->s[i]->last_step >= HISTORY_SLOTS) {
            free(h->s[i]->id);
            free(h->s[i]);
        } else {
            h->s[k++] = h->s[i];
        }
    }
    h->n_s = k;
}

static int series_cmp(const void *key, const void *elem)
{
    return strcmp(key, (*(struct series *const *)elem)->id);
}

/* Backend <id>'s series, created when new; NULL when full or out of memory. */
static struct series *series_of(struct history *h, const char *id, int64_t step)
{
    struct series **f = h->n_s ? bsearch(id, h->s, h->n_s, sizeof(*h->s), series_cmp) : NULL;
    if (f != NULL)
        return *f;
    if (h->n_s == HISTORY_MAX_BACKENDS)
        return NULL;
    struct series *s = calloc(1, sizeof(*s));
    struct series **ns = realloc(h->s, (h->n_s + 1) * sizeof(*ns));
    if (ns != NULL)
        h->s = ns;
    if (s == NULL || ns == NULL || (s->id = strdup(id)) == NULL) {
        free(s);
        return NULL;
    }
    s->last_step = step;
    size_t at = 0;
    while (at < h->n_s && strcmp(h->s[at]->id, id) < 0)
        at++;
    memmove(&h->s[at + 1], &h->s[at], (h->n_s - at) * sizeof(*h->s));
    h->s[at] = s;
    h->n_s++;
    return s;
}

static uint64_t delta(uint64_t now, uint64_t before)
{
    return now >= before ? now - before : now; /* a counter that went back restarted */
}

/* The node of <id>, added when new (forgetting silent ones first); NULL
 * when full or out of memory. */
static struct node *node_of(struct history *h, const char *id, int64_t now_ms)
{
    for (size_t i = 0; i < h->n_nodes;) {
        if (strcmp(h->nodes[i].node_id, id) == 0)
            return &h->nodes[i];
        if (now_ms - h->nodes[i].last_ms > HISTORY_FORGET_MS) {
            node_clear(&h->nodes[i]);
            h->nodes[i] = h->nodes[--h->n_nodes];
            h->nodes[h->n_nodes] = (struct node){0};
            continue;
        }
        i++;
    }
    if (h->n_nodes == HISTORY_MAX_NODES)
        return NULL;
    struct node *n = &h->nodes[h->n_nodes];
    if ((n->node_id = strdup(id)) == NULL)
        return NULL;
    h->n_nodes++;
    return n;
}

static int last_cmp(const void *a, const void *b)
{
    return strcmp(((const struct history_last *)a)->id, ((const struct history_last *)b)->id);
}

/* <n>'s backends are sorted by id. */
static const struct history_last *last_find(const struct node *n, const char *id)
{
    struct history_last key = {.id = (char *)id};
    return n->n ? bsearch(&key, n->b, n->n, sizeof(*n->b), last_cmp) : NULL;
}

/* Fills <l> from <br>, with the differences to <prev> (NULL: none). */
static void last_fill(struct history_last *l, const Lb__V1__BackendReport *br,
                      const struct history_last *prev, int64_t d_ms)
{
    l->requests = br->requests;
    l->errors = br->errors + br->connect_failures + br->timeouts;
    l->latency_us = br->latency_sum_us;
    for (size_t k = 0; k < HISTORY_NBUCKETS && k < br->n_latency_buckets; k++)
        l->hist[k] = br->latency_buckets[k];
    l->breaker = br->breaker;
    l->effective_weight = br->effective_weight;
    l->connections = br->connections;
    l->queued = br->queued;
    l->active = br->active;
    l->ejected = br->ejected;
    if (prev == NULL)
        return;
    l->d_ms = d_ms;
    l->d_requests = delta(l->requests, prev->requests);
    l->d_errors = delta(l->errors, prev->errors);
    for (size_t k = 0; k < HISTORY_NBUCKETS; k++)
        l->d_hist[k] = delta(l->hist[k], prev->hist[k]);
}

/* Adds <l>'s differences (and latency) to its series' slot of <step>. */
static void count(struct history *h, const struct history_last *l, const struct history_last *prev,
                  int64_t step, size_t slot)
{
    struct series *s = series_of(h, l->id, step);
    if (s == NULL)
        return;
    s->last_step = step;
    struct history_slot *sl = &s->slot[slot];
    sl->requests += (uint32_t)l->d_requests;
    sl->errors += (uint32_t)l->d_errors;
    sl->latency_us += delta(l->latency_us, prev->latency_us);
    for (size_t k = 0; k < HISTORY_NBUCKETS; k++)
        sl->hist[k] += (uint32_t)l->d_hist[k];
}

int history_add(struct history *h, const Lb__V1__Report *rep, int64_t now_ms, struct lb_err *err)
{
    if (rep->node_id == NULL || rep->node_id[0] == '\0' || now_ms < 0)
        return LB_OK;
    struct node *n = node_of(h, rep->node_id, now_ms);
    if (n == NULL)
        return h->n_nodes == HISTORY_MAX_NODES
                   ? LB_OK
                   : lb_err_set(err, LB_ENOMEM, 0, "out of memory for the history of %s",
                                rep->node_id);
    /* a restart starts the counters again: its first report is a base only */
    bool restarted = n->last_ms != 0 && n->started_unix_ms != rep->started_unix_ms;
    bool has_prev = n->last_ms != 0 && !restarted && now_ms - n->last_ms <= HISTORY_FORGET_MS;
    struct history_last *nb = calloc(rep->n_backends ? rep->n_backends : 1, sizeof(*nb));
    size_t k = 0;
    for (; nb != NULL && k < rep->n_backends; k++) {
        const Lb__V1__BackendReport *br = rep->backends[k];
        if ((nb[k].id = strdup(br->id ? br->id : "")) == NULL)
            break;
        last_fill(&nb[k], br, has_prev ? last_find(n, nb[k].id) : NULL, now_ms - n->last_ms);
    }
    if (nb == NULL || k != rep->n_backends) {
        for (size_t i = 0; nb != NULL && i < k; i++)
            free(nb[i].id);
        free(nb);
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory for the history of %s", rep->node_id);
    }
    qsort(nb, k, sizeof(*nb), last_cmp);
    int64_t step = now_ms / HISTORY_STEP_MS;
    drop_stale_series(h, step);
    size_t slot = claim(h, step);
    for (size_t i = 0; has_prev && i < k; i++) {
        const struct history_last *prev = last_find(n, nb[i].id);
        if (prev != NULL)
            count(h, &nb[i], prev, step, slot);
    }
    for (size_t i = 0; i < n->n; i++)
        free(n->b[i].id);
    free(n->b);
    n->b = nb;
    n->n = k;
    n->last_ms = now_ms;
    n->started_unix_ms = rep->started_unix_ms;
    n->pid = rep->pid;
    snprintf(n->binary_version, sizeof(n->binary_version), "%s",
             rep->binary_version ? rep->binary_version : "");
    return LB_OK;
}

double history_quantile_ms(const uint64_t *hist, double q)
{
    uint64_t total = 0;
    for (size_t k = 0; k < HISTORY_NBUCKETS; k++)
        total += hist[k];
    if (total == 0)
        return -1;
    double rank = q * (double)total, seen = 0;
    size_t nb = lb_prom_latency_nbounds < HISTORY_NBUCKETS - 1 ? lb_prom_latency_nbounds
                                                               : HISTORY_NBUCKETS - 1;
    for (size_t k = 0; k < HISTORY_NBUCKETS; k++) {
        if (hist[k] == 0 || seen + (double)hist[k] < rank) {
            seen += (double)hist[k];
            continue;
        }
        if (k >= nb) /* +Inf: the highest bound is all that is known */
            return lb_prom_latency_bounds[nb - 1] * 1000.0;
        double lo = k == 0 ? 0 : lb_prom_latency_bounds[k - 1];
        double hi = lb_prom_latency_bounds[k];
        return (lo + (hi - lo) * (rank - seen) / (double)hist[k]) * 1000.0;
    }
    return lb_prom_latency_bounds[nb - 1] * 1000.0;
}

/* Three decimals are plenty for a chart and keep the 15-minute arrays small. */
static double r3(double v)
{
    return round(v * 1000.0) / 1000.0;
}

static json_t *num_or_null(double v)
{
    return v < 0 ? json_null() : json_real(r3(v));
}

/* {"rps", "err_rate", "p50_ms", "p99_ms"} of <req> requests, <errs> errors
 * and <hist> over <ms>. */
static json_t *rates_json(uint64_t req, uint64_t errs, const uint64_t *hist, int64_t ms)
{
    double secs = ms > 0 ? (double)ms / 1000.0 : 1.0;
    return json_pack("{s:f,s:f,s:o,s:o}", "rps", r3((double)req / secs), "err_rate",
                     r3(req ? (double)errs / (double)req : 0.0), "p50_ms",
                     num_or_null(history_quantile_ms(hist, 0.5)), "p99_ms",
                     num_or_null(history_quantile_ms(hist, 0.99)));
}

/* The four arrays of <s>, oldest step first, into <obj>; the rate of the
 * step under way is over its part until <now_ms>. */
static int series_arrays(const struct history *h, const struct series *s, int64_t now_ms,
                         json_t *obj)
{
    int64_t step = now_ms / HISTORY_STEP_MS;
    json_t *rps = json_array(), *err = json_array(), *p50 = json_array(), *p99 = json_array();
    int rc = json_object_set_new(obj, "rps", rps) | json_object_set_new(obj, "err_rate", err) |
             json_object_set_new(obj, "p50_ms", p50) | json_object_set_new(obj, "p99_ms", p99);
    for (int64_t st = step - HISTORY_SLOTS + 1; rc == 0 && st <= step; st++) {
        size_t i = (size_t)(st % HISTORY_SLOTS);
        if (st < 0 || h->slot_step[i] != st) {
            rc |= json_array_append_new(rps, json_null()) |
                  json_array_append_new(err, json_null()) |
                  json_array_append_new(p50, json_null()) | json_array_append_new(p99, json_null());
            continue;
        }
        const struct history_slot *sl = &s->slot[i];
        uint64_t hist[HISTORY_NBUCKETS];
        for (size_t k = 0; k < HISTORY_NBUCKETS; k++)
            hist[k] = sl->hist[k];
        int64_t ms = st == step ? now_ms - st * HISTORY_STEP_MS : HISTORY_STEP_MS;
        json_t *r = rates_json(sl->requests, sl->errors, hist, ms < 1000 ? 1000 : ms);
        rc |= r == NULL;
        if (r != NULL) {
            rc |= json_array_append(rps, json_object_get(r, "rps")) |
                  json_array_append(err, json_object_get(r, "err_rate")) |
                  json_array_append(p50, json_object_get(r, "p50_ms")) |
                  json_array_append(p99, json_object_get(r, "p99_ms"));
            json_decref(r);
        }
    }
    return rc;
}

/* Backend <s> over the last HISTORY_NOW_STEPS steps up to <now_ms>, with
 * the requests in flight summed over the data planes that reported within
 * HISTORY_FRESH_MS. */
static json_t *series_now(const struct history *h, const struct series *s, int64_t now_ms)
{
    uint64_t in_flight = 0;
    for (size_t i = 0; i < h->n_nodes; i++) {
        const struct history_last *l = last_find(&h->nodes[i], s->id);
        if (l != NULL && now_ms - h->nodes[i].last_ms <= HISTORY_FRESH_MS)
            in_flight += l->active;
    }
    int64_t step = now_ms / HISTORY_STEP_MS;
    uint64_t req = 0, errs = 0, hist[HISTORY_NBUCKETS] = {0};
    int64_t first = -1;
    for (int64_t st = step - HISTORY_NOW_STEPS + 1; st <= step; st++) {
        size_t i = (size_t)(st % HISTORY_SLOTS);
        if (st < 0 || h->slot_step[i] != st)
            continue;
        if (first < 0)
            first = st;
        req += s->slot[i].requests;
        errs += s->slot[i].errors;
        for (size_t k = 0; k < HISTORY_NBUCKETS; k++)
            hist[k] += s->slot[i].hist[k];
    }
    int64_t ms = first < 0 ? 0 : now_ms - first * HISTORY_STEP_MS;
    json_t *j = rates_json(req, errs, hist, ms);
    if (j != NULL &&
        json_object_set_new(j, "in_flight", json_integer((json_int_t)in_flight)) != 0) {
        json_decref(j);
        j = NULL;
    }
    return j;
}

static const char *breaker_name(Lb__V1__BreakerState b)
{
    return b == LB__V1__BREAKER_STATE__BREAKER_OPEN        ? "open"
           : b == LB__V1__BREAKER_STATE__BREAKER_HALF_OPEN ? "half_open"
                                                           : "closed";
}

static json_t *node_json(const struct node *n)
{
    json_t *arr = json_array();
    for (size_t i = 0; arr != NULL && i < n->n; i++) {
        const struct history_last *l = &n->b[i];
        json_t *b = rates_json(l->d_requests, l->d_errors, l->d_hist, l->d_ms);
        if (b == NULL || json_object_set_new(b, "id", json_string(l->id)) != 0 ||
            json_object_set_new(b, "breaker", json_string(breaker_name(l->breaker))) != 0 ||
            json_object_set_new(b, "effective_weight", json_integer(l->effective_weight)) != 0 ||
            json_object_set_new(b, "connections", json_integer(l->connections)) != 0 ||
            json_object_set_new(b, "queued", json_integer(l->queued)) != 0 ||
            json_object_set_new(b, "in_flight", json_integer(l->active)) != 0 ||
            json_object_set_new(b, "ejected", json_boolean(l->ejected)) != 0 ||
            json_array_append_new(arr, b) != 0) {
            json_decref(arr);
            return NULL;
        }
    }
    return json_pack("{s:s,s:I,s:I,s:I,s:s,s:o*}", "node_id", n->node_id, "last_ms",
                     (json_int_t)n->last_ms, "pid", (json_int_t)n->pid, "started_ms",
                     (json_int_t)n->started_unix_ms, "binary_version", n->binary_version,
                     "backends", arr);
}

json_t *history_json(const struct history *h, int64_t now_ms, bool series)
{
    int64_t step = now_ms / HISTORY_STEP_MS;
    json_t *bes = json_array(), *dps = json_array();
    int rc = bes == NULL || dps == NULL;
    for (size_t i = 0; rc == 0 && i < h->n_s; i++) {
        json_t *b =
            json_pack("{s:s,s:o*}", "id", h->s[i]->id, "now", series_now(h, h->s[i], now_ms));
        if (b == NULL || (series && series_arrays(h, h->s[i], now_ms, b) != 0)) {
            json_decref(b);
            rc = 1;
            break;
        }
        rc |= json_array_append_new(bes, b) != 0;
    }
    for (size_t i = 0; rc == 0 && i < h->n_nodes; i++) {
        json_t *d = node_json(&h->nodes[i]);
        rc |= d == NULL || json_array_append_new(dps, d) != 0;
    }
    if (rc != 0) {
        json_decref(bes);
        json_decref(dps);
        return NULL;
    }
    return json_pack("{s:i,s:i,s:I,s:I,s:o,s:o}", "step_ms", HISTORY_STEP_MS, "slots",
                     HISTORY_SLOTS, "now_ms", (json_int_t)now_ms, "start_ms",
                     (json_int_t)((step - HISTORY_SLOTS + 1) * HISTORY_STEP_MS), "backends", bes,
                     "dataplanes", dps);
}
