/* store_window.c: the messages a turn sends, worked out in C from the newest messages (read with
 * the lock, in its round trip): whole units, newest first, while their tokens fit the budget. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctxd/message.h"
#include "store_int.h"

/* When the window reaches past the messages read, the next read takes as
 * many again (at least CHUNK): a long window costs a few round trips. */
#define CHUNK 64

/* The messages read so far: contiguous ranges of the list, newest first. */
typedef struct chunks {
    redisReply *r[STORE_WINDOW_CHUNKS_MAX];
    int64_t lo[STORE_WINDOW_CHUNKS_MAX]; /* list index of each one's first element */
    int n;
} chunks;

static const redisReply *at(const chunks *c, int64_t idx) {
    for (int i = 0; i < c->n; i++)
        if (idx >= c->lo[i] && idx < c->lo[i] + (int64_t)c->r[i]->elements)
            return c->r[i]->element[idx - c->lo[i]];
    return NULL;
}

/* Read list indexes lo..hi as one more chunk. */
static int read_chunk(store *s, const ctx_keys *k, chunks *c, int64_t lo, int64_t hi) {
    char from[24], to[24];
    if (c->n == STORE_WINDOW_CHUNKS_MAX) {
        store_fail(s, CTXD_E_NOMEM, "a window of more than %d reads", STORE_WINDOW_CHUNKS_MAX);
        return CTXD_ERR;
    }
    snprintf(from, sizeof(from), "%lld", (long long)lo);
    snprintf(to, sizeof(to), "%lld", (long long)hi);
    const char *argv[4] = {"LRANGE", k->all[K_MESSAGES], from, to};
    redisReply *r = store_command(s, 4, argv, NULL);
    if (!r) return CTXD_ERR;
    if (r->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(r);
        store_fail(s, CTXD_E_REDIS, "unexpected reply from Redis at %s to LRANGE", store_addr(s));
        return CTXD_ERR;
    }
    c->r[c->n] = r;
    c->lo[c->n++] = lo;
    return CTXD_OK;
}

/* Copy list indexes from..to (all read) into a new blob array. */
static int copy_range(store *s, const chunks *c, int64_t from, int64_t to, store_blob **out,
                      size_t *n) {
    *out = NULL;
    *n = 0;
    if (to < from) return CTXD_OK;
    if (!(*out = calloc((size_t)(to - from + 1), sizeof(**out)))) goto nomem;
    for (int64_t i = from; i <= to; i++) {
        const redisReply *e = at(c, i);
        if (!e || store_blob_copy(&(*out)[*n], e)) goto nomem;
        (*n)++;
    }
    return CTXD_OK;
nomem:
    store_fail(s, CTXD_E_NOMEM, "out of memory");
    return CTXD_ERR;
}

int store_window(store *s, const ctx_keys *k, redisReply *tail, int64_t len, int64_t fixed_tokens,
                 long fold_max, store_context *out) {
    chunks c = {.n = 0};
    int rc = CTXD_ERR;
    int64_t first = out->first_seq > 0 ? out->first_seq : 1, start = len;
    c.r[c.n] = tail; /* the newest messages: indexes len - elements .. len - 1 */
    c.lo[c.n++] = len - (int64_t)tail->elements;
    if (c.lo[0] < 0) c.lo[0] = 0;

    if (!strcmp(out->strategy, "all") || !out->strategy[0]) {
        start = 0;
        if (c.lo[0] > 0 && read_chunk(s, k, &c, 0, c.lo[0] - 1)) goto cleanup;
    } else {
        /* Whole units (a user message and the replies after it; the oldest
         * message starts one too), newest first, while they fit. */
        int64_t budget = out->max_context_tokens - fixed_tokens -
                         message_system_tokens(strlen(out->system ? out->system : ""));
        if (!strcmp(out->strategy, "summarize")) budget -= out->summary_tokens;
        int64_t total = 0, unit = 0;
        for (int64_t idx = len - 1; idx >= 0; idx--) {
            const redisReply *e = at(&c, idx);
            if (!e) {
                int64_t want = len - 1 - idx > CHUNK ? len - 1 - idx : CHUNK;
                int64_t lo = idx - want + 1 > 0 ? idx - want + 1 : 0;
                if (read_chunk(s, k, &c, lo, idx)) goto cleanup;
                if (!(e = at(&c, idx))) break; /* the list is shorter than LLEN said */
            }
            char role[16];
            int64_t t, seq;
            if (message_head(e->str, e->len, role, &t, &seq)) {
                store_fail(s, CTXD_E_NOMEM, "out of memory");
                goto cleanup;
            }
            unit += t >= 0 ? t : message_tokens(e->len);
            if (strcmp(role, "user") && idx) continue;
            if (total + unit > budget) break;
            total += unit;
            unit = 0;
            start = idx;
        }
    }
    if (copy_range(s, &c, start, len - 1, &out->messages, &out->n_messages)) goto cleanup;
    out->window_start_seq = first + start;
    if (!strcmp(out->strategy, "summarize")) {
        /* The oldest messages that left the window and are not summarized
         * yet, up to fold_max of them. */
        int64_t from = out->summary_upto + 1 - first, to;
        if (from < 0) from = 0;
        to = from + fold_max - 1 < start - 1 ? from + fold_max - 1 : start - 1;
        if (to >= from) {
            chunks f = {.n = 0};
            if (read_chunk(s, k, &f, from, to)) goto cleanup;
            rc = copy_range(s, &f, from, from + (int64_t)f.r[0]->elements - 1, &out->fold,
                            &out->n_fold);
            freeReplyObject(f.r[0]);
            if (rc) goto cleanup;
            rc = CTXD_ERR;
        }
    }
    rc = CTXD_OK;
cleanup:
    for (int i = 1; i < c.n; i++) freeReplyObject(c.r[i]); /* the tail is the caller's */
    return rc;
}
