/* test_util.c: ids, UTF-8 checks, time formatting, hashing. */
#include "../../../src/core/util.c"

#include "../test.h"

TEST(test_util_uuid4_is_canonical_and_validated) {
    char id[UTIL_UUID_LEN + 1], other[UTIL_UUID_LEN + 1];
    CHECK(util_uuid4(id) == CTXD_OK);
    CHECK(util_uuid4(other) == CTXD_OK);
    CHECK(util_is_context_id(id));
    CHECK(strcmp(id, other) != 0);
    CHECK(!util_is_context_id("1b4e28ba-2fa1-4d2e-8c8f-6d1e3f0c9a2"));  /* short */
    CHECK(!util_is_context_id("1B4E28BA-2FA1-4D2E-8C8F-6D1E3F0C9A27")); /* upper */
    CHECK(!util_is_context_id("1b4e28ba-2fa1-1d2e-8c8f-6d1e3f0c9a27")); /* v1 */
    CHECK(!util_is_context_id("1b4e28ba-2fa1-4d2e-cc8f-6d1e3f0c9a27")); /* variant */
    CHECK(!util_is_context_id("1b4e28ba-2fa1-4d2e-8c8f-6d1e3f0c9a2}"));
    CHECK(util_is_context_id("1b4e28ba-2fa1-4d2e-8c8f-6d1e3f0c9a27"));
    CHECK(!util_is_context_id(NULL));
}

TEST(test_util_tokens_are_random_and_well_formed) {
    char a[33], b[33], c[25], d[25];
    int seen[256] = {0};
    CHECK(util_token(a) == CTXD_OK && util_token(b) == CTXD_OK);
    CHECK(strlen(a) == 32 && strspn(a, "0123456789abcdef") == 32 && strcmp(a, b) != 0);
    CHECK(util_token62(c, 24) == CTXD_OK && util_token62(d, 24) == CTXD_OK);
    CHECK(strlen(c) == 24 && strcmp(c, d) != 0);
    /* Past the pool's refills: every one of the 62 characters turns up, and
     * nothing else does. */
    for (int i = 0; i < 400; i++) {
        CHECK(util_token62(c, 24) == CTXD_OK);
        for (int j = 0; j < 24; j++) seen[(unsigned char)c[j]]++;
    }
    int kinds = 0;
    for (int ch = 0; ch < 256; ch++)
        if (seen[ch]) {
            kinds++;
            CHECK((ch >= '0' && ch <= '9') || (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z'));
        }
    CHECK(kinds == 62);
}

TEST(test_util_utf8_validation) {
    CHECK(util_utf8_valid("plain", 5));
    CHECK(util_utf8_valid("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 14));
    CHECK(!util_utf8_valid("\xc3", 1));             /* truncated */
    CHECK(!util_utf8_valid("\xc0\xaf", 2));         /* overlong */
    CHECK(!util_utf8_valid("\xed\xa0\x80", 3));     /* surrogate */
    CHECK(!util_utf8_valid("\xf4\x90\x80\x80", 4)); /* above U+10FFFF */
    CHECK(!util_utf8_valid("\xff", 1));
    CHECK(!util_utf8_valid("a\x80", 2));
}

TEST(test_util_iso8601_and_idem_keys) {
    char out[UTIL_ISO_LEN];
    util_iso8601(1764061200123LL, out);
    CHECK_STR(out, "2025-11-25T09:00:00.123Z");
    CHECK(util_is_idem_key("a-b_c.1:2"));
    CHECK(!util_is_idem_key(""));
    CHECK(!util_is_idem_key("has space"));
    char long_key[300];
    memset(long_key, 'k', sizeof(long_key) - 1);
    long_key[299] = '\0';
    CHECK(!util_is_idem_key(long_key));
}

TEST(test_util_fnv_is_chainable) {
    uint64_t whole = util_fnv1a(UTIL_FNV_SEED, "abcdef", 6);
    uint64_t parts = util_fnv1a(util_fnv1a(UTIL_FNV_SEED, "abc", 3), "def", 3);
    CHECK(whole == parts);
    CHECK(whole != util_fnv1a(UTIL_FNV_SEED, "abcdeg", 6));
}

TEST_MAIN(T(test_util_uuid4_is_canonical_and_validated),
          T(test_util_tokens_are_random_and_well_formed), T(test_util_utf8_validation),
          T(test_util_iso8601_and_idem_keys), T(test_util_fnv_is_chainable))
