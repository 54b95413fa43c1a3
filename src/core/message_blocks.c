/* message_blocks.c: what content blocks (Anthropic's shape) are worth in tokens, and their text. */
#include <json-c/json.h>
#include <string.h>

#include "ctxd/message.h"

/* The array of blocks in content[0..len), or NULL (caller puts it). */
static json_object *parse_blocks(const char *content, size_t len) {
    json_tokener *tok = json_tokener_new();
    if (!tok) return NULL;
    json_object *o = json_tokener_parse_ex(tok, content, (int)len);
    json_tokener_free(tok);
    if (o && !json_object_is_type(o, json_type_array)) {
        json_object_put(o);
        o = NULL;
    }
    return o;
}

static const char *str_of(json_object *o, const char *key, size_t *len) {
    json_object *v;
    if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
        return NULL;
    if (len) *len = (size_t)json_object_get_string_len(v);
    return json_object_get_string(v);
}

static int64_t blocks_tokens(json_object *arr);

/* One block's estimate, without the message's overhead. */
static int64_t block_tokens(json_object *b) {
    const char *type = str_of(b, "type", NULL);
    size_t n = 0;
    json_object *v;
    if (!type) return message_system_tokens(strlen(json_object_to_json_string(b)));
    if (!strcmp(type, "text") && str_of(b, "text", &n)) return message_system_tokens(n);
    if (!strcmp(type, "thinking") && str_of(b, "thinking", &n)) return message_system_tokens(n);
    if (!strcmp(type, "redacted_thinking") && str_of(b, "data", &n))
        return message_system_tokens(n);
    if (!strcmp(type, "image")) return MESSAGE_IMAGE_TOKENS;
    if (!strcmp(type, "document") && json_object_object_get_ex(b, "source", &v)) {
        /* base64 data: its decoded bytes; text: its bytes; else a page */
        const char *data = str_of(v, "data", &n);
        const char *stype = str_of(v, "type", NULL);
        if (data && stype && !strcmp(stype, "base64")) return message_system_tokens(n * 3 / 4);
        if (data) return message_system_tokens(n);
        if (json_object_object_get_ex(v, "content", &v) && json_object_is_type(v, json_type_array))
            return blocks_tokens(v);
        return MESSAGE_IMAGE_TOKENS;
    }
    if (!strcmp(type, "tool_use")) {
        str_of(b, "name", &n);
        int64_t t = message_system_tokens(n);
        if (json_object_object_get_ex(b, "input", &v))
            t += message_system_tokens(strlen(json_object_to_json_string(v)));
        return t;
    }
    if (!strcmp(type, "tool_result") && json_object_object_get_ex(b, "content", &v)) {
        if (json_object_is_type(v, json_type_array)) return blocks_tokens(v);
        if (json_object_is_type(v, json_type_string))
            return message_system_tokens((size_t)json_object_get_string_len(v));
    }
    return message_system_tokens(strlen(json_object_to_json_string(b)));
}

static int64_t blocks_tokens(json_object *arr) {
    int64_t t = 0;
    size_t n = json_object_array_length(arr);
    for (size_t i = 0; i < n; i++) t += block_tokens(json_object_array_get_idx(arr, i));
    return t;
}

int64_t message_content_tokens(const char *content, size_t len, int content_json) {
    if (!content_json) return message_tokens(len);
    json_object *arr = parse_blocks(content, len);
    if (!arr) return message_tokens(len);
    int64_t t = blocks_tokens(arr) + MESSAGE_TOKEN_OVERHEAD;
    json_object_put(arr);
    return t;
}

static void blocks_text(buf *b, json_object *arr, int *first) {
    size_t n = json_object_array_length(arr);
    for (size_t i = 0; i < n; i++) {
        json_object *blk = json_object_array_get_idx(arr, i), *v;
        const char *type = str_of(blk, "type", NULL), *s;
        size_t len = 0;
        if (!type) continue;
        if (!*first) buf_puts(b, "\n");
        *first = 0;
        if (!strcmp(type, "text") && (s = str_of(blk, "text", &len))) {
            buf_putn(b, s, len);
        } else if (!strcmp(type, "tool_use")) {
            s = str_of(blk, "name", &len);
            buf_puts(b, "[tool_use ");
            if (s) buf_putn(b, s, len);
            buf_puts(b, "]");
        } else if (!strcmp(type, "tool_result")) {
            buf_puts(b, "[tool_result] ");
            if (json_object_object_get_ex(blk, "content", &v)) {
                if (json_object_is_type(v, json_type_string))
                    buf_putn(b, json_object_get_string(v), (size_t)json_object_get_string_len(v));
                else if (json_object_is_type(v, json_type_array)) {
                    int inner = 1;
                    blocks_text(b, v, &inner);
                }
            }
        } else {
            buf_printf(b, "[%s]", type);
        }
    }
}

int message_has_tool_result(const char *content, size_t len, int content_json) {
    json_object *arr = content_json ? parse_blocks(content, len) : NULL;
    int found = 0;
    for (size_t i = 0; arr && i < json_object_array_length(arr) && !found; i++) {
        const char *type = str_of(json_object_array_get_idx(arr, i), "type", NULL);
        found = type && !strcmp(type, "tool_result");
    }
    if (arr) json_object_put(arr);
    return found;
}

void message_content_text(buf *b, const char *content, size_t len, int content_json) {
    json_object *arr = content_json ? parse_blocks(content, len) : NULL;
    int first = 1;
    if (!arr) {
        buf_putn(b, content, len);
        return;
    }
    blocks_text(b, arr, &first);
    json_object_put(arr);
}
