/* llm_blocks.c: messages of content blocks (Anthropic's shape, as stored) in each provider's shape. */
#include <string.h>

#include "ctxd/buf.h"
#include "llm_http.h"

/* m's blocks, parsed (caller puts), or NULL. */
static json_object *blocks_of(const llm_message *m) {
    json_object *arr = llm_json_parse(m->content, m->content_len);
    if (arr && !json_object_is_type(arr, json_type_array)) {
        json_object_put(arr);
        arr = NULL;
    }
    return arr;
}

int llm_blocks_anthropic(json_object *msgs, const llm_message *m) {
    json_object *arr = blocks_of(m), *jm = json_object_new_object();
    if (!arr || !jm || json_object_array_add(msgs, jm)) {
        json_object_put(arr);
        json_object_put(jm);
        return CTXD_ERR;
    }
    json_object_object_add(jm, "role", json_object_new_string(m->role));
    json_object_object_add(jm, "content", arr); /* exactly as given: signatures, ids */
    return CTXD_OK;
}

static const char *str_of(json_object *o, const char *key) { return llm_json_str(o, key); }

static const char *or_empty(const char *s) { return s ? s : ""; }

/* An image or document source as a URL: the url itself, or a data: URL. */
static json_object *source_url(json_object *src) {
    const char *type = str_of(src, "type"), *url = str_of(src, "url");
    if (type && !strcmp(type, "url") && url) return json_object_new_string(url);
    const char *mt = str_of(src, "media_type"), *data = str_of(src, "data");
    if (!mt || !data) return NULL;
    buf b;
    buf_init(&b);
    buf_printf(&b, "data:%s;base64,%s", mt, data);
    json_object *s = b.err ? NULL : json_object_new_string_len(b.data, (int)b.len);
    buf_free(&b);
    return s;
}

/* OpenAI content parts for a user's text, image and document blocks. */
static int add_part(json_object *parts, json_object *blk) {
    const char *type = str_of(blk, "type");
    json_object *p = json_object_new_object(), *src = NULL, *v;
    if (!p || json_object_array_add(parts, p)) {
        json_object_put(p);
        return CTXD_ERR;
    }
    json_object_object_get_ex(blk, "source", &src);
    if (!strcmp(type, "image") && src && (v = source_url(src))) {
        json_object *iu = json_object_new_object();
        json_object_object_add(p, "type", json_object_new_string("image_url"));
        json_object_object_add(iu, "url", v);
        json_object_object_add(p, "image_url", iu);
    } else if (!strcmp(type, "document") && src && str_of(src, "type") &&
               !strcmp(str_of(src, "type"), "base64") && (v = source_url(src))) {
        json_object *f = json_object_new_object();
        json_object_object_add(p, "type", json_object_new_string("file"));
        json_object_object_add(f, "file_data", v);
        json_object_object_add(
            f, "filename",
            json_object_new_string(str_of(blk, "title") ? str_of(blk, "title") : "document.pdf"));
        json_object_object_add(p, "file", f);
    } else {
        /* text, a text document, or what OpenAI has no part for: its text */
        const char *t = str_of(blk, "text");
        if (!t && src) t = str_of(src, "data");
        json_object_object_add(p, "type", json_object_new_string("text"));
        json_object_object_add(p, "text", json_object_new_string(t ? t : ""));
    }
    return CTXD_OK;
}

/* A tool_result's content as the text of a "tool" message. */
static json_object *result_text(json_object *blk) {
    json_object *c;
    if (!json_object_object_get_ex(blk, "content", &c)) return json_object_new_string("");
    if (json_object_is_type(c, json_type_string)) return json_object_get(c);
    buf b;
    buf_init(&b);
    size_t n = json_object_is_type(c, json_type_array) ? json_object_array_length(c) : 0;
    for (size_t i = 0; i < n; i++) {
        const char *t = str_of(json_object_array_get_idx(c, i), "text");
        if (t) buf_printf(&b, "%s%s", b.len ? "\n" : "", t);
    }
    json_object *s = json_object_new_string_len(b.data ? b.data : "", (int)b.len);
    buf_free(&b);
    return s;
}

static int add_obj(json_object *msgs, json_object *o) {
    if (o && !json_object_array_add(msgs, o)) return CTXD_OK;
    json_object_put(o);
    return CTXD_ERR;
}

int llm_blocks_openai(json_object *msgs, const llm_message *m) {
    json_object *arr = blocks_of(m), *parts = json_object_new_array(),
                *calls = json_object_new_array();
    int rc = CTXD_ERR, assistant = !strcmp(m->role, "assistant");
    buf text;
    buf_init(&text);
    if (!arr || !parts || !calls) goto cleanup;
    size_t n = json_object_array_length(arr);
    for (size_t i = 0; i < n; i++) {
        json_object *blk = json_object_array_get_idx(arr, i), *input;
        const char *type = str_of(blk, "type");
        if (!type || !strcmp(type, "thinking") || !strcmp(type, "redacted_thinking")) continue;
        if (!strcmp(type, "tool_use")) { /* the assistant's call: a tool_calls entry */
            json_object *c = json_object_new_object(), *f = json_object_new_object();
            json_object_object_add(c, "id", json_object_new_string(or_empty(str_of(blk, "id"))));
            json_object_object_add(c, "type", json_object_new_string("function"));
            json_object_object_add(f, "name",
                                   json_object_new_string(or_empty(str_of(blk, "name"))));
            json_object_object_add(
                f, "arguments",
                json_object_new_string(
                    json_object_object_get_ex(blk, "input", &input)
                        ? json_object_to_json_string_ext(input, JSON_C_TO_STRING_PLAIN |
                                                                    JSON_C_TO_STRING_NOSLASHESCAPE)
                        : "{}"));
            json_object_object_add(c, "function", f);
            if (json_object_array_add(calls, c)) goto cleanup;
        } else if (!strcmp(type, "tool_result")) { /* the result: a "tool" message */
            json_object *t = json_object_new_object();
            json_object_object_add(t, "role", json_object_new_string("tool"));
            json_object_object_add(t, "tool_call_id",
                                   json_object_new_string(or_empty(str_of(blk, "tool_use_id"))));
            json_object_object_add(t, "content", result_text(blk));
            if (add_obj(msgs, t)) goto cleanup;
        } else if (assistant) { /* an assistant's text is one string */
            const char *t = str_of(blk, "text");
            if (t) buf_printf(&text, "%s%s", text.len ? "\n" : "", t);
        } else if (add_part(parts, blk)) {
            goto cleanup;
        }
    }
    if (text.err) goto cleanup;
    if (assistant && (text.len || json_object_array_length(calls))) {
        json_object *a = json_object_new_object();
        json_object_object_add(a, "role", json_object_new_string("assistant"));
        json_object_object_add(
            a, "content", text.len ? json_object_new_string_len(text.data, (int)text.len) : NULL);
        if (json_object_array_length(calls)) {
            json_object_object_add(a, "tool_calls", calls);
            calls = NULL;
        }
        if (add_obj(msgs, a)) goto cleanup;
    } else if (!assistant && json_object_array_length(parts)) {
        json_object *u = json_object_new_object();
        json_object_object_add(u, "role", json_object_new_string(m->role));
        json_object_object_add(u, "content", parts);
        parts = NULL;
        if (add_obj(msgs, u)) goto cleanup;
    }
    rc = CTXD_OK;
cleanup:
    buf_free(&text);
    json_object_put(arr);
    json_object_put(parts);
    json_object_put(calls);
    return rc;
}

/* A tool's Anthropic tool_choice as OpenAI's. */
static json_object *openai_choice(json_object *c) {
    const char *type = str_of(c, "type"), *name = str_of(c, "name");
    if (!type || !strcmp(type, "auto")) return json_object_new_string("auto");
    if (!strcmp(type, "any")) return json_object_new_string("required");
    if (!strcmp(type, "none")) return json_object_new_string("none");
    json_object *o = json_object_new_object(), *f = json_object_new_object();
    json_object_object_add(o, "type", json_object_new_string("function"));
    json_object_object_add(f, "name", json_object_new_string(or_empty(name)));
    json_object_object_add(o, "function", f);
    return o;
}

int llm_blocks_openai_tools(json_object *body, const llm_request *req) {
    json_object *tools = req->tools_json ? llm_json_parse(req->tools_json, strlen(req->tools_json))
                                         : NULL,
                *out = NULL, *choice = NULL;
    int rc = CTXD_ERR;
    if (!req->tools_json) return CTXD_OK;
    if (!tools || !json_object_is_type(tools, json_type_array) || !(out = json_object_new_array()))
        goto cleanup;
    for (size_t i = 0; i < json_object_array_length(tools); i++) {
        json_object *t = json_object_array_get_idx(tools, i), *schema;
        json_object *o = json_object_new_object(), *f = json_object_new_object();
        json_object_object_add(o, "type", json_object_new_string("function"));
        json_object_object_add(f, "name", json_object_new_string(or_empty(str_of(t, "name"))));
        if (str_of(t, "description"))
            json_object_object_add(f, "description",
                                   json_object_new_string(str_of(t, "description")));
        if (json_object_object_get_ex(t, "input_schema", &schema))
            json_object_object_add(f, "parameters", json_object_get(schema));
        json_object_object_add(o, "function", f);
        if (json_object_array_add(out, o)) goto cleanup;
    }
    json_object_object_add(body, "tools", out);
    out = NULL;
    if (req->tool_choice_json) {
        if (!(choice = llm_json_parse(req->tool_choice_json, strlen(req->tool_choice_json))))
            goto cleanup;
        json_object_object_add(body, "tool_choice", openai_choice(choice));
    }
    rc = CTXD_OK;
cleanup:
    json_object_put(tools);
    json_object_put(out);
    json_object_put(choice);
    return rc;
}

int llm_blocks_from_openai(llm_response *resp, json_object *message) {
    json_object *blocks = json_object_new_array(), *calls, *content;
    int rc = CTXD_ERR;
    if (!blocks) return CTXD_ERR;
    if (json_object_object_get_ex(message, "content", &content) &&
        json_object_is_type(content, json_type_string) && json_object_get_string_len(content)) {
        json_object *t = json_object_new_object();
        json_object_object_add(t, "type", json_object_new_string("text"));
        json_object_object_add(t, "text", json_object_get(content));
        json_object_array_add(blocks, t);
    }
    json_object_object_get_ex(message, "tool_calls", &calls);
    for (size_t i = 0; i < json_object_array_length(calls); i++) {
        json_object *c = json_object_array_get_idx(calls, i), *f = NULL, *input;
        json_object_object_get_ex(c, "function", &f);
        const char *args = str_of(f, "arguments");
        if (!str_of(c, "id") || !str_of(f, "name") ||
            !(input = llm_json_parse(args ? args : "{}", args ? strlen(args) : 2)))
            goto cleanup;
        json_object *u = json_object_new_object();
        json_object_object_add(u, "type", json_object_new_string("tool_use"));
        json_object_object_add(u, "id", json_object_new_string(str_of(c, "id")));
        json_object_object_add(u, "name", json_object_new_string(str_of(f, "name")));
        json_object_object_add(u, "input", input);
        json_object_array_add(blocks, u);
    }
    rc = llm_json_keep_blocks(resp, blocks);
cleanup:
    json_object_put(blocks);
    return rc;
}
