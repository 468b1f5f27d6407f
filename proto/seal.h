/* proto/seal.h: the sealed feed — every message between the control plane
 * and the data planes encrypted and authenticated with a cluster key.
 *
 * A sealed message is
 *   header (SEAL_HEADER bytes, authenticated as AAD, sent in clear):
 *     "LBFS" | format version 1 | kind | key id (u32, big endian) | nonce (12)
 *   ciphertext (as long as the plaintext) | tag (16)
 * sealed with AES-256-GCM under a fresh random 96-bit nonce per seal. The
 * kind is authenticated, so a report cannot be replayed as a snapshot nor a
 * sync reply as a report.
 *
 * A keyring holds 1..SEAL_MAX_KEYS keys: the first one seals, every one opens,
 * so keys rotate without a window in which a peer refuses the feed.
 *
 * Key file: one key per line, "ID HEX64": a key id 1..4294967295 and the
 * 32-byte key as 64 hex digits; '#' starts a comment, blank lines are
 * skipped, ids are unique. The file must be a regular file with no group or
 * other permission bits (0600 or 0400). Error messages name the file and the
 * line, never key bytes.
 *
 * Pure: no globals, no logging. Any thread; a keyring is immutable once
 * made and may be shared between threads for seal and open. */
#ifndef LB_SEAL_H
#define LB_SEAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct lb_err;
struct lb_prom;
struct seal_keyring;

#define SEAL_KEY_LEN   32
#define SEAL_NONCE_LEN 12
#define SEAL_TAG_LEN   16
#define SEAL_HEADER    (4 + 1 + 1 + 4 + SEAL_NONCE_LEN)
#define SEAL_OVERHEAD  (SEAL_HEADER + SEAL_TAG_LEN) /* sealed length - plaintext length */
#define SEAL_MAX_KEYS  16
#define SEAL_FILE_MAX  (64 * 1024) /* key files larger than this are refused */

/* What a message is; authenticated with it. */
enum seal_kind {
    SEAL_KIND_SNAPSHOT = 1,     /* PUB: an encoded lb.v1.Snapshot */
    SEAL_KIND_SYNC_REQUEST = 2, /* REQ: an encoded SyncRequest */
    SEAL_KIND_SYNC_REPLY = 3,   /* REP: an encoded SyncReply */
    SEAL_KIND_REPORT = 4,       /* PUSH: an encoded Report */
};

/* Why a message was refused; also the label of lb_feed_rejected_total. */
enum seal_status {
    SEAL_OK = 0,
    SEAL_UNSEALED,     /* too short, not our magic or not format version 1 */
    SEAL_WRONG_KIND,   /* sealed, but as another kind of message */
    SEAL_UNKNOWN_KEY,  /* sealed with a key id this keyring does not hold */
    SEAL_AUTH_FAILED,  /* the tag does not verify: wrong key or altered bytes */
    SEAL_MALFORMED,    /* (callers) opened, but the plaintext does not decode */
    SEAL_REPLAY,       /* (callers) authentic but older than what was already seen */
    SEAL_UNKNOWN_NODE, /* (callers) from a node id the control plane does not allow */
    SEAL_STATUS_COUNT
};

/* "ok", "unsealed", "wrong_kind", "unknown_key", "auth_failed", "malformed",
 * "replay", "unknown_node"; "unknown" out of range. */
const char *seal_status_name(enum seal_status s);

/* Parses key-file text <text>[0..len) (need not be NUL-terminated); <name>
 * names it in errors. Returns LB_OK with *out set (caller owns it;
 * seal_keyring_free()), or LB_EINVAL (bad line, duplicate id, no key, more
 * than SEAL_MAX_KEYS keys) or LB_ENOMEM with <err> filled. */
int seal_keyring_parse(const char *text, size_t len, const char *name, struct seal_keyring **out,
                       struct lb_err *err);

/* Reads and parses the key file at <path> after checking that it is a
 * regular file of at most SEAL_FILE_MAX bytes whose mode has no group or
 * other bits. Returns as seal_keyring_parse(), or LB_ESYS (cannot open or
 * read) and LB_EINVAL (permissions, naming the file and the fix). */
int seal_keyring_load(const char *path, struct seal_keyring **out, struct lb_err *err);

/* Wipes the keys and frees <kr>; NULL is a no-op. */
void seal_keyring_free(struct seal_keyring *kr);

/* Keys held (1..SEAL_MAX_KEYS), and the id of the first (the sealing) one. */
size_t seal_keyring_count(const struct seal_keyring *kr);
uint32_t seal_keyring_seal_id(const struct seal_keyring *kr);

/* Seals <plain>[0..len) as <kind> with the first key into <out>, which has
 * room for len + SEAL_OVERHEAD bytes (<out> and <plain> must not overlap).
 * Returns LB_OK, LB_EINVAL (len above SIZE_MAX - SEAL_OVERHEAD or INT_MAX)
 * or LB_ESYS (no randomness, cipher failure) with <err> filled. */
int seal_seal(const struct seal_keyring *kr, enum seal_kind kind, const uint8_t *plain, size_t len,
              uint8_t *out, struct lb_err *err);

/* Opens the sealed message <msg>[0..len) of <kind> in place, allocating
 * nothing: on SEAL_OK the plaintext is at *plain (inside <msg>), *plain_len
 * bytes long, and *key_id (may be NULL) tells which key opened it. On any
 * other status <msg> holds nothing of the plaintext (it is wiped) and the
 * outputs are left alone. Header checks come before any cryptography. */
enum seal_status seal_open(const struct seal_keyring *kr, enum seal_kind kind, uint8_t *msg,
                           size_t len, const uint8_t **plain, size_t *plain_len, uint32_t *key_id);

/* ---- the feed's refusal counters and start-up policy ------------------------- */

#define SEAL_LOG_EVERY_MS 10000 /* one refusal log line per reason per this long */

/* Refusals per reason; caller's memory, zero-initialised; one thread. */
struct seal_counts {
    uint64_t n[SEAL_STATUS_COUNT];          /* refused messages per reason (n[SEAL_OK] unused) */
    int64_t last_log_ms[SEAL_STATUS_COUNT]; /* when that reason was last logged; 0 never */
    uint64_t logged_n[SEAL_STATUS_COUNT];   /* n[] at that time */
};

/* Counts one refusal for <why> at <now_ms>. Returns true when the caller
 * should log it (the first one, then at most once per SEAL_LOG_EVERY_MS per
 * reason), with *suppressed (may be NULL) set to the refusals not logged
 * since the last line. */
bool seal_counts_add(struct seal_counts *c, enum seal_status why, int64_t now_ms,
                     uint64_t *suppressed);

/* Writes lb_feed_rejected_total{reason=...} (every reason, zeros included),
 * lb_feed_sealed and lb_feed_insecure (gauges, 0 or 1) into <p>. */
void seal_prom(struct lb_prom *p, const struct seal_counts *c, bool sealed, bool insecure);

/* The start-up rule for a feed on endpoint base <base>: sealed when a key is
 * given (<have_key>); without one, ipc:// runs unsealed as it always did and
 * tcp:// is refused unless <insecure> (--feed-insecure) accepts it, which sets
 * *warn. --feed-insecure with a key is refused as contradictory. Returns
 * LB_OK or LB_EINVAL with <err> saying which flag to give. */
int seal_feed_policy(const char *base, bool have_key, bool insecure, bool *warn,
                     struct lb_err *err);

#endif
