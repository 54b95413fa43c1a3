/* test_store_keys.c: the key layout the README documents, and every embedded script compiles. */
#include "store_fixture.h"

#include "../../../src/store/store_int.h"
#include "../test.h"

/* 1 if the KEYS reply holds name. */
static int has_key(const redisReply *r, const char *name) {
    for (size_t i = 0; r && i < r->elements; i++)
        if (!strcmp(r->element[i]->str, name)) return 1;
    return 0;
}

TEST(test_store_keys_layout) {
    redis_fixture rf;
    store *s = sf_start(&rf);
    char id[UTIL_UUID_LEN + 1], k[128], token[33];
    store_blob key = {(char *)"a", 1}, value = {(char *)"1", 1}, m = sf_message(1, "user", "hi", 5);
    CHECK(util_uuid4(id) == CTXD_OK && util_token(token) == CTXD_OK);
    store_new_context nc = {.id = id,
                            .now_ms = SF_NOW,
                            .settings = sf_settings("all", 1000, 0),
                            .state_keys = &key,
                            .state_values = &value,
                            .n_state = 1};
    CHECK(store_create(s, &nc) == CTXD_OK);
    store_context c;
    CHECK(store_turn_read(s, id, token, SF_LOCK_MS, NULL, STORE_TURN_APPEND, 0, 0, NULL, &c) ==
          CTXD_OK);
    store_context_free(&c);
    store_append_req req = {.id = id,
                            .token = token,
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
    CHECK(store_turn_read(s, id, token, SF_LOCK_MS, NULL, STORE_TURN_APPEND, 0, 0, NULL, &c) ==
          CTXD_OK);
    store_context_free(&c);

    /* Every key of a context carries the {id} hash tag (one cluster slot);
     * the listing's bucket is a key of its own slot. */
    redisReply *r = rf_cmd(&rf, "KEYS *");
    CHECK(r && r->type == REDIS_REPLY_ARRAY && r->elements == 6);
    static const char *const names[] = {"meta", "messages", "state", "idem", "lock"};
    for (int i = 0; i < 5; i++) CHECK(has_key(r, sf_key(k, sizeof(k), id, names[i])));
    char bucket[STORE_KEY_LEN];
    store_key_index_bucket("default", store_index_bucket(id), bucket);
    CHECK(has_key(r, bucket));
    CHECK(!has_key(r, "ctxd:index"));
    if (r) freeReplyObject(r);
    CHECK(rf_int(&rf, "HEXISTS %s k", sf_key(k, sizeof(k), id, "idem")) == 1);
    CHECK(rf_int(&rf, "HEXISTS %s a", sf_key(k, sizeof(k), id, "state")) == 1);
    char v[64];
    rf_str(&rf, v, sizeof(v), "HGET %s id", sf_key(k, sizeof(k), id, "meta"));
    CHECK_STR(v, id);

    /* The turn queue: a waiter's place, and its wake list. */
    store_turn_queue q = {.ttl_ms = 5000};
    CHECK(store_turn_read(s, id, "waiter", SF_LOCK_MS, NULL, STORE_TURN_APPEND, 0, 0, &q, &c) ==
          CTXD_ERR);
    CHECK(s->err == CTXD_E_BUSY);
    CHECK(rf_int(&rf, "LLEN %s", sf_key(k, sizeof(k), id, "queue")) == 1);
    CHECK(store_lock_release(s, id, token) == CTXD_OK);
    CHECK(rf_int(&rf, "LLEN %s", sf_key(k, sizeof(k), id, "wake:waiter")) == 1);
    CHECK(rf_count_keys(&rf, "*") == 7);

    /* An idempotent create's claim lives apart from any context. */
    int claimed = 0;
    char first[UTIL_UUID_LEN + 1];
    uint64_t fp = 0;
    CHECK(store_create_claim(s, "idem-1", 7, id, 60, &claimed, first, &fp) == CTXD_OK);
    CHECK(claimed == 1);
    CHECK(rf_int(&rf, "EXISTS ctxd:create:{idem-1}") == 1);
    CHECK(store_create_claim(s, "idem-1", 8, "x", 60, &claimed, first, &fp) == CTXD_OK);
    CHECK(claimed == 0 && fp == 7);
    CHECK_STR(first, id);
    CHECK(store_create_unclaim(s, "idem-1") == CTXD_OK);
    CHECK(rf_int(&rf, "EXISTS ctxd:create:{idem-1}") == 0);
    sf_stop(&rf, s);
}

TEST(test_store_keys_every_script_compiles) {
    redis_fixture rf;
    rf_start(&rf);
    char shas[S_COUNT][41];
    for (int i = 0; i < S_COUNT; i++) {
        const char *text = store_script_text(i);
        CHECK(text != NULL);
        if (!text) continue;
        redisReply *r = rf_cmd(&rf, "SCRIPT LOAD %s", text);
        CHECK(r && r->type == REDIS_REPLY_STRING && r->len == 40);
        if (r && r->type == REDIS_REPLY_ERROR) fprintf(stderr, "  script %d: %s\n", i, r->str);
        snprintf(shas[i], sizeof(shas[i]), "%s", r && r->type == REDIS_REPLY_STRING ? r->str : "");
        if (r) freeReplyObject(r);
    }
    /* Each script is its own: no two texts are the same. */
    for (int i = 0; i < S_COUNT; i++)
        for (int j = i + 1; j < S_COUNT; j++) CHECK(strcmp(shas[i], shas[j]) != 0);
    /* Context scripts name their keys in the KEYS order of store_keys.c. */
    const char *read = store_script_text(S_READ);
    CHECK(read && strstr(read, "local meta, messages, state, idem, lock, queue, wake = "
                               "KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], "
                               "KEYS[7]\n") == read);
    rf_stop(&rf);
}

/* The hash tag of key ("" when it has none), as Redis Cluster reads it. */
static void hash_tag(const char *key, char *out, size_t len) {
    const char *o = strchr(key, '{'), *c = o ? strchr(o + 1, '}') : NULL;
    out[0] = '\0';
    if (o && c && c > o + 1) snprintf(out, len, "%.*s", (int)(c - o - 1), o + 1);
}

/* Every key a context script gets (and each waiting turn's wake list) has
 * the context's hash tag, so on a cluster each script touches one slot. */
TEST(test_store_keys_one_slot_per_context) {
    const char *tenants[2] = {"default", "acme"};
    for (int t = 0; t < 2; t++) {
        ctx_keys k;
        store_keys_init(&k, tenants[t], "0b5e4c1e-2f6a-4d7b-9c1d-3e2f1a0b9c8d");
        char want[STORE_KEY_LEN], got[STORE_KEY_LEN], wake[STORE_KEY_LEN];
        snprintf(want, sizeof(want), "%s0b5e4c1e-2f6a-4d7b-9c1d-3e2f1a0b9c8d", t ? "acme:" : "");
        for (int i = 0; i < K_COUNT; i++) {
            hash_tag(k.all[i], got, sizeof(got));
            CHECK_STR(got, want);
        }
        store_key_wake(&k, "token-1", wake);
        hash_tag(wake, got, sizeof(got));
        CHECK_STR(got, want);
    }
}

TEST_MAIN(T(test_store_keys_layout), T(test_store_keys_every_script_compiles),
          T(test_store_keys_one_slot_per_context))
