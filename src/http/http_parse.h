/* http_parse.h: HTTP/1.1 request framing (RFC 9112): the request head and chunked bodies. */
#ifndef CTXD_HTTP_PARSE_H
#define CTXD_HTTP_PARSE_H

#include <stddef.h>
#include <stdint.h>

#include "ctxd/common.h"

#define HTTP_MAX_HEADERS 64

/* A parsed request head. Every string points into the buffer given to
 * http_parse_head, NUL-terminated in place. */
typedef struct http_head {
    const char *method;
    const char *target; /* the raw request-target, origin-form */
    const char *path;   /* the target up to '?', never percent-decoded */
    const char *query;  /* after '?', or NULL */
    int minor;          /* HTTP/1.<minor>: 0 or 1 */
    struct {
        const char *name, *value;
    } headers[HTTP_MAX_HEADERS];
    size_t n_headers;
    size_t head_len; /* bytes of the buffer the head took (empty lines before it too) */

    /* Framing and connection, as the headers say. */
    int chunked;            /* Transfer-Encoding: chunked */
    int64_t content_length; /* -1: none given */
    int keep_alive;         /* the client allows another request on this connection */
    int expect_continue;    /* Expect: 100-continue */
    const char *host;       /* NULL when absent (HTTP/1.0 only) */

    /* On HTTP_PARSE_ERROR: why, for a 400 answer. */
    char error[160];
} http_head;

enum { HTTP_PARSE_ERROR = -1, HTTP_PARSE_INCOMPLETE = 0, HTTP_PARSE_DONE = 1 };

/* Parse the request head at the start of buf[0..len). Returns
 * HTTP_PARSE_DONE with h filled (buf modified in place: the head's strings
 * are NUL-terminated there), HTTP_PARSE_INCOMPLETE when the head has not
 * ended yet within max_head bytes (read more), or HTTP_PARSE_ERROR with
 * h->error: a malformed request line or header, a head over max_head
 * bytes, a target that is not origin-form, an unsupported version or
 * transfer coding, Content-Length and Transfer-Encoding together,
 * conflicting Content-Length values, or a missing or repeated Host on
 * HTTP/1.1. Never reads past buf[len). */
int http_parse_head(char *buf, size_t len, size_t max_head, http_head *h);

/* A header's value (names compare case-insensitively), or NULL. */
const char *http_head_get(const http_head *h, const char *name);

/* A chunked body being decoded. Zero it to start. */
typedef struct http_chunked {
    int state;
    uint64_t left;   /* bytes of chunk data still to come */
    size_t line;     /* bytes of the current size, extension or trailer line */
    int digits;      /* hex digits of the chunk size, or bytes of a trailer line */
    size_t trailers; /* trailer bytes so far */
    char error[96];  /* on HTTP_PARSE_ERROR */
} http_chunked;

/* Feed in[0..len) to the decoder; *used gets how many bytes it took (it
 * stops right after the body's end) and the chunk data is appended to
 * out[*out_len..max) (out must have room for max bytes). Returns
 * HTTP_PARSE_DONE at the end of the body (trailers read and ignored; a
 * later call takes nothing and returns DONE again),
 * HTTP_PARSE_INCOMPLETE when it needs more, HTTP_PARSE_ERROR with c->error
 * on malformed framing, or HTTP_CHUNKED_TOO_LARGE when the data would pass
 * max. */
#define HTTP_CHUNKED_TOO_LARGE (-2)
int http_chunked_feed(http_chunked *c, const char *in, size_t len, size_t *used, char *out,
                      size_t *out_len, size_t max);

#endif
