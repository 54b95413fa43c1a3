/* llm_openai.c: OpenAI-compatible chat completions (OpenAI, Ollama, vLLM, gateways). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llm_http.h"

/* Parse state of one attempt. */
typedef struct openai_state {
    llm_response *resp;
    int finished;       /* a finish_reason was seen */
    int done;           /* data: [DONE] was seen */
    json_object *calls; /* streamed tool_calls, put together by index */
} openai_state;

/* Append s to the string o[key]. */
static void append_str(json_object *o, const char *key, const char *s) {
    const char *old = llm_json_str(o, key);
    size_t a = old ? strlen(old) : 0, b = strlen(s);
    char *both = malloc(a + b + 1);
    if (!both) return;
    memcpy(both, old ? old : "", a);
    memcpy(both + a, s, b + 1);
    json_object_object_add(o, key, json_object_new_string(both));
    free(both);
}

/* One streamed delta of tool_calls, merged into st->calls by "index". */
static void merge_calls(openai_state *st, json_object *deltas) {
    if (!st->calls && !(st->calls = json_object_new_array())) return;
    for (size_t i = 0; i < json_object_array_length(deltas); i++) {
        json_object *d = json_object_array_get_idx(deltas, i), *v, *f = NULL;
        size_t idx = json_object_object_get_ex(d, "index", &v) ? (size_t)json_object_get_int(v) : i;
        if (idx > 127) continue;
        while (json_object_array_length(st->calls) <= idx) {
            json_object *c = json_object_new_object(), *fn = json_object_new_object();
            json_object_object_add(c, "type", json_object_new_string("function"));
            json_object_object_add(c, "function", fn);
            json_object_array_add(st->calls, c);
        }
        json_object *call = json_object_array_get_idx(st->calls, idx), *fn = NULL;
        json_object_object_get_ex(call, "function", &fn);
        if (llm_json_str(d, "id")) append_str(call, "id", llm_json_str(d, "id"));
        json_object_object_get_ex(d, "function", &f);
        if (llm_json_str(f, "name")) append_str(fn, "name", llm_json_str(f, "name"));
        if (llm_json_str(f, "arguments")) append_str(fn, "arguments", llm_json_str(f, "arguments"));
    }
}

/* OpenAI itself wants max_completion_tokens (reasoning models refuse
 * max_tokens); compatible servers mostly know only max_tokens. */
static const char *max_tokens_field(const ctxd_config *cfg) {
    return strstr(cfg->openai_url, "://api.openai.com") ? "max_completion_tokens" : "max_tokens";
}

/* Build the request body. Returns a new json_object or NULL (out of memory). */
static json_object *openai_body(const ctxd_config *cfg, const llm_request *req) {
    json_object *o = llm_json_body_new(cfg, req, max_tokens_field(cfg));
    if (!o || llm_json_add_messages(o, req, req->system && *req->system ? req->system : NULL, 1) ||
        llm_blocks_openai_tools(o, req) || llm_json_add_extra(o, req, 1))
        goto oom;
    if (req->on_delta) {
        json_object *so = json_object_new_object();
        if (!so) goto oom;
        json_object_object_add(so, "include_usage", json_object_new_boolean(1));
        json_object_object_add(o, "stream", json_object_new_boolean(1));
        json_object_object_add(o, "stream_options", so);
    }
    return o;
oom:
    json_object_put(o);
    return NULL;
}

/* choices[0], borrowed, or NULL. */
static json_object *first_choice(json_object *o) {
    json_object *choices = NULL;
    if (!json_object_object_get_ex(o, "choices", &choices) ||
        !json_object_is_type(choices, json_type_array) || json_object_array_length(choices) == 0)
        return NULL;
    return json_object_array_get_idx(choices, 0);
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
    json_object_put(st->calls);
    st->calls = NULL;
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
    json_object *o = llm_http_event_json(h, data, len, "chunk"), *v = NULL;
    if (!o) return CTXD_ERR;
    int rc = CTXD_OK;
    if (json_object_object_get_ex(o, "error", &v) && v) {
        stream_error(h, data, len);
        rc = CTXD_ERR;
        goto out;
    }
    llm_copy_str(st->resp->model, sizeof(st->resp->model), llm_json_str(o, "model"));
    llm_json_usage(st->resp, o, "prompt_tokens", "completion_tokens");
    json_object *choice = first_choice(o);
    if (choice && json_object_object_get_ex(choice, "delta", &v)) {
        json_object *calls;
        rc = llm_http_emit_str(h, v, "content");
        if (json_object_object_get_ex(v, "tool_calls", &calls) &&
            json_object_is_type(calls, json_type_array))
            merge_calls(st, calls);
    }
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
    int rc = llm_http_emit_str(h, msg, "content");
    const char *fr = llm_json_str(choice, "finish_reason");
    json_object *calls;
    if (rc == CTXD_OK && json_object_object_get_ex(msg, "tool_calls", &calls) &&
        json_object_is_type(calls, json_type_array) && json_object_array_length(calls)) {
        /* Kept in the neutral (Anthropic) shape: tool_use blocks. */
        if (llm_blocks_from_openai(resp, msg)) {
            llm_http_fail(h, LLM_ERR_UPSTREAM, 200, 0, "the upstream's tool_calls are malformed");
            rc = CTXD_ERR;
        }
        if (fr && !strcmp(fr, "tool_calls")) fr = "tool_use";
    }
    llm_copy_str(resp->stop_reason, sizeof(resp->stop_reason), fr);
    llm_copy_str(resp->model, sizeof(resp->model), llm_json_str(o, "model"));
    llm_json_usage(resp, o, "prompt_tokens", "completion_tokens");
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
    if (st->calls && json_object_array_length(st->calls)) {
        /* As when not streamed: the calls as tool_use blocks. */
        json_object *msg = json_object_new_object();
        if (resp->text_len)
            json_object_object_add(msg, "content",
                                   json_object_new_string_len(resp->text, (int)resp->text_len));
        json_object_object_add(msg, "tool_calls", json_object_get(st->calls));
        int rc = llm_blocks_from_openai(resp, msg);
        json_object_put(msg);
        if (rc) {
            llm_http_fail(h, LLM_ERR_UPSTREAM, 200, 0, "the upstream's tool_calls are malformed");
            return CTXD_ERR;
        }
        if (!strcmp(resp->stop_reason, "tool_calls"))
            snprintf(resp->stop_reason, sizeof(resp->stop_reason), "tool_use");
        /* The calls go on to a streaming client whole, after the text. */
        json_object *blocks = llm_json_parse(resp->content_json, resp->content_json_len);
        for (size_t i = 0; rc == CTXD_OK && i < json_object_array_length(blocks); i++) {
            json_object *b = json_object_array_get_idx(blocks, i);
            const char *bt = llm_json_str(b, "type");
            if (bt && !strcmp(bt, "tool_use")) rc = llm_http_emit_block(h, b);
        }
        json_object_put(blocks);
        return rc;
    }
    return CTXD_OK;
}

static const llm_http_ops openai_ops = {
    "/chat/completions", "CTXD_OPENAI_URL", "Authorization: Bearer ",
    openai_begin,        openai_event,      openai_finish};

int llm_openai_complete(llm_http *h, const ctxd_config *cfg, const llm_request *req,
                        llm_response *resp) {
    /* No key (local Ollama, vLLM): no Authorization header at all. */
    const char *headers[] = {"Content-Type: application/json",
                             req->on_delta ? "Accept: text/event-stream"
                                           : "Accept: application/json",
                             LLM_HTTP_KEY_SLOT, NULL};
    openai_state st = {resp, 0, 0, NULL};
    const char *key = cfg->openai_key && *cfg->openai_key ? cfg->openai_key : NULL;
    llm_http_call call = {.base_url = cfg->openai_url,
                          .headers = headers,
                          .secret = key,
                          .ops = &openai_ops,
                          .arg = &st};
    int rc = llm_http_post(h, cfg, req, &call, openai_body(cfg, req), resp);
    json_object_put(st.calls);
    return rc;
}
