/* dataplane/eject.h: passive ejection of a backend whose connects fail.
 *
 * One record per backend id, shared by every worker (it lives in the
 * backend's bshared entry), so that the first refused, reset or timed-out
 * connect takes the backend out of rotation for the whole data plane at once.
 * Only the thread whose call ejects it (or returns it) is told so: that one
 * logs and counts, never once per worker.
 *
 * A backend comes back in one of two ways:
 * - handed over: a snapshot says the backend is down (the control plane saw
 *   the ejection in a report and its health checks took the backend over);
 *   from then on health decides, and `rise` passing checks bring it back;
 * - probed: the data plane's own TCP connect succeeds. Probes are due after
 *   <probe_base_ms>, doubling up to <probe_max_ms> while they fail. With a
 *   control plane the first probe waits <probe_max_ms>, since the hand-over
 *   should come first; the probe only covers an unreachable control plane.
 * A backend ejected again soon after returning (within <probe_max_ms>)
 * starts from twice its last back-off, so a flapping backend is probed less
 * and less often.
 *
 * Every function may be called from any thread at the same time; all state
 * is atomic, nothing allocates, logs or locks. */
#ifndef LB_EJECT_H
#define LB_EJECT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define EJECT_DEFAULT_PROBE_BASE_MS 1000
#define EJECT_DEFAULT_PROBE_MAX_MS  30000

/* The policy, from the snapshot (zero fields take the defaults above). */
struct eject_config {
    bool enabled;
    bool controlled; /* fed by a control plane: wait for the hand-over first */
    uint32_t probe_base_ms;
    uint32_t probe_max_ms;
};

/* Zero-initialised memory is a backend in rotation with no history. */
struct eject {
    _Atomic bool out;             /* out of rotation */
    _Atomic bool probing;         /* a probe is running */
    _Atomic uint32_t backoff_ms;  /* the current probe back-off */
    _Atomic uint64_t probe_at_ms; /* while out: when the next probe is due */
    _Atomic uint64_t back_at_ms;  /* when it last came back */
    _Atomic uint64_t ejections;   /* times ejected */
    _Atomic uint64_t probed_back; /* times returned by a probe */
    _Atomic uint64_t handed_over; /* times ended by a snapshot saying down */
    _Atomic uint64_t hold_gen;    /* views older than this generation still see it out */
};

/* True while the backend is out of rotation. Hot path: one relaxed load. */
bool eject_is_out(const struct eject *e);

/* True when a worker whose view is of snapshot generation <view_gen> must
 * not send it requests: out of rotation, or handed over by a snapshot newer
 * than the view (that worker has not adopted the down state yet, and would
 * otherwise send it a request and eject it again). Hot path. */
bool eject_blocks(const struct eject *e, uint64_t view_gen);

/* A connect to the backend failed at <now_ms> (refused, reset, timed out:
 * not a local shortage). Returns true when this call ejected it (the caller
 * logs and counts it), false when disabled or already out. */
bool eject_on_connect_failure(struct eject *e, const struct eject_config *c, uint64_t now_ms);

/* True when a probe is due at <now_ms> and the caller won the right to run
 * it; eject_probe_done() MUST follow. */
bool eject_probe_claim(struct eject *e, uint64_t now_ms);

/* The probe claimed with eject_probe_claim() ended: <ok> returns the backend
 * to rotation (true is returned: the caller logs it), else the next probe is
 * due after twice the back-off (capped). */
bool eject_probe_done(struct eject *e, const struct eject_config *c, bool ok, uint64_t now_ms);

/* Snapshot generation <gen> says the backend is down: health checks take it
 * over. Returns true when this call ended an ejection. */
bool eject_hand_over(struct eject *e, uint64_t gen, uint64_t now_ms);

/* The back-off before the next probe, in ms (for logs and tests). */
uint32_t eject_backoff_ms(const struct eject *e);

/* Times ejected so far. */
uint64_t eject_count(const struct eject *e);

#endif
