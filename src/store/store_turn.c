/* store_turn.c: what a turn does in Redis: lock and read, append, renew, release, summary. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctxd/message.h"
#include "store_conn.h"

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
 * lock on rather than free it while one does), with the reads after it and
 * WATCH for the append (store_watch.c). On one server: SET, WATCH, then the
 * reads, which the WATCH covers. In a cluster, one transaction (in a slot
 * that is moving it runs whole on one node or not at all, TRYAGAIN, like a
 * script), then WATCH and what proves nothing changed in between.
 * CTXD_OK with *taken (out filled), CTXD_OK with *taken 0 when the lock is
 * not free (the script decides), or CTXD_ERR. */
static int fast_read(store *s, const ctx_keys *k, const char *id, const char *token,
                     int lock_ttl_ms, const char *idem_key, store_turn_mode mode,
                     int64_t fixed_tokens, long fold_max, store_context *out, int *taken) {
    enum { R_SET, R_QUEUE, R_META, R_LEN, R_TAIL, R_IDEM, R_COUNT };
    char ttl[24];
    redisReply *rs[STORE_BATCH_MAX] = {NULL};
    const redisReply *got[R_COUNT] = {NULL}, *watch_r[STORE_WATCH_REPLIES] = {NULL};
    store_watch_cmds w;
    int n = 0, rc = CTXD_ERR, found = 0, with_idem = idem_key && idem_key[0], tx, n_reads = 0,
        at[R_COUNT], n_watch;
    snprintf(ttl, sizeof(ttl), "%d", lock_ttl_ms);
    const char *multi[1] = {"MULTI"}, *exec[1] = {"EXEC"},
               *set[6] = {"SET", k->all[K_LOCK], token, "NX", "PX", ttl},
               *queue[2] = {"EXISTS", k->all[K_QUEUE]}, *meta[2] = {"HGETALL", k->all[K_META]},
               *llen[2] = {"LLEN", k->all[K_MESSAGES]},
               *tail[4] = {"LRANGE", k->all[K_MESSAGES], TAIL, "-1"},
               *idem[3] = {"HGET", k->all[K_IDEM], idem_key};
    const char **reads[R_COUNT] = {set, queue, meta, llen, tail, idem};
    const int read_argcs[R_COUNT] = {6, 2, 2, 2, 4, 3};
    const char **cmds[STORE_BATCH_MAX];
    int argcs[STORE_BATCH_MAX];
    *taken = 0;
    if (store_route(s, k->all[K_META])) return CTXD_ERR; /* connected: the mode is known */
    tx = store_is_cluster(s);
    store_watch_cmds_init(&w, k->all, with_idem, tx);
    for (int i = 0; i < R_COUNT; i++) at[i] = -1;
    if (tx) cmds[n] = multi, argcs[n++] = 1;
    for (int i = 0; i < R_COUNT; i++) {
        if ((i == R_TAIL && mode == STORE_TURN_APPEND) || (i == R_IDEM && !with_idem)) continue;
        at[i] = n_reads++;
        cmds[n] = reads[i], argcs[n++] = read_argcs[i];
        if (i == R_SET && !tx) /* WATCH right after the lock: the reads are covered */
            for (int j = 0; j < w.n; j++) cmds[n] = w.argvs[j], argcs[n++] = w.argcs[j];
    }
    if (tx) {
        cmds[n] = exec, argcs[n++] = 1;
        for (int j = 0; j < w.n; j++) cmds[n] = w.argvs[j], argcs[n++] = w.argcs[j];
    }
    n_watch = w.n;
    if (store_pipeline_all(s, n, cmds, argcs, rs)) return CTXD_ERR;
    if (tx) {
        const redisReply *ex = rs[n_reads + 1];
        for (int i = 0; i <= n_reads + 1; i++)
            if (store_reply_error(s, rs[i])) goto cleanup;
        if (ex->type != REDIS_REPLY_ARRAY || ex->elements != (size_t)n_reads) {
            store_fail(s, CTXD_E_REDIS, "unexpected reply from Redis at %s locking %s",
                       store_addr(s), id);
            goto cleanup;
        }
        for (int i = 0; i < R_COUNT; i++)
            if (at[i] >= 0) got[i] = ex->element[at[i]];
        for (int j = 0; j < n_watch; j++) watch_r[j] = rs[n_reads + 2 + j];
    } else {
        for (int i = 0; i < R_COUNT; i++)
            if (at[i] >= 0) got[i] = rs[at[i] + (i == R_SET ? 0 : n_watch)];
        for (int j = 0; j < n_watch; j++) watch_r[j] = rs[1 + j];
    }
    for (int i = 0; i < R_COUNT; i++)
        if (got[i] && store_reply_error(s, got[i])) goto cleanup;
    /* Not free, or taken while entries are left in line (a holder's lock
     * expired; token may be one of them): the script's case. */
    if (got[R_SET]->type != REDIS_REPLY_STATUS || got[R_QUEUE]->type != REDIS_REPLY_INTEGER ||
        got[R_QUEUE]->integer) {
        rc = CTXD_OK;
        goto cleanup;
    }
    *taken = 1;
    found = got[R_META]->type == REDIS_REPLY_ARRAY && got[R_META]->elements;
    int replay = found && with_idem && got[R_IDEM]->type == REDIS_REPLY_STRING &&
                 strtoll(got[R_IDEM]->str, NULL, 10) >= util_now_ms();
    if (!found || replay) {
        /* No turn after all: the lock goes (passed on if a turn queued). */
        if (store_lock_release(s, id, token)) goto cleanup;
    }
    if (!found) {
        store_fail(s, CTXD_E_NOT_FOUND, "context %s not found", id);
        goto cleanup;
    }
    if (store_meta_fill(out, got[R_META]) ||
        (replay && store_blob_copy(&out->idem_record, got[R_IDEM]))) {
        store_fail(s, CTXD_E_NOMEM, "out of memory");
        goto cleanup;
    }
    out->total_messages = got[R_LEN]->type == REDIS_REPLY_INTEGER ? got[R_LEN]->integer : 0;
    out->window_start_seq = out->first_seq > 0 ? out->first_seq : 1;
    if (!replay) store_watch_arm(s, k->all, token, got[R_META], out, got[R_TAIL], &w, watch_r);
    if (!replay && mode != STORE_TURN_APPEND &&
        store_window(s, k, (redisReply *)got[R_TAIL], out->total_messages, fixed_tokens, fold_max,
                     out))
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
