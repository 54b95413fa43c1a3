/* test_message.c: stored messages round-trip through encode and decode. */
#include "../../../src/core/message.c"

#include <json-c/json.h>

#include "../test.h"

static char arena[4096];

TEST(test_message_round_trip_with_escapes) {
    const char text[] = "line1\nquote\" back\\slash tab\t caf\xc3\xa9 \xf0\x9f\x98\x80 nul\0end";
    message m = {.seq = 7,
                 .role = "user",
                 .content = text,
                 .content_len = sizeof(text) - 1,
                 .created_ms = 1764061200123LL,
                 .tokens = 12,
                 .input_tokens = -1,
                 .output_tokens = -1};
    buf b;
    buf_init(&b);
    CHECK(message_encode(&b, &m) == CTXD_OK);
    /* json-c agrees it is valid JSON with the same content. */
    json_object *o = json_tokener_parse(b.data), *c;
    CHECK(o && json_object_object_get_ex(o, "content", &c));
    CHECK((size_t)json_object_get_string_len(c) == sizeof(text) - 1);
    json_object_put(o);
    message d;
    size_t used = 0;
    CHECK(message_decode(b.data, b.len, arena, &used, &d) == CTXD_OK);
    CHECK_STR(d.role, "user");
    CHECK(d.content_len == sizeof(text) - 1 && !memcmp(d.content, text, d.content_len));
    CHECK(d.seq == 7 && d.tokens == 12);
    CHECK(strstr(b.data, "\"usage\"") == NULL);
    buf_free(&b);
}

TEST(test_message_reply_fields_and_skipping) {
    message m = {.seq = 2,
                 .role = "assistant",
                 .content = "hi",
                 .content_len = 2,
                 .created_ms = 0,
                 .tokens = 5,
                 .model = "echo",
                 .stop_reason = "end_turn",
                 .input_tokens = 10,
                 .output_tokens = -1};
    buf b;
    buf_init(&b);
    message_encode(&b, &m);
    CHECK(strstr(b.data, "\"usage\":{\"input_tokens\":10,\"output_tokens\":null}") != NULL);
    message d;
    size_t used = 0;
    CHECK(message_decode(b.data, b.len, arena, &used, &d) == CTXD_OK);
    CHECK_STR(d.content, "hi");
    buf_free(&b);
    const char odd[] = "{ \"x\": [1, {\"y\": \"}\"}, [\"]\"]], \"role\" : \"user\", "
                       "\"n\": -1.5e3, \"t\": true, \"content\": \"\\u00e9\\ud83d\\ude00\" }";
    used = 0;
    CHECK(message_decode(odd, sizeof(odd) - 1, arena, &used, &d) == CTXD_OK);
    CHECK_STR(d.content, "\xc3\xa9\xf0\x9f\x98\x80");
    CHECK(d.seq == -1 && d.tokens == -1);
}

TEST(test_message_decode_refuses_broken_input) {
    message d;
    size_t used = 0;
    const char *bad[] = {"",
                         "[]",
                         "{\"role\":\"user\"}",
                         "{\"role\":\"user\",\"content\":\"x",
                         "{\"role\":\"user\",\"content\":\"\\ud800\"}",
                         "{\"role\":\"user\" \"content\":\"x\"}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        used = 0;
        CHECK(message_decode(bad[i], strlen(bad[i]), arena, &used, &d) == CTXD_ERR);
    }
}

TEST_MAIN(T(test_message_round_trip_with_escapes), T(test_message_reply_fields_and_skipping),
          T(test_message_decode_refuses_broken_input))
