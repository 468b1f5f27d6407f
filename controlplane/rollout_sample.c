/* controlplane/rollout_sample.c: the rollout gates' samples of the data
 * planes' reports (see rollout_sample.h). */
#include "rollout_sample.h"

#include "reports.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct samples {
    struct rollout_sample *s;
    size_t n, cap;
};

static void on_sample(void *ctx, const struct reports_sample *rs)
{
    struct samples *ss = ctx;
    if (ss->n == ss->cap) {
        size_t cap = ss->cap ? ss->cap * 2 : 8;
        struct rollout_sample *p = realloc(ss->s, cap * sizeof(*p));
        if (p == NULL)
            return;
        ss->s = p;
        ss->cap = cap;
    }
    struct rollout_sample *o = &ss->s[ss->n++];
    memset(o, 0, sizeof(*o));
    snprintf(o->node_id, sizeof(o->node_id), "%s", rs->node_id);
    o->started_unix_ms = rs->started_unix_ms;
    o->boot_id = rs->boot_id;
    o->requests = rs->requests;
    o->errors = rs->errors;
    o->received_ms = rs->received_ms;
}

void rollout_samples_read(const struct reports *r, const char *id, int64_t now_ms,
                          struct rollout_sample **out, size_t *n)
{
    struct samples ss = {0};
    reports_samples_each(r, id, now_ms, on_sample, &ss);
    *out = ss.s;
    *n = ss.n;
}

void rollout_base_take(struct rollout_base_entry **base, size_t *n, size_t *cap,
                       const struct reports *r, const char *id, int64_t now_ms)
{
    struct rollout_sample *s = NULL;
    size_t ns = 0;
    rollout_samples_read(r, id, now_ms, &s, &ns);
    for (size_t k = 0; k < ns; k++) {
        if (*n == *cap) {
            size_t grown = *cap ? *cap * 2 : 16;
            struct rollout_base_entry *p = realloc(*base, grown * sizeof(*p));
            if (p == NULL)
                break;
            *base = p;
            *cap = grown;
        }
        struct rollout_base_entry *b = &(*base)[(*n)++];
        snprintf(b->id, sizeof(b->id), "%s", id);
        b->s = s[k];
    }
    free(s);
}
