/* mcp.c: the MCP lifecycle (initialize, sessions, ping) and the dispatch of a session's requests. */
#include "ctxd/mcp.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "ctxd/util.h"
#include "ctxd/version.h"

static const char *const versions[] = {MCP_PROTOCOL_LATEST, "2025-06-18", "2025-03-26"};

#define INSTRUCTIONS                                                                               \
    "ctxd keeps conversations (contexts) in Redis. Create a context, add or send messages, and "   \
    "recall the window of history a model would see; each context also holds a JSON state. "       \
    "Contexts are also resources (ctxd://contexts/{id}), and the continue_conversation prompt "    \
    "turns one into prompt messages."

int mcp_error_set(mcp_error *err, int code, const char *fmt, ...) {
    va_list ap;
    err->code = code;
    err->infra.err = CTXD_E_NONE;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
    return CTXD_ERR;
}

int mcp_infra_failure(mcp_error *err, const ctxd_error *e) {
    if (e->err != CTXD_E_REDIS && e->err != CTXD_E_NOMEM && e->err != CTXD_E_NO_RANDOMNESS)
        return 0;
    mcp_error_set(err, MCP_INTERNAL_ERROR, "%s", e->msg);
    err->infra = *e;
    return CTXD_ERR;
}

json_object *mcp_versions_json(void) {
    json_object *arr = json_object_new_array();
    json_object_array_add(arr, json_object_new_string(MCP_PROTOCOL_STATELESS));
    for (size_t i = 0; i < sizeof(versions) / sizeof(versions[0]); i++)
        json_object_array_add(arr, json_object_new_string(versions[i]));
    return arr;
}

int mcp_version_supported(const char *version) {
    for (size_t i = 0; version && i < sizeof(versions) / sizeof(versions[0]); i++)
        if (!strcmp(version, versions[i])) return 1;
    return 0;
}

json_object *mcp_json_parse(const char *text, size_t len) {
    json_tokener *tok = json_tokener_new();
    if (!tok) return NULL;
    json_object *o = json_tokener_parse_ex(tok, text, (int)len);
    if (json_tokener_get_error(tok) != json_tokener_success) {
        json_object_put(o);
        o = NULL;
    }
    json_tokener_free(tok);
    return o;
}

/* A string member of obj, or NULL (borrowed). */
static const char *string_of(json_object *obj, const char *name) {
    json_object *v;
    if (!obj || !json_object_object_get_ex(obj, name, &v) ||
        !json_object_is_type(v, json_type_string))
        return NULL;
    return json_object_get_string(v);
}

static json_object *capabilities(void) {
    json_object *caps = json_object_new_object(), *t = json_object_new_object(),
                *r = json_object_new_object(), *p = json_object_new_object();
    json_object_object_add(t, "listChanged", json_object_new_boolean(0));
    /* Sent on the answer's stream of the call that changed the list (there
     * is no GET stream): routes_mcp.c. */
    json_object_object_add(r, "listChanged", json_object_new_boolean(1));
    json_object_object_add(r, "subscribe", json_object_new_boolean(0));
    json_object_object_add(p, "listChanged", json_object_new_boolean(0));
    json_object_object_add(caps, "tools", t);
    json_object_object_add(caps, "resources", r);
    json_object_object_add(caps, "prompts", p);
    return caps;
}

static json_object *server_info(void) {
    json_object *info = json_object_new_object();
    json_object_object_add(info, "name", json_object_new_string("ctxd"));
    json_object_object_add(info, "title", json_object_new_string("ctxd conversation memory"));
    json_object_object_add(info, "version", json_object_new_string(CTXD_VERSION));
    return info;
}

static json_object *initialize_result(const char *version) {
    json_object *res = json_object_new_object(), *info = server_info();
    json_object_object_add(res, "protocolVersion", json_object_new_string(version));
    json_object_object_add(res, "capabilities", capabilities());
    json_object_object_add(res, "serverInfo", info);
    json_object_object_add(res, "instructions", json_object_new_string(INSTRUCTIONS));
    return res;
}

int mcp_initialize(ctxd_worker *w, const auth_identity *who, json_object *params,
                   store_mcp_session *sess, json_object **result, mcp_error *err) {
    json_object *caps = NULL, *client = NULL;
    const char *asked = string_of(params, "protocolVersion");
    *result = NULL;
    memset(sess, 0, sizeof(*sess));
    if (!asked || !json_object_object_get_ex(params, "capabilities", &caps) ||
        !json_object_is_type(caps, json_type_object))
        return mcp_error_set(err, MCP_INVALID_PARAMS,
                             "initialize needs params.protocolVersion (a string) and "
                             "params.capabilities (an object)");
    json_object_object_get_ex(params, "clientInfo", &client);
    const char *name = string_of(client, "name"), *version = string_of(client, "version");
    char uuid[UTIL_UUID_LEN + 1];
    ctxd_error e;
    if (util_uuid4(uuid)) {
        ctxd_error_set(&e, CTXD_E_NO_RANDOMNESS, "no randomness for a session id");
        return mcp_infra_failure(err, &e);
    }
    snprintf(sess->id, sizeof(sess->id), "%s", uuid);
    snprintf(sess->protocol_version, sizeof(sess->protocol_version), "%s",
             mcp_version_supported(asked) ? asked : MCP_PROTOCOL_LATEST);
    snprintf(sess->client_name, sizeof(sess->client_name), "%s", name ? name : "");
    snprintf(sess->client_version, sizeof(sess->client_version), "%s", version ? version : "");
    snprintf(sess->key_id, sizeof(sess->key_id), "%s", who->key_id);
    util_iso8601(util_now_ms(), sess->created_at);
    if (store_mcp_session_put(w->st, sess, MCP_SESSION_TTL_S)) {
        ctxd_error_set(&e, w->st->err == CTXD_E_NOMEM ? CTXD_E_NOMEM : CTXD_E_REDIS, "%s",
                       w->st->errstr);
        return mcp_infra_failure(err, &e);
    }
    *result = initialize_result(sess->protocol_version);
    return CTXD_OK;
}

int mcp_session_find(ctxd_worker *w, const char *id, store_mcp_session *out, int *found,
                     ctxd_error *e) {
    if (store_mcp_session_get(w->st, id, MCP_SESSION_TTL_S, out, found))
        return ctxd_error_set(e, w->st->err == CTXD_E_NOMEM ? CTXD_E_NOMEM : CTXD_E_REDIS, "%s",
                              w->st->errstr);
    return CTXD_OK;
}

int mcp_session_end(ctxd_worker *w, const char *id, int *found, ctxd_error *e) {
    if (store_mcp_session_delete(w->st, id, found))
        return ctxd_error_set(e, w->st->err == CTXD_E_NOMEM ? CTXD_E_NOMEM : CTXD_E_REDIS, "%s",
                              w->st->errstr);
    return CTXD_OK;
}

/* A stateless result's cache hint: how long (ms) a client may keep it,
 * and whether shared caches may (the lists of what every tenant sees) or
 * only the key's own (its contexts); -1: not a cacheable result. */
static int64_t cache_hint(const char *method, const char **scope) {
    *scope = "public";
    if (!strcmp(method, "tools/list") || !strcmp(method, "prompts/list") ||
        !strcmp(method, "resources/templates/list") || !strcmp(method, "server/discover"))
        return 300000;
    *scope = "private";
    if (!strcmp(method, "resources/list") || !strcmp(method, "resources/read")) return 0;
    return -1;
}

/* server/discover (stateless): versions, capabilities, identity. */
static json_object *discover_result(void) {
    json_object *res = json_object_new_object();
    json_object_object_add(res, "supportedVersions", mcp_versions_json());
    json_object_object_add(res, "capabilities", capabilities());
    json_object_object_add(res, "instructions", json_object_new_string(INSTRUCTIONS));
    return res;
}

/* What every stateless result carries besides its own fields. */
static void stateless_result(const char *method, json_object *res) {
    const char *scope;
    int64_t ttl = cache_hint(method, &scope);
    json_object *meta = json_object_new_object();
    json_object_object_add(meta, "io.modelcontextprotocol/serverInfo", server_info());
    json_object_object_add(res, "resultType", json_object_new_string("complete"));
    json_object_object_add(res, "_meta", meta);
    if (ttl < 0) return;
    json_object_object_add(res, "ttlMs", json_object_new_int64(ttl));
    json_object_object_add(res, "cacheScope", json_object_new_string(scope));
}

static int dispatch(ctxd_worker *w, const mcp_caller *c, const char *method, json_object *params,
                    json_object **result, mcp_error *err);

int mcp_call(ctxd_worker *w, const mcp_caller *c, const char *method, json_object *params,
             json_object **result, mcp_error *err) {
    int stateless = !strcmp(c->protocol_version, MCP_PROTOCOL_STATELESS);
    *result = NULL;
    if (!stateless) return dispatch(w, c, method, params, result, err);
    if (!strcmp(method, "server/discover"))
        *result = discover_result();
    else if (!strcmp(method, "ping")) /* gone from the stateless revision */
        return mcp_error_set(err, MCP_METHOD_NOT_FOUND, "Method not found: ping (removed in %s)",
                             MCP_PROTOCOL_STATELESS);
    else if (dispatch(w, c, method, params, result, err)) {
        if (err->code == MCP_RESOURCE_NOT_FOUND) err->code = MCP_INVALID_PARAMS; /* its code now */
        return CTXD_ERR;
    }
    stateless_result(method, *result);
    return CTXD_OK;
}

/* The methods both kinds of request share. */
static int dispatch(ctxd_worker *w, const mcp_caller *c, const char *method, json_object *params,
                    json_object **result, mcp_error *err) {
    *result = NULL;
    if (!strcmp(method, "ping")) {
        *result = json_object_new_object();
        return CTXD_OK;
    }
    if (!strcmp(method, "initialize"))
        return mcp_error_set(err, MCP_INVALID_REQUEST,
                             "This session is initialized already; to start another, send "
                             "initialize without an Mcp-Session-Id header");
    if (!strcmp(method, "tools/list")) return mcp_tools_list(result, err);
    if (!strcmp(method, "tools/call")) return mcp_tools_call(w, c, params, result, err);
    if (!strcmp(method, "resources/list")) return mcp_resources_list(w, params, result, err);
    if (!strcmp(method, "resources/templates/list"))
        return mcp_resource_templates_list(result, err);
    if (!strcmp(method, "resources/read")) return mcp_resources_read(w, params, result, err);
    if (!strcmp(method, "prompts/list")) return mcp_prompts_list(result, err);
    if (!strcmp(method, "prompts/get")) return mcp_prompts_get(w, params, result, err);
    return mcp_error_set(err, MCP_METHOD_NOT_FOUND,
                         "Method not found: %s (ctxd serves ping, tools/*, resources/list, "
                         "resources/read, resources/templates/list and prompts/*)",
                         method);
}
