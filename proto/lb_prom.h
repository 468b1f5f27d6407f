/* proto/lb_prom.h: Prometheus text exposition format 0.0.4 into a growable buffer.
 *
 * A writer belongs to one thread at a time (typically the scrape handler); it
 * keeps no global state. Metric and label names are written as given: callers
 * pass names matching [a-zA-Z_:][a-zA-Z0-9_:]* (labels: no colon). Once an
 * allocation fails, <oom> is set and every later call is a no-op. */
#ifndef LB_PROM_H
#define LB_PROM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct lb_prom {
    char *buf;  /* NUL-terminated text so far; NULL only when oom */
    size_t len; /* bytes of text, NUL not counted */
    size_t cap; /* bytes allocated at buf */
    bool oom;   /* an append failed; the text is incomplete */
};

struct lb_prom_label {
    const char *key;
    const char *value; /* escaped by the writer: \\ \" \n */
};

/* Starts an empty text in <p> (caller's memory), allocating 4 KiB; sets <oom>
 * when that fails. Release with lb_prom_deinit(). */
void lb_prom_init(struct lb_prom *p);

/* Frees the text and leaves <p> empty (buf NULL, len and cap 0). The caller may
 * take buf (set it to NULL) before, and then owns it. */
void lb_prom_deinit(struct lb_prom *p);

/* "# HELP <name> <help>\n# TYPE <name> <type>\n"; type: "counter", "gauge",
 * "histogram". Help text escaped (\\ and \n). */
void lb_prom_family(struct lb_prom *p, const char *name, const char *type, const char *help);

/* "<name>{k="v",...} <value>\n" (no braces when n == 0). <l> may be NULL when n == 0. */
void lb_prom_u64(struct lb_prom *p, const char *name, const struct lb_prom_label *l, size_t n,
                 uint64_t v);

/* As lb_prom_u64() with the shortest form that reads back as <v> ("1", "0.5",
 * "1e-06", "1e+21"; plain notation for 1e-4 <= |v| < 1e16, so "10" and
 * "123456789012"), or NaN, +Inf, -Inf. Bucket bounds (le) use the same form. */
void lb_prom_f64(struct lb_prom *p, const char *name, const struct lb_prom_label *l, size_t n,
                 double v);

/* Writes <name>_bucket{...,le="<bound>"} cumulative counts for each of <nb>
 * ascending <bounds> plus le="+Inf", then <name>_sum and <name>_count.
 * <counts> has nb + 1 non-cumulative entries (the last is above the last bound). */
void lb_prom_histogram(struct lb_prom *p, const char *name, const struct lb_prom_label *l, size_t n,
                       const double *bounds, size_t nb, const uint64_t *counts, double sum);

/* Index of the bucket of <v> among <nb> ascending <bounds>: the first i with
 * v <= bounds[i], or nb (also for NaN). Binary search; never allocates. */
size_t lb_prom_bucket(const double *bounds, size_t nb, double v);

/* The default latency buckets in seconds (0.0005 .. 10) and their count. */
extern const double lb_prom_latency_bounds[];
extern const size_t lb_prom_latency_nbounds;

#endif
