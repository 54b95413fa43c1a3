/* http_conn.h: client connections and the event loop that reads whole requests (the front door). */
#ifndef CTXD_HTTP_CONN_H
#define CTXD_HTTP_CONN_H

#include <stddef.h>
#include <stdint.h>

#include "ctxd/config.h"
#include "http_parse.h"

/* One client connection. The loop owns it while it reads a request, writes
 * what is left of an answer, or closes; a worker owns it from dispatch until
 * http_conn_release. */
typedef struct http_conn {
    int fd;
    int state;
    char peer[64];
    struct ssl_st *tls; /* the TLS session when ctxd serves HTTPS (http_tls.h), else NULL */

    /* Bytes read and not yet used: the start of the next request. */
    char *in;
    size_t in_len, in_cap;

    /* The request being served: its head (strings in head_buf) and body. */
    http_head head;
    char *head_buf;
    char *body;
    size_t body_len, body_cap;
    http_chunked chunked;
    int begun;          /* the first byte of the next request came */
    int64_t started_us; /* monotonic, when its head was complete */

    /* The answer: keep_alive 0 once it says Connection: close. */
    int keep_alive;
    int broken; /* a write failed: close at once, no lingering */
    char *out;  /* left for the loop to write, owned */
    size_t out_len, out_off;
    int requests; /* answered on this connection */

    int64_t deadline;              /* monotonic ms; 0: none */
    int armed;                     /* events registered with epoll, 0 when none */
    struct http_conn *prev, *next; /* every connection the loop knows */
    struct http_conn *qnext;       /* the worker queue, the loop's return list */
} http_conn;

/* Called on the loop thread with a complete request (head and whole body);
 * the callee owns c until it calls http_conn_release. */
typedef void (*http_conn_dispatch_fn)(http_conn *c);

/* Listen on cfg's address and start the loop thread. CTXD_ERR with a
 * one-line message in err. */
int http_conn_start(const ctxd_config *cfg, http_conn_dispatch_fn dispatch, char *err,
                    size_t errlen);

/* Stop accepting new connections (draining): new connects are refused while
 * open connections are served. */
void http_conn_stop_accepting(void);

/* Stop the loop and close every connection it holds. */
void http_conn_stop(void);

/* Worker side. Write all of data, waiting up to the write timeout for a slow
 * reader: CTXD_ERR when the client is gone or too slow (the connection is
 * then closed on release). */
int http_conn_write(http_conn *c, const char *data, size_t len);

/* Send the last bytes of an answer: what the socket takes now goes out, the
 * rest is left to the loop, so a slow reader never holds a worker.
 * CTXD_ERR when out of memory or the client is gone. */
int http_conn_send(http_conn *c, const char *data, size_t len);

/* The answer is complete: hand the connection back to the loop, which
 * finishes writing, then reads the next request or closes. */
void http_conn_release(http_conn *c);

#endif
