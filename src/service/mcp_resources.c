/* mcp_resources.c: contexts as MCP resources (ctxd://contexts/{id}, its state), and the prompts. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctxd/buf.h"
#include "ctxd/context.h"
#include "ctxd/mcp.h"
#include "ctxd/message.h"
#include "ctxd/util.h"

#define URI_PREFIX "ctxd://contexts/"
#define RESOURCE_PAGE 50
#define RESOURCE_MESSAGES 100 /* the newest messages a context resource shows */
#define PROMPT_NAME "continue_conversation"

static const char *string_param(json_object *params, const char *name) {
    json_object *v = NULL;
    if (!params || !json_object_object_get_ex(params, name, &v) ||
        !json_object_is_type(v, json_type_string))
        return NULL;
    return json_object_get_string(v);
}

static json_object *string_or_null(const char *s) {
    return s && s[0] ? json_object_new_string(s) : NULL;
}

/* A service failure as a JSON-RPC error: an unknown context is not_found. */
static int service_error(mcp_error *err, const ctxd_error *e, int not_found) {
    if (mcp_infra_failure(err, e)) return CTXD_ERR;
    return mcp_error_set(err, e->err == CTXD_E_NOT_FOUND ? not_found : MCP_INTERNAL_ERROR, "%s",
                         e->msg);
}

int mcp_resources_list(ctxd_worker *w, json_object *params, json_object **result, mcp_error *err) {
    context_page page;
    ctxd_error e;
    char uri[64 + UTIL_UUID_LEN], title[96];
    *result = NULL;
    if (context_list(w, RESOURCE_PAGE, string_param(params, "cursor"), &page, &e))
        return e.err == CTXD_E_INVALID_QUERY
                   ? mcp_error_set(err, MCP_INVALID_PARAMS,
                                   "params.cursor must be a nextCursor of an earlier "
                                   "resources/list")
                   : service_error(err, &e, MCP_INTERNAL_ERROR);
    json_object *arr = json_object_new_array();
    for (size_t i = 0; i < page.n; i++) {
        const store_list_item *it = &page.items[i];
        json_object *r = json_object_new_object();
        snprintf(uri, sizeof(uri), URI_PREFIX "%s", it->id);
        snprintf(title, sizeof(title), "Context %.8s (%" PRId64 " messages, last active %s)",
                 it->id, it->message_count, it->last_updated);
        json_object_object_add(r, "uri", json_object_new_string(uri));
        json_object_object_add(r, "name", json_object_new_string(it->id));
        json_object_object_add(r, "title", json_object_new_string(title));
        json_object_object_add(r, "mimeType", json_object_new_string("application/json"));
        json_object_array_add(arr, r);
    }
    *result = json_object_new_object();
    json_object_object_add(*result, "resources", arr);
    if (page.next_cursor[0])
        json_object_object_add(*result, "nextCursor", json_object_new_string(page.next_cursor));
    context_page_free(&page);
    return CTXD_OK;
}

static json_object *resource_template(const char *uri, const char *name, const char *title,
                                      const char *description) {
    json_object *t = json_object_new_object();
    json_object_object_add(t, "uriTemplate", json_object_new_string(uri));
    json_object_object_add(t, "name", json_object_new_string(name));
    json_object_object_add(t, "title", json_object_new_string(title));
    json_object_object_add(t, "description", json_object_new_string(description));
    json_object_object_add(t, "mimeType", json_object_new_string("application/json"));
    return t;
}

int mcp_resource_templates_list(json_object **result, mcp_error *err) {
    CTXD_UNUSED(err);
    json_object *arr = json_object_new_array();
    json_object_array_add(
        arr, resource_template(URI_PREFIX "{context_id}", "context", "A context",
                               "A context's settings, summary, state and newest messages"));
    json_object_array_add(arr,
                          resource_template(URI_PREFIX "{context_id}/state", "context_state",
                                            "A context's state", "A context's JSON state object"));
    *result = json_object_new_object();
    json_object_object_add(*result, "resourceTemplates", arr);
    return CTXD_OK;
}

static json_object *state_json(const store_context *c) {
    json_object *st = json_object_new_object();
    for (size_t i = 0; i < c->n_state; i++)
        json_object_object_add(st, c->state_keys[i].data,
                               mcp_json_parse(c->state_values[i].data, c->state_values[i].len));
    return st;
}

/* A context as its resource shows it. */
static json_object *context_json(const store_context *c) {
    json_object *o = json_object_new_object(), *msgs = json_object_new_array();
    json_object_object_add(o, "id", json_object_new_string(c->id));
    json_object_object_add(o, "created_at", json_object_new_string(c->created_at));
    json_object_object_add(o, "last_updated", json_object_new_string(c->last_updated));
    json_object_object_add(o, "system", string_or_null(c->system));
    json_object_object_add(o, "model", string_or_null(c->model));
    json_object_object_add(o, "strategy", json_object_new_string(c->strategy));
    json_object_object_add(o, "max_context_tokens", json_object_new_int64(c->max_context_tokens));
    json_object_object_add(o, "max_messages", json_object_new_int64(c->max_messages));
    json_object_object_add(o, "ttl_seconds", json_object_new_int64(c->ttl_seconds));
    json_object_object_add(o, "message_count", json_object_new_int64(c->total_messages));
    json_object_object_add(o, "summary", string_or_null(c->summary));
    json_object_object_add(o, "state", state_json(c));
    for (size_t i = 0; i < c->n_messages; i++) {
        json_object *m = mcp_json_parse(c->messages[i].data, c->messages[i].len);
        if (m) json_object_array_add(msgs, m);
    }
    json_object_object_add(o, "messages", msgs);
    json_object_object_add(o, "has_more", json_object_new_boolean(c->has_more));
    return o;
}

int mcp_resources_read(ctxd_worker *w, json_object *params, json_object **result, mcp_error *err) {
    const char *uri = string_param(params, "uri");
    char id[UTIL_UUID_LEN + 1];
    store_context c;
    ctxd_error e;
    *result = NULL;
    if (!uri) return mcp_error_set(err, MCP_INVALID_PARAMS, "resources/read needs params.uri");
    size_t pl = strlen(URI_PREFIX);
    const char *rest = strncmp(uri, URI_PREFIX, pl) ? NULL : uri + pl;
    int state =
        rest && strlen(rest) == UTIL_UUID_LEN + 6 && !strcmp(rest + UTIL_UUID_LEN, "/state");
    if (rest && (strlen(rest) == UTIL_UUID_LEN || state))
        snprintf(id, sizeof(id), "%.*s", UTIL_UUID_LEN, rest);
    if (!rest || (strlen(rest) != UTIL_UUID_LEN && !state) || !util_is_context_id(id))
        return mcp_error_set(err, MCP_RESOURCE_NOT_FOUND,
                             "Resource not found: %s (ctxd's resources are "
                             "ctxd://contexts/{id} and ctxd://contexts/{id}/state)",
                             uri);
    int what = state ? STORE_READ_STATE : STORE_READ_MESSAGES | STORE_READ_STATE;
    if (context_read(w, id, what, RESOURCE_MESSAGES, 0, &c, &e))
        return service_error(err, &e, MCP_RESOURCE_NOT_FOUND);
    json_object *body = state ? state_json(&c) : context_json(&c);
    json_object *contents = json_object_new_array(), *item = json_object_new_object();
    json_object_object_add(item, "uri", json_object_new_string(uri));
    json_object_object_add(item, "mimeType", json_object_new_string("application/json"));
    json_object_object_add(item, "text",
                           json_object_new_string(json_object_to_json_string_ext(
                               body, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)));
    json_object_array_add(contents, item);
    json_object_put(body);
    store_context_free(&c);
    *result = json_object_new_object();
    json_object_object_add(*result, "contents", contents);
    return CTXD_OK;
}

/* ---- Prompts ---- */

static json_object *prompt_argument(const char *name, const char *description, int required) {
    json_object *a = json_object_new_object();
    json_object_object_add(a, "name", json_object_new_string(name));
    json_object_object_add(a, "description", json_object_new_string(description));
    json_object_object_add(a, "required", json_object_new_boolean(required));
    return a;
}

int mcp_prompts_list(json_object **result, mcp_error *err) {
    CTXD_UNUSED(err);
    json_object *p = json_object_new_object(), *args = json_object_new_array(),
                *arr = json_object_new_array();
    json_object_array_add(args, prompt_argument("context_id", "The context to continue", 1));
    json_object_array_add(args, prompt_argument("max_tokens",
                                                "Token budget of the history (default: the "
                                                "context's max_context_tokens)",
                                                0));
    json_object_object_add(p, "name", json_object_new_string(PROMPT_NAME));
    json_object_object_add(p, "title", json_object_new_string("Continue a conversation"));
    json_object_object_add(p, "description",
                           json_object_new_string("A stored conversation's window (its summary "
                                                  "and newest turns) as prompt messages, to "
                                                  "pick it up where it stopped"));
    json_object_object_add(p, "arguments", args);
    json_object_array_add(arr, p);
    *result = json_object_new_object();
    json_object_object_add(*result, "prompts", arr);
    return CTXD_OK;
}

static json_object *prompt_message(const char *role, const char *text, size_t len) {
    json_object *m = json_object_new_object(), *content = json_object_new_object();
    json_object_object_add(content, "type", json_object_new_string("text"));
    json_object_object_add(content, "text", json_object_new_string_len(text, (int)len));
    json_object_object_add(m, "role", json_object_new_string(role));
    json_object_object_add(m, "content", content);
    return m;
}

/* A stored message as a prompt message: its text (blocks' text joined). */
static json_object *stored_prompt_message(const store_blob *b) {
    json_object *m = mcp_json_parse(b->data, b->len), *role = NULL, *content = NULL, *out = NULL;
    if (!m) return NULL;
    json_object_object_get_ex(m, "role", &role);
    json_object_object_get_ex(m, "content", &content);
    if (json_object_is_type(role, json_type_string) && content) {
        buf text;
        buf_init(&text);
        if (json_object_is_type(content, json_type_string)) {
            buf_putn(&text, json_object_get_string(content),
                     (size_t)json_object_get_string_len(content));
        } else {
            size_t len;
            const char *blocks =
                json_object_to_json_string_length(content, JSON_C_TO_STRING_PLAIN, &len);
            message_content_text(&text, blocks, len, 1);
        }
        if (!text.err)
            out =
                prompt_message(json_object_get_string(role), text.data ? text.data : "", text.len);
        buf_free(&text);
    }
    json_object_put(m);
    return out;
}

/* The system prompt and the summary as the prompt's first user message. */
static json_object *preamble(const store_context *c) {
    if (!c->system[0] && !c->summary[0]) return NULL;
    buf b;
    buf_init(&b);
    if (c->system[0]) buf_printf(&b, "Instructions for this conversation: %s", c->system);
    if (c->summary[0])
        buf_printf(&b, "%sSummary of the earlier conversation: %s", c->system[0] ? "\n\n" : "",
                   c->summary);
    json_object *m = b.err ? NULL : prompt_message("user", b.data, b.len);
    buf_free(&b);
    return m;
}

int mcp_prompts_get(ctxd_worker *w, json_object *params, json_object **result, mcp_error *err) {
    const char *name = string_param(params, "name");
    json_object *args = NULL;
    store_context c;
    ctxd_error e;
    int64_t tokens, budget = 0, used;
    *result = NULL;
    if (!name || strcmp(name, PROMPT_NAME))
        return mcp_error_set(err, MCP_INVALID_PARAMS, "Unknown prompt: %s (prompts/list names it)",
                             name ? name : "(none)");
    if (params) json_object_object_get_ex(params, "arguments", &args);
    const char *id = string_param(args, "context_id"), *max = string_param(args, "max_tokens");
    if (!id || !util_is_context_id(id))
        return mcp_error_set(err, MCP_INVALID_PARAMS,
                             "Prompt %s needs the argument context_id, a context's id",
                             PROMPT_NAME);
    if (max) {
        char *end;
        budget = strtoll(max, &end, 10);
        if (*end || budget < 64 || budget > 100000000)
            return mcp_error_set(err, MCP_INVALID_PARAMS,
                                 "Argument max_tokens must be an integer from 64 to 100000000");
    }
    if (context_recall(w, id, budget, &c, &tokens, &used, &e))
        return service_error(err, &e, MCP_INVALID_PARAMS);
    json_object *msgs = json_object_new_array(), *pre = preamble(&c);
    if (pre) json_object_array_add(msgs, pre);
    for (size_t i = 0; i < c.n_messages; i++) {
        json_object *m = stored_prompt_message(&c.messages[i]);
        if (m) json_object_array_add(msgs, m);
    }
    char desc[160];
    snprintf(desc, sizeof(desc),
             "Context %s: the newest %zu of %" PRId64 " messages (%" PRId64 " of %" PRId64
             " tokens)",
             id, c.n_messages, c.total_messages, tokens, used);
    store_context_free(&c);
    *result = json_object_new_object();
    json_object_object_add(*result, "description", json_object_new_string(desc));
    json_object_object_add(*result, "messages", msgs);
    return CTXD_OK;
}
