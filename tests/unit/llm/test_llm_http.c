/* test_llm_http.c: SSE parsing, retry policy, error extraction and mapping. */
#include "../../../src/llm/llm_http.c"
#include "../../../src/llm/llm_error.c"
#include "../../../src/llm/llm_json.c"

#include <time.h>

#include "../test.h"

/* Events seen by the parser, written as "event|data\n". */
typedef struct seen {
    char buf[4096];
    int n;
    int stop_after; /* > 0: ask to stop after that many */
} seen;

static int record(void *arg, const char *event, const char *data, size_t len) {
    seen *s = arg;
    size_t l = strlen(s->buf);
    snprintf(s->buf + l, sizeof(s->buf) - l, "%s|%.*s\n", event, (int)len, data);
    s->n++;
    CHECK(data[len] == '\0');
    return s->stop_after && s->n >= s->stop_after ? CTXD_ERR : CTXD_OK;
}

/* Feed text in pieces of step bytes (0: all at once). */
static int feed(seen *s, const char *text, size_t step) {
    llm_sse p;
    llm_sse_init(&p, record, s);
    size_t len = strlen(text);
    int rc = CTXD_OK;
    if (!step) step = len ? len : 1;
    for (size_t i = 0; i < len && rc == CTXD_OK; i += step)
        rc = llm_sse_feed(&p, text + i, len - i < step ? len - i : step);
    llm_sse_free(&p);
    return rc;
}

static const char *anthropic_like = "event: message_start\ndata: {\"a\":1}\n\n"
                                    "event: ping\ndata: {\"type\": \"ping\"}\n\n"
                                    "event: content_block_delta\ndata: {\"t\":\"x y\"}\n\n";

static const char *anthropic_expect =
    "message_start|{\"a\":1}\nping|{\"type\": \"ping\"}\ncontent_block_delta|{\"t\":\"x y\"}\n";

TEST(test_llm_http_sse_one_byte_at_a_time) {
    seen s = {.buf = ""};
    CHECK(feed(&s, anthropic_like, 1) == CTXD_OK);
    CHECK_STR(s.buf, anthropic_expect);
    for (size_t step = 2; step < 20; step++) {
        seen t = {.buf = ""};
        feed(&t, anthropic_like, step);
        CHECK_STR(t.buf, anthropic_expect);
    }
}

TEST(test_llm_http_sse_crlf_and_cr) {
    const char *crlf = "event: message_start\r\ndata: {\"a\":1}\r\n\r\n"
                       "event: ping\r\ndata: {\"type\": \"ping\"}\r\n\r\n"
                       "event: content_block_delta\rdata: {\"t\":\"x y\"}\r\r";
    for (size_t step = 0; step < 8; step++) {
        seen s = {.buf = ""};
        CHECK(feed(&s, crlf, step) == CTXD_OK);
        CHECK_STR(s.buf, anthropic_expect);
    }
}

TEST(test_llm_http_sse_many_events_per_chunk) {
    seen s = {.buf = ""};
    CHECK(feed(&s, "data: 1\n\ndata: 2\n\ndata: [DONE]\n\n", 0) == CTXD_OK);
    CHECK_STR(s.buf, "|1\n|2\n|[DONE]\n");
    CHECK(s.n == 3);
}

TEST(test_llm_http_sse_comments_fields_and_bom) {
    seen s = {.buf = ""};
    const char *text = "\xEF\xBB\xBF: a comment\n"
                       ": another\n"
                       "id: 7\nretry: 100\nfoo: bar\n"
                       "event:tight\ndata:no space\ndata:  two spaces\ndata\n\n"
                       "\n\n"              /* blank lines alone dispatch nothing */
                       "event: lonely\n\n" /* no data: not dispatched */
                       "data: after\n\n";
    CHECK(feed(&s, text, 1) == CTXD_OK);
    CHECK_STR(s.buf, "tight|no space\n two spaces\n\n|after\n");
}

TEST(test_llm_http_sse_unterminated_event_dropped) {
    seen s = {.buf = ""};
    CHECK(feed(&s, "data: done\n\ndata: half", 3) == CTXD_OK);
    CHECK_STR(s.buf, "|done\n");
}

TEST(test_llm_http_sse_callback_stops) {
    seen s = {.buf = "", .stop_after = 1};
    CHECK(feed(&s, "data: 1\n\ndata: 2\n\n", 0) == CTXD_ERR);
    CHECK(s.n == 1);
}

TEST(test_llm_http_should_retry_statuses) {
    int yes[] = {408, 409, 429, 500, 502, 503, 504, 529};
    int no[] = {400, 401, 403, 404, 413, 422};
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        CHECK(llm_http_should_retry(yes[i], -1) == 1);
        CHECK(llm_http_should_retry(yes[i], 0) == 0); /* x-should-retry: false */
    }
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
        CHECK(llm_http_should_retry(no[i], -1) == 0);
        CHECK(llm_http_should_retry(no[i], 1) == 1); /* x-should-retry: true */
    }
}

TEST(test_llm_http_retry_after_ms_wins) {
    CHECK(llm_http_retry_wait_ms("20", "5", 0, 0, 0.0, 60000) == 20);
    CHECK(llm_http_retry_wait_ms("1500.5", NULL, 0, 0, 0.0, 60000) == 1501);
    /* Unusable retry-after-ms: fall back to retry-after. */
    CHECK(llm_http_retry_wait_ms("soon", "2", 0, 0, 0.0, 60000) == 2000);
    CHECK(llm_http_retry_wait_ms("0", "3", 0, 0, 0.0, 60000) == 3000);
}

TEST(test_llm_http_retry_after_seconds_and_date) {
    long now = (long)time(NULL);
    CHECK(llm_http_header_ms(NULL, "7", now) == 7000);
    CHECK(llm_http_header_ms(NULL, " 1.5 ", now) == 1500);
    CHECK(llm_http_header_ms(NULL, "-1", now) == -1);
    CHECK(llm_http_header_ms(NULL, "", now) == -1);
    CHECK(llm_http_header_ms(NULL, NULL, now) == -1);
    CHECK(llm_http_header_ms(NULL, "Wed, 21 Oct 2015 07:28:00 GMT", now) == -1);
    /* An HTTP date 30 s after a fixed "now". */
    long t0 = 1445412450; /* Wed, 21 Oct 2015 07:27:30 GMT */
    CHECK(llm_http_header_ms(NULL, "Wed, 21 Oct 2015 07:28:00 GMT", t0) == 30000);
    CHECK(llm_http_retry_wait_ms(NULL, "Wed, 21 Oct 2015 07:28:00 GMT", t0, 0, 0.0, 60000) ==
          30000);
    /* Beyond the cap: the header is ignored and backoff applies. */
    CHECK(llm_http_retry_wait_ms(NULL, "120", now, 0, 0.0, 60000) == 500);
    CHECK(llm_http_retry_wait_ms("90000", NULL, now, 1, 0.0, 60000) == 1000);
}

TEST(test_llm_http_backoff_exponential_with_jitter) {
    CHECK(llm_http_retry_wait_ms(NULL, NULL, 0, 0, 0.0, 60000) == 500);
    CHECK(llm_http_retry_wait_ms(NULL, NULL, 0, 1, 0.0, 60000) == 1000);
    CHECK(llm_http_retry_wait_ms(NULL, NULL, 0, 2, 0.0, 60000) == 2000);
    CHECK(llm_http_retry_wait_ms(NULL, NULL, 0, 4, 0.0, 60000) == 8000);
    CHECK(llm_http_retry_wait_ms(NULL, NULL, 0, 9, 0.0, 60000) == 8000);
    long j = llm_http_retry_wait_ms(NULL, NULL, 0, 0, 0.999, 60000);
    CHECK(j >= 375 && j < 500); /* at most 25% jitter, downwards */
    CHECK(llm_http_retry_wait_ms(NULL, NULL, 0, 3, 0.0, 700) == 700); /* the cap */
    CHECK(llm_http_retry_wait_ms(NULL, NULL, 0, 3, 0.0, 0) == 0);
}

TEST(test_llm_http_status_mapping) {
    CHECK(llm_http_status_err(401) == LLM_ERR_AUTH);
    CHECK(llm_http_status_err(403) == LLM_ERR_AUTH);
    CHECK(llm_http_status_err(429) == LLM_ERR_RATE);
    CHECK(llm_http_status_err(503) == LLM_ERR_OVERLOADED);
    CHECK(llm_http_status_err(529) == LLM_ERR_OVERLOADED);
    CHECK(llm_http_status_err(500) == LLM_ERR_UPSTREAM);
    CHECK(llm_http_status_err(502) == LLM_ERR_UPSTREAM);
    CHECK(llm_http_status_err(400) == LLM_ERR_BAD_REQUEST);
    CHECK(llm_http_status_err(404) == LLM_ERR_BAD_REQUEST);
    CHECK(llm_http_status_err(413) == LLM_ERR_BAD_REQUEST);
    CHECK(llm_http_status_err(422) == LLM_ERR_BAD_REQUEST);
    CHECK(llm_http_status_err(408) == LLM_ERR_TIMEOUT);
}

static void info(const char *body, const char *want_type, const char *want_msg) {
    char type[64], msg[200];
    llm_http_error_info(body, body ? strlen(body) : 0, NULL, type, sizeof(type), msg, sizeof(msg));
    CHECK_STR(type, want_type);
    CHECK_STR(msg, want_msg);
}

TEST(test_llm_http_error_body_shapes) {
    info("{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":"
         "\"Overloaded\"},\"request_id\":\"req_1\"}",
         "overloaded_error", "Overloaded");
    info("{\"error\":{\"message\":\"Bad key\",\"type\":\"invalid_request_error\","
         "\"param\":null,\"code\":\"invalid_api_key\"}}",
         "invalid_request_error", "Bad key");
    info("{\"error\":{\"message\":\"m\",\"type\":null,\"code\":429}}", "429", "m");
    info("{\"error\":{\"message\":\"m\",\"code\":null}}", "", "m");
    info("{\"error\":\"model 'x' not found\"}", "", "model 'x' not found");
    info("{\"detail\":\"Not Found\"}", "", "Not Found");
    info("{\"detail\":[{\"loc\":[\"body\"],\"msg\":\"bad\"}]}", "",
         "[{\"loc\":[\"body\"],\"msg\":\"bad\"}]");
    info("{\"message\":\"plain\"}", "", "plain");
    info("<html>\n<b>502 Bad Gateway</b>\n</html>", "", "<html> <b>502 Bad Gateway</b> </html>");
    info("", "", "");
    info(NULL, "", "");
    info("[1,2]", "", "");
}

TEST(test_llm_http_scrub_key) {
    char s[64] = "bad key sk-SECRET-1 and sk-SECRET-1!";
    llm_http_scrub(s, sizeof(s), "sk-SECRET-1");
    CHECK_STR(s, "bad key [redacted] and [redacted]!");
    char t[8] = "abcK"; /* the mark is longer than the room left: cut to fit */
    llm_http_scrub(t, sizeof(t), "K");
    CHECK_STR(t, "abc[red");
    char w[12] = "xKyz"; /* the mark fits, the text after it does not */
    llm_http_scrub(w, sizeof(w), "K");
    CHECK_STR(w, "x[redacted]");
    char v[64] = "key a and a";
    llm_http_scrub(v, sizeof(v), "a"); /* "a" is inside "[redacted]" too */
    CHECK_STR(v, "key [redacted] [redacted]nd [redacted]");
    char u[16] = "xx";
    llm_http_scrub(u, sizeof(u), NULL);
    llm_http_scrub(u, sizeof(u), "");
    CHECK_STR(u, "xx");
}

/* The key straddles the cut: it is removed from the full text before the
 * cut, so not even its first bytes are left. */
TEST(test_llm_http_scrub_before_cut) {
    const char *key = "sk-SECRET-123";
    const char *text = "bad key sk-SECRET-123 refused";
    char out[16];
    llm_http_copy_scrubbed(out, sizeof(out), text, strlen(text), key);
    CHECK_STR(out, "bad key [redact");

    /* The same through llm_http_fail, whose message is cut to f_msg. */
    char msg[300], want[CTXD_ERRSTR_LEN];
    size_t pad = sizeof(want) - 1 - strlen(" key=") - 5; /* the cut falls 5 bytes into the key */
    memset(msg, 'x', pad);
    snprintf(msg + pad, sizeof(msg) - pad, " key=%s end", key);
    memset(want, 'x', pad);
    snprintf(want + pad, sizeof(want) - pad, " key=[redacted]");
    llm_http *h = llm_http_new();
    llm_http_call call = {.secret = key};
    h->call = &call;
    llm_http_fail(h, LLM_ERR_UPSTREAM, 500, 0, "%s", msg);
    CHECK_STR(h->f_msg, want);
    CHECK(strlen(h->f_msg) == sizeof(h->f_msg) - 1);
    h->call = NULL;
    llm_http_free(h);
}

TEST(test_llm_http_utf8_cut_cleanly) {
    char s[16] = "ab\xC3\xA9";
    utf8_trim(s);
    CHECK_STR(s, "ab\xC3\xA9"); /* complete: kept */
    char t[16] = "ab\xE2\x82";
    utf8_trim(t);
    CHECK_STR(t, "ab");
    char u[16] = "ab\xC3";
    utf8_trim(u);
    CHECK_STR(u, "ab");
    char msg[8];
    copy_text(msg, sizeof(msg), "abcde\xE2\x82\xAC", 8); /* "abcde€" into 7 bytes */
    CHECK_STR(msg, "abcde");
}

TEST(test_llm_http_url_joining) {
    char u[64];
    CHECK(llm_http_url(u, sizeof(u), "https://api.anthropic.com", "/v1/messages") == CTXD_OK);
    CHECK_STR(u, "https://api.anthropic.com/v1/messages");
    llm_http_url(u, sizeof(u), "https://api.anthropic.com/v1/", "/v1/messages");
    CHECK_STR(u, "https://api.anthropic.com/v1/messages");
    llm_http_url(u, sizeof(u), "http://localhost:11434/v1", "/chat/completions");
    CHECK_STR(u, "http://localhost:11434/v1/chat/completions");
    CHECK(llm_http_url(u, 8, "http://long.example", "/x") == CTXD_ERR);
}

TEST(test_llm_http_json_parse_strict) {
    json_object *o = llm_json_parse("{\"a\":1}  \n", 10);
    CHECK(o != NULL);
    CHECK(llm_json_long(o, "a") == 1);
    CHECK(llm_json_long(o, "b") == -1);
    CHECK(llm_json_str(o, "a") == NULL);
    json_object_put(o);
    CHECK(llm_json_parse("{\"a\":1} x", 9) == NULL);
    CHECK(llm_json_parse("{\"a\":", 5) == NULL);
}

TEST(test_llm_http_body_cap) {
    llm_http *h = llm_http_new();
    llm_http_call call = {0};
    h->call = &call;
    attempt_reset(h);
    h->mode_decided = 1;
    char small[8] = "{}";
    CHECK(on_write(small, 1, 2, h) == 2);
    CHECK_STR(h->body.data, "{}");
    /* The length alone trips the cap; the bytes are never read. */
    CHECK(on_write(small, 1, LLM_HTTP_MAX_BODY, h) == 0);
    CHECK(h->too_large);
    fail_transfer(h, CURLE_WRITE_ERROR);
    CHECK(h->failed && h->f_err == LLM_ERR_UPSTREAM && !h->f_retryable);
    CHECK(strstr(h->f_msg, "larger than") != NULL);
    h->call = NULL;
    llm_http_free(h);
}

TEST_MAIN(T(test_llm_http_body_cap), T(test_llm_http_sse_one_byte_at_a_time),
          T(test_llm_http_sse_crlf_and_cr), T(test_llm_http_sse_many_events_per_chunk),
          T(test_llm_http_sse_comments_fields_and_bom),
          T(test_llm_http_sse_unterminated_event_dropped), T(test_llm_http_sse_callback_stops),
          T(test_llm_http_should_retry_statuses), T(test_llm_http_retry_after_ms_wins),
          T(test_llm_http_retry_after_seconds_and_date),
          T(test_llm_http_backoff_exponential_with_jitter), T(test_llm_http_status_mapping),
          T(test_llm_http_error_body_shapes), T(test_llm_http_scrub_key),
          T(test_llm_http_scrub_before_cut), T(test_llm_http_utf8_cut_cleanly),
          T(test_llm_http_url_joining), T(test_llm_http_json_parse_strict))
