/* dataplane/sync.h: the data plane's side of the control plane's feed.
 *
 * SUB receives each new snapshot, REQ asks for the current one at start-up
 * (and again when the feed looks stale), PUSH sends a Report every second.
 * A snapshot is validated before use; a refused one is logged and reported
 * with its reason while the current one keeps serving. The last good
 * snapshot is kept in the state directory so that a restart serves at once,
 * before the control plane is reachable. Main thread only.
 *
 * With a keyring (proto/seal.h) every message is sealed both ways: what
 * does not open as the expected kind is refused, counted by reason and
 * logged (at most once per reason per SEAL_LOG_EVERY_MS), and changes
 * nothing; it does not even count as a sign of life of the feed. A
 * snapshot older than the one serving (a replay) is refused and counted
 * the same way, sealed or not. Reports carry a random boot_id and a growing
 * seq so that the control plane can refuse replayed ones. */
#ifndef LB_SYNC_H
#define LB_SYNC_H

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

struct dp;
struct lb_err;
struct lb_prom;
struct seal_keyring;
struct snap;
struct sync;

/* Called on the main thread with each valid, newer snapshot (a reference the
 * callee takes over, whatever it returns). Returns LB_OK when the snapshot
 * now serves, or an error with <err> saying why it was refused. */
typedef int (*sync_apply_fn)(void *ctx, struct snap *s, struct lb_err *err);

struct sync_config {
    const char *base;                /* control endpoint base: ipc:///dir or tcp://host:port */
    const char *node_id;             /* this data plane's name in reports */
    const char *state_dir;           /* where the last good snapshot is kept; NULL: nowhere */
    const struct seal_keyring *keys; /* seals the feed (borrowed: must outlive the sync or
                                      * be replaced first); NULL = unsealed */
    bool insecure;                   /* unsealed tcp:// by choice; only shown in metrics */
};

/* Connects the three sockets (nanomsg connects lazily: the control plane may
 * be down) and sends the start-up sync request. */
struct sync *sync_new(struct ev_loop *loop, const struct sync_config *cfg, struct dp *dp,
                      sync_apply_fn apply, void *ctx, struct lb_err *err);
void sync_free(struct sync *s);

/* Records what the data plane now serves (reports carry it). */
void sync_set_applied(struct sync *s, uint64_t version, uint64_t generation);

/* Makes <keys> (borrowed as in sync_config; NULL: unsealed) the keyring for
 * every later message; the previous one may be freed once this returns. */
void sync_set_keys(struct sync *s, const struct seal_keyring *keys);

/* Writes the feed's metrics (lb_feed_rejected_total, lb_feed_sealed,
 * lb_feed_insecure) into <p>. */
void sync_prom(const struct sync *s, struct lb_prom *p);

/* Asks for the current snapshot again (SIGHUP). */
void sync_request(struct sync *s);

/* Loads <state_dir>/snapshot.bin if present and valid. Returns LB_OK with
 * *out set, LB_ENOTFOUND when there is none, or another code with <err>. */
int sync_load_cached(const char *state_dir, struct snap **out, struct lb_err *err);

/* Writes <len> bytes as <state_dir>/snapshot.bin atomically (temp + rename). */
int sync_save_cached(const char *state_dir, const uint8_t *buf, size_t len, struct lb_err *err);

#endif
