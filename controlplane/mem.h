/* controlplane/mem.h: allocation whose failure is an lb_err, for the
 * constructors of the control plane's modules. */
#ifndef LB_MEM_H
#define LB_MEM_H

#include <stddef.h>

struct lb_err;

/* A zeroed block of <size> bytes (caller frees), or NULL with <err> filled:
 * LB_ENOMEM, "out of memory", or "<who>: out of memory" when <who> is not
 * NULL. */
void *mem_zalloc(size_t size, const char *who, struct lb_err *err);

#endif
