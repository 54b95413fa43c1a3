/* llm_http.h: private to src/llm: the HTTP plumbing the providers share (curl stays in the .c). */
#ifndef CTXD_LLM_HTTP_H
#define CTXD_LLM_HTTP_H

#include <stddef.h>

#include <json-c/json.h>

#include "ctxd/buf.h"
#include "ctxd/llm.h"
#include "llm_provider.h"

/* Largest upstream body (or streamed reply) we keep: a broken upstream must
 * not be able to exhaust memory. */
#define LLM_HTTP_MAX_BODY (16u * 1024u * 1024u)
/* A stream carries JSON framing around each piece of text: allow more wire
 * bytes for it (the text itself stays under LLM_HTTP_MAX_BODY). */
#define LLM_HTTP_MAX_STREAM (64u * 1024u * 1024u)

/* Backoff between attempts, as the official SDKs do it. */
#define LLM_HTTP_BACKOFF_BASE_MS 500
#define LLM_HTTP_BACKOFF_MAX_MS 8000

/* Append s[0..n) to b unless b would then hold more than max bytes. Returns
 * CTXD_OK, or CTXD_ERR when over max or out of memory (b->err set). */
static inline int llm_buf_put(buf *b, const char *s, size_t n, size_t max) {
    return b->len + n > max ? CTXD_ERR : buf_putn(b, s, n);
}

/* Empty b for reuse: keeps its memory, forgets an earlier failure. */
static inline void llm_buf_clear(buf *b) {
    b->len = 0;
    b->err = 0;
    if (b->data) b->data[0] = '\0';
}

/* ---- Server-sent events: an incremental line parser (llm_sse.c) ---- */

/* Called once per complete event. event is "" when the stream named none;
 * data is NUL-terminated (data[len] == 0) and lent for the call only.
 * Return CTXD_ERR to stop. */
typedef int (*llm_sse_event_fn)(void *arg, const char *event, const char *data, size_t len);

typedef struct llm_sse {
    buf line; /* the unfinished line */
    buf data; /* data lines of the current event, "\n"-joined */
    int has_data;
    char event[64];
    int after_cr; /* last byte was CR: a following LF belongs to it */
    int bom_checked;
    size_t bom_seen; /* leading bytes of a UTF-8 BOM matched so far */
    llm_sse_event_fn on_event;
    void *arg;
} llm_sse;

/* Set p up empty, to call fn(arg, ...) per event. Allocates nothing; the
 * buffers grow on first use and are freed by llm_sse_free. */
void llm_sse_init(llm_sse *p, llm_sse_event_fn fn, void *arg);
/* Forget any partial line or event (for a new attempt); keeps the buffers. */
void llm_sse_reset(llm_sse *p);
/* Feed raw bytes in any split. Returns CTXD_OK, or CTXD_ERR when the event
 * callback asked to stop, a line or event outgrew LLM_HTTP_MAX_BODY, or
 * memory ran out. A trailing event that was not closed by a blank line is
 * dropped at the end, as the SSE spec says. */
int llm_sse_feed(llm_sse *p, const char *bytes, size_t len);
/* Free the buffers (p itself is the caller's); accepts NULL. */
void llm_sse_free(llm_sse *p);

/* ---- One model call with retries (llm_http.c) ---- */

/* Stands in llm_http_call.headers where the key header goes: the ops'
 * key_header followed by the call's secret, or nothing when that is NULL. */
#define LLM_HTTP_KEY_SLOT "{api key}"

/* A provider as its calls see it: where it posts, and how it reads answers. */
typedef struct llm_http_ops {
    const char *path;        /* the endpoint, appended to the base URL by llm_http_url */
    const char *url_setting; /* where the base URL is set, named when it is too long */
    const char *key_header;  /* "Name: " of the header at LLM_HTTP_KEY_SLOT */
    /* Reset the provider's parse state before each attempt. */
    void (*begin)(void *arg);
    /* One SSE event of a 2xx streamed answer. Return CTXD_ERR to stop the
     * transfer, after llm_http_fail (or when llm_http_emit_str failed). */
    int (*on_event)(void *arg, llm_http *h, const char *event, const char *data, size_t len);
    /* The 2xx answer is complete. body is the whole JSON body for a plain
     * answer, NULL after a streamed one. Fill resp's stop_reason, model and
     * tokens; emit text with llm_http_emit_str. Return CTXD_OK, or CTXD_ERR
     * after llm_http_fail. */
    int (*finish)(void *arg, llm_http *h, const char *body, size_t len, llm_response *resp);
} llm_http_ops;

/* One call; the caller's pointers are borrowed for the length of the call. */
typedef struct llm_http_call {
    const char *base_url;       /* the configured upstream, e.g. cfg->openai_url */
    const char *const *headers; /* NULL-terminated "Name: value" lines */
    const char *secret;         /* the API key, scrubbed from any error text; may be NULL */
    const llm_http_ops *ops;
    void *arg;
    /* Filled by llm_http_post: */
    const char *url;
    const char *body; /* JSON request body */
    size_t body_len;
    int stream; /* asked the upstream for SSE */
} llm_http_call;

/* Create the per-client HTTP state (one reusable curl easy handle, so
 * connections are kept alive between calls). Returns NULL when out of memory.
 * The caller frees it with llm_http_free. */
llm_http *llm_http_new(void);
/* Free h and its curl handle; accepts NULL. */
void llm_http_free(llm_http *h);

/* POST body (taken: freed here, whatever happens) to call's base_url and
 * ops->path, streaming when req->on_delta is set, with cfg's timeouts and retry
 * policy. Returns CTXD_OK with resp->text set, or CTXD_ERR with resp->err,
 * errstr, upstream_status and retry_after_ms (LLM_ERR_CONFIG when the URL is
 * too long; a NULL body reads as out of memory).
 * resp->retries counts extra attempts; resp's contents are the caller's to
 * free with llm_response_free either way. */
int llm_http_post(llm_http *h, const ctxd_config *cfg, const llm_request *req, llm_http_call *call,
                  json_object *body, llm_response *resp);

/* Emit obj[key] as reply text when it is a string: append it to the reply
 * and pass it to req->on_delta when streaming. Returns CTXD_OK (also when
 * there is no such string), or CTXD_ERR after failing the attempt when
 * on_delta aborted (the call then ends LLM_ERR_ABORTED) or the reply outgrew
 * LLM_HTTP_MAX_BODY. */
int llm_http_emit_str(llm_http *h, json_object *obj, const char *key);
/* Pass a finished block that is not text to req->on_block when streaming. */
int llm_http_emit_block(llm_http *h, json_object *block);

/* Record why this attempt failed; retryable says whether another attempt may
 * help (ignored once text reached on_delta). status is the HTTP status. The
 * message is cut to fit, with the call's key removed first. Never fails. */
void llm_http_fail(llm_http *h, llm_err err, int status, int retryable, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Parse one streamed event's data, which must be a JSON object. Returns a
 * new object (the caller json_object_puts it), or NULL after failing the
 * attempt with "the upstream sent a stream <what> that is not JSON". */
json_object *llm_http_event_json(llm_http *h, const char *data, size_t len, const char *what);

/* The API key of the call in progress (borrowed), or NULL. */
const char *llm_http_secret(const llm_http *h);

/* ---- JSON the providers share (llm_json.c) ---- */

/* Parse len bytes of JSON. Returns a new object (the caller json_object_puts
 * it), or NULL when it is not one complete JSON value or memory ran out. */
json_object *llm_json_parse(const char *s, size_t len);

/* Borrow obj[key] when it is a string (it lives as long as obj), else NULL;
 * obj may be NULL. */
const char *llm_json_str(json_object *obj, const char *key);

/* Copy s into out[cap] (cut if longer); nothing when s is NULL. */
void llm_copy_str(char *out, size_t cap, const char *s);

/* A new request body holding "model" and max_tokens_key (the request's, else
 * cfg's defaults). Returns it (the caller json_object_puts it), or NULL when
 * out of memory. */
json_object *llm_json_body_new(const ctxd_config *cfg, const llm_request *req,
                               const char *max_tokens_key);

/* Add req's messages to body as "messages" (system first, as a message,
 * when given: OpenAI's way). Content blocks go as they are for Anthropic
 * (openai 0), translated for OpenAI (openai 1: llm_blocks.c). CTXD_ERR when
 * out of memory or a block cannot be read. */
int llm_json_add_messages(json_object *body, const llm_request *req, const char *system,
                          int openai);

/* body[key] = the JSON value json (text); nothing when json is NULL.
 * CTXD_ERR when it is not JSON or memory ran out. */
int llm_json_add_raw(json_object *body, const char *key, const char *json);
/* Add req->extra_json's fields to body for an upstream of one API (openai 1:
 * Chat Completions, 0: Messages): all of them when the client wrote them
 * for that API, else those with a counterpart there (temperature, top_p,
 * stop_sequences/stop, metadata.user_id/user). Fields body already has are
 * kept. CTXD_ERR when out of memory or extra_json is no object. */
int llm_json_add_extra(json_object *body, const llm_request *req, int openai);

/* Keep the blocks of a reply in resp->content_json when any is not text. */
int llm_json_keep_blocks(llm_response *resp, json_object *content);

/* Append {"role": role, "content": text} to msgs. */
int llm_json_add_text(json_object *msgs, const char *role, const char *content, size_t len);

/* A message whose content is blocks (m->content_json), appended to msgs:
 * as they are (Anthropic), or translated (OpenAI: text and image parts,
 * tool_use as the assistant's tool_calls, each tool_result as a "tool"
 * message; thinking blocks, which OpenAI takes no input of, are left out). */
int llm_blocks_anthropic(json_object *msgs, const llm_message *m);
int llm_blocks_openai(json_object *msgs, const llm_message *m);

/* OpenAI's "tools" and "tool_choice" from the Anthropic-shaped ones of req,
 * added to body. */
int llm_blocks_openai_tools(json_object *body, const llm_request *req);

/* An OpenAI reply's message with tool_calls as Anthropic-shaped blocks (a
 * text block, then a tool_use block per call) in resp->content_json. */
int llm_blocks_from_openai(llm_response *resp, json_object *message);

/* Take the token counts parent.usage[in_key] and parent.usage[out_key] into
 * resp when they are integers; parent may be NULL. */
void llm_json_usage(llm_response *resp, json_object *parent, const char *in_key,
                    const char *out_key);

/* ---- Upstream error text (llm_error.c) ---- */

/* Pull a type and message out of an upstream error body in any of the
 * shapes providers use: {"error":{"type","message","code"}}, Anthropic's
 * {"type":"error","error":{...}}, {"error":"text"}, {"detail":...},
 * {"message":...}, or plain text. Writes into type[typelen] and msg[msglen],
 * empty strings when there is none. secret (may be NULL) is removed from the
 * full text before it is cut. */
void llm_http_error_info(const char *body, size_t len, const char *secret, char *type,
                         size_t typelen, char *msg, size_t msglen);

/* Copy s[0..len) into out[cap] as one line (control characters as spaces,
 * runs of spaces collapsed, no UTF-8 sequence left cut), removing secret
 * (may be NULL) from the whole text before it is cut, so no part of it is
 * left. When out of memory out is left empty. */
void llm_http_copy_scrubbed(char *out, size_t cap, const char *s, size_t len, const char *secret);

/* Replace every occurrence of secret (may be NULL) in s, a NUL-terminated
 * buffer of size cap, with "[redacted]", cutting what no longer fits, then
 * drop a UTF-8 sequence the cut left incomplete. */
void llm_http_scrub(char *s, size_t cap, const char *secret);

/* ---- Retry policy (llm_retry.c) ---- */

/* Whether a failed HTTP status is worth another attempt, as the official
 * SDKs decide it: x-should-retry ("true"/"false", should_retry 1/0, -1 when
 * absent) wins; else 408, 409, 429 and 5xx retry. Returns 1 or 0. */
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

#endif
