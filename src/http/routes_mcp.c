/* routes_mcp.c: the MCP Streamable HTTP transport (POST and DELETE /mcp) and its OAuth resource metadata. */
#include <json-c/json.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "ctxd/json_strict.h"
#include "ctxd/mcp.h"
#include "ctxd/util.h"
#include "http_conn.h"
#include "http_int.h"

#define MAX_JSON_DEPTH 64
#define SESSION_HEADER "Mcp-Session-Id"
#define VERSION_HEADER "MCP-Protocol-Version"
#define META_VERSION "io.modelcontextprotocol/protocolVersion"
#define META_CAPABILITIES "io.modelcontextprotocol/clientCapabilities"
#define BASE64_OPEN "=?base64?"

/* How an answer goes out: one JSON object, or one event of an SSE stream. */
typedef enum { ANSWER_JSON, ANSWER_SSE } answer_form;

/* Send msg (taken) as the body: JSON, or a one-event SSE stream. */
static int send_message(const http_req *req, int status, json_object *msg, answer_form form,
                        const char *const *headers) {
    const char *text = json_object_to_json_string_ext(msg, JSON_C_TO_STRING_PLAIN |
                                                               JSON_C_TO_STRING_NOSLASHESCAPE);
    buf b;
    buf_init(&b);
    if (!text)
        b.err = 1;
    else if (form == ANSWER_SSE)
        buf_printf(&b, "event: message\ndata: %s\n\n", text);
    else
        buf_printf(&b, "%s\n", text);
    json_object_put(msg);
    if (b.err) {
        buf_free(&b);
        return http_send_error(req, CTXD_E_NOMEM, "out of memory");
    }
    http_send(req, status, form == ANSWER_SSE ? "text/event-stream" : "application/json", b.data,
              b.len, headers);
    buf_free(&b);
    return status;
}

/* {"jsonrpc": "2.0", "id": id} (id borrowed; NULL: null). */
static json_object *rpc_envelope(json_object *id) {
    json_object *m = json_object_new_object();
    json_object_object_add(m, "jsonrpc", json_object_new_string("2.0"));
    json_object_object_add(m, "id", json_object_get(id));
    return m;
}

/* A JSON-RPC error answer with HTTP status (200 for a request's own error). */
static int send_rpc_error(const http_req *req, int status, json_object *id, const mcp_error *err,
                          answer_form form) {
    if (err->infra.err != CTXD_E_NONE) return http_send_failure(req, &err->infra);
    json_object *m = rpc_envelope(id), *e = json_object_new_object();
    json_object_object_add(e, "code", json_object_new_int(err->code));
    json_object_object_add(e, "message", json_object_new_string(err->message));
    json_object_object_add(m, "error", e);
    return send_message(req, status, m, form, NULL);
}

/* A refusal of the transport: status and a JSON-RPC error without an id. */
static int refuse(const http_req *req, int status, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int refuse(const http_req *req, int status, int code, const char *fmt, ...) {
    mcp_error err;
    va_list ap;
    err.code = code;
    err.infra.err = CTXD_E_NONE;
    va_start(ap, fmt);
    vsnprintf(err.message, sizeof(err.message), fmt, ap);
    va_end(ap);
    return send_rpc_error(req, status, NULL, &err, ANSWER_JSON);
}

/* 1 if the Accept header lists media type (or a wildcard that covers it). */
static int accepts(const char *accept, const char *type) {
    size_t tl = strlen(type);
    for (const char *p = accept; *p;) {
        while (*p == ' ' || *p == ',') p++;
        size_t n = strcspn(p, ",;");
        while (n && p[n - 1] == ' ') n--;
        if ((n == tl && !strncasecmp(p, type, n)) || (n == 3 && !strncmp(p, "*/*", 3)) ||
            (n > 2 && !strncmp(p + n - 2, "/*", 2) && !strncasecmp(p, type, n - 1)))
            return 1;
        p += strcspn(p, ",");
    }
    return 0;
}

/* JSON when the client takes it (or says nothing), else SSE when it takes
 * that; neither is 406. */
static int answer_form_or_respond(const http_req *req, answer_form *form, int *status) {
    const char *accept = http_header(req, "Accept");
    *form = ANSWER_JSON;
    if (!accept || accepts(accept, "application/json")) return CTXD_OK;
    if (accepts(accept, "text/event-stream")) {
        *form = ANSWER_SSE;
        return CTXD_OK;
    }
    *status = refuse(req, 406, MCP_SERVER_ERROR,
                     "Not Acceptable: the client must accept application/json or "
                     "text/event-stream (got Accept: %s)",
                     accept);
    return CTXD_ERR;
}

/* The body as one JSON value: checked as http_json_body_or_respond checks
 * a body (UTF-8, then the grammar to the letter), but any value may come
 * (an array is a batch) and a refusal is JSON-RPC's -32700. */
static int parse_or_respond(const http_req *req, json_object **out, int *status) {
    const char *body = req->conn->body ? req->conn->body : "";
    size_t len = req->conn->body_len, at;
    const char *why = "the body is empty";
    *out = NULL;
    if (len && !util_utf8_valid(body, len))
        why = "the body is not valid UTF-8";
    else if (len && json_strict_check(body, len, MAX_JSON_DEPTH, &at, &why) == JSON_STRICT_OK) {
        json_tokener *tok = json_tokener_new_ex(MAX_JSON_DEPTH + 1);
        why = tok ? "not JSON" : "out of memory";
        if (tok) {
            json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
            *out = json_tokener_parse_ex(tok, body, (int)len);
            if (json_tokener_get_error(tok) != json_tokener_success) {
                json_object_put(*out);
                *out = NULL;
            }
            json_tokener_free(tok);
        }
        if (*out) return CTXD_OK;
    }
    *status = refuse(req, 400, MCP_PARSE_ERROR, "Parse error: %s", why);
    return CTXD_ERR;
}

/* A JSON-RPC message, taken apart (members borrowed from the body). */
typedef struct rpc_msg {
    json_object *id; /* NULL: a notification */
    const char *method;
    json_object *params;
    int is_response; /* the client answers a request (ctxd sends none) */
} rpc_msg;

#define INVALID_REQUEST                                                                            \
    "Invalid Request: the body must be one JSON-RPC 2.0 message: {\"jsonrpc\": \"2.0\", "          \
    "\"id\": <string or integer>, \"method\": \"...\", \"params\": {...}} (no id for a "           \
    "notification)"

/* Take one message apart: JSON-RPC 2.0 with MCP's rules (ids are strings
 * or integers, params an object). CTXD_ERR when it is no such message. */
static int classify(json_object *msg, rpc_msg *m) {
    json_object *v = NULL, *method = NULL;
    memset(m, 0, sizeof(*m));
    if (!json_object_is_type(msg, json_type_object)) return CTXD_ERR;
    json_object_object_get_ex(msg, "jsonrpc", &v);
    if (!json_object_is_type(v, json_type_string) || strcmp(json_object_get_string(v), "2.0"))
        return CTXD_ERR;
    if (json_object_object_get_ex(msg, "id", &m->id) &&
        !json_object_is_type(m->id, json_type_string) && !json_object_is_type(m->id, json_type_int))
        return CTXD_ERR;
    json_object_object_get_ex(msg, "method", &method);
    json_object_object_get_ex(msg, "params", &m->params);
    if (!method) {
        m->is_response = m->id && (json_object_object_get_ex(msg, "result", NULL) ||
                                   json_object_object_get_ex(msg, "error", NULL));
        return m->is_response ? CTXD_OK : CTXD_ERR;
    }
    if (!json_object_is_type(method, json_type_string) ||
        (m->params && !json_object_is_type(m->params, json_type_object)))
        return CTXD_ERR;
    m->method = json_object_get_string(method);
    return CTXD_OK;
}

static int classify_or_respond(const http_req *req, json_object *body, rpc_msg *m, int *status) {
    if (classify(body, m) == CTXD_OK) return CTXD_OK;
    *status = refuse(req, 400, MCP_INVALID_REQUEST, INVALID_REQUEST);
    return CTXD_ERR;
}

/* The session the request names, and the protocol revision it speaks:
 * 400 without a session header or with a revision this session does not
 * speak, 404 for a session that is not there (ended, expired, another
 * tenant's). */
static int session_or_respond(const http_req *req, store_mcp_session *sess, int *status) {
    const char *sid = http_header(req, SESSION_HEADER), *version = http_header(req, VERSION_HEADER);
    int found = 0;
    ctxd_error e;
    if (!sid) {
        *status = refuse(req, 400, MCP_SERVER_ERROR,
                         "Bad Request: the " SESSION_HEADER " header is required; start a "
                         "session with initialize");
        return CTXD_ERR;
    }
    if (version && !mcp_version_supported(version)) {
        *status = refuse(req, 400, MCP_SERVER_ERROR,
                         "Bad Request: unsupported " VERSION_HEADER " '%s' (ctxd speaks "
                         "2025-11-25, 2025-06-18 and 2025-03-26)",
                         version);
        return CTXD_ERR;
    }
    if (strlen(sid) <= STORE_MCP_SESSION_ID_MAX && util_is_idem_key(sid) &&
        mcp_session_find(req->w, sid, sess, &found, &e)) {
        *status = http_send_failure(req, &e);
        return CTXD_ERR;
    }
    if (!found) {
        *status = refuse(req, 404, MCP_SESSION_NOT_FOUND,
                         "Session not found: it ended or expired; start a new one with "
                         "initialize (without an " SESSION_HEADER " header)");
        return CTXD_ERR;
    }
    if (version && strcmp(version, sess->protocol_version)) {
        *status = refuse(req, 400, MCP_SERVER_ERROR,
                         "Bad Request: " VERSION_HEADER " '%s' is not the version this session "
                         "negotiated (%s)",
                         version, sess->protocol_version);
        return CTXD_ERR;
    }
    return CTXD_OK;
}

/* initialize: a new session, its id in the answer's header. */
static int initialize(const http_req *req, const rpc_msg *m, answer_form form) {
    store_mcp_session sess;
    json_object *result;
    mcp_error err;
    if (mcp_initialize(req->w, req->who, m->params, &sess, &result, &err))
        return send_rpc_error(req, 200, m->id, &err, form);
    json_object *msg = rpc_envelope(m->id);
    json_object_object_add(msg, "result", result);
    const char *h[] = {SESSION_HEADER, sess.id, NULL};
    return send_message(req, 200, msg, form, h);
}

/* ---- The stateless revision (2026-07-28): no session, every request says who it is ---- */

/* A member of params._meta (borrowed), or NULL. */
static json_object *meta_member(const rpc_msg *m, const char *name) {
    json_object *meta = NULL, *v = NULL;
    if (!m->params || !json_object_object_get_ex(m->params, "_meta", &meta)) return NULL;
    json_object_object_get_ex(meta, name, &v);
    return v;
}

/* 1 when the request speaks the stateless revision: it names no session,
 * and its params._meta or its MCP-Protocol-Version header name a version. */
static int is_stateless(const http_req *req, const rpc_msg *m) {
    const char *v = http_header(req, VERSION_HEADER);
    if (m->is_response || http_header(req, SESSION_HEADER)) return 0;
    return meta_member(m, META_VERSION) || (v && !strcmp(v, MCP_PROTOCOL_STATELESS));
}

static int b64_value(int c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
}

/* A header value as the body has it: "=?base64?<data>?=" decoded into out
 * (cap bytes, NUL-terminated), else the value itself. NULL when the
 * encoding is broken or too long. */
static const char *header_value(const char *v, char *out, size_t cap) {
    size_t n = strlen(v), ol = 0, bits = 0;
    unsigned acc = 0;
    if (n < strlen(BASE64_OPEN) + 2 || strncmp(v, BASE64_OPEN, strlen(BASE64_OPEN)) ||
        strcmp(v + n - 2, "?="))
        return v;
    for (const char *p = v + strlen(BASE64_OPEN); p < v + n - 2 && *p != '='; p++) {
        int d = b64_value((unsigned char)*p);
        if (d < 0 || ol + 1 >= cap) return NULL;
        acc = (acc << 6) | (unsigned)d;
        if ((bits += 6) >= 8) out[ol++] = (char)((acc >> (bits -= 8)) & 0xff);
    }
    out[ol] = '\0';
    return strlen(out) == ol ? out : NULL; /* no NUL inside */
}

/* A header the request must carry with the value the body has; 400
 * HeaderMismatch when it does not. */
static int header_matches_or_respond(const http_req *req, const rpc_msg *m, const char *name,
                                     const char *body_value, answer_form form, int *status) {
    const char *h = http_header(req, name);
    char decoded[1024];
    const char *v = h ? header_value(h, decoded, sizeof(decoded)) : NULL;
    if (v && body_value && !strcmp(v, body_value)) return CTXD_OK;
    mcp_error err;
    mcp_error_set(&err, MCP_HEADER_MISMATCH,
                  "Header mismatch: the %s header (%s) must be sent, equal to the body's value "
                  "(%s)",
                  name, h ? h : "missing", body_value ? body_value : "missing");
    *status = send_rpc_error(req, 400, m->id, &err, form);
    return CTXD_ERR;
}

/* UnsupportedProtocolVersionError: 400, with the versions served. */
static int unsupported_version(const http_req *req, const rpc_msg *m, const char *asked,
                               answer_form form) {
    json_object *msg = rpc_envelope(m->id), *e = json_object_new_object(),
                *data = json_object_new_object();
    json_object_object_add(data, "supported", mcp_versions_json());
    json_object_object_add(data, "requested", json_object_new_string(asked));
    json_object_object_add(e, "code", json_object_new_int(MCP_UNSUPPORTED_VERSION));
    json_object_object_add(e, "message", json_object_new_string("Unsupported protocol version"));
    json_object_object_add(e, "data", data);
    json_object_object_add(msg, "error", e);
    return send_message(req, 400, msg, form, NULL);
}

/* The name a request's Mcp-Name header mirrors (params.name or params.uri), or NULL. */
static const char *mirrored_name(const rpc_msg *m, int *needed) {
    json_object *v = NULL;
    const char *field = !strcmp(m->method, "resources/read") ? "uri" : "name";
    *needed = !strcmp(m->method, "tools/call") || !strcmp(m->method, "prompts/get") ||
              !strcmp(m->method, "resources/read");
    if (!*needed || !m->params || !json_object_object_get_ex(m->params, field, &v) ||
        !json_object_is_type(v, json_type_string))
        return NULL;
    return json_object_get_string(v);
}

/* A stateless request (or notification): its headers checked against its
 * body, then answered; a method ctxd does not serve is 404. */
static int stateless(const http_req *req, const rpc_msg *m, answer_form form) {
    json_object *version = meta_member(m, META_VERSION), *caps = meta_member(m, META_CAPABILITIES);
    const char *asked =
        json_object_is_type(version, json_type_string) ? json_object_get_string(version) : NULL;
    int status, needed;
    if (!m->id) /* this revision sets no rules for notifications over HTTP: taken */
        return http_send(req, 202, "text/plain", "", 0, NULL);
    if (header_matches_or_respond(req, m, VERSION_HEADER, asked, form, &status)) return status;
    if (strcmp(asked, MCP_PROTOCOL_STATELESS)) return unsupported_version(req, m, asked, form);
    const char *name = mirrored_name(m, &needed);
    if (header_matches_or_respond(req, m, "Mcp-Method", m->method, form, &status) ||
        (needed && header_matches_or_respond(req, m, "Mcp-Name", name, form, &status)))
        return status;
    mcp_error err;
    json_object *result;
    if (!json_object_is_type(caps, json_type_object)) {
        mcp_error_set(&err, MCP_INVALID_PARAMS,
                      "Invalid params: params._meta needs " META_CAPABILITIES " (an object)");
        return send_rpc_error(req, 200, m->id, &err, form);
    }
    mcp_caller caller = {req->who, MCP_PROTOCOL_STATELESS};
    if (mcp_call(req->w, &caller, m->method, m->params, &result, &err))
        return send_rpc_error(req, err.code == MCP_METHOD_NOT_FOUND ? 404 : 200, m->id, &err, form);
    json_object *msg = rpc_envelope(m->id);
    json_object_object_add(msg, "result", result);
    return send_message(req, 200, msg, form, NULL);
}

/* One request of a session answered: its JSON-RPC response (a result or
 * its own error), or NULL with err->infra set when ctxd itself failed. */
static json_object *session_answer(const http_req *req, const store_mcp_session *sess,
                                   const rpc_msg *m, mcp_error *err) {
    mcp_caller caller = {req->who, sess->protocol_version};
    json_object *result, *msg;
    if (mcp_call(req->w, &caller, m->method, m->params, &result, err)) {
        if (err->infra.err != CTXD_E_NONE) return NULL;
        json_object *e = json_object_new_object();
        json_object_object_add(e, "code", json_object_new_int(err->code));
        json_object_object_add(e, "message", json_object_new_string(err->message));
        msg = rpc_envelope(m->id);
        json_object_object_add(msg, "error", e);
        return msg;
    }
    msg = rpc_envelope(m->id);
    json_object_object_add(msg, "result", result);
    return msg;
}

/* An invalid member of a batch: its error response, without an id. */
static json_object *batch_invalid(const char *why) {
    mcp_error err;
    json_object *msg = rpc_envelope(NULL), *e = json_object_new_object();
    mcp_error_set(&err, MCP_INVALID_REQUEST, "%s", why);
    json_object_object_add(e, "code", json_object_new_int(err.code));
    json_object_object_add(e, "message", json_object_new_string(err.message));
    json_object_object_add(msg, "error", e);
    return msg;
}

/* A batch: only sessions of 2025-03-26, the one revision that had them.
 * The responses to its requests come back as one array (or one SSE event
 * each); a batch of notifications and responses only is 202. */
static int batch(const http_req *req, json_object *body, answer_form form) {
    store_mcp_session sess;
    size_t n = json_object_array_length(body);
    int status;
    if (http_header(req, SESSION_HEADER) && n && session_or_respond(req, &sess, &status))
        return status;
    if (!http_header(req, SESSION_HEADER) || !n || strcmp(sess.protocol_version, "2025-03-26"))
        return refuse(req, 400, MCP_INVALID_REQUEST,
                      "Invalid Request: JSON-RPC batches are served only to sessions of "
                      "2025-03-26 (MCP removed them in 2025-06-18), and never empty; send one "
                      "message per POST");
    json_object *answers = json_object_new_array();
    for (size_t i = 0; i < n; i++) {
        rpc_msg m;
        mcp_error err;
        json_object *a = NULL;
        if (classify(json_object_array_get_idx(body, i), &m))
            a = batch_invalid(INVALID_REQUEST);
        else if (m.method && !strcmp(m.method, "initialize"))
            a = batch_invalid("Invalid Request: initialize may not be part of a batch");
        else if (m.method && m.id && !(a = session_answer(req, &sess, &m, &err))) {
            json_object_put(answers);
            return http_send_failure(req, &err.infra);
        }
        if (a) json_object_array_add(answers, a);
    }
    if (!json_object_array_length(answers)) {
        json_object_put(answers);
        return http_send(req, 202, "text/plain", "", 0, NULL);
    }
    if (form == ANSWER_JSON) return send_message(req, 200, answers, form, NULL);
    buf b; /* SSE: one event per response */
    buf_init(&b);
    for (size_t i = 0; i < json_object_array_length(answers); i++)
        buf_printf(&b, "event: message\ndata: %s\n\n",
                   json_object_to_json_string_ext(json_object_array_get_idx(answers, i),
                                                  JSON_C_TO_STRING_PLAIN |
                                                      JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(answers);
    status = b.err ? http_send_error(req, CTXD_E_NOMEM, "out of memory")
                   : http_send(req, 200, "text/event-stream", b.data, b.len, NULL);
    buf_free(&b);
    return status;
}

/* POST /mcp */
/* A call that changed the list of resources: create_context or
 * delete_context that did not fail. */
static int changes_resource_list(const rpc_msg *m, json_object *answer) {
    json_object *name, *result, *is_error;
    if (!m->method || strcmp(m->method, "tools/call") || !m->params ||
        !json_object_object_get_ex(m->params, "name", &name) ||
        !json_object_is_type(name, json_type_string) ||
        !json_object_object_get_ex(answer, "result", &result) ||
        (json_object_object_get_ex(result, "isError", &is_error) &&
         json_object_get_boolean(is_error)))
        return 0;
    const char *n = json_object_get_string(name);
    return !strcmp(n, "create_context") || !strcmp(n, "delete_context");
}

/* The answer (taken) as an SSE stream after the notification
 * notifications/resources/list_changed, for a client that takes SSE. */
static int send_with_list_changed(const http_req *req, json_object *answer) {
    const char *text = json_object_to_json_string_ext(answer, JSON_C_TO_STRING_PLAIN |
                                                                  JSON_C_TO_STRING_NOSLASHESCAPE);
    buf b;
    buf_init(&b);
    if (text)
        buf_printf(&b,
                   "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":"
                   "\"notifications/resources/list_changed\"}\n\nevent: message\ndata: %s\n\n",
                   text);
    json_object_put(answer);
    if (!text || b.err) {
        buf_free(&b);
        return http_send_error(req, CTXD_E_NOMEM, "out of memory");
    }
    http_send(req, 200, "text/event-stream", b.data, b.len, NULL);
    buf_free(&b);
    return 200;
}

static int post_mcp(const http_req *req) {
    json_object *body = NULL;
    answer_form form;
    store_mcp_session sess;
    rpc_msg m;
    int status;
    if (answer_form_or_respond(req, &form, &status) || parse_or_respond(req, &body, &status))
        return status;
    if (json_object_is_type(body, json_type_array)) {
        status = batch(req, body, form);
        goto cleanup;
    }
    if (classify_or_respond(req, body, &m, &status)) goto cleanup;
    if (m.method && m.id && !strcmp(m.method, "initialize")) {
        status = initialize(req, &m, form);
        goto cleanup;
    }
    if (is_stateless(req, &m)) {
        status = stateless(req, &m, form);
        goto cleanup;
    }
    if (session_or_respond(req, &sess, &status)) goto cleanup;
    if (!m.id || m.is_response) { /* notifications and answers: taken, nothing to say */
        status = http_send(req, 202, "text/plain", "", 0, NULL);
        goto cleanup;
    }
    mcp_error err;
    json_object *answer = session_answer(req, &sess, &m, &err);
    const char *accept = http_header(req, "Accept");
    if (!answer)
        status = http_send_failure(req, &err.infra);
    else if (changes_resource_list(&m, answer) && accept && accepts(accept, "text/event-stream"))
        status = send_with_list_changed(req, answer);
    else
        status = send_message(req, 200, answer, form, NULL);
cleanup:
    json_object_put(body);
    return status;
}

/* DELETE /mcp */
static int delete_mcp(const http_req *req) {
    store_mcp_session sess;
    int status, found;
    ctxd_error e;
    if (session_or_respond(req, &sess, &status)) return status;
    if (mcp_session_end(req->w, sess.id, &found, &e)) return http_send_failure(req, &e);
    buf b;
    buf_init(&b);
    buf_printf(&b, "{\"message\":\"Session '%s' ended\"}", sess.id);
    return http_send_json(req, 200, &b, NULL);
}

/* GET /.well-known/oauth-protected-resource/mcp */
static int protected_resource(const http_req *req) {
    char url[HTTP_BASE_URL_MAX + 8];
    http_base_url(req, url, HTTP_BASE_URL_MAX);
    strcat(url, "/mcp");
    buf b;
    buf_init(&b);
    buf_puts(&b, "{\"resource\":");
    buf_put_json_string(&b, url, strlen(url));
    buf_puts(&b, ",\"resource_name\":\"ctxd\",\"bearer_methods_supported\":[\"header\"],"
                 "\"scopes_supported\":[\"read\",\"write\"],"
                 "\"ctxd_token_issuance\":\"The bearer tokens are ctxd API keys, made by "
                 "an operator with `ctxd keys create --tenant NAME --scopes read,write` or "
                 "POST /admin/keys; there is no OAuth authorization server to ask.\"}");
    return http_send_json(req, 200, &b, NULL);
}

void routes_mcp_register(void) {
    http_route("POST", "/mcp", post_mcp);
    http_route("DELETE", "/mcp", delete_mcp);
    http_route("GET", "/.well-known/oauth-protected-resource/mcp", protected_resource);
}
