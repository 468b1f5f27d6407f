/* proto/base/lb_sdnotify.c: READY=1 and friends over $NOTIFY_SOCKET. */
#include "lb_sdnotify.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int lb_sd_notify(const char *msg)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (path == NULL || (path[0] != '/' && path[0] != '@'))
        return 0;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t len = strlen(path);
    if (len < 2 || len > sizeof(sa.sun_path))
        return 0;
    memcpy(sa.sun_path, path, len);
    if (sa.sun_path[0] == '@')
        sa.sun_path[0] = '\0';
    /* a path's length counts its terminating NUL when there is room for
     * one; an abstract name is exactly its bytes */
    socklen_t sl = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len +
                               (path[0] == '/' && len < sizeof(sa.sun_path)));
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    ssize_t n;
    do
        n = sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sa, sl);
    while (n < 0 && errno == EINTR);
    int err = n < 0 ? errno : 0;
    close(fd);
    return err ? -err : 1;
}

int lb_sd_notifyf(const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(msg))
        return -EMSGSIZE;
    return lb_sd_notify(msg);
}

/* A decimal number that fills <s>: true and in <out>. */
static bool parse_u64(const char *s, uint64_t *out)
{
    if (s == NULL || *s < '0' || *s > '9')
        return false;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return false;
    *out = (uint64_t)v;
    return true;
}

bool lb_sd_watchdog_usec(uint64_t *usec)
{
    uint64_t v, pid;
    if (!parse_u64(getenv("WATCHDOG_USEC"), &v) || v == 0)
        return false;
    const char *wpid = getenv("WATCHDOG_PID");
    if (wpid != NULL && (!parse_u64(wpid, &pid) || pid != (uint64_t)getpid()))
        return false;
    *usec = v;
    return true;
}
