/* proto/lb_log.c */
#include "lb_log.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "lb_err.h"

#define LOG_PREFIX_MAX   256 /* {"ts":...,"level":...,"proc":... with the longest proc */
#define LOG_TAIL         2   /* "}\n", kept free while a line is open */
#define LOG_EAGAIN_WAITS 10  /* 1 ms polls per write before the rest is dropped */

/* g_mu serialises every write to the log fd, so lines never interleave, and
 * guards g_fd and g_broken. g_proc is written only by lb_log_setup(), before
 * threads start. */
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static int g_fd = 1;
static bool g_broken; /* the last write stopped inside a line */
static char g_proc[LB_LOG_PROC_MAX + 1] = "lb";
static size_t g_proc_len = 2;
static atomic_int g_level = LB_LOG_INFO;
static atomic_uint_fast64_t g_dropped;

struct ts_cache {
    bool valid;
    time_t sec;
    size_t len;      /* of prefix */
    char prefix[40]; /* "2026-11-28T03:12:33." for sec */
};

struct lb_logbuf {
    char *buf;
    size_t cap;  /* fixed size of buf */
    size_t len;  /* bytes used: complete lines, then the open line */
    size_t done; /* bytes of complete lines */
    bool open;   /* a line was begun and not ended */
    struct ts_cache ts;
};

/* ---- escaping ----------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at <p> (avail >= 1 bytes), or 0. */
static size_t utf8_seq_len(const unsigned char *p, size_t avail)
{
    unsigned c = p[0];
    unsigned lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    size_t n;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0)
            lo = 0xA0; /* overlong */
        else if (c == 0xED)
            hi = 0x9F; /* surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0)
            lo = 0x90; /* overlong */
        else if (c == 0xF4)
            hi = 0x8F; /* above U+10FFFF */
    } else {
        return 0;
    }
    if (avail < n || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t k = 2; k < n; k++)
        if ((p[k] & 0xC0) != 0x80)
            return 0;
    return n;
}

/* Escapes whole units of <src> while they fit in <room> bytes of <dst> (NULL:
 * count only). Returns the bytes produced; *used gets the source bytes taken. */
static size_t esc_run(char *dst, size_t room, const char *src, size_t len, size_t *used)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)src;
    size_t i = 0, o = 0;
    while (i < len) {
        unsigned c = s[i];
        const char *rep = NULL;
        char u[6];
        size_t n = 1, adv = 1;
        if (c >= 0x80) {
            adv = utf8_seq_len(s + i, len - i);
            if (adv == 0) {
                rep = "\\ufffd";
                n = 6;
                adv = 1;
            } else {
                n = adv;
            }
        } else if (c == '"' || c == '\\') {
            rep = c == '"' ? "\\\"" : "\\\\";
            n = 2;
        } else if (c < 0x20) {
            n = 2;
            switch (c) {
            case '\n':
                rep = "\\n";
                break;
            case '\r':
                rep = "\\r";
                break;
            case '\t':
                rep = "\\t";
                break;
            case '\b':
                rep = "\\b";
                break;
            case '\f':
                rep = "\\f";
                break;
            default:
                memcpy(u, "\\u00", 4);
                u[4] = hex[c >> 4];
                u[5] = hex[c & 0xF];
                rep = u;
                n = 6;
                break;
            }
        }
        if (n > room - o)
            break;
        if (dst != NULL)
            memcpy(dst + o, rep != NULL ? rep : (const char *)s + i, n);
        o += n;
        i += adv;
    }
    *used = i;
    return o;
}

size_t lb_json_escape(char *dst, size_t cap, const char *src, size_t len)
{
    size_t used;
    size_t w = esc_run(cap > 0 ? dst : NULL, cap > 0 ? cap - 1 : 0, src, len, &used);
    if (cap > 0)
        dst[w] = '\0';
    if (used == len)
        return w;
    size_t tail_used;
    return w + esc_run(NULL, SIZE_MAX, src + used, len - used, &tail_used);
}

/* Writes the escaped <src> into at most <limit> bytes of <dst> (no NUL). When it
 * does not fit, or <cut> says <src> is already a cut prefix, the output is cut
 * at a unit boundary and ends in "...". Needs limit >= 3 unless it all fits. */
static size_t escape_value(char *dst, size_t limit, const char *src, size_t len, bool cut)
{
    size_t used;
    if (!cut) {
        size_t w = esc_run(dst, limit, src, len, &used);
        if (used == len)
            return w;
    }
    if (limit < 3)
        return 0;
    size_t w = esc_run(dst, limit - 3, src, len, &used);
    memcpy(dst + w, "...", 3);
    return w + 3;
}

/* ---- levels and setup -------------------------------------------------- */

void lb_log_setup(const char *proc, int fd, enum lb_log_level level)
{
    if (proc == NULL)
        proc = "lb";
    pthread_mutex_lock(&g_mu);
    g_proc_len = escape_value(g_proc, LB_LOG_PROC_MAX, proc, strlen(proc), false);
    g_proc[g_proc_len] = '\0';
    g_fd = fd;
    g_broken = false;
    pthread_mutex_unlock(&g_mu);
    lb_log_set_level(level);
}

void lb_log_set_level(enum lb_log_level level)
{
    atomic_store_explicit(&g_level, (int)level, memory_order_relaxed);
}

bool lb_log_enabled(enum lb_log_level level)
{
    return (int)level >= atomic_load_explicit(&g_level, memory_order_relaxed);
}

int lb_log_level_parse(const char *s, enum lb_log_level *out)
{
    static const struct {
        const char *name;
        enum lb_log_level level;
    } names[] = {
        {"debug", LB_LOG_DEBUG},  {"info", LB_LOG_INFO},   {"warn", LB_LOG_WARN},
        {"warning", LB_LOG_WARN}, {"error", LB_LOG_ERROR},
    };
    if (s == NULL)
        return -1;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strcasecmp(s, names[i].name) == 0) {
            *out = names[i].level;
            return 0;
        }
    }
    return -1;
}

const char *lb_log_level_name(enum lb_log_level level)
{
    static const char *const names[] = {
        [LB_LOG_DEBUG] = "debug",
        [LB_LOG_INFO] = "info",
        [LB_LOG_WARN] = "warn",
        [LB_LOG_ERROR] = "error",
    };
    return LB_ENUM_NAME(names, level, "unknown");
}

uint64_t lb_log_dropped(void)
{
    return atomic_load(&g_dropped);
}

/* ---- writing ------------------------------------------------------------ */

/* Writes <p>[0..n) to g_fd; caller holds g_mu. Returns the bytes written before
 * an error, end of file or too many EAGAINs. */
static size_t write_locked(const char *p, size_t n)
{
    size_t off = 0;
    int waits = 0;
    while (off < n) {
        ssize_t r = write(g_fd, p + off, n - off);
        if (r > 0) {
            off += (size_t)r;
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && waits < LOG_EAGAIN_WAITS) {
            struct pollfd pfd = {.fd = g_fd, .events = POLLOUT};
            (void)poll(&pfd, 1, 1);
            waits++;
            continue;
        }
        break;
    }
    return off;
}

static uint64_t count_lines(const char *p, size_t n)
{
    uint64_t lines = 0;
    const char *end = p + n;
    while (p < end && (p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
        lines++;
        p++;
    }
    return lines;
}

/* Writes complete lines <p>[0..n); what cannot be written is dropped and counted. */
static void log_emit(const char *p, size_t n)
{
    pthread_mutex_lock(&g_mu);
    size_t w = 0;
    bool whole_but_newline = false;
    if (!g_broken || write_locked("\n", 1) == 1) {
        g_broken = false;
        w = write_locked(p, n);
        if (w < n && w > 0 && p[w - 1] != '\n') {
            g_broken = true;
            /* Cut just before its newline, the line is whole once that is written. */
            whole_but_newline = p[w] == '\n';
        }
    }
    pthread_mutex_unlock(&g_mu);
    if (w < n)
        atomic_fetch_add(&g_dropped, count_lines(p + w, n - w) - (whole_but_newline ? 1 : 0));
}

/* ---- line parts --------------------------------------------------------- */

/* Writes the 24-byte-or-so timestamp "2026-11-28T03:12:33.123Z" into <out>. */
static size_t format_ts(struct ts_cache *c, char *out)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    if (!c->valid || c->sec != now.tv_sec) {
        struct tm tm;
        gmtime_r(&now.tv_sec, &tm);
        c->len = strftime(c->prefix, sizeof(c->prefix), "%Y-%m-%dT%H:%M:%S.", &tm);
        c->sec = now.tv_sec;
        c->valid = true;
    }
    unsigned ms = (unsigned)(now.tv_nsec / 1000000);
    memcpy(out, c->prefix, c->len);
    out[c->len] = (char)('0' + ms / 100);
    out[c->len + 1] = (char)('0' + ms / 10 % 10);
    out[c->len + 2] = (char)('0' + ms % 10);
    out[c->len + 3] = 'Z';
    return c->len + 4;
}

/* Writes {"ts":"...","level":"...","proc":"..." (at most LOG_PREFIX_MAX bytes). */
static size_t format_prefix(char *out, struct ts_cache *c, enum lb_log_level level)
{
    size_t o = 0;
    memcpy(out, "{\"ts\":\"", 7);
    o = 7;
    o += format_ts(c, out + o);
    const char *name = lb_log_level_name(level);
    size_t nlen = strlen(name);
    memcpy(out + o, "\",\"level\":\"", 11);
    o += 11;
    memcpy(out + o, name, nlen);
    o += nlen;
    memcpy(out + o, "\",\"proc\":\"", 10);
    o += 10;
    memcpy(out + o, g_proc, g_proc_len);
    o += g_proc_len;
    out[o++] = '"';
    return o;
}

void lb_log(enum lb_log_level level, const char *event, const char *fmt, ...)
{
    if (!lb_log_enabled(level))
        return;
    char msg[LB_LOG_VALUE_MAX + 1];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    size_t mlen = (size_t)n < LB_LOG_VALUE_MAX ? (size_t)n : LB_LOG_VALUE_MAX;

    char line[LOG_PREFIX_MAX + 2 * LB_LOG_VALUE_MAX + 64];
    struct ts_cache tc = {0};
    size_t o = format_prefix(line, &tc, level);
    memcpy(line + o, ",\"event\":", 9);
    o += 9;
    if (event == NULL) {
        memcpy(line + o, "null", 4);
        o += 4;
    } else {
        line[o++] = '"';
        o += escape_value(line + o, LB_LOG_VALUE_MAX, event, strlen(event), false);
        line[o++] = '"';
    }
    memcpy(line + o, ",\"msg\":\"", 8);
    o += 8;
    o += escape_value(line + o, LB_LOG_VALUE_MAX, msg, mlen, (size_t)n > LB_LOG_VALUE_MAX);
    memcpy(line + o, "\"}\n", 3);
    o += 3;
    log_emit(line, o);
}

/* ---- the buffered builder ------------------------------------------------ */

struct lb_logbuf *lb_logbuf_new(size_t cap)
{
    if (cap < LB_LOGBUF_MIN_CAP)
        cap = LB_LOGBUF_MIN_CAP;
    struct lb_logbuf *b = calloc(1, sizeof(*b));
    if (b == NULL)
        return NULL;
    b->buf = malloc(cap);
    if (b->buf == NULL) {
        free(b);
        return NULL;
    }
    b->cap = cap;
    return b;
}

void lb_logbuf_free(struct lb_logbuf *b)
{
    if (b == NULL)
        return;
    b->len = b->done;
    b->open = false;
    lb_logbuf_flush(b);
    free(b->buf);
    free(b);
}

void lb_logbuf_flush(struct lb_logbuf *b)
{
    if (b->done == 0)
        return;
    log_emit(b->buf, b->done);
    memmove(b->buf, b->buf + b->done, b->len - b->done);
    b->len -= b->done;
    b->done = 0;
}

/* Bytes free for the open line (the tail kept aside); when fewer than <need>,
 * the complete lines are flushed first to make room. */
static size_t logbuf_room(struct lb_logbuf *b, size_t need)
{
    if (b->cap - LOG_TAIL - b->len < need && b->done > 0)
        lb_logbuf_flush(b);
    return b->cap - LOG_TAIL - b->len;
}

/* Writes ,"<key>": when it and <vmin> value bytes fit, after making room for
 * <vwant> value bytes if it can. Returns the bytes left for the value, or 0
 * (nothing written) when the field is left out. */
static size_t logbuf_key(struct lb_logbuf *b, const char *key, size_t vmin, size_t vwant)
{
    if (!b->open)
        return 0;
    size_t klen = strlen(key);
    size_t kw = lb_json_escape(NULL, 0, key, klen);
    if (kw > LB_LOG_KEY_MAX)
        kw = LB_LOG_KEY_MAX;
    size_t room = logbuf_room(b, 4 + kw + vwant);
    if (room < 4 + kw + vmin)
        return 0;
    char *p = b->buf + b->len;
    p[0] = ',';
    p[1] = '"';
    size_t o = 2 + escape_value(p + 2, LB_LOG_KEY_MAX, key, klen, false);
    p[o++] = '"';
    p[o++] = ':';
    b->len += o;
    return room - o;
}

static void logbuf_raw(struct lb_logbuf *b, const char *key, const char *v, size_t n)
{
    if (logbuf_key(b, key, n, n) == 0)
        return;
    memcpy(b->buf + b->len, v, n);
    b->len += n;
}

void lb_logbuf_str(struct lb_logbuf *b, const char *key, const char *s, size_t len)
{
    if (s == NULL) {
        logbuf_raw(b, key, "null", 4);
        return;
    }
    /* Escaping makes at most 6 bytes of one; the value is cut at the maximum. */
    size_t want = len > LB_LOG_VALUE_MAX / 6 ? LB_LOG_VALUE_MAX : 6 * len;
    want += 2;
    size_t room = logbuf_key(b, key, want < 5 ? want : 5, want);
    if (room == 0)
        return;
    size_t limit = room - 2 < LB_LOG_VALUE_MAX ? room - 2 : LB_LOG_VALUE_MAX;
    char *p = b->buf + b->len;
    p[0] = '"';
    size_t w = escape_value(p + 1, limit, s, len, false);
    p[w + 1] = '"';
    b->len += w + 2;
}

void lb_logbuf_cstr(struct lb_logbuf *b, const char *key, const char *s)
{
    lb_logbuf_str(b, key, s, s != NULL ? strlen(s) : 0);
}

void lb_logbuf_int(struct lb_logbuf *b, const char *key, int64_t v)
{
    char tmp[24];
    int n = snprintf(tmp, sizeof(tmp), "%" PRId64, v);
    logbuf_raw(b, key, tmp, (size_t)n);
}

void lb_logbuf_uint(struct lb_logbuf *b, const char *key, uint64_t v)
{
    char tmp[24];
    int n = snprintf(tmp, sizeof(tmp), "%" PRIu64, v);
    logbuf_raw(b, key, tmp, (size_t)n);
}

void lb_logbuf_double(struct lb_logbuf *b, const char *key, double v, int decimals)
{
    if (!isfinite(v)) {
        logbuf_raw(b, key, "null", 4);
        return;
    }
    if (decimals < 0)
        decimals = 0;
    else if (decimals > 9)
        decimals = 9;
    char tmp[64];
    int n = snprintf(tmp, sizeof(tmp), "%.*f", decimals, v);
    if (n < 0 || (size_t)n >= sizeof(tmp))
        n = snprintf(tmp, sizeof(tmp), "%.*e", decimals, v);
    logbuf_raw(b, key, tmp, (size_t)n);
}

void lb_logbuf_bool(struct lb_logbuf *b, const char *key, bool v)
{
    logbuf_raw(b, key, v ? "true" : "false", v ? 4 : 5);
}

bool lb_logbuf_begin(struct lb_logbuf *b, enum lb_log_level level, const char *event)
{
    b->len = b->done;
    b->open = false;
    if (!lb_log_enabled(level))
        return false;
    /* cap >= 4096 leaves room for the prefix once the complete lines are out. */
    logbuf_room(b, LOG_PREFIX_MAX);
    b->len += format_prefix(b->buf + b->len, &b->ts, level);
    b->open = true;
    lb_logbuf_cstr(b, "event", event);
    return true;
}

void lb_logbuf_end(struct lb_logbuf *b)
{
    if (!b->open)
        return;
    memcpy(b->buf + b->len, "}\n", LOG_TAIL);
    b->len += LOG_TAIL;
    b->done = b->len;
    b->open = false;
    if (b->len > b->cap / 2)
        lb_logbuf_flush(b);
}
