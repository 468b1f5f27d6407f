/* tests/e2e/test_tunnel.c: Upgrade tunnels through a real lb-dataplane, with
 * WebSocket (RFC 6455) to lb-backend's /ws: the handshake, messages both
 * ways, server pushes, the close handshake and half-close, resets and dead
 * backends, the tunnel idle timeout, drains, answers other than 101 and
 * 101s nobody asked for, Upgrade requests lb does not forward (h2c, HTTP/1.0,
 * with a body), the tunnel metrics and access-log line, limits.max_tunnels,
 * back-pressure towards a client that does not read, tunnels side by side,
 * a TLS frontend.
 *
 * The client below is a small WebSocket client of its own: a non-blocking
 * socket (or OpenSSL over it) driven by poll(), reading and writing at once
 * so that big messages both ways never deadlock, every wait bounded by a
 * deadline. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "e2e.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

enum {
    OP_CONT = 0x0,
    OP_TEXT = 0x1,
    OP_BINARY = 0x2,
    OP_CLOSE = 0x8,
    OP_PING = 0x9,
    OP_PONG = 0xA,
};

/* ---- a WebSocket client ------------------------------------------------------ */

struct ws {
    int fd;
    SSL_CTX *ctx; /* NULL: plain TCP */
    SSL *ssl;
    unsigned char *rx; /* received, not consumed: rx[rx_off..rx_len) */
    size_t rx_off, rx_len, rx_cap;
    unsigned char *tx; /* queued, not sent: tx[tx_off..tx_len) */
    size_t tx_off, tx_len, tx_cap;
    bool eof;          /* the peer closed its sending side (or reset) */
    bool err;          /* a read or write failed */
    uint64_t sent;     /* bytes sent, the request head included */
    uint64_t received; /* bytes received, the response head included */
    size_t req_len;    /* bytes of our request head */
    size_t head_len;   /* bytes of the response head */
    int status;        /* of the response to the handshake */
    char head[8192];   /* that response head, NUL-terminated */
    char key[32];      /* Sec-WebSocket-Key we sent */
    uint32_t rng;      /* masking keys */
};

struct frame {
    unsigned op;
    bool fin;
    unsigned char *data; /* malloc'ed copy, NUL-terminated */
    size_t len;
};

static void frame_free(struct frame *f)
{
    free(f->data);
    f->data = NULL;
}

static uint32_t ws_rand(struct ws *w)
{
    w->rng ^= w->rng << 13;
    w->rng ^= w->rng >> 17;
    w->rng ^= w->rng << 5;
    return w->rng;
}

static void grow(unsigned char **buf, size_t *cap, size_t need)
{
    if (*cap >= need)
        return;
    size_t nc = *cap ? *cap : 65536;
    while (nc < need)
        nc *= 2;
    unsigned char *nb = realloc(*buf, nc);
    ck_assert_ptr_nonnull(nb);
    *buf = nb;
    *cap = nc;
}

static void ws_queue(struct ws *w, const void *p, size_t n)
{
    if (w->tx_off == w->tx_len)
        w->tx_off = w->tx_len = 0;
    grow(&w->tx, &w->tx_cap, w->tx_len + n);
    memcpy(w->tx + w->tx_len, p, n);
    w->tx_len += n;
}

static size_t ws_pending(const struct ws *w)
{
    return w->tx_len - w->tx_off;
}

/* Queues a client frame: masked, <len> bytes of <p>. */
static void ws_send(struct ws *w, unsigned op, bool fin, const void *p, size_t len)
{
    unsigned char h[14];
    size_t hl = 2;
    h[0] = (unsigned char)((fin ? 0x80 : 0) | op);
    if (len < 126) {
        h[1] = (unsigned char)(0x80 | len);
    } else if (len <= 0xFFFF) {
        h[1] = 0x80 | 126;
        h[2] = (unsigned char)(len >> 8);
        h[3] = (unsigned char)len;
        hl = 4;
    } else {
        h[1] = 0x80 | 127;
        for (int i = 0; i < 8; i++)
            h[2 + i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
        hl = 10;
    }
    uint32_t m = ws_rand(w);
    memcpy(h + hl, &m, 4);
    const unsigned char *mask = h + hl;
    hl += 4;
    ws_queue(w, h, hl);
    grow(&w->tx, &w->tx_cap, w->tx_len + len);
    const unsigned char *src = p;
    for (size_t i = 0; i < len; i++)
        w->tx[w->tx_len + i] = src[i] ^ mask[i & 3];
    w->tx_len += len;
}

/* Queues a close frame with <code>. */
static void ws_send_close(struct ws *w, unsigned code)
{
    unsigned char b[2] = {(unsigned char)(code >> 8), (unsigned char)code};
    ws_send(w, OP_CLOSE, true, b, 2);
}

static void ws_write(struct ws *w)
{
    while (ws_pending(w) > 0 && !w->err) {
        size_t n = ws_pending(w);
        ssize_t r;
        if (w->ssl) {
            int k = SSL_write(w->ssl, w->tx + w->tx_off, (int)(n > (1u << 20) ? 1u << 20 : n));
            if (k <= 0) {
                int e = SSL_get_error(w->ssl, k);
                if (e != SSL_ERROR_WANT_WRITE && e != SSL_ERROR_WANT_READ)
                    w->err = true;
                return;
            }
            r = k;
        } else {
            r = send(w->fd, w->tx + w->tx_off, n, MSG_NOSIGNAL);
            if (r < 0) {
                if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                    w->err = true;
                if (errno != EINTR)
                    return;
                continue;
            }
        }
        w->tx_off += (size_t)r;
        w->sent += (uint64_t)r;
    }
}

/* Reads what is there, at most 256 KiB a call: a client that stops
 * calling stops reading (the back-pressure test relies on it). */
static void ws_read(struct ws *w)
{
    for (uint64_t start = w->received; w->received - start < (256u << 10) && !w->eof;) {
        if (w->rx_off == w->rx_len)
            w->rx_off = w->rx_len = 0;
        if (w->rx_cap - w->rx_len < 65536 && w->rx_off > 0) {
            memmove(w->rx, w->rx + w->rx_off, w->rx_len - w->rx_off);
            w->rx_len -= w->rx_off;
            w->rx_off = 0;
        }
        grow(&w->rx, &w->rx_cap, w->rx_len + 65536 + 1);
        size_t room = 65536;
        ssize_t r;
        if (w->ssl) {
            int k = SSL_read(w->ssl, w->rx + w->rx_len, (int)room);
            if (k <= 0) {
                int e = SSL_get_error(w->ssl, k);
                if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                    return;
                if (e != SSL_ERROR_ZERO_RETURN)
                    w->err = true;
                w->eof = true;
                return;
            }
            r = k;
        } else {
            r = recv(w->fd, w->rx + w->rx_len, room, 0);
            if (r < 0 && errno == EINTR)
                continue;
            if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                return;
            if (r <= 0) {
                w->err = r < 0;
                w->eof = true;
                return;
            }
        }
        w->rx_len += (size_t)r;
        w->rx[w->rx_len] = 0;
        w->received += (uint64_t)r;
    }
}

/* Waits (poll) until the socket can move something or <deadline> passes,
 * then sends and reads what it can. False once nothing can happen any more
 * (the deadline passed, or the peer closed and nothing is left to send). */
static bool ws_step(struct ws *w, uint64_t deadline)
{
    short ev = (short)((w->eof ? 0 : POLLIN) | (ws_pending(w) > 0 && !w->err ? POLLOUT : 0));
    if (ev == 0)
        return false;
    if (!(w->ssl && SSL_pending(w->ssl) > 0)) {
        uint64_t now = e2e_now_ms();
        if (now >= deadline)
            return false;
        struct pollfd p = {.fd = w->fd, .events = ev};
        uint64_t left = deadline - now;
        int r = poll(&p, 1, (int)(left > 1000 ? 1000 : left));
        if (r < 0 && errno != EINTR)
            return false;
        if (r <= 0)
            return true; /* the caller's loop looks at the deadline again */
    }
    ws_write(w);
    ws_read(w);
    return true;
}

/* Sends everything queued within <ms>. */
static bool ws_flush(struct ws *w, uint64_t ms)
{
    uint64_t deadline = e2e_now_ms() + ms;
    while (ws_pending(w) > 0 && !w->err)
        if (!ws_step(w, deadline))
            return false;
    return ws_pending(w) == 0;
}

/* A whole server frame from rx: 1 (<f> filled, consumed), 0 (not yet), -1
 * (masked or with reserved bits: servers never send those). */
static int ws_parse(struct ws *w, struct frame *f)
{
    size_t avail = w->rx_len - w->rx_off;
    const unsigned char *h = w->rx + w->rx_off;
    if (avail < 2)
        return 0;
    if ((h[0] & 0x70) || (h[1] & 0x80))
        return -1;
    size_t hl = 2;
    uint64_t len = h[1] & 0x7F;
    if (len == 126) {
        if (avail < 4)
            return 0;
        len = (uint64_t)h[2] << 8 | h[3];
        hl = 4;
    } else if (len == 127) {
        if (avail < 10)
            return 0;
        len = 0;
        for (int i = 0; i < 8; i++)
            len = len << 8 | h[2 + i];
        hl = 10;
    }
    if (avail - hl < len)
        return 0;
    f->op = h[0] & 0x0F;
    f->fin = (h[0] & 0x80) != 0;
    f->len = (size_t)len;
    f->data = malloc(f->len + 1);
    ck_assert_ptr_nonnull(f->data);
    memcpy(f->data, h + hl, f->len);
    f->data[f->len] = 0;
    w->rx_off += hl + f->len;
    return 1;
}

/* The next server frame, within <ms>. */
static bool ws_recv(struct ws *w, struct frame *f, uint64_t ms)
{
    uint64_t deadline = e2e_now_ms() + ms;
    for (;;) {
        int r = ws_parse(w, f);
        ck_assert_msg(r >= 0, "the server sent a masked frame or reserved bits");
        if (r == 1)
            return true;
        if (!ws_step(w, deadline))
            return false;
    }
}

/* True when the peer closes within <ms> with nothing left unread. */
static bool ws_wait_eof(struct ws *w, uint64_t ms)
{
    uint64_t deadline = e2e_now_ms() + ms;
    while (!w->eof)
        if (!ws_step(w, deadline))
            break;
    return w->eof && w->rx_off == w->rx_len;
}

/* Connects to 127.0.0.1:<port>, over TLS when <tls> (no verification: the
 * test's own certificate); the socket is non-blocking afterwards. */
static struct ws *ws_connect(unsigned port, bool tls)
{
    struct ws *w = calloc(1, sizeof(*w));
    ck_assert_ptr_nonnull(w);
    w->rng = (uint32_t)(e2e_now_ms() * 2654435761u) | 1;
    grow(&w->rx, &w->rx_cap, 65536 + 1);
    grow(&w->tx, &w->tx_cap, 65536);
    w->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(w->fd, 0);
    int one = 1;
    setsockopt(w->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    uint64_t to = e2e_timeout_ms();
    struct timeval tv = {.tv_sec = (time_t)(to / 1000), .tv_usec = (suseconds_t)(to % 1000) * 1000};
    setsockopt(w->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(w->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_msg(connect(w->fd, (struct sockaddr *)&sa, sizeof(sa)) == 0, "connect to %u: %s",
                  port, strerror(errno));
    if (tls) {
        w->ctx = SSL_CTX_new(TLS_client_method());
        ck_assert_ptr_nonnull(w->ctx);
        SSL_CTX_set_options(w->ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
        SSL_CTX_set_mode(w->ctx,
                         SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
        w->ssl = SSL_new(w->ctx);
        SSL_set_fd(w->ssl, w->fd);
        SSL_set_tlsext_host_name(w->ssl, "a.example.com");
        ck_assert_msg(SSL_connect(w->ssl) == 1, "TLS handshake with lb failed");
    }
    ck_assert_int_eq(fcntl(w->fd, F_SETFL, fcntl(w->fd, F_GETFL) | O_NONBLOCK), 0);
    return w;
}

static void ws_free(struct ws *w)
{
    if (w == NULL)
        return;
    if (w->ssl)
        SSL_free(w->ssl);
    SSL_CTX_free(w->ctx);
    close(w->fd);
    free(w->rx);
    free(w->tx);
    free(w);
    ERR_clear_error();
}

static void ws_accept_of(const char *key, char out[64])
{
    char in[128];
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    int n = snprintf(in, sizeof(in), "%s%s", key, WS_GUID);
    ck_assert(EVP_Digest(in, (size_t)n, md, &mdlen, EVP_sha1(), NULL));
    ck_assert_int_gt(EVP_EncodeBlock((unsigned char *)out, md, (int)mdlen), 0);
}

/* Sends a WebSocket handshake for <path> (with <extra> header lines, may be
 * NULL) and <pre> bytes right behind it (may be empty), reads the response
 * head. Returns the status; the head is in w->head. */
static int ws_handshake_with(struct ws *w, const char *path, const char *extra, const void *pre,
                             size_t pre_len)
{
    unsigned char raw[16];
    for (int i = 0; i < 16; i += 4) {
        uint32_t r = ws_rand(w);
        memcpy(raw + i, &r, 4);
    }
    ck_assert_int_eq(EVP_EncodeBlock((unsigned char *)w->key, raw, 16), 24);
    char req[2048];
    int n = snprintf(req, sizeof(req),
                     "GET %s HTTP/1.1\r\nHost: ws.example\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\n%s\r\n",
                     path, w->key, extra ? extra : "");
    ck_assert(n > 0 && (size_t)n < sizeof(req));
    w->req_len = (size_t)n;
    ws_queue(w, req, (size_t)n);
    if (pre_len > 0)
        ws_queue(w, pre, pre_len);
    uint64_t deadline = e2e_now_ms() + e2e_timeout_ms();
    unsigned char *e = NULL;
    while ((e = memmem(w->rx + w->rx_off, w->rx_len - w->rx_off, "\r\n\r\n", 4)) == NULL)
        if (!ws_step(w, deadline))
            return -1;
    w->head_len = (size_t)(e + 4 - (w->rx + w->rx_off));
    ck_assert_uint_lt(w->head_len, sizeof(w->head));
    memcpy(w->head, w->rx + w->rx_off, w->head_len);
    w->head[w->head_len] = 0;
    w->rx_off += w->head_len;
    ck_assert_msg(strncmp(w->head, "HTTP/1.1 ", 9) == 0, "not a response: %s", w->head);
    w->status = atoi(w->head + 9);
    return w->status;
}

static int ws_handshake(struct ws *w, const char *path)
{
    return ws_handshake_with(w, path, NULL, "", 0);
}

/* The value of header <name> in w->head into <out>; false if absent. */
static bool ws_header(const struct ws *w, const char *name, char *out, size_t outsz)
{
    size_t nl = strlen(name);
    for (const char *l = strstr(w->head, "\r\n"); l != NULL; l = strstr(l + 2, "\r\n")) {
        const char *s = l + 2;
        if (strncasecmp(s, name, nl) == 0 && s[nl] == ':') {
            s += nl + 1;
            while (*s == ' ')
                s++;
            const char *e = strstr(s, "\r\n");
            snprintf(out, outsz, "%.*s", (int)(e - s), s);
            return true;
        }
    }
    return false;
}

/* A client through lb on /ws<query>, the 101 checked. */
static struct ws *ws_open(unsigned port, bool tls, const char *path)
{
    struct ws *w = ws_connect(port, tls);
    int st = ws_handshake(w, path);
    ck_assert_msg(st == 101, "handshake on %s: %d\n%s", path, st, w->head);
    return w;
}

/* Client-initiated close: our close with <code>, the server's back with the
 * same code, then the server's end of stream, then ours. */
static void ws_close_handshake(struct ws *w, unsigned code)
{
    struct frame f;
    ws_send_close(w, code);
    ck_assert(ws_flush(w, e2e_timeout_ms()));
    ck_assert_msg(ws_recv(w, &f, e2e_timeout_ms()), "no close frame back");
    ck_assert_uint_eq(f.op, OP_CLOSE);
    ck_assert_uint_eq(f.len, 2);
    ck_assert_uint_eq((unsigned)f.data[0] << 8 | f.data[1], code);
    frame_free(&f);
    ck_assert_msg(ws_wait_eof(w, e2e_timeout_ms()), "the connection did not end after the close");
    /* our end of the TCP connection too: until then the tunnel is half open */
    shutdown(w->fd, SHUT_WR);
}

/* ---- messages --------------------------------------------------------------------- */

static const size_t special_sizes[] = {0, 1, 125, 126, 127, 65535, 65536, 70000, 200000};
#define N_SPECIAL (sizeof(special_sizes) / sizeof(special_sizes[0]))
#define MSG_MAX   200000

/* Message <i>: its size, opcode and bytes, the same on both sides. */
static size_t msg_size(unsigned i)
{
    if (i % 1000 < N_SPECIAL)
        return special_sizes[i % 1000];
    return ((i * 2654435761u) >> 8) % 3000;
}

static unsigned msg_op(unsigned i)
{
    if (i % 97 == 50)
        return OP_PING;
    return i % 3 == 0 ? OP_TEXT : OP_BINARY;
}

static size_t msg_fill(unsigned char *p, unsigned i)
{
    unsigned op = msg_op(i);
    size_t n = msg_size(i);
    if (op == OP_PING && n > 125)
        n = 125;
    for (size_t j = 0; j < n; j++)
        p[j] = op == OP_TEXT ? (unsigned char)('a' + (i + j) % 26)
                             : (unsigned char)(i * 131u + j * 7u + (j >> 9));
    return n;
}

/* Sends messages 0..<n>-1 and checks each comes back (a ping as its pong),
 * in order and intact, sending and reading at once. */
static void exchange_messages(struct ws *w, unsigned n)
{
    unsigned char *buf = malloc(MSG_MAX);
    ck_assert_ptr_nonnull(buf);
    unsigned queued = 0, got = 0;
    uint64_t stall_ms = e2e_timeout_ms();
    uint64_t end = e2e_now_ms() + e2e_scaled_ms(60000);
    uint64_t last = e2e_now_ms();
    while (got < n) {
        while (queued < n && ws_pending(w) < (256u << 10) && queued - got < 256) {
            size_t len = msg_fill(buf, queued);
            ws_send(w, msg_op(queued), true, buf, len);
            queued++;
        }
        struct frame f;
        int r;
        while (got < n && (r = ws_parse(w, &f)) != 0) {
            ck_assert_msg(r == 1, "bad frame from the server");
            size_t len = msg_fill(buf, got);
            unsigned op = msg_op(got) == OP_PING ? OP_PONG : msg_op(got);
            ck_assert_msg(f.op == op && f.fin, "message %u: opcode %u fin %d, want %u", got, f.op,
                          f.fin, op);
            ck_assert_msg(f.len == len, "message %u: %zu bytes, want %zu", got, f.len, len);
            ck_assert_msg(memcmp(f.data, buf, len) == 0, "message %u: bytes differ", got);
            frame_free(&f);
            got++;
            last = e2e_now_ms();
        }
        if (got == n)
            break;
        uint64_t now = e2e_now_ms();
        ck_assert_msg(now - last < stall_ms && now < end,
                      "stuck after %u of %u messages back (%u sent, eof %d)", got, n, queued,
                      w->eof);
        ck_assert_msg(!w->eof, "connection closed after %u of %u messages", got, n);
        ws_step(w, last + stall_ms < end ? last + stall_ms : end);
    }
    free(buf);
}

/* ---- worlds and metrics -------------------------------------------------------------- */

struct cfg {
    uint32_t tunnel_idle_ms; /* 0: default */
    uint32_t max_tunnels;    /* 0: default */
    uint32_t drain_ms;       /* 0: the harness's */
    Lb__V1__Tls *tls;        /* NULL: plain */
    uint32_t rate;           /* per-client rate limit, burst 1; 0: none */
    Lb__V1__RateLimit rl;    /* storage for <rate> */
};

static void tweak(Lb__V1__Snapshot *snap, void *arg)
{
    struct cfg *c = arg;
    if (c->tunnel_idle_ms)
        snap->timeouts->tunnel_idle_ms = c->tunnel_idle_ms;
    if (c->max_tunnels)
        snap->limits->max_tunnels = c->max_tunnels;
    if (c->drain_ms)
        snap->timeouts->drain_ms = c->drain_ms;
    if (c->tls)
        snap->frontends[0]->tls = c->tls;
    if (c->rate) {
        lb__v1__rate_limit__init(&c->rl);
        c->rl.enabled = true;
        c->rl.rate = c->rate;
        c->rl.burst = 1;
        c->rl.per_client = true;
        snap->ratelimit = &c->rl;
    }
}

static struct e2e *start(struct cfg *c, unsigned workers)
{
    struct e2e_opts o = {.backends = 1,
                         .algorithm = LB__V1__ALGORITHM__ROUND_ROBIN,
                         .workers = workers,
                         .tweak = tweak,
                         .tweak_arg = c};
    return e2e_start_opts(&o);
}

static double metric(struct e2e *t, const char *name)
{
    char *text = e2e_scrape(t);
    double v = text ? e2e_metric(text, name, "frontend=\"web\"") : NAN;
    free(text);
    return v;
}

/* Polls metric <name> until it equals <want>, up to e2e_timeout_ms(). */
static bool metric_becomes(struct e2e *t, const char *name, double want)
{
    uint64_t end = e2e_now_ms() + e2e_timeout_ms();
    for (;;) {
        if (metric(t, name) == want)
            return true;
        if (e2e_now_ms() >= end)
            return false;
        e2e_poll_pause(20);
    }
}

/* The last line of lb.log holding <a> and <b> (may be NULL) into <out>. */
static bool log_line(struct e2e *t, const char *a, const char *b, char *out, size_t outsz)
{
    char path[512];
    e2e_path(t, "lb.log", path, sizeof(path));
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return false;
    char line[4096];
    bool found = false;
    while (fgets(line, sizeof(line), f))
        if (strstr(line, a) && (b == NULL || strstr(line, b))) {
            snprintf(out, outsz, "%s", line);
            found = true;
        }
    fclose(f);
    return found;
}

/* The number after "<key>": in JSON line <line>. */
static long long json_num(const char *line, const char *key)
{
    char k[64];
    snprintf(k, sizeof(k), "\"%s\":", key);
    const char *p = strstr(line, k);
    ck_assert_msg(p != NULL, "no %s in %s", key, line);
    return strtoll(p + strlen(k), NULL, 10);
}

#define ACCESS_101 "\"status\":101"

/* ---- 1. the handshake ------------------------------------------------------------------ */

START_TEST(handshake_through_lb)
{
    struct cfg c = {0};
    struct e2e *t = start(&c, 2);
    struct ws *w = ws_open(e2e_lb_port(t), false, "/ws");
    char v[256], want[64];
    ws_accept_of(w->key, want);
    ck_assert_msg(ws_header(w, "Sec-WebSocket-Accept", v, sizeof(v)), "%s", w->head);
    ck_assert_str_eq(v, want);
    ck_assert_msg(ws_header(w, "Upgrade", v, sizeof(v)), "no Upgrade in\n%s", w->head);
    ck_assert_msg(strcasecmp(v, "websocket") == 0, "Upgrade: %s", v);
    ck_assert_msg(ws_header(w, "Connection", v, sizeof(v)), "no Connection in\n%s", w->head);
    ck_assert_msg(strcasecmp(v, "upgrade") == 0, "Connection: %s", v);
    ck_assert(ws_header(w, "X-Backend", v, sizeof(v)));
    ck_assert_str_eq(v, "b0");
    ck_assert_msg(!ws_header(w, "Content-Length", v, sizeof(v)) &&
                      !ws_header(w, "Transfer-Encoding", v, sizeof(v)),
                  "a 101 has no body framing:\n%s", w->head);

    struct frame f;
    ws_send(w, OP_TEXT, true, "hello", 5);
    ck_assert(ws_recv(w, &f, e2e_timeout_ms()));
    ck_assert_uint_eq(f.op, OP_TEXT);
    ck_assert_str_eq((char *)f.data, "hello");
    frame_free(&f);
    ws_send(w, OP_PING, true, "are you there", 13);
    ck_assert(ws_recv(w, &f, e2e_timeout_ms()));
    ck_assert_uint_eq(f.op, OP_PONG);
    ck_assert_str_eq((char *)f.data, "are you there");
    frame_free(&f);
    /* a fragmented message comes back fragmented alike */
    ws_send(w, OP_BINARY, false, "frag", 4);
    ws_send(w, OP_CONT, false, "men", 3);
    ws_send(w, OP_CONT, true, "ted", 3);
    const char *parts[3] = {"frag", "men", "ted"};
    const unsigned ops[3] = {OP_BINARY, OP_CONT, OP_CONT};
    for (int i = 0; i < 3; i++) {
        ck_assert(ws_recv(w, &f, e2e_timeout_ms()));
        ck_assert_uint_eq(f.op, ops[i]);
        ck_assert_int_eq(f.fin, i == 2);
        ck_assert_str_eq((char *)f.data, parts[i]);
        frame_free(&f);
    }
    ws_close_handshake(w, 1000);
    ws_free(w);
    e2e_stop(t);
}
END_TEST

/* Frames sent right behind the handshake, before the 101 came, are bytes lb
 * read with the request: they go through once the tunnel opens. */
START_TEST(frames_sent_with_the_handshake)
{
    struct cfg c = {0};
    struct e2e *t = start(&c, 2);
    struct ws *w = ws_connect(e2e_lb_port(t), false);
    /* three masked frames, encoded into the tx queue then moved aside */
    ws_send(w, OP_TEXT, true, "early-1", 7);
    ws_send(w, OP_BINARY, true, "early-2", 7);
    ws_send(w, OP_PING, true, "early-3", 7);
    size_t pre_len = ws_pending(w);
    unsigned char *pre = malloc(pre_len);
    memcpy(pre, w->tx + w->tx_off, pre_len);
    w->tx_off = w->tx_len = 0;
    ck_assert_int_eq(ws_handshake_with(w, "/ws", NULL, pre, pre_len), 101);
    free(pre);
    const unsigned ops[3] = {OP_TEXT, OP_BINARY, OP_PONG};
    for (int i = 0; i < 3; i++) {
        struct frame f;
        ck_assert_msg(ws_recv(w, &f, e2e_timeout_ms()), "early frame %d did not come back", i);
        char want[16];
        snprintf(want, sizeof(want), "early-%d", i + 1);
        ck_assert_uint_eq(f.op, ops[i]);
        ck_assert_str_eq((char *)f.data, want);
        frame_free(&f);
    }
    ws_close_handshake(w, 1000);
    ws_free(w);
    e2e_stop(t);
}
END_TEST

/* ---- 2. messages ------------------------------------------------------------------------ */

START_TEST(ten_thousand_messages_both_ways)
{
    struct cfg c = {0};
    struct e2e *t = start(&c, 2);
    struct ws *w = ws_open(e2e_lb_port(t), false, "/ws");
    exchange_messages(w, 10000);
    ws_close_handshake(w, 1000);
    ws_free(w);
    ck_assert(metric_becomes(t, "lb_tunnels_open", 0));
    e2e_stop(t);
}
END_TEST

/* Checks server-initiated message <k> of <size> bytes (0: just "k:"). */
static void check_push(struct ws *w, unsigned k, size_t size)
{
    struct frame f;
    ck_assert_msg(ws_recv(w, &f, e2e_timeout_ms()), "push %u did not come", k);
    char num[24];
    int nl = snprintf(num, sizeof(num), "%u:", k);
    size_t want = size > (size_t)nl ? size : (size_t)nl;
    ck_assert_uint_eq(f.op, OP_TEXT);
    ck_assert(f.fin);
    ck_assert_msg(f.len == want, "push %u: %zu bytes, want %zu", k, f.len, want);
    ck_assert_msg(memcmp(f.data, num, (size_t)nl) == 0, "push %u starts with %.20s", k, f.data);
    size_t j = (size_t)nl; /* one check at the end: each ck_assert is a message to the runner */
    while (j < f.len && f.data[j] == 'a' + (j - (size_t)nl) % 26)
        j++;
    ck_assert_msg(j == f.len, "push %u: byte %zu", k, j);
    frame_free(&f);
}

START_TEST(server_pushes_and_closes)
{
    struct cfg c = {0};
    struct e2e *t = start(&c, 2);
    unsigned port = e2e_lb_port(t);

    /* 2000 small pushes, then the echo still works */
    struct ws *w = ws_open(port, false, "/ws?push=2000");
    for (unsigned k = 0; k < 2000; k++)
        check_push(w, k, 0);
    exchange_messages(w, 300);
    ws_close_handshake(w, 1000);
    ws_free(w);

    /* big pushes: 16-bit and 64-bit lengths */
    w = ws_open(port, false, "/ws?push=30&size=70000");
    for (unsigned k = 0; k < 30; k++)
        check_push(w, k, 70000);
    ws_close_handshake(w, 1001);
    ws_free(w);

    /* the server closes first: its close, ours back, then the end */
    w = ws_open(port, false, "/ws?push=5&size=300&close=1001");
    for (unsigned k = 0; k < 5; k++)
        check_push(w, k, 300);
    struct frame f;
    ck_assert(ws_recv(w, &f, e2e_timeout_ms()));
    ck_assert_uint_eq(f.op, OP_CLOSE);
    ck_assert_uint_eq(f.len, 5);
    ck_assert_uint_eq((unsigned)f.data[0] << 8 | f.data[1], 1001);
    ck_assert_mem_eq(f.data + 2, "bye", 3);
    frame_free(&f);
    ws_send_close(w, 1001);
    ck_assert(ws_flush(w, e2e_timeout_ms()));
    ck_assert_msg(ws_wait_eof(w, e2e_timeout_ms()), "no end after the server's close");
    ws_free(w);
    ck_assert(metric_becomes(t, "lb_tunnels_open", 0));
    ck_assert_double_eq(metric(t, "lb_tunnels_total"), 3);
    e2e_stop(t);
}
END_TEST

/* ---- 3. close and half-close --------------------------------------------------------------- */

/* The client sends its close and shuts its sending side at once: lb passes
 * the end of stream on and still carries the server's close back. */
START_TEST(client_half_close_after_close_frame)
{
    struct cfg c = {0};
    struct e2e *t = start(&c, 2);
    struct ws *w = ws_open(e2e_lb_port(t), false, "/ws");
    exchange_messages(w, 50);
    ws_send_close(w, 1000);
    ck_assert(ws_flush(w, e2e_timeout_ms()));
    ck_assert_int_eq(shutdown(w->fd, SHUT_WR), 0);
    struct frame f;
    ck_assert_msg(ws_recv(w, &f, e2e_timeout_ms()), "the server's close was lost after our FIN");
    ck_assert_uint_eq(f.op, OP_CLOSE);
    ck_assert_uint_eq((unsigned)f.data[0] << 8 | f.data[1], 1000);
    frame_free(&f);
    ck_assert(ws_wait_eof(w, e2e_timeout_ms()));
    ck_assert(metric_becomes(t, "lb_tunnels_open", 0));
    char line[4096];
    ck_assert(e2e_wait_log(t, "lb.log", ACCESS_101, 1));
    ck_assert(log_line(t, ACCESS_101, NULL, line, sizeof(line)));
    ck_assert_msg(strstr(line, "\"error\"") == NULL, "a clean end logged an error: %s", line);
    ws_free(w);
    e2e_stop(t);
}
END_TEST

/* The backend dies: the client sees the end of the stream, and once it
 * closes too the tunnel is over. */
START_TEST(backend_gone_mid_tunnel)
{
    struct cfg c = {0};
    struct e2e *t = start(&c, 2);
    struct ws *w = ws_open(e2e_lb_port(t), false, "/ws");
    exchange_messages(w, 20);
    e2e_kill_backend(t, 0);
    ck_assert_msg(ws_wait_eof(w, e2e_timeout_ms()), "the backend's end did not reach the client");
    ws_free(w);
    ck_assert(metric_becomes(t, "lb_tunnels_open", 0));
    ck_assert(e2e_wait_log(t, "lb.log", ACCESS_101, 1));
    e2e_stop(t);
}
END_TEST

/* ---- 4. the idle timeout ----------------------------------------------------------------------
 */

#define IDLE_MS 1000

START_TEST(idle_timeout_closes_a_silent_tunnel)
{
    struct cfg c = {.tunnel_idle_ms = IDLE_MS};
    struct e2e *t = start(&c, 2);
    struct ws *w = ws_open(e2e_lb_port(t), false, "/ws");

    /* traffic both ways (ping, pong) every 100 ms for 2.5 idle times: the
     * tunnel stays open. The pauses pace the traffic: time is under test. */
    uint64_t t0 = e2e_now_ms();
    unsigned pings = 0;
    while (e2e_now_ms() - t0 < IDLE_MS * 5 / 2) {
        struct frame f;
        ws_send(w, OP_PING, true, "keep", 4);
        ck_assert_msg(ws_recv(w, &f, e2e_timeout_ms()),
                      "tunnel closed after %llu ms of traffic every 100 ms (idle timeout %u ms)",
                      (unsigned long long)(e2e_now_ms() - t0), IDLE_MS);
        ck_assert_uint_eq(f.op, OP_PONG);
        frame_free(&f);
        pings++;
        e2e_sleep_ms(100);
    }
    /* traffic one way only (pongs, which the server ignores) keeps it too */
    t0 = e2e_now_ms();
    while (e2e_now_ms() - t0 < IDLE_MS * 3 / 2) {
        ws_send(w, OP_PONG, true, "x", 1);
        ck_assert(ws_flush(w, e2e_timeout_ms()));
        e2e_sleep_ms(100);
    }
    struct frame f;
    ws_send(w, OP_TEXT, true, "still", 5);
    ck_assert_msg(ws_recv(w, &f, e2e_timeout_ms()),
                  "tunnel closed while the client sent every 100 ms (idle timeout %u ms)", IDLE_MS);
    ck_assert_str_eq((char *)f.data, "still");
    frame_free(&f);

    /* then silence: lb closes it after the idle time, not before */
    uint64_t quiet = e2e_now_ms();
    ck_assert_msg(ws_wait_eof(w, IDLE_MS + e2e_timeout_ms()), "a silent tunnel stayed open");
    uint64_t took = e2e_now_ms() - quiet;
    /* lb's quiet began a little before ours; libev's loop time lags too */
    ck_assert_msg(took >= IDLE_MS * 3 / 4, "closed after %llu ms of silence",
                  (unsigned long long)took);
    ws_free(w);
    ck_assert(metric_becomes(t, "lb_tunnels_open", 0));
    ck_assert(e2e_wait_log(t, "lb.log", ACCESS_101, 1));
    char line[4096];
    ck_assert(log_line(t, ACCESS_101, NULL, line, sizeof(line)));
    ck_assert_msg(strstr(line, "\"error\"") && strstr(line, "tunnelIdle"),
                  "the idle end is not in the log line: %s", line);
    e2e_stop(t);
}
END_TEST

/* ---- 5. drains
 * ------------------------------------------------------------------------------------ */

/* A drain lets an open tunnel work on; lb exits once it ends, long before the
 * drain time. */
START_TEST(drain_waits_for_the_tunnel)
{
    uint64_t drain = 3 * e2e_timeout_ms();
    if (drain < 20000)
        drain = 20000;
    struct cfg c = {.drain_ms = (uint32_t)drain};
    struct e2e *t = start(&c, 2);
    struct ws *w = ws_open(e2e_lb_port(t), false, "/ws");
    exchange_messages(w, 100);
    uint64_t t0 = e2e_now_ms();
    ck_assert_int_eq(kill(e2e_lb_pid(t), SIGTERM), 0);
    ck_assert_msg(e2e_wait_log(t, "lb.log", "drain_tunnels", 1), "no drain_tunnels log event");
    exchange_messages(w, 1000); /* the tunnel works during the drain */
    ck_assert_msg(!e2e_wait_exit(e2e_lb_pid(t), 0, NULL), "lb exited with a tunnel open");
    ws_close_handshake(w, 1001);
    int st = 0;
    ck_assert_msg(e2e_lb_wait_exit(t, e2e_timeout_ms(), &st),
                  "lb did not exit once the last tunnel ended");
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit status %d", st);
    ck_assert_msg(e2e_now_ms() - t0 < drain, "lb waited for the drain time");
    ck_assert_uint_eq(e2e_log_count(t, "lb.log", "drain_timeout"), 0);
    ck_assert_uint_eq(e2e_log_count(t, "lb.log", ACCESS_101), 1);
    ws_free(w);
    e2e_stop(t);
}
END_TEST

/* A tunnel still open when the drain time is up is closed, logged, and lb
 * exits 0. */
START_TEST(drain_time_up_closes_the_tunnel)
{
    enum {
        DRAIN_MS = 1500
    };
    struct cfg c = {.drain_ms = DRAIN_MS};
    struct e2e *t = start(&c, 2);
    struct ws *w = ws_open(e2e_lb_port(t), false, "/ws");
    exchange_messages(w, 20);
    uint64_t t0 = e2e_now_ms();
    ck_assert_int_eq(kill(e2e_lb_pid(t), SIGTERM), 0);
    ck_assert(e2e_wait_log(t, "lb.log", "drain_tunnels", 1));
    exchange_messages(w, 20);
    ck_assert_msg(ws_wait_eof(w, DRAIN_MS + e2e_timeout_ms()),
                  "the tunnel was not closed at the end of the drain");
    ck_assert_msg(e2e_now_ms() - t0 >= DRAIN_MS - 50, "closed %llu ms into a %u ms drain",
                  (unsigned long long)(e2e_now_ms() - t0), DRAIN_MS);
    int st = 0;
    ck_assert(e2e_lb_wait_exit(t, e2e_timeout_ms(), &st));
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit status %d", st);
    char line[4096];
    ck_assert_msg(log_line(t, ACCESS_101, "\"error\"", line, sizeof(line)),
                  "no access-log line with an error for the tunnel cut by the drain");
    ck_assert_msg(strstr(line, "shutdown"), "%s", line);
    ws_free(w);
    e2e_stop(t);
}
END_TEST

/* ---- 6. Upgrade requests that stay HTTP
 * ---------------------------------------------------------- */

/* Sends <req> on <conn>, reads the response. */
static void roundtrip(struct e2e_conn *conn, const char *req, struct e2e_resp *r)
{
    ck_assert_int_eq(e2e_conn_send(conn, req, strlen(req)), 0);
    ck_assert_int_eq(e2e_conn_read(conn, r, false), 0);
}

static void next_request_works(struct e2e_conn *conn)
{
    struct e2e_resp r;
    roundtrip(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.body, "b0");
    ck_assert(!r.closed);
    e2e_resp_free(&r);
}

#define WS_HEADERS                                                                                 \
    "Upgrade: websocket\r\nConnection: Upgrade\r\n"                                                \
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"

START_TEST(refusal_keeps_http)
{
    struct cfg c = {0};
    struct e2e *t = start(&c, 2);
    struct e2e_conn *conn = e2e_connect(e2e_lb_port(t));
    ck_assert_ptr_nonnull(conn);
    struct e2e_resp r;
    char v[128];
    const char *paths[2] = {"/ws?deny=403", "/status/403"};
    for (int i = 0; i < 2; i++) {
        char req[512];
        snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: x\r\n" WS_HEADERS "\r\n", paths[i]);
        roundtrip(conn, req, &r);
        ck_assert_int_eq(r.status, 403);
        ck_assert(!r.closed);
        ck_assert_msg(!e2e_resp_header(&r, "Upgrade", v, sizeof(v)), "%s", r.head);
        e2e_resp_free(&r);
        next_request_works(conn);
    }
    /* a request pipelined behind a refused Upgrade is the next request */
    const char *two = "GET /ws?deny=403 HTTP/1.1\r\nHost: x\r\n" WS_HEADERS "\r\n"
                      "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    ck_assert_int_eq(e2e_conn_send(conn, two, strlen(two)), 0);
    ck_assert_int_eq(e2e_conn_read(conn, &r, false), 0);
    ck_assert_int_eq(r.status, 403);
    e2e_resp_free(&r);
    ck_assert_int_eq(e2e_conn_read(conn, &r, false), 0);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.body, "b0");
    e2e_resp_free(&r);
    e2e_conn_close(conn);
    ck_assert_double_eq(metric(t, "lb_tunnels_total"), 0);
    e2e_stop(t);
}
END_TEST

START_TEST(ignored_upgrade_gets_the_plain_response)
{
    struct cfg c = {0};
    struct e2e *t = start(&c, 2);
    struct e2e_conn *conn = e2e_connect(e2e_lb_port(t));
    ck_assert_ptr_nonnull(conn);
    struct e2e_resp r;
    char v[128];
    roundtrip(conn, "GET /headers HTTP/1.1\r\nHost: x\r\n" WS_HEADERS "\r\n", &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert(!r.closed);
    ck_assert(!e2e_resp_header(&r, "Upgrade", v, sizeof(v)));
    /* the backend was asked: Upgrade and "Connection: upgrade" went along */
    ck_assert_msg(strstr(r.body, "\r\nUpgrade: websocket\r\n"), "%s", r.body);
    ck_assert_msg(strcasestr(r.body, "\r\nConnection: upgrade\r\n"), "%s", r.body);
    e2e_resp_free(&r);
    next_request_works(conn);
    e2e_conn_close(conn);
    e2e_stop(t);
}
END_TEST

/* Upgrades lb does not forward: h2c (HTTP/2 is lb's own business), an
 * HTTP/1.0 request, a request with a body. The backend sees no Upgrade. */
START_TEST(upgrades_not_forwarded)
{
    struct cfg c = {0};
    struct e2e *t = start(&c, 2);
    unsigned port = e2e_lb_port(t);
    struct e2e_resp r;
    const char *h2c = "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                      "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n";
    ck_assert_int_eq(e2e_request(port, "GET", "/headers", h2c, NULL, 0, &r), 0);
    ck_assert_int_eq(r.status, 200);
    ck_assert_msg(!strcasestr(r.body, "\r\nUpgrade:"), "h2c went to the backend:\n%s", r.body);
    ck_assert_msg(!strcasestr(r.body, "upgrade\r\n"), "Connection: upgrade went along:\n%s",
                  r.body);
    e2e_resp_free(&r);

    /* /ws without the Upgrade field: the backend's 426 */
    const char *ws_h2c = "Upgrade: h2c\r\nConnection: Upgrade\r\n"
                         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                         "Sec-WebSocket-Version: 13\r\n";
    ck_assert_int_eq(e2e_request(port, "GET", "/ws", ws_h2c, NULL, 0, &r), 0);
    ck_assert_int_eq(r.status, 426);
    e2e_resp_free(&r);

    /* HTTP/1.0 knows no Upgrade */
    size_t len = 0;
    bool closed = false;
    const char *req10 = "GET /ws HTTP/1.0\r\nHost: x\r\n" WS_HEADERS "\r\n";
    char *raw = e2e_raw(port, req10, strlen(req10), e2e_timeout_ms(), &len, &closed);
    ck_assert_ptr_nonnull(raw);
    ck_assert_msg(strncmp(raw, "HTTP/1.1 426 ", 13) == 0, "%s", raw);
    free(raw);

    /* with a body it is no Upgrade either */
    ck_assert_int_eq(e2e_request(port, "POST", "/headers", WS_HEADERS, "hello", 5, &r), 0);
    ck_assert_int_eq(r.status, 200);
    ck_assert_msg(!strcasestr(r.body, "\r\nUpgrade:"), "%s", r.body);
    e2e_resp_free(&r);
    ck_assert_double_eq(metric(t, "lb_tunnels_total"), 0);
    e2e_stop(t);
}
END_TEST

/* h2c offered in a list with another protocol: the request is forwarded as
 * an Upgrade (for the other one), but h2c must not reach the backend, which
 * could otherwise pick it and have lb tunnel HTTP/2 ("never tunnelled"). */
START_TEST(h2c_in_a_list_not_forwarded)
{
    struct cfg c = {0};
    struct e2e *t = start(&c, 2);
    struct e2e_resp r;
    const char *both = "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c, websocket\r\n"
                       "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n";
    ck_assert_int_eq(e2e_request(e2e_lb_port(t), "GET", "/headers", both, NULL, 0, &r), 0);
    ck_assert_int_eq(r.status, 200);
    ck_assert_msg(!strcasestr(r.body, "h2c"), "the backend was offered h2c:\n%s", r.body);
    e2e_resp_free(&r);
    e2e_stop(t);
}
END_TEST

/* ---- 7. metrics and the access log
 * ------------------------------------------------------------------ */

START_TEST(metrics_and_access_log)
{
    struct cfg c = {0};
    struct e2e *t = start(&c, 2);
    ck_assert_double_eq(metric(t, "lb_tunnels_total"), 0);
    ck_assert_double_eq(metric(t, "lb_tunnels_open"), 0);
    struct ws *w = ws_open(e2e_lb_port(t), false, "/ws?push=3&size=1000");
    for (unsigned k = 0; k < 3; k++)
        check_push(w, k, 1000);
    exchange_messages(w, 200);
    ck_assert(metric_becomes(t, "lb_tunnels_open", 1));
    ck_assert_double_eq(metric(t, "lb_tunnels_total"), 1);
    ck_assert_uint_eq(e2e_log_count(t, "lb.log", ACCESS_101), 0); /* written at the end */
    ws_close_handshake(w, 1000);
    ck_assert(metric_becomes(t, "lb_tunnels_open", 0));
    ck_assert_double_eq(metric(t, "lb_tunnels_total"), 1);
    /* every byte after the heads, each way */
    uint64_t up = w->sent - w->req_len, down = w->received - w->head_len;
    ck_assert_double_eq(metric(t, "lb_tunnel_received_bytes_total"), (double)up);
    ck_assert_double_eq(metric(t, "lb_tunnel_sent_bytes_total"), (double)down);

    ck_assert(e2e_wait_log(t, "lb.log", ACCESS_101, 1));
    char line[4096];
    ck_assert(log_line(t, ACCESS_101, NULL, line, sizeof(line)));
    ck_assert_msg(strstr(line, "\"path\":\"/ws?push=3&size=1000\""), "%s", line);
    ck_assert_msg(strstr(line, "\"method\":\"GET\""), "%s", line);
    ck_assert_msg(strstr(line, "\"backend\":\"b0\""), "%s", line);
    ck_assert_msg(strstr(line, "\"error\"") == NULL, "%s", line);
    ck_assert_int_eq(json_num(line, "bytes_in"), (long long)w->sent);
    ck_assert_int_eq(json_num(line, "bytes_out"), (long long)w->received);
    ck_assert_int_ge(json_num(line, "duration_ms"), 0);
    ws_free(w);

    /* a second one counts, and its end brings the gauge back too */
    w = ws_open(e2e_lb_port(t), false, "/ws");
    ck_assert(metric_becomes(t, "lb_tunnels_open", 1));
    ws_close_handshake(w, 1000);
    ws_free(w);
    ck_assert(metric_becomes(t, "lb_tunnels_open", 0));
    ck_assert_double_eq(metric(t, "lb_tunnels_total"), 2);
    ck_assert(e2e_wait_log(t, "lb.log", ACCESS_101, 2));
    e2e_stop(t);
}
END_TEST

/* A 101 the request did not ask for is a bad answer (502); asked for, it
 * opens the tunnel, and bytes the backend sent behind its 101 come along. */
START_TEST(unasked_switch_is_502)
{
    struct cfg c = {0};
    struct e2e *t = start(&c, 2);
    unsigned port = e2e_lb_port(t);
    struct e2e_resp r;
    ck_assert_int_eq(e2e_request(port, "GET", "/bad/switch", NULL, NULL, 0, &r), 0);
    ck_assert_int_eq(r.status, 502);
    e2e_resp_free(&r);
    ck_assert_int_eq(e2e_request(port, "GET", "/bad/switch",
                                 "Connection: upgrade\r\nUpgrade: h2c\r\n", NULL, 0, &r),
                     0);
    ck_assert_int_eq(r.status, 502);
    e2e_resp_free(&r);

    struct ws *w = ws_connect(port, false);
    ck_assert_int_eq(ws_handshake(w, "/bad/switch"), 101);
    ck_assert(ws_wait_eof(w, e2e_timeout_ms()) || w->rx_len - w->rx_off == 7);
    ck_assert_uint_eq(w->rx_len - w->rx_off, 7);
    ck_assert_mem_eq(w->rx + w->rx_off, "unasked", 7);
    ws_free(w);
    ck_assert(metric_becomes(t, "lb_tunnels_open", 0));
    ck_assert_double_eq(metric(t, "lb_tunnels_total"), 1);
    e2e_stop(t);
}
END_TEST

/* The client resets its connection mid-tunnel: the tunnel ends on the error,
 * logged, and the gauge comes back. */
START_TEST(client_reset_mid_tunnel)
{
    struct cfg c = {0};
    struct e2e *t = start(&c, 2);
    struct ws *w = ws_open(e2e_lb_port(t), false, "/ws");
    exchange_messages(w, 20);
    ck_assert(metric_becomes(t, "lb_tunnels_open", 1));
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    ck_assert_int_eq(setsockopt(w->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
    ws_free(w); /* close with linger 0: a reset */
    ck_assert(metric_becomes(t, "lb_tunnels_open", 0));
    ck_assert(e2e_wait_log(t, "lb.log", ACCESS_101, 1));
    char line[4096];
    ck_assert(log_line(t, ACCESS_101, NULL, line, sizeof(line)));
    ck_assert_msg(strstr(line, "\"error\""), "a reset is an error: %s", line);
    /* lb and the backend serve on */
    ck_assert_str_eq(e2e_get(t, "/"), "b0");
    e2e_stop(t);
}
END_TEST

/* A client that does not read: lb stops reading the backend (back-pressure)
 * instead of buffering the 21 MB it pushes; then everything arrives intact. */
START_TEST(slow_reader_back_pressure)
{
    enum {
        PUSHES = 300,
        SIZE = 70000
    };
    struct cfg c = {0};
    struct e2e *t = start(&c, 2);
    struct ws *w = ws_open(e2e_lb_port(t), false, "/ws?push=300&size=70000");
    /* the bytes through lb stop growing while the client does not read
     * (polled until three scrapes agree; the pauses space the polls) */
    double last = -1, v = 0;
    unsigned same = 0;
    uint64_t end = e2e_now_ms() + e2e_timeout_ms();
    while (same < 3 && e2e_now_ms() < end) {
        e2e_poll_pause(100);
        v = metric(t, "lb_tunnel_sent_bytes_total");
        same = v == last ? same + 1 : 0;
        last = v;
    }
    ck_assert_msg(same == 3, "the tunnel kept moving with no reader (%.0f bytes)", v);
    ck_assert_msg(v < (double)PUSHES * SIZE / 2, "lb took %.0f of %u bytes with no reader", v,
                  PUSHES * SIZE);
    for (unsigned k = 0; k < PUSHES; k++)
        check_push(w, k, SIZE);
    exchange_messages(w, 100);
    ws_close_handshake(w, 1000);
    ws_free(w);
    ck_assert(metric_becomes(t, "lb_tunnels_open", 0));
    e2e_stop(t);
}
END_TEST

/* Tunnels side by side, on both workers, each with its own bytes. */
START_TEST(concurrent_tunnels)
{
    enum {
        N = 8
    };
    struct cfg c = {0};
    struct e2e *t = start(&c, 2);
    struct ws *w[N];
    for (int i = 0; i < N; i++)
        w[i] = ws_open(e2e_lb_port(t), false, i % 2 ? "/ws?push=50&size=200" : "/ws");
    ck_assert(metric_becomes(t, "lb_tunnels_open", N));
    for (int i = 1; i < N; i += 2)
        for (unsigned k = 0; k < 50; k++)
            check_push(w[i], k, 200);
    for (int round = 0; round < 3; round++)
        for (int i = 0; i < N; i++)
            exchange_messages(w[i], 100);
    for (int i = 0; i < N; i++) {
        ws_close_handshake(w[i], 1000);
        ws_free(w[i]);
    }
    ck_assert(metric_becomes(t, "lb_tunnels_open", 0));
    ck_assert_double_eq(metric(t, "lb_tunnels_total"), N);
    ck_assert(e2e_wait_log(t, "lb.log", ACCESS_101, N));
    e2e_stop(t);
}
END_TEST

/* ---- 8. limits.max_tunnels
 * ------------------------------------------------------------------------ */

START_TEST(max_tunnels_answers_503)
{
    struct cfg c = {.max_tunnels = 1};
    struct e2e *t = start(&c, 1);
    unsigned port = e2e_lb_port(t);
    struct ws *w1 = ws_open(port, false, "/ws");
    ck_assert(metric_becomes(t, "lb_tunnels_open", 1));

    struct ws *w2 = ws_connect(port, false);
    ck_assert_int_eq(ws_handshake(w2, "/ws"), 503);
    char v[64];
    ck_assert_msg(ws_header(w2, "Retry-After", v, sizeof(v)), "%s", w2->head);
    ws_free(w2);

    /* the first still works; once it ends there is room again */
    exchange_messages(w1, 50);
    ws_close_handshake(w1, 1000);
    ws_free(w1);
    ck_assert(metric_becomes(t, "lb_tunnels_open", 0));
    struct ws *w3 = ws_open(port, false, "/ws");
    exchange_messages(w3, 10);
    ws_close_handshake(w3, 1000);
    ws_free(w3);
    ck_assert(metric_becomes(t, "lb_tunnels_open", 0));
    ck_assert_double_eq(metric(t, "lb_tunnels_total"), 2);
    e2e_stop(t);
}
END_TEST

/* The rate limiter counts an upgrade request like any other: the second
 * within the same second is refused with 429 and opens no tunnel. */
START_TEST(rate_limit_counts_upgrades)
{
    struct cfg c = {.rate = 1};
    struct e2e *t = start(&c, 1);
    unsigned port = e2e_lb_port(t);
    struct ws *w1 = ws_open(port, false, "/ws");
    struct ws *w2 = ws_connect(port, false);
    ck_assert_int_eq(ws_handshake(w2, "/ws"), 429);
    ws_free(w2);
    exchange_messages(w1, 10);
    ws_close_handshake(w1, 1000);
    ws_free(w1);
    ck_assert(metric_becomes(t, "lb_tunnels_open", 0));
    ck_assert_double_eq(metric(t, "lb_tunnels_total"), 1);
    e2e_stop(t);
}
END_TEST

/* The refused request is an ordinary answer: the connection stays HTTP. */
START_TEST(max_tunnels_refusal_keeps_http)
{
    struct cfg c = {.max_tunnels = 1};
    struct e2e *t = start(&c, 1);
    unsigned port = e2e_lb_port(t);
    struct ws *w1 = ws_open(port, false, "/ws");
    struct e2e_conn *conn = e2e_connect(port);
    ck_assert_ptr_nonnull(conn);
    struct e2e_resp r;
    roundtrip(conn, "GET /ws HTTP/1.1\r\nHost: x\r\n" WS_HEADERS "\r\n", &r);
    ck_assert_int_eq(r.status, 503);
    ck_assert_msg(!r.closed, "the connection closed after the 503:\n%s", r.head);
    e2e_resp_free(&r);
    next_request_works(conn);
    e2e_conn_close(conn);
    ws_close_handshake(w1, 1000);
    ws_free(w1);
    e2e_stop(t);
}
END_TEST

/* ---- 9. a TLS frontend
 * ------------------------------------------------------------------------------ */

START_TEST(tls_frontend)
{
    struct e2e_tls1 tls;
    e2e_tls1_init(&tls, "srv-rsa");
    struct cfg c = {.tls = &tls.tls};
    struct e2e *t = start(&c, 2);
    struct ws *w = ws_connect(e2e_lb_port(t), true);
    ck_assert_int_eq(ws_handshake(w, "/ws?push=10&size=70000"), 101);
    char v[256], want[64];
    ws_accept_of(w->key, want);
    ck_assert(ws_header(w, "Sec-WebSocket-Accept", v, sizeof(v)));
    ck_assert_str_eq(v, want);
    for (unsigned k = 0; k < 10; k++)
        check_push(w, k, 70000);
    exchange_messages(w, 1500); /* sizes up to 200000 bytes */
    ws_close_handshake(w, 1000);
    ws_free(w);
    ck_assert(metric_becomes(t, "lb_tunnels_open", 0));
    e2e_stop(t);
    e2e_tls1_free(&tls);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("tunnel");
    struct {
        const char *name;
        const TTest *test;
    } cases[] = {
        {"handshake", handshake_through_lb},
        {"early_frames", frames_sent_with_the_handshake},
        {"messages", ten_thousand_messages_both_ways},
        {"push", server_pushes_and_closes},
        {"half_close", client_half_close_after_close_frame},
        {"backend_gone", backend_gone_mid_tunnel},
        {"idle", idle_timeout_closes_a_silent_tunnel},
        {"drain_wait", drain_waits_for_the_tunnel},
        {"drain_time_up", drain_time_up_closes_the_tunnel},
        {"refusal", refusal_keeps_http},
        {"ignored", ignored_upgrade_gets_the_plain_response},
        {"not_forwarded", upgrades_not_forwarded},
        {"h2c_in_list", h2c_in_a_list_not_forwarded},
        {"metrics_log", metrics_and_access_log},
        {"unasked_switch", unasked_switch_is_502},
        {"client_reset", client_reset_mid_tunnel},
        {"back_pressure", slow_reader_back_pressure},
        {"concurrent", concurrent_tunnels},
        {"max_tunnels", max_tunnels_answers_503},
        {"max_tunnels_http", max_tunnels_refusal_keeps_http},
        {"rate_limit", rate_limit_counts_upgrades},
        {"tls", tls_frontend},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        TCase *tc = e2e_tcase(cases[i].name);
        tcase_add_test(tc, cases[i].test);
        suite_add_tcase(s, tc);
    }
    return e2e_run(s);
}
