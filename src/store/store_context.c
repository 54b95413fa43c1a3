/* store_context.c: contexts in Redis: create, read, settings, state, delete, listing. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_int.h"

/* ---- Replies into owned memory ---- */

int store_blob_copy(store_blob *b, const redisReply *r) {
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

int store_blobs_copy(const redisReply *arr, store_blob **out, size_t *n) {
    *out = NULL;
    *n = 0;
    if (!arr->elements) return CTXD_OK;
    *out = calloc(arr->elements, sizeof(store_blob));
    if (!*out) return CTXD_ERR;
    for (size_t i = 0; i < arr->elements; i++, (*n)++)
        if (store_blob_copy(&(*out)[i], arr->element[i])) return CTXD_ERR;
    return CTXD_OK;
}

void store_context_free(store_context *c) {
    if (!c) return;
    free(c->system);
    free(c->model);
    free(c->summary);
    free(c->tools);
    free(c->tool_choice);
    free(c->idem_record.data);
    blobs_free(c->messages, c->n_messages);
    blobs_free(c->fold, c->n_fold);
    blobs_free(c->state_keys, c->n_state);
    blobs_free(c->state_values, c->n_state);
    memset(c, 0, sizeof(*c));
}

/* ---- The meta hash: its field names live here and in the scripts ---- */

static int dup_field(char **dst, const char *v) {
    free(*dst);
    *dst = strdup(v);
    return *dst ? CTXD_OK : CTXD_ERR;
}

int store_meta_fill(store_context *out, const redisReply *meta) {
    static const struct {
        const char *name;
        size_t off;
    } ints[] = {
        {"next_seq", offsetof(store_context, next_seq)},
        {"first_seq", offsetof(store_context, first_seq)},
        {"ttl_seconds", offsetof(store_context, ttl_seconds)},
        {"max_context_tokens", offsetof(store_context, max_context_tokens)},
        {"max_messages", offsetof(store_context, max_messages)},
        {"summary_upto", offsetof(store_context, summary_upto)},
        {"summary_tokens", offsetof(store_context, summary_tokens)},
        {"prompt_tokens", offsetof(store_context, prompt_tokens)},
        {"version", offsetof(store_context, version)},
    };
    out->version = 1; /* contexts made before versions: their first */
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
        else if (!strcmp(f, "tools") && dup_field(&out->tools, v))
            return CTXD_ERR;
        else if (!strcmp(f, "tool_choice") && dup_field(&out->tool_choice, v))
            return CTXD_ERR;
        for (size_t k = 0; k < sizeof(ints) / sizeof(ints[0]); k++)
            if (!strcmp(f, ints[k].name))
                *(int64_t *)((char *)out + ints[k].off) = strtoll(v, NULL, 10);
    }
    if (!out->system && dup_field(&out->system, "")) return CTXD_ERR;
    if (!out->model && dup_field(&out->model, "")) return CTXD_ERR;
    if (!out->summary && dup_field(&out->summary, "")) return CTXD_ERR;
    if (!out->tools && dup_field(&out->tools, "")) return CTXD_ERR;
    if (!out->tool_choice && dup_field(&out->tool_choice, "")) return CTXD_ERR;
    return CTXD_OK;
}

/* ---- Create ---- */

int store_create(store *s, const store_new_context *nc) {
    const store_settings *st = &nc->settings;
    ctx_keys k;
    args a;
    char now[UTIL_ISO_LEN];
    int rc = CTXD_ERR;
    if (args_init(s, &a, 12 + 2 * nc->n_state)) return CTXD_ERR;
    store_keys_init(&k, s->tenant, nc->id);
    util_iso8601(nc->now_ms, now);
    args_str(&a, nc->id);
    args_str(&a, now);
    args_int(&a, nc->now_ms);
    args_str(&a, st->system);
    args_str(&a, st->model);
    args_int(&a, st->ttl_seconds);
    args_str(&a, st->strategy ? st->strategy : "all");
    args_int(&a, st->max_context_tokens);
    args_int(&a, st->max_messages);
    args_str(&a, st->tools);
    args_str(&a, st->tool_choice);
    args_int(&a, (int64_t)nc->n_state);
    for (size_t i = 0; i < nc->n_state; i++) {
        args_bin(&a, nc->state_keys[i].data, nc->state_keys[i].len);
        args_bin(&a, nc->state_values[i].data, nc->state_values[i].len);
    }
    redisReply *r = store_index_touch(s, nc->id, nc->now_ms)
                        ? NULL
                        : store_eval(s, S_CREATE, K_COUNT, k.all, &a);
    if (r && (r->type != REDIS_REPLY_INTEGER || r->integer != 1))
        store_fail(s, CTXD_E_EXISTS, "context %s already exists", nc->id);
    else if (r)
        rc = CTXD_OK;
    if (r) freeReplyObject(r);
    args_free(&a);
    return rc;
}

int store_create_claim(store *s, const char *key, uint64_t fp, const char *new_id, int ttl_s,
                       int *claimed, char existing_id[UTIL_UUID_LEN + 1], uint64_t *existing_fp) {
    char k[STORE_KEY_LEN], val[64], ttl[16];
    store_key_create(k, s->tenant, key);
    snprintf(val, sizeof(val), "%016" PRIx64 " %s", fp, new_id);
    snprintf(ttl, sizeof(ttl), "%d", ttl_s);
    const char *set[6] = {"SET", k, val, "NX", "EX", ttl};
    redisReply *r = store_command(s, 6, set, NULL);
    if (!r) return CTXD_ERR;
    *claimed = r->type == REDIS_REPLY_STATUS;
    freeReplyObject(r);
    if (*claimed) return CTXD_OK;

    const char *get[2] = {"GET", k};
    if (!(r = store_read_command(s, 2, get))) return CTXD_ERR;
    int ok = r->type == REDIS_REPLY_STRING && r->len == 16 + 1 + UTIL_UUID_LEN;
    if (ok) {
        *existing_fp = strtoull(r->str, NULL, 16);
        memcpy(existing_id, r->str + 17, UTIL_UUID_LEN);
        existing_id[UTIL_UUID_LEN] = '\0';
    }
    freeReplyObject(r);
    if (!ok) { /* expired between SET and GET */
        store_fail(s, CTXD_E_CONFLICT, "idempotency record changed, retry");
        return CTXD_ERR;
    }
    return store_wait_replicas_all(s, k); /* a replay: the first create must be replicated */
}

int store_create_unclaim(store *s, const char *key) {
    char k[STORE_KEY_LEN];
    store_key_create(k, s->tenant, key);
    const char *argv[2] = {"DEL", k};
    redisReply *r = store_command(s, 2, argv, NULL);
    if (!r) return CTXD_ERR;
    freeReplyObject(r);
    return CTXD_OK;
}

/* ---- Read ---- */

static int fill_state(store_context *out, const redisReply *state) {
    size_t ns = state->elements / 2;
    if (!ns) return CTXD_OK;
    out->state_keys = calloc(ns, sizeof(store_blob));
    out->state_values = calloc(ns, sizeof(store_blob));
    if (!out->state_keys || !out->state_values) return CTXD_ERR;
    for (size_t i = 0; i < ns; i++) {
        out->n_state++;
        if (store_blob_copy(&out->state_keys[i], state->element[2 * i]) ||
            store_blob_copy(&out->state_values[i], state->element[2 * i + 1]))
            return CTXD_ERR;
    }
    return CTXD_OK;
}

/* Fill out from {meta-pairs, messages, state-pairs, llen[, start]} (the
 * script's reply, or EXEC's without start: the newest limit messages).
 * Frees r. */
static int read_reply(store *s, const char *id, redisReply *r, long limit, store_context *out) {
    int rc = CTXD_ERR;
    if (!r) return CTXD_ERR;
    if (r->type == REDIS_REPLY_NIL ||
        (r->type == REDIS_REPLY_ARRAY && r->elements && !r->element[0]->elements)) {
        store_fail(s, CTXD_E_NOT_FOUND, "context %s not found", id);
    } else if (r->type != REDIS_REPLY_ARRAY || r->elements < 4 || r->elements > 5) {
        store_fail(s, CTXD_E_REDIS, "unexpected reply from Redis at %s reading %s", store_addr(s),
                   id);
    } else if (store_meta_fill(out, r->element[0]) ||
               store_blobs_copy(r->element[1], &out->messages, &out->n_messages) ||
               fill_state(out, r->element[2])) {
        store_fail(s, CTXD_E_NOMEM, "out of memory");
    } else {
        int64_t len = r->element[3]->integer;
        int64_t start = r->elements == 5           ? r->element[4]->integer
                        : limit > 0 && len > limit ? len - limit
                                                   : 0;
        out->total_messages = len;
        out->has_more = out->n_messages > 0 && start > 0;
        out->next_before = out->has_more ? out->first_seq + start : 0;
        rc = CTXD_OK;
    }
    freeReplyObject(r);
    if (rc) store_context_free(out);
    return rc;
}

/* The newest messages, the meta and the state in one MULTI/EXEC, pipelined:
 * cheaper for Redis than the read script when no seq arithmetic is needed.
 * Returns EXEC's reply {meta, messages, state, llen}, or NULL with s->err. */
static redisReply *read_newest(store *s, const ctx_keys *k, int what, long limit) {
    char from[24];
    snprintf(from, sizeof(from), "%ld", limit > 0 ? -limit : 0);
    const char *range_start = what & STORE_READ_MESSAGES ? from : "1";
    const char *range_end = what & STORE_READ_MESSAGES ? "-1" : "0"; /* 1..0: none */
    const char *cmds[6][4] = {{"MULTI"},
                              {"HGETALL", k->all[K_META]},
                              {"LRANGE", k->all[K_MESSAGES], range_start, range_end},
                              {what & STORE_READ_STATE ? "HGETALL" : "HLEN", k->all[K_STATE]},
                              {"LLEN", k->all[K_MESSAGES]},
                              {"EXEC"}};
    static const int argc[6] = {1, 2, 4, 2, 2, 1};
    const char **argvs[6];
    for (int i = 0; i < 6; i++) argvs[i] = cmds[i];
    redisReply *r = store_pipeline(s, 6, argvs, argc);
    if (!r && store_failed_io(s)) r = store_pipeline(s, 6, argvs, argc);
    if (r && (r->type != REDIS_REPLY_ARRAY || r->elements != 4)) {
        store_fail(s, CTXD_E_REDIS, "unexpected reply from Redis at %s to a read", store_addr(s));
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

int store_read(store *s, const char *id, int what, long limit, int64_t before, store_context *out) {
    ctx_keys k;
    args a;
    memset(out, 0, sizeof(*out));
    snprintf(out->id, sizeof(out->id), "%s", id);
    store_keys_init(&k, s->tenant, id);
    if (before <= 0) {
        long newest = what & STORE_READ_MESSAGES ? limit : 0;
        return read_reply(s, id, read_newest(s, &k, what, limit), newest, out);
    }
    if (args_init(s, &a, 3)) return CTXD_ERR;
    args_int(&a, what);
    args_int(&a, limit);
    args_int(&a, before);
    int rc = read_reply(s, id, store_eval_read(s, S_READ, K_COUNT, k.all, &a), 0, out);
    args_free(&a);
    return rc;
}

/* ---- Changes ---- */

int store_set_settings(store *s, const char *id, const store_settings *c, int64_t now_ms,
                       const char *if_match) {
    const char *fields[8], *values[8];
    char nums[3][24], now_iso[UTIL_ISO_LEN];
    const int64_t num[3] = {c->ttl_seconds, c->max_context_tokens, c->max_messages};
    static const char *const num_fields[3] = {"ttl_seconds", "max_context_tokens", "max_messages"};
    size_t n = 0;
    args a;
    if (c->system) fields[n] = "system", values[n++] = c->system;
    if (c->model) fields[n] = "model", values[n++] = c->model;
    if (c->strategy) fields[n] = "strategy", values[n++] = c->strategy;
    if (c->tools) fields[n] = "tools", values[n++] = c->tools;
    if (c->tool_choice) fields[n] = "tool_choice", values[n++] = c->tool_choice;
    for (int i = 0; i < 3; i++) {
        if (num[i] < 0) continue;
        snprintf(nums[i], sizeof(nums[i]), "%" PRId64, num[i]);
        fields[n] = num_fields[i], values[n++] = nums[i];
    }
    if (args_init(s, &a, 4 + 2 * n)) return CTXD_ERR;
    util_iso8601(now_ms, now_iso);
    args_str(&a, now_iso);
    args_int(&a, now_ms);
    args_int(&a, (int64_t)n);
    for (size_t i = 0; i < n; i++) {
        args_str(&a, fields[i]);
        args_str(&a, values[i]);
    }
    args_str(&a, if_match ? if_match : "");
    int rc = store_write_script(s, S_SETTINGS, id, &a, CTXD_E_REDIS);
    args_free(&a);
    return rc ? rc : store_index_touch(s, id, now_ms);
}

/* Shared body of state PUT and PATCH: pairs for PUT, (op, key, value)
 * triples for PATCH (op 's' sets, 'd' deletes). */
static int state_write(store *s, const char *id, const store_blob *keys, const store_blob *values,
                       size_t n, size_t max_bytes, int64_t now_ms, const char *if_match,
                       int patch) {
    args a;
    char now_iso[UTIL_ISO_LEN];
    if (args_init(s, &a, 5 + 3 * n)) return CTXD_ERR;
    util_iso8601(now_ms, now_iso);
    args_str(&a, now_iso);
    args_int(&a, now_ms);
    if (patch) args_int(&a, (int64_t)max_bytes);
    args_int(&a, (int64_t)n);
    for (size_t i = 0; i < n; i++) {
        if (patch) args_str(&a, values[i].data ? "s" : "d");
        args_bin(&a, keys[i].data, keys[i].len);
        args_bin(&a, values[i].data, values[i].len);
    }
    args_str(&a, if_match ? if_match : "");
    int rc =
        store_write_script(s, patch ? S_STATE_PATCH : S_STATE_PUT, id, &a, CTXD_E_STATE_TOO_LARGE);
    args_free(&a);
    return rc ? rc : store_index_touch(s, id, now_ms);
}

int store_state_put(store *s, const char *id, const store_blob *keys, const store_blob *values,
                    size_t n, size_t max_bytes, int64_t now_ms, const char *if_match) {
    size_t size = 0;
    for (size_t i = 0; i < n; i++) size += keys[i].len + values[i].len;
    if (size > max_bytes) {
        store_fail(s, CTXD_E_STATE_TOO_LARGE, "state of %zu bytes exceeds %zu", size, max_bytes);
        return CTXD_ERR;
    }
    return state_write(s, id, keys, values, n, max_bytes, now_ms, if_match, 0);
}

int store_state_patch(store *s, const char *id, const store_blob *keys, const store_blob *values,
                      size_t n, size_t max_bytes, int64_t now_ms, const char *if_match) {
    return state_write(s, id, keys, values, n, max_bytes, now_ms, if_match, 1);
}

int store_delete(store *s, const char *id, int *deleted) {
    ctx_keys k;
    args a;
    store_keys_init(&k, s->tenant, id);
    if (args_init(s, &a, 1)) return CTXD_ERR;
    args_str(&a, id);
    redisReply *r = store_eval(s, S_DELETE, K_COUNT, k.all, &a);
    args_free(&a);
    if (!r) return CTXD_ERR;
    *deleted = r->type == REDIS_REPLY_INTEGER && r->integer == 1;
    freeReplyObject(r);
    return store_index_forget(s, id);
}
