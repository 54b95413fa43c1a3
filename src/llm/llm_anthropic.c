/* llm_anthropic.c: the Anthropic Messages API (POST /v1/messages), plain and streamed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llm_http.h"

#define ANTHROPIC_VERSION "2023-06-01"

/* Parse state of one attempt. */
typedef struct anthropic_state {
    llm_response *resp;
    int started; /* message_start seen */
    int stopped; /* message_stop seen */
} anthropic_state;

/* Build the request body. Returns a new json_object or NULL (out of memory). */
static json_object *anthropic_body(const ctxd_config *cfg, const llm_request *req) {
    json_object *o = json_object_new_object(), *msgs = json_object_new_array();
    if (!o || !msgs) goto oom;
    const char *model = req->model && *req->model ? req->model : cfg->model;
    int max_tokens = req->max_tokens > 0 ? req->max_tokens : cfg->max_tokens;
    json_object_object_add(o, "model", json_object_new_string(model));
    json_object_object_add(o, "max_tokens", json_object_new_int(max_tokens));
    if (req->system && *req->system)
        json_object_object_add(o, "system", json_object_new_string(req->system));
    for (size_t i = 0; i < req->n_messages; i++) {
        const llm_message *m = &req->messages[i];
        json_object *jm = json_object_new_object();
        if (!jm || json_object_array_add(msgs, jm)) {
            json_object_put(jm);
            goto oom;
        }
        json_object_object_add(jm, "role", json_object_new_string(m->role));
        json_object_object_add(jm, "content",
                               json_object_new_string_len(m->content, (int)m->content_len));
    }
    json_object_object_add(o, "messages", msgs);
    msgs = NULL;
    if (req->on_delta) json_object_object_add(o, "stream", json_object_new_boolean(1));
    return o;
oom:
    json_object_put(msgs);
    json_object_put(o);
    return NULL;
}

/* usage.{input,output}_tokens into resp when present. */
static void take_usage(llm_response *resp, json_object *usage) {
    long in = llm_json_long(usage, "input_tokens");
    long out = llm_json_long(usage, "output_tokens");
    if (in >= 0) resp->input_tokens = in;
    if (out >= 0) resp->output_tokens = out;
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
}

/* One streamed event: message_start, content_block_*, message_delta, ... */
static int anthropic_event(void *arg, llm_http *h, const char *event, const char *data,
                           size_t len) {
    anthropic_state *st = arg;
    if (st->stopped) return CTXD_OK; /* nothing counts after message_stop */
    json_object *o = llm_json_parse(data, len);
    if (!o || !json_object_is_type(o, json_type_object)) {
        json_object_put(o);
        llm_http_fail(h, LLM_ERR_UPSTREAM, 200, 0,
                      "the upstream sent a stream event that is not JSON");
        return CTXD_ERR;
    }
    const char *type = *event && strcmp(event, "message") ? event : llm_json_str(o, "type");
    int rc = CTXD_OK;
    json_object *v = NULL;
    if (!type) {
        /* no type at all: ignore, as with any event we do not know */
    } else if (!strcmp(type, "message_start")) {
        st->started = 1;
        json_object *msg = NULL, *usage = NULL;
        json_object_object_get_ex(o, "message", &msg);
        llm_copy_str(st->resp->model, sizeof(st->resp->model), llm_json_str(msg, "model"));
        if (msg && json_object_object_get_ex(msg, "usage", &usage)) take_usage(st->resp, usage);
    } else if (!strcmp(type, "content_block_delta")) {
        json_object_object_get_ex(o, "delta", &v);
        const char *dt = llm_json_str(v, "type");
        json_object *text = NULL;
        if (dt && !strcmp(dt, "text_delta") && json_object_object_get_ex(v, "text", &text) &&
            json_object_is_type(text, json_type_string))
            rc = llm_http_emit(h, json_object_get_string(text),
                               (size_t)json_object_get_string_len(text));
    } else if (!strcmp(type, "message_delta")) {
        json_object_object_get_ex(o, "delta", &v);
        llm_copy_str(st->resp->stop_reason, sizeof(st->resp->stop_reason),
                     llm_json_str(v, "stop_reason"));
        if (json_object_object_get_ex(o, "usage", &v)) take_usage(st->resp, v);
    } else if (!strcmp(type, "message_stop")) {
        st->stopped = 1;
    } else if (!strcmp(type, "error")) {
        stream_error(h, o);
        rc = CTXD_ERR;
    } /* ping, content_block_start/stop and new event types: nothing to do */
    json_object_put(o);
    return rc;
}

/* A plain (non-streamed) Message object. */
static int anthropic_parse_message(llm_http *h, const char *body, size_t len, llm_response *resp) {
    json_object *o = llm_json_parse(body, len), *content = NULL, *v = NULL;
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
        json_object *block = json_object_array_get_idx(content, i), *text = NULL;
        const char *bt = llm_json_str(block, "type");
        if (bt && !strcmp(bt, "text") && json_object_object_get_ex(block, "text", &text) &&
            json_object_is_type(text, json_type_string))
            rc = llm_http_emit(h, json_object_get_string(text),
                               (size_t)json_object_get_string_len(text));
    }
    llm_copy_str(resp->stop_reason, sizeof(resp->stop_reason), llm_json_str(o, "stop_reason"));
    llm_copy_str(resp->model, sizeof(resp->model), llm_json_str(o, "model"));
    if (json_object_object_get_ex(o, "usage", &v)) take_usage(resp, v);
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

static const llm_http_ops anthropic_ops = {anthropic_begin, anthropic_event, anthropic_finish};

int llm_anthropic_complete(llm_http *h, const ctxd_config *cfg, const llm_request *req,
                           llm_response *resp) {
    char url[600], *key_hdr = NULL;
    const char *body = NULL;
    json_object *jbody = NULL;
    int rc = CTXD_ERR;
    if (!cfg->anthropic_key || !*cfg->anthropic_key) {
        llm_response_set_error(resp, LLM_ERR_CONFIG, 0,
                               "the anthropic provider needs ANTHROPIC_API_KEY");
        return CTXD_ERR;
    }
    if (llm_http_url(url, sizeof(url), cfg->anthropic_url, "/v1/messages")) {
        llm_response_set_error(resp, LLM_ERR_CONFIG, 0, "CTXD_ANTHROPIC_URL is too long");
        return CTXD_ERR;
    }
    size_t kl = strlen(cfg->anthropic_key) + sizeof("x-api-key: ");
    if (!(jbody = anthropic_body(cfg, req)) || !(key_hdr = malloc(kl)) ||
        !(body = json_object_to_json_string_ext(jbody, JSON_C_TO_STRING_PLAIN |
                                                           JSON_C_TO_STRING_NOSLASHESCAPE))) {
        llm_response_set_error(resp, LLM_ERR_UPSTREAM, 0, "out of memory");
        goto cleanup;
    }
    snprintf(key_hdr, kl, "x-api-key: %s", cfg->anthropic_key);
    const char *headers[] = {
        key_hdr, "anthropic-version: " ANTHROPIC_VERSION, "content-type: application/json",
        req->on_delta ? "accept: text/event-stream" : "accept: application/json", NULL};
    anthropic_state st = {resp, 0, 0};
    llm_http_call call = {
        url, headers, body, strlen(body), req->on_delta != NULL, cfg->anthropic_key, &anthropic_ops,
        &st};
    rc = llm_http_run(h, cfg, req, &call, resp);
cleanup:
    if (key_hdr) {
        memset(key_hdr, 0, kl);
        free(key_hdr);
    }
    json_object_put(jbody);
    return rc;
}
