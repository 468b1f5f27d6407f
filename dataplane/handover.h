/* dataplane/handover.h: passing a running data plane's listening sockets,
 * session-ticket keys and snapshot to its successor over a unix socket.
 *
 * The old process listens on a SOCK_SEQPACKET unix socket (mode 0600). The
 * new one connects and receives, one message each: every listening socket
 * with its key ("address:port", or "metrics" for the metrics listener) and
 * the descriptor itself (SCM_RIGHTS), the ticket keys, the snapshot in
 * chunks, the runtime state (breakers, global rate limits) in chunks, then an
 * end message carrying the counts (a sender older than the runtime state
 * sends two counts, and no runtime). Once it accepts on those
 * sockets it answers "ready" (or "failed" with a reason); only then does
 * the old one stop accepting. Both processes hold the same socket objects in
 * between, so nothing queued in an accept queue is lost whichever side
 * accepts it. No call here logs: the ticket keys pass through. */
#ifndef LB_HANDOVER_H
#define LB_HANDOVER_H

#include <stddef.h>
#include <stdint.h>

struct lb_err;

#define HANDOVER_KEY_LEN     80
#define HANDOVER_MAX_FDS     4096
#define HANDOVER_MAX_BYTES   (64u * 1024u * 1024u) /* snapshot or tickets */
#define HANDOVER_METRICS_KEY "metrics"

struct handover_fd {
    int fd;                     /* a listening socket; -1 once someone took it */
    char key[HANDOVER_KEY_LEN]; /* the frontend's "address:port", or HANDOVER_METRICS_KEY */
};

/* What passes from the old process to the new one. */
struct handover_state {
    struct handover_fd *fds;
    size_t n_fds;
    uint8_t *snapshot; /* a binary lb.v1.Snapshot */
    size_t snapshot_len;
    uint8_t *tickets; /* tls_tickets_export() output; secret */
    size_t tickets_len;
    uint8_t *runtime; /* a binary lb.v1.HandoverRuntime (breakers, global limits); optional */
    size_t runtime_len;
};

/* Closes every descriptor still held, wipes the ticket bytes, frees the
 * arrays and zeroes <st>. */
void handover_state_deinit(struct handover_state *st);

/* Appends a duplicate of <fd> under <key> (truncated to fit) to <st>.
 * Returns LB_OK, LB_ESYS (dup failed) or LB_ENOMEM. */
int handover_state_add_fd(struct handover_state *st, int fd, const char *key, struct lb_err *err);

/* Listens on the unix socket <path> (mode 0600). A file already at <path>
 * is replaced atomically (bound under a temporary name, then renamed), so a
 * stale socket left by a crash does not stop a start and a running peer's
 * socket is never missing. Stores the non-blocking listening descriptor in
 * *fd. Returns LB_OK, LB_EINVAL (path too long) or LB_ESYS. */
int handover_listen(const char *path, int *fd, struct lb_err *err);

/* Connects to <path>; *fd gets a blocking descriptor whose sends and
 * receives time out after <timeout_ms>. Returns LB_OK or LB_ESYS. */
int handover_connect(const char *path, unsigned timeout_ms, int *fd, struct lb_err *err);

/* Sends <st> (borrowed; its descriptors stay open) on the connected socket
 * <sock>, blocking up to <timeout_ms> per message. Returns LB_OK, or LB_ESYS
 * when the peer went away or did not read in time. */
int handover_send(int sock, const struct handover_state *st, unsigned timeout_ms,
                  struct lb_err *err);

/* Receives what handover_send() sent into <st> (zeroed first; the caller
 * deinits it whatever the result). Returns LB_OK, LB_ESYS (the peer closed,
 * or nothing came within the socket's timeout) or LB_EPROTO (a message out
 * of order, a count that does not match, more than HANDOVER_MAX_*). */
int handover_recv(int sock, struct handover_state *st, struct lb_err *err);

/* The new process's answer: ready (<reason> NULL) or failed with <reason>.
 * Returns LB_OK or LB_ESYS. */
int handover_answer(int sock, const char *reason, struct lb_err *err);

/* Reads the new process's answer from <sock> (readable: does not block on a
 * non-blocking socket). Returns LB_OK when it is ready; LB_EPROTO with
 * <err> saying "failed: <reason>" when it gave up; LB_ESYS when it closed or
 * died without answering; LB_ENOTFOUND when nothing is there yet. */
int handover_read_answer(int sock, struct lb_err *err);

/* ---- runtime state (handover_runtime.c) ---------------------------------------- */

struct bshared_registry;
struct snap;
struct Lb__V1__HandoverRuntime;

/* What the successor gets of the old process's runtime state at <now_ms>
 * (wall-clock ms, as the workers read it): the breaker of every backend of
 * <snap> that is not plainly closed (found in <backends>), and the global
 * rate-limit state of every frontend of <snap> whose limiter has one. Packs
 * a binary lb.v1.HandoverRuntime into *<out> (malloc'ed; NULL and 0 when
 * there is nothing to carry) and counts into *<n_breakers> and *<n_limits>.
 * Returns LB_OK or LB_ENOMEM. Main thread; the workers may run. */
int handover_runtime_export(struct bshared_registry *backends, const struct snap *snap,
                            uint64_t now_ms, uint8_t **out, size_t *out_len, size_t *n_breakers,
                            size_t *n_limits, struct lb_err *err);

/* Decodes <len> bytes at <data> into *<rt> (free with
 * lb__v1__handover_runtime__free_unpacked()). Returns LB_OK or LB_EPROTO. */
int handover_runtime_decode(const uint8_t *data, size_t len, struct Lb__V1__HandoverRuntime **rt,
                            struct lb_err *err);

/* Sets the breakers <rt> names as of <now_ms>, taking for each a reference
 * in <backends> (so the state waits for the workers' views); *<refs> (an
 * array of rt->n_breakers) gets them, for handover_runtime_release() once
 * the workers run. Returns LB_OK or LB_ENOMEM (nothing held). */
int handover_runtime_breakers(struct bshared_registry *backends,
                              const struct Lb__V1__HandoverRuntime *rt, uint64_t now_ms,
                              void ***refs, struct lb_err *err);
void handover_runtime_release(struct bshared_registry *backends, void **refs, size_t n);

/* Sets the global rate-limit state of each frontend of <snap> (bound: its
 * limiters exist) that <rt> names with the same algorithm, rate and burst.
 * Returns how many were set. Before the workers serve <snap>. */
size_t handover_runtime_limits(const struct snap *snap, const struct Lb__V1__HandoverRuntime *rt,
                               uint64_t now_ms);

#endif
