/* http_conn.c: the front door: one epoll loop reads whole requests under time limits, workers answer. */
#define _GNU_SOURCE /* accept4 */
#include "http_conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
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
#include "http_int.h"

#define MAX_HEAD_BYTES 16384     /* request line and headers */
#define IN_CHUNK 16384           /* bytes read at a time */
#define IN_MAX (MAX_HEAD_BYTES + 4 * IN_CHUNK)
#define LINGER_MS 2000           /* reading what a closed client still sends */
#define SCAN_EVERY_MS 50         /* deadline checks */

enum { S_HEAD, S_BODY, S_WORKER, S_FLUSH, S_LINGER };

static struct {
    const ctxd_config *cfg;
    http_conn_dispatch_fn dispatch;
    int epfd, lfd, evfd;
    pthread_t thread;
    int running;
    atomic_int stop, stop_accepting;
    http_conn *conns; /* loop thread only */
    size_t n_conns;
    pthread_mutex_t back_mu; /* workers hand connections back here */
    http_conn *back;
} L = {.epfd = -1, .lfd = -1, .evfd = -1, .back_mu = PTHREAD_MUTEX_INITIALIZER};

/* Tags for the two fds that are not connections. */
static int listener_tag, wake_tag;

static void wake_loop(void) {
    uint64_t one = 1;
    if (write(L.evfd, &one, sizeof(one)) < 0) { /* the counter is full: a wake is pending */
    }
}

/* ---- Connections ---- */

static void arm(http_conn *c, uint32_t events) {
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(L.epfd, c->armed ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->fd, &ev) == 0)
        c->armed = (int)events;
}

static void disarm(http_conn *c) {
    if (c->armed) epoll_ctl(L.epfd, EPOLL_CTL_DEL, c->fd, NULL);
    c->armed = 0;
}

static void request_free(http_conn *c) {
    free(c->head_buf);
    free(c->body);
    c->head_buf = c->body = NULL;
    c->body_len = c->body_cap = 0;
    memset(&c->head, 0, sizeof(c->head));
    memset(&c->chunked, 0, sizeof(c->chunked));
}

static void conn_close(http_conn *c) {
    disarm(c);
    close(c->fd);
    if (c->prev)
        c->prev->next = c->next;
    else
        L.conns = c->next;
    if (c->next) c->next->prev = c->prev;
    L.n_conns--;
    request_free(c);
    free(c->in);
    free(c->out);
    free(c);
}

/* Close after the answer went out: stop sending, then read (and drop) what
 * the client still sends for a moment, so closing never resets the
 * connection under an answer the client has not read yet. */
static void linger(http_conn *c) {
    if (c->broken) {
        conn_close(c);
        return;
    }
    shutdown(c->fd, SHUT_WR);
    c->state = S_LINGER;
    c->deadline = util_mono_ms() + LINGER_MS;
    arm(c, EPOLLIN | EPOLLRDHUP);
}

static void wait_for_request(http_conn *c);

/* The answer is all written: next request, or close. */
static void answered(http_conn *c) {
    free(c->out);
    c->out = NULL;
    c->out_len = c->out_off = 0;
    if (!c->keep_alive)
        linger(c);
    else
        wait_for_request(c);
}

/* Write what is left of the answer without waiting; EPOLLOUT brings the rest. */
static void flush(http_conn *c) {
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n > 0) {
            c->out_off += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (c->state != S_FLUSH) {
                c->state = S_FLUSH;
                c->deadline = util_mono_ms() + L.cfg->write_timeout_ms;
            }
            arm(c, EPOLLOUT);
            return;
        } else {
            c->broken = 1;
            conn_close(c);
            return;
        }
    }
    answered(c);
}

/* Answer a request the loop refuses (bad framing, too large, too slow):
 * JSON like every error, then close. */
static void refuse(http_conn *c, ctxd_err err, const char *msg) {
    int status = http_error_status(err);
    char rid[64];
    const char *given = c->head.method ? http_head_get(&c->head, "X-Request-Id") : NULL;
    if (given && util_is_idem_key(given) && strlen(given) < sizeof(rid))
        snprintf(rid, sizeof(rid), "%s", given);
    else if (util_token(rid))
        snprintf(rid, sizeof(rid), "none");
    buf body, b;
    buf_init(&body);
    buf_init(&b);
    http_error_body(&body, err, msg, 0);
    buf_puts(&body, "\n");
    buf_printf(&b,
               "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
               "Cache-Control: no-store\r\nConnection: close\r\nX-Request-Id: %s\r\n\r\n",
               status, http_status_reason(status), body.len, rid);
    buf_putn(&b, body.data, body.len);
    buf_free(&body);
    log_msg(LOG_INFO, "refused a request from %s: %d %s", c->peer, status, msg);
    metrics_http_request(-1, status, 0);
    request_free(c);
    c->keep_alive = 0;
    free(c->out);
    c->out = b.err ? NULL : buf_take(&b, &c->out_len);
    c->out_off = 0;
    buf_free(&b);
    if (!c->out) {
        conn_close(c);
        return;
    }
    flush(c);
}

/* Copy the parsed head out of the input buffer (its strings move with it),
 * so the buffer can take the body. */
static int keep_head(http_conn *c) {
    size_t n = c->head.head_len;
    if (!(c->head_buf = malloc(n))) return CTXD_ERR;
    memcpy(c->head_buf, c->in, n);
    ptrdiff_t d = c->head_buf - c->in;
    http_head *h = &c->head;
#define MOVE(p) ((p) ? (p) += d : NULL)
    MOVE(h->method);
    MOVE(h->target);
    MOVE(h->path);
    MOVE(h->query);
    MOVE(h->host);
    for (size_t i = 0; i < h->n_headers; i++) {
        MOVE(h->headers[i].name);
        MOVE(h->headers[i].value);
    }
#undef MOVE
    memmove(c->in, c->in + n, c->in_len - n);
    c->in_len -= n;
    return CTXD_OK;
}

static void hand_over(http_conn *c) {
    disarm(c);
    c->state = S_WORKER;
    c->deadline = 0;
    metrics_inflight(1);
    L.dispatch(c);
}

/* Room for n bytes of body (and a NUL), grown as the data comes: a slow
 * client costs what it sent, not what it announced. */
static int grow_body(http_conn *c, size_t n) {
    if (n <= c->body_cap && c->body) return CTXD_OK;
    size_t cap = c->body_cap ? c->body_cap : 4096;
    while (cap < n) cap *= 2;
    char *nb = realloc(c->body, cap + 1);
    if (!nb) {
        refuse(c, CTXD_E_NOMEM, "out of memory");
        return CTXD_ERR;
    }
    c->body = nb;
    c->body_cap = cap;
    return CTXD_OK;
}

/* Move body bytes from the input buffer into the body. Returns 1 when the
 * body is complete, 0 when more is needed, -1 after refusing. */
static int take_body(http_conn *c) {
    size_t max = L.cfg->max_body_bytes;
    if (!c->head.chunked) {
        size_t want = (size_t)c->head.content_length - c->body_len;
        size_t n = c->in_len < want ? c->in_len : want;
        if (grow_body(c, c->body_len + n)) return -1;
        memcpy(c->body + c->body_len, c->in, n);
        c->body_len += n;
        memmove(c->in, c->in + n, c->in_len - n);
        c->in_len -= n;
        return c->body_len == (size_t)c->head.content_length;
    }
    /* Decoded data is never longer than its input. */
    size_t room = c->body_len + c->in_len < max ? c->body_len + c->in_len : max;
    if (grow_body(c, room)) return -1;
    size_t used = 0;
    int rc = http_chunked_feed(&c->chunked, c->in, c->in_len, &used, c->body, &c->body_len,
                               room);
    memmove(c->in, c->in + used, c->in_len - used);
    c->in_len -= used;
    if (rc == HTTP_CHUNKED_TOO_LARGE) {
        char msg[128];
        snprintf(msg, sizeof(msg),
                 "Request body is larger than the %zu bytes allowed (CTXD_MAX_BODY_BYTES)", max);
        refuse(c, CTXD_E_BODY_TOO_LARGE, msg);
        return -1;
    }
    if (rc == HTTP_PARSE_ERROR) {
        refuse(c, CTXD_E_BAD_CHUNKED_BODY, c->chunked.error);
        return -1;
    }
    return rc == HTTP_PARSE_DONE;
}

/* A head is complete: check its framing and start on the body. */
static void start_body(http_conn *c) {
    const http_head *h = &c->head;
    size_t max = L.cfg->max_body_bytes;
    char msg[160];
    if (h->content_length > (int64_t)max) {
        snprintf(msg, sizeof(msg),
                 "Request body of %lld bytes is larger than the %zu allowed (CTXD_MAX_BODY_BYTES)",
                 (long long)h->content_length, max);
        refuse(c, CTXD_E_BODY_TOO_LARGE, msg);
        return;
    }
    if (keep_head(c)) {
        refuse(c, CTXD_E_NOMEM, "out of memory");
        return;
    }
    if (grow_body(c, 0)) return; /* refused */
    c->state = S_BODY;
    c->deadline = util_mono_ms() + L.cfg->body_timeout_ms;
    int done = h->chunked || h->content_length > 0 ? take_body(c) : 1;
    if (done < 0) return;
    if (done) {
        c->body[c->body_len] = '\0';
        hand_over(c);
        return;
    }
    if (h->expect_continue) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        if (send(c->fd, cont, sizeof(cont) - 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
        } /* a client that does not read it still sends its body */
    }
}

/* Use what is in the input buffer: a head, then a body. */
static void advance(http_conn *c) {
    if (c->state == S_HEAD) {
        if (!c->in_len) return;
        if (!c->begun) {
            c->begun = 1; /* a request began: its head has a time limit of its own */
            c->deadline = util_mono_ms() + L.cfg->header_timeout_ms;
        }
        int rc = http_parse_head(c->in, c->in_len, MAX_HEAD_BYTES, &c->head);
        if (rc == HTTP_PARSE_ERROR) {
            char msg[200];
            snprintf(msg, sizeof(msg), "Not a valid HTTP request: %s", c->head.error);
            refuse(c, CTXD_E_BAD_HTTP_REQUEST, msg);
            return;
        }
        if (rc == HTTP_PARSE_INCOMPLETE) return;
        c->started_us = util_mono_us();
        c->keep_alive = c->head.keep_alive;
        start_body(c);
        return;
    }
    if (c->state == S_BODY) {
        int done = take_body(c);
        if (done > 0) {
            c->body[c->body_len] = '\0';
            hand_over(c);
        }
    }
}

static void wait_for_request(http_conn *c) {
    request_free(c);
    c->state = S_HEAD;
    c->begun = 0;
    c->deadline = util_mono_ms() + L.cfg->keepalive_timeout_ms;
    arm(c, EPOLLIN | EPOLLRDHUP);
    advance(c); /* a pipelined request may be waiting already */
}

/* Read what the socket has. Returns bytes read, 0 at end of stream, -1 when
 * nothing is there now, -2 on a broken connection. */
static ssize_t read_some(http_conn *c) {
    if (c->in_cap - c->in_len < IN_CHUNK && c->in_cap < IN_MAX) {
        size_t cap = c->in_cap ? c->in_cap * 2 : IN_CHUNK * 2;
        if (cap > IN_MAX) cap = IN_MAX;
        char *n = realloc(c->in, cap);
        if (!n) return -2;
        c->in = n;
        c->in_cap = cap;
    }
    if (c->in_len == c->in_cap) return -1; /* full: use it first */
    for (;;) {
        ssize_t n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
        if (n > 0) c->in_len += (size_t)n;
        if (n >= 0) return n;
        if (errno == EINTR) continue;
        return errno == EAGAIN || errno == EWOULDBLOCK ? -1 : -2;
    }
}

static void on_readable(http_conn *c) {
    if (c->state == S_LINGER) {
        char sink[4096];
        ssize_t n;
        while ((n = recv(c->fd, sink, sizeof(sink), 0)) > 0) {
        }
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) conn_close(c);
        return;
    }
    ssize_t n = read_some(c);
    if (n == -1) return;
    if (n <= 0) { /* the client closed or broke the connection */
        int mid_body = c->state == S_BODY && n == 0;
        if (mid_body) {
            c->broken = 0;
            refuse(c, CTXD_E_INCOMPLETE_BODY,
                   "Request body ended before its declared end (Content-Length or last chunk)");
        } else {
            conn_close(c);
        }
        return;
    }
    advance(c);
}

/* ---- The loop ---- */

/* Over CTXD_MAX_CONNECTIONS: a 503 if the socket takes it at once, and close. */
static void turn_away(int fd) {
    buf body, b;
    buf_init(&body);
    buf_init(&b);
    http_error_body(&body, CTXD_E_TOO_MANY_CONNECTIONS,
                    "This ctxd process holds CTXD_MAX_CONNECTIONS connections; retry shortly", 0);
    buf_puts(&body, "\n");
    buf_printf(&b,
               "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
               "Content-Length: %zu\r\nRetry-After: 1\r\nConnection: close\r\n\r\n",
               body.len);
    buf_putn(&b, body.data, body.len);
    if (!b.err && send(fd, b.data, b.len, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
    } /* best effort: the connection is closed either way */
    buf_free(&body);
    buf_free(&b);
    metrics_http_request(-1, 503, 0);
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
        http_conn *c = L.n_conns < (size_t)L.cfg->max_connections ? calloc(1, sizeof(*c)) : NULL;
        if (!c) {
            turn_away(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        c->fd = fd;
        char ip[INET_ADDRSTRLEN] = "?";
        inet_ntop(AF_INET, &sa.sin_addr, ip, sizeof(ip));
        snprintf(c->peer, sizeof(c->peer), "%s:%u", ip, ntohs(sa.sin_port));
        c->next = L.conns;
        if (L.conns) L.conns->prev = c;
        L.conns = c;
        L.n_conns++;
        /* A new connection must send its request within the head's limit. */
        c->state = S_HEAD;
        c->deadline = util_mono_ms() + L.cfg->header_timeout_ms;
        arm(c, EPOLLIN | EPOLLRDHUP);
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
        metrics_inflight(-1);
        c->requests++;
        request_free(c);
        if (c->broken)
            conn_close(c);
        else if (c->out)
            flush(c);
        else
            answered(c);
        c = next;
    }
}

static void check_deadlines(int64_t now) {
    for (http_conn *c = L.conns, *next; c; c = next) {
        next = c->next;
        if (!c->deadline || now < c->deadline || c->state == S_WORKER) continue;
        if (c->state == S_HEAD && !c->in_len)
            conn_close(c); /* idle: nothing to answer */
        else if (c->state == S_HEAD || c->state == S_BODY)
            refuse(c, CTXD_E_REQUEST_TIMEOUT,
                   c->state == S_HEAD ? "The request head did not arrive in time "
                                        "(CTXD_HEADER_TIMEOUT_MS)"
                                      : "The request body did not arrive in time "
                                        "(CTXD_BODY_TIMEOUT_MS)");
        else
            conn_close(c); /* a reader too slow, or lingering done */
    }
}

static void *loop_main(void *arg) {
    CTXD_UNUSED(arg);
    struct epoll_event evs[256];
    int64_t next_scan = 0;
    while (!atomic_load(&L.stop)) {
        int n = epoll_wait(L.epfd, evs, 256, SCAN_EVERY_MS);
        for (int i = 0; i < n; i++) {
            void *p = evs[i].data.ptr;
            if (p == &listener_tag) {
                accept_all();
                continue;
            }
            if (p == &wake_tag) {
                take_back();
                continue;
            }
            http_conn *c = p;
            uint32_t e = evs[i].events;
            if (c->state == S_FLUSH)
                (e & (EPOLLERR | EPOLLHUP)) ? (c->broken = 1, conn_close(c)) : flush(c);
            else if (e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
                on_readable(c);
        }
        if (atomic_load(&L.stop_accepting) && L.lfd >= 0) {
            epoll_ctl(L.epfd, EPOLL_CTL_DEL, L.lfd, NULL);
            close(L.lfd);
            L.lfd = -1;
        }
        int64_t now = util_mono_ms();
        if (now >= next_scan) {
            check_deadlines(now);
            next_scan = now + SCAN_EVERY_MS;
        }
    }
    while (L.conns) conn_close(L.conns);
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
    L.cfg = cfg;
    L.dispatch = dispatch;
    if ((L.lfd = listen_socket(cfg, err, errlen)) < 0) return CTXD_ERR;
    L.epfd = epoll_create1(EPOLL_CLOEXEC);
    L.evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = &listener_tag};
    struct epoll_event wev = {.events = EPOLLIN, .data.ptr = &wake_tag};
    if (L.epfd < 0 || L.evfd < 0 || epoll_ctl(L.epfd, EPOLL_CTL_ADD, L.lfd, &lev) ||
        epoll_ctl(L.epfd, EPOLL_CTL_ADD, L.evfd, &wev) ||
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
    close(L.epfd);
    close(L.evfd);
    L.lfd = L.epfd = L.evfd = -1;
}

/* ---- Worker side ---- */

int http_conn_write(http_conn *c, const char *data, size_t len) {
    int64_t deadline = util_mono_ms() + L.cfg->write_timeout_ms;
    while (len && !c->broken) {
        ssize_t n = send(c->fd, data, len, MSG_NOSIGNAL);
        if (n > 0) {
            data += n;
            len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        int64_t left = deadline - util_mono_ms();
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && left > 0) {
            struct pollfd p = {.fd = c->fd, .events = POLLOUT};
            poll(&p, 1, (int)left);
            continue;
        }
        c->broken = 1;
    }
    return c->broken ? CTXD_ERR : CTXD_OK;
}

int http_conn_send(http_conn *c, const char *data, size_t len) {
    while (len && !c->broken && !c->out_len) { /* nothing waiting before it */
        ssize_t n = send(c->fd, data, len, MSG_NOSIGNAL);
        if (n > 0) {
            data += n;
            len -= (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            break;
        } else {
            c->broken = 1;
        }
    }
    if (c->broken) return CTXD_ERR;
    if (!len) return CTXD_OK;
    /* The rest goes out from the loop (after what an earlier call left). */
    char *out = realloc(c->out, c->out_len + len);
    if (!out) {
        c->broken = 1;
        return CTXD_ERR;
    }
    memcpy(out + c->out_len, data, len);
    c->out = out;
    c->out_len += len;
    return CTXD_OK;
}

void http_conn_release(http_conn *c) {
    pthread_mutex_lock(&L.back_mu);
    c->qnext = L.back;
    L.back = c;
    pthread_mutex_unlock(&L.back_mu);
    wake_loop();
}
