/* tests/backend/lb-backend.c: the demo, test and benchmark origin server.
 *
 * lb-backend --port P [--listen 127.0.0.1] [--name NAME] [--threads N]
 *            [--backlog N] [--log FILE] [--proxy] [--fail-status N]
 *
 * A small HTTP/1.1 server on libev with its own minimal parser (it must not
 * share code with the data plane it tests). It prints
 * {"event":"listening","port":P} as its first stdout line, then nothing per
 * request. Keep-alive, pipelining, Content-Length and chunked request bodies,
 * HTTP/1.0. Endpoints:
 *   /                any unknown path: 200, body NAME, header X-Backend: NAME
 *   /health          200 "ok"
 *   /status/NNN      that status; 204 and 304 carry no body
 *   /bytes/N         N bytes where byte i is (i mod 251); ?chunked=1 streams
 *                    chunked; never held whole in memory
 *   /echo            the request body back, streamed as it arrives
 *   /hash            FNV-1a 64 of the request body as 16 lowercase hex digits
 *   /headers         the request line and header lines as received
 *   /trailers        the trailer lines of a chunked request body as received,
 *                    as a chunked body (chunked even to HTTP/1.0) whose own
 *                    trailer section is TRAILERS_OUT below
 *   /slow/MS         answers NAME after MS milliseconds
 *   /stats           {"connections":N,"requests":N,"health":N,"others":N}:
 *                    accepted connections and parsed request heads since
 *                    start, this request included; of those, GET /health
 *                    (health checks) and the rest
 *   /close           answers NAME and closes the connection
 *   /bad/NAME        an off-spec response, then a close: bad-chunk (a chunk
 *                    size that is no hex number), length-204 (204 with
 *                    Content-Length: 3 and 3 bytes), length-list
 *                    (Content-Length: 3, 3), length-twice (two equal
 *                    Content-Length fields), switch (a 101 to websocket
 *                    whatever was asked, then the bytes "unasked")
 *   /ws              a WebSocket endpoint (RFC 6455), below
 *   /proxy           what this connection's PROXY header said (--proxy):
 *                    "v1 TCP4 SRC DST SPORT DPORT" (v1 as written, v2 in the
 *                    same words), "v1 UNKNOWN", "v2 LOCAL", or "none"
 * Every response carries X-Backend: NAME. SIGTERM or SIGINT exits 0. Every
 * route but /ws ignores Upgrade and answers as it would without it (so
 * /status/403 is a refusal of an Upgrade request, /headers shows what came).
 *
 * /ws: a GET with "Upgrade: websocket", "Connection: upgrade",
 * Sec-WebSocket-Version 13 and a Sec-WebSocket-Key of 24 characters gets
 * "101 Switching Protocols" with its Sec-WebSocket-Accept (400 without a
 * good key, 426 without the Upgrade or with another version). Then:
 *   - every client frame must be masked (else close 1002: protocol error);
 *     RSV bits, unknown opcodes, control frames over 125 bytes or
 *     fragmented, a continuation with nothing to continue are errors too;
 *   - a data frame (text, binary, continuation) is echoed unmasked with the
 *     same opcode and FIN bit, streamed as it arrives (any length, so a
 *     fragmented message comes back fragmented alike); text is not
 *     checked for UTF-8;
 *   - a ping is answered with a pong of its payload, a pong is ignored;
 *   - a close is answered with a close carrying the same status code (none
 *     if it had none), then the server closes the connection.
 * Query: ?push=N sends N text messages right after the 101, before reading
 * any frame: message k (from 0) is the decimal k, ':', then the letters
 * a..z over and over up to SIZE bytes (&size=SIZE; without it, no letters).
 * &close=CODE sends a close frame with CODE (reason "bye") after the pushes;
 * data frames are then read and dropped until the client's close, after
 * which the server closes the connection. ?deny=NNN answers NNN (200..599,
 * body "denied") to a good handshake instead of switching.
 *
 * Fault injection, for the dead-backend tests:
 *   SIGUSR1          behave like a process that crashed, without exiting:
 *                    the listening socket is shut down (new connects are
 *                    refused, connections waiting in the accept queue are
 *                    reset) and every open connection is closed at once, by
 *                    every thread; requests in progress get no answer. The
 *                    port stays closed until the process exits (SIGTERM),
 *                    and another lb-backend may bind it meanwhile.
 *   --backlog N      listen backlog (default 1024; the kernel caps it at
 *                    net.core.somaxconn): a small one with --threads 1 makes
 *                    a backend that is slow to accept a burst.
 *   --fail-status N  every request but GET /health and /stats is answered
 *                    with status N (100..599, empty body): a backend whose
 *                    health checks pass while it fails its traffic.
 *   --proxy          every connection must start with a PROXY protocol header
 *                    (v1 or v2; parsed here, not by the data plane's code):
 *                    anything else closes it.
 *   --log FILE       appends one line per request head parsed:
 *                    "METHOD PATH ID\n", ID being the X-Test-Id header value
 *                    or "-" (one write(2) per line on an O_APPEND file, so
 *                    lines of several threads do not mix). Lets a test count
 *                    which requests reached which backend.
 * Memory: one allocation per connection (state and both buffers), none per
 * request. */
#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define RBUF_SIZE   65536
#define WBUF_SIZE   (65536 + 4096)
#define HEAD_MAX    (RBUF_SIZE - 1024)
#define NAME_MAX_   256
#define THREADS_MAX 64
#define PATTERN_MOD 251

enum route {
    ROUTE_NAME,
    ROUTE_HEALTH,
    ROUTE_STATUS,
    ROUTE_BYTES,
    ROUTE_ECHO,
    ROUTE_HASH,
    ROUTE_HEADERS,
    ROUTE_TRAILERS,
    ROUTE_SLOW,
    ROUTE_STATS,
    ROUTE_CLOSE,
    ROUTE_BAD,
    ROUTE_WS,
    ROUTE_PROXY,
};

enum cstate {
    ST_HEAD,    /* waiting for a request head (output must be flushed first) */
    ST_BODY,    /* consuming the request body */
    ST_STREAM,  /* generating a /bytes response body */
    ST_SLOW,    /* a /slow timer is running */
    ST_DONE,    /* response fully queued */
    ST_CLOSING, /* flush what is queued, then close */
    ST_WS       /* a WebSocket after its 101: frames both ways */
};

enum body_mode {
    BODY_NONE,
    BODY_CL,
    BODY_CHUNKED,
};

enum chunk_state {
    CH_SIZE,
    CH_EXT,
    CH_SIZE_LF,
    CH_DATA,
    CH_DATA_CR,
    CH_DATA_LF,
    CH_TRAILER,
    CH_TRAILER_LF,
    CH_TRAILER_LINE,
    CH_DONE,
};

struct server;

/* The /ws state of a connection: its handshake fields, then its frames. */
struct ws {
    bool get;              /* the request is a GET */
    bool upgrade;          /* Upgrade names websocket */
    bool conn_upgrade;     /* Connection names upgrade */
    bool version13;        /* Sec-WebSocket-Version: 13 */
    char key[32];          /* Sec-WebSocket-Key, NUL-terminated */
    size_t key_len;        /* its length (0: none; >= sizeof key: too long) */
    uint64_t push_left;    /* ?push: messages still to send */
    uint64_t push_next;    /* the number of the next one */
    uint64_t push_size;    /* &size: the length of each */
    uint64_t gen_left;     /* letters of the message being sent still to go */
    uint64_t gen_off;      /* offset of the next letter in the message */
    unsigned close_code;   /* &close: the code of our close after the pushes */
    unsigned deny;         /* ?deny: the status to answer instead of 101 */
    bool close_sent;       /* our close frame is queued: data is dropped now */
    bool frag;             /* inside a fragmented message */
    bool in_payload;       /* streaming the payload of a data frame */
    uint64_t payload_left; /* its bytes still to come */
    uint64_t mask_off;     /* offset of the next payload byte (for the mask) */
    unsigned char mask[4]; /* its masking key */
};

/* One event loop: the main thread's or an extra thread's. */
struct worker {
    struct server *srv;   /* process-wide state */
    struct ev_loop *loop; /* this worker's loop */
    ev_io accept_io;      /* shared listening socket */
    ev_async stop;        /* asks the loop to break */
    ev_async crash;       /* SIGUSR1: drop the listener and every connection */
    struct conn *conns;   /* open connections, freed on exit */
    pthread_t tid;        /* 0 for the main thread's worker */
};

/* Process-wide state. */
struct server {
    int lfd;                                   /* listening socket */
    int logfd;                                 /* --log file, or -1 */
    bool proxy;                                /* --proxy */
    unsigned fail_status;                      /* --fail-status, 0 = off */
    char name[NAME_MAX_];                      /* body of GET / */
    size_t name_len;                           /* strlen(name) */
    atomic_ulong connections;                  /* accepted since start */
    atomic_ulong requests;                     /* request heads parsed since start */
    atomic_ulong health;                       /* ... of them /health */
    unsigned nworkers;                         /* entries used in workers[] */
    struct worker *workers;                    /* [0] runs on the main thread */
    unsigned char pattern[4096 + PATTERN_MOD]; /* bytes i mod 251, for /bytes */
};

struct conn {
    struct worker *w;         /* owning worker */
    struct conn *prev, *next; /* worker's list */
    int fd;                   /* client socket */
    ev_io rio, wio;           /* readable, writable */
    ev_timer slow;            /* /slow delay */
    enum cstate state;        /* see enum cstate */
    size_t rpos, rlen;        /* unread bytes are rbuf[rpos..rlen) */
    size_t wpos, wlen;        /* unsent bytes are wbuf[wpos..wlen) */
    bool eof;                 /* the client closed its side */
    bool keep_alive;          /* keep the connection after this response */
    bool http10;              /* request was HTTP/1.0 */
    bool head_only;           /* HEAD request */
    enum route route;         /* what was asked */
    uint64_t arg;             /* number in the path (status, N, MS) */
    bool chunked_out;         /* /bytes?chunked=1 or chunked /echo */
    enum body_mode body;      /* request body framing */
    uint64_t body_left;       /* CL remaining or current chunk remaining */
    enum chunk_state cst;     /* chunked decoder state */
    uint64_t hash;            /* FNV-1a 64 of the body so far */
    uint64_t stream_left;     /* /bytes bytes still to generate */
    uint64_t stream_off;      /* /bytes offset of the next byte */
    struct ws ws;             /* /ws: the handshake, then the frames */
    bool pp_done;             /* --proxy: the header was read */
    char pp[128];             /* ... what it said */
    size_t tlen;              /* bytes in tbuf */
    char tbuf[1024];          /* /trailers: the request's trailer lines */
    char rbuf[RBUF_SIZE];     /* request bytes */
    char wbuf[WBUF_SIZE];     /* response bytes */
};

static void conn_process(struct conn *c);

static bool parse_u64(const char *p, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    if (n == 0 || n > 19)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(p[i] - '0');
    }
    *out = v;
    return true;
}

/* The number after <key> ("push=") in query <q> (its <n> bytes), or 0. */
static uint64_t query_u64(const char *q, size_t n, const char *key)
{
    size_t kl = strlen(key);
    for (size_t i = 0; i + kl <= n; i++) {
        if ((i == 0 || q[i - 1] == '?' || q[i - 1] == '&') && memcmp(q + i, key, kl) == 0) {
            size_t d = i + kl;
            while (d < n && q[d] >= '0' && q[d] <= '9')
                d++;
            uint64_t v = 0;
            return parse_u64(q + i + kl, d - i - kl, &v) ? v : 0;
        }
    }
    return 0;
}

static bool has_token(const char *v, size_t n, const char *tok)
{
    size_t tl = strlen(tok);
    for (size_t i = 0; i + tl <= n; i++)
        if (strncasecmp(v + i, tok, tl) == 0)
            return true;
    return false;
}

static const char *reason(unsigned status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 204:
        return "No Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 101:
        return "Switching Protocols";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 426:
        return "Upgrade Required";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return "Status";
    }
}

static size_t wfree(struct conn *c)
{
    if (c->wpos > 0 && c->wpos == c->wlen)
        c->wpos = c->wlen = 0;
    if (c->wpos > 0 && WBUF_SIZE - c->wlen < 8192) {
        memmove(c->wbuf, c->wbuf + c->wpos, c->wlen - c->wpos);
        c->wlen -= c->wpos;
        c->wpos = 0;
    }
    return WBUF_SIZE - c->wlen;
}

static void wput(struct conn *c, const void *p, size_t n)
{
    memcpy(c->wbuf + c->wlen, p, n);
    c->wlen += n;
}

/* Queues a status line and headers, <extra> (NULL or header lines ending in
 * CRLF) among them. <clen> -1: chunked; -2: no length (the connection closes
 * after the body). */
static void put_head_extra(struct conn *c, unsigned status, long long clen, const char *ctype,
                           const char *extra)
{
    wfree(c);
    int n = snprintf(c->wbuf + c->wlen, WBUF_SIZE - c->wlen,
                     "HTTP/1.1 %u %s\r\nServer: lb-backend\r\nX-Backend: %s\r\n", status,
                     reason(status), c->w->srv->name);
    c->wlen += (size_t)n;
    if (ctype) {
        n = snprintf(c->wbuf + c->wlen, WBUF_SIZE - c->wlen, "Content-Type: %s\r\n", ctype);
        c->wlen += (size_t)n;
    }
    if (clen >= 0 && status != 204 && status != 304) {
        n = snprintf(c->wbuf + c->wlen, WBUF_SIZE - c->wlen, "Content-Length: %lld\r\n", clen);
        c->wlen += (size_t)n;
    } else if (clen == -1) {
        n = snprintf(c->wbuf + c->wlen, WBUF_SIZE - c->wlen, "Transfer-Encoding: chunked\r\n");
        c->wlen += (size_t)n;
    }
    if (extra)
        wput(c, extra, strlen(extra));
    if (!c->keep_alive)
        wput(c, "Connection: close\r\n", 19);
    else if (c->http10)
        wput(c, "Connection: keep-alive\r\n", 24);
    wput(c, "\r\n", 2);
}

static void put_head(struct conn *c, unsigned status, long long clen, const char *ctype)
{
    put_head_extra(c, status, clen, ctype, NULL);
}

static void put_simple(struct conn *c, unsigned status, const char *body, size_t len,
                       const char *ctype)
{
    put_head(c, status, (long long)len, ctype);
    if (!c->head_only && status != 204 && status != 304)
        wput(c, body, len);
}

static void conn_free(struct conn *c)
{
    struct worker *w = c->w;
    ev_io_stop(w->loop, &c->rio);
    ev_io_stop(w->loop, &c->wio);
    ev_timer_stop(w->loop, &c->slow);
    close(c->fd);
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    free(c);
}

/* Returns false when the connection failed and was freed. */
static bool conn_flush(struct conn *c)
{
    while (c->wpos < c->wlen) {
        ssize_t n = write(c->fd, c->wbuf + c->wpos, c->wlen - c->wpos);
        if (n > 0) {
            c->wpos += (size_t)n;
            continue;
        }
        if (n == -1 && errno == EINTR)
            continue;
        if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return true;
        conn_free(c);
        return false;
    }
    c->wpos = c->wlen = 0;
    return true;
}

/* /bad/NAME: responses a backend should not send, to test the proxy. */
static const struct {
    const char *path;
    const char *raw;
} bad_answers[] = {
    {"/bad/bad-chunk",
     "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"},
    {"/bad/length-204", "HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\nabc"},
    {"/bad/length-list", "HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\nabc"},
    {"/bad/length-twice", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc"},
    {"/bad/switch", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    "Connection: Upgrade\r\n\r\nunasked"},
};

static enum route route_of(struct conn *c, const char *path, size_t plen)
{
    const char *q = memchr(path, '?', plen);
    size_t n = q ? (size_t)(q - path) : plen;
    c->arg = 0;
    if (n == 7 && memcmp(path, "/health", 7) == 0)
        return ROUTE_HEALTH;
    if (n == 5 && memcmp(path, "/echo", 5) == 0)
        return ROUTE_ECHO;
    if (n == 5 && memcmp(path, "/hash", 5) == 0)
        return ROUTE_HASH;
    if (n == 8 && memcmp(path, "/headers", 8) == 0)
        return ROUTE_HEADERS;
    if (n == 9 && memcmp(path, "/trailers", 9) == 0)
        return ROUTE_TRAILERS;
    if (n == 6 && memcmp(path, "/stats", 6) == 0)
        return ROUTE_STATS;
    if (n == 6 && memcmp(path, "/close", 6) == 0)
        return ROUTE_CLOSE;
    if (n == 6 && memcmp(path, "/proxy", 6) == 0)
        return ROUTE_PROXY;
    if (n == 3 && memcmp(path, "/ws", 3) == 0) {
        c->ws.push_left = q ? query_u64(q, plen - n, "push=") : 0;
        c->ws.push_size = q ? query_u64(q, plen - n, "size=") : 0;
        c->ws.close_code = q ? (unsigned)query_u64(q, plen - n, "close=") : 0;
        c->ws.deny = q ? (unsigned)query_u64(q, plen - n, "deny=") : 0;
        if (c->ws.close_code > 4999)
            c->ws.close_code = 0;
        if (c->ws.deny < 200 || c->ws.deny > 599)
            c->ws.deny = 0;
        return ROUTE_WS;
    }
    for (size_t i = 0; i < sizeof(bad_answers) / sizeof(bad_answers[0]); i++) {
        size_t bl = strlen(bad_answers[i].path);
        if (n == bl && memcmp(path, bad_answers[i].path, bl) == 0) {
            c->arg = i;
            return ROUTE_BAD;
        }
    }
    if (n > 8 && memcmp(path, "/status/", 8) == 0 && parse_u64(path + 8, n - 8, &c->arg) &&
        c->arg >= 200 && c->arg <= 599)
        return ROUTE_STATUS;
    if (n > 7 && memcmp(path, "/bytes/", 7) == 0 && parse_u64(path + 7, n - 7, &c->arg)) {
        c->chunked_out = q && has_token(q, plen - n, "chunked=1");
        return ROUTE_BYTES;
    }
    if (n > 6 && memcmp(path, "/slow/", 6) == 0 && parse_u64(path + 6, n - 6, &c->arg))
        return ROUTE_SLOW;
    return ROUTE_NAME;
}

/* Answers 400 or 431 and closes after the flush. */
static void conn_reject(struct conn *c, unsigned status)
{
    if (wfree(c) < 1024)
        c->wpos = c->wlen = 0; /* a half-sent echo is broken anyway */
    c->keep_alive = false;
    c->head_only = false;
    put_simple(c, status, "", 0, NULL);
    c->state = ST_CLOSING;
}

/* --log: one line per request, written whole (a short line is cut, never
 * split), so that lines of concurrent threads do not interleave. */
static void log_request(int fd, const char *method, size_t mlen, const char *path, size_t plen,
                        const char *id, size_t idlen)
{
    char line[1024];
    int n = snprintf(line, sizeof line, "%.*s %.*s %.*s\n", (int)(mlen > 32 ? 32 : mlen), method,
                     (int)(plen > 512 ? 512 : plen), path, (int)(idlen > 256 ? 256 : idlen), id);
    if (n > 0 && write(fd, line, (size_t)n) < 0)
        return; /* a test reading the log sees the line missing */
}

/* Parses rbuf[rpos..rpos+hlen) (ends with CRLFCRLF) and starts the request. */
static void conn_start_request(struct conn *c, size_t hlen)
{
    const char *h = c->rbuf + c->rpos;
    const char *end = h + hlen;
    const char *eol = memchr(h, '\n', hlen);
    const char *sp1 = memchr(h, ' ', (size_t)(eol - h));
    const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;
    bool have_cl = false, chunked = false, expect = false, conn_close = false, conn_ka = false;
    uint64_t cl = 0;
    const char *test_id = "-";
    size_t test_id_len = 1;

    atomic_fetch_add_explicit(&c->w->srv->requests, 1, memory_order_relaxed);
    c->chunked_out = false;
    memset(&c->ws, 0, sizeof c->ws);
    if (!sp1 || !sp2 || (size_t)(eol - sp2 - 1) < 9 || memcmp(sp2 + 1, "HTTP/1.", 7) != 0) {
        conn_reject(c, 400);
        return;
    }
    c->http10 = sp2[8] == '0';
    c->head_only = (sp1 - h) == 4 && memcmp(h, "HEAD", 4) == 0;
    c->ws.get = (sp1 - h) == 3 && memcmp(h, "GET", 3) == 0;
    c->route = route_of(c, sp1 + 1, (size_t)(sp2 - sp1 - 1));
    for (const char *l = eol + 1; l < end;) {
        const char *le = memchr(l, '\n', (size_t)(end - l));
        size_t ll = (size_t)(le - l);
        if (ll > 0 && l[ll - 1] == '\r')
            ll--;
        if (ll == 0)
            break;
        const char *colon = memchr(l, ':', ll);
        if (!colon) {
            conn_reject(c, 400);
            return;
        }
        size_t nl = (size_t)(colon - l);
        const char *v = colon + 1;
        size_t vl = ll - nl - 1;
        while (vl > 0 && (*v == ' ' || *v == '\t')) {
            v++;
            vl--;
        }
        while (vl > 0 && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
            vl--;
        if (nl == 14 && strncasecmp(l, "content-length", 14) == 0) {
            if (!parse_u64(v, vl, &cl)) {
                conn_reject(c, 400);
                return;
            }
            have_cl = true;
        } else if (nl == 17 && strncasecmp(l, "transfer-encoding", 17) == 0) {
            chunked = has_token(v, vl, "chunked");
        } else if (nl == 10 && strncasecmp(l, "connection", 10) == 0) {
            conn_close = has_token(v, vl, "close");
            conn_ka = has_token(v, vl, "keep-alive");
            c->ws.conn_upgrade = c->ws.conn_upgrade || has_token(v, vl, "upgrade");
        } else if (nl == 7 && strncasecmp(l, "upgrade", 7) == 0) {
            c->ws.upgrade = c->ws.upgrade || has_token(v, vl, "websocket");
        } else if (nl == 17 && strncasecmp(l, "sec-websocket-key", 17) == 0) {
            c->ws.key_len = vl;
            if (vl < sizeof c->ws.key)
                snprintf(c->ws.key, sizeof c->ws.key, "%.*s", (int)vl, v);
        } else if (nl == 21 && strncasecmp(l, "sec-websocket-version", 21) == 0) {
            c->ws.version13 = vl == 2 && memcmp(v, "13", 2) == 0;
        } else if (nl == 6 && strncasecmp(l, "expect", 6) == 0) {
            expect = has_token(v, vl, "100-continue");
        } else if (nl == 9 && strncasecmp(l, "x-test-id", 9) == 0 && vl > 0) {
            test_id = v;
            test_id_len = vl;
        }
        l = le + 1;
    }
    if (c->w->srv->logfd != -1)
        log_request(c->w->srv->logfd, h, (size_t)(sp1 - h), sp1 + 1, (size_t)(sp2 - sp1 - 1),
                    test_id, test_id_len);
    c->keep_alive = c->http10 ? conn_ka && !conn_close : !conn_close;
    if (c->route == ROUTE_CLOSE || c->route == ROUTE_BAD)
        c->keep_alive = false;
    c->body = chunked ? BODY_CHUNKED : (have_cl && cl > 0) ? BODY_CL : BODY_NONE;
    c->body_left = c->body == BODY_CL ? cl : 0;
    c->cst = CH_SIZE;
    c->tlen = 0;
    c->hash = 14695981039346656037ULL;
    if (expect && c->body != BODY_NONE && !c->http10)
        wput(c, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    if (c->route == ROUTE_HEADERS) {
        size_t blen = hlen - 2; /* without the empty line */
        put_head(c, 200, (long long)blen, "text/plain");
        if (!c->head_only)
            wput(c, h, blen);
    } else if (c->route == ROUTE_ECHO) {
        if (c->body == BODY_CHUNKED && !c->http10) {
            c->chunked_out = true;
            put_head(c, 200, -1, "application/octet-stream");
        } else if (c->body == BODY_CHUNKED) {
            c->keep_alive = false; /* HTTP/1.0: close-delimited */
            put_head(c, 200, -2, "application/octet-stream");
        } else {
            put_head(c, 200, (long long)c->body_left, "application/octet-stream");
        }
    }
    c->rpos += hlen;
    c->state = ST_BODY;
}

/* Takes up to <n> body bytes; returns how many were taken (echo is bounded
 * by the output space). */
static size_t conn_sink(struct conn *c, const char *p, size_t n)
{
    if (c->route == ROUTE_HASH) {
        uint64_t h = c->hash;
        for (size_t i = 0; i < n; i++) {
            h ^= (unsigned char)p[i];
            h *= 1099511628211ULL;
        }
        c->hash = h;
        return n;
    }
    if (c->route != ROUTE_ECHO || c->head_only)
        return n;
    size_t room = wfree(c);
    if (c->chunked_out) {
        if (room < 32)
            return 0;
        size_t take = n < room - 32 ? n : room - 32;
        int k = snprintf(c->wbuf + c->wlen, 24, "%zx\r\n", take);
        c->wlen += (size_t)k;
        wput(c, p, take);
        wput(c, "\r\n", 2);
        return take;
    }
    size_t take = n < room ? n : room;
    wput(c, p, take);
    return take;
}

/* Consumes body bytes from rbuf. Returns 1 when the body is complete, 0 when
 * more input or output room is needed, -1 on a framing error. */
static int conn_body(struct conn *c)
{
    if (c->body == BODY_NONE)
        return 1;
    if (c->body == BODY_CL) {
        while (c->body_left > 0 && c->rpos < c->rlen) {
            size_t avail = c->rlen - c->rpos;
            size_t n = avail < c->body_left ? avail : (size_t)c->body_left;
            size_t t = conn_sink(c, c->rbuf + c->rpos, n);
            c->rpos += t;
            c->body_left -= t;
            if (t < n)
                return 0;
        }
        return c->body_left == 0;
    }
    while (c->rpos < c->rlen && c->cst != CH_DONE) {
        char ch = c->rbuf[c->rpos];
        switch (c->cst) {
        case CH_SIZE: {
            int d = (ch >= '0' && ch <= '9')   ? ch - '0'
                    : (ch >= 'a' && ch <= 'f') ? ch - 'a' + 10
                    : (ch >= 'A' && ch <= 'F') ? ch - 'A' + 10
                                               : -1;
            if (d >= 0) {
                if (c->body_left >> 56)
                    return -1;
                c->body_left = c->body_left * 16 + (uint64_t)d;
            } else if (ch == ';') {
                c->cst = CH_EXT;
            } else if (ch == '\r') {
                c->cst = CH_SIZE_LF;
            } else {
                return -1;
            }
            c->rpos++;
            break;
        }
        case CH_EXT:
            if (ch == '\r')
                c->cst = CH_SIZE_LF;
            c->rpos++;
            break;
        case CH_SIZE_LF:
            if (ch != '\n')
                return -1;
            c->rpos++;
            c->cst = c->body_left > 0 ? CH_DATA : CH_TRAILER;
            break;
        case CH_DATA: {
            size_t avail = c->rlen - c->rpos;
            size_t n = avail < c->body_left ? avail : (size_t)c->body_left;
            size_t t = conn_sink(c, c->rbuf + c->rpos, n);
            c->rpos += t;
            c->body_left -= t;
            if (t < n)
                return 0;
            if (c->body_left == 0)
                c->cst = CH_DATA_CR;
            break;
        }
        case CH_DATA_CR:
            if (ch != '\r')
                return -1;
            c->rpos++;
            c->cst = CH_DATA_LF;
            break;
        case CH_DATA_LF:
            if (ch != '\n')
                return -1;
            c->rpos++;
            c->cst = CH_SIZE;
            break;
        case CH_TRAILER: /* at the start of a trailer line */
            c->rpos++;
            c->cst = ch == '\r' ? CH_TRAILER_LF : CH_TRAILER_LINE;
            if (ch != '\r' && c->tlen < sizeof(c->tbuf))
                c->tbuf[c->tlen++] = ch;
            break;
        case CH_TRAILER_LINE:
            c->rpos++;
            if (ch == '\n')
                c->cst = CH_TRAILER;
            if (c->tlen < sizeof(c->tbuf))
                c->tbuf[c->tlen++] = ch;
            break;
        case CH_TRAILER_LF:
            if (ch != '\n')
                return -1;
            c->rpos++;
            c->cst = CH_DONE;
            break;
        case CH_DONE:
            break;
        }
    }
    return c->cst == CH_DONE;
}

static void conn_on_slow(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct conn *c = t->data;
    put_simple(c, 200, c->w->srv->name, c->w->srv->name_len, "text/plain");
    c->state = ST_DONE;
    conn_process(c);
}

/* ---- /ws: WebSocket (RFC 6455) ------------------------------------------------ */

enum ws_step {
    WS_NEED_IN,  /* waiting for more client bytes */
    WS_NEED_OUT, /* waiting for room in wbuf */
    WS_CLOSE,    /* flush and close the connection */
};

#define WS_TEXT   0x1
#define WS_BINARY 0x2
#define WS_CLOSEF 0x8
#define WS_PING   0x9
#define WS_PONG   0xA

/* Queues a frame header (server frames are never masked). */
static void ws_put_header(struct conn *c, unsigned b0, uint64_t len)
{
    unsigned char h[10];
    size_t n = 2;
    h[0] = (unsigned char)b0;
    if (len < 126) {
        h[1] = (unsigned char)len;
    } else if (len <= 0xFFFF) {
        h[1] = 126;
        h[2] = (unsigned char)(len >> 8);
        h[3] = (unsigned char)len;
        n = 4;
    } else {
        h[1] = 127;
        for (int i = 0; i < 8; i++)
            h[2 + i] = (unsigned char)(len >> (56 - 8 * i));
        n = 10;
    }
    wput(c, h, n);
}

/* Queues our close frame with <code> (0: none) and <reason>. */
static void ws_put_close(struct conn *c, unsigned code, const char *reason)
{
    size_t rl = code ? strlen(reason) : 0;
    ws_put_header(c, 0x80 | WS_CLOSEF, code ? 2 + rl : 0);
    if (code) {
        unsigned char b[2] = {(unsigned char)(code >> 8), (unsigned char)code};
        wput(c, b, 2);
        wput(c, reason, rl);
    }
    c->ws.close_sent = true;
}

/* A protocol error: close 1002 (unless a close is out already), then close. */
static enum ws_step ws_fail(struct conn *c)
{
    if (!c->ws.close_sent && wfree(c) >= 64)
        ws_put_close(c, 1002, "protocol error");
    return WS_CLOSE;
}

/* The 101 for a good handshake, or why not. */
static void ws_handshake(struct conn *c)
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    struct ws *ws = &c->ws;
    if (!ws->upgrade || !ws->conn_upgrade || !ws->get || c->http10 || !ws->version13) {
        put_head_extra(c, 426, 0, NULL, "Sec-WebSocket-Version: 13\r\n");
        return;
    }
    if (ws->key_len != 24) {
        put_simple(c, 400, "", 0, NULL);
        return;
    }
    if (ws->deny) {
        put_simple(c, ws->deny, "denied", 6, "text/plain");
        return;
    }
    char in[64];
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    int n = snprintf(in, sizeof in, "%s%s", ws->key, guid);
    char accept[64];
    if (!EVP_Digest(in, (size_t)n, md, &mdlen, EVP_sha1(), NULL) ||
        EVP_EncodeBlock((unsigned char *)accept, md, (int)mdlen) <= 0) {
        c->keep_alive = false;
        put_simple(c, 500, "", 0, NULL);
        return;
    }
    wfree(c);
    n = snprintf(c->wbuf + c->wlen, WBUF_SIZE - c->wlen,
                 "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                 "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\nX-Backend: %s\r\n\r\n",
                 accept, c->w->srv->name);
    c->wlen += (size_t)n;
    ws->push_next = 0;
    ws->gen_left = 0;
    c->state = ST_WS;
}

/* Queues pushed messages and our close after them while wbuf has room.
 * Returns false while some are left. */
static bool ws_push(struct conn *c)
{
    struct ws *ws = &c->ws;
    while (ws->push_left > 0 || ws->gen_left > 0) {
        size_t room = wfree(c);
        if (ws->gen_left == 0) { /* a new message: header and number */
            char num[24];
            int nl = snprintf(num, sizeof num, "%llu:", (unsigned long long)ws->push_next);
            uint64_t len = ws->push_size > (uint64_t)nl ? ws->push_size : (uint64_t)nl;
            if (room < 64)
                return false;
            ws_put_header(c, 0x80 | WS_TEXT, len);
            wput(c, num, (size_t)nl);
            ws->gen_left = len - (uint64_t)nl;
            ws->gen_off = 0;
            ws->push_next++;
            ws->push_left--;
            continue;
        }
        if (room < 64)
            return false;
        size_t take = room - 32 < ws->gen_left ? room - 32 : (size_t)ws->gen_left;
        for (size_t i = 0; i < take; i++)
            c->wbuf[c->wlen + i] = (char)('a' + (ws->gen_off + i) % 26);
        c->wlen += take;
        ws->gen_off += take;
        ws->gen_left -= take;
    }
    if (ws->close_code && !ws->close_sent) {
        if (wfree(c) < 64)
            return false;
        ws_put_close(c, ws->close_code, "bye");
    }
    return true;
}

/* Echoes (or, after our close, drops) payload bytes of the current data
 * frame. */
static void ws_stream(struct conn *c)
{
    struct ws *ws = &c->ws;
    size_t avail = c->rlen - c->rpos;
    size_t n = avail < ws->payload_left ? avail : (size_t)ws->payload_left;
    if (!ws->close_sent) {
        size_t room = wfree(c);
        if (n > room)
            n = room;
        unsigned char *src = (unsigned char *)c->rbuf + c->rpos;
        unsigned char *dst = (unsigned char *)c->wbuf + c->wlen;
        for (size_t i = 0; i < n; i++)
            dst[i] = src[i] ^ ws->mask[(ws->mask_off + i) & 3];
        c->wlen += n;
    }
    c->rpos += n;
    ws->mask_off += n;
    ws->payload_left -= n;
    if (ws->payload_left == 0)
        ws->in_payload = false;
}

/* A whole control frame: its payload at <p> (masked, <len> <= 125). */
static enum ws_step ws_control(struct conn *c, unsigned op, unsigned char *p, size_t len)
{
    struct ws *ws = &c->ws;
    for (size_t i = 0; i < len; i++)
        p[i] ^= ws->mask[i & 3];
    if (op == WS_PONG)
        return WS_NEED_IN;
    if (op == WS_PING) {
        if (!ws->close_sent) {
            ws_put_header(c, 0x80 | WS_PONG, len);
            wput(c, p, len);
        }
        return WS_NEED_IN;
    }
    /* close: answer with its code, then close the connection */
    if (len == 1)
        return ws_fail(c);
    if (!ws->close_sent) {
        unsigned code = len >= 2 ? ((unsigned)p[0] << 8 | p[1]) : 0;
        ws_put_close(c, code, "");
    }
    return WS_CLOSE;
}

/* Runs the frames as far as the buffers allow. */
static enum ws_step ws_frames(struct conn *c)
{
    struct ws *ws = &c->ws;
    if (!ws_push(c))
        return WS_NEED_OUT;
    for (;;) {
        if (ws->in_payload) {
            if (c->rpos == c->rlen)
                return WS_NEED_IN;
            if (!ws->close_sent && wfree(c) == 0)
                return WS_NEED_OUT;
            ws_stream(c);
            continue;
        }
        size_t avail = c->rlen - c->rpos;
        unsigned char *h = (unsigned char *)c->rbuf + c->rpos;
        if (avail < 2)
            return WS_NEED_IN;
        unsigned fin = h[0] & 0x80, op = h[0] & 0x0F, len7 = h[1] & 0x7F;
        size_t hl = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + 4;
        if ((h[0] & 0x70) || !(h[1] & 0x80))
            return ws_fail(c); /* reserved bits, or an unmasked client frame */
        if (avail < hl)
            return WS_NEED_IN;
        uint64_t len = len7;
        if (len7 == 126)
            len = (uint64_t)h[2] << 8 | h[3];
        else if (len7 == 127)
            for (int i = 0; i < 8; i++)
                len = (i ? len << 8 : 0) | h[2 + i];
        if (len >> 63)
            return ws_fail(c);
        memcpy(ws->mask, h + hl - 4, 4);
        if (op & 0x8) {
            if (op > WS_PONG || !fin || len > 125)
                return ws_fail(c);
            if (avail < hl + len)
                return WS_NEED_IN;
            if (wfree(c) < 2 + 125 + 16)
                return WS_NEED_OUT;
            c->rpos += hl + (size_t)len;
            enum ws_step r = ws_control(c, op, h + hl, (size_t)len);
            if (r != WS_NEED_IN)
                return r;
            continue;
        }
        if (op > WS_BINARY || (op == 0) != ws->frag)
            return ws_fail(c); /* unknown, or a broken fragment sequence */
        if (!ws->close_sent) {
            if (wfree(c) < 16)
                return WS_NEED_OUT;
            ws_put_header(c, fin | op, len);
        }
        ws->frag = !fin;
        c->rpos += hl;
        ws->in_payload = len > 0;
        ws->payload_left = len;
        ws->mask_off = 0;
    }
}
/* The trailer section of a /trailers response: some fields a trailer may
 * carry, some it may not. */
#define TRAILERS_OUT                                                                               \
    "X-Sum: 42\r\nContent-Length: 99\r\nSet-Cookie: s=1\r\nTransfer_Encoding: chunked\r\n"         \
    "X-Late: yes\r\n"

/* The body is complete: queue the response (or start streaming it). */
static void conn_finish_request(struct conn *c)
{
    struct server *s = c->w->srv;
    char tmp[128];
    int n;

    c->state = ST_DONE;
    if (s->fail_status != 0 && c->route != ROUTE_HEALTH && c->route != ROUTE_STATS) {
        put_simple(c, s->fail_status, "", 0, NULL);
        return;
    }
    switch (c->route) {
    case ROUTE_NAME:
    case ROUTE_CLOSE:
        put_simple(c, 200, s->name, s->name_len, "text/plain");
        break;
    case ROUTE_HEALTH:
        atomic_fetch_add_explicit(&s->health, 1, memory_order_relaxed);
        put_simple(c, 200, "ok", 2, "text/plain");
        break;
    case ROUTE_WS:
        ws_handshake(c);
        break;
    case ROUTE_STATUS:
        put_simple(c, (unsigned)c->arg, "", 0, NULL);
        break;
    case ROUTE_BAD:
        wput(c, bad_answers[c->arg].raw, strlen(bad_answers[c->arg].raw));
        break;
    case ROUTE_PROXY:
        n = snprintf(tmp, sizeof tmp, "%s", c->pp[0] ? c->pp : "none");
        put_simple(c, 200, tmp, (size_t)n, "text/plain");
        break;
    case ROUTE_STATS: {
        unsigned long req = atomic_load(&s->requests), health = atomic_load(&s->health);
        n = snprintf(tmp, sizeof tmp,
                     "{\"connections\":%lu,\"requests\":%lu,\"health\":%lu,\"others\":%lu}",
                     atomic_load(&s->connections), req, health, req - health);
        put_simple(c, 200, tmp, (size_t)n, "application/json");
        break;
    }
    case ROUTE_HASH:
        n = snprintf(tmp, sizeof tmp, "%016llx", (unsigned long long)c->hash);
        put_simple(c, 200, tmp, (size_t)n, "text/plain");
        break;
    case ROUTE_HEADERS:
        break;
    case ROUTE_TRAILERS:
        put_head(c, 200, -1, "text/plain");
        if (c->head_only)
            break;
        if (c->tlen > 0) {
            n = snprintf(tmp, sizeof tmp, "%zx\r\n", c->tlen);
            wput(c, tmp, (size_t)n);
            wput(c, c->tbuf, c->tlen);
            wput(c, "\r\n", 2);
        }
        wput(c, "0\r\n" TRAILERS_OUT "\r\n", strlen("0\r\n" TRAILERS_OUT "\r\n"));
        break;
    case ROUTE_ECHO:
        if (c->chunked_out && !c->head_only)
            wput(c, "0\r\n\r\n", 5);
        break;
    case ROUTE_SLOW:
        c->state = ST_SLOW;
        ev_timer_set(&c->slow, (double)c->arg / 1000.0, 0.);
        ev_timer_start(c->w->loop, &c->slow);
        break;
    case ROUTE_BYTES:
        if (c->http10)
            c->chunked_out = false;
        put_head(c, 200, c->chunked_out ? -1 : (long long)c->arg, "application/octet-stream");
        c->stream_left = c->head_only ? 0 : c->arg;
        c->stream_off = 0;
        c->state = ST_STREAM;
        if (c->chunked_out && c->head_only)
            c->state = ST_DONE;
        break;
    }
}

/* Generates /bytes output into wbuf; true when all of it is queued. */
static bool conn_stream(struct conn *c)
{
    const unsigned char *pat = c->w->srv->pattern;
    for (;;) {
        size_t room = wfree(c);
        if (c->stream_left == 0) {
            if (!c->chunked_out)
                return true;
            if (room < 5)
                return false;
            wput(c, "0\r\n\r\n", 5);
            return true;
        }
        if (room < 64)
            return false;
        size_t n = room - 32;
        if (n > 4096)
            n = 4096;
        if (n > c->stream_left)
            n = (size_t)c->stream_left;
        if (c->chunked_out) {
            int k = snprintf(c->wbuf + c->wlen, 24, "%zx\r\n", n);
            c->wlen += (size_t)k;
        }
        wput(c, pat + c->stream_off % PATTERN_MOD, n);
        if (c->chunked_out)
            wput(c, "\r\n", 2);
        c->stream_off += n;
        c->stream_left -= n;
    }
}

static void conn_update_watchers(struct conn *c)
{
    struct ev_loop *loop = c->w->loop;
    bool want_read = !c->eof && (c->state == ST_HEAD || c->state == ST_BODY || c->state == ST_WS) &&
                     !(c->rpos == 0 && c->rlen == RBUF_SIZE);
    bool want_write = c->wlen > c->wpos;
    if (want_read && !ev_is_active(&c->rio))
        ev_io_start(loop, &c->rio);
    else if (!want_read && ev_is_active(&c->rio))
        ev_io_stop(loop, &c->rio);
    if (want_write && !ev_is_active(&c->wio))
        ev_io_start(loop, &c->wio);
    else if (!want_write && ev_is_active(&c->wio))
        ev_io_stop(loop, &c->wio);
}

static void conn_compact(struct conn *c)
{
    if (c->rpos == c->rlen) {
        c->rpos = c->rlen = 0;
    } else if (c->rpos > 0 && c->rlen == RBUF_SIZE) {
        memmove(c->rbuf, c->rbuf + c->rpos, c->rlen - c->rpos);
        c->rlen -= c->rpos;
        c->rpos = 0;
    }
}

/* Runs the state machine as far as the buffers allow. May free <c>. */
/* --proxy: reads the PROXY header at rbuf[rpos..rlen) into c->pp. Returns
 * 1 when read, 0 when more bytes are needed, -1 when it is not one. */
static int proxy_header(struct conn *c)
{
    static const unsigned char sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                          0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
    const unsigned char *b = (const unsigned char *)c->rbuf + c->rpos;
    size_t n = c->rlen - c->rpos;
    if (n >= 1 && b[0] == 'P') {
        const char *e = memmem(b, n < 107 ? n : 107, "\r\n", 2);
        if (e == NULL)
            return n >= 107 ? -1 : 0;
        size_t len = (size_t)(e - (const char *)b);
        if (len < 6 || memcmp(b, "PROXY ", 6) != 0)
            return -1;
        snprintf(c->pp, sizeof(c->pp), "v1 %.*s", (int)(len - 6), (const char *)b + 6);
        c->rpos += len + 2;
        return 1;
    }
    if (n < 16)
        return memcmp(b, sig, n < 12 ? n : 12) == 0 ? 0 : -1;
    if (memcmp(b, sig, 12) != 0 || (b[12] & 0xF0) != 0x20)
        return -1;
    size_t len = 16 + ((size_t)b[14] << 8 | b[15]);
    if (n < len)
        return len > 1024 ? -1 : 0;
    char src[INET6_ADDRSTRLEN], dst[INET6_ADDRSTRLEN];
    if ((b[12] & 0x0F) == 0) {
        snprintf(c->pp, sizeof(c->pp), "v2 LOCAL");
    } else if (b[13] == 0x11 && len >= 28) {
        inet_ntop(AF_INET, b + 16, src, sizeof(src));
        inet_ntop(AF_INET, b + 20, dst, sizeof(dst));
        snprintf(c->pp, sizeof(c->pp), "v2 TCP4 %s %s %u %u", src, dst, b[24] << 8 | b[25],
                 b[26] << 8 | b[27]);
    } else if (b[13] == 0x21 && len >= 52) {
        inet_ntop(AF_INET6, b + 16, src, sizeof(src));
        inet_ntop(AF_INET6, b + 32, dst, sizeof(dst));
        snprintf(c->pp, sizeof(c->pp), "v2 TCP6 %s %s %u %u", src, dst, b[48] << 8 | b[49],
                 b[50] << 8 | b[51]);
    } else {
        snprintf(c->pp, sizeof(c->pp), "v2 family 0x%02x", b[13]);
    }
    c->rpos += len;
    return 1;
}

static void conn_process(struct conn *c)
{
    for (;;) {
        switch (c->state) {
        case ST_HEAD: {
            if (c->wlen > c->wpos && !conn_flush(c))
                return;
            if (c->wlen > c->wpos)
                goto wait;
            conn_compact(c);
            if (c->w->srv->proxy && !c->pp_done) {
                int r = proxy_header(c);
                if (r < 0 || (r == 0 && c->eof)) {
                    conn_free(c);
                    return;
                }
                if (r == 0)
                    goto wait;
                c->pp_done = true;
            }
            size_t avail = c->rlen - c->rpos;
            const char *start = c->rbuf + c->rpos;
            /* Tolerate stray CRLFs between requests (RFC 9112 2.2). */
            while (avail > 0 && (*start == '\r' || *start == '\n')) {
                start++;
                avail--;
                c->rpos++;
            }
            const char *e = memmem(start, avail, "\r\n\r\n", 4);
            if (!e) {
                if (avail >= HEAD_MAX) {
                    conn_reject(c, 431);
                    continue;
                }
                if (c->eof) {
                    conn_free(c);
                    return;
                }
                if (c->rlen == RBUF_SIZE) {
                    memmove(c->rbuf, c->rbuf + c->rpos, avail);
                    c->rlen = avail;
                    c->rpos = 0;
                }
                goto wait;
            }
            conn_start_request(c, (size_t)(e - start) + 4);
            continue;
        }
        case ST_BODY: {
            int r = conn_body(c);
            if (r < 0) {
                conn_reject(c, 400);
                continue;
            }
            if (r == 1) {
                conn_finish_request(c);
                continue;
            }
            if (c->wlen > c->wpos && !conn_flush(c))
                return;
            conn_compact(c);
            if (c->eof && c->rpos == c->rlen) {
                conn_free(c);
                return;
            }
            if (c->rpos < c->rlen && wfree(c) >= 64)
                continue;
            goto wait;
        }
        case ST_STREAM:
            if (conn_stream(c)) {
                c->state = ST_DONE;
                continue;
            }
            if (!conn_flush(c))
                return;
            if (c->wlen > c->wpos)
                goto wait;
            continue;
        case ST_SLOW:
            goto wait;
        case ST_WS: {
            enum ws_step r = ws_frames(c);
            if (r == WS_CLOSE) {
                c->state = ST_CLOSING;
                continue;
            }
            if (c->wlen > c->wpos && !conn_flush(c))
                return;
            conn_compact(c);
            if (r == WS_NEED_IN && c->eof && c->rpos == c->rlen) {
                conn_free(c); /* gone without a close frame */
                return;
            }
            if (r == WS_NEED_OUT && c->wlen == c->wpos)
                continue; /* the flush made room */
            goto wait;
        }
        case ST_DONE:
            if (!c->keep_alive) {
                c->state = ST_CLOSING;
                continue;
            }
            c->state = ST_HEAD;
            continue;
        case ST_CLOSING:
            if (!conn_flush(c))
                return;
            if (c->wlen > c->wpos)
                goto wait;
            shutdown(c->fd, SHUT_WR);
            conn_free(c);
            return;
        }
    }
wait:
    conn_update_watchers(c);
}

static void conn_on_readable(struct ev_loop *loop, ev_io *w, int revents)
{
    struct conn *c = w->data;
    conn_compact(c);
    if (c->rlen < RBUF_SIZE) {
        ssize_t n = read(c->fd, c->rbuf + c->rlen, RBUF_SIZE - c->rlen);
        if (n > 0) {
            c->rlen += (size_t)n;
        } else if (n == 0) {
            c->eof = true;
        } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            conn_free(c);
            return;
        }
    }
    conn_process(c);
}

static void conn_on_writable(struct ev_loop *loop, ev_io *w, int revents)
{
    struct conn *c = w->data;
    if (!conn_flush(c))
        return;
    conn_process(c);
}

static void worker_on_accept(struct ev_loop *loop, ev_io *io, int revents)
{
    struct worker *w = io->data;
    for (int i = 0; i < 64; i++) {
        int fd = accept4(w->srv->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd == -1)
            return; /* EAGAIN (another worker took it) or a transient error */
        struct conn *c = malloc(sizeof *c);
        if (!c) {
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        atomic_fetch_add_explicit(&w->srv->connections, 1, memory_order_relaxed);
        c->w = w;
        c->fd = fd;
        c->state = ST_HEAD;
        c->rpos = c->rlen = c->wpos = c->wlen = 0;
        c->eof = false;
        c->pp_done = false;
        c->pp[0] = '\0';
        ev_io_init(&c->rio, conn_on_readable, fd, EV_READ);
        ev_io_init(&c->wio, conn_on_writable, fd, EV_WRITE);
        ev_timer_init(&c->slow, conn_on_slow, 0., 0.);
        c->rio.data = c->wio.data = c->slow.data = c;
        c->prev = NULL;
        c->next = w->conns;
        if (w->conns)
            w->conns->prev = c;
        w->conns = c;
        ev_io_start(loop, &c->rio);
    }
}

static void worker_on_stop(struct ev_loop *loop, ev_async *a, int revents)
{
    ev_break(loop, EVBREAK_ALL);
}

/* What the kernel does to a process that dies: its connections close (a
 * reset where unread bytes remain) and the listener goes away. */
static void worker_on_crash(struct ev_loop *loop, ev_async *a, int revents)
{
    struct worker *w = a->data;
    ev_io_stop(loop, &w->accept_io);
    while (w->conns)
        conn_free(w->conns);
}

static void *worker_run(void *arg)
{
    struct worker *w = arg;
    ev_run(w->loop, 0);
    return NULL;
}

static void main_on_signal(struct ev_loop *loop, ev_signal *s, int revents)
{
    ev_break(loop, EVBREAK_ALL);
}

static void main_on_crash(struct ev_loop *loop, ev_signal *s, int revents)
{
    struct server *srv = s->data;
    /* Refuse new connects first, then close what is open, every thread at
     * once. The listening fd stays open (shut down) so that no watcher ever
     * sees it closed; shutdown() resets what waits in its accept queue. */
    shutdown(srv->lfd, SHUT_RDWR);
    for (unsigned i = 1; i < srv->nworkers; i++)
        ev_async_send(srv->workers[i].loop, &srv->workers[i].crash);
    worker_on_crash(loop, &srv->workers[0].crash, 0);
}

static int worker_init(struct worker *w, struct server *s, struct ev_loop *loop)
{
    w->srv = s;
    w->loop = loop;
    w->conns = NULL;
    w->tid = 0;
    ev_io_init(&w->accept_io, worker_on_accept, s->lfd, EV_READ);
    w->accept_io.data = w;
    ev_io_start(loop, &w->accept_io);
    ev_async_init(&w->stop, worker_on_stop);
    ev_async_start(loop, &w->stop);
    ev_async_init(&w->crash, worker_on_crash);
    w->crash.data = w;
    ev_async_start(loop, &w->crash);
    return 0;
}

static void worker_deinit(struct worker *w)
{
    while (w->conns)
        conn_free(w->conns);
    ev_io_stop(w->loop, &w->accept_io);
    ev_async_stop(w->loop, &w->stop);
    ev_async_stop(w->loop, &w->crash);
}

static int listen_on(const char *addr, unsigned port, int backlog, unsigned *bound)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1) {
        fprintf(stderr, "lb-backend: bad --listen address %s\n", addr);
        return -1;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd == -1)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    socklen_t len = sizeof sa;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) == -1 || listen(fd, backlog) == -1 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) == -1) {
        fprintf(stderr, "lb-backend: listen on %s:%u: %s\n", addr, port, strerror(errno));
        close(fd);
        return -1;
    }
    *bound = ntohs(sa.sin_port);
    return fd;
}

static void usage(void)
{
    fprintf(stderr, "usage: lb-backend --port P [--listen 127.0.0.1] [--name NAME] [--threads N]\n"
                    "                  [--backlog N] [--log FILE] [--proxy] [--fail-status N]\n");
}

/* The command line's settings. */
struct options {
    const char *listen_addr;
    uint64_t port, threads, backlog;
    const char *log_path;
};

/* Parses the command line into <o> and <srv> (name, --proxy). Returns -1,
 * or the exit status (usage printed). */
static int parse_options(int argc, char **argv, struct server *srv, struct options *o)
{
    snprintf(srv->name, sizeof srv->name, "backend");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--proxy") == 0) {
            srv->proxy = true;
            continue;
        }
        if (!v) {
            usage();
            return 2;
        }
        if (strcmp(a, "--port") == 0) {
            if (!parse_u64(v, strlen(v), &o->port) || o->port > 65535) {
                usage();
                return 2;
            }
        } else if (strcmp(a, "--listen") == 0) {
            o->listen_addr = v;
        } else if (strcmp(a, "--name") == 0) {
            if (strlen(v) >= sizeof srv->name || strpbrk(v, "\r\n")) {
                fprintf(stderr, "lb-backend: --name too long or has a line break\n");
                return 2;
            }
            snprintf(srv->name, sizeof srv->name, "%s", v);
        } else if (strcmp(a, "--backlog") == 0) {
            if (!parse_u64(v, strlen(v), &o->backlog) || o->backlog == 0 || o->backlog > 65535) {
                usage();
                return 2;
            }
        } else if (strcmp(a, "--log") == 0) {
            o->log_path = v;
        } else if (strcmp(a, "--fail-status") == 0) {
            uint64_t st = 0;
            if (!parse_u64(v, strlen(v), &st) || st < 100 || st > 599) {
                usage();
                return 2;
            }
            srv->fail_status = (unsigned)st;
        } else if (strcmp(a, "--threads") == 0) {
            if (!parse_u64(v, strlen(v), &o->threads) || o->threads == 0 ||
                o->threads > THREADS_MAX) {
                usage();
                return 2;
            }
        } else {
            usage();
            return 2;
        }
        i++;
    }
    if (o->port > 65535) {
        usage();
        return 2;
    }
    return -1;
}

/* Starts the worker threads beyond the first (which runs on the main
 * thread); srv->nworkers becomes how many run. */
static void start_threads(struct server *srv)
{
    /* Extra threads must not take the signals: block them while spawning. */
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &set, &old);
    unsigned started = 1;
    for (; started < srv->nworkers; started++) {
        struct worker *w = &srv->workers[started];
        struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
        if (!loop)
            break;
        worker_init(w, srv, loop);
        if (pthread_create(&w->tid, NULL, worker_run, w) != 0) {
            worker_deinit(w);
            ev_loop_destroy(loop);
            break;
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    srv->nworkers = started;
}

int main(int argc, char **argv)
{
    static struct server srv;
    struct options o = {.listen_addr = "127.0.0.1", .port = 65536, .threads = 1, .backlog = 1024};
    int rc = parse_options(argc, argv, &srv, &o);
    if (rc >= 0)
        return rc;
    srv.name_len = strlen(srv.name);
    for (size_t i = 0; i < sizeof srv.pattern; i++)
        srv.pattern[i] = (unsigned char)(i % PATTERN_MOD);
    signal(SIGPIPE, SIG_IGN);
    srv.logfd = -1;
    if (o.log_path) {
        srv.logfd = open(o.log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        if (srv.logfd == -1) {
            fprintf(stderr, "lb-backend: --log %s: %s\n", o.log_path, strerror(errno));
            return 1;
        }
    }

    unsigned bound = 0;
    srv.lfd = listen_on(o.listen_addr, (unsigned)o.port, (int)o.backlog, &bound);
    if (srv.lfd == -1)
        return 1;
    srv.nworkers = (unsigned)o.threads;
    srv.workers = calloc(srv.nworkers, sizeof *srv.workers);
    if (!srv.workers) {
        fprintf(stderr, "lb-backend: out of memory\n");
        return 1;
    }

    struct ev_loop *main_loop = ev_default_loop(0);
    ev_signal sigterm, sigint, sigusr1;
    ev_signal_init(&sigterm, main_on_signal, SIGTERM);
    ev_signal_init(&sigint, main_on_signal, SIGINT);
    ev_signal_init(&sigusr1, main_on_crash, SIGUSR1);
    sigusr1.data = &srv;
    ev_signal_start(main_loop, &sigterm);
    ev_signal_start(main_loop, &sigint);
    worker_init(&srv.workers[0], &srv, main_loop);

    start_threads(&srv);
    /* Started only now: the handler walks workers[0..nworkers). */
    ev_signal_start(main_loop, &sigusr1);

    printf("{\"event\":\"listening\",\"port\":%u}\n", bound);
    fflush(stdout);
    ev_run(main_loop, 0);

    for (unsigned i = 1; i < srv.nworkers; i++) {
        ev_async_send(srv.workers[i].loop, &srv.workers[i].stop);
        pthread_join(srv.workers[i].tid, NULL);
        worker_deinit(&srv.workers[i]);
        ev_loop_destroy(srv.workers[i].loop);
    }
    worker_deinit(&srv.workers[0]);
    ev_signal_stop(main_loop, &sigterm);
    ev_signal_stop(main_loop, &sigint);
    ev_signal_stop(main_loop, &sigusr1);
    ev_loop_destroy(main_loop);
    close(srv.lfd);
    if (srv.logfd != -1)
        close(srv.logfd);
    free(srv.workers);
    return 0;
}
