/* dataplane/tls_tickets.c: two ticket keys (current and previous) under a
 * mutex; rotation is lazy, done by whichever handshake first sees the
 * current key expire, so no timer is needed. */
#include "tls_tickets.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include "lb_assert.h"
#include "lb_err.h"
#include "lb_ref.h"
#include "tls_int.h"

struct ticket_key {
    bool valid;
    uint64_t created; /* clock seconds */
    unsigned char name[TLS_TICKETS_NAME_LEN];
    unsigned char aes[32];
    unsigned char hmac[32];
};

struct tls_tickets {
    struct lb_ref ref;
    tls_tickets_clock_fn clock;
    void *clock_arg;
    pthread_mutex_t lock;   /* guards cur, prev, generation */
    struct ticket_key cur;  /* encrypts and decrypts */
    struct ticket_key prev; /* decrypts only */
    uint64_t generation;
};

static uint64_t monotonic_s(void *arg)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec;
}

struct tls_tickets *tls_tickets_new(tls_tickets_clock_fn clock, void *clock_arg, struct lb_err *err)
{
    struct tls_tickets *k = calloc(1, sizeof(*k));
    if (k == NULL) {
        lb_err_set(err, LB_ENOMEM, 0, "out of memory for the ticket key store");
        return NULL;
    }
    lb_ref_init(&k->ref);
    k->clock = clock ? clock : monotonic_s;
    k->clock_arg = clock_arg;
    pthread_mutex_init(&k->lock, NULL);
    return k;
}

static void tickets_free(struct tls_tickets *k)
{
    pthread_mutex_destroy(&k->lock);
    OPENSSL_cleanse(k, sizeof(*k));
    free(k);
}

TLS_REF_FUNCS(tls_tickets, tickets_free)

uint64_t tls_tickets_generation(struct tls_tickets *k)
{
    pthread_mutex_lock(&k->lock);
    uint64_t g = k->generation;
    pthread_mutex_unlock(&k->lock);
    return g;
}

/* ---- export and import: a version byte, then the fields in host order (the
 * importer runs on the same host) ---------------------------------------------- */

#define EXPORT_VERSION 1

static uint8_t *put(uint8_t *p, const void *v, size_t n)
{
    memcpy(p, v, n);
    return p + n;
}

static const uint8_t *get(const uint8_t *p, void *v, size_t n)
{
    memcpy(v, p, n);
    return p + n;
}

void tls_tickets_export(struct tls_tickets *k, uint8_t out[TLS_TICKETS_EXPORT_LEN])
{
    uint64_t now = k->clock(k->clock_arg);
    uint8_t *p = out;
    *p++ = EXPORT_VERSION;
    pthread_mutex_lock(&k->lock);
    p = put(p, &k->generation, 8);
    const struct ticket_key *slots[2] = {&k->cur, &k->prev};
    for (int i = 0; i < 2; i++) {
        const struct ticket_key *key = slots[i];
        uint64_t age = key->valid && now > key->created ? now - key->created : 0;
        *p++ = key->valid ? 1 : 0;
        p = put(p, &age, 8);
        p = put(p, key->name, sizeof(key->name));
        p = put(p, key->aes, sizeof(key->aes));
        p = put(p, key->hmac, sizeof(key->hmac));
    }
    pthread_mutex_unlock(&k->lock);
    LB_ASSERT(p == out + TLS_TICKETS_EXPORT_LEN);
}

int tls_tickets_import(struct tls_tickets *k, const uint8_t *buf, size_t len, struct lb_err *err)
{
    if (len != TLS_TICKETS_EXPORT_LEN || buf[0] != EXPORT_VERSION)
        return lb_err_set(err, LB_EINVAL, 0, "ticket keys: %zu bytes of version %u, want %u of %u",
                          len, len ? buf[0] : 0, (unsigned)TLS_TICKETS_EXPORT_LEN, EXPORT_VERSION);
    uint64_t now = k->clock(k->clock_arg);
    struct ticket_key keys[2];
    uint64_t generation;
    const uint8_t *p = get(buf + 1, &generation, 8);
    for (int i = 0; i < 2; i++) {
        uint64_t age;
        keys[i].valid = *p++ != 0;
        p = get(p, &age, 8);
        p = get(p, keys[i].name, sizeof(keys[i].name));
        p = get(p, keys[i].aes, sizeof(keys[i].aes));
        p = get(p, keys[i].hmac, sizeof(keys[i].hmac));
        /* a clock younger than the key (another boot) counts it as new */
        keys[i].created = now > age ? now - age : 0;
    }
    pthread_mutex_lock(&k->lock);
    k->cur = keys[0];
    k->prev = keys[1];
    k->generation = generation;
    pthread_mutex_unlock(&k->lock);
    OPENSSL_cleanse(keys, sizeof(keys));
    return LB_OK;
}

/* Fetched once: an EVP_aes_256_cbc() handed to EncryptInit would be looked
 * up again, under OpenSSL's locks, for every ticket of every handshake. */
static EVP_CIPHER *ticket_cipher;
static pthread_once_t ticket_cipher_once = PTHREAD_ONCE_INIT;

static void ticket_cipher_fetch(void)
{
    ticket_cipher = EVP_CIPHER_fetch(NULL, "AES-256-CBC", NULL);
}

static const EVP_CIPHER *cipher(void)
{
    pthread_once(&ticket_cipher_once, ticket_cipher_fetch);
    return ticket_cipher != NULL ? ticket_cipher : EVP_aes_256_cbc();
}

static int key_setup(const struct ticket_key *key, unsigned char *iv, EVP_CIPHER_CTX *cctx,
                     EVP_MAC_CTX *hctx, int enc)
{
    OSSL_PARAM params[3];
    params[0] =
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, (void *)key->hmac, sizeof(key->hmac));
    params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0);
    params[2] = OSSL_PARAM_construct_end();
    if (EVP_MAC_CTX_set_params(hctx, params) != 1)
        return -1;
    int ok = enc ? EVP_EncryptInit_ex2(cctx, cipher(), key->aes, iv, NULL)
                 : EVP_DecryptInit_ex2(cctx, cipher(), key->aes, iv, NULL);
    return ok == 1 ? 0 : -1;
}

static int key_make(struct ticket_key *key, uint64_t now)
{
    if (RAND_bytes(key->name, sizeof(key->name)) != 1 ||
        RAND_priv_bytes(key->aes, sizeof(key->aes)) != 1 ||
        RAND_priv_bytes(key->hmac, sizeof(key->hmac)) != 1)
        return -1;
    key->created = now;
    key->valid = true;
    return 0;
}

int tls_tickets__step(struct tls_tickets *k, uint32_t period_s, unsigned char *name,
                      unsigned char *iv, EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
    uint64_t now = k->clock(k->clock_arg);
    int rc;
    pthread_mutex_lock(&k->lock);
    if (enc) {
        rc = -1;
        if (!k->cur.valid || now - k->cur.created >= period_s) {
            struct ticket_key fresh;
            if (key_make(&fresh, now) != 0)
                goto out;
            k->prev = k->cur;
            k->cur = fresh;
            k->generation++;
            OPENSSL_cleanse(&fresh, sizeof(fresh));
        }
        if (RAND_bytes(iv, EVP_CIPHER_get_iv_length(cipher())) != 1)
            goto out;
        memcpy(name, k->cur.name, TLS_TICKETS_NAME_LEN);
        rc = key_setup(&k->cur, iv, cctx, hctx, 1) == 0 ? 1 : -1;
        goto out;
    }
    /* a key encrypts during [created, created + period) and decrypts for one
     * more period after that */
    rc = 0;
    const struct ticket_key *slots[2] = {&k->cur, &k->prev};
    for (int i = 0; i < 2; i++) {
        const struct ticket_key *key = slots[i];
        if (!key->valid || memcmp(key->name, name, TLS_TICKETS_NAME_LEN) != 0)
            continue;
        uint64_t age = now - key->created;
        if (age >= 2 * (uint64_t)period_s)
            break;
        if (key_setup(key, iv, cctx, hctx, 0) != 0) {
            rc = -1;
            break;
        }
        rc = age < period_s ? 1 : 2;
        break;
    }
out:
    pthread_mutex_unlock(&k->lock);
    return rc;
}
