/* http_blocks.c: a message's content (a string, or content blocks in Anthropic's shape) and its
 * metadata, checked as they arrive: a 400 names the block and the field. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_int.h"

#define METADATA_MAX_BYTES 4096
/* An image's base64 data: Anthropic takes images of up to 5 MB. */
#define IMAGE_MAX_BASE64 (5u * 1024 * 1024 / 3 * 4 + 4)

typedef struct why {
    char text[256];
    int too_large; /* a 413 rather than a 400 */
} why;

/* obj[key] when it has json type t (NULL: absent or another type). */
static json_object *field(json_object *obj, const char *key, json_type t) {
    json_object *v;
    if (!json_object_object_get_ex(obj, key, &v) || !json_object_is_type(v, t)) return NULL;
    return v;
}

static int need_str(json_object *blk, const char *where, const char *key, why *w) {
    if (field(blk, key, json_type_string)) return CTXD_OK;
    snprintf(w->text, sizeof(w->text), "%s.%s must be a string", where, key);
    return CTXD_ERR;
}

static int one_of(const char *v, const char *const *allowed) {
    for (size_t i = 0; v && allowed[i]; i++)
        if (!strcmp(v, allowed[i])) return 1;
    return 0;
}

/* An image's or a document's source. */
static int check_source(json_object *blk, const char *where, int image, why *w) {
    static const char *const image_types[] = {"image/jpeg", "image/png", "image/gif", "image/webp",
                                              NULL};
    json_object *src = field(blk, "source", json_type_object);
    char at[200];
    snprintf(at, sizeof(at), "%s.source", where);
    if (!src) {
        snprintf(w->text, sizeof(w->text), "%s must be an object", at);
        return CTXD_ERR;
    }
    const char *type = json_object_get_string(field(src, "type", json_type_string));
    if (type && !strcmp(type, "url")) return need_str(src, at, "url", w);
    if (type && !strcmp(type, "base64")) {
        const char *mt = json_object_get_string(field(src, "media_type", json_type_string));
        if (image && !one_of(mt, image_types)) {
            snprintf(w->text, sizeof(w->text),
                     "%s.media_type must be image/jpeg, image/png, image/gif or image/webp", at);
            return CTXD_ERR;
        }
        json_object *data = field(src, "data", json_type_string);
        if (image && data && (size_t)json_object_get_string_len(data) > IMAGE_MAX_BASE64) {
            snprintf(w->text, sizeof(w->text),
                     "%s.data is an image over 5 MB, the largest the providers take", at);
            w->too_large = 1;
            return CTXD_ERR;
        }
        if (!image && (!mt || strcmp(mt, "application/pdf"))) {
            snprintf(w->text, sizeof(w->text), "%s.media_type must be application/pdf", at);
            return CTXD_ERR;
        }
        return need_str(src, at, "data", w);
    }
    if (!image && type && !strcmp(type, "text")) return need_str(src, at, "data", w);
    if (!image && type && !strcmp(type, "content")) {
        if (field(src, "content", json_type_array) || field(src, "content", json_type_string))
            return CTXD_OK;
        snprintf(w->text, sizeof(w->text), "%s.content must be a string or an array", at);
        return CTXD_ERR;
    }
    snprintf(w->text, sizeof(w->text), "%s.type must be %s", at,
             image ? "\"base64\" or \"url\"" : "\"base64\", \"text\", \"content\" or \"url\"");
    return CTXD_ERR;
}

static int check_blocks(json_object *arr, const char *where, const char *role, int nested, why *w);

/* One block at where ("messages[0].content[2]"), in a message of role. */
static int check_block(json_object *blk, const char *where, const char *role, int nested, why *w) {
    static const char *const types[] = {"text",        "image",    "document",          "tool_use",
                                        "tool_result", "thinking", "redacted_thinking", NULL};
    if (!json_object_is_type(blk, json_type_object)) {
        snprintf(w->text, sizeof(w->text), "%s must be an object", where);
        return CTXD_ERR;
    }
    const char *type = json_object_get_string(field(blk, "type", json_type_string));
    if (!one_of(type, types)) {
        snprintf(w->text, sizeof(w->text),
                 "%s.type must be text, image, document, tool_use, tool_result, thinking or "
                 "redacted_thinking",
                 where);
        return CTXD_ERR;
    }
    /* Where a block may stand: as Anthropic's Messages API takes them. */
    int user_only =
        !strcmp(type, "tool_result") || !strcmp(type, "document") || !strcmp(type, "image");
    int assistant_only = !strcmp(type, "tool_use") || !strcmp(type, "thinking") ||
                         !strcmp(type, "redacted_thinking");
    if ((user_only && strcmp(role, "user")) || (assistant_only && strcmp(role, "assistant")) ||
        (nested && strcmp(type, "text") && strcmp(type, "image") && strcmp(type, "document"))) {
        snprintf(w->text, sizeof(w->text), "%s: a %s block cannot be in %s", where, type,
                 nested                  ? "a tool_result"
                 : !strcmp(role, "user") ? "a user message"
                                         : "an assistant message");
        return CTXD_ERR;
    }
    if (!strcmp(type, "text")) return need_str(blk, where, "text", w);
    if (!strcmp(type, "image")) return check_source(blk, where, 1, w);
    if (!strcmp(type, "document")) return check_source(blk, where, 0, w);
    if (!strcmp(type, "thinking"))
        return need_str(blk, where, "thinking", w) || need_str(blk, where, "signature", w);
    if (!strcmp(type, "redacted_thinking")) return need_str(blk, where, "data", w);
    if (!strcmp(type, "tool_use")) {
        if (need_str(blk, where, "id", w) || need_str(blk, where, "name", w)) return CTXD_ERR;
        if (field(blk, "input", json_type_object)) return CTXD_OK;
        snprintf(w->text, sizeof(w->text), "%s.input must be an object", where);
        return CTXD_ERR;
    }
    /* tool_result */
    json_object *v;
    if (need_str(blk, where, "tool_use_id", w)) return CTXD_ERR;
    if (json_object_object_get_ex(blk, "is_error", &v) &&
        !json_object_is_type(v, json_type_boolean)) {
        snprintf(w->text, sizeof(w->text), "%s.is_error must be true or false", where);
        return CTXD_ERR;
    }
    if (!json_object_object_get_ex(blk, "content", &v) || json_object_is_type(v, json_type_string))
        return CTXD_OK;
    char at[200];
    snprintf(at, sizeof(at), "%s.content", where);
    if (json_object_is_type(v, json_type_array)) return check_blocks(v, at, role, 1, w);
    snprintf(w->text, sizeof(w->text), "%s must be a string or an array of blocks", at);
    return CTXD_ERR;
}

static int check_blocks(json_object *arr, const char *where, const char *role, int nested, why *w) {
    size_t n = json_object_array_length(arr);
    if (!n && !nested) {
        snprintf(w->text, sizeof(w->text), "%s must hold at least one block", where);
        return CTXD_ERR;
    }
    for (size_t i = 0; i < n; i++) {
        char at[200];
        snprintf(at, sizeof(at), "%s[%zu]", where, i);
        if (check_block(json_object_array_get_idx(arr, i), at, role, nested, w)) return CTXD_ERR;
    }
    return CTXD_OK;
}

int http_content_or_respond(const http_req *req, json_object *v, const char *where,
                            const char *role, size_t max_bytes, http_content *out, int *status) {
    why w;
    memset(out, 0, sizeof(*out));
    if (json_object_is_type(v, json_type_string)) {
        out->text = json_object_get_string(v);
        out->len = (size_t)json_object_get_string_len(v);
    } else if (json_object_is_type(v, json_type_array)) {
        w.too_large = 0;
        if (check_blocks(v, where, role, 0, &w)) {
            *status = http_send_error(
                req, w.too_large ? CTXD_E_FIELD_TOO_LARGE : CTXD_E_INVALID_FIELD, "%s", w.text);
            return CTXD_ERR;
        }
        /* Blocks carry images and documents: bounded by the body's limit
         * (CTXD_MAX_BODY_BYTES, 32 MiB, as the providers' requests), not by
         * the text's (CTXD_MAX_MESSAGE_BYTES). */
        max_bytes = req->cfg->max_body_bytes;
        const char *s = json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN |
                                                              JSON_C_TO_STRING_NOSLASHESCAPE);
        if (!s || !(out->owned = strdup(s))) {
            *status = http_send_error(req, CTXD_E_NOMEM, "out of memory");
            return CTXD_ERR;
        }
        out->text = out->owned;
        out->len = strlen(s);
        out->json = 1;
    } else {
        *status = http_send_error(req, CTXD_E_INVALID_FIELD,
                                  "%s must be a string or an array of content blocks", where);
        return CTXD_ERR;
    }
    if (out->len > max_bytes) {
        *status = http_send_error(
            req, CTXD_E_FIELD_TOO_LARGE, "%s is %zu bytes; at most %zu are allowed (%s)", where,
            out->len, max_bytes, out->json ? "CTXD_MAX_BODY_BYTES" : "CTXD_MAX_MESSAGE_BYTES");
        http_content_free(out);
        return CTXD_ERR;
    }
    return CTXD_OK;
}

void http_content_free(http_content *c) {
    free(c->owned);
    free(c->metadata);
    memset(c, 0, sizeof(*c));
}

int http_metadata_or_respond(const http_req *req, json_object *msg, const char *where,
                             http_content *out, int *status) {
    json_object *v;
    if (!json_object_object_get_ex(msg, "metadata", &v) || !v) return CTXD_OK;
    if (!json_object_is_type(v, json_type_object)) {
        *status =
            http_send_error(req, CTXD_E_INVALID_FIELD, "%s.metadata must be a JSON object", where);
        return CTXD_ERR;
    }
    const char *s =
        json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    size_t len = s ? strlen(s) : 0;
    if (len > METADATA_MAX_BYTES) {
        *status = http_send_error(req, CTXD_E_FIELD_TOO_LARGE,
                                  "%s.metadata is %zu bytes of JSON; at most %d are allowed", where,
                                  len, METADATA_MAX_BYTES);
        return CTXD_ERR;
    }
    if (!s || !(out->metadata = strdup(s))) {
        *status = http_send_error(req, CTXD_E_NOMEM, "out of memory");
        return CTXD_ERR;
    }
    out->metadata_len = len;
    return CTXD_OK;
}

static char *json_text(json_object *v) {
    const char *s =
        json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    return s ? strdup(s) : NULL;
}

int http_tools_or_respond(const http_req *req, json_object *body, char **tools, char **choice,
                          int *status) {
    static const char *const choices[] = {"auto", "any", "tool", "none", NULL};
    json_object *t = NULL, *c = NULL;
    why w = {"", 0};
    *tools = *choice = NULL;
    json_object_object_get_ex(body, "tools", &t);
    json_object_object_get_ex(body, "tool_choice", &c);
    if (t) {
        size_t n = json_object_is_type(t, json_type_array) ? json_object_array_length(t) : 0;
        if (!n || n > 128)
            snprintf(w.text, sizeof(w.text), "tools must be an array of 1 to 128 tools");
        for (size_t i = 0; i < n && !w.text[0]; i++) {
            json_object *tool = json_object_array_get_idx(t, i);
            const char *name = json_object_get_string(field(tool, "name", json_type_string));
            size_t len = name ? strlen(name) : 0;
            if (!json_object_is_type(tool, json_type_object))
                snprintf(w.text, sizeof(w.text), "tools[%zu] must be an object", i);
            else if (!len || len > 64 ||
                     strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOP"
                                  "QRSTUVWXYZ0123456789_-") != len)
                snprintf(w.text, sizeof(w.text),
                         "tools[%zu].name must be 1 to 64 letters, digits, _ or -", i);
            else if (!field(tool, "input_schema", json_type_object))
                snprintf(w.text, sizeof(w.text),
                         "tools[%zu].input_schema must be a JSON Schema "
                         "object",
                         i);
        }
    }
    if (!w.text[0] && c) {
        const char *type = json_object_get_string(field(c, "type", json_type_string));
        if (!json_object_is_type(c, json_type_object) || !one_of(type, choices))
            snprintf(w.text, sizeof(w.text),
                     "tool_choice.type must be \"auto\", \"any\", \"tool\" or \"none\"");
        else if (!strcmp(type, "tool") && !field(c, "name", json_type_string))
            snprintf(w.text, sizeof(w.text), "tool_choice.name must name a tool");
        else if (!t)
            snprintf(w.text, sizeof(w.text), "tool_choice needs tools");
    }
    if (w.text[0]) {
        *status = http_send_error(req, CTXD_E_INVALID_FIELD, "%s", w.text);
        return CTXD_ERR;
    }
    if ((t && !(*tools = json_text(t))) || (c && !(*choice = json_text(c)))) {
        free(*tools);
        *tools = NULL;
        *status = http_send_error(req, CTXD_E_NOMEM, "out of memory");
        return CTXD_ERR;
    }
    return CTXD_OK;
}
