/* store_auth.c: API keys (only their hashes) and rate limits in Redis. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_int.h"

#define RATE_PERIOD_MS 60000

int store_apikey_put(store *s, const store_apikey *k) {
    char rec[STORE_KEY_LEN];
    args a;
    store_key_apikey(rec, k->sha);
    const char *keys[2] = {rec, store_key_apikey_ids()};
    if (args_init(s, &a, 8)) return CTXD_ERR;
    args_str(&a, k->id);
    args_str(&a, k->sha);
    args_str(&a, k->tenant);
    args_str(&a, k->scopes);
    args_str(&a, k->name);
    args_int(&a, k->requests_per_minute);
    args_int(&a, k->tokens_per_minute);
    args_str(&a, k->created_at);
    redisReply *r = store_eval(s, S_APIKEY_PUT, 2, keys, &a);
    args_free(&a);
    if (!r) return CTXD_ERR;
    int ok = r->type == REDIS_REPLY_INTEGER && r->integer == 1;
    freeReplyObject(r);
    if (!ok) store_fail(s, CTXD_E_EXISTS, "API key %s already exists", k->id);
    return ok ? CTXD_OK : CTXD_ERR;
}

/* Fill k from HGETALL pairs of a key's record. */
static void apikey_fill(store_apikey *k, const redisReply *r, size_t from) {
    for (size_t i = from; i + 1 < r->elements; i += 2) {
        const char *f = r->element[i]->str, *v = r->element[i + 1]->str;
        if (!f || !v) continue;
        if (!strcmp(f, "id")) snprintf(k->id, sizeof(k->id), "%s", v);
        if (!strcmp(f, "tenant")) snprintf(k->tenant, sizeof(k->tenant), "%s", v);
        if (!strcmp(f, "scopes")) snprintf(k->scopes, sizeof(k->scopes), "%s", v);
        if (!strcmp(f, "name")) snprintf(k->name, sizeof(k->name), "%s", v);
        if (!strcmp(f, "created_at")) snprintf(k->created_at, sizeof(k->created_at), "%s", v);
        if (!strcmp(f, "requests_per_minute")) k->requests_per_minute = strtoll(v, NULL, 10);
        if (!strcmp(f, "tokens_per_minute")) k->tokens_per_minute = strtoll(v, NULL, 10);
    }
}

int store_apikey_get(store *s, const char *sha_hex, store_apikey *out, int *found) {
    char rec[STORE_KEY_LEN];
    store_key_apikey(rec, sha_hex);
    const char *argv[2] = {"HGETALL", rec};
    memset(out, 0, sizeof(*out));
    *found = 0;
    redisReply *r = store_read_command(s, 2, argv);
    if (!r) return CTXD_ERR;
    if (r->type == REDIS_REPLY_ARRAY && r->elements >= 2) {
        snprintf(out->sha, sizeof(out->sha), "%s", sha_hex);
        apikey_fill(out, r, 0);
        *found = out->id[0] != '\0';
    }
    freeReplyObject(r);
    return CTXD_OK;
}

int store_apikey_list(store *s, store_apikey **keys, size_t *n) {
    char prefix[STORE_KEY_LEN];
    args a;
    *keys = NULL;
    *n = 0;
    store_key_apikey(prefix, "");
    const char *k[1] = {store_key_apikey_ids()};
    if (args_init(s, &a, 1)) return CTXD_ERR;
    args_str(&a, prefix);
    redisReply *r = store_eval(s, S_APIKEY_LIST, 1, k, &a);
    args_free(&a);
    if (!r) return CTXD_ERR;
    int rc = CTXD_OK;
    if (r->type == REDIS_REPLY_ARRAY && r->elements) {
        if (!(*keys = calloc(r->elements, sizeof(**keys)))) {
            store_fail(s, CTXD_E_NOMEM, "out of memory");
            rc = CTXD_ERR;
        }
        for (size_t i = 0; *keys && i < r->elements; i++) {
            const redisReply *e = r->element[i];
            if (e->type != REDIS_REPLY_ARRAY || !e->elements || !e->element[0]->str) continue;
            store_apikey *out = &(*keys)[(*n)++];
            snprintf(out->sha, sizeof(out->sha), "%s", e->element[0]->str);
            apikey_fill(out, e, 1);
        }
    }
    freeReplyObject(r);
    return rc;
}

int store_apikey_revoke(store *s, const char *id, int *found) {
    char prefix[STORE_KEY_LEN];
    args a;
    store_key_apikey(prefix, "");
    const char *k[1] = {store_key_apikey_ids()};
    if (args_init(s, &a, 2)) return CTXD_ERR;
    args_str(&a, id);
    args_str(&a, prefix);
    redisReply *r = store_eval(s, S_APIKEY_REVOKE, 1, k, &a);
    args_free(&a);
    if (!r) return CTXD_ERR;
    *found = r->type == REDIS_REPLY_INTEGER && r->integer == 1;
    freeReplyObject(r);
    return CTXD_OK;
}

int store_rate_use(store *s, const char *key_id, const char *limit, int64_t per_minute,
                   int64_t cost, store_rate_mode mode, store_rate *out) {
    static const char *const modes[] = {"take", "peek", "charge"};
    char k[STORE_KEY_LEN];
    args a;
    memset(out, 0, sizeof(*out));
    store_key_rate(k, key_id, limit);
    const char *keys[1] = {k};
    if (args_init(s, &a, 4)) return CTXD_ERR;
    args_int(&a, RATE_PERIOD_MS);
    args_int(&a, per_minute);
    args_int(&a, cost);
    args_str(&a, modes[mode]);
    redisReply *r = store_eval(s, S_RATE, 1, keys, &a);
    args_free(&a);
    if (!r) return CTXD_ERR;
    int ok = r->type == REDIS_REPLY_ARRAY && r->elements == 4;
    if (ok) {
        out->allowed = r->element[0]->integer == 1;
        out->remaining = r->element[1]->integer;
        out->reset_ms = r->element[2]->integer;
        out->retry_ms = r->element[3]->integer;
    } else {
        store_fail(s, CTXD_E_REDIS, "unexpected reply from Redis at %s to a rate limit",
                   store_addr(s));
    }
    freeReplyObject(r);
    return ok ? CTXD_OK : CTXD_ERR;
}
