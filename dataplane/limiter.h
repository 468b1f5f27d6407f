/* dataplane/limiter.h: request rate limits, per client address and global, shared by all workers.
 *
 * One limiter serves the whole data plane: every worker thread calls limiter_check() on the
 * same object, so the limit holds for the process as a whole, not per worker. Per-client
 * state sits in a fixed-size table split into up to 64 shards, each behind its own mutex and
 * chosen by a seeded hash of the client key; the global state has one mutex.
 *
 * Algorithms (the same one is used by both scopes):
 *
 * - LIMITER_TOKEN_BUCKET: a bucket of <burst> tokens, full at the start, refilled at <rate>
 *   tokens per second (kept in thousandths of a token, so refill is exact to the ms). A
 *   request takes one token. Under a saturating load over T seconds it admits
 *   burst + rate * T requests (rate 100, burst 50, 10 s: 1,050).
 *
 * - LIMITER_SLIDING_WINDOW: the weighted two-window counter. Time is cut into aligned 1-s
 *   windows; a key keeps the count of its current and previous window (16 bytes, whatever
 *   the rate; an exact log would need <rate> timestamps per key). At offset o ms into the
 *   current window the estimate is prev * (1000 - o) / 1000 + cur, and a request passes
 *   when estimate + 1 <= rate. Error bound: the estimate assumes the previous window's
 *   requests were spread evenly. Each aligned window admits at most <rate> requests, so
 *   over N seconds at most rate * (N + 1) pass, and under a steady load the admitted rate
 *   converges to <rate> (rate 100, 10 s saturating: 1,000 within 1 %, which meets the
 *   1,000 +- 2 % acceptance figure). A sliding 1-s interval straddling a window edge can
 *   see up to 2 * rate when a client bunches its requests right before and after the edge.
 *   <burst> is ignored.
 *
 * Scopes and their order: when both are on, the client's state is checked first (its shard
 * locked), then the global one (its lock nested inside the shard lock; always in that
 * order). A request refused by either charges neither: the global state is only consulted
 * when the client would pass, and the client is only charged when the global passes.
 *
 * Client keys: the IPv6 address (IPv4 as IPv4-mapped IPv6, so ::ffff:a.b.c.d and a.b.c.d
 * are the same client), masked to <ipv4_prefix> / <ipv6_prefix> bits. When the peer is in
 * <trusted>, the client is the right-most X-Forwarded-For entry that is not itself trusted.
 *
 * Time is the caller's monotonic clock in ms (<now_ms>); a value older than one already
 * seen counts as "no time passed", so workers whose clocks read a little apart are safe. */
#ifndef LB_LIMITER_H
#define LB_LIMITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lb.pb-c.h"

struct lb_err;
struct limiter;
struct sockaddr;

enum limiter_algorithm {
    LIMITER_TOKEN_BUCKET = 0,   /* = LB__V1__RATE_LIMIT_ALGORITHM__TOKEN_BUCKET */
    LIMITER_SLIDING_WINDOW = 1, /* = LB__V1__RATE_LIMIT_ALGORITHM__SLIDING_WINDOW */
};

enum limiter_scope {
    LIMITER_SCOPE_NONE = 0, /* no limit applied: disabled */
    LIMITER_SCOPE_CLIENT,
    LIMITER_SCOPE_GLOBAL,
};

#define LIMITER_MAX_TRUSTED     64        /* trusted_proxies entries */
#define LIMITER_DEFAULT_KEYS    100000    /* max_keys = 0 */
#define LIMITER_MAX_KEYS        100000000 /* upper bound accepted for max_keys */
#define LIMITER_MAX_SHARDS      64
#define LIMITER_HEADERS_MAX     128 /* limiter_headers() never needs more */
#define LIMITER_DEFAULT_V4_BITS 32
#define LIMITER_DEFAULT_V6_BITS 128

/* An address block; IPv4 blocks are stored IPv4-mapped with <bits> counted in IPv6 (96 + n). */
struct limiter_cidr {
    uint8_t addr[16]; /* network byte order, bits past <bits> zero */
    uint8_t bits;     /* 0..128 */
};

/* Validated settings with defaults applied; a plain value, copy it freely. */
struct limiter_config {
    bool enabled;        /* false: limiter_check() passes everything, sends no headers */
    uint8_t algorithm;   /* enum limiter_algorithm */
    uint32_t rate;       /* requests per second, >= 1 when enabled */
    uint32_t burst;      /* token bucket capacity, >= 1 when enabled (0 in the message = rate) */
    bool per_client;     /* one state per client key */
    bool global;         /* one state for every request through this limiter */
    uint8_t ipv4_prefix; /* 1..32 bits of an IPv4 client that form its key */
    uint8_t ipv6_prefix; /* 1..128 bits of an IPv6 client that form its key */
    uint32_t max_keys;   /* 1..LIMITER_MAX_KEYS per-client keys kept at once */
    bool headers_on_allowed; /* RateLimit-* headers on allowed responses too */
    uint32_t n_trusted;      /* entries used in <trusted> */
    struct limiter_cidr trusted[LIMITER_MAX_TRUSTED]; /* peers whose X-Forwarded-For counts */
};

/* Fills <out> from the snapshot's rate limit message <pb> (NULL = disabled), applying the
 * documented defaults (burst 0 = rate, ipv4_prefix 0 = 32, ipv6_prefix 0 = 128, max_keys 0 =
 * 100,000). Validates whether enabled or not: algorithm known, prefixes in range, max_keys
 * at most LIMITER_MAX_KEYS, every trusted proxy an IPv4 or IPv6 CIDR ("10.0.0.0/8",
 * "2001:db8::/32"; a bare address means one host; host bits past the prefix are ignored),
 * at most LIMITER_MAX_TRUSTED of them; when enabled also rate >= 1 and at least one scope.
 * Returns LB_OK, or LB_EINVAL with <err> naming the field, e.g.
 * `ratelimit.trusted_proxies[2]: "10.0.0/8" is not a CIDR`. Any thread. */
int limiter_config_from_pb(struct limiter_config *out, const Lb__V1__RateLimit *pb,
                           struct lb_err *err);

/* Parses one CIDR (or bare address) from the NUL-terminated <s> into <out>.
 * Returns true on success; false leaves <out> unspecified. Any thread. */
bool limiter_cidr_parse(const char *s, struct limiter_cidr *out);

/* True when <sa> (AF_INET or AF_INET6, IPv4-mapped IPv6 as IPv4) is inside
 * one of the <n> blocks at <set>. Any thread. */
bool limiter_cidr_match(const struct limiter_cidr *set, uint32_t n, const struct sockaddr *sa);

/* True when <a> and <b> give the same limits to the same keys (algorithm, rate, burst, scopes,
 * prefixes): a limiter built from <a> can keep serving <b> and only differs in max_keys,
 * trusted proxies or headers_on_allowed if those changed. Any thread. */
bool limiter_config_same_limits(const struct limiter_config *a, const struct limiter_config *b);

/* Creates a limiter for the validated <cfg> (copied; need not outlive the call). The per-client
 * table of <max_keys> entries (56 bytes each, plus 4 to 8 bytes of hash heads) is allocated here
 * with calloc, whose large blocks the kernel backs with memory only as keys fill them; nothing is
 * allocated later. Returns NULL and fills <err> with LB_EINVAL on a config that
 * limiter_config_from_pb() would refuse, or LB_ENOMEM. Caller owns the result; release with
 * limiter_free(). Called off the hot path (snapshot build), any thread. */
struct limiter *limiter_new(const struct limiter_config *cfg, struct lb_err *err);

/* Frees <l>; NULL is a no-op. No thread may be using <l> any more. */
void limiter_free(struct limiter *l);

/* The configuration <l> was built with. Any thread; valid while <l> lives. */
const struct limiter_config *limiter_config(const struct limiter *l);

/* Copies into <dst> the state of <src> whose limits did not change, and its counters (so
 * exported totals stay monotonic across a swap). With the same algorithm, rate and burst, the
 * global state is copied if both have the global scope, and the per-client keys if both have
 * per_client with the same prefixes (each old shard oldest first, so when <dst> holds fewer
 * keys the more recently used ones tend to stay). Otherwise only counters move. <dst> must not be
 * in use by any other thread yet (call it before publishing <dst>); <src> may still be in use: its
 * locks are taken shard by shard. Requests that workers still charge to <src> after the copy are
 * not seen by <dst>; a config whose limits are the same can instead keep using the old limiter. */
void limiter_carry(struct limiter *dst, struct limiter *src);

/* The global scope's state as it passes to a successor process (hand-over),
 * with the settings it was kept under and its time relative to the export. */
struct limiter_global_carry {
    uint8_t algorithm; /* enum limiter_algorithm */
    uint32_t rate;
    uint32_t burst;
    uint64_t age_ms;       /* token bucket: since the last refill; window: since it began */
    uint64_t tokens_milli; /* token bucket: thousandths of a token */
    uint32_t prev;         /* sliding window: the previous and current counts */
    uint32_t cur;
};

/* Reads <l>'s global state at <now_ms> into <out>. Returns false (nothing
 * read) when <l> is NULL, disabled or has no global scope. Any thread. */
bool limiter_global_export(struct limiter *l, uint64_t now_ms, struct limiter_global_carry *out);

/* Sets <l>'s global state from <in> as of <now_ms> when <l> has a global
 * scope with the same algorithm, rate and burst (else nothing changes: new
 * limits start afresh, as limiter_carry() does). Returns whether it did.
 * Any thread. */
bool limiter_global_import(struct limiter *l, const struct limiter_global_carry *in,
                           uint64_t now_ms);

/* What limiter_check() decided, and the values for the RateLimit headers
 * (draft-ietf-httpapi-ratelimit-headers) of the scope that decided. */
struct limiter_verdict {
    bool allowed;           /* false: answer 429 */
    bool send_headers;      /* refused, or allowed with headers_on_allowed (scope != NONE) */
    uint8_t scope;          /* enum limiter_scope: the refusing scope; when allowed and both
                               scopes are on, the one with fewer requests remaining */
    uint32_t limit;         /* RateLimit-Limit: the configured rate (requests per second) */
    uint32_t remaining;     /* RateLimit-Remaining: requests that would pass right now (token
                               bucket: whole tokens, up to burst, which may exceed limit) */
    uint32_t reset_s;       /* RateLimit-Reset: seconds (rounded up) until the full quota is
                               back: bucket full, or the window estimate down to zero */
    uint32_t retry_after_s; /* Retry-After when refused: seconds (rounded up, >= 1) until one
                               request would pass; 0 when allowed */
};

/* Decides whether the request from <peer> (AF_INET or AF_INET6; NULL or another family counts
 * as one shared "unknown" client) passes at <now_ms>, charging it when it does, and fills <v>.
 * <xff>/<xff_len> is the X-Forwarded-For field value as a slice (not NUL-terminated; NULL/0
 * when absent; several field lines joined with "," as RFC 9110 allows), read only when <peer>
 * is a trusted proxy; malformed entries are skipped. Returns v->allowed.
 * Hot path: O(1) (trusted list and XFF scan bounded by their sizes), never allocates, never
 * logs. Any thread, concurrently. */
bool limiter_check(struct limiter *l, const struct sockaddr *peer, const char *xff, size_t xff_len,
                   uint64_t now_ms, struct limiter_verdict *v);

/* Writes into <key> (16 bytes) the client key limiter_check() would use for these arguments:
 * the client address, IPv4-mapped for IPv4, masked to the configured prefix. Any thread. */
void limiter_client_key(const struct limiter *l, const struct sockaddr *peer, const char *xff,
                        size_t xff_len, uint8_t key[16]);

/* Formats the header lines of <v> into <buf>: "RateLimit-Limit: 100\r\nRateLimit-Remaining:
 * 0\r\nRateLimit-Reset: 1\r\n", plus "Retry-After: 1\r\n" when refused. Writes no NUL.
 * Returns the bytes written; 0 when !v->send_headers or when <cap> is too small
 * (LIMITER_HEADERS_MAX always suffices). Never allocates; any thread. */
size_t limiter_headers(const struct limiter_verdict *v, char *buf, size_t cap);

/* Counters, each summed over shards; readable from any thread at any time. */
struct limiter_stats {
    uint64_t allowed_client; /* requests the client scope passed (and the global one too) */
    uint64_t limited_client; /* requests refused by the client scope */
    uint64_t allowed_global; /* requests the global scope passed */
    uint64_t limited_global; /* requests refused by the global scope (client scope passed) */
    uint64_t keys;           /* per-client keys held now */
    uint64_t evictions;      /* keys dropped to make room, least recently used first */
};

/* Fills <out> with relaxed reads; totals are each exact but not one atomic picture. */
void limiter_stats(const struct limiter *l, struct limiter_stats *out);

#endif
