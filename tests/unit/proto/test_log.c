/* tests/unit/proto/test_log.c: JSON escaping and JSON-lines logging (proto/lb_log.h). */
#include "lb_log.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- a small strict JSON checker ------------------------------------------ */

struct jp {
    const unsigned char *s;
    size_t n, i;
};

struct jfield {
    char key[LB_LOG_KEY_MAX + 1];
    const char *raw; /* the value's text in the line */
    size_t rawlen;
    char type; /* 's' string, 'n' number, 'b' bool, '0' null, 'o' object, 'a' array */
};

#define JMAX_FIELDS 128

struct jobj {
    struct jfield f[JMAX_FIELDS];
    size_t n;
};

static size_t t_utf8_len(const unsigned char *p, size_t avail)
{
    unsigned c = p[0];
    size_t n;
    unsigned min;
    if ((c & 0xE0) == 0xC0) {
        n = 2;
        min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
        n = 3;
        min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
        n = 4;
        min = 0x10000;
    } else {
        return 0;
    }
    if (avail < n)
        return 0;
    unsigned cp = c & (0x7F >> n);
    for (size_t k = 1; k < n; k++) {
        if ((p[k] & 0xC0) != 0x80)
            return 0;
        cp = cp << 6 | (p[k] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return n;
}

static int hex4(const unsigned char *p)
{
    int v = 0;
    for (int k = 0; k < 4; k++) {
        int c = p[k], d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            d = c - 'A' + 10;
        else
            return -1;
        v = v * 16 + d;
    }
    return v;
}

static void put_cp(char *out, size_t cap, size_t *o, unsigned cp)
{
    char u[4];
    size_t n;
    if (cp < 0x80) {
        u[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (char)(0xC0 | cp >> 6);
        u[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = (char)(0xE0 | cp >> 12);
        u[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        u[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        u[0] = (char)(0xF0 | cp >> 18);
        u[1] = (char)(0x80 | (cp >> 12 & 0x3F));
        u[2] = (char)(0x80 | (cp >> 6 & 0x3F));
        u[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    if (out != NULL && *o + n < cap)
        memcpy(out + *o, u, n);
    *o += n;
}

/* Parses a string; decodes it into <out> (may be NULL) when it fits. */
static bool jp_string(struct jp *p, char *out, size_t cap, size_t *olen)
{
    size_t o = 0;
    if (p->i >= p->n || p->s[p->i] != '"')
        return false;
    p->i++;
    for (;;) {
        if (p->i >= p->n)
            return false;
        unsigned c = p->s[p->i];
        if (c == '"') {
            p->i++;
            break;
        }
        if (c < 0x20)
            return false;
        if (c == '\\') {
            if (p->i + 1 >= p->n)
                return false;
            unsigned e = p->s[p->i + 1];
            const char *from = "\"\\/bfnrt", *to = "\"\\/\b\f\n\r\t";
            const char *hit = e != 0 ? strchr(from, (int)e) : NULL;
            if (hit != NULL) {
                put_cp(out, cap, &o, (unsigned char)to[hit - from]);
                p->i += 2;
                continue;
            }
            if (e != 'u' || p->i + 6 > p->n)
                return false;
            int cp = hex4(p->s + p->i + 2);
            if (cp < 0)
                return false;
            p->i += 6;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (p->i + 6 > p->n || p->s[p->i] != '\\' || p->s[p->i + 1] != 'u')
                    return false;
                int lo = hex4(p->s + p->i + 2);
                if (lo < 0xDC00 || lo > 0xDFFF)
                    return false;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                p->i += 6;
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                return false;
            }
            put_cp(out, cap, &o, (unsigned)cp);
            continue;
        }
        size_t n = 1;
        if (c >= 0x80) {
            n = t_utf8_len(p->s + p->i, p->n - p->i);
            if (n == 0)
                return false;
        }
        if (out != NULL && o + n < cap)
            memcpy(out + o, p->s + p->i, n);
        o += n;
        p->i += n;
    }
    if (out != NULL && cap > 0)
        out[o < cap ? o : cap - 1] = '\0';
    if (olen != NULL)
        *olen = o;
    return true;
}

static bool jp_digits(struct jp *p)
{
    size_t start = p->i;
    while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9')
        p->i++;
    return p->i > start;
}

static bool jp_number(struct jp *p)
{
    if (p->i < p->n && p->s[p->i] == '-')
        p->i++;
    if (p->i < p->n && p->s[p->i] == '0')
        p->i++;
    else if (!jp_digits(p))
        return false;
    if (p->i < p->n && p->s[p->i] == '.') {
        p->i++;
        if (!jp_digits(p))
            return false;
    }
    if (p->i < p->n && (p->s[p->i] == 'e' || p->s[p->i] == 'E')) {
        p->i++;
        if (p->i < p->n && (p->s[p->i] == '+' || p->s[p->i] == '-'))
            p->i++;
        if (!jp_digits(p))
            return false;
    }
    return true;
}

static bool jp_lit(struct jp *p, const char *lit)
{
    size_t n = strlen(lit);
    if (p->n - p->i < n || memcmp(p->s + p->i, lit, n) != 0)
        return false;
    p->i += n;
    return true;
}

static bool jp_value(struct jp *p, char *type, int depth);

static bool jp_members(struct jp *p, char open, char close, int depth, struct jobj *top)
{
    if (p->i >= p->n || p->s[p->i] != open)
        return false;
    p->i++;
    if (p->i < p->n && p->s[p->i] == close) {
        p->i++;
        return true;
    }
    for (;;) {
        struct jfield dummy;
        struct jfield *f = &dummy;
        if (top != NULL) {
            if (top->n == JMAX_FIELDS)
                return false;
            f = &top->f[top->n++];
        }
        if (open == '{') {
            if (!jp_string(p, f->key, sizeof(f->key), NULL))
                return false;
            if (p->i >= p->n || p->s[p->i] != ':')
                return false;
            p->i++;
        }
        size_t start = p->i;
        if (!jp_value(p, &f->type, depth + 1))
            return false;
        f->raw = (const char *)p->s + start;
        f->rawlen = p->i - start;
        if (p->i >= p->n)
            return false;
        if (p->s[p->i] == close) {
            p->i++;
            return true;
        }
        if (p->s[p->i] != ',')
            return false;
        p->i++;
    }
}

static bool jp_value(struct jp *p, char *type, int depth)
{
    if (p->i >= p->n || depth > 16)
        return false;
    switch (p->s[p->i]) {
    case '"':
        *type = 's';
        return jp_string(p, NULL, 0, NULL);
    case '{':
        *type = 'o';
        return jp_members(p, '{', '}', depth, NULL);
    case '[':
        *type = 'a';
        return jp_members(p, '[', ']', depth, NULL);
    case 't':
        *type = 'b';
        return jp_lit(p, "true");
    case 'f':
        *type = 'b';
        return jp_lit(p, "false");
    case 'n':
        *type = '0';
        return jp_lit(p, "null");
    default:
        *type = 'n';
        return jp_number(p);
    }
}

/* True when line[0..len) (no newline) is exactly one JSON object; fills <o>. */
static bool json_line_parse(const char *line, size_t len, struct jobj *o)
{
    struct jp p = {(const unsigned char *)line, len, 0};
    o->n = 0;
    return jp_members(&p, '{', '}', 0, o) && p.i == len;
}

static const struct jfield *jget(const struct jobj *o, const char *key)
{
    for (size_t i = 0; i < o->n; i++)
        if (strcmp(o->f[i].key, key) == 0)
            return &o->f[i];
    return NULL;
}

/* The decoded string value of <key>, or NULL when absent or not a string. */
static const char *jstr(const struct jobj *o, const char *key, char *buf, size_t cap)
{
    const struct jfield *f = jget(o, key);
    if (f == NULL || f->type != 's')
        return NULL;
    struct jp p = {(const unsigned char *)f->raw, f->rawlen, 0};
    if (!jp_string(&p, buf, cap, NULL))
        ck_abort_msg("bad string %s", key);
    return buf;
}

static long long jint(const struct jobj *o, const char *key)
{
    const struct jfield *f = jget(o, key);
    if (f == NULL || f->type != 'n')
        ck_abort_msg("no number %s", key);
    return strtoll(f->raw, NULL, 10);
}

/* ---- capture ------------------------------------------------------------- */

static int g_out = -1; /* temp file the logger writes to */

static void capture_setup(void)
{
    char path[] = "/tmp/lb_test_log_XXXXXX";
    g_out = mkstemp(path);
    ck_assert_int_ge(g_out, 0);
    unlink(path);
    ck_assert_int_eq(fcntl(g_out, F_SETFL, O_APPEND), 0);
    lb_log_setup("lb-test", g_out, LB_LOG_DEBUG);
}

static void capture_teardown(void)
{
    close(g_out);
    g_out = -1;
}

/* Everything written so far, NUL-terminated; caller frees. */
static char *capture_read(size_t *len)
{
    off_t size = lseek(g_out, 0, SEEK_END);
    ck_assert_int_ge(size, 0);
    char *s = malloc((size_t)size + 1);
    ck_assert_ptr_nonnull(s);
    ck_assert_int_eq(pread(g_out, s, (size_t)size, 0), size);
    s[size] = '\0';
    *len = (size_t)size;
    return s;
}

static size_t count_char(const char *s, size_t len, char c)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += s[i] == c;
    return n;
}

/* Parses line number <idx> of <text> into <o>, asserting it is valid JSON. Returns its length. */
static size_t nth_line(const char *text, size_t len, size_t idx, struct jobj *o)
{
    const char *p = text, *end = text + len;
    for (size_t i = 0; i < idx; i++) {
        p = memchr(p, '\n', (size_t)(end - p));
        ck_assert_ptr_nonnull(p);
        p++;
    }
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    ck_assert_ptr_nonnull(nl);
    ck_assert_msg(json_line_parse(p, (size_t)(nl - p), o), "line %zu is not JSON: %.*s", idx,
                  (int)(nl - p > 300 ? 300 : nl - p), p);
    return (size_t)(nl - p);
}

/* Checks the common keys and the ts format; returns the ts as seconds. */
static void check_head(const struct jobj *o, const char *level, const char *event)
{
    char buf[64];
    ck_assert_uint_ge(o->n, 4);
    ck_assert_str_eq(o->f[0].key, "ts");
    ck_assert_str_eq(o->f[1].key, "level");
    ck_assert_str_eq(o->f[2].key, "proc");
    ck_assert_str_eq(o->f[3].key, "event");
    ck_assert_str_eq(jstr(o, "level", buf, sizeof(buf)), level);
    ck_assert_str_eq(jstr(o, "proc", buf, sizeof(buf)), "lb-test");
    if (event != NULL)
        ck_assert_str_eq(jstr(o, "event", buf, sizeof(buf)), event);
    const char *ts = jstr(o, "ts", buf, sizeof(buf));
    ck_assert_ptr_nonnull(ts);
    ck_assert_uint_eq(strlen(ts), 24);
    const char *shape = "dddd-dd-ddTdd:dd:dd.dddZ";
    for (size_t i = 0; i < 24; i++) {
        if (shape[i] == 'd')
            ck_assert_msg(ts[i] >= '0' && ts[i] <= '9', "ts %s", ts);
        else
            ck_assert_int_eq(ts[i], shape[i]);
    }
    struct tm tm = {0};
    ck_assert_ptr_nonnull(strptime(ts, "%Y-%m-%dT%H:%M:%S", &tm));
    time_t t = timegm(&tm), now = time(NULL);
    ck_assert_msg(t <= now + 1 && t >= now - 10, "ts %s is not now", ts);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Asserts that the line's ts, to the millisecond, lies in [lo_ms, hi_ms]. */
static void check_ts_between(const struct jobj *o, int64_t lo_ms, int64_t hi_ms)
{
    char buf[64];
    const char *ts = jstr(o, "ts", buf, sizeof(buf));
    struct tm tm = {0};
    const char *rest = strptime(ts, "%Y-%m-%dT%H:%M:%S.", &tm);
    ck_assert_ptr_nonnull(rest);
    int64_t ms = (int64_t)timegm(&tm) * 1000 + strtol(rest, NULL, 10);
    ck_assert_msg(ms >= lo_ms && ms <= hi_ms, "ts %s not in [%lld, %lld]", ts, (long long)lo_ms,
                  (long long)hi_ms);
}

/* ---- escaping --------------------------------------------------------------- */

struct esc_case {
    const char *in;
    size_t len;
    const char *out;
};

#define ESC(lit, out)                                                                              \
    {                                                                                              \
        lit, sizeof(lit) - 1, out                                                                  \
    }

static const struct esc_case esc_cases[] = {
    ESC("plain", "plain"),
    ESC("", ""),
    ESC("a\"b", "a\\\"b"),
    ESC("a\\b", "a\\\\b"),
    ESC("/", "/"),
    ESC("\n\r\t\b\f", "\\n\\r\\t\\b\\f"),
    ESC("\x00", "\\u0000"),
    ESC("\x01\x1f", "\\u0001\\u001f"),
    ESC("\x0b", "\\u000b"),
    ESC("\x7f", "\x7f"),
    ESC(" ~", " ~"),
    ESC("\xc3\xa9", "\xc3\xa9"),                             /* é, 2 bytes */
    ESC("\xc2\x80", "\xc2\x80"),                             /* U+0080, smallest 2-byte */
    ESC("\xe2\x82\xac", "\xe2\x82\xac"),                     /* €, 3 bytes */
    ESC("\xef\xbf\xbf", "\xef\xbf\xbf"),                     /* U+FFFF */
    ESC("\xf0\x9f\x98\x80", "\xf0\x9f\x98\x80"),             /* 😀, 4 bytes */
    ESC("\xf4\x8f\xbf\xbf", "\xf4\x8f\xbf\xbf"),             /* U+10FFFF */
    ESC("\x80", "\\ufffd"),                                  /* stray continuation */
    ESC("\xbf\x80", "\\ufffd\\ufffd"),                       /* two of them */
    ESC("\xc0\xaf", "\\ufffd\\ufffd"),                       /* overlong '/' */
    ESC("\xc1\xbf", "\\ufffd\\ufffd"),                       /* overlong */
    ESC("\xe0\x80\xaf", "\\ufffd\\ufffd\\ufffd"),            /* overlong 3-byte */
    ESC("\xf0\x80\x80\xaf", "\\ufffd\\ufffd\\ufffd\\ufffd"), /* overlong 4-byte */
    ESC("\xed\xa0\x80", "\\ufffd\\ufffd\\ufffd"),            /* surrogate U+D800 */
    ESC("\xf4\x90\x80\x80", "\\ufffd\\ufffd\\ufffd\\ufffd"), /* above U+10FFFF */
    ESC("\xf5\x80", "\\ufffd\\ufffd"),
    ESC("\xfe\xff", "\\ufffd\\ufffd"),
    ESC("\xc3", "\\ufffd"),                         /* truncated at the end */
    ESC("\xe2\x82", "\\ufffd\\ufffd"),              /* truncated at the end */
    ESC("\xe2\x82z", "\\ufffd\\ufffdz"),            /* truncated by an ASCII byte */
    ESC("\xf0\x9f\x98", "\\ufffd\\ufffd\\ufffd"),   /* truncated 4-byte */
    ESC("a\xc3\xa9\xff\"", "a\xc3\xa9\\ufffd\\\""), /* mixed */
};

START_TEST(escape_table)
{
    const struct esc_case *c = &esc_cases[_i];
    char out[128];
    size_t need = lb_json_escape(out, sizeof(out), c->in, c->len);
    ck_assert_msg(strcmp(out, c->out) == 0, "case %d: got \"%s\" want \"%s\"", _i, out, c->out);
    ck_assert_uint_eq(need, strlen(c->out));
    ck_assert_uint_eq(lb_json_escape(NULL, 0, c->in, c->len), need);
}
END_TEST

START_TEST(escape_every_control_byte)
{
    for (unsigned c = 0; c < 0x20; c++) {
        char in = (char)c, out[16], want[16];
        switch (c) {
        case '\n':
            strcpy(want, "\\n");
            break;
        case '\r':
            strcpy(want, "\\r");
            break;
        case '\t':
            strcpy(want, "\\t");
            break;
        case '\b':
            strcpy(want, "\\b");
            break;
        case '\f':
            strcpy(want, "\\f");
            break;
        default:
            snprintf(want, sizeof(want), "\\u%04x", c);
            break;
        }
        ck_assert_uint_eq(lb_json_escape(out, sizeof(out), &in, 1), strlen(want));
        ck_assert_str_eq(out, want);
    }
    /* every printable ASCII byte but " and \ passes unchanged */
    for (unsigned c = 0x20; c < 0x80; c++) {
        char in = (char)c, out[16];
        size_t need = lb_json_escape(out, sizeof(out), &in, 1);
        if (c == '"' || c == '\\') {
            ck_assert_uint_eq(need, 2);
        } else {
            ck_assert_uint_eq(need, 1);
            ck_assert_int_eq((unsigned char)out[0], c);
        }
    }
}
END_TEST

START_TEST(escape_truncation_keeps_units_whole)
{
    /* units: a | \" | \u0001 | é | 😀 | \ufffd | z */
    static const char in[] = "a\"\x01\xc3\xa9\xf0\x9f\x98\x80\xffz";
    static const char full[] = "a\\\"\\u0001\xc3\xa9\xf0\x9f\x98\x80\\ufffdz";
    static const size_t bounds[] = {0, 1, 3, 9, 11, 15, 21, 22};
    const size_t nbounds = sizeof(bounds) / sizeof(bounds[0]);
    ck_assert_uint_eq(strlen(full), 22);
    for (size_t cap = 0; cap <= sizeof(full) + 1; cap++) {
        char out[64];
        memset(out, 'X', sizeof(out));
        size_t need = lb_json_escape(cap > 0 ? out : NULL, cap, in, sizeof(in) - 1);
        ck_assert_uint_eq(need, 22);
        if (cap == 0) {
            ck_assert_int_eq(out[0], 'X');
            continue;
        }
        size_t got = strlen(out);
        size_t want = 0;
        for (size_t k = 0; k < nbounds; k++)
            if (bounds[k] <= cap - 1)
                want = bounds[k];
        ck_assert_msg(got == want, "cap %zu: %zu bytes, want %zu", cap, got, want);
        ck_assert_int_eq(memcmp(out, full, got), 0);
        ck_assert_int_eq(out[cap], 'X'); /* nothing written past cap */
        ck_assert_int_eq(need >= cap, got < 22);
    }
}
END_TEST

/* ---- levels ----------------------------------------------------------------- */

START_TEST(level_parse_and_name)
{
    enum lb_log_level l = LB_LOG_INFO;
    ck_assert_int_eq(lb_log_level_parse("debug", &l), 0);
    ck_assert_int_eq(l, LB_LOG_DEBUG);
    ck_assert_int_eq(lb_log_level_parse("INFO", &l), 0);
    ck_assert_int_eq(l, LB_LOG_INFO);
    ck_assert_int_eq(lb_log_level_parse("Warn", &l), 0);
    ck_assert_int_eq(l, LB_LOG_WARN);
    ck_assert_int_eq(lb_log_level_parse("warning", &l), 0);
    ck_assert_int_eq(l, LB_LOG_WARN);
    ck_assert_int_eq(lb_log_level_parse("eRRor", &l), 0);
    ck_assert_int_eq(l, LB_LOG_ERROR);
    ck_assert_int_eq(lb_log_level_parse("fatal", &l), -1);
    ck_assert_int_eq(lb_log_level_parse("", &l), -1);
    ck_assert_int_eq(lb_log_level_parse("info ", &l), -1);
    ck_assert_int_eq(lb_log_level_parse(NULL, &l), -1);
    ck_assert_int_eq(l, LB_LOG_ERROR);
    ck_assert_str_eq(lb_log_level_name(LB_LOG_DEBUG), "debug");
    ck_assert_str_eq(lb_log_level_name(LB_LOG_INFO), "info");
    ck_assert_str_eq(lb_log_level_name(LB_LOG_WARN), "warn");
    ck_assert_str_eq(lb_log_level_name(LB_LOG_ERROR), "error");
    ck_assert_str_eq(lb_log_level_name((enum lb_log_level)42), "unknown");
}
END_TEST

START_TEST(level_filtering)
{
    lb_log_set_level(LB_LOG_WARN);
    ck_assert(!lb_log_enabled(LB_LOG_DEBUG));
    ck_assert(!lb_log_enabled(LB_LOG_INFO));
    ck_assert(lb_log_enabled(LB_LOG_WARN));
    ck_assert(lb_log_enabled(LB_LOG_ERROR));

    struct lb_logbuf *b = lb_logbuf_new(4096);
    ck_assert_ptr_nonnull(b);
    ck_assert(!lb_logbuf_begin(b, LB_LOG_INFO, "skipped"));
    lb_logbuf_cstr(b, "k", "v"); /* no-ops until end */
    lb_logbuf_int(b, "n", 1);
    lb_logbuf_end(b);
    ck_assert(lb_logbuf_begin(b, LB_LOG_ERROR, "kept"));
    lb_logbuf_end(b);
    lb_log(LB_LOG_DEBUG, "skipped", "x");
    lb_log(LB_LOG_WARN, "kept2", "y");
    lb_logbuf_flush(b);

    lb_log_set_level(LB_LOG_DEBUG);
    ck_assert(lb_log_enabled(LB_LOG_DEBUG));
    ck_assert(lb_logbuf_begin(b, LB_LOG_DEBUG, "dbg"));
    lb_logbuf_end(b);
    lb_logbuf_free(b);

    size_t len;
    char *text = capture_read(&len);
    ck_assert_uint_eq(count_char(text, len, '\n'), 3);
    ck_assert_ptr_null(strstr(text, "skipped"));
    struct jobj o;
    nth_line(text, len, 0, &o);
    check_head(&o, "warn", "kept2"); /* lb_log writes at once, before the flush */
    ck_assert_uint_eq(o.n, 5);
    nth_line(text, len, 1, &o);
    check_head(&o, "error", "kept");
    ck_assert_uint_eq(o.n, 4);
    nth_line(text, len, 2, &o);
    check_head(&o, "debug", "dbg");
    free(text);
}
END_TEST

/* ---- the buffered builder ---------------------------------------------------- */

START_TEST(logbuf_exact_line)
{
    struct lb_logbuf *b = lb_logbuf_new(4096);
    int64_t t0 = now_ms();
    ck_assert(lb_logbuf_begin(b, LB_LOG_INFO, "access"));
    int64_t t1 = now_ms();
    lb_logbuf_str(b, "path", "/a\"b\\c\n", 7);
    lb_logbuf_cstr(b, "ua", NULL);
    lb_logbuf_cstr(b, "host", "ex\xc3\xa9.org\xff");
    lb_logbuf_int(b, "neg", -42);
    lb_logbuf_int(b, "min", INT64_MIN);
    lb_logbuf_uint(b, "max", UINT64_MAX);
    lb_logbuf_double(b, "dur", 1.23456, 3);
    lb_logbuf_double(b, "zero", 2.5, 0);
    lb_logbuf_double(b, "big", 1e300, 2);
    lb_logbuf_double(b, "nan", NAN, 2);
    lb_logbuf_bool(b, "ok", true);
    lb_logbuf_bool(b, "tls", false);
    lb_logbuf_str(b, "k\"ey", "", 0);
    lb_logbuf_end(b);
    lb_logbuf_free(b); /* flushes */

    size_t len;
    char *text = capture_read(&len);
    struct jobj o;
    size_t ll = nth_line(text, len, 0, &o);
    check_head(&o, "info", "access");
    check_ts_between(&o, t0, t1);
    ck_assert_uint_eq(ll + 1, len);
    /* replace the timestamp, then compare the whole line */
    ck_assert_int_eq(memcmp(text, "{\"ts\":\"", 7), 0);
    char line[1024];
    snprintf(line, sizeof(line), "{\"ts\":\"TS\"%s", text + 7 + 24 + 1);
    ck_assert_str_eq(line,
                     "{\"ts\":\"TS\",\"level\":\"info\",\"proc\":\"lb-test\",\"event\":\"access\","
                     "\"path\":\"/a\\\"b\\\\c\\n\",\"ua\":null,\"host\":\"ex\xc3\xa9.org\\ufffd\","
                     "\"neg\":-42,\"min\":-9223372036854775808,\"max\":18446744073709551615,"
                     "\"dur\":1.235,\"zero\":2,\"big\":1.00e+300,\"nan\":null,\"ok\":true,"
                     "\"tls\":false,\"k\\\"ey\":\"\"}\n");
    free(text);
}
END_TEST

START_TEST(logbuf_null_event_and_proc)
{
    lb_log_setup(NULL, g_out, LB_LOG_INFO);
    struct lb_logbuf *b = lb_logbuf_new(0); /* raised to the minimum */
    ck_assert_ptr_nonnull(b);
    ck_assert(lb_logbuf_begin(b, LB_LOG_INFO, NULL));
    lb_logbuf_end(b);
    lb_logbuf_free(b);
    lb_logbuf_free(NULL);
    size_t len;
    char *text = capture_read(&len);
    ck_assert_ptr_nonnull(strstr(text, "\"level\":\"info\",\"proc\":\"lb\",\"event\":null}\n"));
    free(text);
}
END_TEST

START_TEST(logbuf_open_line_not_flushed)
{
    struct lb_logbuf *b = lb_logbuf_new(4096);
    ck_assert(lb_logbuf_begin(b, LB_LOG_INFO, "one"));
    lb_logbuf_end(b);
    ck_assert(lb_logbuf_begin(b, LB_LOG_INFO, "two"));
    lb_logbuf_cstr(b, "k", "v");
    lb_logbuf_flush(b);
    size_t len;
    char *text = capture_read(&len);
    ck_assert_uint_eq(count_char(text, len, '\n'), 1);
    ck_assert_ptr_null(strstr(text, "two"));
    free(text);
    lb_logbuf_end(b);
    ck_assert(lb_logbuf_begin(b, LB_LOG_INFO, "three"));
    ck_assert(lb_logbuf_begin(b, LB_LOG_INFO, "four")); /* drops the open "three" */
    lb_logbuf_end(b);
    ck_assert(lb_logbuf_begin(b, LB_LOG_INFO, "five")); /* left open: dropped by free */
    lb_logbuf_free(b);
    text = capture_read(&len);
    ck_assert_uint_eq(count_char(text, len, '\n'), 3);
    struct jobj o;
    nth_line(text, len, 1, &o);
    check_head(&o, "info", "two");
    nth_line(text, len, 2, &o);
    check_head(&o, "info", "four");
    ck_assert_ptr_null(strstr(text, "three"));
    ck_assert_ptr_null(strstr(text, "five"));
    free(text);
}
END_TEST

START_TEST(logbuf_end_flushes_past_half)
{
    struct lb_logbuf *b = lb_logbuf_new(4096);
    size_t len = 0;
    int lines = 0;
    while (len == 0 && lines < 100) {
        ck_assert(lb_logbuf_begin(b, LB_LOG_INFO, "fill"));
        lb_logbuf_int(b, "i", lines);
        lb_logbuf_cstr(b, "pad", "0123456789012345678901234567890123456789");
        lb_logbuf_end(b);
        lines++;
        free(capture_read(&len));
    }
    ck_assert_int_lt(lines, 100);
    /* flushed by the first line that took it past half, not when it was full */
    char *text = capture_read(&len);
    ck_assert_uint_eq(count_char(text, len, '\n'), (size_t)lines);
    const char *last = memrchr(text, '\n', len - 1);
    ck_assert_ptr_nonnull(last);
    ck_assert_uint_le((size_t)(last + 1 - text), 2048);
    ck_assert_uint_gt(len, 2048);
    free(text);
    lb_logbuf_free(b);
}
END_TEST

/* A value of 20 KiB ends as 8 KiB with "...", in a big buffer and a small one. */
static void check_long_value(size_t cap, const char *unit, size_t unit_len, size_t raw_units)
{
    ck_assert_int_eq(ftruncate(g_out, 0), 0);
    size_t rawlen = unit_len * raw_units;
    char *raw = malloc(rawlen);
    for (size_t i = 0; i < raw_units; i++)
        memcpy(raw + i * unit_len, unit, unit_len);
    struct lb_logbuf *b = lb_logbuf_new(cap);
    ck_assert(lb_logbuf_begin(b, LB_LOG_INFO, "long"));
    lb_logbuf_str(b, "v", raw, rawlen);
    lb_logbuf_int(b, "after", 7);
    lb_logbuf_end(b);
    lb_logbuf_free(b);

    size_t len;
    char *text = capture_read(&len);
    struct jobj *o = malloc(sizeof(*o));
    size_t ll = nth_line(text, len, 0, o);
    ck_assert_uint_le(ll + 1, cap);
    check_head(o, "info", "long");
    const struct jfield *v = jget(o, "v");
    ck_assert_ptr_nonnull(v);
    ck_assert_uint_le(v->rawlen - 2, LB_LOG_VALUE_MAX);
    ck_assert_uint_ge(v->rawlen - 2, (cap > LB_LOG_VALUE_MAX ? LB_LOG_VALUE_MAX : cap / 2) - 8);
    ck_assert_int_eq(memcmp(v->raw + v->rawlen - 4, "...\"", 4), 0);
    char *dec = malloc(rawlen + 1);
    jstr(o, "v", dec, rawlen + 1);
    size_t declen = strlen(dec) - 3;
    ck_assert_int_eq(declen % unit_len, 0); /* whole units only */
    ck_assert_int_eq(memcmp(dec, raw, declen), 0);
    if (cap > LB_LOG_VALUE_MAX + 512)
        ck_assert_int_eq(jint(o, "after"), 7);
    free(dec);
    free(o);
    free(text);
    free(raw);
}

START_TEST(logbuf_long_value_cut)
{
    check_long_value(64 * 1024, "x", 1, 20 * 1024);
}
END_TEST

START_TEST(logbuf_long_value_cut_small_buffer)
{
    check_long_value(4096, "x", 1, 20 * 1024);
}
END_TEST

START_TEST(logbuf_long_utf8_value_cut)
{
    check_long_value(64 * 1024, "\xe2\x82\xac", 3, 7 * 1024);
}
END_TEST

START_TEST(logbuf_long_escaped_value_cut)
{
    check_long_value(64 * 1024, "\x01", 1, 20 * 1024);
    check_long_value(4096, "\"", 1, 20 * 1024);
}
END_TEST

START_TEST(logbuf_many_fields_never_overflow)
{
    char pad[200];
    memset(pad, 'p', sizeof(pad));
    struct lb_logbuf *b = lb_logbuf_new(4096);
    ck_assert(lb_logbuf_begin(b, LB_LOG_INFO, "first"));
    lb_logbuf_end(b);
    ck_assert(lb_logbuf_begin(b, LB_LOG_INFO, "wide"));
    char key[16];
    for (int i = 0; i < 100; i++) {
        snprintf(key, sizeof(key), "f%d", i);
        lb_logbuf_str(b, key, pad, sizeof(pad));
        lb_logbuf_uint(b, "n", (uint64_t)i);
    }
    lb_logbuf_end(b);
    lb_logbuf_free(b);

    size_t len;
    char *text = capture_read(&len);
    ck_assert_uint_eq(count_char(text, len, '\n'), 2);
    struct jobj *o = malloc(sizeof(*o));
    nth_line(text, len, 0, o);
    check_head(o, "info", "first"); /* flushed first to make room */
    size_t ll = nth_line(text, len, 1, o);
    check_head(o, "info", "wide");
    ck_assert_uint_le(ll + 1, 4096);
    /* filled up to the last few bytes, the complete line before flushed out of the way */
    ck_assert_uint_ge(ll + 1, 4096 - 20);
    ck_assert_ptr_nonnull(jget(o, "f0"));
    ck_assert_ptr_null(jget(o, "f99"));
    free(o);
    free(text);
}
END_TEST

/* ---- lb_log ------------------------------------------------------------------ */

START_TEST(log_line)
{
    int64_t t0 = now_ms();
    lb_log(LB_LOG_INFO, "start", "listening on %s:%d, \"%s\"", "127.0.0.1", 8080, "a\nb");
    int64_t t1 = now_ms();
    lb_log(LB_LOG_ERROR, NULL, "%s", "bad \xc3");
    size_t len;
    char *text = capture_read(&len);
    ck_assert_uint_eq(count_char(text, len, '\n'), 2);
    struct jobj o;
    char buf[256];
    nth_line(text, len, 0, &o);
    check_head(&o, "info", "start");
    check_ts_between(&o, t0, t1);
    ck_assert_uint_eq(o.n, 5);
    ck_assert_str_eq(o.f[4].key, "msg");
    ck_assert_str_eq(jstr(&o, "msg", buf, sizeof(buf)), "listening on 127.0.0.1:8080, \"a\nb\"");
    nth_line(text, len, 1, &o);
    check_head(&o, "error", NULL);
    ck_assert_int_eq(jget(&o, "event")->type, '0');
    ck_assert_str_eq(jstr(&o, "msg", buf, sizeof(buf)), "bad \xef\xbf\xbd");
    free(text);
}
END_TEST

START_TEST(log_long_message_cut)
{
    char *big = malloc(20 * 1024 + 1);
    memset(big, 'm', 20 * 1024);
    big[20 * 1024] = '\0';
    lb_log(LB_LOG_WARN, "big", "<%s>", big);
    size_t len;
    char *text = capture_read(&len);
    struct jobj o;
    nth_line(text, len, 0, &o);
    check_head(&o, "warn", "big");
    const struct jfield *m = jget(&o, "msg");
    ck_assert_uint_eq(m->rawlen - 2, LB_LOG_VALUE_MAX);
    ck_assert_int_eq(memcmp(m->raw, "\"<mmm", 5), 0);
    ck_assert_int_eq(memcmp(m->raw + m->rawlen - 5, "m...\"", 5), 0);
    free(text);
    free(big);
}
END_TEST

/* ---- failures and threads --------------------------------------------------------- */

START_TEST(nonblocking_full_pipe_drops_and_counts)
{
    int p[2];
    ck_assert_int_eq(pipe2(p, O_NONBLOCK), 0);
    (void)fcntl(p[1], F_SETPIPE_SZ, 4096);
    lb_log_setup("lb-test", p[1], LB_LOG_INFO);
    uint64_t before = lb_log_dropped();
    const int total = 2000;
    struct lb_logbuf *b = lb_logbuf_new(16384);
    for (int i = 0; i < total; i++) {
        ck_assert(lb_logbuf_begin(b, LB_LOG_INFO, "flood"));
        lb_logbuf_int(b, "i", i);
        lb_logbuf_cstr(b, "pad", "0123456789012345678901234567890123456789012345678901234567");
        lb_logbuf_end(b);
        if (i % 50 == 49)
            lb_logbuf_flush(b);
    }
    lb_logbuf_flush(b);
    uint64_t dropped = lb_log_dropped() - before;
    ck_assert_uint_gt(dropped, 0);

    /* drain: whole lines, at most one fragment where a write was cut */
    size_t cap = 1 << 20, len = 0;
    char *text = malloc(cap);
    ssize_t r;
    while ((r = read(p[0], text + len, cap - len - 1)) > 0)
        len += (size_t)r;
    ck_assert(r == -1 && errno == EAGAIN);

    /* the next line after a cut write starts on a line of its own */
    ck_assert(lb_logbuf_begin(b, LB_LOG_INFO, "after"));
    lb_logbuf_end(b);
    lb_logbuf_flush(b);
    while ((r = read(p[0], text + len, cap - len - 1)) > 0)
        len += (size_t)r;
    text[len] = '\0';

    size_t valid = 0, broken = 0;
    struct jobj o;
    const char *s = text, *end = text + len, *last = NULL;
    while (s < end) {
        const char *nl = memchr(s, '\n', (size_t)(end - s));
        ck_assert_ptr_nonnull(nl);
        if (json_line_parse(s, (size_t)(nl - s), &o))
            valid++;
        else
            broken++;
        last = s;
        s = nl + 1;
    }
    ck_assert_uint_le(broken, 1);
    ck_assert_uint_eq(valid - 1 + dropped, (uint64_t)total); /* "after" is not in total */
    ck_assert_ptr_nonnull(last);
    ck_assert_int_eq(memcmp(last, "{\"ts\":", 6), 0);
    ck_assert_ptr_nonnull(strstr(last, "\"event\":\"after\"}\n"));
    lb_logbuf_free(b);
    free(text);
    close(p[0]);
    close(p[1]);
}
END_TEST

START_TEST(closed_pipe_counts_drops)
{
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    close(p[0]);
    signal(SIGPIPE, SIG_IGN);
    lb_log_setup("lb-test", p[1], LB_LOG_INFO);
    uint64_t before = lb_log_dropped();
    lb_log(LB_LOG_INFO, "lost", "x");
    struct lb_logbuf *b = lb_logbuf_new(4096);
    for (int i = 0; i < 3; i++) {
        lb_logbuf_begin(b, LB_LOG_INFO, "lost");
        lb_logbuf_end(b);
    }
    lb_logbuf_free(b);
    ck_assert_uint_eq(lb_log_dropped() - before, 4);
    close(p[1]);
}
END_TEST

#define THREAD_LINES 10000

struct writer {
    pthread_t tid;
    int id;
};

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    struct lb_logbuf *b = lb_logbuf_new(64 * 1024);
    ck_assert_ptr_nonnull(b);
    char pad[300];
    memset(pad, 'a' + w->id, sizeof(pad));
    for (int i = 0; i < THREAD_LINES; i++) {
        if (!lb_logbuf_begin(b, LB_LOG_INFO, "access"))
            ck_abort_msg("begin refused");
        lb_logbuf_int(b, "t", w->id);
        lb_logbuf_int(b, "i", i);
        lb_logbuf_str(b, "pad", pad, (size_t)(i * 7 % (int)sizeof(pad)));
        lb_logbuf_end(b);
        if (i % 1000 == 0)
            lb_log(LB_LOG_INFO, "tick", "thread %d at %d", w->id, i);
        if (i % 3000 == 0)
            lb_logbuf_flush(b);
    }
    lb_logbuf_free(b);
    return NULL;
}

struct reader {
    int fd;
    char *text;
    size_t len, cap;
};

/* Reads <fd> to end of file into a growing buffer. */
static void *reader_main(void *arg)
{
    struct reader *r = arg;
    for (;;) {
        if (r->cap - r->len < 65536) {
            r->cap = r->cap * 2 + 65536;
            r->text = realloc(r->text, r->cap);
            if (r->text == NULL)
                abort();
        }
        ssize_t n = read(r->fd, r->text + r->len, r->cap - r->len - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        r->len += (size_t)n;
    }
    return NULL;
}

/* A pipe, unlike a file opened with O_APPEND, interleaves writes larger than
 * PIPE_BUF, so only the logger's mutex keeps these lines whole. */
START_TEST(two_threads_never_interleave)
{
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    lb_log_setup("lb-test", p[1], LB_LOG_INFO);
    struct reader rd = {.fd = p[0]};
    pthread_t rtid;
    ck_assert_int_eq(pthread_create(&rtid, NULL, reader_main, &rd), 0);
    struct writer w[2] = {{.id = 0}, {.id = 1}};
    for (int k = 0; k < 2; k++)
        ck_assert_int_eq(pthread_create(&w[k].tid, NULL, writer_main, &w[k]), 0);
    for (int k = 0; k < 2; k++)
        ck_assert_int_eq(pthread_join(w[k].tid, NULL), 0);
    close(p[1]);
    ck_assert_int_eq(pthread_join(rtid, NULL), 0);
    close(p[0]);
    ck_assert_uint_eq(lb_log_dropped(), 0);

    size_t len = rd.len;
    char *text = rd.text;
    ck_assert_ptr_nonnull(text);
    text[len] = '\0';
    int next[2] = {0, 0}, ticks = 0;
    size_t lines = 0;
    struct jobj *o = malloc(sizeof(*o));
    const char *s = text, *end = text + len;
    char buf[400];
    while (s < end) {
        const char *nl = memchr(s, '\n', (size_t)(end - s));
        ck_assert_ptr_nonnull(nl);
        /* Check records every assertion: in loops, assert only what failed. */
        if (!json_line_parse(s, (size_t)(nl - s), o))
            ck_abort_msg("line %zu: %.*s", lines, (int)(nl - s), s);
        lines++;
        s = nl + 1;
        if (strcmp(jstr(o, "event", buf, sizeof(buf)), "tick") == 0) {
            ticks++;
            continue;
        }
        long long t = jint(o, "t"), i = jint(o, "i");
        if (t != 0 && t != 1)
            ck_abort_msg("line %zu: t %lld", lines, t);
        if (i != next[t]) /* each thread's lines whole and in order */
            ck_abort_msg("line %zu: thread %lld line %lld, want %d", lines, t, i, next[t]);
        next[t]++;
        size_t padlen = strlen(jstr(o, "pad", buf, sizeof(buf)));
        bool pad_ok = padlen == (size_t)(i * 7 % 300);
        for (size_t k = 0; k < padlen; k++)
            pad_ok = pad_ok && buf[k] == 'a' + t;
        if (!pad_ok)
            ck_abort_msg("line %zu: bad pad", lines);
    }
    ck_assert_int_eq(next[0], THREAD_LINES);
    ck_assert_int_eq(next[1], THREAD_LINES);
    ck_assert_int_eq(ticks, 2 * THREAD_LINES / 1000);
    ck_assert_uint_eq(lines, 2 * THREAD_LINES + 20);
    free(o);
    free(text);
}
END_TEST

static Suite *log_suite(void)
{
    Suite *s = suite_create("lb_log");
    TCase *tc = tcase_create("escape");
    tcase_add_loop_test(tc, escape_table, 0, (int)(sizeof(esc_cases) / sizeof(esc_cases[0])));
    tcase_add_test(tc, escape_every_control_byte);
    tcase_add_test(tc, escape_truncation_keeps_units_whole);
    suite_add_tcase(s, tc);

    tc = tcase_create("levels");
    tcase_add_checked_fixture(tc, capture_setup, capture_teardown);
    tcase_add_test(tc, level_parse_and_name);
    tcase_add_test(tc, level_filtering);
    suite_add_tcase(s, tc);

    tc = tcase_create("logbuf");
    tcase_add_checked_fixture(tc, capture_setup, capture_teardown);
    tcase_add_test(tc, logbuf_exact_line);
    tcase_add_test(tc, logbuf_null_event_and_proc);
    tcase_add_test(tc, logbuf_open_line_not_flushed);
    tcase_add_test(tc, logbuf_end_flushes_past_half);
    tcase_add_test(tc, logbuf_long_value_cut);
    tcase_add_test(tc, logbuf_long_value_cut_small_buffer);
    tcase_add_test(tc, logbuf_long_utf8_value_cut);
    tcase_add_test(tc, logbuf_long_escaped_value_cut);
    tcase_add_test(tc, logbuf_many_fields_never_overflow);
    suite_add_tcase(s, tc);

    tc = tcase_create("lb_log");
    tcase_add_checked_fixture(tc, capture_setup, capture_teardown);
    tcase_add_test(tc, log_line);
    tcase_add_test(tc, log_long_message_cut);
    suite_add_tcase(s, tc);

    tc = tcase_create("writes");
    tcase_add_checked_fixture(tc, capture_setup, capture_teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, nonblocking_full_pipe_drops_and_counts);
    tcase_add_test(tc, closed_pipe_counts_drops);
    tcase_add_test(tc, two_threads_never_interleave);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(log_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
