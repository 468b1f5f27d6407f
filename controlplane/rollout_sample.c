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
