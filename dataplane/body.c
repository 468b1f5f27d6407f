/* dataplane/body.c: body framing while forwarding. */
#include "body.h"

#include <string.h>

#include "lb_assert.h"

void body_init(struct body *s, uint8_t framing, uint64_t length, bool dechunk)
{
    memset(s, 0, sizeof(*s));
    s->framing = framing;
    s->remaining = length;
    s->dechunk = dechunk;
    http1_chunked_init(&s->ch);
    s->done = framing == HTTP1_BODY_NONE || (framing == HTTP1_BODY_LENGTH && length == 0);
}

/* Judges the trailer field whose name, or its first <name_len> bytes, is
 * held right after the ready bytes. */
static void judge_field(struct body *s, const struct buf *b, size_t name_len)
{
    if (http1_trailer_is_allowed(b->data + b->start + s->ready, name_len)) {
        s->field = BODY_FIELD_KEEP;
        s->ready += s->held;
        s->held = 0;
    } else {
        s->field = BODY_FIELD_DROP;
    }
}

/* Chunked framing passed through: every decoded byte becomes ready but those
 * of refused trailer fields. Only the buffer's start can be cut, so a refused
 * field is held until the ready bytes before it are written, and nothing
 * after it is decoded meanwhile: held bytes stay few (a name is judged by its
 * first HTTP1_TRAILER_NAME_DECIDES bytes) or are cut at once. */
static int pass_chunked(struct body *s, struct buf *b)
{
    for (;;) {
        if (s->field == BODY_FIELD_DROP && s->held > 0) {
            if (s->ready > 0)
                return 0;
            b->start += s->held;
            s->held = 0;
        }
        uint32_t at = b->start + s->ready + s->held;
        if (s->ch.done || at >= b->end)
            return 0;
        const char *d;
        size_t dl;
        int n = http1_chunked_feed(&s->ch, b->data + at, b->end - at, &d, &dl);
        if (n <= 0)
            return n < 0 ? -1 : 0;
        uint8_t run = s->ch.run;
        if (run == HTTP1_RUN_NAME && s->last_run != HTTP1_RUN_NAME)
            s->field = BODY_FIELD_NAME;
        s->last_run = run;
        if (run == HTTP1_RUN_FIELD && s->field == BODY_FIELD_NAME)
            judge_field(s, b, s->held);
        if (run != HTTP1_RUN_NAME && run != HTTP1_RUN_FIELD) {
            s->ready += (uint32_t)n;
        } else if (s->field == BODY_FIELD_NAME) {
            s->held += (uint32_t)n;
            if (s->held >= HTTP1_TRAILER_NAME_DECIDES)
                judge_field(s, b, HTTP1_TRAILER_NAME_DECIDES);
        } else if (s->field == BODY_FIELD_DROP) {
            s->held += (uint32_t)n;
        } else {
            s->ready += (uint32_t)n;
        }
        LB_ASSERT(!s->ch.done || s->held == 0);
    }
}

int body_prepare(struct body *s, struct buf *b)
{
    if (s->done) {
        s->ready = 0;
        return 0;
    }
    uint32_t avail = buf_len(b);
    switch (s->framing) {
    case HTTP1_BODY_LENGTH:
        s->ready = avail < s->remaining ? avail : (uint32_t)s->remaining;
        return 0;
    case HTTP1_BODY_CLOSE:
        s->ready = avail;
        return 0;
    case HTTP1_BODY_CHUNKED:
        if (s->dechunk) {
            while (s->ready == 0 && !s->ch.done && b->start < b->end) {
                const char *d;
                size_t dl;
                int n = http1_chunked_feed(&s->ch, b->data + b->start, b->end - b->start, &d, &dl);
                if (n < 0)
                    return -1;
                if (n == 0)
                    break;
                if (dl > 0)
                    s->ready = (uint32_t)n;
                else
                    b->start += (uint32_t)n;
            }
        } else if (pass_chunked(s, b) < 0) {
            return -1;
        }
        if (s->ch.done && s->ready == 0)
            s->done = true;
        return 0;
    default:
        s->done = true;
        return 0;
    }
}

void body_consumed(struct body *s, struct buf *b, uint32_t n)
{
    b->start += n;
    s->ready -= n;
    if (s->framing == HTTP1_BODY_LENGTH) {
        s->remaining -= n;
        if (s->remaining == 0)
            s->done = true;
    } else if (s->framing == HTTP1_BODY_CHUNKED && s->ch.done && s->ready == 0) {
        s->done = true;
    }
}
