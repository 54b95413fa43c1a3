/* llm_openai.c: OpenAI-compatible chat completions (OpenAI, Ollama, vLLM, gateways). */
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

/* Build the request body. Returns a new json_object or NULL (out of memory). */
static json_object *openai_body(const ctxd_config *cfg, const llm_request *req) {
    json_object *o = llm_json_body_new(cfg, req, max_tokens_field(cfg));
    if (!o || llm_json_add_messages(o, req, req->system && *req->system ? req->system : NULL, 1) ||
        llm_blocks_openai_tools(o, req))
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
    if (choice && json_object_object_get_ex(choice, "delta", &v))
        rc = llm_http_emit_str(h, v, "content");
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
    openai_state st = {resp, 0, 0};
    const char *key = cfg->openai_key && *cfg->openai_key ? cfg->openai_key : NULL;
    llm_http_call call = {.base_url = cfg->openai_url,
                          .headers = headers,
                          .secret = key,
                          .ops = &openai_ops,
                          .arg = &st};
    return llm_http_post(h, cfg, req, &call, openai_body(cfg, req), resp);
}
