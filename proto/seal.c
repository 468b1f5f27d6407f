/* proto/seal.c */
#include "seal.h"

#include "lb_err.h"
#include "lb_hex.h"
#include "lb_prom.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SEAL_VERSION 1
#define OFF_VERSION  4
#define OFF_KIND     5
#define OFF_KEY_ID   6
#define OFF_NONCE    10

static const uint8_t seal_magic[4] = {'L', 'B', 'F', 'S'};

struct seal_key {
    uint32_t id;
    uint8_t key[SEAL_KEY_LEN];
};

struct seal_keyring {
    size_t n;
    struct seal_key keys[SEAL_MAX_KEYS];
};

static const char *const status_names[] = {
    [SEAL_OK] = "ok",
    [SEAL_UNSEALED] = "unsealed",
    [SEAL_WRONG_KIND] = "wrong_kind",
    [SEAL_UNKNOWN_KEY] = "unknown_key",
    [SEAL_AUTH_FAILED] = "auth_failed",
    [SEAL_MALFORMED] = "malformed",
    [SEAL_REPLAY] = "replay",
    [SEAL_UNKNOWN_NODE] = "unknown_node",
};

const char *seal_status_name(enum seal_status s)
{
    return LB_ENUM_NAME(status_names, s, "unknown");
}

/* ---- key files ------------------------------------------------------------------ */

static bool is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r';
}

/* One line without its newline and comment: "ID HEX64" or blanks.
 * Returns 1 for a key, 0 for a blank line, -1 for anything else. */
static int parse_line(const char *p, const char *end, struct seal_key *k)
{
    while (p < end && is_blank(*p))
        p++;
    while (end > p && is_blank(end[-1]))
        end--;
    if (p == end)
        return 0;
    uint64_t id = 0;
    const char *id_start = p;
    for (; p < end && *p >= '0' && *p <= '9'; p++) {
        id = id * 10 + (uint64_t)(*p - '0');
        if (id > UINT32_MAX)
            return -1;
    }
    if (p == id_start || id == 0 || p == end || !is_blank(*p))
        return -1;
    while (p < end && is_blank(*p))
        p++;
    if (end - p != 2 * SEAL_KEY_LEN)
        return -1;
    k->id = (uint32_t)id;
    for (size_t i = 0; i < SEAL_KEY_LEN; i++) {
        int hi = lb_hex_value(p[2 * i]), lo = lb_hex_value(p[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        k->key[i] = (uint8_t)(hi << 4 | lo);
    }
    return 1;
}

int seal_keyring_parse(const char *text, size_t len, const char *name, struct seal_keyring **out,
                       struct lb_err *err)
{
    struct seal_keyring *kr = calloc(1, sizeof(*kr));
    if (kr == NULL)
        return lb_err_set(err, LB_ENOMEM, 0, "feed key file %s: out of memory", name);
    const char *p = text, *end = text + len;
    int rc = LB_OK;
    for (unsigned lineno = 1; p < end && rc == LB_OK; lineno++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = nl != NULL ? nl : end;
        const char *hash = memchr(p, '#', (size_t)(line_end - p));
        struct seal_key k;
        int got = parse_line(p, hash != NULL ? hash : line_end, &k);
        p = nl != NULL ? nl + 1 : end;
        if (got == 0)
            continue;
        if (got < 0) {
            rc = lb_err_set(err, LB_EINVAL, 0,
                            "feed key file %s:%u: want \"ID HEX64\" (a key id 1..4294967295, "
                            "then the key as 64 hex digits)",
                            name, lineno);
            break;
        }
        for (size_t i = 0; i < kr->n && rc == LB_OK; i++)
            if (kr->keys[i].id == k.id)
                rc = lb_err_set(err, LB_EINVAL, 0, "feed key file %s:%u: key id %u appears twice",
                                name, lineno, (unsigned)k.id);
        if (rc == LB_OK && kr->n == SEAL_MAX_KEYS)
            rc = lb_err_set(err, LB_EINVAL, 0, "feed key file %s:%u: more than %d keys", name,
                            lineno, SEAL_MAX_KEYS);
        if (rc == LB_OK)
            kr->keys[kr->n++] = k;
        OPENSSL_cleanse(&k, sizeof(k));
    }
    if (rc == LB_OK && kr->n == 0)
        rc = lb_err_set(err, LB_EINVAL, 0, "feed key file %s holds no key", name);
    if (rc != LB_OK) {
        seal_keyring_free(kr);
        return rc;
    }
    *out = kr;
    return LB_OK;
}

int seal_keyring_load(const char *path, struct seal_keyring **out, struct lb_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd == -1)
        return lb_err_set(err, LB_ESYS, errno, "feed key file %s", path);
    struct stat st;
    int rc = LB_OK;
    if (fstat(fd, &st) == -1)
        rc = lb_err_set(err, LB_ESYS, errno, "feed key file %s", path);
    else if (!S_ISREG(st.st_mode))
        rc = lb_err_set(err, LB_EINVAL, 0, "feed key file %s is not a regular file", path);
    else if (st.st_mode & (S_IRWXG | S_IRWXO))
        rc = lb_err_set(err, LB_EINVAL, 0,
                        "feed key file %s has mode %04o: group or others may use it; "
                        "chmod 600 it",
                        path, (unsigned)(st.st_mode & 07777));
    else if (st.st_size > SEAL_FILE_MAX)
        rc = lb_err_set(err, LB_EINVAL, 0, "feed key file %s is larger than %d bytes", path,
                        SEAL_FILE_MAX);
    char *buf = rc == LB_OK ? malloc(SEAL_FILE_MAX + 1) : NULL;
    if (rc == LB_OK && buf == NULL)
        rc = lb_err_set(err, LB_ENOMEM, 0, "feed key file %s: out of memory", path);
    size_t len = 0;
    while (rc == LB_OK) {
        ssize_t n = read(fd, buf + len, SEAL_FILE_MAX + 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            rc = lb_err_set(err, LB_ESYS, errno, "feed key file %s", path);
        else if (n == 0)
            break;
        else if ((len += (size_t)n) > SEAL_FILE_MAX)
            rc = lb_err_set(err, LB_EINVAL, 0, "feed key file %s is larger than %d bytes", path,
                            SEAL_FILE_MAX);
    }
    close(fd);
    if (rc == LB_OK)
        rc = seal_keyring_parse(buf, len, path, out, err);
    if (buf != NULL) {
        OPENSSL_cleanse(buf, SEAL_FILE_MAX + 1);
        free(buf);
    }
    return rc;
}

void seal_keyring_free(struct seal_keyring *kr)
{
    if (kr == NULL)
        return;
    OPENSSL_cleanse(kr, sizeof(*kr));
    free(kr);
}

size_t seal_keyring_count(const struct seal_keyring *kr)
{
    return kr->n;
}

uint32_t seal_keyring_seal_id(const struct seal_keyring *kr)
{
    return kr->keys[0].id;
}

/* ---- seal and open ----------------------------------------------------------------- */

static void put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* One AES-256-GCM pass over <in>[0..len) into <out> (may be <in>) with <hdr>
 * (SEAL_HEADER bytes: its nonce) as AAD. Sealing writes the tag to <tag>;
 * opening checks it there. Returns 1 on success, 0 on failure. */
static int gcm(bool seal, const uint8_t *key, const uint8_t *hdr, const uint8_t *in, size_t len,
               uint8_t *out, uint8_t *tag)
{
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int n = 0, ok = c != NULL;
    ok = ok && EVP_CipherInit_ex(c, EVP_aes_256_gcm(), NULL, NULL, NULL, seal) == 1;
    ok = ok && EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, SEAL_NONCE_LEN, NULL) == 1;
    ok = ok && EVP_CipherInit_ex(c, NULL, NULL, key, hdr + OFF_NONCE, seal) == 1;
    ok = ok && EVP_CipherUpdate(c, NULL, &n, hdr, SEAL_HEADER) == 1;
    ok = ok && (len == 0 || EVP_CipherUpdate(c, out, &n, in, (int)len) == 1);
    if (!seal)
        ok = ok && EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, SEAL_TAG_LEN, tag) == 1;
    ok = ok && EVP_CipherFinal_ex(c, out + len, &n) == 1;
    if (seal)
        ok = ok && EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, SEAL_TAG_LEN, tag) == 1;
    EVP_CIPHER_CTX_free(c);
    return ok;
}

int seal_seal(const struct seal_keyring *kr, enum seal_kind kind, const uint8_t *plain, size_t len,
              uint8_t *out, struct lb_err *err)
{
    if (len > INT_MAX || len > SIZE_MAX - SEAL_OVERHEAD)
        return lb_err_set(err, LB_EINVAL, 0, "seal: %zu bytes is too large", len);
    const struct seal_key *k = &kr->keys[0];
    memcpy(out, seal_magic, sizeof(seal_magic));
    out[OFF_VERSION] = SEAL_VERSION;
    out[OFF_KIND] = (uint8_t)kind;
    put_u32(out + OFF_KEY_ID, k->id);
    if (RAND_bytes(out + OFF_NONCE, SEAL_NONCE_LEN) != 1)
        return lb_err_set(err, LB_ESYS, 0, "seal: no randomness for a nonce");
    if (!gcm(true, k->key, out, plain, len, out + SEAL_HEADER, out + SEAL_HEADER + len))
        return lb_err_set(err, LB_ESYS, 0, "seal: AES-256-GCM failed");
    return LB_OK;
}

enum seal_status seal_open(const struct seal_keyring *kr, enum seal_kind kind, uint8_t *msg,
                           size_t len, const uint8_t **plain, size_t *plain_len, uint32_t *key_id)
{
    if (len < SEAL_OVERHEAD || memcmp(msg, seal_magic, sizeof(seal_magic)) != 0 ||
        msg[OFF_VERSION] != SEAL_VERSION)
        return SEAL_UNSEALED;
    if (len - SEAL_OVERHEAD > INT_MAX)
        return SEAL_UNSEALED; /* no peer of ours seals that much */
    if (msg[OFF_KIND] != (uint8_t)kind)
        return SEAL_WRONG_KIND;
    uint32_t id = get_u32(msg + OFF_KEY_ID);
    const struct seal_key *k = NULL;
    for (size_t i = 0; i < kr->n && k == NULL; i++)
        if (kr->keys[i].id == id)
            k = &kr->keys[i];
    if (k == NULL)
        return SEAL_UNKNOWN_KEY;
    size_t n = len - SEAL_OVERHEAD;
    uint8_t *body = msg + SEAL_HEADER;
    if (!gcm(false, k->key, msg, body, n, body, body + n)) {
        OPENSSL_cleanse(body, n); /* never leave unauthenticated plaintext behind */
        return SEAL_AUTH_FAILED;
    }
    *plain = body;
    *plain_len = n;
    if (key_id != NULL)
        *key_id = id;
    return SEAL_OK;
}

/* ---- counters and policy ------------------------------------------------------------ */

bool seal_counts_add(struct seal_counts *c, enum seal_status why, int64_t now_ms,
                     uint64_t *suppressed)
{
    if ((unsigned)why >= SEAL_STATUS_COUNT || why == SEAL_OK)
        why = SEAL_MALFORMED;
    c->n[why]++;
    bool first = c->last_log_ms[why] == 0;
    if (!first && now_ms - c->last_log_ms[why] < SEAL_LOG_EVERY_MS)
        return false;
    if (suppressed != NULL)
        *suppressed = first ? 0 : c->n[why] - c->logged_n[why] - 1;
    c->last_log_ms[why] = now_ms > 0 ? now_ms : 1;
    c->logged_n[why] = c->n[why];
    return true;
}

void seal_prom(struct lb_prom *p, const struct seal_counts *c, bool sealed, bool insecure)
{
    lb_prom_family(p, "lb_feed_rejected_total", "counter",
                   "Feed messages refused, by reason (see README, Feed security).");
    for (int i = SEAL_OK + 1; i < SEAL_STATUS_COUNT; i++) {
        struct lb_prom_label l = {"reason", seal_status_name((enum seal_status)i)};
        lb_prom_u64(p, "lb_feed_rejected_total", &l, 1, c->n[i]);
    }
    lb_prom_family(p, "lb_feed_sealed", "gauge", "1 when the feed is sealed with --feed-key.");
    lb_prom_u64(p, "lb_feed_sealed", NULL, 0, sealed ? 1 : 0);
    lb_prom_family(p, "lb_feed_insecure", "gauge",
                   "1 when the feed runs unsealed over tcp:// (--feed-insecure).");
    lb_prom_u64(p, "lb_feed_insecure", NULL, 0, insecure ? 1 : 0);
}

int seal_feed_policy(const char *base, bool have_key, bool insecure, bool *warn, struct lb_err *err)
{
    *warn = false;
    if (have_key && insecure)
        return lb_err_set(err, LB_EINVAL, 0,
                          "--feed-insecure and --feed-key contradict each other; give one");
    if (have_key || base == NULL || strncmp(base, "tcp://", 6) != 0)
        return LB_OK;
    if (!insecure)
        return lb_err_set(err, LB_EINVAL, 0,
                          "the feed %.100s would carry snapshots (TLS private keys included) in "
                          "clear: give --feed-key FILE, or --feed-insecure to accept that",
                          base);
    *warn = true;
    return LB_OK;
}
