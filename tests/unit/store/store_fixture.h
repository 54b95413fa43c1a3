/* store_fixture.h: a store on the private redis-server, and contexts with messages. */
#ifndef CTXD_STORE_FIXTURE_H
#define CTXD_STORE_FIXTURE_H

#include <inttypes.h>

#include "../redis_fixture.h"
#include "ctxd/buf.h"
#include "ctxd/message.h"
#include "ctxd/store.h"
#include "ctxd/util.h"

#define SF_NOW 1764061200000LL /* a fixed "now" for stores that take one */
#define SF_LOCK_MS 10000
#define SF_HARD_CAP 100000

/* Start redis-server and a store on it (exits 77 without redis-server). */
static inline store *sf_start(redis_fixture *rf) {
    rf_start(rf);
    store *s = store_new(&rf->cfg);
    if (!s) exit(1);
    return s;
}

static inline void sf_stop(redis_fixture *rf, store *s) {
    store_free(s);
    rf_stop(rf);
}

/* Settings for a new context: no system prompt, no expiry. */
static inline store_settings sf_settings(const char *strategy, int64_t max_context_tokens,
                                         int64_t max_messages) {
    store_settings st = {"", "", strategy, 0, max_context_tokens, max_messages, NULL, NULL};
    return st;
}

/* Create a context with a fresh id and these settings. */
static inline int sf_create(store *s, char id[UTIL_UUID_LEN + 1], const store_settings *st) {
    if (util_uuid4(id)) return CTXD_ERR;
    store_new_context nc = {.id = id, .now_ms = SF_NOW, .settings = *st};
    return store_create(s, &nc);
}

/* A stored message as the turn writes it (see message.h); data is owned. */
static inline store_blob sf_message(int64_t seq, const char *role, const char *content,
                                    int64_t tokens) {
    message m = {.seq = seq,
                 .role = role,
                 .content = content,
                 .content_len = strlen(content),
                 .created_ms = SF_NOW,
                 .tokens = tokens,
                 .input_tokens = -1,
                 .output_tokens = -1};
    buf b;
    store_blob out;
    buf_init(&b);
    message_encode(&b, &m);
    out.data = buf_take(&b, &out.len);
    return out;
}

/* A borrowed string as a blob (NULL stays NULL). */
static inline store_blob sf_blob(const char *s) {
    store_blob b = {(char *)s, s ? strlen(s) : 0};
    return b;
}

static inline void sf_blobs_free(store_blob *b, size_t n) {
    for (size_t i = 0; i < n; i++) free(b[i].data);
}

/* Take the lock for token with a turn's read in mode (a window read counts
 * the new message as 5 tokens); returns next_seq or -1. */
static inline int64_t sf_lock(store *s, const char *id, const char *token, store_turn_mode mode) {
    store_context c;
    if (store_turn_read(s, id, token, SF_LOCK_MS, NULL, mode, mode == STORE_TURN_APPEND ? 0 : 5, 0,
                        NULL, &c))
        return -1;
    int64_t next = c.next_seq;
    store_context_free(&c);
    return next;
}

/* Append n messages under a fresh lock, as turns would: odd seqs are the
 * user's, even ones the assistant's, content "m<seq>", each counting
 * tokens. */
static inline int sf_append(store *s, const char *id, size_t n, int64_t tokens) {
    store_context c;
    store_blob msgs[64];
    char token[33], text[32];
    if (n > 64 || util_token(token)) return CTXD_ERR;
    if (store_turn_read(s, id, token, SF_LOCK_MS, NULL, STORE_TURN_APPEND, 0, 0, NULL, &c))
        return CTXD_ERR;
    int64_t seq = c.next_seq;
    store_context_free(&c);
    for (size_t i = 0; i < n; i++) {
        int64_t q = seq + (int64_t)i;
        snprintf(text, sizeof(text), "m%" PRId64, q);
        msgs[i] = sf_message(q, q % 2 ? "user" : "assistant", text, tokens);
    }
    store_append_req req = {.id = id,
                            .token = token,
                            .expected_next_seq = seq,
                            .now_ms = SF_NOW,
                            .messages = msgs,
                            .n_messages = n,
                            .max_messages = SF_HARD_CAP};
    int rc = store_append(s, &req);
    sf_blobs_free(msgs, n);
    return rc;
}

/* The "content" of a stored message, decoded into out. */
static inline const char *sf_content(const store_blob *b, char *out, size_t cap) {
    static char arena[4096];
    message m;
    size_t used = 0;
    out[0] = '\0';
    if (b->len < sizeof(arena) && !message_decode(b->data, b->len, arena, &used, &m))
        snprintf(out, cap, "%.*s", (int)m.content_len, m.content);
    return out;
}

/* The seq of a stored message, or -1. */
static inline int64_t sf_seq(const store_blob *b) {
    static char arena[4096];
    message m;
    size_t used = 0;
    if (b->len >= sizeof(arena) || message_decode(b->data, b->len, arena, &used, &m)) return -1;
    return m.seq;
}

/* A context key as store_keys.c spells it (checked by test_store_keys). */
static inline const char *sf_key(char *out, size_t cap, const char *id, const char *name) {
    snprintf(out, cap, "ctxd:{%s}:%s", id, name);
    return out;
}

#endif
