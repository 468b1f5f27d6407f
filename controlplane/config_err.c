/* controlplane/config_err.c: how a config error is worded and positioned,
 * for the decoder (config_load.c) and the rules (config_validate.c). */
#include "config_int.h"

#include "lb_err.h"

#include <stdarg.h>
#include <stdio.h>

int config__verr_at(const struct cfg_check *v, const struct cnode *n, const char *path,
                    const char *fmt, va_list ap)
{
    char reason[160];
    vsnprintf(reason, sizeof(reason), fmt, ap);
    const char *sep = path[0] ? ": " : "";
    if (n != NULL && n->line > 0)
        lb_err_set(v->err, LB_EINVAL, 0, "%s:%d:%d: %s%s%s", v->name ? v->name : "config", n->line,
                   n->col, path, sep, reason);
    else if (v->name != NULL)
        lb_err_set(v->err, LB_EINVAL, 0, "%s: %s%s%s", v->name, path, sep, reason);
    else
        lb_err_set(v->err, LB_EINVAL, 0, "%s%s%s", path, sep, reason);
    return LB_EINVAL;
}

int config__err_at(const struct cfg_check *v, const struct cnode *n, const char *path,
                   const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = config__verr_at(v, n, path, fmt, ap);
    va_end(ap);
    return rc;
}

int config__nomem(const struct cfg_check *v)
{
    return lb_err_set(v->err, LB_ENOMEM, 0, "out of memory while reading the config");
}
