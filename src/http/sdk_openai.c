/* sdk_openai.c: OpenAI's Chat Completions on POST /v1/chat/completions: the request read into the stored shape, the answer written. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sdk_int.h"

static const char *const own_fields[] = {"model",      "messages",
                                         "max_tokens", "max_completion_tokens",
                                         "stream",     "stream_options",
                                         "tools",      "tool_choice",
                                         "n",          NULL};

static const char *str(json_object *o, const char *key) {
    json_object *v;
    return o && json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string)
               ? json_object_get_string(v)
               : NULL;
}

static json_object *text_block(const char *text) {
    json_object *t = json_object_new_object();
    json_object_object_add(t, "type", json_object_new_string("text"));
    json_object_object_add(t, "text", json_object_new_string(text));
    return t;
}

/* A data: URL's media type and base64 data as a base64 source, else the URL
 * as a url source. */
static json_object *source_of(const char *url) {
    json_object *src = json_object_new_object();
    const char *comma = strchr(url, ',');
    if (!strncmp(url, "data:", 5) && comma && comma - url > 12 &&
        !strncmp(comma - 7, ";base64", 7)) {
        json_object_object_add(src, "type", json_object_new_string("base64"));
        json_object_object_add(src, "media_type",
                               json_object_new_string_len(url + 5, (int)(comma - 7 - (url + 5))));
        json_object_object_add(src, "data", json_object_new_string(comma + 1));
    } else {
        json_object_object_add(src, "type", json_object_new_string("url"));
        json_object_object_add(src, "url", json_object_new_string(url));
    }
    return src;
}

/* Content parts (text, image_url, file) as blocks; *bad names a part that
 * has no counterpart. */
static json_object *parts_as_blocks(json_object *parts, const char **bad) {
    json_object *out = json_object_new_array();
    for (size_t i = 0; out && i < json_object_array_length(parts); i++) {
        json_object *p = json_object_array_get_idx(parts, i), *o, *b = NULL;
        const char *type = str(p, "type");
        if (type && !strcmp(type, "text") && str(p, "text")) {
            b = text_block(str(p, "text"));
        } else if (type && !strcmp(type, "image_url") &&
                   json_object_object_get_ex(p, "image_url", &o) && str(o, "url")) {
            b = json_object_new_object();
            json_object_object_add(b, "type", json_object_new_string("image"));
            json_object_object_add(b, "source", source_of(str(o, "url")));
        } else if (type && !strcmp(type, "file") && json_object_object_get_ex(p, "file", &o) &&
                   str(o, "file_data")) {
            b = json_object_new_object();
            json_object_object_add(b, "type", json_object_new_string("document"));
            json_object_object_add(b, "source", source_of(str(o, "file_data")));
        } else {
            *bad = type ? type : "(no type)";
            json_object_put(out);
            return NULL;
        }
        json_object_array_add(out, b);
    }
    return out;
}

/* Text of a string or of text parts (system, developer, tool messages). */
static int text_of(json_object *content, buf *b) {
    if (json_object_is_type(content, json_type_string)) {
        buf_puts(b, json_object_get_string(content));
        return CTXD_OK;
    }
    if (!json_object_is_type(content, json_type_array)) return CTXD_ERR;
    for (size_t i = 0; i < json_object_array_length(content); i++) {
        const char *t = str(json_object_array_get_idx(content, i), "text");
        if (!t) return CTXD_ERR;
        buf_printf(b, "%s%s", i ? "\n" : "", t);
    }
    return CTXD_OK;
}

/* An assistant message: its text and tool_calls as blocks (or the text
 * alone as a string). NULL with *why when malformed. */
static json_object *assistant_content(json_object *m, const char **why) {
    json_object *content = NULL, *calls = NULL, *blocks;
    json_object_object_get_ex(m, "content", &content);
    json_object_object_get_ex(m, "tool_calls", &calls);
    buf text;
    buf_init(&text);
    if (content && text_of(content, &text)) {
        *why = "content must be a string, text parts or null";
        buf_free(&text);
        return NULL;
    }
    size_t n =
        calls && json_object_is_type(calls, json_type_array) ? json_object_array_length(calls) : 0;
    if (!n) {
        json_object *s = json_object_new_string_len(text.data ? text.data : "", (int)text.len);
        buf_free(&text);
        return s;
    }
    blocks = json_object_new_array();
    if (text.len) json_object_array_add(blocks, text_block(text.data));
    buf_free(&text);
    for (size_t i = 0; i < n; i++) {
        json_object *c = json_object_array_get_idx(calls, i), *f = NULL, *input;
        json_object_object_get_ex(c, "function", &f);
        const char *args = str(f, "arguments");
        if (!str(c, "id") || !str(f, "name") ||
            !(input = json_tokener_parse(args && *args ? args : "{}")) ||
            !json_object_is_type(input, json_type_object)) {
            *why = "tool_calls: each needs an id, a function name and arguments that are a JSON "
                   "object";
            json_object_put(blocks);
            return NULL;
        }
        json_object *u = json_object_new_object();
        json_object_object_add(u, "type", json_object_new_string("tool_use"));
        json_object_object_add(u, "id", json_object_new_string(str(c, "id")));
        json_object_object_add(u, "name", json_object_new_string(str(f, "name")));
        json_object_object_add(u, "input", input);
        json_object_array_add(blocks, u);
    }
    return blocks;
}

/* Add a message of role with content (taken) to out, checked as stored. */
static int add_message(const http_req *req, sdk_call *out, const char *role, json_object *content,
                       int *status) {
    char where[48];
    sdk_message *m = &out->msgs[out->n++];
    m->role = role;
    m->src = content;
    snprintf(where, sizeof(where), "messages[%zu].content", out->n - 1);
    return http_content_or_respond(req, content, where, role, req->cfg->max_message_bytes, &m->c,
                                   status);
}

static int bad(const http_req *req, int *status, size_t i, const char *why) {
    *status = http_send_error(req, CTXD_E_INVALID_FIELD, "messages[%zu]: %s", i, why);
    return CTXD_ERR;
}

/* The messages: system and developer ones into the system prompt, tool
 * results (consecutive ones together) into a user message of tool_result
 * blocks, tool_calls into tool_use blocks. */
static int parse_messages(const http_req *req, json_object *arr, sdk_call *out, int *status) {
    size_t n = json_object_array_length(arr);
    buf system;
    json_object *results = NULL; /* tool_result blocks not yet added */
    int rc = CTXD_ERR;
    buf_init(&system);
    if (!(out->msgs = calloc(n, sizeof(*out->msgs)))) goto oom;
    for (size_t i = 0; i <= n; i++) {
        json_object *m = i < n ? json_object_array_get_idx(arr, i) : NULL, *content = NULL;
        const char *role = str(m, "role"), *why = NULL;
        if (results && (!role || strcmp(role, "tool"))) { /* the run of tool results ends */
            json_object *r = results;
            results = NULL;
            if (add_message(req, out, "user", r, status)) goto cleanup;
        }
        if (i == n) break;
        if (!json_object_is_type(m, json_type_object) || !role) {
            bad(req, status, i, "must be an object with a role");
            goto cleanup;
        }
        json_object_object_get_ex(m, "content", &content);
        if (!strcmp(role, "system") || !strcmp(role, "developer")) {
            if (system.len) buf_puts(&system, "\n");
            if (!content || text_of(content, &system)) {
                bad(req, status, i, "content must be a string or text parts");
                goto cleanup;
            }
        } else if (!strcmp(role, "user")) {
            json_object *c;
            if (content && json_object_is_type(content, json_type_string)) {
                c = json_object_get(content);
            } else if (content && json_object_is_type(content, json_type_array)) {
                const char *part = NULL;
                if (!(c = parts_as_blocks(content, &part))) {
                    *status = http_send_error(req, CTXD_E_INVALID_FIELD,
                                              "messages[%zu].content: a part of type '%s' is not "
                                              "supported (text, image_url and file are)",
                                              i, part ? part : "?");
                    goto cleanup;
                }
            } else {
                bad(req, status, i, "content must be a string or an array of parts");
                goto cleanup;
            }
            if (add_message(req, out, "user", c, status)) goto cleanup;
        } else if (!strcmp(role, "assistant")) {
            json_object *c = assistant_content(m, &why);
            if (!c) {
                bad(req, status, i, why);
                goto cleanup;
            }
            if (add_message(req, out, "assistant", c, status)) goto cleanup;
        } else if (!strcmp(role, "tool")) {
            buf t;
            buf_init(&t);
            if (!str(m, "tool_call_id") || !content || text_of(content, &t) || t.err) {
                buf_free(&t);
                bad(req, status, i, "a tool message needs tool_call_id and content (text)");
                goto cleanup;
            }
            json_object *r = json_object_new_object();
            json_object_object_add(r, "type", json_object_new_string("tool_result"));
            json_object_object_add(r, "tool_use_id",
                                   json_object_new_string(str(m, "tool_call_id")));
            json_object_object_add(r, "content",
                                   json_object_new_string_len(t.data ? t.data : "", (int)t.len));
            buf_free(&t);
            if (!results && !(results = json_object_new_array())) goto oom;
            json_object_array_add(results, r);
        } else {
            bad(req, status, i,
                "role must be \"system\", \"developer\", \"user\", \"assistant\" or \"tool\"");
            goto cleanup;
        }
    }
    if (!out->n) {
        *status = http_send_error(req, CTXD_E_INVALID_FIELD,
                                  "messages: holds no user or assistant message");
        goto cleanup;
    }
    if (system.err) goto oom;
    if (system.len) out->system = buf_take(&system, NULL);
    rc = CTXD_OK;
    goto cleanup;
oom:
    *status = http_send_error(req, CTXD_E_NOMEM, "out of memory");
cleanup:
    if (results) json_object_put(results);
    buf_free(&system);
    return rc;
}

/* tools and tool_choice in Anthropic's shape, checked as a turn's. */
static int parse_tools(const http_req *req, json_object *body, sdk_call *out, int *status) {
    json_object *tools = NULL, *choice = NULL, *both = json_object_new_object(), *arr = NULL;
    int rc = CTXD_ERR;
    json_object_object_get_ex(body, "tools", &tools);
    json_object_object_get_ex(body, "tool_choice", &choice);
    if (tools && json_object_is_type(tools, json_type_array)) {
        arr = json_object_new_array();
        for (size_t i = 0; i < json_object_array_length(tools); i++) {
            json_object *t = json_object_array_get_idx(tools, i), *f = NULL, *params;
            json_object_object_get_ex(t, "function", &f);
            json_object *a = json_object_new_object();
            if (str(f, "name"))
                json_object_object_add(a, "name", json_object_new_string(str(f, "name")));
            if (str(f, "description"))
                json_object_object_add(a, "description",
                                       json_object_new_string(str(f, "description")));
            if (json_object_object_get_ex(f, "parameters", &params))
                json_object_object_add(a, "input_schema", json_object_get(params));
            else
                json_object_object_add(
                    a, "input_schema",
                    json_tokener_parse("{\"type\":\"object\",\"properties\":{}}"));
            json_object_array_add(arr, a);
        }
        json_object_object_add(both, "tools", arr);
    } else if (tools) {
        json_object_object_add(both, "tools", json_object_get(tools)); /* refused below */
    }
    if (choice) {
        json_object *c = json_object_new_object(), *f = NULL;
        const char *s =
            json_object_is_type(choice, json_type_string) ? json_object_get_string(choice) : NULL;
        json_object_object_get_ex(choice, "function", &f);
        if (s && !strcmp(s, "required"))
            json_object_object_add(c, "type", json_object_new_string("any"));
        else if (s)
            json_object_object_add(c, "type", json_object_new_string(s)); /* auto, none */
        else if (str(f, "name")) {
            json_object_object_add(c, "type", json_object_new_string("tool"));
            json_object_object_add(c, "name", json_object_new_string(str(f, "name")));
        }
        json_object_object_add(both, "tool_choice", c);
    }
    rc = http_tools_or_respond(req, both, &out->tools, &out->tool_choice, status);
    json_object_put(both);
    return rc;
}

static int parse(const http_req *req, json_object *body, sdk_call *out, int *status) {
    json_object *arr, *v;
    size_t n;
    const char *max_key = json_object_object_get_ex(body, "max_completion_tokens", NULL)
                              ? "max_completion_tokens"
                              : "max_tokens";
    if (sdk_common_fields(req, body, max_key, own_fields, out, status) ||
        parse_tools(req, body, out, status))
        return CTXD_ERR;
    if (json_object_object_get_ex(body, "n", &v) && v &&
        (!json_object_is_type(v, json_type_int) || json_object_get_int(v) != 1)) {
        *status = http_send_error(req, CTXD_E_INVALID_FIELD,
                                  "n: ctxd keeps one conversation, so only n = 1 is supported");
        return CTXD_ERR;
    }
    if (json_object_object_get_ex(body, "stream_options", &v) && v &&
        json_object_object_get_ex(v, "include_usage", &v))
        out->include_usage = json_object_get_boolean(v);
    if (sdk_messages_or_respond(req, body, &arr, &n, status)) return CTXD_ERR;
    return parse_messages(req, arr, out, status);
}

/* The reply's tool_use blocks as tool_calls (an array), or NULL when none. */
static json_object *tool_calls(json_object *blocks) {
    json_object *calls = NULL, *input;
    for (size_t i = 0; i < json_object_array_length(blocks); i++) {
        json_object *b = json_object_array_get_idx(blocks, i);
        const char *type = str(b, "type");
        if (!type || strcmp(type, "tool_use")) continue;
        if (!calls) calls = json_object_new_array();
        json_object *c = json_object_new_object(), *f = json_object_new_object();
        json_object_object_add(c, "id", json_object_new_string(str(b, "id") ? str(b, "id") : ""));
        json_object_object_add(c, "type", json_object_new_string("function"));
        json_object_object_add(f, "name",
                               json_object_new_string(str(b, "name") ? str(b, "name") : ""));
        json_object_object_add(f, "arguments",
                               json_object_new_string(json_object_object_get_ex(b, "input", &input)
                                                          ? json_object_to_json_string_ext(
                                                                input, JSON_C_TO_STRING_PLAIN)
                                                          : "{}"));
        json_object_object_add(c, "function", f);
        json_object_array_add(calls, c);
    }
    return calls;
}

/* OpenAI's prompt_tokens counts the whole prompt, cached_tokens a part of it. */
static void put_usage(buf *b, const turn_reply *r) {
    long long out = r->output_tokens > 0 ? r->output_tokens : 0;
    long long in = (long long)turn_reply_prompt_tokens(r);
    buf_printf(b, "{\"prompt_tokens\":%lld,\"completion_tokens\":%lld,\"total_tokens\":%lld", in,
               out, in + out);
    if (r->cache_read_input_tokens > 0)
        buf_printf(b, ",\"prompt_tokens_details\":{\"cached_tokens\":%lld}",
                   (long long)r->cache_read_input_tokens);
    buf_puts(b, "}");
}

/* "chatcmpl-" and what follows "msg_" in the stored reply's id. */
static void put_id(buf *b, const sdk_stream *s) { buf_printf(b, "\"chatcmpl-%s\"", s->id + 4); }

static void render(buf *b, const sdk_stream *s, const turn_reply *r) {
    json_object *blocks = sdk_reply_blocks(r), *calls = blocks ? tool_calls(blocks) : NULL;
    if (!blocks) {
        b->err = 1;
        return;
    }
    buf_puts(b, "{\"id\":");
    put_id(b, s);
    buf_printf(
        b, ",\"object\":\"chat.completion\",\"created\":%lld,\"model\":", (long long)s->created);
    buf_put_json_string(b, s->model, strlen(s->model));
    buf_puts(b, ",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":");
    if (r->text_len || !calls)
        buf_put_json_string(b, r->text ? r->text : "", r->text_len);
    else
        buf_puts(b, "null");
    buf_puts(b, ",\"refusal\":null");
    if (calls)
        buf_printf(b, ",\"tool_calls\":%s",
                   json_object_to_json_string_ext(calls, JSON_C_TO_STRING_PLAIN));
    buf_printf(b, "},\"logprobs\":null,\"finish_reason\":\"%s\"}],\"usage\":",
               sdk_stop_openai(r->stop_reason));
    put_usage(b, r);
    buf_puts(b, ",\"system_fingerprint\":null}");
    if (calls) json_object_put(calls);
    json_object_put(blocks);
}

/* One chunk: its delta (a JSON object's text) and finish_reason (NULL: null). */
static void chunk(sdk_stream *s, const char *delta, const char *finish) {
    buf b;
    buf_init(&b);
    buf_puts(&b, "{\"id\":");
    put_id(&b, s);
    buf_printf(&b, ",\"object\":\"chat.completion.chunk\",\"created\":%lld,\"model\":",
               (long long)s->created);
    buf_put_json_string(&b, s->model, strlen(s->model));
    buf_printf(&b,
               ",\"system_fingerprint\":null,\"choices\":[{\"index\":0,\"delta\":%s,\"logprobs\":"
               "null,\"finish_reason\":",
               delta);
    if (finish)
        buf_printf(&b, "\"%s\"}]", finish);
    else
        buf_puts(&b, "null}]");
    if (s->call->include_usage) buf_puts(&b, ",\"usage\":null");
    buf_puts(&b, "}");
    if (!b.err) sdk_stream_event(s, NULL, b.data, b.len);
    buf_free(&b);
}

static void open_stream(sdk_stream *s) {
    chunk(s, "{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null}", NULL);
}

static int delta(void *arg, const char *text, size_t len) {
    sdk_stream *s = arg;
    buf d;
    buf_init(&d);
    buf_puts(&d, "{\"content\":");
    buf_put_json_string(&d, text, len);
    buf_puts(&d, "}");
    if (!d.err) chunk(s, d.data, NULL);
    buf_free(&d);
    s->sent = 1;
    return CTXD_OK;
}

/* A tool_use block as one tool_calls delta; other blocks (thinking) have no
 * counterpart. */
static int block(void *arg, const char *json, size_t len) {
    sdk_stream *s = arg;
    json_object *b = json_tokener_parse(json), *arr = json_object_new_array();
    (void)len;
    s->sent = 1;
    if (b && arr && !json_object_array_add(arr, json_object_get(b))) {
        json_object *calls = tool_calls(arr);
        if (calls) {
            json_object *c = json_object_array_get_idx(calls, 0);
            json_object_object_add(c, "index", json_object_new_int(s->index++));
            buf d;
            buf_init(&d);
            buf_printf(&d, "{\"tool_calls\":%s}",
                       json_object_to_json_string_ext(calls, JSON_C_TO_STRING_PLAIN));
            if (!d.err) chunk(s, d.data, NULL);
            buf_free(&d);
            json_object_put(calls);
        }
    }
    if (arr) json_object_put(arr);
    if (b) json_object_put(b);
    return CTXD_OK;
}

static void close_stream(sdk_stream *s, const turn_reply *r, const ctxd_error *e) {
    buf b;
    buf_init(&b);
    if (e) { /* OpenAI's SDK raises an APIError for a chunk that holds "error" */
        int status;
        http_error_body_api(&b, HTTP_API_OPENAI, e->err, e->msg, &status);
        if (!b.err) sdk_stream_event(s, NULL, b.data, b.len);
        buf_free(&b);
        return;
    }
    chunk(s, "{}", sdk_stop_openai(r->stop_reason));
    if (s->call->include_usage) {
        buf_puts(&b, "{\"id\":");
        put_id(&b, s);
        buf_printf(&b, ",\"object\":\"chat.completion.chunk\",\"created\":%lld,\"model\":",
                   (long long)s->created);
        buf_put_json_string(&b, s->model, strlen(s->model));
        buf_puts(&b, ",\"system_fingerprint\":null,\"choices\":[],\"usage\":");
        put_usage(&b, r);
        buf_puts(&b, "}");
        if (!b.err) sdk_stream_event(s, NULL, b.data, b.len);
    }
    buf_free(&b);
    sdk_stream_event(s, NULL, "[DONE]", 6);
}

const sdk_dialect sdk_openai = {HTTP_API_OPENAI, parse, render,      open_stream,
                                delta,           block, close_stream};
