/* test_turn.c: turns with the echo model (and an unreachable one), through a worker. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "turn_fixture.h"

#include "../test.h"

static char arena[8192];

TEST(test_turn_run_stores_user_message_and_reply) {
    redis_fixture rf;
    tf_start(&rf);
    ctxd_worker *w = tf_worker(&rf);
    char id[UTIL_UUID_LEN + 1], want[256];
    CHECK(tf_create(w, id, NULL, -1, -1) == CTXD_OK);
    turn_result res;
    CHECK(tf_turn(w, id, "plan my trip", NULL, 0, &res) == CTXD_OK);
    CHECK(res.error.err == CTXD_E_NONE && !res.replayed && !res.started);
    snprintf(want, sizeof(want),
             "Acknowledged: 'plan my trip'. How can I further assist you with "
             "the context ID '%s'? (echo model: 0 earlier turns in this "
             "conversation)",
             id);
    CHECK_STR(res.reply.text, want);
    CHECK(res.reply.text_len == strlen(want));
    CHECK_STR(res.reply.model, "echo");
    CHECK(res.reply.input_tokens == message_tokens(12));
    CHECK(res.reply.output_tokens == message_tokens(strlen(want)));

    message m;
    CHECK(tf_count(w, id) == 2);
    CHECK(tf_message(w, id, 0, &m, arena, sizeof(arena)) == CTXD_OK);
    CHECK(m.seq == 1 && !strcmp(m.role, "user") && m.tokens == message_tokens(12));
    CHECK(m.content_len == 12 && !memcmp(m.content, "plan my trip", 12));
    CHECK(tf_message(w, id, 1, &m, arena, sizeof(arena)) == CTXD_OK);
    CHECK(m.seq == 2 && !strcmp(m.role, "assistant") && m.tokens == res.reply.output_tokens);
    CHECK(m.content_len == res.reply.text_len && !memcmp(m.content, want, m.content_len));
    char *json = tf_message_json(w, id, 1);
    CHECK(json && strstr(json, "\"model\":\"echo\"") &&
          strstr(json, "\"stop_reason\":\"end_turn\""));
    free(json);
    CHECK(tf_exists(&rf, id, "lock") == 0);
    turn_result_free(&res);

    /* The next turn sends the history: the echo model counts it. */
    CHECK(tf_turn(w, id, "and then?", NULL, 0, &res) == CTXD_OK);
    CHECK(res.reply.text && strstr(res.reply.text, "(echo model: 1 earlier turn in this") != NULL);
    CHECK(tf_count(w, id) == 4);
    CHECK(tf_message(w, id, 2, &m, arena, sizeof(arena)) == CTXD_OK);
    CHECK(m.seq == 3 && !strcmp(m.role, "user"));
    turn_result_free(&res);
    tf_stop(&rf, w);
}

TEST(test_turn_run_idem_replay_same_fingerprint) {
    redis_fixture rf;
    tf_start(&rf);
    ctxd_worker *w = tf_worker(&rf);
    char id[UTIL_UUID_LEN + 1];
    CHECK(tf_create(w, id, NULL, -1, -1) == CTXD_OK);
    turn_result first, again;
    CHECK(tf_turn(w, id, "remember this", "key-1", 42, &first) == CTXD_OK);
    CHECK(!first.replayed);
    /* Replayed even while another turn holds the lock: no lock is needed. */
    tf_hold_lock(&rf, id, "someone-else", 60000);
    CHECK(tf_turn(w, id, "remember this", "key-1", 42, &again) == CTXD_OK);
    CHECK(again.replayed == 1 && again.error.err == CTXD_E_NONE);
    CHECK(again.reply.text_len == first.reply.text_len);
    CHECK_STR(again.reply.text, first.reply.text);
    CHECK_STR(again.reply.model, first.reply.model);
    CHECK(again.reply.input_tokens == first.reply.input_tokens);
    CHECK(again.reply.output_tokens == first.reply.output_tokens);
    CHECK(tf_count(w, id) == 2);
    char who[64];
    rf_str(&rf, who, sizeof(who), "GET ctxd:{%s}:lock", id);
    CHECK_STR(who, "someone-else");
    turn_result_free(&first);
    turn_result_free(&again);
    tf_stop(&rf, w);
}

TEST(test_turn_run_idem_key_other_fingerprint) {
    redis_fixture rf;
    tf_start(&rf);
    ctxd_worker *w = tf_worker(&rf);
    char id[UTIL_UUID_LEN + 1];
    CHECK(tf_create(w, id, NULL, -1, -1) == CTXD_OK);
    turn_result res;
    CHECK(tf_turn(w, id, "one", "key-1", 42, &res) == CTXD_OK);
    turn_result_free(&res);
    CHECK(tf_turn(w, id, "two", "key-1", 43, &res) == CTXD_ERR);
    CHECK(res.error.err == CTXD_E_IDEM_KEY_REUSED && !res.replayed);
    CHECK(strstr(res.error.msg, "key-1") != NULL);
    CHECK(res.reply.text == NULL);
    CHECK(tf_count(w, id) == 2);
    CHECK(tf_exists(&rf, id, "lock") == 0);
    turn_result_free(&res);
    tf_stop(&rf, w);
}

TEST(test_turn_run_missing_context_not_found) {
    redis_fixture rf;
    tf_start(&rf);
    ctxd_worker *w = tf_worker(&rf);
    char id[UTIL_UUID_LEN + 1];
    CHECK(util_uuid4(id) == CTXD_OK);
    turn_result res;
    CHECK(tf_turn(w, id, "hello?", "key-1", 1, &res) == CTXD_ERR);
    CHECK(res.error.err == CTXD_E_NOT_FOUND);
    CHECK(strstr(res.error.msg, id) != NULL);
    CHECK(rf_count_keys(&rf, "*") == 0);
    turn_result_free(&res);
    tf_stop(&rf, w);
}

TEST(test_turn_run_busy_after_lock_wait) {
    redis_fixture rf;
    tf_start(&rf);
    rf.cfg.lock_wait_ms = 150;
    ctxd_worker *w = tf_worker(&rf);
    char id[UTIL_UUID_LEN + 1], who[64];
    CHECK(tf_create(w, id, NULL, -1, -1) == CTXD_OK);
    tf_hold_lock(&rf, id, "someone-else", 60000);
    turn_result res;
    int64_t t0 = util_mono_ms();
    CHECK(tf_turn(w, id, "anyone there", NULL, 0, &res) == CTXD_ERR);
    int64_t waited = util_mono_ms() - t0;
    CHECK(res.error.err == CTXD_E_BUSY && !res.started);
    CHECK(waited >= 150 && waited < 3000);
    CHECK(tf_count(w, id) == 0);
    rf_str(&rf, who, sizeof(who), "GET ctxd:{%s}:lock", id);
    CHECK_STR(who, "someone-else");
    turn_result_free(&res);

    /* A lock that expires within the wait: the turn goes ahead. */
    rf.cfg.lock_wait_ms = 3000;
    tf_hold_lock(&rf, id, "someone-else", 100);
    CHECK(tf_turn(w, id, "now?", NULL, 0, &res) == CTXD_OK);
    CHECK(tf_count(w, id) == 2);
    turn_result_free(&res);
    tf_stop(&rf, w);
}

TEST(test_turn_run_context_full) {
    redis_fixture rf;
    tf_start(&rf);
    rf.cfg.max_messages = 3;
    ctxd_worker *w = tf_worker(&rf);
    char id[UTIL_UUID_LEN + 1], keep[UTIL_UUID_LEN + 1];
    CHECK(tf_create(w, id, NULL, -1, -1) == CTXD_OK);
    turn_result res;
    CHECK(tf_turn(w, id, "one", NULL, 0, &res) == CTXD_OK);
    turn_result_free(&res);
    CHECK(tf_turn(w, id, "two", "key-2", 2, &res) == CTXD_ERR);
    CHECK(res.error.err == CTXD_E_CONTEXT_FULL);
    turn_result_free(&res);
    CHECK(tf_count(w, id) == 2);
    CHECK(tf_exists(&rf, id, "lock") == 0);
    CHECK(tf_exists(&rf, id, "idem") == 0);

    /* A context that keeps only its newest messages never fills up. */
    CHECK(tf_create(w, keep, NULL, -1, 2) == CTXD_OK);
    for (int i = 0; i < 3; i++) {
        CHECK(tf_turn(w, keep, "again", NULL, 0, &res) == CTXD_OK);
        turn_result_free(&res);
    }
    CHECK(tf_count(w, keep) == 2);
    message m;
    CHECK(tf_message(w, keep, 0, &m, arena, sizeof(arena)) == CTXD_OK);
    CHECK(m.seq == 5);
    tf_stop(&rf, w);
}

TEST(test_turn_run_prompt_too_large) {
    redis_fixture rf;
    tf_start(&rf);
    ctxd_worker *w = tf_worker(&rf);
    char id[UTIL_UUID_LEN + 1], big[101];
    memset(big, 'x', 100);
    big[100] = '\0';
    /* The new message alone (29 tokens) exceeds 20. */
    CHECK(tf_create(w, id, "window", 20, -1) == CTXD_OK);
    turn_result res;
    CHECK(tf_turn(w, id, big, "key-1", 1, &res) == CTXD_ERR);
    CHECK(res.error.err == CTXD_E_PROMPT_TOO_LARGE);
    CHECK(tf_count(w, id) == 0);
    CHECK(tf_exists(&rf, id, "lock") == 0);
    CHECK(tf_exists(&rf, id, "idem") == 0);
    turn_result_free(&res);
    /* The key was not used up: a fitting request may take it. */
    CHECK(tf_turn(w, id, "ok", "key-1", 2, &res) == CTXD_OK && !res.replayed);
    turn_result_free(&res);

    /* With strategy all the whole history counts: an echo reply is ~40 tokens. */
    char all[UTIL_UUID_LEN + 1];
    CHECK(tf_create(w, all, "all", 40, -1) == CTXD_OK);
    CHECK(tf_turn(w, all, "hi", NULL, 0, &res) == CTXD_OK);
    turn_result_free(&res);
    CHECK(tf_turn(w, all, "hi again", NULL, 0, &res) == CTXD_ERR);
    CHECK(res.error.err == CTXD_E_PROMPT_TOO_LARGE);
    CHECK(strstr(res.error.msg, "strategy window") != NULL);
    turn_result_free(&res);
    CHECK(tf_count(w, all) == 2);
    /* Windowed, the same turn fits by leaving the old unit out. */
    store_settings change = STORE_SETTINGS_UNCHANGED;
    store_context c;
    ctxd_error e;
    change.strategy = "window";
    CHECK(context_change(w, all, &change, NULL, &c, &e) == CTXD_OK);
    store_context_free(&c);
    CHECK(tf_turn(w, all, "hi again", NULL, 0, &res) == CTXD_OK);
    CHECK(res.reply.text && strstr(res.reply.text, "0 earlier turns") != NULL);
    turn_result_free(&res);
    CHECK(tf_count(w, all) == 4);
    tf_stop(&rf, w);
}

/* A port on 127.0.0.1 where nothing listens. */
static int closed_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0), port = 0;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    if (fd >= 0 && !bind(fd, (struct sockaddr *)&a, sizeof(a)) &&
        !getsockname(fd, (struct sockaddr *)&a, &al))
        port = ntohs(a.sin_port);
    if (fd >= 0) close(fd);
    return port;
}

TEST(test_turn_run_upstream_unreachable_stores_nothing) {
    redis_fixture rf;
    tf_start(&rf);
    ctxd_config *cfg = &rf.cfg;
    int port = closed_port();
    CHECK(port > 0);
    cfg->provider = CTXD_PROVIDER_ANTHROPIC;
    snprintf(cfg->anthropic_url, sizeof(cfg->anthropic_url), "http://127.0.0.1:%d", port);
    cfg->anthropic_key = strdup("sk-test");
    cfg->upstream_connect_timeout_ms = 500;
    cfg->upstream_timeout_ms = 1000;
    cfg->upstream_deadline_ms = 2000;
    cfg->upstream_max_retries = 0;
    llm_global_init();
    ctxd_worker *w = tf_worker(&rf);
    char id[UTIL_UUID_LEN + 1];
    CHECK(tf_create(w, id, NULL, -1, -1) == CTXD_OK);
    turn_result res;
    CHECK(tf_turn(w, id, "are you there", "key-1", 7, &res) == CTXD_ERR);
    CHECK(res.error.err == CTXD_E_UPSTREAM_UNREACHABLE);
    CHECK(res.reply.text == NULL);
    turn_result_free(&res);
    CHECK(tf_count(w, id) == 0);
    CHECK(tf_exists(&rf, id, "lock") == 0);
    CHECK(tf_exists(&rf, id, "idem") == 0);
    CHECK(tf_exists(&rf, id, "messages") == 0);
    tf_stop(&rf, w);
    llm_global_cleanup();
}

typedef struct stream_sink {
    char text[1024];
    int starts, deltas;
} stream_sink;

static void on_start(void *arg, const char *model) {
    (void)model;
    ((stream_sink *)arg)->starts++;
}

static int on_delta(void *arg, const char *t, size_t len) {
    stream_sink *s = arg;
    size_t l = strlen(s->text);
    snprintf(s->text + l, sizeof(s->text) - l, "%.*s", (int)len, t);
    s->deltas++;
    return CTXD_OK;
}

TEST(test_turn_run_streams_deltas) {
    redis_fixture rf;
    tf_start(&rf);
    ctxd_worker *w = tf_worker(&rf);
    char id[UTIL_UUID_LEN + 1];
    CHECK(tf_create(w, id, NULL, -1, -1) == CTXD_OK);
    stream_sink sink = {.text = ""};
    turn_request req = {.context_id = id,
                        .message = "stream it",
                        .message_len = 9,
                        .on_start = on_start,
                        .on_delta = on_delta,
                        .stream_arg = &sink};
    turn_result res;
    CHECK(turn_run(w, &req, &res) == CTXD_OK);
    CHECK(res.started == 1 && sink.starts == 1 && sink.deltas > 1);
    CHECK_STR(sink.text, res.reply.text);
    CHECK(tf_count(w, id) == 2);
    turn_result_free(&res);
    tf_stop(&rf, w);
}

TEST(test_turn_run_summarize_folds_old_units) {
    redis_fixture rf;
    tf_start(&rf);
    ctxd_worker *w = tf_worker(&rf);
    char id[UTIL_UUID_LEN + 1], msg[32];
    /* Units of ~45 tokens (an echo reply is ~40): two fit in 120, three do not. */
    CHECK(tf_create(w, id, "summarize", 120, -1) == CTXD_OK);
    turn_result res;
    for (int i = 1; i <= 4; i++) {
        snprintf(msg, sizeof(msg), "turn %d", i);
        CHECK(tf_turn(w, id, msg, NULL, 0, &res) == CTXD_OK);
        turn_result_free(&res);
    }
    store_context c;
    ctxd_error e;
    CHECK(context_read(w, id, 0, 0, 0, &c, &e) == CTXD_OK);
    CHECK(c.total_messages == 8); /* folded messages stay in the history */
    CHECK(c.summary_upto >= 2 && c.summary_upto % 2 == 0 && c.summary_upto < 8);
    CHECK(strstr(c.summary, "[seq 1] user: turn 1") != NULL);
    CHECK(strstr(c.summary, "[seq 2] assistant: Acknowledged: 'turn 1'") != NULL);
    CHECK(c.summary_tokens > 0);
    if (c.summary_upto < 2) fprintf(stderr, "  summary_upto %" PRId64 "\n", c.summary_upto);
    store_context_free(&c);
    CHECK(tf_exists(&rf, id, "lock") == 0);
    tf_stop(&rf, w);
}

TEST_MAIN(T(test_turn_run_stores_user_message_and_reply),
          T(test_turn_run_idem_replay_same_fingerprint),
          T(test_turn_run_idem_key_other_fingerprint), T(test_turn_run_missing_context_not_found),
          T(test_turn_run_busy_after_lock_wait), T(test_turn_run_context_full),
          T(test_turn_run_prompt_too_large), T(test_turn_run_upstream_unreachable_stores_nothing),
          T(test_turn_run_streams_deltas), T(test_turn_run_summarize_folds_old_units))
