/* test_store_mcp.c: MCP sessions: one expiring hash per session, per tenant, renewed on read. */
#include "store_fixture.h"

#include "../test.h"

static store_mcp_session sample(const char *id) {
    store_mcp_session s;
    memset(&s, 0, sizeof(s));
    snprintf(s.id, sizeof(s.id), "%s", id);
    snprintf(s.protocol_version, sizeof(s.protocol_version), "2025-06-18");
    snprintf(s.client_name, sizeof(s.client_name), "claude");
    snprintf(s.client_version, sizeof(s.client_version), "1.2");
    snprintf(s.key_id, sizeof(s.key_id), "key_1");
    snprintf(s.created_at, sizeof(s.created_at), "2026-12-01T00:00:00.000Z");
    return s;
}

TEST(test_store_mcp_session_round_trip) {
    redis_fixture rf;
    store *s = sf_start(&rf);
    store_mcp_session in = sample("5c1d3f0e-8a47-4c1b-9f0e-2b7d6c9e4a11"), out;
    int found = -1;
    CHECK(store_mcp_session_put(s, &in, 100) == CTXD_OK);
    /* One hash, readable with redis-cli, with its expiry. */
    CHECK(rf_int(&rf, "TTL %s", "ctxd:{mcp:default:5c1d3f0e-8a47-4c1b-9f0e-2b7d6c9e4a11}") > 90);
    CHECK(rf_count_keys(&rf, "*") == 1);
    rf_int(&rf, "EXPIRE %s 5", "ctxd:{mcp:default:5c1d3f0e-8a47-4c1b-9f0e-2b7d6c9e4a11}");
    CHECK(store_mcp_session_get(s, in.id, 100, &out, &found) == CTXD_OK && found == 1);
    CHECK_STR(out.id, in.id);
    CHECK_STR(out.protocol_version, "2025-06-18");
    CHECK_STR(out.client_name, "claude");
    CHECK_STR(out.client_version, "1.2");
    CHECK_STR(out.key_id, "key_1");
    CHECK_STR(out.created_at, in.created_at);
    /* A read starts the countdown again. */
    CHECK(rf_int(&rf, "TTL %s", "ctxd:{mcp:default:5c1d3f0e-8a47-4c1b-9f0e-2b7d6c9e4a11}") > 90);
    CHECK(store_mcp_session_delete(s, in.id, &found) == CTXD_OK && found == 1);
    CHECK(store_mcp_session_get(s, in.id, 100, &out, &found) == CTXD_OK && found == 0);
    CHECK(store_mcp_session_delete(s, in.id, &found) == CTXD_OK && found == 0);
    /* Reading an unknown session leaves no key behind. */
    CHECK(rf_count_keys(&rf, "*") == 0);
    sf_stop(&rf, s);
}

TEST(test_store_mcp_session_is_the_tenants) {
    redis_fixture rf;
    store *s = sf_start(&rf);
    store_mcp_session in = sample("abc"), out;
    int found = -1;
    store_set_tenant(s, "acme");
    CHECK(store_mcp_session_put(s, &in, 100) == CTXD_OK);
    CHECK(rf_int(&rf, "EXISTS %s", "ctxd:{mcp:acme:abc}") == 1);
    store_set_tenant(s, "globex");
    CHECK(store_mcp_session_get(s, "abc", 100, &out, &found) == CTXD_OK && found == 0);
    CHECK(store_mcp_session_delete(s, "abc", &found) == CTXD_OK && found == 0);
    store_set_tenant(s, "acme");
    CHECK(store_mcp_session_get(s, "abc", 100, &out, &found) == CTXD_OK && found == 1);
    sf_stop(&rf, s);
}

TEST(test_store_mcp_session_redis_down) {
    redis_fixture rf;
    store *s = sf_start(&rf);
    store_mcp_session in = sample("abc"), out;
    int found = -1;
    rf_kill(&rf);
    CHECK(store_mcp_session_put(s, &in, 100) == CTXD_ERR && s->err == CTXD_E_REDIS);
    CHECK(store_mcp_session_get(s, "abc", 100, &out, &found) == CTXD_ERR && s->err == CTXD_E_REDIS);
    CHECK(found == 0);
    sf_stop(&rf, s);
}

TEST_MAIN(T(test_store_mcp_session_round_trip), T(test_store_mcp_session_is_the_tenants),
          T(test_store_mcp_session_redis_down))
