/* tests/unit/dataplane/test_proxyproto.c
 *
 * The PROXY protocol reader and writer. Every input is parsed from a copy
 * that ends right before a PROT_NONE page, and at every length: each prefix
 * of a valid header is PROXY_INCOMPLETE, the header itself and any number of
 * bytes after it give the header's length (the connection's bytes are not
 * consumed). A refused input is PROXY_INCOMPLETE up to the length at which
 * the parser can tell, then PROXY_INVALID with a reason for every longer
 * prefix. Spec: https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt */
#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/un.h>
#include <unistd.h>

#include "proxyproto.h"

#define S(lit) lit, sizeof(lit) - 1

/* Stops the test when <cond> fails; the loops below check with this, as
 * every ck_assert() is a message to the parent process in fork mode. */
#define REQUIRE(cond)                                                                              \
    do {                                                                                           \
        if (!(cond))                                                                               \
            ck_abort_msg("%s:%d: %s", __FILE__, __LINE__, #cond);                                  \
    } while (0)

static const uint8_t sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

static uint8_t *map;   /* data pages followed by one PROT_NONE page */
static uint8_t *guard; /* the PROT_NONE page */
static size_t room;    /* bytes that fit before the guard */
static size_t span;

static void setup(void)
{
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    room = 2 * pg;
    span = room + pg;
    map = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ck_assert(map != MAP_FAILED);
    guard = map + room;
    ck_assert_int_eq(mprotect(guard, pg, PROT_NONE), 0);
}

static void teardown(void)
{
    ck_assert_int_eq(munmap(map, span), 0);
}

/* proxy_parse() on the first <len> bytes of <in>, copied to end at the guard. */
static int parse_edge(const void *in, size_t len, struct proxy_hdr *h, const char **why)
{
    REQUIRE(len <= room);
    memcpy(guard - len, in, len);
    int rc = proxy_parse(guard - len, len, h, why);
    REQUIRE(rc == PROXY_INVALID || rc == PROXY_INCOMPLETE || (rc > 0 && (size_t)rc <= len));
    REQUIRE(rc != PROXY_INVALID || (*why != NULL && **why != '\0'));
    return rc;
}

/* <in>[0..len) starts with a header of <hdr_len> bytes: every shorter prefix
 * is incomplete, every longer one gives <hdr_len>. Fills <h> from the whole. */
static void expect_header(const void *in, size_t len, size_t hdr_len, struct proxy_hdr *h)
{
    const char *why;
    REQUIRE(hdr_len > 0 && hdr_len <= len);
    for (size_t k = 0; k < hdr_len; k++)
        if (parse_edge(in, k, h, &why) != PROXY_INCOMPLETE)
            ck_abort_msg("prefix of %zu bytes (header: %zu) is not incomplete", k, hdr_len);
    for (size_t k = hdr_len; k <= len; k++)
        if (parse_edge(in, k, h, &why) != (int)hdr_len)
            ck_abort_msg("%zu bytes do not give the %zu-byte header", k, hdr_len);
}

/* <in>[0..len) is refused once <at> bytes are in, and not before. */
static void expect_invalid_at(const void *in, size_t len, size_t at)
{
    struct proxy_hdr h;
    const char *why;
    REQUIRE(at > 0 && at <= len);
    for (size_t k = 0; k < at; k++)
        if (parse_edge(in, k, &h, &why) != PROXY_INCOMPLETE)
            ck_abort_msg("prefix of %zu bytes (refused at %zu) is not incomplete", k, at);
    for (size_t k = at; k <= len; k++)
        if (parse_edge(in, k, &h, &why) != PROXY_INVALID)
            ck_abort_msg("%zu bytes (refused at %zu) are not invalid", k, at);
}

static struct sockaddr_storage sa4(const char *ip, uint16_t port)
{
    struct sockaddr_storage ss;
    struct sockaddr_in *in = (struct sockaddr_in *)&ss;
    memset(&ss, 0, sizeof(ss));
    in->sin_family = AF_INET;
    in->sin_port = htons(port);
    ck_assert_int_eq(inet_pton(AF_INET, ip, &in->sin_addr), 1);
    return ss;
}

static struct sockaddr_storage sa6(const char *ip, uint16_t port)
{
    struct sockaddr_storage ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    memset(&ss, 0, sizeof(ss));
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(port);
    ck_assert_int_eq(inet_pton(AF_INET6, ip, &in6->sin6_addr), 1);
    return ss;
}

static struct sockaddr_storage sa_unix(const char *path)
{
    struct sockaddr_storage ss;
    struct sockaddr_un *un = (struct sockaddr_un *)&ss;
    memset(&ss, 0, sizeof(ss));
    un->sun_family = AF_UNIX;
    strncpy(un->sun_path, path, sizeof(un->sun_path) - 1);
    return ss;
}

/* Same family, address and port (nothing else is carried). */
static void assert_addr_eq(const struct sockaddr_storage *got, const struct sockaddr_storage *want)
{
    ck_assert_int_eq(got->ss_family, want->ss_family);
    if (want->ss_family == AF_INET) {
        const struct sockaddr_in *g = (const void *)got, *w = (const void *)want;
        ck_assert_uint_eq(g->sin_addr.s_addr, w->sin_addr.s_addr);
        ck_assert_uint_eq(ntohs(g->sin_port), ntohs(w->sin_port));
    } else {
        ck_assert_int_eq(want->ss_family, AF_INET6);
        const struct sockaddr_in6 *g = (const void *)got, *w = (const void *)want;
        ck_assert_mem_eq(&g->sin6_addr, &w->sin6_addr, 16);
        ck_assert_uint_eq(ntohs(g->sin6_port), ntohs(w->sin6_port));
    }
}

/* A version 2 header: the signature, <ver_cmd>, <fam>, a length of
 * <alen>, then <alen> bytes of <addr> (or zeros when <addr> is NULL). */
static size_t v2(uint8_t *out, uint8_t ver_cmd, uint8_t fam, const void *addr, size_t alen)
{
    memcpy(out, sig, sizeof(sig));
    out[12] = ver_cmd;
    out[13] = fam;
    out[14] = (uint8_t)(alen >> 8);
    out[15] = (uint8_t)alen;
    if (addr != NULL)
        memcpy(out + 16, addr, alen);
    else
        memset(out + 16, 0, alen);
    return 16 + alen;
}

/* 192.0.2.1:56324 -> 198.51.100.7:443 as version 2 TCP over IPv4 addresses. */
static const uint8_t addr4[12] = {192, 0, 2, 1, 198, 51, 100, 7, 0xDC, 0x04, 0x01, 0xBB};

/* 2001:db8::1:56324 -> 2001:db8::ff:443 as version 2 TCP over IPv6 addresses. */
static const uint8_t addr6[36] = {0x20, 0x01, 0x0d, 0xb8, 0,    0,    0,    0,   0, 0, 0, 0, 0, 0,
                                  0,    0x01, 0x20, 0x01, 0x0d, 0xb8, 0,    0,   0, 0, 0, 0, 0, 0,
                                  0,    0,    0,    0xff, 0xDC, 0x04, 0x01, 0xBB};

/* ---- version 1 ----------------------------------------------------------------------- */

START_TEST(v1_tcp4)
{
    static const char in[] = "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\n";
    struct proxy_hdr h;
    expect_header(S(in), strlen("PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"), &h);
    ck_assert_uint_eq(h.version, 1);
    ck_assert(!h.local);
    struct sockaddr_storage src = sa4("192.168.0.1", 56324), dst = sa4("192.168.0.11", 443);
    assert_addr_eq(&h.src, &src);
    assert_addr_eq(&h.dst, &dst);
}
END_TEST

START_TEST(v1_tcp6)
{
    static const char in[] = "PROXY TCP6 2001:db8::1 ::1 65535 0\r\n";
    struct proxy_hdr h;
    expect_header(S(in), sizeof(in) - 1, &h);
    ck_assert_uint_eq(h.version, 1);
    ck_assert(!h.local);
    /* port 0 is in the spec's range [0..65535] */
    struct sockaddr_storage src = sa6("2001:db8::1", 65535), dst = sa6("::1", 0);
    assert_addr_eq(&h.src, &src);
    assert_addr_eq(&h.dst, &dst);
}
END_TEST

START_TEST(v1_tcp6_longest_line)
{
    /* the spec's longest TCP6 line: 104 bytes */
    static const char in[] = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
                             "FFFF:FFFF:FFFF:FFFF:FFFF:FFFF:FFFF:FFFF 65535 65535\r\n";
    ck_assert_uint_eq(sizeof(in) - 1, 104);
    struct proxy_hdr h;
    expect_header(S(in), sizeof(in) - 1, &h);
    ck_assert(!h.local);
    struct sockaddr_storage a = sa6("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535);
    assert_addr_eq(&h.src, &a);
    assert_addr_eq(&h.dst, &a);
}
END_TEST

START_TEST(v1_tcp6_embedded_ipv4)
{
    static const char in[] = "PROXY TCP6 ::ffff:192.0.2.1 64:ff9b::198.51.100.7 1 2\r\n";
    struct proxy_hdr h;
    expect_header(S(in), sizeof(in) - 1, &h);
    struct sockaddr_storage src = sa6("::ffff:192.0.2.1", 1), dst = sa6("64:ff9b::c633:6407", 2);
    assert_addr_eq(&h.src, &src);
    assert_addr_eq(&h.dst, &dst);
}
END_TEST

START_TEST(v1_unknown)
{
    static const char in[] = "PROXY UNKNOWN\r\nSSH-2.0";
    struct proxy_hdr h;
    expect_header(S(in), 15, &h);
    ck_assert_uint_eq(h.version, 1);
    ck_assert(h.local);
}
END_TEST

START_TEST(v1_unknown_ignores_the_rest_of_the_line)
{
    static const char in[] = "PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n";
    struct proxy_hdr h;
    expect_header(S(in), sizeof(in) - 1, &h);
    ck_assert(h.local);
}
END_TEST

START_TEST(v1_longest_line_is_107_bytes)
{
    char in[128];
    memset(in, 'x', sizeof(in));
    memcpy(in, "PROXY UNKNOWN ", 14);
    memcpy(in + 105, "\r\n", 2);
    struct proxy_hdr h;
    expect_header(in, sizeof(in), PROXY_V1_MAX, &h);
    ck_assert(h.local);
}
END_TEST

START_TEST(v1_line_of_108_bytes_is_refused)
{
    char in[128];
    memset(in, 'x', sizeof(in));
    memcpy(in, "PROXY UNKNOWN ", 14);
    memcpy(in + 106, "\r\n", 2);
    /* no CRLF within the first 107 bytes: refused at once, and stays refused */
    expect_invalid_at(in, sizeof(in), PROXY_V1_MAX);
    /* nor a CR at the limit followed by anything else */
    in[107] = 'x';
    expect_invalid_at(in, sizeof(in), PROXY_V1_MAX);
}
END_TEST

START_TEST(v1_no_crlf_is_refused_past_107_bytes)
{
    char in[200];
    memset(in, '1', sizeof(in));
    memcpy(in, "PROXY TCP4 ", 11);
    expect_invalid_at(in, sizeof(in), PROXY_V1_MAX);
    /* a lone CR or LF is not the end of the line */
    for (size_t i = 20; i < sizeof(in); i += 2)
        in[i] = i % 4 ? '\r' : '\n';
    expect_invalid_at(in, sizeof(in), PROXY_V1_MAX);
}
END_TEST

/* One line, then what the connection sends: refused once the line's CRLF is in. */
struct bad_line {
    const char *in;
    size_t len;
};

static const struct bad_line bad_lines[] = {
    /* keyword */
    {S("PROXY TCP5 192.0.2.1 192.0.2.2 1 2\r\n")},
    {S("PROXY tcp4 192.0.2.1 192.0.2.2 1 2\r\n")},
    {S("PROXY Tcp6 ::1 ::2 1 2\r\n")},
    {S("PROXY TCP 192.0.2.1 192.0.2.2 1 2\r\n")},
    {S("PROXY TCP44 192.0.2.1 192.0.2.2 1 2\r\n")},
    {S("PROXY UDP4 192.0.2.1 192.0.2.2 1 2\r\n")},
    {S("PROXY unknown\r\n")},
    {S("PROXY UNKNOWNX\r\n")},
    {S("PROXY \r\n")},
    {S("PROXY \r\nGET / HTTP/1.1\r\n")},
    /* addresses */
    {S("PROXY TCP4 192.0.2 192.0.2.2 1 2\r\n")},
    {S("PROXY TCP4 192.0.2.1.5 192.0.2.2 1 2\r\n")},
    {S("PROXY TCP4 256.0.2.1 192.0.2.2 1 2\r\n")},
    {S("PROXY TCP4 192.0.2.1 192.0.2.2x 1 2\r\n")},
    {S("PROXY TCP4 010.0.2.1 192.0.2.2 1 2\r\n")},
    {S("PROXY TCP4 192.0.2.1 192.00.2.2 1 2\r\n")},
    {S("PROXY TCP4 localhost 192.0.2.2 1 2\r\n")},
    {S("PROXY TCP6 2001:db8:::1 ::2 1 2\r\n")},
    {S("PROXY TCP6 2001:db8::1::2 ::2 1 2\r\n")},
    {S("PROXY TCP6 1:2:3:4:5:6:7:8:9 ::2 1 2\r\n")},
    {S("PROXY TCP6 [::1] ::2 1 2\r\n")},
    {S("PROXY TCP6 fe80::1%eth0 ::2 1 2\r\n")},
    {S("PROXY TCP6 ::1 ::g 1 2\r\n")},
    {S("PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255:1 ::1 1 2\r\n")},
    {S("PROXY TCP4 192.0.2.1\0junk 192.0.2.2 1 2\r\n")},
    {S("PROXY TCP6 ::1\0 ::2 1 2\r\n")},
    /* the family does not match the keyword */
    {S("PROXY TCP4 ::1 ::2 1 2\r\n")},
    {S("PROXY TCP4 192.0.2.1 ::2 1 2\r\n")},
    {S("PROXY TCP6 192.0.2.1 192.0.2.2 1 2\r\n")},
    {S("PROXY TCP6 ::1 192.0.2.2 1 2\r\n")},
    /* ports: [0..65535], decimal, no leading zero */
    {S("PROXY TCP4 192.0.2.1 192.0.2.2 65536 2\r\n")},
    {S("PROXY TCP4 192.0.2.1 192.0.2.2 1 65536\r\n")},
    {S("PROXY TCP4 192.0.2.1 192.0.2.2 99999 2\r\n")},
    {S("PROXY TCP4 192.0.2.1 192.0.2.2 100000 2\r\n")},
    {S("PROXY TCP4 192.0.2.1 192.0.2.2 4294967297 2\r\n")},
    {S("PROXY TCP4 192.0.2.1 192.0.2.2 080 2\r\n")},
    {S("PROXY TCP4 192.0.2.1 192.0.2.2 1 00\r\n")},
    {S("PROXY TCP4 192.0.2.1 192.0.2.2 01 2\r\n")},
    {S("PROXY TCP4 192.0.2.1 192.0.2.2 -1 2\r\n")},
    {S("PROXY TCP4 192.0.2.1 192.0.2.2 +1 2\r\n")},
    {S("PROXY TCP4 192.0.2.1 192.0.2.2 0x10 2\r\n")},
    {S("PROXY TCP4 192.0.2.1 192.0.2.2 1a 2\r\n")},
    /* spaces: exactly one between fields, none at either end */
    {S("PROXY  TCP4 192.0.2.1 192.0.2.2 1 2\r\n")},
    {S("PROXY TCP4  192.0.2.1 192.0.2.2 1 2\r\n")},
    {S("PROXY TCP4 192.0.2.1  192.0.2.2 1 2\r\n")},
    {S("PROXY TCP4 192.0.2.1 192.0.2.2  1 2\r\n")},
    {S("PROXY TCP4 192.0.2.1 192.0.2.2 1  2\r\n")},
    {S("PROXY TCP4 192.0.2.1 192.0.2.2 1 2 \r\n")},
    {S("PROXY TCP4\t192.0.2.1 192.0.2.2 1 2\r\n")},
    {S("PROXY TCP4 192.0.2.1\t192.0.2.2 1 2\r\n")},
    /* fields missing or in excess */
    {S("PROXY TCP4\r\n")},
    {S("PROXY TCP4 \r\n")},
    {S("PROXY TCP4 192.0.2.1 192.0.2.2 1\r\n")},
    {S("PROXY TCP4 192.0.2.1 192.0.2.2 1 2 3\r\n")},
    {S("PROXY TCP4 192.0.2.1 192.0.2.2 1 2 3 4 5 6\r\n")},
    /* a line ends with CRLF, nothing else */
    {S("PROXY TCP4 192.0.2.1 192.0.2.2 1 2\nGET / HTTP/1.1\r\n")},
    {S("PROXY TCP4 192.0.2.1 192.0.2.2 1 2\rGET / HTTP/1.1\r\n")},
    {S("PROXY TCP4 192.0.2.1\r192.0.2.2 1 2\r\n")},
    {S("PROXY TCP4 192.0.2.1 192.0.2.2 1 2\n\r\n")},
};

START_TEST(v1_malformed_is_refused_at_its_crlf)
{
    const struct bad_line *b = &bad_lines[_i];
    const char *crlf = NULL;
    for (size_t i = 0; i + 1 < b->len && crlf == NULL; i++)
        if (b->in[i] == '\r' && b->in[i + 1] == '\n')
            crlf = b->in + i;
    ck_assert_ptr_nonnull(crlf);
    size_t at = (size_t)(crlf - b->in) + 2;
    struct proxy_hdr h;
    const char *why = NULL;
    ck_assert_msg(parse_edge(b->in, b->len, &h, &why) == PROXY_INVALID, "accepted: %s", b->in);
    expect_invalid_at(b->in, b->len, at);
}
END_TEST

START_TEST(v1_keyword_is_case_sensitive)
{
    expect_invalid_at(S("proxy TCP4 192.0.2.1 192.0.2.2 1 2\r\n"), 1);
    expect_invalid_at(S("Proxy TCP4 192.0.2.1 192.0.2.2 1 2\r\n"), 2);
    expect_invalid_at(S("PROXy TCP4 192.0.2.1 192.0.2.2 1 2\r\n"), 5);
    expect_invalid_at(S("PROXY\tTCP4 192.0.2.1 192.0.2.2 1 2\r\n"), 6);
    expect_invalid_at(S("PROXY\r\n"), 6);
}
END_TEST

/* ---- not a header ---------------------------------------------------------------------- */

START_TEST(other_protocols_are_refused_at_their_first_differing_byte)
{
    /* v1 starts with 'P', v2 with CR: a request is refused at its first byte */
    expect_invalid_at(S("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), 1);
    expect_invalid_at(S("POST / HTTP/1.1\r\n"), 2);
    expect_invalid_at(S("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 3);
    expect_invalid_at(S("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"), 1); /* TLS */
    expect_invalid_at(S("SSH-2.0-OpenSSH_9.6\r\n"), 1);
    /* the empty lines a client may send before a request start like v2 */
    expect_invalid_at(S("\r\nGET / HTTP/1.1\r\n"), 3);
    expect_invalid_at(S("\r\n\r\nGET / HTTP/1.1\r\n"), 5);
    expect_invalid_at(S("\r\n\r\n\0\r\nQUIT\r\n"), 12);
    expect_invalid_at(S("\0\0\0\0"), 1);
}
END_TEST

START_TEST(nothing_yet_is_incomplete)
{
    struct proxy_hdr h;
    const char *why;
    ck_assert_int_eq(parse_edge("", 0, &h, &why), PROXY_INCOMPLETE);
    ck_assert_int_eq(parse_edge("PROXY", 5, &h, &why), PROXY_INCOMPLETE);
    ck_assert_int_eq(parse_edge(sig, sizeof(sig), &h, &why), PROXY_INCOMPLETE);
}
END_TEST

/* ---- version 2 ----------------------------------------------------------------------- */

START_TEST(v2_proxy_tcp4)
{
    uint8_t in[64];
    size_t n = v2(in, 0x21, 0x11, addr4, sizeof(addr4));
    ck_assert_uint_eq(n, 28);
    memcpy(in + n, "GET / HTTP/1.1\r\n", 16);
    struct proxy_hdr h;
    expect_header(in, n + 16, n, &h);
    ck_assert_uint_eq(h.version, 2);
    ck_assert(!h.local);
    struct sockaddr_storage src = sa4("192.0.2.1", 56324), dst = sa4("198.51.100.7", 443);
    assert_addr_eq(&h.src, &src);
    assert_addr_eq(&h.dst, &dst);
}
END_TEST

START_TEST(v2_proxy_tcp6)
{
    uint8_t in[64];
    size_t n = v2(in, 0x21, 0x21, addr6, sizeof(addr6));
    ck_assert_uint_eq(n, 52);
    memcpy(in + n, "\x16\x03\x01", 3);
    struct proxy_hdr h;
    expect_header(in, n + 3, n, &h);
    ck_assert_uint_eq(h.version, 2);
    ck_assert(!h.local);
    struct sockaddr_storage src = sa6("2001:db8::1", 56324), dst = sa6("2001:db8::ff", 443);
    assert_addr_eq(&h.src, &src);
    assert_addr_eq(&h.dst, &dst);
}
END_TEST

START_TEST(v2_local)
{
    uint8_t in[64];
    size_t n = v2(in, 0x20, 0x00, NULL, 0);
    memcpy(in + n, "GET", 3);
    struct proxy_hdr h;
    expect_header(in, n + 3, 16, &h);
    ck_assert_uint_eq(h.version, 2);
    ck_assert(h.local);
    /* LOCAL ignores whatever addresses come with it */
    n = v2(in, 0x20, 0x11, addr4, sizeof(addr4));
    expect_header(in, n, n, &h);
    ck_assert(h.local);
    n = v2(in, 0x20, 0x21, addr6, 12); /* too short for IPv6, but not read */
    expect_header(in, n, n, &h);
    ck_assert(h.local);
}
END_TEST

START_TEST(v2_tlvs_are_skipped)
{
    uint8_t a[64];
    memcpy(a, addr4, sizeof(addr4));
    static const uint8_t tlvs[] = {0x02, 0x00, 0x09, 'l',  'o',  'c', 'a', 'l', 'h', 'o',
                                   's',  't',  0x04, 0x00, 0x03, 0,   0,   0, /* PP2_TYPE_NOOP */
                                   0x20, 0x00, 0x00}; /* PP2_TYPE_SSL, empty */
    memcpy(a + sizeof(addr4), tlvs, sizeof(tlvs));
    uint8_t in[128];
    size_t n = v2(in, 0x21, 0x11, a, sizeof(addr4) + sizeof(tlvs));
    memcpy(in + n, "GET", 3);
    struct proxy_hdr h;
    expect_header(in, n + 3, 28 + sizeof(tlvs), &h);
    ck_assert(!h.local);
    struct sockaddr_storage src = sa4("192.0.2.1", 56324), dst = sa4("198.51.100.7", 443);
    assert_addr_eq(&h.src, &src);
    assert_addr_eq(&h.dst, &dst);

    memcpy(a, addr6, sizeof(addr6));
    memcpy(a + sizeof(addr6), tlvs, sizeof(tlvs));
    n = v2(in, 0x21, 0x21, a, sizeof(addr6) + sizeof(tlvs));
    expect_header(in, n, n, &h);
    ck_assert(!h.local);
    src = sa6("2001:db8::1", 56324);
    assert_addr_eq(&h.src, &src);
}
END_TEST

START_TEST(v2_other_families_are_local)
{
    static const struct {
        uint8_t fam;
        size_t alen;
    } fams[] = {
        {0x00, 0},   /* UNSPEC */
        {0x00, 12},  /* UNSPEC, with bytes the receiver ignores */
        {0x12, 12},  /* UDP over IPv4 */
        {0x22, 36},  /* UDP over IPv6 */
        {0x31, 216}, /* UNIX stream */
        {0x32, 216}, /* UNIX datagram */
        {0x01, 0},   /* UNSPEC family, STREAM */
        {0x10, 12},  /* IPv4, UNSPEC protocol */
        {0x20, 36},  /* IPv6, UNSPEC protocol */
    };
    for (size_t i = 0; i < sizeof(fams) / sizeof(fams[0]); i++) {
        uint8_t in[300];
        size_t n = v2(in, 0x21, fams[i].fam, NULL, fams[i].alen);
        memcpy(in + n, "GET", 3);
        struct proxy_hdr h;
        expect_header(in, n + 3, n, &h);
        ck_assert_uint_eq(h.version, 2);
        ck_assert_msg(h.local, "family 0x%02x is not local", fams[i].fam);
    }
}
END_TEST

START_TEST(v2_wrong_version_or_command_is_refused)
{
    static const uint8_t bad[] = {0x11, 0x31, 0xF1, 0x01, 0x10, /* version */
                                  0x22, 0x23, 0x2F};            /* command */
    for (size_t i = 0; i < sizeof(bad); i++) {
        uint8_t in[64];
        size_t n = v2(in, bad[i], 0x11, addr4, sizeof(addr4));
        /* the parser reads the fixed 16 bytes before judging them */
        expect_invalid_at(in, n, 16);
    }
}
END_TEST

START_TEST(v2_undefined_family_or_protocol_is_refused)
{
    /* "other values are unspecified [...] and must be rejected as invalid by receivers" */
    static const uint8_t bad[] = {0x41, 0xF1, 0x13, 0x1F, 0x03, 0x33, 0xFF};
    for (size_t i = 0; i < sizeof(bad); i++) {
        uint8_t in[64];
        size_t n = v2(in, 0x21, bad[i], addr4, sizeof(addr4));
        expect_invalid_at(in, n, 16);
    }
}
END_TEST

START_TEST(v2_every_prefix_is_incomplete)
{
    uint8_t a[PROXY_V2_MAX];
    for (size_t i = 0; i < sizeof(a); i++)
        a[i] = (uint8_t)(i * 7 + 3);
    memcpy(a, addr6, sizeof(addr6));
    static const struct {
        uint8_t ver_cmd, fam;
        size_t alen;
    } hdrs[] = {
        {0x21, 0x11, 12},  {0x21, 0x21, 36},  {0x20, 0x00, 0},   {0x21, 0x00, 0},
        {0x21, 0x31, 216}, {0x21, 0x11, 300}, {0x21, 0x21, 299}, {0x20, 0x00, 500},
    };
    for (size_t i = 0; i < sizeof(hdrs) / sizeof(hdrs[0]); i++) {
        uint8_t in[PROXY_V2_MAX + 16];
        size_t n = v2(in, hdrs[i].ver_cmd, hdrs[i].fam, a, hdrs[i].alen);
        memcpy(in + n, "\r\n\r\n", 4);
        struct proxy_hdr h;
        expect_header(in, n + 4, n, &h);
    }
}
END_TEST

START_TEST(v2_too_short_for_its_family_is_refused)
{
    static const struct {
        uint8_t fam;
        size_t alen;
    } bad[] = {{0x11, 0}, {0x11, 4}, {0x11, 11}, {0x21, 0}, {0x21, 12}, {0x21, 35}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint8_t in[96];
        size_t n = v2(in, 0x21, bad[i].fam, addr6, bad[i].alen);
        memcpy(in + n, "GET / HTTP/1.1\r\n\r\n", 18);
        /* known once the whole header (as long as it says) is in */
        expect_invalid_at(in, n + 18, n);
    }
}
END_TEST

START_TEST(v2_longest_header_is_accepted)
{
    static uint8_t a[PROXY_V2_MAX - 16];
    memset(a, 0, sizeof(a));
    memcpy(a, addr4, sizeof(addr4));
    a[12] = 0x04; /* one PP2_TYPE_NOOP over the rest */
    a[13] = (uint8_t)((sizeof(a) - 15) >> 8);
    a[14] = (uint8_t)(sizeof(a) - 15);
    static uint8_t in[PROXY_V2_MAX + 8];
    size_t n = v2(in, 0x21, 0x11, a, sizeof(a));
    ck_assert_uint_eq(n, PROXY_V2_MAX);
    memcpy(in + n, "GET", 3);
    struct proxy_hdr h;
    expect_header(in, n + 3, PROXY_V2_MAX, &h);
    ck_assert(!h.local);
    struct sockaddr_storage src = sa4("192.0.2.1", 56324);
    assert_addr_eq(&h.src, &src);
}
END_TEST

START_TEST(v2_longer_than_max_is_refused_from_its_length)
{
    static const uint16_t lens[] = {PROXY_V2_MAX - 16 + 1, 4096, 0xFFFF};
    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        uint8_t in[64];
        v2(in, 0x21, 0x11, addr4, sizeof(addr4));
        in[14] = (uint8_t)(lens[i] >> 8);
        in[15] = (uint8_t)lens[i];
        /* refused as soon as the length is in, without waiting for the rest */
        expect_invalid_at(in, 28, 16);
        in[12] = 0x20; /* LOCAL too */
        expect_invalid_at(in, 28, 16);
    }
}
END_TEST

/* ---- proxy_write ------------------------------------------------------------------- */

/* proxy_write() into a heap block of exactly PROXY_WRITE_MAX bytes (ASan
 * sees any write past it); returns its length, <out> gets a copy. */
static size_t write_hdr(int version, const struct sockaddr_storage *src,
                        const struct sockaddr_storage *dst, uint8_t out[PROXY_WRITE_MAX])
{
    uint8_t *b = malloc(PROXY_WRITE_MAX);
    ck_assert_ptr_nonnull(b);
    memset(b, 0xAA, PROXY_WRITE_MAX);
    size_t n = proxy_write(version, src, dst, b);
    ck_assert_uint_gt(n, 0);
    ck_assert_uint_le(n, version == 1 ? PROXY_V1_MAX : PROXY_WRITE_MAX);
    memcpy(out, b, PROXY_WRITE_MAX);
    free(b);
    return n;
}

static void expect_v1_line(const struct sockaddr_storage *src, const struct sockaddr_storage *dst,
                           const char *line)
{
    uint8_t out[PROXY_WRITE_MAX];
    size_t n = write_hdr(1, src, dst, out);
    ck_assert_uint_eq(n, strlen(line));
    ck_assert_mem_eq(out, line, n);
}

START_TEST(write_v1_ipv4)
{
    struct sockaddr_storage s = sa4("192.0.2.1", 56324), d = sa4("198.51.100.7", 443);
    expect_v1_line(&s, &d, "PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n");
    s = sa4("0.0.0.0", 0);
    d = sa4("255.255.255.255", 65535);
    expect_v1_line(&s, &d, "PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n");
}
END_TEST

START_TEST(write_v1_ipv6)
{
    struct sockaddr_storage s = sa6("2001:db8::1", 56324), d = sa6("2001:db8::ff", 443);
    expect_v1_line(&s, &d, "PROXY TCP6 2001:db8::1 2001:db8::ff 56324 443\r\n");
    s = sa6("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535);
    expect_v1_line(&s, &s,
                   "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
                   "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n");
}
END_TEST

START_TEST(write_v1_mapped_is_ipv4)
{
    struct sockaddr_storage s = sa6("::ffff:192.0.2.1", 56324), d = sa6("::ffff:198.51.100.7", 443);
    expect_v1_line(&s, &d, "PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n");
    /* one mapped, one plain IPv4: both IPv4 */
    d = sa4("198.51.100.7", 443);
    expect_v1_line(&s, &d, "PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n");
    expect_v1_line(&d, &s, "PROXY TCP4 198.51.100.7 192.0.2.1 443 56324\r\n");
}
END_TEST

START_TEST(write_v1_other_is_unknown)
{
    struct sockaddr_storage s4 = sa4("192.0.2.1", 1), s6 = sa6("2001:db8::1", 2);
    struct sockaddr_storage u = sa_unix("/run/lb.sock"), none;
    memset(&none, 0, sizeof(none));
    expect_v1_line(&s4, &s6, "PROXY UNKNOWN\r\n");
    expect_v1_line(&s6, &s4, "PROXY UNKNOWN\r\n");
    expect_v1_line(&u, &u, "PROXY UNKNOWN\r\n");
    expect_v1_line(&s4, &u, "PROXY UNKNOWN\r\n");
    expect_v1_line(&u, &s6, "PROXY UNKNOWN\r\n");
    expect_v1_line(&none, &none, "PROXY UNKNOWN\r\n");
}
END_TEST

static void expect_v2(const struct sockaddr_storage *src, const struct sockaddr_storage *dst,
                      uint8_t fam, const uint8_t *addr, size_t alen)
{
    uint8_t out[PROXY_WRITE_MAX], want[PROXY_WRITE_MAX];
    size_t n = write_hdr(2, src, dst, out);
    size_t wn = v2(want, fam == 0 ? 0x20 : 0x21, fam, addr, alen);
    ck_assert_uint_eq(n, wn);
    ck_assert_mem_eq(out, want, n);
}

START_TEST(write_v2_ipv4)
{
    struct sockaddr_storage s = sa4("192.0.2.1", 56324), d = sa4("198.51.100.7", 443);
    expect_v2(&s, &d, 0x11, addr4, sizeof(addr4));
}
END_TEST

START_TEST(write_v2_ipv6)
{
    struct sockaddr_storage s = sa6("2001:db8::1", 56324), d = sa6("2001:db8::ff", 443);
    expect_v2(&s, &d, 0x21, addr6, sizeof(addr6));
}
END_TEST

START_TEST(write_v2_mapped_is_ipv4)
{
    struct sockaddr_storage s = sa6("::ffff:192.0.2.1", 56324), d = sa6("::ffff:198.51.100.7", 443);
    expect_v2(&s, &d, 0x11, addr4, sizeof(addr4));
    d = sa4("198.51.100.7", 443);
    expect_v2(&s, &d, 0x11, addr4, sizeof(addr4));
}
END_TEST

START_TEST(write_v2_other_is_local)
{
    struct sockaddr_storage s4 = sa4("192.0.2.1", 1), s6 = sa6("2001:db8::1", 2);
    struct sockaddr_storage u = sa_unix("/run/lb.sock");
    expect_v2(&s4, &s6, 0x00, NULL, 0);
    expect_v2(&s6, &s4, 0x00, NULL, 0);
    expect_v2(&u, &u, 0x00, NULL, 0);
    expect_v2(&s4, &u, 0x00, NULL, 0);
}
END_TEST

/* Pairs to write and read back; mapped addresses come back as IPv4. */
static const struct {
    const char *src, *dst; /* an IPv6 address has a colon */
    uint16_t sport, dport;
} trips[] = {
    {"192.0.2.1", "198.51.100.7", 56324, 443},
    {"0.0.0.0", "255.255.255.255", 0, 65535},
    {"2001:db8::1", "2001:db8::ff", 1, 80},
    {"::", "::1", 65535, 0},
    {"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "fe80::1", 12345, 54321},
    {"::1.2.3.4", "64:ff9b::192.0.2.33", 1000, 2000},
    {"::ffff:192.0.2.1", "::ffff:198.51.100.7", 56324, 443},
    {"::ffff:192.0.2.1", "198.51.100.7", 56324, 443},
    {"2001:db8::1", "192.0.2.1", 1, 2},
};

static struct sockaddr_storage sa_any(const char *ip, uint16_t port)
{
    return strchr(ip, ':') ? sa6(ip, port) : sa4(ip, port);
}

START_TEST(write_then_parse_gives_the_same_addresses)
{
    struct sockaddr_storage s = sa_any(trips[_i].src, trips[_i].sport);
    struct sockaddr_storage d = sa_any(trips[_i].dst, trips[_i].dport);
    /* what a reader should get: mapped addresses as IPv4 */
    struct sockaddr_storage ws = s, wd = d;
    const struct sockaddr_in6 *s6 = (const void *)&s, *d6 = (const void *)&d;
    if (s.ss_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr))
        ws = sa4(strrchr(trips[_i].src, ':') + 1, trips[_i].sport);
    if (d.ss_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&d6->sin6_addr))
        wd = sa4(strrchr(trips[_i].dst, ':') + 1, trips[_i].dport);
    bool local = ws.ss_family != wd.ss_family;
    for (int version = 1; version <= 2; version++) {
        uint8_t out[PROXY_WRITE_MAX + 8];
        size_t n = write_hdr(version, &s, &d, out);
        memcpy(out + n, "GET / ", 6);
        struct proxy_hdr h;
        expect_header(out, n + 6, n, &h);
        ck_assert_uint_eq(h.version, version);
        ck_assert_msg(h.local == local, "v%d %s %s", version, trips[_i].src, trips[_i].dst);
        if (!local) {
            assert_addr_eq(&h.src, &ws);
            assert_addr_eq(&h.dst, &wd);
        }
    }
}
END_TEST

static Suite *proxyproto_suite(void)
{
    Suite *s = suite_create("proxyproto");

    TCase *v1 = tcase_create("v1");
    tcase_add_checked_fixture(v1, setup, teardown);
    tcase_add_test(v1, v1_tcp4);
    tcase_add_test(v1, v1_tcp6);
    tcase_add_test(v1, v1_tcp6_longest_line);
    tcase_add_test(v1, v1_tcp6_embedded_ipv4);
    tcase_add_test(v1, v1_unknown);
    tcase_add_test(v1, v1_unknown_ignores_the_rest_of_the_line);
    tcase_add_test(v1, v1_longest_line_is_107_bytes);
    tcase_add_test(v1, v1_line_of_108_bytes_is_refused);
    tcase_add_test(v1, v1_no_crlf_is_refused_past_107_bytes);
    tcase_add_loop_test(v1, v1_malformed_is_refused_at_its_crlf, 0,
                        (int)(sizeof(bad_lines) / sizeof(bad_lines[0])));
    tcase_add_test(v1, v1_keyword_is_case_sensitive);
    suite_add_tcase(s, v1);

    TCase *other = tcase_create("not_a_header");
    tcase_add_checked_fixture(other, setup, teardown);
    tcase_add_test(other, other_protocols_are_refused_at_their_first_differing_byte);
    tcase_add_test(other, nothing_yet_is_incomplete);
    suite_add_tcase(s, other);

    TCase *v2c = tcase_create("v2");
    tcase_add_checked_fixture(v2c, setup, teardown);
    tcase_add_test(v2c, v2_proxy_tcp4);
    tcase_add_test(v2c, v2_proxy_tcp6);
    tcase_add_test(v2c, v2_local);
    tcase_add_test(v2c, v2_tlvs_are_skipped);
    tcase_add_test(v2c, v2_other_families_are_local);
    tcase_add_test(v2c, v2_wrong_version_or_command_is_refused);
    tcase_add_test(v2c, v2_undefined_family_or_protocol_is_refused);
    tcase_add_test(v2c, v2_every_prefix_is_incomplete);
    tcase_add_test(v2c, v2_too_short_for_its_family_is_refused);
    tcase_add_test(v2c, v2_longest_header_is_accepted);
    tcase_add_test(v2c, v2_longer_than_max_is_refused_from_its_length);
    suite_add_tcase(s, v2c);

    TCase *w = tcase_create("write");
    tcase_add_checked_fixture(w, setup, teardown);
    tcase_add_test(w, write_v1_ipv4);
    tcase_add_test(w, write_v1_ipv6);
    tcase_add_test(w, write_v1_mapped_is_ipv4);
    tcase_add_test(w, write_v1_other_is_unknown);
    tcase_add_test(w, write_v2_ipv4);
    tcase_add_test(w, write_v2_ipv6);
    tcase_add_test(w, write_v2_mapped_is_ipv4);
    tcase_add_test(w, write_v2_other_is_local);
    tcase_add_loop_test(w, write_then_parse_gives_the_same_addresses, 0,
                        (int)(sizeof(trips) / sizeof(trips[0])));
    suite_add_tcase(s, w);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(proxyproto_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
