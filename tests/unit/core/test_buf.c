/* test_buf.c: growth, JSON string escaping, hand-over. */
#include "../../../src/core/buf.c"

#include "../test.h"

TEST(test_buf_json_escaping) {
    buf b;
    buf_init(&b);
    const char s[] = "q\"b\\n\nt\tc\x01 caf\xc3\xa9 </x>";
    CHECK(buf_put_json_string(&b, s, sizeof(s) - 1) == CTXD_OK);
    CHECK_STR(b.data, "\"q\\\"b\\\\n\\nt\\tc\\u0001 caf\xc3\xa9 </x>\"");
    buf_free(&b);
}

TEST(test_buf_embedded_nul_is_escaped) {
    buf b;
    buf_init(&b);
    CHECK(buf_put_json_string(&b, "a\0b", 3) == CTXD_OK);
    CHECK_STR(b.data, "\"a\\u0000b\"");
    buf_free(&b);
}

TEST(test_buf_grows_and_hands_over) {
    buf b;
    buf_init(&b);
    for (int i = 0; i < 1000; i++) buf_printf(&b, "%04d", i);
    CHECK(b.len == 4000);
    CHECK(!strncmp(b.data + 3996, "0999", 4));
    size_t len;
    char *d = buf_take(&b, &len);
    CHECK(len == 4000 && d && b.data == NULL);
    free(d);
    buf_init(&b);
    d = buf_take(&b, &len);
    CHECK(d && len == 0 && d[0] == '\0');
    free(d);
}

TEST_MAIN(T(test_buf_json_escaping), T(test_buf_embedded_nul_is_escaped),
          T(test_buf_grows_and_hands_over))
