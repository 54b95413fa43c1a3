/* http_server.c: the worker pool, routing, and the server's life (start, drain, stop). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "ctxd/log.h"
#include "ctxd/metrics.h"
#include "ctxd/util.h"
#include "http_conn.h"
#include "http_int.h"
#include "http_tls.h"

#define MAX_ROUTES METRICS_MAX_ROUTES
#define MAX_PATH 512

typedef struct route {
    const char *method;
    const char *pattern;
    http_handler fn;
    http_api api;
} route;

static route routes[MAX_ROUTES];
static int n_routes;
static const ctxd_config *server_cfg;
static atomic_int draining;

/* Complete requests waiting for a worker (FIFO). */
static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    http_conn *head, *tail;
    int stop;
    pthread_t *threads;
    int n_threads;
} queue = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

int http_server_draining(void) { return atomic_load(&draining); }

void http_server_drain(void) {
    atomic_store(&draining, 1);
    http_conn_stop_accepting();
}

long http_inflight(void) { return metrics_inflight_now(); }

int http_route_api(const char *method, const char *pattern, http_handler fn, http_api api) {
    if (n_routes == MAX_ROUTES) return CTXD_ERR;
    metrics_register_route(n_routes, method, pattern);
    routes[n_routes].method = method;
    routes[n_routes].pattern = pattern;
    routes[n_routes].fn = fn;
    routes[n_routes].api = api;
    n_routes++;
    return CTXD_OK;
}

int http_route(const char *method, const char *pattern, http_handler fn) {
    return http_route_api(method, pattern, fn, HTTP_API_CTXD);
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

http_api http_path_api(const char *path) {
    char idbuf[128];
    const char *id;
    for (int i = 0; path && i < n_routes; i++)
        if (match(routes[i].pattern, path, idbuf, sizeof(idbuf), &id)) return routes[i].api;
    return HTTP_API_CTXD;
}

/* Add method to the Allow list (HEAD goes with GET). */
static void allow_add(char *allow, size_t cap, const char *method) {
    if (strstr(allow, method)) return;
    if (allow[0]) strncat(allow, ", ", cap - strlen(allow) - 1);
    strncat(allow, method, cap - strlen(allow) - 1);
    if (!strcmp(method, "GET")) strncat(allow, ", HEAD", cap - strlen(allow) - 1);
}

/* Route req and run its handler; returns the status sent, *matched the
 * route's index (-1: none). */
static int route_request(http_req *req, char *idbuf, size_t idlen, int *matched) {
    char allow[128] = "";
    int status;
    for (int i = 0; i < n_routes; i++) {
        const char *id;
        if (!match(routes[i].pattern, req->path, idbuf, idlen, &id)) continue;
        if (strcmp(routes[i].method, req->method) &&
            (strcmp(req->method, "HEAD") || strcmp(routes[i].method, "GET"))) {
            allow_add(allow, sizeof(allow), routes[i].method);
            continue;
        }
        req->id = id;
        req->api = routes[i].api;
        *matched = i;
        if (atomic_load(&draining) && strcmp(routes[i].pattern, "/healthz") &&
            strcmp(routes[i].pattern, "/metrics"))
            return http_send_error(req, CTXD_E_SHUTTING_DOWN,
                                   "This ctxd process is shutting down; retry "
                                   "(another process will answer)");
        if (http_auth_or_respond(req, routes[i].pattern, &status) ||
            http_media_type_or_respond(req, &status))
            return status;
        return routes[i].fn(req);
    }
    if (allow[0] && http_preflight(req, allow)) return 204;
    if (allow[0]) {
        char msg[CTXD_ERRSTR_LEN * 2];
        const char *h[] = {"Allow", allow, NULL};
        snprintf(msg, sizeof(msg), "Method %s is not allowed on %s; allowed: %s", req->method,
                 req->path, allow);
        return http_send_error_with(req, CTXD_E_METHOD_NOT_ALLOWED, 0, h, msg);
    }
    return http_send_error(req, CTXD_E_ROUTE_NOT_FOUND,
                           "No route for %s %s (the API lives under /mcp/context)", req->method,
                           req->path);
}

/* Serve one complete request on a worker thread. */
static void serve(http_conn *c, ctxd_worker *w) {
    const http_head *h = &c->head;
    char path[MAX_PATH], idbuf[128], rid[64];
    const char *given_rid = http_head_get(h, "X-Request-Id");
    if (given_rid && util_is_idem_key(given_rid) && strlen(given_rid) < sizeof(rid))
        snprintf(rid, sizeof(rid), "%s", given_rid);
    else if (util_token(rid))
        snprintf(rid, sizeof(rid), "none");
    /* The raw path, never decoded: "%2F" or "%2e%2e" is no separator. */
    snprintf(path, sizeof(path), "%s", strlen(h->path) < sizeof(path) ? h->path : "/");
    size_t pl = strlen(path);
    if (pl > 1 && path[pl - 1] == '/') path[pl - 1] = '\0';
    http_req req = {h->method, path, h->query, NULL, w,    server_cfg,
                    c,         rid,  NULL,     NULL, NULL, HTTP_API_UNKNOWN};

    int status, matched = -1;
    if (strlen(h->path) >= sizeof(path))
        status = http_send_error(&req, CTXD_E_ROUTE_NOT_FOUND, "No route for a path that long");
    else if (!w)
        status =
            http_send_error(&req, CTXD_E_NOMEM, "this worker could not allocate its resources");
    else if (http_guard_or_respond(&req, &status) == CTXD_OK)
        status = route_request(&req, idbuf, sizeof(idbuf), &matched);

    int64_t us = util_mono_us() - c->started_us;
    metrics_http_request(matched, status, us);
    /* Probes and scrapes come every few seconds: keep them out of info. */
    const char *pattern = matched >= 0 ? routes[matched].pattern : "unmatched";
    int quiet =
        !strcmp(pattern, "/healthz") || !strcmp(pattern, "/readyz") || !strcmp(pattern, "/metrics");
    log_request(quiet && status < 400 ? LOG_DEBUG : LOG_INFO, req.method, path, pattern, status,
                (double)us / 1000.0, rid);
}

static void enqueue(http_conn *c) {
    pthread_mutex_lock(&queue.mu);
    c->qnext = NULL;
    if (queue.tail)
        queue.tail->qnext = c;
    else
        queue.head = c;
    queue.tail = c;
    pthread_cond_signal(&queue.cv);
    pthread_mutex_unlock(&queue.mu);
}

static http_conn *dequeue(void) {
    pthread_mutex_lock(&queue.mu);
    while (!queue.head && !queue.stop) pthread_cond_wait(&queue.cv, &queue.mu);
    http_conn *c = queue.head;
    if (c) {
        queue.head = c->qnext;
        if (!queue.head) queue.tail = NULL;
    }
    pthread_mutex_unlock(&queue.mu);
    return c;
}

/* A worker: its own Redis connection and model client, then requests. */
static void *worker_main(void *arg) {
    CTXD_UNUSED(arg);
    ctxd_worker *w = worker_new(server_cfg);
    if (!w) log_msg(LOG_ERROR, "worker thread: out of memory");
    http_conn *c;
    while ((c = dequeue()) != NULL) {
        serve(c, w);
        http_conn_release(c);
    }
    worker_free(w);
    return NULL;
}

/* Every connection is a descriptor: allow as many as the hard limit. */
static void raise_fd_limit(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int http_server_start(const ctxd_config *cfg, char *err, size_t errlen) {
    server_cfg = cfg;
    if (http_tls_start(cfg, err, errlen)) return CTXD_ERR;
    routes_context_register();
    routes_turn_register();
    routes_health_register();
    routes_admin_register();
    routes_sdk_register();
    routes_mcp_register();
    raise_fd_limit();
    queue.threads = calloc((size_t)cfg->threads, sizeof(*queue.threads));
    if (!queue.threads) {
        snprintf(err, errlen, "out of memory for %d worker threads", cfg->threads);
        http_server_stop();
        return CTXD_ERR;
    }
    for (; queue.n_threads < cfg->threads; queue.n_threads++) {
        if (pthread_create(&queue.threads[queue.n_threads], NULL, worker_main, NULL)) {
            snprintf(err, errlen, "cannot start worker thread %d of %d (CTXD_THREADS)",
                     queue.n_threads + 1, cfg->threads);
            http_server_stop();
            return CTXD_ERR;
        }
    }
    if (http_conn_start(cfg, enqueue, err, errlen)) {
        http_server_stop();
        return CTXD_ERR;
    }
    return CTXD_OK;
}

void http_server_stop(void) {
    http_conn_stop();
    pthread_mutex_lock(&queue.mu);
    queue.stop = 1;
    pthread_cond_broadcast(&queue.cv);
    pthread_mutex_unlock(&queue.mu);
    for (int i = 0; i < queue.n_threads; i++) pthread_join(queue.threads[i], NULL);
    free(queue.threads);
    queue.threads = NULL;
    queue.n_threads = 0;
    http_tls_stop(); /* after the workers: none holds a TLS session now */
}
