/* dataplane/tls_pem.c: PEM bytes from the snapshot into OpenSSL objects, and
 * OpenSSL's reason in the error messages, for the server and client context
 * builders alike. */
#include "tls_int.h"

#include <limits.h>

#include <openssl/err.h>
#include <openssl/pem.h>

#include "lb_err.h"

/* Keys come from memory and must never prompt: encrypted keys are refused. */
int tls__no_password(char *buf, int size, int rwflag, void *u)
{
    return 0;
}

const char *tls__ssl_reason(void)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    ERR_clear_error();
    return r ? r : "invalid data";
}

BIO *tls__pem_bio(const void *data, size_t len)
{
    if (len > INT_MAX)
        return NULL;
    return BIO_new_mem_buf(data, (int)len);
}

bool tls__is_pem_end(void)
{
    unsigned long e = ERR_peek_last_error();
    if (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE) {
        ERR_clear_error();
        return true;
    }
    return false;
}

int tls__ca_bundle_load(X509_STORE *store, BIO *b, STACK_OF(X509_NAME) * names, const char *field,
                        struct lb_err *err)
{
    int added = 0;
    for (;;) {
        X509 *x = PEM_read_bio_X509(b, NULL, tls__no_password, NULL);
        if (x == NULL)
            break;
        X509_NAME *n = names != NULL ? X509_NAME_dup(X509_get_subject_name(x)) : NULL;
        bool ok = X509_STORE_add_cert(store, x) == 1 &&
                  (names == NULL || (n != NULL && sk_X509_NAME_push(names, n)));
        X509_free(x);
        if (!ok) {
            X509_NAME_free(n);
            return lb_err_set(err, LB_EINVAL, 0, "%s: certificate %d refused (%s)", field,
                              added + 1, tls__ssl_reason());
        }
        added++;
    }
    if (added == 0 || !tls__is_pem_end())
        return lb_err_set(err, LB_EINVAL, 0, "%s: not a PEM certificate bundle (%s)", field,
                          tls__ssl_reason());
    return LB_OK;
}
