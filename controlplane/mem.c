/* controlplane/mem.c: allocation whose failure is an lb_err (see mem.h). */
#include "mem.h"

#include "lb_err.h"

#include <stdlib.h>

void *mem_zalloc(size_t size, const char *who, struct lb_err *err)
{
    void *p = calloc(1, size);
    if (p == NULL) {
        if (who != NULL)
            lb_err_set(err, LB_ENOMEM, 0, "%s: out of memory", who);
        else
            lb_err_set(err, LB_ENOMEM, 0, "out of memory");
    }
    return p;
}
