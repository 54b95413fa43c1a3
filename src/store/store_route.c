/* store_route.c: which server a command goes to: the one server, or the cluster node serving
 * its key's slot (one connection per node per thread); MOVED, ASK, TRYAGAIN, CLUSTERDOWN. */
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "ctxd/metrics.h"
#include "store_conn.h"

/* MOVED, ASK, TRYAGAIN or CLUSTERDOWN answers one command follows; the
 * Redis timeout bounds them first (a slot that migrates answers ASK and
 * TRYAGAIN by turns until it is done). */
#define REDIRECTS_MAX 128

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
        store_watch_forget(im, slot->c);
        if (slot->c) redisFree(slot->c);
        *slot = (parked_conn){im->node, im->c, im->watching, im->epoch, im->last_used_ms};
        im->c = NULL;
        im->watching = 0;
    }
    im->node = *to;
    snprintf(im->addr, sizeof(im->addr), "%s:%d", to->host, to->port);
    for (int i = 0; i < PARKED_MAX; i++) {
        parked_conn *p = &im->parked[i];
        if (p->c && same_node(&p->node, to)) {
            im->c = p->c;
            im->watching = p->watching;
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
    for (int i = 0; i < im->cfg->redis_n_seeds; i++) nodes[n++] = store_conn_seed(im->cfg, i);
    ctxd_err err = s->err;
    for (int i = 0; i < n; i++) {
        switch_node(im, &nodes[i]);
        if (store_conn_ensure(s)) continue;
        const char *argv[2] = {"CLUSTER", "SLOTS"};
        redisReply *r = store_conn_raw(s, 2, argv, NULL);
        int ok = r && store_cluster_load(r, im->node.host) == CTXD_OK;
        if (r) freeReplyObject(r);
        if (ok) break;
    }
    s->err = err;
}

/* Connect to the server that holds key (any server for NULL): the one
 * server, the Sentinels' master, or the cluster node serving key's slot. */
int store_route(store *s, const char *key) {
    store_impl *im = s->impl;
    if (!store_conn_may_cluster(im)) return store_conn_ensure(s);
    if (store_cluster_mode() == STORE_MODE_UNKNOWN) {
        /* The first connection finds out; a seed that does not answer
         * makes way for the next. */
        int n = im->cfg->redis_n_seeds ? im->cfg->redis_n_seeds : 1;
        for (int i = 0; i < n && store_cluster_mode() == STORE_MODE_UNKNOWN; i++) {
            ctxd_hostport to = store_conn_seed(im->cfg, im->next_seed);
            switch_node(im, &to);
            if (store_conn_ensure(s) == CTXD_OK) break;
            im->next_seed = (im->next_seed + 1) % n;
        }
        if (store_cluster_mode() == STORE_MODE_UNKNOWN) return CTXD_ERR;
    }
    if (store_cluster_mode() == STORE_MODE_STANDALONE) {
        ctxd_hostport to = store_conn_seed(im->cfg, store_cluster_standalone_seed());
        switch_node(im, &to);
        return store_conn_ensure(s);
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
    return store_conn_ensure(s);
}

/* Send n commands pipelined on the current connection (after ASKING when
 * asking) and read every reply into out (caller frees). CTXD_ERR after an
 * I/O failure, which drops the connection. */
static int exchange(store *s, int asking, int keep_watch, int n, const char **const *argvs,
                    const int *argcs, const size_t *const *lens, redisReply **out) {
    store_impl *im = s->impl;
    const char *ask[1] = {"ASKING"}, *unwatch[1] = {"UNWATCH"};
    /* per command sent: an ASKING or UNWATCH, whose reply is dropped */
    char is_ask[2 * STORE_BATCH_MAX + 1];
    int sent = 0, in_multi = 0, got = 0, fresh = 0;
    for (int i = 0; i < n && !fresh; i++)
        fresh = !strcasecmp(argvs[i][0], "MULTI") || !strcasecmp(argvs[i][0], "WATCH");
    /* A WATCH left on this connection (a turn's read that did not append,
     * store_watch.c) would make this EXEC fail, or the new WATCH's: it ends
     * here. */
    if (fresh && !keep_watch && im->watching) {
        redisAppendCommandArgv(im->c, 1, unwatch, NULL);
        is_ask[sent++] = 1;
        im->watching = 0;
    }
    if (fresh && !keep_watch) store_watch_forget(im, im->c);
    for (int i = 0; i < n; i++) {
        const char *cmd = argvs[i][0];
        if (!strcasecmp(cmd, "WATCH"))
            im->watching = 1;
        else if (!strcasecmp(cmd, "EXEC") || !strcasecmp(cmd, "UNWATCH") ||
                 !strcasecmp(cmd, "DISCARD"))
            im->watching = 0;
    }
    /* ASKING holds for the next command only, or for a whole MULTI block
     * when it comes right before MULTI. */
    for (int i = 0; i < n; i++) {
        if (asking && !in_multi) {
            redisAppendCommandArgv(im->c, 1, ask, NULL);
            is_ask[sent++] = 1;
        }
        if (!strcasecmp(argvs[i][0], "MULTI")) in_multi = 1;
        if (!strcasecmp(argvs[i][0], "EXEC")) in_multi = 0;
        redisAppendCommandArgv(im->c, argcs[i], argvs[i], lens ? lens[i] : NULL);
        is_ask[sent++] = 0;
    }
    for (int i = 0; i < sent; i++) {
        void *reply = NULL;
        if (redisGetReply(im->c, &reply) != REDIS_OK) {
            for (int j = 0; j < got; j++) freeReplyObject(out[j]);
            store_conn_unreachable(s, store_conn_errstr(im));
            return CTXD_ERR;
        }
        if (is_ask[i])
            freeReplyObject(reply);
        else
            out[got++] = reply;
    }
    im->last_used_ms = util_mono_ms();
    return CTXD_OK;
}

/* In a cluster, the first reply that asks to go elsewhere or wait. */
static int find_redirect(const store_impl *im, int n, redisReply **rs, unsigned *slot,
                         ctxd_hostport *to, char *why, size_t whylen) {
    if (!store_conn_cluster(im)) return STORE_REDIRECT_NONE;
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

/* Run n commands (pipelined) on the server holding key, every reply into
 * rs (error replies as they are). A cluster's MOVED is followed (and the map
 * reloaded), ASK is followed with ASKING, TRYAGAIN and CLUSTERDOWN are
 * retried with backoff: all within the Redis timeout. Each of these means
 * the commands did not run, so writes are safe to resend. */
int store_route_run_all(store *s, const char *key, int n, const char **const *argvs,
                        const int *argcs, const size_t *const *lens, redisReply **rs) {
    store_impl *im = s->impl;
    int64_t deadline = util_mono_ms() + im->cfg->redis_timeout_ms;
    int asking = 0, backoff_ms = 5;
    char why[200] = "";
    if (n > STORE_BATCH_MAX) {
        store_fail(s, CTXD_E_NOMEM, "a pipeline of %d commands is too long", n);
        return CTXD_ERR;
    }
    for (int hop = 0;; hop++) {
        if (!asking && store_route(s, key)) return CTXD_ERR;
        if (exchange(s, asking, 0, n, argvs, argcs, lens, rs)) return CTXD_ERR;
        unsigned slot = 0;
        ctxd_hostport to = {"", 0};
        int kind = find_redirect(im, n, rs, &slot, &to, why, sizeof(why));
        if (kind == STORE_REDIRECT_NONE) return CTXD_OK;
        for (int i = 0; i < n; i++) freeReplyObject(rs[i]);
        int64_t left = deadline - util_mono_ms();
        if (hop + 1 == REDIRECTS_MAX || left <= 0) {
            store_fail(s, CTXD_E_REDIS, "Redis Cluster at %s: %s (still, after %d tries)", im->addr,
                       why, hop + 1);
            metrics_redis_error();
            store_cluster_stale();
            return CTXD_ERR;
        }
        asking = 0;
        metrics_redis_redirect(kind == STORE_REDIRECT_MOVED ? METRICS_MOVED
                               : kind == STORE_REDIRECT_ASK ? METRICS_ASK
                                                            : METRICS_RETRY);
        if (kind == STORE_REDIRECT_MOVED) {
            store_cluster_moved(slot, to.host, to.port);
        } else if (kind == STORE_REDIRECT_ASK) {
            switch_node(im, &to);
            if (store_conn_ensure(s)) return CTXD_ERR;
            asking = 1;
        } else { /* the slot is moving, or the cluster is failing over */
            sleep_ms((int)(left < backoff_ms ? left : backoff_ms));
            backoff_ms = backoff_ms < 100 ? backoff_ms * 2 : 200;
            store_cluster_stale();
        }
    }
}

int store_route_here(store *s, int n, const char **const *argvs, const int *argcs,
                     const size_t *const *lens, redisReply **rs) {
    if (n > STORE_BATCH_MAX) {
        store_fail(s, CTXD_E_NOMEM, "a pipeline of %d commands is too long", n);
        return CTXD_ERR;
    }
    return exchange(s, 0, 1, n, argvs, argcs, lens, rs);
}

redisReply *store_route_run(store *s, const char *key, int n, const char **const *argvs,
                            const int *argcs, const size_t *const *lens) {
    redisReply *rs[STORE_BATCH_MAX];
    if (store_route_run_all(s, key, n, argvs, argcs, lens, rs)) return NULL;
    for (int i = 0; i < n - 1; i++) freeReplyObject(rs[i]);
    return store_conn_check(s, rs[n - 1]);
}

/* The key a command names (its first argument), or NULL. */
static const char *key_of(int argc, const char **argv) { return argc > 1 ? argv[1] : NULL; }

redisReply *store_command(store *s, int argc, const char **argv, const size_t *lens) {
    const char **argvs[1] = {argv};
    const size_t *lenss[1] = {lens};
    return store_route_run(s, key_of(argc, argv), 1, argvs, &argc, lens ? lenss : NULL);
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

/* The first key a pipeline names: where it goes. */
static const char *first_key(int n, const char **const *argvs, const int *argcs) {
    const char *key = NULL;
    for (int i = 0; i < n && !key; i++) key = key_of(argcs[i], argvs[i]);
    return key;
}

redisReply *store_pipeline(store *s, int n, const char **const *argvs, const int *argcs) {
    return store_route_run(s, first_key(n, argvs, argcs), n, argvs, argcs, NULL);
}

int store_pipeline_all(store *s, int n, const char **const *argvs, const int *argcs,
                       redisReply **rs) {
    return store_route_run_all(s, first_key(n, argvs, argcs), n, argvs, argcs, NULL, rs);
}
