/* turn_fixture.h: a worker on the private redis-server, and what a turn left there. */
#ifndef CTXD_TURN_FIXTURE_H
#define CTXD_TURN_FIXTURE_H

#include <inttypes.h>

#include "../redis_fixture.h"
#include "ctxd/context.h"
#include "ctxd/message.h"
#include "ctxd/turn.h"
#include "ctxd/util.h"
#include "ctxd/worker.h"

/* Start redis-server (exits 77 without one) with a short lock wait, so a
 * lock a turn failed to release fails the next turn fast. The case adjusts
 * rf->cfg, then makes its worker with tf_worker (which borrows rf->cfg). */
static inline void tf_start(redis_fixture *rf) {
    rf_start(rf);
    rf->cfg.lock_wait_ms = 300;
}

static inline ctxd_worker *tf_worker(redis_fixture *rf) {
    ctxd_worker *w = worker_new(&rf->cfg);
    if (!w) exit(1);
    return w;
}

static inline void tf_stop(redis_fixture *rf, ctxd_worker *w) {
    worker_free(w);
    rf_stop(rf);
}

/* A context with the configured defaults but these (NULL / -1: default). */
static inline int tf_create(ctxd_worker *w, char id[UTIL_UUID_LEN + 1], const char *strategy,
                            int64_t max_context_tokens, int64_t max_messages) {
    store_settings given = STORE_SETTINGS_UNCHANGED;
    ctxd_error e;
    int replayed;
    given.strategy = strategy;
    given.max_context_tokens = max_context_tokens;
    given.max_messages = max_messages;
    int rc = context_create(w, &given, NULL, NULL, 0, NULL, 0, id, &replayed, &e);
    if (rc) fprintf(stderr, "context_create: %s\n", e.msg);
    return rc;
}

/* One turn saying text (with idem_key / fp, or NULL / 0). */
static inline int tf_turn(ctxd_worker *w, const char *id, const char *text, const char *idem_key,
                          uint64_t fp, turn_result *res) {
    turn_request req = {.context_id = id,
                        .message = text,
                        .message_len = strlen(text),
                        .idem_key = idem_key,
                        .fingerprint = fp};
    return turn_run(w, &req, res);
}

/* How many messages id holds (-1 when it cannot be read). */
static inline int64_t tf_count(ctxd_worker *w, const char *id) {
    store_context c;
    ctxd_error e;
    if (context_read(w, id, 0, 0, 0, &c, &e)) return -1;
    int64_t n = c.total_messages;
    store_context_free(&c);
    return n;
}

/* Message i of id's history, decoded (fields point into arena). */
static inline int tf_message(ctxd_worker *w, const char *id, size_t i, message *m, char *arena,
                             size_t cap) {
    store_context c;
    ctxd_error e;
    size_t used = 0;
    int rc = CTXD_ERR;
    if (context_read(w, id, STORE_READ_MESSAGES, 0, 0, &c, &e)) return CTXD_ERR;
    if (i < c.n_messages && c.messages[i].len < cap &&
        !message_decode(c.messages[i].data, c.messages[i].len, arena, &used, m))
        rc = CTXD_OK;
    store_context_free(&c);
    return rc;
}

/* The raw stored JSON of message i (caller frees), or NULL. */
static inline char *tf_message_json(ctxd_worker *w, const char *id, size_t i) {
    store_context c;
    ctxd_error e;
    char *out = NULL;
    if (context_read(w, id, STORE_READ_MESSAGES, 0, 0, &c, &e)) return NULL;
    if (i < c.n_messages) out = strdup(c.messages[i].data);
    store_context_free(&c);
    return out;
}

/* 1 if a context key ("lock", "idem", ...) exists. */
static inline long long tf_exists(redis_fixture *rf, const char *id, const char *name) {
    return rf_int(rf, "EXISTS ctxd:{%s}:%s", id, name);
}

/* Hold id's lock as another turn would, for ms. */
static inline void tf_hold_lock(redis_fixture *rf, const char *id, const char *token, int ms) {
    redisReply *r = rf_cmd(rf, "SET ctxd:{%s}:lock %s PX %d", id, token, ms);
    if (r) freeReplyObject(r);
}

#endif
