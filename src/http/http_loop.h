/* http_loop.h: what the front door's loop (http_loop.c) and its connections (http_conn.c) share. */
#ifndef CTXD_HTTP_LOOP_H
#define CTXD_HTTP_LOOP_H

#include <stdint.h>

#include "ctxd/buf.h"
#include "ctxd/error.h"
#include "http_conn.h"

/* The loop's state the connections use; written by the loop thread only
 * (cfg and dispatch are set before it starts). */
typedef struct http_loop {
    const ctxd_config *cfg;
    http_conn_dispatch_fn dispatch;
    int epfd;
    http_conn *conns; /* every open connection */
    size_t n_conns;
} http_loop;

extern http_loop http_front;

/* A new connection on fd (non-blocking). CTXD_ERR when it cannot be taken
 * (CTXD_MAX_CONNECTIONS, out of memory): the caller turns it away. */
int http_conn_open(int fd, const char *peer);

/* Readiness on c's socket (epoll events). */
void http_conn_event(http_conn *c, uint32_t events);

/* A worker released c: finish its answer, then the next request or close. */
void http_conn_returned(http_conn *c);

/* The deadline of c passed: answer 408 or close. */
void http_conn_expire(http_conn *c);

/* 1 while a worker holds c (from dispatch to release). */
int http_conn_with_worker(const http_conn *c);

/* Close c and forget it. */
void http_conn_close(http_conn *c);

/* The whole answer refusing a request before any worker saw it: JSON like
 * every error, Retry-After from the table, Connection: close, and the
 * request id of c (or a new one when c is NULL or its head was not read). */
void http_conn_refusal(buf *b, ctxd_err err, const char *msg, const http_conn *c);

#endif
