/* http_guard.c: who may talk to ctxd from where: Host (DNS rebinding) and Origin (CORS). */
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "http_conn.h"
#include "http_int.h"

/* Request headers a browser may send across origins (preflight answer). */
#define CORS_ALLOWED_HEADERS                                                                       \
    "Authorization, X-Api-Key, Content-Type, Accept, Idempotency-Key, X-Request-Id, "              \
    "Mcp-Session-Id, MCP-Protocol-Version, Mcp-Method, Mcp-Name, Last-Event-ID"
#define CORS_MAX_AGE "600"

/* 1 if the comma-separated list holds item (case-insensitive; "*" matches
 * anything). A port on a list entry is ignored when ignore_port is set. */
static int in_list(const char *list, const char *item, size_t item_len, int ignore_port) {
    for (const char *p = list; *p;) {
        while (*p == ' ' || *p == ',') p++;
        const char *e = p;
        while (*e && *e != ',') e++;
        const char *t = e;
        while (t > p && t[-1] == ' ') t--;
        size_t n = (size_t)(t - p);
        if (ignore_port && n && *p != '[') {
            const char *colon = memchr(p, ':', n);
            if (colon) n = (size_t)(colon - p);
        } else if (ignore_port && n && *p == '[') {
            const char *close = memchr(p, ']', n);
            if (close) n = (size_t)(close - p) + 1;
        }
        if ((n == 1 && *p == '*') || (n == item_len && !strncasecmp(p, item, n))) return 1;
        p = e;
    }
    return 0;
}

/* The name part of a Host value: "[::1]:80" -> "[::1]", "a.b:80" -> "a.b". */
static size_t host_name_len(const char *host) {
    if (host[0] == '[') {
        const char *close = strchr(host, ']');
        return close ? (size_t)(close - host) + 1 : strlen(host);
    }
    return strcspn(host, ":");
}

static int host_allowed(const ctxd_config *cfg, const char *host) {
    size_t n = host_name_len(host);
    char local[sizeof(cfg->listen_host) + 64];
    snprintf(local, sizeof(local), "%s,localhost,127.0.0.1,[::1]", cfg->listen_host);
    return n && (in_list(local, host, n, 1) || in_list(cfg->allowed_hosts, host, n, 1));
}

int http_guard_or_respond(http_req *req, int *status) {
    const ctxd_config *cfg = req->cfg;
    const char *host = http_header(req, "Host");
    if (host && !host_allowed(cfg, host)) {
        *status = http_send_error(req, CTXD_E_HOST_NOT_ALLOWED,
                                  "This ctxd does not answer to the host '%s'; list it in "
                                  "CTXD_ALLOWED_HOSTS to serve it (a foreign Host is how DNS "
                                  "rebinding reaches a local server)",
                                  host);
        return CTXD_ERR;
    }
    const char *origin = http_header(req, "Origin");
    if (!origin) return CTXD_OK;
    if (!in_list(cfg->cors_origins, origin, strlen(origin), 0)) {
        *status = http_send_error(req, CTXD_E_ORIGIN_NOT_ALLOWED,
                                  "Requests from the web origin '%s' are not allowed; list it in "
                                  "CTXD_CORS_ORIGINS to let pages from there call ctxd",
                                  origin);
        return CTXD_ERR;
    }
    req->cors_origin = origin;
    return CTXD_OK;
}

int http_preflight(const http_req *req, const char *allow) {
    if (strcmp(req->method, "OPTIONS") || !req->cors_origin ||
        !http_header(req, "Access-Control-Request-Method"))
        return 0;
    const char *h[] = {"Access-Control-Allow-Methods",
                       allow,
                       "Access-Control-Allow-Headers",
                       CORS_ALLOWED_HEADERS,
                       "Access-Control-Max-Age",
                       CORS_MAX_AGE,
                       NULL};
    http_send(req, 204, "application/json", "", 0, h);
    return 1;
}
