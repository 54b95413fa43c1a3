/* test_mcp.c: the MCP service: versions, initialize and sessions, the tools' table and errors. */
#include "turn_fixture.h"

#include "../test.h"
#include "ctxd/mcp.h"

static json_object *obj(const char *text) { return mcp_json_parse(text, strlen(text)); }

static const char *str_at(json_object *o, const char *a, const char *b) {
    json_object *v = NULL;
    if (!json_object_object_get_ex(o, a, &v)) return NULL;
    if (b && !json_object_object_get_ex(v, b, &v)) return NULL;
    return json_object_get_string(v);
}

TEST(test_mcp_versions) {
    CHECK(mcp_version_supported("2025-11-25"));
    CHECK(mcp_version_supported("2025-06-18"));
    CHECK(mcp_version_supported("2025-03-26"));
    CHECK(!mcp_version_supported("2024-11-05"));
    CHECK(!mcp_version_supported(""));
    CHECK(!mcp_version_supported(NULL));
}

TEST(test_mcp_tools_table) {
    json_object *res = NULL, *tools = NULL;
    mcp_error err;
    CHECK(mcp_tools_list(&res, &err) == CTXD_OK);
    CHECK(json_object_object_get_ex(res, "tools", &tools));
    CHECK(json_object_array_length(tools) == 10);
    for (size_t i = 0; i < json_object_array_length(tools); i++) {
        json_object *t = json_object_array_get_idx(tools, i), *a = NULL;
        CHECK_STR(str_at(t, "inputSchema", "type"), "object");
        CHECK_STR(str_at(t, "outputSchema", "type"), "object");
        CHECK(json_object_object_get_ex(t, "annotations", &a));
        CHECK(json_object_object_get_ex(a, "readOnlyHint", NULL));
        CHECK(str_at(t, "description", NULL) && str_at(t, "title", NULL));
    }
    json_object_put(res);
}

TEST(test_mcp_initialize_starts_a_session) {
    redis_fixture rf;
    tf_start(&rf);
    ctxd_worker *w = tf_worker(&rf);
    auth_identity who;
    auth_open_identity(&who);
    store_mcp_session sess, found_sess;
    json_object *res = NULL, *p;
    mcp_error err;
    ctxd_error e;
    int found = 0;
    p = obj("{\"protocolVersion\":\"2025-03-26\",\"capabilities\":{},"
            "\"clientInfo\":{\"name\":\"t\",\"version\":\"9\"}}");
    CHECK(mcp_initialize(w, &who, p, &sess, &res, &err) == CTXD_OK);
    CHECK_STR(str_at(res, "protocolVersion", NULL), "2025-03-26");
    CHECK_STR(str_at(res, "serverInfo", "name"), "ctxd");
    CHECK(mcp_session_find(w, sess.id, &found_sess, &found, &e) == CTXD_OK && found);
    CHECK_STR(found_sess.client_name, "t");
    json_object_put(res);
    json_object_put(p);
    /* An unknown revision gets the newest; missing params are invalid. */
    p = obj("{\"protocolVersion\":\"1999-01-01\",\"capabilities\":{}}");
    CHECK(mcp_initialize(w, &who, p, &sess, &res, &err) == CTXD_OK);
    CHECK_STR(str_at(res, "protocolVersion", NULL), MCP_PROTOCOL_LATEST);
    json_object_put(res);
    json_object_put(p);
    char sid[sizeof(sess.id)];
    snprintf(sid, sizeof(sid), "%s", sess.id);
    CHECK(mcp_initialize(w, &who, NULL, &sess, &res, &err) == CTXD_ERR);
    CHECK(err.code == MCP_INVALID_PARAMS && err.infra.err == CTXD_E_NONE);
    CHECK(mcp_session_end(w, sid, &found, &e) == CTXD_OK && found);
    CHECK(mcp_session_find(w, sid, &found_sess, &found, &e) == CTXD_OK && !found);
    /* Redis down: ctxd's trouble, not a JSON-RPC error of the client's. */
    rf_kill(&rf);
    p = obj("{\"protocolVersion\":\"2025-11-25\",\"capabilities\":{}}");
    CHECK(mcp_initialize(w, &who, p, &sess, &res, &err) == CTXD_ERR);
    CHECK(err.infra.err == CTXD_E_REDIS);
    json_object_put(p);
    tf_stop(&rf, w);
}

/* tools/call of name with args (JSON text): the result, or NULL with err. */
static json_object *call(ctxd_worker *w, const mcp_caller *c, const char *name, const char *args,
                         mcp_error *err) {
    char text[512];
    json_object *res = NULL;
    snprintf(text, sizeof(text), "{\"name\":\"%s\",\"arguments\":%s}", name, args);
    json_object *p = obj(text);
    if (mcp_call(w, c, "tools/call", p, &res, err)) res = NULL;
    json_object_put(p);
    return res;
}

static int is_error(json_object *res) {
    json_object *v = NULL;
    return res && json_object_object_get_ex(res, "isError", &v) && json_object_get_boolean(v);
}

TEST(test_mcp_tool_errors_are_results) {
    redis_fixture rf;
    tf_start(&rf);
    ctxd_worker *w = tf_worker(&rf);
    auth_identity who;
    auth_open_identity(&who);
    mcp_caller c = {&who, MCP_PROTOCOL_LATEST};
    mcp_error err;
    char id[UTIL_UUID_LEN + 1], args[128];
    CHECK(tf_create(w, id, NULL, -1, -1) == CTXD_OK);
    json_object *res =
        call(w, &c, "get_state", "{\"context_id\":\"00000000-0000-4000-8000-000000000000\"}", &err);
    CHECK(is_error(res));
    json_object_put(res);
    res = call(w, &c, "create_context", "{\"strategy\":\"often\"}", &err);
    CHECK(is_error(res));
    json_object_put(res);
    res = call(w, &c, "nope", "{}", &err);
    CHECK(!res && err.code == MCP_INVALID_PARAMS);
    /* A read-only caller: writing tools refuse, and nothing is written. */
    who.scopes = AUTH_SCOPE_READ;
    snprintf(args, sizeof(args), "{\"context_id\":\"%s\",\"message\":\"hi\"}", id);
    res = call(w, &c, "send_message", args, &err);
    CHECK(is_error(res));
    json_object_put(res);
    CHECK(tf_count(w, id) == 0);
    snprintf(args, sizeof(args), "{\"context_id\":\"%s\"}", id);
    res = call(w, &c, "read_messages", args, &err);
    CHECK(res && !is_error(res));
    json_object_put(res);
    /* Unknown methods are JSON-RPC errors. */
    CHECK(mcp_call(w, &c, "sampling/createMessage", NULL, &res, &err) == CTXD_ERR);
    CHECK(err.code == MCP_METHOD_NOT_FOUND);
    tf_stop(&rf, w);
}

TEST(test_mcp_stateless_results) {
    auth_identity who;
    auth_open_identity(&who);
    mcp_caller c = {&who, MCP_PROTOCOL_STATELESS};
    json_object *res = NULL, *v = NULL;
    mcp_error err;
    /* Methods that need no Redis: discover and the lists. */
    CHECK(mcp_call(NULL, &c, "server/discover", NULL, &res, &err) == CTXD_OK);
    CHECK_STR(str_at(res, "resultType", NULL), "complete");
    CHECK_STR(str_at(res, "cacheScope", NULL), "public");
    CHECK(json_object_object_get_ex(res, "supportedVersions", &v));
    CHECK_STR(json_object_get_string(json_object_array_get_idx(v, 0)), MCP_PROTOCOL_STATELESS);
    CHECK(json_object_object_get_ex(res, "_meta", &v));
    CHECK_STR(str_at(v, "io.modelcontextprotocol/serverInfo", "name"), "ctxd");
    json_object_put(res);
    CHECK(mcp_call(NULL, &c, "tools/list", NULL, &res, &err) == CTXD_OK);
    CHECK(json_object_object_get_ex(res, "ttlMs", &v) && json_object_get_int64(v) > 0);
    json_object_put(res);
    /* ping is gone from the revision; the session revisions keep it. */
    CHECK(mcp_call(NULL, &c, "ping", NULL, &res, &err) == CTXD_ERR);
    CHECK(err.code == MCP_METHOD_NOT_FOUND);
    c.protocol_version = MCP_PROTOCOL_LATEST;
    CHECK(mcp_call(NULL, &c, "ping", NULL, &res, &err) == CTXD_OK);
    CHECK(!json_object_object_get_ex(res, "resultType", NULL));
    json_object_put(res);
    CHECK(mcp_call(NULL, &c, "server/discover", NULL, &res, &err) == CTXD_ERR);
}

TEST_MAIN(T(test_mcp_versions), T(test_mcp_tools_table), T(test_mcp_initialize_starts_a_session),
          T(test_mcp_tool_errors_are_results), T(test_mcp_stateless_results))
