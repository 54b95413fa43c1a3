/* test_store_watch.c: a turn's append without a script writes what append.lua writes, and leaves
 * the script to decide whenever anything changed after the turn's read. */
#include "store_fixture.h"
#include "../../../src/store/store_conn.h"

#include "../test.h"

/* Calls of a command so far (INFO commandstats). */
static long long calls(redis_fixture *rf, const char *cmd) {
    redisReply *r = rf_cmd(rf, "INFO commandstats");
    char want[64];
    long long n = 0;
    snprintf(want, sizeof(want), "cmdstat_%s:calls=", cmd);
    if (r && r->type == REDIS_REPLY_STRING) {
        const char *p = strstr(r->str, want);
        if (p) n = strtoll(p + strlen(want), NULL, 10);
    }
    if (r) freeReplyObject(r);
    return n;
}

static void key_of(char out[STORE_KEY_LEN], const char *id, const char *what) {
    ctx_keys k;
    store_keys_init(&k, "default", id);
    int i = !strcmp(what, "meta")       ? K_META
            : !strcmp(what, "messages") ? K_MESSAGES
            : !strcmp(what, "idem")     ? K_IDEM
            : !strcmp(what, "lock")     ? K_LOCK
                                        : K_STATE;
    snprintf(out, STORE_KEY_LEN, "%s", k.all[i]);
}

/* A key's whole value as one comparable text (hash fields sorted by Redis'
 * own order is not stable: fields are looked up one by one from a's). */
static void dump(redis_fixture *rf, const char *id, const char *what, char *out, size_t cap) {
    char key[STORE_KEY_LEN];
    key_of(key, id, what);
    size_t n = 0;
    out[0] = '\0';
    redisReply *r = !strcmp(what, "messages") ? rf_cmd(rf, "LRANGE %s 0 -1", key)
                                              : rf_cmd(rf, "HGETALL %s", key);
    if (!r) return;
    int hash = strcmp(what, "messages") != 0;
    /* Hash fields in a fixed order: sorted by name (insertion sort, few). */
    size_t idx[256], m = 0;
    for (size_t i = 0; i < r->elements && m < 256; i += hash ? 2 : 1) {
        size_t j = m++;
        while (hash && j > 0 && strcmp(r->element[idx[j - 1]]->str, r->element[i]->str) > 0) {
            idx[j] = idx[j - 1];
            j--;
        }
        idx[j] = i;
    }
    for (size_t i = 0; i < m; i++) {
        const char *f = r->element[idx[i]]->str;
        const char *v = hash ? r->element[idx[i] + 1]->str : "";
        if (hash && !strcmp(f, "id")) continue; /* the contexts' own ids differ */
        n += (size_t)snprintf(out + n, cap > n ? cap - n : 0, "%s=%s|", f, v);
    }
    freeReplyObject(r);
}

/* One turn to run on two like contexts, with and without the script. */
typedef struct scenario {
    const char *name;
    int64_t keep, ttl;
    size_t prefill;
    const char *roles; /* the new messages: u(ser) or a(ssistant) each */
    const char *idem_key;
    int64_t held_ms;
    const char *prompt_sig;
    int if_match; /* send If-Match with the version read */
    int script;   /* the watched append must leave it to the script */
} scenario;

/* Run sc's turn on a new context; force_script: disarm the watch first.
 * Returns how many EVALSHA the append made (-1: the turn failed). */
static long long run_turn(redis_fixture *rf, store *s, const scenario *sc, int force_script,
                          char id[UTIL_UUID_LEN + 1]) {
    store_settings st = sf_settings("window", 100000, sc->keep);
    st.ttl_seconds = sc->ttl;
    store_context c;
    store_blob m[8];
    char token[33], text[16], version[32] = "", idem[64];
    size_t n = strlen(sc->roles);
    if (sf_create(s, id, &st) || (sc->prefill && sf_append(s, id, sc->prefill, 5)) ||
        util_token(token))
        return -1;
    for (int round = 0; round < 2; round++) { /* twice: the average turn moves */
        snprintf(idem, sizeof(idem), "%s-%d", sc->idem_key ? sc->idem_key : "", round);
        if (store_turn_read(s, id, token, SF_LOCK_MS, sc->idem_key ? idem : NULL, STORE_TURN_WINDOW,
                            5, 0, NULL, &c))
            return -1;
        int64_t seq = c.next_seq;
        snprintf(version, sizeof(version), "7 %" PRId64, c.version);
        store_context_free(&c);
        if (force_script) ((store_impl *)s->impl)->watch.armed = 0;
        for (size_t i = 0; i < n; i++) {
            snprintf(text, sizeof(text), "n%zu", (size_t)seq + i);
            m[i] =
                sf_message(seq + (int64_t)i, sc->roles[i] == 'u' ? "user" : "assistant", text, 3);
        }
        store_append_req req = {.id = id,
                                .token = token,
                                .expected_next_seq = seq,
                                .now_ms = SF_NOW + 1000 * round,
                                .messages = m,
                                .n_messages = n,
                                .idem_key = sc->idem_key ? idem : NULL,
                                .idem_record = sf_blob("99999999999999 rec"),
                                .idem_ttl_s = 600,
                                .max_messages = SF_HARD_CAP,
                                .prompt_sig = sc->prompt_sig,
                                .prompt_tokens = 77,
                                .held_ms = sc->held_ms + 7 * round,
                                .if_match = sc->if_match ? version : NULL};
        long long before = calls(rf, "evalsha");
        int rc = store_append(s, &req);
        long long evals = calls(rf, "evalsha") - before;
        sf_blobs_free(m, n);
        if (rc) return -1;
        if (round == 1) return evals;
        if (evals != (sc->script || force_script)) return -1;
    }
    return -1;
}

TEST(test_store_watch_append_writes_what_the_script_writes) {
    static const scenario cases[] = {
        {"pairs, trimmed", 4, 0, 6, "ua", NULL, 0, NULL, 0, 0},
        {"trim starts past an answer", 3, 0, 4, "ua", NULL, 0, NULL, 0, 0},
        {"no question among the kept", 3, 0, 2, "aa", NULL, 0, NULL, 0, 0},
        {"more new than kept", 2, 0, 4, "uau", NULL, 0, NULL, 0, 0},
        {"everything else", 0, 3600, 3, "ua", "idem-1", 120, "1:0:3:abcd", 1, 0},
        {"no trim yet", 10, 0, 2, "ua", NULL, 40, "sig", 0, 0},
        {"a window past the tail read", 40, 0, 40, "ua", NULL, 0, NULL, 0, 1},
    };
    redis_fixture rf;
    store *s = sf_start(&rf);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const scenario *sc = &cases[i];
        char fast[UTIL_UUID_LEN + 1], slow[UTIL_UUID_LEN + 1];
        long long fast_evals = run_turn(&rf, s, sc, 0, fast);
        long long slow_evals = run_turn(&rf, s, sc, 1, slow);
        if (fast_evals != sc->script || slow_evals != 1)
            fprintf(stderr, "  %s: %lld and %lld EVALSHA\n", sc->name, fast_evals, slow_evals);
        CHECK(fast_evals == sc->script);
        CHECK(slow_evals == 1);
        static const char *what[] = {"meta", "messages", "idem"};
        for (size_t w = 0; w < 3; w++) {
            static char a[65536], b[65536];
            dump(&rf, fast, what[w], a, sizeof(a));
            dump(&rf, slow, what[w], b, sizeof(b));
            if (strcmp(a, b)) fprintf(stderr, "  %s: %s differs\n", sc->name, what[w]);
            CHECK_STR(a, b);
        }
        char kf[STORE_KEY_LEN], ks[STORE_KEY_LEN];
        key_of(kf, fast, "meta");
        key_of(ks, slow, "meta");
        CHECK((rf_int(&rf, "TTL %s", kf) > 0) == (sc->ttl > 0));
        CHECK((rf_int(&rf, "TTL %s", ks) > 0) == (sc->ttl > 0));
        key_of(kf, fast, "messages");
        CHECK((rf_int(&rf, "TTL %s", kf) > 0) == (sc->ttl > 0));
        key_of(kf, fast, "lock");
        CHECK(rf_int(&rf, "EXISTS %s", kf) == 0);
    }
    sf_stop(&rf, s);
}

/* A turn's read on s with the lock; returns next_seq (-1: failed). */
static int64_t read_locked(store *s, const char *id, const char *token) {
    return sf_lock(s, id, token, STORE_TURN_WINDOW);
}

/* Append user+assistant at seq under token: the store_append result. */
static int append_pair(store *s, const char *id, const char *token, int64_t seq) {
    store_blob m[2] = {sf_message(seq, "user", "q", 3), sf_message(seq + 1, "assistant", "a", 3)};
    store_append_req req = {.id = id,
                            .token = token,
                            .expected_next_seq = seq,
                            .now_ms = SF_NOW,
                            .messages = m,
                            .n_messages = 2,
                            .max_messages = SF_HARD_CAP};
    int rc = store_append(s, &req);
    sf_blobs_free(m, 2);
    return rc;
}

TEST(test_store_watch_write_between_read_and_append_goes_to_the_script) {
    redis_fixture rf;
    store *s = sf_start(&rf), *other = store_new(&rf.cfg);
    char id[UTIL_UUID_LEN + 1];
    store_settings st = sf_settings("window", 1000, 0);
    CHECK(other != NULL);
    CHECK(sf_create(s, id, &st) == CTXD_OK);
    CHECK(read_locked(s, id, "tokA") == 1);
    /* Another process writes the state meanwhile (version 1 -> 2). */
    store_blob key = sf_blob("k"), value = sf_blob("1");
    CHECK(store_state_put(other, id, &key, &value, 1, 1000, SF_NOW, NULL) == CTXD_OK);
    long long evals = calls(&rf, "evalsha");
    CHECK(append_pair(s, id, "tokA", 1) == CTXD_OK);
    CHECK(calls(&rf, "evalsha") == evals + 1); /* EXEC refused; the script appended */
    store_context c;
    CHECK(store_read(s, id, STORE_READ_MESSAGES | STORE_READ_STATE, 0, 0, &c) == CTXD_OK);
    CHECK(c.version == 3 && c.next_seq == 3 && c.n_messages == 2 && c.n_state == 1);
    store_context_free(&c);

    /* The lock renewed (by the turn itself) between: the script again. */
    CHECK(read_locked(s, id, "tokB") == 3);
    CHECK(store_lock_renew(s, id, "tokB", SF_LOCK_MS) == CTXD_OK);
    evals = calls(&rf, "evalsha");
    CHECK(append_pair(s, id, "tokB", 3) == CTXD_OK);
    CHECK(calls(&rf, "evalsha") == evals + 1);

    /* Deleted between: not found, and nothing left behind. */
    CHECK(read_locked(s, id, "tokC") == 5);
    int deleted = 0;
    CHECK(store_delete(other, id, &deleted) == CTXD_OK && deleted);
    CHECK(append_pair(s, id, "tokC", 5) == CTXD_ERR);
    CHECK(s->err == CTXD_E_NOT_FOUND);
    CHECK(rf_count_keys(&rf, "ctxd:{*}:*") == 0);
    store_free(other);
    sf_stop(&rf, s);
}

TEST(test_store_watch_waiter_between_gets_the_lock) {
    redis_fixture rf;
    store *s = sf_start(&rf), *other = store_new(&rf.cfg);
    char id[UTIL_UUID_LEN + 1], k[STORE_KEY_LEN], who[64];
    store_settings st = sf_settings("window", 1000, 0);
    CHECK(other != NULL);
    CHECK(sf_create(s, id, &st) == CTXD_OK);
    CHECK(read_locked(s, id, "tokA") == 1);
    /* A turn of another process queues behind tokA. */
    store_turn_queue q = {.ttl_ms = 5000};
    store_context c;
    CHECK(store_turn_read(other, id, "tokB", SF_LOCK_MS, NULL, STORE_TURN_WINDOW, 5, 0, &q, &c) ==
          CTXD_ERR);
    CHECK(other->err == CTXD_E_BUSY && q.ahead == 1);
    CHECK(append_pair(s, id, "tokA", 1) == CTXD_OK);
    key_of(k, id, "lock");
    rf_str(&rf, who, sizeof(who), "GET %s", k);
    CHECK_STR(who, "tokB"); /* passed on, not freed */
    store_free(other);
    sf_stop(&rf, s);
}

TEST(test_store_watch_left_by_a_turn_that_did_not_append_ends) {
    redis_fixture rf;
    store *s = sf_start(&rf), *other = store_new(&rf.cfg);
    char id[UTIL_UUID_LEN + 1];
    store_settings st = sf_settings("window", 1000, 0);
    CHECK(other != NULL);
    CHECK(sf_create(s, id, &st) == CTXD_OK);
    /* A turn reads, then fails upstream and only releases. */
    CHECK(read_locked(s, id, "tokA") == 1);
    CHECK(store_lock_release(s, id, "tokA") == CTXD_OK);
    /* A write elsewhere touches the watched keys; the next turn on this
     * connection must not see its transaction refused for it. */
    store_blob key = sf_blob("k"), value = sf_blob("1");
    CHECK(store_state_put(other, id, &key, &value, 1, 1000, SF_NOW, NULL) == CTXD_OK);
    long long evals = calls(&rf, "evalsha");
    CHECK(read_locked(s, id, "tokB") == 1);
    CHECK(append_pair(s, id, "tokB", 1) == CTXD_OK);
    CHECK(calls(&rf, "evalsha") == evals); /* neither the lock nor the append needed a script */
    /* A busy read sets WATCH too, without taking the lock. */
    CHECK(read_locked(s, id, "tokC") == 3);
    CHECK(read_locked(other, id, "tokD") == -1 && other->err == CTXD_E_BUSY);
    CHECK(append_pair(s, id, "tokC", 3) == CTXD_OK);
    CHECK(store_state_put(other, id, &key, &value, 1, 1000, SF_NOW, NULL) == CTXD_OK);
    CHECK(read_locked(other, id, "tokD") == 5);
    store_free(other);
    sf_stop(&rf, s);
}

TEST_MAIN(T(test_store_watch_append_writes_what_the_script_writes),
          T(test_store_watch_write_between_read_and_append_goes_to_the_script),
          T(test_store_watch_waiter_between_gets_the_lock),
          T(test_store_watch_left_by_a_turn_that_did_not_append_ends))
