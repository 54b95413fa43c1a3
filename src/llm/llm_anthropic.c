/* llm_anthropic.c: the Anthropic Messages API (POST /v1/messages), plain and streamed. */
#include <stdio.h>
#include <string.h>

#include "ctxd/buf.h"
#include "llm_http.h"

#define ANTHROPIC_VERSION "2023-06-01"

/* Parse state of one attempt. A streamed reply's blocks are put together
 * from their events: blocks holds the finished ones, cur the one open (its
 * content_block_start), with its text, partial JSON input or signature. */
typedef struct anthropic_state {
    llm_response *resp;
    int started; /* message_start seen */
    int stopped; /* message_stop seen */
    json_object *blocks, *cur;
    buf text, json, sig;
} anthropic_state;

static void blocks_reset(anthropic_state *st) {
    json_object_put(st->blocks);
    json_object_put(st->cur);
    st->blocks = st->cur = NULL;
    buf_free(&st->text);
    buf_free(&st->json);
    buf_free(&st->sig);
}

/* content_block_stop: the open block, finished, onto blocks. */
static int block_stop(anthropic_state *st) {
    json_object *b = st->cur;
    const char *type = llm_json_str(b, "type");
    if (!b) return CTXD_OK;
    st->cur = NULL;
    if (!st->blocks && !(st->blocks = json_object_new_array())) {
        json_object_put(b);
        return CTXD_ERR;
    }
    if (type && !strcmp(type, "text"))
        json_object_object_add(
            b, "text",
            json_object_new_string_len(st->text.data ? st->text.data : "", (int)st->text.len));
    if (type && !strcmp(type, "thinking")) {
        json_object_object_add(
            b, "thinking",
            json_object_new_string_len(st->text.data ? st->text.data : "", (int)st->text.len));
        json_object_object_add(
            b, "signature",
            json_object_new_string_len(st->sig.data ? st->sig.data : "", (int)st->sig.len));
    }
    if (type && !strcmp(type, "tool_use") && st->json.len) {
        json_object *input = llm_json_parse(st->json.data, st->json.len);
        if (!input) {
            json_object_put(b);
            return CTXD_ERR;
        }
        json_object_object_add(b, "input", input);
    }
    buf_free(&st->text);
    buf_free(&st->json);
    buf_free(&st->sig);
    return json_object_array_add(st->blocks, b) ? CTXD_ERR : CTXD_OK;
}

static json_object *ephemeral(void) {
    json_object *c = json_object_new_object();
    json_object_object_add(c, "type", json_object_new_string("ephemeral"));
    return c;
}

/* A cache breakpoint on a message: on its last block that may carry one
 * (text as a string becomes one text block). */
static void mark_message(json_object *m) {
    json_object *content;
    if (!json_object_object_get_ex(m, "content", &content)) return;
    if (json_object_is_type(content, json_type_string)) {
        json_object *arr = json_object_new_array(), *t = json_object_new_object();
        json_object_object_add(t, "type", json_object_new_string("text"));
        json_object_object_add(t, "text", json_object_get(content));
        json_object_object_add(t, "cache_control", ephemeral());
        json_object_array_add(arr, t);
        json_object_object_add(m, "content", arr);
        return;
    }
    for (size_t i = json_object_array_length(content); i-- > 0;) {
        json_object *b = json_object_array_get_idx(content, i);
        const char *t = llm_json_str(b, "type");
        if (t && (!strcmp(t, "thinking") || !strcmp(t, "redacted_thinking"))) continue;
        json_object_object_add(b, "cache_control", ephemeral());
        return;
    }
}

/* Prompt caching: breakpoints (3 of the 4 allowed) at the end of the tools,
 * of the system prompt (with the summary) and of the history before the
 * new message: what stays the same from one turn to the next. */
static void mark_cache(json_object *o, const llm_request *req) {
    json_object *v;
    size_t n;
    if (json_object_object_get_ex(o, "tools", &v) && (n = json_object_array_length(v)))
        json_object_object_add(json_object_array_get_idx(v, n - 1), "cache_control", ephemeral());
    if (req->system && *req->system) {
        json_object *arr = json_object_new_array(), *t = json_object_new_object();
        json_object_object_add(t, "type", json_object_new_string("text"));
        json_object_object_add(t, "text", json_object_new_string(req->system));
        json_object_object_add(t, "cache_control", ephemeral());
        json_object_array_add(arr, t);
        json_object_object_add(o, "system", arr);
    }
    if (json_object_object_get_ex(o, "messages", &v) && (n = json_object_array_length(v)) >= 2)
        mark_message(json_object_array_get_idx(v, n - 2));
}

/* Build the request body. Returns a new json_object or NULL (out of memory). */
static json_object *anthropic_body(const ctxd_config *cfg, const llm_request *req) {
    json_object *o = llm_json_body_new(cfg, req, "max_tokens");
    if (!o) return NULL;
    if (req->system && *req->system)
        json_object_object_add(o, "system", json_object_new_string(req->system));
    if (llm_json_add_messages(o, req, NULL, 0) || llm_json_add_raw(o, "tools", req->tools_json) ||
        llm_json_add_raw(o, "tool_choice", req->tool_choice_json)) {
        json_object_put(o);
        return NULL;
    }
    if (llm_json_add_extra(o, req, 0)) {
        json_object_put(o);
        return NULL;
    }
    if (req->cache_prefix && cfg->prompt_cache) mark_cache(o, req);
    if (req->on_delta) json_object_object_add(o, "stream", json_object_new_boolean(1));
    return o;
}

/* An Anthropic error object, in a stream: fail with its type and message. */
static void stream_error(llm_http *h, json_object *o) {
    json_object *e = NULL;
    json_object_object_get_ex(o, "error", &e);
    const char *type = llm_json_str(e, "type");
    const char *msg = llm_json_str(e, "message");
    llm_err err = LLM_ERR_UPSTREAM;
    if (type && !strcmp(type, "overloaded_error"))
        err = LLM_ERR_OVERLOADED;
    else if (type && !strcmp(type, "rate_limit_error"))
        err = LLM_ERR_RATE;
    int retryable = type && (!strcmp(type, "overloaded_error") || !strcmp(type, "api_error") ||
                             !strcmp(type, "rate_limit_error"));
    llm_http_fail(h, err, 200, retryable, "the upstream stream failed after HTTP 200: %s: %s",
                  type ? type : "error", msg ? msg : "no message");
}

static void anthropic_begin(void *arg) {
    anthropic_state *st = arg;
    st->started = st->stopped = 0;
    blocks_reset(st);
}

/* One streamed event: message_start, content_block_*, message_delta, ... */
static int anthropic_event(void *arg, llm_http *h, const char *event, const char *data,
                           size_t len) {
    anthropic_state *st = arg;
    if (st->stopped) return CTXD_OK; /* nothing counts after message_stop */
    json_object *o = llm_http_event_json(h, data, len, "event");
    if (!o) return CTXD_ERR;
    const char *type = *event && strcmp(event, "message") ? event : llm_json_str(o, "type");
    int rc = CTXD_OK;
    json_object *v = NULL;
    if (!type) {
        /* no type at all: ignore, as with any event we do not know */
    } else if (!strcmp(type, "message_start")) {
        st->started = 1;
        json_object *msg = NULL;
        json_object_object_get_ex(o, "message", &msg);
        llm_copy_str(st->resp->model, sizeof(st->resp->model), llm_json_str(msg, "model"));
        llm_json_usage(st->resp, msg, "input_tokens", "output_tokens");
    } else if (!strcmp(type, "content_block_start")) {
        json_object_object_get_ex(o, "content_block", &v);
        json_object_put(st->cur);
        st->cur = v ? json_object_get(v) : NULL;
    } else if (!strcmp(type, "content_block_delta")) {
        json_object_object_get_ex(o, "delta", &v);
        const char *dt = llm_json_str(v, "type"), *s;
        if (dt && !strcmp(dt, "text_delta")) {
            rc = llm_http_emit_str(h, v, "text");
            if ((s = llm_json_str(v, "text"))) buf_puts(&st->text, s);
        } else if (dt && !strcmp(dt, "thinking_delta") && (s = llm_json_str(v, "thinking"))) {
            buf_puts(&st->text, s);
        } else if (dt && !strcmp(dt, "signature_delta") && (s = llm_json_str(v, "signature"))) {
            buf_puts(&st->sig, s);
        } else if (dt && !strcmp(dt, "input_json_delta") && (s = llm_json_str(v, "partial_json"))) {
            buf_puts(&st->json, s);
        }
    } else if (!strcmp(type, "content_block_stop")) {
        size_t had = st->blocks ? json_object_array_length(st->blocks) : 0;
        if (block_stop(st)) {
            llm_http_fail(h, LLM_ERR_UPSTREAM, 200, 0, "the upstream streamed a malformed block");
            rc = CTXD_ERR;
        } else if (st->blocks && json_object_array_length(st->blocks) > had) {
            /* A finished block that is not text goes on whole, in its place. */
            json_object *b = json_object_array_get_idx(st->blocks, had);
            const char *bt = llm_json_str(b, "type");
            if (!bt || strcmp(bt, "text")) rc = llm_http_emit_block(h, b);
        }
    } else if (!strcmp(type, "message_delta")) {
        json_object_object_get_ex(o, "delta", &v);
        llm_copy_str(st->resp->stop_reason, sizeof(st->resp->stop_reason),
                     llm_json_str(v, "stop_reason"));
        llm_json_usage(st->resp, o, "input_tokens", "output_tokens");
    } else if (!strcmp(type, "message_stop")) {
        st->stopped = 1;
        /* tool_use and thinking blocks are kept whole, as when not streamed */
        if (st->blocks && llm_json_keep_blocks(st->resp, st->blocks)) {
            llm_http_fail(h, LLM_ERR_UPSTREAM, 200, 0, "out of memory keeping the reply's blocks");
            rc = CTXD_ERR;
        }
    } else if (!strcmp(type, "error")) {
        stream_error(h, o);
        rc = CTXD_ERR;
    } /* ping, content_block_start/stop and new event types: nothing to do */
    json_object_put(o);
    return rc;
}

/* A plain (non-streamed) Message object. */
static int anthropic_parse_message(llm_http *h, const char *body, size_t len, llm_response *resp) {
    json_object *o = llm_json_parse(body, len), *content = NULL;
    if (!o || !json_object_object_get_ex(o, "content", &content) ||
        !json_object_is_type(content, json_type_array)) {
        json_object_put(o);
        llm_http_fail(h, LLM_ERR_UPSTREAM, 200, 0,
                      "the upstream answered HTTP 200 without a message");
        return CTXD_ERR;
    }
    int rc = CTXD_OK;
    size_t n = json_object_array_length(content);
    for (size_t i = 0; i < n && rc == CTXD_OK; i++) {
        json_object *block = json_object_array_get_idx(content, i);
        const char *bt = llm_json_str(block, "type");
        if (bt && !strcmp(bt, "text")) rc = llm_http_emit_str(h, block, "text");
    }
    /* tool_use and thinking blocks are kept whole: they go back as they
     * came (ids, signatures). */
    if (rc == CTXD_OK && llm_json_keep_blocks(resp, content)) {
        llm_http_fail(h, LLM_ERR_UPSTREAM, 200, 0, "out of memory keeping the reply's blocks");
        rc = CTXD_ERR;
    }
    llm_copy_str(resp->stop_reason, sizeof(resp->stop_reason), llm_json_str(o, "stop_reason"));
    llm_copy_str(resp->model, sizeof(resp->model), llm_json_str(o, "model"));
    llm_json_usage(resp, o, "input_tokens", "output_tokens");
    json_object_put(o);
    return rc;
}

static int anthropic_finish(void *arg, llm_http *h, const char *body, size_t len,
                            llm_response *resp) {
    anthropic_state *st = arg;
    if (body) return anthropic_parse_message(h, body, len, resp);
    if (!st->stopped) {
        llm_http_fail(h, LLM_ERR_UPSTREAM, 200, 1, "the upstream stream ended before message_stop");
        return CTXD_ERR;
    }
    return CTXD_OK;
}

static const llm_http_ops anthropic_ops = {"/v1/messages",  "CTXD_ANTHROPIC_URL", "x-api-key: ",
                                           anthropic_begin, anthropic_event,      anthropic_finish};

int llm_anthropic_complete(llm_http *h, const ctxd_config *cfg, const llm_request *req,
                           llm_response *resp) {
    if (!cfg->anthropic_key || !*cfg->anthropic_key) {
        llm_response_set_error(resp, LLM_ERR_CONFIG, 0,
                               "the anthropic provider needs ANTHROPIC_API_KEY");
        return CTXD_ERR;
    }
    char beta[512] = "";
    if (req->anthropic_beta && *req->anthropic_beta)
        snprintf(beta, sizeof(beta), "anthropic-beta: %s", req->anthropic_beta);
    const char *headers[] = {LLM_HTTP_KEY_SLOT,
                             "anthropic-version: " ANTHROPIC_VERSION,
                             "content-type: application/json",
                             req->on_delta ? "accept: text/event-stream"
                                           : "accept: application/json",
                             beta[0] ? beta : NULL,
                             NULL};
    anthropic_state st;
    memset(&st, 0, sizeof(st));
    st.resp = resp;
    llm_http_call call = {.base_url = cfg->anthropic_url,
                          .headers = headers,
                          .secret = cfg->anthropic_key,
                          .ops = &anthropic_ops,
                          .arg = &st};
    int rc = llm_http_post(h, cfg, req, &call, anthropic_body(cfg, req), resp);
    blocks_reset(&st);
    return rc;
}
