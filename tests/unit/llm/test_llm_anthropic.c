/* test_llm_anthropic.c: Anthropic request bodies, replies, streams, and calls against the fake. */
/* The fake first: a local of its named buf would shadow ctxd/buf.h's type. */
#include "../../fakes/fake_upstream.h"

#include "../../../src/llm/llm_http.c"
#include "../../../src/llm/llm_anthropic.c"
#include "../../../src/llm/llm_json.c"

#include "../test.h"

#define KEY "sk-ant-test-KEY-123"

typedef struct sink {
    char text[4096];
    int calls;
    int abort_after; /* > 0: on_delta fails on that call */
    int ticks;
    int tick_abort_after;
} sink;

static int on_delta(void *arg, const char *t, size_t len) {
    sink *s = arg;
    size_t l = strlen(s->text);
    snprintf(s->text + l, sizeof(s->text) - l, "%.*s", (int)len, t);
    s->calls++;
    return s->abort_after && s->calls >= s->abort_after ? CTXD_ERR : CTXD_OK;
}

static int on_tick(void *arg) {
    sink *s = arg;
    s->ticks++;
    return s->tick_abort_after && s->ticks >= s->tick_abort_after ? CTXD_ERR : CTXD_OK;
}

static const llm_message history[] = {
    {"user", "first question", 14, 0},
    {"assistant", "first answer", 12, 0},
    {"user", "second question", 15, 0},
};

static void config(ctxd_config *cfg, const char *url) {
    memset(cfg, 0, sizeof(*cfg));
    cfg->provider = CTXD_PROVIDER_ANTHROPIC;
    snprintf(cfg->model, sizeof(cfg->model), "claude-test");
    cfg->max_tokens = 99;
    snprintf(cfg->anthropic_url, sizeof(cfg->anthropic_url), "%s", url);
    cfg->anthropic_key = (char *)KEY;
    cfg->upstream_connect_timeout_ms = 1000;
    cfg->upstream_timeout_ms = 5000;
    cfg->upstream_deadline_ms = 20000;
    cfg->upstream_max_retries = 2;
    cfg->upstream_retry_cap_ms = 60000;
}

static llm_request request(sink *s, int stream) {
    llm_request r = {0};
    r.context_id = "c1";
    r.system = "be brief";
    r.messages = history;
    r.n_messages = 3;
    if (stream) {
        r.on_delta = on_delta;
        r.on_delta_arg = s;
    }
    r.on_tick = on_tick;
    r.on_tick_arg = s;
    return r;
}

/* ---- body building ---- */

TEST(test_llm_anthropic_body_system_top_level) {
    ctxd_config cfg;
    config(&cfg, "http://x");
    sink s = {.text = ""};
    llm_request r = request(&s, 0);
    json_object *b = anthropic_body(&cfg, &r), *msgs, *v;
    CHECK_STR(llm_json_str(b, "system"), "be brief");
    CHECK_STR(llm_json_str(b, "model"), "claude-test");
    CHECK(llm_json_long(b, "max_tokens") == 99);
    CHECK(!json_object_object_get_ex(b, "stream", &v));
    CHECK(json_object_object_get_ex(b, "messages", &msgs));
    CHECK(json_object_array_length(msgs) == 3);
    for (size_t i = 0; i < 3; i++) {
        json_object *m = json_object_array_get_idx(msgs, i);
        CHECK_STR(llm_json_str(m, "role"), history[i].role);
        CHECK_STR(llm_json_str(m, "content"), history[i].content);
        CHECK(json_object_object_length(m) == 2);
    }
    json_object_put(b);

    r.system = NULL;
    r.model = "claude-other";
    r.max_tokens = 5;
    r.on_delta = on_delta;
    b = anthropic_body(&cfg, &r);
    CHECK(!json_object_object_get_ex(b, "system", &v));
    CHECK_STR(llm_json_str(b, "model"), "claude-other");
    CHECK(llm_json_long(b, "max_tokens") == 5);
    CHECK(json_object_object_get_ex(b, "stream", &v) && json_object_get_boolean(v));
    json_object_put(b);
}

/* A client's further fields: as given when written for Messages, the
 * counterparts only when written for Chat Completions. */
TEST(test_llm_anthropic_body_extra_fields) {
    ctxd_config cfg;
    config(&cfg, "http://x");
    sink s = {.text = ""};
    llm_request r = request(&s, 0);
    json_object *b, *v;
    r.extra_json = "{\"temperature\":0.5,\"stop_sequences\":[\"END\"],\"metadata\":{\"user_id\":"
                   "\"u1\"},\"thinking\":{\"type\":\"enabled\",\"budget_tokens\":1024},"
                   "\"model\":\"not-this\"}";
    b = anthropic_body(&cfg, &r);
    CHECK(json_object_object_get_ex(b, "thinking", &v));
    CHECK(llm_json_long(v, "budget_tokens") == 1024);
    CHECK(json_object_object_get_ex(b, "stop_sequences", &v) && json_object_array_length(v) == 1);
    CHECK_STR(llm_json_str(b, "model"), "claude-test"); /* what ctxd set stays */
    json_object_put(b);
    r.extra_json = "{\"temperature\":0.25,\"stop\":\"END\",\"user\":\"u2\",\"seed\":7,"
                   "\"logit_bias\":{}}";
    r.extra_openai = 1;
    b = anthropic_body(&cfg, &r);
    CHECK(json_object_object_get_ex(b, "temperature", &v) && json_object_get_double(v) == 0.25);
    CHECK(json_object_object_get_ex(b, "stop_sequences", &v) && json_object_array_length(v) == 1);
    CHECK_STR(json_object_get_string(json_object_array_get_idx(v, 0)), "END");
    CHECK(json_object_object_get_ex(b, "metadata", &v));
    CHECK_STR(llm_json_str(v, "user_id"), "u2");
    CHECK(!json_object_object_get_ex(b, "seed", &v) && !json_object_object_get_ex(b, "stop", &v));
    CHECK(!json_object_object_get_ex(b, "logit_bias", &v));
    json_object_put(b);
    r.extra_json = "[1]"; /* no object: no body */
    CHECK(anthropic_body(&cfg, &r) == NULL);
}

/* ---- parsing, without the network ---- */

/* Drive the provider's stream parser the way a transfer would. */
static int run_stream(const char *sse, size_t step, sink *s, llm_response *resp, llm_http **out) {
    static const llm_http_ops *ops = &anthropic_ops;
    static anthropic_state st;
    static llm_request req;
    static llm_http_call call;
    llm_http *h = llm_http_new();
    req = (llm_request){0};
    req.on_delta = on_delta;
    req.on_delta_arg = s;
    call = (llm_http_call){.stream = 1, .ops = ops, .arg = &st};
    blocks_reset(&st); /* the last run's blocks */
    st = (anthropic_state){.resp = resp};
    h->req = &req;
    h->call = &call;
    attempt_reset(h);
    h->status = 200;
    ops->begin(&st);
    size_t len = strlen(sse);
    int rc = CTXD_OK;
    for (size_t i = 0; i < len && rc == CTXD_OK; i += step)
        rc = llm_sse_feed(&h->sse, sse + i, len - i < step ? len - i : step);
    if (rc == CTXD_OK) rc = ops->finish(&st, h, NULL, 0, resp);
    *out = h;
    return rc;
}

static const char *good_stream =
    "event: message_start\r\n"
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\","
    "\"role\":\"assistant\",\"content\":[],\"model\":\"claude-x\",\"stop_reason\":null,"
    "\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\r\n\r\n"
    "event: content_block_start\r\n"
    "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\","
    "\"text\":\"\"}}\r\n\r\n"
    ": a comment line\r\n"
    "event: ping\r\ndata: {\"type\": \"ping\"}\r\n\r\n"
    "event: content_block_delta\r\n"
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
    "\"text\":\"Hello\"}}\r\n\r\n"
    "event: brand_new_event\r\ndata: {\"type\":\"brand_new_event\"}\r\n\r\n"
    "event: content_block_delta\r\n"
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
    "\"text\":\", world\"}}\r\n\r\n"
    "event: content_block_stop\r\ndata: {\"type\":\"content_block_stop\",\"index\":0}\r\n\r\n"
    "event: message_delta\r\n"
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\","
    "\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}\r\n\r\n"
    "event: message_stop\r\ndata: {\"type\":\"message_stop\"}\r\n\r\n";

TEST(test_llm_anthropic_stream_any_split) {
    size_t steps[] = {1, 2, 3, 7, 64, 100000};
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        sink s = {.text = ""};
        llm_response resp;
        llm_response_init(&resp);
        llm_http *h;
        CHECK(run_stream(good_stream, steps[i], &s, &resp, &h) == CTXD_OK);
        CHECK(!h->failed);
        CHECK_STR(s.text, "Hello, world");
        CHECK(s.calls == 2);
        CHECK_STR(h->text.data, "Hello, world");
        CHECK_STR(resp.stop_reason, "end_turn");
        CHECK_STR(resp.model, "claude-x");
        CHECK(resp.input_tokens == 25);
        CHECK(resp.output_tokens == 15);
        llm_http_free(h);
    }
}

TEST(test_llm_anthropic_stream_missing_message_stop) {
    const char *end = strstr(good_stream, "event: message_stop");
    char cut[4096];
    snprintf(cut, sizeof(cut), "%.*s", (int)(end - good_stream), good_stream);
    sink s = {.text = ""};
    llm_response resp;
    llm_response_init(&resp);
    llm_http *h;
    CHECK(run_stream(cut, 5, &s, &resp, &h) == CTXD_ERR);
    CHECK(h->failed && h->f_err == LLM_ERR_UPSTREAM);
    CHECK(strstr(h->f_msg, "message_stop") != NULL);
    CHECK(h->delivered); /* text went out: the loop will not retry */
    llm_http_free(h);
}

TEST(test_llm_anthropic_stream_error_event_after_200) {
    const char *sse = "event: message_start\n"
                      "data: {\"type\":\"message_start\",\"message\":{\"model\":\"m\",\"usage\":"
                      "{\"input_tokens\":3}}}\n\n"
                      "event: error\n"
                      "data: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", "
                      "\"message\": \"Overloaded\"}}\n\n"
                      "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
    sink s = {.text = ""};
    llm_response resp;
    llm_response_init(&resp);
    llm_http *h;
    CHECK(run_stream(sse, 1, &s, &resp, &h) == CTXD_ERR);
    CHECK(h->failed && h->f_err == LLM_ERR_OVERLOADED);
    CHECK(h->f_retryable && !h->delivered);
    CHECK(strstr(h->f_msg, "overloaded_error: Overloaded") != NULL);
    CHECK(s.calls == 0);
    llm_http_free(h);
}

TEST(test_llm_anthropic_stream_delta_abort) {
    sink s = {.text = "", .abort_after = 1};
    llm_response resp;
    llm_response_init(&resp);
    llm_http *h;
    CHECK(run_stream(good_stream, 10, &s, &resp, &h) == CTXD_ERR);
    CHECK(h->failed && h->f_err == LLM_ERR_ABORTED);
    CHECK(s.calls == 1);
    llm_http_free(h);
}

TEST(test_llm_anthropic_parse_message) {
    const char *body =
        "{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":["
        "{\"type\":\"text\",\"text\":\"Part one. \"},"
        "{\"type\":\"tool_use\",\"id\":\"t\",\"name\":\"x\",\"input\":{}},"
        "{\"type\":\"text\",\"text\":\"Part two.\"}],"
        "\"model\":\"claude-y\",\"stop_reason\":\"max_tokens\",\"stop_sequence\":null,"
        "\"usage\":{\"input_tokens\":10,\"output_tokens\":20}}";
    llm_http *h = llm_http_new();
    llm_response resp;
    llm_response_init(&resp);
    CHECK(anthropic_parse_message(h, body, strlen(body), &resp) == CTXD_OK);
    CHECK_STR(h->text.data, "Part one. Part two.");
    CHECK_STR(resp.stop_reason, "max_tokens");
    CHECK_STR(resp.model, "claude-y");
    CHECK(resp.input_tokens == 10 && resp.output_tokens == 20);
    /* A tool_use among them: the blocks are kept whole, as they came. */
    CHECK(resp.content_json != NULL);
    CHECK(strstr(resp.content_json, "\"type\":\"tool_use\",\"id\":\"t\"") != NULL);
    CHECK(anthropic_parse_message(h, "{\"type\":\"message\"}", 18, &resp) == CTXD_ERR);
    CHECK(h->f_err == LLM_ERR_UPSTREAM);
    CHECK(anthropic_parse_message(h, "not json", 8, &resp) == CTXD_ERR);
    llm_response_free(&resp);
    llm_http_free(h);
}

/* ---- against the fake upstream ---- */

static fake_upstream fake;

static int fake_up(void) {
    static const char *const args[] = {"--anthropic-key", KEY, NULL};
    if (fake.pid > 0) return fake_reset(&fake);
    return fake_start(&fake, args);
}

static int n_requests(void) { return fake_count_requests(&fake); }

static int call(ctxd_config *cfg, llm_request *req, llm_response *resp) {
    return fake_llm_call(cfg, req, resp);
}

TEST(test_llm_anthropic_fake_plain_call) {
    CHECK(fake_up() == 0);
    ctxd_config cfg;
    config(&cfg, fake.url);
    sink s = {.text = ""};
    llm_request req = request(&s, 0);
    llm_response resp;
    CHECK(call(&cfg, &req, &resp) == CTXD_OK);
    CHECK_STR(resp.text, "fake-anthropic reply #2 to: second question [system: be brief]");
    CHECK_STR(resp.stop_reason, "end_turn");
    CHECK_STR(resp.model, "claude-test");
    CHECK(resp.input_tokens > 0 && resp.output_tokens > 0);
    CHECK(resp.retries == 0);
    char *r = fake_requests(&fake);
    CHECK(r && strstr(r, "\"anthropic-version\": \"2023-06-01\""));
    CHECK(r && strstr(r, "\"x-api-key\": \"" KEY "\""));
    CHECK(r && strstr(r, "\"system\": \"be brief\""));
    CHECK(r && !strstr(r, "\"stream\""));
    free(r);
    llm_response_free(&resp);
}

TEST(test_llm_anthropic_fake_stream_and_keepalive) {
    CHECK(fake_up() == 0);
    ctxd_config cfg;
    config(&cfg, fake.url);
    sink s = {.text = ""};
    llm_request req = request(&s, 1);
    llm_client *c = llm_client_new(&cfg);
    llm_response resp;
    llm_response_init(&resp);
    CHECK(llm_complete(c, &req, &resp) == CTXD_OK);
    CHECK_STR(resp.text, "fake-anthropic reply #2 to: second question [system: be brief]");
    CHECK_STR(s.text, resp.text);
    CHECK(s.calls > 3); /* word by word, as it arrived */
    CHECK(resp.input_tokens > 0 && resp.output_tokens > 0);
    llm_response_free(&resp);
    llm_response_init(&resp);
    CHECK(llm_complete(c, &req, &resp) == CTXD_OK);
    llm_response_free(&resp);
    llm_client_free(c);
    char *r = fake_requests(&fake);
    CHECK(r && strstr(r, "\"stream\": true"));
    /* Both calls came over one kept-alive connection. */
    const char *p1 = r ? strstr(r, "\"client_port\": ") : NULL;
    const char *p2 = p1 ? strstr(p1 + 1, "\"client_port\": ") : NULL;
    CHECK(p1 && p2 && atoi(p1 + 15) == atoi(p2 + 15));
    free(r);
}

TEST(test_llm_anthropic_fake_retry_529_then_ok) {
    CHECK(fake_up() == 0);
    fake_script(&fake, "[{\"status\":529,\"headers\":{\"retry-after-ms\":\"20\"}},"
                       "{\"status\":500,\"headers\":{\"retry-after-ms\":\"20\"}}]");
    ctxd_config cfg;
    config(&cfg, fake.url);
    sink s = {.text = ""};
    llm_request req = request(&s, 1);
    llm_response resp;
    CHECK(call(&cfg, &req, &resp) == CTXD_OK);
    CHECK(resp.retries == 2);
    CHECK(n_requests() == 3);
    CHECK(strstr(resp.text, "reply #2") != NULL);
    llm_response_free(&resp);
}

TEST(test_llm_anthropic_fake_rate_limit_final) {
    CHECK(fake_up() == 0);
    fake_script(&fake, "[{\"status\":429,\"headers\":{\"retry-after\":\"7\"}}]");
    ctxd_config cfg;
    config(&cfg, fake.url);
    cfg.upstream_max_retries = 0;
    sink s = {.text = ""};
    llm_request req = request(&s, 0);
    llm_response resp;
    CHECK(call(&cfg, &req, &resp) == CTXD_ERR);
    CHECK(resp.err == LLM_ERR_RATE);
    CHECK(resp.upstream_status == 429);
    CHECK(resp.retry_after_ms == 7000);
    CHECK(strstr(resp.errstr, "HTTP 429 rate_limit_error") != NULL);
    llm_response_free(&resp);
}

TEST(test_llm_anthropic_fake_should_retry_false) {
    CHECK(fake_up() == 0);
    fake_script(&fake, "[{\"status\":529,\"headers\":{\"x-should-retry\":\"false\"}}]");
    ctxd_config cfg;
    config(&cfg, fake.url);
    sink s = {.text = ""};
    llm_request req = request(&s, 0);
    llm_response resp;
    CHECK(call(&cfg, &req, &resp) == CTXD_ERR);
    CHECK(resp.err == LLM_ERR_OVERLOADED && resp.upstream_status == 529);
    CHECK(n_requests() == 1);
    CHECK(resp.retries == 0);
    llm_response_free(&resp);
}

TEST(test_llm_anthropic_fake_auth_error_hides_key) {
    CHECK(fake_up() == 0);
    /* An upstream that echoes the key in its message. */
    fake_script(&fake, "[{\"status\":401,\"message\":\"invalid x-api-key " KEY "\"}]");
    ctxd_config cfg;
    config(&cfg, fake.url);
    sink s = {.text = ""};
    llm_request req = request(&s, 0);
    llm_response resp;
    CHECK(call(&cfg, &req, &resp) == CTXD_ERR);
    CHECK(resp.err == LLM_ERR_AUTH && resp.upstream_status == 401);
    CHECK(strstr(resp.errstr, "the upstream refused the API key") == resp.errstr);
    CHECK(strstr(resp.errstr, "HTTP 401 authentication_error") != NULL);
    CHECK(strstr(resp.errstr, KEY) == NULL);
    CHECK(strstr(resp.errstr, "[redacted]") != NULL);
    CHECK(n_requests() == 1);
    llm_response_free(&resp);

    cfg.anthropic_key = (char *)"sk-ant-wrong";
    CHECK(call(&cfg, &req, &resp) == CTXD_ERR);
    CHECK(resp.err == LLM_ERR_AUTH);
    CHECK(strstr(resp.errstr, "sk-ant-wrong") == NULL);
    llm_response_free(&resp);
}

TEST(test_llm_anthropic_fake_bad_request) {
    CHECK(fake_up() == 0);
    fake_script(&fake, "[{\"status\":400,\"message\":\"messages: roles must alternate\"}]");
    ctxd_config cfg;
    config(&cfg, fake.url);
    sink s = {.text = ""};
    llm_request req = request(&s, 0);
    llm_response resp;
    CHECK(call(&cfg, &req, &resp) == CTXD_ERR);
    CHECK(resp.err == LLM_ERR_BAD_REQUEST && resp.upstream_status == 400);
    CHECK(strstr(resp.errstr, "roles must alternate") != NULL);
    CHECK(n_requests() == 1);
    llm_response_free(&resp);
}

TEST(test_llm_anthropic_fake_stream_error_mid_reply) {
    CHECK(fake_up() == 0);
    fake_script(&fake, "[{\"stream_error\":{\"type\":\"overloaded_error\","
                       "\"message\":\"Overloaded\"},\"error_after\":2}]");
    ctxd_config cfg;
    config(&cfg, fake.url);
    sink s = {.text = ""};
    llm_request req = request(&s, 1);
    llm_response resp;
    CHECK(call(&cfg, &req, &resp) == CTXD_ERR);
    CHECK(resp.err == LLM_ERR_OVERLOADED);
    CHECK(s.calls == 2);
    CHECK(n_requests() == 1); /* text was delivered: no retry */
    CHECK(strstr(resp.errstr, "Overloaded") != NULL);
    llm_response_free(&resp);
}

TEST(test_llm_anthropic_fake_stream_error_before_text_retried) {
    CHECK(fake_up() == 0);
    fake_script(&fake, "[{\"stream_error\":{\"type\":\"overloaded_error\"},\"error_after\":0}]");
    ctxd_config cfg;
    config(&cfg, fake.url);
    cfg.upstream_retry_cap_ms = 50;
    sink s = {.text = ""};
    llm_request req = request(&s, 1);
    llm_response resp;
    CHECK(call(&cfg, &req, &resp) == CTXD_OK);
    CHECK(resp.retries == 1);
    CHECK_STR(s.text, resp.text);
    CHECK(strstr(s.text, "reply #2") != NULL);
    llm_response_free(&resp);
}

TEST(test_llm_anthropic_fake_stream_cut) {
    CHECK(fake_up() == 0);
    fake_script(&fake, "[{\"cut\":\"clean\",\"cut_after\":1},{\"cut\":\"drop\",\"cut_after\":1}]");
    ctxd_config cfg;
    config(&cfg, fake.url);
    sink s = {.text = ""};
    llm_request req = request(&s, 1);
    llm_response resp;
    CHECK(call(&cfg, &req, &resp) == CTXD_ERR);
    CHECK(resp.err == LLM_ERR_UPSTREAM);
    CHECK(strstr(resp.errstr, "message_stop") != NULL);
    llm_response_free(&resp);
    s = (sink){.text = ""};
    CHECK(call(&cfg, &req, &resp) == CTXD_ERR);
    CHECK(resp.err == LLM_ERR_UPSTREAM);
    CHECK(strstr(resp.errstr, "broke") != NULL);
    CHECK(n_requests() == 2);
    llm_response_free(&resp);
}

TEST(test_llm_anthropic_fake_timeout_and_deadline) {
    CHECK(fake_up() == 0);
    fake_script(&fake, "[{\"delay_ms\":1500}]");
    ctxd_config cfg;
    config(&cfg, fake.url);
    cfg.upstream_timeout_ms = 300;
    cfg.upstream_max_retries = 0;
    sink s = {.text = ""};
    llm_request req = request(&s, 0);
    llm_response resp;
    CHECK(call(&cfg, &req, &resp) == CTXD_ERR);
    CHECK(resp.err == LLM_ERR_TIMEOUT);
    llm_response_free(&resp);

    fake_script(&fake, "[{\"delay_ms\":1500},{\"delay_ms\":1500},{\"delay_ms\":1500}]");
    cfg.upstream_max_retries = 5;
    cfg.upstream_deadline_ms = 700;
    cfg.upstream_retry_cap_ms = 10;
    CHECK(call(&cfg, &req, &resp) == CTXD_ERR);
    CHECK(resp.err == LLM_ERR_TIMEOUT);
    CHECK(resp.retries >= 1);
    llm_response_free(&resp);
}

TEST(test_llm_anthropic_fake_connect_refused) {
    /* A port nobody listens on: bind one, then close it. */
    int sock = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    socklen_t al = sizeof(a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(sock, (struct sockaddr *)&a, sizeof(a));
    getsockname(sock, (struct sockaddr *)&a, &al);
    close(sock);
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", ntohs(a.sin_port));
    ctxd_config cfg;
    config(&cfg, url);
    cfg.upstream_max_retries = 1;
    cfg.upstream_retry_cap_ms = 10;
    sink s = {.text = ""};
    llm_request req = request(&s, 0);
    llm_response resp;
    CHECK(call(&cfg, &req, &resp) == CTXD_ERR);
    CHECK(resp.err == LLM_ERR_CONNECT);
    CHECK(resp.retries == 1);
    CHECK(resp.upstream_status == 0);
    llm_response_free(&resp);
}

TEST(test_llm_anthropic_fake_tick_during_wait_and_abort) {
    CHECK(fake_up() == 0);
    fake_script(&fake, "[{\"status\":529,\"headers\":{\"retry-after-ms\":\"1600\"}}]");
    ctxd_config cfg;
    config(&cfg, fake.url);
    sink s = {.text = ""};
    llm_request req = request(&s, 0);
    llm_response resp;
    CHECK(call(&cfg, &req, &resp) == CTXD_OK);
    CHECK(s.ticks >= 2);
    llm_response_free(&resp);

    fake_script(&fake, "[{\"chunk_delay_ms\":400}]");
    s = (sink){.text = "", .tick_abort_after = 1};
    req = request(&s, 1);
    CHECK(call(&cfg, &req, &resp) == CTXD_ERR);
    CHECK(resp.err == LLM_ERR_ABORTED);
    llm_response_free(&resp);
}

TEST(test_llm_anthropic_fake_delta_abort_no_retry) {
    CHECK(fake_up() == 0);
    ctxd_config cfg;
    config(&cfg, fake.url);
    sink s = {.text = "", .abort_after = 2};
    llm_request req = request(&s, 1);
    llm_response resp;
    CHECK(call(&cfg, &req, &resp) == CTXD_ERR);
    CHECK(resp.err == LLM_ERR_ABORTED);
    CHECK(s.calls == 2);
    CHECK(n_requests() == 1);
    llm_response_free(&resp);
}

TEST(test_llm_anthropic_fake_json_answer_to_stream) {
    CHECK(fake_up() == 0);
    fake_script(&fake, "[{\"content_type\":\"application/json\"}]");
    ctxd_config cfg;
    config(&cfg, fake.url);
    sink s = {.text = ""};
    llm_request req = request(&s, 1);
    llm_response resp;
    CHECK(call(&cfg, &req, &resp) == CTXD_OK);
    CHECK(s.calls == 1);
    CHECK_STR(s.text, resp.text);
    llm_response_free(&resp);
}

TEST_MAIN(T(test_llm_anthropic_body_system_top_level), T(test_llm_anthropic_body_extra_fields),
          T(test_llm_anthropic_stream_any_split), T(test_llm_anthropic_stream_missing_message_stop),
          T(test_llm_anthropic_stream_error_event_after_200),
          T(test_llm_anthropic_stream_delta_abort), T(test_llm_anthropic_parse_message),
          T(test_llm_anthropic_fake_plain_call), T(test_llm_anthropic_fake_stream_and_keepalive),
          T(test_llm_anthropic_fake_retry_529_then_ok), T(test_llm_anthropic_fake_rate_limit_final),
          T(test_llm_anthropic_fake_should_retry_false),
          T(test_llm_anthropic_fake_auth_error_hides_key), T(test_llm_anthropic_fake_bad_request),
          T(test_llm_anthropic_fake_stream_error_mid_reply),
          T(test_llm_anthropic_fake_stream_error_before_text_retried),
          T(test_llm_anthropic_fake_stream_cut), T(test_llm_anthropic_fake_timeout_and_deadline),
          T(test_llm_anthropic_fake_connect_refused),
          T(test_llm_anthropic_fake_tick_during_wait_and_abort),
          T(test_llm_anthropic_fake_delta_abort_no_retry),
          T(test_llm_anthropic_fake_json_answer_to_stream))
