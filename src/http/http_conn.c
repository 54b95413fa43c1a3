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
#include "http_tls.h"

#define MAX_HEAD_BYTES 16384 /* request line and headers */
#define IN_CHUNK 16384       /* bytes read at a time */
#define IN_MAX (MAX_HEAD_BYTES + 4 * IN_CHUNK)
#define LINGER_MS 2000 /* reading what a closed client still sends */

enum { S_HANDSHAKE, S_HEAD, S_BODY, S_WORKER, S_FLUSH, S_LINGER };

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
    http_tls_free(c->tls);
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
    if (c->tls) http_tls_close_notify(c->tls);
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

/* Write what the socket takes now: the count, 0 when it takes nothing now
 * (*want_read: TLS must first read from the client), -1 when the connection
 * broke. With TLS, bytes not taken must be offered again before any others. */
static ssize_t write_now(http_conn *c, const char *data, size_t len, int *want_read) {
    *want_read = 0;
    if (c->tls) {
        ssize_t n = http_tls_write(c->tls, data, len);
        if (n > 0) return n;
        *want_read = n == HTTP_TLS_WANT_READ;
        return n == HTTP_TLS_WANT_READ || n == HTTP_TLS_WANT_WRITE ? 0 : -1;
    }
    for (;;) {
        ssize_t n = send(c->fd, data, len, MSG_NOSIGNAL);
        if (n >= 0) return n;
        if (errno != EINTR) return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
    }
}

/* Leave len bytes for the loop to write, after those already waiting. */
static int append_out(http_conn *c, const char *data, size_t len) {
    char *out = realloc(c->out, c->out_len + len);
    if (!out) return CTXD_ERR;
    memcpy(out + c->out_len, data, len);
    c->out = out;
    c->out_len += len;
    return CTXD_OK;
}

/* Write what is left of the answer without waiting; EPOLLOUT brings the rest. */
static void flush(http_conn *c) {
    while (c->out_off < c->out_len) {
        int want_read;
        ssize_t n = write_now(c, c->out + c->out_off, c->out_len - c->out_off, &want_read);
        if (n > 0) {
            c->out_off += (size_t)n;
        } else if (n == 0) {
            if (c->state != S_FLUSH) {
                c->state = S_FLUSH;
                c->deadline = util_mono_ms() + http_front.cfg->write_timeout_ms;
            }
            arm(c, want_read ? EPOLLIN : EPOLLOUT);
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
    http_api api = c && c->head.method ? http_path_api(c->head.path) : HTTP_API_CTXD;
    buf body;
    buf_init(&body);
    if (api != HTTP_API_CTXD)
        http_error_body_api(&body, api, err, msg, &status);
    else
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
 * then close. The answer goes after anything still waiting (a 100 Continue). */
static void refuse(http_conn *c, ctxd_err err, const char *msg) {
    buf b;
    buf_init(&b);
    http_conn_refusal(&b, err, msg, c);
    log_msg(LOG_INFO, "refused a request from %s: %d %s", c->peer, http_error_status(err), msg);
    request_free(c);
    c->keep_alive = 0;
    int failed = b.err || append_out(c, b.data, b.len);
    buf_free(&b);
    if (failed) {
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

/* Tell a client that waits for it to send its body. What the socket does
 * not take now goes out before the answer (a client that does not read it
 * still sends its body). */
static void send_continue(http_conn *c) {
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    int want_read;
    ssize_t n = write_now(c, cont, sizeof(cont) - 1, &want_read);
    if (n >= 0 && (size_t)n < sizeof(cont) - 1 &&
        append_out(c, cont + n, sizeof(cont) - 1 - (size_t)n))
        c->broken = 1; /* out of memory: the answer could not follow it */
}

/* A head is complete: check its framing and start on the body. Returns 1
 * while the body is still to come, 0 once c was handed over or refused. */
static int start_body(http_conn *c) {
    const http_head *h = &c->head;
    size_t max = http_front.cfg->max_body_bytes;
    char msg[160];
    if (h->content_length > (int64_t)max) {
        snprintf(msg, sizeof(msg),
                 "Request body of %lld bytes is larger than the %zu allowed (CTXD_MAX_BODY_BYTES)",
                 (long long)h->content_length, max);
        refuse(c, CTXD_E_BODY_TOO_LARGE, msg);
        return 0;
    }
    if (keep_head(c)) {
        refuse(c, CTXD_E_NOMEM, "out of memory");
        return 0;
    }
    if (grow_body(c, 0)) return 0; /* refused */
    c->state = S_BODY;
    c->deadline = util_mono_ms() + http_front.cfg->body_timeout_ms;
    int done = h->chunked || h->content_length > 0 ? take_body(c) : 1;
    if (done < 0) return 0;
    if (done) {
        c->body[c->body_len] = '\0';
        hand_over(c);
        return 0;
    }
    if (h->expect_continue) send_continue(c);
    return 1;
}

/* Use what is in the input buffer: a head, then a body. Returns 1 while the
 * loop still reads this request, 0 once c was handed over, refused or closed
 * (then c may be gone). */
static int advance(http_conn *c) {
    if (c->state == S_HEAD) {
        if (!c->in_len) return 1;
        if (!c->begun) {
            c->begun = 1; /* a request began: its head has a time limit of its own */
            c->deadline = util_mono_ms() + http_front.cfg->header_timeout_ms;
        }
        int rc = http_parse_head(c->in, c->in_len, MAX_HEAD_BYTES, &c->head);
        if (rc == HTTP_PARSE_ERROR) {
            char msg[200];
            snprintf(msg, sizeof(msg), "Not a valid HTTP request: %s", c->head.error);
            refuse(c, CTXD_E_BAD_HTTP_REQUEST, msg);
            return 0;
        }
        if (rc == HTTP_PARSE_INCOMPLETE) return 1;
        c->started_us = util_mono_us();
        c->keep_alive = c->head.keep_alive;
        return start_body(c);
    }
    if (c->state != S_BODY) return 0;
    int done = take_body(c);
    if (done > 0) {
        c->body[c->body_len] = '\0';
        hand_over(c);
    }
    return done == 0;
}

static void on_readable(http_conn *c);

static void wait_for_request(http_conn *c) {
    request_free(c);
    c->state = S_HEAD;
    c->begun = 0;
    c->deadline = util_mono_ms() + http_front.cfg->keepalive_timeout_ms;
    arm(c, EPOLLIN | EPOLLRDHUP);
    /* A pipelined request may be waiting already, in c->in or inside TLS. */
    if (advance(c) && c->tls && http_tls_pending(c->tls)) on_readable(c);
}

/* Read what TLS has, until it needs more from the socket or c->in is full
 * (bytes OpenSSL holds bring no epoll event: take them now). Returns like
 * read_some, and -3 when TLS must write before it can read. */
static ssize_t read_tls(http_conn *c) {
    ssize_t got = 0;
    while (c->in_len < c->in_cap) {
        ssize_t n = http_tls_read(c->tls, c->in + c->in_len, c->in_cap - c->in_len);
        if (n > 0) {
            c->in_len += (size_t)n;
            got += n;
        } else if (got) {
            return got; /* what stopped it comes back on the next read */
        } else {
            return n == HTTP_TLS_WANT_READ ? -1 : n == HTTP_TLS_WANT_WRITE ? -3 : n == 0 ? 0 : -2;
        }
    }
    return got ? got : -1;
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
    if (c->tls) return read_tls(c);
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
    for (;;) {
        ssize_t n = read_some(c);
        /* TLS may need to write first (a key update's answer): wait for room. */
        if (n == -3 || (c->armed & EPOLLOUT)) arm(c, (n == -3 ? EPOLLOUT : EPOLLIN) | EPOLLRDHUP);
        if (n == -1 || n == -3) return;
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
        if (!advance(c)) return;
        /* c->in was full while TLS holds more: no event will come for it. */
        if (!c->tls || !http_tls_pending(c->tls) || c->in_len == c->in_cap) return;
    }
}

/* ---- HTTPS: the first bytes and the handshake ---- */

/* What the first bytes on the HTTPS port are: 1 TLS (or garbage, which the
 * handshake refuses), 2 plain HTTP (an uppercase method of three letters or
 * more, then a space, or the start of one still arriving), 0 none yet, -1 the
 * client left. Peeked: the handshake reads them again. */
static int sniff(http_conn *c) {
    unsigned char b[16];
    ssize_t n = recv(c->fd, b, sizeof(b), MSG_PEEK);
    if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -1;
    if (n == 0) return -1;
    ssize_t i = 0;
    while (i < n && b[i] >= 'A' && b[i] <= 'Z') i++;
    return i > 0 && (i == n || (i >= 3 && b[i] == ' ')) ? 2 : 1;
}

/* Plain HTTP on the HTTPS port: a plain-text 400 saying so, then close. */
static void refuse_plain(http_conn *c) {
    http_tls_free(c->tls);
    c->tls = NULL;
    c->state = S_HEAD;
    refuse(c, CTXD_E_BAD_HTTP_REQUEST, "This port speaks HTTPS; use https:// instead of http://");
}

/* Run an HTTPS connection's start as far as the socket allows: look at its
 * first bytes (c->begun once seen), then the handshake, all under the head's
 * time limit set at open. */
static void handshake(http_conn *c) {
    if (!c->begun) {
        int kind = sniff(c);
        if (kind < 0)
            http_conn_close(c);
        else if (kind == 2)
            refuse_plain(c);
        if (kind != 1) return;
        c->begun = 1;
    }
    char why[128];
    int rc = http_tls_handshake(c->tls, why, sizeof(why));
    if (rc == HTTP_TLS_WANT_READ || rc == HTTP_TLS_WANT_WRITE) {
        arm(c, rc == HTTP_TLS_WANT_READ ? EPOLLIN | EPOLLRDHUP : EPOLLOUT);
        return;
    }
    if (rc != 1) {
        log_msg(LOG_INFO, "TLS handshake with %s failed: %s", c->peer, why);
        c->broken = 1;
        http_conn_close(c);
        return;
    }
    /* Like a new connection: its request must begin within the head's limit. */
    c->state = S_HEAD;
    c->begun = 0;
    c->deadline = util_mono_ms() + http_front.cfg->header_timeout_ms;
    arm(c, EPOLLIN | EPOLLRDHUP);
    if (http_tls_pending(c->tls)) on_readable(c);
}

/* ---- For the loop ---- */

int http_conn_open(int fd, const char *peer) {
    http_conn *c =
        http_front.n_conns < (size_t)http_front.cfg->max_connections ? calloc(1, sizeof(*c)) : NULL;
    if (c && http_tls_on() && !(c->tls = http_tls_new(fd))) {
        free(c);
        c = NULL;
    }
    if (!c) return CTXD_ERR;
    c->fd = fd;
    snprintf(c->peer, sizeof(c->peer), "%s", peer);
    c->next = http_front.conns;
    if (http_front.conns) http_front.conns->prev = c;
    http_front.conns = c;
    http_front.n_conns++;
    /* A new connection must send its request (or finish its TLS handshake)
     * within the head's limit. */
    c->state = c->tls ? S_HANDSHAKE : S_HEAD;
    c->deadline = util_mono_ms() + http_front.cfg->header_timeout_ms;
    arm(c, EPOLLIN | EPOLLRDHUP);
    return CTXD_OK;
}

void http_conn_event(http_conn *c, uint32_t events) {
    if (c->state == S_HANDSHAKE) {
        handshake(c);
    } else if (c->state == S_FLUSH) {
        if (events & (EPOLLERR | EPOLLHUP)) {
            c->broken = 1;
            http_conn_close(c);
        } else {
            flush(c);
        }
    } else if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR | EPOLLOUT)) {
        on_readable(c); /* EPOLLOUT: only when TLS had to write before reading */
    }
}

void http_conn_returned(http_conn *c) {
    c->requests++;
    request_free(c);
    if (c->broken)
        http_conn_close(c);
    else if (c->out)
        flush(c);
    else
        answered(c);
}

int http_conn_with_worker(const http_conn *c) { return c->state == S_WORKER; }

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
        http_conn_close(c); /* a handshake or a reader too slow, or lingering done */
}

/* ---- Worker side ---- */

/* Write all of data by deadline, waiting for a slow reader. */
static int write_all(http_conn *c, const char *data, size_t len, int64_t deadline) {
    while (len && !c->broken) {
        int want_read;
        ssize_t n = write_now(c, data, len, &want_read);
        if (n > 0) {
            data += n;
            len -= (size_t)n;
            continue;
        }
        int64_t left = deadline - util_mono_ms();
        if (n == 0 && left > 0) {
            struct pollfd p = {.fd = c->fd, .events = want_read ? POLLIN : POLLOUT};
            poll(&p, 1, (int)left);
            continue;
        }
        c->broken = 1;
    }
    return c->broken ? CTXD_ERR : CTXD_OK;
}

int http_conn_write(http_conn *c, const char *data, size_t len) {
    int64_t deadline = util_mono_ms() + http_front.cfg->write_timeout_ms;
    /* Bytes left for the loop (a 100 Continue) go first. */
    if (c->out_off < c->out_len &&
        write_all(c, c->out + c->out_off, c->out_len - c->out_off, deadline) == CTXD_OK) {
        free(c->out);
        c->out = NULL;
        c->out_len = c->out_off = 0;
    }
    return write_all(c, data, len, deadline);
}

int http_conn_send(http_conn *c, const char *data, size_t len) {
    while (len && !c->broken && !c->out_len) { /* nothing waiting before it */
        int want_read;
        ssize_t n = write_now(c, data, len, &want_read);
        if (n > 0) {
            data += n;
            len -= (size_t)n;
        } else if (n == 0) {
            break;
        } else {
            c->broken = 1;
        }
    }
    if (c->broken) return CTXD_ERR;
    if (!len) return CTXD_OK;
    /* The rest goes out from the loop (after what an earlier call left). */
    if (append_out(c, data, len)) {
        c->broken = 1;
        return CTXD_ERR;
    }
    return CTXD_OK;
}
