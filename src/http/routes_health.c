/* routes_health.c: liveness and readiness probes. */
#include <stdio.h>
#include <stdlib.h>

#include "http_int.h"
#include "ctxd/metrics.h"
#include "ctxd/store.h"
#include "ctxd/version.h"

/* GET /healthz: the process answers; no Redis, no JSON library. */
static int healthz(const http_req *req) {
    static const char body[] = "{\"status\":\"ok\",\"version\":\"" CTXD_VERSION "\"}\n";
    return http_send(req, 200, "application/json", body, sizeof(body) - 1, NULL);
}

/* GET /readyz: Redis answers a PING from this worker's connection. */
static int readyz(const http_req *req) {
    if (store_ping(req->w->st)) return http_send_error(req, CTXD_E_REDIS, "%s", req->w->st->errstr);
    static const char body[] = "{\"status\":\"ready\",\"redis\":\"ok\"}\n";
    return http_send(req, 200, "application/json", body, sizeof(body) - 1, NULL);
}

/* GET /metrics: Prometheus text exposition format 0.0.4. */
static int metrics(const http_req *req) {
    size_t len;
    char *text = metrics_render(&len);
    if (!text) return http_send_error(req, CTXD_E_NOMEM, "out of memory");
    http_send(req, 200, "text/plain; version=0.0.4; charset=utf-8", text, len, NULL);
    free(text);
    return 200;
}

void routes_health_register(void) {
    http_route("GET", "/metrics", metrics);
    http_route("GET", "/healthz", healthz);
    http_route("GET", "/readyz", readyz);
}
