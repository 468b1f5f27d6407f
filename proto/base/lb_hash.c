/* proto/base/lb_hash.c */
#include "lb_hash.h"

#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define FNV1A_PRIME 1099511628211ull

uint64_t lb_hash_fnv1a_more(uint64_t h, const void *p, size_t len)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < len; i++)
        h = (h ^ c[i]) * FNV1A_PRIME;
    return h;
}

uint64_t lb_hash_fnv1a(const void *p, size_t len)
{
    return lb_hash_fnv1a_more(LB_HASH_FNV1A_INIT, p, len);
}

uint64_t lb_hash_fnv1a_str(const char *s)
{
    uint64_t h = LB_HASH_FNV1A_INIT;
    for (const unsigned char *c = (const unsigned char *)s; *c != '\0'; c++)
        h = (h ^ *c) * FNV1A_PRIME;
    return h;
}

/* SipHash as specified by Aumasson and Bernstein ("SipHash: a fast short-input
 * PRF", 2012), with 1 compression and 3 finalization rounds: the variant
 * Python and Rust use for their hash tables, where 2-4's extra margin costs
 * time for nothing a table needs. */
struct sip {
    uint64_t v0, v1, v2, v3;
};

static uint64_t rotl(uint64_t x, int b)
{
    return (x << b) | (x >> (64 - b));
}

static void sip_round(struct sip *s)
{
    s->v0 += s->v1;
    s->v1 = rotl(s->v1, 13);
    s->v1 ^= s->v0;
    s->v0 = rotl(s->v0, 32);
    s->v2 += s->v3;
    s->v3 = rotl(s->v3, 16);
    s->v3 ^= s->v2;
    s->v0 += s->v3;
    s->v3 = rotl(s->v3, 21);
    s->v3 ^= s->v0;
    s->v2 += s->v1;
    s->v1 = rotl(s->v1, 17);
    s->v1 ^= s->v2;
    s->v2 = rotl(s->v2, 32);
}

static uint64_t load_le64(const unsigned char *p, size_t n)
{
    uint64_t w = 0;
    for (size_t i = n; i-- > 0;)
        w = (w << 8) | p[i];
    return w;
}

static void sip_absorb(struct sip *s, uint64_t m)
{
    s->v3 ^= m;
    sip_round(s);
    s->v0 ^= m;
}

uint64_t lb_hash_sip13(const struct lb_hash_key *key, const void *p, size_t len)
{
    /* "somepseudorandomlygeneratedbytes", the constants of the specification */
    struct sip s = {
        key->k0 ^ 0x736f6d6570736575ull,
        key->k1 ^ 0x646f72616e646f6dull,
        key->k0 ^ 0x6c7967656e657261ull,
        key->k1 ^ 0x7465646279746573ull,
    };
    const unsigned char *c = p;
    size_t full = len & ~(size_t)7;
    for (size_t i = 0; i < full; i += 8)
        sip_absorb(&s, load_le64(c + i, 8));
    /* the last word: the remaining bytes, the length's low byte on top */
    sip_absorb(&s, load_le64(c + full, len - full) | ((uint64_t)(len & 0xff) << 56));
    s.v2 ^= 0xff;
    for (int i = 0; i < 3; i++)
        sip_round(&s);
    return s.v0 ^ s.v1 ^ s.v2 ^ s.v3;
}

void lb_hash_key_random(struct lb_hash_key *key)
{
    uint64_t k[2];
    if (getrandom(k, sizeof(k), GRND_NONBLOCK) != (ssize_t)sizeof(k)) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        struct lb_hash_key mix = {(uint64_t)(uintptr_t)key, (uint64_t)getpid()};
        k[0] = lb_hash_sip13(&mix, &ts, sizeof(ts));
        clock_gettime(CLOCK_MONOTONIC, &ts);
        k[1] = lb_hash_sip13(&mix, &ts, sizeof(ts)) ^ k[0];
    }
    key->k0 = k[0];
    key->k1 = k[1];
}
