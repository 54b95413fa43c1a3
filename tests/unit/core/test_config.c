/* test_config.c: listen and Redis URL parsing, defaults, environment and flags. */
#include "../../../src/core/config.c"

#include "../test.h"

/* argv strings are never written by config_load. */
#define S(x) ((char *)(x))

static int load(ctxd_config *cfg, int argc, char **argv, char *err) {
    int exit_now;
    return config_load(cfg, argc, argv, err, 512, &exit_now);
}

TEST(test_config_defaults) {
    ctxd_config cfg;
    char err[512] = "";
    char *argv[] = {S("ctxd"), NULL};
    unsetenv("ANTHROPIC_API_KEY");
    unsetenv("OPENAI_API_KEY");
    CHECK(load(&cfg, 1, argv, err) == CTXD_OK);
    CHECK_STR(cfg.listen_host, "127.0.0.1");
    CHECK(cfg.listen_port == 61909);
    CHECK_STR(cfg.redis_host, "127.0.0.1");
    CHECK(cfg.redis_port == 6379);
    CHECK(cfg.provider == CTXD_PROVIDER_ECHO);
    CHECK_STR(cfg.model, "echo");
    CHECK_STR(cfg.strategy, "all");
    config_free(&cfg);
}

TEST(test_config_listen_port_619009_is_refused) {
    char host[64], err[512];
    int port;
    CHECK(config_parse_listen("127.0.0.1:619009", host, sizeof(host), &port, err, sizeof(err)) ==
          CTXD_ERR);
    CHECK(strstr(err, "65535") != NULL);
    CHECK(strstr(err, "61909") != NULL);
    CHECK(config_parse_listen("127.0.0.1:0", host, sizeof(host), &port, err, sizeof(err)) ==
          CTXD_ERR);
    CHECK(config_parse_listen("127.0.0.1:65535", host, sizeof(host), &port, err, sizeof(err)) ==
          CTXD_OK);
    CHECK(port == 65535);
    CHECK(config_parse_listen("localhost:61909", host, sizeof(host), &port, err, sizeof(err)) ==
          CTXD_OK);
    CHECK_STR(host, "127.0.0.1");
    CHECK(config_parse_listen("256.1:80", host, sizeof(host), &port, err, sizeof(err)) == CTXD_ERR);
    CHECK(config_parse_listen("61909", host, sizeof(host), &port, err, sizeof(err)) == CTXD_ERR);
}

TEST(test_config_redis_urls) {
    ctxd_config cfg;
    char err[512];
    memset(&cfg, 0, sizeof(cfg));
    CHECK(config_parse_redis_url(&cfg, "redis://:p%40ss@db.local:6380/3", err, sizeof(err)) ==
          CTXD_OK);
    CHECK_STR(cfg.redis_host, "db.local");
    CHECK(cfg.redis_port == 6380);
    CHECK(cfg.redis_db == 3);
    CHECK_STR(cfg.redis_password, "p@ss");
    CHECK_STR(cfg.redis_user, "");
    CHECK(config_parse_redis_url(&cfg, "redis://alice:pw@h", err, sizeof(err)) == CTXD_OK);
    CHECK_STR(cfg.redis_user, "alice");
    CHECK(cfg.redis_port == 6379);
    CHECK(config_parse_redis_url(&cfg, "unix:///run/redis.sock?db=2", err, sizeof(err)) == CTXD_OK);
    CHECK_STR(cfg.redis_socket, "/run/redis.sock");
    CHECK(cfg.redis_db == 2);
    CHECK(config_parse_redis_url(&cfg, "unix:///s.sock?db=1&password=a%26b", err, sizeof(err)) ==
          CTXD_OK);
    CHECK_STR(cfg.redis_password, "a&b");
    CHECK(cfg.redis_db == 1);
    CHECK(config_parse_redis_url(&cfg, "unix:///s.sock?x=1", err, sizeof(err)) == CTXD_ERR);
    CHECK(config_parse_redis_url(&cfg, "http://h", err, sizeof(err)) == CTXD_ERR);
    CHECK(config_parse_redis_url(&cfg, "redis://u:topsecret@h:0/1", err, sizeof(err)) == CTXD_ERR);
    CHECK(strstr(err, "topsecret") == NULL && strstr(err, "redis://u:***@h:0/1") != NULL);
    CHECK(config_parse_redis_url(&cfg, "unix://rel.sock?password=topsecret", err, sizeof(err)) ==
          CTXD_ERR);
    CHECK(strstr(err, "topsecret") == NULL && strstr(err, "password=***") != NULL);
    CHECK(config_parse_redis_url(&cfg, "redis://h:0", err, sizeof(err)) == CTXD_ERR);
    CHECK(config_parse_redis_url(&cfg, "redis://h/x", err, sizeof(err)) == CTXD_ERR);
    CHECK(strstr(err, "CTXD_REDIS_URL") != NULL);
}

TEST(test_config_cluster_seeds) {
    ctxd_config cfg;
    char err[512], addr[300];
    memset(&cfg, 0, sizeof(cfg));
    CHECK(config_parse_redis_url(&cfg, "redis://:pw@n1:7000,n2,10.0.0.3:7002", err, sizeof(err)) ==
          CTXD_OK);
    CHECK(cfg.redis_n_seeds == 3);
    CHECK_STR(cfg.redis_seeds[0].host, "n1");
    CHECK(cfg.redis_seeds[0].port == 7000);
    CHECK_STR(cfg.redis_seeds[1].host, "n2");
    CHECK(cfg.redis_seeds[1].port == 6379);
    CHECK(cfg.redis_seeds[2].port == 7002);
    CHECK_STR(cfg.redis_host, "n1"); /* the first seed */
    CHECK(cfg.redis_port == 7000);
    CHECK_STR(cfg.redis_password, "pw");
    config_redis_addr(&cfg, addr, sizeof(addr));
    CHECK_STR(addr, "n1:7000,n2:6379,10.0.0.3:7002");
    CHECK(config_parse_redis_url(&cfg, "redis://h:7000", err, sizeof(err)) == CTXD_OK);
    CHECK(cfg.redis_n_seeds == 1);
    CHECK(config_parse_redis_url(&cfg, "redis://a,,b", err, sizeof(err)) == CTXD_ERR);
    CHECK(config_parse_redis_url(&cfg, "redis://a:1,b:70000", err, sizeof(err)) == CTXD_ERR);
    CHECK(strstr(err, "65535") != NULL);
    CHECK(config_parse_redis_url(&cfg, "redis://a,b,c,d,e,f,g,h,i", err, sizeof(err)) == CTXD_ERR);
    CHECK(strstr(err, "more than 8 nodes") != NULL);
}

TEST(test_config_sentinel_urls) {
    ctxd_config cfg;
    char err[512], addr[300];
    memset(&cfg, 0, sizeof(cfg));
    CHECK(config_parse_redis_url(&cfg, "redis+sentinel://s1:26380,s2,10.0.0.3:5000/mymaster", err,
                                 sizeof(err)) == CTXD_OK);
    CHECK_STR(cfg.redis_sentinel_master, "mymaster");
    CHECK(cfg.redis_n_sentinels == 3);
    CHECK_STR(cfg.redis_sentinels[0].host, "s1");
    CHECK(cfg.redis_sentinels[0].port == 26380);
    CHECK_STR(cfg.redis_sentinels[1].host, "s2");
    CHECK(cfg.redis_sentinels[1].port == 26379);
    CHECK(cfg.redis_sentinels[2].port == 5000);
    CHECK(cfg.redis_db == 0);
    CHECK_STR(cfg.redis_password, "");
    config_redis_addr(&cfg, addr, sizeof(addr));
    CHECK_STR(addr, "sentinel master mymaster via s1:26380,s2:26379,10.0.0.3:5000");

    CHECK(config_parse_redis_url(&cfg, "redis+sentinel://app:p%40ss@s1/m/4?sentinel_password=s%26p",
                                 err, sizeof(err)) == CTXD_OK);
    CHECK_STR(cfg.redis_user, "app");
    CHECK_STR(cfg.redis_password, "p@ss");
    CHECK_STR(cfg.redis_sentinel_password, "s&p");
    CHECK(cfg.redis_db == 4);
    CHECK(cfg.redis_n_sentinels == 1);

    /* A plain URL afterwards forgets the Sentinels. */
    CHECK(config_parse_redis_url(&cfg, "redis://h:7000", err, sizeof(err)) == CTXD_OK);
    CHECK_STR(cfg.redis_sentinel_master, "");
    config_redis_addr(&cfg, addr, sizeof(addr));
    CHECK_STR(addr, "h:7000");

    static const char *const bad[] = {
        "redis+sentinel://s1:26379",        /* no master name */
        "redis+sentinel://s1:26379/",       /* empty master name */
        "redis+sentinel:///m",              /* no Sentinel */
        "redis+sentinel://s1,,s2/m",        /* empty Sentinel */
        "redis+sentinel://s1/m/x",          /* db not a number */
        "redis+sentinel://s1/m/",           /* empty db */
        "redis+sentinel://s1/m?password=x", /* only sentinel_password= */
        "redis+sentinel://u@s1/m",          /* userinfo without a colon */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CHECK(config_parse_redis_url(&cfg, bad[i], err, sizeof(err)) == CTXD_ERR);
        CHECK(strstr(err, "redis+sentinel://[[user]:password@]host[:port]") != NULL);
    }
    CHECK(config_parse_redis_url(&cfg, "redis+sentinel://s1:0/m", err, sizeof(err)) == CTXD_ERR);
    CHECK(strstr(err, "Sentinel's port") != NULL);
    CHECK(config_parse_redis_url(&cfg, "redis+sentinel://a,b,c,d,e,f,g,h,i/m", err, sizeof(err)) ==
          CTXD_ERR);
    CHECK(strstr(err, "more than 8 Sentinels") != NULL);
    /* Neither password shows in a message. */
    CHECK(config_parse_redis_url(&cfg, "redis+sentinel://u:topsecret@s1:0/m?sentinel_password=sss",
                                 err, sizeof(err)) == CTXD_ERR);
    CHECK(strstr(err, "topsecret") == NULL && strstr(err, "sss") == NULL);
    CHECK(strstr(err, "sentinel_password=***") != NULL);
}

TEST(test_config_redis_wait) {
    ctxd_config cfg;
    char err[512] = "";
    char *argv[] = {S("ctxd"), NULL};
    CHECK(load(&cfg, 1, argv, err) == CTXD_OK);
    CHECK(cfg.redis_wait_replicas == 0);
    CHECK(cfg.redis_wait_ms == 1000);
    config_free(&cfg);
    char *flags[] = {S("ctxd"), S("--redis-wait-replicas=2"), S("--redis-wait-ms"), S("250"), NULL};
    CHECK(load(&cfg, 4, flags, err) == CTXD_OK);
    CHECK(cfg.redis_wait_replicas == 2);
    CHECK(cfg.redis_wait_ms == 250);
    config_free(&cfg);
    /* WAIT with a timeout of 0 would block forever. */
    setenv("CTXD_REDIS_WAIT_MS", "0", 1);
    CHECK(load(&cfg, 1, argv, err) == CTXD_ERR);
    CHECK(strstr(err, "CTXD_REDIS_WAIT_MS=0") != NULL);
    config_free(&cfg);
    unsetenv("CTXD_REDIS_WAIT_MS");
    setenv("CTXD_REDIS_WAIT_REPLICAS", "-1", 1);
    CHECK(load(&cfg, 1, argv, err) == CTXD_ERR);
    CHECK(strstr(err, "CTXD_REDIS_WAIT_REPLICAS=-1") != NULL);
    config_free(&cfg);
    unsetenv("CTXD_REDIS_WAIT_REPLICAS");
}

TEST(test_config_flags_win_over_environment) {
    ctxd_config cfg;
    char err[512] = "";
    setenv("CTXD_THREADS", "5", 1);
    char *argv[] = {S("ctxd"), S("--threads"), S("7"), S("--log-level=debug"), NULL};
    CHECK(load(&cfg, 4, argv, err) == CTXD_OK);
    CHECK(cfg.threads == 7);
    CHECK(cfg.log_level == 0);
    config_free(&cfg);
    unsetenv("CTXD_THREADS");
}

TEST(test_config_bad_values_name_the_setting) {
    ctxd_config cfg;
    char err[512] = "";
    setenv("CTXD_MAX_BODY_BYTES", "12x", 1);
    char *argv[] = {S("ctxd"), NULL};
    CHECK(load(&cfg, 1, argv, err) == CTXD_ERR);
    CHECK(strstr(err, "CTXD_MAX_BODY_BYTES=12x") != NULL);
    config_free(&cfg);
    unsetenv("CTXD_MAX_BODY_BYTES");
    setenv("CTXD_MAX_BODY_BYTES", "2M", 1);
    CHECK(load(&cfg, 1, argv, err) == CTXD_OK);
    CHECK(cfg.max_body_bytes == 2 * 1048576);
    config_free(&cfg);
    unsetenv("CTXD_MAX_BODY_BYTES");
    char *bad[] = {S("ctxd"), S("--nope"), NULL};
    CHECK(load(&cfg, 2, bad, err) == CTXD_ERR);
    CHECK(strstr(err, "--nope") != NULL);
    config_free(&cfg);
}

TEST(test_config_provider_follows_the_keys) {
    ctxd_config cfg;
    char err[512] = "";
    char *argv[] = {S("ctxd"), NULL};
    setenv("OPENAI_API_KEY", "sk-x", 1);
    CHECK(load(&cfg, 1, argv, err) == CTXD_OK);
    CHECK(cfg.provider == CTXD_PROVIDER_OPENAI);
    CHECK_STR(cfg.model, "gpt-4o-mini");
    config_free(&cfg);
    setenv("ANTHROPIC_API_KEY", "sk-ant", 1);
    CHECK(load(&cfg, 1, argv, err) == CTXD_OK);
    CHECK(cfg.provider == CTXD_PROVIDER_ANTHROPIC);
    config_free(&cfg);
    unsetenv("ANTHROPIC_API_KEY");
    unsetenv("OPENAI_API_KEY");
    setenv("CTXD_PROVIDER", "anthropic", 1);
    CHECK(load(&cfg, 1, argv, err) == CTXD_ERR);
    CHECK(strstr(err, "ANTHROPIC_API_KEY") != NULL);
    config_free(&cfg);
    unsetenv("CTXD_PROVIDER");
}

TEST_MAIN(T(test_config_defaults), T(test_config_listen_port_619009_is_refused),
          T(test_config_redis_urls), T(test_config_cluster_seeds), T(test_config_sentinel_urls),
          T(test_config_redis_wait), T(test_config_flags_win_over_environment),
          T(test_config_bad_values_name_the_setting), T(test_config_provider_follows_the_keys))
