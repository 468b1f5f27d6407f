/* dataplane/limiter.c */
#include "limiter.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "lb_err.h"
#include "lb_hash.h"

/* Token bucket amounts are thousandths of a token: <rate> of them arrive every ms, so the
 * refill is exact integer arithmetic at any rate. */
#define MILLI 1000u

/* Algorithm state of one key or of the global scope.
 * Token bucket: <t> = ms of the last refill, <tokens> = thousandths of a token.
 * Sliding window: <t> = ms at which the current 1-s window began, <prev>/<cur> = counts.
 * Windows are anchored at the key's first request (and again after a quiet spell, when
 * both counts are zero), not at wall-clock seconds: the first window is a whole one, so a
 * saturating client gets <rate> in every second from its first request on. */
struct lstate {
    uint64_t t;
    uint64_t tokens;
    uint32_t prev;
    uint32_t cur;
};

/* Links are entry index + 1, so 0 means none and a calloc'd table starts empty. */
struct entry {
    uint8_t key[16];
    struct lstate st;
    uint32_t newer; /* LRU neighbour towards the head (most recent) */
    uint32_t older; /* LRU neighbour towards the tail (least recent) */
    uint32_t chain; /* next entry in the same hash bucket */
};

/* Counters are written under the owner's lock, read from any thread with relaxed loads. */
#define CTR_ADD(field, n)                                                                          \
    atomic_store_explicit(&(field), atomic_load_explicit(&(field), memory_order_relaxed) + (n),    \
                          memory_order_relaxed)
#define CTR_GET(field) atomic_load_explicit(&(field), memory_order_relaxed)

struct shard {
    alignas(64) pthread_mutex_t mu; /* guards everything below but the counters' readers */
    uint32_t base;                  /* first entry index of this shard in l->entries */
    uint32_t cap;                   /* entries this shard may hold */
    uint32_t n;                     /* entries in use: base .. base + n - 1 */
    uint32_t bbase;                 /* first bucket index in l->buckets */
    uint32_t bmask;                 /* buckets in this shard - 1 (a power of two) */
    uint32_t head;                  /* most recently used entry (link) */
    uint32_t tail;                  /* least recently used entry (link) */
    _Atomic uint64_t keys;
    _Atomic uint64_t evictions;
    _Atomic uint64_t allowed;
    _Atomic uint64_t limited;
};

struct global {
    alignas(64) pthread_mutex_t mu; /* guards <st> */
    struct lstate st;
    _Atomic uint64_t allowed;
    _Atomic uint64_t limited;
};

struct limiter {
    struct limiter_config cfg;
    struct lb_hash_key key;       /* SipHash key, random per limiter: clients choose the keys */
    uint32_t nshards;             /* power of two, at most max_keys */
    struct entry *entries;        /* all shards' entries, NULL without per_client */
    uint32_t *buckets;            /* hash heads (links) of all shards */
    struct limiter_stats carried; /* totals inherited by limiter_carry(); written before use */
    struct global global;
    struct shard shards[LIMITER_MAX_SHARDS];
};

/* ---- addresses ------------------------------------------------------------------------- */

static const uint8_t v4_mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

static bool addr_is_v4(const uint8_t a[16])
{
    return memcmp(a, v4_mapped_prefix, sizeof(v4_mapped_prefix)) == 0;
}

static void addr_mask(uint8_t a[16], unsigned bits)
{
    for (unsigned i = 0; i < 16; i++) {
        if (bits >= 8) {
            bits -= 8;
            continue;
        }
        a[i] &= (uint8_t)(0xff00u >> bits);
        bits = 0;
    }
}

static bool cidr_contains(const struct limiter_cidr *c, const uint8_t a[16])
{
    uint8_t m[16];
    memcpy(m, a, sizeof(m));
    addr_mask(m, c->bits);
    return memcmp(m, c->addr, sizeof(m)) == 0;
}

/* Parses an address (no prefix) from <s>/<len>; IPv4 comes out IPv4-mapped. */
static bool addr_parse(const char *s, size_t len, uint8_t out[16], bool *is_v4)
{
    char buf[INET6_ADDRSTRLEN + 1];
    if (len == 0 || len >= sizeof(buf))
        return false;
    memcpy(buf, s, len);
    buf[len] = '\0';
    struct in_addr a4;
    if (inet_pton(AF_INET, buf, &a4) == 1) {
        memcpy(out, v4_mapped_prefix, sizeof(v4_mapped_prefix));
        memcpy(out + 12, &a4, 4);
        *is_v4 = true;
        return true;
    }
    if (inet_pton(AF_INET6, buf, out) == 1) {
        *is_v4 = addr_is_v4(out);
        return true;
    }
    return false;
}

bool limiter_cidr_parse(const char *s, struct limiter_cidr *out)
{
    const char *slash = strchr(s, '/');
    size_t alen = slash ? (size_t)(slash - s) : strlen(s);
    bool v4;
    if (!addr_parse(s, alen, out->addr, &v4))
        return false;
    /* Dotted IPv4 counts its bits in IPv4; an IPv4-mapped IPv6 address written as IPv6 in
     * IPv6 bits. Both end up as IPv6 bits. */
    bool dotted = memchr(s, ':', alen) == NULL;
    unsigned max = dotted ? 32 : 128;
    unsigned bits = max;
    if (slash) {
        const char *p = slash + 1;
        if (*p == '\0' || strlen(p) > 3)
            return false;
        bits = 0;
        for (; *p; p++) {
            if (*p < '0' || *p > '9')
                return false;
            bits = bits * 10 + (unsigned)(*p - '0');
        }
        if (bits > max)
            return false;
    }
    out->bits = (uint8_t)(dotted ? 96 + bits : bits);
    addr_mask(out->addr, out->bits);
    return true;
}

static void addr_from_sockaddr(const struct sockaddr *sa, uint8_t out[16])
{
    memset(out, 0, 16);
    if (sa == NULL)
        return;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
        memcpy(out, v4_mapped_prefix, sizeof(v4_mapped_prefix));
        memcpy(out + 12, &in->sin_addr, 4);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
        memcpy(out, &in6->sin6_addr, 16);
    }
}

bool limiter_cidr_match(const struct limiter_cidr *set, uint32_t n, const struct sockaddr *sa)
{
    if (sa->sa_family != AF_INET && sa->sa_family != AF_INET6)
        return false;
    uint8_t a[16];
    addr_from_sockaddr(sa, a);
    for (uint32_t i = 0; i < n; i++)
        if (cidr_contains(&set[i], a))
            return true;
    return false;
}

static bool is_trusted(const struct limiter_config *c, const uint8_t a[16])
{
    for (uint32_t i = 0; i < c->n_trusted; i++) {
        if (cidr_contains(&c->trusted[i], a))
            return true;
    }
    return false;
}

/* One X-Forwarded-For entry, already trimmed: "a.b.c.d", "a.b.c.d:port", "v6", "[v6]",
 * "[v6]:port". */
static bool xff_entry_parse(const char *s, size_t len, uint8_t out[16])
{
    bool v4;
    if (len > 0 && s[0] == '[') {
        const char *close = memchr(s, ']', len);
        if (close == NULL)
            return false;
        size_t rest = len - (size_t)(close - s) - 1;
        const char *r = close + 1;
        if (rest > 0) {
            if (r[0] != ':' || rest == 1)
                return false;
            for (size_t i = 1; i < rest; i++) {
                if (r[i] < '0' || r[i] > '9')
                    return false;
            }
        }
        return addr_parse(s + 1, (size_t)(close - s) - 1, out, &v4) && !v4;
    }
    const char *colon = memchr(s, ':', len);
    if (colon != NULL && memchr(colon + 1, ':', len - (size_t)(colon - s) - 1) == NULL) {
        /* Exactly one colon: IPv4 with a port. */
        for (const char *p = colon + 1; p < s + len; p++) {
            if (*p < '0' || *p > '9')
                return false;
        }
        return colon + 1 < s + len && addr_parse(s, (size_t)(colon - s), out, &v4) && v4;
    }
    return addr_parse(s, len, out, &v4);
}

/* Right-most valid X-Forwarded-For entry that is not trusted; false when there is none. */
static bool xff_client(const struct limiter_config *c, const char *xff, size_t len, uint8_t out[16])
{
    size_t end = len;
    while (end > 0) {
        size_t start = end;
        while (start > 0 && xff[start - 1] != ',')
            start--;
        size_t a = start, b = end;
        while (a < b && (xff[a] == ' ' || xff[a] == '\t'))
            a++;
        while (b > a && (xff[b - 1] == ' ' || xff[b - 1] == '\t'))
            b--;
        uint8_t addr[16];
        if (xff_entry_parse(xff + a, b - a, addr) && !is_trusted(c, addr)) {
            memcpy(out, addr, 16);
            return true;
        }
        end = start > 0 ? start - 1 : 0;
    }
    return false;
}

void limiter_client_key(const struct limiter *l, const struct sockaddr *peer, const char *xff,
                        size_t xff_len, uint8_t key[16])
{
    const struct limiter_config *c = &l->cfg;
    addr_from_sockaddr(peer, key);
    if (xff != NULL && xff_len > 0 && c->n_trusted > 0 && is_trusted(c, key))
        xff_client(c, xff, xff_len, key);
    addr_mask(key, addr_is_v4(key) ? 96u + c->ipv4_prefix : c->ipv6_prefix);
}

/* ---- config ---------------------------------------------------------------------------- */

int limiter_config_from_pb(struct limiter_config *out, const Lb__V1__RateLimit *pb,
                           struct lb_err *err)
{
    memset(out, 0, sizeof(*out));
    out->ipv4_prefix = LIMITER_DEFAULT_V4_BITS;
    out->ipv6_prefix = LIMITER_DEFAULT_V6_BITS;
    out->max_keys = LIMITER_DEFAULT_KEYS;
    if (pb == NULL)
        return LB_OK;
    if (pb->algorithm != LB__V1__RATE_LIMIT_ALGORITHM__TOKEN_BUCKET &&
        pb->algorithm != LB__V1__RATE_LIMIT_ALGORITHM__SLIDING_WINDOW)
        return lb_err_set(err, LB_EINVAL, 0, "ratelimit.algorithm: unknown value %d",
                          (int)pb->algorithm);
    if (pb->ipv4_prefix > 32)
        return lb_err_set(err, LB_EINVAL, 0,
                          "ratelimit.ipv4_prefix: %u is not in 1..32 (0 means 32)",
                          pb->ipv4_prefix);
    if (pb->ipv6_prefix > 128)
        return lb_err_set(err, LB_EINVAL, 0,
                          "ratelimit.ipv6_prefix: %u is not in 1..128 (0 means 128)",
                          pb->ipv6_prefix);
    if (pb->max_keys > LIMITER_MAX_KEYS)
        return lb_err_set(err, LB_EINVAL, 0, "ratelimit.max_keys: %u is above %u", pb->max_keys,
                          LIMITER_MAX_KEYS);
    if (pb->n_trusted_proxies > LIMITER_MAX_TRUSTED)
        return lb_err_set(err, LB_EINVAL, 0, "ratelimit.trusted_proxies: %zu entries, at most %d",
                          pb->n_trusted_proxies, LIMITER_MAX_TRUSTED);
    for (size_t i = 0; i < pb->n_trusted_proxies; i++) {
        const char *s = pb->trusted_proxies[i];
        if (s == NULL || !limiter_cidr_parse(s, &out->trusted[i]))
            return lb_err_set(err, LB_EINVAL, 0,
                              "ratelimit.trusted_proxies[%zu]: \"%.64s\" is not a CIDR", i,
                              s ? s : "");
    }
    if (pb->enabled && pb->rate == 0)
        return lb_err_set(err, LB_EINVAL, 0, "ratelimit.rate: must be > 0 when enabled");
    if (pb->enabled && !pb->per_client && !pb->global)
        return lb_err_set(err, LB_EINVAL, 0,
                          "ratelimit: an enabled rate limit needs per_client or global");
    out->n_trusted = (uint32_t)pb->n_trusted_proxies;
    out->enabled = pb->enabled;
    out->algorithm = (uint8_t)pb->algorithm;
    out->rate = pb->rate;
    out->burst = pb->burst ? pb->burst : pb->rate;
    out->per_client = pb->per_client;
    out->global = pb->global;
    if (pb->ipv4_prefix)
        out->ipv4_prefix = (uint8_t)pb->ipv4_prefix;
    if (pb->ipv6_prefix)
        out->ipv6_prefix = (uint8_t)pb->ipv6_prefix;
    if (pb->max_keys)
        out->max_keys = pb->max_keys;
    out->headers_on_allowed = pb->headers_on_allowed;
    return LB_OK;
}

static bool same_algorithm(const struct limiter_config *a, const struct limiter_config *b)
{
    return a->enabled == b->enabled && a->algorithm == b->algorithm && a->rate == b->rate &&
           (a->algorithm == LIMITER_SLIDING_WINDOW || a->burst == b->burst);
}

bool limiter_config_same_limits(const struct limiter_config *a, const struct limiter_config *b)
{
    return same_algorithm(a, b) && a->per_client == b->per_client && a->global == b->global &&
           a->ipv4_prefix == b->ipv4_prefix && a->ipv6_prefix == b->ipv6_prefix;
}

static int config_check(const struct limiter_config *c, struct lb_err *err)
{
    if (c->algorithm > LIMITER_SLIDING_WINDOW)
        return lb_err_set(err, LB_EINVAL, 0, "ratelimit.algorithm: unknown value %u", c->algorithm);
    if (c->ipv4_prefix < 1 || c->ipv4_prefix > 32 || c->ipv6_prefix < 1 || c->ipv6_prefix > 128)
        return lb_err_set(err, LB_EINVAL, 0, "ratelimit: prefix lengths out of range");
    if (c->max_keys < 1 || c->max_keys > LIMITER_MAX_KEYS)
        return lb_err_set(err, LB_EINVAL, 0, "ratelimit.max_keys: %u is not in 1..%u", c->max_keys,
                          LIMITER_MAX_KEYS);
    if (c->n_trusted > LIMITER_MAX_TRUSTED)
        return lb_err_set(err, LB_EINVAL, 0, "ratelimit.trusted_proxies: too many");
    if (c->enabled && (c->rate == 0 || c->burst == 0))
        return lb_err_set(err, LB_EINVAL, 0, "ratelimit.rate: must be > 0 when enabled");
    return LB_OK;
}

/* ---- lifecycle ------------------------------------------------------------------------- */

static uint32_t pow2_at_least(uint32_t n)
{
    uint32_t p = 1;
    while (p < n)
        p <<= 1;
    return p;
}

struct limiter *limiter_new(const struct limiter_config *cfg, struct lb_err *err)
{
    if (config_check(cfg, err) != LB_OK)
        return NULL;
    size_t size = (sizeof(struct limiter) + 63) / 64 * 64;
    struct limiter *l = aligned_alloc(64, size);
    if (l == NULL) {
        lb_err_set(err, LB_ENOMEM, 0, "ratelimit: no memory for the limiter");
        return NULL;
    }
    memset(l, 0, size);
    l->cfg = *cfg;
    lb_hash_key_random(&l->key);
    pthread_mutex_init(&l->global.mu, NULL);
    l->global.st.tokens = (uint64_t)cfg->burst * MILLI;
    l->nshards = LIMITER_MAX_SHARDS;
    while (l->nshards > cfg->max_keys)
        l->nshards >>= 1;
    uint32_t nbuckets = 0;
    for (uint32_t i = 0; i < l->nshards; i++) {
        struct shard *s = &l->shards[i];
        pthread_mutex_init(&s->mu, NULL);
        /* Spread max_keys exactly: the first (max % nshards) shards take one more. */
        s->cap = cfg->max_keys / l->nshards + (i < cfg->max_keys % l->nshards ? 1 : 0);
        s->base = i == 0 ? 0 : l->shards[i - 1].base + l->shards[i - 1].cap;
        s->bbase = nbuckets;
        s->bmask = pow2_at_least(s->cap) - 1;
        nbuckets += s->bmask + 1;
    }
    if (cfg->enabled && cfg->per_client) {
        l->entries = calloc(cfg->max_keys, sizeof(*l->entries));
        l->buckets = calloc(nbuckets, sizeof(*l->buckets));
        if (l->entries == NULL || l->buckets == NULL) {
            limiter_free(l);
            lb_err_set(err, LB_ENOMEM, 0, "ratelimit: no memory for %u client keys", cfg->max_keys);
            return NULL;
        }
    }
    return l;
}

void limiter_free(struct limiter *l)
{
    if (l == NULL)
        return;
    for (uint32_t i = 0; i < l->nshards; i++)
        pthread_mutex_destroy(&l->shards[i].mu);
    pthread_mutex_destroy(&l->global.mu);
    free(l->entries);
    free(l->buckets);
    free(l);
}

const struct limiter_config *limiter_config(const struct limiter *l)
{
    return &l->cfg;
}

/* ---- algorithms ------------------------------------------------------------------------ */

/* Brings <s> forward to <now>; returns the time to judge at, which is never before the
 * state's own time (a worker whose clock lags another's sees no time pass). */
static uint64_t state_advance(const struct limiter_config *c, struct lstate *s, uint64_t now)
{
    if (c->algorithm == LIMITER_TOKEN_BUCKET) {
        if (now <= s->t)
            return s->t;
        uint64_t cap = (uint64_t)c->burst * MILLI;
        if (s->tokens < cap) {
            uint64_t missing = cap - s->tokens;
            uint64_t elapsed = now - s->t;
            /* Compare before multiplying: hours of idle time must not overflow. */
            if (elapsed >= (missing + c->rate - 1) / c->rate)
                s->tokens = cap;
            else
                s->tokens += elapsed * c->rate;
        }
        s->t = now;
        return now;
    }
    if (s->prev == 0 && s->cur == 0) {
        if (now > s->t)
            s->t = now; /* no history: the first window starts here */
        return now > s->t ? now : s->t;
    }
    if (now < s->t)
        return s->t; /* the window start: the most conservative estimate */
    uint64_t k = (now - s->t) / 1000;
    if (k > 0) {
        s->prev = k == 1 ? s->cur : 0;
        s->cur = 0;
        s->t += k * 1000;
    }
    return now;
}

/* Sliding window estimate at <at>, in thousandths of a request. */
static uint64_t sw_estimate(const struct lstate *s, uint64_t at)
{
    uint64_t off = at - s->t;
    return (uint64_t)s->prev * (1000 - off) + (uint64_t)s->cur * MILLI;
}

static bool state_can_take(const struct limiter_config *c, const struct lstate *s, uint64_t at)
{
    if (c->algorithm == LIMITER_TOKEN_BUCKET)
        return s->tokens >= MILLI;
    return sw_estimate(s, at) + MILLI <= (uint64_t)c->rate * MILLI;
}

static void state_take(const struct limiter_config *c, struct lstate *s)
{
    if (c->algorithm == LIMITER_TOKEN_BUCKET)
        s->tokens -= MILLI;
    else
        s->cur++;
}

static uint32_t ms_to_s(uint64_t ms)
{
    uint64_t s = (ms + 999) / 1000;
    return s > UINT32_MAX ? UINT32_MAX : (uint32_t)s;
}

static uint64_t div_up(uint64_t a, uint64_t b)
{
    return (a + b - 1) / b;
}

/* Milliseconds from <at> until one more request would pass under the sliding window. */
static uint64_t sw_wait_ms(const struct limiter_config *c, const struct lstate *s, uint64_t at)
{
    uint64_t off = at - s->t;
    uint64_t rate = c->rate;
    if (s->cur + 1 <= rate && s->prev > 0) {
        /* Later in this window: prev * (1000 - o) <= (rate - 1 - cur) * 1000. */
        uint64_t q = ((rate - 1 - s->cur) * MILLI) / s->prev;
        if (q >= 1000)
            return 0;
        if (q > 0)
            return 1000 - q > off ? 1000 - q - off : 0;
    }
    /* In the next window the current count becomes the previous one. */
    uint64_t q = s->cur == 0 ? 1000 : ((rate - 1) * MILLI) / s->cur;
    return (1000 - off) + (q >= 1000 ? 0 : 1000 - q);
}

static void state_fill(const struct limiter_config *c, const struct lstate *s, uint64_t at,
                       bool allowed, uint8_t scope, struct limiter_verdict *v)
{
    v->allowed = allowed;
    v->scope = scope;
    v->limit = c->rate;
    v->retry_after_s = 0;
    if (c->algorithm == LIMITER_TOKEN_BUCKET) {
        uint64_t cap = (uint64_t)c->burst * MILLI;
        uint64_t rem = s->tokens / MILLI;
        v->remaining = rem > UINT32_MAX ? UINT32_MAX : (uint32_t)rem;
        v->reset_s = ms_to_s(div_up(cap - s->tokens, c->rate));
        if (!allowed) {
            uint32_t r = ms_to_s(div_up(MILLI - s->tokens, c->rate));
            v->retry_after_s = r ? r : 1;
        }
        return;
    }
    uint64_t est = sw_estimate(s, at);
    uint64_t quota = (uint64_t)c->rate * MILLI;
    v->remaining = est >= quota ? 0 : (uint32_t)((quota - est) / MILLI);
    uint64_t off = at - s->t;
    v->reset_s = ms_to_s(s->cur > 0 ? 2000 - off : s->prev > 0 ? 1000 - off : 0);
    if (!allowed) {
        uint32_t r = ms_to_s(sw_wait_ms(c, s, at));
        v->retry_after_s = r ? r : 1;
    }
}

/* ---- the per-client table -------------------------------------------------------------- */

static uint64_t key_hash(const struct limiter *l, const uint8_t key[16])
{
    return lb_hash_sip13(&l->key, key, 16);
}

static struct shard *shard_of(struct limiter *l, uint64_t h)
{
    return &l->shards[(h >> 58) & (l->nshards - 1)];
}

static struct entry *ent(struct limiter *l, uint32_t link)
{
    return &l->entries[link - 1];
}

static void lru_unlink(struct limiter *l, struct shard *s, uint32_t link)
{
    struct entry *e = ent(l, link);
    if (e->newer)
        ent(l, e->newer)->older = e->older;
    else
        s->head = e->older;
    if (e->older)
        ent(l, e->older)->newer = e->newer;
    else
        s->tail = e->newer;
    e->newer = e->older = 0;
}

static void lru_push_head(struct limiter *l, struct shard *s, uint32_t link)
{
    struct entry *e = ent(l, link);
    e->newer = 0;
    e->older = s->head;
    if (s->head)
        ent(l, s->head)->newer = link;
    s->head = link;
    if (s->tail == 0)
        s->tail = link;
}

static void chain_remove(struct limiter *l, struct shard *s, uint32_t link)
{
    uint32_t *p = &l->buckets[s->bbase + (key_hash(l, ent(l, link)->key) & s->bmask)];
    while (*p && *p != link)
        p = &ent(l, *p)->chain;
    if (*p)
        *p = ent(l, link)->chain;
    ent(l, link)->chain = 0;
}

/* Finds <key> in <s> (locked) or makes room for it, and marks it most recently used.
 * A new key's state is the algorithm's fresh state: full bucket, empty windows. */
static struct entry *shard_get(struct limiter *l, struct shard *s, const uint8_t key[16],
                               uint64_t h)
{
    uint32_t *head = &l->buckets[s->bbase + (h & s->bmask)];
    for (uint32_t link = *head; link; link = ent(l, link)->chain) {
        if (memcmp(ent(l, link)->key, key, 16) == 0) {
            if (s->head != link) {
                lru_unlink(l, s, link);
                lru_push_head(l, s, link);
            }
            return ent(l, link);
        }
    }
    uint32_t link;
    if (s->n < s->cap) {
        link = s->base + s->n + 1;
        s->n++;
        CTR_ADD(s->keys, 1);
    } else {
        link = s->tail;
        lru_unlink(l, s, link);
        chain_remove(l, s, link);
        CTR_ADD(s->evictions, 1);
    }
    struct entry *e = ent(l, link);
    memcpy(e->key, key, 16);
    e->st = (struct lstate){.tokens = (uint64_t)l->cfg.burst * MILLI};
    e->chain = *head;
    *head = link;
    lru_push_head(l, s, link);
    return e;
}

/* ---- the check ------------------------------------------------------------------------- */

static bool global_check(struct limiter *l, uint64_t now_ms, struct limiter_verdict *v)
{
    struct global *g = &l->global;
    pthread_mutex_lock(&g->mu);
    uint64_t at = state_advance(&l->cfg, &g->st, now_ms);
    bool ok = state_can_take(&l->cfg, &g->st, at);
    if (ok) {
        state_take(&l->cfg, &g->st);
        CTR_ADD(g->allowed, 1);
    } else {
        CTR_ADD(g->limited, 1);
    }
    state_fill(&l->cfg, &g->st, at, ok, LIMITER_SCOPE_GLOBAL, v);
    pthread_mutex_unlock(&g->mu);
    return ok;
}

bool limiter_check(struct limiter *l, const struct sockaddr *peer, const char *xff, size_t xff_len,
                   uint64_t now_ms, struct limiter_verdict *v)
{
    const struct limiter_config *c = &l->cfg;
    memset(v, 0, sizeof(*v));
    v->allowed = true;
    if (!c->enabled)
        return true;
    if (!c->per_client) {
        global_check(l, now_ms, v);
    } else {
        uint8_t key[16];
        limiter_client_key(l, peer, xff, xff_len, key);
        uint64_t h = key_hash(l, key);
        struct shard *s = shard_of(l, h);
        pthread_mutex_lock(&s->mu);
        struct entry *e = shard_get(l, s, key, h);
        uint64_t at = state_advance(c, &e->st, now_ms);
        if (!state_can_take(c, &e->st, at)) {
            CTR_ADD(s->limited, 1);
            state_fill(c, &e->st, at, false, LIMITER_SCOPE_CLIENT, v);
        } else {
            struct limiter_verdict gv;
            /* Nested in the shard lock, always in this order; the client pays only when the
             * global scope lets the request through. */
            if (c->global && !global_check(l, now_ms, &gv)) {
                *v = gv;
            } else {
                state_take(c, &e->st);
                CTR_ADD(s->allowed, 1);
                state_fill(c, &e->st, at, true, LIMITER_SCOPE_CLIENT, v);
                if (c->global && gv.remaining < v->remaining)
                    *v = gv;
            }
        }
        pthread_mutex_unlock(&s->mu);
    }
    v->send_headers = !v->allowed || c->headers_on_allowed;
    return v->allowed;
}

size_t limiter_headers(const struct limiter_verdict *v, char *buf, size_t cap)
{
    if (!v->send_headers || v->scope == LIMITER_SCOPE_NONE)
        return 0;
    char tmp[LIMITER_HEADERS_MAX];
    int n = snprintf(tmp, sizeof(tmp),
                     "RateLimit-Limit: %u\r\nRateLimit-Remaining: %u\r\nRateLimit-Reset: %u\r\n",
                     v->limit, v->remaining, v->reset_s);
    if (n > 0 && !v->allowed)
        n += snprintf(tmp + n, sizeof(tmp) - (size_t)n, "Retry-After: %u\r\n", v->retry_after_s);
    if (n <= 0 || (size_t)n > cap)
        return 0;
    memcpy(buf, tmp, (size_t)n);
    return (size_t)n;
}

/* ---- carry and stats ------------------------------------------------------------------- */

void limiter_stats(const struct limiter *l, struct limiter_stats *out)
{
    *out = l->carried;
    out->keys = 0;
    out->allowed_global += CTR_GET(l->global.allowed);
    out->limited_global += CTR_GET(l->global.limited);
    for (uint32_t i = 0; i < l->nshards; i++) {
        const struct shard *s = &l->shards[i];
        out->allowed_client += CTR_GET(s->allowed);
        out->limited_client += CTR_GET(s->limited);
        out->keys += CTR_GET(s->keys);
        out->evictions += CTR_GET(s->evictions);
    }
}

void limiter_carry(struct limiter *dst, struct limiter *src)
{
    if (dst == NULL || src == NULL || dst == src)
        return;
    struct limiter_stats st;
    limiter_stats(src, &st);
    dst->carried = st;
    dst->carried.keys = 0;
    const struct limiter_config *a = &src->cfg, *b = &dst->cfg;
    if (!a->enabled || !same_algorithm(a, b))
        return;
    if (a->global && b->global) {
        pthread_mutex_lock(&src->global.mu);
        dst->global.st = src->global.st;
        pthread_mutex_unlock(&src->global.mu);
    }
    if (!a->per_client || !b->per_client || a->ipv4_prefix != b->ipv4_prefix ||
        a->ipv6_prefix != b->ipv6_prefix)
        return;
    for (uint32_t i = 0; i < src->nshards; i++) {
        struct shard *s = &src->shards[i];
        pthread_mutex_lock(&s->mu);
        for (uint32_t link = s->tail; link; link = ent(src, link)->newer) {
            const struct entry *e = ent(src, link);
            uint64_t h = key_hash(dst, e->key);
            shard_get(dst, shard_of(dst, h), e->key, h)->st = e->st;
        }
        pthread_mutex_unlock(&s->mu);
    }
}

bool limiter_global_export(struct limiter *l, uint64_t now_ms, struct limiter_global_carry *out)
{
    memset(out, 0, sizeof(*out));
    if (l == NULL || !l->cfg.enabled || !l->cfg.global)
        return false;
    out->algorithm = l->cfg.algorithm;
    out->rate = l->cfg.rate;
    out->burst = l->cfg.burst;
    pthread_mutex_lock(&l->global.mu);
    const struct lstate *st = &l->global.st;
    out->age_ms = now_ms > st->t ? now_ms - st->t : 0;
    out->tokens_milli = st->tokens;
    out->prev = st->prev;
    out->cur = st->cur;
    pthread_mutex_unlock(&l->global.mu);
    return true;
}

bool limiter_global_import(struct limiter *l, const struct limiter_global_carry *in,
                           uint64_t now_ms)
{
    if (l == NULL || !l->cfg.enabled || !l->cfg.global || in->algorithm != l->cfg.algorithm ||
        in->rate != l->cfg.rate || in->burst != l->cfg.burst)
        return false;
    uint64_t cap = (uint64_t)l->cfg.burst * MILLI;
    pthread_mutex_lock(&l->global.mu);
    struct lstate *st = &l->global.st;
    st->t = now_ms > in->age_ms ? now_ms - in->age_ms : 0;
    st->tokens = in->tokens_milli < cap ? in->tokens_milli : cap;
    st->prev = in->prev;
    st->cur = in->cur;
    pthread_mutex_unlock(&l->global.mu);
    return true;
}
