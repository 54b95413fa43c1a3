/* test_json_strict.c: the RFC 8259 grammar checked to the letter, with where it fails. */
#include <stdlib.h>

#include "ctxd/json_strict.h"

#include "../test.h"

#define DEPTH 64

typedef struct {
    json_strict_result r;
    size_t at;
    const char *why;
} checked;

/* Check len bytes of s from a buffer of exactly len bytes (ASan sees an
 * overread). */
static checked check_n(const char *s, size_t len, int depth) {
    checked c;
    char *copy = malloc(len ? len : 1);
    memcpy(copy, s, len);
    c.at = 12345;
    c.why = NULL;
    c.r = json_strict_check(copy, len, depth, &c.at, &c.why);
    free(copy);
    return c;
}

static checked check(const char *s) { return check_n(s, strlen(s), DEPTH); }

/* s is rejected with r at byte at (and a reason). */
static int rejected(const char *s, json_strict_result r, size_t at) {
    checked c = check(s);
    if (c.r == r && c.at == at && c.why && *c.why) return 1;
    fprintf(stderr, "'%s': result %d at %zu (%s); wanted %d at %zu\n", s, (int)c.r, c.at,
            c.why ? c.why : "no reason", (int)r, at);
    return 0;
}

static int accepted(const char *s) {
    checked c = check(s);
    if (c.r == JSON_STRICT_OK) return 1;
    fprintf(stderr, "'%s': result %d at %zu (%s)\n", s, (int)c.r, c.at, c.why ? c.why : "");
    return 0;
}

TEST(test_json_strict_valid_documents) {
    CHECK(accepted("{}"));
    CHECK(accepted("[]"));
    CHECK(accepted(" \t\r\n{ \"a\" : [ 1 , { \"b\" : null } , [ ] ] , \"c\" : { } } \n"));
    CHECK(accepted("{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":10}"));
    CHECK(accepted("\"just a string\""));
    CHECK(accepted("true"));
    CHECK(accepted("false"));
    CHECK(accepted("null"));
    CHECK(accepted("{\"a\":1,\"a\":2}"));           /* duplicate keys are the parser's business */
    CHECK(accepted("[\"caf\xc3\xa9\", \"\x7f\"]")); /* UTF-8 and DEL are not control bytes */
    checked c = check("{\"a\":[true,false,null]}");
    CHECK(c.r == JSON_STRICT_OK && c.why == NULL);
}

TEST(test_json_strict_numbers) {
    static const char *const ok[] = {
        "0",          "-0",   "1",     "-1",
        "123",        "1.5",  "-0.25", "1e5",
        "1E5",        "1e+5", "1e-5",  "2.5E-10",
        "-0e0",       "0.0",  "1e999", "123456789012345678901234567890",
        "[0,-0.0,10]"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) CHECK(accepted(ok[i]));
    CHECK(rejected("01", JSON_STRICT_SYNTAX, 1));
    CHECK(rejected("-01", JSON_STRICT_SYNTAX, 2));
    CHECK(rejected("[00]", JSON_STRICT_SYNTAX, 2));
    CHECK(rejected("1.", JSON_STRICT_SYNTAX, 2));
    CHECK(rejected("[1.]", JSON_STRICT_SYNTAX, 3));
    CHECK(rejected(".5", JSON_STRICT_SYNTAX, 0));
    CHECK(rejected("[.5]", JSON_STRICT_SYNTAX, 1));
    CHECK(rejected("-", JSON_STRICT_SYNTAX, 1));
    CHECK(rejected("- 1", JSON_STRICT_SYNTAX, 1));
    CHECK(rejected("+1", JSON_STRICT_SYNTAX, 0));
    CHECK(rejected("1e", JSON_STRICT_SYNTAX, 2));
    CHECK(rejected("1e+", JSON_STRICT_SYNTAX, 3));
    CHECK(rejected("1.e5", JSON_STRICT_SYNTAX, 2));
    CHECK(rejected("0x10", JSON_STRICT_SYNTAX, 1));
}

TEST(test_json_strict_nan_and_infinity) {
    CHECK(rejected("NaN", JSON_STRICT_SYNTAX, 0));
    CHECK(rejected("Infinity", JSON_STRICT_SYNTAX, 0));
    CHECK(rejected("-Infinity", JSON_STRICT_SYNTAX, 1));
    CHECK(rejected("{\"t\": NaN}", JSON_STRICT_SYNTAX, 6));
    CHECK(rejected("[1, -Infinity]", JSON_STRICT_SYNTAX, 5));
    CHECK(rejected("[nan]", JSON_STRICT_SYNTAX, 2));
    checked c = check("NaN");
    CHECK(c.why && strstr(c.why, "NaN") != NULL);
}

TEST(test_json_strict_literals) {
    CHECK(rejected("tru", JSON_STRICT_SYNTAX, 3));
    CHECK(rejected("trUe", JSON_STRICT_SYNTAX, 2));
    CHECK(rejected("True", JSON_STRICT_SYNTAX, 0));
    CHECK(rejected("nul", JSON_STRICT_SYNTAX, 3));
    CHECK(rejected("[null1]", JSON_STRICT_SYNTAX, 5));
    CHECK(rejected("undefined", JSON_STRICT_SYNTAX, 0));
}

TEST(test_json_strict_trailing_comma) {
    CHECK(rejected("[1,]", JSON_STRICT_SYNTAX, 3));
    CHECK(rejected("{\"a\":1,}", JSON_STRICT_SYNTAX, 7));
    CHECK(rejected("[,1]", JSON_STRICT_SYNTAX, 1));
    CHECK(rejected("[1,,2]", JSON_STRICT_SYNTAX, 3));
    CHECK(rejected("[1 2]", JSON_STRICT_SYNTAX, 3));
}

TEST(test_json_strict_object_syntax) {
    CHECK(rejected("{'a':1}", JSON_STRICT_SYNTAX, 1));
    CHECK(rejected("['a']", JSON_STRICT_SYNTAX, 1));
    CHECK(rejected("{a:1}", JSON_STRICT_SYNTAX, 1));
    CHECK(rejected("{1:1}", JSON_STRICT_SYNTAX, 1));
    /* The offset names the byte where the ':' should be. */
    CHECK(rejected("{\"a\" 1}", JSON_STRICT_SYNTAX, 5));
    CHECK(rejected("{\"a\";1}", JSON_STRICT_SYNTAX, 4));
    CHECK(rejected("{\"a\":}", JSON_STRICT_SYNTAX, 5));
    CHECK(rejected("{\"a\":1]", JSON_STRICT_SYNTAX, 6));
    CHECK(rejected("[1}", JSON_STRICT_SYNTAX, 2));
    CHECK(rejected("{\"a\"", JSON_STRICT_SYNTAX, 4));
    CHECK(rejected("[1", JSON_STRICT_SYNTAX, 2));
    CHECK(rejected("/* c */ 1", JSON_STRICT_SYNTAX, 0));
}

TEST(test_json_strict_control_bytes) {
    CHECK(rejected("\"a\x01"
                   "b\"",
                   JSON_STRICT_SYNTAX, 2));
    CHECK(rejected("{\"k\": \"line\nbreak\"}", JSON_STRICT_SYNTAX, 11));
    CHECK(rejected("[\"tab\there\"]", JSON_STRICT_SYNTAX, 5));
    CHECK(rejected("{\"k\x1f\": 1}", JSON_STRICT_SYNTAX, 3));
    static const char nul[] = "[\"a\0b\"]";
    checked c = check_n(nul, sizeof(nul) - 1, DEPTH);
    CHECK(c.r == JSON_STRICT_SYNTAX && c.at == 3);
    /* Raw bytes outside strings are not whitespace either. */
    static const char nul_ws[] = "[1,\0 2]";
    c = check_n(nul_ws, sizeof(nul_ws) - 1, DEPTH);
    CHECK(c.r == JSON_STRICT_SYNTAX && c.at == 3);
    CHECK(rejected("[1,\f2]", JSON_STRICT_SYNTAX, 3));
    CHECK(rejected("\v[]", JSON_STRICT_SYNTAX, 0));
}

TEST(test_json_strict_escapes) {
    CHECK(accepted("\"\\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u00e9 \\u20AC \\u0001\""));
    CHECK(rejected("\"\\x41\"", JSON_STRICT_SYNTAX, 3));
    CHECK(rejected("\"\\'\"", JSON_STRICT_SYNTAX, 3));
    CHECK(rejected("\"\\U0041\"", JSON_STRICT_SYNTAX, 3));
    /* The offset names the byte that is not a hex digit. */
    CHECK(rejected("\"\\u12g4\"", JSON_STRICT_SYNTAX, 5));
    CHECK(rejected("\"\\u12\"", JSON_STRICT_SYNTAX, 3));
    CHECK(rejected("\"\\u", JSON_STRICT_SYNTAX, 3));
    CHECK(rejected("\"abc\\", JSON_STRICT_SYNTAX, 5));
    CHECK(rejected("\"abc", JSON_STRICT_SYNTAX, 4));
}

TEST(test_json_strict_nul_escape) {
    CHECK(rejected("\"\\u0000\"", JSON_STRICT_SYNTAX, 1));
    CHECK(rejected("{\"a\": \"x\\u0000y\"}", JSON_STRICT_SYNTAX, 8));
    CHECK(rejected("{\"\\u0000\": 1}", JSON_STRICT_SYNTAX, 2));
    checked c = check("[\"\\u0000\"]");
    CHECK(c.why && strstr(c.why, "NUL") != NULL);
    /* Not an escape: an escaped backslash followed by text. */
    CHECK(accepted("\"\\\\u0000\""));
}

/* The cases util_json_surrogates_valid had, now answered here. */
TEST(test_json_strict_surrogates) {
    CHECK(accepted("{\"a\": \"\\ud83d\\ude00 and \\\\ud800 is text\"}"));
    CHECK(accepted("\"\\uD83D\\uDE00\\udbff\\udfff\""));
    CHECK(accepted("\"\\ud7ff\\ue000\\uffff\""));
    CHECK(rejected("{\"a\": \"\\ud800\"}", JSON_STRICT_ENCODING, 7));
    CHECK(rejected("{\"a\": \"x\\udc00\"}", JSON_STRICT_ENCODING, 8));
    CHECK(rejected("{\"\\ud800x\": 1}", JSON_STRICT_ENCODING, 2));
    CHECK(rejected("\"\\ud800\"", JSON_STRICT_ENCODING, 1));
    CHECK(rejected("\"\\udc00\"", JSON_STRICT_ENCODING, 1));
    CHECK(rejected("\"\\udfff\\ud800\"", JSON_STRICT_ENCODING, 1));
    /* A high surrogate followed by anything but a low one. */
    CHECK(rejected("\"\\ud800\\ud800\"", JSON_STRICT_ENCODING, 1));
    CHECK(rejected("\"\\ud800\\u0041\"", JSON_STRICT_ENCODING, 1));
    CHECK(rejected("\"\\ud800\\n\"", JSON_STRICT_ENCODING, 1));
    CHECK(rejected("\"ab\\ud800", JSON_STRICT_ENCODING, 3));
    CHECK(rejected("\"\\ud800\\u", JSON_STRICT_ENCODING, 1));
    checked c = check("\"\\ud800\"");
    CHECK(c.why && strstr(c.why, "surrogate") != NULL);
}

TEST(test_json_strict_data_after_value) {
    CHECK(rejected("{} {}", JSON_STRICT_SYNTAX, 3));
    CHECK(rejected("{}x", JSON_STRICT_SYNTAX, 2));
    CHECK(rejected("1 2", JSON_STRICT_SYNTAX, 2));
    CHECK(rejected("[]]", JSON_STRICT_SYNTAX, 2));
    CHECK(rejected("\"a\"\"b\"", JSON_STRICT_SYNTAX, 3));
    CHECK(accepted("{}  \r\n\t"));
    checked c = check("{} {}");
    CHECK(c.why && strstr(c.why, "after") != NULL);
}

/* n nested arrays around a 1. */
static char *nested(int n) {
    char *s = malloc((size_t)n * 2 + 2);
    memset(s, '[', (size_t)n);
    s[n] = '1';
    memset(s + n + 1, ']', (size_t)n);
    s[2 * n + 1] = '\0';
    return s;
}

TEST(test_json_strict_depth_limit) {
    char *at_limit = nested(DEPTH), *over = nested(DEPTH + 1);
    CHECK(accepted(at_limit));
    checked c = check(over);
    CHECK(c.r == JSON_STRICT_SYNTAX);
    CHECK(c.at == DEPTH); /* the bracket one too deep */
    CHECK(c.why && strstr(c.why, "deep") != NULL);
    free(at_limit);
    free(over);
    CHECK(check_n("{\"a\":{\"b\":1}}", 13, 2).r == JSON_STRICT_OK);
    c = check_n("{\"a\":{\"b\":[]}}", 14, 2);
    CHECK(c.r == JSON_STRICT_SYNTAX && c.at == 10);
    CHECK(check_n("1", 1, 0).r == JSON_STRICT_OK);
    CHECK(check_n("[]", 2, 0).r == JSON_STRICT_SYNTAX);
    /* Far past the limit fails fast, without deep recursion. */
    char *deep = nested(100000);
    CHECK(check(deep).r == JSON_STRICT_SYNTAX);
    free(deep);
}

TEST(test_json_strict_empty_input) {
    CHECK(rejected("", JSON_STRICT_SYNTAX, 0));
    CHECK(rejected(" \r\n\t", JSON_STRICT_SYNTAX, 4));
    checked c = check("");
    CHECK(c.why && strstr(c.why, "end") != NULL);
}

/* The length is the end: bytes after it are never looked at. */
TEST(test_json_strict_stops_at_len) {
    CHECK(check_n("[1,2]", 3, DEPTH).r == JSON_STRICT_SYNTAX);
    CHECK(check_n("[1,2] garbage", 5, DEPTH).r == JSON_STRICT_OK);
    CHECK(check_n("\"abc\"", 4, DEPTH).r == JSON_STRICT_SYNTAX);
    CHECK(check_n("true", 3, DEPTH).r == JSON_STRICT_SYNTAX);
    CHECK(check_n("\"\\ud83d\\ude00\"", 12, DEPTH).r == JSON_STRICT_ENCODING);
    CHECK(check_n("12345", 2, DEPTH).r == JSON_STRICT_OK);
}

TEST_MAIN(T(test_json_strict_valid_documents), T(test_json_strict_numbers),
          T(test_json_strict_nan_and_infinity), T(test_json_strict_literals),
          T(test_json_strict_trailing_comma), T(test_json_strict_object_syntax),
          T(test_json_strict_control_bytes), T(test_json_strict_escapes),
          T(test_json_strict_nul_escape), T(test_json_strict_surrogates),
          T(test_json_strict_data_after_value), T(test_json_strict_depth_limit),
          T(test_json_strict_empty_input), T(test_json_strict_stops_at_len))
