/* store_script.c: script arguments, EVALSHA (EVAL when the server forgot it), the context write
 * scripts' statuses, and WAIT for replicas. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctxd/metrics.h"
#include "store_conn.h"

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
    if (publish && store_conn_cluster(im)) {
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
            store_conn_unreachable(s, store_conn_errstr(im));
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
    return store_conn_check(s, r[1]);
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
    if (store_conn_sentinel(im)) store_sentinel_probe(im->cfg, &im->next_sentinel, 1);
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
    if (store_route(s, key)) return CTXD_ERR;
    return wait_replicas(s, key);
}

/* The script as EVALSHA (then n_after more commands, same slot) in one
 * pipeline; see store_eval_then. */
static redisReply *eval_once(store *s, int script, int nkeys, const char *const *keys,
                             const args *a, int n_after, const char **const *after,
                             const int *after_argc, redisReply **after_out) {
    store_impl *im = s->impl;
    const char *key = nkeys ? keys[0] : NULL;
    if (store_route(s, key)) return NULL; /* the first connection learns the SHAs */
    int nargs = a ? a->n : 0, argc = 3 + nkeys + nargs;
    const char **argv = malloc(sizeof(*argv) * (size_t)argc);
    size_t *lens = malloc(sizeof(*lens) * (size_t)argc);
    redisReply *r = NULL, *rs[STORE_BATCH_MAX];
    const char **argvs[STORE_BATCH_MAX];
    const size_t *lenss[STORE_BATCH_MAX];
    int argcs[STORE_BATCH_MAX], n = 1 + n_after;
    char nk[8];
    if (!argv || !lens || n > STORE_BATCH_MAX) {
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
    argvs[0] = argv, argcs[0] = argc, lenss[0] = lens;
    for (int i = 0; i < n_after; i++) argvs[1 + i] = after[i], argcs[1 + i] = after_argc[i];
    for (int i = 0; i < n_after; i++) lenss[1 + i] = NULL;
    for (int attempt = 0; attempt < 2; attempt++) {
        if (store_route_run_all(s, key, n, argvs, argcs, lenss, rs)) goto cleanup;
        if (attempt || rs[0]->type != REDIS_REPLY_ERROR || strncmp(rs[0]->str, "NOSCRIPT", 8))
            break;
        /* SCRIPT FLUSH, or a node that appeared since: send the text itself */
        for (int i = 0; i < n; i++) freeReplyObject(rs[i]);
        argv[0] = "EVAL";
        argv[1] = store_script_text(script);
        lens[0] = 4;
        lens[1] = strlen(argv[1]);
    }
    for (int i = 0; i < n_after; i++) after_out[i] = rs[1 + i];
    r = store_conn_check(s, rs[0]);
    if (r && acknowledged[script] && wrote(script, r) && store_wait_replicas(s)) {
        freeReplyObject(r);
        r = NULL;
    }
    if (!r)
        for (int i = 0; i < n_after; i++) {
            freeReplyObject(after_out[i]);
            after_out[i] = NULL;
        }
cleanup:
    free(argv);
    free(lens);
    return r;
}

/* In a cluster: 1 when a command after the script has a key in another
 * slot than the script's first key. */
static int other_slot(const store *s, const char *key, int n_after, const char **const *after,
                      const int *after_argc) {
    if (!key || !store_conn_cluster(s->impl)) return 0;
    unsigned slot = store_cluster_slot(key, strlen(key));
    for (int i = 0; i < n_after; i++)
        if (after_argc[i] > 1 && store_cluster_slot(after[i][1], strlen(after[i][1])) != slot)
            return 1;
    return 0;
}

redisReply *store_eval_then(store *s, int script, int nkeys, const char *const *keys, const args *a,
                            int n_after, const char **const *after, const int *after_argc,
                            redisReply **after_out) {
    if (other_slot(s, nkeys ? keys[0] : NULL, n_after, after, after_argc)) {
        redisReply *r = store_eval(s, script, nkeys, keys, a);
        for (int i = 0; r && i < n_after; i++) {
            const char **one[1] = {after[i]};
            redisReply *rs[1];
            if (store_route_run_all(s, after[i][1], 1, one, &after_argc[i], NULL, rs)) {
                for (int j = 0; j < i; j++) freeReplyObject(after_out[j]);
                freeReplyObject(r);
                return NULL;
            }
            after_out[i] = rs[0];
        }
        return r;
    }
    redisReply *r = eval_once(s, script, nkeys, keys, a, n_after, after, after_argc, after_out);
    /* READONLY refused the script before it wrote: run it on the new master. */
    if (!r && ((store_impl *)s->impl)->demoted)
        r = eval_once(s, script, nkeys, keys, a, n_after, after, after_argc, after_out);
    return r;
}

redisReply *store_eval(store *s, int script, int nkeys, const char *const *keys, const args *a) {
    return store_eval_then(s, script, nkeys, keys, a, 0, NULL, NULL, NULL);
}

redisReply *store_eval_read(store *s, int script, int nkeys, const char *const *keys,
                            const args *a) {
    redisReply *r = store_eval(s, script, nkeys, keys, a);
    if (!r && store_failed_io(s)) r = store_eval(s, script, nkeys, keys, a);
    return r;
}

int store_write_script(store *s, int script, const char *id, const args *a, ctxd_err too_large) {
    return store_write_script_then(s, script, id, a, too_large, 0, NULL, NULL);
}

int store_write_script_then(store *s, int script, const char *id, const args *a, ctxd_err too_large,
                            int n_after, const char **const *after, const int *after_argc) {
    static const struct {
        const char *status;
        ctxd_err err;
    } statuses[] = {{"NOT_FOUND", CTXD_E_NOT_FOUND},
                    {"LOCK_LOST", CTXD_E_LOCK_LOST},
                    {"CONFLICT", CTXD_E_CONFLICT},
                    {"PRECONDITION", CTXD_E_PRECONDITION_FAILED},
                    {"TOO_LARGE", CTXD_E_NONE}};
    ctx_keys k;
    redisReply *rs[STORE_BATCH_MAX];
    int failed = 0;
    store_keys_init(&k, s->tenant, id);
    if (n_after > STORE_BATCH_MAX - 1) {
        store_fail(s, CTXD_E_NOMEM, "too many commands after a script");
        return CTXD_ERR;
    }
    redisReply *r = store_eval_then(s, script, K_COUNT, k.all, a, n_after, after, after_argc, rs);
    if (!r) return CTXD_ERR;
    for (int i = 0; i < n_after; i++) {
        if (rs[i]->type == REDIS_REPLY_ERROR && !failed++)
            store_fail(s, CTXD_E_REDIS, "Redis at %s answered an error: %s", store_addr(s),
                       rs[i]->str);
        freeReplyObject(rs[i]);
    }
    if (failed) {
        freeReplyObject(r);
        return CTXD_ERR;
    }
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
