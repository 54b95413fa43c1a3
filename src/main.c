/* main.c: configuration, start-up checks, signals, and the server's life. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "ctxd/cli.h"
#include "ctxd/config.h"
#include "ctxd/http.h"
#include "ctxd/llm.h"
#include "ctxd/log.h"
#include "ctxd/store.h"
#include "ctxd/util.h"
#include "ctxd/version.h"

/* Check Redis once at start so a missing Redis is reported at once; ctxd
 * runs either way and recovers when Redis comes up. */
static void check_redis(const ctxd_config *cfg) {
    store *st = store_new(cfg);
    if (!st) return;
    if (store_ping(st))
        log_msg(LOG_WARN, "%s; /readyz answers 503 until it is reachable", st->errstr);
    store_free(st);
}

/* Let requests in flight finish (streams included) for up to the grace
 * period, answering new ones 503 meanwhile. */
static void drain(const ctxd_config *cfg, int sig) {
    http_server_drain();
    log_msg(LOG_INFO, "received %s, draining %ld request(s) in flight (grace %d ms)",
            sig == SIGTERM ? "SIGTERM" : "SIGINT", http_inflight(), cfg->shutdown_grace_ms);
    int64_t deadline = util_mono_ms() + cfg->shutdown_grace_ms;
    while (http_inflight() > 0 && util_mono_ms() < deadline) util_sleep_ms(20);
    if (http_inflight() > 0) {
        /* Their locks expire by themselves; nothing half-written is stored. */
        log_msg(LOG_WARN, "grace period over with %ld request(s) still running; exiting",
                http_inflight());
        _exit(0);
    }
}

int main(int argc, char **argv) {
    ctxd_config cfg;
    char err[512];
    int exit_now = 0, rc = 1;

    if (argc > 1 && !strcmp(argv[1], "keys")) return cli_keys(argc - 1, argv + 1);

    if (config_load(&cfg, argc, argv, err, sizeof(err), &exit_now)) {
        fprintf(stderr, "ctxd: %s\n", err);
        config_free(&cfg);
        return 2;
    }
    if (exit_now) {
        config_free(&cfg);
        return 0;
    }
    log_set_level(cfg.log_level);
    log_set_format(cfg.log_format);
    if (cfg.log_file[0] && log_open_file(cfg.log_file)) {
        fprintf(stderr, "ctxd: CTXD_LOG_FILE=%s: cannot open: %s\n", cfg.log_file, strerror(errno));
        config_free(&cfg);
        return 2;
    }
    llm_echo_set_delay(cfg.echo_delay_ms);
    signal(SIGPIPE, SIG_IGN);
    /* Block the stop signals in every thread; main takes them with sigwait. */
    sigset_t stop_set;
    sigemptyset(&stop_set);
    sigaddset(&stop_set, SIGTERM);
    sigaddset(&stop_set, SIGINT);
    sigaddset(&stop_set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &stop_set, NULL);

    if (llm_global_init()) {
        fprintf(stderr, "ctxd: cannot initialise the HTTP client library\n");
        goto cleanup;
    }
    if (http_server_start(&cfg, err, sizeof(err))) {
        fprintf(stderr, "ctxd: %s\n", err);
        goto cleanup;
    }
    char redis_addr[300];
    config_redis_addr(&cfg, redis_addr, sizeof(redis_addr));
    log_msg(LOG_INFO,
            "ctxd %s listening on %s://%s:%d redis=%s db=%d provider=%s model=%s threads=%d "
            "auth=%s",
            CTXD_VERSION, cfg.tls_cert[0] ? "https" : "http", cfg.listen_host, cfg.listen_port,
            redis_addr, cfg.redis_db, config_provider_name(cfg.provider), cfg.model, cfg.threads,
            cfg.auth ? "keys" : "off");
    if (!cfg.auth && strcmp(cfg.listen_host, "localhost") && strncmp(cfg.listen_host, "127.", 4))
        log_msg(LOG_WARN,
                "CTXD_AUTH=off on %s: anyone who can reach this address can read and delete "
                "every conversation; use CTXD_AUTH=keys beyond this machine",
                cfg.listen_host);
    check_redis(&cfg);
    int sig = 0;
    for (;;) {
        if (sigwait(&stop_set, &sig) != 0) continue;
        if (sig != SIGHUP) break;
        if (log_reopen())
            fprintf(stderr, "ctxd: cannot reopen %s: %s\n", cfg.log_file, strerror(errno));
        log_msg(LOG_INFO, "received SIGHUP, log reopened");
    }
    drain(&cfg, sig);
    http_server_stop();
    log_msg(LOG_INFO, "ctxd stopped");
    rc = 0;
cleanup:
    llm_global_cleanup();
    config_free(&cfg);
    return rc;
}
