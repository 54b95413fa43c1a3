/* store_conn.c: a Redis connection per thread: connect (the master store_sentinel.c names, in
 * Sentinel mode), set up, EVALSHA, WAIT. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctxd/log.h"
#include "ctxd/metrics.h"
#include "store_int.h"

#define IDLE_PING_MS 1000

typedef struct store_impl {
    const ctxd_config *cfg; /* borrowed */
    redisContext *c;        /* NULL when not connected */
    unsigned epoch;         /* global_epoch when c was made */
    int64_t last_used_ms;
    int io_failed;    /* the last failure was the connection itself */
    int unreplicated; /* the last failure: written, but too few replicas acknowledged */
    int demoted;      /* the last failure: the master answered READONLY */
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
    if (im) drop_connection(im);
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
                          : redisConnectWithTimeout(cfg->redis_host, cfg->redis_port, tv);
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
        demoted(s, r->str);
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

redisReply *store_command(store *s, int argc, const char **argv, const size_t *lens) {
    if (ensure_connected(s)) return NULL;
    return check_reply(s, raw_command(s, argc, argv, lens));
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
    if (ensure_connected(s)) return NULL;
    store_impl *im = s->impl;
    for (int i = 0; i < n; i++) redisAppendCommandArgv(im->c, argcs[i], argvs[i], NULL);
    redisReply *last = NULL;
    for (int i = 0; i < n; i++) {
        void *reply = NULL;
        if (redisGetReply(im->c, &reply) != REDIS_OK) {
            if (last) freeReplyObject(last);
            fail_unreachable(s, conn_error(im));
            return NULL;
        }
        if (last) freeReplyObject(last);
        last = reply;
    }
    im->last_used_ms = util_mono_ms();
    return check_reply(s, last);
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

/* WAIT (after a PUBLISH when publish: see store_wait_replicas_all), with
 * the socket's timeout stretched by redis_wait_ms. WAIT's reply (caller
 * frees), or NULL with s->err. */
static redisReply *send_wait(store *s, int publish) {
    store_impl *im = s->impl;
    const ctxd_config *cfg = im->cfg;
    char n[16], ms[16];
    snprintf(n, sizeof(n), "%d", cfg->redis_wait_replicas);
    snprintf(ms, sizeof(ms), "%d", cfg->redis_wait_ms);
    const char *pub[3] = {"PUBLISH", "ctxd:wait", ""}, *wait[3] = {"WAIT", n, ms};
    redisReply *r[2] = {NULL, NULL};
    redisSetTimeout(im->c, store_ms_tv(cfg->redis_timeout_ms + cfg->redis_wait_ms));
    if (publish) redisAppendCommandArgv(im->c, 3, pub, NULL);
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

static int wait_replicas(store *s, int publish) {
    store_impl *im = s->impl;
    const ctxd_config *cfg = im->cfg;
    redisReply *r = send_wait(s, publish);
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
    return wait_replicas(s, 0);
}

int store_wait_replicas_all(store *s) {
    if (((store_impl *)s->impl)->cfg->redis_wait_replicas <= 0) return CTXD_OK;
    if (ensure_connected(s)) return CTXD_ERR;
    return wait_replicas(s, 1);
}

static redisReply *eval_once(store *s, int script, int nkeys, const char *const *keys,
                             const args *a) {
    if (ensure_connected(s)) return NULL;
    store_impl *im = s->impl;
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
    r = raw_command(s, argc, argv, lens);
    if (r && r->type == REDIS_REPLY_ERROR && !strncmp(r->str, "NOSCRIPT", 8)) {
        freeReplyObject(r); /* SCRIPT FLUSH: send the text itself */
        argv[0] = "EVAL";
        argv[1] = store_script_text(script);
        lens[0] = 4;
        lens[1] = strlen(argv[1]);
        r = raw_command(s, argc, argv, lens);
    }
    r = check_reply(s, r);
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
