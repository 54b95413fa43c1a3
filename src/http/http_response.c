/* http_response.c: writing answers: whole ones, errors, and streamed (chunked) ones. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "ctxd/log.h"
#include "http_conn.h"
#include "http_int.h"

/* Browsers may read these from a cross-origin answer. */
#define CORS_EXPOSED                                                                               \
    "X-Request-Id, Location, Retry-After, Idempotent-Replayed, RateLimit-Policy, RateLimit, "      \
    "WWW-Authenticate, Mcp-Session-Id"

/* The status line and headers. len < 0: a streamed body (chunked on
 * HTTP/1.1; on HTTP/1.0 the connection's end marks the body's end). */
static void put_head(buf *b, const http_req *req, int status, const char *content_type,
                     long long len, const char *const *headers) {
    http_conn *c = req->conn;
    if (len < 0 && c->head.minor == 0) c->keep_alive = 0;
    buf_printf(b, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n", status, http_status_reason(status),
               content_type);
    if (len >= 0)
        buf_printf(b, "Content-Length: %lld\r\n", len);
    else if (c->head.minor == 1)
        buf_puts(b, "Transfer-Encoding: chunked\r\n");
    if (len < 0) buf_puts(b, "X-Accel-Buffering: no\r\n"); /* proxies: pass each piece on */
    buf_printf(b, "Cache-Control: no-store\r\nConnection: %s\r\n",
               c->keep_alive ? "keep-alive" : "close");
    if (req->request_id) buf_printf(b, "X-Request-Id: %s\r\n", req->request_id);
    if (req->cors_origin)
        buf_printf(b,
                   "Access-Control-Allow-Origin: %s\r\nVary: Origin\r\n"
                   "Access-Control-Expose-Headers: " CORS_EXPOSED "\r\n",
                   req->cors_origin);
    if (req->ratelimit) buf_puts(b, req->ratelimit);
    for (size_t i = 0; headers && headers[i] && headers[i + 1]; i += 2)
        buf_printf(b, "%s: %s\r\n", headers[i], headers[i + 1]);
    buf_puts(b, "\r\n");
}

/* A complete answer goes out in one write: status line, headers and body
 * (separate small writes would wait on delayed ACKs). */
int http_send(const http_req *req, int status, const char *content_type, const char *body,
              size_t len, const char *const *headers) {
    buf b;
    buf_init(&b);
    put_head(&b, req, status, content_type, (long long)len, headers);
    if (strcmp(req->method, "HEAD")) buf_putn(&b, body, len);
    if (b.err || http_conn_send(req->conn, b.data, b.len)) req->conn->keep_alive = 0;
    buf_free(&b);
    return status;
}

int http_send_json(const http_req *req, int status, buf *b, const char *const *headers) {
    buf_puts(b, "\n");
    if (b->err) {
        buf_free(b);
        return http_send_error(req, CTXD_E_NOMEM, "out of memory");
    }
    http_send(req, status, "application/json", b->data, b->len, headers);
    buf_free(b);
    return status;
}

int http_send_error_with(const http_req *req, ctxd_err err, int retry_after_s,
                         const char *const *headers, const char *msg) {
    int status = http_error_status(err);
    char ra[16];
    const char *h[9] = {NULL};
    size_t n = 0;
    if (retry_after_s <= 0) retry_after_s = http_error_retry_after(err);
    if (retry_after_s > 0) {
        snprintf(ra, sizeof(ra), "%d", retry_after_s);
        h[n++] = "Retry-After";
        h[n++] = ra;
    }
    for (size_t i = 0; headers && headers[i] && headers[i + 1] && n + 2 < 9; i += 2) {
        h[n++] = headers[i];
        h[n++] = headers[i + 1];
    }
    buf b;
    buf_init(&b);
    http_api api = req->api == HTTP_API_UNKNOWN ? http_path_api(req->path) : req->api;
    if (api != HTTP_API_CTXD)
        http_error_body_api(&b, api, err, msg, &status);
    else
        http_error_body(&b, err, msg, 0);
    buf_puts(&b, "\n");
    if (status >= 500) log_msg(LOG_WARN, "%s %s -> %d: %s", req->method, req->path, status, msg);
    if (b.err) {
        buf_free(&b);
        buf_init(&b);
        err = CTXD_E_NOMEM;
        status = http_error_status(err);
        if (http_error_body(&b, err, "out of memory", 0)) { /* not even that: close */
            buf_free(&b);
            req->conn->keep_alive = 0;
            return status;
        }
    }
    http_send(req, status, "application/json", b.data, b.len, h);
    buf_free(&b);
    return status;
}

int http_send_error(const http_req *req, ctxd_err err, const char *fmt, ...) {
    char msg[CTXD_ERRSTR_LEN * 2];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return http_send_error_with(req, err, 0, NULL, msg);
}

int http_send_failure(const http_req *req, const ctxd_error *e) {
    return http_send_error_with(req, e->err, e->retry_after_s, NULL, e->msg);
}

int http_stream_start(const http_req *req, int status, const char *content_type,
                      const char *const *headers) {
    buf b;
    buf_init(&b);
    put_head(&b, req, status, content_type, -1, headers);
    int rc = b.err ? CTXD_ERR : http_conn_write(req->conn, b.data, b.len);
    buf_free(&b);
    return rc;
}

int http_stream_write(const http_req *req, const char *data, size_t len) {
    if (len == 0) return CTXD_OK;
    if (req->conn->head.minor == 0) return http_conn_write(req->conn, data, len);
    buf b;
    buf_init(&b);
    buf_printf(&b, "%zx\r\n", len);
    buf_putn(&b, data, len);
    buf_puts(&b, "\r\n");
    int rc = b.err ? CTXD_ERR : http_conn_write(req->conn, b.data, b.len);
    buf_free(&b);
    return rc;
}

int http_stream_end(const http_req *req) {
    if (req->conn->head.minor == 0) return CTXD_OK; /* closing the connection ends it */
    return http_conn_write(req->conn, "0\r\n\r\n", 5);
}
