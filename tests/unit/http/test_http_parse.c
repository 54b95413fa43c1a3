/* test_http_parse.c: request heads and chunked bodies framed by RFC 9112. */
#include "../../../src/http/http_parse.c"

#include "../test.h"

#define MAX_HEAD 8192

/* Parse len bytes of s from a buffer of exactly len bytes (ASan sees an
 * overread). The buffer stays alive in *keep for h's strings; free it. */
static int parse_n(const char *s, size_t len, size_t max_head, http_head *h, char **keep) {
    char *buf = malloc(len ? len : 1);
    memcpy(buf, s, len);
    *keep = buf;
    return http_parse_head(buf, len, max_head, h);
}

/* Parse a whole NUL-free head; returns its result and frees the copy. */
static int parse_rc(const char *s, http_head *h) {
    char *keep;
    int rc = parse_n(s, strlen(s), MAX_HEAD, h, &keep);
    free(keep);
    return rc;
}

/* The same for input that holds NUL bytes. */
static int parse_rc_n(const char *s, size_t len, http_head *h) {
    char *keep;
    int rc = parse_n(s, len, MAX_HEAD, h, &keep);
    free(keep);
    return rc;
}

TEST(test_http_parse_plain_get) {
    const char *req = "GET /v1/health HTTP/1.1\r\nHost: localhost:8080\r\nAccept: */*\r\n\r\n";
    http_head h;
    char *buf;
    CHECK(parse_n(req, strlen(req), MAX_HEAD, &h, &buf) == HTTP_PARSE_DONE);
    CHECK_STR(h.method, "GET");
    CHECK_STR(h.target, "/v1/health");
    CHECK_STR(h.path, "/v1/health");
    CHECK(h.query == NULL);
    CHECK(h.minor == 1);
    CHECK(h.n_headers == 2);
    CHECK_STR(h.headers[0].name, "Host");
    CHECK_STR(h.headers[0].value, "localhost:8080");
    CHECK_STR(h.host, "localhost:8080");
    CHECK_STR(http_head_get(&h, "accept"), "*/*");
    CHECK(http_head_get(&h, "Content-Type") == NULL);
    CHECK(h.head_len == strlen(req));
    CHECK(h.content_length == -1);
    CHECK(!h.chunked);
    CHECK(h.keep_alive);
    CHECK(!h.expect_continue);
    free(buf);
}

/* Every proper prefix of a head is INCOMPLETE; the whole head (with or
 * without bytes after it) is DONE with the same result. */
static void check_every_split(const char *head, const char *after) {
    size_t n = strlen(head), m = strlen(after);
    char *whole = malloc(n + m + 1);
    memcpy(whole, head, n);
    memcpy(whole + n, after, m + 1);
    for (size_t k = 0; k < n; k++) {
        http_head h;
        if (parse_rc_n(whole, k, &h) != HTTP_PARSE_INCOMPLETE) {
            fprintf(stderr, "prefix of %zu bytes is not INCOMPLETE\n", k);
            CHECK(0);
        }
    }
    for (size_t k = n; k <= n + m; k++) {
        http_head h;
        char *buf;
        CHECK(parse_n(whole, k, MAX_HEAD, &h, &buf) == HTTP_PARSE_DONE);
        CHECK(h.head_len == n);
        CHECK_STR(h.method, "POST");
        CHECK_STR(h.path, "/v1/contexts/x");
        CHECK_STR(h.query, "a=1");
        CHECK_STR(h.host, "example.com");
        CHECK(h.content_length == 3);
        CHECK(h.n_headers == 3);
        CHECK_STR(http_head_get(&h, "Content-Type"), "application/json");
        free(buf);
    }
    free(whole);
}

TEST(test_http_parse_every_split_point) {
    check_every_split("POST /v1/contexts/x?a=1 HTTP/1.1\r\nHost: example.com\r\n"
                      "Content-Length: 3\r\nContent-Type: application/json\r\n\r\n",
                      "abc");
    check_every_split("\r\n\nPOST /v1/contexts/x?a=1 HTTP/1.1\nHost: example.com\n"
                      "Content-Length: 3\r\nContent-Type: application/json\n\n",
                      "");
}

TEST(test_http_parse_skips_leading_empty_lines) {
    const char *req = "\r\n\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
    http_head h;
    CHECK(parse_rc(req, &h) == HTTP_PARSE_DONE);
    CHECK(h.head_len == strlen(req));
    CHECK(parse_rc("\r\n\r\n", &h) == HTTP_PARSE_INCOMPLETE);
    CHECK(parse_rc("\r", &h) == HTTP_PARSE_INCOMPLETE);
    /* An empty line made only of a CR is a bare CR. */
    CHECK(parse_rc("\r\rGET / HTTP/1.1\r\nHost: a\r\n\r\n", &h) == HTTP_PARSE_ERROR);
}

TEST(test_http_parse_bare_lf_accepted) {
    http_head h;
    char *buf;
    const char *req = "GET /x HTTP/1.1\nHost: a\nX-A: b \n\n";
    CHECK(parse_n(req, strlen(req), MAX_HEAD, &h, &buf) == HTTP_PARSE_DONE);
    CHECK_STR(h.path, "/x");
    CHECK_STR(http_head_get(&h, "X-A"), "b");
    CHECK(h.head_len == strlen(req));
    free(buf);
    /* CRLF and LF mixed, ending with a bare LF blank line. */
    CHECK(parse_rc("GET /x HTTP/1.1\r\nHost: a\n\r\n", &h) == HTTP_PARSE_DONE);
}

TEST(test_http_parse_bare_cr_rejected) {
    http_head h;
    CHECK(parse_rc("GET / HTTP/1.1\rHost: a\r\n\r\n", &h) == HTTP_PARSE_ERROR);
    CHECK(strstr(h.error, "bare CR") != NULL);
    CHECK(parse_rc("GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n", &h) == HTTP_PARSE_ERROR);
    CHECK(parse_rc("GET / HTTP/1.1\r\nHost: a\r\n\r\r\n", &h) == HTTP_PARSE_ERROR);
    /* Found before the head ends, too. */
    CHECK(parse_rc("GET / HTTP/1.1\r\nHo\rst", &h) == HTTP_PARSE_ERROR);
    /* A CR as the last byte read may still get its LF. */
    CHECK(parse_rc("GET / HTTP/1.1\r", &h) == HTTP_PARSE_INCOMPLETE);
}

TEST(test_http_parse_head_too_large) {
    http_head h;
    char big[200];
    memset(big, 'a', sizeof(big));
    /* Incomplete, but already over max_head: no point waiting. */
    char *buf;
    CHECK(parse_n(big, sizeof(big), 100, &h, &buf) == HTTP_PARSE_ERROR);
    CHECK(strstr(h.error, "too large") != NULL);
    free(buf);
    CHECK(parse_n(big, 100, 100, &h, &buf) == HTTP_PARSE_INCOMPLETE);
    free(buf);
    /* Complete, one byte over and exactly at the limit. */
    const char *req = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    size_t n = strlen(req);
    CHECK(parse_n(req, n, n - 1, &h, &buf) == HTTP_PARSE_ERROR);
    free(buf);
    CHECK(parse_n(req, n, n, &h, &buf) == HTTP_PARSE_DONE);
    free(buf);
    /* Leading empty lines count against the limit. */
    char pad[300];
    memset(pad, '\n', 200);
    strcpy(pad + 200, req);
    CHECK(parse_n(pad, strlen(pad), 100, &h, &buf) == HTTP_PARSE_ERROR);
    free(buf);
}

TEST(test_http_parse_obs_fold_rejected) {
    http_head h;
    CHECK(parse_rc("GET / HTTP/1.1\r\nHost: a\r\nX-Long: one\r\n two\r\n\r\n", &h) ==
          HTTP_PARSE_ERROR);
    CHECK(strstr(h.error, "folding") != NULL);
    CHECK(parse_rc("GET / HTTP/1.1\r\nHost: a\r\nX-Long: one\r\n\ttwo\r\n\r\n", &h) ==
          HTTP_PARSE_ERROR);
    /* Whitespace between the request line and the first header. */
    CHECK(parse_rc("GET / HTTP/1.1\r\n Host: a\r\n\r\n", &h) == HTTP_PARSE_ERROR);
}

TEST(test_http_parse_malformed_header_lines) {
    http_head h;
    CHECK(parse_rc("GET / HTTP/1.1\r\nHost : a\r\n\r\n", &h) == HTTP_PARSE_ERROR);
    CHECK(parse_rc("GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", &h) == HTTP_PARSE_ERROR);
    CHECK(parse_rc("GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n", &h) == HTTP_PARSE_ERROR);
    CHECK(parse_rc("GET / HTTP/1.1\r\nHost: a\r\n: empty-name\r\n\r\n", &h) == HTTP_PARSE_ERROR);
    CHECK(parse_rc("GET / HTTP/1.1\r\nHost: a\r\nX(y): z\r\n\r\n", &h) == HTTP_PARSE_ERROR);
    /* An empty value and optional whitespace around it are fine. */
    CHECK(parse_rc("GET / HTTP/1.1\r\nHost: a\r\nX-Empty:\r\nX-Sp: \t v \t\r\n\r\n", &h) ==
          HTTP_PARSE_DONE);
}

TEST(test_http_parse_control_bytes_rejected) {
    http_head h;
    CHECK(parse_rc("GET / HTTP/1.1\r\nHost: a\r\nX: a\x01"
                   "b\r\n\r\n",
                   &h) == HTTP_PARSE_ERROR);
    CHECK(parse_rc("GET / HTTP/1.1\r\nHost: a\r\nX: a\x7f\r\n\r\n", &h) == HTTP_PARSE_ERROR);
    CHECK(parse_rc("GET / HTTP/1.1\r\nHost: a\r\nX: a\x1b[0m\r\n\r\n", &h) == HTTP_PARSE_ERROR);
    /* obs-text and tabs are allowed in values. */
    CHECK(parse_rc("GET / HTTP/1.1\r\nHost: a\r\nX: caf\xc3\xa9\tok\r\n\r\n", &h) ==
          HTTP_PARSE_DONE);
    /* A NUL anywhere in the head, even where a C string would end. */
    static const char nul_value[] = "GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n";
    CHECK(parse_rc_n(nul_value, sizeof(nul_value) - 1, &h) == HTTP_PARSE_ERROR);
    static const char nul_ctl[] = "GET / HTTP/1.1\r\nHost: a\r\nX: a\0\x01\r\n\r\n";
    CHECK(parse_rc_n(nul_ctl, sizeof(nul_ctl) - 1, &h) == HTTP_PARSE_ERROR);
    static const char nul_cl[] = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\0 9\r\n\r\n";
    CHECK(parse_rc_n(nul_cl, sizeof(nul_cl) - 1, &h) == HTTP_PARSE_ERROR);
    static const char nul_version[] = "GET / HTTP/1.1\0junk\r\nHost: a\r\n\r\n";
    CHECK(parse_rc_n(nul_version, sizeof(nul_version) - 1, &h) == HTTP_PARSE_ERROR);
    static const char nul_name[] = "GET / HTTP/1.1\r\nHost: a\r\nX\0Y: z\r\n\r\n";
    CHECK(parse_rc_n(nul_name, sizeof(nul_name) - 1, &h) == HTTP_PARSE_ERROR);
}

TEST(test_http_parse_methods) {
    http_head h;
    static const char *const ok[] = {"GET",   "HEAD",    "POST",  "PUT",    "DELETE",
                                     "PATCH", "OPTIONS", "TRACE", "CONNECT"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        char req[100];
        snprintf(req, sizeof(req), "%s / HTTP/1.1\r\nHost: a\r\n\r\n", ok[i]);
        CHECK(parse_rc(req, &h) == HTTP_PARSE_DONE);
    }
    CHECK(parse_rc("BREW / HTTP/1.1\r\nHost: a\r\n\r\n", &h) == HTTP_PARSE_ERROR);
    CHECK_STR(h.error, "unknown method");
    CHECK(parse_rc("get / HTTP/1.1\r\nHost: a\r\n\r\n", &h) == HTTP_PARSE_ERROR);
    CHECK(parse_rc("G(T / HTTP/1.1\r\nHost: a\r\n\r\n", &h) == HTTP_PARSE_ERROR);
    CHECK(parse_rc(" GET / HTTP/1.1\r\nHost: a\r\n\r\n", &h) == HTTP_PARSE_ERROR);
    CHECK(parse_rc("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", &h) == HTTP_PARSE_ERROR);
    CHECK(parse_rc("GET / HTTP/1.1 \r\nHost: a\r\n\r\n", &h) == HTTP_PARSE_ERROR);
    CHECK(parse_rc("GET /\r\nHost: a\r\n\r\n", &h) == HTTP_PARSE_ERROR);
}

TEST(test_http_parse_keep_alive_rules) {
    http_head h;
    CHECK(parse_rc("GET / HTTP/1.1\r\nHost: a\r\n\r\n", &h) == HTTP_PARSE_DONE && h.keep_alive);
    CHECK(parse_rc("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", &h) ==
              HTTP_PARSE_DONE &&
          !h.keep_alive);
    CHECK(parse_rc("GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, CLOSE\r\n\r\n", &h) ==
              HTTP_PARSE_DONE &&
          !h.keep_alive);
    CHECK(parse_rc("GET / HTTP/1.1\r\nHost: a\r\nConnection: closed\r\n\r\n", &h) ==
              HTTP_PARSE_DONE &&
          h.keep_alive);
    CHECK(parse_rc("GET / HTTP/1.0\r\n\r\n", &h) == HTTP_PARSE_DONE && !h.keep_alive);
    CHECK(h.minor == 0);
    CHECK(parse_rc("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", &h) == HTTP_PARSE_DONE &&
          h.keep_alive);
    CHECK(parse_rc("GET / HTTP/1.0\r\nConnection: foo , keep-alive\r\n\r\n", &h) ==
              HTTP_PARSE_DONE &&
          h.keep_alive);
    CHECK(parse_rc("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", &h) ==
              HTTP_PARSE_DONE &&
          !h.keep_alive);
    CHECK(parse_rc("GET / HTTP/1.0\r\nConnection: close\r\nConnection: keep-alive\r\n\r\n", &h) ==
              HTTP_PARSE_DONE &&
          !h.keep_alive);
    /* A close in any Connection header wins, whatever comes before or after. */
    CHECK(parse_rc("GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n"
                   "Connection: keep-alive\r\n\r\n",
                   &h) == HTTP_PARSE_DONE &&
          !h.keep_alive);
    CHECK(parse_rc("GET / HTTP/1.1\r\nHost: a\r\nConnection: x\r\nConnection: y, close\r\n\r\n",
                   &h) == HTTP_PARSE_DONE &&
          !h.keep_alive);
}

TEST(test_http_parse_versions) {
    http_head h;
    CHECK(parse_rc("GET / HTTP/2.0\r\nHost: a\r\n\r\n", &h) == HTTP_PARSE_ERROR);
    CHECK(strstr(h.error, "HTTP/1.0 and HTTP/1.1") != NULL);
    CHECK(parse_rc("GET / HTTP/1.2\r\nHost: a\r\n\r\n", &h) == HTTP_PARSE_ERROR);
    CHECK(parse_rc("GET / HTTP/0.9\r\nHost: a\r\n\r\n", &h) == HTTP_PARSE_ERROR);
    CHECK(parse_rc("GET / HTTP/1.10\r\nHost: a\r\n\r\n", &h) == HTTP_PARSE_ERROR);
    CHECK(parse_rc("GET / http/1.1\r\nHost: a\r\n\r\n", &h) == HTTP_PARSE_ERROR);
    CHECK(parse_rc("GET / HTTP/1\r\nHost: a\r\n\r\n", &h) == HTTP_PARSE_ERROR);
    CHECK(parse_rc("GET / HTTP/2\r\nHost: a\r\n\r\n", &h) == HTTP_PARSE_ERROR);
    CHECK(parse_rc("GET / HTTP/1.x\r\nHost: a\r\n\r\n", &h) == HTTP_PARSE_ERROR);
}

TEST(test_http_parse_target_forms) {
    http_head h;
    CHECK(parse_rc("GET http://x/y HTTP/1.1\r\nHost: x\r\n\r\n", &h) == HTTP_PARSE_ERROR);
    CHECK(strstr(h.error, "origin-form") != NULL);
    CHECK(parse_rc("OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", &h) == HTTP_PARSE_ERROR);
    CHECK(strstr(h.error, "OPTIONS *") != NULL);
    CHECK(parse_rc("CONNECT x:443 HTTP/1.1\r\nHost: x\r\n\r\n", &h) == HTTP_PARSE_ERROR);
    CHECK(parse_rc("GET ?a HTTP/1.1\r\nHost: x\r\n\r\n", &h) == HTTP_PARSE_ERROR);
}

TEST(test_http_parse_target_bytes) {
    http_head h;
    CHECK(parse_rc("GET /a#frag HTTP/1.1\r\nHost: x\r\n\r\n", &h) == HTTP_PARSE_ERROR);
    CHECK(parse_rc("GET /a\tb HTTP/1.1\r\nHost: x\r\n\r\n", &h) == HTTP_PARSE_ERROR);
    CHECK(parse_rc("GET /a\x01 HTTP/1.1\r\nHost: x\r\n\r\n", &h) == HTTP_PARSE_ERROR);
    CHECK(parse_rc("GET /a\x7f HTTP/1.1\r\nHost: x\r\n\r\n", &h) == HTTP_PARSE_ERROR);
    CHECK(parse_rc("GET /caf\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n", &h) == HTTP_PARSE_ERROR);
    CHECK(parse_rc("GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", &h) == HTTP_PARSE_ERROR);
}

TEST(test_http_parse_path_and_query) {
    http_head h;
    char *buf;
    const char *a = "GET /a?b=c&d HTTP/1.1\r\nHost: x\r\n\r\n";
    CHECK(parse_n(a, strlen(a), MAX_HEAD, &h, &buf) == HTTP_PARSE_DONE);
    CHECK_STR(h.path, "/a");
    CHECK_STR(h.query, "b=c&d");
    free(buf);
    const char *b = "GET /a? HTTP/1.1\r\nHost: x\r\n\r\n";
    CHECK(parse_n(b, strlen(b), MAX_HEAD, &h, &buf) == HTTP_PARSE_DONE);
    CHECK_STR(h.path, "/a");
    CHECK(h.query != NULL && h.query[0] == '\0');
    free(buf);
    const char *c = "GET /a/b/ HTTP/1.1\r\nHost: x\r\n\r\n";
    CHECK(parse_n(c, strlen(c), MAX_HEAD, &h, &buf) == HTTP_PARSE_DONE);
    CHECK_STR(h.path, "/a/b/");
    CHECK(h.query == NULL);
    free(buf);
    /* Percent escapes stay as sent: routing sees the raw path. */
    const char *d = "GET /v1/contexts/%2e%2E/x%20y?q=%3F%00 HTTP/1.1\r\nHost: x\r\n\r\n";
    CHECK(parse_n(d, strlen(d), MAX_HEAD, &h, &buf) == HTTP_PARSE_DONE);
    CHECK_STR(h.path, "/v1/contexts/%2e%2E/x%20y");
    CHECK_STR(h.query, "q=%3F%00");
    free(buf);
    /* A second '?' belongs to the query. */
    const char *e = "GET /a?b?c HTTP/1.1\r\nHost: x\r\n\r\n";
    CHECK(parse_n(e, strlen(e), MAX_HEAD, &h, &buf) == HTTP_PARSE_DONE);
    CHECK_STR(h.path, "/a");
    CHECK_STR(h.query, "b?c");
    free(buf);
}

TEST(test_http_parse_host_rules) {
    http_head h;
    CHECK(parse_rc("GET / HTTP/1.1\r\n\r\n", &h) == HTTP_PARSE_ERROR);
    CHECK(strstr(h.error, "needs a Host") != NULL);
    CHECK(parse_rc("GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n", &h) == HTTP_PARSE_ERROR);
    CHECK(strstr(h.error, "more than one Host") != NULL);
    CHECK(parse_rc("GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", &h) == HTTP_PARSE_ERROR);
    CHECK(parse_rc("GET / HTTP/1.0\r\n\r\n", &h) == HTTP_PARSE_DONE);
    CHECK(h.host == NULL);
    CHECK(parse_rc("GET / HTTP/1.0\r\nHOST: b:1\r\n\r\n", &h) == HTTP_PARSE_DONE);
    CHECK(h.host != NULL);
    /* An empty Host is still one Host (RFC 9110 7.2). */
    CHECK(parse_rc("GET / HTTP/1.1\r\nHost:\r\n\r\n", &h) == HTTP_PARSE_DONE);
}

TEST(test_http_parse_content_length) {
    http_head h;
    CHECK(parse_rc("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 42\r\n\r\n", &h) ==
          HTTP_PARSE_DONE);
    CHECK(h.content_length == 42);
    CHECK(parse_rc("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", &h) ==
          HTTP_PARSE_DONE);
    CHECK(h.content_length == 0);
    CHECK(parse_rc("POST / HTTP/1.1\r\nHost: a\r\ncontent-length: 5, 5\r\n\r\n", &h) ==
          HTTP_PARSE_DONE);
    CHECK(h.content_length == 5);
    CHECK(parse_rc("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n", &h) ==
          HTTP_PARSE_ERROR);
    CHECK(strstr(h.error, "conflicting") != NULL);
    CHECK(parse_rc("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                   &h) == HTTP_PARSE_ERROR);
    CHECK(strstr(h.error, "conflicting") != NULL);
    CHECK(parse_rc("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 7\r\nContent-Length: 7\r\n\r\n",
                   &h) == HTTP_PARSE_DONE);
    CHECK(h.content_length == 7);
    static const char *const bad[] = {"",     "abc", "-1", "+1",  "1a", "1 2",
                                      "0x10", "5,",  ",5", "1.0", "5;6"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char req[100];
        snprintf(req, sizeof(req), "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %s\r\n\r\n",
                 bad[i]);
        if (parse_rc(req, &h) != HTTP_PARSE_ERROR) {
            fprintf(stderr, "Content-Length '%s' was accepted\n", bad[i]);
            CHECK(0);
        }
    }
    CHECK(parse_rc("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 999999999999999\r\n\r\n", &h) ==
          HTTP_PARSE_DONE);
    CHECK(h.content_length == 999999999999999LL);
    CHECK(parse_rc("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000000000000\r\n\r\n", &h) ==
          HTTP_PARSE_ERROR);
    CHECK(strstr(h.error, "too large") != NULL);
    CHECK(parse_rc("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n",
                   &h) == HTTP_PARSE_ERROR);
}

TEST(test_http_parse_transfer_encoding) {
    http_head h;
    CHECK(parse_rc("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", &h) ==
          HTTP_PARSE_DONE);
    CHECK(h.chunked);
    CHECK(h.content_length == -1);
    CHECK(parse_rc("POST / HTTP/1.1\r\nHost: a\r\ntransfer-encoding: ChUnKeD \r\n\r\n", &h) ==
          HTTP_PARSE_DONE);
    CHECK(h.chunked);
    CHECK(parse_rc("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", &h) ==
          HTTP_PARSE_ERROR);
    CHECK(strstr(h.error, "chunked") != NULL);
    CHECK(parse_rc("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", &h) ==
          HTTP_PARSE_ERROR);
    CHECK(parse_rc("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
                   &h) == HTTP_PARSE_ERROR);
    CHECK(parse_rc("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                   "Transfer-Encoding: chunked\r\n\r\n",
                   &h) == HTTP_PARSE_ERROR);
    CHECK(parse_rc("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", &h) ==
          HTTP_PARSE_ERROR);
    CHECK(strstr(h.error, "HTTP/1.1") != NULL);
    CHECK(parse_rc("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                   "Content-Length: 5\r\n\r\n",
                   &h) == HTTP_PARSE_ERROR);
    CHECK(strstr(h.error, "together") != NULL);
    CHECK(parse_rc("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
                   "Transfer-Encoding: chunked\r\n\r\n",
                   &h) == HTTP_PARSE_ERROR);
}

TEST(test_http_parse_expect_continue) {
    http_head h;
    CHECK(
        parse_rc("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-Continue\r\n\r\n",
                 &h) == HTTP_PARSE_DONE);
    CHECK(h.expect_continue);
    CHECK(parse_rc("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 101-x\r\n\r\n",
                   &h) == HTTP_PARSE_DONE);
    CHECK(!h.expect_continue);
    CHECK(parse_rc("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n", &h) ==
          HTTP_PARSE_DONE);
    CHECK(!h.expect_continue);
}

TEST(test_http_parse_pipelined_head_len) {
    const char *first = "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n";
    const char *rest = "{}GET /b HTTP/1.1\r\nHost: a\r\n\r\n";
    char all[200];
    snprintf(all, sizeof(all), "%s%s", first, rest);
    http_head h;
    char *buf;
    CHECK(parse_n(all, strlen(all), MAX_HEAD, &h, &buf) == HTTP_PARSE_DONE);
    CHECK(h.head_len == strlen(first));
    CHECK_STR(h.path, "/a");
    CHECK(h.content_length == 2);
    /* The bytes after the head are left as they were. */
    CHECK(memcmp(buf + h.head_len, rest, strlen(rest)) == 0);
    size_t second = h.head_len + 2;
    http_head h2;
    CHECK(http_parse_head(buf + second, strlen(all) - second, MAX_HEAD, &h2) == HTTP_PARSE_DONE);
    CHECK_STR(h2.path, "/b");
    CHECK(h2.head_len == strlen(all) - second);
    free(buf);
}

TEST(test_http_parse_too_many_headers) {
    char req[4096];
    size_t n = (size_t)snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: a\r\n");
    for (int i = 1; i < HTTP_MAX_HEADERS; i++)
        n += (size_t)snprintf(req + n, sizeof(req) - n, "X-%d: v\r\n", i);
    snprintf(req + n, sizeof(req) - n, "\r\n");
    http_head h;
    CHECK(parse_rc(req, &h) == HTTP_PARSE_DONE);
    CHECK(h.n_headers == HTTP_MAX_HEADERS);
    snprintf(req + n, sizeof(req) - n, "X-more: v\r\n\r\n");
    CHECK(parse_rc(req, &h) == HTTP_PARSE_ERROR);
    CHECK(strstr(h.error, "too many") != NULL);
}

/* ---- Chunked bodies ---- */

typedef struct {
    int rc;
    size_t used;
    char out[512];
    size_t out_len;
    char error[96];
} fed;

/* Feed s[0..len) in one call from an exact-size copy. */
static fed feed_n(const char *s, size_t len, size_t max) {
    fed f;
    memset(&f, 0, sizeof(f));
    http_chunked c;
    memset(&c, 0, sizeof(c));
    char *in = malloc(len ? len : 1);
    memcpy(in, s, len);
    f.rc = http_chunked_feed(&c, in, len, &f.used, f.out, &f.out_len, max);
    memcpy(f.error, c.error, sizeof(f.error));
    free(in);
    return f;
}

static fed feed(const char *s) { return feed_n(s, strlen(s), 256); }

#define WIKI "4\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\n\r\n"

TEST(test_http_parse_chunked_simple) {
    fed f = feed(WIKI);
    CHECK(f.rc == HTTP_PARSE_DONE);
    CHECK(f.used == strlen(WIKI));
    CHECK(f.out_len == 23);
    CHECK(memcmp(f.out, "Wikipedia in\r\n\r\nchunks.", 23) == 0);
    f = feed("0\r\n\r\n");
    CHECK(f.rc == HTTP_PARSE_DONE && f.out_len == 0 && f.used == 5);
    /* Hex digits in either case, leading zeros. */
    f = feed("a\r\n0123456789\r\n00B\r\nabcdefghijk\r\n000\r\n\r\n");
    CHECK(f.rc == HTTP_PARSE_DONE && f.out_len == 21);
}

TEST(test_http_parse_chunked_extensions) {
    fed f = feed("13;x=y\r\n0123456789abcdefghi\r\n0;last\r\n\r\n");
    CHECK(f.rc == HTTP_PARSE_DONE);
    CHECK(f.out_len == 0x13 && memcmp(f.out, "0123456789abcdefghi", 0x13) == 0);
    f = feed("5;name=\"quoted; value \\\" ok\"\r\nhello\r\n0\r\n\r\n");
    CHECK(f.rc == HTTP_PARSE_DONE && f.out_len == 5);
    f = feed("5 ; a ; b=c\r\nhello\r\n0\r\n\r\n");
    CHECK(f.rc == HTTP_PARSE_DONE && f.out_len == 5);
}

TEST(test_http_parse_chunked_trailers) {
    const char *body = "5\r\nhello\r\n0\r\nX-Checksum: abc\r\nX-Other: d e\r\n\r\n";
    fed f = feed(body);
    CHECK(f.rc == HTTP_PARSE_DONE);
    CHECK(f.used == strlen(body));
    CHECK(f.out_len == 5 && memcmp(f.out, "hello", 5) == 0);
    f = feed("0\r\nX: a\x01\r\n\r\n");
    CHECK(f.rc == HTTP_PARSE_ERROR);
    f = feed("0\r\nX: a\rb\r\n\r\n");
    CHECK(f.rc == HTTP_PARSE_ERROR);
}

TEST(test_http_parse_chunked_bare_lf) {
    const char *body = "4\nWiki\n5;x\npedia\r\n0\nX: y\n\n";
    fed f = feed(body);
    CHECK(f.rc == HTTP_PARSE_DONE);
    CHECK(f.used == strlen(body));
    CHECK(f.out_len == 9 && memcmp(f.out, "Wikipedia", 9) == 0);
    /* A bare CR is not a line end anywhere. */
    CHECK(feed("4\rWiki\r\n0\r\n\r\n").rc == HTTP_PARSE_ERROR);
    CHECK(feed("4\r\nWiki\r0\r\n\r\n").rc == HTTP_PARSE_ERROR);
    CHECK(feed("4\r\nWiki\r\n0\r\n\r").rc == HTTP_PARSE_INCOMPLETE);
    CHECK(feed("4\r\nWiki\r\n0\r\n\rx").rc == HTTP_PARSE_ERROR);
}

/* Feed body in the pieces cut at the given offsets; expect DONE, all of it
 * used and the same data. */
static void check_pieces(const char *body, const size_t *cuts, size_t n_cuts, const char *want) {
    size_t n = strlen(body), at = 0, out_len = 0;
    char out[256];
    http_chunked c;
    memset(&c, 0, sizeof(c));
    int rc = HTTP_PARSE_INCOMPLETE;
    for (size_t i = 0; i <= n_cuts; i++) {
        size_t stop = i < n_cuts ? cuts[i] : n, used = 0;
        char *piece = malloc(stop - at + 1);
        memcpy(piece, body + at, stop - at);
        rc = http_chunked_feed(&c, piece, stop - at, &used, out, &out_len, sizeof(out));
        free(piece);
        if (i < n_cuts && rc != HTTP_PARSE_INCOMPLETE) break;
        CHECK(used == stop - at);
        at = stop;
    }
    if (rc != HTTP_PARSE_DONE || out_len != strlen(want) || memcmp(out, want, out_len)) {
        fprintf(stderr, "cut at");
        for (size_t i = 0; i < n_cuts; i++) fprintf(stderr, " %zu", cuts[i]);
        fprintf(stderr, ": rc %d, %zu bytes\n", rc, out_len);
        CHECK(0);
    }
}

TEST(test_http_parse_chunked_every_split_point) {
    static const char *const bodies[] = {
        WIKI, "13;x=\"a;b\"\r\n0123456789abcdefghi\r\n0\r\nT: 1\r\n\r\n", "3\nabc\n0\n\n"};
    static const char *const want[] = {"Wikipedia in\r\n\r\nchunks.", "0123456789abcdefghi", "abc"};
    for (size_t b = 0; b < 3; b++) {
        size_t n = strlen(bodies[b]);
        for (size_t i = 0; i <= n; i++)
            for (size_t j = i; j <= n; j++) {
                size_t cuts[2] = {i, j};
                check_pieces(bodies[b], cuts, 2, want[b]);
            }
        /* One byte at a time. */
        size_t cuts[128];
        for (size_t i = 0; i < n; i++) cuts[i] = i + 1;
        check_pieces(bodies[b], cuts, n - 1, want[b]);
    }
}

TEST(test_http_parse_chunked_malformed_size) {
    fed f = feed("zz\r\nabc\r\n0\r\n\r\n");
    CHECK(f.rc == HTTP_PARSE_ERROR);
    CHECK(strstr(f.error, "not a hex number") != NULL);
    CHECK(feed("\r\nabc\r\n0\r\n\r\n").rc == HTTP_PARSE_ERROR);
    CHECK(feed("\n0\r\n\r\n").rc == HTTP_PARSE_ERROR);
    CHECK(feed(";x\r\n0\r\n\r\n").rc == HTTP_PARSE_ERROR);
    CHECK(feed("-1\r\n0\r\n\r\n").rc == HTTP_PARSE_ERROR);
    CHECK(feed("0x5\r\nhello\r\n0\r\n\r\n").rc == HTTP_PARSE_ERROR);
    CHECK(feed("5g\r\nhello\r\n0\r\n\r\n").rc == HTTP_PARSE_ERROR);
    /* 16 hex digits: refused before any arithmetic can wrap. */
    f = feed("0000000000000001\r\nx\r\n0\r\n\r\n");
    CHECK(f.rc == HTTP_PARSE_ERROR);
    CHECK(strstr(f.error, "too large") != NULL);
    CHECK(feed("ffffffffffffffff\r\n").rc == HTTP_PARSE_ERROR);
    /* 15 digits parse; the size then only has to fit the body limit. */
    CHECK(feed("fffffffffffffff\r\n").rc == HTTP_PARSE_INCOMPLETE);
    f = feed("fffffffffffffff\r\nabc");
    CHECK(f.rc == HTTP_PARSE_INCOMPLETE && f.out_len == 3);
    char big[400];
    memset(big, 'x', sizeof(big));
    memcpy(big, "fffffffffffffff\r\n", 17);
    CHECK(feed_n(big, sizeof(big), 256).rc == HTTP_CHUNKED_TOO_LARGE);
    /* A size line longer than any sane one. */
    char line[5000];
    memset(line, 'a', sizeof(line));
    memcpy(line, "1;", 2);
    CHECK(feed_n(line, sizeof(line), 256).rc == HTTP_PARSE_ERROR);
}

TEST(test_http_parse_chunked_chunk_longer_than_declared) {
    fed f = feed("3\r\nhello\r\n0\r\n\r\n");
    CHECK(f.rc == HTTP_PARSE_ERROR);
    CHECK(strstr(f.error, "longer than its size") != NULL);
    CHECK(feed("3\r\nhel\rlo\r\n0\r\n\r\n").rc == HTTP_PARSE_ERROR);
}

TEST(test_http_parse_chunked_missing_crlf_after_data) {
    CHECK(feed("3\r\nabc0\r\n\r\n").rc == HTTP_PARSE_ERROR);
    CHECK(feed("3\r\nabc\r\r\n0\r\n\r\n").rc == HTTP_PARSE_ERROR);
    fed f = feed("3\r\nabc");
    CHECK(f.rc == HTTP_PARSE_INCOMPLETE && f.used == 6 && f.out_len == 3);
}

TEST(test_http_parse_chunked_control_byte_in_extension) {
    fed f = feed("3;a=\x01\r\nabc\r\n0\r\n\r\n");
    CHECK(f.rc == HTTP_PARSE_ERROR);
    CHECK(strstr(f.error, "extension") != NULL);
    static const char nul[] = "3;a\0b\r\nabc\r\n0\r\n\r\n";
    CHECK(feed_n(nul, sizeof(nul) - 1, 256).rc == HTTP_PARSE_ERROR);
    CHECK(feed("3;a=\x7f\r\nabc\r\n0\r\n\r\n").rc == HTTP_PARSE_ERROR);
    CHECK(feed("3;a=\rb\r\nabc\r\n0\r\n\r\n").rc == HTTP_PARSE_ERROR);
    /* Tabs and obs-text are field bytes. */
    CHECK(feed("3;a=\t\xc3\xa9\r\nabc\r\n0\r\n\r\n").rc == HTTP_PARSE_DONE);
}

TEST(test_http_parse_chunked_too_large) {
    const char *body = "5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n";
    CHECK(feed_n(body, strlen(body), 10).rc == HTTP_PARSE_DONE);
    fed f = feed_n(body, strlen(body), 9);
    CHECK(f.rc == HTTP_CHUNKED_TOO_LARGE);
    CHECK(f.out_len <= 9);
    /* Over the limit when fed in pieces, too. */
    http_chunked c;
    memset(&c, 0, sizeof(c));
    char out[16];
    size_t out_len = 0, used, total = 0;
    int rc = HTTP_PARSE_INCOMPLETE;
    for (size_t i = 0; i < strlen(body) && rc == HTTP_PARSE_INCOMPLETE; i += used) {
        rc = http_chunked_feed(&c, body + i, 1, &used, out, &out_len, 9);
        total += used;
        if (!used) break;
    }
    CHECK(rc == HTTP_CHUNKED_TOO_LARGE);
    CHECK(out_len <= 9);
    CHECK(total < strlen(body));
}

TEST(test_http_parse_chunked_used_stops_after_end) {
    const char *body = "3\r\nabc\r\n0\r\nT: x\r\n\r\n";
    const char *next = "POST /next HTTP/1.1\r\n";
    char in[128];
    snprintf(in, sizeof(in), "%s%s", body, next);
    fed f = feed(in);
    CHECK(f.rc == HTTP_PARSE_DONE);
    CHECK(f.used == strlen(body));
    CHECK(f.out_len == 3);
    /* Bare LF framing: right after the blank line's LF. */
    f = feed("1\na\n0\n\nGET");
    CHECK(f.rc == HTTP_PARSE_DONE && f.used == 7);
    /* Once done, more input is not taken and it stays done. */
    http_chunked c;
    memset(&c, 0, sizeof(c));
    char out[8];
    size_t out_len = 0, used = 99;
    CHECK(http_chunked_feed(&c, "0\r\n\r\n", 5, &used, out, &out_len, sizeof(out)) ==
          HTTP_PARSE_DONE);
    CHECK(used == 5);
    CHECK(http_chunked_feed(&c, "1\r\nx\r\n", 6, &used, out, &out_len, sizeof(out)) ==
          HTTP_PARSE_DONE);
    CHECK(used == 0 && out_len == 0);
}

TEST(test_http_parse_chunked_incomplete) {
    static const char *const parts[] = {"",
                                        "4",
                                        "4\r",
                                        "4\r\n",
                                        "4\r\nWi",
                                        "4\r\nWiki",
                                        "4\r\nWiki\r\n",
                                        "4\r\nWiki\r\n0",
                                        "4\r\nWiki\r\n0\r\n",
                                        "4\r\nWiki\r\n0\r\nX: y\r\n",
                                        "4;ext"};
    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
        fed f = feed(parts[i]);
        if (f.rc != HTTP_PARSE_INCOMPLETE || f.used != strlen(parts[i])) {
            fprintf(stderr, "'%s': rc %d used %zu\n", parts[i], f.rc, f.used);
            CHECK(0);
        }
    }
}

TEST(test_http_parse_chunked_trailers_too_large) {
    char body[10000];
    size_t n = (size_t)snprintf(body, sizeof(body), "0\r\n");
    while (n < 9000) n += (size_t)snprintf(body + n, sizeof(body) - n, "X-Pad: %0100d\r\n", 0);
    n += (size_t)snprintf(body + n, sizeof(body) - n, "\r\n");
    fed f = feed_n(body, n, 256);
    CHECK(f.rc == HTTP_PARSE_ERROR);
    CHECK(strstr(f.error, "trailers are too large") != NULL);
}

TEST_MAIN(T(test_http_parse_plain_get), T(test_http_parse_every_split_point),
          T(test_http_parse_skips_leading_empty_lines), T(test_http_parse_bare_lf_accepted),
          T(test_http_parse_bare_cr_rejected), T(test_http_parse_head_too_large),
          T(test_http_parse_obs_fold_rejected), T(test_http_parse_malformed_header_lines),
          T(test_http_parse_control_bytes_rejected), T(test_http_parse_methods),
          T(test_http_parse_keep_alive_rules), T(test_http_parse_versions),
          T(test_http_parse_target_forms), T(test_http_parse_target_bytes),
          T(test_http_parse_path_and_query), T(test_http_parse_host_rules),
          T(test_http_parse_content_length), T(test_http_parse_transfer_encoding),
          T(test_http_parse_expect_continue), T(test_http_parse_pipelined_head_len),
          T(test_http_parse_too_many_headers), T(test_http_parse_chunked_simple),
          T(test_http_parse_chunked_extensions), T(test_http_parse_chunked_trailers),
          T(test_http_parse_chunked_bare_lf), T(test_http_parse_chunked_every_split_point),
          T(test_http_parse_chunked_malformed_size),
          T(test_http_parse_chunked_chunk_longer_than_declared),
          T(test_http_parse_chunked_missing_crlf_after_data),
          T(test_http_parse_chunked_control_byte_in_extension),
          T(test_http_parse_chunked_too_large), T(test_http_parse_chunked_used_stops_after_end),
          T(test_http_parse_chunked_incomplete), T(test_http_parse_chunked_trailers_too_large))
