/* dataplane/tls_int.h: the TLS objects and helpers shared by tls.c (the
 * per-connection transport), tls_ctx.c (server contexts: certificates, SNI,
 * reloads), tls_client.c (client contexts and their session cache),
 * tls_verify.c (client-certificate rules, peer identity) and tls_pem.c
 * (PEM input); tls_tickets.c takes TLS_REF_FUNCS from it. Not for other
 * modules: they use tls.h and tls_tickets.h. */
#ifndef LB_TLS_INT_H
#define LB_TLS_INT_H

#include "tls.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include <openssl/sha.h>
#include <openssl/ssl.h>

#include "lb_ref.h"

#define TLS_CLIENT_SESSIONS 16  /* resumable sessions kept per client context */
#define TLS_WHY_LEN         160 /* tls_transport_error() text, as lb_err.msg */

struct tls_cert {
    char *name;             /* Certificate.name or "certificates[i]" */
    X509 *leaf;             /* owned */
    EVP_PKEY *key;          /* owned */
    STACK_OF(X509) * chain; /* owned, may be empty */
    int key_type;           /* EVP_PKEY_get_base_id() */
    int64_t not_after;      /* unix seconds */
};

struct tls_name {
    char *name;    /* lowercase; a wildcard keeps its suffix with the dot: ".example.com" */
    size_t cert;   /* index into certs */
    bool wildcard; /* was "*.<suffix>" */
};

struct tls_strlist {
    char **v;
    size_t n;
};

/* Handshake counters of a server or client context: relaxed atomics, bumped
 * by every worker. A server context's are shared, by reference, with the
 * context that replaces it, so a frontend's counters survive reloads. */
struct tls_counters {
    struct lb_ref ref; /* server contexts only */
    _Atomic uint64_t handshakes[TLS_VER_COUNT];
    _Atomic uint64_t full;
    _Atomic uint64_t resumed;
    _Atomic uint64_t errors[TLS_ERR_COUNT];
};

struct tls_ctx {
    struct lb_ref ref;
    SSL_CTX *ssl;                /* owned; its app data points back here */
    struct tls_tickets *tickets; /* one reference */
    uint32_t rotation_s;         /* ticket key period */
    int client_auth;             /* Lb__V1__ClientAuth */
    struct tls_cert *certs;      /* certs[0] is the default */
    size_t n_certs;
    struct tls_name *names; /* in certificate order */
    size_t n_names;
    struct tls_strlist allow_cn, allow_dns, allow_uri;
    unsigned char (*pins)[SHA256_DIGEST_LENGTH];
    size_t n_pins;
    struct tls_counters *cnt; /* one reference */
    bool alpn_h2;             /* ALPN offers "h2" before "http/1.1" */
};

/* A session the client side may resume, per (SNI, verified name). */
struct tls_client_session {
    char *key;         /* "<sni> <verify_name>"; NULL: free slot */
    SSL_SESSION *sess; /* one reference */
    uint64_t stamp;    /* tls_client_ctx.clock at the last store, for eviction */
};

struct tls_client_ctx {
    struct lb_ref ref;
    SSL_CTX *ssl;         /* owned */
    pthread_mutex_t lock; /* guards sessions and clock: every worker stores and looks up */
    struct tls_client_session sessions[TLS_CLIENT_SESSIONS];
    uint64_t clock;
    struct tls_counters cnt;
};

enum tls_conn_state {
    TLS_CONN_HANDSHAKE = 0,
    TLS_CONN_OPEN,
    TLS_CONN_FAILED,
};

/* One TLS connection; t->impl points here. Belongs to the connection's thread. */
struct tls_conn {
    SSL *ssl;                    /* owned; app data points here */
    struct tls_ctx *ctx;         /* server side: one reference; NULL on the client side */
    struct tls_client_ctx *cctx; /* client side: one reference; NULL on the server side */
    struct tls_counters *cnt;    /* the counters of ctx or cctx */
    char *skey;                  /* client side: session cache key, owned */
    char why[TLS_WHY_LEN];       /* tls_transport_error(): "" until something failed */
    enum tls_conn_state state;
    int reason;            /* enum tls_error a callback chose, or -1 */
    bool timed_out;        /* tls_transport_note_timeout() was called */
    bool broken;           /* a fatal error after the handshake */
    bool shut;             /* shutdown_write ran */
    size_t wpending;       /* plaintext bytes of a record OpenSSL still has to send */
    struct tls_peer *peer; /* tls_peer_identity(): made on its first call, owned */
};

/* Defines <name>_ref() and <name>_unref() for struct <name>, whose field
 * `ref` is its struct lb_ref, as lb_ref.h describes them: the last unref
 * calls <free_fn>, an unref of NULL does nothing. One definition for every
 * refcounted TLS object. */
#define TLS_REF_FUNCS(name, free_fn)                                                               \
    struct name *name##_ref(struct name *o)                                                        \
    {                                                                                              \
        lb_ref_get(&o->ref);                                                                       \
        return o;                                                                                  \
    }                                                                                              \
    void name##_unref(struct name *o)                                                              \
    {                                                                                              \
        if (o != NULL && lb_ref_put(&o->ref))                                                      \
            free_fn(o);                                                                            \
    }

/* ---- tls.c -------------------------------------------------------------- */

/* Records <reason> as why the handshake on <ssl> fails, unless a callback
 * already chose one. For OpenSSL callbacks, on the connection's thread. */
static inline void tls__conn_mark(SSL *ssl, enum tls_error reason)
{
    struct tls_conn *c = SSL_get_app_data(ssl);
    if (c != NULL && c->reason < 0)
        c->reason = (int)reason;
}

/* ---- tls_pem.c ---------------------------------------------------------- */

/* pem_password_cb that refuses: keys come from memory and never prompt. */
int tls__no_password(char *buf, int size, int rwflag, void *u);

/* The last OpenSSL reason, to end an error message; empties the queue. */
const char *tls__ssl_reason(void);

/* A read-only memory BIO over <len> bytes at <data>; NULL when <len> is over
 * INT_MAX or memory is short. Caller frees it. */
BIO *tls__pem_bio(const void *data, size_t len);

/* True (and the queue emptied) when the last PEM read failed only because
 * the input ended: what a complete bundle leaves behind. */
bool tls__is_pem_end(void);

/* Adds every PEM certificate of <b> to <store> and, when <names> is not NULL,
 * pushes a copy of its subject there. Returns LB_OK, or LB_EINVAL with
 * "<field>: certificate N refused (...)" or "<field>: not a PEM certificate
 * bundle (...)" (also when <b> holds none). */
int tls__ca_bundle_load(X509_STORE *store, BIO *b, STACK_OF(X509_NAME) * names, const char *field,
                        struct lb_err *err);

/* ---- tls_verify.c ------------------------------------------------------- */

/* Copies the allow-lists and pins of <v> (NULL: none) into <ctx>. Returns
 * LB_OK, LB_EINVAL (a pin that is not 32 bytes) or LB_ENOMEM, filling <err>. */
int tls__verify_load(struct tls_ctx *ctx, const Lb__V1__ClientVerify *v, struct lb_err *err);

/* Frees what tls__verify_load() copied. */
void tls__verify_free(struct tls_ctx *ctx);

/* SSL_CTX_set_cert_verify_callback for server contexts: <arg> is the
 * struct tls_ctx. */
int tls__on_verify(X509_STORE_CTX *xs, void *arg);

/* Marks the connection of <xs> with the reason its chain failed
 * (cert_expired, cert_revoked or verify_failed). */
void tls__mark_chain_error(X509_STORE_CTX *xs);

/* ---- tls_client.c ------------------------------------------------------- */

/* Offers the session stored under <key> on <ssl>, if one may still resume. */
void tls__client_resume(struct tls_client_ctx *cc, SSL *ssl, const char *key);

#endif
