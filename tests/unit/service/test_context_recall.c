/* test_context_recall.c: the window a context's next turn would send, within a budget. */
#include "turn_fixture.h"

#include "../test.h"
#include "ctxd/message.h"

TEST(test_context_recall_keeps_whole_units_within_the_budget) {
    redis_fixture rf;
    tf_start(&rf);
    ctxd_worker *w = tf_worker(&rf);
    char id[UTIL_UUID_LEN + 1];
    turn_result res;
    store_context c;
    ctxd_error e;
    int64_t tokens, used;
    CHECK(tf_create(w, id, "window", 100000, -1) == CTXD_OK);
    for (int i = 0; i < 6; i++) {
        memset(&res, 0, sizeof(res));
        CHECK(tf_turn(w, id, "hello there, this is one more turn", NULL, 0, &res) == CTXD_OK);
        turn_result_free(&res);
    }
    /* Everything fits the context's own budget. */
    CHECK(context_recall(w, id, 0, &c, &tokens, &used, &e) == CTXD_OK);
    CHECK(c.n_messages == 12 && used == 100000 && !c.has_more);
    int64_t all = tokens;
    store_context_free(&c);
    /* A budget for about two turns: the newest whole pairs, starting at a user message. */
    CHECK(context_recall(w, id, all / 3, &c, &tokens, &used, &e) == CTXD_OK);
    CHECK(c.n_messages >= 2 && c.n_messages < 12 && c.n_messages % 2 == 0);
    CHECK(tokens <= all / 3 && c.has_more);
    char role[16];
    int64_t t, seq;
    CHECK(message_head(c.messages[0].data, c.messages[0].len, role, &t, &seq) == CTXD_OK);
    CHECK_STR(role, "user");
    CHECK(seq == 13 - (int64_t)c.n_messages);
    store_context_free(&c);
    /* An unknown context. */
    CHECK(context_recall(w, "00000000-0000-4000-8000-000000000000", 0, &c, &tokens, &used, &e) ==
          CTXD_ERR);
    CHECK(e.err == CTXD_E_NOT_FOUND);
    store_context_free(&c);
    tf_stop(&rf, w);
}

TEST_MAIN(T(test_context_recall_keeps_whole_units_within_the_budget))
