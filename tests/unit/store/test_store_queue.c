/* test_store_queue.c: the queue of turns waiting for a context's lock, and their wake-ups. */
#include "store_fixture.h"

#include "../test.h"

#define Q_TTL 5000

/* A context with no messages. */
static void make(store *s, char id[UTIL_UUID_LEN + 1]) {
    store_settings st = sf_settings("all", 1000, 0);
    if (sf_create(s, id, &st)) exit(1);
}

/* Read for token, queueing for ttl_ms: CTXD_OK (the lock is token's) or
 * CTXD_ERR; *ahead (if given) from a busy answer. */
static int try_lock(store *s, const char *id, const char *token, int ttl_ms, int64_t *ahead) {
    store_turn_queue q = {.ttl_ms = ttl_ms, .ahead = -1};
    store_context c;
    int rc = store_turn_read(s, id, token, SF_LOCK_MS, NULL, STORE_TURN_APPEND, 0, 0, &q, &c);
    if (rc == CTXD_OK) store_context_free(&c);
    if (ahead) *ahead = q.ahead;
    return rc;
}

static const char *holder(redis_fixture *rf, const char *id, char out[64]) {
    rf_str(rf, out, 64, "GET ctxd:{%s}:lock", id);
    return out;
}

/* Pending wakes of token's waiter. */
static long long wakes(redis_fixture *rf, const char *id, const char *token) {
    return rf_int(rf, "LLEN ctxd:{%s}:wake:%s", id, token);
}

static long long queued(redis_fixture *rf, const char *id) {
    return rf_int(rf, "LLEN ctxd:{%s}:queue", id);
}

TEST(test_store_queue_first_come_first_served) {
    redis_fixture rf;
    store *s = sf_start(&rf);
    char id[UTIL_UUID_LEN + 1], who[64];
    int64_t ahead;
    make(s, id);
    CHECK(try_lock(s, id, "A", Q_TTL, NULL) == CTXD_OK);
    CHECK(queued(&rf, id) == 0); /* a newcomer to an empty queue takes the lock */
    CHECK(try_lock(s, id, "B", Q_TTL, &ahead) == CTXD_ERR && s->err == CTXD_E_BUSY && ahead == 1);
    CHECK(try_lock(s, id, "C", Q_TTL, &ahead) == CTXD_ERR && ahead == 2);
    CHECK(try_lock(s, id, "D", Q_TTL, &ahead) == CTXD_ERR && ahead == 3);
    /* Looking again keeps the place. */
    CHECK(try_lock(s, id, "C", Q_TTL, &ahead) == CTXD_ERR && ahead == 2);
    CHECK(queued(&rf, id) == 3);

    /* A release passes the lock to the first waiter, out of line, and wakes
     * it only. */
    CHECK(store_lock_release(s, id, "A") == CTXD_OK);
    CHECK(wakes(&rf, id, "B") == 1 && wakes(&rf, id, "C") == 0 && wakes(&rf, id, "D") == 0);
    CHECK_STR(holder(&rf, id, who), "B");
    CHECK(queued(&rf, id) == 2);
    CHECK(try_lock(s, id, "D", Q_TTL, &ahead) == CTXD_ERR && ahead == 2);
    CHECK(try_lock(s, id, "C", Q_TTL, &ahead) == CTXD_ERR && ahead == 1);
    CHECK(try_lock(s, id, "B", Q_TTL, NULL) == CTXD_OK);
    CHECK_STR(holder(&rf, id, who), "B");
    CHECK(wakes(&rf, id, "B") == 0); /* its wake is spent */
    CHECK(queued(&rf, id) == 2);

    /* The lock goes on in arrival order, through appends too. */
    store_blob m = sf_message(1, "user", "hi", 5);
    store_append_req req = {.id = id,
                            .token = "B",
                            .expected_next_seq = 1,
                            .now_ms = SF_NOW,
                            .messages = &m,
                            .n_messages = 1,
                            .max_messages = SF_HARD_CAP};
    CHECK(store_append(s, &req) == CTXD_OK);
    free(m.data);
    CHECK(wakes(&rf, id, "C") == 1 && wakes(&rf, id, "D") == 0);
    CHECK(try_lock(s, id, "D", Q_TTL, NULL) == CTXD_ERR);
    CHECK(try_lock(s, id, "C", Q_TTL, NULL) == CTXD_OK);
    CHECK(store_lock_release(s, id, "C") == CTXD_OK);
    CHECK(try_lock(s, id, "D", Q_TTL, NULL) == CTXD_OK);
    CHECK(rf_int(&rf, "EXISTS ctxd:{%s}:queue", id) == 0);
    sf_stop(&rf, s);
}

TEST(test_store_queue_no_cutting_in) {
    redis_fixture rf;
    store *s = sf_start(&rf);
    char id[UTIL_UUID_LEN + 1], who[64];
    int64_t ahead;
    make(s, id);
    CHECK(try_lock(s, id, "A", Q_TTL, NULL) == CTXD_OK);
    CHECK(try_lock(s, id, "B", Q_TTL, NULL) == CTXD_ERR);
    CHECK(store_lock_release(s, id, "A") == CTXD_OK);
    /* The lock passed to B, who came first (it is never free while a turn
     * waits): a newcomer queues behind it, and one that does not queue (q
     * NULL, or ttl 0) is refused. */
    CHECK(try_lock(s, id, "C", Q_TTL, &ahead) == CTXD_ERR && s->err == CTXD_E_BUSY && ahead == 1);
    CHECK(try_lock(s, id, "E", 0, &ahead) == CTXD_ERR && s->err == CTXD_E_BUSY && ahead == 2);
    store_context c;
    CHECK(store_turn_read(s, id, "F", SF_LOCK_MS, NULL, STORE_TURN_APPEND, 0, 0, NULL, &c) ==
          CTXD_ERR);
    CHECK(s->err == CTXD_E_BUSY && queued(&rf, id) == 1);
    CHECK_STR(holder(&rf, id, who), "B");
    CHECK(try_lock(s, id, "B", Q_TTL, NULL) == CTXD_OK);
    /* The holder reads again in its turn (a summary fold) without queueing. */
    CHECK(store_turn_read(s, id, "B", SF_LOCK_MS, NULL, STORE_TURN_WINDOW, 0, 0, NULL, &c) ==
          CTXD_OK);
    store_context_free(&c);
    sf_stop(&rf, s);
}

TEST(test_store_queue_dead_waiter_expires) {
    redis_fixture rf;
    store *s = sf_start(&rf);
    char id[UTIL_UUID_LEN + 1];
    int64_t ahead;
    make(s, id);
    CHECK(try_lock(s, id, "A", Q_TTL, NULL) == CTXD_OK);
    CHECK(try_lock(s, id, "dead", 200, NULL) == CTXD_ERR);
    CHECK(try_lock(s, id, "C", Q_TTL, &ahead) == CTXD_ERR && ahead == 2);
    CHECK(store_lock_release(s, id, "A") == CTXD_OK);
    CHECK(wakes(&rf, id, "dead") == 1);
    /* The first waiter never comes back: it blocks the queue only until
     * its place expires. */
    CHECK(try_lock(s, id, "C", Q_TTL, &ahead) == CTXD_ERR && ahead == 1);
    util_sleep_ms(300);
    CHECK(try_lock(s, id, "C", Q_TTL, NULL) == CTXD_OK);
    CHECK(queued(&rf, id) == 0);

    /* Nor does an expired entry in the middle count as ahead. */
    CHECK(try_lock(s, id, "D", Q_TTL, NULL) == CTXD_ERR);
    CHECK(try_lock(s, id, "dead2", 200, NULL) == CTXD_ERR);
    CHECK(try_lock(s, id, "E", Q_TTL, &ahead) == CTXD_ERR && ahead == 3);
    util_sleep_ms(300);
    CHECK(try_lock(s, id, "E", Q_TTL, &ahead) == CTXD_ERR && ahead == 2);
    CHECK(queued(&rf, id) == 2);
    /* The queue key itself goes when every waiter stopped looking. */
    long long pttl = rf_int(&rf, "PTTL ctxd:{%s}:queue", id);
    CHECK(pttl > 0 && pttl <= Q_TTL);
    sf_stop(&rf, s);
}

TEST(test_store_queue_killed_holder_lock_expires) {
    redis_fixture rf;
    store *s = sf_start(&rf);
    char id[UTIL_UUID_LEN + 1], who[64];
    make(s, id);
    store_context c;
    CHECK(store_turn_read(s, id, "killed", 300, NULL, STORE_TURN_APPEND, 0, 0, NULL, &c) ==
          CTXD_OK);
    store_context_free(&c);
    CHECK(try_lock(s, id, "B", Q_TTL, NULL) == CTXD_ERR);
    /* Nobody releases it: it expires with its TTL and the first waiter,
     * looking again, takes it. */
    util_sleep_ms(400);
    CHECK(try_lock(s, id, "B", Q_TTL, NULL) == CTXD_OK);
    CHECK_STR(holder(&rf, id, who), "B");
    sf_stop(&rf, s);
}

TEST(test_store_queue_leave_wakes_next) {
    redis_fixture rf;
    store *s = sf_start(&rf);
    char id[UTIL_UUID_LEN + 1];
    int64_t ahead;
    make(s, id);
    CHECK(try_lock(s, id, "A", Q_TTL, NULL) == CTXD_OK);
    CHECK(try_lock(s, id, "B", Q_TTL, NULL) == CTXD_ERR);
    CHECK(try_lock(s, id, "C", Q_TTL, NULL) == CTXD_ERR);
    CHECK(try_lock(s, id, "D", Q_TTL, NULL) == CTXD_ERR);
    /* Leaving from the middle while the lock is held wakes nobody. */
    CHECK(store_turn_leave(s, id, "C") == CTXD_OK);
    CHECK(wakes(&rf, id, "D") == 0 && queued(&rf, id) == 2);
    CHECK(try_lock(s, id, "D", Q_TTL, &ahead) == CTXD_ERR && ahead == 2);
    CHECK(store_lock_release(s, id, "A") == CTXD_OK);
    CHECK(wakes(&rf, id, "B") == 1);
    /* The first waiter gives up: the next one's turn has come. */
    CHECK(store_turn_leave(s, id, "B") == CTXD_OK);
    CHECK(wakes(&rf, id, "D") == 1);
    CHECK(try_lock(s, id, "D", Q_TTL, NULL) == CTXD_OK);
    CHECK(store_turn_leave(s, id, "nobody") == CTXD_OK);
    sf_stop(&rf, s);
}

TEST(test_store_queue_wait_until_woken) {
    redis_fixture rf;
    store *s = sf_start(&rf);
    char id[UTIL_UUID_LEN + 1];
    int woken = -1;
    make(s, id);
    CHECK(try_lock(s, id, "A", Q_TTL, NULL) == CTXD_OK);
    CHECK(try_lock(s, id, "B", Q_TTL, NULL) == CTXD_ERR);
    int64_t t0 = util_mono_ms();
    CHECK(store_turn_wait(s, id, "B", 200, &woken) == CTXD_OK && woken == 0);
    int64_t waited = util_mono_ms() - t0;
    CHECK(waited >= 190 && waited < 1500);
    CHECK(store_lock_release(s, id, "A") == CTXD_OK);
    t0 = util_mono_ms();
    CHECK(store_turn_wait(s, id, "B", 1000, &woken) == CTXD_OK && woken == 1);
    CHECK(util_mono_ms() - t0 < 500);
    CHECK(wakes(&rf, id, "B") == 0);
    sf_stop(&rf, s);
}

/* Commit one message at seq under token (holding the lock), counting held_ms. */
static int commit(store *s, const char *id, const char *token, int64_t seq, int64_t held_ms) {
    store_blob m = sf_message(seq, "user", "hi", 5);
    store_append_req req = {.id = id,
                            .token = token,
                            .expected_next_seq = seq,
                            .now_ms = SF_NOW,
                            .messages = &m,
                            .n_messages = 1,
                            .max_messages = SF_HARD_CAP,
                            .held_ms = held_ms};
    int rc = store_append(s, &req);
    free(m.data);
    return rc;
}

static const char *average(redis_fixture *rf, const char *id, char out[32]) {
    rf_str(rf, out, 32, "HGET ctxd:{%s}:meta turn_ms", id);
    return out;
}

TEST(test_store_queue_average_turn) {
    redis_fixture rf;
    store *s = sf_start(&rf);
    char id[UTIL_UUID_LEN + 1], v[32];
    store_turn_queue q = {.ttl_ms = Q_TTL};
    store_context c;
    make(s, id);
    /* No turn stored yet: a waiter learns nothing of their length. */
    CHECK(try_lock(s, id, "A", Q_TTL, NULL) == CTXD_OK);
    CHECK(store_turn_read(s, id, "W", SF_LOCK_MS, NULL, STORE_TURN_APPEND, 0, 0, &q, &c) ==
          CTXD_ERR);
    CHECK(s->err == CTXD_E_BUSY && q.ahead == 1 && q.turn_ms == 0);
    CHECK(store_turn_leave(s, id, "W") == CTXD_OK);
    CHECK(commit(s, id, "A", 1, 100) == CTXD_OK);
    CHECK_STR(average(&rf, id, v), "100");
    CHECK(try_lock(s, id, "B", Q_TTL, NULL) == CTXD_OK);
    CHECK(commit(s, id, "B", 2, 200) == CTXD_OK);
    CHECK_STR(average(&rf, id, v), "120"); /* (4 * 100 + 200) / 5 */
    CHECK(try_lock(s, id, "C", Q_TTL, NULL) == CTXD_OK);
    CHECK(commit(s, id, "C", 3, 0) == CTXD_OK); /* 0: not counted */
    CHECK_STR(average(&rf, id, v), "120");
    /* A turn that stores nothing changes nothing, its time included. */
    CHECK(try_lock(s, id, "D", Q_TTL, NULL) == CTXD_OK);
    CHECK(commit(s, id, "D", 99, 5000) == CTXD_ERR && s->err == CTXD_E_CONFLICT);
    CHECK_STR(average(&rf, id, v), "120");
    /* A busy answer says how far back the waiter is, and the average. */
    CHECK(try_lock(s, id, "H", Q_TTL, NULL) == CTXD_OK);
    CHECK(try_lock(s, id, "W1", Q_TTL, NULL) == CTXD_ERR);
    CHECK(store_turn_read(s, id, "W2", SF_LOCK_MS, NULL, STORE_TURN_APPEND, 0, 0, &q, &c) ==
          CTXD_ERR);
    CHECK(s->err == CTXD_E_BUSY && q.ahead == 2 && q.turn_ms == 120);
    sf_stop(&rf, s);
}

TEST(test_store_queue_idem_record_leaves_queue) {
    redis_fixture rf;
    store *s = sf_start(&rf);
    char id[UTIL_UUID_LEN + 1], who[64];
    make(s, id);
    CHECK(try_lock(s, id, "A", Q_TTL, NULL) == CTXD_OK);
    store_turn_queue q = {.ttl_ms = Q_TTL};
    store_context c;
    CHECK(store_turn_read(s, id, "B", SF_LOCK_MS, "k", STORE_TURN_APPEND, 0, 0, &q, &c) ==
          CTXD_ERR);
    CHECK(try_lock(s, id, "C", Q_TTL, NULL) == CTXD_ERR);
    /* A stores the record for k and passes the lock to B; B, woken, finds
     * the record and passes the lock on: C's turn has come. */
    store_blob m = sf_message(1, "user", "hi", 5);
    store_append_req req = {.id = id,
                            .token = "A",
                            .expected_next_seq = 1,
                            .now_ms = SF_NOW,
                            .messages = &m,
                            .n_messages = 1,
                            .idem_key = "k",
                            .idem_record = {(char *)"99999999999999 r", 16},
                            .idem_ttl_s = 60,
                            .max_messages = SF_HARD_CAP};
    CHECK(store_append(s, &req) == CTXD_OK);
    free(m.data);
    CHECK(wakes(&rf, id, "B") == 1 && wakes(&rf, id, "C") == 0);
    CHECK(store_turn_read(s, id, "B", SF_LOCK_MS, "k", STORE_TURN_APPEND, 0, 0, &q, &c) == CTXD_OK);
    CHECK(c.idem_record.data != NULL);
    store_context_free(&c);
    CHECK(queued(&rf, id) == 0 && wakes(&rf, id, "C") == 1);
    CHECK_STR(holder(&rf, id, who), "C");
    CHECK(try_lock(s, id, "C", Q_TTL, NULL) == CTXD_OK);
    sf_stop(&rf, s);
}

TEST(test_store_queue_delete_drops_queue) {
    redis_fixture rf;
    store *s = sf_start(&rf);
    char id[UTIL_UUID_LEN + 1];
    int deleted = 0;
    make(s, id);
    CHECK(try_lock(s, id, "B", Q_TTL, NULL) == CTXD_OK);
    CHECK(try_lock(s, id, "C", Q_TTL, NULL) == CTXD_ERR);
    CHECK(rf_int(&rf, "EXISTS ctxd:{%s}:queue", id) == 1);
    CHECK(store_delete(s, id, &deleted) == CTXD_OK && deleted == 1);
    CHECK(rf_count_keys(&rf, "ctxd:{*}:*") == 0);
    /* A waiter looking again finds no context, and leaves nothing behind. */
    CHECK(try_lock(s, id, "C", Q_TTL, NULL) == CTXD_ERR && s->err == CTXD_E_NOT_FOUND);
    CHECK(store_turn_leave(s, id, "C") == CTXD_OK);
    CHECK(rf_count_keys(&rf, "ctxd:{*}:*") == 0);
    sf_stop(&rf, s);
}

TEST_MAIN(T(test_store_queue_first_come_first_served), T(test_store_queue_no_cutting_in),
          T(test_store_queue_dead_waiter_expires), T(test_store_queue_killed_holder_lock_expires),
          T(test_store_queue_leave_wakes_next), T(test_store_queue_wait_until_woken),
          T(test_store_queue_average_turn), T(test_store_queue_idem_record_leaves_queue),
          T(test_store_queue_delete_drops_queue))
