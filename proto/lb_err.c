/* proto/lb_err.c */
#include "lb_err.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int lb_err_set(struct lb_err *err, enum lb_code code, int sys_errno, const char *fmt, ...)
{
    if (err == NULL)
        return code;
    err->code = code;
    err->sys_errno = sys_errno;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if (sys_errno != 0 && (size_t)n < sizeof(err->msg))
        snprintf(err->msg + n, sizeof(err->msg) - (size_t)n, ": %s", strerror(sys_errno));
    return code;
}

void lb_err_clear(struct lb_err *err)
{
    if (err == NULL)
        return;
    err->code = LB_OK;
    err->sys_errno = 0;
    err->msg[0] = '\0';
}

const char *lb_enum_name(const char *const *names, size_t n, unsigned value, const char *fallback)
{
    return value < n && names[value] != NULL ? names[value] : fallback;
}

const char *lb_code_name(enum lb_code code)
{
    static const char *const names[] = {
        [LB_OK] = "OK",
        [LB_EINVAL] = "EINVAL",
        [LB_ENOMEM] = "ENOMEM",
        [LB_ESYS] = "ESYS",
        [LB_ESTORE] = "ESTORE",
        [LB_ENOTFOUND] = "ENOTFOUND",
        [LB_ECONFLICT] = "ECONFLICT",
        [LB_EPROTO] = "EPROTO",
    };
    return LB_ENUM_NAME(names, code, "EUNKNOWN");
}

bool lb_errno_shortage(int sys_errno)
{
    return sys_errno == EMFILE || sys_errno == ENFILE || sys_errno == ENOBUFS ||
           sys_errno == ENOMEM || sys_errno == EADDRNOTAVAIL;
}
