/* auth.c: API keys and who a request acts for; rate limits by key. */
#include "ctxd/auth.h"

#include <inttypes.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "ctxd/util.h"

static const char base62[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
#define KEY_PREFIX "ctxd_"
#define RANDOM_CHARS 43
#define CHECK_CHARS 6

/* ---- Key text ---- */

static uint32_t crc32(const char *s, size_t n) {
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= (unsigned char)s[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
    }
    return ~c;
}

static void checksum(const char *random, char out[CHECK_CHARS + 1]) {
    uint32_t v = crc32(random, RANDOM_CHARS);
    for (int i = CHECK_CHARS - 1; i >= 0; i--, v /= 62) out[i] = base62[v % 62];
    out[CHECK_CHARS] = '\0';
}

static int is_base62(char c) {
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

int auth_key_well_formed(const char *key) {
    char sum[CHECK_CHARS + 1];
    if (!key || strlen(key) != AUTH_KEY_LEN || strncmp(key, KEY_PREFIX, 5)) return 0;
    const char *random = key + 5, *check = random + RANDOM_CHARS + 1;
    for (int i = 0; i < RANDOM_CHARS; i++)
        if (!is_base62(random[i])) return 0;
    if (random[RANDOM_CHARS] != '_') return 0;
    checksum(random, sum);
    return !memcmp(sum, check, CHECK_CHARS);
}

/* 43 uniform base62 characters (rejection sampling): 256 random bits. */
static int random_part(char out[RANDOM_CHARS]) {
    for (int i = 0; i < RANDOM_CHARS;) {
        unsigned char b[64];
        if (getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b)) return CTXD_ERR;
        for (size_t k = 0; k < sizeof(b) && i < RANDOM_CHARS; k++)
            if (b[k] < 248) out[i++] = base62[b[k] % 62];
        OPENSSL_cleanse(b, sizeof(b));
    }
    return CTXD_OK;
}

static void sha256_hex(const char *key, char out[65]) {
    static const char hex[] = "0123456789abcdef";
    unsigned char d[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)key, strlen(key), d);
    for (int i = 0; i < SHA256_DIGEST_LENGTH; i++) {
        out[2 * i] = hex[d[i] >> 4];
        out[2 * i + 1] = hex[d[i] & 15];
    }
    out[64] = '\0';
}

int auth_tenant_valid(const char *name) {
    size_t n = name ? strlen(name) : 0;
    if (!n || n > STORE_TENANT_MAX) return 0;
    for (size_t i = 0; i < n; i++)
        if (!((name[i] >= 'a' && name[i] <= 'z') || (name[i] >= '0' && name[i] <= '9') ||
              name[i] == '_' || name[i] == '-'))
            return 0;
    return 1;
}

static const char *const scope_names[] = {"read", "write", "admin"};

int auth_scopes_parse(const char *text, int *scopes) {
    *scopes = 0;
    for (const char *p = text; p && *p;) {
        size_t n = strcspn(p, ",");
        int known = 0;
        for (int i = 0; i < 3; i++)
            if (n == strlen(scope_names[i]) && !strncmp(p, scope_names[i], n)) {
                *scopes |= 1 << i;
                known = 1;
            }
        if (!known) return CTXD_ERR;
        p += n + (p[n] == ',');
    }
    return *scopes ? CTXD_OK : CTXD_ERR;
}

void auth_scopes_format(int scopes, char *out, size_t cap) {
    size_t used = 0;
    out[0] = '\0';
    for (int i = 0; i < 3; i++)
        if (scopes & (1 << i))
            used += (size_t)snprintf(out + used, cap > used ? cap - used : 0, "%s%s",
                                     used ? "," : "", scope_names[i]);
}

/* ---- Checked keys, remembered for AUTH_CACHE_MS ---- */

/* Each worker thread keeps its own few keys, so checking a key takes no lock;
 * a revoke anywhere in this process bumps the epoch, which empties them all. */
#define CACHE_SLOTS 32

static atomic_uint cache_epoch;

/* Entries are found by the key as presented, so a hit costs no checksum
 * and no hash; the key text stays in this process's memory only. */
static _Thread_local struct {
    unsigned epoch;
    struct {
        char key[AUTH_KEY_LEN + 1];
        store_apikey rec;
        int64_t until; /* monotonic ms */
    } slot[CACHE_SLOTS];
} cache;

static size_t slot_of(const char *key) {
    return (size_t)(util_fnv1a(UTIL_FNV_SEED, key, strlen(key)) % CACHE_SLOTS);
}

static int cache_get(const char *key, store_apikey *out) {
    unsigned epoch = atomic_load(&cache_epoch);
    if (cache.epoch != epoch) {
        OPENSSL_cleanse(&cache, sizeof(cache));
        cache.epoch = epoch;
    }
    size_t i = slot_of(key);
    if (strcmp(cache.slot[i].key, key) || cache.slot[i].until <= util_mono_ms()) return 0;
    *out = cache.slot[i].rec;
    return 1;
}

static void cache_put(const char *key, const store_apikey *rec) {
    size_t i = slot_of(key);
    snprintf(cache.slot[i].key, sizeof(cache.slot[i].key), "%s", key);
    cache.slot[i].rec = *rec;
    cache.slot[i].until = util_mono_ms() + AUTH_CACHE_MS;
}

/* ---- Who is asking ---- */

void auth_open_identity(auth_identity *id) {
    memset(id, 0, sizeof(*id));
    snprintf(id->tenant, sizeof(id->tenant), "default");
    id->scopes = AUTH_SCOPE_READ | AUTH_SCOPE_WRITE | AUTH_SCOPE_ADMIN;
}

/* Compare without leaking where the first difference is. */
static int same_secret(const char *a, const char *b) {
    size_t n = strlen(a);
    return n == strlen(b) && CRYPTO_memcmp(a, b, n) == 0;
}

int auth_check(ctxd_worker *w, const char *credential, auth_identity *id, ctxd_error *e) {
    const ctxd_config *cfg = w->cfg;
    store_apikey k;
    char sha[65];
    memset(id, 0, sizeof(*id));
    if (!credential || !*credential)
        return ctxd_error_set(e, CTXD_E_UNAUTHORIZED,
                              "An API key is required: send Authorization: Bearer <key> "
                              "(or x-api-key: <key>)");
    if (cfg->admin_token && same_secret(credential, cfg->admin_token)) {
        snprintf(id->tenant, sizeof(id->tenant), "default");
        id->scopes = AUTH_SCOPE_ADMIN;
        return CTXD_OK;
    }
    if (!cache_get(credential, &k)) {
        int found;
        if (!auth_key_well_formed(credential))
            return ctxd_error_set(e, CTXD_E_UNAUTHORIZED,
                                  "This is not a ctxd API key (ctxd_..._... with a valid "
                                  "checksum): check it was copied whole");
        sha256_hex(credential, sha);
        if (store_apikey_get(w->st, sha, &k, &found))
            return ctxd_error_set(e, CTXD_E_REDIS, "%s", w->st->errstr);
        if (!found) return ctxd_error_set(e, CTXD_E_UNAUTHORIZED, "Unknown or revoked API key");
        cache_put(credential, &k);
    }
    snprintf(id->key_id, sizeof(id->key_id), "%s", k.id);
    snprintf(id->tenant, sizeof(id->tenant), "%s", k.tenant);
    if (auth_scopes_parse(k.scopes, &id->scopes)) id->scopes = 0;
    id->requests_per_minute =
        k.requests_per_minute ? k.requests_per_minute : cfg->rate_requests_per_minute;
    id->tokens_per_minute = k.tokens_per_minute ? k.tokens_per_minute : cfg->rate_tokens_per_minute;
    return CTXD_OK;
}

/* ---- Managing keys ---- */

int auth_key_create(ctxd_worker *w, const auth_new_key *nk, char key[AUTH_KEY_LEN + 1],
                    store_apikey *out, ctxd_error *e) {
    char random[RANDOM_CHARS + 1], sum[CHECK_CHARS + 1], token[33];
    memset(out, 0, sizeof(*out));
    if (random_part(random) || util_token(token))
        return ctxd_error_set(e, CTXD_E_NO_RANDOMNESS, "no randomness for a key");
    random[RANDOM_CHARS] = '\0';
    checksum(random, sum);
    snprintf(key, AUTH_KEY_LEN + 1, KEY_PREFIX "%s_%s", random, sum);
    OPENSSL_cleanse(random, sizeof(random));
    snprintf(out->id, sizeof(out->id), "key_%.24s", token);
    sha256_hex(key, out->sha);
    snprintf(out->tenant, sizeof(out->tenant), "%s", nk->tenant);
    auth_scopes_format(nk->scopes, out->scopes, sizeof(out->scopes));
    snprintf(out->name, sizeof(out->name), "%s", nk->name ? nk->name : "");
    out->requests_per_minute = nk->requests_per_minute;
    out->tokens_per_minute = nk->tokens_per_minute;
    util_iso8601(util_now_ms(), out->created_at);
    if (store_apikey_put(w->st, out)) {
        OPENSSL_cleanse(key, AUTH_KEY_LEN + 1);
        return ctxd_error_set(e, w->st->err == CTXD_E_EXISTS ? CTXD_E_REDIS : w->st->err, "%s",
                              w->st->errstr);
    }
    return CTXD_OK;
}

int auth_key_list(ctxd_worker *w, const char *tenant, store_apikey **keys, size_t *n,
                  ctxd_error *e) {
    if (store_apikey_list(w->st, keys, n))
        return ctxd_error_set(e, w->st->err == CTXD_E_NOMEM ? CTXD_E_NOMEM : CTXD_E_REDIS, "%s",
                              w->st->errstr);
    size_t kept = 0;
    for (size_t i = 0; i < *n; i++)
        if (!tenant || !strcmp((*keys)[i].tenant, tenant)) (*keys)[kept++] = (*keys)[i];
    *n = kept;
    return CTXD_OK;
}

int auth_key_revoke(ctxd_worker *w, const char *id, ctxd_error *e) {
    int found;
    if (store_apikey_revoke(w->st, id, &found))
        return ctxd_error_set(e, CTXD_E_REDIS, "%s", w->st->errstr);
    atomic_fetch_add(&cache_epoch, 1); /* this process stops at once; others within AUTH_CACHE_MS */
    if (!found) return ctxd_error_set(e, CTXD_E_KEY_NOT_FOUND, "No API key with id '%s'", id);
    return CTXD_OK;
}

/* ---- Rate limits ---- */

static int limited(ctxd_worker *w, const auth_identity *id, const char *limit, int64_t per_minute,
                   int64_t cost, store_rate_mode mode, store_rate *st, ctxd_error *e) {
    store_rate r;
    if (!st) st = &r;
    memset(st, 0, sizeof(*st));
    if (per_minute <= 0 || !id->key_id[0]) return CTXD_OK;
    if (store_rate_use(w->st, id->key_id, limit, per_minute, cost, mode, st))
        return ctxd_error_set(e, CTXD_E_REDIS, "%s", w->st->errstr);
    if (st->allowed) return CTXD_OK;
    ctxd_error_set(e, CTXD_E_RATE_LIMITED,
                   "This API key is over its limit of %" PRId64 " %s a minute; retry after "
                   "Retry-After seconds",
                   per_minute, limit);
    e->retry_after_s = (int)((st->retry_ms + 999) / 1000);
    if (e->retry_after_s < 1) e->retry_after_s = 1;
    return CTXD_ERR;
}

int auth_rate_request(ctxd_worker *w, const auth_identity *id, store_rate *st, ctxd_error *e) {
    return limited(w, id, "requests", id->requests_per_minute, 1, STORE_RATE_TAKE, st, e);
}

int auth_rate_tokens_check(ctxd_worker *w, const auth_identity *id, store_rate *st, ctxd_error *e) {
    return limited(w, id, "tokens", id->tokens_per_minute, 0, STORE_RATE_PEEK, st, e);
}

void auth_rate_tokens_charge(ctxd_worker *w, const auth_identity *id, int64_t tokens) {
    ctxd_error e;
    if (tokens > 0)
        limited(w, id, "tokens", id->tokens_per_minute, tokens, STORE_RATE_CHARGE, NULL, &e);
}
