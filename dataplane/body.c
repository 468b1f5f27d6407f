/* dataplane/body.c: body framing while forwarding. */
#include "body.h"

#include <string.h>

void body_init(struct body *s, uint8_t framing, uint64_t length, bool dechunk)
{
    memset(s, 0, sizeof(*s));
    s->framing = framing;
    s->remaining = length;
    s->dechunk = dechunk;
    http1_chunked_init(&s->ch);
    s->done = framing == HTTP1_BODY_NONE || (framing == HTTP1_BODY_LENGTH && length == 0);
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
        } else {
            while (!s->ch.done && b->start + s->ready < b->end) {
                const char *d;
                size_t dl;
                uint32_t at = b->start + s->ready;
                int n = http1_chunked_feed(&s->ch, b->data + at, b->end - at, &d, &dl);
                if (n < 0)
                    return -1;
                if (n == 0)
                    break;
                s->ready += (uint32_t)n;
            }
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
