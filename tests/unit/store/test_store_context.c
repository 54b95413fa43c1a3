/* test_store_context.c: create, read, paging, settings, state, delete and listing. */
#include "store_fixture.h"
#include "../../../src/store/store_int.h"

#include "../test.h"

/* The JSON value of key in c's state, or NULL. */
static const char *state_value(const store_context *c, const char *key) {
    for (size_t i = 0; i < c->n_state; i++)
        if (c->state_keys[i].len == strlen(key) && !memcmp(c->state_keys[i].data, key, strlen(key)))
            return c->state_values[i].data;
    return NULL;
}

TEST(test_store_context_create_then_read) {
    redis_fixture rf;
    store *s = sf_start(&rf);
    char id[UTIL_UUID_LEN + 1], iso[UTIL_ISO_LEN];
    store_blob keys[2] = {sf_blob("plan"), sf_blob("n")},
               values[2] = {sf_blob("\"trip\""), sf_blob("3")};
    CHECK(util_uuid4(id) == CTXD_OK);
    store_new_context nc = {.id = id,
                            .now_ms = SF_NOW,
                            .settings = {"be brief", "m-1", "window", 0, 1234, 5},
                            .state_keys = keys,
                            .state_values = values,
                            .n_state = 2};
    CHECK(store_create(s, &nc) == CTXD_OK);

    store_context c;
    CHECK(store_read(s, id, STORE_READ_MESSAGES | STORE_READ_STATE, 0, 0, &c) == CTXD_OK);
    util_iso8601(SF_NOW, iso);
    CHECK_STR(c.id, id);
    CHECK_STR(c.created_at, iso);
    CHECK_STR(c.last_updated, iso);
    CHECK_STR(c.system, "be brief");
    CHECK_STR(c.model, "m-1");
    CHECK_STR(c.strategy, "window");
    CHECK_STR(c.summary, "");
    CHECK(c.ttl_seconds == 0 && c.max_context_tokens == 1234 && c.max_messages == 5);
    CHECK(c.next_seq == 1 && c.first_seq == 1 && c.total_messages == 0);
    CHECK(c.n_messages == 0 && !c.has_more && c.next_before == 0);
    CHECK(c.n_state == 2);
    CHECK_STR(state_value(&c, "plan"), "\"trip\"");
    CHECK_STR(state_value(&c, "n"), "3");
    store_context_free(&c);

    /* Without STORE_READ_STATE the state stays out. */
    CHECK(store_read(s, id, 0, 0, 0, &c) == CTXD_OK);
    CHECK(c.n_state == 0 && c.n_messages == 0);
    CHECK_STR(c.system, "be brief");
    store_context_free(&c);
    sf_stop(&rf, s);
}

TEST(test_store_context_create_existing_id_exists) {
    redis_fixture rf;
    store *s = sf_start(&rf);
    char id[UTIL_UUID_LEN + 1];
    store_settings st = sf_settings("all", 100, 0);
    CHECK(sf_create(s, id, &st) == CTXD_OK);
    store_new_context again = {
        .id = id, .now_ms = SF_NOW + 5, .settings = {"other", "", "window", 0, 9, 9}};
    CHECK(store_create(s, &again) == CTXD_ERR);
    CHECK(s->err == CTXD_E_EXISTS);
    CHECK(strstr(s->errstr, id) != NULL);
    store_context c;
    CHECK(store_read(s, id, 0, 0, 0, &c) == CTXD_OK);
    CHECK_STR(c.system, "");
    CHECK_STR(c.strategy, "all");
    CHECK(c.max_context_tokens == 100);
    store_context_free(&c);
    sf_stop(&rf, s);
}

TEST(test_store_context_read_missing_not_found) {
    redis_fixture rf;
    store *s = sf_start(&rf);
    char id[UTIL_UUID_LEN + 1];
    store_context c;
    CHECK(util_uuid4(id) == CTXD_OK);
    CHECK(store_read(s, id, STORE_READ_MESSAGES | STORE_READ_STATE, 0, 0, &c) == CTXD_ERR);
    CHECK(s->err == CTXD_E_NOT_FOUND);
    /* The paged read (the script, not the pipelined one) says the same. */
    CHECK(store_read(s, id, STORE_READ_MESSAGES, 3, 5, &c) == CTXD_ERR);
    CHECK(s->err == CTXD_E_NOT_FOUND);
    store_context_free(&c); /* safe after a failure */
    CHECK(rf_count_keys(&rf, "ctxd:*") == 0);
    sf_stop(&rf, s);
}

/* Read a page and check the seqs it holds and where the one before starts. */
static void check_page(store *s, const char *id, long limit, int64_t before, int64_t first,
                       int64_t last, int has_more, int64_t next_before) {
    store_context c;
    CHECK(store_read(s, id, STORE_READ_MESSAGES, limit, before, &c) == CTXD_OK);
    size_t want = last >= first ? (size_t)(last - first + 1) : 0;
    CHECK(c.n_messages == want);
    for (size_t i = 0; i < c.n_messages && i < want; i++) {
        char text[32], expect[32];
        snprintf(expect, sizeof(expect), "m%" PRId64, first + (int64_t)i);
        CHECK(sf_seq(&c.messages[i]) == first + (int64_t)i);
        CHECK_STR(sf_content(&c.messages[i], text, sizeof(text)), expect);
    }
    CHECK(c.total_messages == 10);
    CHECK(c.has_more == has_more);
    CHECK(c.next_before == next_before);
    if (c.has_more != has_more || c.next_before != next_before || c.n_messages != want)
        fprintf(stderr, "  page limit=%ld before=%" PRId64 ": n=%zu has_more=%d next=%" PRId64 "\n",
                limit, before, c.n_messages, c.has_more, c.next_before);
    store_context_free(&c);
}

TEST(test_store_context_read_pages_with_limit_and_before) {
    redis_fixture rf;
    store *s = sf_start(&rf);
    char id[UTIL_UUID_LEN + 1];
    store_settings st = sf_settings("all", 100000, 0);
    CHECK(sf_create(s, id, &st) == CTXD_OK);
    CHECK(sf_append(s, id, 10, 5) == CTXD_OK);
    check_page(s, id, 0, 0, 1, 10, 0, 0); /* everything */
    check_page(s, id, 3, 0, 8, 10, 1, 8); /* the newest three */
    check_page(s, id, 3, 8, 5, 7, 1, 5);  /* and back, page by page */
    check_page(s, id, 3, 5, 2, 4, 1, 2);
    check_page(s, id, 3, 2, 1, 1, 0, 0);   /* the last page */
    check_page(s, id, 0, 4, 1, 3, 0, 0);   /* before without a limit */
    check_page(s, id, 20, 0, 1, 10, 0, 0); /* a limit above the count */
    check_page(s, id, 5, 1, 1, 0, 0, 0);   /* nothing older than the first */
    sf_stop(&rf, s);
}

TEST(test_store_context_settings_change_only_given) {
    redis_fixture rf;
    store *s = sf_start(&rf);
    char id[UTIL_UUID_LEN + 1], iso[UTIL_ISO_LEN];
    CHECK(util_uuid4(id) == CTXD_OK);
    store_new_context nc = {
        .id = id, .now_ms = SF_NOW, .settings = {"s1", "m1", "all", 100, 500, 7}};
    CHECK(store_create(s, &nc) == CTXD_OK);
    store_settings change = STORE_SETTINGS_UNCHANGED;
    change.model = "m2";
    change.max_messages = 3;
    CHECK(store_set_settings(s, id, &change, SF_NOW + 1000, NULL) == CTXD_OK);
    store_context c;
    CHECK(store_read(s, id, 0, 0, 0, &c) == CTXD_OK);
    CHECK_STR(c.system, "s1");
    CHECK_STR(c.model, "m2");
    CHECK_STR(c.strategy, "all");
    CHECK(c.ttl_seconds == 100 && c.max_context_tokens == 500 && c.max_messages == 3);
    util_iso8601(SF_NOW + 1000, iso);
    CHECK_STR(c.last_updated, iso);
    util_iso8601(SF_NOW, iso);
    CHECK_STR(c.created_at, iso);
    store_context_free(&c);

    /* "" is a value (no system prompt), unlike NULL. */
    store_settings clear = STORE_SETTINGS_UNCHANGED;
    clear.system = "";
    clear.strategy = "summarize";
    CHECK(store_set_settings(s, id, &clear, SF_NOW + 2000, NULL) == CTXD_OK);
    CHECK(store_read(s, id, 0, 0, 0, &c) == CTXD_OK);
    CHECK_STR(c.system, "");
    CHECK_STR(c.model, "m2");
    CHECK_STR(c.strategy, "summarize");
    CHECK(c.max_messages == 3 && c.max_context_tokens == 500);
    store_context_free(&c);

    char missing[UTIL_UUID_LEN + 1];
    CHECK(util_uuid4(missing) == CTXD_OK);
    CHECK(store_set_settings(s, missing, &change, SF_NOW, NULL) == CTXD_ERR);
    CHECK(s->err == CTXD_E_NOT_FOUND);
    CHECK(rf_count_keys(&rf, "ctxd:{*") == 2); /* id's meta and index bucket: nothing for missing */
    sf_stop(&rf, s);
}

TEST(test_store_context_settings_ttl_zero_persists) {
    redis_fixture rf;
    store *s = sf_start(&rf);
    char id[UTIL_UUID_LEN + 1], k[3][128];
    store_blob key = sf_blob("a"), value = sf_blob("1");
    CHECK(util_uuid4(id) == CTXD_OK);
    store_new_context nc = {.id = id,
                            .now_ms = SF_NOW,
                            .settings = {"", "", "all", 100, 1000, 0},
                            .state_keys = &key,
                            .state_values = &value,
                            .n_state = 1};
    CHECK(store_create(s, &nc) == CTXD_OK);
    CHECK(sf_append(s, id, 2, 5) == CTXD_OK);
    sf_key(k[0], sizeof(k[0]), id, "meta");
    sf_key(k[1], sizeof(k[1]), id, "messages");
    sf_key(k[2], sizeof(k[2]), id, "state");
    for (int i = 0; i < 3; i++) {
        long long ttl = rf_int(&rf, "TTL %s", k[i]);
        CHECK(ttl > 90 && ttl <= 100);
    }
    store_settings change = STORE_SETTINGS_UNCHANGED;
    change.ttl_seconds = 0;
    CHECK(store_set_settings(s, id, &change, SF_NOW + 1, NULL) == CTXD_OK);
    for (int i = 0; i < 3; i++) CHECK(rf_int(&rf, "TTL %s", k[i]) == -1);
    store_context c;
    CHECK(store_read(s, id, 0, 0, 0, &c) == CTXD_OK);
    CHECK(c.ttl_seconds == 0);
    store_context_free(&c);

    /* And back: a positive ttl sets the expiry again. */
    change.ttl_seconds = 50;
    CHECK(store_set_settings(s, id, &change, SF_NOW + 2, NULL) == CTXD_OK);
    for (int i = 0; i < 3; i++) {
        long long ttl = rf_int(&rf, "TTL %s", k[i]);
        CHECK(ttl > 40 && ttl <= 50);
    }
    sf_stop(&rf, s);
}

TEST(test_store_context_state_put_replaces) {
    redis_fixture rf;
    store *s = sf_start(&rf);
    char id[UTIL_UUID_LEN + 1];
    store_blob k1[2] = {sf_blob("a"), sf_blob("b")}, v1[2] = {sf_blob("1"), sf_blob("2")};
    store_blob k2[1] = {sf_blob("c")}, v2[1] = {sf_blob("\"x\"")};
    store_settings st = sf_settings("all", 1000, 0);
    CHECK(sf_create(s, id, &st) == CTXD_OK);
    CHECK(store_state_put(s, id, k1, v1, 2, 64, SF_NOW, NULL) == CTXD_OK);
    CHECK(store_state_put(s, id, k2, v2, 1, 64, SF_NOW, NULL) == CTXD_OK);
    store_context c;
    CHECK(store_read(s, id, STORE_READ_STATE, 0, 0, &c) == CTXD_OK);
    CHECK(c.n_state == 1);
    CHECK_STR(state_value(&c, "c"), "\"x\"");
    CHECK(state_value(&c, "a") == NULL);
    store_context_free(&c);

    /* Over the cap: 4 bytes of keys and values > 3, refused, nothing changes. */
    CHECK(store_state_put(s, id, k1, v1, 2, 3, SF_NOW, NULL) == CTXD_ERR);
    CHECK(s->err == CTXD_E_STATE_TOO_LARGE);
    CHECK(store_read(s, id, STORE_READ_STATE, 0, 0, &c) == CTXD_OK);
    CHECK(c.n_state == 1);
    CHECK_STR(state_value(&c, "c"), "\"x\"");
    store_context_free(&c);

    char missing[UTIL_UUID_LEN + 1];
    CHECK(util_uuid4(missing) == CTXD_OK);
    CHECK(store_state_put(s, missing, k2, v2, 1, 64, SF_NOW, NULL) == CTXD_ERR);
    CHECK(s->err == CTXD_E_NOT_FOUND);
    CHECK(rf_count_keys(&rf, "*") == 3); /* meta, state, index: nothing for missing */
    sf_stop(&rf, s);
}

TEST(test_store_context_state_patch_merges_and_deletes) {
    redis_fixture rf;
    store *s = sf_start(&rf);
    char id[UTIL_UUID_LEN + 1];
    store_blob k1[2] = {sf_blob("a"), sf_blob("b")}, v1[2] = {sf_blob("1"), sf_blob("2")};
    store_blob k2[3] = {sf_blob("b"), sf_blob("c"), sf_blob("a")};
    store_blob v2[3] = {sf_blob("3"), sf_blob("4"), {NULL, 0}}; /* NULL deletes a */
    store_settings st = sf_settings("all", 1000, 0);
    CHECK(sf_create(s, id, &st) == CTXD_OK);
    CHECK(store_state_put(s, id, k1, v1, 2, 64, SF_NOW, NULL) == CTXD_OK);
    CHECK(store_state_patch(s, id, k2, v2, 3, 64, SF_NOW + 7, NULL) == CTXD_OK);
    store_context c;
    char iso[UTIL_ISO_LEN];
    CHECK(store_read(s, id, STORE_READ_STATE, 0, 0, &c) == CTXD_OK);
    CHECK(c.n_state == 2);
    CHECK(state_value(&c, "a") == NULL);
    CHECK_STR(state_value(&c, "b"), "3");
    CHECK_STR(state_value(&c, "c"), "4");
    util_iso8601(SF_NOW + 7, iso);
    CHECK_STR(c.last_updated, iso);
    store_context_free(&c);

    char missing[UTIL_UUID_LEN + 1];
    CHECK(util_uuid4(missing) == CTXD_OK);
    CHECK(store_state_patch(s, missing, k2, v2, 3, 64, SF_NOW, NULL) == CTXD_ERR);
    CHECK(s->err == CTXD_E_NOT_FOUND);
    sf_stop(&rf, s);
}

TEST(test_store_context_state_patch_cap_on_merged_result) {
    redis_fixture rf;
    store *s = sf_start(&rf);
    char id[UTIL_UUID_LEN + 1];
    /* "big" = 3 + 10 bytes. */
    store_blob k1[1] = {sf_blob("big")}, v1[1] = {sf_blob("\"12345678\"")};
    store_settings st = sf_settings("all", 1000, 0);
    CHECK(sf_create(s, id, &st) == CTXD_OK);
    CHECK(store_state_put(s, id, k1, v1, 1, 20, SF_NOW, NULL) == CTXD_OK);

    /* Merged: 13 + 11 = 24 > 20: refused, nothing changed. */
    store_blob k2[2] = {sf_blob("x"), sf_blob("big")},
               v2[2] = {sf_blob("\"abcdefgh\""), sf_blob("1")};
    CHECK(store_state_patch(s, id, k2, v2, 1, 20, SF_NOW + 1, NULL) == CTXD_ERR);
    CHECK(s->err == CTXD_E_STATE_TOO_LARGE);
    store_context c;
    char iso[UTIL_ISO_LEN];
    CHECK(store_read(s, id, STORE_READ_STATE, 0, 0, &c) == CTXD_OK);
    CHECK(c.n_state == 1);
    CHECK_STR(state_value(&c, "big"), "\"12345678\"");
    util_iso8601(SF_NOW, iso);
    CHECK_STR(c.last_updated, iso);
    store_context_free(&c);

    /* The same new key while big shrinks: 11 + 4 = 15 <= 20, though the
     * patch's own bytes plus the old state would not fit. */
    CHECK(store_state_patch(s, id, k2, v2, 2, 20, SF_NOW + 2, NULL) == CTXD_OK);
    CHECK(store_read(s, id, STORE_READ_STATE, 0, 0, &c) == CTXD_OK);
    CHECK(c.n_state == 2);
    CHECK_STR(state_value(&c, "big"), "1");
    CHECK_STR(state_value(&c, "x"), "\"abcdefgh\"");
    store_context_free(&c);
    sf_stop(&rf, s);
}

TEST(test_store_context_delete_removes_every_key) {
    redis_fixture rf;
    store *s = sf_start(&rf);
    char id[UTIL_UUID_LEN + 1], other[UTIL_UUID_LEN + 1], token[33], pattern[80];
    store_blob key = sf_blob("a"), value = sf_blob("1");
    CHECK(util_uuid4(id) == CTXD_OK);
    store_new_context nc = {.id = id,
                            .now_ms = SF_NOW,
                            .settings = {"", "", "all", 3600, 1000, 0},
                            .state_keys = &key,
                            .state_values = &value,
                            .n_state = 1};
    CHECK(store_create(s, &nc) == CTXD_OK);
    store_settings st = sf_settings("all", 1000, 0);
    CHECK(sf_create(s, other, &st) == CTXD_OK);

    /* Messages with an idempotency record, then a held lock: every key. */
    store_context c;
    store_blob m = sf_message(1, "user", "hi", 5);
    CHECK(util_token(token) == CTXD_OK);
    CHECK(store_turn_read(s, id, token, SF_LOCK_MS, NULL, STORE_TURN_APPEND, 0, 0, NULL, &c) ==
          CTXD_OK);
    store_context_free(&c);
    store_append_req req = {.id = id,
                            .token = token,
                            .expected_next_seq = 1,
                            .now_ms = SF_NOW,
                            .messages = &m,
                            .n_messages = 1,
                            .idem_key = "k1",
                            .idem_record = sf_blob("99999999999999 rec"),
                            .idem_ttl_s = 60,
                            .max_messages = SF_HARD_CAP};
    CHECK(store_append(s, &req) == CTXD_OK);
    free(m.data);
    CHECK(store_turn_read(s, id, token, SF_LOCK_MS, NULL, STORE_TURN_APPEND, 0, 0, NULL, &c) ==
          CTXD_OK);
    store_context_free(&c);
    snprintf(pattern, sizeof(pattern), "ctxd:{%s}:*", id);
    CHECK(rf_count_keys(&rf, pattern) == 5);

    int deleted = -1;
    CHECK(store_delete(s, id, &deleted) == CTXD_OK);
    CHECK(deleted == 1);
    CHECK(rf_count_keys(&rf, pattern) == 0);
    CHECK(rf_count_keys(&rf, "ctxd:{index:*") + rf_count_keys(&rf, "ctxd:{*}:meta") ==
          rf_count_keys(&rf, "*")); /* the other's meta and its index bucket only */
    long long indexed = 0;
    for (int b = 0; b < 16; b++) {
        redisReply *r = rf_cmd(&rf, "ZSCORE ctxd:{index:default:%d} %s", b, id);
        CHECK(r && r->type == REDIS_REPLY_NIL);
        if (r) freeReplyObject(r);
        indexed += rf_int(&rf, "ZCARD ctxd:{index:default:%d}", b);
    }
    CHECK(indexed == 1);
    CHECK(rf_int(&rf, "EXISTS ctxd:index") == 0);
    CHECK(store_read(s, id, 0, 0, 0, &c) == CTXD_ERR && s->err == CTXD_E_NOT_FOUND);

    CHECK(store_delete(s, id, &deleted) == CTXD_OK);
    CHECK(deleted == 0);
    CHECK(store_read(s, other, 0, 0, 0, &c) == CTXD_OK);
    store_context_free(&c);
    sf_stop(&rf, s);
}

static int create_at(store *s, const char *id, int64_t now_ms) {
    store_new_context nc = {.id = id, .now_ms = now_ms, .settings = sf_settings("all", 1000, 0)};
    return store_create(s, &nc);
}

TEST(test_store_context_list_newest_first_with_cursor) {
    redis_fixture rf;
    store *s = sf_start(&rf);
    /* b and c share an activity time: the cursor must still split them. */
    const char *a = "aaaaaaaa-0000-4000-8000-000000000000",
               *b = "bbbbbbbb-0000-4000-8000-000000000000",
               *c = "cccccccc-0000-4000-8000-000000000000",
               *d = "dddddddd-0000-4000-8000-000000000000";
    CHECK(create_at(s, d, SF_NOW + 1000) == CTXD_OK);
    CHECK(create_at(s, b, SF_NOW + 2000) == CTXD_OK);
    CHECK(create_at(s, c, SF_NOW + 2000) == CTXD_OK);
    CHECK(create_at(s, a, SF_NOW + 3000) == CTXD_OK);
    CHECK(sf_append(s, a, 2, 5) == CTXD_OK); /* now SF_NOW: last */
    const char *want[4] = {c, b, d, a};

    store_list_item *items;
    size_t n, seen = 0;
    int64_t cur_ms = 0;
    char cur_id[UTIL_UUID_LEN + 1] = "";
    for (int page = 0; page < 3; page++) {
        CHECK(store_list(s, 3, cur_ms, cur_id, &items, &n) == CTXD_OK);
        CHECK(n == (page == 0 ? 3 : page == 1 ? 1 : 0));
        for (size_t i = 0; i < n && seen < 4; i++, seen++) {
            CHECK_STR(items[i].id, want[seen]);
            if (!strcmp(items[i].id, a)) {
                char text[16];
                CHECK(items[i].message_count == 2);
                CHECK(items[i].activity_ms == SF_NOW);
                CHECK_STR(sf_content(&items[i].last_message, text, sizeof(text)), "m2");
            } else {
                CHECK(items[i].message_count == 0 && items[i].last_message.data == NULL);
            }
        }
        if (n) {
            cur_ms = items[n - 1].activity_ms;
            snprintf(cur_id, sizeof(cur_id), "%s", items[n - 1].id);
        }
        store_list_free(items, n);
    }
    CHECK(seen == 4);
    sf_stop(&rf, s);
}

TEST(test_store_context_list_drops_expired_members) {
    redis_fixture rf;
    store *s = sf_start(&rf);
    char id[UTIL_UUID_LEN + 1];
    store_settings st = sf_settings("all", 1000, 0);
    CHECK(sf_create(s, id, &st) == CTXD_OK);
    /* A member whose context expired: only its index bucket still names it. */
    const char *gone = "eeeeeeee-0000-4000-8000-000000000000";
    char bucket[STORE_KEY_LEN];
    store_key_index_bucket("default", store_index_bucket(gone), bucket);
    CHECK(rf_int(&rf, "ZADD %s %lld %s", bucket, SF_NOW + 5, gone) == 1);
    store_list_item *items;
    size_t n;
    CHECK(store_list(s, 10, 0, "", &items, &n) == CTXD_OK);
    CHECK(n == 1);
    if (n == 1) CHECK_STR(items[0].id, id);
    store_list_free(items, n);
    redisReply *r = rf_cmd(&rf, "ZSCORE %s %s", bucket, gone);
    CHECK(r && r->type == REDIS_REPLY_NIL); /* dropped */
    if (r) freeReplyObject(r);
    sf_stop(&rf, s);
}

TEST(test_store_context_list_reads_the_index_of_0_4) {
    /* Contexts listed by ctxd 0.4 and before sit in one sorted set,
     * ctxd:index: they are listed with the rest, leave it when written to,
     * and an entry whose context is gone is dropped. */
    redis_fixture rf;
    store *s = sf_start(&rf);
    const char *old = "aaaaaaaa-0000-4000-8000-000000000000",
               *new = "bbbbbbbb-0000-4000-8000-000000000000",
               *gone = "cccccccc-0000-4000-8000-000000000000";
    CHECK(create_at(s, old, SF_NOW + 1000) == CTXD_OK);
    CHECK(create_at(s, new, SF_NOW + 2000) == CTXD_OK);
    for (int b = 0; b < 16; b++) /* as 0.4 left it: only in ctxd:index */
        freeReplyObject(rf_cmd(&rf, "ZREM ctxd:{index:default:%d} %s", b, old));
    freeReplyObject(rf_cmd(&rf, "ZADD ctxd:index %lld %s", (long long)SF_NOW + 1000, old));
    freeReplyObject(rf_cmd(&rf, "ZADD ctxd:index %lld %s", (long long)SF_NOW + 3000, gone));
    store_list_item *items;
    size_t n;
    CHECK(store_list(s, 10, 0, "", &items, &n) == CTXD_OK);
    CHECK(n == 2);
    if (n == 2) {
        CHECK_STR(items[0].id, new);
        CHECK_STR(items[1].id, old);
    }
    store_list_free(items, n);
    CHECK(rf_int(&rf, "ZCARD ctxd:index") == 1); /* gone was dropped */
    store_blob key = {(char *)"k", 1}, val = {(char *)"1", 1};
    CHECK(store_state_put(s, old, &key, &val, 1, 1000, SF_NOW + 4000, NULL) == CTXD_OK);
    /* Written: in its bucket now; listing meets the old entry and drops it. */
    CHECK(rf_int(&rf, "ZCARD ctxd:index") == 1);
    CHECK(store_list(s, 10, 0, "", &items, &n) == CTXD_OK);
    CHECK(n == 2 && !strcmp(items[0].id, old) && items[0].activity_ms == SF_NOW + 4000);
    if (n == 2) CHECK_STR(items[1].id, new);
    store_list_free(items, n);
    CHECK(rf_int(&rf, "EXISTS ctxd:index") == 0);
    /* Paging one by one lists each once. */
    CHECK(create_at(s, gone, SF_NOW + 500) == CTXD_OK);
    freeReplyObject(rf_cmd(&rf, "ZADD ctxd:index %lld %s", (long long)SF_NOW + 500, gone));
    CHECK(store_state_put(s, gone, &key, &val, 1, 1000, SF_NOW + 5000, NULL) == CTXD_OK);
    const char *want[3] = {gone, old, new};
    int64_t cursor = 0;
    char cursor_id[UTIL_UUID_LEN + 1] = "";
    for (int i = 0; i < 4; i++) {
        CHECK(store_list(s, 1, cursor, cursor_id, &items, &n) == CTXD_OK);
        CHECK(n == (i < 3 ? 1u : 0u));
        if (n == 1 && i < 3) {
            CHECK_STR(items[0].id, want[i]);
            cursor = items[0].activity_ms;
            snprintf(cursor_id, sizeof(cursor_id), "%s", items[0].id);
        }
        store_list_free(items, n);
    }
    sf_stop(&rf, s);
}

TEST_MAIN(T(test_store_context_list_reads_the_index_of_0_4), T(test_store_context_create_then_read),
          T(test_store_context_create_existing_id_exists),
          T(test_store_context_read_missing_not_found),
          T(test_store_context_read_pages_with_limit_and_before),
          T(test_store_context_settings_change_only_given),
          T(test_store_context_settings_ttl_zero_persists),
          T(test_store_context_state_put_replaces),
          T(test_store_context_state_patch_merges_and_deletes),
          T(test_store_context_state_patch_cap_on_merged_result),
          T(test_store_context_delete_removes_every_key),
          T(test_store_context_list_newest_first_with_cursor),
          T(test_store_context_list_drops_expired_members))
