/* dataplane/proxyproto.c: PROXY protocol headers, read and written. */
#include "proxyproto.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

static const uint8_t v2_sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                   0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
static const char v1_sig[] = "PROXY ";

static int invalid(const char **why, const char *reason)
{
    *why = reason;
    return PROXY_INVALID;
}

/* A decimal port, 0..65535, without a leading zero. */
static bool v1_port(const char *p, size_t n, uint16_t *out)
{
    if (n == 0 || n > 5 || (n > 1 && p[0] == '0'))
        return false;
    uint32_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return false;
        v = v * 10 + (uint32_t)(p[i] - '0');
    }
    if (v > 65535)
        return false;
    *out = (uint16_t)v;
    return true;
}

/* An address of family <af> and a port into <ss>. */
static bool v1_addr(int af, const char *ip, size_t ip_len, const char *port, size_t port_len,
                    struct sockaddr_storage *ss)
{
    char buf[INET6_ADDRSTRLEN];
    uint16_t p;
    /* inet_pton() would stop at a NUL and take "1.2.3.4\0junk" for 1.2.3.4 */
    if (ip_len == 0 || ip_len >= sizeof(buf) || memchr(ip, '\0', ip_len) != NULL ||
        !v1_port(port, port_len, &p))
        return false;
    memcpy(buf, ip, ip_len);
    buf[ip_len] = '\0';
    memset(ss, 0, sizeof(*ss));
    if (af == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)ss;
        in->sin_family = AF_INET;
        in->sin_port = htons(p);
        return inet_pton(AF_INET, buf, &in->sin_addr) == 1;
    }
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(p);
    return inet_pton(AF_INET6, buf, &in6->sin6_addr) == 1;
}

/* "PROXY TCP4|TCP6 src dst sport dport\r\n" or "PROXY UNKNOWN ...\r\n". */
static int parse_v1(const uint8_t *buf, size_t len, struct proxy_hdr *out, const char **why)
{
    const char *s = (const char *)buf;
    size_t end = 0;
    while (end + 1 < len && end + 2 <= PROXY_V1_MAX && !(s[end] == '\r' && s[end + 1] == '\n'))
        end++;
    /* stopped at the limit: whatever is at <end>, the line would be too long */
    if (end + 2 > PROXY_V1_MAX)
        return invalid(why, "PROXY v1 line too long");
    if (end + 1 >= len)
        return PROXY_INCOMPLETE;
    out->version = 1;
    /* the fields after "PROXY ", split on single spaces */
    const char *f[6];
    size_t fl[6];
    size_t n = 0, at = sizeof(v1_sig) - 1;
    while (at <= end && n < 6) {
        size_t st = at;
        while (at < end && s[at] != ' ')
            at++;
        f[n] = s + st;
        fl[n++] = at - st;
        at++;
    }
    if (n >= 1 && fl[0] == 7 && memcmp(f[0], "UNKNOWN", 7) == 0) {
        out->local = true;
        return (int)(end + 2);
    }
    if (n != 5 || at <= end)
        return invalid(why, "PROXY v1 line has not 5 fields");
    int af;
    if (fl[0] == 4 && memcmp(f[0], "TCP4", 4) == 0)
        af = AF_INET;
    else if (fl[0] == 4 && memcmp(f[0], "TCP6", 4) == 0)
        af = AF_INET6;
    else
        return invalid(why, "PROXY v1 protocol is not TCP4, TCP6 or UNKNOWN");
    if (!v1_addr(af, f[1], fl[1], f[3], fl[3], &out->src) ||
        !v1_addr(af, f[2], fl[2], f[4], fl[4], &out->dst))
        return invalid(why, "PROXY v1 address or port is malformed");
    out->local = false;
    return (int)(end + 2);
}

static int parse_v2(const uint8_t *buf, size_t len, struct proxy_hdr *out, const char **why)
{
    if (len < 16)
        return PROXY_INCOMPLETE;
    if ((buf[12] >> 4) != 2)
        return invalid(why, "PROXY v2 version is not 2");
    uint8_t cmd = buf[12] & 0x0F;
    if (cmd > 1)
        return invalid(why, "PROXY v2 command is neither LOCAL nor PROXY");
    /* the spec: other families and protocols "must be rejected as invalid by receivers" */
    if ((buf[13] >> 4) > 3 || (buf[13] & 0x0F) > 2)
        return invalid(why, "PROXY v2 address family or protocol is undefined");
    size_t total = 16 + ((size_t)buf[14] << 8 | buf[15]);
    if (total > PROXY_V2_MAX)
        return invalid(why, "PROXY v2 header too long");
    if (len < total)
        return PROXY_INCOMPLETE;
    out->version = 2;
    out->local = true;
    if (cmd == 0)
        return (int)total;
    uint8_t fam = buf[13];
    const uint8_t *a = buf + 16;
    if (fam == 0x11) { /* TCP over IPv4 */
        if (total < 16 + 12)
            return invalid(why, "PROXY v2 IPv4 addresses truncated");
        struct sockaddr_in *s4 = (struct sockaddr_in *)&out->src;
        struct sockaddr_in *d4 = (struct sockaddr_in *)&out->dst;
        memset(&out->src, 0, sizeof(out->src));
        memset(&out->dst, 0, sizeof(out->dst));
        s4->sin_family = d4->sin_family = AF_INET;
        memcpy(&s4->sin_addr, a, 4);
        memcpy(&d4->sin_addr, a + 4, 4);
        memcpy(&s4->sin_port, a + 8, 2);
        memcpy(&d4->sin_port, a + 10, 2);
        out->local = false;
    } else if (fam == 0x21) { /* TCP over IPv6 */
        if (total < 16 + 36)
            return invalid(why, "PROXY v2 IPv6 addresses truncated");
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&out->src;
        struct sockaddr_in6 *d6 = (struct sockaddr_in6 *)&out->dst;
        memset(&out->src, 0, sizeof(out->src));
        memset(&out->dst, 0, sizeof(out->dst));
        s6->sin6_family = d6->sin6_family = AF_INET6;
        memcpy(&s6->sin6_addr, a, 16);
        memcpy(&d6->sin6_addr, a + 16, 16);
        memcpy(&s6->sin6_port, a + 32, 2);
        memcpy(&d6->sin6_port, a + 34, 2);
        out->local = false;
    }
    return (int)total;
}

int proxy_parse(const uint8_t *buf, size_t len, struct proxy_hdr *out, const char **why)
{
    memset(out, 0, sizeof(*out));
    *why = NULL;
    size_t n1 = len < sizeof(v1_sig) - 1 ? len : sizeof(v1_sig) - 1;
    size_t n2 = len < sizeof(v2_sig) ? len : sizeof(v2_sig);
    if (memcmp(buf, v1_sig, n1) == 0)
        return n1 < sizeof(v1_sig) - 1 ? PROXY_INCOMPLETE : parse_v1(buf, len, out, why);
    if (memcmp(buf, v2_sig, n2) == 0)
        return n2 < sizeof(v2_sig) ? PROXY_INCOMPLETE : parse_v2(buf, len, out, why);
    return invalid(why, "no PROXY protocol header");
}

/* <ss> as IPv4 when it is an IPv4-mapped IPv6 address. */
static struct sockaddr_storage unmapped(const struct sockaddr_storage *ss)
{
    struct sockaddr_storage r = *ss;
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
    if (ss->ss_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
        struct sockaddr_in *in = (struct sockaddr_in *)&r;
        uint16_t port = in6->sin6_port;
        struct in_addr a;
        memcpy(&a, &in6->sin6_addr.s6_addr[12], 4);
        memset(&r, 0, sizeof(r));
        in->sin_family = AF_INET;
        in->sin_port = port;
        in->sin_addr = a;
    }
    return r;
}

size_t proxy_write(int version, const struct sockaddr_storage *src,
                   const struct sockaddr_storage *dst, uint8_t *out)
{
    struct sockaddr_storage s = unmapped(src), d = unmapped(dst);
    int af = s.ss_family == d.ss_family && (s.ss_family == AF_INET || s.ss_family == AF_INET6)
                 ? s.ss_family
                 : AF_UNSPEC;
    const struct sockaddr_in *s4 = (const struct sockaddr_in *)&s,
                             *d4 = (const struct sockaddr_in *)&d;
    const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&s;
    const struct sockaddr_in6 *d6 = (const struct sockaddr_in6 *)&d;
    if (version == 1) {
        char sa[INET6_ADDRSTRLEN], da[INET6_ADDRSTRLEN];
        int n;
        if (af == AF_INET) {
            inet_ntop(AF_INET, &s4->sin_addr, sa, sizeof(sa));
            inet_ntop(AF_INET, &d4->sin_addr, da, sizeof(da));
            n = snprintf((char *)out, PROXY_WRITE_MAX, "PROXY TCP4 %s %s %u %u\r\n", sa, da,
                         ntohs(s4->sin_port), ntohs(d4->sin_port));
        } else if (af == AF_INET6) {
            inet_ntop(AF_INET6, &s6->sin6_addr, sa, sizeof(sa));
            inet_ntop(AF_INET6, &d6->sin6_addr, da, sizeof(da));
            n = snprintf((char *)out, PROXY_WRITE_MAX, "PROXY TCP6 %s %s %u %u\r\n", sa, da,
                         ntohs(s6->sin6_port), ntohs(d6->sin6_port));
        } else {
            n = snprintf((char *)out, PROXY_WRITE_MAX, "PROXY UNKNOWN\r\n");
        }
        return (size_t)n;
    }
    memcpy(out, v2_sig, sizeof(v2_sig));
    uint8_t *a = out + 16;
    size_t alen = 0;
    if (af == AF_INET) {
        out[12] = 0x21;
        out[13] = 0x11;
        memcpy(a, &s4->sin_addr, 4);
        memcpy(a + 4, &d4->sin_addr, 4);
        memcpy(a + 8, &s4->sin_port, 2);
        memcpy(a + 10, &d4->sin_port, 2);
        alen = 12;
    } else if (af == AF_INET6) {
        out[12] = 0x21;
        out[13] = 0x21;
        memcpy(a, &s6->sin6_addr, 16);
        memcpy(a + 16, &d6->sin6_addr, 16);
        memcpy(a + 32, &s6->sin6_port, 2);
        memcpy(a + 34, &d6->sin6_port, 2);
        alen = 36;
    } else {
        out[12] = 0x20; /* LOCAL */
        out[13] = 0x00;
    }
    out[14] = (uint8_t)(alen >> 8);
    out[15] = (uint8_t)alen;
    return 16 + alen;
}
