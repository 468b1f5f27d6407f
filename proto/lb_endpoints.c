/* proto/lb_endpoints.c */
#include "lb_endpoints.h"

#include "lb_err.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>

#define IPC_SCHEME "ipc://"
#define TCP_SCHEME "tcp://"

static const char *const ipc_names[3] = {"snapshot.sock", "sync.sock", "report.sock"};

static int has_bad_bytes(const char *s)
{
    for (; *s != '\0'; s++)
        if ((unsigned char)*s <= ' ' || *s == 0x7f)
            return 1;
    return 0;
}

static int split_ipc(const char *base, const char *path, char *out[3], struct lb_err *err)
{
    if (path[0] != '/')
        return lb_err_set(err, LB_EINVAL, 0, "endpoint %s: ipc:// needs an absolute path", base);
    size_t len = strlen(path);
    while (len > 1 && path[len - 1] == '/')
        len--;
    if (len == 1)
        len = 0; /* the root directory: "/" + "/snapshot.sock" would double the slash */
    struct sockaddr_un sun;
    for (int i = 0; i < 3; i++) {
        /* The socket path must fit sun_path with its NUL, or bind fails obscurely later. */
        if (len + 1 + strlen(ipc_names[i]) >= sizeof(sun.sun_path))
            return lb_err_set(err, LB_EINVAL, 0,
                              "endpoint %s: ipc:// path too long for a Unix socket (%zu bytes max)",
                              base, sizeof(sun.sun_path) - 2 - strlen(ipc_names[i]));
        snprintf(out[i], LB_ENDPOINT_MAX, IPC_SCHEME "%.*s/%s", (int)len, path, ipc_names[i]);
    }
    return LB_OK;
}

static int split_tcp(const char *base, const char *hostport, char *out[3], struct lb_err *err)
{
    const char *colon = strrchr(hostport, ':');
    if (colon == NULL || colon == hostport)
        return lb_err_set(err, LB_EINVAL, 0, "endpoint %s: tcp:// needs HOST:PORT", base);
    size_t host_len = (size_t)(colon - hostport);
    if (hostport[0] == '[' && (host_len < 3 || hostport[host_len - 1] != ']'))
        return lb_err_set(err, LB_EINVAL, 0, "endpoint %s: unterminated IPv6 literal", base);
    if (hostport[0] != '[' && memchr(hostport, ':', host_len) != NULL)
        return lb_err_set(err, LB_EINVAL, 0, "endpoint %s: an IPv6 host needs brackets", base);
    const char *p = colon + 1;
    uint32_t port = 0;
    if (*p == '\0')
        return lb_err_set(err, LB_EINVAL, 0, "endpoint %s: missing port", base);
    for (; *p != '\0'; p++) {
        if (*p < '0' || *p > '9' || port > 65535)
            return lb_err_set(err, LB_EINVAL, 0, "endpoint %s: port must be 1..65533", base);
        port = port * 10 + (uint32_t)(*p - '0');
    }
    if (port < 1 || port > 65533)
        return lb_err_set(err, LB_EINVAL, 0, "endpoint %s: port must be 1..65533", base);
    for (uint32_t i = 0; i < 3; i++) {
        int n = snprintf(out[i], LB_ENDPOINT_MAX, TCP_SCHEME "%.*s:%u", (int)host_len, hostport,
                         (unsigned)(port + i));
        if (n < 0 || n >= LB_ENDPOINT_MAX)
            return lb_err_set(err, LB_EINVAL, 0, "endpoint %s: host too long", base);
    }
    return LB_OK;
}

int lb_endpoints_split(const char *base, char pub[LB_ENDPOINT_MAX], char rep[LB_ENDPOINT_MAX],
                       char pull[LB_ENDPOINT_MAX], struct lb_err *err)
{
    char *out[3] = {pub, rep, pull};
    for (int i = 0; i < 3; i++)
        out[i][0] = '\0';
    if (base == NULL)
        return lb_err_set(err, LB_EINVAL, 0, "no endpoint given");
    int rc;
    if (has_bad_bytes(base))
        rc = lb_err_set(err, LB_EINVAL, 0, "endpoint \"%.100s\": spaces or control bytes", base);
    else if (strncmp(base, IPC_SCHEME, strlen(IPC_SCHEME)) == 0)
        rc = split_ipc(base, base + strlen(IPC_SCHEME), out, err);
    else if (strncmp(base, TCP_SCHEME, strlen(TCP_SCHEME)) == 0)
        rc = split_tcp(base, base + strlen(TCP_SCHEME), out, err);
    else
        rc = lb_err_set(err, LB_EINVAL, 0, "endpoint %.100s: expected ipc://DIR or tcp://HOST:PORT",
                        base);
    if (rc != LB_OK)
        for (int i = 0; i < 3; i++)
            out[i][0] = '\0';
    return rc;
}

const char *lb_endpoints_ipc_path(const char *endpoint)
{
    if (endpoint == NULL || strncmp(endpoint, IPC_SCHEME, strlen(IPC_SCHEME)) != 0)
        return NULL;
    return endpoint + strlen(IPC_SCHEME);
}
