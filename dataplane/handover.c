/* dataplane/handover.c: SOCK_SEQPACKET keeps message boundaries, so every
 * message is one type byte and its payload, and a descriptor travels with
 * exactly the message that names it. */
#include "handover.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "lb_err.h"

#define CHUNK 16384

enum {
    MSG_LISTENER = 'L', /* key; one descriptor attached */
    MSG_TICKETS = 'T',  /* the ticket keys, whole */
    MSG_SNAPSHOT = 'S', /* the next chunk of the snapshot */
    MSG_RUNTIME = 'U',  /* the next chunk of the runtime state */
    MSG_END = 'E',      /* u64 descriptors, u64 snapshot bytes[, u64 runtime bytes] */
    MSG_READY = 'R',    /* new -> old: accepting */
    MSG_FAILED = 'F',   /* new -> old: gave up; the reason follows */
};

void handover_state_deinit(struct handover_state *st)
{
    for (size_t i = 0; i < st->n_fds; i++) {
        if (st->fds[i].fd >= 0)
            close(st->fds[i].fd);
    }
    free(st->fds);
    free(st->snapshot);
    free(st->runtime);
    if (st->tickets != NULL)
        OPENSSL_cleanse(st->tickets, st->tickets_len);
    free(st->tickets);
    memset(st, 0, sizeof(*st));
}

/* Takes <fd> into <st>; closes it when there is no room. */
static int state_take_fd(struct handover_state *st, int fd, const char *key, size_t key_len,
                         struct lb_err *err)
{
    struct handover_fd *a = realloc(st->fds, (st->n_fds + 1) * sizeof(*a));
    if (a == NULL) {
        close(fd);
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory for the hand-over");
    }
    st->fds = a;
    struct handover_fd *f = &a[st->n_fds++];
    f->fd = fd;
    if (key_len >= sizeof(f->key))
        key_len = sizeof(f->key) - 1;
    memcpy(f->key, key, key_len);
    f->key[key_len] = '\0';
    return LB_OK;
}

int handover_state_add_fd(struct handover_state *st, int fd, const char *key, struct lb_err *err)
{
    int d = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (d == -1)
        return lb_err_set(err, LB_ESYS, errno, "dup of the listener %s", key);
    return state_take_fd(st, d, key, strlen(key), err);
}

/* ---- sockets ---------------------------------------------------------------------- */

static int path_addr(const char *path, struct sockaddr_un *sa, struct lb_err *err)
{
    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sa->sun_path))
        return lb_err_set(err, LB_EINVAL, 0, "hand-over socket path too long: %s", path);
    memcpy(sa->sun_path, path, strlen(path) + 1);
    return LB_OK;
}

int handover_listen(const char *path, int *fd, struct lb_err *err)
{
    *fd = -1;
    struct sockaddr_un sa, tmp;
    char tmp_path[sizeof(sa.sun_path) + 16];
    int rc = path_addr(path, &sa, err);
    if (rc != LB_OK)
        return rc;
    snprintf(tmp_path, sizeof(tmp_path), "%s.%ld", path, (long)getpid());
    rc = path_addr(tmp_path, &tmp, err);
    if (rc != LB_OK)
        return rc;
    int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s == -1)
        return lb_err_set(err, LB_ESYS, errno, "hand-over socket");
    unlink(tmp_path); /* ours, from a process of the same pid that died */
    /* the mode is 0600 before the socket gets its public name */
    if (bind(s, (struct sockaddr *)&tmp, sizeof(tmp)) == -1 || chmod(tmp_path, 0600) == -1 ||
        listen(s, 4) == -1 || rename(tmp_path, path) == -1) {
        int e = errno;
        close(s);
        unlink(tmp_path);
        return lb_err_set(err, LB_ESYS, e, "hand-over socket %s", path);
    }
    *fd = s;
    return LB_OK;
}

static void set_timeouts(int s, unsigned timeout_ms)
{
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

int handover_connect(const char *path, unsigned timeout_ms, int *fd, struct lb_err *err)
{
    *fd = -1;
    struct sockaddr_un sa;
    int rc = path_addr(path, &sa, err);
    if (rc != LB_OK)
        return rc;
    int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (s == -1)
        return lb_err_set(err, LB_ESYS, errno, "hand-over socket");
    set_timeouts(s, timeout_ms);
    if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) == -1) {
        int e = errno;
        close(s);
        return lb_err_set(err, LB_ESYS, e, "cannot reach the running data plane at %s", path);
    }
    *fd = s;
    return LB_OK;
}

/* ---- messages ---------------------------------------------------------------------- */

static int send_msg(int sock, uint8_t type, const void *data, size_t len, int fd,
                    struct lb_err *err)
{
    struct iovec iov[2] = {{.iov_base = &type, .iov_len = 1},
                           {.iov_base = (void *)data, .iov_len = len}};
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int))];
    } ctl;
    struct msghdr mh = {.msg_iov = iov, .msg_iovlen = len ? 2 : 1};
    if (fd >= 0) {
        memset(&ctl, 0, sizeof(ctl));
        mh.msg_control = ctl.buf;
        mh.msg_controllen = sizeof(ctl.buf);
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof(int));
    }
    ssize_t n;
    do
        n = sendmsg(sock, &mh, MSG_NOSIGNAL);
    while (n == -1 && errno == EINTR);
    if (n == -1)
        return lb_err_set(err, LB_ESYS, errno, "hand-over send");
    return LB_OK;
}

int handover_send(int sock, const struct handover_state *st, unsigned timeout_ms,
                  struct lb_err *err)
{
    set_timeouts(sock, timeout_ms);
    int rc = LB_OK;
    for (size_t i = 0; i < st->n_fds && rc == LB_OK; i++)
        rc = send_msg(sock, MSG_LISTENER, st->fds[i].key, strlen(st->fds[i].key), st->fds[i].fd,
                      err);
    if (rc == LB_OK && st->tickets_len > 0)
        rc = send_msg(sock, MSG_TICKETS, st->tickets, st->tickets_len, -1, err);
    for (size_t off = 0; off < st->snapshot_len && rc == LB_OK; off += CHUNK) {
        size_t n = st->snapshot_len - off < CHUNK ? st->snapshot_len - off : CHUNK;
        rc = send_msg(sock, MSG_SNAPSHOT, st->snapshot + off, n, -1, err);
    }
    for (size_t off = 0; off < st->runtime_len && rc == LB_OK; off += CHUNK) {
        size_t n = st->runtime_len - off < CHUNK ? st->runtime_len - off : CHUNK;
        rc = send_msg(sock, MSG_RUNTIME, st->runtime + off, n, -1, err);
    }
    uint64_t counts[3] = {st->n_fds, st->snapshot_len, st->runtime_len};
    if (rc == LB_OK)
        rc = send_msg(sock, MSG_END, counts, sizeof(counts), -1, err);
    return rc;
}

/* One message into buf[0..*len); a descriptor that came with it in *fd
 * (else -1). */
static int recv_msg(int sock, uint8_t *buf, size_t cap, size_t *len, int *fd, int flags,
                    struct lb_err *err)
{
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(4 * sizeof(int))];
    } ctl;
    struct iovec iov = {.iov_base = buf, .iov_len = cap};
    struct msghdr mh = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof(ctl)};
    *fd = -1;
    ssize_t n;
    do
        n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC | flags);
    while (n == -1 && errno == EINTR);
    if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK) && (flags & MSG_DONTWAIT))
        return LB_ENOTFOUND;
    if (n == -1)
        return lb_err_set(err, LB_ESYS, errno, "hand-over receive");
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c != NULL; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t nfd = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < nfd; i++) {
            int d;
            memcpy(&d, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
            if (*fd == -1)
                *fd = d;
            else
                close(d); /* one per message; more is a broken peer */
        }
    }
    if (n == 0) {
        if (*fd >= 0)
            close(*fd);
        return lb_err_set(err, LB_ESYS, 0, "the peer closed the hand-over");
    }
    if ((mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0) {
        if (*fd >= 0)
            close(*fd);
        return lb_err_set(err, LB_EPROTO, 0, "hand-over message too long");
    }
    *len = (size_t)n;
    return LB_OK;
}

/* Appends <n> bytes at <p> to the growing array *<data> (*<len> used of
 * *<cap>), at most HANDOVER_MAX_BYTES in all. */
static int append_chunk(uint8_t **data, size_t *len, size_t *cap, const uint8_t *p, size_t n,
                        const char *what, struct lb_err *err)
{
    if (*len + n > HANDOVER_MAX_BYTES)
        return lb_err_set(err, LB_EPROTO, 0, "hand-over: %s too large", what);
    if (*len + n > *cap) {
        size_t c = *cap ? *cap * 2 : 4 * CHUNK;
        while (c < *len + n)
            c *= 2;
        uint8_t *q = realloc(*data, c);
        if (q == NULL)
            return lb_err_set(err, LB_ENOMEM, 0, "out of memory for the hand-over");
        *data = q;
        *cap = c;
    }
    memcpy(*data + *len, p, n);
    *len += n;
    return LB_OK;
}

int handover_recv(int sock, struct handover_state *st, struct lb_err *err)
{
    memset(st, 0, sizeof(*st));
    uint8_t *buf = malloc(CHUNK + 1);
    if (buf == NULL)
        return lb_err_set(err, LB_ENOMEM, 0, "out of memory for the hand-over");
    size_t snap_cap = 0, rt_cap = 0;
    int rc = LB_OK;
    for (;;) {
        size_t n = 0;
        int fd = -1;
        rc = recv_msg(sock, buf, CHUNK + 1, &n, &fd, 0, err);
        if (rc != LB_OK)
            break;
        uint8_t type = buf[0];
        if ((type == MSG_LISTENER) != (fd >= 0)) {
            if (fd >= 0)
                close(fd);
            rc = lb_err_set(err, LB_EPROTO, 0, "hand-over message '%c' with%s a descriptor",
                            type >= 32 && type < 127 ? type : '?', fd >= 0 ? "" : "out");
            break;
        }
        if (type == MSG_LISTENER) {
            if (st->n_fds >= HANDOVER_MAX_FDS || n < 2) {
                close(fd);
                rc = lb_err_set(err, LB_EPROTO, 0, "hand-over: bad listener message");
                break;
            }
            rc = state_take_fd(st, fd, (const char *)buf + 1, n - 1, err);
        } else if (type == MSG_TICKETS) {
            if (st->tickets != NULL) {
                rc = lb_err_set(err, LB_EPROTO, 0, "hand-over: ticket keys sent twice");
                break;
            }
            st->tickets = malloc(n - 1 ? n - 1 : 1);
            if (st->tickets == NULL) {
                rc = lb_err_set(err, LB_ENOMEM, 0, "out of memory for the hand-over");
                break;
            }
            memcpy(st->tickets, buf + 1, n - 1);
            st->tickets_len = n - 1;
        } else if (type == MSG_SNAPSHOT) {
            rc = append_chunk(&st->snapshot, &st->snapshot_len, &snap_cap, buf + 1, n - 1,
                              "snapshot", err);
        } else if (type == MSG_RUNTIME) {
            rc = append_chunk(&st->runtime, &st->runtime_len, &rt_cap, buf + 1, n - 1,
                              "runtime state", err);
        } else if (type == MSG_END) {
            uint64_t counts[3] = {0, 0, 0};
            if (n != 1 + 2 * sizeof(uint64_t) && n != 1 + sizeof(counts)) {
                rc = lb_err_set(err, LB_EPROTO, 0, "hand-over: bad end message");
                break;
            }
            memcpy(counts, buf + 1, n - 1);
            if (counts[0] != st->n_fds || counts[1] != st->snapshot_len ||
                counts[2] != st->runtime_len)
                rc = lb_err_set(err, LB_EPROTO, 0,
                                "hand-over: got %zu listeners, %zu snapshot and %zu runtime "
                                "bytes, the peer sent %llu, %llu and %llu",
                                st->n_fds, st->snapshot_len, st->runtime_len,
                                (unsigned long long)counts[0], (unsigned long long)counts[1],
                                (unsigned long long)counts[2]);
            break;
        } else {
            rc = lb_err_set(err, LB_EPROTO, 0, "hand-over: unknown message type %u", type);
            break;
        }
        if (rc != LB_OK)
            break;
    }
    OPENSSL_cleanse(buf, CHUNK + 1); /* may have held the ticket keys */
    free(buf);
    return rc;
}

int handover_answer(int sock, const char *reason, struct lb_err *err)
{
    if (reason == NULL)
        return send_msg(sock, MSG_READY, NULL, 0, -1, err);
    size_t len = strlen(reason);
    return send_msg(sock, MSG_FAILED, reason, len < 512 ? len : 512, -1, err);
}

int handover_read_answer(int sock, struct lb_err *err)
{
    uint8_t buf[600];
    size_t n = 0;
    int fd = -1;
    int rc = recv_msg(sock, buf, sizeof(buf) - 1, &n, &fd, MSG_DONTWAIT, err);
    if (fd >= 0)
        close(fd);
    if (rc == LB_ESYS)
        return lb_err_set(err, LB_ESYS, err ? err->sys_errno : 0,
                          "the new process went away before it was ready");
    if (rc != LB_OK)
        return rc;
    if (buf[0] == MSG_READY && n == 1)
        return LB_OK;
    if (buf[0] == MSG_FAILED) {
        buf[n] = '\0';
        return lb_err_set(err, LB_EPROTO, 0, "failed: %s", (const char *)buf + 1);
    }
    return lb_err_set(err, LB_EPROTO, 0, "hand-over: unexpected answer type %u", buf[0]);
}
