/* dataplane/exchange.h: one proxied exchange, a request and its response,
 * whatever client protocol carries it.
 *
 * The exchange picks a backend (balancer, health, ejection, breaker, the
 * backend's connection limit and queue), sends the rewritten head and the
 * request body, reads and parses the response head, and retries on another
 * backend when the rule in retry.h allows; it counts the request and writes
 * its access-log line. What is written to the client, and in which
 * protocol, is its owner's: a session (h1session for HTTP/1) fills in the
 * request's client fields, hands the parsed head to exchange_start(), feeds
 * body bytes into *req_in, and takes the response through the callbacks
 * below and exchange_resp_body(). An HTTP/2 stream drives an exchange the
 * same way. Worker thread only. */
#ifndef LB_EXCHANGE_H
#define LB_EXCHANGE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "body.h"
#include "http1.h"
#include "limiter.h"
#include "retry.h"

struct buf;
struct connq_waiter;
struct exchange;
struct transport;
struct upstream;
struct worker;
struct wview;

/* What the owner's one timer waits for; TP_IDLE, TP_HEAD and TP_LINGER are
 * the session's own (the exchange knows their timeouts too). */
enum timer_phase {
    TP_NONE = 0,
    TP_IDLE,
    TP_HEAD,
    TP_CLIENT, /* waiting on the client: body bytes, or reading our output */
    TP_CONNECT,
    TP_RESPONSE,
    TP_UPSTREAM, /* waiting on the backend's body bytes */
    TP_LINGER,
    TP_BACKOFF, /* before a retry */
    TP_QUEUE,   /* waiting in a backend's queue for a connection slot */
    TP_TUNNEL,  /* an Upgrade tunnel with no byte either way */
};

#define TP_LINGER_SECONDS 2.0 /* reading what a client still sends after our close */

/* The owner's side, in its protocol. */
struct exchange_ops {
    /* Runs the owner: an upstream socket is ready, or a queue grant came. */
    void (*wake)(struct exchange *x);
    /* Queues the response head <m> for the client (<interim>: a 1xx to pass
     * on). x->resp is set up. False on no memory. */
    bool (*head)(struct exchange *x, const struct http1_msg *m, bool interim);
    /* Queues an answer of lb's own: <status> with header lines <extra>.
     * <close>: the client connection closes after it; else it may stay
     * open if the protocol and the request allow. Returns the bytes queued. */
    size_t (*answer)(struct exchange *x, unsigned status, const char *extra, size_t extra_len,
                     bool close);
    /* The response has begun and cannot be completed: the client's side ends
     * after what it was sent. */
    void (*abort)(struct exchange *x);
    /* Queues "100 Continue"; false when it cannot now. */
    bool (*send_continue)(struct exchange *x);
    /* The address the client reached (what a PROXY header to a backend
     * names as the destination); asked only for such backends. */
    const struct sockaddr_storage *(*local)(struct exchange *x);
};

struct exchange {
    const struct exchange_ops *ops;
    struct worker *w;
    /* set by the owner: where the request comes from */
    struct wview *view; /* the owner's view (the owner holds the reference) */
    uint32_t fe_index;
    uint16_t fe_stat;
    const char *peer_ip;
    const struct sockaddr_storage *peer;
    struct transport *tls_tr; /* the client's TLS transport (identity headers), or NULL */
    struct buf **req_in;      /* where the request body's bytes arrive */
    bool dechunk_resp;        /* the client cannot take chunked framing (HTTP/1.0) */
    bool h2;                  /* the client speaks HTTP/2 (the log line's protocol) */

    bool live;     /* from exchange_start() to its end: answered, finished or aborted */
    bool progress; /* it moved during the current run */
    bool rearm;    /* its wait started over: the owner restarts its timer */
    bool upgrade;  /* the request asks for a protocol switch lb forwards */
    bool tunnel;   /* the backend switched (101): <up> is the tunnel's backend
                    * side until exchange_tunnel_end() */

    /* the request */
    uint8_t meth;
    bool keepalive; /* the client asked to keep its connection */
    bool need_100;
    struct body req;
    struct buf *uphead; /* rewritten request head, kept for a replay */
    uint32_t uphead_sent;
    uint64_t body_sent;
    double t_start;
    uint64_t bytes_in;
    uint64_t bytes_out;
    char method[16];
    char path[256];
    char req_id[40];
    int reject;     /* enum metrics_reject of an answer of ours, or -1 */
    uint8_t rl_len; /* RateLimit header lines for the response, in <rl_hdr> */
    char rl_hdr[LIMITER_HEADERS_MAX];

    /* where it goes */
    struct upstream *up;
    int be_index;
    uint8_t tries;
    int32_t tried[RETRY_MAX_TRIES]; /* backend indexes of the attempts */
    uint8_t bdec;                   /* enum breaker_decision of the attempt in progress */
    bool bdec_valid;
    bool in_retry;             /* the attempt in progress holds a retry budget slot */
    bool retry_wait;           /* waiting the backoff before the next attempt */
    bool counted;              /* counted in the data plane's requests in flight */
    uint32_t budget_waited_ms; /* time waited for room in the retry budget */
    bool qwait;                /* waiting in the queue of backend <q_index> */
    int32_t q_index;
    struct connq_waiter *qw; /* while it waits (qwait) */
    double backoff_s;

    /* the response */
    uint16_t status;
    bool resp_head_done;
    struct body resp;
};

/* Names the request of head <m> (method and path, for the log line) when it
 * is refused before exchange_start(). */
void exchange_note_request(struct exchange *x, const struct http1_msg *m);

/* Once, when the owner is made: <x> zeroed, then bound to <ops> and <w>. */
void exchange_init(struct exchange *x, const struct exchange_ops *ops, struct worker *w);

/* Between requests: forgets the last one; the next starts counting at <now>. */
void exchange_reset(struct exchange *x, double now);

/* Starts proxying the request whose head <m> (<head_len> bytes, already
 * consumed by the owner) was parsed: rate limits, rewrite, backend choice.
 * It may end at once with an answer (x->live false). */
void exchange_start(struct exchange *x, const struct http1_msg *m, uint32_t head_len);

/* The backend side of a run, in two halves the owner calls around its own
 * reads of the client: send (connect done, 100 Continue, head and body
 * bytes out) and receive (response bytes in, the head parsed). Each may end
 * the exchange (x->live false). */
void exchange_send(struct exchange *x);
void exchange_receive(struct exchange *x);

/* Response body bytes ready for the client: fills <iov> and returns 1, 0 when
 * there are none now, -1 when the backend's framing broke (the exchange has
 * ended). exchange_resp_sent(): <n> of them went out. */
int exchange_resp_body(struct exchange *x, struct iovec *iov);
void exchange_resp_sent(struct exchange *x, uint32_t n);

/* After the owner wrote what it could: true when the response is complete
 * (the owner then sends the rest of its bytes and calls exchange_finish()).
 * A backend that closed mid body ends the exchange (x->live false). */
bool exchange_resp_complete(struct exchange *x);

/* Both directions are complete: logs it, and the upstream connection goes
 * back to its pool when it can. */
void exchange_finish(struct exchange *x);

/* Lets bytes read but not yet looked at decide what to wait for (a run cut
 * short by its round limit): a malformed body ends the exchange. */
void exchange_check_bodies(struct exchange *x);

/* What a proxying exchange waits for (<out_pending>: the owner has bytes
 * for the client), and how long a timer of <phase> (any phase) runs, in
 * seconds, under the exchange's snapshot. */
uint8_t exchange_wait(const struct exchange *x, bool out_pending);
double exchange_wait_seconds(const struct exchange *x, uint8_t phase);

/* Makes the upstream socket wait for what the exchange needs. */
void exchange_arm(struct exchange *x);

/* The timer of <phase> fired. Returns true when the owner must close the
 * connection now (the exchange is over). */
bool exchange_on_timeout(struct exchange *x, uint8_t phase, bool out_pending);

/* Answers <status> ourselves (a short text body) and closes after it;
 * usable before exchange_start() too (a malformed head). Once the response
 * has begun only a close is left (ops->abort). */
void exchange_fail(struct exchange *x, unsigned status, const char *why);

/* The client failed or went away: the attempt ends as abandoned. With
 * <status> non-zero, the request is logged with it (a body cut short: 499);
 * else the log line waits for exchange_close(). */
void exchange_abandon(struct exchange *x, unsigned status);

/* The tunnel the exchange became is over (<why>: NULL, or what ended it for
 * the log): its access-log line (101, the bytes the owner added to
 * bytes_in/bytes_out, the whole duration) is written and the backend
 * connection closed. */
void exchange_tunnel_end(struct exchange *x, const char *why);

/* The owner closes: a request in flight is logged (499 unless answered) and
 * leaves any queue and upstream; a tunnel ends. */
void exchange_close(struct exchange *x);

/* The queued exchange owning <cw> got its grant (connq_inbox_pop()): it
 * connects, or goes to another backend, then wakes its owner. */
void exchange_on_grant(struct connq_waiter *cw);

#endif
