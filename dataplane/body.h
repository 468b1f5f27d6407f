/* dataplane/body.h: how one message body moves from the buffer it is read
 * into to the other side: how many bytes at the buffer's start may be
 * forwarded now under the message's framing (a length, chunked, or until
 * close), with chunked framing passed through or reduced to its payload.
 * Passed through, its trailer section loses the fields that may not be
 * trailers (http1_trailer_is_allowed()); reduced, it is dropped whole.
 * Pure: no I/O, no allocation. */
#ifndef LB_BODY_H
#define LB_BODY_H

#include <stdbool.h>
#include <stdint.h>

#include "buf.h"
#include "http1.h"

/* struct body.field: the trailer field being decoded, passing chunked framing through */
enum body_field {
    BODY_FIELD_NONE = 0, /* none yet */
    BODY_FIELD_NAME,     /* its name is being read, and held */
    BODY_FIELD_KEEP,     /* forwarded */
    BODY_FIELD_DROP,     /* cut out */
};

struct body {
    uint8_t framing;  /* enum http1_framing */
    bool dechunk;     /* forward chunk payload only */
    bool done;        /* the whole body has been forwarded */
    uint8_t field;    /* enum body_field */
    uint8_t last_run; /* chunked: enum http1_chunk_run of the bytes decoded last */
    uint32_t ready;   /* bytes at the buffer's start that may be written */
    uint32_t held;    /* decoded bytes right after the ready ones that are not
                       * ready: a trailer field name not judged yet (fewer
                       * than HTTP1_TRAILER_NAME_DECIDES bytes), or a refused
                       * trailer field waiting for the ready bytes to leave */
    uint64_t remaining;
    struct http1_chunked ch;
};

/* A body framed by <framing> (<length> bytes for HTTP1_BODY_LENGTH); with
 * <dechunk>, chunked framing is stripped. A body with no bytes is done. */
void body_init(struct body *s, uint8_t framing, uint64_t length, bool dechunk);

/* Works out s->ready for the bytes in <b>; dechunking consumes the framing
 * bytes from <b> as it goes, and passing chunked framing through, so do
 * refused trailer fields once they reach the buffer's start. Returns 0, or -1
 * on malformed chunked framing. */
int body_prepare(struct body *s, struct buf *b);

/* <n> of the ready bytes were forwarded: they leave <b>. */
void body_consumed(struct body *s, struct buf *b, uint32_t n);

#endif
