/* test_turn_append.c: appends without a model call, under the lock and idempotency. */
#include "turn_fixture.h"

#include "../test.h"

static char arena[4096];

static const char *const roles[] = {"user", "assistant", "user"};
static const char *const contents[] = {"what is 2+2?", "4", "thanks"};
static const size_t lens[] = {12, 1, 6};

/* Append the first n of the messages above, from offset from. */
static int append(ctxd_worker *w, const char *id, size_t from, size_t n, const char *idem_key,
                  uint64_t fp, turn_result *res) {
    turn_append_request req = {.context_id = id,
                               .roles = roles + from,
                               .contents = contents + from,
                               .content_lens = lens + from,
                               .n = n,
                               .idem_key = idem_key,
                               .fingerprint = fp};
    return turn_append(w, &req, res);
}

TEST(test_turn_append_appends_messages) {
    redis_fixture rf;
    tf_start(&rf);
    ctxd_worker *w = tf_worker(&rf);
    char id[UTIL_UUID_LEN + 1];
    CHECK(tf_create(w, id, NULL, -1, -1) == CTXD_OK);
    turn_result res;
    CHECK(append(w, id, 0, 2, NULL, 0, &res) == CTXD_OK);
    CHECK(res.appended == 2 && res.first_seq == 1 && !res.replayed);
    CHECK(res.reply.text == NULL);
    turn_result_free(&res);
    CHECK(append(w, id, 2, 1, NULL, 0, &res) == CTXD_OK);
    CHECK(res.appended == 1 && res.first_seq == 3);
    turn_result_free(&res);
    CHECK(tf_count(w, id) == 3);
    for (size_t i = 0; i < 3; i++) {
        message m;
        CHECK(tf_message(w, id, i, &m, arena, sizeof(arena)) == CTXD_OK);
        CHECK(m.seq == (int64_t)i + 1);
        CHECK_STR(m.role, roles[i]);
        CHECK(m.content_len == lens[i] && !memcmp(m.content, contents[i], lens[i]));
        CHECK(m.tokens == message_tokens(lens[i]));
    }
    CHECK(tf_exists(&rf, id, "lock") == 0);

    /* A turn after appends sees them as history. */
    CHECK(tf_turn(w, id, "and 3+3?", NULL, 0, &res) == CTXD_OK);
    CHECK(res.reply.text && strstr(res.reply.text, "2 earlier turns") != NULL);
    turn_result_free(&res);
    tf_stop(&rf, w);
}

TEST(test_turn_append_replays_same_key) {
    redis_fixture rf;
    tf_start(&rf);
    ctxd_worker *w = tf_worker(&rf);
    char id[UTIL_UUID_LEN + 1];
    CHECK(tf_create(w, id, NULL, -1, -1) == CTXD_OK);
    turn_result res;
    CHECK(append(w, id, 0, 2, "key-a", 9, &res) == CTXD_OK);
    turn_result_free(&res);
    CHECK(append(w, id, 2, 1, NULL, 0, &res) == CTXD_OK); /* history moves on */
    turn_result_free(&res);
    CHECK(append(w, id, 0, 2, "key-a", 9, &res) == CTXD_OK);
    CHECK(res.replayed == 1 && res.appended == 2 && res.first_seq == 1);
    turn_result_free(&res);
    CHECK(tf_count(w, id) == 3);

    CHECK(append(w, id, 0, 1, "key-a", 10, &res) == CTXD_ERR);
    CHECK(res.error.err == CTXD_E_IDEM_KEY_REUSED && !res.replayed);
    turn_result_free(&res);
    CHECK(tf_count(w, id) == 3);
    CHECK(tf_exists(&rf, id, "lock") == 0);
    tf_stop(&rf, w);
}

TEST(test_turn_append_context_full) {
    redis_fixture rf;
    tf_start(&rf);
    rf.cfg.max_messages = 3;
    ctxd_worker *w = tf_worker(&rf);
    char id[UTIL_UUID_LEN + 1];
    CHECK(tf_create(w, id, NULL, -1, -1) == CTXD_OK);
    turn_result res;
    CHECK(append(w, id, 0, 2, NULL, 0, &res) == CTXD_OK);
    turn_result_free(&res);
    CHECK(append(w, id, 0, 2, "key-b", 1, &res) == CTXD_ERR);
    CHECK(res.error.err == CTXD_E_CONTEXT_FULL);
    turn_result_free(&res);
    CHECK(tf_count(w, id) == 2);
    CHECK(tf_exists(&rf, id, "lock") == 0);
    CHECK(tf_exists(&rf, id, "idem") == 0);
    CHECK(append(w, id, 2, 1, NULL, 0, &res) == CTXD_OK); /* exactly full */
    turn_result_free(&res);
    CHECK(tf_count(w, id) == 3);
    tf_stop(&rf, w);
}

TEST(test_turn_append_missing_context_not_found) {
    redis_fixture rf;
    tf_start(&rf);
    ctxd_worker *w = tf_worker(&rf);
    char id[UTIL_UUID_LEN + 1];
    CHECK(util_uuid4(id) == CTXD_OK);
    turn_result res;
    CHECK(append(w, id, 0, 2, "key-c", 1, &res) == CTXD_ERR);
    CHECK(res.error.err == CTXD_E_NOT_FOUND);
    turn_result_free(&res);
    CHECK(rf_count_keys(&rf, "*") == 0);
    tf_stop(&rf, w);
}

TEST(test_turn_append_busy_after_lock_wait) {
    redis_fixture rf;
    tf_start(&rf);
    rf.cfg.lock_wait_ms = 50;
    ctxd_worker *w = tf_worker(&rf);
    char id[UTIL_UUID_LEN + 1], who[64];
    CHECK(tf_create(w, id, NULL, -1, -1) == CTXD_OK);
    tf_hold_lock(&rf, id, "someone-else", 60000);
    turn_result res;
    CHECK(append(w, id, 0, 2, NULL, 0, &res) == CTXD_ERR);
    CHECK(res.error.err == CTXD_E_BUSY);
    turn_result_free(&res);
    CHECK(tf_count(w, id) == 0);
    rf_str(&rf, who, sizeof(who), "GET ctxd:{%s}:lock", id);
    CHECK_STR(who, "someone-else");
    tf_stop(&rf, w);
}

TEST_MAIN(T(test_turn_append_appends_messages), T(test_turn_append_replays_same_key),
          T(test_turn_append_context_full), T(test_turn_append_missing_context_not_found),
          T(test_turn_append_busy_after_lock_wait))
