/* proto/lb_log.h: structured JSON logs, one object per line, shared by both daemons.
 *
 * Every line is one JSON object ending in "\n":
 *   {"ts":"2026-11-28T03:12:33.123Z","level":"info","proc":"lb-dataplane","event":"...",...}
 * ts is UTC ISO-8601 with milliseconds. Lines from different threads never
 * interleave: every write(2) to the log fd happens under one process-wide mutex.
 *
 * Limits: a key is cut to LB_LOG_KEY_MAX and a value (its escaped form, quotes not
 * counted) to LB_LOG_VALUE_MAX bytes; a cut string ends in "..." and is still
 * valid JSON and valid UTF-8. A line never grows a buffer: a field that does not
 * fit in what is left of a lb_logbuf (after flushing its complete lines) is cut,
 * or left out when not even its key and "..." fit. */
#ifndef LB_LOG_H
#define LB_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LB_LOG_VALUE_MAX  8192 /* bytes of one escaped value in a line, "..." included */
#define LB_LOG_KEY_MAX    128  /* bytes of one escaped key */
#define LB_LOG_PROC_MAX   64   /* bytes of <proc> kept by lb_log_setup() */
#define LB_LOGBUF_MIN_CAP 4096

enum lb_log_level {
    LB_LOG_DEBUG = 0,
    LB_LOG_INFO,
    LB_LOG_WARN,
    LB_LOG_ERROR,
};

/* Process-wide setup, called by main before threads start (not thread-safe
 * against logging threads): <proc> (NULL means "lb"; its escaped form cut to
 * LB_LOG_PROC_MAX bytes) is put in every line as "proc"; lines go to <fd> (normally 1), which
 * the logger does not own. Until it is called: proc "lb", fd 1, level info.
 * The process should ignore SIGPIPE so that a closed log pipe is an error
 * (lines dropped and counted), not a signal. */
void lb_log_setup(const char *proc, int fd, enum lb_log_level level);

/* Sets the lowest level written. Any thread; atomic. */
void lb_log_set_level(enum lb_log_level level);

/* True when lines of <level> are written. Any thread; one relaxed atomic load. */
bool lb_log_enabled(enum lb_log_level level);

/* Parses "debug" | "info" | "warn" | "error" (case-insensitive; "warning" is
 * accepted for "warn") into <out>. Returns 0, or -1 (and leaves <out> alone) on
 * anything else, NULL included. */
int lb_log_level_parse(const char *s, enum lb_log_level *out);

/* "debug", "info", "warn" or "error"; "unknown" for a value out of range. */
const char *lb_log_level_name(enum lb_log_level level);

/* Writes one line at once (unbuffered), from any thread, when <level> is enabled:
 *   {"ts":"...","level":"info","proc":"...","event":"<event>","msg":"<formatted>"}
 * <event> NULL is written as null. Never allocates; uses about 26 KiB of stack.
 * A failed write drops the line and counts it in lb_log_dropped(). */
void lb_log(enum lb_log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A per-thread buffered line builder for frequent lines (access log). Owned by
 * one thread; not thread-safe itself. Its size is fixed at creation. */
struct lb_logbuf;

/* Creates a buffer of <cap> bytes (raised to LB_LOGBUF_MIN_CAP when smaller;
 * 64 KiB suits an access log). Returns NULL on no memory. Caller owns it;
 * release with lb_logbuf_free(). */
struct lb_logbuf *lb_logbuf_new(size_t cap);

/* Flushes the complete lines, drops a line left open, frees. NULL is a no-op. */
void lb_logbuf_free(struct lb_logbuf *b);

/* Starts a line: {"ts":"...","level":"...","proc":"...","event":"<event>"
 * (ts from CLOCK_REALTIME, its date part cached per buffer so that lines within
 * the same second cost no gmtime call). Returns false, and the following calls
 * until lb_logbuf_end() are no-ops, when <level> is filtered out. A line still
 * open is dropped first. <event> NULL is written as null. */
bool lb_logbuf_begin(struct lb_logbuf *b, enum lb_log_level level, const char *event);

/* Each adds ,"<key>":<value> to the open line (no-op when none is open).
 * <key> is escaped too. */
void lb_logbuf_str(struct lb_logbuf *b, const char *key, const char *s, size_t len); /* escaped */
void lb_logbuf_cstr(struct lb_logbuf *b, const char *key, const char *s); /* NULL -> null */
void lb_logbuf_int(struct lb_logbuf *b, const char *key, int64_t v);
void lb_logbuf_uint(struct lb_logbuf *b, const char *key, uint64_t v);
/* Fixed notation with <decimals> (clamped to 0..9) digits; exponent notation
 * when that would exceed 64 characters; NaN and infinities as null. */
void lb_logbuf_double(struct lb_logbuf *b, const char *key, double v, int decimals);
void lb_logbuf_bool(struct lb_logbuf *b, const char *key, bool v);

/* Ends the open line ("}\n"; room for it is always kept). Flushes when the
 * buffer is more than half full. No-op when no line is open. */
void lb_logbuf_end(struct lb_logbuf *b);

/* Writes all complete lines with one write(2) under the process-wide mutex,
 * looping on partial writes and EINTR. On EAGAIN it waits for the fd (1 ms at a
 * time) a bounded number of times, then drops the rest; on other errors it drops
 * the rest at once. Dropped lines are counted in lb_log_dropped(); a line cut by
 * a drop is terminated with "\n" by the next successful write, so that the lines
 * after it stay whole. A line left open stays in the buffer. Callers flush from
 * a timer (every ~100 ms) too. */
void lb_logbuf_flush(struct lb_logbuf *b);

/* Lines dropped so far, process-wide. Any thread. */
uint64_t lb_log_dropped(void);

/* JSON string escaping, used by the above and by the control plane:
 * writes the escaped form of <src>[0..len) (without quotes) into <dst> (capacity
 * <cap>, always NUL-terminated when cap > 0; <dst> may be NULL when cap is 0).
 * Escapes '"', '\\' and control bytes (\n \r \t \b \f, others \u00XX); DEL and
 * valid UTF-8 pass through unchanged; each byte of an invalid UTF-8 sequence
 * (stray continuation, overlong form, surrogate, above U+10FFFF, truncated)
 * becomes \ufffd, so the output is always valid JSON and valid UTF-8.
 * Returns the length the full escaped output needs, NUL not counted (like
 * snprintf), so the output was cut when the result is >= cap. A cut output
 * never ends inside an escape sequence or a UTF-8 character. Any thread. */
size_t lb_json_escape(char *dst, size_t cap, const char *src, size_t len);

#endif
