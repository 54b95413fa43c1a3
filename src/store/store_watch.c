/* store_watch.c: a turn's append without a script. The read that took the lock sets WATCH on the
 * context's keys; the append is then one MULTI/EXEC whose values C worked out from that read,
 * and Redis refuses it if anything changed meanwhile, when append.lua decides instead. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctxd/message.h"
#include "store_conn.h"

/* Appends of more messages go to the script (one RPUSH here). */
#define MESSAGES_MAX 64
/* The script prunes the idempotency hash from this size on. */
#define IDEM_PRUNE_AT 1024

void store_watch_cmds_init(store_watch_cmds *w, const char *const *keys, int with_idem,
                           int after_tx) {
    /* The lock, the queue and the meta: every write of the messages or the
     * idempotency records holds the lock or changes the meta (a delete). */
    w->watch[0] = "WATCH";
    w->watch[1] = keys[K_LOCK];
    w->watch[2] = keys[K_QUEUE];
    w->watch[3] = keys[K_META];
    w->idem[0] = "HLEN", w->idem[1] = keys[K_IDEM];
    w->queue[0] = "EXISTS", w->queue[1] = keys[K_QUEUE];
    w->version[0] = "HMGET", w->version[1] = keys[K_META], w->version[2] = "next_seq";
    w->version[3] = "version";
    w->n = 0;
    w->with_idem = with_idem;
    w->after_tx = after_tx;
    w->argvs[w->n] = w->watch, w->argcs[w->n++] = 4;
    if (with_idem) w->argvs[w->n] = w->idem, w->argcs[w->n++] = 2;
    if (after_tx) {
        w->argvs[w->n] = w->queue, w->argcs[w->n++] = 2;
        w->argvs[w->n] = w->version, w->argcs[w->n++] = 4;
    }
}

void store_watch_forget(store_impl *im, const redisContext *c) {
    if (c && im->watch.c == c) {
        im->watch.c = NULL;
        im->watch.armed = 0;
    }
}

/* The value of field in HGETALL pairs, or NULL. */
static const redisReply *meta_field(const redisReply *meta, const char *field) {
    for (size_t i = 0; i + 1 < meta->elements; i += 2)
        if (meta->element[i]->type == REDIS_REPLY_STRING && !strcmp(meta->element[i]->str, field))
            return meta->element[i + 1];
    return NULL;
}

/* The meta's turn_ms into *v (-1 when absent); 0 when it is no number. */
static int turn_ms_of(const redisReply *meta, int64_t *v) {
    const redisReply *f = meta_field(meta, "turn_ms");
    char *end;
    *v = -1;
    if (!f) return 1;
    if (f->type != REDIS_REPLY_STRING || !f->len) return 0;
    *v = strtoll(f->str, &end, 10);
    return *end == '\0';
}

/* HGETALL's field f (NULL: absent) and HMGET's answer r for it agree. */
static int same(const redisReply *f, const redisReply *r) {
    if (!f) return r->type == REDIS_REPLY_NIL;
    return f->type == REDIS_REPLY_STRING && r->type == REDIS_REPLY_STRING && f->len == r->len &&
           !memcmp(f->str, r->str, r->len);
}

/* A message's seq and whether it starts a unit; 0 when its head is not
 * there to read. */
static int head_of(const char *raw, size_t len, int64_t *seq, unsigned char *user) {
    char role[16];
    int64_t tokens;
    if (message_head(raw, len, role, &tokens, seq) || *seq < 0) return 0;
    *user = !strcmp(role, "user");
    return 1;
}

void store_watch_arm(store *s, const char *const *keys, const char *token, const redisReply *meta,
                     const store_context *read, const redisReply *tail,
                     const store_watch_cmds *cmds, const redisReply *const *replies) {
    store_impl *im = s->impl;
    store_watch *w = &im->watch;
    const redisReply *next = meta_field(meta, "next_seq"), *version = meta_field(meta, "version");
    int i = 1;
    w->c = im->c; /* a WATCH is set there, armed or not */
    w->armed = 0;
    if (strlen(token) >= sizeof(w->token) || replies[0]->type != REDIS_REPLY_STATUS) return;
    w->idem_len = -1;
    if (cmds->with_idem) { /* HLEN of the idempotency hash */
        if (replies[i]->type != REDIS_REPLY_INTEGER) return;
        w->idem_len = replies[i++]->integer;
    }
    /* After a transaction: the queue is still empty, and next_seq and the
     * version are the ones read (every write of a context changes the
     * version; a context made before versions has next_seq), so nothing
     * came between it and the WATCH. */
    if (cmds->after_tx &&
        (replies[i]->type != REDIS_REPLY_INTEGER || replies[i]->integer != 0 ||
         replies[i + 1]->type != REDIS_REPLY_ARRAY || replies[i + 1]->elements != 2 ||
         !same(next, replies[i + 1]->element[0]) || !same(version, replies[i + 1]->element[1])))
        return;
    /* The settings as the read filled them in; only the average turn is
     * not among them. */
    if (!next || !turn_ms_of(meta, &w->turn_ms)) return;
    w->next_seq = read->next_seq;
    w->version = read->version;
    w->keep = read->max_messages;
    w->ttl_s = read->ttl_seconds;
    w->len = read->total_messages;
    w->n_tail = -1;
    if (tail) {
        if (tail->type != REDIS_REPLY_ARRAY || tail->elements > STORE_WATCH_TAIL) return;
        for (size_t j = 0; j < tail->elements; j++) {
            const redisReply *e = tail->element[j];
            if (e->type != REDIS_REPLY_STRING ||
                !head_of(e->str, e->len, &w->tail_seq[j], &w->tail_user[j]))
                return;
        }
        w->n_tail = (int)tail->elements;
    }
    snprintf(w->meta_key, sizeof(w->meta_key), "%s", keys[K_META]);
    snprintf(w->token, sizeof(w->token), "%s", token);
    w->armed = 1;
}

/* One of the versions if_match accepts (space-separated) is v. */
static int version_matches(const char *if_match, int64_t v) {
    char want[24];
    size_t n = (size_t)snprintf(want, sizeof(want), "%" PRId64, v);
    for (const char *p = if_match; *p;) {
        while (*p == ' ') p++;
        const char *e = p;
        while (*e && *e != ' ') e++;
        if ((size_t)(e - p) == n && !memcmp(p, want, n)) return 1;
        p = e;
    }
    return 0;
}

/* Where trimming to w->keep starts, as append.lua decides: the messages
 * kept are the newest keep of the list and the new ones; they start at the
 * first user message among them (all of them when there is none). Sets
 * *from (1-based among the kept) and *first_seq; 0 when a head it needs is
 * not known. */
static int trim_from(const store_watch *w, const store_append_req *req, int64_t *from,
                     int64_t *first_seq) {
    int64_t n = (int64_t)req->n_messages, old = w->keep - n; /* kept messages from the list */
    if (old > 0 && (w->n_tail < 0 || old > w->n_tail)) return 0;
    for (int64_t i = 0; i < w->keep; i++) {
        int64_t seq;
        unsigned char user;
        if (i < old) {
            int at = w->n_tail - (int)old + (int)i;
            seq = w->tail_seq[at], user = w->tail_user[at];
        } else {
            const store_blob *m = &req->messages[old > 0 ? i - old : n - w->keep + i];
            if (!head_of(m->data, m->len, &seq, &user)) return 0;
        }
        if (i == 0) *from = 1, *first_seq = seq;
        if (user) {
            *from = i + 1, *first_seq = seq;
            return 1;
        }
    }
    return 1; /* none starts a unit: keep them all, from the first */
}

int store_watch_append(store *s, const store_append_req *req, const store_index_update *u) {
    store_impl *im = s->impl;
    store_watch *w = &im->watch;
    ctx_keys k;
    int64_t n = (int64_t)req->n_messages, from = 0, first_seq = 0;
    int rc = STORE_WATCH_SCRIPT;
    store_keys_init(&k, s->tenant, req->id);
    if (!w->armed || !im->c || w->c != im->c || strcmp(w->meta_key, k.all[K_META]) ||
        strcmp(w->token, req->token) || n < 1 || n > MESSAGES_MAX)
        return STORE_WATCH_SCRIPT;
    /* What the script would refuse or do otherwise is the script's. */
    if (w->next_seq != req->expected_next_seq) return STORE_WATCH_SCRIPT;
    if (req->if_match && req->if_match[0] && !version_matches(req->if_match, w->version))
        return STORE_WATCH_SCRIPT;
    if (req->max_messages > 0 && w->keep == 0 && w->len + n > req->max_messages)
        return STORE_WATCH_SCRIPT;
    if (req->idem_key && req->idem_key[0] && (w->idem_len < 0 || w->idem_len >= IDEM_PRUNE_AT))
        return STORE_WATCH_SCRIPT;
    int trim = w->keep > 0 && w->len + n > w->keep;
    if (trim && !trim_from(w, req, &from, &first_seq)) return STORE_WATCH_SCRIPT;
    /* The connection must be the context's still (a cluster may have moved
     * it); the WATCH lives on that one only. */
    if (store_route(s, k.all[K_META]) || im->c != w->c) {
        if (im->c) w->armed = 0;
        return s->err == CTXD_E_NOMEM ? CTXD_ERR : STORE_WATCH_SCRIPT;
    }

    char now_iso[UTIL_ISO_LEN], next[24], version[24], ptok[24], avg[24], first[24], ltrim[24],
        ttl[24], idem_ttl[24];
    util_iso8601(req->now_ms, now_iso);
    snprintf(next, sizeof(next), "%" PRId64, w->next_seq + n);
    snprintf(version, sizeof(version), "%" PRId64, w->version + 1);
    const char *multi[1] = {"MULTI"}, *exec[1] = {"EXEC"}, *del[2] = {"DEL", k.all[K_LOCK]},
               *trim_cmd[4] = {"LTRIM", k.all[K_MESSAGES], ltrim, "-1"},
               *idem_set[4] = {"HSET", k.all[K_IDEM], req->idem_key, req->idem_record.data},
               *idem_exp[3] = {"EXPIRE", k.all[K_IDEM], idem_ttl},
               *expire[3][3] = {{"EXPIRE", k.all[K_META], ttl},
                                {"EXPIRE", k.all[K_MESSAGES], ttl},
                                {"EXPIRE", k.all[K_STATE], ttl}};
    const char *hset[16] = {"HSET",         k.all[K_META], "next_seq", next,
                            "last_updated", now_iso,       "version",  version};
    size_t idem_lens[4] = {4, strlen(k.all[K_IDEM]), 0, req->idem_record.len};
    int hset_n = 8;
    if (req->prompt_sig && req->prompt_sig[0]) {
        snprintf(ptok, sizeof(ptok), "%" PRId64, req->prompt_tokens);
        hset[hset_n++] = "prompt_sig", hset[hset_n++] = req->prompt_sig;
        hset[hset_n++] = "prompt_tokens", hset[hset_n++] = ptok;
    }
    if (req->held_ms > 0) { /* the context's average turn: a fifth of the way */
        int64_t a = w->turn_ms < 0 ? req->held_ms : (w->turn_ms * 4 + req->held_ms + 2) / 5;
        snprintf(avg, sizeof(avg), "%" PRId64, a);
        hset[hset_n++] = "turn_ms", hset[hset_n++] = avg;
    }
    if (trim) {
        snprintf(ltrim, sizeof(ltrim), "%" PRId64, -(w->keep - from + 1));
        snprintf(first, sizeof(first), "%" PRId64, first_seq);
        hset[hset_n++] = "first_seq", hset[hset_n++] = first;
    }

    const char **push = malloc(sizeof(*push) * (size_t)(n + 2));
    size_t *push_lens = malloc(sizeof(*push_lens) * (size_t)(n + 2));
    redisReply *rs[STORE_BATCH_MAX] = {NULL};
    const char **argvs[STORE_BATCH_MAX];
    const size_t *lenss[STORE_BATCH_MAX] = {NULL};
    int argcs[STORE_BATCH_MAX], m = 0, exec_at;
    if (!push || !push_lens) {
        store_fail(s, CTXD_E_NOMEM, "out of memory");
        rc = CTXD_ERR;
        goto cleanup;
    }
    push[0] = "RPUSH", push[1] = k.all[K_MESSAGES];
    push_lens[0] = 5, push_lens[1] = strlen(k.all[K_MESSAGES]);
    for (int64_t i = 0; i < n; i++) {
        push[2 + i] = req->messages[i].data;
        push_lens[2 + i] = req->messages[i].len;
    }
    argvs[m] = multi, argcs[m++] = 1;
    argvs[m] = push, argcs[m] = (int)n + 2, lenss[m++] = push_lens;
    if (trim) argvs[m] = trim_cmd, argcs[m++] = 4;
    argvs[m] = hset, argcs[m++] = hset_n;
    if (req->idem_key && req->idem_key[0]) {
        idem_lens[2] = strlen(req->idem_key);
        if (!idem_set[3]) idem_set[3] = "", idem_lens[3] = 0;
        snprintf(idem_ttl, sizeof(idem_ttl), "%d", req->idem_ttl_s);
        argvs[m] = idem_set, argcs[m] = 4, lenss[m++] = idem_lens;
        argvs[m] = idem_exp, argcs[m++] = 3;
    }
    argvs[m] = del, argcs[m++] = 2; /* nobody waits: the queue is watched, and was empty */
    if (w->ttl_s > 0) {
        snprintf(ttl, sizeof(ttl), "%" PRId64, w->ttl_s);
        for (int i = 0; i < 3; i++) argvs[m] = expire[i], argcs[m++] = 3;
    }
    exec_at = m;
    argvs[m] = exec, argcs[m++] = 1;
    /* The index goes along when it is on this server (not in a cluster). */
    int index_here = !store_is_cluster(s);
    if (index_here)
        for (int i = 0; i < u->n; i++) argvs[m] = u->argvs[i], argcs[m++] = u->argcs[i];

    w->armed = 0; /* EXEC ends the WATCH, whatever it answers */
    w->c = NULL;
    if (store_route_here(s, m, argvs, argcs, lenss, rs)) {
        rc = CTXD_ERR; /* it may have run: the caller says so, as after the script */
        goto cleanup;
    }
    if (rs[exec_at]->type != REDIS_REPLY_ARRAY) {
        /* Refused (nil: a key changed; an error: nothing ran): the script's. */
        rc = STORE_WATCH_SCRIPT;
        goto cleanup;
    }
    rc = CTXD_OK;
    for (int i = 0; i < m && rc == CTXD_OK; i++)
        if (store_reply_error(s, rs[i])) rc = CTXD_ERR;
    for (size_t i = 0; i < rs[exec_at]->elements && rc == CTXD_OK; i++)
        if (store_reply_error(s, rs[exec_at]->element[i])) rc = CTXD_ERR;
    if (rc == CTXD_OK && store_wait_replicas(s)) rc = CTXD_ERR;
    if (rc == CTXD_OK && !index_here) {
        redisReply *r = store_pipeline(s, u->n, u->argvs, u->argcs);
        if (!r)
            rc = CTXD_ERR;
        else
            freeReplyObject(r);
    }
cleanup:
    for (int i = 0; i < m; i++)
        if (rs[i]) freeReplyObject(rs[i]);
    free(push);
    free(push_lens);
    return rc;
}
