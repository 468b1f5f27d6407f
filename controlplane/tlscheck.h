/* controlplane/tlscheck.h: checks and inspects the TLS material of a config
 * with OpenSSL 3 before the data plane ever sees it: certificates and keys
 * parse, every key matches its certificate, a chain given in certFile is in
 * order, dates are valid, CA bundles and CRLs parse, SPKI pins are 32-byte
 * SHA-256 values. A bundle is the TLS material of a config read from disk at
 * once (the ssl section and the caFile of every https:// backend), validated,
 * fingerprinted, and able to replace the bytes of a snapshot.
 *
 * Nothing here keeps global state; any thread may call any function on
 * distinct objects. Messages name the file and the reason. */
#ifndef LB_TLSCHECK_H
#define LB_TLSCHECK_H

#include "lb.pb-c.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct lb_err;
struct config_ssl;

#define TLSCHECK_MAX_FILE     (4u << 20) /* bytes of one PEM file */
#define TLSCHECK_MAX_SANS     16         /* SANs kept per certificate */
#define TLSCHECK_EXPIRING_MS  (30LL * 24 * 3600 * 1000)
#define TLSCHECK_FINGERPRINTS 65 /* SHA-256 hex digits + NUL */

enum tlscheck_status {
    TLSCHECK_OK = 0,   /* valid for more than 30 days */
    TLSCHECK_EXPIRING, /* valid, but expires within 30 days */
    TLSCHECK_EXPIRED,  /* past not_after (or before not_before) */
};

/* What a leaf certificate says about itself. */
struct tlscheck_cert_info {
    char subject[256];                       /* one line, RFC 2253 ("CN=a,O=b") */
    char sans[TLSCHECK_MAX_SANS][256];       /* "DNS:x", "URI:y", "IP:z"; first n_sans */
    size_t n_sans;                           /* at most TLSCHECK_MAX_SANS */
    char fingerprint[TLSCHECK_FINGERPRINTS]; /* SHA-256 of the DER, lowercase hex */
    int64_t not_before_ms;                   /* Unix milliseconds */
    int64_t not_after_ms;
};

/* Reads file <path> (at most TLSCHECK_MAX_FILE bytes, regular file) into a
 * malloc'd <*data> of <*len> bytes (caller frees). LB_OK, LB_ESYS (message
 * names the path), LB_ENOMEM. */
int tlscheck_read_file(const char *path, uint8_t **data, size_t *len, struct lb_err *err);

/* <name> as configured, resolved against <base_dir> (absolute names, and
 * any name when <base_dir> is NULL or "", stay as they are) into <path>. */
void tlscheck_resolve(const char *base_dir, const char *name, char *path, size_t size);

/* Parses the first certificate of PEM <pem> and fills <info>. LB_OK, or
 * LB_EINVAL "<name>: no PEM certificate" when none parses. */
int tlscheck_cert_info(const char *name, const uint8_t *pem, size_t len,
                       struct tlscheck_cert_info *info, struct lb_err *err);

/* The status of <info> at <now_ms>. */
enum tlscheck_status tlscheck_status_at(const struct tlscheck_cert_info *info, int64_t now_ms);

/* "ok", "expiring" or "expired". */
const char *tlscheck_status_name(enum tlscheck_status s);

/* Which input of tlscheck_pair() a failure is about. */
enum tlscheck_fault {
    TLSCHECK_FAULT_CERT = 0,
    TLSCHECK_FAULT_KEY,
};

/* A certificate file and its key file, each with the config key naming it
 * ("ssl.certFile") for messages. */
struct tlscheck_pair_in {
    const char *cert_label; /* "ssl.certFile", "ssl.certificates[0].certFile" */
    const char *cert_path;  /* as shown in messages */
    const uint8_t *cert_pem;
    size_t cert_len;
    const char *key_label;
    const char *key_path;
    const uint8_t *key_pem;
    size_t key_len;
    const uint8_t *ca_pem; /* caFile contents or NULL: see below */
    size_t ca_len;
    int64_t now_ms; /* for the dates */
};

/* Checks a certificate/key pair: every PEM certificate in cert_pem parses
 * (leaf first), the key parses and matches the leaf, each certificate is
 * issued and signed by the next one (a chain in order), the leaf is within
 * its dates at now_ms; when <ca_pem> holds the issuer of the last
 * certificate of the chain, the chain must verify against it. Fills <info>
 * (may be NULL) with the leaf. LB_OK, or LB_EINVAL with <fault> (may be
 * NULL) naming the file at fault and a message such as "/etc/lb/key.pem
 * does not match ssl.certFile /etc/lb/cert.pem", LB_ENOMEM. */
int tlscheck_pair(const struct tlscheck_pair_in *in, struct tlscheck_cert_info *info,
                  enum tlscheck_fault *fault, struct lb_err *err);

/* At least one certificate in <pem> and all of them parse (a CA bundle).
 * LB_OK or LB_EINVAL "<path>: ...". */
int tlscheck_ca(const char *path, const uint8_t *pem, size_t len, struct lb_err *err);

/* At least one CRL in <pem> and all of them parse. LB_OK or LB_EINVAL. */
int tlscheck_crl(const char *path, const uint8_t *pem, size_t len, struct lb_err *err);

/* Parses an SPKI pin: 64 hex digits or the base64 of 32 bytes, into <out>.
 * LB_OK or LB_EINVAL with the reason. */
int tlscheck_pin_parse(const char *text, uint8_t out[32], struct lb_err *err);

/* ---- bundles ------------------------------------------------------------- */

/* One file of a bundle. */
struct tlscheck_file {
    char *name;    /* as configured ("cert.pem", "/etc/lb/key.pem") */
    char *path;    /* resolved against the base directory */
    uint8_t *data; /* contents */
    size_t len;
    uint8_t sha256[32]; /* of data */
};

/* One served certificate of a bundle: the default first (ssl.certFile), then
 * ssl.certificates[] in order, as the snapshot's Tls.certificates. */
struct tlscheck_bundle_cert {
    const struct tlscheck_file *cert; /* in the bundle's files */
    const struct tlscheck_file *key;
    struct tlscheck_cert_info info;
};

/* The caFile of one https:// backend: the CA bundle that verifies it. */
struct tlscheck_backend_ca {
    char *backend;                  /* backend id */
    struct tlscheck_file file;      /* owned: the file and its contents */
    struct tlscheck_cert_info info; /* its first certificate */
};

struct tlscheck_bundle {
    struct tlscheck_file *files; /* every distinct path of the ssl section, in config order */
    size_t n_files;
    struct tlscheck_bundle_cert *certs;
    size_t n_certs;
    const struct tlscheck_file *ca;          /* NULL = no caFile */
    const struct tlscheck_file *crl;         /* NULL = no crlFile */
    struct tlscheck_backend_ca *backend_cas; /* backends naming a caFile, in config order */
    size_t n_backend_cas;
};

/* Reads every file <ssl> names (paths relative to <base_dir>, NULL = cwd)
 * and checks them all at <now_ms> as tlscheck_pair(), tlscheck_ca() and
 * tlscheck_crl() do; <ssl> NULL (no TLS frontend) gives a bundle without
 * files or certificates. Backend CAs are added by
 * tlscheck_bundle_add_backend_ca(). LB_OK with *<out> owned by the caller
 * (tlscheck_bundle_free()), LB_ESYS (unreadable file), LB_EINVAL (the first
 * problem, naming the file), LB_ENOMEM. */
int tlscheck_bundle_load(const struct config_ssl *ssl, const char *base_dir, int64_t now_ms,
                         struct tlscheck_bundle **out, struct lb_err *err);

/* A new bundle holding copies of <src>'s ssl files and certificates, and no
 * backend CA. LB_OK with *<out> owned by the caller, or LB_ENOMEM. */
int tlscheck_bundle_copy_ssl(const struct tlscheck_bundle *src, struct tlscheck_bundle **out,
                             struct lb_err *err);

/* Reads file <name> (relative to <base_dir>, NULL = cwd), the caFile of
 * backend <backend>, checks it as tlscheck_ca() does and appends it to
 * <b>'s backend CAs. LB_OK; LB_ESYS (unreadable) or LB_EINVAL with a
 * message naming the backend and the file ("backend api caFile:
 * /etc/lb/ca.pem holds no PEM certificate"), LB_ENOMEM; on failure <b> is
 * unchanged. */
int tlscheck_bundle_add_backend_ca(struct tlscheck_bundle *b, const char *backend, const char *name,
                                   const char *base_dir, struct lb_err *err);

/* Appends a copy of <ca> (another bundle's) to <b>'s backend CAs. LB_OK or
 * LB_ENOMEM (<b> unchanged). */
int tlscheck_bundle_copy_backend_ca(struct tlscheck_bundle *b, const struct tlscheck_backend_ca *ca,
                                    struct lb_err *err);

/* The CA of backend <backend> in <b>, or NULL (<b> may be NULL). */
const struct tlscheck_backend_ca *tlscheck_bundle_backend_ca(const struct tlscheck_bundle *b,
                                                             const char *backend);

/* Frees <b>; NULL is a no-op. */
void tlscheck_bundle_free(struct tlscheck_bundle *b);

/* True when <a> and <b> name the same files with the same contents, and the
 * same backends the same CA files with the same contents. */
bool tlscheck_bundle_same(const struct tlscheck_bundle *a, const struct tlscheck_bundle *b);

/* The file of <b> named <name> (as configured), or NULL. */
const struct tlscheck_file *tlscheck_bundle_file(const struct tlscheck_bundle *b, const char *name);

/* Replaces the PEM bytes of every TLS frontend of <snap> (certificates,
 * ca_pem, crl_pem) and the ca_pem of every backend <b> holds a CA for (by
 * backend id) with <b>'s. <snap> must have been built from the
 * config <b> was loaded from, and its byte buffers malloc'd (built or
 * unpacked with the default allocator). LB_OK, LB_EINVAL when the
 * certificates do not line up or a backend carries a CA <b> does not hold,
 * LB_ENOMEM (then <snap> is unchanged). */
int tlscheck_bundle_patch(const struct tlscheck_bundle *b, Lb__V1__Snapshot *snap,
                          struct lb_err *err);

#endif
