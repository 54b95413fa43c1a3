/* test_http_request.c: which Content-Types count as JSON. */
#include "../../../src/http/http_request.c"

#include "../test.h"

TEST(test_http_json_content_types) {
    CHECK(is_json_type("application/json"));
    CHECK(is_json_type("Application/JSON; charset=utf-8"));
    CHECK(is_json_type("application/merge-patch+json"));
    CHECK(!is_json_type("text/plain"));
    CHECK(!is_json_type("application/x-www-form-urlencoded"));
    CHECK(!is_json_type("application/jsonx"));
    CHECK(!is_json_type(NULL));
}

TEST_MAIN(T(test_http_json_content_types))
