/* http_auth.c: the caller of a request: its key, tenant, scope and request rate. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "http_int.h"

/* Routes anyone may call: probes and scrapes carry no tenant data. */
static int is_open(const char *pattern) {
    return !strcmp(pattern, "/healthz") || !strcmp(pattern, "/readyz") ||
           !strcmp(pattern, "/metrics") ||
           !strcmp(pattern, "/.well-known/oauth-protected-resource/mcp");
}

/* The MCP endpoint: every session needs read; its tools that write check
 * the write scope themselves. */
#define MCP_PATTERN "/mcp"

static int scope_needed(const char *method, const char *pattern) {
    if (!strncmp(pattern, "/admin/", 7)) return AUTH_SCOPE_ADMIN;
    if (!strcmp(pattern, MCP_PATTERN)) return AUTH_SCOPE_READ;
    return !strcmp(method, "GET") || !strcmp(method, "HEAD") ? AUTH_SCOPE_READ : AUTH_SCOPE_WRITE;
}

/* The credential: Authorization: Bearer <x>, else x-api-key: <x>. */
static const char *credential(const http_req *req) {
    const char *a = http_header(req, "Authorization");
    if (a && !strncasecmp(a, "Bearer ", 7)) {
        a += 7;
        while (*a == ' ') a++;
        return a;
    }
    return http_header(req, "x-api-key");
}

/* One limit's item in RateLimit-Policy or RateLimit. */
static void put_item(buf *b, const char *name, int64_t quota, const store_rate *st) {
    if (quota <= 0) return;
    buf_printf(b, "%s\"%s\";", b->len && b->data[b->len - 1] != ' ' ? ", " : "", name);
    if (st)
        buf_printf(b, "r=%" PRId64 ";t=%" PRId64, st->remaining, (st->reset_ms + 999) / 1000);
    else
        buf_printf(b, "q=%" PRId64 ";w=60", quota);
}

/* RateLimit-Policy and RateLimit (draft-ietf-httpapi-ratelimit-headers):
 * the key's quotas, and what is left of each now. */
static void put_ratelimit(char *out, size_t cap, const auth_identity *who, const store_rate *req,
                          const store_rate *tok) {
    buf b;
    buf_init(&b);
    buf_puts(&b, "RateLimit-Policy: ");
    put_item(&b, "requests", who->requests_per_minute, NULL);
    put_item(&b, "tokens", who->tokens_per_minute, NULL);
    buf_puts(&b, "\r\nRateLimit: ");
    put_item(&b, "requests", who->requests_per_minute, req);
    put_item(&b, "tokens", who->tokens_per_minute, tok);
    buf_puts(&b, "\r\n");
    snprintf(out, cap, "%s", b.err ? "" : b.data);
    buf_free(&b);
}

void http_base_url(const http_req *req, char *out, size_t cap) {
    const char *host = http_header(req, "Host");
    char listen[96];
    if (!host || strpbrk(host, "\"\\ /")) { /* none, or one that cannot go in a quoted URL */
        snprintf(listen, sizeof(listen), "%s:%d", req->cfg->listen_host, req->cfg->listen_port);
        host = listen;
    }
    snprintf(out, cap, "%s://%s", req->cfg->tls_cert[0] ? "https" : "http", host);
}

/* 401's WWW-Authenticate: on the MCP endpoint it names the OAuth protected
 * resource metadata (RFC 9728), which MCP clients look for. */
static void challenge(const http_req *req, const char *pattern, char *out, size_t cap) {
    char base[HTTP_BASE_URL_MAX];
    if (strcmp(pattern, MCP_PATTERN)) {
        snprintf(out, cap, "Bearer realm=\"ctxd\"");
        return;
    }
    http_base_url(req, base, sizeof(base));
    snprintf(out, cap,
             "Bearer realm=\"ctxd\", resource_metadata=\"%s/.well-known/"
             "oauth-protected-resource/mcp\"",
             base);
}

int http_auth_or_respond(http_req *req, const char *pattern, int *status) {
    static _Thread_local auth_identity who;
    static _Thread_local char ratelimit[256];
    ctxd_error e;
    store_rate st;
    req->who = &who;
    req->ratelimit = NULL;
    if (is_open(pattern)) {
        auth_open_identity(&who);
        store_set_tenant(req->w->st, who.tenant);
        return CTXD_OK;
    }
    if (!req->cfg->auth) {
        auth_open_identity(&who);
    } else if (auth_check(req->w, credential(req), &who, &e)) {
        char value[HTTP_BASE_URL_MAX + 96];
        challenge(req, pattern, value, sizeof(value));
        const char *h[] = {"WWW-Authenticate", value, NULL};
        *status =
            http_send_error_with(req, e.err, 0, e.err == CTXD_E_UNAUTHORIZED ? h : NULL, e.msg);
        return CTXD_ERR;
    }
    store_set_tenant(req->w->st, who.tenant);
    int need = scope_needed(req->method, pattern);
    if (!(who.scopes & need)) {
        char have[32];
        auth_scopes_format(who.scopes, have, sizeof(have));
        *status =
            http_send_error(req, CTXD_E_FORBIDDEN, "This key may %s; %s %s needs the %s scope",
                            have[0] ? have : "nothing", req->method, pattern,
                            need == AUTH_SCOPE_ADMIN  ? "admin"
                            : need == AUTH_SCOPE_READ ? "read"
                                                      : "write");
        return CTXD_ERR;
    }
    store_rate tok;
    int rc = auth_rate_request(req->w, &who, &st, &e);
    if ((who.requests_per_minute > 0 || who.tokens_per_minute > 0) &&
        (!rc || e.err == CTXD_E_RATE_LIMITED)) { /* not when Redis could not say */
        ctxd_error te; /* what is left of the token budget, for the header only */
        auth_rate_tokens_check(req->w, &who, &tok, &te);
        put_ratelimit(ratelimit, sizeof(ratelimit), &who, &st, &tok);
        req->ratelimit = ratelimit;
    }
    if (rc) {
        *status = http_send_failure(req, &e);
        return CTXD_ERR;
    }
    return CTXD_OK;
}
