/* http_int.h: what the HTTP edge's files share: requests, answers, errors, checks, rendering. */
#ifndef CTXD_HTTP_INT_H
#define CTXD_HTTP_INT_H

#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

#include "ctxd/auth.h"
#include "ctxd/buf.h"
#include "ctxd/context.h"
#include "ctxd/error.h"
#include "ctxd/http.h"
#include "ctxd/turn.h"
#include "ctxd/worker.h"

struct http_conn;

/* The API a route speaks, which shapes its errors: ctxd's own, or a
 * provider's for the SDK routes (routes_sdk.c). UNKNOWN: the request is not
 * routed yet; an error answer works it out from the path (http_path_api),
 * so that requests that are fine pay nothing for it. */
typedef enum {
    HTTP_API_UNKNOWN = -1,
    HTTP_API_CTXD = 0,
    HTTP_API_ANTHROPIC,
    HTTP_API_OPENAI
} http_api;

/* What a handler gets besides the connection. All fields are borrowed for
 * the duration of the call. */
typedef struct http_req {
    const char *method;
    const char *path;
    const char *query; /* after '?', or NULL */
    const char *id;    /* the {id} path segment, or NULL */
    ctxd_worker *w;    /* this thread's resources */
    const ctxd_config *cfg;
    struct http_conn *conn;
    const char *request_id;  /* X-Request-Id, echoed in every answer */
    const char *cors_origin; /* an allowed Origin to answer with CORS headers, or NULL */
    auth_identity *who;      /* the caller, once http_auth_or_respond passed */
    const char *ratelimit;   /* RateLimit-Policy and RateLimit header lines, or NULL */
    http_api api;            /* the matched route's, or HTTP_API_UNKNOWN */
} http_req;

/* A handler answers the request itself and returns the HTTP status sent. */
typedef int (*http_handler)(const http_req *req);

/* ---- Routing (http_server.c) ---- */

/* Register a route before the server starts. pattern segments are literal
 * or "{id}". Returns CTXD_ERR when the table is full. */
int http_route(const char *method, const char *pattern, http_handler fn);
/* The same for a route that speaks a provider's API: its errors, auth's
 * included, come in that provider's shape. */
int http_route_api(const char *method, const char *pattern, http_handler fn, http_api api);

/* Route groups, each in its own file; http_server_start registers them. */
void routes_context_register(void);
void routes_turn_register(void);
void routes_health_register(void);
void routes_admin_register(void);
void routes_sdk_register(void);

/* The API of the routes at path (whatever the method): its errors' shape
 * from the first answer on, refusals of the connection's loop included. */
http_api http_path_api(const char *path);
void routes_mcp_register(void);

/* 1 while the process drains (SIGTERM): answers close their connection. */
int http_server_draining(void);

/* ---- Who may ask (http_guard.c) ---- */

/* Check Host (421 unless it names this server: the listen address,
 * localhost, 127.0.0.1, [::1] or CTXD_ALLOWED_HOSTS) and Origin (403 unless
 * in CTXD_CORS_ORIGINS; then req->cors_origin is set so answers carry CORS
 * headers). */
int http_guard_or_respond(http_req *req, int *status);

/* Answer a CORS preflight (OPTIONS with Access-Control-Request-Method from
 * an allowed origin) with the path's real methods in allow. Returns 1 when
 * it answered (204), 0 when req is no preflight. */
int http_preflight(const http_req *req, const char *allow);

/* ---- Who is asking (http_auth.c) ---- */

/* Authenticate req for a route (pattern): the probes are open; /admin/...
 * needs the admin scope, GET and HEAD read, the rest write. Sets req->who
 * (and binds the worker's store to its tenant), takes one request from its
 * rate limit and fills req->ratelimit. Answers 401 (with WWW-Authenticate),
 * 403 or 429 itself. */
int http_auth_or_respond(http_req *req, const char *pattern, int *status);

/* Where the client reached this server: "http[s]://<Host>" (the Host
 * header, checked by http_guard_or_respond, else the listen address),
 * into out (cap bytes, cut when longer). */
#define HTTP_BASE_URL_MAX 320
void http_base_url(const http_req *req, char *out, size_t cap);

/* ---- Answers (http_response.c) ---- */

/* Send a complete answer in one write. headers: NULL or name, value, ...,
 * NULL. Returns status. */
int http_send(const http_req *req, int status, const char *content_type, const char *body,
              size_t len, const char *const *headers);

/* Send b (JSON, a newline added) and free it; an allocation that failed
 * while b was built is answered 503 out_of_memory instead. Returns the
 * status sent. */
int http_send_json(const http_req *req, int status, buf *b, const char *const *headers);

/* Streaming: start a chunked answer, send a chunk, end it. CTXD_ERR when
 * the client is gone. */
int http_stream_start(const http_req *req, int status, const char *content_type,
                      const char *const *headers);
int http_stream_write(const http_req *req, const char *data, size_t len);
int http_stream_end(const http_req *req);

/* A header's value or NULL. */
const char *http_header(const http_req *req, const char *name);

/* ---- Errors (http_error.c: the table; http_response.c: sending) ---- */

/* The reason phrase of an HTTP status. */
const char *http_status_reason(int status);

/* The status and default Retry-After seconds (0: none) of err. */
int http_error_status(ctxd_err err);
int http_error_retry_after(ctxd_err err);

/* The one error body: {"error": msg, "code": "<err's code>"} and, with
 * with_status, "status". CTXD_ERR when out of memory (b->err). */
int http_error_body(buf *b, ctxd_err err, const char *msg, int with_status);
/* The same error as a provider's API answers it (api not HTTP_API_CTXD):
 * Anthropic's {"type":"error","error":{"type","message","code"}} or OpenAI's
 * {"error":{"message","type","param","code"}} (code: ctxd's), and the
 * status that API uses for it (*status; an overloaded upstream is
 * Anthropic's 529, a request the upstream refused a 400). */
int http_error_body_api(buf *b, http_api api, ctxd_err err, const char *msg, int *status);

/* The one writer of error answers: err's status, the error body with msg,
 * Retry-After (retry_after_s, else the table's) and extra headers. */
int http_send_error_with(const http_req *req, ctxd_err err, int retry_after_s,
                         const char *const *headers, const char *msg);

/* Send err's status with the error body (printf-style message) and its
 * Retry-After. Returns the status sent. */
int http_send_error(const http_req *req, ctxd_err err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Send a service failure (its own Retry-After when it has one). */
int http_send_failure(const http_req *req, const ctxd_error *e);

/* ---- Request checks (http_request.c): each sends its 4xx itself and
 * leaves the status in *status; the caller returns it. ---- */

/* Read the body (up to cfg->max_body_bytes) and, if any, check it is JSON:
 * Content-Type, UTF-8, syntax, an object. On success *out is the object or
 * NULL when there was no body, and the caller owns it; *fingerprint (may be
 * NULL) identifies method, path and body for idempotency. */
int http_json_body_or_respond(const http_req *req, json_object **out, uint64_t *fingerprint,
                              int *status);

/* A Content-Type other than JSON, or a body without one, is 415: browsers
 * send text/plain and forms across origins without asking first. */
int http_media_type_or_respond(const http_req *req, int *status);

/* The same for a route that needs a body: none is 400 missing_field with
 * the sentence missing (how to send one). */
int http_required_body_or_respond(const http_req *req, const char *missing, json_object **out,
                                  uint64_t *fingerprint, int *status);

/* The Idempotency-Key header, validated. CTXD_OK with *key NULL when
 * absent. */
int http_idem_key_or_respond(const http_req *req, const char **key, int *status);

/* The {id} segment is a context id (404 context_not_found when not). */
int http_id_or_respond(const http_req *req, int *status);

/* If-Match (RFC 9110 13.1.1) as the store takes it: "" when absent or "*"
 * (any version of a context that exists), else the versions of the strong
 * ETags listed, space-separated ("0", which no context has, when none
 * can match: weak or foreign tags). A malformed header is answered 400
 * bad_http_request. */
#define HTTP_IF_MATCH_MAX 256
int http_if_match_or_respond(const http_req *req, char out[HTTP_IF_MATCH_MAX], int *status);

/* ---- A message's content and metadata (http_blocks.c) ---- */

/* content: text (a JSON string's value, borrowed from the body) or, with
 * json, the JSON text of content blocks (owned); metadata: the JSON text of
 * the client's object (owned), NULL when none. */
typedef struct http_content {
    const char *text;
    size_t len;
    int json;
    char *owned;
    char *metadata;
    size_t metadata_len;
} http_content;

/* v as a message's content: a string, or an array of content blocks in
 * Anthropic's shape (text, image, document, tool_use, tool_result, thinking,
 * redacted_thinking, where role may hold them), kept as given, unknown
 * fields too. where names it in answers ("messages[2].content"). A bad
 * block is answered 400 invalid_field naming its index and field; over
 * max_bytes 413 field_too_large. Free out with http_content_free. */
int http_content_or_respond(const http_req *req, json_object *v, const char *where,
                            const char *role, size_t max_bytes, http_content *out, int *status);

/* msg's optional "metadata": a JSON object of at most 4 KiB, into out. */
int http_metadata_or_respond(const http_req *req, json_object *msg, const char *where,
                             http_content *out, int *status);
void http_content_free(http_content *c);

/* body's optional "tools" (an array of {"name", "description",
 * "input_schema"} objects, Anthropic's shape) and "tool_choice" ({"type":
 * "auto"|"any"|"tool"|"none"}, "tool" with a "name"), as JSON text (owned,
 * NULL when absent). */
int http_tools_or_respond(const http_req *req, json_object *body, char **tools, char **choice,
                          int *status);

/* The ETag of version v: a strong tag, "\"<v>\"". */
void http_etag(int64_t v, char out[32]);

/* Refuse fields other than allowed (NULL-terminated): typos fail loudly. */
int http_only_fields_or_respond(const http_req *req, json_object *obj, const char *const *allowed,
                                int *status);

/* An optional string field of at most max bytes of UTF-8; *out (borrowed
 * from obj) NULL when absent or null. len may be NULL. */
int http_string_field_or_respond(const http_req *req, json_object *obj, const char *name,
                                 size_t max, const char **out, size_t *len, int *status);

/* An optional integer field in [min, max]; *out untouched when absent. */
int http_int_field_or_respond(const http_req *req, json_object *obj, const char *name, int64_t min,
                              int64_t max, int64_t *out, int *status);

/* Query parameters: each must be one of names[n]; found[i] gets the value
 * of names[i] (NULL when absent), held in values[i]. */
#define HTTP_QUERY_VALUE_MAX 96
int http_query_or_respond(const http_req *req, const char *const *names,
                          char values[][HTTP_QUERY_VALUE_MAX], const char **found, size_t n,
                          int *status);

/* A positive integer query value up to max, or 0 when v is NULL. */
int http_query_int_or_respond(const http_req *req, const char *name, const char *v, int64_t max,
                              int64_t *out, int *status);

/* ---- Rendering (http_render.c): JSON answers from service data ---- */

/* A context: settings and summary; with_messages adds messages, state,
 * has_more and next_before. */
void http_render_context(buf *b, const store_context *c, int with_messages);
/* The state object. */
void http_render_state(buf *b, const store_context *c);
/* A page of history: {"context_id","messages","message_count","has_more","next_before"}. */
void http_render_messages(buf *b, const store_context *c);
/* {"contexts": [...], "next_cursor"} with a preview of each newest message. */
void http_render_list(buf *b, const context_page *p);
/* A turn's answer {"context_id","ai_response","usage","model"}. */
void http_render_reply(buf *b, const char *id, const turn_reply *r);
/* An append's answer {"context_id","appended","first_seq"}. */
void http_render_appended(buf *b, const char *id, size_t appended, int64_t first_seq);

#endif
