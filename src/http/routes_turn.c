/* routes_turn.c: the turn routes: a message to the model (plain or streamed) and appends. */
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctxd/log.h"
#include "http_int.h"

#define MAX_APPEND 1000
#define MAX_ENUM_LEN 1024 /* longer than any allowed value: a wrong one is a 400 */

static const char *const replayed_headers[] = {"Idempotent-Replayed", "true", NULL};

typedef struct stream_state {
    const http_req *req;
    int started;
    int client_gone; /* the turn still completes and is stored */
} stream_state;

static void sse_event(stream_state *ss, const char *event, const char *data, size_t len) {
    if (ss->client_gone) return;
    buf b;
    buf_init(&b);
    buf_printf(&b, "event: %s\ndata: ", event);
    buf_putn(&b, data, len);
    buf_puts(&b, "\n\n");
    if (b.err || http_stream_write(ss->req, b.data, b.len)) {
        if (!ss->client_gone)
            log_msg(LOG_INFO,
                    "context %s: client left mid-stream; the turn still "
                    "completes and is stored",
                    ss->req->id);
        ss->client_gone = 1;
    }
    buf_free(&b);
}

static void stream_begin(stream_state *ss, const char *const *headers) {
    if (http_stream_start(ss->req, 200, "text/event-stream", headers)) ss->client_gone = 1;
    ss->started = 1;
}

static void stream_start(void *arg, const char *model) {
    (void)model;
    stream_begin(arg, NULL);
}

static int stream_delta(void *arg, const char *text, size_t len) {
    stream_state *ss = arg;
    buf b;
    buf_init(&b);
    buf_puts(&b, "{\"text\":");
    buf_put_json_string(&b, text, len);
    buf_puts(&b, "}");
    if (!b.err) sse_event(ss, "delta", b.data, b.len);
    buf_free(&b);
    return CTXD_OK;
}

/* Finish a streamed turn: done (replaying a stored answer as one delta) or
 * error. Returns the status of the answer. */
static int stream_finish(const http_req *req, stream_state *ss, const turn_result *res) {
    int failed = res->error.err != CTXD_E_NONE;
    if (failed && !ss->started) return http_send_failure(req, &res->error);
    if (!ss->started) stream_begin(ss, res->replayed ? replayed_headers : NULL);
    buf b;
    buf_init(&b);
    if (!failed) {
        if (res->replayed) stream_delta(ss, res->reply.text, res->reply.text_len);
        http_render_reply(&b, req->id, &res->reply);
    } else {
        http_error_body(&b, res->error.err, res->error.msg, 1);
    }
    if (!b.err) sse_event(ss, failed ? "error" : "done", b.data, b.len);
    buf_free(&b);
    if (!ss->client_gone) http_stream_end(req);
    return 200;
}

/* A plain (not streamed) answer: the result, or its error. */
static int send_result(const http_req *req, int status, const turn_result *res) {
    if (res->error.err != CTXD_E_NONE) return http_send_failure(req, &res->error);
    buf b;
    buf_init(&b);
    if (status == 201)
        http_render_appended(&b, req->id, res->appended, res->first_seq);
    else
        http_render_reply(&b, req->id, &res->reply);
    if (b.err) {
        buf_free(&b);
        return http_send_error(req, CTXD_E_NOMEM, "out of memory");
    }
    http_send(req, status, "application/json", b.data, b.len,
              res->replayed ? replayed_headers : NULL);
    buf_free(&b);
    return status;
}

static int wants_stream(const http_req *req, json_object *body, int *stream, int *status) {
    json_object *v;
    const char *accept = http_header(req, "Accept");
    *stream = accept && strstr(accept, "text/event-stream") != NULL;
    if (json_object_object_get_ex(body, "stream", &v) && v) {
        if (!json_object_is_type(v, json_type_boolean)) {
            *status =
                http_send_error(req, CTXD_E_INVALID_FIELD, "Field 'stream' must be true or false");
            return CTXD_ERR;
        }
        *stream = json_object_get_boolean(v);
    }
    return CTXD_OK;
}

/* POST /mcp/context/{id}/message */
static int post_message(const http_req *req) {
    static const char *const allowed[] = {"message", "stream",      "metadata",
                                          "tools",   "tool_choice", NULL};
    char *tools = NULL, *tool_choice = NULL;
    json_object *body = NULL, *msg = NULL;
    const char *idem;
    http_content c = {0};
    uint64_t fp;
    int status, stream = 0;
    turn_result res;
    memset(&res, 0, sizeof(res));

    if (http_id_or_respond(req, &status) || http_idem_key_or_respond(req, &idem, &status) ||
        http_required_body_or_respond(req,
                                      "Message content is required: send {\"message\": \"...\"} "
                                      "with Content-Type: application/json",
                                      &body, &fp, &status))
        return status;
    if (http_only_fields_or_respond(req, body, allowed, &status) ||
        wants_stream(req, body, &stream, &status))
        goto cleanup;
    if (!json_object_object_get_ex(body, "message", &msg) || !msg ||
        (json_object_is_type(msg, json_type_string) && !json_object_get_string_len(msg))) {
        status = http_send_error(req, CTXD_E_MISSING_FIELD,
                                 "Message content is required: 'message' must be a "
                                 "non-empty string or an array of content blocks");
        goto cleanup;
    }
    if (http_content_or_respond(req, msg, "message", "user", req->cfg->max_message_bytes, &c,
                                &status) ||
        http_metadata_or_respond(req, body, "message", &c, &status) ||
        http_tools_or_respond(req, body, &tools, &tool_choice, &status))
        goto cleanup;
    ctxd_error e;
    if (auth_rate_tokens_check(req->w, req->who, NULL, &e)) { /* before the model is called */
        status = http_send_failure(req, &e);
        goto cleanup;
    }
    stream_state ss = {req, 0, 0};
    turn_request tr = {.context_id = req->id,
                       .message = c.text,
                       .message_len = c.len,
                       .idem_key = idem,
                       .fingerprint = fp,
                       .on_start = stream ? stream_start : NULL,
                       .on_delta = stream ? stream_delta : NULL,
                       .stream_arg = &ss,
                       .message_json = c.json,
                       .metadata = c.metadata,
                       .metadata_len = c.metadata_len,
                       .tools_json = tools,
                       .tool_choice_json = tool_choice};
    turn_run(req->w, &tr, &res);
    status = stream ? stream_finish(req, &ss, &res) : send_result(req, 200, &res);
    if (res.error.err == CTXD_E_NONE && !res.replayed) /* the tokens this reply used */
        auth_rate_tokens_charge(req->w, req->who, turn_reply_tokens(&res.reply));
cleanup:
    http_content_free(&c);
    free(tools);
    free(tool_choice);
    turn_result_free(&res);
    if (body) json_object_put(body);
    return status;
}

/* POST /mcp/context/{id}/messages */
static int post_messages(const http_req *req) {
    static const char *const allowed[] = {"messages", NULL};
    static const char *const msg_allowed[] = {"role", "content", "metadata", NULL};
    json_object *body = NULL, *arr;
    const char **roles = NULL, **contents = NULL, **metas = NULL, *idem;
    size_t *lens = NULL, *meta_lens = NULL, n = 0;
    int *json = NULL;
    http_content *cs = NULL;
    uint64_t fp;
    char if_match[HTTP_IF_MATCH_MAX];
    int status;
    turn_result res;
    memset(&res, 0, sizeof(res));

    if (http_id_or_respond(req, &status) || http_idem_key_or_respond(req, &idem, &status) ||
        http_if_match_or_respond(req, if_match, &status) ||
        http_required_body_or_respond(req,
                                      "Send {\"messages\": [{\"role\": \"user\", "
                                      "\"content\": \"...\"}, ...]}",
                                      &body, &fp, &status))
        return status;
    if (http_only_fields_or_respond(req, body, allowed, &status)) goto cleanup;
    if (!json_object_object_get_ex(body, "messages", &arr) ||
        !json_object_is_type(arr, json_type_array) || (n = json_object_array_length(arr)) == 0 ||
        n > MAX_APPEND) {
        status = http_send_error(req, CTXD_E_INVALID_FIELD,
                                 "Field 'messages' must be an array of 1 to %d "
                                 "{\"role\", \"content\"} objects",
                                 MAX_APPEND);
        goto cleanup;
    }
    roles = calloc(n, sizeof(*roles));
    contents = calloc(n, sizeof(*contents));
    lens = calloc(n, sizeof(*lens));
    metas = calloc(n, sizeof(*metas));
    meta_lens = calloc(n, sizeof(*meta_lens));
    json = calloc(n, sizeof(*json));
    cs = calloc(n, sizeof(*cs));
    if (!roles || !contents || !lens || !metas || !meta_lens || !json || !cs) {
        status = http_send_error(req, CTXD_E_NOMEM, "out of memory");
        goto cleanup;
    }
    for (size_t i = 0; i < n; i++) {
        json_object *m = json_object_array_get_idx(arr, i);
        const char *role;
        if (!json_object_is_type(m, json_type_object)) {
            status =
                http_send_error(req, CTXD_E_INVALID_FIELD, "messages[%zu] must be an object", i);
            goto cleanup;
        }
        json_object *content = NULL;
        char where[48];
        if (http_only_fields_or_respond(req, m, msg_allowed, &status) ||
            http_string_field_or_respond(req, m, "role", MAX_ENUM_LEN, &role, NULL, &status))
            goto cleanup;
        if (!role || (strcmp(role, "user") && strcmp(role, "assistant"))) {
            status = http_send_error(req, CTXD_E_INVALID_FIELD,
                                     "messages[%zu].role must be \"user\" or "
                                     "\"assistant\" (set the system prompt at create)",
                                     i);
            goto cleanup;
        }
        if (!json_object_object_get_ex(m, "content", &content) || !content) {
            status = http_send_error(req, CTXD_E_MISSING_FIELD,
                                     "messages[%zu].content must be a string or an array of "
                                     "content blocks",
                                     i);
            goto cleanup;
        }
        snprintf(where, sizeof(where), "messages[%zu].content", i);
        if (http_content_or_respond(req, content, where, role, req->cfg->max_message_bytes, &cs[i],
                                    &status))
            goto cleanup;
        snprintf(where, sizeof(where), "messages[%zu]", i);
        if (http_metadata_or_respond(req, m, where, &cs[i], &status)) goto cleanup;
        roles[i] = role;
        contents[i] = cs[i].text, lens[i] = cs[i].len, json[i] = cs[i].json;
        metas[i] = cs[i].metadata, meta_lens[i] = cs[i].metadata_len;
    }
    turn_append_request ar = {.context_id = req->id,
                              .roles = roles,
                              .contents = contents,
                              .content_lens = lens,
                              .n = n,
                              .content_json = json,
                              .metadatas = metas,
                              .metadata_lens = meta_lens,
                              .idem_key = idem,
                              .fingerprint = fp,
                              .if_match = if_match};
    turn_append(req->w, &ar, &res);
    status = send_result(req, 201, &res);
cleanup:
    turn_result_free(&res);
    for (size_t i = 0; cs && i < n; i++) http_content_free(&cs[i]);
    free(cs);
    free(roles);
    free(contents);
    free(lens);
    free(metas);
    free(meta_lens);
    free(json);
    if (body) json_object_put(body);
    return status;
}

void routes_turn_register(void) {
    http_route("POST", "/mcp/context/{id}/message", post_message);
    http_route("POST", "/mcp/context/{id}/messages", post_messages);
}
