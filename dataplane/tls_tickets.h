/* dataplane/tls_tickets.h: the process's session-ticket keys, shared by every
 * TLS context and every worker so that a ticket issued by one worker (or by a
 * context built before a reload) resumes on any other. */
#ifndef LB_TLS_TICKETS_H
#define LB_TLS_TICKETS_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

struct lb_err;
struct tls_tickets;

/* Returns the current time in seconds on any steady clock. */
typedef uint64_t (*tls_tickets_clock_fn)(void *arg);

#define TLS_TICKETS_NAME_LEN 16

/* Creates an empty key store (keys are made on first use). <clock> (with
 * <clock_arg>) tells the time; NULL means CLOCK_MONOTONIC, tests pass a fake.
 * Returns NULL and fills <err> when out of memory. The caller holds one
 * reference; release it with tls_tickets_unref(). */
struct tls_tickets *tls_tickets_new(tls_tickets_clock_fn clock, void *clock_arg,
                                    struct lb_err *err);

/* Takes one more reference; returns <k>. Any thread. */
struct tls_tickets *tls_tickets_ref(struct tls_tickets *k);

/* Drops a reference; the last one frees the store. NULL is a no-op. Any thread. */
void tls_tickets_unref(struct tls_tickets *k);

/* Number of keys made so far (1 after the first ticket, +1 per rotation). */
uint64_t tls_tickets_generation(struct tls_tickets *k);

/* Bytes tls_tickets_export() writes. */
#define TLS_TICKETS_EXPORT_LEN (1 + 8 + 2 * (1 + 8 + TLS_TICKETS_NAME_LEN + 32 + 32))

/* Writes the current and previous keys (secret: never log them), their
 * ages and the generation into out[0..TLS_TICKETS_EXPORT_LEN), for a
 * process that takes over (dataplane/handover.h). Any thread. */
void tls_tickets_export(struct tls_tickets *k, uint8_t out[TLS_TICKETS_EXPORT_LEN]);

/* Replaces <k>'s keys with what tls_tickets_export() wrote, keeping their
 * ages on this store's clock, so tickets issued by the exporting process
 * resume here and rotation goes on where it was. Returns LB_OK, or
 * LB_EINVAL (wrong length or version) with <k> unchanged. Any thread. */
int tls_tickets_import(struct tls_tickets *k, const uint8_t *buf, size_t len, struct lb_err *err);

/* The OpenSSL ticket step (SSL_CTX_set_tlsext_ticket_key_evp_cb contract) for
 * a context whose keys rotate every <period_s> seconds (> 0).
 * enc != 0: fills <name> and <iv>, sets up AES-256-CBC and HMAC-SHA256 with
 * the current key, first making a new key when the current one is older
 * than <period_s>. Returns 1, or -1 when no key could be made.
 * enc == 0: finds the key called <name>; a key encrypts for one period and
 * still decrypts during the next one. Returns 1 (current key), 2 (previous
 * key: the caller issues a fresh ticket), 0 (unknown or too old: full
 * handshake) or -1 (cipher set-up failed). Any thread (a mutex guards the
 * keys); contexts with different periods share keys, the shortest period
 * then drives rotation. */
int tls_tickets__step(struct tls_tickets *k, uint32_t period_s, unsigned char *name,
                      unsigned char *iv, EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc);

#endif
