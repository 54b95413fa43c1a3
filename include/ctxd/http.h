/* http: the civetweb server, the router, and helpers for route files. */
#ifndef CTXD_HTTP_H
#define CTXD_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

#include "ctxd/common.h"
#include "ctxd/config.h"
#include "ctxd/worker.h"

struct mg_connection;

/* What a handler gets besides the connection. All fields are borrowed for
 * the duration of the call. */
typedef struct http_req {
    const char *method;
    const char *path;
    const char *query; /* after '?', or NULL */
    const char *id;    /* the {id} path segment, or NULL */
    ctxd_worker *w;    /* this thread's resources */
    const ctxd_config *cfg;
    struct mg_connection *conn;
    const char *request_id; /* X-Request-Id, echoed in every answer */
} http_req;

/* A handler answers the request itself and returns the HTTP status sent. */
typedef int (*http_handler)(const http_req *req);

/* Register a route before http_server_start. pattern segments are literal or
 * "{id}". Returns CTXD_ERR when the table is full. */
int http_route(const char *method, const char *pattern, http_handler fn);

/* Start listening on cfg's address with cfg->threads workers. CTXD_ERR with
 * a one-line message in err (address in use, permission...). */
int http_server_start(const ctxd_config *cfg, char *err, size_t errlen);

/* Begin draining: /readyz answers 503 so load balancers move away, and new
 * requests (probes aside) get 503 shutting_down; requests already running go
 * on. http_inflight counts the requests being handled. */
void http_server_drain(void);
long http_inflight(void);

/* Stop the server and wait for its threads. */
void http_server_stop(void);

/* Send a complete answer. headers: NULL or name, value, ..., NULL. */
int http_send(const http_req *req, int status, const char *content_type, const char *body,
              size_t len, const char *const *headers);

/* Send {"error": "...", "code": "..."}; retry_after_s > 0 adds Retry-After. */
int http_send_error(const http_req *req, int status, const char *code, int retry_after_s,
                    const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* Read the body (up to cfg->max_body_bytes) and, if any, check it is JSON:
 * Content-Type, UTF-8, syntax, an object. On success *out is the object or
 * NULL when there was no body, and the caller owns it. On failure the error
 * was sent and *status holds its status: return it. */
int http_json_body_or_respond(const http_req *req, json_object **out, uint64_t *fingerprint,
                              int *status);

/* The Idempotency-Key header, validated. Returns CTXD_OK with *key NULL when
 * absent; CTXD_ERR after sending 400 (status in *status). */
int http_idem_key_or_respond(const http_req *req, const char **key, int *status);

/* A header's value or NULL. */
const char *http_header(const http_req *req, const char *name);

/* Streaming: start a chunked answer, send a chunk, end it. */
int http_stream_start(const http_req *req, int status, const char *content_type,
                      const char *const *headers);
int http_stream_write(const http_req *req, const char *data, size_t len);
int http_stream_end(const http_req *req);

/* Route groups. */
void routes_context_register(void);
void routes_health_register(void);

#endif
