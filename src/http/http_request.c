/* http_request.c: reading and checking requests: body, JSON, headers, fields, query. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ctxd/json_strict.h"
#include "ctxd/util.h"
#include "http_conn.h"
#include "http_int.h"

#define MAX_JSON_DEPTH 64

const char *http_header(const http_req *req, const char *name) {
    return http_head_get(&req->conn->head, name);
}

/* 1 if the Content-Type is JSON (application/json or application/x+json,
 * any parameters). */
static int is_json_type(const char *ct) {
    if (!ct) return 0;
    while (*ct == ' ') ct++;
    size_t n = strcspn(ct, "; ");
    if (n == 16 && !strncasecmp(ct, "application/json", 16)) return 1;
    return n > 17 && !strncasecmp(ct, "application/", 12) && !strncasecmp(ct + n - 5, "+json", 5);
}

int http_media_type_or_respond(const http_req *req, int *status) {
    const char *ct = http_header(req, "Content-Type");
    if ((!ct && !req->conn->body_len) || is_json_type(ct)) return CTXD_OK;
    *status = http_send_error(req, CTXD_E_UNSUPPORTED_MEDIA_TYPE,
                              "Content-Type must be application/json (got '%s'); with curl add "
                              "-H 'Content-Type: application/json'",
                              ct ? ct : "none");
    return CTXD_ERR;
}

int http_json_body_or_respond(const http_req *req, json_object **out, uint64_t *fingerprint,
                              int *status) {
    const char *body = req->conn->body ? req->conn->body : "";
    size_t len = req->conn->body_len, at;
    const char *why;
    *out = NULL;
    uint64_t fp = util_fnv1a(UTIL_FNV_SEED, req->method, strlen(req->method));
    fp = util_fnv1a(fp, req->path, strlen(req->path) + 1);
    if (fingerprint) *fingerprint = util_fnv1a(fp, body, len);
    if (len == 0) return CTXD_OK;
    if (!util_utf8_valid(body, len)) {
        *status = http_send_error(req, CTXD_E_INVALID_UTF8, "Request body is not valid UTF-8");
        return CTXD_ERR;
    }
    /* json-c alone would take NaN, a raw control byte, or \u0000 (which cuts
     * a string short): check the grammar to the letter first. */
    json_strict_result r = json_strict_check(body, len, MAX_JSON_DEPTH, &at, &why);
    if (r != JSON_STRICT_OK) {
        *status = http_send_error(
            req, r == JSON_STRICT_ENCODING ? CTXD_E_INVALID_UTF8 : CTXD_E_INVALID_JSON,
            "Request body is not valid JSON: %s (at byte %zu)", why, at);
        return CTXD_ERR;
    }
    json_tokener *tok = json_tokener_new_ex(MAX_JSON_DEPTH + 1); /* json-c counts one more */
    if (!tok) {
        *status = http_send_error(req, CTXD_E_NOMEM, "out of memory");
        return CTXD_ERR;
    }
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    json_object *obj = json_tokener_parse_ex(tok, body, (int)len);
    int ok = obj && json_tokener_get_error(tok) == json_tokener_success;
    json_tokener_free(tok);
    if (!ok || !json_object_is_type(obj, json_type_object)) {
        json_object_put(obj);
        *status = http_send_error(req, CTXD_E_INVALID_JSON,
                                  ok ? "Request body must be a JSON object (near byte 0)"
                                     : "Request body is not valid JSON (near byte 0)");
        return CTXD_ERR;
    }
    *out = obj;
    return CTXD_OK;
}

int http_required_body_or_respond(const http_req *req, const char *missing, json_object **out,
                                  uint64_t *fingerprint, int *status) {
    if (http_json_body_or_respond(req, out, fingerprint, status)) return CTXD_ERR;
    if (*out) return CTXD_OK;
    *status = http_send_error(req, CTXD_E_MISSING_FIELD, "%s", missing);
    return CTXD_ERR;
}

int http_idem_key_or_respond(const http_req *req, const char **key, int *status) {
    const char *k = http_header(req, "Idempotency-Key");
    *key = NULL;
    if (!k) return CTXD_OK;
    if (!util_is_idem_key(k)) {
        *status = http_send_error(req, CTXD_E_INVALID_IDEM_KEY,
                                  "Idempotency-Key must be 1 to %d printable ASCII "
                                  "characters without spaces (a UUID is a good choice)",
                                  UTIL_IDEM_KEY_MAX);
        return CTXD_ERR;
    }
    *key = k;
    return CTXD_OK;
}

int http_id_or_respond(const http_req *req, int *status) {
    if (util_is_context_id(req->id)) return CTXD_OK;
    *status = http_send_error(req, CTXD_E_NOT_FOUND,
                              "Context not found: '%s' is not a context id "
                              "(ids look like 1b4e28ba-2fa1-4d2e-8c8f-6d1e3f0c9a27)",
                              req->id);
    return CTXD_ERR;
}

void http_etag(int64_t v, char out[32]) { snprintf(out, 32, "\"%lld\"", (long long)v); }

int http_if_match_or_respond(const http_req *req, char out[HTTP_IF_MATCH_MAX], int *status) {
    const char *h = http_header(req, "If-Match"), *p = h;
    size_t n = 0;
    out[0] = '\0';
    if (!h) return CTXD_OK;
    while (*p == ' ' || *p == '\t') p++;
    if (p[0] == '*' && !p[1 + strspn(p + 1, " \t")]) return CTXD_OK;
    for (;;) { /* 1#entity-tag: [W/] DQUOTE etagc DQUOTE, comma separated */
        while (*p == ' ' || *p == '\t' || *p == ',') p++;
        if (!*p) break;
        int weak = !strncmp(p, "W/", 2);
        if (weak) p += 2;
        const char *close = *p == '"' ? strchr(p + 1, '"') : NULL;
        if (!close) goto bad;
        size_t len = (size_t)(close - p - 1), digits = strspn(p + 1, "0123456789");
        /* Strong comparison: a weak tag never matches, nor one not ours. */
        if (!weak && len && digits == len && len < 20 && n + len + 2 < HTTP_IF_MATCH_MAX)
            n += (size_t)snprintf(out + n, HTTP_IF_MATCH_MAX - n, "%s%.*s", n ? " " : "", (int)len,
                                  p + 1);
        p = close + 1;
        while (*p == ' ' || *p == '\t') p++;
        if (*p && *p != ',') goto bad;
    }
    if (!n) snprintf(out, HTTP_IF_MATCH_MAX, "0");
    return CTXD_OK;
bad:
    *status = http_send_error(req, CTXD_E_BAD_HTTP_REQUEST,
                              "If-Match must be \"*\" or a list of ETags as a read returned "
                              "them, e.g. If-Match: \"7\"");
    return CTXD_ERR;
}

/* Reject fields other than allowed (NULL-terminated): typos fail loudly. */
int http_only_fields_or_respond(const http_req *req, json_object *obj, const char *const *allowed,
                                int *status) {
    json_object_object_foreach(obj, key, val) {
        CTXD_UNUSED(val);
        int ok = 0;
        for (size_t i = 0; allowed[i]; i++)
            if (!strcmp(key, allowed[i])) ok = 1;
        if (!ok) {
            buf names;
            buf_init(&names);
            for (size_t i = 0; allowed[i]; i++)
                buf_printf(&names, "%s%s", i ? ", " : "", allowed[i]);
            *status =
                http_send_error(req, CTXD_E_UNKNOWN_FIELD, "Unknown field '%s'; allowed fields: %s",
                                key, names.data ? names.data : "none");
            buf_free(&names);
            return CTXD_ERR;
        }
    }
    return CTXD_OK;
}

/* An optional integer field in [min, max]. */
int http_int_field_or_respond(const http_req *req, json_object *obj, const char *name, int64_t min,
                              int64_t max, int64_t *out, int *status) {
    json_object *v;
    if (!json_object_object_get_ex(obj, name, &v) || !v) return CTXD_OK;
    int64_t n = json_object_get_int64(v);
    if (!json_object_is_type(v, json_type_int) || n < min || n > max) {
        *status = http_send_error(req, CTXD_E_INVALID_FIELD,
                                  "Field '%s' must be an integer from %" PRId64 " to %" PRId64,
                                  name, min, max);
        return CTXD_ERR;
    }
    *out = n;
    return CTXD_OK;
}

int http_query_or_respond(const http_req *req, const char *const *names,
                          char values[][HTTP_QUERY_VALUE_MAX], const char **found, size_t n,
                          int *status) {
    for (size_t i = 0; i < n; i++) found[i] = NULL;
    if (!req->query || !*req->query) return CTXD_OK;
    char q[512];
    if (strlen(req->query) >= sizeof(q)) goto bad;
    snprintf(q, sizeof(q), "%s", req->query);
    char *save = NULL;
    for (char *p = strtok_r(q, "&", &save); p; p = strtok_r(NULL, "&", &save)) {
        char *eq = strchr(p, '=');
        if (!eq || !eq[1] || strlen(eq + 1) >= HTTP_QUERY_VALUE_MAX) goto bad;
        *eq++ = '\0';
        size_t i = 0;
        while (i < n && strcmp(p, names[i])) i++;
        if (i == n) goto bad;
        snprintf(values[i], HTTP_QUERY_VALUE_MAX, "%s", eq);
        found[i] = values[i];
    }
    return CTXD_OK;
bad : {
    buf b;
    buf_init(&b);
    for (size_t i = 0; i < n; i++) buf_printf(&b, "%s%s=...", i ? ", " : "", names[i]);
    *status = http_send_error(req, CTXD_E_INVALID_QUERY, "Query parameters allowed here: %s",
                              b.data ? b.data : "none");
    buf_free(&b);
    return CTXD_ERR;
}
}

/* A positive integer query value, or 0 when absent. */
int http_query_int_or_respond(const http_req *req, const char *name, const char *v, int64_t max,
                              int64_t *out, int *status) {
    char *end;
    *out = 0;
    if (!v) return CTXD_OK;
    long long n = strtoll(v, &end, 10);
    if (*end || n < 1 || n > max) {
        *status =
            http_send_error(req, CTXD_E_INVALID_QUERY,
                            "Query parameter %s must be an integer from 1 to %" PRId64, name, max);
        return CTXD_ERR;
    }
    *out = n;
    return CTXD_OK;
}

/* An optional string field; *out NULL when absent or null. */
int http_string_field_or_respond(const http_req *req, json_object *obj, const char *name,
                                 size_t max, const char **out, size_t *len, int *status) {
    json_object *v;
    *out = NULL;
    if (len) *len = 0;
    if (!obj || !json_object_object_get_ex(obj, name, &v) || !v) return CTXD_OK;
    if (!json_object_is_type(v, json_type_string)) {
        *status = http_send_error(req, CTXD_E_INVALID_FIELD, "Field '%s' must be a string", name);
        return CTXD_ERR;
    }
    size_t n = (size_t)json_object_get_string_len(v);
    const char *s = json_object_get_string(v);
    if (!util_utf8_valid(s, n)) {
        *status = http_send_error(req, CTXD_E_INVALID_UTF8,
                                  "Field '%s' is not valid UTF-8 (lone surrogate escape?)", name);
        return CTXD_ERR;
    }
    if (n > max) {
        *status = http_send_error(req, CTXD_E_FIELD_TOO_LARGE,
                                  "Field '%s' is %zu bytes; at most %zu are allowed", name, n, max);
        return CTXD_ERR;
    }
    *out = s;
    if (len) *len = n;
    return CTXD_OK;
}
