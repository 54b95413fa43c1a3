/* store_sentinel.c: where the Sentinels say the master is, and noticing when it moves. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctxd/log.h"
#include "store_int.h"

/* Sentinel mode: the master the Sentinels named last (a move is logged once,
 * not by every thread), a generation that changes with it, and when a
 * request next asks whether it moved. */
#define SENTINEL_PROBE_MS 1000
#define SENTINEL_PROBE_BACKOFF_MS 10000
static pthread_mutex_t master_lock = PTHREAD_MUTEX_INITIALIZER;
static char master_seen[300];
static atomic_uint master_gen;
static atomic_int_least64_t next_probe_ms;

/* One command to a Sentinel: the reply (caller frees), or NULL with why
 * (each why below names the Sentinel). */
static redisReply *sentinel_command(redisContext *c, const ctxd_hostport *sp, int argc,
                                    const char **argv, char *why, size_t whylen) {
    redisReply *r = redisCommandArgv(c, argc, argv, NULL);
    if (!r)
        snprintf(why, whylen, "%s:%d: %s", sp->host, sp->port,
                 c->errstr[0] ? c->errstr : "connection lost");
    else if (r->type == REDIS_REPLY_ERROR)
        snprintf(why, whylen, "%s:%d refused %s: %s", sp->host, sp->port, argv[0], r->str);
    else
        return r;
    if (r) freeReplyObject(r);
    return NULL;
}

/* Ask one Sentinel where the master is: CTXD_OK with host and port, or
 * CTXD_ERR with why. */
static int ask_sentinel(const ctxd_config *cfg, const ctxd_hostport *sp, char host[256], int *port,
                        char *why, size_t whylen) {
    struct timeval tv = store_ms_tv(cfg->redis_timeout_ms);
    redisContext *c = redisConnectWithTimeout(sp->host, sp->port, tv);
    redisReply *r = NULL;
    int rc = CTXD_ERR;
    if (!c || c->err) {
        snprintf(why, whylen, "%s:%d: %s", sp->host, sp->port, c ? c->errstr : "out of memory");
        goto cleanup;
    }
    redisSetTimeout(c, tv);
    if (cfg->redis_sentinel_password[0]) {
        const char *auth[2] = {"AUTH", cfg->redis_sentinel_password};
        if (!(r = sentinel_command(c, sp, 2, auth, why, whylen))) goto cleanup;
        freeReplyObject(r);
    }
    const char *ask[3] = {"SENTINEL", "get-master-addr-by-name", cfg->redis_sentinel_master};
    if (!(r = sentinel_command(c, sp, 3, ask, why, whylen))) goto cleanup;
    long p = 0;
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
        r->element[0]->type == REDIS_REPLY_STRING && r->element[1]->type == REDIS_REPLY_STRING &&
        r->element[0]->len && r->element[0]->len < 256)
        p = strtol(r->element[1]->str, NULL, 10);
    if (p < 1 || p > 65535) {
        snprintf(why, whylen, "%s:%d knows no master named %s", sp->host, sp->port,
                 cfg->redis_sentinel_master);
        goto cleanup;
    }
    memcpy(host, r->element[0]->str, r->element[0]->len + 1);
    *port = (int)p;
    rc = CTXD_OK;
cleanup:
    if (r) freeReplyObject(r);
    if (c) redisFree(c);
    return rc;
}

/* Record where the Sentinels say the master is, process-wide: a move bumps
 * master_gen (so every thread reconnects) and is logged once. Returns the
 * generation of host:port. */
unsigned store_sentinel_note(const ctxd_config *cfg, const char *host, int port) {
    char now[300];
    snprintf(now, sizeof(now), "%s:%d", host, port);
    pthread_mutex_lock(&master_lock);
    if (!master_seen[0]) {
        log_msg(LOG_INFO, "redis sentinel master %s is at %s", cfg->redis_sentinel_master, now);
    } else if (strcmp(now, master_seen)) {
        log_msg(LOG_WARN, "redis sentinel master %s moved from %s to %s",
                cfg->redis_sentinel_master, master_seen, now);
        atomic_fetch_add(&master_gen, 1);
    }
    snprintf(master_seen, sizeof(master_seen), "%s", now);
    unsigned gen = atomic_load(&master_gen);
    pthread_mutex_unlock(&master_lock);
    return gen;
}

/* Ask the Sentinels in turn, from the last that answered, where the master
 * is: CTXD_OK with host and port, or CTXD_ERR with the last Sentinel's why. */
int store_sentinel_ask(const ctxd_config *cfg, int *next, char host[256], int *port, char *why,
                       size_t whylen) {
    for (int i = 0; i < cfg->redis_n_sentinels; i++) {
        int k = (*next + i) % cfg->redis_n_sentinels;
        if (ask_sentinel(cfg, &cfg->redis_sentinels[k], host, port, why, whylen)) continue;
        *next = k;
        return CTXD_OK;
    }
    return CTXD_ERR;
}

/* A failover the connections do not notice (SENTINEL FAILOVER leaves the
 * old master up and writable for a while): once a second per process, one
 * request asks one Sentinel whether the master moved (now: at once). A
 * Sentinel that does not answer is not asked again for a while, so Sentinels
 * that are down cost requests little while the master is fine. */
void store_sentinel_probe(const ctxd_config *cfg, int *next, int now) {
    int64_t t = util_mono_ms();
    int_least64_t due = atomic_load(&next_probe_ms);
    if (!now && t < due) return;
    if (!atomic_compare_exchange_strong(&next_probe_ms, &due, t + SENTINEL_PROBE_MS)) return;
    char host[256], why[160];
    int port;
    if (ask_sentinel(cfg, &cfg->redis_sentinels[*next], host, &port, why, sizeof(why)) == CTXD_OK) {
        store_sentinel_note(cfg, host, port);
        return;
    }
    *next = (*next + 1) % cfg->redis_n_sentinels;
    atomic_store(&next_probe_ms, util_mono_ms() + SENTINEL_PROBE_BACKOFF_MS);
}

unsigned store_sentinel_gen(void) { return atomic_load(&master_gen); }
