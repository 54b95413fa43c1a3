/* store_conn.c: one thread's Redis connection: connect (to the server, the master
 * store_sentinel.c names, or the cluster node store_route.c picks), set up, fail. */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctxd/log.h"
#include "ctxd/metrics.h"
#include "store_conn.h"

#define IDLE_PING_MS 1000

static atomic_uint global_epoch;
static atomic_int redis_up = -1; /* -1 unknown, 0 down, 1 up */

int store_conn_sentinel(const store_impl *im) { return im->cfg->redis_sentinel_master[0] != 0; }

/* redis:// over TCP: a plain server or a Redis Cluster (found out when
 * connecting). */
int store_conn_may_cluster(const store_impl *im) {
    return !store_conn_sentinel(im) && !im->cfg->redis_socket[0];
}

int store_conn_cluster(const store_impl *im) {
    return store_conn_may_cluster(im) && store_cluster_mode() == STORE_MODE_CLUSTER;
}

/* The URL's seed'th node (its only one, in the common case). */
ctxd_hostport store_conn_seed(const ctxd_config *cfg, int i) {
    ctxd_hostport hp;
    if (cfg->redis_n_seeds) return cfg->redis_seeds[i % cfg->redis_n_seeds];
    snprintf(hp.host, sizeof(hp.host), "%s", cfg->redis_host);
    hp.port = cfg->redis_port;
    return hp;
}

/* Tell every store in the process that Redis was seen failing, so idle
 * connections are replaced before their next use. */
static void invalidate_all(void) { atomic_fetch_add(&global_epoch, 1); }

static void set_up_state(store_impl *im, int up, const char *why) {
    int prev = atomic_exchange(&redis_up, up);
    if (prev == up) return;
    if (up)
        log_msg(LOG_INFO, "redis reachable at %s", im->addr);
    else
        log_msg(LOG_WARN,
                "redis unreachable at %s: %s (ctxd keeps retrying; "
                "context requests answer 503 meanwhile)",
                im->addr, why);
}

store *store_new(const ctxd_config *cfg) {
    store *s = calloc(1, sizeof(*s));
    store_impl *im = calloc(1, sizeof(*im));
    if (!s || !im) {
        free(s);
        free(im);
        return NULL;
    }
    im->cfg = cfg;
    config_redis_addr(cfg, im->addr, sizeof(im->addr));
    im->node = store_conn_seed(cfg, 0);
    s->impl = im;
    store_set_tenant(s, "default");
    return s;
}

void store_set_tenant(store *s, const char *tenant) {
    snprintf(s->tenant, sizeof(s->tenant), "%s", tenant);
}

static void drop_connection(store_impl *im) {
    store_watch_forget(im, im->c);
    if (im->c) redisFree(im->c);
    im->c = NULL;
    im->watching = 0;
}

void store_free(store *s) {
    if (!s) return;
    store_impl *im = s->impl;
    if (im) {
        drop_connection(im);
        for (int i = 0; i < PARKED_MAX; i++)
            if (im->parked[i].c) redisFree(im->parked[i].c); /* the watch goes with im */
    }
    free(im);
    free(s);
}

const char *store_addr(const store *s) { return ((const store_impl *)s->impl)->addr; }

int store_failed_io(const store *s) { return ((const store_impl *)s->impl)->io_failed; }

int store_unreplicated(const store *s) { return ((const store_impl *)s->impl)->unreplicated; }

void store_fail(store *s, ctxd_err err, const char *fmt, ...) {
    va_list ap;
    s->err = err;
    va_start(ap, fmt);
    vsnprintf(s->errstr, sizeof(s->errstr), fmt, ap);
    va_end(ap);
}

/* Sentinel mode: the master may have moved; ask the Sentinels again before
 * the next connection. */
static void forget_master(store_impl *im) {
    if (!store_conn_sentinel(im)) return;
    im->master_host[0] = '\0';
    config_redis_addr(im->cfg, im->addr, sizeof(im->addr));
}

/* Redis is not there: say so, count it, and make every thread reconnect. */
void store_conn_unreachable(store *s, const char *detail) {
    store_impl *im = s->impl;
    char why[160];
    snprintf(why, sizeof(why), "%s", detail); /* detail may live in im->c */
    store_fail(s, CTXD_E_REDIS, "Redis unavailable at %s: %s", im->addr, why);
    im->io_failed = 1;
    metrics_redis_error();
    drop_connection(im);
    invalidate_all();
    set_up_state(im, 0, why);
    forget_master(im);
    if (store_conn_cluster(im)) store_cluster_stale(); /* the node may have failed over */
}

const char *store_conn_errstr(const store_impl *im) {
    return im->c && im->c->errstr[0] ? im->c->errstr : "connection lost";
}

/* Run one command on an established connection; error replies are returned
 * as replies. NULL on I/O failure (connection dropped). */
redisReply *store_conn_raw(store *s, int argc, const char **argv, const size_t *lens) {
    store_impl *im = s->impl;
    redisReply *r = redisCommandArgv(im->c, argc, argv, lens);
    if (!r) {
        store_conn_unreachable(s, store_conn_errstr(im));
        return NULL;
    }
    im->last_used_ms = util_mono_ms();
    return r;
}

/* One set-up command on a new connection; Redis refusing it drops it. */
static int setup_command(store *s, const char *what, int argc, const char **argv,
                         redisReply **out) {
    store_impl *im = s->impl;
    redisReply *r = store_conn_raw(s, argc, argv, NULL);
    if (!r) return CTXD_ERR;
    if (r->type == REDIS_REPLY_ERROR) {
        /* Never echo the password; Redis' own message is safe. */
        store_fail(s, CTXD_E_REDIS, "Redis at %s refused %s: %s", im->addr, what, r->str);
        freeReplyObject(r);
        drop_connection(im);
        return CTXD_ERR;
    }
    if (out)
        *out = r;
    else
        freeReplyObject(r);
    return CTXD_OK;
}

/* Sentinel mode: the server the Sentinels named must say it is the master
 * (their answer lags a failover). On a replica the connection is dropped
 * and the address forgotten. */
static int check_master(store *s) {
    store_impl *im = s->impl;
    const char *argv[1] = {"ROLE"};
    redisReply *r;
    if (setup_command(s, "ROLE", 1, argv, &r)) return CTXD_ERR;
    int master = r->type == REDIS_REPLY_ARRAY && r->elements &&
                 r->element[0]->type == REDIS_REPLY_STRING && !strcmp(r->element[0]->str, "master");
    if (!master)
        store_fail(s, CTXD_E_REDIS, "Redis at %s is not the master of %s (role %s)", im->addr,
                   im->cfg->redis_sentinel_master,
                   r->type == REDIS_REPLY_ARRAY && r->elements && r->element[0]->str
                       ? r->element[0]->str
                       : "unknown");
    freeReplyObject(r);
    if (master) return CTXD_OK;
    drop_connection(im);
    forget_master(im);
    return CTXD_ERR;
}

/* The first connection of the process to a redis:// server: is it a Redis
 * Cluster? CLUSTER SLOTS answers with the slot map there (loaded), and
 * with an error on a plain server. */
static int detect_cluster(store *s) {
    store_impl *im = s->impl;
    const char *argv[2] = {"CLUSTER", "SLOTS"};
    redisReply *r = store_conn_raw(s, 2, argv, NULL);
    if (!r) return CTXD_ERR;
    if (r->type == REDIS_REPLY_ERROR)
        store_cluster_set_standalone(im->next_seed);
    else
        store_cluster_load(r, im->node.host);
    freeReplyObject(r);
    return CTXD_OK;
}

/* Authenticate, check the role, select the db and load the scripts on a new
 * connection. */
static int setup_connection(store *s) {
    store_impl *im = s->impl;
    const ctxd_config *cfg = im->cfg;
    if (cfg->redis_password[0]) {
        const char *argv[3] = {"AUTH", cfg->redis_user, cfg->redis_password};
        if (!cfg->redis_user[0]) argv[1] = cfg->redis_password;
        if (setup_command(s, "AUTH", cfg->redis_user[0] ? 3 : 2, argv, NULL)) return CTXD_ERR;
    }
    if (store_conn_sentinel(im) && check_master(s)) return CTXD_ERR;
    if (store_conn_may_cluster(im) && store_cluster_mode() == STORE_MODE_UNKNOWN &&
        detect_cluster(s))
        return CTXD_ERR;
    if (cfg->redis_db && store_conn_cluster(im)) {
        store_fail(s, CTXD_E_REDIS,
                   "Redis at %s is a Redis Cluster, which has only database 0; "
                   "drop /%d from CTXD_REDIS_URL",
                   im->addr, cfg->redis_db);
        drop_connection(im);
        return CTXD_ERR;
    }
    if (cfg->redis_db) {
        char db[16];
        snprintf(db, sizeof(db), "%d", cfg->redis_db);
        const char *argv[2] = {"SELECT", db};
        if (setup_command(s, "SELECT", 2, argv, NULL)) return CTXD_ERR;
    }
    for (int i = 0; i < S_COUNT; i++) {
        const char *text = store_script_text(i);
        redisReply *r;
        if (!text) {
            store_fail(s, CTXD_E_NOMEM, "out of memory");
            drop_connection(im);
            return CTXD_ERR;
        }
        const char *argv[3] = {"SCRIPT", "LOAD", text};
        if (setup_command(s, "SCRIPT LOAD", 3, argv, &r)) return CTXD_ERR;
        int ok = r->type == REDIS_REPLY_STRING && r->len == 40;
        if (ok) memcpy(im->sha[i], r->str, 41);
        freeReplyObject(r);
        if (!ok) {
            store_fail(s, CTXD_E_REDIS, "Redis at %s answered SCRIPT LOAD oddly", im->addr);
            drop_connection(im);
            return CTXD_ERR;
        }
    }
    return CTXD_OK;
}

/* Connect to the configured server, or the master the Sentinels named, and
 * set the connection up. epoch: global_epoch before connecting. */
static int connect_once(store *s, unsigned epoch) {
    store_impl *im = s->impl;
    const ctxd_config *cfg = im->cfg;
    struct timeval tv = store_ms_tv(cfg->redis_timeout_ms);
    redisContext *c = cfg->redis_socket[0] ? redisConnectUnixWithTimeout(cfg->redis_socket, tv)
                      : store_conn_sentinel(im)
                          ? redisConnectWithTimeout(im->master_host, im->master_port, tv)
                          : redisConnectWithTimeout(im->node.host, im->node.port, tv);
    if (!c || c->err) {
        char why[160];
        snprintf(why, sizeof(why), "%s", c ? c->errstr : "out of memory");
        if (c) redisFree(c);
        store_conn_unreachable(s, why);
        return CTXD_ERR;
    }
    redisSetTimeout(c, tv);
    metrics_redis_reconnect();
    im->c = c;
    im->epoch = epoch;
    if (setup_connection(s)) return CTXD_ERR;
    set_up_state(im, 1, NULL);
    return CTXD_OK;
}

/* Before connecting: where is the master? CTXD_ERR (unavailable) when no
 * Sentinel says. */
static int find_master(store *s) {
    store_impl *im = s->impl;
    const ctxd_config *cfg = im->cfg;
    char why[128] = "", msg[180];
    if (store_sentinel_ask(cfg, &im->next_sentinel, im->master_host, &im->master_port, why,
                           sizeof(why))) {
        im->master_host[0] = '\0';
        snprintf(msg, sizeof(msg), "no Sentinel named the master (last: %s)", why);
        store_conn_unreachable(s, msg);
        return CTXD_ERR;
    }
    snprintf(im->addr, sizeof(im->addr), "%s:%d (sentinel master %s)", im->master_host,
             im->master_port, cfg->redis_sentinel_master);
    im->master_gen = store_sentinel_note(cfg, im->master_host, im->master_port);
    return CTXD_OK;
}

int store_conn_ensure(store *s) {
    store_impl *im = s->impl;
    s->err = CTXD_E_NONE;
    im->io_failed = 0;
    im->unreplicated = 0;
    im->demoted = 0;
    im->noscript = 0;
    unsigned epoch = atomic_load(&global_epoch);
    if (im->c && im->epoch != epoch) drop_connection(im);
    if (store_conn_sentinel(im)) {
        if (im->c) store_sentinel_probe(im->cfg, &im->next_sentinel, 0);
        if (im->master_host[0] && im->master_gen != store_sentinel_gen()) {
            drop_connection(im); /* the master moved */
            forget_master(im);
        }
    }
    if (im->c && util_mono_ms() - im->last_used_ms > IDLE_PING_MS) {
        /* Idle connections may be stale after a Redis restart. */
        const char *argv[1] = {"PING"};
        redisReply *r = store_conn_raw(s, 1, argv, NULL);
        if (r) freeReplyObject(r);
        epoch = atomic_load(&global_epoch);
        s->err = CTXD_E_NONE; /* a fresh connection follows */
        im->io_failed = 0;
    }
    if (im->c) return CTXD_OK;
    if (!store_conn_sentinel(im)) return connect_once(s, epoch);
    /* The master a Sentinel names may be gone or demoted (its view lags a
     * failover): then ask the next Sentinel, once. */
    for (int attempt = 0;; attempt++) {
        if (!im->master_host[0] && find_master(s)) return CTXD_ERR;
        if (connect_once(s, atomic_load(&global_epoch)) == CTXD_OK) return CTXD_OK;
        if (im->master_host[0] || attempt == 1) return CTXD_ERR;
        im->next_sentinel = (im->next_sentinel + 1) % im->cfg->redis_n_sentinels;
    }
}

/* Sentinel mode: the master was demoted (a failover) and refused a write
 * with READONLY, before anything was written: every thread drops its
 * connection and asks the Sentinels again. */
static void demoted(store *s, const char *error) {
    store_impl *im = s->impl;
    if (!store_conn_sentinel(im) || (strncmp(error, "READONLY", 8) && !strstr(error, "-READONLY")))
        return;
    im->demoted = 1;
    metrics_redis_error();
    drop_connection(im);
    forget_master(im);
    invalidate_all();
}

int store_reply_error(store *s, const redisReply *r) {
    if (!r || r->type != REDIS_REPLY_ERROR) return CTXD_OK;
    store_fail(s, CTXD_E_REDIS, "Redis at %s answered an error: %s", store_addr(s), r->str);
    ((store_impl *)s->impl)->noscript = !strncmp(r->str, "NOSCRIPT", 8);
    demoted(s, r->str);
    return CTXD_ERR;
}

int store_is_cluster(const store *s) { return store_conn_cluster(s->impl); }

int store_demoted(const store *s) { return ((const store_impl *)s->impl)->demoted; }

/* An error reply becomes CTXD_E_REDIS (the reply is freed). */
redisReply *store_conn_check(store *s, redisReply *r) {
    if (store_reply_error(s, r)) {
        freeReplyObject(r);
        return NULL;
    }
    return r;
}
