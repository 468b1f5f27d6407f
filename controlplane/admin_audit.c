/* controlplane/admin_audit.c: GET /api/v1/audit: the audit log, newest
 * first, filtered by time, who and action in the store's SQL. Times go out
 * as RFC 3339 (UTC) and as unix milliseconds; "since" takes either. */
#include "admin_int.h"

#include "cp.h"
#include "lb_err.h"
#include "lb_hex.h"
#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define AUDIT_LIMIT_DEFAULT 100
#define AUDIT_LIMIT_MAX     1000
#define AUDIT_VALUE_MAX     128 /* longest who, action or since, decoded */

/* Days from 1970-01-01 to <y>-<m>-<d> in the proleptic Gregorian calendar
 * (H. Hinnant's days_from_civil): no timegm(), no time zone. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static bool is_leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* <n> digits at *<p> as a number; advances *<p>. */
static bool digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        char c = (*p)[i];
        if (c < '0' || c > '9')
            return false;
        v = v * 10 + (c - '0');
    }
    *p += n;
    *out = v;
    return true;
}

/* RFC 3339 date-time: 2026-12-06T19:30:00Z, with optional fraction
 * (.5, .123456: milliseconds kept) and an offset (+01:00) instead of Z;
 * 't', 'z' and a space for 'T' are accepted as RFC 3339 allows. */
static bool parse_rfc3339(const char *s, int64_t *out_ms)
{
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    const char *p = s;
    int y, mo, d, h, mi, sec;
    if (!digits(&p, 4, &y) || *p++ != '-' || !digits(&p, 2, &mo) || *p++ != '-' ||
        !digits(&p, 2, &d) || (*p != 'T' && *p != 't' && *p != ' '))
        return false;
    p++;
    if (!digits(&p, 2, &h) || *p++ != ':' || !digits(&p, 2, &mi) || *p++ != ':' ||
        !digits(&p, 2, &sec))
        return false;
    if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] + (mo == 2 && is_leap(y)) || h > 23 ||
        mi > 59 || sec > 60)
        return false;
    int ms = 0;
    if (*p == '.') {
        p++;
        int nd = 0;
        for (; *p >= '0' && *p <= '9'; p++, nd++)
            if (nd < 3)
                ms = ms * 10 + (*p - '0');
        if (nd == 0)
            return false;
        for (; nd < 3; nd++)
            ms *= 10;
    }
    int off = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p++ == '-' ? -1 : 1, oh, om;
        if (!digits(&p, 2, &oh) || *p++ != ':' || !digits(&p, 2, &om) || oh > 23 || om > 59)
            return false;
        off = sign * (oh * 60 + om);
    } else {
        return false;
    }
    if (*p != '\0')
        return false;
    int64_t secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - off * 60;
    *out_ms = secs * 1000 + ms;
    return true;
}

/* "2026-12-06T19:30:00.123Z" into <buf> (at least 32 bytes). */
static const char *format_rfc3339(int64_t ms, char *buf, size_t size)
{
    time_t t = (time_t)(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL) {
        snprintf(buf, size, "%s", "");
        return buf;
    }
    int frac = (int)(ms - (int64_t)t * 1000);
    snprintf(buf, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
    return buf;
}

/* Percent-decodes [p, p+len) into <buf> ('+' stays '+': it is the sign of an
 * RFC 3339 offset). False when an escape is malformed, the result holds a
 * control character, is not UTF-8 (it may be echoed in a JSON error) or does
 * not fit. */
static bool decode(const char *p, size_t len, char *buf, size_t size)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '%') {
            int hi = i + 2 < len ? lb_hex_value(p[i + 1]) : -1;
            int lo = hi >= 0 ? lb_hex_value(p[i + 2]) : -1;
            if (lo < 0)
                return false;
            c = (unsigned char)(hi * 16 + lo);
            i += 2;
        }
        if (c < 0x20 || c == 0x7f || n + 1 >= size)
            return false;
        buf[n++] = (char)c;
    }
    buf[n] = '\0';
    json_t *utf8 = json_stringn(buf, n);
    json_decref(utf8);
    return utf8 != NULL;
}

/* A request's filter, with room for its strings. */
struct audit_query {
    struct store_audit_filter f;
    char who[AUDIT_VALUE_MAX + 1];
    char action[AUDIT_VALUE_MAX + 1];
};

/* Reads the query string into <q>; false when answered (400). */
static bool read_query(struct req *r, const char *query, size_t qlen, struct audit_query *q)
{
    static const char *const keys[] = {"since", "who", "action", "limit"};
    char val[4][AUDIT_VALUE_MAX + 1];
    bool seen[4] = {false};
    const char *p = query, *end = query + qlen;
    for (; p < end; p++) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(stop - p));
        size_t klen = eq ? (size_t)(eq - p) : (size_t)(stop - p);
        int k = -1;
        for (int i = 0; i < 4; i++)
            if (strlen(keys[i]) == klen && strncmp(p, keys[i], klen) == 0)
                k = i;
        if (k < 0 && klen > 0) {
            admin__respond_error(r, 400, "invalid_request",
                                 "unknown query parameter \"%.*s\"; use since, who, action, limit",
                                 (int)(klen < 40 ? klen : 40), p);
            return false;
        }
        if (k >= 0 && seen[k]) {
            admin__respond_error(r, 400, "invalid_request", "%s is given twice", keys[k]);
            return false;
        }
        if (k >= 0) {
            seen[k] = true;
            const char *v = eq ? eq + 1 : stop;
            if (!decode(v, (size_t)(stop - v), val[k], sizeof(val[k]))) {
                admin__respond_error(r, 400, "invalid_request",
                                     "%s must be at most %d bytes of UTF-8 text, percent-encoded",
                                     keys[k], AUDIT_VALUE_MAX);
                return false;
            }
        }
        p = stop;
    }
    *q = (struct audit_query){.f.limit = AUDIT_LIMIT_DEFAULT};
    if (seen[0]) {
        uint64_t ms;
        if (admin__parse_u64(val[0], strlen(val[0]), &ms) && ms <= (uint64_t)INT64_MAX) {
            q->f.since_unix_ms = (int64_t)ms;
        } else if (!parse_rfc3339(val[0], &q->f.since_unix_ms)) {
            admin__respond_error(r, 400, "invalid_request",
                                 "since must be an RFC 3339 time (2026-12-06T19:30:00Z) or unix "
                                 "milliseconds, not \"%.64s\"",
                                 val[0]);
            return false;
        }
    }
    if (seen[3]) {
        uint64_t limit;
        if (!admin__parse_u64(val[3], strlen(val[3]), &limit) || limit == 0 ||
            limit > AUDIT_LIMIT_MAX) {
            admin__respond_error(r, 400, "invalid_request", "limit must be a number in 1..%d",
                                 AUDIT_LIMIT_MAX);
            return false;
        }
        q->f.limit = (size_t)limit;
    }
    for (int k = 1; k <= 2; k++) {
        if (seen[k] && val[k][0] == '\0') {
            admin__respond_error(r, 400, "invalid_request", "%s must not be empty", keys[k]);
            return false;
        }
    }
    snprintf(q->who, sizeof(q->who), "%s", seen[1] ? val[1] : "");
    snprintf(q->action, sizeof(q->action), "%s", seen[2] ? val[2] : "");
    q->f.who = q->who;
    q->f.action = q->action;
    return true;
}

/* <s> as a JSON string; bytes that are not UTF-8 (a file name, an old
 * comment) become '?' rather than losing the entry. */
static json_t *text(const char *s)
{
    json_t *j = json_string(s);
    if (j != NULL)
        return j;
    char *copy = strdup(s);
    for (unsigned char *p = (unsigned char *)copy; p != NULL && *p; p++)
        if (*p >= 0x80)
            *p = '?';
    j = copy ? json_string(copy) : NULL;
    free(copy);
    return j;
}

static json_t *version_or_null(uint64_t v)
{
    return v ? json_integer((json_int_t)v) : json_null();
}

/* GET /api/v1/audit?since=&who=&action=&limit= -> {"entries": [{"id",
 * "time", "time_ms", "who", "action", "detail", "from_version",
 * "to_version"}], "more": bool} */
void admin__audit_list(struct req *r, const char *query, size_t qlen)
{
    struct audit_query q;
    if (!read_query(r, query, qlen, &q))
        return;
    size_t want = q.f.limit;
    q.f.limit = want + 1; /* one more says whether the answer is complete */
    struct store_audit *as = NULL;
    size_t n = 0;
    struct lb_err e = {0};
    if (cp_audit_query(r->c->a->cp, &q.f, &as, &n, &e) != LB_OK) {
        admin__respond_lb_err(r, &e);
        return;
    }
    json_t *arr = json_array();
    for (size_t i = 0; arr != NULL && i < n && i < want; i++) {
        const struct store_audit *a = &as[i];
        char when[40];
        json_array_append_new(
            arr,
            json_pack("{s:I,s:s,s:I,s:o,s:o,s:o,s:o,s:o}", "id", (json_int_t)a->id, "time",
                      format_rfc3339(a->time_unix_ms, when, sizeof(when)), "time_ms",
                      (json_int_t)a->time_unix_ms, "who", text(a->who), "action", text(a->action),
                      "detail", text(a->detail), "from_version", version_or_null(a->from_version),
                      "to_version", version_or_null(a->to_version)));
    }
    store_audit_free(as, n);
    admin__respond_json(r, 200, json_pack("{s:o,s:b}", "entries", arr, "more", n > want));
}
