/* proto/lb_endpoints.h: the three nanomsg endpoints named by one endpoint base.
 * Shared by the control plane (binds them) and the data plane (connects). */
#ifndef LB_ENDPOINTS_H
#define LB_ENDPOINTS_H

#include <stddef.h>

struct lb_err;

#define LB_ENDPOINT_MAX 256 /* bytes of one endpoint string, NUL included */

/* Splits the endpoint base <base> into the snapshot feed (<pub>: PUB/SUB),
 * the start-up sync (<rep>: REP/REQ) and the report channel (<pull>: PULL/PUSH):
 *   "ipc:///run/lb"        -> "ipc:///run/lb/snapshot.sock", ".../sync.sock", ".../report.sock"
 *   "tcp://127.0.0.1:7000" -> "tcp://127.0.0.1:7000", "...:7001", "...:7002"
 * ipc:// takes an absolute directory path (trailing slashes are dropped) whose
 * socket paths fit in a Unix socket address. tcp:// takes HOST:PORT with a
 * non-empty HOST (an address, a name, "*" to bind every interface, or a
 * bracketed IPv6 literal) and PORT 1..65533 so that PORT+2 is a port too.
 * Control bytes and spaces are refused. Each output buffer holds
 * LB_ENDPOINT_MAX bytes and is always NUL-terminated on success.
 * Returns LB_OK, or LB_EINVAL with a message naming <base> (outputs are then
 * empty strings). Any thread; no allocation. */
int lb_endpoints_split(const char *base, char pub[LB_ENDPOINT_MAX], char rep[LB_ENDPOINT_MAX],
                       char pull[LB_ENDPOINT_MAX], struct lb_err *err);

/* For an ipc:// endpoint made by lb_endpoints_split(), the file-system path of
 * its socket (a pointer into <endpoint>); NULL for any other endpoint. */
const char *lb_endpoints_ipc_path(const char *endpoint);

#endif
