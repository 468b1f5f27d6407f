/* proto/base/lb_sdnotify.h: the service manager's notification protocol.
 *
 * systemd passes a Type=notify service the address of a datagram socket in
 * $NOTIFY_SOCKET (a path, or "@name" for the abstract namespace) and reads
 * newline-separated KEY=VALUE assignments from it: READY=1, RELOADING=1,
 * STOPPING=1, STATUS=..., MAINPID=..., WATCHDOG=1. The protocol is stable
 * and documented in sd_notify(3); both daemons speak it directly rather
 * than load libsystemd and the compression and crypto libraries it pulls
 * in (about 0.8 MiB of resident memory per process). The watchdog interval
 * comes from $WATCHDOG_USEC, meant for the process $WATCHDOG_PID names. */
#ifndef LB_SDNOTIFY_H
#define LB_SDNOTIFY_H

#include <stdbool.h>
#include <stdint.h>

/* Sends <msg> to the service manager: 1 when sent, 0 when this process was
 * not started with $NOTIFY_SOCKET (or it names no usable address), a
 * negative errno when sending failed. */
int lb_sd_notify(const char *msg);

/* lb_sd_notify() of a printf-formatted message (at most 1 KiB). */
int lb_sd_notifyf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The watchdog interval systemd expects pings within, in <usec>: true when
 * $WATCHDOG_USEC holds a positive number and $WATCHDOG_PID, if set, is this
 * process. */
bool lb_sd_watchdog_usec(uint64_t *usec);

#endif
