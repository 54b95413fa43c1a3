/* sdk_anthropic.c: Anthropic's Messages API on POST /v1/messages: the request read, the answer written. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sdk_int.h"

/* Fields ctxd reads itself; the others go upstream as given. */
static const char *const own_fields[] = {"model",  "max_tokens", "messages",    "system",
                                         "stream", "tools",      "tool_choice", NULL};

/* "system": a string or an array of text blocks (joined). */
static int system_field(const http_req *req, json_object *body, sdk_call *out, int *status) {
    json_object *v;
    if (!json_object_object_get_ex(body, "system", &v) || !v) return CTXD_OK;
    buf b;
    buf_init(&b);
    if (json_object_is_type(v, json_type_string)) {
        buf_putn(&b, json_object_get_string(v), (size_t)json_object_get_string_len(v));
    } else if (json_object_is_type(v, json_type_array)) {
        for (size_t i = 0; i < json_object_array_length(v); i++) {
            json_object *blk = json_object_array_get_idx(v, i), *t, *text;
            if (!json_object_object_get_ex(blk, "type", &t) ||
                strcmp(json_object_get_string(t), "text") ||
                !json_object_object_get_ex(blk, "text", &text) ||
                !json_object_is_type(text, json_type_string)) {
                buf_free(&b);
                *status = http_send_error(req, CTXD_E_INVALID_FIELD,
                                          "system.%zu: must be a text block {\"type\": \"text\", "
                                          "\"text\": \"...\"}",
                                          i);
                return CTXD_ERR;
            }
            if (i) buf_puts(&b, "\n");
            buf_putn(&b, json_object_get_string(text), (size_t)json_object_get_string_len(text));
        }
    } else {
        *status = http_send_error(req, CTXD_E_INVALID_FIELD,
                                  "system: must be a string or an array of text blocks");
        return CTXD_ERR;
    }
    out->system = buf_take(&b, NULL);
    if (!out->system) {
        *status = http_send_error(req, CTXD_E_NOMEM, "out of memory");
        return CTXD_ERR;
    }
    return CTXD_OK;
}

static int parse(const http_req *req, json_object *body, sdk_call *out, int *status) {
    static const char *const msg_fields[] = {"role", "content", NULL};
    json_object *arr;
    size_t n;
    if (sdk_common_fields(req, body, "max_tokens", own_fields, out, status) ||
        system_field(req, body, out, status) ||
        http_tools_or_respond(req, body, &out->tools, &out->tool_choice, status))
        return CTXD_ERR;
    if (sdk_messages_or_respond(req, body, &arr, &n, status)) return CTXD_ERR;
    if (!(out->msgs = calloc(n, sizeof(*out->msgs)))) {
        *status = http_send_error(req, CTXD_E_NOMEM, "out of memory");
        return CTXD_ERR;
    }
    for (size_t i = 0; i < n; i++) {
        json_object *m = json_object_array_get_idx(arr, i), *content;
        const char *role;
        char where[48];
        if (!json_object_is_type(m, json_type_object)) {
            *status =
                http_send_error(req, CTXD_E_INVALID_FIELD, "messages.%zu: must be an object", i);
            return CTXD_ERR;
        }
        if (http_only_fields_or_respond(req, m, msg_fields, status) ||
            http_string_field_or_respond(req, m, "role", 64, &role, NULL, status))
            return CTXD_ERR;
        if (!role || (strcmp(role, "user") && strcmp(role, "assistant"))) {
            *status = http_send_error(req, CTXD_E_INVALID_FIELD,
                                      "messages.%zu.role: must be \"user\" or \"assistant\"", i);
            return CTXD_ERR;
        }
        if (!json_object_object_get_ex(m, "content", &content) || !content) {
            *status = http_send_error(req, CTXD_E_MISSING_FIELD,
                                      "messages.%zu.content: Field required", i);
            return CTXD_ERR;
        }
        out->msgs[i].role = strcmp(role, "user") ? "assistant" : "user";
        out->msgs[i].src = json_object_get(content);
        out->n = i + 1;
        snprintf(where, sizeof(where), "messages[%zu].content", i);
        if (http_content_or_respond(req, content, where, out->msgs[i].role,
                                    req->cfg->max_message_bytes, &out->msgs[i].c, status))
            return CTXD_ERR;
    }
    return CTXD_OK;
}

/* usage as Anthropic reports it (unknown counts as 0). */
static void put_usage(buf *b, const turn_reply *r) {
    buf_printf(b,
               "{\"input_tokens\":%lld,\"output_tokens\":%lld,\"cache_creation_input_tokens\":%lld,"
               "\"cache_read_input_tokens\":%lld}",
               (long long)(r->input_tokens > 0 ? r->input_tokens : 0),
               (long long)(r->output_tokens > 0 ? r->output_tokens : 0),
               (long long)(r->cache_creation_input_tokens > 0 ? r->cache_creation_input_tokens : 0),
               (long long)(r->cache_read_input_tokens > 0 ? r->cache_read_input_tokens : 0));
}

static void render(buf *b, const sdk_stream *s, const turn_reply *r) {
    json_object *blocks = sdk_reply_blocks(r);
    if (!blocks) {
        b->err = 1;
        return;
    }
    buf_puts(b, "{\"id\":");
    buf_put_json_string(b, s->id, strlen(s->id));
    buf_puts(b, ",\"type\":\"message\",\"role\":\"assistant\",\"model\":");
    buf_put_json_string(b, s->model, strlen(s->model));
    buf_printf(b, ",\"content\":%s,\"stop_reason\":\"%s\",\"stop_sequence\":null,\"usage\":",
               json_object_to_json_string_ext(blocks, JSON_C_TO_STRING_PLAIN |
                                                          JSON_C_TO_STRING_NOSLASHESCAPE),
               sdk_stop_anthropic(r->stop_reason));
    put_usage(b, r);
    buf_puts(b, "}");
    json_object_put(blocks);
}

/* One event: its name is also its data's "type". */
static void event(sdk_stream *s, const char *type, buf *b) {
    if (!b->err) sdk_stream_event(s, type, b->data, b->len);
    buf_free(b);
}

static void open_stream(sdk_stream *s) {
    buf b;
    buf_init(&b);
    buf_puts(&b, "{\"type\":\"message_start\",\"message\":{\"id\":");
    buf_put_json_string(&b, s->id, strlen(s->id));
    buf_puts(&b, ",\"type\":\"message\",\"role\":\"assistant\",\"model\":");
    buf_put_json_string(&b, s->model, strlen(s->model));
    buf_puts(&b, ",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":"
                 "{\"input_tokens\":0,\"output_tokens\":0}}}");
    event(s, "message_start", &b);
    buf_init(&b);
    buf_puts(&b, "{\"type\":\"ping\"}");
    event(s, "ping", &b);
}

static void block_start(sdk_stream *s, const char *content_block) {
    buf b;
    buf_init(&b);
    buf_printf(&b, "{\"type\":\"content_block_start\",\"index\":%d,\"content_block\":%s}", s->index,
               content_block);
    event(s, "content_block_start", &b);
}

/* A delta of kind (text_delta...) whose field holds value[0..len). */
static void block_delta(sdk_stream *s, const char *kind, const char *field, const char *value,
                        size_t len) {
    buf b;
    buf_init(&b);
    buf_printf(&b,
               "{\"type\":\"content_block_delta\",\"index\":%d,\"delta\":{\"type\":\"%s\",\"%s\":",
               s->index, kind, field);
    buf_put_json_string(&b, value, len);
    buf_puts(&b, "}}");
    event(s, "content_block_delta", &b);
}

static void block_stop(sdk_stream *s) {
    buf b;
    buf_init(&b);
    buf_printf(&b, "{\"type\":\"content_block_stop\",\"index\":%d}", s->index++);
    event(s, "content_block_stop", &b);
}

static int delta(void *arg, const char *text, size_t len) {
    sdk_stream *s = arg;
    if (!s->text_open) block_start(s, "{\"type\":\"text\",\"text\":\"\"}");
    s->text_open = s->sent = 1;
    block_delta(s, "text_delta", "text", text, len);
    return CTXD_OK;
}

static const char *str(json_object *o, const char *key) {
    json_object *v;
    return json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string)
               ? json_object_get_string(v)
               : NULL;
}

/* A finished block that is not text, as the events that build it. */
static int block(void *arg, const char *json, size_t len) {
    sdk_stream *s = arg;
    json_object *b = json_tokener_parse(json), *v;
    const char *type = str(b, "type");
    (void)len;
    if (s->text_open) block_stop(s);
    s->text_open = 0;
    s->sent = 1;
    if (type && !strcmp(type, "thinking")) {
        const char *t = str(b, "thinking"), *sig = str(b, "signature");
        block_start(s, "{\"type\":\"thinking\",\"thinking\":\"\",\"signature\":\"\"}");
        if (t) block_delta(s, "thinking_delta", "thinking", t, strlen(t));
        if (sig) block_delta(s, "signature_delta", "signature", sig, strlen(sig));
    } else if (type && !strcmp(type, "tool_use")) {
        json_object *start = json_object_new_object();
        const char *id = str(b, "id"), *name = str(b, "name");
        json_object_object_add(start, "type", json_object_new_string("tool_use"));
        json_object_object_add(start, "id", json_object_new_string(id ? id : ""));
        json_object_object_add(start, "name", json_object_new_string(name ? name : ""));
        json_object_object_add(start, "input", json_object_new_object());
        block_start(s, json_object_to_json_string_ext(start, JSON_C_TO_STRING_PLAIN));
        json_object_put(start);
        const char *input = json_object_object_get_ex(b, "input", &v)
                                ? json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN)
                                : "{}";
        block_delta(s, "input_json_delta", "partial_json", input, strlen(input));
    } else { /* redacted_thinking and the rest: whole at the start */
        block_start(s, json);
    }
    block_stop(s);
    if (b) json_object_put(b);
    return CTXD_OK;
}

static void close_stream(sdk_stream *s, const turn_reply *r, const ctxd_error *e) {
    buf b;
    if (s->text_open) block_stop(s);
    s->text_open = 0;
    buf_init(&b);
    if (e) {
        int status;
        http_error_body_api(&b, HTTP_API_ANTHROPIC, e->err, e->msg, &status);
        event(s, "error", &b);
        return;
    }
    buf_printf(&b,
               "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"%s\",\"stop_sequence\":"
               "null},\"usage\":",
               sdk_stop_anthropic(r->stop_reason));
    put_usage(&b, r);
    buf_puts(&b, "}");
    event(s, "message_delta", &b);
    buf_init(&b);
    buf_puts(&b, "{\"type\":\"message_stop\"}");
    event(s, "message_stop", &b);
}

const sdk_dialect sdk_anthropic = {HTTP_API_ANTHROPIC, parse, render, open_stream, delta, block,
                                   close_stream};
