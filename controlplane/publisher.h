/* controlplane/publisher.h: the control plane's side of the snapshot feed.
 *
 * One endpoint base (see proto/lb_endpoints.h) names three nanomsg sockets:
 *   PUB   every new snapshot at once, and the current one again every
 *         republish_s seconds (PUB/SUB drops messages for late joiners and
 *         slow subscribers, so a data plane that missed one converges).
 *         A message is the raw bytes of an encoded lb.v1.Snapshot.
 *   REP   an encoded SyncRequest is answered with an encoded SyncReply: the
 *         current snapshot, no snapshot when have_generation is the current
 *         generation, or error when there is no snapshot yet or the request
 *         does not decode.
 *   PULL  encoded Reports, each handed to the report callback.
 * Receive sizes are capped at PUBLISHER_MAX_MSG; peers that receive snapshots
 * must raise their own NN_RCVMAXSIZE (nanomsg's default is 1 MiB).
 *
 * With a keyring (proto/seal.h) every message is sealed: snapshots as
 * SEAL_KIND_SNAPSHOT, sync replies as SEAL_KIND_SYNC_REPLY; requests must be
 * sealed SEAL_KIND_SYNC_REQUEST (a refused one gets no reply) and reports
 * SEAL_KIND_REPORT, and a report must be newer than the last one accepted
 * from its node (boot_id, seq, started_unix_ms) and sent within
 * PUBLISHER_REPORT_WINDOW_MS of now. Every refused message is counted by
 * reason (publisher_feed_counts()) and logged, at most once per reason per
 * SEAL_LOG_EVERY_MS.
 *
 * Single-threaded: every function runs on the thread of the loop given to
 * publisher_new(). Nothing blocks the loop. */
#ifndef LB_PUBLISHER_H
#define LB_PUBLISHER_H

#include "lb.pb-c.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ev_loop;
struct lb_err;
struct publisher;
struct seal_counts;
struct seal_keyring;

#define PUBLISHER_MAX_MSG          (64 * 1024 * 1024) /* NN_RCVMAXSIZE of REP and PULL */
#define PUBLISHER_SOCK_BUF         (8 * 1024 * 1024)  /* NN_SNDBUF / NN_RCVBUF */
#define PUBLISHER_REPUBLISH_S_DEF  5.0
#define PUBLISHER_REPORT_WINDOW_MS (5 * 60 * 1000) /* sealed reports older or newer: refused */

/* Called with each decoded report; <report> is valid during the call only.
 * It must not call publisher_free(). */
typedef void (*publisher_report_fn)(void *ctx, const Lb__V1__Report *report);

struct publisher_config {
    const char *base;                /* endpoint base: ipc:///dir or tcp://HOST:PORT (borrowed) */
    double republish_s;              /* seconds between re-publications; 0 = 5 */
    const struct seal_keyring *keys; /* seals the feed (borrowed: must outlive the publisher
                                      * or be replaced first); NULL = unsealed */
    bool insecure;                   /* unsealed over tcp:// by choice; only shown in metrics */
    const char *nodes; /* "a,b,c": the node ids whose sync requests and reports are taken
                        * (others: refused as unknown_node); NULL = any */
};

/* Binds the three sockets of <cfg>->base and watches them on <loop> through
 * NN_RCVFD/NN_SNDFD. For ipc:// the directory must exist; nothing but the
 * socket files is created. A stale socket file (nobody accepts on it) is
 * replaced; a socket some process still listens on, or a file that is not a
 * socket, is an error. <on_report> may be NULL (reports are then decoded,
 * counted and dropped); <ctx> is passed to it.
 * Returns the publisher (caller owns it; publisher_free()), or NULL with <err>
 * filled: LB_EINVAL for a bad config, endpoint base or node list (an empty
 * name), LB_ESYS naming the
 * endpoint that failed to bind, LB_ENOMEM. */
struct publisher *publisher_new(struct ev_loop *loop, const struct publisher_config *cfg,
                                publisher_report_fn on_report, void *ctx, struct lb_err *err);

/* Makes <buf>[0..len) (an encoded Snapshot whose generation is <generation>)
 * current, copying it, and publishes it now; the republish timer restarts.
 * Returns LB_OK, LB_EINVAL (NULL or empty buffer, generation 0, len above
 * PUBLISHER_MAX_MSG less a few header bytes and SEAL_OVERHEAD), LB_ENOMEM or
 * LB_ESYS (sealing failed); on error the
 * previous snapshot stays current. A failed send is logged, not an error:
 * the republish timer sends it again. */
int publisher_set_snapshot(struct publisher *p, const uint8_t *buf, size_t len, uint64_t generation,
                           struct lb_err *err);

/* Staged rollout: makes <buf>[0..len) (generation <generation>) the held
 * snapshot, what every data plane except <canaries> keeps serving while the
 * current one is meant for the canaries. PUB sends both (the snapshots name
 * their targets: only_nodes / except_nodes); a sync request from a node not
 * in <canaries> gets the held one. Sealed like the current one. LB_EINVAL
 * (no canary, or as publisher_set_snapshot()), LB_ENOMEM, LB_ESYS; on error
 * nothing changed. */
int publisher_set_held(struct publisher *p, const uint8_t *buf, size_t len, uint64_t generation,
                       const char *const *canaries, size_t n_canaries, struct lb_err *err);

/* Drops the held snapshot: every data plane gets the current one. */
void publisher_clear_held(struct publisher *p);

/* Generation of the held snapshot, 0 when none. */
uint64_t publisher_held_generation(const struct publisher *p);

/* The held snapshot's encoding (borrowed until the next set or clear) and
 * its length in *<len>; NULL when none. */
const uint8_t *publisher_held(const struct publisher *p, size_t *len);

/* Makes <keys> (borrowed as in publisher_config; NULL: unsealed from now on)
 * the keyring and re-seals the current snapshot with its first key, so that
 * the next publication and sync reply use it. The previous keyring may be
 * freed once this returns LB_OK. Returns LB_OK, or LB_ENOMEM / LB_ESYS with
 * the previous keyring still in use. */
int publisher_set_keys(struct publisher *p, const struct seal_keyring *keys, struct lb_err *err);

/* Refused feed messages by reason, and whether the feed is sealed or
 * explicitly insecure, for the control plane's /metrics. */
const struct seal_counts *publisher_feed_counts(const struct publisher *p);
bool publisher_is_sealed(const struct publisher *p);
bool publisher_is_insecure(const struct publisher *p);

/* Generation of the current snapshot, 0 before the first one. */
uint64_t publisher_generation(const struct publisher *p);

/* Counters for the control plane's /metrics, monotonic since publisher_new(). */
uint64_t publisher_publishes(const struct publisher *p);     /* PUB sends, republishes included */
uint64_t publisher_sync_requests(const struct publisher *p); /* well-formed SyncRequests */
uint64_t publisher_reports(const struct publisher *p);       /* well-formed Reports */
uint64_t publisher_malformed(const struct publisher *p);     /* undecodable requests and reports */

/* Stops the watchers, closes the sockets and removes the ipc socket files it
 * created (only when they are still the ones it bound). NULL is a no-op. */
void publisher_free(struct publisher *p);

#endif
