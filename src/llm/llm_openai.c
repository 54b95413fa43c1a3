/* llm_openai.c: OpenAI-compatible chat completions (OpenAI, Ollama, vLLM, gateways). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llm_http.h"

/* Parse state of one attempt. */
typedef struct openai_state {
    llm_response *resp;
    int finished; /* a finish_reason was seen */
    int done;     /* data: [DONE] was seen */
} openai_state;

/* OpenAI itself wants max_completion_tokens (reasoning models refuse
 * max_tokens); compatible servers mostly know only max_tokens. */
static const char *max_tokens_field(const ctxd_config *cfg) {
    return strstr(cfg->openai_url, "://api.openai.com") ? "max_completion_tokens" : "max_tokens";
}

static int add_message(json_object *msgs, const char *role, const char *content, size_t len) {
    json_object *jm = json_object_new_object();
    if (!jm || json_object_array_add(msgs, jm)) {
        json_object_put(jm);
        return CTXD_ERR;
    }
    json_object_object_add(jm, "role", json_object_new_string(role));
    json_object_object_add(jm, "content", json_object_new_string_len(content, (int)len));
    return CTXD_OK;
}

/* Build the request body. Returns a new json_object or NULL (out of memory). */
static json_object *openai_body(const ctxd_config *cfg, const llm_request *req) {
    json_object *o = json_object_new_object(), *msgs = json_object_new_array();
    if (!o || !msgs) goto oom;
    const char *model = req->model && *req->model ? req->model : cfg->model;
    int max_tokens = req->max_tokens > 0 ? req->max_tokens : cfg->max_tokens;
    json_object_object_add(o, "model", json_object_new_string(model));
    json_object_object_add(o, max_tokens_field(cfg), json_object_new_int(max_tokens));
    if (req->system && *req->system &&
        add_message(msgs, "system", req->system, strlen(req->system)))
        goto oom;
    for (size_t i = 0; i < req->n_messages; i++) {
        const llm_message *m = &req->messages[i];
        if (add_message(msgs, m->role, m->content, m->content_len)) goto oom;
    }
    json_object_object_add(o, "messages", msgs);
    msgs = NULL;
    if (req->on_delta) {
        json_object *so = json_object_new_object();
        if (!so) goto oom;
        json_object_object_add(so, "include_usage", json_object_new_boolean(1));
        json_object_object_add(o, "stream", json_object_new_boolean(1));
        json_object_object_add(o, "stream_options", so);
    }
    return o;
oom:
    json_object_put(msgs);
    json_object_put(o);
    return NULL;
}

/* usage.{prompt,completion}_tokens into resp when usage is an object. */
static void take_usage(llm_response *resp, json_object *o) {
    json_object *usage = NULL;
    if (!json_object_object_get_ex(o, "usage", &usage) ||
        !json_object_is_type(usage, json_type_object))
        return;
    long in = llm_json_long(usage, "prompt_tokens");
    long out = llm_json_long(usage, "completion_tokens");
    if (in >= 0) resp->input_tokens = in;
    if (out >= 0) resp->output_tokens = out;
}

/* choices[0], borrowed, or NULL. */
static json_object *first_choice(json_object *o) {
    json_object *choices = NULL;
    if (!json_object_object_get_ex(o, "choices", &choices) ||
        !json_object_is_type(choices, json_type_array) || json_object_array_length(choices) == 0)
        return NULL;
    return json_object_array_get_idx(choices, 0);
}

/* Emit obj[key] when it is a non-empty string. */
static int emit_string(llm_http *h, json_object *obj, const char *key) {
    json_object *v = NULL;
    if (!obj || !json_object_object_get_ex(obj, key, &v) ||
        !json_object_is_type(v, json_type_string))
        return CTXD_OK;
    return llm_http_emit(h, json_object_get_string(v), (size_t)json_object_get_string_len(v));
}

/* An error object inside a 200 stream (vLLM, LiteLLM and gateways send them). */
static void stream_error(llm_http *h, const char *data, size_t len) {
    char type[64], msg[160];
    llm_http_error_info(data, len, llm_http_secret(h), type, sizeof(type), msg, sizeof(msg));
    llm_http_fail(h, LLM_ERR_UPSTREAM, 200, 0, "the upstream stream failed after HTTP 200: %s: %s",
                  type[0] ? type : "error", msg[0] ? msg : "no message");
}

static void openai_begin(void *arg) {
    openai_state *st = arg;
    st->finished = st->done = 0;
}

/* One data-only SSE chunk: a chat.completion.chunk, or [DONE]. */
static int openai_event(void *arg, llm_http *h, const char *event, const char *data, size_t len) {
    openai_state *st = arg;
    (void)event;
    if (st->done) return CTXD_OK;
    if (len == 6 && !memcmp(data, "[DONE]", 6)) {
        st->done = 1;
        return CTXD_OK;
    }
    json_object *o = llm_json_parse(data, len), *v = NULL;
    if (!o || !json_object_is_type(o, json_type_object)) {
        json_object_put(o);
        llm_http_fail(h, LLM_ERR_UPSTREAM, 200, 0,
                      "the upstream sent a stream chunk that is not JSON");
        return CTXD_ERR;
    }
    int rc = CTXD_OK;
    if (json_object_object_get_ex(o, "error", &v) && v) {
        stream_error(h, data, len);
        rc = CTXD_ERR;
        goto out;
    }
    llm_copy_str(st->resp->model, sizeof(st->resp->model), llm_json_str(o, "model"));
    take_usage(st->resp, o);
    json_object *choice = first_choice(o);
    if (choice && json_object_object_get_ex(choice, "delta", &v)) rc = emit_string(h, v, "content");
    const char *fr = llm_json_str(choice, "finish_reason");
    if (fr) {
        llm_copy_str(st->resp->stop_reason, sizeof(st->resp->stop_reason), fr);
        st->finished = 1;
    }
out:
    json_object_put(o);
    return rc;
}

/* A plain chat.completion object. */
static int openai_parse_completion(llm_http *h, const char *body, size_t len, llm_response *resp) {
    json_object *o = llm_json_parse(body, len), *msg = NULL;
    json_object *choice = first_choice(o);
    if (!choice || !json_object_object_get_ex(choice, "message", &msg)) {
        json_object_put(o);
        llm_http_fail(h, LLM_ERR_UPSTREAM, 200, 0,
                      "the upstream answered HTTP 200 without a choice");
        return CTXD_ERR;
    }
    int rc = emit_string(h, msg, "content");
    llm_copy_str(resp->stop_reason, sizeof(resp->stop_reason),
                 llm_json_str(choice, "finish_reason"));
    llm_copy_str(resp->model, sizeof(resp->model), llm_json_str(o, "model"));
    take_usage(resp, o);
    json_object_put(o);
    return rc;
}

static int openai_finish(void *arg, llm_http *h, const char *body, size_t len, llm_response *resp) {
    openai_state *st = arg;
    if (body) return openai_parse_completion(h, body, len, resp);
    /* [DONE] may be missing: a finish_reason before the end is complete. */
    if (!st->done && !st->finished) {
        llm_http_fail(h, LLM_ERR_UPSTREAM, 200, 1,
                      "the upstream stream ended before a finish_reason or [DONE]");
        return CTXD_ERR;
    }
    return CTXD_OK;
}

static const llm_http_ops openai_ops = {openai_begin, openai_event, openai_finish};

int llm_openai_complete(llm_http *h, const ctxd_config *cfg, const llm_request *req,
                        llm_response *resp) {
    char url[600], *key_hdr = NULL;
    const char *body = NULL;
    json_object *jbody = NULL;
    int rc = CTXD_ERR;
    const char *key = cfg->openai_key && *cfg->openai_key ? cfg->openai_key : NULL;
    size_t kl = key ? strlen(key) + sizeof("Authorization: Bearer ") : 0;
    if (llm_http_url(url, sizeof(url), cfg->openai_url, "/chat/completions")) {
        llm_response_set_error(resp, LLM_ERR_CONFIG, 0, "CTXD_OPENAI_URL is too long");
        return CTXD_ERR;
    }
    if (!(jbody = openai_body(cfg, req)) || (key && !(key_hdr = malloc(kl))) ||
        !(body = json_object_to_json_string_ext(jbody, JSON_C_TO_STRING_PLAIN |
                                                           JSON_C_TO_STRING_NOSLASHESCAPE))) {
        llm_response_set_error(resp, LLM_ERR_UPSTREAM, 0, "out of memory");
        goto cleanup;
    }
    if (key) snprintf(key_hdr, kl, "Authorization: Bearer %s", key);
    /* No key (local Ollama, vLLM): no Authorization header at all. */
    const char *headers[] = {
        "Content-Type: application/json",
        req->on_delta ? "Accept: text/event-stream" : "Accept: application/json", key_hdr, NULL};
    openai_state st = {resp, 0, 0};
    llm_http_call call = {url, headers,     body, strlen(body), req->on_delta != NULL,
                          key, &openai_ops, &st};
    rc = llm_http_run(h, cfg, req, &call, resp);
cleanup:
    if (key_hdr) {
        memset(key_hdr, 0, kl);
        free(key_hdr);
    }
    json_object_put(jbody);
    return rc;
}
