/* store.c: the only file that speaks to Redis or spells a key name.
 *
 * Keys of one context share the hash tag {<id>} so Redis Cluster keeps them
 * on one slot; every multi-key change is one Lua script. */
#include "ctxd/store.h"

#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctxd/log.h"

#define KEY_LEN 320
#define IDLE_PING_MS 1000
#define ADDR(s) (((store_impl *)(s)->impl)->addr)

/* ---- Key names: the README's "Redis layout" section mirrors these. ---- */

static void key_ctx(char *out, const char *id, const char *part) {
    snprintf(out, KEY_LEN, "ctxd:{%s}:%s", id, part);
}

static void key_create(char *out, const char *idem_key) {
    snprintf(out, KEY_LEN, "ctxd:create:{%s}", idem_key);
}

/* ---- Lua scripts. Each keeps one context's keys consistent. ---- */

/* Refresh a context's expiry from its meta ttl_seconds (KEYS 1..3). */
#define LUA_TOUCH                                                         \
    "local function touch()\n"                                            \
    "  local ttl = tonumber(redis.call('HGET', KEYS[1], 'ttl_seconds') or '0')\n" \
    "  if ttl and ttl > 0 then\n"                                         \
    "    for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ttl) end\n"        \
    "  end\n"                                                             \
    "end\n"

/* KEYS meta messages state idem; ARGV id now system model ttl n k1 v1 ... */
static const char lua_create[] =
    "if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end\n"
    "redis.call('HSET', KEYS[1], 'id', ARGV[1], 'created_at', ARGV[2],\n"
    "  'last_updated', ARGV[2], 'system', ARGV[3], 'model', ARGV[4],\n"
    "  'ttl_seconds', ARGV[5], 'next_seq', 1, 'first_seq', 1, 'version', 1)\n"
    "local n = tonumber(ARGV[6])\n"
    "for i = 0, n - 1 do redis.call('HSET', KEYS[3], ARGV[7 + 2 * i], ARGV[8 + 2 * i]) end\n"
    "local ttl = tonumber(ARGV[5])\n"
    "if ttl > 0 then for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ttl) end end\n"
    "return 1\n";

/* KEYS meta messages state; ARGV what limit before.
 * Returns nil, or {meta-pairs, messages, state-pairs, llen}. */
static const char lua_read[] =
    "local meta = redis.call('HGETALL', KEYS[1])\n"
    "if #meta == 0 then return false end\n"
    "local what = tonumber(ARGV[1])\n"
    "local len = redis.call('LLEN', KEYS[2])\n"
    "local msgs = {}\n"
    "if what % 2 == 1 and len > 0 then\n"
    "  local first = 1\n"
    "  for i = 1, #meta, 2 do\n"
    "    if meta[i] == 'first_seq' then first = tonumber(meta[i + 1]) end\n"
    "  end\n"
    "  local last = len - 1\n"
    "  local before = tonumber(ARGV[3])\n"
    "  if before > 0 then last = math.min(last, before - first - 1) end\n"
    "  local limit = tonumber(ARGV[2])\n"
    "  local start = 0\n"
    "  if limit > 0 then start = math.max(0, last - limit + 1) end\n"
    "  if last >= start then msgs = redis.call('LRANGE', KEYS[2], start, last) end\n"
    "end\n"
    "local state = {}\n"
    "if what >= 2 then state = redis.call('HGETALL', KEYS[3]) end\n"
    "return {meta, msgs, state, len}\n";

/* KEYS meta messages state idem lock; ARGV token expected_seq now_iso now_ms
 * idem_key idem_record idem_ttl max_messages n msg1 ... */
static const char lua_append[] = LUA_TOUCH
    "local function unlock()\n"
    "  if redis.call('GET', KEYS[5]) == ARGV[1] then redis.call('DEL', KEYS[5]) end\n"
    "end\n"
    "if redis.call('EXISTS', KEYS[1]) == 0 then unlock() return 'NOT_FOUND' end\n"
    "if redis.call('GET', KEYS[5]) ~= ARGV[1] then return 'LOCK_LOST' end\n"
    "local seq = tonumber(redis.call('HGET', KEYS[1], 'next_seq'))\n"
    "if seq ~= tonumber(ARGV[2]) then unlock() return 'CONFLICT' end\n"
    "local n = tonumber(ARGV[9])\n"
    "local max = tonumber(ARGV[8])\n"
    "if max > 0 and redis.call('LLEN', KEYS[2]) + n > max then unlock() return 'TOO_LARGE' end\n"
    "for i = 1, n do redis.call('RPUSH', KEYS[2], ARGV[9 + i]) end\n"
    "redis.call('HSET', KEYS[1], 'next_seq', seq + n, 'last_updated', ARGV[3])\n"
    "if ARGV[5] ~= '' then\n"
    "  if redis.call('HLEN', KEYS[4]) >= 1024 then\n"
    "    local all = redis.call('HGETALL', KEYS[4])\n"
    "    local now = tonumber(ARGV[4])\n"
    "    for i = 1, #all, 2 do\n"
    "      local exp = tonumber(string.match(all[i + 1], '^(%d+) '))\n"
    "      if not exp or exp < now then redis.call('HDEL', KEYS[4], all[i]) end\n"
    "    end\n"
    "  end\n"
    "  redis.call('HSET', KEYS[4], ARGV[5], ARGV[6])\n"
    "  redis.call('EXPIRE', KEYS[4], ARGV[7])\n"
    "end\n"
    "redis.call('DEL', KEYS[5])\n"
    "touch()\n"
    "return 'OK'\n";

/* KEYS meta messages state idem lock. Returns 1 if the context existed. */
static const char lua_delete[] =
    "local e = redis.call('EXISTS', KEYS[1])\n"
    "redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])\n"
    "return e\n";

/* KEYS lock; ARGV token ttl_ms. */
static const char lua_renew[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
    "  return redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
    "end\n"
    "return 0\n";

/* KEYS lock; ARGV token. */
static const char lua_release[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end\n"
    "return 0\n";

/* KEYS meta messages state; ARGV now_iso n k1 v1 ... */
static const char lua_state_put[] = LUA_TOUCH
    "if redis.call('EXISTS', KEYS[1]) == 0 then return 'NOT_FOUND' end\n"
    "redis.call('DEL', KEYS[3])\n"
    "local n = tonumber(ARGV[2])\n"
    "for i = 0, n - 1 do redis.call('HSET', KEYS[3], ARGV[3 + 2 * i], ARGV[4 + 2 * i]) end\n"
    "redis.call('HSET', KEYS[1], 'last_updated', ARGV[1])\n"
    "touch()\n"
    "return 'OK'\n";

/* KEYS meta messages state; ARGV now_iso max_bytes n (op key value)...
 * op 's' sets, 'd' deletes. The size check runs on the merged result. */
static const char lua_state_patch[] = LUA_TOUCH
    "if redis.call('EXISTS', KEYS[1]) == 0 then return 'NOT_FOUND' end\n"
    "local cur = redis.call('HGETALL', KEYS[3])\n"
    "local m = {}\n"
    "for i = 1, #cur, 2 do m[cur[i]] = cur[i + 1] end\n"
    "local n = tonumber(ARGV[3])\n"
    "for i = 0, n - 1 do\n"
    "  if ARGV[4 + 3 * i] == 'd' then m[ARGV[5 + 3 * i]] = nil\n"
    "  else m[ARGV[5 + 3 * i]] = ARGV[6 + 3 * i] end\n"
    "end\n"
    "local size = 0\n"
    "for k, v in pairs(m) do size = size + #k + #v end\n"
    "if size > tonumber(ARGV[2]) then return 'TOO_LARGE' end\n"
    "for i = 0, n - 1 do\n"
    "  if ARGV[4 + 3 * i] == 'd' then redis.call('HDEL', KEYS[3], ARGV[5 + 3 * i])\n"
    "  else redis.call('HSET', KEYS[3], ARGV[5 + 3 * i], ARGV[6 + 3 * i]) end\n"
    "end\n"
    "redis.call('HSET', KEYS[1], 'last_updated', ARGV[1])\n"
    "touch()\n"
    "return 'OK'\n";

enum { S_CREATE, S_READ, S_APPEND, S_DELETE, S_RENEW, S_RELEASE, S_STATE_PUT,
       S_STATE_PATCH, S_COUNT };

static const char *const scripts[S_COUNT] = {
    lua_create, lua_read, lua_append, lua_delete,
    lua_renew, lua_release, lua_state_put, lua_state_patch};

/* ---- Connection management ---- */

typedef struct store_impl {
    const ctxd_config *cfg; /* borrowed */
    redisContext *c;        /* NULL when not connected */
    unsigned epoch;         /* global_epoch when c was made */
    int64_t last_used_ms;
    char sha[S_COUNT][41];
    char addr[300]; /* host:port or socket path, for messages */
} store_impl;

static atomic_uint global_epoch;
static atomic_int redis_up = -1; /* -1 unknown, 0 down, 1 up */

void store_invalidate_all(void) { atomic_fetch_add(&global_epoch, 1); }

int store_redis_seen_up(void) { return atomic_load(&redis_up) == 1; }

static void set_up_state(store_impl *im, int up, const char *why) {
    int prev = atomic_exchange(&redis_up, up);
    if (prev == up) return;
    if (up)
        log_msg(LOG_INFO, "redis reachable at %s", im->addr);
    else
        log_msg(LOG_WARN, "redis unreachable at %s: %s (ctxd keeps retrying; "
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
    return s;
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

/* Record a failure; every message names the Redis address (never a
 * password). */
static void fail(store *s, store_err err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void fail(store *s, store_err err, const char *fmt, ...) {
    va_list ap;
    s->err = err;
    va_start(ap, fmt);
    vsnprintf(s->errstr, sizeof(s->errstr), fmt, ap);
    va_end(ap);
}

/* A connection-level failure: drop it, tell the other threads, log. */
static void fail_io(store *s, const char *detail) {
    store_impl *im = s->impl;
    char why[128];
    snprintf(why, sizeof(why), "%s", detail); /* detail may live in im->c */
    fail(s, STORE_ERR_IO, "Redis unavailable at %s: %s", ADDR(s), why);
    drop_connection(im);
    store_invalidate_all();
    set_up_state(im, 0, why);
}

/* Run one command on an established connection; error replies are returned
 * as replies. NULL on I/O failure (connection dropped). */
static redisReply *raw_command(store *s, int argc, const char **argv,
                               const size_t *lens) {
    store_impl *im = s->impl;
    redisReply *r = redisCommandArgv(im->c, argc, argv, lens);
    if (!r) {
        fail_io(s, im->c && im->c->errstr[0] ? im->c->errstr : "connection lost");
        return NULL;
    }
    im->last_used_ms = util_mono_ms();
    return r;
}

static int reply_is_error(redisReply *r) { return r->type == REDIS_REPLY_ERROR; }

/* Authenticate, select the db and load the scripts on a new connection. */
static int setup_connection(store *s) {
    store_impl *im = s->impl;
    const ctxd_config *cfg = im->cfg;
    redisReply *r;
    if (cfg->redis_password[0]) {
        const char *argv[3] = {"AUTH", cfg->redis_user, cfg->redis_password};
        int argc = 3;
        if (!cfg->redis_user[0]) {
            argv[1] = cfg->redis_password;
            argc = 2;
        }
        if (!(r = raw_command(s, argc, argv, NULL))) return CTXD_ERR;
        if (reply_is_error(r)) {
            /* Never echo the password; Redis' own message is safe. */
            fail(s, STORE_ERR_REDIS, "Redis at %s refused AUTH: %s", ADDR(s), r->str);
            freeReplyObject(r);
            drop_connection(im);
            return CTXD_ERR;
        }
        freeReplyObject(r);
    }
    if (cfg->redis_db) {
        char db[16];
        snprintf(db, sizeof(db), "%d", cfg->redis_db);
        const char *argv[2] = {"SELECT", db};
        if (!(r = raw_command(s, 2, argv, NULL))) return CTXD_ERR;
        if (reply_is_error(r)) {
            fail(s, STORE_ERR_REDIS, "Redis at %s refused SELECT: %s", ADDR(s), r->str);
            freeReplyObject(r);
            drop_connection(im);
            return CTXD_ERR;
        }
        freeReplyObject(r);
    }
    for (int i = 0; i < S_COUNT; i++) {
        const char *argv[3] = {"SCRIPT", "LOAD", scripts[i]};
        if (!(r = raw_command(s, 3, argv, NULL))) return CTXD_ERR;
        if (reply_is_error(r) || r->type != REDIS_REPLY_STRING || r->len != 40) {
            fail(s, STORE_ERR_REDIS, "Redis at %s refused SCRIPT LOAD: %s", ADDR(s), r->str ? r->str : "unexpected reply");
            freeReplyObject(r);
            drop_connection(im);
            return CTXD_ERR;
        }
        memcpy(im->sha[i], r->str, 41);
        freeReplyObject(r);
    }
    return CTXD_OK;
}

static int ensure_connected(store *s) {
    store_impl *im = s->impl;
    unsigned epoch = atomic_load(&global_epoch);
    if (im->c && im->epoch != epoch) drop_connection(im);
    if (im->c && util_mono_ms() - im->last_used_ms > IDLE_PING_MS) {
        /* Idle connections may be stale after a Redis restart. */
        const char *argv[1] = {"PING"};
        redisReply *r = raw_command(s, 1, argv, NULL);
        if (r) freeReplyObject(r);
        epoch = atomic_load(&global_epoch);
    }
    if (im->c) return CTXD_OK;

    int ms = im->cfg->redis_timeout_ms;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    redisContext *c = im->cfg->redis_socket[0]
                          ? redisConnectUnixWithTimeout(im->cfg->redis_socket, tv)
                          : redisConnectWithTimeout(im->cfg->redis_host,
                                                    im->cfg->redis_port, tv);
    if (!c || c->err) {
        char why[160];
        snprintf(why, sizeof(why), "%s", c ? c->errstr : "out of memory");
        if (c) redisFree(c);
        fail(s, STORE_ERR_IO, "Redis unavailable at %s: %s", ADDR(s), why);
        store_invalidate_all(); /* connections made before are suspect */
        set_up_state(im, 0, why);
        return CTXD_ERR;
    }
    redisSetTimeout(c, tv);
    im->c = c;
    im->epoch = epoch;
    if (setup_connection(s)) return CTXD_ERR;
    set_up_state(im, 1, NULL);
    return CTXD_OK;
}

/* Run a command: connect if needed; Redis error replies become
 * STORE_ERR_REDIS. Returns the reply (caller frees) or NULL. */
static redisReply *command(store *s, int argc, const char **argv,
                           const size_t *lens) {
    s->err = STORE_ERR_NONE;
    if (ensure_connected(s)) return NULL;
    redisReply *r = raw_command(s, argc, argv, lens);
    if (r && reply_is_error(r)) {
        fail(s, STORE_ERR_REDIS, "Redis at %s answered an error: %s", ADDR(s), r->str);
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

/* Run one of our scripts by SHA, falling back to EVAL if Redis forgot it
 * (SCRIPT FLUSH). keys and args are borrowed. */
static redisReply *eval(store *s, int script, int nkeys, const char **keys,
                        int nargs, const char **args, const size_t *arglens) {
    s->err = STORE_ERR_NONE;
    if (ensure_connected(s)) return NULL;
    store_impl *im = s->impl;
    int argc = 3 + nkeys + nargs;
    const char **argv = malloc(sizeof(*argv) * (size_t)argc);
    size_t *lens = malloc(sizeof(*lens) * (size_t)argc);
    redisReply *r = NULL;
    char nk[8];
    if (!argv || !lens) {
        s->err = STORE_ERR_NOMEM;
        snprintf(s->errstr, sizeof(s->errstr), "out of memory");
        goto cleanup;
    }
    snprintf(nk, sizeof(nk), "%d", nkeys);
    argv[0] = "EVALSHA";
    argv[1] = im->sha[script];
    argv[2] = nk;
    for (int i = 0; i < nkeys; i++) argv[3 + i] = keys[i];
    for (int i = 0; i < nargs; i++) argv[3 + nkeys + i] = args[i];
    for (int i = 0; i < argc; i++) lens[i] = strlen(argv[i]);
    if (arglens)
        for (int i = 0; i < nargs; i++) lens[3 + nkeys + i] = arglens[i];

    r = raw_command(s, argc, argv, lens);
    if (r && reply_is_error(r) && !strncmp(r->str, "NOSCRIPT", 8)) {
        freeReplyObject(r);
        argv[0] = "EVAL";
        argv[1] = scripts[script];
        lens[0] = 4;
        lens[1] = strlen(scripts[script]);
        r = raw_command(s, argc, argv, lens);
    }
    if (r && reply_is_error(r)) {
        fail(s, STORE_ERR_REDIS, "Redis at %s answered an error: %s", ADDR(s), r->str);
        freeReplyObject(r);
        r = NULL;
    }
cleanup:
    free(argv);
    free(lens);
    return r;
}

/* Read-only commands and scripts are retried once on a fresh connection
 * after an I/O error: the connection may have been left over from before a
 * Redis restart. Writes are not retried (they might have been applied). */
static redisReply *read_command(store *s, int argc, const char **argv) {
    redisReply *r = command(s, argc, argv, NULL);
    if (!r && s->err == STORE_ERR_IO) r = command(s, argc, argv, NULL);
    return r;
}

static redisReply *read_eval(store *s, int script, int nkeys, const char **keys,
                             int nargs, const char **args) {
    redisReply *r = eval(s, script, nkeys, keys, nargs, args, NULL);
    if (!r && s->err == STORE_ERR_IO) r = eval(s, script, nkeys, keys, nargs, args, NULL);
    return r;
}

int store_ping(store *s) {
    const char *argv[1] = {"PING"};
    redisReply *r = read_command(s, 1, argv);
    if (!r) return CTXD_ERR;
    freeReplyObject(r);
    return CTXD_OK;
}

/* ---- Context operations ---- */

/* The five keys of a context, in the order the scripts expect. */
typedef struct ctx_keys {
    char meta[KEY_LEN], messages[KEY_LEN], state[KEY_LEN], idem[KEY_LEN],
        lock[KEY_LEN];
    const char *all[5];
} ctx_keys;

static void ctx_keys_init(ctx_keys *k, const char *id) {
    key_ctx(k->meta, id, "meta");
    key_ctx(k->messages, id, "messages");
    key_ctx(k->state, id, "state");
    key_ctx(k->idem, id, "idem");
    key_ctx(k->lock, id, "lock");
    k->all[0] = k->meta;
    k->all[1] = k->messages;
    k->all[2] = k->state;
    k->all[3] = k->idem;
    k->all[4] = k->lock;
}

/* Interpret a script's status string; sets s->err on anything but OK. */
static int script_status(store *s, redisReply *r, const char *id) {
    store_impl *im = s->impl;
    if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) {
        if (!strcmp(r->str, "OK")) return CTXD_OK;
        if (!strcmp(r->str, "NOT_FOUND")) s->err = STORE_ERR_NOT_FOUND;
        else if (!strcmp(r->str, "LOCK_LOST")) s->err = STORE_ERR_LOCK_LOST;
        else if (!strcmp(r->str, "CONFLICT")) s->err = STORE_ERR_CONFLICT;
        else if (!strcmp(r->str, "TOO_LARGE")) s->err = STORE_ERR_TOO_LARGE;
        else s->err = STORE_ERR_REDIS;
        snprintf(s->errstr, sizeof(s->errstr), "%s on context %s", r->str, id);
        return CTXD_ERR;
    }
    s->err = STORE_ERR_REDIS;
    snprintf(s->errstr, sizeof(s->errstr), "unexpected reply from Redis at %s",
             im->addr);
    return CTXD_ERR;
}

int store_create(store *s, const store_new_context *nc) {
    ctx_keys k;
    ctx_keys_init(&k, nc->id);
    char now[UTIL_ISO_LEN], ttl[24], n[24];
    util_iso8601(nc->now_ms, now);
    snprintf(ttl, sizeof(ttl), "%" PRId64, nc->ttl_seconds);
    snprintf(n, sizeof(n), "%zu", nc->n_state);
    int nargs = 6 + 2 * (int)nc->n_state;
    const char **args = malloc(sizeof(*args) * (size_t)nargs);
    size_t *lens = malloc(sizeof(*lens) * (size_t)nargs);
    int rc = CTXD_ERR;
    redisReply *r = NULL;
    if (!args || !lens) {
        s->err = STORE_ERR_NOMEM;
        snprintf(s->errstr, sizeof(s->errstr), "out of memory");
        goto cleanup;
    }
    args[0] = nc->id;
    args[1] = now;
    args[2] = nc->system ? nc->system : "";
    args[3] = nc->model ? nc->model : "";
    args[4] = ttl;
    args[5] = n;
    for (int i = 0; i < 6; i++) lens[i] = strlen(args[i]);
    for (size_t i = 0; i < nc->n_state; i++) {
        args[6 + 2 * i] = nc->state_keys[i].data;
        lens[6 + 2 * i] = nc->state_keys[i].len;
        args[7 + 2 * i] = nc->state_values[i].data;
        lens[7 + 2 * i] = nc->state_values[i].len;
    }
    r = eval(s, S_CREATE, 4, k.all, nargs, args, lens);
    if (!r) goto cleanup;
    if (r->type != REDIS_REPLY_INTEGER || r->integer != 1) {
        s->err = STORE_ERR_EXISTS;
        snprintf(s->errstr, sizeof(s->errstr), "context %s already exists", nc->id);
        goto cleanup;
    }
    rc = CTXD_OK;
cleanup:
    if (r) freeReplyObject(r);
    free(args);
    free(lens);
    return rc;
}

int store_create_claim(store *s, const char *key, uint64_t fp,
                       const char *new_id, int ttl_s, int *claimed,
                       char existing_id[UTIL_UUID_LEN + 1], uint64_t *existing_fp) {
    char k[KEY_LEN], val[64], ttl[16];
    key_create(k, key);
    snprintf(val, sizeof(val), "%016" PRIx64 " %s", fp, new_id);
    snprintf(ttl, sizeof(ttl), "%d", ttl_s);
    const char *set[6] = {"SET", k, val, "NX", "EX", ttl};
    redisReply *r = command(s, 6, set, NULL);
    if (!r) return CTXD_ERR;
    *claimed = r->type == REDIS_REPLY_STATUS;
    freeReplyObject(r);
    if (*claimed) return CTXD_OK;

    const char *get[2] = {"GET", k};
    if (!(r = read_command(s, 2, get))) return CTXD_ERR;
    int ok = r->type == REDIS_REPLY_STRING && r->len == 16 + 1 + UTIL_UUID_LEN;
    if (ok) {
        *existing_fp = strtoull(r->str, NULL, 16);
        memcpy(existing_id, r->str + 17, UTIL_UUID_LEN);
        existing_id[UTIL_UUID_LEN] = '\0';
    }
    freeReplyObject(r);
    if (!ok) {
        /* Expired between SET and GET: treat as ours next time. */
        s->err = STORE_ERR_CONFLICT;
        snprintf(s->errstr, sizeof(s->errstr), "idempotency record changed, retry");
        return CTXD_ERR;
    }
    return CTXD_OK;
}

int store_create_unclaim(store *s, const char *key) {
    char k[KEY_LEN];
    key_create(k, key);
    const char *argv[2] = {"DEL", k};
    redisReply *r = command(s, 2, argv, NULL);
    if (!r) return CTXD_ERR;
    freeReplyObject(r);
    return CTXD_OK;
}

static int blob_copy(store_blob *b, const redisReply *r) {
    b->data = malloc(r->len + 1);
    if (!b->data) return CTXD_ERR;
    memcpy(b->data, r->str, r->len);
    b->data[r->len] = '\0';
    b->len = r->len;
    return CTXD_OK;
}

static void blobs_free(store_blob *b, size_t n) {
    if (!b) return;
    for (size_t i = 0; i < n; i++) free(b[i].data);
    free(b);
}

void store_context_free(store_context *c) {
    if (!c) return;
    free(c->system);
    free(c->model);
    blobs_free(c->messages, c->n_messages);
    blobs_free(c->state_keys, c->n_state);
    blobs_free(c->state_values, c->n_state);
    memset(c, 0, sizeof(*c));
}

static int fill_meta(store_context *out, const redisReply *meta) {
    for (size_t i = 0; i + 1 < meta->elements; i += 2) {
        const char *f = meta->element[i]->str, *v = meta->element[i + 1]->str;
        if (!f || !v) continue;
        if (!strcmp(f, "created_at"))
            snprintf(out->created_at, sizeof(out->created_at), "%s", v);
        else if (!strcmp(f, "last_updated"))
            snprintf(out->last_updated, sizeof(out->last_updated), "%s", v);
        else if (!strcmp(f, "system") && !(out->system = strdup(v)))
            return CTXD_ERR;
        else if (!strcmp(f, "model") && !(out->model = strdup(v)))
            return CTXD_ERR;
        else if (!strcmp(f, "next_seq")) out->next_seq = strtoll(v, NULL, 10);
        else if (!strcmp(f, "first_seq")) out->first_seq = strtoll(v, NULL, 10);
        else if (!strcmp(f, "ttl_seconds")) out->ttl_seconds = strtoll(v, NULL, 10);
    }
    if (!out->system && !(out->system = strdup(""))) return CTXD_ERR;
    if (!out->model && !(out->model = strdup(""))) return CTXD_ERR;
    return CTXD_OK;
}

static int fill_context(store_context *out, const redisReply *r) {
    const redisReply *meta = r->element[0], *msgs = r->element[1],
                     *state = r->element[2];
    if (fill_meta(out, meta)) return CTXD_ERR;
    out->total_messages = r->element[3]->integer;
    if (msgs->elements) {
        out->messages = calloc(msgs->elements, sizeof(store_blob));
        if (!out->messages) return CTXD_ERR;
        for (size_t i = 0; i < msgs->elements; i++, out->n_messages++)
            if (blob_copy(&out->messages[i], msgs->element[i])) return CTXD_ERR;
    }
    size_t ns = state->elements / 2;
    if (ns) {
        out->state_keys = calloc(ns, sizeof(store_blob));
        out->state_values = calloc(ns, sizeof(store_blob));
        if (!out->state_keys || !out->state_values) return CTXD_ERR;
        for (size_t i = 0; i < ns; i++) {
            out->n_state++;
            if (blob_copy(&out->state_keys[i], state->element[2 * i]) ||
                blob_copy(&out->state_values[i], state->element[2 * i + 1]))
                return CTXD_ERR;
        }
    }
    return CTXD_OK;
}

int store_read(store *s, const char *id, int what, long limit, int64_t before,
               store_context *out) {
    memset(out, 0, sizeof(*out));
    snprintf(out->id, sizeof(out->id), "%s", id);
    ctx_keys k;
    ctx_keys_init(&k, id);
    char w[8], l[24], b[24];
    snprintf(w, sizeof(w), "%d", what);
    snprintf(l, sizeof(l), "%ld", limit);
    snprintf(b, sizeof(b), "%" PRId64, before);
    const char *args[3] = {w, l, b};
    redisReply *r = read_eval(s, S_READ, 3, k.all, 3, args);
    if (!r) return CTXD_ERR;
    int rc = CTXD_ERR;
    if (r->type == REDIS_REPLY_NIL) {
        s->err = STORE_ERR_NOT_FOUND;
        snprintf(s->errstr, sizeof(s->errstr), "context %s not found", id);
    } else if (r->type != REDIS_REPLY_ARRAY || r->elements != 4) {
        s->err = STORE_ERR_REDIS;
        snprintf(s->errstr, sizeof(s->errstr), "unexpected reply reading %s", id);
    } else if (fill_context(out, r)) {
        s->err = STORE_ERR_NOMEM;
        snprintf(s->errstr, sizeof(s->errstr), "out of memory");
    } else {
        rc = CTXD_OK;
    }
    freeReplyObject(r);
    if (rc) store_context_free(out);
    return rc;
}

int store_delete(store *s, const char *id, int *deleted) {
    ctx_keys k;
    ctx_keys_init(&k, id);
    redisReply *r = eval(s, S_DELETE, 5, k.all, 0, NULL, NULL);
    if (!r) return CTXD_ERR;
    *deleted = r->type == REDIS_REPLY_INTEGER && r->integer == 1;
    freeReplyObject(r);
    return CTXD_OK;
}

int store_lock_acquire(store *s, const char *id, const char *token, int ttl_ms) {
    char k[KEY_LEN], px[16];
    key_ctx(k, id, "lock");
    snprintf(px, sizeof(px), "%d", ttl_ms);
    const char *argv[6] = {"SET", k, token, "NX", "PX", px};
    redisReply *r = command(s, 6, argv, NULL);
    if (!r) return CTXD_ERR;
    int got = r->type == REDIS_REPLY_STATUS;
    freeReplyObject(r);
    if (!got) {
        s->err = STORE_ERR_BUSY;
        snprintf(s->errstr, sizeof(s->errstr), "context %s is busy", id);
        return CTXD_ERR;
    }
    return CTXD_OK;
}

int store_lock_renew(store *s, const char *id, const char *token, int ttl_ms) {
    char k[KEY_LEN], px[16];
    key_ctx(k, id, "lock");
    snprintf(px, sizeof(px), "%d", ttl_ms);
    const char *keys[1] = {k};
    const char *args[2] = {token, px};
    redisReply *r = eval(s, S_RENEW, 1, keys, 2, args, NULL);
    if (!r) return CTXD_ERR;
    int ok = r->type == REDIS_REPLY_INTEGER && r->integer == 1;
    freeReplyObject(r);
    if (!ok) {
        s->err = STORE_ERR_LOCK_LOST;
        snprintf(s->errstr, sizeof(s->errstr), "lock on context %s was lost", id);
        return CTXD_ERR;
    }
    return CTXD_OK;
}

int store_lock_release(store *s, const char *id, const char *token) {
    char k[KEY_LEN];
    key_ctx(k, id, "lock");
    const char *keys[1] = {k};
    const char *args[1] = {token};
    redisReply *r = eval(s, S_RELEASE, 1, keys, 1, args, NULL);
    if (!r) return CTXD_ERR;
    freeReplyObject(r);
    return CTXD_OK;
}

int store_idem_get(store *s, const char *id, const char *key, char **record) {
    char k[KEY_LEN];
    key_ctx(k, id, "idem");
    *record = NULL;
    const char *argv[3] = {"HGET", k, key};
    redisReply *r = read_command(s, 3, argv);
    if (!r) return CTXD_ERR;
    if (r->type == REDIS_REPLY_STRING) {
        /* "<expires_ms> <rest>": expired records count as absent. */
        long long exp = strtoll(r->str, NULL, 10);
        if (exp >= util_now_ms() && !(*record = strdup(r->str))) {
            freeReplyObject(r);
            s->err = STORE_ERR_NOMEM;
            snprintf(s->errstr, sizeof(s->errstr), "out of memory");
            return CTXD_ERR;
        }
    }
    freeReplyObject(r);
    return CTXD_OK;
}

int store_append(store *s, const store_append_req *req) {
    ctx_keys k;
    ctx_keys_init(&k, req->id);
    char seq[24], now_iso[UTIL_ISO_LEN], now_ms[24], ttl[16], max[24], n[24];
    snprintf(seq, sizeof(seq), "%" PRId64, req->expected_next_seq);
    util_iso8601(req->now_ms, now_iso);
    snprintf(now_ms, sizeof(now_ms), "%" PRId64, req->now_ms);
    snprintf(ttl, sizeof(ttl), "%d", req->idem_ttl_s);
    snprintf(max, sizeof(max), "%ld", req->max_messages);
    snprintf(n, sizeof(n), "%zu", req->n_messages);
    int nargs = 9 + (int)req->n_messages;
    const char **args = malloc(sizeof(*args) * (size_t)nargs);
    size_t *lens = malloc(sizeof(*lens) * (size_t)nargs);
    int rc = CTXD_ERR;
    redisReply *r = NULL;
    if (!args || !lens) {
        s->err = STORE_ERR_NOMEM;
        snprintf(s->errstr, sizeof(s->errstr), "out of memory");
        goto cleanup;
    }
    args[0] = req->token;
    args[1] = seq;
    args[2] = now_iso;
    args[3] = now_ms;
    args[4] = req->idem_key ? req->idem_key : "";
    args[5] = req->idem_key ? req->idem_record : "";
    args[6] = ttl;
    args[7] = max;
    args[8] = n;
    for (int i = 0; i < 9; i++) lens[i] = strlen(args[i]);
    for (size_t i = 0; i < req->n_messages; i++) {
        args[9 + i] = req->messages[i].data;
        lens[9 + i] = req->messages[i].len;
    }
    r = eval(s, S_APPEND, 5, k.all, nargs, args, lens);
    if (!r) goto cleanup;
    rc = script_status(s, r, req->id);
cleanup:
    if (r) freeReplyObject(r);
    free(args);
    free(lens);
    return rc;
}

/* Shared body of state PUT and PATCH. ops: NULL for PUT (pairs), else one of
 * 's'/'d' per key for PATCH (triples). */
static int state_write(store *s, const char *id, const store_blob *keys,
                       const store_blob *values, size_t n, size_t max_bytes,
                       int64_t now_ms, int patch) {
    ctx_keys k;
    ctx_keys_init(&k, id);
    char now_iso[UTIL_ISO_LEN], max[24], cnt[24];
    util_iso8601(now_ms, now_iso);
    snprintf(max, sizeof(max), "%zu", max_bytes);
    snprintf(cnt, sizeof(cnt), "%zu", n);
    int fixed = patch ? 3 : 2, per = patch ? 3 : 2;
    int nargs = fixed + per * (int)n;
    const char **args = malloc(sizeof(*args) * (size_t)nargs);
    size_t *lens = malloc(sizeof(*lens) * (size_t)nargs);
    int rc = CTXD_ERR;
    redisReply *r = NULL;
    if (!args || !lens) {
        s->err = STORE_ERR_NOMEM;
        snprintf(s->errstr, sizeof(s->errstr), "out of memory");
        goto cleanup;
    }
    args[0] = now_iso;
    if (patch) {
        args[1] = max;
        args[2] = cnt;
    } else {
        args[1] = cnt;
    }
    for (int i = 0; i < fixed; i++) lens[i] = strlen(args[i]);
    for (size_t i = 0; i < n; i++) {
        int at = fixed + per * (int)i;
        if (patch) {
            args[at] = values[i].data ? "s" : "d";
            lens[at++] = 1;
        }
        args[at] = keys[i].data;
        lens[at++] = keys[i].len;
        args[at] = values[i].data ? values[i].data : "";
        lens[at] = values[i].data ? values[i].len : 0;
    }
    r = eval(s, patch ? S_STATE_PATCH : S_STATE_PUT, 3, k.all, nargs, args, lens);
    if (!r) goto cleanup;
    rc = script_status(s, r, id);
cleanup:
    if (r) freeReplyObject(r);
    free(args);
    free(lens);
    return rc;
}

int store_state_put(store *s, const char *id, const store_blob *keys,
                    const store_blob *values, size_t n, size_t max_bytes,
                    int64_t now_ms) {
    size_t size = 0;
    for (size_t i = 0; i < n; i++) size += keys[i].len + values[i].len;
    if (size > max_bytes) {
        s->err = STORE_ERR_TOO_LARGE;
        snprintf(s->errstr, sizeof(s->errstr), "state of %zu bytes exceeds %zu",
                 size, max_bytes);
        return CTXD_ERR;
    }
    return state_write(s, id, keys, values, n, max_bytes, now_ms, 0);
}

int store_state_patch(store *s, const char *id, const store_blob *keys,
                      const store_blob *values, size_t n, size_t max_bytes,
                      int64_t now_ms) {
    return state_write(s, id, keys, values, n, max_bytes, now_ms, 1);
}
