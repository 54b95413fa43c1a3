/* store_conn.c: one Redis connection per thread: connect, reconnect, AUTH/SELECT, EVALSHA. */
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
    int io_failed; /* the last failure was the connection itself */
    char sha[S_COUNT][41];
    char addr[300]; /* host:port or socket path, for messages */
} store_impl;

static atomic_uint global_epoch;
static atomic_int redis_up = -1; /* -1 unknown, 0 down, 1 up */

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

void store_fail(store *s, ctxd_err err, const char *fmt, ...) {
    va_list ap;
    s->err = err;
    va_start(ap, fmt);
    vsnprintf(s->errstr, sizeof(s->errstr), fmt, ap);
    va_end(ap);
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

/* Authenticate, select the db and load the scripts on a new connection. */
static int setup_connection(store *s) {
    store_impl *im = s->impl;
    const ctxd_config *cfg = im->cfg;
    if (cfg->redis_password[0]) {
        const char *argv[3] = {"AUTH", cfg->redis_user, cfg->redis_password};
        if (!cfg->redis_user[0]) argv[1] = cfg->redis_password;
        if (setup_command(s, "AUTH", cfg->redis_user[0] ? 3 : 2, argv, NULL)) return CTXD_ERR;
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

static int ensure_connected(store *s) {
    store_impl *im = s->impl;
    s->err = CTXD_E_NONE;
    im->io_failed = 0;
    unsigned epoch = atomic_load(&global_epoch);
    if (im->c && im->epoch != epoch) drop_connection(im);
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

    int ms = im->cfg->redis_timeout_ms;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    redisContext *c = im->cfg->redis_socket[0]
                          ? redisConnectUnixWithTimeout(im->cfg->redis_socket, tv)
                          : redisConnectWithTimeout(im->cfg->redis_host, im->cfg->redis_port, tv);
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

/* An error reply becomes CTXD_E_REDIS (the reply is freed). */
static redisReply *check_reply(store *s, redisReply *r) {
    if (r && r->type == REDIS_REPLY_ERROR) {
        store_fail(s, CTXD_E_REDIS, "Redis at %s answered an error: %s", store_addr(s), r->str);
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

redisReply *store_eval(store *s, int script, int nkeys, const char *const *keys, const args *a) {
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
cleanup:
    free(argv);
    free(lens);
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
