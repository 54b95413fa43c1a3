/* test_turn_idem.c: idempotency records of turns and appends, written and replayed (no Redis). */
#include <inttypes.h>

#include "../../../src/service/turn_int.h"
#include "ctxd/util.h"

#include "../test.h"

#define FP 0x0123456789abcdefULL

static store_blob record(const char *s) {
    store_blob b = {(char *)s, strlen(s)};
    return b;
}

TEST(test_turn_idem_reply_round_trip_with_nul_and_leading_space) {
    const char text[] = " \nhi\0there ";
    turn_reply reply = {.text = (char *)text,
                        .text_len = sizeof(text) - 1,
                        .model = "",
                        .input_tokens = -1,
                        .output_tokens = -1};
    size_t len = 0;
    char *rec = turn_idem_record_reply(60, FP, &reply, &len);
    CHECK(rec != NULL && len > sizeof(text) - 1);
    store_blob b = {rec, len};
    turn_result res;
    memset(&res, 0, sizeof(res));
    CHECK(turn_idem_replay(&b, 0, FP, "k", &res) == CTXD_OK);
    CHECK(res.replayed == 1 && res.error.err == CTXD_E_NONE);
    CHECK(res.reply.text_len == sizeof(text) - 1);
    CHECK(res.reply.text && !memcmp(res.reply.text, text, sizeof(text) - 1));
    CHECK(res.reply.text && res.reply.text[res.reply.text_len] == '\0');
    CHECK_STR(res.reply.model, "");
    CHECK(res.reply.input_tokens == -1 && res.reply.output_tokens == -1);
    turn_result_free(&res);
    free(rec);
}

TEST(test_turn_idem_reply_round_trip_with_model_and_usage) {
    /* A model name with a space and digits in the text: lengths, not spaces, delimit. */
    const char *text = "12 34 R 5 6 end";
    turn_reply reply = {.text = (char *)text,
                        .text_len = strlen(text),
                        .model = "my model 2",
                        .input_tokens = 1234,
                        .output_tokens = 56};
    size_t len = 0;
    char *rec = turn_idem_record_reply(60, FP, &reply, &len);
    store_blob b = {rec, len};
    turn_result res;
    memset(&res, 0, sizeof(res));
    CHECK(rec && len == strlen(rec));
    CHECK(turn_idem_replay(&b, 0, FP, "k", &res) == CTXD_OK);
    CHECK_STR(res.reply.text, text);
    CHECK_STR(res.reply.model, "my model 2");
    CHECK(res.reply.input_tokens == 1234 && res.reply.output_tokens == 56);
    turn_result_free(&res);
    free(rec);
}

/* A reply's stored id comes back with it (an SDK route's replay answers the
 * same message id); a record written before ids (kind B) replays without. */
TEST(test_turn_idem_reply_keeps_its_id) {
    turn_reply reply = {.id = "msg_0123456789abcdef0123456789abcdef",
                        .text = (char *)"hi there",
                        .text_len = 8,
                        .model = "m 1",
                        .stop_reason = "end_turn",
                        .input_tokens = 3,
                        .output_tokens = 4};
    size_t len = 0;
    char *rec = turn_idem_record_reply(60, FP, &reply, &len);
    store_blob b = {rec, len};
    turn_result res;
    memset(&res, 0, sizeof(res));
    CHECK(rec && strstr(rec, " M "));
    CHECK(turn_idem_replay(&b, 0, FP, "k", &res) == CTXD_OK);
    CHECK_STR(res.reply.id, "msg_0123456789abcdef0123456789abcdef");
    CHECK_STR(res.reply.text, "hi there");
    CHECK_STR(res.reply.model, "m 1");
    CHECK_STR(res.reply.stop_reason, "end_turn");
    turn_result_free(&res);
    free(rec);
    const char old[] = "99999999999999 00000000000000ab B 3 4 -1 -1 3 8 0 8 m 1hi thereend_turn";
    store_blob ob = {(char *)old, sizeof(old) - 1};
    memset(&res, 0, sizeof(res));
    CHECK(turn_idem_replay(&ob, 0, 0xab, "k", &res) == CTXD_OK);
    CHECK_STR(res.reply.id, "");
    CHECK_STR(res.reply.text, "hi there");
    CHECK_STR(res.reply.stop_reason, "end_turn");
    turn_result_free(&res);
    /* An M record's id must be there. */
    const char bad[] = "99999999999999 00000000000000ab M 3 4 -1 -1 3 8 0 8 m 1hi thereend_turn";
    store_blob bb = {(char *)bad, sizeof(bad) - 1};
    memset(&res, 0, sizeof(res));
    CHECK(turn_idem_replay(&bb, 0, 0xab, "k", &res) == CTXD_ERR);
    turn_result_free(&res);
}

TEST(test_turn_idem_record_leads_with_expiry) {
    /* The store reads only "<expires_ms> ": it must be now + ttl. */
    turn_reply reply = {.text = (char *)"x", .text_len = 1, .model = "m"};
    int64_t before = util_now_ms();
    size_t len;
    char *r1 = turn_idem_record_reply(90, FP, &reply, &len);
    char *r2 = turn_idem_record_append(90, FP, 2, 5);
    int64_t after = util_now_ms();
    char *end;
    int64_t e1 = r1 ? strtoll(r1, &end, 10) : 0;
    CHECK(r1 && *end == ' ' && e1 >= before + 90000 && e1 <= after + 90000);
    int64_t e2 = r2 ? strtoll(r2, &end, 10) : 0;
    CHECK(r2 && *end == ' ' && e2 >= before + 90000 && e2 <= after + 90000);
    free(r1);
    free(r2);
}

TEST(test_turn_idem_append_round_trip) {
    char *rec = turn_idem_record_append(60, FP, 3, 41);
    CHECK(rec != NULL);
    store_blob b = record(rec ? rec : "");
    turn_result res;
    memset(&res, 0, sizeof(res));
    CHECK(turn_idem_replay(&b, 1, FP, "k", &res) == CTXD_OK);
    CHECK(res.replayed == 1 && res.appended == 3 && res.first_seq == 41);
    CHECK(res.reply.text == NULL);
    free(rec);
}

TEST(test_turn_idem_other_fingerprint_reused) {
    char *rec = turn_idem_record_append(60, FP, 3, 41);
    store_blob b = record(rec ? rec : "");
    turn_result res;
    memset(&res, 0, sizeof(res));
    CHECK(turn_idem_replay(&b, 1, FP + 1, "key-xyz", &res) == CTXD_ERR);
    CHECK(res.error.err == CTXD_E_IDEM_KEY_REUSED && !res.replayed);
    CHECK(strstr(res.error.msg, "key-xyz") != NULL);
    CHECK(res.appended == 0);
    free(rec);
}

TEST(test_turn_idem_legacy_turn_record) {
    char rec[256];
    snprintf(rec, sizeof(rec),
             "%" PRId64 " %016" PRIx64 " 200 {\"ai_response\":\"old \\\"reply\\\"\",\"model\":"
             "\"claude-x\",\"usage\":{\"input_tokens\":11,\"output_tokens\":22}}",
             util_now_ms() + 1000, (uint64_t)FP);
    store_blob b = record(rec);
    turn_result res;
    memset(&res, 0, sizeof(res));
    CHECK(turn_idem_replay(&b, 0, FP, "k", &res) == CTXD_OK);
    CHECK(res.replayed == 1);
    CHECK_STR(res.reply.text, "old \"reply\"");
    CHECK(res.reply.text_len == 11);
    CHECK_STR(res.reply.model, "claude-x");
    CHECK(res.reply.input_tokens == 11 && res.reply.output_tokens == 22);
    turn_result_free(&res);

    /* Without usage and model: unknown figures, empty model. */
    snprintf(rec, sizeof(rec), "%" PRId64 " %016" PRIx64 " 200 {\"ai_response\":\"x\"}",
             util_now_ms() + 1000, (uint64_t)FP);
    b = record(rec);
    memset(&res, 0, sizeof(res));
    CHECK(turn_idem_replay(&b, 0, FP, "k", &res) == CTXD_OK);
    CHECK_STR(res.reply.text, "x");
    CHECK_STR(res.reply.model, "");
    CHECK(res.reply.input_tokens == -1 && res.reply.output_tokens == -1);
    turn_result_free(&res);

    /* And a legacy record is checked against the fingerprint too. */
    memset(&res, 0, sizeof(res));
    CHECK(turn_idem_replay(&b, 0, FP ^ 1, "k", &res) == CTXD_ERR);
    CHECK(res.error.err == CTXD_E_IDEM_KEY_REUSED);
}

TEST(test_turn_idem_legacy_append_record) {
    char rec[128];
    snprintf(rec, sizeof(rec), "%" PRId64 " %016" PRIx64 " 201 {\"appended\":2,\"first_seq\":17}",
             util_now_ms() + 1000, (uint64_t)FP);
    store_blob b = record(rec);
    turn_result res;
    memset(&res, 0, sizeof(res));
    CHECK(turn_idem_replay(&b, 1, FP, "k", &res) == CTXD_OK);
    CHECK(res.replayed == 1 && res.appended == 2 && res.first_seq == 17);
    CHECK(res.reply.text == NULL);
}

/* A record that must be refused as corrupt. */
static void check_corrupt(const char *rec, size_t len) {
    store_blob b = {(char *)rec, len};
    turn_result res;
    memset(&res, 0, sizeof(res));
    /* An append's record is read by an append, everything else by a turn. */
    int append = strstr(rec, " A ") != NULL;
    CHECK(turn_idem_replay(&b, append, FP, "k", &res) == CTXD_ERR);
    CHECK(res.error.err == CTXD_E_REDIS && !res.replayed);
    CHECK(res.reply.text == NULL);
    if (res.error.err != CTXD_E_REDIS) fprintf(stderr, "  accepted: %.*s\n", (int)len, rec);
    turn_result_free(&res);
}

TEST(test_turn_idem_corrupt_records) {
    char rec[160];
    const char *fp = "0123456789abcdef";
    check_corrupt("", 0);
    check_corrupt("garbage", 7);
    check_corrupt("123", 3);
    /* A reply record whose lengths do not match its bytes. */
    int n = snprintf(rec, sizeof(rec), "99 %s R 1 2 1 5 mabc", fp);
    check_corrupt(rec, (size_t)n);
    n = snprintf(rec, sizeof(rec), "99 %s R 1 2 1 2 mabc", fp);
    check_corrupt(rec, (size_t)n);
    n = snprintf(rec, sizeof(rec), "99 %s R 1 2", fp);
    check_corrupt(rec, (size_t)n);
    n = snprintf(rec, sizeof(rec), "99 %s A x", fp);
    check_corrupt(rec, (size_t)n);
    n = snprintf(rec, sizeof(rec), "99 %s Z 1 2", fp);
    check_corrupt(rec, (size_t)n);
    /* Legacy: not JSON, or a turn's answer without ai_response. */
    n = snprintf(rec, sizeof(rec), "99 %s 200 {nope", fp);
    check_corrupt(rec, (size_t)n);
    n = snprintf(rec, sizeof(rec), "99 %s 200 {\"model\":\"m\"}", fp);
    check_corrupt(rec, (size_t)n);
}

TEST(test_turn_idem_kind_must_match) {
    /* A key used for an append cannot be replayed by a turn, nor the other
     * way round, even with the same fingerprint. */
    char *app = turn_idem_record_append(60, FP, 3, 41);
    turn_reply reply = {.text = (char *)"x", .text_len = 1, .model = "m"};
    size_t len;
    char *rep = turn_idem_record_reply(60, FP, &reply, &len);
    store_blob a = record(app ? app : ""), r = {rep, rep ? len : 0};
    turn_result res;
    memset(&res, 0, sizeof(res));
    CHECK(turn_idem_replay(&a, 0, FP, "k", &res) == CTXD_ERR);
    CHECK(res.error.err == CTXD_E_IDEM_KEY_REUSED && !res.replayed && !res.reply.text);
    memset(&res, 0, sizeof(res));
    CHECK(turn_idem_replay(&r, 1, FP, "k", &res) == CTXD_ERR);
    CHECK(res.error.err == CTXD_E_IDEM_KEY_REUSED && !res.replayed);
    char legacy[128];
    snprintf(legacy, sizeof(legacy), "%" PRId64 " %016" PRIx64 " 201 {\"appended\":2}",
             util_now_ms() + 1000, (uint64_t)FP);
    store_blob l = record(legacy);
    memset(&res, 0, sizeof(res));
    CHECK(turn_idem_replay(&l, 0, FP, "k", &res) == CTXD_ERR);
    CHECK(res.error.err == CTXD_E_IDEM_KEY_REUSED);
    free(app);
    free(rep);
}

TEST_MAIN(T(test_turn_idem_kind_must_match), T(test_turn_idem_reply_keeps_its_id),
          T(test_turn_idem_reply_round_trip_with_nul_and_leading_space),
          T(test_turn_idem_reply_round_trip_with_model_and_usage),
          T(test_turn_idem_record_leads_with_expiry), T(test_turn_idem_append_round_trip),
          T(test_turn_idem_other_fingerprint_reused), T(test_turn_idem_legacy_turn_record),
          T(test_turn_idem_legacy_append_record), T(test_turn_idem_corrupt_records))
