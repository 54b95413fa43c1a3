/* routes_context.c: the /mcp/context routes for contexts: create, read, settings, state, list, delete. */
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctxd/util.h"
#include "http_int.h"

#define MAX_MODEL_LEN 127
#define MAX_TTL_SECONDS (10LL * 365 * 86400)
#define MAX_ENUM_LEN 1024 /* longer than any allowed value: a wrong one is a 400 */

static const char *const settings_fields[] = {
    "system",       "model", "ttl_seconds", "strategy", "max_context_tokens",
    "max_messages", "tools", "tool_choice", NULL};

/* body's "tools" and "tool_choice" as settings (JSON text borrowed from
 * body): checked as a turn's; "tools": [] takes both away. */
static int tools_setting_or_respond(const http_req *req, json_object *body, store_settings *st,
                                    int *status) {
    json_object *t = NULL, *c = NULL;
    char *tools = NULL, *choice = NULL;
    json_object_object_get_ex(body, "tools", &t);
    json_object_object_get_ex(body, "tool_choice", &c);
    if (t && json_object_is_type(t, json_type_array) && !json_object_array_length(t) && !c) {
        st->tools = st->tool_choice = "";
        return CTXD_OK;
    }
    if (http_tools_or_respond(req, body, &tools, &choice, status)) return CTXD_ERR;
    free(tools);
    free(choice);
    if (t)
        st->tools = json_object_to_json_string_ext(t, JSON_C_TO_STRING_PLAIN |
                                                          JSON_C_TO_STRING_NOSLASHESCAPE);
    if (c)
        st->tool_choice = json_object_to_json_string_ext(c, JSON_C_TO_STRING_PLAIN |
                                                                JSON_C_TO_STRING_NOSLASHESCAPE);
    if (t && !c) st->tool_choice = ""; /* new tools: the choice of the old ones goes */
    return CTXD_OK;
}

/* obj as state (see context_state_input_of), or its 4xx answered. */
static int state_or_respond(const http_req *req, json_object *obj, int keep_nulls,
                            context_state_input *si, int *status) {
    ctxd_error e;
    if (context_state_input_of(req->cfg, obj, keep_nulls, si, &e) == CTXD_OK) return CTXD_OK;
    context_state_input_free(si);
    *status = http_send_failure(req, &e);
    return CTXD_ERR;
}

/* The settings a client may give at create and change with PATCH; what is
 * absent stays NULL / -1 (see store_settings). Strings are borrowed from
 * body. */
static int settings_or_respond(const http_req *req, json_object *body, store_settings *st,
                               int *status) {
    const ctxd_config *cfg = req->cfg;
    *st = (store_settings)STORE_SETTINGS_UNCHANGED;
    if (http_string_field_or_respond(req, body, "system", cfg->max_message_bytes, &st->system, NULL,
                                     status) ||
        http_string_field_or_respond(req, body, "model", MAX_MODEL_LEN, &st->model, NULL, status) ||
        http_string_field_or_respond(req, body, "strategy", MAX_ENUM_LEN, &st->strategy, NULL,
                                     status) ||
        http_int_field_or_respond(req, body, "ttl_seconds", 0, MAX_TTL_SECONDS, &st->ttl_seconds,
                                  status) ||
        http_int_field_or_respond(req, body, "max_context_tokens", 64, 100000000,
                                  &st->max_context_tokens, status) ||
        http_int_field_or_respond(req, body, "max_messages", 0, cfg->max_messages,
                                  &st->max_messages, status) ||
        tools_setting_or_respond(req, body, st, status))
        return CTXD_ERR;
    if (st->strategy && strcmp(st->strategy, "all") && strcmp(st->strategy, "window") &&
        strcmp(st->strategy, "summarize")) {
        *status = http_send_error(req, CTXD_E_INVALID_FIELD,
                                  "Field 'strategy' must be \"all\", \"window\" or \"summarize\"");
        return CTXD_ERR;
    }
    if (st->max_messages == 1) {
        *status = http_send_error(req, CTXD_E_INVALID_FIELD,
                                  "Field 'max_messages' must be 0 (keep all) or at least 2");
        return CTXD_ERR;
    }
    return CTXD_OK;
}

static int send_created(const http_req *req, const char *id, int replayed) {
    char loc[80];
    buf b;
    buf_init(&b);
    buf_printf(&b, "{\"context_id\":\"%s\",\"message\":\"New context created\"}", id);
    snprintf(loc, sizeof(loc), "/mcp/context/%s", id);
    const char *h[] = {"Location", loc, replayed ? "Idempotent-Replayed" : NULL, "true", NULL};
    return http_send_json(req, 201, &b, h);
}

/* POST /mcp/context */
static int create_context(const http_req *req) {
    static const char *const allowed[] = {
        "system",       "model", "ttl_seconds", "state", "strategy", "max_context_tokens",
        "max_messages", "tools", "tool_choice", NULL};
    json_object *body = NULL, *v;
    context_state_input si = {0};
    store_settings st = STORE_SETTINGS_UNCHANGED;
    const char *idem;
    uint64_t fp;
    int status, replayed;
    char id[UTIL_UUID_LEN + 1];
    ctxd_error e;

    if (http_idem_key_or_respond(req, &idem, &status) ||
        http_json_body_or_respond(req, &body, &fp, &status))
        return status;
    if (body && (http_only_fields_or_respond(req, body, allowed, &status) ||
                 settings_or_respond(req, body, &st, &status) ||
                 (json_object_object_get_ex(body, "state", &v) && v &&
                  state_or_respond(req, v, 0, &si, &status))))
        goto cleanup;
    if (context_create(req->w, &st, si.keys, si.values, si.n, idem, fp, id, &replayed, &e))
        status = http_send_failure(req, &e);
    else
        status = send_created(req, id, replayed);
cleanup:
    context_state_input_free(&si);
    if (body) json_object_put(body);
    return status;
}

/* Send b with the context's version as its ETag (frees c). */
static int send_versioned(const http_req *req, buf *b, store_context *c) {
    char etag[32];
    const char *h[3] = {"ETag", etag, NULL};
    http_etag(c->version, etag);
    store_context_free(c);
    return http_send_json(req, 200, b, h);
}

/* Read a page of history and render it with or without the context. */
static int send_history(const http_req *req, int full) {
    static const char *const names[] = {"limit", "before"};
    char values[2][HTTP_QUERY_VALUE_MAX];
    const char *found[2];
    int64_t limit, before;
    int status;
    store_context c;
    ctxd_error e;
    if (http_id_or_respond(req, &status) ||
        http_query_or_respond(req, names, values, found, 2, &status) ||
        http_query_int_or_respond(req, "limit", found[0], 100000, &limit, &status) ||
        http_query_int_or_respond(req, "before", found[1], INT64_MAX / 2, &before, &status))
        return status;
    if (context_read(req->w, req->id, STORE_READ_MESSAGES | (full ? STORE_READ_STATE : 0),
                     (long)limit, before, &c, &e))
        return http_send_failure(req, &e);
    buf b;
    buf_init(&b);
    if (full)
        http_render_context(&b, &c, 1);
    else
        http_render_messages(&b, &c);
    return send_versioned(req, &b, &c);
}

/* GET /mcp/context/{id} */
static int get_context(const http_req *req) { return send_history(req, 1); }

/* GET /mcp/context/{id}/messages */
static int get_messages(const http_req *req) { return send_history(req, 0); }

/* PATCH /mcp/context/{id} */
static int patch_context(const http_req *req) {
    json_object *body = NULL;
    store_settings st;
    store_context c;
    ctxd_error e;
    char if_match[HTTP_IF_MATCH_MAX];
    int status;
    if (http_id_or_respond(req, &status) || http_if_match_or_respond(req, if_match, &status) ||
        http_required_body_or_respond(req,
                                      "Send the settings to change as a JSON object, e.g. "
                                      "{\"strategy\": \"window\", \"max_context_tokens\": 4000}",
                                      &body, NULL, &status))
        return status;
    if (http_only_fields_or_respond(req, body, settings_fields, &status) ||
        settings_or_respond(req, body, &st, &status))
        goto cleanup;
    if (context_change(req->w, req->id, &st, if_match, &c, &e)) {
        status = http_send_failure(req, &e);
        goto cleanup;
    }
    buf b;
    buf_init(&b);
    http_render_context(&b, &c, 0);
    status = send_versioned(req, &b, &c);
cleanup:
    if (body) json_object_put(body);
    return status;
}

/* GET /mcp/contexts */
static int list_contexts(const http_req *req) {
    static const char *const names[] = {"limit", "cursor"};
    char values[2][HTTP_QUERY_VALUE_MAX];
    const char *found[2];
    int64_t limit;
    int status;
    context_page page;
    ctxd_error e;
    if (http_query_or_respond(req, names, values, found, 2, &status) ||
        http_query_int_or_respond(req, "limit", found[0], 1000, &limit, &status))
        return status;
    if (context_list(req->w, limit ? (long)limit : 20, found[1], &page, &e))
        return http_send_failure(req, &e);
    buf b;
    buf_init(&b);
    http_render_list(&b, &page);
    context_page_free(&page);
    return http_send_json(req, 200, &b, NULL);
}

/* DELETE /mcp/context/{id} */
static int delete_context(const http_req *req) {
    int status;
    ctxd_error e;
    if (http_id_or_respond(req, &status)) return status;
    if (context_delete(req->w, req->id, &e)) return http_send_failure(req, &e);
    buf b;
    buf_init(&b);
    buf_printf(&b, "{\"message\":\"Context '%s' deleted\"}", req->id);
    return http_send_json(req, 200, &b, NULL);
}

/* The state, with the context's version as its ETag (frees c). */
static int send_state(const http_req *req, store_context *c) {
    buf b;
    buf_init(&b);
    http_render_state(&b, c);
    return send_versioned(req, &b, c);
}

/* GET /mcp/context/{id}/state */
static int get_state(const http_req *req) {
    int status;
    store_context c;
    ctxd_error e;
    if (http_id_or_respond(req, &status)) return status;
    if (context_read(req->w, req->id, STORE_READ_STATE, 0, 0, &c, &e))
        return http_send_failure(req, &e);
    return send_state(req, &c);
}

/* PUT and PATCH /mcp/context/{id}/state */
static int write_state(const http_req *req, int patch) {
    json_object *body = NULL;
    context_state_input si = {0};
    store_context c;
    ctxd_error e;
    char if_match[HTTP_IF_MATCH_MAX];
    int status;
    if (http_id_or_respond(req, &status) || http_if_match_or_respond(req, if_match, &status) ||
        http_required_body_or_respond(req, "Send the state as a JSON object body", &body, NULL,
                                      &status))
        return status;
    if (state_or_respond(req, body, patch, &si, &status)) goto cleanup;
    if (context_state_write(req->w, req->id, si.keys, si.values, si.n, patch, if_match, &c, &e)) {
        status = http_send_failure(req, &e);
        goto cleanup;
    }
    status = send_state(req, &c);
cleanup:
    context_state_input_free(&si);
    if (body) json_object_put(body);
    return status;
}

static int put_state(const http_req *req) { return write_state(req, 0); }

static int patch_state(const http_req *req) { return write_state(req, 1); }

void routes_context_register(void) {
    http_route("POST", "/mcp/context", create_context);
    http_route("GET", "/mcp/contexts", list_contexts);
    http_route("GET", "/mcp/context/{id}", get_context);
    http_route("PATCH", "/mcp/context/{id}", patch_context);
    http_route("GET", "/mcp/context/{id}/messages", get_messages);
    http_route("DELETE", "/mcp/context/{id}", delete_context);
    http_route("GET", "/mcp/context/{id}/state", get_state);
    http_route("PUT", "/mcp/context/{id}/state", put_state);
    http_route("PATCH", "/mcp/context/{id}/state", patch_state);
}
