/* http_conn.c: one client connection: reading a whole request under time limits, then closing right. */
#include "http_conn.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ctxd/log.h"
#include "ctxd/metrics.h"
#include "ctxd/util.h"
#include "http_int.h"
#include "http_loop.h"

#define MAX_HEAD_BYTES 16384 /* request line and headers */
#define IN_CHUNK 16384       /* bytes read at a time */
#define IN_MAX (MAX_HEAD_BYTES + 4 * IN_CHUNK)
#define LINGER_MS 2000 /* reading what a closed client still sends */

enum { S_HEAD, S_BODY, S_WORKER, S_FLUSH, S_LINGER };

static void arm(http_conn *c, uint32_t events) {
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(http_front.epfd, c->armed ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->fd, &ev) == 0)
        c->armed = (int)events;
}

static void disarm(http_conn *c) {
    if (c->armed) epoll_ctl(http_front.epfd, EPOLL_CTL_DEL, c->fd, NULL);
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

void http_conn_close(http_conn *c) {
    disarm(c);
    close(c->fd);
    if (c->prev)
        c->prev->next = c->next;
    else
        http_front.conns = c->next;
    if (c->next) c->next->prev = c->prev;
    http_front.n_conns--;
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
        http_conn_close(c);
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
                c->deadline = util_mono_ms() + http_front.cfg->write_timeout_ms;
            }
            arm(c, EPOLLOUT);
            return;
        } else {
            c->broken = 1;
            http_conn_close(c);
            return;
        }
    }
    answered(c);
}

/* The client's X-Request-Id when the head got that far, else a new one. */
static void request_id(const http_conn *c, char rid[64]) {
    const char *given = c && c->head.method ? http_head_get(&c->head, "X-Request-Id") : NULL;
    if (given && util_is_idem_key(given) && strlen(given) < 64)
        snprintf(rid, 64, "%s", given);
    else if (util_token(rid))
        snprintf(rid, 64, "none");
}

void http_conn_refusal(buf *b, ctxd_err err, const char *msg, const http_conn *c) {
    char rid[64];
    request_id(c, rid);
    int status = http_error_status(err), ra = http_error_retry_after(err);
    buf body;
    buf_init(&body);
    http_error_body(&body, err, msg, 0);
    buf_puts(&body, "\n");
    buf_printf(b,
               "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
               "Cache-Control: no-store\r\nConnection: close\r\nX-Request-Id: %s\r\n",
               status, http_status_reason(status), body.len, rid);
    if (ra > 0) buf_printf(b, "Retry-After: %d\r\n", ra);
    buf_puts(b, "\r\n");
    buf_putn(b, body.data, body.len);
    buf_free(&body);
    metrics_http_request(-1, status, 0);
}

/* Answer a request the loop refuses (bad framing, too large, too slow),
 * then close. */
static void refuse(http_conn *c, ctxd_err err, const char *msg) {
    buf b;
    buf_init(&b);
    http_conn_refusal(&b, err, msg, c);
    log_msg(LOG_INFO, "refused a request from %s: %d %s", c->peer, http_error_status(err), msg);
    request_free(c);
    c->keep_alive = 0;
    free(c->out);
    c->out = b.err ? NULL : buf_take(&b, &c->out_len);
    c->out_off = 0;
    buf_free(&b);
    if (!c->out) {
        http_conn_close(c);
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
    http_front.dispatch(c);
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
    size_t max = http_front.cfg->max_body_bytes;
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
    int rc = http_chunked_feed(&c->chunked, c->in, c->in_len, &used, c->body, &c->body_len, room);
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
    size_t max = http_front.cfg->max_body_bytes;
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
    c->deadline = util_mono_ms() + http_front.cfg->body_timeout_ms;
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
            c->deadline = util_mono_ms() + http_front.cfg->header_timeout_ms;
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
    c->deadline = util_mono_ms() + http_front.cfg->keepalive_timeout_ms;
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
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) http_conn_close(c);
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
            http_conn_close(c);
        }
        return;
    }
    advance(c);
}

/* ---- The loop ---- */

/* ---- For the loop ---- */

int http_conn_open(int fd, const char *peer) {
    http_conn *c =
        http_front.n_conns < (size_t)http_front.cfg->max_connections ? calloc(1, sizeof(*c)) : NULL;
    if (!c) return CTXD_ERR;
    c->fd = fd;
    snprintf(c->peer, sizeof(c->peer), "%s", peer);
    c->next = http_front.conns;
    if (http_front.conns) http_front.conns->prev = c;
    http_front.conns = c;
    http_front.n_conns++;
    /* A new connection must send its request within the head's limit. */
    c->state = S_HEAD;
    c->deadline = util_mono_ms() + http_front.cfg->header_timeout_ms;
    arm(c, EPOLLIN | EPOLLRDHUP);
    return CTXD_OK;
}

void http_conn_event(http_conn *c, uint32_t events) {
    if (c->state == S_FLUSH) {
        if (events & (EPOLLERR | EPOLLHUP)) {
            c->broken = 1;
            http_conn_close(c);
        } else {
            flush(c);
        }
    } else if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
        on_readable(c);
    }
}

void http_conn_returned(http_conn *c) {
    metrics_inflight(-1);
    c->requests++;
    request_free(c);
    if (c->broken)
        http_conn_close(c);
    else if (c->out)
        flush(c);
    else
        answered(c);
}

void http_conn_expire(http_conn *c) {
    if (c->state == S_WORKER) return;
    if (c->state == S_HEAD && !c->in_len)
        http_conn_close(c); /* idle: nothing to answer */
    else if (c->state == S_HEAD || c->state == S_BODY)
        refuse(c, CTXD_E_REQUEST_TIMEOUT,
               c->state == S_HEAD ? "The request head did not arrive in time "
                                    "(CTXD_HEADER_TIMEOUT_MS)"
                                  : "The request body did not arrive in time "
                                    "(CTXD_BODY_TIMEOUT_MS)");
    else
        http_conn_close(c); /* a reader too slow, or lingering done */
}

/* ---- Worker side ---- */

int http_conn_write(http_conn *c, const char *data, size_t len) {
    int64_t deadline = util_mono_ms() + http_front.cfg->write_timeout_ms;
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
