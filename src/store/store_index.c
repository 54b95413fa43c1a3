/* store_index.c: the activity index in buckets (one hash slot each), and listing newest first. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store_int.h"

#define FETCH_BATCH 64

void store_index_cmds(store *s, const char *id, const char *score, store_index_update *u) {
    store_key_index_bucket(s->tenant, store_index_bucket(id), u->bucket);
    store_key_index(s->tenant, u->legacy);
    u->set[0] = score ? "ZADD" : "ZREM";
    u->set[1] = u->bucket;
    u->set[2] = score ? score : id;
    u->set[3] = id;
    u->old[0] = "ZREM", u->old[1] = u->legacy, u->old[2] = id;
    u->argvs[0] = u->set, u->argvs[1] = u->old;
    u->argcs[0] = score ? 4 : 3, u->argcs[1] = 3;
    /* A forget takes the context out of the index of 0.4 too. A touch
     * leaves it there: listing drops such an entry when it meets it, once
     * the context is in its bucket (a command on every write would cost
     * every turn for what only contexts of 0.4 need once). ctxd 0.4 ran on
     * one server only: a cluster has no index of 0.4 to empty. */
    u->n = score || store_is_cluster(s) ? 1 : 2;
}

/* One round trip: the context into its bucket at score (NULL: out of it),
 * and out of the index of 0.4 either way. */
static int index_update(store *s, const char *id, const char *score) {
    store_index_update u;
    store_index_cmds(s, id, score, &u);
    redisReply *r = store_pipeline(s, u.n, u.argvs, u.argcs);
    if (!r) return CTXD_ERR;
    freeReplyObject(r);
    return CTXD_OK;
}

int store_index_touch(store *s, const char *id, int64_t now_ms) {
    char score[24];
    snprintf(score, sizeof(score), "%" PRId64, now_ms);
    return index_update(s, id, score);
}

int store_index_forget(store *s, const char *id) { return index_update(s, id, NULL); }

/* "2026-12-01T04:12:10.148Z" (util_iso8601's form) in ms since the epoch;
 * -1 when it is not one. */
static int64_t iso_ms(const char *iso) {
    struct tm tm;
    int ms = 0;
    memset(&tm, 0, sizeof(tm));
    if (!iso || sscanf(iso, "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                       &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms) != 7)
        return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    time_t t = timegm(&tm);
    return t < 0 ? -1 : (int64_t)t * 1000 + ms;
}

int store_index_restore(store *s, const char *id, int64_t ours_ms) {
    ctx_keys k;
    args a;
    char bucket[STORE_KEY_LEN], prev[24];
    store_keys_init(&k, s->tenant, id);
    const char *get[3] = {"HGET", k.all[K_META], "last_updated"};
    redisReply *r = store_read_command(s, 3, get);
    if (!r) return CTXD_ERR;
    int64_t prev_ms = iso_ms(r->type == REDIS_REPLY_STRING ? r->str : NULL);
    freeReplyObject(r);
    if (prev_ms < 0) return CTXD_OK; /* gone, or no time to go back to */
    snprintf(prev, sizeof(prev), "%" PRId64, prev_ms);
    store_key_index_bucket(s->tenant, store_index_bucket(id), bucket);
    const char *keys[1] = {bucket};
    if (args_init(s, &a, 3)) return CTXD_ERR;
    args_str(&a, id);
    args_int(&a, ours_ms);
    args_str(&a, prev);
    r = store_eval(s, S_INDEX_RESTORE, 1, keys, &a);
    args_free(&a);
    if (!r) return CTXD_ERR;
    freeReplyObject(r);
    return CTXD_OK;
}

/* ---- Listing: a merge of every bucket (and the index of 0.4) ---- */

typedef struct cand {
    char id[UTIL_UUID_LEN + 1];
    int64_t score;
    int legacy; /* from the index of 0.4 */
} cand;

typedef struct cands {
    cand *v;
    size_t n, cap;
} cands;

/* Newest first, ties by id, descending (ZREVRANGEBYSCORE's order). */
static int newer_first(const void *pa, const void *pb) {
    const cand *a = pa, *b = pb;
    if (a->score != b->score) return a->score > b->score ? -1 : 1;
    return -strcmp(a->id, b->id);
}

static int after_cursor(int64_t score, const char *id, int64_t cursor_ms, const char *cursor_id) {
    return !cursor_ms || score < cursor_ms || (score == cursor_ms && strcmp(id, cursor_id) < 0);
}

/* Up to want members of key after the cursor, newest first, into c. */
static int fetch(store *s, const char *key, int legacy, int64_t cursor_ms, const char *cursor_id,
                 long want, cands *c) {
    char max[24], off[24], cnt[24];
    long got = 0;
    snprintf(max, sizeof(max), "%" PRId64, cursor_ms);
    snprintf(cnt, sizeof(cnt), "%d", FETCH_BATCH);
    for (long offset = 0;; offset += FETCH_BATCH) {
        snprintf(off, sizeof(off), "%ld", offset);
        const char *argv[9] = {"ZREVRANGEBYSCORE",
                               key,
                               cursor_ms ? max : "+inf",
                               "-inf",
                               "WITHSCORES",
                               "LIMIT",
                               off,
                               cnt};
        redisReply *r = store_read_command(s, 8, argv);
        if (!r) return CTXD_ERR;
        size_t pairs = r->type == REDIS_REPLY_ARRAY ? r->elements / 2 : 0;
        for (size_t i = 0; i < pairs && got < want; i++) {
            const char *id = r->element[2 * i]->str, *sc = r->element[2 * i + 1]->str;
            int64_t score = sc ? strtoll(sc, NULL, 10) : 0;
            if (!id || strlen(id) != UTIL_UUID_LEN ||
                !after_cursor(score, id, cursor_ms, cursor_id))
                continue;
            if (c->n == c->cap) {
                size_t cap = c->cap ? c->cap * 2 : 64;
                cand *v = realloc(c->v, cap * sizeof(*v));
                if (!v) {
                    freeReplyObject(r);
                    store_fail(s, CTXD_E_NOMEM, "out of memory");
                    return CTXD_ERR;
                }
                c->v = v;
                c->cap = cap;
            }
            memcpy(c->v[c->n].id, id, UTIL_UUID_LEN + 1);
            c->v[c->n].legacy = legacy;
            c->v[c->n++].score = score;
            got++;
        }
        freeReplyObject(r);
        if (got >= want || pairs < FETCH_BATCH) return CTXD_OK;
    }
}

/* Fill it from the context's keys; 0 in *found when the context is gone. */
static int describe(store *s, const cand *c, store_list_item *it, int *found) {
    ctx_keys k;
    store_keys_init(&k, s->tenant, c->id);
    const char *hm[4] = {"HMGET", k.all[K_META], "created_at", "last_updated"};
    const char *ll[2] = {"LLEN", k.all[K_MESSAGES]};
    const char *li[3] = {"LINDEX", k.all[K_MESSAGES], "-1"};
    redisReply *r = store_read_command(s, 4, hm);
    if (!r) return CTXD_ERR;
    *found = r->type == REDIS_REPLY_ARRAY && r->elements == 2 && r->element[0]->str;
    if (*found) {
        snprintf(it->id, sizeof(it->id), "%s", c->id);
        it->activity_ms = c->score;
        snprintf(it->created_at, sizeof(it->created_at), "%s", r->element[0]->str);
        snprintf(it->last_updated, sizeof(it->last_updated), "%s",
                 r->element[1]->str ? r->element[1]->str : "");
    }
    freeReplyObject(r);
    if (!*found) return CTXD_OK;
    if (!(r = store_read_command(s, 2, ll))) return CTXD_ERR;
    it->message_count = r->type == REDIS_REPLY_INTEGER ? r->integer : 0;
    freeReplyObject(r);
    if (!(r = store_read_command(s, 3, li))) return CTXD_ERR;
    int rc = CTXD_OK;
    if (r->type == REDIS_REPLY_STRING && r->len && store_blob_copy(&it->last_message, r)) {
        store_fail(s, CTXD_E_NOMEM, "out of memory");
        rc = CTXD_ERR;
    }
    freeReplyObject(r);
    return rc;
}

void store_list_free(store_list_item *items, size_t n) {
    if (!items) return;
    for (size_t i = 0; i < n; i++) free(items[i].last_message.data);
    free(items);
}

/* An entry of the index of 0.4 whose context was written since is in its
 * bucket too, at its newer time: then *moved is 1 and the old entry goes. */
static int legacy_moved(store *s, const char *id, int *moved) {
    char bucket[STORE_KEY_LEN], legacy[STORE_KEY_LEN];
    store_key_index_bucket(s->tenant, store_index_bucket(id), bucket);
    store_key_index(s->tenant, legacy);
    const char *score[3] = {"ZSCORE", bucket, id}, *rem[3] = {"ZREM", legacy, id};
    redisReply *r = store_read_command(s, 3, score);
    if (!r) return CTXD_ERR;
    *moved = r->type == REDIS_REPLY_STRING;
    freeReplyObject(r);
    if (!*moved) return CTXD_OK;
    if (!(r = store_command(s, 3, rem, NULL))) return CTXD_ERR;
    freeReplyObject(r);
    return CTXD_OK;
}

/* One round: the next candidates after the cursor from every source, merged. */
static int candidates(store *s, long limit, int64_t cursor_ms, const char *cursor_id, cands *c) {
    char key[STORE_KEY_LEN];
    c->n = 0;
    for (unsigned b = 0; b <= STORE_INDEX_BUCKETS; b++) {
        if (b < STORE_INDEX_BUCKETS)
            store_key_index_bucket(s->tenant, b, key);
        else
            store_key_index(s->tenant, key); /* contexts untouched since 0.4 */
        if (fetch(s, key, b == STORE_INDEX_BUCKETS, cursor_ms, cursor_id, limit, c))
            return CTXD_ERR;
    }
    if (c->n) qsort(c->v, c->n, sizeof(*c->v), newer_first); /* c->v is NULL when empty */
    return CTXD_OK;
}

int store_list(store *s, long limit, int64_t cursor_ms, const char *cursor_id,
               store_list_item **items, size_t *n) {
    cands c = {0};
    char cid[UTIL_UUID_LEN + 1];
    int rc = CTXD_ERR;
    *n = 0;
    snprintf(cid, sizeof(cid), "%s", cursor_id ? cursor_id : "");
    if (!(*items = calloc((size_t)(limit > 0 ? limit : 1), sizeof(**items)))) {
        store_fail(s, CTXD_E_NOMEM, "out of memory");
        return CTXD_ERR;
    }
    /* Rounds until the page is full or the index is exhausted: an entry
     * whose context is gone (expired, or a crash between the context's
     * write and the index's) is removed and skipped. */
    for (;;) {
        if (candidates(s, limit - (long)*n, cursor_ms, cid, &c)) goto cleanup;
        if (!c.n) break;
        for (size_t i = 0; i < c.n && *n < (size_t)limit; i++) {
            int found;
            if (i && !strcmp(c.v[i].id, c.v[i - 1].id)) continue; /* in two layouts */
            cursor_ms = c.v[i].score;
            snprintf(cid, sizeof(cid), "%s", c.v[i].id);
            if (c.v[i].legacy) {
                int moved;
                if (legacy_moved(s, c.v[i].id, &moved)) goto cleanup;
                if (moved) continue; /* listed from its bucket */
            }
            if (describe(s, &c.v[i], &(*items)[*n], &found)) goto cleanup;
            if (found)
                (*n)++;
            else if (store_index_forget(s, c.v[i].id))
                goto cleanup;
        }
        if (*n == (size_t)limit) break;
    }
    rc = CTXD_OK;
cleanup:
    free(c.v);
    if (rc) {
        store_list_free(*items, *n);
        *items = NULL;
        *n = 0;
    }
    return rc;
}
