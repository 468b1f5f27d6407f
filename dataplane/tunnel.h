/* dataplane/tunnel.h: a byte tunnel between two endpoints, what an exchange
 * becomes after a backend answered "101 Switching Protocols" to an Upgrade
 * request (WebSocket). Bytes read from one side are written to the other,
 * each direction through the reading side's input buffer, with
 * back-pressure (a side is read only while its buffer has room, so a slow
 * reader stops the writer's socket). An end of stream on one side is passed
 * on as a half-close (shutdown of the other side's sending direction) once
 * its bytes are out; the tunnel is over when both directions are, or at
 * the first error. Worker thread only. */
#ifndef LB_TUNNEL_H
#define LB_TUNNEL_H

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

#include "buf.h"
#include "endpoint.h"

enum tunnel_state {
    TUNNEL_OPEN = 0,
    TUNNEL_DONE,  /* both directions ended with an end of stream */
    TUNNEL_ERROR, /* a read or write failed: close both sides */
};

struct tunnel {
    struct endpoint *a; /* the client side */
    struct endpoint *b; /* the backend side */
    bool a_shut;        /* a's sending direction is closed (b ended) */
    bool b_shut;        /* b's sending direction is closed (a ended) */
    bool progress;      /* the last pump moved something */
    uint64_t a_to_b;    /* bytes the client sent through */
    uint64_t b_to_a;    /* bytes the backend sent through */
    const char *error;  /* why it failed (TUNNEL_ERROR), static text */
};

/* Starts a tunnel between <a> and <b>, whose buffers may already hold bytes
 * for the other side (read with the Upgrade request and the 101). */
void tunnel_init(struct tunnel *t, struct endpoint *a, struct endpoint *b);

/* Moves what can move now, both ways. */
enum tunnel_state tunnel_pump(struct tunnel *t, struct buf_pool *pool);

/* Makes both watchers wait for what the tunnel needs next. */
void tunnel_arm(struct ev_loop *loop, struct tunnel *t);

#endif
