/* proto/lb_err.h: the error value every fallible function fills. */
#ifndef LB_ERR_H
#define LB_ERR_H

#include <stdbool.h>
#include <stddef.h>

enum lb_code {
    LB_OK = 0,
    LB_EINVAL, /* bad input: config, snapshot, argument */
    LB_ENOMEM, /* out of memory */
    LB_ESYS,   /* a system call failed; sys_errno tells which way */
    LB_ESTORE, /* the SQLite store failed */
    LB_ENOTFOUND,
    LB_ECONFLICT,
    LB_EPROTO, /* a peer broke the protocol */
};

struct lb_err {
    enum lb_code code; /* LB_OK when nothing failed */
    int sys_errno;     /* errno at the failing call, or 0 */
    char msg[160];     /* one sentence for logs, admin API and lbctl */
};

/* Fills <err> (which may be NULL) with <code>, <sys_errno> and a printf-style
 * message; when <sys_errno> is non-zero, ": strerror" is appended.
 * Returns <code> so that callers can write `return lb_err_set(...)`. */
int lb_err_set(struct lb_err *err, enum lb_code code, int sys_errno, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Resets <err> (may be NULL) to LB_OK with an empty message. */
void lb_err_clear(struct lb_err *err);

/* The name of enum value <value> in <names>, a table of <n> names indexed by
 * value (designated initializers); <fallback> when <value> is out of range
 * or has no entry. The one shape behind every enum's _name() function. */
const char *lb_enum_name(const char *const *names, size_t n, unsigned value, const char *fallback);

/* lb_enum_name() over the whole static array <names>. */
#define LB_ENUM_NAME(names, value, fallback)                                                       \
    lb_enum_name((names), sizeof(names) / sizeof((names)[0]), (unsigned)(value), (fallback))

/* Short stable name of <code>: "EINVAL", "ENOMEM", ... */
const char *lb_code_name(enum lb_code code);

/* True when a socket call failed with <sys_errno> for want of this process's
 * or this host's resources (descriptors, memory, local ports), not because
 * of the peer: accept, socket and connect callers pause or retry instead of
 * blaming anyone. */
bool lb_errno_shortage(int sys_errno);

#endif
