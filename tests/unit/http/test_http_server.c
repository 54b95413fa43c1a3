/* test_http_server.c: route matching. */
#include "../../../src/http/http_server.c"

#include "../test.h"

TEST(test_http_match_patterns) {
    char id[128];
    const char *got;
    CHECK(match("/mcp/context", "/mcp/context", id, sizeof(id), &got) && got == NULL);
    CHECK(match("/mcp/context/{id}", "/mcp/context/abc", id, sizeof(id), &got));
    CHECK_STR(got, "abc");
    CHECK(match("/mcp/context/{id}/state", "/mcp/context/x-1/state", id, sizeof(id), &got));
    CHECK_STR(got, "x-1");
    CHECK(!match("/mcp/context/{id}", "/mcp/context/", id, sizeof(id), &got));
    CHECK(!match("/mcp/context/{id}", "/mcp/context/a/b", id, sizeof(id), &got));
    CHECK(!match("/mcp/context/{id}/state", "/mcp/context/a/stat", id, sizeof(id), &got));
    CHECK(!match("/mcp/contexts", "/mcp/context", id, sizeof(id), &got));
    char small[4];
    CHECK(!match("/x/{id}", "/x/toolong", small, sizeof(small), &got));
}

TEST_MAIN(T(test_http_match_patterns))
