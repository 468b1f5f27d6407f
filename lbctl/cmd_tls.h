/* lbctl/cmd_tls.h: "lbctl tls list" and "lbctl tls reload". */
#ifndef LBCTL_CMD_TLS_H
#define LBCTL_CMD_TLS_H

struct lbctl;

/* The "tls" verb group: dispatches on argv[1] ("list", "reload"). Returns an
 * enum lbctl_exit status. */
int cmd_tls(struct lbctl *ctx, int argc, char **argv);

#endif
