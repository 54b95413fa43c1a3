/* llm_json.c: JSON the providers share: strict parsing, typed reads, request and usage fields. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llm_http.h"

json_object *llm_json_parse(const char *s, size_t len) {
    if (len > (size_t)0x7fffffff) return NULL;
    json_tokener *tok = json_tokener_new();
    if (!tok) return NULL;
    json_object *o = json_tokener_parse_ex(tok, s, (int)len);
    if (o && json_tokener_get_parse_end(tok) < len) {
        /* Only trailing whitespace may follow the value. */
        for (size_t i = json_tokener_get_parse_end(tok); i < len; i++) {
            if (!isspace((unsigned char)s[i])) {
                json_object_put(o);
                o = NULL;
                break;
            }
        }
    }
    json_tokener_free(tok);
    return o;
}

const char *llm_json_str(json_object *obj, const char *key) {
    json_object *v;
    if (!obj || !json_object_object_get_ex(obj, key, &v)) return NULL;
    return json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

/* obj[key] as a long when it is an integer, else -1; obj may be NULL. */
static long llm_json_long(json_object *obj, const char *key) {
    json_object *v;
    if (!obj || !json_object_object_get_ex(obj, key, &v)) return -1;
    if (!json_object_is_type(v, json_type_int)) return -1;
    return (long)json_object_get_int64(v);
}

void llm_copy_str(char *out, size_t cap, const char *s) {
    if (s) snprintf(out, cap, "%s", s);
}

json_object *llm_json_body_new(const ctxd_config *cfg, const llm_request *req,
                               const char *max_tokens_key) {
    json_object *o = json_object_new_object();
    if (!o) return NULL;
    const char *model = req->model && *req->model ? req->model : cfg->model;
    int max_tokens = req->max_tokens > 0 ? req->max_tokens : cfg->max_tokens;
    json_object_object_add(o, "model", json_object_new_string(model));
    json_object_object_add(o, max_tokens_key, json_object_new_int(max_tokens));
    return o;
}

/* Append {"role": role, "content": content[0..len)} to the array msgs. */
int llm_json_add_text(json_object *msgs, const char *role, const char *content, size_t len) {
    json_object *jm = json_object_new_object();
    if (!jm || json_object_array_add(msgs, jm)) {
        json_object_put(jm);
        return CTXD_ERR;
    }
    json_object_object_add(jm, "role", json_object_new_string(role));
    json_object_object_add(jm, "content", json_object_new_string_len(content, (int)len));
    return CTXD_OK;
}

int llm_json_add_messages(json_object *body, const llm_request *req, const char *system,
                          int openai) {
    json_object *msgs = json_object_new_array();
    if (!msgs || (system && llm_json_add_text(msgs, "system", system, strlen(system)))) goto oom;
    for (size_t i = 0; i < req->n_messages; i++) {
        const llm_message *m = &req->messages[i];
        if (m->content_json ? (openai ? llm_blocks_openai(msgs, m) : llm_blocks_anthropic(msgs, m))
                            : llm_json_add_text(msgs, m->role, m->content, m->content_len))
            goto oom;
    }
    json_object_object_add(body, "messages", msgs);
    return CTXD_OK;
oom:
    json_object_put(msgs);
    return CTXD_ERR;
}

int llm_json_add_raw(json_object *body, const char *key, const char *json) {
    if (!json) return CTXD_OK;
    json_object *v = llm_json_parse(json, strlen(json));
    if (!v) return CTXD_ERR;
    json_object_object_add(body, key, v);
    return CTXD_OK;
}

/* body[key] = v (a new reference taken) unless body has key. */
static void add_new(json_object *body, const char *key, json_object *v) {
    if (v && !json_object_object_get_ex(body, key, NULL))
        json_object_object_add(body, key, json_object_get(v));
}

/* The fields of one API that have a counterpart in the other. */
static int add_translated(json_object *body, json_object *extra, int openai) {
    json_object *v;
    if (json_object_object_get_ex(extra, "temperature", &v)) add_new(body, "temperature", v);
    if (json_object_object_get_ex(extra, "top_p", &v)) add_new(body, "top_p", v);
    if (openai) { /* Messages' fields for Chat Completions */
        if (json_object_object_get_ex(extra, "stop_sequences", &v)) add_new(body, "stop", v);
        json_object *meta;
        if (json_object_object_get_ex(extra, "metadata", &meta) &&
            json_object_object_get_ex(meta, "user_id", &v))
            add_new(body, "user", v);
        return CTXD_OK;
    }
    if (json_object_object_get_ex(extra, "stop", &v) && v) { /* a string or an array */
        json_object *arr =
            json_object_is_type(v, json_type_array) ? json_object_get(v) : json_object_new_array();
        if (!arr) return CTXD_ERR;
        if (!json_object_is_type(v, json_type_array))
            json_object_array_add(arr, json_object_get(v));
        add_new(body, "stop_sequences", arr);
        json_object_put(arr);
    }
    if (json_object_object_get_ex(extra, "user", &v) && v &&
        !json_object_object_get_ex(body, "metadata", NULL)) {
        json_object *meta = json_object_new_object();
        if (!meta) return CTXD_ERR;
        json_object_object_add(meta, "user_id", json_object_get(v));
        json_object_object_add(body, "metadata", meta);
    }
    return CTXD_OK;
}

int llm_json_add_extra(json_object *body, const llm_request *req, int openai) {
    if (!req->extra_json) return CTXD_OK;
    json_object *extra = llm_json_parse(req->extra_json, strlen(req->extra_json));
    int rc = CTXD_ERR;
    if (!extra || !json_object_is_type(extra, json_type_object)) goto cleanup;
    if (!req->extra_openai != !openai) {
        rc = add_translated(body, extra, openai);
        goto cleanup;
    }
    json_object_object_foreach(extra, key, v) add_new(body, key, v);
    rc = CTXD_OK;
cleanup:
    json_object_put(extra);
    return rc;
}

int llm_json_keep_blocks(llm_response *resp, json_object *content) {
    int other = 0;
    for (size_t i = 0; i < json_object_array_length(content); i++) {
        const char *t = llm_json_str(json_object_array_get_idx(content, i), "type");
        other |= !t || strcmp(t, "text");
    }
    if (!other) return CTXD_OK;
    const char *s = json_object_to_json_string_ext(content, JSON_C_TO_STRING_PLAIN |
                                                                JSON_C_TO_STRING_NOSLASHESCAPE);
    free(resp->content_json);
    resp->content_json = s ? strdup(s) : NULL;
    resp->content_json_len = resp->content_json ? strlen(resp->content_json) : 0;
    return resp->content_json ? CTXD_OK : CTXD_ERR;
}

void llm_json_usage(llm_response *resp, json_object *parent, const char *in_key,
                    const char *out_key) {
    json_object *usage = NULL;
    if (!parent || !json_object_object_get_ex(parent, "usage", &usage)) return;
    long in = llm_json_long(usage, in_key);
    long out = llm_json_long(usage, out_key);
    long cc = llm_json_long(usage, "cache_creation_input_tokens");
    long cr = llm_json_long(usage, "cache_read_input_tokens");
    if (in >= 0) resp->input_tokens = in;
    if (out >= 0) resp->output_tokens = out;
    if (cc >= 0) resp->cache_creation_input_tokens = cc;
    if (cr >= 0) resp->cache_read_input_tokens = cr;
}
