/* llm_http.h: HTTP plumbing shared by the model providers (curl stays inside). */
#ifndef CTXD_LLM_HTTP_H
#define CTXD_LLM_HTTP_H

#include <stddef.h>

#include <json-c/json.h>

#include "ctxd/llm.h"

/* Largest upstream body (or streamed reply) we keep: a broken upstream must
 * not be able to exhaust memory. */
#define LLM_HTTP_MAX_BODY (16u * 1024u * 1024u)
/* A stream carries JSON framing around each piece of text: allow more wire
 * bytes for it (the text itself stays under LLM_HTTP_MAX_BODY). */
#define LLM_HTTP_MAX_STREAM (64u * 1024u * 1024u)

/* Backoff between attempts, as the official SDKs do it. */
#define LLM_HTTP_BACKOFF_BASE_MS 500
#define LLM_HTTP_BACKOFF_MAX_MS 8000

/* ---- Server-sent events: an incremental line parser ---- */

/* Called once per complete event. event is "" when the stream named none;
 * data is NUL-terminated (data[len] == 0). Return CTXD_ERR to stop. */
typedef int (*llm_sse_event_fn)(void *arg, const char *event, const char *data, size_t len);

typedef struct llm_sse {
    char *line; /* the unfinished line */
    size_t line_len, line_cap;
    char *data; /* data lines of the current event, "\n"-joined */
    size_t data_len, data_cap;
    int has_data;
    char event[64];
    int after_cr; /* last byte was CR: a following LF belongs to it */
    int bom_checked;
    size_t bom_seen; /* leading bytes of a UTF-8 BOM matched so far */
    llm_sse_event_fn on_event;
    void *arg;
} llm_sse;

void llm_sse_init(llm_sse *p, llm_sse_event_fn fn, void *arg);
/* Forget any partial line or event (for a new attempt); keeps the buffers. */
void llm_sse_reset(llm_sse *p);
/* Feed raw bytes in any split. Returns CTXD_OK, or CTXD_ERR when the event
 * callback asked to stop or memory ran out. A trailing event that was not
 * closed by a blank line is dropped at the end, as the SSE spec says. */
int llm_sse_feed(llm_sse *p, const char *buf, size_t len);
void llm_sse_free(llm_sse *p); /* frees the buffers; accepts NULL */

/* ---- One model call with retries ---- */

typedef struct llm_http llm_http;

/* What a provider plugs into llm_http_run. */
typedef struct llm_http_ops {
    /* Reset the provider's parse state before each attempt. */
    void (*begin)(void *arg);
    /* One SSE event of a 2xx streamed answer. Return CTXD_ERR to stop the
     * transfer, after llm_http_fail (or when llm_http_emit failed). */
    int (*on_event)(void *arg, llm_http *h, const char *event, const char *data, size_t len);
    /* The 2xx answer is complete. body is the whole JSON body for a plain
     * answer, NULL after a streamed one. Fill resp's stop_reason, model and
     * tokens; emit text with llm_http_emit. Return CTXD_OK, or CTXD_ERR after
     * llm_http_fail. */
    int (*finish)(void *arg, llm_http *h, const char *body, size_t len, llm_response *resp);
} llm_http_ops;

typedef struct llm_http_call {
    const char *url;
    const char *const *headers; /* NULL-terminated "Name: value" lines */
    const char *body;           /* JSON request body */
    size_t body_len;
    int stream;         /* asked the upstream for SSE */
    const char *secret; /* the API key, scrubbed from any error text; may be NULL */
    const llm_http_ops *ops;
    void *arg;
} llm_http_call;

/* Create the per-client HTTP state (one reusable curl easy handle, so
 * connections are kept alive between calls). Returns NULL when out of memory.
 * Free with llm_http_free (accepts NULL). */
llm_http *llm_http_new(void);
void llm_http_free(llm_http *h);

/* Run call against cfg's timeouts and retry policy. Returns CTXD_OK with
 * resp->text set (owned by resp), or CTXD_ERR with resp->err, errstr,
 * upstream_status and retry_after_ms. resp->retries counts extra attempts. */
int llm_http_run(llm_http *h, const ctxd_config *cfg, const llm_request *req,
                 const llm_http_call *call, llm_response *resp);

/* Append reply text and pass it to req->on_delta when streaming. Returns
 * CTXD_ERR when on_delta aborted (the call then ends LLM_ERR_ABORTED) or the
 * reply outgrew LLM_HTTP_MAX_BODY. */
int llm_http_emit(llm_http *h, const char *text, size_t len);

/* Record why this attempt failed; retryable says whether another attempt may
 * help (ignored once text reached on_delta). status is the HTTP status. */
void llm_http_fail(llm_http *h, llm_err err, int status, int retryable, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* ---- Helpers shared by the providers, exposed for the unit tests ---- */

/* Parse len bytes of JSON. Returns a new object (json_object_put it) or NULL
 * when it is not one complete JSON value. */
json_object *llm_json_parse(const char *s, size_t len);

/* Copy s into out[cap] (cut if longer); nothing when s is NULL. */
void llm_copy_str(char *out, size_t cap, const char *s);

/* Borrow obj[key] when it is a string, else NULL. */
const char *llm_json_str(json_object *obj, const char *key);

/* obj[key] as a long when it is an integer, else -1. */
long llm_json_long(json_object *obj, const char *key);

/* Pull a type and message out of an upstream error body in any of the
 * shapes providers use: {"error":{"type","message","code"}}, Anthropic's
 * {"type":"error","error":{...}}, {"error":"text"}, {"detail":...},
 * {"message":...}, or plain text. Writes empty strings when there is none.
 * secret (may be NULL) is removed from the full text before it is cut. */
void llm_http_error_info(const char *body, size_t len, const char *secret, char *type,
                         size_t typelen, char *msg, size_t msglen);

/* Decide whether a failed HTTP status is worth another attempt, as the
 * official SDKs do: x-should-retry ("true"/"false", should_retry 1/0, -1 when
 * absent) wins; else 408, 409, 429 and 5xx retry. */
int llm_http_should_retry(int status, int should_retry);

/* Wait before the next attempt, in ms: retry-after-ms, else retry-after
 * (seconds or an HTTP date, now is the current time(NULL)) when it is
 * positive and within cap_ms; else exponential backoff with up to 25%
 * jitter (rnd in [0,1)) for the given retry number (0 = first), never above
 * cap_ms. Header values may be NULL. */
long llm_http_retry_wait_ms(const char *retry_after_ms, const char *retry_after, long now,
                            int retry, double rnd, long cap_ms);

/* Parse a retry-after-ms or retry-after header into ms; -1 when absent or
 * unusable. */
long llm_http_header_ms(const char *retry_after_ms, const char *retry_after, long now);

/* Map a final HTTP status to an llm_err. */
llm_err llm_http_status_err(int status);

/* Replace every occurrence of secret in s (a NUL-terminated buffer of size
 * cap) with "[redacted]". */
void llm_http_scrub(char *s, size_t cap, const char *secret);

/* The API key of the call in progress (borrowed), or NULL. */
const char *llm_http_secret(const llm_http *h);

/* The endpoint URL: base with path appended, skipping a duplicated "/v1"
 * when base already ends with it. Returns CTXD_ERR when it does not fit. */
int llm_http_url(char *out, size_t cap, const char *base, const char *path);

/* Providers, each in its own file. */
int llm_anthropic_complete(llm_http *h, const ctxd_config *cfg, const llm_request *req,
                           llm_response *resp);
int llm_openai_complete(llm_http *h, const ctxd_config *cfg, const llm_request *req,
                        llm_response *resp);

#endif
