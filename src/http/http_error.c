/* http_error.c: the one table from domain errors to HTTP status and code, and the error body. */
#include <string.h>

#include "http_int.h"

/* Every error ctxd answers: its status, its stable code, and the
 * Retry-After it gets when the error itself names none (0: no header).
 * docs/openapi.yaml and the README's error table list the same codes. */
static const struct {
    int status;
    const char *code;
    int retry_after_s;
} errors[CTXD_E_COUNT] = {
    [CTXD_E_NONE] = {500, "internal_error", 0},
    [CTXD_E_BAD_HTTP_REQUEST] = {400, "bad_http_request", 0},
    [CTXD_E_INVALID_JSON] = {400, "invalid_json", 0},
    [CTXD_E_INVALID_UTF8] = {400, "invalid_utf8", 0},
    [CTXD_E_MISSING_FIELD] = {400, "missing_field", 0},
    [CTXD_E_INVALID_FIELD] = {400, "invalid_field", 0},
    [CTXD_E_UNKNOWN_FIELD] = {400, "unknown_field", 0},
    [CTXD_E_INVALID_QUERY] = {400, "invalid_query", 0},
    [CTXD_E_INVALID_IDEM_KEY] = {400, "invalid_idempotency_key", 0},
    [CTXD_E_INCOMPLETE_BODY] = {400, "incomplete_body", 0},
    [CTXD_E_BAD_CHUNKED_BODY] = {400, "bad_chunked_body", 0},
    [CTXD_E_UNAUTHORIZED] = {401, "unauthorized", 0},
    [CTXD_E_FORBIDDEN] = {403, "forbidden", 0},
    [CTXD_E_ORIGIN_NOT_ALLOWED] = {403, "origin_not_allowed", 0},
    [CTXD_E_NOT_FOUND] = {404, "context_not_found", 0},
    [CTXD_E_ROUTE_NOT_FOUND] = {404, "route_not_found", 0},
    [CTXD_E_KEY_NOT_FOUND] = {404, "key_not_found", 0},
    [CTXD_E_METHOD_NOT_ALLOWED] = {405, "method_not_allowed", 0},
    [CTXD_E_REQUEST_TIMEOUT] = {408, "request_timeout", 0},
    [CTXD_E_BUSY] = {409, "context_busy", 1},
    [CTXD_E_LOCK_LOST] = {409, "context_busy", 1},
    [CTXD_E_CONFLICT] = {409, "context_busy", 1},
    [CTXD_E_PRECONDITION_FAILED] = {412, "precondition_failed", 0},
    [CTXD_E_BODY_TOO_LARGE] = {413, "body_too_large", 0},
    [CTXD_E_FIELD_TOO_LARGE] = {413, "field_too_large", 0},
    [CTXD_E_STATE_TOO_LARGE] = {413, "state_too_large", 0},
    [CTXD_E_CONTEXT_FULL] = {413, "context_full", 0},
    [CTXD_E_PROMPT_TOO_LARGE] = {413, "prompt_too_large", 0},
    [CTXD_E_UNSUPPORTED_MEDIA_TYPE] = {415, "unsupported_media_type", 0},
    [CTXD_E_HOST_NOT_ALLOWED] = {421, "host_not_allowed", 0},
    [CTXD_E_IDEM_KEY_REUSED] = {422, "idempotency_key_reused", 0},
    [CTXD_E_RATE_LIMITED] = {429, "rate_limited", 1},
    [CTXD_E_UPSTREAM_RATE_LIMITED] = {429, "upstream_rate_limited", 1},
    [CTXD_E_UPSTREAM_AUTH] = {502, "upstream_auth", 0},
    [CTXD_E_UPSTREAM_ERROR] = {502, "upstream_error", 0},
    [CTXD_E_UPSTREAM_REJECTED] = {502, "upstream_rejected", 0},
    [CTXD_E_UPSTREAM_UNREACHABLE] = {502, "upstream_unreachable", 0},
    [CTXD_E_REDIS] = {503, "redis_unavailable", 1},
    [CTXD_E_EXISTS] = {503, "redis_unavailable", 1},
    [CTXD_E_UPSTREAM_OVERLOADED] = {503, "upstream_overloaded", 1},
    [CTXD_E_PROVIDER_UNAVAILABLE] = {503, "provider_unavailable", 1},
    [CTXD_E_SHUTTING_DOWN] = {503, "shutting_down", 1},
    [CTXD_E_TOO_MANY_CONNECTIONS] = {503, "too_many_connections", 1},
    [CTXD_E_NOMEM] = {503, "out_of_memory", 1},
    [CTXD_E_NO_RANDOMNESS] = {503, "no_randomness", 1},
    [CTXD_E_UPSTREAM_TIMEOUT] = {504, "upstream_timeout", 0},
};

static ctxd_err known(ctxd_err err) {
    return (unsigned)err < CTXD_E_COUNT && errors[err].code ? err : CTXD_E_NONE;
}

const char *http_status_reason(int status) {
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Content Too Large";
    case 415: return "Unsupported Media Type";
    case 421: return "Misdirected Request";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 529: return "Overloaded";
    default: return "Unknown";
    }
}

int http_error_status(ctxd_err err) { return errors[known(err)].status; }

int http_error_retry_after(ctxd_err err) { return errors[known(err)].retry_after_s; }

int http_error_body(buf *b, ctxd_err err, const char *msg, int with_status) {
    err = known(err);
    buf_puts(b, "{\"error\":");
    buf_put_json_string(b, msg, strlen(msg));
    buf_puts(b, ",\"code\":");
    buf_put_json_string(b, errors[err].code, strlen(errors[err].code));
    if (with_status) buf_printf(b, ",\"status\":%d", errors[err].status);
    buf_puts(b, "}");
    return b->err ? CTXD_ERR : CTXD_OK;
}

/* Anthropic's error type for a status (its documented ones). */
static const char *anthropic_type(int status) {
    switch (status) {
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 413: return "request_too_large";
    case 429: return "rate_limit_error";
    case 529: return "overloaded_error";
    default: return status < 500 ? "invalid_request_error" : "api_error";
    }
}

/* OpenAI's error type for a status. */
static const char *openai_type(int status) {
    if (status == 401) return "authentication_error";
    if (status == 429) return "rate_limit_error";
    return status < 500 ? "invalid_request_error" : "server_error";
}

int http_error_body_api(buf *b, http_api api, ctxd_err err, const char *msg, int *status) {
    err = known(err);
    *status = errors[err].status;
    if (err == CTXD_E_UPSTREAM_REJECTED) *status = 400; /* the request itself, as sent on */
    if (err == CTXD_E_UPSTREAM_OVERLOADED && api == HTTP_API_ANTHROPIC) *status = 529;
    const char *type = api == HTTP_API_ANTHROPIC ? anthropic_type(*status) : openai_type(*status);
    if (api == HTTP_API_ANTHROPIC) {
        buf_printf(b, "{\"type\":\"error\",\"error\":{\"type\":\"%s\",\"message\":", type);
        buf_put_json_string(b, msg, strlen(msg));
        buf_printf(b, ",\"code\":\"%s\"}}", errors[err].code);
    } else {
        buf_puts(b, "{\"error\":{\"message\":");
        buf_put_json_string(b, msg, strlen(msg));
        buf_printf(b, ",\"type\":\"%s\",\"param\":null,\"code\":\"%s\"}}", type, errors[err].code);
    }
    return b->err ? CTXD_ERR : CTXD_OK;
}
