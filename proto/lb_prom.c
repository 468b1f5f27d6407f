/* proto/lb_prom.c */
#include "lb_prom.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROM_INITIAL_CAP 4096

const double lb_prom_latency_bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                         0.1,    0.25,  0.5,    1,     2.5,  5,     10};
const size_t lb_prom_latency_nbounds =
    sizeof(lb_prom_latency_bounds) / sizeof(lb_prom_latency_bounds[0]);

void lb_prom_init(struct lb_prom *p)
{
    p->len = 0;
    p->oom = false;
    p->buf = malloc(PROM_INITIAL_CAP);
    if (p->buf == NULL) {
        p->cap = 0;
        p->oom = true;
        return;
    }
    p->cap = PROM_INITIAL_CAP;
    p->buf[0] = '\0';
}

void lb_prom_deinit(struct lb_prom *p)
{
    free(p->buf);
    p->buf = NULL;
    p->len = 0;
    p->cap = 0;
}

/* Makes room for <n> more bytes and the NUL. False (and oom) when it cannot. */
static bool prom_reserve(struct lb_prom *p, size_t n)
{
    if (p->oom)
        return false;
    if (n < p->cap - p->len)
        return true;
    size_t cap = p->cap > 0 ? p->cap : PROM_INITIAL_CAP;
    while (n >= cap - p->len) {
        if (cap > SIZE_MAX / 2) {
            p->oom = true;
            return false;
        }
        cap *= 2;
    }
    char *nb = realloc(p->buf, cap);
    if (nb == NULL) {
        p->oom = true;
        return false;
    }
    p->buf = nb;
    p->cap = cap;
    return true;
}

static void prom_put(struct lb_prom *p, const char *s, size_t n)
{
    if (!prom_reserve(p, n))
        return;
    memcpy(p->buf + p->len, s, n);
    p->len += n;
    p->buf[p->len] = '\0';
}

static void prom_puts(struct lb_prom *p, const char *s)
{
    prom_put(p, s, strlen(s));
}

/* Writes <s> with \\ and \n escaped, and " too when <quote>. */
static void prom_escaped(struct lb_prom *p, const char *s, bool quote)
{
    while (*s != '\0') {
        size_t run = strcspn(s, quote ? "\\\n\"" : "\\\n");
        prom_put(p, s, run);
        s += run;
        if (*s == '\0')
            break;
        if (*s == '\n')
            prom_put(p, "\\n", 2);
        else if (*s == '\\')
            prom_put(p, "\\\\", 2);
        else
            prom_put(p, "\\\"", 2);
        s++;
    }
}

/* Shortest text that reads back as <v>: "%.*g" with the fewest digits, but in
 * plain notation for 1e-4 <= |v| < 1e16 ("10", not "1e+01"); NaN, +Inf, -Inf.
 * Returns the length. */
static size_t format_f64(char *out, size_t cap, double v)
{
    if (isnan(v))
        return (size_t)snprintf(out, cap, "NaN");
    if (isinf(v))
        return (size_t)snprintf(out, cap, "%cInf", v > 0 ? '+' : '-');
    int prec = 1;
    for (; prec < 17; prec++) {
        snprintf(out, cap, "%.*g", prec, v);
        if (strtod(out, NULL) == v)
            break;
    }
    /* %g goes to exponent notation when the decimal exponent is >= prec. */
    char e[40];
    snprintf(e, sizeof(e), "%.*e", prec - 1, v);
    const char *x = strchr(e, 'e');
    long exp10 = x != NULL ? strtol(x + 1, NULL, 10) : 0;
    if (exp10 >= prec && exp10 < 16)
        prec = (int)exp10 + 1;
    return (size_t)snprintf(out, cap, "%.*g", prec, v);
}

/* Writes "<name><suffix>{labels[,le="<le>"]} " — the value follows. */
static void prom_series(struct lb_prom *p, const char *name, const char *suffix,
                        const struct lb_prom_label *l, size_t n, const char *le)
{
    prom_puts(p, name);
    prom_puts(p, suffix);
    if (n > 0 || le != NULL) {
        prom_put(p, "{", 1);
        for (size_t i = 0; i < n; i++) {
            if (i > 0)
                prom_put(p, ",", 1);
            prom_puts(p, l[i].key);
            prom_put(p, "=\"", 2);
            prom_escaped(p, l[i].value != NULL ? l[i].value : "", true);
            prom_put(p, "\"", 1);
        }
        if (le != NULL) {
            if (n > 0)
                prom_put(p, ",", 1);
            prom_put(p, "le=\"", 4);
            prom_puts(p, le);
            prom_put(p, "\"", 1);
        }
        prom_put(p, "}", 1);
    }
    prom_put(p, " ", 1);
}

static void prom_value_u64(struct lb_prom *p, uint64_t v)
{
    char tmp[24];
    int len = snprintf(tmp, sizeof(tmp), "%" PRIu64 "\n", v);
    prom_put(p, tmp, (size_t)len);
}

static void prom_value_f64(struct lb_prom *p, double v)
{
    char tmp[40];
    size_t len = format_f64(tmp, sizeof(tmp) - 1, v);
    tmp[len++] = '\n';
    prom_put(p, tmp, len);
}

void lb_prom_family(struct lb_prom *p, const char *name, const char *type, const char *help)
{
    prom_put(p, "# HELP ", 7);
    prom_puts(p, name);
    prom_put(p, " ", 1);
    prom_escaped(p, help != NULL ? help : "", false);
    prom_put(p, "\n# TYPE ", 8);
    prom_puts(p, name);
    prom_put(p, " ", 1);
    prom_puts(p, type);
    prom_put(p, "\n", 1);
}

void lb_prom_u64(struct lb_prom *p, const char *name, const struct lb_prom_label *l, size_t n,
                 uint64_t v)
{
    prom_series(p, name, "", l, n, NULL);
    prom_value_u64(p, v);
}

void lb_prom_f64(struct lb_prom *p, const char *name, const struct lb_prom_label *l, size_t n,
                 double v)
{
    prom_series(p, name, "", l, n, NULL);
    prom_value_f64(p, v);
}

void lb_prom_histogram(struct lb_prom *p, const char *name, const struct lb_prom_label *l, size_t n,
                       const double *bounds, size_t nb, const uint64_t *counts, double sum)
{
    uint64_t total = 0;
    char le[40];
    for (size_t i = 0; i <= nb; i++) {
        total += counts[i];
        if (i < nb)
            format_f64(le, sizeof(le), bounds[i]);
        else
            memcpy(le, "+Inf", 5);
        prom_series(p, name, "_bucket", l, n, le);
        prom_value_u64(p, total);
    }
    prom_series(p, name, "_sum", l, n, NULL);
    prom_value_f64(p, sum);
    prom_series(p, name, "_count", l, n, NULL);
    prom_value_u64(p, total);
}

size_t lb_prom_bucket(const double *bounds, size_t nb, double v)
{
    if (isnan(v))
        return nb;
    size_t lo = 0, hi = nb; /* the answer is in [lo, hi] */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (v <= bounds[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}
