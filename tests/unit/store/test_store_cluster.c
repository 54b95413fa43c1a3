/* test_store_cluster.c: Redis Cluster's key slots, the slot map a CLUSTER SLOTS reply gives, and
 * the redirects a cluster answers with. */
#include <string.h>

#include "../../../src/store/store_int.h"
#include "../test.h"

TEST(test_store_cluster_slot_of_keys) {
    /* The examples of the Redis Cluster specification. */
    CHECK(store_cluster_slot("123456789", 9) == 12739);
    CHECK(store_cluster_slot("foo", 3) == 12182);
    /* Only the hash tag counts, when it is not empty. */
    unsigned a = store_cluster_slot("{user1000}.following", 20);
    CHECK(a == store_cluster_slot("{user1000}.followers", 20));
    CHECK(a == store_cluster_slot("user1000", 8));
    CHECK(store_cluster_slot("foo{}{bar}", 10) == store_cluster_slot("foo{}{bar}", 10));
    CHECK(store_cluster_slot("foo{}{bar}", 10) != store_cluster_slot("bar", 3));
    CHECK(store_cluster_slot("foo{{bar}}zap", 13) == store_cluster_slot("{bar", 4));
    CHECK(store_cluster_slot("foo{bar}{zap}", 13) == store_cluster_slot("bar", 3));
    /* A context's keys and the key WAIT's mark is written to share a slot. */
    ctx_keys k;
    char mark[STORE_KEY_LEN];
    store_keys_init(&k, "acme", "0b5e4c1e-2f6a-4d7b-9c1d-3e2f1a0b9c8d");
    store_key_wait(k.all[K_META], mark);
    CHECK_STR(mark, "ctxd:wait:{acme:0b5e4c1e-2f6a-4d7b-9c1d-3e2f1a0b9c8d}");
    CHECK(store_cluster_slot(mark, strlen(mark)) ==
          store_cluster_slot(k.all[K_META], strlen(k.all[K_META])));
    store_key_wait("plain", mark);
    CHECK(store_cluster_slot(mark, strlen(mark)) == store_cluster_slot("plain", 5));
}

TEST(test_store_cluster_redirects) {
    unsigned slot = 0;
    ctxd_hostport to;
    CHECK(store_cluster_redirect("MOVED 3999 127.0.0.1:6381", &slot, &to) == STORE_REDIRECT_MOVED);
    CHECK(slot == 3999);
    CHECK_STR(to.host, "127.0.0.1");
    CHECK(to.port == 6381);
    CHECK(store_cluster_redirect("ASK 12182 10.0.0.7:7002", &slot, &to) == STORE_REDIRECT_ASK);
    CHECK(slot == 12182 && to.port == 7002);
    CHECK_STR(to.host, "10.0.0.7");
    /* An empty host: the node that answered (the caller fills it in). */
    CHECK(store_cluster_redirect("MOVED 1 :7000", &slot, &to) == STORE_REDIRECT_MOVED);
    CHECK_STR(to.host, "");
    CHECK(to.port == 7000);
    CHECK(store_cluster_redirect("MOVED 1 [::1]:7000", &slot, &to) == STORE_REDIRECT_MOVED);
    CHECK_STR(to.host, "[::1]");
    CHECK(store_cluster_redirect("TRYAGAIN Multiple keys request during rehashing of slot", &slot,
                                 &to) == STORE_REDIRECT_RETRY);
    CHECK(store_cluster_redirect("CLUSTERDOWN The cluster is down", &slot, &to) ==
          STORE_REDIRECT_RETRY);
    CHECK(store_cluster_redirect("ERR unknown command", &slot, &to) == STORE_REDIRECT_NONE);
    CHECK(store_cluster_redirect("MOVED 16384 h:1", &slot, &to) == STORE_REDIRECT_NONE);
    CHECK(store_cluster_redirect("MOVED x h:1", &slot, &to) == STORE_REDIRECT_NONE);
    CHECK(store_cluster_redirect("MOVED 5 h:0", &slot, &to) == STORE_REDIRECT_NONE);
    CHECK(store_cluster_redirect("MOVED 5 nohost", &slot, &to) == STORE_REDIRECT_NONE);
}

/* A CLUSTER SLOTS entry: start, end, then the master [host, port, id]. */
static redisReply *int_reply(long long v) {
    redisReply *r = calloc(1, sizeof(*r));
    r->type = REDIS_REPLY_INTEGER;
    r->integer = v;
    return r;
}

static redisReply *str_reply(const char *v) {
    redisReply *r = calloc(1, sizeof(*r));
    r->type = REDIS_REPLY_STRING;
    r->str = strdup(v);
    r->len = strlen(v);
    return r;
}

static redisReply *arr_reply(size_t n) {
    redisReply *r = calloc(1, sizeof(*r));
    r->type = REDIS_REPLY_ARRAY;
    r->elements = n;
    r->element = calloc(n, sizeof(*r->element));
    return r;
}

static redisReply *range(long long lo, long long hi, const char *host, int port) {
    redisReply *e = arr_reply(3), *m = arr_reply(3);
    e->element[0] = int_reply(lo);
    e->element[1] = int_reply(hi);
    m->element[0] = str_reply(host);
    m->element[1] = int_reply(port);
    m->element[2] = str_reply("0123456789abcdef0123456789abcdef01234567");
    e->element[2] = m;
    return e;
}

TEST(test_store_cluster_slot_map) {
    redisReply *r = arr_reply(3);
    r->element[0] = range(0, 5460, "10.0.0.1", 7000);
    r->element[1] = range(5461, 10922, "", 7001); /* "": the node asked */
    r->element[2] = range(10923, 16383, "10.0.0.3", 7002);
    CHECK(store_cluster_load(r, "10.0.0.2") == CTXD_OK);
    CHECK(store_cluster_mode() == STORE_MODE_CLUSTER);
    ctxd_hostport hp;
    CHECK(store_cluster_node(0, &hp) == CTXD_OK && hp.port == 7000);
    CHECK_STR(hp.host, "10.0.0.1");
    CHECK(store_cluster_node(5461, &hp) == CTXD_OK && hp.port == 7001);
    CHECK_STR(hp.host, "10.0.0.2");
    CHECK(store_cluster_node(16383, &hp) == CTXD_OK && hp.port == 7002);
    ctxd_hostport all[8];
    CHECK(store_cluster_nodes(all, 8) == 3);
    CHECK(!store_cluster_refresh_due()); /* every slot served: nothing to reload */
    /* A MOVED moves one slot and asks for a reload. */
    store_cluster_moved(5461, "10.0.0.4", 7003);
    CHECK(store_cluster_node(5461, &hp) == CTXD_OK && hp.port == 7003);
    CHECK(store_cluster_node(5462, &hp) == CTXD_OK && hp.port == 7001);
    CHECK(store_cluster_refresh_due());
    CHECK(!store_cluster_refresh_due()); /* one thread reloads; the others go on */
    freeReplyObject(r);

    /* Slots nobody serves (a master lost without a replica) have no node. */
    r = arr_reply(1);
    r->element[0] = range(0, 100, "10.0.0.1", 7000);
    CHECK(store_cluster_load(r, "x") == CTXD_OK);
    CHECK(store_cluster_node(100, &hp) == CTXD_OK);
    CHECK(store_cluster_node(101, &hp) == CTXD_ERR);
    freeReplyObject(r);
}

TEST_MAIN(T(test_store_cluster_slot_of_keys), T(test_store_cluster_redirects),
          T(test_store_cluster_slot_map))
