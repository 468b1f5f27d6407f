/* proto/base/lb_hash.h: the one hashing module.
 *
 * Two functions for two kinds of keys:
 *   - lb_hash_fnv1a*: FNV-1a 64, fast and unkeyed, for keys the operator
 *     chooses (backend and frontend ids, server names from the config);
 *   - lb_hash_sip13: SipHash-1-3 under a 128-bit secret key, for keys a client
 *     chooses (its address in the rate limiter's table, header names): without
 *     the key nobody can pick inputs that land in one bucket.
 * All functions are pure and may be called from any thread; none allocates. */
#ifndef LB_HASH_H
#define LB_HASH_H

#include <stddef.h>
#include <stdint.h>

#define LB_HASH_FNV1A_INIT 14695981039346656037ull /* FNV-1a 64 offset basis */

/* A SipHash key. Make one per table (or per process) with lb_hash_key_random()
 * when the table is created; never derive it from anything a client sees. */
struct lb_hash_key {
    uint64_t k0, k1;
};

/* FNV-1a 64 of <len> bytes at <p>. */
uint64_t lb_hash_fnv1a(const void *p, size_t len);

/* FNV-1a 64 of the NUL-terminated string <s> (the NUL not included). */
uint64_t lb_hash_fnv1a_str(const char *s);

/* Continues the FNV-1a hash <h> (LB_HASH_FNV1A_INIT or an earlier result) over
 * <len> more bytes at <p>, to hash several fields as one key. */
uint64_t lb_hash_fnv1a_more(uint64_t h, const void *p, size_t len);

/* SipHash-1-3 of <len> bytes at <p> under <key>: the byte string is read as
 * little-endian words whatever the host. */
uint64_t lb_hash_sip13(const struct lb_hash_key *key, const void *p, size_t len);

/* Fills <key> from getrandom(); if the kernel has no entropy to give yet
 * (early boot), falls back to a mix of the clock, the pid and <key>'s address,
 * which still differs per process and start. Never fails, never blocks. */
void lb_hash_key_random(struct lb_hash_key *key);

#endif
