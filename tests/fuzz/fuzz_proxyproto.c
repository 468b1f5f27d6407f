/* tests/fuzz/fuzz_proxyproto.c: libFuzzer driver for the PROXY protocol
 * reader (dataplane/proxyproto.c, compiled in alone). The input is the
 * first bytes of a connection. An accepted header must lie within the input
 * and its version's limit, and be incomplete one byte short; when it carries
 * addresses, proxy_write() must write them again in both versions and
 * proxy_parse() read the same ones back. Invariants are checked with abort()
 * so that a broken one is a crash libFuzzer keeps. */
#include "proxyproto.h"

#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *what)
{
    fprintf(stderr, "invariant broken: %s\n", what);
    abort();
}

/* proxy_parse() on an exact-size copy, so ASan sees any read past the end. */
static int parse(const uint8_t *in, size_t len, struct proxy_hdr *h)
{
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        abort();
    memcpy(buf, in, len);
    const char *why = "unset";
    int rc = proxy_parse(buf, len, h, &why);
    free(buf);
    if (rc == PROXY_INVALID && (why == NULL || why[0] == '\0'))
        fail("refusal without a reason");
    if (rc != PROXY_INVALID && rc != PROXY_INCOMPLETE && (rc <= 0 || (size_t)rc > len))
        fail("returned length outside the input");
    return rc;
}

/* Family, address and port, IPv4-mapped IPv6 taken as IPv4 (as proxy_write()
 * writes it). */
struct addr {
    int family;
    uint8_t a[16];
    uint16_t port;
};

static struct addr addr_of(const struct sockaddr_storage *ss)
{
    struct addr r;
    memset(&r, 0, sizeof(r));
    r.family = ss->ss_family;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const void *)ss;
        memcpy(r.a, &in->sin_addr, 4);
        r.port = in->sin_port;
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const void *)ss;
        r.port = in6->sin6_port;
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
            r.family = AF_INET;
            memcpy(r.a, &in6->sin6_addr.s6_addr[12], 4);
        } else {
            memcpy(r.a, &in6->sin6_addr, 16);
        }
    } else {
        fail("addresses of a family other than IPv4 or IPv6");
    }
    return r;
}

static bool same_addr(struct addr x, struct addr y)
{
    return x.family == y.family && x.port == y.port && memcmp(x.a, y.a, sizeof(x.a)) == 0;
}

/* Writes <h>'s addresses as <version> and reads them back. */
static void round_trip(const struct proxy_hdr *h, int version)
{
    struct addr src = addr_of(&h->src), dst = addr_of(&h->dst);
    uint8_t *out = malloc(PROXY_WRITE_MAX); /* exactly the room promised */
    if (!out)
        abort();
    size_t n = proxy_write(version, &h->src, &h->dst, out);
    if (n == 0 || n > PROXY_WRITE_MAX || (version == 1 && n > PROXY_V1_MAX))
        fail("proxy_write length out of range");
    struct proxy_hdr back;
    int rc = parse(out, n, &back);
    if (rc != (int)n)
        fail("a written header does not parse back whole");
    if (back.version != version)
        fail("a written header parses back as another version");
    /* a mapped source with a plain IPv6 destination has no common family */
    if (src.family != dst.family) {
        if (!back.local)
            fail("mixed families written with addresses");
    } else if (back.local || !same_addr(addr_of(&back.src), src) ||
               !same_addr(addr_of(&back.dst), dst)) {
        fail("a written header parses back to other addresses");
    }
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct proxy_hdr h;
    int rc = parse(data, size, &h);
    if (rc <= 0)
        return 0;
    size_t n = (size_t)rc;
    if (h.version == 1) {
        if (n > PROXY_V1_MAX || n < 8 || memcmp(data, "PROXY ", 6) != 0 ||
            memcmp(data + n - 2, "\r\n", 2) != 0)
            fail("v1 header too long or not a PROXY line");
    } else if (h.version == 2) {
        if (n > PROXY_V2_MAX || n < 16)
            fail("v2 header length out of range");
    } else {
        fail("version neither 1 nor 2");
    }
    /* the header alone parses the same; one byte short it is incomplete */
    struct proxy_hdr again;
    if (parse(data, n, &again) != rc || again.version != h.version || again.local != h.local)
        fail("the header alone parses differently");
    if (parse(data, n - 1, &again) != PROXY_INCOMPLETE)
        fail("a header one byte short is not incomplete");
    if (!h.local) {
        if (h.src.ss_family != h.dst.ss_family)
            fail("addresses of two families");
        round_trip(&h, 1);
        round_trip(&h, 2);
    }
    return 0;
}
