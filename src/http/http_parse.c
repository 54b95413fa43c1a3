/* http_parse.c: strict request framing by RFC 9112, with no I/O (fuzzed in tests/fuzz). */
#include "http_parse.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#define MAX_CHUNK_LINE 4096 /* a chunk-size line with its extensions, or a trailer line */
#define MAX_TRAILERS 8192

/* tchar of RFC 9110: what a method or header name is made of. */
static int is_tchar(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* A field value byte: visible, obs-text, space or tab (no CTL, no NUL). */
static int is_field_byte(unsigned char c) { return c == '\t' || (c >= 0x20 && c != 0x7f); }

static int fail(http_head *h, const char *why) {
    snprintf(h->error, sizeof(h->error), "%s", why);
    return HTTP_PARSE_ERROR;
}

/* The end of the line starting at p: the LF, or NULL when none before end.
 * A CR is allowed only right before the LF. */
static char *line_end(char *p, char *end, int *bad_cr) {
    for (char *q = p; q < end; q++) {
        if (*q == '\n') return q;
        if (*q == '\r' && (q + 1 >= end || q[1] != '\n')) {
            if (q + 1 < end) *bad_cr = 1;
            return NULL;
        }
    }
    return NULL;
}

/* Cut the line [p, lf) in place (drop its CR) and return its length. */
static size_t cut_line(char *p, char *lf) {
    char *e = lf;
    if (e > p && e[-1] == '\r') e--;
    *e = '\0';
    return (size_t)(e - p);
}

static int parse_request_line(http_head *h, char *line) {
    char *sp1 = strchr(line, ' '), *sp2;
    if (!sp1 || sp1 == line) return fail(h, "malformed request line");
    *sp1 = '\0';
    for (char *m = line; *m; m++)
        if (!is_tchar((unsigned char)*m)) return fail(h, "malformed request line");
    char *target = sp1 + 1;
    if (!(sp2 = strchr(target, ' ')) || sp2 == target) return fail(h, "malformed request line");
    *sp2 = '\0';
    const char *version = sp2 + 1;
    if (strlen(version) != 8 || strncmp(version, "HTTP/", 5) || version[6] != '.' ||
        version[5] < '0' || version[5] > '9' || version[7] < '0' || version[7] > '9')
        return fail(h, "malformed request line");
    if (version[5] != '1' || (version[7] != '0' && version[7] != '1'))
        return fail(h, "only HTTP/1.0 and HTTP/1.1 are served");
    h->minor = version[7] - '0';
    static const char *const methods[] = {"GET",   "HEAD",    "POST",  "PUT",     "DELETE",
                                          "PATCH", "OPTIONS", "TRACE", "CONNECT", NULL};
    int known = 0;
    for (size_t i = 0; methods[i]; i++) known |= !strcmp(line, methods[i]);
    if (!known) return fail(h, "unknown method");
    h->method = line;
    for (const char *t = target; *t; t++)
        if ((unsigned char)*t <= 0x20 || (unsigned char)*t >= 0x7f || *t == '#')
            return fail(h, "the request target holds a byte that is not allowed there");
    if (target[0] != '/') {
        if (!strcmp(target, "*")) return fail(h, "OPTIONS * is not served; ask about a route");
        return fail(h, "only origin-form request targets (/path?query) are served");
    }
    h->target = target;
    /* Split off the query in a copy-free way: the path ends at '?'. */
    char *q = strchr(target, '?');
    h->path = target;
    h->query = NULL;
    if (q) {
        *q = '\0';
        h->query = q + 1;
    }
    return HTTP_PARSE_DONE;
}

/* The comma-separated tokens of a header value, e.g. Connection. */
static int has_token(const char *value, const char *token) {
    size_t n = strlen(token);
    for (const char *p = value; *p;) {
        while (*p == ' ' || *p == '\t' || *p == ',') p++;
        const char *e = p;
        while (*e && *e != ',') e++;
        const char *t = e;
        while (t > p && (t[-1] == ' ' || t[-1] == '\t')) t--;
        if ((size_t)(t - p) == n && !strncasecmp(p, token, n)) return 1;
        p = e;
    }
    return 0;
}

/* Content-Length: digits, or a list of the same digits; all headers agree. */
static int content_length(http_head *h, const char *value) {
    const char *p = value;
    do {
        while (*p == ' ' || *p == '\t') p++;
        int64_t v = 0;
        int digits = 0;
        while (*p >= '0' && *p <= '9') {
            if (++digits > 15) return fail(h, "Content-Length is too large");
            v = v * 10 + (*p++ - '0');
        }
        while (*p == ' ' || *p == '\t') p++;
        if (!digits || (*p && *p != ',')) return fail(h, "Content-Length is not a number");
        if (h->content_length >= 0 && h->content_length != v)
            return fail(h, "conflicting Content-Length values");
        h->content_length = v;
    } while (*p && *p++ == ',');
    return HTTP_PARSE_DONE;
}

static int header_line(http_head *h, char *line, int *n_host) {
    if (line[0] == ' ' || line[0] == '\t')
        return fail(h, "obsolete line folding in the headers is not accepted");
    char *colon = strchr(line, ':');
    if (!colon || colon == line) return fail(h, "malformed header line");
    for (char *n = line; n < colon; n++)
        if (!is_tchar((unsigned char)*n)) return fail(h, "malformed header name");
    *colon = '\0';
    char *v = colon + 1, *e;
    while (*v == ' ' || *v == '\t') v++;
    for (e = v; *e; e++)
        if (!is_field_byte((unsigned char)*e))
            return fail(h, "a header value holds a control byte");
    while (e > v && (e[-1] == ' ' || e[-1] == '\t')) *--e = '\0';
    if (h->n_headers == HTTP_MAX_HEADERS) return fail(h, "too many header lines");
    h->headers[h->n_headers].name = line;
    h->headers[h->n_headers++].value = v;
    if (!strcasecmp(line, "Content-Length")) return content_length(h, v);
    if (!strcasecmp(line, "Transfer-Encoding")) {
        if (h->chunked || strcasecmp(v, "chunked"))
            return fail(h, "only Transfer-Encoding: chunked is supported");
        h->chunked = 1;
    } else if (!strcasecmp(line, "Host")) {
        ++*n_host;
        h->host = v;
    } else if (!strcasecmp(line, "Connection")) {
        if (has_token(v, "keep-alive") && h->minor == 0) h->keep_alive = 1;
    } else if (!strcasecmp(line, "Expect")) {
        h->expect_continue = !strcasecmp(v, "100-continue");
    }
    return HTTP_PARSE_DONE;
}

int http_parse_head(char *buf, size_t len, size_t max_head, http_head *h) {
    char *p = buf, *end = buf + len;
    int bad_cr = 0, n_host = 0;
    memset(h, 0, sizeof(*h));
    h->content_length = -1;
    /* Empty lines before the request line are skipped (RFC 9112 2.2). */
    while (p < end && (*p == '\n' || (*p == '\r' && p + 1 < end && p[1] == '\n')))
        p += *p == '\r' ? 2 : 1;
    /* The head must end within max_head: find its blank line first. */
    char *q = p, *lf;
    for (;;) {
        if ((lf = line_end(q, end, &bad_cr)) == NULL) {
            if (bad_cr) return fail(h, "a bare CR in the request head");
            return (size_t)(end - buf) > max_head ? fail(h, "the request head is too large")
                                                  : HTTP_PARSE_INCOMPLETE;
        }
        if ((size_t)(lf + 1 - buf) > max_head) return fail(h, "the request head is too large");
        if (lf == q || (lf == q + 1 && *q == '\r')) break; /* the blank line */
        q = lf + 1;
    }
    h->head_len = (size_t)(lf + 1 - buf);
    /* A NUL would end a C string early and hide what follows it. */
    if (memchr(buf, '\0', h->head_len)) return fail(h, "a NUL byte in the request head");
    /* Now cut and read each line. */
    lf = line_end(p, end, &bad_cr);
    cut_line(p, lf);
    if (parse_request_line(h, p) != HTTP_PARSE_DONE) return HTTP_PARSE_ERROR;
    h->keep_alive = h->minor == 1;
    for (p = lf + 1;;) {
        lf = line_end(p, end, &bad_cr);
        if (!cut_line(p, lf)) break;
        if (header_line(h, p, &n_host) != HTTP_PARSE_DONE) return HTTP_PARSE_ERROR;
        p = lf + 1;
    }
    /* A close in any Connection header wins over any keep-alive. */
    for (size_t i = 0; i < h->n_headers; i++)
        if (!strcasecmp(h->headers[i].name, "Connection") &&
            has_token(h->headers[i].value, "close"))
            h->keep_alive = 0;
    if (h->chunked && h->content_length >= 0)
        return fail(h, "Content-Length and Transfer-Encoding together are not accepted");
    if (h->chunked && h->minor == 0) return fail(h, "Transfer-Encoding needs HTTP/1.1");
    if (h->minor == 1 && n_host != 1)
        return fail(h, n_host ? "more than one Host header" : "HTTP/1.1 needs a Host header");
    if (n_host > 1) return fail(h, "more than one Host header");
    return HTTP_PARSE_DONE;
}

const char *http_head_get(const http_head *h, const char *name) {
    for (size_t i = 0; i < h->n_headers; i++)
        if (!strcasecmp(h->headers[i].name, name)) return h->headers[i].value;
    return NULL;
}

/* ---- Chunked bodies ---- */

enum {
    C_SIZE = 0, /* hex digits of a chunk size */
    C_EXT,      /* after the size: extensions up to the line's end */
    C_SIZE_LF,  /* a CR ended the size line: LF must follow */
    C_DATA,     /* chunk data */
    C_DATA_CR,  /* the CRLF after the data */
    C_DATA_LF,
    C_TRAILER,    /* a trailer line, or the final blank line */
    C_TRAILER_LF, /* a CR ended a trailer line */
    C_DONE
};

static int chunk_fail(http_chunked *c, const char *why) {
    snprintf(c->error, sizeof(c->error), "malformed chunked body: %s", why);
    return HTTP_PARSE_ERROR;
}

static int hex_digit(unsigned char ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* The end of a size line: data follows, or the trailers after the last chunk. */
static int size_line_done(http_chunked *c) {
    c->line = 0;
    c->digits = 0;
    c->state = c->left ? C_DATA : C_TRAILER;
    return HTTP_PARSE_INCOMPLETE;
}

/* The end of a trailer line; an empty one ends the body. */
static int trailer_line_done(http_chunked *c) {
    c->line = 0;
    if (!c->digits) {
        c->state = C_DONE;
        return HTTP_PARSE_DONE;
    }
    c->digits = 0;
    c->state = C_TRAILER;
    return HTTP_PARSE_INCOMPLETE;
}

int http_chunked_feed(http_chunked *c, const char *in, size_t len, size_t *used, char *out,
                      size_t *out_len, size_t max) {
    size_t i = 0;
    int rc = c->state == C_DONE ? HTTP_PARSE_DONE : HTTP_PARSE_INCOMPLETE;
    while (i < len && c->state != C_DONE && rc == HTTP_PARSE_INCOMPLETE) {
        unsigned char ch = (unsigned char)in[i];
        if (c->state == C_DATA) {
            size_t n = len - i < c->left ? len - i : (size_t)c->left;
            if (*out_len + n > max) {
                rc = HTTP_CHUNKED_TOO_LARGE;
                break;
            }
            memcpy(out + *out_len, in + i, n);
            *out_len += n;
            c->left -= n;
            i += n;
            if (!c->left) c->state = C_DATA_CR;
            continue;
        }
        i++;
        if (++c->line > MAX_CHUNK_LINE && c->state != C_DATA_CR && c->state != C_DATA_LF) {
            rc = chunk_fail(c, "a size or trailer line is too long");
            break;
        }
        switch (c->state) {
        case C_SIZE: {
            int d = hex_digit(ch);
            if (d >= 0) {
                if (++c->digits > 15) {
                    rc = chunk_fail(c, "a chunk size is too large");
                    break;
                }
                c->left = c->left * 16 + (uint64_t)d;
            } else if (!c->digits) {
                rc = chunk_fail(c, "a chunk size is not a hex number");
            } else if (ch == ';' || ch == ' ' || ch == '\t') {
                c->state = C_EXT;
            } else if (ch == '\r') {
                c->state = C_SIZE_LF;
            } else if (ch == '\n') {
                rc = size_line_done(c);
            } else {
                rc = chunk_fail(c, "a chunk size is not a hex number");
            }
            break;
        }
        case C_EXT:
            if (ch == '\r')
                c->state = C_SIZE_LF;
            else if (ch == '\n')
                rc = size_line_done(c);
            else if (!is_field_byte(ch))
                rc = chunk_fail(c, "a control byte in a chunk extension");
            break;
        case C_SIZE_LF:
            rc = ch == '\n' ? size_line_done(c) : chunk_fail(c, "a bare CR after a chunk size");
            break;
        case C_DATA_CR:
            if (ch == '\r')
                c->state = C_DATA_LF;
            else if (ch == '\n')
                c->state = C_SIZE, c->digits = 0, c->left = 0, c->line = 0;
            else
                rc = chunk_fail(c, "a chunk is longer than its size says");
            break;
        case C_DATA_LF:
            if (ch != '\n') {
                rc = chunk_fail(c, "a chunk is longer than its size says");
                break;
            }
            c->state = C_SIZE, c->digits = 0, c->left = 0, c->line = 0;
            break;
        case C_TRAILER: /* digits: bytes in this trailer line */
            if (ch == '\r') {
                c->state = C_TRAILER_LF;
            } else if (ch == '\n') {
                rc = trailer_line_done(c);
            } else if (!is_field_byte(ch)) {
                rc = chunk_fail(c, "a control byte in the trailers");
            } else {
                c->digits++;
                if (++c->trailers > MAX_TRAILERS) rc = chunk_fail(c, "the trailers are too large");
            }
            break;
        case C_TRAILER_LF:
            rc = ch == '\n' ? trailer_line_done(c) : chunk_fail(c, "a bare CR in the trailers");
            break;
        }
    }
    *used = i;
    return rc;
}
