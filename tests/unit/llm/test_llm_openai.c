/* test_llm_openai.c: OpenAI-compatible request bodies, replies, streams, and calls against the fake. */
/* The fake first: a local of its named buf would shadow ctxd/buf.h's type. */
#include "../../fakes/fake_upstream.h"

#include "../../../src/llm/llm_http.c"
#include "../../../src/llm/llm_openai.c"
#include "../../../src/llm/llm_json.c"

#include "../test.h"

#define KEY "sk-openai-test-KEY-456"

typedef struct sink {
    char text[4096];
    int calls;
} sink;

static int on_delta(void *arg, const char *t, size_t len) {
    sink *s = arg;
    size_t l = strlen(s->text);
    snprintf(s->text + l, sizeof(s->text) - l, "%.*s", (int)len, t);
    s->calls++;
    return CTXD_OK;
}

static const llm_message history[] = {
    {"user", "first question", 14, 0},
    {"assistant", "first answer", 12, 0},
    {"user", "second question", 15, 0},
};

static void config(ctxd_config *cfg, const char *url, const char *key) {
    memset(cfg, 0, sizeof(*cfg));
    cfg->provider = CTXD_PROVIDER_OPENAI;
    snprintf(cfg->model, sizeof(cfg->model), "gpt-test");
    cfg->max_tokens = 77;
    snprintf(cfg->openai_url, sizeof(cfg->openai_url), "%s", url);
    cfg->openai_key = (char *)key;
    cfg->upstream_connect_timeout_ms = 1000;
    cfg->upstream_timeout_ms = 5000;
    cfg->upstream_deadline_ms = 20000;
    cfg->upstream_max_retries = 2;
    cfg->upstream_retry_cap_ms = 60000;
}

static llm_request request(sink *s, int stream) {
    llm_request r = {0};
    r.system = "be brief";
    r.messages = history;
    r.n_messages = 3;
    if (stream) {
        r.on_delta = on_delta;
        r.on_delta_arg = s;
    }
    return r;
}

/* ---- body building ---- */

TEST(test_llm_openai_body_system_first_and_stream_options) {
    ctxd_config cfg;
    config(&cfg, "http://localhost:11434/v1", NULL);
    sink s = {.text = ""};
    llm_request r = request(&s, 0);
    json_object *b = openai_body(&cfg, &r), *msgs, *v;
    CHECK(json_object_object_get_ex(b, "messages", &msgs));
    CHECK(json_object_array_length(msgs) == 4);
    json_object *first = json_object_array_get_idx(msgs, 0);
    CHECK_STR(llm_json_str(first, "role"), "system");
    CHECK_STR(llm_json_str(first, "content"), "be brief");
    for (size_t i = 0; i < 3; i++) {
        json_object *m = json_object_array_get_idx(msgs, i + 1);
        CHECK_STR(llm_json_str(m, "role"), history[i].role);
        CHECK_STR(llm_json_str(m, "content"), history[i].content);
    }
    CHECK(llm_json_long(b, "max_tokens") == 77);
    CHECK(!json_object_object_get_ex(b, "stream", &v));
    CHECK(!json_object_object_get_ex(b, "stream_options", &v));
    json_object_put(b);

    r.system = NULL;
    r.on_delta = on_delta;
    b = openai_body(&cfg, &r);
    json_object_object_get_ex(b, "messages", &msgs);
    CHECK(json_object_array_length(msgs) == 3);
    CHECK(json_object_object_get_ex(b, "stream", &v) && json_object_get_boolean(v));
    CHECK(json_object_object_get_ex(b, "stream_options", &v));
    json_object *iu = NULL;
    CHECK(json_object_object_get_ex(v, "include_usage", &iu) && json_object_get_boolean(iu));
    json_object_put(b);

    /* api.openai.com gets max_completion_tokens (reasoning models need it). */
    config(&cfg, "https://api.openai.com/v1", KEY);
    b = openai_body(&cfg, &r);
    CHECK(llm_json_long(b, "max_completion_tokens") == 77);
    CHECK(!json_object_object_get_ex(b, "max_tokens", &v));
    json_object_put(b);
}

/* ---- parsing, without the network ---- */

static int run_stream(const char *sse, size_t step, sink *s, llm_response *resp, llm_http **out) {
    static openai_state st;
    static llm_request req;
    static llm_http_call call;
    llm_http *h = llm_http_new();
    req = (llm_request){0};
    req.on_delta = on_delta;
    req.on_delta_arg = s;
    call = (llm_http_call){.stream = 1, .ops = &openai_ops, .arg = &st};
    json_object_put(st.calls); /* the last run's */
    st = (openai_state){resp, 0, 0, NULL};
    h->req = &req;
    h->call = &call;
    attempt_reset(h);
    h->status = 200;
    openai_ops.begin(&st);
    size_t len = strlen(sse);
    int rc = CTXD_OK;
    for (size_t i = 0; i < len && rc == CTXD_OK; i += step)
        rc = llm_sse_feed(&h->sse, sse + i, len - i < step ? len - i : step);
    if (rc == CTXD_OK) rc = openai_ops.finish(&st, h, NULL, 0, resp);
    *out = h;
    return rc;
}

#define CHUNK(x)                                                                                   \
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,"                     \
    "\"model\":\"gpt-x\",\"choices\":" x ",\"usage\":null}\n\n"

static const char *stream_body = CHUNK(
    "[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},"
    "\"finish_reason\":null}]") ": keep-alive comment\n\n" CHUNK("[{\"index\":0,\"delta\":{"
                                                                 "\"content\":\"Hi\"},\"finish_"
                                                                 "reason\":null}]")
    CHUNK("[{\"index\":0,\"delta\":{\"content\":\" there\"},\"finish_reason\":null}]") CHUNK(
        "[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]") "data: "
                                                                   "{\"id\":\"c1\",\"object\":"
                                                                   "\"chat.completion.chunk\","
                                                                   "\"created\":1,\"model\":"
                                                                   "\"gpt-x\",\"choices\":[],"
                                                                   "\"usage\":{\"prompt_tokens\":9,"
                                                                   "\"completion_tokens\":2,"
                                                                   "\"total_tokens\":11}}\n\n"
                                                                   "data: [DONE]\n\n";

/* Messages' fields for Chat Completions: the counterparts; its own as given. */
TEST(test_llm_openai_body_extra_fields) {
    ctxd_config cfg;
    config(&cfg, "http://localhost:11434/v1", NULL);
    sink s = {.text = ""};
    llm_request r = request(&s, 0);
    json_object *b, *v;
    r.extra_json = "{\"temperature\":0.5,\"stop_sequences\":[\"END\"],\"metadata\":{\"user_id\":"
                   "\"u1\"},\"thinking\":{\"type\":\"enabled\"},\"top_k\":5}";
    b = openai_body(&cfg, &r);
    CHECK(json_object_object_get_ex(b, "stop", &v) && json_object_array_length(v) == 1);
    CHECK_STR(llm_json_str(b, "user"), "u1");
    CHECK(json_object_object_get_ex(b, "temperature", &v));
    CHECK(!json_object_object_get_ex(b, "thinking", &v) &&
          !json_object_object_get_ex(b, "top_k", &v));
    json_object_put(b);
    r.extra_json = "{\"seed\":7,\"stop\":\"END\",\"max_tokens\":1}";
    r.extra_openai = 1;
    b = openai_body(&cfg, &r);
    CHECK(llm_json_long(b, "seed") == 7);
    CHECK_STR(llm_json_str(b, "stop"), "END");
    CHECK(llm_json_long(b, "max_tokens") == 77); /* what ctxd set stays */
    json_object_put(b);
}

TEST(test_llm_openai_stream_any_split) {
    size_t steps[] = {1, 2, 5, 33, 100000};
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        sink s = {.text = ""};
        llm_response resp;
        llm_response_init(&resp);
        llm_http *h;
        CHECK(run_stream(stream_body, steps[i], &s, &resp, &h) == CTXD_OK);
        CHECK_STR(s.text, "Hi there");
        CHECK(s.calls == 2);
        CHECK_STR(resp.stop_reason, "stop");
        CHECK_STR(resp.model, "gpt-x");
        CHECK(resp.input_tokens == 9 && resp.output_tokens == 2);
        llm_http_free(h);
    }
}

TEST(test_llm_openai_stream_missing_done) {
    const char *done = strstr(stream_body, "data: [DONE]");
    char body[4096];
    snprintf(body, sizeof(body), "%.*s", (int)(done - stream_body), stream_body);
    sink s = {.text = ""};
    llm_response resp;
    llm_response_init(&resp);
    llm_http *h;
    /* A finish_reason then the end of the body: complete. */
    CHECK(run_stream(body, 3, &s, &resp, &h) == CTXD_OK);
    CHECK_STR(s.text, "Hi there");
    llm_http_free(h);

    /* Neither finish_reason nor [DONE]: cut. */
    const char *fin =
        strstr(stream_body, CHUNK("[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]"));
    snprintf(body, sizeof(body), "%.*s", (int)(fin - stream_body), stream_body);
    s = (sink){.text = ""};
    llm_response_init(&resp);
    CHECK(run_stream(body, 3, &s, &resp, &h) == CTXD_ERR);
    CHECK(h->failed && h->f_err == LLM_ERR_UPSTREAM);
    CHECK(strstr(h->f_msg, "[DONE]") != NULL);
    llm_http_free(h);
}

TEST(test_llm_openai_stream_error_chunk) {
    const char *sse = CHUNK(
        "[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]") "data: "
                                                                                 "{\"error\":{"
                                                                                 "\"message\":"
                                                                                 "\"model "
                                                                                 "crashed\","
                                                                                 "\"type\":"
                                                                                 "\"server_error\","
                                                                                 "\"code\":500}}"
                                                                                 "\n\n";
    sink s = {.text = ""};
    llm_response resp;
    llm_response_init(&resp);
    llm_http *h;
    CHECK(run_stream(sse, 4, &s, &resp, &h) == CTXD_ERR);
    CHECK(h->failed && h->f_err == LLM_ERR_UPSTREAM);
    CHECK(strstr(h->f_msg, "server_error: model crashed") != NULL);
    llm_http_free(h);
}

TEST(test_llm_openai_parse_completion) {
    const char *body =
        "{\"id\":\"x\",\"object\":\"chat.completion\",\"created\":1,\"model\":\"llama3\","
        "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"Yo\"},"
        "\"finish_reason\":\"length\"}]}";
    llm_http *h = llm_http_new();
    llm_response resp;
    llm_response_init(&resp);
    CHECK(openai_parse_completion(h, body, strlen(body), &resp) == CTXD_OK);
    CHECK_STR(h->text.data, "Yo");
    CHECK_STR(resp.stop_reason, "length");
    CHECK_STR(resp.model, "llama3");
    CHECK(resp.input_tokens == -1 && resp.output_tokens == -1); /* no usage */
    const char *null_content =
        "{\"choices\":[{\"message\":{\"role\":\"assistant\",\"content\":null},"
        "\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":0}}";
    CHECK(openai_parse_completion(h, null_content, strlen(null_content), &resp) == CTXD_OK);
    CHECK(resp.input_tokens == 1 && resp.output_tokens == 0);
    CHECK(openai_parse_completion(h, "{\"choices\":[]}", 14, &resp) == CTXD_ERR);
    llm_http_free(h);
}

/* ---- against the fake upstream ---- */

static fake_upstream fake;

static int fake_up(void) {
    static const char *const args[] = {"--openai-key", KEY, NULL};
    if (fake.pid > 0) return fake_reset(&fake);
    return fake_start(&fake, args);
}

static int n_requests(void) { return fake_count_requests(&fake); }

static int call(ctxd_config *cfg, llm_request *req, llm_response *resp) {
    return fake_llm_call(cfg, req, resp);
}

static void base_url(char *out, size_t cap) { snprintf(out, cap, "%s/v1", fake.url); }

TEST(test_llm_openai_fake_plain_call) {
    CHECK(fake_up() == 0);
    char url[96];
    base_url(url, sizeof(url));
    ctxd_config cfg;
    config(&cfg, url, KEY);
    sink s = {.text = ""};
    llm_request req = request(&s, 0);
    llm_response resp;
    CHECK(call(&cfg, &req, &resp) == CTXD_OK);
    CHECK_STR(resp.text, "fake-openai reply #2 to: second question [system: be brief]");
    CHECK_STR(resp.stop_reason, "stop");
    CHECK_STR(resp.model, "gpt-test");
    CHECK(resp.input_tokens > 0 && resp.output_tokens > 0);
    char *r = fake_requests(&fake);
    CHECK(r && strstr(r, "\"path\": \"/v1/chat/completions\""));
    CHECK(r && strstr(r, "\"authorization\": \"Bearer " KEY "\""));
    CHECK(r && strstr(r, "{\"role\": \"system\", \"content\": \"be brief\"}"));
    free(r);
    llm_response_free(&resp);
}

TEST(test_llm_openai_fake_stream_with_usage) {
    CHECK(fake_up() == 0);
    char url[96];
    base_url(url, sizeof(url));
    ctxd_config cfg;
    config(&cfg, url, KEY);
    sink s = {.text = ""};
    llm_request req = request(&s, 1);
    llm_response resp;
    CHECK(call(&cfg, &req, &resp) == CTXD_OK);
    CHECK_STR(s.text, "fake-openai reply #2 to: second question [system: be brief]");
    CHECK_STR(resp.text, s.text);
    CHECK(s.calls > 3);
    CHECK(resp.input_tokens > 0 && resp.output_tokens > 0);
    char *r = fake_requests(&fake);
    CHECK(r && strstr(r, "\"stream_options\": {\"include_usage\": true}"));
    free(r);
    llm_response_free(&resp);
}

TEST(test_llm_openai_fake_no_key_no_header) {
    fake_upstream open_fake;
    CHECK(fake_start(&open_fake, NULL) == 0); /* accepts calls without a key */
    char url[96];
    snprintf(url, sizeof(url), "%s", open_fake.url); /* no /v1: Ollama-style prefix */
    ctxd_config cfg;
    config(&cfg, url, NULL);
    sink s = {.text = ""};
    llm_request req = request(&s, 0);
    llm_response resp;
    CHECK(call(&cfg, &req, &resp) == CTXD_OK);
    char *r = fake_requests(&open_fake);
    CHECK(r && strstr(r, "\"path\": \"/chat/completions\""));
    CHECK(r && !strstr(r, "authorization"));
    free(r);
    llm_response_free(&resp);
    fake_stop(&open_fake);
}

TEST(test_llm_openai_fake_missing_done_and_usage) {
    CHECK(fake_up() == 0);
    fake_script(&fake, "[{\"no_done\":true,\"no_usage\":true},{\"no_usage\":true}]");
    char url[96];
    base_url(url, sizeof(url));
    ctxd_config cfg;
    config(&cfg, url, KEY);
    sink s = {.text = ""};
    llm_request req = request(&s, 1);
    llm_response resp;
    CHECK(call(&cfg, &req, &resp) == CTXD_OK);
    CHECK(resp.input_tokens == -1 && resp.output_tokens == -1);
    CHECK_STR(resp.stop_reason, "stop");
    llm_response_free(&resp);
    req = request(&s, 0);
    CHECK(call(&cfg, &req, &resp) == CTXD_OK);
    CHECK(resp.input_tokens == -1 && resp.output_tokens == -1);
    llm_response_free(&resp);
}

TEST(test_llm_openai_fake_stream_cut_before_finish) {
    CHECK(fake_up() == 0);
    fake_script(&fake, "[{\"cut\":\"clean\",\"cut_after\":2}]");
    char url[96];
    base_url(url, sizeof(url));
    ctxd_config cfg;
    config(&cfg, url, KEY);
    sink s = {.text = ""};
    llm_request req = request(&s, 1);
    llm_response resp;
    CHECK(call(&cfg, &req, &resp) == CTXD_ERR);
    CHECK(resp.err == LLM_ERR_UPSTREAM);
    CHECK(n_requests() == 1);
    llm_response_free(&resp);
}

TEST(test_llm_openai_fake_error_shapes) {
    CHECK(fake_up() == 0);
    fake_script(&fake,
                "[{\"status\":404,\"error_body\":\"{\\\"detail\\\":\\\"Not Found\\\"}\"},"
                "{\"status\":400,\"error_body\":\"{\\\"error\\\":\\\"model 'x' not found\\\"}\"},"
                "{\"status\":503,\"headers\":{\"retry-after\":\"2\"}},"
                "{\"status\":401,\"message\":\"Incorrect API key provided: " KEY "\"}]");
    char url[96];
    base_url(url, sizeof(url));
    ctxd_config cfg;
    config(&cfg, url, KEY);
    cfg.upstream_max_retries = 0;
    sink s = {.text = ""};
    llm_request req = request(&s, 0);
    llm_response resp;
    CHECK(call(&cfg, &req, &resp) == CTXD_ERR);
    CHECK(resp.err == LLM_ERR_BAD_REQUEST && resp.upstream_status == 404);
    CHECK(strstr(resp.errstr, "HTTP 404: Not Found") != NULL);
    llm_response_free(&resp);
    CHECK(call(&cfg, &req, &resp) == CTXD_ERR);
    CHECK(resp.err == LLM_ERR_BAD_REQUEST);
    CHECK(strstr(resp.errstr, "model 'x' not found") != NULL);
    llm_response_free(&resp);
    CHECK(call(&cfg, &req, &resp) == CTXD_ERR);
    CHECK(resp.err == LLM_ERR_OVERLOADED && resp.retry_after_ms == 2000);
    CHECK(strstr(resp.errstr, "HTTP 503 server_error") != NULL);
    llm_response_free(&resp);
    CHECK(call(&cfg, &req, &resp) == CTXD_ERR);
    CHECK(resp.err == LLM_ERR_AUTH);
    CHECK(strstr(resp.errstr, KEY) == NULL);
    CHECK(strstr(resp.errstr, "invalid_request_error") != NULL);
    llm_response_free(&resp);
}

TEST(test_llm_openai_fake_rate_limit_retried) {
    CHECK(fake_up() == 0);
    fake_script(&fake, "[{\"status\":429,\"headers\":{\"retry-after-ms\":\"30\"}}]");
    char url[96];
    base_url(url, sizeof(url));
    ctxd_config cfg;
    config(&cfg, url, KEY);
    sink s = {.text = ""};
    llm_request req = request(&s, 1);
    llm_response resp;
    CHECK(call(&cfg, &req, &resp) == CTXD_OK);
    CHECK(resp.retries == 1);
    CHECK(n_requests() == 2);
    llm_response_free(&resp);
}

TEST(test_llm_openai_fake_stream_error_chunk) {
    CHECK(fake_up() == 0);
    fake_script(&fake, "[{\"stream_error\":{\"message\":\"boom\"},\"error_after\":1}]");
    char url[96];
    base_url(url, sizeof(url));
    ctxd_config cfg;
    config(&cfg, url, KEY);
    sink s = {.text = ""};
    llm_request req = request(&s, 1);
    llm_response resp;
    CHECK(call(&cfg, &req, &resp) == CTXD_ERR);
    CHECK(resp.err == LLM_ERR_UPSTREAM && resp.upstream_status == 200);
    CHECK(strstr(resp.errstr, "boom") != NULL);
    CHECK(n_requests() == 1);
    llm_response_free(&resp);
}

TEST_MAIN(T(test_llm_openai_body_system_first_and_stream_options),
          T(test_llm_openai_body_extra_fields), T(test_llm_openai_stream_any_split),
          T(test_llm_openai_stream_missing_done), T(test_llm_openai_stream_error_chunk),
          T(test_llm_openai_parse_completion), T(test_llm_openai_fake_plain_call),
          T(test_llm_openai_fake_stream_with_usage), T(test_llm_openai_fake_no_key_no_header),
          T(test_llm_openai_fake_missing_done_and_usage),
          T(test_llm_openai_fake_stream_cut_before_finish), T(test_llm_openai_fake_error_shapes),
          T(test_llm_openai_fake_rate_limit_retried), T(test_llm_openai_fake_stream_error_chunk))
