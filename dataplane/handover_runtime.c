/* dataplane/handover_runtime.c: the runtime state a hand-over carries (circuit
 * breakers, global rate-limit buckets), as an lb.v1.HandoverRuntime message,
 * so a successor neither sends requests to a backend whose breaker was open
 * nor lets through a burst the old process had spent. */
#include "handover.h"

#include <stdlib.h>
#include <string.h>

#include "breaker.h"
#include "bshared.h"
#include "fshared.h"
#include "lb.pb-c.h"
#include "lb_err.h"
#include "limiter.h"
#include "snapshot.h"

static void runtime_free(Lb__V1__HandoverRuntime *rt)
{
    for (size_t i = 0; i < rt->n_breakers; i++)
        free(rt->breakers[i]);
    for (size_t i = 0; i < rt->n_limits; i++)
        free(rt->limits[i]);
    free(rt->breakers);
    free(rt->limits);
}

/* The breakers of <snap>'s backends that are open or counting failures. */
static int export_breakers(struct bshared_registry *backends, const struct snap *snap,
                           uint64_t now_ms, Lb__V1__HandoverRuntime *rt)
{
    rt->breakers = calloc(snap->n_backends ? snap->n_backends : 1, sizeof(*rt->breakers));
    if (rt->breakers == NULL)
        return LB_ENOMEM;
    for (uint32_t i = 0; i < snap->n_backends; i++) {
        struct bshared *b = bshared_registry_find(backends, snap->backends[i].id);
        if (b == NULL)
            continue;
        struct breaker_carry c;
        breaker_export(b->breaker, now_ms, &c);
        bshared_registry_release(backends, b);
        if (c.state == BREAKER_STATE_CLOSED && c.failures == 0)
            continue;
        Lb__V1__HandoverBreaker *hb = malloc(sizeof(*hb));
        if (hb == NULL)
            return LB_ENOMEM;
        lb__v1__handover_breaker__init(hb);
        hb->backend_id = (char *)snap->backends[i].id;
        hb->state = c.state == BREAKER_STATE_OPEN ? LB__V1__BREAKER_STATE__BREAKER_OPEN
                                                  : LB__V1__BREAKER_STATE__BREAKER_CLOSED;
        hb->failures = c.failures;
        hb->open_ms = c.open_ms;
        hb->open_left_ms = c.open_left_ms;
        rt->breakers[rt->n_breakers++] = hb;
    }
    return LB_OK;
}

/* The global limiter states of <snap>'s frontends. */
static int export_limits(const struct snap *snap, uint64_t now_ms, Lb__V1__HandoverRuntime *rt)
{
    rt->limits = calloc(snap->n_frontends ? snap->n_frontends : 1, sizeof(*rt->limits));
    if (rt->limits == NULL)
        return LB_ENOMEM;
    for (uint32_t i = 0; snap->fshared != NULL && i < snap->n_frontends; i++) {
        struct limiter_global_carry c;
        if (!limiter_global_export(fshared_limiter(snap->fshared, i), now_ms, &c))
            continue;
        Lb__V1__HandoverLimit *hl = malloc(sizeof(*hl));
        if (hl == NULL)
            return LB_ENOMEM;
        lb__v1__handover_limit__init(hl);
        hl->frontend = (char *)snap->frontends[i].name;
        hl->algorithm = (Lb__V1__RateLimitAlgorithm)c.algorithm;
        hl->rate = c.rate;
        hl->burst = c.burst;
        hl->age_ms = c.age_ms;
        hl->tokens_milli = c.tokens_milli;
        hl->prev = c.prev;
        hl->cur = c.cur;
        rt->limits[rt->n_limits++] = hl;
    }
    return LB_OK;
}

int handover_runtime_export(struct bshared_registry *backends, const struct snap *snap,
                            uint64_t now_ms, uint8_t **out, size_t *out_len, size_t *n_breakers,
                            size_t *n_limits, struct lb_err *err)
{
    *out = NULL;
    *out_len = *n_breakers = *n_limits = 0;
    if (snap == NULL)
        return LB_OK;
    Lb__V1__HandoverRuntime rt = LB__V1__HANDOVER_RUNTIME__INIT;
    int rc = export_breakers(backends, snap, now_ms, &rt);
    if (rc == LB_OK)
        rc = export_limits(snap, now_ms, &rt);
    if (rc == LB_OK && rt.n_breakers + rt.n_limits > 0) {
        size_t len = lb__v1__handover_runtime__get_packed_size(&rt);
        *out = malloc(len ? len : 1);
        if (*out == NULL)
            rc = LB_ENOMEM;
        else
            *out_len = lb__v1__handover_runtime__pack(&rt, *out);
    }
    *n_breakers = rt.n_breakers;
    *n_limits = rt.n_limits;
    runtime_free(&rt);
    if (rc != LB_OK)
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory for the hand-over's runtime state");
    return LB_OK;
}

int handover_runtime_decode(const uint8_t *data, size_t len, Lb__V1__HandoverRuntime **rt,
                            struct lb_err *err)
{
    *rt = lb__v1__handover_runtime__unpack(NULL, len, data);
    if (*rt == NULL)
        return lb_err_set(err, LB_EPROTO, 0,
                          "hand-over: the runtime state (%zu bytes) does not decode", len);
    return LB_OK;
}

int handover_runtime_breakers(struct bshared_registry *backends, const Lb__V1__HandoverRuntime *rt,
                              uint64_t now_ms, void ***refs, struct lb_err *err)
{
    *refs = calloc(rt->n_breakers ? rt->n_breakers : 1, sizeof(**refs));
    if (*refs == NULL)
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory for the hand-over's runtime state");
    for (size_t i = 0; i < rt->n_breakers; i++) {
        const Lb__V1__HandoverBreaker *hb = rt->breakers[i];
        if (hb->backend_id == NULL || hb->backend_id[0] == '\0')
            continue;
        struct bshared *b = bshared_registry_get(backends, hb->backend_id, err);
        if (b == NULL) {
            handover_runtime_release(backends, *refs, i);
            *refs = NULL;
            return err ? err->code : LB_ENOMEM;
        }
        struct breaker_carry c = {
            .state = hb->state == LB__V1__BREAKER_STATE__BREAKER_OPEN ? BREAKER_STATE_OPEN
                                                                      : BREAKER_STATE_CLOSED,
            .failures = hb->failures,
            .open_ms = hb->open_ms,
            .open_left_ms = hb->open_left_ms,
        };
        breaker_import(b->breaker, &c, now_ms);
        (*refs)[i] = b;
    }
    return LB_OK;
}

void handover_runtime_release(struct bshared_registry *backends, void **refs, size_t n)
{
    for (size_t i = 0; refs != NULL && i < n; i++)
        bshared_registry_release(backends, refs[i]);
    free(refs);
}

size_t handover_runtime_limits(const struct snap *snap, const Lb__V1__HandoverRuntime *rt,
                               uint64_t now_ms)
{
    size_t set = 0;
    for (size_t i = 0; snap->fshared != NULL && i < rt->n_limits; i++) {
        const Lb__V1__HandoverLimit *hl = rt->limits[i];
        for (uint32_t f = 0; hl->frontend != NULL && f < snap->n_frontends; f++) {
            if (strcmp(snap->frontends[f].name, hl->frontend) != 0)
                continue;
            struct limiter_global_carry c = {
                .algorithm = (uint8_t)hl->algorithm,
                .rate = hl->rate,
                .burst = hl->burst,
                .age_ms = hl->age_ms,
                .tokens_milli = hl->tokens_milli,
                .prev = hl->prev,
                .cur = hl->cur,
            };
            set += limiter_global_import(fshared_limiter(snap->fshared, f), &c, now_ms);
        }
    }
    return set;
}
