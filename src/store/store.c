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
#include "ctxd/metrics.h"

#define KEY_LEN 320
#define IDLE_PING_MS 1000
#define ADDR(s) (((store_impl *)(s)->impl)->addr)

/* ---- Key names: the README's "Redis layout" section mirrors these. ---- */

static void key_ctx(char *out, const char *id, const char *part) {
    snprintf(out, KEY_LEN, "ctxd:{%s}:%s", id, part);
}

/* Every context by last activity (sorted set, score = last write in ms). */
#define KEY_INDEX "ctxd:index"

static void key_create(char *out, const char *idem_key) {
    snprintf(out, KEY_LEN, "ctxd:create:{%s}", idem_key);
}

/* clang-format off: the scripts are laid out as Lua, a line each. */
/* ---- Lua scripts. Each keeps one context's keys consistent. ----
 *
 * Every context script gets the same KEYS: meta messages state idem lock
 * index, so the helpers below can rely on their positions. */

/* Refresh a context's expiry from its meta ttl_seconds and move it to the
 * front of the activity index. */
#define LUA_TOUCH                                                                                  \
    "local function touch(now_ms)\n"                                                               \
    "  local ttl = tonumber(redis.call('HGET', KEYS[1], 'ttl_seconds') or '0')\n"                  \
    "  if ttl and ttl > 0 then\n"                                                                  \
    "    for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ttl) end\n"                                 \
    "  end\n"                                                                                      \
    "  redis.call('ZADD', KEYS[6], now_ms, redis.call('HGET', KEYS[1], 'id'))\n"                   \
    "end\n"

/* ARGV id now_iso now_ms system model ttl strategy max_context_tokens
 * max_messages n k1 v1 ... */
static const char lua_create[] = LUA_TOUCH
    "if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end\n"
    "redis.call('HSET', KEYS[1], 'id', ARGV[1], 'created_at', ARGV[2],\n"
    "  'last_updated', ARGV[2], 'system', ARGV[4], 'model', ARGV[5],\n"
    "  'ttl_seconds', ARGV[6], 'strategy', ARGV[7], 'max_context_tokens', ARGV[8],\n"
    "  'max_messages', ARGV[9], 'next_seq', 1, 'first_seq', 1, 'summary', '',\n"
    "  'summary_upto', 0, 'summary_tokens', 0, 'version', 1)\n"
    "local n = tonumber(ARGV[10])\n"
    "for i = 0, n - 1 do redis.call('HSET', KEYS[3], ARGV[11 + 2 * i], ARGV[12 + 2 * i]) end\n"
    "touch(ARGV[3])\n"
    "return 1\n";

/* ARGV what limit before. Returns nil, or {meta-pairs, messages,
 * state-pairs, llen}. */
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

/* Take the turn lock and read what the turn sends, in one round trip.
 * KEYS meta messages lock idem; ARGV fixed fold_max token ttl_ms idem_key.
 * The lock is taken for token unless another owner holds it ('BUSY'); token
 * may hold it already (a second read in the same turn). With strategy 'all'
 * every message; otherwise the newest whole units (a user message and the
 * replies after it) whose "tokens" fit max_context_tokens minus ARGV[1] (the
 * new message), the system prompt (bytes / 4) and the summary. Reads only
 * the tail it needs. With 'summarize' also returns up to ARGV[2] of the
 * oldest messages that left the window but are not yet in the summary.
 * Returns nil, 'BUSY' or {meta-pairs, window, fold, llen, window_start_seq,
 * idempotency record or nil}. */
static const char lua_turn_read[] =
    "local flat = redis.call('HGETALL', KEYS[1])\n"
    "if #flat == 0 then return false end\n"
    "local holder = redis.call('GET', KEYS[3])\n"
    "if holder ~= ARGV[3] then\n"
    "  if holder then return 'BUSY' end\n"
    "  redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[4])\n"
    "end\n"
    "local idem = false\n"
    "if ARGV[5] ~= '' then idem = redis.call('HGET', KEYS[4], ARGV[5]) end\n"
    "local m = {}\n"
    "for i = 1, #flat, 2 do m[flat[i]] = flat[i + 1] end\n"
    "local len = redis.call('LLEN', KEYS[2])\n"
    "local first = tonumber(m.first_seq or '1')\n"
    "local strategy = m.strategy or 'all'\n"
    "if strategy == 'all' or strategy == '' then\n"
    "  return {flat, redis.call('LRANGE', KEYS[2], 0, -1), {}, len, first, idem}\n"
    "end\n"
    "local budget = tonumber(m.max_context_tokens or '0') - tonumber(ARGV[1])\n"
    "  - math.floor(#(m.system or '') / 4)\n"
    "if strategy == 'summarize' then budget = budget - tonumber(m.summary_tokens or '0') end\n"
    "local acc, unit, unit_tokens, total = {}, {}, 0, 0\n"
    "local start, i, full = len, len - 1, false\n"
    "while i >= 0 and not full do\n"
    "  local lo = math.max(0, i - 63)\n"
    "  local chunk = redis.call('LRANGE', KEYS[2], lo, i)\n"
    "  for j = #chunk, 1, -1 do\n"
    "    local raw = chunk[j]\n"
    "    local ok, msg = pcall(cjson.decode, raw)\n"
    "    local t = (ok and tonumber(msg.tokens)) or math.floor(#raw / 4) + 4\n"
    "    unit[#unit + 1] = raw\n"
    "    unit_tokens = unit_tokens + t\n"
    "    local idx = lo + j - 1\n"
    "    if (ok and msg.role == 'user') or idx == 0 then\n"
    "      if total + unit_tokens > budget then full = true break end\n"
    "      total = total + unit_tokens\n"
    "      for k = 1, #unit do acc[#acc + 1] = unit[k] end\n"
    "      unit, unit_tokens, start = {}, 0, idx\n"
    "    end\n"
    "  end\n"
    "  i = lo - 1\n"
    "end\n"
    "local window = {}\n"
    "for k = #acc, 1, -1 do window[#window + 1] = acc[k] end\n"
    "local fold = {}\n"
    "if strategy == 'summarize' then\n"
    "  local from = math.max(0, tonumber(m.summary_upto or '0') + 1 - first)\n"
    "  local to = math.min(start - 1, from + tonumber(ARGV[2]) - 1)\n"
    "  if to >= from then fold = redis.call('LRANGE', KEYS[2], from, to) end\n"
    "end\n"
    "return {flat, window, fold, len, first + start, idem}\n";

/* ARGV token expected_seq now_iso now_ms idem_key idem_record idem_ttl
 * hard_cap n prompt_sig prompt_tokens msg1 ... Appends, trims to the
 * context's max_messages (whole units), releases the lock. */
static const char lua_append[] =
    LUA_TOUCH "local function unlock()\n"
              "  if redis.call('GET', KEYS[5]) == ARGV[1] then redis.call('DEL', KEYS[5]) end\n"
              "end\n"
              "if redis.call('EXISTS', KEYS[1]) == 0 then unlock() return 'NOT_FOUND' end\n"
              "if redis.call('GET', KEYS[5]) ~= ARGV[1] then return 'LOCK_LOST' end\n"
              "local seq = tonumber(redis.call('HGET', KEYS[1], 'next_seq'))\n"
              "if seq ~= tonumber(ARGV[2]) then unlock() return 'CONFLICT' end\n"
              "local n = tonumber(ARGV[9])\n"
              "local keep = tonumber(redis.call('HGET', KEYS[1], 'max_messages') or '0')\n"
              "local cap = tonumber(ARGV[8])\n"
              "if keep > 0 then cap = math.max(cap, keep + n) end\n"
              "if cap > 0 and keep == 0 and redis.call('LLEN', KEYS[2]) + n > cap then\n"
              "  unlock() return 'TOO_LARGE'\n"
              "end\n"
              "for i = 1, n do redis.call('RPUSH', KEYS[2], ARGV[11 + i]) end\n"
              "redis.call('HSET', KEYS[1], 'next_seq', seq + n, 'last_updated', ARGV[3])\n"
              "if ARGV[10] ~= '' then\n"
              "  redis.call('HSET', KEYS[1], 'prompt_sig', ARGV[10], 'prompt_tokens', ARGV[11])\n"
              "end\n"
              "if keep > 0 and redis.call('LLEN', KEYS[2]) > keep then\n"
              "  local drop = redis.call('LLEN', KEYS[2]) - keep\n"
              "  redis.call('LTRIM', KEYS[2], drop, -1)\n"
              "  while true do\n"
              "    local head = redis.call('LINDEX', KEYS[2], 0)\n"
              "    if not head then break end\n"
              "    local ok, msg = pcall(cjson.decode, head)\n"
              "    if ok and msg.role == 'user' then break end\n"
              "    redis.call('LPOP', KEYS[2])\n"
              "  end\n"
              "  local head = redis.call('LINDEX', KEYS[2], 0)\n"
              "  local first = seq + n\n"
              "  if head then first = cjson.decode(head).seq end\n"
              "  redis.call('HSET', KEYS[1], 'first_seq', first)\n"
              "end\n"
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
              "touch(ARGV[4])\n"
              "return 'OK'\n";

/* Returns 1 if the context existed. */
static const char lua_delete[] = "local e = redis.call('EXISTS', KEYS[1])\n"
                                 "redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])\n"
                                 "redis.call('ZREM', KEYS[6], string.match(KEYS[1], '{(.*)}'))\n"
                                 "return e\n";

/* KEYS lock; ARGV token ttl_ms. */
static const char lua_renew[] = "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
                                "  return redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
                                "end\n"
                                "return 0\n";

/* KEYS lock; ARGV token. */
static const char lua_release[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end\n"
    "return 0\n";

/* ARGV now_iso now_ms n k1 v1 ... */
static const char lua_state_put[] = LUA_TOUCH
    "if redis.call('EXISTS', KEYS[1]) == 0 then return 'NOT_FOUND' end\n"
    "redis.call('DEL', KEYS[3])\n"
    "local n = tonumber(ARGV[3])\n"
    "for i = 0, n - 1 do redis.call('HSET', KEYS[3], ARGV[4 + 2 * i], ARGV[5 + 2 * i]) end\n"
    "redis.call('HSET', KEYS[1], 'last_updated', ARGV[1])\n"
    "touch(ARGV[2])\n"
    "return 'OK'\n";

/* ARGV now_iso now_ms max_bytes n (op key value)... op 's' sets, 'd'
 * deletes. The size check runs on the merged result. */
static const char lua_state_patch[] =
    LUA_TOUCH "if redis.call('EXISTS', KEYS[1]) == 0 then return 'NOT_FOUND' end\n"
              "local cur = redis.call('HGETALL', KEYS[3])\n"
              "local m = {}\n"
              "for i = 1, #cur, 2 do m[cur[i]] = cur[i + 1] end\n"
              "local n = tonumber(ARGV[4])\n"
              "for i = 0, n - 1 do\n"
              "  if ARGV[5 + 3 * i] == 'd' then m[ARGV[6 + 3 * i]] = nil\n"
              "  else m[ARGV[6 + 3 * i]] = ARGV[7 + 3 * i] end\n"
              "end\n"
              "local size = 0\n"
              "for k, v in pairs(m) do size = size + #k + #v end\n"
              "if size > tonumber(ARGV[3]) then return 'TOO_LARGE' end\n"
              "for i = 0, n - 1 do\n"
              "  if ARGV[5 + 3 * i] == 'd' then redis.call('HDEL', KEYS[3], ARGV[6 + 3 * i])\n"
              "  else redis.call('HSET', KEYS[3], ARGV[6 + 3 * i], ARGV[7 + 3 * i]) end\n"
              "end\n"
              "redis.call('HSET', KEYS[1], 'last_updated', ARGV[1])\n"
              "touch(ARGV[2])\n"
              "return 'OK'\n";

/* ARGV now_iso now_ms n field1 value1 ...: change settings. ttl_seconds 0
 * removes the expiry. */
static const char lua_settings[] =
    LUA_TOUCH "if redis.call('EXISTS', KEYS[1]) == 0 then return 'NOT_FOUND' end\n"
              "local n = tonumber(ARGV[3])\n"
              "for i = 0, n - 1 do\n"
              "  local f, v = ARGV[4 + 2 * i], ARGV[5 + 2 * i]\n"
              "  redis.call('HSET', KEYS[1], f, v)\n"
              "  if f == 'ttl_seconds' and tonumber(v) == 0 then\n"
              "    for k = 1, 3 do redis.call('PERSIST', KEYS[k]) end\n"
              "  end\n"
              "end\n"
              "redis.call('HSET', KEYS[1], 'last_updated', ARGV[1])\n"
              "touch(ARGV[2])\n"
              "return 'OK'\n";

/* ARGV expected_upto new_upto text tokens now_iso: store a folded summary
 * unless someone else moved it meanwhile. */
static const char lua_summary[] =
    "if redis.call('EXISTS', KEYS[1]) == 0 then return 'NOT_FOUND' end\n"
    "if redis.call('HGET', KEYS[1], 'summary_upto') ~= ARGV[1] then return 'CONFLICT' end\n"
    "redis.call('HSET', KEYS[1], 'summary_upto', ARGV[2], 'summary', ARGV[3],\n"
    "  'summary_tokens', ARGV[4], 'summary_updated_at', ARGV[5])\n"
    "return 'OK'\n";

/* KEYS index; ARGV limit cursor_score cursor_id. Contexts by last activity,
 * newest first, after the cursor. Members whose context expired are
 * dropped from the index. The meta and messages keys are derived here, so
 * listing needs all contexts on one Redis (see README). */
static const char lua_list[] =
    "local limit, cs, cid = tonumber(ARGV[1]), ARGV[2], ARGV[3]\n"
    "local max = '+inf'\n"
    "if cs ~= '' then max = cs end\n"
    "local out, gone, offset = {}, {}, 0\n"
    "while #out < limit do\n"
    "  local batch = redis.call('ZREVRANGEBYSCORE', KEYS[1], max, '-inf', 'WITHSCORES', 'LIMIT', "
    "offset, 100)\n"
    "  if #batch == 0 then break end\n"
    "  for i = 1, #batch, 2 do\n"
    "    local id, score = batch[i], batch[i + 1]\n"
    "    if not (cs ~= '' and tonumber(score) == tonumber(cs) and id >= cid) then\n"
    "      local meta = 'ctxd:{' .. id .. '}:meta'\n"
    "      if redis.call('EXISTS', meta) == 1 then\n"
    "        local h = redis.call('HMGET', meta, 'created_at', 'last_updated')\n"
    "        local msgs = 'ctxd:{' .. id .. '}:messages'\n"
    "        local last = redis.call('LINDEX', msgs, -1) or ''\n"
    "        out[#out + 1] = {id, score, h[1] or '', h[2] or '', redis.call('LLEN', msgs), last}\n"
    "        if #out >= limit then break end\n"
    "      else\n"
    "        gone[#gone + 1] = id\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  offset = offset + 100\n"
    "end\n"
    "for i = 1, #gone do redis.call('ZREM', KEYS[1], gone[i]) end\n"
    "return out\n";

/* clang-format on */

enum {
    S_CREATE,
    S_READ,
    S_TURN_READ,
    S_APPEND,
    S_DELETE,
    S_RENEW,
    S_RELEASE,
    S_STATE_PUT,
    S_STATE_PATCH,
    S_SETTINGS,
    S_SUMMARY,
    S_LIST,
    S_COUNT
};

static const char *const scripts[S_COUNT] = {
    lua_create,  lua_read,      lua_turn_read,   lua_append,   lua_delete,  lua_renew,
    lua_release, lua_state_put, lua_state_patch, lua_settings, lua_summary, lua_list};

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
    metrics_redis_error();
    drop_connection(im);
    store_invalidate_all();
    set_up_state(im, 0, why);
}

/* Run one command on an established connection; error replies are returned
 * as replies. NULL on I/O failure (connection dropped). */
static redisReply *raw_command(store *s, int argc, const char **argv, const size_t *lens) {
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
            fail(s, STORE_ERR_REDIS, "Redis at %s refused SCRIPT LOAD: %s", ADDR(s),
                 r->str ? r->str : "unexpected reply");
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
                          : redisConnectWithTimeout(im->cfg->redis_host, im->cfg->redis_port, tv);
    if (!c || c->err) {
        char why[160];
        snprintf(why, sizeof(why), "%s", c ? c->errstr : "out of memory");
        if (c) redisFree(c);
        fail(s, STORE_ERR_IO, "Redis unavailable at %s: %s", ADDR(s), why);
        metrics_redis_error();
        store_invalidate_all(); /* connections made before are suspect */
        set_up_state(im, 0, why);
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

/* Run a command: connect if needed; Redis error replies become
 * STORE_ERR_REDIS. Returns the reply (caller frees) or NULL. */
static redisReply *command(store *s, int argc, const char **argv, const size_t *lens) {
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
static redisReply *eval(store *s, int script, int nkeys, const char **keys, int nargs,
                        const char **args, const size_t *arglens) {
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

static redisReply *read_eval(store *s, int script, int nkeys, const char **keys, int nargs,
                             const char **args) {
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

/* The keys of a context, in the order the scripts expect. */
typedef struct ctx_keys {
    char meta[KEY_LEN], messages[KEY_LEN], state[KEY_LEN], idem[KEY_LEN], lock[KEY_LEN];
    const char *all[6];
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
    k->all[5] = KEY_INDEX;
}

/* Script arguments: borrowed strings and binary blobs, plus a few numbers
 * formatted into the builder itself. */
#define ARGS_NUMS 16
typedef struct args {
    const char **v;
    size_t *len;
    int n, cap;
    char nums[ARGS_NUMS][24];
    int n_nums;
} args;

static int args_init(store *s, args *a, size_t cap) {
    memset(a, 0, sizeof(*a));
    a->v = malloc(sizeof(*a->v) * (cap ? cap : 1));
    a->len = malloc(sizeof(*a->len) * (cap ? cap : 1));
    a->cap = (int)cap;
    if (a->v && a->len) return CTXD_OK;
    free(a->v);
    free(a->len);
    s->err = STORE_ERR_NOMEM;
    snprintf(s->errstr, sizeof(s->errstr), "out of memory");
    return CTXD_ERR;
}

static void args_free(args *a) {
    free(a->v);
    free(a->len);
}

static void add_bin(args *a, const char *data, size_t len) {
    if (a->n == a->cap) return; /* sized by the caller; never reached */
    a->v[a->n] = data ? data : "";
    a->len[a->n++] = data ? len : 0;
}

static void add_str(args *a, const char *str) { add_bin(a, str, str ? strlen(str) : 0); }

static void add_int(args *a, int64_t v) {
    if (a->n_nums == ARGS_NUMS) return;
    char *b = a->nums[a->n_nums++];
    snprintf(b, 24, "%" PRId64, v);
    add_str(a, b);
}

static redisReply *run_script(store *s, int script, int nkeys, const char **keys, args *a) {
    return eval(s, script, nkeys, keys, a->n, a->v, a->len);
}

/* Interpret a script's status string; sets s->err on anything but OK. */
static int script_status(store *s, redisReply *r, const char *id) {
    if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) {
        if (!strcmp(r->str, "OK")) return CTXD_OK;
        if (!strcmp(r->str, "NOT_FOUND"))
            s->err = STORE_ERR_NOT_FOUND;
        else if (!strcmp(r->str, "LOCK_LOST"))
            s->err = STORE_ERR_LOCK_LOST;
        else if (!strcmp(r->str, "CONFLICT"))
            s->err = STORE_ERR_CONFLICT;
        else if (!strcmp(r->str, "TOO_LARGE"))
            s->err = STORE_ERR_TOO_LARGE;
        else
            s->err = STORE_ERR_REDIS;
        snprintf(s->errstr, sizeof(s->errstr), "%s on context %s", r->str, id);
        return CTXD_ERR;
    }
    fail(s, STORE_ERR_REDIS, "unexpected reply from Redis at %s%s", ADDR(s), "");
    return CTXD_ERR;
}

/* Run a context write script and read its status reply. */
static int write_script(store *s, int script, const char *id, args *a) {
    ctx_keys k;
    ctx_keys_init(&k, id);
    redisReply *r = run_script(s, script, 6, k.all, a);
    int rc = r ? script_status(s, r, id) : CTXD_ERR;
    if (r) freeReplyObject(r);
    return rc;
}

int store_create(store *s, const store_new_context *nc) {
    ctx_keys k;
    args a;
    char now[UTIL_ISO_LEN];
    int rc = CTXD_ERR;
    if (args_init(s, &a, 10 + 2 * nc->n_state)) return CTXD_ERR;
    ctx_keys_init(&k, nc->id);
    util_iso8601(nc->now_ms, now);
    add_str(&a, nc->id);
    add_str(&a, now);
    add_int(&a, nc->now_ms);
    add_str(&a, nc->system);
    add_str(&a, nc->model);
    add_int(&a, nc->ttl_seconds);
    add_str(&a, nc->strategy ? nc->strategy : "all");
    add_int(&a, nc->max_context_tokens);
    add_int(&a, nc->max_messages);
    add_int(&a, (int64_t)nc->n_state);
    for (size_t i = 0; i < nc->n_state; i++) {
        add_bin(&a, nc->state_keys[i].data, nc->state_keys[i].len);
        add_bin(&a, nc->state_values[i].data, nc->state_values[i].len);
    }
    redisReply *r = run_script(s, S_CREATE, 6, k.all, &a);
    if (r && (r->type != REDIS_REPLY_INTEGER || r->integer != 1)) {
        s->err = STORE_ERR_EXISTS;
        snprintf(s->errstr, sizeof(s->errstr), "context %s already exists", nc->id);
    } else if (r) {
        rc = CTXD_OK;
    }
    if (r) freeReplyObject(r);
    args_free(&a);
    return rc;
}

int store_create_claim(store *s, const char *key, uint64_t fp, const char *new_id, int ttl_s,
                       int *claimed, char existing_id[UTIL_UUID_LEN + 1], uint64_t *existing_fp) {
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
        /* Expired between SET and GET. */
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
    memcpy(b->data, r->str ? r->str : "", r->len);
    b->data[r->len] = '\0';
    b->len = r->len;
    return CTXD_OK;
}

static void blobs_free(store_blob *b, size_t n) {
    if (!b) return;
    for (size_t i = 0; i < n; i++) free(b[i].data);
    free(b);
}

/* Copy an array reply of strings into a new blob array. */
static int blobs_copy(const redisReply *arr, store_blob **out, size_t *n) {
    *out = NULL;
    *n = 0;
    if (!arr->elements) return CTXD_OK;
    *out = calloc(arr->elements, sizeof(store_blob));
    if (!*out) return CTXD_ERR;
    for (size_t i = 0; i < arr->elements; i++, (*n)++)
        if (blob_copy(&(*out)[i], arr->element[i])) return CTXD_ERR;
    return CTXD_OK;
}

void store_context_free(store_context *c) {
    if (!c) return;
    free(c->system);
    free(c->model);
    free(c->summary);
    free(c->idem_record);
    blobs_free(c->messages, c->n_messages);
    blobs_free(c->fold, c->n_fold);
    blobs_free(c->state_keys, c->n_state);
    blobs_free(c->state_values, c->n_state);
    memset(c, 0, sizeof(*c));
}

static int dup_field(char **dst, const char *v) {
    free(*dst);
    *dst = strdup(v);
    return *dst ? CTXD_OK : CTXD_ERR;
}

static int fill_meta(store_context *out, const redisReply *meta) {
    snprintf(out->strategy, sizeof(out->strategy), "all");
    for (size_t i = 0; i + 1 < meta->elements; i += 2) {
        const char *f = meta->element[i]->str, *v = meta->element[i + 1]->str;
        if (!f || !v) continue;
        if (!strcmp(f, "created_at"))
            snprintf(out->created_at, sizeof(out->created_at), "%s", v);
        else if (!strcmp(f, "last_updated"))
            snprintf(out->last_updated, sizeof(out->last_updated), "%s", v);
        else if (!strcmp(f, "strategy"))
            snprintf(out->strategy, sizeof(out->strategy), "%s", v);
        else if (!strcmp(f, "prompt_sig"))
            snprintf(out->prompt_sig, sizeof(out->prompt_sig), "%s", v);
        else if (!strcmp(f, "system") && dup_field(&out->system, v))
            return CTXD_ERR;
        else if (!strcmp(f, "model") && dup_field(&out->model, v))
            return CTXD_ERR;
        else if (!strcmp(f, "summary") && dup_field(&out->summary, v))
            return CTXD_ERR;
        else if (!strcmp(f, "next_seq"))
            out->next_seq = strtoll(v, NULL, 10);
        else if (!strcmp(f, "first_seq"))
            out->first_seq = strtoll(v, NULL, 10);
        else if (!strcmp(f, "ttl_seconds"))
            out->ttl_seconds = strtoll(v, NULL, 10);
        else if (!strcmp(f, "max_context_tokens"))
            out->max_context_tokens = strtoll(v, NULL, 10);
        else if (!strcmp(f, "max_messages"))
            out->max_messages = strtoll(v, NULL, 10);
        else if (!strcmp(f, "summary_upto"))
            out->summary_upto = strtoll(v, NULL, 10);
        else if (!strcmp(f, "summary_tokens"))
            out->summary_tokens = strtoll(v, NULL, 10);
        else if (!strcmp(f, "prompt_tokens"))
            out->prompt_tokens = strtoll(v, NULL, 10);
    }
    if (!out->system && dup_field(&out->system, "")) return CTXD_ERR;
    if (!out->model && dup_field(&out->model, "")) return CTXD_ERR;
    if (!out->summary && dup_field(&out->summary, "")) return CTXD_ERR;
    return CTXD_OK;
}

static int fill_state(store_context *out, const redisReply *state) {
    size_t ns = state->elements / 2;
    if (!ns) return CTXD_OK;
    out->state_keys = calloc(ns, sizeof(store_blob));
    out->state_values = calloc(ns, sizeof(store_blob));
    if (!out->state_keys || !out->state_values) return CTXD_ERR;
    for (size_t i = 0; i < ns; i++) {
        out->n_state++;
        if (blob_copy(&out->state_keys[i], state->element[2 * i]) ||
            blob_copy(&out->state_values[i], state->element[2 * i + 1]))
            return CTXD_ERR;
    }
    return CTXD_OK;
}

/* Shared tail of the read functions: check the reply shape, fill out. */
static int read_reply(store *s, const char *id, redisReply *r, size_t elements, store_context *out,
                      int turn) {
    int rc = CTXD_ERR;
    if (!r) return CTXD_ERR;
    if (r->type == REDIS_REPLY_NIL) {
        s->err = STORE_ERR_NOT_FOUND;
        snprintf(s->errstr, sizeof(s->errstr), "context %s not found", id);
    } else if (r->type == REDIS_REPLY_STRING && !strcmp(r->str, "BUSY")) {
        s->err = STORE_ERR_BUSY;
        snprintf(s->errstr, sizeof(s->errstr), "context %s is busy", id);
    } else if (r->type != REDIS_REPLY_ARRAY || r->elements != elements) {
        fail(s, STORE_ERR_REDIS, "unexpected reply from Redis at %s reading %s", ADDR(s), id);
    } else if (fill_meta(out, r->element[0]) ||
               blobs_copy(r->element[1], &out->messages, &out->n_messages) ||
               (turn ? blobs_copy(r->element[2], &out->fold, &out->n_fold)
                     : fill_state(out, r->element[2]))) {
        s->err = STORE_ERR_NOMEM;
        snprintf(s->errstr, sizeof(s->errstr), "out of memory");
    } else {
        out->total_messages = r->element[3]->integer;
        rc = CTXD_OK;
        if (turn) {
            const redisReply *idem = r->element[5];
            out->window_start_seq = r->element[4]->integer;
            if (idem->type == REDIS_REPLY_STRING &&
                strtoll(idem->str, NULL, 10) >= util_now_ms() && /* not expired */
                !(out->idem_record = strdup(idem->str))) {
                s->err = STORE_ERR_NOMEM;
                snprintf(s->errstr, sizeof(s->errstr), "out of memory");
                rc = CTXD_ERR;
            }
        }
    }
    freeReplyObject(r);
    if (rc) store_context_free(out);
    return rc;
}

/* The newest messages, the meta and the state in one MULTI/EXEC, pipelined:
 * cheaper for Redis than the read script when no seq arithmetic is needed.
 * Returns the EXEC reply shaped like the script's {meta, messages, state,
 * llen}, or NULL with s->err. */
static redisReply *read_newest(store *s, const ctx_keys *k, int what, long limit) {
    char from[24];
    snprintf(from, sizeof(from), "%ld", limit > 0 ? -limit : 0);
    const char *range_start = what & STORE_READ_MESSAGES ? from : "1";
    const char *range_end = what & STORE_READ_MESSAGES ? "-1" : "0"; /* 1..0: none */
    const char *cmds[6][4] = {{"MULTI"},
                              {"HGETALL", k->meta},
                              {"LRANGE", k->messages, range_start, range_end},
                              {what & STORE_READ_STATE ? "HGETALL" : "HLEN", k->state},
                              {"LLEN", k->messages},
                              {"EXEC"}};
    static const int argc[6] = {1, 2, 4, 2, 2, 1};
    s->err = STORE_ERR_NONE;
    if (ensure_connected(s)) return NULL;
    store_impl *im = s->impl;
    for (int i = 0; i < 6; i++) redisAppendCommandArgv(im->c, argc[i], cmds[i], NULL);
    redisReply *r = NULL;
    for (int i = 0; i < 6; i++) {
        void *reply = NULL;
        if (redisGetReply(im->c, &reply) != REDIS_OK) {
            if (r) freeReplyObject(r);
            fail_io(s, im->c && im->c->errstr[0] ? im->c->errstr : "connection lost");
            return NULL;
        }
        if (i < 5)
            freeReplyObject(reply);
        else
            r = reply;
    }
    im->last_used_ms = util_mono_ms();
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 4) {
        fail(s, STORE_ERR_REDIS, "unexpected reply from Redis at %s to a read%s", ADDR(s), "");
        freeReplyObject(r);
        return NULL;
    }
    if (r->element[0]->elements == 0) { /* no meta: no such context */
        freeReplyObject(r);
        return NULL; /* s->err stays NONE: the caller says not found */
    }
    return r;
}

int store_read(store *s, const char *id, int what, long limit, int64_t before, store_context *out) {
    ctx_keys k;
    char w[8], l[24], b[24];
    memset(out, 0, sizeof(*out));
    snprintf(out->id, sizeof(out->id), "%s", id);
    ctx_keys_init(&k, id);
    if (before <= 0) {
        redisReply *r = read_newest(s, &k, what, limit);
        if (!r && s->err == STORE_ERR_IO) r = read_newest(s, &k, what, limit);
        if (!r && s->err == STORE_ERR_NONE) {
            s->err = STORE_ERR_NOT_FOUND;
            snprintf(s->errstr, sizeof(s->errstr), "context %s not found", id);
        }
        if (!r) return CTXD_ERR;
        return read_reply(s, id, r, 4, out, 0);
    }
    snprintf(w, sizeof(w), "%d", what);
    snprintf(l, sizeof(l), "%ld", limit);
    snprintf(b, sizeof(b), "%" PRId64, before);
    const char *a[3] = {w, l, b};
    return read_reply(s, id, read_eval(s, S_READ, 3, k.all, 3, a), 4, out, 0);
}

int store_turn_read(store *s, const char *id, const char *token, int lock_ttl_ms,
                    const char *idem_key, int64_t fixed_tokens, long fold_max, store_context *out) {
    ctx_keys k;
    char f[24], m[24], ttl[16];
    memset(out, 0, sizeof(*out));
    snprintf(out->id, sizeof(out->id), "%s", id);
    ctx_keys_init(&k, id);
    snprintf(f, sizeof(f), "%" PRId64, fixed_tokens);
    snprintf(m, sizeof(m), "%ld", fold_max);
    snprintf(ttl, sizeof(ttl), "%d", lock_ttl_ms);
    const char *keys[4] = {k.meta, k.messages, k.lock, k.idem};
    const char *a[5] = {f, m, token, ttl, idem_key ? idem_key : ""};
    /* Not retried on I/O errors: it may have taken the lock. */
    return read_reply(s, id, eval(s, S_TURN_READ, 4, keys, 5, a, NULL), 6, out, 1);
}

int store_delete(store *s, const char *id, int *deleted) {
    ctx_keys k;
    ctx_keys_init(&k, id);
    redisReply *r = eval(s, S_DELETE, 6, k.all, 0, NULL, NULL);
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

/* Renew or release the lock: both act only for its owner. */
static int lock_script(store *s, int script, const char *id, const char *token, int ttl_ms) {
    char k[KEY_LEN], px[16];
    key_ctx(k, id, "lock");
    snprintf(px, sizeof(px), "%d", ttl_ms);
    const char *keys[1] = {k};
    const char *a[2] = {token, px};
    redisReply *r = eval(s, script, 1, keys, script == S_RENEW ? 2 : 1, a, NULL);
    if (!r) return CTXD_ERR;
    int ok = r->type == REDIS_REPLY_INTEGER && r->integer == 1;
    freeReplyObject(r);
    if (!ok && script == S_RENEW) {
        s->err = STORE_ERR_LOCK_LOST;
        snprintf(s->errstr, sizeof(s->errstr), "lock on context %s was lost", id);
        return CTXD_ERR;
    }
    return CTXD_OK;
}

int store_lock_renew(store *s, const char *id, const char *token, int ttl_ms) {
    return lock_script(s, S_RENEW, id, token, ttl_ms);
}

int store_lock_release(store *s, const char *id, const char *token) {
    return lock_script(s, S_RELEASE, id, token, 0);
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
    args a;
    char now_iso[UTIL_ISO_LEN];
    if (args_init(s, &a, 11 + req->n_messages)) return CTXD_ERR;
    util_iso8601(req->now_ms, now_iso);
    add_str(&a, req->token);
    add_int(&a, req->expected_next_seq);
    add_str(&a, now_iso);
    add_int(&a, req->now_ms);
    add_str(&a, req->idem_key);
    add_str(&a, req->idem_key ? req->idem_record : NULL);
    add_int(&a, req->idem_ttl_s);
    add_int(&a, req->max_messages);
    add_int(&a, (int64_t)req->n_messages);
    add_str(&a, req->prompt_sig);
    add_int(&a, req->prompt_tokens);
    for (size_t i = 0; i < req->n_messages; i++)
        add_bin(&a, req->messages[i].data, req->messages[i].len);
    int rc = write_script(s, S_APPEND, req->id, &a);
    args_free(&a);
    return rc;
}

/* Shared body of state PUT and PATCH: pairs for PUT, (op, key, value)
 * triples for PATCH (op 's' sets, 'd' deletes). */
static int state_write(store *s, const char *id, const store_blob *keys, const store_blob *values,
                       size_t n, size_t max_bytes, int64_t now_ms, int patch) {
    args a;
    char now_iso[UTIL_ISO_LEN];
    if (args_init(s, &a, 4 + 3 * n)) return CTXD_ERR;
    util_iso8601(now_ms, now_iso);
    add_str(&a, now_iso);
    add_int(&a, now_ms);
    if (patch) add_int(&a, (int64_t)max_bytes);
    add_int(&a, (int64_t)n);
    for (size_t i = 0; i < n; i++) {
        if (patch) add_str(&a, values[i].data ? "s" : "d");
        add_bin(&a, keys[i].data, keys[i].len);
        add_bin(&a, values[i].data, values[i].len);
    }
    int rc = write_script(s, patch ? S_STATE_PATCH : S_STATE_PUT, id, &a);
    args_free(&a);
    return rc;
}

int store_state_put(store *s, const char *id, const store_blob *keys, const store_blob *values,
                    size_t n, size_t max_bytes, int64_t now_ms) {
    size_t size = 0;
    for (size_t i = 0; i < n; i++) size += keys[i].len + values[i].len;
    if (size > max_bytes) {
        s->err = STORE_ERR_TOO_LARGE;
        snprintf(s->errstr, sizeof(s->errstr), "state of %zu bytes exceeds %zu", size, max_bytes);
        return CTXD_ERR;
    }
    return state_write(s, id, keys, values, n, max_bytes, now_ms, 0);
}

int store_state_patch(store *s, const char *id, const store_blob *keys, const store_blob *values,
                      size_t n, size_t max_bytes, int64_t now_ms) {
    return state_write(s, id, keys, values, n, max_bytes, now_ms, 1);
}

int store_set_settings(store *s, const char *id, const char *const *fields,
                       const char *const *values, size_t n, int64_t now_ms) {
    args a;
    char now_iso[UTIL_ISO_LEN];
    if (args_init(s, &a, 3 + 2 * n)) return CTXD_ERR;
    util_iso8601(now_ms, now_iso);
    add_str(&a, now_iso);
    add_int(&a, now_ms);
    add_int(&a, (int64_t)n);
    for (size_t i = 0; i < n; i++) {
        add_str(&a, fields[i]);
        add_str(&a, values[i]);
    }
    int rc = write_script(s, S_SETTINGS, id, &a);
    args_free(&a);
    return rc;
}

int store_set_summary(store *s, const char *id, int64_t expected_upto, int64_t upto,
                      const char *text, int64_t tokens, int64_t now_ms) {
    args a;
    char now_iso[UTIL_ISO_LEN];
    if (args_init(s, &a, 5)) return CTXD_ERR;
    util_iso8601(now_ms, now_iso);
    add_int(&a, expected_upto);
    add_int(&a, upto);
    add_str(&a, text);
    add_int(&a, tokens);
    add_str(&a, now_iso);
    ctx_keys k;
    ctx_keys_init(&k, id);
    redisReply *r = run_script(s, S_SUMMARY, 1, k.all, &a);
    int rc = r ? script_status(s, r, id) : CTXD_ERR;
    if (r) freeReplyObject(r);
    args_free(&a);
    return rc;
}

void store_list_free(store_list_item *items, size_t n) {
    if (!items) return;
    for (size_t i = 0; i < n; i++) free(items[i].last_message.data);
    free(items);
}

int store_list(store *s, long limit, int64_t cursor_ms, const char *cursor_id,
               store_list_item **items, size_t *n) {
    char l[24], c[24];
    const char *keys[1] = {KEY_INDEX};
    snprintf(l, sizeof(l), "%ld", limit);
    snprintf(c, sizeof(c), "%" PRId64, cursor_ms);
    const char *a[3] = {l, cursor_ms > 0 ? c : "", cursor_id ? cursor_id : ""};
    *items = NULL;
    *n = 0;
    redisReply *r = read_eval(s, S_LIST, 1, keys, 3, a);
    if (!r) return CTXD_ERR;
    int rc = CTXD_ERR;
    if (r->type != REDIS_REPLY_ARRAY) {
        fail(s, STORE_ERR_REDIS, "unexpected reply from Redis at %s%s", ADDR(s), " listing");
        goto cleanup;
    }
    if (r->elements && !(*items = calloc(r->elements, sizeof(**items)))) goto oom;
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *e = r->element[i];
        store_list_item *it = &(*items)[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements != 6) continue;
        snprintf(it->id, sizeof(it->id), "%s", e->element[0]->str ? e->element[0]->str : "");
        it->activity_ms = strtoll(e->element[1]->str ? e->element[1]->str : "0", NULL, 10);
        snprintf(it->created_at, sizeof(it->created_at), "%s",
                 e->element[2]->str ? e->element[2]->str : "");
        snprintf(it->last_updated, sizeof(it->last_updated), "%s",
                 e->element[3]->str ? e->element[3]->str : "");
        it->message_count = e->element[4]->integer;
        (*n)++;
        if (e->element[5]->len && blob_copy(&it->last_message, e->element[5])) goto oom;
    }
    rc = CTXD_OK;
    goto cleanup;
oom:
    s->err = STORE_ERR_NOMEM;
    snprintf(s->errstr, sizeof(s->errstr), "out of memory");
    store_list_free(*items, *n);
    *items = NULL;
    *n = 0;
cleanup:
    freeReplyObject(r);
    return rc;
}
