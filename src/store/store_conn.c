/* store_conn.c: Redis connections per thread: connect (to the master store_sentinel.c names, or
 * the cluster node store_cluster.c names), set up, route, follow redirects, EVALSHA, WAIT. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ctxd/log.h"
#include "ctxd/metrics.h"
#include "store_int.h"

#define IDLE_PING_MS 1000
#define PARKED_MAX 16    /* connections to other cluster nodes a thread keeps */
#define BATCH_MAX 8      /* commands one pipeline may hold */
#define REDIRECTS_MAX 16 /* MOVED, ASK, TRYAGAIN or CLUSTERDOWN answers one command follows */

/* A connection to a cluster node other than the current one. */
typedef struct parked_conn {
    ctxd_hostport node;
    redisContext *c; /* owned; NULL: a free place */
    unsigned epoch;
    int64_t last_used_ms;
} parked_conn;

typedef struct store_impl {
    const ctxd_config *cfg; /* borrowed */
    /* The current connection (the one commands go to) and its server. */
    redisContext *c; /* NULL when not connected */
    unsigned epoch;  /* global_epoch when c was made */
    int64_t last_used_ms;
    ctxd_hostport node; /* redis:// only: the server c is (or will be) connected to */
    int next_seed;      /* the seed to try first while the mode is unknown */
    parked_conn parked[PARKED_MAX];
    int io_failed;    /* the last failure was the connection itself */
    int unreplicated; /* the last failure: written, but too few replicas acknowledged */
    int demoted;      /* the last failure: the master answered READONLY */
    int noscript;     /* the last failure: the server does not know the script */
    char sha[S_COUNT][41];
    char addr[700]; /* host:port, socket path or the Sentinels, for messages */
    /* redis+sentinel://: the master the Sentinels named ("" : ask them),
     * and the Sentinel to ask first (the last that answered). */
    char master_host[256];
    int master_port;
    int next_sentinel;
    unsigned master_gen; /* master_gen when master_host was named */
} store_impl;

static atomic_uint global_epoch;
static atomic_int redis_up = -1; /* -1 unknown, 0 down, 1 up */

static int sentinel_mode(const store_impl *im) { return im->cfg->redis_sentinel_master[0] != 0; }

/* redis:// over TCP: a plain server or a Redis Cluster (found out when
 * connecting). */
static int may_be_cluster(const store_impl *im) {
    return !sentinel_mode(im) && !im->cfg->redis_socket[0];
}

static int cluster_mode(const store_impl *im) {
    return may_be_cluster(im) && store_cluster_mode() == STORE_MODE_CLUSTER;
}

/* The URL's seed'th node (its only one, in the common case). */
static ctxd_hostport seed(const ctxd_config *cfg, int i) {
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
    im->node = seed(cfg, 0);
    s->impl = im;
    store_set_tenant(s, "default");
    return s;
}

void store_set_tenant(store *s, const char *tenant) {
    snprintf(s->tenant, sizeof(s->tenant), "%s", tenant);
}

static void drop_connection(store_impl *im) {
    if (im->c) redisFree(im->c);
    im->c = NULL;
}

void store_free(store *s) {
    if (!s) return;
    store_impl *im = s->impl;
    if (im) {
        drop_connection(im);
        for (int i = 0; i < PARKED_MAX; i++)
            if (im->parked[i].c) redisFree(im->parked[i].c);
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
    if (!sentinel_mode(im)) return;
    im->master_host[0] = '\0';
    config_redis_addr(im->cfg, im->addr, sizeof(im->addr));
}

/* Redis is not there: say so, count it, and make every thread reconnect. */
static void fail_unreachable(store *s, const char *detail) {
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
    if (cluster_mode(im)) store_cluster_stale(); /* the node may have failed over */
}

static const char *conn_error(const store_impl *im) {
    return im->c && im->c->errstr[0] ? im->c->errstr : "connection lost";
}

/* Run one command on an established connection; error replies are returned
 * as replies. NULL on I/O failure (connection dropped). */
static redisReply *raw_command(store *s, int argc, const char **argv, const size_t *lens) {
    store_impl *im = s->impl;
    redisReply *r = redisCommandArgv(im->c, argc, argv, lens);
    if (!r) {
        fail_unreachable(s, conn_error(im));
        return NULL;
    }
    im->last_used_ms = util_mono_ms();
    return r;
}

/* One set-up command on a new connection; Redis refusing it drops it. */
static int setup_command(store *s, const char *what, int argc, const char **argv,
                         redisReply **out) {
    store_impl *im = s->impl;
    redisReply *r = raw_command(s, argc, argv, NULL);
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
    redisReply *r = raw_command(s, 2, argv, NULL);
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
    if (sentinel_mode(im) && check_master(s)) return CTXD_ERR;
    if (may_be_cluster(im) && store_cluster_mode() == STORE_MODE_UNKNOWN && detect_cluster(s))
        return CTXD_ERR;
    if (cfg->redis_db && cluster_mode(im)) {
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
                      : sentinel_mode(im)
                          ? redisConnectWithTimeout(im->master_host, im->master_port, tv)
                          : redisConnectWithTimeout(im->node.host, im->node.port, tv);
    if (!c || c->err) {
        char why[160];
        snprintf(why, sizeof(why), "%s", c ? c->errstr : "out of memory");
        if (c) redisFree(c);
        fail_unreachable(s, why);
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
        fail_unreachable(s, msg);
        return CTXD_ERR;
    }
    snprintf(im->addr, sizeof(im->addr), "%s:%d (sentinel master %s)", im->master_host,
             im->master_port, cfg->redis_sentinel_master);
    im->master_gen = store_sentinel_note(cfg, im->master_host, im->master_port);
    return CTXD_OK;
}

static int ensure_connected(store *s) {
    store_impl *im = s->impl;
    s->err = CTXD_E_NONE;
    im->io_failed = 0;
    im->unreplicated = 0;
    im->demoted = 0;
    im->noscript = 0;
    unsigned epoch = atomic_load(&global_epoch);
    if (im->c && im->epoch != epoch) drop_connection(im);
    if (sentinel_mode(im)) {
        if (im->c) store_sentinel_probe(im->cfg, &im->next_sentinel, 0);
        if (im->master_host[0] && im->master_gen != store_sentinel_gen()) {
            drop_connection(im); /* the master moved */
            forget_master(im);
        }
    }
    if (im->c && util_mono_ms() - im->last_used_ms > IDLE_PING_MS) {
        /* Idle connections may be stale after a Redis restart. */
        const char *argv[1] = {"PING"};
        redisReply *r = raw_command(s, 1, argv, NULL);
        if (r) freeReplyObject(r);
        epoch = atomic_load(&global_epoch);
        s->err = CTXD_E_NONE; /* a fresh connection follows */
        im->io_failed = 0;
    }
    if (im->c) return CTXD_OK;
    if (!sentinel_mode(im)) return connect_once(s, epoch);
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
    if (!sentinel_mode(im) || (strncmp(error, "READONLY", 8) && !strstr(error, "-READONLY")))
        return;
    im->demoted = 1;
    metrics_redis_error();
    drop_connection(im);
    forget_master(im);
    invalidate_all();
}

/* An error reply becomes CTXD_E_REDIS (the reply is freed). */
static redisReply *check_reply(store *s, redisReply *r) {
    if (r && r->type == REDIS_REPLY_ERROR) {
        store_fail(s, CTXD_E_REDIS, "Redis at %s answered an error: %s", store_addr(s), r->str);
        ((store_impl *)s->impl)->noscript = !strncmp(r->str, "NOSCRIPT", 8);
        demoted(s, r->str);
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

/* ---- Routing: which server a command goes to ---- */

static int same_node(const ctxd_hostport *a, const ctxd_hostport *b) {
    return a->port == b->port && !strcmp(a->host, b->host);
}

/* Make to's connection the current one: the current one is parked (the
 * least recently used parked one is closed when there is no room), and
 * to's is taken out of the parked ones, if there. */
static void switch_node(store_impl *im, const ctxd_hostport *to) {
    if (same_node(&im->node, to)) return;
    if (im->c) {
        parked_conn *slot = &im->parked[0];
        for (int i = 0; i < PARKED_MAX; i++) {
            if (!im->parked[i].c) {
                slot = &im->parked[i];
                break;
            }
            if (im->parked[i].last_used_ms < slot->last_used_ms) slot = &im->parked[i];
        }
        if (slot->c) redisFree(slot->c);
        *slot = (parked_conn){im->node, im->c, im->epoch, im->last_used_ms};
        im->c = NULL;
    }
    im->node = *to;
    snprintf(im->addr, sizeof(im->addr), "%s:%d", to->host, to->port);
    for (int i = 0; i < PARKED_MAX; i++) {
        parked_conn *p = &im->parked[i];
        if (p->c && same_node(&p->node, to)) {
            im->c = p->c;
            im->epoch = p->epoch;
            im->last_used_ms = p->last_used_ms;
            p->c = NULL;
            break;
        }
    }
}

/* Reload the slot map: CLUSTER SLOTS on the current connection, else on a
 * known master, else on a seed. Failing is not an error here: the command
 * that follows fails (or is redirected) on its own. */
static void refresh_map(store *s) {
    store_impl *im = s->impl;
    ctxd_hostport nodes[STORE_CLUSTER_NODES_MAX + CTXD_SEEDS_MAX];
    int n = 0;
    if (im->c) nodes[n++] = im->node;
    n += store_cluster_nodes(nodes + n, STORE_CLUSTER_NODES_MAX);
    for (int i = 0; i < im->cfg->redis_n_seeds; i++) nodes[n++] = seed(im->cfg, i);
    ctxd_err err = s->err;
    for (int i = 0; i < n; i++) {
        switch_node(im, &nodes[i]);
        if (ensure_connected(s)) continue;
        const char *argv[2] = {"CLUSTER", "SLOTS"};
        redisReply *r = raw_command(s, 2, argv, NULL);
        int ok = r && store_cluster_load(r, im->node.host) == CTXD_OK;
        if (r) freeReplyObject(r);
        if (ok) break;
    }
    s->err = err;
}

/* Connect to the server that holds key (any server for NULL): the one
 * server, the Sentinels' master, or the cluster node serving key's slot. */
static int route(store *s, const char *key) {
    store_impl *im = s->impl;
    if (!may_be_cluster(im)) return ensure_connected(s);
    if (store_cluster_mode() == STORE_MODE_UNKNOWN) {
        /* The first connection finds out; a seed that does not answer
         * makes way for the next. */
        int n = im->cfg->redis_n_seeds ? im->cfg->redis_n_seeds : 1;
        for (int i = 0; i < n && store_cluster_mode() == STORE_MODE_UNKNOWN; i++) {
            ctxd_hostport to = seed(im->cfg, im->next_seed);
            switch_node(im, &to);
            if (ensure_connected(s) == CTXD_OK) break;
            im->next_seed = (im->next_seed + 1) % n;
        }
        if (store_cluster_mode() == STORE_MODE_UNKNOWN) return CTXD_ERR;
    }
    if (store_cluster_mode() == STORE_MODE_STANDALONE) {
        ctxd_hostport to = seed(im->cfg, store_cluster_standalone_seed());
        switch_node(im, &to);
        return ensure_connected(s);
    }
    if (store_cluster_refresh_due()) refresh_map(s);
    ctxd_hostport to;
    unsigned slot = key ? store_cluster_slot(key, strlen(key)) : 0;
    if (key && store_cluster_node(slot, &to)) {
        store_cluster_stale();
        store_fail(s, CTXD_E_REDIS, "Redis Cluster has no master serving slot %u now", slot);
        metrics_redis_error();
        return CTXD_ERR;
    }
    if (key) switch_node(im, &to);
    return ensure_connected(s);
}

/* Send n commands pipelined on the current connection (after ASKING when
 * asking) and read every reply into out (caller frees). CTXD_ERR after an
 * I/O failure, which drops the connection. */
static int exchange(store *s, int asking, int n, const char **const *argvs, const int *argcs,
                    const size_t *const *lens, redisReply **out) {
    store_impl *im = s->impl;
    const char *ask[1] = {"ASKING"};
    if (asking) redisAppendCommandArgv(im->c, 1, ask, NULL);
    for (int i = 0; i < n; i++)
        redisAppendCommandArgv(im->c, argcs[i], argvs[i], lens ? lens[i] : NULL);
    for (int i = -asking; i < n; i++) {
        void *reply = NULL;
        if (redisGetReply(im->c, &reply) != REDIS_OK) {
            for (int j = 0; j < i; j++) freeReplyObject(out[j]);
            fail_unreachable(s, conn_error(im));
            return CTXD_ERR;
        }
        if (i < 0)
            freeReplyObject(reply);
        else
            out[i] = reply;
    }
    im->last_used_ms = util_mono_ms();
    return CTXD_OK;
}

/* In a cluster, the first reply that asks to go elsewhere or wait. */
static int find_redirect(const store_impl *im, int n, redisReply **rs, unsigned *slot,
                         ctxd_hostport *to, char *why, size_t whylen) {
    if (!cluster_mode(im)) return STORE_REDIRECT_NONE;
    for (int i = 0; i < n; i++) {
        if (rs[i]->type != REDIS_REPLY_ERROR) continue;
        int kind = store_cluster_redirect(rs[i]->str, slot, to);
        if (kind == STORE_REDIRECT_NONE) continue;
        snprintf(why, whylen, "%s", rs[i]->str);
        if (!to->host[0]) snprintf(to->host, sizeof(to->host), "%s", im->node.host);
        return kind;
    }
    return STORE_REDIRECT_NONE;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Run n commands (pipelined) on the server holding key and return the last
 * reply, error replies checked (the others are freed). A cluster's MOVED is
 * followed (and the map reloaded), ASK is followed with ASKING, TRYAGAIN
 * and CLUSTERDOWN are retried with backoff: all within the Redis timeout.
 * Each of these means the command did not run, so writes are safe to
 * resend. */
static redisReply *run(store *s, const char *key, int n, const char **const *argvs,
                       const int *argcs, const size_t *const *lens) {
    store_impl *im = s->impl;
    int64_t deadline = util_mono_ms() + im->cfg->redis_timeout_ms;
    int asking = 0, backoff_ms = 5;
    redisReply *rs[BATCH_MAX];
    char why[200] = "";
    for (int hop = 0;; hop++) {
        if (!asking && route(s, key)) return NULL;
        if (exchange(s, asking, n, argvs, argcs, lens, rs)) return NULL;
        unsigned slot = 0;
        ctxd_hostport to = {"", 0};
        int kind = find_redirect(im, n, rs, &slot, &to, why, sizeof(why));
        if (kind == STORE_REDIRECT_NONE) {
            for (int i = 0; i < n - 1; i++) freeReplyObject(rs[i]);
            return check_reply(s, rs[n - 1]);
        }
        for (int i = 0; i < n; i++) freeReplyObject(rs[i]);
        int64_t left = deadline - util_mono_ms();
        if (hop + 1 == REDIRECTS_MAX || left <= 0) {
            store_fail(s, CTXD_E_REDIS, "Redis Cluster at %s: %s (still, after %d tries)", im->addr,
                       why, hop + 1);
            metrics_redis_error();
            store_cluster_stale();
            return NULL;
        }
        asking = 0;
        metrics_redis_redirect(kind == STORE_REDIRECT_MOVED ? METRICS_MOVED
                               : kind == STORE_REDIRECT_ASK ? METRICS_ASK
                                                            : METRICS_RETRY);
        if (kind == STORE_REDIRECT_MOVED) {
            store_cluster_moved(slot, to.host, to.port);
        } else if (kind == STORE_REDIRECT_ASK) {
            switch_node(im, &to);
            if (ensure_connected(s)) return NULL;
            asking = 1;
        } else { /* the slot is moving, or the cluster is failing over */
            sleep_ms((int)(left < backoff_ms ? left : backoff_ms));
            backoff_ms = backoff_ms < 100 ? backoff_ms * 2 : 200;
            store_cluster_stale();
        }
    }
}

/* The key a command names (its first argument), or NULL. */
static const char *key_of(int argc, const char **argv) { return argc > 1 ? argv[1] : NULL; }

redisReply *store_command(store *s, int argc, const char **argv, const size_t *lens) {
    const char **argvs[1] = {argv};
    const size_t *lenss[1] = {lens};
    return run(s, key_of(argc, argv), 1, argvs, &argc, lens ? lenss : NULL);
}

/* Commands and scripts that change nothing are retried once on a fresh
 * connection after an I/O error: the connection may have been left over
 * from before a Redis restart. Writes are not retried (they might have been
 * applied). */
redisReply *store_read_command(store *s, int argc, const char **argv) {
    redisReply *r = store_command(s, argc, argv, NULL);
    if (!r && store_failed_io(s)) r = store_command(s, argc, argv, NULL);
    return r;
}

redisReply *store_pipeline(store *s, int n, const char **const *argvs, const int *argcs) {
    store_impl *im = s->impl;
    const char *key = NULL;
    int split = 0;
    if (n > BATCH_MAX) {
        store_fail(s, CTXD_E_NOMEM, "a pipeline of %d commands is too long", n);
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        const char *k = key_of(argcs[i], argvs[i]);
        if (!k) continue;
        if (!key) key = k;
        split |= store_cluster_slot(k, strlen(k)) != store_cluster_slot(key, strlen(key));
    }
    if (!split || !cluster_mode(im)) return run(s, key, n, argvs, argcs, NULL);
    /* Keys on different slots: one command at a time, each to its node. */
    redisReply *last = NULL;
    for (int i = 0; i < n; i++) {
        if (last) freeReplyObject(last);
        if (!(last = store_command(s, argcs[i], argvs[i], NULL))) return NULL;
    }
    return last;
}

/* ---- Scripts ---- */

int args_init(store *s, args *a, size_t cap) {
    memset(a, 0, sizeof(*a));
    a->v = malloc(sizeof(*a->v) * (cap ? cap : 1));
    a->len = malloc(sizeof(*a->len) * (cap ? cap : 1));
    a->cap = (int)cap;
    if (a->v && a->len) return CTXD_OK;
    args_free(a);
    store_fail(s, CTXD_E_NOMEM, "out of memory");
    return CTXD_ERR;
}

void args_free(args *a) {
    free(a->v);
    free(a->len);
    a->v = NULL;
    a->len = NULL;
}

void args_bin(args *a, const char *data, size_t len) {
    if (a->n == a->cap) return; /* sized by the caller; never reached */
    a->v[a->n] = data ? data : "";
    a->len[a->n++] = data ? len : 0;
}

void args_str(args *a, const char *str) { args_bin(a, str, str ? strlen(str) : 0); }

void args_int(args *a, int64_t v) {
    if (a->n_nums == ARGS_NUMS) return;
    char *b = a->nums[a->n_nums++];
    snprintf(b, 24, "%" PRId64, v);
    args_str(a, b);
}

/* Scripts whose change a client is told about: with CTXD_REDIS_WAIT_REPLICAS
 * each waits for the replicas once it changed something. A delete waits
 * even when there was nothing to delete: the 404 that answers the retry of
 * a delete that timed out here must also mean "gone on the replicas". */
static const unsigned char acknowledged[S_COUNT] = {
    [S_CREATE] = 1,      [S_APPEND] = 1,   [S_DELETE] = 1,     [S_STATE_PUT] = 1,
    [S_STATE_PATCH] = 1, [S_SETTINGS] = 1, [S_APIKEY_PUT] = 1, [S_APIKEY_REVOKE] = 1,
};

/* The script's reply says it wrote: 1 or OK (other answers write nothing). */
static int wrote(int script, const redisReply *r) {
    if (script == S_DELETE) return r->type == REDIS_REPLY_INTEGER;
    if (r->type == REDIS_REPLY_INTEGER) return r->integer == 1;
    return (r->type == REDIS_REPLY_STATUS || r->type == REDIS_REPLY_STRING) && r->str &&
           !strcmp(r->str, "OK");
}

/* WAIT (after a write of no value when mark_key: see
 * store_wait_replicas_all), with the socket's timeout stretched by
 * redis_wait_ms. WAIT's reply (caller frees), or NULL with s->err. */
static redisReply *send_wait(store *s, const char *mark_key) {
    store_impl *im = s->impl;
    const ctxd_config *cfg = im->cfg;
    char n[16], ms[16], mark[STORE_KEY_LEN];
    int publish = mark_key != NULL;
    snprintf(n, sizeof(n), "%d", cfg->redis_wait_replicas);
    snprintf(ms, sizeof(ms), "%d", cfg->redis_wait_ms);
    /* PUBLISH reaches the replicas, except in a cluster (it goes over the
     * cluster bus instead): there a short-lived key in mark_key's slot. */
    const char *pub[5] = {"PUBLISH", "ctxd:wait", ""}, *wait[3] = {"WAIT", n, ms};
    int pub_argc = 3;
    if (publish && cluster_mode(im)) {
        store_key_wait(mark_key, mark);
        pub[0] = "SET", pub[1] = mark, pub[2] = "", pub[3] = "PX", pub[4] = "60000";
        pub_argc = 5;
    }
    redisReply *r[2] = {NULL, NULL};
    redisSetTimeout(im->c, store_ms_tv(cfg->redis_timeout_ms + cfg->redis_wait_ms));
    if (publish) redisAppendCommandArgv(im->c, pub_argc, pub, NULL);
    redisAppendCommandArgv(im->c, 3, wait, NULL);
    for (int i = !publish; i < 2; i++) {
        if (redisGetReply(im->c, (void **)&r[i]) != REDIS_OK) {
            if (r[0]) freeReplyObject(r[0]);
            fail_unreachable(s, conn_error(im));
            return NULL;
        }
    }
    im->last_used_ms = util_mono_ms();
    redisSetTimeout(im->c, store_ms_tv(cfg->redis_timeout_ms));
    if (r[0] && r[0]->type == REDIS_REPLY_ERROR) { /* PUBLISH refused: WAIT proves nothing */
        freeReplyObject(r[1]);
        r[1] = r[0];
    } else if (r[0]) {
        freeReplyObject(r[0]);
    }
    return check_reply(s, r[1]);
}

static int wait_replicas(store *s, const char *mark_key) {
    store_impl *im = s->impl;
    const ctxd_config *cfg = im->cfg;
    redisReply *r = send_wait(s, mark_key);
    long long acked = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
    if (r) freeReplyObject(r);
    if (acked >= cfg->redis_wait_replicas) return CTXD_OK;
    im->unreplicated = 1; /* what was acknowledged to us is on the master */
    if (!r) return CTXD_ERR;
    store_fail(s, CTXD_E_REDIS,
               "The write is stored on the Redis master at %s but not yet on %d replica%s "
               "(%lld acknowledged it within %d ms, CTXD_REDIS_WAIT_REPLICAS); retry the "
               "request with the same Idempotency-Key",
               im->addr, cfg->redis_wait_replicas, cfg->redis_wait_replicas == 1 ? "" : "s",
               acked < 0 ? 0 : acked, cfg->redis_wait_ms);
    metrics_redis_error();
    /* Replicas that leave may have left for a new master (a failover). */
    if (sentinel_mode(im)) store_sentinel_probe(im->cfg, &im->next_sentinel, 1);
    return CTXD_ERR;
}

int store_wait_replicas(store *s) {
    store_impl *im = s->impl;
    if (im->cfg->redis_wait_replicas <= 0) return CTXD_OK;
    if (!im->c) { /* WAIT must run on the connection that wrote */
        store_fail(s, CTXD_E_REDIS, "Redis at %s: the connection that wrote is gone", im->addr);
        im->unreplicated = 1;
        return CTXD_ERR;
    }
    return wait_replicas(s, NULL);
}

int store_wait_replicas_all(store *s, const char *key) {
    if (((store_impl *)s->impl)->cfg->redis_wait_replicas <= 0) return CTXD_OK;
    if (route(s, key)) return CTXD_ERR;
    return wait_replicas(s, key);
}

static redisReply *eval_once(store *s, int script, int nkeys, const char *const *keys,
                             const args *a) {
    store_impl *im = s->impl;
    const char *key = nkeys ? keys[0] : NULL;
    if (route(s, key)) return NULL; /* the first connection learns the SHAs */
    int nargs = a ? a->n : 0, argc = 3 + nkeys + nargs;
    const char **argv = malloc(sizeof(*argv) * (size_t)argc);
    size_t *lens = malloc(sizeof(*lens) * (size_t)argc);
    redisReply *r = NULL;
    char nk[8];
    if (!argv || !lens) {
        store_fail(s, CTXD_E_NOMEM, "out of memory");
        goto cleanup;
    }
    snprintf(nk, sizeof(nk), "%d", nkeys);
    argv[0] = "EVALSHA";
    argv[1] = im->sha[script];
    argv[2] = nk;
    for (int i = 0; i < nkeys; i++) argv[3 + i] = keys[i];
    for (int i = 0; i < 3 + nkeys; i++) lens[i] = strlen(argv[i]);
    for (int i = 0; i < nargs; i++) {
        argv[3 + nkeys + i] = a->v[i];
        lens[3 + nkeys + i] = a->len[i];
    }
    const char **argvs[1] = {argv};
    const size_t *lenss[1] = {lens};
    r = run(s, key, 1, argvs, &argc, lenss);
    if (!r && im->noscript) {
        /* SCRIPT FLUSH, or a node that appeared since: send the text itself */
        argv[0] = "EVAL";
        argv[1] = store_script_text(script);
        lens[0] = 4;
        lens[1] = strlen(argv[1]);
        r = run(s, key, 1, argvs, &argc, lenss);
    }
    if (r && acknowledged[script] && wrote(script, r) && store_wait_replicas(s)) {
        freeReplyObject(r);
        r = NULL;
    }
cleanup:
    free(argv);
    free(lens);
    return r;
}

redisReply *store_eval(store *s, int script, int nkeys, const char *const *keys, const args *a) {
    redisReply *r = eval_once(s, script, nkeys, keys, a);
    /* READONLY refused the script before it wrote: run it on the new master. */
    if (!r && ((store_impl *)s->impl)->demoted) r = eval_once(s, script, nkeys, keys, a);
    return r;
}

redisReply *store_eval_read(store *s, int script, int nkeys, const char *const *keys,
                            const args *a) {
    redisReply *r = store_eval(s, script, nkeys, keys, a);
    if (!r && store_failed_io(s)) r = store_eval(s, script, nkeys, keys, a);
    return r;
}

int store_write_script(store *s, int script, const char *id, const args *a, ctxd_err too_large) {
    static const struct {
        const char *status;
        ctxd_err err;
    } statuses[] = {{"NOT_FOUND", CTXD_E_NOT_FOUND},
                    {"LOCK_LOST", CTXD_E_LOCK_LOST},
                    {"CONFLICT", CTXD_E_CONFLICT},
                    {"TOO_LARGE", CTXD_E_NONE}};
    ctx_keys k;
    store_keys_init(&k, s->tenant, id);
    redisReply *r = store_eval(s, script, K_COUNT, k.all, a);
    if (!r) return CTXD_ERR;
    int rc = CTXD_ERR;
    if (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_STATUS) {
        store_fail(s, CTXD_E_REDIS, "unexpected reply from Redis at %s", store_addr(s));
    } else if (!strcmp(r->str, "OK")) {
        rc = CTXD_OK;
    } else {
        ctxd_err err = CTXD_E_REDIS;
        for (size_t i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++)
            if (!strcmp(r->str, statuses[i].status))
                err = statuses[i].err ? statuses[i].err : too_large;
        store_fail(s, err, "%s on context %s", r->str, id);
    }
    freeReplyObject(r);
    return rc;
}

int store_ping(store *s) {
    const char *argv[1] = {"PING"};
    redisReply *r = store_read_command(s, 1, argv);
    if (!r) return CTXD_ERR;
    freeReplyObject(r);
    return CTXD_OK;
}
