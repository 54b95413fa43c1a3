/* test_llm_echo.c: the offline model answers the guide's lines and sees history. */
#include "../../../src/llm/llm_echo.c"

#include "../test.h"

static char *reply(const llm_message *m, size_t n, const char *system) {
    llm_request req = {.context_id = "ctx", .system = system, .messages = m, .n_messages = n};
    llm_response r;
    llm_response_init(&r);
    CHECK(llm_echo_complete(&req, &r) == CTXD_OK);
    CHECK(r.input_tokens > 0 && r.output_tokens > 0);
    return r.text;
}

#define MSG(role, text)                                                                            \
    { role, text, sizeof(text) - 1, 0 }

TEST(test_llm_echo_guide_lines) {
    llm_message hello[] = {MSG("user", "Hello, can you help me plan a trip?")};
    char *t = reply(hello, 1, NULL);
    CHECK_STR(t, "Hello there! How can I help you today?");
    free(t);
    llm_message flight[] = {MSG("user", "Can you book me a flight to New York?"),
                            MSG("assistant", "Acknowledged."),
                            MSG("user", "Make it for next Tuesday and I prefer a window seat.")};
    t = reply(flight, 3, NULL);
    CHECK_STR(t, "Got it, a flight for next Tuesday. Any specific time or airline?");
    free(t);
    llm_message seat[] = {MSG("user", "a flight please"), MSG("assistant", "ok"),
                          MSG("user", "window seat")};
    t = reply(seat, 3, NULL);
    CHECK(!strncmp(t, "A window seat, noted.", 21));
    free(t);
}

TEST(test_llm_echo_counts_earlier_turns) {
    llm_message m[] = {MSG("user", "one"), MSG("assistant", "a"), MSG("user", "two"),
                       MSG("assistant", "b"), MSG("user", "three")};
    char *t = reply(m, 5, "sys");
    CHECK(strstr(t, "'three'") != NULL);
    CHECK(strstr(t, "2 earlier turns") != NULL);
    CHECK(strstr(t, "system prompt") != NULL);
    free(t);
}

TEST(test_llm_echo_tokens_add_up) {
    llm_message m[] = {MSG("user", "12345678"), MSG("assistant", "abcd"), MSG("user", "x")};
    llm_request req = {.system = "0123456789abcdef", .messages = m, .n_messages = 3};
    llm_response r;
    llm_response_init(&r);
    CHECK(llm_echo_complete(&req, &r) == CTXD_OK);
    /* system 16/4 + (8/4+4) + (4/4+4) + (1/4+4) */
    CHECK(r.input_tokens == 4 + 6 + 5 + 4);
    CHECK(r.output_tokens == message_tokens(r.text_len));
    llm_response_free(&r);
}

TEST(test_llm_echo_summary_keeps_old_and_adds_new) {
    const char p[] = "Current summary:\nold facts\n\nNew messages:\n[seq 3] user: hi\n"
                     "[seq 4] assistant: hello\n";
    llm_message m[] = {{"user", p, sizeof(p) - 1, 0}};
    llm_request req = {.messages = m, .n_messages = 1, .summarize = 1};
    llm_response r;
    llm_response_init(&r);
    CHECK(llm_echo_complete(&req, &r) == CTXD_OK);
    CHECK_STR(r.text, "old facts\n[seq 3] user: hi\n[seq 4] assistant: hello");
    llm_response_free(&r);
}

static int deltas;
static int count_delta(void *arg, const char *t, size_t n) {
    (void)t;
    *(size_t *)arg += n;
    deltas++;
    return CTXD_OK;
}

TEST(test_llm_echo_streams_words) {
    llm_message m[] = {MSG("user", "hello")};
    size_t total = 0;
    llm_request req = {
        .messages = m, .n_messages = 1, .on_delta = count_delta, .on_delta_arg = &total};
    llm_response r;
    llm_response_init(&r);
    CHECK(llm_echo_complete(&req, &r) == CTXD_OK);
    CHECK(total == r.text_len);
    CHECK(deltas == 8);
    llm_response_free(&r);
}

TEST_MAIN(T(test_llm_echo_guide_lines), T(test_llm_echo_counts_earlier_turns),
          T(test_llm_echo_tokens_add_up), T(test_llm_echo_summary_keeps_old_and_adds_new),
          T(test_llm_echo_streams_words))
