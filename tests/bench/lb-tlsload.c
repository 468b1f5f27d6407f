/* tests/bench/lb-tlsload.c: a lean TLS connection load generator for the
 * handshake benchmarks. Each of --conns slots loops: connect, handshake,
 * "GET / HTTP/1.1" with "Connection: close", read the answer to EOF, close.
 * With --resume a slot offers the session its previous connection ended
 * with, so every connection after the first resumes if the server hands out
 * fresh tickets; without it every handshake is a full one. Non-blocking
 * sockets on one epoll loop per thread keep the generator's own CPU small,
 * so on a shared machine the server, not the client, is what is measured.
 *
 * Prints one line: connections, rate, full and resumed counts, errors, and
 * the 50th and 99th percentiles of a connection's time from connect() to the
 * end of its answer. */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

enum slot_state {
    S_CONNECT,
    S_HANDSHAKE,
    S_WRITE,
    S_READ
};

struct slot {
    int fd;
    enum slot_state state;
    SSL *ssl;
    SSL_SESSION *session; /* offered by the next connection (--resume) */
    size_t sent;
    bool got_status;
    double t_open; /* connect() called */
};

/* Connection times: 10 µs buckets up to 1 s, then one for the rest */
#define LAT_BUCKETS 100001u
#define LAT_STEP_S  10e-6

struct counts {
    uint64_t done, full, resumed, errors;
    uint32_t *lat; /* LAT_BUCKETS counts */
};

struct worker {
    pthread_t thread;
    int nslots;
    struct counts counts;
};

static struct sockaddr_in target;
static SSL_CTX *client_ctx;
static const char *server_name;
static bool resume;
static double deadline;
static char request[256];
static size_t request_len;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void slot_close(struct slot *s)
{
    if (s->ssl != NULL) {
        SSL_free(s->ssl);
        s->ssl = NULL;
    }
    if (s->fd >= 0) {
        close(s->fd);
        s->fd = -1;
    }
}

/* Opens the next connection of <s>; false when the socket cannot be made. */
static bool slot_open(int ep, struct slot *s)
{
    s->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s->fd < 0)
        return false;
    int one = 1;
    setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(s->fd, (struct sockaddr *)&target, sizeof(target)) != 0 && errno != EINPROGRESS) {
        close(s->fd);
        s->fd = -1;
        return false;
    }
    s->ssl = SSL_new(client_ctx);
    if (s->ssl == NULL || SSL_set_fd(s->ssl, s->fd) != 1) {
        slot_close(s);
        return false;
    }
    if (server_name != NULL)
        SSL_set_tlsext_host_name(s->ssl, server_name);
    if (resume && s->session != NULL)
        SSL_set_session(s->ssl, s->session);
    s->state = S_CONNECT;
    s->t_open = now_s();
    s->sent = 0;
    s->got_status = false;
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = s};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, s->fd, &ev) != 0) {
        slot_close(s);
        return false;
    }
    return true;
}

static void slot_want(int ep, struct slot *s, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = s};
    epoll_ctl(ep, EPOLL_CTL_MOD, s->fd, &ev);
}

/* What an SSL call's failure asks for: EPOLLIN, EPOLLOUT, or 0 (an error). */
static uint32_t ssl_wants(SSL *ssl, int rc)
{
    switch (SSL_get_error(ssl, rc)) {
    case SSL_ERROR_WANT_READ:
        return EPOLLIN;
    case SSL_ERROR_WANT_WRITE:
        return EPOLLOUT;
    default:
        return 0;
    }
}

/* Drives <s> as far as it goes without blocking. Returns 1 when the
 * connection completed, -1 on an error, 0 when it waits for the socket. */
static int slot_step(int ep, struct slot *s, struct counts *c)
{
    if (s->state == S_CONNECT) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0)
            return -1;
        s->state = S_HANDSHAKE;
    }
    if (s->state == S_HANDSHAKE) {
        int rc = SSL_connect(s->ssl);
        if (rc != 1) {
            uint32_t w = ssl_wants(s->ssl, rc);
            if (w == 0)
                return -1;
            slot_want(ep, s, w);
            return 0;
        }
        if (SSL_session_reused(s->ssl))
            c->resumed++;
        else
            c->full++;
        s->state = S_WRITE;
    }
    if (s->state == S_WRITE) {
        while (s->sent < request_len) {
            size_t n = 0;
            int rc = SSL_write_ex(s->ssl, request + s->sent, request_len - s->sent, &n);
            if (rc != 1) {
                uint32_t w = ssl_wants(s->ssl, rc);
                if (w == 0)
                    return -1;
                slot_want(ep, s, w);
                return 0;
            }
            s->sent += n;
        }
        s->state = S_READ;
        slot_want(ep, s, EPOLLIN);
    }
    char buf[16384];
    for (;;) {
        size_t n = 0;
        int rc = SSL_read_ex(s->ssl, buf, sizeof(buf), &n);
        if (rc == 1) {
            if (!s->got_status) {
                if (n < 12 || memcmp(buf, "HTTP/1.1 200", 12) != 0)
                    return -1;
                s->got_status = true;
            }
            continue;
        }
        int e = SSL_get_error(s->ssl, rc);
        if (e == SSL_ERROR_WANT_READ)
            return 0;
        /* the server closes after its answer, with or without close_notify */
        if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) ||
            (e == SSL_ERROR_SSL &&
             ERR_GET_REASON(ERR_peek_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING))
            return s->got_status ? 1 : -1;
        return -1;
    }
}

static void slot_finish(struct slot *s, bool ok)
{
    if (ok && resume) {
        SSL_SESSION *next = SSL_get1_session(s->ssl);
        if (s->session != NULL)
            SSL_SESSION_free(s->session);
        s->session = next;
    }
    if (ok)
        SSL_shutdown(s->ssl);
    ERR_clear_error();
    slot_close(s);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct slot *slots = calloc((size_t)w->nslots, sizeof(*slots));
    w->counts.lat = calloc(LAT_BUCKETS, sizeof(*w->counts.lat));
    if (ep < 0 || slots == NULL || w->counts.lat == NULL) {
        perror("lb-tlsload: epoll/calloc");
        exit(1);
    }
    for (int i = 0; i < w->nslots; i++) {
        slots[i].fd = -1;
        if (!slot_open(ep, &slots[i]))
            w->counts.errors++;
    }
    struct epoll_event evs[256];
    while (now_s() < deadline) {
        int n = epoll_wait(ep, evs, 256, 100);
        for (int i = 0; i < n; i++) {
            struct slot *s = evs[i].data.ptr;
            int r = slot_step(ep, s, &w->counts);
            if (r == 0)
                continue;
            if (r > 0) {
                w->counts.done++;
                double b = (now_s() - s->t_open) / LAT_STEP_S;
                w->counts.lat[b < LAT_BUCKETS - 1 ? (size_t)b : LAT_BUCKETS - 1]++;
            } else
                w->counts.errors++;
            slot_finish(s, r > 0);
            if (now_s() < deadline && !slot_open(ep, s))
                w->counts.errors++;
        }
    }
    for (int i = 0; i < w->nslots; i++) {
        slot_close(&slots[i]);
        if (slots[i].session != NULL)
            SSL_SESSION_free(slots[i].session);
    }
    free(slots);
    close(ep);
    return NULL;
}

/* The time in ms under which <q> of the <n> connections counted in <lat>
 * completed. */
static double lat_quantile(const uint32_t *lat, uint64_t n, double q)
{
    uint64_t want = (uint64_t)((double)n * q + 0.5), seen = 0;
    for (size_t i = 0; i < LAT_BUCKETS; i++) {
        seen += lat[i];
        if (seen >= want && seen > 0)
            return (double)(i + 1) * LAT_STEP_S * 1e3;
    }
    return 0;
}

static void usage(void)
{
    fprintf(stderr, "usage: lb-tlsload --port N [--host 127.0.0.1] [--conns 32] [--threads 1]\n"
                    "                  [--seconds 10] [--resume] [--servername NAME]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1";
    int port = 0, conns = 32, threads = 1;
    double seconds = 10;
    static const struct option opts[] = {
        {"host", required_argument, NULL, 'h'},       {"port", required_argument, NULL, 'p'},
        {"conns", required_argument, NULL, 'c'},      {"threads", required_argument, NULL, 't'},
        {"seconds", required_argument, NULL, 's'},    {"resume", no_argument, NULL, 'r'},
        {"servername", required_argument, NULL, 'n'}, {NULL, 0, NULL, 0}};
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'h':
            host = optarg;
            break;
        case 'p':
            port = atoi(optarg);
            break;
        case 'c':
            conns = atoi(optarg);
            break;
        case 't':
            threads = atoi(optarg);
            break;
        case 's':
            seconds = atof(optarg);
            break;
        case 'r':
            resume = true;
            break;
        case 'n':
            server_name = optarg;
            break;
        default:
            usage();
        }
    }
    if (port <= 0 || port > 65535 || conns < 1 || threads < 1 || threads > conns || seconds <= 0)
        usage();
    target.sin_family = AF_INET;
    target.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &target.sin_addr) != 1) {
        fprintf(stderr, "lb-tlsload: --host must be an IPv4 address\n");
        return 2;
    }
    request_len = (size_t)snprintf(request, sizeof(request),
                                   "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n",
                                   server_name != NULL ? server_name : host);

    client_ctx = SSL_CTX_new(TLS_client_method());
    if (client_ctx == NULL) {
        fprintf(stderr, "lb-tlsload: no TLS client context\n");
        return 1;
    }
    SSL_CTX_set_min_proto_version(client_ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(client_ctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_session_cache_mode(client_ctx, SSL_SESS_CACHE_OFF);
    /* whole socket reads instead of a header and a body read per record */
    SSL_CTX_set_read_ahead(client_ctx, 1);

    struct worker *ws = calloc((size_t)threads, sizeof(*ws));
    if (ws == NULL)
        return 1;
    double start = now_s();
    deadline = start + seconds;
    for (int i = 0; i < threads; i++) {
        ws[i].nslots = conns / threads + (i < conns % threads ? 1 : 0);
        if (pthread_create(&ws[i].thread, NULL, worker_main, &ws[i]) != 0) {
            fprintf(stderr, "lb-tlsload: cannot start thread\n");
            return 1;
        }
    }
    struct counts total = {.lat = calloc(LAT_BUCKETS, sizeof(*total.lat))};
    if (total.lat == NULL)
        return 1;
    for (int i = 0; i < threads; i++) {
        pthread_join(ws[i].thread, NULL);
        for (size_t b = 0; b < LAT_BUCKETS; b++)
            total.lat[b] += ws[i].counts.lat[b];
        free(ws[i].counts.lat);
        total.done += ws[i].counts.done;
        total.full += ws[i].counts.full;
        total.resumed += ws[i].counts.resumed;
        total.errors += ws[i].counts.errors;
    }
    double elapsed = now_s() - start;
    printf("connections %llu in %.2f s: %.1f/s; full %llu resumed %llu errors %llu; "
           "p50 %.2f ms p99 %.2f ms\n",
           (unsigned long long)total.done, elapsed, (double)total.done / elapsed,
           (unsigned long long)total.full, (unsigned long long)total.resumed,
           (unsigned long long)total.errors, lat_quantile(total.lat, total.done, 0.50),
           lat_quantile(total.lat, total.done, 0.99));
    free(total.lat);
    free(ws);
    SSL_CTX_free(client_ctx);
    return total.done > 0 ? 0 : 1;
}
