/* controlplane/tlscheck.c: OpenSSL 3 parsing of the TLS files (see tlscheck.h).
 * Every check works on the bytes already read, so that what is checked is
 * exactly what is published. */
#include "tlscheck.h"

#include "config.h"
#include "lb_err.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_CHAIN 16

int tlscheck_read_file(const char *path, uint8_t **data, size_t *len, struct lb_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd == -1)
        return lb_err_set(err, LB_ESYS, errno, "cannot read %s", path);
    struct stat sb;
    if (fstat(fd, &sb) == -1) {
        int e = errno;
        close(fd);
        return lb_err_set(err, LB_ESYS, e, "cannot read %s", path);
    }
    if (!S_ISREG(sb.st_mode) || sb.st_size > (off_t)TLSCHECK_MAX_FILE) {
        close(fd);
        return lb_err_set(err, LB_ESYS, 0, "%s is not a regular file of at most 4 MiB", path);
    }
    size_t size = (size_t)sb.st_size;
    uint8_t *buf = malloc(size + 1);
    if (buf == NULL) {
        close(fd);
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory reading %s", path);
    }
    size_t got = 0;
    while (got < size) {
        ssize_t r = read(fd, buf + got, size - got);
        if (r == -1 && errno == EINTR)
            continue;
        if (r <= 0) {
            int e = r == -1 ? errno : 0;
            close(fd);
            free(buf);
            if (e == 0)
                return lb_err_set(err, LB_ESYS, 0, "%s shrank while being read", path);
            return lb_err_set(err, LB_ESYS, e, "cannot read %s", path);
        }
        got += (size_t)r;
    }
    close(fd);
    buf[size] = '\0';
    *data = buf;
    *len = size;
    return LB_OK;
}

/* Every certificate of <pem>, up to <max>; the count, or -1 when a PEM
 * block does not parse. */
static int load_certs(const uint8_t *pem, size_t len, X509 **out, int max)
{
    BIO *bio = BIO_new_mem_buf(pem, len > INT32_MAX ? INT32_MAX : (int)len);
    if (bio == NULL)
        return -1;
    int n = 0;
    for (;;) {
        X509 *x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        if (x == NULL)
            break;
        if (n == max) {
            X509_free(x);
            break;
        }
        out[n++] = x;
    }
    /* End of input is PEM_R_NO_START_LINE; anything else is a broken block. */
    unsigned long e = ERR_peek_last_error();
    bool clean = e == 0 || ERR_GET_REASON(e) == PEM_R_NO_START_LINE;
    ERR_clear_error();
    BIO_free(bio);
    if (!clean) {
        for (int i = 0; i < n; i++)
            X509_free(out[i]);
        return -1;
    }
    return n;
}

static void free_certs(X509 **c, int n)
{
    for (int i = 0; i < n; i++)
        X509_free(c[i]);
}

static int64_t asn1_time_ms(const ASN1_TIME *t)
{
    struct tm tm;
    if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1)
        return 0;
    return (int64_t)timegm(&tm) * 1000;
}

static void fill_info(X509 *x, struct tlscheck_cert_info *info)
{
    memset(info, 0, sizeof(*info));
    BIO *b = BIO_new(BIO_s_mem());
    if (b != NULL) {
        X509_NAME_print_ex(b, X509_get_subject_name(x), 0, XN_FLAG_RFC2253);
        int n = BIO_read(b, info->subject, (int)sizeof(info->subject) - 1);
        info->subject[n > 0 ? n : 0] = '\0';
        BIO_free(b);
    }
    GENERAL_NAMES *names = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    for (int i = 0; names != NULL && i < sk_GENERAL_NAME_num(names); i++) {
        if (info->n_sans == TLSCHECK_MAX_SANS)
            break;
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
        char *out = info->sans[info->n_sans];
        size_t size = sizeof(info->sans[0]);
        if (g->type == GEN_DNS || g->type == GEN_URI) {
            const ASN1_IA5STRING *s =
                g->type == GEN_DNS ? g->d.dNSName : g->d.uniformResourceIdentifier;
            snprintf(out, size, "%s:%.*s", g->type == GEN_DNS ? "DNS" : "URI", s->length,
                     (const char *)s->data);
        } else if (g->type == GEN_IPADD && g->d.iPAddress->length == 4) {
            const unsigned char *a = g->d.iPAddress->data;
            snprintf(out, size, "IP:%u.%u.%u.%u", a[0], a[1], a[2], a[3]);
        } else if (g->type == GEN_IPADD && g->d.iPAddress->length == 16) {
            const unsigned char *a = g->d.iPAddress->data;
            size_t off = (size_t)snprintf(out, size, "IP:");
            for (int k = 0; k < 16 && off < size; k += 2)
                off += (size_t)snprintf(out + off, size - off, "%s%x", k ? ":" : "",
                                        (unsigned)(a[k] << 8 | a[k + 1]));
        } else {
            continue;
        }
        info->n_sans++;
    }
    GENERAL_NAMES_free(names);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (X509_digest(x, EVP_sha256(), md, &mdlen) == 1 && mdlen == 32)
        for (unsigned i = 0; i < 32; i++)
            snprintf(info->fingerprint + 2 * i, 3, "%02x", md[i]);
    info->not_before_ms = asn1_time_ms(X509_get0_notBefore(x));
    info->not_after_ms = asn1_time_ms(X509_get0_notAfter(x));
}

int tlscheck_cert_info(const char *name, const uint8_t *pem, size_t len,
                       struct tlscheck_cert_info *info, struct lb_err *err)
{
    X509 *c[1];
    int n = load_certs(pem, len, c, 1);
    if (n <= 0)
        return lb_err_set(err, LB_EINVAL, 0, "%s: no PEM certificate", name);
    fill_info(c[0], info);
    X509_free(c[0]);
    return LB_OK;
}

enum tlscheck_status tlscheck_status_at(const struct tlscheck_cert_info *info, int64_t now_ms)
{
    if (now_ms >= info->not_after_ms || now_ms < info->not_before_ms)
        return TLSCHECK_EXPIRED;
    if (info->not_after_ms - now_ms <= TLSCHECK_EXPIRING_MS)
        return TLSCHECK_EXPIRING;
    return TLSCHECK_OK;
}

const char *tlscheck_status_name(enum tlscheck_status s)
{
    return s == TLSCHECK_EXPIRED ? "expired" : s == TLSCHECK_EXPIRING ? "expiring" : "ok";
}

static void format_date(int64_t ms, char *buf, size_t size)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, size, "%Y-%m-%d %H:%M:%S UTC", &tm);
}

static int fail(struct lb_err *err, enum tlscheck_fault *fault, enum tlscheck_fault which, int code,
                const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static int fail(struct lb_err *err, enum tlscheck_fault *fault, enum tlscheck_fault which, int code,
                const char *fmt, ...)
{
    if (fault != NULL)
        *fault = which;
    char msg[sizeof(err->msg)];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return lb_err_set(err, code, 0, "%s", msg);
}

/* When <ca_pem> holds a certificate named as the issuer of the chain's last
 * one, the chain must verify against it (dates checked at <now_ms>): a
 * certificate claiming that CA must really be signed by it. */
static int check_against_ca(const struct tlscheck_pair_in *in, X509 **chain, int n,
                            enum tlscheck_fault *fault, struct lb_err *err)
{
    X509 *ca[MAX_CHAIN * 4];
    int nca = load_certs(in->ca_pem, in->ca_len, ca, (int)(sizeof(ca) / sizeof(ca[0])));
    if (nca <= 0)
        return LB_OK; /* tlscheck_ca() reports a broken bundle on its own */
    bool issuer_known = false;
    for (int i = 0; i < nca && !issuer_known; i++)
        issuer_known =
            X509_NAME_cmp(X509_get_subject_name(ca[i]), X509_get_issuer_name(chain[n - 1])) == 0;
    int rc = LB_OK;
    if (issuer_known) {
        X509_STORE *store = X509_STORE_new();
        X509_STORE_CTX *ctx = X509_STORE_CTX_new();
        STACK_OF(X509) *untrusted = sk_X509_new_null();
        bool ok = store && ctx && untrusted;
        for (int i = 0; ok && i < nca; i++)
            ok = X509_STORE_add_cert(store, ca[i]) == 1;
        for (int i = 1; ok && i < n; i++)
            ok = sk_X509_push(untrusted, chain[i]) > 0;
        if (!ok) {
            rc = lb_err_set(err, LB_ENOMEM, 0, "out of memory checking %s", in->cert_path);
        } else if (X509_STORE_CTX_init(ctx, store, chain[0], untrusted) != 1) {
            rc = lb_err_set(err, LB_ENOMEM, 0, "out of memory checking %s", in->cert_path);
        } else {
            X509_STORE_CTX_set_time(ctx, 0, (time_t)(in->now_ms / 1000));
            if (X509_verify_cert(ctx) != 1)
                rc = fail(err, fault, TLSCHECK_FAULT_CERT, LB_EINVAL,
                          "%s does not verify against caFile, which holds its issuer: %s",
                          in->cert_path,
                          X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx)));
        }
        sk_X509_free(untrusted);
        X509_STORE_CTX_free(ctx);
        X509_STORE_free(store);
    }
    free_certs(ca, nca);
    ERR_clear_error();
    return rc;
}

int tlscheck_pair(const struct tlscheck_pair_in *in, struct tlscheck_cert_info *info,
                  enum tlscheck_fault *fault, struct lb_err *err)
{
    X509 *chain[MAX_CHAIN];
    int n = load_certs(in->cert_pem, in->cert_len, chain, MAX_CHAIN);
    if (n < 0)
        return fail(err, fault, TLSCHECK_FAULT_CERT, LB_EINVAL,
                    "%s holds a PEM block that is not a valid certificate", in->cert_path);
    if (n == 0)
        return fail(err, fault, TLSCHECK_FAULT_CERT, LB_EINVAL, "%s holds no PEM certificate",
                    in->cert_path);
    int rc = LB_OK;
    BIO *kb = BIO_new_mem_buf(in->key_pem, in->key_len > INT32_MAX ? INT32_MAX : (int)in->key_len);
    EVP_PKEY *key = kb ? PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL) : NULL;
    BIO_free(kb);
    ERR_clear_error();
    if (key == NULL) {
        rc = fail(err, fault, TLSCHECK_FAULT_KEY, LB_EINVAL,
                  "%s holds no unencrypted PEM private key", in->key_path);
        goto out;
    }
    if (X509_check_private_key(chain[0], key) != 1) {
        ERR_clear_error();
        rc = fail(err, fault, TLSCHECK_FAULT_KEY, LB_EINVAL, "%s does not match %s %s",
                  in->key_path, in->cert_label, in->cert_path);
        goto out;
    }
    for (int i = 0; i + 1 < n; i++) {
        EVP_PKEY *up = X509_get0_pubkey(chain[i + 1]);
        if (X509_check_issued(chain[i + 1], chain[i]) != X509_V_OK || up == NULL ||
            X509_verify(chain[i], up) != 1) {
            ERR_clear_error();
            rc = fail(err, fault, TLSCHECK_FAULT_CERT, LB_EINVAL,
                      "%s: certificate %d is not issued by certificate %d; put the leaf "
                      "first, then each issuer",
                      in->cert_path, i + 1, i + 2);
            goto out;
        }
    }
    struct tlscheck_cert_info leaf;
    fill_info(chain[0], &leaf);
    char date[40];
    if (in->now_ms >= leaf.not_after_ms) {
        format_date(leaf.not_after_ms, date, sizeof(date));
        rc = fail(err, fault, TLSCHECK_FAULT_CERT, LB_EINVAL, "%s expired on %s", in->cert_path,
                  date);
        goto out;
    }
    if (in->now_ms < leaf.not_before_ms) {
        format_date(leaf.not_before_ms, date, sizeof(date));
        rc = fail(err, fault, TLSCHECK_FAULT_CERT, LB_EINVAL, "%s is not valid before %s",
                  in->cert_path, date);
        goto out;
    }
    if (in->ca_pem != NULL && in->ca_len > 0 &&
        (rc = check_against_ca(in, chain, n, fault, err)) != LB_OK)
        goto out;
    if (info != NULL)
        *info = leaf;
out:
    EVP_PKEY_free(key);
    free_certs(chain, n);
    return rc;
}

int tlscheck_ca(const char *path, const uint8_t *pem, size_t len, struct lb_err *err)
{
    X509 *c[MAX_CHAIN * 4];
    int n = load_certs(pem, len, c, (int)(sizeof(c) / sizeof(c[0])));
    if (n < 0)
        return lb_err_set(err, LB_EINVAL, 0, "%s holds a PEM block that is not a valid certificate",
                          path);
    free_certs(c, n);
    if (n == 0)
        return lb_err_set(err, LB_EINVAL, 0, "%s holds no PEM certificate", path);
    return LB_OK;
}

int tlscheck_crl(const char *path, const uint8_t *pem, size_t len, struct lb_err *err)
{
    BIO *bio = BIO_new_mem_buf(pem, len > INT32_MAX ? INT32_MAX : (int)len);
    if (bio == NULL)
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory checking %s", path);
    int n = 0;
    X509_CRL *crl;
    while ((crl = PEM_read_bio_X509_CRL(bio, NULL, NULL, NULL)) != NULL) {
        X509_CRL_free(crl);
        n++;
    }
    unsigned long e = ERR_peek_last_error();
    bool clean = e == 0 || ERR_GET_REASON(e) == PEM_R_NO_START_LINE;
    ERR_clear_error();
    BIO_free(bio);
    if (!clean)
        return lb_err_set(err, LB_EINVAL, 0, "%s holds a PEM block that is not a valid CRL", path);
    if (n == 0)
        return lb_err_set(err, LB_EINVAL, 0, "%s holds no PEM CRL", path);
    return LB_OK;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

int tlscheck_pin_parse(const char *text, uint8_t out[32], struct lb_err *err)
{
    size_t len = strlen(text);
    if (len == 64) {
        bool hex = true;
        for (size_t i = 0; i < 64 && hex; i++)
            hex = hexval((unsigned char)text[i]) >= 0;
        if (hex) {
            for (size_t i = 0; i < 32; i++)
                out[i] = (uint8_t)(hexval((unsigned char)text[2 * i]) << 4 |
                                   hexval((unsigned char)text[2 * i + 1]));
            return LB_OK;
        }
    }
    /* The base64 of 32 bytes is 44 characters ending in one '='. */
    if (len == 44 && text[43] == '=' && text[42] != '=') {
        unsigned char buf[48];
        int n = EVP_DecodeBlock(buf, (const unsigned char *)text, 44);
        if (n == 33) { /* EVP_DecodeBlock counts the padding as a zero byte */
            memcpy(out, buf, 32);
            return LB_OK;
        }
    }
    return lb_err_set(err, LB_EINVAL, 0,
                      "\"%.80s\" is not a SHA-256 pin (64 hex digits or 44 base64 characters)",
                      text);
}

/* ---- bundles ------------------------------------------------------------- */

void tlscheck_bundle_free(struct tlscheck_bundle *b)
{
    if (b == NULL)
        return;
    for (size_t i = 0; i < b->n_files; i++) {
        free(b->files[i].name);
        free(b->files[i].path);
        free(b->files[i].data);
    }
    free(b->files);
    free(b->certs);
    for (size_t i = 0; i < b->n_backend_cas; i++) {
        free(b->backend_cas[i].backend);
        free(b->backend_cas[i].file.name);
        free(b->backend_cas[i].file.path);
        free(b->backend_cas[i].file.data);
    }
    free(b->backend_cas);
    free(b);
}

const struct tlscheck_file *tlscheck_bundle_file(const struct tlscheck_bundle *b, const char *name)
{
    for (size_t i = 0; b != NULL && name != NULL && i < b->n_files; i++)
        if (strcmp(b->files[i].name, name) == 0)
            return &b->files[i];
    return NULL;
}

void tlscheck_resolve(const char *base_dir, const char *name, char *path, size_t size)
{
    if (name[0] == '/' || base_dir == NULL || base_dir[0] == '\0')
        snprintf(path, size, "%s", name);
    else
        snprintf(path, size, "%s/%s", base_dir, name);
}

static void file_sha256(struct tlscheck_file *f)
{
    unsigned int mdlen = 0;
    EVP_Digest(f->data, f->len, f->sha256, &mdlen, EVP_sha256(), NULL);
}

/* Index of <name> among the bundle's files, read on first use; -1 on error. */
static ssize_t bundle_add(struct tlscheck_bundle *b, size_t cap, const char *base_dir,
                          const char *name, struct lb_err *err)
{
    for (size_t i = 0; i < b->n_files; i++)
        if (strcmp(b->files[i].name, name) == 0)
            return (ssize_t)i;
    if (b->n_files == cap) {
        lb_err_set(err, LB_ENOMEM, 0, "too many TLS files");
        return -1;
    }
    struct tlscheck_file *f = &b->files[b->n_files];
    memset(f, 0, sizeof(*f));
    char path[4096];
    tlscheck_resolve(base_dir, name, path, sizeof(path));
    f->name = strdup(name);
    f->path = strdup(path);
    if (f->name == NULL || f->path == NULL) {
        free(f->name);
        free(f->path);
        lb_err_set(err, LB_ENOMEM, 0, "out of memory");
        return -1;
    }
    if (tlscheck_read_file(path, &f->data, &f->len, err) != LB_OK) {
        free(f->name);
        free(f->path);
        return -1;
    }
    file_sha256(f);
    return (ssize_t)b->n_files++;
}

int tlscheck_bundle_load(const struct config_ssl *ssl, const char *base_dir, int64_t now_ms,
                         struct tlscheck_bundle **out, struct lb_err *err)
{
    if (ssl == NULL) {
        if ((*out = calloc(1, sizeof(**out))) == NULL)
            return lb_err_set(err, LB_ENOMEM, 0, "out of memory");
        return LB_OK;
    }
    size_t ncerts = ssl->n_certificates + (ssl->cert_file[0] ? 1 : 0);
    size_t cap = 2 * ncerts + 2;
    struct tlscheck_bundle *b = calloc(1, sizeof(*b));
    if (b == NULL || (b->files = calloc(cap, sizeof(*b->files))) == NULL ||
        (b->certs = calloc(ncerts ? ncerts : 1, sizeof(*b->certs))) == NULL) {
        tlscheck_bundle_free(b);
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory");
    }
    /* Indexes first: pointers into files[] are only taken once it is full. */
    struct slot {
        ssize_t cert, key;
        char labels[2][64];
    } *slots = calloc(ncerts ? ncerts : 1, sizeof(*slots));
    if (slots == NULL) {
        tlscheck_bundle_free(b);
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory");
    }
    ssize_t ca_ix = -1, crl_ix = -1;
    size_t k = 0;
    if (ssl->cert_file[0]) {
        snprintf(slots[k].labels[0], sizeof(slots[k].labels[0]), "ssl.certFile");
        snprintf(slots[k].labels[1], sizeof(slots[k].labels[1]), "ssl.keyFile");
        if ((slots[k].cert = bundle_add(b, cap, base_dir, ssl->cert_file, err)) < 0 ||
            (slots[k].key = bundle_add(b, cap, base_dir, ssl->key_file, err)) < 0)
            goto fail;
        k++;
    }
    for (size_t i = 0; i < ssl->n_certificates; i++, k++) {
        snprintf(slots[k].labels[0], sizeof(slots[k].labels[0]), "ssl.certificates[%zu].certFile",
                 i);
        snprintf(slots[k].labels[1], sizeof(slots[k].labels[1]), "ssl.certificates[%zu].keyFile",
                 i);
        if ((slots[k].cert = bundle_add(b, cap, base_dir, ssl->certificates[i].cert_file, err)) <
                0 ||
            (slots[k].key = bundle_add(b, cap, base_dir, ssl->certificates[i].key_file, err)) < 0)
            goto fail;
    }
    if (ssl->ca_file[0] && (ca_ix = bundle_add(b, cap, base_dir, ssl->ca_file, err)) < 0)
        goto fail;
    if (ssl->crl_file[0] && (crl_ix = bundle_add(b, cap, base_dir, ssl->crl_file, err)) < 0)
        goto fail;
    b->ca = ca_ix >= 0 ? &b->files[ca_ix] : NULL;
    b->crl = crl_ix >= 0 ? &b->files[crl_ix] : NULL;
    if (b->ca != NULL && tlscheck_ca(b->ca->path, b->ca->data, b->ca->len, err) != LB_OK)
        goto fail;
    if (b->crl != NULL && tlscheck_crl(b->crl->path, b->crl->data, b->crl->len, err) != LB_OK)
        goto fail;
    for (size_t i = 0; i < ncerts; i++) {
        const struct tlscheck_file *c = &b->files[slots[i].cert], *key = &b->files[slots[i].key];
        struct tlscheck_pair_in in = {
            .cert_label = slots[i].labels[0],
            .cert_path = c->path,
            .cert_pem = c->data,
            .cert_len = c->len,
            .key_label = slots[i].labels[1],
            .key_path = key->path,
            .key_pem = key->data,
            .key_len = key->len,
            .ca_pem = b->ca ? b->ca->data : NULL,
            .ca_len = b->ca ? b->ca->len : 0,
            .now_ms = now_ms,
        };
        if (tlscheck_pair(&in, &b->certs[i].info, NULL, err) != LB_OK)
            goto fail;
        b->certs[i].cert = c;
        b->certs[i].key = key;
        b->n_certs = i + 1;
    }
    free(slots);
    *out = b;
    return LB_OK;
fail:
    free(slots);
    tlscheck_bundle_free(b);
    return err != NULL ? err->code : LB_EINVAL;
}

bool tlscheck_bundle_same(const struct tlscheck_bundle *a, const struct tlscheck_bundle *b)
{
    if (a == NULL || b == NULL || a->n_files != b->n_files)
        return false;
    for (size_t i = 0; i < a->n_files; i++)
        if (strcmp(a->files[i].name, b->files[i].name) != 0 ||
            memcmp(a->files[i].sha256, b->files[i].sha256, 32) != 0)
            return false;
    if (a->n_backend_cas != b->n_backend_cas)
        return false;
    for (size_t i = 0; i < a->n_backend_cas; i++) {
        const struct tlscheck_backend_ca *x = &a->backend_cas[i], *y = &b->backend_cas[i];
        if (strcmp(x->backend, y->backend) != 0 || strcmp(x->file.name, y->file.name) != 0 ||
            memcmp(x->file.sha256, y->file.sha256, 32) != 0)
            return false;
    }
    return true;
}

/* Fills <dst> with copies of <src>'s strings and bytes; -1 when out of
 * memory (then <dst> holds nothing). */
static int file_copy(struct tlscheck_file *dst, const struct tlscheck_file *src)
{
    memset(dst, 0, sizeof(*dst));
    dst->name = strdup(src->name);
    dst->path = strdup(src->path);
    dst->data = malloc(src->len + 1);
    if (dst->name == NULL || dst->path == NULL || dst->data == NULL) {
        free(dst->name);
        free(dst->path);
        free(dst->data);
        memset(dst, 0, sizeof(*dst));
        return -1;
    }
    memcpy(dst->data, src->data, src->len);
    dst->data[src->len] = '\0';
    dst->len = src->len;
    memcpy(dst->sha256, src->sha256, sizeof(dst->sha256));
    return 0;
}

int tlscheck_bundle_copy_ssl(const struct tlscheck_bundle *src, struct tlscheck_bundle **out,
                             struct lb_err *err)
{
    struct tlscheck_bundle *b = calloc(1, sizeof(*b));
    bool ok = b != NULL;
    if (ok && src->n_files > 0)
        ok = (b->files = calloc(src->n_files, sizeof(*b->files))) != NULL;
    if (ok && src->n_certs > 0)
        ok = (b->certs = calloc(src->n_certs, sizeof(*b->certs))) != NULL;
    for (size_t i = 0; ok && i < src->n_files; i++)
        if ((ok = file_copy(&b->files[i], &src->files[i]) == 0))
            b->n_files++;
    if (!ok) {
        tlscheck_bundle_free(b);
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory");
    }
    /* The certificates point into files[]: the same indexes in the copy. */
    for (size_t i = 0; i < src->n_certs; i++) {
        b->certs[i] = src->certs[i];
        b->certs[i].cert = &b->files[src->certs[i].cert - src->files];
        b->certs[i].key = &b->files[src->certs[i].key - src->files];
    }
    b->n_certs = src->n_certs;
    b->ca = src->ca != NULL ? &b->files[src->ca - src->files] : NULL;
    b->crl = src->crl != NULL ? &b->files[src->crl - src->files] : NULL;
    *out = b;
    return LB_OK;
}

/* Appends <ca> to <b>, which takes it; on LB_ENOMEM <ca> is freed. */
static int backend_ca_append(struct tlscheck_bundle *b, struct tlscheck_backend_ca *ca,
                             struct lb_err *err)
{
    struct tlscheck_backend_ca *n =
        ca->backend != NULL && ca->file.name != NULL && ca->file.path != NULL
            ? realloc(b->backend_cas, (b->n_backend_cas + 1) * sizeof(*n))
            : NULL;
    if (n == NULL) {
        free(ca->backend);
        free(ca->file.name);
        free(ca->file.path);
        free(ca->file.data);
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory");
    }
    b->backend_cas = n;
    b->backend_cas[b->n_backend_cas++] = *ca;
    return LB_OK;
}

int tlscheck_bundle_add_backend_ca(struct tlscheck_bundle *b, const char *backend, const char *name,
                                   const char *base_dir, struct lb_err *err)
{
    struct tlscheck_backend_ca ca = {0};
    char path[4096];
    tlscheck_resolve(base_dir, name, path, sizeof(path));
    struct lb_err e = {0};
    int rc = tlscheck_read_file(path, &ca.file.data, &ca.file.len, &e);
    if (rc == LB_OK)
        rc = tlscheck_ca(path, ca.file.data, ca.file.len, &e);
    if (rc == LB_OK)
        rc = tlscheck_cert_info(path, ca.file.data, ca.file.len, &ca.info, &e);
    if (rc != LB_OK) {
        free(ca.file.data);
        if (rc == LB_ENOMEM)
            return lb_err_set(err, LB_ENOMEM, 0, "out of memory reading %s", path);
        /* e.msg already ends with the errno text */
        lb_err_set(err, rc, 0, "backend %s caFile: %s", backend, e.msg);
        if (err != NULL)
            err->sys_errno = e.sys_errno;
        return rc;
    }
    file_sha256(&ca.file);
    ca.backend = strdup(backend);
    ca.file.name = strdup(name);
    ca.file.path = strdup(path);
    return backend_ca_append(b, &ca, err);
}

int tlscheck_bundle_copy_backend_ca(struct tlscheck_bundle *b, const struct tlscheck_backend_ca *ca,
                                    struct lb_err *err)
{
    struct tlscheck_backend_ca c = {.info = ca->info};
    if (file_copy(&c.file, &ca->file) != 0)
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory");
    c.backend = strdup(ca->backend);
    return backend_ca_append(b, &c, err);
}

const struct tlscheck_backend_ca *tlscheck_bundle_backend_ca(const struct tlscheck_bundle *b,
                                                             const char *backend)
{
    for (size_t i = 0; b != NULL && backend != NULL && i < b->n_backend_cas; i++)
        if (strcmp(b->backend_cas[i].backend, backend) == 0)
            return &b->backend_cas[i];
    return NULL;
}

static int copy_bytes(ProtobufCBinaryData *dst, const struct tlscheck_file *f)
{
    if (f == NULL) {
        dst->data = NULL;
        dst->len = 0;
        return 0;
    }
    uint8_t *d = malloc(f->len ? f->len : 1);
    if (d == NULL)
        return -1;
    memcpy(d, f->data, f->len);
    dst->data = d;
    dst->len = f->len;
    return 0;
}

int tlscheck_bundle_patch(const struct tlscheck_bundle *b, Lb__V1__Snapshot *snap,
                          struct lb_err *err)
{
    for (size_t i = 0; i < snap->n_frontends; i++) {
        const Lb__V1__Tls *tls = snap->frontends[i]->tls;
        if (tls != NULL && tls->n_certificates != b->n_certs)
            return lb_err_set(err, LB_EINVAL, 0,
                              "frontend %s has %zu certificates, the files name %zu",
                              snap->frontends[i]->name, tls->n_certificates, b->n_certs);
    }
    for (size_t i = 0; i < snap->n_backends; i++) {
        const Lb__V1__Backend *be = snap->backends[i];
        if (be->ca_pem.len > 0 && tlscheck_bundle_backend_ca(b, be->id) == NULL)
            return lb_err_set(err, LB_EINVAL, 0, "backend %s carries a CA the files do not name",
                              be->id);
    }
    /* Copies first, so that running out of memory leaves <snap> as it was:
     * per frontend, <per> buffers; then one per backend. */
    size_t per = 2 * b->n_certs + 2, nfe = per * snap->n_frontends;
    size_t total = nfe + snap->n_backends;
    ProtobufCBinaryData *nb = calloc(total ? total : 1, sizeof(*nb));
    if (nb == NULL)
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory");
    bool ok = true;
    for (size_t i = 0; ok && i < snap->n_frontends; i++) {
        if (snap->frontends[i]->tls == NULL)
            continue;
        ProtobufCBinaryData *d = &nb[i * per];
        for (size_t c = 0; ok && c < b->n_certs; c++)
            ok = copy_bytes(&d[2 * c], b->certs[c].cert) == 0 &&
                 copy_bytes(&d[2 * c + 1], b->certs[c].key) == 0;
        ok = ok && copy_bytes(&d[per - 2], b->ca) == 0 && copy_bytes(&d[per - 1], b->crl) == 0;
    }
    for (size_t i = 0; ok && i < snap->n_backends; i++) {
        const struct tlscheck_backend_ca *ca = tlscheck_bundle_backend_ca(b, snap->backends[i]->id);
        ok = ca == NULL || copy_bytes(&nb[nfe + i], &ca->file) == 0;
    }
    if (!ok) {
        for (size_t i = 0; i < total; i++)
            free(nb[i].data);
        free(nb);
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory");
    }
    for (size_t i = 0; i < snap->n_frontends; i++) {
        Lb__V1__Tls *tls = snap->frontends[i]->tls;
        if (tls == NULL)
            continue;
        ProtobufCBinaryData *d = &nb[i * per];
        for (size_t c = 0; c < b->n_certs; c++) {
            free(tls->certificates[c]->cert_pem.data);
            free(tls->certificates[c]->key_pem.data);
            tls->certificates[c]->cert_pem = d[2 * c];
            tls->certificates[c]->key_pem = d[2 * c + 1];
        }
        free(tls->ca_pem.data);
        free(tls->crl_pem.data);
        tls->ca_pem = d[per - 2];
        tls->crl_pem = d[per - 1];
    }
    for (size_t i = 0; i < snap->n_backends; i++) {
        Lb__V1__Backend *be = snap->backends[i];
        if (tlscheck_bundle_backend_ca(b, be->id) == NULL)
            continue;
        free(be->ca_pem.data);
        be->ca_pem = nb[nfe + i];
    }
    free(nb);
    return LB_OK;
}
