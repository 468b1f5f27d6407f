/* proto/base/lb_cred.h: secrets handed over as systemd credentials.
 *
 * A unit's LoadCredential=NAME:PATH gives the service a private copy of
 * PATH (mode 0400, its user's) as $CREDENTIALS_DIRECTORY/NAME. The shipped
 * units pair each with a blank SetCredential=NAME:\n, which systemd uses
 * when PATH does not exist (systemd refuses an empty value); a blank
 * credential therefore means "not configured", so one unit file serves
 * hosts with and without the secret. */
#ifndef LB_CRED_H
#define LB_CRED_H

#include <stdbool.h>
#include <stddef.h>

/* The path of credential <name> when this process was handed a non-empty
 * one: written to <out> (<n> bytes), true. False when there is no
 * $CREDENTIALS_DIRECTORY, no such file, a blank one (white space only), or
 * the path does not fit. */
bool lb_credential(const char *name, char *out, size_t n);

#endif
