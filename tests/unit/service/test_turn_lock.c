/* test_turn_lock.c: turns waiting for a busy context: in arrival order, woken, or 409 early. */
#include <pthread.h>

#include "turn_fixture.h"

#include "../test.h"

#define N_WAITERS 6

static char arena[8192];

typedef struct waiter {
    redis_fixture *rf;
    const char *id;
    char text[32];
    int rc;
    int64_t done_ms;
} waiter;

/* One turn on a worker of its own, as another HTTP worker would run it. */
static void *run_waiter(void *arg) {
    waiter *wt = arg;
    ctxd_worker *w = tf_worker(wt->rf);
    turn_result res;
    wt->rc = tf_turn(w, wt->id, wt->text, NULL, 0, &res);
    wt->done_ms = util_mono_ms();
    turn_result_free(&res);
    worker_free(w);
    return NULL;
}

static long long queued(redis_fixture *rf, const char *id) {
    return rf_int(rf, "LLEN ctxd:{%s}:queue", id);
}

/* Wait up to 2 s for n turns in id's queue. */
static int await_queue(redis_fixture *rf, const char *id, long long n) {
    for (int i = 0; i < 200; i++) {
        if (queued(rf, id) == n) return 1;
        util_sleep_ms(10);
    }
    return 0;
}

/* Say turns on id lately held the lock ms on average. */
static void set_average(redis_fixture *rf, const char *id, int ms) {
    redisReply *r = rf_cmd(rf, "HSET ctxd:{%s}:meta turn_ms %d", id, ms);
    if (r) freeReplyObject(r);
}

/* Hold id's lock for token through the store, as a turn does. */
static int take_lock(ctxd_worker *w, const char *id, const char *token) {
    store_context c;
    if (store_turn_read(w->st, id, token, 60000, NULL, STORE_TURN_APPEND, 0, 0, NULL, &c))
        return CTXD_ERR;
    store_context_free(&c);
    return CTXD_OK;
}

TEST(test_turn_lock_waiters_served_in_arrival_order) {
    redis_fixture rf;
    tf_start(&rf);
    rf.cfg.lock_wait_ms = 10000;
    ctxd_worker *w = tf_worker(&rf);
    char id[UTIL_UUID_LEN + 1];
    waiter wt[N_WAITERS];
    pthread_t th[N_WAITERS];
    CHECK(tf_create(w, id, NULL, -1, -1) == CTXD_OK);
    CHECK(take_lock(w, id, "holder") == CTXD_OK);
    /* They arrive one after another while the context is busy... */
    for (int i = 0; i < N_WAITERS; i++) {
        wt[i] = (waiter){.rf = &rf, .id = id};
        snprintf(wt[i].text, sizeof(wt[i].text), "waiter %d", i);
        CHECK(pthread_create(&th[i], NULL, run_waiter, &wt[i]) == 0);
        CHECK(await_queue(&rf, id, i + 1));
    }
    /* ...and are served in that order once it is released. */
    CHECK(store_lock_release(w->st, id, "holder") == CTXD_OK);
    for (int i = 0; i < N_WAITERS; i++) {
        pthread_join(th[i], NULL);
        CHECK(wt[i].rc == CTXD_OK);
    }
    CHECK(tf_count(w, id) == 2 * N_WAITERS);
    for (int i = 0; i < N_WAITERS; i++) {
        message m;
        CHECK(tf_message(w, id, 2 * (size_t)i, &m, arena, sizeof(arena)) == CTXD_OK);
        CHECK(m.content_len == strlen(wt[i].text) && !memcmp(m.content, wt[i].text, m.content_len));
    }
    CHECK(queued(&rf, id) == 0);
    CHECK(tf_exists(&rf, id, "lock") == 0);
    CHECK(rf_int(&rf, "HEXISTS ctxd:{%s}:meta turn_ms", id) == 1); /* the average turn */
    tf_stop(&rf, w);
}

TEST(test_turn_lock_waiter_woken_at_release) {
    redis_fixture rf;
    tf_start(&rf);
    rf.cfg.lock_wait_ms = 10000;
    ctxd_worker *w = tf_worker(&rf);
    char id[UTIL_UUID_LEN + 1], token[16];
    CHECK(tf_create(w, id, NULL, -1, -1) == CTXD_OK);
    /* Each time, the waiter goes ahead as soon as the lock is given back,
     * not at its next look. */
    for (int round = 0; round < 3; round++) {
        waiter wt = {.rf = &rf, .id = id};
        pthread_t th;
        snprintf(token, sizeof(token), "holder%d", round);
        snprintf(wt.text, sizeof(wt.text), "round %d", round);
        CHECK(take_lock(w, id, token) == CTXD_OK);
        CHECK(pthread_create(&th, NULL, run_waiter, &wt) == 0);
        CHECK(await_queue(&rf, id, 1));
        util_sleep_ms(700 + 50 * round);
        int64_t released = util_mono_ms();
        CHECK(store_lock_release(w->st, id, token) == CTXD_OK);
        pthread_join(th, NULL);
        CHECK(wt.rc == CTXD_OK);
        CHECK(wt.done_ms - released < 80);
    }
    CHECK(tf_count(w, id) == 6);
    tf_stop(&rf, w);
}

TEST(test_turn_lock_busy_early_when_the_queue_is_too_slow) {
    redis_fixture rf;
    tf_start(&rf);
    rf.cfg.lock_wait_ms = 3000;
    ctxd_worker *w = tf_worker(&rf);
    char id[UTIL_UUID_LEN + 1];
    CHECK(tf_create(w, id, NULL, -1, -1) == CTXD_OK);
    /* Turns lately held the lock 5 s: the one running now cannot be done
     * within the 3 s wait, so the answer comes at once. */
    tf_hold_lock(&rf, id, "someone-else", 60000);
    set_average(&rf, id, 5000);
    turn_result res;
    int64_t t0 = util_mono_ms();
    CHECK(tf_turn(w, id, "in a hurry", NULL, 0, &res) == CTXD_ERR);
    CHECK(res.error.err == CTXD_E_BUSY);
    CHECK(util_mono_ms() - t0 < 1000);
    CHECK(queued(&rf, id) == 0); /* it gave its place up */
    turn_result_free(&res);

    /* With turns of 1 s it waits, and goes ahead when the lock expires. */
    set_average(&rf, id, 1000);
    tf_hold_lock(&rf, id, "someone-else", 300);
    CHECK(tf_turn(w, id, "patient", NULL, 0, &res) == CTXD_OK);
    CHECK(tf_count(w, id) == 2);
    turn_result_free(&res);
    tf_stop(&rf, w);
}

TEST(test_turn_lock_busy_leaves_no_place_behind) {
    redis_fixture rf;
    tf_start(&rf);
    rf.cfg.lock_wait_ms = 150;
    ctxd_worker *w = tf_worker(&rf);
    char id[UTIL_UUID_LEN + 1];
    CHECK(tf_create(w, id, NULL, -1, -1) == CTXD_OK);
    tf_hold_lock(&rf, id, "someone-else", 60000);
    turn_result res;
    for (int i = 0; i < 3; i++) {
        CHECK(tf_turn(w, id, "blocked", NULL, 0, &res) == CTXD_ERR);
        CHECK(res.error.err == CTXD_E_BUSY);
        turn_result_free(&res);
    }
    CHECK(queued(&rf, id) == 0);
    /* Once the lock is gone, a turn goes ahead at once: nobody is left in line. */
    CHECK(rf_int(&rf, "DEL ctxd:{%s}:lock", id) == 1);
    CHECK(tf_turn(w, id, "free again", NULL, 0, &res) == CTXD_OK);
    turn_result_free(&res);
    tf_stop(&rf, w);
}

TEST_MAIN(T(test_turn_lock_waiters_served_in_arrival_order),
          T(test_turn_lock_waiter_woken_at_release),
          T(test_turn_lock_busy_early_when_the_queue_is_too_slow),
          T(test_turn_lock_busy_leaves_no_place_behind))
