/* store_turn.c: what a turn does in Redis: lock and read, append, renew, release, summary. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctxd/message.h"
#include "store_int.h"

/* {'BUSY', ahead, turn_ms}: where the turn stands (q may be NULL). */
static int is_busy(const redisReply *r, store_turn_queue *q) {
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
        r->element[0]->type != REDIS_REPLY_STRING || strcmp(r->element[0]->str, "BUSY") ||
        r->element[1]->type != REDIS_REPLY_INTEGER || r->element[2]->type != REDIS_REPLY_INTEGER)
        return 0;
    if (q) {
        q->ahead = r->element[1]->integer;
        q->turn_ms = r->element[2]->integer;
    }
    return 1;
}

/* The newest messages read with the lock, in its round trip: most windows
 * need no more. */
#define TAIL "-32"

/* Fill out from the lock script's answer r (0, 1, {'IDEM', record} or
 * {'BUSY', ...}, q from a busy answer) and the commands read after it:
 * HGETALL meta, LLEN messages and, for a window, the tail. Frees r. */
static int turn_reply(store *s, const ctx_keys *k, const char *id, redisReply *r,
                      redisReply **after, int n_after, int64_t fixed_tokens, long fold_max,
                      store_turn_queue *q, store_context *out) {
    int rc = CTXD_ERR, idem = 0;
    if (!r) return CTXD_ERR;
    for (int i = 0; i < n_after; i++)
        if (after[i]->type == REDIS_REPLY_ERROR) {
            store_fail(s, CTXD_E_REDIS, "Redis at %s answered an error: %s", store_addr(s),
                       after[i]->str);
            goto cleanup;
        }
    if (r->type == REDIS_REPLY_INTEGER && r->integer == 0) {
        store_fail(s, CTXD_E_NOT_FOUND, "context %s not found", id);
        goto cleanup;
    }
    if (is_busy(r, q)) {
        store_fail(s, CTXD_E_BUSY, "context %s is busy", id);
        goto cleanup;
    }
    idem = r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
           r->element[1]->type == REDIS_REPLY_STRING;
    if (!idem && (r->type != REDIS_REPLY_INTEGER || r->integer != 1)) {
        store_fail(s, CTXD_E_REDIS, "unexpected reply from Redis at %s locking %s", store_addr(s),
                   id);
        goto cleanup;
    }
    if (after[0]->type != REDIS_REPLY_ARRAY || !after[0]->elements) {
        /* Deleted between the lock and the read (the delete took the lock). */
        store_fail(s, CTXD_E_NOT_FOUND, "context %s not found", id);
        goto cleanup;
    }
    if (store_meta_fill(out, after[0]) ||
        (idem && store_blob_copy(&out->idem_record, r->element[1]))) {
        store_fail(s, CTXD_E_NOMEM, "out of memory");
        goto cleanup;
    }
    out->total_messages = after[1]->type == REDIS_REPLY_INTEGER ? after[1]->integer : 0;
    out->window_start_seq = out->first_seq > 0 ? out->first_seq : 1;
    if (!idem && n_after == 3 &&
        store_window(s, k, after[2], out->total_messages, fixed_tokens, fold_max, out))
        goto cleanup;
    rc = CTXD_OK;
cleanup:
    freeReplyObject(r);
    for (int i = 0; i < n_after; i++) freeReplyObject(after[i]);
    if (rc) store_context_free(out);
    return rc;
}

/* The common case in one round trip without a script: SET NX takes the
 * lock when it is free, which means no turn waits (queue.lua passes the
 * lock on rather than free it while one does), with the reads after it.
 * CTXD_OK with *taken (out filled), CTXD_OK with *taken 0 when the lock is
 * not free (the script decides), or CTXD_ERR. */
static int fast_read(store *s, const ctx_keys *k, const char *id, const char *token,
                     int lock_ttl_ms, const char *idem_key, store_turn_mode mode,
                     int64_t fixed_tokens, long fold_max, store_context *out, int *taken) {
    char ttl[24];
    redisReply *rs[STORE_BATCH_MAX] = {NULL}, *ex;
    store_watch_cmds w;
    int n, idem_at = 0, exec_at, rc = CTXD_ERR, found = 0, with_idem = idem_key && idem_key[0];
    snprintf(ttl, sizeof(ttl), "%d", lock_ttl_ms);
    /* One transaction: in a cluster whose slot is moving, it runs whole on
     * one node or not at all (TRYAGAIN), like a script. */
    const char *multi[1] = {"MULTI"}, *exec[1] = {"EXEC"},
               *set[6] = {"SET", k->all[K_LOCK], token, "NX", "PX", ttl},
               *queue[2] = {"EXISTS", k->all[K_QUEUE]}, *meta[2] = {"HGETALL", k->all[K_META]},
               *llen[2] = {"LLEN", k->all[K_MESSAGES]},
               *tail[4] = {"LRANGE", k->all[K_MESSAGES], TAIL, "-1"},
               *idem[3] = {"HGET", k->all[K_IDEM], idem_key};
    const char **cmds[STORE_BATCH_MAX] = {multi, set, queue, meta, llen};
    int argcs[STORE_BATCH_MAX] = {1, 6, 2, 2, 2};
    n = 5;
    if (mode != STORE_TURN_APPEND) cmds[n] = tail, argcs[n++] = 4;
    if (with_idem) idem_at = n - 1, cmds[n] = idem, argcs[n++] = 3;
    exec_at = n;
    cmds[n] = exec, argcs[n++] = 1;
    /* Then WATCH, for an append without a script (store_watch.c). */
    store_watch_cmds_init(&w, k->all, with_idem);
    for (int i = 0; i < w.n; i++) cmds[n] = w.argvs[i], argcs[n++] = w.argcs[i];
    *taken = 0;
    if (store_pipeline_all(s, n, cmds, argcs, rs)) return CTXD_ERR;
    for (int i = 0; i <= exec_at; i++)
        if (store_reply_error(s, rs[i])) goto cleanup;
    ex = rs[exec_at];
    if (ex->type != REDIS_REPLY_ARRAY || ex->elements != (size_t)(exec_at - 1)) {
        store_fail(s, CTXD_E_REDIS, "unexpected reply from Redis at %s locking %s", store_addr(s),
                   id);
        goto cleanup;
    }
    for (size_t i = 0; i < ex->elements; i++)
        if (store_reply_error(s, ex->element[i])) goto cleanup;
    /* Not free, or taken while entries are left in line (a holder's lock
     * expired; token may be one of them): the script's case. */
    if (ex->element[0]->type != REDIS_REPLY_STATUS || ex->element[1]->integer) {
        rc = CTXD_OK;
        goto cleanup;
    }
    *taken = 1;
    found = ex->element[2]->type == REDIS_REPLY_ARRAY && ex->element[2]->elements;
    int replay = found && idem_at && ex->element[idem_at]->type == REDIS_REPLY_STRING &&
                 strtoll(ex->element[idem_at]->str, NULL, 10) >= util_now_ms();
    if (!found || replay) {
        /* No turn after all: the lock goes (passed on if a turn queued). */
        if (store_lock_release(s, id, token)) goto cleanup;
    }
    if (!found) {
        store_fail(s, CTXD_E_NOT_FOUND, "context %s not found", id);
        goto cleanup;
    }
    if (store_meta_fill(out, ex->element[2]) ||
        (replay && store_blob_copy(&out->idem_record, ex->element[idem_at]))) {
        store_fail(s, CTXD_E_NOMEM, "out of memory");
        goto cleanup;
    }
    out->total_messages = ex->element[3]->type == REDIS_REPLY_INTEGER ? ex->element[3]->integer : 0;
    out->window_start_seq = out->first_seq > 0 ? out->first_seq : 1;
    if (!replay)
        store_watch_arm(s, k->all, token, ex->element[2], ex->element[3],
                        mode != STORE_TURN_APPEND ? ex->element[4] : NULL, rs + exec_at + 1, w.n);
    if (!replay && mode != STORE_TURN_APPEND &&
        store_window(s, k, ex->element[4], out->total_messages, fixed_tokens, fold_max, out))
        goto cleanup;
    rc = CTXD_OK;
cleanup:
    for (int i = 0; i < n; i++)
        if (rs[i]) freeReplyObject(rs[i]);
    if (rc || !*taken) store_context_free(out);
    return rc;
}

int store_turn_read(store *s, const char *id, const char *token, int lock_ttl_ms,
                    const char *idem_key, store_turn_mode mode, int64_t fixed_tokens, long fold_max,
                    store_turn_queue *q, store_context *out) {
    ctx_keys k;
    args a;
    redisReply *after[3] = {NULL, NULL, NULL};
    memset(out, 0, sizeof(*out));
    snprintf(out->id, sizeof(out->id), "%s", id);
    store_keys_init(&k, s->tenant, id);
    int taken, rc = fast_read(s, &k, id, token, lock_ttl_ms, idem_key, mode, fixed_tokens, fold_max,
                              out, &taken);
    if (rc && store_demoted(s)) /* READONLY before it wrote: on the new master */
        rc = fast_read(s, &k, id, token, lock_ttl_ms, idem_key, mode, fixed_tokens, fold_max, out,
                       &taken);
    if (rc) return CTXD_ERR;
    if (taken) {
        rc = CTXD_OK;
        goto replay;
    }
    memset(out, 0, sizeof(*out));
    snprintf(out->id, sizeof(out->id), "%s", id);
    if (args_init(s, &a, 5)) return CTXD_ERR;
    args_str(&a, token);
    args_int(&a, lock_ttl_ms);
    args_str(&a, idem_key);
    args_int(&a, util_now_ms());
    args_int(&a, q && q->ttl_ms > 0 ? q->ttl_ms : 0);
    /* The lock, then plain reads of what the turn needs, in one round trip
     * (all in the context's slot). */
    const char *meta[2] = {"HGETALL", k.all[K_META]}, *llen[2] = {"LLEN", k.all[K_MESSAGES]},
               *tail[4] = {"LRANGE", k.all[K_MESSAGES], TAIL, "-1"};
    const char **reads[3] = {meta, llen, tail};
    const int argcs[3] = {2, 2, 4};
    int n_after = mode == STORE_TURN_APPEND ? 2 : 3;
    /* Not retried on I/O errors: it may have taken the lock. */
    redisReply *r =
        store_eval_then(s, S_TURN_LOCK, K_COUNT, k.all, &a, n_after, reads, argcs, after);
    rc = turn_reply(s, &k, id, r, after, r ? n_after : 0, fixed_tokens, fold_max, q, out);
    args_free(&a);
replay:
    /* A replay acknowledges a stored turn: it must be on the replicas too. */
    if (rc == CTXD_OK && out->idem_record.data && store_wait_replicas_all(s, k.all[K_META])) {
        store_context_free(out);
        rc = CTXD_ERR;
    }
    return rc;
}

int store_turn_wait(store *s, const char *id, const char *token, int timeout_ms, int *woken) {
    ctx_keys k;
    char key[STORE_KEY_LEN], secs[24];
    store_keys_init(&k, s->tenant, id);
    store_key_wake(&k, token, key);
    /* BLPOP takes seconds; 0 would mean forever. */
    if (timeout_ms < 1) timeout_ms = 1;
    snprintf(secs, sizeof(secs), "%d.%03d", timeout_ms / 1000, timeout_ms % 1000);
    const char *argv[3] = {"BLPOP", key, secs};
    redisReply *r = store_command(s, 3, argv, NULL);
    if (!r) return CTXD_ERR;
    *woken = r->type == REDIS_REPLY_ARRAY;
    freeReplyObject(r);
    return CTXD_OK;
}

int store_turn_leave(store *s, const char *id, const char *token) {
    ctx_keys k;
    args a;
    store_keys_init(&k, s->tenant, id);
    if (args_init(s, &a, 1)) return CTXD_ERR;
    args_str(&a, token);
    redisReply *r = store_eval(s, S_QUEUE_LEAVE, K_COUNT, k.all, &a);
    args_free(&a);
    if (!r) return CTXD_ERR;
    freeReplyObject(r);
    return CTXD_OK;
}

int store_append(store *s, const store_append_req *req) {
    args a;
    char now_iso[UTIL_ISO_LEN], score[24];
    store_index_update u;
    /* The activity index goes along, in the same round trip; a refused
     * append puts it back below. */
    snprintf(score, sizeof(score), "%lld", (long long)req->now_ms);
    store_index_cmds(s, req->id, score, &u);
    /* Without the script when the turn's read set that up. */
    int rc = store_watch_append(s, req, &u);
    if (rc != STORE_WATCH_SCRIPT) return rc;
    if (args_init(s, &a, 13 + req->n_messages)) return CTXD_ERR;
    util_iso8601(req->now_ms, now_iso);
    args_str(&a, req->token);
    args_int(&a, req->expected_next_seq);
    args_str(&a, now_iso);
    args_int(&a, req->now_ms);
    args_str(&a, req->idem_key);
    if (req->idem_key)
        args_bin(&a, req->idem_record.data, req->idem_record.len);
    else
        args_str(&a, NULL);
    args_int(&a, req->idem_ttl_s);
    args_int(&a, req->max_messages);
    args_int(&a, (int64_t)req->n_messages);
    args_str(&a, req->prompt_sig);
    args_int(&a, req->prompt_tokens);
    args_int(&a, req->held_ms);
    for (size_t i = 0; i < req->n_messages; i++)
        args_bin(&a, req->messages[i].data, req->messages[i].len);
    args_str(&a, req->if_match ? req->if_match : "");
    rc = store_write_script_then(s, S_APPEND, req->id, &a, CTXD_E_CONTEXT_FULL, u.n, u.argvs,
                                 u.argcs);
    args_free(&a);
    if (rc && s->err != CTXD_E_REDIS && s->err != CTXD_E_NOMEM) {
        /* Refused: the index goes back as it was (best effort: listing drops
         * a context that is gone anyway). */
        ctxd_err err = s->err;
        char why[sizeof(s->errstr)];
        snprintf(why, sizeof(why), "%s", s->errstr);
        if (err == CTXD_E_NOT_FOUND)
            store_index_forget(s, req->id);
        else
            store_index_restore(s, req->id, req->now_ms);
        store_fail(s, err, "%s", why);
    }
    return rc;
}

/* Renew or release the lock: both act only for its owner. 1 in *done when
 * they did. */
static int lock_script(store *s, int script, const char *id, const char *token, int ttl_ms,
                       int *done) {
    ctx_keys k;
    args a;
    store_keys_init(&k, s->tenant, id);
    if (args_init(s, &a, 2)) return CTXD_ERR;
    args_str(&a, token);
    if (script == S_RENEW) args_int(&a, ttl_ms);
    redisReply *r = store_eval(s, script, K_COUNT, k.all, &a);
    args_free(&a);
    if (!r) return CTXD_ERR;
    *done = r->type == REDIS_REPLY_INTEGER && r->integer == 1;
    freeReplyObject(r);
    return CTXD_OK;
}

int store_lock_renew(store *s, const char *id, const char *token, int ttl_ms) {
    int renewed;
    if (lock_script(s, S_RENEW, id, token, ttl_ms, &renewed)) return CTXD_ERR;
    if (renewed) return CTXD_OK;
    store_fail(s, CTXD_E_LOCK_LOST, "lock on context %s was lost", id);
    return CTXD_ERR;
}

int store_lock_release(store *s, const char *id, const char *token) {
    int released;
    return lock_script(s, S_RELEASE, id, token, 0, &released);
}

int store_set_summary(store *s, const char *id, int64_t expected_upto, int64_t upto,
                      const char *text, int64_t tokens, int64_t now_ms) {
    args a;
    char now_iso[UTIL_ISO_LEN];
    if (args_init(s, &a, 5)) return CTXD_ERR;
    util_iso8601(now_ms, now_iso);
    args_int(&a, expected_upto);
    args_int(&a, upto);
    args_str(&a, text);
    args_int(&a, tokens);
    args_str(&a, now_iso);
    int rc = store_write_script(s, S_SUMMARY, id, &a, CTXD_E_REDIS);
    args_free(&a);
    return rc;
}
