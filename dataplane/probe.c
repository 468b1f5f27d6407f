/* dataplane/probe.c: TCP probes of ejected backends (worker 0). */
#include "probe.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dp.h"
#include "lb_log.h"

/* A TCP connect to an ejected backend whose probe is due. */
struct probe {
    struct worker *w;
    struct bshared *sh; /* a registry reference */
    ev_io io;
    ev_timer timer;
    int fd;
    char host_port[72];
    struct probe *next;
};

static void probe_end(struct probe *p, bool ok)
{
    struct worker *w = p->w;
    const struct snap *s = w->view->snap;
    struct eject_config ec = s->eject;
    ec.controlled = w->dp->controlled;
    uint64_t now_ms = (uint64_t)(ev_now(w->loop) * 1000.0);
    if (eject_probe_done(&p->sh->eject, &ec, ok, now_ms)) {
        bshared_registry_note_ejected(w->dp->backends, -1);
        lb_log(LB_LOG_INFO, "backend_returned",
               "backend %s (%s): a probe connected; back in "
               "rotation",
               p->sh->id, p->host_port);
    } else if (!ok && lb_log_enabled(LB_LOG_DEBUG)) {
        lb_log(LB_LOG_DEBUG, "backend_probe_failed", "backend %s (%s): next probe in %u ms",
               p->sh->id, p->host_port, eject_backoff_ms(&p->sh->eject));
    }
    ev_io_stop(w->loop, &p->io);
    ev_timer_stop(w->loop, &p->timer);
    if (p->fd >= 0)
        close(p->fd);
    struct probe **pp = &w->probes;
    while (*pp != p)
        pp = &(*pp)->next;
    *pp = p->next;
    bshared_registry_release(w->dp->backends, p->sh);
    free(p);
}

static void probe_on_io(struct ev_loop *loop, ev_io *io, int revents)
{
    struct probe *p = io->data;
    int soerr = 0;
    socklen_t len = sizeof(soerr);
    if (getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) == -1)
        soerr = errno;
    probe_end(p, soerr == 0);
}

static void probe_on_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    probe_end(t->data, false);
}

static void probe_start(struct worker *w, struct backend_rt *be)
{
    struct probe *p = calloc(1, sizeof(*p));
    struct bshared *sh = bshared_registry_find(w->dp->backends, be->id);
    if (p == NULL || sh == NULL) {
        free(p);
        bshared_registry_release(w->dp->backends, sh);
        return;
    }
    p->w = w;
    p->sh = sh;
    p->fd = -1;
    snprintf(p->host_port, sizeof(p->host_port), "%s", be->host_port);
    p->next = w->probes;
    w->probes = p;
    ev_io_init(&p->io, probe_on_io, 0, EV_WRITE);
    p->io.data = p;
    ev_timer_init(&p->timer, probe_on_timeout, w->view->snap->timeouts.upstream_connect / 1000.0,
                  0.);
    p->timer.data = p;
    int fd = socket(be->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd == -1) {
        probe_end(p, false);
        return;
    }
    p->fd = fd;
    if (connect(fd, (const struct sockaddr *)&be->addr, be->addrlen) == 0) {
        probe_end(p, true);
        return;
    }
    if (errno != EINPROGRESS) {
        probe_end(p, false);
        return;
    }
    ev_io_set(&p->io, fd, EV_WRITE);
    ev_io_start(w->loop, &p->io);
    ev_timer_start(w->loop, &p->timer);
}

/* Worker 0, each tick: probes the ejected backends whose probe is due. */
void probes_run(struct worker *w)
{
    if (w->id != 0 || w->view == NULL || w->draining ||
        bshared_registry_ejected(w->dp->backends) == 0)
        return;
    uint64_t now_ms = (uint64_t)(ev_now(w->loop) * 1000.0);
    const struct wview *v = w->view;
    for (uint32_t k = 0; k < v->bal.n; k++) {
        struct backend_rt *be = v->be[v->cand[k]];
        if (be->sh != NULL && eject_probe_claim(&be->sh->eject, now_ms))
            probe_start(w, be);
    }
}

void probes_free(struct worker *w)
{
    while (w->probes != NULL) {
        struct probe *p = w->probes;
        w->probes = p->next;
        ev_io_stop(w->loop, &p->io);
        ev_timer_stop(w->loop, &p->timer);
        if (p->fd >= 0)
            close(p->fd);
        bshared_registry_release(w->dp->backends, p->sh);
        free(p);
    }
}
