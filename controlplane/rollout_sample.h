/* controlplane/rollout_sample.h: what the rollout gates read of the data
 * planes' reports: each fresh data plane's counters for one backend as
 * samples (rollout.h) for rollout_window_delta(). The rolling update
 * (rollout_run.c) and the staged rollout (rollout_canary.c) both read them
 * so. Single-threaded: the cp's loop. */
#ifndef LB_ROLLOUT_SAMPLE_H
#define LB_ROLLOUT_SAMPLE_H

#include "rollout.h"

#include <stddef.h>
#include <stdint.h>

struct reports;

/* Backend <id>'s counters in every data plane that reported within
 * REPORTS_FRESH_MS of <now_ms> (reports_samples_each()): *<out> (caller
 * frees; NULL when none) holds *<n> samples. Without memory for more, the
 * samples read so far (a data plane left out counts from zero later: a
 * longer window). */
void rollout_samples_read(const struct reports *r, const char *id, int64_t now_ms,
                          struct rollout_sample **out, size_t *n);

/* One data plane's counters for one backend, kept as a window's start. */
struct rollout_base_entry {
    char id[ROLLOUT_ID_MAX]; /* the backend */
    struct rollout_sample s;
};

/* Appends backend <id>'s current samples (rollout_samples_read) to the
 * window start <*base> (<*n> used of <*cap>). Without memory for more, a
 * data plane left out counts from zero: a longer window. */
void rollout_base_take(struct rollout_base_entry **base, size_t *n, size_t *cap,
                       const struct reports *r, const char *id, int64_t now_ms);

#endif
