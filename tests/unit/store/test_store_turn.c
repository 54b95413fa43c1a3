/* test_store_turn.c: the turn lock, appends, idempotency records, windows, summaries. */
#include "store_fixture.h"
#include "../../../src/store/store_int.h"

#include "../test.h"

/* Who holds the lock of id ("" when nobody). */
static const char *holder(redis_fixture *rf, const char *id, char out[64]) {
    char k[128];
    rf_str(rf, out, 64, "GET %s", sf_key(k, sizeof(k), id, "lock"));
    return out;
}

static long long llen(redis_fixture *rf, const char *id) {
    char k[128];
    return rf_int(rf, "LLEN %s", sf_key(k, sizeof(k), id, "messages"));
}

/* Take the lock for token (append mode); returns next_seq or -1. */
static int64_t lock_for(store *s, const char *id, const char *token) {
    return sf_lock(s, id, token, STORE_TURN_APPEND);
}

/* An append of one user message "hi" at seq under token. */
static store_append_req append_req(const char *id, const char *token, int64_t seq,
                                   store_blob *msg) {
    *msg = sf_message(seq, "user", "hi", 5);
    store_append_req r = {.id = id,
                          .token = token,
                          .expected_next_seq = seq,
                          .now_ms = SF_NOW,
                          .messages = msg,
                          .n_messages = 1,
                          .max_messages = SF_HARD_CAP};
    return r;
}

TEST(test_store_turn_read_takes_lock) {
    redis_fixture rf;
    store *s = sf_start(&rf);
    char id[UTIL_UUID_LEN + 1], k[128], who[64];
    store_settings st = sf_settings("all", 1000, 0);
    CHECK(sf_create(s, id, &st) == CTXD_OK);
    CHECK(sf_append(s, id, 2, 5) == CTXD_OK);
    store_context c;
    CHECK(store_turn_read(s, id, "tokA", 5000, NULL, STORE_TURN_WINDOW, 5, 10, NULL, &c) ==
          CTXD_OK);
    CHECK(c.next_seq == 3 && c.total_messages == 2 && c.n_messages == 2);
    CHECK(c.window_start_seq == 1 && c.n_fold == 0 && c.idem_record.data == NULL);
    store_context_free(&c);
    CHECK_STR(holder(&rf, id, who), "tokA");
    long long pttl = rf_int(&rf, "PTTL %s", sf_key(k, sizeof(k), id, "lock"));
    CHECK(pttl > 4000 && pttl <= 5000);

    CHECK(store_turn_read(s, id, "tokB", 5000, NULL, STORE_TURN_WINDOW, 5, 10, NULL, &c) ==
          CTXD_ERR);
    CHECK(s->err == CTXD_E_BUSY);
    CHECK_STR(holder(&rf, id, who), "tokA");
    /* The owner may read again in the same turn. */
    CHECK(store_turn_read(s, id, "tokA", 5000, NULL, STORE_TURN_APPEND, 0, 0, NULL, &c) == CTXD_OK);
    CHECK(c.n_messages == 0 && c.total_messages == 2); /* append mode: settings only */
    store_context_free(&c);
    sf_stop(&rf, s);
}

TEST(test_store_turn_read_missing_not_found) {
    redis_fixture rf;
    store *s = sf_start(&rf);
    char id[UTIL_UUID_LEN + 1];
    store_context c;
    CHECK(util_uuid4(id) == CTXD_OK);
    CHECK(store_turn_read(s, id, "tokA", 5000, "k", STORE_TURN_WINDOW, 5, 10, NULL, &c) ==
          CTXD_ERR);
    CHECK(s->err == CTXD_E_NOT_FOUND);
    CHECK(rf_count_keys(&rf, "*") == 0); /* no lock taken */
    sf_stop(&rf, s);
}

TEST(test_store_turn_lock_renew_only_by_owner) {
    redis_fixture rf;
    store *s = sf_start(&rf);
    char id[UTIL_UUID_LEN + 1], k[128];
    store_settings st = sf_settings("all", 1000, 0);
    store_context c;
    CHECK(sf_create(s, id, &st) == CTXD_OK);
    CHECK(store_turn_read(s, id, "tokA", 1000, NULL, STORE_TURN_APPEND, 0, 0, NULL, &c) == CTXD_OK);
    store_context_free(&c);
    sf_key(k, sizeof(k), id, "lock");
    CHECK(store_lock_renew(s, id, "tokB", 60000) == CTXD_ERR);
    CHECK(s->err == CTXD_E_LOCK_LOST);
    CHECK(rf_int(&rf, "PTTL %s", k) <= 1000);
    CHECK(store_lock_renew(s, id, "tokA", 60000) == CTXD_OK);
    CHECK(rf_int(&rf, "PTTL %s", k) > 50000);
    /* Once it is gone, the owner has lost it too. */
    CHECK(rf_int(&rf, "DEL %s", k) == 1);
    CHECK(store_lock_renew(s, id, "tokA", 60000) == CTXD_ERR);
    CHECK(s->err == CTXD_E_LOCK_LOST);
    CHECK(rf_int(&rf, "EXISTS %s", k) == 0);
    sf_stop(&rf, s);
}

TEST(test_store_turn_lock_release_only_by_owner) {
    redis_fixture rf;
    store *s = sf_start(&rf);
    char id[UTIL_UUID_LEN + 1], who[64];
    store_settings st = sf_settings("all", 1000, 0);
    CHECK(sf_create(s, id, &st) == CTXD_OK);
    CHECK(lock_for(s, id, "tokA") == 1);
    CHECK(store_lock_release(s, id, "tokB") == CTXD_OK); /* not an error, but a no-op */
    CHECK_STR(holder(&rf, id, who), "tokA");
    CHECK(lock_for(s, id, "tokB") == -1 && s->err == CTXD_E_BUSY);
    CHECK(store_lock_release(s, id, "tokA") == CTXD_OK);
    CHECK_STR(holder(&rf, id, who), "");
    CHECK(lock_for(s, id, "tokB") == 1);
    CHECK_STR(holder(&rf, id, who), "tokB");
    sf_stop(&rf, s);
}

TEST(test_store_turn_append_commits_and_releases) {
    redis_fixture rf;
    store *s = sf_start(&rf);
    char id[UTIL_UUID_LEN + 1], who[64], text[32];
    store_settings st = sf_settings("all", 1000, 0);
    CHECK(sf_create(s, id, &st) == CTXD_OK);
    CHECK(lock_for(s, id, "tokA") == 1);
    store_blob m[2] = {sf_message(1, "user", "question", 6),
                       sf_message(2, "assistant", "answer", 7)};
    store_append_req req = {.id = id,
                            .token = "tokA",
                            .expected_next_seq = 1,
                            .now_ms = SF_NOW + 3000,
                            .messages = m,
                            .n_messages = 2,
                            .max_messages = SF_HARD_CAP,
                            .prompt_sig = "1:0:3:abcd",
                            .prompt_tokens = 42};
    CHECK(store_append(s, &req) == CTXD_OK);
    sf_blobs_free(m, 2);
    CHECK_STR(holder(&rf, id, who), "");
    char score[32], bucket[STORE_KEY_LEN];
    store_key_index_bucket("default", store_index_bucket(id), bucket);
    rf_str(&rf, score, sizeof(score), "ZSCORE %s %s", bucket, id);
    CHECK(strtoll(score, NULL, 10) == SF_NOW + 3000);

    store_context c;
    CHECK(store_read(s, id, STORE_READ_MESSAGES, 0, 0, &c) == CTXD_OK);
    CHECK(c.next_seq == 3 && c.total_messages == 2 && c.n_messages == 2);
    if (c.n_messages == 2) {
        CHECK_STR(sf_content(&c.messages[0], text, sizeof(text)), "question");
        CHECK_STR(sf_content(&c.messages[1], text, sizeof(text)), "answer");
    }
    CHECK_STR(c.prompt_sig, "1:0:3:abcd");
    CHECK(c.prompt_tokens == 42);
    store_context_free(&c);

    /* An append without prompt figures leaves the last turn's. */
    CHECK(sf_append(s, id, 1, 5) == CTXD_OK);
    CHECK(store_read(s, id, 0, 0, 0, &c) == CTXD_OK);
    CHECK(c.next_seq == 4);
    CHECK_STR(c.prompt_sig, "1:0:3:abcd");
    CHECK(c.prompt_tokens == 42);
    store_context_free(&c);
    sf_stop(&rf, s);
}

TEST(test_store_turn_append_wrong_seq_conflict) {
    redis_fixture rf;
    store *s = sf_start(&rf);
    char id[UTIL_UUID_LEN + 1], who[64];
    store_settings st = sf_settings("all", 1000, 0);
    store_blob m;
    CHECK(sf_create(s, id, &st) == CTXD_OK);
    CHECK(lock_for(s, id, "tokA") == 1);
    store_append_req req = append_req(id, "tokA", 2, &m);
    req.idem_key = "k1";
    req.idem_record = sf_blob("99999999999999 rec");
    req.idem_ttl_s = 60;
    CHECK(store_append(s, &req) == CTXD_ERR);
    CHECK(s->err == CTXD_E_CONFLICT);
    free(m.data);
    CHECK(llen(&rf, id) == 0);
    CHECK(rf_count_keys(&rf, "ctxd:{*}:idem") == 0);
    CHECK_STR(holder(&rf, id, who), ""); /* released: the token owned it */
    store_context c;
    CHECK(store_read(s, id, 0, 0, 0, &c) == CTXD_OK);
    CHECK(c.next_seq == 1);
    store_context_free(&c);
    sf_stop(&rf, s);
}

TEST(test_store_turn_append_after_lock_lost) {
    redis_fixture rf;
    store *s = sf_start(&rf);
    char id[UTIL_UUID_LEN + 1], who[64], k[128];
    store_settings st = sf_settings("all", 1000, 0);
    store_blob m;
    CHECK(sf_create(s, id, &st) == CTXD_OK);
    CHECK(lock_for(s, id, "tokA") == 1);
    store_append_req req = append_req(id, "tokA", 1, &m);
    /* It expired and another turn took it. */
    redisReply *r = rf_cmd(&rf, "SET %s tokB PX 60000", sf_key(k, sizeof(k), id, "lock"));
    if (r) freeReplyObject(r);
    CHECK(store_append(s, &req) == CTXD_ERR);
    CHECK(s->err == CTXD_E_LOCK_LOST);
    CHECK(llen(&rf, id) == 0);
    CHECK_STR(holder(&rf, id, who), "tokB"); /* not ours to release */
    /* It expired and nobody holds it. */
    CHECK(rf_int(&rf, "DEL %s", k) == 1);
    CHECK(store_append(s, &req) == CTXD_ERR);
    CHECK(s->err == CTXD_E_LOCK_LOST);
    CHECK(llen(&rf, id) == 0);
    free(m.data);
    sf_stop(&rf, s);
}

TEST(test_store_turn_append_missing_context_not_found) {
    redis_fixture rf;
    store *s = sf_start(&rf);
    char id[UTIL_UUID_LEN + 1], who[64];
    store_settings st = sf_settings("all", 1000, 0);
    store_blob m;
    int deleted;
    CHECK(sf_create(s, id, &st) == CTXD_OK);
    CHECK(lock_for(s, id, "tokA") == 1);
    CHECK(store_delete(s, id, &deleted) == CTXD_OK);
    store_append_req req = append_req(id, "tokA", 1, &m);
    CHECK(store_append(s, &req) == CTXD_ERR);
    CHECK(s->err == CTXD_E_NOT_FOUND);
    free(m.data);
    CHECK(rf_count_keys(&rf, "*") == 0);
    CHECK_STR(holder(&rf, id, who), "");
    sf_stop(&rf, s);
}

TEST(test_store_turn_idem_record_replayed_without_lock) {
    redis_fixture rf;
    store *s = sf_start(&rf);
    char id[UTIL_UUID_LEN + 1], who[64], rec[80], k[128];
    store_settings st = sf_settings("all", 1000, 0);
    store_blob m;
    CHECK(sf_create(s, id, &st) == CTXD_OK);
    CHECK(lock_for(s, id, "tokA") == 1);
    /* The store reads only the leading expiry; the rest is opaque bytes. */
    int n = snprintf(rec, sizeof(rec), "%" PRId64 " opaque", util_now_ms() + 60000);
    memcpy(rec + n, "\0tail", 5);
    store_append_req req = append_req(id, "tokA", 1, &m);
    req.idem_key = "key-1";
    req.idem_record.data = rec;
    req.idem_record.len = (size_t)n + 5;
    req.idem_ttl_s = 120;
    CHECK(store_append(s, &req) == CTXD_OK);
    free(m.data);
    long long ttl = rf_int(&rf, "TTL %s", sf_key(k, sizeof(k), id, "idem"));
    CHECK(ttl > 110 && ttl <= 120);

    store_context c;
    CHECK(store_turn_read(s, id, "tokB", 5000, "key-1", STORE_TURN_WINDOW, 5, 10, NULL, &c) ==
          CTXD_OK);
    CHECK(c.idem_record.data != NULL && c.idem_record.len == (size_t)n + 5);
    if (c.idem_record.data) CHECK(!memcmp(c.idem_record.data, rec, (size_t)n + 5));
    store_context_free(&c);
    CHECK(rf_int(&rf, "EXISTS %s", sf_key(k, sizeof(k), id, "lock")) == 0);

    /* Even while another turn holds the lock, the answer comes back. */
    CHECK(lock_for(s, id, "tokC") == 2);
    CHECK(store_turn_read(s, id, "tokB", 5000, "key-1", STORE_TURN_APPEND, 0, 0, NULL, &c) ==
          CTXD_OK);
    CHECK(c.idem_record.data != NULL);
    store_context_free(&c);
    CHECK_STR(holder(&rf, id, who), "tokC");

    /* Another key has no record: the lock is asked for as usual. */
    CHECK(store_turn_read(s, id, "tokB", 5000, "key-2", STORE_TURN_APPEND, 0, 0, NULL, &c) ==
          CTXD_ERR);
    CHECK(s->err == CTXD_E_BUSY);
    sf_stop(&rf, s);
}

TEST(test_store_turn_idem_record_expired_ignored) {
    redis_fixture rf;
    store *s = sf_start(&rf);
    char id[UTIL_UUID_LEN + 1], who[64], rec[64];
    store_settings st = sf_settings("all", 1000, 0);
    store_blob m;
    CHECK(sf_create(s, id, &st) == CTXD_OK);
    CHECK(lock_for(s, id, "tokA") == 1);
    snprintf(rec, sizeof(rec), "%" PRId64 " stale", util_now_ms() - 1);
    store_append_req req = append_req(id, "tokA", 1, &m);
    req.idem_key = "key-1";
    req.idem_record = sf_blob(rec);
    req.idem_ttl_s = 120;
    CHECK(store_append(s, &req) == CTXD_OK);
    free(m.data);

    store_context c;
    CHECK(store_turn_read(s, id, "tokB", 5000, "key-1", STORE_TURN_WINDOW, 5, 10, NULL, &c) ==
          CTXD_OK);
    CHECK(c.idem_record.data == NULL);
    CHECK(c.n_messages == 1);
    store_context_free(&c);
    CHECK_STR(holder(&rf, id, who), "tokB");
    sf_stop(&rf, s);
}

TEST(test_store_turn_append_prunes_expired_idem_records) {
    redis_fixture rf;
    store *s = sf_start(&rf);
    char id[UTIL_UUID_LEN + 1], k[128], rec[64];
    store_settings st = sf_settings("all", 1000, 0);
    store_blob m;
    CHECK(sf_create(s, id, &st) == CTXD_OK);
    /* 1023 expired records and a live one: the hash is at its limit. */
    sf_key(k, sizeof(k), id, "idem");
    redisReply *r = rf_cmd(&rf, "EVAL %s 1 %s %s",
                           "for i = 1, 1023 do redis.call('HSET', KEYS[1], 'old' .. i, '5 x') end "
                           "redis.call('HSET', KEYS[1], 'live', ARGV[1] .. ' y') return 1",
                           k, "99999999999999");
    if (r) freeReplyObject(r);
    CHECK(rf_int(&rf, "HLEN %s", k) == 1024);
    CHECK(lock_for(s, id, "tokA") == 1);
    snprintf(rec, sizeof(rec), "%" PRId64 " new", util_now_ms() + 60000);
    store_append_req req = append_req(id, "tokA", 1, &m);
    req.idem_key = "key-new";
    req.idem_record = sf_blob(rec);
    req.idem_ttl_s = 120;
    CHECK(store_append(s, &req) == CTXD_OK);
    free(m.data);
    CHECK(rf_int(&rf, "HLEN %s", k) == 2);
    CHECK(rf_int(&rf, "HEXISTS %s live", k) == 1);
    CHECK(rf_int(&rf, "HEXISTS %s key-new", k) == 1);
    sf_stop(&rf, s);
}

TEST(test_store_turn_append_hard_cap_context_full) {
    redis_fixture rf;
    store *s = sf_start(&rf);
    char id[UTIL_UUID_LEN + 1], who[64];
    store_settings st = sf_settings("all", 1000, 0);
    CHECK(sf_create(s, id, &st) == CTXD_OK);
    store_blob m[2] = {sf_message(1, "user", "a", 5), sf_message(2, "assistant", "b", 5)};
    store_append_req req = {.id = id,
                            .token = "tokA",
                            .expected_next_seq = 1,
                            .now_ms = SF_NOW,
                            .messages = m,
                            .n_messages = 2,
                            .max_messages = 3};
    CHECK(lock_for(s, id, "tokA") == 1);
    CHECK(store_append(s, &req) == CTXD_OK); /* 2 <= 3 */
    CHECK(lock_for(s, id, "tokA") == 3);
    req.expected_next_seq = 3;
    CHECK(store_append(s, &req) == CTXD_ERR); /* 4 > 3 */
    CHECK(s->err == CTXD_E_CONTEXT_FULL);
    CHECK(llen(&rf, id) == 2);
    CHECK_STR(holder(&rf, id, who), "");
    /* One more still fits. */
    CHECK(lock_for(s, id, "tokA") == 3);
    req.n_messages = 1;
    CHECK(store_append(s, &req) == CTXD_OK);
    CHECK(llen(&rf, id) == 3);
    sf_blobs_free(m, 2);
    sf_stop(&rf, s);
}

TEST(test_store_turn_append_trims_to_max_messages_whole_units) {
    redis_fixture rf;
    store *s = sf_start(&rf);
    char id[UTIL_UUID_LEN + 1], text[16];
    /* Keep 3: u1 a1 u2 a2 loses u1 and then a1, which has no question. */
    store_settings st = sf_settings("all", 1000, 3);
    CHECK(sf_create(s, id, &st) == CTXD_OK);
    CHECK(sf_append(s, id, 4, 5) == CTXD_OK);
    store_context c;
    CHECK(store_read(s, id, STORE_READ_MESSAGES, 0, 0, &c) == CTXD_OK);
    CHECK(c.total_messages == 2 && c.first_seq == 3 && c.next_seq == 5);
    CHECK(c.n_messages == 2);
    if (c.n_messages == 2) {
        CHECK_STR(sf_content(&c.messages[0], text, sizeof(text)), "m3");
        CHECK_STR(sf_content(&c.messages[1], text, sizeof(text)), "m4");
    }
    store_context_free(&c);
    /* Paging counts seqs from first_seq. */
    CHECK(store_read(s, id, STORE_READ_MESSAGES, 1, 0, &c) == CTXD_OK);
    CHECK(c.n_messages == 1 && c.has_more && c.next_before == 4);
    store_context_free(&c);
    CHECK(store_read(s, id, STORE_READ_MESSAGES, 1, 4, &c) == CTXD_OK);
    CHECK(c.n_messages == 1 && sf_seq(&c.messages[0]) == 3 && !c.has_more);
    store_context_free(&c);
    /* A context that trims is never full: the hard cap does not apply. */
    char token[33];
    CHECK(util_token(token) == CTXD_OK);
    CHECK(lock_for(s, id, token) == 5);
    store_blob m[2] = {sf_message(5, "user", "m5", 5), sf_message(6, "assistant", "m6", 5)};
    store_append_req req = {.id = id,
                            .token = token,
                            .expected_next_seq = 5,
                            .now_ms = SF_NOW,
                            .messages = m,
                            .n_messages = 2,
                            .max_messages = 2};
    CHECK(store_append(s, &req) == CTXD_OK);
    sf_blobs_free(m, 2);
    CHECK(llen(&rf, id) == 2);
    sf_stop(&rf, s);
}

/* A window read of six messages of 10 tokens each (three units) with the
 * new message at 5 tokens: the seqs it returns and where the window starts. */
static void check_window(const char *strategy, const char *system, int64_t max_tokens,
                         int64_t want_first, int64_t want_start) {
    redis_fixture rf;
    store *s = sf_start(&rf);
    char id[UTIL_UUID_LEN + 1];
    store_settings st = sf_settings(strategy, max_tokens, 0);
    st.system = system;
    CHECK(sf_create(s, id, &st) == CTXD_OK);
    CHECK(sf_append(s, id, 6, 10) == CTXD_OK);
    store_context c;
    CHECK(store_turn_read(s, id, "tokA", 5000, NULL, STORE_TURN_WINDOW, 5, 10, NULL, &c) ==
          CTXD_OK);
    size_t want_n = (size_t)(7 - want_first);
    CHECK(c.n_messages == want_n);
    for (size_t i = 0; i < c.n_messages && i < want_n; i++)
        CHECK(sf_seq(&c.messages[i]) == want_first + (int64_t)i);
    CHECK(c.window_start_seq == want_start);
    CHECK(c.total_messages == 6 && c.n_fold == 0);
    if (c.n_messages != want_n || c.window_start_seq != want_start)
        fprintf(stderr, "  %s max %" PRId64 ": %zu messages from %" PRId64 "\n", strategy,
                max_tokens, c.n_messages, c.window_start_seq);
    store_context_free(&c);
    sf_stop(&rf, s);
}

TEST(test_store_turn_append_trim_without_a_user_message_keeps_history) {
    redis_fixture rf;
    store *s = sf_start(&rf);
    char id[UTIL_UUID_LEN + 1], token[33], text[16];
    /* Keep 3: u1 a1, then two assistant messages; the newest three hold no
     * user message, and trimming must not empty the history. */
    store_settings st = sf_settings("all", 1000, 3);
    CHECK(sf_create(s, id, &st) == CTXD_OK);
    CHECK(sf_append(s, id, 2, 5) == CTXD_OK);
    CHECK(util_token(token) == CTXD_OK);
    CHECK(lock_for(s, id, token) == 3);
    store_blob m[2] = {sf_message(3, "assistant", "m3", 5), sf_message(4, "assistant", "m4", 5)};
    store_append_req req = {.id = id,
                            .token = token,
                            .expected_next_seq = 3,
                            .now_ms = SF_NOW,
                            .messages = m,
                            .n_messages = 2,
                            .max_messages = SF_HARD_CAP};
    CHECK(store_append(s, &req) == CTXD_OK);
    sf_blobs_free(m, 2);
    store_context c;
    CHECK(store_read(s, id, STORE_READ_MESSAGES, 0, 0, &c) == CTXD_OK);
    CHECK(c.n_messages == 3 && c.first_seq == 2 && c.next_seq == 5);
    if (c.n_messages == 3) CHECK_STR(sf_content(&c.messages[2], text, sizeof(text)), "m4");
    store_context_free(&c);
    sf_stop(&rf, s);
}

TEST(test_store_turn_window_whole_units_that_fit) {
    check_window("window", "", 45, 3, 3); /* budget 40: two units of 20 */
    check_window("window", "", 44, 5, 5); /* budget 39: one */
    check_window("window", "", 64, 3, 3); /* 59: not quite three */
    check_window("window", "", 65, 1, 1); /* 60: all three */
    check_window("window", "", 24, 7, 7); /* 19: not even the newest unit */
    check_window("all", "", 10, 1, 1);    /* all: everything, whatever the budget */
}

/* Messages stored by ctxd 0.4 (tokens after the content, so no prefix for
 * the scripts to read) get the same window: the scripts decode them. */
TEST(test_store_turn_window_reads_messages_of_0_4) {
    redis_fixture rf;
    store *s = sf_start(&rf);
    char id[UTIL_UUID_LEN + 1], k[128], m[160];
    store_settings st = sf_settings("window", 45, 0);
    CHECK(sf_create(s, id, &st) == CTXD_OK);
    for (int q = 1; q <= 6; q++) {
        snprintf(m, sizeof(m),
                 "{\"seq\":%d,\"role\":\"%s\",\"content\":\"m%d\","
                 "\"created_at\":\"2026-01-01T00:00:00Z\",\"tokens\":10}",
                 q, q % 2 ? "user" : "assistant", q);
        CHECK(rf_int(&rf, "RPUSH %s %s", sf_key(k, sizeof(k), id, "messages"), m) == q);
    }
    rf_int(&rf, "HSET %s next_seq 7", sf_key(k, sizeof(k), id, "meta"));
    store_context c;
    CHECK(store_turn_read(s, id, "tokA", 5000, NULL, STORE_TURN_WINDOW, 5, 10, NULL, &c) ==
          CTXD_OK);
    /* Budget 40: the two newest units of 20. */
    CHECK(c.n_messages == 4 && c.window_start_seq == 3);
    if (c.n_messages == 4) CHECK(sf_seq(&c.messages[0]) == 3 && sf_seq(&c.messages[3]) == 6);
    store_context_free(&c);
    sf_stop(&rf, s);
}

TEST(test_store_turn_window_counts_system_prompt) {
    /* 40 bytes of system prompt are 10 tokens: 55 - 5 - 10 leaves 40. */
    const char *sys = "0123456789012345678901234567890123456789";
    check_window("window", sys, 55, 3, 3);
    check_window("window", sys, 54, 5, 5);
}

TEST(test_store_turn_summarize_fold_and_summary) {
    redis_fixture rf;
    store *s = sf_start(&rf);
    char id[UTIL_UUID_LEN + 1];
    store_settings st = sf_settings("summarize", 45, 0);
    CHECK(sf_create(s, id, &st) == CTXD_OK);
    CHECK(sf_append(s, id, 6, 10) == CTXD_OK);
    store_context c;
    /* Budget 40: seqs 3..6 in the window, 1..2 left it unsummarized. */
    CHECK(store_turn_read(s, id, "tokA", 5000, NULL, STORE_TURN_WINDOW, 5, 10, NULL, &c) ==
          CTXD_OK);
    CHECK(c.window_start_seq == 3 && c.n_messages == 4 && c.n_fold == 2);
    if (c.n_fold == 2) CHECK(sf_seq(&c.fold[0]) == 1 && sf_seq(&c.fold[1]) == 2);
    store_context_free(&c);
    /* fold_max limits the fold, oldest first. */
    CHECK(store_turn_read(s, id, "tokA", 5000, NULL, STORE_TURN_WINDOW, 5, 1, NULL, &c) == CTXD_OK);
    CHECK(c.n_fold == 1 && sf_seq(&c.fold[0]) == 1);
    store_context_free(&c);

    /* A summary of 1..2 costing 10 tokens: budget 30, one unit; 3..4 next. */
    CHECK(store_set_summary(s, id, 0, 2, "they said hi", 10, SF_NOW) == CTXD_OK);
    CHECK(store_turn_read(s, id, "tokA", 5000, NULL, STORE_TURN_WINDOW, 5, 10, NULL, &c) ==
          CTXD_OK);
    CHECK_STR(c.summary, "they said hi");
    CHECK(c.summary_upto == 2 && c.summary_tokens == 10);
    CHECK(c.window_start_seq == 5 && c.n_messages == 2 && c.n_fold == 2);
    if (c.n_fold == 2) CHECK(sf_seq(&c.fold[0]) == 3 && sf_seq(&c.fold[1]) == 4);
    store_context_free(&c);
    sf_stop(&rf, s);
}

TEST(test_store_turn_set_summary_conflict) {
    redis_fixture rf;
    store *s = sf_start(&rf);
    char id[UTIL_UUID_LEN + 1];
    store_settings st = sf_settings("summarize", 1000, 0);
    CHECK(sf_create(s, id, &st) == CTXD_OK);
    CHECK(store_set_summary(s, id, 0, 4, "first", 3, SF_NOW) == CTXD_OK);
    /* Someone folded meanwhile: a fold from 0 no longer applies. */
    CHECK(store_set_summary(s, id, 0, 6, "stale", 9, SF_NOW) == CTXD_ERR);
    CHECK(s->err == CTXD_E_CONFLICT);
    store_context c;
    CHECK(store_read(s, id, 0, 0, 0, &c) == CTXD_OK);
    CHECK_STR(c.summary, "first");
    CHECK(c.summary_upto == 4 && c.summary_tokens == 3);
    store_context_free(&c);
    CHECK(store_set_summary(s, id, 4, 6, "second", 5, SF_NOW) == CTXD_OK);
    CHECK(store_read(s, id, 0, 0, 0, &c) == CTXD_OK);
    CHECK_STR(c.summary, "second");
    CHECK(c.summary_upto == 6);
    store_context_free(&c);

    char missing[UTIL_UUID_LEN + 1];
    CHECK(util_uuid4(missing) == CTXD_OK);
    CHECK(store_set_summary(s, missing, 0, 2, "x", 1, SF_NOW) == CTXD_ERR);
    CHECK(s->err == CTXD_E_NOT_FOUND);
    sf_stop(&rf, s);
}

TEST_MAIN(T(test_store_turn_read_takes_lock), T(test_store_turn_read_missing_not_found),
          T(test_store_turn_lock_renew_only_by_owner),
          T(test_store_turn_lock_release_only_by_owner),
          T(test_store_turn_append_commits_and_releases),
          T(test_store_turn_append_wrong_seq_conflict), T(test_store_turn_append_after_lock_lost),
          T(test_store_turn_append_missing_context_not_found),
          T(test_store_turn_idem_record_replayed_without_lock),
          T(test_store_turn_idem_record_expired_ignored),
          T(test_store_turn_append_prunes_expired_idem_records),
          T(test_store_turn_append_hard_cap_context_full),
          T(test_store_turn_append_trims_to_max_messages_whole_units),
          T(test_store_turn_append_trim_without_a_user_message_keeps_history),
          T(test_store_turn_window_whole_units_that_fit),
          T(test_store_turn_window_counts_system_prompt),
          T(test_store_turn_window_reads_messages_of_0_4),
          T(test_store_turn_summarize_fold_and_summary), T(test_store_turn_set_summary_conflict))
