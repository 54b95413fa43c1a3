/* http_server.c: civetweb setup, per-thread workers, routing, draining and sending answers. */
#define _GNU_SOURCE /* strcasestr */

#include <arpa/inet.h>
#include <stdatomic.h>
#include <civetweb.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ctxd/log.h"
#include "ctxd/metrics.h"
#include "ctxd/util.h"
#include "http_int.h"

#define MAX_ROUTES METRICS_MAX_ROUTES
#define MAX_SEGMENTS 8

typedef struct route {
    const char *method;
    const char *pattern;
    http_handler fn;
} route;

static route routes[MAX_ROUTES];
static int n_routes;
static struct mg_context *server;
static const ctxd_config *server_cfg;
static atomic_int draining;

/* Stop accepting: civetweb has no call for it short of mg_stop, so swap our
 * listening socket for an unbound one (dup2 keeps the descriptor number the
 * server polls). New connections are then refused, and a load balancer
 * retries them elsewhere at once. */
static void close_listener(int port) {
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    if (!d) return;
    while ((e = readdir(d)) != NULL) {
        int fd = atoi(e->d_name), listening = 0;
        socklen_t len = sizeof(listening);
        struct sockaddr_in sa;
        socklen_t salen = sizeof(sa);
        if (fd <= 2 || getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) || !listening ||
            getsockname(fd, (struct sockaddr *)&sa, &salen) || sa.sin_family != AF_INET ||
            ntohs(sa.sin_port) != port)
            continue;
        int idle = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (idle >= 0) {
            dup2(idle, fd);
            close(idle);
        }
    }
    closedir(d);
}

void http_server_drain(void) {
    atomic_store(&draining, 1);
    if (server_cfg) close_listener(server_cfg->listen_port);
}
long http_inflight(void) { return metrics_inflight_now(); }

int http_route(const char *method, const char *pattern, http_handler fn) {
    if (n_routes == MAX_ROUTES) return CTXD_ERR;
    metrics_register_route(n_routes, method, pattern);
    routes[n_routes].method = method;
    routes[n_routes].pattern = pattern;
    routes[n_routes].fn = fn;
    n_routes++;
    return CTXD_OK;
}

/* Match path against pattern; *id gets the {id} segment (copied into idbuf). */
static int match(const char *pattern, const char *path, char *idbuf, size_t idlen,
                 const char **id) {
    const char *p = pattern, *s = path;
    *id = NULL;
    while (*p && *s) {
        if (!strncmp(p, "{id}", 4)) {
            const char *end = strchr(s, '/');
            size_t n = end ? (size_t)(end - s) : strlen(s);
            if (n == 0 || n >= idlen) return 0;
            memcpy(idbuf, s, n);
            idbuf[n] = '\0';
            *id = idbuf;
            s += n;
            p += 4;
            continue;
        }
        if (*p != *s) return 0;
        p++;
        s++;
    }
    return *p == '\0' && *s == '\0';
}

static void common_headers(const http_req *req, const char *content_type,
                           const char *const *headers) {
    struct mg_connection *c = req->conn;
    mg_response_header_add(c, "Content-Type", content_type, -1);
    mg_response_header_add(c, "Cache-Control", "no-store", -1);
    if (req->request_id) mg_response_header_add(c, "X-Request-Id", req->request_id, -1);
    for (size_t i = 0; headers && headers[i] && headers[i + 1]; i += 2)
        mg_response_header_add(c, headers[i], headers[i + 1], -1);
}

static const char *reason(int status) {
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Unknown";
    }
}

/* Whether the client keeps the connection: HTTP/1.1 unless it says close,
 * HTTP/1.0 only if it asks for keep-alive. */
static int client_keeps_alive(const http_req *req) {
    const struct mg_request_info *ri = mg_get_request_info(req->conn);
    const char *c = mg_get_header(req->conn, "Connection");
    if (c && strcasestr(c, "close")) return 0;
    if (ri->http_version && !strcmp(ri->http_version, "1.0"))
        return c && strcasestr(c, "keep-alive");
    return 1;
}

/* A complete answer goes out in one write: status line, headers and body
 * (separate small writes would wait on delayed ACKs). */
int http_send(const http_req *req, int status, const char *content_type, const char *body,
              size_t len, const char *const *headers) {
    buf b;
    buf_init(&b);
    int head = !strcmp(req->method, "HEAD");
    buf_printf(&b,
               "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
               "Cache-Control: no-store\r\nConnection: %s\r\n",
               status, reason(status), content_type, len,
               client_keeps_alive(req) ? "keep-alive" : "close");
    if (req->request_id) buf_printf(&b, "X-Request-Id: %s\r\n", req->request_id);
    for (size_t i = 0; headers && headers[i] && headers[i + 1]; i += 2)
        buf_printf(&b, "%s: %s\r\n", headers[i], headers[i + 1]);
    buf_puts(&b, "\r\n");
    if (!head) buf_putn(&b, body, len);
    if (!b.err) mg_write(req->conn, b.data, b.len);
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

/* Every error answer: the body from the table, Retry-After, extra headers. */
static int send_error_msg(const http_req *req, ctxd_err err, int retry_after_s,
                          const char *const *headers, const char *msg) {
    int status = http_error_status(err);
    char ra[16];
    const char *h[5] = {NULL, NULL, NULL, NULL, NULL};
    size_t n = 0;
    if (retry_after_s <= 0) retry_after_s = http_error_retry_after(err);
    if (retry_after_s > 0) {
        snprintf(ra, sizeof(ra), "%d", retry_after_s);
        h[n++] = "Retry-After";
        h[n++] = ra;
    }
    if (headers && headers[0]) {
        h[n++] = headers[0];
        h[n++] = headers[1];
    }
    buf b;
    buf_init(&b);
    http_error_body(&b, err, msg, 0);
    buf_puts(&b, "\n");
    if (status >= 500) log_msg(LOG_WARN, "%s %s -> %d: %s", req->method, req->path, status, msg);
    if (b.err) {
        buf_free(&b);
        buf_init(&b);
        err = CTXD_E_NOMEM;
        status = http_error_status(err);
        if (http_error_body(&b, err, "out of memory", 0)) { /* not even that: send nothing */
            buf_free(&b);
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
    return send_error_msg(req, err, 0, NULL, msg);
}

int http_send_failure(const http_req *req, const ctxd_error *e) {
    return send_error_msg(req, e->err, e->retry_after_s, NULL, e->msg);
}

/* 405 with the Allow header. */
static int send_not_allowed(const http_req *req, const char *allow) {
    char msg[CTXD_ERRSTR_LEN * 2];
    const char *headers[3] = {"Allow", allow, NULL};
    snprintf(msg, sizeof(msg), "Method %s is not allowed on %s; allowed: %s", req->method,
             req->path, allow);
    return send_error_msg(req, CTXD_E_METHOD_NOT_ALLOWED, 0, headers, msg);
}

int http_stream_start(const http_req *req, int status, const char *content_type,
                      const char *const *headers) {
    mg_response_header_start(req->conn, status);
    common_headers(req, content_type, headers);
    mg_response_header_add(req->conn, "X-Accel-Buffering", "no", -1);
    mg_response_header_add(req->conn, "Transfer-Encoding", "chunked", -1);
    return mg_response_header_send(req->conn) == 0 ? CTXD_OK : CTXD_ERR;
}

int http_stream_write(const http_req *req, const char *data, size_t len) {
    if (len == 0) return CTXD_OK;
    return mg_send_chunk(req->conn, data, (unsigned)len) > 0 ? CTXD_OK : CTXD_ERR;
}

int http_stream_end(const http_req *req) {
    return mg_send_chunk(req->conn, "", 0) >= 0 ? CTXD_OK : CTXD_ERR;
}

/* The one civetweb handler: route, run, log. */
static int dispatch(struct mg_connection *conn, void *cbdata) {
    CTXD_UNUSED(cbdata);
    const struct mg_request_info *ri = mg_get_request_info(conn);
    int64_t t0 = util_mono_us();
    char path[512], idbuf[128], rid[64];
    const char *given_rid = mg_get_header(conn, "X-Request-Id");
    if (given_rid && util_is_idem_key(given_rid) && strlen(given_rid) < sizeof(rid))
        snprintf(rid, sizeof(rid), "%s", given_rid);
    else if (util_token(rid))
        snprintf(rid, sizeof(rid), "none");

    http_req req = {ri->request_method,
                    path,
                    ri->query_string,
                    NULL,
                    mg_get_thread_pointer(conn),
                    server_cfg,
                    conn,
                    rid};
    snprintf(path, sizeof(path), "%s", ri->local_uri ? ri->local_uri : "/");
    size_t pl = strlen(path);
    if (pl > 1 && path[pl - 1] == '/') path[pl - 1] = '\0';

    int status, matched = -1;
    metrics_inflight(1);
    if (!req.w) {
        status =
            http_send_error(&req, CTXD_E_NOMEM, "this worker could not allocate its resources");
        goto done;
    }
    char allow[128] = "";
    for (int i = 0; i < n_routes; i++) {
        const char *id;
        if (!match(routes[i].pattern, path, idbuf, sizeof(idbuf), &id)) continue;
        if (!strcmp(routes[i].method, req.method) ||
            (!strcmp(req.method, "HEAD") && !strcmp(routes[i].method, "GET"))) {
            req.id = id;
            if (atomic_load(&draining) && strcmp(routes[i].pattern, "/healthz") &&
                strcmp(routes[i].pattern, "/metrics")) {
                matched = i;
                status = http_send_error(&req, CTXD_E_SHUTTING_DOWN,
                                         "This ctxd process is shutting down; retry "
                                         "(another process will answer)");
                goto done;
            }
            matched = i;
            status = routes[i].fn(&req);
            goto done;
        }
        if (!strstr(allow, routes[i].method)) {
            if (allow[0]) strncat(allow, ", ", sizeof(allow) - strlen(allow) - 1);
            strncat(allow, routes[i].method, sizeof(allow) - strlen(allow) - 1);
            if (!strcmp(routes[i].method, "GET")) /* HEAD is served wherever GET is */
                strncat(allow, ", HEAD", sizeof(allow) - strlen(allow) - 1);
        }
    }
    if (allow[0]) {
        status = send_not_allowed(&req, allow);
    } else {
        status = http_send_error(&req, CTXD_E_ROUTE_NOT_FOUND,
                                 "No route for %s %s (the API lives under /mcp/context)",
                                 req.method, path);
    }
done:;
    int64_t us = util_mono_us() - t0;
    metrics_inflight(-1);
    metrics_http_request(matched, status, us);
    /* Probes and scrapes come every few seconds: keep them out of info. */
    const char *pattern = matched >= 0 ? routes[matched].pattern : "unmatched";
    int quiet =
        !strcmp(pattern, "/healthz") || !strcmp(pattern, "/readyz") || !strcmp(pattern, "/metrics");
    log_request(quiet && status < 400 ? LOG_DEBUG : LOG_INFO, req.method, path, pattern, status,
                (double)us / 1000.0, rid);
    return status;
}

static void *init_thread(const struct mg_context *ctx, int thread_type) {
    CTXD_UNUSED(ctx);
    if (thread_type != 1) return NULL;
    ctxd_worker *w = worker_new(server_cfg);
    if (!w) log_msg(LOG_ERROR, "worker thread: out of memory");
    return w;
}

static void exit_thread(const struct mg_context *ctx, int thread_type, void *p) {
    CTXD_UNUSED(ctx);
    if (thread_type == 1) worker_free(p);
}

/* Protocol errors civetweb finds before any route runs (a malformed request
 * line, headers too large...): answer them as JSON too, and close. */
static int protocol_error(struct mg_connection *conn, int status, const char *errmsg) {
    char msg[256];
    snprintf(msg, sizeof(msg), "Not a valid HTTP request (HTTP %d: %s)", status,
             errmsg && *errmsg ? errmsg : "bad request");
    buf b;
    buf_init(&b);
    if (http_error_body(&b, CTXD_E_BAD_HTTP_REQUEST, msg, 0) || buf_puts(&b, "\n")) {
        buf_free(&b);
        return 1; /* civetweb's own page */
    }
    mg_printf(conn,
              "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
              "Cache-Control: no-store\r\nConnection: close\r\n\r\n",
              status, reason(status), b.len);
    mg_write(conn, b.data, b.len);
    buf_free(&b);
    log_msg(LOG_INFO, "protocol error %d: %s", status, errmsg ? errmsg : "");
    return 0;
}

static int log_message(const struct mg_connection *conn, const char *message) {
    CTXD_UNUSED(conn);
    log_msg(LOG_DEBUG, "civetweb: %s", message);
    return 1;
}

/* Try binding the address ourselves for a precise error (in use, no
 * permission, not an address of this host). */
static int probe_listen(const ctxd_config *cfg, char *err, size_t errlen) {
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)cfg->listen_port);
    if (inet_pton(AF_INET, cfg->listen_host, &sa.sin_addr) != 1) {
        snprintf(err, errlen, "CTXD_LISTEN=%s:%d: '%s' is not an IPv4 address", cfg->listen_host,
                 cfg->listen_port, cfg->listen_host);
        return CTXD_ERR;
    }
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        snprintf(err, errlen, "cannot create a socket: %s", strerror(errno));
        return CTXD_ERR;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    int rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    int e = errno;
    close(fd);
    if (rc == 0) return CTXD_OK;
    if (e == EADDRINUSE)
        snprintf(err, errlen,
                 "cannot listen on %s:%d: address already in use by another "
                 "process (find it with: ss -ltnp 'sport = :%d'), or set "
                 "CTXD_LISTEN to another port",
                 cfg->listen_host, cfg->listen_port, cfg->listen_port);
    else
        snprintf(err, errlen, "cannot listen on %s:%d: %s", cfg->listen_host, cfg->listen_port,
                 strerror(e));
    return CTXD_ERR;
}

int http_server_start(const ctxd_config *cfg, char *err, size_t errlen) {
    char ports[96], threads[16];
    server_cfg = cfg;
    routes_context_register();
    routes_turn_register();
    routes_health_register();
    if (probe_listen(cfg, err, errlen)) return CTXD_ERR;
    snprintf(ports, sizeof(ports), "%s:%d", cfg->listen_host, cfg->listen_port);
    snprintf(threads, sizeof(threads), "%d", cfg->threads);
    const char *options[] = {"listening_ports",
                             ports,
                             "num_threads",
                             threads,
                             "enable_keep_alive",
                             "yes",
                             "keep_alive_timeout_ms",
                             "2000",
                             "request_timeout_ms",
                             "30000",
                             "linger_timeout_ms",
                             "0",
                             "tcp_nodelay",
                             "1",
                             "listen_backlog",
                             "1024",
                             "connection_queue",
                             "1024",
                             "decode_url",
                             "yes",
                             NULL};
    struct mg_callbacks cb;
    memset(&cb, 0, sizeof(cb));
    cb.init_thread = init_thread;
    cb.exit_thread = exit_thread;
    cb.log_message = log_message;
    cb.http_error = protocol_error;
    mg_init_library(0);
    char text[256] = "";
    unsigned code = 0;
    struct mg_init_data init = {&cb, NULL, options};
    struct mg_error_data ed = {&code, text, sizeof(text)};
    server = mg_start2(&init, &ed);
    if (!server) {
        snprintf(err, errlen, "cannot start the HTTP server on %s: %s", ports,
                 text[0] ? text : "unknown error");
        mg_exit_library();
        return CTXD_ERR;
    }
    mg_set_request_handler(server, "/", dispatch, NULL);
    return CTXD_OK;
}

void http_server_stop(void) {
    if (!server) return;
    mg_stop(server);
    server = NULL;
    mg_exit_library();
}
