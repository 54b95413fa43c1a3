/* test_store_conn.c: scripts loaded on connect, EVAL fallback, Redis down, restarts. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "store_fixture.h"

#include "../../../src/store/store_int.h"
#include "../test.h"

/* How many of the store's scripts Redis has cached (SCRIPT EXISTS), their
 * SHA1s computed by Redis itself without loading them. */
static int scripts_cached(redis_fixture *rf) {
    int n = 0;
    for (int i = 0; i < S_COUNT; i++) {
        char sha[64];
        rf_str(rf, sha, sizeof(sha), "EVAL %s 0 %s", "return redis.sha1hex(ARGV[1])",
               store_script_text(i));
        redisReply *r = rf_cmd(rf, "SCRIPT EXISTS %s", sha);
        if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 1) n += (int)r->element[0]->integer;
        if (r) freeReplyObject(r);
    }
    return n;
}

TEST(test_store_conn_loads_scripts_on_connect) {
    redis_fixture rf;
    store *s = sf_start(&rf);
    CHECK(scripts_cached(&rf) == 0);
    CHECK(store_ping(s) == CTXD_OK);
    CHECK(scripts_cached(&rf) == S_COUNT);
    sf_stop(&rf, s);
}

TEST(test_store_conn_script_flush_falls_back_to_eval) {
    redis_fixture rf;
    store *s = sf_start(&rf);
    char id[UTIL_UUID_LEN + 1];
    store_settings st = sf_settings("window", 1000, 0);
    CHECK(store_ping(s) == CTXD_OK);
    redisReply *r = rf_cmd(&rf, "SCRIPT FLUSH");
    if (r) freeReplyObject(r);
    CHECK(scripts_cached(&rf) == 0);
    /* Every kind of script still runs on the same connection. */
    CHECK(sf_create(s, id, &st) == CTXD_OK);
    CHECK(sf_append(s, id, 4, 5) == CTXD_OK);
    r = rf_cmd(&rf, "SCRIPT FLUSH");
    if (r) freeReplyObject(r);
    store_context c;
    CHECK(store_read(s, id, STORE_READ_MESSAGES, 2, 3, &c) == CTXD_OK);
    CHECK(c.n_messages == 2 && sf_seq(&c.messages[0]) == 1);
    store_context_free(&c);
    store_settings change = STORE_SETTINGS_UNCHANGED;
    change.model = "m2";
    CHECK(store_set_settings(s, id, &change, SF_NOW, NULL) == CTXD_OK);
    store_list_item *items;
    size_t n;
    CHECK(store_list(s, 10, 0, "", &items, &n) == CTXD_OK);
    CHECK(n == 1);
    store_list_free(items, n);
    int deleted;
    CHECK(store_delete(s, id, &deleted) == CTXD_OK && deleted == 1);
    sf_stop(&rf, s);
}

/* A config whose Redis is url (defaults otherwise). */
static void config_for(ctxd_config *cfg, const char *url) {
    signal(SIGPIPE, SIG_IGN);
    char err[256];
    int exit_now;
    char *argv[] = {(char *)"ctxd", NULL};
    rf_clear_env();
    CHECK(config_load(cfg, 1, argv, err, sizeof(err), &exit_now) == CTXD_OK);
    CHECK(config_parse_redis_url(cfg, url, err, sizeof(err)) == CTXD_OK);
    cfg->redis_timeout_ms = 500;
}

/* Every kind of call fails with CTXD_E_REDIS naming addr. */
static void check_down(store *s, const char *addr) {
    store_context c;
    char id[UTIL_UUID_LEN + 1];
    store_settings st = sf_settings("all", 100, 0);
    CHECK(store_ping(s) == CTXD_ERR);
    CHECK(s->err == CTXD_E_REDIS);
    CHECK(strstr(s->errstr, addr) != NULL);
    if (!strstr(s->errstr, addr)) fprintf(stderr, "  errstr: %s\n", s->errstr);
    CHECK(store_read(s, "aaaaaaaa-0000-4000-8000-000000000000", 0, 0, 0, &c) == CTXD_ERR);
    CHECK(s->err == CTXD_E_REDIS && strstr(s->errstr, addr) != NULL);
    CHECK(sf_create(s, id, &st) == CTXD_ERR);
    CHECK(s->err == CTXD_E_REDIS && strstr(s->errstr, addr) != NULL);
    CHECK(store_turn_read(s, id, "t", 1000, NULL, STORE_TURN_WINDOW, 1, 1, NULL, &c) == CTXD_ERR);
    CHECK(s->err == CTXD_E_REDIS && strstr(s->errstr, addr) != NULL);
}

TEST(test_store_conn_redis_down_unix_socket) {
    char dir[64] = "/tmp/ctxd-unit-nothing-XXXXXX", url[128], sock[100];
    ctxd_config cfg;
    CHECK(mkdtemp(dir) != NULL);
    snprintf(sock, sizeof(sock), "%s/redis.sock", dir);
    snprintf(url, sizeof(url), "unix://%s", sock);
    config_for(&cfg, url);
    store *s = store_new(&cfg);
    check_down(s, sock);
    store_free(s);
    config_free(&cfg);
    rmdir(dir);
}

TEST(test_store_conn_redis_down_tcp) {
    /* A port that was free a moment ago: nothing listens there. */
    int fd = socket(AF_INET, SOCK_STREAM, 0), port = 0;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    CHECK(fd >= 0 && !bind(fd, (struct sockaddr *)&a, sizeof(a)) &&
          !getsockname(fd, (struct sockaddr *)&a, &al));
    port = ntohs(a.sin_port);
    close(fd);
    char url[64], addr[32];
    ctxd_config cfg;
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d/0", port);
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    config_for(&cfg, url);
    store *s = store_new(&cfg);
    check_down(s, addr);
    store_free(s);
    config_free(&cfg);
}

TEST(test_store_conn_survives_redis_restart) {
    redis_fixture rf;
    store *s = sf_start(&rf);
    char id[UTIL_UUID_LEN + 1];
    store_settings st = sf_settings("all", 100, 0);
    store_context c;
    CHECK(sf_create(s, id, &st) == CTXD_OK);
    /* Gone: a sentence naming the socket. */
    rf_kill(&rf);
    CHECK(store_read(s, id, 0, 0, 0, &c) == CTXD_ERR);
    CHECK(s->err == CTXD_E_REDIS && strstr(s->errstr, rf.sock) != NULL);
    /* Back, empty: the next call reconnects and loads the scripts again. */
    rf_restart(&rf);
    CHECK(store_read(s, id, 0, 0, 0, &c) == CTXD_ERR);
    CHECK(s->err == CTXD_E_NOT_FOUND);
    CHECK(sf_create(s, id, &st) == CTXD_OK);
    CHECK(scripts_cached(&rf) == S_COUNT);
    /* Restarted behind the store's back: a read retries on a new connection. */
    rf_restart(&rf);
    CHECK(store_read(s, id, 0, 0, 0, &c) == CTXD_ERR);
    CHECK(s->err == CTXD_E_NOT_FOUND);
    CHECK(store_ping(s) == CTXD_OK);
    sf_stop(&rf, s);
}

TEST_MAIN(T(test_store_conn_loads_scripts_on_connect),
          T(test_store_conn_script_flush_falls_back_to_eval),
          T(test_store_conn_redis_down_unix_socket), T(test_store_conn_redis_down_tcp),
          T(test_store_conn_survives_redis_restart))
