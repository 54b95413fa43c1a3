/* store_keys.c: the one place Redis key names are spelled, and the scripts that use them. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_int.h"

/* A context's keys share one hash tag, so Redis Cluster keeps them on one
 * slot, and the tag holds the tenant: "ctxd:{<tenant>:<id>}:<name>". The
 * tenant "default" keeps the names of ctxd 0.3, "ctxd:{<id>}:<name>", so
 * contexts made before tenants existed are the default tenant's as they
 * are. The README's "Redis layout" section mirrors this table. */
#define KEY_PREFIX "ctxd:{"
#define KEY_TAG_END "}:"
#define DEFAULT_TENANT "default"

/* A tenant's contexts by last activity (sorted set, score = last write in
 * ms): "ctxd:index" for the default tenant, "ctxd:index:<tenant>". */
#define KEY_INDEX "ctxd:index"

/* Idempotent creates: "ctxd:create:{[<tenant>:]<Idempotency-Key>}". */
#define KEY_CREATE "ctxd:create:{"

/* The activity index, cluster-ready: a tenant's contexts spread over
 * INDEX_BUCKETS sorted sets, each its own hash slot, picked by a hash of the
 * context id: "ctxd:{index:<tenant>:<bucket>}". */
#define KEY_INDEX_BUCKET "ctxd:{index:%s:%u}"

/* API keys, all in one slot: a hash per key under the SHA-256 of the key,
 * and the key ids. */
#define KEY_APIKEY "ctxd:{keys}:sha:"
#define KEY_APIKEY_IDS "ctxd:{keys}:ids"

/* Rate limits: one GCRA state per key and limit. */
#define KEY_RATE "ctxd:{rate:%s}:%s"

/* MCP sessions: one hash per session, named by tenant and session id (the
 * tenant always spelled, as the index buckets do), expiring when unused. */
#define KEY_MCP_SESSION "ctxd:{mcp:%s:%s}"

/* The KEYS order of every context script, and the names the scripts know
 * them by: all in the context's one hash slot. "queue" lists the turns waiting
 * for the lock; "wake" is no key itself but the stem of each waiting
 * turn's own "ctxd:{<id>}:wake:<token>" (see lua/queue.lua). */
static const char *const key_names[K_COUNT] = {"meta", "messages", "state", "idem",
                                               "lock", "queue",    "wake"};

/* "" for the default tenant, else "<tenant>:": what goes before an id in a tag. */
static const char *scope(const char *tenant, char out[STORE_TENANT_MAX + 2]) {
    if (!strcmp(tenant, DEFAULT_TENANT)) return "";
    snprintf(out, STORE_TENANT_MAX + 2, "%s:", tenant);
    return out;
}

void store_keys_init(ctx_keys *k, const char *tenant, const char *id) {
    char sc[STORE_TENANT_MAX + 2];
    const char *pre = scope(tenant, sc);
    for (int i = 0; i < K_COUNT; i++) {
        snprintf(k->key[i], STORE_KEY_LEN, KEY_PREFIX "%s%s" KEY_TAG_END "%s", pre, id,
                 key_names[i]);
        k->all[i] = k->key[i];
    }
}

void store_key_wake(const ctx_keys *k, const char *token, char out[STORE_KEY_LEN]) {
    snprintf(out, STORE_KEY_LEN, "%s:%s", k->key[K_WAKE], token);
}

void store_key_wait(const char *key, char out[STORE_KEY_LEN]) {
    const char *open = strchr(key, '{'), *close = open ? strchr(open + 1, '}') : NULL;
    if (open && close && close > open + 1)
        snprintf(out, STORE_KEY_LEN, "ctxd:wait:{%.*s}", (int)(close - open - 1), open + 1);
    else
        snprintf(out, STORE_KEY_LEN, "ctxd:wait:{%s}", key);
}

void store_key_create(char out[STORE_KEY_LEN], const char *tenant, const char *idem_key) {
    char sc[STORE_TENANT_MAX + 2];
    snprintf(out, STORE_KEY_LEN, KEY_CREATE "%s%s}", scope(tenant, sc), idem_key);
}

void store_key_index(const char *tenant, char out[STORE_KEY_LEN]) {
    if (!strcmp(tenant, DEFAULT_TENANT))
        snprintf(out, STORE_KEY_LEN, "%s", KEY_INDEX);
    else
        snprintf(out, STORE_KEY_LEN, KEY_INDEX ":%s", tenant);
}

unsigned store_index_bucket(const char *id) {
    return (unsigned)(util_fnv1a(UTIL_FNV_SEED, id, strlen(id)) % STORE_INDEX_BUCKETS);
}

void store_key_index_bucket(const char *tenant, unsigned bucket, char out[STORE_KEY_LEN]) {
    snprintf(out, STORE_KEY_LEN, KEY_INDEX_BUCKET, tenant, bucket);
}

void store_key_apikey(char out[STORE_KEY_LEN], const char *sha_hex) {
    snprintf(out, STORE_KEY_LEN, KEY_APIKEY "%s", sha_hex);
}

const char *store_key_apikey_ids(void) { return KEY_APIKEY_IDS; }

void store_key_rate(char out[STORE_KEY_LEN], const char *key_id, const char *limit) {
    snprintf(out, STORE_KEY_LEN, KEY_RATE, key_id, limit);
}

void store_key_mcp_session(char out[STORE_KEY_LEN], const char *tenant, const char *id) {
    snprintf(out, STORE_KEY_LEN, KEY_MCP_SESSION, tenant, id);
}

/* ---- Scripts: src/store/lua/NAME.lua, embedded as store_lua_NAME ---- */

extern const char store_lua_context[], store_lua_create[], store_lua_read[], store_lua_turn_lock[],
    store_lua_append[], store_lua_delete[], store_lua_renew[], store_lua_release[],
    store_lua_state_put[], store_lua_state_patch[], store_lua_settings[], store_lua_summary[],
    store_lua_apikey_put[], store_lua_apikey_revoke[], store_lua_apikey_list[], store_lua_rate[],
    store_lua_queue[], store_lua_queue_leave[], store_lua_index_restore[];

/* Each script, whether it is a context script (gets every key of one
 * context as KEYS, named by the prelude, and context.lua's helpers), and
 * whether it works the turn queue (gets queue.lua's helpers too). */
static const struct {
    const char *source;
    int context, queue;
} script_sources[S_COUNT] = {
    [S_CREATE] = {store_lua_create, 1},
    [S_READ] = {store_lua_read, 1},
    [S_TURN_LOCK] = {store_lua_turn_lock, 1, 1},
    [S_APPEND] = {store_lua_append, 1, 1},
    [S_DELETE] = {store_lua_delete, 1},
    [S_RENEW] = {store_lua_renew, 1},
    [S_RELEASE] = {store_lua_release, 1, 1},
    [S_STATE_PUT] = {store_lua_state_put, 1},
    [S_STATE_PATCH] = {store_lua_state_patch, 1},
    [S_SETTINGS] = {store_lua_settings, 1},
    [S_SUMMARY] = {store_lua_summary, 1},
    [S_APIKEY_PUT] = {store_lua_apikey_put, 0},
    [S_APIKEY_REVOKE] = {store_lua_apikey_revoke, 0},
    [S_APIKEY_LIST] = {store_lua_apikey_list, 0},
    [S_RATE] = {store_lua_rate, 0},
    [S_QUEUE_LEAVE] = {store_lua_queue_leave, 1, 1},
    [S_INDEX_RESTORE] = {store_lua_index_restore, 0},
};

static char *script_texts[S_COUNT];
static pthread_once_t scripts_once = PTHREAD_ONCE_INIT;

/* "local meta, messages, ... = KEYS[1], KEYS[2], ...": the table above, in Lua. */
static size_t prelude(char *out, size_t cap) {
    size_t n = 0;
    n += (size_t)snprintf(out, cap, "local ");
    for (int i = 0; i < K_COUNT; i++)
        n += (size_t)snprintf(out + n, cap > n ? cap - n : 0, "%s%s", i ? ", " : "", key_names[i]);
    n += (size_t)snprintf(out + n, cap > n ? cap - n : 0, " =");
    for (int i = 0; i < K_COUNT; i++)
        n += (size_t)snprintf(out + n, cap > n ? cap - n : 0, "%s KEYS[%d]", i ? "," : "", i + 1);
    n += (size_t)snprintf(out + n, cap > n ? cap - n : 0, "\n");
    return n;
}

static void build_scripts(void) {
    char head[256];
    size_t hl = prelude(head, sizeof(head));
    for (int i = 0; i < S_COUNT; i++) {
        const char *src = script_sources[i].source;
        int ctx = script_sources[i].context;
        const char *queue = script_sources[i].queue ? store_lua_queue : "";
        size_t len = (ctx ? hl + strlen(store_lua_context) : 0) + strlen(queue) + strlen(src) + 1;
        char *t = malloc(len);
        if (!t) continue;
        snprintf(t, len, "%s%s%s%s", ctx ? head : "", ctx ? store_lua_context : "", queue, src);
        script_texts[i] = t;
    }
}

const char *store_script_text(int script) {
    pthread_once(&scripts_once, build_scripts);
    return script_texts[script];
}
