/* http_loop.c: the front door's thread: accept, wait on every connection with epoll, deadlines. */
#define _GNU_SOURCE /* accept4 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ctxd/log.h"
#include "ctxd/metrics.h"
#include "ctxd/util.h"
#include "http_loop.h"
#include "http_tls.h"

#define SCAN_EVERY_MS 50 /* deadline checks */

http_loop http_front = {.epfd = -1};

static struct {
    int lfd, evfd;
    pthread_t thread;
    int running;
    atomic_int stop, stop_accepting;
    pthread_mutex_t back_mu; /* workers hand connections back here */
    int exited;              /* the loop is gone: under back_mu */
    http_conn *back;
} L = {.lfd = -1, .evfd = -1, .back_mu = PTHREAD_MUTEX_INITIALIZER};

/* Tags for the two fds that are not connections. */
static int listener_tag, wake_tag;

static void wake_loop(void) {
    uint64_t one = 1;
    if (write(L.evfd, &one, sizeof(one)) < 0) { /* the counter is full: a wake is pending */
    }
}

/* Over CTXD_MAX_CONNECTIONS: a 503 if the socket takes it at once, and
 * close. On HTTPS just close: a TLS client cannot read a plain answer, and a
 * handshake is what this connection must not cost. */
static void turn_away(int fd) {
    if (http_tls_on()) {
        close(fd);
        return;
    }
    buf b;
    buf_init(&b);
    http_conn_refusal(&b, CTXD_E_TOO_MANY_CONNECTIONS,
                      "This ctxd process holds CTXD_MAX_CONNECTIONS connections; retry shortly",
                      NULL);
    if (!b.err && send(fd, b.data, b.len, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
    } /* best effort: the connection is closed either way */
    buf_free(&b);
    close(fd);
}

static void accept_all(void) {
    for (;;) {
        struct sockaddr_in sa;
        socklen_t sl = sizeof(sa);
        int fd = accept4(L.lfd, (struct sockaddr *)&sa, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                log_msg(LOG_WARN, "accept: %s (CTXD_MAX_CONNECTIONS or the fd limit?)",
                        strerror(errno));
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        char ip[INET_ADDRSTRLEN] = "?", peer[64];
        inet_ntop(AF_INET, &sa.sin_addr, ip, sizeof(ip));
        snprintf(peer, sizeof(peer), "%s:%u", ip, ntohs(sa.sin_port));
        if (http_conn_open(fd, peer)) turn_away(fd);
    }
}

/* Connections handed back by the workers. */
static void take_back(void) {
    uint64_t v;
    if (read(L.evfd, &v, sizeof(v)) < 0) {
    }
    pthread_mutex_lock(&L.back_mu);
    http_conn *c = L.back;
    L.back = NULL;
    pthread_mutex_unlock(&L.back_mu);
    while (c) {
        http_conn *next = c->qnext;
        c->qnext = NULL;
        http_conn_returned(c);
        c = next;
    }
}

static void check_deadlines(int64_t now) {
    for (http_conn *c = http_front.conns, *next; c; c = next) {
        next = c->next;
        if (c->deadline && now >= c->deadline) http_conn_expire(c);
    }
}

static void *loop_main(void *arg) {
    CTXD_UNUSED(arg);
    struct epoll_event evs[256];
    int64_t next_scan = 0;
    while (!atomic_load(&L.stop)) {
        int n = epoll_wait(http_front.epfd, evs, 256, SCAN_EVERY_MS);
        for (int i = 0; i < n; i++) {
            void *p = evs[i].data.ptr;
            if (p == &listener_tag)
                accept_all();
            else if (p == &wake_tag)
                take_back();
            else
                http_conn_event(p, evs[i].events);
        }
        if (atomic_load(&L.stop_accepting) && L.lfd >= 0) {
            epoll_ctl(http_front.epfd, EPOLL_CTL_DEL, L.lfd, NULL);
            close(L.lfd);
            L.lfd = -1;
        }
        int64_t now = util_mono_ms();
        if (now >= next_scan) {
            check_deadlines(now);
            next_scan = now + SCAN_EVERY_MS;
        }
    }
    /* Close what the loop holds; a connection a worker holds is closed by
     * that worker when it releases it (http_conn_release). */
    pthread_mutex_lock(&L.back_mu);
    L.exited = 1;
    for (http_conn *c = http_front.conns, *next; c; c = next) {
        next = c->next;
        if (!http_conn_with_worker(c)) http_conn_close(c);
    }
    for (http_conn *c = L.back, *next; c; c = next) { /* handed back, never taken */
        next = c->qnext;
        http_conn_close(c);
    }
    L.back = NULL;
    pthread_mutex_unlock(&L.back_mu);
    return NULL;
}

/* Bind ourselves for a precise error (in use, no permission, not an
 * address of this host). */
static int listen_socket(const ctxd_config *cfg, char *err, size_t errlen) {
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)cfg->listen_port);
    if (inet_pton(AF_INET, cfg->listen_host, &sa.sin_addr) != 1) {
        snprintf(err, errlen, "CTXD_LISTEN=%s:%d: '%s' is not an IPv4 address", cfg->listen_host,
                 cfg->listen_port, cfg->listen_host);
        return -1;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "cannot create a socket: %s", strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 && listen(fd, 4096) == 0) return fd;
    int e = errno;
    close(fd);
    if (e == EADDRINUSE)
        snprintf(err, errlen,
                 "cannot listen on %s:%d: address already in use by another "
                 "process (find it with: ss -ltnp 'sport = :%d'), or set "
                 "CTXD_LISTEN to another port",
                 cfg->listen_host, cfg->listen_port, cfg->listen_port);
    else
        snprintf(err, errlen, "cannot listen on %s:%d: %s", cfg->listen_host, cfg->listen_port,
                 strerror(e));
    return -1;
}

int http_conn_start(const ctxd_config *cfg, http_conn_dispatch_fn dispatch, char *err,
                    size_t errlen) {
    http_front.cfg = cfg;
    http_front.dispatch = dispatch;
    if ((L.lfd = listen_socket(cfg, err, errlen)) < 0) return CTXD_ERR;
    http_front.epfd = epoll_create1(EPOLL_CLOEXEC);
    L.evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = &listener_tag};
    struct epoll_event wev = {.events = EPOLLIN, .data.ptr = &wake_tag};
    if (http_front.epfd < 0 || L.evfd < 0 ||
        epoll_ctl(http_front.epfd, EPOLL_CTL_ADD, L.lfd, &lev) ||
        epoll_ctl(http_front.epfd, EPOLL_CTL_ADD, L.evfd, &wev) ||
        pthread_create(&L.thread, NULL, loop_main, NULL)) {
        snprintf(err, errlen, "cannot start the HTTP server: %s", strerror(errno));
        return CTXD_ERR;
    }
    L.running = 1;
    return CTXD_OK;
}

void http_conn_stop_accepting(void) {
    atomic_store(&L.stop_accepting, 1);
    if (L.evfd >= 0) wake_loop();
}

void http_conn_stop(void) {
    if (!L.running) return;
    atomic_store(&L.stop, 1);
    wake_loop();
    pthread_join(L.thread, NULL);
    L.running = 0;
    if (L.lfd >= 0) close(L.lfd);
    close(http_front.epfd);
    close(L.evfd);
    L.lfd = http_front.epfd = L.evfd = -1;
}

void http_conn_release(http_conn *c) {
    metrics_inflight(-1); /* answered: what is left to write is the loop's */
    pthread_mutex_lock(&L.back_mu);
    if (L.exited) { /* the server stopped while this request ran */
        http_conn_close(c);
        pthread_mutex_unlock(&L.back_mu);
        return;
    }
    c->qnext = L.back;
    L.back = c;
    pthread_mutex_unlock(&L.back_mu);
    wake_loop();
}
